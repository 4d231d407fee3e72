//! The shared state every handler takes from, and how it is built from a
//! [`Config`]: the hub (with its backbone), the media store, the pages, the
//! session settings, and the counters that let shutdown wait for running
//! work. The router and handlers take what they need from here; the accept
//! loop (`server.rs`) only builds it and hands it on.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::Notify;

use crate::config::Config;
use crate::error::ServeError;
use crate::http::address_slots::AddressSlots;
use crate::http::pages::IndexPage;
use crate::http::presign::Presigned;
use crate::http::rate_limit::PerIpLimiter;
use crate::http::static_files::StaticFiles;
use crate::http::upload::Uploads;
use crate::hub::{Hub, HubParts};
use crate::media::preview_pool::PreviewPool;
use crate::media::{LocalStore, MediaStore, MediaStoreKind, S3Store};
use crate::metrics::Metrics;
use crate::store::StoreKind;
use crate::ws::rate::IdentityRates;
use crate::ws::session::{Backlog, SessionConfig};

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

    pub async fn wait_idle(&self) {
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
    /// Presigned uploads handed out and not yet completed (S3 store).
    pub presigned: Presigned,
    pub session: Arc<SessionConfig>,
    /// Who is who (the same rules the sessions hold).
    pub auth: Arc<crate::auth::Auth>,
    /// Open WebSocket sessions, checked against `max_connections`.
    pub ws_open: AtomicUsize,
    /// Open WebSocket sessions per client address.
    pub ws_per_address: Arc<AddressSlots>,
    /// History pages being read per client address
    /// ([`crate::http::history::PAGES_PER_ADDRESS`]).
    pub pages_per_address: Arc<AddressSlots>,
    /// Open TCP connections per peer address (no limit with `trust_proxy`).
    pub http_per_address: Arc<AddressSlots>,
    /// WebSocket upgrades per client address per minute.
    pub joins: PerIpLimiter,
    /// WebSocket preflights (a plain `GET` of a `/ws/...` URL) per client
    /// address per minute, at the join rate: each asks the hub whether the
    /// name is free, with a backbone one Redis call.
    pub preflights: PerIpLimiter,
    /// Running HTTP connections and WebSocket sessions.
    pub tracker: Arc<Tracker>,
    shutting_down: AtomicBool,
    /// The periodic sweep of uploads nobody attached; stops with the state.
    _sweeper: AbortOnDrop,
    /// The periodic look at the bucket `/health` reports (S3 store).
    _probe: Option<AbortOnDrop>,
}

/// Aborts a background task when dropped.
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// How often uploads nobody attached are looked for.
const SWEEP_EVERY: Duration = Duration::from_secs(600);

impl AppState {
    /// Builds everything the server shares from `config`: the uploads
    /// directory (created and checked), the history store (opened, its
    /// schema checked), the hub and its backbone, the pages.
    pub async fn build(config: Config) -> Result<Arc<Self>, ServeError> {
        let config = config.within_bounds();
        if let Some(problem) = config.media_problem() {
            return Err(ServeError::Media(problem));
        }
        if config.redis_url.is_some()
            && !config.store.is_shared()
            && config.store != StoreKind::Memory
        {
            return Err(ServeError::Store(
                "with --redis-url every instance must share the history store: pass \
                 --store postgres://... (or --store memory to keep history in Redis only)"
                    .into(),
            ));
        }
        prepare_uploads_dir(&config)?;
        let metrics = Arc::new(Metrics::default());
        let local = {
            let (dir, quota, ttl) = (
                config.uploads_dir.clone(),
                config.uploads_max_bytes,
                config.unattached_upload_ttl,
            );
            // With a bucket the directory only stages: no quota to count.
            let quota = match config.media_store {
                MediaStoreKind::Local => quota,
                MediaStoreKind::S3(_) => None,
            };
            // Counting what the directory holds is one stat per file.
            tokio::task::spawn_blocking(move || LocalStore::with_limits(dir, quota, ttl))
                .await
                .map_err(|e| ServeError::UploadsDir {
                    path: config.uploads_dir.clone(),
                    source: std::io::Error::other(e),
                })?
        };
        let media = match &config.media_store {
            MediaStoreKind::Local => MediaStore::Local(local),
            MediaStoreKind::S3(target) => {
                let bucket = S3Store::new(
                    target.clone(),
                    config.unattached_upload_ttl,
                    config.presign_ttl,
                    config.upload_timeout,
                )
                .map_err(ServeError::Media)?;
                MediaStore::S3 {
                    bucket: Arc::new(bucket),
                    staging: local,
                }
            }
        };
        {
            // An upload older than its timeout is over: what it left is litter.
            let local = media.local().clone();
            let age = config.upload_timeout + Duration::from_secs(60);
            tokio::task::spawn_blocking(move || {
                let removed = local.sweep_leftovers(age);
                if removed > 0 {
                    tracing::info!(removed, "removed files left by interrupted uploads");
                }
            });
        }
        let sweeper = {
            let media = media.clone();
            tokio::spawn(async move {
                let mut every = tokio::time::interval(SWEEP_EVERY);
                loop {
                    every.tick().await;
                    let removed = media.sweep_unattached().await;
                    if removed > 0 {
                        tracing::info!(removed, "deleted uploads no message attached in time");
                    }
                }
            })
            .abort_handle()
        };
        let probe = media.bucket().map(|bucket| {
            let bucket = Arc::clone(bucket);
            let task = tokio::spawn(async move {
                let mut every = tokio::time::interval(crate::media::PROBE_EVERY);
                loop {
                    every.tick().await;
                    // Recorded (and logged) by the probe and its client,
                    // which `/health` reads: nothing else to do with it.
                    let _ = bucket.probe().await;
                }
            });
            AbortOnDrop(task.abort_handle())
        });
        // Without the decoder compiled in there is nothing for workers to do.
        let preview_workers = match cfg!(feature = "previews") {
            true => config.preview_workers,
            false => 0,
        };
        let previews =
            PreviewPool::start(preview_workers, config.preview_queue, Arc::clone(&metrics));
        let uploads = Uploads::new(&config, media.clone(), Arc::clone(&metrics))
            .with_previews(previews.clone());
        let presigned = Presigned::new(&config, Arc::clone(&metrics));
        let store = crate::store::open(&config.store_settings(), Arc::clone(&metrics))
            .await
            .map_err(|e| ServeError::Store(e.0))?;
        let backlog = Backlog::new(Arc::clone(&metrics));
        let store_behind = {
            let (hook, metrics) = (backlog.hook(), Arc::clone(&metrics));
            Arc::new(move |behind: bool| {
                if behind {
                    metrics.store_behind.inc();
                }
                hook(behind);
            })
        };
        let parts = HubParts {
            config: config.hub_config(),
            metrics,
            store,
        };
        let hub = match &config.redis_url {
            None => Hub::from_parts(parts),
            Some(url) => start_redis(&config, parts, url.as_str())?,
        };
        let auth = Arc::new(config.auth.clone());
        // A history store behind throttles reads as a connection's queue
        // does (`hub/store_queue.rs`), and is counted on its own.
        if let Some(store) = hub.store() {
            store.report_backlog(store_behind);
        }
        Ok(Arc::new(AppState {
            uploads,
            presigned,
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
                identity_rates: IdentityRates::new(
                    config.rate,
                    config.rate_burst,
                    config.max_connections,
                ),
                ping_interval: config.ping_interval,
                idle_timeout: config.idle_timeout,
                auth: Arc::clone(&auth),
                backlog,
                previews,
            }),
            auth,
            ws_open: AtomicUsize::new(0),
            ws_per_address: AddressSlots::new(config.max_connections_per_address),
            pages_per_address: AddressSlots::new(crate::http::history::PAGES_PER_ADDRESS),
            // Behind a proxy every connection has the proxy's address: a
            // per-peer cap would be a second global one.
            http_per_address: AddressSlots::new(match config.trust_proxy {
                true => 0,
                false => config.max_http_per_address,
            }),
            joins: PerIpLimiter::new(config.joins_per_minute),
            preflights: PerIpLimiter::new(config.joins_per_minute),
            tracker: Arc::new(Tracker::default()),
            shutting_down: AtomicBool::new(false),
            _sweeper: AbortOnDrop(sweeper),
            _probe: probe,
            config,
        }))
    }

    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::Acquire)
    }

    /// From now on new sessions are refused and joins are closed at once.
    pub fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::Release);
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

/// A hub whose rooms are shared through the Redis at `url`: the composition
/// of the hub and its Redis backbone.
#[cfg(feature = "redis")]
fn start_redis(config: &Config, parts: HubParts, url: &str) -> Result<Hub, ServeError> {
    let settings = crate::redis::Settings {
        target: crate::redis::Target::parse(url).map_err(ServeError::Redis)?,
        prefix: config.redis_prefix.clone(),
        presence_ttl: config.presence_ttl.max(Duration::from_millis(300)),
        online_list_cap: config.hub_config().online_list_cap,
        empty_room_ttl: config.empty_room_ttl,
        queue: config.redis_queue.max(1),
    };
    let hub_config = parts.config.clone();
    Hub::with_backbone(parts, |inbound| {
        Ok::<_, ServeError>(crate::redis::RedisBackbone::start(
            settings,
            &hub_config,
            inbound,
        ))
    })
}

#[cfg(not(feature = "redis"))]
fn start_redis(_: &Config, _: HubParts, _: &str) -> Result<Hub, ServeError> {
    Err(ServeError::Redis(
        "this build has no Redis support; rebuild with `--features redis`".into(),
    ))
}
