//! Just enough of the Redis protocol (RESP2) for the backbone: encode a
//! command and parse replies out of a read buffer (the connection that
//! uses them is [`super::conn`]).
//!
//! Why hand-written instead of the `redis` crate: the backbone needs a
//! pipelined command connection, one subscriber connection whose
//! (un)subscribe confirmations it must count itself, its own reconnect and
//! back-off, and `EVALSHA`. That is this file and `conn.rs` over tokio's `TcpStream`,
//! and the `redis` feature then adds no crate at all to the tree (the
//! `redis` crate with `aio` + `tokio-comp` brings a dozen), with no second
//! reconnect policy to reason about.

use std::fmt;

use bytes::{Bytes, BytesMut};

/// One reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// `+OK`.
    Status(String),
    /// `-ERR ...`: an error reply (the connection is still fine).
    Error(String),
    /// `:42`.
    Int(i64),
    /// `$n` bulk string; `None` is the null bulk.
    Bulk(Option<Bytes>),
    /// `*n` array; `None` is the null array.
    Array(Option<Vec<Value>>),
}

impl Value {
    /// The integer in an `Int` reply (or a bulk holding digits).
    pub fn as_int(&self) -> Option<i64> {
        match self {
            Self::Int(n) => Some(*n),
            Self::Bulk(Some(b)) => std::str::from_utf8(b).ok()?.parse().ok(),
            _ => None,
        }
    }

    /// The bytes of a bulk or status reply.
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Self::Bulk(Some(b)) => Some(b),
            Self::Status(s) => Some(s.as_bytes()),
            _ => None,
        }
    }

    /// The items of an array reply.
    pub fn items(&self) -> &[Value] {
        match self {
            Self::Array(Some(v)) => v,
            _ => &[],
        }
    }
}

/// The connection is unusable: I/O failed, the server broke the protocol,
/// or the handshake was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkError(pub String);

impl fmt::Display for LinkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for LinkError {}

impl From<std::io::Error> for LinkError {
    fn from(e: std::io::Error) -> Self {
        Self(e.to_string())
    }
}

/// Appends `args` as one RESP command (an array of bulk strings).
pub fn encode(out: &mut Vec<u8>, args: &[&[u8]]) {
    out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
}

/// Nesting deeper than this is not something the backbone's scripts return.
const MAX_DEPTH: usize = 8;

/// The longest header line (type byte, number or status text) accepted.
const MAX_LINE: usize = 64 << 10;
/// The largest bulk string accepted (Redis's own default cap is 512 MB; roomcast
/// stores chat messages of at most a few KiB).
const MAX_BULK: usize = 64 << 20;
/// The most a reply may buffer before it is complete; a reply beyond it
/// fails the connection instead of growing the buffer.
pub const MAX_REPLY: usize = 256 << 20;

/// How far the search for the end of the reply at the front of a buffer
/// got. Each read continues it where the last one stopped instead of
/// starting again from the reply's first byte, so a large reply arriving
/// over many reads costs time in proportion to its size, not to its size
/// squared; no `Value` is built until the whole reply is there.
///
/// It belongs to one buffer (a [`super::conn::Conn`] keeps them side by side): it
/// describes that buffer's front, which must not be consumed but by
/// [`parse`], and it starts afresh whenever a reply is taken.
#[derive(Debug, Default)]
pub struct Scan {
    /// Where the item being scanned starts (its type byte); past the
    /// header while inside a bulk string.
    at: usize,
    /// How many bytes of that item's header line (after the type byte)
    /// were already searched for its CRLF, and are not searched again.
    seen: usize,
    /// Inside a bulk string whose header was read: where its CRLF must be.
    /// Its body is skipped, never looked at.
    bulk_end: Option<usize>,
    /// Items still to come in each array open around `at`, outermost
    /// first; never zero (a finished array is closed). Fixed size: an item
    /// nested deeper than [`MAX_DEPTH`] fails the reply before it could
    /// need another slot.
    left: [u64; MAX_DEPTH + 1],
    /// How many arrays are open: the depth of the item at `at`.
    depth: usize,
}

impl Scan {
    /// Continues the search for the end of the reply at the front of
    /// `buf`, which holds what it held at the last call and maybe more:
    /// the reply's length once it is all there.
    fn resume(&mut self, buf: &[u8]) -> Result<Option<usize>, LinkError> {
        loop {
            if let Some(end) = self.bulk_end {
                let Some(terminator) = buf.get(end..end + 2) else {
                    return Ok(None);
                };
                examined(2);
                if terminator != b"\r\n" {
                    return Err(LinkError("bulk reply not followed by CRLF".into()));
                }
                self.bulk_end = None;
                self.at = end + 2;
                if self.item_done() {
                    return Ok(Some(self.at));
                }
                continue;
            }
            let Some(&kind) = buf.get(self.at) else {
                return Ok(None);
            };
            if self.depth > MAX_DEPTH {
                return Err(LinkError("reply nested too deeply".into()));
            }
            // `at` is within `buf`: the slices below are too.
            let start = self.at + 1;
            let Some(len) = line_len(&buf[start..], &mut self.seen)? else {
                return Ok(None);
            };
            let head = &buf[start..start + len];
            self.seen = 0;
            self.at = start + len + 2;
            match kind {
                b'+' | b'-' => {}
                b':' => {
                    number(head)?;
                }
                b'$' => {
                    let n = number(head)?;
                    if n >= 0 {
                        // Both bounded by MAX_REPLY and MAX_BULK: no overflow.
                        self.bulk_end = Some(self.at + bulk_len(n)?);
                        continue;
                    }
                }
                b'*' => {
                    let n = number(head)?;
                    if n > 0 {
                        // `depth` <= MAX_DEPTH (checked above): a slot is free.
                        self.left[self.depth] = n.unsigned_abs();
                        self.depth += 1;
                        continue;
                    }
                }
                other => return Err(LinkError(format!("unknown reply type byte {other:#x}"))),
            }
            if self.item_done() {
                return Ok(Some(self.at));
            }
        }
    }

    /// One item ended at `at`: counts it off the arrays around it, closing
    /// each it completes. True if that completes the reply.
    fn item_done(&mut self) -> bool {
        while self.depth > 0 {
            let left = &mut self.left[self.depth - 1];
            *left -= 1;
            if *left > 0 {
                return false;
            }
            self.depth -= 1;
        }
        true
    }
}

/// Takes one reply from the front of `buf`: `Ok(None)` if it is not all
/// there yet. Call it again with the same `scan` once more bytes have been
/// appended: it goes on from where this call stopped. On success the
/// reply's bytes are consumed and `scan` starts afresh; after an error the
/// connection is of no further use.
pub fn parse(buf: &mut BytesMut, scan: &mut Scan) -> Result<Option<Value>, LinkError> {
    let Some(len) = scan.resume(buf)? else {
        return Ok(None);
    };
    *scan = Scan::default();
    // Its bulk strings are slices of this, not copies: the bytes live as
    // long as the reply's values, which the link's readers drop once
    // handled (what the hub keeps, it copies out).
    let reply = buf.split_to(len).freeze();
    let mut pos = 0;
    match build(&reply, &mut pos) {
        Some(value) if pos == len => Ok(Some(value)),
        // The scan checked every byte the build reads, so this cannot
        // happen; should it, the connection fails instead of the server.
        _ => Err(LinkError(
            "roomcast misread a Redis reply (a bug: please report it)".into(),
        )),
    }
}

/// The length of the line at the front of `rest`, before its CRLF, once
/// that has arrived. Its first `seen` bytes were searched by an earlier
/// call and are not searched again. A line longer than [`MAX_LINE`] is an
/// error as soon as the bytes show it is, never a wait for more.
fn line_len(rest: &[u8], seen: &mut usize) -> Result<Option<usize>, LinkError> {
    // The '\n' of a line of MAX_LINE bytes is at MAX_LINE + 1: nothing
    // beyond that needs a look.
    let window = &rest[..rest.len().min(MAX_LINE + 2)];
    let from = (*seen).max(1); // a '\n' ends a line only after its '\r'
    let found = (from..window.len()).find(|&i| window[i] == b'\n' && window[i - 1] == b'\r');
    examined(found.map_or(window.len(), |i| i + 1).saturating_sub(*seen));
    if let Some(i) = found {
        return Ok(Some(i - 1));
    }
    *seen = window.len();
    // The line is at least this long, even if a '\r' at the end starts its CRLF.
    let shortest = window.len() - usize::from(window.last() == Some(&b'\r'));
    if shortest > MAX_LINE {
        return Err(LinkError("reply line too long".into()));
    }
    Ok(None)
}

fn number(text: &[u8]) -> Result<i64, LinkError> {
    std::str::from_utf8(text)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| LinkError(format!("bad number in reply: {text:?}")))
}

/// The length of a bulk string whose header says `n` (not negative).
fn bulk_len(n: i64) -> Result<usize, LinkError> {
    usize::try_from(n)
        .ok()
        .filter(|&n| n <= MAX_BULK)
        .ok_or_else(|| LinkError(format!("bulk reply of {n} bytes is too large")))
}

/// Builds the item at `reply[*pos..]`, which a [`Scan`] found whole and
/// well formed, and moves `pos` past it. Bulk strings are slices of
/// `reply`. `None` only if the two disagreed about the bytes.
fn build(reply: &Bytes, pos: &mut usize) -> Option<Value> {
    let kind = *reply.get(*pos)?;
    let start = *pos + 1;
    let len = reply.get(start..)?.windows(2).position(|w| w == b"\r\n")?;
    examined(len + 2);
    let head = reply.get(start..start + len)?;
    *pos = start + len + 2;
    let text = || String::from_utf8_lossy(head).into_owned();
    Some(match kind {
        b'+' => Value::Status(text()),
        b'-' => Value::Error(text()),
        b':' => Value::Int(number(head).ok()?),
        b'$' => match usize::try_from(number(head).ok()?) {
            Err(_) => Value::Bulk(None),
            Ok(n) => {
                let end = pos.checked_add(n)?;
                reply.get(end..end.checked_add(2)?)?;
                let data = reply.slice(*pos..end);
                *pos = end + 2;
                Value::Bulk(Some(data))
            }
        },
        b'*' => match usize::try_from(number(head).ok()?) {
            Err(_) => Value::Array(None),
            Ok(n) => {
                // Each item takes three bytes at least (`+\r\n`): the
                // capacity is what the items need, bounded by the reply.
                let mut items = Vec::with_capacity(n.min((reply.len() - *pos) / 3));
                for _ in 0..n {
                    items.push(build(reply, pos)?);
                }
                Value::Array(Some(items))
            }
        },
        _ => return None,
    })
}

#[cfg(test)]
thread_local! {
    /// Counts the bytes the parser looks at, for a test to tell linear
    /// work from quadratic without a clock. Nothing outside tests.
    static EXAMINED: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

#[inline]
fn examined(bytes: usize) {
    #[cfg(test)]
    EXAMINED.with(|n| n.set(n.get() + bytes));
    #[cfg(not(test))]
    let _ = bytes;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `bytes` to one buffer and one scan in pieces of the sizes
    /// `size` gives, taking every reply there is after each piece: the
    /// replies, then the bytes left over, or the error.
    fn feed(
        bytes: &[u8],
        mut size: impl FnMut() -> usize,
    ) -> (Vec<Value>, Result<usize, LinkError>) {
        let mut buf = BytesMut::new();
        let mut scan = Scan::default();
        let mut replies = Vec::new();
        let mut fed = 0;
        while fed < bytes.len() {
            let end = fed.saturating_add(size().max(1)).min(bytes.len());
            buf.extend_from_slice(&bytes[fed..end]);
            fed = end;
            loop {
                match parse(&mut buf, &mut scan) {
                    Ok(Some(v)) => replies.push(v),
                    Ok(None) => break,
                    Err(e) => return (replies, Err(e)),
                }
            }
        }
        (replies, Ok(buf.len()))
    }

    fn whole(bytes: &[u8]) -> (Vec<Value>, Result<usize, LinkError>) {
        feed(bytes, || usize::MAX)
    }

    /// A small deterministic generator (xorshift64): random cuts without a
    /// dependency, the same on every run.
    fn sizes(mut seed: u64, max: u64) -> impl FnMut() -> usize {
        move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            usize::try_from(seed % max).unwrap() + 1
        }
    }

    fn bulk(b: &'static [u8]) -> Value {
        Value::Bulk(Some(Bytes::from_static(b)))
    }

    /// Replies of every kind, nested as deep as allowed, a large one, and
    /// the start of one more.
    fn replies() -> Vec<u8> {
        let mut r = b"*3\r\n$7\r\nmessage\r\n$-1\r\n*2\r\n:5\r\n+OK\r\n-ERR x\r\n".to_vec();
        // What ends a line, inside a bulk and alone inside a status.
        r.extend_from_slice(b"$6\r\na\r\nb\rc\r\n$0\r\n\r\n*0\r\n*-1\r\n+a\rb\nc\r\n:-42\r\n");
        r.extend_from_slice(&b"*1\r\n".repeat(MAX_DEPTH));
        r.extend_from_slice(b":1\r\n");
        r.extend_from_slice(b"*500\r\n");
        for i in 0..500 {
            let item = match i % 5 {
                0 => format!("${}\r\n{}\r\n", i.to_string().len(), i),
                1 => format!("+s{i}\r\n"),
                2 => format!(":{i}\r\n"),
                3 => format!("*2\r\n$1\r\n{}\r\n*1\r\n$-1\r\n", i % 10),
                _ => "$-1\r\n".into(),
            };
            r.extend_from_slice(item.as_bytes());
        }
        r.extend_from_slice(b"+NEX");
        r
    }

    #[test]
    fn parses_nested_replies_and_waits_for_partial_ones() {
        let whole = b"*3\r\n$7\r\nmessage\r\n$-1\r\n*2\r\n:5\r\n+OK\r\n-ERR x\r\n";
        for cut in 0..whole.len() - 9 {
            let mut b = BytesMut::from(&whole[..cut]);
            assert_eq!(
                parse(&mut b, &mut Scan::default()).unwrap(),
                None,
                "cut at {cut}"
            );
            assert_eq!(b.len(), cut, "nothing consumed of a partial reply");
        }
        let mut b = BytesMut::from(&whole[..]);
        let mut scan = Scan::default();
        let v = parse(&mut b, &mut scan).unwrap().unwrap();
        assert_eq!(v.items().len(), 3);
        assert_eq!(v.items()[0].as_bytes(), Some(&b"message"[..]));
        assert_eq!(v.items()[1], Value::Bulk(None));
        assert_eq!(v.items()[2].items()[0].as_int(), Some(5));
        assert_eq!(
            parse(&mut b, &mut scan).unwrap(),
            Some(Value::Error("ERR x".into()))
        );
        assert!(b.is_empty());
    }

    #[test]
    fn a_reply_fed_a_byte_at_a_time_or_in_random_pieces_parses_as_it_does_whole() {
        let bytes = replies();
        let (expected, rest) = whole(&bytes);
        assert_eq!(rest, Ok(4), "the last reply is not all there");
        assert_eq!(expected.len(), 10);
        assert_eq!(expected[2], bulk(b"a\r\nb\rc"));
        assert_eq!(expected[3], bulk(b""));
        assert_eq!(expected[4], Value::Array(Some(vec![])));
        assert_eq!(expected[5], Value::Array(None));
        assert_eq!(expected[6], Value::Status("a\rb\nc".into()));
        assert_eq!(expected[7], Value::Int(-42));
        let large = expected[9].items();
        assert_eq!(large.len(), 500);
        assert_eq!(large[495], bulk(b"495"));
        assert_eq!(large[498].items()[1].items(), [Value::Bulk(None)]);

        assert_eq!(
            feed(&bytes, || 1),
            (expected.clone(), Ok(4)),
            "a byte at a time"
        );
        for seed in 1..=200 {
            // Small pieces cut lines and bulks anywhere; larger ones hold
            // several replies, or parts of two.
            let max = if seed % 2 == 0 { 16 } else { 600 };
            assert_eq!(
                feed(&bytes, sizes(seed, max)),
                (expected.clone(), Ok(4)),
                "random pieces of at most {max} bytes, seed {seed}"
            );
        }
    }

    #[test]
    fn a_scan_goes_on_inside_a_line_and_inside_a_bulk() {
        let mut buf = BytesMut::new();
        let mut scan = Scan::default();
        let mut more = |bytes: &[u8], scan: &mut Scan| {
            buf.extend_from_slice(bytes);
            let parsed = parse(&mut buf, scan).unwrap();
            (parsed, buf.len())
        };
        assert_eq!(more(b"*2\r\n+hel", &mut scan), (None, 8));
        assert_eq!(
            (scan.depth, scan.at, scan.seen),
            (1, 4, 3),
            "in the status line"
        );
        assert_eq!(more(b"lo\r", &mut scan), (None, 11));
        assert_eq!(scan.seen, 6, "its '\\r' arrived, its '\\n' not yet");
        assert_eq!(more(b"\n$10\r\nhello", &mut scan), (None, 22));
        assert_eq!(scan.bulk_end, Some(27), "in the bulk, its body skipped");
        assert_eq!(more(b"world\r", &mut scan), (None, 28));
        let (parsed, left) = more(b"\n+", &mut scan);
        assert_eq!(
            parsed,
            Some(Value::Array(Some(vec![
                Value::Status("hello".into()),
                bulk(b"helloworld"),
            ])))
        );
        assert_eq!(left, 1, "the next reply's first byte stays");
        assert_eq!(
            (scan.depth, scan.at, scan.seen, scan.bulk_end),
            (0, 0, 0, None)
        );
    }

    #[test]
    fn a_reply_fed_in_pieces_is_looked_at_a_bounded_number_of_times_per_byte() {
        // Many small items and one long line: the shapes that parsing again
        // from the first byte at every read made cost the square of their size.
        let mut reply = b"*4001\r\n".to_vec();
        for i in 0..4000 {
            reply.extend_from_slice(format!("${}\r\n{i}\r\n", i.to_string().len()).as_bytes());
        }
        reply.push(b'+');
        reply.extend_from_slice(&[b'a'; 20_000]);
        reply.extend_from_slice(b"\r\n");
        for piece in [64, 7, 1] {
            EXAMINED.set(0);
            let (replies, rest) = feed(&reply, || piece);
            assert_eq!((replies.len(), rest), (1, Ok(0)));
            assert_eq!(replies[0].items().len(), 4001);
            // The scan looks at each header byte once, the build once more.
            let looked = EXAMINED.get();
            assert!(
                looked <= 2 * reply.len(),
                "{looked} bytes looked at for a reply of {} fed in pieces of {piece}",
                reply.len()
            );
        }
    }

    #[test]
    fn oversized_or_malformed_replies_fail_instead_of_growing_the_buffer() {
        let mut deep = b"*1\r\n".repeat(MAX_DEPTH + 1);
        deep.extend_from_slice(b"*0\r\n");
        let cases: [(&[u8], &str); 7] = [
            (
                &b"$9223372036854775807\r\n"[..],
                "bulk reply of 9223372036854775807 bytes is too large",
            ),
            (
                b"$67108865\r\n",
                "bulk reply of 67108865 bytes is too large",
            ),
            (b"$3\r\nabcXY", "bulk reply not followed by CRLF"),
            (b"*1\r\n$1\r\nxyz\r\n", "bulk reply not followed by CRLF"),
            (b":12a\r\n", "bad number in reply: [49, 50, 97]"),
            (b"*2\r\n:1\r\n!x\r\n", "unknown reply type byte 0x21"),
            (&deep[..], "reply nested too deeply"),
        ];
        for (bad, error) in cases {
            // The same error whole or in pieces, at whichever byte shows it.
            let failed = Err(LinkError(error.into()));
            assert_eq!(whole(bad), (vec![], failed.clone()), "{bad:?} whole");
            assert_eq!(feed(bad, || 1), (vec![], failed), "{bad:?} byte by byte");
        }
        // Within the limits, the same replies only wait.
        for fine in [
            &b"$67108864\r\n"[..],
            b"$3\r\nabc\r",
            b"*9223372036854775807\r\n",
        ] {
            assert_eq!(whole(fine), (vec![], Ok(fine.len())), "{fine:?}");
        }

        let mut long = BytesMut::from(&b"+"[..]);
        long.extend_from_slice(&vec![b'a'; MAX_LINE + 1]);
        let too_long = Err(LinkError("reply line too long".into()));
        assert_eq!(
            whole(&long),
            (vec![], too_long.clone()),
            "an endless status line waits forever"
        );
        assert_eq!(feed(&long, sizes(7, 4096)), (vec![], too_long));
        // The longest line accepted, its CRLF cut in two: the '\r' could
        // end it yet, so it waits rather than failing.
        let mut longest = BytesMut::from(&b"+"[..]);
        longest.extend_from_slice(&vec![b'a'; MAX_LINE]);
        longest.extend_from_slice(b"\r");
        let mut scan = Scan::default();
        assert_eq!(parse(&mut longest, &mut scan), Ok(None));
        longest.extend_from_slice(b"\n");
        let status = parse(&mut longest, &mut scan).unwrap().unwrap();
        assert_eq!(status.as_bytes().map(<[u8]>::len), Some(MAX_LINE));
        let mut short = BytesMut::from(&b"+"[..]);
        short.extend_from_slice(&[b'a'; 100]);
        assert_eq!(
            parse(&mut short, &mut Scan::default()).unwrap(),
            None,
            "a short partial line waits"
        );
    }
}
