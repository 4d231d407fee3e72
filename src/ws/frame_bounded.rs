//! The read side handed to tungstenite, cut at frame boundaries: each read
//! ends at the latest where the frame being read ends, and what the socket
//! gave beyond it waits here, in a buffer that exists only while it holds
//! something: an idle connection keeps none (it gives it back to the few its
//! thread keeps for the next reads). The socket is read into a
//! buffer of the thread's, and only what it gave is copied here.
//!
//! Why: tungstenite grows its read buffer to hold the largest frame it has
//! seen and never shrinks it, so one 60 KB message would cost its connection
//! 60 KiB for the rest of its life (10 000 connections: over half a GiB).
//! Because tungstenite never holds more than the frame it is parsing, once a
//! whole message has come out its buffer is empty, and the session can swap
//! it for a new, small one ([`super::session`] does after a large message)
//! without losing a byte of what follows.
//!
//! Only the frame header is read here (RFC 6455 §5.2: two bytes, an
//! extended length of 0, 2 or 8 bytes, a 4-byte mask if the mask bit is
//! set); everything else, including refusing bad or oversized frames, stays
//! tungstenite's job. tokio-tungstenite offers no way to shrink its buffer,
//! hence this small reader of our own.
//!
//! One thing is counted here, because nothing above sees it: the
//! continuation frames of one message. tungstenite puts fragments together
//! and hands over only whole messages, so a client sending a first fragment
//! and then empty continuation frames without end made work the rate limit
//! never saw, until the idle timeout. Past [`MAX_FRAGMENTS`] the read fails
//! ([`TooManyFragments`]) and the session closes with 1009.

use std::cell::RefCell;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, ReadBuf};

/// Bytes read from the socket ahead of tungstenite; also what a read may
/// take at once. Any header (at most 14 bytes) fits.
const BUFFER: usize = 4096;

thread_local! {
    /// What this thread's connections read into, zeroed once: a read then
    /// costs its connection only a copy of the bytes it got, not a fresh,
    /// zero-filled 4 KiB buffer (a `malloc` too large for the allocator's
    /// per-thread cache, two `memset`s and a `free` per request: see
    /// docs/BENCHMARKS.md, issue 15, "What a delivery costs in user
    /// space"). Each use is within one `poll_read`.
    static SCRATCH: RefCell<Box<[u8]>> = RefCell::new(vec![0; BUFFER].into_boxed_slice());

    /// Buffers of [`BUFFER`] bytes this thread's connections gave back when
    /// they had nothing left to hold, at most [`SPARES`]; past that one is
    /// freed. Why: a connection takes a buffer only while bytes wait in it,
    /// so a busy sender took one and freed it at almost every read, a
    /// `malloc` of whatever the read got; under load that was 1 KiB or more,
    /// a size for which glibc first merges every small chunk freed since
    /// (`malloc_consolidate`, in `perf` the read's callers held most of it).
    /// Now a read takes a spare: 2 263-2 269 instructions per delivery in
    /// small rooms against 2 279-2 283 (`bench/callgrind_rooms.sh`;
    /// docs/BENCHMARKS.md, issue 15, "A buffer kept for the next read").
    static SPARE: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
}

/// The most buffers a thread keeps for its connections' next reads (128
/// KiB), whatever the number of connections.
const SPARES: usize = 32;

/// A buffer of [`BUFFER`] bytes' capacity, empty: a spare if the thread
/// has one.
fn take_buffer() -> Vec<u8> {
    SPARE
        .with_borrow_mut(Vec::pop)
        .unwrap_or_else(|| Vec::with_capacity(BUFFER))
}

/// Gives back a connection's emptied buffer (freed if it is not of the
/// usual size or the thread keeps enough).
fn give_back(buf: Vec<u8>) {
    if buf.capacity() == BUFFER {
        SPARE.with_borrow_mut(|spare| {
            if spare.len() < SPARES {
                spare.push(buf);
            }
        });
    }
}

/// The most continuation frames one message may have. Browsers never split
/// a message; a client that does (64 KiB in 64-byte pieces, say) stays far
/// below this.
pub const MAX_FRAGMENTS: u32 = 1024;

/// A client sent more than [`MAX_FRAGMENTS`] continuation frames for one
/// message: the read fails with this inside an `InvalidData` error.
#[derive(Debug)]
pub struct TooManyFragments;

impl std::fmt::Display for TooManyFragments {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "a message in more than {MAX_FRAGMENTS} continuation frames"
        )
    }
}

impl std::error::Error for TooManyFragments {}

/// A reader that never hands out bytes past the end of the current frame.
pub struct FrameBounded<R> {
    inner: R,
    buf: Vec<u8>,
    /// Bytes of `buf` already handed out.
    pos: usize,
    /// Bytes of the current frame (header included) not yet handed out; 0
    /// between frames.
    frame_left: u64,
    /// Continuation frames since the last frame that began a message.
    fragments: u32,
    eof: bool,
}

/// A frame header's length and its payload's, once `bytes` (from the start
/// of a frame) hold all of the header; `None` while they do not.
fn frame_len(bytes: &[u8]) -> Option<(usize, u64)> {
    // The first byte (FIN, RSV, opcode) is tungstenite's to check.
    let &b1 = bytes.get(1)?;
    let masked = b1 & 0x80 != 0;
    let (ext, short) = match b1 & 0x7f {
        126 => (2, None),
        127 => (8, None),
        n => (0, Some(u64::from(n))),
    };
    let header = 2 + ext + if masked { 4 } else { 0 };
    if bytes.len() < header {
        return None;
    }
    let payload = short.unwrap_or_else(|| {
        bytes[2..2 + ext]
            .iter()
            .fold(0u64, |n, &b| (n << 8) | u64::from(b))
    });
    Some((header, payload))
}

impl<R> FrameBounded<R> {
    /// Reads from `inner`, starting with `pre_read` (bytes already taken
    /// from the socket, e.g. with the HTTP upgrade request).
    pub fn new(inner: R, pre_read: Vec<u8>) -> Self {
        Self {
            inner,
            buf: pre_read,
            pos: 0,
            frame_left: 0,
            fragments: 0,
            eof: false,
        }
    }

    /// Hands `out` what it may take of what is buffered: `true` if it took
    /// anything.
    fn give(&mut self, out: &mut ReadBuf<'_>) -> io::Result<bool> {
        let buffered = &self.buf[self.pos..];
        if buffered.is_empty() {
            return Ok(false);
        }
        if self.frame_left == 0 {
            match frame_len(buffered) {
                Some((header, payload)) => {
                    self.frame_left = (header as u64).saturating_add(payload);
                    match buffered[0] & 0x0f {
                        // A continuation frame: one more piece of a message.
                        0 => {
                            self.fragments += 1;
                            if self.fragments > MAX_FRAGMENTS {
                                return Err(io::Error::new(
                                    io::ErrorKind::InvalidData,
                                    TooManyFragments,
                                ));
                            }
                        }
                        // Text or binary: a message begins. (Control frames
                        // may come between a message's pieces.)
                        1 | 2 => self.fragments = 0,
                        _ => {}
                    }
                }
                // At the end of the stream a partial header goes as it is:
                // tungstenite reports the cut-off frame.
                None if self.eof => self.frame_left = buffered.len() as u64,
                None => return Ok(false),
            }
        }
        let n = buffered
            .len()
            .min(out.remaining())
            .min(usize::try_from(self.frame_left).unwrap_or(usize::MAX));
        out.put_slice(&buffered[..n]);
        self.pos += n;
        self.frame_left -= n as u64;
        if self.pos == self.buf.len() {
            self.pos = 0;
            self.buf.clear();
            // A large upgrade read-ahead is not kept once used up.
            if self.buf.capacity() > BUFFER {
                self.buf = Vec::new();
            }
        }
        Ok(n > 0)
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for FrameBounded<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            if out.remaining() == 0 || this.give(out)? || this.eof {
                return Poll::Ready(Ok(()));
            }
            // Not enough buffered for a header, or nothing at all: read more
            // behind what is left (moved to the front first).
            if this.pos > 0 {
                this.buf.drain(..this.pos);
                this.pos = 0;
            }
            if this.buf.is_empty() && this.buf.capacity() != BUFFER {
                this.buf = take_buffer();
            }
            // What is left here is at most part of a header: the read fills
            // the buffer up to its size, never past it (and asks for at
            // least a byte: a read of none would look like the end).
            let room = BUFFER.saturating_sub(this.buf.len()).max(1);
            let (polled, got) = SCRATCH.with_borrow_mut(|scratch| {
                let mut space = ReadBuf::new(&mut scratch[..room]);
                let polled = Pin::new(&mut this.inner).poll_read(cx, &mut space);
                this.buf.extend_from_slice(space.filled());
                (polled, space.filled().len())
            });
            match polled {
                Poll::Ready(Ok(())) if got == 0 => this.eof = true,
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => {
                    // Nothing waits here: until the socket has more, the
                    // connection holds no buffer (10 000 idle connections:
                    // 40 MiB less).
                    if this.buf.is_empty() {
                        give_back(std::mem::take(&mut this.buf));
                    }
                    return Poll::Pending;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    /// A masked client frame with `payload`.
    fn frame(payload: &[u8]) -> Vec<u8> {
        let mut f = vec![0x81];
        match payload.len() {
            n @ 0..=125 => f.push(0x80 | n as u8),
            n @ 126..=65535 => {
                f.push(0x80 | 126);
                f.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                f.push(0x80 | 127);
                f.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        f.extend_from_slice(&[0, 0, 0, 0]); // a zero mask leaves the payload as is
        f.extend_from_slice(payload);
        f
    }

    /// A masked client frame of `first` (FIN and opcode), empty.
    fn empty(first: u8) -> Vec<u8> {
        vec![first, 0x80, 0, 0, 0, 0]
    }

    #[tokio::test]
    async fn a_message_in_too_many_continuation_frames_fails_the_read() {
        // A first piece, then continuation frames with pings between them
        // (control frames do not begin a message): the one past the limit
        // fails the read.
        let mut bytes = empty(0x01);
        for i in 0..=MAX_FRAGMENTS {
            if i % 100 == 0 {
                bytes.extend(empty(0x89));
            }
            bytes.extend(empty(0x00));
        }
        let mut r = FrameBounded::new(&bytes[..], Vec::new());
        let mut all = Vec::new();
        let err = r.read_to_end(&mut all).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(err.get_ref().unwrap().is::<TooManyFragments>());
        assert_eq!(all.len(), bytes.len() - 6, "everything before it was read");

        // A new message starts the count again: as many pieces in each of
        // two messages is fine.
        let mut bytes = Vec::new();
        for first in [0x01, 0x02] {
            bytes.extend(empty(first));
            for _ in 0..MAX_FRAGMENTS {
                bytes.extend(empty(0x00));
            }
        }
        let mut r = FrameBounded::new(&bytes[..], Vec::new());
        let mut all = Vec::new();
        r.read_to_end(&mut all).await.unwrap();
        assert_eq!(all, bytes);
    }

    #[test]
    fn header_lengths() {
        assert_eq!(frame_len(&[0x81]), None);
        assert_eq!(frame_len(&[0x81, 0x05]), Some((2, 5)));
        assert_eq!(frame_len(&[0x81, 0x85, 0, 0, 0]), None);
        assert_eq!(frame_len(&[0x81, 0x85, 0, 0, 0, 0]), Some((6, 5)));
        assert_eq!(
            frame_len(&[0x81, 0xfe, 0x01, 0x00, 1, 2, 3, 4]),
            Some((8, 256))
        );
        let mut long = vec![0x82, 0xff];
        long.extend_from_slice(&(70_000u64).to_be_bytes());
        long.extend_from_slice(&[0; 4]);
        assert_eq!(frame_len(&long), Some((14, 70_000)));
    }

    /// Reads everything with reads of at most `chunk` bytes, noting where
    /// each read ended.
    async fn read_all<R: AsyncRead + Unpin>(
        r: &mut FrameBounded<R>,
        chunk: usize,
    ) -> (Vec<u8>, Vec<usize>) {
        let (mut all, mut ends) = (Vec::new(), Vec::new());
        let mut buf = vec![0; chunk];
        loop {
            let n = r.read(&mut buf).await.unwrap();
            if n == 0 {
                return (all, ends);
            }
            all.extend_from_slice(&buf[..n]);
            ends.push(all.len());
        }
    }

    #[tokio::test]
    async fn reads_stop_at_each_frame_end_and_lose_nothing() {
        let frames = [
            frame(b"hello"),
            frame(&[b'x'; 300]),
            frame(b""),
            frame(&vec![b'y'; 70_000]),
            frame(b"bye"),
        ];
        let stream: Vec<u8> = frames.concat();
        let boundaries: Vec<usize> = frames
            .iter()
            .scan(0, |at, f| {
                *at += f.len();
                Some(*at)
            })
            .collect();
        // Part of the stream came with the upgrade request.
        let (pre, rest) = stream.split_at(3);
        let mut r = FrameBounded::new(rest, pre.to_vec());
        let (all, ends) = read_all(&mut r, 100_000).await;
        assert_eq!(all, stream);
        for b in &boundaries {
            assert!(ends.contains(b), "a read ended at the frame end {b}");
        }
        // No read crosses a frame end.
        let mut start = 0;
        for &end in &ends {
            assert!(
                !boundaries.iter().any(|&b| b > start && b < end),
                "the read {start}..{end} crosses a frame end"
            );
            start = end;
        }
    }

    #[tokio::test]
    async fn a_stream_cut_inside_a_header_hands_out_what_came() {
        let mut bytes = frame(b"ok");
        bytes.extend_from_slice(&[0x81, 0xfe, 0x01]); // half a header, then EOF
        let mut r = FrameBounded::new(&bytes[..], Vec::new());
        let (all, _) = read_all(&mut r, 7).await;
        assert_eq!(all, bytes);
    }

    #[tokio::test]
    async fn a_reader_waiting_for_more_holds_no_buffer() {
        use tokio::io::AsyncWriteExt;

        let (mut client, server) = tokio::io::duplex(1 << 16);
        let mut r = FrameBounded::new(server, Vec::new());
        let mut out = [0u8; 64];
        for text in [&b"hello"[..], b"again"] {
            client.write_all(&frame(text)).await.expect("write");
            let n = r.read(&mut out).await.expect("read");
            assert_eq!(&out[..n], &frame(text)[..]);
            // Nothing more has come: the next read waits, holding nothing.
            let mut space = ReadBuf::new(&mut out);
            let mut cx = Context::from_waker(std::task::Waker::noop());
            assert!(Pin::new(&mut r).poll_read(&mut cx, &mut space).is_pending());
            assert_eq!(r.buf.capacity(), 0);
        }
    }

    #[tokio::test]
    async fn buffers_given_back_serve_the_next_reads_and_the_thread_keeps_a_bounded_few() {
        use tokio::io::AsyncWriteExt;

        let spares = || SPARE.with_borrow(Vec::len);
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let mut out = [0u8; 64];
        // Each reader is sent two frames and reads one: the other waits in
        // its buffer, so all of them hold one at once.
        let mut pairs = Vec::new();
        for _ in 0..SPARES + 8 {
            let (mut client, server) = tokio::io::duplex(1 << 16);
            let mut r = FrameBounded::new(server, Vec::new());
            client
                .write_all(&[frame(b"one"), frame(b"two")].concat())
                .await
                .expect("write");
            let n = r.read(&mut out).await.expect("read");
            assert_eq!(&out[..n], &frame(b"one")[..]);
            assert_eq!(r.buf.capacity(), BUFFER);
            pairs.push((client, r));
        }
        assert_eq!(spares(), 0);
        for (_, r) in &mut pairs {
            let n = r.read(&mut out).await.expect("read");
            assert_eq!(&out[..n], &frame(b"two")[..]);
            let mut space = ReadBuf::new(&mut out);
            assert!(
                Pin::new(&mut *r)
                    .poll_read(&mut cx, &mut space)
                    .is_pending()
            );
            assert_eq!(r.buf.capacity(), 0);
        }
        // The thread kept a bounded few; the rest were freed.
        assert_eq!(spares(), SPARES);
        // The next read takes a spare instead of a new buffer.
        let (client, r) = &mut pairs[0];
        client.write_all(&frame(b"three")).await.expect("write");
        let n = r.read(&mut out).await.expect("read");
        assert_eq!(&out[..n], &frame(b"three")[..]);
        assert_eq!(spares(), SPARES - 1);
    }
}
