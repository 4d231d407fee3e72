//! One member's bounded outbound queue.
//!
//! The hub pushes shared frames in; the member's writer drains everything
//! queued at once and writes it with a single (vectored) write. The queue is
//! bounded by frame count and by bytes. When a push would overflow it, the
//! member is a slow consumer: the queue drops what it holds and asks the
//! writer to close with 1013, so one slow client can never grow the server's
//! memory. A push never blocks and never allocates once the queue has grown
//! to its working size.

use std::collections::VecDeque;
use std::sync::Mutex;

use tokio::sync::Notify;

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

#[derive(Default)]
struct State {
    frames: VecDeque<Frame>,
    bytes: usize,
    close: Option<CloseReason>,
}

/// A bounded queue of frames for one connection, with a wake-up for its writer.
pub struct Outbox {
    state: Mutex<State>,
    ready: Notify,
    max_frames: usize,
    max_bytes: usize,
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
            ready: Notify::new(),
            max_frames: max_frames.max(1),
            max_bytes,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding this lock cannot leave the queue inconsistent
        // (every update is a single push/drain), so poisoning is ignored.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues a frame. Never blocks; see [`Pushed`] for what happens when full.
    pub fn push(&self, frame: Frame) -> Pushed {
        let mut s = self.lock();
        if s.close.is_some() {
            return Pushed::Closed;
        }
        let empty = s.frames.is_empty();
        let head = s.frames.front().map_or(0, Frame::len);
        if !empty
            && (s.frames.len() >= self.max_frames || s.bytes - head + frame.len() > self.max_bytes)
        {
            s.frames.clear();
            s.bytes = 0;
            s.close = Some(CloseReason::SLOW_CONSUMER);
            drop(s);
            self.ready.notify_one();
            return Pushed::Overflowed;
        }
        s.bytes += frame.len();
        s.frames.push_back(frame);
        drop(s);
        if empty {
            // The writer only waits when the queue is empty, so only the
            // first frame of a batch needs to wake it.
            self.ready.notify_one();
        }
        Pushed::Queued
    }

    /// Asks the writer to send what is queued, then close with `reason`.
    /// The first reason wins; later calls change nothing.
    pub fn close(&self, reason: CloseReason) {
        let mut s = self.lock();
        if s.close.is_none() {
            s.close = Some(reason);
            drop(s);
            self.ready.notify_one();
        }
    }

    /// Whether a close has been requested.
    pub fn is_closing(&self) -> bool {
        self.lock().close.is_some()
    }

    /// Moves every queued frame into `batch` (which keeps its capacity between
    /// calls) and returns the close reason if one is set. Waits while there is
    /// nothing to do. Cancel-safe: nothing is taken until it returns.
    pub async fn next_batch(&self, batch: &mut Vec<Frame>) -> Option<CloseReason> {
        loop {
            {
                let mut s = self.lock();
                if !s.frames.is_empty() || s.close.is_some() {
                    batch.extend(s.frames.drain(..));
                    s.bytes = 0;
                    return s.close;
                }
            }
            self.ready.notified().await;
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn overflow_by_count_closes_with_1013_and_drops_queue() {
        let o = Outbox::new(2, 1 << 20);
        assert_eq!(o.push(Bytes::from_static(b"a")), Pushed::Queued);
        assert_eq!(o.push(Bytes::from_static(b"b")), Pushed::Queued);
        assert_eq!(o.push(Bytes::from_static(b"c")), Pushed::Overflowed);
        assert_eq!(o.push(Bytes::from_static(b"d")), Pushed::Closed);
        assert!(o.is_empty());
        let mut batch = Vec::new();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        assert_eq!(
            rt.block_on(o.next_batch(&mut batch)),
            Some(CloseReason::SLOW_CONSUMER)
        );
        assert!(batch.is_empty());
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
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let mut batch = Vec::new();
        assert_eq!(
            rt.block_on(o.next_batch(&mut batch)),
            Some(CloseReason::SHUTDOWN)
        );
        assert_eq!(batch, vec![Bytes::from_static(b"a")]);
    }
}
