//! A token's expiry on a live connection: the time, which an `auth`
//! renewal moves (earlier or later), and the watch that closes the
//! connection with 4001 once it has passed.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::sync::Notify;

use crate::hub::{CloseReason, Outbox};

/// When a connection's token expires (seconds since the epoch; 0: never),
/// shared by the session (which renews it) and the watch.
pub type Expiry = Arc<TokenExpiry>;

/// See [`Expiry`].
#[derive(Debug, Default)]
pub struct TokenExpiry {
    exp: AtomicU64,
    moved: Notify,
}

impl TokenExpiry {
    /// A token expiring at `exp`.
    pub fn new(exp: u64) -> Self {
        Self {
            exp: exp.into(),
            moved: Notify::new(),
        }
    }

    /// The current expiry.
    pub fn get(&self) -> u64 {
        self.exp.load(Ordering::Acquire)
    }

    /// A renewed token's expiry, earlier or later: the watch is woken.
    pub fn renew(&self, exp: u64) {
        self.exp.store(exp, Ordering::Release);
        self.moved.notify_one();
    }

    /// Waits until a renewal moves it (one renewal since the last wait
    /// counts too).
    async fn moved(&self) {
        self.moved.notified().await;
    }
}

/// Closes a connection with 4001 when its token expires (a renewal moves
/// the time; the watch ends with the connection). Expired means what it
/// meant when the token was admitted: past `exp` and the clock leeway, so
/// a token admitted within the leeway is not closed at once.
pub(super) async fn close_at_expiry(outbox: Weak<Outbox>, expiry: Expiry) {
    loop {
        let exp = expiry.get().saturating_add(crate::auth::jwt::LEEWAY_SECS);
        let now = crate::auth::now();
        if now > exp {
            if let Some(outbox) = outbox.upgrade() {
                outbox.close(CloseReason::TOKEN_EXPIRED);
            }
            return;
        }
        // Wakes at the expiry, when a renewal moves it, or every minute to
        // notice the connection has gone.
        let wait = Duration::from_secs((exp - now + 1).min(60));
        let _ = tokio::time::timeout(wait, expiry.moved()).await;
        match outbox.upgrade() {
            Some(o) if !o.is_closing() => {}
            _ => return,
        }
    }
}
