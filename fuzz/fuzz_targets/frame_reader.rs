//! The WebSocket read side cut at frame ends (`src/ws/frame_bounded.rs`):
//! whatever bytes a client sends, in whatever pieces the socket hands them
//! over (some reads pending first), every byte comes out once and in order,
//! no read crosses the end of a frame, and the reader never spins.
#![no_main]

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use roomcast::fuzzing::FrameBounded;
use tokio::io::{AsyncRead, ReadBuf};

#[derive(Arbitrary, Debug)]
struct Input {
    /// How much of the stream came with the upgrade request.
    pre_read: u16,
    /// The size of tungstenite's reads (1 and up).
    read_size: u16,
    /// The sizes of the socket's reads, in turn (0: pending once).
    pieces: Vec<u8>,
    stream: Vec<u8>,
}

/// A socket that hands over `data` in the pieces it is told.
struct Socket<'a> {
    data: &'a [u8],
    pieces: &'a [u8],
    turn: usize,
    /// The last read was pending: the next one is not.
    pended: bool,
}

impl AsyncRead for Socket<'_> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let piece = match self.pieces {
            [] => usize::MAX,
            p => usize::from(p[self.turn % p.len()]),
        };
        self.turn += 1;
        if piece == 0 && !self.pended && !self.data.is_empty() {
            self.pended = true;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        self.pended = false;
        let n = piece.max(1).min(out.remaining()).min(self.data.len());
        out.put_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Poll::Ready(Ok(()))
    }
}

/// Where each frame of `stream` ends, read the way RFC 6455 §5.2 says; a
/// header cut off by the end of the stream ends at the end.
fn frame_ends(stream: &[u8]) -> Vec<usize> {
    let mut ends = Vec::new();
    let mut at = 0usize;
    while at < stream.len() {
        let rest = &stream[at..];
        let Some(&second) = rest.get(1) else { break };
        let ext = match second & 0x7f {
            126 => 2,
            127 => 8,
            _ => 0,
        };
        let header = 2 + ext + if second & 0x80 != 0 { 4 } else { 0 };
        if rest.len() < header {
            break;
        }
        let payload = match ext {
            0 => u64::from(second & 0x7f),
            _ => rest[2..2 + ext]
                .iter()
                .fold(0, |n, &b| (n << 8) | u64::from(b)),
        };
        match u64::try_from(at + header)
            .ok()
            .and_then(|h| h.checked_add(payload))
        {
            Some(end) if end < stream.len() as u64 => {
                at = end as usize;
                ends.push(at);
            }
            _ => break,
        }
    }
    ends
}

fuzz_target!(|input: Input| {
    let pre = usize::from(input.pre_read).min(input.stream.len());
    let (pre_read, rest) = input.stream.split_at(pre);
    let socket = Socket {
        data: rest,
        pieces: &input.pieces,
        turn: 0,
        pended: false,
    };
    let mut reader = FrameBounded::new(socket, pre_read.to_vec());
    let mut cx = Context::from_waker(Waker::noop());
    let mut space = vec![0u8; usize::from(input.read_size).max(1)];
    let (mut out, mut reads) = (Vec::new(), Vec::new());
    let ends = frame_ends(&input.stream);
    // Every poll moves a byte, ends the stream or is one of the socket's
    // pendings, and no two pendings come in a row.
    let most_polls = 2 * (input.stream.len() + 2);
    for _ in 0..=most_polls {
        let mut buf = ReadBuf::new(&mut space);
        match Pin::new(&mut reader).poll_read(&mut cx, &mut buf) {
            Poll::Pending => continue,
            Poll::Ready(Err(e)) => panic!("the socket never fails, the reader did: {e}"),
            Poll::Ready(Ok(())) if buf.filled().is_empty() => {
                assert_eq!(out, input.stream, "every byte, once, in order");
                let mut start = 0;
                for end in reads {
                    let crossed = ends.iter().find(|&&b| start < b && b < end);
                    assert_eq!(crossed, None, "the read {start}..{end} crosses a frame end");
                    start = end;
                }
                return;
            }
            Poll::Ready(Ok(())) => {
                out.extend_from_slice(buf.filled());
                reads.push(out.len());
            }
        }
    }
    panic!(
        "no end after {most_polls} polls of {} bytes",
        input.stream.len()
    );
});
