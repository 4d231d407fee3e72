//! The idle keep-alive connections to the bucket that the client reuses, and
//! the answer body that gives its connection back. At most [`MAX_IDLE`] are
//! kept, none reused after [`IDLE_LIMIT`]. It never opens or sends on a
//! connection: the client does (`client.rs`), and awaits `ready()` on what
//! it takes from here.
//!
//! A connection comes back only through [`S3Body`], once the answer it
//! carried has been read to its end. An HTTP/1 connection is busy until
//! then (hyper's `SendRequest` is not ready while an answer's body is
//! unread), so putting it back when the answer's head arrives would hand
//! out a busy connection to the next request, and a background task waiting
//! for `ready()` would put it back too late for a request that follows at
//! once. At the body's end hyper has read the whole answer, so the
//! connection is ready, or closed, as soon as its task has run, which the
//! taker's `ready()` waits for.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::http1::SendRequest;

use super::client::ReqBody;

/// Idle connections kept for reuse. When one comes back to a full pool,
/// the oldest idle one is closed to make room: it is the nearest to its
/// server's keep-alive timeout, so the least likely to be reused.
pub const MAX_IDLE: usize = 16;

/// How long a connection may stay idle and still be reused; an older one is
/// closed when the pool next looks at it. Servers close idle keep-alive
/// connections on timers of their own, often 5 s (Apache httpd, Node.js)
/// and longer elsewhere; a request sent as that timer fires meets a closed
/// connection. Staying under the shortest common timeout makes that race
/// rare; the retry on a new connection (`client.rs`) covers the rest.
pub const IDLE_LIMIT: Duration = Duration::from_secs(4);

/// One idle connection and since when.
struct Idle {
    sender: SendRequest<ReqBody>,
    since: Instant,
}

/// The idle connections, oldest first.
#[derive(Default)]
pub struct Pool {
    idle: Mutex<VecDeque<Idle>>,
}

impl Pool {
    fn idle(&self) -> MutexGuard<'_, VecDeque<Idle>> {
        // Every change is a single push or pop: a panic cannot leave it
        // half done.
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The most recently idle connection that is not closed nor older than
    /// [`IDLE_LIMIT`] at `now`; the closed and too old ones met on the way
    /// are dropped, which closes them. The most recent first: it is the
    /// furthest from its server's timeout, and the others age out.
    pub fn take(&self, now: Instant) -> Option<SendRequest<ReqBody>> {
        let mut idle = self.idle();
        while idle
            .front()
            .is_some_and(|c| now.saturating_duration_since(c.since) >= IDLE_LIMIT)
        {
            idle.pop_front();
        }
        while let Some(conn) = idle.pop_back() {
            if !conn.sender.is_closed() {
                return Some(conn.sender);
            }
        }
        None
    }

    /// Keeps `sender`, idle from `now`, unless it is closed; a full pool
    /// closes its oldest first ([`MAX_IDLE`]).
    pub fn put(&self, sender: SendRequest<ReqBody>, now: Instant) {
        if sender.is_closed() {
            return;
        }
        let mut idle = self.idle();
        if idle.len() >= MAX_IDLE {
            idle.pop_front();
        }
        idle.push_back(Idle { sender, since: now });
    }

    /// How many are kept now.
    pub fn len(&self) -> usize {
        self.idle().len()
    }
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool").field("idle", &self.len()).finish()
    }
}

/// An answer's body from the bucket. Read to its end, it gives the
/// connection it came on back to the pool; dropped before that, the
/// connection goes with it (hyper reads what already arrived of the rest,
/// or closes it).
pub struct S3Body {
    inner: Incoming,
    /// The connection and where it goes back; `None` once given back, or
    /// for a connection that is never reused.
    home: Option<(SendRequest<ReqBody>, Arc<Pool>)>,
}

impl S3Body {
    /// `inner`, whose connection goes back to `home` at its end, if any.
    pub(super) fn new(inner: Incoming, home: Option<(SendRequest<ReqBody>, Arc<Pool>)>) -> Self {
        Self { inner, home }
    }

    fn give_back(&mut self) {
        if let Some((sender, pool)) = self.home.take() {
            pool.put(sender, Instant::now());
        }
    }
}

impl Body for S3Body {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let frame = ready!(Pin::new(&mut this.inner).poll_frame(cx));
        // A body with a length ends with its last bytes; a chunked one
        // with `None`.
        if frame.is_none() || this.inner.is_end_stream() {
            this.give_back();
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for S3Body {
    fn drop(&mut self) {
        // An answer without a body (a `HEAD`'s, a `204`) is at its end
        // without being read.
        if self.inner.is_end_stream() {
            self.give_back();
        }
    }
}

impl std::fmt::Debug for S3Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Body")
            .field("end", &self.inner.is_end_stream())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper_util::rt::TokioIo;
    use tokio::io::DuplexStream;
    use tokio::task::JoinHandle;

    /// A connection over an in-memory pipe: its sender, the other end, and
    /// the task that drives it (it ends when the connection closes).
    async fn connection() -> (SendRequest<ReqBody>, DuplexStream, JoinHandle<()>) {
        let (ours, theirs) = tokio::io::duplex(1024);
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(ours))
            .await
            .unwrap();
        let task = tokio::spawn(async move {
            let _ = conn.await;
        });
        (sender, theirs, task)
    }

    #[tokio::test]
    async fn at_most_max_idle_are_kept_and_none_past_the_idle_limit() {
        let pool = Pool::default();
        let now = Instant::now();
        let mut ends = Vec::new();
        for _ in 0..=MAX_IDLE {
            let (sender, theirs, _) = connection().await;
            ends.push(theirs);
            pool.put(sender, now);
        }
        assert_eq!(pool.len(), MAX_IDLE, "one past the bound was kept");
        assert!(pool.take(now + IDLE_LIMIT / 2).is_some());
        assert_eq!(pool.len(), MAX_IDLE - 1);
        assert!(
            pool.take(now + IDLE_LIMIT).is_none(),
            "an idle connection was handed out past the limit"
        );
        assert_eq!(pool.len(), 0, "the too old ones were kept");
    }

    #[tokio::test]
    async fn a_connection_the_other_side_closed_is_not_handed_out() {
        let pool = Pool::default();
        let (sender, theirs, task) = connection().await;
        let (open, _theirs, _) = connection().await;
        pool.put(open, Instant::now());
        pool.put(sender, Instant::now());
        drop(theirs);
        task.await.unwrap();
        let taken = pool.take(Instant::now()).expect("the open one");
        assert!(!taken.is_closed());
        assert_eq!(pool.len(), 0, "the closed one was kept");

        let (sender, theirs, task) = connection().await;
        drop(theirs);
        task.await.unwrap();
        pool.put(sender, Instant::now());
        assert_eq!(pool.len(), 0, "a closed one came back");
    }
}
