//! The hub: rooms by name, their members, their recent messages.
//!
//! The hub deals only in rooms, members and frames. It never imports `ws`,
//! `http`, the router or any backend, so it can be benchmarked and embedded
//! alone: an embedder calls [`Hub::join`] with a validated room and user
//! name and gets a [`Member`] whose [`Outbox`] yields ready-to-write
//! WebSocket frames.
//!
//! Backends plug in under the hub through the ports it defines: a room
//! backbone shared by several instances ([`Backbone`], with events coming
//! back through [`Inbound`] into the relay). On one instance there is no
//! backbone and no dynamic dispatch: a room applies a change under its lock
//! and fans the frame out at once.
//!
//! Locking: the room map has one lock and each room has its own. Nothing
//! awaits while holding either. Lock order is always map → room.

mod backbone;
mod dropped;
mod event;
mod frame;
mod frame_pool;
mod identity;
mod in_doubt;
pub(crate) mod json_text;
mod member;
mod message_frame;
mod message_id;
mod names;
mod outbox;
mod relay;
mod retries;
mod ring;
mod room;
mod short_text;
mod store;
mod store_queue;
pub(crate) mod timestamp;
mod welcome;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

pub use backbone::{
    Answer, Backbone, Changed, DeleteAnswer, Inbound, LocalPresence, NewMessage, NotPosted, Online,
    PostAnswer, Posted, RemoteWelcome,
};
pub use event::{
    Attachment, AttachmentPreview, ErrorCode, FULL_REACTIONS_BYTES, Limits, REACTION_SAMPLE,
    Reaction, Reactions, Refusal, StoredMessage,
};
pub use frame::Frame;
pub use identity::{Identity, NAME_HOLD_GRACE, NameTaken};
pub use member::{LaterPreview, Member, Welcomed};
pub use names::{Emoji, NameError, RoomName, UserName};
pub use outbox::{BacklogHook, CloseReason, Outbox, Pushed};
pub use short_text::ShortText;
pub use store::{
    Change, PageQuery, RESERVE_BLOCK, Snapshot, Store, StoreError, StoreHealth, StoreInbox,
    StoreOp, store_channel,
};

/// Frame builders for the few frames a session makes itself (pong, ping,
/// close, and protocol errors).
pub mod frames {
    pub use super::frame::{close, json, ping, pong, text};
}

use crate::metrics::Metrics;
use dropped::DroppedSeqs;
use event::MessageView;
use in_doubt::InDoubt;
use message_id::MessageIds;
use room::{Reading, Room, Waiting};
use welcome::{welcome_from_backbone, welcome_from_store};

/// What a reaction request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReactionAction {
    /// Add the user's reaction (no-op if present).
    Add,
    /// Remove the user's reaction (no-op if absent).
    Remove,
    /// Add if absent, remove if present.
    Toggle,
}

/// The hub's settings.
#[derive(Debug, Clone)]
pub struct HubConfig {
    /// Messages kept per room for history, resume, reactions and edits.
    pub history: usize,
    /// Messages sent in `welcome` to a client that does not resume.
    pub welcome_history: usize,
    /// Most bytes of history one `welcome` carries (its JSON). The newest
    /// messages that fit are sent; a resume that had to leave some out says
    /// `gap: true`. Keeps a join cheap however large the stored messages are.
    pub welcome_history_bytes: usize,
    /// Distinct emoji allowed per message.
    pub max_reactions_per_message: usize,
    /// Users one emoji on one message may list.
    pub max_users_per_reaction: usize,
    /// Most bytes a message's reactions may take as JSON: what a message
    /// holds in memory and what a `reactions` answer carries. Events cost
    /// less: past [`FULL_REACTIONS_BYTES`] they carry a sample and counts.
    pub max_reaction_bytes: usize,
    /// Rooms with more online names than this get counts only in join/leave.
    pub online_list_cap: usize,
    /// Frames a member's queue may hold before it is closed with 1013.
    pub outbox_frames: usize,
    /// Bytes a member's queue may hold before it is closed with 1013.
    pub outbox_bytes: usize,
    /// At most one typing broadcast per user per this interval.
    pub typing_interval: Duration,
    /// An empty room's history is dropped after this long.
    pub empty_room_ttl: Duration,
    /// Rooms held at once; beyond it the oldest empty room is dropped, and if
    /// none is empty (or only rooms whose history is still being read from
    /// the store are), joining a new room is refused.
    pub max_rooms: usize,
    /// Limits announced in `welcome`.
    pub limits: Limits,
    /// On one instance, how long a name stays its identity's after that
    /// identity's last connection with it (with a backbone, the backbone's
    /// [`NAME_HOLD_GRACE`] applies).
    pub name_hold_grace: Duration,
    /// What every room's recent messages may weigh in memory together, in
    /// bytes (see [`Hub::trim`]). The per-room `history` alone does not
    /// bound it: 10 000 rooms of 500 long messages would be tens of GiB.
    pub history_memory_bytes: usize,
}

impl Default for HubConfig {
    fn default() -> Self {
        Self {
            history: 500,
            welcome_history: 50,
            welcome_history_bytes: 1 << 20,
            max_reactions_per_message: 20,
            max_users_per_reaction: 500,
            max_reaction_bytes: 16 << 10,
            online_list_cap: 100,
            outbox_frames: 1024,
            outbox_bytes: 4 << 20,
            typing_interval: Duration::from_secs(2),
            empty_room_ttl: Duration::from_secs(300),
            max_rooms: 10_000,
            limits: Limits {
                max_message_chars: 4000,
                max_upload_bytes: 10 << 20,
                messages_per_second: 10,
            },
            name_hold_grace: NAME_HOLD_GRACE,
            history_memory_bytes: 256 << 20,
        }
    }
}

/// Where a hub's rooms live: here only, or shared through a backbone.
pub(crate) enum Link {
    /// One instance: rooms live in this process; changes apply under the
    /// room's lock with no dynamic dispatch.
    Local,
    /// Several instances sharing rooms through a backbone.
    Remote(Arc<dyn Backbone>),
}

/// What every room shares: settings, counters, message ids and the clock.
pub(crate) struct Common {
    pub config: HubConfig,
    pub metrics: Arc<Metrics>,
    link: Link,
    /// The durable history store, if any (none: history lives in memory,
    /// or in the backbone).
    pub store: Option<Store>,
    /// What every room's ring weighs together, in bytes.
    pub history_bytes: AtomicUsize,
    /// Told when `history_bytes` passes the budget: [`Hub::trim`] is due.
    pub over_budget: tokio::sync::Notify,
    /// With a backbone and a store: posts answered `unavailable` that the
    /// backbone may post all the same, kept for the store until seen.
    in_doubt: InDoubt,
    ids: MessageIds,
    /// History in memory only: where rooms dropped from memory stopped
    /// numbering, so one made again goes on from there.
    pub dropped: DroppedSeqs,
}

impl Common {
    /// A message id unique across restarts and instances.
    pub fn next_message_id(&self) -> ShortText {
        self.ids.next()
    }

    pub fn now_rfc3339(&self) -> ShortText {
        timestamp::now()
    }
}

/// What a join needs to know about the connection.
#[derive(Debug, Clone)]
pub struct Joining {
    /// The room, as the client named it.
    pub room: RoomName,
    /// The name it shows.
    pub user: UserName,
    /// Who it is.
    pub identity: Identity,
    /// It may delete any message in the room.
    pub moderator: bool,
    /// Resume: the client has every message up to this seq.
    pub after: Option<u64>,
    /// A new identity claim to hand to this connection in its `welcome`.
    pub claim: Option<String>,
}

/// Why a join was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JoinError {
    /// The hub holds as many rooms as it may, all with members.
    RoomsFull(RoomsFull),
    /// Another identity holds the name in this room.
    NameTaken(NameTaken),
    /// The backbone could not answer.
    Unavailable(String),
}

impl std::fmt::Display for JoinError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::RoomsFull(e) => e.fmt(f),
            Self::NameTaken(e) => e.fmt(f),
            Self::Unavailable(why) => write!(f, "{why}; try again shortly"),
        }
    }
}

impl std::error::Error for JoinError {}

/// The hub refused to create another room: every one of `max_rooms` rooms
/// has members.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomsFull {
    /// The limit that was reached.
    pub max_rooms: usize,
}

impl std::fmt::Display for RoomsFull {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the server already holds {} active rooms; try an existing room or later",
            self.max_rooms
        )
    }
}

impl std::error::Error for RoomsFull {}

/// How long a backbone remembers a `client_id` to answer a retry (on one
/// instance: as long as the message is in the room's ring).
pub const POST_RETRY_WINDOW: Duration = Duration::from_secs(600);

/// Messages a room always keeps in memory however tight the budget (see
/// [`Hub::trim`]). Fewer than a welcome's default 50: after a trim, a
/// welcome without `after` carries only these (scrollback reads the rest
/// from the store).
pub const MIN_RING: usize = 20;

/// History pages read at once (see [`Hub::page`]).
pub const PAGE_READERS: usize = 16;

pub(crate) struct Shared {
    common: Arc<Common>,
    rooms: Mutex<HashMap<RoomName, Arc<Room>>>,
    readers: tokio::sync::Semaphore,
}

impl Shared {
    fn new(parts: HubParts, link: Link) -> Self {
        let max_rooms = parts.config.max_rooms;
        Shared {
            common: Arc::new(Common {
                config: parts.config,
                metrics: parts.metrics,
                link,
                store: parts.store,
                history_bytes: AtomicUsize::new(0),
                over_budget: tokio::sync::Notify::new(),
                in_doubt: InDoubt::default(),
                ids: MessageIds::new(),
                dropped: DroppedSeqs::new(max_rooms),
            }),
            rooms: Mutex::new(HashMap::new()),
            readers: tokio::sync::Semaphore::new(PAGE_READERS),
        }
    }

    fn lock_rooms(&self) -> std::sync::MutexGuard<'_, HashMap<RoomName, Arc<Room>>> {
        self.rooms.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// What a hub is made of besides its backbone.
pub struct HubParts {
    /// Its settings.
    pub config: HubConfig,
    /// Where it counts.
    pub metrics: Arc<Metrics>,
    /// A durable history store (see [`store_channel`]), or `None` to keep
    /// history in memory (or in the backbone) only.
    pub store: Option<Store>,
}

/// Rooms by name. Cheap to clone; every clone is the same hub.
#[derive(Clone)]
pub struct Hub {
    shared: Arc<Shared>,
}

impl Hub {
    /// A hub with its own counters, its history in memory.
    pub fn new(config: HubConfig) -> Self {
        Self::with_metrics(config, Arc::new(Metrics::default()))
    }

    /// A hub that counts into `metrics`, its history in memory.
    pub fn with_metrics(config: HubConfig, metrics: Arc<Metrics>) -> Self {
        Self::from_parts(HubParts {
            config,
            metrics,
            store: None,
        })
    }

    /// A hub on one instance, with a durable store if `parts` has one.
    pub fn from_parts(parts: HubParts) -> Self {
        let shared = Arc::new(Shared::new(parts, Link::Local));
        Self { shared }
    }

    /// A hub whose rooms are shared through a backbone. `start` gets the
    /// [`Inbound`] handle the backbone delivers events into and returns the
    /// running backbone (or why it cannot start).
    pub fn with_backbone<E>(
        parts: HubParts,
        start: impl FnOnce(Inbound) -> Result<Arc<dyn Backbone>, E>,
    ) -> Result<Self, E> {
        let mut failed = None;
        let shared = Arc::new_cyclic(|weak: &Weak<Shared>| {
            let link = match start(Inbound(weak.clone())) {
                Ok(backbone) => Link::Remote(backbone),
                Err(e) => {
                    failed = Some(e);
                    Link::Local
                }
            };
            Shared::new(parts, link)
        });
        match failed {
            Some(e) => Err(e),
            None => Ok(Self { shared }),
        }
    }

    /// `None` while the hub can serve; otherwise why not: its backbone is
    /// disconnected, or its store cannot write or has been behind for a
    /// second or more.
    pub fn degraded(&self) -> Option<String> {
        let common = &self.shared.common;
        let backbone = match &common.link {
            Link::Local => None,
            Link::Remote(backbone) => backbone.degraded(),
        };
        backbone.or_else(|| common.store.as_ref()?.degraded())
    }

    /// The durable store, if the hub has one.
    pub fn store(&self) -> Option<&Store> {
        self.shared.common.store.as_ref()
    }

    /// At shutdown, after the sessions ended: leaves the backbone (a no-op
    /// on one instance).
    pub async fn stop_backbone(&self) {
        if let Link::Remote(backbone) = &self.shared.common.link {
            backbone.stop().await;
        }
    }

    /// The hub's settings.
    pub fn config(&self) -> &HubConfig {
        &self.shared.common.config
    }

    /// The hub's counters.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.shared.common.metrics
    }

    fn rooms(&self) -> std::sync::MutexGuard<'_, HashMap<RoomName, Arc<Room>>> {
        self.shared.lock_rooms()
    }

    /// Adds a connection of `user` to `room` (creating the room if needed),
    /// as an identity that is the name itself (nobody checked who it is;
    /// see [`Hub::join_with`]). Its outbox receives `welcome` (history: the
    /// last messages, or those after `after`), then `join` if this is the
    /// name's first connection. Dropping the returned [`Member`] removes it.
    pub fn join(
        &self,
        room: RoomName,
        user: UserName,
        after: Option<u64>,
    ) -> Result<Member, JoinError> {
        let identity = Identity::named(user.as_str());
        self.join_with(Joining {
            room,
            user,
            identity,
            moderator: false,
            after,
            claim: None,
        })
    }

    /// Whether `identity` may use the name `user` in `room` now (asked
    /// before a WebSocket upgrade, so a taken name is refused with a clear
    /// answer; the join itself decides again). With a backbone, the
    /// backbone answers for every instance.
    pub async fn name_free(
        &self,
        room: &RoomName,
        user: &UserName,
        identity: &Identity,
    ) -> Result<(), JoinError> {
        let taken = || {
            JoinError::NameTaken(NameTaken {
                user: user.as_str().to_owned(),
            })
        };
        match &self.shared.common.link {
            Link::Local => {
                let room = self.rooms().get(room).cloned();
                match room.is_none_or(|r| r.lock().may_hold(user, identity)) {
                    true => Ok(()),
                    false => Err(taken()),
                }
            }
            Link::Remote(backbone) => match backbone.holder(room, user).await {
                Ok(Some(holder)) if holder != identity.as_str() => Err(taken()),
                Ok(_) => Ok(()),
                Err(refused) => Err(JoinError::Unavailable(refused.message)),
            },
        }
    }

    /// Adds a connection to a room as `joining.identity` (edits, deletes
    /// and reactions are checked against it, never against the name). A
    /// name another identity holds in the room is refused; with a backbone
    /// that is known only once the backbone answers, and the connection is
    /// then closed with 4009. The `welcome` follows a round trip with a
    /// backbone, or a read when the history is in a store; if that fails
    /// the outbox is closed with 1013.
    pub fn join_with(&self, joining: Joining) -> Result<Member, JoinError> {
        let Joining {
            room,
            user,
            identity,
            moderator,
            after,
            claim,
        } = joining;
        let common = &self.shared.common;
        let outbox = Arc::new(Outbox::new(
            common.config.outbox_frames,
            common.config.outbox_bytes,
        ));
        let requested = room.clone();
        let mut rooms = self.rooms();
        let room = match rooms.get(&room) {
            Some(r) => Arc::clone(r),
            None => {
                if rooms.len() >= common.config.max_rooms && !evict_oldest_empty(&mut rooms, common)
                {
                    return Err(JoinError::RoomsFull(RoomsFull {
                        max_rooms: common.config.max_rooms,
                    }));
                }
                let r = Arc::new(Room::new(
                    room.clone(),
                    common.store.is_none(),
                    common.config.name_hold_grace,
                ));
                if let Some(last_seq) = common.dropped.take(&room) {
                    r.lock().number_after(last_seq, common);
                }
                rooms.insert(room, Arc::clone(&r));
                r
            }
        };
        let mut welcomed = None;
        let (key, generation) = match &common.link {
            Link::Local => {
                let mut state = room.lock();
                if common.store.is_some() && state.needs_store(after) {
                    let (tx, rx) = tokio::sync::oneshot::channel();
                    welcomed = Some(rx);
                    let (key, generation) = state
                        .join_waiting((user.clone(), &identity), Arc::clone(&outbox), tx)
                        .map_err(JoinError::NameTaken)?;
                    let reading = Reading::start(&room, &mut state);
                    drop(state);
                    let waiting = Waiting {
                        key,
                        generation,
                        user: user.clone(),
                        after,
                        claim,
                    };
                    tokio::spawn(welcome_from_store(
                        Arc::clone(common),
                        (Arc::clone(&room), reading),
                        requested,
                        waiting,
                    ));
                    (key, generation)
                } else {
                    state
                        .join(
                            &requested,
                            (user.clone(), &identity),
                            (after, claim.as_deref()),
                            Arc::clone(&outbox),
                            common,
                        )
                        .map_err(JoinError::NameTaken)?
                }
            }
            Link::Remote(backbone) => {
                let (tx, rx) = tokio::sync::oneshot::channel();
                welcomed = Some(rx);
                let mut state = room.lock();
                let (key, generation, first) =
                    state.join_pending((user.clone(), identity.clone()), Arc::clone(&outbox), tx);
                if first {
                    backbone.watch(&room.name);
                }
                drop(state);
                tokio::spawn(welcome_from_backbone(
                    Arc::clone(backbone),
                    Arc::clone(common),
                    (Arc::clone(&room), requested),
                    (key, generation),
                    (user.clone(), identity.clone(), claim),
                    after,
                ));
                (key, generation)
            }
        };
        drop(rooms);
        Ok(Member {
            common: Arc::clone(common),
            room,
            key,
            generation,
            user,
            identity,
            moderator: AtomicBool::new(moderator),
            outbox,
            welcomed,
        })
    }

    /// Asks every connection to close with `reason` (used at shutdown).
    pub fn close_all(&self, reason: CloseReason) {
        let rooms: Vec<Arc<Room>> = self.rooms().values().cloned().collect();
        for room in rooms {
            for (_, slot) in &room.lock().members {
                slot.outbox.close(reason);
            }
        }
    }

    /// Drops rooms that have been empty for longer than `empty_room_ttl`
    /// (not one whose history is still being read from the store: it goes
    /// at a sweep after), and from the others the messages the store's
    /// retention period deleted. Returns how many rooms were dropped. Call
    /// it now and then (the server does, every few seconds).
    pub fn sweep(&self) -> usize {
        let common = &self.shared.common;
        let ttl = common.config.empty_room_ttl;
        let mut rooms = self.rooms();
        let before = rooms.len();
        rooms.retain(|name, room| {
            let mut state = room.lock();
            let keep = state.idle_since().is_none_or(|t| t.elapsed() < ttl);
            if keep {
                state.expire(common);
            } else {
                state.settle(name, common);
                state.unload(common);
            }
            keep
        });
        before - rooms.len()
    }

    /// Brings the rooms' recent messages back under
    /// [`HubConfig::history_memory_bytes`] (to 90 % of it): first empty
    /// rooms that hold messages leave memory, longest empty first (not
    /// while a name is held in one); then the heaviest rings
    /// give up their oldest messages, halving at a time, down to the
    /// newest [`MIN_RING`] each. With a store nothing is lost (a trimmed
    /// message is read from it, and can no longer be edited or reacted
    /// to); without one, a resume that wants it says `gap`. Runs when a
    /// post passes the budget (the server waits on [`Hub::over_budget`])
    /// and with every sweep. Returns the messages trimmed.
    pub fn trim(&self) -> usize {
        let common = &self.shared.common;
        let budget = common.config.history_memory_bytes;
        let total = || common.history_bytes.load(Ordering::Relaxed);
        if total() <= budget {
            return 0;
        }
        let target = budget / 10 * 9;
        let mut rooms = self.rooms();
        // Empty rooms that weigh something leave first, longest empty
        // first; one that weighs nothing would free nothing.
        let mut idle: Vec<(Instant, RoomName)> = rooms
            .iter()
            .filter_map(|(name, room)| {
                let state = room.lock();
                let since = state.idle_since().filter(|_| state.ring.bytes() > 0)?;
                Some((since, name.clone()))
            })
            .collect();
        idle.sort_unstable_by_key(|(since, _)| *since);
        for (_, name) in idle {
            if total() <= target {
                break;
            }
            if let Some(room) = rooms.remove(&name) {
                unload(&name, &room, common);
            }
        }
        let mut heavy: Vec<(usize, Arc<Room>)> = rooms
            .values()
            .map(|r| (r.lock().ring.bytes(), Arc::clone(r)))
            .collect();
        drop(rooms);
        heavy.sort_by_key(|h| std::cmp::Reverse(h.0));
        let mut trimmed = 0;
        while total() > target {
            let mut any = false;
            for (bytes, room) in &mut heavy {
                if total() <= target {
                    break;
                }
                let mut state = room.lock();
                let gone = state.trim(*bytes / 2, MIN_RING, common);
                *bytes = state.ring.bytes();
                any |= gone > 0;
                trimmed += gone;
            }
            if !any {
                break; // every ring is at its floor
            }
        }
        if trimmed > 0 {
            tracing::debug!(trimmed, "recent history trimmed to its memory budget");
        }
        trimmed
    }

    /// Resolves when a post has taken the rooms' history past its budget.
    pub async fn over_budget(&self) {
        self.shared.common.over_budget.notified().await;
    }

    /// What every room's recent messages weigh together, in bytes.
    pub fn history_bytes(&self) -> usize {
        self.shared.common.history_bytes.load(Ordering::Relaxed)
    }

    /// At shutdown, after the sessions ended: tells the store the last seq
    /// of every room in memory, so numbering continues without a jump
    /// after a clean restart (a crash skips at most one and a half
    /// [`RESERVE_BLOCK`]s less one).
    pub fn settle(&self) {
        let common = &self.shared.common;
        for (name, room) in self.rooms().iter() {
            room.lock().settle(name, common);
        }
    }

    /// Rooms currently held (with members, or empty within their TTL).
    pub fn room_count(&self) -> usize {
        self.rooms().len()
    }

    /// A page of a room's history, for scrollback: the newest `limit`
    /// messages below `before` (the newest of all: `None`), oldest first,
    /// each as its JSON object (the shape of `welcome.history`), and
    /// whether older ones are kept. From the store if there is one, else
    /// from the backbone or the room's ring. At most [`PAGE_READERS`] pages
    /// are read at once (reads share the store's queue with changes, which
    /// must never wait behind them); past that it answers `unavailable`.
    pub async fn page(
        &self,
        room: &RoomName,
        before: Option<u64>,
        limit: usize,
    ) -> Result<(Vec<String>, bool), Refusal> {
        let busy = || {
            Refusal::new(
                ErrorCode::Unavailable,
                "too many history reads at once; try again shortly",
            )
        };
        let _reading = self.shared.readers.try_acquire().map_err(|_| busy())?;
        let common = &self.shared.common;
        let json = |m: &StoredMessage| {
            serde_json::to_string(&MessageView::of("message", m, None)).unwrap_or_default()
        };
        if let Some(store) = &common.store {
            let query = PageQuery {
                after: 0,
                before,
                limit,
            };
            let (messages, more) = store.page(room.as_str(), query).await.map_err(|e| {
                Refusal::new(ErrorCode::Unavailable, format!("the history store: {e}"))
            })?;
            return Ok((messages.iter().map(json).collect(), more));
        }
        if let Link::Remote(backbone) = &common.link {
            return backbone.page(room, before, limit).await;
        }
        let Some(room) = self.rooms().get(room).cloned() else {
            return Ok((Vec::new(), false));
        };
        let state = room.lock();
        let below: Vec<&StoredMessage> = state
            .history()
            .rev()
            .filter(|m| before.is_none_or(|b| m.seq < b))
            .take(limit + 1)
            .collect();
        let more = below.len() > limit;
        Ok((
            below.iter().take(limit).rev().map(|m| json(m)).collect(),
            more,
        ))
    }

    /// A copy of a room's recent messages, oldest first (empty if unknown,
    /// and always empty with a backbone, where history lives in the backbone).
    pub fn history(&self, room: &str) -> Vec<StoredMessage> {
        let room = self.rooms().get(room).cloned();
        room.map(|r| r.lock().history().cloned().collect())
            .unwrap_or_default()
    }

    /// Rooms with at least one member here, as (name, online names), most
    /// online first then by name, at most `limit` of them. Rooms whose name
    /// starts with `private-` (any case) are never listed. Counts are this
    /// instance's members: with the Redis backbone a room whose members are
    /// all on other instances is not seen.
    pub fn public_rooms(&self, limit: usize) -> Vec<(String, usize)> {
        let rooms: Vec<Arc<Room>> = self
            .rooms()
            .values()
            .filter(|r| !r.name.is_private())
            .cloned()
            .collect();
        let mut listed: Vec<(String, usize)> = rooms
            .iter()
            .filter_map(|room| {
                let online = room.lock().local_online().count();
                (online > 0).then(|| (room.name.shown().to_owned(), online))
            })
            .collect();
        listed.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        listed.truncate(limit);
        listed
    }
}

/// Removes the room that has been empty longest (of those not being read
/// from the store); false if there is none.
fn evict_oldest_empty(rooms: &mut HashMap<RoomName, Arc<Room>>, common: &Common) -> bool {
    let oldest = rooms
        .iter()
        .filter_map(|(name, room)| room.lock().idle_since().map(|t| (t, name.clone())))
        .min_by_key(|(t, _): &(Instant, RoomName)| *t);
    match oldest.and_then(|(_, name)| rooms.remove(&name).map(|r| (name, r))) {
        Some((name, room)) => {
            unload(&name, &room, common);
            true
        }
        None => false,
    }
}

/// A room taken out of the hub lets go of its memory (its last seq queued
/// for the store first).
fn unload(name: &RoomName, room: &Room, common: &Common) {
    let mut state = room.lock();
    state.settle(name, common);
    state.unload(common);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(m: &Member) -> Vec<serde_json::Value> {
        let mut batch = Vec::new();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        if m.outbox().is_empty() {
            return Vec::new();
        }
        rt.block_on(m.outbox().next_batch(&mut batch));
        batch
            .iter()
            .map(|f| {
                let start = if f[1] & 0x7f == 126 {
                    4
                } else if f[1] & 0x7f == 127 {
                    10
                } else {
                    2
                };
                serde_json::from_slice(&f[start..]).unwrap()
            })
            .collect()
    }

    fn names(room: &str, user: &str) -> (RoomName, UserName) {
        (
            RoomName::parse(room).unwrap(),
            UserName::parse(user).unwrap(),
        )
    }

    /// A message as the store would answer it.
    fn stored(seq: u64) -> StoredMessage {
        StoredMessage {
            id: format!("s{seq}").as_str().into(),
            seq,
            user: UserName::parse("ann").unwrap(),
            identity: Identity::named("ann"),
            content: format!("m{seq}"),
            timestamp: "2026-12-07T10:00:00.000Z".into(),
            reactions: Reactions::default(),
            attachment: None,
            edited_at: None,
            client_id: None,
        }
    }

    /// Posts at once (nothing to wait for without a store): its seq.
    fn post_now(m: &Member, content: &str, attachment: Option<Attachment>) -> u64 {
        let posted = m.post(content.into(), attachment, None);
        futures_util::FutureExt::now_or_never(posted)
            .unwrap()
            .unwrap()
            .unwrap()
    }

    /// An image to attach, and the preview made of it later.
    fn image_and_preview() -> (Attachment, AttachmentPreview) {
        let image = Attachment {
            url: "/uploads/a.png".into(),
            name: "a.png".into(),
            size: 10,
            content_type: "image/png".into(),
            preview: None,
        };
        let preview = AttachmentPreview {
            url: "/uploads/a.png.preview.jpg".into(),
            width: 320,
            height: 200,
        };
        (image, preview)
    }

    #[test]
    fn the_older_of_two_posts_with_one_key_leaving_keeps_the_newer_as_the_answer() {
        let ann = Identity::named("ann");
        // A retry that came after the first post left the ring posted
        // again; a room loaded from the store holds both.
        let with_key = |seq| StoredMessage {
            client_id: Some("c1".into()),
            ..stored(seq)
        };
        let (first, again) = (with_key(1), with_key(7));
        let mut retries = retries::Retries::of([&first, &again].into_iter());
        assert_eq!(retries.seq_of(&ann, "c1"), Some(7));
        retries.left_ring(&first);
        assert_eq!(retries.seq_of(&ann, "c1"), Some(7), "the newer is kept");
        retries.left_ring(&again);
        assert_eq!(retries.seq_of(&ann, "c1"), None);
    }

    /// Runs the runtime's tasks until `until` holds.
    fn run_until(rt: &tokio::runtime::Runtime, until: impl Fn() -> bool) {
        rt.block_on(async {
            while !until() {
                tokio::task::yield_now().await;
            }
        });
    }

    /// A runtime for the tests that drive the hub's tasks by hand.
    fn by_hand() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap()
    }

    /// A hub (`config`) whose store answers what `held` holds only when
    /// the test chooses, and the store and its writer's thread (which
    /// answers how many changes it took). Call it inside the runtime.
    fn on_held_store(
        config: HubConfig,
        held: store::Held,
    ) -> (Hub, Store, std::thread::JoinHandle<usize>) {
        let (store, inbox) = store_channel(1024);
        let writer = store::stalled_writer(inbox, held);
        let hub = Hub::from_parts(HubParts {
            config,
            metrics: Arc::new(Metrics::default()),
            store: Some(store.clone()),
        });
        (hub, store, writer)
    }

    #[test]
    fn a_room_stays_in_the_hub_while_its_history_is_read_and_leaves_with_all_it_weighed() {
        let rt = by_hand();
        let _in_runtime = rt.enter();
        // Each load is answered when the test chooses.
        let (loads_tx, loads) = std::sync::mpsc::channel();
        let held = store::Held {
            loads: Some(loads_tx),
            ..store::Held::default()
        };
        let config = HubConfig {
            empty_room_ttl: Duration::ZERO,
            max_rooms: 1,
            name_hold_grace: Duration::ZERO,
            ..HubConfig::default()
        };
        let (hub, store, writer) = on_held_store(config, held);
        let (slow, ann) = names("slow", "ann");
        let ann = hub.join(slow, ann, None).unwrap();
        let room = hub.rooms().get("slow").cloned().unwrap();
        let load = rt.block_on(async {
            loop {
                if let Ok(load) = loads.try_recv() {
                    return load;
                }
                tokio::task::yield_now().await;
            }
        });
        // Its only member leaves before its welcome: the room is empty,
        // and is neither swept nor evicted for another room.
        drop(ann);
        assert_eq!(hub.sweep(), 0, "its load is still awaited");
        let (other, bob) = names("other", "bob");
        assert!(matches!(
            hub.join(other, bob, None),
            Err(JoinError::RoomsFull(_))
        ));
        let _ = load.send(Ok(Snapshot {
            tail: (1..=3).map(stored).collect(),
            last_seq: 3,
            reserved: 3 + RESERVE_BLOCK,
            older: false,
        }));
        // The welcome's task ends (it held the room twice).
        run_until(&rt, || Arc::strong_count(&room) == 2);
        assert!(hub.history_bytes() > 0, "the load was installed");
        // Now it goes, and so does all it weighed, its seqs settled.
        assert_eq!(hub.sweep(), 1);
        assert_eq!(hub.history_bytes(), 0);

        drop((room, hub));
        rt.block_on(store.stop());
        assert_eq!(writer.join().unwrap(), 1, "the room's settle");
    }

    #[test]
    fn a_resume_read_from_the_store_while_posts_push_the_ring_on_reports_the_hole_as_a_gap() {
        let rt = by_hand();
        let _in_runtime = rt.enter();
        // Each page read is answered when the test chooses.
        let (pages_tx, pages) = std::sync::mpsc::channel();
        let held = store::Held {
            pages: Some(pages_tx),
            ..store::Held::default()
        };
        let config = HubConfig {
            history: 5,
            ..HubConfig::default()
        };
        let (hub, store, writer) = on_held_store(config, held);
        let (room, ann) = names("holes", "ann");
        let mut ann = hub.join(room.clone(), ann, None).unwrap();
        rt.block_on(ann.welcomed());
        let post = |n: u64| ann.post_now(format!("m{n}"), None).unwrap().unwrap();
        for n in 1..=10 {
            post(n);
        }
        // The ring holds 6..=10: a resume after 2 reads 3..=5 from the store.
        let (_, bob) = names("holes", "bob");
        let mut bob = hub.join(room, bob, Some(2)).unwrap();
        let (query, reply) = rt.block_on(async {
            loop {
                if let Ok(page) = pages.try_recv() {
                    return page;
                }
                tokio::task::yield_now().await;
            }
        });
        assert_eq!((query.after, query.before), (2, Some(6)));
        // Meanwhile 6..=8 leave the ring.
        for n in 11..=13 {
            post(n);
        }
        let _ = reply.send(Ok(((3..=5).map(stored).collect(), false)));
        rt.block_on(bob.welcomed());
        let welcome = drain(&bob).remove(0);
        let seqs: Vec<u64> = welcome["history"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["seq"].as_u64().unwrap())
            .collect();
        assert_eq!(seqs, [3, 4, 5, 9, 10, 11, 12, 13]);
        assert_eq!(
            welcome["gap"], true,
            "6..=8 are missing: the client must page"
        );

        drop((ann, bob, hub));
        rt.block_on(store.stop());
        writer.join().unwrap();
    }

    #[test]
    fn a_deleted_posts_retry_key_is_kept_only_while_the_ring_would_hold_it() {
        let hub = Hub::new(HubConfig {
            history: 4,
            ..HubConfig::default()
        });
        let (r, ann) = names("r", "ann");
        let ann = hub.join(r, ann, None).unwrap();
        fn now<F: std::future::Future>(f: F) -> F::Output {
            futures_util::FutureExt::now_or_never(f).expect("answered at once")
        }
        let kept = || hub.rooms().get("r").unwrap().lock().retries_kept();
        // Posted with client ids, then deleted, in no particular order.
        for k in 0..4 {
            now(ann.post(format!("m{k}"), None, Some(&format!("c{k}")))).unwrap();
        }
        let ids: Vec<String> = hub.history("r").iter().map(|m| m.id.to_string()).collect();
        for i in [2, 0, 3, 1] {
            now(ann.delete(&ids[i])).unwrap();
        }
        assert_eq!(kept(), (4, 4), "a retry of any of them is refused");
        let again = now(ann.post("m0".into(), None, Some("c0")));
        assert_eq!(again.unwrap_err().code, ErrorCode::UnknownMessage);
        // Four more posts (no client id): the deleted ones are no longer
        // among the last four seqs, and their keys go in the order of the
        // deletes (seqs 3, 1, 4, 2): after three posts, 3 and 1 have gone,
        // 4 has not, and 2 waits behind it.
        for k in 0..3 {
            now(ann.post(format!("n{k}"), None, None)).unwrap();
        }
        assert_eq!(kept(), (2, 2));
        now(ann.post("n3".into(), None, None)).unwrap();
        assert_eq!(kept(), (0, 0));
        assert!(
            now(ann.post("m0".into(), None, Some("c0"))).is_ok(),
            "posted anew"
        );
    }

    #[test]
    fn a_later_preview_updates_the_message_once_and_reaches_the_room() {
        let hub = Hub::new(HubConfig::default());
        let (r, ann) = names("r", "ann");
        let (_, bob) = names("r", "bob");
        let ann = hub.join(r.clone(), ann, None).unwrap();
        let bob = hub.join(r.clone(), bob, None).unwrap();
        let (image, preview) = image_and_preview();
        let seq = post_now(&ann, "", Some(image));
        drain(&ann);
        drain(&bob);
        let later = ann.later_preview(seq);
        drop(ann);
        assert!(
            !later.set("/uploads/other.png", preview.clone()),
            "not its upload"
        );
        assert!(later.set("/uploads/a.png", preview.clone()));
        assert!(!later.set("/uploads/a.png", preview.clone()), "once");
        let events = drain(&bob);
        let updated = events
            .iter()
            .find(|e| e["type"] == "message_updated")
            .expect("message_updated");
        assert_eq!(updated["seq"], seq);
        assert_eq!(updated["attachment"]["preview"]["url"], preview.url);
        assert_eq!(updated["attachment"]["preview"]["width"], 320);
        assert!(updated.get("edited_at").is_none(), "not an edit");
        let stored = hub.history("r");
        let kept = stored[0].attachment.as_ref().unwrap();
        assert_eq!(kept.preview.as_ref(), Some(&preview));
    }

    #[test]
    fn a_later_preview_for_a_room_gone_from_memory_changes_nothing() {
        let hub = Hub::new(HubConfig {
            empty_room_ttl: Duration::ZERO,
            name_hold_grace: Duration::ZERO,
            ..HubConfig::default()
        });
        let (r, ann) = names("r", "ann");
        let ann = hub.join(r, ann, None).unwrap();
        let (image, preview) = image_and_preview();
        let seq = post_now(&ann, "", Some(image));
        let later = ann.later_preview(seq);
        drop(ann);
        assert_eq!(hub.sweep(), 1);
        assert_eq!(hub.history_bytes(), 0, "the room left with all it weighed");
        // The room's message left memory with it: nothing to update, and
        // nothing counted again into the hub's total for good.
        assert!(!later.set("/uploads/a.png", preview));
        assert_eq!(hub.history_bytes(), 0);
    }

    #[test]
    fn a_room_made_again_in_memory_numbers_on_and_a_resume_from_before_sees_what_it_missed() {
        let hub = Hub::new(HubConfig {
            empty_room_ttl: Duration::ZERO,
            name_hold_grace: Duration::ZERO,
            ..HubConfig::default()
        });
        let (r, ann) = names("r", "ann");
        let (_, bob) = names("r", "bob");
        let first = hub.join(r.clone(), ann.clone(), None).unwrap();
        for text in ["1", "2", "3"] {
            post_now(&first, text, None);
        }
        drop(first);
        assert_eq!(hub.sweep(), 1, "the room left memory with its history");
        let bob = hub.join(r.clone(), bob, None).unwrap();
        let seqs: Vec<u64> = ["4", "5"].iter().map(|t| post_now(&bob, t, None)).collect();
        assert_eq!(seqs, [4, 5], "numbered on, not from 1 again");
        // Ann had everything up to 3: she is given 4 and 5, no gap.
        let ann_back = hub.join(r.clone(), ann.clone(), Some(3)).unwrap();
        let welcome = drain(&ann_back).remove(0);
        let got: Vec<u64> = welcome["history"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["seq"].as_u64().unwrap())
            .collect();
        assert_eq!(
            (got, &welcome["gap"]),
            (vec![4, 5], &serde_json::Value::Bool(false))
        );
        // Someone who had only 1 is told 2 and 3 are gone.
        let (_, cy) = names("r", "cy");
        let behind = hub.join(r, cy, Some(1)).unwrap();
        assert_eq!(drain(&behind).remove(0)["gap"], true);
    }

    #[test]
    fn ring_keeps_the_last_n_and_resume_reports_a_gap() {
        let hub = Hub::new(HubConfig {
            history: 3,
            ..HubConfig::default()
        });
        let (r, u) = names("r", "ann");
        let ann = hub.join(r.clone(), u.clone(), None).unwrap();
        for i in 0..5 {
            let posted =
                futures_util::FutureExt::now_or_never(ann.post(format!("m{i}"), None, None));
            assert_eq!(posted, Some(Ok(Some(i + 1))), "one instance posts at once");
        }
        let kept: Vec<u64> = hub.history("r").iter().map(|m| m.seq).collect();
        assert_eq!(kept, vec![3, 4, 5]);

        let late = hub.join(r.clone(), u.clone(), Some(1)).unwrap();
        let welcome = &drain(&late)[0];
        assert_eq!(welcome["gap"], true);
        assert_eq!(welcome["history"].as_array().unwrap().len(), 3);

        let fresh = hub.join(r, u, Some(4)).unwrap();
        let welcome = &drain(&fresh)[0];
        assert_eq!(welcome["gap"], false);
        assert_eq!(welcome["history"][0]["seq"], 5);
    }

    #[test]
    fn stale_slab_key_cannot_remove_the_successor() {
        let hub = Hub::new(HubConfig::default());
        let (r, _) = names("r", "x");
        let a = hub
            .join(r.clone(), UserName::parse("a").unwrap(), None)
            .unwrap();
        let (key, old_generation) = (a.key, a.generation);
        drop(a);
        let b = hub.join(r, UserName::parse("b").unwrap(), None).unwrap();
        assert_eq!(b.key, key, "slab reuses the key");
        b.room.lock().leave(key, old_generation, &b.common);
        assert_eq!(
            b.room.lock().members.len(),
            1,
            "the stale leave changed nothing"
        );
    }

    #[test]
    fn a_name_held_in_an_empty_room_keeps_the_room_until_the_hold_lapses() {
        let hub = Hub::new(HubConfig {
            empty_room_ttl: Duration::ZERO,
            max_rooms: 1,
            ..HubConfig::default()
        });
        let as_who = |room: &str, user: &str, who: &str| {
            let (room, user) = names(room, user);
            hub.join_with(Joining {
                room,
                user,
                identity: Identity::from_key(who),
                moderator: false,
                after: None,
                claim: None,
            })
        };
        let alice = as_who("a", "alice", "alice's key").unwrap();
        drop(alice);
        assert!(matches!(
            as_who("a", "alice", "mallory's key"),
            Err(JoinError::NameTaken(_))
        ));
        // The room holding her name is neither taken out for another room
        // nor swept: her hold would go with it, and the name be free.
        assert!(matches!(
            as_who("b", "bob", "bob's key"),
            Err(JoinError::RoomsFull(_))
        ));
        assert_eq!(hub.sweep(), 0);
        assert!(matches!(
            as_who("a", "alice", "mallory's key"),
            Err(JoinError::NameTaken(_))
        ));
        assert!(as_who("a", "alice", "alice's key").is_ok(), "hers again");
    }

    #[test]
    fn empty_rooms_are_swept_and_the_room_limit_evicts_empty_ones() {
        let hub = Hub::new(HubConfig {
            empty_room_ttl: Duration::ZERO,
            max_rooms: 1,
            name_hold_grace: Duration::ZERO,
            ..HubConfig::default()
        });
        let (r1, u) = names("one", "u");
        let m = hub.join(r1, u.clone(), None).unwrap();
        let (r2, _) = names("two", "u");
        assert!(
            hub.join(r2.clone(), u.clone(), None).is_err(),
            "room one has a member"
        );
        drop(m);
        let _m2 = hub.join(r2, u, None).unwrap();
        assert_eq!(hub.room_count(), 1);
        assert_eq!(hub.sweep(), 0, "room two has a member");
    }
}
