//! One member's bounded outbound queue.
//!
//! The hub pushes shared frames in; the member's writer takes them out and
//! writes as many as fit with one write. A push never blocks and never
//! allocates once the queue has grown to its working size.
//!
//! The queue is bounded by frame count and by bytes, and what happens at
//! the bound is the slow-consumer policy (`docs/protocol.md`):
//!
//! - A queue grows only while its writer cannot empty it: either the
//!   member's socket refuses bytes (the client stopped reading, and the
//!   kernel's buffers are full), or the writer has not run yet (the server
//!   is behind). The writer tells the queue which, as it happens
//!   ([`Outbox::set_refused`]).
//! - Past a quarter of either bound while the socket still takes bytes,
//!   the queue reports itself behind through the hook the server attached
//!   ([`Outbox::report_backlog`]); the server then reads no new requests
//!   until no queue is behind. So the server's own lag slows down the
//!   senders (TCP pushes back on them) instead of filling queues.
//! - A push that would pass a bound closes the member with 1013 and drops
//!   what it held (but the rest of a frame already partly written, so the
//!   stream stays whole). With the throttle above, only a member whose
//!   socket refused bytes gets there in practice: it took everything the
//!   kernel buffers hold, then a full queue more.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll, Waker};

use bytes::Buf;

use super::frame::Frame;

/// Why, and with which WebSocket status code, a connection is being closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CloseReason {
    /// The WebSocket close status code.
    pub code: u16,
    /// A short human reason sent in the close frame.
    pub reason: &'static str,
}

impl CloseReason {
    /// 1001: the server is shutting down.
    pub const SHUTDOWN: Self = Self {
        code: 1001,
        reason: "server is shutting down",
    };
    /// 1013: events were missed while the backbone reconnected.
    pub const MISSED_EVENTS: Self = Self {
        code: 1013,
        reason: "missed events while reconnecting to the backbone; reconnect with ?after=<seq>",
    };
    /// 1013: the backbone could not welcome the connection.
    pub const UNAVAILABLE: Self = Self {
        code: 1013,
        reason: "the chat backbone is unavailable; try again shortly",
    };
    /// 1013: the client fell too far behind.
    pub const SLOW_CONSUMER: Self = Self {
        code: 1013,
        reason: "too far behind; reconnect with ?after=<seq>",
    };
    /// The socket failed, so nothing can be sent, this close included: it
    /// only ends the queue (no frame is queued for it any more, and it no
    /// longer counts as behind) while its session finishes.
    pub const SOCKET_FAILED: Self = Self {
        code: 1011,
        reason: "the connection failed",
    };
}

/// What [`Outbox::push`] did with a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    /// The frame is queued.
    Queued,
    /// The queue was full: it is now closing with 1013 and the frame was dropped.
    Overflowed,
    /// The queue is already closing; the frame was dropped.
    Closed,
}

/// Told `true` when a queue starts being behind and `false` when it
/// stops: a connection's queue past a quarter of its bounds while its
/// socket takes bytes, or the history store's (`store_queue.rs`). The
/// server reads no requests while any is behind.
pub type BacklogHook = Arc<dyn Fn(bool) + Send + Sync>;

/// Entries a drained queue may keep allocated: a burst's worth more is
/// given back, so an idle connection holds little.
const KEEP_CAPACITY: usize = 64;

#[derive(Default)]
struct State {
    frames: VecDeque<Frame>,
    /// Bytes in `frames`.
    bytes: usize,
    close: Option<CloseReason>,
    /// The queue overflowed: drop what is queued (at a frame boundary).
    discard: bool,
    /// The head frame was partly written.
    partial: bool,
    /// The member's socket refused bytes and has not had room since.
    refused: bool,
    /// Counted as behind in the backlog hook.
    behind: bool,
    /// The writer, while it waits for frames.
    writer: Option<Waker>,
}

/// A bounded queue of frames for one connection, with a wake-up for its writer.
pub struct Outbox {
    state: Mutex<State>,
    max_frames: usize,
    max_bytes: usize,
    backlog: OnceLock<BacklogHook>,
}

impl Outbox {
    /// A queue that holds at most `max_frames` frames and `max_bytes` bytes
    /// behind its head. The frame at the head is not counted against the
    /// byte budget: a single frame is always accepted into an empty queue,
    /// whatever its size, and the frames that follow it (say, the `join`
    /// right after a large `welcome`) still get the whole budget.
    pub fn new(max_frames: usize, max_bytes: usize) -> Self {
        Self {
            state: Mutex::new(State::default()),
            max_frames: max_frames.max(1),
            max_bytes,
            backlog: OnceLock::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding this lock cannot leave the queue inconsistent
        // (every update is a single push/drain), so poisoning is ignored.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reports this queue to `hook` whenever it starts or stops being
    /// behind (see the module docs). The first hook attached stays.
    pub fn report_backlog(&self, hook: BacklogHook) {
        let _ = self.backlog.set(hook);
    }

    /// Updates the backlog count after a change to `s`.
    fn recount(&self, s: &mut State) {
        let Some(hook) = self.backlog.get() else {
            return;
        };
        let behind = s.close.is_none()
            && !s.refused
            && (s.frames.len() > self.max_frames / 4 || s.bytes > self.max_bytes / 4);
        if behind != s.behind {
            s.behind = behind;
            hook(behind);
        }
    }

    /// Queues a frame. Never blocks; see [`Pushed`] for what happens when full.
    pub fn push(&self, frame: Frame) -> Pushed {
        let mut s = self.lock();
        if s.close.is_some() {
            return Pushed::Closed;
        }
        let head = s.frames.front().map_or(0, Frame::len);
        if !s.frames.is_empty()
            && (s.frames.len() >= self.max_frames || s.bytes - head + frame.len() > self.max_bytes)
        {
            s.close = Some(CloseReason::SLOW_CONSUMER);
            s.discard = true;
            self.recount(&mut s);
            let writer = s.writer.take();
            drop(s);
            if let Some(w) = writer {
                w.wake();
            }
            return Pushed::Overflowed;
        }
        s.bytes += frame.len();
        s.frames.push_back(frame);
        if !s.behind {
            self.recount(&mut s);
        }
        // The writer registers only when it found the queue empty, so only
        // the first frame after that wakes it.
        let writer = s.writer.take();
        drop(s);
        if let Some(w) = writer {
            w.wake();
        }
        Pushed::Queued
    }

    /// Asks the writer to send what is queued, then close with `reason`.
    /// The first reason wins; later calls change nothing.
    pub fn close(&self, reason: CloseReason) {
        let mut s = self.lock();
        if s.close.is_none() {
            s.close = Some(reason);
            self.recount(&mut s);
            let writer = s.writer.take();
            drop(s);
            if let Some(w) = writer {
                w.wake();
            }
        }
    }

    /// Whether a close has been requested.
    pub fn is_closing(&self) -> bool {
        self.lock().close.is_some()
    }

    /// The writer says whether the member's socket refuses bytes: `true`
    /// when a write could not proceed, `false` once the socket has room.
    /// Answers whether a close has been requested (see
    /// [`Outbox::is_closing`]), read under the same lock.
    pub fn set_refused(&self, refused: bool) -> bool {
        let mut s = self.lock();
        if s.refused != refused {
            s.refused = refused;
            self.recount(&mut s);
        }
        s.close.is_some()
    }

    /// Drops what an overflow left queued, but the rest of a frame already
    /// partly written. Checked on every peek and consume and nearly always
    /// a no-op, so the check is inlined and the work kept out of line. Left
    /// to the compiler, the whole function stopped being inlined when
    /// unrelated code was added to the crate: 13 more instructions per
    /// delivery in `fanout_guard` (docs/BENCHMARKS.md, issue 15).
    #[inline]
    fn discard(s: &mut State) {
        if s.discard {
            Self::discard_queued(s);
        }
    }

    #[cold]
    fn discard_queued(s: &mut State) {
        s.discard = false;
        let keep = usize::from(s.partial);
        s.frames.truncate(keep);
        s.bytes = s.frames.front().map_or(0, Frame::len);
    }

    fn register(s: &mut State, cx: &Context<'_>) {
        if !s.writer.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            s.writer = Some(cx.waker().clone());
        }
    }

    /// Copies queued bytes, oldest first, to the end of `out` until it
    /// holds `max` bytes, and is ready with `None`; nothing leaves the queue
    /// until [`Outbox::consume`] says how much was written. Ready with the
    /// close reason once nothing is queued and a close was requested.
    /// Pending (the writer is woken by the next push or close) while
    /// nothing is queued.
    pub fn poll_peek(
        &self,
        cx: &Context<'_>,
        out: &mut Vec<u8>,
        max: usize,
    ) -> Poll<Option<CloseReason>> {
        let mut s = self.lock();
        Self::discard(&mut s);
        if s.frames.is_empty() {
            if let Some(reason) = s.close {
                return Poll::Ready(Some(reason));
            }
            Self::register(&mut s, cx);
            return Poll::Pending;
        }
        for frame in &s.frames {
            let room = max.saturating_sub(out.len());
            if room == 0 {
                break;
            }
            out.extend_from_slice(&frame[..frame.len().min(room)]);
        }
        Poll::Ready(None)
    }

    /// Removes the first `written` bytes [`Outbox::poll_peek`] copied, now
    /// written; returns how many frames that completed.
    pub fn consume(&self, mut written: usize) -> usize {
        let mut s = self.lock();
        let mut completed = 0;
        while written > 0 {
            let Some(head) = s.frames.front_mut() else {
                break;
            };
            if head.len() > written {
                head.advance(written);
                s.bytes -= written;
                s.partial = true;
                break;
            }
            written -= head.len();
            s.bytes -= head.len();
            s.frames.pop_front();
            s.partial = false;
            completed += 1;
        }
        if s.frames.is_empty() && s.frames.capacity() > KEEP_CAPACITY {
            s.frames = VecDeque::new(); // a burst is over: give its memory back
        }
        self.recount(&mut s);
        completed
    }

    /// Moves every queued frame into `batch` (which keeps its capacity between
    /// calls) and returns the close reason if one is set. Waits while there is
    /// nothing to do. Cancel-safe: nothing is taken until it returns. For
    /// writers that write whole frames; a writer that may write part of one
    /// uses [`Outbox::poll_peek`] and [`Outbox::consume`].
    pub async fn next_batch(&self, batch: &mut Vec<Frame>) -> Option<CloseReason> {
        std::future::poll_fn(|cx| {
            let mut s = self.lock();
            Self::discard(&mut s);
            if s.frames.is_empty() && s.close.is_none() {
                Self::register(&mut s, cx);
                return Poll::Pending;
            }
            batch.extend(s.frames.drain(..));
            s.bytes = 0;
            s.partial = false;
            self.recount(&mut s);
            Poll::Ready(s.close)
        })
        .await
    }

    /// Number of frames waiting (for tests and metrics).
    pub fn len(&self) -> usize {
        self.lock().frames.len()
    }

    /// Whether nothing is waiting.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Drop for Outbox {
    fn drop(&mut self) {
        let s = self.state.get_mut().unwrap_or_else(|p| p.into_inner());
        if s.behind
            && let Some(hook) = self.backlog.get()
        {
            hook(false);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use std::sync::atomic::{AtomicIsize, Ordering};

    fn drain(o: &Outbox) -> (Vec<Frame>, Option<CloseReason>) {
        let mut batch = Vec::new();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let close = rt.block_on(o.next_batch(&mut batch));
        (batch, close)
    }

    #[test]
    fn overflow_by_count_closes_with_1013_and_drops_queue() {
        let o = Outbox::new(2, 1 << 20);
        assert_eq!(o.push(Bytes::from_static(b"a")), Pushed::Queued);
        assert_eq!(o.push(Bytes::from_static(b"b")), Pushed::Queued);
        assert_eq!(o.push(Bytes::from_static(b"c")), Pushed::Overflowed);
        assert_eq!(o.push(Bytes::from_static(b"d")), Pushed::Closed);
        let (batch, close) = drain(&o);
        assert_eq!(close, Some(CloseReason::SLOW_CONSUMER));
        assert!(batch.is_empty());
        assert!(o.is_empty());
    }

    #[test]
    fn a_big_frame_fits_an_empty_queue_but_not_a_busy_one() {
        let o = Outbox::new(10, 4);
        assert_eq!(o.push(Bytes::from_static(b"ab")), Pushed::Queued);
        assert_eq!(
            o.push(Bytes::from_static(b"0123456789")),
            Pushed::Overflowed
        );
        let o = Outbox::new(10, 4);
        assert_eq!(o.push(Bytes::from_static(b"0123456789")), Pushed::Queued);
    }

    #[test]
    fn the_head_frame_does_not_use_up_the_byte_budget() {
        let o = Outbox::new(10, 4);
        assert_eq!(o.push(Bytes::from_static(b"0123456789")), Pushed::Queued);
        assert_eq!(o.push(Bytes::from_static(b"abcd")), Pushed::Queued);
        assert_eq!(o.push(Bytes::from_static(b"e")), Pushed::Overflowed);
    }

    #[test]
    fn close_keeps_queued_frames_for_the_writer() {
        let o = Outbox::new(10, 100);
        o.push(Bytes::from_static(b"a"));
        o.close(CloseReason::SHUTDOWN);
        o.close(CloseReason::SLOW_CONSUMER);
        let (batch, close) = drain(&o);
        assert_eq!(close, Some(CloseReason::SHUTDOWN));
        assert_eq!(batch, vec![Bytes::from_static(b"a")]);
    }

    fn peek(o: &Outbox, max: usize) -> (Vec<u8>, Poll<Option<CloseReason>>) {
        let mut out = Vec::new();
        let cx = Context::from_waker(Waker::noop());
        let polled = o.poll_peek(&cx, &mut out, max);
        (out, polled)
    }

    #[test]
    fn peek_copies_up_to_max_and_consume_removes_what_was_written() {
        let o = Outbox::new(10, 100);
        for f in [&b"abc"[..], b"de", b"fgh"] {
            o.push(Bytes::from_static(f));
        }
        assert_eq!(peek(&o, 6), (b"abcdef".to_vec(), Poll::Ready(None)));
        assert_eq!(o.consume(4), 1, "abc done, d of de written");
        assert_eq!(peek(&o, 100), (b"efgh".to_vec(), Poll::Ready(None)));
        assert_eq!(o.consume(4), 2);
        o.close(CloseReason::SHUTDOWN);
        assert_eq!(
            peek(&o, 100),
            (Vec::new(), Poll::Ready(Some(CloseReason::SHUTDOWN)))
        );
    }

    #[test]
    fn an_overflow_keeps_the_rest_of_a_partly_written_frame() {
        let o = Outbox::new(2, 100);
        o.push(Bytes::from_static(b"abc"));
        o.push(Bytes::from_static(b"def"));
        assert_eq!(o.consume(1), 0);
        assert_eq!(o.push(Bytes::from_static(b"ghi")), Pushed::Overflowed);
        assert_eq!(peek(&o, 100), (b"bc".to_vec(), Poll::Ready(None)));
        assert_eq!(o.consume(2), 1);
        assert_eq!(
            peek(&o, 100).1,
            Poll::Ready(Some(CloseReason::SLOW_CONSUMER))
        );
    }

    #[test]
    fn a_queue_is_behind_past_a_quarter_only_while_its_socket_takes_bytes() {
        let count = Arc::new(AtomicIsize::new(0));
        let o = Outbox::new(8, 1 << 20);
        let c = Arc::clone(&count);
        o.report_backlog(Arc::new(move |behind| {
            c.fetch_add(if behind { 1 } else { -1 }, Ordering::SeqCst);
        }));
        let behind = || count.load(Ordering::SeqCst);
        o.push(Bytes::from_static(b"a"));
        o.push(Bytes::from_static(b"b"));
        assert_eq!(behind(), 0, "two frames of eight");
        o.push(Bytes::from_static(b"c"));
        assert_eq!(behind(), 1, "past a quarter, and the socket takes bytes");
        o.set_refused(true);
        assert_eq!(
            behind(),
            0,
            "the client is not reading: not the server's lag"
        );
        o.set_refused(false);
        assert_eq!(behind(), 1);
        assert_eq!(o.consume(2), 2);
        assert_eq!(behind(), 0, "written down to a quarter");
        o.push(Bytes::from_static(b"d"));
        o.push(Bytes::from_static(b"e"));
        assert_eq!(behind(), 1);
        drop(o);
        assert_eq!(behind(), 0, "a dropped queue is not behind");
    }
}
