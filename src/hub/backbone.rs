//! Where a room's changes go. On one instance ([`Backbone::Local`]) the
//! room applies them under its lock and broadcasts at once; that path is
//! untouched by this module. With Redis ([`Backbone::Redis`], feature
//! `redis`) the hub publishes: each change is one Lua script that stores
//! it and publishes the event on the room's channel; the link delivers
//! every room event back (from any instance) and the room builds one frame
//! and fans it out to its local members.

#[cfg(feature = "redis")]
use std::sync::Arc;

#[cfg(feature = "redis")]
use super::{
    Attachment, Common, ErrorCode, Frame, Member, ReactionAction, Refusal, Shared, frame,
    names::{Emoji, UserName},
    room::Room,
};
#[cfg(feature = "redis")]
use crate::redis::{Link, LocalPresence, Script, Sink, Unavailable, ms};

/// The hub's backbone.
pub(crate) enum Backbone {
    /// One instance: rooms live in this process only.
    Local,
    /// Several instances sharing rooms through Redis.
    #[cfg(feature = "redis")]
    Redis(Link),
}

#[cfg(feature = "redis")]
fn unavailable(e: Unavailable) -> Refusal {
    Refusal::new(ErrorCode::Unavailable, e.0)
}

/// Maps a script's refusal code to what the client is told.
#[cfg(feature = "redis")]
fn refused(
    code: i64,
    message_id: &str,
    what: &str,
    (max_reactions, max_users): (usize, usize),
) -> Result<(), Refusal> {
    match code {
        -1 => Err(Refusal::new(
            ErrorCode::UnknownMessage,
            format!("no message {message_id:?} in this room's recent history"),
        )),
        -2 => Err(Refusal::new(
            ErrorCode::TooManyReactions,
            format!(
                "this message already has {max_reactions} different emoji; react with one of those"
            ),
        )),
        -5 => Err(Refusal::new(
            ErrorCode::TooManyReactions,
            format!("{max_users} people already reacted with this emoji"),
        )),
        -3 => Err(Refusal::new(
            ErrorCode::Forbidden,
            format!("only the author can {what} a message"),
        )),
        -4 => Err(Refusal::new(
            ErrorCode::InvalidField,
            "`content` must not be blank; delete the message instead",
        )),
        _ => Ok(()),
    }
}

#[cfg(feature = "redis")]
impl Member {
    fn link(&self) -> Option<&Link> {
        match &self.common.backbone {
            Backbone::Redis(link) => Some(link),
            Backbone::Local => None,
        }
    }

    pub(super) async fn post_remote(
        &self,
        link: &Link,
        content: String,
        attachment: Option<Attachment>,
        client_id: Option<&str>,
    ) -> Result<Option<u64>, Refusal> {
        let id = self.common.next_message_id();
        let timestamp = self.common.now_rfc3339();
        let attachment = attachment
            .map(|a| serde_json::to_string(&a).unwrap_or_default())
            .unwrap_or_default();
        let ring = self.common.config.history.max(1).to_string();
        let seq = link
            .run(
                Script::Post,
                &[
                    self.room.name.as_str().as_bytes(),
                    ring.as_bytes(),
                    id.as_bytes(),
                    self.user.as_str().as_bytes(),
                    content.as_bytes(),
                    timestamp.as_bytes(),
                    attachment.as_bytes(),
                    client_id.unwrap_or_default().as_bytes(),
                ],
            )
            .await
            .map_err(unavailable)?;
        self.common.metrics.messages.inc();
        Ok(seq.as_int().and_then(|n| u64::try_from(n).ok()))
    }

    pub(super) async fn react_remote(
        &self,
        link: &Link,
        message_id: &str,
        emoji: Emoji,
        action: ReactionAction,
    ) -> Result<(), Refusal> {
        let action: &[u8] = match action {
            ReactionAction::Add => b"add",
            ReactionAction::Remove => b"remove",
            ReactionAction::Toggle => b"toggle",
        };
        let max = self.common.config.max_reactions_per_message;
        let max_users = self.common.config.max_users_per_reaction;
        let (max_text, max_users_text) = (max.to_string(), max_users.to_string());
        let code = link
            .run(
                Script::React,
                &[
                    self.room.name.as_str().as_bytes(),
                    message_id.as_bytes(),
                    self.user.as_str().as_bytes(),
                    emoji.as_str().as_bytes(),
                    action,
                    max_text.as_bytes(),
                    max_users_text.as_bytes(),
                ],
            )
            .await
            .map_err(unavailable)?;
        refused(
            code.as_int().unwrap_or(0),
            message_id,
            "react to",
            (max, max_users),
        )
    }

    pub(super) async fn edit_remote(
        &self,
        link: &Link,
        message_id: &str,
        content: String,
    ) -> Result<(), Refusal> {
        let blank: &[u8] = if content.trim().is_empty() {
            b"1"
        } else {
            b"0"
        };
        let now = self.common.now_rfc3339();
        let code = link
            .run(
                Script::Edit,
                &[
                    self.room.name.as_str().as_bytes(),
                    message_id.as_bytes(),
                    self.user.as_str().as_bytes(),
                    content.as_bytes(),
                    blank,
                    now.as_bytes(),
                ],
            )
            .await
            .map_err(unavailable)?;
        refused(code.as_int().unwrap_or(0), message_id, "edit", (0, 0))
    }

    pub(super) async fn delete_remote(&self, link: &Link, message_id: &str) -> Result<(), Refusal> {
        let code = link
            .run(
                Script::Delete,
                &[
                    self.room.name.as_str().as_bytes(),
                    message_id.as_bytes(),
                    self.user.as_str().as_bytes(),
                ],
            )
            .await
            .map_err(unavailable)?;
        refused(code.as_int().unwrap_or(0), message_id, "delete", (0, 0))
    }

    /// Typing is best effort: throttled here and in Redis, never refused.
    pub(super) fn typing_remote(&self, link: &Link) {
        if !self.room.lock().typing_allowed(&self.user, &self.common) {
            return;
        }
        let interval = ms(self.common.config.typing_interval);
        // The reply is not awaited: nobody is told about typing failures.
        let _ = link.call(
            Script::Typing,
            &[
                self.room.name.as_str().as_bytes(),
                self.user.as_str().as_bytes(),
                interval.as_bytes(),
            ],
        );
    }

    pub(super) async fn presence_remote(&self, link: &Link) -> Result<(), Refusal> {
        let v = link
            .run(Script::Online, &[self.room.name.as_str().as_bytes()])
            .await
            .map_err(unavailable)?;
        let items = v.items();
        let count = items.first().and_then(|c| c.as_int()).unwrap_or(0);
        let names = items
            .get(1)
            .and_then(|n| n.as_bytes())
            .and_then(|n| std::str::from_utf8(n).ok())
            .unwrap_or("[]");
        // `names` is JSON built by the script: spliced, not re-encoded.
        self.send(frame::text(&format!(
            r#"{{"type":"presence","online":{names},"online_count":{count}}}"#
        )));
        Ok(())
    }

    /// Leaves the room here and tells Redis this name's connections left.
    pub(super) fn leave_remote(&self) {
        let Some(link) = self.link() else { return };
        let mut state = self.room.lock();
        let Some((user, left, empty)) = state.leave_quiet(self.key, self.generation) else {
            return;
        };
        if empty {
            link.unwant(self.room.name.as_str());
        }
        // Queued under the room lock so it cannot overtake a later join's.
        if set_presence(link, &self.common, &self.room, &user, left).is_err() {
            link.need_resync();
        }
    }
}

/// Queues "this instance holds `n` connections of `user` in `room`".
#[cfg(feature = "redis")]
fn set_presence(
    link: &Link,
    common: &Common,
    room: &Room,
    user: &UserName,
    n: u32,
) -> Result<(), Unavailable> {
    let settings = link.settings();
    let (ttl, n) = (ms(settings.presence_ttl), n.to_string());
    let cap = common.config.online_list_cap.to_string();
    let room_ttl = ms(common.config.empty_room_ttl);
    link.call(
        Script::Presence,
        &[
            room.name.as_str().as_bytes(),
            link.instance().as_bytes(),
            ttl.as_bytes(),
            user.as_str().as_bytes(),
            n.as_bytes(),
            cap.as_bytes(),
            room_ttl.as_bytes(),
        ],
    )
    .map(drop)
}

/// Completes a join: waits for the room's subscription, registers the
/// connection in Redis and reads the room's state in one script, then
/// sends `welcome` and whatever arrived meanwhile. On failure the
/// connection is closed with 1013 so the client retries.
#[cfg(feature = "redis")]
pub(super) async fn activate(
    common: Arc<Common>,
    room: Arc<Room>,
    key: usize,
    generation: u64,
    user: UserName,
    after: Option<u64>,
) {
    let Backbone::Redis(link) = &common.backbone else {
        return;
    };
    match welcome(link, &common, &room, key, generation, &user, after).await {
        Ok(Some((frame, ev))) => room.lock().activate(key, generation, frame, ev),
        Ok(None) => {} // it left before its welcome
        Err(e) => {
            tracing::debug!(room = %room.name, %user, "join failed: {e}");
            if let Some(slot) = room.lock().members.get(key) {
                if slot.generation == generation {
                    slot.outbox.close(super::CloseReason::UNAVAILABLE);
                }
            }
        }
    }
}

#[cfg(feature = "redis")]
async fn welcome(
    link: &Link,
    common: &Common,
    room: &Room,
    key: usize,
    generation: u64,
    user: &UserName,
    after: Option<u64>,
) -> Result<Option<(Frame, u64)>, Unavailable> {
    link.subscribed(room.name.as_str()).await?;
    let rx = {
        let state = room.lock();
        if !state.has(key, generation) {
            return Ok(None);
        }
        let n = state.connections_of(user).to_string();
        let ttl = ms(link.settings().presence_ttl);
        let room_ttl = ms(common.config.empty_room_ttl);
        let after = after.map(|a| a.to_string()).unwrap_or_default();
        let recent = common.config.welcome_history.to_string();
        let cap = common.config.online_list_cap.to_string();
        let budget = common.config.welcome_history_bytes.to_string();
        link.call(
            Script::Join,
            &[
                room.name.as_str().as_bytes(),
                link.instance().as_bytes(),
                ttl.as_bytes(),
                user.as_str().as_bytes(),
                n.as_bytes(),
                room_ttl.as_bytes(),
                after.as_bytes(),
                recent.as_bytes(),
                cap.as_bytes(),
                budget.as_bytes(),
            ],
        )?
    };
    let v = Link::reply(rx).await?;
    let items = v.items();
    let int = |i: usize| items.get(i).and_then(|v| v.as_int()).unwrap_or(0);
    let text = |i: usize| {
        items
            .get(i)
            .and_then(|v| v.as_bytes())
            .and_then(|b| std::str::from_utf8(b).ok())
            .unwrap_or("[]")
    };
    let ev = u64::try_from(int(1)).unwrap_or(0);
    // `online` and `history` are JSON built by the script: spliced, not
    // parsed and re-encoded.
    let json = format!(
        r#"{{"type":"welcome","room":{},"user":{},"online":{},"online_count":{},"history":{},"gap":{},"last_seq":{},"limits":{}}}"#,
        serde_json::to_string(room.name.as_str()).unwrap_or_default(),
        serde_json::to_string(user.as_str()).unwrap_or_default(),
        text(4),
        int(3),
        text(5),
        int(2) == 1,
        int(0),
        serde_json::to_string(&common.config.limits).unwrap_or_default(),
    );
    Ok(Some((frame::text(&json), ev)))
}

#[cfg(feature = "redis")]
impl Sink for Shared {
    fn deliver(&self, room: &str, ev: u64, skip: Option<&str>, body: &str) {
        let Some(room) = self.lock_rooms().get(room).cloned() else {
            return;
        };
        // One frame per event per instance; every local member shares it.
        let frame = frame::text(body);
        room.lock().deliver(ev, skip, &frame, &self.common);
    }

    fn mark(&self, room: &str, ev: u64) {
        if let Some(room) = self.lock_rooms().get(room).cloned() {
            room.lock().mark(ev);
        }
    }

    fn lost(&self) {
        let rooms: Vec<Arc<Room>> = self.lock_rooms().values().cloned().collect();
        for room in rooms {
            room.lock().start_over();
        }
    }

    fn with_presence(&self, send: &mut dyn FnMut(&[LocalPresence])) {
        let rooms = self.lock_rooms();
        let states: Vec<_> = rooms.values().map(|r| (&r.name, r.lock())).collect();
        let members: Vec<LocalPresence> = states
            .iter()
            .flat_map(|(name, state)| {
                state
                    .local_online()
                    .map(|(user, n)| (name.to_string(), user.to_string(), n))
            })
            .collect();
        send(&members);
    }
}
