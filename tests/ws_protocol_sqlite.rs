//! The WebSocket protocol suite (`protocol/suite.rs`) with history in the
//! SQLite store: every rule holds the same with the store on.

#![cfg(feature = "sqlite")]

mod common;

use common::Server;
use roomcast::store::StoreKind;

/// One instance, history in SQLite under the server's own directory.
async fn start(config: roomcast::Config) -> Server {
    Server::start(config.store(StoreKind::Sqlite)).await
}

/// History outlives memory: an empty room leaves memory after its time to
/// live and keeps its history, and resumes older than the ring read it.
const DURABLE: bool = true;

/// The store numbers: a room made again numbers on.
const NUMBERS_ON: bool = true;

include!("protocol/suite.rs");
