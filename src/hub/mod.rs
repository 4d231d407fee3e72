//! The hub: rooms by name, their members, their recent messages.
//!
//! The hub deals only in rooms, members and frames. It never imports `ws`,
//! `http` or the router, so it can be benchmarked and embedded alone: an
//! embedder calls [`Hub::join`] with a validated room and user name and gets
//! a [`Member`] whose [`Outbox`] yields ready-to-write WebSocket frames.
//!
//! Locking: the room map has one lock and each room has its own. Nothing
//! awaits while holding either. Lock order is always map → room.

mod backbone;
mod event;
mod frame;
mod names;
mod outbox;
mod room;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

pub use event::{Attachment, ErrorCode, Limits, Reactions, Refusal, StoredMessage};
pub use frame::Frame;
pub use names::{Emoji, NameError, RoomName, UserName};
pub use outbox::{CloseReason, Outbox, Pushed};

/// Frame builders for the few frames a session makes itself (pong, ping,
/// close, and protocol errors).
pub mod frames {
    pub use super::frame::{close, json, ping, pong, text};
}

use crate::metrics::Metrics;
use backbone::Backbone;
use room::Room;

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
    /// Users one emoji on one message may list. Every `reaction_update`
    /// carries all of a message's reactions, so this bounds its size
    /// (about 20 × 500 names at most) however many names come and react.
    pub max_users_per_reaction: usize,
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
    /// none is empty, joining a new room is refused.
    pub max_rooms: usize,
    /// Limits announced in `welcome`.
    pub limits: Limits,
}

impl Default for HubConfig {
    fn default() -> Self {
        Self {
            history: 500,
            welcome_history: 50,
            welcome_history_bytes: 1 << 20,
            max_reactions_per_message: 20,
            max_users_per_reaction: 500,
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
        }
    }
}

/// What every room shares: settings, counters, message ids and the clock.
pub(crate) struct Common {
    pub config: HubConfig,
    pub metrics: Arc<Metrics>,
    backbone: Backbone,
    id_prefix: u32,
    next_id: AtomicU64,
}

impl Common {
    /// A message id unique across restarts and instances: a random 32-bit
    /// prefix chosen at start, then a counter.
    pub fn next_message_id(&self) -> String {
        let n = self.next_id.fetch_add(1, Ordering::Relaxed);
        format!("{:08x}{:08x}", self.id_prefix, n)
    }

    pub fn now_rfc3339(&self) -> String {
        humantime::format_rfc3339_millis(SystemTime::now()).to_string()
    }
}

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

struct Shared {
    common: Arc<Common>,
    rooms: Mutex<HashMap<RoomName, Arc<Room>>>,
}

impl Shared {
    fn lock_rooms(&self) -> std::sync::MutexGuard<'_, HashMap<RoomName, Arc<Room>>> {
        self.rooms.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The random part of message ids (unique across restarts and instances).
fn id_prefix() -> u32 {
    let mut seed = [0u8; 4];
    // Without OS randomness, ids are still unique within this process.
    let _ = getrandom::fill(&mut seed);
    u32::from_le_bytes(seed)
}

/// Rooms by name. Cheap to clone; every clone is the same hub.
#[derive(Clone)]
pub struct Hub {
    shared: Arc<Shared>,
}

impl Hub {
    /// A hub with its own counters.
    pub fn new(config: HubConfig) -> Self {
        Self::with_metrics(config, Arc::new(Metrics::default()))
    }

    /// A hub that counts into `metrics`.
    pub fn with_metrics(config: HubConfig, metrics: Arc<Metrics>) -> Self {
        Self {
            shared: Arc::new(Shared {
                common: Arc::new(Common {
                    config,
                    metrics,
                    backbone: Backbone::Local,
                    id_prefix: id_prefix(),
                    next_id: AtomicU64::new(1),
                }),
                rooms: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// A hub whose rooms are shared with every other instance using the
    /// same Redis (`url`, `redis://[user:password@]host[:port][/db]`) and
    /// key `prefix`. An instance that stops refreshing its presence for
    /// `presence_ttl` is taken for dead and its members leave. Must be
    /// called inside a tokio runtime; Redis need not be up yet (see
    /// [`Hub::degraded`]).
    #[cfg(feature = "redis")]
    pub fn with_redis(
        config: HubConfig,
        metrics: Arc<Metrics>,
        url: &str,
        prefix: &str,
        presence_ttl: Duration,
    ) -> Result<Self, String> {
        let settings = crate::redis::Settings {
            target: crate::redis::Target::parse(url)?,
            prefix: prefix.to_owned(),
            presence_ttl: presence_ttl.max(Duration::from_millis(300)),
            online_list_cap: config.online_list_cap,
            empty_room_ttl: config.empty_room_ttl,
        };
        let shared = Arc::new_cyclic(|weak: &std::sync::Weak<Shared>| {
            let sink: std::sync::Weak<dyn crate::redis::Sink> = weak.clone();
            Shared {
                common: Arc::new(Common {
                    config,
                    metrics,
                    backbone: Backbone::Redis(crate::redis::Link::start(settings, sink)),
                    id_prefix: id_prefix(),
                    next_id: AtomicU64::new(1),
                }),
                rooms: Mutex::new(HashMap::new()),
            }
        });
        Ok(Self { shared })
    }

    /// `None` while the hub can serve (always, on one instance); otherwise
    /// why not: the Redis backbone is disconnected.
    pub fn degraded(&self) -> Option<String> {
        match &self.shared.common.backbone {
            Backbone::Local => None,
            #[cfg(feature = "redis")]
            Backbone::Redis(link) => link.degraded(),
        }
    }

    /// At shutdown, after the sessions ended: removes this instance from
    /// the backbone (a no-op on one instance).
    pub async fn stop_backbone(&self) {
        match &self.shared.common.backbone {
            Backbone::Local => {}
            #[cfg(feature = "redis")]
            Backbone::Redis(link) => link.bye().await,
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

    /// Adds a connection of `user` to `room` (creating the room if needed).
    /// Its outbox receives `welcome` (history: the last messages, or those
    /// after `after`), then `join` if this is the name's first connection.
    /// Dropping the returned [`Member`] removes it.
    ///
    /// With the Redis backbone the `welcome` comes a moment later (it is
    /// read from Redis); if that fails the outbox is closed with 1013.
    pub fn join(
        &self,
        room: RoomName,
        user: UserName,
        after: Option<u64>,
    ) -> Result<Member, RoomsFull> {
        let common = &self.shared.common;
        let outbox = Arc::new(Outbox::new(
            common.config.outbox_frames,
            common.config.outbox_bytes,
        ));
        let mut rooms = self.rooms();
        let room = match rooms.get(&room) {
            Some(r) => Arc::clone(r),
            None => {
                if rooms.len() >= common.config.max_rooms && !evict_oldest_empty(&mut rooms) {
                    return Err(RoomsFull {
                        max_rooms: common.config.max_rooms,
                    });
                }
                let r = Arc::new(Room::new(room.clone()));
                rooms.insert(room, Arc::clone(&r));
                r
            }
        };
        #[cfg(feature = "redis")]
        let mut welcomed = None;
        let (key, generation) = match &common.backbone {
            Backbone::Local => {
                room.lock()
                    .join(&room.name, user.clone(), after, Arc::clone(&outbox), common)
            }
            #[cfg(feature = "redis")]
            Backbone::Redis(link) => {
                let (tx, rx) = tokio::sync::oneshot::channel();
                welcomed = Some(rx);
                let mut state = room.lock();
                let (key, generation, first) =
                    state.join_pending(user.clone(), Arc::clone(&outbox), tx);
                if first {
                    link.want(room.name.as_str());
                }
                drop(state);
                tokio::spawn(backbone::activate(
                    Arc::clone(common),
                    Arc::clone(&room),
                    key,
                    generation,
                    user.clone(),
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
            outbox,
            #[cfg(feature = "redis")]
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

    /// Drops rooms that have been empty for longer than `empty_room_ttl`.
    /// Returns how many were dropped. Call it now and then (the server does,
    /// every few seconds).
    pub fn sweep(&self) -> usize {
        let ttl = self.shared.common.config.empty_room_ttl;
        let mut rooms = self.rooms();
        let before = rooms.len();
        rooms.retain(|_, room| room.lock().empty_since.is_none_or(|t| t.elapsed() < ttl));
        before - rooms.len()
    }

    /// Rooms currently held (with members, or empty within their TTL).
    pub fn room_count(&self) -> usize {
        self.rooms().len()
    }

    /// A copy of a room's recent messages, oldest first (empty if unknown,
    /// and always empty with the Redis backbone, where history lives in Redis).
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
            .filter(|r| {
                let name = r.name.as_str().as_bytes();
                !(name.len() >= 8 && name[..8].eq_ignore_ascii_case(b"private-"))
            })
            .cloned()
            .collect();
        let mut listed: Vec<(String, usize)> = rooms
            .iter()
            .filter_map(|room| {
                let state = room.lock();
                let mut names: Vec<&str> =
                    state.members.iter().map(|(_, s)| s.user.as_str()).collect();
                names.sort_unstable();
                names.dedup();
                (!names.is_empty()).then(|| (room.name.as_str().to_owned(), names.len()))
            })
            .collect();
        listed.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        listed.truncate(limit);
        listed
    }
}

/// Removes the room that has been empty longest; false if every room has members.
fn evict_oldest_empty(rooms: &mut HashMap<RoomName, Arc<Room>>) -> bool {
    let oldest = rooms
        .iter()
        .filter_map(|(name, room)| room.lock().empty_since.map(|t| (t, name.clone())))
        .min_by_key(|(t, _): &(Instant, RoomName)| *t);
    match oldest {
        Some((_, name)) => rooms.remove(&name).is_some(),
        None => false,
    }
}

/// One connection's membership in a room. Every request of that connection
/// goes through it; dropping it leaves the room.
pub struct Member {
    common: Arc<Common>,
    room: Arc<Room>,
    key: usize,
    generation: u64,
    user: UserName,
    outbox: Arc<Outbox>,
    /// Backbone only, until taken by [`Member::welcomed`].
    #[cfg(feature = "redis")]
    welcomed: Option<tokio::sync::oneshot::Receiver<()>>,
}

/// Resolves once a member's `welcome` is queued, or once it never will be
/// (the join failed and the member's outbox is closed). See [`Member::welcomed`].
#[derive(Debug)]
pub struct Welcomed {
    #[cfg(feature = "redis")]
    rx: Option<tokio::sync::oneshot::Receiver<()>>,
}

impl std::future::Future for Welcomed {
    type Output = ();

    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<()> {
        #[cfg(feature = "redis")]
        if let Some(rx) = &mut self.get_mut().rx {
            // Sent or dropped: either way there is nothing more to wait for.
            return std::pin::Pin::new(rx).poll(cx).map(drop);
        }
        let _ = cx;
        std::task::Poll::Ready(())
    }
}

impl Member {
    /// Resolves once this member's `welcome` is in its outbox. On one
    /// instance it is there when [`Hub::join`] returns; with the Redis
    /// backbone it follows a round trip, and a request sent before it would
    /// be answered (its `pong`, its echo) ahead of the `welcome`, which
    /// must be the first frame. Sessions wait for it before reading
    /// requests. The first call takes the signal; later calls resolve at once.
    pub fn welcomed(&mut self) -> Welcomed {
        Welcomed {
            #[cfg(feature = "redis")]
            rx: self.welcomed.take(),
        }
    }

    /// This connection's outbound queue: its writer drains it.
    pub fn outbox(&self) -> &Arc<Outbox> {
        &self.outbox
    }

    /// The member's user name.
    pub fn user(&self) -> &UserName {
        &self.user
    }

    /// The member's room name.
    pub fn room(&self) -> &RoomName {
        &self.room.name
    }

    /// Queues a frame for this connection only (replies, errors, pongs).
    pub fn send(&self, frame: Frame) -> Pushed {
        let pushed = self.outbox.push(frame);
        if pushed == Pushed::Overflowed {
            self.common.metrics.slow_consumers_dropped.inc();
        }
        pushed
    }

    // Each request below either applies at once under the room's lock (one
    // instance: the future is ready on its first poll) or goes through the
    // backbone. Refusals with the backbone include `unavailable`.

    /// Posts a message (content already validated) to the room; returns its
    /// seq (`None` if the backbone did not say).
    pub async fn post(
        &self,
        content: String,
        attachment: Option<Attachment>,
        client_id: Option<&str>,
    ) -> Result<Option<u64>, Refusal> {
        match &self.common.backbone {
            Backbone::Local => Ok(Some(self.room.lock().post(
                &self.user,
                content,
                attachment,
                client_id,
                &self.common,
            ))),
            #[cfg(feature = "redis")]
            Backbone::Redis(link) => self.post_remote(link, content, attachment, client_id).await,
        }
    }

    /// Adds, removes or toggles this user's `emoji` on a message.
    pub async fn react(
        &self,
        message_id: &str,
        emoji: Emoji,
        action: ReactionAction,
    ) -> Result<(), Refusal> {
        match &self.common.backbone {
            Backbone::Local => {
                self.room
                    .lock()
                    .react(&self.user, message_id, emoji, action, &self.common)
            }
            #[cfg(feature = "redis")]
            Backbone::Redis(link) => self.react_remote(link, message_id, emoji, action).await,
        }
    }

    /// Replaces the content of one of this user's messages.
    pub async fn edit(&self, message_id: &str, content: String) -> Result<(), Refusal> {
        match &self.common.backbone {
            Backbone::Local => self
                .room
                .lock()
                .edit(&self.user, message_id, content, &self.common),
            #[cfg(feature = "redis")]
            Backbone::Redis(link) => self.edit_remote(link, message_id, content).await,
        }
    }

    /// Deletes one of this user's messages.
    pub async fn delete(&self, message_id: &str) -> Result<(), Refusal> {
        match &self.common.backbone {
            Backbone::Local => self
                .room
                .lock()
                .delete(&self.user, message_id, &self.common),
            #[cfg(feature = "redis")]
            Backbone::Redis(link) => self.delete_remote(link, message_id).await,
        }
    }

    /// Tells the others this user is typing (throttled; best effort).
    pub fn typing(&self) {
        match &self.common.backbone {
            Backbone::Local => self.room.lock().typing(&self.user, &self.common),
            #[cfg(feature = "redis")]
            Backbone::Redis(link) => self.typing_remote(link),
        }
    }

    /// Sends this connection the room's `presence`.
    pub async fn presence(&self) -> Result<(), Refusal> {
        match &self.common.backbone {
            Backbone::Local => {
                let frame = self.room.lock().presence();
                self.send(frame);
                Ok(())
            }
            #[cfg(feature = "redis")]
            Backbone::Redis(link) => self.presence_remote(link).await,
        }
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        match &self.common.backbone {
            Backbone::Local => {
                self.room
                    .lock()
                    .leave(self.key, self.generation, &self.common);
            }
            #[cfg(feature = "redis")]
            Backbone::Redis(_) => self.leave_remote(),
        }
    }
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

    #[cfg(feature = "redis")]
    #[test]
    fn backbone_members_get_welcome_first_then_exactly_the_later_events() {
        let hub = Hub::new(HubConfig::default());
        let common = &hub.shared.common;
        let room = Room::new(RoomName::parse("r").unwrap());
        let f = frames::text;
        let drain = |o: &Outbox| {
            let mut batch = Vec::new();
            let rt = tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap();
            let close = rt.block_on(o.next_batch(&mut batch));
            (batch, close)
        };
        let ann = Arc::new(Outbox::new(16, 1 << 20));
        let bob = Arc::new(Outbox::new(16, 1 << 20));
        let mut st = room.lock();
        let (ann_tx, mut ann_welcomed) = tokio::sync::oneshot::channel();
        let (a, a_gen, first) =
            st.join_pending(UserName::parse("ann").unwrap(), Arc::clone(&ann), ann_tx);
        assert!(first);
        // Events before the welcome is read are held, typing is dropped.
        st.deliver(5, None, &f("e5"), common);
        st.deliver(6, None, &f("e6"), common);
        st.deliver(0, None, &f("typing"), common);
        assert!(ann.is_empty());
        assert!(ann_welcomed.try_recv().is_err(), "not welcomed yet");
        // The welcome reflects events up to 5: ann gets it, then e6 only.
        st.activate(a, a_gen, f("welcome-a"), 5);
        assert!(
            ann_welcomed.try_recv().is_ok(),
            "told once the welcome is queued"
        );
        let (tx, _) = tokio::sync::oneshot::channel();
        let (b, b_gen, _) = st.join_pending(UserName::parse("bob").unwrap(), Arc::clone(&bob), tx);
        st.activate(b, b_gen, f("welcome-b"), 8); // bob's welcome already has 7 and 8
        st.deliver(7, None, &f("e7"), common);
        st.deliver(8, Some("ann"), &f("e8"), common);
        st.deliver(9, None, &f("e9"), common);
        assert_eq!(
            drain(&ann),
            (vec![f("welcome-a"), f("e6"), f("e7"), f("e9")], None)
        );
        assert_eq!(drain(&bob), (vec![f("welcome-b"), f("e9")], None));
        // A skipped event number: whoever missed it resumes from history.
        st.deliver(11, None, &f("e11"), common);
        assert_eq!(drain(&ann).1, Some(CloseReason::MISSED_EVENTS));
        assert_eq!(drain(&bob).1, Some(CloseReason::MISSED_EVENTS));
    }

    /// A hub (for its config and metrics) and one room to drive by hand,
    /// as the backbone does.
    #[cfg(feature = "redis")]
    fn backbone_room(config: HubConfig) -> (Hub, Room) {
        (Hub::new(config), Room::new(RoomName::parse("r").unwrap()))
    }

    /// A member waiting for its welcome in a backbone room.
    #[cfg(feature = "redis")]
    fn pending(st: &mut room::RoomState, name: &str) -> (usize, u64, Arc<Outbox>) {
        let outbox = Arc::new(Outbox::new(16, 1 << 20));
        let (tx, _) = tokio::sync::oneshot::channel();
        let (key, generation, _) =
            st.join_pending(UserName::parse(name).unwrap(), Arc::clone(&outbox), tx);
        (key, generation, outbox)
    }

    /// A member whose welcome reflected room events up to `ev`.
    #[cfg(feature = "redis")]
    fn welcomed(st: &mut room::RoomState, name: &str, ev: u64) -> (usize, u64, Arc<Outbox>) {
        let (key, generation, outbox) = pending(st, name);
        st.activate(key, generation, frames::text("welcome"), ev);
        (key, generation, outbox)
    }

    #[cfg(feature = "redis")]
    #[test]
    fn backbone_closes_exactly_the_members_who_missed_events() {
        let (hub, room) = backbone_room(HubConfig::default());
        let (common, f, mut st) = (&hub.shared.common, frames::text, room.lock());
        let (_, _, ann) = welcomed(&mut st, "ann", 10);
        // Bob's welcome was read ahead of the stream: it has 11 and 12.
        let (_, _, bob) = welcomed(&mut st, "bob", 12);
        st.deliver(11, None, &f("e11"), common);
        assert_eq!(ann.len(), 2);
        assert_eq!(bob.len(), 1, "11 is in bob's welcome");
        // The stream was cut before it carried 12: the marker tells. Ann
        // missed it; bob did not.
        st.mark(12);
        assert!(ann.is_closing());
        assert!(
            !bob.is_closing(),
            "a welcome ahead of the stream is no loss"
        );
        // Then 13 never comes through: bob missed it.
        st.deliver(14, None, &f("e14"), common);
        assert!(bob.is_closing());
        // A later welcome read ahead of the stream hides nothing from
        // the members already here (the order of two welcomes does not
        // matter either: each member is checked against its own).
        let (c, c_gen, carl) = pending(&mut st, "carl");
        let (_, _, dan) = welcomed(&mut st, "dan", 20);
        st.activate(c, c_gen, f("welcome-c"), 18);
        st.mark(20); // 15..20 were published, the stream carried none
        assert!(carl.is_closing(), "carl missed 19 and 20");
        assert!(!dan.is_closing());
    }

    #[cfg(feature = "redis")]
    #[test]
    fn backbone_a_marker_while_a_member_waits_is_checked_at_its_welcome() {
        let (hub, room) = backbone_room(HubConfig::default());
        let (common, f, mut st) = (&hub.shared.common, frames::text, room.lock());
        let (_, _, ann) = welcomed(&mut st, "ann", 5);
        st.deliver(6, None, &f("e6"), common);
        // Bob waits for a welcome that will say 6; meanwhile the stream is
        // cut and comes back with a marker: 7 and 8 were published.
        let (b, b_gen, bob) = pending(&mut st, "bob");
        st.mark(8);
        assert!(ann.is_closing());
        assert!(!bob.is_closing(), "bob's welcome is not read yet");
        st.activate(b, b_gen, f("welcome-b"), 6);
        assert!(bob.is_closing(), "bob would never get 7 and 8");
    }

    #[cfg(feature = "redis")]
    #[test]
    fn backbone_a_member_whose_wait_overflowed_closes_alone() {
        let (hub, room) = backbone_room(HubConfig {
            outbox_frames: 2,
            ..HubConfig::default()
        });
        let (common, f, mut st) = (&hub.shared.common, frames::text, room.lock());
        let (_, _, ann) = welcomed(&mut st, "ann", 0);
        let (b, b_gen, bob) = pending(&mut st, "bob");
        for ev in 1..=3 {
            st.deliver(ev, None, &f("e"), common);
        }
        assert!(bob.is_closing(), "held more than its queue holds");
        st.activate(b, b_gen, f("welcome-b"), 0);
        assert!(!ann.is_closing(), "nobody else missed anything");
    }

    #[cfg(feature = "redis")]
    #[test]
    fn backbone_a_room_rejoined_here_starts_from_its_welcome() {
        let (hub, room) = backbone_room(HubConfig::default());
        let (common, f, mut st) = (&hub.shared.common, frames::text, room.lock());
        let (a, a_gen, _) = welcomed(&mut st, "ann", 40);
        st.deliver(41, None, &f("e41"), common);
        st.leave_quiet(a, a_gen);
        // A leave the stream carries after the room emptied here is not
        // remembered: the room's keys may expire and its numbering start
        // again before the next member joins here.
        st.deliver(42, None, &f("leave"), common);
        let (b, b_gen, bob) = welcomed(&mut st, "bob", 1);
        st.deliver(2, None, &f("e2"), common);
        assert!(!bob.is_closing(), "a new numbering");
        st.leave_quiet(b, b_gen);
        // Rejoined while the stream still carries the old subscription's
        // last event, and events published between the unsubscribe and the
        // subscribe never come: the welcome has them.
        let (c, c_gen, carl) = pending(&mut st, "carl");
        st.deliver(51, None, &f("e51"), common);
        st.activate(c, c_gen, f("welcome-c"), 57);
        st.deliver(56, None, &f("e56"), common);
        st.deliver(57, None, &f("e57"), common);
        st.deliver(58, None, &f("e58"), common);
        assert!(!carl.is_closing());
        assert_eq!(carl.len(), 2, "the welcome, then e58");
    }

    #[cfg(feature = "redis")]
    #[test]
    fn backbone_a_numbering_that_goes_back_sends_everyone_to_a_fresh_welcome() {
        let (hub, room) = backbone_room(HubConfig::default());
        let (common, f, mut st) = (&hub.shared.common, frames::text, room.lock());
        // A marker below what the stream carried.
        let (a, a_gen, ann) = welcomed(&mut st, "ann", 20);
        st.deliver(21, None, &f("e21"), common);
        st.mark(19);
        assert!(ann.is_closing());
        st.leave_quiet(a, a_gen);
        // An event numbered from 1 again.
        let (b, b_gen, bob) = welcomed(&mut st, "bob", 30);
        st.deliver(31, None, &f("e31"), common);
        assert!(!bob.is_closing());
        st.deliver(1, None, &f("e1"), common);
        assert!(bob.is_closing());
        st.leave_quiet(b, b_gen);
        // The epoch told of lost data.
        let (_, _, carl) = welcomed(&mut st, "carl", 5);
        st.start_over();
        assert!(carl.is_closing());
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
    fn empty_rooms_are_swept_and_the_room_limit_evicts_empty_ones() {
        let hub = Hub::new(HubConfig {
            empty_room_ttl: Duration::ZERO,
            max_rooms: 1,
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
