//! Server settings with their defaults and chainable setters. The library
//! never reads the environment: `main.rs` turns flags and env into a Config.

use std::path::PathBuf;
use std::time::Duration;

use crate::auth::Auth;
use crate::hub::{HubConfig, Limits};
use crate::media::MediaStoreKind;
use crate::store::{Fsync, Retention, StoreKind, StoreSettings};

/// Everything [`crate::serve`] can be told.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where uploads are stored (created at start if missing).
    pub uploads_dir: PathBuf,
    /// Where media is kept: the uploads directory (the default) or an
    /// S3-compatible bucket, whose target carries its credentials (never
    /// shown by `Debug`).
    pub media_store: MediaStoreKind,
    /// How long a presigned URL (an upload's PUT, a download's GET) works.
    pub presign_ttl: Duration,
    /// Presigned uploads (S3 store) not yet completed, per client (its
    /// token's user, else its address) and in all; past either `429`.
    pub max_pending_uploads: (usize, usize),
    /// Serve `/static` from this directory instead of the embedded copy.
    pub static_dir: Option<PathBuf>,
    /// Read `index.html` from this directory instead of the embedded copy.
    pub templates_dir: Option<PathBuf>,
    /// Messages kept per room.
    pub history: usize,
    /// Messages in `welcome` when the client does not resume.
    pub welcome_history: usize,
    /// Most bytes of history (JSON) in one `welcome`; see
    /// [`HubConfig::welcome_history_bytes`].
    pub welcome_history_bytes: usize,
    /// Users one emoji on one message may list; see
    /// [`HubConfig::max_users_per_reaction`].
    pub max_users_per_reaction: usize,
    /// Longest message, in characters.
    pub max_message_chars: usize,
    /// Sustained requests per second per connection, and per identity
    /// across all its connections (so reconnecting does not reset it).
    pub rate: u32,
    /// Requests a connection (and an identity) may send at once before the
    /// rate applies.
    pub rate_burst: u32,
    /// Open WebSocket connections at once; beyond it upgrades get `503`.
    pub max_connections: usize,
    /// Open WebSocket sessions one client address may hold at once; beyond
    /// it upgrades get `429 too_many_connections` (0: no limit). The
    /// address is the peer's, or with `trust_proxy` the forwarded one; IPv6
    /// counts by /64.
    pub max_connections_per_address: usize,
    /// Open TCP connections one peer address may hold at once, WebSocket
    /// sessions included; beyond it a new connection gets a canned `429`
    /// and is closed (0: no limit). Ignored with `trust_proxy`, where every
    /// connection comes from the proxy. Keep it above
    /// `max_connections_per_address`, or that one is this one.
    pub max_http_per_address: usize,
    /// WebSocket upgrades one client address may start per minute, all at
    /// once if saved up; beyond it `429 rate_limited` with `Retry-After`
    /// (0: no limit). Each join costs the server a welcome.
    pub joins_per_minute: u32,
    /// Largest upload, in bytes.
    pub max_upload_bytes: u64,
    /// Uploads per minute per client IP (0: no limit).
    pub uploads_per_minute: u32,
    /// Bytes one client address may upload per hour, all at once if saved
    /// up (0: no limit); beyond it `429 rate_limited` with `Retry-After`.
    /// An upload is charged its declared length up front (the largest
    /// upload when it declares none) and given back what it did not send.
    pub upload_bytes_per_hour: u64,
    /// Most bytes the uploads directory may hold (files and sidecars, as
    /// this process counts them); `None`: no limit. Past it uploads get `507`.
    pub uploads_max_bytes: Option<u64>,
    /// An upload no message has attached within this long is deleted.
    pub unattached_upload_ttl: Duration,
    /// Threads that run connections (see `runtime.rs`); `0`: one fewer
    /// than the CPUs this process may use, and at least one. At most 1024.
    pub workers: usize,
    /// Threads making image previews (with the `previews` feature); `0`:
    /// no previews. At most 64.
    pub preview_workers: usize,
    /// Images waiting for a preview worker; past it a new image is shown
    /// without a preview (its upload never waits). At most 65 536.
    pub preview_queue: usize,
    /// Behind one reverse proxy (Railway's): the client IP for per-address
    /// limits is the last `X-Forwarded-For` entry, the one that proxy added.
    /// Off by default: without a proxy a client could name any address.
    pub trust_proxy: bool,
    /// An upload whose body sends nothing for this long is refused (`408`).
    pub upload_idle_timeout: Duration,
    /// An upload whose body takes longer than this in all is refused (`408`).
    pub upload_timeout: Duration,
    /// Largest WebSocket frame or message a client may send, in bytes.
    pub max_frame_bytes: usize,
    /// Frames a connection's outbound queue holds before it is closed (1013).
    pub outbound_queue: usize,
    /// How often the server pings each WebSocket.
    pub ping_interval: Duration,
    /// A WebSocket silent for this long is closed.
    pub idle_timeout: Duration,
    /// How long shutdown waits for running requests and uploads.
    pub shutdown_grace: Duration,
    /// How long an empty room keeps its history.
    pub empty_room_ttl: Duration,
    /// Share rooms with other instances through this Redis
    /// (`redis://[user:password@]host[:port][/db]`; needs feature `redis`).
    /// Never shown by `Debug`: it may hold a password.
    pub redis_url: Option<RedisUrl>,
    /// Prefix of every Redis key and channel roomcast uses.
    pub redis_prefix: String,
    /// With Redis: an instance silent this long is taken for dead and its
    /// members leave (it refreshes its entry every third of this).
    pub presence_ttl: Duration,
    /// With Redis: requests one instance may have waiting for Redis (4096);
    /// a quarter as many more may be sent and unanswered. Beyond it a
    /// request is refused at once with `unavailable`.
    pub redis_queue: usize,
    /// Where history is kept: an SQLite file under `data_dir` (the
    /// default), memory only, or PostgreSQL.
    pub store: StoreKind,
    /// Where the SQLite store keeps its file (created at start).
    pub data_dir: PathBuf,
    /// When a commit is flushed to disk.
    pub fsync: Fsync,
    /// Messages older than this many days are deleted (`None`: kept).
    pub retention_days: Option<u32>,
    /// Each room keeps at most its newest this many messages (`None`: all).
    pub retention_messages: Option<u64>,
    /// Largest the SQLite file may grow, in MiB (`None`: no limit).
    pub store_max_mb: Option<u64>,
    /// Operations the store's writer queue holds; beyond it changes are
    /// refused with `unavailable` (the writer is that far behind).
    pub store_queue: usize,
    /// Who is who: open mode (claims) or signed tokens; allowed origins;
    /// the `/metrics` token.
    pub auth: Auth,
    /// How long a name stays held by its identity after its last
    /// connection closes, so a reconnect finds it (on one instance; with
    /// Redis, 20 s).
    pub name_hold_grace: Duration,
    /// What all rooms' recent messages may weigh in memory together, in
    /// bytes; past it the heaviest rings keep fewer (see [`crate::Hub::trim`]).
    pub history_memory_bytes: usize,
    /// Most bytes a message's reactions may take as JSON; see
    /// [`HubConfig::max_reaction_bytes`].
    pub max_reaction_bytes: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            uploads_dir: PathBuf::from("uploads"),
            media_store: MediaStoreKind::Local,
            presign_ttl: Duration::from_secs(300),
            max_pending_uploads: (8, 1024),
            static_dir: None,
            templates_dir: None,
            history: 500,
            welcome_history: 50,
            welcome_history_bytes: 1 << 20,
            max_users_per_reaction: 500,
            max_message_chars: 4000,
            rate: 10,
            rate_burst: 20,
            max_connections: 10_000,
            // An office behind one NAT is many people on one address.
            max_connections_per_address: 256,
            // The WebSockets above plus 64 page loads, uploads and checks.
            max_http_per_address: 320,
            // A browser reconnecting with back-off, in several tabs, stays
            // far below it.
            joins_per_minute: 60,
            max_upload_bytes: 10 << 20,
            uploads_per_minute: 30,
            upload_bytes_per_hour: 1 << 30,
            uploads_max_bytes: Some(5 << 30),
            unattached_upload_ttl: Duration::from_secs(24 * 3600),
            workers: 0,
            preview_workers: 1,
            preview_queue: 64,
            trust_proxy: false,
            upload_idle_timeout: Duration::from_secs(30),
            upload_timeout: Duration::from_secs(300),
            max_frame_bytes: 64 << 10,
            outbound_queue: 1024,
            ping_interval: Duration::from_secs(25),
            idle_timeout: Duration::from_secs(60),
            shutdown_grace: Duration::from_secs(10),
            empty_room_ttl: Duration::from_secs(300),
            redis_url: None,
            redis_prefix: "roomcast".to_owned(),
            presence_ttl: Duration::from_secs(30),
            redis_queue: 4096,
            // Durable by default when SQLite is compiled in.
            store: if cfg!(feature = "sqlite") {
                StoreKind::Sqlite
            } else {
                StoreKind::Memory
            },
            data_dir: PathBuf::from("data"),
            fsync: Fsync::Batch,
            retention_days: None,
            retention_messages: None,
            store_max_mb: None,
            store_queue: 16_384,
            auth: Auth::default(),
            name_hold_grace: crate::hub::NAME_HOLD_GRACE,
            history_memory_bytes: 256 << 20,
            max_reaction_bytes: 16 << 10,
        }
    }
}

impl Config {
    /// Sets [`Config::redis_url`].
    #[must_use]
    pub fn redis_url(mut self, url: Option<String>) -> Self {
        self.redis_url = url.map(RedisUrl);
        self
    }
}

/// A Redis URL as given. It may hold a password, so `Debug` shows only
/// that there is one.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisUrl(String);

impl RedisUrl {
    /// The URL itself.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<String> for RedisUrl {
    fn from(url: String) -> Self {
        Self(url)
    }
}

impl std::fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RedisUrl(..)")
    }
}

macro_rules! setters {
    ($($(#[$doc:meta])* $field:ident: $ty:ty),* $(,)?) => {
        impl Config {
            $(
                $(#[$doc])*
                #[must_use]
                pub fn $field(mut self, value: impl Into<$ty>) -> Self {
                    self.$field = value.into();
                    self
                }
            )*
        }
    };
}

setters! {
    /// Sets [`Config::max_reaction_bytes`].
    max_reaction_bytes: usize,
    /// Sets [`Config::history_memory_bytes`].
    history_memory_bytes: usize,
    /// Sets [`Config::name_hold_grace`].
    name_hold_grace: Duration,
    /// Sets [`Config::auth`].
    auth: Auth,
    /// Sets [`Config::store`].
    store: StoreKind,
    /// Sets [`Config::data_dir`].
    data_dir: PathBuf,
    /// Sets [`Config::fsync`].
    fsync: Fsync,
    /// Sets [`Config::retention_days`].
    retention_days: Option<u32>,
    /// Sets [`Config::retention_messages`].
    retention_messages: Option<u64>,
    /// Sets [`Config::store_max_mb`].
    store_max_mb: Option<u64>,
    /// Sets [`Config::store_queue`].
    store_queue: usize,
    /// Sets [`Config::uploads_dir`].
    uploads_dir: PathBuf,
    /// Sets [`Config::media_store`].
    media_store: MediaStoreKind,
    /// Sets [`Config::presign_ttl`].
    presign_ttl: Duration,
    /// Sets [`Config::max_pending_uploads`].
    max_pending_uploads: (usize, usize),
    /// Sets [`Config::static_dir`].
    static_dir: Option<PathBuf>,
    /// Sets [`Config::templates_dir`].
    templates_dir: Option<PathBuf>,
    /// Sets [`Config::history`].
    history: usize,
    /// Sets [`Config::welcome_history`].
    welcome_history: usize,
    /// Sets [`Config::welcome_history_bytes`].
    welcome_history_bytes: usize,
    /// Sets [`Config::max_users_per_reaction`].
    max_users_per_reaction: usize,
    /// Sets [`Config::max_message_chars`].
    max_message_chars: usize,
    /// Sets [`Config::rate`] (the burst stays as set; see [`Config::rate_burst`]).
    rate: u32,
    /// Sets [`Config::rate_burst`].
    rate_burst: u32,
    /// Sets [`Config::max_connections`].
    max_connections: usize,
    /// Sets [`Config::max_connections_per_address`].
    max_connections_per_address: usize,
    /// Sets [`Config::max_http_per_address`].
    max_http_per_address: usize,
    /// Sets [`Config::joins_per_minute`].
    joins_per_minute: u32,
    /// Sets [`Config::max_upload_bytes`].
    max_upload_bytes: u64,
    /// Sets [`Config::uploads_per_minute`].
    uploads_per_minute: u32,
    /// Sets [`Config::upload_bytes_per_hour`].
    upload_bytes_per_hour: u64,
    /// Sets [`Config::uploads_max_bytes`].
    uploads_max_bytes: Option<u64>,
    /// Sets [`Config::unattached_upload_ttl`].
    unattached_upload_ttl: Duration,
    /// Sets [`Config::workers`].
    workers: usize,
    /// Sets [`Config::preview_workers`].
    preview_workers: usize,
    /// Sets [`Config::preview_queue`].
    preview_queue: usize,
    /// Sets [`Config::trust_proxy`].
    trust_proxy: bool,
    /// Sets [`Config::upload_idle_timeout`].
    upload_idle_timeout: Duration,
    /// Sets [`Config::upload_timeout`].
    upload_timeout: Duration,
    /// Sets [`Config::max_frame_bytes`].
    max_frame_bytes: usize,
    /// Sets [`Config::outbound_queue`].
    outbound_queue: usize,
    /// Sets [`Config::ping_interval`].
    ping_interval: Duration,
    /// Sets [`Config::idle_timeout`].
    idle_timeout: Duration,
    /// Sets [`Config::shutdown_grace`].
    shutdown_grace: Duration,
    /// Sets [`Config::empty_room_ttl`].
    empty_room_ttl: Duration,
    /// Sets [`Config::redis_prefix`].
    redis_prefix: String,
    /// Sets [`Config::presence_ttl`].
    presence_ttl: Duration,
    /// Sets [`Config::redis_queue`].
    redis_queue: usize,
}

/// The longest any duration setting is taken to be: a deadline further off
/// than this would be no deadline at all, and `Instant + Duration` panics
/// when it overflows.
pub const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);

impl Config {
    /// The same settings with every duration within `1 ms..=MAX_DURATION`
    /// (a zero ping interval or timeout would spin, an enormous one
    /// overflow). [`crate::serve`] applies this to the config it is given.
    #[must_use]
    pub fn within_bounds(mut self) -> Self {
        let floor = Duration::from_millis(1);
        for d in [
            &mut self.upload_idle_timeout,
            &mut self.upload_timeout,
            &mut self.unattached_upload_ttl,
            &mut self.ping_interval,
            &mut self.idle_timeout,
            &mut self.shutdown_grace,
            &mut self.empty_room_ttl,
            &mut self.presence_ttl,
        ] {
            *d = (*d).clamp(floor, MAX_DURATION);
        }
        // Each worker may peak near 460 MB (a 40 Mpx progressive JPEG: its
        // coefficients beside the decoded image, `preview::MAX_PIXELS`); a
        // queued job is a name, its bytes are read only when it runs.
        self.workers = self.workers.min(1024);
        self.preview_workers = self.preview_workers.min(64);
        self.preview_queue = self.preview_queue.min(1 << 16);
        // A presigned URL lives whole seconds, at most a week (SigV4's bound).
        self.presign_ttl = Duration::from_secs(self.presign_ttl.as_secs().clamp(1, 7 * 24 * 3600));
        self
    }

    /// Why these media settings cannot work together, if they cannot. With
    /// the S3 store an upload's unattached marker is written when its PUT
    /// is presigned; `complete` may start as late as the URL's life plus
    /// the upload timeout after that (when the server forgets the upload)
    /// and then take up to [`S3Store::longest_complete`] until its sidecar
    /// is written. The time to live unattached must outlast all of it:
    /// otherwise the sweep could delete the upload's data and marker while
    /// it is being completed, and the sidecar written after would name
    /// nothing, kept for ever (the sweep's own margin is left for clocks).
    ///
    /// [`S3Store::longest_complete`]: crate::media::s3::S3Store::longest_complete
    pub fn media_problem(&self) -> Option<String> {
        let MediaStoreKind::S3(_) = self.media_store else {
            return None;
        };
        let completing = crate::media::s3::S3Store::longest_complete(self.upload_timeout);
        let busy = self
            .presign_ttl
            .saturating_add(self.upload_timeout)
            .saturating_add(completing);
        (busy >= self.unattached_upload_ttl).then(|| {
            format!(
                "--presign-ttl ({} s) plus --upload-timeout ({} s) plus the longest completing \
                 an upload then takes ({} s: 4 x --upload-timeout + 135 s) must be shorter \
                 than --unattached-upload-hours ({} s): the sweep could delete an upload \
                 while it is completed; shorten the first two or raise the last",
                self.presign_ttl.as_secs(),
                self.upload_timeout.as_secs(),
                completing.as_secs(),
                self.unattached_upload_ttl.as_secs()
            )
        })
    }

    /// The store settings these server settings imply.
    pub fn store_settings(&self) -> StoreSettings {
        StoreSettings {
            kind: self.store.clone(),
            data_dir: self.data_dir.clone(),
            fsync: self.fsync,
            retention: Retention {
                days: self.retention_days.filter(|d| *d > 0),
                per_room: self.retention_messages.filter(|n| *n > 0),
            },
            queue: self.store_queue.max(1),
            max_mb: self.store_max_mb,
        }
    }

    /// The hub settings these server settings imply. A room never keeps
    /// more in memory than the store keeps of it.
    pub fn hub_config(&self) -> HubConfig {
        let kept = self
            .retention_messages
            .filter(|n| *n > 0)
            .map_or(usize::MAX, |n| usize::try_from(n).unwrap_or(usize::MAX));
        HubConfig {
            history: self.history.max(1).min(kept),
            welcome_history: self.welcome_history,
            welcome_history_bytes: self.welcome_history_bytes,
            max_users_per_reaction: self.max_users_per_reaction.max(1),
            outbox_frames: self.outbound_queue.max(1),
            empty_room_ttl: self.empty_room_ttl,
            name_hold_grace: self.name_hold_grace,
            history_memory_bytes: self.history_memory_bytes.max(1 << 20),
            max_reaction_bytes: self.max_reaction_bytes.max(256),
            limits: Limits {
                max_message_chars: self.max_message_chars,
                max_upload_bytes: self.max_upload_bytes,
                messages_per_second: self.rate,
            },
            ..HubConfig::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_kept_within_bounds() {
        let c = Config::default()
            .ping_interval(Duration::ZERO)
            .upload_timeout(Duration::MAX)
            .idle_timeout(Duration::from_secs(u64::MAX))
            .within_bounds();
        assert_eq!(c.ping_interval, Duration::from_millis(1));
        assert_eq!(c.upload_timeout, MAX_DURATION);
        assert_eq!(c.idle_timeout, MAX_DURATION);
        // What the server computes from them no longer overflows.
        let now = std::time::Instant::now();
        assert!(
            now.checked_add(c.upload_timeout + Duration::from_secs(60))
                .is_some()
        );
        // Sensible values are untouched.
        let d = Config::default();
        assert_eq!(d.clone().within_bounds().upload_timeout, d.upload_timeout);
    }

    #[test]
    fn an_s3_store_needs_the_unattached_ttl_to_outlast_a_presigned_upload() {
        let target = crate::media::S3Target::parse("s3://media?endpoint=http://127.0.0.1:9")
            .expect("a target");
        let s3 = Config::default().media_store(MediaStoreKind::S3(target));
        assert_eq!(s3.media_problem(), None, "the defaults work");
        // With an hour to live and 300 s to upload, `complete` may start
        // presign + 300 s after the marker and take 4 x 300 + 135 s: the
        // URL may live at most 3600 - 300 - 1335 - 1 s.
        let hour = Duration::from_secs(3600);
        let tight = s3
            .clone()
            .unattached_upload_ttl(hour)
            .presign_ttl(Duration::from_secs(1965))
            .upload_timeout(Duration::from_secs(300));
        let problem = tight.media_problem().expect("refused");
        assert!(
            problem.contains("--presign-ttl (1965 s)") && problem.contains("(1335 s"),
            "{problem}"
        );
        assert_eq!(
            tight
                .clone()
                .presign_ttl(Duration::from_secs(1964))
                .media_problem(),
            None
        );
        // A shorter upload timeout shortens `complete` too.
        assert_eq!(
            tight
                .clone()
                .upload_timeout(Duration::from_secs(299))
                .media_problem(),
            None
        );
        // The directory has no presigned uploads: nothing to refuse.
        let local = tight.media_store(MediaStoreKind::Local);
        assert_eq!(local.media_problem(), None);
    }
}
