//! Server-to-client WebSocket frames, serialized once.
//!
//! A server frame is never masked (RFC 6455 §5.1), so the same bytes are valid
//! on every connection. A broadcast is therefore encoded once, header and all,
//! into one [`Bytes`]; each recipient's queue gets a clone of the handle (a
//! reference-count increment), and the writer hands the bytes straight to the
//! socket. When the last handle goes, the buffer goes back to a per-thread
//! pool for the next frame (`frame_pool.rs`). This module must never know
//! about sockets or sessions.

use bytes::Bytes;
use serde::Serialize;

use super::frame_pool;

/// A complete, unmasked WebSocket frame ready to be written to any socket.
pub type Frame = Bytes;

/// The longest header a server frame needs: 2 bytes + 8-byte extended length.
const MAX_HEADER: usize = 10;

const OP_TEXT: u8 = 0x1;
const OP_CLOSE: u8 = 0x8;
const OP_PING: u8 = 0x9;
const OP_PONG: u8 = 0xA;

/// Writes the header for a final frame of `opcode` carrying `len` bytes into
/// the end of `head`, returning where it starts.
fn write_header(head: &mut [u8; MAX_HEADER], opcode: u8, len: usize) -> usize {
    let first = 0x80 | opcode; // FIN + opcode
    if len < 126 {
        head[8] = first;
        head[9] = len as u8;
        8
    } else if len <= u16::MAX as usize {
        head[6] = first;
        head[7] = 126;
        head[8..10].copy_from_slice(&(len as u16).to_be_bytes());
        6
    } else {
        head[0] = first;
        head[1] = 127;
        head[2..10].copy_from_slice(&(len as u64).to_be_bytes());
        0
    }
}

/// Serializes `event` as JSON into a single text frame: one buffer for the
/// JSON (with room for the header in front; the thread's spare one from
/// `frame_pool.rs` when it has one), no copy afterwards.
pub fn json<T: Serialize + ?Sized>(event: &T) -> Frame {
    let mut buf = frame_pool::take(256);
    buf.resize(MAX_HEADER, 0);
    // Our event types are strings, numbers, maps with string keys and
    // sequences: serde_json cannot fail on them when writing to a Vec.
    serde_json::to_writer(&mut buf, event).expect("events always serialize");
    with_header(buf)
}

/// A text frame whose payload `write` appends to an empty string (which
/// must stay valid UTF-8, as a `String` does), made like [`json`]'s: in a
/// buffer of at least `capacity` bytes (grown if `write` needs more), no
/// copy.
pub fn text_written(capacity: usize, write: impl FnOnce(&mut String)) -> Frame {
    // Room for the header, filled in once the length is known.
    let mut buf = frame_pool::take(MAX_HEADER + capacity);
    buf.resize(MAX_HEADER, 0);
    // Ten zero bytes, which are UTF-8: checking them costs nothing.
    let mut payload = String::from_utf8(buf).expect("zero bytes are UTF-8");
    write(&mut payload);
    with_header(payload.into_bytes())
}

/// Fills in the header of a text frame whose payload follows `MAX_HEADER`
/// bytes of room in `buf` (a pool's buffer, which goes back to a pool when
/// the frame is dropped).
fn with_header(mut buf: Vec<u8>) -> Frame {
    let len = buf.len() - MAX_HEADER;
    let mut head = [0u8; MAX_HEADER];
    let start = write_header(&mut head, OP_TEXT, len);
    buf[start..MAX_HEADER].copy_from_slice(&head[start..]);
    frame_pool::frame(buf, start)
}

/// How many bytes `value` takes as JSON, without keeping them.
pub fn json_len<T: Serialize + ?Sized>(value: &T) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    serde_json::to_writer(&mut count, value).expect("events always serialize");
    count.0
}

/// A text frame with the given payload (which must be UTF-8).
pub fn text(payload: &str) -> Frame {
    control_or_data(OP_TEXT, payload.as_bytes())
}

fn control_or_data(opcode: u8, payload: &[u8]) -> Frame {
    let mut head = [0u8; MAX_HEADER];
    let start = write_header(&mut head, opcode, payload.len());
    let mut buf = Vec::with_capacity(MAX_HEADER - start + payload.len());
    buf.extend_from_slice(&head[start..]);
    buf.extend_from_slice(payload);
    Bytes::from(buf)
}

/// A ping frame (empty payload).
pub fn ping() -> Frame {
    Bytes::from_static(&[0x80 | OP_PING, 0])
}

/// A pong frame echoing `payload` (control payloads are at most 125 bytes;
/// a longer one is cut, which only a broken client could send).
pub fn pong(payload: &[u8]) -> Frame {
    control_or_data(OP_PONG, &payload[..payload.len().min(125)])
}

/// A close frame with a status code and a short reason (cut to fit the
/// 125-byte control-frame limit on a character boundary).
pub fn close(code: u16, reason: &str) -> Frame {
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let mut payload = Vec::with_capacity(2 + end);
    payload.extend_from_slice(&code.to_be_bytes());
    payload.extend_from_slice(&reason.as_bytes()[..end]);
    control_or_data(OP_CLOSE, &payload)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_text_frame_has_two_byte_header() {
        let f = json(&serde_json::json!({"type": "pong"}));
        let body = br#"{"type":"pong"}"#;
        assert_eq!(f[0], 0x81);
        assert_eq!(f[1] as usize, body.len());
        assert_eq!(&f[2..], body);
    }

    #[test]
    fn medium_and_long_frames_use_extended_lengths() {
        let medium = "x".repeat(300);
        let f = text(&medium);
        assert_eq!(&f[..4], &[0x81, 126, 1, 44]);
        assert_eq!(f.len(), 4 + 300);

        let long = "y".repeat(70_000);
        let f = json(&long);
        assert_eq!(f[1], 127);
        let len = u64::from_be_bytes(f[2..10].try_into().unwrap());
        assert_eq!(len as usize, 70_002); // the quotes
        assert_eq!(f.len(), 10 + 70_002);
    }

    #[test]
    fn json_len_is_the_serialized_length() {
        let v = serde_json::json!({"type": "message", "content": "a\u{1}\"é"});
        assert_eq!(json_len(&v), serde_json::to_vec(&v).unwrap().len());
    }

    #[test]
    fn close_frame_cuts_reason_on_char_boundary() {
        let f = close(1013, &"é".repeat(100));
        assert_eq!(f[0], 0x88);
        assert!(f[1] as usize <= 125);
        assert_eq!(u16::from_be_bytes([f[2], f[3]]), 1013);
        assert!(std::str::from_utf8(&f[4..]).is_ok());
    }
}
