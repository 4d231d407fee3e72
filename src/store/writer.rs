//! The store's one writer: takes operations from the hub's queue in order,
//! commits changes in groups, answers reads after the commit that covers
//! them, and keeps retrying a group that fails for a reason that passes (a
//! full disk, a lost database connection) until it commits. Nothing it has
//! accepted is dropped: while it retries, the store reports itself degraded
//! and the hub refuses new changes (`unavailable`).
//!
//! A backend is a [`Journal`]: a synchronous transaction interface. The
//! writer runs on its own thread, so a slow disk or database never blocks
//! the async runtime.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use crate::hub::{
    Change, PageQuery, RESERVE_BLOCK, Snapshot, StoreError, StoreInbox, StoreOp, StoredMessage,
};
use crate::metrics::Metrics;

use super::{Fsync, Retention};

/// Why a journal operation failed, and whether trying again can help.
#[derive(Debug)]
pub(crate) struct JournalError {
    pub message: String,
    /// A full disk, an I/O error, a lost connection: retry the group later.
    /// Otherwise the operation itself is at fault (it is skipped alone).
    pub transient: bool,
}

/// A backend's transactions. Every method runs on the writer's thread.
pub(crate) trait Journal: Send + 'static {
    /// Starts a transaction.
    fn begin(&mut self) -> Result<(), JournalError>;
    /// Applies one change inside the transaction (the per-room cap of
    /// `retention`, if any, too).
    fn apply(&mut self, change: &Change, retention: &Retention) -> Result<(), JournalError>;
    /// Reads a room's tail and reserves the next `block` seqs past the
    /// highest it may have handed out.
    fn load(&mut self, room: &str, tail: usize, block: u64) -> Result<Snapshot, JournalError>;
    /// Reads a page: the newest `query.limit` matching messages, oldest
    /// first, and whether more match.
    fn page(
        &mut self,
        room: &str,
        query: PageQuery,
    ) -> Result<(Vec<StoredMessage>, bool), JournalError>;
    /// Deletes messages older than the retention period; returns how many.
    fn prune(&mut self, older_than_ms: i64) -> Result<u64, JournalError>;
    /// Commits the transaction; `deleted` if it removed message content
    /// (a backend may then scrub what the deleted content left on disk).
    fn commit(&mut self, deleted: bool) -> Result<(), JournalError>;
    /// Abandons the transaction.
    fn rollback(&mut self);
}

/// How the writer groups and keeps changes.
pub(crate) struct Policy {
    pub fsync: Fsync,
    pub retention: Retention,
}

impl Policy {
    /// Changes committed in one transaction at most.
    fn max_group(&self) -> usize {
        match self.fsync {
            Fsync::Always => 1,
            Fsync::Batch | Fsync::Off => 512,
        }
    }
}

/// What one pass over a group produced, sent only once it is committed.
enum Outcome {
    Loaded(Snapshot),
    Paged((Vec<StoredMessage>, bool)),
    Nothing,
}

/// How long the writer lets changes gather after the first of a group
/// before committing. Without it a lightly loaded writer commits each change
/// alone (a transaction, a WAL append and, with `batch`, an fsync per post),
/// and that per-commit work (the kernel's flushes included) competes with
/// fan-out for the CPU; 2 ms bounds commits to about 500 a second. The
/// wait adds at most this much to the time a change takes to reach the disk.
fn gather(fsync: Fsync) -> Duration {
    match fsync {
        Fsync::Always => Duration::ZERO,
        Fsync::Batch | Fsync::Off => Duration::from_millis(2),
    }
}

const MIN_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// How often messages past the retention period are deleted.
const PRUNE_EVERY: Duration = Duration::from_secs(600);

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Runs until every sender is gone or a `Stop` arrives; then the journal
/// (and its file or connection) is dropped.
pub(crate) fn run(
    mut journal: impl Journal,
    mut inbox: StoreInbox,
    policy: Policy,
    metrics: Arc<Metrics>,
) {
    let max = policy.max_group();
    let wait = gather(policy.fsync);
    let mut last_prune: Option<Instant> = None;
    let mut stop: Option<oneshot::Sender<()>> = None;
    while stop.is_none() {
        let Some(first) = inbox.rx.blocking_recv() else {
            break;
        };
        let mut group = vec![first];
        let mut changes = usize::from(matches!(group[0], StoreOp::Change(..)));
        // Reads and stops are answered at once; changes wait for company.
        if changes > 0 && !wait.is_zero() && inbox.rx.len() + 1 < max {
            std::thread::sleep(wait);
        }
        while changes < max {
            match inbox.rx.try_recv() {
                Ok(op) => {
                    changes += usize::from(matches!(op, StoreOp::Change(..)));
                    group.push(op);
                }
                Err(_) => break,
            }
        }
        // Everything before a stop is committed; the stop is answered once
        // the journal is closed.
        if let Some(at) = group.iter().position(|op| matches!(op, StoreOp::Stop(_)))
            && let StoreOp::Stop(reply) = group.remove(at)
        {
            stop = Some(reply);
        }
        commit_group(&mut journal, group, &policy, &inbox, &metrics);
        metrics.store_queue.set(inbox.rx.len() as u64);
        if policy.retention.days.is_some() && last_prune.is_none_or(|t| t.elapsed() >= PRUNE_EVERY)
        {
            last_prune = Some(Instant::now());
            prune(&mut journal, &policy.retention, &inbox, &metrics);
        }
    }
    drop(journal);
    if let Some(reply) = stop {
        let _ = reply.send(());
    }
}

/// Commits one group, retrying transient failures until it commits. A
/// group that fails for a reason of its own is split, so one bad change is
/// skipped (and logged) without holding back the others.
fn commit_group(
    journal: &mut impl Journal,
    group: Vec<StoreOp>,
    policy: &Policy,
    inbox: &StoreInbox,
    metrics: &Metrics,
) {
    if group.is_empty() {
        return;
    }
    let mut backoff = MIN_BACKOFF;
    loop {
        match attempt(journal, &group, policy) {
            Ok(outcomes) => {
                if inbox.health.degraded().is_some() {
                    tracing::info!("the history store commits again");
                }
                inbox.health.set_ok();
                finish(group, outcomes, inbox, metrics);
                return;
            }
            Err(e) if e.transient => {
                journal.rollback();
                metrics.store_errors.inc();
                if inbox.health.degraded().is_none() {
                    tracing::warn!(
                        "the history store cannot commit ({}); refusing changes and retrying",
                        e.message
                    );
                }
                inbox.health.set_failing(e.message);
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
            Err(e) if group.len() > 1 => {
                journal.rollback();
                tracing::debug!("a group failed ({}); committing it one by one", e.message);
                for op in group {
                    commit_group(journal, vec![op], policy, inbox, metrics);
                }
                return;
            }
            Err(e) => {
                journal.rollback();
                metrics.store_errors.inc();
                fail_alone(group, &e, inbox);
                return;
            }
        }
    }
}

/// One pass over a group inside one transaction.
fn attempt(
    journal: &mut impl Journal,
    group: &[StoreOp],
    policy: &Policy,
) -> Result<Vec<Outcome>, JournalError> {
    journal.begin()?;
    let mut outcomes = Vec::with_capacity(group.len());
    let mut deleted = false;
    for op in group {
        outcomes.push(match op {
            StoreOp::Change(change, _) => {
                deleted |= matches!(change, Change::Delete { .. });
                journal.apply(change, &policy.retention)?;
                Outcome::Nothing
            }
            StoreOp::Load { room, tail, .. } => {
                Outcome::Loaded(journal.load(room, *tail, RESERVE_BLOCK)?)
            }
            StoreOp::Page { room, query, .. } => Outcome::Paged(journal.page(room, *query)?),
            StoreOp::Flush(_) | StoreOp::Stop(_) => Outcome::Nothing,
        });
    }
    journal.commit(deleted)?;
    Ok(outcomes)
}

/// After a commit: reservations become usable, readers get their answers.
fn finish(group: Vec<StoreOp>, outcomes: Vec<Outcome>, inbox: &StoreInbox, metrics: &Metrics) {
    let mut committed = 0;
    for (op, outcome) in group.into_iter().zip(outcomes) {
        match (op, outcome) {
            (StoreOp::Change(change, durable), _) => {
                committed += 1;
                if let (
                    Some(cell),
                    Change::Post {
                        reserve_through: Some(r),
                        ..
                    },
                ) = (durable, &change)
                {
                    mark_reserved(&cell, *r);
                }
            }
            (StoreOp::Load { reply, .. }, Outcome::Loaded(snapshot)) => {
                let _ = reply.send(Ok(snapshot));
            }
            (StoreOp::Page { reply, .. }, Outcome::Paged(page)) => {
                let _ = reply.send(Ok(page));
            }
            (StoreOp::Flush(reply), _) => {
                let _ = reply.send(());
            }
            _ => {}
        }
    }
    inbox.health.committed(committed);
    metrics.store_commits.inc();
    metrics.store_changes.add(committed);
}

fn mark_reserved(cell: &AtomicU64, through: u64) {
    cell.fetch_max(through, Ordering::AcqRel);
}

/// One operation that fails for a reason of its own: a read is answered
/// with the error; a change is skipped, loudly (it was already shown to
/// the room; only its record is missing).
fn fail_alone(group: Vec<StoreOp>, e: &JournalError, inbox: &StoreInbox) {
    for op in group {
        match op {
            StoreOp::Change(change, _) => {
                inbox.health.committed(1);
                tracing::error!(
                    "the history store refused a change and skipped it ({}): {change:?}",
                    e.message
                );
            }
            StoreOp::Load { reply, .. } => {
                let _ = reply.send(Err(StoreError(e.message.clone())));
            }
            StoreOp::Page { reply, .. } => {
                let _ = reply.send(Err(StoreError(e.message.clone())));
            }
            StoreOp::Flush(reply) => {
                let _ = reply.send(());
            }
            StoreOp::Stop(reply) => {
                let _ = reply.send(());
            }
        }
    }
}

/// Deletes what the retention period no longer keeps (best effort: a
/// failure is retried at the next period).
fn prune(journal: &mut impl Journal, retention: &Retention, inbox: &StoreInbox, metrics: &Metrics) {
    let Some(days) = retention.days else { return };
    let cutoff = now_ms().saturating_sub(i64::from(days).saturating_mul(86_400_000));
    let result = journal
        .begin()
        .and_then(|()| journal.prune(cutoff))
        .and_then(|n| journal.commit(n > 0).map(|()| n));
    match result {
        Ok(0) => {}
        Ok(n) => {
            metrics.store_pruned.add(n);
            tracing::info!(deleted = n, "messages past the retention period deleted");
        }
        Err(e) => {
            journal.rollback();
            if inbox.health.degraded().is_none() {
                tracing::warn!("retention pass failed ({}); trying again later", e.message);
            }
        }
    }
}
