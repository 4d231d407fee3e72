//! WebSocket connections: the handshake at `/ws/{room}/{username}`
//! (`upgrade`), one connection's read loop, writer and limits ([`session`]),
//! its token's expiry and the watch on it (`expiry`), and the request types
//! ([`protocol`]). Sessions talk to the hub only.

mod expiry;
pub(crate) mod frame_bounded;
pub mod protocol;
pub mod rate;
pub mod session;
mod ticker;
pub(crate) mod upgrade;
mod woken;
mod writer;
