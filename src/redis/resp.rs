//! Just enough of the Redis protocol (RESP2) for the backbone: encode a
//! command, parse replies out of a read buffer, open an authenticated
//! connection from a `redis://` URL.
//!
//! Why hand-written instead of the `redis` crate: the backbone needs a
//! pipelined command connection, one subscriber connection whose
//! (un)subscribe confirmations it must count itself, its own reconnect and
//! back-off, and `EVALSHA`. That is ~250 lines over tokio's `TcpStream`,
//! and the `redis` feature then adds no crate at all to the tree (the
//! `redis` crate with `aio` + `tokio-comp` brings a dozen), with no second
//! reconnect policy to reason about.

use std::fmt;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

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

/// Parses one reply from the front of `buf`: `Ok(None)` if it is not all
/// there yet. On success the reply's bytes are consumed.
pub fn parse(buf: &mut BytesMut) -> Result<Option<Value>, LinkError> {
    let mut pos = 0;
    match parse_at(buf, &mut pos, 0)? {
        Some(v) => {
            buf.advance(pos);
            Ok(Some(v))
        }
        None => Ok(None),
    }
}

/// The longest header line (type byte, number or status text) accepted.
const MAX_LINE: usize = 64 << 10;
/// The largest bulk string accepted (Redis's own default cap is 512 MB; roomcast
/// stores chat messages of at most a few KiB).
const MAX_BULK: usize = 64 << 20;
/// The most a reply may buffer before it is complete; a reply beyond it
/// fails the connection instead of growing the buffer.
pub const MAX_REPLY: usize = 256 << 20;

/// The line at `pos`: `Ok(None)` if its end has not arrived yet, an error if
/// it is longer than [`MAX_LINE`].
fn line<'a>(buf: &'a [u8], pos: &mut usize) -> Result<Option<&'a [u8]>, LinkError> {
    let rest = &buf[*pos..];
    match rest.windows(2).position(|w| w == b"\r\n") {
        Some(end) if end <= MAX_LINE => {
            *pos += end + 2;
            Ok(Some(&rest[..end]))
        }
        None if rest.len() <= MAX_LINE => Ok(None),
        _ => Err(LinkError("reply line too long".into())),
    }
}

fn number(text: &[u8]) -> Result<i64, LinkError> {
    std::str::from_utf8(text)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| LinkError(format!("bad number in reply: {text:?}")))
}

fn parse_at(buf: &[u8], pos: &mut usize, depth: usize) -> Result<Option<Value>, LinkError> {
    if *pos >= buf.len() {
        return Ok(None);
    }
    if depth > MAX_DEPTH {
        return Err(LinkError("reply nested too deeply".into()));
    }
    let kind = buf[*pos];
    *pos += 1;
    let Some(head) = line(buf, pos)? else {
        return Ok(None);
    };
    let text = || String::from_utf8_lossy(head).into_owned();
    Ok(Some(match kind {
        b'+' => Value::Status(text()),
        b'-' => Value::Error(text()),
        b':' => Value::Int(number(head)?),
        b'$' => {
            let n = number(head)?;
            if n < 0 {
                return Ok(Some(Value::Bulk(None)));
            }
            let n = usize::try_from(n)
                .ok()
                .filter(|&n| n <= MAX_BULK)
                .ok_or_else(|| LinkError(format!("bulk reply of {n} bytes is too large")))?;
            let end = *pos + n; // both bounded by MAX_REPLY and MAX_BULK: no overflow
            let Some(terminator) = buf.get(end..end + 2) else {
                return Ok(None);
            };
            if terminator != b"\r\n" {
                return Err(LinkError("bulk reply not followed by CRLF".into()));
            }
            let data = Bytes::copy_from_slice(&buf[*pos..end]);
            *pos = end + 2;
            Value::Bulk(Some(data))
        }
        b'*' => {
            let n = number(head)?;
            if n < 0 {
                return Ok(Some(Value::Array(None)));
            }
            let mut items = Vec::with_capacity((n as usize).min(1024));
            for _ in 0..n {
                match parse_at(buf, pos, depth + 1)? {
                    Some(v) => items.push(v),
                    None => return Ok(None),
                }
            }
            Value::Array(Some(items))
        }
        other => return Err(LinkError(format!("unknown reply type byte {other:#x}"))),
    }))
}

/// Where and how to connect, from `redis://[user[:password]@]host[:port][/db]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// `host:port`.
    pub addr: String,
    /// `AUTH` user, if any.
    pub user: Option<String>,
    /// `AUTH` password, if any.
    pub password: Option<String>,
    /// `SELECT` database.
    pub db: u32,
}

impl Target {
    /// Parses a `redis://` URL (no TLS: `rediss://` is refused).
    pub fn parse(url: &str) -> Result<Self, String> {
        let rest = url
            .strip_prefix("redis://")
            .ok_or_else(|| format!("{url:?} is not a redis:// URL"))?;
        let (auth, rest) = match rest.rsplit_once('@') {
            Some((a, r)) => (Some(a), r),
            None => (None, rest),
        };
        let (hostport, db) = match rest.split_once('/') {
            Some((h, "")) => (h, 0),
            Some((h, d)) => (
                h,
                d.parse()
                    .map_err(|_| format!("{d:?} in the Redis URL is not a database number"))?,
            ),
            None => (rest, 0),
        };
        if hostport.is_empty() {
            return Err(format!("{url:?} names no host"));
        }
        let addr = if hostport.contains(':') && !hostport.ends_with(']') {
            hostport.to_owned()
        } else {
            format!("{hostport}:6379")
        };
        let decode = |s: &str| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8_lossy()
                .into_owned()
        };
        let (user, password) = match auth {
            None => (None, None),
            Some(a) => match a.split_once(':') {
                Some((u, p)) => ((!u.is_empty()).then(|| decode(u)), Some(decode(p))),
                None => (None, Some(decode(a))),
            },
        };
        Ok(Self {
            addr,
            user,
            password,
            db,
        })
    }
}

/// An open connection: the socket and what has been read but not parsed.
pub struct Conn {
    pub stream: TcpStream,
    pub buf: BytesMut,
}

impl Conn {
    /// Connects, authenticates, selects the database and names the
    /// connection (so an operator can find it in `CLIENT LIST`). Unbounded:
    /// the caller bounds the whole opening, of which this is the start.
    pub async fn open(target: &Target, name: &str) -> Result<Self, LinkError> {
        let stream = TcpStream::connect(&target.addr).await?;
        let _ = stream.set_nodelay(true);
        let mut conn = Self {
            stream,
            buf: BytesMut::with_capacity(16 << 10),
        };
        if let Some(password) = &target.password {
            let mut args: Vec<&[u8]> = vec![b"AUTH"];
            if let Some(user) = &target.user {
                args.push(user.as_bytes());
            }
            args.push(password.as_bytes());
            conn.ask(&args).await?;
        }
        if target.db != 0 {
            conn.ask(&[b"SELECT", target.db.to_string().as_bytes()])
                .await?;
        }
        conn.ask(&[b"CLIENT", b"SETNAME", name.as_bytes()]).await?;
        Ok(conn)
    }

    /// Sends one command and waits for its reply; an error reply is an error.
    pub async fn ask(&mut self, args: &[&[u8]]) -> Result<Value, LinkError> {
        let mut out = Vec::new();
        encode(&mut out, args);
        self.stream.write_all(&out).await?;
        match self.read().await? {
            Value::Error(e) => Err(LinkError(e)),
            v => Ok(v),
        }
    }

    /// Reads the next reply. Cancel-safe: bytes read stay in `buf`.
    pub async fn read(&mut self) -> Result<Value, LinkError> {
        loop {
            if let Some(v) = parse(&mut self.buf)? {
                return Ok(v);
            }
            if self.buf.len() > MAX_REPLY {
                return Err(LinkError("reply larger than the reply limit".into()));
            }
            if self.stream.read_buf(&mut self.buf).await? == 0 {
                return Err(LinkError("Redis closed the connection".into()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_nested_replies_and_waits_for_partial_ones() {
        let whole = b"*3\r\n$7\r\nmessage\r\n$-1\r\n*2\r\n:5\r\n+OK\r\n-ERR x\r\n";
        for cut in 0..whole.len() - 9 {
            let mut b = BytesMut::from(&whole[..cut]);
            assert_eq!(parse(&mut b).unwrap(), None, "cut at {cut}");
        }
        let mut b = BytesMut::from(&whole[..]);
        let v = parse(&mut b).unwrap().unwrap();
        assert_eq!(v.items().len(), 3);
        assert_eq!(v.items()[0].as_bytes(), Some(&b"message"[..]));
        assert_eq!(v.items()[1], Value::Bulk(None));
        assert_eq!(v.items()[2].items()[0].as_int(), Some(5));
        assert_eq!(parse(&mut b).unwrap(), Some(Value::Error("ERR x".into())));
        assert!(b.is_empty());
    }

    #[test]
    fn oversized_or_malformed_replies_fail_instead_of_growing_the_buffer() {
        for bad in [
            &b"$9223372036854775807\r\n"[..],
            b"$67108865\r\n",
            b"$3\r\nabcXY",
            b"*1\r\n$1\r\nxyz\r\n",
        ] {
            let mut b = BytesMut::from(bad);
            assert!(parse(&mut b).is_err(), "{bad:?} was accepted");
        }
        let mut long = BytesMut::from(&b"+"[..]);
        long.extend_from_slice(&vec![b'a'; MAX_LINE + 1]);
        assert!(
            parse(&mut long).is_err(),
            "an endless status line waits forever"
        );
        let mut short = BytesMut::from(&b"+"[..]);
        short.extend_from_slice(&[b'a'; 100]);
        assert_eq!(
            parse(&mut short).unwrap(),
            None,
            "a short partial line waits"
        );
    }

    #[test]
    fn urls() {
        let t = Target::parse("redis://127.0.0.1").unwrap();
        assert_eq!((t.addr.as_str(), t.db), ("127.0.0.1:6379", 0));
        let t = Target::parse("redis://u:p%40ss@h:7000/2").unwrap();
        assert_eq!(t.addr, "h:7000");
        assert_eq!(t.user.as_deref(), Some("u"));
        assert_eq!(t.password.as_deref(), Some("p@ss"));
        assert_eq!(t.db, 2);
        let t = Target::parse("redis://:secret@h/").unwrap();
        assert_eq!((t.user, t.password.as_deref()), (None, Some("secret")));
        assert!(Target::parse("http://h").is_err());
        assert!(Target::parse("redis://h/x").is_err());
    }
}
