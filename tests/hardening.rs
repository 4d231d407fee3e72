//! What no client may do to the server or to a room (issue 13): protocol
//! nits that let a client hold or confuse the server, names that lie,
//! retries that duplicate, bounds on what grows.

mod common;

use std::time::Duration;

use common::{RawWs, Server, config};
use tokio::io::AsyncWriteExt;

#[tokio::test]
async fn a_close_with_a_code_that_must_never_be_sent_is_answered_1002() {
    let server = Server::start(config()).await;
    for (code, answer) in [
        (1005u16, 1002u16),
        (999, 1002),
        (2999, 1002),
        (5000, 1002),
        (4000, 1000),
    ] {
        let stream = tokio::net::TcpStream::connect(server.addr).await.unwrap();
        let mut ws = RawWs::handshake(stream, server.addr, "/ws/close/ann").await;
        assert_eq!(ws.read_json().await["type"], "welcome");
        ws.send_frame(0x88, &code.to_be_bytes(), true).await;
        loop {
            let f = ws.read_frame().await;
            if f.opcode == 8 {
                assert_eq!(f.close_code(), Some(answer), "a close with {code}");
                break;
            }
        }
    }
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn http_11_needs_exactly_one_host() {
    let server = Server::start(config()).await;
    for request in [
        "GET /health HTTP/1.1\r\nConnection: close\r\n\r\n",
        "GET /health HTTP/1.1\r\nHost: a\r\nHost: b\r\nConnection: close\r\n\r\n",
    ] {
        let res = common::http_raw(server.addr, request.as_bytes(), false).await;
        assert_eq!(res.status, 400, "{request:?}");
    }
    let one = "GET /health HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n";
    assert_eq!(
        common::http_raw(server.addr, one.as_bytes(), false)
            .await
            .status,
        200
    );
    // HTTP/1.0 has no such rule.
    let old = "GET /health HTTP/1.0\r\n\r\n";
    assert_eq!(
        common::http_raw(server.addr, old.as_bytes(), false)
            .await
            .status,
        200
    );
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn shutdown_does_not_wait_for_a_request_that_never_finished_its_head() {
    // A grace far longer than the test's bound: if shutdown waited for the
    // half-sent request, `shutdown()` would fail.
    let server = Server::start(config().shutdown_grace(Duration::from_secs(120))).await;
    let mut slow = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    slow.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow:")
        .await
        .unwrap();
    // The server has the partial head (a request on another connection
    // orders after it on the server's side).
    assert_eq!(server.get("/health").await.status, 200);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn names_with_invisible_format_characters_are_refused_before_the_upgrade() {
    let server = Server::start(config()).await;
    for (room, user) in [
        ("lobby", "%E2%80%AEnnA"), // U+202E: shows as "Ann"
        ("lobby", "ann%E2%80%8B"), // U+200B zero width space
        ("lobby", "%EF%BB%BFann"), // BOM
        ("lob%E2%81%A6by", "ann"), // U+2066 isolate in a room name
    ] {
        let res = server.get(&format!("/ws/{room}/{user}")).await;
        let body = res.assert_json_error(400);
        assert!(
            body["message"]
                .as_str()
                .unwrap()
                .contains("format characters"),
            "{body}"
        );
    }
    // A joiner between visible characters is real text.
    let res = server
        .get("/ws/lobby/%F0%9F%91%A9%E2%80%8D%F0%9F%92%BB")
        .await;
    assert_eq!(res.status, 200, "{}", res.text());
    server.shutdown().await.unwrap();
}

#[tokio::test]
#[cfg(feature = "sqlite")]
async fn the_rooms_recent_history_stays_within_its_memory_budget() {
    let server = Server::start(
        config()
            .store(roomcast::store::StoreKind::Sqlite)
            .rate(0u32)
            .history_memory_bytes(1usize << 20),
    )
    .await;
    let big = "😀".repeat(4000); // 16 000 bytes a message
    for room in ["heavy-a", "heavy-b"] {
        let (mut ann, _) = server.join(room, "ann").await;
        ann.expect("join").await;
        for _ in 0..150 {
            ann.post(&big).await;
        }
    }
    // 4.8 MB posted; memory comes back under 1 MiB.
    common::eventually("history in memory is within its budget", async || {
        server.metric("roomcast_history_bytes").await <= 1 << 20
    })
    .await;
    // Nothing is lost: the store still has every message.
    let page = server
        .get("/api/rooms/heavy-a/messages?limit=100")
        .await
        .json();
    assert_eq!(page["messages"].as_array().unwrap().len(), 100);
    assert_eq!(page["has_more"], true);
    let first = server
        .get("/api/rooms/heavy-a/messages?before=2")
        .await
        .json();
    assert_eq!(first["messages"][0]["seq"], 1);
    // And a resume from the start is still whole (read from the store).
    let mut c = server.ws("/ws/heavy-b/bob?after=140").await;
    let w = c.expect("welcome").await;
    assert_eq!(w["history"].as_array().unwrap().len(), 10);
    assert_eq!(w["gap"], false);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_start_up_failure_exits_non_zero_before_saying_it_listens() {
    let dir = common::TempDir::new("bad-start");
    for args in [
        vec!["--data-dir", "/proc/roomcast-no-such-place"],
        vec![
            "--store",
            "memory",
            "--uploads-dir",
            "/proc/roomcast-no-uploads",
        ],
    ] {
        let (code, stdout, stderr) = common::Binary::run_to_end(dir.path(), &args);
        assert_eq!(code, Some(1), "{args:?}: {stderr}");
        assert!(
            !stdout.contains("listening"),
            "{args:?} said it listens: {stdout}"
        );
        assert!(
            stderr.contains("cannot be created") || stderr.contains("not usable"),
            "{stderr}"
        );
    }
}

#[tokio::test]
async fn static_dir_files_are_streamed_whatever_their_size() {
    // Over the 32 MiB a `--static-dir` file used to be read whole into
    // memory for (and past which it was not served at all).
    let root = common::TempDir::new("static-big");
    let dir = root.path().join("static");
    std::fs::create_dir_all(&dir).unwrap();
    let size = 40usize << 20;
    let content: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
    std::fs::write(dir.join("big.bin"), &content).unwrap();
    let server = Server::start(config().static_dir(Some(dir))).await;

    let res = server.get("/static/big.bin").await;
    assert_eq!(res.status, 200);
    assert_eq!(
        res.header("content-length"),
        Some(size.to_string().as_str())
    );
    assert!(res.body == content, "the whole file, byte for byte");

    let head = server.request("HEAD", "/static/big.bin", &[]).await;
    assert_eq!(head.status, 200);
    assert_eq!(
        head.header("content-length"),
        Some(size.to_string().as_str())
    );
    assert!(head.body.is_empty());

    // Revalidation still answers 304 without a body.
    let etag = res.header("etag").unwrap().to_owned();
    let again = server
        .request("GET", "/static/big.bin", &[("If-None-Match", &etag)])
        .await;
    assert_eq!(again.status, 304);
    server.shutdown().await.unwrap();
}

/// The resident memory of process `pid`, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[tokio::test]
async fn a_large_frame_leaves_no_lasting_cost_on_its_connection() {
    use tokio_tungstenite::tungstenite::Message;
    let dir = common::TempDir::new("big-frames");
    let no_limits = [
        "--store",
        "memory",
        "--rate",
        "0",
        "--joins-per-minute",
        "0",
        "--max-connections-per-address",
        "0",
        "--max-http-per-address",
        "0",
    ];
    let bin = common::Binary::start(dir.path(), &no_limits);
    let pid = bin.child.id();
    // Each connection sends one 60 KB frame (a message over the length
    // limit: refused, but read whole) and stays open.
    let big = format!(r#"{{"type":"message","content":"{}"}}"#, "x".repeat(60_000));
    let mut open = Vec::new();
    let connect = async |n: usize, open: &mut Vec<common::Client>| {
        for _ in 0..n {
            let i = open.len();
            let (mut c, _) = bin.join("big", &format!("u{i}")).await;
            c.send(Message::text(big.clone())).await;
            assert_eq!(c.skip_to("error").await["code"], "too_long");
            open.push(c);
        }
    };
    connect(50, &mut open).await; // the allocator's working set
    let before = rss_kib(pid);
    connect(300, &mut open).await;
    let per_connection = rss_kib(pid).saturating_sub(before) / 300;
    // An idle connection costs 10-13 KiB; one that kept its 60 KB read
    // buffer, over 70.
    assert!(
        per_connection < 30,
        "{per_connection} KiB per connection after one large frame"
    );
    bin.kill9();
}
