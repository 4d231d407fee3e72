//! The port for a durable history store: what the hub hands it and asks of
//! it. Backends (`src/store/`: SQLite, PostgreSQL) take the other end.
//!
//! Writes never slow a broadcast: a room applies a change in memory, fans it
//! out, and queues one [`Change`] for the store's single writer through a
//! bounded queue; the writer commits them in groups. A full queue, or a store
//! that reports itself degraded, refuses the change *before* it is applied
//! (the poster gets `unavailable`), so nothing accepted is ever dropped.
//! Reads ([`Store::load`], [`Store::page`]) go through the same queue, so a
//! read sees every change queued before it, committed or not.
//!
//! Sequence numbers are never reused after a crash: a room hands out `seq`s
//! only below a *reservation* the store has made durable (see
//! [`Snapshot::reserved`]); the room asks for the next block well before it
//! reaches the end of the current one.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::oneshot;

use super::event::{ErrorCode, Refusal, StoredMessage};
use super::store_queue::StoreQueue;

/// How long a read (a room's load, a page) may wait for the writer, which
/// may be retrying a failing commit.
const READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Seqs a room reserves at a time. The next block is asked for halfway
/// through (with the post that leaves less than half of one: `RESERVE_BLOCK
/// / 2 - 1` seqs before the current block's end), and becomes usable when
/// the writer commits it, up to a commit interval and a commit later.
/// After a crash the numbering resumes past the last reservation, so it
/// may skip up to a block and a half less one: 98 303 numbers, when the
/// crash came right after that ask's commit.
///
/// Why this many: the lead must cover what one room can post before that
/// commit, and a server behind under load reads each connection's backlog
/// in one go (a sender's thousands of buffered posts), on the same core as
/// the writer. With 8 192 (a lead of 4 096), 100 rooms posting 280 000
/// messages a second in phase, one core, refused 6 400 to 360 000 posts as
/// "the history store is behind" in 5 of 12 runs, while the store kept up
/// (no commit over 51 ms, its queue at most 13 200 of 16 384 in half-second
/// samples); with 65 536 in none of 8 (docs/BENCHMARKS.md, issue 15, "A
/// room's seqs reserved further ahead"). A skip after a crash is only a
/// jump in the numbering: `after` and `gap` mean what they meant.
pub const RESERVE_BLOCK: u64 = 65_536;

/// One change to a room's stored history.
#[derive(Debug, Clone)]
pub enum Change {
    /// A new message. `reserve_through` asks the store to make seqs up to
    /// it usable (see [`Snapshot::reserved`]).
    Post {
        /// The room's key (shared with the room: never copied per change).
        room: Arc<str>,
        /// The message as posted.
        message: Arc<StoredMessage>,
        /// A new reservation to record with it, if the room needs one.
        reserve_through: Option<u64>,
    },
    /// A message's new content.
    Edit {
        /// The room's key (shared with the room: never copied per change).
        room: Arc<str>,
        /// The message.
        message_id: String,
        /// Its seq in the room: what a store finds it by.
        seq: u64,
        /// The new text.
        content: String,
        /// RFC 3339 UTC of the edit.
        edited_at: String,
        /// With a backbone, the message's version after this change
        /// ([`Changed::version`](super::Changed::version)): a store that
        /// several instances write keeps the edit with the highest one, in
        /// whatever order they land. 0 on one instance, whose changes reach
        /// its store in order: always applied.
        version: u64,
    },
    /// A message's reactions, all of them, after a change.
    React {
        /// The room's key (shared with the room: never copied per change).
        room: Arc<str>,
        /// The message.
        message_id: String,
        /// Its seq in the room: what a store finds it by.
        seq: u64,
        /// The reactions in the store's form (see
        /// [`Reactions::to_store_json`](super::Reactions::to_store_json)).
        reactions: String,
        /// As [`Change::Edit`]'s `version`, for the reactions.
        version: u64,
    },
    /// A message's attachment, all of it, after its preview became ready.
    Attachment {
        /// The room's key (shared with the room: never copied per change).
        room: Arc<str>,
        /// The message.
        message_id: String,
        /// Its seq in the room: what a store finds it by.
        seq: u64,
        /// The attachment as JSON (the form `Post` stores it in).
        attachment: String,
    },
    /// A deleted message: its content leaves the store.
    Delete {
        /// The room's key (shared with the room: never copied per change).
        room: Arc<str>,
        /// The message.
        message_id: String,
        /// Its seq in the room: what a store finds it by.
        seq: u64,
    },
    /// The room leaves memory (it emptied, or the server stops): no seq
    /// above `last_seq` was handed out, so its reservation can shrink to it
    /// and the numbering continues without a jump.
    Settle {
        /// The room's key (shared with the room: never copied per change).
        room: Arc<str>,
        /// The highest seq the room handed out.
        last_seq: u64,
    },
}

impl Change {
    /// The key of the room it changes.
    pub fn room(&self) -> &str {
        match self {
            Self::Post { room, .. }
            | Self::Edit { room, .. }
            | Self::React { room, .. }
            | Self::Attachment { room, .. }
            | Self::Delete { room, .. }
            | Self::Settle { room, .. } => room,
        }
    }
}

/// A room's stored state, as a room needs it when it is loaded.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// The newest stored messages, oldest first.
    pub tail: Vec<StoredMessage>,
    /// The highest seq the room may have handed out before: every new seq
    /// must be above it (the last stored seq or the last reservation).
    pub last_seq: u64,
    /// Seqs up to this one are reserved durably (this load made a new
    /// reservation of [`RESERVE_BLOCK`] past `last_seq`).
    pub reserved: u64,
    /// Whether older messages than `tail` are stored.
    pub older: bool,
}

/// Which stored messages to read: those with `after < seq < before`, the
/// newest `limit` of them, returned oldest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageQuery {
    /// Only messages above this seq.
    pub after: u64,
    /// Only messages below this seq (`None`: up to the newest).
    pub before: Option<u64>,
    /// At most this many.
    pub limit: usize,
}

/// A read or write for the store's writer, in queue order.
#[derive(Debug)]
pub enum StoreOp {
    /// A change to commit. `durable` (if any) is set to the reservation
    /// once it is committed.
    Change(Change, Option<Arc<AtomicU64>>),
    /// Load a room (making a new reservation of `block` seqs); answered
    /// after the commit.
    Load {
        /// The room's key.
        room: String,
        /// Messages wanted in the tail.
        tail: usize,
        /// Seqs to reserve past the highest the room may have handed out:
        /// [`RESERVE_BLOCK`] on one instance, none with a backbone (which
        /// numbers the room itself, above what the store holds).
        block: u64,
        /// The answer.
        reply: oneshot::Sender<Result<Snapshot, StoreError>>,
    },
    /// Read a page of a room's messages.
    Page {
        /// The room's key.
        room: String,
        /// Which messages.
        query: PageQuery,
        /// The answer: the messages oldest first, and whether older ones
        /// than the first are stored.
        reply: oneshot::Sender<Result<(Vec<StoredMessage>, bool), StoreError>>,
    },
    /// Answer once everything queued before is committed.
    Flush(oneshot::Sender<()>),
    /// Commit everything queued before, close the store, answer, stop.
    Stop(oneshot::Sender<()>),
}

/// Why the store could not do something; its text is for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreError(pub String);

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for StoreError {}

/// What the writer and the hub both see: whether the store is failing,
/// how many accepted changes are not committed yet, and what its retention
/// period deleted.
#[derive(Debug, Default)]
pub struct StoreHealth {
    failing: AtomicBool,
    reason: Mutex<String>,
    uncommitted: AtomicU64,
    /// Milliseconds since the Unix epoch: every message posted before is
    /// deleted by the retention period (0: none was).
    pruned_before: AtomicU64,
}

impl StoreHealth {
    /// `None` while the store commits; otherwise why not.
    pub fn degraded(&self) -> Option<String> {
        self.failing.load(Ordering::Acquire).then(|| {
            self.reason
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone()
        })
    }

    /// The writer failed to commit: refuse changes until it succeeds again.
    /// Only through [`StoreInbox::set_failing`], which tells the queue too.
    fn set_failing(&self, reason: String) {
        *self.reason.lock().unwrap_or_else(|p| p.into_inner()) = reason;
        self.failing.store(true, Ordering::Release);
    }

    /// The writer committed: accept changes again (only through
    /// [`StoreInbox::set_ok`]). Returns whether it was failing.
    fn set_ok(&self) -> bool {
        self.failing.swap(false, Ordering::AcqRel)
    }

    /// Changes accepted but not yet committed.
    pub fn uncommitted(&self) -> u64 {
        self.uncommitted.load(Ordering::Acquire)
    }

    /// The writer committed `n` changes.
    pub fn committed(&self, n: u64) {
        self.uncommitted.fetch_sub(n, Ordering::AcqRel);
    }

    /// A retention pass deleted every message posted before `ms` (since the
    /// Unix epoch): rooms drop those from memory too.
    pub fn pruned(&self, ms: u64) {
        self.pruned_before.fetch_max(ms, Ordering::AcqRel);
    }
}

/// The hub's end of a durable store: a bounded queue to its writer.
pub struct Store {
    queue: Arc<StoreQueue>,
    health: Arc<StoreHealth>,
}

impl Clone for Store {
    fn clone(&self) -> Self {
        self.queue.add_sender();
        Self {
            queue: Arc::clone(&self.queue),
            health: Arc::clone(&self.health),
        }
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        self.queue.drop_sender();
    }
}

/// The writer's end: what [`store_channel`] hands the backend.
pub struct StoreInbox {
    queue: Arc<StoreQueue>,
    /// Shared with the hub.
    pub health: Arc<StoreHealth>,
}

impl StoreInbox {
    /// The oldest queued operation, waiting (blocking the thread) while
    /// none is queued; `None` once nothing is queued and every [`Store`]
    /// is dropped.
    pub fn recv(&mut self) -> Option<StoreOp> {
        self.queue.recv()
    }

    /// Moves up to `max` of the oldest queued operations to the end of
    /// `into`, without waiting; returns how many.
    pub fn take(&mut self, max: usize, into: &mut Vec<StoreOp>) -> usize {
        self.queue.take(max, into)
    }

    /// Sleeps until `until` unless an operation that may not wait arrives,
    /// `enough` are queued, or every [`Store`] is dropped (then `false`);
    /// see [`StoreQueue::wait_for_company`].
    pub fn wait_for_company(&mut self, until: std::time::Instant, enough: usize) -> bool {
        self.queue.wait_for_company(until, enough)
    }

    /// The writer committed: changes are taken again.
    pub fn set_ok(&self) {
        if self.health.set_ok() {
            self.queue.set_failing(false);
        }
    }

    /// The writer failed to commit: changes are refused until it succeeds
    /// again, and the queue is not reported behind meanwhile (its clients
    /// are told why at once instead of waiting).
    pub fn set_failing(&self, reason: String) {
        self.health.set_failing(reason);
        self.queue.set_failing(true);
    }

    /// Operations queued.
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// How long a stopping writer waits for room it gave for changes to be
/// used (see [`StoreInbox::close`]): with a backbone a change's room is
/// held across its round trip, up to 5 s, before the change is answered.
/// Half the default shutdown grace, which the server gives the whole stop:
/// what was queued is then still committed within it.
const SLOTS_AT_STOP: Duration = Duration::from_secs(5);

impl StoreInbox {
    /// The writer is stopping: from now on changes are refused (the store
    /// "has stopped"); room already taken for changes (being applied, or
    /// waiting for the backbone) is waited for, up to [`SLOTS_AT_STOP`],
    /// so that a change answered as accepted is queued before the queue
    /// closes. Returns what was queued, for the writer to commit before it
    /// answers the stop.
    pub fn close(&mut self) -> Vec<StoreOp> {
        let deadline = std::time::Instant::now() + SLOTS_AT_STOP;
        self.queue.close_after_slots(deadline).into()
    }
}

impl Drop for StoreInbox {
    fn drop(&mut self) {
        self.queue.close();
    }
}

/// A store whose writer queue holds at most `capacity` operations.
pub fn store_channel(capacity: usize) -> (Store, StoreInbox) {
    let queue = Arc::new(StoreQueue::new(capacity));
    let health = Arc::new(StoreHealth::default());
    (
        Store {
            queue: Arc::clone(&queue),
            health: Arc::clone(&health),
        },
        StoreInbox { queue, health },
    )
}

fn unavailable(reason: &str) -> Refusal {
    Refusal::new(
        ErrorCode::Unavailable,
        format!("the history store {reason}; nothing was changed, try again shortly"),
    )
}

/// Room for one change in the writer's queue, taken before the change is
/// applied so that applying it can no longer be refused. Given back if
/// dropped unsent.
pub struct Slot<'a> {
    store: &'a Store,
    sent: bool,
}

impl Slot<'_> {
    /// Queues the change (never waits, never fails: a stopping writer waits
    /// for the room it gave, see [`StoreInbox::close`]).
    pub fn send(mut self, change: Change, durable: Option<Arc<AtomicU64>>) {
        self.sent = true;
        self.store
            .queue_change(StoreOp::Change(change, durable), StoreQueue::push);
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        if !self.sent {
            self.store.queue.release();
        }
    }
}

/// How long the writer's queue may stay behind (reads paused for it, see
/// `store_queue.rs`) before health checks hear of it: a commit that long is
/// not one slowed by a busy core but a disk or a database that hangs.
/// Under a second, a load balancer would take out a server for one slow
/// commit.
const LATE_AFTER: Duration = Duration::from_secs(1);

impl Store {
    /// `None` while the store commits; otherwise why not, as a sentence:
    /// it is failing, or its queue has been behind for [`LATE_AFTER`] or
    /// longer (posts wait meanwhile; see `store_queue.rs`).
    pub fn degraded(&self) -> Option<String> {
        if self.queue.is_closed() {
            return Some("the history store has stopped".into());
        }
        if let Some(reason) = self.health.degraded() {
            return Some(format!("the history store cannot write ({reason})"));
        }
        let (late, queued) = self
            .queue
            .behind_for()
            .filter(|(late, _)| *late >= LATE_AFTER)?;
        Some(format!(
            "the history store is behind: {queued} changes and reads have waited for it for {} ms",
            late.as_millis()
        ))
    }

    /// Changes accepted but not yet committed.
    pub fn uncommitted(&self) -> u64 {
        self.health.uncommitted()
    }

    /// Every message posted before this time (milliseconds since the Unix
    /// epoch) is deleted by the retention period, if a pass has run: a
    /// room drops those from memory too (`RoomState::expire`).
    pub fn pruned_before(&self) -> Option<u64> {
        Some(self.health.pruned_before.load(Ordering::Acquire)).filter(|ms| *ms > 0)
    }

    /// Reports the writer's queue to `hook` whenever it starts or stops
    /// being behind: from three quarters of its bound to under half (see
    /// `store_queue.rs`). The first hook attached stays.
    pub fn report_backlog(&self, hook: super::BacklogHook) {
        self.queue.report_backlog(hook);
    }

    /// Operations waiting in the writer's queue (or with room taken for).
    pub fn queued(&self) -> usize {
        self.queue.used()
    }

    /// Queues `op` as if a change or a read had taken room for it.
    #[cfg(test)]
    pub(crate) fn queue_for_test(&self, op: StoreOp) {
        assert!(self.queue.reserve(), "room in the queue");
        assert!(self.queue.push(op).is_ok(), "the queue is open");
    }

    /// Takes room for one change; refuses at once when the store is failing
    /// or its queue is full (a full queue is the writer falling behind: the
    /// change is refused, never held in memory).
    pub fn slot(&self) -> Result<Slot<'_>, Refusal> {
        if self.health.degraded().is_some() {
            return Err(unavailable("cannot write right now"));
        }
        if self.queue.is_closed() {
            return Err(unavailable("has stopped"));
        }
        if self.queue.reserve() {
            Ok(Slot {
                store: self,
                sent: false,
            })
        } else {
            Err(unavailable("is behind"))
        }
    }

    /// Queues a change that can no longer be refused: a post the backbone
    /// posted after this instance had answered `unavailable` for it (see
    /// `in_doubt.rs`), already in the room. Past the queue's bound if need
    /// be, as a flush or a stop; its caller bounds how many come this way.
    /// A failing store keeps it and retries, as any change it accepted.
    pub(super) fn send_late(&self, change: Change) {
        self.queue_change(StoreOp::Change(change, None), StoreQueue::push_control);
    }

    /// Queues a change through `push`, counted uncommitted until the writer
    /// commits it. Only a slot the stopping writer stopped waiting for
    /// comes after the queue closed: that change is not recorded, and says
    /// so.
    fn queue_change(
        &self,
        change: StoreOp,
        push: impl FnOnce(&StoreQueue, StoreOp) -> Result<(), StoreOp>,
    ) {
        // Counted first: the writer may commit it before `push` returns.
        self.health.uncommitted.fetch_add(1, Ordering::AcqRel);
        if let Err(StoreOp::Change(change, _)) = push(&self.queue, change) {
            self.health.uncommitted.fetch_sub(1, Ordering::AcqRel);
            tracing::error!(
                "a change came after the history store stopped; not recorded: {change:?}"
            );
        }
    }

    async fn ask<T>(
        &self,
        op: impl FnOnce(oneshot::Sender<Result<T, StoreError>>) -> StoreOp,
    ) -> Result<T, StoreError> {
        if self.queue.is_closed() {
            return Err(StoreError("the history store has stopped".into()));
        }
        if !self.queue.reserve() {
            return Err(StoreError("the history store is behind".into()));
        }
        let (reply, answer) = oneshot::channel();
        // Closed meanwhile: the op and its reply are dropped, and the
        // answer says the store stopped.
        drop(self.queue.push(op(reply)));
        match tokio::time::timeout(READ_TIMEOUT, answer).await {
            Err(_) => Err(StoreError(
                "the history store did not answer in time".into(),
            )),
            Ok(Err(_)) => Err(StoreError(
                "the history store stopped before answering".into(),
            )),
            Ok(Ok(answer)) => answer,
        }
    }

    /// Loads a room: its newest `tail` messages and a fresh reservation of
    /// `block` seqs.
    pub async fn load(&self, room: &str, tail: usize, block: u64) -> Result<Snapshot, StoreError> {
        let room = room.to_owned();
        self.ask(|reply| StoreOp::Load {
            room,
            tail,
            block,
            reply,
        })
        .await
    }

    /// Reads a page of a room's messages (see [`PageQuery`]), oldest first,
    /// and whether older ones are stored.
    pub async fn page(
        &self,
        room: &str,
        query: PageQuery,
    ) -> Result<(Vec<StoredMessage>, bool), StoreError> {
        let room = room.to_owned();
        self.ask(|reply| StoreOp::Page { room, query, reply }).await
    }

    /// Resolves once every change queued before is committed (or the writer
    /// has stopped).
    pub async fn flush(&self) {
        let (reply, done) = oneshot::channel();
        drop(self.queue.push_control(StoreOp::Flush(reply)));
        let _ = done.await;
    }

    /// Commits everything queued, closes the store (its file or connection)
    /// and stops the writer; later changes are refused.
    pub async fn stop(&self) {
        let (reply, done) = oneshot::channel();
        drop(self.queue.push_control(StoreOp::Stop(reply)));
        let _ = done.await;
    }
}

/// A page read a test answers when it chooses (see [`stalled_writer`]).
#[cfg(test)]
pub(crate) type HeldPage = (
    PageQuery,
    oneshot::Sender<Result<(Vec<StoredMessage>, bool), StoreError>>,
);

/// A room's load a test answers when it chooses (see [`stalled_writer`]).
#[cfg(test)]
pub(crate) type HeldLoad = oneshot::Sender<Result<Snapshot, StoreError>>;

/// The reads a [`stalled_writer`] hands to its test instead of answering.
#[cfg(test)]
#[derive(Default)]
pub(crate) struct Held {
    pub pages: Option<std::sync::mpsc::Sender<HeldPage>>,
    pub loads: Option<std::sync::mpsc::Sender<HeldLoad>>,
}

/// A writer for the hub's tests that never commits (whatever a room hands
/// out, it hands out on its load's reservation alone), loads every room
/// empty, and answers how many changes it was given. A page read, or a
/// load, goes to `held`'s channel for it instead, if given.
#[cfg(test)]
pub(crate) fn stalled_writer(mut inbox: StoreInbox, held: Held) -> std::thread::JoinHandle<usize> {
    std::thread::spawn(move || {
        let mut changes = 0;
        while let Some(op) = inbox.recv() {
            match op {
                StoreOp::Load { reply, .. } => match &held.loads {
                    Some(loads) => {
                        let _ = loads.send(reply);
                    }
                    None => {
                        let _ = reply.send(Ok(Snapshot {
                            reserved: RESERVE_BLOCK,
                            ..Snapshot::default()
                        }));
                    }
                },
                StoreOp::Page { query, reply, .. } => {
                    if let Some(pages) = &held.pages {
                        let _ = pages.send((query, reply));
                    }
                }
                StoreOp::Change(..) => changes += 1,
                StoreOp::Stop(reply) => {
                    let _ = reply.send(());
                    break;
                }
                StoreOp::Flush(_) => {}
            }
        }
        changes
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::{ErrorCode, Hub, HubConfig, HubParts, RoomName, UserName};
    use crate::metrics::Metrics;

    #[test]
    fn a_change_that_comes_after_the_store_closed_is_not_counted_as_waiting() {
        let (store, inbox) = store_channel(4);
        let slot = store.slot().expect("room for a change");
        drop(inbox); // the writer is gone without waiting
        let change = Change::Settle {
            room: "r".into(),
            last_seq: 1,
        };
        slot.send(change, None);
        assert_eq!(store.uncommitted(), 0);
        assert_eq!(store.queued(), 0);
    }

    #[test]
    fn a_room_hands_out_its_whole_block_before_the_next_is_committed_and_nothing_past_it() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let _in_runtime = rt.enter();
        let block = usize::try_from(RESERVE_BLOCK).unwrap();
        let (store, inbox) = store_channel(block + 16);
        let writer = stalled_writer(inbox, Held::default());
        let hub = Hub::from_parts(HubParts {
            config: HubConfig {
                outbox_frames: block + 16,
                outbox_bytes: 1 << 30,
                ..HubConfig::default()
            },
            metrics: Arc::new(Metrics::default()),
            store: Some(store.clone()),
        });
        let room = RoomName::parse("burst").unwrap();
        let mut ann = hub
            .join(room, UserName::parse("ann").unwrap(), None)
            .unwrap();
        rt.block_on(ann.welcomed());

        // The ask for the next block went out halfway and was never
        // committed: the room still posts up to the end of its block, a
        // burst of half a block past the ask.
        for seq in 1..=RESERVE_BLOCK {
            let posted = ann.post_now("m".into(), None).unwrap();
            assert_eq!(posted.ok().flatten(), Some(seq));
        }
        let refused = ann.post_now("m".into(), None).unwrap().unwrap_err();
        assert_eq!(refused.code, ErrorCode::Unavailable);
        assert!(refused.message.contains("behind"), "{}", refused.message);

        drop(ann);
        drop(hub);
        rt.block_on(store.stop());
        assert_eq!(writer.join().unwrap(), block, "every post was queued once");
    }
}
