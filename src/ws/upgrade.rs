//! The WebSocket handshake at `GET /ws/{room}/{username}`.
//!
//! Everything is checked before the upgrade, the way a careful framework
//! does it: the upgrade headers, the protocol version, the key, the room and
//! user names, the `after` query, how often the client's address joins,
//! and the connection limits (the server's and the address's). A bad
//! request gets a JSON error and never becomes a WebSocket.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use http::header::{self, HeaderMap, HeaderValue};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use percent_encoding::percent_decode_str;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

use super::expiry::{Expiry, TokenExpiry, close_at_expiry};
use super::session;
use crate::app::AppState;
use crate::auth::{Denied, Presented};
use crate::http::client_addr::request_client;
use crate::http::{Body, ConnectionSlot, empty, error, json, rate_limited};
use crate::hub::{CloseReason, JoinError, Joining, RoomName, UserName, frames};

fn header_has_token(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// Why a handshake was refused; becomes a JSON error response.
struct Refused {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl Refused {
    fn bad(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            code: "bad_request",
            message: message.into(),
        }
    }

    fn into_response(self) -> Response<Body> {
        let mut res = error(self.status, self.code, self.message);
        if self.status == StatusCode::UPGRADE_REQUIRED {
            res.headers_mut().insert(
                header::SEC_WEBSOCKET_VERSION,
                HeaderValue::from_static("13"),
            );
        }
        res
    }
}

/// Checks the handshake headers; returns the `Sec-WebSocket-Accept` value.
fn check_handshake(headers: &HeaderMap) -> Result<HeaderValue, Refused> {
    if !header_has_token(headers, header::CONNECTION, "upgrade")
        || !header_has_token(headers, header::UPGRADE, "websocket")
    {
        return Err(Refused::bad(
            "this endpoint is a WebSocket: send `Connection: Upgrade` and `Upgrade: websocket`",
        ));
    }
    if headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .and_then(|v| v.to_str().ok())
        != Some("13")
    {
        return Err(Refused {
            status: StatusCode::UPGRADE_REQUIRED,
            code: "unsupported_version",
            message: "only WebSocket version 13 is supported".into(),
        });
    }
    // The key is 16 random bytes in base64: 24 characters ending in "==".
    match headers
        .get(header::SEC_WEBSOCKET_KEY)
        .map(HeaderValue::as_bytes)
    {
        Some(k)
            if k.len() == 24
                && k.ends_with(b"==")
                && k[..22]
                    .iter()
                    .all(|&c| c.is_ascii_alphanumeric() || c == b'+' || c == b'/') =>
        {
            HeaderValue::from_str(&derive_accept_key(k))
                .map_err(|_| Refused::bad("bad Sec-WebSocket-Key"))
        }
        _ => Err(Refused::bad(
            "`Sec-WebSocket-Key` is missing or is not 16 bytes of base64",
        )),
    }
}

/// Percent-decodes one path segment and validates it with `parse`.
fn name<T, E: ToString>(raw: &str, parse: impl Fn(&str) -> Result<T, E>) -> Result<T, Refused> {
    let decoded = percent_decode_str(raw)
        .decode_utf8()
        .map_err(|_| Refused::bad("room and user names must be UTF-8"))?;
    parse(&decoded).map_err(|e| Refused::bad(e.to_string()))
}

/// What the WebSocket URL's query says: `after`, `claim`, `token` (other
/// parameters are ignored).
#[derive(Debug, Default)]
struct Query {
    after: Option<u64>,
    claim: Option<String>,
    token: Option<String>,
}

fn parse_query(query: Option<&str>) -> Result<Query, Refused> {
    let mut q = Query::default();
    for pair in query.unwrap_or_default().split('&') {
        let Some((name, value)) = pair.split_once('=') else {
            continue;
        };
        let decoded = || {
            percent_decode_str(value)
                .decode_utf8()
                .map(|v| v.into_owned())
                .map_err(|_| Refused::bad(format!("`{name}` must be UTF-8")))
        };
        match name {
            "after" => {
                q.after =
                    Some(value.parse::<u64>().map_err(|_| {
                        Refused::bad("`after` must be a message seq (a whole number)")
                    })?);
            }
            "claim" => q.claim = Some(decoded()?),
            "token" => q.token = Some(decoded()?),
            _ => {}
        }
    }
    Ok(q)
}

/// The upgrade's own checks: the accept key (none for a plain GET, which
/// asks whether a connection would be accepted), the typed names, the query.
fn check(
    req: &Request<Incoming>,
    room: &str,
    user: &str,
) -> Result<(Option<HeaderValue>, RoomName, UserName, Query), Refused> {
    let h = req.headers();
    let preflight = !h.contains_key(header::UPGRADE)
        && !h.contains_key(header::SEC_WEBSOCKET_KEY)
        && !header_has_token(h, header::CONNECTION, "upgrade");
    let accept = match preflight {
        true => None,
        false => Some(check_handshake(req.headers())?),
    };
    let room = name(room, RoomName::parse)?;
    let user = name(user, UserName::parse)?;
    let query = parse_query(req.uri().query())?;
    Ok((accept, room, user, query))
}

impl From<Denied> for Refused {
    fn from(d: Denied) -> Self {
        Self {
            status: d.status,
            code: d.code,
            message: d.message,
        }
    }
}

/// Releases a connection slot when the session ends, however it ends.
struct Slot(Arc<AppState>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.ws_open.fetch_sub(1, Ordering::AcqRel);
        self.0.hub.metrics().connections.dec();
    }
}

/// What a refused upgrade was too many of.
const JOINS: &str = "WebSocket joins";

/// Answers the handshake; on success spawns the session. A plain `GET`
/// (none of the WebSocket headers) runs every check and answers `200` instead of
/// upgrading: a browser, which never sees why an upgrade failed, asks this
/// to explain a refusal in words.
pub(crate) async fn handle(
    mut req: Request<Incoming>,
    state: &Arc<AppState>,
    room: &str,
    user: &str,
) -> Response<Body> {
    let (accept, room, user, query) = match check(&req, room, user) {
        Ok(checked) => checked,
        Err(refused) => return refused.into_response(),
    };
    // The client's address, for the per-address limits (the server always
    // sets the peer; a request without one is not counted).
    let client = request_client(req.extensions(), req.headers(), state.config.trust_proxy);
    // A page elsewhere is refused before anything is charged: otherwise
    // any site a visitor opens could spend the join budget of the
    // visitor's address (and of everyone behind the same NAT).
    let origin = match state.auth.origin(req.headers()) {
        Ok(origin) => origin,
        Err(denied) => return Refused::from(denied).into_response(),
    };
    // Each upgrade attempt is charged before any costly check (a token's
    // signature, a name held elsewhere, the welcome): joining is the
    // server's most expensive request. The preflight asks whether a join
    // would be due and pays from a bucket of its own at the same rate (it
    // costs a name lookup, with a backbone a Redis call): a browser asks
    // once per refused upgrade, so that is never short.
    if let Some(ip) = client {
        let due = match accept {
            Some(_) => state.joins.check(ip).map_err(|wait| (JOINS, wait)),
            None => state
                .joins
                .peek(ip)
                .map_err(|wait| (JOINS, wait))
                .and_then(|()| {
                    state
                        .preflights
                        .check(ip)
                        .map_err(|wait| ("WebSocket preflights", wait))
                }),
        };
        if let Err((what, wait)) = due {
            if accept.is_some() {
                state.hub.metrics().connections_refused.inc();
            }
            return rate_limited(what, wait);
        }
    }
    let presented = Presented {
        claim: query.claim.as_deref(),
        token: query.token.as_deref(),
    };
    let admitted = match state
        .auth
        .admit(origin, req.headers(), &presented, &room, &user)
    {
        Ok(admitted) => admitted,
        Err(denied) => return Refused::from(denied).into_response(),
    };
    if state.is_shutting_down() {
        return shutting_down();
    }
    if let Some(reason) = state.hub.degraded() {
        return unavailable(&reason);
    }
    match state.hub.name_free(&room, &user, &admitted.identity).await {
        Ok(()) => {}
        Err(JoinError::NameTaken(taken)) => {
            return error(StatusCode::CONFLICT, "name_taken", taken.to_string());
        }
        Err(other) => {
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                other.to_string(),
            );
        }
    }
    let max = state.config.max_connections;
    let per_address = &state.ws_per_address;
    let Some(accept) = accept else {
        if client.is_some_and(|ip| !per_address.has_room(ip)) {
            return address_at_capacity(per_address.max());
        }
        if state.ws_open.load(Ordering::Acquire) >= max {
            return at_capacity(max);
        }
        return json(
            StatusCode::OK,
            &serde_json::json!({
                "status": "ok",
                "message": "a WebSocket to this URL would be accepted now",
            }),
        );
    };
    // While the writers (or the history store) are behind and reads are
    // paused, a joining member would only add to their queues (every join
    // is a broadcast, and a load for the store): the handshake waits. A
    // store behind for long is refused above instead (`degraded`), and so
    // is a handshake that was waiting when it became so.
    if let Err(reason) = wait_for_queues(state).await {
        return unavailable(&reason);
    }
    if state.is_shutting_down() {
        return shutting_down();
    }
    // Held by the session to its end, like `Slot` below; dropped here on
    // any refusal.
    let address_slot = match client.map(|ip| per_address.acquire(ip)) {
        Some(None) => {
            state.hub.metrics().connections_refused.inc();
            return address_at_capacity(per_address.max());
        }
        Some(Some(slot)) => Some(slot),
        None => None,
    };
    // The TCP connection's own per-address slot: the session is that
    // connection now, and it must keep counting.
    let connection_slot = req.extensions().get::<ConnectionSlot>().cloned();
    if state.ws_open.fetch_add(1, Ordering::AcqRel) >= max {
        state.ws_open.fetch_sub(1, Ordering::AcqRel);
        state.hub.metrics().connections_refused.inc();
        return at_capacity(max);
    }
    let metrics = Arc::clone(state.hub.metrics());
    metrics.connections.inc();
    metrics.connections_total.inc();
    let slot = Slot(Arc::clone(state));
    let state = Arc::clone(state);
    let on_upgrade = hyper::upgrade::on(&mut req);
    let task = state.tracker.token();
    tokio::spawn(async move {
        let _slot = slot;
        let _address_slots = (address_slot, connection_slot);
        let _task = task;
        let upgraded = match on_upgrade.await {
            Ok(u) => u,
            Err(e) => {
                tracing::debug!("websocket upgrade failed: {e}");
                return;
            }
        };
        let joining = Joining {
            room,
            user,
            identity: admitted.identity,
            moderator: admitted.moderator,
            after: query.after,
            claim: admitted.claim.map(|c| c.as_str().to_owned()),
        };
        let member = match state.hub.join_with(joining) {
            // A session that joins after shutdown began would miss close_all.
            Ok(m) if state.is_shutting_down() => {
                m.outbox().close(CloseReason::SHUTDOWN);
                m
            }
            Ok(m) => m,
            Err(refused) => {
                // The name was taken, or the rooms are full, in the moment
                // between the checks above and this join.
                let code = match refused {
                    JoinError::NameTaken(_) => CloseReason::NAME_TAKEN.code,
                    _ => 1013,
                };
                let mut io = TokioIo::new(upgraded);
                let _ = io
                    .write_all(&frames::close(code, &refused.to_string()))
                    .await;
                return;
            }
        };
        let expiry: Expiry = Arc::new(TokenExpiry::new(admitted.expires.unwrap_or(0)));
        if admitted.expires.is_some() {
            tokio::spawn(close_at_expiry(
                Arc::downgrade(member.outbox()),
                Arc::clone(&expiry),
            ));
        }
        let session = Arc::clone(&state.session);
        let media = state.media.clone();
        // Over a plain TCP connection, split it into owned halves: no lock
        // between reader and writer, and real vectored writes.
        match upgraded.downcast::<TokioIo<TcpStream>>() {
            Ok(parts) => {
                // `read_buf` shares hyper's whole read buffer (8 KiB): copy
                // the little it holds and let the buffer go, or every
                // session would keep it.
                let pre_read = parts.read_buf.to_vec();
                drop(parts.read_buf);
                let (r, w) = parts.io.into_inner().into_split();
                session::run(r, w, pre_read, (member, expiry), session, media, metrics).await;
            }
            Err(upgraded) => {
                let (r, w) = tokio::io::split(TokioIo::new(upgraded));
                session::run(r, w, Vec::new(), (member, expiry), session, media, metrics).await;
            }
        }
    });

    let mut res = Response::new(empty());
    *res.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = res.headers_mut();
    h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    res
}

/// How often a handshake held by [`wait_for_queues`] asks whether the hub
/// has become degraded meanwhile.
const HELD_CHECK: Duration = Duration::from_millis(250);

/// Holds a handshake until no queue is behind. A store that hangs would
/// hold it for as long as the hang (a SQLite disk has no timeout of its
/// own), so a held handshake looks again every [`HELD_CHECK`] and gives up
/// with the hub's reason once it is degraded: a store behind for a second,
/// or failing. A server merely busy is never degraded: its handshakes wait
/// for the writers, as its readers do.
async fn wait_for_queues(state: &AppState) -> Result<(), String> {
    let backlog = &state.session.backlog;
    loop {
        if tokio::time::timeout(HELD_CHECK, backlog.caught_up())
            .await
            .is_ok()
        {
            return Ok(());
        }
        if let Some(reason) = state.hub.degraded() {
            return Err(reason);
        }
    }
}

/// `503` once shutdown has begun.
fn shutting_down() -> Response<Body> {
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        "shutting_down",
        "the server is shutting down; reconnect shortly",
    )
}

/// The hub cannot take a member now (see `Hub::degraded`).
fn unavailable(reason: &str) -> Response<Body> {
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
        format!("{reason}; try again shortly"),
    )
}

/// `503` at the connection limit.
fn at_capacity(max: usize) -> Response<Body> {
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        "too_many_connections",
        format!("the server is at its limit of {max} connections; try again later"),
    )
}

/// `429` at the client address's own connection limit.
fn address_at_capacity(max: usize) -> Response<Body> {
    error(
        StatusCode::TOO_MANY_REQUESTS,
        "too_many_connections",
        format!(
            "your address has {max} WebSocket connections open to this server, its limit; \
             close one (another tab?) and try again"
        ),
    )
}
