//! Durable history: the backends behind the hub's store port
//! ([`crate::hub::Store`]). `sqlite/` is the default (one file under the
//! data directory, nothing to install); `postgres/` (feature `postgres`)
//! is the store several instances share. Both are [`Journal`]s driven by
//! the one writer in `writer.rs`, on a thread of its own.
//!
//! This module knows rooms only as keys and messages only as rows; it never
//! sees a socket.

// A build with neither durable backend (an embedder keeping history in
// memory) compiles the writer and its helpers without a caller.
#![cfg_attr(
    not(any(feature = "sqlite", feature = "postgres")),
    allow(dead_code, unused_variables)
)]

#[cfg(all(test, any(feature = "sqlite", feature = "postgres")))]
mod fixtures;
#[cfg(feature = "postgres")]
mod postgres;
mod prefetch;
#[cfg(feature = "sqlite")]
mod sqlite;
mod writer;

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;

use tokio::sync::oneshot;

use crate::hub::{Store, StoreError, store_channel};
use crate::metrics::Metrics;
use writer::{Journal, Policy};

/// Where history is kept.
#[derive(Clone, PartialEq, Eq)]
pub enum StoreKind {
    /// In memory only: gone at restart (tests, benchmarks).
    Memory,
    /// An SQLite file in the data directory (the default).
    Sqlite,
    /// A PostgreSQL database, `postgres://user[:password]@host[:port]/db`
    /// (needs feature `postgres`); several instances may share it.
    Postgres(String),
}

impl StoreKind {
    /// Whether several instances can share it (what the Redis backbone
    /// needs: an instance's file is not shared, memory keeps nothing).
    pub fn is_shared(&self) -> bool {
        matches!(self, Self::Postgres(_))
    }
}

impl fmt::Debug for StoreKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Memory => f.write_str("Memory"),
            Self::Sqlite => f.write_str("Sqlite"),
            // The URL may hold a password: never print it.
            Self::Postgres(_) => f.write_str("Postgres(..)"),
        }
    }
}

impl FromStr for StoreKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "memory" => Ok(Self::Memory),
            "sqlite" => Ok(Self::Sqlite),
            url if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
                Ok(Self::Postgres(url.to_owned()))
            }
            _ => Err("expected `sqlite`, `memory` or a postgres://user@host/db URL".to_owned()),
        }
    }
}

/// When the store makes a commit durable on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fsync {
    /// Every change is its own transaction, flushed to disk before the next.
    Always,
    /// Whatever is queued (up to 16 384 changes) is committed and flushed in
    /// one transaction: 2 ms after a change finds the writer idle, and
    /// under load at most every 50 ms.
    Batch,
    /// Grouped as `batch`, never flushed by roomcast: a crash of the process
    /// loses nothing, a crash of the machine may lose the last moments.
    Off,
}

impl FromStr for Fsync {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "always" => Ok(Self::Always),
            "batch" => Ok(Self::Batch),
            "off" => Ok(Self::Off),
            _ => Err("expected always, batch or off".to_owned()),
        }
    }
}

/// What the store deletes by itself. Off by default: everything is kept.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Retention {
    /// Messages older than this many days are deleted (checked every ten
    /// minutes).
    pub days: Option<u32>,
    /// Each room keeps at most its newest this many messages.
    pub per_room: Option<u64>,
}

/// Everything needed to open a store.
#[derive(Debug, Clone)]
pub struct StoreSettings {
    /// Which store.
    pub kind: StoreKind,
    /// Where the SQLite file lives (created at start).
    pub data_dir: PathBuf,
    /// The durability policy.
    pub fsync: Fsync,
    /// What is deleted by itself.
    pub retention: Retention,
    /// Operations the writer's queue holds; beyond it changes are refused.
    pub queue: usize,
    /// Largest the SQLite file may grow, in MiB (`None`: no limit); past it
    /// changes are refused (`unavailable`) until retention makes room.
    pub max_mb: Option<u64>,
}

/// Opens the store: creates or checks its schema (a clear error for a
/// foreign, damaged or newer database), then starts its writer. `None` for
/// the memory store, which has none.
pub async fn open(
    settings: &StoreSettings,
    metrics: Arc<Metrics>,
) -> Result<Option<Store>, StoreError> {
    let policy = Policy {
        fsync: settings.fsync,
        retention: settings.retention,
    };
    match &settings.kind {
        StoreKind::Memory => Ok(None),
        #[cfg(feature = "sqlite")]
        StoreKind::Sqlite => {
            let dir = settings.data_dir.clone();
            let (fsync, max_mb) = (settings.fsync, settings.max_mb);
            start(settings.queue, policy, metrics, move || {
                sqlite::Sqlite::open(&dir, fsync, max_mb)
            })
            .await
            .map(Some)
        }
        #[cfg(not(feature = "sqlite"))]
        StoreKind::Sqlite => Err(StoreError(
            "this build has no SQLite support; rebuild with `--features sqlite` or pass \
             --store memory"
                .into(),
        )),
        #[cfg(feature = "postgres")]
        StoreKind::Postgres(url) => {
            let (url, fsync) = (url.clone(), settings.fsync);
            start(settings.queue, policy, metrics, move || {
                postgres::Postgres::open(&url, fsync)
            })
            .await
            .map(Some)
        }
        #[cfg(not(feature = "postgres"))]
        StoreKind::Postgres(_) => Err(StoreError(
            "this build has no PostgreSQL support; rebuild with `--features postgres`".into(),
        )),
    }
}

/// Opens the journal on the writer's own thread (a backend may keep
/// thread-bound state), reports how that went, then runs the writer there.
async fn start<J: Journal>(
    queue: usize,
    policy: Policy,
    metrics: Arc<Metrics>,
    open: impl FnOnce() -> Result<J, StoreError> + Send + 'static,
) -> Result<Store, StoreError> {
    let (store, inbox) = store_channel(queue);
    let (opened_tx, opened) = oneshot::channel();
    std::thread::Builder::new()
        .name("roomcast-store".into())
        .spawn(move || match open() {
            Ok(journal) => {
                batch_scheduling();
                let _ = opened_tx.send(Ok(()));
                writer::run(journal, inbox, policy, metrics);
            }
            Err(e) => {
                let _ = opened_tx.send(Err(e));
            }
        })
        .map_err(|e| StoreError(format!("cannot start the store's writer thread: {e}")))?;
    opened
        .await
        .map_err(|_| StoreError("the store's writer thread stopped while opening".into()))??;
    Ok(store)
}

/// Marks the calling thread (the writer, and SQLite's checkpoint thread)
/// as batch work for Linux's scheduler (`SCHED_BATCH`): it keeps its fair
/// share of the CPU, so the store never falls behind, but waking up no
/// longer lets it preempt a worker in the middle of fan-out; it runs when
/// the worker's slice ends.
/// On one core shared with fan-out, small rooms in phase at 1.0 M
/// deliveries/s, fan-out's p99 was lower in 13 of 14 alternating pairs
/// (0.66–0.97× but for one lone spike; docs/BENCHMARKS.md, issue 15,
/// "The store's writer as batch work"). Where it cannot be set, the
/// writer keeps the default policy.
#[cfg(all(target_os = "linux", feature = "sqlite"))]
fn batch_scheduling() {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: `param` is a valid sched_param that outlives the call, which
    // only reads it; pid 0 is the calling thread on Linux.
    let done = unsafe { libc::sched_setscheduler(0, libc::SCHED_BATCH, &param) };
    if done != 0 {
        tracing::debug!("the store's writer keeps the default scheduling policy");
    }
}

#[cfg(not(all(target_os = "linux", feature = "sqlite")))]
fn batch_scheduling() {}

/// Milliseconds since the Unix epoch of an RFC 3339 timestamp (what the
/// retention period compares); 0 if it does not parse.
fn timestamp_ms(rfc3339: &str) -> i64 {
    crate::hub::timestamp::millis(rfc3339).map_or(0, |ms| i64::try_from(ms).unwrap_or(i64::MAX))
}

/// Milliseconds since the Unix epoch, now.
fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
