//! A throwaway S3-compatible server for the tests: the `s3s-fs` binary
//! (crates.io, `cargo install --locked s3s-fs@0.14.1 --features binary`,
//! which `.ci/run` does), started on 127.0.0.1 with a port it picks, its own
//! temporary directory and keys, and killed when dropped. It checks SigV4
//! signatures, expiry and signed headers like S3.
//!
//! Found through `ROOMCAST_S3S_FS`, else `s3s-fs` on the `PATH`, else
//! `~/.cargo/bin`; a missing binary fails the test saying how to install it.

use std::io::BufRead;
use std::process::{Child, Command, Stdio};

use super::*;
use roomcast::media::MediaStoreKind;
use roomcast::media::s3::sigv4::Credentials;
use roomcast::media::s3::{S3Client, S3Target};

/// The keys every test server accepts.
pub const S3_ACCESS_KEY: &str = "roomcast-test-access";
pub const S3_SECRET_KEY: &str = "roomcast-test-secret-of-some-length";
/// The bucket made in each.
pub const S3_BUCKET: &str = "media";

/// A running `s3s-fs`.
pub struct S3Fs {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
    pub addr: SocketAddr,
    /// Its root: the bucket is the directory `media/` in it.
    pub dir: TempDir,
}

fn binary() -> PathBuf {
    if let Some(path) = std::env::var_os("ROOMCAST_S3S_FS") {
        return PathBuf::from(path);
    }
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join("s3s-fs"))
            .find(|p| p.is_file())
    });
    let cargo_bin = std::env::var_os("HOME")
        .map(|h| PathBuf::from(h).join(".cargo/bin/s3s-fs"))
        .filter(|p| p.is_file());
    on_path.or(cargo_bin).unwrap_or_else(|| {
        panic!(
            "the S3 tests need the s3s-fs binary: `cargo install --locked s3s-fs@0.14.1 \
             --features binary` (or set ROOMCAST_S3S_FS to its path); .ci/run installs it"
        )
    })
}

impl S3Fs {
    /// Starts one with a `media` bucket and waits until it listens.
    pub fn start() -> Self {
        let dir = TempDir::new("s3s-fs");
        std::fs::create_dir_all(dir.path().join(S3_BUCKET)).expect("create the bucket");
        let mut child = Command::new(binary())
            .args(["--host", "127.0.0.1", "--port", "0"])
            .args(["--access-key", S3_ACCESS_KEY, "--secret-key", S3_SECRET_KEY])
            .arg(dir.path())
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start s3s-fs");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        // Reads its log to the end, so it never blocks on a full pipe.
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some((_, url)) = line.split_once("server is running at ") {
                    let _ = tx.send(url.trim().to_owned());
                }
            }
        });
        let endpoint = rx
            .recv_timeout(TIMEOUT)
            .expect("s3s-fs never said where it listens");
        let addr = endpoint
            .strip_prefix("http://")
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("unexpected address {endpoint:?}"));
        Self {
            child,
            endpoint,
            addr,
            dir,
        }
    }

    /// Where the service is, with the keys.
    pub fn target(&self) -> S3Target {
        target_at(&self.endpoint, S3_BUCKET)
    }

    /// [`S3Fs::target`] naming `bucket` instead, which exists only once a
    /// test makes its directory (`dir/bucket`).
    pub fn target_of(&self, bucket: &str) -> S3Target {
        target_at(&self.endpoint, bucket)
    }

    /// The media store setting for a roomcast using this.
    pub fn media_store(&self) -> MediaStoreKind {
        MediaStoreKind::S3(self.target())
    }

    /// The media store setting for a roomcast reaching this through `proxy`
    /// (started to [`S3Fs::addr`]), which the test can freeze; the URLs it
    /// presigns name the proxy too.
    pub fn media_store_through(&self, proxy: &Proxy) -> MediaStoreKind {
        MediaStoreKind::S3(through(proxy))
    }

    /// A client signing with the same keys (to look behind roomcast's back).
    pub fn client(&self) -> S3Client {
        S3Client::new(self.target()).expect("credentials")
    }

    /// The store itself on this bucket (for what the server only does on a
    /// clock: the sweep), uploads unattached for an hour swept.
    pub fn store(&self) -> roomcast::media::s3::S3Store {
        let minute = Duration::from_secs(60);
        roomcast::media::s3::S3Store::new(self.target(), Duration::from_secs(3600), minute, minute)
            .expect("a store")
    }

    /// [`S3Fs::store`] reaching the service through `proxy` (started in
    /// front of [`S3Fs::addr`]), so a test can count or cut its
    /// connections.
    pub fn store_via(&self, proxy: &Proxy) -> roomcast::media::s3::S3Store {
        let minute = Duration::from_secs(60);
        roomcast::media::s3::S3Store::new(through(proxy), Duration::from_secs(3600), minute, minute)
            .expect("a store")
    }

    /// The file `key` in the bucket, as s3s-fs stores it.
    pub fn object_path(&self, key: &str) -> PathBuf {
        self.dir.path().join(S3_BUCKET).join(key)
    }

    /// Kills it (the storage goes down).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The test bucket reached through `proxy`.
fn through(proxy: &Proxy) -> S3Target {
    target_at(&format!("http://{}", proxy.addr), S3_BUCKET)
}

/// `bucket` at `endpoint` (`http://host:port`), with the keys.
fn target_at(endpoint: &str, bucket: &str) -> S3Target {
    S3Target::parse(&format!("s3://{bucket}?endpoint={endpoint}"))
        .expect("a valid target")
        .with_credentials(Credentials::new(S3_ACCESS_KEY, S3_SECRET_KEY))
}

impl Drop for S3Fs {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Sends `request` (a whole HTTP/1.1 request) to the host of `url`
/// (`http://host:port/...`) and reads the answer.
pub async fn send_to_url(url: &str, request: &[u8], head: bool) -> HttpResponse {
    let authority = url
        .strip_prefix("http://")
        .and_then(|rest| rest.split('/').next())
        .unwrap_or_else(|| panic!("not an http URL: {url}"));
    let addr: SocketAddr = authority.parse().expect("host:port");
    http_raw(addr, request, head).await
}

/// The path and query of `url`, and its `host[:port]`.
pub fn split_url(url: &str) -> (String, String) {
    let rest = url.strip_prefix("http://").expect("an http URL");
    let slash = rest.find('/').unwrap_or(rest.len());
    (rest[..slash].to_owned(), rest[slash..].to_owned())
}

/// `method url` with `headers`, `body`, and `Connection: close`.
pub async fn request_url(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> HttpResponse {
    let (host, path) = split_url(url);
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n");
    for (n, v) in headers {
        req.push_str(&format!("{n}: {v}\r\n"));
    }
    if !headers
        .iter()
        .any(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        && (method == "PUT" || method == "POST")
    {
        req.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    req.push_str("\r\n");
    let mut bytes = req.into_bytes();
    bytes.extend_from_slice(body);
    send_to_url(url, &bytes, method == "HEAD").await
}

/// Stores `bytes` (a PNG) in `store` as `owner`'s upload named `a.png` (no
/// owner: anyone's to attach), the
/// way `POST /upload` does after reading a body.
pub async fn store_png(
    store: &roomcast::media::s3::S3Store,
    bytes: &[u8],
    owner: Option<&str>,
) -> roomcast::media::StoredInfo {
    use roomcast::media::{DisplayName, Kind};
    let staged = TempDir::new("staged");
    let file = staged.path().join("f");
    std::fs::write(&file, bytes).unwrap();
    let sha = roomcast::media::s3::sigv4::sha256_hex(bytes);
    store
        .store_file(
            &file,
            bytes.len() as u64,
            sha,
            Kind::Png,
            DisplayName::sanitize(Some("a.png")),
            owner.map(str::to_owned),
        )
        .await
        .expect("stored")
}
