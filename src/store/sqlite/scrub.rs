//! When the write-ahead log is truncated after message text left the file.
//!
//! `secure_delete` zeroes text taken out of the file's pages, but the log
//! may still hold earlier images of those pages. Truncating it (a
//! `TRUNCATE` checkpoint) removes them. How soon depends on what took the
//! text out:
//! - a delete: at its own commit; one held off (the checkpoint thread's
//!   copy was running) is owed to the next commit, or tried again
//!   [`RETRY`] later with nothing to commit;
//! - an edit's replaced text, or messages the per-room cap took out: at the
//!   first commit [`SOON`] after the last truncation, or then with nothing
//!   to commit. A busy room edits, and a capped room at its cap trims with
//!   every post, too often to truncate each time: a truncation takes the
//!   writer a few ms to 30 ms, and may wait on the other thread's copy.
//!
//! This file keeps that schedule; `mod.rs` runs the checkpoint.

use std::cell::Cell;
use std::time::{Duration, Instant};

/// How long text an edit replaced or the cap took out may stay in the log
/// past the last truncation.
pub(super) const SOON: Duration = Duration::from_secs(10);

/// How soon a truncation held off is tried again while nothing is
/// committed. Held off by the other thread's copy, the next commit's try
/// comes sooner; by another program reading the file, each try waits out
/// SQLite's busy timeout (1 s), so not often.
pub(super) const RETRY: Duration = Duration::from_secs(10);

/// The log's truncations owed, and when the last ones were.
#[derive(Default)]
pub(super) struct Scrub {
    /// A delete was committed and the log not yet truncated after it.
    owed: bool,
    /// Text left by an edit or a trim since the last truncation (set from
    /// `&self` paths: the chunk writer's trims).
    soon: Cell<bool>,
    /// The last truncation.
    last: Option<Instant>,
    /// The last try, done or held off.
    tried: Option<Instant>,
}

impl Scrub {
    /// A delete was committed: truncate now.
    pub fn deleted(&mut self) {
        self.owed = true;
    }

    /// An edit replaced text, or the cap took messages out: truncate soon.
    pub fn replaced(&self) {
        self.soon.set(true);
    }

    /// Whether a commit ending now should truncate the log.
    pub fn due_at_commit(&self, now: Instant) -> bool {
        self.owed || (self.soon.get() && self.last.is_none_or(|t| now >= t + SOON))
    }

    /// When a truncation is due with nothing to commit, if one is owed.
    pub fn due_when_idle(&self, now: Instant) -> Option<Instant> {
        let retry = self.tried.map(|t| t + RETRY);
        if self.owed {
            return Some(retry.unwrap_or(now));
        }
        if !self.soon.get() {
            return None;
        }
        let soon = self.last.map(|t| t + SOON);
        Some(retry.into_iter().chain(soon).max().unwrap_or(now))
    }

    /// A truncation was tried at `now`, and `done` or held off.
    pub fn tried(&mut self, done: bool, now: Instant) {
        self.tried = Some(now);
        self.owed = !done;
        if done {
            self.soon.set(false);
            self.last = Some(now);
        }
    }

    /// Whether any truncation is owed.
    #[cfg(test)]
    pub fn owed(&self) -> bool {
        self.owed || self.soon.get()
    }

    /// Test builds: as if the last truncation was `ago`.
    #[cfg(test)]
    pub fn truncated_ago(&mut self, ago: Duration) {
        self.last = Instant::now().checked_sub(ago);
        self.tried = self.last;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_delete_is_due_at_once_an_edit_soon_and_a_held_off_try_later() {
        let t0 = Instant::now();
        let mut s = Scrub::default();
        assert!(!s.due_at_commit(t0));
        assert_eq!(s.due_when_idle(t0), None);

        // An edit before any truncation: due at once.
        s.replaced();
        assert!(s.due_at_commit(t0));
        s.tried(true, t0);
        assert!(!s.owed());

        // Another within SOON: not at the next commit, at SOON.
        s.replaced();
        let t1 = t0 + SOON / 2;
        assert!(!s.due_at_commit(t1));
        assert_eq!(s.due_when_idle(t1), Some(t0 + SOON));
        assert!(s.due_at_commit(t0 + SOON));

        // A delete: at once, whatever the last truncation.
        s.deleted();
        assert!(s.due_at_commit(t1));
        // Held off: the next commit tries again; with nothing to commit,
        // RETRY after the try (no busy loop).
        s.tried(false, t1);
        assert!(s.due_at_commit(t1));
        assert_eq!(s.due_when_idle(t1), Some(t1 + RETRY));
        s.tried(true, t1 + RETRY);
        assert!(!s.owed());
        assert_eq!(s.due_when_idle(t1 + RETRY), None);
    }
}
