//! The shared store: PostgreSQL (feature `postgres`), what several
//! instances behind one URL keep their history in.
//!
//! The writer thread drives `tokio-postgres` on a small runtime of its own,
//! so the store's I/O never runs on the server's. Statements are prepared
//! once per connection, and a group's changes are sent pipelined: each
//! change is one statement (a post may add a reservation and its room's
//! cap), up to [`PIPELINE`] of them go out at once and their answers are
//! read after, so a group costs a few round trips to the database, not one
//! per change (what bounds the rate when the database is across a
//! network). A lost connection is a transient failure: the writer keeps
//! the group, reconnects and commits it when the database is back.
//! Migrations run at start under an advisory lock (instances starting
//! together take turns); a schema newer than the binary is a clear error.
//! Tables are prefixed `roomcast_`, so the database may be shared with
//! other programs; `?options=-csearch_path%3D<schema>` in the URL picks a
//! schema.
//!
//! A deleted message's row is gone from every query at once; PostgreSQL
//! reclaims its bytes on disk when (auto)vacuum next passes.
//!
//! Each instance writes the changes its own members make, so a change can
//! reach the database before the post it changes: a moderator on one
//! instance deletes a message whose author's instance has not committed it
//! yet (it is slower, or cannot reach the database for a while). Such a
//! change leaves a row of its own in the message's place (`status` 1, an
//! edit or reactions waiting for their message; 2, a deleted message; a
//! message's own row is 0, and only those are ever read back), and
//! the post, when it comes, takes the edit and the reactions, or is kept
//! out. Both sides write the same primary key, `(room, seq)`, so even two
//! transactions at once cannot miss each other: the second waits for the
//! first to commit and then sees its row. Rows that waited longer than
//! [`EARLY_KEPT_MS`] are swept.

use std::future::Future;
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;

use tokio::runtime::Runtime;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, NoTls, Row, Statement};

use super::writer::{Journal, JournalError};
use super::{Fsync, Retention, now_ms, timestamp_ms};
use crate::hub::{
    Attachment, Change, Identity, PageQuery, Reactions, Snapshot, StoreError, StoredMessage,
    UserName,
};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// One statement or commit may take this long before the connection is
/// taken for dead.
const QUERY_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a change that overtook its post waits for it (see the module's
/// documentation): a day, far longer than a writer retries a group before
/// its instance is restarted.
const EARLY_KEPT_MS: i64 = 24 * 3600 * 1000;
/// Changes sent to the database in one pipeline at most (what a sent group
/// holds in memory besides the group itself).
const PIPELINE: usize = 256;
/// How often the writer sweeps such rows that waited too long.
const EARLY_SWEEP_EVERY: Duration = Duration::from_secs(3600);

/// Each entry takes the schema from its index to the next version.
const MIGRATIONS: &[&str] = &[
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
ALTER TABLE roomcast_messages ADD COLUMN status SMALLINT NOT NULL DEFAULT 0;
CREATE INDEX roomcast_messages_early ON roomcast_messages (created_ms) WHERE status <> 0;
",
];

const COLUMNS: &str =
    "seq, id, user_name, identity, content, created, attachment, edited_at, reactions, client_id";

/// The statements every connection prepares once.
struct Statements {
    insert: Statement,
    reserve: Statement,
    cap: Statement,
    edit: Statement,
    react: Statement,
    attachment: Statement,
    delete: Statement,
    newest: Statement,
    reserved: Statement,
    set_reserved: Statement,
    tail: Statement,
    page: Statement,
    prune: Statement,
    sweep_early: Statement,
    settle: Statement,
}

struct Connected {
    client: Client,
    st: Statements,
}

pub(crate) struct Postgres {
    rt: Runtime,
    url: String,
    fsync: Fsync,
    conn: Option<Connected>,
    /// When the writer last swept changes that waited too long for their
    /// post (`None`: not yet).
    swept: Option<std::time::Instant>,
    /// Changes applied but not sent yet, with the seq a post trims its
    /// room up to: sent together before a read, the commit, or once
    /// [`PIPELINE`] wait.
    queued: Vec<(Change, Option<u64>)>,
    /// The transaction's `BEGIN`, until it is sent with the first
    /// statements (so a group of one change is one round trip).
    begin: Option<&'static str>,
}

fn transient(message: &str) -> JournalError {
    JournalError {
        message: message.to_owned(),
        transient: true,
    }
}

fn classify(e: &tokio_postgres::Error) -> JournalError {
    let transient = match e.code() {
        Some(code) => {
            let c = code.code();
            c.starts_with("08")
                || c.starts_with("53")
                || c.starts_with("57")
                || c.starts_with("40")
                || c == "25006"
        }
        // No SQLSTATE: the connection itself failed (I/O, closed).
        None => true,
    };
    let message = match e.as_db_error() {
        Some(db) => format!("PostgreSQL: {}", db.message()),
        None => format!("PostgreSQL: {e}"),
    };
    JournalError { message, transient }
}

impl Postgres {
    /// Connects to `url` and brings the schema up to date.
    pub fn open(url: &str, fsync: Fsync) -> Result<Self, StoreError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| StoreError(format!("cannot start the PostgreSQL runtime: {e}")))?;
        let mut pg = Self {
            rt,
            url: url.to_owned(),
            fsync,
            conn: None,
            swept: None,
            queued: Vec::new(),
            begin: None,
        };
        let client = pg
            .rt
            .block_on(connect(url))
            .map_err(|e| StoreError(format!("cannot connect to PostgreSQL: {}", e.message)))?;
        pg.rt.block_on(migrate(&client))?;
        let st = pg
            .rt
            .block_on(prepare(&client))
            .map_err(|e| StoreError(e.message))?;
        pg.conn = Some(Connected { client, st });
        Ok(pg)
    }

    /// Makes sure there is a connection, reconnecting if the last one was
    /// lost.
    fn connect_again(&mut self) -> Result<(), JournalError> {
        if self.conn.as_ref().is_some_and(|c| c.client.is_closed()) {
            self.conn = None;
        }
        if self.conn.is_none() {
            let client = self.rt.block_on(connect(&self.url))?;
            let st = self.rt.block_on(prepare(&client))?;
            tracing::info!("connected to PostgreSQL again");
            self.conn = Some(Connected { client, st });
        }
        Ok(())
    }

    /// Runs `work` on the connection with a deadline; a failure that is the
    /// connection's drops it, so the next try reconnects.
    fn run<T>(
        &mut self,
        work: impl AsyncFnOnce(&Connected) -> Result<T, tokio_postgres::Error>,
    ) -> Result<T, JournalError> {
        self.connect_again()?;
        let Some(conn) = &self.conn else {
            return Err(transient("PostgreSQL: not connected"));
        };
        let result = self
            .rt
            .block_on(async { tokio::time::timeout(QUERY_TIMEOUT, work(conn)).await });
        let failed = match result {
            Ok(Ok(value)) => return Ok(value),
            Ok(Err(e)) => classify(&e),
            Err(_) => transient("PostgreSQL did not answer in time"),
        };
        if failed.transient {
            self.conn = None;
        }
        Err(failed)
    }
}

impl Postgres {
    /// Sends the changes applied since the last send, pipelined: every
    /// statement goes out at once, in order, and the answers are read after
    /// (one round trip for them all, not one each), the transaction's
    /// `BEGIN` before them if it is not sent yet and, with `commit`, its
    /// `COMMIT` after them. The first failure is the group's (PostgreSQL
    /// refuses the rest of the transaction, and its `COMMIT` rolls back).
    fn send(&mut self, commit: bool) -> Result<(), JournalError> {
        let begin = self.begin.take();
        if self.queued.is_empty() && begin.is_none() && !commit {
            return Ok(());
        }
        let queued = std::mem::take(&mut self.queued);
        let sent = self.run(async |c| {
            let mut replies: Vec<Reply> = Vec::with_capacity(queued.len() * 2 + 2);
            if let Some(sql) = begin {
                replies.push(Box::pin(async move {
                    c.client.batch_execute(sql).await.map(|()| 0)
                }));
            }
            for (change, cap) in &queued {
                statements(c, change, *cap, &mut replies);
            }
            if commit {
                replies.push(Box::pin(async move {
                    c.client.batch_execute("COMMIT").await.map(|()| 0)
                }));
            }
            in_order(replies).await
        });
        // The list's storage is kept for the next changes.
        self.queued = queued;
        self.queued.clear();
        sent
    }
}

/// The answer to one statement of a pipeline.
type Reply<'a> = Pin<Box<dyn Future<Output = Result<u64, tokio_postgres::Error>> + 'a>>;

/// Waits for `replies`, polling every one in order each time: a statement
/// is sent when its future is first polled, so they reach the database in
/// this order (an edit after the post it edits, a second edit after the
/// first). The first failure is returned.
async fn in_order(mut replies: Vec<Reply<'_>>) -> Result<(), tokio_postgres::Error> {
    let mut done = vec![false; replies.len()];
    std::future::poll_fn(|cx| {
        let mut waiting = false;
        for (reply, done) in replies.iter_mut().zip(done.iter_mut()) {
            if *done {
                continue;
            }
            match reply.as_mut().poll(cx) {
                Poll::Ready(Ok(_)) => *done = true,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => waiting = true,
            }
        }
        if waiting {
            Poll::Pending
        } else {
            Poll::Ready(Ok(()))
        }
    })
    .await
}

/// The statements that write `change` (`cap`: the seq up to which a post
/// trims its room), each sent as soon as it is first polled.
fn statements<'a>(
    c: &'a Connected,
    change: &'a Change,
    cap: Option<u64>,
    out: &mut Vec<Reply<'a>>,
) {
    let (client, st) = (&c.client, &c.st);
    let room = change.room();
    match change {
        Change::Post {
            message: m,
            reserve_through,
            ..
        } => {
            out.push(Box::pin(async move {
                let attachment = m
                    .attachment
                    .as_ref()
                    .map(|a| serde_json::to_string(a).unwrap_or_default());
                client
                    .execute(
                        &st.insert,
                        &[
                            &room,
                            &seq_param(m.seq),
                            &m.id.as_str(),
                            &m.user.as_str(),
                            &m.identity.as_str(),
                            &m.content,
                            &m.timestamp.as_str(),
                            &timestamp_ms(&m.timestamp),
                            &attachment,
                            &m.edited_at,
                            &m.reactions.to_store_json(),
                            &m.client_id,
                        ],
                    )
                    .await
            }));
            if let Some(r) = reserve_through {
                out.push(Box::pin(async move {
                    client.execute(&st.reserve, &[&room, &seq_param(*r)]).await
                }));
            }
            if let Some(cap) = cap {
                out.push(Box::pin(async move {
                    client.execute(&st.cap, &[&room, &seq_param(cap)]).await
                }));
            }
        }
        Change::Edit {
            message_id,
            seq,
            content,
            edited_at,
            ..
        } => out.push(Box::pin(async move {
            let values: [&(dyn ToSql + Sync); 6] = [
                content,
                edited_at,
                message_id,
                &room,
                &seq_param(*seq),
                &now_ms(),
            ];
            client.execute(&st.edit, &values).await
        })),
        Change::React {
            message_id,
            seq,
            reactions,
            ..
        } => out.push(Box::pin(async move {
            let values: [&(dyn ToSql + Sync); 5] =
                [reactions, message_id, &room, &seq_param(*seq), &now_ms()];
            client.execute(&st.react, &values).await
        })),
        Change::Attachment {
            message_id,
            seq,
            attachment,
            ..
        } => out.push(Box::pin(async move {
            let values: [&(dyn ToSql + Sync); 4] =
                [attachment, message_id, &room, &seq_param(*seq)];
            client.execute(&st.attachment, &values).await
        })),
        Change::Delete {
            message_id, seq, ..
        } => out.push(Box::pin(async move {
            let values: [&(dyn ToSql + Sync); 4] = [message_id, &room, &seq_param(*seq), &now_ms()];
            client.execute(&st.delete, &values).await
        })),
        Change::Settle { last_seq, .. } => out.push(Box::pin(async move {
            client
                .execute(&st.settle, &[&room, &seq_param(*last_seq)])
                .await
        })),
    }
}

async fn connect(url: &str) -> Result<Client, JournalError> {
    let connecting = tokio_postgres::connect(url, NoTls);
    let (client, connection) = match tokio::time::timeout(CONNECT_TIMEOUT, connecting).await {
        Ok(Ok(pair)) => pair,
        Ok(Err(e)) => return Err(classify(&e)),
        Err(_) => return Err(transient("PostgreSQL: connecting timed out")),
    };
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!("PostgreSQL connection ended: {e}");
        }
    });
    Ok(client)
}

async fn migrate(client: &Client) -> Result<(), StoreError> {
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

async fn prepare(c: &Client) -> Result<Statements, JournalError> {
    let p = async |sql: &str| c.prepare(sql).await.map_err(|e| classify(&e));
    Ok(Statements {
        // A post whose place holds a change that came first takes its
        // edit and reactions; a place marked deleted keeps it out.
        insert: p("INSERT INTO roomcast_messages (room, seq, id, user_name, identity, content, \
                   created, created_ms, attachment, edited_at, reactions, client_id) \
                   VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) \
                   ON CONFLICT (room, seq) DO UPDATE SET \
                   user_name = excluded.user_name, identity = excluded.identity, \
                   content = CASE WHEN roomcast_messages.edited_at IS NULL \
                     THEN excluded.content ELSE roomcast_messages.content END, \
                   edited_at = coalesce(roomcast_messages.edited_at, excluded.edited_at), \
                   created = excluded.created, created_ms = excluded.created_ms, \
                   attachment = excluded.attachment, client_id = excluded.client_id, status = 0 \
                   WHERE roomcast_messages.id = excluded.id AND roomcast_messages.status = 1")
        .await?,
        reserve: p("INSERT INTO roomcast_rooms (room, seq_reserved) VALUES ($1, $2) \
                    ON CONFLICT (room) DO UPDATE \
                    SET seq_reserved = greatest(roomcast_rooms.seq_reserved, excluded.seq_reserved)")
        .await?,
        cap: p("DELETE FROM roomcast_messages WHERE room = $1 AND seq <= $2").await?,
        // A change finds its message by (room, seq), the primary key, and
        // checks the id: a seq that holds another message changes nothing.
        // With no row there yet, the change takes the message's place
        // (status 1) until its post comes.
        edit: p("INSERT INTO roomcast_messages (room, seq, id, user_name, identity, content, \
                 created, created_ms, edited_at, status) \
                 VALUES ($4, $5, $3, '', '', $1, '', $6, $2, 1) \
                 ON CONFLICT (room, seq) DO UPDATE \
                 SET content = excluded.content, edited_at = excluded.edited_at \
                 WHERE roomcast_messages.id = excluded.id AND roomcast_messages.status <> 2")
        .await?,
        react: p("INSERT INTO roomcast_messages (room, seq, id, user_name, identity, content, \
                  created, created_ms, reactions, status) \
                  VALUES ($3, $4, $2, '', '', '', '', $5, $1, 1) \
                  ON CONFLICT (room, seq) DO UPDATE SET reactions = excluded.reactions \
                  WHERE roomcast_messages.id = excluded.id AND roomcast_messages.status <> 2")
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
        prune: p("DELETE FROM roomcast_messages WHERE created_ms < $1").await?,
        sweep_early: p("DELETE FROM roomcast_messages WHERE status <> 0 AND created_ms < $1").await?,
        settle: p("UPDATE roomcast_rooms SET seq_reserved = $2 WHERE room = $1").await?,
    })
}

fn seq_param(seq: u64) -> i64 {
    i64::try_from(seq).unwrap_or(i64::MAX)
}

/// A stored row back into a message (see the SQLite store: names read back
/// are never refused).
fn message(r: &Row) -> StoredMessage {
    let attachment: Option<String> = r.get(6);
    let reactions: String = r.get(8);
    StoredMessage {
        seq: u64::try_from(r.get::<_, i64>(0)).unwrap_or(0),
        id: r.get::<_, String>(1).into(),
        user: UserName::from_store(r.get(2)),
        identity: Identity::from_key(r.get::<_, String>(3)),
        content: r.get(4),
        timestamp: r.get::<_, String>(5).into(),
        attachment: attachment.and_then(|a| serde_json::from_str::<Attachment>(&a).ok()),
        edited_at: r.get(7),
        reactions: Reactions::from_store_json(&reactions),
        client_id: r.get(9),
    }
}

impl Journal for Postgres {
    fn begin(&mut self) -> Result<(), JournalError> {
        self.queued.clear();
        if self.swept.is_none_or(|t| t.elapsed() >= EARLY_SWEEP_EVERY) {
            // A transaction of its own, before the group's.
            let cutoff = now_ms().saturating_sub(EARLY_KEPT_MS);
            self.run(async |c| c.client.execute(&c.st.sweep_early, &[&cutoff]).await)?;
            self.swept = Some(std::time::Instant::now());
        }
        // Sent with the group's first statements.
        self.begin = Some(match self.fsync {
            Fsync::Off => "BEGIN; SET LOCAL synchronous_commit = off;",
            Fsync::Always | Fsync::Batch => "BEGIN",
        });
        Ok(())
    }

    fn apply(&mut self, change: &Change, retention: &Retention) -> Result<(), JournalError> {
        let cap = match change {
            Change::Post { message, .. } => retention
                .per_room
                .filter(|cap| message.seq > *cap)
                .map(|cap| message.seq - cap),
            _ => None,
        };
        self.queued.push((change.clone(), cap));
        if self.queued.len() >= PIPELINE {
            self.send(false)?;
        }
        Ok(())
    }

    fn load(&mut self, room: &str, tail: usize, block: u64) -> Result<Snapshot, JournalError> {
        self.send(false)?;
        self.run(async |c| {
            let st = &c.st;
            let newest: Option<i64> = c.client.query_one(&st.newest, &[&room]).await?.get(0);
            let reserved: Option<i64> = c
                .client
                .query_opt(&st.reserved, &[&room])
                .await?
                .map(|r| r.get(0));
            let last = newest.unwrap_or(0).max(reserved.unwrap_or(0)).max(0);
            let last = u64::try_from(last).unwrap_or(0);
            let reserve = last.saturating_add(block);
            c.client
                .execute(&st.set_reserved, &[&room, &seq_param(reserve)])
                .await?;
            let rows = c
                .client
                .query(&st.tail, &[&room, &(tail as i64 + 1)])
                .await?;
            let mut tail_rows: Vec<StoredMessage> = rows.iter().map(message).collect();
            let older = tail_rows.len() > tail;
            tail_rows.truncate(tail);
            tail_rows.reverse();
            Ok(Snapshot {
                tail: tail_rows,
                last_seq: last,
                reserved: reserve,
                older,
            })
        })
    }

    fn page(
        &mut self,
        room: &str,
        q: PageQuery,
    ) -> Result<(Vec<StoredMessage>, bool), JournalError> {
        self.send(false)?;
        self.run(async |c| {
            let before = q.before.map_or(i64::MAX, seq_param);
            let rows = c
                .client
                .query(
                    &c.st.page,
                    &[&room, &seq_param(q.after), &before, &(q.limit as i64 + 1)],
                )
                .await?;
            let mut page: Vec<StoredMessage> = rows.iter().map(message).collect();
            let more = page.len() > q.limit;
            page.truncate(q.limit);
            page.reverse();
            Ok((page, more))
        })
    }

    fn prune(&mut self, older_than_ms: i64) -> Result<u64, JournalError> {
        self.send(false)?;
        self.run(async |c| c.client.execute(&c.st.prune, &[&older_than_ms]).await)
    }

    fn commit(&mut self, _deleted: bool) -> Result<(), JournalError> {
        self.send(true)
    }

    fn rollback(&mut self) {
        self.queued.clear();
        self.begin = None;
        if self.conn.is_some() {
            let _ = self.run(async |c| c.client.batch_execute("ROLLBACK").await);
        }
    }
}

/// Against the shared server at 127.0.0.1:5432 (trust auth, database
/// `test`), in a schema of each test's own, dropped at the end.
#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::store::fixtures::post;

    const SERVER: &str = "postgres://postgres@127.0.0.1:5432/test";
    const T: &str = "2026-12-06T10:00:00.000Z";

    /// A connection of the test's own, outside any journal.
    fn admin() -> (Runtime, Client) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let client = rt.block_on(connect(SERVER)).unwrap_or_else(|e| {
            panic!(
                "PostgreSQL is not reachable at {SERVER} ({}); these tests need it",
                e.message
            )
        });
        (rt, client)
    }

    struct Schema(String);

    impl Schema {
        fn new(tag: &str) -> Self {
            let name = format!("rc_unit_{tag}_{}", std::process::id());
            let (rt, c) = admin();
            rt.block_on(c.batch_execute(&format!(
                "DROP SCHEMA IF EXISTS {name} CASCADE; CREATE SCHEMA {name}"
            )))
            .unwrap();
            Self(name)
        }

        fn url(&self) -> String {
            format!("{SERVER}?options=-csearch_path%3D{}", self.0)
        }
    }

    impl Drop for Schema {
        fn drop(&mut self) {
            let (rt, c) = admin();
            let _ = rt.block_on(c.batch_execute(&format!("DROP SCHEMA {} CASCADE", self.0)));
        }
    }

    fn commit(store: &mut Postgres, change: &Change) {
        store.begin().unwrap();
        store.apply(change, &Retention::default()).unwrap();
        store.commit(false).unwrap();
    }

    /// Removes every row, for the next case.
    fn empty(store: &mut Postgres) {
        store.begin().unwrap();
        store
            .run(async |c| c.client.execute("DELETE FROM roomcast_messages", &[]).await)
            .unwrap();
        store.commit(true).unwrap();
    }

    /// The room's messages as `(seq, content, edited, reactions)`.
    fn shown(store: &mut Postgres) -> Vec<(u64, String, bool, String)> {
        let snapshot = store.load("r", 100, 1).unwrap();
        snapshot
            .tail
            .into_iter()
            .map(|m| {
                let reactions = m.reactions.to_store_json();
                (m.seq, m.content, m.edited_at.is_some(), reactions)
            })
            .collect()
    }

    /// A change to message 1 that another instance makes, its seq and id
    /// as Redis answered them.
    fn changes() -> [Change; 3] {
        [
            Change::Edit {
                room: "r".into(),
                message_id: "r-1".into(),
                seq: 1,
                content: "edited".into(),
                edited_at: T.into(),
            },
            Change::React {
                room: "r".into(),
                message_id: "r-1".into(),
                seq: 1,
                reactions: r#"[["🐘",["bob"]]]"#.into(),
            },
            Change::Delete {
                room: "r".into(),
                message_id: "r-1".into(),
                seq: 1,
            },
        ]
    }

    /// What the room must hold once both the post and `change` are in.
    fn expected(change: &Change) -> Vec<(u64, String, bool, String)> {
        match change {
            Change::Edit { .. } => vec![(1, "edited".into(), true, "[]".into())],
            Change::React { reactions, .. } => {
                let stored = Reactions::from_store_json(reactions).to_store_json();
                vec![(1, "m1".into(), false, stored)]
            }
            _ => vec![],
        }
    }

    #[test]
    fn a_change_committed_before_its_post_is_applied_to_it() {
        let schema = Schema::new("before");
        let mut author = Postgres::open(&schema.url(), Fsync::Off).unwrap();
        let mut other = Postgres::open(&schema.url(), Fsync::Off).unwrap();
        for change in changes() {
            commit(&mut other, &change);
            // Nothing shows until the post comes.
            assert_eq!(shown(&mut author), vec![]);
            commit(&mut author, &post("r", 1, T));
            assert_eq!(shown(&mut author), expected(&change), "{change:?}");
            // A retried post (its commit's answer lost) changes nothing.
            commit(&mut author, &post("r", 1, T));
            assert_eq!(shown(&mut other), expected(&change), "{change:?}");
            empty(&mut other);
        }
    }

    /// One group, sent in pipelines of [`PIPELINE`]: every change is
    /// applied in the order given (the second edit wins), and a read in the
    /// middle of the group sees what came before it.
    #[test]
    fn a_group_is_written_in_order_across_its_pipelines() {
        let schema = Schema::new("order");
        let mut store = Postgres::open(&schema.url(), Fsync::Off).unwrap();
        let edit = |content: &str| Change::Edit {
            room: "r".into(),
            message_id: "r-1".into(),
            seq: 1,
            content: content.into(),
            edited_at: T.into(),
        };
        let n = 2 * PIPELINE as u64 + 10;
        store.begin().unwrap();
        let none = Retention::default();
        for seq in 1..=n {
            store.apply(&post("r", seq, T), &none).unwrap();
            if seq == PIPELINE as u64 - 1 {
                // The two edits straddle the first pipeline's end.
                store.apply(&edit("one"), &none).unwrap();
                store.apply(&edit("two"), &none).unwrap();
            }
        }
        let (page, more) = store
            .page(
                "r",
                PageQuery {
                    after: 0,
                    before: None,
                    limit: 1,
                },
            )
            .unwrap();
        assert_eq!((page[0].seq, more), (n, true));
        store.apply(&changes()[2], &none).unwrap();
        store.commit(true).unwrap();
        let tail = shown(&mut store);
        assert_eq!(tail.len(), 100);
        assert_eq!(tail[99].0, n);
        let (first, _) = store
            .page(
                "r",
                PageQuery {
                    after: 0,
                    before: Some(3),
                    limit: 10,
                },
            )
            .unwrap();
        // Message 1 was deleted after its edits; 2 is as posted.
        assert_eq!(first.len(), 1);
        assert_eq!((first[0].seq, first[0].content.as_str()), (2, "m2"));
        empty(&mut store);
        // And without the delete, the last edit is what stays.
        store.begin().unwrap();
        for change in [post("r", 1, T), edit("one"), edit("two")] {
            store.apply(&change, &none).unwrap();
        }
        store.commit(false).unwrap();
        assert_eq!(shown(&mut store)[0].1, "two");
    }

    /// A statement that fails inside a pipeline fails the group, although
    /// its `COMMIT` was sent behind it: nothing of the group is kept, and
    /// the store goes on.
    #[test]
    fn a_failing_statement_keeps_nothing_of_its_group() {
        let schema = Schema::new("failing");
        let mut store = Postgres::open(&schema.url(), Fsync::Off).unwrap();
        let none = Retention::default();
        commit(&mut store, &post("r", 1, T));
        // Message r-1's id again, at another seq: the id is unique.
        let Change::Post { message, .. } = post("r", 1, T) else {
            unreachable!()
        };
        let again = Change::Post {
            room: "r".into(),
            message: Arc::new(StoredMessage {
                seq: 3,
                ..(*message).clone()
            }),
            reserve_through: None,
        };
        store.begin().unwrap();
        for change in [post("r", 2, T), again, post("r", 4, T)] {
            store.apply(&change, &none).unwrap();
        }
        let failed = store.commit(false).expect_err("a duplicate id");
        assert!(!failed.transient, "{}", failed.message);
        store.rollback();
        assert_eq!(shown(&mut store).len(), 1);
        commit(&mut store, &post("r", 2, T));
        let seqs: Vec<u64> = shown(&mut store).iter().map(|m| m.0).collect();
        assert_eq!(seqs, [1, 2]);
    }

    /// The post's transaction and the change's overlap: the change's
    /// statement runs while the post is written but not committed, so it
    /// cannot see the post's row, and waits for it.
    #[test]
    fn a_change_made_while_its_post_is_being_written_waits_for_it() {
        let schema = Schema::new("overlap");
        let url = schema.url();
        let (rt, watcher) = admin();
        for change in changes() {
            let mut author = Postgres::open(&url, Fsync::Off).unwrap();
            let mut other = Postgres::open(&url, Fsync::Off).unwrap();
            let pid: i32 = other
                .run(async |c| c.client.query_one("SELECT pg_backend_pid()", &[]).await)
                .unwrap()
                .get(0);
            author.begin().unwrap();
            author
                .apply(&post("r", 1, T), &Retention::default())
                .unwrap();
            // Written, not committed (the rest of its group still to come).
            author.send(false).unwrap();
            let changing = std::thread::spawn({
                let change = change.clone();
                move || {
                    commit(&mut other, &change);
                    other
                }
            });
            // Until the change's statement waits on the post's row.
            let deadline = std::time::Instant::now() + Duration::from_secs(15);
            loop {
                let waiting = rt
                    .block_on(watcher.query_opt(
                        "SELECT 1 FROM pg_stat_activity WHERE pid = $1 AND wait_event_type = 'Lock'",
                        &[&pid],
                    ))
                    .unwrap();
                if waiting.is_some() {
                    break;
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "the change never waited"
                );
                std::thread::sleep(Duration::from_millis(5));
            }
            author.commit(false).unwrap();
            let mut other = changing.join().unwrap();
            assert_eq!(shown(&mut author), expected(&change), "{change:?}");
            empty(&mut other);
        }
    }
}
