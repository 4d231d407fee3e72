//! Graceful shutdown: when the shutdown future resolves, every WebSocket is
//! closed with 1001, a response under way is sent whole, `serve` returns
//! `Ok`, and nothing new is accepted.

mod common;

use std::time::Duration;

use common::{Server, TIMEOUT, config, find, http_raw};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[tokio::test]
async fn shutdown_closes_every_websocket_with_1001_and_returns_ok() {
    let server = Server::start(config()).await;
    let (mut ann, _) = server.join("bye", "ann").await;
    ann.expect("join").await;
    let (mut bob, _) = server.join("elsewhere", "bob").await;
    bob.expect("join").await;
    let addr = server.addr;

    let (result, (), ()) = tokio::join!(
        server.shutdown(),
        ann.expect_close(1001),
        bob.expect_close(1001)
    );
    result.expect("serve returns Ok after a clean shutdown");

    // The listener is gone: new connections are refused.
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "the server still accepts connections after shutdown"
    );
}

#[tokio::test]
async fn shutdown_with_nothing_connected_returns_ok() {
    let server = Server::start(config()).await;
    assert_eq!(server.get("/health").await.status, 200);
    let addr = server.addr;
    server.shutdown().await.expect("serve returns Ok");
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

#[tokio::test]
async fn an_idle_keep_alive_connection_does_not_hold_up_shutdown() {
    // A grace period far beyond the helper's failure bound: if the idle
    // connection held shutdown for the whole grace, `shutdown()` would fail.
    let server = Server::start(config().shutdown_grace(std::time::Duration::from_secs(600))).await;
    // A keep-alive HTTP connection that has finished its request and stays open.
    let mut keep = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(
        &mut keep,
        format!("GET /health HTTP/1.1\r\nHost: {}\r\n\r\n", server.addr).as_bytes(),
    )
    .await
    .unwrap();
    let res = common::read_response(&mut keep, false).await;
    assert_eq!(res.status, 200);
    // hyper closes an idle connection at once on graceful shutdown, so serve
    // returns although this client never closes.
    server.shutdown().await.expect("serve returns Ok");
    let mut rest = Vec::new();
    let n = tokio::io::AsyncReadExt::read_to_end(&mut keep, &mut rest)
        .await
        .unwrap();
    assert_eq!(
        n, 0,
        "the idle connection was closed without another response"
    );
}

#[tokio::test]
async fn a_keep_alive_connection_halfway_through_its_next_head_does_not_hold_up_shutdown() {
    // The slowloris of a connection that has been answered before: hyper,
    // not the server, closes it at shutdown, and must do so at once.
    let server = Server::start(config().shutdown_grace(Duration::from_secs(600))).await;
    let mut keep = TcpStream::connect(server.addr).await.unwrap();
    let get = format!("GET /health HTTP/1.1\r\nHost: {}\r\n\r\n", server.addr);
    keep.write_all(get.as_bytes()).await.unwrap();
    assert_eq!(common::read_response(&mut keep, false).await.status, 200);
    keep.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow:")
        .await
        .unwrap();
    server.shutdown().await.expect("serve returns Ok");
    // Closed without another response: an end, or a reset if the server
    // had not yet read the half head when it closed.
    let mut rest = Vec::new();
    if let Ok(n) = keep.read_to_end(&mut rest).await {
        assert_eq!(n, 0, "answered a request it never finished");
    }
}

/// Larger than what loopback's socket buffers hold between them (Linux
/// grows a send buffer to 4 MiB by default; the client below keeps its
/// receive buffer small), so the server is still sending it at shutdown.
const DOWNLOAD: usize = 8 << 20;

#[tokio::test]
async fn a_download_under_way_at_shutdown_is_sent_whole_before_serve_returns() {
    // A grace beyond the helper's bound: `shutdown()` fails if serve sits
    // out the grace instead of returning once the body has gone.
    let server = Server::start(config().shutdown_grace(Duration::from_secs(30))).await;
    let mut file = b"\x89PNG\r\n\x1a\n".to_vec();
    file.extend((8..DOWNLOAD as u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8));
    let url = upload(&server, "big.png", &file).await;

    // A keep-alive download that takes its head and a first chunk of body,
    // then reads nothing until the server has begun to shut down.
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(64 << 10).expect("SO_RCVBUF");
    let mut download = socket.connect(server.addr).await.expect("connect");
    let get = format!("GET {url} HTTP/1.1\r\nHost: {}\r\n\r\n", server.addr);
    download.write_all(get.as_bytes()).await.unwrap();
    let mut got = Vec::new();
    let body_at = loop {
        let mut chunk = [0u8; 16 << 10];
        let n = download.read(&mut chunk).await.expect("read the response");
        assert!(n > 0, "closed before the first chunk of body");
        got.extend_from_slice(&chunk[..n]);
        match find(&got, b"\r\n\r\n") {
            Some(end) if got.len() > end + 4 => break end + 4,
            _ => {}
        }
    };
    let head = String::from_utf8_lossy(&got[..body_at]).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(
        head.contains(&format!("content-length: {DOWNLOAD}\r\n")),
        "{head}"
    );
    let mut body = got.split_off(body_at);

    let addr = server.addr;
    let stopping = tokio::spawn(server.shutdown());
    // The listener is closed just before the connections are told to stop.
    common::eventually("the listener closes", || async {
        TcpStream::connect(addr).await.is_err()
    })
    .await;
    // (Whether serve has returned by now is not asserted: where the
    // kernel's socket buffers take the whole body, it may rightly have.)

    while body.len() < DOWNLOAD {
        let mut chunk = vec![0u8; 64 << 10];
        let read = tokio::time::timeout(TIMEOUT, download.read(&mut chunk))
            .await
            .expect("the rest of the body in time");
        let n = read.unwrap_or_else(|e| panic!("cut {} bytes into the body: {e}", body.len()));
        assert!(
            n > 0,
            "closed {} bytes into the {DOWNLOAD}-byte body",
            body.len()
        );
        body.extend_from_slice(&chunk[..n]);
    }
    assert_eq!(body.len(), DOWNLOAD);
    assert!(body == file, "the file arrives intact");
    // Its response sent, the connection is closed, not kept alive.
    let mut rest = Vec::new();
    assert_eq!(download.read_to_end(&mut rest).await.unwrap(), 0);
    stopping
        .await
        .expect("the shutdown task")
        .expect("serve returns Ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stopped_reading_cannot_hold_shutdown_past_the_grace() {
    // The stuck client's writer waits on a full socket; shutdown gives it
    // the grace period and then returns anyway (within the helper's bound).
    let server = Server::start(
        config()
            .rate(0u32)
            .max_message_chars(40_000usize)
            .outbound_queue(4usize)
            .shutdown_grace(std::time::Duration::from_millis(500)),
    )
    .await;
    let _stuck = common::stalled_client(&server, "/ws/stuck/slow").await;
    let (mut fast, _) = server.join("stuck", "fast").await;
    fast.expect("join").await;
    common::flood_until_a_slow_consumer_is_dropped(&server, &mut fast).await;
    let (result, ()) = tokio::join!(server.shutdown(), fast.expect_close(1001));
    result.expect("serve returns Ok");
}

#[tokio::test]
async fn a_vanished_client_leaves_the_room() {
    let server = Server::start(config()).await;
    let (mut ann, _) = server.join("gone", "ann").await;
    ann.expect("join").await;
    let mut raw = common::RawWs::connect(server.addr, "/ws/gone/bob").await;
    assert_eq!(raw.read_json().await["type"], "welcome");
    assert_eq!(ann.expect("join").await["user"], "bob");
    drop(raw); // no close frame: the TCP connection just ends
    let leave = ann.expect("leave").await;
    assert_eq!(leave["user"], "bob");
    server.wait_metric("roomcast_connections", 1).await;
    server.shutdown().await.unwrap();
}

const BOUNDARY: &str = "roomcast-shutdown-test-41c9";

/// Uploads `data` as `filename`; its URL.
async fn upload(server: &Server, filename: &str, data: &[u8]) -> String {
    let mut body = format!(
        "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; \
         filename=\"{filename}\"\r\nContent-Type: application/octet-stream\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(data);
    body.extend_from_slice(format!("\r\n--{BOUNDARY}--\r\n").as_bytes());
    let mut request = format!(
        "POST /upload HTTP/1.1\r\nHost: {}\r\nContent-Type: multipart/form-data; \
         boundary={BOUNDARY}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        server.addr,
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(&body);
    let res = http_raw(server.addr, &request, false).await;
    assert_eq!(res.status, 200, "upload of {filename}: {}", res.text());
    res.json()["url"].as_str().expect("url").to_owned()
}
