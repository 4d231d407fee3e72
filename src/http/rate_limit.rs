//! A per-client-address rate limit (token buckets) for costly requests such
//! as uploads, counting requests or, with [`PerIpLimiter::take`], any amount
//! (an upload's bytes). The map of buckets is bounded: a bucket that has refilled
//! completely is the same as no bucket, so those are pruned when the map is
//! full, and beyond that the longest-idle bucket gives way.
//!
//! The caller names the client address (see [`super::client_addr`]); it
//! counts as IPv4 as is, IPv6 by its /64 (one host usually holds a whole
//! /64).
//!
//! A [`Charge`] is tokens taken that may be given back later (a presigned
//! upload cancelled minutes after its ask). It is given back at most once
//! (by value), and only what the bucket still misses because of it: tokens
//! refill while the charge waits, and a bucket that would have been full
//! without it has already had them back. The refund is the charge less the
//! most the bucket can have held since (`tokens then + refill since +
//! refunds since`, short of a full bucket), so it never exceeds what the
//! charge still costs, and an hour later it is nothing.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::client_addr::key_of;

/// Most addresses tracked at once.
const MAX_TRACKED: usize = 10_000;

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    last: Instant,
    /// Tells this bucket from one made later for the same address (a
    /// bucket is pruned once full, or given way when the map is full).
    generation: u64,
    /// Every token given back since it was made.
    refunded: f64,
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

/// Tokens taken by [`PerIpLimiter::charge`] that may be given back once,
/// with [`PerIpLimiter::refund`]; the default is nothing taken.
#[derive(Debug, Default)]
pub struct Charge(Option<Taken>);

#[derive(Debug)]
struct Taken {
    key: IpAddr,
    amount: f64,
    at: Instant,
    generation: u64,
    /// The bucket's tokens just after the charge.
    left: f64,
    /// The bucket's `refunded` then.
    refunded: f64,
}

/// `per_period` tokens per address per period, all of them at once if
/// saved up.
#[derive(Debug)]
pub struct PerIpLimiter {
    per_period: u64,
    period: Duration,
    max_tracked: usize,
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
    generations: AtomicU64,
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
            generations: AtomicU64::new(0),
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
            bucket.refunded += n as f64;
        }
    }

    /// Takes `n` tokens for `ip` as [`PerIpLimiter::take`] does, as a
    /// [`Charge`] that [`PerIpLimiter::refund`] can give back.
    pub fn charge(&self, ip: IpAddr, n: u64) -> Result<Charge, Duration> {
        self.charge_at(ip, n, Instant::now())
    }

    /// Gives back what `charge` still costs the bucket it was taken from
    /// (see the module's docs); nothing if that bucket is gone. Returns
    /// how many tokens came back.
    pub fn refund(&self, charge: Charge) -> u64 {
        self.refund_at(charge, Instant::now())
    }

    #[allow(clippy::cast_precision_loss)]
    fn charge_at(&self, ip: IpAddr, n: u64, now: Instant) -> Result<Charge, Duration> {
        let key = key_of(ip);
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let taken = self.take_locked(&mut buckets, key, n, now)?;
        Ok(Charge(buckets.get(&key).filter(|_| taken > 0).map(|b| {
            Taken {
                key,
                amount: taken as f64,
                at: now,
                generation: b.generation,
                left: b.tokens,
                refunded: b.refunded,
            }
        })))
    }

    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    fn refund_at(&self, charge: Charge, now: Instant) -> u64 {
        let Some(taken) = charge.0 else {
            return 0;
        };
        let (burst, per_sec) = self.shape();
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let Some(bucket) = buckets
            .get_mut(&taken.key)
            .filter(|b| b.generation == taken.generation)
        else {
            // A bucket made since starts full: it owes this charge nothing.
            return 0;
        };
        bucket.tokens = bucket.tokens_at(now, per_sec, burst);
        bucket.last = now;
        // Takes only lower the bucket, so this is the most it can have held
        // since the charge; without the charge it would have held that much
        // more, but never more than full.
        let since = now.saturating_duration_since(taken.at).as_secs_f64();
        let highest = taken.left + since * per_sec + (bucket.refunded - taken.refunded);
        let back = taken.amount.min(burst - highest).max(0.0);
        bucket.tokens = (bucket.tokens + back).min(burst);
        bucket.refunded += back;
        back as u64
    }

    fn take_at(&self, ip: IpAddr, n: u64, now: Instant) -> Result<u64, Duration> {
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        self.take_locked(&mut buckets, key_of(ip), n, now)
    }

    #[allow(clippy::cast_precision_loss)]
    fn take_locked(
        &self,
        buckets: &mut HashMap<IpAddr, Bucket>,
        key: IpAddr,
        n: u64,
        now: Instant,
    ) -> Result<u64, Duration> {
        if self.per_period == 0 {
            return Ok(0);
        }
        let (burst, per_sec) = self.shape();
        let want = n.min(self.per_period);
        let want_f = want as f64;
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
        let bucket = buckets.entry(key).or_insert_with(|| Bucket {
            tokens: burst,
            last: now,
            generation: self.generations.fetch_add(1, Ordering::Relaxed),
            refunded: 0.0,
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
    fn a_charge_comes_back_once_and_only_what_it_still_costs() {
        // 3600 bytes an hour: one a second.
        let limiter = PerIpLimiter::per_period(3600, Duration::from_secs(3600));
        let t0 = Instant::now();
        let a = ip("10.0.0.1");
        // Given back at once: the bucket is as if nothing had been asked.
        let charge = limiter.charge_at(a, 3000, t0).unwrap();
        assert!(limiter.take_at(a, 1000, t0).is_err());
        assert_eq!(limiter.refund_at(charge, t0), 3000);
        assert_eq!(limiter.take_at(a, 3600, t0), Ok(3600), "full again");

        // From a full bucket, 100 s later: 100 of the 3000 refilled a
        // bucket that would have been full anyway; the bucket is full again.
        let t1 = t0 + Duration::from_secs(3600);
        let charge = limiter.charge_at(a, 3000, t1).unwrap();
        let t2 = t1 + Duration::from_secs(100);
        assert_eq!(limiter.refund_at(charge, t2), 2900);
        assert_eq!(limiter.take_at(a, 3600, t2), Ok(3600));
        assert!(limiter.take_at(a, 1, t2).is_err(), "not more than full");

        // An hour later the refill gave it all back: after a full bucket's
        // worth uploaded since, a late refund gives nothing more.
        let t3 = t2 + Duration::from_secs(3600);
        let charge = limiter.charge_at(a, 3000, t3).unwrap();
        let t4 = t3 + Duration::from_secs(3600);
        assert_eq!(limiter.take_at(a, 3600, t4), Ok(3600));
        assert_eq!(limiter.refund_at(charge, t4), 0);
        assert!(limiter.take_at(a, 1, t4).is_err());

        // Other refunds since count as the bucket having held more: an
        // upload charged the whole bucket, 300 s refilled 300 that a charge
        // took, then the upload gave back 3500 unused. Without the charge
        // the bucket would be full now, 100 more than it holds.
        let t5 = t4 + Duration::from_secs(3600);
        assert_eq!(limiter.take_at(a, 3600, t5), Ok(3600));
        let t6 = t5 + Duration::from_secs(300);
        let charge = limiter.charge_at(a, 300, t6).unwrap();
        limiter.give_back(a, 3500);
        assert_eq!(limiter.refund_at(charge, t6), 100);
        assert_eq!(limiter.take_at(a, 3600, t6), Ok(3600));
        assert!(limiter.take_at(a, 1, t6).is_err());

        // A bucket made since (the old one gave way) started full, so it
        // owes the charge nothing; no limit charges nothing.
        let small = PerIpLimiter::with_capacity(10, Duration::from_secs(60), 1);
        let charge = small.charge_at(a, 5, t0).unwrap();
        assert!(small.take_at(ip("10.0.0.2"), 1, t0).is_ok());
        assert!(small.take_at(a, 1, t0).is_ok());
        assert_eq!(small.refund_at(charge, t0), 0);
        let none = PerIpLimiter::new(0).charge_at(a, 5, t0).unwrap();
        assert_eq!(PerIpLimiter::new(0).refund_at(none, t0), 0);
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
