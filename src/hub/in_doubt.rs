//! Posts and deletes left in doubt: with a backbone, a request that went
//! out and got no answer in time (or whose link failed after sending it).
//! Its sender was told `unavailable`, but the backbone may still carry it
//! out: then every instance's members see it, yet no store gets it,
//! because each instance stores its own members' changes and this one had
//! given up. A deleted message would then come back from the store.
//!
//! So this instance keeps such a post, or such a delete's message id, here,
//! for its store only, until it is seen carried out: its event comes back
//! through the relay (with its seq), or, for a post, a retry with the same
//! `client_id` is answered with it (a stall that also cut the event
//! stream). The change then goes to the store with that seq: whichever way
//! sees it first takes it out of here. A delete retried and answered takes
//! out the one kept, so its event finds nothing (should the event come
//! before the answer, the store gets the delete twice, which changes
//! nothing more).
//!
//! Bounded: at most [`MAX_POSTS`] changes, a quarter of them deletes (a
//! delete, which anyone may send for any id, never pushes a post out), and
//! [`MAX_BYTES`] bytes, each kept for at most [`KEPT_FOR`], the backbone's
//! retry window and a margin (after it a retry posts anew, and the event
//! would have come long before). When full, the oldest is dropped unstored
//! to make room for a post (a delete is not kept past its share, nor when
//! it would need the room) and a warning says how many were.
//! A change never seen may never have been carried out, or was while this
//! instance missed its event (and nobody retried a post): the store lacks
//! it. Edits and reactions are not kept: a store several instances write
//! orders them by a version that only the backbone's answer carries.
//!
//! Costs nothing while empty: the relay reads one atomic count before it
//! looks at an event's JSON. While not, an event costs a substring search
//! for its message id and one lookup; only an event naming a message kept
//! here is parsed. Nothing here knows which backbone it is.

use std::borrow::Cow;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::event::StoredMessage;
use super::ring::weight;
use super::store::{Change, Store};

/// Posts and deletes kept at most: what one stall can leave in doubt, roughly (a Redis
/// link holds 4096 queued and 1024 sent requests).
pub const MAX_POSTS: usize = 4096;
/// Bytes kept at most (as `ring::weight` counts a message in memory).
pub const MAX_BYTES: usize = 16 << 20;
/// How long a change is kept: a post's retry window at the backbone, and a
/// margin (that window starts when the backbone runs the post, which a
/// stall delays past the moment it was kept here); a delete the same.
pub const KEPT_FOR: Duration = super::POST_RETRY_WINDOW.saturating_add(Duration::from_secs(120));
/// Of the changes kept, at most one in this many may be deletes.
const DELETE_SHARE: usize = 4;
/// A warning about dropped changes at most this often (the count is summed).
const WARN_EVERY: Duration = Duration::from_secs(10);

/// What was left in doubt.
enum Doubted {
    /// A post, everything but its seq.
    Post(Box<StoredMessage>),
    /// A delete of the message whose id this is kept under.
    Delete,
}

/// One change kept.
struct Kept {
    room: Arc<str>,
    doubted: Doubted,
    since: Instant,
    weight: usize,
    /// Which entry of `order` is this one's (an id taken out and kept again
    /// has an older entry there too, which is skipped).
    serial: u64,
}

/// What a delete kept weighs, beside its id.
const DELETE_WEIGHT: usize = 64;

#[derive(Default)]
struct Posts {
    by_id: HashMap<String, Kept>,
    /// Ids in the order they were kept, oldest first, with their serial;
    /// some were taken out already (skipped when they reach the front).
    order: VecDeque<(String, u64)>,
    next_serial: u64,
    bytes: usize,
    /// Deletes among `by_id`.
    deletes: usize,
    /// Dropped unstored since the last warning.
    dropped: u64,
    warned: Option<Instant>,
}

impl Posts {
    /// Takes `id` out (if `serial` is its entry's, when given).
    fn remove(&mut self, id: &str, serial: Option<u64>) -> Option<Kept> {
        if serial.is_some_and(|serial| self.by_id.get(id).is_none_or(|k| k.serial != serial)) {
            return None;
        }
        let kept = self.by_id.remove(id)?;
        self.bytes -= kept.weight;
        if let Doubted::Delete = kept.doubted {
            self.deletes -= 1;
        }
        Some(kept)
    }
}

/// The changes this instance left in doubt (see the module docs).
pub(super) struct InDoubt {
    /// How many are kept: the relay reads this, and nothing else, while it
    /// is zero.
    count: AtomicUsize,
    posts: Mutex<Posts>,
    max_posts: usize,
    max_bytes: usize,
    max_deletes: usize,
    kept_for: Duration,
}

impl Default for InDoubt {
    fn default() -> Self {
        Self::with_limits(MAX_POSTS, MAX_BYTES, KEPT_FOR)
    }
}

/// What a published `message` or `message_deleted` event tells: its id
/// and seq.
#[derive(serde::Deserialize)]
struct Event<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(borrow)]
    message_id: Option<Cow<'a, str>>,
    seq: Option<u64>,
}

impl InDoubt {
    fn with_limits(max_posts: usize, max_bytes: usize, kept_for: Duration) -> Self {
        let max_posts = max_posts.max(1);
        Self {
            count: AtomicUsize::new(0),
            posts: Mutex::new(Posts::default()),
            max_posts,
            max_bytes,
            max_deletes: (max_posts / DELETE_SHARE).max(1),
            kept_for,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Posts> {
        // Every update leaves the record whole; poisoning is ignored.
        self.posts.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether nothing is kept: one atomic load.
    pub fn is_empty(&self) -> bool {
        self.count.load(Ordering::Acquire) == 0
    }

    /// Keeps `message` (its seq not known yet) of `room`, until it is seen
    /// posted or its time is up.
    pub fn keep(&self, room: Arc<str>, message: StoredMessage) {
        self.keep_at(room, message, Instant::now());
    }

    fn keep_at(&self, room: Arc<str>, message: StoredMessage, now: Instant) {
        let id = message.id.to_string();
        let weight = weight(&message);
        self.put(room, id, Doubted::Post(Box::new(message)), weight, now);
    }

    /// Keeps the delete of `message_id` in `room` until it is seen carried
    /// out or its time is up.
    pub fn keep_delete(&self, room: Arc<str>, message_id: &str) {
        self.keep_delete_at(room, message_id, Instant::now());
    }

    fn keep_delete_at(&self, room: Arc<str>, message_id: &str, now: Instant) {
        let weight = message_id.len() + DELETE_WEIGHT;
        self.put(room, message_id.to_owned(), Doubted::Delete, weight, now);
    }

    /// A delete of `message_id` was answered after all (a retry): the one
    /// kept, if any, is taken out, so its event does not store it again.
    pub fn delete_answered(&self, message_id: &str) {
        if self.is_empty() {
            return;
        }
        let mut posts = self.lock();
        if let Some(Kept {
            doubted: Doubted::Delete,
            ..
        }) = posts.by_id.get(message_id)
        {
            posts.remove(message_id, None);
        }
        self.count.store(posts.by_id.len(), Ordering::Release);
    }

    fn put(&self, room: Arc<str>, id: String, doubted: Doubted, weight: usize, now: Instant) {
        let mut posts = self.lock();
        self.expire(&mut posts, now);
        let delete = matches!(doubted, Doubted::Delete);
        let mut dropped = 0;
        if posts.by_id.contains_key(&id) {
            // Kept already (a delete left in doubt twice; a delete of a post
            // still kept): the first stays, a post above all.
        } else if delete
            && (posts.deletes >= self.max_deletes
                || posts.by_id.len() >= self.max_posts
                || posts.bytes.saturating_add(weight) > self.max_bytes)
        {
            // Deletes, which anyone may send for any id, never push posts
            // out: past their share, or where keeping one would drop the
            // oldest change, a new one is not kept.
            dropped += 1;
        } else {
            tracing::debug!(message_id = %id, "a change left in doubt is kept until it is seen carried out");
            let serial = posts.next_serial;
            posts.next_serial += 1;
            posts.bytes += weight;
            posts.deletes += usize::from(delete);
            posts.order.push_back((id.clone(), serial));
            let kept = Kept {
                room,
                doubted,
                since: now,
                weight,
                serial,
            };
            posts.by_id.insert(id, kept);
        }
        while posts.by_id.len() > self.max_posts || posts.bytes > self.max_bytes {
            let Some((oldest, serial)) = posts.order.pop_front() else {
                break;
            };
            dropped += usize::from(posts.remove(&oldest, Some(serial)).is_some());
        }
        // Ids taken out stay in `order` until they reach its front: bounded
        // by compacting it when they outnumber the changes kept.
        if posts.order.len() > 2 * self.max_posts {
            let Posts { order, by_id, .. } = &mut *posts;
            order.retain(|(id, serial)| by_id.get(id).is_some_and(|k| k.serial == *serial));
        }
        if dropped > 0 {
            posts.dropped += dropped as u64;
            if posts
                .warned
                .is_none_or(|at| now.duration_since(at) >= WARN_EVERY)
            {
                tracing::warn!(
                    dropped = posts.dropped,
                    "posts and deletes left in doubt by the backbone were dropped unstored \
                     (at most {} are kept, {} MiB, {} of them deletes): if the backbone \
                     carried them out, the history store lacks them",
                    self.max_posts,
                    self.max_bytes >> 20,
                    self.max_deletes,
                );
                posts.dropped = 0;
                posts.warned = Some(now);
            }
        }
        self.count.store(posts.by_id.len(), Ordering::Release);
    }

    /// Drops what was kept for longer than `kept_for` (never seen carried
    /// out).
    fn expire(&self, posts: &mut Posts, now: Instant) {
        while let Some((oldest, serial)) = posts.order.front() {
            if let Some(kept) = posts.by_id.get(oldest)
                && kept.serial == *serial
            {
                if now.duration_since(kept.since) < self.kept_for {
                    break;
                }
                tracing::debug!(
                    message_id = %oldest,
                    "a change left in doubt was never seen carried out; no longer kept"
                );
                let (oldest, serial) = (oldest.clone(), *serial);
                posts.remove(&oldest, Some(serial));
            }
            posts.order.pop_front();
        }
    }

    /// Takes out what is kept under `id` for `room` if it is a post
    /// (`deleted` false) or a delete (true), as the change to store, at
    /// `seq`.
    fn take_at(
        &self,
        room: &str,
        id: &str,
        seq: u64,
        deleted: bool,
        now: Instant,
    ) -> Option<Change> {
        let mut posts = self.lock();
        self.expire(&mut posts, now);
        let matches = posts.by_id.get(id).is_some_and(|kept| {
            *kept.room == *room && matches!(kept.doubted, Doubted::Delete) == deleted
        });
        let taken = matches.then(|| posts.remove(id, None)).flatten();
        self.count.store(posts.by_id.len(), Ordering::Release);
        let kept = taken?;
        Some(match kept.doubted {
            Doubted::Post(message) => {
                let mut message = *message;
                message.seq = seq;
                Change::Post {
                    room: kept.room,
                    message: Arc::new(message),
                    reserve_through: None,
                }
            }
            Doubted::Delete => Change::Delete {
                room: kept.room,
                message_id: id.to_owned(),
                seq,
            },
        })
    }

    /// The change an event of `room` from the backbone carries out, if it
    /// is kept here: the event's JSON is looked at only while something
    /// is, and parsed only when it names a message kept here.
    fn seen_at(&self, room: &str, body: &str, now: Instant) -> Option<Change> {
        if self.is_empty() {
            return None;
        }
        // A look before the parse: the event's message id (a backbone's
        // JSON has no spaces, and a quote inside a string is escaped), if
        // it is one kept here. Most events then cost a substring search.
        let id = body
            .split_once(r#""message_id":""#)
            .and_then(|(_, rest)| rest.split_once('"'))
            .map(|(id, _)| id)?;
        if !self.lock().by_id.contains_key(id) {
            return None;
        }
        let event: Event<'_> = serde_json::from_str(body).ok()?;
        let deleted = match event.kind.as_ref() {
            "message" => false,
            "message_deleted" => true,
            _ => return None,
        };
        match (event.message_id, event.seq) {
            (Some(id), Some(seq)) if seq > 0 => self.take_at(room, &id, seq, deleted, now),
            _ => None,
        }
    }

    /// An event of `room` came through the relay: if it carries out a
    /// change kept here, `store` gets that change now, with the event's
    /// seq.
    pub fn relayed(&self, room: &str, body: &str, store: &Store) {
        if let Some(found) = self.seen_at(room, body, Instant::now()) {
            stored(found, store);
        }
    }

    /// A retry in `room` was answered with the message `id`, posted at
    /// `seq`: if it is kept here, `store` gets it now.
    pub fn retried(&self, room: &str, id: &str, seq: u64, store: &Store) {
        if self.is_empty() || seq == 0 {
            return;
        }
        if let Some(found) = self.take_at(room, id, seq, false, Instant::now()) {
            stored(found, store);
        }
    }
}

/// Queues a change that was left in doubt and turned out carried out. Past
/// the queue's bound if need be: the room shows it already, so this can no
/// longer be refused, and this record bounds how many come this way.
fn stored(change: Change, store: &Store) {
    match &change {
        Change::Post { message, .. } => tracing::info!(
            message_id = %message.id,
            seq = message.seq,
            "a post answered `unavailable` was posted by the backbone after all; storing it"
        ),
        Change::Delete {
            message_id, seq, ..
        } => tracing::info!(
            message_id = %message_id,
            seq,
            "a delete answered `unavailable` was carried out by the backbone after all; \
             storing it"
        ),
        _ => {}
    }
    store.send_late(change);
}

#[cfg(test)]
mod tests {
    use super::super::{Identity, Reactions, UserName};
    use super::*;

    fn message(id: &str, content: &str) -> StoredMessage {
        StoredMessage {
            id: id.into(),
            seq: 0,
            user: UserName::parse("ann").unwrap(),
            identity: Identity::named("ann"),
            content: content.to_owned(),
            timestamp: "2026-12-08T10:00:00.000Z".into(),
            reactions: Reactions::default(),
            attachment: None,
            edited_at: None,
            client_id: Some("c-1".to_owned()),
        }
    }

    fn room() -> Arc<str> {
        Arc::from("r")
    }

    fn take_post(doubt: &InDoubt, id: &str, seq: u64, now: Instant) -> Option<Change> {
        doubt.take_at("r", id, seq, false, now)
    }

    /// The room and message of a post to store.
    fn posted(change: Change) -> (Arc<str>, StoredMessage) {
        match change {
            Change::Post { room, message, .. } => (room, Arc::unwrap_or_clone(message)),
            other => panic!("not a post: {other:?}"),
        }
    }

    fn deleted(id: &str, seq: u64) -> String {
        format!(r#"{{"type":"message_deleted","message_id":"{id}","seq":{seq}}}"#)
    }

    fn event(id: &str, seq: u64) -> String {
        // Keys in any order, as a backbone's JSON encoder may write them.
        format!(
            r#"{{"content":"a \"message\"","seq":{seq},"type":"message","message_id":"{id}","reactions":{{}}}}"#
        )
    }

    #[test]
    fn a_post_kept_is_taken_once_by_its_event_with_the_events_seq() {
        let doubt = InDoubt::default();
        let t0 = Instant::now();
        assert!(doubt.is_empty());
        assert!(doubt.seen_at("r", &event("m1", 7), t0).is_none());
        doubt.keep_at(room(), message("m1", "hello"), t0);
        assert!(!doubt.is_empty());
        // Other events, another message's, a typing event, bad JSON: nothing.
        for other in [
            event("m2", 8),
            r#"{"type":"message_updated","message_id":"m1","seq":7}"#.to_owned(),
            r#"{"type":"typing","user":"ann"}"#.to_owned(),
            "not json".to_owned(),
        ] {
            assert!(doubt.seen_at("r", &other, t0).is_none(), "{other}");
        }
        let (r, m) = posted(doubt.seen_at("r", &event("m1", 7), t0).expect("its event"));
        assert_eq!((&*r, m.seq, m.content.as_str()), ("r", 7, "hello"));
        assert!(doubt.is_empty());
        assert!(doubt.seen_at("r", &event("m1", 7), t0).is_none(), "once");
    }

    #[test]
    fn a_retry_takes_a_post_kept_and_its_event_then_finds_nothing() {
        let doubt = InDoubt::default();
        let t0 = Instant::now();
        doubt.keep_at(room(), message("m1", "hello"), t0);
        assert!(take_post(&doubt, "other", 3, t0).is_none());
        let (_, m) = posted(take_post(&doubt, "m1", 3, t0).expect("kept"));
        assert_eq!(m.seq, 3);
        assert!(doubt.seen_at("r", &event("m1", 3), t0).is_none());
    }

    #[test]
    fn full_drops_the_oldest_and_time_drops_the_expired() {
        let doubt = InDoubt::with_limits(3, usize::MAX, Duration::from_secs(60));
        let t0 = Instant::now();
        for k in 0..4 {
            let at = t0 + Duration::from_secs(k);
            doubt.keep_at(room(), message(&format!("m{k}"), "x"), at);
        }
        let now = t0 + Duration::from_secs(4);
        assert!(
            take_post(&doubt, "m0", 1, now).is_none(),
            "dropped: the oldest"
        );
        assert!(take_post(&doubt, "m2", 3, now).is_some());
        // m1 was kept at t0 + 1 s: gone a minute later, m3 (t0 + 3 s) not.
        let later = t0 + Duration::from_secs(62);
        assert!(take_post(&doubt, "m1", 2, later).is_none(), "expired");
        assert!(take_post(&doubt, "m3", 4, later).is_some());
        assert!(doubt.is_empty());
    }

    #[test]
    fn the_byte_bound_holds() {
        let one = weight(&message("m0", "x"));
        let doubt = InDoubt::with_limits(10, 2 * one, Duration::from_secs(60));
        let t0 = Instant::now();
        for k in 0..3 {
            doubt.keep_at(room(), message(&format!("m{k}"), "x"), t0);
        }
        assert_eq!(doubt.lock().bytes, 2 * one);
        assert!(
            take_post(&doubt, "m0", 1, t0).is_none(),
            "dropped: over the bytes"
        );
        assert!(take_post(&doubt, "m1", 2, t0).is_some());
        assert!(take_post(&doubt, "m2", 3, t0).is_some());
        assert_eq!(doubt.lock().bytes, 0);
    }

    #[test]
    fn ids_taken_behind_an_old_post_do_not_pile_up() {
        let doubt = InDoubt::with_limits(4, usize::MAX, Duration::from_secs(60));
        let t0 = Instant::now();
        doubt.keep_at(room(), message("old", "x"), t0);
        for k in 0..100 {
            let id = format!("m{k}");
            doubt.keep_at(room(), message(&id, "x"), t0);
            assert!(take_post(&doubt, &id, 1, t0).is_some());
        }
        let posts = doubt.lock();
        assert!(posts.order.len() <= 2 * 4 + 1, "{}", posts.order.len());
        assert_eq!(posts.by_id.len(), 1);
        assert!(posts.by_id.contains_key("old"));
    }

    #[test]
    fn a_delete_kept_is_stored_by_its_event_once_and_not_after_its_retry_was_answered() {
        let doubt = InDoubt::default();
        let t0 = Instant::now();
        doubt.keep_delete_at(room(), "m1", t0);
        doubt.keep_at(room(), message("m2", "hello"), t0);
        // Its post's event, another message's delete, the same id's delete
        // in another room: not this.
        assert!(doubt.seen_at("r", &event("m1", 4), t0).is_none());
        assert!(doubt.seen_at("r", &deleted("m2", 5), t0).is_none());
        assert!(doubt.seen_at("elsewhere", &deleted("m1", 4), t0).is_none());
        match doubt.seen_at("r", &deleted("m1", 4), t0) {
            Some(Change::Delete {
                room,
                message_id,
                seq,
            }) => assert_eq!((&*room, message_id.as_str(), seq), ("r", "m1", 4)),
            other => panic!("{other:?}"),
        }
        assert!(doubt.seen_at("r", &deleted("m1", 4), t0).is_none(), "once");
        // A delete retried and answered: its event stores nothing more.
        doubt.keep_delete_at(room(), "m3", t0);
        doubt.delete_answered("m3");
        assert!(doubt.seen_at("r", &deleted("m3", 6), t0).is_none());
        // Only a delete is taken out that way, not a post; nor does a
        // delete of a post still kept replace it.
        doubt.delete_answered("m2");
        doubt.keep_delete_at(room(), "m2", t0);
        assert!(doubt.seen_at("r", &event("m2", 5), t0).is_some());
        assert!(doubt.is_empty());
        let posts = doubt.lock();
        assert_eq!((posts.bytes, posts.deletes), (0, 0));
    }

    #[test]
    fn a_post_is_taken_by_its_own_rooms_event_only() {
        let doubt = InDoubt::default();
        let t0 = Instant::now();
        doubt.keep_at(room(), message("m1", "hello"), t0);
        assert!(doubt.seen_at("other", &event("m1", 2), t0).is_none());
        assert!(doubt.take_at("other", "m1", 2, false, t0).is_none());
        assert!(doubt.seen_at("r", &event("m1", 2), t0).is_some());
    }

    #[test]
    fn the_count_follows_what_time_dropped() {
        let doubt = InDoubt::with_limits(10, usize::MAX, Duration::from_secs(60));
        let t0 = Instant::now();
        doubt.keep_delete_at(room(), "m1", t0);
        assert!(!doubt.is_empty());
        // Expired by the time another id is looked up: the count says so,
        // and the relay is back to one atomic load an event.
        assert!(
            doubt
                .take_at("r", "m9", 1, true, t0 + Duration::from_secs(61))
                .is_none()
        );
        assert!(doubt.is_empty());
    }

    #[test]
    fn a_delete_kept_twice_is_kept_once_and_expires_on_its_first_time() {
        let doubt = InDoubt::with_limits(10, usize::MAX, Duration::from_secs(60));
        let t0 = Instant::now();
        doubt.keep_delete_at(room(), "m1", t0);
        doubt.keep_delete_at(room(), "m1", t0 + Duration::from_secs(30));
        doubt.keep_delete_at(room(), "m2", t0 + Duration::from_secs(40));
        {
            let posts = doubt.lock();
            assert_eq!(
                (posts.by_id.len(), posts.order.len(), posts.deletes),
                (2, 2, 2)
            );
        }
        // m1 expires a minute after it was first kept; m2 does not yet.
        let at = t0 + Duration::from_secs(61);
        assert!(doubt.take_at("r", "m1", 1, true, at).is_none());
        assert!(doubt.take_at("r", "m2", 2, true, at).is_some());
        // An id taken out and kept again: its first entry in the order is
        // not its own, and does not expire it early.
        doubt.keep_delete_at(room(), "m3", at);
        assert!(doubt.take_at("r", "m3", 3, true, at).is_some());
        doubt.keep_delete_at(room(), "m4", at + Duration::from_secs(1));
        doubt.keep_delete_at(room(), "m3", at + Duration::from_secs(50));
        let later = at + Duration::from_secs(62);
        assert!(
            doubt.take_at("r", "m4", 4, true, later).is_none(),
            "expired"
        );
        assert!(
            doubt.take_at("r", "m3", 3, true, later).is_some(),
            "kept 12 s ago"
        );
    }

    #[test]
    fn deletes_never_push_posts_out() {
        let doubt = InDoubt::with_limits(8, usize::MAX, Duration::from_secs(60));
        let t0 = Instant::now();
        for k in 0..6 {
            doubt.keep_at(room(), message(&format!("p{k}"), "x"), t0);
        }
        // Two deletes at most (a quarter of 8); the rest are not kept.
        for k in 0..5 {
            doubt.keep_delete_at(room(), &format!("d{k}"), t0);
        }
        let posts = doubt.lock();
        assert_eq!((posts.by_id.len(), posts.deletes), (8, 2));
        assert!((0..6).all(|k| posts.by_id.contains_key(&format!("p{k}"))));
    }

    #[test]
    fn a_delete_within_its_share_is_not_kept_when_the_record_is_full() {
        // Full by count: eight posts of eight.
        let doubt = InDoubt::with_limits(8, usize::MAX, Duration::from_secs(60));
        let t0 = Instant::now();
        for k in 0..8 {
            doubt.keep_at(room(), message(&format!("p{k}"), "x"), t0);
        }
        doubt.keep_delete_at(room(), "d0", t0);
        {
            let posts = doubt.lock();
            assert_eq!((posts.by_id.len(), posts.deletes), (8, 0));
            assert!((0..8).all(|k| posts.by_id.contains_key(&format!("p{k}"))));
        }
        assert!(take_post(&doubt, "p0", 1, t0).is_some(), "the oldest stays");

        // Full by bytes: two posts fill them, with room in the count.
        let one = weight(&message("p0", "x"));
        let doubt = InDoubt::with_limits(8, 2 * one, Duration::from_secs(60));
        for k in 0..2 {
            doubt.keep_at(room(), message(&format!("p{k}"), "x"), t0);
        }
        doubt.keep_delete_at(room(), "d0", t0);
        assert_eq!(doubt.lock().deletes, 0);
        assert!(take_post(&doubt, "p0", 1, t0).is_some(), "the oldest stays");
        assert!(take_post(&doubt, "p1", 2, t0).is_some());
    }
}
