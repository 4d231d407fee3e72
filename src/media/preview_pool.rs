//! Previews are made off the hot path: a fixed number of worker threads
//! (never the async runtime's) take jobs from one bounded queue. When the
//! queue is full a new job is dropped at once — that upload simply has no
//! preview — so an upload never waits for a preview and a burst of images
//! cannot take more than the workers' CPU and memory. Zero workers: no
//! previews at all. The workers run at the lowest CPU priority (nice 19, on
//! Linux): when the machine is busy, fan-out gets the CPU and previews wait.
//!
//! Someone who wants to know when a queued job is done (a message that
//! attached the upload before its preview was ready) subscribes by the
//! upload's stored name: every subscriber hears the outcome once. Asking
//! *before* reading what the store holds closes the race with a job that
//! finishes in between: the job records its preview in the store before it
//! tells its subscribers, so a subscription refused because nothing is
//! pending means the store already says all there is.

use std::collections::HashMap;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::oneshot;

#[cfg(feature = "previews")]
use super::{LocalStore, S3Store, StoredName};
use super::{MediaStore, PreviewInfo, StoredInfo};
use crate::metrics::Metrics;

/// What a job yields: the stored preview, or none.
pub type Outcome = Option<PreviewInfo>;

/// Most subscribers one pending job keeps (each is a message that attached
/// the upload meanwhile); past it, closed ones are let go, then newcomers
/// are told nothing is pending and get no late preview.
const MAX_WAITERS: usize = 256;

/// One job: its key (an upload's stored name) and its work.
struct Job {
    key: String,
    work: Box<dyn FnOnce() -> Outcome + Send>,
}

struct Shared {
    queue: SyncSender<Job>,
    /// Keys of queued or running jobs, with who waits for each.
    pending: Mutex<HashMap<String, Vec<oneshot::Sender<Outcome>>>>,
    /// `previews`, `previews_skipped`, `previews_dropped`.
    metrics: Arc<Metrics>,
}

/// The bounded pool. Cheap to clone; every clone is the same pool. Once
/// the last clone is dropped each worker stops after at most the job it
/// has; what is still queued is dropped (those uploads get no preview).
#[derive(Clone, Default)]
pub struct PreviewPool {
    shared: Option<Arc<Shared>>,
}

impl std::fmt::Debug for PreviewPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PreviewPool")
            .field("on", &self.shared.is_some())
            .finish()
    }
}

impl PreviewPool {
    /// `workers` threads taking jobs from a queue of `queue` waiting jobs
    /// (0: a job is taken only if a worker is idle), counting what becomes
    /// of jobs in `metrics`. No workers: off.
    pub fn start(workers: usize, queue: usize, metrics: Arc<Metrics>) -> Self {
        if workers == 0 {
            return Self::default();
        }
        let (tx, rx) = sync_channel::<Job>(queue);
        let shared = Arc::new(Shared {
            queue: tx,
            pending: Mutex::default(),
            metrics,
        });
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..workers {
            let (rx, weak) = (Arc::clone(&rx), Arc::downgrade(&shared));
            let spawned = std::thread::Builder::new()
                .name(format!("roomcast-preview-{i}"))
                .spawn(move || work(&rx, &weak));
            if let Err(e) = spawned {
                tracing::warn!("could not start a preview worker: {e}");
            }
        }
        Self {
            shared: Some(shared),
        }
    }

    /// Whether previews are made at all.
    pub fn is_on(&self) -> bool {
        self.shared.is_some()
    }

    /// Queues `work` under `key`; `false` if it was dropped (the queue is
    /// full, the pool is off) or a job for `key` is already pending.
    pub fn submit(&self, key: &str, work: impl FnOnce() -> Outcome + Send + 'static) -> bool {
        let Some(shared) = &self.shared else {
            return false;
        };
        {
            let mut pending = lock(&shared.pending);
            if pending.contains_key(key) {
                return false;
            }
            pending.insert(key.to_owned(), Vec::new());
        }
        let job = Job {
            key: key.to_owned(),
            work: Box::new(work),
        };
        match shared.queue.try_send(job) {
            Ok(()) => true,
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                shared.metrics.previews_dropped.inc();
                // Anyone who subscribed meanwhile hears "none".
                let waiters = lock(&shared.pending).remove(key).unwrap_or_default();
                for waiter in waiters {
                    let _ = waiter.send(None);
                }
                false
            }
        }
    }

    /// Hears the outcome of the job pending under `key`, if one is (see the
    /// module docs for why to ask before reading the store).
    pub fn subscribe(&self, key: &str) -> Option<oneshot::Receiver<Outcome>> {
        let shared = self.shared.as_ref()?;
        let mut pending = lock(&shared.pending);
        let waiters = pending.get_mut(key)?;
        if waiters.len() >= MAX_WAITERS {
            waiters.retain(|w| !w.is_closed());
            if waiters.len() >= MAX_WAITERS {
                return None;
            }
        }
        let (tx, rx) = oneshot::channel();
        waiters.push(tx);
        Some(rx)
    }

    /// After `info` was committed to `store`: queues the making of its
    /// preview if it is an image and previews are on, reading at most
    /// `max_bytes` of it. Returns whether a job was queued.
    ///
    /// From the uploads directory the job reads and writes files. From a
    /// bucket it must make requests, which are async: it hands them to the
    /// runtime of the caller (a handler, so there is one) and waits for
    /// each, decoding and encoding on its own thread in between. The job
    /// holds no bytes while it waits in the queue.
    pub fn request(&self, store: &MediaStore, info: &StoredInfo, max_bytes: u64) -> bool {
        #[cfg(feature = "previews")]
        {
            if !super::preview::is_previewable(info.name.kind()) {
                return false;
            }
            let name = info.name.clone();
            match store {
                MediaStore::Local(local) => {
                    let store = local.clone();
                    self.submit(info.name.as_str(), move || {
                        make_and_store(&store, &name, max_bytes)
                    })
                }
                MediaStore::S3 { bucket, .. } => {
                    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
                        return false;
                    };
                    let bucket = Arc::clone(bucket);
                    self.submit(info.name.as_str(), move || {
                        make_and_store_in_bucket(&runtime, &bucket, &name, max_bytes)
                    })
                }
            }
        }
        #[cfg(not(feature = "previews"))]
        {
            let _ = (store, info, max_bytes);
            false
        }
    }
}

/// Makes the preview of `bytes` (upload `name`), dropping the original as
/// soon as it is made; `None` (logged) when there is none.
#[cfg(feature = "previews")]
fn make_logged(
    bytes: impl AsRef<[u8]>,
    name: &super::StoredName,
) -> Option<super::preview::Encoded> {
    match super::preview::make(bytes.as_ref(), name.kind()) {
        Ok(encoded) => encoded,
        Err(e) => {
            tracing::debug!(name = name.as_str(), "no preview: {e}");
            None
        }
    }
}

/// Reads upload `name`, makes its preview, stores it beside it.
#[cfg(feature = "previews")]
fn make_and_store(store: &LocalStore, name: &super::StoredName, max_bytes: u64) -> Outcome {
    let bytes = match store.read_blocking(name, max_bytes) {
        Ok(bytes) => bytes,
        Err(e) => {
            tracing::debug!(name = name.as_str(), "no preview: {e}");
            return None;
        }
    };
    let encoded = make_logged(bytes, name)?;
    let size = (encoded.width, encoded.height);
    match store.put_preview_blocking(name, encoded.kind, &encoded.bytes, size) {
        Ok(info) => Some(info),
        Err(e) => {
            tracing::debug!(name = name.as_str(), "preview not stored: {e}");
            None
        }
    }
}

/// Reads upload `name` from the bucket, makes its preview on this thread,
/// puts it beside it: the requests run on `runtime`.
#[cfg(feature = "previews")]
fn make_and_store_in_bucket(
    runtime: &tokio::runtime::Handle,
    bucket: &Arc<S3Store>,
    name: &StoredName,
    max_bytes: u64,
) -> Outcome {
    let (b, n) = (Arc::clone(bucket), name.clone());
    let read = on_runtime(runtime, async move { b.read_whole(&n, max_bytes).await });
    let bytes = match read {
        Some(Ok(bytes)) => bytes,
        Some(Err(e)) => {
            tracing::debug!(name = name.as_str(), "no preview: {e}");
            return None;
        }
        None => return None,
    };
    let encoded = make_logged(bytes, name)?;
    let (b, n) = (Arc::clone(bucket), name.clone());
    let size = (encoded.width, encoded.height);
    let put = on_runtime(runtime, async move {
        b.put_preview(&n, encoded.kind, encoded.bytes, size).await
    });
    match put? {
        Ok(info) => info,
        Err(e) => {
            tracing::debug!(name = name.as_str(), "preview not stored: {e}");
            None
        }
    }
}

/// Runs `work` as a task on `runtime` and waits for its output on this
/// (non-runtime) thread; `None` if the runtime dropped it (shutting down).
/// The bucket's requests carry their own timeouts, so the wait ends.
#[cfg(feature = "previews")]
fn on_runtime<T: Send + 'static>(
    runtime: &tokio::runtime::Handle,
    work: impl std::future::Future<Output = T> + Send + 'static,
) -> Option<T> {
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    runtime.spawn(async move {
        let _ = tx.send(work.await);
    });
    rx.recv().ok()
}

/// Makes the calling thread the last to get a CPU (nice 19). Linux keeps a
/// nice value per thread, so the runtime's threads keep theirs.
#[cfg(all(target_os = "linux", feature = "previews"))]
fn lower_priority() {
    // SAFETY: setpriority takes plain integers and touches no memory of ours;
    // `who = 0` with PRIO_PROCESS is the calling thread on Linux.
    let done = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, 19) };
    if done != 0 {
        tracing::debug!("preview worker keeps its CPU priority");
    }
}

#[cfg(not(all(target_os = "linux", feature = "previews")))]
fn lower_priority() {}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A worker: takes jobs until the pool is gone, tells each job's
/// subscribers its outcome. A job that panics counts as no preview.
fn work(rx: &Mutex<Receiver<Job>>, shared: &std::sync::Weak<Shared>) {
    lower_priority();
    loop {
        let next = lock(rx).recv();
        let Ok(Job { key, work }) = next else {
            return;
        };
        let outcome =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(work)).unwrap_or_else(|_| {
                tracing::warn!(key, "a preview job panicked");
                None
            });
        let Some(shared) = shared.upgrade() else {
            return;
        };
        match outcome {
            Some(_) => shared.metrics.previews.inc(),
            None => shared.metrics.previews_skipped.inc(),
        }
        let waiters = lock(&shared.pending).remove(&key).unwrap_or_default();
        for waiter in waiters {
            let _ = waiter.send(outcome.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;

    use super::*;
    use crate::media::{Kind, PreviewName, StoredName};

    fn a_preview() -> PreviewInfo {
        let of = StoredName::generate(Kind::Png).unwrap();
        PreviewInfo {
            name: PreviewName::new(&of, Kind::Jpeg).unwrap(),
            width: 320,
            height: 200,
        }
    }

    /// A job that says it started, then waits for `go`.
    fn gated(
        started: mpsc::Sender<()>,
        go: mpsc::Receiver<()>,
        out: Outcome,
    ) -> impl FnOnce() -> Outcome {
        move || {
            let _ = started.send(());
            let _ = go.recv();
            out
        }
    }

    #[test]
    fn a_full_queue_drops_the_job_at_once() {
        let metrics = Arc::new(Metrics::default());
        let pool = PreviewPool::start(1, 1, Arc::clone(&metrics));
        let (started_tx, started) = mpsc::channel();
        let (go_a, gate_a) = mpsc::channel();
        assert!(pool.submit("a", gated(started_tx.clone(), gate_a, None)));
        started.recv().unwrap(); // the only worker is busy with "a"
        let (go_b, gate_b) = mpsc::channel();
        assert!(pool.submit("b", gated(started_tx, gate_b, None)), "queued");
        assert!(!pool.submit("c", || None), "the queue holds one: dropped");
        assert!(!pool.submit("a", || None), "already pending");
        assert_eq!(metrics.previews_dropped.get(), 1);
        // Nobody can wait for a dropped job.
        assert!(pool.subscribe("c").is_none());
        let b_done = pool.subscribe("b").unwrap();
        go_a.send(()).unwrap();
        go_b.send(()).unwrap();
        assert_eq!(b_done.blocking_recv().unwrap(), None);
    }

    #[test]
    fn subscribers_hear_the_outcome_once_and_late_ones_hear_nothing_is_pending() {
        let metrics = Arc::new(Metrics::default());
        let pool = PreviewPool::start(2, 4, Arc::clone(&metrics));
        let (started_tx, started) = mpsc::channel();
        let (go, gate) = mpsc::channel();
        let preview = a_preview();
        assert!(pool.submit("x", gated(started_tx, gate, Some(preview.clone()))));
        let early = pool.subscribe("x").unwrap();
        started.recv().unwrap();
        let running = pool.subscribe("x").unwrap();
        go.send(()).unwrap();
        assert_eq!(early.blocking_recv().unwrap(), Some(preview.clone()));
        assert_eq!(running.blocking_recv().unwrap(), Some(preview));
        assert!(
            pool.subscribe("x").is_none(),
            "done: read the store instead"
        );
        assert_eq!(metrics.previews.get(), 1);
    }

    #[test]
    fn no_workers_means_off_and_a_panicking_job_is_no_preview() {
        let off = PreviewPool::start(0, 8, Arc::default());
        assert!(!off.is_on());
        assert!(!off.submit("a", || None));

        let pool = PreviewPool::start(1, 4, Arc::default());
        let (started_tx, started) = mpsc::channel();
        let (go, gate) = mpsc::channel();
        assert!(pool.submit("gate", gated(started_tx, gate, None)));
        assert!(pool.submit("p", || panic!("a decoder bug")));
        // "p" waits behind "gate", so it is surely still pending.
        let done = pool.subscribe("p").unwrap();
        started.recv().unwrap();
        go.send(()).unwrap();
        assert_eq!(done.blocking_recv().unwrap(), None);
        // The worker survived its job's panic.
        let (tx, rx) = mpsc::channel();
        assert!(pool.submit("q", move || {
            let _ = tx.send(());
            None
        }));
        rx.recv().unwrap();
    }
}
