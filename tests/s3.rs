//! The S3 media store against a real S3-compatible server that checks
//! signatures (`s3s-fs`, see `tests/common/s3.rs`): presigned uploads end
//! to end (ask, PUT straight to the bucket, complete, download through the
//! redirect, attach over WebSocket); what storage itself refuses (a
//! tampered URL, an expired one, more bytes than declared); what `complete`
//! refuses and deletes; an upload given up before `complete` (`DELETE`);
//! `POST /upload` through the server into the bucket; ownership in token
//! mode; the storage going down; requests whose client goes away while
//! the bucket stalls; the sweep.

mod common;

use std::time::{Duration, SystemTime};

use common::s3::{S3Fs, request_url, store_png};
use common::{HttpResponse, Proxy, Server, config, token, token_mode};
use roomcast::media::s3::{CompleteError, PresignedPut};
use roomcast::media::{DisplayName, Kind, MediaStoreKind, StoredName};
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

const PNG: &[u8] =
    b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01\0\0\0\x01\x08\x06\0\0\0\x1f\x15\xc4\x89";

async fn s3_server(s3: &S3Fs) -> Server {
    Server::start(config().media_store(s3.media_store())).await
}

/// `POST /api/uploads` with `ask` as JSON and extra headers.
async fn ask(server: &Server, ask: Value, headers: &[(&str, &str)]) -> HttpResponse {
    ask_text(server, &ask.to_string(), headers).await
}

/// `POST /api/uploads` with `body` as is (JSON a `Value` cannot hold).
async fn ask_text(server: &Server, body: &str, headers: &[(&str, &str)]) -> HttpResponse {
    let url = format!("http://{}/api/uploads", server.addr);
    let mut all = vec![("Content-Type", "application/json")];
    all.extend_from_slice(headers);
    request_url("POST", &url, &all, body.as_bytes()).await
}

/// Asks for a presigned upload of [`PNG`] named `name`; the answer.
async fn ask_png(server: &Server, name: &str) -> Value {
    let asked = json!({"name": name, "size": PNG.len(), "content_type": "image/png"});
    let res = ask(server, asked, &[]).await;
    assert_eq!(res.status, 200, "{}", res.text());
    res.json()
}

async fn complete(server: &Server, id: &str, headers: &[(&str, &str)]) -> HttpResponse {
    let url = format!("http://{}/api/uploads/{id}/complete", server.addr);
    request_url("POST", &url, headers, b"").await
}

/// `DELETE /api/uploads/{id}`: gives a waiting upload up.
async fn cancel(server: &Server, id: &str, headers: &[(&str, &str)]) -> HttpResponse {
    let url = format!("http://{}/api/uploads/{id}", server.addr);
    request_url("DELETE", &url, headers, b"").await
}

/// PUTs `bytes` at a presigned answer's URL with its headers.
async fn put(answer: &Value, bytes: &[u8]) -> HttpResponse {
    let content_type = answer["headers"]["Content-Type"].as_str().unwrap();
    request_url(
        "PUT",
        answer["put_url"].as_str().unwrap(),
        &[("Content-Type", content_type)],
        bytes,
    )
    .await
}

/// Asks, PUTs and completes `bytes`; returns the completion's answer.
async fn presigned_upload(server: &Server, name: &str, ct: &str, bytes: &[u8]) -> HttpResponse {
    let res = ask(
        server,
        json!({"name": name, "size": bytes.len(), "content_type": ct}),
        &[],
    )
    .await;
    assert_eq!(res.status, 200, "{}", res.text());
    let answer = res.json();
    let stored = put(&answer, bytes).await;
    assert_eq!(
        stored.status,
        200,
        "the bucket took the PUT: {}",
        stored.text()
    );
    complete(server, answer["upload_id"].as_str().unwrap(), &[]).await
}

/// PUTs `bytes` at a URL the store presigned, with its headers.
async fn put_presigned(put: &PresignedPut, bytes: &[u8]) -> HttpResponse {
    let ct = put
        .headers
        .iter()
        .find(|(n, _)| *n == "content-type")
        .map(|(_, v)| v.as_str())
        .unwrap();
    request_url("PUT", &put.url, &[("Content-Type", ct)], bytes).await
}

/// Sends `POST path` with a JSON `body` on a connection of its own and
/// returns that connection unread: dropping it abandons the request.
async fn post_unanswered(server: &Server, path: &str, body: &str) -> TcpStream {
    let mut conn = TcpStream::connect(server.addr).await.expect("connect");
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        server.addr,
        body.len()
    );
    conn.write_all(req.as_bytes()).await.expect("send");
    conn
}

/// A roomcast reaching `s3` through a proxy the test can freeze, `tune`d.
async fn behind_proxy(
    s3: &S3Fs,
    tune: impl FnOnce(roomcast::Config) -> roomcast::Config,
) -> (Server, Proxy) {
    let proxy = Proxy::start(&s3.addr.to_string()).await;
    let server = Server::start(tune(config().media_store(s3.media_store_through(&proxy)))).await;
    (server, proxy)
}

/// Follows `/uploads/...`'s redirect; returns the bucket's answer.
async fn download(server: &Server, url: &str) -> HttpResponse {
    let res = server.get(url).await;
    assert_eq!(res.status, 302, "{}", res.text());
    let location = res.header("location").expect("a Location").to_owned();
    request_url("GET", &location, &[], b"").await
}

#[tokio::test]
async fn a_presigned_upload_goes_straight_to_the_bucket_and_a_message_attaches_it() {
    let s3 = S3Fs::start();
    let server = s3_server(&s3).await;
    let page = server.get("/").await;
    assert!(page.text().contains("&quot;media&quot;:&quot;s3&quot;"));
    let csp = page.header("content-security-policy").unwrap();
    assert!(
        csp.contains(&format!("connect-src 'self' {}", s3.endpoint)),
        "{csp}"
    );

    let res = ask(
        &server,
        json!({"name": "../../dot.png", "size": PNG.len(), "content_type": "image/png"}),
        &[],
    )
    .await;
    assert_eq!(res.status, 200, "{}", res.text());
    let answer = res.json();
    let id = answer["upload_id"].as_str().unwrap().to_owned();
    assert!(
        StoredName::parse(&id).is_some_and(|n| n.kind() == Kind::Png),
        "{id}"
    );
    assert!(
        answer["put_url"]
            .as_str()
            .unwrap()
            .starts_with(&s3.endpoint)
    );
    assert_eq!(answer["headers"]["Content-Type"], "image/png");
    assert!(answer["expires_at"].as_u64().unwrap() > roomcast::auth::now());
    // Not yet PUT: complete says so, and the upload stays waiting.
    let early = complete(&server, &id, &[]).await.assert_json_error(409);
    assert_eq!(early["error"], "not_uploaded");
    // Nothing can be attached or downloaded before it is complete.
    assert_eq!(server.get(&format!("/uploads/{id}")).await.status, 404);

    assert_eq!(put(&answer, PNG).await.status, 200);
    let done = complete(&server, &id, &[]).await;
    assert_eq!(done.status, 200, "{}", done.text());
    let done = done.json();
    assert_eq!(
        done,
        json!({"url": format!("/uploads/{id}"), "name": "dot.png", "size": PNG.len(),
               "content_type": "image/png"})
    );
    // Once only.
    let again = complete(&server, &id, &[]).await.assert_json_error(404);
    assert_eq!(again["error"], "unknown_upload");

    let got = download(&server, &format!("/uploads/{id}")).await;
    assert_eq!(got.status, 200);
    assert_eq!(got.body, PNG);
    assert_eq!(got.header("content-type"), Some("image/png"));

    let (mut ann, _) = server.join("s3room", "ann").await;
    ann.send_attachment("look", &format!("/uploads/{id}")).await;
    let posted = ann.skip_to("message").await;
    assert_eq!(posted["attachment"]["url"], format!("/uploads/{id}"));
    assert_eq!(posted["attachment"]["name"], "dot.png");
    // Attached: its unattached marker is gone, the data and sidecar stay.
    assert!(!s3.object_path(&format!("unattached/{id}")).exists());
    assert!(s3.object_path(&id).exists());
    assert!(server.metric("roomcast_uploads_total").await >= 1);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn the_bucket_refuses_a_tampered_url_and_more_bytes_than_declared() {
    let s3 = S3Fs::start();
    let server = s3_server(&s3).await;
    let answer = ask_png(&server, "a.png").await;
    let url = answer["put_url"].as_str().unwrap();
    let ct = [("Content-Type", "image/png")];

    // Another key, another signature byte, another expiry, another type.
    let id = answer["upload_id"].as_str().unwrap();
    let fresh = StoredName::generate(Kind::Png).unwrap();
    let other_key = url.replacen(id, fresh.as_str(), 1);
    assert_ne!(other_key, url);
    let last = url.chars().last().unwrap();
    let flipped = format!(
        "{}{}",
        &url[..url.len() - 1],
        if last == '0' { '1' } else { '0' }
    );
    let longer = url.replace("X-Amz-Expires=300", "X-Amz-Expires=3000");
    assert_ne!(longer, url);
    for tampered in [&other_key, &flipped, &longer] {
        let res = request_url("PUT", tampered, &ct, PNG).await;
        assert_eq!(res.status, 403, "{tampered}: {}", res.text());
    }
    let res = request_url("PUT", url, &[("Content-Type", "text/plain")], PNG).await;
    assert_eq!(res.status, 403, "a type other than the signed one");
    // More bytes than declared: the signed Content-Length does not match.
    let mut bigger = PNG.to_vec();
    bigger.extend_from_slice(&[0u8; 1000]);
    let res = request_url("PUT", url, &ct, &bigger).await;
    assert_eq!(res.status, 403, "{}", res.text());
    assert!(!s3.object_path(&format!("incoming/{id}")).exists());
    assert!(
        !s3.object_path(&format!("incoming/{}", fresh.as_str()))
            .exists()
    );
    let res = complete(&server, id, &[]).await;
    assert_eq!(res.assert_json_error(409)["error"], "not_uploaded");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn an_expired_presigned_url_is_refused_by_the_bucket() {
    let s3 = S3Fs::start();
    let server = Server::start(
        config()
            .media_store(s3.media_store())
            .presign_ttl(Duration::from_secs(1))
            .upload_timeout(Duration::from_secs(1)),
    )
    .await;
    let answer = ask_png(&server, "a.png").await;
    // Wait until the URL is past its expiry by the wall clock (a bound on
    // waiting, not a race: the URL cannot become valid again).
    // `expires_at` is whole seconds, so past `expires_at + 2` more than 3 s
    // have passed since the ask: the URL (1 s) and the waiting upload
    // (1 s + the 1 s upload timeout) are both over.
    let expires = answer["expires_at"].as_u64().unwrap();
    while roomcast::auth::now() <= expires + 2 {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let res = put(&answer, PNG).await;
    assert_eq!(res.status, 403, "{}", res.text());
    assert!(res.text().contains("expired"), "{}", res.text());
    let id = answer["upload_id"].as_str().unwrap();
    let res = complete(&server, id, &[]).await.assert_json_error(404);
    assert_eq!(res["error"], "unknown_upload");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn complete_refuses_markup_declared_as_an_image_and_deletes_it() {
    let s3 = S3Fs::start();
    let server = s3_server(&s3).await;
    let html = b"<!doctype html><script>alert(1)</script>";
    let res = presigned_upload(&server, "cat.png", "image/png", html).await;
    let body = res.assert_json_error(422);
    assert_eq!(body["error"], "bad_type");
    assert!(
        body["message"].as_str().unwrap().contains("image/png"),
        "{body}"
    );
    // Gone from the bucket.
    let leftovers: Vec<_> = std::fs::read_dir(s3.object_path(""))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".png"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    // A real PNG declared as text is refused the same way; text that is
    // not UTF-8 too (judged over the whole file).
    let res = presigned_upload(&server, "a.txt", "text/plain", PNG).await;
    assert_eq!(res.assert_json_error(422)["error"], "bad_type");
    let mut late = "plain words ".repeat(500).into_bytes();
    late.push(0xff);
    let res = presigned_upload(&server, "b.txt", "text/plain", &late).await;
    assert_eq!(res.assert_json_error(422)["error"], "bad_type");
    let ok = presigned_upload(&server, "c.txt", "text/plain", "héllo".as_bytes()).await;
    assert_eq!(ok.status, 200, "{}", ok.text());
    assert_eq!(ok.json()["content_type"], "text/plain");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_deleted_object_is_gone_as_a_signed_head_shows() {
    let s3 = S3Fs::start();
    let server = s3_server(&s3).await;
    let html = b"<html>not an image</html>";
    let res = ask(
        &server,
        json!({"name": "x.png", "size": html.len(), "content_type": "image/png"}),
        &[],
    )
    .await;
    let answer = res.json();
    let id = answer["upload_id"].as_str().unwrap().to_owned();
    assert_eq!(put(&answer, html).await.status, 200);
    let head_url = |key: &str| {
        s3.client().presign(
            &http::Method::HEAD,
            key,
            &[],
            SystemTime::now(),
            Duration::from_secs(60),
        )
    };
    let (staged, checked) = (head_url(&format!("incoming/{id}")), head_url(&id));
    // The PUT wrote the staging key only.
    assert_eq!(request_url("HEAD", &staged, &[], b"").await.status, 200);
    assert_eq!(request_url("HEAD", &checked, &[], b"").await.status, 404);
    complete(&server, &id, &[]).await.assert_json_error(422);
    // Both the staged object and the checked copy are gone.
    assert_eq!(request_url("HEAD", &staged, &[], b"").await.status, 404);
    assert_eq!(request_url("HEAD", &checked, &[], b"").await.status, 404);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn asks_are_checked_before_anything_is_signed() {
    let s3 = S3Fs::start();
    let server = Server::start(
        config()
            .media_store(s3.media_store())
            .max_upload_bytes(1000u64)
            .max_pending_uploads((2, 100)),
    )
    .await;
    let too_big = ask(
        &server,
        json!({"name": "a.png", "size": 1001, "content_type": "image/png"}),
        &[],
    )
    .await;
    assert_eq!(too_big.assert_json_error(413)["error"], "too_large");
    let html = ask(
        &server,
        json!({"name": "a.html", "size": 10, "content_type": "text/html"}),
        &[],
    )
    .await;
    assert_eq!(html.assert_json_error(415)["error"], "unsupported_type");
    for bad in [
        json!({"size": 10}),
        json!({"name": "a", "size": 0, "content_type": "image/png"}),
        json!({"name": "a", "size": -1, "content_type": "image/png"}),
        json!("nonsense"),
    ] {
        let res = ask(&server, bad.clone(), &[]).await;
        assert_eq!(res.assert_json_error(400)["error"], "bad_upload", "{bad}");
    }
    let fine = json!({"name": "a.png", "size": 10, "content_type": "image/png"});
    assert_eq!(ask(&server, fine.clone(), &[]).await.status, 200);
    assert_eq!(ask(&server, fine.clone(), &[]).await.status, 200);
    let full = ask(&server, fine, &[]).await.assert_json_error(429);
    assert_eq!(full["error"], "too_many_pending");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn an_ask_ignores_unknown_fields_and_takes_a_repeated_fields_last_value() {
    let s3 = S3Fs::start();
    let server = s3_server(&s3).await;
    // What a browser's `File` has besides, and fields of every kind.
    let extra = json!({
        "name": "a.png", "size": 5, "content_type": "image/png",
        "lastModified": 1, "webkitRelativePath": "", "meta": {"x": [1, null]}
    });
    let res = ask(&server, extra, &[]).await;
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(res.json()["size"], 5);
    // Sent twice, a field counts as its last value.
    let twice = r#"{"name":"a.png","size":1,"size":5,"content_type":"text/plain","content_type":"image/png"}"#;
    let res = ask_text(&server, twice, &[]).await;
    assert_eq!(res.status, 200, "{}", res.text());
    let answer = res.json();
    assert_eq!(answer["size"], 5);
    assert_eq!(answer["headers"]["Content-Type"], "image/png");
    assert!(
        answer["upload_id"].as_str().unwrap().ends_with(".png"),
        "{answer}"
    );
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn the_per_address_upload_rate_covers_presigned_asks() {
    let s3 = S3Fs::start();
    let server = Server::start(
        config()
            .media_store(s3.media_store())
            .uploads_per_minute(2u32),
    )
    .await;
    let fine = json!({"name": "a.png", "size": 10, "content_type": "image/png"});
    for _ in 0..2 {
        assert_eq!(ask(&server, fine.clone(), &[]).await.status, 200);
    }
    let res = ask(&server, fine, &[]).await;
    assert_eq!(res.assert_json_error(429)["error"], "rate_limited");
    assert!(res.header("retry-after").is_some());
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn presigned_asks_count_against_the_hours_upload_bytes_and_a_cancel_gives_them_back_once() {
    let s3 = S3Fs::start();
    let server = Server::start(
        config()
            .media_store(s3.media_store())
            .upload_bytes_per_hour(1000u64),
    )
    .await;
    let sized = |size: u64| json!({"name": "a.png", "size": size, "content_type": "image/png"});
    let first = ask(&server, sized(600), &[]).await;
    assert_eq!(first.status, 200, "{}", first.text());
    let res = ask(&server, sized(600), &[]).await;
    let body = res.assert_json_error(429);
    assert!(
        body["message"].as_str().unwrap().contains("bytes uploaded"),
        "{body}"
    );
    assert!(res.header("retry-after").is_some());

    // A cancel gives the 600 back, once: a second DELETE finds nothing,
    // and 400 are left after the next 600.
    let id = first.json()["upload_id"].as_str().unwrap().to_owned();
    assert_eq!(cancel(&server, &id, &[]).await.status, 204);
    let res = ask(&server, sized(600), &[]).await;
    assert_eq!(res.status, 200, "the 600 came back: {}", res.text());
    let res = cancel(&server, &id, &[]).await;
    assert_eq!(res.assert_json_error(404)["error"], "unknown_upload");
    let res = ask(&server, sized(600), &[]).await;
    assert_eq!(res.assert_json_error(429)["error"], "rate_limited");
    assert_eq!(
        ask(&server, sized(400), &[]).await.status,
        200,
        "what is left"
    );
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_cancelled_upload_gives_back_its_place_and_its_staged_object_goes() {
    let s3 = S3Fs::start();
    let server = s3_server(&s3).await;
    let mut answers = Vec::new();
    for i in 0..8 {
        answers.push(ask_png(&server, &format!("{i}.png")).await);
    }
    let ninth = json!({"name": "9.png", "size": PNG.len(), "content_type": "image/png"});
    let res = ask(&server, ninth.clone(), &[]).await;
    assert_eq!(res.assert_json_error(429)["error"], "too_many_pending");

    // Its PUT arrived, then the person removed the file.
    let given_up = answers[0]["upload_id"].as_str().unwrap().to_owned();
    assert_eq!(put(&answers[0], PNG).await.status, 200);
    let staged = s3.object_path(&format!("incoming/{given_up}"));
    let marker = s3.object_path(&format!("unattached/{given_up}"));
    assert!(staged.exists() && marker.exists());
    let res = cancel(&server, &given_up, &[]).await;
    assert_eq!(res.status, 204, "{}", res.text());
    assert!(res.body.is_empty());
    assert!(!staged.exists(), "the staged object is deleted");
    // The marker stays: a copy that a `complete` sent before its client
    // went away may still land, and the sweep takes it with the marker.
    assert!(marker.exists());
    let late = s3.object_path(&given_up);
    std::fs::write(&late, PNG).unwrap();
    let after_its_life = SystemTime::now() + Duration::from_secs(3600 + 120);
    let swept = s3.store().sweep_unattached_as_of(after_its_life).await;
    assert!(swept.unwrap() >= 1);
    assert!(!late.exists() && !marker.exists(), "the sweep took both");

    let res = ask(&server, ninth.clone(), &[]).await;
    assert_eq!(res.status, 200, "the place came back: {}", res.text());
    let res = ask(&server, ninth, &[]).await;
    assert_eq!(
        res.assert_json_error(429)["error"],
        "too_many_pending",
        "one place, not more"
    );
    // Forgotten: neither completed nor cancelled again.
    let res = complete(&server, &given_up, &[]).await;
    assert_eq!(res.assert_json_error(404)["error"], "unknown_upload");
    let res = cancel(&server, &given_up, &[]).await;
    assert_eq!(res.assert_json_error(404)["error"], "unknown_upload");

    // One whose PUT never came: nothing staged, still 204.
    let never_put = answers[1]["upload_id"].as_str().unwrap();
    assert_eq!(cancel(&server, never_put, &[]).await.status, 204);

    // A completed upload is not waiting: it stays.
    let res = put(&answers[2], PNG).await;
    assert_eq!(res.status, 200, "{}", res.text());
    let kept = answers[2]["upload_id"].as_str().unwrap();
    assert_eq!(complete(&server, kept, &[]).await.status, 200);
    let res = cancel(&server, kept, &[]).await;
    assert_eq!(res.assert_json_error(404)["error"], "unknown_upload");
    assert_eq!(
        download(&server, &format!("/uploads/{kept}")).await.body,
        PNG
    );

    // Ids are checked before they name anything; other methods are 405.
    for id in [
        "nope",
        "..%2F..%2Fetc%2Fpasswd",
        "00000000000000000000000000000000.png",
    ] {
        let res = cancel(&server, id, &[]).await;
        assert_eq!(
            res.assert_json_error(404)["error"],
            "unknown_upload",
            "{id}"
        );
    }
    let res = cancel(&server, &format!("{kept}/"), &[]).await;
    assert_eq!(res.assert_json_error(404)["error"], "not_found");
    let url = format!("http://{}/api/uploads/{kept}", server.addr);
    let res = request_url("POST", &url, &[], b"").await;
    assert_eq!(res.assert_json_error(405)["error"], "method_not_allowed");
    assert_eq!(res.header("allow"), Some("DELETE"));
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn in_token_mode_only_the_uploader_cancels() {
    let s3 = S3Fs::start();
    let server = Server::start(token_mode(config()).media_store(s3.media_store())).await;
    let ann = format!("Bearer {}", token("ann", &[]));
    let bob = format!("Bearer {}", token("bob", &[]));
    let asked = json!({"name": "a.png", "size": PNG.len(), "content_type": "image/png"});
    let res = ask(&server, asked, &[("Authorization", &ann)]).await;
    assert_eq!(res.status, 200, "{}", res.text());
    let answer = res.json();
    let id = answer["upload_id"].as_str().unwrap();
    assert_eq!(put(&answer, PNG).await.status, 200);
    let res = cancel(&server, id, &[("Authorization", &bob)]).await;
    assert_eq!(res.assert_json_error(403)["error"], "not_yours");
    let res = cancel(&server, id, &[]).await;
    assert_eq!(res.assert_json_error(401)["error"], "token_required");
    assert!(s3.object_path(&format!("incoming/{id}")).exists(), "kept");
    let res = cancel(&server, id, &[("Authorization", &ann)]).await;
    assert_eq!(res.status, 204, "{}", res.text());
    let res = complete(&server, id, &[("Authorization", &ann)]).await;
    assert_eq!(res.assert_json_error(404)["error"], "unknown_upload");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_cancel_with_the_storage_down_still_forgets_the_upload() {
    let mut s3 = S3Fs::start();
    let server = s3_server(&s3).await;
    let answer = ask_png(&server, "a.png").await;
    let id = answer["upload_id"].as_str().unwrap();
    assert_eq!(put(&answer, PNG).await.status, 200);
    s3.kill();
    let res = cancel(&server, id, &[]).await;
    assert_eq!(res.status, 204, "{}", res.text());
    let res = cancel(&server, id, &[]).await;
    assert_eq!(res.assert_json_error(404)["error"], "unknown_upload");
    let res = complete(&server, id, &[]).await;
    assert_eq!(res.assert_json_error(404)["error"], "unknown_upload");
    // Left for the sweep, which goes by the marker and the staged object.
    assert!(s3.object_path(&format!("unattached/{id}")).exists());
    assert!(s3.object_path(&format!("incoming/{id}")).exists());
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn post_upload_streams_into_the_bucket_and_a_message_attaches_it() {
    let s3 = S3Fs::start();
    let server = s3_server(&s3).await;
    const BOUNDARY: &str = "roomcast-s3-boundary";
    let mut form = format!(
        "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"notes.txt\"\r\n\
         Content-Type: text/plain\r\n\r\n"
    )
    .into_bytes();
    let text = "first line\nsecond line, ünïcode\n".repeat(2000);
    form.extend_from_slice(text.as_bytes());
    form.extend_from_slice(format!("\r\n--{BOUNDARY}--\r\n").as_bytes());
    let url = format!("http://{}/upload", server.addr);
    let ct = format!("multipart/form-data; boundary={BOUNDARY}");
    let res = request_url("POST", &url, &[("Content-Type", &ct)], &form).await;
    assert_eq!(res.status, 200, "{}", res.text());
    let answer = res.json();
    assert_eq!(answer["name"], "notes.txt");
    assert_eq!(answer["size"], text.len());
    let stored = answer["url"].as_str().unwrap().to_owned();
    let id = stored.strip_prefix("/uploads/").unwrap();
    // In the bucket, not in the uploads directory (which only staged it).
    assert_eq!(std::fs::read(s3.object_path(id)).unwrap(), text.as_bytes());
    let staged: Vec<_> = std::fs::read_dir(server.uploads_dir())
        .unwrap()
        .flatten()
        .collect();
    assert!(staged.is_empty(), "{staged:?}");

    let got = download(&server, &stored).await;
    assert_eq!(got.body, text.as_bytes());

    let (mut ann, _) = server.join("s3room", "ann").await;
    ann.send_attachment("notes", &stored).await;
    let posted = ann.skip_to("message").await;
    assert_eq!(posted["attachment"]["url"], stored);
    assert_eq!(posted["attachment"]["content_type"], "text/plain");
    // An upload that never completed cannot be attached.
    let res = ask(
        &server,
        json!({"name": "a.png", "size": 10, "content_type": "image/png"}),
        &[],
    )
    .await;
    let pending = format!("/uploads/{}", res.json()["upload_id"].as_str().unwrap());
    ann.send_attachment("sneaky", &pending).await;
    ann.expect_error("bad_attachment").await;
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn in_token_mode_uploads_are_their_uploaders() {
    let s3 = S3Fs::start();
    let server = Server::start(token_mode(config()).media_store(s3.media_store())).await;
    let fine = json!({"name": "a.png", "size": PNG.len(), "content_type": "image/png"});
    let res = ask(&server, fine.clone(), &[]).await;
    assert_eq!(res.assert_json_error(401)["error"], "token_required");
    let ann = format!("Bearer {}", token("ann", &[]));
    let bob = format!("Bearer {}", token("bob", &[]));
    let res = ask(&server, fine, &[("Authorization", &ann)]).await;
    assert_eq!(res.status, 200, "{}", res.text());
    let answer = res.json();
    let id = answer["upload_id"].as_str().unwrap().to_owned();
    assert_eq!(put(&answer, PNG).await.status, 200);
    let res = complete(&server, &id, &[("Authorization", &bob)]).await;
    assert_eq!(res.assert_json_error(403)["error"], "not_yours");
    let res = complete(&server, &id, &[]).await;
    assert_eq!(res.assert_json_error(401)["error"], "token_required");
    let res = complete(&server, &id, &[("Authorization", &ann)]).await;
    assert_eq!(res.status, 200, "{}", res.text());

    let url = format!("/uploads/{id}");
    let mut bob_ws = server
        .ws(&format!("/ws/r/bob?token={}", token("bob", &[])))
        .await;
    bob_ws.expect("welcome").await;
    bob_ws.expect("join").await;
    bob_ws.send_attachment("mine now", &url).await;
    bob_ws.expect_error("bad_attachment").await;
    let mut ann_ws = server
        .ws(&format!("/ws/r/ann?token={}", token("ann", &[])))
        .await;
    ann_ws.expect("welcome").await;
    ann_ws.expect("join").await;
    ann_ws.send_attachment("mine", &url).await;
    let posted = ann_ws.skip_to("message").await;
    assert_eq!(posted["attachment"]["url"], url);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn storage_down_gives_clear_503s_and_health_says_degraded() {
    let mut s3 = S3Fs::start();
    let server = s3_server(&s3).await;
    server.wait_healthy().await;
    let stored = presigned_upload(&server, "a.png", "image/png", PNG).await;
    assert_eq!(stored.status, 200, "{}", stored.text());
    let url = stored.json()["url"].as_str().unwrap().to_owned();
    s3.kill();

    let res = ask(
        &server,
        json!({"name": "b.png", "size": 10, "content_type": "image/png"}),
        &[],
    )
    .await;
    assert_eq!(res.assert_json_error(503)["error"], "storage_unavailable");
    assert!(res.header("retry-after").is_some());
    let health = server.get("/health").await;
    assert_eq!(health.status, 503, "{}", health.text());
    assert_eq!(health.json()["status"], "degraded");
    assert!(
        health.json()["reason"]
            .as_str()
            .unwrap()
            .contains("media store")
    );
    let res = server.get(&url).await;
    assert_eq!(res.assert_json_error(503)["error"], "storage_unavailable");
    const BOUNDARY: &str = "b0undary";
    let mut form = format!(
        "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.png\"\r\n\r\n"
    )
    .into_bytes();
    form.extend_from_slice(PNG);
    form.extend_from_slice(format!("\r\n--{BOUNDARY}--\r\n").as_bytes());
    let post = format!("http://{}/upload", server.addr);
    let ct = format!("multipart/form-data; boundary={BOUNDARY}");
    let res = request_url("POST", &post, &[("Content-Type", &ct)], &form).await;
    assert_eq!(res.assert_json_error(503)["error"], "storage_unavailable");
    let staged: Vec<_> = std::fs::read_dir(server.uploads_dir())
        .unwrap()
        .flatten()
        .collect();
    assert!(staged.is_empty(), "{staged:?}");
    let (mut ann, _) = server.join("r", "ann").await;
    ann.expect("join").await;
    ann.send_attachment("x", &url).await;
    ann.expect_error("unavailable").await;
    server.shutdown().await.unwrap();
}

/// Requests to the bucket one after another share one kept-alive
/// connection; when the bucket's side drops it, the next request goes on a
/// new one and succeeds, and the bucket is not reported failing.
#[tokio::test]
async fn requests_to_the_bucket_share_a_connection_and_outlive_its_loss() {
    let s3 = S3Fs::start();
    let stored = store_png(&s3.store(), PNG, None).await;
    let proxy = Proxy::start(&s3.addr.to_string()).await;
    let store = s3.store_via(&proxy);
    for _ in 0..3 {
        let info = store.info(stored.name.clone()).await.unwrap();
        assert_eq!(info.expect("stored").size, PNG.len() as u64);
        let head = store.get_range(&stored.name, 0, 4).await.unwrap();
        assert_eq!(head, PNG[..4]);
    }
    assert_eq!(proxy.connections(), 1, "a connection per request");

    proxy.cut();
    proxy.restore();
    let head = store.head(stored.name.as_str()).await.unwrap();
    assert_eq!(head.expect("stored").size, Some(PNG.len() as u64));
    assert_eq!(proxy.connections(), 2);
    assert_eq!(store.client().degraded(), None);
}

#[tokio::test]
async fn the_sweep_deletes_what_nobody_attached_or_completed() {
    let s3 = S3Fs::start();
    let ttl = Duration::from_secs(3600);
    let store = s3.store();
    let mut stored = Vec::new();
    for owner in ["ann", "bob"] {
        stored.push(store_png(&store, PNG, Some(owner)).await.name);
    }
    let never_completed = store.presign_put(Kind::Png, 10).await.unwrap().name;
    // PUT and never completed; and refused by `complete`, then PUT again
    // with the same URL (which still works): both only wrote `incoming/`.
    let never = store
        .presign_put(Kind::Png, PNG.len() as u64)
        .await
        .unwrap();
    assert_eq!(put_presigned(&never, PNG).await.status, 200);
    let html = b"<html>not an image</html>";
    let refused = store
        .presign_put(Kind::Png, html.len() as u64)
        .await
        .unwrap();
    assert_eq!(put_presigned(&refused, html).await.status, 200);
    let verdict = store
        .complete(
            refused.name.clone(),
            html.len() as u64,
            DisplayName::sanitize(Some("x.png")),
            None,
        )
        .await;
    assert!(
        matches!(verdict, Err(CompleteError::BadType(None))),
        "{verdict:?}"
    );
    assert!(
        !s3.object_path(&format!("unattached/{}", refused.name.as_str()))
            .exists()
    );
    assert_eq!(put_presigned(&refused, html).await.status, 200);
    let staged = |name: &StoredName| s3.object_path(&format!("incoming/{}", name.as_str()));
    assert!(staged(&never.name).exists() && staged(&refused.name).exists());
    assert_eq!(
        store.attach(stored[0].clone(), "bob").await.unwrap_err(),
        roomcast::media::AttachError::NotYours
    );
    store.attach(stored[0].clone(), "ann").await.unwrap();

    // Not yet old: nothing goes.
    assert_eq!(store.sweep_unattached().await.unwrap(), 0);
    assert!(staged(&never.name).exists() && staged(&refused.name).exists());
    // Past the URL's life plus the upload timeout, a `complete` that
    // started just before may still be waiting to copy: kept.
    let soon = SystemTime::now() + Duration::from_secs(60 + 60 + 90);
    assert_eq!(store.sweep_unattached_as_of(soon).await.unwrap(), 0);
    assert!(staged(&never.name).exists() && staged(&refused.name).exists());
    // Past the URL's life plus twice the upload timeout (and a minute),
    // not the time to live: staged objects go, marker or not; uploads stay.
    let soon = SystemTime::now() + Duration::from_secs(60 + 2 * 60 + 90);
    assert_eq!(store.sweep_unattached_as_of(soon).await.unwrap(), 0);
    assert!(!staged(&never.name).exists() && !staged(&refused.name).exists());
    assert!(
        s3.object_path(&format!("unattached/{}", never.name.as_str()))
            .exists()
    );
    let later = SystemTime::now() + ttl + Duration::from_secs(120);
    assert_eq!(store.sweep_unattached_as_of(later).await.unwrap(), 3);
    assert!(
        s3.object_path(stored[0].as_str()).exists(),
        "attached: kept"
    );
    assert!(
        s3.object_path(&format!("{}.meta", stored[0].as_str()))
            .exists()
    );
    for gone in [&stored[1], &never_completed, &never.name] {
        assert!(!s3.object_path(gone.as_str()).exists(), "{}", gone.as_str());
        assert!(
            !s3.object_path(&format!("unattached/{}", gone.as_str()))
                .exists()
        );
    }
    assert_eq!(
        store.attach(stored[1].clone(), "bob").await.unwrap_err(),
        roomcast::media::AttachError::Unknown
    );
}

#[tokio::test]
async fn a_local_store_has_no_presigned_uploads() {
    let server = Server::start(config()).await;
    assert_eq!(config().media_store, MediaStoreKind::Local);
    let res = ask(
        &server,
        json!({"name": "a.png", "size": 10, "content_type": "image/png"}),
        &[],
    )
    .await;
    assert_eq!(res.assert_json_error(404)["error"], "no_presigned_uploads");
    let url = format!(
        "http://{}/api/uploads/00000000000000000000000000000000.png",
        server.addr
    );
    let res = request_url("DELETE", &url, &[], b"").await;
    assert_eq!(res.assert_json_error(404)["error"], "no_presigned_uploads");
    assert!(
        server
            .get("/")
            .await
            .text()
            .contains("&quot;media&quot;:&quot;local&quot;")
    );
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn wrong_keys_are_refused_by_the_bucket_and_reported() {
    let s3 = S3Fs::start();
    let wrong = roomcast::media::s3::S3Target::parse(&format!(
        "s3://{}?endpoint={}",
        common::s3::S3_BUCKET,
        s3.endpoint
    ))
    .unwrap()
    .with_credentials(roomcast::media::s3::sigv4::Credentials::new(
        common::s3::S3_ACCESS_KEY,
        "not the secret",
    ));
    let server = Server::start(config().media_store(MediaStoreKind::S3(wrong))).await;
    let res = ask(
        &server,
        json!({"name": "a.png", "size": 10, "content_type": "image/png"}),
        &[],
    )
    .await;
    assert_eq!(res.assert_json_error(503)["error"], "storage_unavailable");
    let health = server.get("/health").await;
    assert_eq!(health.status, 503, "{}", health.text());
    assert!(
        health.json()["reason"].as_str().unwrap().contains("403"),
        "{}",
        health.text()
    );
    server.shutdown().await.unwrap();
}

/// A bucket that does not exist answers every request, so only the probe
/// (`HEAD /bucket`, answered `404`) can tell: `/health` says so, and the
/// `404`s other requests meet do not hide it, until the bucket is made and
/// answers a request in `2xx`. (s3s-fs, unlike S3, takes a PUT into a
/// bucket that does not exist, so the `404` met here is a download's.)
#[tokio::test]
async fn a_bucket_that_does_not_exist_is_reported_until_it_answers() {
    let s3 = S3Fs::start();
    let target = s3.target_of("no-such-bucket");
    let server = Server::start(config().media_store(MediaStoreKind::S3(target))).await;
    // The first probe goes out as the server starts; its answer is awaited.
    let deadline = tokio::time::Instant::now() + common::TIMEOUT;
    let mut health = server.get("/health").await;
    while health.status == 200 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
        health = server.get("/health").await;
    }
    assert_eq!(health.status, 503, "{}", health.text());
    let reason = health.json()["reason"].as_str().unwrap().to_owned();
    assert!(
        reason.contains("no-such-bucket does not exist") && reason.contains("404"),
        "{reason}"
    );

    let res = server
        .get("/uploads/0123456789abcdef0123456789abcdef.png")
        .await;
    assert_eq!(res.status, 404, "{}", res.text());
    let health = server.get("/health").await;
    assert_eq!(
        health.status,
        503,
        "a download's 404 hid it: {}",
        health.text()
    );

    std::fs::create_dir(s3.dir.path().join("no-such-bucket")).unwrap();
    let asked = json!({"name": "a.png", "size": PNG.len(), "content_type": "image/png"});
    let res = ask(&server, asked, &[]).await;
    assert_eq!(res.status, 200, "{}", res.text());
    let health = server.get("/health").await;
    assert_eq!(health.status, 200, "{}", health.text());
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_presigned_url_used_again_after_complete_cannot_change_the_upload() {
    let s3 = S3Fs::start();
    let server = s3_server(&s3).await;
    let answer = ask_png(&server, "dot.png").await;
    let id = answer["upload_id"].as_str().unwrap().to_owned();
    assert_eq!(put(&answer, PNG).await.status, 200);
    let done = complete(&server, &id, &[]).await;
    assert_eq!(done.status, 200, "{}", done.text());
    // The staged object is gone once the checked copy is kept.
    assert!(!s3.object_path(&format!("incoming/{id}")).exists());

    // The URL works until it expires: markup of the same length PUT again
    // is taken by the bucket, but only under the staging key.
    let mut markup = b"<script>alert(1)</script>".to_vec();
    markup.resize(PNG.len(), b' ');
    assert_eq!(put(&answer, &markup).await.status, 200);
    assert_eq!(
        std::fs::read(s3.object_path(&format!("incoming/{id}"))).unwrap(),
        markup
    );
    let got = download(&server, &format!("/uploads/{id}")).await;
    assert_eq!(got.status, 200);
    assert_eq!(got.body, PNG, "what was checked is what is served");
    // Completing again is refused: the upload is no longer waiting.
    let again = complete(&server, &id, &[]).await.assert_json_error(404);
    assert_eq!(again["error"], "unknown_upload");
    let got = download(&server, &format!("/uploads/{id}")).await;
    assert_eq!(got.body, PNG);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn redirects_sign_the_type_and_disposition_and_the_requests_method() {
    let s3 = S3Fs::start();
    let server = Server::start(
        config()
            .media_store(s3.media_store())
            .presign_ttl(Duration::from_secs(30)),
    )
    .await;
    let text = presigned_upload(&server, "my notes ü.txt", "text/plain", b"hello\n").await;
    assert_eq!(text.status, 200, "{}", text.text());
    let text_url = text.json()["url"].as_str().unwrap().to_owned();
    let png = presigned_upload(&server, "dot.png", "image/png", PNG).await;
    let png_url = png.json()["url"].as_str().unwrap().to_owned();

    let res = server.get(&text_url).await;
    assert_eq!(res.status, 302);
    // Half the URL's 30 s: a cached redirect still works.
    assert_eq!(res.header("cache-control"), Some("private, max-age=15"));
    let location = res.header("location").unwrap().to_owned();
    assert!(
        location.contains(
            "response-content-disposition=attachment%3B%20filename%2A%3DUTF-8%27%27my%2520notes%2520%25C3%25BC.txt"
        ),
        "{location}"
    );
    assert!(
        location.contains("response-content-type=text%2Fplain%3B%20charset%3Dutf-8"),
        "{location}"
    );
    // Signed: the bucket takes the URL as it is, and refuses it changed.
    // (s3s-fs accepts the response-* overrides but does not apply them, so
    // the headers themselves cannot be checked here; S3 applies them.)
    let got = request_url("GET", &location, &[], b"").await;
    assert_eq!((got.status, got.body.as_slice()), (200, &b"hello\n"[..]));
    let inline = location.replace("attachment%3B", "inline%3B");
    assert_ne!(inline, location);
    assert_eq!(request_url("GET", &inline, &[], b"").await.status, 403);

    let res = server.get(&png_url).await;
    let location = res.header("location").unwrap();
    assert!(
        location
            .contains("response-content-disposition=inline%3B%20filename%2A%3DUTF-8%27%27dot.png"),
        "{location}"
    );

    // HEAD is redirected to a URL signed for HEAD, which the bucket answers.
    let head = request_url(
        "HEAD",
        &format!("http://{}{png_url}", server.addr),
        &[],
        b"",
    )
    .await;
    assert_eq!(head.status, 302);
    let location = head.header("location").unwrap();
    let res = request_url("HEAD", location, &[], b"").await;
    assert_eq!(res.status, 200);
    assert_eq!(
        res.header("content-length"),
        Some(PNG.len().to_string().as_str())
    );
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_refused_ask_gives_back_the_bytes_it_charged() {
    let s3 = S3Fs::start();
    let server = Server::start(
        config()
            .media_store(s3.media_store())
            .upload_bytes_per_hour(1000u64)
            .max_pending_uploads((1, 100)),
    )
    .await;
    let mut png = PNG.to_vec();
    png.resize(600, 0);
    let sized = |size: usize| json!({"name": "a.png", "size": size, "content_type": "image/png"});
    let first = ask(&server, sized(png.len()), &[]).await;
    assert_eq!(first.status, 200, "{}", first.text());
    // Refused for the waiting upload: each would otherwise take 400 bytes.
    for _ in 0..3 {
        let res = ask(&server, sized(400), &[]).await;
        assert_eq!(res.assert_json_error(429)["error"], "too_many_pending");
    }
    let answer = first.json();
    assert_eq!(put(&answer, &png).await.status, 200);
    let done = complete(&server, answer["upload_id"].as_str().unwrap(), &[]).await;
    assert_eq!(done.status, 200, "{}", done.text());
    // 600 were charged, 400 are left.
    let res = ask(&server, sized(400), &[]).await;
    assert_eq!(res.status, 200, "{}", res.text());
    server.shutdown().await.unwrap();
}

/// A client that closes its connection while its ask waits for the bucket
/// takes nothing with it: hyper drops the request there, and its place
/// among the waiting uploads and the bytes its size charged come back.
/// (Before, both stayed taken until the place expired, 10 minutes later.)
#[tokio::test]
async fn an_ask_abandoned_while_the_bucket_stalls_gives_back_its_place_and_bytes() {
    let s3 = S3Fs::start();
    let (server, proxy) = behind_proxy(&s3, |c| {
        c.max_pending_uploads((1, 100))
            .upload_bytes_per_hour(1000u64)
    })
    .await;
    let sized = |size: u64| json!({"name": "a.png", "size": size, "content_type": "image/png"});

    proxy.freeze();
    let asking = post_unanswered(&server, "/api/uploads", &sized(600).to_string()).await;
    // Its marker is the bucket's first request: by then the ask holds the
    // one place and 600 of the 1000 bytes.
    let conn = proxy.wait_held(b"PUT /media/unattached/").await;
    drop(asking);
    // Dropping the request drops its call to the bucket, which closes that
    // connection: by then whatever the request held was given back.
    proxy.wait_hung_up(conn).await;
    proxy.thaw();

    // The place: 400 bytes fit either way.
    let res = ask(&server, sized(400), &[]).await;
    assert_eq!(res.status, 200, "the place came back: {}", res.text());
    let id = res.json()["upload_id"].as_str().unwrap().to_owned();
    assert_eq!(cancel(&server, &id, &[]).await.status, 204);
    // The bytes: with that one given up, the 1000 are there again (999:
    // the hour's bytes are floats, and a refund may miss a hair).
    let res = ask(&server, sized(999), &[]).await;
    assert_eq!(res.status, 200, "the bytes came back: {}", res.text());
    server.shutdown().await.unwrap();
}

/// A client that closes its connection while its `complete` waits for the
/// bucket's copy leaves the upload waiting, as a storage error does: a
/// retry completes it. (Before, it was out of the waiting ones for good: a
/// retry, or a `DELETE`, got `404`, and its bytes never came back.)
#[tokio::test]
async fn a_complete_abandoned_while_the_bucket_stalls_leaves_the_upload_waiting() {
    let s3 = S3Fs::start();
    let (server, proxy) = behind_proxy(&s3, |c| c).await;
    let answer = ask_png(&server, "a.png").await;
    let id = answer["upload_id"].as_str().unwrap();
    assert_eq!(put(&answer, PNG).await.status, 200);

    proxy.freeze();
    let path = format!("/api/uploads/{id}/complete");
    let completing = post_unanswered(&server, &path, "").await;
    // The copy to the upload's own key is the bucket's first request.
    let conn = proxy
        .wait_held(format!("PUT /media/{id} ").as_bytes())
        .await;
    // Meanwhile the upload is that request's: a retry finds nothing.
    let res = complete(&server, id, &[]).await;
    assert_eq!(res.assert_json_error(404)["error"], "unknown_upload");
    drop(completing);
    proxy.wait_hung_up(conn).await;
    // The held copy is dropped, not passed on: s3s-fs copies by truncating
    // the target in place, so running it late could race the retry's checks.
    proxy.cut();
    proxy.restore();
    proxy.thaw();

    let done = complete(&server, id, &[]).await;
    assert_eq!(done.status, 200, "the upload waited again: {}", done.text());
    assert_eq!(done.json()["url"], format!("/uploads/{id}"));
    assert_eq!(download(&server, &format!("/uploads/{id}")).await.body, PNG);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn attach_measures_age_from_the_marker_as_the_sweep_does() {
    let s3 = S3Fs::start();
    let ttl = Duration::from_secs(3600);
    let store = s3.store();
    let mut names = Vec::new();
    for _ in 0..2 {
        names.push(store_png(&store, PNG, None).await.name);
    }
    // The first one's marker (s3s-fs reports a file's mtime) is two hours
    // old; its sidecar says it was stored just now.
    let marker = s3.object_path(&format!("unattached/{}", names[0].as_str()));
    std::fs::File::options()
        .write(true)
        .open(&marker)
        .unwrap()
        .set_modified(SystemTime::now() - 2 * ttl)
        .unwrap();
    assert_eq!(
        store.attach(names[0].clone(), "ann").await.unwrap_err(),
        roomcast::media::AttachError::Expired
    );
    assert!(
        store
            .attach(names[1].clone(), "ann")
            .await
            .unwrap()
            .attached
    );
}

#[test]
fn an_s3_store_whose_uploads_could_expire_before_completing_does_not_start() {
    let dir = common::TempDir::new("s3-timing");
    let (code, stdout, stderr) = common::Binary::run_to_end_with_env(
        dir.path(),
        &[
            "--store",
            "memory",
            "--media-store",
            "s3://media?endpoint=http://127.0.0.1:9",
            "--presign-ttl",
            "3600",
            "--unattached-upload-hours",
            "1",
        ],
        &[
            ("AWS_ACCESS_KEY_ID", "key"),
            ("AWS_SECRET_ACCESS_KEY", "secret"),
        ],
    );
    assert_eq!(code, Some(1), "{stderr}");
    assert!(!stdout.contains("listening"), "{stdout}");
    assert!(
        stderr.contains("--presign-ttl") && stderr.contains("--unattached-upload-hours"),
        "{stderr}"
    );
}

#[tokio::test]
async fn a_preview_is_recorded_in_the_sidecar_object_and_deleted_with_its_upload() {
    let s3 = S3Fs::start();
    let store = s3.store();
    let info = store_png(&store, PNG, Some("ann")).await;
    // Reads are bounded: the whole object, or nothing.
    assert_eq!(
        &store.read_whole(&info.name, 1 << 20).await.unwrap()[..],
        PNG
    );
    assert!(matches!(
        store.read_whole(&info.name, 4).await,
        Err(roomcast::media::S3Error::TooLarge)
    ));

    let preview = store
        .put_preview(&info.name, Kind::Jpeg, b"jpeg bytes".to_vec(), (320, 160))
        .await
        .unwrap()
        .expect("the upload is there");
    assert_eq!(preview.url(), format!("{}.preview.jpg", info.url()));
    let sidecar: Value = serde_json::from_slice(
        &std::fs::read(s3.object_path(&format!("{}.meta", info.name.as_str()))).unwrap(),
    )
    .unwrap();
    assert_eq!(sidecar["owner"], "ann", "kept: {sidecar}");
    assert_eq!(sidecar["name"], "a.png", "kept: {sidecar}");
    assert_eq!(sidecar["preview"]["width"], 320, "{sidecar}");
    let attached = store.attach(info.name.clone(), "ann").await.unwrap();
    assert_eq!(attached.preview.as_ref(), Some(&preview));

    let url = store
        .presign_preview(&preview.name, &http::Method::GET)
        .await
        .unwrap()
        .expect("recorded");
    let got = request_url("GET", &url, &[], b"").await;
    assert_eq!(got.status, 200, "{}", got.text());
    assert_eq!(got.body, b"jpeg bytes");
    assert_eq!(got.header("content-type"), Some("image/jpeg"));
    let unrecorded = roomcast::media::PreviewName::new(&info.name, Kind::Png).unwrap();
    let none = store.presign_preview(&unrecorded, &http::Method::GET).await;
    assert!(matches!(none, Ok(None)), "{none:?}");

    let preview_key = preview.name.as_str().to_owned();
    store.delete(&info.name).await.unwrap();
    assert!(!s3.object_path(&preview_key).exists());

    // A preview finished after its upload was deleted leaves nothing.
    let late = store
        .put_preview(&info.name, Kind::Jpeg, b"late".to_vec(), (320, 160))
        .await
        .unwrap();
    assert_eq!(late, None);
    assert!(!s3.object_path(&preview_key).exists());
    assert!(
        !s3.object_path(&format!("{}.meta", info.name.as_str()))
            .exists()
    );
}

#[tokio::test]
async fn a_sidecar_changed_to_an_impossible_time_reads_as_unknown() {
    let s3 = S3Fs::start();
    let store = s3.store();
    let info = store_png(&store, PNG, Some("ann")).await;
    let path = s3.object_path(&format!("{}.meta", info.name.as_str()));
    let mut sidecar: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    sidecar["stored_at"] = json!(u64::MAX);
    std::fs::write(&path, serde_json::to_vec(&sidecar).unwrap()).unwrap();
    let read = store.info(info.name.clone()).await.unwrap();
    let read = read.expect("the upload is still there");
    assert_eq!((read.size, read.stored_at), (info.size, None));
}
