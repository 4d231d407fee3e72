//! Wake-ups that cross workers, handed over in batches.
//!
//! A broadcast runs on the worker of the member who posted, and wakes the
//! writer of every other member, about half of them on another worker
//! when there are two. tokio wakes a task of a current-thread runtime
//! from another thread by queueing it and then waking that runtime's
//! thread, and the second step is a `write()` to the runtime's eventfd for
//! every task woken: 500 system calls for one message to a 1000-member
//! room, on the poster's worker, while the room's frames wait.
//!
//! Here every connection's task runs inside [`Homed`], whose waker knows
//! the task's worker. A wake-up on that worker (its socket, its timers, a
//! member of the same worker posting) wakes the task directly, as before.
//! A wake-up from any other thread moves the task's waker into its
//! worker's [`Relay`], and only the first one of a batch wakes the relay's
//! own task on that worker: one cross-thread wake-up per batch, however
//! many tasks it carries. The relay task then wakes each of them from
//! their own thread, which costs no system call.

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Wake, Waker};

use futures_util::task::AtomicWaker;

/// One worker's wake-ups from other threads.
pub(super) struct Relay {
    /// Wakers of this worker's tasks, woken from elsewhere and not yet
    /// passed on. A task's waker is moved here, not copied: a task is here
    /// at most once per time it has run since the relay last ran, so the
    /// list is bounded by the worker's tasks and how often they run.
    pending: Mutex<Vec<Waker>>,
    /// The relay task's own waker.
    task: AtomicWaker,
}

thread_local! {
    /// The relay of the worker this thread runs, if it runs one.
    static CURRENT: RefCell<Option<Arc<Relay>>> = const { RefCell::new(None) };
}

impl Relay {
    /// Makes a relay for the calling thread's worker.
    pub(super) fn install() -> Arc<Self> {
        let relay = Arc::new(Self {
            pending: Mutex::new(Vec::new()),
            task: AtomicWaker::new(),
        });
        CURRENT.with_borrow_mut(|c| *c = Some(Arc::clone(&relay)));
        relay
    }

    /// The relay of the worker the calling thread runs, if any.
    pub(super) fn current() -> Option<Arc<Self>> {
        CURRENT
            .try_with(|c| c.try_borrow().ok().and_then(|c| c.clone()))
            .ok()
            .flatten()
    }

    /// Whether the calling thread is this relay's worker (not while the
    /// thread's locals are being torn down: then it is no worker's).
    fn is_current(self: &Arc<Self>) -> bool {
        CURRENT
            .try_with(|c| {
                c.try_borrow()
                    .is_ok_and(|c| c.as_ref().is_some_and(|r| Arc::ptr_eq(r, self)))
            })
            .unwrap_or(false)
    }

    fn push(&self, waker: Waker) {
        let first = {
            let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
            pending.push(waker);
            pending.len() == 1
        };
        // Later ones of the batch find the relay woken already.
        if first {
            self.task.wake();
        }
    }

    /// Drops what is pending: the worker's tasks are gone.
    pub(super) fn clear(&self) {
        self.pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }

    /// The relay's task on its worker: passes every pending wake-up on,
    /// from this thread. Never finishes; dropped with the worker.
    pub(super) async fn run(self: Arc<Self>) {
        // Swapped with the pending list, so neither allocates once grown.
        let mut batch = Vec::new();
        std::future::poll_fn(|cx| {
            self.task.register(cx.waker());
            std::mem::swap(
                &mut *self.pending.lock().unwrap_or_else(PoisonError::into_inner),
                &mut batch,
            );
            for waker in batch.drain(..) {
                waker.wake();
            }
            Poll::<()>::Pending
        })
        .await;
    }
}

/// A task's waker that knows the task's worker.
struct HomeWake {
    /// The task's own waker, as of its last poll.
    task: AtomicWaker,
    home: Arc<Relay>,
}

impl Wake for HomeWake {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if self.home.is_current() {
            self.task.wake();
        } else if let Some(waker) = self.task.take() {
            self.home.push(waker);
        }
        // Otherwise the task was woken already and has not run since: it
        // will see whatever this wake-up was for.
    }
}

/// A future run on a worker, polled with a [`HomeWake`] waker. Boxed
/// already (a connection's future is), so this adds one small allocation
/// per connection: the waker's.
pub(super) struct Homed<F: ?Sized> {
    future: Pin<Box<F>>,
    wake: Arc<HomeWake>,
    waker: Waker,
}

impl<F: Future + ?Sized> Homed<F> {
    pub(super) fn new(future: Pin<Box<F>>, home: Arc<Relay>) -> Self {
        let wake = Arc::new(HomeWake {
            task: AtomicWaker::new(),
            home,
        });
        Self {
            future,
            waker: Waker::from(Arc::clone(&wake)),
            wake,
        }
    }
}

impl<F: Future + ?Sized> Future for Homed<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.get_mut();
        // Registered before the future looks at anything: a wake-up from
        // here on finds the waker, one before it is seen by the poll.
        this.wake.task.register(cx.waker());
        this.future
            .as_mut()
            .poll(&mut Context::from_waker(&this.waker))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Counts its wake-ups.
    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn counter() -> (Arc<Count>, Waker) {
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(Arc::clone(&count));
        (count, waker)
    }

    fn home_wake(home: &Arc<Relay>) -> (Arc<Count>, Waker) {
        let (count, task) = counter();
        let wake = Arc::new(HomeWake {
            task: AtomicWaker::new(),
            home: Arc::clone(home),
        });
        wake.task.register(&task);
        (count, Waker::from(wake))
    }

    #[test]
    fn wake_ups_from_other_threads_wake_the_relay_once_per_batch() {
        let home = Relay::install();
        let (relay_count, relay_waker) = counter();
        home.task.register(&relay_waker);
        let tasks: Vec<_> = (0..3).map(|_| home_wake(&home)).collect();
        std::thread::scope(|s| {
            s.spawn(|| {
                for (_, waker) in &tasks {
                    waker.wake_by_ref();
                    // A second wake-up before the task runs adds nothing.
                    waker.wake_by_ref();
                }
            });
        });
        assert_eq!(relay_count.0.load(Ordering::SeqCst), 1);
        assert_eq!(home.pending.lock().unwrap().len(), 3);
        assert!(tasks.iter().all(|(c, _)| c.0.load(Ordering::SeqCst) == 0));

        // The relay's task passes them on, from the worker's thread.
        let relay = std::pin::pin!(Arc::clone(&home).run());
        let (_, relay_task) = counter();
        assert!(
            relay
                .poll(&mut Context::from_waker(&relay_task))
                .is_pending()
        );
        assert!(tasks.iter().all(|(c, _)| c.0.load(Ordering::SeqCst) == 1));
        assert!(home.pending.lock().unwrap().is_empty());
    }

    #[test]
    fn a_wake_up_on_the_worker_wakes_the_task_directly() {
        let home = Relay::install();
        let (count, waker) = home_wake(&home);
        waker.wake_by_ref();
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
        assert!(home.pending.lock().unwrap().is_empty());
    }
}
