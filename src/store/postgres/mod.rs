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
//! the group, reconnects and commits it when the database is back (the
//! whole group again: a transaction whose connection was lost midway is
//! never finished on another).
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
//! [`EARLY_KEPT_MS`] are swept. For the same reason two instances' edits,
//! or reactions, of one message can land in either order: each carries the
//! message's version from the backbone, and a row keeps the highest
//! (`edit_version`, `reactions_version`).

mod pipeline;
mod schema;

use std::time::Duration;

use tokio::runtime::Runtime;
use tokio_postgres::{Client, NoTls, Row};

use super::writer::{Journal, JournalError};
use super::{Fsync, Retention, now_ms};
use crate::hub::{
    Attachment, Change, Identity, PageQuery, Reactions, Snapshot, StoreError, StoredMessage,
    UserName,
};
use schema::{Statements, migrate, prepare};

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
    /// Changes applied but not sent yet, with the count of messages a post
    /// trims its room to: sent together before a read, the commit, or once
    /// [`PIPELINE`] wait.
    queued: Vec<(Change, Option<u64>)>,
    /// The transaction's `BEGIN`, until it is sent with the first
    /// statements (so a group of one change is one round trip).
    begin: Option<&'static str>,
    /// `BEGIN` went out and neither `COMMIT` nor `ROLLBACK` since: what
    /// the transaction wrote lives on this connection alone, so losing it
    /// fails the whole transaction (see [`Postgres::connect_again`]).
    in_transaction: bool,
}

fn transient(message: &str) -> JournalError {
    JournalError {
        message: message.to_owned(),
        transient: true,
        full: false,
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
    // 53100: disk_full.
    let full = e.code().is_some_and(|c| c.code() == "53100");
    JournalError {
        message,
        transient,
        full,
    }
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
            in_transaction: false,
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
    /// lost between transactions. Lost inside one, it is not replaced: the
    /// server rolled back what the transaction had written, and the rest
    /// of the group on a new connection would commit on its own (each
    /// statement in autocommit, the final `COMMIT` a mere warning), the
    /// writer counting the whole group committed. The attempt fails as a
    /// lost connection does, and the writer retries the group from its
    /// start.
    fn connect_again(&mut self) -> Result<(), JournalError> {
        if self.conn.as_ref().is_some_and(|c| c.client.is_closed()) {
            self.conn = None;
        }
        if self.conn.is_none() {
            if self.in_transaction {
                return Err(transient(
                    "PostgreSQL: the connection was lost during a transaction",
                ));
            }
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

impl Journal for Postgres {
    fn begin(&mut self) -> Result<(), JournalError> {
        self.queued.clear();
        if self.swept.is_none_or(|t| t.elapsed() >= EARLY_SWEEP_EVERY) {
            // A transaction of its own, before the group's, and best
            // effort: failing, it would fail the group, which would then be
            // split and each change skipped as if at fault. It is tried
            // again in an hour.
            let cutoff = now_ms().saturating_sub(EARLY_KEPT_MS);
            if let Err(e) =
                self.run(async |c| c.client.execute(&c.st.sweep_early, &[&cutoff]).await)
            {
                tracing::warn!(
                    "sweeping changes that never met their post failed ({})",
                    e.message
                );
            }
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
        // The cap's statement reads past the room's newest `cap` messages
        // in its index: it runs with every CAP_EVERY-th post, not each. A
        // room with no more seqs than the cap cannot hold more messages.
        let cap = match change {
            Change::Post { message, .. } => retention
                .per_room
                .filter(|cap| message.seq > *cap && message.seq % CAP_EVERY == 0),
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
            let mut tail_rows: Vec<StoredMessage> = rows.iter().filter_map(message).collect();
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
            let mut page: Vec<StoredMessage> = rows.iter().filter_map(message).collect();
            let more = page.len() > q.limit;
            page.truncate(q.limit);
            page.reverse();
            Ok((page, more))
        })
    }

    fn prune(&mut self, older_than_ms: i64, max: u64) -> Result<u64, JournalError> {
        self.send(false)?;
        let max = seq_param(max);
        self.run(async |c| c.client.execute(&c.st.prune, &[&older_than_ms, &max]).await)
    }

    fn reserve(&mut self, room: &str, through: u64) -> Result<(), JournalError> {
        self.send(false)?;
        self.run(async |c| {
            let st = &c.st;
            c.client
                .execute(&st.reserve, &[&room, &seq_param(through)])
                .await
        })
        .map(drop)
    }

    fn commit(&mut self, _deleted: bool) -> Result<(), JournalError> {
        self.send(true)
    }

    fn rollback(&mut self) {
        self.queued.clear();
        self.begin = None;
        // On the transaction's own connection only (never a new one).
        if self.conn.is_some() {
            let _ = self.run(async |c| c.client.batch_execute("ROLLBACK").await);
        }
        self.in_transaction = false;
    }
}

/// How often a capped room's posts trim it (`--retention-messages`): it
/// holds at most the cap and this many less one.
const CAP_EVERY: u64 = 32;

fn seq_param(seq: u64) -> i64 {
    i64::try_from(seq).unwrap_or(i64::MAX)
}

/// A stored row back into a message (see the SQLite store: names read back
/// are never refused); `None`, logged, for a row with a seq below 1 (seqs
/// start at 1): damaged data, skipped as SQLite skips a damaged chunk.
fn message(r: &Row) -> Option<StoredMessage> {
    let seq = r.get::<_, i64>(0);
    let Some(seq) = u64::try_from(seq).ok().filter(|s| *s > 0) else {
        let id: &str = r.get(1);
        tracing::error!(seq, id, "a stored message has no valid seq; skipped");
        return None;
    };
    let attachment: Option<String> = r.get(6);
    let reactions: String = r.get(8);
    Some(StoredMessage {
        seq,
        id: r.get::<_, String>(1).into(),
        user: UserName::from_store(r.get(2)),
        identity: Identity::from_key(r.get::<_, String>(3)),
        content: r.get(4),
        timestamp: r.get::<_, String>(5).into(),
        attachment: attachment.and_then(|a| serde_json::from_str::<Attachment>(&a).ok()),
        edited_at: r.get(7),
        reactions: Reactions::from_store_json(&reactions),
        client_id: r.get(9),
    })
}

#[cfg(test)]
mod tests;
