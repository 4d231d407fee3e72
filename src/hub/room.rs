//! One room: its members in a slab, who is online, and the ring of recent
//! messages. Everything here runs under the room's lock and never awaits;
//! every change that others must see is serialized once into a [`Frame`] and
//! pushed to each member's [`Outbox`].

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use slab::Slab;

use super::event::{Attachment, ErrorCode, Event, MessageView, Reactions, Refusal, StoredMessage};
use super::frame::{self, Frame};
use super::names::{Emoji, RoomName, UserName};
use super::outbox::{Outbox, Pushed};
use super::{Common, ReactionAction};

/// A member's slot: the slab key is reused after a member leaves, so each
/// slot also carries the generation it was filled in.
pub(crate) struct Slot {
    pub generation: u64,
    pub user: UserName,
    pub outbox: Arc<Outbox>,
    /// Backbone only: events held until the member's `welcome` is ready
    /// (numbered; no frame for one that skips this member).
    #[cfg(feature = "redis")]
    pub pending: Option<Vec<(u64, Option<Frame>)>>,
    /// Backbone only, once welcomed: this member has every room event up
    /// to this one (in its `welcome`, or sent since).
    #[cfg(feature = "redis")]
    pub has: u64,
    /// Backbone only: told when the `welcome` is queued (dropped, if it
    /// never will be), so the session reads no request before it.
    #[cfg(feature = "redis")]
    pub welcomed: Option<tokio::sync::oneshot::Sender<()>>,
}

pub(crate) struct RoomState {
    pub members: Slab<Slot>,
    next_gen: u64,
    /// Online names with their number of connections, sorted for display.
    online: BTreeMap<UserName, u32>,
    /// Last typing broadcast per online name, for the 2 s throttle.
    typing: HashMap<UserName, Instant>,
    history: VecDeque<StoredMessage>,
    last_seq: u64,
    /// The highest seq pushed out of the ring by newer messages.
    evicted_through: u64,
    /// When the last member left (for dropping idle rooms).
    pub empty_since: Option<Instant>,
    /// Backbone only: the last event number the subscription's stream
    /// carried. The stream is in order, so a number at or below it again
    /// means Redis's numbering went back: its data was lost.
    #[cfg(feature = "redis")]
    stream_ev: Option<u64>,
}

pub(crate) struct Room {
    pub name: RoomName,
    pub state: std::sync::Mutex<RoomState>,
}

impl Room {
    pub fn new(name: RoomName) -> Self {
        Self {
            name,
            state: std::sync::Mutex::new(RoomState {
                members: Slab::new(),
                next_gen: 0,
                online: BTreeMap::new(),
                typing: HashMap::new(),
                history: VecDeque::new(),
                last_seq: 0,
                evicted_through: 0,
                empty_since: Some(Instant::now()),
                #[cfg(feature = "redis")]
                stream_ev: None,
            }),
        }
    }

    pub fn lock(&self) -> std::sync::MutexGuard<'_, RoomState> {
        // Every mutation below leaves the state consistent before anything
        // that could panic, so a poisoned lock is still safe to use.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl RoomState {
    fn online_names(&self) -> Vec<&UserName> {
        self.online.keys().collect()
    }

    /// Pushes one shared frame to every member (or every member but `skip`'s
    /// connections). One refcount increment per member; no copy, no alloc.
    fn broadcast(&self, frame: &Frame, skip: Option<&UserName>, common: &Common) {
        for (_, slot) in &self.members {
            if skip.is_some_and(|u| *u == slot.user) {
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

    /// Adds a connection; sends it `welcome`, then `join` to everyone if this
    /// is the name's first connection. Returns the slot key and generation.
    pub fn join(
        &mut self,
        room: &RoomName,
        user: UserName,
        after: Option<u64>,
        outbox: Arc<Outbox>,
        common: &Common,
    ) -> (usize, u64) {
        let generation = self.next_gen;
        self.next_gen += 1;
        self.empty_since = None;
        let count = self.online.entry(user.clone()).or_insert(0);
        *count += 1;
        let first = *count == 1;

        // Past the room's newest seq, the client counted in a numbering this
        // room no longer has (it was reset: restart, or dropped when empty):
        // everything in the current numbering is news to it.
        let after = after.map(|a| if a > self.last_seq { 0 } else { a });
        let (wanted, evicted) = match after {
            None => {
                let skip = self
                    .history
                    .len()
                    .saturating_sub(common.config.welcome_history);
                (self.history.iter().skip(skip).collect::<Vec<_>>(), false)
            }
            Some(after) => (
                self.history.iter().filter(|m| m.seq > after).collect(),
                after < self.evicted_through,
            ),
        };
        let history = newest_within(
            wanted.iter().map(|m| MessageView::of("message", m, None)),
            common.config.welcome_history_bytes,
        );
        let cut = history.len() < wanted.len();
        let welcome = frame::json(&Event::Welcome {
            room,
            user: &user,
            online: self.online_names(),
            online_count: self.online.len(),
            history,
            gap: evicted || (cut && after.is_some()),
            last_seq: self.last_seq,
            limits: &common.config.limits,
        });
        outbox.push(welcome);

        let join = first.then(|| self.presence_frame(PresenceKind::Join, &user, common));
        let key = self.members.insert(Slot {
            generation,
            user,
            outbox,
            #[cfg(feature = "redis")]
            pending: None,
            #[cfg(feature = "redis")]
            has: 0,
            #[cfg(feature = "redis")]
            welcomed: None,
        });
        if let Some(join) = join {
            self.broadcast(&join, None, common);
        }
        (key, generation)
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
    /// its name and how many connections that name still has here.
    fn remove(&mut self, key: usize, generation: u64) -> Option<(UserName, u32)> {
        if !self.has(key, generation) {
            return None;
        }
        let slot = self.members.remove(key);
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
        if self.members.is_empty() {
            self.empty_since = Some(Instant::now());
        }
        Some((slot.user, left))
    }

    /// Stores and broadcasts a new message; returns its seq.
    pub fn post(
        &mut self,
        user: &UserName,
        content: String,
        attachment: Option<Attachment>,
        client_id: Option<&str>,
        common: &Common,
    ) -> u64 {
        self.last_seq += 1;
        let message = StoredMessage {
            id: common.next_message_id(),
            seq: self.last_seq,
            user: user.clone(),
            content,
            timestamp: common.now_rfc3339(),
            reactions: Reactions::default(),
            attachment,
            edited_at: None,
        };
        let frame = frame::json(&MessageView::of("message", &message, client_id));
        if self.history.len() >= common.config.history.max(1) {
            if let Some(old) = self.history.pop_front() {
                self.evicted_through = old.seq;
            }
        }
        self.history.push_back(message);
        self.broadcast(&frame, None, common);
        common.metrics.messages.inc();
        self.last_seq
    }

    fn find(&mut self, message_id: &str) -> Result<&mut StoredMessage, Refusal> {
        self.history
            .iter_mut()
            .find(|m| m.id == message_id)
            .ok_or_else(|| {
                Refusal::new(
                    ErrorCode::UnknownMessage,
                    format!("no message {message_id:?} in this room's recent history"),
                )
            })
    }

    /// Applies a reaction change; broadcasts `reaction_update` only if
    /// something changed.
    pub fn react(
        &mut self,
        user: &UserName,
        message_id: &str,
        emoji: Emoji,
        action: ReactionAction,
        common: &Common,
    ) -> Result<(), Refusal> {
        let max = common.config.max_reactions_per_message;
        let max_users = common.config.max_users_per_reaction;
        let message = self.find(message_id)?;
        let reactions = &mut message.reactions.0;
        let pos = reactions.iter().position(|(e, _)| *e == emoji);
        let has = pos.is_some_and(|i| reactions[i].1.contains(user));
        let add = match action {
            ReactionAction::Add => true,
            ReactionAction::Remove => false,
            ReactionAction::Toggle => !has,
        };
        if add == has {
            return Ok(()); // already so: nothing changes, nothing is sent
        }
        if add {
            match pos {
                Some(i) if reactions[i].1.len() >= max_users => {
                    return Err(Refusal::new(
                        ErrorCode::TooManyReactions,
                        format!("{max_users} people already reacted with this emoji"),
                    ));
                }
                Some(i) => reactions[i].1.push(user.clone()),
                None if reactions.len() >= max => {
                    return Err(Refusal::new(
                        ErrorCode::TooManyReactions,
                        format!(
                            "this message already has {max} different emoji; react with one of those"
                        ),
                    ));
                }
                None => reactions.push((emoji.clone(), vec![user.clone()])),
            }
        } else if let Some(i) = pos {
            reactions[i].1.retain(|u| u != user);
            if reactions[i].1.is_empty() {
                reactions.remove(i);
            }
        }
        let message = &*message;
        let frame = frame::json(&Event::ReactionUpdate {
            message_id: &message.id,
            emoji: &emoji,
            user,
            action: if add { "add" } else { "remove" },
            users: message.reactions.users(&emoji),
            reactions: &message.reactions,
        });
        self.broadcast(&frame, None, common);
        Ok(())
    }

    /// Replaces a message's content; author only.
    pub fn edit(
        &mut self,
        user: &UserName,
        message_id: &str,
        content: String,
        common: &Common,
    ) -> Result<(), Refusal> {
        let now = common.now_rfc3339();
        let message = self.find(message_id)?;
        if message.user != *user {
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
        message.content = content;
        message.edited_at = Some(now);
        let frame = frame::json(&MessageView::of("message_updated", message, None));
        self.broadcast(&frame, None, common);
        Ok(())
    }

    /// Removes a message; author only.
    pub fn delete(
        &mut self,
        user: &UserName,
        message_id: &str,
        common: &Common,
    ) -> Result<(), Refusal> {
        let message = self.find(message_id)?;
        if message.user != *user {
            return Err(Refusal::new(
                ErrorCode::Forbidden,
                "only the author can delete a message",
            ));
        }
        let seq = message.seq;
        self.history.retain(|m| m.seq != seq);
        let frame = frame::json(&Event::MessageDeleted { message_id, seq });
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
    /// `typing_interval`; with the backbone, Redis holds the cross-instance
    /// half of the throttle).
    pub fn typing_allowed(&mut self, user: &UserName, common: &Common) -> bool {
        let now = Instant::now();
        if let Some(last) = self.typing.get(user) {
            if now.duration_since(*last) < common.config.typing_interval {
                return false;
            }
        }
        self.typing.insert(user.clone(), now);
        true
    }

    /// The `presence` answer for one member.
    pub fn presence(&self) -> Frame {
        frame::json(&Event::Presence {
            online: self.online_names(),
            online_count: self.online.len(),
        })
    }

    /// Every message still held, oldest first (for tests and embedders).
    pub fn history(&self) -> impl Iterator<Item = &StoredMessage> {
        self.history.iter()
    }
}

/// The backbone's side of a room: members join pending until their
/// `welcome` arrives from Redis, and events come from the subscription.
#[cfg(feature = "redis")]
impl RoomState {
    /// Connections this name has in the room on this instance.
    pub fn connections_of(&self, user: &UserName) -> u32 {
        self.online.get(user).copied().unwrap_or(0)
    }

    /// Online names with their connections here, for a presence resync.
    pub fn local_online(&self) -> impl Iterator<Item = (&UserName, u32)> {
        self.online.iter().map(|(u, n)| (u, *n))
    }

    /// Adds a connection that receives nothing until [`RoomState::activate`],
    /// which then tells `welcomed`. Returns its key, generation and whether
    /// it is the room's first here.
    pub fn join_pending(
        &mut self,
        user: UserName,
        outbox: Arc<Outbox>,
        welcomed: tokio::sync::oneshot::Sender<()>,
    ) -> (usize, u64, bool) {
        let generation = self.next_gen;
        self.next_gen += 1;
        self.empty_since = None;
        *self.online.entry(user.clone()).or_insert(0) += 1;
        let key = self.members.insert(Slot {
            generation,
            user,
            outbox,
            pending: Some(Vec::new()),
            has: 0,
            welcomed: Some(welcomed),
        });
        (key, generation, self.members.len() == 1)
    }

    /// Sends the pending member its `welcome` (which reflects every room
    /// event up to `ev`), then the events held since that came after it.
    pub fn activate(&mut self, key: usize, generation: u64, welcome: Frame, ev: u64) {
        let Some(slot) = self
            .members
            .get_mut(key)
            .filter(|s| s.generation == generation)
        else {
            return;
        };
        let held = slot.pending.take().unwrap_or_default();
        slot.has = ev;
        slot.outbox.push(welcome);
        for (e, frame) in held {
            if e <= slot.has {
                continue; // already in the welcome
            }
            if e > slot.has.saturating_add(1) {
                // The stream skipped events while this member waited.
                slot.outbox.close(super::CloseReason::MISSED_EVENTS);
                break;
            }
            slot.has = e;
            if let Some(frame) = frame {
                slot.outbox.push(frame);
            }
        }
        if let Some(welcomed) = slot.welcomed.take() {
            let _ = welcomed.send(());
        }
        // Every event the stream carried before this join is in the
        // welcome, and every one after it was held, so the stream cannot
        // be ahead of this member: if it is, events were lost (a marker
        // came while it waited; the members already here were closed by
        // that marker) or the room's numbering started again (the next
        // event closes everyone). This member resumes from history.
        if self.stream_ev.is_some_and(|s| s > slot.has) {
            slot.outbox.close(super::CloseReason::MISSED_EVENTS);
        }
    }

    /// Removes a connection without telling anyone here (the backbone
    /// announces `leave`). Returns the name and its remaining connections,
    /// and whether the room is now empty here.
    pub fn leave_quiet(&mut self, key: usize, generation: u64) -> Option<(UserName, u32, bool)> {
        let (user, left) = self.remove(key, generation)?;
        let empty = self.members.is_empty();
        if empty {
            self.stream_ev = None;
        }
        Some((user, left, empty))
    }

    /// Fans out one event from the backbone: `ev` is its number in the
    /// room (0: unnumbered, like typing), `skip` a user not to send it to.
    /// A member for whom the stream skipped a number is closed to resume.
    pub fn deliver(&mut self, ev: u64, skip: Option<&str>, frame: &Frame, common: &Common) {
        if self.members.is_empty() {
            // Still subscribed for a moment after the last member left:
            // nothing to send, and nothing to remember (the room's
            // numbering may start again before anyone joins here).
            return;
        }
        if ev != 0 {
            if self.stream_ev.is_some_and(|s| ev <= s) {
                self.start_over();
            }
            self.stream_ev = Some(ev);
        }
        let cap = common.config.outbox_frames;
        for (_, slot) in &mut self.members {
            let skipped = skip == Some(slot.user.as_str());
            match &mut slot.pending {
                Some(held) if ev != 0 => {
                    if held.len() < cap {
                        held.push((ev, (!skipped).then(|| frame.clone())));
                    } else {
                        slot.outbox.close(super::CloseReason::SLOW_CONSUMER);
                    }
                    continue;
                }
                Some(_) => continue, // typing before the welcome: dropped
                None if ev == 0 => {}
                None if ev <= slot.has => continue, // in its welcome
                None if ev > slot.has.saturating_add(1) => {
                    slot.outbox.close(super::CloseReason::MISSED_EVENTS);
                    continue;
                }
                None => slot.has = ev,
            }
            if !skipped && slot.outbox.push(frame.clone()) == Pushed::Overflowed {
                common.metrics.slow_consumers_dropped.inc();
            }
        }
    }

    /// Every room event up to `ev` has been published (the marker comes
    /// through the stream, after those events): a member with fewer missed
    /// some while the stream was cut, and resumes from history. A marker
    /// below what the stream already carried means Redis's numbering went
    /// back: its data was lost.
    pub fn mark(&mut self, ev: u64) {
        if self.members.is_empty() {
            return;
        }
        if self.stream_ev.is_some_and(|s| ev < s) {
            self.start_over();
            return;
        }
        self.stream_ev = Some(ev);
        for (_, slot) in &self.members {
            if slot.pending.is_none() && slot.has < ev {
                slot.outbox.close(super::CloseReason::MISSED_EVENTS);
            }
        }
    }

    /// Redis lost its data: the room's numbering starts again. Every
    /// member here starts over from a fresh `welcome`.
    pub fn start_over(&mut self) {
        for (_, slot) in &self.members {
            slot.outbox.close(super::CloseReason::MISSED_EVENTS);
        }
        self.stream_ev = None;
    }
}

/// The newest of `views` (oldest first) whose JSON fits in `budget` bytes,
/// oldest first.
fn newest_within<'a>(
    views: impl DoubleEndedIterator<Item = MessageView<'a>>,
    budget: usize,
) -> Vec<MessageView<'a>> {
    let mut used = 0usize;
    let mut kept: Vec<MessageView<'a>> = views
        .rev()
        .take_while(|v| {
            used = used.saturating_add(frame::json_len(v) + 1); // and its comma
            used <= budget
        })
        .collect();
    kept.reverse();
    kept
}

enum PresenceKind {
    Join,
    Leave,
}
