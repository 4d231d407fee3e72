//! Where a preview is kept in the uploads directory: beside its upload as
//! `<stored name>.preview.<jpg|png>`, recorded in the upload's sidecar so
//! the preview is found (and swept) with it. What the store does for the
//! preview pool, which calls in from its own threads: read an upload's
//! bytes, put a preview. Both block; neither runs on the async runtime.
//!
//! The preview file is renamed into place before the sidecar names it, so a
//! sidecar never names a preview that is not there. Sidecar rewrites (a
//! preview recorded, an upload marked attached) hold the store's sidecar
//! lock, so neither loses the other's change.

use std::io::{self, Read as _};
use std::sync::atomic::Ordering;

use super::{LocalStore, Sidecar, random_hex};
use crate::media::{Kind, PreviewName, StoredName};

/// A preview as its upload's sidecar records it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct PreviewRecord {
    /// The preview's file name.
    pub file: String,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
}

/// A stored preview.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreviewInfo {
    /// Its file name.
    pub name: PreviewName,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
}

impl PreviewInfo {
    /// Where it is served: `/uploads/<preview name>`.
    pub fn url(&self) -> String {
        format!("/uploads/{}", self.name.as_str())
    }

    /// The record of `of`'s sidecar, if it names a preview of `of` (a
    /// sidecar in a shared directory is not trusted to name anything else).
    pub(crate) fn from_record(of: &StoredName, record: &PreviewRecord) -> Option<Self> {
        let name = PreviewName::parse(&record.file).filter(|p| p.of() == of)?;
        Some(Self {
            name,
            width: record.width,
            height: record.height,
        })
    }
}

impl LocalStore {
    /// The path of a stored preview.
    pub fn preview_path(&self, name: &PreviewName) -> std::path::PathBuf {
        self.dir.join(name.as_str())
    }

    /// The bytes of upload `name`, if it has at most `max` (blocking).
    pub fn read_blocking(&self, name: &StoredName, max: u64) -> io::Result<Vec<u8>> {
        let file = std::fs::File::open(self.path_of(name))?;
        let len = file.metadata()?.len();
        if len > max {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("the upload has {len} bytes; previews read at most {max}"),
            ));
        }
        let mut bytes = Vec::with_capacity(len as usize);
        file.take(max).read_to_end(&mut bytes)?;
        Ok(bytes)
    }

    /// Stores `bytes`, a `kind` (JPEG or PNG) preview of upload `of`, beside
    /// it and records it in its sidecar (blocking). Counted against the
    /// quota like any file; refused (`StorageFull`) past it. `NotFound` if
    /// the upload went meanwhile (nothing is left behind then).
    pub fn put_preview_blocking(
        &self,
        of: &StoredName,
        kind: Kind,
        bytes: &[u8],
        (width, height): (u32, u32),
    ) -> io::Result<PreviewInfo> {
        let name = PreviewName::new(of, kind)
            .ok_or_else(|| io::Error::other("previews are JPEG or PNG"))?;
        let path = self.preview_path(&name);
        self.usage.charge(bytes.len() as u64)?;
        let temp = self.dir.join(format!(".tmp-{}", random_hex()?));
        let placed = std::fs::write(&temp, bytes).and_then(|()| std::fs::rename(&temp, &path));
        if let Err(e) = placed {
            let _ = std::fs::remove_file(&temp);
            self.usage.release(bytes.len() as u64);
            return Err(e);
        }
        let record = PreviewRecord {
            file: name.as_str().to_owned(),
            width,
            height,
        };
        if let Err(e) = self.record_preview_blocking(of, record) {
            let _ = std::fs::remove_file(&path);
            self.usage.release(bytes.len() as u64);
            return Err(e);
        }
        Ok(PreviewInfo {
            name,
            width,
            height,
        })
    }

    /// Rewrites `of`'s sidecar with `record` in it, under the sidecar lock.
    fn record_preview_blocking(&self, of: &StoredName, record: PreviewRecord) -> io::Result<()> {
        let _guard = self.sidecar_lock.blocking_lock();
        // The data file first: an upload swept meanwhile gets no preview.
        if !self.path_of(of).is_file() {
            return Err(io::ErrorKind::NotFound.into());
        }
        let path = self.sidecar_path(of);
        let old = std::fs::read(&path)?;
        let mut sidecar: Sidecar = serde_json::from_slice(&old).map_err(io::Error::other)?;
        sidecar.preview = Some(record);
        let json = serde_json::to_vec(&sidecar).map_err(io::Error::other)?;
        let temp = self.dir.join(format!(".tmp-{}", random_hex()?));
        let written = std::fs::write(&temp, &json).and_then(|()| std::fs::rename(&temp, &path));
        if let Err(e) = written {
            let _ = std::fs::remove_file(&temp);
            return Err(e);
        }
        // A few bytes more: counted, never refused.
        let grown = (json.len() as u64).saturating_sub(old.len() as u64);
        self.usage.used.fetch_add(grown, Ordering::AcqRel);
        Ok(())
    }

    /// Deletes `of`'s preview, if any, giving its bytes back.
    pub(super) fn remove_preview_blocking(&self, of: &StoredName) {
        // Both names, whatever the sidecar says: a job may have placed and
        // recorded a preview since the caller read it.
        for kind in [Kind::Jpeg, Kind::Png] {
            let Some(name) = PreviewName::new(of, kind) else {
                continue;
            };
            let path = self.preview_path(&name);
            let size = std::fs::metadata(&path).map_or(0, |m| m.len());
            if std::fs::remove_file(&path).is_ok() {
                self.usage.release(size);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use super::*;
    use crate::media::DisplayName;

    fn scratch_dir() -> std::path::PathBuf {
        let dir =
            std::env::temp_dir().join(format!("roomcast-preview-files-{}", random_hex().unwrap()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[tokio::test]
    async fn a_preview_is_recorded_kept_by_attach_and_swept_with_its_upload() {
        let dir = scratch_dir();
        let ttl = Duration::from_secs(3600);
        let store = LocalStore::with_limits(&dir, None, ttl);
        let mut upload = store.begin().await.unwrap();
        upload.write(b"\x89PNG\r\n\x1a\n-pixels-").await.unwrap();
        let info = upload
            .commit(Kind::Png, DisplayName::sanitize(Some("a.png")), None)
            .await
            .unwrap();
        let (s, name) = (store.clone(), info.name.clone());
        let put = tokio::task::spawn_blocking(move || {
            s.put_preview_blocking(&name, Kind::Jpeg, b"jpeg bytes", (320, 200))
        });
        let preview = put.await.unwrap().unwrap();
        assert_eq!(preview.url(), format!("{}.preview.jpg", info.url()));
        assert!(store.preview_path(&preview.name).is_file());
        let attached = store.attach(&info.url(), "anyone").await.unwrap();
        assert_eq!(attached.preview, Some(preview.clone()));
        // Marking it attached rewrote the sidecar and kept the preview.
        let again = store.resolve(&info.url()).await.unwrap().unwrap();
        assert!(again.attached);
        assert_eq!(again.preview, Some(preview));
        let counted = LocalStore::with_limits(&dir, None, ttl).used_bytes();
        assert_eq!(store.used_bytes(), counted, "the preview is counted");

        // Unattached and old: the sweep takes the preview along.
        let mut upload = store.begin().await.unwrap();
        upload.write(b"\x89PNG\r\n\x1a\n-more-").await.unwrap();
        let old = upload
            .commit(Kind::Png, DisplayName::sanitize(Some("b.png")), None)
            .await
            .unwrap();
        // Two previews placed: the sidecar names the second only (as when a
        // job records one after the sweep read the sidecar); both go.
        for kind in [Kind::Png, Kind::Jpeg] {
            let (s, name) = (store.clone(), old.name.clone());
            tokio::task::spawn_blocking(move || {
                s.put_preview_blocking(&name, kind, b"img", (9, 9))
            })
            .await
            .unwrap()
            .unwrap();
        }
        std::fs::File::options()
            .write(true)
            .open(store.path_of(&old.name))
            .unwrap()
            .set_modified(SystemTime::now() - 2 * ttl)
            .unwrap();
        assert_eq!(store.sweep_unattached(), 1);
        let left: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert!(
            !left.iter().any(|n| n.starts_with(old.name.as_str())),
            "{left:?}"
        );
        assert_eq!(
            left.len(),
            3,
            "the attached upload, its sidecar and preview: {left:?}"
        );
        assert_eq!(store.used_bytes(), counted);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_sidecar_cannot_name_another_uploads_preview() {
        let mine = StoredName::generate(Kind::Png).unwrap();
        let theirs = StoredName::generate(Kind::Png).unwrap();
        let record = |of: &StoredName| PreviewRecord {
            file: format!("{}.preview.jpg", of.as_str()),
            width: 1,
            height: 1,
        };
        assert!(PreviewInfo::from_record(&mine, &record(&mine)).is_some());
        assert!(PreviewInfo::from_record(&mine, &record(&theirs)).is_none());
        let escape = PreviewRecord {
            file: "../../etc/passwd".into(),
            width: 1,
            height: 1,
        };
        assert!(PreviewInfo::from_record(&mine, &escape).is_none());
    }
}
