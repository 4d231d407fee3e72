//! A room's ring of recent messages: the newest ones held in memory,
//! oldest first, with what they weigh (counted in the hub's total as well),
//! how far messages have been pushed out of it, and the retry keys of what
//! it holds. Every change to a held message goes through here, so its
//! weight is counted again; the room decides what changes and who is told.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::Identity;
use super::event::StoredMessage;
use super::retries::Retries;
use super::timestamp;

#[derive(Default)]
pub(crate) struct Ring {
    messages: VecDeque<Arc<StoredMessage>>,
    /// What the held messages weigh (see [`weight`]).
    bytes: usize,
    /// The highest seq pushed out by newer messages, a trim or retention
    /// (or, for a room loaded from a store, the newest stored message
    /// before the ring).
    evicted_through: u64,
    /// The posts sent with a `client_id`: a retry is answered with the
    /// message instead of a second, or refused if it was deleted.
    retries: Retries,
}

/// What the rooms' rings weigh together: the hub's total, which every
/// ring keeps in step with its own.
pub(crate) type Total = AtomicUsize;

impl Ring {
    /// Puts a room's stored tail in place of whatever the ring held.
    pub fn install(&mut self, tail: Vec<StoredMessage>, evicted_through: u64, total: &Total) {
        self.clear(total);
        let bytes: usize = tail.iter().map(weight).sum();
        self.messages = tail.into_iter().map(Arc::new).collect();
        self.account(bytes, 0, total);
        self.retries = Retries::of(self.iter());
        self.evicted_through = evicted_through;
    }

    /// What the ring weighs.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn len(&self) -> usize {
        self.messages.len()
    }

    /// The held messages, oldest first.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = &StoredMessage> {
        self.messages.iter().map(Arc::as_ref)
    }

    /// The highest seq no longer held because it was pushed out.
    pub fn evicted_through(&self) -> u64 {
        self.evicted_through
    }

    /// The oldest held seq, or `past_newest` if nothing is held.
    pub fn start(&self, past_newest: u64) -> u64 {
        self.messages.front().map_or(past_newest, |m| m.seq)
    }

    /// Where message `id` is held.
    pub fn position(&self, id: &str) -> Option<usize> {
        self.messages.iter().position(|m| m.id == id)
    }

    /// Where the message numbered `seq` is held.
    pub fn position_of_seq(&self, seq: u64) -> Option<usize> {
        self.messages.iter().position(|m| m.seq == seq)
    }

    /// The message held at `at` (a position just found).
    pub fn get(&self, at: usize) -> &StoredMessage {
        &self.messages[at]
    }

    /// What this identity already posted with `client_id`: `Some(Some(_))`
    /// if the ring still holds it, `Some(None)` if it was deleted or left.
    pub fn posted_before(
        &self,
        identity: &Identity,
        client_id: &str,
    ) -> Option<Option<&StoredMessage>> {
        let seq = self.retries.seq_of(identity, client_id)?;
        Some(self.iter().find(|m| m.seq == seq))
    }

    /// Retry keys kept: all of them, and those of deleted messages.
    #[cfg(test)]
    pub fn retries_kept(&self) -> (usize, usize) {
        self.retries.kept()
    }

    /// Holds a new message, pushing the oldest out first if `capacity` are
    /// held already.
    pub fn push(&mut self, message: Arc<StoredMessage>, capacity: usize, total: &Total) {
        if self.messages.len() >= capacity {
            self.drop_oldest(total);
        }
        self.retries.forget_deleted(message.seq, capacity);
        self.retries.posted(&message);
        self.account(weight(&message), 0, total);
        self.messages.push_back(message);
    }

    /// Changes the message held at `at` in place (copying it first if the
    /// store's queue still shares it) and counts its new weight.
    pub fn change<R>(
        &mut self,
        at: usize,
        total: &Total,
        f: impl FnOnce(&mut StoredMessage) -> R,
    ) -> R {
        let before = weight(&self.messages[at]);
        let message = Arc::make_mut(&mut self.messages[at]);
        let answer = f(message);
        let after = weight(message);
        self.account(after, before, total);
        answer
    }

    /// Takes out the message held at `at`, deleted: a retry of its post is
    /// refused from now on.
    pub fn remove(&mut self, at: usize, total: &Total) -> Option<Arc<StoredMessage>> {
        let message = self.messages.remove(at)?;
        self.retries.deleted(&message);
        self.account(0, weight(&message), total);
        Some(message)
    }

    /// Drops the oldest messages until the ring weighs at most `target`
    /// bytes or holds `keep` messages; returns how many went.
    pub fn trim(&mut self, target: usize, keep: usize, total: &Total) -> usize {
        let mut gone = 0;
        while self.bytes > target && self.messages.len() > keep && self.drop_oldest(total) {
            gone += 1;
        }
        gone
    }

    /// Drops the oldest messages posted before `before` (milliseconds since
    /// the epoch; a timestamp that does not read counts as the epoch, as
    /// for the store's retention). The ring is in posting order, so they
    /// are its oldest: one posted while the clock was set back stays until
    /// those before it go. Returns how many went.
    pub fn expire(&mut self, before: u64, total: &Total) -> usize {
        let mut gone = 0;
        while self
            .messages
            .front()
            .is_some_and(|m| timestamp::millis(&m.timestamp).unwrap_or(0) < before)
            && self.drop_oldest(total)
        {
            gone += 1;
        }
        gone
    }

    /// Lets go of everything held (the room leaves memory, or a stored
    /// tail replaces it): its weight leaves the total.
    pub fn clear(&mut self, total: &Total) {
        let bytes = self.bytes;
        self.account(0, bytes, total);
        self.messages.clear();
    }

    /// Takes the oldest message out, and all it weighed; false if the ring
    /// is empty.
    fn drop_oldest(&mut self, total: &Total) -> bool {
        let Some(old) = self.messages.pop_front() else {
            return false;
        };
        self.evicted_through = self.evicted_through.max(old.seq);
        self.retries.left_ring(&old);
        self.account(0, weight(&old), total);
        true
    }

    /// Counts `add` bytes more and `sub` fewer, here and in the total.
    fn account(&mut self, add: usize, sub: usize, total: &Total) {
        self.bytes = (self.bytes + add).saturating_sub(sub);
        total.fetch_add(add, Ordering::Relaxed);
        total.fetch_sub(sub.min(total.load(Ordering::Relaxed)), Ordering::Relaxed);
    }
}

/// About what a message held in memory costs, in bytes: its text fields,
/// its reactions, and a fixed part for the structure and allocator.
pub(crate) fn weight(m: &StoredMessage) -> usize {
    let reactions: usize = m
        .reactions
        .0
        .iter()
        .map(|r| {
            64 + r.emoji.as_str().len()
                + r.users.iter().map(|u| u.as_str().len() + 32).sum::<usize>()
                + r.who.iter().map(|w| w.as_str().len() + 16).sum::<usize>()
        })
        .sum();
    let attachment = m.attachment.as_ref().map_or(0, |a| {
        96 + a.url.len()
            + a.name.len()
            + a.content_type.len()
            + a.preview.as_ref().map_or(0, |p| 16 + p.url.len())
    });
    256 + m.id.len()
        + m.user.as_str().len()
        + m.identity.as_str().len()
        + m.content.len()
        + m.timestamp.len()
        + m.edited_at.as_ref().map_or(0, String::len)
        + m.client_id.as_ref().map_or(0, String::len)
        + attachment
        + reactions
}
