//! Client → server requests: untrusted JSON text in, typed and validated
//! [`Request`]s out. Every check of a request's shape and limits happens
//! here, once; the hub receives only values it can use as they are.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use crate::hub::{Emoji, ErrorCode, ReactionAction, Refusal};

/// Longest `client_id` and `message_id` a client may send, in characters.
const MAX_ID_CHARS: usize = 64;

/// A validated request.
#[derive(Debug, PartialEq, Eq)]
pub enum Request {
    /// Post a message; the attachment URL is checked against the uploads later.
    Message {
        /// Plain text, within the length limit (may be blank with an attachment).
        content: String,
        /// `attachment.url` as sent.
        attachment_url: Option<String>,
        /// Echoed back in the broadcast so the sender can match it.
        client_id: Option<String>,
    },
    /// Add, remove or toggle a reaction.
    React {
        /// The message reacted to.
        message_id: String,
        /// The emoji.
        emoji: Emoji,
        /// What to do.
        action: ReactionAction,
        /// The request's `type` as sent (`add_reaction`, `remove_reaction`
        /// or `reaction`): the `ref` of an error about it.
        kind: &'static str,
    },
    /// Replace one's own message.
    Edit {
        /// The message.
        message_id: String,
        /// The new text.
        content: String,
    },
    /// Delete one's own message.
    Delete {
        /// The message.
        message_id: String,
    },
    /// Fetch one message's whole reactions (events carry a sample once
    /// they are large).
    Reactions {
        /// The message.
        message_id: String,
    },
    /// Tell the others one is typing.
    Typing,
    /// Ask who is online.
    Presence,
    /// Ask for a `pong`.
    Ping,
    /// Renew this connection's token in place (token mode).
    Auth {
        /// The new token (at most [`crate::auth::jwt::MAX_TOKEN_BYTES`]).
        token: String,
    },
}

/// A refused request, with its `type` when it was readable (the error's `ref`).
#[derive(Debug, PartialEq, Eq)]
pub struct Rejected {
    /// What to tell the client.
    pub refusal: Refusal,
    /// The request's `type`, if known.
    pub kind: Option<String>,
}

fn invalid(message: impl Into<String>) -> Refusal {
    Refusal::new(ErrorCode::InvalidField, message)
}

/// A visitor's answers to a boolean, a number or an array (read through):
/// `$other`, whatever the value.
macro_rules! visit_other_values {
    ($de:lifetime, $other:expr) => {
        fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
            Ok($other)
        }
        fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
            Ok($other)
        }
        fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
            Ok($other)
        }
        fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
            Ok($other)
        }
        fn visit_seq<A: SeqAccess<$de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            while seq.next_element::<IgnoredAny>()?.is_some() {}
            Ok($other)
        }
    };
}

/// One field of a request as sent. Read straight from the text, without
/// building a tree of JSON values first: a map of owned keys and values
/// per request was 30 % of the instructions handling a post took
/// (docs/BENCHMARKS.md, issue 15, "What a delivery costs in user space").
#[derive(Default)]
enum Field<'a> {
    /// Absent or `null`.
    #[default]
    Absent,
    /// A string: borrowed from the text unless it had escapes.
    Str(Cow<'a, str>),
    /// Any other value (a number, a boolean, an array, an object).
    Other,
}

impl<'de> Deserialize<'de> for Field<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct FieldVisitor;
        impl<'de> Visitor<'de> for FieldVisitor {
            type Value = Field<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Field::Str(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Field::Str(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(Field::Str(Cow::Owned(v)))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(Field::Absent)
            }
            fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(Field::Absent)
            }
            visit_other_values!('de, Field::Other);
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Field::Other)
            }
        }
        d.deserialize_any(FieldVisitor)
    }
}

/// A request's `attachment` as sent.
#[derive(Default)]
enum AttachmentField<'a> {
    /// Absent or `null`.
    #[default]
    Absent,
    /// An object, with its `url` field.
    Object(Field<'a>),
    /// Anything else.
    Other,
}

impl<'de> Deserialize<'de> for AttachmentField<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct AttachmentVisitor;
        impl<'de> Visitor<'de> for AttachmentVisitor {
            type Value = AttachmentField<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut url = Field::Absent;
                while let Some(key) = map.next_key::<Field<'de>>()? {
                    match key {
                        Field::Str(k) if k == "url" => url = map.next_value()?,
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(AttachmentField::Object(url))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(AttachmentField::Absent)
            }
            fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(AttachmentField::Absent)
            }
            fn visit_borrowed_str<E: de::Error>(self, _: &'de str) -> Result<Self::Value, E> {
                Ok(AttachmentField::Other)
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
                Ok(AttachmentField::Other)
            }
            visit_other_values!('de, AttachmentField::Other);
        }
        d.deserialize_any(AttachmentVisitor)
    }
}

/// The fields of a request object any request type reads; others are
/// skipped. A field given twice counts as its last value.
#[derive(Default)]
struct Fields<'a> {
    kind: Field<'a>,
    content: Field<'a>,
    client_id: Field<'a>,
    message_id: Field<'a>,
    emoji: Field<'a>,
    action: Field<'a>,
    token: Field<'a>,
    attachment: AttachmentField<'a>,
}

/// A request's text: an object's fields, or not an object at all.
struct Raw<'a>(Option<Fields<'a>>);

impl<'de> Deserialize<'de> for Raw<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct RawVisitor;
        impl<'de> Visitor<'de> for RawVisitor {
            type Value = Raw<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut f = Fields::default();
                while let Some(key) = map.next_key::<Field<'de>>()? {
                    let slot = match &key {
                        Field::Str(k) => match k.as_ref() {
                            "type" => &mut f.kind,
                            "content" => &mut f.content,
                            "client_id" => &mut f.client_id,
                            "message_id" => &mut f.message_id,
                            "emoji" => &mut f.emoji,
                            "action" => &mut f.action,
                            "token" => &mut f.token,
                            "attachment" => {
                                f.attachment = map.next_value()?;
                                continue;
                            }
                            _ => {
                                map.next_value::<IgnoredAny>()?;
                                continue;
                            }
                        },
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                            continue;
                        }
                    };
                    *slot = map.next_value()?;
                }
                Ok(Raw(Some(f)))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(Raw(None))
            }
            fn visit_borrowed_str<E: de::Error>(self, _: &'de str) -> Result<Self::Value, E> {
                Ok(Raw(None))
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
                Ok(Raw(None))
            }
            visit_other_values!('de, Raw(None));
        }
        d.deserialize_any(RawVisitor)
    }
}

fn string_field<'a>(field: &'a Field<'_>, name: &str) -> Result<Option<&'a str>, Refusal> {
    match field {
        Field::Absent => Ok(None),
        Field::Str(s) => Ok(Some(s)),
        Field::Other => Err(invalid(format!("`{name}` must be a string"))),
    }
}

fn required<'a>(field: &'a Field<'_>, name: &str) -> Result<&'a str, Refusal> {
    string_field(field, name)?.ok_or_else(|| invalid(format!("`{name}` is required")))
}

fn message_id(obj: &Fields<'_>) -> Result<String, Refusal> {
    let id = required(&obj.message_id, "message_id")?;
    if id.is_empty() || id.chars().count() > MAX_ID_CHARS {
        return Err(invalid(format!(
            "`message_id` must be 1–{MAX_ID_CHARS} characters"
        )));
    }
    Ok(id.to_owned())
}

/// Checks a message's length; blank content is the caller's decision.
fn content(obj: &Fields<'_>, max_chars: usize) -> Result<Option<String>, Refusal> {
    let Some(text) = string_field(&obj.content, "content")? else {
        return Ok(None);
    };
    let chars = text.chars().count();
    if chars > max_chars {
        return Err(Refusal::new(
            ErrorCode::TooLong,
            format!("message is {chars} characters; the limit is {max_chars}"),
        ));
    }
    no_nul(text, "content")?;
    Ok(Some(text.to_owned()))
}

/// Refuses U+0000 in text that is kept: it means nothing in a chat, and
/// PostgreSQL cannot store it in a `TEXT` column (a post the room was
/// shown would then be missing from the store).
fn no_nul(text: &str, name: &str) -> Result<(), Refusal> {
    match text.contains('\0') {
        true => Err(invalid(format!("`{name}` must not contain U+0000 (NUL)"))),
        false => Ok(()),
    }
}

fn emoji(obj: &Fields<'_>) -> Result<Emoji, Refusal> {
    Emoji::parse(required(&obj.emoji, "emoji")?).map_err(|e| invalid(e.to_string()))
}

fn parse_kind(kind: &str, obj: &Fields<'_>, max_chars: usize) -> Result<Request, Refusal> {
    Ok(match kind {
        "message" => {
            let attachment_url = match &obj.attachment {
                AttachmentField::Absent => None,
                AttachmentField::Object(url) => Some(required(url, "url").map_err(|_| {
                    invalid("`attachment` must be {\"url\": \"/uploads/…\"} as returned by POST /upload")
                })?),
                AttachmentField::Other => {
                    return Err(invalid("`attachment` must be an object with a `url`"));
                }
            };
            let content = content(obj, max_chars)?.unwrap_or_default();
            if content.trim().is_empty() && attachment_url.is_none() {
                return Err(invalid("`content` must not be blank"));
            }
            let client_id = string_field(&obj.client_id, "client_id")?;
            if client_id.is_some_and(|c| c.chars().count() > MAX_ID_CHARS) {
                return Err(invalid(format!(
                    "`client_id` must be at most {MAX_ID_CHARS} characters"
                )));
            }
            client_id.map_or(Ok(()), |c| no_nul(c, "client_id"))?;
            Request::Message {
                content,
                attachment_url: attachment_url.map(str::to_owned),
                client_id: client_id.map(str::to_owned),
            }
        }
        "add_reaction" | "remove_reaction" | "reaction" => {
            let (action, kind) = match kind {
                "add_reaction" => (ReactionAction::Add, "add_reaction"),
                "remove_reaction" => (ReactionAction::Remove, "remove_reaction"),
                // The original client sent `reaction` without an action and
                // meant a toggle; keep it working.
                _ => match string_field(&obj.action, "action")? {
                    None | Some("toggle") => (ReactionAction::Toggle, "reaction"),
                    Some("add") => (ReactionAction::Add, "reaction"),
                    Some("remove") => (ReactionAction::Remove, "reaction"),
                    Some(other) => {
                        return Err(invalid(format!(
                            "`action` must be add, remove or toggle, not {other:?}"
                        )));
                    }
                },
            };
            Request::React {
                message_id: message_id(obj)?,
                emoji: emoji(obj)?,
                action,
                kind,
            }
        }
        "edit" => {
            let content =
                content(obj, max_chars)?.ok_or_else(|| invalid("`content` is required"))?;
            Request::Edit {
                message_id: message_id(obj)?,
                content,
            }
        }
        "delete" => Request::Delete {
            message_id: message_id(obj)?,
        },
        "reactions" => Request::Reactions {
            message_id: message_id(obj)?,
        },
        "auth" => {
            let token = required(&obj.token, "token")?;
            if token.len() > crate::auth::jwt::MAX_TOKEN_BYTES {
                return Err(invalid(format!(
                    "`token` is {} bytes; the limit is {}",
                    token.len(),
                    crate::auth::jwt::MAX_TOKEN_BYTES
                )));
            }
            Request::Auth {
                token: token.to_owned(),
            }
        }
        "typing" => Request::Typing,
        "presence" => Request::Presence,
        "ping" => Request::Ping,
        other => {
            let shown: String = other.chars().take(32).collect();
            return Err(Refusal::new(
                ErrorCode::UnknownType,
                format!("unknown request type {shown:?}"),
            ));
        }
    })
}

/// What a refusal that parses nothing else of a request (the rate
/// limit's) says it refused: its `type` (at most 32 bytes), the
/// `message_id` it is about (1–64 characters) and a post's `client_id`
/// (at most 64), each if the frame is an object with such a string.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Named {
    /// The request's `type`: the refusal's `ref`.
    pub kind: Option<String>,
    /// The message it is about: the refusal's `message_id`.
    pub message_id: Option<String>,
    /// A post's `client_id` (at most 64 characters): the refusal's.
    pub client_id: Option<String>,
}

/// Reads [`Named`] of a refused frame.
pub fn named(text: &str) -> Named {
    let Ok(Raw(Some(obj))) = serde_json::from_str::<Raw<'_>>(text) else {
        return Named::default();
    };
    let kind = match &obj.kind {
        Field::Str(kind) if kind.len() <= 32 => Some(kind.to_string()),
        _ => None,
    };
    let client_id = match &obj.client_id {
        Field::Str(c) if kind.is_some() && c.chars().count() <= MAX_ID_CHARS => Some(c.to_string()),
        _ => None,
    };
    Named {
        message_id: kind.as_ref().and_then(|_| message_id(&obj).ok()),
        client_id,
        kind,
    }
}

/// Parses one text frame.
pub fn parse(text: &str, max_chars: usize) -> Result<Request, Rejected> {
    let obj = match serde_json::from_str::<Raw<'_>>(text) {
        Ok(Raw(Some(obj))) => obj,
        Ok(Raw(None)) => {
            return Err(Rejected {
                refusal: Refusal::new(
                    ErrorCode::BadJson,
                    "a request must be a JSON object with a `type`",
                ),
                kind: None,
            });
        }
        Err(e) => {
            return Err(Rejected {
                refusal: Refusal::new(ErrorCode::BadJson, format!("not valid JSON: {e}")),
                kind: None,
            });
        }
    };
    let Field::Str(kind) = &obj.kind else {
        return Err(Rejected {
            refusal: invalid("`type` is required and must be a string"),
            kind: None,
        });
    };
    parse_kind(kind, &obj, max_chars).map_err(|refusal| Rejected {
        refusal,
        kind: (kind.len() <= 32).then(|| kind.to_string()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(text: &str) -> ErrorCode {
        parse(text, 10).unwrap_err().refusal.code
    }

    #[test]
    fn requests_parse_into_types() {
        assert_eq!(
            parse(
                r#"{"type":"message","content":"hi","client_id":"c1","extra":1}"#,
                10
            )
            .unwrap(),
            Request::Message {
                content: "hi".into(),
                attachment_url: None,
                client_id: Some("c1".into())
            }
        );
        assert!(matches!(
            parse(r#"{"type":"reaction","message_id":"m","emoji":"👍"}"#, 10).unwrap(),
            Request::React {
                action: ReactionAction::Toggle,
                ..
            }
        ));
        assert_eq!(parse(r#"{"type":"ping"}"#, 10).unwrap(), Request::Ping);
    }

    #[test]
    fn every_refusal_has_its_code() {
        assert_eq!(code("{"), ErrorCode::BadJson);
        assert_eq!(code("[1]"), ErrorCode::BadJson);
        assert_eq!(code(r#"{"content":"x"}"#), ErrorCode::InvalidField);
        assert_eq!(code(r#"{"type":"dance"}"#), ErrorCode::UnknownType);
        assert_eq!(
            code(r#"{"type":"message","content":"   "}"#),
            ErrorCode::InvalidField
        );
        assert_eq!(
            code(r#"{"type":"message","content":5}"#),
            ErrorCode::InvalidField
        );
        assert_eq!(
            code(r#"{"type":"message","content":"12345678901"}"#),
            ErrorCode::TooLong
        );
        assert_eq!(
            code(r#"{"type":"add_reaction","message_id":"m","emoji":"a b"}"#),
            ErrorCode::InvalidField
        );
        assert_eq!(
            code(r#"{"type":"reaction","message_id":"m","emoji":"x","action":"zap"}"#),
            ErrorCode::InvalidField
        );
        assert_eq!(
            code(r#"{"type":"edit","message_id":"m"}"#),
            ErrorCode::InvalidField
        );
        assert_eq!(
            code(r#"{"type":"message","content":"x","attachment":"u"}"#),
            ErrorCode::InvalidField
        );
    }

    #[test]
    fn fields_are_read_whatever_else_the_object_holds() {
        // Escapes, unknown fields of every kind, nesting, a repeated field
        // (its last value counts), an attachment with more than its url.
        assert_eq!(
            parse(
                r#"{"x":{"a":[1,{"b":null}]},"content":"first","type":"message",
                    "content":"tab\there \u00e9","n":-1.5e3,"t":true,
                    "attachment":{"name":"a.png","url":"/uploads/a.png"}}"#,
                20
            )
            .unwrap(),
            Request::Message {
                content: "tab\there é".into(),
                attachment_url: Some("/uploads/a.png".into()),
                client_id: None
            }
        );
        assert_eq!(
            parse(r#"{"type":"message","content":"hi","client_id":null}"#, 10).unwrap(),
            Request::Message {
                content: "hi".into(),
                attachment_url: None,
                client_id: None
            }
        );
        assert_eq!(code(r#"{"type":null}"#), ErrorCode::InvalidField);
        assert_eq!(code(r#"{"type":["message"]}"#), ErrorCode::InvalidField);
        assert_eq!(code(r#""message""#), ErrorCode::BadJson);
        assert_eq!(code("null"), ErrorCode::BadJson);
        assert_eq!(code(r#"{"type":"ping"} x"#), ErrorCode::BadJson);
        assert_eq!(
            code(r#"{"type":"message","content":"x","attachment":{"url":5}}"#),
            ErrorCode::InvalidField
        );
        assert_eq!(
            code(r#"{"type":"message","content":"x","attachment":[]}"#),
            ErrorCode::InvalidField
        );
        assert_eq!(
            code(r#"{"type":"edit","message_id":"m","content":{"a":1}}"#),
            ErrorCode::InvalidField
        );
        let unknown = parse(r#"{"type":"d\u0061nce"}"#, 10).unwrap_err();
        assert_eq!(unknown.refusal.code, ErrorCode::UnknownType);
        assert_eq!(unknown.kind.as_deref(), Some("dance"));
    }

    #[test]
    fn a_refusal_that_parses_nothing_else_reads_the_kind_and_message_id() {
        let named_as = |text: &str| {
            let n = named(text);
            (n.kind, n.message_id)
        };
        let post = named(r#"{"type":"message","content":"hi","client_id":"c-1"}"#);
        assert_eq!(post.client_id.as_deref(), Some("c-1"));
        let long_client = format!(r#"{{"type":"message","client_id":"{}"}}"#, "c".repeat(65));
        assert_eq!(named(&long_client).client_id, None);
        assert_eq!(
            named_as(r#"{"content":"hi","type":"edit","message_id":"m-7"}"#),
            (Some("edit".into()), Some("m-7".into()))
        );
        assert_eq!(
            named_as(r#"{"type":"m\u0065ssage"}"#),
            (Some("message".into()), None)
        );
        assert_eq!(
            named_as(r#"{"type":"a","type":"b"}"#).0.as_deref(),
            Some("b")
        );
        let long_id = format!(r#"{{"type":"edit","message_id":"{}"}}"#, "x".repeat(65));
        for (text, kind) in [
            (r#"{"type":"edit","message_id":5}"#, Some("edit")),
            (r#"{"type":"edit","message_id":""}"#, Some("edit")),
            (long_id.as_str(), Some("edit")),
            (r#"{"message_id":"m-7"}"#, None),
        ] {
            assert_eq!(named_as(text), (kind.map(str::to_owned), None), "{text}");
        }
        for nothing in [
            r#"{"type":5}"#,
            r#"["message"]"#,
            "not json",
            r#"{"type":"message""#,
        ] {
            assert_eq!(named(nothing), Named::default(), "{nothing}");
        }
        let long = format!(r#"{{"type":"{}"}}"#, "x".repeat(33));
        assert_eq!(named(&long).kind, None, "longer than 32 bytes");
    }

    #[test]
    fn blank_content_is_fine_with_an_attachment() {
        let r = parse(
            r#"{"type":"message","content":"","attachment":{"url":"/uploads/x.png"}}"#,
            10,
        )
        .unwrap();
        assert!(matches!(
            r,
            Request::Message {
                attachment_url: Some(_),
                ..
            }
        ));
    }

    #[test]
    fn length_counts_characters_not_bytes() {
        assert!(
            parse(
                &format!(r#"{{"type":"message","content":"{}"}}"#, "é".repeat(10)),
                10
            )
            .is_ok()
        );
    }
}
