//! A group's changes as statements sent together: each statement goes out
//! when its future is first polled, and the answers are read after, so a
//! group costs a few round trips to the database, not one per change.

use std::future::Future;
use std::pin::Pin;
use std::task::Poll;

use tokio_postgres::types::ToSql;

use super::{Connected, Postgres, seq_param};
use crate::hub::Change;
use crate::store::writer::JournalError;
use crate::store::{now_ms, timestamp_ms};

impl Postgres {
    /// Sends the changes applied since the last send, pipelined: every
    /// statement goes out at once, in order, and the answers are read after
    /// (one round trip for them all, not one each), the transaction's
    /// `BEGIN` before them if it is not sent yet and, with `commit`, its
    /// `COMMIT` after them. The first failure is the group's (PostgreSQL
    /// refuses the rest of the transaction, and its `COMMIT` rolls back).
    pub(super) fn send(&mut self, commit: bool) -> Result<(), JournalError> {
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
        // Open from its `BEGIN` on, whatever the answer (a failure is
        // rolled back by the writer), until its `COMMIT` went out.
        self.in_transaction = !commit && (self.in_transaction || begin.is_some());
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
/// first). The first failure is returned. (Awaiting them one by one after
/// a first pass was tried: 0.81–0.90× the posts a second, in
/// docs/BENCHMARKS.md.)
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

/// The statements that write `change` (`cap`: the count of messages a
/// post trims its room to), each sent as soon as it is first polled.
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
                let held = client
                    .query(
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
                    .await?;
                // Its place holds another message: it is not stored.
                for row in &held {
                    let other: &str = row.get(0);
                    tracing::error!(
                        room,
                        seq = m.seq,
                        id = %m.id,
                        held_by = other,
                        "the history store already holds another message at this seq; \
                         this post is not stored"
                    );
                }
                Ok(held.len() as u64)
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
            version,
            ..
        } => out.push(Box::pin(async move {
            let values: [&(dyn ToSql + Sync); 7] = [
                content,
                edited_at,
                message_id,
                &room,
                &seq_param(*seq),
                &now_ms(),
                &seq_param(*version),
            ];
            client.execute(&st.edit, &values).await
        })),
        Change::React {
            message_id,
            seq,
            reactions,
            version,
            ..
        } => out.push(Box::pin(async move {
            let values: [&(dyn ToSql + Sync); 6] = [
                reactions,
                message_id,
                &room,
                &seq_param(*seq),
                &now_ms(),
                &seq_param(*version),
            ];
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
