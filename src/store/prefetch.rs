//! Asking the CPU for memory before the writer reads it.
//!
//! Why: under load the writer takes thousands of posts at once, each
//! message written by fan-out tens of milliseconds before and long out of
//! the cache, in five separate allocations (the message and its id, name,
//! text and timestamp). Read one post after another, each of those reads
//! waits for memory on its own: in `perf`, at 1.0 M deliveries/s in small
//! rooms, the loads of a message's fields and its first bytes of text held
//! most of the JSON encoding's samples and nearly all of dropping the
//! change. Asked for a few posts ahead, those waits overlap
//! (docs/BENCHMARKS.md, issue 15, "The store's writer reads ahead").
//!
//! A prefetch is only a hint: it never faults, whatever the address, and
//! changes nothing a program can observe but time.

use std::sync::Arc;

use crate::hub::{Change, StoreOp};

/// How many operations ahead of the one being handled the writer asks for
/// a message's text; its fields are asked for twice as far ahead, so that
/// they are in the cache when the text's addresses are read from them.
pub(super) const AHEAD: usize = 8;

/// Asks for the cache line holding `at` (no effect where the architecture
/// has no prefetch this build knows).
#[inline]
fn line(at: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `prefetcht0` needs SSE, which every x86_64 CPU has (it is in
    // the target's baseline), and it never accesses memory architecturally:
    // any address, even a dangling one, is allowed and only hinted.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(at.cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = at;
}

/// The post's message, if `op` is one.
fn message(op: &StoreOp) -> Option<&Arc<crate::hub::StoredMessage>> {
    match op {
        StoreOp::Change(Change::Post { message, .. }, _) => Some(message),
        _ => None,
    }
}

/// Asks for the memory of a post's message itself: its reference counts
/// and its fields (the pointers to its text among them).
pub(super) fn fields(op: Option<&StoreOp>) {
    if let Some(message) = op.and_then(message) {
        let data = Arc::as_ptr(message).cast::<u8>();
        // The counts come just before the data in an `Arc`'s allocation.
        let start = data.wrapping_sub(2 * size_of::<usize>());
        let end = data.wrapping_add(size_of::<crate::hub::StoredMessage>());
        let mut at = start;
        while at < end {
            line(at);
            at = at.wrapping_add(64);
        }
    }
}

/// Asks for the start of a post's text: its id, name, identity, content
/// and timestamp (reading where they are reads the message's fields, which
/// [`fields`] asked for earlier).
pub(super) fn text(op: Option<&StoreOp>) {
    if let Some(m) = op.and_then(message) {
        for s in [
            m.id.as_str(),
            m.user.as_str(),
            m.identity.as_str(),
            m.content.as_str(),
            m.timestamp.as_str(),
        ] {
            line(s.as_ptr());
        }
    }
}

/// Asks for the reference counts of a post's message (what dropping the
/// change writes).
pub(super) fn counts(op: Option<&StoreOp>) {
    if let Some(message) = op.and_then(message) {
        line(
            Arc::as_ptr(message)
                .cast::<u8>()
                .wrapping_sub(2 * size_of::<usize>()),
        );
    }
}
