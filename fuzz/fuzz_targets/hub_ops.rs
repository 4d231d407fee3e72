//! The hub (`src/hub/`) under any sequence of what connections may do:
//! join (or resume), leave, post (retries by `client_id` too), edit,
//! delete, react, ask for reactions, presence and pages, type; and what the
//! server does on its own: sweep empty rooms, trim history to its memory.
//! Small limits, so that rings wrap, queues fill and caps are reached.
//!
//! What must hold after every step: no panic; what the hub keeps is what
//! was posted, with each change that was accepted and none that was
//! refused (a model kept here: every message's author, text, and whether
//! it was deleted); an edit or delete is accepted only from the author (or
//! a moderator, for deletes); seqs only grow; reactions stay within their
//! caps; and every frame a connection is sent is a well-formed WebSocket
//! frame whose text is a JSON object with a `type`.
#![no_main]

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use roomcast::hub::{
    Emoji, Hub, HubConfig, Identity, Joining, Member, ReactionAction, RoomName, UserName,
};

const ROOMS: [&str; 2] = ["lobby", "den"];
const NAMES: [&str; 3] = ["ann", "bob", "cy"];
const EMOJI: [&str; 4] = ["👍", "❤️", "x", "🎉"];
const SLOTS: usize = 6;
const HISTORY: usize = 6;
const MAX_EMOJI: usize = 3;
const MAX_USERS: usize = 2;

#[derive(Arbitrary, Debug)]
enum Op {
    Join {
        slot: u8,
        room: u8,
        after: Option<u8>,
        moderator: bool,
    },
    Leave {
        slot: u8,
    },
    Post {
        slot: u8,
        text: String,
        client: Option<u8>,
    },
    Edit {
        slot: u8,
        target: u8,
        text: String,
    },
    Delete {
        slot: u8,
        target: u8,
    },
    React {
        slot: u8,
        target: u8,
        emoji: u8,
        action: u8,
    },
    Reactions {
        slot: u8,
        target: u8,
    },
    Moderator {
        slot: u8,
        on: bool,
    },
    Typing {
        slot: u8,
    },
    Presence {
        slot: u8,
    },
    Page {
        room: u8,
        before: Option<u8>,
        limit: u8,
    },
    Sweep,
    Trim,
}

/// One message as the model knows it.
#[derive(Debug)]
struct Known {
    id: String,
    seq: u64,
    author: String,
    content: String,
    deleted: bool,
}

#[derive(Default, Debug)]
struct Model {
    /// Per room: every message posted, in order.
    rooms: HashMap<&'static str, Vec<Known>>,
    /// Per room, identity and `client_id`: the seq that post got.
    retries: HashMap<(&'static str, String, u8), u64>,
    /// Rooms the hub holds.
    held: HashSet<&'static str>,
    /// Rooms held with no member, in the order they emptied: the order a
    /// trim drops them in.
    empty: Vec<&'static str>,
}

impl Model {
    /// The message `what` (a change the hub accepted) was about: it must
    /// be one that was posted in `room`.
    fn accepted(&mut self, room: &str, id: &str, what: &str) -> &mut Known {
        let mut known = self.rooms.get_mut(room).into_iter().flatten();
        let found = known.find(|k| k.id == id);
        found.unwrap_or_else(|| panic!("{what} of unknown message {id:?} was accepted"))
    }

    /// `room` was dropped: a new room of that name starts afresh.
    fn dropped(&mut self, room: &'static str) {
        self.rooms.remove(room);
        self.retries.retain(|k, _| k.0 != room);
        self.held.remove(room);
        self.empty.retain(|r| *r != room);
    }

    /// Notes which held rooms have members now.
    fn occupancy(&mut self, slots: &[Option<(Member, bool)>]) {
        for room in ROOMS {
            let occupied = slots.iter().flatten().any(|(m, _)| room_of(m) == room);
            if occupied {
                self.empty.retain(|r| *r != room);
            } else if self.held.contains(room) && !self.empty.contains(&room) {
                self.empty.push(room);
            }
        }
    }
}

/// Who a slot is: its name, and an identity that is not always the name's
/// (so that one name can be two people in turn).
fn who(slot: usize) -> (&'static str, String) {
    (NAMES[slot % NAMES.len()], format!("id{}", slot % 4))
}

fn config() -> HubConfig {
    HubConfig {
        history: HISTORY,
        welcome_history: 4,
        max_reactions_per_message: MAX_EMOJI,
        max_users_per_reaction: MAX_USERS,
        outbox_frames: 12,
        history_memory_bytes: 2048,
        empty_room_ttl: Duration::ZERO,
        name_hold_grace: Duration::ZERO,
        ..HubConfig::default()
    }
}

/// A server frame: its payload, after checking its header.
fn payload(frame: &[u8]) -> (u8, &[u8]) {
    assert!(frame.len() >= 2, "a frame of {} bytes", frame.len());
    assert_eq!(
        frame[0] & 0xf0,
        0x80,
        "FIN set, no RSV bits: {:#x}",
        frame[0]
    );
    assert_eq!(frame[1] & 0x80, 0, "a server frame is not masked");
    let (header, len) = match frame[1] & 0x7f {
        126 => (4, usize::from(u16::from_be_bytes([frame[2], frame[3]]))),
        127 => (
            10,
            u64::from_be_bytes(frame[2..10].try_into().unwrap()) as usize,
        ),
        n => (2, usize::from(n)),
    };
    assert_eq!(
        frame.len(),
        header + len,
        "the header's length is the frame's"
    );
    (frame[0] & 0x0f, &frame[header..])
}

async fn drain(member: &Member, known: &HashMap<&'static str, Vec<Known>>) {
    let mut batch = Vec::new();
    while !member.outbox().is_empty() {
        member.outbox().next_batch(&mut batch).await;
    }
    for frame in batch {
        let (opcode, body) = payload(&frame);
        match opcode {
            0x1 => {
                let text = std::str::from_utf8(body).expect("a text frame is UTF-8");
                let value: serde_json::Value = serde_json::from_str(text).expect("JSON");
                let kind = value["type"].as_str().expect("a `type`");
                if kind == "message" {
                    let id = value["message_id"].as_str().expect("a message has an id");
                    let ours = known.values().flatten().any(|k| k.id == id);
                    assert!(ours, "a message frame for an unknown id: {text}");
                }
            }
            0x8..=0xa => {} // close, ping, pong
            other => panic!("opcode {other:#x}"),
        }
    }
}

fn room_of(member: &Member) -> &'static str {
    ROOMS
        .iter()
        .find(|r| **r == member.room().as_str())
        .unwrap()
}

/// The id a request names: one of the room's messages, or one never posted.
fn target(model: &Model, room: &'static str, target: u8) -> String {
    let known = model.rooms.get(room).map(Vec::as_slice).unwrap_or_default();
    match known.get(usize::from(target)) {
        Some(k) => k.id.clone(),
        None => "never-posted".to_owned(),
    }
}

fn check(hub: &Hub, model: &Model) {
    for room in ROOMS {
        let known = model.rooms.get(room).map(Vec::as_slice).unwrap_or_default();
        let kept = hub.history(room);
        assert!(kept.len() <= HISTORY);
        assert!(kept.windows(2).all(|w| w[0].seq < w[1].seq), "seqs grow");
        for m in &kept {
            let k = known
                .iter()
                .find(|k| k.id == m.id.as_str())
                .unwrap_or_else(|| panic!("{room} keeps {:?}, never posted", m.id.as_str()));
            assert!(!k.deleted, "{room} keeps deleted {:?}", k.id);
            assert_eq!((m.seq, m.content.as_str()), (k.seq, k.content.as_str()));
            assert_eq!(m.identity.as_str(), k.author);
            for emoji in EMOJI {
                let emoji = Emoji::parse(emoji).unwrap();
                assert!(m.reactions.users(&emoji).len() <= MAX_USERS);
            }
        }
    }
}

async fn run(ops: Vec<Op>) {
    let hub = Hub::new(config());
    let mut slots: [Option<(Member, bool)>; SLOTS] = Default::default();
    let mut model = Model::default();
    for op in ops.into_iter().take(64) {
        match op {
            Op::Join {
                slot,
                room,
                after,
                moderator,
            } => {
                let slot = usize::from(slot) % SLOTS;
                let (name, identity) = who(slot);
                slots[slot] = None; // a slot's earlier connection leaves first
                let joining = Joining {
                    room: RoomName::parse(ROOMS[usize::from(room) % ROOMS.len()]).unwrap(),
                    user: UserName::parse(name).unwrap(),
                    identity: Identity::from_key(identity),
                    moderator,
                    after: after.map(u64::from),
                    claim: None,
                };
                if let Ok(member) = hub.join_with(joining) {
                    model.held.insert(room_of(&member));
                    slots[slot] = Some((member, moderator));
                }
            }
            Op::Leave { slot } => slots[usize::from(slot) % SLOTS] = None,
            Op::Post { slot, text, client } => {
                let Some((member, _)) = &slots[usize::from(slot) % SLOTS] else {
                    continue;
                };
                let room = room_of(member);
                let author = member.identity().as_str().to_owned();
                let client_id = client.map(|c| format!("c{c}"));
                let posted = member.post(text.clone(), None, client_id.as_deref()).await;
                let Ok(Some(seq)) = posted else { continue };
                let retry_key = client.map(|c| (room, author.clone(), c));
                let earlier = retry_key
                    .as_ref()
                    .and_then(|k| model.retries.get(k))
                    .copied();
                let known = model.rooms.entry(room).or_default();
                if earlier == Some(seq) {
                    // A retry: answered with the first post, nothing new.
                    assert!(known.iter().any(|k| k.seq == seq && k.author == author));
                    continue;
                }
                assert!(
                    known.iter().all(|k| k.seq < seq),
                    "seq {seq} after {known:?}"
                );
                let kept = hub.history(room);
                let m = kept
                    .iter()
                    .find(|m| m.seq == seq)
                    .expect("a new post is kept");
                assert_eq!(
                    (m.content.as_str(), m.identity.as_str()),
                    (text.as_str(), author.as_str())
                );
                known.push(Known {
                    id: m.id.as_str().to_owned(),
                    seq,
                    author,
                    content: text,
                    deleted: false,
                });
                if let Some(key) = retry_key {
                    model.retries.insert(key, seq);
                }
            }
            Op::Edit {
                slot,
                target: t,
                text,
            } => {
                let Some((member, _)) = &slots[usize::from(slot) % SLOTS] else {
                    continue;
                };
                let room = room_of(member);
                let id = target(&model, room, t);
                if member.edit(&id, text.clone()).await.is_ok() {
                    let k = model.accepted(room, &id, "an edit");
                    assert!(!k.deleted, "an edit of a deleted message was accepted");
                    assert_eq!(k.author, member.identity().as_str(), "edited by another");
                    k.content = text;
                }
            }
            Op::Delete { slot, target: t } => {
                let Some((member, moderator)) = &slots[usize::from(slot) % SLOTS] else {
                    continue;
                };
                let room = room_of(member);
                let id = target(&model, room, t);
                if member.delete(&id).await.is_ok() {
                    let k = model.accepted(room, &id, "a delete");
                    assert!(!k.deleted, "deleted twice");
                    assert!(
                        *moderator || k.author == member.identity().as_str(),
                        "deleted by another"
                    );
                    k.deleted = true;
                }
            }
            Op::React {
                slot,
                target: t,
                emoji,
                action,
            } => {
                let Some((member, _)) = &slots[usize::from(slot) % SLOTS] else {
                    continue;
                };
                let room = room_of(member);
                let id = target(&model, room, t);
                let emoji = Emoji::parse(EMOJI[usize::from(emoji) % EMOJI.len()]).unwrap();
                let action = [
                    ReactionAction::Add,
                    ReactionAction::Remove,
                    ReactionAction::Toggle,
                ][usize::from(action) % 3];
                if member.react(&id, emoji, action).await.is_ok() {
                    let known = model.rooms.get(room).map(Vec::as_slice).unwrap_or_default();
                    let k = known.iter().find(|k| k.id == id);
                    assert!(
                        k.is_some_and(|k| !k.deleted),
                        "a reaction to {id:?} was accepted"
                    );
                }
            }
            Op::Reactions { slot, target: t } => {
                let Some((member, _)) = &slots[usize::from(slot) % SLOTS] else {
                    continue;
                };
                let id = target(&model, room_of(member), t);
                let _ = member.reactions(&id).await;
            }
            Op::Moderator { slot, on } => {
                if let Some((member, moderator)) = &mut slots[usize::from(slot) % SLOTS] {
                    member.set_moderator(on);
                    *moderator = on;
                }
            }
            Op::Typing { slot } => {
                if let Some((member, _)) = &slots[usize::from(slot) % SLOTS] {
                    member.typing();
                }
            }
            Op::Presence { slot } => {
                if let Some((member, _)) = &slots[usize::from(slot) % SLOTS] {
                    let _ = member.presence().await;
                }
            }
            Op::Page {
                room,
                before,
                limit,
            } => {
                let room = RoomName::parse(ROOMS[usize::from(room) % ROOMS.len()]).unwrap();
                let limit = usize::from(limit % 8) + 1;
                if let Ok((page, _more)) = hub.page(&room, before.map(u64::from), limit).await {
                    assert!(page.len() <= limit);
                    for entry in page {
                        let _: serde_json::Value = serde_json::from_str(&entry).expect("JSON");
                    }
                }
            }
            Op::Sweep => {
                // With no time to live, every empty room goes.
                let swept = hub.sweep();
                assert_eq!(
                    swept,
                    model.empty.len(),
                    "swept {swept} of {:?}",
                    model.empty
                );
                for room in std::mem::take(&mut model.empty) {
                    model.dropped(room);
                }
            }
            Op::Trim => {
                // Empty rooms leave memory first, longest empty first.
                let before = hub.room_count();
                hub.trim();
                let gone = before - hub.room_count();
                assert!(gone <= model.empty.len());
                let dropped: Vec<_> = model.empty.drain(..gone).collect();
                for room in dropped {
                    model.dropped(room);
                }
            }
        }
        model.occupancy(&slots);
        for (member, _) in slots.iter().flatten() {
            drain(member, &model.rooms).await;
        }
        check(&hub, &model);
    }
}

fuzz_target!(|ops: Vec<Op>| {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    runtime.block_on(run(ops));
});
