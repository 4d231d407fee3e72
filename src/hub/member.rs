//! One connection's membership in a room: what its requests do (post,
//! react, edit, delete, typing, presence, pages), how it learns it was
//! welcomed, and leaving when it is dropped.

use super::*;

/// One connection's membership in a room. Every request of that connection
/// goes through it; dropping it leaves the room.
pub struct Member {
    pub(super) common: Arc<Common>,
    pub(super) room: Arc<Room>,
    pub(super) key: usize,
    pub(super) generation: u64,
    pub(super) user: UserName,
    pub(super) identity: Identity,
    /// May delete any message here; a renewed token may change it.
    pub(super) moderator: AtomicBool,
    pub(super) outbox: Arc<Outbox>,
    /// Until taken by [`Member::welcomed`], when the welcome comes later.
    pub(super) welcomed: Option<tokio::sync::oneshot::Receiver<()>>,
}

/// The preview of a posted message's attachment, for when it is ready only
/// after the message went out: the room's copy gains it, the store is told,
/// and the room gets `message_updated`. The hub does not know what a preview
/// is; whoever made it calls [`LaterPreview::set`].
///
/// Best effort: nothing happens if the message has left memory, no longer
/// attaches that upload, or the store's queue is full; and with a backbone
/// (Redis), whose rooms live elsewhere, it does nothing at all.
pub struct LaterPreview {
    pub(super) common: Arc<Common>,
    pub(super) room: Arc<Room>,
    pub(super) seq: u64,
}

impl LaterPreview {
    /// Sets `preview` on the message's attachment if it still is `url`;
    /// returns whether the room was told.
    pub fn set(&self, url: &str, preview: AttachmentPreview) -> bool {
        match &self.common.link {
            Link::Local => {
                self.room
                    .lock()
                    .set_preview(&self.room.name, self.seq, url, preview, &self.common)
            }
            Link::Remote(_) => false,
        }
    }
}

/// Resolves once a member's `welcome` is queued, or once it never will be
/// (the join failed and the member's outbox is closed). See [`Member::welcomed`].
#[derive(Debug)]
pub struct Welcomed {
    pub(super) rx: Option<tokio::sync::oneshot::Receiver<()>>,
}

impl std::future::Future for Welcomed {
    type Output = ();

    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<()> {
        match &mut self.get_mut().rx {
            // Sent or dropped: either way there is nothing more to wait for.
            Some(rx) => std::pin::Pin::new(rx).poll(cx).map(drop),
            None => std::task::Poll::Ready(()),
        }
    }
}

impl Member {
    /// Resolves once this member's `welcome` is in its outbox. On one
    /// instance it is there when [`Hub::join`] returns; with a backbone it
    /// follows a round trip, and a request sent before it would be answered
    /// (its `pong`, its echo) ahead of the `welcome`, which must be the
    /// first frame. Sessions wait for it before reading requests. The first
    /// call takes the signal; later calls resolve at once.
    pub fn welcomed(&mut self) -> Welcomed {
        Welcomed {
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

    /// Who the member is, whatever its name.
    pub fn identity(&self) -> &Identity {
        &self.identity
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
    // backbone. Refusals with a backbone include `unavailable`.

    /// Room in the store's queue for one change made through the backbone
    /// (taken before the backbone applies it, so recording it cannot fail).
    fn store_slot(&self) -> Result<Option<store::Slot<'_>>, Refusal> {
        self.common.store.as_ref().map(Store::slot).transpose()
    }

    /// Posts a message without an attachment at once, on a hub without a
    /// backbone: what [`Member::post`] does there, with no future to keep
    /// (a caller that would box one saves an allocation per post). With a
    /// backbone the content comes back untouched: `post` it.
    pub fn post_now(
        &self,
        content: String,
        client_id: Option<&str>,
    ) -> Result<Result<Option<u64>, Refusal>, String> {
        match &self.common.link {
            Link::Local => Ok(self.post_here(content, None, client_id)),
            Link::Remote(_) => Err(content),
        }
    }

    fn post_here(
        &self,
        content: String,
        attachment: Option<Attachment>,
        client_id: Option<&str>,
    ) -> Result<Option<u64>, Refusal> {
        // A retry's echo is queued under the room's lock, as a broadcast
        // is: a delete or edit of that message cannot be queued between
        // (and then be overtaken by the message as it was).
        let mut room = self.room.lock();
        let posted = room.post(
            &self.room.name,
            (&self.user, &self.identity),
            content,
            attachment,
            client_id,
            &self.common,
        )?;
        if let Some(echo) = posted.echo {
            self.send(echo);
        }
        drop(room);
        Ok(Some(posted.seq))
    }

    /// Posts a message (content already validated) to the room; returns its
    /// seq.
    pub async fn post(
        &self,
        content: String,
        attachment: Option<Attachment>,
        client_id: Option<&str>,
    ) -> Result<Option<u64>, Refusal> {
        let backbone = match &self.common.link {
            Link::Local => return self.post_here(content, attachment, client_id),
            Link::Remote(backbone) => backbone,
        };
        let store = self.store_slot()?;
        let id = self.common.next_message_id();
        let timestamp = self.common.now_rfc3339();
        let answer = loop {
            // The floor is read again after the backbone reconnected (it
            // may have come back with an older numbering: see
            // `Inbound::reconnected`).
            welcome::ensure_loaded(&self.common, &self.room, 0)
                .await
                .map_err(|e| {
                    Refusal::new(ErrorCode::Unavailable, format!("the history store: {e}"))
                })?;
            // Queued under the room's lock, with the floor read under it: a
            // reconnect forgets the floor before or after, never between
            // (the link takes requests only once it has).
            let queued = {
                let state = self.room.lock();
                welcome::floor_read(&self.common, &state).then(|| {
                    backbone.post(
                        &self.room.name,
                        NewMessage {
                            id: &id,
                            user: &self.user,
                            identity: &self.identity,
                            content: &content,
                            timestamp: &timestamp,
                            attachment: attachment.as_ref(),
                            client_id,
                        },
                        state.last_seq(),
                    )
                })
            };
            if let Some(answer) = queued {
                break answer;
            }
        };
        // What the store gets: now, or, if the answer leaves the post in
        // doubt, once it is seen posted (`in_doubt.rs`).
        let message = store.as_ref().map(|_| StoredMessage {
            id,
            seq: 0,
            user: self.user.clone(),
            identity: self.identity.clone(),
            content,
            timestamp,
            reactions: Reactions::default(),
            attachment,
            edited_at: None,
            client_id: client_id.map(str::to_owned),
        });
        let posted = match answer.await {
            Ok(posted) => posted,
            Err(failed) => {
                if let (true, Some(message)) = (failed.in_doubt, message) {
                    self.common.in_doubt.keep(self.room.name.key(), message);
                }
                return Err(failed.refusal);
            }
        };
        if posted.duplicate {
            // A retry: the message is already posted (and stored by whoever
            // posted it, or now, if that was this instance and its answer
            // was lost); its echo is for this connection alone. Without
            // one, the message is gone: the sender is told so.
            let echo = posted.echo.ok_or_else(room::retry_of_gone)?;
            if let (Some(store), Some(id)) = (&self.common.store, &posted.message_id) {
                self.common
                    .in_doubt
                    .retried(self.room.name.as_str(), id, posted.seq, store);
            }
            self.send(echo);
            return Ok(Some(posted.seq));
        }
        let seq = posted.seq;
        if let (Some(slot), Some(mut message)) = (store, message) {
            message.seq = seq;
            let change = Change::Post {
                room: self.room.name.key(),
                message: Arc::new(message),
                reserve_through: None,
            };
            slot.send(change, None);
        }
        self.common.metrics.messages.inc();
        Ok(Some(seq))
    }

    /// Adds, removes or toggles this user's `emoji` on a message. A request
    /// that changes nothing (adding a reaction it has, removing one it has
    /// not) broadcasts nothing and is answered to this member alone with
    /// the message's whole reactions, so that every request gets a frame
    /// back and a client out of step is put right.
    pub async fn react(
        &self,
        message_id: &str,
        emoji: Emoji,
        action: ReactionAction,
    ) -> Result<(), Refusal> {
        let backbone = match &self.common.link {
            Link::Local => {
                let mut room = self.room.lock();
                let changed = room.react(
                    &self.room.name,
                    (&self.user, &self.identity),
                    message_id,
                    emoji,
                    action,
                    &self.common,
                )?;
                if !changed {
                    self.send(room.reactions(message_id)?);
                }
                return Ok(());
            }
            Link::Remote(backbone) => backbone,
        };
        let store = self.store_slot()?;
        let room = &self.room.name;
        let (user, identity) = (&self.user, &self.identity);
        let changed = backbone
            .react(room, message_id, user, identity, &emoji, action)
            .await?;
        let Some((changed, reactions)) = changed else {
            // Nothing changed (the reaction was already so): no event
            // comes, so the asker is answered with the whole reactions.
            return self.reactions(message_id).await;
        };
        if let Some(slot) = store {
            let change = Change::React {
                room: room.key(),
                message_id: message_id.to_owned(),
                seq: changed.seq,
                reactions,
                version: changed.version,
            };
            slot.send(change, None);
        }
        Ok(())
    }

    /// Replaces the content of one of this member's messages.
    pub async fn edit(&self, message_id: &str, content: String) -> Result<(), Refusal> {
        let backbone = match &self.common.link {
            Link::Local => {
                return self.room.lock().edit(
                    &self.room.name,
                    &self.identity,
                    message_id,
                    content,
                    &self.common,
                );
            }
            Link::Remote(backbone) => backbone,
        };
        let store = self.store_slot()?;
        let now = self.common.now_rfc3339();
        let room = &self.room.name;
        let changed = backbone
            .edit(room, message_id, &self.identity, &content, &now)
            .await?;
        if let Some(slot) = store {
            let change = Change::Edit {
                room: room.key(),
                message_id: message_id.to_owned(),
                seq: changed.seq,
                content,
                edited_at: now.to_string(),
                version: changed.version,
            };
            slot.send(change, None);
        }
        Ok(())
    }

    /// The connection's token was renewed: from now on its role is the new
    /// token's (a moderator renewed with a plain token is one no longer).
    pub fn set_moderator(&self, moderator: bool) {
        self.moderator.store(moderator, Ordering::Release);
    }

    /// Deletes one of this member's messages (any message, for a moderator).
    pub async fn delete(&self, message_id: &str) -> Result<(), Refusal> {
        let backbone = match &self.common.link {
            Link::Local => {
                return self.room.lock().delete(
                    &self.room.name,
                    (&self.identity, self.moderator.load(Ordering::Acquire)),
                    message_id,
                    &self.common,
                );
            }
            Link::Remote(backbone) => backbone,
        };
        let store = self.store_slot()?;
        let room = &self.room.name;
        let answer = backbone.delete(
            room,
            message_id,
            &self.identity,
            self.moderator.load(Ordering::Acquire),
        );
        let seq = match answer.await {
            Ok(seq) => seq,
            Err(failed) => {
                // The backbone may still delete it: the store must too, once
                // that is seen (`in_doubt.rs`), or the message comes back.
                if failed.in_doubt && store.is_some() {
                    self.common.in_doubt.keep_delete(room.key(), message_id);
                }
                return Err(failed.refusal);
            }
        };
        if let Some(slot) = store {
            self.common.in_doubt.delete_answered(message_id);
            let change = Change::Delete {
                room: room.key(),
                message_id: message_id.to_owned(),
                seq,
            };
            slot.send(change, None);
        }
        Ok(())
    }

    /// A handle that can later set the preview of this member's message
    /// `seq` (see [`LaterPreview`]), usable after the member has left.
    pub fn later_preview(&self, seq: u64) -> LaterPreview {
        LaterPreview {
            common: Arc::clone(&self.common),
            room: Arc::clone(&self.room),
            seq,
        }
    }

    /// Tells the others this user is typing (throttled; best effort).
    pub fn typing(&self) {
        match &self.common.link {
            Link::Local => self.room.lock().typing(&self.user, &self.common),
            Link::Remote(backbone) => {
                // Throttled here first, so a chatty client costs the
                // backbone nothing; the backbone throttles across instances.
                if self.room.lock().typing_allowed(&self.user, &self.common) {
                    backbone.typing(&self.room.name, &self.user);
                }
            }
        }
    }

    /// Sends this connection a message's whole reactions (events carry a
    /// sample once they grow large).
    pub async fn reactions(&self, message_id: &str) -> Result<(), Refusal> {
        match &self.common.link {
            Link::Local => {
                // Queued under the room's lock, so no `reaction_update`
                // made after this answer can be queued before it.
                let room = self.room.lock();
                self.send(room.reactions(message_id)?);
            }
            Link::Remote(backbone) => {
                let whole = backbone
                    .reactions(&self.room.name, message_id)
                    .await?
                    .ok_or_else(|| room::refused_not_found(message_id))?;
                // `whole` is JSON from the backbone: spliced, not re-encoded.
                self.send(frame::text(&format!(
                    r#"{{"type":"reactions","message_id":{},"reactions":{whole}}}"#,
                    serde_json::Value::from(message_id)
                )));
            }
        }
        Ok(())
    }

    /// Sends this connection the room's `presence`.
    pub async fn presence(&self) -> Result<(), Refusal> {
        match &self.common.link {
            Link::Local => {
                // Queued under the room's lock, so no `join` or `leave`
                // made after this answer can be queued before it.
                let room = self.room.lock();
                self.send(room.presence());
            }
            Link::Remote(backbone) => {
                let online = backbone.presence(&self.room.name).await?;
                // `names` is JSON from the backbone: spliced, not re-encoded.
                self.send(frame::text(&format!(
                    r#"{{"type":"presence","online":{},"online_count":{}}}"#,
                    online.names, online.count
                )));
            }
        }
        Ok(())
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        let mut state = self.room.lock();
        match &self.common.link {
            Link::Local => state.leave(self.key, self.generation, &self.common),
            Link::Remote(backbone) => {
                // The backbone announces `leave`; told under the room's lock
                // so it cannot overtake a later join's registration.
                if let Some((user, left, empty)) = state.leave_quiet(self.key, self.generation) {
                    backbone.leave(&self.room.name, &user, left, empty);
                }
                if state.members.is_empty() {
                    state.forget_floor();
                }
            }
        }
    }
}
