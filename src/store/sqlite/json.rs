//! What a chunk holds, the SQLite store's unit of history: the messages one commit
//! wrote for one room, kept as one row whose `messages` column is a JSON
//! array of objects (readable with SQLite's own `json_each`).
//!
//! Why chunks and not a row per message: under load the writer commits
//! thousands of posts at a time, and a row per message cost four B-tree
//! inserts each (the row, and three indexes) and the binding of a dozen
//! values, on the core fan-out also needs. A chunk is one insert per room
//! per commit, and a message costs little more than its JSON encoding:
//! 2.3-3.0 µs of the writer's CPU per change where rows took 8.1-9.1, 100
//! rooms at 40 000 posts/s (`bench/store_cpu.sh`; docs/BENCHMARKS.md,
//! issue 15). A change to a message finds its chunk by the message's seq,
//! which every change carries (see `chunks.rs`).
//!
//! Messages in a chunk are in seq order, and a room's chunks never overlap
//! in seq (the store merges a late message into the chunk that spans its
//! seq): a room's history reads newest first, chunk by chunk.

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::hub::json_text::{push_key, push_str, push_u64};
use crate::hub::{Attachment, Identity, Reactions, StoredMessage, UserName};

/// The most messages one chunk takes from a commit (a busy room's commit
/// becomes several chunks): an edit rewrites its whole chunk.
pub(super) const MAX_MESSAGES: usize = 256;
/// The most bytes of JSON one chunk takes from a commit (a single message
/// bigger than this is a chunk of its own).
pub(super) const MAX_BYTES: usize = 64 << 10;

/// A message as a chunk holds it, for reading. Missing optional fields and
/// `null`s read as absent.
#[derive(Deserialize)]
struct EntryIn {
    seq: u64,
    id: String,
    user: String,
    identity: String,
    content: String,
    timestamp: String,
    #[serde(default)]
    attachment: Option<Value>,
    #[serde(default)]
    edited_at: Option<String>,
    #[serde(default)]
    reactions: Option<String>,
    #[serde(default)]
    client_id: Option<String>,
}

/// Appends one message's JSON object to `out`: `seq`, `id`, `user`,
/// `identity`, `content`, `timestamp`, then `attachment`, `edited_at`,
/// `reactions` (the form of [`Reactions::to_store_json`], as a string) and
/// `client_id` when present. [`decode`] reads it with serde.
///
/// Written by hand rather than through serde_json's serializer: its string
/// escaping and the dozens of small writes per object were a fifth of the
/// writer's CPU per post (`perf`, 100 rooms at 40 000 posts/s). Strings
/// and numbers are written by the hub's [`crate::hub::json_text`], as the
/// broadcast frame's are.
pub(super) fn encode_into(out: &mut String, m: &StoredMessage) {
    out.push_str("{\"seq\":");
    push_u64(out, m.seq);
    field(out, "id", &m.id);
    field(out, "user", m.user.as_str());
    field(out, "identity", m.identity.as_str());
    field(out, "content", &m.content);
    field(out, "timestamp", &m.timestamp);
    if let Some(attachment) = &m.attachment {
        out.push_str(",\"attachment\":");
        out.push_str(&serde_json::to_string(attachment).unwrap_or_else(|_| "null".into()));
    }
    if let Some(edited_at) = &m.edited_at {
        field(out, "edited_at", edited_at);
    }
    if !m.reactions.0.is_empty() {
        field(out, "reactions", &m.reactions.to_store_json());
    }
    if let Some(client_id) = &m.client_id {
        field(out, "client_id", client_id);
    }
    out.push('}');
}

/// One message's JSON object alone.
#[cfg(test)]
pub(super) fn encode(m: &StoredMessage) -> String {
    let mut out = String::with_capacity(m.content.len() + 160);
    encode_into(&mut out, m);
    out
}

/// `,"key":"value"` (keys are this file's own: nothing to escape).
fn field(out: &mut String, key: &str, value: &str) {
    push_key(out, key);
    push_str(out, value);
}

/// Joins encoded messages into a chunk's `messages` text.
pub(super) fn join<'a>(objects: impl Iterator<Item = &'a str>) -> String {
    let mut body = String::from("[");
    for (i, object) in objects.enumerate() {
        if i > 0 {
            body.push(',');
        }
        body.push_str(object);
    }
    body.push(']');
    body
}

/// A chunk's messages, in seq order. Names and emoji were checked when
/// they were stored; reading them again never refuses a message.
pub(super) fn decode(body: &str) -> serde_json::Result<Vec<StoredMessage>> {
    let entries: Vec<EntryIn> = serde_json::from_str(body)?;
    Ok(entries
        .into_iter()
        .map(|e| StoredMessage {
            seq: e.seq,
            id: e.id.into(),
            user: UserName::from_store(&e.user),
            identity: Identity::from_key(e.identity),
            content: e.content,
            timestamp: e.timestamp.into(),
            attachment: e
                .attachment
                .and_then(|a| serde_json::from_value::<Attachment>(a).ok()),
            edited_at: e.edited_at,
            reactions: e
                .reactions
                .map_or_else(Reactions::default, |r| Reactions::from_store_json(&r)),
            client_id: e.client_id,
        })
        .collect())
}

/// A chunk opened for a change to some of its messages: each message as a
/// JSON object, so fields this build does not know survive the rewrite.
pub(super) struct Opened(Vec<Map<String, Value>>);

impl Opened {
    /// Refuses a chunk with an entry that lacks a numeric `seq` or a
    /// string `id` or `timestamp`: rewriting it would give the chunk a
    /// wrong seq range. Entries are put in seq order (this store writes
    /// them so; a file changed by hand may not), which finding one needs.
    pub fn parse(body: &str) -> serde_json::Result<Self> {
        let mut entries: Vec<Map<String, Value>> = serde_json::from_str(body)?;
        entries.sort_by_key(Self::seq_of);
        let whole = entries.iter().all(|m| {
            m.get("seq").is_some_and(Value::is_u64)
                && m.get("id").is_some_and(Value::is_string)
                && m.get("timestamp").is_some_and(Value::is_string)
        });
        if whole {
            Ok(Self(entries))
        } else {
            Err(serde::de::Error::custom(
                "an entry lacks its seq, id or timestamp",
            ))
        }
    }

    fn seq_of(object: &Map<String, Value>) -> u64 {
        object.get("seq").and_then(Value::as_u64).unwrap_or(0)
    }

    fn id_of(object: &Map<String, Value>) -> &str {
        object.get("id").and_then(Value::as_str).unwrap_or("")
    }

    /// Where the message with this seq and id is (messages are in seq
    /// order).
    fn position(&self, seq: u64, id: &str) -> Option<usize> {
        self.0
            .binary_search_by_key(&seq, Self::seq_of)
            .ok()
            .filter(|&at| Self::id_of(&self.0[at]) == id)
    }

    /// The message with this seq and id, to change in place.
    pub fn find(&mut self, seq: u64, id: &str) -> Option<&mut Map<String, Value>> {
        self.position(seq, id).map(|at| &mut self.0[at])
    }

    /// Takes out the message with this seq and id; true if it was there.
    pub fn remove(&mut self, seq: u64, id: &str) -> bool {
        self.position(seq, id).map(|at| self.0.remove(at)).is_some()
    }

    /// Takes out every message `gone` says so of; returns how many.
    pub fn remove_where(&mut self, gone: impl Fn(u64, &str) -> bool) -> u64 {
        let before = self.0.len();
        self.0.retain(|m| {
            let timestamp = m.get("timestamp").and_then(Value::as_str).unwrap_or("");
            !gone(Self::seq_of(m), timestamp)
        });
        (before - self.0.len()) as u64
    }

    /// Takes out the `n` oldest messages (all, if it holds fewer);
    /// returns how many.
    pub fn remove_oldest(&mut self, n: u64) -> u64 {
        let n = usize::try_from(n).unwrap_or(usize::MAX).min(self.0.len());
        self.0.drain(..n);
        n as u64
    }

    /// Adds an encoded message at its place in seq order; false (and
    /// nothing added) if the chunk already holds that seq.
    pub fn insert(&mut self, object: &str) -> serde_json::Result<bool> {
        let object: Map<String, Value> = serde_json::from_str(object)?;
        let seq = Self::seq_of(&object);
        match self.0.binary_search_by_key(&seq, Self::seq_of) {
            Ok(_) => Ok(false),
            Err(at) => {
                self.0.insert(at, object);
                Ok(true)
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// The lowest and highest seq held (the chunk is not empty).
    pub fn seq_range(&self) -> (u64, u64) {
        let seqs = self.0.iter().map(Self::seq_of);
        (seqs.clone().min().unwrap_or(0), seqs.max().unwrap_or(0))
    }

    /// The messages' timestamps (RFC 3339), in seq order.
    pub fn timestamps(&self) -> impl Iterator<Item = &str> {
        self.0
            .iter()
            .map(|m| m.get("timestamp").and_then(Value::as_str).unwrap_or(""))
    }

    /// The chunk's `messages` text again.
    pub fn body(&self) -> String {
        serde_json::to_string(&self.0).unwrap_or_else(|_| "[]".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(seq: u64) -> StoredMessage {
        StoredMessage {
            id: format!("id{seq}").into(),
            seq,
            user: UserName::from_store("ann"),
            identity: Identity::from_key("k"),
            content: format!("hello \"{seq}\"\n\\ é"),
            timestamp: "2026-12-03T10:00:00.000Z".into(),
            reactions: Reactions::default(),
            attachment: None,
            edited_at: None,
            client_id: Some("c".into()),
        }
    }

    #[test]
    fn a_chunk_reads_back_what_was_written() {
        let objects: Vec<String> = [0, 1, 2, 5, 1_000_000_007, u64::MAX]
            .map(|s| encode(&message(s)))
            .to_vec();
        let body = join(objects.iter().map(String::as_str));
        let back = decode(&body).expect("valid");
        assert_eq!(
            back.iter().map(|m| m.seq).collect::<Vec<_>>(),
            [0, 1, 2, 5, 1_000_000_007, u64::MAX]
        );
        assert_eq!(back[3].content, "hello \"5\"\n\\ é");
        assert_eq!(back[0].client_id.as_deref(), Some("c"));
        assert!(back[0].edited_at.is_none() && back[0].attachment.is_none());
    }

    #[test]
    fn an_opened_chunk_keeps_seq_order_and_refuses_a_seq_twice() {
        let body = join(
            [encode(&message(1)), encode(&message(4))]
                .iter()
                .map(String::as_str),
        );
        let mut chunk = Opened::parse(&body).expect("valid");
        assert!(chunk.insert(&encode(&message(3))).expect("valid"));
        assert!(!chunk.insert(&encode(&message(4))).expect("valid"));
        assert_eq!(chunk.seq_range(), (1, 4));
        assert!(!chunk.remove(1, "id4"), "a seq and an id that do not match");
        assert!(chunk.remove(1, "id1"));
        assert!(!chunk.remove(1, "id1"));
        assert_eq!(chunk.remove_where(|seq, _| seq <= 3), 1);
        let back = decode(&chunk.body()).expect("valid");
        assert_eq!(back.iter().map(|m| m.seq).collect::<Vec<_>>(), [4]);
    }

    #[test]
    fn a_chunk_out_of_seq_order_is_put_in_order_when_opened() {
        // A file changed by hand: finding a message by seq still works.
        let body = join(
            [
                encode(&message(7)),
                encode(&message(2)),
                encode(&message(5)),
            ]
            .iter()
            .map(String::as_str),
        );
        let mut chunk = Opened::parse(&body).expect("valid");
        assert_eq!(chunk.seq_range(), (2, 7));
        assert!(chunk.find(7, "id7").is_some());
        assert!(chunk.remove(5, "id5"));
        let back = decode(&chunk.body()).expect("valid");
        assert_eq!(back.iter().map(|m| m.seq).collect::<Vec<_>>(), [2, 7]);
    }
}
