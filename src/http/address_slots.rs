//! Concurrent connections per client address, so one address cannot take
//! every slot the server has. A slot is held by a [`Slot`] guard and given
//! back when the guard drops, on every path a connection can end by.
//!
//! The map holds only addresses with at least one slot taken (an entry is
//! removed when its count reaches zero), so it never holds more entries
//! than there are live guards, and the server's global caps (checked as
//! well) bound those.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use super::client_addr::key_of;

/// Open slots per address, each address at most `max` (0: no limit).
#[derive(Debug)]
pub struct AddressSlots {
    max: usize,
    open: Mutex<HashMap<IpAddr, usize>>,
}

/// One slot taken by one address; dropping it gives the slot back. Under
/// no limit it holds nothing.
#[derive(Debug)]
pub struct Slot(Option<(Arc<AddressSlots>, IpAddr)>);

impl AddressSlots {
    /// At most `max` slots per address (0: no limit, and nothing is tracked).
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(Self {
            max,
            open: Mutex::new(HashMap::new()),
        })
    }

    /// The per-address limit (0: none).
    pub fn max(&self) -> usize {
        self.max
    }

    /// Takes a slot for `ip`; `None` when that address holds `max` already.
    /// With no limit nothing is counted.
    pub fn acquire(self: &Arc<Self>, ip: IpAddr) -> Option<Slot> {
        if self.max == 0 {
            return Some(Slot(None));
        }
        let key = key_of(ip);
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let count = open.entry(key).or_insert(0);
        if *count >= self.max {
            return None;
        }
        *count += 1;
        Some(Slot(Some((Arc::clone(self), key))))
    }

    /// Whether `ip` could take a slot now (the preflight's question; takes
    /// nothing).
    pub fn has_room(&self, ip: IpAddr) -> bool {
        self.max == 0 || self.held(ip) < self.max
    }

    /// Slots `ip`'s address holds now.
    pub fn held(&self, ip: IpAddr) -> usize {
        let open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        open.get(&key_of(ip)).copied().unwrap_or(0)
    }

    /// Addresses holding at least one slot.
    pub fn tracked(&self) -> usize {
        self.open.lock().map_or(0, |o| o.len())
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let Some((slots, key)) = self.0.take() else {
            return;
        };
        let mut open = slots.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = open.get_mut(&key) {
            *count -= 1;
            if *count == 0 {
                open.remove(&key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn each_address_gets_its_own_slots_and_dropping_gives_them_back() {
        let slots = AddressSlots::new(2);
        let a1 = slots.acquire(ip("10.0.0.1")).unwrap();
        let a2 = slots.acquire(ip("10.0.0.1")).unwrap();
        assert!(slots.acquire(ip("10.0.0.1")).is_none(), "at its limit");
        assert!(!slots.has_room(ip("10.0.0.1")));
        let b = slots.acquire(ip("10.0.0.2"));
        assert!(b.is_some(), "another address is admitted");
        drop(a1);
        assert!(slots.has_room(ip("10.0.0.1")));
        assert!(slots.acquire(ip("10.0.0.1")).is_some());
        drop((a2, b));
        assert_eq!(slots.tracked(), 0, "no entry outlives its last slot");
    }

    #[test]
    fn ipv6_shares_slots_by_slash_64_and_zero_is_no_limit() {
        let slots = AddressSlots::new(1);
        let _held = slots.acquire(ip("2001:db8::1")).unwrap();
        assert!(slots.acquire(ip("2001:db8::2")).is_none());
        assert!(slots.acquire(ip("2001:db8:1::2")).is_some());
        let open = AddressSlots::new(0);
        for _ in 0..1000 {
            assert!(open.acquire(ip("10.0.0.1")).is_some());
        }
        assert_eq!(open.tracked(), 0);
    }
}
