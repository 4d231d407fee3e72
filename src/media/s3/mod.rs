//! Media in an S3-compatible bucket: the same promises as the uploads
//! directory (random names, kinds judged by the bytes, owners, the sweep of
//! what nobody attached), kept as objects.
//!
//! Each upload is up to five objects, all under names the server makes:
//! - `<id>.<ext>`: the bytes, stored with the `Content-Type` of their kind;
//!   no URL handed to a client can write this key;
//! - `<id>.<ext>.meta`: the sidecar (display name, type, owner, size, when
//!   stored), written last: an upload without one is not complete, so it can
//!   be neither attached nor downloaded;
//! - `unattached/<id>.<ext>`: an empty marker written first and deleted when
//!   a message attaches the upload. The sweep lists these markers and
//!   deletes, with their data and sidecar, those older than the time to
//!   live: that covers uploads nobody attached, presigned uploads never
//!   completed, and halves left by a crash, across restarts and instances;
//! - `incoming/<id>.<ext>`: where a presigned PUT writes. Its URL works until
//!   it expires, even after `complete`, so the bytes that count are a
//!   server-side copy to `<id>.<ext>`, and the checks run on that copy;
//!   whatever the URL writes later lands here only. The sweep deletes
//!   `incoming/` objects older than the URL's life plus twice the upload
//!   timeout (a `complete` may start until the first has passed, and its
//!   copy wait for a place up to the second), whatever their markers say;
//! - `<id>.<ext>.preview.<jpg|png>`: an image's preview, made by the
//!   server after the upload ([`previews`]) and recorded in the sidecar;
//!   deleted with the upload.
//!
//! The bucket's own limits bound what it holds: the uploads quota
//! (`--uploads-max-mb`) counts the local directory only.

pub mod client;
mod pool;
pub mod previews;
pub mod sigv4;

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures_util::StreamExt;
use http::{Method, StatusCode, header};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use tokio::io::AsyncReadExt;

pub use client::{S3Client, S3Error, S3Target};

use super::local::PreviewRecord;
use super::sniff::{self, Kind, TextCheck};
use super::{
    AttachError, DisplayName, MAX_SIDECAR_BYTES, PreviewInfo, PreviewName, StoredInfo, StoredName,
};
use client::{Call, read_limited};

/// How long a small request (a sidecar, a marker, a head) may take.
const SMALL: Duration = Duration::from_secs(15);
/// Prefix of the markers of uploads no message attached yet.
const UNATTACHED: &str = "unattached/";
/// Prefix of the keys presigned PUTs write.
const INCOMING: &str = "incoming/";
/// Slack for clocks and requests in flight on top of every age the sweep
/// compares.
const SWEEP_MARGIN: Duration = Duration::from_secs(60);
/// Bytes read from the start of an uploaded object to judge its kind.
pub const HEAD_BYTES: u64 = 4096;
/// Markers looked at in one sweep (1000 per listing page).
const SWEEP_PAGES: usize = 100;

/// The sidecar object's contents.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Sidecar {
    name: String,
    content_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    owner: Option<String>,
    size: u64,
    /// Seconds since the epoch.
    stored_at: u64,
    /// The preview, once made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    preview: Option<PreviewRecord>,
}

/// What a `HEAD` tells of an object that exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ObjectHead {
    /// `Content-Length`, if the answer had a valid one.
    pub size: Option<u64>,
    /// `Last-Modified` in seconds since the epoch, if it had a valid one.
    pub modified: Option<u64>,
}

/// Why a presigned upload cannot be completed.
#[derive(Debug)]
pub enum CompleteError {
    /// Nothing was PUT at the URL yet.
    NotUploaded,
    /// The object's size is not the declared one (it was deleted).
    SizeMismatch {
        /// What was declared.
        declared: u64,
        /// What arrived.
        found: u64,
    },
    /// The bytes are not the declared kind, or no allowed kind (deleted).
    BadType(Option<Kind>),
    /// The bucket failed us.
    Storage(S3Error),
}

impl From<S3Error> for CompleteError {
    fn from(e: S3Error) -> Self {
        Self::Storage(e)
    }
}

/// A presigned PUT handed to a client.
#[derive(Debug)]
pub struct PresignedPut {
    /// The stored name the object will have.
    pub name: StoredName,
    /// Where to PUT the bytes.
    pub url: String,
    /// Headers the PUT must carry exactly (they are signed).
    pub headers: Vec<(&'static str, String)>,
    /// When the URL stops working.
    pub expires_at: SystemTime,
}

/// The bucket as a media store.
#[derive(Debug)]
pub struct S3Store {
    client: S3Client,
    unattached_ttl: Duration,
    presign_ttl: Duration,
    /// How long a file upload to the bucket may take.
    put_timeout: Duration,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn sidecar_key(name: &StoredName) -> String {
    format!("{}.meta", name.as_str())
}

fn marker_key(name: &StoredName) -> String {
    format!("{UNATTACHED}{}", name.as_str())
}

fn incoming_key(name: &StoredName) -> String {
    format!("{INCOMING}{}", name.as_str())
}

/// An answer's body read within `SMALL` and `max` bytes.
async fn read_small(res: http::Response<client::S3Body>, max: usize) -> Result<Bytes, S3Error> {
    tokio::time::timeout(SMALL, read_limited(res.into_body(), max))
        .await
        .map_err(|_| S3Error::Unreachable("the answer stalled".into()))?
}

impl S3Store {
    /// A store over `target` (which carries its credentials).
    pub fn new(
        target: S3Target,
        unattached_ttl: Duration,
        presign_ttl: Duration,
        put_timeout: Duration,
    ) -> Result<Self, String> {
        Ok(Self {
            client: S3Client::new(target)?,
            unattached_ttl,
            presign_ttl,
            put_timeout,
        })
    }

    /// The client (for `/health` and the probe).
    pub fn client(&self) -> &S3Client {
        &self.client
    }

    /// Asks whether the bucket is there (`HEAD /bucket`); `/health` reads
    /// the outcome. No answer, a `5xx` or a `403` is recorded by the client
    /// as for any request; any other refusal is recorded here, as only this
    /// request knows it asked for the bucket itself: a `404` means every
    /// upload will fail, yet to the client it is just an answer.
    pub async fn probe(&self) -> Result<(), S3Error> {
        let probed = self
            .client
            .expect_ok(Call::new(Method::HEAD, None, SMALL))
            .await
            .map(drop);
        if let Err(S3Error::Status(status, code)) = &probed {
            let bucket = &self.client.target().bucket;
            // A HEAD's answer has no body, so rarely a code.
            let answer = match code.is_empty() {
                true => status.to_string(),
                false => format!("{status} {code}"),
            };
            let why = match *status {
                StatusCode::NOT_FOUND => format!(
                    "the bucket {bucket} does not exist (HEAD /{bucket} answered {answer}); \
                     create it or correct the name in --media-store"
                ),
                _ => format!("the bucket {bucket} refuses us (HEAD /{bucket} answered {answer})"),
            };
            self.client.bucket_refused(&why);
        }
        probed
    }

    async fn put_small(
        &self,
        key: &str,
        bytes: Vec<u8>,
        content_type: &str,
    ) -> Result<(), S3Error> {
        let hash = sigv4::sha256_hex(&bytes);
        let extra = vec![
            ("content-length".to_owned(), bytes.len().to_string()),
            ("content-type".to_owned(), content_type.to_owned()),
        ];
        self.client
            .expect_ok(
                Call::new(Method::PUT, Some(key), SMALL)
                    .headers(extra)
                    .bytes(bytes, hash),
            )
            .await
            .map(drop)
    }

    async fn delete_key(&self, key: &str) -> Result<(), S3Error> {
        match self
            .client
            .expect_ok(Call::new(Method::DELETE, Some(key), SMALL))
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.is_not_found() => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// What a `HEAD` of `key` tells, or `None` if there is no such object.
    pub async fn head(&self, key: &str) -> Result<Option<ObjectHead>, S3Error> {
        match self
            .client
            .expect_ok(Call::new(Method::HEAD, Some(key), SMALL))
            .await
        {
            Ok(res) => Ok(Some(ObjectHead {
                size: client::header_str(&res, header::CONTENT_LENGTH).and_then(|v| v.parse().ok()),
                modified: client::header_str(&res, header::LAST_MODIFIED)
                    .and_then(client::parse_http_date),
            })),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Copies the object `from` to `to` inside the bucket (S3 CopyObject),
    /// stored with `content_type` whatever `from` was sent with; the answer
    /// and then its body each within the upload timeout (the service
    /// copies up to the largest upload).
    async fn copy_key(&self, from: &str, to: &str, content_type: &str) -> Result<(), S3Error> {
        let source = format!(
            "/{}/{}",
            self.client.target().bucket,
            sigv4::uri_encode(from, true)
        );
        let extra = vec![
            ("content-length".to_owned(), "0".to_owned()),
            ("content-type".to_owned(), content_type.to_owned()),
            ("x-amz-copy-source".to_owned(), source),
            ("x-amz-metadata-directive".to_owned(), "REPLACE".to_owned()),
        ];
        let res = self
            .client
            .expect_ok(Call::new(Method::PUT, Some(to), self.put_timeout).headers(extra))
            .await?;
        // S3 may answer `200` at once and copy for as long as the object
        // takes (keeping the connection alive with spaces), then write the
        // outcome, a result or an `<Error>`, in the body: so the body is
        // the copy's time, not a small read's.
        let body = tokio::time::timeout(self.put_timeout, read_limited(res.into_body(), 8 << 10))
            .await
            .map_err(|_| {
                S3Error::Unreachable("the copy's outcome did not arrive in time".into())
            })??;
        let body = String::from_utf8_lossy(&body);
        match body.contains("<Error>") {
            true => Err(S3Error::Invalid(format!(
                "the copy failed: {}",
                client::xml_value(&body, "Code").unwrap_or("no code")
            ))),
            false => Ok(()),
        }
    }

    /// Deletes an upload's objects: data first, so a data object that
    /// exists always has its marker (and is swept) or its sidecar, and a
    /// preview job that finds the data gone takes back what it wrote (see
    /// [`previews`]). Both names a preview may have are deleted, whatever
    /// the sidecar says: a job may be writing one right now.
    pub async fn delete(&self, name: &StoredName) -> Result<(), S3Error> {
        self.delete_all_but_marker(name).await?;
        self.delete_key(&marker_key(name)).await
    }

    /// Deletes a presigned upload given up before it completed, all but
    /// its marker: a `complete` whose client went away may have sent its
    /// copy already, and a bucket that carries it out after this would
    /// leave an object nothing names; the marker has the sweep delete it
    /// once the upload's time to live is over (the start-up check keeps
    /// that past the longest `complete`).
    pub async fn abandon(&self, name: &StoredName) -> Result<(), S3Error> {
        self.delete_all_but_marker(name).await
    }

    async fn delete_all_but_marker(&self, name: &StoredName) -> Result<(), S3Error> {
        self.delete_key(name.as_str()).await?;
        self.delete_key(&incoming_key(name)).await?;
        if name.kind().content_type().starts_with("image/") {
            for kind in [Kind::Jpeg, Kind::Png] {
                if let Some(preview) = PreviewName::new(name, kind) {
                    self.delete_key(preview.as_str()).await?;
                }
            }
        }
        self.delete_key(&sidecar_key(name)).await
    }

    /// Stores `bytes` under `name` (the store port: a small object the
    /// server made, such as a thumbnail). Not swept; deleted with
    /// [`S3Store::delete_object`].
    pub async fn put(&self, name: &StoredName, bytes: Vec<u8>) -> Result<(), S3Error> {
        self.put_small(name.as_str(), bytes, name.kind().header_value())
            .await
    }

    /// Deletes the object `name` alone (the store port).
    pub async fn delete_object(&self, name: &StoredName) -> Result<(), S3Error> {
        self.delete_key(name.as_str()).await
    }

    /// Bytes `start..start + len` of `name` (fewer at its end): at most
    /// `len` bytes are read, whatever the service sends.
    pub async fn get_range(
        &self,
        name: &StoredName,
        start: u64,
        len: u64,
    ) -> Result<Bytes, S3Error> {
        if len == 0 {
            return Ok(Bytes::new());
        }
        // Past the last possible byte is the same as "to its end".
        let end = start.saturating_add(len - 1);
        let extra = vec![("range".to_owned(), format!("bytes={start}-{end}"))];
        let res = self
            .client
            .expect_ok(Call::new(Method::GET, Some(name.as_str()), SMALL).headers(extra))
            .await?;
        read_small(res, usize::try_from(len).unwrap_or(usize::MAX)).await
    }

    async fn read_sidecar(&self, name: &StoredName) -> Result<Option<Sidecar>, S3Error> {
        let bytes = self.read_sidecar_bytes(name).await?;
        Ok(bytes.and_then(|b| serde_json::from_slice(&b).ok()))
    }

    /// The sidecar as stored (at most `MAX_SIDECAR_BYTES`), or `None`.
    async fn read_sidecar_bytes(&self, name: &StoredName) -> Result<Option<Bytes>, S3Error> {
        let key = sidecar_key(name);
        let res = match self
            .client
            .expect_ok(Call::new(Method::GET, Some(&key), SMALL))
            .await
        {
            Ok(res) => res,
            Err(e) if e.is_not_found() => return Ok(None),
            Err(e) => return Err(e),
        };
        read_small(res, MAX_SIDECAR_BYTES as usize).await.map(Some)
    }

    async fn write_sidecar(
        &self,
        name: &StoredName,
        display_name: &DisplayName,
        owner: Option<&str>,
        size: u64,
    ) -> Result<u64, S3Error> {
        let stored_at = unix_now();
        let sidecar = Sidecar {
            name: display_name.as_str().to_owned(),
            content_type: name.kind().content_type().to_owned(),
            owner: owner.map(str::to_owned),
            size,
            stored_at,
            preview: None,
        };
        let json = serde_json::to_vec(&sidecar).unwrap_or_default();
        self.put_small(&sidecar_key(name), json, "application/json")
            .await?;
        Ok(stored_at)
    }

    /// What is known about a complete upload, `None` if there is none.
    pub async fn info(&self, name: StoredName) -> Result<Option<StoredInfo>, S3Error> {
        let Some(sidecar) = self.read_sidecar(&name).await? else {
            return Ok(None);
        };
        Ok(Some(StoredInfo {
            display_name: DisplayName::sanitize(Some(&sidecar.name)),
            size: sidecar.size,
            owner: sidecar.owner,
            attached: false,
            // Read back from the bucket: a time past what the clock can
            // hold (a record changed by hand) reads as unknown.
            stored_at: UNIX_EPOCH.checked_add(Duration::from_secs(sidecar.stored_at)),
            preview: sidecar
                .preview
                .as_ref()
                .and_then(|r| PreviewInfo::from_record(&name, r)),
            name,
        }))
    }

    /// Stores the file at `path` (`len` bytes, SHA-256 `sha256`) as a new
    /// upload of `kind`; on failure nothing is left but what the sweep
    /// removes.
    pub async fn store_file(
        &self,
        path: &Path,
        len: u64,
        sha256: String,
        kind: Kind,
        display_name: DisplayName,
        owner: Option<String>,
    ) -> Result<StoredInfo, S3Error> {
        let name = StoredName::generate(kind)
            .map_err(|e| S3Error::Unreachable(format!("no randomness: {e}")))?;
        self.put_small(&marker_key(&name), Vec::new(), "application/octet-stream")
            .await?;
        let stored = async {
            let file = tokio::fs::File::open(path)
                .await
                .map_err(|e| S3Error::Unreachable(format!("cannot read the staged upload: {e}")))?;
            let extra = vec![
                ("content-length".to_owned(), len.to_string()),
                ("content-type".to_owned(), kind.header_value().to_owned()),
            ];
            self.client
                .expect_ok(
                    Call::new(Method::PUT, Some(name.as_str()), self.put_timeout)
                        .headers(extra)
                        .stream(file_body(file, len), sha256),
                )
                .await?;
            self.write_sidecar(&name, &display_name, owner.as_deref(), len)
                .await
        }
        .await;
        match stored {
            Ok(stored_at) => Ok(StoredInfo {
                name,
                display_name,
                size: len,
                owner,
                attached: false,
                stored_at: Some(UNIX_EPOCH + Duration::from_secs(stored_at)),
                preview: None,
            }),
            Err(e) => {
                let _ = self.delete(&name).await;
                Err(e)
            }
        }
    }

    /// A presigned PUT of exactly `size` bytes of `kind`, to the upload's
    /// `incoming/` key (never to the name it will be served under): the
    /// marker is written first, so an upload never completed is swept.
    pub async fn presign_put(&self, kind: Kind, size: u64) -> Result<PresignedPut, S3Error> {
        let name = StoredName::generate(kind)
            .map_err(|e| S3Error::Unreachable(format!("no randomness: {e}")))?;
        self.put_small(&marker_key(&name), Vec::new(), "application/octet-stream")
            .await?;
        let now = SystemTime::now();
        let headers = vec![
            ("content-length", size.to_string()),
            ("content-type", kind.header_value().to_owned()),
        ];
        let url = self.client.presign(
            &Method::PUT,
            &incoming_key(&name),
            &headers,
            now,
            self.presign_ttl,
        );
        Ok(PresignedPut {
            name,
            url,
            headers,
            expires_at: now + self.presign_ttl,
        })
    }

    /// How long presigned URLs work.
    pub fn presign_ttl(&self) -> Duration {
        self.presign_ttl
    }

    /// A presigned `method` (`GET` or `HEAD`) of a complete upload, or
    /// `None` if there is none. The URL signs `response-content-type` and
    /// `response-content-disposition`, so the bucket answers with the
    /// upload's type and serves what is not an image, audio or video as an
    /// attachment under its display name, as the uploads directory does.
    pub async fn presign_get(
        &self,
        name: &StoredName,
        method: &Method,
    ) -> Result<Option<String>, S3Error> {
        let Some(info) = self.info(name.clone()).await? else {
            return Ok(None);
        };
        let disposition = info.content_disposition();
        Ok(Some(self.presign_served(
            method,
            name.as_str(),
            name.kind().header_value(),
            disposition,
        )))
    }

    /// A presigned `method` of `key` that the bucket answers with
    /// `content_type` and `disposition` (both signed: a client cannot
    /// change them).
    pub(crate) fn presign_served(
        &self,
        method: &Method,
        key: &str,
        content_type: &str,
        disposition: String,
    ) -> String {
        let query = vec![
            ("response-content-disposition".to_owned(), disposition),
            ("response-content-type".to_owned(), content_type.to_owned()),
        ];
        self.client
            .presign_with_query(method, key, &[], query, SystemTime::now(), self.presign_ttl)
    }

    /// Checks what a client PUT at a presigned URL. The staged object
    /// (`incoming/<name>`) is first copied to `name`, a key no URL can
    /// write, and the checks run on that copy: exactly `declared` bytes of
    /// the kind `name` says, judged from its first bytes (and all of it for
    /// text). So what the URL writes after (it works until it expires)
    /// never changes what was checked. A failing upload is deleted. Then
    /// writes its sidecar: from now on it can be attached and downloaded.
    /// On a storage error the staged object is kept, so `complete` can be
    /// retried.
    pub async fn complete(
        &self,
        name: StoredName,
        declared: u64,
        display_name: DisplayName,
        owner: Option<String>,
    ) -> Result<StoredInfo, CompleteError> {
        let staged = incoming_key(&name);
        match self
            .copy_key(&staged, name.as_str(), name.kind().header_value())
            .await
        {
            Err(e) if e.is_not_found() => return Err(CompleteError::NotUploaded),
            other => other?,
        }
        let head = self
            .head(name.as_str())
            .await?
            .ok_or(CompleteError::NotUploaded)?;
        let found = head
            .size
            .ok_or_else(|| S3Error::Invalid("a HEAD without Content-Length".into()))?;
        if found != declared {
            let _ = self.delete(&name).await;
            return Err(CompleteError::SizeMismatch { declared, found });
        }
        let first = self.get_range(&name, 0, HEAD_BYTES.min(declared)).await?;
        let judged = sniff::sniff(&first);
        let mut ok = judged == Some(name.kind());
        if ok && name.kind() == Kind::Text {
            ok = self.whole_is_text(&name, declared).await?;
        }
        if !ok {
            let _ = self.delete(&name).await;
            return Err(CompleteError::BadType(judged));
        }
        let stored_at = self
            .write_sidecar(&name, &display_name, owner.as_deref(), declared)
            .await?;
        if let Err(e) = self.delete_key(&staged).await {
            // Harmless: nothing reads it again, and the sweep deletes it.
            tracing::warn!("could not delete a staged upload: {e}");
        }
        Ok(StoredInfo {
            name,
            display_name,
            size: declared,
            owner,
            attached: false,
            stored_at: Some(UNIX_EPOCH + Duration::from_secs(stored_at)),
            preview: None,
        })
    }

    /// The longest [`S3Store::complete`] can take, from its start until its
    /// sidecar is written, with `put_timeout` the upload timeout. Each
    /// request may wait for a place among those in flight and then for its
    /// answer, each up to its time limit (`client.rs`), and its body is
    /// read within a limit of its own. Refusals end sooner, with no
    /// sidecar, so only the way to one counts:
    pub fn longest_complete(put_timeout: Duration) -> Duration {
        // The copy: a place, the answer, the body with the outcome.
        let copy = put_timeout.saturating_mul(3);
        // The copy's HEAD: a place and the answer, which has no body.
        let head = SMALL * 2;
        // The first bytes for the type check: a place, the answer, the body.
        let range = SMALL * 3;
        // The whole-text check (text only): the body is the whole upload.
        let text = (SMALL * 2).saturating_add(put_timeout);
        // The sidecar's PUT: it is written by the time it is answered.
        let sidecar = SMALL * 2;
        copy.saturating_add(head)
            .saturating_add(range)
            .saturating_add(text)
            .saturating_add(sidecar)
    }

    /// Streams the object through a [`TextCheck`] (at most `len` bytes).
    async fn whole_is_text(&self, name: &StoredName, len: u64) -> Result<bool, S3Error> {
        let res = self
            .client
            .expect_ok(Call::new(Method::GET, Some(name.as_str()), SMALL))
            .await?;
        let mut body = res.into_body();
        let mut text = TextCheck::default();
        let mut seen = 0u64;
        let read = async {
            while let Some(frame) = body.frame().await {
                let frame = frame.map_err(|e| S3Error::Unreachable(e.to_string()))?;
                if let Ok(data) = frame.into_data() {
                    seen += data.len() as u64;
                    if seen > len || !text.feed(&data) {
                        return Ok(false);
                    }
                }
            }
            Ok(text.finish())
        };
        tokio::time::timeout(self.put_timeout, read)
            .await
            .map_err(|_| S3Error::Unreachable("the answer stalled".into()))?
    }

    /// The upload `name` for a message of `who` to attach: complete, `who`'s
    /// if it has an owner, not past the time to live unattached. Deletes its
    /// marker (so it is kept from now on).
    pub async fn attach(&self, name: StoredName, who: &str) -> Result<StoredInfo, AttachError> {
        let mut info = match self.info(name).await {
            Ok(Some(info)) => info,
            Ok(None) => return Err(AttachError::Unknown),
            Err(e) => {
                tracing::warn!("cannot attach an upload: {e}");
                return Err(AttachError::Unavailable);
            }
        };
        if info.owner.as_deref().is_some_and(|owner| owner != who) {
            return Err(AttachError::NotYours);
        }
        let marker = match self.head(&marker_key(&info.name)).await {
            Ok(marker) => marker,
            Err(e) => {
                tracing::warn!("cannot attach an upload: {e}");
                return Err(AttachError::Unavailable);
            }
        };
        let Some(marker) = marker else {
            info.attached = true;
            return Ok(info);
        };
        // The marker's age, as the sweep measures it (the sidecar's time
        // only if the bucket did not say).
        let now = SystemTime::now();
        let age = match marker.modified {
            Some(modified) => Duration::from_secs(unix_now().saturating_sub(modified)),
            None => info
                .stored_at
                .and_then(|t| now.duration_since(t).ok())
                .unwrap_or_default(),
        };
        if age > self.unattached_ttl {
            return Err(AttachError::Expired);
        }
        if let Err(e) = self.delete_key(&marker_key(&info.name)).await {
            // The message still goes out; the upload may be swept later.
            tracing::warn!("could not mark an upload attached: {e}");
        } else {
            info.attached = true;
        }
        Ok(info)
    }

    /// Deletes the uploads whose marker is older than the time to live
    /// plus a minute, and the staged objects of presigned PUTs older than
    /// the URL's life plus twice the upload timeout plus a minute; returns
    /// how many uploads (staged objects alone not counted).
    pub async fn sweep_unattached(&self) -> Result<usize, S3Error> {
        self.sweep_unattached_as_of(SystemTime::now()).await
    }

    /// [`S3Store::sweep_unattached`] as if the time were `now`.
    pub async fn sweep_unattached_as_of(&self, now: SystemTime) -> Result<usize, S3Error> {
        let now = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let marker_limit = (self.unattached_ttl + SWEEP_MARGIN).as_secs();
        let mut removed = 0;
        for name in self.list_older(UNATTACHED, now, marker_limit).await? {
            self.delete(&name).await?;
            removed += 1;
        }
        // A staged object is needed until its upload can no longer be
        // completed; past that it is litter (a PUT never completed, or one
        // made again after `complete`), marker or not. Its marker, if any,
        // goes with the pass above. A `complete` may start until the server
        // forgets the upload (the URL's life plus the upload timeout), and
        // its copy may then wait up to the upload timeout for a place among
        // the requests in flight before the bucket reads this object.
        let needed = self.presign_ttl + self.put_timeout.saturating_mul(2);
        let staged_limit = (needed + SWEEP_MARGIN).as_secs();
        for name in self.list_older(INCOMING, now, staged_limit).await? {
            self.delete_key(&incoming_key(&name)).await?;
        }
        Ok(removed)
    }

    /// The names under `prefix` whose objects were last modified more than
    /// `limit` seconds before `now` (at most `SWEEP_PAGES` pages looked at).
    async fn list_older(
        &self,
        prefix: &str,
        now: u64,
        limit: u64,
    ) -> Result<Vec<StoredName>, S3Error> {
        let mut old = Vec::new();
        let mut token: Option<String> = None;
        for _ in 0..SWEEP_PAGES {
            let mut query = vec![
                ("list-type".to_owned(), "2".to_owned()),
                ("prefix".to_owned(), prefix.to_owned()),
            ];
            if let Some(t) = token.take() {
                query.push(("continuation-token".to_owned(), t));
            }
            let res = self
                .client
                .expect_ok(Call::new(Method::GET, None, SMALL).queries(query))
                .await?;
            let xml = read_small(res, client::MAX_XML_BYTES).await?;
            let xml = String::from_utf8_lossy(&xml);
            for entry in client::xml_values(&xml, "Contents") {
                let key = client::xml_value(entry, "Key").map(client::xml_unescape);
                let Some(name) = key
                    .as_deref()
                    .and_then(|k| k.strip_prefix(prefix))
                    .and_then(StoredName::parse)
                else {
                    continue;
                };
                let modified =
                    client::xml_value(entry, "LastModified").and_then(client::parse_iso8601);
                if modified.is_some_and(|t| now.saturating_sub(t) > limit) {
                    old.push(name);
                }
            }
            let truncated = client::xml_value(&xml, "IsTruncated") == Some("true");
            token = client::xml_value(&xml, "NextContinuationToken").map(client::xml_unescape);
            if !truncated || token.is_none() {
                break;
            }
        }
        Ok(old)
    }
}

/// A request body streaming `len` bytes of `file` in 64 KiB chunks.
fn file_body(file: tokio::fs::File, len: u64) -> client::ReqBody {
    let chunks = futures_util::stream::unfold((file, len), |(mut file, left)| async move {
        if left == 0 {
            return None;
        }
        let want = usize::try_from(left.min(64 << 10)).unwrap_or(64 << 10);
        let mut buf = vec![0u8; want];
        match file.read(&mut buf).await {
            Ok(0) => Some((
                Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "the staged upload is shorter than counted",
                )),
                (file, 0),
            )),
            Ok(n) => {
                buf.truncate(n);
                Some((Ok(Frame::data(Bytes::from(buf))), (file, left - n as u64)))
            }
            Err(e) => Some((Err(e), (file, 0))),
        }
    });
    StreamBody::new(chunks.boxed()).boxed_unsync()
}

/// Turns an S3 status into what the upload handlers tell clients.
pub fn is_unavailable(e: &S3Error) -> bool {
    match e {
        S3Error::Unreachable(_) => true,
        S3Error::Status(status, _) => status.is_server_error() || *status == StatusCode::FORBIDDEN,
        S3Error::TooLarge | S3Error::Invalid(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A bucket on 127.0.0.1 that answers one request: `200` at once, then
    /// `body` `after` later, as S3 answers a long copy. Returns its port.
    async fn slow_copier(body: &'static str, after: Duration) -> u16 {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            // A copy's request has no body: its head is all of it.
            let mut seen = Vec::new();
            while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                let mut buf = [0u8; 4096];
                match socket.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => seen.extend_from_slice(&buf[..n]),
                }
            }
            let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n", body.len());
            socket.write_all(head.as_bytes()).await.unwrap();
            tokio::time::sleep(after).await;
            let _ = socket.write_all(body.as_bytes()).await;
            // Open until the client is done with it.
            let _ = socket.read(&mut [0u8; 1]).await;
        });
        port
    }

    /// With the clock paused, time jumps to the next timer whenever every
    /// task waits: the body, sent after a small read's 15 s, arrives before
    /// the copy's time is up only if the copy waits for it that long.
    #[tokio::test(start_paused = true)]
    async fn a_copys_outcome_is_awaited_for_the_upload_timeout() {
        let put_timeout = Duration::from_secs(300);
        let after = SMALL * 4;
        assert!(after < put_timeout);
        for body in [
            "<CopyObjectResult><ETag>\"e\"</ETag></CopyObjectResult>",
            "<Error><Code>InternalError</Code></Error>",
        ] {
            let port = slow_copier(body, after).await;
            let target = S3Target::parse(&format!("s3://media?endpoint=http://127.0.0.1:{port}"))
                .unwrap()
                .with_credentials(sigv4::Credentials::new("key", "secret"));
            let hour = Duration::from_secs(3600);
            let store = S3Store::new(target, hour, hour, put_timeout).unwrap();
            let copied = store.copy_key("incoming/a.png", "a.png", "image/png").await;
            match body.contains("<Error>") {
                false => assert!(copied.is_ok(), "{copied:?}"),
                true => assert!(
                    matches!(&copied, Err(S3Error::Invalid(why)) if why.contains("InternalError")),
                    "{copied:?}"
                ),
            }
        }
    }
}
