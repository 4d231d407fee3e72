//! Image previews against a real server (feature `previews`): every image
//! format gets a 320 px preview of the right kind, served from
//! `/uploads/<name>`, carried by the message that attaches it (at once, or
//! by a `message_updated` when it is ready later), by history, and across a
//! restart with SQLite; a decompression bomb is refused without the
//! server's memory growing; with no workers nothing is made. With the S3
//! store (a real `s3s-fs`), uploads by both paths get a preview object in
//! the bucket, served by redirect and swept with its upload.
//!
//! The images are made here with the `image` crate. Waits are bounded by
//! the helpers' timeout; nothing passes because something took a certain
//! time.

mod common;

use std::io::Cursor;
use std::time::{Duration, SystemTime};

use common::s3::{S3Fs, request_url};
use common::{Binary, HttpResponse, Server, TempDir, config, http_raw};
use image::codecs::gif::GifEncoder;
use image::codecs::webp::WebPEncoder;
use image::{DynamicImage, Frame, GenericImageView, ImageFormat, Rgb, RgbImage, Rgba, RgbaImage};
use roomcast::store::StoreKind;
use serde_json::Value;

const BOUNDARY: &str = "roomcast-preview-test-5b1e";

/// `POST /upload` of `data` as `filename` to `addr`.
async fn upload_to(addr: std::net::SocketAddr, filename: &str, data: &[u8]) -> HttpResponse {
    let mut body = Vec::new();
    body.extend_from_slice(
        format!(
            "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; \
             filename=\"{filename}\"\r\nContent-Type: application/octet-stream\r\n\r\n"
        )
        .as_bytes(),
    );
    body.extend_from_slice(data);
    body.extend_from_slice(format!("\r\n--{BOUNDARY}--\r\n").as_bytes());
    let mut request = format!(
        "POST /upload HTTP/1.1\r\nHost: {addr}\r\nContent-Type: multipart/form-data; \
         boundary={BOUNDARY}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(&body);
    http_raw(addr, &request, false).await
}

/// The URL of a stored upload of `data`.
async fn uploaded(addr: std::net::SocketAddr, filename: &str, data: &[u8]) -> String {
    let res = upload_to(addr, filename, data).await;
    assert_eq!(res.status, 200, "upload of {filename}: {}", res.text());
    let answer = res.json();
    assert!(
        answer.get("preview").is_none(),
        "the upload never waits for one"
    );
    answer["url"].as_str().unwrap().to_owned()
}

fn encoded(image: &DynamicImage, format: ImageFormat) -> Vec<u8> {
    let mut out = Vec::new();
    image.write_to(&mut Cursor::new(&mut out), format).unwrap();
    out
}

fn photo(width: u32, height: u32) -> DynamicImage {
    RgbImage::from_fn(width, height, |x, y| {
        Rgb([(x * 255 / width) as u8, (y * 255 / height) as u8, 128])
    })
    .into()
}

/// A lossless WebP with transparent pixels.
fn webp_with_alpha(width: u32, height: u32) -> Vec<u8> {
    let image = RgbaImage::from_fn(width, height, |x, _| Rgba([200, 30, 30, (x % 256) as u8]));
    let mut out = Vec::new();
    WebPEncoder::new_lossless(&mut out)
        .encode(
            image.as_raw(),
            width,
            height,
            image::ExtendedColorType::Rgba8,
        )
        .unwrap();
    out
}

/// A two-frame GIF: red, then blue.
fn gif_red_then_blue(width: u32, height: u32) -> Vec<u8> {
    let mut out = Vec::new();
    {
        let mut encoder = GifEncoder::new(&mut out);
        for color in [[255, 0, 0, 255], [0, 0, 255, 255]] {
            let frame = RgbaImage::from_pixel(width, height, Rgba(color));
            encoder.encode_frame(Frame::new(frame)).unwrap();
        }
    }
    out
}

/// The preview `{url, width, height}` of the message attaching `url`: from
/// its `message` event, or from the `message_updated` that follows when
/// the preview was ready only after the message went out.
async fn preview_for(client: &mut common::Client, url: &str) -> Value {
    let message = client.skip_to("message").await;
    assert_eq!(message["attachment"]["url"], url, "{message}");
    if message["attachment"]["preview"].is_object() {
        println!("{url}: the preview came with the message");
        return message["attachment"]["preview"].clone();
    }
    loop {
        let updated = client.skip_to("message_updated").await;
        if updated["message_id"] == message["message_id"] {
            println!("{url}: the preview came later, by message_updated");
            assert!(updated.get("edited_at").is_none(), "not an edit: {updated}");
            return updated["attachment"]["preview"].clone();
        }
    }
}

/// Fetches a preview and checks it is what it says.
async fn fetched(server: &Server, preview: &Value, kind: ImageFormat) -> DynamicImage {
    let url = preview["url"].as_str().unwrap();
    let res = server.get(url).await;
    assert_eq!(res.status, 200, "{url}");
    assert_eq!(res.header("content-type"), Some(kind.to_mime_type()));
    assert_eq!(res.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(res.header("content-security-policy"), Some("sandbox"));
    let image = image::load_from_memory_with_format(&res.body, kind).unwrap();
    assert_eq!(
        (image.width(), image.height()),
        (
            preview["width"].as_u64().unwrap() as u32,
            preview["height"].as_u64().unwrap() as u32
        )
    );
    image
}

/// A file name, its bytes, its preview's kind and size.
type Case = (&'static str, Vec<u8>, ImageFormat, (u32, u32));

#[tokio::test]
async fn every_image_format_gets_a_preview_of_the_right_size_and_kind() {
    let server = Server::start(config()).await;
    let (mut ann, _) = server.join("pics", "ann").await;
    let cases: [Case; 4] = [
        (
            "wide.png",
            encoded(&photo(1200, 600), ImageFormat::Png),
            ImageFormat::Jpeg,
            (320, 160),
        ),
        (
            "tall.jpg",
            encoded(&photo(600, 1200), ImageFormat::Jpeg),
            ImageFormat::Jpeg,
            (160, 320),
        ),
        (
            "sticker.webp",
            webp_with_alpha(1000, 400),
            ImageFormat::Png,
            (320, 128),
        ),
        (
            "anim.gif",
            gif_red_then_blue(640, 640),
            ImageFormat::Jpeg,
            (320, 320),
        ),
    ];
    for (file, bytes, kind, size) in cases {
        let url = uploaded(server.addr, file, &bytes).await;
        ann.send_attachment("", &url).await;
        let preview = preview_for(&mut ann, &url).await;
        assert_eq!(
            (preview["width"].as_u64(), preview["height"].as_u64()),
            (Some(u64::from(size.0)), Some(u64::from(size.1))),
            "{file}: {preview}"
        );
        let preview_url = preview["url"].as_str().unwrap();
        assert_eq!(
            preview_url,
            format!("{url}.preview.{}", kind.extensions_str()[0]),
            "{file}: stored beside its upload"
        );
        let image = fetched(&server, &preview, kind).await;
        if file == "anim.gif" {
            let Rgba([r, _, b, _]) = image.get_pixel(160, 160);
            assert!(r > 200 && b < 60, "the first frame, red: {r} {b}");
        }
        // The sidecar records it.
        let name = url.strip_prefix("/uploads/").unwrap();
        let sidecar: Value = serde_json::from_slice(
            &std::fs::read(server.uploads_dir().join(format!("{name}.meta"))).unwrap(),
        )
        .unwrap();
        assert_eq!(
            sidecar["preview"]["file"].as_str(),
            preview_url.strip_prefix("/uploads/")
        );
    }
    assert_eq!(server.metric("roomcast_previews_total").await, 4);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_preview_ready_before_the_message_is_in_it_and_history_keeps_it_across_a_restart() {
    let server = Server::start(config().store(StoreKind::Sqlite)).await;
    let url = uploaded(
        server.addr,
        "a.png",
        &encoded(&photo(900, 900), ImageFormat::Png),
    )
    .await;
    server.wait_metric("roomcast_previews_total", 1).await;
    let (mut ann, _) = server.join("pics", "ann").await;
    ann.send_attachment("look", &url).await;
    let message = ann.skip_to("message").await;
    let preview = message["attachment"]["preview"].clone();
    assert_eq!(preview["width"], 320, "{message}");
    assert_eq!(preview["height"], 320);
    fetched(&server, &preview, ImageFormat::Jpeg).await;
    ann.close().await;

    let server = server.restart().await;
    let (_, welcome) = server.join("pics", "bob").await;
    let history = welcome["history"].as_array().unwrap();
    assert_eq!(history.len(), 1, "{welcome}");
    assert_eq!(history[0]["attachment"]["preview"], preview);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_message_posted_at_once_gets_its_preview_and_history_too() {
    let server = Server::start(config().store(StoreKind::Sqlite)).await;
    let (mut ann, _) = server.join("pics", "ann").await;
    // A large image, posted the moment it is stored: its preview is most
    // likely made after the message went out (announced by
    // `message_updated`); either way the message ends up with it.
    let url = uploaded(
        server.addr,
        "big.png",
        &encoded(&photo(2400, 1600), ImageFormat::Png),
    )
    .await;
    ann.send_attachment("", &url).await;
    let preview = preview_for(&mut ann, &url).await;
    assert_eq!(preview["width"], 320, "{preview}");
    assert_eq!(preview["height"], 213);
    let (_, welcome) = server.join("pics", "bob").await;
    assert_eq!(welcome["history"][0]["attachment"]["preview"], preview);
    ann.close().await;
    let server = server.restart().await;
    let (_, welcome) = server.join("pics", "cat").await;
    assert_eq!(welcome["history"][0]["attachment"]["preview"], preview);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn small_images_and_other_files_get_none_and_preview_names_are_strict() {
    let server = Server::start(config()).await;
    let (mut ann, _) = server.join("pics", "ann").await;
    let small = uploaded(
        server.addr,
        "icon.png",
        &encoded(&photo(300, 200), ImageFormat::Png),
    )
    .await;
    server
        .wait_metric("roomcast_previews_skipped_total", 1)
        .await;
    ann.send_attachment("", &small).await;
    let message = ann.skip_to("message").await;
    assert!(message["attachment"].get("preview").is_none(), "{message}");
    let text = uploaded(server.addr, "a.txt", b"hello\n").await;
    ann.send_attachment("", &text).await;
    let message = ann.skip_to("message").await;
    assert!(message["attachment"].get("preview").is_none(), "{message}");
    // Only files of images (never text) are queued.
    assert_eq!(server.metric("roomcast_previews_skipped_total").await, 1);

    let name = small.strip_prefix("/uploads/").unwrap();
    for path in [
        format!("/uploads/{name}.preview.jpg"),
        format!("/uploads/{name}.preview.gif"),
        format!("/uploads/{name}.preview.jpg.meta"),
        format!("/uploads/..%2f{name}.preview.jpg"),
    ] {
        assert_eq!(server.get(&path).await.status, 404, "{path}");
    }
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn with_no_workers_nothing_is_made_and_the_attachment_has_no_preview() {
    let server = Server::start(config().preview_workers(0usize)).await;
    let url = uploaded(
        server.addr,
        "a.png",
        &encoded(&photo(800, 800), ImageFormat::Png),
    )
    .await;
    let (mut ann, _) = server.join("pics", "ann").await;
    ann.send_attachment("", &url).await;
    let message = ann.skip_to("message").await;
    assert!(message["attachment"].get("preview").is_none(), "{message}");
    for metric in [
        "roomcast_previews_total",
        "roomcast_previews_skipped_total",
        "roomcast_previews_dropped_total",
    ] {
        assert_eq!(server.metric(metric).await, 0, "{metric}");
    }
    let name = url.strip_prefix("/uploads/").unwrap();
    let files = std::fs::read_dir(server.uploads_dir()).unwrap().count();
    assert_eq!(files, 2, "{name} and its sidecar only");
    server.shutdown().await.unwrap();
}

/// CRC-32 (IEEE) of a PNG chunk's type and data.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    let start = out.len();
    out.extend_from_slice(kind);
    out.extend_from_slice(data);
    let crc = crc32(&out[start..]);
    out.extend_from_slice(&crc.to_be_bytes());
}

/// A valid PNG declaring 50 000 × 50 000 RGB pixels (7.5 GB decoded) whose
/// IDAT is a few KiB of zlib: the first rows, all zeros.
fn png_bomb() -> Vec<u8> {
    let (width, height) = (50_000u32, 50_000u32);
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&width.to_be_bytes());
    ihdr.extend_from_slice(&height.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]); // 8-bit RGB
    chunk(&mut out, b"IHDR", &ihdr);
    let rows = vec![0u8; (1 + 3 * width as usize) * 64];
    let idat = miniz_oxide::deflate::compress_to_vec_zlib(&rows, 9);
    chunk(&mut out, b"IDAT", &idat);
    chunk(&mut out, b"IEND", &[]);
    out
}

/// The peak resident memory of process `pid`, in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/<pid>/status")
}

#[tokio::test]
async fn a_decompression_bomb_gets_no_preview_and_costs_no_memory() {
    let bomb = png_bomb();
    assert!(bomb.len() < 64 << 10, "{} bytes", bomb.len());
    // The real binary, so its memory is its own.
    let dir = TempDir::new("bomb");
    let server = Binary::start(dir.path(), &["--store", "memory"]);
    let before = peak_rss_kib(server.child.id());
    let url = uploaded(server.addr, "bomb.png", &bomb).await;
    let deadline = tokio::time::Instant::now() + common::TIMEOUT;
    while server.metric("roomcast_previews_skipped_total").await == 0 {
        assert!(tokio::time::Instant::now() < deadline, "the job never ran");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let after = peak_rss_kib(server.child.id());
    println!("bomb: peak RSS {before} KiB before, {after} KiB after");
    assert!(
        after < before + 16 * 1024,
        "peak RSS grew from {before} KiB to {after} KiB"
    );
    assert_eq!(server.metric("roomcast_previews_total").await, 0);
    let (mut ann, _) = server.join("pics", "ann").await;
    ann.send_attachment("", &url).await;
    let message = ann.skip_to("message").await;
    assert!(message["attachment"].get("preview").is_none(), "{message}");
    server.kill9();
}

/// With the S3 store: the preview object is signed-HEAD-able in the bucket,
/// `GET` of its URL redirects to a presigned GET of it, the sidecar object
/// records it beside the fields it had.
async fn check_in_bucket(server: &Server, s3: &S3Fs, url: &str, preview: &Value) {
    let preview_url = preview["url"].as_str().unwrap();
    assert_eq!(preview_url, format!("{url}.preview.jpg"), "{preview}");
    let key = preview_url.strip_prefix("/uploads/").unwrap();
    let head = s3.client().presign(
        &http::Method::HEAD,
        key,
        &[],
        SystemTime::now(),
        Duration::from_secs(60),
    );
    assert_eq!(request_url("HEAD", &head, &[], b"").await.status, 200);

    let res = server.get(preview_url).await;
    assert_eq!(res.status, 302, "{}", res.text());
    let location = res.header("location").unwrap().to_owned();
    assert!(location.starts_with(&s3.endpoint), "{location}");
    let got = request_url("GET", &location, &[], b"").await;
    assert_eq!(got.status, 200, "{}", got.text());
    assert_eq!(got.header("content-type"), Some("image/jpeg"));
    assert_eq!(got.header("content-disposition"), Some("inline"));
    let image = image::load_from_memory_with_format(&got.body, ImageFormat::Jpeg).unwrap();
    assert!(image.width().max(image.height()) <= 320);
    assert_eq!(
        (u64::from(image.width()), u64::from(image.height())),
        (
            preview["width"].as_u64().unwrap(),
            preview["height"].as_u64().unwrap()
        )
    );
    // Only the recorded name is served.
    let other = format!("{url}.preview.png");
    assert_eq!(server.get(&other).await.status, 404, "{other}");

    let name = url.strip_prefix("/uploads/").unwrap();
    let sidecar: Value =
        serde_json::from_slice(&std::fs::read(s3.object_path(&format!("{name}.meta"))).unwrap())
            .unwrap();
    assert_eq!(sidecar["preview"]["file"].as_str(), Some(key), "{sidecar}");
    assert_eq!(sidecar["content_type"], "image/png", "kept: {sidecar}");
    assert!(sidecar["size"].as_u64().unwrap() > 0, "kept: {sidecar}");
}

/// Asks for a presigned upload of `bytes` (a PNG), PUTs it, completes it;
/// returns its URL.
async fn presigned_png(server: &Server, bytes: &[u8]) -> String {
    let ask =
        serde_json::json!({"name": "p.png", "size": bytes.len(), "content_type": "image/png"});
    let res = request_url(
        "POST",
        &format!("http://{}/api/uploads", server.addr),
        &[("Content-Type", "application/json")],
        ask.to_string().as_bytes(),
    )
    .await;
    assert_eq!(res.status, 200, "{}", res.text());
    let answer = res.json();
    let put = request_url(
        "PUT",
        answer["put_url"].as_str().unwrap(),
        &[("Content-Type", "image/png")],
        bytes,
    )
    .await;
    assert_eq!(put.status, 200, "{}", put.text());
    let id = answer["upload_id"].as_str().unwrap();
    let done = request_url(
        "POST",
        &format!("http://{}/api/uploads/{id}/complete", server.addr),
        &[],
        b"",
    )
    .await;
    assert_eq!(done.status, 200, "{}", done.text());
    done.json()["url"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn with_the_s3_store_both_upload_paths_get_a_preview_in_the_bucket() {
    let s3 = S3Fs::start();
    let server = Server::start(config().media_store(s3.media_store())).await;
    let (mut ann, _) = server.join("pics", "ann").await;
    let png = encoded(&photo(1200, 600), ImageFormat::Png);

    let posted = uploaded(server.addr, "wide.png", &png).await;
    ann.send_attachment("", &posted).await;
    let preview = preview_for(&mut ann, &posted).await;
    assert_eq!(
        (preview["width"].as_u64(), preview["height"].as_u64()),
        (Some(320), Some(160))
    );
    check_in_bucket(&server, &s3, &posted, &preview).await;

    let presigned = presigned_png(&server, &png).await;
    ann.send_attachment("", &presigned).await;
    let preview = preview_for(&mut ann, &presigned).await;
    assert_eq!(
        (preview["width"].as_u64(), preview["height"].as_u64()),
        (Some(320), Some(160))
    );
    check_in_bucket(&server, &s3, &presigned, &preview).await;

    // A later message attaching it reads the preview from the sidecar.
    ann.send_attachment("again", &presigned).await;
    let message = ann.skip_to("message").await;
    assert_eq!(message["attachment"]["preview"], preview, "{message}");
    assert_eq!(server.metric("roomcast_previews_total").await, 2);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn with_the_s3_store_the_sweep_deletes_a_preview_with_its_upload() {
    let s3 = S3Fs::start();
    let server = Server::start(config().media_store(s3.media_store())).await;
    let url = uploaded(
        server.addr,
        "a.png",
        &encoded(&photo(900, 900), ImageFormat::Png),
    )
    .await;
    server.wait_metric("roomcast_previews_total", 1).await;
    let name = url.strip_prefix("/uploads/").unwrap();
    let preview_key = format!("{name}.preview.jpg");
    assert!(s3.object_path(&preview_key).exists());
    assert_eq!(server.get(&format!("{url}.preview.jpg")).await.status, 302);

    // Nobody attached it: past the time to live it goes, preview and all.
    let store = s3.store();
    let later = SystemTime::now() + Duration::from_secs(3600 + 120);
    assert_eq!(store.sweep_unattached_as_of(later).await.unwrap(), 1);
    for key in [name.to_owned(), format!("{name}.meta"), preview_key] {
        assert!(!s3.object_path(&key).exists(), "{key}");
    }
    assert_eq!(server.get(&format!("{url}.preview.jpg")).await.status, 404);
    server.shutdown().await.unwrap();
}
