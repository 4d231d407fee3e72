//! `GET`/`HEAD /uploads/<stored name>.preview.<jpg|png>`: an image's
//! preview, made by the server (see `media/preview.rs`). Only names the
//! server could have generated are served, with the same protective headers
//! as uploads. Previews are small and whole: no ranges. With a bucket, as
//! for uploads, the answer is a `302` to a presigned GET of the preview
//! object, if its upload's sidecar records it.

use std::io;

use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Response, StatusCode};
use http_body_util::BodyExt;

use super::file_body::FileBody;
use super::static_files::etag_matches;
use super::{Body, empty};
use crate::media::{MediaStore, PreviewName};

/// Answers `GET`/`HEAD` for a preview.
pub async fn serve(
    store: &MediaStore,
    method: &Method,
    headers: &HeaderMap,
    name: &PreviewName,
) -> Response<Body> {
    let store = match store {
        MediaStore::Local(local) => local,
        MediaStore::S3 { bucket, .. } => {
            let method = super::download::signed_method(method);
            let presigned = bucket.presign_preview(name, &method).await;
            return super::download::redirect_to(bucket, presigned);
        }
    };
    let (file, len) = match super::file_body::open_regular(&store.preview_path(name)).await {
        Ok(Some(found)) => found,
        Ok(None) => return super::not_found(),
        Err(e) => return storage_failed(&e),
    };
    // The upload's id plus the preview's kind: one preview per upload, never
    // rewritten.
    let etag = format!("\"{}-preview-{}\"", name.of().id(), name.kind().ext());
    let (status, body) = if etag_matches(headers, &etag) {
        (StatusCode::NOT_MODIFIED, empty())
    } else if method == Method::HEAD {
        (StatusCode::OK, empty())
    } else {
        (StatusCode::OK, FileBody::new(file, len).boxed_unsync())
    };
    let mut res = Response::new(body);
    *res.status_mut() = status;
    let h = res.headers_mut();
    super::download::stored_file_headers(h, name.kind().header_value());
    h.insert(
        header::CONTENT_DISPOSITION,
        HeaderValue::from_static("inline"),
    );
    if let Ok(v) = HeaderValue::from_str(&etag) {
        h.insert(header::ETAG, v);
    }
    if status == StatusCode::OK {
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    }
    res
}

fn storage_failed(e: &io::Error) -> Response<Body> {
    tracing::warn!("cannot read a stored preview: {e}");
    super::error(
        StatusCode::INTERNAL_SERVER_ERROR,
        "storage_failed",
        "the server could not read this preview; try again later",
    )
}
