//! A raw WebSocket, frame by frame, for clients that must misbehave (never
//! read, never answer pings, send what tungstenite would refuse to).

use super::*;

/// A WebSocket client that asked for a small receive buffer (so the kernel
/// stops absorbing frames early) and reads nothing until the test says so.
pub async fn stalled_client(server: &Server, path: &str) -> RawWs {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
    let stream = socket.connect(server.addr).await.expect("connect");
    RawWs::handshake(stream, server.addr, path).await
}

/// A WebSocket client whose socket asked for a 4 MiB receive buffer (the
/// kernel caps it at `net.core.rmem_max`, at least 208 KiB by default), so
/// what the server sends it in a test fits the kernel's buffers however
/// late the test reads it: the server never finds it refusing bytes.
pub async fn roomy_client(server: &Server, path: &str) -> RawWs {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4 << 20).expect("SO_RCVBUF");
    let stream = socket.connect(server.addr).await.expect("connect");
    RawWs::handshake(stream, server.addr, path).await
}

/// Posts 30 000-character messages from `fast` until the server reports a
/// slow consumer dropped; returns how many were posted. Needs a server with
/// `rate(0)` and `max_message_chars` of at least 30 000. `fast` posts in
/// lockstep (each message waits for its own echo), so its own queue never
/// holds more than one frame. A `leave` arriving between the echoes (the
/// dropped member's) is returned with the count rather than failing the read;
/// a late `join` of the stalled member is skipped.
pub async fn flood_until_a_slow_consumer_is_dropped(
    server: &Server,
    fast: &mut Client,
) -> (u64, Option<Value>) {
    let content = "z".repeat(30_000);
    let mut sent = 0u64;
    let mut leave = None;
    while server.metric("roomcast_slow_consumers_dropped_total").await == 0 {
        assert!(
            sent < 4000,
            "no slow consumer was dropped after {sent} messages"
        );
        for _ in 0..16 {
            fast.send_json(serde_json::json!({"type": "message", "content": &content}))
                .await;
            // Presence may arrive between the echoes: the stalled member's
            // `join` (its session joins the hub after its 101 was sent, so
            // possibly after `fast`'s), and its `leave` once it is dropped.
            let echo = loop {
                let event = fast.recv_json().await;
                match event["type"].as_str() {
                    Some("join") => {}
                    Some("leave") => leave = Some(event),
                    _ => break event,
                }
            };
            assert_eq!(echo["type"], "message", "expected the echo, got {echo}");
            sent += 1;
        }
    }
    (sent, leave)
}

/// A WebSocket opened by hand over a plain TCP stream, for clients that
/// must misbehave: it never answers pings and reads only when told to.
pub struct RawWs {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

/// One frame as the server sent it.
#[derive(Debug)]
pub struct RawFrame {
    pub opcode: u8,
    pub payload: Vec<u8>,
}

impl RawFrame {
    /// The close code of a close frame.
    pub fn close_code(&self) -> Option<u16> {
        (self.opcode == 8 && self.payload.len() >= 2)
            .then(|| u16::from_be_bytes([self.payload[0], self.payload[1]]))
    }
}

impl RawWs {
    /// Performs the handshake on `stream` and asserts `101`.
    pub async fn handshake(stream: TcpStream, addr: SocketAddr, path: &str) -> Self {
        match Self::try_handshake(stream, addr, path, &[]).await {
            Ok(ws) => ws,
            Err(res) => panic!("upgrade refused: {} {}", res.status, res.text()),
        }
    }

    /// Performs the handshake on `stream` with `extra` headers: the
    /// WebSocket after `101`, or the refusal (read to its end).
    pub async fn try_handshake(
        stream: TcpStream,
        addr: SocketAddr,
        path: &str,
        extra: &[(&str, &str)],
    ) -> Result<Self, HttpResponse> {
        Self::handshake_then(stream, addr, path, extra, &[]).await
    }

    /// Opens a WebSocket whose upgrade request and `texts` (as masked
    /// text frames) go out in one write, so that the server reads the
    /// frames along with the request; asserts `101`.
    pub async fn connect_sending(addr: SocketAddr, path: &str, texts: &[&str]) -> Self {
        let stream = TcpStream::connect(addr).await.expect("connect");
        let frames: Vec<u8> = texts
            .iter()
            .flat_map(|t| frame_bytes(0x81, t.as_bytes(), true))
            .collect();
        match Self::handshake_then(stream, addr, path, &[], &frames).await {
            Ok(ws) => ws,
            Err(res) => panic!("upgrade refused: {} {}", res.status, res.text()),
        }
    }

    /// The handshake with `extra` headers, `after` written in the same
    /// write as the request.
    async fn handshake_then(
        mut stream: TcpStream,
        addr: SocketAddr,
        path: &str,
        extra: &[(&str, &str)],
        after: &[u8],
    ) -> Result<Self, HttpResponse> {
        let path = with_claim(path);
        let mut req = format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
        );
        for (name, value) in extra {
            req.push_str(&format!("{name}: {value}\r\n"));
        }
        req.push_str("\r\n");
        let mut bytes = req.into_bytes();
        bytes.extend_from_slice(after);
        stream.write_all(&bytes).await.expect("send handshake");
        let mut buf = Vec::new();
        let end = loop {
            if let Some(i) = find(&buf, b"\r\n\r\n") {
                break i;
            }
            let mut chunk = [0u8; 1024];
            let n = tokio::time::timeout(TIMEOUT, stream.read(&mut chunk))
                .await
                .expect("handshake answer timed out")
                .expect("read handshake answer");
            assert!(n > 0, "closed during handshake");
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
        if !head.starts_with("HTTP/1.1 101") {
            // Hand the bytes read so far back to the response reader.
            let mut replay = std::io::Cursor::new(buf).chain(stream);
            return Err(
                tokio::time::timeout(TIMEOUT, read_response_from(&mut replay))
                    .await
                    .expect("refusal body timed out"),
            );
        }
        // RFC 6455's own example key and accept value.
        assert!(
            head.to_ascii_lowercase()
                .contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo="),
            "wrong accept key: {head}"
        );
        buf.drain(..end + 4);
        Ok(Self { stream, buf })
    }

    pub async fn connect(addr: SocketAddr, path: &str) -> Self {
        let stream = TcpStream::connect(addr).await.expect("connect");
        Self::handshake(stream, addr, path).await
    }

    /// Reads one whole frame (server frames are never masked).
    pub async fn read_frame(&mut self) -> RawFrame {
        tokio::time::timeout(TIMEOUT, self.read_frame_inner())
            .await
            .expect("no frame within the timeout")
    }

    async fn fill(&mut self, n: usize) {
        while self.buf.len() < n {
            let mut chunk = vec![0u8; 64 << 10];
            let got = self.stream.read(&mut chunk).await.expect("read frame");
            assert!(
                got > 0,
                "connection ended mid-frame or before a close frame"
            );
            self.buf.extend_from_slice(&chunk[..got]);
        }
    }

    async fn read_frame_inner(&mut self) -> RawFrame {
        self.fill(2).await;
        assert_eq!(self.buf[0] & 0x80, 0x80, "roomcast sends only final frames");
        assert_eq!(self.buf[1] & 0x80, 0, "server frames must not be masked");
        let opcode = self.buf[0] & 0x0f;
        let (header, len) = match self.buf[1] & 0x7f {
            126 => {
                self.fill(4).await;
                (
                    4,
                    usize::from(u16::from_be_bytes([self.buf[2], self.buf[3]])),
                )
            }
            127 => {
                self.fill(10).await;
                let mut b = [0u8; 8];
                b.copy_from_slice(&self.buf[2..10]);
                (
                    10,
                    usize::try_from(u64::from_be_bytes(b)).expect("frame length"),
                )
            }
            n => (2, usize::from(n)),
        };
        self.fill(header + len).await;
        let payload = self.buf[header..header + len].to_vec();
        self.buf.drain(..header + len);
        RawFrame { opcode, payload }
    }

    /// Reads frames until a close frame and returns its code; counts the
    /// pings seen on the way.
    pub async fn read_until_close(&mut self) -> (u16, usize) {
        let mut pings = 0;
        loop {
            let frame = self.read_frame().await;
            match frame.opcode {
                8 => return (frame.close_code().expect("close frame with a code"), pings),
                9 => pings += 1,
                _ => {}
            }
        }
    }

    /// Sends a masked text frame.
    pub async fn send_text(&mut self, text: &str) {
        self.send_frame(0x81, text.as_bytes(), true).await;
    }

    /// Sends one frame: `first` is the FIN bit and opcode byte; `masked`
    /// false makes a frame no client may send.
    pub async fn send_frame(&mut self, first: u8, payload: &[u8], masked: bool) {
        let frame = frame_bytes(first, payload, masked);
        self.stream.write_all(&frame).await.expect("send frame");
    }

    /// Sends one masked frame `times` over, in one write (so the server
    /// reads them all before it can act on the first).
    pub async fn send_repeated(&mut self, first: u8, payload: &[u8], times: usize) {
        let frames = frame_bytes(first, payload, true).repeat(times);
        self.stream.write_all(&frames).await.expect("send frames");
    }

    /// Reads frames until a text frame and parses it as JSON.
    pub async fn read_json(&mut self) -> Value {
        loop {
            let frame = self.read_frame().await;
            match frame.opcode {
                1 => return serde_json::from_slice(&frame.payload).expect("JSON text frame"),
                9 | 10 => continue,
                other => panic!("expected a text frame, got opcode {other}: {frame:?}"),
            }
        }
    }
}

/// One frame's bytes: `first` is the FIN bit and opcode byte; `masked` as
/// a client must send it.
fn frame_bytes(first: u8, payload: &[u8], masked: bool) -> Vec<u8> {
    let mask_bit = if masked { 0x80u8 } else { 0 };
    let mut frame = vec![first];
    match payload.len() {
        n if n < 126 => frame.push(mask_bit | n as u8),
        n if n <= 0xffff => {
            frame.push(mask_bit | 126);
            frame.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            frame.push(mask_bit | 127);
            frame.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    if masked {
        let mask = [0x12u8, 0x34, 0x56, 0x78];
        frame.extend_from_slice(&mask);
        frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    } else {
        frame.extend_from_slice(payload);
    }
    frame
}
