//! `GET /api/rooms/{room}/messages?before=SEQ&limit=N`: scrollback. A page
//! of a room's history older than what a client shows, oldest first, in the
//! shape of `welcome.history`. The query is checked here, once, into typed
//! values; every refusal is a JSON error saying what to send instead.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{Method, Response, StatusCode};
use percent_encoding::percent_decode_str;

use super::address_slots::AddressSlots;
use super::{Body, error, json_text, rate_limited};
use crate::auth::Auth;
use crate::hub::{Hub, RoomName};

/// Messages one page holds by default, and at most.
pub const DEFAULT_LIMIT: usize = 50;
/// The most one page may ask for.
pub const MAX_LIMIT: usize = 100;
/// Pages one client address may have being read at once: the server reads
/// at most [`crate::hub::PAGE_READERS`] at once, and one client must not
/// take them all.
pub const PAGES_PER_ADDRESS: usize = 4;

/// What a page is read with, and for whom.
pub struct Reader<'a> {
    /// Where pages are read.
    pub hub: &'a Hub,
    /// Who may read which room.
    pub auth: &'a Auth,
    /// Pages being read per client address.
    pub per_address: &'a Arc<AddressSlots>,
    /// The request's client address (`None`: not counted).
    pub client: Option<IpAddr>,
}

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
/// whoever `reader.auth` lets join it.
pub async fn page(
    reader: Reader<'_>,
    req: &http::request::Parts,
    raw_room: &str,
) -> Response<Body> {
    let Reader {
        hub,
        auth,
        per_address,
        client,
    } = reader;
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
    // Held while the page is read.
    let _slot = match client.map(|ip| per_address.acquire(ip)) {
        Some(None) => {
            return rate_limited("history pages read at once", Duration::from_secs(1));
        }
        Some(Some(slot)) => Some(slot),
        None => None,
    };
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

    #[tokio::test]
    async fn an_address_with_its_share_of_pages_in_flight_is_refused_another() {
        let hub = Hub::new(crate::hub::HubConfig::default());
        let auth = Auth::default();
        let per_address = AddressSlots::new(PAGES_PER_ADDRESS);
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let (parts, ()) = http::Request::get("/api/rooms/lobby/messages")
            .body(())
            .unwrap()
            .into_parts();
        let read = |client| {
            let reader = Reader {
                hub: &hub,
                auth: &auth,
                per_address: &per_address,
                client,
            };
            page(reader, &parts, "lobby")
        };
        let in_flight: Vec<_> = (0..PAGES_PER_ADDRESS)
            .map(|_| per_address.acquire(ip).unwrap())
            .collect();
        let refused = read(Some(ip)).await;
        assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
        assert!(refused.headers().contains_key(http::header::RETRY_AFTER));
        // Another address reads (an empty room: 404), and so does this one
        // once a page is done.
        let other: IpAddr = "192.0.2.2".parse().unwrap();
        assert_eq!(read(Some(other)).await.status(), StatusCode::NOT_FOUND);
        drop(in_flight);
        assert_eq!(read(Some(ip)).await.status(), StatusCode::NOT_FOUND);
    }
}
