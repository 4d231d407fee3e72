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

use std::path::{Path, PathBuf};

use rusqlite::{Connection, ErrorCode, OptionalExtension, Row, params};

use super::writer::{Journal, JournalError};
use super::{Fsync, Retention, timestamp_ms};
use crate::hub::{
    Attachment, Change, Identity, PageQuery, Reactions, Snapshot, StoreError, StoredMessage,
    UserName,
};

/// `PRAGMA application_id`: "rcst".
const APPLICATION_ID: i32 = 0x7263_7374;

/// Each entry takes the schema from its index to the next version.
const MIGRATIONS: &[&str] = &[
    "
CREATE TABLE roomcast_rooms (
    room TEXT PRIMARY KEY,
    seq_reserved INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE roomcast_messages (
    room TEXT NOT NULL,
    seq INTEGER NOT NULL,
    id TEXT NOT NULL,
    user_name TEXT NOT NULL,
    identity TEXT NOT NULL,
    content TEXT NOT NULL,
    created TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    attachment TEXT,
    edited_at TEXT,
    reactions TEXT NOT NULL DEFAULT '[]',
    client_id TEXT,
    PRIMARY KEY (room, seq)
) WITHOUT ROWID;
CREATE UNIQUE INDEX roomcast_messages_id ON roomcast_messages (id);
CREATE INDEX roomcast_messages_created ON roomcast_messages (created_ms);
",
    "
-- Version 2: messages in a rowid table, in the order they were written,
-- with (room, seq) as an index. Version 1 kept them clustered by (room,
-- seq): with many rooms each insert landed inside the tree, where a full
-- page is split by rebalancing its neighbours, and a whole row moved each
-- time. Now rows are appended at the tree's right edge (a cheap split)
-- and only the small (room, seq) entry lands inside. The writer's CPU per
-- message, 100 rooms at 40 000 posts/s: 7.6-8.1 µs before, 5.4-6.0 after
-- (bench/store_cpu.sh; docs/BENCHMARKS.md, issue 15). The upgrade copies
-- every message once, in the one transaction that applies it.
CREATE TABLE roomcast_messages_v2 (
    room TEXT NOT NULL,
    seq INTEGER NOT NULL,
    id TEXT NOT NULL,
    user_name TEXT NOT NULL,
    identity TEXT NOT NULL,
    content TEXT NOT NULL,
    created TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    attachment TEXT,
    edited_at TEXT,
    reactions TEXT NOT NULL DEFAULT '[]',
    client_id TEXT
);
INSERT INTO roomcast_messages_v2
    SELECT room, seq, id, user_name, identity, content, created, created_ms, attachment,
           edited_at, reactions, client_id
    FROM roomcast_messages ORDER BY created_ms, room, seq;
DROP TABLE roomcast_messages;
ALTER TABLE roomcast_messages_v2 RENAME TO roomcast_messages;
CREATE UNIQUE INDEX roomcast_messages_room_seq ON roomcast_messages (room, seq);
CREATE UNIQUE INDEX roomcast_messages_id ON roomcast_messages (id);
CREATE INDEX roomcast_messages_created ON roomcast_messages (created_ms);
",
];

const COLUMNS: &str =
    "seq, id, user_name, identity, content, created, attachment, edited_at, reactions, client_id";

pub(crate) struct Sqlite {
    conn: Connection,
    path: PathBuf,
    /// Held locked while the store is open.
    _lock: std::fs::File,
}

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
    JournalError { message, transient }
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
        // Migrations run with full syncs whatever `--fsync` says: a power
        // cut during one leaves the file as it was before it.
        conn.execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; \
             PRAGMA secure_delete = ON; PRAGMA busy_timeout = 1000;",
        )
        .map_err(not_ours)?;
        let mut store = Self {
            conn,
            path,
            _lock: lock,
        };
        store
            .migrate(version)
            .map_err(|e| StoreError(format!("cannot prepare {shown}: {e}")))?;
        if fsync == Fsync::Off {
            store
                .conn
                .execute_batch("PRAGMA synchronous = OFF;")
                .map_err(not_ours)?;
        }
        // Set after the migrations: one that copies a table needs room for
        // both copies for a moment, and the cap is for what comes after.
        if let Some(mb) = max_mb {
            let page: i64 = store
                .conn
                .query_row("PRAGMA page_size", [], |r| r.get(0))
                .map_err(not_ours)?;
            let pages = (mb.saturating_mul(1 << 20) / page.max(512) as u64).max(16);
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

    fn err(&self, e: rusqlite::Error) -> JournalError {
        classify(&self.path, &e)
    }
}

/// A stored row back into a message. Names and emoji were checked when
/// they were stored; reading them again never refuses a row.
fn message(r: &Row<'_>) -> rusqlite::Result<StoredMessage> {
    let seq: i64 = r.get(0)?;
    let attachment: Option<String> = r.get(6)?;
    let reactions: String = r.get(8)?;
    Ok(StoredMessage {
        seq: u64::try_from(seq).unwrap_or(0),
        id: r.get(1)?,
        user: UserName::from_store(&r.get::<_, String>(2)?),
        identity: Identity::from_key(r.get::<_, String>(3)?),
        content: r.get(4)?,
        timestamp: r.get(5)?,
        attachment: attachment.and_then(|a| serde_json::from_str::<Attachment>(&a).ok()),
        edited_at: r.get(7)?,
        reactions: Reactions::from_store_json(&reactions),
        client_id: r.get(9)?,
    })
}

fn seq_param(seq: u64) -> i64 {
    i64::try_from(seq).unwrap_or(i64::MAX)
}

impl Journal for Sqlite {
    fn begin(&mut self) -> Result<(), JournalError> {
        self.conn
            .execute_batch("BEGIN IMMEDIATE")
            .map_err(|e| self.err(e))
    }

    fn apply(&mut self, change: &Change, retention: &Retention) -> Result<(), JournalError> {
        let done = match change {
            Change::Post {
                room,
                message: m,
                reserve_through,
            } => {
                let attachment = m
                    .attachment
                    .as_ref()
                    .map(|a| serde_json::to_string(a).unwrap_or_default());
                self.conn
                    .prepare_cached(
                        "INSERT INTO roomcast_messages (room, seq, id, user_name, identity, content, \
                         created, created_ms, attachment, edited_at, reactions, client_id) \
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
                    )
                    .and_then(|mut st| {
                        st.execute(params![
                            room,
                            seq_param(m.seq),
                            m.id,
                            m.user.as_str(),
                            m.identity.as_str(),
                            m.content,
                            m.timestamp,
                            timestamp_ms(&m.timestamp),
                            attachment,
                            m.edited_at,
                            m.reactions.to_store_json(),
                            m.client_id,
                        ])
                    })
                    .and_then(|_| match reserve_through {
                        Some(r) => self
                            .conn
                            .prepare_cached(
                                "INSERT INTO roomcast_rooms (room, seq_reserved) VALUES (?1, ?2) \
                                 ON CONFLICT (room) DO UPDATE \
                                 SET seq_reserved = max(seq_reserved, excluded.seq_reserved)",
                            )
                            .and_then(|mut st| st.execute(params![room, seq_param(*r)])),
                        None => Ok(0),
                    })
                    .and_then(|_| match retention.per_room {
                        Some(cap) if m.seq > cap => self
                            .conn
                            .prepare_cached(
                                "DELETE FROM roomcast_messages WHERE room = ?1 AND seq <= ?2",
                            )
                            .and_then(|mut st| st.execute(params![room, seq_param(m.seq - cap)])),
                        _ => Ok(0),
                    })
            }
            Change::Edit {
                room,
                message_id,
                content,
                edited_at,
            } => self
                .conn
                .prepare_cached(
                    "UPDATE roomcast_messages SET content = ?1, edited_at = ?2 \
                     WHERE id = ?3 AND room = ?4",
                )
                .and_then(|mut st| st.execute(params![content, edited_at, message_id, room])),
            Change::React {
                room,
                message_id,
                reactions,
            } => self
                .conn
                .prepare_cached(
                    "UPDATE roomcast_messages SET reactions = ?1 WHERE id = ?2 AND room = ?3",
                )
                .and_then(|mut st| st.execute(params![reactions, message_id, room])),
            Change::Attachment {
                room,
                message_id,
                attachment,
            } => self
                .conn
                .prepare_cached(
                    "UPDATE roomcast_messages SET attachment = ?1 WHERE id = ?2 AND room = ?3",
                )
                .and_then(|mut st| st.execute(params![attachment, message_id, room])),
            Change::Delete { room, message_id } => self
                .conn
                .prepare_cached("DELETE FROM roomcast_messages WHERE id = ?1 AND room = ?2")
                .and_then(|mut st| st.execute(params![message_id, room])),
            Change::Settle { room, last_seq } => self
                .conn
                .prepare_cached("UPDATE roomcast_rooms SET seq_reserved = ?2 WHERE room = ?1")
                .and_then(|mut st| st.execute(params![room, seq_param(*last_seq)])),
        };
        done.map(drop).map_err(|e| self.err(e))
    }

    fn load(&mut self, room: &str, tail: usize, block: u64) -> Result<Snapshot, JournalError> {
        let read = || -> rusqlite::Result<Snapshot> {
            let newest: Option<i64> = self
                .conn
                .prepare_cached("SELECT max(seq) FROM roomcast_messages WHERE room = ?1")?
                .query_row([room], |r| r.get(0))?;
            let reserved: Option<i64> = self
                .conn
                .prepare_cached("SELECT seq_reserved FROM roomcast_rooms WHERE room = ?1")?
                .query_row([room], |r| r.get(0))
                .optional()?;
            let last = newest.unwrap_or(0).max(reserved.unwrap_or(0)).max(0);
            let last = u64::try_from(last).unwrap_or(0);
            let reserve = last.saturating_add(block);
            self.conn
                .prepare_cached(
                    "INSERT INTO roomcast_rooms (room, seq_reserved) VALUES (?1, ?2) \
                     ON CONFLICT (room) DO UPDATE SET seq_reserved = excluded.seq_reserved",
                )?
                .execute(params![room, seq_param(reserve)])?;
            let mut st = self.conn.prepare_cached(&format!(
                "SELECT {COLUMNS} FROM roomcast_messages WHERE room = ?1 ORDER BY seq DESC LIMIT ?2"
            ))?;
            let mut rows: Vec<StoredMessage> = st
                .query_map(params![room, tail as i64 + 1], message)?
                .collect::<rusqlite::Result<_>>()?;
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
        read().map_err(|e| self.err(e))
    }

    fn page(
        &mut self,
        room: &str,
        q: PageQuery,
    ) -> Result<(Vec<StoredMessage>, bool), JournalError> {
        let read = || -> rusqlite::Result<(Vec<StoredMessage>, bool)> {
            let mut st = self.conn.prepare_cached(&format!(
                "SELECT {COLUMNS} FROM roomcast_messages WHERE room = ?1 AND seq > ?2 AND seq < ?3 \
                 ORDER BY seq DESC LIMIT ?4"
            ))?;
            let before = q.before.map_or(i64::MAX, seq_param);
            let mut rows: Vec<StoredMessage> = st
                .query_map(
                    params![room, seq_param(q.after), before, q.limit as i64 + 1],
                    message,
                )?
                .collect::<rusqlite::Result<_>>()?;
            let more = rows.len() > q.limit;
            rows.truncate(q.limit);
            rows.reverse();
            Ok((rows, more))
        };
        read().map_err(|e| self.err(e))
    }

    fn prune(&mut self, older_than_ms: i64) -> Result<u64, JournalError> {
        self.conn
            .prepare_cached("DELETE FROM roomcast_messages WHERE created_ms < ?1")
            .and_then(|mut st| st.execute([older_than_ms]))
            .map(|n| n as u64)
            .map_err(|e| self.err(e))
    }

    fn commit(&mut self, deleted: bool) -> Result<(), JournalError> {
        self.conn.execute_batch("COMMIT").map_err(|e| self.err(e))?;
        if deleted {
            // The WAL may still hold page images with the deleted text:
            // copy it into the file (where secure_delete zeroed it) and
            // truncate it. Best effort: the next delete tries again.
            if let Err(e) = self
                .conn
                .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
            {
                tracing::debug!("checkpoint after a delete failed: {e}");
            }
        }
        Ok(())
    }

    fn rollback(&mut self) {
        if !self.conn.is_autocommit() {
            let _ = self.conn.execute_batch("ROLLBACK");
        }
    }
}
