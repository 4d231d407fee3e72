//! Graceful shutdown: when the shutdown future resolves, every WebSocket is
//! closed with 1001, `serve` returns `Ok`, and nothing new is accepted.

mod common;

use common::{Server, config};

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
