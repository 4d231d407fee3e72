//! Shared helpers for the integration tests: a real server on 127.0.0.1:0
//! with its own temporary directory, a raw HTTP/1.1 client, a WebSocket
//! client that speaks the JSON protocol, and a raw WebSocket reader for
//! clients that must misbehave (never read, never answer pings).
//!
//! Every wait here is bounded by [`TIMEOUT`], which is a failure bound only:
//! no test passes because something took a certain time.

// Each test binary uses its own subset of these helpers.
#![allow(dead_code)]

pub mod redis;

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
    let now = roomcast::auth::now();
    let rooms: Vec<String> = rooms.iter().map(|r| (*r).to_owned()).collect();
    let secret = roomcast::auth::Secret::new(TEST_SECRET.to_vec()).unwrap();
    roomcast::auth::jwt::sign(
        &roomcast::auth::jwt::Issue {
            sub: user,
            rooms: &rooms,
            moderator: false,
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
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let path = std::env::temp_dir().join(format!(
            "roomcast-test-{tag}-{}-{}-{nanos:x}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
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
/// would be global ones (`tests/fairness.rs` sets them).
pub fn config() -> Config {
    Config::default()
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

/// A parsed HTTP/1.1 response.
#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    /// Header names in lowercase, in the order received.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// The first value of header `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON; panics with the body if it is not.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {:?}", self.text()))
    }

    /// Asserts this is a JSON error `{"error", "message"}` with `status`.
    pub fn assert_json_error(&self, status: u16) -> Value {
        assert_eq!(self.status, status, "body: {}", self.text());
        assert!(
            self.header("content-type")
                .is_some_and(|t| t.starts_with("application/json")),
            "error content-type: {:?}",
            self.header("content-type")
        );
        let body = self.json();
        assert!(body["error"].is_string(), "no `error` code in {body}");
        assert!(
            body["message"].as_str().is_some_and(|m| !m.is_empty()),
            "no `message` in {body}"
        );
        body
    }
}

/// A TCP connection to `addr` from the local address `from`: on Linux all
/// of 127.0.0.0/8 reaches the loopback interface, so `127.0.0.2` and
/// `127.0.0.3` are two clients as far as per-address limits go.
pub async fn connect_from(addr: SocketAddr, from: &str) -> TcpStream {
    let from: std::net::IpAddr = from.parse().expect("an IP address");
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .bind(SocketAddr::new(from, 0))
        .expect("bind the source address");
    tokio::time::timeout(TIMEOUT, socket.connect(addr))
        .await
        .expect("connect timed out")
        .expect("connect")
}

/// Sends `request` from the local address `from` and reads one response.
pub async fn http_from(addr: SocketAddr, from: &str, request: &[u8]) -> HttpResponse {
    let mut stream = connect_from(addr, from).await;
    stream.write_all(request).await.expect("send request");
    tokio::time::timeout(TIMEOUT, read_response(&mut stream, false))
        .await
        .expect("no HTTP response in time")
}

/// A WebSocket upgrade to `path` (a claim added, see [`with_claim`]) from
/// the local address `from` with `extra` headers: the socket, or the refusal.
pub async fn ws_from(
    addr: SocketAddr,
    from: &str,
    path: &str,
    extra: &[(&str, &str)],
) -> Result<RawWs, HttpResponse> {
    RawWs::try_handshake(connect_from(addr, from).await, addr, path, extra).await
}

/// Sends `request` as is on a new connection and reads one response.
/// `head` says the request was a HEAD (its response has no body).
pub async fn http_raw(addr: SocketAddr, request: &[u8], head: bool) -> HttpResponse {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(request).await.expect("send request");
    tokio::time::timeout(TIMEOUT, read_response(&mut stream, head))
        .await
        .expect("no HTTP response in time")
}

/// Reads one response: the head, then a body framed by `content-length`,
/// chunked encoding, or the end of the connection.
pub async fn read_response(stream: &mut TcpStream, head: bool) -> HttpResponse {
    read_response_of(stream, head).await
}

/// [`read_response`] of a GET, from any reader.
pub async fn read_response_from(stream: &mut (impl tokio::io::AsyncRead + Unpin)) -> HttpResponse {
    read_response_of(stream, false).await
}

async fn read_response_of(
    stream: &mut (impl tokio::io::AsyncRead + Unpin),
    head: bool,
) -> HttpResponse {
    let mut buf = Vec::new();
    let header_end = loop {
        if let Some(i) = find(&buf, b"\r\n\r\n") {
            break i;
        }
        assert!(buf.len() < 64 << 10, "response head over 64 KiB");
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await.expect("read response");
        assert!(
            n > 0,
            "connection closed before a full response head: {buf:?}"
        );
        buf.extend_from_slice(&chunk[..n]);
    };
    let head_text = String::from_utf8(buf[..header_end].to_vec()).expect("UTF-8 head");
    let mut lines = head_text.split("\r\n");
    let status_line = lines.next().expect("status line");
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let headers: Vec<(String, String)> = lines
        .map(|l| {
            let (n, v) = l.split_once(':').expect("header line");
            (n.trim().to_ascii_lowercase(), v.trim().to_owned())
        })
        .collect();
    let mut rest = buf[header_end + 4..].to_vec();
    let mut res = HttpResponse {
        status,
        headers,
        body: Vec::new(),
    };
    if head || status == 304 || status == 204 || status == 101 || (100..200).contains(&status) {
        return res;
    }
    if let Some(len) = res.header("content-length") {
        let len: usize = len.parse().expect("numeric content-length");
        while rest.len() < len {
            let mut chunk = vec![0u8; (len - rest.len()).min(64 << 10)];
            let n = stream.read(&mut chunk).await.expect("read body");
            assert!(
                n > 0,
                "connection closed {} bytes into a {len}-byte body",
                rest.len()
            );
            rest.extend_from_slice(&chunk[..n]);
        }
        rest.truncate(len);
        res.body = rest;
    } else if res
        .header("transfer-encoding")
        .is_some_and(|t| t.eq_ignore_ascii_case("chunked"))
    {
        stream.read_to_end(&mut rest).await.expect("read body");
        res.body = dechunk(&rest);
    } else {
        stream.read_to_end(&mut rest).await.expect("read body");
        res.body = rest;
    }
    res
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let line_end = find(data, b"\r\n").expect("chunk size line");
        let size_text = std::str::from_utf8(&data[..line_end]).expect("chunk size");
        let size = usize::from_str_radix(size_text.split(';').next().unwrap().trim(), 16)
            .expect("hex chunk size");
        data = &data[line_end + 2..];
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

/// A WebSocket client speaking roomcast's JSON protocol.
pub struct Client {
    pub ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl Client {
    pub async fn connect(url: &str) -> Self {
        let (ws, response) = tokio::time::timeout(TIMEOUT, tokio_tungstenite::connect_async(url))
            .await
            .expect("WebSocket handshake timed out")
            .unwrap_or_else(|e| panic!("WebSocket upgrade to {url} failed: {e}"));
        assert_eq!(response.status(), 101);
        Self { ws }
    }

    /// The next message other than pings and pongs; `None` at the end of
    /// the stream. Fails after [`TIMEOUT`].
    pub async fn recv(&mut self) -> Option<Message> {
        loop {
            let next = tokio::time::timeout(TIMEOUT, self.ws.next())
                .await
                .unwrap_or_else(|_| panic!("nothing received within {TIMEOUT:?}"));
            match next {
                None => return None,
                Some(Err(e)) => panic!("WebSocket read failed: {e}"),
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                Some(Ok(m)) => return Some(m),
            }
        }
    }

    /// The next JSON event; fails on anything else (a close included).
    pub async fn recv_json(&mut self) -> Value {
        match self.recv().await {
            Some(Message::Text(t)) => serde_json::from_str(&t)
                .unwrap_or_else(|e| panic!("server sent invalid JSON ({e}): {t}")),
            other => panic!("expected a JSON event, got {other:?}"),
        }
    }

    /// The next event, which must have `type` == `kind`.
    pub async fn expect(&mut self, kind: &str) -> Value {
        let event = self.recv_json().await;
        assert_eq!(event["type"], kind, "expected a {kind} event, got {event}");
        event
    }

    /// The next event, which must be an `error` with `code`.
    pub async fn expect_error(&mut self, code: &str) -> Value {
        let event = self.expect("error").await;
        assert_eq!(event["code"], code, "wrong error: {event}");
        assert!(
            event["message"].as_str().is_some_and(|m| !m.is_empty()),
            "error without a message: {event}"
        );
        event
    }

    /// Asserts the next event is an `error` with `code` whose message
    /// mentions `part`; returns it.
    pub async fn expect_error_saying(&mut self, code: &str, part: &str) -> Value {
        let event = self.expect_error(code).await;
        let message = event["message"].as_str().unwrap_or_default();
        assert!(message.contains(part), "expected {part:?} in {event}");
        event
    }

    /// Sends a message with `url` (an upload's) as its attachment.
    pub async fn send_attachment(&mut self, content: &str, url: &str) {
        self.send_json(serde_json::json!({
            "type": "message", "content": content, "attachment": {"url": url}
        }))
        .await;
    }

    /// Reads events until one of type `kind`, returning it (for setups whose
    /// ordering is not under test).
    pub async fn skip_to(&mut self, kind: &str) -> Value {
        loop {
            let event = self.recv_json().await;
            if event["type"] == kind {
                return event;
            }
        }
    }

    /// Reads events until one whose `type` is one of `kinds`.
    pub async fn skip_to_any(&mut self, kinds: &[&str]) -> Value {
        loop {
            let event = self.recv_json().await;
            if kinds.iter().any(|k| event["type"] == *k) {
                return event;
            }
        }
    }

    pub async fn send_json(&mut self, value: Value) {
        self.send(Message::text(value.to_string())).await;
    }

    pub async fn send(&mut self, message: Message) {
        tokio::time::timeout(TIMEOUT, self.ws.send(message))
            .await
            .expect("send timed out")
            .expect("send failed");
    }

    /// Sends `ping` and expects `pong` as the very next event: proves the
    /// connection is open and nothing else was queued before it.
    pub async fn roundtrip(&mut self) {
        self.send_json(serde_json::json!({"type": "ping"})).await;
        self.expect("pong").await;
    }

    /// Posts `content` and returns the broadcast `message` as this client
    /// sees it (the next event must be that message).
    pub async fn post(&mut self, content: &str) -> Value {
        self.send_json(serde_json::json!({"type": "message", "content": content}))
            .await;
        let m = self.expect("message").await;
        assert_eq!(m["content"], content);
        m
    }

    /// Reads until the server's close frame, skipping data frames, and
    /// asserts its code.
    pub async fn expect_close(&mut self, code: u16) {
        loop {
            match self.recv().await {
                Some(Message::Close(Some(frame))) => {
                    assert_eq!(
                        u16::from(frame.code),
                        code,
                        "closed with {:?} ({})",
                        frame.code,
                        frame.reason
                    );
                    return;
                }
                Some(Message::Close(None)) => panic!("close frame without a code; wanted {code}"),
                Some(_) => continue,
                None => panic!("stream ended without a close frame; wanted {code}"),
            }
        }
    }

    /// Sends a normal close and waits for the stream to end.
    pub async fn close(mut self) {
        let _ = self
            .ws
            .close(Some(tokio_tungstenite::tungstenite::protocol::CloseFrame {
                code: CloseCode::Normal,
                reason: "bye".into(),
            }))
            .await;
        while let Ok(Some(Ok(_))) = tokio::time::timeout(TIMEOUT, self.ws.next()).await {}
    }
}

/// A WebSocket client that asked for a small receive buffer (so the kernel
/// stops absorbing frames early) and reads nothing until the test says so.
pub async fn stalled_client(server: &Server, path: &str) -> RawWs {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
    let stream = socket.connect(server.addr).await.expect("connect");
    RawWs::handshake(stream, server.addr, path).await
}

/// A WebSocket client whose socket asked for a 4 MiB receive buffer (the
/// kernel caps it at `net.core.rmem_max`, at least 208 KiB by default), so
/// what the server sends it in a test fits the kernel's buffers however
/// late the test reads it: the server never finds it refusing bytes.
pub async fn roomy_client(server: &Server, path: &str) -> RawWs {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4 << 20).expect("SO_RCVBUF");
    let stream = socket.connect(server.addr).await.expect("connect");
    RawWs::handshake(stream, server.addr, path).await
}

/// Posts 30 000-character messages from `fast` until the server reports a
/// slow consumer dropped; returns how many were posted. Needs a server with
/// `rate(0)` and `max_message_chars` of at least 30 000. `fast` posts in
/// lockstep (each message waits for its own echo), so its own queue never
/// holds more than one frame. A `leave` arriving between the echoes (the
/// dropped member's) is returned with the count rather than failing the read;
/// a late `join` of the stalled member is skipped.
pub async fn flood_until_a_slow_consumer_is_dropped(
    server: &Server,
    fast: &mut Client,
) -> (u64, Option<Value>) {
    let content = "z".repeat(30_000);
    let mut sent = 0u64;
    let mut leave = None;
    while server.metric("roomcast_slow_consumers_dropped_total").await == 0 {
        assert!(
            sent < 4000,
            "no slow consumer was dropped after {sent} messages"
        );
        for _ in 0..16 {
            fast.send_json(serde_json::json!({"type": "message", "content": &content}))
                .await;
            // Presence may arrive between the echoes: the stalled member's
            // `join` (its session joins the hub after its 101 was sent, so
            // possibly after `fast`'s), and its `leave` once it is dropped.
            let echo = loop {
                let event = fast.recv_json().await;
                match event["type"].as_str() {
                    Some("join") => {}
                    Some("leave") => leave = Some(event),
                    _ => break event,
                }
            };
            assert_eq!(echo["type"], "message", "expected the echo, got {echo}");
            sent += 1;
        }
    }
    (sent, leave)
}

/// A WebSocket opened by hand over a plain TCP stream, for clients that
/// must misbehave: it never answers pings and reads only when told to.
pub struct RawWs {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

/// One frame as the server sent it.
#[derive(Debug)]
pub struct RawFrame {
    pub opcode: u8,
    pub payload: Vec<u8>,
}

impl RawFrame {
    /// The close code of a close frame.
    pub fn close_code(&self) -> Option<u16> {
        (self.opcode == 8 && self.payload.len() >= 2)
            .then(|| u16::from_be_bytes([self.payload[0], self.payload[1]]))
    }
}

impl RawWs {
    /// Performs the handshake on `stream` and asserts `101`.
    pub async fn handshake(stream: TcpStream, addr: SocketAddr, path: &str) -> Self {
        match Self::try_handshake(stream, addr, path, &[]).await {
            Ok(ws) => ws,
            Err(res) => panic!("upgrade refused: {} {}", res.status, res.text()),
        }
    }

    /// Performs the handshake on `stream` with `extra` headers: the
    /// WebSocket after `101`, or the refusal (read to its end).
    pub async fn try_handshake(
        mut stream: TcpStream,
        addr: SocketAddr,
        path: &str,
        extra: &[(&str, &str)],
    ) -> Result<Self, HttpResponse> {
        let path = with_claim(path);
        let mut req = format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
        );
        for (name, value) in extra {
            req.push_str(&format!("{name}: {value}\r\n"));
        }
        req.push_str("\r\n");
        stream
            .write_all(req.as_bytes())
            .await
            .expect("send handshake");
        let mut buf = Vec::new();
        let end = loop {
            if let Some(i) = find(&buf, b"\r\n\r\n") {
                break i;
            }
            let mut chunk = [0u8; 1024];
            let n = tokio::time::timeout(TIMEOUT, stream.read(&mut chunk))
                .await
                .expect("handshake answer timed out")
                .expect("read handshake answer");
            assert!(n > 0, "closed during handshake");
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
        if !head.starts_with("HTTP/1.1 101") {
            // Hand the bytes read so far back to the response reader.
            let mut replay = std::io::Cursor::new(buf).chain(stream);
            return Err(
                tokio::time::timeout(TIMEOUT, read_response_from(&mut replay))
                    .await
                    .expect("refusal body timed out"),
            );
        }
        // RFC 6455's own example key and accept value.
        assert!(
            head.to_ascii_lowercase()
                .contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo="),
            "wrong accept key: {head}"
        );
        buf.drain(..end + 4);
        Ok(Self { stream, buf })
    }

    /// Wraps a stream whose handshake is already done.
    pub fn from_stream(stream: TcpStream) -> Self {
        Self {
            stream,
            buf: Vec::new(),
        }
    }

    pub async fn connect(addr: SocketAddr, path: &str) -> Self {
        let stream = TcpStream::connect(addr).await.expect("connect");
        Self::handshake(stream, addr, path).await
    }

    /// Reads one whole frame (server frames are never masked).
    pub async fn read_frame(&mut self) -> RawFrame {
        tokio::time::timeout(TIMEOUT, self.read_frame_inner())
            .await
            .expect("no frame within the timeout")
    }

    async fn fill(&mut self, n: usize) {
        while self.buf.len() < n {
            let mut chunk = vec![0u8; 64 << 10];
            let got = self.stream.read(&mut chunk).await.expect("read frame");
            assert!(
                got > 0,
                "connection ended mid-frame or before a close frame"
            );
            self.buf.extend_from_slice(&chunk[..got]);
        }
    }

    async fn read_frame_inner(&mut self) -> RawFrame {
        self.fill(2).await;
        assert_eq!(self.buf[0] & 0x80, 0x80, "roomcast sends only final frames");
        assert_eq!(self.buf[1] & 0x80, 0, "server frames must not be masked");
        let opcode = self.buf[0] & 0x0f;
        let (header, len) = match self.buf[1] & 0x7f {
            126 => {
                self.fill(4).await;
                (
                    4,
                    usize::from(u16::from_be_bytes([self.buf[2], self.buf[3]])),
                )
            }
            127 => {
                self.fill(10).await;
                let mut b = [0u8; 8];
                b.copy_from_slice(&self.buf[2..10]);
                (
                    10,
                    usize::try_from(u64::from_be_bytes(b)).expect("frame length"),
                )
            }
            n => (2, usize::from(n)),
        };
        self.fill(header + len).await;
        let payload = self.buf[header..header + len].to_vec();
        self.buf.drain(..header + len);
        RawFrame { opcode, payload }
    }

    /// Reads frames until a close frame and returns its code; counts the
    /// pings seen on the way.
    pub async fn read_until_close(&mut self) -> (u16, usize) {
        let mut pings = 0;
        loop {
            let frame = self.read_frame().await;
            match frame.opcode {
                8 => return (frame.close_code().expect("close frame with a code"), pings),
                9 => pings += 1,
                _ => {}
            }
        }
    }

    /// Sends a masked text frame.
    pub async fn send_text(&mut self, text: &str) {
        self.send_frame(0x81, text.as_bytes(), true).await;
    }

    /// Sends one frame: `first` is the FIN bit and opcode byte; `masked`
    /// false makes a frame no client may send.
    pub async fn send_frame(&mut self, first: u8, payload: &[u8], masked: bool) {
        let mask_bit = if masked { 0x80u8 } else { 0 };
        let mut frame = vec![first];
        match payload.len() {
            n if n < 126 => frame.push(mask_bit | n as u8),
            n if n <= 0xffff => {
                frame.push(mask_bit | 126);
                frame.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                frame.push(mask_bit | 127);
                frame.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        if masked {
            let mask = [0x12u8, 0x34, 0x56, 0x78];
            frame.extend_from_slice(&mask);
            frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        } else {
            frame.extend_from_slice(payload);
        }
        self.stream.write_all(&frame).await.expect("send frame");
    }

    /// Reads frames until a text frame and parses it as JSON.
    pub async fn read_json(&mut self) -> Value {
        loop {
            let frame = self.read_frame().await;
            match frame.opcode {
                1 => return serde_json::from_slice(&frame.payload).expect("JSON text frame"),
                9 | 10 => continue,
                other => panic!("expected a text frame, got opcode {other}: {frame:?}"),
            }
        }
    }
}

/// The real `roomcast` binary, started on a free port in its own directory
/// (for what only a process can show: a `kill -9`, its exit code, its
/// output).
pub struct Binary {
    pub child: std::process::Child,
    pub addr: SocketAddr,
}

impl Binary {
    /// Starts the binary in `dir` with `args` (after `--port 0`) and waits
    /// for its `listening on` line.
    pub fn start(dir: &Path, args: &[&str]) -> Self {
        use std::io::BufRead;
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_roomcast"))
            .args(["--port", "0"])
            .args(args)
            .current_dir(dir)
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit())
            .spawn()
            .expect("start the roomcast binary");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut line = String::new();
        std::io::BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read the listening line");
        let addr = line
            .trim()
            .strip_prefix("listening on http://")
            .unwrap_or_else(|| panic!("unexpected first line: {line:?}"))
            .parse()
            .expect("an address");
        Self { child, addr }
    }

    /// Runs the binary in `dir` with `args` to its end; returns its exit
    /// code, what it wrote to stdout and to stderr (for start-up errors).
    pub fn run_to_end(dir: &Path, args: &[&str]) -> (Option<i32>, String, String) {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_roomcast"))
            .args(["--port", "0"])
            .args(args)
            .current_dir(dir)
            .output()
            .expect("run the roomcast binary");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// SIGKILL, as a crash or an OOM kill would: nothing runs after it.
    pub fn kill9(mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("reap");
    }

    pub async fn join(&self, room: &str, user: &str) -> (Client, Value) {
        let path = with_claim(&format!("/ws/{room}/{user}"));
        let mut c = Client::connect(&format!("ws://{}{path}", self.addr)).await;
        let welcome = c.expect("welcome").await;
        (c, welcome)
    }

    pub async fn get(&self, path: &str) -> HttpResponse {
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            self.addr
        );
        http_raw(self.addr, req.as_bytes(), false).await
    }

    pub async fn metric(&self, name: &str) -> u64 {
        metric_value(&self.get("/metrics").await.text(), name)
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
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
