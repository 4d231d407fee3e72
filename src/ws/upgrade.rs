//! The WebSocket handshake at `GET /ws/{room}/{username}`.
//!
//! Everything is checked before the upgrade, the way a careful framework
//! does it: the upgrade headers, the protocol version, the key, the room and
//! user names, the `after` query, and the connection limit. A bad request
//! gets a JSON error and never becomes a WebSocket.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use http::header::{self, HeaderMap, HeaderValue};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use percent_encoding::percent_decode_str;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

use super::session;
use crate::app::AppState;
use crate::http::{Body, empty, error};
use crate::hub::{RoomName, UserName, frames};

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

fn parse_after(query: Option<&str>) -> Result<Option<u64>, Refused> {
    let Some(query) = query else { return Ok(None) };
    match query
        .split('&')
        .find_map(|pair| pair.strip_prefix("after="))
    {
        None => Ok(None),
        Some(value) => value
            .parse::<u64>()
            .map(Some)
            .map_err(|_| Refused::bad("`after` must be a message seq (a whole number)")),
    }
}

/// Everything checked before the upgrade: the accept key and the typed names.
fn check(
    req: &Request<Incoming>,
    room: &str,
    user: &str,
) -> Result<(HeaderValue, RoomName, UserName, Option<u64>), Refused> {
    let accept = check_handshake(req.headers())?;
    let room = name(room, RoomName::parse)?;
    let user = name(user, UserName::parse)?;
    let after = parse_after(req.uri().query())?;
    Ok((accept, room, user, after))
}

/// Releases a connection slot when the session ends, however it ends.
struct Slot(Arc<AppState>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.ws_open.fetch_sub(1, Ordering::AcqRel);
        self.0.hub.metrics().connections.dec();
    }
}

/// Answers the handshake; on success spawns the session.
pub(crate) fn handle(
    mut req: Request<Incoming>,
    state: &Arc<AppState>,
    room: &str,
    user: &str,
) -> Response<Body> {
    let (accept, room, user, after) = match check(&req, room, user) {
        Ok(checked) => checked,
        Err(refused) => return refused.into_response(),
    };
    if state.is_shutting_down() {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting_down",
            "the server is shutting down; reconnect shortly",
        );
    }
    if let Some(reason) = state.hub.degraded() {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            format!("{reason}; try again shortly"),
        );
    }
    let max = state.config.max_connections;
    if state.ws_open.fetch_add(1, Ordering::AcqRel) >= max {
        state.ws_open.fetch_sub(1, Ordering::AcqRel);
        state.hub.metrics().connections_refused.inc();
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "too_many_connections",
            format!("the server is at its limit of {max} connections; try again later"),
        );
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
        let _task = task;
        let upgraded = match on_upgrade.await {
            Ok(u) => u,
            Err(e) => {
                tracing::debug!("websocket upgrade failed: {e}");
                return;
            }
        };
        let member = match state.hub.join(room, user, after) {
            // A session that joins after shutdown began would miss close_all.
            Ok(m) if state.is_shutting_down() => {
                m.outbox().close(crate::hub::CloseReason::SHUTDOWN);
                m
            }
            Ok(m) => m,
            Err(full) => {
                let mut io = TokioIo::new(upgraded);
                let _ = io.write_all(&frames::close(1013, &full.to_string())).await;
                return;
            }
        };
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
                session::run(r, w, pre_read, member, session, media, metrics).await;
            }
            Err(upgraded) => {
                let (r, w) = tokio::io::split(TokioIo::new(upgraded));
                session::run(r, w, Vec::new(), member, session, media, metrics).await;
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
