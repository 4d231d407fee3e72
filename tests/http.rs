//! The plain HTTP API of PROTOCOL.md against a real server: health, the
//! page and its security headers, JSON errors, 405 with `Allow`, metrics
//! that move, and `/static` that never serves anything outside its directory.

mod common;

use common::{Server, TempDir, config};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn health_is_ok_json() {
    let server = Server::start(config()).await;
    let res = server.get("/health").await;
    assert_eq!(res.status, 200);
    assert!(
        res.header("content-type")
            .unwrap()
            .starts_with("application/json")
    );
    assert_eq!(res.json(), json!({"status": "ok"}));
    server.shutdown().await.unwrap();
}

fn assert_html_security_headers(res: &common::HttpResponse) {
    let csp = res.header("content-security-policy").expect("CSP header");
    assert!(csp.contains("script-src 'self'"), "CSP: {csp}");
    assert!(
        !csp.contains("unsafe-inline"),
        "CSP must not allow inline code: {csp}"
    );
    assert_eq!(res.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(res.header("referrer-policy"), Some("no-referrer"));
    assert!(res.header("content-type").unwrap().starts_with("text/html"));
}

#[tokio::test]
async fn index_page_has_security_headers_and_no_placeholder() {
    let server = Server::start(config()).await;
    let res = server.get("/").await;
    assert_eq!(res.status, 200);
    assert_html_security_headers(&res);
    assert!(
        !res.text().contains("{{config}}"),
        "placeholder left in the page"
    );
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn index_template_gets_the_config_escaped_for_an_attribute() {
    let templates = TempDir::new("templates");
    std::fs::write(
        templates.path().join("index.html"),
        r#"<!doctype html><meta name="roomcast-config" content="{{config}}"><p>hi"#,
    )
    .unwrap();
    let server = Server::start(
        config()
            .templates_dir(Some(templates.path().to_path_buf()))
            .max_message_chars(1234usize),
    )
    .await;
    let res = server.get("/").await;
    assert_eq!(res.status, 200);
    assert_html_security_headers(&res);
    let body = res.text();
    assert!(!body.contains("{{config}}"));
    // The JSON is HTML-escaped, so it cannot end the attribute early.
    assert!(
        body.contains("&quot;max_message_chars&quot;:1234"),
        "config not rendered: {body}"
    );
    assert!(
        !body.contains(r#""max_message_chars""#),
        "unescaped quotes: {body}"
    );

    let head = server.request("HEAD", "/", &[]).await;
    assert_eq!(head.status, 200);
    assert_html_security_headers(&head);
    assert!(head.body.is_empty());
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_missing_template_is_a_json_500_not_a_blank_page() {
    let empty = TempDir::new("no-templates");
    let server = Server::start(config().templates_dir(Some(empty.path().to_path_buf()))).await;
    let body = server.get("/").await.assert_json_error(500);
    assert_eq!(body["error"], "template_missing");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn unknown_paths_are_404_json() {
    let server = Server::start(config()).await;
    for path in [
        "/nope",
        "/health/x",
        "/ws",
        "/ws/",
        "/ws/onlyroom",
        "/ws/a/b/c",
        "/static/",
    ] {
        let body = server.get(path).await.assert_json_error(404);
        assert_eq!(body["error"], "not_found", "{path}");
    }
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn wrong_methods_are_405_with_allow() {
    let server = Server::start(config()).await;
    for (method, path, allow) in [
        ("POST", "/health", "GET, HEAD"),
        ("POST", "/", "GET, HEAD"),
        ("DELETE", "/static/x", "GET, HEAD"),
        ("POST", "/ws/a/b", "GET"),
        ("PUT", "/metrics", "GET"),
    ] {
        let res = server
            .request(method, path, &[("Content-Length", "0")])
            .await;
        res.assert_json_error(405);
        assert_eq!(res.header("allow"), Some(allow), "{method} {path}");
    }
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn metrics_are_prometheus_text_and_move() {
    let server = Server::start(config()).await;
    let res = server.get("/metrics").await;
    assert_eq!(res.status, 200);
    assert!(
        res.header("content-type")
            .unwrap()
            .starts_with("text/plain")
    );
    let text = res.text();
    for name in [
        "roomcast_connections",
        "roomcast_connections_total",
        "roomcast_rooms",
        "roomcast_frames_in_total",
        "roomcast_frames_out_total",
        "roomcast_bytes_out_total",
        "roomcast_messages_total",
        "roomcast_slow_consumers_dropped_total",
        "roomcast_reads_paused_total",
        "roomcast_store_behind_total",
        "roomcast_uploads_total",
    ] {
        assert!(text.contains(&format!("# TYPE {name} ")), "{name} missing");
        common::metric_value(&text, name);
    }
    assert_eq!(common::metric_value(&text, "roomcast_connections_total"), 0);

    let (mut ann, _) = server.join("metrics", "ann").await;
    ann.expect("join").await;
    assert_eq!(server.metric("roomcast_connections_total").await, 1);
    assert_eq!(server.metric("roomcast_connections").await, 1);
    assert_eq!(server.metric("roomcast_rooms").await, 1);
    assert_eq!(server.metric("roomcast_messages_total").await, 0);
    ann.post("counted").await;
    assert_eq!(server.metric("roomcast_messages_total").await, 1);
    assert!(server.metric("roomcast_frames_in_total").await >= 1);
    // welcome, join and the message went out.
    assert!(server.metric("roomcast_frames_out_total").await >= 3);
    assert!(server.metric("roomcast_bytes_out_total").await > 0);
    ann.close().await;
    server.shutdown().await.unwrap();
}

/// A static dir holding `app.js` and `sub/page.html`, next to a secret file
/// outside it.
struct StaticFixture {
    root: TempDir,
}

const SECRET: &str = "TOP-SECRET-do-not-serve";

impl StaticFixture {
    fn new() -> Self {
        let root = TempDir::new("static");
        let dir = root.path().join("static");
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        std::fs::write(dir.join("app.js"), "console.log('hi');\n").unwrap();
        std::fs::write(dir.join("sub/page.css"), "body{}\n").unwrap();
        std::fs::write(root.path().join("secret.txt"), SECRET).unwrap();
        Self { root }
    }

    fn static_dir(&self) -> std::path::PathBuf {
        self.root.path().join("static")
    }
}

#[tokio::test]
async fn static_traversal_attempts_are_all_404() {
    let fixture = StaticFixture::new();
    let server = Server::start(config().static_dir(Some(fixture.static_dir()))).await;
    // The fixture works, so the 404s below are not a misconfiguration.
    assert_eq!(server.get("/static/app.js").await.status, 200);

    let secret_abs = fixture.root.path().join("secret.txt");
    let secret_abs = secret_abs.to_str().unwrap();
    let encoded_abs = secret_abs.replace('/', "%2f");
    let attempts = [
        "/static/../secret.txt".to_owned(),
        "/static/sub/../../secret.txt".to_owned(),
        "/static/%2e%2e/secret.txt".to_owned(),
        "/static/%2E%2E%2Fsecret.txt".to_owned(),
        "/static/..%2fsecret.txt".to_owned(),
        "/static/sub%2f..%2f..%2fsecret.txt".to_owned(),
        "/static/..%5csecret.txt".to_owned(),
        "/static/sub%5c..%5c..%5csecret.txt".to_owned(),
        "/static/app.js%00".to_owned(),
        "/static/app.js%00.png".to_owned(),
        format!("/static/{encoded_abs}"),
        format!("/static/{secret_abs}"),
        "/static//etc/passwd".to_owned(),
        "/static/%2fetc%2fpasswd".to_owned(),
        "/static/sub//page.css".to_owned(),
        "/static/./app.js".to_owned(),
        "/static/%ff".to_owned(),
        "/static/sub".to_owned(),
    ];
    for path in &attempts {
        let res = server.get(path).await;
        assert_eq!(res.status, 404, "{path} answered {}", res.status);
        assert!(!res.text().contains(SECRET), "{path} leaked the secret");
        res.assert_json_error(404);
    }
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn static_files_have_type_etag_304_and_head() {
    let fixture = StaticFixture::new();
    let server = Server::start(config().static_dir(Some(fixture.static_dir()))).await;

    let res = server.get("/static/app.js").await;
    assert_eq!(res.status, 200);
    assert_eq!(res.text(), "console.log('hi');\n");
    let ctype = res.header("content-type").unwrap();
    assert!(ctype.contains("javascript"), "content-type {ctype}");
    assert!(res.header("cache-control").is_some());
    let etag = res.header("etag").expect("ETag").to_owned();
    assert!(etag.starts_with('"') && etag.ends_with('"'), "etag {etag}");

    let css = server.get("/static/sub/page.css").await;
    assert_eq!(css.status, 200);
    assert!(css.header("content-type").unwrap().starts_with("text/css"));

    let cached = server
        .request("GET", "/static/app.js", &[("If-None-Match", &etag)])
        .await;
    assert_eq!(cached.status, 304);
    assert!(cached.body.is_empty());
    assert_eq!(cached.header("etag"), Some(etag.as_str()));

    let listed = format!("\"other\", {etag}");
    let cached = server
        .request("GET", "/static/app.js", &[("If-None-Match", &listed)])
        .await;
    assert_eq!(cached.status, 304);

    let stale = server
        .request("GET", "/static/app.js", &[("If-None-Match", "\"stale\"")])
        .await;
    assert_eq!(stale.status, 200);
    assert_eq!(stale.text(), "console.log('hi');\n");

    // HEAD: same headers, no body. Read the raw connection to its end to
    // prove nothing follows the head.
    let head = server.request("HEAD", "/static/app.js", &[]).await;
    let mut raw = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    raw.write_all(
        format!(
            "HEAD /static/app.js HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            server.addr
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let mut all = Vec::new();
    tokio::time::timeout(common::TIMEOUT, raw.read_to_end(&mut all))
        .await
        .unwrap()
        .unwrap();
    let all = String::from_utf8(all).unwrap();
    assert!(all.ends_with("\r\n\r\n"), "HEAD sent a body: {all:?}");
    assert_eq!(head.status, 200);
    assert_eq!(head.header("etag"), Some(etag.as_str()));
    assert_eq!(head.header("content-type"), Some(ctype));
    assert_eq!(head.header("content-length"), Some("19"));
    assert!(head.body.is_empty(), "HEAD sent a body: {:?}", head.text());
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn connections_beyond_the_http_cap_get_a_canned_503() {
    // With no WebSocket slots, the HTTP cap is the fixed headroom of 256.
    let server = Server::start(config().max_connections(0usize)).await;
    let mut open = Vec::new();
    for _ in 0..256 {
        open.push(tokio::net::TcpStream::connect(server.addr).await.unwrap());
    }
    // The 256 are accepted before the next one (the backlog is FIFO); each
    // is proven served by a request on it, which also keeps it open.
    for stream in &mut open {
        stream
            .write_all(format!("GET /health HTTP/1.1\r\nHost: {}\r\n\r\n", server.addr).as_bytes())
            .await
            .unwrap();
        assert_eq!(common::read_response(stream, false).await.status, 200);
    }
    let res = server.get("/health").await;
    let body = res.assert_json_error(503);
    assert_eq!(body["error"], "too_many_connections");
    assert_eq!(res.header("connection"), Some("close"));
    assert!(res.header("retry-after").is_some());

    drop(open);
    // Once they are gone, requests are served again.
    let deadline = tokio::time::Instant::now() + common::TIMEOUT;
    while server.get("/health").await.status != 200 {
        assert!(tokio::time::Instant::now() < deadline, "never served again");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    server.shutdown().await.unwrap();
}

/// `GET /api/rooms` until `check` accepts its `rooms`; rooms empty out
/// when a session ends, which the test cannot observe directly.
async fn rooms_until(
    server: &Server,
    what: &str,
    check: impl Fn(&[serde_json::Value]) -> bool,
) -> Vec<serde_json::Value> {
    let deadline = tokio::time::Instant::now() + common::TIMEOUT;
    loop {
        let res = server.get("/api/rooms").await;
        assert_eq!(res.status, 200, "{}", res.text());
        let rooms = res.json()["rooms"].as_array().expect("rooms array").clone();
        if check(&rooms) {
            return rooms;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: /api/rooms still answers {rooms:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn api_rooms_lists_active_public_rooms_busiest_first() {
    // Private rooms need tokens: a token-mode server.
    let server = Server::start(common::token_mode(config())).await;
    let empty = server.get("/api/rooms").await;
    assert_eq!(empty.status, 200);
    assert!(
        empty
            .header("content-type")
            .is_some_and(|t| t.starts_with("application/json"))
    );
    assert_eq!(empty.json(), json!({"rooms": []}));

    // Two names in "Design Team" (one of them twice: names are counted, not
    // connections), one in "quiet", one in "also quiet", and private rooms.
    let mut held = Vec::new();
    for (room, user) in [
        ("Design%20Team", "ann"),
        ("Design%20Team", "ann"),
        ("Design%20Team", "bob"),
        ("quiet", "cy"),
        ("also%20quiet", "di"),
        ("private-plans", "eve"),
        ("PRIVATE-Shouting", "eve"),
        ("Private-x", "eve"),
        ("gone", "fay"),
    ] {
        let token = common::token(user, &["private-*"]);
        let mut c = server.ws(&format!("/ws/{room}/{user}?token={token}")).await;
        c.expect("welcome").await;
        held.push(c);
    }
    // "privately" is public: only the `private-` prefix hides a room.
    let token = common::token("gus", &[]);
    held.push(server.ws(&format!("/ws/privately/gus?token={token}")).await);
    // A room whose last member left is not listed.
    let fay = held.remove(8);
    fay.close().await;

    let rooms = rooms_until(&server, "gone leaves the list", |r| {
        !r.iter().any(|x| x["room"] == "gone")
    })
    .await;
    assert_eq!(
        rooms,
        vec![
            json!({"room": "Design Team", "online_count": 2}),
            json!({"room": "also quiet", "online_count": 1}),
            json!({"room": "privately", "online_count": 1}),
            json!({"room": "quiet", "online_count": 1}),
        ]
    );

    // HEAD: same headers, no body; other methods: 405.
    let head = server.request("HEAD", "/api/rooms", &[]).await;
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
    assert!(
        head.header("content-length")
            .is_some_and(|n| n.parse::<usize>().unwrap() > 0)
    );
    let post = server
        .request("POST", "/api/rooms", &[("Content-Length", "0")])
        .await;
    post.assert_json_error(405);
    assert_eq!(post.header("allow"), Some("GET, HEAD"));
    drop(held);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn api_rooms_lists_at_most_fifty() {
    let server = Server::start(config()).await;
    let mut held = Vec::new();
    for i in 0..53 {
        held.push(server.join(&format!("room-{i:02}"), "u").await.0);
    }
    held.push(server.join("room-52", "v").await.0);
    let res = server.get("/api/rooms").await;
    let rooms = res.json()["rooms"].as_array().unwrap().clone();
    assert_eq!(rooms.len(), 50);
    assert_eq!(rooms[0], json!({"room": "room-52", "online_count": 2}));
    assert_eq!(rooms[1]["room"], "room-00", "then by name");
    assert_eq!(rooms[49]["room"], "room-48");
    drop(held);
    server.shutdown().await.unwrap();
}
