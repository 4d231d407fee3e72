//! How many messages each capped room holds in the file
//! (`--retention-messages`), kept between commits so the cap is held by
//! count: a room's seqs have holes (a delete, the numbers a crash skips),
//! and a cap by seq ("everything up to the newest seq minus N") would keep
//! fewer than N, or after a crash nothing at all.
//!
//! Exact or absent: counted once from the chunks' `count` column when a
//! capped room is first written, moved by every post, delete and trim of
//! the writer's, and forgotten whole when a transaction rolls back or the
//! retention period deletes across rooms.

use super::per_room::PerRoom;

/// See the module.
#[derive(Default)]
pub(super) struct KeptCounts(PerRoom<u64>);

impl KeptCounts {
    /// The room's count if known.
    pub(super) fn get(&self, room: &str) -> Option<u64> {
        self.0.get(room)
    }

    /// The room's count, just counted.
    pub(super) fn set(&self, room: &str, kept: u64) {
        self.0.put(room, kept, |known| *known = kept);
    }

    /// `added` messages were written to `room`, and `removed` taken out
    /// (nothing if its count is not known).
    pub(super) fn moved(&self, room: &str, added: u64, removed: u64) {
        self.0
            .change(room, |kept| *kept = (*kept + added).saturating_sub(removed));
    }

    /// Forgets them all.
    pub(super) fn forget(&self) {
        self.0.forget();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_move_only_once_known() {
        let kept = KeptCounts::default();
        kept.moved("r", 5, 0);
        assert_eq!(kept.get("r"), None, "not counted yet: nothing to move");
        kept.set("r", 3);
        kept.moved("r", 2, 1);
        assert_eq!(kept.get("r"), Some(4));
        kept.moved("r", 0, 9);
        assert_eq!(kept.get("r"), Some(0));
        kept.forget();
        assert_eq!(kept.get("r"), None);
    }
}
