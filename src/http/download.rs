//! `GET`/`HEAD /uploads/{name}`: a stored upload, streamed from disk in
//! bounded chunks, with single byte ranges so video and audio can seek; or,
//! with the S3 store, a `302` to a short-lived presigned GET of the object
//! (the bucket then serves the bytes, ranges included).
//!
//! Only names the server generates are served (never a sidecar or a
//! temporary file). Every answer from the directory says `nosniff` and
//! `Content-Security-Policy: sandbox`, so even a file that got past the
//! checks cannot run script on our origin; anything but images, audio and
//! video is sent as an attachment (a download), never rendered as a
//! document. A redirect to the bucket signs the type and that disposition
//! into the URL (the bucket's other headers are its own).
//!
//! Ranges: one `bytes=a-b`, `a-` or `-n` gets `206`; a range that starts at
//! or past the end (or `-0`) gets `416` with `Content-Range: bytes */len`;
//! several ranges (no `multipart/byteranges` here) and a header that does
//! not parse are ignored and the whole file is sent (`200`), as RFC 9110
//! allows.

use std::io;

use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Response, StatusCode};
use http_body_util::BodyExt;
use tokio::io::AsyncSeekExt;

use super::file_body::FileBody;
use super::static_files::etag_matches;
use super::{Body, empty};
use crate::media::{LocalStore, MediaStore, PreviewName, S3Error, S3Store, StoredInfo, StoredName};

/// What a `Range` header asks for, against a file of a known length.
#[derive(Debug, PartialEq, Eq)]
pub enum RangeAnswer {
    /// No range (or one to ignore): the whole file.
    Full,
    /// Bytes `start..=end`.
    Part {
        /// First byte.
        start: u64,
        /// Last byte, inclusive.
        end: u64,
    },
    /// `416`.
    Unsatisfiable,
}

impl RangeAnswer {
    /// Reads a `Range` header value for a file of `len` bytes.
    pub fn parse(value: Option<&str>, len: u64) -> Self {
        let Some((unit, spec)) = value.and_then(|v| v.split_once('=')) else {
            return Self::Full;
        };
        if !unit.trim().eq_ignore_ascii_case("bytes") {
            return Self::Full;
        }
        if spec.contains(',') {
            // Several ranges (multipart/byteranges) are not served; RFC 9110
            // lets a server ignore Range, which still gives the client the file.
            return Self::Full;
        }
        let Some((a, b)) = spec.trim().split_once('-') else {
            return Self::Full;
        };
        let number = |s: &str| {
            let s = s.trim();
            (!s.is_empty() && s.bytes().all(|c| c.is_ascii_digit()))
                .then(|| s.parse::<u64>().unwrap_or(u64::MAX))
        };
        match (number(a), number(b)) {
            (None, Some(suffix)) if a.trim().is_empty() => match suffix.min(len) {
                0 => Self::Unsatisfiable,
                n => Self::Part {
                    start: len - n,
                    end: len - 1,
                },
            },
            (Some(start), None) if b.trim().is_empty() => match start < len {
                true => Self::Part {
                    start,
                    end: len - 1,
                },
                false => Self::Unsatisfiable,
            },
            (Some(start), Some(end)) if start <= end => match start < len {
                true => Self::Part {
                    start,
                    end: end.min(len - 1),
                },
                false => Self::Unsatisfiable,
            },
            _ => Self::Full,
        }
    }
}

/// Answers `GET`/`HEAD` for the name after `/uploads/`.
pub async fn serve(
    store: &MediaStore,
    method: &Method,
    headers: &HeaderMap,
    raw_name: &str,
) -> Response<Body> {
    let Some(name) = StoredName::parse(raw_name) else {
        return match PreviewName::parse(raw_name) {
            Some(preview) => super::preview::serve(store, method, headers, &preview).await,
            None => super::not_found(),
        };
    };
    match store {
        MediaStore::Local(local) => serve_file(local, method, headers, name).await,
        MediaStore::S3 { bucket, .. } => redirect(bucket, method, name).await,
    }
}

/// A `302` to a presigned URL of a complete upload (one that passed its
/// checks: it has a sidecar), signed for the request's own method (a URL
/// signed for `GET` is refused to a `HEAD`); `404` for anything else.
async fn redirect(bucket: &S3Store, method: &Method, name: StoredName) -> Response<Body> {
    let presigned = bucket.presign_get(&name, &signed_method(method)).await;
    redirect_to(bucket, presigned)
}

/// The method a presigned URL is signed for, answering `method`.
pub(super) fn signed_method(method: &Method) -> Method {
    match *method {
        Method::HEAD => Method::HEAD,
        _ => Method::GET,
    }
}

/// A `302` to `presigned` (a URL of `bucket`'s), `404` if there is none,
/// `503` if the bucket could not say.
pub(super) fn redirect_to(
    bucket: &S3Store,
    presigned: Result<Option<String>, S3Error>,
) -> Response<Body> {
    match presigned {
        Ok(Some(url)) => {
            let Ok(location) = HeaderValue::from_str(&url) else {
                return super::not_found();
            };
            let mut res = Response::new(empty());
            *res.status_mut() = StatusCode::FOUND;
            let h = res.headers_mut();
            h.insert(header::LOCATION, location);
            // The URL expires: the redirect is cached for half its life at
            // most (a minute at most), so a cached one still works.
            let max_age = redirect_max_age(bucket.presign_ttl());
            if let Ok(v) = HeaderValue::from_str(&format!("private, max-age={max_age}")) {
                h.insert(header::CACHE_CONTROL, v);
            }
            h.insert(
                header::REFERRER_POLICY,
                HeaderValue::from_static("no-referrer"),
            );
            res
        }
        Ok(None) => super::not_found(),
        Err(e) => {
            tracing::warn!("cannot serve an upload: {e}");
            super::upload::storage_unavailable()
        }
    }
}

/// Seconds a redirect to a URL that works for `ttl` may be cached.
fn redirect_max_age(ttl: std::time::Duration) -> u64 {
    (ttl.as_secs() / 2).min(60)
}

async fn serve_file(
    store: &LocalStore,
    method: &Method,
    headers: &HeaderMap,
    name: StoredName,
) -> Response<Body> {
    let (mut file, len) = match super::file_body::open_regular(&store.path_of(&name)).await {
        Ok(Some(found)) => found,
        Ok(None) => return super::not_found(),
        Err(e) => return storage_failed(&e),
    };
    let info = match store.info(name, len).await {
        Ok(info) => info,
        Err(e) => return storage_failed(&e),
    };
    let etag = format!("\"{}\"", info.name.id());
    if etag_matches(headers, &etag) {
        let mut res = Response::new(empty());
        *res.status_mut() = StatusCode::NOT_MODIFIED;
        common_headers(res.headers_mut(), &info, &etag);
        return res;
    }

    // `If-Range` with another validator means "the whole file, it changed".
    let if_range_ok = headers
        .get(header::IF_RANGE)
        .is_none_or(|v| v.as_bytes() == etag.as_bytes());
    let range = match if_range_ok {
        true => RangeAnswer::parse(
            headers.get(header::RANGE).and_then(|v| v.to_str().ok()),
            len,
        ),
        false => RangeAnswer::Full,
    };
    let (status, start, count) = match range {
        RangeAnswer::Full => (StatusCode::OK, 0, len),
        RangeAnswer::Part { start, end } => (StatusCode::PARTIAL_CONTENT, start, end - start + 1),
        RangeAnswer::Unsatisfiable => {
            let mut res = super::error(
                StatusCode::RANGE_NOT_SATISFIABLE,
                "range_not_satisfiable",
                format!("the file has {len} bytes; ask for one range within them"),
            );
            let h = res.headers_mut();
            h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{len}")) {
                h.insert(header::CONTENT_RANGE, v);
            }
            return res;
        }
    };

    let body = if method == Method::HEAD || count == 0 {
        empty()
    } else {
        if start > 0
            && let Err(e) = file.seek(io::SeekFrom::Start(start)).await
        {
            return storage_failed(&e);
        }
        FileBody::new(file, count).boxed_unsync()
    };
    let mut res = Response::new(body);
    *res.status_mut() = status;
    let h = res.headers_mut();
    common_headers(h, &info, &etag);
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(count));
    if status == StatusCode::PARTIAL_CONTENT {
        let end = start + count - 1;
        if let Ok(v) = HeaderValue::from_str(&format!("bytes {start}-{end}/{len}")) {
            h.insert(header::CONTENT_RANGE, v);
        }
    }
    res
}

/// The headers of every answer about a stored file (`304` included).
fn common_headers(h: &mut HeaderMap, info: &StoredInfo, etag: &str) {
    stored_file_headers(h, info.name.kind().header_value());
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if let Ok(v) = HeaderValue::from_str(etag) {
        h.insert(header::ETAG, v);
    }
    if let Ok(v) = HeaderValue::from_str(&info.content_disposition()) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
}

fn storage_failed(e: &io::Error) -> Response<Body> {
    tracing::warn!("cannot read a stored upload: {e}");
    super::error(
        StatusCode::INTERNAL_SERVER_ERROR,
        "storage_failed",
        "the server could not read this file; try again later",
    )
}

/// What every stored file (an upload or its preview) is served with: its
/// type, never sniffed, sandboxed, cached for good (names are never reused).
pub(super) fn stored_file_headers(h: &mut HeaderMap, content_type: &'static str) {
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("sandbox"),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=31536000, immutable"),
    );
}

#[cfg(test)]
mod tests {
    use super::RangeAnswer::{self, Full, Part, Unsatisfiable};
    use super::redirect_max_age;
    use std::time::Duration;

    #[test]
    fn a_cached_redirect_never_outlives_its_url() {
        let secs = |s| redirect_max_age(Duration::from_secs(s));
        assert_eq!(secs(300), 60);
        assert_eq!(secs(120), 60);
        assert_eq!(secs(61), 30);
        assert_eq!(secs(1), 0);
    }

    #[test]
    fn ranges_parse_as_rfc_9110_says() {
        let p = |v: &str| RangeAnswer::parse(Some(v), 100);
        assert_eq!(p("bytes=0-9"), Part { start: 0, end: 9 });
        assert_eq!(p("bytes=90-"), Part { start: 90, end: 99 });
        assert_eq!(p("bytes=-10"), Part { start: 90, end: 99 });
        assert_eq!(p("bytes=-500"), Part { start: 0, end: 99 });
        assert_eq!(p("bytes=50-500"), Part { start: 50, end: 99 });
        assert_eq!(p("Bytes = 1-1"), Part { start: 1, end: 1 });
        assert_eq!(p("bytes=100-"), Unsatisfiable);
        assert_eq!(p("bytes=100-200"), Unsatisfiable);
        assert_eq!(p("bytes=-0"), Unsatisfiable);
        assert_eq!(p("bytes=0-1,5-6"), Full);
        for ignored in [
            "bytes=5-1",
            "bytes=-",
            "bytes=a-b",
            "bytes=+1-2",
            "items=0-1",
            "0-1",
        ] {
            assert_eq!(p(ignored), Full, "{ignored}");
        }
        assert_eq!(RangeAnswer::parse(None, 100), Full);
        assert_eq!(RangeAnswer::parse(Some("bytes=0-"), 0), Unsatisfiable);
        assert_eq!(RangeAnswer::parse(Some("bytes=-5"), 0), Unsatisfiable);
    }
}
