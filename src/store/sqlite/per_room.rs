//! A value per room that the writer keeps between commits instead of
//! looking it up again (`newest.rs`, `kept.rs`). Bounded: past
//! [`PerRoom::MAX_ROOMS`] rooms it starts again empty, and a room missing
//! is looked up once more.

use std::cell::RefCell;

use hashbrown::HashMap;

pub(super) struct PerRoom<V>(RefCell<HashMap<Box<str>, V>>);

impl<V> Default for PerRoom<V> {
    fn default() -> Self {
        Self(RefCell::new(HashMap::new()))
    }
}

impl<V: Copy> PerRoom<V> {
    pub(super) const MAX_ROOMS: usize = 65_536;

    /// The room's value if known.
    pub(super) fn get(&self, room: &str) -> Option<V> {
        self.0.borrow().get(room).copied()
    }

    /// Gives the room `value`, or changes a known one with `known`.
    pub(super) fn put(&self, room: &str, value: V, known: impl FnOnce(&mut V)) {
        let mut rooms = self.0.borrow_mut();
        if let Some(v) = rooms.get_mut(room) {
            known(v);
            return;
        }
        if rooms.len() >= Self::MAX_ROOMS {
            rooms.clear();
        }
        rooms.insert(room.into(), value);
    }

    /// Changes the room's value if it is known (nothing otherwise).
    pub(super) fn change(&self, room: &str, f: impl FnOnce(&mut V)) {
        if let Some(v) = self.0.borrow_mut().get_mut(room) {
            f(v);
        }
    }

    /// Forgets them all.
    pub(super) fn forget(&self) {
        self.0.borrow_mut().clear();
    }

    /// How many rooms it knows.
    #[cfg(test)]
    pub(super) fn rooms(&self) -> usize {
        self.0.borrow().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_values_change_in_place_and_the_map_stays_bounded() {
        let map = PerRoom::<u64>::default();
        map.change("r", |v| *v += 1);
        assert_eq!(map.get("r"), None, "unknown: nothing to change");
        map.put("r", 3, |_| unreachable!("not known yet"));
        map.put("r", 9, |v| *v += 1);
        assert_eq!(map.get("r"), Some(4));
        for i in 0..=PerRoom::<u64>::MAX_ROOMS {
            map.put(&format!("room-{i}"), 1, |_| {});
        }
        assert!(map.rooms() <= PerRoom::<u64>::MAX_ROOMS);
        map.forget();
        assert_eq!(map.get("room-1"), None);
    }
}
