//! A connection to Redis: where to connect (from a `redis://` URL), the
//! opening handshake (`AUTH`, `SELECT`, `CLIENT SETNAME`), and replies read
//! into a bounded buffer and parsed by [`super::resp`].

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::resp::{LinkError, MAX_REPLY, Scan, Value, encode, parse};

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

/// An open connection: the socket, what has been read but not parsed, and
/// how far that has been scanned.
pub struct Conn {
    pub stream: TcpStream,
    /// Bytes read: others may append to it, only [`Conn::parse`] takes
    /// from it (its scan describes them).
    pub(super) buf: BytesMut,
    scan: Scan,
}

impl Conn {
    /// Connects, authenticates, selects the database and names the
    /// connection (so an operator can find it in `CLIENT LIST`). Unbounded:
    /// the caller bounds the whole opening, of which this is the start.
    pub async fn open(target: &Target, name: &str) -> Result<Self, LinkError> {
        let mut conn = Self::wrap(TcpStream::connect(&target.addr).await?);
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

    /// A connection on `stream`, nothing read yet.
    pub(super) fn wrap(stream: TcpStream) -> Self {
        let _ = stream.set_nodelay(true);
        Self {
            stream,
            buf: BytesMut::with_capacity(16 << 10),
            scan: Scan::default(),
        }
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

    /// Takes the next reply out of `buf` if it is all there, going on from
    /// where the last call's scan stopped. A reply that has outgrown
    /// [`MAX_REPLY`] and is still not complete fails the connection rather
    /// than the buffer growing on.
    pub fn parse(&mut self) -> Result<Option<Value>, LinkError> {
        match parse(&mut self.buf, &mut self.scan)? {
            None if self.buf.len() > MAX_REPLY => {
                Err(LinkError("reply larger than the reply limit".into()))
            }
            parsed => Ok(parsed),
        }
    }

    /// Reads the next reply. Cancel-safe: bytes read stay in `buf`.
    pub async fn read(&mut self) -> Result<Value, LinkError> {
        loop {
            if let Some(v) = self.parse()? {
                return Ok(v);
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
