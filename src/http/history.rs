//! `GET /api/rooms/{room}/messages?before=SEQ&limit=N`: scrollback. A page
//! of a room's history older than what a client shows, oldest first, in the
//! shape of `welcome.history`. The query is checked here, once, into typed
//! values; every refusal is a JSON error saying what to send instead.

use http::{Method, Response, StatusCode};
use percent_encoding::percent_decode_str;

use super::{Body, error, json_text};
use crate::auth::Auth;
use crate::hub::{Hub, RoomName};

/// Messages one page holds by default, and at most.
pub const DEFAULT_LIMIT: usize = 50;
/// The most one page may ask for.
pub const MAX_LIMIT: usize = 100;

/// A checked scrollback request.
#[derive(Debug, PartialEq, Eq)]
struct Query {
    before: Option<u64>,
    limit: usize,
    /// A signed token (token mode), percent-decoded.
    token: Option<String>,
}

fn bad(message: impl AsRef<str>) -> Response<Body> {
    error(StatusCode::BAD_REQUEST, "bad_request", message)
}

/// Parses `before` and `limit`; anything else in the query is ignored.
fn parse_query(query: Option<&str>) -> Result<Query, String> {
    let mut q = Query {
        before: None,
        limit: DEFAULT_LIMIT,
        token: None,
    };
    for pair in query.unwrap_or_default().split('&') {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        match name {
            "before" => {
                q.before = Some(
                    value
                        .parse::<u64>()
                        .ok()
                        .filter(|b| (1..=i64::MAX as u64).contains(b))
                        .ok_or_else(|| {
                            format!(
                                "`before` must be a message seq: a whole number from 1 to {}",
                                i64::MAX
                            )
                        })?,
                );
            }
            "limit" => {
                q.limit = value
                    .parse::<usize>()
                    .ok()
                    .filter(|l| (1..=MAX_LIMIT).contains(l))
                    .ok_or_else(|| {
                        format!("`limit` must be a whole number from 1 to {MAX_LIMIT}")
                    })?;
            }
            "token" => {
                q.token = Some(
                    percent_decode_str(value)
                        .decode_utf8()
                        .map_err(|_| "`token` must be UTF-8".to_owned())?
                        .into_owned(),
                );
            }
            _ => {}
        }
    }
    Ok(q)
}

/// The room name from the path segment (percent-encoded).
fn room_name(raw: &str) -> Result<RoomName, String> {
    let decoded = percent_decode_str(raw)
        .decode_utf8()
        .map_err(|_| "the room name must be UTF-8".to_owned())?;
    RoomName::parse(&decoded).map_err(|e| e.to_string())
}

/// Answers a scrollback request for the room in `raw_room`, read by
/// whoever `auth` lets join it.
pub async fn page(
    hub: &Hub,
    auth: &Auth,
    req: &http::request::Parts,
    raw_room: &str,
) -> Response<Body> {
    let method = &req.method;
    let query = req.uri.query();
    if method != Method::GET {
        return super::method_not_allowed("GET");
    }
    let room = match room_name(raw_room) {
        Ok(room) => room,
        Err(e) => return bad(e),
    };
    let q = match parse_query(query) {
        Ok(q) => q,
        Err(e) => return bad(e),
    };
    if let Err(denied) = auth.reader(&req.headers, q.token.as_deref(), &room) {
        return error(denied.status, denied.code, denied.message);
    }
    let (messages, more) = match hub.page(&room, q.before, q.limit).await {
        Ok(page) => page,
        Err(refused) => {
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                refused.code.as_str(),
                refused.message,
            );
        }
    };
    if messages.is_empty() && q.before.is_none() {
        return error(
            StatusCode::NOT_FOUND,
            "unknown_room",
            format!("room {:?} has no messages", room.shown()),
        );
    }
    // Each message is already JSON (from the store, the backbone or the
    // ring): spliced in as it is, never parsed again.
    let body = format!(
        r#"{{"room":{},"messages":[{}],"has_more":{more}}}"#,
        serde_json::to_string(room.shown()).unwrap_or_default(),
        messages.join(","),
    );
    json_text(StatusCode::OK, body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn before_and_limit_are_checked() {
        assert_eq!(
            parse_query(None),
            Ok(Query {
                before: None,
                limit: DEFAULT_LIMIT,
                token: None
            })
        );
        assert_eq!(
            parse_query(Some("before=42&limit=100&x=1")),
            Ok(Query {
                before: Some(42),
                limit: 100,
                token: None
            })
        );
        for bad in [
            "before=-1",
            "before=0",
            "before=abc",
            "before=",
            "before=99999999999999999999",
            "before=9223372036854775808",
            "limit=0",
            "limit=101",
            "limit=1000000",
            "limit=ten",
        ] {
            let e = parse_query(Some(bad)).unwrap_err();
            assert!(e.starts_with('`'), "{bad}: {e}");
        }
    }
}
