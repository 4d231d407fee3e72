//! One room: its members in a slab, who is online, and its ring of recent
//! messages ([`Ring`]). Everything here runs under the room's lock and never awaits;
//! every change that others must see is serialized once into a [`Frame`] and
//! pushed to each member's [`Outbox`]. With a durable store, each change is
//! also queued for it ([`Store::slot`]) before it is applied, so a change the
//! store cannot take is refused rather than lost.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use slab::Slab;

use super::Identity;
use super::backbone::Posted;
use super::event::{
    Attachment, AttachmentPreview, ErrorCode, Event, MessageView, Reaction, Reactions, Refusal,
    StoredMessage,
};
use super::frame::{self, Frame};
use super::identity::NameTaken;
use super::message_frame;
use super::names::{Emoji, RoomName, UserName};
use super::outbox::{Outbox, Pushed};
use super::ring::Ring;
use super::store::{Change, RESERVE_BLOCK, Slot as StoreSlot, Snapshot, Store};
use super::{Common, ReactionAction};

/// A member's slot: the slab key is reused after a member leaves, so each
/// slot also carries the generation it was filled in.
pub(crate) struct Slot {
    pub generation: u64,
    pub user: UserName,
    /// Who connected with the name (with a backbone, a re-announcement
    /// of this instance's members says who holds each name).
    pub identity: Identity,
    pub outbox: Arc<Outbox>,
    /// Whether this connection is counted in `online` yet. A member that
    /// waits for history from the store is counted (and announced) only
    /// when its welcome is queued.
    pub counted: bool,
    /// Set until the member's `welcome` is queued: it gets nothing before.
    /// With a backbone it holds the numbered room events that arrive
    /// meanwhile (no frame for one that skips this member); see `relay.rs`.
    pub pending: Option<Vec<(u64, Option<Frame>)>>,
    /// With a backbone, once welcomed: this member has every room event up
    /// to this one (in its `welcome`, or sent since).
    pub has: u64,
    /// Told when the `welcome` is queued (dropped, if it never will be), so
    /// the session reads no request before it.
    pub welcomed: Option<tokio::sync::oneshot::Sender<()>>,
    /// With a backbone: this connection was registered there (its welcome
    /// was asked for). A re-announcement of this instance's members counts
    /// only these, so it can never announce a newcomer's `join` ahead of
    /// the newcomer's own registration (which would then carry none).
    pub announced: bool,
    /// On one instance: this connection holds its name (see `holders`).
    pub holds: bool,
}

/// Who holds a name in a room (one instance; with a backbone, the backbone
/// decides): the identity of its connections, and since when it has none.
pub(crate) struct Holder {
    identity: Identity,
    connections: u32,
    released: Option<Instant>,
}

impl Holder {
    /// Whether `identity` may use the name now.
    fn lets(&self, identity: &Identity, grace: Duration) -> bool {
        self.identity == *identity || !self.holds(grace)
    }

    /// Whether the name is still its holder's: in use, or released less
    /// than `grace` ago.
    fn holds(&self, grace: Duration) -> bool {
        self.connections > 0 || self.released.is_some_and(|t| t.elapsed() < grace)
    }
}

pub(crate) struct RoomState {
    pub members: Slab<Slot>,
    pub(super) next_gen: u64,
    /// Online names with their number of connections, sorted for display.
    pub(super) online: BTreeMap<UserName, u32>,
    /// Last typing broadcast per online name, for the 2 s throttle.
    typing: HashMap<UserName, Instant>,
    /// Who holds each name in use (or released within the grace period).
    holders: HashMap<UserName, Holder>,
    /// How long a released name stays held.
    hold_grace: Duration,
    /// The recent messages.
    pub(super) ring: Ring,
    /// The highest seq handed out.
    last_seq: u64,
    /// Whether the ring and `last_seq` are the room's: always without a
    /// store; with one, once the room was loaded from it.
    pub(super) loaded: bool,
    /// How many times the floor was forgotten ([`RoomState::forget_floor`]):
    /// a load read before the last time is not installed.
    pub(super) floor_generation: u64,
    /// With a store: seqs up to this one are reserved durably.
    reserved: Arc<AtomicU64>,
    /// With a store: the reservation last asked for.
    requested: u64,
    /// When the last member left (for dropping idle rooms).
    pub empty_since: Option<Instant>,
    /// Welcomes reading the store for this room (see [`Reading`]).
    reading: u32,
    /// With a backbone: the last event number the room's stream carried.
    /// The stream is in order, so a number at or below it again means the
    /// backbone's numbering went back: its data was lost.
    pub(super) stream_ev: Option<u64>,
}

pub(crate) struct Room {
    pub name: RoomName,
    pub state: std::sync::Mutex<RoomState>,
    /// Held while the room is read from the store, so it is read once.
    pub loading: tokio::sync::Mutex<()>,
}

impl Room {
    /// A room with nothing in it; `loaded` when there is no store to read
    /// its history from.
    pub fn new(name: RoomName, loaded: bool, hold_grace: Duration) -> Self {
        Self {
            name,
            state: std::sync::Mutex::new(RoomState {
                members: Slab::new(),
                next_gen: 0,
                online: BTreeMap::new(),
                typing: HashMap::new(),
                holders: HashMap::new(),
                hold_grace,
                ring: Ring::default(),
                last_seq: 0,
                loaded,
                floor_generation: 0,
                reserved: Arc::new(AtomicU64::new(if loaded { u64::MAX } else { 0 })),
                requested: 0,
                empty_since: Some(Instant::now()),
                reading: 0,
                stream_ev: None,
            }),
            loading: tokio::sync::Mutex::new(()),
        }
    }

    pub fn lock(&self) -> std::sync::MutexGuard<'_, RoomState> {
        // Every mutation below leaves the state consistent before anything
        // that could panic, so a poisoned lock is still safe to use.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A welcome reading the store for its room (the room's load, or a resume
/// older than the ring): until it is dropped the room stays in the hub
/// ([`RoomState::idle_since`]). A room dropped meanwhile would get its load
/// installed all the same, in a room the hub no longer holds: its messages
/// counted in the hub's total for good (which only ever grows then: past
/// the budget every post trims every room, past twice it every post is
/// refused) and its seq reservation never settled. Dropped outside the
/// room's lock (it takes it).
pub(crate) struct Reading(Arc<Room>);

impl Reading {
    /// Counts a read for `room`, whose state the caller holds as `state`.
    pub fn start(room: &Arc<Room>, state: &mut RoomState) -> Self {
        state.reading += 1;
        Self(Arc::clone(room))
    }
}

impl Drop for Reading {
    fn drop(&mut self) {
        self.0.lock().reading -= 1;
    }
}

/// A member waiting for history from the store: what its welcome needs.
pub(crate) struct Waiting {
    pub key: usize,
    pub generation: u64,
    pub user: UserName,
    pub after: Option<u64>,
    /// A new claim to hand to this connection in its welcome.
    pub claim: Option<String>,
}

/// A retry of a message that is no longer in the room's recent history
/// (deleted, or with Redis, pushed out of the ring): nothing is posted, and
/// the sender is told why its post has no echo.
pub(super) fn retry_of_gone() -> Refusal {
    Refusal::new(
        ErrorCode::UnknownMessage,
        "this message (its client_id) was already posted and is no longer in the room's \
         recent history (deleted, or older); it is not posted again",
    )
}

pub(super) fn refused_not_found(message_id: &str) -> Refusal {
    Refusal::new(
        ErrorCode::UnknownMessage,
        format!("no message {message_id:?} in this room's recent history"),
    )
}

impl RoomState {
    fn online_names(&self) -> Vec<&UserName> {
        self.online.keys().collect()
    }

    /// Pushes one shared frame to every welcomed member (or every one but
    /// `skip`'s connections). One refcount increment per member; no copy,
    /// no alloc. A member still waiting for its `welcome` gets nothing: the
    /// welcome, built when it is ready, shows the room as it is then.
    fn broadcast(&self, frame: &Frame, skip: Option<&UserName>, common: &Common) {
        for (_, slot) in &self.members {
            if slot.pending.is_some() || skip.is_some_and(|u| *u == slot.user) {
                continue;
            }
            if slot.outbox.push(frame.clone()) == Pushed::Overflowed {
                common.metrics.slow_consumers_dropped.inc();
            }
        }
    }

    fn presence_frame(&self, kind: PresenceKind, user: &UserName, common: &Common) -> Frame {
        let online_count = self.online.len();
        let online = (online_count <= common.config.online_list_cap).then(|| self.online_names());
        let event = match kind {
            PresenceKind::Join => Event::Join {
                user,
                online_count,
                online,
            },
            PresenceKind::Leave => Event::Leave {
                user,
                online_count,
                online,
            },
        };
        frame::json(&event)
    }

    /// Where a resume starts: past the room's newest seq, the client counted
    /// in a numbering this room no longer has (it was reset: restart without
    /// a store, or dropped when empty), so everything in the current
    /// numbering is news to it.
    pub fn resume_from(&self, after: Option<u64>) -> Option<u64> {
        after.map(|a| if a > self.last_seq { 0 } else { a })
    }

    /// Whether a newcomer resuming after `after` needs messages the ring no
    /// longer holds but the store does (or the room is not loaded yet).
    pub fn needs_store(&self, after: Option<u64>) -> bool {
        !self.loaded
            || self
                .resume_from(after)
                .is_some_and(|a| a < self.ring.evicted_through())
    }

    /// The seq below which a resume must be read from the store: the ring's
    /// oldest message, or past the newest if the ring is empty.
    pub fn ring_start(&self) -> u64 {
        self.ring.start(self.last_seq.saturating_add(1))
    }

    /// Puts a room's stored state in place (once, when it is first loaded).
    pub fn install(&mut self, snapshot: Snapshot, common: &Common) {
        if self.loaded {
            return;
        }
        let ring = common.config.history.max(1);
        let mut tail = snapshot.tail;
        let cut = tail.len().saturating_sub(ring);
        tail.drain(..cut);
        let evicted_through = match tail.first() {
            Some(first) if snapshot.older || cut > 0 => first.seq.saturating_sub(1),
            None if snapshot.older => snapshot.last_seq,
            _ => 0,
        };
        self.ring
            .install(tail, evicted_through, &common.history_bytes);
        self.last_seq = snapshot.last_seq;
        self.requested = snapshot.reserved;
        self.reserved.store(snapshot.reserved, Ordering::Release);
        self.loaded = true;
    }

    /// The `welcome` for `user`: the last messages (or those after `after`)
    /// from the ring, preceded by `older` (read from the store, oldest first;
    /// `older_gap` if the store could not give them all).
    fn welcome(
        &self,
        room: &RoomName,
        user: &UserName,
        (after, claim): (Option<u64>, Option<&str>),
        (older, older_gap): (&[StoredMessage], bool),
        common: &Common,
    ) -> Frame {
        let after = self.resume_from(after);
        let all = older.iter().chain(self.ring.iter());
        let (wanted, evicted): (Vec<&StoredMessage>, bool) = match after {
            None => {
                let total = older.len() + self.ring.len();
                let skip = total.saturating_sub(common.config.welcome_history);
                (all.skip(skip).collect(), false)
            }
            Some(after) => {
                let covered_from = older.first().map_or(self.ring_start(), |m| m.seq);
                let evicted = older_gap
                    || (after < self.ring.evicted_through()
                        && after.saturating_add(1) < covered_from);
                (all.filter(|m| m.seq > after).collect(), evicted)
            }
        };
        let (history, cut) = newest_within(
            wanted.iter().map(|m| MessageView::of("message", m, None)),
            common.config.welcome_history_bytes,
        );
        frame::json(&Event::Welcome {
            room,
            user,
            online: self.online_names(),
            online_count: self.online.len(),
            history,
            gap: evicted || (cut && after.is_some()),
            last_seq: self.last_seq,
            limits: &common.config.limits,
            claim,
        })
    }

    /// Whether `identity` may use `user` here now.
    pub fn may_hold(&self, user: &UserName, identity: &Identity) -> bool {
        let grace = self.hold_grace;
        self.holders
            .get(user)
            .is_none_or(|h| h.lets(identity, grace))
    }

    /// Holds `user` for `identity` (one more connection), or says who has it.
    fn hold(&mut self, user: &UserName, identity: &Identity) -> Result<(), NameTaken> {
        if !self.may_hold(user, identity) {
            return Err(NameTaken {
                user: user.as_str().to_owned(),
            });
        }
        let h = self.holders.entry(user.clone()).or_insert(Holder {
            identity: identity.clone(),
            connections: 0,
            released: None,
        });
        if h.identity != *identity {
            h.identity = identity.clone();
            h.connections = 0;
        }
        h.connections += 1;
        h.released = None;
        Ok(())
    }

    /// One connection with `user` closed; after the last, the name stays
    /// held for the grace period. Holds long released are forgotten here
    /// (so they never outgrow the names recently used).
    fn release(&mut self, user: &UserName) {
        let grace = self.hold_grace;
        if let Some(h) = self.holders.get_mut(user) {
            h.connections = h.connections.saturating_sub(1);
            if h.connections == 0 {
                h.released = Some(Instant::now());
            }
        }
        if self.holders.len() > 2 * self.online.len() + 64 {
            self.holders.retain(|_, h| h.holds(grace));
        }
    }

    /// Counts a connection of `user` online; returns whether it is the
    /// name's first.
    fn count_online(&mut self, user: &UserName) -> bool {
        let count = self.online.entry(user.clone()).or_insert(0);
        *count += 1;
        *count == 1
    }

    /// Adds a connection; sends it `welcome`, then `join` to everyone if this
    /// is the name's first connection. Returns the slot key and generation.
    pub fn join(
        &mut self,
        room: &RoomName,
        (user, identity): (UserName, &Identity),
        (after, claim): (Option<u64>, Option<&str>),
        outbox: Arc<Outbox>,
        common: &Common,
    ) -> Result<(usize, u64), NameTaken> {
        self.hold(&user, identity)?;
        let generation = self.next_gen;
        self.next_gen += 1;
        self.empty_since = None;
        let first = self.count_online(&user);
        self.expire(common);
        outbox.push(self.welcome(room, &user, (after, claim), (&[], false), common));
        let join = first.then(|| self.presence_frame(PresenceKind::Join, &user, common));
        let key = self.members.insert(Slot {
            generation,
            user,
            identity: identity.clone(),
            outbox,
            counted: true,
            pending: None,
            has: 0,
            welcomed: None,
            announced: true,
            holds: true,
        });
        if let Some(join) = join {
            self.broadcast(&join, None, common);
        }
        Ok((key, generation))
    }

    /// Adds a connection whose welcome needs the store (the room is not
    /// loaded, or the resume reaches past the ring): it gets nothing and is
    /// not counted online until [`RoomState::welcome_waiting`].
    pub fn join_waiting(
        &mut self,
        (user, identity): (UserName, &Identity),
        outbox: Arc<Outbox>,
        welcomed: tokio::sync::oneshot::Sender<()>,
    ) -> Result<(usize, u64), NameTaken> {
        self.hold(&user, identity)?;
        let generation = self.next_gen;
        self.next_gen += 1;
        self.empty_since = None;
        let key = self.members.insert(Slot {
            generation,
            user,
            identity: identity.clone(),
            outbox,
            counted: false,
            pending: Some(Vec::new()),
            has: 0,
            welcomed: Some(welcomed),
            announced: true,
            holds: true,
        });
        Ok((key, generation))
    }

    /// Queues the welcome of a member that waited for the store (with the
    /// `older` messages read for it), counts it online and announces it.
    pub fn welcome_waiting(
        &mut self,
        room: &RoomName,
        w: &Waiting,
        older: (&[StoredMessage], bool),
        common: &Common,
    ) {
        if !self.has(w.key, w.generation) {
            return; // it left while waiting
        }
        self.expire(common);
        let first = self.count_online(&w.user);
        let welcome = self.welcome(room, &w.user, (w.after, w.claim.as_deref()), older, common);
        let slot = &mut self.members[w.key];
        slot.counted = true;
        slot.pending = None;
        slot.outbox.push(welcome);
        if let Some(welcomed) = slot.welcomed.take() {
            let _ = welcomed.send(());
        }
        if first {
            let join = self.presence_frame(PresenceKind::Join, &w.user, common);
            self.broadcast(&join, None, common);
        }
    }

    /// Removes a connection if `(key, generation)` still names it; sends `leave` to
    /// the rest after the name's last connection.
    pub fn leave(&mut self, key: usize, generation: u64, common: &Common) {
        if let Some((user, 0)) = self.remove(key, generation) {
            let leave = self.presence_frame(PresenceKind::Leave, &user, common);
            self.broadcast(&leave, None, common);
        }
    }

    /// Whether `(key, generation)` still names a connection.
    pub fn has(&self, key: usize, generation: u64) -> bool {
        self.members
            .get(key)
            .is_some_and(|s| s.generation == generation)
    }

    /// Removes a connection, if `(key, generation)` still names one; returns
    /// its name and how many connections that name still has here (`None`
    /// too for one that was never counted online).
    pub(super) fn remove(&mut self, key: usize, generation: u64) -> Option<(UserName, u32)> {
        if !self.has(key, generation) {
            return None;
        }
        let slot = self.members.remove(key);
        if self.members.is_empty() {
            self.empty_since = Some(Instant::now());
        }
        if slot.holds {
            self.release(&slot.user);
        }
        if !slot.counted {
            return None;
        }
        let left = match self.online.get_mut(&slot.user) {
            Some(n) if *n > 1 => {
                *n -= 1;
                *n
            }
            _ => {
                self.online.remove(&slot.user);
                self.typing.remove(&slot.user);
                0
            }
        };
        Some((slot.user, left))
    }

    /// Room in the store's queue for one change, if the room has a store;
    /// refused when the store cannot take it.
    fn store_slot(common: &Common) -> Result<Option<StoreSlot<'_>>, Refusal> {
        common.store.as_ref().map(Store::slot).transpose()
    }

    /// Drops the ring's oldest messages until it weighs at most `target`
    /// bytes or holds `keep` messages; returns how many went. They stay in
    /// the store, if there is one; without, a resume that wants them says
    /// `gap`.
    pub fn trim(&mut self, target: usize, keep: usize, common: &Common) -> usize {
        self.ring.trim(target, keep, &common.history_bytes)
    }

    /// Drops the ring's messages that the store's retention period deleted
    /// (posted before [`Store::pruned_before`]), so a welcome no longer
    /// shows them and an edit, a reaction or a delete of one is refused as
    /// of an unknown message instead of being accepted and not stored.
    /// Runs with every sweep, and before a welcome or a change is made
    /// from the ring. Returns how many went.
    pub fn expire(&mut self, common: &Common) -> usize {
        match common.store.as_ref().and_then(Store::pruned_before) {
            Some(before) => self.ring.expire(before, &common.history_bytes),
            None => 0,
        }
    }

    /// Since when the room has had no member, if it may leave memory: not
    /// while a welcome reads the store for it (see [`Reading`]), nor while
    /// a name released here is still held (the holds go with the room, and
    /// the name would be anyone's at once).
    pub fn idle_since(&self) -> Option<Instant> {
        let holding = || self.holders.values().any(|h| h.holds(self.hold_grace));
        self.empty_since.filter(|_| self.reading == 0 && !holding())
    }

    /// The room leaves memory: its weight leaves the hub's total.
    pub fn unload(&mut self, common: &Common) {
        self.ring.clear(&common.history_bytes);
    }

    /// Retry keys kept: all of them, and those of deleted messages.
    #[cfg(test)]
    pub(super) fn retries_kept(&self) -> (usize, usize) {
        self.ring.retries_kept()
    }

    /// Stores and broadcasts a new message. A retry (the same identity and
    /// `client_id` as a message the ring still holds) posts nothing: it
    /// answers that message, for the sender alone.
    pub fn post(
        &mut self,
        room: &RoomName,
        (user, identity): (&UserName, &Identity),
        content: String,
        attachment: Option<Attachment>,
        client_id: Option<&str>,
        common: &Common,
    ) -> Result<Posted, Refusal> {
        if let Some(again) = client_id.and_then(|c| self.ring.posted_before(identity, c)) {
            let again = again.ok_or_else(retry_of_gone)?;
            let echo = message_frame::message(&MessageView::of("message", again, client_id));
            return Ok(Posted {
                seq: again.seq,
                duplicate: true,
                echo: Some(echo),
                message_id: Some(again.id.to_string()),
            });
        }
        if common.history_bytes.load(Ordering::Relaxed)
            > common.config.history_memory_bytes.saturating_mul(2)
        {
            return Err(Refusal::new(
                ErrorCode::Unavailable,
                "the server's memory for recent history is full; try again shortly",
            ));
        }
        let seq = self.last_seq + 1;
        if seq > self.reserved.load(Ordering::Acquire) {
            return Err(Refusal::new(
                ErrorCode::Unavailable,
                "the history store is behind; nothing was posted, try again shortly",
            ));
        }
        let store = Self::store_slot(common)?;
        self.last_seq = seq;
        let message = StoredMessage {
            id: common.next_message_id(),
            seq,
            user: user.clone(),
            identity: identity.clone(),
            content,
            timestamp: common.now_rfc3339(),
            reactions: Reactions::default(),
            attachment,
            edited_at: None,
            client_id: client_id.map(str::to_owned),
        };
        let frame = message_frame::message(&MessageView::of("message", &message, client_id));
        // Shared with the store's queue, not copied: the ring and the
        // writer read the same message (an edit before the writer is done
        // with it copies it then).
        let message = Arc::new(message);
        if let Some(slot) = store {
            // Ask for the next block while half of this one is left, so the
            // store has made it durable long before it is needed.
            let reserve = (seq + RESERVE_BLOCK / 2 > self.requested).then(|| {
                self.requested = self.requested.max(seq) + RESERVE_BLOCK;
                self.requested
            });
            let change = Change::Post {
                room: room.key(),
                message: Arc::clone(&message),
                reserve_through: reserve,
            };
            slot.send(change, reserve.map(|_| Arc::clone(&self.reserved)));
        }
        self.ring
            .push(message, common.config.history.max(1), &common.history_bytes);
        if common.history_bytes.load(Ordering::Relaxed) > common.config.history_memory_bytes {
            common.over_budget.notify_one();
        }
        self.broadcast(&frame, None, common);
        common.metrics.messages.inc();
        Ok(Posted {
            seq,
            duplicate: false,
            echo: None,
            message_id: None,
        })
    }

    fn position(&self, message_id: &str) -> Result<usize, Refusal> {
        self.ring
            .position(message_id)
            .ok_or_else(|| refused_not_found(message_id))
    }

    /// Applies a reaction change; broadcasts `reaction_update` only if
    /// something changed, and answers whether it did. Whether `identity`
    /// has reacted decides add and remove, never the name.
    pub fn react(
        &mut self,
        room: &RoomName,
        (user, identity): (&UserName, &Identity),
        message_id: &str,
        emoji: Emoji,
        action: ReactionAction,
        common: &Common,
    ) -> Result<bool, Refusal> {
        let max = common.config.max_reactions_per_message;
        let max_users = common.config.max_users_per_reaction;
        self.expire(common);
        let at = self.position(message_id)?;
        let reactions = &self.ring.get(at).reactions.0;
        let pos = reactions.iter().position(|r| r.emoji == emoji);
        let mine = pos.and_then(|i| reactions[i].who.iter().position(|w| w == identity));
        let add = match action {
            ReactionAction::Add => true,
            ReactionAction::Remove => false,
            ReactionAction::Toggle => mine.is_none(),
        };
        if add == mine.is_some() {
            return Ok(false); // already so: nothing changes, nothing is broadcast
        }
        if add {
            match pos {
                Some(i) if reactions[i].users.len() >= max_users => {
                    return Err(Refusal::new(
                        ErrorCode::TooManyReactions,
                        format!("{max_users} people already reacted with this emoji"),
                    ));
                }
                None if reactions.len() >= max => {
                    return Err(Refusal::new(
                        ErrorCode::TooManyReactions,
                        format!(
                            "this message already has {max} different emoji; react with one of those"
                        ),
                    ));
                }
                _ => {}
            }
            // What the reactions would weigh as JSON with this one added.
            let grown = frame::json_len(&self.ring.get(at).reactions)
                + frame::json_len(user)
                + 1
                + pos.map_or(frame::json_len(&emoji) + 4, |_| 0);
            let cap = common.config.max_reaction_bytes;
            if grown > cap {
                return Err(Refusal::new(
                    ErrorCode::TooManyReactions,
                    format!(
                        "this message's reactions are full ({} KiB of names); react to another message",
                        cap >> 10
                    ),
                ));
            }
        }
        // The event names the reaction taken away: one identity may hold
        // several names, and the name is the one it reacted under.
        let removed = match (pos, mine) {
            (Some(i), Some(j)) => Some(reactions[i].users[j].clone()),
            _ => None,
        };
        let store = Self::store_slot(common)?;
        self.ring.change(at, &common.history_bytes, |message| {
            let reactions = &mut message.reactions.0;
            match (pos, mine) {
                (Some(i), None) => {
                    reactions[i].users.push(user.clone());
                    reactions[i].who.push(identity.clone());
                }
                (None, _) => reactions.push(Reaction {
                    emoji: emoji.clone(),
                    users: vec![user.clone()],
                    who: vec![identity.clone()],
                }),
                (Some(i), Some(j)) => {
                    reactions[i].users.remove(j);
                    reactions[i].who.remove(j);
                    if reactions[i].users.is_empty() {
                        reactions.remove(i);
                    }
                }
            }
        });
        let message = self.ring.get(at);
        if let Some(slot) = store {
            let change = Change::React {
                room: room.key(),
                message_id: message.id.to_string(),
                seq: message.seq,
                reactions: message.reactions.to_store_json(),
                version: 0,
            };
            slot.send(change, None);
        }
        let frame = frame::json(&Event::reaction_update(
            &message.id,
            &emoji,
            (removed.as_ref().unwrap_or(user), add),
            &message.reactions,
        ));
        self.broadcast(&frame, None, common);
        Ok(true)
    }

    /// Replaces a message's content; author only.
    pub fn edit(
        &mut self,
        room: &RoomName,
        identity: &Identity,
        message_id: &str,
        content: String,
        common: &Common,
    ) -> Result<(), Refusal> {
        self.expire(common);
        let at = self.position(message_id)?;
        let message = self.ring.get(at);
        if message.identity != *identity {
            return Err(Refusal::new(
                ErrorCode::Forbidden,
                "only the author can edit a message",
            ));
        }
        if content.trim().is_empty() && message.attachment.is_none() {
            return Err(Refusal::new(
                ErrorCode::InvalidField,
                "`content` must not be blank; delete the message instead",
            ));
        }
        let store = Self::store_slot(common)?;
        let now = common.now_rfc3339();
        self.ring.change(at, &common.history_bytes, |message| {
            message.content = content;
            message.edited_at = Some(now.to_string());
        });
        let message = self.ring.get(at);
        if let Some(slot) = store {
            let change = Change::Edit {
                room: room.key(),
                message_id: message.id.to_string(),
                seq: message.seq,
                content: message.content.clone(),
                edited_at: message.edited_at.clone().unwrap_or_default(),
                version: 0,
            };
            slot.send(change, None);
        }
        let frame = message_frame::message(&MessageView::of("message_updated", message, None));
        self.broadcast(&frame, None, common);
        Ok(())
    }

    /// Sets the preview of message `seq`'s attachment, if the message is
    /// still in memory, still attaches `url`, and has no preview yet: the
    /// store is told and the room gets `message_updated`. Returns whether it
    /// did (a full store queue refuses it, like any change).
    pub fn set_preview(
        &mut self,
        room: &RoomName,
        seq: u64,
        url: &str,
        preview: AttachmentPreview,
        common: &Common,
    ) -> bool {
        let Some(at) = self.ring.position_of_seq(seq) else {
            return false;
        };
        let waiting = self
            .ring
            .get(at)
            .attachment
            .as_ref()
            .is_some_and(|a| a.url == url && a.preview.is_none());
        if !waiting {
            return false;
        }
        let Ok(store) = Self::store_slot(common) else {
            return false;
        };
        self.ring.change(at, &common.history_bytes, |message| {
            if let Some(attachment) = message.attachment.as_mut() {
                attachment.preview = Some(preview);
            }
        });
        let message = self.ring.get(at);
        if let (Some(slot), Some(attachment)) = (store, &message.attachment) {
            let change = Change::Attachment {
                room: room.key(),
                message_id: message.id.to_string(),
                seq: message.seq,
                attachment: serde_json::to_string(attachment).unwrap_or_default(),
            };
            slot.send(change, None);
        }
        let frame = message_frame::message(&MessageView::of("message_updated", message, None));
        self.broadcast(&frame, None, common);
        true
    }

    /// Removes a message; author only (or a moderator).
    pub fn delete(
        &mut self,
        room: &RoomName,
        (identity, moderator): (&Identity, bool),
        message_id: &str,
        common: &Common,
    ) -> Result<(), Refusal> {
        self.expire(common);
        let at = self.position(message_id)?;
        if !moderator && self.ring.get(at).identity != *identity {
            return Err(Refusal::new(
                ErrorCode::Forbidden,
                "only the author can delete a message",
            ));
        }
        let store = Self::store_slot(common)?;
        let Some(message) = self.ring.remove(at, &common.history_bytes) else {
            return Err(refused_not_found(message_id));
        };
        if let Some(slot) = store {
            let change = Change::Delete {
                room: room.key(),
                message_id: message.id.to_string(),
                seq: message.seq,
            };
            slot.send(change, None);
        }
        let frame = frame::json(&Event::MessageDeleted {
            message_id,
            seq: message.seq,
        });
        self.broadcast(&frame, None, common);
        Ok(())
    }

    /// Tells the others `user` is typing, at most once per typing interval.
    pub fn typing(&mut self, user: &UserName, common: &Common) {
        if !self.typing_allowed(user, common) {
            return;
        }
        let frame = frame::json(&Event::Typing { user });
        self.broadcast(&frame, Some(user), common);
    }

    /// Whether `user` may send a typing event now (one per
    /// `typing_interval`; with a backbone, it holds the cross-instance half
    /// of the throttle).
    pub fn typing_allowed(&mut self, user: &UserName, common: &Common) -> bool {
        let now = Instant::now();
        if let Some(last) = self.typing.get(user)
            && now.duration_since(*last) < common.config.typing_interval
        {
            return false;
        }
        self.typing.insert(user.clone(), now);
        true
    }

    /// The `reactions` answer: one message's reactions, whole.
    pub fn reactions(&self, message_id: &str) -> Result<Frame, Refusal> {
        let message = self.ring.get(self.position(message_id)?);
        Ok(frame::json(&Event::Reactions {
            message_id: &message.id,
            reactions: &message.reactions,
        }))
    }

    /// The `presence` answer for one member.
    pub fn presence(&self) -> Frame {
        frame::json(&Event::Presence {
            online: self.online_names(),
            online_count: self.online.len(),
        })
    }

    /// Every message still held, oldest first (for tests and embedders).
    pub fn history(&self) -> impl DoubleEndedIterator<Item = &StoredMessage> {
        self.ring.iter()
    }

    /// Online names with their connections here.
    pub fn local_online(&self) -> impl Iterator<Item = (&UserName, u32)> {
        self.online.iter().map(|(u, n)| (u, *n))
    }

    /// Keeps where the room's numbering stopped as it leaves memory: in
    /// the store, or without one in the hub ([`DroppedSeqs`]), so the room
    /// made again numbers on. (One instance only: with a backbone, the
    /// backbone numbers.)
    ///
    /// [`DroppedSeqs`]: super::dropped::DroppedSeqs
    pub fn settle(&self, room: &RoomName, common: &Common) {
        if !self.loaded || !matches!(common.link, super::Link::Local) {
            return;
        }
        let Some(store) = common.store.as_ref() else {
            common.dropped.remember(room, self.last_seq);
            return;
        };
        if let Ok(slot) = store.slot() {
            let change = Change::Settle {
                room: room.key(),
                last_seq: self.last_seq,
            };
            slot.send(change, None);
        }
    }

    /// A room made again after it left memory, history in memory only:
    /// it numbers on after `last_seq`, and what went with it counts as
    /// pushed out of the ring (a resume from before is told `gap`).
    pub fn number_after(&mut self, last_seq: u64, common: &Common) {
        self.last_seq = last_seq;
        self.ring
            .install(Vec::new(), last_seq, &common.history_bytes);
    }

    /// With a backbone: the room is let go here (its last member left, or
    /// the backbone lost its data), so its floor, what the store held when
    /// it was loaded, is read again at its next join. Other instances (and
    /// this one, since) have stored more; a backbone that restarted empty
    /// would otherwise number from the old floor and reuse their seqs.
    pub fn forget_floor(&mut self) {
        self.loaded = false;
        self.floor_generation += 1;
    }

    /// The highest seq handed out (or, with a backbone, held in the store).
    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }
}

/// The newest of `views` (oldest first) whose JSON fits in `budget` bytes,
/// oldest first, and whether any was left out. One message too large for
/// what is left is skipped, not the end of the history: a single huge
/// message cannot hide the ones before it.
fn newest_within<'a>(
    views: impl DoubleEndedIterator<Item = MessageView<'a>>,
    budget: usize,
) -> (Vec<MessageView<'a>>, bool) {
    let mut used = 0usize;
    let mut cut = false;
    let mut kept = Vec::new();
    for view in views.rev() {
        let size = frame::json_len(&view) + 1; // and its comma
        if used.saturating_add(size) > budget {
            cut = true;
            continue;
        }
        used += size;
        kept.push(view);
    }
    kept.reverse();
    (kept, cut)
}

enum PresenceKind {
    Join,
    Leave,
}
