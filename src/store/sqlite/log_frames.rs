//! How many frames the write-ahead log holds after the writer's last
//! commit, as SQLite reports it to a commit's log hook.
//!
//! The log file's size is not that: a log restarted from its beginning
//! keeps its file's size while it fills again from the start. SQLite's
//! hook is a plain function (no state of its own), so the count is kept
//! per thread: the writer's connection commits on the writer's thread, and
//! [`after_commit`] is read there right after its `COMMIT`.

use std::cell::Cell;
use std::ffi::c_int;

use rusqlite::hooks::Wal;

thread_local! {
    static FRAMES: Cell<u64> = const { Cell::new(0) };
}

/// The log hook: SQLite calls it after each commit that wrote frames.
pub(super) fn note(_: &Wal, frames: c_int) -> rusqlite::Result<()> {
    FRAMES.set(u64::try_from(frames).unwrap_or(0));
    Ok(())
}

/// Frames in the log after this thread's last commit; read once, it
/// starts again from zero (a commit that wrote nothing calls no hook).
pub(super) fn after_commit() -> u64 {
    FRAMES.replace(0)
}
