//! Limits, liveness and backpressure: the rate limit and flood close (1008),
//! frames over the size limit (1009), slow consumers (1013), the connection
//! limit (503), and pings with the idle close. Each test asserts the events
//! the server sends; short Config intervals only make them arrive sooner.

mod common;

use std::time::Duration;

use common::{RawWs, Server, TIMEOUT, config, eventually};
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn requests_over_the_rate_get_rate_limited_and_the_connection_stays_open() {
    let server = Server::start(config().rate(1u32).rate_burst(3u32)).await;
    let (mut c, welcome) = server.join("rate", "ann").await;
    assert_eq!(welcome["limits"]["messages_per_second"], 1);
    c.expect("join").await;
    // Five at once: the burst of three passes, the other two are refused.
    // A refusal names the request's type and the message it is about when
    // it has them (an edit's text can then go back in its box), and
    // nothing else of it is checked.
    for _ in 0..3 {
        c.send_json(json!({"type": "ping"})).await;
    }
    c.send_json(json!({"type": "edit", "message_id": "m-1", "content": 5}))
        .await;
    c.send(Message::text("not json")).await;
    for _ in 0..3 {
        c.expect("pong").await;
    }
    let err = c.expect_error("rate_limited").await;
    assert_eq!(err["ref"], "edit", "{err}");
    assert_eq!(err["message_id"], "m-1", "{err}");
    let err = c.expect_error("rate_limited").await;
    assert!(err.get("ref").is_none(), "{err}");
    assert_eq!(server.metric("roomcast_rate_limited_total").await, 2);
    // At 1/s the bucket holds a token again after a second (a precondition
    // for the next request, not what this test measures).
    tokio::time::sleep(Duration::from_millis(1100)).await;
    c.roundtrip().await;
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_client_that_keeps_flooding_is_closed_with_1008() {
    let server = Server::start(config().rate(1u32).rate_burst(3u32)).await;
    let (mut c, _) = server.join("flood", "ann").await;
    c.expect("join").await;
    // Burst of 3 accepted, then 3 refusals in a row: the third closes.
    // Each refused post is named by its client_id.
    for _ in 0..3 {
        c.send_json(json!({"type": "ping"})).await;
    }
    for n in 4..=6 {
        let post = json!({"type": "message", "content": "x", "client_id": format!("c-{n}")});
        c.send_json(post).await;
    }
    for _ in 0..3 {
        c.expect("pong").await;
    }
    for n in 4..=5 {
        let err = c.expect_error("rate_limited").await;
        assert_eq!(err["ref"], "message", "{err}");
        assert_eq!(err["client_id"], format!("c-{n}"), "{err}");
    }
    c.expect_close(1008).await;
    server.wait_metric("roomcast_connections", 0).await;
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_tab_refused_for_its_identitys_rate_alone_is_not_closed_as_a_flood() {
    let server = Server::start(config().rate(1u32).rate_burst(2u32)).await;
    // Two tabs of one identity (`join` sends the same claim for a name),
    // in two rooms, sharing the identity's budget of 2.
    let (mut a, _) = server.join("tab-a", "ann").await;
    a.expect("join").await;
    let (mut b, _) = server.join("tab-b", "ann").await;
    b.expect("join").await;
    // Tab a spends the identity's budget.
    for _ in 0..2 {
        a.send_json(json!({"type": "ping"})).await;
    }
    for _ in 0..2 {
        a.expect("pong").await;
    }
    // Tab b has sent nothing: its own bucket is full. Its first two
    // requests are refused for the identity's rate (each costs its own
    // token), its third past its own: three refusals in a row, of which
    // one counts towards the 1008 that 2 of them in a row would bring.
    // Before, the second refusal closed it. (Should the machine stall a
    // second between the two tabs, a token comes back and an answer is a
    // pong: that proves nothing either way and fails nothing.)
    for _ in 0..3 {
        b.send_json(json!({"type": "ping"})).await;
    }
    let mut refused = 0;
    for _ in 0..3 {
        let answer = b.recv_json().await;
        match answer["type"].as_str() {
            Some("pong") => {}
            Some("error") if answer["code"] == "rate_limited" => refused += 1,
            _ => panic!("expected a pong or rate_limited, got {answer}"),
        }
    }
    assert_eq!(
        server.metric("roomcast_rate_limited_total").await,
        refused,
        "each refusal counted"
    );
    assert_eq!(server.metric("roomcast_connections").await, 2);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_flood_of_unsolicited_pongs_is_closed_with_1008() {
    // Pongs are never answered, but they are not free: past the
    // connection's own rate they count towards the flood close.
    let server = Server::start(config().rate(1u32).rate_burst(3u32)).await;
    let mut raw = RawWs::connect(server.addr, "/ws/pongs/ann").await;
    raw.send_repeated(0x8A, b"", 50).await;
    let (code, _) = raw.read_until_close().await;
    assert_eq!(code, 1008);
    server.wait_metric("roomcast_connections", 0).await;
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_message_in_endless_continuation_frames_is_closed_with_1009() {
    // tungstenite puts pieces together below the session, so empty
    // continuation frames would be work the rate limit never sees: the
    // 1025th piece of one message (the limit is 1024) closes the connection.
    let server = Server::start(config()).await;
    let mut raw = RawWs::connect(server.addr, "/ws/pieces/ann").await;
    raw.send_frame(0x01, b"{", true).await;
    raw.send_repeated(0x00, b"", 1025).await;
    let (code, _) = raw.read_until_close().await;
    assert_eq!(code, 1009);
    server.wait_metric("roomcast_connections", 0).await;
    server.shutdown().await.unwrap();
}

/// A ping request padded with a JSON string to exactly `len` bytes.
fn padded_ping(len: usize) -> String {
    let base = r#"{"type":"ping","pad":""}"#.len();
    format!(r#"{{"type":"ping","pad":"{}"}}"#, "x".repeat(len - base))
}

#[tokio::test]
async fn a_frame_over_max_frame_bytes_is_closed_with_1009() {
    let server = Server::start(config().max_frame_bytes(1024usize)).await;
    let (mut c, _) = server.join("big", "ann").await;
    c.expect("join").await;
    let at_limit = padded_ping(1024);
    assert_eq!(at_limit.len(), 1024);
    c.send(Message::text(at_limit)).await;
    c.expect("pong").await;
    c.send(Message::text(padded_ping(1025))).await;
    c.expect_close(1009).await;
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_frame_over_64_kib_is_closed_with_1009_by_default() {
    let server = Server::start(config()).await;
    let (mut c, _) = server.join("big", "ann").await;
    c.expect("join").await;
    c.send(Message::text(padded_ping(70 << 10))).await;
    c.expect_close(1009).await;
    server.shutdown().await.unwrap();
}

/// A member `slow` of `room` that stopped reading, and `fast`, who posted
/// until the server dropped `slow` as a slow consumer: how many posts that
/// took, and `slow`'s `leave` if it came already.
struct Dropped {
    server: Server,
    slow: RawWs,
    fast: common::Client,
    sent: u64,
    early_leave: Option<serde_json::Value>,
}

async fn a_slow_consumer_dropped(room: &str) -> Dropped {
    let server = Server::start(
        config()
            .outbound_queue(4usize)
            .rate(0u32)
            .max_message_chars(40_000usize),
    )
    .await;
    let slow = common::stalled_client(&server, &format!("/ws/{room}/slow")).await;
    let (mut fast, _) = server.join(room, "fast").await;
    fast.expect("join").await;
    let (sent, early_leave) =
        common::flood_until_a_slow_consumer_is_dropped(&server, &mut fast).await;
    Dropped {
        server,
        slow,
        fast,
        sent,
        early_leave,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_closed_with_1013() {
    let Dropped {
        server,
        mut slow,
        mut fast,
        sent,
        early_leave,
    } = a_slow_consumer_dropped("firehose").await;

    // Now read: whatever was already in flight, then the close.
    let mut seqs = Vec::new();
    let code = loop {
        let frame = slow.read_frame().await;
        match frame.opcode {
            1 => {
                let event: serde_json::Value = serde_json::from_slice(&frame.payload).unwrap();
                if event["type"] == "message" {
                    seqs.push(event["seq"].as_u64().unwrap());
                }
            }
            8 => break frame.close_code().unwrap(),
            9 => {}
            other => panic!("unexpected opcode {other}"),
        }
    };
    assert_eq!(code, 1013);
    assert!(
        (seqs.len() as u64) < sent,
        "the dropped client got every message"
    );
    assert!(
        seqs.windows(2).all(|w| w[1] == w[0] + 1),
        "what did arrive is in order, without holes"
    );
    // The flooder sees the slow client leave and keeps going.
    let leave = match early_leave {
        Some(leave) => leave,
        None => fast.skip_to("leave").await,
    };
    assert_eq!(leave["user"], "slow");
    fast.post("still here").await;
    server.shutdown().await.unwrap();
}

/// A connection the server has decided to close acts no more, though its
/// close waits behind a socket that refuses bytes (here a slow consumer;
/// an expired token or shutdown close the same way): a post it sends then
/// is read but not posted, and the room sees it leave without it.
#[tokio::test]
async fn a_connection_being_closed_posts_nothing_more() {
    let Dropped {
        server,
        mut slow,
        mut fast,
        early_leave,
        ..
    } = a_slow_consumer_dropped("closing").await;
    // Its writer is stuck behind the socket the client does not read.
    assert_eq!(early_leave, None, "the slow client's session ended early");

    let read = server.metric("roomcast_frames_in_total").await;
    slow.send_text(r#"{"type":"message","content":"after its close"}"#)
        .await;
    eventually("the server read the post", async || {
        server.metric("roomcast_frames_in_total").await > read
    })
    .await;
    let (code, _) = slow.read_until_close().await;
    assert_eq!(code, 1013);
    let leave = loop {
        let event = fast.recv_json().await;
        assert_ne!(event["type"], "message", "posted after its close: {event}");
        if event["type"] == "leave" {
            break event;
        }
    };
    assert_eq!(leave["user"], "slow");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn upgrades_beyond_max_connections_get_503() {
    let server = Server::start(config().max_connections(1usize)).await;
    let (first, _) = server.join("full", "ann").await;
    let res = server
        .request(
            "GET",
            "/ws/full/bob",
            &[
                ("Upgrade", "websocket"),
                ("Connection", "Upgrade"),
                ("Sec-WebSocket-Version", "13"),
                ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
            ],
        )
        .await;
    let body = res.assert_json_error(503);
    assert_eq!(body["error"], "too_many_connections");
    assert_eq!(server.metric("roomcast_connections_refused_total").await, 1);
    // Plain HTTP still works at the WebSocket limit.
    assert_eq!(server.get("/health").await.status, 200);

    first.close().await;
    server.wait_metric("roomcast_connections", 0).await;
    let (_again, welcome) = server.join("full", "bob").await;
    assert_eq!(welcome["online"], json!(["bob"]));
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_client_that_never_answers_pings_is_closed() {
    // Pings every 100 ms, closed after 2 s of silence: the first ping
    // comes long before the close even if the test process stalls.
    let server = Server::start(
        config()
            .ping_interval(Duration::from_millis(100))
            .idle_timeout(Duration::from_secs(2)),
    )
    .await;
    let mut raw = RawWs::connect(server.addr, "/ws/idle/mute").await;
    let (code, pings) = raw.read_until_close().await;
    assert!(pings >= 1, "the server closed without pinging first");
    assert_eq!(code, 1000, "idle close (docs/protocol.md)");
    server.wait_metric("roomcast_connections", 0).await;
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_silent_client_is_closed_at_its_idle_deadline_not_at_the_next_ping() {
    // Pings an hour apart: the close must come from the idle deadline
    // itself (well within the test's timeout), not from the next ping tick.
    let server = Server::start(
        config()
            .ping_interval(Duration::from_secs(3600))
            .idle_timeout(Duration::from_millis(300)),
    )
    .await;
    let mut raw = RawWs::connect(server.addr, "/ws/idle/quiet").await;
    let (code, _) = raw.read_until_close().await;
    assert_eq!(code, 1000, "idle close (docs/protocol.md)");
    server.wait_metric("roomcast_connections", 0).await;
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_client_that_answers_pings_stays_connected() {
    let server = Server::start(
        config()
            .ping_interval(Duration::from_millis(100))
            .idle_timeout(Duration::from_secs(2)),
    )
    .await;
    let (mut c, _) = server.join("alive", "ann").await;
    c.expect("join").await;
    // tungstenite answers each ping with a pong as it reads. Thirty pings
    // span more than the idle timeout, so only the pongs can have kept us
    // open; the 2 s timeout leaves a loaded machine room to schedule us.
    let mut pings = 0;
    while pings < 30 {
        match tokio::time::timeout(TIMEOUT, c.ws.next()).await.unwrap() {
            Some(Ok(Message::Ping(_))) => pings += 1,
            other => panic!("expected pings only, got {other:?}"),
        }
    }
    c.roundtrip().await;
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn websocket_pings_get_pongs_with_the_same_payload() {
    let server = Server::start(config()).await;
    let (mut c, _) = server.join("pings", "ann").await;
    c.expect("join").await;
    c.send(Message::Ping(b"are you there".to_vec().into()))
        .await;
    match tokio::time::timeout(TIMEOUT, c.ws.next()).await.unwrap() {
        Some(Ok(Message::Pong(p))) => assert_eq!(&p[..], b"are you there"),
        other => panic!("expected a pong, got {other:?}"),
    }
    c.roundtrip().await;
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn fragmented_messages_are_reassembled_and_limited_as_a_whole() {
    let server = Server::start(config().max_frame_bytes(1024usize)).await;
    let mut raw = RawWs::connect(server.addr, "/ws/frag/ann").await;
    assert_eq!(raw.read_json().await["type"], "welcome");
    assert_eq!(raw.read_json().await["type"], "join");
    // `{"type":"ping"}` in three fragments: text, continuation, final continuation.
    raw.send_frame(0x01, br#"{"type""#, true).await;
    raw.send_frame(0x00, br#":"pi"#, true).await;
    raw.send_frame(0x80, br#"ng"}"#, true).await;
    assert_eq!(raw.read_json().await, json!({"type": "pong"}));

    // Each fragment is under the limit, the message is not.
    let half = padded_ping(1000);
    let (a, b) = half.split_at(600);
    raw.send_frame(0x01, a.as_bytes(), true).await;
    raw.send_frame(0x00, b.as_bytes(), true).await;
    raw.send_frame(0x80, b.as_bytes(), true).await;
    let (code, _) = raw.read_until_close().await;
    assert_eq!(code, 1009);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn invalid_utf8_text_is_closed_with_1007() {
    let server = Server::start(config()).await;
    let mut raw = RawWs::connect(server.addr, "/ws/utf8/ann").await;
    raw.send_frame(
        0x81,
        b"{\"type\":\"message\",\"content\":\"\xff\xfe\"}",
        true,
    )
    .await;
    let (code, _) = raw.read_until_close().await;
    assert_eq!(code, 1007);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn an_unmasked_client_frame_is_closed_with_1002() {
    let server = Server::start(config()).await;
    let mut raw = RawWs::connect(server.addr, "/ws/mask/ann").await;
    raw.send_frame(0x81, br#"{"type":"ping"}"#, false).await;
    let (code, _) = raw.read_until_close().await;
    assert_eq!(code, 1002);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_client_close_is_answered_and_the_name_leaves() {
    let server = Server::start(config()).await;
    let (mut ann, _) = server.join("closing", "ann").await;
    ann.expect("join").await;
    let mut raw = RawWs::connect(server.addr, "/ws/closing/bob").await;
    assert_eq!(raw.read_json().await["type"], "welcome");
    assert_eq!(ann.expect("join").await["user"], "bob");
    raw.send_frame(0x88, &1000u16.to_be_bytes(), true).await;
    let (code, _) = raw.read_until_close().await;
    assert_eq!(code, 1000);
    assert_eq!(ann.expect("leave").await["user"], "bob");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_frame_sent_with_the_handshake_is_not_lost() {
    let server = Server::start(config()).await;
    // The handshake and a masked `{"type":"ping"}` frame in one write: the
    // HTTP layer reads both, and the session must get the frame's bytes.
    let mut raw =
        RawWs::connect_sending(server.addr, "/ws/eager/ann", &[r#"{"type":"ping"}"#]).await;
    assert_eq!(raw.read_json().await["type"], "welcome");
    assert_eq!(raw.read_json().await["type"], "join");
    assert_eq!(raw.read_json().await, json!({"type": "pong"}));
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_pipelines_requests_and_reads_is_not_a_slow_consumer() {
    // A queue of 4 frames and no rate limit: 2000 pipelined pings. Their
    // pongs (34 KB in all) fit the socket buffers, so the client is never
    // behind; only the server failing to write between reads could fill
    // the queue.
    let server = Server::start(config().rate(0u32).outbound_queue(4usize)).await;
    let (c, _) = server.join("pipe", "ann").await;
    let (mut tx, mut rx) = c.ws.split();
    const PINGS: usize = 2000;
    let sender = tokio::spawn(async move {
        for _ in 0..PINGS {
            tx.feed(Message::text(r#"{"type":"ping"}"#)).await.unwrap();
        }
        tx.flush().await.unwrap();
        tx // keep the connection open until the pongs are read
    });
    let mut pongs = 0;
    while pongs < PINGS {
        match tokio::time::timeout(TIMEOUT, rx.next()).await.unwrap() {
            Some(Ok(Message::Text(t))) if t.as_str() == r#"{"type":"pong"}"# => pongs += 1,
            Some(Ok(Message::Text(t))) if t.contains(r#""type":"join""#) => {}
            other => panic!("after {pongs} pongs: {other:?}"),
        }
    }
    let _tx = sender.await.unwrap();
    assert_eq!(
        server.metric("roomcast_slow_consumers_dropped_total").await,
        0
    );
    server.shutdown().await.unwrap();
}
