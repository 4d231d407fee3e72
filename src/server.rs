//! The accept loop and graceful drain.
//!
//! Accepting: TCP_NODELAY on every socket, an exponential back-off when
//! `accept` fails (say, out of file descriptors), and a cap on open HTTP
//! connections beyond which a new one gets a canned `503` and is closed.
//! Shutdown: stop accepting, let HTTP connections finish their request,
//! close every WebSocket with 1001, and wait up to the grace period for all
//! of it.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, watch};

use crate::config::Config;
use crate::error::ServeError;
use crate::http::PeerAddr;
use crate::http::pages::IndexPage;
use crate::http::static_files::StaticFiles;
use crate::http::upload::Uploads;
use crate::hub::{CloseReason, Hub};
use crate::media::MediaStore;
use crate::metrics::Metrics;
use crate::router;
use crate::ws::session::SessionConfig;

/// HTTP connections allowed beyond `max_connections` (page loads, uploads,
/// health checks, and room to answer WebSocket upgrades with a 503).
const HTTP_HEADROOM: usize = 256;

/// Counts running connections and sessions so shutdown can wait for them.
#[derive(Default)]
pub(crate) struct Tracker {
    running: AtomicUsize,
    idle: Notify,
}

/// One running connection or session; dropping it marks it done.
pub(crate) struct Token(Arc<Tracker>);

impl Tracker {
    pub fn token(self: &Arc<Self>) -> Token {
        self.running.fetch_add(1, Ordering::AcqRel);
        Token(Arc::clone(self))
    }

    pub fn running(&self) -> usize {
        self.running.load(Ordering::Acquire)
    }

    async fn wait_idle(&self) {
        loop {
            let notified = self.idle.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.running() == 0 {
                return;
            }
            notified.await;
        }
    }
}

impl Drop for Token {
    fn drop(&mut self) {
        if self.0.running.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

/// What every handler can reach.
pub(crate) struct AppState {
    pub config: Config,
    pub hub: Hub,
    pub index: IndexPage,
    pub static_files: StaticFiles,
    pub media: MediaStore,
    pub uploads: Uploads,
    pub session: Arc<SessionConfig>,
    /// Open WebSocket sessions, checked against `max_connections`.
    pub ws_open: AtomicUsize,
    /// Running HTTP connections and WebSocket sessions.
    pub tracker: Arc<Tracker>,
    shutting_down: AtomicBool,
}

impl AppState {
    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::Acquire)
    }
}

/// Creates the uploads directory if needed and proves it is writable.
fn prepare_uploads_dir(config: &Config) -> Result<(), ServeError> {
    let dir = &config.uploads_dir;
    let fail = |source| ServeError::UploadsDir {
        path: dir.clone(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(fail)?;
    let probe = dir.join(format!(".probe-{}", std::process::id()));
    std::fs::write(&probe, b"").map_err(fail)?;
    std::fs::remove_file(&probe).map_err(fail)?;
    Ok(())
}

/// Serves roomcast on `listener` until `shutdown` resolves, then drains.
pub async fn serve(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    let config = config.within_bounds();
    prepare_uploads_dir(&config)?;
    let addr = listener.local_addr().map_err(ServeError::Listener)?;
    let metrics = Arc::new(Metrics::default());
    let media = MediaStore::new(config.uploads_dir.clone());
    {
        // An upload older than its timeout is over: what it left is litter.
        let media = media.clone();
        let age = config.upload_timeout + Duration::from_secs(60);
        tokio::task::spawn_blocking(move || {
            let removed = media.sweep_leftovers(age);
            if removed > 0 {
                tracing::info!(removed, "removed files left by interrupted uploads");
            }
        });
    }
    let uploads = Uploads::new(&config, media.clone(), Arc::clone(&metrics));
    let hub = match &config.redis_url {
        None => Hub::with_metrics(config.hub_config(), metrics),
        #[cfg(feature = "redis")]
        Some(url) => Hub::with_redis(
            config.hub_config(),
            metrics,
            url,
            &config.redis_prefix,
            config.presence_ttl,
        )
        .map_err(ServeError::Redis)?,
        #[cfg(not(feature = "redis"))]
        Some(_) => {
            return Err(ServeError::Redis(
                "this build has no Redis support; rebuild with `--features redis`".into(),
            ));
        }
    };
    let state = Arc::new(AppState {
        uploads,
        hub,
        index: IndexPage::new(&config),
        static_files: config
            .static_dir
            .clone()
            .map_or(StaticFiles::Embedded, StaticFiles::Dir),
        media,
        session: Arc::new(SessionConfig {
            max_message_chars: config.max_message_chars,
            max_frame_bytes: config.max_frame_bytes,
            rate: config.rate,
            rate_burst: config.rate_burst,
            ping_interval: config.ping_interval,
            idle_timeout: config.idle_timeout,
        }),
        ws_open: AtomicUsize::new(0),
        tracker: Arc::new(Tracker::default()),
        shutting_down: AtomicBool::new(false),
        config,
    });
    tracing::info!(%addr, "roomcast listening");

    let sweeper = {
        let hub = state.hub.clone();
        let every = state
            .config
            .empty_room_ttl
            .clamp(Duration::from_millis(100), Duration::from_secs(10));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                hub.sweep();
            }
        })
    };

    let (stop_tx, stop_rx) = watch::channel(());
    let max_http = state.config.max_connections + HTTP_HEADROOM;
    let mut backoff = Duration::from_millis(5);
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
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
            refuse_busy(stream);
            continue;
        }
        tokio::spawn(serve_connection(
            stream,
            PeerAddr(peer),
            Arc::clone(&state),
            stop_rx.clone(),
            state.tracker.token(),
        ));
    }

    tracing::info!("shutting down: closing connections");
    state.shutting_down.store(true, Ordering::Release);
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
    sweeper.abort();
    state.hub.stop_backbone().await;
    Ok(())
}

async fn serve_connection(
    stream: TcpStream,
    peer: PeerAddr,
    state: Arc<AppState>,
    mut stop: watch::Receiver<()>,
    _token: crate::server::Token,
) {
    let grace = state.config.shutdown_grace;
    let service = service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
        req.extensions_mut().insert(peer);
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
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(grace, conn).await;
        }
    }
}

/// Answers a connection over the cap with a fixed `503`, then closes it.
/// The response is written without waiting, so no task or buffer is spent on
/// a connection the server cannot take: a fresh socket's send buffer holds
/// these ~250 bytes at once, and if it somehow does not, the client just sees
/// the connection close.
fn refuse_busy(stream: TcpStream) {
    const BODY: &str = r#"{"error":"too_many_connections","message":"the server is at its connection limit; try again later"}"#;
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\nretry-after: 5\r\n\r\n{BODY}",
        BODY.len()
    );
    // Out of the runtime's reactor: a socket tokio has only just registered
    // has no readiness yet, so its `try_write` would refuse to try. The std
    // socket stays non-blocking.
    if let Ok(mut stream) = stream.into_std() {
        let _ = std::io::Write::write(&mut stream, response.as_bytes());
    }
}
