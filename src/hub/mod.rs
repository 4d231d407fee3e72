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
    /// [`RESERVE_BLOCK`]s less one). A room not loaded yet (its join's
    /// read was cut short) is not told: the store's writer settles the
    /// block such a read reserved when it stops.
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
mod tests;
