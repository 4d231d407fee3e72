//! Message ids: a random 32-bit prefix chosen when the hub starts, then a
//! counter, in lowercase hex (`9f3c01aa00000001`), so ids stay unique
//! across restarts and across instances sharing a backbone. One is made
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
        // Without OS randomness, ids are still unique within this process.
        let _ = getrandom::fill(&mut seed);
        MessageIds {
            prefix: u32::from_le_bytes(seed),
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
}
