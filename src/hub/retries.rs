//! A room's memory of the posts sent with a `client_id`, so that a retry
//! (the same identity and `client_id`, say after an answer lost with the
//! connection) posts nothing new: it is answered with the first message,
//! or refused if that message was deleted since.

use std::collections::{HashMap, VecDeque};

use super::StoredMessage;
use super::identity::Identity;

type Key = (Identity, String);

/// The seqs of a room's posts by (identity, `client_id`): those the ring
/// holds, and those deleted while their seq is among the room's last
/// `--history` (where the ring would still hold them).
#[derive(Default)]
pub(super) struct Retries {
    posted: HashMap<Key, u64>,
    /// Deleted posts with their seq, in the order they were deleted; their
    /// keys stay in `posted`. Bounded: a message is deleted only while the
    /// ring holds it, so its seq is within the last `--history` when it
    /// comes in, and the front leaves within `--history` posts; at most
    /// twice `--history` entries.
    deleted: VecDeque<(u64, Key)>,
}

fn key(m: &StoredMessage) -> Option<Key> {
    Some((m.identity.clone(), m.client_id.clone()?))
}

impl Retries {
    /// The retries of the messages a room was loaded with.
    pub(super) fn of<'a>(ring: impl Iterator<Item = &'a StoredMessage>) -> Self {
        Self {
            posted: ring.filter_map(|m| Some((key(m)?, m.seq))).collect(),
            deleted: VecDeque::new(),
        }
    }

    /// The seq this identity posted with `client_id`, if remembered.
    pub(super) fn seq_of(&self, identity: &Identity, client_id: &str) -> Option<u64> {
        self.posted
            .get(&(identity.clone(), client_id.to_owned()))
            .copied()
    }

    /// Remembers a new post.
    pub(super) fn posted(&mut self, m: &StoredMessage) {
        if let Some(key) = key(m) {
            self.posted.insert(key, m.seq);
        }
    }

    /// Forgets a message leaving the ring: its key, unless a later post
    /// has it now (two can share one: a retry that came after the first
    /// left the ring posts again, and a room loaded from the store may hold
    /// both; the later one stays the answer).
    pub(super) fn left_ring(&mut self, m: &StoredMessage) {
        if let Some(key) = key(m) {
            self.forget(key, m.seq);
        }
    }

    fn forget(&mut self, key: Key, seq: u64) {
        if self.posted.get(&key) == Some(&seq) {
            self.posted.remove(&key);
        }
    }

    /// Keeps a deleted message's key, so a retry of it is refused.
    pub(super) fn deleted(&mut self, m: &StoredMessage) {
        if let Some(key) = key(m) {
            self.deleted.push_back((m.seq, key));
        }
    }

    /// Forgets the deleted messages no longer among the last `ring` seqs
    /// up to `last_seq`.
    pub(super) fn forget_deleted(&mut self, last_seq: u64, ring: usize) {
        let past = last_seq.saturating_sub(ring as u64);
        while self.deleted.front().is_some_and(|(seq, _)| *seq <= past) {
            if let Some((seq, key)) = self.deleted.pop_front() {
                self.forget(key, seq);
            }
        }
    }

    /// Keys kept: all of them, and those of deleted messages.
    #[cfg(test)]
    pub(super) fn kept(&self) -> (usize, usize) {
        (self.posted.len(), self.deleted.len())
    }
}
