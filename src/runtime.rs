//! The threads that run connections: current-thread tokio runtimes
//! ("workers": one fewer than the CPUs unless `--workers` says otherwise,
//! see [`Workers::for_machine`]), each with its own I/O driver, timers and
//! run queue, sharing the hub. The accept loop hands each accepted socket to the
//! worker with the fewest connections, and the connection (its HTTP
//! requests, then its WebSocket session) stays there for life.
//!
//! Why not tokio's multi-thread scheduler: a broadcast to a big room wakes
//! every member's task at once, and that scheduler runs the last task woken
//! first (its LIFO slot), keeps only 256 woken tasks in its local queue and
//! moves the rest to a global queue it looks at once every few dozen polls.
//! Under load, the writers of a 1000-member room were run out of order and
//! some waited behind several later broadcasts: the p99 measured in
//! `docs/BENCHMARKS.md` (issue 15). A current-thread runtime runs tasks
//! strictly in the order they were woken, so a broadcast's writers run one
//! after the other, once each, before anything woken after them.
//!
//! With more than one worker, a broadcast wakes tasks on the others: those
//! wake-ups go over in batches (see [`relay`]).
//!
//! This module knows nothing of HTTP or rooms: it runs futures.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::{mpsc, oneshot};

mod relay;

use relay::{Homed, Relay};

/// Connections waiting to be picked up by one worker. The accept loop
/// already caps open connections, so this only fills if a worker is stuck;
/// then the connection is refused like one over the cap.
const HANDOFF_QUEUE: usize = 1024;

type Job = Pin<Box<dyn Future<Output = ()> + Send>>;

struct Worker {
    jobs: mpsc::Sender<Job>,
    /// Connections running on this worker.
    load: Arc<AtomicUsize>,
    /// Fires when the worker's thread has shut its runtime down.
    stopped: oneshot::Receiver<()>,
}

/// The worker threads of one [`crate::serve`].
pub(crate) struct Workers {
    workers: Vec<Worker>,
}

/// One running job on a worker; dropping it lowers the worker's load.
struct Running(Arc<AtomicUsize>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Workers {
    /// `requested` workers, or with `0` one fewer than the CPUs this
    /// process may run on (its affinity mask and cgroup quota included, as
    /// `available_parallelism` counts them), and at least one.
    ///
    /// Why one fewer: the server has other threads with real work, the
    /// history store's writer first (a quarter of a core at 100 000 posts a
    /// second), and a broadcast to a room whose members live on several
    /// workers is late if any of them is. On two CPUs shared with a busy
    /// process (the load generator), one worker carried small rooms with a
    /// p99 of 30-85 ms at 0.2-1.2 M deliveries/s where two workers, using
    /// more CPU for the same work, took 57-218 ms (docs/BENCHMARKS.md,
    /// issue 15, "Two cores shared with the generator").
    pub fn for_machine(requested: usize) -> Self {
        let n = match requested {
            0 => std::thread::available_parallelism()
                .map_or(1, std::num::NonZero::get)
                .saturating_sub(1)
                .max(1),
            n => n,
        };
        Self::start(n)
    }

    /// Starts `n` workers. A thread that cannot be started is logged and
    /// left out; with none at all, jobs run on the caller's runtime.
    pub fn start(n: usize) -> Self {
        let mut workers = Vec::with_capacity(n);
        for i in 0..n {
            match start_worker(i) {
                Ok(w) => workers.push(w),
                Err(e) => tracing::warn!("cannot start worker thread {i}: {e}"),
            }
        }
        Self { workers }
    }

    /// Runs `job` on the least loaded worker. Gives it back if that
    /// worker's hand-off queue is full.
    pub fn spawn<F>(&self, job: F) -> Result<(), F>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let Some(worker) = self
            .workers
            .iter()
            .min_by_key(|w| w.load.load(Ordering::Relaxed))
        else {
            tokio::spawn(job);
            return Ok(());
        };
        let permit = match worker.jobs.try_reserve() {
            Ok(permit) => permit,
            Err(_) => return Err(job),
        };
        worker.load.fetch_add(1, Ordering::Relaxed);
        let running = Running(Arc::clone(&worker.load));
        permit.send(Box::pin(async move {
            let _running = running;
            job.await;
        }));
        Ok(())
    }

    /// Stops taking jobs, drops whatever still runs on the workers and
    /// waits until their threads have shut down.
    pub async fn stop(self) {
        let mut stopped = Vec::with_capacity(self.workers.len());
        for w in self.workers {
            drop(w.jobs);
            stopped.push(w.stopped);
        }
        for s in stopped {
            let _ = s.await;
        }
    }
}

/// Spawns `future` on the calling thread's runtime, with a waker that
/// knows its worker when the thread is one (see [`relay`]): a second task
/// of a connection (its writer) is woken from other workers in batches
/// like the first.
pub(crate) fn spawn_here<F>(future: F) -> tokio::task::JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    match Relay::current() {
        Some(relay) => tokio::spawn(Homed::new(Box::pin(future), relay)),
        None => tokio::spawn(future),
    }
}

fn start_worker(index: usize) -> std::io::Result<Worker> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (jobs, mut rx) = mpsc::channel::<Job>(HANDOFF_QUEUE);
    let (done, stopped) = oneshot::channel();
    std::thread::Builder::new()
        .name(format!("roomcast-worker-{index}"))
        .spawn(move || {
            let relay = Relay::install();
            runtime.block_on(async {
                tokio::spawn(Arc::clone(&relay).run());
                while let Some(job) = rx.recv().await {
                    tokio::spawn(Homed::new(job, Arc::clone(&relay)));
                }
            });
            // Whatever still runs is dropped here. Blocking file work left
            // behind finishes on its own thread.
            runtime.shutdown_background();
            relay.clear();
            let _ = done.send(());
        })?;
    Ok(Worker {
        jobs,
        load: Arc::new(AtomicUsize::new(0)),
        stopped,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn workers_are_as_many_as_asked_or_one_fewer_than_the_cpus() {
        let asked = Workers::for_machine(3);
        assert_eq!(asked.workers.len(), 3);
        asked.stop().await;
        let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
        let automatic = Workers::for_machine(0);
        assert_eq!(automatic.workers.len(), cpus.saturating_sub(1).max(1));
        automatic.stop().await;
    }
}
