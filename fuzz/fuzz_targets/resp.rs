//! The Redis reply parser (`src/redis/resp.rs`): whatever the bytes, it
//! answers without panicking; a reply cut short anywhere is "not yet"
//! (never an error, never another reply); the bytes fed in pieces, the scan
//! carried from one to the next, give what they give whole; and a reply
//! written out and read back is the same reply, with the bytes after it
//! left in the buffer.
#![no_main]

use arbitrary::Arbitrary;
use bytes::{BufMut, Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use roomcast::fuzzing::resp::{Scan, Value, parse};

#[derive(Arbitrary, Debug)]
enum Input<'a> {
    Bytes(&'a [u8], Vec<u16>),
    Reply(Reply, Vec<u16>),
}

/// A reply to write out: what a Redis server may send.
#[derive(Arbitrary, Debug)]
enum Reply {
    Status(String),
    Error(String),
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Array(Option<Vec<Reply>>),
}

fn one_line(s: &str) -> String {
    s.replace(['\r', '\n'], " ")
}

/// Writes `reply` out as RESP2 and returns the value it must read back as,
/// or `None` if it nests deeper than the parser takes.
fn write(reply: &Reply, out: &mut BytesMut, depth: usize) -> Option<Value> {
    if depth > 8 {
        return None;
    }
    Some(match reply {
        Reply::Status(s) => {
            let s = one_line(s);
            out.put_slice(format!("+{s}\r\n").as_bytes());
            Value::Status(s)
        }
        Reply::Error(s) => {
            let s = one_line(s);
            out.put_slice(format!("-{s}\r\n").as_bytes());
            Value::Error(s)
        }
        Reply::Int(n) => {
            out.put_slice(format!(":{n}\r\n").as_bytes());
            Value::Int(*n)
        }
        Reply::Bulk(None) => {
            out.put_slice(b"$-1\r\n");
            Value::Bulk(None)
        }
        Reply::Bulk(Some(b)) => {
            out.put_slice(format!("${}\r\n", b.len()).as_bytes());
            out.put_slice(b);
            out.put_slice(b"\r\n");
            Value::Bulk(Some(Bytes::copy_from_slice(b)))
        }
        Reply::Array(None) => {
            out.put_slice(b"*-1\r\n");
            Value::Array(None)
        }
        Reply::Array(Some(items)) => {
            out.put_slice(format!("*{}\r\n", items.len()).as_bytes());
            let items = items
                .iter()
                .map(|item| write(item, out, depth + 1))
                .collect::<Option<Vec<_>>>()?;
            Value::Array(Some(items))
        }
    })
}

/// Parses `whole`, and `whole` cut at each of `cuts`: a cut before the end
/// of the first reply is "not yet". Then feeds `whole` in pieces ending at
/// the cuts, with one scan: the first answer other than "not yet" is the
/// one `whole` gives, and comes as soon as the piece holding the reply's
/// end does.
fn check_cuts(whole: &[u8], cuts: &[u16]) -> Option<(Value, usize)> {
    let mut buf = BytesMut::from(whole);
    let first = parse(&mut buf, &mut Scan::default());
    let used = whole.len() - buf.len();
    let cuts: Vec<usize> = cuts
        .iter()
        .take(16)
        .map(|&cut| usize::from(cut) % (whole.len() + 1))
        .collect();
    for &cut in &cuts {
        let mut part = BytesMut::from(&whole[..cut]);
        let got = parse(&mut part, &mut Scan::default());
        match &first {
            Ok(Some(_)) if cut < used => {
                assert_eq!(got, Ok(None), "a reply cut at {cut} of {used}");
                assert_eq!(part.len(), cut, "nothing consumed of a partial reply");
            }
            Ok(Some(_)) => assert_eq!(got.as_ref().ok(), Some(&first.clone().unwrap())),
            Ok(None) => assert_eq!(got, Ok(None)),
            Err(_) => {}
        }
    }
    let mut ends = cuts;
    ends.push(whole.len());
    ends.sort_unstable();
    let mut pieces = BytesMut::new();
    let mut scan = Scan::default();
    let mut fed = 0;
    for end in ends {
        pieces.extend_from_slice(&whole[fed..end]);
        fed = end;
        let got = parse(&mut pieces, &mut scan);
        match (&got, &first) {
            (Ok(None), Ok(Some(_))) => assert!(end < used, "a reply of {used} whole in {end}"),
            (Ok(None), _) if end < whole.len() => {}
            _ => {
                assert_eq!(got, first, "fed in pieces up to {end}");
                if got.is_ok() {
                    assert_eq!(pieces.len(), end - used, "the bytes after the reply stay");
                }
                break;
            }
        }
    }
    match first {
        Ok(Some(v)) => Some((v, used)),
        Ok(None) => {
            assert_eq!(used, 0);
            None
        }
        Err(_) => None,
    }
}

fuzz_target!(|input: Input<'_>| match input {
    Input::Bytes(bytes, cuts) => {
        check_cuts(bytes, &cuts);
    }
    Input::Reply(reply, cuts) => {
        let mut out = BytesMut::new();
        let Some(expected) = write(&reply, &mut out, 0) else {
            return;
        };
        let len = out.len();
        out.put_slice(b"+NEXT\r\n");
        let (value, used) = check_cuts(&out, &cuts).expect("a written reply reads back");
        assert_eq!((value, used), (expected, len));
    }
});
