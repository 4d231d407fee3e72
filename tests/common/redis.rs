//! The tests' own view of the shared Redis at 127.0.0.1:6379: a tiny
//! blocking client for setup, inspection and cleanup, key prefixes no other
//! test uses, and a guard that deletes a test's keys when it ends.

use std::io::{BufRead, BufReader, Read, Write};

use super::{TIMEOUT, unique};

pub const REDIS: &str = "127.0.0.1:6379";

/// A reply from the test's own tiny blocking Redis client.
#[derive(Debug, Clone, PartialEq)]
pub enum Resp {
    Str(String),
    Int(i64),
    Nil,
    Arr(Vec<Resp>),
    Err(String),
}

impl Resp {
    pub fn str(&self) -> &str {
        match self {
            Self::Str(s) => s,
            other => panic!("expected a string reply, got {other:?}"),
        }
    }
}

/// A plain connection for setup, inspection and cleanup.
pub struct Admin(BufReader<std::net::TcpStream>);

impl Admin {
    pub fn connect() -> Self {
        Self::connect_to(REDIS)
    }

    /// A connection to the Redis at `addr` (say, one the test started).
    pub fn connect_to(addr: &str) -> Self {
        let stream = std::net::TcpStream::connect(addr).unwrap_or_else(|e| {
            panic!(
                "Redis is not reachable at {addr} ({e}). These tests need a real Redis: \
                 run `redis-server --port 6379` (CI's .ci/run starts one)."
            )
        });
        stream.set_read_timeout(Some(TIMEOUT)).unwrap();
        let mut admin = Self(BufReader::new(stream));
        assert_eq!(admin.cmd(&["PING"]), Resp::Str("PONG".into()));
        admin
    }

    pub fn cmd(&mut self, args: &[&str]) -> Resp {
        let mut out = format!("*{}\r\n", args.len());
        for a in args {
            out.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        self.0
            .get_mut()
            .write_all(out.as_bytes())
            .expect("write to Redis");
        self.read()
    }

    fn read(&mut self) -> Resp {
        let mut line = String::new();
        self.0.read_line(&mut line).expect("read from Redis");
        let (kind, rest) = line.trim_end().split_at(1);
        match kind {
            "+" => Resp::Str(rest.to_owned()),
            "-" => Resp::Err(rest.to_owned()),
            ":" => Resp::Int(rest.parse().unwrap()),
            "$" => {
                let n: i64 = rest.parse().unwrap();
                if n < 0 {
                    return Resp::Nil;
                }
                let mut buf = vec![0; n as usize + 2];
                self.0.read_exact(&mut buf).unwrap();
                buf.truncate(n as usize);
                Resp::Str(String::from_utf8_lossy(&buf).into_owned())
            }
            "*" => {
                let n: i64 = rest.parse().unwrap();
                Resp::Arr((0..n.max(0)).map(|_| self.read()).collect())
            }
            other => panic!("unexpected Redis reply type {other:?}"),
        }
    }

    /// Deletes every key under `prefix:`.
    pub fn cleanup(&mut self, prefix: &str) {
        let pattern = format!("{prefix}:*");
        let mut cursor = "0".to_owned();
        loop {
            let reply = self.cmd(&["SCAN", &cursor, "MATCH", &pattern, "COUNT", "1000"]);
            let Resp::Arr(parts) = reply else {
                panic!("SCAN answered {reply:?}")
            };
            cursor = parts[0].str().to_owned();
            if let Resp::Arr(keys) = &parts[1] {
                for key in keys {
                    self.cmd(&["DEL", key.str()]);
                }
            }
            if cursor == "0" {
                return;
            }
        }
    }

    /// The connections roomcast opened under `prefix`: each one's client
    /// id and name (`PREFIX:INSTANCE:cmd` or `PREFIX:INSTANCE:sub`).
    pub fn connections(&mut self, prefix: &str) -> Vec<(String, String)> {
        let list = self.cmd(&["CLIENT", "LIST"]);
        let field = |line: &str, key: &str| {
            line.split(' ')
                .find_map(|f| f.strip_prefix(key))
                .map(str::to_owned)
        };
        list.str()
            .lines()
            .filter_map(|l| Some((field(l, "id=")?, field(l, "name=")?)))
            .filter(|(_, name)| name.starts_with(&format!("{prefix}:")))
            .collect()
    }

    /// The ids of the instances with a connection under `prefix`.
    pub fn instances(&mut self, prefix: &str) -> std::collections::BTreeSet<String> {
        self.connections(prefix)
            .iter()
            .filter_map(|(_, name)| name[prefix.len() + 1..].split_once(':'))
            .map(|(instance, _)| instance.to_owned())
            .collect()
    }

    /// Closes every connection roomcast opened under `prefix` (as a Redis
    /// restart would); returns how many.
    pub fn kill_connections(&mut self, prefix: &str) -> usize {
        self.kill_where(prefix, |_| true)
    }

    /// Closes `instance`'s `role` connection (`cmd` or `sub`) under
    /// `prefix`; returns how many were closed.
    pub fn kill_connection(&mut self, prefix: &str, instance: &str, role: &str) -> usize {
        let name = format!("{prefix}:{instance}:{role}");
        self.kill_where(prefix, |n| n == name)
    }

    fn kill_where(&mut self, prefix: &str, chosen: impl Fn(&str) -> bool) -> usize {
        let ids: Vec<String> = self
            .connections(prefix)
            .into_iter()
            .filter(|(_, name)| chosen(name))
            .map(|(id, _)| id)
            .collect();
        for id in &ids {
            self.cmd(&["CLIENT", "KILL", "ID", id]);
        }
        ids.len()
    }
}

/// Deletes the test's keys when the test ends, passed or failed.
pub struct Keys(pub String);

impl Drop for Keys {
    fn drop(&mut self) {
        if let Ok(stream) = std::net::TcpStream::connect(REDIS) {
            let _ = stream.set_read_timeout(Some(TIMEOUT));
            Admin(BufReader::new(stream)).cleanup(&self.0);
        }
    }
}

impl Keys {
    pub fn prefix(&self) -> &str {
        &self.0
    }
}

/// `config` sharing rooms through Redis under a fresh prefix, with the
/// guard that removes its keys.
pub fn on_redis(config: roomcast::Config, tag: &str) -> (roomcast::Config, Keys) {
    Admin::connect();
    let prefix = unique(tag);
    let config = config
        .redis_url(Some(format!("redis://{REDIS}")))
        .redis_prefix(prefix.clone());
    (config, Keys(prefix))
}
