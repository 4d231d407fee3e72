//! Redis as the hub's [`Backbone`]: each change is one Lua script (see
//! [`scripts`](super::scripts)) that checks, stores and publishes in one
//! step; this file only turns the hub's requests into script arguments and
//! the scripts' replies into the hub's answers and refusals.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use tokio::sync::oneshot;

use super::resp::{LinkError, Value};
use super::{Link, Script, Settings, Unanswered, Unavailable, ms};
use crate::hub::{
    Answer, Backbone, Changed, DeleteAnswer, Emoji, ErrorCode, HubConfig, Identity, Inbound,
    NameTaken, NewMessage, NotPosted, Online, PostAnswer, Posted, ReactionAction, Refusal,
    RemoteWelcome, RoomName, UserName, frames,
};

/// The hub's settings a script needs, as script arguments.
struct Args {
    ring: String,
    welcome_history: String,
    welcome_bytes: String,
    online_cap: String,
    room_ttl: String,
    presence_ttl: String,
    typing_interval: String,
    max_reactions: usize,
    max_users: usize,
    max_reaction_bytes: usize,
}

/// The running Redis backbone.
pub(crate) struct RedisBackbone {
    link: Link,
    args: Args,
}

impl RedisBackbone {
    /// Runs a script taking `room` and one argument that answers text, or
    /// something else (nil, a code) for "none".
    fn text_or_none(&self, script: Script, room: &RoomName, arg: &str) -> Answer<Option<String>> {
        let queued = self
            .link
            .call(script, &[room.as_str().as_bytes(), arg.as_bytes()]);
        Box::pin(async move {
            let v = answer(queued).await?;
            Ok(v.as_bytes()
                .and_then(|b| std::str::from_utf8(b).ok())
                .map(str::to_owned))
        })
    }
    /// Starts the link's tasks (needs a tokio runtime; Redis need not be
    /// up yet: the hub reports itself degraded until it is).
    pub fn start(settings: Settings, config: &HubConfig, inbound: Inbound) -> Arc<dyn Backbone> {
        let args = Args {
            ring: config.history.max(1).to_string(),
            welcome_history: config.welcome_history.to_string(),
            welcome_bytes: config.welcome_history_bytes.to_string(),
            online_cap: config.online_list_cap.to_string(),
            room_ttl: ms(config.empty_room_ttl),
            presence_ttl: ms(settings.presence_ttl),
            typing_interval: ms(config.typing_interval),
            max_reactions: config.max_reactions_per_message,
            max_users: config.max_users_per_reaction,
            max_reaction_bytes: config.max_reaction_bytes,
        };
        Arc::new(Self {
            link: Link::start(settings, inbound),
            args,
        })
    }

    /// Queues "this instance holds `n` connections of `user` in `room`";
    /// if that is not carried out, every member is announced again soon.
    fn set_presence(&self, room: &RoomName, user: &UserName, n: u32) {
        let n = n.to_string();
        let a = &self.args;
        self.link.call_or_resync(
            Script::Presence,
            &[
                room.as_str().as_bytes(),
                self.link.instance().as_bytes(),
                a.presence_ttl.as_bytes(),
                user.as_str().as_bytes(),
                n.as_bytes(),
                a.online_cap.as_bytes(),
                a.room_ttl.as_bytes(),
            ],
        );
    }
}

/// A script's `seq` and `version` answers as a [`Changed`], if both are
/// there.
fn changed(seq: Option<&Value>, version: Option<&Value>) -> Option<Changed> {
    let number = |r: Option<&Value>| {
        r.and_then(Value::as_int)
            .and_then(|n| u64::try_from(n).ok())
    };
    Some(Changed {
        seq: number(seq).filter(|&seq| seq > 0)?,
        version: number(version)?,
    })
}

/// A queued script call's answer; the link failing is `unavailable`.
async fn answer(
    queued: Result<oneshot::Receiver<Result<Value, LinkError>>, Unavailable>,
) -> Result<Value, Refusal> {
    outcome(queued, None).await.map_err(|not| not.refusal)
}

/// A queued script call's answer, and without one whether Redis may have
/// run it all the same (a call refused before it was queued never ran).
/// The client is told to try again, or, when Redis may have run it and
/// `if_in_doubt` is given, that advice instead (a plain retry is not
/// always right).
async fn outcome(
    queued: Result<oneshot::Receiver<Result<Value, LinkError>>, Unavailable>,
    if_in_doubt: Option<&str>,
) -> Result<Value, NotPosted> {
    let rx = queued.map_err(|e| NotPosted::from(unavailable(e)))?;
    Link::reply(rx)
        .await
        .map_err(|Unanswered { what, in_doubt }| {
            let message = match if_in_doubt.filter(|_| in_doubt) {
                Some(advice) => format!("{what}: {advice}"),
                None => format!("{what}; try again"),
            };
            NotPosted {
                refusal: Refusal::new(ErrorCode::Unavailable, message),
                in_doubt,
            }
        })
}

/// The `message_id` of a message's JSON, as the scripts write it.
fn message_id(json: &str) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Earlier {
        message_id: String,
    }
    serde_json::from_str::<Earlier>(json)
        .ok()
        .map(|m| m.message_id)
}

fn unavailable(e: Unavailable) -> Refusal {
    Refusal::new(ErrorCode::Unavailable, e.0)
}

/// A change the scripts applied without answering the message's seq (a
/// script of another version): the durable store cannot find the message,
/// so the client is not told it all went well.
fn no_seq() -> Refusal {
    Refusal::new(
        ErrorCode::Unavailable,
        "the chat backbone applied the change but did not say which message seq it was; \
         the stored history may not have it",
    )
}

/// Maps a script's refusal code to what the client is told.
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

impl Backbone for RedisBackbone {
    fn degraded(&self) -> Option<String> {
        self.link.degraded()
    }

    fn watch(&self, room: &RoomName) {
        self.link.want(room.as_str());
    }

    fn watching(&self, room: &RoomName) -> Answer<()> {
        let link = self.link.handle();
        let room = room.as_str().to_owned();
        Box::pin(async move { link.subscribed(&room).await.map_err(unavailable) })
    }

    fn welcome(
        &self,
        room: &RoomName,
        (user, identity): (&UserName, &Identity),
        connections: u32,
        after: Option<u64>,
        seq_floor: u64,
    ) -> Answer<RemoteWelcome> {
        let a = &self.args;
        let n = connections.to_string();
        let after = after.map(|a| a.to_string()).unwrap_or_default();
        let floor = seq_floor.to_string();
        let queued = self.link.call(
            Script::Join,
            &[
                room.as_str().as_bytes(),
                self.link.instance().as_bytes(),
                a.presence_ttl.as_bytes(),
                user.as_str().as_bytes(),
                n.as_bytes(),
                a.room_ttl.as_bytes(),
                after.as_bytes(),
                a.welcome_history.as_bytes(),
                a.online_cap.as_bytes(),
                a.welcome_bytes.as_bytes(),
                floor.as_bytes(),
                identity.as_str().as_bytes(),
            ],
        );
        let name = user.as_str().to_owned();
        Box::pin(async move {
            let v = answer(queued).await?;
            if v.as_int() == Some(-6) {
                return Err(Refusal::new(
                    ErrorCode::NameTaken,
                    NameTaken { user: name }.to_string(),
                ));
            }
            let items = v.items();
            let int = |i: usize| items.get(i).and_then(|v| v.as_int()).unwrap_or(0);
            let text = |v: &Value| {
                v.as_bytes()
                    .and_then(|b| std::str::from_utf8(b).ok())
                    .map(str::to_owned)
            };
            let history = items
                .get(5)
                .map(|h| h.items().iter().filter_map(text).collect())
                .unwrap_or_default();
            Ok(RemoteWelcome {
                last_seq: u64::try_from(int(0)).unwrap_or(0),
                ev: u64::try_from(int(1)).unwrap_or(0),
                gap: int(2) == 1,
                online_count: usize::try_from(int(3)).unwrap_or(0),
                online: items.get(4).and_then(text),
                history,
            })
        })
    }

    fn holder(&self, room: &RoomName, user: &UserName) -> Answer<Option<String>> {
        self.text_or_none(Script::Hold, room, user.as_str())
    }

    fn leave(&self, room: &RoomName, user: &UserName, connections: u32, room_empty: bool) {
        if room_empty {
            self.link.unwant(room.as_str());
        }
        self.set_presence(room, user, connections);
    }

    fn post(&self, room: &RoomName, m: NewMessage<'_>, seq_floor: u64) -> PostAnswer {
        let floor = seq_floor.to_string();
        let attachment = m
            .attachment
            .map(|a| serde_json::to_string(a).unwrap_or_default())
            .unwrap_or_default();
        let queued = self.link.call(
            Script::Post,
            &[
                room.as_str().as_bytes(),
                self.args.ring.as_bytes(),
                m.id.as_bytes(),
                m.user.as_str().as_bytes(),
                m.content.as_bytes(),
                m.timestamp.as_bytes(),
                attachment.as_bytes(),
                m.client_id.unwrap_or_default().as_bytes(),
                m.identity.as_str().as_bytes(),
                floor.as_bytes(),
            ],
        );
        // Not "nothing was changed": say how to retry safely.
        let if_in_doubt = match m.client_id {
            Some(_) => {
                "the message may still be posted, so retry with the same client_id (a retry \
                 never posts it twice)"
            }
            None => {
                "the message may still be posted, so look for it in the room before sending \
                     it again"
            }
        };
        Box::pin(async move {
            let reply = outcome(queued, Some(if_in_doubt)).await?;
            if let Some(seq) = reply.as_int().and_then(|n| u64::try_from(n).ok()) {
                return Ok(Posted {
                    seq,
                    duplicate: false,
                    echo: None,
                    message_id: None,
                });
            }
            let items = reply.items();
            let seq = items.first().and_then(|s| s.as_int()).ok_or_else(|| {
                Refusal::new(ErrorCode::Unavailable, "the chat backbone gave no seq")
            })?;
            let earlier = items
                .get(1)
                .and_then(|j| j.as_bytes())
                .and_then(|j| std::str::from_utf8(j).ok())
                .filter(|j| !j.is_empty());
            Ok(Posted {
                seq: u64::try_from(seq).unwrap_or(0),
                duplicate: true,
                echo: earlier.map(frames::text),
                message_id: earlier.and_then(message_id),
            })
        })
    }

    fn react(
        &self,
        room: &RoomName,
        message_id: &str,
        user: &UserName,
        identity: &Identity,
        emoji: &Emoji,
        action: ReactionAction,
    ) -> Answer<Option<(Changed, String)>> {
        let action: &[u8] = match action {
            ReactionAction::Add => b"add",
            ReactionAction::Remove => b"remove",
            ReactionAction::Toggle => b"toggle",
        };
        let (max, max_users) = (self.args.max_reactions, self.args.max_users);
        let (max_text, max_users_text) = (max.to_string(), max_users.to_string());
        let cap = self.args.max_reaction_bytes;
        let max_bytes = cap.to_string();
        let queued = self.link.call(
            Script::React,
            &[
                room.as_str().as_bytes(),
                message_id.as_bytes(),
                user.as_str().as_bytes(),
                emoji.as_str().as_bytes(),
                action,
                max_text.as_bytes(),
                max_users_text.as_bytes(),
                identity.as_str().as_bytes(),
                max_bytes.as_bytes(),
            ],
        );
        let message_id = message_id.to_owned();
        Box::pin(async move {
            let reply = answer(queued).await?;
            // A change answers `[seq, reactions]`; a no-op or refusal, a code.
            if let Some(code) = reply.as_int() {
                if code == -7 {
                    return Err(Refusal::new(
                        ErrorCode::TooManyReactions,
                        format!(
                            "this message's reactions are full ({} KiB of names); react to another message",
                            cap >> 10
                        ),
                    ));
                }
                refused(code, &message_id, "react to", (max, max_users))?;
                return Ok(None);
            }
            // `[seq, reactions, version]`.
            let items = reply.items();
            let changed = changed(items.first(), items.get(2));
            let reactions = items
                .get(1)
                .and_then(|r| r.as_bytes())
                .and_then(|r| std::str::from_utf8(r).ok());
            match (changed, reactions) {
                (Some(changed), Some(reactions)) => Ok(Some((changed, reactions.to_owned()))),
                _ => Err(no_seq()),
            }
        })
    }

    fn edit(
        &self,
        room: &RoomName,
        message_id: &str,
        identity: &Identity,
        content: &str,
        edited_at: &str,
    ) -> Answer<Changed> {
        let blank: &[u8] = if content.trim().is_empty() {
            b"1"
        } else {
            b"0"
        };
        let queued = self.link.call(
            Script::Edit,
            &[
                room.as_str().as_bytes(),
                message_id.as_bytes(),
                identity.as_str().as_bytes(),
                content.as_bytes(),
                blank,
                edited_at.as_bytes(),
            ],
        );
        let limits = (self.args.max_reactions, self.args.max_users);
        let message_id = message_id.to_owned();
        Box::pin(async move {
            let reply = answer(queued).await?;
            // `[seq, version]`, or a refusal's code.
            if let Some(code) = reply.as_int() {
                refused(code, &message_id, "edit", limits)?;
            }
            let items = reply.items();
            changed(items.first(), items.get(1)).ok_or_else(no_seq)
        })
    }

    fn delete(
        &self,
        room: &RoomName,
        message_id: &str,
        identity: &Identity,
        moderator: bool,
    ) -> DeleteAnswer {
        let moderator: &[u8] = if moderator { b"1" } else { b"0" };
        let queued = self.link.call(
            Script::Delete,
            &[
                room.as_str().as_bytes(),
                message_id.as_bytes(),
                identity.as_str().as_bytes(),
                moderator,
            ],
        );
        let limits = (self.args.max_reactions, self.args.max_users);
        let message_id = message_id.to_owned();
        Box::pin(async move {
            // The seq, or a refusal's code; no answer: say how to be sure.
            let reply = outcome(
                queued,
                Some("the message may still be deleted, so if it is still there, delete it again"),
            )
            .await?;
            let code = reply.as_int().unwrap_or(0);
            refused(code, &message_id, "delete", limits)?;
            let seq = u64::try_from(code).ok().filter(|&seq| seq > 0);
            Ok(seq.ok_or_else(no_seq)?)
        })
    }

    fn typing(&self, room: &RoomName, user: &UserName) {
        // The reply is not awaited: nobody is told about typing failures.
        let _ = self.link.call(
            Script::Typing,
            &[
                room.as_str().as_bytes(),
                user.as_str().as_bytes(),
                self.args.typing_interval.as_bytes(),
            ],
        );
    }

    fn presence(&self, room: &RoomName) -> Answer<Online> {
        let queued = self.link.call(Script::Online, &[room.as_str().as_bytes()]);
        Box::pin(async move {
            let v = answer(queued).await?;
            let items = v.items();
            let count = items.first().and_then(|c| c.as_int()).unwrap_or(0);
            let names = items
                .get(1)
                .and_then(|n| n.as_bytes())
                .and_then(|n| std::str::from_utf8(n).ok())
                .unwrap_or("[]");
            Ok(Online {
                count: usize::try_from(count).unwrap_or(0),
                names: names.to_owned(),
            })
        })
    }

    fn reactions(&self, room: &RoomName, message_id: &str) -> Answer<Option<String>> {
        self.text_or_none(Script::Reactions, room, message_id)
    }

    fn page(
        &self,
        room: &RoomName,
        before: Option<u64>,
        limit: usize,
    ) -> Answer<(Vec<String>, bool)> {
        let before = before.map(|b| b.to_string()).unwrap_or_default();
        let limit = limit.to_string();
        let queued = self.link.call(
            Script::Page,
            &[
                room.as_str().as_bytes(),
                before.as_bytes(),
                limit.as_bytes(),
            ],
        );
        Box::pin(async move {
            let v = answer(queued).await?;
            let items = v.items();
            let more = items.first().and_then(|m| m.as_int()) == Some(1);
            let messages = items
                .get(1)
                .map(|list| {
                    list.items()
                        .iter()
                        .filter_map(|m| m.as_bytes())
                        .filter_map(|m| std::str::from_utf8(m).ok())
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default();
            Ok((messages, more))
        })
    }

    fn stop(&self) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(self.link.bye())
    }
}
