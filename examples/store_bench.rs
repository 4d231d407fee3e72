//! What the durable store costs: changes committed per second for each
//! `--fsync` policy, how soon a change is on disk when the store is idle,
//! and start time and memory of the real binary over a large store.
//!
//! ```text
//! cargo run --release --example store_bench -- throughput [--store sqlite|postgres://...] [--posts N]
//! cargo run --release --example store_bench -- window [--store ...]
//! cargo run --release --example store_bench -- seed --dir D --messages 1000000 --rooms 1000
//! cargo run --release --example store_bench -- start --dir D [--join 100]
//! ```
//!
//! `throughput` and `window` drive the hub and its store in this process
//! (no sockets: what is measured is the writer). `start` runs the release
//! binary on a seeded directory and reports the time until `/health`
//! answers and its resident memory before and after rooms are joined.

use std::io::{BufRead, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use roomcast::hub::{Hub, HubConfig, HubParts, RoomName, UserName};
use roomcast::metrics::Metrics;
use roomcast::store::{Fsync, Retention, StoreKind, StoreSettings};

struct Args {
    mode: String,
    store: StoreKind,
    dir: PathBuf,
    posts: usize,
    messages: usize,
    rooms: usize,
    join: usize,
}

fn args() -> Args {
    let mut it = std::env::args().skip(1);
    let mut a = Args {
        mode: it.next().unwrap_or_default(),
        store: StoreKind::Sqlite,
        dir: std::env::temp_dir().join(format!("roomcast-store-bench-{}", std::process::id())),
        posts: 200_000,
        messages: 1_000_000,
        rooms: 1000,
        join: 100,
    };
    while let Some(flag) = it.next() {
        let value = it.next().unwrap_or_default();
        match flag.as_str() {
            "--store" => a.store = value.parse().expect("--store"),
            "--dir" => a.dir = PathBuf::from(value),
            "--posts" => a.posts = value.parse().expect("--posts"),
            "--messages" => a.messages = value.parse().expect("--messages"),
            "--rooms" => a.rooms = value.parse().expect("--rooms"),
            "--join" => a.join = value.parse().expect("--join"),
            other => panic!("unknown option {other}; see the file's header"),
        }
    }
    a
}

async fn hub(a: &Args, fsync: Fsync, dir: &std::path::Path) -> Hub {
    let metrics = Arc::new(Metrics::default());
    let settings = StoreSettings {
        kind: a.store.clone(),
        data_dir: dir.to_path_buf(),
        fsync,
        retention: Retention::default(),
        queue: 16_384,
        max_mb: None,
    };
    let store = roomcast::store::open(&settings, Arc::clone(&metrics))
        .await
        .expect("open the store");
    Hub::from_parts(HubParts {
        config: HubConfig {
            outbox_frames: 1 << 20,
            outbox_bytes: 1 << 30,
            ..HubConfig::default()
        },
        metrics,
        store,
    })
}

/// Joins one member per room and waits for its welcome (the room loads).
async fn members(hub: &Hub, rooms: usize, tag: &str) -> Vec<roomcast::hub::Member> {
    let mut out = Vec::new();
    for r in 0..rooms {
        let room = RoomName::parse(&format!("{tag}-{r}")).unwrap();
        let mut m = hub
            .join(room, UserName::parse("bench").unwrap(), None)
            .unwrap();
        m.welcomed().await;
        out.push(m);
    }
    out
}

/// Posts `n` messages round-robin over `members`; a refused post (the
/// writer's queue is full) waits for the store to catch up and is retried.
/// Returns (seconds until everything is committed, refusals).
async fn post_all(hub: &Hub, members: &[roomcast::hub::Member], n: usize) -> (f64, u64) {
    let store = hub.store().expect("a durable store");
    let text = "x".repeat(64);
    let mut refused = 0u64;
    let start = Instant::now();
    for i in 0..n {
        let m = &members[i % members.len()];
        while m.post(text.clone(), None, None).await.is_err() {
            refused += 1;
            store.flush().await;
        }
        // Drop what the member was sent, as its writer would.
        let mut batch = Vec::new();
        if !m.outbox().is_empty() {
            m.outbox().next_batch(&mut batch).await;
        }
    }
    store.flush().await;
    (start.elapsed().as_secs_f64(), refused)
}

async fn throughput(a: &Args) {
    println!(
        "| --fsync | changes | seconds | committed changes/s | refusals (queue full, retried) | commits |"
    );
    println!("|---|---|---|---|---|---|");
    for fsync in [Fsync::Always, Fsync::Batch, Fsync::Off] {
        let dir = a.dir.join(format!("{fsync:?}"));
        let _ = std::fs::remove_dir_all(&dir);
        let hub = hub(a, fsync, &dir).await;
        let members = members(&hub, 10, "tp").await;
        // `always` commits one change per fsync: fewer posts, same rate.
        let n = if fsync == Fsync::Always {
            a.posts / 50
        } else {
            a.posts
        };
        let (secs, refused) = post_all(&hub, &members, n).await;
        let commits = hub.metrics().store_commits.get();
        println!(
            "| {fsync:?} | {n} | {secs:.2} | {:.0} | {refused} | {commits} |",
            n as f64 / secs
        );
        drop(members);
        hub.store().unwrap().stop().await;
        let _ = std::fs::remove_dir_all(&dir);
    }
}

async fn window(a: &Args) {
    let dir = a.dir.join("window");
    let _ = std::fs::remove_dir_all(&dir);
    let hub = hub(a, Fsync::Batch, &dir).await;
    let members = members(&hub, 1, "w").await;
    let store = hub.store().unwrap().clone();
    let mut took = Vec::new();
    for i in 0..500 {
        let start = Instant::now();
        members[0].post(format!("m{i}"), None, None).await.unwrap();
        store.flush().await;
        took.push(start.elapsed());
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    took.sort();
    let at = |q: f64| took[((took.len() - 1) as f64 * q) as usize].as_secs_f64() * 1e3;
    println!(
        "--fsync batch, idle store: a post is on disk {:.2} ms (p50), {:.2} ms (p99), {:.2} ms (max) after it is accepted",
        at(0.5),
        at(0.99),
        at(1.0)
    );
    store.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

async fn seed(a: &Args) {
    std::fs::create_dir_all(&a.dir).unwrap();
    let hub = hub(a, Fsync::Off, &a.dir).await;
    let members = members(&hub, a.rooms, "room").await;
    let (secs, _) = post_all(&hub, &members, a.messages).await;
    println!(
        "seeded {} messages in {} rooms under {} in {secs:.1} s",
        a.messages,
        a.rooms,
        a.dir.display()
    );
    hub.store().unwrap().stop().await;
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn http_get(addr: &str, path: &str) -> Option<String> {
    let mut s = TcpStream::connect(addr).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

/// A WebSocket handshake and the first frame's header (the welcome): what a
/// join costs the server (the room loads from the store).
fn join(addr: &str, room: &str) {
    let mut s = TcpStream::connect(addr).unwrap();
    write!(
        s,
        "GET /ws/{room}/reader HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    )
    .unwrap();
    let mut r = std::io::BufReader::new(s);
    let mut line = String::new();
    while r.read_line(&mut line).unwrap() > 2 {
        line.clear();
    }
    let mut head = [0u8; 2];
    r.read_exact(&mut head).unwrap();
}

fn start(a: &Args) {
    let bin = std::env::current_exe()
        .unwrap()
        .parent()
        .and_then(|p| p.parent())
        .map(|p| p.join("roomcast"))
        .expect("target dir");
    assert!(
        bin.exists(),
        "build the binary first: cargo build --release"
    );
    let t0 = Instant::now();
    let mut child = std::process::Command::new(&bin)
        .args(["--port", "0", "--data-dir"])
        .arg(&a.dir)
        .args(["--uploads-dir"])
        .arg(a.dir.join("uploads"))
        .stdout(std::process::Stdio::piped())
        .env("RUST_LOG", "warn")
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .trim()
        .trim_start_matches("listening on http://")
        .to_owned();
    while !http_get(&addr, "/health").is_some_and(|r| r.starts_with("HTTP/1.1 200")) {
        std::thread::sleep(Duration::from_millis(1));
    }
    let ready = t0.elapsed();
    let rss0 = rss_kib(child.id());
    let t1 = Instant::now();
    for r in 0..a.join {
        join(&addr, &format!("room-{r}"));
    }
    let joined = t1.elapsed();
    let rss1 = rss_kib(child.id());
    println!(
        "start to /health 200: {:.0} ms; RSS {:.1} MiB; {} rooms joined in {:.0} ms ({:.2} ms each); RSS then {:.1} MiB",
        ready.as_secs_f64() * 1e3,
        rss0 as f64 / 1024.0,
        a.join,
        joined.as_secs_f64() * 1e3,
        joined.as_secs_f64() * 1e3 / a.join.max(1) as f64,
        rss1 as f64 / 1024.0
    );
    let _ = child.kill();
    let _ = child.wait();
}

fn main() {
    let a = args();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    match a.mode.as_str() {
        "throughput" => rt.block_on(throughput(&a)),
        "window" => rt.block_on(window(&a)),
        "seed" => rt.block_on(seed(&a)),
        "start" => start(&a),
        _ => eprintln!(
            "usage: store_bench throughput|window|seed|start [options]; see the file's header"
        ),
    }
}
