//! The WebSocket protocol of PROTOCOL.md, event by event: welcome, presence
//! (join/leave across tabs), messages, reactions, edits, deletes, typing,
//! every error code, and history with resume.
//!
//! "Nothing was broadcast" is proven by ordering, not by waiting: the client
//! then sends a `ping` (or a message) and the very next event must be that.

mod common;

use common::Server;

/// One instance, history in memory.
async fn start(config: roomcast::Config) -> Server {
    Server::start(config).await
}

/// History lives in memory (or in the backbone) only: an empty room's
/// history goes after its time to live, and the ring is all there is.
const DURABLE: bool = false;

/// The hub remembers where a room dropped from memory stopped numbering.
const NUMBERS_ON: bool = true;

include!("protocol/suite.rs");
