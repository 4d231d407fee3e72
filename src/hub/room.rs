//! One room: its members in a slab, who is online, and the ring of recent
//! messages. Everything here runs under the room's lock and never awaits;
//! every change that others must see is serialized once into a [`Frame`] and
//! pushed to each member's [`Outbox`].

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use slab::Slab;

use super::Identity;
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
}

pub(crate) struct RoomState {
    pub members: Slab<Slot>,
    pub(super) next_gen: u64,
    /// Online names with their number of connections, sorted for display.
    pub(super) online: BTreeMap<UserName, u32>,
    /// Last typing broadcast per online name, for the 2 s throttle.
    typing: HashMap<UserName, Instant>,
    history: VecDeque<StoredMessage>,
    last_seq: u64,
    /// The highest seq pushed out of the ring by newer messages.
    evicted_through: u64,
    /// When the last member left (for dropping idle rooms).
    pub empty_since: Option<Instant>,
    /// With a backbone: the last event number the room's stream carried.
    /// The stream is in order, so a number at or below it again means the
    /// backbone's numbering went back: its data was lost.
    pub(super) stream_ev: Option<u64>,
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
            pending: None,
            has: 0,
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
    pub(super) fn remove(&mut self, key: usize, generation: u64) -> Option<(UserName, u32)> {
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
        identity: &Identity,
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
            identity: identity.clone(),
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
        identity: &Identity,
        message_id: &str,
        content: String,
        common: &Common,
    ) -> Result<(), Refusal> {
        let now = common.now_rfc3339();
        let message = self.find(message_id)?;
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
        message.content = content;
        message.edited_at = Some(now);
        let frame = frame::json(&MessageView::of("message_updated", message, None));
        self.broadcast(&frame, None, common);
        Ok(())
    }

    /// Removes a message; author only.
    pub fn delete(
        &mut self,
        identity: &Identity,
        moderator: bool,
        message_id: &str,
        common: &Common,
    ) -> Result<(), Refusal> {
        let message = self.find(message_id)?;
        if !moderator && message.identity != *identity {
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
