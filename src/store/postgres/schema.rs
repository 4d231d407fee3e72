//! The PostgreSQL store's tables, their migrations, and the statements
//! every connection prepares once.

use tokio_postgres::{Client, Statement};

use super::classify;
use crate::hub::StoreError;
use crate::store::writer::JournalError;

/// Each entry takes the schema from its index to the next version.
pub(super) const MIGRATIONS: &[&str] = &[
    "
CREATE TABLE roomcast_rooms (
    room TEXT PRIMARY KEY,
    seq_reserved BIGINT NOT NULL
);
CREATE TABLE roomcast_messages (
    room TEXT NOT NULL,
    seq BIGINT NOT NULL,
    id TEXT NOT NULL UNIQUE,
    user_name TEXT NOT NULL,
    identity TEXT NOT NULL,
    content TEXT NOT NULL,
    created TEXT NOT NULL,
    created_ms BIGINT NOT NULL,
    attachment TEXT,
    edited_at TEXT,
    reactions TEXT NOT NULL DEFAULT '[]',
    client_id TEXT,
    PRIMARY KEY (room, seq)
);
CREATE INDEX roomcast_messages_created ON roomcast_messages (created_ms);
",
    "
ALTER TABLE roomcast_messages ADD COLUMN status SMALLINT NOT NULL DEFAULT 0,
    ADD COLUMN edit_version BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN reactions_version BIGINT NOT NULL DEFAULT 0;
CREATE INDEX roomcast_messages_early ON roomcast_messages (created_ms) WHERE status <> 0;
",
    // Version 3: message ids need not be unique. A message is its room and
    // seq (the primary key), every statement finds it by those and checks
    // the id there, as SQLite's store has since its version 4; nothing
    // looks a message up by id alone, so no index replaces the constraint.
    // With it, a post whose id another message already had (ids start
    // again from the same prefix when the OS gave no randomness) failed
    // the group and was skipped: shown to the room, never stored.
    "
ALTER TABLE roomcast_messages DROP CONSTRAINT roomcast_messages_id_key;
",
];

const COLUMNS: &str =
    "seq, id, user_name, identity, content, created, attachment, edited_at, reactions, client_id";

/// The statements every connection prepares once.
pub(super) struct Statements {
    pub(super) insert: Statement,
    pub(super) reserve: Statement,
    pub(super) cap: Statement,
    pub(super) edit: Statement,
    pub(super) react: Statement,
    pub(super) attachment: Statement,
    pub(super) delete: Statement,
    pub(super) newest: Statement,
    pub(super) reserved: Statement,
    pub(super) set_reserved: Statement,
    pub(super) tail: Statement,
    pub(super) page: Statement,
    pub(super) prune: Statement,
    pub(super) sweep_early: Statement,
    pub(super) settle: Statement,
}

pub(super) async fn migrate(client: &Client) -> Result<(), StoreError> {
    let fail = |e: tokio_postgres::Error| StoreError(classify(&e).message);
    client
        .batch_execute(
            "BEGIN; SELECT pg_advisory_xact_lock(7263737401); \
             CREATE TABLE IF NOT EXISTS roomcast_schema (version INTEGER NOT NULL);",
        )
        .await
        .map_err(fail)?;
    let row = client
        .query_opt("SELECT version FROM roomcast_schema", &[])
        .await
        .map_err(fail)?;
    let version = row.map_or(0, |r| r.get::<_, i32>(0));
    let known = MIGRATIONS.len() as i32;
    if version > known {
        let _ = client.batch_execute("ROLLBACK").await;
        return Err(StoreError(format!(
            "the PostgreSQL database was written by a newer roomcast (schema version {version}; \
             this build knows up to {known}); run the newer roomcast, or use another database or schema"
        )));
    }
    for sql in MIGRATIONS
        .iter()
        .skip(usize::try_from(version).unwrap_or(0))
    {
        client.batch_execute(sql).await.map_err(fail)?;
    }
    client
        .batch_execute(&format!(
            "DELETE FROM roomcast_schema; INSERT INTO roomcast_schema VALUES ({known}); COMMIT;"
        ))
        .await
        .map_err(fail)
}

pub(super) async fn prepare(c: &Client) -> Result<Statements, JournalError> {
    let p = async |sql: &str| c.prepare(sql).await.map_err(|e| classify(&e));
    Ok(Statements {
        // A post whose place holds a change that came first takes its
        // edit and reactions; a place marked deleted keeps it out. A place
        // that holds another message (a seq handed out twice: SQLite
        // refuses it) keeps that one, and the other's id is answered, for
        // the writer to log (read as the table was before the statement,
        // so a row another instance committed meanwhile shows no id).
        insert: p("WITH posted AS (INSERT INTO roomcast_messages (room, seq, id, user_name, \
                   identity, content, created, created_ms, attachment, edited_at, reactions, \
                   client_id) \
                   VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) \
                   ON CONFLICT (room, seq) DO UPDATE SET \
                   user_name = excluded.user_name, identity = excluded.identity, \
                   content = CASE WHEN roomcast_messages.edited_at IS NULL \
                     THEN excluded.content ELSE roomcast_messages.content END, \
                   edited_at = coalesce(roomcast_messages.edited_at, excluded.edited_at), \
                   created = excluded.created, created_ms = excluded.created_ms, \
                   attachment = excluded.attachment, client_id = excluded.client_id, status = 0 \
                   WHERE roomcast_messages.id = excluded.id AND roomcast_messages.status = 1 \
                   RETURNING 1) \
                   SELECT id FROM roomcast_messages WHERE room = $1 AND seq = $2 AND id <> $3 \
                   AND NOT EXISTS (SELECT 1 FROM posted)")
        .await?,
        reserve: p("INSERT INTO roomcast_rooms (room, seq_reserved) VALUES ($1, $2) \
                    ON CONFLICT (room) DO UPDATE \
                    SET seq_reserved = greatest(roomcast_rooms.seq_reserved, excluded.seq_reserved)")
        .await?,
        // The per-room cap counts messages, not seqs: a room's seqs have
        // holes (deletes, the numbers a crash skips). It takes out messages
        // only: a change waiting for its post stays (until swept), above
        // all a deleted message's mark, or its post, coming late, would be
        // stored as if never deleted.
        cap: p("DELETE FROM roomcast_messages WHERE room = $1 AND status = 0 AND seq <= \
                (SELECT seq FROM roomcast_messages WHERE room = $1 AND status = 0 \
                 ORDER BY seq DESC OFFSET $2 LIMIT 1)")
        .await?,
        // A change finds its message by (room, seq), the primary key, and
        // checks the id: a seq that holds another message changes nothing.
        // With no row there yet, the change takes the message's place
        // (status 1) until its post comes.
        // An edit or reactions with a version (several instances write
        // the store) replace only a lower one: the newest stays whatever
        // order the instances' writes land in. Version 0 (one instance)
        // always applies.
        edit: p("INSERT INTO roomcast_messages (room, seq, id, user_name, identity, content, \
                 created, created_ms, edited_at, edit_version, status) \
                 VALUES ($4, $5, $3, '', '', $1, '', $6, $2, $7, 1) \
                 ON CONFLICT (room, seq) DO UPDATE \
                 SET content = excluded.content, edited_at = excluded.edited_at, \
                 edit_version = greatest(roomcast_messages.edit_version, excluded.edit_version) \
                 WHERE roomcast_messages.id = excluded.id AND roomcast_messages.status <> 2 \
                 AND (excluded.edit_version = 0 \
                      OR roomcast_messages.edit_version < excluded.edit_version)")
        .await?,
        react: p("INSERT INTO roomcast_messages (room, seq, id, user_name, identity, content, \
                  created, created_ms, reactions, reactions_version, status) \
                  VALUES ($3, $4, $2, '', '', '', '', $5, $1, $6, 1) \
                  ON CONFLICT (room, seq) DO UPDATE SET reactions = excluded.reactions, \
                  reactions_version = \
                    greatest(roomcast_messages.reactions_version, excluded.reactions_version) \
                  WHERE roomcast_messages.id = excluded.id AND roomcast_messages.status <> 2 \
                  AND (excluded.reactions_version = 0 \
                       OR roomcast_messages.reactions_version < excluded.reactions_version)")
        .await?,
        attachment: p("UPDATE roomcast_messages SET attachment = $1 \
                       WHERE id = $2 AND room = $3 AND seq = $4 AND status = 0")
        .await?,
        // A delete removes its message; finding none, it marks the place
        // (status 2), so a post that comes later stays out. If the post is
        // being written right now, the mark waits for it and then empties
        // its row.
        delete: p("WITH gone AS (DELETE FROM roomcast_messages \
                   WHERE id = $1 AND room = $2 AND seq = $3 AND status = 0 RETURNING 1) \
                   INSERT INTO roomcast_messages (room, seq, id, user_name, identity, content, \
                   created, created_ms, status) \
                   SELECT $2::text, $3::bigint, $1::text, '', '', '', '', $4::bigint, 2 \
                   WHERE NOT EXISTS (SELECT 1 FROM gone) \
                   ON CONFLICT (room, seq) DO UPDATE SET status = 2, user_name = '', \
                   identity = '', content = '', attachment = NULL, edited_at = NULL, \
                   reactions = '[]', client_id = NULL \
                   WHERE roomcast_messages.id = excluded.id")
        .await?,
        newest: p("SELECT max(seq) FROM roomcast_messages WHERE room = $1").await?,
        reserved: p("SELECT seq_reserved FROM roomcast_rooms WHERE room = $1").await?,
        set_reserved: p("INSERT INTO roomcast_rooms (room, seq_reserved) VALUES ($1, $2) \
                         ON CONFLICT (room) DO UPDATE SET seq_reserved = excluded.seq_reserved")
        .await?,
        tail: p(&format!(
            "SELECT {COLUMNS} FROM roomcast_messages WHERE room = $1 AND status = 0 \
             ORDER BY seq DESC LIMIT $2"
        ))
        .await?,
        page: p(&format!(
            "SELECT {COLUMNS} FROM roomcast_messages WHERE room = $1 AND seq > $2 AND seq < $3 \
             AND status = 0 ORDER BY seq DESC LIMIT $4"
        ))
        .await?,
        prune: p("DELETE FROM roomcast_messages WHERE (room, seq) IN \
                  (SELECT room, seq FROM roomcast_messages WHERE created_ms < $1 LIMIT $2)")
        .await?,
        sweep_early: p("DELETE FROM roomcast_messages WHERE status <> 0 AND created_ms < $1").await?,
        settle: p("UPDATE roomcast_rooms SET seq_reserved = $2 WHERE room = $1").await?,
    })
}
