//! The port for an external room backbone: what lets several instances
//! behind one URL act as one server.
//!
//! On one instance there is no backbone: a room applies every change under
//! its lock and broadcasts at once, and nothing here is on that path. With a
//! backbone (Redis implements it in `src/redis/`), the hub hands each change
//! to [`Backbone`], which applies it where every instance sees it (checks
//! included) and publishes the resulting event; events from every instance
//! come back through [`Inbound`], numbered per room, and the room's relay
//! (`relay.rs`) fans each one out to its local members as one shared frame.
//!
//! A post or a delete the backbone did not answer may still be carried out
//! by it ([`NotPosted::in_doubt`]); the hub then keeps it for its store
//! until its event comes back (`in_doubt.rs`).
//!
//! The hub knows no backbone by name; a backbone knows nothing of sockets.
//! Methods that change shared state queue their work at once and return an
//! [`Answer`] to await: call them under the room's lock when their order
//! matters (a join's presence before a later leave's), await outside it.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Weak};

use super::event::{Attachment, Refusal};
use super::names::{Emoji, RoomName, UserName};
use super::{Identity, ReactionAction, Shared, frame};

/// A backbone's pending answer.
pub type Answer<T> = Pin<Box<dyn Future<Output = Result<T, Refusal>> + Send + 'static>>;

/// A new message as the hub hands it to the backbone: the backbone gives it
/// its `seq`, stores it and publishes it.
#[derive(Debug)]
pub struct NewMessage<'a> {
    /// Its id (unique across instances).
    pub id: &'a str,
    /// Its author.
    pub user: &'a UserName,
    /// Who the author is, whatever the name (edits and deletes check it).
    pub identity: &'a Identity,
    /// Its text.
    pub content: &'a str,
    /// RFC 3339 UTC.
    pub timestamp: &'a str,
    /// The attached upload, if any.
    pub attachment: Option<&'a Attachment>,
    /// Echoed to the sender in the broadcast.
    pub client_id: Option<&'a str>,
}

/// What a post became.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Posted {
    /// The message's seq (0 for a retry of a message since deleted).
    pub seq: u64,
    /// A retry: the same identity already posted this `client_id`, and
    /// nothing new was posted.
    pub duplicate: bool,
    /// For a retry, the earlier message's echo, for the sender alone; `None`
    /// when the message is no longer held (deleted, or out of the ring): the
    /// hub refuses the retry then.
    pub echo: Option<super::Frame>,
    /// For a retry answered with its echo, the earlier message's id: a post
    /// this instance left in doubt ([`NotPosted::in_doubt`]) is stored once
    /// a retry names it. `None` otherwise.
    pub message_id: Option<String>,
}

/// A post (or a delete) that got no answer: its sender gets `refusal`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotPosted {
    /// What the sender is told (`unavailable`, say).
    pub refusal: Refusal,
    /// The backbone may have carried it out all the same, or may yet: the
    /// request went out and no answer came (it timed out, or the link
    /// failed after sending it). The hub then keeps the message (or the
    /// delete) for its durable store until it is seen carried out. `false`:
    /// certainly not carried out (refused, or never sent).
    pub in_doubt: bool,
}

impl From<Refusal> for NotPosted {
    /// A refusal: certainly not posted.
    fn from(refusal: Refusal) -> Self {
        Self {
            refusal,
            in_doubt: false,
        }
    }
}

/// A backbone's pending answer to a post.
pub type PostAnswer = Pin<Box<dyn Future<Output = Result<Posted, NotPosted>> + Send + 'static>>;

/// A backbone's pending answer to a delete: the message's seq.
pub type DeleteAnswer = Pin<Box<dyn Future<Output = Result<u64, NotPosted>> + Send + 'static>>;

/// Where an edit or a reaction landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Changed {
    /// The message's seq: what the durable store finds it by.
    pub seq: u64,
    /// The message's changes counted by the backbone, this one included:
    /// each instance writes its own members' changes to the shared store,
    /// so writes can land out of order, and the store keeps the one with
    /// the highest version (see [`Change::Edit`](super::Change::Edit)).
    pub version: u64,
}

/// A room's state as one instance's newcomer must see it first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteWelcome {
    /// The room's newest `seq`.
    pub last_seq: u64,
    /// The room event this state reflects: later events are sent after it.
    pub ev: u64,
    /// Messages the client asked for were already dropped.
    pub gap: bool,
    /// Online names over every instance.
    pub online_count: usize,
    /// The online names as a JSON array, or `None` above the list cap.
    pub online: Option<String>,
    /// The messages, oldest first, each as its JSON object (history shape).
    pub history: Vec<String>,
}

/// Who is online in a room over every instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Online {
    /// How many names.
    pub count: usize,
    /// The names as a JSON array.
    pub names: String,
}

/// What an external room backbone does for the hub. Implemented by
/// `src/redis/`; the hub holds it as `Arc<dyn Backbone>` and never names it.
pub trait Backbone: Send + Sync + 'static {
    /// `None` while it can serve; otherwise why not (shown by `/health`).
    fn degraded(&self) -> Option<String>;
    /// The room got its first local member: start receiving its events.
    /// Called under the room's lock.
    fn watch(&self, room: &RoomName);
    /// Resolves once the room's events are being received.
    fn watching(&self, room: &RoomName) -> Answer<()>;
    /// Registers a connection (`user` now has `connections` here) and reads
    /// the state its `welcome` shows: the last messages, or those after
    /// `after`. The room's `seq` never goes below `seq_floor` (what a
    /// durable store already holds). Called under the room's lock.
    /// A name held by another identity (within the grace after its last
    /// connection, [`NAME_HOLD_GRACE`](super::NAME_HOLD_GRACE)) is refused
    /// with [`ErrorCode::NameTaken`](super::ErrorCode::NameTaken).
    fn welcome(
        &self,
        room: &RoomName,
        user: (&UserName, &Identity),
        connections: u32,
        after: Option<u64>,
        seq_floor: u64,
    ) -> Answer<RemoteWelcome>;
    /// The identity holding `user` in `room`, if any (for a check before a
    /// WebSocket upgrade).
    fn holder(&self, room: &RoomName, user: &UserName) -> Answer<Option<String>>;
    /// `user` now has `connections` here (fewer than before); `room_empty`
    /// when the room has no local member left (stop receiving its events).
    /// Called under the room's lock; never refused (a backbone that cannot
    /// record it now re-announces every member later).
    fn leave(&self, room: &RoomName, user: &UserName, connections: u32, room_empty: bool);
    /// Gives a message its `seq` (above `seq_floor`), stores and publishes
    /// it; a retry of a `client_id` this identity posted within the window
    /// publishes nothing and answers the earlier message. A post that got
    /// no answer says whether it may have been posted all the same
    /// ([`NotPosted::in_doubt`]): if it was, its event must still come back
    /// through [`Inbound::deliver`] like any other.
    fn post(&self, room: &RoomName, message: NewMessage<'_>, seq_floor: u64) -> PostAnswer;
    /// Adds, removes or toggles `user`'s reaction; answers where the change
    /// landed and the message's reactions after it in the store's form
    /// (see [`Reactions::to_store_json`](super::Reactions::to_store_json)),
    /// or `None` if nothing changed.
    ///
    /// The seq a change answers (here, in `edit` and in `delete`) must be
    /// the one the message was posted with ([`Posted::seq`]): the durable
    /// store finds the message by it and its id, and a change whose seq and
    /// id do not match a stored message changes nothing there.
    fn react(
        &self,
        room: &RoomName,
        message_id: &str,
        user: &UserName,
        identity: &Identity,
        emoji: &Emoji,
        action: ReactionAction,
    ) -> Answer<Option<(Changed, String)>>;
    /// Replaces a message's content if `identity` wrote it; answers where
    /// the change landed.
    fn edit(
        &self,
        room: &RoomName,
        message_id: &str,
        identity: &Identity,
        content: &str,
        edited_at: &str,
    ) -> Answer<Changed>;
    /// Deletes a message if `identity` wrote it, or for a moderator;
    /// answers its seq, or whether the delete is in doubt (as a post's).
    fn delete(
        &self,
        room: &RoomName,
        message_id: &str,
        identity: &Identity,
        moderator: bool,
    ) -> DeleteAnswer;
    /// Tells the room `user` is typing: best effort, never refused.
    fn typing(&self, room: &RoomName, user: &UserName);
    /// Who is online in the room.
    fn presence(&self, room: &RoomName) -> Answer<Online>;
    /// A message's whole reactions as `{emoji: [users]}` JSON, or `None` if
    /// the backbone holds no such message.
    fn reactions(&self, room: &RoomName, message_id: &str) -> Answer<Option<String>>;
    /// The newest `limit` messages below `before` (all: `None`) that the
    /// backbone still holds, oldest first, each as its JSON object, and
    /// whether it holds older ones.
    fn page(
        &self,
        room: &RoomName,
        before: Option<u64>,
        limit: usize,
    ) -> Answer<(Vec<String>, bool)>;
    /// At shutdown, after the sessions ended: leaves the backbone.
    fn stop(&self) -> Pin<Box<dyn Future<Output = ()> + Send + '_>>;
}

/// One name's connections in one room on this instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalPresence {
    /// The room.
    pub room: String,
    /// The name.
    pub user: String,
    /// Its connections here.
    pub connections: u32,
    /// The identity that connected with the name (see [`Identity`]).
    pub identity: String,
}

/// How a backbone hands events to the hub. Cheap to clone; holds the hub
/// weakly, so a backbone outliving its hub delivers nowhere.
#[derive(Clone)]
pub struct Inbound(pub(super) Weak<Shared>);

impl Inbound {
    /// One that delivers nowhere, as if its hub were gone (for the tests
    /// of a backbone's own connections).
    #[cfg(all(test, feature = "redis"))]
    pub(crate) fn nowhere() -> Self {
        Self(Weak::new())
    }

    fn shared(&self) -> Option<Arc<Shared>> {
        self.0.upgrade()
    }

    /// An event for `room`: `ev` its number in the room (0: unnumbered,
    /// like typing), `skip` a user who must not get it, `body` its JSON.
    /// One frame is built per event per instance; every local member
    /// shares it.
    pub fn deliver(&self, room: &str, ev: u64, skip: Option<&str>, body: &str) {
        let Some(shared) = self.shared() else { return };
        let common = &shared.common;
        // A post this instance answered `unavailable` may come back posted:
        // its store gets it before anyone here sees it. While no post is in
        // doubt this is one atomic load; the JSON is read only otherwise.
        if ev != 0
            && !common.in_doubt.is_empty()
            && let Some(store) = &common.store
        {
            common.in_doubt.relayed(room, body, store);
        }
        let Some(room) = shared.lock_rooms().get(room).cloned() else {
            return;
        };
        let frame = frame::text(body);
        room.lock().deliver(ev, skip, &frame, common);
    }

    /// Every event of `room` up to `ev` has been published: a local member
    /// with fewer missed some and resumes from history.
    pub fn mark(&self, room: &str, ev: u64) {
        let Some(shared) = self.shared() else { return };
        if let Some(room) = shared.lock_rooms().get(room).cloned() {
            room.lock().mark(ev);
        }
    }

    /// The backbone lost its data: every room's numbering starts again, so
    /// every local member starts over from a fresh `welcome`.
    pub fn lost(&self) {
        let Some(shared) = self.shared() else { return };
        let rooms: Vec<_> = shared.lock_rooms().values().cloned().collect();
        for room in rooms {
            room.lock().start_over();
        }
    }

    /// The backbone's link came back: what it holds may be older than what
    /// it held before (a failover to a replica that lagged, an older
    /// snapshot restored) without its data being lost as a whole, so each
    /// room's floor, what the durable store holds, is read again before the
    /// room's next post or welcome, and the backbone's numbering is lifted
    /// above it instead of reusing a stored seq.
    pub fn reconnected(&self) {
        let Some(shared) = self.shared() else { return };
        let rooms: Vec<_> = shared.lock_rooms().values().cloned().collect();
        for room in rooms {
            room.lock().forget_floor();
        }
    }

    /// Another identity holds `user` in `room` (this instance was taken for
    /// dead, and the name was taken meanwhile): the connections `identity`
    /// has with it here are closed with 4009, pick another name.
    pub fn name_lost(&self, room: &str, user: &str, identity: &str) {
        let Some(shared) = self.shared() else { return };
        if let Some(room) = shared.lock_rooms().get(room).cloned() {
            room.lock().name_lost(user, identity);
        }
    }

    /// Calls `send` with this instance's members, while none can come or go
    /// (for a backbone that re-announces them after a reconnect).
    pub fn local_presence(&self, send: &mut dyn FnMut(&[LocalPresence])) {
        let Some(shared) = self.shared() else {
            send(&[]);
            return;
        };
        let rooms = shared.lock_rooms();
        let states: Vec<_> = rooms.values().map(|r| (&r.name, r.lock())).collect();
        let members: Vec<LocalPresence> = states
            .iter()
            .flat_map(|(name, state)| {
                state
                    .announced_online()
                    .into_iter()
                    .map(|((user, identity), n)| LocalPresence {
                        room: name.as_str().to_owned(),
                        user: user.to_string(),
                        connections: n,
                        identity: identity.as_str().to_owned(),
                    })
            })
            .collect();
        send(&members);
    }
}
