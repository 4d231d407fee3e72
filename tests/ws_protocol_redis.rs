//! The WebSocket protocol suite (`protocol/suite.rs`) on the Redis
//! backbone (the real Redis at 127.0.0.1:6379), so the Lua copy of the
//! rules is held to the same tests as the one in `src/hub/room.rs`. Each
//! server gets a key prefix of its own, removed when the test ends.
#![cfg(feature = "redis")]

mod common;

use common::Server;

/// One instance on the Redis backbone, connected before the test starts.
async fn start(config: roomcast::Config) -> Server {
    let (config, keys) = common::redis::on_redis(config, "proto");
    let mut server = Server::start(config).await;
    server.hold(keys);
    server.wait_healthy().await;
    server
}

/// History lives in Redis only (no durable store here): an empty room's
/// keys expire after its time to live, and the ring is all there is.
const DURABLE: bool = false;

/// An empty room's last seq outlives its other keys: made again, it
/// numbers on.
const NUMBERS_ON: bool = true;

include!("protocol/suite.rs");
