//! One address cannot lock others out (issue 13, item 5): WebSockets and
//! TCP connections are capped per client address, joins are rated per
//! address, and the request rate is charged to the identity across its
//! connections. Clients use several loopback addresses (127.0.0.2, .3):
//! on Linux all of 127/8 reaches the server on 127.0.0.1.

mod common;

use std::time::Duration;

use common::{Client, RawWs, Server, config, connect_from, http_from, ws_from};
use serde_json::json;
use tokio::io::AsyncWriteExt;

const HEALTH: &[u8] = b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";

/// Retries `attempt` until it returns `Some` (state the server changes
/// after an event the test cannot observe, like a socket it closed); the
/// deadline only bounds a failure.
async fn eventually<T, F: std::future::Future<Output = Option<T>>>(
    what: &str,
    mut attempt: impl FnMut() -> F,
) -> T {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(done) = attempt().await {
            return done;
        }
        assert!(tokio::time::Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn welcomed(mut ws: RawWs) -> RawWs {
    assert_eq!(ws.read_json().await["type"], "welcome");
    ws
}

#[tokio::test]
async fn an_address_at_its_websocket_cap_gets_429_while_another_is_admitted() {
    let server = Server::start(config().max_connections_per_address(2usize)).await;
    let a = server.addr;
    let first = welcomed(ws_from(a, "127.0.0.2", "/ws/cap/a1", &[]).await.unwrap()).await;
    let _second = welcomed(ws_from(a, "127.0.0.2", "/ws/cap/a2", &[]).await.unwrap()).await;

    let refused = ws_from(a, "127.0.0.2", "/ws/cap/a3", &[])
        .await
        .err()
        .unwrap();
    let body = refused.assert_json_error(429);
    assert_eq!(body["error"], "too_many_connections");
    assert!(body["message"].as_str().unwrap().contains('2'), "{body}");
    // The preflight answers what the upgrade would get.
    let preflight = format!(
        "GET {} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        common::with_claim("/ws/cap/a3")
    );
    let asked = http_from(a, "127.0.0.2", preflight.as_bytes()).await;
    assert_eq!(
        asked.assert_json_error(429)["error"],
        "too_many_connections"
    );
    assert_eq!(server.metric("roomcast_connections_refused_total").await, 1);

    // Another address is admitted, and asks with a 200.
    let _other = welcomed(ws_from(a, "127.0.0.3", "/ws/cap/b1", &[]).await.unwrap()).await;
    assert_eq!(
        http_from(a, "127.0.0.3", preflight.as_bytes()).await.status,
        200
    );

    // Closing one gives its slot back once the session has ended.
    drop(first);
    server.wait_metric("roomcast_connections", 2).await;
    let _again = welcomed(ws_from(a, "127.0.0.2", "/ws/cap/a1", &[]).await.unwrap()).await;
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn half_sent_requests_from_one_address_fill_only_its_own_http_cap() {
    let server = Server::start(config().max_http_per_address(4usize)).await;
    let a = server.addr;
    let mut slow = Vec::new();
    for _ in 0..4 {
        let mut s = connect_from(a, "127.0.0.2").await;
        s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow:")
            .await
            .unwrap();
        slow.push(s);
    }
    // The accept loop takes connections in order: the fifth finds the
    // address full and gets the canned answer without sending anything.
    let mut fifth = connect_from(a, "127.0.0.2").await;
    let refused = tokio::time::timeout(
        Duration::from_secs(10),
        common::read_response(&mut fifth, false),
    )
    .await
    .expect("the refusal is written at once");
    assert_eq!(
        refused.assert_json_error(429)["error"],
        "too_many_connections"
    );

    // Everyone else is served.
    assert_eq!(http_from(a, "127.0.0.3", HEALTH).await.status, 200);
    assert_eq!(server.get("/health").await.status, 200);

    // One slow connection closed: its address may connect again.
    drop(slow.pop());
    eventually("127.0.0.2 gets a slot back", || async {
        let res = http_from(a, "127.0.0.2", HEALTH).await;
        (res.status == 200).then_some(())
    })
    .await;
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_websocket_session_keeps_counting_against_its_connections_address() {
    let server = Server::start(config().max_http_per_address(2usize)).await;
    let a = server.addr;
    let ws = welcomed(ws_from(a, "127.0.0.2", "/ws/http/ann", &[]).await.unwrap()).await;
    let mut slow = connect_from(a, "127.0.0.2").await;
    slow.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow:")
        .await
        .unwrap();
    // The session is still one of the address's two connections.
    let mut third = connect_from(a, "127.0.0.2").await;
    let refused = common::read_response(&mut third, false).await;
    assert_eq!(refused.status, 429);

    drop(ws);
    server.wait_metric("roomcast_connections", 0).await;
    eventually("the session's connection slot is given back", || async {
        let res = http_from(a, "127.0.0.2", HEALTH).await;
        (res.status == 200).then_some(())
    })
    .await;
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn reconnecting_does_not_reset_the_message_rate() {
    // One request per second with a burst of 20: a fresh budget would take
    // 20 requests at once; the identity's own has at most what refilled.
    let server = Server::start(config().rate(1u32).rate_burst(20u32)).await;

    async fn pings(client: &mut Client, n: usize) -> (usize, usize) {
        for _ in 0..n {
            client.send_json(json!({"type": "ping"})).await;
        }
        let (mut pongs, mut refused) = (0, 0);
        while pongs + refused < n {
            let event = client.recv_json().await;
            match event["type"].as_str() {
                Some("pong") => pongs += 1,
                Some("error") if event["code"] == "rate_limited" => refused += 1,
                Some("error") => panic!("unexpected {event}"),
                _ => {} // room traffic: joins and leaves
            }
        }
        (pongs, refused)
    }

    let (mut ann, _) = server.join("rate", "ann").await;
    let (pongs, _) = pings(&mut ann, 20).await;
    assert!(pongs >= 20 - 1, "the burst is taken at once ({pongs})");
    ann.close().await;

    // The same identity (the same claim) on a new connection.
    let (mut again, _) = server.join("rate", "ann").await;
    let (pongs, refused) = pings(&mut again, 19).await;
    assert!(
        refused > 0,
        "reconnecting bought a new burst ({pongs} pongs)"
    );

    // Someone else has a budget of their own.
    let (mut bob, _) = server.join("rate", "bob").await;
    assert_eq!(pings(&mut bob, 19).await, (19, 0));
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn upgrades_past_the_join_rate_get_429_with_retry_after() {
    let server = Server::start(config().joins_per_minute(3u32)).await;
    let a = server.addr;
    let preflight = |user: &str| {
        format!(
            "GET {} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            common::with_claim(&format!("/ws/joins/{user}"))
        )
    };
    // Asking is not joining: it takes nothing from the budget.
    assert_eq!(
        http_from(a, "127.0.0.2", preflight("u0").as_bytes())
            .await
            .status,
        200
    );
    let mut open = Vec::new();
    for user in ["u1", "u2", "u3"] {
        let path = format!("/ws/joins/{user}");
        open.push(welcomed(ws_from(a, "127.0.0.2", &path, &[]).await.unwrap()).await);
    }
    let refused = ws_from(a, "127.0.0.2", "/ws/joins/u4", &[])
        .await
        .err()
        .unwrap();
    assert_eq!(refused.assert_json_error(429)["error"], "rate_limited");
    let retry: u64 = refused.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=20).contains(&retry), "one join every 20 s: {retry}");
    let asked = http_from(a, "127.0.0.2", preflight("u4").as_bytes()).await;
    assert_eq!(asked.assert_json_error(429)["error"], "rate_limited");
    assert!(asked.header("retry-after").is_some());

    // Another address joins.
    welcomed(ws_from(a, "127.0.0.3", "/ws/joins/v1", &[]).await.unwrap()).await;
    server.shutdown().await.unwrap();
}

/// A page elsewhere that opens sockets to this server (its visitors'
/// browsers send its `Origin`) is refused before the upgrade is charged:
/// it cannot spend the join budget of its visitors' addresses.
#[tokio::test]
async fn an_upgrade_from_a_page_elsewhere_takes_nothing_from_the_join_budget() {
    let server = Server::start(config().joins_per_minute(3u32)).await;
    let a = server.addr;
    let elsewhere = [("Origin", "https://evil.example")];
    for _ in 0..5 {
        let refused = ws_from(a, "127.0.0.2", "/ws/origins/u0", &elsewhere)
            .await
            .err()
            .unwrap();
        assert_eq!(
            refused.assert_json_error(403)["error"],
            "origin_not_allowed"
        );
    }
    for user in ["u1", "u2", "u3"] {
        let path = format!("/ws/origins/{user}");
        welcomed(ws_from(a, "127.0.0.2", &path, &[]).await.unwrap()).await;
    }
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn preflights_have_a_budget_of_their_own_at_the_join_rate() {
    let server = Server::start(config().joins_per_minute(3u32)).await;
    let a = server.addr;
    let preflight = format!(
        "GET {} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        common::with_claim("/ws/asks/u1")
    );
    // Each asks the hub whether the name is free: an address cannot loop it.
    for _ in 0..3 {
        assert_eq!(
            http_from(a, "127.0.0.2", preflight.as_bytes()).await.status,
            200
        );
    }
    let refused = http_from(a, "127.0.0.2", preflight.as_bytes()).await;
    let body = refused.assert_json_error(429);
    assert_eq!(body["error"], "rate_limited");
    assert!(
        body["message"].as_str().unwrap().contains("preflights"),
        "{body}"
    );
    assert!(refused.header("retry-after").is_some());
    // They took no join: the address still joins three times.
    for user in ["u1", "u2", "u3"] {
        let path = format!("/ws/asks/{user}");
        welcomed(ws_from(a, "127.0.0.2", &path, &[]).await.unwrap()).await;
    }
    // Another address asks with its own budget.
    assert_eq!(
        http_from(a, "127.0.0.3", preflight.as_bytes()).await.status,
        200
    );
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn behind_a_trusted_proxy_the_forwarded_address_is_counted() {
    // Every connection comes from the proxy (here 127.0.0.1): the peer
    // cap is ignored, the forwarded client is what counts.
    let server = Server::start(
        config()
            .trust_proxy(true)
            .max_connections_per_address(1usize)
            .max_http_per_address(1usize),
    )
    .await;
    let a = server.addr;
    let from = |ip: &'static str| [("X-Forwarded-For", ip)];
    let _one = welcomed(
        ws_from(a, "127.0.0.1", "/ws/proxy/ann", &from("203.0.113.7"))
            .await
            .unwrap(),
    )
    .await;
    let refused = ws_from(a, "127.0.0.1", "/ws/proxy/bob", &from("203.0.113.7"))
        .await
        .err()
        .unwrap();
    assert_eq!(
        refused.assert_json_error(429)["error"],
        "too_many_connections"
    );
    // A client's own earlier entries do not count: the proxy's does.
    let refused = ws_from(
        a,
        "127.0.0.1",
        "/ws/proxy/bob",
        &from("198.51.100.1, 203.0.113.7"),
    )
    .await
    .err()
    .unwrap();
    assert_eq!(refused.status, 429);
    let _other = welcomed(
        ws_from(a, "127.0.0.1", "/ws/proxy/bob", &from("203.0.113.8"))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(server.get("/health").await.status, 200);
    server.shutdown().await.unwrap();
}
