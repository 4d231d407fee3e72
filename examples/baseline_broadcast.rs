//! The naive way to build the chat server, kept as a yardstick for
//! `examples/loadgen.rs`: one `tokio::sync::broadcast` channel per room, a
//! task per member that receives every message and serializes it again for
//! its own socket, and tungstenite writing (and flushing) each frame.
//!
//! It speaks only the subset of roomcast's protocol the load generator uses:
//! `GET /ws/{room}/{user}`, a `welcome` first, then every `message` of the
//! room (the sender's own included). No history, presence, limits or
//! validation: do not deploy it.
//!
//! ```text
//! cargo run --release --example baseline_broadcast -- --port 8001
//! ```

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use futures_util::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::broadcast;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};

/// Messages a room's channel holds for a member that lags.
const CHANNEL_CAPACITY: usize = 1024;

/// A message as it travels through a room's channel.
struct ChatMessage {
    id: u64,
    seq: u64,
    user: String,
    content: String,
    timestamp: String,
}

#[derive(Serialize)]
struct MessageEvent<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    message_id: String,
    seq: u64,
    user: &'a str,
    content: &'a str,
    timestamp: &'a str,
    reactions: HashMap<String, Vec<String>>,
}

#[derive(Serialize)]
struct WelcomeEvent<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    room: &'a str,
    user: &'a str,
    online: Vec<String>,
    online_count: usize,
    history: Vec<()>,
}

#[derive(Deserialize)]
struct ClientRequest {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    content: String,
}

struct RoomChannel {
    tx: broadcast::Sender<Arc<ChatMessage>>,
    seq: AtomicU64,
}

#[derive(Default)]
struct Rooms {
    map: Mutex<HashMap<String, Arc<RoomChannel>>>,
    next_id: AtomicU64,
}

impl Rooms {
    fn get(&self, name: &str) -> Arc<RoomChannel> {
        let mut map = self.map.lock().expect("rooms lock");
        Arc::clone(map.entry(name.to_owned()).or_insert_with(|| {
            Arc::new(RoomChannel {
                tx: broadcast::channel(CHANNEL_CAPACITY).0,
                seq: AtomicU64::new(0),
            })
        }))
    }
}

/// `/ws/{room}/{user}` → (room, user), percent-decoding left out.
fn names(path: &str) -> Option<(String, String)> {
    let (room, user) = path.strip_prefix("/ws/")?.split_once('/')?;
    Some((room.to_owned(), user.to_owned()))
}

async fn session(stream: TcpStream, rooms: Arc<Rooms>) {
    let _ = stream.set_nodelay(true);
    let mut path = String::new();
    // The error type is tungstenite's `Callback` contract, not ours.
    #[allow(clippy::result_large_err)]
    let capture = |req: &Request, res: Response| {
        path = req.uri().path().to_owned();
        Ok(res)
    };
    let Ok(ws) = tokio_tungstenite::accept_hdr_async(stream, capture).await else {
        return;
    };
    let Some((room_name, user)) = names(&path) else {
        return;
    };
    let room = rooms.get(&room_name);
    let mut rx = room.tx.subscribe();
    let (mut sink, mut stream) = ws.split();

    let welcome = WelcomeEvent {
        kind: "welcome",
        room: &room_name,
        user: &user,
        online: vec![user.clone()],
        online_count: room.tx.receiver_count(),
        history: Vec::new(),
    };
    let welcome = serde_json::to_string(&welcome).expect("serializable");
    if sink.send(Message::text(welcome)).await.is_err() {
        return;
    }

    // The member's task: receive each message, serialize it for this
    // socket, send and flush it.
    let writer = async move {
        loop {
            let msg = match rx.recv().await {
                Ok(m) => m,
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => break,
            };
            let event = MessageEvent {
                kind: "message",
                message_id: format!("{:016x}", msg.id),
                seq: msg.seq,
                user: &msg.user,
                content: &msg.content,
                timestamp: &msg.timestamp,
                reactions: HashMap::new(),
            };
            let text = serde_json::to_string(&event).expect("serializable");
            if sink.send(Message::text(text)).await.is_err() {
                break;
            }
        }
    };
    let writer = tokio::spawn(writer);

    while let Some(Ok(msg)) = stream.next().await {
        let Message::Text(text) = msg else { continue };
        let Ok(req) = serde_json::from_str::<ClientRequest>(&text) else {
            continue;
        };
        if req.kind != "message" {
            continue;
        }
        let message = ChatMessage {
            id: rooms.next_id.fetch_add(1, Ordering::Relaxed),
            seq: room.seq.fetch_add(1, Ordering::Relaxed) + 1,
            user: user.clone(),
            content: req.content,
            timestamp: humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
        };
        let _ = room.tx.send(Arc::new(message));
    }
    writer.abort();
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    use lexopt::prelude::*;
    let (mut host, mut port) = ("127.0.0.1".to_owned(), 8001u16);
    let mut parser = lexopt::Parser::from_env();
    while let Some(arg) = parser.next()? {
        match arg {
            Long("host") => host = parser.value()?.parse()?,
            Long("port") => port = parser.value()?.parse()?,
            Short('h') | Long("help") => {
                println!("baseline_broadcast [--host H] [--port P]   (default 127.0.0.1:8001)");
                return Ok(());
            }
            _ => return Err(arg.unexpected().into()),
        }
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let served: std::io::Result<()> = runtime.block_on(async {
        let listener = TcpListener::bind((host.as_str(), port)).await?;
        println!("listening on http://{}", listener.local_addr()?);
        let rooms = Arc::new(Rooms::default());
        loop {
            let (stream, _) = match listener.accept().await {
                Ok(pair) => pair,
                Err(_) => {
                    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                    continue;
                }
            };
            tokio::spawn(session(stream, Arc::clone(&rooms)));
        }
    });
    Ok(served?)
}
