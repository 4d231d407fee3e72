//! A per-client-address rate limit (token buckets) for costly requests such
//! as uploads, counting requests or, with [`PerIpLimiter::take`], any amount
//! (an upload's bytes). The map of buckets is bounded: a bucket that has refilled
//! completely is the same as no bucket, so those are pruned when the map is
//! full, and beyond that the longest-idle bucket gives way.
//!
//! The caller names the client address (see [`super::client_addr`]); it
//! counts as IPv4 as is, IPv6 by its /64 (one host usually holds a whole
//! /64).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::client_addr::key_of;

/// Most addresses tracked at once.
const MAX_TRACKED: usize = 10_000;

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

impl Bucket {
    /// Its tokens at `now`, refilled at `per_sec` up to `burst`.
    fn tokens_at(&self, now: Instant, per_sec: f64, burst: f64) -> f64 {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        (self.tokens + elapsed * per_sec).min(burst)
    }
}

/// `Ok` with `want` tokens to spare, else how long until they are due.
fn verdict(tokens: f64, want: f64, per_sec: f64) -> Result<(), Duration> {
    if tokens >= want {
        Ok(())
    } else {
        Err(Duration::from_secs_f64((want - tokens) / per_sec))
    }
}

/// `per_period` tokens per address per period, all of them at once if
/// saved up.
#[derive(Debug)]
pub struct PerIpLimiter {
    per_period: u64,
    period: Duration,
    max_tracked: usize,
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
}

impl PerIpLimiter {
    /// A limiter allowing `per_minute` requests per address (0: no limit).
    pub fn new(per_minute: u32) -> Self {
        Self::per_period(u64::from(per_minute), Duration::from_secs(60))
    }

    /// A limiter allowing `amount` tokens per address per `period` (0: no
    /// limit).
    pub fn per_period(amount: u64, period: Duration) -> Self {
        Self::with_capacity(amount, period, MAX_TRACKED)
    }

    fn with_capacity(per_period: u64, period: Duration, max_tracked: usize) -> Self {
        Self {
            per_period,
            period: period.max(Duration::from_secs(1)),
            max_tracked: max_tracked.max(1),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// The bucket's size and its refill per second.
    #[allow(clippy::cast_precision_loss)] // amounts far below 2^52
    fn shape(&self) -> (f64, f64) {
        let burst = self.per_period as f64;
        (burst, burst / self.period.as_secs_f64())
    }

    /// Takes one request's token for `ip`, or says how long until one is due.
    pub fn check(&self, ip: IpAddr) -> Result<(), Duration> {
        self.take_at(ip, 1, Instant::now()).map(drop)
    }

    /// Takes `n` tokens for `ip` (more than a whole bucket counts as a
    /// whole bucket) and says how many it took (none without a limit), or
    /// says how long until they are due; nothing is taken then. What is
    /// given back later is at most what this took.
    pub fn take(&self, ip: IpAddr, n: u64) -> Result<u64, Duration> {
        self.take_at(ip, n, Instant::now())
    }

    /// Gives back `n` tokens taken for `ip` and not used.
    #[allow(clippy::cast_precision_loss)]
    pub fn give_back(&self, ip: IpAddr, n: u64) {
        if self.per_period == 0 || n == 0 {
            return;
        }
        let (burst, _) = self.shape();
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(bucket) = buckets.get_mut(&key_of(ip)) {
            bucket.tokens = (bucket.tokens + n as f64).min(burst);
        }
    }

    #[allow(clippy::cast_precision_loss)]
    fn take_at(&self, ip: IpAddr, n: u64, now: Instant) -> Result<u64, Duration> {
        if self.per_period == 0 {
            return Ok(0);
        }
        let (burst, per_sec) = self.shape();
        let want = n.min(self.per_period);
        let want_f = want as f64;
        let key = key_of(ip);
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if !buckets.contains_key(&key) && buckets.len() >= self.max_tracked {
            let full_after = self.period;
            buckets.retain(|_, b| now.saturating_duration_since(b.last) < full_after);
            if buckets.len() >= self.max_tracked {
                let oldest = buckets.iter().min_by_key(|(_, b)| b.last).map(|(k, _)| *k);
                if let Some(oldest) = oldest {
                    buckets.remove(&oldest);
                }
            }
        }
        let bucket = buckets.entry(key).or_insert(Bucket {
            tokens: burst,
            last: now,
        });
        bucket.tokens = bucket.tokens_at(now, per_sec, burst);
        bucket.last = now;
        verdict(bucket.tokens, want_f, per_sec)?;
        bucket.tokens -= want_f;
        Ok(want)
    }

    /// Whether `ip` would get a token now, or how long until it would;
    /// takes nothing (the WebSocket preflight asks this without being an
    /// attempt itself).
    pub fn peek(&self, ip: IpAddr) -> Result<(), Duration> {
        self.peek_at(ip, Instant::now())
    }

    fn peek_at(&self, ip: IpAddr, now: Instant) -> Result<(), Duration> {
        if self.per_period == 0 {
            return Ok(());
        }
        let (burst, per_sec) = self.shape();
        let buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let Some(bucket) = buckets.get(&key_of(ip)) else {
            return Ok(()); // an untracked address has a full bucket
        };
        verdict(bucket.tokens_at(now, per_sec, burst), 1.0, per_sec)
    }

    /// Addresses tracked now.
    pub fn tracked(&self) -> usize {
        self.buckets.lock().map_or(0, |b| b.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn allows_the_burst_then_refills_over_time() {
        let limiter = PerIpLimiter::new(3);
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(limiter.take_at(ip("10.0.0.1"), 1, t0).is_ok());
        }
        let wait = limiter.take_at(ip("10.0.0.1"), 1, t0).unwrap_err();
        assert_eq!(wait.as_secs(), 20, "one token every 20 s");
        assert!(
            limiter.take_at(ip("10.0.0.2"), 1, t0).is_ok(),
            "per address"
        );
        assert!(
            limiter
                .take_at(ip("10.0.0.1"), 1, t0 + Duration::from_secs(20))
                .is_ok()
        );
        assert!(PerIpLimiter::new(0).take_at(ip("10.0.0.1"), 1, t0).is_ok());
    }

    #[test]
    fn amounts_are_taken_whole_or_not_at_all_and_can_be_given_back() {
        // 3600 bytes an hour: one a second.
        let limiter = PerIpLimiter::per_period(3600, Duration::from_secs(3600));
        let t0 = Instant::now();
        assert!(limiter.take_at(ip("10.0.0.1"), 3000, t0).is_ok());
        let wait = limiter.take_at(ip("10.0.0.1"), 1000, t0).unwrap_err();
        assert_eq!(wait.as_secs(), 400, "400 bytes short at one a second");
        assert!(
            limiter.take_at(ip("10.0.0.1"), 600, t0).is_ok(),
            "nothing was taken"
        );
        limiter.give_back(ip("10.0.0.1"), 500);
        assert!(limiter.take_at(ip("10.0.0.1"), 500, t0).is_ok());
        assert!(limiter.take_at(ip("10.0.0.1"), 1, t0).is_err());
        // More than a bucket waits for a whole bucket, not forever, and
        // says it took only that: what comes back is at most a bucket.
        let fresh = limiter.take_at(ip("10.0.0.2"), 10_000, t0);
        assert_eq!(fresh, Ok(3600), "a full bucket takes an oversized amount");
        assert_eq!(PerIpLimiter::new(0).take_at(ip("10.0.0.1"), 5, t0), Ok(0));
    }

    #[test]
    fn peeking_takes_nothing() {
        let limiter = PerIpLimiter::new(1);
        let t0 = Instant::now();
        assert!(limiter.peek_at(ip("10.0.0.1"), t0).is_ok());
        assert_eq!(limiter.tracked(), 0);
        assert!(limiter.take_at(ip("10.0.0.1"), 1, t0).is_ok());
        assert_eq!(
            limiter.peek_at(ip("10.0.0.1"), t0).unwrap_err().as_secs(),
            60
        );
        assert!(
            limiter
                .peek_at(ip("10.0.0.1"), t0 + Duration::from_secs(60))
                .is_ok()
        );
    }

    #[test]
    fn ipv6_counts_by_slash_64() {
        let limiter = PerIpLimiter::new(1);
        let t0 = Instant::now();
        assert!(limiter.take_at(ip("2001:db8::1"), 1, t0).is_ok());
        assert!(limiter.take_at(ip("2001:db8::ffff:2"), 1, t0).is_err());
        assert!(limiter.take_at(ip("2001:db8:0:1::1"), 1, t0).is_ok());
        assert!(limiter.take_at(ip("::ffff:10.0.0.9"), 1, t0).is_ok());
        assert!(limiter.take_at(ip("10.0.0.9"), 1, t0).is_err());
    }

    #[test]
    fn the_map_stays_bounded() {
        let limiter = PerIpLimiter::with_capacity(5, Duration::from_secs(60), 100);
        let t0 = Instant::now();
        for i in 0..1000u32 {
            let addr = IpAddr::V4(std::net::Ipv4Addr::from(i));
            assert!(limiter.take_at(addr, 1, t0).is_ok());
            assert!(limiter.tracked() <= 100);
        }
        // After a minute every bucket is full again and can be pruned.
        let later = t0 + Duration::from_secs(61);
        assert!(limiter.take_at(ip("192.168.0.1"), 1, later).is_ok());
        assert_eq!(limiter.tracked(), 1);
    }
}
