//! The "floor": the least a chat fan-out server can do, kept as a yardstick
//! beside `baseline_broadcast` (issue 15). Whatever roomcast adds (history,
//! presence, limits, bounded queues) must not cost more latency than this.
//!
//! - One current-thread tokio runtime.
//! - Each member has a writer task fed by an unbounded `mpsc` of `Bytes`.
//! - A broadcast frames the event once and pushes the same `Bytes` into
//!   every member's channel under one lock.
//! - A woken writer copies every frame already queued into one buffer (up
//!   to 64 KiB) and issues one `write()`.
//! - The reader is a separate task.
//!
//! It speaks only what `examples/loadgen.rs` uses: `GET /ws/{room}/{user}`,
//! a `welcome` first, then every `message` of the room (the sender's own
//! included). Nothing is bounded or validated: do not deploy it.
//!
//! ```text
//! cargo run --release --example baseline_floor -- --port 0
//! ```

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedReadHalf;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

/// Most bytes a writer gathers into one `write()`.
const MAX_WRITE: usize = 64 << 10;

#[derive(Serialize)]
struct MessageEvent<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    message_id: String,
    seq: u64,
    user: &'a str,
    content: &'a str,
    timestamp: String,
    reactions: HashMap<String, Vec<String>>,
}

#[derive(Serialize)]
struct WelcomeEvent<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    room: &'a str,
    user: &'a str,
    history: Vec<()>,
}

#[derive(Deserialize)]
struct ClientRequest {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    content: String,
}

#[derive(Default)]
struct Room {
    members: Mutex<HashMap<u64, mpsc::UnboundedSender<Bytes>>>,
    seq: AtomicU64,
}

#[derive(Default)]
struct Rooms {
    map: Mutex<HashMap<String, Arc<Room>>>,
    next_id: AtomicU64,
}

/// An unmasked server text frame around `payload`.
fn text_frame(payload: &[u8]) -> Bytes {
    let mut f = Vec::with_capacity(payload.len() + 10);
    f.push(0x81);
    match payload.len() {
        n if n < 126 => f.push(n as u8),
        n if n <= u16::MAX as usize => {
            f.push(126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            f.push(127);
            f.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    f.extend_from_slice(payload);
    Bytes::from(f)
}

/// Reads the HTTP upgrade request and answers it; returns the request path.
async fn handshake(stream: &mut TcpStream) -> Option<String> {
    let mut buf = Vec::with_capacity(1024);
    let end = loop {
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        if buf.len() > 8192 || stream.read_buf(&mut buf).await.ok()? == 0 {
            return None;
        }
    };
    let head = std::str::from_utf8(&buf[..end]).ok()?;
    let path = head.lines().next()?.split(' ').nth(1)?.to_owned();
    let key = head.lines().find_map(|l| {
        let (name, value) = l.split_once(':')?;
        name.eq_ignore_ascii_case("sec-websocket-key")
            .then(|| value.trim())
    })?;
    let response = format!(
        "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Accept: {}\r\n\r\n",
        derive_accept_key(key.as_bytes())
    );
    stream.write_all(response.as_bytes()).await.ok()?;
    Some(path)
}

/// The reader task: client frames in, a broadcast for every `message`.
async fn read_loop(mut rd: OwnedReadHalf, room: Arc<Room>, rooms: Arc<Rooms>, user: String) {
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    loop {
        // Every complete frame in the buffer (client frames are masked).
        let mut pos = 0;
        while buf.len() - pos >= 6 {
            let b = &buf[pos..];
            let (head, len) = match b[1] & 0x7f {
                126 => (8, u16::from_be_bytes([b[2], b[3]]) as usize),
                127 => (
                    14,
                    u64::from_be_bytes(b[2..10].try_into().unwrap()) as usize,
                ),
                n => (6, n as usize),
            };
            if b.len() < head + len {
                break;
            }
            let (opcode, mask) = (
                b[0] & 0x0f,
                [b[head - 4], b[head - 3], b[head - 2], b[head - 1]],
            );
            let payload: Vec<u8> = b[head..head + len]
                .iter()
                .enumerate()
                .map(|(i, x)| x ^ mask[i % 4])
                .collect();
            pos += head + len;
            if opcode == 0x8 {
                return;
            }
            if opcode == 0x1 {
                broadcast(&payload, &room, &rooms, &user);
            }
        }
        buf.drain(..pos);
        match rd.read_buf(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

/// Frames a `message` once and pushes the same bytes to every member.
fn broadcast(payload: &[u8], room: &Room, rooms: &Rooms, user: &str) {
    let Ok(req) = serde_json::from_slice::<ClientRequest>(payload) else {
        return;
    };
    if req.kind != "message" {
        return;
    }
    let event = MessageEvent {
        kind: "message",
        message_id: format!("{:016x}", rooms.next_id.fetch_add(1, Ordering::Relaxed)),
        seq: room.seq.fetch_add(1, Ordering::Relaxed) + 1,
        user,
        content: &req.content,
        timestamp: humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
        reactions: HashMap::new(),
    };
    let frame = text_frame(&serde_json::to_vec(&event).expect("serializable"));
    for tx in room.members.lock().unwrap().values() {
        let _ = tx.send(frame.clone());
    }
}

async fn session(mut stream: TcpStream, rooms: Arc<Rooms>) {
    let _ = stream.set_nodelay(true);
    let Some(path) = handshake(&mut stream).await else {
        return;
    };
    let Some((room_name, user)) = path.strip_prefix("/ws/").and_then(|p| p.split_once('/')) else {
        return;
    };
    let (room_name, user) = (room_name.to_owned(), user.to_owned());
    let room = Arc::clone(
        rooms
            .map
            .lock()
            .unwrap()
            .entry(room_name.clone())
            .or_default(),
    );
    let id = rooms.next_id.fetch_add(1, Ordering::Relaxed);
    let (tx, mut rx) = mpsc::unbounded_channel::<Bytes>();
    let welcome = WelcomeEvent {
        kind: "welcome",
        room: &room_name,
        user: &user,
        history: Vec::new(),
    };
    let _ = tx.send(text_frame(
        &serde_json::to_vec(&welcome).expect("serializable"),
    ));
    room.members.lock().unwrap().insert(id, tx);

    let (rd, mut wr) = stream.into_split();
    let reader = tokio::spawn(read_loop(rd, Arc::clone(&room), rooms, user));
    // The writer: everything already queued, copied into one buffer, one write.
    let writer = tokio::spawn(async move {
        let mut buf = Vec::with_capacity(MAX_WRITE);
        while let Some(first) = rx.recv().await {
            buf.clear();
            buf.extend_from_slice(&first);
            while buf.len() < MAX_WRITE {
                match rx.try_recv() {
                    Ok(frame) => buf.extend_from_slice(&frame),
                    Err(_) => break,
                }
            }
            if wr.write_all(&buf).await.is_err() {
                return;
            }
        }
    });
    let _ = reader.await;
    room.members.lock().unwrap().remove(&id);
    writer.abort();
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (mut host, mut port) = ("127.0.0.1".to_owned(), 8002u16);
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match (arg.as_str(), args.next()) {
            ("--host", Some(h)) => host = h,
            ("--port", Some(p)) => port = p.parse()?,
            _ => {
                println!("baseline_floor [--host H] [--port P]   (default 127.0.0.1:8002)");
                return Ok(());
            }
        }
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let served: std::io::Result<()> = runtime.block_on(async {
        let listener = TcpListener::bind((host.as_str(), port)).await?;
        println!("listening on http://{}", listener.local_addr()?);
        let rooms = Arc::new(Rooms::default());
        loop {
            match listener.accept().await {
                Ok((stream, _)) => drop(tokio::spawn(session(stream, Arc::clone(&rooms)))),
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(5)).await,
            }
        }
    });
    Ok(served?)
}
