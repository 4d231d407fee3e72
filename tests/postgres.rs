//! The PostgreSQL store (feature `postgres`) against the real server at
//! 127.0.0.1:5432 (trust auth, database `test`): each test gets a schema of
//! its own, dropped at the end. History survives restarts, two instances on
//! Redis share it (also when a change reaches the database before the post
//! it changes), a newer schema is refused, and a database that stops
//! mid-conversation (a throwaway cluster the test starts, never the shared
//! one) gives `unavailable`, then everything recovers by itself. (A Redis
//! that hangs: `tests/in_doubt.rs`.)
#![cfg(all(feature = "postgres", feature = "redis"))]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::postgres::{Schema, admin, contents, on};
use common::redis::{Keys, on_redis};
use common::{
    Client, Proxy, Server, TempDir, config, eventually, moderator_token, token, token_mode,
    with_claim,
};
use roomcast::store::StoreKind;
use serde_json::{Value, json};

fn seqs(history: &Value) -> Vec<u64> {
    history
        .as_array()
        .expect("an array of messages")
        .iter()
        .map(|m| m["seq"].as_u64().expect("seq"))
        .collect()
}

#[tokio::test]
async fn history_survives_a_restart_and_resumes_read_the_database() {
    let schema = Schema::new("restart");
    let server = Server::start(on(&schema.url()).history(4usize)).await;
    let (mut ann, _) = server.join("pg", "ann").await;
    ann.expect("join").await;
    let mut ids = Vec::new();
    for i in 1..=12 {
        ids.push(ann.post(&format!("m{i}")).await["message_id"].clone());
    }
    // Changes apply to the messages in memory (the last 4 here).
    ann.send_json(json!({"type": "edit", "message_id": ids[8], "content": "m9!"}))
        .await;
    ann.expect("message_updated").await;
    ann.send_json(json!({"type": "delete", "message_id": ids[9]}))
        .await;
    ann.expect("message_deleted").await;
    ann.send_json(json!({"type": "add_reaction", "message_id": ids[10], "emoji": "🐘"}))
        .await;
    ann.expect("reaction_update").await;
    drop(ann);

    let server = server.restart().await;
    let page = server.get("/api/rooms/pg/messages?limit=100").await.json();
    let expected: Vec<u64> = (1..=12).filter(|s| *s != 10).collect();
    assert_eq!(seqs(&page["messages"]), expected);
    assert_eq!(page["messages"][8]["content"], "m9!");
    assert_eq!(page["messages"][9]["reactions"], json!({"🐘": ["ann"]}));
    // Older than the 4-message ring: read from the database.
    let mut c = server.ws("/ws/pg/bob?after=2").await;
    let w = c.expect("welcome").await;
    let expected: Vec<u64> = (3..=12).filter(|s| *s != 10).collect();
    assert_eq!(seqs(&w["history"]), expected);
    assert_eq!(w["gap"], false);
    assert_eq!(w["last_seq"], 12, "a clean restart keeps the numbering");
    c.expect("join").await;
    assert_eq!(c.post("next").await["seq"], 13);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_version_1_database_is_upgraded_and_keeps_its_messages() {
    let schema = Schema::new("v1");
    let s = &schema.0;
    // The tables as version 1 made them, with one message.
    admin(&format!(
        "CREATE TABLE {s}.roomcast_schema (version INTEGER NOT NULL);
         INSERT INTO {s}.roomcast_schema VALUES (1);
         CREATE TABLE {s}.roomcast_rooms (room TEXT PRIMARY KEY, seq_reserved BIGINT NOT NULL);
         CREATE TABLE {s}.roomcast_messages (
             room TEXT NOT NULL, seq BIGINT NOT NULL, id TEXT NOT NULL UNIQUE,
             user_name TEXT NOT NULL, identity TEXT NOT NULL, content TEXT NOT NULL,
             created TEXT NOT NULL, created_ms BIGINT NOT NULL, attachment TEXT,
             edited_at TEXT, reactions TEXT NOT NULL DEFAULT '[]', client_id TEXT,
             PRIMARY KEY (room, seq));
         CREATE INDEX roomcast_messages_created ON {s}.roomcast_messages (created_ms);
         INSERT INTO {s}.roomcast_messages VALUES ('old', 1, 'm-1', 'ann', 'i', 'kept', \
             '2026-12-01T10:00:00.000Z', 1796119200000, NULL, NULL, '[]', NULL);"
    ));
    let server = Server::start(on(&schema.url())).await;
    let (mut bob, w) = server.join("old", "bob").await;
    assert_eq!(w["history"][0]["content"], "kept", "{w}");
    bob.expect("join").await;
    assert_eq!(bob.post("new").await["seq"], 2);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_schema_newer_than_the_binary_is_refused_at_start() {
    let schema = Schema::new("newer");
    let server = Server::start(on(&schema.url())).await;
    assert_eq!(server.get("/health").await.status, 200);
    server.shutdown().await.unwrap();
    admin(&format!(
        "UPDATE {}.roomcast_schema SET version = 42",
        schema.0
    ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dir = TempDir::new("pg-newer");
    let e = roomcast::serve(
        listener,
        on(&schema.url()).uploads_dir(dir.path().to_path_buf()),
        async {},
    )
    .await
    .expect_err("a newer schema must be refused")
    .to_string();
    assert!(e.contains("newer roomcast") && e.contains("42"), "{e}");
}

#[tokio::test]
async fn two_instances_on_redis_share_the_history_and_its_numbering() {
    let schema = Schema::new("shared");
    let prefix = common::unique("redis");
    let redis = |p: &str| {
        on(&schema.url())
            .redis_url(Some("redis://127.0.0.1:6379".to_owned()))
            .redis_prefix(p.to_owned())
    };
    let a = Server::start(redis(&prefix)).await;
    let b = Server::start(redis(&prefix)).await;
    for s in [&a, &b] {
        s.wait_healthy().await;
    }
    let (mut ann, _) = a.join("team", "ann").await;
    ann.expect("join").await;
    let mut ids = Vec::new();
    for i in 1..=5 {
        ids.push(ann.post(&format!("from a {i}")).await["message_id"].clone());
    }
    // Changes go through Redis, which answers each message's seq: what the
    // database finds it by.
    ann.send_json(json!({"type": "edit", "message_id": ids[1], "content": "2!"}))
        .await;
    ann.expect("message_updated").await;
    ann.send_json(json!({"type": "add_reaction", "message_id": ids[2], "emoji": "🐘"}))
        .await;
    ann.expect("reaction_update").await;
    ann.send_json(json!({"type": "delete", "message_id": ids[3]}))
        .await;
    ann.expect("message_deleted").await;
    // Written on one, read on the other: through the database.
    eventually("b reads a's messages from the database", async || {
        let page = b.get("/api/rooms/team/messages").await;
        if page.status != 200 {
            return false;
        }
        let page = page.json();
        seqs(&page["messages"]) == vec![1, 2, 3, 5]
            && page["messages"][1]["content"] == "2!"
            && page["messages"][2]["reactions"] == json!({"🐘": ["ann"]})
    })
    .await;
    drop(ann);
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();

    // Redis loses everything (here: a prefix it never saw): the database
    // still has the history, the welcome shows it, and the numbering
    // continues above it.
    let fresh = common::unique("redis-empty");
    let c = Server::start(redis(&fresh)).await;
    c.wait_healthy().await;
    // A resume from before: what Redis lost counts as gone from it, so
    // the welcome is completed from the database (its gap stays: the
    // database may lag other instances' latest posts).
    let mut dora = c.ws("/ws/team/dora?after=2").await;
    let w = dora.expect("welcome").await;
    assert_eq!(seqs(&w["history"]), vec![3, 5], "{w}");
    assert_eq!(
        (&w["gap"], &w["last_seq"]),
        (&json!(true), &json!(5)),
        "{w}"
    );
    drop(dora);
    let (mut carl, w) = c.join("team", "carl").await;
    assert_eq!(seqs(&w["history"]), vec![1, 2, 3, 5], "{w}");
    carl.expect("join").await;
    let m = carl.post("after redis forgot").await;
    assert!(m["seq"].as_u64().unwrap() > 5, "{m}");
    c.shutdown().await.unwrap();
}

#[tokio::test]
async fn redis_losing_its_data_while_the_room_is_held_here_never_reuses_a_stored_seq() {
    let schema = Schema::new("amnesia");
    let keys = Keys(common::unique("amnesia-redis"));
    let a = Server::start(
        on(&schema.url())
            .redis_url(Some("redis://127.0.0.1:6379".to_owned()))
            .redis_prefix(keys.prefix().to_owned()),
    )
    .await;
    a.wait_healthy().await;
    // The room is loaded while the database holds nothing: its floor is 0.
    let (mut ann, _) = a.join("team", "ann").await;
    ann.expect("join").await;
    for i in 1..=3 {
        ann.post(&format!("m{i}")).await;
    }
    eventually("the database holds the three", async || {
        a.metric("roomcast_store_uncommitted").await == 0
    })
    .await;

    // Redis restarts empty; the instance still holds the room.
    let mut redis = common::redis::Admin::connect();
    redis.cleanup(keys.prefix());
    assert!(redis.kill_connections(keys.prefix()) > 0);
    ann.expect_close(1013).await;
    a.wait_healthy().await;

    // Numbered right above what the database holds: not from the floor of
    // the first load (a reused seq, which the database would refuse
    // silently), and not past a reservation (Redis numbers the room; a
    // load reserves nothing).
    let (mut ann, _) = a.join("team", "ann").await;
    ann.expect("join").await;
    let m = ann.post("after redis forgot").await;
    assert_eq!(m["seq"], 4, "{m}");
    eventually("the new message is in the database", async || {
        let page = a.get("/api/rooms/team/messages").await.json();
        page["messages"]
            .as_array()
            .is_some_and(|all| all.iter().any(|m| m["content"] == "after redis forgot"))
    })
    .await;
    drop(ann);
    a.shutdown().await.unwrap();
}

/// Redis comes back with part of its data (a failover to a replica that
/// lagged, an older snapshot restored): the epoch is the same, so no
/// instance is told the data was lost, but a room's seq went back below
/// what the database holds. The instance reads the room's floor from the
/// database again when it reconnects, so its next post is numbered above
/// what is stored instead of reusing a stored seq (which the database
/// would refuse silently), and a welcome shows the newest stored messages,
/// not the older ones Redis kept, with `gap` for a resume from before.
#[tokio::test]
async fn redis_numbering_going_back_without_losing_its_epoch_reuses_no_stored_seq() {
    let schema = Schema::new("rollback");
    let proxy = Proxy::start(common::redis::REDIS).await;
    let (config, keys) = on_redis(on(&schema.url()), "rollback");
    let a = Server::start(config.redis_url(Some(format!("redis://{}", proxy.addr)))).await;
    a.wait_healthy().await;
    // The room is loaded while the database holds nothing: its floor is 0.
    let (mut ann, _) = a.join("team", "ann").await;
    ann.expect("join").await;
    let mut ids = Vec::new();
    for i in 1..=3 {
        ids.push(ann.post(&format!("m{i}")).await["message_id"].clone());
    }
    a.wait_metric("roomcast_store_uncommitted", 0).await;

    proxy.cut();
    eventually("the instance lost Redis", async || {
        a.get("/health").await.status == 503
    })
    .await;
    // What a replica that missed the last two posts holds.
    let mut redis = common::redis::Admin::connect();
    let p = keys.prefix();
    redis.cmd(&["HSET", &format!("{p}:meta:team"), "seq", "1"]);
    for id in &ids[1..] {
        let id = id.as_str().unwrap();
        redis.cmd(&["ZREM", &format!("{p}:ids:team"), id]);
        redis.cmd(&["HDEL", &format!("{p}:msgs:team"), id]);
    }
    proxy.restore();
    a.wait_healthy().await;

    // Welcomes show what the database holds: the newest messages, not m1
    // alone (all Redis has); after m1, m2 and m3, told as a gap Redis
    // could not fill.
    let (_bob, w) = a.join("team", "bob").await;
    assert_eq!(seqs(&w["history"]), vec![1, 2, 3], "{w}");
    let mut cara = a.ws("/ws/team/cara?after=1").await;
    let w = cara.expect("welcome").await;
    assert_eq!(seqs(&w["history"]), vec![2, 3], "{w}");
    assert_eq!(
        (&w["gap"], &w["last_seq"]),
        (&json!(true), &json!(3)),
        "{w}"
    );

    ann.send_json(json!({"type": "message", "content": "after the rollback"}))
        .await;
    let m = ann.skip_to("message").await;
    assert_eq!(m["seq"], 4, "{m}");
    a.wait_metric("roomcast_store_uncommitted", 0).await;
    assert_eq!(
        contents(&a, "/api/rooms/team/messages").await,
        ["m1", "m2", "m3", "after the rollback"]
    );
    drop(ann);
    a.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_resume_past_redis_ring_keeps_its_gap_while_the_database_lags() {
    let schema = Schema::new("lag");
    let proxy = Proxy::start("127.0.0.1:5432").await;
    let through_proxy = schema
        .url()
        .replace("127.0.0.1:5432", &proxy.addr.to_string());
    let (config, _keys) = on_redis(on(&schema.url()).history(2usize), "lag");
    let a = Server::start(config.clone().store(StoreKind::Postgres(through_proxy))).await;
    let b = Server::start(config).await;
    a.wait_healthy().await;
    b.wait_healthy().await;
    let (mut ann, _) = a.join("lag", "ann").await;
    ann.expect("join").await;
    // a's writes wait; Redis's ring of two holds m4 and m5, and m1..m3 are
    // in neither it nor the database yet.
    proxy.freeze();
    for i in 1..=5 {
        ann.post(&format!("m{i}")).await;
    }
    let mut bob = b.ws("/ws/lag/bob?after=0").await;
    let w = bob.expect("welcome").await;
    assert_eq!(seqs(&w["history"]), vec![4, 5], "{w}");
    assert_eq!(w["gap"], true, "m1..m3 are missing: the client must page");
    proxy.thaw();
    drop((ann, bob));
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

/// Posts `content` and returns its id, once its echo comes back (other
/// events may come first).
async fn post(client: &mut Client, content: &str) -> Value {
    client
        .send_json(json!({"type": "message", "content": content}))
        .await;
    let m = client.skip_to("message").await;
    assert_eq!(m["content"], content, "{m}");
    m["message_id"].clone()
}

/// Two instances on one Redis and one database, in token mode: `a` reaches
/// the database through a proxy the test can cut, `b` directly.
struct Pair {
    schema: Schema,
    proxy: Proxy,
    a: Server,
    b: Server,
    _keys: Keys,
}

impl Pair {
    async fn start(tag: &str) -> Self {
        let schema = Schema::new(tag);
        let proxy = Proxy::start("127.0.0.1:5432").await;
        let through_proxy = schema
            .url()
            .replace("127.0.0.1:5432", &proxy.addr.to_string());
        let (b_config, keys) = on_redis(token_mode(on(&schema.url())), tag);
        let a_config = b_config.clone().store(StoreKind::Postgres(through_proxy));
        let a = Server::start(a_config).await;
        let b = Server::start(b_config).await;
        a.wait_healthy().await;
        b.wait_healthy().await;
        Self {
            schema,
            proxy,
            a,
            b,
            _keys: keys,
        }
    }

    /// `user` in `room` on `server`, welcomed.
    async fn join(server: &Server, room: &str, user: &str, token: &str) -> Client {
        let mut c = server.ws(&format!("/ws/{room}/{user}?token={token}")).await;
        c.expect("welcome").await;
        c
    }

    /// Once `b` committed what it was given, gives `a` its database back
    /// and waits until it committed what waited and is healthy.
    async fn reconnect_once_b_committed(&self) {
        self.b.wait_metric("roomcast_store_uncommitted", 0).await;
        self.proxy.restore();
        self.a.wait_metric("roomcast_store_uncommitted", 0).await;
        self.a.wait_healthy().await;
    }

    /// Stops both and reads `room`'s messages as the database holds them,
    /// through an instance whose Redis knows nothing (a prefix never used).
    async fn stored(self, room: &str) -> Value {
        self.a.shutdown().await.unwrap();
        self.b.shutdown().await.unwrap();
        let (config, _keys) = on_redis(token_mode(on(&self.schema.url())), "empty");
        let c = Server::start(config).await;
        c.wait_healthy().await;
        let page = c
            .get(&format!(
                "/api/rooms/{room}/messages?token={}",
                token("reader", &[room])
            ))
            .await
            .json();
        c.shutdown().await.unwrap();
        page["messages"].clone()
    }
}

/// Changes made on one instance can reach the database before the post
/// they change, when the post's own instance is slower to write it (here:
/// cut off from the database). The database must end up as Redis saw the
/// room: the edit and the reaction on the message, the deleted one gone.
#[tokio::test]
async fn changes_that_reach_the_database_before_their_post_are_kept_for_it() {
    let pair = Pair::start("overtake").await;
    let ann_token = token("ann", &["team"]);
    let mut ann_a = Pair::join(&pair.a, "team", "ann", &ann_token).await;
    let mut ann_b = Pair::join(&pair.b, "team", "ann", &ann_token).await;
    let mut mo = Pair::join(&pair.b, "team", "mo", &moderator_token("mo")).await;

    // An edit and a reaction, made on b while a's post waits for the
    // database.
    pair.proxy.cut();
    let first = post(&mut ann_a, "first").await;
    ann_b
        .send_json(json!({"type": "edit", "message_id": first, "content": "first, edited"}))
        .await;
    ann_b.skip_to("message_updated").await;
    mo.send_json(json!({"type": "add_reaction", "message_id": first, "emoji": "🐘"}))
        .await;
    mo.skip_to("reaction_update").await;
    pair.reconnect_once_b_committed().await;

    // A moderator's delete, made on b while a's post waits.
    pair.proxy.cut();
    let second = post(&mut ann_a, "second").await;
    mo.send_json(json!({"type": "delete", "message_id": second}))
        .await;
    mo.skip_to("message_deleted").await;
    pair.reconnect_once_b_committed().await;
    let third = post(&mut ann_a, "third").await;
    pair.a.wait_metric("roomcast_store_uncommitted", 0).await;
    drop((ann_a, ann_b, mo));

    let messages = pair.stored("team").await;
    let ids: Vec<&Value> = messages
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| &m["message_id"])
        .collect();
    assert_eq!(ids, [&first, &third], "{messages}");
    assert_eq!(messages[0]["content"], "first, edited");
    assert!(messages[0]["edited_at"].is_string(), "{messages}");
    assert_eq!(messages[0]["user"], "ann");
    assert_eq!(messages[0]["reactions"], json!({"🐘": ["mo"]}));
}

/// Two instances write reactions to one message; the older write lands
/// last (its instance was cut off from the database meanwhile). The
/// database keeps the newer: both reactions.
#[tokio::test]
async fn reactions_written_out_of_order_by_two_instances_keep_the_newest() {
    let pair = Pair::start("reorder").await;
    let mut ann = Pair::join(&pair.b, "team", "ann", &token("ann", &["team"])).await;
    let mut bob = Pair::join(&pair.a, "team", "bob", &token("bob", &["team"])).await;
    let mut carl = Pair::join(&pair.b, "team", "carl", &token("carl", &["team"])).await;
    let id = post(&mut ann, "react to me").await;
    pair.b.wait_metric("roomcast_store_uncommitted", 0).await;

    pair.proxy.cut();
    bob.send_json(json!({"type": "add_reaction", "message_id": id, "emoji": "🐘"}))
        .await;
    bob.skip_to("reaction_update").await;
    carl.skip_to("reaction_update").await; // bob's, before carl's own
    carl.send_json(json!({"type": "add_reaction", "message_id": id, "emoji": "🐘"}))
        .await;
    let r = carl.skip_to("reaction_update").await;
    assert_eq!(r["users"], json!(["bob", "carl"]), "{r}");
    pair.reconnect_once_b_committed().await;
    drop((ann, bob, carl));

    let messages = pair.stored("team").await;
    assert_eq!(messages[0]["message_id"], id, "{messages}");
    assert_eq!(messages[0]["reactions"], json!({"🐘": ["bob", "carl"]}));
}

#[tokio::test]
async fn a_sqlite_store_with_redis_is_refused_at_start() {
    let dir = TempDir::new("redis-sqlite");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let config = config()
        .store(StoreKind::Sqlite)
        .redis_url(Some("redis://127.0.0.1:6379".to_owned()))
        .data_dir(dir.path().join("data"))
        .uploads_dir(dir.path().join("up"));
    let e = roomcast::serve(listener, config, async {})
        .await
        .expect_err("an instance's own file cannot be shared")
        .to_string();
    assert!(e.contains("--store postgres://"), "{e}");
}

// ------------------------------------------------ a database that stops

/// A PostgreSQL cluster of the test's own, on a free port, run as the
/// `postgres` user when the tests run as root (PostgreSQL refuses root).
struct Cluster {
    dir: TempDir,
    bin: PathBuf,
    port: u16,
}

fn pg_bin() -> PathBuf {
    let root = Path::new("/usr/lib/postgresql");
    let mut versions: Vec<PathBuf> = std::fs::read_dir(root)
        .unwrap_or_else(|e| panic!("PostgreSQL's programs are not in {}: {e}", root.display()))
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|p| p.join("pg_ctl").exists())
        .collect();
    versions.sort();
    versions.pop().expect("a PostgreSQL version with pg_ctl")
}

fn as_postgres(program: &Path) -> Command {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

impl Cluster {
    fn start() -> Self {
        let dir = TempDir::new("pgcluster");
        let data = dir.path().join("data");
        std::fs::create_dir_all(&data).unwrap();
        // SAFETY: geteuid has no preconditions and cannot fail.
        if unsafe { libc::geteuid() } == 0 {
            let out = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir.path())
                .output()
                .expect("chown");
            assert!(out.status.success(), "chown: {out:?}");
        }
        let bin = pg_bin();
        let out = as_postgres(&bin.join("initdb"))
            .args(["-A", "trust", "-U", "postgres", "-D"])
            .arg(&data)
            .output()
            .expect("initdb");
        assert!(out.status.success(), "initdb failed: {out:?}");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let cluster = Self { dir, bin, port };
        cluster.ctl("start");
        cluster
    }

    fn ctl(&self, verb: &str) {
        let data = self.dir.path().join("data");
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            self.dir.path().display()
        );
        let mut c = as_postgres(&self.bin.join("pg_ctl"));
        c.arg("-D")
            .arg(&data)
            .args(["-w", "-t", "30", "-m", "immediate"]);
        c.args(["-o", &opts, "-l"]).arg(self.dir.path().join("log"));
        let out = c.arg(verb).output().expect("pg_ctl");
        assert!(out.status.success(), "pg_ctl {verb} failed: {out:?}");
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let data = self.dir.path().join("data");
        let _ = as_postgres(&self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(&data)
            .args(["-m", "immediate", "stop"])
            .output();
    }
}

#[tokio::test]
async fn a_database_that_stops_gives_unavailable_then_everything_recovers() {
    let cluster = Cluster::start();
    let server = Server::start(on(&cluster.url())).await;
    let (mut ann, _) = server.join("outage", "ann").await;
    ann.expect("join").await;
    ann.post("before").await;
    server.wait_metric("roomcast_store_uncommitted", 0).await;

    cluster.ctl("stop");
    // Accepted before the store knew: kept, and committed once it is back.
    ann.post("while it went down").await;
    eventually("/health says degraded", async || {
        server.get("/health").await.status == 503
    })
    .await;
    let health = server.get("/health").await.json();
    assert_eq!(health["status"], "degraded");
    assert!(
        health["reason"].as_str().unwrap().contains("history store"),
        "{health}"
    );
    ann.send_json(json!({"type": "message", "content": "refused"}))
        .await;
    ann.expect_error("unavailable").await;

    cluster.ctl("start");
    server.wait_healthy().await;
    ann.post("after").await;
    server.wait_metric("roomcast_store_uncommitted", 0).await;
    assert_eq!(
        contents(&server, "/api/rooms/outage/messages").await,
        ["before", "while it went down", "after"]
    );
    server.shutdown().await.unwrap();
}

/// A database that hangs (its connection open, nothing answered) is waited
/// for, not failed at once: past three quarters of the store's queue the
/// server stops reading requests, from idle connections too, yet
/// `/metrics` and `/health` still answer; behind for a second, `/health`
/// and new WebSockets say so, and so does a handshake held meanwhile; once
/// the database answers again every post is delivered, in order, and
/// stored.
#[tokio::test]
async fn a_database_that_hangs_holds_posts_while_health_checks_answer() {
    let schema = Schema::new("hang");
    let proxy = Proxy::start("127.0.0.1:5432").await;
    let url = schema
        .url()
        .replace("127.0.0.1:5432", &proxy.addr.to_string());
    let server = Server::start(on(&url).store_queue(64usize)).await;
    let (mut ann, _) = server.join("hang", "ann").await;
    ann.expect("join").await;
    // The room's seqs are reserved before the database hangs.
    ann.post("0").await;
    // Members of another room, idle while the throttle engages.
    let mut side = Vec::new();
    for k in 0..32 {
        side.push(server.join("side", &format!("s{k}")).await.0);
    }
    side[0]
        .send_json(json!({"type": "message", "content": "warm"}))
        .await;
    for member in &mut side {
        member.skip_to("message").await;
    }
    server.wait_metric("roomcast_store_uncommitted", 0).await;

    proxy.freeze();
    // Posts until the store's queue has been behind for a second: the
    // first go into the writer's group, whose commit hangs; the next wait
    // in its queue, and past three quarters of it the server reads no more
    // of them. Health checks are answered all along.
    let posting = async {
        let mut sent = 0u32;
        loop {
            for _ in 0..16 {
                sent += 1;
                ann.send_json(json!({"type": "message", "content": sent.to_string()}))
                    .await;
            }
            let health = server.get("/health").await;
            if health.status == 503 {
                let reason = health.json()["reason"].as_str().unwrap().to_owned();
                assert!(reason.contains("the history store is behind"), "{reason}");
                return sent;
            }
            assert_eq!(health.status, 200, "{}", health.text());
            assert!(sent < 5_000, "the store never said it was behind");
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    };
    // A handshake that comes while reads are paused is held; once the
    // store has been behind for a second it is refused like a new one,
    // not held for as long as the database hangs.
    let held = async {
        eventually("the store's queue is behind", async || {
            server.metric("roomcast_store_behind_total").await >= 1
        })
        .await;
        server.try_upgrade(&with_claim("/ws/hang/cy"), &[]).await
    };
    let (sent, held) = tokio::join!(posting, held);
    assert_eq!(held.status, 503, "{}", held.text());
    assert_eq!(held.json()["error"], "unavailable");
    let reason = held.json()["message"].as_str().unwrap().to_owned();
    assert!(reason.contains("the history store is behind"), "{reason}");
    assert!(server.metric("roomcast_store_behind_total").await >= 1);
    let refused = server.try_upgrade(&with_claim("/ws/hang/bo"), &[]).await;
    assert_eq!(refused.status, 503, "{}", refused.text());
    assert_eq!(refused.json()["error"], "unavailable");
    // Each idle member posts once: read by none while the store is behind
    // (the queue's last quarter, 16, could not take 32 of them).
    for (k, member) in side.iter_mut().enumerate() {
        member
            .send_json(json!({"type": "message", "content": format!("side {k}")}))
            .await;
    }

    proxy.thaw();
    for (k, member) in side.iter_mut().enumerate() {
        let own = format!("side {k}");
        loop {
            let m = member.skip_to_any(&["message", "error"]).await;
            assert_eq!(m["type"], "message", "{m}");
            if m["content"] == own.as_str() {
                break;
            }
        }
    }
    for k in 1..=sent {
        let m = ann.skip_to_any(&["message", "error"]).await;
        assert_eq!(m["type"], "message", "{m}");
        assert_eq!(m["content"], k.to_string(), "{m}");
    }
    server.wait_healthy().await;
    server.wait_metric("roomcast_store_uncommitted", 0).await;
    let expected: Vec<String> = (sent - 99..=sent).map(|k| k.to_string()).collect();
    assert_eq!(
        contents(&server, "/api/rooms/hang/messages?limit=100").await,
        expected
    );
    server.shutdown().await.unwrap();
}
