//! The chunk table's operations (see `json.rs` for what a chunk holds),
//! inside the writer's open transaction: a room's waiting posts become a
//! chunk; edits, reactions and deletes rewrite the chunk that holds their
//! message, found by (room, seq) on the chunks' unique index and checked
//! by id (no index by id: its insert was a third of a post's cost); the
//! per-room cap and the retention period trim chunks; reads walk a room's
//! chunks newest first.

use rusqlite::types::ValueRef;
use rusqlite::{OptionalExtension, params};

use super::Sqlite;
use super::json;
use super::pending::{Pending, Waiting};
use crate::hub::StoredMessage;
use crate::store::timestamp_ms;

pub(super) fn seq_param(seq: u64) -> i64 {
    i64::try_from(seq).unwrap_or(i64::MAX)
}

/// Why a chunk does not read (a file changed by hand, or damaged): its
/// `messages` is not text (a BLOB, NULL), not UTF-8 (a flipped byte), or
/// not the JSON array it should be. Reads skip such a chunk, retention and
/// the cap delete it whole, and a change to a message in it fails alone.
#[derive(Debug)]
struct Damaged(String);

impl std::fmt::Display for Damaged {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Damaged {}

impl From<serde_json::Error> for Damaged {
    fn from(e: serde_json::Error) -> Self {
        Self(e.to_string())
    }
}

/// A chunk's `messages` as stored, read as a raw value (not as a
/// `String`, whose conversion error would fail the whole operation).
fn text_of(value: ValueRef<'_>) -> Result<&str, Damaged> {
    match value {
        ValueRef::Text(bytes) => {
            std::str::from_utf8(bytes).map_err(|e| Damaged(format!("not UTF-8: {e}")))
        }
        other => Err(Damaged(format!("{} instead of text", other.data_type()))),
    }
}

/// A chunk's `messages`, opened.
fn open_text(value: ValueRef<'_>) -> Result<json::Opened, Damaged> {
    Ok(json::Opened::parse(text_of(value)?)?)
}

/// A chunk that does not read, met by an operation that needs it (a
/// change to one of its messages, a late post in its seq range): that
/// operation fails alone, never the whole store.
fn unreadable(e: Damaged) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(6, rusqlite::types::Type::Text, Box::new(e))
}

/// A message whose seq the room's chunks already hold (a second post with
/// one seq): refused like the unique index of a row per message did.
fn seq_taken(room: &str, seq: u64) -> rusqlite::Error {
    rusqlite::Error::SqliteFailure(
        rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CONSTRAINT),
        Some(format!("room {room:?} already holds seq {seq}")),
    )
}

impl Sqlite {
    /// Writes one room's waiting posts (before a change or a read of it).
    pub(super) fn flush_room(&mut self, room: &str) -> rusqlite::Result<()> {
        match self.pending.remove(room) {
            Some(pending) => self.write_room(room, pending),
            None => Ok(()),
        }
    }

    /// Writes every room's waiting posts. The map keeps its table for the
    /// next commit's rooms.
    pub(super) fn flush(&mut self) -> rusqlite::Result<()> {
        let mut rooms = std::mem::take(&mut self.pending);
        let written = rooms
            .drain()
            .try_for_each(|(room, pending)| self.write_room(&room, pending));
        self.pending = rooms;
        written
    }

    /// One room's waiting posts become a chunk. A room's posts reach the
    /// store in seq order from the room itself; one that does not (a seq
    /// not past the room's stored ones: an embedder's own caller, a file
    /// written by an older build) joins the chunk that spans its seq, or
    /// becomes a chunk of its own in a gap, so a room's chunks never
    /// overlap and read newest first.
    pub(super) fn write_room(&self, room: &str, pending: Pending) -> rusqlite::Result<()> {
        let Pending {
            mut posts,
            mut body,
            cap,
        } = pending;
        let in_order = posts.is_sorted_by_key(|p| p.seq);
        if !in_order {
            posts.sort_by_key(|p| p.seq);
        }
        if let Some(twice) = posts.windows(2).find(|w| w[0].seq == w[1].seq) {
            return Err(seq_taken(room, twice[0].seq));
        }
        if posts.is_empty() {
            return Ok(());
        }
        let stored = match self.newest.get(room) {
            Some(seq) => Some(seq),
            None => self.newest_seq(room)?,
        };
        let late = posts.partition_point(|p| stored.is_some_and(|s| p.seq <= s));
        let fresh = posts.split_off(late);
        if in_order && late == 0 {
            body.push(']');
            self.insert_chunk(room, &fresh, &body)?;
        } else {
            // The body as it came is not the chunk's: put it together again.
            for post in &posts {
                self.place_late(room, post, &body[post.object.clone()])?;
            }
            if !fresh.is_empty() {
                let joined = json::join(fresh.iter().map(|p| &body[p.object.clone()]));
                self.insert_chunk(room, &fresh, &joined)?;
            }
        }
        self.spare.give(body);
        match cap {
            Some(cap) => {
                self.kept.moved(room, (posts.len() + fresh.len()) as u64, 0);
                self.hold_to(room, cap)
            }
            None => Ok(()),
        }
    }

    /// Keeps `room`'s newest `cap` messages only (the per-room cap).
    fn hold_to(&self, room: &str, cap: u64) -> rusqlite::Result<()> {
        let kept = match self.kept.get(room) {
            Some(kept) => kept,
            None => {
                let counted: i64 = self
                    .conn
                    .prepare_cached(
                        "SELECT coalesce(sum(count), 0) FROM roomcast_chunks WHERE room = ?1",
                    )?
                    .query_row([room], |r| r.get(0))?;
                let counted = u64::try_from(counted).unwrap_or(0);
                self.kept.set(room, counted);
                counted
            }
        };
        if kept > cap {
            let removed = self.remove_oldest(room, kept - cap)?;
            self.kept.moved(room, 0, removed);
            self.scrub.replaced();
        }
        Ok(())
    }

    /// Deletes `room`'s `n` oldest messages: whole chunks by their
    /// `count`, unread, and the part of one; returns how many went.
    fn remove_oldest(&self, room: &str, n: u64) -> rusqlite::Result<u64> {
        let mut removed = 0;
        while removed < n {
            let oldest: Option<(i64, i64)> = self
                .conn
                .prepare_cached(
                    "SELECT rowid, count FROM roomcast_chunks WHERE room = ?1 \
                     ORDER BY first_seq LIMIT 1",
                )?
                .query_row([room], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()?;
            let Some((rowid, count)) = oldest else {
                break;
            };
            let left = n - removed;
            if u64::try_from(count).unwrap_or(0) <= left {
                removed += self.drop_chunk(rowid)?;
                continue;
            }
            let opened = self.conn.query_row(
                "SELECT messages FROM roomcast_chunks WHERE rowid = ?1",
                [rowid],
                |r| Ok(open_text(r.get_ref(0)?)),
            )?;
            match opened {
                Ok(mut opened) => {
                    removed += opened.remove_oldest(left);
                    self.rewrite(rowid, &opened)?;
                }
                Err(e) => {
                    // Nobody can read it (reads skip it): it goes whole.
                    tracing::error!(
                        room,
                        "a history chunk does not read ({e}); deleted with its messages"
                    );
                    removed += self.drop_chunk(rowid)?;
                }
            }
        }
        Ok(removed)
    }

    /// The highest seq the room's chunks hold (its newest chunk's last),
    /// looked up (and kept in [`Sqlite::newest`]).
    pub(super) fn newest_seq(&self, room: &str) -> rusqlite::Result<Option<u64>> {
        let last: Option<i64> = self
            .conn
            .prepare_cached(
                "SELECT last_seq FROM roomcast_chunks WHERE room = ?1 \
                 ORDER BY first_seq DESC LIMIT 1",
            )?
            .query_row([room], |r| r.get(0))
            .optional()?;
        let last = last.and_then(|s| u64::try_from(s).ok());
        if let Some(seq) = last {
            self.newest.raise(room, seq);
        }
        Ok(last)
    }

    fn insert_chunk(&self, room: &str, posts: &[Waiting], body: &str) -> rusqlite::Result<()> {
        let (first, last) = (posts[0].seq, posts[posts.len() - 1].seq);
        let oldest = posts.iter().map(|p| p.ms).min().unwrap_or(0);
        let newest = posts.iter().map(|p| p.ms).max().unwrap_or(0);
        self.logged(body.len());
        self.conn
            .prepare_cached(
                "INSERT INTO roomcast_chunks \
                 (room, first_seq, last_seq, oldest_ms, newest_ms, count, messages) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?
            .execute(params![
                room,
                seq_param(first),
                seq_param(last),
                oldest,
                newest,
                posts.len() as i64,
                body
            ])
            .map(|_| self.newest.raise(room, last))
    }

    /// The chunk of `room` whose seq range holds `seq`: its rowid and
    /// `messages`, opened (one that does not read is an error). A change
    /// checks the id of the message it finds there: a chunk found by seq
    /// alone may not hold it.
    fn spanning(&self, room: &str, seq: u64) -> rusqlite::Result<Option<(i64, json::Opened)>> {
        let found = self
            .conn
            .prepare_cached(
                "SELECT rowid, last_seq, messages FROM roomcast_chunks \
                 WHERE room = ?1 AND first_seq <= ?2 ORDER BY first_seq DESC LIMIT 1",
            )?
            .query_row(params![room, seq_param(seq)], |r| {
                let last: i64 = r.get(1)?;
                if last < seq_param(seq) {
                    return Ok(None);
                }
                Ok(Some((r.get(0)?, open_text(r.get_ref(2)?))))
            })
            .optional()?
            .flatten();
        found
            .map(|(rowid, opened)| Ok((rowid, opened.map_err(unreadable)?)))
            .transpose()
    }

    /// A post whose seq is not past the room's newest stored one, with its
    /// JSON object: it joins the chunk whose seq range holds it, or becomes
    /// a chunk of its own in a gap.
    fn place_late(&self, room: &str, post: &Waiting, object: &str) -> rusqlite::Result<()> {
        match self.spanning(room, post.seq)? {
            Some((rowid, mut opened)) => {
                if !opened
                    .insert(object)
                    .map_err(|e| unreadable(Damaged::from(e)))?
                {
                    return Err(seq_taken(room, post.seq));
                }
                self.rewrite(rowid, &opened)
            }
            None => {
                let body = json::join(std::iter::once(object));
                self.insert_chunk(room, std::slice::from_ref(post), &body)
            }
        }
    }

    /// Writes a changed chunk back (or deletes it, emptied).
    fn rewrite(&self, rowid: i64, opened: &json::Opened) -> rusqlite::Result<()> {
        if opened.is_empty() {
            return self
                .conn
                .prepare_cached("DELETE FROM roomcast_chunks WHERE rowid = ?1")?
                .execute([rowid])
                .map(drop);
        }
        let (first, last) = opened.seq_range();
        let times: Vec<i64> = opened.timestamps().map(timestamp_ms).collect();
        let oldest = times.iter().copied().min().unwrap_or(0);
        let newest = times.iter().copied().max().unwrap_or(0);
        let body = opened.body();
        self.logged(body.len());
        self.conn
            .prepare_cached(
                "UPDATE roomcast_chunks SET first_seq = ?2, last_seq = ?3, oldest_ms = ?4, \
                 newest_ms = ?5, count = ?6, messages = ?7 WHERE rowid = ?1",
            )?
            .execute(params![
                rowid,
                seq_param(first),
                seq_param(last),
                oldest,
                newest,
                opened.len() as i64,
                body
            ])
            .map(drop)
    }

    /// Changes one message's fields in place (nothing if the room holds no
    /// message with this seq and id).
    pub(super) fn change_message(
        &self,
        room: &str,
        (seq, id): (u64, &str),
        change: impl FnOnce(&mut serde_json::Map<String, serde_json::Value>),
    ) -> rusqlite::Result<()> {
        let Some((rowid, mut opened)) = self.spanning(room, seq)? else {
            return Ok(());
        };
        match opened.find(seq, id) {
            Some(message) => change(message),
            None => return Ok(()),
        }
        self.rewrite(rowid, &opened)
    }

    /// Deletes one message (nothing if the room holds no message with this
    /// seq and id).
    pub(super) fn delete_message(
        &self,
        room: &str,
        (seq, id): (u64, &str),
    ) -> rusqlite::Result<()> {
        if let Some((rowid, mut opened)) = self.spanning(room, seq)?
            && opened.remove(seq, id)
        {
            self.kept.moved(room, 0, 1);
            return self.rewrite(rowid, &opened);
        }
        // Trimmed already by the cap or the retention period, or never
        // stored (a delete that overtook its post).
        tracing::debug!(room, seq, id, "a delete found no stored message");
        Ok(())
    }

    /// Deletes the messages `gone` picks (by seq and timestamp) from the
    /// chunks `select` finds, a batch at a time, until none is left or
    /// `max` went (one batch may take it past); a chunk it rewrites must
    /// no longer match `select`. Returns how many messages went.
    pub(super) fn delete_where(
        &self,
        select: &str,
        args: &[&dyn rusqlite::ToSql],
        gone: impl Fn(u64, &str) -> bool,
        max: u64,
    ) -> rusqlite::Result<u64> {
        let mut deleted = 0;
        while deleted < max {
            let batch: Vec<(i64, Result<json::Opened, Damaged>)> = self
                .conn
                .prepare_cached(select)?
                .query_map(args, |r| Ok((r.get(0)?, open_text(r.get_ref(1)?))))?
                .collect::<rusqlite::Result<_>>()?;
            if batch.is_empty() {
                return Ok(deleted);
            }
            for (rowid, opened) in batch {
                let mut opened = match opened {
                    Ok(opened) => opened,
                    Err(e) => {
                        // Nobody can read it (reads skip it); left in place
                        // it would stop this loop, and every post to a
                        // capped room, for good.
                        tracing::error!(
                            "a history chunk does not read ({e}); deleted with its messages"
                        );
                        deleted += self.drop_chunk(rowid)?;
                        continue;
                    }
                };
                deleted += opened.remove_where(&gone);
                self.rewrite(rowid, &opened)?;
            }
        }
        Ok(deleted)
    }

    /// Deletes a chunk whatever it holds; returns how many messages its row
    /// said it had (for a chunk that does not read, or that the cap takes
    /// whole).
    fn drop_chunk(&self, rowid: i64) -> rusqlite::Result<u64> {
        let count: i64 = self.conn.query_row(
            "SELECT count FROM roomcast_chunks WHERE rowid = ?1",
            [rowid],
            |r| r.get(0),
        )?;
        self.conn
            .execute("DELETE FROM roomcast_chunks WHERE rowid = ?1", [rowid])?;
        Ok(u64::try_from(count).unwrap_or(0))
    }

    /// A room's newest chunks, newest first, through `each` until it says
    /// it has enough.
    pub(super) fn newest_first(
        &self,
        room: &str,
        before: u64,
        mut each: impl FnMut(i64, Vec<StoredMessage>) -> bool,
    ) -> rusqlite::Result<()> {
        let mut st = self.conn.prepare_cached(
            "SELECT last_seq, messages FROM roomcast_chunks WHERE room = ?1 AND first_seq < ?2 \
             ORDER BY first_seq DESC",
        )?;
        let mut rows = st.query(params![room, seq_param(before)])?;
        while let Some(row) = rows.next()? {
            let last: i64 = row.get(0)?;
            let decoded =
                text_of(row.get_ref(1)?).and_then(|body| json::decode(body).map_err(Damaged::from));
            let mut messages = match decoded {
                Ok(messages) => messages,
                Err(e) => {
                    // One damaged row costs its own messages, not the room.
                    tracing::error!(
                        room,
                        last_seq = last,
                        "a history chunk does not read ({e}); skipped"
                    );
                    continue;
                }
            };
            // Seqs start at 1: a message numbered 0 is damaged data too
            // (a room's numbering would wrap below it).
            let read = messages.len();
            messages.retain(|m| m.seq > 0);
            if messages.len() < read {
                tracing::error!(
                    room,
                    last_seq = last,
                    "a history chunk holds a message with seq 0; skipped"
                );
            }
            if !each(last, messages) {
                break;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
pub(super) mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::hub::{Change, PageQuery};
    pub(in crate::store::sqlite) use crate::store::fixtures::message;
    use crate::store::fixtures::post;
    use crate::store::sqlite::json::MAX_MESSAGES;
    use crate::store::sqlite::schema::{APPLICATION_ID, MIGRATIONS};
    use crate::store::writer::Journal;
    use crate::store::{Fsync, Retention};

    /// A scratch directory, removed when dropped.
    pub(in crate::store::sqlite) struct Scratch(pub(in crate::store::sqlite) PathBuf);

    impl Scratch {
        pub(in crate::store::sqlite) fn new(name: &str) -> Self {
            let dir =
                std::env::temp_dir().join(format!("roomcast-chunks-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            Self(dir)
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    pub(in crate::store::sqlite) const T: &str = "2026-12-03T10:00:00.000Z";

    /// Commits `changes` in one transaction, as the writer does.
    pub(in crate::store::sqlite) fn commit(
        store: &mut Sqlite,
        changes: &[Change],
        retention: &Retention,
    ) {
        store.begin().unwrap();
        for change in changes {
            store.apply(change, retention).unwrap();
        }
        store.commit(false).unwrap();
    }

    fn page(store: &mut Sqlite, after: u64, before: Option<u64>, limit: usize) -> (Vec<u64>, bool) {
        let (messages, more) = store
            .page(
                "r",
                PageQuery {
                    after,
                    before,
                    limit,
                },
            )
            .unwrap();
        (messages.iter().map(|m| m.seq).collect(), more)
    }

    /// Room `r`'s stored messages, oldest first.
    fn history(store: &mut Sqlite) -> Vec<StoredMessage> {
        let query = PageQuery {
            after: 0,
            before: None,
            limit: 100,
        };
        store.page("r", query).unwrap().0
    }

    fn seqs_and_contents(messages: &[StoredMessage]) -> Vec<(u64, &str)> {
        messages
            .iter()
            .map(|m| (m.seq, m.content.as_str()))
            .collect()
    }

    fn chunks(store: &Sqlite) -> Vec<(i64, i64)> {
        store
            .conn
            .prepare("SELECT first_seq, last_seq FROM roomcast_chunks WHERE room = 'r' ORDER BY first_seq")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap()
    }

    /// How many messages the chunks say they hold.
    fn counted(store: &Sqlite) -> i64 {
        store
            .conn
            .query_row(
                "SELECT coalesce(sum(count), 0) FROM roomcast_chunks",
                [],
                |r| r.get(0),
            )
            .unwrap()
    }

    #[test]
    fn posts_out_of_order_join_the_chunk_that_spans_them_and_pages_stay_whole() {
        let scratch = Scratch::new("order");
        let mut store = Sqlite::open(&scratch.0, Fsync::Off, None).unwrap();
        let none = Retention::default();
        commit(&mut store, &[1, 2, 5, 6].map(|s| post("r", s, T)), &none);
        // 4 falls inside the stored chunk 1..6, 9 and 8 come in reverse and
        // 7 after them: nothing overlaps, every page is complete.
        commit(&mut store, &[9, 4, 8].map(|s| post("r", s, T)), &none);
        commit(&mut store, &[post("r", 7, T)], &none);
        let spans = chunks(&store);
        for pair in spans.windows(2) {
            assert!(pair[0].1 < pair[1].0, "chunks overlap: {spans:?}");
        }
        assert_eq!(
            page(&mut store, 0, None, 100),
            (vec![1, 2, 4, 5, 6, 7, 8, 9], false)
        );
        assert_eq!(page(&mut store, 0, Some(8), 3), (vec![5, 6, 7], true));
        assert_eq!(page(&mut store, 4, Some(8), 10), (vec![5, 6, 7], false));
        // A seq stored already is refused, as the unique index refused it.
        store.begin().unwrap();
        store.apply(&post("r", 5, T), &none).unwrap();
        assert!(store.commit(false).is_err());
        store.rollback();
        assert_eq!(page(&mut store, 0, None, 100).0.len(), 8);
    }

    #[test]
    fn the_kept_newest_seq_places_posts_right_after_a_delete_and_a_rollback() {
        let scratch = Scratch::new("newest");
        let mut store = Sqlite::open(&scratch.0, Fsync::Off, None).unwrap();
        let none = Retention::default();
        commit(&mut store, &[1, 2, 3].map(|s| post("r", s, T)), &none);
        let deleted = Change::Delete {
            room: "r".into(),
            message_id: "r-3".into(),
            seq: 3,
        };
        commit(&mut store, &[deleted], &none);
        // The newest seq kept (3) is above the stored one (2) now: seq 3
        // again is placed as a late post, and 4 and 5 after it as fresh.
        commit(&mut store, &[3, 4, 5].map(|s| post("r", s, T)), &none);
        assert_eq!(chunks(&store), vec![(1, 2), (3, 3), (4, 5)]);
        assert_eq!(page(&mut store, 0, None, 100).0, vec![1, 2, 3, 4, 5]);
        // A transaction rolled back forgets what it raised: its posts,
        // committed again, are fresh (one chunk), not late (one each).
        let again: Vec<Change> = (6..=8).map(|s| post("r", s, T)).collect();
        store.begin().unwrap();
        for change in &again {
            store.apply(change, &none).unwrap();
        }
        store.flush().unwrap();
        store.rollback();
        commit(&mut store, &again, &none);
        assert_eq!(chunks(&store), vec![(1, 2), (3, 3), (4, 5), (6, 8)]);
    }

    #[test]
    fn a_busy_commit_splits_into_bounded_chunks_that_read_back_in_order() {
        let scratch = Scratch::new("split");
        let mut store = Sqlite::open(&scratch.0, Fsync::Off, None).unwrap();
        let posts: Vec<Change> = (1..=600).map(|s| post("r", s, T)).collect();
        commit(&mut store, &posts, &Retention::default());
        let spans = chunks(&store);
        assert_eq!(spans.len(), 600_usize.div_ceil(MAX_MESSAGES), "{spans:?}");
        let snapshot = store.load("r", 300, 8192).unwrap();
        assert_eq!(snapshot.tail.first().map(|m| m.seq), Some(301));
        assert_eq!(snapshot.tail.last().map(|m| m.seq), Some(600));
        assert!(snapshot.older);
        assert_eq!(snapshot.last_seq, 600);
    }

    #[test]
    fn edits_and_deletes_find_their_message_by_seq_and_id_and_rewrite_its_chunk() {
        let scratch = Scratch::new("edit");
        let mut store = Sqlite::open(&scratch.0, Fsync::Off, None).unwrap();
        let none = Retention::default();
        // Posted and changed in one transaction: the change finds its post.
        let mut changes: Vec<Change> = (1..=3).map(|s| post("r", s, T)).collect();
        changes.push(Change::Edit {
            room: "r".into(),
            message_id: "r-2".into(),
            seq: 2,
            content: "edited".into(),
            edited_at: T.into(),
            version: 0,
        });
        changes.push(Change::Delete {
            room: "r".into(),
            message_id: "r-1".into(),
            seq: 1,
        });
        // Another room's message of the same seq and id is not this
        // room's, and a seq that holds another id changes nothing.
        changes.push(Change::Delete {
            room: "other".into(),
            message_id: "r-3".into(),
            seq: 3,
        });
        changes.push(Change::Delete {
            room: "r".into(),
            message_id: "r-2".into(),
            seq: 3,
        });
        commit(&mut store, &changes, &none);
        let messages = history(&mut store);
        let shown = seqs_and_contents(&messages);
        assert_eq!(shown, [(2, "edited"), (3, "m3")]);
        assert_eq!(messages[0].edited_at.as_deref(), Some(T));
        assert_eq!(counted(&store), 2);
        // Deleting the rest leaves no chunk behind.
        for seq in [2, 3] {
            commit(
                &mut store,
                &[Change::Delete {
                    room: "r".into(),
                    message_id: format!("r-{seq}"),
                    seq,
                }],
                &none,
            );
        }
        assert!(chunks(&store).is_empty());
    }

    #[test]
    fn the_cap_and_the_retention_period_trim_inside_a_chunk() {
        let scratch = Scratch::new("trim");
        let mut store = Sqlite::open(&scratch.0, Fsync::Off, None).unwrap();
        let old = "2020-01-01T00:00:00.000Z";
        let capped = Retention {
            days: None,
            per_room: Some(5),
        };
        commit(
            &mut store,
            &(1..=4).map(|s| post("r", s, old)).collect::<Vec<_>>(),
            &capped,
        );
        // 8 posts past a cap of 5: 1..=3 go, and the chunk 1..=4 keeps 4.
        commit(
            &mut store,
            &(5..=8).map(|s| post("r", s, T)).collect::<Vec<_>>(),
            &capped,
        );
        assert_eq!(page(&mut store, 0, None, 100).0, vec![4, 5, 6, 7, 8]);
        assert_eq!(chunks(&store), vec![(4, 4), (5, 8)]);
        // The period deletes the old message (by its own time, not its
        // chunk's) and says how many went.
        store.begin().unwrap();
        let cutoff = timestamp_ms("2021-01-01T00:00:00.000Z");
        assert_eq!(store.prune(cutoff, u64::MAX).unwrap(), 1);
        store.commit(true).unwrap();
        assert_eq!(page(&mut store, 0, None, 100).0, vec![5, 6, 7, 8]);
    }

    #[test]
    fn the_cap_counts_messages_not_seqs() {
        let scratch = Scratch::new("cap-count");
        let capped = Retention {
            days: None,
            per_room: Some(3),
        };
        let posts = |seqs: &[u64]| seqs.iter().map(|&s| post("r", s, T)).collect::<Vec<_>>();
        let mut store = Sqlite::open(&scratch.0, Fsync::Off, None).unwrap();
        commit(&mut store, &posts(&[1, 2, 3, 4, 5]), &capped);
        assert_eq!(page(&mut store, 0, None, 100).0, vec![3, 4, 5]);
        // Opened again (nothing counted yet), after a crash: the numbering
        // resumes past the last reservation. The newest three are kept, not
        // "everything above 70 001 minus 3".
        drop(store);
        let mut store = Sqlite::open(&scratch.0, Fsync::Off, None).unwrap();
        commit(&mut store, &posts(&[70_000, 70_001]), &capped);
        assert_eq!(page(&mut store, 0, None, 100).0, vec![5, 70_000, 70_001]);
        // A delete leaves a hole in the seqs; the room still keeps three.
        store.begin().unwrap();
        let delete = Change::Delete {
            room: "r".into(),
            message_id: "r-70000".into(),
            seq: 70_000,
        };
        store.apply(&delete, &capped).unwrap();
        store.commit(true).unwrap();
        commit(&mut store, &posts(&[70_002]), &capped);
        assert_eq!(page(&mut store, 0, None, 100).0, vec![5, 70_001, 70_002]);
        // Many at once: whole chunks go unread, and part of one.
        commit(&mut store, &posts(&[70_003, 70_004]), &capped);
        commit(
            &mut store,
            &posts(&[70_005, 70_006, 70_007, 70_008]),
            &capped,
        );
        assert_eq!(
            page(&mut store, 0, None, 100).0,
            vec![70_006, 70_007, 70_008]
        );
    }

    /// What a chunk's row may hold that does not read: JSON cut short, text
    /// that is not UTF-8 (a flipped byte), a BLOB.
    const DAMAGE: [&str; 3] = ["'[{\"seq\": 1}'", "CAST(x'5bff5d' AS TEXT)", "x'5b5d'"];

    /// Room `r` in two chunks, 1..=2 (posted long ago) and 3..=4, the first
    /// then made to hold `damage` (an SQL value) as its messages.
    fn with_a_damaged_chunk(name: &str, damage: &str, retention: &Retention) -> (Scratch, Sqlite) {
        let scratch = Scratch::new(name);
        let mut store = Sqlite::open(&scratch.0, Fsync::Off, None).unwrap();
        for (seqs, at) in [(1..=2, "2020-01-01T00:00:00.000Z"), (3..=4, T)] {
            let posts: Vec<Change> = seqs.map(|s| post("r", s, at)).collect();
            commit(&mut store, &posts, retention);
        }
        store
            .conn
            .execute(
                &format!("UPDATE roomcast_chunks SET messages = {damage} WHERE first_seq = 1"),
                [],
            )
            .unwrap();
        (scratch, store)
    }

    #[test]
    fn a_damaged_chunk_costs_its_own_messages_not_the_room() {
        let capped = Retention {
            days: None,
            per_room: Some(4),
        };
        for (n, damage) in DAMAGE.into_iter().enumerate() {
            let (_scratch, mut store) =
                with_a_damaged_chunk(&format!("damaged-{n}"), damage, &capped);
            // Reads skip it.
            assert_eq!(
                page(&mut store, 0, None, 10),
                (vec![3, 4], false),
                "{damage}"
            );
            let loaded = store.load("r", 10, 0).unwrap();
            assert_eq!(loaded.tail.len(), 2, "{damage}");
            // The cap, taking one message of it, has to read it: it deletes
            // it whole.
            commit(&mut store, &[post("r", 5, T)], &capped);
            assert_eq!(
                page(&mut store, 0, None, 10),
                (vec![3, 4, 5], false),
                "{damage}"
            );
            assert_eq!(chunks(&store), vec![(3, 4), (5, 5)], "{damage}");
            assert_eq!(counted(&store), 3, "{damage}");
        }
    }

    #[test]
    fn retention_deletes_a_damaged_chunk_whole() {
        let none = Retention::default();
        for (n, damage) in DAMAGE.into_iter().enumerate() {
            let (_scratch, mut store) =
                with_a_damaged_chunk(&format!("damaged-pruned-{n}"), damage, &none);
            store.begin().unwrap();
            let cutoff = timestamp_ms("2021-01-01T00:00:00.000Z");
            assert_eq!(store.prune(cutoff, u64::MAX).unwrap(), 2, "{damage}");
            store.commit(true).unwrap();
            assert_eq!(chunks(&store), vec![(3, 4)], "{damage}");
            assert_eq!(
                page(&mut store, 0, None, 10),
                (vec![3, 4], false),
                "{damage}"
            );
        }
    }

    #[test]
    fn a_message_stored_with_seq_0_is_skipped_as_damaged() {
        let scratch = Scratch::new("seq0");
        let mut store = Sqlite::open(&scratch.0, Fsync::Off, None).unwrap();
        let posts: Vec<Change> = (1..=3).map(|s| post("r", s, T)).collect();
        commit(&mut store, &posts, &Retention::default());
        store
            .conn
            .execute(
                "UPDATE roomcast_chunks SET messages = json_set(messages, '$[0].seq', 0)",
                [],
            )
            .unwrap();
        let loaded = store.load("r", 10, 0).unwrap();
        let seqs: Vec<u64> = loaded.tail.iter().map(|m| m.seq).collect();
        assert_eq!((seqs, loaded.older), (vec![2, 3], false));
        assert_eq!(page(&mut store, 0, None, 10), (vec![2, 3], false));
    }

    #[test]
    fn a_version_3_file_drops_its_ids_and_its_chunks_take_changes_by_seq() {
        let scratch = Scratch::new("v3");
        std::fs::create_dir_all(&scratch.0).unwrap();
        {
            // A chunk of three messages and their ids, as version 3 wrote them.
            let db = rusqlite::Connection::open(scratch.0.join("roomcast.db")).unwrap();
            for migration in &MIGRATIONS[..3] {
                db.execute_batch(migration).unwrap();
            }
            db.execute_batch(&format!(
                "PRAGMA application_id = {APPLICATION_ID}; PRAGMA user_version = 3;"
            ))
            .unwrap();
            let objects = [1, 2, 3].map(|s| json::encode(&message("r", s, T)));
            db.execute(
                "INSERT INTO roomcast_chunks \
                 (room, first_seq, last_seq, oldest_ms, newest_ms, count, messages) \
                 VALUES ('r', 1, 3, 0, 0, 3, ?1)",
                [json::join(objects.iter().map(String::as_str))],
            )
            .unwrap();
            db.execute_batch(
                "INSERT INTO roomcast_message_ids (id, chunk) \
                 VALUES ('r-1', 1), ('r-2', 1), ('r-3', 1);",
            )
            .unwrap();
        }
        let mut store = Sqlite::open(&scratch.0, Fsync::Off, None).unwrap();
        let (version, id_tables): (i64, i64) = store
            .conn
            .query_row(
                "SELECT (SELECT user_version FROM pragma_user_version), \
                 (SELECT count(*) FROM sqlite_schema WHERE name = 'roomcast_message_ids')",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!((version, id_tables), (4, 0));
        let edit = Change::Edit {
            room: "r".into(),
            message_id: "r-2".into(),
            seq: 2,
            content: "edited".into(),
            edited_at: T.into(),
            version: 0,
        };
        let delete = Change::Delete {
            room: "r".into(),
            message_id: "r-3".into(),
            seq: 3,
        };
        commit(&mut store, &[edit, delete], &Retention::default());
        let messages = history(&mut store);
        let shown = seqs_and_contents(&messages);
        assert_eq!(shown, [(1, "m1"), (2, "edited")]);
        assert_eq!(chunks(&store), vec![(1, 2)]);
    }
}
