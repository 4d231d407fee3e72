//! `GET`/`HEAD /static/{path}`: the UI's files, embedded at build time or
//! streamed from `--static-dir` in bounded chunks. The path is decoded and checked once, here: `..`,
//! `.`, empty segments, backslashes, NUL and absolute paths never reach a
//! lookup or the file system; they are `404`.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Response, StatusCode};
use percent_encoding::percent_decode_str;

use http_body_util::BodyExt;

use super::file_body::FileBody;
use super::{Body, empty, full};

mod embedded {
    include!(concat!(env!("OUT_DIR"), "/ui_assets.rs"));
}

pub use embedded::INDEX_TEMPLATE;

/// A relative path inside `static/` that cannot escape it.
#[derive(Debug, PartialEq, Eq)]
pub struct AssetPath(String);

impl AssetPath {
    /// Decodes and checks the part of the URL path after `/static/`.
    pub fn parse(raw: &str) -> Option<Self> {
        let decoded = percent_decode_str(raw).decode_utf8().ok()?;
        if decoded.is_empty() || decoded.starts_with('/') || decoded.contains(['\\', '\0']) {
            return None;
        }
        if decoded
            .split('/')
            .any(|seg| seg.is_empty() || seg == "." || seg == "..")
        {
            return None;
        }
        Some(Self(decoded.into_owned()))
    }
}

/// Where the UI's static files come from.
#[derive(Debug, Clone)]
pub enum StaticFiles {
    /// The copy built into the binary.
    Embedded,
    /// A directory on disk (for UI work).
    Dir(PathBuf),
}

fn content_type(path: &str) -> HeaderValue {
    let mime = mime_guess::from_path(path).first_or_octet_stream();
    let textual =
        mime.type_() == "text" || matches!(mime.subtype().as_str(), "javascript" | "json");
    let value = if textual {
        format!("{mime}; charset=utf-8")
    } else {
        mime.to_string()
    };
    HeaderValue::from_str(&value).unwrap_or(HeaderValue::from_static("application/octet-stream"))
}

/// Whether `If-None-Match` already names `etag`.
pub fn etag_matches(headers: &HeaderMap, etag: &str) -> bool {
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().trim_start_matches("W/"))
        .any(|t| t == etag || t == "*")
}

/// What a `200` sends: an embedded file, or one opened in `--static-dir`.
enum Content {
    Embedded(Bytes),
    File(tokio::fs::File, u64),
}

fn answer(
    method: &Method,
    headers: &HeaderMap,
    path: &str,
    etag: &str,
    content: Content,
) -> Response<Body> {
    let not_modified = etag_matches(headers, etag);
    let status = if not_modified {
        StatusCode::NOT_MODIFIED
    } else {
        StatusCode::OK
    };
    let len = match &content {
        Content::Embedded(bytes) => bytes.len() as u64,
        Content::File(_, len) => *len,
    };
    let body = if not_modified || method == Method::HEAD {
        empty()
    } else {
        match content {
            Content::Embedded(bytes) => full(bytes),
            Content::File(file, len) => FileBody::new(file, len).boxed_unsync(),
        }
    };
    let mut res = Response::builder()
        .status(status)
        .header(header::ETAG, etag)
        .header(header::CACHE_CONTROL, "no-cache")
        .header(header::X_CONTENT_TYPE_OPTIONS, "nosniff")
        .body(body)
        .expect("valid headers");
    if !not_modified {
        res.headers_mut()
            .insert(header::CONTENT_TYPE, content_type(path));
        res.headers_mut()
            .insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    }
    res
}

impl StaticFiles {
    /// Answers a `GET`/`HEAD` for the path after `/static/`.
    pub async fn serve(
        &self,
        method: &Method,
        headers: &HeaderMap,
        raw_path: &str,
    ) -> Response<Body> {
        let Some(AssetPath(path)) = AssetPath::parse(raw_path) else {
            return super::not_found();
        };
        match self {
            Self::Embedded => match embedded::STATIC_FILES.iter().find(|(p, _, _)| *p == path) {
                Some((_, bytes, etag)) => answer(
                    method,
                    headers,
                    &path,
                    etag,
                    Content::Embedded(Bytes::from_static(bytes)),
                ),
                None => super::not_found(),
            },
            Self::Dir(dir) => match open_on_disk(dir, &path).await {
                Some((etag, file, len)) => {
                    answer(method, headers, &path, &etag, Content::File(file, len))
                }
                None => super::not_found(),
            },
        }
    }
}

/// Opens a file of `--static-dir`: its ETag (size and modification time),
/// the open file and its length, as one snapshot (the metadata is the open
/// file's, so a file replaced meanwhile is not mixed with the old one).
async fn open_on_disk(dir: &Path, path: &str) -> Option<(String, tokio::fs::File, u64)> {
    let file = tokio::fs::File::open(dir.join(path)).await.ok()?;
    let meta = file.metadata().await.ok()?;
    if !meta.is_file() {
        return None;
    }
    let modified = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos());
    Some((
        format!("\"{:x}-{:x}\"", meta.len(), modified),
        file,
        meta.len(),
    ))
}

/// Whether a response came from the error path (used by tests).
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traversal_and_odd_paths_are_refused() {
        for bad in [
            "",
            "../Cargo.toml",
            "..%2fCargo.toml",
            "%2e%2e/x",
            "a/../../x",
            "/etc/passwd",
            "%2fetc%2fpasswd",
            "a//b",
            "./app.js",
            "a\\..\\b",
            "a%5c..%5cb",
            "x%00.js",
            "%ff",
        ] {
            assert_eq!(AssetPath::parse(bad), None, "{bad:?} must be refused");
        }
        assert_eq!(AssetPath::parse("app.js"), Some(AssetPath("app.js".into())));
        assert_eq!(
            AssetPath::parse("img/a%20b.png"),
            Some(AssetPath("img/a b.png".into()))
        );
    }

    #[test]
    fn if_none_match_handles_lists_and_weak_tags() {
        let mut h = HeaderMap::new();
        h.insert(
            header::IF_NONE_MATCH,
            HeaderValue::from_static("\"a\", W/\"b\""),
        );
        assert!(etag_matches(&h, "\"b\""));
        assert!(!etag_matches(&h, "\"c\""));
    }
}
