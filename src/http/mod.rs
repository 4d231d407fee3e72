//! Plain HTTP handlers and the helpers they share: the response body type,
//! JSON answers and errors, and the security headers every page carries.
//! Handlers here never touch WebSocket sessions.

pub mod address_slots;
pub mod client_addr;
pub mod download;
mod file_body;
pub mod history;
pub mod metrics;
pub mod pages;
pub mod presign;
pub mod preview;
pub mod rate_limit;
pub mod rooms;
pub mod static_files;
pub mod upload;

use std::net::SocketAddr;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full};

/// The client's socket address, put in each request's extensions by the
/// server (behind a proxy this is the proxy's address).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerAddr(pub SocketAddr);

/// The per-address slot of the TCP connection a request came on (see
/// [`address_slots`]), in each request's extensions: a WebSocket session
/// keeps a clone, so the slot is given back only when both the connection
/// and its session have ended.
#[derive(Debug, Clone)]
pub struct ConnectionSlot(pub std::sync::Arc<address_slots::Slot>);

/// The body of every response roomcast sends.
pub type Body = UnsyncBoxBody<Bytes, std::io::Error>;

/// A body holding `bytes`.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// An empty body.
pub fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed_unsync()
}

/// The CSP of every HTML page: no inline script or style, nothing from
/// other origins, no framing.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
img-src 'self' blob: data:; media-src 'self' blob:; connect-src 'self'; object-src 'none'; \
base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// A `200` JSON answer.
pub fn json(status: StatusCode, body: &impl serde::Serialize) -> Response<Body> {
    // Serializing our own response structs to a Vec cannot fail.
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CACHE_CONTROL, "no-store")
        .header(header::X_CONTENT_TYPE_OPTIONS, "nosniff")
        .body(full(bytes))
        .expect("static headers are valid")
}

/// A JSON answer whose body is already JSON text.
pub fn json_text(status: StatusCode, body: String) -> Response<Body> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CACHE_CONTROL, "no-store")
        .header(header::X_CONTENT_TYPE_OPTIONS, "nosniff")
        .body(full(body))
        .expect("static headers are valid")
}

/// A JSON error: `{"error": code, "message": message}`.
pub fn error(status: StatusCode, code: &str, message: impl AsRef<str>) -> Response<Body> {
    #[derive(serde::Serialize)]
    struct ErrorBody<'a> {
        error: &'a str,
        message: &'a str,
    }
    json(
        status,
        &ErrorBody {
            error: code,
            message: message.as_ref(),
        },
    )
}

/// `429 rate_limited` with `Retry-After`: `what` (say, "uploads") came too
/// often from the client's address; the next is due in `wait`.
pub fn rate_limited(what: &str, wait: std::time::Duration) -> Response<Body> {
    let secs = (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1);
    let mut res = error(
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
        format!("too many {what} from your address; try again in {secs} s"),
    );
    res.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    res
}

/// `404` for a path roomcast does not serve.
pub fn not_found() -> Response<Body> {
    error(
        StatusCode::NOT_FOUND,
        "not_found",
        "there is nothing at this path",
    )
}

/// `405` with the `Allow` header listing what the path accepts.
pub fn method_not_allowed(allow: &'static str) -> Response<Body> {
    let mut res = error(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("this path accepts {allow}"),
    );
    res.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    res
}

/// Adds the headers every HTML response carries.
pub fn html_headers(res: &mut Response<Body>) {
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
}
