//! One WebSocket connection after the handshake.
//!
//! Reading and writing run as two tasks on the connection's worker. The
//! reader is tungstenite (masking, fragmentation, UTF-8 and size checks);
//! it gets a write side that discards, because roomcast writes every
//! server frame itself: the writer ([`super::writer`]) copies what the
//! member's [`crate::hub::Outbox`] holds (shared, pre-encoded frames) into its
//! worker's buffer and writes it with one `write`. Pongs and close replies
//! go through the same outbox, so they stay in order with everything else.
//!
//! Overload is not slowness (`docs/protocol.md`): the writer tells
//! the outbox when the socket refuses bytes, the outbox tells the server's
//! [`Backlog`] when it is behind while its socket takes bytes, and while
//! any is, sessions read no new requests.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::error::{CapacityError, Error as WsError};
use tokio_tungstenite::tungstenite::protocol::{Message, Role, WebSocketConfig};

use super::expiry::Expiry;
use super::frame_bounded::{FrameBounded, TooManyFragments};
use super::protocol::{self, Request};
use super::rate::{IdentityRates, Verdict};
use super::ticker::Ticker;
use super::woken::PollWhenWoken;
use super::writer::{CLOSE_GRACE, WRITE_TIMEOUT, WriterTask};
use crate::hub::{
    Attachment, AttachmentPreview, BacklogHook, CloseReason, ErrorCode, Member, Refusal, frames,
};
use crate::media::preview_pool::PreviewPool;
use crate::media::{AttachError, MediaStore, PreviewInfo};
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
    /// Every identity's bucket, charged along with each connection's own.
    pub identity_rates: IdentityRates,
    /// How often to ping.
    pub ping_interval: Duration,
    /// Close after this long without hearing from the client.
    pub idle_timeout: Duration,
    /// Checks a token renewed in place (the `auth` request).
    pub auth: Arc<crate::auth::Auth>,
    /// The server's writers against its readers; one per server.
    pub backlog: Backlog,
    /// Where previews of uploaded images are made: a message attaching an
    /// image whose preview is still being made gets it when it is ready.
    pub previews: PreviewPool,
}

/// How many of a server's queues are behind: outboxes (see
/// [`crate::hub::Outbox`]) past a quarter of their bounds while their socket
/// still takes bytes, so the server, not the client, is late; and the
/// history store's queue past three quarters of its bound (see
/// [`crate::hub::Store::report_backlog`]). While any is, sessions read no
/// new requests and WebSocket handshakes wait (`ws/upgrade.rs`); the
/// queues drain, and the senders feel it as TCP backpressure instead of
/// healthy readers being closed as slow consumers or posts refused.
pub struct Backlog {
    behind: Arc<AtomicUsize>,
    clear: Arc<Notify>,
    /// Attached to every session's outbox and to the history store's queue.
    hook: BacklogHook,
}

impl Backlog {
    /// No queue behind yet; each pause (from none behind to one) is
    /// counted in `metrics`.
    pub fn new(metrics: Arc<Metrics>) -> Self {
        let behind = Arc::new(AtomicUsize::new(0));
        let clear = Arc::new(Notify::new());
        let hook: BacklogHook = {
            let (behind, clear) = (Arc::clone(&behind), Arc::clone(&clear));
            Arc::new(move |now_behind| {
                if now_behind {
                    if behind.fetch_add(1, Ordering::AcqRel) == 0 {
                        metrics.reads_paused.inc();
                    }
                } else if behind.fetch_sub(1, Ordering::AcqRel) == 1 {
                    clear.notify_waiters();
                }
            })
        };
        Self {
            behind,
            clear,
            hook,
        }
    }

    /// The hook a queue reports to when it starts or stops being behind.
    pub fn hook(&self) -> BacklogHook {
        Arc::clone(&self.hook)
    }

    /// Whether some queue is behind.
    pub fn is_behind(&self) -> bool {
        self.behind.load(Ordering::Acquire) > 0
    }

    /// Resolves once no queue is behind.
    pub async fn caught_up(&self) {
        loop {
            let notified = self.clear.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if !self.is_behind() {
                return;
            }
            notified.await;
        }
    }
}

const PONG_EVENT: &[u8] = b"\x81\x0f{\"type\":\"pong\"}";

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

/// Runs one connection to its end. `pre_read` holds bytes the HTTP layer
/// had already read past the handshake.
pub async fn run<R, W>(
    reader: R,
    writer: W,
    pre_read: Vec<u8>,
    (mut member, expiry): (Member, Expiry),
    config: Arc<SessionConfig>,
    media: MediaStore,
    metrics: Arc<Metrics>,
) where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin + Send + 'static,
{
    // Chat requests are small: a 1 KiB read buffer serves them in one read,
    // and a larger frame reserves what it needs. Every idle connection holds
    // this buffer, and tungstenite zero-fills it before each read.
    let ws_config = WebSocketConfig::default()
        .read_buffer_size(1024)
        .write_buffer_size(0)
        .max_message_size(Some(config.max_frame_bytes))
        .max_frame_size(Some(config.max_frame_bytes));
    // tungstenite reads never past a frame's end (see `FrameBounded`), so
    // after a whole message its buffer is empty and may be replaced.
    let reader = ReadOnly(FrameBounded::new(reader, pre_read));
    let mut ws = PollWhenWoken::new(
        WebSocketStream::from_raw_socket(reader, Role::Server, Some(ws_config)).await,
    );
    let outbox = Arc::clone(member.outbox());
    let backlog = &config.backlog;
    outbox.report_backlog(backlog.hook());
    let mut writer = WriterTask::spawn(writer, Arc::clone(&outbox), Arc::clone(&metrics));

    // This connection's bucket and its identity's: a reconnect starts with
    // what the identity left, not a fresh burst.
    let mut limiter = config.identity_rates.limiter(member.identity());
    let flood_limit = config.rate_burst.max(1);
    let mut strikes = 0u32;
    let mut last_heard = Instant::now();
    // The first tick comes at the first ping or, if that is later, when an
    // idle connection is due to close.
    let first_tick = config.ping_interval.min(config.idle_timeout);
    let mut ping = Ticker::new(Instant::now() + first_tick, config.ping_interval);
    let mut writer_done = false;
    // No request is read before the `welcome` is queued: it must be the
    // first frame, and an echo must not be folded into its history.
    let welcomed = member.welcomed();
    tokio::pin!(welcomed);
    let mut welcome_queued = false;

    loop {
        // While the server's writers or its history store are behind, no
        // request is read: see [`Backlog`]. Its silence then is ours, not
        // the client's (`paused`: seen behind during this turn).
        let mut paused = false;
        // One turn: the first of these that is ready, in this order. A
        // connection whose writer has ended reads nothing more. Requests
        // already buffered are read one turn after the other without a
        // pause, and what they queued for this connection (an echo, an
        // error, a pong) goes out in one write after them. Reading stops
        // while the server's writers are behind, so a client pipelining
        // requests cannot fill its own queue while it reads promptly.
        let caught_up = backlog.caught_up();
        tokio::pin!(caught_up);
        let turn = std::future::poll_fn(|cx| {
            if Pin::new(&mut writer).poll(cx).is_ready() {
                return Poll::Ready(Turn::WriterDone);
            }
            if !welcome_queued && welcomed.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Turn::Welcomed);
            }
            // Looked at on every poll, right before reading, not once a
            // turn: a session that started waiting for its socket before
            // a queue fell behind must not read one more request when its
            // client sends one (thousands of idle sessions would each get
            // one past the throttle).
            let behind = backlog.is_behind();
            paused |= behind;
            if behind && caught_up.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Turn::CaughtUp);
            }
            if ping.poll_tick(cx).is_ready() {
                return Poll::Ready(Turn::Tick);
            }
            if welcome_queued
                && !behind
                && let Poll::Ready(msg) = ws.poll_next_unpin(cx)
            {
                return Poll::Ready(Turn::Request(msg));
            }
            Poll::Pending
        })
        .await;
        match turn {
            Turn::WriterDone => {
                writer_done = true;
                break;
            }
            Turn::Welcomed => welcome_queued = true,
            Turn::CaughtUp => {}
            Turn::Tick => {
                if paused {
                    last_heard = Instant::now(); // we are not reading: the silence is ours
                }
                let idle_deadline = last_heard + config.idle_timeout;
                if Instant::now() >= idle_deadline {
                    outbox.close(CloseReason {
                        code: 1000,
                        reason: "no answer to ping; closing idle connection",
                    });
                    break;
                }
                member.send(frames::ping());
                // If the connection stays silent, it is closed at its idle
                // deadline, not at the first ping after it.
                if idle_deadline < Instant::now() + config.ping_interval {
                    ping.reset_at(idle_deadline);
                }
            }
            Turn::Request(msg) => {
                let msg = match msg {
                    None => break,
                    Some(Ok(msg)) => msg,
                    Some(Err(e)) => {
                        outbox.close(close_for(&e));
                        break;
                    }
                };
                last_heard = Instant::now();
                // tungstenite keeps a buffer as large as the largest frame
                // it has read: after a large message (nothing of the next
                // one is in it yet) it is swapped for a new, small one,
                // whatever becomes of the message (refused by the rate
                // limit included).
                if large_message(&msg) {
                    let reader = ws.into_inner().into_inner();
                    ws = PollWhenWoken::new(
                        WebSocketStream::from_raw_socket(reader, Role::Server, Some(ws_config))
                            .await,
                    );
                }
                if let Message::Pong(_) = msg {
                    // A pong is never answered (no `rate_limited` either),
                    // but pongs past the connection's own rate count
                    // towards the flood close like any request: unsolicited
                    // pongs would otherwise be work without a bound.
                    let verdict = limiter.allow();
                    if verdict != Verdict::Taken {
                        metrics.rate_limited.inc();
                    }
                    if flooding(verdict, &mut strikes, flood_limit) {
                        outbox.close(FLOOD);
                        break;
                    }
                    continue;
                }
                if let Message::Close(frame) = msg {
                    // tungstenite hands a close whose code must never be
                    // sent over as 1002 already; a peer's own 1002 is
                    // answered in kind.
                    let sent = frame.map(|f| u16::from(f.code));
                    outbox.close(match sent {
                        Some(code) if code == 1002 || !close_code_may_be_sent(code) => {
                            CloseReason {
                                code: 1002,
                                reason: "that close code must never be sent (RFC 6455 section 7.4)",
                            }
                        }
                        _ => CloseReason {
                            code: 1000,
                            reason: "bye",
                        },
                    });
                    break;
                }
                metrics.frames_in.inc();
                // A connection the server has decided to close (its token
                // expired, a slow consumer, shutdown) acts no more, though
                // its writer may still be draining to a slow socket: what
                // it sends now is read and dropped, and the session waits
                // out its writer's bounded close below.
                if outbox.is_closing() {
                    break;
                }
                let verdict = limiter.allow();
                if verdict != Verdict::Taken {
                    metrics.rate_limited.inc();
                    if flooding(verdict, &mut strikes, flood_limit) {
                        outbox.close(FLOOD);
                        break;
                    }
                    let r = Refusal::new(
                        ErrorCode::RateLimited,
                        format!(
                            "more than {} requests per second (your connections count together); this one was dropped",
                            config.rate
                        ),
                    );
                    // It says which request was lost (an edit's text goes
                    // back in its box): its type and the message it is
                    // about, all that is read of it. Answered at once, it
                    // may overtake answers to earlier requests still
                    // waiting on the backbone.
                    let named = match &msg {
                        Message::Text(text) => protocol::named(text),
                        _ => protocol::Named::default(),
                    };
                    member.send(r.frame_about(
                        named.kind.as_deref(),
                        named.message_id.as_deref(),
                        named.client_id.as_deref(),
                    ));
                    continue;
                }
                strikes = 0;
                match msg {
                    Message::Text(text) => {
                        let request = match protocol::parse(&text, config.max_message_chars) {
                            Ok(request) => request,
                            Err(rejected) => {
                                member.send(rejected.refusal.frame(rejected.kind.as_deref()));
                                continue;
                            }
                        };
                        // The common request, a post without an attachment
                        // on one instance, is done at once.
                        let request = match request {
                            Request::Message {
                                content,
                                attachment_url: None,
                                client_id,
                            } => match member.post_now(content, client_id.as_deref()) {
                                Ok(posted) => {
                                    if let Err(refusal) = posted {
                                        member.send(refusal.frame(Some("message")));
                                    }
                                    continue;
                                }
                                Err(content) => Request::Message {
                                    content,
                                    attachment_url: None,
                                    client_id,
                                },
                            },
                            other => other,
                        };
                        // With the Redis backbone a request can wait for its
                        // reply; the writer keeps draining room traffic
                        // meanwhile, so the wait cannot overflow the queue.
                        // Boxed: inline, the largest request's future would
                        // make every idle connection's task that much larger.
                        let mut request =
                            Box::pin(handle_request(request, &member, &config, &media, &expiry));
                        tokio::select! {
                            biased;
                            () = &mut request => {}
                            _ = &mut writer => {
                                // The connection is closing (a token that
                                // expired, shutdown, a slow consumer) or its
                                // socket failed. The request may already be
                                // applied on the backbone: it runs to its
                                // end (each wait in it is bounded), so the
                                // change also reaches the history store. Its
                                // answer goes nowhere, and neither does what
                                // the room sends meanwhile: a socket that
                                // failed leaves its queue open, which would
                                // fill and count as behind, pausing every
                                // connection's reads until the request ends.
                                outbox.close(CloseReason::SOCKET_FAILED);
                                request.await;
                                writer_done = true;
                                break;
                            }
                        }
                    }
                    Message::Binary(_) => {
                        let r = Refusal::new(
                            ErrorCode::Unsupported,
                            "binary frames are not supported; send JSON text",
                        );
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
        let _ = Box::pin(tokio::time::timeout(
            CLOSE_GRACE + WRITE_TIMEOUT,
            &mut writer,
        ))
        .await;
    }
    drop(member); // leaves the room: `leave` goes to the rest
}

/// What one turn of a session's loop found ready.
enum Turn {
    /// The writer ended: the connection is closing or its socket failed.
    WriterDone,
    /// The member's `welcome` is queued: requests may be read.
    Welcomed,
    /// No outbox of the server is behind any more.
    CaughtUp,
    /// The ping timer fired.
    Tick,
    /// A request, the end of the stream, or a protocol error.
    Request(Option<Result<Message, tokio_tungstenite::tungstenite::Error>>),
}

/// Text or binary messages above this many bytes leave tungstenite's read
/// buffer larger than its usual 1 KiB.
const LARGE_MESSAGE: usize = 4096;

fn large_message(msg: &Message) -> bool {
    match msg {
        Message::Text(t) => t.len() > LARGE_MESSAGE,
        Message::Binary(b) => b.len() > LARGE_MESSAGE,
        _ => false,
    }
}

/// Whether a peer may send close code `code` (RFC 6455 §7.4.1 and the IANA
/// registry): 1000–1003, 1007–1014, and 3000–4999 for libraries and
/// applications. 1004–1006 and 1015 are reserved or only reported locally.
fn close_code_may_be_sent(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
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
        WsError::Io(e) if e.get_ref().is_some_and(|e| e.is::<TooManyFragments>()) => CloseReason {
            code: 1009,
            reason: "a message in too many fragments",
        },
        _ => CloseReason {
            code: 1011,
            reason: "connection error",
        },
    }
}

/// A stored preview as a message's attachment carries it.
fn preview_of(info: &PreviewInfo) -> AttachmentPreview {
    AttachmentPreview {
        url: info.url(),
        width: info.width,
        height: info.height,
    }
}

async fn handle_request(
    request: Request,
    member: &Member,
    config: &SessionConfig,
    media: &MediaStore,
    expiry: &Expiry,
) {
    let (kind, result) = match request {
        Request::Message {
            content,
            attachment_url,
            client_id,
        } => {
            // Asked before the store is read (see media/preview_pool.rs): a
            // preview still being made is announced when it is ready.
            let ready = attachment_url.as_deref().and_then(|url| {
                let name = url.strip_prefix("/uploads/")?;
                config.previews.subscribe(name)
            });
            let attachment = match attachment_url {
                None => None,
                Some(url) => match media.attach(&url, member.identity().as_str()).await {
                    Ok(info) => Some(Attachment {
                        url: info.url(),
                        name: info.display_name.as_str().to_owned(),
                        size: info.size,
                        content_type: info.content_type().to_owned(),
                        preview: info.preview.as_ref().map(preview_of),
                    }),
                    Err(why) => {
                        let message = match why {
                            AttachError::Unknown => {
                                "the attachment must be a URL returned by POST /upload on this server"
                            }
                            // An upload made with a token is its uploader's alone.
                            AttachError::NotYours => {
                                "the attachment was uploaded by someone else; upload it yourself"
                            }
                            AttachError::Expired => {
                                "this upload was not sent within its time and is being deleted; \
                                 upload it again"
                            }
                            AttachError::Unavailable => {
                                "the file storage is unreachable right now; send the message \
                                 again in a minute"
                            }
                        };
                        let code = match why {
                            AttachError::Unavailable => ErrorCode::Unavailable,
                            _ => ErrorCode::BadAttachment,
                        };
                        let r = Refusal::new(code, message);
                        member.send(r.frame(Some("message")));
                        return;
                    }
                },
            };
            let url = attachment
                .as_ref()
                .filter(|a| a.preview.is_none())
                .map(|a| a.url.clone());
            let posted = member.post(content, attachment, client_id.as_deref()).await;
            if let (Ok(Some(seq)), Some(url), Some(ready)) = (&posted, url, ready) {
                let later = member.later_preview(*seq);
                // Ends when the job does: every queued job ends.
                tokio::spawn(async move {
                    if let Ok(Some(preview)) = ready.await {
                        later.set(&url, preview_of(&preview));
                    }
                });
            }
            ("message", posted.map(drop))
        }
        Request::React {
            message_id,
            emoji,
            action,
            kind,
        } => (kind, member.react(&message_id, emoji, action).await),
        Request::Edit {
            message_id,
            content,
        } => ("edit", member.edit(&message_id, content).await),
        Request::Delete { message_id } => ("delete", member.delete(&message_id).await),
        Request::Reactions { message_id } => ("reactions", member.reactions(&message_id).await),
        Request::Typing => {
            member.typing();
            ("typing", Ok(()))
        }
        Request::Presence => ("presence", member.presence().await),
        Request::Ping => {
            member.send(Bytes::from_static(PONG_EVENT));
            ("ping", Ok(()))
        }
        Request::Auth { token } => {
            let renewed = config
                .auth
                .renew(&token, member.room(), member.user())
                .map(|admitted| {
                    let exp = admitted.expires.unwrap_or(0);
                    expiry.renew(exp);
                    member.set_moderator(admitted.moderator);
                    member.send(frames::text(&format!(
                        r#"{{"type":"auth_ok","exp":{exp}}}"#
                    )));
                })
                .map_err(|denied| {
                    let code = match denied.status.as_u16() {
                        403 => ErrorCode::Forbidden,
                        400 if denied.code == "unsupported" => ErrorCode::Unsupported,
                        _ => ErrorCode::Unauthorized,
                    };
                    Refusal::new(code, denied.message)
                });
            ("auth", renewed)
        }
    };
    if let Err(refusal) = result {
        member.send(refusal.frame(Some(kind)));
    }
}

/// The close of a connection flooding past its own rate.
const FLOOD: CloseReason = CloseReason {
    code: 1008,
    reason: "too many requests; slow down",
};

/// Counts a request's verdict towards the flood close: true once `limit`
/// requests in a row were past the connection's own rate. A request refused
/// for its identity's rate alone (the identity's other connections spent
/// the shared budget) is no flood of this connection's, and breaks the row
/// as a taken one does.
fn flooding(verdict: Verdict, strikes: &mut u32, limit: u32) -> bool {
    *strikes = match verdict {
        Verdict::OverOwn => *strikes + 1,
        Verdict::Taken | Verdict::OverIdentity => 0,
    };
    *strikes >= limit
}

#[cfg(test)]
mod tests {
    use futures_util::FutureExt;

    use super::*;

    #[test]
    fn close_codes_that_must_never_be_sent_are_told_apart() {
        for ok in [1000, 1001, 1003, 1007, 1011, 1013, 1014, 3000, 4001, 4999] {
            assert!(close_code_may_be_sent(ok), "{ok}");
        }
        for bad in [0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, 65535] {
            assert!(!close_code_may_be_sent(bad), "{bad}");
        }
    }

    #[test]
    fn pong_event_is_a_valid_frame() {
        assert_eq!(PONG_EVENT.len(), 2 + PONG_EVENT[1] as usize);
        assert_eq!(&PONG_EVENT[2..], br#"{"type":"pong"}"#);
    }

    #[tokio::test]
    async fn reads_pause_while_any_queue_is_behind_and_each_pause_is_counted_once() {
        let metrics = Arc::new(Metrics::default());
        let backlog = Backlog::new(Arc::clone(&metrics));
        let (outbox, store) = (backlog.hook(), backlog.hook());
        assert!(!backlog.is_behind());
        outbox(true);
        store(true);
        assert!(backlog.is_behind());
        assert_eq!(metrics.reads_paused.get(), 1, "one pause, two queues");
        let caught_up = backlog.caught_up();
        tokio::pin!(caught_up);
        outbox(false);
        assert!(backlog.is_behind(), "the store's queue still is");
        assert!(caught_up.as_mut().now_or_never().is_none());
        store(false);
        assert!(!backlog.is_behind());
        caught_up.await;
        store(true);
        assert_eq!(metrics.reads_paused.get(), 2);
    }
}
