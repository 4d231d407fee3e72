//! The accept loop and graceful drain.
//!
//! Accepting: TCP_NODELAY on every socket, an exponential back-off when
//! `accept` fails (say, out of file descriptors), a cap on open HTTP
//! connections beyond which a new one gets a canned `503` and is closed,
//! and a cap per peer address (a canned `429`), so one address cannot take
//! every slot. A connection's per-address slot travels in its requests'
//! extensions; a WebSocket session keeps it until the session ends.
//! Each accepted socket is handed to one of the worker threads
//! ([`crate::runtime`]), where it lives until it closes; the accept loop
//! itself runs on the caller's runtime.
//! Shutdown: stop accepting, let HTTP connections finish their request,
//! close every WebSocket with 1001, wait up to the grace period for all
//! of it, then stop the workers.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::app::{AppState, Token};
use crate::config::Config;
use crate::error::ServeError;
use crate::http::{ConnectionSlot, PeerAddr};
use crate::hub::CloseReason;
use crate::router;
use crate::runtime::Workers;

/// HTTP connections allowed beyond `max_connections` (page loads, uploads,
/// health checks, and room to answer WebSocket upgrades with a 503).
const HTTP_HEADROOM: usize = 256;

/// Serves roomcast on `listener` until `shutdown` resolves, then drains.
///
/// Connections run on worker threads that `serve` starts itself, one per
/// CPU the process may use, each a current-thread tokio runtime; they stop
/// before `serve` returns (or when its future is dropped). The caller's
/// runtime runs the accept loop, the empty-room sweeper and, with Redis,
/// the backbone's connection, so a current-thread runtime is enough there.
pub async fn serve(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    serve_when_ready(listener, config, shutdown, |_| {}).await
}

/// [`serve`], calling `ready` with the listener's address once the server
/// can serve (its uploads directory and history store checked and open, its
/// backbone started), just before it accepts the first connection. A
/// start-up failure returns an error before `ready` is called.
pub async fn serve_when_ready(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()>,
    ready: impl FnOnce(std::net::SocketAddr),
) -> Result<(), ServeError> {
    let addr = listener.local_addr().map_err(ServeError::Listener)?;
    let state = AppState::build(config).await?;
    tracing::info!(%addr, "roomcast listening");
    ready(addr);

    let sweeper = {
        let hub = state.hub.clone();
        let every = state
            .config
            .empty_room_ttl
            .clamp(Duration::from_millis(100), Duration::from_secs(10));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tokio::select! {
                    _ = tick.tick() => {
                        hub.sweep();
                    }
                    () = hub.over_budget() => {}
                }
                hub.trim();
            }
        })
    };

    let workers = Workers::for_machine(state.config.workers);
    let (stop_tx, stop_rx) = watch::channel(());
    let max_http = state.config.max_connections + HTTP_HEADROOM;
    let mut backoff = Duration::from_millis(5);
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            // Accepted even while the writers (or the history store) are
            // behind, so health checks and pages are answered; a WebSocket
            // join is what waits then (`ws/upgrade.rs`).
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    tracing::warn!("accept failed: {e}; retrying in {backoff:?}");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                    continue;
                }
            },
        };
        backoff = Duration::from_millis(5);
        let _ = stream.set_nodelay(true);
        if state.tracker.running() >= max_http {
            refuse(stream, &BUSY);
            continue;
        }
        // One address must not take every slot: past its own cap it is
        // refused like the global cap, before a task is spent on it.
        let Some(slot) = state.http_per_address.acquire(peer.ip()) else {
            refuse(stream, &ADDRESS_FULL);
            continue;
        };
        // The socket moves to a worker's reactor: out of this one first.
        let Ok(stream) = stream.into_std() else {
            continue;
        };
        let connection = {
            let (state, stop) = (Arc::clone(&state), stop_rx.clone());
            let token = state.tracker.token();
            async move {
                if let Ok(stream) = TcpStream::from_std(stream) {
                    let ids = (PeerAddr(peer), ConnectionSlot(Arc::new(slot)));
                    serve_connection(stream, ids, state, stop, token).await;
                }
            }
        };
        if workers.spawn(connection).is_err() {
            // Dropping the connection closes its socket.
            tracing::warn!("every worker's hand-off queue is full; connection closed");
        }
    }

    tracing::info!("shutting down: closing connections");
    state.begin_shutdown();
    drop(listener);
    let _ = stop_tx.send(());
    state.hub.close_all(CloseReason::SHUTDOWN);
    if tokio::time::timeout(state.config.shutdown_grace, state.tracker.wait_idle())
        .await
        .is_err()
    {
        tracing::warn!(
            running = state.tracker.running(),
            "grace period over; leaving the rest"
        );
    }
    workers.stop().await;
    sweeper.abort();
    state.hub.stop_backbone().await;
    state.hub.settle();
    if let Some(store) = state.hub.store() {
        // Everything accepted is committed, then the file or connection is
        // closed (a new server may open the same data directory at once).
        if tokio::time::timeout(state.config.shutdown_grace, store.stop())
            .await
            .is_err()
        {
            tracing::warn!("the history store did not finish committing in time");
        }
    }
    Ok(())
}

async fn serve_connection(
    stream: TcpStream,
    (peer, slot): (PeerAddr, ConnectionSlot),
    state: Arc<AppState>,
    mut stop: watch::Receiver<()>,
    _token: Token,
) {
    let grace = state.config.shutdown_grace;
    // Whether a request head has come on this connection. At shutdown one
    // with none (new, or still sending its first head: a slowloris) is
    // closed at once. Any other is left to hyper's graceful shutdown, which
    // ends it as soon as it owes nothing: at once if it is idle between
    // requests (or reading the next head), else once the response being
    // answered has gone out whole, within the grace. Counting a request
    // only until its handler returns is not enough: a file's body streams
    // after that, and hyper flushes its last buffered bytes after the body
    // has ended; hyper alone knows when both are done.
    let requested = Arc::new(AtomicBool::new(false));
    let seen = Arc::clone(&requested);
    let service = service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
        // hyper calls this as it parses the head, in this connection's task,
        // so the `select!` below never sees a request the flag has missed.
        requested.store(true, Ordering::Relaxed);
        req.extensions_mut().insert(peer);
        req.extensions_mut().insert(slot.clone());
        let state = Arc::clone(&state);
        async move { Ok::<_, Infallible>(router::route(req, state).await) }
    });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(30))
        .max_buf_size(64 << 10)
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    tokio::pin!(conn);
    tokio::select! {
        res = conn.as_mut() => {
            if let Err(e) = res {
                tracing::debug!("connection ended with an error: {e}");
            }
        }
        _ = stop.changed() => {
            if !seen.load(Ordering::Relaxed) {
                return; // nothing to finish: dropping the connection closes it
            }
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(grace, conn).await;
        }
    }
}

/// A canned answer for a connection the server will not serve.
struct Canned {
    status: &'static str,
    body: &'static str,
}

/// The server holds `max_connections + 256` connections already.
const BUSY: Canned = Canned {
    status: "503 Service Unavailable",
    body: r#"{"error":"too_many_connections","message":"the server is at its connection limit; try again later"}"#,
};

/// The peer's address holds `max_http_per_address` connections already.
const ADDRESS_FULL: Canned = Canned {
    status: "429 Too Many Requests",
    body: r#"{"error":"too_many_connections","message":"your address has too many connections open to this server; close some and try again"}"#,
};

/// Answers a connection the server will not serve with a fixed response,
/// then closes it. The response is written without waiting, so no task or
/// buffer is spent on it: a fresh socket's send buffer holds these ~250
/// bytes at once, and if it somehow does not, the client just sees the
/// connection close.
fn refuse(stream: TcpStream, canned: &Canned) {
    let Canned { status, body } = canned;
    let response = format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\nretry-after: 5\r\n\r\n{body}",
        body.len()
    );
    // Out of the runtime's reactor: a socket tokio has only just registered
    // has no readiness yet, so its `try_write` would refuse to try. The std
    // socket stays non-blocking.
    if let Ok(mut stream) = stream.into_std() {
        let _ = std::io::Write::write(&mut stream, response.as_bytes());
    }
}
