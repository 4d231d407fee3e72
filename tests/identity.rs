//! Who is who (issue 12): open-mode claims and held names, signed tokens
//! with every refusal, private rooms, Origin checks, renewal and expiry,
//! moderators, uploads and `/metrics` in token mode.

mod common;

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::{Server, claim_of, config, token, token_mode};
use hmac::{KeyInit, Mac};
use serde_json::{Value, json};

/// A token with raw header and payload JSON, signed with `key` (HS256).
fn raw_token(header: &str, payload: &Value, key: &[u8]) -> String {
    let h = URL_SAFE_NO_PAD.encode(header);
    let p = URL_SAFE_NO_PAD.encode(payload.to_string());
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key).unwrap();
    mac.update(format!("{h}.{p}").as_bytes());
    format!(
        "{h}.{p}.{}",
        URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
    )
}

fn now() -> u64 {
    roomcast::auth::now()
}

/// Asserts a JSON refusal with `status` and `code`; returns its message.
fn refused(res: &common::HttpResponse, status: u16, code: &str) -> String {
    let body = res.assert_json_error(status);
    assert_eq!(body["error"], code, "{body}");
    body["message"].as_str().unwrap().to_owned()
}

// ------------------------------------------------------------ open mode

#[tokio::test]
async fn a_connection_without_a_claim_gets_one_and_keeps_its_name_with_it() {
    let server = Server::start(config()).await;
    let mut first = server.ws("/ws/lobby/ann?claim=none").await;
    let w = first.expect("welcome").await;
    let claim = w["claim"]
        .as_str()
        .expect("a claim for a newcomer")
        .to_owned();
    assert_eq!(claim.len(), 43);
    first.expect("join").await;

    // The same claim: the same person, in another tab.
    let mut tab = server.ws(&format!("/ws/lobby/ann?claim={claim}")).await;
    let w = tab.expect("welcome").await;
    assert!(w.get("claim").is_none(), "a claim is handed out once: {w}");
    tab.roundtrip().await;
    first.roundtrip().await;

    // Anyone else asking for the held name is refused before the upgrade.
    let res = server.try_upgrade("/ws/lobby/ann", &[]).await;
    let why = refused(&res, 409, "name_taken");
    assert!(why.contains("\"ann\""), "{why}");
    let other = claim_of("someone else");
    let res = server
        .try_upgrade(&format!("/ws/lobby/ann?claim={other}"), &[])
        .await;
    refused(&res, 409, "name_taken");
    // The preflight (a plain GET) says the same, for a browser to explain.
    let res = server.get(&format!("/ws/lobby/ann?claim={other}")).await;
    refused(&res, 409, "name_taken");
    // Another room is another matter; a bad claim is a 400.
    let res = server
        .get(&format!("/ws/elsewhere/ann?claim={other}"))
        .await;
    assert_eq!(res.status, 200);
    let res = server.get("/ws/lobby/zed?claim=not-a-claim").await;
    refused(&res, 400, "bad_claim");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn whoever_takes_a_freed_name_cannot_touch_the_holders_messages() {
    let server = Server::start(config().name_hold_grace(Duration::ZERO)).await;
    let (mut ann, _) = server.join("r", "ann").await;
    ann.expect("join").await;
    let m = ann.post("ann's own words").await;
    let id = m["message_id"].as_str().unwrap().to_owned();
    ann.send_json(json!({"type": "add_reaction", "message_id": id, "emoji": "👍"}))
        .await;
    ann.expect("reaction_update").await;
    ann.close().await;
    server.wait_metric("roomcast_connections", 0).await;

    // The name is free again; someone else takes it.
    let imposter = claim_of("not ann");
    let mut fake = server.ws(&format!("/ws/r/ann?claim={imposter}")).await;
    let w = fake.expect("welcome").await;
    assert_eq!(w["history"][0]["reactions"], json!({"👍": ["ann"]}));
    fake.expect("join").await;
    fake.send_json(json!({"type": "edit", "message_id": id, "content": "forged"}))
        .await;
    fake.expect_error("forbidden").await;
    fake.send_json(json!({"type": "delete", "message_id": id}))
        .await;
    fake.expect_error("forbidden").await;
    // Removing "ann's" reaction removes nothing: it is not this one's. It
    // is answered, to this connection alone, with the reactions as they are.
    fake.send_json(json!({"type": "remove_reaction", "message_id": id, "emoji": "👍"}))
        .await;
    let whole = fake.expect("reactions").await;
    assert_eq!(whole["reactions"], json!({"👍": ["ann"]}));
    // Toggling adds a reaction of its own, beside the first.
    fake.send_json(json!({"type": "reaction", "message_id": id, "emoji": "👍"}))
        .await;
    let u = fake.expect("reaction_update").await;
    assert_eq!(
        (&u["action"], &u["users"]),
        (&json!("add"), &json!(["ann", "ann"]))
    );
    fake.close().await;
    server.wait_metric("roomcast_connections", 0).await;

    // The real ann comes back: her message is still hers.
    let (mut real, _) = server.join("r", "ann").await;
    real.expect("join").await;
    real.send_json(json!({"type": "remove_reaction", "message_id": id, "emoji": "👍"}))
        .await;
    let u = real.expect("reaction_update").await;
    assert_eq!(u["users"], json!(["ann"]), "only her own reaction went");
    real.send_json(json!({"type": "edit", "message_id": id, "content": "still mine"}))
        .await;
    assert_eq!(
        real.expect("message_updated").await["content"],
        "still mine"
    );
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn private_rooms_need_tokens_and_open_mode_says_so() {
    let server = Server::start(config()).await;
    let res = server.try_upgrade("/ws/private-design/ann", &[]).await;
    let why = refused(&res, 403, "private_room");
    assert!(
        why.contains("private-design") && why.contains("open mode"),
        "{why}"
    );
    let res = server.try_upgrade("/ws/PRIVATE-Design/ann", &[]).await;
    refused(&res, 403, "private_room");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn only_the_servers_own_pages_may_open_websockets_unless_allowed() {
    let server = Server::start(config()).await;
    let own = format!("http://{}", server.addr);
    let path = format!("/ws/r/ann?claim={}", claim_of("ann"));
    let res = server.try_upgrade(&path, &[("Origin", &own)]).await;
    assert_eq!(res.status, 101, "{}", res.text());
    let res = server.try_upgrade(&path, &[]).await;
    assert_eq!(res.status, 101, "no Origin: not a browser");
    let res = server
        .try_upgrade(&path, &[("Origin", "https://evil.example")])
        .await;
    let why = refused(&res, 403, "origin_not_allowed");
    assert!(why.contains("evil.example"), "{why}");
    server.shutdown().await.unwrap();

    let auth = roomcast::auth::Auth {
        origins: roomcast::auth::AllowedOrigins::parse("https://app.example").unwrap(),
        ..Default::default()
    };
    let server = Server::start(config().auth(auth)).await;
    let res = server
        .try_upgrade(&path, &[("Origin", "https://app.example")])
        .await;
    assert_eq!(res.status, 101);
    let res = server
        .try_upgrade(&path, &[("Origin", "https://evil.example")])
        .await;
    refused(&res, 403, "origin_not_allowed");
    server.shutdown().await.unwrap();
}

// ------------------------------------------------------------ token mode

#[tokio::test]
async fn a_valid_token_opens_its_rooms_by_query_or_header() {
    let server = Server::start(token_mode(config())).await;
    let t = token("ann", &["private-design"]);
    let mut c = server
        .ws(&format!("/ws/private-design/ann?token={t}"))
        .await;
    let w = c.expect("welcome").await;
    assert_eq!(w["user"], "ann");
    assert!(w.get("claim").is_none(), "no claims in token mode");
    // Any valid token opens a public room; a header works as well.
    let res = server
        .try_upgrade(
            "/ws/lobby/ann",
            &[("Authorization", &format!("Bearer {}", token("ann", &[])))],
        )
        .await;
    assert_eq!(res.status, 101, "{}", res.text());
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn every_bad_token_is_refused_before_the_upgrade() {
    let server = Server::start(token_mode(config())).await;
    let key = common::TEST_SECRET;
    let claims = |extra: Value| {
        let mut c = json!({"sub": "ann", "exp": now() + 600, "rooms": ["private-a"]});
        c.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        c
    };
    let hs256 = r#"{"alg":"HS256","typ":"JWT"}"#;
    let good = raw_token(hs256, &claims(json!({})), key);
    let (head, body, sig) = {
        let p: Vec<&str> = good.split('.').collect();
        (p[0].to_owned(), p[1].to_owned(), p[2].to_owned())
    };
    let tampered_body = URL_SAFE_NO_PAD.encode(claims(json!({"sub": "admin"})).to_string());
    let cases: Vec<(&str, String, u16, &str)> = vec![
        ("missing", String::new(), 401, "token_required"),
        (
            "expired",
            raw_token(hs256, &claims(json!({"exp": now() - 120})), key),
            401,
            "token_expired",
        ),
        (
            "not yet valid",
            raw_token(hs256, &claims(json!({"nbf": now() + 600})), key),
            401,
            "invalid_token",
        ),
        (
            "bad signature",
            raw_token(
                hs256,
                &claims(json!({})),
                b"another secret, also thirty-two bytes",
            ),
            401,
            "invalid_token",
        ),
        (
            "alg none",
            format!("{}.{body}.", URL_SAFE_NO_PAD.encode(r#"{"alg":"none"}"#)),
            401,
            "invalid_token",
        ),
        (
            "another algorithm",
            raw_token(r#"{"alg":"HS512"}"#, &claims(json!({})), key),
            401,
            "invalid_token",
        ),
        (
            "tampered payload",
            format!("{head}.{tampered_body}.{sig}"),
            401,
            "invalid_token",
        ),
        ("garbage", "not.a.token".to_owned(), 401, "invalid_token"),
        (
            "another user's",
            raw_token(hs256, &claims(json!({"sub": "bob"})), key),
            403,
            "wrong_user",
        ),
        (
            "without the private room",
            raw_token(hs256, &claims(json!({"rooms": ["private-b"]})), key),
            403,
            "room_not_allowed",
        ),
        ("oversized", "a".repeat(5000), 400, "token_too_large"),
    ];
    for (what, t, status, code) in cases {
        let path = match t.is_empty() {
            true => "/ws/private-a/ann".to_owned(),
            false => format!("/ws/private-a/ann?token={t}"),
        };
        let res = server.try_upgrade(&path, &[]).await;
        assert_eq!(res.status, status, "{what}: {}", res.text());
        let body = res.json();
        assert_eq!(body["error"], code, "{what}: {body}");
        assert!(!body["message"].as_str().unwrap().is_empty(), "{what}");
    }
    assert_eq!(server.metric("roomcast_connections_total").await, 0);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_token_renewed_in_place_keeps_the_connection_and_an_expired_one_closes_with_4001() {
    let server = Server::start(token_mode(config())).await;
    // Already past `exp`, but within the clock leeway: admitted, and kept
    // until the leeway is over too (5 s from now).
    let leeway = roomcast::auth::jwt::LEEWAY_SECS;
    let first_exp = now() + 5 - leeway;
    let short = |user: &str| {
        let secret = roomcast::auth::Secret::new(common::TEST_SECRET.to_vec()).unwrap();
        roomcast::auth::jwt::sign(
            &roomcast::auth::jwt::Issue {
                sub: user,
                rooms: &[],
                moderator: false,
                iat: now(),
                exp: first_exp,
            },
            &secret,
        )
    };
    let mut kept = server
        .ws(&format!("/ws/r/ann?token={}", short("ann")))
        .await;
    kept.expect("welcome").await;
    kept.expect("join").await;
    let mut lapsing = server
        .ws(&format!("/ws/r/bob?token={}", short("bob")))
        .await;
    lapsing.expect("welcome").await;
    lapsing.expect("join").await;
    kept.expect("join").await;
    lapsing.roundtrip().await;

    // A renewal for someone else is refused; the connection stays.
    kept.send_json(json!({"type": "auth", "token": token("bob", &[])}))
        .await;
    kept.expect_error("forbidden").await;
    kept.send_json(json!({"type": "auth", "token": "nonsense"}))
        .await;
    kept.expect_error("unauthorized").await;
    kept.send_json(json!({"type": "auth", "token": token("ann", &[])}))
        .await;
    let ok = kept.expect("auth_ok").await;
    assert!(ok["exp"].as_u64().unwrap() > now() + 3000);

    lapsing.expect_close(4001).await;
    // A renewal to an earlier expiry is held to it: the watch that slept
    // until the later one is woken.
    let mut renewed = server
        .ws(&format!("/ws/elsewhere/cy?token={}", token("cy", &[])))
        .await;
    renewed.expect("welcome").await;
    renewed.expect("join").await;
    let soon = roomcast::auth::jwt::sign(
        &roomcast::auth::jwt::Issue {
            sub: "cy",
            rooms: &[],
            moderator: false,
            iat: now(),
            exp: now() + 2 - leeway,
        },
        &roomcast::auth::Secret::new(common::TEST_SECRET.to_vec()).unwrap(),
    );
    renewed
        .send_json(json!({"type": "auth", "token": soon}))
        .await;
    renewed.expect("auth_ok").await;
    renewed.expect_close(4001).await;
    // Past the first token's expiry, the renewed connection still works.
    assert!(now() > first_exp + leeway);
    kept.skip_to("leave").await;
    kept.roundtrip().await;
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_moderator_may_delete_anyones_message() {
    let server = Server::start(token_mode(config())).await;
    let (mut ann, _) = {
        let mut c = server
            .ws(&format!("/ws/r/ann?token={}", token("ann", &[])))
            .await;
        let w = c.expect("welcome").await;
        (c, w)
    };
    ann.expect("join").await;
    let id = ann.post("rude words").await["message_id"].clone();
    let mut mo = server
        .ws(&format!("/ws/r/mo?token={}", common::moderator_token("mo")))
        .await;
    mo.expect("welcome").await;
    mo.expect("join").await;
    mo.send_json(json!({"type": "edit", "message_id": id, "content": "nicer"}))
        .await;
    mo.expect_error("forbidden").await;
    mo.send_json(json!({"type": "delete", "message_id": id}))
        .await;
    assert_eq!(mo.expect("message_deleted").await["message_id"], id);

    // Renewed with a plain token, the connection is a moderator no longer;
    // renewed with a moderator's again, it is one again.
    ann.expect("join").await;
    ann.expect("message_deleted").await;
    let id = ann.post("more rude words").await["message_id"].clone();
    mo.expect("message").await;
    mo.send_json(json!({"type": "auth", "token": token("mo", &[])}))
        .await;
    mo.expect("auth_ok").await;
    mo.send_json(json!({"type": "delete", "message_id": id}))
        .await;
    mo.expect_error("forbidden").await;
    mo.send_json(json!({"type": "auth", "token": common::moderator_token("mo")}))
        .await;
    mo.expect("auth_ok").await;
    mo.send_json(json!({"type": "delete", "message_id": id}))
        .await;
    assert_eq!(mo.expect("message_deleted").await["message_id"], id);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn uploads_and_metrics_need_their_tokens() {
    let auth = roomcast::auth::Auth {
        metrics_token: Some("let-me-count".into()),
        ..Default::default()
    };
    let server = Server::start(token_mode(config().auth(auth))).await;
    let res = server.get("/metrics").await;
    refused(&res, 401, "token_required");
    let res = server
        .request("GET", "/metrics", &[("Authorization", "Bearer wrong")])
        .await;
    refused(&res, 401, "token_required");
    let res = server
        .request(
            "GET",
            "/metrics",
            &[("Authorization", "Bearer let-me-count")],
        )
        .await;
    assert_eq!(res.status, 200);

    let res = upload(&server, None).await;
    refused(&res, 401, "token_required");
    let bearer = format!("Bearer {}", token("ann", &[]));
    let res = upload(&server, Some(&bearer)).await;
    assert_eq!(res.status, 200, "{}", res.text());
    let url = res.json()["url"].as_str().unwrap().to_owned();

    // The file is ann's: bob cannot send it as his attachment, ann can.
    let (mut bob, _) = server
        .join("lobby", &format!("bob?token={}", token("bob", &[])))
        .await;
    bob.expect("join").await;
    bob.send_attachment("mine?", &url).await;
    bob.expect_error_saying("bad_attachment", "someone else")
        .await;
    let (mut ann, _) = server
        .join("lobby", &format!("ann?token={}", token("ann", &[])))
        .await;
    ann.expect("join").await;
    ann.send_attachment("mine", &url).await;
    let posted = ann.skip_to("message").await;
    assert_eq!(posted["attachment"]["url"], url);
    server.shutdown().await.unwrap();
}

/// `POST /upload` of a small text file, with an `Authorization` header if
/// given.
async fn upload(server: &Server, authorization: Option<&str>) -> common::HttpResponse {
    let body = "--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.txt\"\r\n\
                Content-Type: text/plain\r\n\r\nhello\r\n--b--\r\n";
    let auth = authorization
        .map(|a| format!("Authorization: {a}\r\n"))
        .unwrap_or_default();
    let request = format!(
        "POST /upload HTTP/1.1\r\nHost: {}\r\nContent-Type: multipart/form-data; boundary=b\r\n\
         Content-Length: {}\r\n{auth}Connection: close\r\n\r\n{body}",
        server.addr,
        body.len()
    );
    common::http_raw(server.addr, request.as_bytes(), false).await
}

#[tokio::test]
async fn scrollback_is_read_only_by_those_who_may_join_the_room() {
    // Open mode: public rooms are readable, private ones are refused.
    let open = Server::start(config()).await;
    let res = open.get("/api/rooms/private-design/messages").await;
    refused(&res, 403, "private_room");
    open.shutdown().await.unwrap();

    let server = Server::start(token_mode(config())).await;
    let ann = token("ann", &["private-design"]);
    let (mut c, _) = server
        .join("private-design", &format!("ann?token={ann}"))
        .await;
    c.expect("join").await;
    c.post("for the design team only").await;

    let path = "/api/rooms/private-design/messages";
    refused(&server.get(path).await, 401, "token_required");
    refused(
        &server.get(&format!("{path}?token=not.a.token")).await,
        401,
        "invalid_token",
    );
    // A valid token that does not name the private room.
    let bob = token("bob", &["lobby"]);
    refused(
        &server.get(&format!("{path}?token={bob}")).await,
        403,
        "room_not_allowed",
    );
    // Anyone the room admits reads it, by query or by header.
    let res = server.get(&format!("{path}?token={ann}")).await;
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(
        res.json()["messages"][0]["content"],
        "for the design team only"
    );
    let cy = token("cy", &["private-*"]);
    let res = server
        .request("GET", path, &[("Authorization", &format!("Bearer {cy}"))])
        .await;
    assert_eq!(res.status, 200, "{}", res.text());
    server.shutdown().await.unwrap();
}
