//! The embedded SQLite store: history that survives a restart and a
//! `kill -9`, seqs never reused, edits, deletes and reactions kept, resumes
//! older than the ring served from disk, scrollback, retention, and every
//! bad start-up a clear error.

#![cfg(feature = "sqlite")]

mod common;

use std::sync::Arc;

use common::{Binary, Client, Server, TempDir, claim_of, config, eventually};
use roomcast::hub::{Hub, HubConfig, HubParts, RoomName, Store, UserName};
use roomcast::metrics::Metrics;
use roomcast::store::{Fsync, Retention, StoreKind, StoreSettings};
use serde_json::{Value, json};

fn sqlite() -> roomcast::Config {
    config().store(StoreKind::Sqlite)
}

fn seqs(history: &Value) -> Vec<u64> {
    history
        .as_array()
        .expect("an array of messages")
        .iter()
        .map(|m| m["seq"].as_u64().expect("seq"))
        .collect()
}

async fn send(c: &mut Client, request: Value) {
    c.send_json(request).await;
}

/// Waits until every change the server accepted is committed.
async fn committed(server: &Server) {
    server.wait_metric("roomcast_store_uncommitted", 0).await;
}

#[tokio::test]
async fn history_edits_deletes_and_reactions_survive_a_restart() {
    let server = Server::start(sqlite().rate(0u32)).await;
    let (mut ann, _) = server.join("Durable", "ann").await;
    ann.expect("join").await;
    let mut ids = Vec::new();
    for i in 1..=5 {
        ids.push(ann.post(&format!("m{i}")).await["message_id"].clone());
    }
    send(
        &mut ann,
        json!({"type": "edit", "message_id": ids[1], "content": "m2, edited"}),
    )
    .await;
    ann.expect("message_updated").await;
    send(&mut ann, json!({"type": "delete", "message_id": ids[2]})).await;
    ann.expect("message_deleted").await;
    send(
        &mut ann,
        json!({"type": "add_reaction", "message_id": ids[3], "emoji": "👍"}),
    )
    .await;
    ann.expect("reaction_update").await;
    drop(ann);

    let server = server.restart().await;
    let (mut bob, w) = server.join("durable", "bob").await;
    assert_eq!(w["room"], "durable", "the welcome echoes the name as asked");
    assert_eq!(seqs(&w["history"]), vec![1, 2, 4, 5]);
    assert_eq!(w["last_seq"], 5);
    let h = &w["history"];
    assert_eq!(h[1]["content"], "m2, edited");
    assert!(h[1]["edited_at"].is_string());
    assert_eq!(h[2]["reactions"], json!({"👍": ["ann"]}));
    assert_eq!(h[0]["message_id"], ids[0], "same ids");
    bob.expect("join").await;
    let m = bob.post("after the restart").await;
    assert!(m["seq"].as_u64().unwrap() > 5, "seqs only go up: {m}");

    // A resume across the restart gets exactly what came after.
    let mut c = server.ws("/ws/DURABLE/carl?after=4").await;
    let w = c.expect("welcome").await;
    assert_eq!(seqs(&w["history"])[0], 5);
    assert_eq!(w["gap"], false);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_resume_older_than_the_ring_is_read_from_the_store() {
    let server = Server::start(sqlite().rate(0u32).history(5usize)).await;
    let (mut ann, _) = server.join("deep", "ann").await;
    ann.expect("join").await;
    for i in 1..=20 {
        ann.post(&format!("m{i}")).await;
    }
    let mut late = server.ws("/ws/deep/bob?after=3").await;
    let w = late.expect("welcome").await;
    assert_eq!(seqs(&w["history"]), (4..=20).collect::<Vec<_>>());
    assert_eq!(w["gap"], false, "nothing was lost: the store had it");
    let join = late.expect("join").await;
    assert_eq!(join["user"], "bob");
    // Live messages follow as usual.
    ann.skip_to("join").await;
    ann.post("live").await;
    assert_eq!(late.expect("message").await["content"], "live");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn scrollback_pages_through_the_whole_history() {
    let server = Server::start(sqlite().rate(0u32).history(10usize)).await;
    let (mut ann, _) = server.join("long", "ann").await;
    ann.expect("join").await;
    for i in 1..=230 {
        ann.post(&format!("m{i}")).await;
    }
    let mut before = None;
    let mut seen = Vec::new();
    loop {
        let path = match before {
            Some(b) => format!("/api/rooms/long/messages?before={b}&limit=100"),
            None => "/api/rooms/long/messages?limit=100".to_owned(),
        };
        let page = server.get(&path).await;
        assert_eq!(page.status, 200, "{}", page.text());
        let page = page.json();
        let got = seqs(&page["messages"]);
        assert!(got.windows(2).all(|w| w[0] < w[1]), "oldest first: {got:?}");
        seen.splice(0..0, got.iter().copied());
        before = got.first().copied();
        if page["has_more"] == false {
            break;
        }
        assert_eq!(got.len(), 100);
    }
    assert_eq!(seen, (1..=230).collect::<Vec<_>>());
    let first = server.get("/api/rooms/long/messages?before=2").await.json();
    assert_eq!(first["messages"][0]["content"], "m1");
    assert_eq!(first["has_more"], false);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn scrollback_refuses_bad_queries_clearly() {
    let server = Server::start(sqlite()).await;
    let (mut ann, _) = server.join("r", "ann").await;
    ann.expect("join").await;
    ann.post("hello").await;
    for query in [
        "before=-1",
        "before=abc",
        "before=0",
        "before=99999999999999999999999",
        "limit=0",
        "limit=1000000",
        "limit=",
    ] {
        let res = server.get(&format!("/api/rooms/r/messages?{query}")).await;
        let body = res.assert_json_error(400);
        assert!(
            body["message"].as_str().unwrap().starts_with('`'),
            "{query}: {body}"
        );
    }
    let res = server.get("/api/rooms/nobody-here/messages").await;
    assert_eq!(res.assert_json_error(404)["error"], "unknown_room");
    let res = server.get("/api/rooms/a%2Fb/messages").await;
    res.assert_json_error(400);
    let res = server
        .get(&format!("/api/rooms/{}/messages", "x".repeat(80)))
        .await;
    res.assert_json_error(400);
    let res = server.request("POST", "/api/rooms/r/messages", &[]).await;
    res.assert_json_error(405);
    // A `before` past the newest is simply everything.
    let res = server
        .get("/api/rooms/r/messages?before=9223372036854775807")
        .await;
    assert_eq!(seqs(&res.json()["messages"]), vec![1]);
    server.shutdown().await.unwrap();
}

/// Whether any file of the server's data directory holds `text`.
fn on_disk(server: &Server, text: &str) -> bool {
    let data = server.dir.path().join("data");
    std::fs::read_dir(data).unwrap().flatten().any(|f| {
        std::fs::read(f.path()).is_ok_and(|b| b.windows(text.len()).any(|w| w == text.as_bytes()))
    })
}

/// ann joins `room` and posts `text`, which is then on disk; its id.
async fn written(server: &Server, room: &str, text: &str) -> (Client, Value) {
    let (mut ann, _) = server.join(room, "ann").await;
    ann.expect("join").await;
    let id = ann.post(text).await["message_id"].clone();
    committed(server).await;
    assert!(on_disk(server, text), "the message was written");
    (ann, id)
}

/// Sends `request`, waits for its `answer` event and for the commit.
async fn changed(server: &Server, ann: &mut Client, request: Value, answer: &str) {
    send(ann, request).await;
    ann.expect(answer).await;
    committed(server).await;
}

#[tokio::test]
async fn a_deleted_message_leaves_the_disk() {
    let server = Server::start(sqlite()).await;
    let (mut ann, _) = server.join("secrets", "ann").await;
    ann.expect("join").await;
    // Another message beside it: their chunk may be rewritten, not dropped.
    let secret = "the-launch-code-is-8f3a91c2";
    let id = ann.post(secret).await["message_id"].clone();
    ann.post("something else").await;
    committed(&server).await;
    assert!(on_disk(&server, secret), "the message was written");
    let delete = json!({"type": "delete", "message_id": id});
    changed(&server, &mut ann, delete, "message_deleted").await;
    assert!(
        !on_disk(&server, secret),
        "no file under data/ still holds the deleted text"
    );
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn an_edited_message_s_old_text_leaves_the_disk() {
    let server = Server::start(sqlite()).await;
    let secret = "my-password-is-hunter2-0c9e";
    let (mut ann, id) = written(&server, "secrets", secret).await;
    let edit = json!({"type": "edit", "message_id": id, "content": "(removed)"});
    changed(&server, &mut ann, edit, "message_updated").await;
    assert!(
        !on_disk(&server, secret),
        "no file under data/ still holds the text edited away"
    );
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn an_edit_soon_after_a_delete_leaves_the_disk_with_nothing_more_committed() {
    let server = Server::start(sqlite()).await;
    let secret = "the-pin-is-4417-then-9a1b";
    let (mut ann, id) = written(&server, "secrets", secret).await;
    let other = ann.post("something else").await["message_id"].clone();
    // The delete truncates the log at its commit; the edit, within the 10 s
    // after that, is owed, and no commit follows it.
    let delete = json!({"type": "delete", "message_id": other});
    changed(&server, &mut ann, delete, "message_deleted").await;
    let edit = json!({"type": "edit", "message_id": id, "content": "(removed)"});
    changed(&server, &mut ann, edit, "message_updated").await;
    eventually("the edited-away text leaves every file", || async {
        !on_disk(&server, secret)
    })
    .await;
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_message_the_per_room_cap_takes_out_leaves_the_disk() {
    let server = Server::start(sqlite().rate(0u32).retention_messages(Some(2u64))).await;
    let oldest = "the-first-of-three-5d21";
    let (mut ann, _) = written(&server, "capped", oldest).await;
    ann.post("m2").await;
    ann.post("m3").await;
    committed(&server).await;
    // The first trim since the server started truncates the log at its
    // commit (later ones, 10 s after the last truncation).
    assert!(
        !on_disk(&server, oldest),
        "no file under data/ still holds the trimmed message"
    );
    server.shutdown().await.unwrap();
}

/// Messages past `--retention-days` leave a room held in memory too, not
/// only the store: a welcome no longer shows them, and an edit of one is
/// refused rather than accepted and not stored.
#[tokio::test]
async fn retention_takes_old_messages_out_of_a_room_held_in_memory() {
    let data = TempDir::new("retention");
    let server = Server::start(sqlite().rate(0u32).data_dir(data.path())).await;
    let (mut ann, _) = server.join("Kept", "ann").await;
    ann.expect("join").await;
    let old = ann.post("from long ago").await["message_id"].clone();
    ann.post("also long ago").await;
    drop(ann);
    server.shutdown().await.expect("a clean shutdown");
    // Both were posted years ago, as far as the file says.
    let db = rusqlite::Connection::open(data.path().join("roomcast.db")).unwrap();
    db.execute_batch(
        "UPDATE roomcast_chunks SET oldest_ms = 0, newest_ms = 0, messages = \
         (SELECT json_group_array(json_set(value, '$.timestamp', '2020-01-01T00:00:00.000Z')) \
          FROM json_each(messages))",
    )
    .unwrap();
    drop(db);

    let kept = sqlite()
        .rate(0u32)
        .retention_days(Some(1u32))
        .data_dir(data.path());
    let server = Server::start(kept).await;
    // Ann's join loads the room, old messages and all; the retention pass
    // after that load's commit deletes them from the store.
    let (mut ann, _) = server.join("Kept", "ann").await;
    ann.expect("join").await;
    server.wait_metric("roomcast_store_pruned_total", 2).await;
    ann.post("fresh").await;
    let (_bob, welcome) = server.join("Kept", "bob").await;
    let shown: Vec<&str> = welcome["history"]
        .as_array()
        .expect("history")
        .iter()
        .map(|m| m["content"].as_str().expect("content"))
        .collect();
    assert_eq!(shown, ["fresh"], "the room stayed in memory: {welcome}");
    ann.expect("join").await;
    send(
        &mut ann,
        json!({"type": "edit", "message_id": old, "content": "too late"}),
    )
    .await;
    ann.expect_error("unknown_message").await;
    server.shutdown().await.expect("a clean shutdown");
}

#[tokio::test]
async fn the_per_room_cap_keeps_the_newest() {
    let server = Server::start(sqlite().rate(0u32).retention_messages(Some(3u64))).await;
    let (mut ann, _) = server.join("capped", "ann").await;
    ann.expect("join").await;
    for i in 1..=7 {
        ann.post(&format!("m{i}")).await;
    }
    let server = server.restart().await;
    let (_bob, w) = server.join("capped", "bob").await;
    assert_eq!(seqs(&w["history"]), vec![5, 6, 7]);
    let page = server.get("/api/rooms/capped/messages").await.json();
    assert_eq!(seqs(&page["messages"]), vec![5, 6, 7]);
    assert_eq!(page["has_more"], false);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_full_store_refuses_posts_and_says_degraded() {
    let server = Server::start(sqlite().rate(0u32).store_max_mb(Some(1u64))).await;
    let (mut ann, _) = server.join("full", "ann").await;
    ann.expect("join").await;
    let big = "x".repeat(3900);
    let mut refused = None;
    for _ in 0..2000 {
        send(&mut ann, json!({"type": "message", "content": big})).await;
        let event = ann.recv_json().await;
        if event["type"] == "error" {
            refused = Some(event);
            break;
        }
        assert_eq!(event["type"], "message");
    }
    let refused = refused.expect("a 1 MiB store fills up within 2000 posts of 4 KB");
    assert_eq!(refused["code"], "unavailable", "{refused}");
    let health = server.get("/health").await;
    assert_eq!(health.status, 503);
    assert_eq!(health.json()["status"], "degraded");
    assert!(
        health.json()["reason"]
            .as_str()
            .unwrap()
            .contains("history store")
    );
    // The connection stays open; reading still works.
    ann.roundtrip().await;
}

#[tokio::test]
async fn bad_data_directories_and_files_are_clear_errors() {
    let tmp = TempDir::new("bad-store");
    let uploads = tmp.path().join("uploads");
    let start = async |dir: &std::path::Path| {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let config = sqlite()
            .data_dir(dir.to_path_buf())
            .uploads_dir(uploads.clone());
        roomcast::serve(listener, config, async {})
            .await
            .expect_err(&format!("serve must refuse the store in {}", dir.display()))
            .to_string()
    };

    // Not a directory that can be made.
    let e = start(std::path::Path::new("/proc/roomcast-cannot-be-here")).await;
    assert!(e.contains("cannot be created"), "{e}");

    // A file that is not a database.
    let dir = tmp.path().join("garbage");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("roomcast.db"), vec![0xA5; 8192]).unwrap();
    let e = start(&dir).await;
    assert!(e.contains("is not an SQLite database"), "{e}");

    // Another program's database.
    let dir = tmp.path().join("foreign");
    std::fs::create_dir_all(&dir).unwrap();
    let other = rusqlite::Connection::open(dir.join("roomcast.db")).unwrap();
    other
        .execute_batch("CREATE TABLE invoices (id INTEGER);")
        .unwrap();
    drop(other);
    let e = start(&dir).await;
    assert!(e.contains("another program"), "{e}");

    // Written by a newer roomcast.
    let dir = tmp.path().join("newer");
    let server = Server::start(sqlite().data_dir(dir.clone())).await;
    server.shutdown().await.unwrap();
    let db = rusqlite::Connection::open(dir.join("roomcast.db")).unwrap();
    db.execute_batch("PRAGMA user_version = 99;").unwrap();
    drop(db);
    let e = start(&dir).await;
    assert!(e.contains("newer roomcast") && e.contains("99"), "{e}");

    // In use by another roomcast.
    let dir = tmp.path().join("busy");
    let first = Server::start(sqlite().data_dir(dir.clone())).await;
    assert_eq!(
        first.get("/health").await.status,
        200,
        "the first one is serving"
    );
    let e = start(&dir).await;
    assert!(e.contains("in use by another roomcast"), "{e}");
    first.shutdown().await.unwrap();
}

/// What roomcast's first schema (version 1) wrote: messages clustered by
/// (room, seq). A fixture, kept as it was shipped.
const SCHEMA_V1: &str = "
CREATE TABLE roomcast_rooms (room TEXT PRIMARY KEY, seq_reserved INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE roomcast_messages (
    room TEXT NOT NULL, seq INTEGER NOT NULL, id TEXT NOT NULL, user_name TEXT NOT NULL,
    identity TEXT NOT NULL, content TEXT NOT NULL, created TEXT NOT NULL,
    created_ms INTEGER NOT NULL, attachment TEXT, edited_at TEXT,
    reactions TEXT NOT NULL DEFAULT '[]', client_id TEXT, PRIMARY KEY (room, seq)
) WITHOUT ROWID;
CREATE UNIQUE INDEX roomcast_messages_id ON roomcast_messages (id);
CREATE INDEX roomcast_messages_created ON roomcast_messages (created_ms);
PRAGMA application_id = 1919120244;
PRAGMA user_version = 1;
";

#[tokio::test]
async fn a_version_1_database_is_upgraded_and_keeps_its_history() {
    let tmp = TempDir::new("upgrade");
    let dir = tmp.path().join("data");
    std::fs::create_dir_all(&dir).unwrap();
    // ann's rows carry the identity her claim proves, so she may still
    // edit them.
    let ann = roomcast::auth::Claim::parse(&claim_of("ann"))
        .unwrap()
        .identity();
    let old = rusqlite::Connection::open(dir.join("roomcast.db")).unwrap();
    old.execute_batch(SCHEMA_V1).unwrap();
    // Two rooms, interleaved in time as a busy server writes them, and
    // enough of them (about 1 MiB) that copying them needs more room
    // than the store's size cap below leaves.
    let created = 1_796_119_200_000i64; // 2026-12-01T10:00:00Z
    let padding = "x".repeat(200);
    let mut insert = old
        .prepare(
            "INSERT INTO roomcast_messages (room, seq, id, user_name, identity, content, \
             created, created_ms, reactions, attachment, edited_at) VALUES (?1, ?2, ?3, 'ann', \
             ?4, ?5, '2026-12-01T10:00:00.000Z', ?6, ?7, ?8, ?9)",
        )
        .unwrap();
    let per_room = 2000i64;
    for seq in 1..=per_room {
        for (r, room) in ["old", "other"].into_iter().enumerate() {
            let content = match seq {
                1..=3 => format!("{room} m{seq}"),
                _ => format!("{room} m{seq} {padding}"),
            };
            insert
                .execute(rusqlite::params![
                    room,
                    seq,
                    format!("{room}-{seq}"),
                    ann.as_str(),
                    content,
                    created + 2 * seq + r as i64,
                    if seq == 2 {
                        r#"[["👍",["bob"]]]"#
                    } else {
                        "[]"
                    },
                    // One attachment as the server wrote them, one that
                    // does not parse (dropped, as before).
                    match (seq, room) {
                        (3, "old") => Some(
                            r#"{"url":"/uploads/a.png","name":"a.png","size":3,"content_type":"image/png"}"#,
                        ),
                        (3, _) => Some("not json"),
                        _ => None,
                    },
                    (seq == 1).then_some("2026-12-01T10:05:00.000Z"),
                ])
                .unwrap();
        }
    }
    drop(insert);
    old.execute_batch(&format!(
        "INSERT INTO roomcast_rooms VALUES ('old', {per_room}), ('other', {per_room});"
    ))
    .unwrap();
    drop(old);
    let v1_bytes = std::fs::metadata(dir.join("roomcast.db")).unwrap().len();
    assert!((1 << 20..2 << 20).contains(&v1_bytes), "{v1_bytes}");

    // A cap above the file but below the file plus its copy: the upgrade
    // is not held to it, what follows is.
    let server = Server::start(
        sqlite()
            .rate(0u32)
            .history(3usize)
            .store_max_mb(Some(2u64))
            .data_dir(dir.clone()),
    )
    .await;
    let wal = std::fs::metadata(dir.join("roomcast.db-wal")).map_or(0, |m| m.len());
    assert!(
        wal < v1_bytes / 4,
        "the log is truncated after the copy: {wal}"
    );
    let first = server
        .get("/api/rooms/old/messages?before=4&limit=10")
        .await
        .json();
    let first = &first["messages"];
    assert_eq!(seqs(first), vec![1, 2, 3]);
    assert_eq!(first[1]["content"], "old m2");
    assert_eq!(first[1]["message_id"], "old-2");
    assert_eq!(first[1]["reactions"], json!({"👍": ["bob"]}));
    assert_eq!(first[0]["edited_at"], "2026-12-01T10:05:00.000Z");
    assert_eq!(first[2]["attachment"]["name"], "a.png");
    assert_eq!(first[2]["attachment"]["size"], 3);
    let other = server
        .get("/api/rooms/other/messages?before=4&limit=10")
        .await
        .json();
    assert_eq!(seqs(&other["messages"]), vec![1, 2, 3]);
    assert!(other["messages"][2].get("attachment").is_none());
    let (mut c, w) = server.join("old", "ann").await;
    assert_eq!(w["last_seq"], per_room);
    c.expect("join").await;
    // Upgraded messages take edits and deletes (in the ring: the newest
    // three); new posts continue the seqs.
    send(
        &mut c,
        json!({"type": "edit", "message_id": "old-2000", "content": "edited"}),
    )
    .await;
    c.expect("message_updated").await;
    send(&mut c, json!({"type": "delete", "message_id": "old-1999"})).await;
    c.expect("message_deleted").await;
    assert!(c.post("new").await["seq"].as_u64().unwrap() > per_room as u64);
    drop(c);
    committed(&server).await;
    server.shutdown().await.unwrap();

    let db = rusqlite::Connection::open(dir.join("roomcast.db")).unwrap();
    let version: i64 = db
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, 4);
    // Messages are now kept in chunks in the order they were written
    // (rowid): the upgrade makes each old message a chunk of its own.
    let by_rowid: Vec<(String, i64)> = db
        .prepare("SELECT room, first_seq FROM roomcast_chunks ORDER BY rowid LIMIT 4")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let expected = [("old", 1), ("other", 1), ("old", 2), ("other", 2)];
    assert_eq!(
        by_rowid,
        expected.map(|(r, s)| (r.to_owned(), s)).to_vec(),
        "write order"
    );
    // A chunk's messages are JSON that SQLite itself reads.
    let newest: Vec<String> = db
        .prepare(
            "SELECT json_extract(m.value, '$.content') FROM roomcast_chunks c, \
             json_each(c.messages) m WHERE c.room = 'old' \
             AND json_extract(m.value, '$.seq') >= 1998 ORDER BY json_extract(m.value, '$.seq')",
        )
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(newest.len(), 3, "{newest:?}");
    assert!(newest[0].starts_with("old m1998 "));
    assert_eq!(newest[1..], ["edited", "new"]);
    let tables: Vec<String> = db
        .prepare("SELECT name FROM sqlite_schema WHERE type = 'table' ORDER BY name")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(
        tables,
        ["roomcast_chunks", "roomcast_rooms"],
        "no table of ids"
    );
    let count: i64 = db
        .query_row("SELECT sum(count) FROM roomcast_chunks", [], |r| r.get(0))
        .unwrap();
    assert_eq!(count, 2 * per_room, "one deleted, one posted");
    drop(db);

    // And it opens again as it is.
    let server = Server::start(sqlite().data_dir(dir)).await;
    let (_bob, w) = server.join("other", "bob").await;
    assert_eq!(w["last_seq"], per_room);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn kill_9_keeps_every_committed_message_and_never_reuses_a_seq() {
    let dir = TempDir::new("kill9");
    let bin = Binary::start(dir.path(), &["--rate", "0"]);
    let (mut ann, _) = bin.join("crash", "ann").await;
    ann.expect("join").await;
    let mut ids = Vec::new();
    for i in 1..=30 {
        ids.push(ann.post(&format!("m{i}")).await["message_id"].clone());
    }
    send(
        &mut ann,
        json!({"type": "edit", "message_id": ids[0], "content": "first, edited"}),
    )
    .await;
    ann.expect("message_updated").await;
    send(&mut ann, json!({"type": "delete", "message_id": ids[1]})).await;
    ann.expect("message_deleted").await;
    send(
        &mut ann,
        json!({"type": "reaction", "message_id": ids[2], "emoji": "🎉"}),
    )
    .await;
    ann.expect("reaction_update").await;
    // Everything so far is on disk once the store says so; what follows
    // is posted and the process killed at once (it may or may not be).
    eventually("the store has committed everything", async || {
        bin.metric("roomcast_store_uncommitted").await == 0
    })
    .await;
    let mut highest = 30;
    for i in 31..=60 {
        highest = ann.post(&format!("m{i}")).await["seq"].as_u64().unwrap();
    }
    bin.kill9();

    let bin = Binary::start(dir.path(), &["--rate", "0"]);
    let page = bin.get("/api/rooms/crash/messages?limit=100").await.json();
    let got = seqs(&page["messages"]);
    let committed: Vec<u64> = (1..=30).filter(|s| *s != 2).collect();
    assert_eq!(
        got[..committed.len()],
        committed[..],
        "every committed message is back"
    );
    assert!(
        got[committed.len()..]
            .iter()
            .copied()
            .eq(31..31 + (got.len() - committed.len()) as u64),
        "what else survived is a prefix of what followed: {got:?}"
    );
    let messages = page["messages"].as_array().unwrap();
    assert_eq!(messages[0]["content"], "first, edited");
    assert_eq!(messages[1]["reactions"], json!({"🎉": ["ann"]}));
    let (mut bob, w) = bin.join("crash", "bob").await;
    assert!(w["last_seq"].as_u64().unwrap() >= highest, "{w}");
    bob.expect("join").await;
    let next = bob.post("after the crash").await["seq"].as_u64().unwrap();
    assert!(
        next > highest,
        "seq {next} was already handed out (up to {highest})"
    );
}

#[tokio::test]
async fn the_per_room_cap_keeps_the_newest_across_a_crash() {
    let dir = TempDir::new("cap-crash");
    let args = ["--rate", "0", "--retention-messages", "5"];
    let bin = Binary::start(dir.path(), &args);
    let (mut ann, _) = bin.join("capped", "ann").await;
    ann.expect("join").await;
    for i in 1..=8 {
        ann.post(&format!("m{i}")).await;
    }
    eventually("the store has committed everything", async || {
        bin.metric("roomcast_store_uncommitted").await == 0
    })
    .await;
    bin.kill9();

    // The numbering resumes past the reservation: a cap by seq would now
    // keep only the new message.
    let bin = Binary::start(dir.path(), &args);
    let (mut bob, _) = bin.join("capped", "bob").await;
    bob.expect("join").await;
    let next = bob.post("after the crash").await["seq"].as_u64().unwrap();
    assert!(next > 8 + 5, "{next}");
    eventually("the store has committed everything", async || {
        bin.metric("roomcast_store_uncommitted").await == 0
    })
    .await;
    bin.kill9();
    let bin = Binary::start(dir.path(), &args);
    let page = bin.get("/api/rooms/capped/messages?limit=100").await.json();
    assert_eq!(seqs(&page["messages"]), vec![5, 6, 7, 8, next]);
}

#[tokio::test]
async fn a_retry_after_a_restart_still_finds_its_message() {
    let server = Server::start(sqlite()).await;
    let (mut ann, _) = server.join("again", "ann").await;
    ann.expect("join").await;
    let request = json!({"type": "message", "content": "sent once", "client_id": "k-1"});
    send(&mut ann, request.clone()).await;
    let first = ann.expect("message").await;
    drop(ann);
    let server = server.restart().await;
    let (mut ann, _) = server.join("again", "ann").await;
    ann.expect("join").await;
    send(&mut ann, request).await;
    let again = ann.expect("message").await;
    assert_eq!(
        (&again["seq"], &again["message_id"]),
        (&first["seq"], &first["message_id"])
    );
    let page = server.get("/api/rooms/again/messages").await.json();
    assert_eq!(seqs(&page["messages"]), vec![1], "posted once");
    server.shutdown().await.unwrap();
}

/// A hub over the SQLite store in `dir`, as the server makes them.
fn hub_on_sqlite(rt: &tokio::runtime::Runtime, dir: &std::path::Path) -> (Hub, Store) {
    let settings = StoreSettings {
        kind: StoreKind::Sqlite,
        data_dir: dir.to_path_buf(),
        fsync: Fsync::Batch,
        retention: Retention::default(),
        queue: 1024,
        max_mb: None,
    };
    let metrics = Arc::new(Metrics::default());
    let store = rt
        .block_on(roomcast::store::open(&settings, Arc::clone(&metrics)))
        .unwrap()
        .expect("an SQLite store");
    let hub = Hub::from_parts(HubParts {
        config: HubConfig::default(),
        metrics,
        store: Some(store.clone()),
    });
    (hub, store)
}

/// Waits for `work` on a runtime of its own, on another thread: the
/// caller's runtime, and the tasks on it, do not run meanwhile.
fn elsewhere(work: impl Future<Output = ()> + Send) {
    std::thread::scope(|s| {
        s.spawn(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(work)
        })
        .join()
        .unwrap()
    });
}

/// The server stops while a join's history is read (what `serve` does at
/// shutdown: the sessions' tasks dropped, the rooms settled, the store
/// stopped): the load has reserved a block of seqs that no room holds, so
/// the hub cannot settle it; the writer does. After the clean restart the
/// room numbers on from its true last seq, not a block past it.
#[test]
fn a_join_still_loading_at_a_clean_stop_leaves_the_numbering_without_a_jump() {
    let tmp = TempDir::new("loading-at-stop");
    let runtime = || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    };
    let room = || RoomName::parse("late").unwrap();
    let ann = || UserName::parse("ann").unwrap();
    let db = || rusqlite::Connection::open(tmp.path().join("roomcast.db")).unwrap();
    let reserved = || -> i64 {
        db().query_row("SELECT seq_reserved FROM roomcast_rooms", [], |r| r.get(0))
            .unwrap()
    };
    {
        let rt = runtime();
        let _in_runtime = rt.enter();
        let (hub, store) = hub_on_sqlite(&rt, tmp.path());
        let member = hub.join(room(), ann(), None).unwrap();
        // The welcome's task runs once: it queues the room's load and
        // waits for the answer.
        rt.block_on(tokio::task::yield_now());
        // The load is answered; its task does not run to take the answer.
        elsewhere(store.flush());
        assert_eq!(reserved(), 65_536, "the load reserved a block");
        assert!(member.outbox().is_empty(), "the room is not loaded yet");
        hub.settle();
        elsewhere(store.stop());
    }
    assert_eq!(reserved(), 0, "the writer settled the unused block");

    let rt = runtime();
    let _in_runtime = rt.enter();
    let (hub, store) = hub_on_sqlite(&rt, tmp.path());
    let mut member = hub.join(room(), ann(), None).unwrap();
    rt.block_on(member.welcomed());
    let posted = member.post_now("first".into(), None).unwrap().unwrap();
    assert_eq!(posted, Some(1), "numbered on from the last seq, 0");
    drop((member, hub));
    rt.block_on(store.stop());
}
