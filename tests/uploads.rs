//! Uploads against a real server: `POST /upload` for every allowed kind and
//! the refused ones, names that try to escape or mislead, the size limit to
//! the byte, a client cut off mid-body or stalling, the per-address rate
//! limit; `GET /uploads/{name}` with its headers, ranges and 404s; and
//! attachments over WebSocket naming what was uploaded.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{HttpResponse, Server, TIMEOUT, config, http_raw, read_response};
use serde_json::json;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

const BOUNDARY: &str = "roomcast-test-7d3f0a";

/// One part of a form: field name, file name, bytes.
type Part<'a> = (&'a str, Option<&'a str>, &'a [u8]);

/// A `multipart/form-data` body of `parts`.
fn form(parts: &[Part<'_>]) -> Vec<u8> {
    let mut body = Vec::new();
    for (name, filename, data) in parts {
        body.extend_from_slice(format!("--{BOUNDARY}\r\n").as_bytes());
        let disposition = match filename {
            Some(f) => format!("form-data; name=\"{name}\"; filename=\"{f}\""),
            None => format!("form-data; name=\"{name}\""),
        };
        body.extend_from_slice(format!("Content-Disposition: {disposition}\r\n").as_bytes());
        body.extend_from_slice(b"Content-Type: application/octet-stream\r\n\r\n");
        body.extend_from_slice(data);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
    body
}

/// The head of a `POST /upload` whose body has `len` bytes.
fn post_head(server: &Server, content_type: &str, len: usize) -> Vec<u8> {
    format!(
        "POST /upload HTTP/1.1\r\nHost: {}\r\nContent-Type: {content_type}\r\n\
         Content-Length: {len}\r\nConnection: close\r\n\r\n",
        server.addr
    )
    .into_bytes()
}

async fn post(server: &Server, content_type: &str, body: &[u8]) -> HttpResponse {
    let mut request = post_head(server, content_type, body.len());
    request.extend_from_slice(body);
    http_raw(server.addr, &request, false).await
}

async fn post_form(server: &Server, parts: &[Part<'_>]) -> HttpResponse {
    let content_type = format!("multipart/form-data; boundary={BOUNDARY}");
    post(server, &content_type, &form(parts)).await
}

/// Uploads `data` as `filename` in the field `file`.
async fn upload(server: &Server, filename: &str, data: &[u8]) -> HttpResponse {
    post_form(server, &[("file", Some(filename), data)]).await
}

/// Uploads `data` as `filename` with no declared length (chunked, 700
/// bytes a chunk).
async fn upload_chunked(server: &Server, filename: &str, data: &[u8]) -> HttpResponse {
    let content_type = format!("multipart/form-data; boundary={BOUNDARY}");
    let body = form(&[("file", Some(filename), data)]);
    let mut request = format!(
        "POST /upload HTTP/1.1\r\nHost: {}\r\nContent-Type: {content_type}\r\n\
         Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
        server.addr
    )
    .into_bytes();
    for chunk in body.chunks(700) {
        request.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        request.extend_from_slice(chunk);
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"0\r\n\r\n");
    http_raw(server.addr, &request, false).await
}

/// Uploads and expects `200`; returns the JSON answer.
async fn upload_ok(server: &Server, filename: &str, data: &[u8]) -> serde_json::Value {
    let res = upload(server, filename, data).await;
    assert_eq!(res.status, 200, "upload of {filename}: {}", res.text());
    res.json()
}

/// The names in a directory, sorted.
fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("read dir")
        .map(|e| {
            e.expect("dir entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    names.sort();
    names
}

/// Asserts the uploads directory holds exactly the data files and sidecars
/// of `urls`, and nothing else (no temporary files, nothing stray).
fn assert_stored_exactly(server: &Server, urls: &[&str]) {
    let mut expected: Vec<String> = urls
        .iter()
        .flat_map(|url| {
            let name = url.strip_prefix("/uploads/").expect("an /uploads/ url");
            [name.to_owned(), format!("{name}.meta")]
        })
        .collect();
    expected.sort();
    assert_eq!(listing(&server.uploads_dir()), expected);
    assert_eq!(
        listing(server.dir.path()),
        vec!["uploads"],
        "nothing written beside the uploads dir"
    );
}

fn is_stored_url(url: &str, ext: &str) -> bool {
    url.strip_prefix("/uploads/")
        .and_then(|n| n.strip_suffix(&format!(".{ext}")))
        .is_some_and(|id| {
            id.len() == 32 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        })
}

/// Minimal samples of every allowed kind: (file name, bytes, type, ext, inline).
fn samples() -> Vec<(&'static str, Vec<u8>, &'static str, &'static str, bool)> {
    let with = |head: &[u8], tail_len: usize| {
        let mut v = head.to_vec();
        v.extend((0..tail_len).map(|i| (i * 7 % 251) as u8));
        v
    };
    let mut riff_webp = b"RIFF\x24\0\0\0WEBPVP8 \x18\0\0\0".to_vec();
    riff_webp.extend_from_slice(&[0x30, 0x01, 0x00, 0x9d, 0x01, 0x2a, 1, 0, 1, 0]);
    let mut wav =
        b"RIFF\x24\0\0\0WAVEfmt \x10\0\0\0\x01\0\x01\0\x44\xac\0\0\x88\x58\x01\0\x02\0\x10\0"
            .to_vec();
    wav.extend_from_slice(b"data\0\0\0\0");
    vec![
        (
            "pic.png",
            with(b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01\0\0\0\x01\x08\x06\0\0\0", 40),
            "image/png",
            "png",
            true,
        ),
        (
            "photo.jpeg",
            with(b"\xff\xd8\xff\xe0\0\x10JFIF\0\x01\x01\0\0\x01\0\x01\0\0", 300),
            "image/jpeg",
            "jpg",
            true,
        ),
        (
            "anim.gif",
            b"GIF89a\x01\0\x01\0\x80\0\0\0\0\0\xff\xff\xff!\xf9\x04\x01\0\0\0\0,\0\0\0\0\x01\0\x01\0\0\x02\x02D\x01\0;"
                .to_vec(),
            "image/gif",
            "gif",
            true,
        ),
        ("img.webp", riff_webp, "image/webp", "webp", true),
        (
            "clip.mp4",
            with(b"\0\0\0\x18ftypisom\0\0\x02\0isomiso2", 1000),
            "video/mp4",
            "mp4",
            true,
        ),
        (
            "clip.webm",
            with(
                b"\x1a\x45\xdf\xa3\x9f\x42\x86\x81\x01\x42\xf7\x81\x01\x42\xf2\x81\x04\x42\xf3\x81\x08\x42\x82\x84webm\x42\x87\x81\x04\x42\x85\x81\x02",
                64,
            ),
            "video/webm",
            "webm",
            true,
        ),
        ("song.mp3", with(b"ID3\x04\0\0\0\0\0\0", 128), "audio/mpeg", "mp3", true),
        ("raw.mp3", with(b"\xff\xfb\x90\x64", 417), "audio/mpeg", "mp3", true),
        ("voice.ogg", with(b"OggS\0\x02\0\0\0\0\0\0\0\0", 50), "audio/ogg", "ogg", true),
        ("beep.wav", wav, "audio/wav", "wav", true),
        (
            "doc.pdf",
            b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n".to_vec(),
            "application/pdf",
            "pdf",
            false,
        ),
        (
            "notes.txt",
            "hello, world\r\n\tindented — and unicode ✓ 🎉\n".as_bytes().to_vec(),
            "text/plain",
            "txt",
            false,
        ),
    ]
}

#[tokio::test]
async fn every_allowed_kind_is_stored_under_a_random_name_and_served_back() {
    let server = Server::start(config()).await;
    let mut urls = Vec::new();
    for (filename, bytes, content_type, ext, inline) in samples() {
        let answer = upload_ok(&server, filename, &bytes).await;
        let url = answer["url"].as_str().expect("url").to_owned();
        assert!(is_stored_url(&url, ext), "{filename} stored as {url}");
        assert_eq!(answer["name"], filename);
        assert_eq!(answer["size"], bytes.len());
        assert_eq!(answer["content_type"], content_type, "{filename}");

        let res = server.get(&url).await;
        assert_eq!(res.status, 200, "{url}");
        assert_eq!(res.body, bytes, "{filename} comes back byte for byte");
        let served_type = res.header("content-type").unwrap();
        assert!(served_type.starts_with(content_type), "{served_type}");
        assert_eq!(res.header("x-content-type-options"), Some("nosniff"));
        assert_eq!(res.header("content-security-policy"), Some("sandbox"));
        assert_eq!(
            res.header("cache-control"),
            Some("public, max-age=31536000, immutable")
        );
        assert_eq!(res.header("accept-ranges"), Some("bytes"));
        assert!(res.header("etag").is_some_and(|e| e.starts_with('"')));
        let disposition = res.header("content-disposition").unwrap();
        let expected = if inline { "inline;" } else { "attachment;" };
        assert!(
            disposition.starts_with(expected),
            "{filename}: {disposition}"
        );
        assert!(
            disposition.ends_with(&format!("filename*=UTF-8''{filename}")),
            "{disposition}"
        );
        urls.push(url);
    }
    let text = server.get(&urls[urls.len() - 1]).await;
    assert_eq!(
        text.header("content-type"),
        Some("text/plain; charset=utf-8")
    );
    let refs: Vec<&str> = urls.iter().map(String::as_str).collect();
    assert_stored_exactly(&server, &refs);
    assert_eq!(server.metric("roomcast_uploads_total").await, 12);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_large_upload_streams_through_in_many_chunks() {
    let server = Server::start(config()).await;
    let mut bytes = b"\x89PNG\r\n\x1a\n".to_vec();
    bytes.extend((0..3_000_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8));
    let answer = upload_ok(&server, "big.png", &bytes).await;
    assert_eq!(answer["size"], bytes.len());
    let res = server.get(answer["url"].as_str().unwrap()).await;
    assert_eq!(res.body.len(), bytes.len());
    assert!(res.body == bytes, "the large file comes back intact");
    assert_eq!(
        server.metric("roomcast_upload_bytes_total").await,
        bytes.len() as u64
    );
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn markup_and_unknown_files_are_refused_whatever_their_name() {
    let server = Server::start(config()).await;
    let cases: [(&str, &[u8]); 9] = [
        (
            "logo.svg",
            b"<svg xmlns=\"http://www.w3.org/2000/svg\"><script>alert(1)</script></svg>",
        ),
        ("page.html", b"<!doctype html><script>alert(1)</script>"),
        ("sneaky.png", b"\n\n   <html><body>hi</body></html>"),
        ("bom.txt", b"\xef\xbb\xbf<?xml version=\"1.0\"?><svg/>"),
        ("tool.exe", b"MZ\x90\0\x03\0\0\0\x04\0\0\0\xff\xff\0\0"),
        ("prog", b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0"),
        ("nul.txt", b"looks like text\0but is not"),
        ("latin1.txt", b"caf\xe9 au lait"),
        ("archive.zip", b"PK\x03\x04\x14\0\0\0\x08\0"),
    ];
    for (filename, bytes) in cases {
        let res = upload(&server, filename, bytes).await;
        let body = res.assert_json_error(415);
        assert_eq!(body["error"], "unsupported_type", "{filename}");
    }
    // Markup far past the first bytes is still caught: text is checked whole.
    let mut late = "plain words ".repeat(100).into_bytes();
    late.extend_from_slice(b"\x01");
    upload(&server, "late.txt", &late)
        .await
        .assert_json_error(415);
    assert_stored_exactly(&server, &[]);
    assert_eq!(server.metric("roomcast_uploads_refused_total").await, 10);
    assert_eq!(server.metric("roomcast_uploads_total").await, 0);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_png_named_exe_is_stored_as_a_png() {
    let server = Server::start(config()).await;
    let png = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR".to_vec();
    let answer = upload_ok(&server, "tool.exe", &png).await;
    assert!(is_stored_url(answer["url"].as_str().unwrap(), "png"));
    assert_eq!(answer["name"], "tool.exe", "the name is display text only");
    assert_eq!(answer["content_type"], "image/png");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn file_names_never_become_paths_and_are_cleaned_for_display() {
    let server = Server::start(config()).await;
    let long = format!("{}.txt", "n".repeat(300));
    let cases: [(&str, &str); 6] = [
        ("../../x.txt", "x.txt"),
        ("..\\\\..\\\\x.txt", "x.txt"),
        ("/etc/passwd", "passwd"),
        ("C:\\\\Users\\\\ann\\\\notes.txt", "notes.txt"),
        ("odd\u{85}\u{202e}name.txt", "oddname.txt"),
        ("..", "file"),
    ];
    let mut urls = Vec::new();
    for (raw, shown) in cases {
        let answer = upload_ok(&server, raw, b"some text\n").await;
        assert_eq!(answer["name"], shown, "{raw:?}");
        urls.push(answer["url"].as_str().unwrap().to_owned());
    }
    let answer = upload_ok(&server, &long, b"long name\n").await;
    let name = answer["name"].as_str().unwrap();
    assert_eq!(name.chars().count(), 100);
    assert!(name.ends_with("nnn.txt"), "the extension is kept: {name}");
    urls.push(answer["url"].as_str().unwrap().to_owned());
    // A file name with a raw NUL is not valid in a header: the form is refused.
    let res = upload(&server, "a\0b.txt", b"text\n").await;
    assert_eq!(res.assert_json_error(400)["error"], "bad_upload");
    // Missing or empty names are shown as "file".
    let answer = upload_ok(&server, "", b"anonymous\n").await;
    assert_eq!(answer["name"], "file");
    urls.push(answer["url"].as_str().unwrap().to_owned());
    let refs: Vec<&str> = urls.iter().map(String::as_str).collect();
    assert_stored_exactly(&server, &refs);

    // The download carries the cleaned name, percent-encoded.
    let res = server.get(&urls[4]).await;
    assert_eq!(
        res.header("content-disposition"),
        Some("attachment; filename*=UTF-8''oddname.txt")
    );
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn the_size_limit_holds_to_the_byte() {
    let server = Server::start(config().max_upload_bytes(1000u64)).await;
    let exact = vec![b'a'; 1000];
    let answer = upload_ok(&server, "exact.txt", &exact).await;
    assert_eq!(answer["size"], 1000);

    let over = vec![b'a'; 1001];
    let res = upload(&server, "over.txt", &over).await;
    let body = res.assert_json_error(413);
    assert_eq!(body["error"], "too_large");
    assert!(
        body["message"].as_str().unwrap().contains("1000 B"),
        "the message names the limit: {body}"
    );

    // A declared length far over the limit is refused before any body is sent.
    let content_type = format!("multipart/form-data; boundary={BOUNDARY}");
    let head = post_head(&server, &content_type, 50 << 20);
    let res = http_raw(server.addr, &head, false).await;
    let body = res.assert_json_error(413);
    assert!(
        body["message"].as_str().unwrap().contains("50 MiB"),
        "{body}"
    );

    // Chunked, with no length declared: refused once the file passes the limit.
    let res = upload_chunked(&server, "chunked.txt", &vec![b'b'; 5000]).await;
    assert_eq!(res.assert_json_error(413)["error"], "too_large");

    assert_stored_exactly(&server, &[answer["url"].as_str().unwrap()]);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn broken_or_incomplete_forms_are_bad_uploads() {
    let server = Server::start(config()).await;
    let bad = |res: HttpResponse| {
        let body = res.assert_json_error(400);
        assert_eq!(body["error"], "bad_upload");
    };
    bad(post(&server, "application/octet-stream", b"\x89PNG\r\n\x1a\n").await);
    bad(post(&server, "multipart/form-data", b"no boundary").await);
    bad(post_form(&server, &[("note", None, b"just a field")]).await);
    bad(upload(&server, "empty.txt", b"").await);
    // No closing boundary: the file is not complete, so nothing is kept.
    let mut cut = form(&[("file", Some("cut.txt"), b"the start of a text")]);
    cut.truncate(cut.len() - BOUNDARY.len() - 10);
    let content_type = format!("multipart/form-data; boundary={BOUNDARY}");
    bad(post(&server, &content_type, &cut).await);
    // Headers and junk beyond the framing allowance are refused, not buffered.
    let mut junk =
        format!("--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"\r\nX-Junk: ")
            .into_bytes();
    junk.extend(std::iter::repeat_n(b'j', 200_000));
    let res = post(&server, &content_type, &junk).await;
    let body = res.assert_json_error(400);
    assert!(
        body["message"].as_str().unwrap().contains("64 KiB"),
        "{body}"
    );

    // Other fields around the file are fine and ignored.
    let res = post_form(
        &server,
        &[
            ("note", None, b"hello"),
            ("file", Some("a.txt"), b"first\n"),
            ("file", Some("b.txt"), b"second, ignored\n"),
        ],
    )
    .await;
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(res.json()["name"], "a.txt");

    let res = server.get("/upload").await;
    res.assert_json_error(405);
    assert_eq!(res.header("allow"), Some("POST"));
    let res = server.request("PUT", "/upload", &[]).await;
    res.assert_json_error(405);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn other_fields_count_against_the_framing_allowance() {
    let server = Server::start(config()).await;
    let png = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01".as_slice();
    // A small field beside the file is fine.
    let res = post_form(
        &server,
        &[
            ("caption", None, &[b'c'; 1000]),
            ("file", Some("a.png"), png),
        ],
    )
    .await;
    assert_eq!(res.status, 200, "{}", res.text());
    let kept = res.json()["url"].as_str().unwrap().to_owned();

    // 150 KiB of another field is over the 64 KiB allowance (the whole body
    // stays under what the server drains, so the answer is read in full).
    let junk = vec![b'j'; 150 << 10];
    let res = post_form(
        &server,
        &[("junk", None, &junk), ("file", Some("b.png"), png)],
    )
    .await;
    let body = res.assert_json_error(400);
    assert_eq!(body["error"], "bad_upload");
    assert!(
        body["message"].as_str().unwrap().contains("64 KiB"),
        "{body}"
    );
    assert_stored_exactly(&server, &[&kept]);
    server.shutdown().await.unwrap();
}

/// Lists the uploads dir until `done` says yes; fails after [`TIMEOUT`].
async fn wait_for_listing(dir: &Path, what: &str, done: impl Fn(&[String]) -> bool) {
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        let names = listing(dir);
        if done(&names) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never saw {what}; the directory holds {names:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Opens an upload of `data` as `filename` and sends only the first `sent`
/// bytes of its body; the caller decides what happens to the rest.
async fn start_upload(server: &Server, filename: &str, data: &[u8], sent: usize) -> TcpStream {
    let body = form(&[("file", Some(filename), data)]);
    let content_type = format!("multipart/form-data; boundary={BOUNDARY}");
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    stream
        .write_all(&post_head(server, &content_type, body.len()))
        .await
        .unwrap();
    stream.write_all(&body[..sent]).await.unwrap();
    stream
}

#[tokio::test]
async fn a_client_cut_off_mid_upload_leaves_no_file() {
    let server = Server::start(config()).await;
    let mut data = b"\x89PNG\r\n\x1a\n".to_vec();
    data.resize(1_000_000, 7);
    let stream = start_upload(&server, "cut.png", &data, 300_000).await;
    let dir = server.uploads_dir();
    wait_for_listing(&dir, "a temporary file", |names| {
        names.iter().any(|n| n.starts_with(".tmp-"))
    })
    .await;
    drop(stream);
    wait_for_listing(&dir, "an empty directory", |names| names.is_empty()).await;
    // The server is fine afterwards.
    upload_ok(&server, "after.txt", b"still working\n").await;
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_stalled_upload_times_out_with_408_and_leaves_no_file() {
    let server = Server::start(config().upload_idle_timeout(Duration::from_millis(200))).await;
    let mut data = b"GIF89a".to_vec();
    data.resize(10_000, 1);
    let mut stream = start_upload(&server, "slow.gif", &data, 5000).await;
    // Send nothing more: the server gives up on its own.
    let res = tokio::time::timeout(TIMEOUT, read_response(&mut stream, false))
        .await
        .expect("no answer to a stalled upload");
    assert_eq!(res.assert_json_error(408)["error"], "timeout");
    assert_stored_exactly(&server, &[]);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn ranges_heads_and_etags() {
    let server = Server::start(config()).await;
    let text: Vec<u8> = (0..1000).map(|i| b'a' + (i % 26) as u8).collect();
    let answer = upload_ok(&server, "abc.txt", &text).await;
    let url = answer["url"].as_str().unwrap();

    let part = server.request("GET", url, &[("Range", "bytes=0-9")]).await;
    assert_eq!(part.status, 206);
    assert_eq!(part.header("content-range"), Some("bytes 0-9/1000"));
    assert_eq!(part.header("content-length"), Some("10"));
    assert_eq!(part.body, &text[..10]);
    assert_eq!(part.header("x-content-type-options"), Some("nosniff"));

    let tail = server.request("GET", url, &[("Range", "bytes=990-")]).await;
    assert_eq!(tail.status, 206);
    assert_eq!(tail.header("content-range"), Some("bytes 990-999/1000"));
    assert_eq!(tail.body, &text[990..]);

    let suffix = server.request("GET", url, &[("Range", "bytes=-5")]).await;
    assert_eq!(suffix.status, 206);
    assert_eq!(suffix.header("content-range"), Some("bytes 995-999/1000"));
    assert_eq!(suffix.body, &text[995..]);

    let clipped = server
        .request("GET", url, &[("Range", "bytes=500-5000")])
        .await;
    assert_eq!(clipped.status, 206);
    assert_eq!(clipped.body, &text[500..]);

    // Several ranges are not served as multipart: the whole file instead.
    let several = server
        .request("GET", url, &[("Range", "bytes=0-1,5-6")])
        .await;
    assert_eq!(several.status, 200);
    assert_eq!(several.body, text);

    for unsatisfiable in ["bytes=1000-", "bytes=2000-3000", "bytes=-0"] {
        let res = server
            .request("GET", url, &[("Range", unsatisfiable)])
            .await;
        res.assert_json_error(416);
        assert_eq!(
            res.header("content-range"),
            Some("bytes */1000"),
            "{unsatisfiable}"
        );
    }
    for ignored in ["bytes=9-2", "lines=1-2", "bytes=x-y"] {
        let res = server.request("GET", url, &[("Range", ignored)]).await;
        assert_eq!(res.status, 200, "{ignored}");
        assert_eq!(res.body, text);
    }

    let head = server.request("HEAD", url, &[]).await;
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-length"), Some("1000"));
    assert!(head.body.is_empty());
    let etag = head.header("etag").unwrap().to_owned();
    let ranged_head = server
        .request("HEAD", url, &[("Range", "bytes=0-99")])
        .await;
    assert_eq!(ranged_head.status, 206);
    assert_eq!(ranged_head.header("content-length"), Some("100"));

    let cached = server
        .request("GET", url, &[("If-None-Match", &etag)])
        .await;
    assert_eq!(cached.status, 304);
    assert!(cached.body.is_empty());
    // If-Range with a stale validator gets the whole file.
    let stale = server
        .request(
            "GET",
            url,
            &[("Range", "bytes=0-9"), ("If-Range", "\"something-else\"")],
        )
        .await;
    assert_eq!(stale.status, 200);
    assert_eq!(stale.body, text);
    let fresh = server
        .request("GET", url, &[("Range", "bytes=0-9"), ("If-Range", &etag)])
        .await;
    assert_eq!(fresh.status, 206);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn only_generated_names_are_served() {
    let server = Server::start(config()).await;
    let answer = upload_ok(&server, "a.txt", b"hi\n").await;
    let url = answer["url"].as_str().unwrap();
    let stored = url.strip_prefix("/uploads/").unwrap();
    // Files a generated name could not point at, placed by hand.
    std::fs::write(server.uploads_dir().join("notes.txt"), b"by hand").unwrap();
    std::fs::write(
        server
            .uploads_dir()
            .join(".tmp-0123456789abcdef0123456789abcdef"),
        b"partial",
    )
    .unwrap();
    for path in [
        format!("{url}.meta"),
        "/uploads/notes.txt".to_owned(),
        "/uploads/.tmp-0123456789abcdef0123456789abcdef".to_owned(),
        "/uploads/ffffffffffffffffffffffffffffffff.txt".to_owned(),
        format!("/uploads/{}", stored.to_uppercase()),
        format!("/uploads/{}", stored.replace(".txt", ".html")),
        "/uploads/../Cargo.toml".to_owned(),
        "/uploads/%2e%2e/Cargo.toml".to_owned(),
        "/uploads/".to_owned(),
    ] {
        let res = server.get(&path).await;
        assert_eq!(res.status, 404, "{path}");
    }
    let res = server.request("POST", url, &[]).await;
    res.assert_json_error(405);
    assert_eq!(res.header("allow"), Some("GET, HEAD"));
    server.shutdown().await.unwrap();
}

/// Uploads `data` with an `X-Forwarded-For` header.
async fn upload_forwarded_for(server: &Server, forwarded: &str) -> HttpResponse {
    let body = form(&[("file", Some("f.txt"), b"forwarded\n")]);
    let head = format!(
        "POST /upload HTTP/1.1\r\nHost: {}\r\nX-Forwarded-For: {forwarded}\r\n\
         Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        server.addr,
        body.len()
    );
    let mut request = head.into_bytes();
    request.extend_from_slice(&body);
    http_raw(server.addr, &request, false).await
}

#[tokio::test]
async fn behind_a_trusted_proxy_the_limit_is_per_forwarded_client() {
    let server = Server::start(config().uploads_per_minute(1u32).trust_proxy(true)).await;
    assert_eq!(
        upload_forwarded_for(&server, "6.6.6.6, 10.0.0.1")
            .await
            .status,
        200
    );
    // The same client again (whatever it claims before the proxy's entry).
    let res = upload_forwarded_for(&server, "7.7.7.7, 10.0.0.1").await;
    assert_eq!(res.assert_json_error(429)["error"], "rate_limited");
    // Another client behind the same proxy has its own budget.
    assert_eq!(upload_forwarded_for(&server, "10.0.0.2").await.status, 200);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn without_trust_the_forwarded_header_is_ignored() {
    let server = Server::start(config().uploads_per_minute(1u32)).await;
    assert_eq!(upload_forwarded_for(&server, "10.0.0.1").await.status, 200);
    let res = upload_forwarded_for(&server, "10.0.0.2").await;
    assert_eq!(res.assert_json_error(429)["error"], "rate_limited");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn uploads_per_minute_are_limited_per_address() {
    let server = Server::start(config().uploads_per_minute(2u32)).await;
    upload_ok(&server, "1.txt", b"one\n").await;
    upload_ok(&server, "2.txt", b"two\n").await;
    let res = upload(&server, "3.txt", b"three\n").await;
    assert_eq!(res.assert_json_error(429)["error"], "rate_limited");
    let retry: u64 = res
        .header("retry-after")
        .expect("Retry-After")
        .parse()
        .expect("seconds");
    assert!((1..=60).contains(&retry), "retry after {retry}");
    assert_eq!(
        listing(&server.uploads_dir()).len(),
        4,
        "two files, two sidecars"
    );
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn bytes_per_hour_are_limited_per_address_and_unsent_bytes_come_back() {
    // 100 KiB an hour (the flag is in MiB; the setter takes bytes).
    let server = Server::start(config().upload_bytes_per_hour(100u64 << 10)).await;
    let text = |n: usize| "a line of text\n".repeat(n / 15).into_bytes();
    upload_ok(&server, "first.txt", &text(60 << 10)).await;
    // A second 60 KiB would pass the hour's bytes: refused before it is read.
    let res = upload(&server, "second.txt", &text(60 << 10)).await;
    let body = res.assert_json_error(429);
    assert_eq!(body["error"], "rate_limited");
    assert!(
        body["message"].as_str().unwrap().contains("bytes uploaded"),
        "{body}"
    );
    let retry: u64 = res.header("retry-after").unwrap().parse().unwrap();
    assert!(retry > 60, "most of an hour's refill: {retry} s");
    // What was not sent is not charged: a refused kind gives its bytes back.
    let res = upload(&server, "page.html", b"<html><script>x</script>").await;
    res.assert_json_error(415);
    upload_ok(&server, "third.txt", &text(30 << 10)).await;
    server.shutdown().await.unwrap();
}

/// A refused upload's body is read to its end (within a bound) so the
/// connection can be reused: those bytes were sent all the same, and count
/// against the hour's bytes like any other.
#[tokio::test]
async fn a_refused_uploads_bytes_count_against_the_hour_though_only_drained() {
    let server = Server::start(config().upload_bytes_per_hour(100u64 << 10)).await;
    let text = |n: usize| "a line of text\n".repeat(n / 15).into_bytes();
    let mut page = b"<html><script>x</script>".to_vec();
    page.extend(text(60 << 10));
    let res = upload(&server, "page.html", &page).await;
    res.assert_json_error(415);
    let res = upload(&server, "second.txt", &text(60 << 10)).await;
    assert_eq!(res.assert_json_error(429)["error"], "rate_limited");
    upload_ok(&server, "third.txt", &text(30 << 10)).await;
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn an_upload_of_no_declared_length_gives_back_only_what_it_took() {
    // 100 KiB an hour, uploads up to 10 MiB: a body of no declared length
    // may be that large, so it takes the whole hour's bucket, and gets
    // back only what it did not send of that.
    let server = Server::start(config().upload_bytes_per_hour(100u64 << 10)).await;
    let text = "a line of text\n".repeat((60 << 10) / 15).into_bytes();
    let res = upload_chunked(&server, "first.txt", &text).await;
    assert_eq!(res.status, 200, "{}", res.text());
    // 40 KiB are left: not a whole bucket.
    let res = upload_chunked(&server, "second.txt", &text).await;
    assert_eq!(res.assert_json_error(429)["error"], "rate_limited");
    // A declared length asks only for itself.
    upload_ok(&server, "small.txt", &text[..20 << 10]).await;
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn an_uploaded_file_is_an_attachment_with_its_real_name_size_and_type() {
    let server = Server::start(config()).await;
    let png = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01".to_vec();
    let answer = upload_ok(&server, "holiday photo.png", &png).await;
    let url = answer["url"].as_str().unwrap();

    let (mut ann, _) = server.join("pics", "ann").await;
    ann.expect("join").await;
    ann.send_json(json!({"type": "message", "content": "look", "attachment": {"url": url}}))
        .await;
    let m = ann.expect("message").await;
    assert_eq!(
        m["attachment"],
        json!({"url": url, "name": "holiday photo.png", "size": png.len(), "content_type": "image/png"})
    );
    assert_eq!(
        m["attachment"], answer,
        "the same record as the upload's answer"
    );

    let made_up = "/uploads/0123456789abcdef0123456789abcdef.png";
    ann.send_json(json!({"type": "message", "content": "x", "attachment": {"url": made_up}}))
        .await;
    ann.expect_error("bad_attachment").await;
    let sidecar = format!("{url}.meta");
    ann.send_json(json!({"type": "message", "content": "x", "attachment": {"url": sidecar}}))
        .await;
    ann.expect_error("bad_attachment").await;
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_storage_failure_is_a_500_and_keeps_nothing() {
    let server = Server::start(config()).await;
    // Let serve create and probe the directory first, then take it away.
    upload_ok(&server, "first.txt", b"stored\n").await;
    std::fs::remove_dir_all(server.uploads_dir()).unwrap();
    let res = upload(&server, "second.txt", b"not stored\n").await;
    assert_eq!(res.assert_json_error(500)["error"], "storage_failed");
    assert_eq!(listing(server.dir.path()), Vec::<String>::new());
    // Reads of a missing file are plain 404s.
    let res = server
        .get("/uploads/0123456789abcdef0123456789abcdef.txt")
        .await;
    assert_eq!(res.status, 404);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn leftovers_of_interrupted_uploads_are_swept_at_start() {
    let server = Server::start(config()).await;
    // Placed before the server task first runs (this test's runtime has one
    // thread and has not yielded since start).
    let dir = server.uploads_dir();
    let id = "0123456789abcdef0123456789abcdef";
    let old = std::time::SystemTime::now() - Duration::from_secs(3600);
    for (name, age) in [
        (".tmp-old", Some(old)),
        (".tmp-recent", None),
        (&format!("{id}.png.meta")[..], Some(old)),
        ("ffffffffffffffffffffffffffffffff.txt", Some(old)),
        ("ffffffffffffffffffffffffffffffff.txt.meta", Some(old)),
    ] {
        let file = std::fs::File::create(dir.join(name)).unwrap();
        if let Some(t) = age {
            file.set_modified(t).unwrap();
        }
    }
    wait_for_listing(&dir, "the old leftovers gone", |names| {
        !names.iter().any(|n| n == ".tmp-old" || n.starts_with(id))
    })
    .await;
    assert_eq!(
        listing(&dir),
        vec![
            ".tmp-recent",
            "ffffffffffffffffffffffffffffffff.txt",
            "ffffffffffffffffffffffffffffffff.txt.meta"
        ],
        "a recent temporary file may be another instance's upload in progress"
    );
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn the_uploads_quota_is_charged_as_bytes_arrive_and_a_full_one_is_507() {
    // Room for the first file and its sidecar, not for a second as large.
    let server = Server::start(config().uploads_max_bytes(Some(3000))).await;
    let first = upload_ok(&server, "a.txt", &[b'a'; 1500]).await;
    let url = first["url"].as_str().unwrap().to_owned();

    let res = upload(&server, "b.txt", &[b'b'; 1500]).await;
    let body = res.assert_json_error(507);
    assert_eq!(body["error"], "storage_full", "{body}");
    assert_stored_exactly(&server, &[&url]);

    // What a refused upload charged was given back: a small one still fits.
    let small = upload_ok(&server, "c.txt", b"small\n").await;
    assert_stored_exactly(&server, &[&url, small["url"].as_str().unwrap()]);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn an_upload_is_marked_when_attached_and_one_not_attached_in_time_is_refused() {
    let server = Server::start(config()).await;
    let kept = upload_ok(&server, "kept.txt", b"kept\n").await;
    let kept = kept["url"].as_str().unwrap().to_owned();
    let late = upload_ok(&server, "late.txt", b"late\n").await;
    let late = late["url"].as_str().unwrap().to_owned();
    let sidecar = |url: &str| {
        let name = url.strip_prefix("/uploads/").unwrap();
        let text = std::fs::read_to_string(server.uploads_dir().join(format!("{name}.meta")));
        serde_json::from_str::<serde_json::Value>(&text.unwrap()).unwrap()
    };
    assert_eq!(sidecar(&kept).get("attached"), None, "not attached yet");

    let (mut ann, _) = server.join("files", "ann").await;
    ann.expect("join").await;
    ann.send_attachment("", &kept).await;
    ann.expect("message").await;
    assert_eq!(sidecar(&kept)["attached"], true);

    // Stored two days ago and never attached: past the 24 h default.
    let name = late.strip_prefix("/uploads/").unwrap();
    std::fs::File::options()
        .write(true)
        .open(server.uploads_dir().join(name))
        .unwrap()
        .set_modified(std::time::SystemTime::now() - Duration::from_secs(2 * 24 * 3600))
        .unwrap();
    ann.send_attachment("", &late).await;
    ann.expect_error_saying("bad_attachment", "upload it again")
        .await;
    server.shutdown().await.unwrap();
}
