//! An image's preview in the bucket: the object `<stored name>.preview.<jpg|png>`
//! beside its upload, recorded in the upload's sidecar so it is found with
//! it. What the bucket does for the preview pool (read an upload whole, put
//! a preview) and for `GET /uploads/<preview name>` (a presigned GET).
//!
//! The preview object is written before the sidecar names it, so a sidecar
//! never names a preview that is not there. An upload may be deleted while
//! its preview is made ([`S3Store::delete`] deletes its data first, then
//! both preview names, then its sidecar): after writing, the job looks for
//! the data again and, if it is gone, deletes what it wrote, so neither a
//! preview nor a sidecar outlives its upload.

use bytes::Bytes;
use http::Method;

use super::client::{Call, read_limited};
use super::{S3Error, S3Store, sidecar_key};
use crate::media::local::PreviewRecord;
use crate::media::{Kind, PreviewInfo, PreviewName, StoredName};

impl S3Store {
    /// The whole object `name`, if it has at most `max` bytes (`TooLarge`
    /// otherwise), read within the upload timeout.
    pub async fn read_whole(&self, name: &StoredName, max: u64) -> Result<Bytes, S3Error> {
        let read = async {
            let res = self
                .client
                .expect_ok(Call::new(
                    Method::GET,
                    Some(name.as_str()),
                    self.put_timeout,
                ))
                .await?;
            read_limited(res.into_body(), usize::try_from(max).unwrap_or(usize::MAX)).await
        };
        tokio::time::timeout(self.put_timeout, read)
            .await
            .map_err(|_| S3Error::Unreachable("the object's bytes stalled".into()))?
    }

    /// Stores `bytes`, a `kind` (JPEG or PNG) preview of upload `of`, beside
    /// it and records it in its sidecar, keeping every other field there.
    /// `None` if the upload is gone (nothing is left behind then).
    pub async fn put_preview(
        &self,
        of: &StoredName,
        kind: Kind,
        bytes: Vec<u8>,
        (width, height): (u32, u32),
    ) -> Result<Option<PreviewInfo>, S3Error> {
        let name = PreviewName::new(of, kind)
            .ok_or_else(|| S3Error::Invalid("previews are JPEG or PNG".into()))?;
        self.put_small(name.as_str(), bytes, kind.header_value())
            .await?;
        let recorded = match self.record_preview(of, &name, (width, height)).await {
            Ok(recorded) => recorded,
            Err(e) => {
                // The sidecar may or may not name it now (a rewrite whose
                // answer was lost): the object stays, so a record never
                // points at nothing; deleting the upload deletes both
                // preview names whatever the sidecar says.
                return Err(e);
            }
        };
        let kept = if recorded {
            // The record is written: the object stays unless the upload is
            // gone, whatever this check's own fate.
            self.head(of.as_str())
                .await
                .map_or(true, |head| head.is_some())
        } else {
            false
        };
        if kept {
            return Ok(Some(PreviewInfo {
                name,
                width,
                height,
            }));
        }
        // Deleted meanwhile: take back what was written.
        self.delete_key(name.as_str()).await?;
        if recorded {
            self.delete_key(&sidecar_key(of)).await?;
        }
        Ok(None)
    }

    /// Rewrites `of`'s sidecar naming the preview `name`: read, changed,
    /// written back whole, so fields this server does not know are kept.
    /// `false` if there is no sidecar (the upload is gone).
    async fn record_preview(
        &self,
        of: &StoredName,
        name: &PreviewName,
        (width, height): (u32, u32),
    ) -> Result<bool, S3Error> {
        let Some(old) = self.read_sidecar_bytes(of).await? else {
            return Ok(false);
        };
        let mut sidecar: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&old)
            .map_err(|e| S3Error::Invalid(format!("an unreadable sidecar: {e}")))?;
        let record = PreviewRecord {
            file: name.as_str().to_owned(),
            width,
            height,
        };
        let record = serde_json::to_value(record)
            .map_err(|e| S3Error::Invalid(format!("a preview record: {e}")))?;
        sidecar.insert("preview".to_owned(), record);
        let json = serde_json::to_vec(&sidecar)
            .map_err(|e| S3Error::Invalid(format!("a sidecar: {e}")))?;
        self.put_small(&sidecar_key(of), json, "application/json")
            .await?;
        Ok(true)
    }

    /// A presigned `method` (`GET` or `HEAD`) of the preview `name`, or
    /// `None` unless its upload's sidecar records it. Signed to be answered
    /// with the preview's type, `inline`.
    pub async fn presign_preview(
        &self,
        name: &PreviewName,
        method: &Method,
    ) -> Result<Option<String>, S3Error> {
        let recorded = self
            .info(name.of().clone())
            .await?
            .and_then(|info| info.preview)
            .is_some_and(|preview| preview.name == *name);
        if !recorded {
            return Ok(None);
        }
        Ok(Some(self.presign_served(
            method,
            name.as_str(),
            name.kind().header_value(),
            "inline".to_owned(),
        )))
    }
}
