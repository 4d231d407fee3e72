//! Several roomcast instances sharing rooms through the real Redis at
//! 127.0.0.1:6379 (CI starts one). Each test uses its own key prefix, so
//! tests run in parallel, and deletes its keys at the end. Every wait is a
//! poll or a read bounded by `TIMEOUT`: nothing passes because of timing.
#![cfg(feature = "redis")]

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::redis::{Admin, Keys, REDIS, Resp};
use common::{Client, Proxy, Server, TIMEOUT, TempDir};
use roomcast::Config;
use serde_json::{Value, json};

// ------------------------------------------------------------ instances

fn config(prefix: &str) -> Config {
    common::config()
        .redis_url(Some(format!("redis://{REDIS}")))
        .redis_prefix(prefix.to_owned())
        .rate(0u32)
}

/// Polls `/health` until it answers `status`.
async fn wait_health(addr: SocketAddr, status: u16) -> Value {
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        let res = common::http_raw(
            addr,
            b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            false,
        )
        .await;
        if res.status == status {
            return res.json();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "/health stayed {} ({}), never {status}",
            res.status,
            res.text()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Starts an instance and waits until its backbone is connected.
async fn instance(config: Config) -> Server {
    let server = Server::start(config).await;
    wait_health(server.addr, 200).await;
    server
}

/// Test setup: Redis reachable, a fresh prefix, `n` connected instances.
async fn cluster(tag: &str, n: usize, tweak: impl Fn(Config) -> Config) -> (Keys, Vec<Server>) {
    Admin::connect();
    let prefix = common::unique(tag);
    let keys = Keys(prefix.clone());
    let mut servers = Vec::new();
    for _ in 0..n {
        servers.push(instance(tweak(config(&prefix))).await);
    }
    (keys, servers)
}

/// Reads events until a `join` of `user`.
async fn joined(c: &mut Client, user: &str) -> Value {
    loop {
        let e = c.skip_to("join").await;
        if e["user"] == user {
            return e;
        }
    }
}

fn names(v: &Value) -> Vec<String> {
    let mut n: Vec<String> = v
        .as_array()
        .unwrap_or_else(|| panic!("not a list of names: {v}"))
        .iter()
        .map(|s| s.as_str().unwrap().to_owned())
        .collect();
    n.sort();
    n
}

// ------------------------------------------------------------ tests

#[tokio::test]
async fn messages_reactions_edits_deletes_and_typing_cross_instances() {
    let (_keys, s) = cluster("events", 2, |c| c).await;
    let (mut ann, _) = s[0].join("lobby", "ann").await;
    joined(&mut ann, "ann").await;
    let (mut bob, welcome) = s[1].join("lobby", "bob").await;
    assert_eq!(names(&welcome["online"]), ["ann", "bob"]);
    joined(&mut bob, "bob").await;
    joined(&mut ann, "bob").await;

    ann.send_json(json!({"type": "message", "content": "hi bob", "client_id": "c1"}))
        .await;
    let mine = ann.expect("message").await;
    let theirs = bob.expect("message").await;
    assert_eq!(mine, theirs, "one event, the same on both instances");
    assert_eq!(mine["seq"], 1);
    assert_eq!(mine["user"], "ann");
    assert_eq!(mine["client_id"], "c1");
    assert_eq!(mine["reactions"], json!({}));
    let id = mine["message_id"].as_str().unwrap().to_owned();

    bob.send_json(json!({"type": "add_reaction", "message_id": id, "emoji": "👍"}))
        .await;
    for c in [&mut ann, &mut bob] {
        let r = c.expect("reaction_update").await;
        assert_eq!(
            (&r["user"], &r["action"], &r["users"]),
            (&json!("bob"), &json!("add"), &json!(["bob"]))
        );
        assert_eq!(r["reactions"], json!({"👍": ["bob"]}));
    }
    ann.send_json(json!({"type": "reaction", "message_id": id, "emoji": "🎉"}))
        .await;
    for c in [&mut ann, &mut bob] {
        let r = c.expect("reaction_update").await;
        assert_eq!(r["reactions"], json!({"👍": ["bob"], "🎉": ["ann"]}));
    }
    // Adding twice changes nothing: bob alone gets the whole reactions.
    bob.send_json(json!({"type": "add_reaction", "message_id": id, "emoji": "👍"}))
        .await;
    let answer = bob.expect("reactions").await;
    assert_eq!(answer["reactions"], json!({"👍": ["bob"], "🎉": ["ann"]}));
    bob.send_json(json!({"type": "remove_reaction", "message_id": "nope", "emoji": "👍"}))
        .await;
    let e = bob.expect_error("unknown_message").await;
    assert_eq!(e["ref"], "remove_reaction");

    bob.send_json(json!({"type": "edit", "message_id": id, "content": "mine now"}))
        .await;
    let e = bob.expect_error("forbidden").await;
    assert_eq!(e["ref"], "edit");
    ann.send_json(json!({"type": "edit", "message_id": id, "content": "hi, bob"}))
        .await;
    for c in [&mut ann, &mut bob] {
        let m = c.expect("message_updated").await;
        assert_eq!((&m["content"], &m["seq"]), (&json!("hi, bob"), &json!(1)));
        assert!(m["edited_at"].is_string());
        assert_eq!(m["reactions"], json!({"👍": ["bob"], "🎉": ["ann"]}));
    }
    bob.send_json(json!({"type": "delete", "message_id": id}))
        .await;
    bob.expect_error("forbidden").await;
    ann.send_json(json!({"type": "delete", "message_id": id}))
        .await;
    for c in [&mut ann, &mut bob] {
        let d = c.expect("message_deleted").await;
        assert_eq!((&d["message_id"], &d["seq"]), (&json!(id), &json!(1)));
    }

    bob.send_json(json!({"type": "typing"})).await;
    assert_eq!(ann.expect("typing").await["user"], "bob");
    bob.roundtrip().await; // the typer gets nothing

    ann.send_json(json!({"type": "presence"})).await;
    let p = ann.expect("presence").await;
    assert_eq!(
        (names(&p["online"]), &p["online_count"]),
        (vec!["ann".to_owned(), "bob".to_owned()], &json!(2))
    );
}

#[tokio::test]
async fn join_and_leave_count_every_instances_members_and_tabs() {
    let (_keys, s) = cluster("presence", 2, |c| c).await;
    let (mut ann, _) = s[0].join("r", "ann").await;
    joined(&mut ann, "ann").await;
    let (bob_b, _) = s[1].join("r", "bob").await;
    let j = joined(&mut ann, "bob").await;
    assert_eq!(j["online_count"], 2);
    assert_eq!(names(&j["online"]), ["ann", "bob"]);

    // bob's second tab, on the other instance: no second join.
    let (mut bob_a, welcome) = s[0].join("r", "bob").await;
    assert_eq!(welcome["online_count"], 2);
    bob_a.roundtrip().await;
    ann.roundtrip().await;

    bob_b.close().await;
    // Still online through the other tab: ann sees nothing but her pong.
    ann.send_json(json!({"type": "presence"})).await;
    let p = ann.expect("presence").await;
    assert_eq!(p["online_count"], 2);

    bob_a.close().await;
    let l = ann.expect("leave").await;
    assert_eq!((&l["user"], &l["online_count"]), (&json!("bob"), &json!(1)));
    assert_eq!(names(&l["online"]), ["ann"]);
}

#[tokio::test]
async fn seq_strictly_increases_with_concurrent_senders_on_two_instances() {
    let (_keys, s) = cluster("seq", 2, |c| c).await;
    const EACH: usize = 40;
    let (mut watch_a, _) = s[0].join("r", "wa").await;
    let (mut watch_b, _) = s[1].join("r", "wb").await;
    let (ann, _) = s[0].join("r", "ann").await;
    let (bob, _) = s[1].join("r", "bob").await;
    let send = |mut c: Client, who: &'static str| async move {
        for i in 0..EACH {
            c.send_json(json!({"type": "message", "content": format!("{who}{i}")}))
                .await;
        }
        c
    };
    let (ann, bob) = tokio::join!(send(ann, "a"), send(bob, "b"));
    let mut orders = Vec::new();
    for w in [&mut watch_a, &mut watch_b] {
        let mut seen = Vec::new();
        while seen.len() < 2 * EACH {
            let e = w.recv_json().await;
            if e["type"] == "message" {
                seen.push((e["seq"].as_u64().unwrap(), e["content"].clone()));
            }
        }
        let seqs: Vec<u64> = seen.iter().map(|(s, _)| *s).collect();
        assert_eq!(seqs, (1..=2 * EACH as u64).collect::<Vec<_>>());
        orders.push(seen);
    }
    assert_eq!(orders[0], orders[1], "both instances deliver one order");
    drop((ann, bob));
}

#[tokio::test]
async fn welcome_is_the_first_frame_even_when_requests_come_with_the_handshake() {
    let (_keys, s) = cluster("first", 2, |c| c).await;
    let (mut ann, _) = s[0].join("r", "ann").await;
    ann.send_json(json!({"type": "message", "content": "before"}))
        .await;
    assert_eq!(ann.skip_to("message").await["content"], "before");

    // On the other instance, which has yet to subscribe to the room and
    // read it from Redis: the handshake, a ping and a message in one write.
    // Neither request may be answered before `welcome`, and the message's
    // echo must come as itself, with its client_id, not folded into the
    // welcome's history.
    let mut bob = common::RawWs::connect_sending(
        s[1].addr,
        "/ws/r/bob",
        &[
            r#"{"type":"ping"}"#,
            r#"{"type":"message","content":"hi","client_id":"c1"}"#,
        ],
    )
    .await;
    let welcome = bob.read_json().await;
    assert_eq!(welcome["type"], "welcome", "first frame: {welcome}");
    let history = welcome["history"].as_array().unwrap();
    assert_eq!(history.len(), 1, "only the earlier message: {welcome}");
    assert_eq!(history[0]["content"], "before");
    let (mut pong, mut echo) = (false, None);
    while !pong || echo.is_none() {
        let e = bob.read_json().await;
        match e["type"].as_str() {
            Some("pong") => pong = true,
            Some("message") => echo = Some(e),
            _ => {}
        }
    }
    let echo = echo.unwrap();
    assert_eq!(
        (&echo["content"], &echo["client_id"]),
        (&json!("hi"), &json!("c1"))
    );
}

#[tokio::test]
async fn resume_on_the_other_instance_with_after_and_gap() {
    let (_keys, s) = cluster("resume", 2, |c| c.history(5usize)).await;
    let (mut ann, _) = s[0].join("r", "ann").await;
    for i in 1..=8 {
        ann.send_json(json!({"type": "message", "content": format!("m{i}")}))
            .await;
        loop {
            let e = ann.recv_json().await;
            if e["type"] == "message" {
                assert_eq!(e["seq"], i);
                break;
            }
        }
    }
    let seqs = |w: &Value| -> Vec<u64> {
        w["history"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["seq"].as_u64().unwrap())
            .collect()
    };
    let mut c = s[1].ws("/ws/r/bob?after=1").await;
    let w = c.expect("welcome").await;
    assert_eq!((seqs(&w), &w["gap"]), (vec![4, 5, 6, 7, 8], &json!(true)));
    assert_eq!(w["last_seq"], 8);
    let mut c = s[1].ws("/ws/r/bob?after=5").await;
    let w = c.expect("welcome").await;
    assert_eq!((seqs(&w), &w["gap"]), (vec![6, 7, 8], &json!(false)));
    let (_, w) = s[1].join("r", "carl").await;
    assert_eq!(seqs(&w), [4, 5, 6, 7, 8]);
    assert_eq!(w["history"][4]["content"], "m8");
}

#[tokio::test]
async fn one_emoji_lists_at_most_max_users_per_reaction_people_across_instances() {
    let (_keys, s) = cluster("crowd", 2, |c| c.max_users_per_reaction(1usize)).await;
    let (mut ann, _) = s[0].join("r", "ann").await;
    ann.send_json(json!({"type": "message", "content": "vote"}))
        .await;
    let id = ann.skip_to("message").await["message_id"].clone();
    let (mut bob, _) = s[1].join("r", "bob").await;
    ann.send_json(json!({"type": "add_reaction", "message_id": id, "emoji": "👍"}))
        .await;
    assert_eq!(
        bob.skip_to("reaction_update").await["users"],
        json!(["ann"])
    );
    bob.send_json(json!({"type": "add_reaction", "message_id": id, "emoji": "👍"}))
        .await;
    let err = bob.skip_to("error").await;
    assert_eq!(
        (&err["code"], &err["ref"]),
        (&json!("too_many_reactions"), &json!("add_reaction"))
    );
}

#[tokio::test]
async fn welcome_history_holds_the_newest_messages_within_its_byte_budget() {
    // Messages of about 1 KB against a 4 KB budget: three fit.
    let (_keys, s) = cluster("budget", 2, |c| c.welcome_history_bytes(4096usize)).await;
    let (mut ann, _) = s[0].join("r", "ann").await;
    for i in 1..=8 {
        let content = format!("{i}{}", "x".repeat(1000));
        ann.send_json(json!({"type": "message", "content": content}))
            .await;
        assert_eq!(ann.skip_to("message").await["seq"], i);
    }
    let seqs = |w: &Value| -> Vec<u64> {
        w["history"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["seq"].as_u64().unwrap())
            .collect()
    };
    let (_bob, w) = s[1].join("r", "bob").await;
    assert_eq!(seqs(&w), [6, 7, 8], "the newest that fit");
    assert!(serde_json::to_vec(&w["history"]).unwrap().len() <= 4096);
    assert_eq!(w["gap"], false);
    for (after, expected, gap) in [
        (0, vec![6, 7, 8], true),
        (5, vec![6, 7, 8], false),
        (7, vec![8], false),
    ] {
        let mut c = s[1].ws(&format!("/ws/r/carl?after={after}")).await;
        let w = c.expect("welcome").await;
        assert_eq!(
            (seqs(&w), &w["gap"]),
            (expected, &json!(gap)),
            "after={after}"
        );
    }
}

#[tokio::test]
async fn concurrent_reaction_toggles_from_two_instances_stay_consistent() {
    let (_keys, s) = cluster("toggle", 2, |c| c).await;
    let (mut ann, _) = s[0].join("r", "ann").await;
    joined(&mut ann, "ann").await;
    let id = ann.post("react to me").await["message_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (bob, _) = s[1].join("r", "bob").await;
    let toggle = |mut c: Client, times: usize, id: String| async move {
        for _ in 0..times {
            c.send_json(
                json!({"type": "reaction", "message_id": id, "emoji": "🔥", "action": "toggle"}),
            )
            .await;
        }
        c
    };
    // Odd for ann, even for bob: whatever the interleaving, ann ends up
    // reacting and bob not.
    let (mut ann, bob) = tokio::join!(toggle(ann, 21, id.clone()), toggle(bob, 20, id.clone()));
    let mut last = Value::Null;
    for _ in 0..41 {
        last = ann.skip_to("reaction_update").await;
    }
    assert_eq!(last["reactions"], json!({"🔥": ["ann"]}));
    drop(bob);
    let (_, w) = s[1].join("r", "carl").await;
    assert_eq!(w["history"][0]["reactions"], json!({"🔥": ["ann"]}));
}

/// Runs an instance on its own runtime so the test can kill it outright:
/// no graceful shutdown, no leave, no goodbye to Redis.
struct Doomed {
    addr: SocketAddr,
    kill: std::sync::mpsc::Sender<()>,
    thread: std::thread::JoinHandle<()>,
    _dir: TempDir,
}

fn doomed(config: Config) -> Doomed {
    let dir = TempDir::new("doomed");
    let config = config.uploads_dir(dir.path().join("uploads"));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    let (kill, killed) = std::sync::mpsc::channel::<()>();
    let thread = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        rt.spawn(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            let _ = roomcast::serve(listener, config, std::future::pending()).await;
        });
        let _ = killed.recv();
        rt.shutdown_background();
    });
    Doomed {
        addr,
        kill,
        thread,
        _dir: dir,
    }
}

#[tokio::test]
async fn a_dead_instance_leaves_no_ghosts() {
    // A short presence TTL so the dead instance expires quickly; the
    // survivor's heartbeat (a third of its TTL) reaps it. 3 s, refreshed
    // every second: a stalled test process does not get it reaped alive.
    let (keys, s) = cluster("ghost", 1, |c| c.presence_ttl(Duration::from_secs(3))).await;
    let dead = doomed(config(&keys.0).presence_ttl(Duration::from_secs(3)));
    wait_health(dead.addr, 200).await;
    let (mut ann, _) = s[0].join("r", "ann").await;
    let mut ghost = Client::connect(&format!(
        "ws://{}{}",
        dead.addr,
        common::with_claim("/ws/r/ghost")
    ))
    .await;
    ghost.expect("welcome").await;
    let j = joined(&mut ann, "ghost").await;
    assert_eq!(j["online_count"], 2);
    let mut admin = Admin::connect();
    let instances = format!("{}:instances", keys.0);
    assert_eq!(admin.cmd(&["ZCARD", &instances]), Resp::Int(2));

    dead.kill.send(()).unwrap();
    tokio::task::spawn_blocking(move || dead.thread.join().unwrap())
        .await
        .unwrap();

    let l = ann.skip_to("leave").await;
    assert_eq!(
        (&l["user"], &l["online_count"]),
        (&json!("ghost"), &json!(1))
    );
    assert_eq!(names(&l["online"]), ["ann"]);
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while admin.cmd(&["ZCARD", &instances]) != Resp::Int(1) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the dead instance was never reaped"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (_, w) = s[0].join("r", "bob").await;
    assert_eq!(names(&w["online"]), ["ann", "bob"]);
    drop(ghost);
}

#[tokio::test]
async fn a_lost_redis_connection_degrades_health_then_recovers() {
    let (keys, s) = cluster("reconnect", 2, |c| c).await;
    let (mut ann, _) = s[0].join("r", "ann").await;
    let (mut bob, _) = s[1].join("r", "bob").await;
    joined(&mut ann, "bob").await;
    ann.post("before").await;
    assert_eq!(bob.skip_to("message").await["content"], "before");

    // Kill every connection of both instances until /health is seen
    // degraded (they reconnect fast, so a single kill could be missed).
    let mut admin = Admin::connect();
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    let degraded = 'seen: loop {
        assert!(
            admin.kill_connections(&keys.0) > 0,
            "no roomcast connections to kill"
        );
        for _ in 0..50 {
            let res = s[0].get("/health").await;
            if res.status == 503 {
                break 'seen res.json();
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "/health never answered 503"
        );
    };
    assert_eq!(degraded["status"], "degraded");
    assert!(
        degraded["reason"]
            .as_str()
            .is_some_and(|r| r.contains("Redis")),
        "{degraded}"
    );

    wait_health(s[0].addr, 200).await;
    wait_health(s[1].addr, 200).await;
    // The same sessions carry on, both ways.
    post_when_up(&mut ann, "after").await;
    assert_eq!(bob.skip_to("message").await["content"], "after");
    post_when_up(&mut bob, "and back").await;
    assert_eq!(ann.skip_to("message").await["content"], "and back");
}

#[tokio::test]
async fn redis_losing_its_data_sends_members_to_a_fresh_welcome_and_loses_nothing_after() {
    let (keys, s, mut ann, mut carl) = ann_and_carl_after_five_messages("amnesia").await;

    // What a Redis restart without persistence does to this deployment:
    // every key gone, every connection cut.
    let mut admin = Admin::connect();
    admin.cleanup(&keys.0);
    assert!(
        admin.kill_connections(&keys.0) > 0,
        "no roomcast connections to kill"
    );

    // Both instances notice (the epoch key changed) and send their members
    // back for a fresh welcome, instead of silently dropping events whose
    // numbers now start again at 1.
    ann.expect_close(1013).await;
    carl.expect_close(1013).await;
    wait_health(s[0].addr, 200).await;
    wait_health(s[1].addr, 200).await;

    let mut ann = s[0].ws("/ws/r/ann?after=5").await;
    let w = ann.expect("welcome").await;
    assert_eq!(
        (&w["last_seq"], w["history"].as_array().unwrap().len()),
        (&json!(0), 0)
    );
    post_when_up(&mut ann, "after the loss").await;
    // Carl resumes where he was; the new numbering is behind that, so he
    // gets all of it.
    resume_gets_only_the_new_first(&s[1], "after the loss").await;
}

#[tokio::test]
async fn a_flush_on_a_live_connection_is_told_by_the_numbering_going_back() {
    let (keys, s, mut ann, mut carl) = ann_and_carl_after_five_messages("flush").await;

    // Every key gone (a FLUSHALL, or eviction), but no connection cut: the
    // epoch is not read again. The next event is numbered from 1 again,
    // below what both streams already carried.
    Admin::connect().cleanup(keys.prefix());
    ann.send_json(json!({"type": "message", "content": "after the flush"}))
        .await;
    ann.expect_close(1013).await;
    carl.expect_close(1013).await;

    // Carl resumes where he was and gets what was posted after the flush,
    // not nothing.
    resume_gets_only_the_new_first(&s[1], "after the flush").await;
}

/// Two instances; ann on the first and carl on the second see each other,
/// then ann posts m1..m5 and carl gets them.
async fn ann_and_carl_after_five_messages(tag: &str) -> (Keys, Vec<Server>, Client, Client) {
    let (keys, s) = cluster(tag, 2, |c| c).await;
    let (mut ann, _) = s[0].join("r", "ann").await;
    let (mut carl, _) = s[1].join("r", "carl").await;
    joined(&mut ann, "carl").await;
    for i in 1..=5 {
        ann.post(&format!("m{i}")).await;
        assert_eq!(carl.skip_to("message").await["seq"], i);
    }
    (keys, s, ann, carl)
}

/// Carl resumes after m5 of a room whose numbering started again: he gets
/// the new room's one message, `content`, as seq 1.
async fn resume_gets_only_the_new_first(server: &Server, content: &str) {
    let mut carl = server.ws("/ws/r/carl?after=5").await;
    let w = carl.expect("welcome").await;
    let history = w["history"].as_array().unwrap();
    assert_eq!(history.len(), 1, "{w}");
    assert_eq!(
        (&history[0]["seq"], &history[0]["content"]),
        (&json!(1), &json!(content))
    );
    assert_eq!(w["last_seq"], 1);
}

/// Posts `text`, retrying while the backbone answers `unavailable` (a kill
/// may land again between the health check and the post). Presence events
/// on the way are skipped: with Redis a member's own `join` follows its
/// `welcome`.
async fn post_when_up(c: &mut Client, text: &str) {
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        c.send_json(json!({"type": "message", "content": text}))
            .await;
        let e = loop {
            let e = c.recv_json().await;
            if e["type"] != "join" && e["type"] != "leave" {
                break e;
            }
        };
        match e["type"].as_str() {
            Some("message") => return,
            Some("error") if e["code"] == "unavailable" => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "still unavailable: {e}"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            _ => panic!("unexpected {e}"),
        }
    }
}

#[tokio::test]
async fn an_unreachable_redis_answers_503_and_never_upgrades() {
    // Nothing listens on port 1: the instance starts degraded and says why.
    let server = Server::start(
        common::config()
            .redis_url(Some("redis://127.0.0.1:1".to_owned()))
            .redis_prefix(common::unique("down")),
    )
    .await;
    let h = wait_health(server.addr, 503).await;
    assert_eq!(h["status"], "degraded");
    assert!(h["reason"].as_str().is_some_and(|r| !r.is_empty()));
    let res = server
        .request(
            "GET",
            "/ws/r/ann",
            &[
                ("Upgrade", "websocket"),
                ("Connection", "Upgrade"),
                ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
                ("Sec-WebSocket-Version", "13"),
            ],
        )
        .await;
    assert_eq!(res.assert_json_error(503)["error"], "unavailable");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn during_an_outage_posts_are_refused_and_members_that_missed_events_resume() {
    let (keys, s) = cluster("outage", 1, |c| c).await;
    let proxy = Proxy::start(REDIS).await;
    let a = instance(config(&keys.0).redis_url(Some(format!("redis://{}", proxy.addr)))).await;
    let (mut ann, _) = a.join("r", "ann").await;
    joined(&mut ann, "ann").await;
    let (mut bob, _) = s[0].join("r", "bob").await;
    joined(&mut bob, "bob").await;
    joined(&mut ann, "bob").await;
    let first = bob.post("before").await;
    assert_eq!(ann.skip_to("message").await, first);

    proxy.cut();
    let h = wait_health(a.addr, 503).await;
    assert_eq!(h["status"], "degraded");
    // The member stays connected; what needs Redis is refused, and says so.
    ann.roundtrip().await;
    ann.send_json(json!({"type": "message", "content": "lost?"}))
        .await;
    let e = ann.expect_error("unavailable").await;
    assert_eq!(e["ref"], "message");
    ann.send_json(json!({"type": "presence"})).await;
    ann.expect_error("unavailable").await;
    let refused = a
        .request(
            "GET",
            "/ws/r/carl",
            &[
                ("Upgrade", "websocket"),
                ("Connection", "Upgrade"),
                ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
                ("Sec-WebSocket-Version", "13"),
            ],
        )
        .await;
    assert_eq!(refused.assert_json_error(503)["error"], "unavailable");

    // The other instance carries on; ann's instance misses this.
    let missed = bob.post("while you were away").await;
    assert_eq!(missed["seq"], 2);

    proxy.restore();
    // Back, it sees it missed an event: ann is told to resume...
    ann.expect_close(1013).await;
    wait_health(a.addr, 200).await;
    // ...and resuming on the same instance gets exactly what she missed.
    let mut again = a.ws("/ws/r/ann?after=1").await;
    let w = again.expect("welcome").await;
    assert_eq!(w["gap"], false);
    assert_eq!(w["history"].as_array().unwrap().len(), 1);
    assert_eq!(w["history"][0]["message_id"], missed["message_id"]);
    // (bob sees ann leave and come back before his own echo.)
    bob.send_json(json!({"type": "message", "content": "welcome back"}))
        .await;
    let m = bob.skip_to("message").await;
    assert_eq!(
        again.skip_to("message").await["message_id"],
        m["message_id"]
    );
}

/// Redis lost by the network without a reset (a partition: the instance's
/// connections stay open and nothing comes back) while requests fill the
/// instance's queue. The command connection is given up and replaced all
/// the same: `/health` answers 503 while Redis is out of reach, and once it
/// is back requests succeed, instead of every one being refused as
/// overloaded behind a connection that waits forever while `/health` says
/// all is well.
#[tokio::test]
async fn a_command_connection_lost_without_a_reset_is_replaced_even_with_its_queue_full() {
    let (keys, _) = cluster("partition", 0, |c| c).await;
    let proxy = Proxy::start(REDIS).await;
    // A queue of 8 and 2 in flight: ten requests fill them. The event
    // stream pings every second, so it notices the partition on its own.
    let a = instance(
        config(&keys.0)
            .redis_url(Some(format!("redis://{}", proxy.addr)))
            .redis_queue(8usize)
            .presence_ttl(Duration::from_secs(3)),
    )
    .await;
    let mut members = Vec::new();
    for i in 0..10 {
        let (c, _) = a.join("r", &format!("u{i}")).await;
        members.push(c);
    }

    proxy.partition();
    for c in &mut members {
        c.send_json(json!({"type": "message", "content": "into the void"}))
            .await;
    }
    // Refused at once (the queue is full) or after the call timeout.
    for c in &mut members {
        assert_eq!(c.skip_to("error").await["code"], "unavailable");
    }
    // The command connection was given up (not only the event stream).
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        let h = wait_health(a.addr, 503).await;
        assert_eq!(h["status"], "degraded");
        if h["reason"]
            .as_str()
            .is_some_and(|r| r.contains("Redis command connection"))
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the command connection was never given up: {h}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    proxy.restore();
    wait_health(a.addr, 200).await;
    // Healthy means it serves: a newcomer is welcomed and posts at once.
    let (mut c, _) = a.join("r", "newcomer").await;
    joined(&mut c, "newcomer").await;
    assert_eq!(c.post("back").await["content"], "back");
    drop(members);
}

/// A Redis that accepts a connection, answers its handshake and then never
/// answers again (here the first two connections, the command and the
/// pub/sub one; later ones reach the real Redis). The instance gives each up
/// and opens another, instead of waiting on it forever (it used to wait on
/// the epoch or the scripts with no bound at all).
#[tokio::test]
async fn a_connection_that_hangs_while_it_opens_is_given_up_and_opened_again() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (keys, _) = cluster("hang", 0, |c| c).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let fake = tokio::spawn(async move {
        let mut hung = Vec::new();
        while let Ok((mut conn, _)) = listener.accept().await {
            if hung.len() == 2 {
                tokio::spawn(async move {
                    let mut redis = tokio::net::TcpStream::connect(REDIS).await.unwrap();
                    let _ = tokio::io::copy_bidirectional(&mut conn, &mut redis).await;
                });
                continue;
            }
            // `CLIENT SETNAME <name>` (no password, no database): seven lines.
            let mut read = Vec::new();
            while read.windows(2).filter(|w| w == b"\r\n").count() < 7 {
                let mut buf = [0u8; 1024];
                match conn.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => read.extend_from_slice(&buf[..n]),
                }
            }
            assert!(read.starts_with(b"*3\r\n$6\r\nCLIENT\r\n"), "{read:?}");
            conn.write_all(b"+OK\r\n").await.unwrap();
            hung.push(conn);
        }
    });
    let a = Server::start(config(&keys.0).redis_url(Some(format!("redis://{addr}")))).await;
    wait_health(a.addr, 200).await;
    let (mut ann, _) = a.join("r", "ann").await;
    joined(&mut ann, "ann").await;
    ann.post("through").await;
    fake.abort();
}

#[tokio::test]
async fn a_graceful_shutdown_removes_the_instance_at_once() {
    let (keys, mut s) = cluster("bye", 2, |c| c).await;
    let (mut ann, _) = s[0].join("r", "ann").await;
    let (mut bob, _) = s[1].join("r", "bob").await;
    joined(&mut ann, "bob").await;
    let mut admin = Admin::connect();
    let instances = format!("{}:instances", keys.0);
    assert_eq!(admin.cmd(&["ZCARD", &instances]), Resp::Int(2));

    let b = s.pop().unwrap();
    let (stopped, ()) = tokio::join!(b.shutdown(), bob.expect_close(1001));
    stopped.unwrap();
    // `serve` returned: the instance is gone from Redis, no TTL to wait for.
    assert_eq!(admin.cmd(&["ZCARD", &instances]), Resp::Int(1));
    let l = ann.skip_to("leave").await;
    assert_eq!((&l["user"], &l["online_count"]), (&json!("bob"), &json!(1)));
}

/// A shutdown while only the pub/sub connection is down: leaving needs the
/// command connection alone, so the instance is still removed at once and
/// its members leave, instead of holding their names and showing them
/// online until the presence TTL reaps it.
#[tokio::test]
async fn a_graceful_shutdown_without_its_pubsub_connection_still_removes_the_instance() {
    // A TTL far past any wait here: reaping cannot be what removes it.
    let ttl = Duration::from_secs(3600);
    let (keys, s) = cluster("bye-sub", 1, |c| c.presence_ttl(ttl)).await;
    let mut admin = Admin::connect();
    let others = admin.instances(&keys.0);
    let proxy = Proxy::start(REDIS).await;
    let a = instance(
        config(&keys.0)
            .redis_url(Some(format!("redis://{}", proxy.addr)))
            .presence_ttl(ttl),
    )
    .await;
    let mine: Vec<String> = admin
        .instances(&keys.0)
        .difference(&others)
        .cloned()
        .collect();
    let [mine] = &mine[..] else {
        panic!("not one new instance: {mine:?}");
    };
    let (mut ann, _) = a.join("r", "ann").await;
    let (mut bob, _) = s[0].join("r", "bob").await;
    joined(&mut ann, "bob").await;

    // Its pub/sub connection goes, and cannot come back; the command
    // connection stays up.
    proxy.refuse();
    assert_eq!(admin.kill_connection(&keys.0, mine, "sub"), 1);
    wait_health(a.addr, 503).await;

    let (stopped, ()) = tokio::join!(a.shutdown(), ann.expect_close(1001));
    stopped.unwrap();
    let instances = format!("{}:instances", keys.0);
    assert_eq!(admin.cmd(&["ZSCORE", &instances, mine]), Resp::Nil);
    assert_eq!(
        admin.cmd(&["EXISTS", &format!("{}:inst:{mine}", keys.0)]),
        Resp::Int(0)
    );
    let l = bob.skip_to("leave").await;
    assert_eq!((&l["user"], &l["online_count"]), (&json!("ann"), &json!(1)));
}

#[tokio::test]
async fn a_name_held_on_one_instance_is_refused_on_another_then_kept_for_a_reconnect() {
    let (_keys, s) = cluster("holds", 2, |c| c).await;
    let (mut ann, _) = s[0].join("hold", "ann").await;
    joined(&mut ann, "ann").await;
    let stranger = common::claim_of("a stranger");
    let path = format!("/ws/hold/ann?claim={stranger}");
    let pre = s[1].get(&path).await;
    assert_eq!(pre.assert_json_error(409)["error"], "name_taken");
    let up = s[1].try_upgrade(&path, &[]).await;
    assert_eq!(up.assert_json_error(409)["error"], "name_taken");
    // Ann herself, in another tab on the other instance, is welcome.
    let (mut tab, _) = s[1].join("hold", "ann").await;
    tab.roundtrip().await;
    drop(tab);
    ann.close().await;
    // Gone, but held for the grace period: a reconnect finds it free,
    // the stranger does not.
    let pre = s[1].get(&path).await;
    assert_eq!(pre.assert_json_error(409)["error"], "name_taken");
    let (mut back, _) = s[1].join("hold", "ann").await;
    joined(&mut back, "ann").await;
}

/// An instance taken for dead while it was alive (here, cut off from Redis
/// longer than its presence TTL) whose member's name was taken meanwhile by
/// someone else, once the hold lapsed: when the instance is back, its member
/// is closed with 4009, not announced again under a name another identity
/// holds.
#[tokio::test]
async fn a_name_taken_while_its_instance_was_taken_for_dead_closes_its_member_there() {
    let (keys, s) = cluster("reaped", 1, |c| c.presence_ttl(Duration::from_secs(3))).await;
    let proxy = Proxy::start(REDIS).await;
    let a = instance(
        config(&keys.0)
            .redis_url(Some(format!("redis://{}", proxy.addr)))
            .presence_ttl(Duration::from_secs(2)),
    )
    .await;
    let (mut ann, _) = a.join("r", "ann").await;
    joined(&mut ann, "ann").await;
    let (mut bob, _) = s[0].join("r", "bob").await;
    joined(&mut bob, "bob").await;

    proxy.cut();
    // The other instance reaps this one: ann leaves, her name is held for
    // the grace period, which the test ends at once.
    let left = bob.skip_to("leave").await;
    assert_eq!(left["user"], "ann");
    let mut admin = Admin::connect();
    admin.cmd(&["DEL", &format!("{}:hold:r\nann", keys.0)]);
    let stranger = common::claim_of("a stranger");
    let mut taker = s[0].ws(&format!("/ws/r/ann?claim={stranger}")).await;
    taker.expect("welcome").await;
    joined(&mut bob, "ann").await;

    proxy.restore();
    // Her instance learns of the loss from its resync (4009). Its
    // subscriptions come back on a connection of their own, and a marker
    // for the events missed while cut can reach her first: then she is
    // told to resume (1013), and resuming is refused below as any join.
    let closed = ann.close_code().await;
    assert!(
        closed == 4009 || closed == 1013,
        "closed with {closed}, not 4009 (name lost) nor 1013 (missed events)"
    );
    // Only the stranger's connection counts, and the name is still theirs.
    let users = format!("{}:users:r", keys.0);
    assert_eq!(admin.cmd(&["HGET", &users, "ann"]), Resp::Str("1".into()));
    let pre = a.get(&common::with_claim("/ws/r/ann")).await;
    assert_eq!(pre.assert_json_error(409)["error"], "name_taken");
    // The stranger was never disturbed.
    joined(&mut taker, "ann").await;
    taker.roundtrip().await;
}

/// A Redis of the test's own on a free port (to freeze and thaw without
/// touching the shared one), stopped when dropped.
struct OwnRedis {
    child: std::process::Child,
    port: u16,
}

impl OwnRedis {
    fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = std::process::Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server (CI installs it)");
        let deadline = std::time::Instant::now() + TIMEOUT;
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "redis-server did not start"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        Self { child, port }
    }

    fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child's pid; no memory is touched.
        let rc = unsafe { libc::kill(self.child.id() as i32, sig) };
        assert_eq!(rc, 0, "kill({sig})");
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.signal(libc::SIGCONT);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn a_post_answered_unavailable_then_applied_is_not_posted_twice_by_its_retry() {
    let redis = OwnRedis::start();
    let config = common::config()
        .redis_url(Some(format!("redis://127.0.0.1:{}", redis.port)))
        .redis_prefix(common::unique("frozen"))
        .rate(0u32);
    let a = instance(config).await;
    let (mut ann, _) = a.join("r", "ann").await;
    joined(&mut ann, "ann").await;
    let request = json!({"type": "message", "content": "exactly once", "client_id": "r-1"});

    // Redis freezes with the post in its socket: the answer times out.
    redis.signal(libc::SIGSTOP);
    ann.send_json(request.clone()).await;
    ann.expect_error("unavailable").await;
    redis.signal(libc::SIGCONT);
    wait_health(a.addr, 200).await;

    // The client retries, as told: whether the first attempt was applied
    // when Redis woke up or not, the room has the message once.
    let mut retried = None;
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while retried.is_none() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the retry never succeeded"
        );
        let mut c = a.ws("/ws/r/ann").await;
        c.expect("welcome").await;
        c.send_json(request.clone()).await;
        match c.skip_to_any(&["message", "error"]).await {
            m if m["type"] == "message" && m["client_id"] == "r-1" => retried = Some(m),
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    let page = a.get("/api/rooms/r/messages").await.json();
    let once: Vec<&Value> = page["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["content"] == "exactly once")
        .collect();
    assert_eq!(once.len(), 1, "{page}");
    assert_eq!(once[0]["seq"], retried.unwrap()["seq"]);
}

/// The instance's Redis is demoted to a replica (a failover moved the
/// primary elsewhere): writes are refused `READONLY`. The instance takes
/// that as a reason to reconnect, not as one request's refusal: `/health`
/// answers 503 while the address it was given leads to no primary, and once
/// it does again (here the same Redis, promoted back) requests succeed.
#[tokio::test]
async fn a_redis_demoted_to_a_replica_is_left_until_a_primary_answers_again() {
    let redis = OwnRedis::start();
    let addr = format!("127.0.0.1:{}", redis.port);
    let a = instance(
        common::config()
            .redis_url(Some(format!("redis://{addr}")))
            .redis_prefix(common::unique("demoted"))
            .rate(0u32),
    )
    .await;
    let (mut ann, _) = a.join("r", "ann").await;
    joined(&mut ann, "ann").await;
    ann.post("before").await;

    // A replica of a primary that is not there: it keeps its data, and
    // refuses every write.
    let mut admin = Admin::connect_to(&addr);
    assert_eq!(
        admin.cmd(&["REPLICAOF", "127.0.0.1", "1"]),
        Resp::Str("OK".into())
    );
    ann.send_json(json!({"type": "message", "content": "refused"}))
        .await;
    assert_eq!(ann.skip_to("error").await["code"], "unavailable");
    let h = wait_health(a.addr, 503).await;
    assert!(
        h["reason"].as_str().is_some_and(|r| r.contains("READONLY")),
        "{h}"
    );

    assert_eq!(
        admin.cmd(&["REPLICAOF", "NO", "ONE"]),
        Resp::Str("OK".into())
    );
    wait_health(a.addr, 200).await;
    post_when_up(&mut ann, "after").await;
}
