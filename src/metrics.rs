//! Process-wide counters, shared by the hub, the sessions and the HTTP
//! handlers, rendered by `http::metrics` in Prometheus text format. Plain
//! relaxed atomics: counting must never take a lock on a hot path.

use std::sync::atomic::{AtomicU64, Ordering};

/// A monotonically increasing counter or a gauge.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds one.
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
    /// Adds `n`.
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    /// Sets the value (gauges only).
    pub fn set(&self, n: u64) {
        self.0.store(n, Ordering::Relaxed);
    }
    /// Subtracts one (gauges only).
    pub fn dec(&self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
    /// The current value.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Every counter roomcast exports.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Open WebSocket connections (gauge).
    pub connections: Counter,
    /// WebSocket connections accepted since start.
    pub connections_total: Counter,
    /// WebSocket upgrades refused at a connection limit (the server's or the
    /// address's) or past the address's join rate.
    pub connections_refused: Counter,
    /// Frames received from clients.
    pub frames_in: Counter,
    /// Frames written to clients.
    pub frames_out: Counter,
    /// Bytes written to clients over WebSocket.
    pub bytes_out: Counter,
    /// Chat messages accepted.
    pub messages: Counter,
    /// Connections closed with 1013 because their queue overflowed.
    pub slow_consumers_dropped: Counter,
    /// Times the server stopped reading requests because a queue was
    /// behind (a connection's, or the history store's).
    pub reads_paused: Counter,
    /// Times the history store's queue became behind (three quarters of
    /// its bound), one of the causes of `reads_paused`.
    pub store_behind: Counter,
    /// Requests refused by the per-connection rate limit.
    pub rate_limited: Counter,
    /// Uploads stored.
    pub uploads: Counter,
    /// Bytes of uploads stored.
    pub upload_bytes: Counter,
    /// Uploads refused (too large, wrong type, broken body, rate limit).
    pub uploads_refused: Counter,
    /// Image previews made and stored.
    pub previews: Counter,
    /// Preview jobs that ran and made none (already small, over the
    /// limits, broken, or not stored).
    pub previews_skipped: Counter,
    /// Preview jobs dropped because the queue was full.
    pub previews_dropped: Counter,
    /// HTTP requests served (WebSocket upgrades included).
    pub http_requests: Counter,
    /// Operations waiting for the history store's writer (gauge).
    pub store_queue: Counter,
    /// Transactions the history store committed.
    pub store_commits: Counter,
    /// Changes the history store committed.
    pub store_changes: Counter,
    /// Failed history store transactions (each retried, or skipped alone).
    pub store_errors: Counter,
    /// Messages deleted by the retention period.
    pub store_pruned: Counter,
}
