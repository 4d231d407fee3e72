//! What the fuzz targets in `fuzz/` reach beyond the public API. Built only
//! under `cargo fuzz`, which sets `--cfg fuzzing`: never part of the API.

pub use crate::ws::frame_bounded::FrameBounded;

/// The Redis reply parser (`src/redis/resp.rs`).
#[cfg(feature = "redis")]
pub mod resp {
    pub use crate::redis::resp::{MAX_REPLY, Scan, Value, parse};
}
