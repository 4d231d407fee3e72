//! Copies the write-ahead log into the database file on a thread of its
//! own, so the writer's commits never wait for it.
//!
//! SQLite's automatic checkpoint runs inside the commit that crosses its
//! threshold: the writer copied about a thousand pages into the file and
//! flushed both files before it could take the next group, while posts
//! kept arriving. Under load that was one commit in four or five taking
//! two more flushes (10-17 ms each here). The writer's connection turns
//! it off (`wal_autocheckpoint = 0`) and asks this thread, which has a
//! connection of its own, for a `PASSIVE` checkpoint after a commit once
//! [`CHECKPOINT_AFTER_BYTES`] of messages have gone into the log since it
//! last asked: it copies what no reader still needs and never blocks the
//! writer (SQLite's own advice for a busy writer, "Application-Initiated
//! Checkpoints" in its WAL documentation). A checkpoint flushes both
//! files, so a quiet store is not asked after every commit.
//!
//! The log is restarted from its beginning by the writer's next
//! transaction once everything in it has been copied. Under a load that
//! never leaves a gap the copy can trail the writer and the log grows;
//! past [`MAX_LOG_BYTES`] the writer copies the rest itself and restarts
//! the log before going on (see `Sqlite::commit`; the file keeps its size
//! and is written over from its start): the log is bounded whether or not
//! this thread keeps up, and the writer waits only then.

use std::path::Path;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use rusqlite::Connection;

/// How large the log may grow before the writer copies and restarts it
/// itself: 16 MiB, about five commits of 16 384 short posts. Under load
/// the log wraps at one or two commits' size when this thread keeps up.
pub(super) const MAX_LOG_BYTES: u64 = 16 << 20;

/// Bytes of messages written into the log after which the writer asks for
/// a checkpoint: with the tables' own pages, about the thousand pages of
/// SQLite's automatic checkpoint.
pub(super) const CHECKPOINT_AFTER_BYTES: u64 = 3 << 20;

/// The writer's side: asks for checkpoints.
pub(super) struct Checkpointer {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

#[derive(Default)]
struct Shared {
    asked: Mutex<Ask>,
    wake: Condvar,
}

#[derive(Default, Clone, Copy)]
struct Ask {
    checkpoint: bool,
    stop: bool,
}

impl Checkpointer {
    /// Opens a second connection to `path` (already in WAL mode, its schema
    /// in place) with the writer's `synchronous` setting, which decides
    /// whether a checkpoint flushes the files, and starts the thread.
    pub(super) fn start(path: &Path, synchronous: &str) -> rusqlite::Result<Self> {
        let conn = Connection::open(path)?;
        conn.execute_batch(&format!(
            "PRAGMA synchronous = {synchronous}; PRAGMA busy_timeout = 1000;"
        ))?;
        let shared = Arc::new(Shared::default());
        let thread = std::thread::Builder::new()
            .name("roomcast-checkpoint".into())
            .spawn({
                let shared = Arc::clone(&shared);
                move || run(&conn, &shared)
            })
            .map_err(|e| {
                rusqlite::Error::SqliteFailure(
                    rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CANTOPEN),
                    Some(format!("cannot start the checkpoint thread: {e}")),
                )
            })?;
        Ok(Self {
            shared,
            thread: Some(thread),
        })
    }

    /// Asks for a checkpoint (never waits: one asked while another runs
    /// is taken when it ends; asking twice is asking once).
    pub(super) fn ask(&self) {
        let mut asked = self.shared.asked.lock().unwrap_or_else(|p| p.into_inner());
        asked.checkpoint = true;
        self.shared.wake.notify_one();
    }
}

impl Drop for Checkpointer {
    /// Stops the thread and closes its connection, so that the writer's is
    /// the last to close (SQLite's last connection checkpoints the whole
    /// log and removes it).
    fn drop(&mut self) {
        {
            let mut asked = self.shared.asked.lock().unwrap_or_else(|p| p.into_inner());
            asked.stop = true;
            self.shared.wake.notify_one();
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn run(conn: &Connection, shared: &Shared) {
    super::super::batch_scheduling();
    loop {
        let ask = {
            let mut asked = shared.asked.lock().unwrap_or_else(|p| p.into_inner());
            while !asked.checkpoint && !asked.stop {
                asked = shared.wake.wait(asked).unwrap_or_else(|p| p.into_inner());
            }
            std::mem::take(&mut *asked)
        };
        if ask.stop {
            return;
        }
        // A failure is retried after the next commit, and the writer
        // truncates a log that grows.
        if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
            tracing::debug!("checkpoint failed: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use crate::hub::Change;
    use crate::store::sqlite::Sqlite;
    use crate::store::sqlite::chunks::tests::{Scratch, T, commit, message};
    use crate::store::writer::Journal;
    use crate::store::{Fsync, Retention};

    fn size(path: &std::path::Path) -> u64 {
        std::fs::metadata(path).map_or(0, |m| m.len())
    }

    /// `count` posts to room `r` from `first` on, each with 4 KiB of text.
    fn posts(first: u64, count: u64) -> Vec<Change> {
        (first..first + count)
            .map(|seq| {
                let mut m = message("r", seq, T);
                m.content = "x".repeat(4096);
                Change::Post {
                    room: "r".into(),
                    message: Arc::new(m),
                    reserve_through: None,
                }
            })
            .collect()
    }

    #[test]
    fn the_checkpoint_thread_copies_the_log_into_the_file() {
        let dir = Scratch::new("checkpoint-thread");
        let mut store = Sqlite::open(&dir.0, Fsync::Batch, None).unwrap();
        store.checkpoint_after = 64 * 4096;
        let db = dir.0.join("roomcast.db");
        let before = size(&db);
        commit(&mut store, &posts(1, 64), &Retention::default());
        // The commit is in the log; the thread copies it into the file
        // (waited for, not timed: the deadline only stops a broken build).
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while size(&db) < before + 64 * 4096 {
            assert!(
                std::time::Instant::now() < deadline,
                "the file never received the log's pages ({} bytes)",
                size(&db)
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }

    #[test]
    fn the_log_stays_bounded_when_the_thread_falls_behind() {
        let dir = Scratch::new("log-bound");
        let mut store = Sqlite::open(&dir.0, Fsync::Off, None).unwrap();
        // A thread that never runs: only the writer keeps the log bounded.
        store.checkpointer = None;
        store.max_log_bytes = 1 << 20;
        // One commit: 64 posts of 4 KiB, about 300 KiB of log: sixteen
        // would make a log of 5 MiB.
        let one_commit = 512 << 10;
        let mut before = 0;
        for c in 0..16 {
            commit(&mut store, &posts(c * 64 + 1, 64), &Retention::default());
            let log = size(&dir.0.join("roomcast.db-wal"));
            assert!(
                log <= store.max_log_bytes + one_commit,
                "after commit {c} the log is {log} bytes"
            );
            // Restarted from its beginning, not truncated (see
            // `Sqlite::commit`): the file never shrinks.
            assert!(log >= before, "after commit {c} the log shrank to {log}");
            before = log;
        }
        drop(store);
        let mut store = Sqlite::open(&dir.0, Fsync::Off, None).unwrap();
        let query = crate::hub::PageQuery {
            after: 0,
            before: None,
            limit: 2000,
        };
        let (messages, more) = store.page("r", query).unwrap();
        assert_eq!(messages.len(), 16 * 64);
        assert!(!more);
        assert!(
            messages
                .iter()
                .enumerate()
                .all(|(i, m)| m.seq == i as u64 + 1)
        );
    }
}
