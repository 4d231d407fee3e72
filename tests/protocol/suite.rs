// The WebSocket protocol suite, included by each backend's test file
// (`ws_protocol.rs`: one instance in memory; `ws_protocol_sqlite.rs`: the
// SQLite store; `ws_protocol_redis.rs`: the Redis backbone), which defines
// `start(config) -> Server` and `DURABLE`.
//
// "Nothing was broadcast" is proven by ordering, not by waiting: the client
// then sends a `ping` (or a message) and the very next event must be that.

use common::{Client, config};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

fn ids(history: &Value) -> Vec<u64> {
    history
        .as_array()
        .expect("history is an array")
        .iter()
        .map(|m| m["seq"].as_u64().expect("seq"))
        .collect()
}

#[tokio::test]
async fn welcome_carries_the_room_state_and_limits() {
    let server = start(
        config()
            .max_message_chars(321usize)
            .max_upload_bytes(4096u64)
            .rate(7u32),
    )
    .await;
    let (mut ann, welcome) = server.join("lobby", "ann").await;
    assert_eq!(welcome["room"], "lobby");
    assert_eq!(welcome["user"], "ann");
    assert_eq!(welcome["online"], json!(["ann"]));
    assert_eq!(welcome["online_count"], 1);
    assert_eq!(welcome["history"], json!([]));
    assert_eq!(welcome["gap"], false);
    assert_eq!(welcome["last_seq"], 0);
    assert_eq!(
        welcome["limits"],
        json!({"max_message_chars": 321, "max_upload_bytes": 4096, "messages_per_second": 7})
    );
    // The newcomer's own join comes right after its welcome.
    let join = ann.expect("join").await;
    assert_eq!(join["user"], "ann");
    assert_eq!(join["online_count"], 1);
    assert_eq!(join["online"], json!(["ann"]));

    ann.post("hello").await;
    let (_bob, welcome) = server.join("lobby", "bob").await;
    assert_eq!(welcome["online"], json!(["ann", "bob"]));
    assert_eq!(welcome["online_count"], 2);
    assert_eq!(welcome["last_seq"], 1);
    let history = welcome["history"].as_array().unwrap();
    assert_eq!(history.len(), 1);
    assert_eq!(history[0]["content"], "hello");
    assert_eq!(history[0]["user"], "ann");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn join_goes_to_everyone_and_leave_to_the_rest() {
    let server = start(config()).await;
    let (mut ann, _) = server.join("r", "ann").await;
    ann.expect("join").await;
    let (mut bob, _) = server.join("r", "bob").await;
    let own = bob.expect("join").await;
    assert_eq!(own["user"], "bob");
    let seen = ann.expect("join").await;
    assert_eq!(seen, own, "everyone gets the same join");
    assert_eq!(seen["online_count"], 2);
    assert_eq!(seen["online"], json!(["ann", "bob"]));

    bob.close().await;
    let leave = ann.expect("leave").await;
    assert_eq!(leave["user"], "bob");
    assert_eq!(leave["online_count"], 1);
    assert_eq!(leave["online"], json!(["ann"]));
    ann.roundtrip().await;
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn several_tabs_join_once_and_leave_after_the_last() {
    let server = start(config()).await;
    let (mut bob, _) = server.join("tabs", "bob").await;
    bob.expect("join").await;
    let (mut tab1, _) = server.join("tabs", "ann").await;
    tab1.expect("join").await;
    assert_eq!(bob.expect("join").await["user"], "ann");

    let (mut tab2, welcome) = server.join("tabs", "ann").await;
    assert_eq!(
        welcome["online"],
        json!(["ann", "bob"]),
        "a name is listed once"
    );
    assert_eq!(welcome["online_count"], 2);
    // No second join, to anyone: the next event each sees is its pong.
    tab2.roundtrip().await;
    tab1.roundtrip().await;
    bob.roundtrip().await;

    // Both tabs receive the room's events.
    let m = bob.post("to both tabs").await;
    assert_eq!(tab1.expect("message").await["message_id"], m["message_id"]);
    assert_eq!(tab2.expect("message").await["message_id"], m["message_id"]);

    tab1.close().await;
    server.wait_metric("roomcast_connections", 2).await;
    bob.roundtrip().await; // no leave while a tab is open
    tab2.close().await;
    let leave = bob.expect("leave").await;
    assert_eq!(leave["user"], "ann");
    assert_eq!(leave["online_count"], 1);
    server.shutdown().await.unwrap();
}

fn assert_utc_rfc3339(ts: &Value) {
    let ts = ts.as_str().expect("timestamp is a string");
    assert!(ts.ends_with('Z'), "not UTC: {ts}");
    humantime::parse_rfc3339(ts).unwrap_or_else(|e| panic!("not RFC 3339 ({e}): {ts}"));
}

#[tokio::test]
async fn messages_reach_everyone_with_ids_seq_and_timestamps() {
    let server = start(config()).await;
    let (mut ann, _) = server.join("m", "ann").await;
    ann.expect("join").await;
    let (mut bob, _) = server.join("m", "bob").await;
    bob.expect("join").await;
    ann.expect("join").await;

    ann.send_json(
        json!({"type": "message", "content": "  hi bob  ", "client_id": "c-1", "extra": [1]}),
    )
    .await;
    let mine = ann.expect("message").await;
    let theirs = bob.expect("message").await;
    assert_eq!(mine, theirs, "one broadcast, the same for everyone");
    assert_eq!(mine["user"], "ann");
    assert_eq!(mine["content"], "  hi bob  ", "content is kept as sent");
    assert_eq!(mine["client_id"], "c-1");
    assert_eq!(mine["reactions"], json!({}));
    assert!(mine.get("attachment").is_none());
    assert!(mine.get("edited_at").is_none());
    assert_utc_rfc3339(&mine["timestamp"]);
    let id1 = mine["message_id"].as_str().unwrap().to_owned();
    assert!(!id1.is_empty());

    let second = bob.post("hi ann").await;
    assert!(
        second.get("client_id").is_none(),
        "no client_id unless sent"
    );
    assert_eq!(ann.expect("message").await, second);
    assert_eq!(
        second["seq"].as_u64().unwrap(),
        mine["seq"].as_u64().unwrap() + 1
    );
    assert_ne!(second["message_id"], id1);
    assert_utc_rfc3339(&second["timestamp"]);

    // Seq is per room: another room starts its own count.
    let (mut cid, _) = server.join("other", "cid").await;
    cid.expect("join").await;
    assert_eq!(cid.post("first here").await["seq"], 1);
    server.shutdown().await.unwrap();
}

/// Two members of a room with one message by ann; returns (ann, bob, message_id).
async fn room_with_a_message(server: &Server, room: &str) -> (Client, Client, String) {
    let (mut ann, _) = server.join(room, "ann").await;
    ann.expect("join").await;
    let (mut bob, _) = server.join(room, "bob").await;
    bob.expect("join").await;
    ann.expect("join").await;
    let m = ann.post("hello").await;
    bob.expect("message").await;
    (ann, bob, m["message_id"].as_str().unwrap().to_owned())
}

/// `ann` posts `content` with `client_id` and both see it: the request (to
/// send again) and the message.
async fn post_with_client_id(
    ann: &mut Client,
    bob: &mut Client,
    content: &str,
    client_id: &str,
) -> (Value, Value) {
    let request = json!({"type": "message", "content": content, "client_id": client_id});
    ann.send_json(request.clone()).await;
    let first = ann.expect("message").await;
    assert_eq!(bob.expect("message").await, first);
    (request, first)
}

async fn both(ann: &mut Client, bob: &mut Client, kind: &str) -> Value {
    let a = ann.expect(kind).await;
    let b = bob.expect(kind).await;
    assert_eq!(a, b, "everyone gets the same {kind}");
    a
}

#[tokio::test]
async fn reactions_add_remove_and_toggle() {
    let server = start(config()).await;
    let (mut ann, mut bob, id) = room_with_a_message(&server, "react").await;

    bob.send_json(json!({"type": "add_reaction", "message_id": id, "emoji": "👍"}))
        .await;
    let u = both(&mut ann, &mut bob, "reaction_update").await;
    assert_eq!(u["message_id"], id.as_str());
    assert_eq!(u["emoji"], "👍");
    assert_eq!(u["user"], "bob");
    assert_eq!(u["action"], "add");
    assert_eq!(u["users"], json!(["bob"]));
    assert_eq!(u["reactions"], json!({"👍": ["bob"]}));

    // Adding it again changes nothing and broadcasts nothing: bob alone is
    // answered, with the message's whole reactions.
    bob.send_json(json!({"type": "add_reaction", "message_id": id, "emoji": "👍"}))
        .await;
    let answer = bob.expect("reactions").await;
    assert_eq!(answer["message_id"], id.as_str());
    assert_eq!(answer["reactions"], json!({"👍": ["bob"]}));
    ann.roundtrip().await;

    // `reaction` without an action is a toggle (the original client's form).
    ann.send_json(json!({"type": "reaction", "message_id": id, "emoji": "👍"}))
        .await;
    let u = both(&mut ann, &mut bob, "reaction_update").await;
    assert_eq!(u["action"], "add");
    assert_eq!(u["users"], json!(["bob", "ann"]));
    ann.send_json(json!({"type": "reaction", "message_id": id, "emoji": "👍", "action": "toggle"}))
        .await;
    let u = both(&mut ann, &mut bob, "reaction_update").await;
    assert_eq!(u["action"], "remove");
    assert_eq!(u["user"], "ann");
    assert_eq!(u["users"], json!(["bob"]));

    ann.send_json(json!({"type": "reaction", "message_id": id, "emoji": "🎉", "action": "add"}))
        .await;
    let u = both(&mut ann, &mut bob, "reaction_update").await;
    assert_eq!(u["reactions"], json!({"👍": ["bob"], "🎉": ["ann"]}));

    bob.send_json(json!({"type": "remove_reaction", "message_id": id, "emoji": "👍"}))
        .await;
    let u = both(&mut ann, &mut bob, "reaction_update").await;
    assert_eq!(u["action"], "remove");
    assert_eq!(u["users"], json!([]));
    assert_eq!(
        u["reactions"],
        json!({"🎉": ["ann"]}),
        "an emoji nobody uses is gone"
    );

    // Removing what one does not have changes nothing either.
    bob.send_json(json!({"type": "remove_reaction", "message_id": id, "emoji": "👍"}))
        .await;
    bob.send_json(json!({"type": "reaction", "message_id": id, "emoji": "🎉", "action": "remove"}))
        .await;
    for _ in 0..2 {
        let answer = bob.expect("reactions").await;
        assert_eq!(answer["reactions"], json!({"🎉": ["ann"]}));
    }
    ann.roundtrip().await;

    // A newcomer sees the reactions in history.
    let (_cid, welcome) = server.join("react", "cid").await;
    assert_eq!(welcome["history"][0]["reactions"], json!({"🎉": ["ann"]}));
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_reaction_taken_away_is_named_as_it_was_made() {
    // Reactions belong to identities, and one identity may be in a room
    // under two names (two tabs, one claim). Taking a reaction away under
    // the other name names the reaction that went, so that a client
    // applying `user` and `action` stays in step.
    let server = start(config()).await;
    let (mut ann, mut bob, id) = room_with_a_message(&server, "two-names").await;
    let path = format!("/ws/two-names/zed?claim={}", common::claim_of("ann"));
    let mut zed = server.ws(&path).await;
    zed.expect("welcome").await;
    zed.expect("join").await;
    assert_eq!(ann.expect("join").await["user"], "zed");
    assert_eq!(bob.expect("join").await["user"], "zed");

    ann.send_json(json!({"type": "add_reaction", "message_id": id, "emoji": "👍"}))
        .await;
    let u = both(&mut ann, &mut bob, "reaction_update").await;
    assert_eq!(zed.expect("reaction_update").await, u);
    zed.send_json(json!({"type": "remove_reaction", "message_id": id, "emoji": "👍"}))
        .await;
    let u = both(&mut ann, &mut bob, "reaction_update").await;
    assert_eq!(u["action"], "remove");
    assert_eq!(u["user"], "ann", "the reaction that went was ann's: {u}");
    assert_eq!(u["users"], json!([]));
    assert_eq!(zed.expect("reaction_update").await, u);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_message_holds_at_most_20_distinct_emoji() {
    // No rate limit: this test sends more than a burst on purpose.
    let server = start(config().rate(0u32)).await;
    let (mut ann, mut bob, id) = room_with_a_message(&server, "many").await;
    let emoji: Vec<String> = (0..21u32)
        .map(|i| char::from_u32(0x1F600 + i).unwrap().to_string())
        .collect();
    for e in &emoji[..20] {
        ann.send_json(json!({"type": "add_reaction", "message_id": id, "emoji": e}))
            .await;
        both(&mut ann, &mut bob, "reaction_update").await;
    }
    bob.send_json(json!({"type": "add_reaction", "message_id": id, "emoji": emoji[20]}))
        .await;
    let err = bob.expect_error("too_many_reactions").await;
    assert_eq!(err["ref"], "add_reaction", "ref is the request's type");
    // Joining an existing emoji is still fine, and only bob got the error.
    bob.send_json(json!({"type": "add_reaction", "message_id": id, "emoji": emoji[0]}))
        .await;
    let u = both(&mut ann, &mut bob, "reaction_update").await;
    assert_eq!(u["users"], json!(["ann", "bob"]));
    assert_eq!(u["reactions"].as_object().unwrap().len(), 20);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn one_emoji_lists_at_most_max_users_per_reaction_people() {
    let server = start(config().max_users_per_reaction(2usize)).await;
    let (mut ann, mut bob, id) = room_with_a_message(&server, "crowd").await;
    ann.send_json(json!({"type": "add_reaction", "message_id": id, "emoji": "👍"}))
        .await;
    assert_eq!(
        both(&mut ann, &mut bob, "reaction_update").await["users"],
        json!(["ann"])
    );
    bob.send_json(json!({"type": "add_reaction", "message_id": id, "emoji": "👍"}))
        .await;
    let u = both(&mut ann, &mut bob, "reaction_update").await;
    assert_eq!(u["users"], json!(["ann", "bob"]));
    let (mut carl, _) = server.join("crowd", "carl").await;
    carl.expect("join").await;
    ann.expect("join").await;
    bob.expect("join").await;
    carl.send_json(
        json!({"type": "reaction", "message_id": id, "emoji": "👍", "action": "toggle"}),
    )
    .await;
    let err = carl.expect_error("too_many_reactions").await;
    assert_eq!(err["ref"], "reaction");
    // Another emoji is fine, and leaving one makes room.
    carl.send_json(json!({"type": "add_reaction", "message_id": id, "emoji": "🎉"}))
        .await;
    assert_eq!(carl.expect("reaction_update").await["emoji"], "🎉");
    bob.send_json(json!({"type": "remove_reaction", "message_id": id, "emoji": "👍"}))
        .await;
    carl.expect("reaction_update").await;
    carl.send_json(json!({"type": "add_reaction", "message_id": id, "emoji": "👍"}))
        .await;
    let u = carl.expect("reaction_update").await;
    assert_eq!(u["users"], json!(["ann", "carl"]));
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn edit_and_delete_are_for_the_author_only() {
    let server = start(config()).await;
    let (mut ann, mut bob, id) = room_with_a_message(&server, "edits").await;
    let (mut ann2, _) = server.join("edits", "ann").await;

    bob.send_json(json!({"type": "edit", "message_id": id, "content": "hijacked"}))
        .await;
    assert_eq!(bob.expect_error("forbidden").await["ref"], "edit");
    bob.send_json(json!({"type": "delete", "message_id": id}))
        .await;
    assert_eq!(bob.expect_error("forbidden").await["ref"], "delete");
    ann.roundtrip().await; // nothing was broadcast

    // Another tab of the author may edit.
    ann2.send_json(json!({"type": "edit", "message_id": id, "content": "hello, edited"}))
        .await;
    let u = ann.expect("message_updated").await;
    assert_eq!(bob.expect("message_updated").await, u);
    assert_eq!(ann2.expect("message_updated").await, u);
    assert_eq!(u["message_id"], id.as_str());
    assert_eq!(u["content"], "hello, edited");
    assert_eq!(u["user"], "ann");
    assert_eq!(u["seq"], 1, "an edit keeps the seq");
    assert_eq!(u["reactions"], json!({}));
    assert_utc_rfc3339(&u["edited_at"]);
    assert_utc_rfc3339(&u["timestamp"]);

    let (_cid, welcome) = server.join("edits", "cid").await;
    assert_eq!(welcome["history"][0]["content"], "hello, edited");
    assert_eq!(welcome["history"][0]["edited_at"], u["edited_at"]);
    assert_eq!(ann.expect("join").await["user"], "cid");
    assert_eq!(bob.expect("join").await["user"], "cid");

    ann2.send_json(json!({"type": "delete", "message_id": id}))
        .await;
    let d = ann.expect("message_deleted").await;
    assert_eq!(
        d,
        json!({"type": "message_deleted", "message_id": id, "seq": 1})
    );
    assert_eq!(bob.expect("message_deleted").await, d);

    // It is gone: for history and for further requests.
    let (_dan, welcome) = server.join("edits", "dan").await;
    assert_eq!(welcome["history"], json!([]));
    assert_eq!(bob.expect("join").await["user"], "dan");
    bob.send_json(json!({"type": "add_reaction", "message_id": id, "emoji": "👍"}))
        .await;
    bob.expect_error("unknown_message").await;
    assert_eq!(ann.expect("join").await["user"], "dan");
    ann.send_json(json!({"type": "edit", "message_id": id, "content": "x"}))
        .await;
    ann.expect_error("unknown_message").await;
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn typing_goes_to_the_others_at_most_once_per_interval() {
    let server = start(config()).await;
    let (mut ann, mut bob, _) = room_with_a_message(&server, "typing").await;
    ann.send_json(json!({"type": "typing"})).await;
    ann.send_json(json!({"type": "typing"})).await;
    ann.post("done typing").await; // ann sees no typing of her own
    let t = bob.expect("typing").await;
    assert_eq!(t, json!({"type": "typing", "user": "ann"}));
    assert_eq!(bob.expect("message").await["content"], "done typing");

    // The throttle is per user: bob may type while ann is throttled.
    bob.send_json(json!({"type": "typing"})).await;
    assert_eq!(ann.expect("typing").await["user"], "bob");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn presence_and_ping_answer_the_sender_only() {
    let server = start(config()).await;
    let (mut ann, mut bob, _) = room_with_a_message(&server, "presence").await;
    ann.send_json(json!({"type": "presence"})).await;
    let p = ann.expect("presence").await;
    assert_eq!(
        p,
        json!({"type": "presence", "online": ["ann", "bob"], "online_count": 2})
    );
    ann.send_json(json!({"type": "ping"})).await;
    assert_eq!(ann.expect("pong").await, json!({"type": "pong"}));
    bob.post("bob's next event is his own message").await;
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn every_error_code_is_sent_and_the_connection_stays_open() {
    // No rate limit: this test sends more than a burst on purpose.
    let server = start(config().max_message_chars(10usize).rate(0u32)).await;
    let (mut ann, mut bob, id) = room_with_a_message(&server, "errors").await;

    let cases: Vec<(Message, &str, Option<&str>)> = vec![
        (Message::text("{"), "bad_json", None),
        (Message::text("[1,2]"), "bad_json", None),
        (Message::text("\"ping\""), "bad_json", None),
        (
            Message::text(r#"{"type":"dance"}"#),
            "unknown_type",
            Some("dance"),
        ),
        (
            Message::text(r#"{"content":"no type"}"#),
            "invalid_field",
            None,
        ),
        (
            Message::text(r#"{"type":"message","content":"   "}"#),
            "invalid_field",
            Some("message"),
        ),
        (
            Message::text(r#"{"type":"message","content":7}"#),
            "invalid_field",
            Some("message"),
        ),
        (
            Message::text(
                json!({"type": "message", "content": "x", "client_id": "c".repeat(65)}).to_string(),
            ),
            "invalid_field",
            Some("message"),
        ),
        // U+0000 would not fit a PostgreSQL store: refused wherever it is kept.
        (
            Message::text(json!({"type": "message", "content": "a\u{0}b"}).to_string()),
            "invalid_field",
            Some("message"),
        ),
        (
            Message::text(json!({"type": "message", "content": "x", "client_id": "c\u{0}"}).to_string()),
            "invalid_field",
            Some("message"),
        ),
        (
            Message::text(json!({"type": "edit", "message_id": id, "content": "\u{0}"}).to_string()),
            "invalid_field",
            Some("edit"),
        ),
        (
            Message::text(
                json!({"type": "add_reaction", "message_id": id, "emoji": "a b"}).to_string(),
            ),
            "invalid_field",
            Some("add_reaction"),
        ),
        (
            Message::text(
                json!({"type": "add_reaction", "message_id": id, "emoji": "x".repeat(33)})
                    .to_string(),
            ),
            "invalid_field",
            Some("add_reaction"),
        ),
        (
            Message::text(
                json!({"type": "reaction", "message_id": id, "emoji": "x", "action": "zap"})
                    .to_string(),
            ),
            "invalid_field",
            Some("reaction"),
        ),
        (
            Message::text(r#"{"type":"message","content":"12345678901"}"#),
            "too_long",
            Some("message"),
        ),
        (
            Message::text(
                json!({"type": "edit", "message_id": id, "content": "12345678901"}).to_string(),
            ),
            "too_long",
            Some("edit"),
        ),
        (
            Message::text(r#"{"type":"add_reaction","message_id":"nope","emoji":"👍"}"#),
            "unknown_message",
            Some("add_reaction"),
        ),
        (
            Message::text(r#"{"type":"remove_reaction","message_id":"nope","emoji":"👍"}"#),
            "unknown_message",
            Some("remove_reaction"),
        ),
        (
            Message::text(r#"{"type":"reaction","message_id":"nope","emoji":"👍","action":"add"}"#),
            "unknown_message",
            Some("reaction"),
        ),
        (
            Message::text(r#"{"type":"delete","message_id":"nope"}"#),
            "unknown_message",
            Some("delete"),
        ),
        (
            Message::text(
                json!({"type": "edit", "message_id": id, "content": "mine now"}).to_string(),
            ),
            "forbidden",
            Some("edit"),
        ),
        (
            Message::text(
                r#"{"type":"message","content":"see","attachment":{"url":"/uploads/0123456789abcdef0123456789abcdef.png"}}"#,
            ),
            "bad_attachment",
            Some("message"),
        ),
        (
            Message::text(
                r#"{"type":"message","content":"see","attachment":{"url":"https://evil.example/x.png"}}"#,
            ),
            "bad_attachment",
            Some("message"),
        ),
        (
            Message::text(
                r#"{"type":"message","content":"see","attachment":{"url":"/uploads/../Cargo.toml"}}"#,
            ),
            "bad_attachment",
            Some("message"),
        ),
        (Message::binary(vec![1u8, 2, 3]), "unsupported", None),
    ];
    for (request, code, reference) in cases {
        let shown = format!("{request:?}");
        bob.send(request).await;
        let err = bob.expect_error(code).await;
        match reference {
            Some(r) => assert_eq!(err["ref"], r, "ref of {shown}"),
            None => assert!(
                err.get("ref").is_none(),
                "no ref expected for {shown}: {err}"
            ),
        }
        bob.roundtrip().await;
    }
    // Length counts characters, not bytes: 11 two-byte characters are too
    // long, 10 are fine.
    bob.send_json(json!({"type": "message", "content": "é".repeat(11)}))
        .await;
    bob.expect_error("too_long").await;
    bob.post(&"é".repeat(10)).await;
    // Errors went to bob only: ann's next event is bob's accepted message.
    assert_eq!(ann.expect("message").await["content"], "é".repeat(10));
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn welcome_history_is_the_last_n_and_resume_returns_exactly_the_rest() {
    let server = start(config().history(5usize).welcome_history(3usize)).await;
    let (mut ann, _) = server.join("hist", "ann").await;
    ann.expect("join").await;
    for i in 1..=7 {
        assert_eq!(ann.post(&format!("m{i}")).await["seq"], i);
    }
    // The ring holds seq 3..=7; welcome shows the last 3.
    let (_b, w) = server.join("hist", "b").await;
    assert_eq!(ids(&w["history"]), vec![5, 6, 7]);
    assert_eq!(w["history"][0]["content"], "m5");
    assert_eq!(w["history"][0]["type"], "message");
    assert_eq!(w["gap"], false);
    assert_eq!(w["last_seq"], 7);

    // Older than the ring: a durable store still has them; otherwise they
    // are gone and the welcome says so.
    let (older, lost) = match DURABLE {
        true => (vec![1, 2], false),
        false => (vec![], true),
    };
    let held = |from: u64| -> Vec<u64> {
        older.iter().copied().filter(|s| *s >= from).chain(3..=7).collect()
    };
    for (after, expected, gap) in [
        (4, vec![5, 6, 7], false),
        (2, vec![3, 4, 5, 6, 7], false),
        (1, held(2), lost),
        (0, held(1), lost),
        (7, vec![], false),
        (6, vec![7], false),
        // Past the newest seq: a numbering the room no longer has (it was
        // reset), so everything held is news, as for after=0.
        (8, held(1), lost),
        (1000, held(1), lost),
    ] {
        let mut c = server.ws(&format!("/ws/hist/resumer?after={after}")).await;
        let w = c.expect("welcome").await;
        assert_eq!(ids(&w["history"]), expected, "after={after}");
        assert_eq!(w["gap"], gap, "gap after={after}");
        assert_eq!(w["last_seq"], 7);
    }
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn welcome_history_holds_the_newest_messages_within_its_byte_budget() {
    // Messages of about 1 KB against a 4 KB budget: three fit.
    let server = start(config().rate(0u32).welcome_history_bytes(4096usize)).await;
    let (mut ann, _) = server.join("budget", "ann").await;
    ann.expect("join").await;
    for i in 1..=8 {
        ann.post(&format!("{i}{}", "x".repeat(1000))).await;
    }
    let history_len = |w: &Value| serde_json::to_vec(&w["history"]).unwrap().len();

    let (_b, w) = server.join("budget", "bob").await;
    assert_eq!(ids(&w["history"]), vec![6, 7, 8], "the newest that fit");
    assert!(history_len(&w) <= 4096);
    assert_eq!(
        w["gap"], false,
        "a plain join asked for no particular messages"
    );
    assert_eq!(w["last_seq"], 8);

    for (after, expected, gap) in [
        (0, vec![6, 7, 8], true), // 1..=5 were asked for and left out
        (5, vec![6, 7, 8], false),
        (7, vec![8], false),
    ] {
        let mut c = server
            .ws(&format!("/ws/budget/resumer?after={after}"))
            .await;
        let w = c.expect("welcome").await;
        assert_eq!(ids(&w["history"]), expected, "after={after}");
        assert_eq!(w["gap"], gap, "gap after={after}");
    }
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn one_message_too_large_for_the_welcome_does_not_hide_the_rest() {
    let server = start(config().rate(0u32).welcome_history_bytes(3000usize)).await;
    let (mut ann, _) = server.join("big", "ann").await;
    ann.expect("join").await;
    for i in 1..=4 {
        ann.post(&format!("small {i}")).await;
    }
    ann.post(&"x".repeat(3500)).await; // the newest, alone over the budget
    let (_bob, w) = server.join("big", "bob").await;
    assert_eq!(ids(&w["history"]), vec![1, 2, 3, 4], "the others are all there");
    let mut resumer = server.ws("/ws/big/carl?after=0").await;
    let w = resumer.expect("welcome").await;
    assert_eq!(ids(&w["history"]), vec![1, 2, 3, 4]);
    assert_eq!(w["gap"], true, "a resume that left one out says so");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn an_attachment_names_a_stored_upload_and_the_server_fills_it_in() {
    let server = start(config()).await;
    let name = "0123456789abcdef0123456789abcdef.png";
    std::fs::write(server.uploads_dir().join(name), b"\x89PNG\r\n\x1a\n1234").unwrap();
    let (mut ann, _) = server.join("files", "ann").await;
    ann.expect("join").await;
    // Blank content is fine with an attachment; the client's claims about
    // size and type are ignored.
    ann.send_json(json!({
        "type": "message",
        "content": "",
        "attachment": {"url": format!("/uploads/{name}"), "size": 1, "content_type": "text/html"},
    }))
    .await;
    let m = ann.expect("message").await;
    assert_eq!(m["content"], "");
    let a = &m["attachment"];
    assert_eq!(a["url"], format!("/uploads/{name}"));
    assert_eq!(a["size"], 12);
    assert_eq!(a["content_type"], "image/png");
    assert!(a["name"].as_str().is_some_and(|n| !n.is_empty()));

    let (_bob, welcome) = server.join("files", "bob").await;
    assert_eq!(welcome["history"][0]["attachment"], *a);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn an_empty_room_is_dropped_after_its_ttl() {
    // Names are not held: a room holding one stays while it is held.
    let server = start(
        config()
            .empty_room_ttl(std::time::Duration::ZERO)
            .name_hold_grace(std::time::Duration::ZERO),
    )
    .await;
    let (mut ann, _) = server.join("brief", "ann").await;
    ann.expect("join").await;
    ann.post("soon forgotten").await;
    assert_eq!(server.metric("roomcast_rooms").await, 1);
    ann.close().await;
    server.wait_metric("roomcast_rooms", 0).await;
    let (_bob, welcome) = server.join("brief", "bob").await;
    if DURABLE {
        // Out of memory, not out of the store.
        assert_eq!(welcome["history"][0]["content"], "soon forgotten");
        assert_eq!(welcome["last_seq"], 1);
    } else {
        assert_eq!(welcome["history"], json!([]));
        assert_eq!(welcome["last_seq"], u64::from(NUMBERS_ON));
        if NUMBERS_ON {
            // Someone who had nothing is told the first message went.
            let mut late = server.ws("/ws/brief/late?after=0").await;
            assert_eq!(late.expect("welcome").await["gap"], true);
        }
    }
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn an_empty_room_keeps_its_history_within_its_ttl() {
    let server = start(config()).await;
    let (mut ann, _) = server.join("kept", "ann").await;
    ann.expect("join").await;
    ann.post("remember me").await;
    ann.close().await;
    server.wait_metric("roomcast_connections", 0).await;
    let (_bob, welcome) = server.join("kept", "bob").await;
    assert_eq!(welcome["history"][0]["content"], "remember me");
    assert_eq!(welcome["online"], json!(["bob"]));
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn rooms_over_100_names_get_counts_only_in_join_and_leave() {
    let server = start(config()).await;
    let mut clients = Vec::new();
    for i in 0..100 {
        let (c, _) = server.join("crowd", &format!("u{i:03}")).await;
        clients.push(c);
    }
    let (mut watcher, welcome) = server.join("crowd", "watcher").await;
    assert_eq!(welcome["online_count"], 101);
    assert_eq!(
        welcome["online"].as_array().unwrap().len(),
        101,
        "welcome lists everyone"
    );
    let join = watcher.expect("join").await;
    assert_eq!(join["online_count"], 101);
    assert!(
        join.get("online").is_none(),
        "101 names: counts only, got {join}"
    );

    clients.pop().unwrap().close().await;
    let leave = watcher.expect("leave").await;
    assert_eq!(leave["user"], "u099");
    assert_eq!(leave["online_count"], 100);
    assert_eq!(
        leave["online"].as_array().map(Vec::len),
        Some(100),
        "100 names are listed"
    );
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_resume_whose_history_exceeds_the_queue_budget_still_gets_welcome_and_join() {
    // 280 messages of 4000 four-byte characters: about 4.5 MB of history,
    // more than a connection's 4 MiB outbound budget, with a welcome budget
    // raised to hold it all.
    let server = start(config().rate(0u32).welcome_history_bytes(8usize << 20)).await;
    let (mut ann, _) = server.join("bulky", "ann").await;
    ann.expect("join").await;
    let content = "😀".repeat(4000);
    for _ in 0..280 {
        ann.send_json(json!({"type": "message", "content": content}))
            .await;
        ann.expect("message").await;
    }
    let mut late = server.ws("/ws/bulky/late?after=0").await;
    let welcome = late.expect("welcome").await;
    assert_eq!(welcome["history"].as_array().unwrap().len(), 280);
    assert_eq!(welcome["gap"], false);
    assert_eq!(late.expect("join").await["user"], "late");
    late.roundtrip().await;
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_senders_are_seen_in_one_order_by_everyone() {
    let server = start(config().rate(0u32)).await;
    const CLIENTS: usize = 5;
    const EACH: usize = 20;
    let mut clients = Vec::new();
    for i in 0..CLIENTS {
        let (c, _) = server.join("busy", &format!("u{i}")).await;
        clients.push(c);
    }
    // Everyone posts at once while reading; each records the messages it sees.
    let tasks: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(i, mut c)| {
            tokio::spawn(async move {
                for n in 0..EACH {
                    c.send_json(json!({"type": "message", "content": format!("{i}:{n}")}))
                        .await;
                }
                let mut seen = Vec::new();
                while seen.len() < CLIENTS * EACH {
                    let e = c.recv_json().await;
                    if e["type"] == "message" {
                        seen.push((
                            e["seq"].as_u64().unwrap(),
                            e["content"].as_str().unwrap().to_owned(),
                        ));
                    }
                }
                seen
            })
        })
        .collect();
    let mut views = Vec::new();
    for t in tasks {
        views.push(t.await.unwrap());
    }
    let first = &views[0];
    let seqs: Vec<u64> = first.iter().map(|(s, _)| *s).collect();
    assert_eq!(seqs, (1..=(CLIENTS * EACH) as u64).collect::<Vec<_>>());
    for view in &views[1..] {
        assert_eq!(view, first, "every member sees the same order");
    }
    // Each sender's own messages keep the order it sent them in.
    for i in 0..CLIENTS {
        let mine: Vec<&str> = first
            .iter()
            .map(|(_, c)| c.as_str())
            .filter(|c| c.starts_with(&format!("{i}:")))
            .collect();
        let expected: Vec<String> = (0..EACH).map(|n| format!("{i}:{n}")).collect();
        assert_eq!(mine, expected);
    }
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_retried_client_id_posts_once_and_answers_with_the_first() {
    let server = start(config()).await;
    let (mut ann, mut bob, _) = room_with_a_message(&server, "retry").await;
    let (request, first) = post_with_client_id(&mut ann, &mut bob, "only once", "c-42").await;

    // A retry (say, after an answer lost with the connection): the sender
    // gets the first message back, nobody gets anything new.
    ann.send_json(request.clone()).await;
    assert_eq!(ann.expect("message").await, first);
    bob.roundtrip().await;
    // The same person on another connection: the same answer.
    let (mut tab, _) = server.join("retry", "ann").await;
    tab.send_json(request.clone()).await;
    assert_eq!(tab.expect("message").await["seq"], first["seq"]);
    // Someone else's client_id is theirs: a new message.
    bob.send_json(json!({"type": "message", "content": "mine", "client_id": "c-42"}))
        .await;
    let theirs = bob.expect("message").await;
    assert_eq!(theirs["seq"], first["seq"].as_u64().unwrap() + 1);
    assert_eq!(ann.expect("message").await, theirs);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_retry_of_a_deleted_post_is_refused_and_posts_nothing() {
    let server = start(config()).await;
    let (mut ann, mut bob, _) = room_with_a_message(&server, "retry-gone").await;
    let (request, first) = post_with_client_id(&mut ann, &mut bob, "oops", "c-7").await;
    ann.send_json(json!({"type": "delete", "message_id": first["message_id"]}))
        .await;
    ann.expect("message_deleted").await;
    bob.expect("message_deleted").await;

    // The retry (its first answer lost, say) finds the message deleted:
    // the sender is told, and nothing comes back to the room.
    ann.send_json(request).await;
    let refused = ann.expect("error").await;
    assert_eq!(
        (&refused["code"], &refused["ref"]),
        (&json!("unknown_message"), &json!("message")),
        "{refused}"
    );
    bob.roundtrip().await;
    let next = ann.post("after").await;
    assert_eq!(next["seq"], first["seq"].as_u64().unwrap() + 1);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_messages_reactions_have_a_size_cap_so_one_toggle_cannot_flood_a_room() {
    let server = start(config().rate(0u32).max_reaction_bytes(1024usize)).await;
    let (mut ann, _) = server.join("heavy", "ann").await;
    ann.expect("join").await;
    let id = ann.post("react to me").await["message_id"].clone();
    let mut refused_at = None;
    for i in 0..100 {
        let name = format!("{i:02}-a-rather-long-display-name-x");
        let (mut c, _) = server.join("heavy", &name).await;
        c.send_json(json!({"type": "add_reaction", "message_id": id, "emoji": "👍"}))
            .await;
        let e = c.skip_to_any(&["reaction_update", "error"]).await;
        if e["type"] == "error" {
            assert_eq!(e["code"], "too_many_reactions", "{e}");
            refused_at = Some(i);
            break;
        }
        let size = serde_json::to_vec(&e["reactions"]).unwrap().len();
        assert!(size <= 1024, "an update carried {size} bytes of reactions");
    }
    let n = refused_at.expect("the cap was reached");
    assert!((20..40).contains(&n), "refused at the {n}th reactor");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_reaction_update_costs_what_it_changes_once_reactions_grow() {
    let server = start(config().rate(0u32)).await;
    let long = |who: &str| format!("{who}-with-a-rather-long-name-01");
    let (mut ann, _) = server.join("popular", &long("ann")).await;
    ann.expect("join").await;
    let (mut bob, _) = server.join("popular", &long("bob")).await;
    bob.expect("join").await;
    ann.expect("join").await;
    let id = ann.post("react to me").await["message_id"].clone();
    bob.expect("message").await;
    let emoji: Vec<String> = (0..20u32)
        .map(|i| char::from_u32(0x1F600 + i).unwrap().to_string())
        .collect();
    // 40 reactions of 30-character names: about 1.5 KB of names in all.
    let mut last = Value::Null;
    for first in [true, false] {
        for e in &emoji {
            let c = if first { &mut ann } else { &mut bob };
            c.send_json(json!({"type": "add_reaction", "message_id": id, "emoji": e}))
                .await;
            last = both(&mut ann, &mut bob, "reaction_update").await;
        }
    }
    // The last update names its change and costs what it changes: no
    // `reactions`, the emoji's count and its names.
    assert_eq!(last["user"], long("bob"));
    assert_eq!(last["action"], "add");
    assert_eq!(last["count"], 2);
    assert_eq!(last["users"], json!([long("ann"), long("bob")]));
    assert!(last.get("reactions").is_none(), "{last}");
    assert!(serde_json::to_vec(&last).unwrap().len() < 400, "{last}");

    // Three more people on one emoji: its update shows a sample of names.
    for who in ["carl", "dave", "erin"] {
        let (mut c, _) = server.join("popular", who).await;
        c.send_json(json!({"type": "add_reaction", "message_id": id, "emoji": emoji[0]}))
            .await;
        last = c.skip_to("reaction_update").await;
    }
    assert_eq!(last["count"], 5);
    assert_eq!(last["users"], json!([long("ann"), long("bob"), "carl"]));

    // A newcomer's history shows a sample per emoji and the counts.
    let (mut fay, w) = server.join("popular", "fay").await;
    let m = &w["history"][0];
    let shown = m["reactions"].as_object().unwrap();
    assert_eq!(shown.len(), 20);
    assert!(shown.values().all(|u| u.as_array().unwrap().len() <= 3));
    assert_eq!(m["reaction_counts"][&emoji[0]], 5);
    assert_eq!(m["reaction_counts"][&emoji[1]], 2);

    // The whole list is one request away, for the one who asks.
    fay.send_json(json!({"type": "reactions", "message_id": id}))
        .await;
    let whole = fay.skip_to("reactions").await;
    assert_eq!(whole["message_id"], id);
    assert_eq!(
        whole["reactions"][&emoji[0]],
        json!([long("ann"), long("bob"), "carl", "dave", "erin"])
    );
    assert_eq!(whole["reactions"].as_object().unwrap().len(), 20);
    fay.send_json(json!({"type": "reactions", "message_id": "no-such-message"}))
        .await;
    let e = fay.skip_to("error").await;
    assert_eq!((&e["code"], &e["ref"]), (&json!("unknown_message"), &json!("reactions")));

    // Small reactions stay whole on the wire, as the original protocol had them.
    let small = fay.post("small").await["message_id"].clone();
    fay.send_json(json!({"type": "add_reaction", "message_id": small, "emoji": "👍"}))
        .await;
    let u = fay.skip_to("reaction_update").await;
    assert_eq!(u["reactions"], json!({"👍": ["fay"]}));
    assert_eq!(u["count"], 1);
    server.shutdown().await.unwrap();
}
