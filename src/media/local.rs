//! The uploads directory as a media store: how an upload is written (to a
//! temporary file, renamed into place only when complete), what
//! `/uploads/<name>` may name, and what an attachment's URL resolves to.
//!
//! Each upload is two files: `<id>.<ext>` (the bytes) and `<id>.<ext>.meta`
//! (a small JSON sidecar with the display name, the content type and, when
//! the uploader was authenticated, an opaque owner key that only that owner
//! may attach; what the key means is the caller's business). The
//! sidecar is written first, so a data file that exists always has one
//! (uploads from older versions, which have none, get their stored name).
//! Several instances may share the directory over a volume: names are
//! random, and a rename is atomic.
//!
//! Bounds: the directory may hold at most a quota of bytes (counted at
//! start, then as this process writes and deletes: instances sharing a
//! volume each count what they saw at start plus their own writes), charged
//! as the bytes arrive so concurrent uploads cannot overshoot it together.
//! An upload no message attached within a time to live is deleted by
//! [`LocalStore::sweep_unattached`]; attaching marks the sidecar.
//!
//! With the S3 store the directory is where `POST /upload` stages a body
//! before it goes to the bucket ([`LocalPending::staged`]).

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use tokio::io::AsyncWriteExt;

use super::sniff::Kind;
use super::{AttachError, DisplayName, MAX_SIDECAR_BYTES, StoredInfo, StoredName};

mod preview_files;
pub use preview_files::PreviewInfo;
pub(crate) use preview_files::PreviewRecord;

/// The uploads directory.
#[derive(Debug, Clone)]
pub struct LocalStore {
    dir: PathBuf,
    usage: Arc<Usage>,
    unattached_ttl: Duration,
    /// Held while a sidecar is rewritten (marked attached, given a preview).
    sidecar_lock: Arc<tokio::sync::Mutex<()>>,
}

/// The bytes the directory holds as this process counts them, and the most
/// it may hold.
#[derive(Debug)]
struct Usage {
    used: AtomicU64,
    quota: u64,
}

impl Usage {
    /// Counts `n` more bytes, or refuses with `StorageFull` if they would
    /// pass the quota (nothing counted then).
    fn charge(&self, n: u64) -> io::Result<()> {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(n).filter(|&total| total <= self.quota)
            })
            .map(drop)
            .map_err(|_| io::Error::new(io::ErrorKind::StorageFull, "the uploads quota is full"))
    }

    /// Counts `n` bytes fewer.
    fn release(&self, n: u64) {
        let _ = self
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                Some(used.saturating_sub(n))
            });
    }
}

/// The sidecar's contents.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Sidecar {
    name: String,
    content_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    owner: Option<String>,
    /// A message attached it: it is never deleted as unattached.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    attached: bool,
    /// The preview stored beside it, once made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    preview: Option<PreviewRecord>,
}

impl LocalStore {
    /// A store over `dir`, without a quota, deleting uploads nobody
    /// attached within a day.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            usage: Arc::new(Usage {
                used: AtomicU64::new(0),
                quota: u64::MAX,
            }),
            unattached_ttl: Duration::from_secs(24 * 3600),
            sidecar_lock: Arc::default(),
        }
    }

    /// The same directory with at most `quota` bytes in it (`None`: no
    /// limit) and uploads deleted when not attached within `unattached_ttl`.
    /// Counts what the directory holds now (blocking: one `stat` per file).
    pub fn with_limits(
        dir: impl Into<PathBuf>,
        quota: Option<u64>,
        unattached_ttl: Duration,
    ) -> Self {
        let store = Self {
            dir: dir.into(),
            usage: Arc::new(Usage {
                used: AtomicU64::new(0),
                quota: quota.unwrap_or(u64::MAX),
            }),
            unattached_ttl,
            sidecar_lock: Arc::default(),
        };
        let held: u64 = std::fs::read_dir(&store.dir)
            .map(|entries| {
                entries
                    .flatten()
                    .filter_map(|e| e.metadata().ok())
                    .filter(std::fs::Metadata::is_file)
                    .map(|m| m.len())
                    .sum()
            })
            .unwrap_or(0);
        store.usage.used.store(held, Ordering::Release);
        store
    }

    /// Bytes the directory holds as this process counts them.
    pub fn used_bytes(&self) -> u64 {
        self.usage.used.load(Ordering::Acquire)
    }

    /// The quota, if any.
    pub fn quota(&self) -> Option<u64> {
        (self.usage.quota != u64::MAX).then_some(self.usage.quota)
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
    /// `Ok(None)` if there is no such upload; an error if its sidecar
    /// cannot be read (nothing is assumed about its owner then).
    pub async fn resolve(&self, url: &str) -> io::Result<Option<StoredInfo>> {
        let Some(name) = url.strip_prefix("/uploads/").and_then(StoredName::parse) else {
            return Ok(None);
        };
        let path = self.path_of(&name);
        let Some(meta) = metadata_if_any(&path).await?.filter(|m| m.is_file()) else {
            return Ok(None);
        };
        let mut info = self.info(name, meta.len()).await?;
        // A sidecar missing because the sweep took the upload in between
        // (it removes the data file first) is not one from before sidecars.
        if info.owner.is_none() && info.attached && metadata_if_any(&path).await?.is_none() {
            return Ok(None);
        }
        info.stored_at = meta.modified().ok();
        Ok(Some(info))
    }

    /// The upload `url` names, for a message of `who` (an owner key) to
    /// attach: it must exist, be `who`'s if it has an owner, and not have
    /// outlived the time to live unattached. Marks it attached (so it is
    /// kept from now on).
    pub async fn attach(&self, url: &str, who: &str) -> Result<StoredInfo, AttachError> {
        let mut info = match self.resolve(url).await {
            Ok(Some(info)) => info,
            Ok(None) => return Err(AttachError::Unknown),
            Err(e) => {
                tracing::warn!(url, "cannot read an upload's record: {e}");
                return Err(AttachError::Unavailable);
            }
        };
        if info.owner.as_deref().is_some_and(|owner| owner != who) {
            return Err(AttachError::NotYours);
        }
        if info.attached {
            return Ok(info);
        }
        let age = info
            .stored_at
            .and_then(|t| SystemTime::now().duration_since(t).ok())
            .unwrap_or_default();
        if age > self.unattached_ttl {
            return Err(AttachError::Expired);
        }
        if let Err(e) = self.mark_attached(&info).await {
            // The message still goes out; the upload may be swept later.
            tracing::warn!("could not mark an upload attached: {e}");
        } else {
            info.attached = true;
        }
        Ok(info)
    }

    /// Rewrites the sidecar with `attached` set (a new file renamed over
    /// the old one, so a reader sees one or the other, whole).
    async fn mark_attached(&self, info: &StoredInfo) -> io::Result<()> {
        let _guard = self.sidecar_lock.lock().await;
        let Some(mut sidecar) = self.read_sidecar(&info.name).await? else {
            // An upload from before sidecars: never swept, nothing to mark.
            return Ok(());
        };
        sidecar.attached = true;
        let json = serde_json::to_vec(&sidecar).map_err(io::Error::other)?;
        let path = self.sidecar_path(&info.name);
        let old = tokio::fs::metadata(&path).await.map_or(0, |m| m.len());
        let temp = self.dir.join(format!(".tmp-{}", random_hex()?));
        let written = match tokio::fs::write(&temp, &json).await {
            Ok(()) => tokio::fs::rename(&temp, &path).await,
            Err(e) => Err(e),
        };
        if let Err(e) = written {
            let _ = tokio::fs::remove_file(&temp).await;
            return Err(e);
        }
        // A few bytes more or less: counted, never refused.
        let new = json.len() as u64;
        if new > old {
            self.usage.used.fetch_add(new - old, Ordering::AcqRel);
        } else {
            self.usage.release(old - new);
        }
        Ok(())
    }

    /// Deletes uploads that have a sidecar, were never attached, and are
    /// older than the time to live (plus a minute, so an attach that just
    /// passed its check is not raced). Blocking; returns how many it removed.
    pub fn sweep_unattached(&self) -> usize {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return 0;
        };
        let limit = self.unattached_ttl + Duration::from_secs(60);
        let now = SystemTime::now();
        let mut removed = 0;
        for entry in entries.flatten() {
            let Some(name) = entry.file_name().to_str().and_then(StoredName::parse) else {
                continue;
            };
            let Ok(meta) = entry.metadata() else { continue };
            let old = meta
                .modified()
                .ok()
                .and_then(|t| now.duration_since(t).ok())
                .is_some_and(|age| age > limit);
            if !old {
                continue;
            }
            let sidecar_path = self.sidecar_path(&name);
            let Ok(bytes) = std::fs::read(&sidecar_path) else {
                continue;
            };
            let Ok(sidecar) = serde_json::from_slice::<Sidecar>(&bytes) else {
                continue;
            };
            if sidecar.attached {
                continue;
            }
            // Data first: a data file that exists always has its sidecar.
            if std::fs::remove_file(entry.path()).is_ok() {
                self.remove_preview_blocking(&name);
                let _ = std::fs::remove_file(&sidecar_path);
                self.usage.release(meta.len() + bytes.len() as u64);
                removed += 1;
            }
        }
        removed
    }

    /// Everything known about the stored upload `name` of `size` bytes. The
    /// display name comes from the sidecar (cleaned again: the directory may
    /// be shared); the content type always follows the extension, so no
    /// sidecar can make the server send a type it did not detect.
    /// An error if the sidecar exists but cannot be read.
    pub async fn info(&self, name: StoredName, size: u64) -> io::Result<StoredInfo> {
        let (display_name, owner, attached, preview) = match self.read_sidecar(&name).await? {
            Some(sidecar) => (
                DisplayName::sanitize(Some(&sidecar.name)),
                sidecar.owner,
                sidecar.attached,
                sidecar
                    .preview
                    .and_then(|r| PreviewInfo::from_record(&name, &r)),
            ),
            // Uploads from before sidecars count as attached: never swept.
            None => (DisplayName::sanitize(Some(name.as_str())), None, true, None),
        };
        Ok(StoredInfo {
            name,
            display_name,
            size,
            owner,
            attached,
            stored_at: None,
            preview,
        })
    }

    /// The upload's sidecar: `Ok(None)` if it has none (an upload from
    /// before sidecars), an error if it has one that cannot be read, too
    /// large or not a sidecar. Never taken for a missing one: that would
    /// make someone else's upload attachable, unswept.
    async fn read_sidecar(&self, name: &StoredName) -> io::Result<Option<Sidecar>> {
        let path = self.sidecar_path(name);
        let Some(meta) = metadata_if_any(&path).await? else {
            return Ok(None);
        };
        if meta.len() > MAX_SIDECAR_BYTES {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{} is larger than a sidecar", path.display()),
            ));
        }
        let bytes = match tokio::fs::read(&path).await {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
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
            let size = entry.metadata().map_or(0, |m| m.len());
            if leftover && old && std::fs::remove_file(entry.path()).is_ok() {
                // Counted at start with everything else in the directory.
                self.usage.release(size);
                removed += 1;
            }
        }
        removed
    }

    /// Starts writing an upload to a new temporary file in the directory.
    pub async fn begin(&self) -> io::Result<LocalPending> {
        let temp = self.dir.join(format!(".tmp-{}", random_hex()?));
        let file = tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&temp)
            .await?;
        Ok(LocalPending {
            dir: self.dir.clone(),
            usage: Arc::clone(&self.usage),
            file,
            temp,
            placed: None,
            written: 0,
            charged: 0,
            committed: false,
        })
    }
}

/// 32 random hex digits.
fn random_hex() -> io::Result<String> {
    let mut id = [0u8; 16];
    getrandom::fill(&mut id).map_err(io::Error::other)?;
    Ok(id.iter().map(|b| format!("{b:02x}")).collect())
}

/// An upload being written. Dropping it before [`LocalPending::commit`]
/// (an error, a refusal, a client gone mid-body) deletes what was written,
/// so nothing partial is ever left in the directory.
#[derive(Debug)]
pub struct LocalPending {
    dir: PathBuf,
    usage: Arc<Usage>,
    file: tokio::fs::File,
    temp: PathBuf,
    /// The sidecar and the data file's final path, once `commit` has chosen
    /// them: a commit cancelled part-way (the client left during the rename,
    /// which may still complete on the blocking pool) removes both, since
    /// nobody was told the name.
    placed: Option<(PathBuf, PathBuf)>,
    written: u64,
    /// Bytes counted against the quota so far (given back if dropped).
    charged: u64,
    committed: bool,
}

impl LocalPending {
    /// Appends `bytes`; `StorageFull` if they would pass the quota.
    pub async fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.usage.charge(bytes.len() as u64)?;
        self.charged += bytes.len() as u64;
        self.file.write_all(bytes).await?;
        self.written += bytes.len() as u64;
        Ok(())
    }

    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Flushes what was written and says where it is (the S3 store sends
    /// it on from there); dropping the upload afterwards deletes it.
    pub async fn staged(&mut self) -> io::Result<&Path> {
        self.file.flush().await?;
        Ok(&self.temp)
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
            attached: false,
            preview: None,
        };
        let sidecar_path = self.dir.join(format!("{}.meta", name.as_str()));
        let data_path = self.dir.join(name.as_str());
        self.placed = Some((sidecar_path.clone(), data_path.clone()));
        let json = serde_json::to_vec(&sidecar).map_err(io::Error::other)?;
        self.usage.charge(json.len() as u64)?;
        self.charged += json.len() as u64;
        tokio::fs::write(&sidecar_path, json).await?;
        tokio::fs::rename(&self.temp, data_path).await?;
        self.committed = true;
        Ok(StoredInfo {
            name,
            display_name,
            size: self.written,
            owner,
            attached: false,
            stored_at: Some(SystemTime::now()),
            preview: None,
        })
    }
}

impl Drop for LocalPending {
    fn drop(&mut self) {
        if self.committed {
            return;
        }
        self.usage.release(self.charged);
        // Plain unlinks: quick, and this may run while a task is cancelled.
        let _ = std::fs::remove_file(&self.temp);
        if let Some((sidecar, data)) = &self.placed {
            // Data first: a data file that exists always has its sidecar.
            let _ = std::fs::remove_file(data);
            let _ = std::fs::remove_file(sidecar);
        }
    }
}

/// A path's metadata, `None` if nothing is there; other errors are errors.
async fn metadata_if_any(path: &Path) -> io::Result<Option<std::fs::Metadata>> {
    match tokio::fs::metadata(path).await {
        Ok(meta) => Ok(Some(meta)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
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
        let store = LocalStore::new(&dir);
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
        let store = LocalStore::new(&dir);
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

    async fn stored(store: &LocalStore, text: &[u8]) -> StoredInfo {
        let mut upload = store.begin().await.unwrap();
        upload.write(text).await.unwrap();
        upload
            .commit(Kind::Text, DisplayName::sanitize(Some("a.txt")), None)
            .await
            .unwrap()
    }

    fn age(store: &LocalStore, info: &StoredInfo, by: Duration) {
        std::fs::File::options()
            .write(true)
            .open(store.path_of(&info.name))
            .unwrap()
            .set_modified(SystemTime::now() - by)
            .unwrap();
    }

    #[tokio::test]
    async fn the_sweep_deletes_old_unattached_uploads_only() {
        let dir = scratch_dir("sweep");
        let ttl = Duration::from_secs(3600);
        let store = LocalStore::with_limits(&dir, None, ttl);
        let attached = stored(&store, b"attached").await;
        let fresh = stored(&store, b"fresh").await;
        let old = stored(&store, b"old").await;
        store.attach(&attached.url(), "anyone").await.unwrap();
        age(&store, &attached, 2 * ttl);
        age(&store, &old, 2 * ttl);
        // An upload from before sidecars: nothing says it was never attached.
        std::fs::write(dir.join("ffffffffffffffffffffffffffffffff.txt"), b"legacy").unwrap();
        let legacy = StoredName::parse("ffffffffffffffffffffffffffffffff.txt").unwrap();
        let before = LocalStore::with_limits(&dir, None, ttl).used_bytes();

        assert_eq!(
            store.attach(&old.url(), "anyone").await.unwrap_err(),
            AttachError::Expired
        );
        assert_eq!(store.sweep_unattached(), 1);
        let left = listing(&dir);
        assert!(
            !left.iter().any(|n| n.starts_with(old.name.as_str())),
            "{left:?}"
        );
        for kept in [&attached.name, &fresh.name, &legacy] {
            assert!(left.contains(&kept.as_str().to_owned()), "{left:?}");
        }
        // The running count agrees with a fresh count of the directory
        // (which also sees the legacy file this store never wrote).
        let recount = LocalStore::with_limits(&dir, None, ttl).used_bytes();
        assert!(recount < before);
        assert_eq!(store.used_bytes() + b"legacy".len() as u64, recount);
        assert_eq!(
            store.attach(&old.url(), "anyone").await.unwrap_err(),
            AttachError::Unknown
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn an_unreadable_sidecar_makes_nobody_the_owner() {
        let dir = scratch_dir("sidecar");
        let store = LocalStore::new(&dir);
        let mut upload = store.begin().await.unwrap();
        upload.write(b"mine").await.unwrap();
        let info = upload
            .commit(
                Kind::Text,
                DisplayName::sanitize(Some("a.txt")),
                Some("alice".into()),
            )
            .await
            .unwrap();
        assert_eq!(
            store.attach(&info.url(), "mallory").await.unwrap_err(),
            AttachError::NotYours
        );
        // A sidecar that is there but does not read (damaged here; an I/O
        // error or no file descriptor left act the same) is not taken for
        // an upload from before sidecars, which anyone may attach.
        std::fs::write(store.sidecar_path(&info.name), b"{\"name\":").unwrap();
        assert!(store.resolve(&info.url()).await.is_err());
        assert_eq!(
            store.attach(&info.url(), "mallory").await.unwrap_err(),
            AttachError::Unavailable
        );
        // Without a sidecar at all it is one from before sidecars.
        std::fs::remove_file(store.sidecar_path(&info.name)).unwrap();
        let legacy = store.resolve(&info.url()).await.unwrap().unwrap();
        assert!(legacy.attached && legacy.owner.is_none());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn a_full_quota_refuses_bytes_and_a_dropped_upload_gives_them_back() {
        let dir = scratch_dir("quota");
        let store = LocalStore::with_limits(&dir, Some(100), Duration::from_secs(60));
        let mut upload = store.begin().await.unwrap();
        upload.write(&[b'x'; 60]).await.unwrap();
        let err = upload.write(&[b'x'; 60]).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::StorageFull);
        assert_eq!(store.used_bytes(), 60);
        drop(upload);
        assert_eq!(store.used_bytes(), 0);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn an_upload_dropped_mid_body_leaves_nothing() {
        let dir = scratch_dir("drop");
        let store = LocalStore::new(&dir);
        let mut upload = store.begin().await.unwrap();
        upload.write(b"partial").await.unwrap();
        assert_eq!(listing(&dir).len(), 1, "the temporary file");
        drop(upload);
        assert_eq!(listing(&dir), Vec::<String>::new());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
