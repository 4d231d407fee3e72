//! Shared helpers for the integration tests: here, a real server on
//! 127.0.0.1:0 with its own temporary directory, claims and tokens; in the
//! submodules, a raw HTTP/1.1 client (`http`), a WebSocket client that
//! speaks the JSON protocol (`client`), a raw WebSocket for clients that
//! must misbehave (`raw_ws`), the real binary as a process (`binary`), a
//! TCP proxy the test can cut or freeze (`proxy`), and Redis, S3 and
//! PostgreSQL fixtures (`redis`, `s3`, `postgres`).
//!
//! Every wait here is bounded by [`TIMEOUT`], which is a failure bound only:
//! no test passes because something took a certain time.

// Each test binary uses its own subset of these helpers (and of the
// submodules' re-exports).
#![allow(dead_code, unused_imports)]

mod binary;
mod client;
mod http;
#[cfg(feature = "postgres")]
pub mod postgres;
mod proxy;
mod raw_ws;
pub mod redis;
pub mod s3;

pub use binary::*;
pub use client::*;
pub use http::*;
pub use proxy::*;
pub use raw_ws::*;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use roomcast::store::StoreKind;
use roomcast::{Config, ServeError};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// A name no other test, run or process uses, from `tag`: a PostgreSQL
/// schema's (so letters, digits and `_` around the tag), a Redis key
/// prefix's, a temporary directory's.
pub fn unique(tag: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!(
        "rc_{tag}_{}_{}_{nanos:x}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// The identity claim every test uses for `user`: the same person wherever
/// the name appears (in open mode, a name is held by the identity that
/// connected with it, so two tabs of "ann" must present the same claim).
/// Derived from the name, so parallel tests never disagree.
pub fn claim_of(user: &str) -> String {
    use base64::Engine as _;
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(format!("roomcast test claim for {user}").as_bytes());
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest)
}

/// `path` (`/ws/{room}/{user}[?query]`) with `claim=` for its user added,
/// unless it names a claim (or a token) already or asks for none with
/// `claim=none`, which is removed.
pub fn with_claim(path: &str) -> String {
    let Some(rest) = path.strip_prefix("/ws/") else {
        return path.to_owned();
    };
    let (segments, query) = rest.split_once('?').unwrap_or((rest, ""));
    let Some((_, user)) = segments.split_once('/') else {
        return path.to_owned();
    };
    if query.split('&').any(|p| p == "claim=none") {
        let kept: Vec<&str> = query.split('&').filter(|p| *p != "claim=none").collect();
        return match kept.is_empty() {
            true => format!("/ws/{segments}"),
            false => format!("/ws/{segments}?{}", kept.join("&")),
        };
    }
    if query
        .split('&')
        .any(|p| p.starts_with("claim=") || p.starts_with("token="))
    {
        return path.to_owned();
    }
    let user = percent_encoding::percent_decode_str(user).decode_utf8_lossy();
    let claim = claim_of(user.trim());
    match query.is_empty() {
        true => format!("/ws/{segments}?claim={claim}"),
        false => format!("/ws/{segments}?{query}&claim={claim}"),
    }
}

/// The secret of the tests' token-mode servers.
pub const TEST_SECRET: &[u8] = b"roomcast tests: a secret of more than thirty-two bytes";

/// `config` in token mode, with [`TEST_SECRET`].
pub fn token_mode(config: Config) -> Config {
    let mut auth = config.auth.clone();
    auth.mode = roomcast::auth::Mode::Token(
        roomcast::auth::Secret::new(TEST_SECRET.to_vec()).expect("a long enough secret"),
    );
    config.auth(auth)
}

/// A token for `user` opening `rooms`, valid for an hour.
pub fn token(user: &str, rooms: &[&str]) -> String {
    signed(user, rooms, false)
}

/// A moderator's token for `user`, for every room, valid for an hour.
pub fn moderator_token(user: &str) -> String {
    signed(user, &[], true)
}

fn signed(user: &str, rooms: &[&str], moderator: bool) -> String {
    let now = roomcast::auth::now();
    let rooms: Vec<String> = rooms.iter().map(|r| (*r).to_owned()).collect();
    let secret = roomcast::auth::Secret::new(TEST_SECRET.to_vec()).unwrap();
    roomcast::auth::jwt::sign(
        &roomcast::auth::jwt::Issue {
            sub: user,
            rooms: &rooms,
            moderator,
            iat: now,
            exp: now + 3600,
        },
        &secret,
    )
}

/// How long any single expected event may take before the test fails.
/// Generous, because CI runs several suites on 2 cores at once.
pub const TIMEOUT: Duration = Duration::from_secs(15);

/// A directory under the system temp dir, unique to this process and call,
/// removed when dropped.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        let path = std::env::temp_dir().join(unique(tag));
        std::fs::create_dir_all(&path).expect("create temp dir");
        Self(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A running server. Call [`Server::shutdown`] to stop it and see what
/// `serve` returned; dropping it without that aborts the server task.
pub struct Server {
    pub addr: SocketAddr,
    /// The server's own temporary directory (its uploads live in `uploads/`,
    /// see [`Server::uploads_dir`]; its SQLite store in `data/`).
    pub dir: TempDir,
    config: Config,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), ServeError>>>,
    /// What must live as long as the server (say, the guard that removes
    /// its Redis keys).
    held: Vec<Box<dyn std::any::Any + Send>>,
}

/// Test defaults: the production defaults with a short shutdown grace, so a
/// test that fails mid-way cannot hang CI for long, and history in memory
/// (the tests of the durable stores choose theirs, see [`store_config`]),
/// and no per-address limits: every test client is on 127.0.0.1, so those
/// would be global ones (`tests/fairness.rs` sets them). Two workers on any
/// machine: a room's members then live on both, and wake-ups cross threads
/// (`src/runtime/relay.rs`), as on a server with more CPUs.
pub fn config() -> Config {
    Config::default()
        .workers(2usize)
        .shutdown_grace(Duration::from_secs(5))
        .store(StoreKind::Memory)
        .max_connections_per_address(0usize)
        .max_http_per_address(0usize)
        .joins_per_minute(0u32)
}

impl Server {
    /// Starts `roomcast::serve` with `config`, storing uploads in a fresh
    /// temporary directory.
    pub async fn start(config: Config) -> Self {
        Self::start_in(config, TempDir::new("server")).await
    }

    /// Shuts the server down gracefully and starts a new one with the same
    /// configuration and directory (its uploads and SQLite store).
    pub async fn restart(mut self) -> Self {
        let _ = self.stop.take().expect("not yet stopped").send(());
        let task = self.task.take().expect("not yet stopped");
        tokio::time::timeout(TIMEOUT, task)
            .await
            .expect("serve did not return after shutdown")
            .expect("serve panicked")
            .expect("serve failed");
        let dir = std::mem::replace(&mut self.dir, TempDir::new("moved"));
        Self::start_in(self.config.clone(), dir).await
    }

    /// Like [`Server::start`], in `dir`.
    pub async fn start_in(config: Config, dir: TempDir) -> Self {
        // Created here too (serve creates it when its task first runs), so a
        // test may place files in it right after start.
        let uploads = dir.path().join("uploads");
        std::fs::create_dir_all(&uploads).expect("create uploads dir");
        // The SQLite store goes in the server's directory too, unless the
        // test chose another place.
        let data = match config.data_dir == Path::new("data") {
            true => dir.path().join("data"),
            false => config.data_dir.clone(),
        };
        let config = config.uploads_dir(uploads).data_dir(data);
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(roomcast::serve(listener, config.clone(), async move {
            let _ = stopped.await;
        }));
        Self {
            held: Vec::new(),
            addr,
            dir,
            config,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Triggers the shutdown future and waits for `serve` to return.
    pub async fn shutdown(mut self) -> Result<(), ServeError> {
        let _ = self.stop.take().expect("not yet stopped").send(());
        let task = self.task.take().expect("not yet stopped");
        tokio::time::timeout(TIMEOUT, task)
            .await
            .expect("serve did not return after shutdown")
            .expect("serve panicked")
    }

    /// Keeps `guard` alive as long as the server.
    pub fn hold(&mut self, guard: impl std::any::Any + Send) {
        self.held.push(Box::new(guard));
    }

    /// Waits until `/health` answers 200 (a backbone connected).
    pub async fn wait_healthy(&self) {
        let deadline = tokio::time::Instant::now() + TIMEOUT;
        while self.get("/health").await.status != 200 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the server never became healthy"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Where this server stores uploads.
    pub fn uploads_dir(&self) -> PathBuf {
        self.dir.path().join("uploads")
    }

    /// `ws://ADDR{path}`.
    pub fn ws_url(&self, path: &str) -> String {
        format!("ws://{}{}", self.addr, with_claim(path))
    }

    /// Connects a WebSocket client to `path` (e.g. `/ws/room/ann`); panics
    /// if the upgrade is refused.
    pub async fn ws(&self, path: &str) -> Client {
        Client::connect(&self.ws_url(path)).await
    }

    /// Connects to `/ws/{room}/{user}` and returns the client with its
    /// `welcome` already read.
    pub async fn join(&self, room: &str, user: &str) -> (Client, Value) {
        let mut c = self.ws(&format!("/ws/{room}/{user}")).await;
        let welcome = c.expect("welcome").await;
        (c, welcome)
    }

    /// A WebSocket upgrade request to `path` (sent as it is: no claim is
    /// added) with `extra` headers; the answer, `101` or a refusal.
    pub async fn try_upgrade(&self, path: &str, extra: &[(&str, &str)]) -> HttpResponse {
        let mut headers = vec![
            ("Upgrade", "websocket"),
            ("Connection", "Upgrade"),
            ("Sec-WebSocket-Version", "13"),
            ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ];
        headers.extend_from_slice(extra);
        self.request("GET", path, &headers).await
    }

    /// `GET path` with `Connection: close`.
    pub async fn get(&self, path: &str) -> HttpResponse {
        self.request("GET", path, &[]).await
    }

    /// One request with extra headers, `Connection: close` and no body.
    pub async fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
    ) -> HttpResponse {
        let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {}\r\n", self.addr);
        for (name, value) in headers {
            req.push_str(&format!("{name}: {value}\r\n"));
        }
        if !headers
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case("connection"))
        {
            req.push_str("Connection: close\r\n");
        }
        req.push_str("\r\n");
        http_raw(self.addr, req.as_bytes(), method == "HEAD").await
    }

    /// The value of one counter or gauge in `/metrics`.
    pub async fn metric(&self, name: &str) -> u64 {
        let res = self.get("/metrics").await;
        assert_eq!(res.status, 200, "/metrics answered {}", res.status);
        metric_value(&res.text(), name)
    }
}

impl Server {
    /// Waits until a metric reads `value` (state that changes after an
    /// event the test cannot observe directly, like a session ending).
    pub async fn wait_metric(&self, name: &str, value: u64) {
        let deadline = tokio::time::Instant::now() + TIMEOUT;
        loop {
            let now = self.metric(name).await;
            if now == value {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{name} stayed at {now}, never reached {value}"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Reads `name`'s value from Prometheus text.
pub fn metric_value(text: &str, name: &str) -> u64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| {
            let (n, v) = l.split_once(' ')?;
            (n == name).then(|| v.trim().parse().expect("numeric metric"))
        })
        .unwrap_or_else(|| panic!("metric {name} missing from:\n{text}"))
}

/// Waits until `check` holds (state that changes after an event the test
/// cannot observe directly); fails after [`TIMEOUT`] saying `what`.
pub async fn eventually<F: std::future::Future<Output = bool>>(what: &str, check: impl Fn() -> F) {
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "never happened: {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
