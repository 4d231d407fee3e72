//! The frame of a `message`-shaped event (`message`, `message_updated`),
//! written by hand: every post's broadcast is one, so its JSON is built
//! with [`super::json_text`] rather than serde_json's serializer, into one
//! allocation sized for it. Byte for byte what serde_json makes of
//! [`MessageView`] (the tests below compare the two), which the rest of
//! the hub still serializes with serde (history pages, `welcome`).

use serde::Serialize;

use super::event::MessageView;
use super::frame::{self, Frame};
use super::json_text::{push_key, push_str, push_u64};

/// The frame of `view`.
pub(crate) fn message(view: &MessageView<'_>) -> Frame {
    // The fixed part (keys, seq, an empty reactions map) is under 128
    // bytes; the rest is the strings, each quoted.
    let strings = [
        Some(view.message_id),
        Some(view.user.as_str()),
        Some(view.content),
        Some(view.timestamp),
        view.edited_at,
        view.client_id,
    ];
    let capacity = 128
        + strings
            .iter()
            .flatten()
            .map(|s| s.len() + 24)
            .sum::<usize>();
    frame::text_written(capacity, |out| write(out, view))
}

/// Every field of the view, in its declaration order (serde's): taken
/// apart whole, so a field added to [`MessageView`] does not compile here
/// until it is written.
fn write(out: &mut String, v: &MessageView<'_>) {
    let MessageView {
        kind,
        message_id,
        seq,
        user,
        content,
        timestamp,
        reactions,
        reaction_counts,
        attachment,
        edited_at,
        client_id,
    } = v;
    out.push_str("{\"type\":");
    push_str(out, kind);
    push_key(out, "message_id");
    push_str(out, message_id);
    push_key(out, "seq");
    push_u64(out, *seq);
    push_key(out, "user");
    push_str(out, user.as_str());
    push_key(out, "content");
    push_str(out, content);
    push_key(out, "timestamp");
    push_str(out, timestamp);
    push_key(out, "reactions");
    if reactions.is_empty() {
        out.push_str("{}");
    } else {
        push_serde(out, reactions);
    }
    if let Some(counts) = reaction_counts {
        push_key(out, "reaction_counts");
        push_serde(out, counts);
    }
    if let Some(attachment) = attachment {
        push_key(out, "attachment");
        push_serde(out, attachment);
    }
    if let Some(edited_at) = edited_at {
        push_key(out, "edited_at");
        push_str(out, edited_at);
    }
    if let Some(client_id) = client_id {
        push_key(out, "client_id");
        push_str(out, client_id);
    }
    out.push('}');
}

/// Appends what serde_json makes of `value` (reactions and attachments:
/// most messages have none).
fn push_serde<T: Serialize + ?Sized>(out: &mut String, value: &T) {
    // Our event types are strings, numbers, maps with string keys and
    // sequences: serde_json cannot fail on them.
    out.push_str(&serde_json::to_string(value).expect("events always serialize"));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::event::Reaction;
    use crate::hub::{
        Attachment, AttachmentPreview, Emoji, Identity, Reactions, StoredMessage, UserName,
    };

    fn stored(content: &str) -> StoredMessage {
        StoredMessage {
            id: "0a1b2c3d00000001".into(),
            seq: 42,
            user: UserName::parse("ana \"the\" \\ one").unwrap(),
            identity: Identity::named("ana"),
            content: content.into(),
            timestamp: "2026-12-05T21:26:35.123Z".into(),
            reactions: Reactions::default(),
            attachment: None,
            edited_at: None,
            client_id: None,
        }
    }

    /// 👍 from each of `users`.
    fn reactions(users: &[&str]) -> Reactions {
        let users: Vec<UserName> = users.iter().map(|u| UserName::parse(u).unwrap()).collect();
        Reactions(vec![Reaction {
            emoji: Emoji::parse("👍").unwrap(),
            who: users.iter().map(|u| Identity::named(u.as_str())).collect(),
            users,
        }])
    }

    /// The frame's payload, after a header of 2, 4 or 10 bytes.
    fn payload(frame: &Frame) -> &[u8] {
        match frame[1] & 0x7f {
            127 => &frame[10..],
            126 => &frame[4..],
            _ => &frame[2..],
        }
    }

    fn assert_as_serde(view: &MessageView<'_>) {
        let ours = message(view);
        let theirs = frame::json(view);
        assert_eq!(
            ours,
            theirs,
            "{}",
            String::from_utf8_lossy(payload(&theirs))
        );
    }

    #[test]
    fn a_message_frame_is_what_serde_json_makes_of_it() {
        let plain = stored("hello, room");
        assert_as_serde(&MessageView::of("message", &plain, None));

        let mut full = stored("tab\t, quote \", newline \n, 你好 🎉");
        full.seq = u64::MAX;
        full.edited_at = Some("2026-12-05T21:30:00.000Z".into());
        full.attachment = Some(Attachment {
            url: "/uploads/abc.png".into(),
            name: "a \"pic\".png".into(),
            size: 1234,
            content_type: "image/png".into(),
            preview: Some(AttachmentPreview {
                url: "/uploads/abc-preview.webp".into(),
                width: 320,
                height: 200,
            }),
        });
        full.reactions = reactions(&["bo", "cy\"", "dee"]);
        assert_as_serde(&MessageView::of("message_updated", &full, Some("c-1\\")));

        // Reactions too big to send whole: a sample and the counts.
        let mut popular = stored("");
        let many: Vec<String> = (0..200).map(|i| format!("user-{i}")).collect();
        popular.reactions = reactions(&many.iter().map(String::as_str).collect::<Vec<_>>());
        let view = MessageView::of("message", &popular, None);
        assert!(view.reaction_counts.is_some());
        assert_as_serde(&view);

        // Longer payloads take longer headers: over 125 bytes, over 65 535.
        let medium = stored(&"x".repeat(300));
        assert_as_serde(&MessageView::of("message", &medium, None));
        let long = stored(&"x".repeat(70_000));
        assert_as_serde(&MessageView::of("message", &long, None));
    }
}
