//! What the Redis backbone costs: one room, one sender, `RECEIVERS`
//! listeners, measured first on a single instance, then on two instances
//! sharing Redis (sender on the first, listeners split over both).
//!
//! Lockstep: the sender waits for its own echo before the next post
//! (latency). Burst: it sends every message at once and we time until every
//! listener has all of them (throughput).
//!
//! ```sh
//! cargo run --release --features redis --example redis_cost            # Redis at 127.0.0.1:6379
//! REDIS_URL=redis://host:6379 cargo run --release --features redis --example redis_cost
//! ```

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;

const RECEIVERS: usize = 50;
const LOCKSTEP: usize = 1000;
const BURST: usize = 2000;
/// Senders in the burst (each sends BURST / SENDERS).
const SENDERS: usize = 10;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A running instance: its address and how to stop it gracefully (so it
/// removes itself from Redis).
struct Instance {
    addr: std::net::SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl Instance {
    async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}

async fn start(config: roomcast::Config) -> Instance {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let shutdown = async move {
            let _ = stopped.await;
        };
        if let Err(e) = roomcast::serve(listener, config, shutdown).await {
            eprintln!("serve: {e}");
            std::process::exit(1);
        }
    });
    // Wait until /health is 200 (the backbone connected).
    loop {
        let res = tokio::net::TcpStream::connect(addr).await;
        if let Ok(mut s) = res {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let _ = s
                .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                .await;
            let mut out = Vec::new();
            let _ = s.read_to_end(&mut out).await;
            if out.starts_with(b"HTTP/1.1 200") {
                return Instance { addr, stop, task };
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn next_event(ws: &mut Ws) -> Value {
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => return serde_json::from_str(&t).expect("JSON"),
            Some(Ok(_)) => continue,
            other => panic!("connection ended: {other:?}"),
        }
    }
}

async fn connect(addr: std::net::SocketAddr, room: &str, user: &str) -> Ws {
    let url = format!("ws://{addr}/ws/{room}/{user}");
    let (mut ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("connect");
    assert_eq!(next_event(&mut ws).await["type"], "welcome");
    ws
}

/// Reads until `n` messages arrived.
async fn drain_messages(mut ws: Ws, n: usize) -> Ws {
    let mut got = 0;
    while got < n {
        if next_event(&mut ws).await["type"] == "message" {
            got += 1;
        }
    }
    ws
}

async fn run(label: &str, addrs: &[std::net::SocketAddr]) {
    let room = format!(
        "cost-{}-{}",
        std::process::id(),
        addrs.len() * 100 + label.len()
    );
    let mut sender = connect(addrs[0], &room, "sender").await;
    let mut listeners = Vec::new();
    for i in 0..RECEIVERS {
        listeners.push(connect(addrs[i % addrs.len()], &room, &format!("l{i}")).await);
    }
    // Let the join events settle: a ping's pong comes after them.
    sender
        .send(Message::text(json!({"type": "ping"}).to_string()))
        .await
        .unwrap();
    while next_event(&mut sender).await["type"] != "pong" {}

    let mut latencies = Vec::with_capacity(LOCKSTEP);
    for i in 0..LOCKSTEP {
        let t = Instant::now();
        let body =
            json!({"type": "message", "content": format!("m{i}"), "client_id": format!("c{i}")});
        sender.send(Message::text(body.to_string())).await.unwrap();
        while next_event(&mut sender).await["client_id"] != format!("c{i}") {}
        latencies.push(t.elapsed());
    }
    let listeners: Vec<Ws> =
        futures_util::future::join_all(listeners.into_iter().map(|l| drain_messages(l, LOCKSTEP)))
            .await;
    latencies.sort();
    let p50 = latencies[LOCKSTEP / 2];
    let p99 = latencies[LOCKSTEP * 99 / 100];

    let mut senders = vec![sender];
    for i in 1..SENDERS {
        senders.push(connect(addrs[i % addrs.len()], &room, &format!("s{i}")).await);
    }
    // The new senders' joins reach the listeners first; skip them.
    let listeners: Vec<Ws> =
        futures_util::future::join_all(listeners.into_iter().map(|mut l| async move {
            let mut joins = 0;
            while joins < SENDERS - 1 {
                if next_event(&mut l).await["type"] == "join" {
                    joins += 1;
                }
            }
            l
        }))
        .await;
    let t = Instant::now();
    let receive = futures_util::future::join_all(
        listeners
            .into_iter()
            .map(|l| tokio::spawn(drain_messages(l, BURST))),
    );
    let send =
        futures_util::future::join_all(senders.iter_mut().enumerate().map(|(s, ws)| async move {
            for i in 0..BURST / SENDERS {
                let body = json!({"type": "message", "content": format!("b{s}-{i}")});
                ws.send(Message::text(body.to_string())).await.unwrap();
            }
        }));
    let (_, _) = tokio::join!(send, receive);
    let elapsed = t.elapsed();
    println!(
        "{label:<36} lockstep post→echo p50 {p50:>8.1?} p99 {p99:>8.1?} | {SENDERS} senders, {BURST} msgs to {RECEIVERS} listeners: {:>6.0} msgs/s ({:.0} frames/s out)",
        BURST as f64 / elapsed.as_secs_f64(),
        (BURST * RECEIVERS) as f64 / elapsed.as_secs_f64()
    );
}

#[tokio::main]
async fn main() {
    let uploads = std::env::temp_dir().join(format!("roomcast-cost-{}", std::process::id()));
    // No rate limit, no per-address limits (every client is on 127.0.0.1),
    // and queues deep enough that senders, which do not read during the
    // burst, are not dropped as slow consumers.
    let base = roomcast::Config::default()
        .rate(0u32)
        .max_connections_per_address(0usize)
        .max_http_per_address(0usize)
        .joins_per_minute(0u32)
        .outbound_queue(100_000usize)
        .uploads_dir(uploads.clone());
    let single = start(base.clone()).await;
    run("single instance", &[single.addr]).await;
    single.stop().await;

    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let prefix = format!("roomcast-cost-{}", std::process::id());
    let redis = base.redis_url(Some(url)).redis_prefix(prefix);
    let a = start(redis.clone()).await;
    run("redis, 1 instance", &[a.addr]).await;
    let b = start(redis).await;
    run("redis, 2 instances (listeners split)", &[a.addr, b.addr]).await;
    a.stop().await;
    b.stop().await;
    let _ = std::fs::remove_dir_all(uploads);
    println!(
        "(the rooms' keys under roomcast-cost-{}:* expire 5 min after they empty)",
        std::process::id()
    );
}
