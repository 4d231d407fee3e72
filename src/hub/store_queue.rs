//! The queue between the hub and the store's writer thread.
//!
//! Written here rather than taken from tokio's `mpsc`: every post puts one
//! operation in it, and tokio's channel allocates a block of 32 slots (each
//! an operation of over 100 bytes) as it goes. Under load that is a
//! 3 KiB `malloc` on the fan-out thread every 32 posts, a size for which
//! glibc first merges every small chunk freed since, and the frames and
//! messages allocated after it then come from its slow path (`perf`,
//! docs/BENCHMARKS.md, issue 15). This queue is a `VecDeque` behind a
//! mutex: it grows to the longest it has been, at most the bound, and
//! keeps that storage, so a post's operation is a move into storage that
//! is already there. The writer takes what is queued in one lock.
//!
//! Bounded: [`StoreQueue::reserve`] takes room for one operation before
//! the hub applies the change, and fails once `capacity` operations are
//! queued or reserved (the hub then refuses the change: nothing accepted is
//! dropped). [`StoreQueue::push_control`] (a flush or a stop, only from the
//! server's own code, each caller waiting for its answer; or a post the
//! backbone made after it was answered `unavailable`, at most what
//! `in_doubt.rs` keeps) queues past the bound.
//!
//! Before the bound, the queue says it is behind (through the hook the
//! server attached, [`StoreQueue::report_backlog`]) once three quarters of
//! it are queued, and caught up once under half; the server reads no
//! requests meanwhile (as for a connection's queue: `outbox.rs`), so a
//! writer late because the core is busy or a commit was slow shows as
//! latency, not as posts refused. Under load the queue holds what arrives
//! during one commit: past three quarters is a commit several times longer
//! than usual. Each session checks the throttle before each request it
//! reads, so at most one request per running worker thread gets past it:
//! the last quarter is their room. A failing store is never behind: it
//! refuses changes at once (`store.rs`), and its clients hear why. A
//! queue behind for long (a database that hangs without failing) is told
//! to health checks too ([`StoreQueue::behind_for`]).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use super::outbox::BacklogHook;
use super::store::StoreOp;

/// The most operations the writer moves out in one lock (about 26 KiB: a
/// few microseconds). A writer preempted while it holds the lock holds up
/// the fan-out thread's next push until it runs again, so the lock is
/// never held for a whole group of thousands.
const TAKE_AT_ONCE: usize = 256;

/// Set in [`StoreQueue::used`] once the writer is stopping: no more room is
/// taken (the count is then past any bound), and what was taken is waited
/// for ([`StoreQueue::close_after_slots`]).
const CLOSING: usize = 1 << (usize::BITS - 1);

/// What the hub and the writer share; see the module docs.
pub(super) struct StoreQueue {
    state: Mutex<Queued>,
    /// Signalled when the writer waits and what it waits for arrives (see
    /// [`Wait`]), or the last sender goes.
    ready: Condvar,
    /// Operations queued or reserved (never below the number queued), and
    /// [`CLOSING`].
    used: AtomicUsize,
    /// The writer is gone: operations pushed now are dropped at once (a
    /// reply in one then tells its caller the store has stopped). Set
    /// under the lock, so a push under the lock sees it.
    closed: AtomicBool,
    capacity: usize,
    /// Told when the queue starts and stops being behind.
    backlog: OnceLock<BacklogHook>,
    /// How many times `ready` was signalled.
    #[cfg(test)]
    signals: AtomicUsize,
}

struct Queued {
    ops: VecDeque<StoreOp>,
    /// Live [`super::Store`] handles; with none left and nothing queued the
    /// writer stops.
    senders: usize,
    /// What the writer is waiting on `ready` for.
    writer: Wait,
    /// An operation that may not wait (anything but a change) was queued
    /// since the queue was last emptied.
    urgent: bool,
    /// Reported behind to the backlog hook (see the module docs).
    behind: bool,
    /// Since when it is, while it is.
    behind_since: Option<Instant>,
    /// The store is failing: it refuses changes, so it is never behind.
    failing: bool,
}

/// What wakes the writer.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Wait {
    /// It is not waiting.
    No,
    /// Idle: any operation.
    Any,
    /// Gathering a group ([`StoreQueue::wait_for_company`]): only an
    /// operation that may not wait, or this many queued.
    Company(usize),
    /// Stopping ([`StoreQueue::close_after_slots`]): room taken being used
    /// or given back.
    Slots,
}

impl StoreQueue {
    /// An empty queue for `capacity` operations (at least one) and one sender.
    pub fn new(capacity: usize) -> Self {
        Self {
            state: Mutex::new(Queued {
                ops: VecDeque::new(),
                senders: 1,
                writer: Wait::No,
                urgent: false,
                behind: false,
                behind_since: None,
                failing: false,
            }),
            ready: Condvar::new(),
            used: AtomicUsize::new(0),
            closed: AtomicBool::new(false),
            capacity: capacity.max(1),
            backlog: OnceLock::new(),
            #[cfg(test)]
            signals: AtomicUsize::new(0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Queued> {
        // Every update is a single push, drain or count: a panic elsewhere
        // cannot leave the queue half-changed, so poisoning is ignored.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reports this queue to `hook` whenever it starts or stops being
    /// behind (see the module docs). The first hook attached stays.
    pub fn report_backlog(&self, hook: BacklogHook) {
        let _ = self.backlog.set(hook);
    }

    /// The store started (`true`) or stopped failing: while it fails it
    /// refuses changes and is not reported behind.
    pub fn set_failing(&self, failing: bool) {
        let mut q = self.lock();
        q.failing = failing;
        self.recount(&mut q);
    }

    /// Updates the backlog report after the queue changed: behind from
    /// three quarters of the bound, caught up under half, never while the
    /// store fails or once the writer is gone.
    fn recount(&self, q: &mut Queued) {
        let Some(hook) = self.backlog.get() else {
            return;
        };
        let len = q.ops.len();
        let stopped = q.failing || self.closed.load(Ordering::Acquire);
        let behind = if q.behind {
            !stopped && len >= self.capacity / 2
        } else {
            !stopped && len >= (self.capacity * 3 / 4).max(1)
        };
        if behind != q.behind {
            q.behind = behind;
            q.behind_since = behind.then(Instant::now);
            hook(behind);
        }
    }

    /// How long the queue has been reported behind, if it is (never
    /// without a backlog hook attached), and the operations queued at that
    /// moment: both read under one lock.
    pub fn behind_for(&self) -> Option<(Duration, usize)> {
        let q = self.lock();
        q.behind_since.map(|since| (since.elapsed(), q.ops.len()))
    }

    /// Takes room for one operation; `false` when the queue is full or
    /// closing (with [`CLOSING`] set, the count is past any capacity).
    pub fn reserve(&self) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                (used < self.capacity).then_some(used + 1)
            })
            .is_ok()
    }

    /// Gives back room taken by [`StoreQueue::reserve`] and not used.
    pub fn release(&self) {
        let before = self.used.fetch_sub(1, Ordering::AcqRel);
        if before & CLOSING != 0 {
            // The stopping writer may be waiting for this room.
            let mut q = self.lock();
            if q.writer == Wait::Slots {
                q.writer = Wait::No;
                drop(q);
                self.ready.notify_one();
            }
        }
    }

    /// Queues an operation into room taken by [`StoreQueue::reserve`]; gives
    /// it back (for the caller to drop) once the queue is closed.
    pub fn push(&self, op: StoreOp) -> Result<(), StoreOp> {
        let mut q = self.lock();
        if self.closed.load(Ordering::Acquire) {
            drop(q);
            self.release();
            return Err(op); // dropped by the caller, outside the lock
        }
        let urgent = !matches!(op, StoreOp::Change(..));
        q.urgent |= urgent;
        q.ops.push_back(op);
        if !q.behind {
            self.recount(&mut q);
        }
        let wake = match q.writer {
            Wait::No => false,
            Wait::Any | Wait::Slots => true,
            Wait::Company(enough) => urgent || q.ops.len() >= enough,
        };
        if wake {
            q.writer = Wait::No;
            drop(q);
            #[cfg(test)]
            self.signals.fetch_add(1, Ordering::Relaxed);
            self.ready.notify_one();
        }
        Ok(())
    }

    /// Queues a flush or a stop, or a change that can no longer be refused
    /// (`Store::send_late`), past the bound if need be; gives it back once
    /// the queue is closed.
    pub fn push_control(&self, op: StoreOp) -> Result<(), StoreOp> {
        self.used.fetch_add(1, Ordering::AcqRel);
        self.push(op)
    }

    /// Operations queued or reserved.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Acquire) & !CLOSING
    }

    /// Another [`super::Store`] handle.
    pub fn add_sender(&self) {
        self.lock().senders += 1;
    }

    /// A [`super::Store`] handle is gone.
    pub fn drop_sender(&self) {
        let mut q = self.lock();
        q.senders -= 1;
        if q.senders == 0 && q.writer != Wait::No {
            q.writer = Wait::No;
            drop(q);
            self.ready.notify_one();
        }
    }

    /// The oldest operation, waiting for one while none is queued; `None`
    /// once nothing is queued and every sender is gone.
    pub fn recv(&self) -> Option<StoreOp> {
        let mut q = self.lock();
        loop {
            if let Some(op) = q.ops.pop_front() {
                // Given back under the lock, before a caught-up queue lets
                // sessions read again (see `take`).
                self.used.fetch_sub(1, Ordering::AcqRel);
                // Emptied here, as by `take`: a stale flag would end every
                // wait for company at once (with `--fsync always` the
                // writer takes nothing more than what it receives here, so
                // its idle wait for owed work would return at once and
                // leave it blocked here, the work not done until a change).
                if q.ops.is_empty() {
                    q.urgent = false;
                }
                if q.behind {
                    self.recount(&mut q);
                }
                return Some(op);
            }
            if q.senders == 0 {
                return None;
            }
            q.writer = Wait::Any;
            q = self.ready.wait(q).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// The writer gathering a group sleeps until `until`, woken early only
    /// by an operation that may not wait (a read, a flush, a stop), once
    /// `enough` operations are queued (at most a quarter of the bound, so
    /// the queue never fills while it sleeps), or when the last sender
    /// goes. Changes that arrive meanwhile do not wake it: one wake-up per
    /// group instead of one every few milliseconds, each a context switch
    /// on the core fan-out needs. `false` once every sender is gone
    /// (nothing more will come: the writer stops gathering).
    pub fn wait_for_company(&self, until: Instant, enough: usize) -> bool {
        let enough = enough.min(self.capacity / 4).max(1);
        let mut q = self.lock();
        while !q.urgent && q.ops.len() < enough && q.senders > 0 {
            let now = Instant::now();
            if now >= until {
                break;
            }
            q.writer = Wait::Company(enough);
            q = self
                .ready
                .wait_timeout(q, until - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        q.writer = Wait::No;
        q.senders > 0
    }

    /// Moves up to `max` of the oldest queued operations to the end of
    /// `into`, without waiting; returns how many. Takes at most
    /// [`TAKE_AT_ONCE`] per lock, with room for them made in `into` before
    /// locking, so the fan-out thread never waits long for a push.
    pub fn take(&self, max: usize, into: &mut Vec<StoreOp>) -> usize {
        let mut taken = 0;
        while taken < max {
            into.reserve(TAKE_AT_ONCE);
            let mut q = self.lock();
            let n = (max - taken).min(q.ops.len()).min(TAKE_AT_ONCE);
            into.extend(q.ops.drain(..n));
            // The room is given back before the lock is: once a queue that
            // was behind is caught up, sessions read and post again at
            // once, and must find it. Given back after, by a writer
            // preempted in between (batch work, on a busy core), up to
            // TAKE_AT_ONCE still counted as used: the throttle stops reads
            // again at three quarters of what is queued, so a queue of
            // 1 024 or fewer (an embedder's `Config::store_queue`; the
            // default is 16 384) could fill and refuse posts as "the
            // history store is behind" with a quarter of it queued.
            self.used.fetch_sub(n, Ordering::AcqRel);
            if q.ops.is_empty() {
                q.urgent = false;
            }
            if q.behind {
                self.recount(&mut q);
            }
            drop(q);
            if n == 0 {
                break;
            }
            taken += n;
        }
        taken
    }

    /// The writer is stopping: no more room is taken from now on (a change
    /// is refused as the store "has stopped"), and room already taken, for
    /// a change being applied (with a backbone, across its round trip),
    /// is waited for until it is used or given back, or until `deadline`;
    /// then the queue is closed ([`StoreQueue::close`]). Returns what was
    /// queued, what came meanwhile too, for the writer to commit: a change
    /// answered as accepted is not dropped for coming during the stop.
    pub fn close_after_slots(&self, deadline: Instant) -> VecDeque<StoreOp> {
        let mut q = self.lock();
        self.used.fetch_or(CLOSING, Ordering::AcqRel);
        loop {
            let taken = self.used.load(Ordering::Acquire) & !CLOSING;
            if taken <= q.ops.len() {
                break;
            }
            let now = Instant::now();
            if now >= deadline {
                tracing::error!(
                    waiting = taken - q.ops.len(),
                    "the history store stops with changes still being applied; \
                     those are not recorded"
                );
                break;
            }
            q.writer = Wait::Slots;
            q = self
                .ready
                .wait_timeout(q, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        q.writer = Wait::No;
        drop(q);
        self.close()
    }

    /// The writer is going: whatever is pushed from now on is dropped at
    /// once; returns what was queued.
    pub fn close(&self) -> VecDeque<StoreOp> {
        let ops = {
            let mut q = self.lock();
            self.closed.store(true, Ordering::Release);
            let ops = std::mem::take(&mut q.ops);
            self.recount(&mut q);
            ops
        };
        self.used.fetch_sub(ops.len(), Ordering::AcqRel);
        ops
    }

    /// Whether the queue takes no more room: the writer is stopping
    /// ([`StoreQueue::close_after_slots`]) or gone ([`StoreQueue::close`]).
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire) || self.used.load(Ordering::Acquire) & CLOSING != 0
    }

    /// Operations queued (not counting room reserved).
    pub fn len(&self) -> usize {
        self.lock().ops.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flush() -> StoreOp {
        StoreOp::Flush(tokio::sync::oneshot::channel().0)
    }

    #[test]
    fn room_is_bounded_and_given_back_as_the_writer_takes() {
        let q = StoreQueue::new(2);
        assert!(q.reserve() && q.reserve());
        assert!(!q.reserve(), "a third operation does not fit");
        q.release();
        assert!(q.reserve(), "room given back unused is room again");
        q.push(flush()).unwrap();
        q.push(flush()).unwrap();
        assert_eq!((q.len(), q.used()), (2, 2));
        let mut taken = Vec::new();
        assert_eq!(q.take(1, &mut taken), 1);
        assert_eq!((taken.len(), q.len(), q.used()), (1, 1, 1));
        assert!(q.reserve());
        assert!(!q.reserve());
    }

    fn settle(seq: u64) -> StoreOp {
        StoreOp::Change(
            crate::hub::Change::Settle {
                room: "r".into(),
                last_seq: seq,
            },
            None,
        )
    }

    #[test]
    fn a_gathering_writer_sleeps_through_changes_and_wakes_for_a_read_or_a_quarter_of_the_bound() {
        use std::sync::Arc;
        use std::time::Duration;
        let q = Arc::new(StoreQueue::new(64));
        let (woke, wakes) = std::sync::mpsc::channel();
        let writer = {
            let q = Arc::clone(&q);
            std::thread::spawn(move || {
                for _ in 0..2 {
                    let far = Instant::now() + Duration::from_secs(3600);
                    assert!(q.wait_for_company(far, usize::MAX));
                    let mut taken = Vec::new();
                    woke.send(q.take(usize::MAX, &mut taken)).unwrap();
                }
            })
        };
        let asleep = || {
            while !matches!(q.lock().writer, Wait::Company(16)) {
                std::thread::yield_now();
            }
        };
        asleep();
        // Fifteen changes, under a quarter of 64: not one signal.
        for seq in 0..15 {
            assert!(q.reserve());
            q.push(settle(seq)).unwrap();
        }
        assert_eq!(q.signals.load(Ordering::Relaxed), 0);
        assert!(q.reserve());
        q.push(settle(15)).unwrap();
        assert_eq!(wakes.recv_timeout(Duration::from_secs(60)), Ok(16));
        // A flush may not wait: it wakes the writer alone.
        asleep();
        q.push_control(flush()).unwrap();
        assert_eq!(wakes.recv_timeout(Duration::from_secs(60)), Ok(1));
        assert_eq!(q.signals.load(Ordering::Relaxed), 2);
        writer.join().unwrap();
        // With every sender gone nothing more will come: no wait at all.
        q.drop_sender();
        assert!(!q.wait_for_company(Instant::now() + Duration::from_secs(60), 1));
    }

    #[test]
    fn a_take_longer_than_one_lock_takes_everything_in_order() {
        let n = TAKE_AT_ONCE * 2 + 3;
        let q = StoreQueue::new(n);
        for seq in 0..n {
            assert!(q.reserve());
            q.push(StoreOp::Change(
                crate::hub::Change::Settle {
                    room: "r".into(),
                    last_seq: seq as u64,
                },
                None,
            ))
            .unwrap();
        }
        let mut taken = Vec::new();
        assert_eq!(q.take(n - 1, &mut taken), n - 1);
        assert_eq!((q.len(), q.used()), (1, 1));
        let seqs: Vec<u64> = taken
            .iter()
            .map(|op| match op {
                StoreOp::Change(crate::hub::Change::Settle { last_seq, .. }, _) => *last_seq,
                _ => u64::MAX,
            })
            .collect();
        assert_eq!(seqs, (0..n as u64 - 1).collect::<Vec<_>>());
    }

    #[test]
    fn control_operations_go_past_the_bound_and_still_count() {
        let q = StoreQueue::new(1);
        assert!(q.reserve());
        q.push(flush()).unwrap();
        q.push_control(flush()).unwrap();
        assert_eq!((q.len(), q.used()), (2, 2));
        assert!(q.recv().is_some());
        assert!(!q.reserve(), "still full: one queued against one of room");
        assert!(q.recv().is_some());
        assert!(q.reserve());
    }

    #[test]
    fn a_closed_queue_drops_what_it_held_and_what_comes_after() {
        let q = StoreQueue::new(4);
        let (reply, mut answer) = tokio::sync::oneshot::channel();
        q.push_control(StoreOp::Flush(reply)).unwrap();
        q.close();
        assert!(answer.try_recv().is_err(), "the queued reply was dropped");
        let (reply, mut answer) = tokio::sync::oneshot::channel();
        drop(q.push_control(StoreOp::Flush(reply)).expect_err("closed"));
        assert!(answer.try_recv().is_err(), "so was the one pushed after");
        assert!(q.is_closed());
        assert_eq!((q.len(), q.used()), (0, 0));
    }

    #[test]
    fn the_writer_waits_for_an_operation_and_stops_when_every_sender_is_gone() {
        let q = std::sync::Arc::new(StoreQueue::new(4));
        q.add_sender();
        let writer = {
            let q = std::sync::Arc::clone(&q);
            std::thread::spawn(move || {
                let mut got = 0;
                while q.recv().is_some() {
                    got += 1;
                }
                got
            })
        };
        assert!(q.reserve());
        q.push(flush()).unwrap();
        q.drop_sender();
        assert!(q.reserve());
        q.push(flush()).unwrap();
        q.drop_sender();
        // Both operations are received before the writer sees no sender.
        assert_eq!(writer.join().expect("the writer ends"), 2);
    }

    #[test]
    fn behind_from_three_quarters_of_the_bound_until_under_half_and_never_while_failing() {
        use std::sync::{Arc, Mutex};
        let q = StoreQueue::new(8);
        let told = Arc::new(Mutex::new(Vec::new()));
        let hook: BacklogHook = {
            let told = Arc::clone(&told);
            Arc::new(move |behind| told.lock().unwrap().push(behind))
        };
        q.report_backlog(hook);
        let told = || told.lock().unwrap().clone();
        let fill = |n: usize| {
            for _ in 0..n {
                assert!(q.reserve());
                q.push(settle(1)).unwrap();
            }
        };
        let mut taken = Vec::new();

        fill(5);
        assert_eq!(told(), [false; 0], "5 of 8 is not behind");
        assert_eq!(q.behind_for(), None);
        fill(1);
        assert_eq!(told(), [true], "6 of 8 is");
        assert_eq!(
            q.behind_for().map(|(_, queued)| queued),
            Some(6),
            "and says since when, and how much waits"
        );
        fill(1);
        assert_eq!(q.take(2, &mut taken), 2);
        assert_eq!(told(), [true], "still behind at 5, and told once");
        assert!(q.recv().is_some());
        assert_eq!(told(), [true], "and at 4, half the bound");
        assert!(q.recv().is_some());
        assert_eq!(told(), [true, false], "caught up at 3");
        assert_eq!(q.behind_for(), None);

        fill(3);
        assert_eq!(told(), [true, false, true]);
        q.set_failing(true);
        assert_eq!(
            told(),
            [true, false, true, false],
            "a failing store refuses instead"
        );
        assert_eq!(q.behind_for(), None);
        fill(1);
        assert_eq!(told().len(), 4, "and stays so however full");
        q.set_failing(false);
        assert_eq!(
            told(),
            [true, false, true, false, true],
            "until it recovers"
        );
        q.close();
        assert_eq!(
            told().last(),
            Some(&false),
            "a closed queue is never behind"
        );
    }

    /// Sessions read and post again as soon as the queue reports itself
    /// caught up: by then the room the writer took must be free again, or
    /// their posts are refused as if the queue were full.
    #[test]
    fn room_the_writer_takes_is_free_before_the_queue_says_it_caught_up() {
        use std::sync::{Arc, Mutex};
        let q = Arc::new(StoreQueue::new(8));
        let told = Arc::new(Mutex::new(Vec::new()));
        let hook: BacklogHook = {
            let (q, told) = (Arc::downgrade(&q), Arc::clone(&told));
            Arc::new(move |behind| {
                let used = q.upgrade().expect("the queue").used();
                told.lock().unwrap().push((behind, used));
            })
        };
        q.report_backlog(hook);
        let fill = |n: usize| {
            for _ in 0..n {
                assert!(q.reserve());
                q.push(settle(1)).unwrap();
            }
        };

        fill(6);
        let mut taken = Vec::new();
        assert_eq!(q.take(6, &mut taken), 6);
        assert_eq!(*told.lock().unwrap(), [(true, 6), (false, 0)], "by take");
        fill(6);
        for _ in 0..3 {
            assert!(q.recv().is_some());
        }
        assert_eq!(
            told.lock().unwrap()[2..],
            [(true, 6), (false, 3)],
            "by recv"
        );
    }
}
