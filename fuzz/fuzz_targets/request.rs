//! A client's text frame (`src/ws/protocol.rs`): whatever it holds, it is
//! refused, or read into a request within the limits the protocol states
//! and with the values the JSON holds (checked against serde_json's own
//! reading of the same text); a refusal names only what it may.
#![no_main]

use libfuzzer_sys::fuzz_target;
use roomcast::ws::protocol::{Request, named, parse};
use serde_json::Value;

/// Small, so that inputs reach the limit.
const MAX_CHARS: usize = 40;
/// `message_id` and `client_id`.
const MAX_ID_CHARS: usize = 64;

fn chars(s: &str) -> usize {
    s.chars().count()
}

/// The string field `name` of `obj` as serde_json reads it.
fn field<'a>(obj: &'a serde_json::Map<String, Value>, name: &str) -> Option<&'a str> {
    obj.get(name).and_then(Value::as_str)
}

fuzz_target!(|text: &str| {
    let read = parse(text, MAX_CHARS);
    let tree: Option<Value> = serde_json::from_str(text).ok();
    if let Ok(request) = &read {
        let Some(Value::Object(obj)) = &tree else {
            panic!("read {request:?} from what is not a JSON object: {text:?}");
        };
        let kind = field(obj, "type").expect("a request read has a string `type`");
        let id_ok = |id: &str| {
            assert!((1..=MAX_ID_CHARS).contains(&chars(id)), "{id:?}");
            assert_eq!(Some(id), field(obj, "message_id"));
        };
        match request {
            Request::Message {
                content,
                client_id,
                attachment_url,
            } => {
                assert_eq!(kind, "message");
                assert!(chars(content) <= MAX_CHARS && !content.contains('\0'));
                assert!(!content.trim().is_empty() || attachment_url.is_some());
                assert_eq!(content, field(obj, "content").unwrap_or_default());
                if let Some(c) = client_id {
                    assert!(chars(c) <= MAX_ID_CHARS && !c.contains('\0'));
                }
                assert_eq!(client_id.as_deref(), field(obj, "client_id"));
            }
            Request::Edit {
                message_id,
                content,
            } => {
                assert_eq!(kind, "edit");
                id_ok(message_id);
                assert!(chars(content) <= MAX_CHARS && !content.contains('\0'));
                assert_eq!(Some(content.as_str()), field(obj, "content"));
            }
            Request::React {
                message_id,
                emoji,
                kind: named_kind,
                ..
            } => {
                assert_eq!(kind, *named_kind);
                id_ok(message_id);
                assert_eq!(Some(emoji.as_str()), field(obj, "emoji"));
            }
            Request::Delete { message_id } | Request::Reactions { message_id } => id_ok(message_id),
            Request::Auth { token } => assert_eq!(Some(token.as_str()), field(obj, "token")),
            Request::Typing | Request::Presence | Request::Ping => {}
        }
    }
    if let Err(rejected) = &read {
        assert!(rejected.kind.as_ref().is_none_or(|k| k.len() <= 32));
    }
    let named = named(text);
    assert!(named.kind.as_ref().is_none_or(|k| k.len() <= 32));
    if named.kind.is_none() {
        assert!(named.message_id.is_none() && named.client_id.is_none());
    }
    assert!(
        named
            .message_id
            .as_ref()
            .is_none_or(|id| (1..=MAX_ID_CHARS).contains(&chars(id)))
    );
    assert!(
        named
            .client_id
            .as_ref()
            .is_none_or(|c| chars(c) <= MAX_ID_CHARS)
    );
    if let (Some(kind), Some(Value::Object(obj))) = (&named.kind, &tree) {
        assert_eq!(Some(kind.as_str()), field(obj, "type"));
    }
});
