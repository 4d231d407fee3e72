//! The store's one writer: takes operations from the hub's queue in order,
//! commits changes in groups, answers reads after the commit that covers
//! them, and keeps retrying a group that fails for a reason that passes (a
//! full disk, a lost database connection) until it commits. Nothing it has
//! accepted is dropped: while it retries, the store reports itself degraded
//! and the hub refuses new changes (`unavailable`).
//!
//! A backend is a [`Journal`]: a synchronous transaction interface. The
//! writer runs on its own thread, so a slow disk or database never blocks
//! the async runtime.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use crate::hub::{Change, PageQuery, Snapshot, StoreError, StoreInbox, StoreOp, StoredMessage};
use crate::metrics::Metrics;

use super::{Fsync, Retention, now_ms, prefetch};

/// Why a journal operation failed, and whether trying again can help.
#[derive(Debug)]
pub(crate) struct JournalError {
    pub message: String,
    /// A full disk, an I/O error, a lost connection: retry the group later.
    /// Otherwise the operation itself is at fault (it is skipped alone).
    pub transient: bool,
    /// Out of space (the disk, or the store's size limit): deleting what
    /// the retention period no longer keeps may make room.
    pub full: bool,
}

/// A backend's transactions. Every method runs on the writer's thread.
pub(crate) trait Journal: Send + 'static {
    /// Starts a transaction.
    fn begin(&mut self) -> Result<(), JournalError>;
    /// Applies one change inside the transaction (the per-room cap of
    /// `retention`, if any, too).
    fn apply(&mut self, change: &Change, retention: &Retention) -> Result<(), JournalError>;
    /// Reads a room's tail and reserves the next `block` seqs past the
    /// highest it may have handed out.
    fn load(&mut self, room: &str, tail: usize, block: u64) -> Result<Snapshot, JournalError>;
    /// Reads a page: the newest `query.limit` matching messages, oldest
    /// first, and whether more match.
    fn page(
        &mut self,
        room: &str,
        query: PageQuery,
    ) -> Result<(Vec<StoredMessage>, bool), JournalError>;
    /// Deletes messages older than the retention period, about `max` at
    /// most (a backend may go a little past it); returns how many.
    fn prune(&mut self, older_than_ms: i64, max: u64) -> Result<u64, JournalError>;
    /// Records that `room` may hand out seqs through `through` (what a
    /// post's `reserve_through` records with it), inside the transaction.
    fn reserve(&mut self, room: &str, through: u64) -> Result<(), JournalError>;
    /// Commits the transaction; `deleted` if it removed message content
    /// (a backend may then scrub what the deleted content left on disk).
    fn commit(&mut self, deleted: bool) -> Result<(), JournalError>;
    /// Abandons the transaction.
    fn rollback(&mut self);
    /// When the backend has work due while no change comes (scrubbing
    /// what content taken out left on disk), if any.
    fn idle_work_at(&self) -> Option<Instant> {
        None
    }
    /// Does that work, outside any transaction.
    fn idle_work(&mut self) {}
}

/// How the writer groups and keeps changes.
pub(crate) struct Policy {
    pub fsync: Fsync,
    pub retention: Retention,
}

impl Policy {
    /// Changes committed in one transaction at most. The group is taken out
    /// of the queue (16 384 by default), so at most this many more changes
    /// are held in memory than the queue bounds.
    ///
    /// Why this many: a commit's flush costs about the same whatever it
    /// holds (4-17 ms on this project's machine), so under a load that
    /// fills every group the group's size decides how many changes a
    /// second the store can take. With 8 192, 100 rooms posting 280 000
    /// messages a second evenly spaced (2.8 M deliveries/s, one core
    /// shared with fan-out) filled the queue and refused posts
    /// (`unavailable`) in 7 of 9 runs; with 16 384 in none of 5
    /// (docs/BENCHMARKS.md, issue 15, "The store at 2.8 M deliveries a
    /// second").
    fn max_group(&self) -> usize {
        match self.fsync {
            Fsync::Always => 1,
            Fsync::Batch | Fsync::Off => 16_384,
        }
    }

    /// The least time from one commit's start to the next while changes
    /// keep coming. A commit costs about the same whatever it holds: with
    /// a row in each of many rooms it rewrites a page of each room's
    /// history, then the write-ahead log's pages, then (every few thousand
    /// pages) copies them into the file. Measured (docs/BENCHMARKS.md,
    /// issue 15), 100 rooms at 10 000 posts/s: 23–26 µs of the writer's
    /// CPU per change with a commit every 2 ms or so, 13–17 µs with one
    /// every 50 ms; on one core that CPU is taken from fan-out. An idle
    /// store commits a lone change after [`GATHER`]: the pace only shows
    /// under load. Reads are not paced (see [`GATHER`]), so a store busy
    /// with joins and history pages as well commits more often.
    fn commit_interval(&self) -> Duration {
        match self.fsync {
            Fsync::Always => Duration::ZERO,
            Fsync::Batch | Fsync::Off => Duration::from_millis(50),
        }
    }
}

/// What one pass over a group produced, sent only once it is committed.
enum Outcome {
    Loaded(Snapshot),
    Paged((Vec<StoredMessage>, bool)),
    Nothing,
}

/// How long a change that finds the writer idle waits for company before
/// it is committed (unless `--fsync always`). Without it a lightly loaded
/// writer commits each change alone; with it a burst of posts shares one
/// transaction. A read, a flush or a stop ends the wait (this, and
/// [`Policy::commit_interval`] under load) as it arrives: a join never
/// waits for company.
const GATHER: Duration = Duration::from_millis(2);

const MIN_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// How often messages past the retention period are deleted.
const PRUNE_EVERY: Duration = Duration::from_secs(600);
/// Most messages one transaction of a retention pass deletes: a pass over
/// a large backlog (retention turned on for an old store) goes in batches,
/// each well within PostgreSQL's statement timeout, and the writer's queue
/// is served between them.
const PRUNE_BATCH: u64 = 10_000;

/// Rooms whose last operation the writer took was a load that reserved
/// seqs, each with the last seq that load read: nothing shows the room used
/// the reservation. A room hands out seqs only once its load is installed,
/// and every seq it hands out is a post queued to the writer (its place in
/// the queue taken first), so a post or a settle of the room takes it out.
/// When the writer ends, a load still here was never used: its join was
/// still being answered as the server stopped, and the hub, which settles
/// the rooms it loaded, did not have it. Its reservation is settled back,
/// so a clean restart numbers on without a jump of a block.
#[derive(Default)]
struct Unused(HashMap<Arc<str>, u64>);

impl Unused {
    fn loaded(&mut self, room: &str, snapshot: &Snapshot) {
        // With a backbone a load reserves nothing (it numbers the room).
        if snapshot.reserved > snapshot.last_seq {
            self.0.insert(room.into(), snapshot.last_seq);
        }
    }

    fn changed(&mut self, change: &Change) {
        if matches!(change, Change::Post { .. } | Change::Settle { .. }) && !self.0.is_empty() {
            self.0.remove(change.room());
        }
    }

    /// Settles every load left, in a transaction of its own: best effort,
    /// as a crash would leave them (a jump in the numbering, no reuse).
    fn settle(self, journal: &mut impl Journal, retention: &Retention) {
        if self.0.is_empty() {
            return;
        }
        let settled = journal
            .begin()
            .and_then(|()| {
                self.0.into_iter().try_for_each(|(room, last_seq)| {
                    journal.apply(&Change::Settle { room, last_seq }, retention)
                })
            })
            .and_then(|()| journal.commit(false));
        if let Err(e) = settled {
            journal.rollback();
            tracing::warn!(
                "rooms loaded for joins the stop cut short keep their reservations ({}); \
                 their numbering jumps at the next start",
                e.message
            );
        }
    }
}

/// Runs until every sender is gone or a `Stop` arrives; then the journal
/// (and its file or connection) is dropped.
pub(crate) fn run(
    mut journal: impl Journal,
    mut inbox: StoreInbox,
    policy: Policy,
    metrics: Arc<Metrics>,
) {
    let max = policy.max_group();
    let interval = policy.commit_interval();
    let mut last_commit: Option<Instant> = None;
    let mut last_prune: Option<Instant> = None;
    // A retention pass is under way: more batches may be due.
    let mut pruning = false;
    let mut unused = Unused::default();
    let mut stop: Option<oneshot::Sender<()>> = None;
    while stop.is_none() {
        // Work the backend owes that a next commit would do: done when
        // it is due and nothing has come, not only at the next change.
        if let Some(at) = journal.idle_work_at()
            && inbox.wait_for_company(at, 1)
            && inbox.is_empty()
            && Instant::now() >= at
        {
            journal.idle_work();
            continue;
        }
        let Some(first) = inbox.recv() else {
            break;
        };
        let mut group = Group::new(first);
        if group.may_wait() && !interval.is_zero() {
            // Changes wait for company: at least GATHER, and until the
            // pace allows the next commit.
            let now = Instant::now();
            let due = last_commit.map_or(now, |t| t + interval).max(now + GATHER);
            group.gather(&mut inbox, max, due);
        }
        group.take_queued(&mut inbox, max);
        // A lone read does not count: a post after a join, on an idle
        // store, still waits only GATHER.
        if group.changes > 0 {
            last_commit = Some(Instant::now());
        }
        let mut group = group.ops;
        // Everything before a stop is committed; the stop is answered once
        // the journal is closed.
        if let Some(at) = group.iter().position(|op| matches!(op, StoreOp::Stop(_)))
            && let StoreOp::Stop(reply) = group.remove(at)
        {
            stop = Some(reply);
        }
        commit_group(&mut journal, group, &policy, &inbox, &metrics, &mut unused);
        metrics.store_queue.set(inbox.len() as u64);
        if policy.retention.days.is_some()
            && !pruning
            && last_prune.is_none_or(|t| t.elapsed() >= PRUNE_EVERY)
        {
            last_prune = Some(Instant::now());
            pruning = true;
        }
        // A batch after each commit, and more while nothing waits.
        while pruning {
            pruning = prune(&mut journal, &policy.retention, &inbox, &metrics);
            if !inbox.is_empty() {
                break;
            }
        }
    }
    if stop.is_some() {
        // Changes queued behind the stop, and none after: a change a
        // session posts from now on is refused, not queued and dropped.
        let rest = inbox.close();
        commit_group(&mut journal, rest, &policy, &inbox, &metrics, &mut unused);
    }
    // Nothing can be posted any more.
    unused.settle(&mut journal, &policy.retention);
    drop(journal);
    if let Some(reply) = stop {
        let _ = reply.send(());
    }
}

/// The operations one commit takes, as they are taken from the queue.
struct Group {
    ops: Vec<StoreOp>,
    changes: usize,
    /// It holds a read, a flush or a stop: it commits without waiting.
    urgent: bool,
}

impl Group {
    fn new(first: StoreOp) -> Self {
        let mut group = Self {
            ops: Vec::new(),
            changes: 0,
            urgent: false,
        };
        group.push(first);
        group
    }

    fn push(&mut self, op: StoreOp) {
        if matches!(op, StoreOp::Change(..)) {
            self.changes += 1;
        } else {
            self.urgent = true;
        }
        self.ops.push(op);
    }

    /// Only changes wait: a read, a flush or a stop is answered at once.
    fn may_wait(&self) -> bool {
        !self.urgent
    }

    /// Takes what arrives until `due`, the group is full, or something
    /// that may not wait arrives. Sleeps until one of those rather than
    /// being woken by every change that comes meanwhile.
    fn gather(&mut self, inbox: &mut StoreInbox, max: usize, due: Instant) {
        loop {
            self.take_queued(inbox, max);
            if Instant::now() >= due || self.changes >= max || !self.may_wait() {
                return;
            }
            if !inbox.wait_for_company(due, max - self.changes) {
                // Every sender is gone: take what came and commit.
                self.take_queued(inbox, max);
                return;
            }
        }
    }

    /// Takes whatever is queued now, up to `max` changes (in one take
    /// from the queue: a read taken counts as a change would).
    fn take_queued(&mut self, inbox: &mut StoreInbox, max: usize) {
        let start = self.ops.len();
        inbox.take(max.saturating_sub(self.changes), &mut self.ops);
        let taken = &self.ops[start..];
        let changes = taken
            .iter()
            .filter(|op| matches!(op, StoreOp::Change(..)))
            .count();
        self.changes += changes;
        self.urgent |= changes < taken.len();
    }
}

/// Commits one group, retrying transient failures until it commits. A
/// group that fails for a reason of its own is split, so one bad change is
/// skipped (and logged) without holding back the others. A read that
/// failed is taken out instead: the rest commits as a group, and the read
/// runs again alone, its error (if it fails again) its answer.
fn commit_group(
    journal: &mut impl Journal,
    group: Vec<StoreOp>,
    policy: &Policy,
    inbox: &StoreInbox,
    metrics: &Metrics,
    unused: &mut Unused,
) {
    if group.is_empty() {
        return;
    }
    let mut failed_read = None;
    match until_not_transient(journal, policy, inbox, metrics, |j| {
        attempt(j, &group, policy, &mut failed_read)
    }) {
        Ok(outcomes) => finish(group, outcomes, inbox, metrics, unused),
        Err(e) if group.len() > 1 => match failed_read {
            // Split, a group of 16 384 changes would be that many commits,
            // each flushed, for one join of a room whose rows do not read.
            // Alone, the read may also succeed: it failed for a change of
            // the group that it wrote first (SQLite writes a room's waiting
            // posts before reading the room), now skipped in the rest.
            Some(at) => {
                tracing::debug!("a read failed ({}); answered alone", e.message);
                let mut rest = group;
                let read = rest.remove(at);
                commit_group(journal, rest, policy, inbox, metrics, unused);
                commit_group(journal, vec![read], policy, inbox, metrics, unused);
            }
            None => {
                tracing::debug!("a group failed ({}); committing it one by one", e.message);
                for op in group {
                    commit_group(journal, vec![op], policy, inbox, metrics, unused);
                }
            }
        },
        Err(e) => {
            metrics.store_errors.inc();
            let reservation = reservation(&group);
            fail_alone(group, &e, inbox, unused);
            if let Some((room, through, cell)) = reservation {
                reserve_alone(journal, (&room, through, &cell), policy, inbox, metrics);
            }
        }
    }
}

/// Runs `pass` (a whole transaction) until it commits or fails for a
/// reason of its own, rolled back after each failure. While failures pass,
/// the store reports itself failing (the hub refuses new changes) and
/// retries with a growing pause; out of space, it first deletes what the
/// retention period no longer keeps.
fn until_not_transient<J: Journal, T>(
    journal: &mut J,
    policy: &Policy,
    inbox: &StoreInbox,
    metrics: &Metrics,
    mut pass: impl FnMut(&mut J) -> Result<T, JournalError>,
) -> Result<T, JournalError> {
    let mut backoff = MIN_BACKOFF;
    loop {
        let e = match pass(journal) {
            Ok(done) => {
                if inbox.health.degraded().is_some() {
                    tracing::info!("the history store commits again");
                }
                inbox.set_ok();
                return Ok(done);
            }
            Err(e) => e,
        };
        journal.rollback();
        if !e.transient {
            return Err(e);
        }
        metrics.store_errors.inc();
        if inbox.health.degraded().is_none() {
            tracing::warn!(
                "the history store cannot commit ({}); refusing changes and retrying",
                e.message
            );
        }
        inbox.set_failing(e.message);
        if e.full {
            prune(journal, &policy.retention, inbox, metrics);
        }
        std::thread::sleep(backoff);
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// The room, seqs and cell of the reservation a lone post carries.
fn reservation(group: &[StoreOp]) -> Option<(Arc<str>, u64, Arc<AtomicU64>)> {
    match group {
        [
            StoreOp::Change(
                Change::Post {
                    room,
                    reserve_through: Some(through),
                    ..
                },
                Some(cell),
            ),
        ] => Some((Arc::clone(room), *through, Arc::clone(cell))),
        _ => None,
    }
}

/// A post that could not be recorded carried its room's next reservation:
/// that is recorded alone. Without it the room, which asks once per block,
/// would refuse every post once its current block ran out.
fn reserve_alone(
    journal: &mut impl Journal,
    (room, through, cell): (&str, u64, &AtomicU64),
    policy: &Policy,
    inbox: &StoreInbox,
    metrics: &Metrics,
) {
    let recorded = until_not_transient(journal, policy, inbox, metrics, |j| {
        j.begin()?;
        j.reserve(room, through)?;
        j.commit(false)
    });
    match recorded {
        Ok(()) => mark_reserved(cell, through),
        Err(e) => tracing::error!(
            room,
            "the history store could not record the room's next seqs ({}); \
             its posts are refused once its current block is used",
            e.message
        ),
    }
}

/// One pass over a group inside one transaction; `failed_read` is set to
/// the place of the read that failed, if one did.
fn attempt(
    journal: &mut impl Journal,
    group: &[StoreOp],
    policy: &Policy,
    failed_read: &mut Option<usize>,
) -> Result<Vec<Outcome>, JournalError> {
    *failed_read = None;
    journal.begin()?;
    let mut outcomes = Vec::with_capacity(group.len());
    let mut deleted = false;
    for (i, op) in group.iter().enumerate() {
        prefetch::fields(group.get(i + 2 * prefetch::AHEAD));
        prefetch::text(group.get(i + prefetch::AHEAD));
        outcomes.push(match op {
            StoreOp::Change(change, _) => {
                deleted |= matches!(change, Change::Delete { .. });
                journal.apply(change, &policy.retention)?;
                Outcome::Nothing
            }
            StoreOp::Load {
                room, tail, block, ..
            } => Outcome::Loaded(
                journal
                    .load(room, *tail, *block)
                    .inspect_err(|_| *failed_read = Some(i))?,
            ),
            StoreOp::Page { room, query, .. } => Outcome::Paged(
                journal
                    .page(room, *query)
                    .inspect_err(|_| *failed_read = Some(i))?,
            ),
            StoreOp::Flush(_) | StoreOp::Stop(_) => Outcome::Nothing,
        });
    }
    journal.commit(deleted)?;
    Ok(outcomes)
}

/// After a commit: reservations become usable, readers get their answers.
fn finish(
    group: Vec<StoreOp>,
    outcomes: Vec<Outcome>,
    inbox: &StoreInbox,
    metrics: &Metrics,
    unused: &mut Unused,
) {
    let mut committed = 0;
    let mut ops = group.into_iter();
    for outcome in outcomes {
        let Some(op) = ops.next() else { break };
        prefetch::counts(ops.as_slice().get(prefetch::AHEAD));
        match (op, outcome) {
            (StoreOp::Change(change, durable), _) => {
                committed += 1;
                unused.changed(&change);
                if let (
                    Some(cell),
                    Change::Post {
                        reserve_through: Some(r),
                        ..
                    },
                ) = (durable, &change)
                {
                    mark_reserved(&cell, *r);
                }
            }
            (StoreOp::Load { room, reply, .. }, Outcome::Loaded(snapshot)) => {
                unused.loaded(&room, &snapshot);
                let _ = reply.send(Ok(snapshot));
            }
            (StoreOp::Page { reply, .. }, Outcome::Paged(page)) => {
                let _ = reply.send(Ok(page));
            }
            (StoreOp::Flush(reply), _) => {
                let _ = reply.send(());
            }
            _ => {}
        }
    }
    inbox.health.committed(committed);
    metrics.store_commits.inc();
    metrics.store_changes.add(committed);
}

fn mark_reserved(cell: &AtomicU64, through: u64) {
    cell.fetch_max(through, Ordering::AcqRel);
}

/// One operation that fails for a reason of its own: a read is answered
/// with the error; a change is skipped, loudly (it was already shown to
/// the room; only its record is missing).
fn fail_alone(group: Vec<StoreOp>, e: &JournalError, inbox: &StoreInbox, unused: &mut Unused) {
    for op in group {
        match op {
            StoreOp::Change(change, _) => {
                inbox.health.committed(1);
                // A post skipped still took its seq.
                unused.changed(&change);
                tracing::error!(
                    "the history store refused a change and skipped it ({}): {change:?}",
                    e.message
                );
            }
            StoreOp::Load { reply, .. } => {
                let _ = reply.send(Err(StoreError(e.message.clone())));
            }
            StoreOp::Page { reply, .. } => {
                let _ = reply.send(Err(StoreError(e.message.clone())));
            }
            StoreOp::Flush(reply) => {
                let _ = reply.send(());
            }
            StoreOp::Stop(reply) => {
                let _ = reply.send(());
            }
        }
    }
}

/// Deletes a batch of what the retention period no longer keeps; whether
/// more may be left (best effort: a failure is retried at the next
/// period).
fn prune(
    journal: &mut impl Journal,
    retention: &Retention,
    inbox: &StoreInbox,
    metrics: &Metrics,
) -> bool {
    let Some(days) = retention.days else {
        return false;
    };
    let cutoff = now_ms().saturating_sub(i64::from(days).saturating_mul(86_400_000));
    let result = journal
        .begin()
        .and_then(|()| journal.prune(cutoff, PRUNE_BATCH))
        .and_then(|n| journal.commit(n > 0).map(|()| n));
    match result {
        Ok(n) => {
            let more = n >= PRUNE_BATCH;
            if !more {
                // The pass is over: nothing posted before the cutoff is
                // left, and rooms in memory let those messages go too
                // (told before the count, which tests wait for).
                inbox.health.pruned(u64::try_from(cutoff).unwrap_or(0));
            }
            if n > 0 {
                metrics.store_pruned.add(n);
                tracing::info!(deleted = n, "messages past the retention period deleted");
            }
            more
        }
        Err(e) => {
            journal.rollback();
            if inbox.health.degraded().is_none() {
                tracing::warn!("retention pass failed ({}); trying again later", e.message);
            }
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::{Store, store_channel};

    fn edit(n: usize) -> StoreOp {
        StoreOp::Change(
            Change::Edit {
                room: "r".into(),
                message_id: format!("m{n}"),
                seq: n as u64,
                content: "c".into(),
                edited_at: "t".into(),
                version: 0,
            },
            None,
        )
    }

    fn inbox(ops: Vec<StoreOp>) -> (Store, StoreInbox) {
        let (store, inbox) = store_channel(64);
        for op in ops {
            store.queue_for_test(op);
        }
        (store, inbox)
    }

    // The deadline is an hour away: gather returns only because the group
    // may no longer wait (a hang here is the failure).
    const LATER: Duration = Duration::from_secs(3600);

    #[test]
    fn a_read_behind_changes_ends_their_wait() {
        let (reply, _answer) = oneshot::channel();
        let (_tx, mut inbox) = inbox(vec![edit(1), edit(2), StoreOp::Flush(reply), edit(3)]);
        let first = inbox.recv().expect("queued");
        let mut group = Group::new(first);
        assert!(group.may_wait());
        group.gather(&mut inbox, 8192, Instant::now() + LATER);
        assert!(!group.may_wait());
        // Everything queued goes with it: the read is answered after the
        // commit that covers the changes before it.
        assert_eq!((group.ops.len(), group.changes), (4, 3));
    }

    #[test]
    fn a_full_group_ends_the_wait_and_leaves_the_rest_queued() {
        let (_tx, mut inbox) = inbox((0..5).map(edit).collect());
        let first = inbox.recv().expect("queued");
        let mut group = Group::new(first);
        group.gather(&mut inbox, 3, Instant::now() + LATER);
        assert_eq!(group.changes, 3);
        assert_eq!(inbox.len(), 2);
    }

    /// A backend that refuses one post for a reason of its own, may be
    /// out of space until a retention pass has run, and may owe idle work.
    #[derive(Default)]
    struct Fake {
        refused_seq: u64,
        /// Page reads fail for a reason of their own.
        refused_pages: bool,
        /// Transactions committed.
        commits: usize,
        full: bool,
        /// When idle work is due (once: doing it clears this).
        idle_at: Option<Instant>,
        /// Told when the idle work is done.
        idle_done: Option<std::sync::mpsc::Sender<()>>,
        /// Retention passes' transactions.
        prunes: Arc<AtomicU64>,
        /// Messages past the retention period.
        old: Arc<AtomicU64>,
        open: Vec<String>,
        committed: Arc<std::sync::Mutex<Vec<String>>>,
    }

    impl Fake {
        fn committed(&self) -> Vec<String> {
            self.committed.lock().unwrap().clone()
        }
    }

    impl Journal for Fake {
        fn begin(&mut self) -> Result<(), JournalError> {
            self.open.clear();
            Ok(())
        }
        fn apply(&mut self, change: &Change, _: &Retention) -> Result<(), JournalError> {
            if let Change::Settle { room, last_seq } = change {
                self.open.push(format!("settle {room} {last_seq}"));
            }
            let Change::Post {
                message,
                reserve_through,
                ..
            } = change
            else {
                return Ok(());
            };
            if message.seq == self.refused_seq {
                return Err(JournalError {
                    message: "this post cannot be stored".into(),
                    transient: false,
                    full: false,
                });
            }
            self.open.push(format!("post {}", message.seq));
            if let Some(r) = reserve_through {
                self.open.push(format!("reserve {r}"));
            }
            Ok(())
        }
        fn load(&mut self, _: &str, _: usize, block: u64) -> Result<Snapshot, JournalError> {
            Ok(Snapshot {
                reserved: block,
                ..Snapshot::default()
            })
        }
        fn page(
            &mut self,
            _: &str,
            _: PageQuery,
        ) -> Result<(Vec<StoredMessage>, bool), JournalError> {
            if self.refused_pages {
                return Err(JournalError {
                    message: "this room's rows do not read".into(),
                    transient: false,
                    full: false,
                });
            }
            Ok((Vec::new(), false))
        }
        fn prune(&mut self, _: i64, max: u64) -> Result<u64, JournalError> {
            self.prunes.fetch_add(1, Ordering::Relaxed);
            self.full = false;
            let old = self.old.load(Ordering::Relaxed);
            let n = old.min(max);
            self.old.store(old - n, Ordering::Relaxed);
            Ok(n)
        }
        fn reserve(&mut self, room: &str, through: u64) -> Result<(), JournalError> {
            self.open.push(format!("reserve {room} {through}"));
            Ok(())
        }
        fn commit(&mut self, _: bool) -> Result<(), JournalError> {
            if self.full {
                return Err(JournalError {
                    message: "full".into(),
                    transient: true,
                    full: true,
                });
            }
            self.committed.lock().unwrap().append(&mut self.open);
            self.commits += 1;
            Ok(())
        }
        fn rollback(&mut self) {
            self.open.clear();
        }
        fn idle_work_at(&self) -> Option<Instant> {
            self.idle_at
        }
        fn idle_work(&mut self) {
            self.idle_at = None;
            if let Some(done) = &self.idle_done {
                let _ = done.send(());
            }
        }
    }

    fn post(seq: u64, reserve: Option<(u64, &Arc<AtomicU64>)>) -> StoreOp {
        let Change::Post { room, message, .. } = crate::store::fixtures::post("r", seq, "t") else {
            unreachable!("fixtures::post is a post")
        };
        let change = Change::Post {
            room,
            message,
            reserve_through: reserve.map(|(r, _)| r),
        };
        StoreOp::Change(change, reserve.map(|(_, cell)| Arc::clone(cell)))
    }

    /// Commits `group` as the writer does, outside its loop.
    fn commit(journal: &mut Fake, group: Vec<StoreOp>, policy: &Policy, inbox: &StoreInbox) {
        let metrics = Metrics::default();
        commit_group(
            journal,
            group,
            policy,
            inbox,
            &metrics,
            &mut Unused::default(),
        );
    }

    fn policy(days: Option<u32>) -> Policy {
        Policy {
            fsync: Fsync::Batch,
            retention: Retention {
                days,
                per_room: None,
            },
        }
    }

    #[test]
    fn a_post_the_store_refuses_still_records_its_rooms_next_seqs() {
        let (_store, inbox) = inbox(Vec::new());
        let cell = Arc::new(AtomicU64::new(100));
        let mut journal = Fake {
            refused_seq: 2,
            ..Fake::default()
        };
        let group = vec![post(1, None), post(2, Some((200, &cell))), post(3, None)];
        commit(&mut journal, group, &policy(None), &inbox);
        // The others are kept, the reservation is recorded on its own, and
        // only then may the room use it.
        assert_eq!(journal.committed(), ["post 1", "reserve r 200", "post 3"]);
        assert_eq!(cell.load(Ordering::Acquire), 200);
        assert!(inbox.health.degraded().is_none());
    }

    #[test]
    fn a_read_that_fails_is_answered_alone_and_the_changes_around_it_commit_together() {
        let (_store, inbox) = inbox(Vec::new());
        let mut journal = Fake {
            refused_pages: true,
            ..Fake::default()
        };
        let (reply, answer) = oneshot::channel();
        let page = StoreOp::Page {
            room: "r".into(),
            query: PageQuery {
                after: 0,
                before: None,
                limit: 10,
            },
            reply,
        };
        let mut group: Vec<StoreOp> = (1..=10).map(|seq| post(seq, None)).collect();
        group.insert(5, page);
        commit(&mut journal, group, &policy(None), &inbox);
        let answered = answer.blocking_recv().expect("the read is answered");
        assert!(answered.is_err(), "{answered:?}");
        assert_eq!(journal.committed().len(), 10);
        assert_eq!(journal.commits, 1, "the posts commit as one group");
        assert!(inbox.health.degraded().is_none());
    }

    #[test]
    fn out_of_space_the_writer_deletes_what_retention_lets_go_before_retrying() {
        let (_store, inbox) = inbox(Vec::new());
        let mut journal = Fake {
            full: true,
            ..Fake::default()
        };
        commit(&mut journal, vec![post(1, None)], &policy(Some(30)), &inbox);
        assert_eq!(journal.prunes.load(Ordering::Relaxed), 1);
        assert_eq!(journal.committed(), ["post 1"]);
        assert!(inbox.health.degraded().is_none());
    }

    #[test]
    fn a_stop_commits_what_is_queued_behind_it_and_then_refuses_changes() {
        let (reply, stopped) = oneshot::channel();
        // One change per group: the stop's group does not take the post
        // queued after it.
        let (store, inbox) = inbox(vec![post(1, None), StoreOp::Stop(reply), post(2, None)]);
        let journal = Fake::default();
        let committed = Arc::clone(&journal.committed);
        run(
            journal,
            inbox,
            Policy {
                fsync: Fsync::Always,
                ..policy(None)
            },
            Arc::default(),
        );
        assert!(stopped.blocking_recv().is_ok());
        assert_eq!(*committed.lock().unwrap(), ["post 1", "post 2"]);
        assert!(store.slot().is_err(), "a change after the stop is refused");
        assert_eq!(
            store.degraded().as_deref(),
            Some("the history store has stopped")
        );
    }

    /// A change room was taken for before the stop (with a backbone, a post
    /// waiting for its answer) is waited for and committed: it is answered
    /// as accepted.
    #[test]
    fn a_stop_waits_for_a_change_it_gave_room_for_and_commits_it() {
        let (store, inbox) = inbox(Vec::new());
        let slot = store.slot().expect("room for a change");
        let journal = Fake::default();
        let committed = Arc::clone(&journal.committed);
        let writer = std::thread::spawn(move || run(journal, inbox, policy(None), Arc::default()));
        let (reply, mut stopped) = oneshot::channel();
        store.queue_for_test(StoreOp::Stop(reply));
        // The writer stops giving room, then waits for the slot it gave.
        let refused = loop {
            match store.slot() {
                Ok(_) => std::thread::yield_now(),
                Err(refused) => break refused,
            }
        };
        assert!(refused.message.contains("stopped"), "{}", refused.message);
        assert!(stopped.try_recv().is_err(), "the stop waits for the slot");
        let Change::Post { room, message, .. } = crate::store::fixtures::post("r", 1, "t") else {
            unreachable!("fixtures::post is a post")
        };
        let change = Change::Post {
            room,
            message,
            reserve_through: None,
        };
        slot.send(change, None);
        writer.join().unwrap();
        assert!(stopped.blocking_recv().is_ok());
        assert_eq!(*committed.lock().unwrap(), ["post 1"]);
        assert_eq!(store.uncommitted(), 0);
    }

    /// With `--fsync always` a group takes one change, so a change that
    /// comes behind reads (here flushes, a group each) is received alone,
    /// never through `take`: work owed after it (SQLite truncating its log
    /// after a delete) is still done once due while nothing comes, not at
    /// the next change.
    #[test]
    fn work_owed_while_idle_is_done_once_due_with_fsync_always() {
        let (flushed, answered) = oneshot::channel();
        let (also_flushed, _) = oneshot::channel();
        let ops = vec![
            StoreOp::Flush(flushed),
            StoreOp::Flush(also_flushed),
            post(1, None),
        ];
        let (store, inbox) = inbox(ops);
        let (idle_done, done) = std::sync::mpsc::channel();
        let journal = Fake {
            idle_at: Some(Instant::now() + Duration::from_millis(100)),
            idle_done: Some(idle_done),
            ..Fake::default()
        };
        let policy = Policy {
            fsync: Fsync::Always,
            ..policy(None)
        };
        let committed = Arc::clone(&journal.committed);
        let writer = std::thread::spawn(move || run(journal, inbox, policy, Arc::default()));
        assert!(answered.blocking_recv().is_ok());
        // A hang here is the failure (the writer blocked for a change).
        done.recv_timeout(Duration::from_secs(60))
            .expect("the idle work was done with nothing queued");
        assert_eq!(*committed.lock().unwrap(), ["post 1"]);
        drop(store);
        writer.join().unwrap();
    }

    /// A load no post or settle of its room followed (its join was cut
    /// short by the stop) is settled back when the writer ends; a load
    /// its room used is left alone.
    #[test]
    fn at_its_end_the_writer_settles_the_loads_no_room_used_and_only_those() {
        let load = |room: &str| {
            let (reply, answer) = oneshot::channel();
            let op = StoreOp::Load {
                room: room.into(),
                tail: 10,
                block: crate::hub::RESERVE_BLOCK,
                reply,
            };
            (op, answer)
        };
        let ((used, _answer), (unused, _also)) = (load("r"), load("idle"));
        let (reply, stopped) = oneshot::channel();
        let ops = vec![used, unused, post(1, None), StoreOp::Stop(reply)];
        let (_store, inbox) = inbox(ops);
        let journal = Fake::default();
        let committed = Arc::clone(&journal.committed);
        run(journal, inbox, policy(None), Arc::default());
        assert!(stopped.blocking_recv().is_ok());
        assert_eq!(*committed.lock().unwrap(), ["post 1", "settle idle 0"]);
    }

    #[test]
    fn a_large_retention_backlog_goes_in_batches_until_none_is_left() {
        let (store, inbox) = inbox(vec![post(1, None)]);
        drop(store);
        let journal = Fake {
            old: Arc::new(AtomicU64::new(2 * PRUNE_BATCH + 5)),
            ..Fake::default()
        };
        let (prunes, old) = (Arc::clone(&journal.prunes), Arc::clone(&journal.old));
        run(journal, inbox, policy(Some(30)), Arc::default());
        // Three transactions of at most a batch each, one after the other
        // while nothing is queued; the last one short: the pass is over.
        assert_eq!(prunes.load(Ordering::Relaxed), 3);
        assert_eq!(old.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn only_fsync_always_commits_each_change_alone_and_at_once() {
        let policy = |fsync| Policy {
            fsync,
            retention: Retention::default(),
        };
        assert_eq!(policy(Fsync::Always).max_group(), 1);
        assert!(policy(Fsync::Always).commit_interval().is_zero());
        for fsync in [Fsync::Batch, Fsync::Off] {
            assert!(policy(fsync).max_group() > 1);
            assert!(!policy(fsync).commit_interval().is_zero());
        }
    }
}
