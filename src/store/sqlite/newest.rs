//! Each room's newest stored seq, kept between commits so the writer does
//! not look it up in the chunks' index for every room of every commit (a
//! query per room per commit, 7 % of the writer's time in `perf`, 100
//! rooms at 60 000 posts/s in phase).
//!
//! Never below the truth: it is raised when a chunk is written past it
//! and forgotten when a transaction rolls back. A delete may leave it above
//! the truth; then a post at or under it is placed as a late one (in a
//! chunk of its own, or in the chunk spanning its seq), which is right,
//! only slower. The hub gives new posts seqs past every earlier one, so
//! only late posts ever meet that path.

use super::per_room::PerRoom;

/// See the module.
#[derive(Default)]
pub(super) struct NewestSeqs(PerRoom<u64>);

impl NewestSeqs {
    /// The room's newest seq if known.
    pub(super) fn get(&self, room: &str) -> Option<u64> {
        self.0.get(room)
    }

    /// A chunk of `room` reaching `seq` was written (or found, looked up).
    pub(super) fn raise(&self, room: &str, seq: u64) {
        self.0.put(room, seq, |newest| *newest = (*newest).max(seq));
    }

    /// Forgets them all (the transaction that raised some rolled back).
    pub(super) fn forget(&self) {
        self.0.forget();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn it_only_rises() {
        let newest = NewestSeqs::default();
        newest.raise("r", 5);
        newest.raise("r", 3);
        assert_eq!(newest.get("r"), Some(5));
        assert_eq!(newest.get("other"), None);
        newest.forget();
        assert_eq!(newest.get("room-1"), None);
    }
}
