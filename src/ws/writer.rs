//! A connection's writer: a task of its own that drains the member's
//! [`Outbox`] into the socket, and sends the close frame at the end.
//!
//! Why a task of its own: every delivery wakes the writer, and only the
//! writer's few lines run for it, not a turn of the whole session (its
//! timers, its reader, the request handling around them). In small rooms,
//! where a write carries one or two frames, that cut 4 % of the server's
//! instructions and 15 % of its instruction-cache misses per delivery
//! (docs/BENCHMARKS.md, issue 15, "The writer, a task of its own"), for
//! 0.3 KiB more per idle connection. Requests the session reads together
//! still queue their echoes before the writer runs: it is woken, not run,
//! by each.
//!
//! Overload is not slowness (`docs/protocol.md`): the writer tells the
//! outbox when the socket refuses bytes, and a socket that refuses them
//! for [`WRITE_TIMEOUT`] ends the connection.

use std::cell::RefCell;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use futures_util::task::AtomicWaker;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::task::JoinHandle;
use tokio::time::Sleep;

use crate::hub::{CloseReason, Outbox, frames};
use crate::metrics::Metrics;

/// A socket refusing bytes for this long means the peer stopped reading,
/// even if its queue is not full yet.
pub(super) const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a closing connection may take to flush its last frames.
pub(super) const CLOSE_GRACE: Duration = Duration::from_secs(5);
/// Most bytes a writer copies for one `write`.
const WRITE_CHUNK: usize = 64 << 10;

thread_local! {
    /// The buffer this thread's writers copy their queued frames into, to
    /// write them with one `write`: cheaper than a `writev` of the separate
    /// frames (docs/BENCHMARKS.md, calibration), and shared, so an idle
    /// connection holds none. Each use is within one poll of one writer.
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// The writer's waker for socket writes. It fires when a socket that
/// refused bytes has room again (or the task's budget ran out), and tells
/// the outbox at once, not only when the writer next runs: a member whose
/// client reads is never taken for a stalled one while the server is busy.
struct WriteWake {
    outbox: Arc<Outbox>,
    /// Set by every wake-up since the writer last tried to write.
    woken: AtomicBool,
    task: AtomicWaker,
}

impl Wake for WriteWake {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::SeqCst);
        self.outbox.set_refused(false);
        self.task.wake();
    }
}

/// Drains one member's outbox into its socket.
struct Writer<W> {
    socket: W,
    wake: Arc<WriteWake>,
    waker: Waker,
    /// The socket refused bytes: it is not tried again before `wake` fires.
    refused: bool,
    /// Armed while the socket refuses bytes: past it, the peer is gone.
    stall: Option<Pin<Box<Sleep>>>,
    /// The socket refused bytes after a close was requested: from then on
    /// `stall` is not disarmed by writes that get through, so a client
    /// that reads a trickle cannot hold a closing connection (and its
    /// place in the room) open for longer than [`WRITE_TIMEOUT`].
    closing: bool,
}

impl<W: AsyncWrite + Unpin> Writer<W> {
    fn new(socket: W, outbox: Arc<Outbox>) -> Self {
        let wake = Arc::new(WriteWake {
            outbox,
            woken: AtomicBool::new(false),
            task: AtomicWaker::new(),
        });
        Self {
            socket,
            waker: Waker::from(Arc::clone(&wake)),
            wake,
            refused: false,
            stall: None,
            closing: false,
        }
    }

    /// Writes what is queued, as long as the socket takes it; ready with
    /// the reason once the queue is empty and a close was requested.
    fn poll_drain(
        &mut self,
        cx: &mut Context<'_>,
        metrics: &Metrics,
    ) -> Poll<io::Result<CloseReason>> {
        self.wake.task.register(cx.waker());
        if self.refused && !self.wake.woken.load(Ordering::SeqCst) {
            return self.poll_stall(cx);
        }
        self.refused = false;
        SCRATCH.with_borrow_mut(|buf| {
            loop {
                buf.clear();
                match self.wake.outbox.poll_peek(cx, buf, WRITE_CHUNK) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Some(reason)) => return Poll::Ready(Ok(reason)),
                    Poll::Ready(None) => {}
                }
                self.wake.woken.store(false, Ordering::SeqCst);
                let mut socket_cx = Context::from_waker(&self.waker);
                let written = match Pin::new(&mut self.socket).poll_write(&mut socket_cx, buf) {
                    Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                    Poll::Ready(Ok(n)) => n,
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    // Woken already: the task's budget ran out, not the socket's room.
                    Poll::Pending if self.wake.woken.load(Ordering::SeqCst) => {
                        return Poll::Pending;
                    }
                    Poll::Pending => {
                        self.refused = true;
                        self.closing |= self.wake.outbox.set_refused(true);
                        if self.wake.woken.load(Ordering::SeqCst) {
                            // Room came while we said there was none.
                            self.wake.outbox.set_refused(false);
                        }
                        return self.poll_stall(cx);
                    }
                };
                if !self.closing {
                    self.stall = None;
                }
                let frames = self.wake.outbox.consume(written);
                metrics.frames_out.add(frames as u64);
                metrics.bytes_out.add(written as u64);
            }
        })
    }

    /// Pending while the socket refuses bytes, for at most [`WRITE_TIMEOUT`].
    fn poll_stall(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<CloseReason>> {
        let stall = self
            .stall
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(WRITE_TIMEOUT)));
        match stall.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::ErrorKind::TimedOut.into())),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// Drains the outbox to the socket until a close is requested or a write fails.
async fn write_loop<W: AsyncWrite + Unpin>(
    socket: W,
    outbox: Arc<Outbox>,
    metrics: Arc<Metrics>,
) -> io::Result<()> {
    let mut writer = Writer::new(socket, outbox);
    let reason = std::future::poll_fn(|cx| writer.poll_drain(cx, &metrics)).await?;
    // Rare, so boxed: the timer would otherwise make every idle
    // connection's task larger.
    let mut socket = writer.socket;
    let close = Box::pin(tokio::time::timeout(CLOSE_GRACE, async move {
        socket
            .write_all(&frames::close(reason.code, reason.reason))
            .await?;
        socket.shutdown().await
    }));
    let _ = close.await;
    Ok(())
}

/// The connection's writer task: ready once it has ended. Aborted if the
/// session is dropped before it ends (the server stopping), so the socket
/// never outlives its session.
pub(super) struct WriterTask(JoinHandle<io::Result<()>>);

impl WriterTask {
    /// Starts the writer of `outbox` on this worker.
    pub(super) fn spawn<W>(socket: W, outbox: Arc<Outbox>, metrics: Arc<Metrics>) -> Self
    where
        W: AsyncWrite + Unpin + Send + 'static,
    {
        Self(crate::runtime::spawn_here(write_loop(
            socket, outbox, metrics,
        )))
    }
}

impl Future for WriterTask {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        Pin::new(&mut self.0).poll(cx).map(drop)
    }
}

impl Drop for WriterTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[tokio::test]
    async fn the_writer_drains_the_outbox_through_partial_writes_then_closes() {
        let outbox = Arc::new(Outbox::new(1000, 1 << 20));
        let frames: Vec<Bytes> = (0..200)
            .map(|i| Bytes::from(format!("frame-{i};")))
            .collect();
        for f in &frames {
            outbox.push(f.clone());
        }
        outbox.close(CloseReason::SHUTDOWN);
        let mut expected: Vec<u8> = frames.iter().flat_map(|f| f.iter().copied()).collect();
        expected.extend_from_slice(&frames::close(1001, CloseReason::SHUTDOWN.reason));
        // A duplex pipe with a tiny buffer forces many partial writes.
        let (a, mut b) = tokio::io::duplex(7);
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            tokio::io::AsyncReadExt::read_to_end(&mut b, &mut got)
                .await
                .unwrap();
            got
        });
        let metrics = Arc::new(Metrics::default());
        write_loop(a, Arc::clone(&outbox), Arc::clone(&metrics))
            .await
            .unwrap();
        assert_eq!(reader.await.unwrap(), expected);
        assert_eq!(metrics.frames_out.get(), 200);
    }

    /// A closing connection whose client reads a trickle, each read in
    /// time to disarm the stall timer of an open one, is given up
    /// [`WRITE_TIMEOUT`] after its socket first refused bytes.
    #[tokio::test(start_paused = true)]
    async fn a_closing_writer_is_not_kept_alive_by_a_trickle_of_reads() {
        let outbox = Arc::new(Outbox::new(1000, 1 << 20));
        for i in 0..200 {
            outbox.push(Bytes::from(format!("frame-{i};")));
        }
        outbox.close(CloseReason::TOKEN_EXPIRED);
        let (a, mut b) = tokio::io::duplex(7);
        let trickle = WRITE_TIMEOUT / 3;
        let reader = tokio::spawn(async move {
            let mut got = 0;
            let mut buf = [0u8; 7];
            loop {
                tokio::time::sleep(trickle).await;
                match tokio::io::AsyncReadExt::read(&mut b, &mut buf).await {
                    Ok(0) | Err(_) => return got,
                    Ok(n) => got += n,
                }
            }
        });
        let started = tokio::time::Instant::now();
        let ended = write_loop(a, outbox, Arc::new(Metrics::default())).await;
        assert_eq!(
            ended.map_err(|e| e.kind()),
            Err(io::ErrorKind::TimedOut),
            "drained at a trickle"
        );
        assert!(started.elapsed() <= WRITE_TIMEOUT + trickle);
        assert!(reader.await.unwrap() > 7, "the client did read meanwhile");
    }
}
