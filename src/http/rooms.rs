//! `GET /api/rooms`: the active public rooms and how many people are in
//! each, so a newcomer can see where the conversation is.
//!
//! Only rooms with someone in them are listed, never a room whose name
//! starts with `private-` (any case), and at most [`MAX_LISTED`] of them:
//! the answer stays small however many rooms the server holds.

use http::header::{self, HeaderValue};
use http::{Method, Response, StatusCode};

use super::{Body, empty, full};
use crate::hub::Hub;

/// The most rooms one answer lists (the busiest ones).
pub const MAX_LISTED: usize = 50;

#[derive(serde::Serialize)]
struct Listed {
    room: String,
    online_count: usize,
}

#[derive(serde::Serialize)]
struct Answer {
    rooms: Vec<Listed>,
}

/// `200 {"rooms":[{"room","online_count"}, ...]}`, most online first, then
/// by name. `HEAD` gets the same headers and no body; other methods `405`.
pub fn list(hub: &Hub, method: &Method) -> Response<Body> {
    if method != Method::GET && method != Method::HEAD {
        return super::method_not_allowed("GET, HEAD");
    }
    let rooms = hub
        .public_rooms(MAX_LISTED)
        .into_iter()
        .map(|(room, online_count)| Listed { room, online_count })
        .collect();
    // Serializing our own struct to a Vec cannot fail.
    let bytes = serde_json::to_vec(&Answer { rooms }).unwrap_or_default();
    let len = bytes.len();
    let body = if method == Method::HEAD {
        empty()
    } else {
        full(bytes)
    };
    let mut res = Response::new(body);
    *res.status_mut() = StatusCode::OK;
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    res
}
