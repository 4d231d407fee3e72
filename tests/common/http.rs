//! A raw HTTP/1.1 client: requests written by hand (so tests can send what
//! no well-behaved client would), responses parsed, from any loopback address.

use super::*;

/// A parsed HTTP/1.1 response.
#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    /// Header names in lowercase, in the order received.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// The first value of header `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON; panics with the body if it is not.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {:?}", self.text()))
    }

    /// Asserts this is a JSON error `{"error", "message"}` with `status`.
    pub fn assert_json_error(&self, status: u16) -> Value {
        assert_eq!(self.status, status, "body: {}", self.text());
        assert!(
            self.header("content-type")
                .is_some_and(|t| t.starts_with("application/json")),
            "error content-type: {:?}",
            self.header("content-type")
        );
        let body = self.json();
        assert!(body["error"].is_string(), "no `error` code in {body}");
        assert!(
            body["message"].as_str().is_some_and(|m| !m.is_empty()),
            "no `message` in {body}"
        );
        body
    }
}

/// A TCP connection to `addr` from the local address `from`: on Linux all
/// of 127.0.0.0/8 reaches the loopback interface, so `127.0.0.2` and
/// `127.0.0.3` are two clients as far as per-address limits go.
pub async fn connect_from(addr: SocketAddr, from: &str) -> TcpStream {
    let from: std::net::IpAddr = from.parse().expect("an IP address");
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .bind(SocketAddr::new(from, 0))
        .expect("bind the source address");
    tokio::time::timeout(TIMEOUT, socket.connect(addr))
        .await
        .expect("connect timed out")
        .expect("connect")
}

/// Sends `request` from the local address `from` and reads one response.
pub async fn http_from(addr: SocketAddr, from: &str, request: &[u8]) -> HttpResponse {
    let mut stream = connect_from(addr, from).await;
    stream.write_all(request).await.expect("send request");
    tokio::time::timeout(TIMEOUT, read_response(&mut stream, false))
        .await
        .expect("no HTTP response in time")
}

/// A WebSocket upgrade to `path` (a claim added, see [`with_claim`]) from
/// the local address `from` with `extra` headers: the socket, or the refusal.
pub async fn ws_from(
    addr: SocketAddr,
    from: &str,
    path: &str,
    extra: &[(&str, &str)],
) -> Result<RawWs, HttpResponse> {
    RawWs::try_handshake(connect_from(addr, from).await, addr, path, extra).await
}

/// Sends `request` as is on a new connection and reads one response.
/// `head` says the request was a HEAD (its response has no body).
pub async fn http_raw(addr: SocketAddr, request: &[u8], head: bool) -> HttpResponse {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(request).await.expect("send request");
    tokio::time::timeout(TIMEOUT, read_response(&mut stream, head))
        .await
        .expect("no HTTP response in time")
}

/// Reads one response: the head, then a body framed by `content-length`,
/// chunked encoding, or the end of the connection.
pub async fn read_response(stream: &mut TcpStream, head: bool) -> HttpResponse {
    read_response_of(stream, head).await
}

/// [`read_response`] of a GET, from any reader.
pub async fn read_response_from(stream: &mut (impl tokio::io::AsyncRead + Unpin)) -> HttpResponse {
    read_response_of(stream, false).await
}

async fn read_response_of(
    stream: &mut (impl tokio::io::AsyncRead + Unpin),
    head: bool,
) -> HttpResponse {
    let mut buf = Vec::new();
    let header_end = loop {
        if let Some(i) = find(&buf, b"\r\n\r\n") {
            break i;
        }
        assert!(buf.len() < 64 << 10, "response head over 64 KiB");
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await.expect("read response");
        assert!(
            n > 0,
            "connection closed before a full response head: {buf:?}"
        );
        buf.extend_from_slice(&chunk[..n]);
    };
    let head_text = String::from_utf8(buf[..header_end].to_vec()).expect("UTF-8 head");
    let mut lines = head_text.split("\r\n");
    let status_line = lines.next().expect("status line");
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let headers: Vec<(String, String)> = lines
        .map(|l| {
            let (n, v) = l.split_once(':').expect("header line");
            (n.trim().to_ascii_lowercase(), v.trim().to_owned())
        })
        .collect();
    let mut rest = buf[header_end + 4..].to_vec();
    let mut res = HttpResponse {
        status,
        headers,
        body: Vec::new(),
    };
    if head || status == 304 || status == 204 || status == 101 || (100..200).contains(&status) {
        return res;
    }
    if let Some(len) = res.header("content-length") {
        let len: usize = len.parse().expect("numeric content-length");
        while rest.len() < len {
            let mut chunk = vec![0u8; (len - rest.len()).min(64 << 10)];
            let n = stream.read(&mut chunk).await.expect("read body");
            assert!(
                n > 0,
                "connection closed {} bytes into a {len}-byte body",
                rest.len()
            );
            rest.extend_from_slice(&chunk[..n]);
        }
        rest.truncate(len);
        res.body = rest;
    } else if res
        .header("transfer-encoding")
        .is_some_and(|t| t.eq_ignore_ascii_case("chunked"))
    {
        stream.read_to_end(&mut rest).await.expect("read body");
        res.body = dechunk(&rest);
    } else {
        stream.read_to_end(&mut rest).await.expect("read body");
        res.body = rest;
    }
    res
}

/// Where `needle` first occurs in `haystack`.
pub fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let line_end = find(data, b"\r\n").expect("chunk size line");
        let size_text = std::str::from_utf8(&data[..line_end]).expect("chunk size");
        let size = usize::from_str_radix(size_text.split(';').next().unwrap().trim(), 16)
            .expect("hex chunk size");
        data = &data[line_end + 2..];
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}
