//! One WebSocket connection after the handshake.
//!
//! Reading and writing run as two futures in one task. The reader is
//! tungstenite (masking, fragmentation, UTF-8 and size checks); it gets a
//! write side that discards, because roomcast writes every server frame
//! itself: the writer drains the member's [`Outbox`] of shared, pre-encoded
//! frames and writes them all with one vectored write. Pongs and close
//! replies go through the same outbox, so they stay in order with everything
//! else.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::time::Instant;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::error::{CapacityError, Error as WsError};
use tokio_tungstenite::tungstenite::protocol::{Message, Role, WebSocketConfig};

use super::protocol::{self, Request};
use crate::hub::{CloseReason, ErrorCode, Frame, Member, Outbox, Refusal, frames};
use crate::media::MediaStore;
use crate::metrics::Metrics;

/// What a session needs besides its socket and membership.
pub struct SessionConfig {
    /// Longest message, in characters.
    pub max_message_chars: usize,
    /// Largest frame or message a client may send, in bytes.
    pub max_frame_bytes: usize,
    /// Sustained requests per second (0: no limit).
    pub rate: u32,
    /// Requests allowed at once.
    pub rate_burst: u32,
    /// How often to ping.
    pub ping_interval: Duration,
    /// Close after this long without hearing from the client.
    pub idle_timeout: Duration,
}

/// A write that takes longer than this means the peer stopped reading.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a closing connection may take to flush its last frames.
const CLOSE_GRACE: Duration = Duration::from_secs(5);
/// Most frames handed to one `writev`.
const MAX_IOV: usize = 64;

const PONG_EVENT: &[u8] = b"\x81\x0f{\"type\":\"pong\"}";

/// A token bucket: `rate` per second, up to `burst` at once.
struct RateLimiter {
    tokens: f64,
    burst: f64,
    rate: f64,
    last: Instant,
}

impl RateLimiter {
    fn new(rate: u32, burst: u32) -> Self {
        let burst = f64::from(burst.max(1));
        Self {
            tokens: burst,
            burst,
            rate: f64::from(rate),
            last: Instant::now(),
        }
    }

    fn allow(&mut self) -> bool {
        if self.rate == 0.0 {
            return true;
        }
        let now = Instant::now();
        let refill = now.duration_since(self.last).as_secs_f64() * self.rate;
        self.tokens = (self.tokens + refill).min(self.burst);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Gives tungstenite a read side only: whatever it would write (automatic
/// pongs and close replies) is dropped, because the session's writer sends
/// those itself through the outbox.
struct ReadOnly<R>(R);

impl<R: AsyncRead + Unpin> AsyncRead for ReadOnly<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl<R: Unpin> AsyncWrite for ReadOnly<R> {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// Writes `frames` in order with as few `writev` calls as the socket allows.
async fn write_frames<W: AsyncWrite + Unpin>(w: &mut W, frames: &[Frame]) -> io::Result<()> {
    let (mut idx, mut off) = (0, 0);
    while idx < frames.len() {
        let mut slices = [IoSlice::new(&[]); MAX_IOV];
        let n = (frames.len() - idx).min(MAX_IOV);
        for (i, slice) in slices.iter_mut().take(n).enumerate() {
            let f = &frames[idx + i];
            *slice = IoSlice::new(if i == 0 { &f[off..] } else { f });
        }
        let mut written = w.write_vectored(&slices[..n]).await?;
        if written == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        while written > 0 {
            let left = frames[idx].len() - off;
            if written >= left {
                written -= left;
                idx += 1;
                off = 0;
            } else {
                off += written;
                written = 0;
            }
        }
        // Skip empty frames so a trailing one cannot spin the loop.
        while idx < frames.len() && frames[idx].len() == off {
            idx += 1;
            off = 0;
        }
    }
    w.flush().await
}

/// Drains the outbox to the socket until a close is requested or a write fails.
async fn write_loop<W: AsyncWrite + Unpin>(
    mut w: W,
    outbox: &Outbox,
    metrics: &Metrics,
) -> io::Result<()> {
    let mut batch: Vec<Frame> = Vec::new();
    loop {
        let close = outbox.next_batch(&mut batch).await;
        if !batch.is_empty() {
            let bytes: usize = batch.iter().map(Bytes::len).sum();
            tokio::time::timeout(WRITE_TIMEOUT, write_frames(&mut w, &batch))
                .await
                .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))??;
            metrics.frames_out.add(batch.len() as u64);
            metrics.bytes_out.add(bytes as u64);
            batch.clear();
            if batch.capacity() > 256 {
                batch = Vec::new(); // a burst is over: give idle connections their memory back
            }
        }
        if let Some(reason) = close {
            let frame = frames::close(reason.code, reason.reason);
            let _ = tokio::time::timeout(CLOSE_GRACE, async {
                w.write_all(&frame).await?;
                w.shutdown().await
            })
            .await;
            return Ok(());
        }
    }
}

/// Runs one connection to its end. `pre_read` holds bytes the HTTP layer
/// had already read past the handshake.
pub async fn run<R, W>(
    reader: R,
    writer: W,
    pre_read: Vec<u8>,
    member: Member,
    config: Arc<SessionConfig>,
    media: MediaStore,
    metrics: Arc<Metrics>,
) where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let ws_config = WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0)
        .max_message_size(Some(config.max_frame_bytes))
        .max_frame_size(Some(config.max_frame_bytes));
    let mut ws = WebSocketStream::from_partially_read(
        ReadOnly(reader),
        pre_read,
        Role::Server,
        Some(ws_config),
    )
    .await;
    let outbox = Arc::clone(member.outbox());
    let writer = write_loop(writer, &outbox, &metrics);
    tokio::pin!(writer);

    let mut limiter = RateLimiter::new(config.rate, config.rate_burst);
    let flood_limit = config.rate_burst.max(1);
    let mut strikes = 0u32;
    let mut last_heard = Instant::now();
    let mut ping =
        tokio::time::interval_at(Instant::now() + config.ping_interval, config.ping_interval);
    let mut writer_done = false;

    loop {
        tokio::select! {
            _ = &mut writer => { writer_done = true; break; }
            _ = ping.tick() => {
                if last_heard.elapsed() >= config.idle_timeout {
                    outbox.close(CloseReason { code: 1000, reason: "no answer to ping; closing idle connection" });
                    break;
                }
                member.send(frames::ping());
            }
            msg = ws.next() => {
                let msg = match msg {
                    None => break,
                    Some(Ok(msg)) => msg,
                    Some(Err(e)) => {
                        outbox.close(close_for(&e));
                        break;
                    }
                };
                last_heard = Instant::now();
                if let Message::Pong(_) = msg {
                    continue;
                }
                if let Message::Close(_) = msg {
                    outbox.close(CloseReason { code: 1000, reason: "bye" });
                    break;
                }
                metrics.frames_in.inc();
                if !limiter.allow() {
                    strikes += 1;
                    metrics.rate_limited.inc();
                    if strikes >= flood_limit {
                        outbox.close(CloseReason { code: 1008, reason: "too many requests; slow down" });
                        break;
                    }
                    let r = Refusal::new(
                        ErrorCode::RateLimited,
                        format!("more than {} requests per second; this one was dropped", config.rate),
                    );
                    member.send(r.frame(None));
                    continue;
                }
                strikes = 0;
                match msg {
                    Message::Text(text) => handle_text(&text, &member, &config, &media).await,
                    Message::Binary(_) => {
                        let r = Refusal::new(ErrorCode::Unsupported, "binary frames are not supported; send JSON text");
                        member.send(r.frame(None));
                    }
                    Message::Ping(payload) => {
                        member.send(frames::pong(&payload));
                    }
                    Message::Pong(_) | Message::Close(_) | Message::Frame(_) => {}
                }
            }
        }
    }

    if !writer_done {
        outbox.close(CloseReason {
            code: 1000,
            reason: "bye",
        });
        let _ = tokio::time::timeout(CLOSE_GRACE + WRITE_TIMEOUT, &mut writer).await;
    }
    drop(member); // leaves the room: `leave` goes to the rest
}

fn close_for(e: &WsError) -> CloseReason {
    match e {
        WsError::Capacity(CapacityError::MessageTooLong { .. }) => CloseReason {
            code: 1009,
            reason: "frame too large; the limit is 64 KiB",
        },
        WsError::Utf8(_) => CloseReason {
            code: 1007,
            reason: "text frame is not valid UTF-8",
        },
        WsError::Protocol(_) => CloseReason {
            code: 1002,
            reason: "WebSocket protocol error",
        },
        _ => CloseReason {
            code: 1011,
            reason: "connection error",
        },
    }
}

async fn handle_text(text: &str, member: &Member, config: &SessionConfig, media: &MediaStore) {
    let request = match protocol::parse(text, config.max_message_chars) {
        Ok(r) => r,
        Err(rejected) => {
            member.send(rejected.refusal.frame(rejected.kind.as_deref()));
            return;
        }
    };
    let (kind, result) = match request {
        Request::Message {
            content,
            attachment_url,
            client_id,
        } => {
            let attachment = match attachment_url {
                None => None,
                Some(url) => match media.resolve(&url).await {
                    Some(a) => Some(a),
                    None => {
                        let r = Refusal::new(
                            ErrorCode::BadAttachment,
                            "the attachment must be a URL returned by POST /upload on this server",
                        );
                        member.send(r.frame(Some("message")));
                        return;
                    }
                },
            };
            member.post(content, attachment, client_id.as_deref());
            ("message", Ok(()))
        }
        Request::React {
            message_id,
            emoji,
            action,
            kind,
        } => (kind, member.react(&message_id, emoji, action)),
        Request::Edit {
            message_id,
            content,
        } => ("edit", member.edit(&message_id, content)),
        Request::Delete { message_id } => ("delete", member.delete(&message_id)),
        Request::Typing => {
            member.typing();
            ("typing", Ok(()))
        }
        Request::Presence => {
            member.presence();
            ("presence", Ok(()))
        }
        Request::Ping => {
            member.send(Bytes::from_static(PONG_EVENT));
            ("ping", Ok(()))
        }
    };
    if let Err(refusal) = result {
        member.send(refusal.frame(Some(kind)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pong_event_is_a_valid_frame() {
        assert_eq!(PONG_EVENT.len(), 2 + PONG_EVENT[1] as usize);
        assert_eq!(&PONG_EVENT[2..], br#"{"type":"pong"}"#);
    }

    #[tokio::test]
    async fn write_frames_handles_many_frames_and_partial_writes() {
        let frames: Vec<Frame> = (0..200)
            .map(|i| Bytes::from(format!("frame-{i};")))
            .collect();
        let expected: Vec<u8> = frames.iter().flat_map(|f| f.iter().copied()).collect();
        // A duplex pipe with a tiny buffer forces many partial writes.
        let (mut a, mut b) = tokio::io::duplex(7);
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            tokio::io::AsyncReadExt::read_to_end(&mut b, &mut got)
                .await
                .unwrap();
            got
        });
        write_frames(&mut a, &frames).await.unwrap();
        drop(a);
        assert_eq!(reader.await.unwrap(), expected);
    }
}
