//! Where the numbering of rooms dropped from memory stopped, when history
//! lives in memory only (no store, no backbone). A room made again in the
//! same process goes on from there instead of numbering from 1 again: a
//! client resuming with an `after` from before then gets `gap` for what
//! went with the room, instead of silently missing the new room's first
//! messages under seqs it believes it has. (A store numbers durably; a
//! backbone numbers for every instance; after a restart without either, a
//! client's `after` beyond the new numbering is read as a reset.)

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use super::names::RoomName;

/// Bounded: past `cap` rooms the one dropped longest ago is forgotten, and
/// numbers from 1 again if it is made again (as after a restart).
pub(crate) struct DroppedSeqs {
    cap: usize,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// Each remembered room's last seq, and its place in `order`.
    last: HashMap<RoomName, (u64, u64)>,
    /// Remembered rooms by when they were dropped, oldest first.
    order: BTreeMap<u64, RoomName>,
    next: u64,
}

impl DroppedSeqs {
    pub fn new(cap: usize) -> Self {
        Self {
            cap,
            inner: Mutex::default(),
        }
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        // Each change below leaves both maps consistent before anything
        // that could panic.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `room` left memory having numbered up to `last_seq`.
    pub fn remember(&self, room: &RoomName, last_seq: u64) {
        if last_seq == 0 || self.cap == 0 {
            return;
        }
        let mut inner = self.inner();
        let Inner { last, order, next } = &mut *inner;
        *next += 1;
        if let Some((_, old)) = last.insert(room.clone(), (last_seq, *next)) {
            order.remove(&old);
        }
        order.insert(*next, room.clone());
        while last.len() > self.cap {
            let Some((_, gone)) = order.pop_first() else {
                break;
            };
            last.remove(&gone);
        }
    }

    /// Where `room`'s numbering stopped, if it was dropped and is
    /// remembered; forgotten here from now on (the room holds it again).
    pub fn take(&self, room: &RoomName) -> Option<u64> {
        let mut inner = self.inner();
        let (seq, place) = inner.last.remove(room)?;
        inner.order.remove(&place);
        Some(seq)
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        let inner = self.inner();
        debug_assert_eq!(inner.last.len(), inner.order.len());
        inner.last.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn room(name: &str) -> RoomName {
        RoomName::parse(name).unwrap()
    }

    #[test]
    fn the_longest_dropped_is_forgotten_past_the_bound() {
        let dropped = DroppedSeqs::new(2);
        dropped.remember(&room("a"), 5);
        dropped.remember(&room("b"), 6);
        dropped.remember(&room("a"), 7); // again: now the newest
        dropped.remember(&room("c"), 8);
        assert_eq!(dropped.len(), 2);
        assert_eq!(dropped.take(&room("b")), None, "the oldest went");
        assert_eq!(dropped.take(&room("a")), Some(7));
        assert_eq!(dropped.take(&room("a")), None, "taken once");
        assert_eq!(dropped.take(&room("c")), Some(8));
        dropped.remember(&room("empty"), 0);
        assert_eq!(dropped.len(), 0, "a room that numbered nothing");
    }
}
