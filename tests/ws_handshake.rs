//! The WebSocket handshake at `/ws/{room}/{username}`: every bad request is
//! a JSON HTTP error and never becomes a WebSocket; good names arrive
//! percent-decoded.

mod common;

use common::{Server, config};

const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

fn upgrade_headers(version: &str, key: Option<&str>) -> Vec<(&'static str, String)> {
    let mut h = vec![
        ("Upgrade", "websocket".to_owned()),
        ("Connection", "Upgrade".to_owned()),
        ("Sec-WebSocket-Version", version.to_owned()),
    ];
    if let Some(k) = key {
        h.push(("Sec-WebSocket-Key", k.to_owned()));
    }
    h
}

async fn upgrade(
    server: &Server,
    path: &str,
    headers: &[(&'static str, String)],
) -> common::HttpResponse {
    let borrowed: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
    server.request("GET", path, &borrowed).await
}

#[tokio::test]
async fn a_valid_handshake_switches_protocols() {
    let server = Server::start(config()).await;
    let res = upgrade(&server, "/ws/room/ann", &upgrade_headers("13", Some(KEY))).await;
    assert_eq!(res.status, 101);
    assert_eq!(
        res.header("sec-websocket-accept"),
        Some("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
    );
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn header_tokens_are_matched_in_lists_and_any_case() {
    let server = Server::start(config()).await;
    // Firefox sends `Connection: keep-alive, Upgrade`.
    let headers = vec![
        ("Upgrade", "WebSocket".to_owned()),
        ("Connection", "keep-alive, Upgrade".to_owned()),
        ("Sec-WebSocket-Version", "13".to_owned()),
        ("Sec-WebSocket-Key", KEY.to_owned()),
    ];
    let res = upgrade(&server, "/ws/room/ann", &headers).await;
    assert_eq!(res.status, 101, "{}", res.text());
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn missing_upgrade_headers_are_400_and_a_plain_get_is_a_preflight() {
    let server = Server::start(config()).await;
    // No WebSocket header at all: every check runs, nothing is upgraded.
    let plain = server.get("/ws/room/ann").await;
    assert_eq!(plain.status, 200, "{}", plain.text());
    assert_eq!(plain.json()["status"], "ok");
    let bad = server.get("/ws/room/%20").await;
    bad.assert_json_error(400);

    let no_connection = vec![
        ("Upgrade", "websocket".to_owned()),
        ("Sec-WebSocket-Version", "13".to_owned()),
        ("Sec-WebSocket-Key", KEY.to_owned()),
    ];
    upgrade(&server, "/ws/room/ann", &no_connection)
        .await
        .assert_json_error(400);

    let no_upgrade = vec![
        ("Connection", "Upgrade".to_owned()),
        ("Sec-WebSocket-Version", "13".to_owned()),
        ("Sec-WebSocket-Key", KEY.to_owned()),
    ];
    upgrade(&server, "/ws/room/ann", &no_upgrade)
        .await
        .assert_json_error(400);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn other_versions_get_426_naming_13() {
    let server = Server::start(config()).await;
    for version in ["12", "8", ""] {
        let res = upgrade(
            &server,
            "/ws/room/ann",
            &upgrade_headers(version, Some(KEY)),
        )
        .await;
        res.assert_json_error(426);
        assert_eq!(
            res.header("sec-websocket-version"),
            Some("13"),
            "version {version:?}"
        );
    }
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn missing_or_malformed_keys_are_400() {
    let server = Server::start(config()).await;
    for key in [
        None,
        Some("short=="),
        Some("dGhlIHNhbXBsZSBub25jZQ"),
        Some(""),
        // 24 characters ending in "==", but not base64.
        Some("dGhlIHNhbXBsZS*ub25jZQ=="),
        Some("dGhlIHNhbXBsZSBub25j ZQ=="),
    ] {
        let res = upgrade(&server, "/ws/room/ann", &upgrade_headers("13", key)).await;
        res.assert_json_error(400);
    }
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn invalid_names_are_400_json_with_a_message() {
    let server = Server::start(config()).await;
    let long_room = "r".repeat(65);
    let long_user = "u".repeat(33);
    let paths = [
        "/ws/%20%20/ann".to_owned(),
        "/ws/room/%20".to_owned(),
        "/ws/%09/ann".to_owned(),
        format!("/ws/{long_room}/ann"),
        format!("/ws/room/{long_user}"),
        "/ws/ro%00om/ann".to_owned(),
        "/ws/room/an%0An".to_owned(),
        "/ws/room/an%1Bn".to_owned(),
        "/ws/a%2Fb/ann".to_owned(),
        "/ws/%FF/ann".to_owned(),
        "/ws/room/%C3".to_owned(),
    ];
    for path in &paths {
        let res = upgrade(&server, path, &upgrade_headers("13", Some(KEY))).await;
        assert_eq!(res.status, 400, "{path}: {}", res.text());
        res.assert_json_error(400);
    }
    // The limits are inclusive: 64 and 32 characters are fine.
    let ok = format!("/ws/{}/{}", "r".repeat(64), "u".repeat(32));
    let res = upgrade(&server, &ok, &upgrade_headers("13", Some(KEY))).await;
    assert_eq!(res.status, 101, "{}", res.text());
    // Characters, not bytes: 64 two-byte characters are a valid room.
    let wide = format!("/ws/{}/ann", "%C3%A9".repeat(64));
    let res = upgrade(&server, &wide, &upgrade_headers("13", Some(KEY))).await;
    assert_eq!(res.status, 101, "{}", res.text());
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_room_without_a_user_is_404() {
    let server = Server::start(config()).await;
    let res = upgrade(&server, "/ws/onlyroom", &upgrade_headers("13", Some(KEY))).await;
    res.assert_json_error(404);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_bad_after_is_400() {
    let server = Server::start(config()).await;
    for query in ["after=x", "after=-1", "after=", "after=1.5"] {
        let res = upgrade(
            &server,
            &format!("/ws/room/ann?{query}"),
            &upgrade_headers("13", Some(KEY)),
        )
        .await;
        res.assert_json_error(400);
    }
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn names_are_percent_decoded_and_trimmed() {
    let server = Server::start(config()).await;
    let mut c = server.ws("/ws/My%20Room/g%C3%A9n%C3%A9ral").await;
    let welcome = c.expect("welcome").await;
    assert_eq!(welcome["room"], "My Room");
    assert_eq!(welcome["user"], "général");
    let join = c.expect("join").await;
    assert_eq!(join["user"], "général");

    let (mut d, welcome) = server.join("%20%20My%20Room%20", "%20zoe").await;
    assert_eq!(
        welcome["room"], "My Room",
        "trimmed names are the same room"
    );
    assert_eq!(welcome["user"], "zoe");
    assert_eq!(welcome["online"], serde_json::json!(["général", "zoe"]));
    d.expect("join").await;
    assert_eq!(c.expect("join").await["user"], "zoe");
    server.shutdown().await.unwrap();
}
