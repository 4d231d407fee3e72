//! The uploads directory as a store of media: how an upload is written (to a
//! temporary file, renamed into place only when complete), what
//! `/uploads/<name>` may name, and what an attachment's URL resolves to.
//! Shared by the upload handlers (which write and serve) and the WebSocket
//! sessions (which resolve attachments); it knows nothing about HTTP.
//!
//! Each upload is two files: `<id>.<ext>` (the bytes) and `<id>.<ext>.meta`
//! (a small JSON sidecar with the display name, the content type and, when
//! the uploader was authenticated, an opaque owner key that only that owner
//! may attach; what the key means is the caller's business). The
//! sidecar is written first, so a data file that exists always has one
//! (uploads from older versions, which have none, get their stored name).
//! Several instances may share the directory over a volume: names are
//! random, and a rename is atomic.

mod names;
pub mod sniff;

use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use tokio::io::AsyncWriteExt;

pub use names::{DisplayName, MAX_DISPLAY_CHARS, StoredName};
pub use sniff::Kind;

/// Largest sidecar read back (they are a few hundred bytes).
const MAX_SIDECAR_BYTES: u64 = 4096;

/// The uploads directory.
#[derive(Debug, Clone)]
pub struct MediaStore {
    dir: PathBuf,
}

/// The sidecar's contents.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Sidecar {
    name: String,
    content_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    owner: Option<String>,
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
        self.dir.join(name.as_str())
    }

    fn sidecar_path(&self, name: &StoredName) -> PathBuf {
        self.dir.join(format!("{}.meta", name.as_str()))
    }

    /// The upload an URL names, if it is `/uploads/<stored name>` and the
    /// file exists.
    pub async fn resolve(&self, url: &str) -> Option<StoredInfo> {
        let name = StoredName::parse(url.strip_prefix("/uploads/")?)?;
        let meta = tokio::fs::metadata(self.path_of(&name)).await.ok()?;
        if !meta.is_file() {
            return None;
        }
        Some(self.info(name, meta.len()).await)
    }

    /// Everything known about the stored upload `name` of `size` bytes. The
    /// display name comes from the sidecar (cleaned again: the directory may
    /// be shared); the content type always follows the extension, so no
    /// sidecar can make the server send a type it did not detect.
    pub async fn info(&self, name: StoredName, size: u64) -> StoredInfo {
        let (display_name, owner) = match self.read_sidecar(&name).await {
            Some(sidecar) => (DisplayName::sanitize(Some(&sidecar.name)), sidecar.owner),
            None => (DisplayName::sanitize(Some(name.as_str())), None),
        };
        StoredInfo {
            name,
            display_name,
            size,
            owner,
        }
    }

    async fn read_sidecar(&self, name: &StoredName) -> Option<Sidecar> {
        let path = self.sidecar_path(name);
        if tokio::fs::metadata(&path).await.ok()?.len() > MAX_SIDECAR_BYTES {
            return None;
        }
        let bytes = tokio::fs::read(&path).await.ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// Deletes what interrupted uploads left behind (the process died
    /// mid-upload): temporary files, and sidecars whose data file never
    /// arrived, last modified over `age` ago. Younger ones may belong to an
    /// upload in progress on another instance sharing the directory. Blocking;
    /// returns how many files it removed.
    pub fn sweep_leftovers(&self, age: Duration) -> usize {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return 0;
        };
        let now = SystemTime::now();
        let mut removed = 0;
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            let leftover = name.starts_with(".tmp-")
                || name
                    .strip_suffix(".meta")
                    .and_then(StoredName::parse)
                    .is_some_and(|data| !self.path_of(&data).exists());
            let old = entry
                .metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|t| now.duration_since(t).is_ok_and(|d| d > age));
            if leftover && old && std::fs::remove_file(entry.path()).is_ok() {
                removed += 1;
            }
        }
        removed
    }

    /// Starts writing an upload to a new temporary file in the directory.
    pub async fn begin(&self) -> io::Result<PendingUpload> {
        let mut id = [0u8; 16];
        getrandom::fill(&mut id).map_err(io::Error::other)?;
        let hex: String = id.iter().map(|b| format!("{b:02x}")).collect();
        let temp = self.dir.join(format!(".tmp-{hex}"));
        let file = tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&temp)
            .await?;
        Ok(PendingUpload {
            dir: self.dir.clone(),
            file,
            temp,
            placed: None,
            written: 0,
            committed: false,
        })
    }
}

/// An upload being written. Dropping it before [`PendingUpload::commit`]
/// (an error, a refusal, a client gone mid-body) deletes what was written,
/// so nothing partial is ever left in the directory.
#[derive(Debug)]
pub struct PendingUpload {
    dir: PathBuf,
    file: tokio::fs::File,
    temp: PathBuf,
    /// The sidecar and the data file's final path, once `commit` has chosen
    /// them: a commit cancelled part-way (the client left during the rename,
    /// which may still complete on the blocking pool) removes both, since
    /// nobody was told the name.
    placed: Option<(PathBuf, PathBuf)>,
    written: u64,
    committed: bool,
}

impl PendingUpload {
    /// Appends `bytes`.
    pub async fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.file.write_all(bytes).await?;
        self.written += bytes.len() as u64;
        Ok(())
    }

    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Flushes the file to disk, writes its sidecar (with `owner`, the key
    /// of who may attach it, if any), and renames it to a fresh random name
    /// for `kind`.
    pub async fn commit(
        mut self,
        kind: Kind,
        display_name: DisplayName,
        owner: Option<String>,
    ) -> io::Result<StoredInfo> {
        self.file.flush().await?;
        self.file.sync_data().await?;
        let name = StoredName::generate(kind).map_err(io::Error::other)?;
        let sidecar = Sidecar {
            name: display_name.as_str().to_owned(),
            content_type: kind.content_type().to_owned(),
            owner: owner.clone(),
        };
        let sidecar_path = self.dir.join(format!("{}.meta", name.as_str()));
        let data_path = self.dir.join(name.as_str());
        self.placed = Some((sidecar_path.clone(), data_path.clone()));
        let json = serde_json::to_vec(&sidecar).map_err(io::Error::other)?;
        tokio::fs::write(&sidecar_path, json).await?;
        tokio::fs::rename(&self.temp, data_path).await?;
        self.committed = true;
        Ok(StoredInfo {
            name,
            display_name,
            size: self.written,
            owner,
        })
    }
}

impl Drop for PendingUpload {
    fn drop(&mut self) {
        if self.committed {
            return;
        }
        // Plain unlinks: quick, and this may run while a task is cancelled.
        let _ = std::fs::remove_file(&self.temp);
        if let Some((sidecar, data)) = &self.placed {
            // Data first: a data file that exists always has its sidecar.
            let _ = std::fs::remove_file(data);
            let _ = std::fs::remove_file(sidecar);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch_dir(tag: &str) -> PathBuf {
        let mut id = [0u8; 8];
        getrandom::fill(&mut id).unwrap();
        let hex: String = id.iter().map(|b| format!("{b:02x}")).collect();
        let dir = std::env::temp_dir().join(format!("roomcast-media-{tag}-{hex}"));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn listing(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }

    #[tokio::test]
    async fn a_commit_leaves_the_data_file_and_its_sidecar() {
        let dir = scratch_dir("commit");
        let store = MediaStore::new(&dir);
        let mut upload = store.begin().await.unwrap();
        upload.write(b"hello").await.unwrap();
        let info = upload
            .commit(Kind::Text, DisplayName::sanitize(Some("hi.txt")), None)
            .await
            .unwrap();
        let data = info.name.as_str().to_owned();
        assert_eq!(listing(&dir), vec![data.clone(), format!("{data}.meta")]);
        assert_eq!(std::fs::read(dir.join(&data)).unwrap(), b"hello");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn a_commit_cancelled_after_its_rename_leaves_nothing() {
        let dir = scratch_dir("cancel");
        let store = MediaStore::new(&dir);
        let mut upload = store.begin().await.unwrap();
        upload.write(b"hello").await.unwrap();
        // What `commit` has done when its future is dropped just as the
        // rename completes on the blocking pool: names chosen, sidecar
        // written, data renamed, `committed` not yet set.
        let name = StoredName::generate(Kind::Text).unwrap();
        let sidecar = dir.join(format!("{}.meta", name.as_str()));
        let data = dir.join(name.as_str());
        upload.placed = Some((sidecar.clone(), data.clone()));
        std::fs::write(&sidecar, b"{}").unwrap();
        std::fs::rename(&upload.temp, &data).unwrap();
        drop(upload);
        assert_eq!(listing(&dir), Vec::<String>::new());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn an_upload_dropped_mid_body_leaves_nothing() {
        let dir = scratch_dir("drop");
        let store = MediaStore::new(&dir);
        let mut upload = store.begin().await.unwrap();
        upload.write(b"partial").await.unwrap();
        assert_eq!(listing(&dir).len(), 1, "the temporary file");
        drop(upload);
        assert_eq!(listing(&dir), Vec::<String>::new());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
