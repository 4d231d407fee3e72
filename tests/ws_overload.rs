//! Overload is not slowness (docs/protocol.md, "Slow consumers"): a
//! client that keeps reading is never closed because the server fell
//! behind, a client that stops reading is still closed with 1013, and a
//! post sent faster than the history store commits waits instead of being
//! refused.
//!
//! No test depends on timing. The readers of the first and the last have
//! receive buffers that hold everything the test sends them, so they never
//! refuse bytes however late they run; the second reads in lockstep with
//! its sender, so its readers never hold more than one message.

mod common;

use common::{RawWs, Server, config};
use tokio::io::AsyncWriteExt;

const DROPPED: &str = "roomcast_slow_consumers_dropped_total";

/// One masked client text frame.
fn masked_text(out: &mut Vec<u8>, text: &str) {
    let mask = [0x0fu8, 0xf0, 0x3c, 0xc3];
    let len = text.len();
    assert!(len < 126, "short frames only");
    out.extend_from_slice(&[0x81, 0x80 | len as u8]);
    out.extend_from_slice(&mask);
    out.extend(text.bytes().enumerate().map(|(i, b)| b ^ mask[i % 4]));
}

/// Reads events until the next `message`; returns its seq. Anything but
/// presence before it (an `error` or a close frame above all) fails the
/// test.
async fn next_message(client: &mut RawWs) -> u64 {
    loop {
        let event = client.read_json().await;
        match event["type"].as_str() {
            Some("message") => return event["seq"].as_u64().expect("a seq"),
            Some("join" | "leave") => {}
            _ => panic!("expected a message, got {event}"),
        }
    }
}

#[tokio::test]
async fn readers_of_a_room_flooded_faster_than_the_server_writes_get_everything() {
    // Queues of 16 frames, and four clients that each send 250 messages
    // in one write: the server reads requests far faster than it can
    // write eight copies of each. Before the backlog throttle, healthy
    // readers' queues filled and they were closed with 1013.
    const CLIENTS: usize = 8;
    const SENDERS: usize = 4;
    const EACH: usize = 250;
    let server = Server::start(config().rate(0u32).outbound_queue(16usize)).await;
    // One at a time, each join read by everyone already in: every queue is
    // empty before the flood.
    let mut clients: Vec<RawWs> = Vec::new();
    for i in 0..CLIENTS {
        let mut c = common::roomy_client(&server, &format!("/ws/flood/u{i}")).await;
        assert_eq!(c.read_json().await["type"], "welcome");
        clients.push(c);
        for c in &mut clients {
            let join = c.read_json().await;
            assert_eq!(
                (join["type"].as_str(), join["user"].as_str()),
                (Some("join"), Some(format!("u{i}").as_str()))
            );
        }
    }

    flood(&mut clients[..SENDERS], EACH).await;
    every_reader_gets_everything(clients, (SENDERS * EACH) as u64).await;
    assert_eq!(server.metric(DROPPED).await, 0);
    server.shutdown().await.unwrap();
}

/// Each of `senders` sends `each` posts in one write.
async fn flood(senders: &mut [RawWs], each: usize) {
    for (s, c) in senders.iter_mut().enumerate() {
        let mut burst = Vec::new();
        for k in 0..each {
            masked_text(
                &mut burst,
                &format!(r#"{{"type":"message","content":"{s}-{k}"}}"#),
            );
        }
        c.stream.write_all(&burst).await.expect("send the burst");
    }
}

/// Every client reads messages 1 to `total`, in order, with nothing but
/// presence between them (no `error`, no close).
async fn every_reader_gets_everything(clients: Vec<RawWs>, total: u64) {
    let readers: Vec<_> = clients
        .into_iter()
        .map(|mut c| {
            tokio::spawn(async move {
                let mut seqs = Vec::new();
                while seqs.len() < total as usize {
                    seqs.push(next_message(&mut c).await);
                }
                seqs
            })
        })
        .collect();
    for reader in readers {
        let seqs = reader.await.expect("a reader failed");
        assert_eq!(
            seqs,
            (1..=total).collect::<Vec<_>>(),
            "every message, in order"
        );
    }
}

#[cfg(feature = "sqlite")]
#[tokio::test]
async fn posts_sent_faster_than_the_history_store_commits_are_delayed_not_refused() {
    // A durable store whose writer flushes every change on its own
    // (`--fsync always`) behind a queue of 64, and four clients that each
    // send 250 posts in one write: posts arrive far faster than they
    // commit. Before the store's queue throttled reads, the posts past its
    // bound were refused `unavailable` ("the history store is behind").
    // Now the server stops reading at three quarters of it (the room left
    // is more than the two worker threads can read past the throttle).
    const SENDERS: usize = 4;
    const EACH: usize = 250;
    let server = Server::start(
        config()
            .rate(0u32)
            .store(roomcast::store::StoreKind::Sqlite)
            .fsync(roomcast::store::Fsync::Always)
            .store_queue(64usize),
    )
    .await;
    let mut clients: Vec<RawWs> = Vec::new();
    for i in 0..SENDERS {
        let mut c = common::roomy_client(&server, &format!("/ws/kept/u{i}")).await;
        assert_eq!(c.read_json().await["type"], "welcome");
        clients.push(c);
    }
    flood(&mut clients, EACH).await;
    let total = (SENDERS * EACH) as u64;
    every_reader_gets_everything(clients, total).await;

    // Stored, too: after a restart the newest page ends with the last one.
    let server = server.restart().await;
    let page = server.get("/api/rooms/kept/messages?limit=1").await.json();
    assert_eq!(page["messages"][0]["seq"], total);
    assert_eq!(page["has_more"], true);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_stalled_reader_is_closed_with_1013_while_the_rest_of_its_room_reads_on() {
    const READERS: usize = 3;
    let server = Server::start(
        config()
            .rate(0u32)
            .outbound_queue(4usize)
            .max_message_chars(40_000usize),
    )
    .await;
    let mut slow = common::stalled_client(&server, "/ws/mixed/slow").await;
    let mut readers = Vec::new();
    for i in 0..READERS {
        let mut r = common::roomy_client(&server, &format!("/ws/mixed/r{i}")).await;
        assert_eq!(r.read_json().await["type"], "welcome");
        readers.push(r);
    }
    let mut fast = common::roomy_client(&server, "/ws/mixed/fast").await;
    assert_eq!(fast.read_json().await["type"], "welcome");

    // One large message at a time, read by every reader before the next:
    // they never hold more than one; the stalled client takes none.
    let content = "z".repeat(30_000);
    let mut sent = 0u64;
    while server.metric(DROPPED).await == 0 {
        assert!(
            sent < 4000,
            "no slow consumer was dropped after {sent} messages"
        );
        for _ in 0..16 {
            fast.send_text(&format!(r#"{{"type":"message","content":"{content}"}}"#))
                .await;
            sent += 1;
            assert_eq!(next_message(&mut fast).await, sent);
            for r in &mut readers {
                assert_eq!(next_message(r).await, sent, "a reader missed a message");
            }
        }
    }
    assert_eq!(server.metric(DROPPED).await, 1, "only the stalled client");

    // The stalled client, reading at last: what was in flight, then 1013.
    let (code, _) = slow.read_until_close().await;
    assert_eq!(code, 1013);

    // The others read on: the next message reaches every one of them.
    fast.send_text(r#"{"type":"message","content":"still here"}"#)
        .await;
    sent += 1;
    assert_eq!(next_message(&mut fast).await, sent);
    for r in &mut readers {
        assert_eq!(next_message(r).await, sent);
    }
    assert_eq!(server.metric(DROPPED).await, 1);
    server.shutdown().await.unwrap();
}
