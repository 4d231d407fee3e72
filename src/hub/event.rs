//! The server → client events of PROTOCOL.md as borrowed, serialize-only
//! views, so building a frame copies no message text, plus the error codes a
//! request can be refused with.

use serde::Serialize;
use serde::ser::SerializeMap;

use super::Identity;
use super::names::{Emoji, RoomName, UserName};
use super::short_text::ShortText;

/// A file attached to a message; filled in by the server from its own upload
/// records, never from what the client claimed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Attachment {
    /// `/uploads/<id>.<ext>`.
    pub url: String,
    /// The sanitised original file name, for display only.
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// The type detected from the file's content.
    pub content_type: String,
    /// A smaller image to show in its place, once the server made one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preview: Option<AttachmentPreview>,
}

/// A smaller rendition of an attached image; what it is served as is the
/// server's business (the hub only carries it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct AttachmentPreview {
    /// `/uploads/<name>` of the preview itself.
    pub url: String,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
}

/// The limits a client is told in `welcome`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Limits {
    /// Longest message, in characters.
    pub max_message_chars: usize,
    /// Largest upload, in bytes.
    pub max_upload_bytes: u64,
    /// Sustained requests per second per connection.
    pub messages_per_second: u32,
}

/// One emoji on one message: who reacted with it, in the order they did,
/// by name (what everyone sees) and by identity (what a removal is checked
/// against: someone who later takes the same name cannot remove it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reaction {
    /// The emoji.
    pub emoji: Emoji,
    /// Names, in the order they reacted.
    pub users: Vec<UserName>,
    /// The identity behind each name, in the same order.
    pub who: Vec<Identity>,
}

/// A message's reactions: emoji in the order first used, each with its users
/// in the order they reacted. Serialized as `{emoji: [users]}`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reactions(pub(crate) Vec<Reaction>);

impl Reactions {
    /// The users who reacted with `emoji` (empty if none).
    pub fn users(&self, emoji: &Emoji) -> &[UserName] {
        self.0
            .iter()
            .find(|r| r.emoji == *emoji)
            .map_or(&[], |r| r.users.as_slice())
    }

    /// The form a store keeps: `[[emoji, [names], [identities]], ...]`,
    /// emoji in the order first used (a JSON object would not keep it).
    pub fn to_store_json(&self) -> String {
        let list: Vec<(&str, Vec<&str>, Vec<&str>)> = self
            .0
            .iter()
            .map(|r| {
                (
                    r.emoji.as_str(),
                    r.users.iter().map(UserName::as_str).collect(),
                    r.who.iter().map(Identity::as_str).collect(),
                )
            })
            .collect();
        serde_json::to_string(&list).unwrap_or_else(|_| "[]".into())
    }

    /// Reads [`Reactions::to_store_json`]'s form back (a name without an
    /// identity has the name's own); entries that are not valid any more are
    /// left out.
    pub fn from_store_json(text: &str) -> Self {
        #[derive(serde::Deserialize)]
        struct Entry(String, Vec<String>, #[serde(default)] Vec<String>);
        let list: Vec<Entry> = serde_json::from_str(text).unwrap_or_default();
        Self(
            list.into_iter()
                .filter_map(|Entry(emoji, users, who)| {
                    let emoji = Emoji::parse(&emoji).ok()?;
                    let who: Vec<Identity> = users
                        .iter()
                        .enumerate()
                        .map(|(i, u)| match who.get(i) {
                            Some(w) => Identity::from_key(w.as_str()),
                            None => Identity::named(u),
                        })
                        .collect();
                    let users: Vec<UserName> =
                        users.iter().map(|u| UserName::from_store(u)).collect();
                    Some(Reaction { emoji, users, who }).filter(|r| !r.users.is_empty())
                })
                .collect(),
        )
    }
}

impl Serialize for Reactions {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for r in &self.0 {
            map.serialize_entry(&r.emoji, &r.users)?;
        }
        map.end()
    }
}

/// Reactions whose `{emoji: [users]}` JSON takes at most this many bytes are
/// sent whole in events; larger ones are sent as a sample (see
/// [`ReactionsSample`]). Most messages' reactions are far below it, so for
/// them nothing changes on the wire.
pub const FULL_REACTIONS_BYTES: usize = 1024;

/// Names per emoji a sample keeps.
pub const REACTION_SAMPLE: usize = 3;

impl Reactions {
    /// Whether these reactions are small enough to be sent whole.
    pub fn fit_whole(&self) -> bool {
        self.0.is_empty() || super::frame::json_len(self) <= FULL_REACTIONS_BYTES
    }
}

/// How a message's reactions appear in `message`-shaped events: whole while
/// they [fit](Reactions::fit_whole), else each emoji with its first
/// [`REACTION_SAMPLE`] names, so one popular message costs a bounded number
/// of bytes wherever it is sent (welcome, history pages, edits). The
/// `reactions` request fetches the whole list.
pub(crate) struct ReactionsSample<'a> {
    reactions: &'a Reactions,
    whole: bool,
}

impl<'a> ReactionsSample<'a> {
    pub(crate) fn of(reactions: &'a Reactions) -> Self {
        Self {
            reactions,
            whole: reactions.fit_whole(),
        }
    }

    /// Whether there are no reactions at all (`{}`).
    pub(crate) fn is_empty(&self) -> bool {
        self.reactions.0.is_empty()
    }

    /// `{emoji: count}` when the names are a sample; `None` when whole.
    pub(crate) fn counts(&self) -> Option<ReactionCounts<'a>> {
        (!self.whole).then_some(ReactionCounts(self.reactions))
    }
}

impl Serialize for ReactionsSample<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.whole {
            return self.reactions.serialize(s);
        }
        let mut map = s.serialize_map(Some(self.reactions.0.len()))?;
        for r in &self.reactions.0 {
            let shown = r.users.len().min(REACTION_SAMPLE);
            map.serialize_entry(&r.emoji, &r.users[..shown])?;
        }
        map.end()
    }
}

/// `{emoji: number of people}`, sent beside a sample.
pub(crate) struct ReactionCounts<'a>(&'a Reactions);

impl Serialize for ReactionCounts<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.0.len()))?;
        for r in &self.0.0 {
            map.serialize_entry(&r.emoji, &r.users.len())?;
        }
        map.end()
    }
}

/// A chat message as kept in a room's history.
#[derive(Debug, Clone)]
pub struct StoredMessage {
    /// Unique id.
    pub id: ShortText,
    /// Per-room sequence number.
    pub seq: u64,
    /// Author's name when it was posted.
    pub user: UserName,
    /// Who posted it, whatever the name (never sent to clients).
    pub identity: Identity,
    /// Plain text.
    pub content: String,
    /// RFC 3339 UTC.
    pub timestamp: ShortText,
    /// Reactions.
    pub reactions: Reactions,
    /// Optional attached upload.
    pub attachment: Option<Attachment>,
    /// RFC 3339 UTC of the last edit.
    pub edited_at: Option<String>,
    /// The sender's `client_id`: a retry with the same one (and the same
    /// identity) is answered with this message instead of a second one.
    pub client_id: Option<String>,
}

/// `message`, `message_updated` and history entries: one shape. Its frame
/// is written by hand in `message_frame.rs`, which takes every field.
#[derive(Serialize)]
pub(crate) struct MessageView<'a> {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub message_id: &'a str,
    pub seq: u64,
    pub user: &'a UserName,
    pub content: &'a str,
    pub timestamp: &'a str,
    pub reactions: ReactionsSample<'a>,
    /// Present when `reactions` is a sample: how many people each emoji has.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reaction_counts: Option<ReactionCounts<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attachment: Option<&'a Attachment>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub edited_at: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_id: Option<&'a str>,
}

impl<'a> MessageView<'a> {
    pub(crate) fn of(kind: &'static str, m: &'a StoredMessage, client_id: Option<&'a str>) -> Self {
        let reactions = ReactionsSample::of(&m.reactions);
        Self {
            kind,
            message_id: &m.id,
            seq: m.seq,
            user: &m.user,
            content: &m.content,
            timestamp: &m.timestamp,
            reaction_counts: reactions.counts(),
            reactions,
            attachment: m.attachment.as_ref(),
            edited_at: m.edited_at.as_deref(),
            client_id,
        }
    }
}

/// Every event other than the message-shaped ones.
#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(crate) enum Event<'a> {
    Welcome {
        room: &'a RoomName,
        user: &'a UserName,
        online: Vec<&'a UserName>,
        online_count: usize,
        history: Vec<MessageView<'a>>,
        gap: bool,
        last_seq: u64,
        limits: &'a Limits,
        /// A new identity claim, to this connection only (open mode, when it
        /// came without one).
        #[serde(skip_serializing_if = "Option::is_none")]
        claim: Option<&'a str>,
    },
    Join {
        user: &'a UserName,
        online_count: usize,
        #[serde(skip_serializing_if = "Option::is_none")]
        online: Option<Vec<&'a UserName>>,
    },
    Leave {
        user: &'a UserName,
        online_count: usize,
        #[serde(skip_serializing_if = "Option::is_none")]
        online: Option<Vec<&'a UserName>>,
    },
    ReactionUpdate {
        message_id: &'a str,
        emoji: &'a Emoji,
        user: &'a UserName,
        action: &'static str,
        /// People on this emoji now.
        count: usize,
        /// Their names: all of them while the message's reactions fit
        /// whole, else the first few.
        users: &'a [UserName],
        /// All of the message's reactions, only while they fit whole: a
        /// change costs what it changes, not what the message holds.
        #[serde(skip_serializing_if = "Option::is_none")]
        reactions: Option<&'a Reactions>,
    },
    /// The whole reactions of one message, to the connection that asked.
    Reactions {
        message_id: &'a str,
        reactions: &'a Reactions,
    },
    MessageDeleted {
        message_id: &'a str,
        seq: u64,
    },
    Typing {
        user: &'a UserName,
    },
    Presence {
        online: Vec<&'a UserName>,
        online_count: usize,
    },
}

impl<'a> Event<'a> {
    /// The `reaction_update` for `user`'s change of `emoji`, given the
    /// message's reactions after it.
    pub(crate) fn reaction_update(
        message_id: &'a str,
        emoji: &'a Emoji,
        (user, added): (&'a UserName, bool),
        reactions: &'a Reactions,
    ) -> Self {
        let users = reactions.users(emoji);
        let whole = reactions.fit_whole();
        Event::ReactionUpdate {
            message_id,
            emoji,
            user,
            action: if added { "add" } else { "remove" },
            count: users.len(),
            users: if whole {
                users
            } else {
                &users[..users.len().min(REACTION_SAMPLE)]
            },
            reactions: whole.then_some(reactions),
        }
    }
}

/// Why a request was refused: the `code` of an `error` event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// The frame is not a JSON object.
    BadJson,
    /// The `type` is not one roomcast knows.
    UnknownType,
    /// A field is missing or has the wrong shape.
    InvalidField,
    /// Content over the length limit.
    TooLong,
    /// No such message in the room's history.
    UnknownMessage,
    /// Only the author may do that.
    Forbidden,
    /// Over the per-connection rate.
    RateLimited,
    /// The message already has the most distinct emoji allowed.
    TooManyReactions,
    /// The attachment does not name an upload of this server.
    BadAttachment,
    /// Binary frames are not part of the protocol.
    Unsupported,
    /// The shared backbone (Redis) or the history store is down or
    /// overloaded; try again.
    Unavailable,
    /// The name is held by another identity in this room.
    NameTaken,
    /// A token was refused (the `auth` request).
    Unauthorized,
}

impl ErrorCode {
    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::BadJson => "bad_json",
            Self::UnknownType => "unknown_type",
            Self::InvalidField => "invalid_field",
            Self::TooLong => "too_long",
            Self::UnknownMessage => "unknown_message",
            Self::Forbidden => "forbidden",
            Self::RateLimited => "rate_limited",
            Self::TooManyReactions => "too_many_reactions",
            Self::BadAttachment => "bad_attachment",
            Self::Unsupported => "unsupported",
            Self::Unavailable => "unavailable",
            Self::NameTaken => "name_taken",
            Self::Unauthorized => "unauthorized",
        }
    }
}

/// A refused request: sent back to its sender as an `error` event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The error code.
    pub code: ErrorCode,
    /// A sentence saying what was wrong and what to do.
    pub message: String,
}

impl Refusal {
    /// A refusal with `code` and `message`.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    /// The `error` event frame for this refusal, with the request's `type`.
    pub fn frame(&self, reference: Option<&str>) -> super::Frame {
        self.frame_about(reference, None, None)
    }

    /// The `error` event frame for this refusal, with the request's `type`,
    /// the `message_id` it was about and a post's `client_id`: for a
    /// refusal that may overtake answers to earlier requests.
    pub fn frame_about(
        &self,
        reference: Option<&str>,
        message_id: Option<&str>,
        client_id: Option<&str>,
    ) -> super::Frame {
        #[derive(Serialize)]
        struct ErrorEvent<'a> {
            #[serde(rename = "type")]
            kind: &'static str,
            code: &'static str,
            message: &'a str,
            #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
            reference: Option<&'a str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            message_id: Option<&'a str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            client_id: Option<&'a str>,
        }
        super::frame::json(&ErrorEvent {
            kind: "error",
            code: self.code.as_str(),
            message: &self.message,
            reference,
            message_id,
            client_id,
        })
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code.as_str(), self.message)
    }
}

impl std::error::Error for Refusal {}
