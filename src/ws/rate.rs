//! How often a client may send requests: a token bucket per connection,
//! and one per identity shared by every connection of that identity, so
//! closing and reopening a connection does not buy a fresh budget. A
//! request is taken only when both buckets have a token, and then costs one
//! from each. One refused because the identity's budget is spent (by its
//! other connections, say) still costs the connection's own token, and is
//! told apart from one past the connection's own rate: only the latter
//! counts towards closing the connection as a flood.
//!
//! The identities' buckets live in a bounded map: a bucket no connection
//! holds and that has refilled completely is the same as no bucket, so it
//! can go; see [`IdentityRates`] for what happens when the map is full.
//! Per instance: with Redis, an identity connected to two instances has a
//! budget on each.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::time::Instant;

use crate::hub::Identity;

/// At least this many identities' buckets are kept.
const MIN_TRACKED: usize = 10_000;

/// Tokens and when they were last counted.
#[derive(Debug)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

impl Bucket {
    fn full(burst: f64, now: Instant) -> Self {
        Self {
            tokens: burst,
            last: now,
        }
    }

    /// Adds what `rate` per second has refilled since the last count.
    fn refill(&mut self, now: Instant, rate: f64, burst: f64) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate).min(burst);
        self.last = now;
    }

    /// Whether the bucket would be full by `now` (and so could be forgotten).
    fn is_full_at(&self, now: Instant, rate: f64, burst: f64) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens + elapsed * rate >= burst
    }
}

type Shared = Arc<Mutex<Bucket>>;

/// The per-identity buckets of one server.
///
/// Bounded at `max(10 000, 2 × max_connections)` entries. When a new
/// identity finds it full, buckets that no connection holds and that have
/// refilled are dropped (forgetting them changes nothing); if it is still
/// full, the unheld bucket idle the longest gives way, which only returns
/// that identity's budget early (its connections' own buckets still apply).
/// A live identity's bucket is never dropped, and there are at most
/// `max_connections` of those, so half the map is always unheld when it is
/// full.
#[derive(Debug)]
pub struct IdentityRates {
    rate: f64,
    burst: f64,
    max_tracked: usize,
    buckets: Mutex<HashMap<Identity, Shared>>,
}

impl IdentityRates {
    /// `rate` requests per second (0: no limit), `burst` at once, for a
    /// server of at most `max_connections` connections.
    pub fn new(rate: u32, burst: u32, max_connections: usize) -> Self {
        Self {
            rate: f64::from(rate),
            burst: f64::from(burst.max(1)),
            max_tracked: max_connections.saturating_mul(2).max(MIN_TRACKED),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// The limiter of one new connection of `identity`: its own bucket,
    /// full, and the identity's, as that identity left it.
    pub fn limiter(&self, identity: &Identity) -> RateLimiter {
        self.limiter_at(identity, Instant::now())
    }

    fn limiter_at(&self, identity: &Identity, now: Instant) -> RateLimiter {
        let shared = (self.rate > 0.0).then(|| self.shared(identity, now));
        RateLimiter {
            own: Bucket::full(self.burst, now),
            shared,
            rate: self.rate,
            burst: self.burst,
        }
    }

    fn shared(&self, identity: &Identity, now: Instant) -> Shared {
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(bucket) = buckets.get(identity) {
            return Arc::clone(bucket);
        }
        if buckets.len() >= self.max_tracked {
            let (rate, burst) = (self.rate, self.burst);
            let held = |b: &Shared| Arc::strong_count(b) > 1;
            buckets.retain(|_, b| {
                held(b) || !b.lock().map_or(true, |b| b.is_full_at(now, rate, burst))
            });
            if buckets.len() >= self.max_tracked {
                let idlest = buckets
                    .iter()
                    .filter(|(_, b)| !held(b))
                    .min_by_key(|(_, b)| b.lock().map_or(now, |b| b.last))
                    .map(|(k, _)| k.clone());
                if let Some(idlest) = idlest {
                    buckets.remove(&idlest);
                }
            }
        }
        let bucket = Arc::new(Mutex::new(Bucket::full(self.burst, now)));
        buckets.insert(identity.clone(), Arc::clone(&bucket));
        bucket
    }

    /// Identities with a bucket now.
    pub fn tracked(&self) -> usize {
        self.buckets.lock().map_or(0, |b| b.len())
    }
}

/// One connection's limiter: its own bucket and its identity's.
#[derive(Debug)]
pub struct RateLimiter {
    own: Bucket,
    shared: Option<Shared>,
    rate: f64,
    burst: f64,
}

/// What the limiter made of one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Within both budgets: taken, one token from each.
    Taken,
    /// Past this connection's own rate: refused, costing nothing. A
    /// connection refused so `rate_burst` times in a row is flooding.
    OverOwn,
    /// Within this connection's rate, but its identity's budget is spent
    /// (its other connections used it): refused, costing the connection's
    /// own token (so a connection that goes on sending reaches
    /// [`Verdict::OverOwn`] at its own rate), and not held against it.
    OverIdentity,
}

impl RateLimiter {
    /// Takes a token from both buckets, or refuses the request (see
    /// [`Verdict`] for what a refusal costs; the session counts the
    /// refusals past the connection's own rate and closes a flood).
    pub fn allow(&mut self) -> Verdict {
        self.allow_at(Instant::now())
    }

    fn allow_at(&mut self, now: Instant) -> Verdict {
        if self.rate == 0.0 {
            return Verdict::Taken;
        }
        self.own.refill(now, self.rate, self.burst);
        if self.own.tokens < 1.0 {
            return Verdict::OverOwn;
        }
        self.own.tokens -= 1.0;
        if let Some(shared) = &self.shared {
            let mut shared = shared.lock().unwrap_or_else(|p| p.into_inner());
            shared.refill(now, self.rate, self.burst);
            if shared.tokens < 1.0 {
                return Verdict::OverIdentity;
            }
            shared.tokens -= 1.0;
        }
        Verdict::Taken
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    impl RateLimiter {
        fn takes(&mut self, now: Instant) -> bool {
            self.allow_at(now) == Verdict::Taken
        }
    }

    fn id(s: &str) -> Identity {
        Identity::from_key(s)
    }

    #[test]
    fn a_new_connection_of_the_same_identity_gets_no_new_budget() {
        let t0 = Instant::now();
        let rates = IdentityRates::new(10, 20, 100);
        let mut first = rates.limiter_at(&id("ann"), t0);
        for _ in 0..20 {
            assert!(first.takes(t0));
        }
        assert!(!first.takes(t0), "the burst is spent");
        drop(first);
        let mut again = rates.limiter_at(&id("ann"), t0);
        assert!(!again.takes(t0), "reconnecting does not refill it");
        let mut bob = rates.limiter_at(&id("bob"), t0);
        assert!(bob.takes(t0), "another identity has its own");
        let t1 = t0 + Duration::from_millis(100);
        assert!(again.takes(t1), "one token per 1/rate s");
        assert!(!again.takes(t1));
    }

    #[test]
    fn one_connection_keeps_its_own_limit_and_zero_is_none() {
        let t0 = Instant::now();
        let rates = IdentityRates::new(10, 2, 100);
        let mut a = rates.limiter_at(&id("ann"), t0);
        let mut b = rates.limiter_at(&id("ann"), t0);
        assert!(a.takes(t0) && a.takes(t0));
        assert_eq!(a.allow_at(t0), Verdict::OverOwn);
        assert_eq!(
            b.allow_at(t0),
            Verdict::OverIdentity,
            "the tabs share the identity's budget, and b is not flooding"
        );
        // That refusal cost b's own bucket one token, the identity's none.
        let t1 = t0 + Duration::from_millis(100);
        assert!(b.takes(t1));
        // b going on sending is refused at its own rate: the next costs its
        // last own token, the one after is past its own rate.
        assert_eq!(b.allow_at(t1), Verdict::OverIdentity);
        assert_eq!(b.allow_at(t1), Verdict::OverOwn);
        let off = IdentityRates::new(0, 0, 100);
        let mut c = off.limiter_at(&id("ann"), t0);
        assert!((0..1000).all(|_| c.takes(t0)));
        assert_eq!(off.tracked(), 0);
    }

    #[test]
    fn the_map_stays_bounded_and_never_drops_a_held_bucket() {
        let t0 = Instant::now();
        let rates = IdentityRates::new(10, 20, 10);
        assert_eq!(rates.max_tracked, MIN_TRACKED);
        let mut held = rates.limiter_at(&id("held"), t0);
        for _ in 0..20 {
            assert!(held.takes(t0));
        }
        for i in 0..(MIN_TRACKED + 200) {
            let mut l = rates.limiter_at(&id(&format!("u{i}")), t0);
            assert!(l.takes(t0));
            assert!(rates.tracked() <= MIN_TRACKED);
        }
        assert!(!held.takes(t0), "the held bucket was kept, still empty");
        // Once the others have refilled they are pruned together.
        let t1 = t0 + Duration::from_secs(3);
        drop(rates.limiter_at(&id("new"), t1));
        assert_eq!(rates.tracked(), 2, "the held bucket and the new one");
    }
}
