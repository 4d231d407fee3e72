//! The S3 wire: path-style requests (`http://endpoint/bucket/key`) over
//! plain HTTP/1.1 keep-alive connections, kept idle for reuse in a small
//! pool (`pool.rs`), each request signed with SigV4 and bounded in time;
//! answers' bodies are read within a size bound. It knows buckets, keys and
//! status codes, nothing of uploads.
//!
//! A request whose body is in memory goes on an idle connection if there
//! is one, and if that fails before an answer's head arrives (the server
//! closed it just as we sent: the stale keep-alive race), once more on a
//! new connection. A streamed body is read once, so it goes on a new
//! connection of its own and is never sent again.
//!
//! Every answer (even an error status) proves the service is there; a
//! connection that fails, times out, a `5xx` or a `403` marks it
//! unreachable until the next answer, which is what `/health` reports. An
//! answer's status alone cannot tell a missing bucket (`404 NoSuchBucket`)
//! from a missing object, so the bucket's probe says which
//! ([`S3Client::bucket_refused`]): that holds until an answer in `2xx`,
//! which only a bucket that exists gives.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::pool::Pool;
pub use super::pool::S3Body;
use super::sigv4::{self, Credentials, Scope, Timestamp};

/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Requests to the bucket waiting for their answer at once. Each holds a
/// TCP connection (a kept-alive one or a new one) until its answer's head
/// arrives, and anyone may cause one (a `GET /uploads/...` reads the
/// upload's record); past it a request waits for a place within its own
/// timeout, then fails as unavailable without counting against the
/// bucket's health. The server's sockets to the bucket are these, the idle
/// ones kept (16, `pool.rs`), and the answers whose bodies are being read
/// (each by a caller that reads it within its own time limit).
pub const MAX_IN_FLIGHT: usize = 64;
/// How long a kept connection may take to be ready for the next request.
/// One whose last answer was read to its end is ready as soon as its task
/// has run; one still sending the last request's body (the bucket answered
/// before reading it all) is not, and a new connection is quicker than
/// waiting for it (that wait would count against the call's time limit,
/// and so against the bucket's health).
const READY_WAIT: Duration = Duration::from_millis(250);
/// Largest error or listing body read back.
pub const MAX_XML_BYTES: usize = 1 << 20;

/// A request body.
pub type ReqBody = UnsyncBoxBody<Bytes, io::Error>;

/// A request body holding `bytes` (none if empty).
fn bytes_body(bytes: Bytes) -> ReqBody {
    Full::new(bytes)
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// What a call sends.
enum Payload {
    /// Bytes in memory (none if empty): sent again as they are when a
    /// kept-alive connection fails under them.
    Bytes(Bytes),
    /// A body read as it is sent (a staged upload's file): it cannot be
    /// sent twice, so it goes on a new connection of its own.
    Stream(ReqBody),
}

/// One request to the bucket: built with [`Call::new`] and the setters,
/// sent with [`S3Client::send`] or [`S3Client::expect_ok`].
pub struct Call<'a> {
    method: Method,
    key: Option<&'a str>,
    query: Vec<(String, String)>,
    headers: Vec<(String, String)>,
    payload: Payload,
    payload_hash: String,
    timeout: Duration,
}

impl<'a> Call<'a> {
    /// `method` on `key` (`None`: the bucket), without a body, answered
    /// within `timeout`.
    pub fn new(method: Method, key: Option<&'a str>, timeout: Duration) -> Self {
        Self {
            method,
            key,
            query: Vec::new(),
            headers: Vec::new(),
            payload: Payload::Bytes(Bytes::new()),
            payload_hash: sigv4::sha256_hex(b""),
            timeout,
        }
    }

    /// Adds query pairs (not encoded).
    #[must_use]
    pub fn queries(mut self, pairs: Vec<(String, String)>) -> Self {
        self.query.extend(pairs);
        self
    }

    /// Adds signed headers (lowercase names).
    #[must_use]
    pub fn headers(mut self, headers: Vec<(String, String)>) -> Self {
        self.headers.extend(headers);
        self
    }

    /// Sends `bytes`, whose SHA-256 is `payload_hash` (lowercase hex); if a
    /// kept-alive connection fails under them, they are sent again on a new
    /// one.
    #[must_use]
    pub fn bytes(mut self, bytes: impl Into<Bytes>, payload_hash: String) -> Self {
        self.payload = Payload::Bytes(bytes.into());
        self.payload_hash = payload_hash;
        self
    }

    /// Streams `body`, whose SHA-256 is `payload_hash` (lowercase hex), on
    /// a new connection: a body read once is never risked on a kept-alive
    /// connection the server may be closing, as it could not be sent again.
    #[must_use]
    pub fn stream(mut self, body: ReqBody, payload_hash: String) -> Self {
        self.payload = Payload::Stream(body);
        self.payload_hash = payload_hash;
        self
    }
}

/// Where the service is and which bucket to use, from
/// `s3://BUCKET?endpoint=http://host:port&region=R`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Target {
    /// The bucket.
    pub bucket: String,
    /// `http://` and the authority: the start of every URL.
    pub endpoint: String,
    /// The host to connect to.
    pub host: String,
    /// The port to connect to.
    pub port: u16,
    /// The `Host` header (and signed host): `host[:port]`, as a browser
    /// writes it (the host in lowercase, no `:80`).
    pub authority: String,
    /// The signing region.
    pub region: String,
    /// The keys; `None` until the binary reads them from the environment.
    pub credentials: Option<Credentials>,
}

impl PartialEq for Credentials {
    fn eq(&self, other: &Self) -> bool {
        self.access_key() == other.access_key()
    }
}
impl Eq for Credentials {}

impl S3Target {
    /// Parses `s3://BUCKET?endpoint=http://host[:port]&region=R` (region
    /// defaults to `us-east-1`). Only `http` endpoints: this build has no
    /// TLS client.
    pub fn parse(url: &str) -> Result<Self, String> {
        let rest = url
            .strip_prefix("s3://")
            .ok_or("expected s3://BUCKET?endpoint=http://host:port&region=R")?;
        let (bucket, query) = rest.split_once('?').unwrap_or((rest, ""));
        let bucket_ok = (3..=63).contains(&bucket.len())
            && bucket
                .bytes()
                .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.'));
        if !bucket_ok {
            return Err(format!(
                "{bucket:?} is not a bucket name (3 to 63 of a-z, 0-9, '-', '.')"
            ));
        }
        let (mut endpoint, mut region) = (None, "us-east-1".to_owned());
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let v = percent_encoding::percent_decode_str(v)
                .decode_utf8()
                .map_err(|_| format!("{k}: not UTF-8"))?
                .into_owned();
            match k {
                "endpoint" => endpoint = Some(v),
                "region"
                    if !v.is_empty()
                        && v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') =>
                {
                    region = v;
                }
                "region" => return Err(format!("region {v:?} is not a region name")),
                other => return Err(format!("unknown parameter {other:?} (endpoint, region)")),
            }
        }
        let endpoint = endpoint.ok_or("name the service: ?endpoint=http://host:port")?;
        if endpoint.starts_with("https://") {
            return Err(
                "https endpoints need a TLS client this build does not have; reach the \
                 service over http (a private network or a local TLS-terminating proxy)"
                    .into(),
            );
        }
        let given = endpoint
            .strip_prefix("http://")
            .ok_or("the endpoint must be http://host[:port]")?
            .trim_end_matches('/');
        let uri: http::uri::Authority = given
            .parse()
            .map_err(|_| format!("{endpoint:?} is not http://host[:port]"))?;
        let plain = given
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b':' | b'[' | b']'));
        if !plain || uri.host().is_empty() {
            return Err(format!(
                "{endpoint:?} is not http://host[:port] (no path, no user)"
            ));
        }
        // Presigned URLs sign the `Host` a browser will send, and a browser
        // writes the host in lowercase and leaves out http's default port:
        // signed as given, `http://MinIO:80` would fail every browser PUT
        // and download with SignatureDoesNotMatch.
        let host = uri.host().to_ascii_lowercase();
        let port = uri.port_u16().unwrap_or(80);
        let authority = match port {
            80 => host.clone(),
            port => format!("{host}:{port}"),
        };
        Ok(Self {
            bucket: bucket.to_owned(),
            host: host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned(),
            port,
            endpoint: format!("http://{authority}"),
            authority,
            region,
            credentials: None,
        })
    }

    /// The same target signing with `credentials`.
    #[must_use]
    pub fn with_credentials(mut self, credentials: Credentials) -> Self {
        self.credentials = Some(credentials);
        self
    }
}

/// Why a request to S3 failed.
#[derive(Debug)]
pub enum S3Error {
    /// No answer: the service is down or unreachable.
    Unreachable(String),
    /// An answer other than the one expected, with S3's error code.
    Status(StatusCode, String),
    /// An answer larger than the caller's bound.
    TooLarge,
    /// An answer that is not what S3 sends (a `2xx` without a length, an
    /// error in a `200`'s body).
    Invalid(String),
}

impl S3Error {
    /// Whether S3 said the object does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::Status(StatusCode::NOT_FOUND, _))
    }
}

impl std::fmt::Display for S3Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Unreachable(why) => write!(f, "object storage unreachable: {why}"),
            Self::Status(status, code) => write!(f, "object storage answered {status} {code}"),
            Self::TooLarge => write!(f, "object storage sent more than expected"),
            Self::Invalid(why) => write!(f, "object storage answered oddly: {why}"),
        }
    }
}

/// One bucket on one service, and whether it answered last time.
#[derive(Debug)]
pub struct S3Client {
    target: S3Target,
    credentials: Credentials,
    reachable: AtomicBool,
    last_failure: Mutex<String>,
    /// Why the last probe of the bucket was refused, until an answer in
    /// `2xx`: the answers in between (a `404` for a key) prove the service
    /// is there, not the bucket.
    refused: Mutex<Option<String>>,
    /// Places for requests waiting for their answer ([`MAX_IN_FLIGHT`]).
    in_flight: tokio::sync::Semaphore,
    /// Idle keep-alive connections; shared with the answers' bodies, which
    /// give their connection back at their end.
    pool: Arc<Pool>,
}

impl S3Client {
    /// A client for `target`, which must carry credentials.
    pub fn new(target: S3Target) -> Result<Self, String> {
        let credentials = target
            .credentials
            .clone()
            .ok_or("the S3 media store needs AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY")?;
        Ok(Self {
            target,
            credentials,
            reachable: AtomicBool::new(true),
            last_failure: Mutex::new(String::new()),
            refused: Mutex::new(None),
            in_flight: tokio::sync::Semaphore::new(MAX_IN_FLIGHT),
            pool: Arc::default(),
        })
    }

    /// The target.
    pub fn target(&self) -> &S3Target {
        &self.target
    }

    /// `None` while the service answers and the bucket's last probe was
    /// not refused since an answer in `2xx`; otherwise why not.
    pub fn degraded(&self) -> Option<String> {
        if !self.reachable.load(Ordering::Acquire) {
            return Some(
                self.last_failure
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .clone(),
            );
        }
        self.refused
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Records that the bucket's probe was answered with a refusal (`why`):
    /// the client is degraded until an answer in `2xx`.
    pub fn bucket_refused(&self, why: &str) {
        let was = self
            .refused
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .replace(format!("media store: {why}"));
        if was.is_none() {
            tracing::warn!("the media store's bucket fails: {why}");
        }
    }

    /// Records whether the service answered; logs only the changes.
    fn mark(&self, ok: bool, why: &str) {
        if !ok {
            *self.last_failure.lock().unwrap_or_else(|p| p.into_inner()) =
                format!("media store: {why}");
        }
        let was = self.reachable.swap(ok, Ordering::AcqRel);
        match (was, ok) {
            (true, false) => tracing::warn!("the media store's bucket fails: {why}"),
            (false, true) => tracing::info!("the media store's bucket answers again"),
            _ => {}
        }
    }

    fn scope(&self) -> Scope<'_> {
        Scope {
            region: &self.target.region,
            service: "s3",
        }
    }

    /// `/bucket` or `/bucket/key`, encoded.
    fn path(&self, key: Option<&str>) -> String {
        match key {
            None => format!("/{}", self.target.bucket),
            Some(key) => format!("/{}/{}", self.target.bucket, sigv4::uri_encode(key, true)),
        }
    }

    /// A presigned URL for `method` on `key`, valid `ttl` from `now`; every
    /// header in `headers` (lowercase) must be sent exactly so.
    pub fn presign(
        &self,
        method: &Method,
        key: &str,
        headers: &[(&str, String)],
        now: SystemTime,
        ttl: Duration,
    ) -> String {
        self.presign_with_query(method, key, headers, Vec::new(), now, ttl)
    }

    /// [`S3Client::presign`] with query pairs (not encoded) signed into the
    /// URL too, such as `response-content-disposition`: changing one
    /// breaks the signature.
    pub fn presign_with_query(
        &self,
        method: &Method,
        key: &str,
        headers: &[(&str, String)],
        query: Vec<(String, String)>,
        now: SystemTime,
        ttl: Duration,
    ) -> String {
        let path = self.path(Some(key));
        let mut signed = vec![("host".to_owned(), self.target.authority.clone())];
        signed.extend(headers.iter().map(|(n, v)| ((*n).to_owned(), v.clone())));
        let req = sigv4::Request {
            method: method.as_str(),
            path: &path,
            query,
            headers: signed,
        };
        let query = sigv4::presign(
            &self.credentials,
            &Timestamp::at(now),
            self.scope(),
            req,
            ttl.as_secs().max(1),
        );
        format!("{}{path}?{query}", self.target.endpoint)
    }

    /// Sends one signed request and returns the answer whatever its
    /// status. A wait for a place among [`MAX_IN_FLIGHT`], then the
    /// exchange up to the answer's head, each take at most the call's
    /// timeout: only the exchange's own time judges the bucket. The
    /// exchange includes a second try on a new connection when a
    /// kept-alive one fails (see `exchange`); a failure so retried is not
    /// the bucket's.
    pub async fn send(&self, call: Call<'_>) -> Result<Response<S3Body>, S3Error> {
        let Ok(Ok(_place)) = tokio::time::timeout(call.timeout, self.in_flight.acquire()).await
        else {
            return Err(S3Error::Unreachable(format!(
                "{MAX_IN_FLIGHT} requests to the media store were waiting already"
            )));
        };
        let Call {
            method,
            key,
            query,
            headers: extra,
            payload,
            payload_hash,
            timeout,
        } = call;
        let path = self.path(key);
        let time = Timestamp::at(SystemTime::now());
        let mut headers = vec![
            ("host".to_owned(), self.target.authority.clone()),
            ("x-amz-content-sha256".to_owned(), payload_hash.clone()),
            ("x-amz-date".to_owned(), time.amz_date().to_owned()),
        ];
        headers.extend(extra);
        let signed = sigv4::Request {
            method: method.as_str(),
            path: &path,
            query,
            headers,
        };
        let authorization = sigv4::authorization(
            &self.credentials,
            &time,
            self.scope(),
            &signed,
            &payload_hash,
        );
        let mut uri = path.clone();
        if !signed.query.is_empty() {
            let pairs: Vec<String> = signed
                .query
                .iter()
                .map(|(k, v)| {
                    format!(
                        "{}={}",
                        sigv4::uri_encode(k, false),
                        sigv4::uri_encode(v, false)
                    )
                })
                .collect();
            uri = format!("{uri}?{}", pairs.join("&"));
        }
        let mut builder = Request::builder().method(method.clone()).uri(uri);
        for (name, value) in &signed.headers {
            builder = builder.header(name.as_str(), value.as_str());
        }
        let head = builder
            .header(header::AUTHORIZATION, authorization)
            .body(())
            .map_err(|e| S3Error::Unreachable(format!("cannot build the request: {e}")))?;

        let (answer, sender) =
            match tokio::time::timeout(timeout, self.exchange(&head, payload)).await {
                Ok(Ok(answer)) => answer,
                Ok(Err(why)) => {
                    self.mark(false, &why);
                    return Err(S3Error::Unreachable(why));
                }
                Err(_) => {
                    self.mark(false, "no answer in time");
                    return Err(S3Error::Unreachable("no answer in time".into()));
                }
            };
        // A 403 to our own signed request means keys or clock are wrong:
        // nothing will work until an operator fixes it.
        let failing = answer.status().is_server_error() || answer.status() == StatusCode::FORBIDDEN;
        self.mark(!failing, &format!("answered {}", answer.status()));
        if answer.status().is_success() {
            let was = self
                .refused
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take();
            if was.is_some() {
                tracing::info!("the media store's bucket answers again");
            }
        }
        let home = sender.map(|sender| (sender, Arc::clone(&self.pool)));
        Ok(answer.map(|body| S3Body::new(body, home)))
    }

    /// Sends `head` with `payload` and waits for the answer's head; returns
    /// it with the connection, if that may be kept once the answer is read.
    ///
    /// Bytes go on the most recently idle connection, if any. If the
    /// server closed it meanwhile, the next is tried; if sending on it
    /// fails before an answer's head arrives (the server closed it just as
    /// the request went: its keep-alive timeout fired), the bytes go once
    /// more on a new connection, and only that attempt's failure is
    /// returned. Every request we send with bytes (a `GET`, `HEAD`,
    /// `DELETE`, or `PUT` of a whole object or a copy) does the same when
    /// done twice, so sending it again is safe.
    ///
    /// A stream goes on a new connection, once, and that connection is not
    /// kept: it cannot be sent again if a reused connection failed under
    /// it, and when the bucket answers before reading all of it (a refusal
    /// mid-upload), the connection may be busy writing the rest long after
    /// the answer.
    async fn exchange(
        &self,
        head: &Request<()>,
        payload: Payload,
    ) -> Result<(Response<Incoming>, Option<SendRequest<ReqBody>>), String> {
        let bytes = match payload {
            Payload::Stream(body) => {
                let mut sender = self.connect().await?;
                let answer = sender
                    .send_request(with_body(head, body))
                    .await
                    .map_err(|e| e.to_string())?;
                return Ok((answer, None));
            }
            Payload::Bytes(bytes) => bytes,
        };
        while let Some(mut sender) = self.pool.take(Instant::now()) {
            // A pooled connection's answer was read to its end, so this is
            // at once ready, or an error if the server closed it since.
            if !matches!(
                tokio::time::timeout(READY_WAIT, sender.ready()).await,
                Ok(Ok(()))
            ) {
                continue;
            }
            match sender
                .send_request(with_body(head, bytes_body(bytes.clone())))
                .await
            {
                Ok(answer) => return Ok((answer, Some(sender))),
                Err(e) => {
                    tracing::debug!(
                        "a kept-alive connection to the bucket failed ({e}); again on a new one"
                    );
                    break;
                }
            }
        }
        let mut sender = self.connect().await?;
        let answer = sender
            .send_request(with_body(head, bytes_body(bytes)))
            .await
            .map_err(|e| e.to_string())?;
        Ok((answer, Some(sender)))
    }

    /// A new connection to the service, driven by a task of its own, which
    /// ends when the connection closes (or, idle, when its sender is
    /// dropped).
    async fn connect(&self) -> Result<SendRequest<ReqBody>, String> {
        let stream = tokio::time::timeout(
            CONNECT_TIMEOUT,
            TcpStream::connect((self.target.host.as_str(), self.target.port)),
        )
        .await
        .map_err(|_| "connecting timed out".to_owned())?
        .map_err(|e| format!("cannot connect to {}: {e}", self.target.authority))?;
        let _ = stream.set_nodelay(true);
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(sender)
    }

    /// Sends and expects a `2xx`; anything else becomes an error carrying
    /// S3's `<Code>`.
    pub async fn expect_ok(&self, call: Call<'_>) -> Result<Response<S3Body>, S3Error> {
        let timeout = call.timeout;
        let res = self.send(call).await?;
        if res.status().is_success() {
            return Ok(res);
        }
        let status = res.status();
        let code = match tokio::time::timeout(timeout, read_limited(res.into_body(), 8 << 10)).await
        {
            Ok(Ok(bytes)) => xml_value(&String::from_utf8_lossy(&bytes), "Code")
                .unwrap_or_default()
                .to_owned(),
            _ => String::new(),
        };
        Err(S3Error::Status(status, code))
    }
}

/// A request like `head` carrying `body`.
fn with_body(head: &Request<()>, body: ReqBody) -> Request<ReqBody> {
    let mut request = Request::new(body);
    *request.method_mut() = head.method().clone();
    *request.uri_mut() = head.uri().clone();
    *request.headers_mut() = head.headers().clone();
    request
}

/// The whole body, if it is at most `max` bytes.
pub async fn read_limited(body: S3Body, max: usize) -> Result<Bytes, S3Error> {
    match Limited::new(body, max).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e)
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            Err(S3Error::TooLarge)
        }
        Err(e) => Err(S3Error::Unreachable(format!("the answer was cut: {e}"))),
    }
}

/// The text of the first `<tag>…</tag>` in `xml`.
pub fn xml_value<'a>(xml: &'a str, tag: &str) -> Option<&'a str> {
    xml_values(xml, tag).next()
}

/// The texts of every `<tag>…</tag>` in `xml`, in order (flat: S3's
/// answers never nest a tag in itself).
pub fn xml_values<'a>(xml: &'a str, tag: &str) -> impl Iterator<Item = &'a str> {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let mut rest = xml;
    std::iter::from_fn(move || {
        let start = rest.find(&open)? + open.len();
        let len = rest[start..].find(&close)?;
        let value = &rest[start..start + len];
        rest = &rest[start + len + close.len()..];
        Some(value)
    })
}

/// XML text with its five predefined entities replaced.
pub fn xml_unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}

/// Seconds since the epoch of an ISO 8601 UTC time as S3 lists it
/// (`2026-12-02T16:50:00.000Z`).
pub fn parse_iso8601(s: &str) -> Option<u64> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || !s.ends_with('Z') {
        return None;
    }
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<u32>().ok();
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, se) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || se > 60 {
        return None;
    }
    let days = sigv4::days_from_civil(i64::from(y), mo, d);
    let secs = days * 86_400 + i64::from(h * 3600 + mi * 60 + se);
    u64::try_from(secs).ok()
}

/// Seconds since the epoch of an HTTP date (RFC 9110 IMF-fixdate, as S3
/// sends `Last-Modified`: `Wed, 02 Dec 2026 16:50:00 GMT`).
pub fn parse_http_date(s: &str) -> Option<u64> {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let (_, rest) = s.trim().split_once(", ")?;
    let mut parts = rest.split(' ');
    let (day, month, year, time, zone) = (
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
    );
    if zone != "GMT" || parts.next().is_some() || day.len() != 2 || year.len() != 4 {
        return None;
    }
    let month = MONTHS.iter().position(|m| *m == month)? + 1;
    let iso = format!("{year}-{month:02}-{day}T{time}Z");
    parse_iso8601(&iso)
}

/// A header value as text, if present and visible ASCII.
pub fn header_str(res: &Response<S3Body>, name: header::HeaderName) -> Option<&str> {
    res.headers()
        .get(name)
        .and_then(|v: &HeaderValue| v.to_str().ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A client of the bucket on 127.0.0.1:`port`.
    fn client_of(port: u16) -> S3Client {
        let target = S3Target::parse(&format!("s3://media?endpoint=http://127.0.0.1:{port}"))
            .unwrap()
            .with_credentials(Credentials::new("key", "secret"));
        S3Client::new(target).unwrap()
    }

    /// A bucket on 127.0.0.1 that answers every request `200` with a
    /// two-byte body and keeps the connection open. With `once`, it
    /// answers only the first request on each connection, and closes the
    /// connection when the next one arrives, unanswered: a server whose
    /// keep-alive timeout fires just as a request comes. Returns its port
    /// and a count of the connections it accepted.
    async fn bucket(once: bool) -> (u16, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&accepted);
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                counted.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut seen = Vec::new();
                    for answered in 0.. {
                        // A request's head, then as many bytes as it says.
                        let end = loop {
                            if let Some(at) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                                break at + 4;
                            }
                            let mut buf = [0u8; 4096];
                            match socket.read(&mut buf).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => seen.extend_from_slice(&buf[..n]),
                            }
                        };
                        let head = String::from_utf8_lossy(&seen[..end]).to_ascii_lowercase();
                        let length: usize = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .map_or(0, |v| v.trim().parse().unwrap());
                        while seen.len() < end + length {
                            let mut buf = [0u8; 4096];
                            match socket.read(&mut buf).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => seen.extend_from_slice(&buf[..n]),
                            }
                        }
                        seen.drain(..end + length);
                        if once && answered > 0 {
                            return;
                        }
                        let mut answer = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok".to_vec();
                        if head.starts_with("head ") {
                            answer.truncate(answer.len() - 2);
                        }
                        if socket.write_all(&answer).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        (port, accepted)
    }

    /// A `GET` of `k`, its body read.
    async fn get(client: &S3Client) -> Result<Bytes, S3Error> {
        let res = client
            .expect_ok(Call::new(Method::GET, Some("k"), Duration::from_secs(30)))
            .await?;
        read_limited(res.into_body(), 16).await
    }

    #[tokio::test]
    async fn requests_one_after_another_share_one_connection() {
        let (port, accepted) = bucket(false).await;
        let client = client_of(port);
        for _ in 0..3 {
            assert_eq!(get(&client).await.unwrap(), "ok");
            // Unread: a HEAD's answer has no body to read.
            client
                .expect_ok(Call::new(Method::HEAD, Some("k"), Duration::from_secs(30)))
                .await
                .unwrap();
            let put = Call::new(Method::PUT, Some("k"), Duration::from_secs(30))
                .bytes(&b"abc"[..], sigv4::sha256_hex(b"abc"));
            let res = client.expect_ok(put).await.unwrap();
            read_limited(res.into_body(), 16).await.unwrap();
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
        assert_eq!(client.pool.len(), 1);
    }

    #[tokio::test]
    async fn a_kept_alive_connection_closed_as_we_send_is_retried_on_a_new_one() {
        let (port, accepted) = bucket(true).await;
        let client = client_of(port);
        for n in 1..=3 {
            assert_eq!(get(&client).await.unwrap(), "ok", "request {n}");
            assert_eq!(accepted.load(Ordering::SeqCst), n);
        }
        assert_eq!(client.degraded(), None, "a retried failure was counted");
    }

    #[tokio::test]
    async fn a_streamed_body_goes_on_a_new_connection_never_kept() {
        let (port, accepted) = bucket(true).await;
        let client = client_of(port);
        get(&client).await.unwrap();
        assert_eq!(client.pool.len(), 1);
        // On the kept connection it would meet the close, and fail.
        let chunks = futures_util::stream::iter([Ok::<_, io::Error>(hyper::body::Frame::data(
            Bytes::from_static(b"abc"),
        ))]);
        let body = http_body_util::StreamBody::new(chunks).boxed_unsync();
        let put = Call::new(Method::PUT, Some("k"), Duration::from_secs(30))
            .headers(vec![("content-length".to_owned(), "3".to_owned())])
            .stream(body, sigv4::sha256_hex(b"abc"));
        let res = client.expect_ok(put).await.unwrap();
        assert_eq!(read_limited(res.into_body(), 16).await.unwrap(), "ok");
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
        assert_eq!(client.pool.len(), 1, "the stream's connection was kept");
        assert_eq!(client.degraded(), None);
    }

    /// A bucket that accepts connections and never answers: at most
    /// [`MAX_IN_FLIGHT`] requests connect to it at once; one more waits
    /// for a place and gives up at its own timeout, having opened nothing.
    #[tokio::test]
    async fn requests_waiting_for_the_bucket_are_bounded() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (accepted_tx, mut accepted) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                held.push(socket);
                let _ = accepted_tx.send(());
            }
        });
        let target = S3Target::parse(&format!("s3://media?endpoint=http://127.0.0.1:{port}"))
            .unwrap()
            .with_credentials(Credentials::new("key", "secret"));
        let client = Arc::new(S3Client::new(target).unwrap());
        let waiting: Vec<_> = (0..MAX_IN_FLIGHT)
            .map(|_| {
                let client = Arc::clone(&client);
                tokio::spawn(async move {
                    let call = Call::new(Method::GET, Some("k"), Duration::from_secs(3600));
                    client.send(call).await.map(drop)
                })
            })
            .collect();
        for _ in 0..MAX_IN_FLIGHT {
            accepted.recv().await.unwrap();
        }
        let one_more = Call::new(Method::GET, Some("k"), Duration::from_millis(50));
        let Err(S3Error::Unreachable(why)) = client.send(one_more).await else {
            panic!("a request past the bound was sent");
        };
        assert!(why.contains("waiting already"), "{why}");
        assert!(accepted.try_recv().is_err(), "it opened a connection");
        assert_eq!(
            client.degraded(),
            None,
            "the bound is not the bucket failing"
        );
        for w in waiting {
            w.abort();
        }
    }

    #[test]
    fn targets_parse_and_refuse_what_cannot_work() {
        let t =
            S3Target::parse("s3://media?endpoint=http://127.0.0.1:9000&region=eu-west-1").unwrap();
        assert_eq!(t.bucket, "media");
        assert_eq!((t.host.as_str(), t.port), ("127.0.0.1", 9000));
        assert_eq!(t.authority, "127.0.0.1:9000");
        assert_eq!(t.region, "eu-west-1");
        let t = S3Target::parse("s3://media?endpoint=http%3A%2F%2Fstore.internal").unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.region.as_str()),
            ("store.internal", 80, "us-east-1")
        );
        // Signed as a browser sends `Host`: lowercase, no default port.
        for (given, authority, port) in [
            ("http://MinIO:9000", "minio:9000", 9000),
            ("http://minio:80", "minio", 80),
            ("http://Store.Internal:080/", "store.internal", 80),
            ("http://minio:", "minio", 80),
            ("http://[::1]:80", "[::1]", 80),
            ("http://[::1]:9000", "[::1]:9000", 9000),
        ] {
            let t = S3Target::parse(&format!("s3://media?endpoint={given}")).unwrap();
            assert_eq!((t.authority.as_str(), t.port), (authority, port), "{given}");
            assert_eq!(t.endpoint, format!("http://{authority}"), "{given}");
        }
        let t = S3Target::parse("s3://media?endpoint=http://MinIO:80").unwrap();
        assert_eq!(t.host, "minio");
        for bad in [
            "media",
            "s3://Media?endpoint=http://h",
            "s3://media",
            "s3://media?endpoint=https://h",
            "s3://media?endpoint=http://h/path",
            "s3://media?endpoint=http://h;script-src",
            "s3://media?endpoint=http://h&colour=red",
            "s3://media?endpoint=http://h&region=a/b",
        ] {
            assert!(S3Target::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn listings_and_dates_read_back() {
        let xml = "<ListBucketResult><Contents><Key>a&amp;b</Key><LastModified>2015-08-30T12:36:00.000Z</LastModified></Contents>\
                   <Contents><Key>c</Key></Contents></ListBucketResult>";
        let keys: Vec<String> = xml_values(xml, "Key").map(xml_unescape).collect();
        assert_eq!(keys, ["a&b", "c"]);
        assert_eq!(
            parse_iso8601("2015-08-30T12:36:00.000Z"),
            Some(1_440_938_160)
        );
        assert_eq!(parse_iso8601("2015-08-30T12:36:00Z"), Some(1_440_938_160));
        assert_eq!(parse_iso8601("yesterday"), None);
        assert_eq!(
            parse_http_date("Sun, 30 Aug 2015 12:36:00 GMT"),
            Some(1_440_938_160)
        );
        for bad in [
            "",
            "Sun, 30 Aug 2015 12:36:00 UTC",
            "Sun, 30 Foo 2015 12:36:00 GMT",
            "Sun, 30 Aug 2015 12:36 GMT",
            "30 Aug 2015 12:36:00 GMT",
            "Sun, 3 Aug 2015 12:36:00 GMT",
        ] {
            assert_eq!(parse_http_date(bad), None, "{bad}");
        }
    }
}
