//! A per-client-address rate limit (token buckets) for costly requests such
//! as uploads. The map of buckets is bounded: a bucket that has refilled
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

/// `Ok` with a token to spare, else how long until the next one is due.
fn verdict(tokens: f64, per_sec: f64) -> Result<(), Duration> {
    if tokens >= 1.0 {
        Ok(())
    } else {
        Err(Duration::from_secs_f64((1.0 - tokens) / per_sec))
    }
}

/// `per_minute` requests per address per minute, all of them at once if
/// saved up.
#[derive(Debug)]
pub struct PerIpLimiter {
    per_minute: u32,
    max_tracked: usize,
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
}

impl PerIpLimiter {
    /// A limiter allowing `per_minute` requests per address (0: no limit).
    pub fn new(per_minute: u32) -> Self {
        Self::with_capacity(per_minute, MAX_TRACKED)
    }

    fn with_capacity(per_minute: u32, max_tracked: usize) -> Self {
        Self {
            per_minute,
            max_tracked: max_tracked.max(1),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one request's token for `ip`, or says how long until one is due.
    pub fn check(&self, ip: IpAddr) -> Result<(), Duration> {
        self.check_at(ip, Instant::now())
    }

    fn check_at(&self, ip: IpAddr, now: Instant) -> Result<(), Duration> {
        if self.per_minute == 0 {
            return Ok(());
        }
        let burst = f64::from(self.per_minute);
        let per_sec = burst / 60.0;
        let key = key_of(ip);
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if !buckets.contains_key(&key) && buckets.len() >= self.max_tracked {
            let full_after = Duration::from_secs(60);
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
        let answer = verdict(bucket.tokens, per_sec);
        if answer.is_ok() {
            bucket.tokens -= 1.0;
        }
        answer
    }

    /// Whether `ip` would get a token now, or how long until it would;
    /// takes nothing (the WebSocket preflight asks this without being an
    /// attempt itself).
    pub fn peek(&self, ip: IpAddr) -> Result<(), Duration> {
        self.peek_at(ip, Instant::now())
    }

    fn peek_at(&self, ip: IpAddr, now: Instant) -> Result<(), Duration> {
        if self.per_minute == 0 {
            return Ok(());
        }
        let burst = f64::from(self.per_minute);
        let per_sec = burst / 60.0;
        let buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let Some(bucket) = buckets.get(&key_of(ip)) else {
            return Ok(()); // an untracked address has a full bucket
        };
        verdict(bucket.tokens_at(now, per_sec, burst), per_sec)
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
            assert!(limiter.check_at(ip("10.0.0.1"), t0).is_ok());
        }
        let wait = limiter.check_at(ip("10.0.0.1"), t0).unwrap_err();
        assert_eq!(wait.as_secs(), 20, "one token every 20 s");
        assert!(limiter.check_at(ip("10.0.0.2"), t0).is_ok(), "per address");
        assert!(
            limiter
                .check_at(ip("10.0.0.1"), t0 + Duration::from_secs(20))
                .is_ok()
        );
        assert!(PerIpLimiter::new(0).check_at(ip("10.0.0.1"), t0).is_ok());
    }

    #[test]
    fn peeking_takes_nothing() {
        let limiter = PerIpLimiter::new(1);
        let t0 = Instant::now();
        assert!(limiter.peek_at(ip("10.0.0.1"), t0).is_ok());
        assert_eq!(limiter.tracked(), 0);
        assert!(limiter.check_at(ip("10.0.0.1"), t0).is_ok());
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
        assert!(limiter.check_at(ip("2001:db8::1"), t0).is_ok());
        assert!(limiter.check_at(ip("2001:db8::ffff:2"), t0).is_err());
        assert!(limiter.check_at(ip("2001:db8:0:1::1"), t0).is_ok());
        assert!(limiter.check_at(ip("::ffff:10.0.0.9"), t0).is_ok());
        assert!(limiter.check_at(ip("10.0.0.9"), t0).is_err());
    }

    #[test]
    fn the_map_stays_bounded() {
        let limiter = PerIpLimiter::with_capacity(5, 100);
        let t0 = Instant::now();
        for i in 0..1000u32 {
            let addr = IpAddr::V4(std::net::Ipv4Addr::from(i));
            assert!(limiter.check_at(addr, t0).is_ok());
            assert!(limiter.tracked() <= 100);
        }
        // After a minute every bucket is full again and can be pruned.
        let later = t0 + Duration::from_secs(61);
        assert!(limiter.check_at(ip("192.168.0.1"), later).is_ok());
        assert_eq!(limiter.tracked(), 1);
    }
}
