//! The uploads directory as a store of media: what `/uploads/<name>` may name
//! and what an attachment's URL resolves to. Shared by the upload handlers
//! (which write) and the WebSocket sessions (which resolve attachments); it
//! knows nothing about either.

use std::path::{Path, PathBuf};

use crate::hub::Attachment;

/// The uploads directory.
#[derive(Debug, Clone)]
pub struct MediaStore {
    dir: PathBuf,
}

/// A stored upload's file name as the server generates it:
/// 32 lowercase hex digits, a dot, a known extension.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredName(String);

impl StoredName {
    /// Accepts only names the server could have generated.
    pub fn parse(name: &str) -> Option<Self> {
        let (id, ext) = name.split_once('.')?;
        let hex = id.len() == 32 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        let ext_ok = !ext.is_empty()
            && ext.len() <= 5
            && ext
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
        (hex && ext_ok).then(|| Self(name.to_owned()))
    }

    /// The file name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl MediaStore {
    /// A store over `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The path of a stored upload.
    pub fn path_of(&self, name: &StoredName) -> PathBuf {
        self.dir.join(&name.0)
    }

    /// The attachment an URL names, if it is `/uploads/<stored name>` and the
    /// file exists.
    pub async fn resolve(&self, url: &str) -> Option<Attachment> {
        let name = StoredName::parse(url.strip_prefix("/uploads/")?)?;
        let meta = tokio::fs::metadata(self.path_of(&name)).await.ok()?;
        if !meta.is_file() {
            return None;
        }
        let content_type = mime_guess::from_path(name.as_str())
            .first_or_octet_stream()
            .to_string();
        Some(Attachment {
            url: format!("/uploads/{}", name.0),
            name: name.0,
            size: meta.len(),
            content_type,
        })
    }
}
