//! A room's posts waiting for their chunk until the commit, and the chunk
//! texts kept from one commit for the next.

use std::cell::RefCell;
use std::ops::Range;

use super::json;
use crate::hub::StoredMessage;
use crate::store::timestamp_ms;

/// One room's posts waiting for their chunk.
#[derive(Default)]
pub(super) struct Pending {
    pub(super) posts: Vec<Waiting>,
    /// The chunk's `messages` as the posts came: `[` and their objects,
    /// without the closing bracket (encoded once, as each post arrives).
    pub(super) body: String,
    /// The room keeps its newest this many messages (`--retention-messages`).
    pub(super) cap: Option<u64>,
}

impl Pending {
    /// Waiting posts to be written into `body` (emptied first).
    pub(super) fn with_body(mut body: String) -> Self {
        body.clear();
        Self {
            body,
            ..Self::default()
        }
    }

    pub(super) fn push(&mut self, message: &StoredMessage, cap: Option<u64>) {
        self.body
            .push(if self.posts.is_empty() { '[' } else { ',' });
        let start = self.body.len();
        json::encode_into(&mut self.body, message);
        self.posts.push(Waiting {
            seq: message.seq,
            ms: timestamp_ms(&message.timestamp),
            object: start..self.body.len(),
        });
        self.cap = cap;
    }

    /// Written at once rather than at the commit: a chunk's size is bounded.
    pub(super) fn full(&self) -> bool {
        self.posts.len() >= json::MAX_MESSAGES || self.body.len() >= json::MAX_BYTES
    }
}

/// A post waiting for its chunk. What the chunk needs of it is kept, not
/// the message: a reference would be one more write to memory the hub
/// shares, long out of the cache when the chunk is written.
pub(super) struct Waiting {
    pub(super) seq: u64,
    pub(super) ms: i64,
    /// Its JSON object in the room's [`Pending::body`].
    pub(super) object: Range<usize>,
}

/// Chunk texts written and kept for the next commit's rooms, so a room's
/// posts are encoded into a buffer already the size of its last chunk.
/// Growing a new one from empty, by doubling, was a tenth of the writer's
/// time (`realloc` in `perf`, 100 rooms at 60 000 posts/s in phase).
/// Bounded: at most [`SpareBodies::MAX`] texts of at most
/// [`SpareBodies::MAX_BYTES`] each (2 MiB); a text past either bound is
/// freed.
#[derive(Default)]
pub(super) struct SpareBodies(RefCell<Vec<String>>);

impl SpareBodies {
    pub(super) const MAX: usize = 128;
    pub(super) const MAX_BYTES: usize = 16 << 10;

    /// A text to write into: a kept one, or a new one.
    pub(super) fn take(&self) -> String {
        self.0.borrow_mut().pop().unwrap_or_default()
    }

    /// Keeps `body` for a later room, within the bounds.
    pub(super) fn give(&self, body: String) {
        let mut spare = self.0.borrow_mut();
        if spare.len() < Self::MAX && body.capacity() <= Self::MAX_BYTES {
            spare.push(body);
        }
    }

    #[cfg(test)]
    pub(super) fn kept(&self) -> (usize, usize) {
        let spare = self.0.borrow();
        (spare.len(), spare.iter().map(String::capacity).sum())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spare_texts_stay_within_their_bounds_and_come_back_empty() {
        let spare = SpareBodies::default();
        for _ in 0..SpareBodies::MAX + 10 {
            spare.give(String::with_capacity(1024));
        }
        spare.give(String::with_capacity(SpareBodies::MAX_BYTES + 1));
        let (count, bytes) = spare.kept();
        assert_eq!(count, SpareBodies::MAX);
        assert!(bytes <= SpareBodies::MAX * SpareBodies::MAX_BYTES);

        let mut used = spare.take();
        used.push_str("[{\"seq\":1}]");
        let pending = Pending::with_body(used);
        assert!(pending.body.is_empty() && pending.body.capacity() >= 1024);
        assert!(pending.posts.is_empty());
    }
}
