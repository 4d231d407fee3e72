//! Messages and changes the stores' unit tests write (test builds only).

use std::sync::Arc;

use crate::hub::{Change, Identity, Reactions, StoredMessage, UserName};

/// Message `seq` of `room`: id `<room>-<seq>`, by ann, saying `m<seq>`.
pub(crate) fn message(room: &str, seq: u64, timestamp: &str) -> StoredMessage {
    StoredMessage {
        id: format!("{room}-{seq}").into(),
        seq,
        user: UserName::from_store("ann"),
        identity: Identity::from_key("k"),
        content: format!("m{seq}"),
        timestamp: timestamp.into(),
        reactions: Reactions::default(),
        attachment: None,
        edited_at: None,
        client_id: None,
    }
}

/// The post of [`message`].
pub(crate) fn post(room: &str, seq: u64, timestamp: &str) -> Change {
    Change::Post {
        room: room.into(),
        message: Arc::new(message(room, seq, timestamp)),
        reserve_through: None,
    }
}
