//! `GET /` (the chat page) and `GET /health`.
//!
//! The page is `templates/index.html` with `{{config}}` replaced by the
//! client's settings as HTML-escaped JSON, so the script learns the limits
//! and paths from the server it was served by.

use std::path::PathBuf;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Response, StatusCode};

use super::static_files::INDEX_TEMPLATE;
use super::{Body, CONTENT_SECURITY_POLICY, empty, full, html_headers};
use crate::config::Config;
use crate::media::{MediaStore, MediaStoreKind};

/// The client settings rendered into the page.
#[derive(serde::Serialize)]
struct ClientConfig {
    ws_path: &'static str,
    upload_path: &'static str,
    max_message_chars: usize,
    max_upload_bytes: u64,
    messages_per_second: u32,
    history: usize,
    /// `open` or `token`: whether joining needs an invitation.
    auth: &'static str,
    /// `local` (files go to `upload_path`) or `s3` (presigned uploads
    /// through `presign_path`, the bytes straight to the bucket).
    media: &'static str,
    presign_path: &'static str,
}

/// Escapes text for use inside a double-quoted HTML attribute.
fn escape_attr(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            c => out.push(c),
        }
    }
    out
}

/// The chat page, rendered once (embedded template) or per request (`--templates-dir`).
pub struct IndexPage {
    csp: HeaderValue,
    config_attr: String,
    rendered: Bytes,
    templates_dir: Option<PathBuf>,
}

impl IndexPage {
    /// Renders the embedded template, or remembers where to read it from.
    pub fn new(config: &Config) -> Self {
        let client = ClientConfig {
            ws_path: "/ws",
            upload_path: "/upload",
            max_message_chars: config.max_message_chars,
            max_upload_bytes: config.max_upload_bytes,
            messages_per_second: config.rate,
            history: config.welcome_history,
            auth: if config.auth.tokens_required() {
                "token"
            } else {
                "open"
            },
            media: match config.media_store {
                MediaStoreKind::Local => "local",
                MediaStoreKind::S3(_) => "s3",
            },
            presign_path: "/api/uploads",
        };
        // With a bucket the page PUTs files to it and shows images and
        // media redirected there: its origin joins the page's own.
        let csp = match &config.media_store {
            MediaStoreKind::Local => CONTENT_SECURITY_POLICY.to_owned(),
            MediaStoreKind::S3(target) => CONTENT_SECURITY_POLICY
                .replace(
                    "connect-src 'self'",
                    &format!("connect-src 'self' {}", target.endpoint),
                )
                .replace(
                    "img-src 'self'",
                    &format!("img-src 'self' {}", target.endpoint),
                )
                .replace(
                    "media-src 'self'",
                    &format!("media-src 'self' {}", target.endpoint),
                ),
        };
        let json = serde_json::to_string(&client).unwrap_or_default();
        let config_attr = escape_attr(&json);
        let rendered = Bytes::from(INDEX_TEMPLATE.replace("{{config}}", &config_attr));
        Self {
            csp: HeaderValue::from_str(&csp)
                .unwrap_or(HeaderValue::from_static(CONTENT_SECURITY_POLICY)),
            config_attr,
            rendered,
            templates_dir: config.templates_dir.clone(),
        }
    }

    /// Answers `GET`/`HEAD /`.
    pub async fn serve(&self, method: &Method) -> Response<Body> {
        let page = match &self.templates_dir {
            None => self.rendered.clone(),
            Some(dir) => match tokio::fs::read_to_string(dir.join("index.html")).await {
                Ok(t) => Bytes::from(t.replace("{{config}}", &self.config_attr)),
                Err(e) => {
                    return super::error(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "template_missing",
                        format!("cannot read index.html from --templates-dir: {e}"),
                    );
                }
            },
        };
        let len = page.len();
        let mut res = Response::new(if method == Method::HEAD {
            empty()
        } else {
            full(page)
        });
        let h = res.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        );
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        html_headers(&mut res);
        res.headers_mut()
            .insert(header::CONTENT_SECURITY_POLICY, self.csp.clone());
        res
    }
}

/// `GET /health`: `{"status":"ok"}`, or `503` `{"status":"degraded","reason":...}`
/// while the Redis backbone is disconnected or the media store's bucket
/// does not answer (so a load balancer can route new clients elsewhere).
pub fn health(hub: &crate::hub::Hub, media: &MediaStore) -> Response<Body> {
    match hub.degraded().or_else(|| media.degraded()) {
        None => super::json(StatusCode::OK, &serde_json::json!({ "status": "ok" })),
        Some(reason) => super::json(
            StatusCode::SERVICE_UNAVAILABLE,
            &serde_json::json!({ "status": "degraded", "reason": reason }),
        ),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn attribute_escaping_covers_quotes_and_tags() {
        assert_eq!(
            super::escape_attr(r#"{"a":"<b>&'"}"#),
            "{&quot;a&quot;:&quot;&lt;b&gt;&amp;&#39;&quot;}"
        );
    }
}
