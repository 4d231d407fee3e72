//! Against the shared server at 127.0.0.1:5432 (trust auth, database
//! `test`), in a schema of each test's own, dropped at the end.

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

/// `post` (a post) with its message changed by `change`.
fn changed_post(post: Change, change: impl FnOnce(&mut StoredMessage)) -> Change {
    let Change::Post {
        room,
        message,
        reserve_through,
    } = post
    else {
        unreachable!("a post")
    };
    let mut message = (*message).clone();
    change(&mut message);
    Change::Post {
        room,
        message: Arc::new(message),
        reserve_through,
    }
}

/// `post` (a post) recording its room's seqs reserved through `through`.
fn reserving(post: Change, through: u64) -> Change {
    let Change::Post { room, message, .. } = post else {
        unreachable!("a post")
    };
    Change::Post {
        room,
        message,
        reserve_through: Some(through),
    }
}

fn commit(store: &mut Postgres, change: &Change) {
    store.begin().unwrap();
    store.apply(change, &Retention::default()).unwrap();
    store.commit(false).unwrap();
}

/// Writes `changes` as one group under a cap of three messages a room.
fn capped_to_three(store: &mut Postgres, changes: &[Change]) {
    let capped = Retention {
        days: None,
        per_room: Some(3),
    };
    store.begin().unwrap();
    for change in changes {
        store.apply(change, &capped).unwrap();
    }
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
            version: 1,
        },
        Change::React {
            room: "r".into(),
            message_id: "r-1".into(),
            seq: 1,
            reactions: r#"[["🐘",["bob"]]]"#.into(),
            version: 1,
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

/// A post written a second time (say, a post the backbone left in doubt,
/// written when it was seen posted: see `src/hub/in_doubt.rs`) never
/// undoes what came after the first write: its edit and reactions stay.
#[test]
fn a_post_written_again_after_its_changes_keeps_them() {
    let schema = Schema::new("again");
    let mut store = Postgres::open(&schema.url(), Fsync::Off).unwrap();
    commit(&mut store, &post("r", 1, T));
    let [edit, react, _] = changes();
    commit(&mut store, &edit);
    commit(&mut store, &react);
    commit(&mut store, &post("r", 1, T));
    let Change::React { reactions, .. } = &react else {
        unreachable!()
    };
    let reactions = Reactions::from_store_json(reactions).to_store_json();
    assert_eq!(
        shown(&mut store),
        vec![(1, "edited".to_owned(), true, reactions)]
    );
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
        version: 0,
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

/// Edits and reactions written by several instances land in any order:
/// the one with the highest version stays, before and after the post
/// comes, and version 0 (one instance) always applies.
#[test]
fn the_newest_version_of_an_edit_or_reactions_stays() {
    let schema = Schema::new("versions");
    let mut store = Postgres::open(&schema.url(), Fsync::Off).unwrap();
    let edit = |content: &str, version| Change::Edit {
        room: "r".into(),
        message_id: "r-1".into(),
        seq: 1,
        content: content.into(),
        edited_at: T.into(),
        version,
    };
    let react = |who: &str, version| Change::React {
        room: "r".into(),
        message_id: "r-1".into(),
        seq: 1,
        reactions: format!(r#"[["🐘",["{who}"]]]"#),
        version,
    };
    let stored =
        |who: &str| Reactions::from_store_json(&format!(r#"[["🐘",["{who}"]]]"#)).to_store_json();
    // Before the post: version 3 waits in its place, 2 comes later.
    for change in [
        edit("three", 3),
        react("carl", 3),
        edit("two", 2),
        react("bob", 2),
    ] {
        commit(&mut store, &change);
    }
    commit(&mut store, &post("r", 1, T));
    assert_eq!(
        shown(&mut store),
        vec![(1, "three".into(), true, stored("carl"))]
    );
    // After it: 4 replaces 3, a late 2 changes nothing.
    for change in [
        edit("four", 4),
        react("dan", 4),
        edit("two", 2),
        react("bob", 2),
    ] {
        commit(&mut store, &change);
    }
    assert_eq!(
        shown(&mut store),
        vec![(1, "four".into(), true, stored("dan"))]
    );
    // One instance's changes (version 0) come in order: always applied.
    for change in [edit("zero", 0), react("eve", 0)] {
        commit(&mut store, &change);
    }
    assert_eq!(
        shown(&mut store),
        vec![(1, "zero".into(), true, stored("eve"))]
    );
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
    // Text PostgreSQL refuses: a NUL character.
    let refused = changed_post(post("r", 3, T), |m| m.content = "a\0b".into());
    store.begin().unwrap();
    for change in [post("r", 2, T), refused, post("r", 4, T)] {
        store.apply(&change, &none).unwrap();
    }
    let failed = store.commit(false).expect_err("a NUL in text");
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

/// The cap keeps a room's newest messages by count: a crash's skipped
/// seqs and a deleted message do not make it keep fewer.
#[test]
fn the_cap_counts_messages_not_seqs() {
    let schema = Schema::new("cap");
    let mut store = Postgres::open(&schema.url(), Fsync::Off).unwrap();
    let seqs = |store: &mut Postgres| -> Vec<u64> {
        shown(store).into_iter().map(|(seq, ..)| seq).collect()
    };
    // Seq 32 trims (every CAP_EVERY-th post does).
    capped_to_three(
        &mut store,
        &(1..=32).map(|s| post("r", s, T)).collect::<Vec<_>>(),
    );
    assert_eq!(seqs(&mut store), vec![30, 31, 32]);
    // One message of the three is deleted, and a crash skipped the seqs
    // up to 65 631: the next post (a trimming one) leaves the newest three,
    // not the one message past "65 632 minus 3".
    let delete = Change::Delete {
        room: "r".into(),
        message_id: "r-31".into(),
        seq: 31,
    };
    capped_to_three(&mut store, &[delete, post("r", 65_632, T)]);
    assert_eq!(seqs(&mut store), vec![30, 32, 65_632]);
    // Posts between trims add up; the next trim takes the room back.
    capped_to_three(
        &mut store,
        &(65_633..=65_663)
            .map(|s| post("r", s, T))
            .collect::<Vec<_>>(),
    );
    assert_eq!(seqs(&mut store).len(), 3 + 31);
    capped_to_three(&mut store, &[post("r", 65_664, T)]);
    assert_eq!(seqs(&mut store), vec![65_662, 65_663, 65_664]);
}

/// A retention pass over a large backlog goes a batch per transaction.
#[test]
fn a_retention_pass_deletes_at_most_a_batch_per_transaction() {
    let schema = Schema::new("prune");
    let mut store = Postgres::open(&schema.url(), Fsync::Off).unwrap();
    for seq in 1..=3 {
        commit(&mut store, &post("r", seq, "2020-01-01T00:00:00.000Z"));
    }
    commit(&mut store, &post("r", 4, T));
    let cutoff = crate::store::timestamp_ms("2021-01-01T00:00:00.000Z");
    let mut pass = || {
        store.begin().unwrap();
        let n = store.prune(cutoff, 2).unwrap();
        store.commit(true).unwrap();
        n
    };
    assert_eq!([pass(), pass(), pass()], [2, 1, 0]);
    let kept: Vec<u64> = shown(&mut store).into_iter().map(|(seq, ..)| seq).collect();
    assert_eq!(kept, [4]);
}

/// The cap takes out messages, not the marks of deletes that came before
/// their posts: a post arriving after its delete stays deleted even once
/// the room was trimmed past it (and later deletes left it under the cap).
#[test]
fn the_cap_keeps_a_deleted_message_s_mark() {
    let schema = Schema::new("cap_mark");
    let mut store = Postgres::open(&schema.url(), Fsync::Off).unwrap();
    let delete = |seq: u64| Change::Delete {
        room: "r".into(),
        message_id: format!("r-{seq}"),
        seq,
    };
    // Another instance's delete of message 1 lands first; posts 2..=32
    // then trim the room to 30..=32 (seq 32 trims).
    capped_to_three(&mut store, &[delete(1)]);
    capped_to_three(
        &mut store,
        &(2..=32).map(|s| post("r", s, T)).collect::<Vec<_>>(),
    );
    capped_to_three(&mut store, &[delete(30), delete(31)]);
    capped_to_three(&mut store, &[post("r", 1, T)]);
    let seqs: Vec<u64> = shown(&mut store).into_iter().map(|(seq, ..)| seq).collect();
    assert_eq!(seqs, [32], "message 1 stays deleted");
}

/// A second message at a seq the room already holds (a seq handed out
/// twice) leaves the first in place and the rest of its commit stored.
#[test]
fn a_post_at_a_seq_another_message_holds_is_not_stored() {
    let schema = Schema::new("seq_taken");
    let mut store = Postgres::open(&schema.url(), Fsync::Off).unwrap();
    commit(&mut store, &post("r", 1, T));
    let twice = changed_post(post("r", 1, T), |m| {
        m.id = "x-1".into();
        m.content = "another".into();
    });
    store.begin().unwrap();
    store.apply(&twice, &Retention::default()).unwrap();
    store
        .apply(&post("r", 2, T), &Retention::default())
        .unwrap();
    store.commit(false).unwrap();
    let kept: Vec<(u64, String)> = shown(&mut store)
        .into_iter()
        .map(|(seq, content, ..)| (seq, content))
        .collect();
    assert_eq!(kept, [(1, "m1".to_owned()), (2, "m2".to_owned())]);
}

/// A row whose seq is not a seq (0, or below: seqs start at 1) is damaged
/// data: reads skip it.
#[test]
fn a_row_stored_with_seq_0_is_skipped_as_damaged() {
    let schema = Schema::new("seq0");
    let mut store = Postgres::open(&schema.url(), Fsync::Off).unwrap();
    for seq in 1..=3 {
        commit(&mut store, &post("r", seq, T));
    }
    store.begin().unwrap();
    store
        .run(async |c| {
            c.client
                .execute("UPDATE roomcast_messages SET seq = 0 WHERE seq = 1", &[])
                .await
        })
        .unwrap();
    store.commit(false).unwrap();
    let seqs: Vec<u64> = shown(&mut store).into_iter().map(|(seq, ..)| seq).collect();
    assert_eq!(seqs, [2, 3]);
}

/// The connection a group's transaction runs on is lost after its first
/// statements went out (PostgreSQL restarted, a proxy cut it): the server
/// rolled those back, so the rest of the group must not commit on a new
/// connection as if it were the whole. The group fails as the connection
/// does, and the writer's retry of it from the start commits all of it.
#[test]
fn a_connection_lost_in_the_middle_of_a_group_fails_the_whole_group() {
    let schema = Schema::new("lost");
    let mut store = Postgres::open(&schema.url(), Fsync::Off).unwrap();
    let none = Retention::default();
    let pid: i32 = store
        .run(async |c| c.client.query_one("SELECT pg_backend_pid()", &[]).await)
        .unwrap()
        .get(0);
    let first = reserving(post("r", 1, T), 65_536);
    store.begin().unwrap();
    store.apply(&first, &none).unwrap();
    // Written, not committed (the rest of its group still to come).
    store.send(false).unwrap();
    let (rt, admin) = admin();
    rt.block_on(admin.execute("SELECT pg_terminate_backend($1)", &[&pid]))
        .unwrap();
    // Until the client has seen its connection end (its task runs while
    // the store's runtime does).
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while !store.conn.as_ref().is_none_or(|c| c.client.is_closed()) {
        assert!(
            std::time::Instant::now() < deadline,
            "the client never saw its connection end"
        );
        store
            .rt
            .block_on(async { tokio::time::sleep(Duration::from_millis(5)).await });
    }
    store.apply(&post("r", 2, T), &none).unwrap();
    let failed = store.commit(false).expect_err("the group's start was lost");
    assert!(failed.transient, "{}", failed.message);
    store.rollback();
    // Nothing of the group is kept: neither post, nor the reservation
    // (read first: a load reserves).
    let reserved = store
        .run(async |c| {
            c.client
                .query_opt("SELECT seq_reserved FROM roomcast_rooms", &[])
                .await
        })
        .unwrap();
    assert!(reserved.is_none(), "the reservation is not recorded");
    assert_eq!(shown(&mut store), vec![]);
    // The writer's retry: the whole group again, on a new connection.
    store.begin().unwrap();
    for change in [&first, &post("r", 2, T)] {
        store.apply(change, &none).unwrap();
    }
    store.commit(false).unwrap();
    let seqs: Vec<u64> = shown(&mut store).into_iter().map(|(seq, ..)| seq).collect();
    assert_eq!(seqs, [1, 2]);
}

/// Two messages of a room with one id (ids are not unique: see schema
/// version 3) are both stored, each at its seq, and changed by seq.
#[test]
fn two_messages_with_one_id_are_both_stored() {
    let schema = Schema::new("same_id");
    let mut store = Postgres::open(&schema.url(), Fsync::Off).unwrap();
    commit(&mut store, &post("r", 1, T));
    id_of_seq_1_again_at_seq_2(&mut store);
}

/// With `r-1` stored at seq 1, posts a message with the same id at seq 2
/// and edits it: both are kept, the first as posted.
fn id_of_seq_1_again_at_seq_2(store: &mut Postgres) {
    commit(
        store,
        &changed_post(post("r", 2, T), |m| m.id = "r-1".into()),
    );
    let edit = Change::Edit {
        room: "r".into(),
        message_id: "r-1".into(),
        seq: 2,
        content: "edited".into(),
        edited_at: T.into(),
        version: 0,
    };
    commit(store, &edit);
    let kept: Vec<(u64, String)> = shown(store)
        .into_iter()
        .map(|(seq, content, ..)| (seq, content))
        .collect();
    assert_eq!(kept, [(1, "m1".to_owned()), (2, "edited".to_owned())]);
}

/// A database at schema version 2 (the last with unique ids), with one
/// message, is brought to the current version at open: the message is
/// kept, and its id may be used again.
#[test]
fn a_version_2_database_is_upgraded_and_keeps_its_messages() {
    let schema = Schema::new("v2");
    let (rt, c) = admin();
    let mut sql = format!("SET search_path = {};", schema.0);
    sql.extend(schema::MIGRATIONS[..2].iter().copied());
    sql.push_str(&format!(
        "CREATE TABLE roomcast_schema (version INTEGER NOT NULL); \
         INSERT INTO roomcast_schema VALUES (2); \
         INSERT INTO roomcast_messages \
         (room, seq, id, user_name, identity, content, created, created_ms) \
         VALUES ('r', 1, 'r-1', 'ann', 'k', 'm1', '{T}', 0);"
    ));
    rt.block_on(c.batch_execute(&sql)).unwrap();
    let mut store = Postgres::open(&schema.url(), Fsync::Off).unwrap();
    let version: i32 = store
        .run(async |c| {
            c.client
                .query_one("SELECT version FROM roomcast_schema", &[])
                .await
        })
        .unwrap()
        .get(0);
    assert_eq!(version, schema::MIGRATIONS.len() as i32);
    assert_eq!(shown(&mut store), [(1, "m1".into(), false, "[]".into())]);
    id_of_seq_1_again_at_seq_2(&mut store);
}
