//! A Redis that hangs (behind a proxy the test freezes) past a request's
//! call timeout leaves the request in doubt: its sender is told
//! `unavailable`, and Redis may carry it out all the same once it answers
//! again. Whatever Redis carries out reaches the PostgreSQL store too: a
//! post in flight when its connection closes, a post or a delete answered
//! `unavailable` that Redis runs after all, and a post whose event this
//! instance missed, stored by the client's retry. Each test has a schema
//! of its own in the shared database at 127.0.0.1:5432, dropped at the end.
#![cfg(all(feature = "postgres", feature = "redis"))]

mod common;

use common::postgres::{Schema, contents, on};
use common::redis::{Keys, on_redis};
use common::{Proxy, Server, eventually};
use serde_json::{Value, json};

/// One instance on `schema` that reaches Redis through `proxy` (which the
/// test can freeze), connected; `tune` adjusts its configuration. The keys
/// go when the returned guard does.
async fn behind(
    proxy: &Proxy,
    schema: &Schema,
    tag: &str,
    tune: impl FnOnce(roomcast::Config) -> roomcast::Config,
) -> (Server, Keys) {
    let (config, keys) = on_redis(tune(on(&schema.url())), tag);
    let config = config.redis_url(Some(format!("redis://{}", proxy.addr)));
    let server = Server::start(config).await;
    server.wait_healthy().await;
    (server, keys)
}

/// A post waiting for Redis when its connection closes (here, at shutdown)
/// runs to its end: once Redis answers, the message is in the database
/// too, not only on the backbone.
#[tokio::test]
async fn a_post_in_flight_when_its_connection_closes_still_reaches_the_database() {
    let schema = Schema::new("inflight");
    let proxy = Proxy::start(common::redis::REDIS).await;
    let (a, _keys) = behind(&proxy, &schema, "inflight", |c| c).await;
    let (mut ann, _) = a.join("r", "ann").await;
    ann.expect("join").await;
    ann.post("before").await;
    let read = a.metric("roomcast_frames_in_total").await;

    proxy.freeze();
    ann.send_json(json!({"type": "message", "content": "in flight"}))
        .await;
    eventually("the server read the post", async || {
        a.metric("roomcast_frames_in_total").await > read
    })
    .await;
    // Shutdown closes the connection while the post waits for Redis, which
    // answers once the client has seen the close.
    let thaw = async {
        ann.expect_close(1001).await;
        proxy.thaw();
    };
    let ((), a) = tokio::join!(thaw, a.restart());
    assert_eq!(
        contents(&a, "/api/rooms/r/messages").await,
        ["before", "in flight"]
    );
    a.shutdown().await.unwrap();
}

/// Redis hangs past a post's call timeout, so its sender is told
/// `unavailable`; then Redis answers again and runs the post it was
/// holding. The room sees the message through the event stream, and so
/// does the database: the instance that left it in doubt stores it when
/// its event comes back (before its members see it, so a page read after
/// that reads it).
#[tokio::test]
async fn a_post_answered_unavailable_that_redis_posts_after_all_reaches_the_database() {
    let schema = Schema::new("doubt");
    let proxy = Proxy::start(common::redis::REDIS).await;
    // The default presence TTL: the event stream pings every 10 s and
    // gives up after two unanswered pings, far longer than this stall.
    let (a, _keys) = behind(&proxy, &schema, "doubt", |c| c).await;
    let (mut ann, _) = a.join("r", "ann").await;
    ann.expect("join").await;
    ann.post("before").await;

    proxy.freeze();
    ann.send_json(json!({"type": "message", "content": "in doubt", "client_id": "d-1"}))
        .await;
    let refused = ann.expect_error("unavailable").await;
    assert!(
        refused["message"]
            .as_str()
            .is_some_and(|m| m.contains("same client_id")),
        "{refused}"
    );
    proxy.thaw();
    let m = ann.skip_to("message").await;
    assert_eq!(
        (&m["content"], &m["client_id"]),
        (&json!("in doubt"), &json!("d-1"))
    );

    let page = a.get("/api/rooms/r/messages").await.json();
    assert_eq!(
        page["messages"][1]["message_id"], m["message_id"],
        "the database has it: {page}"
    );
    assert_eq!(page["messages"][1]["seq"], m["seq"]);
    a.wait_metric("roomcast_store_uncommitted", 0).await;
    drop(ann);
    a.shutdown().await.unwrap();
}

/// A delete answered `unavailable` in a Redis stall that Redis carries out
/// when it answers again: the room sees the message go, and so does the
/// database (before, it kept the message, and a page or a restart brought
/// it back).
#[tokio::test]
async fn a_delete_answered_unavailable_that_redis_carries_out_after_all_reaches_the_database() {
    let schema = Schema::new("doubt_delete");
    let proxy = Proxy::start(common::redis::REDIS).await;
    let (a, _keys) = behind(&proxy, &schema, "doubt_delete", |c| c).await;
    let (mut ann, _) = a.join("r", "ann").await;
    ann.expect("join").await;
    ann.post("kept").await;
    let gone = ann.post("gone").await;
    a.wait_metric("roomcast_store_uncommitted", 0).await;
    assert_eq!(
        contents(&a, "/api/rooms/r/messages").await,
        ["kept", "gone"]
    );

    proxy.freeze();
    ann.send_json(json!({"type": "delete", "message_id": gone["message_id"]}))
        .await;
    let refused = ann.expect_error("unavailable").await;
    assert!(
        refused["message"].as_str().is_some_and(|m| m.ends_with(
            "did not answer in time: the message may still be deleted, so if it is \
                 still there, delete it again"
        )),
        "{refused}"
    );
    proxy.thaw();
    let deleted = ann.skip_to("message_deleted").await;
    assert_eq!(deleted["message_id"], gone["message_id"]);

    a.wait_metric("roomcast_store_uncommitted", 0).await;
    assert_eq!(contents(&a, "/api/rooms/r/messages").await, ["kept"]);
    drop(ann);
    a.shutdown().await.unwrap();
}

/// As above, but the stall also cut the event stream, and the room had
/// no member left here when Redis ran the post: this instance never sees
/// its event. The client's retry (the same `client_id`) is answered with
/// the message, and that stores it, once.
#[tokio::test]
async fn a_post_in_doubt_whose_event_this_instance_missed_is_stored_by_its_retry() {
    let schema = Schema::new("doubt_retry");
    let proxy = Proxy::start(common::redis::REDIS).await;
    // A short presence TTL: the event stream pings every third of a
    // second and gives up after two unanswered pings.
    let (a, _keys) = behind(&proxy, &schema, "doubt_retry", |c| {
        c.presence_ttl(std::time::Duration::from_secs(1))
    })
    .await;
    let (mut ann, _) = a.join("r", "ann").await;
    ann.expect("join").await;
    let request = json!({"type": "message", "content": "retried", "client_id": "r-1"});

    proxy.freeze();
    ann.send_json(request.clone()).await;
    eventually("the event stream gave up", async || {
        let health = a.get("/health").await;
        health.status == 503
            && health.json()["reason"]
                .as_str()
                .is_some_and(|r| r.contains("pub/sub"))
    })
    .await;
    ann.expect_error("unavailable").await;
    ann.close().await;
    eventually("the room has no member here", async || {
        a.get("/api/rooms").await.json()["rooms"] == json!([])
    })
    .await;
    proxy.thaw();
    a.wait_healthy().await;

    // Redis ran the post (a welcome shows it); nothing here stored it yet.
    let deadline = tokio::time::Instant::now() + common::TIMEOUT;
    let mut ann = loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "Redis never ran the post it held"
        );
        let (mut c, w) = a.join("r", "ann").await;
        let history: Vec<&Value> = w["history"].as_array().expect("history").iter().collect();
        if history.iter().any(|m| m["content"] == "retried") {
            c.expect("join").await;
            break c;
        }
        drop(c);
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    ann.send_json(request).await;
    let echo = ann.skip_to("message").await;
    assert_eq!(echo["client_id"], "r-1", "{echo}");
    let page = a.get("/api/rooms/r/messages").await.json();
    let messages = page["messages"].as_array().cloned().unwrap_or_default();
    assert_eq!(messages.len(), 1, "stored once: {page}");
    assert_eq!(messages[0]["message_id"], echo["message_id"]);
    assert_eq!(messages[0]["seq"], echo["seq"]);
    a.wait_metric("roomcast_store_uncommitted", 0).await;
    drop(ann);
    a.shutdown().await.unwrap();
}
