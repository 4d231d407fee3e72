//! `POST /upload`: one file in a `multipart/form-data` field named `file`,
//! streamed to a temporary file in the uploads directory and renamed into
//! place only once it is complete, of an allowed kind, and within the limit.
//!
//! Every check happens while the body streams in, and nothing holds more
//! than a chunk of it in memory: the size limit (`413` as soon as it is
//! passed), the kind (decided from the first bytes, `415` at once), a body
//! that stalls or drags on (`408`), a client that goes away (its temporary
//! file is deleted with the upload's guard). Refusals before the body is
//! read (rate limit, content type, a declared length over the limit) cost
//! nothing. The client's file name is kept only as cleaned display text.

use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::Stream;
use http::header;
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::{Body as _, Incoming};
use tokio::time::{Instant, Sleep};

use super::Body;
use super::client_addr::request_client;
use super::rate_limit::{Charge, PerIpLimiter};
use crate::config::Config;
use crate::media::preview_pool::PreviewPool;
use crate::media::sniff::{self, Kind, SNIFF_LEN, TextCheck};
use crate::media::{DisplayName, MediaStore, PendingUpload, StoredInfo};
use crate::metrics::Metrics;

/// Body bytes beyond the file itself that a request may carry: the
/// multipart preamble, boundaries, part headers and small extra fields.
const FRAMING_ALLOWANCE: u64 = 64 << 10;
/// After a refusal, the rest of the body read and discarded so the client
/// can read the answer (past this the connection is closed instead).
const DRAIN_LIMIT: u64 = 256 << 10;
/// How long that draining may take.
const DRAIN_TIME: Duration = Duration::from_secs(5);

/// The `200` answer: the same record a chat message's `attachment` carries.
#[derive(serde::Serialize)]
pub(crate) struct UploadAnswer<'a> {
    url: String,
    name: &'a str,
    size: u64,
    content_type: &'static str,
}

impl<'a> UploadAnswer<'a> {
    pub(crate) fn of(info: &'a StoredInfo) -> Self {
        Self {
            url: info.url(),
            name: info.display_name.as_str(),
            size: info.size,
            content_type: info.content_type(),
        }
    }
}

/// The upload endpoint: where files go, the limits, and the per-address
/// rate limit.
#[derive(Debug)]
pub struct Uploads {
    store: MediaStore,
    limiter: PerIpLimiter,
    /// Bytes per address per hour.
    volume: PerIpLimiter,
    trust_proxy: bool,
    max_bytes: u64,
    idle_timeout: Duration,
    timeout: Duration,
    metrics: Arc<Metrics>,
    previews: PreviewPool,
}

/// Why an upload was refused.
#[derive(Debug)]
enum UploadError {
    /// Over the per-address rate; retry after this long.
    RateLimited(Duration),
    /// Over the per-address bytes per hour; retry after this long.
    OverVolume(Duration),
    /// Not `multipart/form-data` with a boundary.
    NotMultipart,
    /// The multipart body is broken.
    Malformed(String),
    /// No field named `file`.
    NoFile,
    /// The file has no bytes.
    Empty,
    /// The file (or the body) is over the limit; the declared length if known.
    TooLarge(Option<u64>),
    /// Not one of the allowed kinds.
    Unsupported,
    /// The body stalled or took too long.
    Timeout,
    /// The client went away mid-body.
    Cut,
    /// The uploads quota (or the disk) is full.
    Full,
    /// The object storage cannot be reached.
    Unavailable,
    /// The uploads directory failed us.
    Storage(io::Error),
}

/// A multer error, or one of ours, while reading the fields.
enum Fail {
    Multipart(multer::Error),
    Upload(UploadError),
}

impl From<multer::Error> for Fail {
    fn from(e: multer::Error) -> Self {
        Self::Multipart(e)
    }
}

impl From<UploadError> for Fail {
    fn from(e: UploadError) -> Self {
        Self::Upload(e)
    }
}

impl Uploads {
    /// The endpoint as `config` sets it up, storing into `store`.
    pub fn new(config: &Config, store: MediaStore, metrics: Arc<Metrics>) -> Self {
        Self {
            store,
            limiter: PerIpLimiter::new(config.uploads_per_minute),
            volume: PerIpLimiter::per_period(
                config.upload_bytes_per_hour,
                Duration::from_secs(3600),
            ),
            trust_proxy: config.trust_proxy,
            max_bytes: config.max_upload_bytes,
            idle_timeout: config.upload_idle_timeout,
            timeout: config.upload_timeout,
            metrics,
            previews: PreviewPool::default(),
        }
    }

    /// The same endpoint asking `previews` for a preview of each image it
    /// stores (never waiting for it).
    #[must_use]
    pub fn with_previews(mut self, previews: PreviewPool) -> Self {
        self.previews = previews;
        self
    }

    /// Asks for a preview of `info`, just stored (by `POST /upload` or a
    /// presigned upload's `complete`): queued or dropped at once, so the
    /// answer never waits for it.
    pub(crate) fn request_preview(&self, info: &StoredInfo) {
        self.previews.request(&self.store, info, self.max_bytes);
    }

    /// The store uploads go to.
    pub(crate) fn store(&self) -> &MediaStore {
        &self.store
    }

    /// The largest file accepted, in bytes.
    pub(crate) fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    /// Takes one upload's token from the per-address rate limit of the
    /// request's client (shared by `POST /upload` and `POST /api/uploads`).
    pub(crate) fn check_rate<B>(&self, req: &Request<B>) -> Result<(), Duration> {
        self.client_of(req)
            .map_or(Ok(()), |client| self.limiter.check(client))
    }

    /// Charges `bytes` to the hourly upload volume of the request's client
    /// (`POST /api/uploads` charges the declared size): what it took (at
    /// most the hour's volume), to keep while it may be given back.
    pub(crate) fn charge_bytes<B>(&self, req: &Request<B>, bytes: u64) -> Result<Charge, Duration> {
        self.client_of(req).map_or(Ok(Charge::default()), |client| {
            self.volume.charge(client, bytes)
        })
    }

    /// Gives back to the address it was charged to what `charge` still
    /// costs (a refused ask, a cancelled upload; see [`Charge`]).
    pub(crate) fn refund_bytes(&self, charge: Charge) {
        self.volume.refund(charge);
    }

    /// The request's client address, if the connection told it.
    fn client_of<B>(&self, req: &Request<B>) -> Option<IpAddr> {
        request_client(req.extensions(), req.headers(), self.trust_proxy)
    }

    /// Answers `POST /upload`; `owner` is the identity key of an
    /// authenticated uploader, the only one that may then attach the file.
    pub async fn receive(&self, req: Request<Incoming>, owner: Option<String>) -> Response<Body> {
        match self.try_receive(req, owner).await {
            Ok(info) => {
                self.metrics.uploads.inc();
                self.metrics.upload_bytes.add(info.size);
                tracing::debug!(name = info.name.as_str(), size = info.size, "upload stored");
                self.request_preview(&info);
                super::json(StatusCode::OK, &UploadAnswer::of(&info))
            }
            Err(e) => {
                self.metrics.uploads_refused.inc();
                if let UploadError::Storage(io) = &e {
                    tracing::warn!("upload not stored: {io}");
                } else {
                    tracing::debug!("upload refused: {e:?}");
                }
                self.refusal(&e)
            }
        }
    }

    async fn try_receive(
        &self,
        req: Request<Incoming>,
        owner: Option<String>,
    ) -> Result<StoredInfo, UploadError> {
        self.check_rate(&req).map_err(UploadError::RateLimited)?;
        let client = self.client_of(&req);
        let boundary = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|ct| multer::parse_boundary(ct).ok())
            .ok_or(UploadError::NotMultipart)?;
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let cap = self.max_bytes.saturating_add(FRAMING_ALLOWANCE);
        if let Some(len) = declared.filter(|&len| len > cap) {
            return Err(UploadError::TooLarge(Some(len)));
        }

        // The address's bytes for the hour: what the body may bring is
        // charged now (so concurrent uploads cannot overshoot together),
        // what it did not bring is given back at the end.
        // What was taken, not what was asked: past a whole bucket only the
        // bucket is taken, and only that may come back.
        let charged = match client {
            Some(client) => self
                .volume
                .take(client, declared.unwrap_or(cap))
                .map_err(UploadError::OverVolume)?,
            None => 0,
        };
        let mut body = BodyReader::new(req.into_body(), cap, self.idle_timeout, self.timeout);
        let consumed = Arc::clone(&body.consumed);
        let fields = {
            let multipart = multer::Multipart::new(&mut body, boundary);
            self.read_fields(multipart, &consumed).await
        };
        let fields = fields.map_err(|fail| match fail {
            Fail::Upload(e) => e,
            Fail::Multipart(e) => body.explain(e),
        });
        let result = match fields {
            Ok((pending, kind, name)) => pending
                .commit(kind, name, owner)
                .await
                .map_err(storage_error),
            Err(e) => Err(e),
        };
        if !matches!(result, Err(UploadError::Timeout | UploadError::Cut)) {
            body.drain().await;
        }
        if let Some(client) = client {
            self.volume
                .give_back(client, charged.saturating_sub(body.received));
        }
        result
    }

    /// Reads every field, storing the first `file` and discarding the rest;
    /// the upload is returned only once the multipart body ended properly.
    async fn read_fields(
        &self,
        mut multipart: multer::Multipart<'_>,
        consumed: &AtomicU64,
    ) -> Result<(PendingUpload, Kind, DisplayName), Fail> {
        let mut found = None;
        while let Some(mut field) = multipart.next_field().await? {
            if found.is_some() || field.name() != Some("file") {
                // Not counted as consumed: other fields' bytes are framing,
                // held to FRAMING_ALLOWANCE with the headers.
                while field.chunk().await?.is_some() {}
                continue;
            }
            let name = DisplayName::sanitize(field.file_name());
            let mut pending = self.store.begin().await.map_err(UploadError::Storage)?;
            let mut head = Vec::with_capacity(SNIFF_LEN);
            let mut kind = None;
            let mut text = TextCheck::default();
            let mut received = 0u64;
            while let Some(chunk) = field.chunk().await? {
                consumed.fetch_add(chunk.len() as u64, Ordering::Relaxed);
                received += chunk.len() as u64;
                if received > self.max_bytes {
                    return Err(UploadError::TooLarge(None).into());
                }
                match kind {
                    Some(k) => write_checked(&mut pending, &mut text, k, &chunk).await?,
                    None => {
                        head.extend_from_slice(&chunk);
                        if head.len() >= SNIFF_LEN {
                            let k = sniff::sniff(&head).ok_or(UploadError::Unsupported)?;
                            write_checked(&mut pending, &mut text, k, &head).await?;
                            kind = Some(k);
                            head = Vec::new();
                        }
                    }
                }
            }
            let kind = match kind {
                Some(k) => k,
                None if head.is_empty() => return Err(UploadError::Empty.into()),
                None => {
                    let k = sniff::sniff(&head).ok_or(UploadError::Unsupported)?;
                    write_checked(&mut pending, &mut text, k, &head).await?;
                    k
                }
            };
            if kind == Kind::Text && !text.finish() {
                return Err(UploadError::Unsupported.into());
            }
            found = Some((pending, kind, name));
        }
        Ok(found.ok_or(UploadError::NoFile)?)
    }

    fn refusal(&self, e: &UploadError) -> Response<Body> {
        let limit = human_bytes(self.max_bytes);
        let (status, code, message) = match e {
            UploadError::RateLimited(wait) => return super::rate_limited("uploads", *wait),
            UploadError::OverVolume(wait) => {
                return super::rate_limited("bytes uploaded this hour", *wait);
            }
            UploadError::NotMultipart => (
                StatusCode::BAD_REQUEST,
                "bad_upload",
                "send the file as multipart/form-data in a field named `file`".to_owned(),
            ),
            UploadError::Malformed(why) => (
                StatusCode::BAD_REQUEST,
                "bad_upload",
                format!(
                    "the multipart body is malformed ({why}); send the file in a field named `file`"
                ),
            ),
            UploadError::NoFile => (
                StatusCode::BAD_REQUEST,
                "bad_upload",
                "the form has no field named `file`".to_owned(),
            ),
            UploadError::Empty => (
                StatusCode::BAD_REQUEST,
                "bad_upload",
                "the file is empty".to_owned(),
            ),
            UploadError::Cut => (
                StatusCode::BAD_REQUEST,
                "bad_upload",
                "the upload was cut off before its end; nothing was stored".to_owned(),
            ),
            UploadError::TooLarge(Some(len)) => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                format!("the upload is {}; the limit is {limit}", human_bytes(*len)),
            ),
            UploadError::TooLarge(None) => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                format!("the file is larger than the limit of {limit}"),
            ),
            UploadError::Unsupported => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_type",
                "this kind of file can't be shared here; allowed: PNG, JPEG, GIF, WebP, MP4, \
                 WebM, MP3, Ogg, WAV, PDF and plain UTF-8 text"
                    .to_owned(),
            ),
            UploadError::Timeout => (
                StatusCode::REQUEST_TIMEOUT,
                "timeout",
                "the upload stalled or took too long; try again on a better connection".to_owned(),
            ),
            UploadError::Full => (
                StatusCode::INSUFFICIENT_STORAGE,
                "storage_full",
                "the server has no room for more uploads right now; nothing was kept, try again later"
                    .to_owned(),
            ),
            UploadError::Unavailable => return storage_unavailable(),
            UploadError::Storage(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "storage_failed",
                "the server could not store the file; nothing was kept, try again later".to_owned(),
            ),
        };
        super::error(status, code, message)
    }
}

/// Writes bytes of a file of `kind`, checking text as it goes.
async fn write_checked(
    pending: &mut PendingUpload,
    text: &mut TextCheck,
    kind: Kind,
    bytes: &[u8],
) -> Result<(), UploadError> {
    if kind == Kind::Text && !text.feed(bytes) {
        return Err(UploadError::Unsupported);
    }
    pending.write(bytes).await.map_err(storage_error)
}

/// A storage error as the client will hear it: a full quota or disk is
/// something to wait out, anything else the server's fault.
fn storage_error(e: io::Error) -> UploadError {
    match e.kind() {
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded => UploadError::Full,
        io::ErrorKind::NotConnected => UploadError::Unavailable,
        _ => UploadError::Storage(e),
    }
}

/// `503 storage_unavailable`: the object storage did not answer.
pub(crate) fn storage_unavailable() -> Response<Body> {
    let mut res = super::error(
        StatusCode::SERVICE_UNAVAILABLE,
        "storage_unavailable",
        "the file storage is unreachable right now; nothing was kept, try again in a minute",
    );
    res.headers_mut()
        .insert(header::RETRY_AFTER, http::HeaderValue::from_static("30"));
    res
}

/// `10 MiB`, `195.3 KiB`, `12 B`.
pub(crate) fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 || value.fract() == 0.0 {
        format!("{value:.0} {}", UNITS[unit])
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// What went wrong with the body itself.
#[derive(Debug)]
enum BodyFailure {
    TooLarge,
    Framing,
    Timeout,
    Cut,
}

/// The request body as the stream multer reads, with the limits that
/// protect the server: at most `cap` bytes, a stall of `idle` or a whole
/// body slower than `timeout` ends it, and multer is handed one chunk at a
/// time (it would otherwise pull every chunk the socket has ready into its
/// buffer), while what it has read beyond the file's data it has handed
/// out (headers, boundaries, other fields, its buffer) stays under
/// [`FRAMING_ALLOWANCE`].
struct BodyReader {
    body: Incoming,
    /// Body bytes read so far (the file, framing and other fields).
    received: u64,
    /// Bytes of the file multer has handed out, counted by the reader of
    /// fields; the rest of `received` is framing (headers, boundaries,
    /// other fields) or still in multer's buffer.
    consumed: Arc<AtomicU64>,
    cap: u64,
    idle: Duration,
    idle_timer: Pin<Box<Sleep>>,
    deadline: Pin<Box<Sleep>>,
    /// A chunk was just handed out: yield before reading the next.
    yielded: bool,
    ended: bool,
    failure: Option<BodyFailure>,
}

impl BodyReader {
    fn new(body: Incoming, cap: u64, idle: Duration, timeout: Duration) -> Self {
        Self {
            body,
            received: 0,
            consumed: Arc::new(AtomicU64::new(0)),
            cap,
            idle,
            idle_timer: Box::pin(tokio::time::sleep(idle)),
            deadline: Box::pin(tokio::time::sleep(timeout)),
            yielded: false,
            ended: false,
            failure: None,
        }
    }

    fn fail(&mut self, failure: BodyFailure) -> Poll<Option<io::Result<Bytes>>> {
        self.failure = Some(failure);
        Poll::Ready(Some(Err(io::Error::other("the upload body failed"))))
    }

    /// What a multer error means, given what the body saw.
    fn explain(&mut self, e: multer::Error) -> UploadError {
        match self.failure.take() {
            Some(BodyFailure::TooLarge) => UploadError::TooLarge(None),
            Some(BodyFailure::Framing) => UploadError::Malformed(format!(
                "more than {} of headers and other fields",
                human_bytes(FRAMING_ALLOWANCE)
            )),
            Some(BodyFailure::Timeout) => UploadError::Timeout,
            Some(BodyFailure::Cut) => UploadError::Cut,
            None => match e {
                multer::Error::FieldSizeExceeded { .. }
                | multer::Error::StreamSizeExceeded { .. } => UploadError::TooLarge(None),
                other => UploadError::Malformed(other.to_string()),
            },
        }
    }

    /// Reads and discards what is left of the body, within bounds, so the
    /// client can read the answer and the connection can serve another
    /// request.
    async fn drain(&mut self) {
        if self.ended {
            return;
        }
        let (body, received) = (&mut self.body, &mut self.received);
        let _ = tokio::time::timeout(DRAIN_TIME, async {
            let mut left = DRAIN_LIMIT;
            while let Some(Ok(frame)) = body.frame().await {
                let n = frame.data_ref().map_or(0, |d| d.len() as u64);
                // What was sent counts against the hourly volume, read or
                // not: only what the client did not send is given back.
                *received += n;
                match left.checked_sub(n) {
                    Some(rest) => left = rest,
                    None => return,
                }
            }
        })
        .await;
    }
}

impl Stream for BodyReader {
    type Item = io::Result<Bytes>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.failure.is_some() {
            return Poll::Ready(Some(Err(io::Error::other("the upload body failed"))));
        }
        if this.ended {
            return Poll::Ready(None);
        }
        if this.yielded {
            // Let multer process the chunk it has before taking another.
            this.yielded = false;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        let held = this
            .received
            .saturating_sub(this.consumed.load(Ordering::Relaxed));
        if held > FRAMING_ALLOWANCE {
            return this.fail(BodyFailure::Framing);
        }
        loop {
            match Pin::new(&mut this.body).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    let Ok(data) = frame.into_data() else {
                        continue; // trailers
                    };
                    this.received += data.len() as u64;
                    if this.received > this.cap {
                        return this.fail(BodyFailure::TooLarge);
                    }
                    let next = Instant::now() + this.idle;
                    this.idle_timer.as_mut().reset(next);
                    this.yielded = true;
                    return Poll::Ready(Some(Ok(data)));
                }
                Poll::Ready(Some(Err(_))) => return this.fail(BodyFailure::Cut),
                Poll::Ready(None) => {
                    this.ended = true;
                    return Poll::Ready(None);
                }
                Poll::Pending => {
                    if this.idle_timer.as_mut().poll(cx).is_ready()
                        || this.deadline.as_mut().poll(cx).is_ready()
                    {
                        return this.fail(BodyFailure::Timeout);
                    }
                    return Poll::Pending;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn sizes_read_like_people_say_them() {
        assert_eq!(super::human_bytes(12), "12 B");
        assert_eq!(super::human_bytes(10 << 20), "10 MiB");
        assert_eq!(super::human_bytes(200_000), "195.3 KiB");
    }
}
