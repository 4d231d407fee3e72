//! `GET /metrics`: the counters in Prometheus text format.

use std::fmt::Write as _;

use http::Response;
use http::header::{self, HeaderValue};

use super::{Body, full};
use crate::hub::Hub;

/// Renders every counter, plus the number of rooms held.
pub fn render(hub: &Hub) -> Response<Body> {
    let m = hub.metrics();
    let rows: [(&str, &str, &str, u64); 19] = [
        (
            "roomcast_connections",
            "gauge",
            "Open WebSocket connections.",
            m.connections.get(),
        ),
        (
            "roomcast_connections_total",
            "counter",
            "WebSocket connections accepted.",
            m.connections_total.get(),
        ),
        (
            "roomcast_connections_refused_total",
            "counter",
            "Upgrades refused at a connection limit (the server's or the address's) or the address's join rate.",
            m.connections_refused.get(),
        ),
        (
            "roomcast_rooms",
            "gauge",
            "Rooms held in memory.",
            hub.room_count() as u64,
        ),
        (
            "roomcast_frames_in_total",
            "counter",
            "WebSocket frames received.",
            m.frames_in.get(),
        ),
        (
            "roomcast_frames_out_total",
            "counter",
            "WebSocket frames sent.",
            m.frames_out.get(),
        ),
        (
            "roomcast_bytes_out_total",
            "counter",
            "WebSocket bytes sent.",
            m.bytes_out.get(),
        ),
        (
            "roomcast_messages_total",
            "counter",
            "Chat messages accepted.",
            m.messages.get(),
        ),
        (
            "roomcast_slow_consumers_dropped_total",
            "counter",
            "Connections closed with 1013 for falling behind.",
            m.slow_consumers_dropped.get(),
        ),
        (
            "roomcast_reads_paused_total",
            "counter",
            "Times the server stopped reading requests because a queue (a connection's or the history store's) was behind.",
            m.reads_paused.get(),
        ),
        (
            "roomcast_store_behind_total",
            "counter",
            "Times the history store's queue reached three quarters of its bound (requests are not read until it is under half).",
            m.store_behind.get(),
        ),
        (
            "roomcast_rate_limited_total",
            "counter",
            "Requests refused by the rate limit.",
            m.rate_limited.get(),
        ),
        (
            "roomcast_uploads_total",
            "counter",
            "Uploads stored.",
            m.uploads.get(),
        ),
        (
            "roomcast_upload_bytes_total",
            "counter",
            "Bytes of uploads stored.",
            m.upload_bytes.get(),
        ),
        (
            "roomcast_uploads_refused_total",
            "counter",
            "Uploads refused.",
            m.uploads_refused.get(),
        ),
        (
            "roomcast_previews_total",
            "counter",
            "Image previews made.",
            m.previews.get(),
        ),
        (
            "roomcast_previews_skipped_total",
            "counter",
            "Preview jobs that made no preview (small, over the limits, broken).",
            m.previews_skipped.get(),
        ),
        (
            "roomcast_previews_dropped_total",
            "counter",
            "Preview jobs dropped because the queue was full.",
            m.previews_dropped.get(),
        ),
        (
            "roomcast_http_requests_total",
            "counter",
            "HTTP requests served.",
            m.http_requests.get(),
        ),
    ];
    let uncommitted = hub.store().map_or(0, |s| s.uncommitted());
    let store_rows: [(&str, &str, &str, u64); 7] = [
        (
            "roomcast_history_bytes",
            "gauge",
            "What the rooms' recent messages weigh in memory together.",
            hub.history_bytes() as u64,
        ),
        (
            "roomcast_store_uncommitted",
            "gauge",
            "Changes accepted but not yet committed by the history store.",
            uncommitted,
        ),
        (
            "roomcast_store_queue",
            "gauge",
            "Operations waiting for the history store's writer.",
            m.store_queue.get(),
        ),
        (
            "roomcast_store_commits_total",
            "counter",
            "History store transactions committed.",
            m.store_commits.get(),
        ),
        (
            "roomcast_store_changes_total",
            "counter",
            "Changes the history store committed.",
            m.store_changes.get(),
        ),
        (
            "roomcast_store_errors_total",
            "counter",
            "History store transactions that failed (retried, or skipped alone).",
            m.store_errors.get(),
        ),
        (
            "roomcast_store_pruned_total",
            "counter",
            "Messages deleted by the retention period.",
            m.store_pruned.get(),
        ),
    ];
    let mut out = String::with_capacity(3072);
    for (name, kind, help, value) in rows.into_iter().chain(store_rows) {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
        );
    }
    let mut res = Response::new(full(out));
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    res
}
