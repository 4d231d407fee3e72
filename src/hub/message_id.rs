//! Message ids: a random 32-bit prefix chosen when the hub starts (from the
//! clock if the OS gives no randomness), then a counter, in lowercase hex
//! (`9f3c01aa00000001`), so ids stay unique across restarts and across
//! instances sharing a backbone. One is made
//! per post, so it is written without the formatting machinery
//! (docs/BENCHMARKS.md, issue 15, "What a delivery costs in user space").

use std::sync::atomic::{AtomicU64, Ordering};

use super::short_text::ShortText;

/// Where a hub's message ids come from.
pub(super) struct MessageIds {
    prefix: u32,
    next: AtomicU64,
}

impl MessageIds {
    pub(super) fn new() -> Self {
        let mut seed = [0u8; 4];
        let random = getrandom::fill(&mut seed)
            .ok()
            .map(|()| u32::from_le_bytes(seed));
        Self::with_prefix(random.unwrap_or_else(|| {
            tracing::warn!("no randomness from the OS; message ids start from the clock");
            from_clock()
        }))
    }

    fn with_prefix(prefix: u32) -> Self {
        MessageIds {
            prefix,
            next: AtomicU64::new(1),
        }
    }

    /// As `format!("{prefix:08x}{n:08x}")`, which it is past four billion
    /// posts. Before that, the sixteen digits are written into an array
    /// kept in place in the id ([`ShortText`]): no allocation, and no count
    /// of digits worked out at run time (as `String`s, 142 instructions an
    /// id under callgrind with a `push` per digit, 363 through the
    /// formatting machinery).
    pub(super) fn next(&self) -> ShortText {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let Ok(low) = u32::try_from(n) else {
            return format!("{:08x}{n:08x}", self.prefix).into();
        };
        let mut id = [0u8; 16];
        for (half, v) in [self.prefix, low].into_iter().enumerate() {
            for i in 0..8 {
                id[half * 8 + i] = DIGITS[((v >> ((7 - i) * 4)) & 0xf) as usize];
            }
        }
        ShortText::from_ascii(&id)
    }
}

/// A prefix where the OS gives no randomness: the clock's nanoseconds
/// and the process id, mixed. A fixed one (it was 0) gave every run the
/// same ids, `0000000000000001` on: a room loaded after a restart held its
/// stored messages' ids in memory, and its next posts took them again, so
/// an edit, a reaction or a delete by id reached the older message.
fn from_clock() -> u32 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    mix(nanos as u64 ^ (nanos >> 64) as u64 ^ (u64::from(std::process::id()) << 32))
}

/// SplitMix64's finalizer: every bit of `x` moves about half the bits of
/// the result (a clock read twice differs in its low bits only), whose
/// high half is kept.
fn mix(mut x: u64) -> u32 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    ((x ^ (x >> 31)) >> 32) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_the_prefix_then_the_count() {
        let ids = MessageIds::new();
        let first = ids.next();
        let second = ids.next();
        assert_eq!(first, format!("{:08x}{:08x}", ids.prefix, 1));
        assert_eq!(second, format!("{:08x}{:08x}", ids.prefix, 2));
        for n in [0xa, 0xdead_beef, 0x1_0000_0000, 0x12_3456_789a, u64::MAX] {
            ids.next.store(n, Ordering::Relaxed);
            assert_eq!(ids.next(), format!("{:08x}{n:08x}", ids.prefix));
        }
    }

    /// Without OS randomness, a run started later (a restart) does not
    /// hand out the ids of the one before.
    #[test]
    fn without_randomness_a_later_run_starts_other_ids() {
        let first = MessageIds::with_prefix(from_clock());
        let started = std::time::SystemTime::now();
        while std::time::SystemTime::now() <= started {
            std::thread::yield_now();
        }
        let later = MessageIds::with_prefix(from_clock());
        assert_ne!(first.next(), later.next());
        // A clock a nanosecond on moves the whole prefix, not its last
        // digit: runs started close together are not a count apart.
        let (a, b) = (mix(1_000_000), mix(1_000_001));
        assert!((a ^ b).count_ones() >= 8, "{a:08x} {b:08x}");
    }
}
