//! The embedded store: one SQLite file, `<data dir>/roomcast.db`, compiled
//! into the binary (nothing to install).
//!
//! - WAL journal, `synchronous = FULL` (`--fsync always|batch`) or `OFF`.
//! - One process per file: `<data dir>/roomcast.lock` is locked (`flock`)
//!   for as long as the store is open, so a second roomcast on the same
//!   data directory is refused at start.
//! - Deleted messages leave the disk, not only the table: `secure_delete`
//!   overwrites their bytes, and the WAL is checkpointed and truncated after
//!   a commit that deleted something, so no old page image keeps them.
//! - The schema is versioned (`PRAGMA user_version`) and marked as
//!   roomcast's (`PRAGMA application_id`): a newer, foreign or damaged file
//!   is a clear error at start, never a crash.
//! - Messages are kept in chunks: a commit's posts to one
//!   room are one row (`chunks.rs`, in the JSON of `json.rs`). A room's
//!   posts wait in [`Sqlite::pending`] (`pending.rs`) until the commit, or
//!   until an edit, a delete or a read needs them written. Each room's
//!   newest stored seq is kept between commits (`newest.rs`), and so is a
//!   capped room's count of messages (`kept.rs`).
//! - The log is copied into the file by a thread of its own
//!   (`checkpointer.rs`), not inside the writer's commits.
//! - `schema.rs`: the tables and their migrations.

use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hashbrown::HashMap;
use rusqlite::{Connection, ErrorCode, OptionalExtension, params};

use super::writer::{Journal, JournalError};
use super::{Fsync, Retention, timestamp_ms};
use crate::hub::{Change, PageQuery, Snapshot, StoreError, StoredMessage};

mod checkpointer;
mod chunks;
mod json;
mod kept;
mod log_frames;
mod newest;
mod pending;
mod per_room;
mod schema;
mod scrub;

use checkpointer::{CHECKPOINT_AFTER_BYTES, Checkpointer, MAX_LOG_BYTES};
use chunks::seq_param;
use kept::KeptCounts;
use newest::NewestSeqs;
use pending::{Pending, SpareBodies};
use schema::{APPLICATION_ID, MIGRATIONS};
use scrub::Scrub;

pub(crate) struct Sqlite {
    /// Declared before `conn`, so dropped first: the writer's connection
    /// closes last, and SQLite's last connection copies the whole log into
    /// the file and removes it.
    checkpointer: Option<Checkpointer>,
    conn: Connection,
    path: PathBuf,
    /// The log's size past which the writer copies it into the file and
    /// restarts it itself.
    max_log_bytes: u64,
    /// The size of one frame of the log: a page and its 24-byte header.
    log_frame_bytes: u64,
    /// Bytes of messages written since the checkpoint thread was last
    /// asked, and how many make it worth asking again.
    logged: Cell<u64>,
    checkpoint_after: u64,
    /// When the log is truncated after text left the file (`scrub.rs`).
    scrub: Scrub,
    /// Posts of the open transaction not yet written, by room: each room's
    /// become one chunk at the end of the group (or sooner, see
    /// [`Pending::full`]). Bounded by the writer's group (16 384 changes).
    pending: HashMap<Arc<str>, Pending>,
    /// Chunk texts kept for the next commit's rooms (`pending.rs`).
    spare: SpareBodies,
    /// Each room's newest stored seq (`newest.rs`).
    newest: NewestSeqs,
    /// Each capped room's count of stored messages (`kept.rs`).
    kept: KeptCounts,
    /// Held locked while the store is open.
    _lock: std::fs::File,
}

/// The page size of a new file: SQLite's largest, 16 times its default,
/// unless every change is to be committed alone (`--fsync always`).
///
/// With groups of changes nearly everything the store writes is chunks of
/// a few to 64 KiB, which with 4 KiB pages are chains of overflow pages:
/// every page is a frame of the write-ahead log with a header, a checksum
/// and a write of its own, then is read back and written again by the
/// checkpoint. With 64 KiB pages a chunk is one page or a few: the store's
/// CPU per change (its writer and checkpoint threads) was 0.62-0.81x, 100
/// rooms at 150 000 posts/s in phase (`bench/store_cpu.sh`), and
/// `store_bench throughput` committed 1.06-1.43x the changes a second
/// with `--fsync batch`. A commit of one small change, though, writes whole
/// pages: with `--fsync always` 64 KiB pages took 0.59-0.65x the changes a
/// second, so such a file keeps SQLite's 4 KiB (docs/BENCHMARKS.md, issue
/// 15, "Larger pages"). The size is the file's for good: one made under
/// another `--fsync` keeps its own.
fn page_bytes(fsync: Fsync) -> u32 {
    match fsync {
        Fsync::Always => 4096,
        Fsync::Batch | Fsync::Off => 65_536,
    }
}

/// How long a commit that deleted something keeps asking for the log to
/// be truncated while the checkpoint thread's copy runs (see
/// [`Sqlite::checkpoint`]); past it, the next commit asks again.
const SCRUB_WAIT: Duration = Duration::from_millis(200);

fn classify(path: &Path, e: &rusqlite::Error) -> JournalError {
    let transient = matches!(
        e.sqlite_error_code(),
        Some(
            ErrorCode::DiskFull
                | ErrorCode::SystemIoFailure
                | ErrorCode::DatabaseBusy
                | ErrorCode::DatabaseLocked
                | ErrorCode::OutOfMemory
                | ErrorCode::ReadOnly
                | ErrorCode::CannotOpen
        )
    );
    let message = match e.sqlite_error_code() {
        Some(ErrorCode::DiskFull) => format!(
            "{} is full (the disk, or the --store-max-mb limit): {e}",
            path.display()
        ),
        _ => format!("{}: {e}", path.display()),
    };
    let full = e.sqlite_error_code() == Some(ErrorCode::DiskFull);
    JournalError {
        message,
        transient,
        full,
    }
}

/// Checks that the data directory exists (creating it) and can be written.
fn prepare_dir(dir: &Path) -> Result<(), StoreError> {
    std::fs::create_dir_all(dir).map_err(|e| {
        StoreError(format!(
            "the data directory {} cannot be created ({e}); create it or pass --data-dir",
            dir.display()
        ))
    })?;
    let probe = dir.join(format!(".probe-{}", std::process::id()));
    std::fs::write(&probe, b"")
        .and_then(|()| std::fs::remove_file(&probe))
        .map_err(|e| {
            StoreError(format!(
                "the data directory {} is not writable ({e}); fix its permissions or pass --data-dir",
                dir.display()
            ))
        })
}

impl Sqlite {
    /// Opens (creating if needed) `<dir>/roomcast.db` and brings its schema
    /// up to date.
    pub fn open(dir: &Path, fsync: Fsync, max_mb: Option<u64>) -> Result<Self, StoreError> {
        prepare_dir(dir)?;
        let path = dir.join("roomcast.db");
        let shown = path.display().to_string();
        let lock_path = dir.join("roomcast.lock");
        let lock = std::fs::File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| StoreError(format!("cannot open {}: {e}", lock_path.display())))?;
        lock.try_lock().map_err(|e| match e {
            std::fs::TryLockError::WouldBlock => StoreError(format!(
                "{shown} is in use by another roomcast; one process per --data-dir"
            )),
            std::fs::TryLockError::Error(e) => {
                StoreError(format!("cannot lock {}: {e}", lock_path.display()))
            }
        })?;
        let conn =
            Connection::open(&path).map_err(|e| StoreError(format!("cannot open {shown}: {e}")))?;
        let not_ours = |e: rusqlite::Error| {
            StoreError(format!(
                "{shown} is not an SQLite database, or is damaged ({e}); move it away or pass another --data-dir"
            ))
        };
        let (app_id, version, tables): (i32, i64, i64) = conn
            .query_row(
                "SELECT (SELECT application_id FROM pragma_application_id), \
                        (SELECT user_version FROM pragma_user_version), \
                        (SELECT count(*) FROM sqlite_schema)",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .map_err(not_ours)?;
        if app_id != APPLICATION_ID && (app_id != 0 || tables > 0) {
            return Err(StoreError(format!(
                "{shown} is a database of another program (it has {tables} tables and no roomcast \
                 schema); move it away or pass another --data-dir"
            )));
        }
        let known = MIGRATIONS.len() as i64;
        if version > known {
            return Err(StoreError(format!(
                "{shown} was written by a newer roomcast (schema version {version}; this build \
                 knows up to {known}); run the newer roomcast, or pass another --data-dir"
            )));
        }
        // A new file gets its page size before anything is written: the
        // size is fixed once the first page is, and a file in WAL mode
        // keeps the one it has (an older file stays as it is).
        if version == 0 && tables == 0 {
            conn.execute_batch(&format!("PRAGMA page_size = {};", page_bytes(fsync)))
                .map_err(not_ours)?;
        }
        // Migrations run with full syncs whatever `--fsync` says: a power
        // cut during one leaves the file as it was before it.
        conn.execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; \
             PRAGMA secure_delete = ON; PRAGMA busy_timeout = 1000;",
        )
        .map_err(not_ours)?;
        let mut store = Self {
            checkpointer: None,
            conn,
            path,
            max_log_bytes: MAX_LOG_BYTES,
            log_frame_bytes: 4096 + 24,
            logged: Cell::new(0),
            checkpoint_after: CHECKPOINT_AFTER_BYTES,
            scrub: Scrub::default(),
            pending: HashMap::new(),
            spare: SpareBodies::default(),
            newest: NewestSeqs::default(),
            kept: KeptCounts::default(),
            _lock: lock,
        };
        store
            .migrate(version)
            .map_err(|e| StoreError(format!("cannot prepare {shown}: {e}")))?;
        let synchronous = if fsync == Fsync::Off { "OFF" } else { "FULL" };
        store
            .conn
            .execute_batch(&format!(
                "PRAGMA synchronous = {synchronous}; PRAGMA wal_autocheckpoint = 0;"
            ))
            .map_err(not_ours)?;
        // After the pragma, which replaces any hook with SQLite's own.
        store.conn.wal_hook(Some(log_frames::note));
        let page: u64 = store
            .conn
            .query_row("PRAGMA page_size", [], |r| r.get(0))
            .map_err(not_ours)?;
        store.log_frame_bytes = page + 24;
        store.checkpointer = Some(
            Checkpointer::start(&store.path, synchronous)
                .map_err(|e| StoreError(format!("cannot open {shown} for checkpoints: {e}")))?,
        );
        // Set after the migrations: one that copies a table needs room for
        // both copies for a moment, and the cap is for what comes after.
        if let Some(mb) = max_mb {
            let pages = (mb.saturating_mul(1 << 20) / page.max(512)).max(16);
            store
                .conn
                .execute_batch(&format!("PRAGMA max_page_count = {pages};"))
                .map_err(not_ours)?;
        }
        Ok(store)
    }

    /// Applies every migration past `from` in one transaction (a crash
    /// during them leaves the file at `from`). After an upgrade that copied
    /// rows, the write-ahead log holds a page image of both copies (and,
    /// with `secure_delete`, the zeroed old pages): it is copied into the
    /// file and truncated at once, not left at that size until the next
    /// delete.
    fn migrate(&mut self, from: i64) -> rusqlite::Result<()> {
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Exclusive)?;
        for sql in MIGRATIONS.iter().skip(usize::try_from(from).unwrap_or(0)) {
            tx.execute_batch(sql)?;
        }
        tx.execute_batch(&format!(
            "PRAGMA application_id = {APPLICATION_ID}; PRAGMA user_version = {};",
            MIGRATIONS.len()
        ))?;
        tx.commit()?;
        let upgraded = from > 0 && from < MIGRATIONS.len() as i64;
        if upgraded {
            self.conn
                .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
        }
        Ok(())
    }

    /// Counts `bytes` of messages written into the log.
    fn logged(&self, bytes: usize) {
        self.logged
            .set(self.logged.get().saturating_add(bytes as u64));
    }

    fn err(&self, e: rusqlite::Error) -> JournalError {
        classify(&self.path, &e)
    }

    /// Runs a checkpoint in `mode` on the writer's connection; whether it
    /// copied the whole log (and, in `TRUNCATE` or `RESTART`, reset it).
    /// SQLite answers a checkpoint that another one is running into as a
    /// row saying `busy`, not as an error, and without waiting: that is
    /// retried for up to `wait` (the other thread's copy takes 10-17 ms).
    fn checkpoint(&self, mode: &str, wait: Duration) -> bool {
        let sql = format!("PRAGMA wal_checkpoint({mode})");
        let deadline = std::time::Instant::now() + wait;
        loop {
            match self.conn.query_row(&sql, [], |r| r.get::<_, i64>(0)) {
                Ok(0) => return true,
                Ok(_) => {}
                Err(e) => tracing::debug!("checkpoint after a commit failed: {e}"),
            }
            if std::time::Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Copies the log into the file and truncates it (after text was
    /// taken out: see `scrub.rs`).
    fn truncate_log(&mut self) {
        self.logged.set(0);
        let done = self.checkpoint("TRUNCATE", SCRUB_WAIT);
        self.scrub.tried(done, Instant::now());
    }

    /// Raises the room's durable reservation to `through`.
    fn reserve_through(&self, room: &str, through: u64) -> rusqlite::Result<()> {
        self.conn
            .prepare_cached(
                "INSERT INTO roomcast_rooms (room, seq_reserved) VALUES (?1, ?2) \
                 ON CONFLICT (room) DO UPDATE \
                 SET seq_reserved = max(seq_reserved, excluded.seq_reserved)",
            )
            .and_then(|mut st| st.execute(params![room, seq_param(through)]))
            .map(drop)
    }
}

impl Journal for Sqlite {
    fn begin(&mut self) -> Result<(), JournalError> {
        self.pending.clear();
        self.conn
            .execute_batch("BEGIN IMMEDIATE")
            .map_err(|e| self.err(e))
    }

    fn apply(&mut self, change: &Change, retention: &Retention) -> Result<(), JournalError> {
        match change {
            Change::Edit { room, .. }
            | Change::React { room, .. }
            | Change::Attachment { room, .. }
            | Change::Delete { room, .. } => {
                // The message may be among the room's waiting posts.
                self.flush_room(room).map_err(|e| self.err(e))?;
            }
            Change::Post { .. } | Change::Settle { .. } => {}
        }
        let done = match change {
            Change::Post {
                room,
                message: m,
                reserve_through,
            } => {
                let pending = self
                    .pending
                    .entry(Arc::clone(room))
                    .or_insert_with(|| Pending::with_body(self.spare.take()));
                pending.push(m, retention.per_room);
                let written = if pending.full() {
                    let full = self.pending.remove(&**room).unwrap_or_default();
                    self.write_room(room, full)
                } else {
                    Ok(())
                };
                written.and_then(|()| match reserve_through {
                    Some(r) => self.reserve_through(room, *r),
                    None => Ok(()),
                })
            }
            Change::Edit {
                room,
                message_id,
                seq,
                content,
                edited_at,
                // One instance's file: its changes come in order.
                version: _,
            } => {
                // The text it replaces leaves the log soon.
                self.scrub.replaced();
                self.change_message(room, (*seq, message_id), |m| {
                    m.insert("content".into(), content.as_str().into());
                    m.insert("edited_at".into(), edited_at.as_str().into());
                })
            }
            Change::React {
                room,
                message_id,
                seq,
                reactions,
                version: _,
            } => self.change_message(room, (*seq, message_id), |m| {
                if reactions == "[]" {
                    m.remove("reactions");
                } else {
                    m.insert("reactions".into(), reactions.as_str().into());
                }
            }),
            Change::Attachment {
                room,
                message_id,
                seq,
                attachment,
            } => {
                let attachment: serde_json::Value =
                    serde_json::from_str(attachment).unwrap_or(serde_json::Value::Null);
                self.change_message(room, (*seq, message_id), |m| {
                    m.insert("attachment".into(), attachment);
                })
            }
            Change::Delete {
                room,
                message_id,
                seq,
            } => self.delete_message(room, (*seq, message_id)),
            Change::Settle { room, last_seq } => self
                .conn
                .prepare_cached("UPDATE roomcast_rooms SET seq_reserved = ?2 WHERE room = ?1")
                .and_then(|mut st| st.execute(params![room, seq_param(*last_seq)]))
                .map(drop),
        };
        done.map_err(|e| self.err(e))
    }

    fn load(&mut self, room: &str, tail: usize, block: u64) -> Result<Snapshot, JournalError> {
        let read = |this: &mut Self| -> rusqlite::Result<Snapshot> {
            this.flush_room(room)?;
            let newest = this.newest_seq(room)?;
            let reserved: Option<i64> = this
                .conn
                .prepare_cached("SELECT seq_reserved FROM roomcast_rooms WHERE room = ?1")?
                .query_row([room], |r| r.get(0))
                .optional()?;
            let reserved = reserved.and_then(|r| u64::try_from(r).ok());
            let last = newest.unwrap_or(0).max(reserved.unwrap_or(0));
            let reserve = last.saturating_add(block);
            this.conn
                .prepare_cached(
                    "INSERT INTO roomcast_rooms (room, seq_reserved) VALUES (?1, ?2) \
                     ON CONFLICT (room) DO UPDATE SET seq_reserved = excluded.seq_reserved",
                )?
                .execute(params![room, seq_param(reserve)])?;
            // Newest first, one more than asked for: whether older ones exist.
            let mut rows: Vec<StoredMessage> = Vec::new();
            this.newest_first(room, u64::MAX, |_, messages| {
                rows.extend(messages.into_iter().rev());
                rows.len() <= tail
            })?;
            let older = rows.len() > tail;
            rows.truncate(tail);
            rows.reverse();
            Ok(Snapshot {
                tail: rows,
                last_seq: last,
                reserved: reserve,
                older,
            })
        };
        read(self).map_err(|e| self.err(e))
    }

    fn page(
        &mut self,
        room: &str,
        q: PageQuery,
    ) -> Result<(Vec<StoredMessage>, bool), JournalError> {
        let read = |this: &mut Self| -> rusqlite::Result<(Vec<StoredMessage>, bool)> {
            this.flush_room(room)?;
            let before = q.before.unwrap_or(u64::MAX);
            let after = seq_param(q.after);
            let mut rows: Vec<StoredMessage> = Vec::new();
            this.newest_first(room, before, |last, messages| {
                if last <= after {
                    return false;
                }
                rows.extend(
                    messages
                        .into_iter()
                        .rev()
                        .filter(|m| m.seq > q.after && m.seq < before),
                );
                rows.len() <= q.limit
            })?;
            let more = rows.len() > q.limit;
            rows.truncate(q.limit);
            rows.reverse();
            Ok((rows, more))
        };
        read(self).map_err(|e| self.err(e))
    }

    fn prune(&mut self, older_than_ms: i64, max: u64) -> Result<u64, JournalError> {
        let pruned = self.flush().and_then(|()| {
            self.delete_where(
                "SELECT rowid, messages FROM roomcast_chunks WHERE oldest_ms < ?1 LIMIT 64",
                params![older_than_ms],
                |_, timestamp| timestamp_ms(timestamp) < older_than_ms,
                max,
            )
        });
        // Taken out of rooms one by one, not counted per room.
        self.kept.forget();
        pruned.map_err(|e| self.err(e))
    }

    fn reserve(&mut self, room: &str, through: u64) -> Result<(), JournalError> {
        self.reserve_through(room, through).map_err(|e| self.err(e))
    }

    fn commit(&mut self, deleted: bool) -> Result<(), JournalError> {
        self.flush().map_err(|e| self.err(e))?;
        self.conn.execute_batch("COMMIT").map_err(|e| self.err(e))?;
        // A log past its bound: the checkpoint thread has not kept up.
        let outgrown = log_frames::after_commit() * self.log_frame_bytes > self.max_log_bytes;
        // After text left the file the log may still hold page images
        // with it: copy the log into the file (where secure_delete zeroed
        // it) and truncate it, when `scrub.rs` says it is due. A log that
        // only outgrew its bound is copied and restarted from its
        // beginning, not truncated: truncating a 16 MiB file took the
        // writer 28-32 ms under load, its queue filling meanwhile, and the
        // next commits then grew the file again block by block
        // (docs/BENCHMARKS.md, "A frame's buffer kept for the next frame").
        // The file keeps its size, which the bound already allows.
        if deleted {
            self.scrub.deleted();
        }
        if self.scrub.due_at_commit(Instant::now()) {
            self.truncate_log();
        } else if outgrown {
            self.logged.set(0);
            // Best effort: the next commit tries again.
            self.checkpoint("RESTART", Duration::ZERO);
        } else if self.logged.get() >= self.checkpoint_after
            && let Some(checkpointer) = &self.checkpointer
        {
            self.logged.set(0);
            checkpointer.ask();
        }
        Ok(())
    }

    /// A truncation of the log owed with nothing to commit (`scrub.rs`).
    fn idle_work_at(&self) -> Option<Instant> {
        self.scrub.due_when_idle(Instant::now())
    }

    fn idle_work(&mut self) {
        self.truncate_log();
    }

    fn rollback(&mut self) {
        self.pending.clear();
        self.newest.forget();
        self.kept.forget();
        if !self.conn.is_autocommit() {
            let _ = self.conn.execute_batch("ROLLBACK");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::chunks::tests::{Scratch, T, commit};
    use super::*;
    use crate::store::fixtures::post;

    fn page_size(store: &Sqlite) -> u32 {
        store
            .conn
            .query_row("PRAGMA page_size", [], |r| r.get(0))
            .unwrap()
    }

    #[test]
    fn a_new_file_takes_the_page_size_of_its_fsync_and_keeps_it() {
        for (fsync, bytes) in [(Fsync::Batch, 65_536), (Fsync::Always, 4096)] {
            let new = Scratch::new(&format!("page-new-{fsync:?}"));
            let store = Sqlite::open(&new.0, fsync, None).unwrap();
            assert_eq!(page_size(&store), bytes);
            assert_eq!(store.log_frame_bytes, u64::from(bytes) + 24);
            drop(store);
            // Opened again under another policy, it keeps its size.
            let store = Sqlite::open(&new.0, Fsync::Off, None).unwrap();
            assert_eq!(page_size(&store), bytes);
        }

        // A file made with SQLite's default page, as every build before
        // this one made them: it keeps it, and takes posts and reads.
        let old = Scratch::new("page-old");
        std::fs::create_dir_all(&old.0).unwrap();
        let db = rusqlite::Connection::open(old.0.join("roomcast.db")).unwrap();
        db.execute_batch("PRAGMA journal_mode = WAL;").unwrap();
        for migration in MIGRATIONS {
            db.execute_batch(migration).unwrap();
        }
        db.execute_batch(&format!(
            "PRAGMA application_id = {APPLICATION_ID}; PRAGMA user_version = {};",
            MIGRATIONS.len()
        ))
        .unwrap();
        drop(db);
        let mut store = Sqlite::open(&old.0, Fsync::Off, None).unwrap();
        assert_eq!(page_size(&store), 4096);
        assert_eq!(store.log_frame_bytes, 4096 + 24);
        let posts: Vec<_> = (1..=3).map(|s| post("r", s, T)).collect();
        commit(&mut store, &posts, &Retention::default());
        let query = PageQuery {
            after: 0,
            before: None,
            limit: 10,
        };
        let (messages, more) = store.page("r", query).unwrap();
        assert_eq!(
            messages.iter().map(|m| m.seq).collect::<Vec<_>>(),
            [1, 2, 3]
        );
        assert!(!more);
    }

    #[test]
    fn a_log_truncation_held_off_after_a_delete_is_done_at_the_next_commit() {
        let dir = Scratch::new("scrub-owed");
        let mut store = Sqlite::open(&dir.0, Fsync::Batch, None).unwrap();
        store.checkpointer = None;
        let log = dir.0.join("roomcast.db-wal");
        commit(
            &mut store,
            &[post("r", 1, T), post("r", 2, T)],
            &Retention::default(),
        );
        // A reader of the log's pages: the log cannot be truncated under it.
        let reader = rusqlite::Connection::open(dir.0.join("roomcast.db")).unwrap();
        reader.execute_batch("BEGIN").unwrap();
        let _: i64 = reader
            .query_row("SELECT count(*) FROM roomcast_chunks", [], |r| r.get(0))
            .unwrap();
        let delete = Change::Delete {
            room: "r".into(),
            message_id: "r-1".into(),
            seq: 1,
        };
        store.begin().unwrap();
        store.apply(&delete, &Retention::default()).unwrap();
        store.commit(true).unwrap();
        assert!(store.scrub.owed(), "the truncation is still owed");
        assert!(std::fs::metadata(&log).unwrap().len() > 0);
        // With nothing committed the writer tries again, not at once.
        let again = store.idle_work_at().expect("owed");
        assert!(again > Instant::now(), "no busy loop of tries");
        store.idle_work();
        assert!(store.scrub.owed(), "still held off");

        drop(reader);
        commit(&mut store, &[post("r", 3, T)], &Retention::default());
        assert!(!store.scrub.owed());
        assert_eq!(store.idle_work_at(), None, "nothing owed");
        assert_eq!(
            std::fs::metadata(&log).unwrap().len(),
            0,
            "the log is truncated"
        );
    }
    #[test]
    fn text_the_cap_takes_out_leaves_the_log_soon_not_at_every_commit() {
        let dir = Scratch::new("scrub-trim");
        let mut store = Sqlite::open(&dir.0, Fsync::Batch, None).unwrap();
        store.checkpointer = None;
        let log = dir.0.join("roomcast.db-wal");
        let log_len = || std::fs::metadata(&log).unwrap().len();
        let capped = Retention {
            days: None,
            per_room: Some(1),
        };
        commit(&mut store, &[post("r", 1, T)], &capped);
        assert!(log_len() > 0);
        // The first trim: its commit truncates the log.
        commit(&mut store, &[post("r", 2, T)], &capped);
        assert_eq!(log_len(), 0);
        assert!(!store.scrub.owed());
        // Within scrub::SOON: owed, the log kept.
        commit(&mut store, &[post("r", 3, T)], &capped);
        assert!(store.scrub.owed());
        assert!(log_len() > 0);
        // scrub::SOON on: the next commit truncates it.
        store.scrub.truncated_ago(scrub::SOON);
        commit(&mut store, &[post("r", 4, T)], &capped);
        assert_eq!(log_len(), 0);
        assert!(!store.scrub.owed());

        // An edit's replaced text goes the same way.
        let edit = Change::Edit {
            room: "r".into(),
            message_id: "r-4".into(),
            seq: 4,
            content: "rewritten".into(),
            edited_at: T.into(),
            version: 1,
        };
        store.begin().unwrap();
        store.apply(&edit, &capped).unwrap();
        store.commit(false).unwrap();
        assert!(store.scrub.owed(), "within scrub::SOON of the last");
        assert!(log_len() > 0);
        store.scrub.truncated_ago(scrub::SOON);
        commit(&mut store, &[post("r", 5, T)], &capped);
        assert_eq!(log_len(), 0);
    }
}
