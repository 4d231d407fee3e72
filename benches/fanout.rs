//! Fan-out, frame encoding and routing, with the naive ways beside the hub
//! in the same run so the ratios are measured under the same conditions.
//!
//! `cargo bench --bench fanout` (add a filter, e.g. `-- fanout/hub`).
//!
//! Every fan-out bench delivers one chat message to N real hub members (100
//! user names, each with N/100 connections, so joining stays cheap) and
//! then drains every member's outbox the way its writer would, so the
//! bounded queues never overflow. Time is per broadcast; criterion's
//! throughput line (`elem/s`) is deliveries per second.
//!
//! - `hub`: `Member::post`: the message is serialized once into a shared
//!   frame and each outbox gets a clone of the handle.
//! - `per_recipient`: the same message serialized with `serde_json::to_vec`
//!   and framed again for every member.
//! - `broadcast_task`: one `tokio::sync::broadcast` channel for the room and
//!   a task per member that receives the message, serializes and frames it
//!   for its own connection (what `examples/baseline_broadcast.rs` does).

use std::hint::black_box;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use futures_util::FutureExt;
use roomcast::hub::{Frame, Hub, HubConfig, Member, RoomName, UserName, frames};
use serde::Serialize;
use tokio::sync::{Notify, broadcast};

const SIZES: [usize; 5] = [1, 10, 100, 1_000, 10_000];
const CONTENT: &str = "hello everyone, the build is green again; merging in five minutes";

/// The `message` event as a naive server would build it for each recipient.
#[derive(Serialize)]
struct MessageEvent<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    message_id: &'a str,
    seq: u64,
    user: &'a str,
    content: &'a str,
    timestamp: &'a str,
    reactions: std::collections::BTreeMap<String, Vec<String>>,
}

/// What a naive server keeps per message before serializing it.
struct ChatMessage {
    id: String,
    seq: u64,
    user: String,
    content: String,
    timestamp: String,
}

impl ChatMessage {
    fn new(seq: u64) -> Self {
        Self {
            id: format!("{:016x}", seq),
            seq,
            user: "u0".into(),
            content: CONTENT.into(),
            timestamp: humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
        }
    }

    fn event(&self) -> MessageEvent<'_> {
        MessageEvent {
            kind: "message",
            message_id: &self.id,
            seq: self.seq,
            user: &self.user,
            content: &self.content,
            timestamp: &self.timestamp,
            reactions: Default::default(),
        }
    }
}

/// `serde_json::to_vec`, then a frame built around a copy of the JSON.
fn naive_frame(message: &ChatMessage) -> Frame {
    let json = serde_json::to_vec(&message.event()).expect("serializable");
    frames::text(std::str::from_utf8(&json).expect("serde_json writes UTF-8"))
}

/// Takes what a member's writer would take: everything queued.
fn drain(member: &Member, batch: &mut Vec<Frame>) {
    if !member.outbox().is_empty() {
        member.outbox().next_batch(batch).now_or_never();
        batch.clear();
    }
}

/// A hub with one room of `n` members, their queues drained.
fn room(n: usize) -> (Hub, Vec<Member>) {
    let hub = Hub::new(HubConfig {
        history: 64,
        ..HubConfig::default()
    });
    let name = RoomName::parse("bench").expect("valid room");
    let users: Vec<UserName> = (0..100)
        .map(|i| UserName::parse(&format!("u{i}")).expect("valid user"))
        .collect();
    let mut batch = Vec::new();
    let mut members = Vec::with_capacity(n);
    for i in 0..n {
        let m = hub
            .join(name.clone(), users[i % 100].clone(), None)
            .expect("room available");
        members.push(m);
        if i % 256 == 255 {
            members.iter().for_each(|m| drain(m, &mut batch));
        }
    }
    members.iter().for_each(|m| drain(m, &mut batch));
    (hub, members)
}

fn fanout(c: &mut Criterion) {
    let mut g = c.benchmark_group("fanout");
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    for n in SIZES {
        g.throughput(Throughput::Elements(n as u64));
        let (_hub, members) = room(n);
        let mut batch = Vec::with_capacity(16);

        g.bench_with_input(BenchmarkId::new("hub", n), &n, |b, _| {
            b.iter(|| {
                members[0]
                    .post(CONTENT.to_owned(), None, None)
                    .now_or_never()
                    .expect("a hub without a backbone posts at once")
                    .expect("accepted");
                members.iter().for_each(|m| drain(m, &mut batch));
            })
        });

        let mut seq = 0;
        g.bench_with_input(BenchmarkId::new("per_recipient", n), &n, |b, _| {
            b.iter(|| {
                seq += 1;
                let message = ChatMessage::new(seq);
                for m in &members {
                    m.send(naive_frame(&message));
                }
                members.iter().for_each(|m| drain(m, &mut batch));
            })
        });

        g.bench_with_input(BenchmarkId::new("broadcast_task", n), &n, |b, _| {
            broadcast_task(b, &members)
        });
    }
    g.finish();
}

/// One broadcast channel for the room, one task per member; each iteration
/// sends a message and waits until every task has framed and "written" it.
fn broadcast_task(b: &mut criterion::Bencher<'_>, members: &[Member]) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let (tx, _) = broadcast::channel::<Arc<ChatMessage>>(16);
    let left = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(Notify::new());
    let local = tokio::task::LocalSet::new();
    for m in members {
        let mut rx = tx.subscribe();
        let (left, done) = (Arc::clone(&left), Arc::clone(&done));
        let outbox = Arc::clone(m.outbox());
        local.spawn_local(async move {
            let mut batch = Vec::with_capacity(16);
            while let Ok(message) = rx.recv().await {
                outbox.push(naive_frame(&message));
                outbox.next_batch(&mut batch).await;
                batch.clear();
                if left.fetch_sub(1, Ordering::AcqRel) == 1 {
                    done.notify_one();
                }
            }
        });
    }
    let mut seq = 0;
    b.iter_custom(|iters| {
        local.block_on(&rt, async {
            let start = Instant::now();
            for _ in 0..iters {
                seq += 1;
                left.store(members.len(), Ordering::Release);
                let _ = tx.send(Arc::new(ChatMessage::new(seq)));
                done.notified().await;
            }
            start.elapsed()
        })
    });
    // Closing the channel ends every task.
    drop(tx);
    local.block_on(&rt, tokio::task::yield_now());
}

fn frame_encoding(c: &mut Criterion) {
    let mut g = c.benchmark_group("frame");
    let message = ChatMessage::new(42);
    let len = naive_frame(&message).len() as u64;
    g.throughput(Throughput::Bytes(len));
    g.bench_function("json_once", |b| {
        b.iter(|| frames::json(black_box(&message.event())))
    });
    g.bench_function("to_vec_then_frame", |b| {
        b.iter(|| naive_frame(black_box(&message)))
    });
    g.finish();
}

/// Routing through the public path: a keep-alive HTTP/1.1 connection to a
/// real server on 127.0.0.1, one request and its whole response per
/// iteration (hyper's parser, the router's match, the handler, the
/// loopback round trip).
fn router(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let dir = std::env::temp_dir().join(format!("roomcast-bench-{}", std::process::id()));
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind");
    let addr = listener.local_addr().expect("local addr");
    let config = roomcast::Config::default().uploads_dir(dir.clone());
    rt.spawn(roomcast::serve(listener, config, std::future::pending()));

    let mut conn = TcpStream::connect(addr).expect("connect");
    conn.set_nodelay(true).expect("nodelay");
    let mut buf = vec![0u8; 64 << 10];
    let mut roundtrip = |path: &str| {
        let req = format!("GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n");
        conn.write_all(req.as_bytes()).expect("write");
        let mut have = 0;
        loop {
            have += conn.read(&mut buf[have..]).expect("read");
            let Some(end) = buf[..have].windows(4).position(|w| w == b"\r\n\r\n") else {
                continue;
            };
            let head = std::str::from_utf8(&buf[..end]).expect("ascii head");
            let body = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse::<usize>().expect("length"))
                })
                .unwrap_or(0);
            if have >= end + 4 + body {
                return black_box(have);
            }
        }
    };

    let mut g = c.benchmark_group("router");
    g.sample_size(20).measurement_time(Duration::from_secs(2));
    g.bench_function("GET /health", |b| b.iter(|| roundtrip("/health")));
    g.bench_function("GET /nope (404)", |b| b.iter(|| roundtrip("/nope")));
    g.finish();
    drop(rt);
    let _ = std::fs::remove_dir_all(dir);
}

criterion_group!(benches, fanout, frame_encoding, router);
criterion_main!(benches);
