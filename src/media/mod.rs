//! Stored media behind one port: [`MediaStore`] is the uploads directory
//! ([`local`], the default) or an S3-compatible bucket ([`s3`]), and every
//! caller (the upload and download handlers, the WebSocket sessions that
//! attach uploads, the sweeps) goes through it, so the upload rules hold
//! whichever keeps the bytes. It knows nothing about HTTP or rooms.
//!
//! The port for other media work (thumbnails, say): [`MediaStore::put`],
//! [`MediaStore::get_range`] and [`MediaStore::delete_object`] over names
//! the server generated.

pub mod local;
mod names;
#[cfg(feature = "previews")]
pub mod preview;
pub mod preview_pool;
pub mod s3;
pub mod sniff;

use std::io;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use sha2::{Digest, Sha256};

pub use local::{LocalPending, LocalStore, PreviewInfo};
pub use names::{DisplayName, MAX_DISPLAY_CHARS, PreviewName, StoredName};
pub use s3::{S3Error, S3Store, S3Target};
pub use sniff::Kind;

/// Largest sidecar read back (they are a few hundred bytes).
pub(crate) const MAX_SIDECAR_BYTES: u64 = 4096;

/// RFC 8187 `attr-char`: what `filename*` may carry unencoded.
const ATTR_CHAR: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'!')
    .remove(b'#')
    .remove(b'$')
    .remove(b'&')
    .remove(b'+')
    .remove(b'-')
    .remove(b'.')
    .remove(b'^')
    .remove(b'_')
    .remove(b'`')
    .remove(b'|')
    .remove(b'~');

/// The `Content-Disposition` a stored file of `kind` is served with: only
/// images, audio and video `inline`, everything else an `attachment` (a
/// download, never rendered as a document); the display name as RFC 8187
/// `filename*`. The directory's answers and the bucket's presigned GETs
/// both carry it.
pub fn content_disposition(kind: Kind, display_name: &DisplayName) -> String {
    let disposition = if kind.is_media() {
        "inline"
    } else {
        "attachment"
    };
    let encoded = utf8_percent_encode(display_name.as_str(), ATTR_CHAR);
    format!("{disposition}; filename*=UTF-8''{encoded}")
}

/// Where media is kept, as configured (`--media-store`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum MediaStoreKind {
    /// The uploads directory.
    #[default]
    Local,
    /// An S3-compatible bucket.
    S3(S3Target),
}

impl std::str::FromStr for MediaStoreKind {
    type Err = String;

    /// `local`, or `s3://BUCKET?endpoint=http://host:port&region=R`.
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "local" | "" => Ok(Self::Local),
            s => S3Target::parse(s).map(Self::S3),
        }
    }
}

/// Why an upload cannot be attached.
#[derive(Debug, PartialEq, Eq)]
pub enum AttachError {
    /// Not the URL of a stored upload (or deleted since).
    Unknown,
    /// Uploaded by someone else (its owner key differs).
    NotYours,
    /// Nobody attached it within the time to live: it is being deleted.
    Expired,
    /// The store cannot be reached right now.
    Unavailable,
}

/// What is known about a stored upload.
#[derive(Debug)]
pub struct StoredInfo {
    /// Its stored name (and so its kind).
    pub name: StoredName,
    /// The client's file name, sanitised.
    pub display_name: DisplayName,
    /// Size in bytes.
    pub size: u64,
    /// The owner key it was uploaded with, if any.
    pub owner: Option<String>,
    /// Whether a message attached it.
    pub attached: bool,
    /// When it was stored.
    pub stored_at: Option<SystemTime>,
    /// Its preview, if one was made and its sidecar records it.
    pub preview: Option<PreviewInfo>,
}

impl StoredInfo {
    /// Where the upload is served: `/uploads/<stored name>`.
    pub fn url(&self) -> String {
        format!("/uploads/{}", self.name.as_str())
    }

    /// The type detected from the upload's first bytes.
    pub fn content_type(&self) -> &'static str {
        self.name.kind().content_type()
    }

    /// How it is served: see [`content_disposition`].
    pub fn content_disposition(&self) -> String {
        content_disposition(self.name.kind(), &self.display_name)
    }
}

/// The media store: the uploads directory, or a bucket (with the
/// directory as the place `POST /upload` stages a body before sending it).
#[derive(Debug, Clone)]
pub enum MediaStore {
    /// Files in the uploads directory.
    Local(LocalStore),
    /// Objects in a bucket; the directory only stages.
    S3 {
        /// The bucket.
        bucket: Arc<S3Store>,
        /// Where multipart uploads are staged.
        staging: LocalStore,
    },
}

/// An S3 failure as an I/O error: unreachable storage is `NotConnected`
/// (the handlers answer `503`), anything else `Other`.
pub fn s3_io_error(e: S3Error) -> io::Error {
    match s3::is_unavailable(&e) {
        true => io::Error::new(io::ErrorKind::NotConnected, e.to_string()),
        false => io::Error::other(e.to_string()),
    }
}

impl MediaStore {
    /// `"local"` or `"s3"`, as the page's settings say.
    pub fn kind_name(&self) -> &'static str {
        match self {
            Self::Local(_) => "local",
            Self::S3 { .. } => "s3",
        }
    }

    /// The uploads directory (the store itself, or the staging area).
    pub fn local(&self) -> &LocalStore {
        match self {
            Self::Local(local) => local,
            Self::S3 { staging, .. } => staging,
        }
    }

    /// The bucket, if media is kept in one.
    pub fn bucket(&self) -> Option<&Arc<S3Store>> {
        match self {
            Self::Local(_) => None,
            Self::S3 { bucket, .. } => Some(bucket),
        }
    }

    /// `None` while the store works; otherwise why not (for `/health`).
    pub fn degraded(&self) -> Option<String> {
        self.bucket().and_then(|b| b.client().degraded())
    }

    /// Starts an upload: a temporary file in the uploads directory.
    pub async fn begin(&self) -> io::Result<PendingUpload> {
        Ok(PendingUpload {
            file: self.local().begin().await?,
            to: self.bucket().cloned(),
            hash: Sha256::new(),
        })
    }

    /// The upload `url` names, for a message of `who` (an owner key) to
    /// attach; see [`LocalStore::attach`] and [`S3Store::attach`].
    pub async fn attach(&self, url: &str, who: &str) -> Result<StoredInfo, AttachError> {
        match self {
            Self::Local(local) => local.attach(url, who).await,
            Self::S3 { bucket, .. } => {
                let name = url
                    .strip_prefix("/uploads/")
                    .and_then(StoredName::parse)
                    .ok_or(AttachError::Unknown)?;
                bucket.attach(name, who).await
            }
        }
    }

    /// Deletes uploads nobody attached in time; returns how many.
    pub async fn sweep_unattached(&self) -> usize {
        match self {
            Self::Local(local) => {
                let local = local.clone();
                tokio::task::spawn_blocking(move || local.sweep_unattached())
                    .await
                    .unwrap_or(0)
            }
            Self::S3 { bucket, .. } => bucket.sweep_unattached().await.unwrap_or_else(|e| {
                tracing::warn!("the sweep of unattached uploads stopped: {e}");
                0
            }),
        }
    }

    /// Stores `bytes` as the object `name` (the port for media the server
    /// makes itself; not swept).
    pub async fn put(&self, name: &StoredName, bytes: Vec<u8>) -> io::Result<()> {
        match self {
            Self::Local(local) => {
                let temp = local.dir().join(format!(".tmp-put-{}", name.as_str()));
                tokio::fs::write(&temp, &bytes).await?;
                tokio::fs::rename(&temp, local.path_of(name)).await
            }
            Self::S3 { bucket, .. } => bucket.put(name, bytes).await.map_err(s3_io_error),
        }
    }

    /// Bytes `start..start + len` of the object `name` (fewer at its end;
    /// `NotFound` if there is none).
    pub async fn get_range(&self, name: &StoredName, start: u64, len: u64) -> io::Result<Bytes> {
        match self {
            Self::Local(local) => {
                use tokio::io::{AsyncReadExt, AsyncSeekExt};
                let mut file = tokio::fs::File::open(local.path_of(name)).await?;
                file.seek(io::SeekFrom::Start(start)).await?;
                let mut buf = Vec::new();
                file.take(len).read_to_end(&mut buf).await?;
                Ok(Bytes::from(buf))
            }
            Self::S3 { bucket, .. } => match bucket.get_range(name, start, len).await {
                Err(e) if e.is_not_found() => Err(io::ErrorKind::NotFound.into()),
                other => other.map_err(s3_io_error),
            },
        }
    }

    /// Deletes the object `name` alone (the port; an upload's sidecar and
    /// marker are the sweep's business).
    pub async fn delete_object(&self, name: &StoredName) -> io::Result<()> {
        match self {
            Self::Local(local) => match tokio::fs::remove_file(local.path_of(name)).await {
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
                other => other,
            },
            Self::S3 { bucket, .. } => bucket.delete_object(name).await.map_err(s3_io_error),
        }
    }
}

/// An upload being written: to a temporary file, renamed into the
/// directory or sent to the bucket by [`PendingUpload::commit`]. Dropping
/// it first deletes what was written.
#[derive(Debug)]
pub struct PendingUpload {
    file: LocalPending,
    to: Option<Arc<S3Store>>,
    hash: Sha256,
}

impl PendingUpload {
    /// Appends `bytes`; `StorageFull` if they would pass the quota.
    pub async fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        if self.to.is_some() {
            self.hash.update(bytes);
        }
        self.file.write(bytes).await
    }

    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.file.written()
    }

    /// Stores the upload under a fresh random name for `kind`, with its
    /// sidecar (the display name and `owner`, who alone may attach it).
    /// To a bucket it goes as one PUT of known length, signed with its
    /// SHA-256; the staged file is deleted after.
    pub async fn commit(
        mut self,
        kind: Kind,
        display_name: DisplayName,
        owner: Option<String>,
    ) -> io::Result<StoredInfo> {
        let Some(bucket) = self.to.take() else {
            return self.file.commit(kind, display_name, owner).await;
        };
        let len = self.file.written();
        let sha256 = s3::sigv4::hex(&std::mem::take(&mut self.hash).finalize());
        let path = self.file.staged().await?.to_owned();
        bucket
            .store_file(&path, len, sha256, kind, display_name, owner)
            .await
            .map_err(s3_io_error)
    }
}

/// How long [`MediaStore`]'s bucket probe waits between looks.
pub const PROBE_EVERY: Duration = Duration::from_secs(10);
