//! The whole URL map on one screen: `(method, path)` → handler.

use std::sync::Arc;

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;

use crate::app::AppState;
use crate::http::{self as h, Body};
use crate::ws;

/// Answers one request.
pub(crate) async fn route(req: Request<Incoming>, state: Arc<AppState>) -> Response<Body> {
    state.hub.metrics().http_requests.inc();
    // RFC 9112 §3.2: an HTTP/1.1 request has exactly one Host.
    if req.version() == http::Version::HTTP_11
        && req.headers().get_all(http::header::HOST).iter().count() != 1
    {
        return h::error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "an HTTP/1.1 request must carry exactly one Host header",
        );
    }
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let get = method == Method::GET || method == Method::HEAD;

    match (&method, path.as_str()) {
        (_, "/") if get => state.index.serve(&method).await,
        (_, "/health") if get => h::pages::health(&state.hub, &state.media),
        (&Method::GET, "/metrics") => match state.auth.metrics_allowed(req.headers()) {
            true => h::metrics::render(&state.hub),
            false => h::error(
                StatusCode::UNAUTHORIZED,
                "token_required",
                "/metrics needs Authorization: Bearer <the --metrics-token>",
            ),
        },
        (_, "/" | "/health") => h::method_not_allowed("GET, HEAD"),
        (_, "/metrics") => h::method_not_allowed("GET"),
        (_, "/api/rooms") => h::rooms::list(&state.hub, &method),

        (_, p) if p.starts_with("/static/") => match get {
            true => {
                state
                    .static_files
                    .serve(&method, req.headers(), &p["/static/".len()..])
                    .await
            }
            false => h::method_not_allowed("GET, HEAD"),
        },
        (&Method::POST, "/upload") => match state.auth.uploader(req.headers()) {
            Ok(owner) => {
                let owner = owner.map(|id| id.as_str().to_owned());
                state.uploads.receive(req, owner).await
            }
            Err(denied) => h::error(denied.status, denied.code, denied.message),
        },
        (_, "/upload") => h::method_not_allowed("POST"),
        (&Method::POST, "/api/uploads") => match state.auth.uploader(req.headers()) {
            Ok(owner) => {
                let owner = owner.map(|id| id.as_str().to_owned());
                state.presigned.begin(&state.uploads, req, owner).await
            }
            Err(denied) => h::error(denied.status, denied.code, denied.message),
        },
        (_, "/api/uploads") => h::method_not_allowed("POST"),
        (_, p) if p.starts_with("/api/uploads/") => {
            let rest = &p["/api/uploads/".len()..];
            match rest.split_once('/') {
                Some((id, "complete")) => match method {
                    Method::POST => match state.auth.uploader(req.headers()) {
                        Ok(owner) => {
                            let owner = owner.map(|id| id.as_str().to_owned());
                            state.presigned.complete(&state.uploads, id, owner).await
                        }
                        Err(denied) => h::error(denied.status, denied.code, denied.message),
                    },
                    _ => h::method_not_allowed("POST"),
                },
                None if !rest.is_empty() => match method {
                    Method::DELETE => match state.auth.uploader(req.headers()) {
                        Ok(owner) => {
                            let owner = owner.map(|id| id.as_str().to_owned());
                            state.presigned.cancel(&state.uploads, rest, owner).await
                        }
                        Err(denied) => h::error(denied.status, denied.code, denied.message),
                    },
                    _ => h::method_not_allowed("DELETE"),
                },
                _ => h::not_found(),
            }
        }
        (_, p) if p.starts_with("/uploads/") => match get {
            true => {
                let name = &p["/uploads/".len()..];
                h::download::serve(&state.media, &method, req.headers(), name).await
            }
            false => h::method_not_allowed("GET, HEAD"),
        },
        (_, p) if p.starts_with("/api/rooms/") => match p["/api/rooms/".len()..].split_once('/') {
            Some((room, "messages")) => {
                let (parts, _) = req.into_parts();
                let client = h::client_addr::request_client(
                    &parts.extensions,
                    &parts.headers,
                    state.config.trust_proxy,
                );
                let reader = h::history::Reader {
                    hub: &state.hub,
                    auth: &state.auth,
                    per_address: &state.pages_per_address,
                    client,
                };
                h::history::page(reader, &parts, room).await
            }
            _ => h::not_found(),
        },
        (_, p) if p.starts_with("/ws/") => match p["/ws/".len()..].split_once('/') {
            Some((room, user)) if !user.contains('/') => match method {
                Method::GET => ws::upgrade::handle(req, &state, room, user).await,
                _ => h::method_not_allowed("GET"),
            },
            _ => h::not_found(),
        },
        _ => h::not_found(),
    }
}
