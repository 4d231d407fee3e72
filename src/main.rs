//! The roomcast binary: flags and environment → [`roomcast::Config`], logging,
//! signals, then [`roomcast::serve`]. Nothing else lives here.

use std::ffi::OsString;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::str::FromStr;
use std::time::Duration;

use roomcast::Config;
use roomcast::auth::{AllowedOrigins, Auth, Mode, Secret};
use roomcast::media::MediaStoreKind;
use roomcast::media::s3::sigv4::Credentials;
use roomcast::store::{Fsync, StoreKind};

const HELP: &str = "\
roomcast: a real-time chat server

USAGE: roomcast [OPTIONS]
       roomcast token --user NAME [--room ROOM]... [--ttl 7d] [--base-url URL] [--moderator]

Each option falls back to the environment variable shown, then the default.
  --host H               address to bind            [HOST, default 127.0.0.1]
  --port P               port (0 picks a free one)  [PORT, default 8000]
  --uploads-dir D        where uploads are stored   [UPLOADS_DIR, default uploads]
  --media-store S        where media is kept: `local` (the uploads directory) or
                         s3://BUCKET?endpoint=http://host:port&region=R (any
                         S3-compatible service, path-style, keys from
                         AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY; browsers
                         then upload to it and download from it at that same
                         http URL) [MEDIA_STORE, default local]
  --presign-ttl S        how long a presigned upload or download URL works
                         (S3 store; 1 to 604800; plus 5 x --upload-timeout +
                         135 s, the longest an upload can take to complete,
                         under --unattached-upload-hours) [PRESIGN_TTL, default 300]
  --static-dir D         serve /static from D instead of the embedded UI [STATIC_DIR]
  --templates-dir D      read index.html from D instead of the embedded UI [TEMPLATES_DIR]
  --history N            messages kept per room     [HISTORY, default 500]
  --history-memory-mb N  what all rooms' recent messages may weigh in memory
                         together; past it the heaviest keep fewer
                         [HISTORY_MEMORY_MB, default 256]
  --max-message-chars N  longest message            [MAX_MESSAGE_CHARS, default 4000]
  --rate N               requests/s per connection, and per identity across its
                         connections (burst 2N; 0 = no limit) [RATE, default 10]
  --max-connections N    open WebSockets at once    [MAX_CONNECTIONS, default 10000]
  --max-connections-per-address N
                         open WebSockets per client address; beyond it 429
                         (0 = no limit) [MAX_CONNECTIONS_PER_ADDRESS, default 256]
  --max-http-per-address N
                         open TCP connections per peer address, WebSockets
                         included; beyond it a canned 429 (0 = no limit;
                         ignored with --trust-proxy) [MAX_HTTP_PER_ADDRESS, default 320]
  --joins-per-minute N   WebSocket upgrades per client address per minute;
                         beyond it 429 (0 = no limit) [JOINS_PER_MINUTE, default 60]
  --max-upload-bytes N   largest upload             [MAX_UPLOAD_BYTES, default 10485760]
  --uploads-per-minute N uploads per client address per minute (0 = no limit) [UPLOADS_PER_MINUTE, default 30]
  --upload-mb-per-hour N MiB one client address may upload per hour (0 = no limit) [UPLOAD_MB_PER_HOUR, default 1024]
  --uploads-max-mb N     most the uploads directory may hold (0 = no limit);
                         past it uploads get 507 [UPLOADS_MAX_MB, default 5120]
  --unattached-upload-hours N
                         an upload no message attached within N hours is
                         deleted [UNATTACHED_UPLOAD_HOURS, default 24]
  --workers N            threads running connections (0 = one fewer than the
                         CPUs, at least 1: the store's writer and the rest get
                         the last) [WORKERS, default 0]
  --preview-workers N    threads making 320 px previews of uploaded images
                         (0 = none; needs the `previews` feature) [PREVIEW_WORKERS, default 1]
  --preview-queue N      images waiting for a preview worker; past it an image
                         gets no preview [PREVIEW_QUEUE, default 64]
  --trust-proxy          per-address limits use the last X-Forwarded-For entry
                         (set it only behind a proxy, e.g. Railway's) [TRUST_PROXY=1]
  --upload-idle-timeout S
                         an upload body silent for S seconds gets 408 [UPLOAD_IDLE_TIMEOUT, default 30]
  --upload-timeout S     an upload body taking over S seconds in all gets 408 [UPLOAD_TIMEOUT, default 300]
  --redis-url URL        share rooms with every instance using this Redis,
                         redis://[user:password@]host[:port][/db]; needs the
                         `redis` feature; /health answers 503 while it is down [REDIS_URL]
  --redis-prefix P       prefix of its keys and channels [REDIS_PREFIX, default roomcast]
  --presence-ttl S       with Redis: an instance silent for S seconds is taken
                         for dead and its members leave (at least 3) [PRESENCE_TTL, default 30]
  --store S              where history is kept: `sqlite` (a file in --data-dir),
                         `memory` (gone at restart), or postgres://user@host/db
                         (feature `postgres`; shared by instances)
                         [STORE, then DATABASE_URL; default sqlite]
  --data-dir D           where the SQLite store lives  [DATA_DIR, default data]
  --fsync P              always | batch | off: when commits reach the disk
                         [FSYNC, default batch]
  --retention-days N     delete messages older than N days [RETENTION_DAYS, default: keep]
  --retention-messages N keep at most the newest N messages per room
                         [RETENTION_MESSAGES, default: keep all]
  --store-max-mb N       largest the SQLite file may grow; past it posts get
                         `unavailable` [STORE_MAX_MB, default: no limit]
  --auth-secret-file F   token mode: every WebSocket and upload needs a JWT
                         (HS256) signed with the secret in F (at least 32
                         bytes) [AUTH_SECRET_FILE; AUTH_SECRET holds the
                         secret itself; default: open mode, names claimed
                         by a secret]
  --allowed-origins L    pages that may open WebSockets: `*` or a comma list of
                         scheme://host[:port]; the server's own origin always
                         [ALLOWED_ORIGINS, default: own origin only]
  --metrics-token T      /metrics needs `Authorization: Bearer T` [METRICS_TOKEN]

`roomcast token` prints a token and an invite link for a user, signed with
the same secret (--auth-secret-file or AUTH_SECRET); --room may repeat and
takes names or `prefix*` patterns.
  -h, --help             print this help
  -V, --version          print the version

Prints `listening on http://ADDR` on stdout once it can serve; logs go to stderr
(RUST_LOG sets the level, default info). SIGTERM or Ctrl-C shuts down
gracefully: WebSockets are closed with 1001 and the process exits 0.
";

struct Args {
    host: String,
    port: u16,
    config: Config,
}

fn parse_value<T: FromStr>(flag: &str, raw: &str) -> Result<T, String> {
    raw.parse()
        .map_err(|_| format!("{flag}: {raw:?} is not a valid value"))
}

/// A whole number of seconds, at least `min` and at most a year.
fn parse_seconds(flag: &str, raw: &str, min: u64) -> Result<Duration, String> {
    let max = roomcast::config::MAX_DURATION.as_secs();
    match raw.parse::<u64>() {
        Ok(secs) if (min..=max).contains(&secs) => Ok(Duration::from_secs(secs)),
        _ => Err(format!(
            "{flag}: {raw:?} is not a whole number of seconds from {min} to {max}"
        )),
    }
}

/// A flag's value (or its environment fallback): `(flag name, value)`.
type Lookup<'a> = dyn Fn(&str, &str) -> Option<(String, String)> + 'a;

/// The token secret: `--auth-secret-file` (trailing whitespace dropped, as
/// a file made by `base64` ends with a newline), else `AUTH_SECRET`.
fn secret(
    get: &Lookup<'_>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<Secret>, String> {
    let bytes = match get("auth-secret-file", "AUTH_SECRET_FILE") {
        Some((f, path)) => {
            let mut bytes =
                std::fs::read(&path).map_err(|e| format!("{f}: cannot read {path:?}: {e}"))?;
            while bytes.last().is_some_and(u8::is_ascii_whitespace) {
                bytes.pop();
            }
            bytes
        }
        None => match env("AUTH_SECRET") {
            Some(s) if !s.is_empty() => s.into_bytes(),
            _ => return Ok(None),
        },
    };
    Secret::new(bytes).map(Some)
}

/// `args` (without the program name) and `env` (a lookup of environment
/// variables) into what `main` runs, or `None` after `--help`/`--version`.
fn parse_args(
    args: impl IntoIterator<Item = OsString>,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Option<Args>, String> {
    use lexopt::prelude::*;

    // Flags win over the environment; collect flags first.
    let mut flags: Vec<(String, String)> = Vec::new();
    let mut parser = lexopt::Parser::from_args(args);
    while let Some(arg) = parser.next().map_err(|e| e.to_string())? {
        match arg {
            Short('h') | Long("help") => {
                print!("{HELP}");
                return Ok(None);
            }
            Short('V') | Long("version") => {
                println!("roomcast {}", env!("CARGO_PKG_VERSION"));
                return Ok(None);
            }
            // The one switch: it takes no value.
            Long("trust-proxy") => flags.push(("trust-proxy".to_owned(), "1".to_owned())),
            Long(name) => {
                let name = name.to_owned();
                let value = parser.value().map_err(|e| e.to_string())?;
                let value = value
                    .into_string()
                    .map_err(|_| format!("--{name}: value is not UTF-8"))?;
                flags.push((name, value));
            }
            other => return Err(other.unexpected().to_string()),
        }
    }
    let get = |flag: &str, env_name: &str| -> Option<(String, String)> {
        let from_flag = flags
            .iter()
            .rev()
            .find(|(n, _)| n == flag)
            .map(|(_, v)| v.clone());
        from_flag
            .or_else(|| env(env_name))
            .map(|v| (format!("--{flag}"), v))
    };
    const KNOWN: [&str; 38] = [
        "media-store",
        "presign-ttl",
        "host",
        "port",
        "uploads-dir",
        "static-dir",
        "templates-dir",
        "history",
        "max-message-chars",
        "rate",
        "max-connections",
        "max-connections-per-address",
        "max-http-per-address",
        "joins-per-minute",
        "max-upload-bytes",
        "uploads-per-minute",
        "upload-mb-per-hour",
        "uploads-max-mb",
        "unattached-upload-hours",
        "workers",
        "preview-workers",
        "preview-queue",
        "trust-proxy",
        "upload-idle-timeout",
        "upload-timeout",
        "redis-url",
        "redis-prefix",
        "presence-ttl",
        "store",
        "data-dir",
        "fsync",
        "retention-days",
        "retention-messages",
        "store-max-mb",
        "auth-secret-file",
        "allowed-origins",
        "metrics-token",
        "history-memory-mb",
    ];
    if let Some((name, _)) = flags.iter().find(|(n, _)| !KNOWN.contains(&n.as_str())) {
        return Err(format!("unknown option --{name}; see --help"));
    }

    let mut config = Config::default();
    if let Some((_, v)) = get("uploads-dir", "UPLOADS_DIR") {
        config = config.uploads_dir(PathBuf::from(v));
    }
    if let Some((f, v)) = get("media-store", "MEDIA_STORE") {
        let kind = match v
            .parse::<MediaStoreKind>()
            .map_err(|e| format!("{f}: {e}"))?
        {
            MediaStoreKind::S3(target) => {
                let key = env("AWS_ACCESS_KEY_ID").filter(|k| !k.is_empty());
                let secret = env("AWS_SECRET_ACCESS_KEY").filter(|k| !k.is_empty());
                let (Some(key), Some(secret)) = (key, secret) else {
                    return Err(format!(
                        "{f}: an S3 store needs AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY \
                         in the environment"
                    ));
                };
                MediaStoreKind::S3(target.with_credentials(Credentials::new(key, secret)))
            }
            local => local,
        };
        config = config.media_store(kind);
    }
    if let Some((f, v)) = get("presign-ttl", "PRESIGN_TTL") {
        config = config.presign_ttl(parse_seconds(&f, &v, 1)?.min(Duration::from_secs(604_800)));
    }
    if let Some((_, v)) = get("static-dir", "STATIC_DIR") {
        config = config.static_dir(Some(PathBuf::from(v)));
    }
    if let Some((_, v)) = get("templates-dir", "TEMPLATES_DIR") {
        config = config.templates_dir(Some(PathBuf::from(v)));
    }
    if let Some((f, v)) = get("history", "HISTORY") {
        config = config.history(parse_value::<usize>(&f, &v)?);
    }
    if let Some((f, v)) = get("history-memory-mb", "HISTORY_MEMORY_MB") {
        let mb = parse_value::<usize>(&f, &v)?;
        config = config.history_memory_bytes(mb.saturating_mul(1 << 20));
    }
    if let Some((f, v)) = get("max-message-chars", "MAX_MESSAGE_CHARS") {
        config = config.max_message_chars(parse_value::<usize>(&f, &v)?);
    }
    if let Some((f, v)) = get("rate", "RATE") {
        let rate = parse_value::<u32>(&f, &v)?;
        config = config.rate(rate).rate_burst(rate.saturating_mul(2));
    }
    if let Some((f, v)) = get("max-connections", "MAX_CONNECTIONS") {
        config = config.max_connections(parse_value::<usize>(&f, &v)?);
    }
    if let Some((f, v)) = get("max-connections-per-address", "MAX_CONNECTIONS_PER_ADDRESS") {
        config = config.max_connections_per_address(parse_value::<usize>(&f, &v)?);
    }
    if let Some((f, v)) = get("max-http-per-address", "MAX_HTTP_PER_ADDRESS") {
        config = config.max_http_per_address(parse_value::<usize>(&f, &v)?);
    }
    if let Some((f, v)) = get("joins-per-minute", "JOINS_PER_MINUTE") {
        config = config.joins_per_minute(parse_value::<u32>(&f, &v)?);
    }
    if let Some((f, v)) = get("max-upload-bytes", "MAX_UPLOAD_BYTES") {
        config = config.max_upload_bytes(parse_value::<u64>(&f, &v)?);
    }
    if let Some((f, v)) = get("uploads-per-minute", "UPLOADS_PER_MINUTE") {
        config = config.uploads_per_minute(parse_value::<u32>(&f, &v)?);
    }
    if let Some((f, v)) = get("upload-mb-per-hour", "UPLOAD_MB_PER_HOUR") {
        let mb = parse_value::<u64>(&f, &v)?;
        config = config.upload_bytes_per_hour(mb.saturating_mul(1 << 20));
    }
    if let Some((f, v)) = get("uploads-max-mb", "UPLOADS_MAX_MB") {
        let mb = parse_value::<u64>(&f, &v)?;
        config = config.uploads_max_bytes((mb > 0).then(|| mb.saturating_mul(1 << 20)));
    }
    if let Some((f, v)) = get("workers", "WORKERS") {
        config = config.workers(parse_value::<usize>(&f, &v)?);
    }
    if let Some((f, v)) = get("preview-workers", "PREVIEW_WORKERS") {
        config = config.preview_workers(parse_value::<usize>(&f, &v)?);
    }
    if let Some((f, v)) = get("preview-queue", "PREVIEW_QUEUE") {
        config = config.preview_queue(parse_value::<usize>(&f, &v)?);
    }
    if let Some((f, v)) = get("unattached-upload-hours", "UNATTACHED_UPLOAD_HOURS") {
        let hours = parse_value::<u64>(&f, &v)?;
        if hours == 0 {
            return Err(format!("{f}: at least 1 hour"));
        }
        config = config.unattached_upload_ttl(Duration::from_secs(hours.saturating_mul(3600)));
    }
    if let Some((f, v)) = get("trust-proxy", "TRUST_PROXY") {
        let on = match v.as_str() {
            "1" | "true" | "yes" => true,
            "0" | "false" | "no" | "" => false,
            _ => return Err(format!("{f}: expected 1 or 0, got {v:?}")),
        };
        config = config.trust_proxy(on);
    }
    if let Some((f, v)) = get("upload-idle-timeout", "UPLOAD_IDLE_TIMEOUT") {
        config = config.upload_idle_timeout(parse_seconds(&f, &v, 1)?);
    }
    if let Some((f, v)) = get("upload-timeout", "UPLOAD_TIMEOUT") {
        config = config.upload_timeout(parse_seconds(&f, &v, 1)?);
    }
    if let Some((_, v)) = get("redis-url", "REDIS_URL") {
        // An empty REDIS_URL means "no Redis", as if unset.
        config = config.redis_url((!v.is_empty()).then_some(v));
    }
    if let Some((_, v)) = get("redis-prefix", "REDIS_PREFIX") {
        config = config.redis_prefix(v);
    }
    if let Some((f, v)) = get("presence-ttl", "PRESENCE_TTL") {
        config = config.presence_ttl(parse_seconds(&f, &v, 3)?);
    }
    let store = get("store", "STORE").or_else(|| {
        env("DATABASE_URL")
            .filter(|v| !v.is_empty())
            .map(|v| ("DATABASE_URL".to_owned(), v))
    });
    if let Some((f, v)) = store {
        config = config.store(v.parse::<StoreKind>().map_err(|e| format!("{f}: {e}"))?);
    }
    if let Some((_, v)) = get("data-dir", "DATA_DIR") {
        config = config.data_dir(PathBuf::from(v));
    }
    if let Some((f, v)) = get("fsync", "FSYNC") {
        config = config.fsync(v.parse::<Fsync>().map_err(|e| format!("{f}: {e}"))?);
    }
    if let Some((f, v)) = get("retention-days", "RETENTION_DAYS") {
        config = config.retention_days(Some(parse_value::<u32>(&f, &v)?));
    }
    if let Some((f, v)) = get("retention-messages", "RETENTION_MESSAGES") {
        config = config.retention_messages(Some(parse_value::<u64>(&f, &v)?));
    }
    if let Some((f, v)) = get("store-max-mb", "STORE_MAX_MB") {
        config = config.store_max_mb(Some(parse_value::<u64>(&f, &v)?));
    }
    let mut auth = Auth {
        mode: match secret(&get, &env)? {
            Some(secret) => Mode::Token(secret),
            None => Mode::Open,
        },
        ..Auth::default()
    };
    if let Some((f, v)) = get("allowed-origins", "ALLOWED_ORIGINS") {
        auth.origins = AllowedOrigins::parse(&v).map_err(|e| format!("{f}: {e}"))?;
    }
    if let Some((_, v)) = get("metrics-token", "METRICS_TOKEN") {
        auth.metrics_token = (!v.is_empty()).then_some(v);
    }
    config = config.auth(auth);
    let host = get("host", "HOST").map_or_else(|| "127.0.0.1".to_owned(), |(_, v)| v);
    let port = match get("port", "PORT") {
        Some((f, v)) => parse_value::<u16>(&f, &v)?,
        None => 8000,
    };
    Ok(Some(Args { host, port, config }))
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}

/// What `roomcast token` was asked for.
#[derive(Debug)]
struct TokenArgs {
    user: String,
    rooms: Vec<String>,
    ttl: Duration,
    base_url: String,
    moderator: bool,
    secret: Secret,
}

/// `roomcast token` arguments (after the word `token`).
fn parse_token_args(
    args: impl IntoIterator<Item = OsString>,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Option<TokenArgs>, String> {
    use lexopt::prelude::*;
    let (mut user, mut rooms, mut ttl, mut base_url, mut moderator, mut file) = (
        None,
        Vec::new(),
        Duration::from_secs(7 * 86_400),
        None,
        false,
        None,
    );
    let mut parser = lexopt::Parser::from_args(args);
    fn value(parser: &mut lexopt::Parser, flag: &str) -> Result<String, String> {
        parser
            .value()
            .map_err(|e| e.to_string())?
            .into_string()
            .map_err(|_| format!("--{flag}: value is not UTF-8"))
    }
    while let Some(arg) = parser.next().map_err(|e| e.to_string())? {
        match arg {
            Short('h') | Long("help") => {
                print!("{HELP}");
                return Ok(None);
            }
            Long("user") => user = Some(value(&mut parser, "user")?),
            Long("room") => rooms.push(value(&mut parser, "room")?),
            Long("ttl") => {
                let v = value(&mut parser, "ttl")?;
                ttl = humantime::parse_duration(&v)
                    .ok()
                    .filter(|d| !d.is_zero() && *d <= roomcast::config::MAX_DURATION)
                    .ok_or_else(|| format!("--ttl: {v:?} is not a duration like 7d, 12h or 30m"))?;
            }
            Long("base-url") => base_url = Some(value(&mut parser, "base-url")?),
            Long("moderator") => moderator = true,
            Long("auth-secret-file") => file = Some(value(&mut parser, "auth-secret-file")?),
            other => return Err(other.unexpected().to_string()),
        }
    }
    let user = user.ok_or("token: --user is required")?;
    roomcast::hub::UserName::parse(&user).map_err(|e| format!("--user: {e}"))?;
    for room in &rooms {
        let name = room.strip_suffix('*').unwrap_or(room);
        if !room.ends_with('*') {
            roomcast::hub::RoomName::parse(name).map_err(|e| format!("--room {room:?}: {e}"))?;
        }
    }
    let lookup = |flag: &str, env_name: &str| -> Option<(String, String)> {
        match flag {
            "auth-secret-file" => file.clone().map(|f| (format!("--{flag}"), f)),
            _ => env(env_name).map(|v| (format!("--{flag}"), v)),
        }
        .or_else(|| env(env_name).map(|v| (format!("--{flag}"), v)))
    };
    let secret = secret(&lookup, &env)?
        .ok_or("token: no secret; pass --auth-secret-file or set AUTH_SECRET, as for the server")?;
    Ok(Some(TokenArgs {
        user,
        rooms,
        ttl,
        base_url: base_url.unwrap_or_else(|| "http://127.0.0.1:8000".to_owned()),
        moderator,
        secret,
    }))
}

/// Prints a token and its invite link. The token goes in the link's
/// fragment (`#token=`), which browsers never send to a server nor put in
/// a Referer.
fn print_token(t: &TokenArgs) {
    let now = roomcast::auth::now();
    let token = roomcast::auth::jwt::sign(
        &roomcast::auth::jwt::Issue {
            sub: &t.user,
            rooms: &t.rooms,
            moderator: t.moderator,
            iat: now,
            exp: now + t.ttl.as_secs(),
        },
        &t.secret,
    );
    let room = t.rooms.iter().find(|r| !r.ends_with('*')).map(|r| {
        percent_encoding::utf8_percent_encode(r, percent_encoding::NON_ALPHANUMERIC).to_string()
    });
    let base = t.base_url.trim_end_matches('/');
    println!("token: {token}");
    match room {
        Some(room) => println!("invite link: {base}/?room={room}#token={token}"),
        None => println!("invite link: {base}/#token={token}"),
    }
    println!(
        "for {:?}, valid {} (until {})",
        t.user,
        humantime::format_duration(t.ttl),
        humantime::format_rfc3339_seconds(
            std::time::UNIX_EPOCH + Duration::from_secs(now + t.ttl.as_secs())
        )
    );
}

fn main() -> ExitCode {
    let mut argv: Vec<OsString> = std::env::args_os().skip(1).collect();
    if argv.first().is_some_and(|a| a == "token") {
        argv.remove(0);
        return match parse_token_args(argv, |name| std::env::var(name).ok()) {
            Ok(Some(t)) => {
                print_token(&t);
                ExitCode::SUCCESS
            }
            Ok(None) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("roomcast: {e}");
                ExitCode::from(2)
            }
        };
    }
    let args = match parse_args(argv, |name| std::env::var(name).ok()) {
        Ok(Some(a)) => a,
        Ok(None) => return ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("roomcast: {e}");
            return ExitCode::from(2);
        }
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();

    // One thread for the accept loop and signals: `serve` runs connections
    // on worker threads of its own (`--workers`).
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("roomcast: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let listener = match tokio::net::TcpListener::bind((args.host.as_str(), args.port)).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!(
                    "roomcast: cannot listen on {}:{}: {e}",
                    args.host, args.port
                );
                return ExitCode::FAILURE;
            }
        };
        // Printed once the server can serve: a start-up failure (an
        // unusable data directory, a newer schema) exits before it.
        let ready = |bound| {
            println!("listening on http://{bound}");
            let _ = std::io::stdout().flush();
        };
        match roomcast::serve_when_ready(listener, args.config, shutdown_signal(), ready).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("roomcast: {e}");
                ExitCode::FAILURE
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str], env: &[(&str, &str)]) -> Result<Option<Args>, String> {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        parse_args(args.iter().map(OsString::from), move |name| {
            env.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
        })
    }

    fn config(args: &[&str], env: &[(&str, &str)]) -> Config {
        parse(args, env).unwrap().unwrap().config
    }

    #[test]
    fn defaults_without_flags_or_env() {
        let args = parse(&[], &[]).unwrap().unwrap();
        assert_eq!((args.host.as_str(), args.port), ("127.0.0.1", 8000));
        let c = args.config;
        assert_eq!(c.upload_timeout, Duration::from_secs(300));
        assert_eq!(c.upload_idle_timeout, Duration::from_secs(30));
        assert_eq!(c.presence_ttl, Duration::from_secs(30));
        assert!(!c.trust_proxy);
    }

    #[test]
    fn an_s3_media_store_takes_its_keys_from_the_environment_and_never_shows_them() {
        assert_eq!(config(&[], &[]).media_store, MediaStoreKind::Local);
        let flag = ["--media-store", "s3://media?endpoint=http://127.0.0.1:9000"];
        let err = parse(&flag, &[("AWS_ACCESS_KEY_ID", "AK")]).err().unwrap();
        assert!(err.contains("AWS_SECRET_ACCESS_KEY"), "{err}");
        let env = [
            ("AWS_ACCESS_KEY_ID", "AK"),
            ("AWS_SECRET_ACCESS_KEY", "the secret half"),
            ("PRESIGN_TTL", "60"),
        ];
        let c = config(&flag, &env);
        let MediaStoreKind::S3(target) = &c.media_store else {
            panic!("not S3: {:?}", c.media_store);
        };
        assert_eq!(target.bucket, "media");
        assert_eq!(
            target.credentials.as_ref().map(|c| c.access_key()),
            Some("AK")
        );
        assert_eq!(c.presign_ttl, Duration::from_secs(60));
        assert!(!format!("{c:?}").contains("the secret half"));
        let err = parse(&["--media-store", "s3://media?endpoint=https://h"], &env)
            .err()
            .unwrap();
        assert!(
            err.starts_with("--media-store") && err.contains("TLS"),
            "{err}"
        );
    }

    #[test]
    fn flags_win_over_the_environment() {
        let env = [("PORT", "9000"), ("HISTORY", "7"), ("UPLOAD_TIMEOUT", "60")];
        let args = parse(&["--port", "9001", "--upload-timeout=120"], &env)
            .unwrap()
            .unwrap();
        assert_eq!(args.port, 9001);
        assert_eq!(args.config.history, 7, "env applies where no flag is given");
        assert_eq!(args.config.upload_timeout, Duration::from_secs(120));
    }

    #[test]
    fn per_address_limits_come_from_flags_or_env() {
        let d = Config::default();
        let c = config(&[], &[]);
        assert_eq!(
            (
                c.max_connections_per_address,
                c.max_http_per_address,
                c.joins_per_minute
            ),
            (
                d.max_connections_per_address,
                d.max_http_per_address,
                d.joins_per_minute
            )
        );
        let c = config(
            &["--max-connections-per-address", "3", "--joins-per-minute=0"],
            &[("MAX_HTTP_PER_ADDRESS", "9"), ("JOINS_PER_MINUTE", "5")],
        );
        assert_eq!(c.max_connections_per_address, 3);
        assert_eq!(c.max_http_per_address, 9);
        assert_eq!(c.joins_per_minute, 0, "the flag wins");
        let err = parse(&["--max-http-per-address", "-1"], &[]).err().unwrap();
        assert!(err.starts_with("--max-http-per-address"), "{err}");
    }

    #[test]
    fn timeouts_are_whole_seconds_with_a_floor() {
        let c = config(
            &["--upload-idle-timeout", "5", "--presence-ttl", "3"],
            &[("UPLOAD_TIMEOUT", "42")],
        );
        assert_eq!(c.upload_idle_timeout, Duration::from_secs(5));
        assert_eq!(c.upload_timeout, Duration::from_secs(42));
        assert_eq!(c.presence_ttl, Duration::from_secs(3));
        for (flag, value) in [
            ("--upload-timeout", "0"),
            ("--upload-idle-timeout", "-1"),
            ("--upload-timeout", "1.5"),
            ("--presence-ttl", "2"),
            ("--upload-timeout", "18446744073709551615"),
            ("--upload-idle-timeout", "31536001"),
        ] {
            let err = parse(&[flag, value], &[]).err().expect(flag);
            assert!(err.starts_with(flag), "{err}");
        }
    }

    #[test]
    fn bad_input_is_a_clear_error() {
        let err = parse(&["--prot", "1"], &[]).err().unwrap();
        assert_eq!(err, "unknown option --prot; see --help");
        let err = parse(&["--port", "http"], &[]).err().unwrap();
        assert!(err.contains("--port"), "{err}");
        let err = parse(&[], &[("TRUST_PROXY", "maybe")]).err().unwrap();
        assert!(err.starts_with("--trust-proxy"), "{err}");
        let err = parse(&["--history"], &[]).err().unwrap();
        assert!(err.contains("--history"), "{err}");
    }

    #[test]
    fn an_empty_redis_url_means_none() {
        assert_eq!(config(&[], &[("REDIS_URL", "")]).redis_url, None);
        let c = config(&["--redis-url", "redis://127.0.0.1:6379"], &[]);
        assert_eq!(
            c.redis_url.as_ref().map(|u| u.as_str()),
            Some("redis://127.0.0.1:6379")
        );
        let secret = config(&["--redis-url", "redis://u:the-password@h:6379"], &[]);
        assert!(!format!("{secret:?}").contains("the-password"));
    }

    #[test]
    #[cfg(feature = "sqlite")]
    fn the_store_is_sqlite_in_data_unless_told() {
        let c = config(&[], &[]);
        assert_eq!(
            (c.store, c.data_dir),
            (StoreKind::Sqlite, PathBuf::from("data"))
        );
        assert_eq!(c.fsync, Fsync::Batch);
        let c = config(&["--store", "memory", "--fsync", "off"], &[]);
        assert_eq!((c.store, c.fsync), (StoreKind::Memory, Fsync::Off));
        let url = "postgres://roomcast@db/chat";
        let c = config(&[], &[("DATABASE_URL", url)]);
        assert_eq!(c.store, StoreKind::Postgres(url.into()));
        let c = config(&["--store", "sqlite"], &[("DATABASE_URL", url)]);
        assert_eq!(c.store, StoreKind::Sqlite, "--store wins over DATABASE_URL");
        let c = config(
            &["--retention-days", "30", "--retention-messages", "10000"],
            &[],
        );
        assert_eq!(
            (c.retention_days, c.retention_messages),
            (Some(30), Some(10_000))
        );
        for (flag, value) in [("--store", "mysql://x"), ("--fsync", "sometimes")] {
            let err = parse(&[flag, value], &[]).err().expect(flag);
            assert!(err.starts_with(flag), "{err}");
        }
    }

    #[test]
    fn token_mode_needs_a_long_secret_and_origins_parse() {
        let c = config(&[], &[("AUTH_SECRET", &"s".repeat(32))]);
        assert!(c.auth.tokens_required());
        assert!(!config(&[], &[]).auth.tokens_required(), "open by default");
        let err = parse(&[], &[("AUTH_SECRET", "short")]).err().unwrap();
        assert!(err.contains("at least 32"), "{err}");
        let err = parse(&["--auth-secret-file", "/nonexistent/secret"], &[])
            .err()
            .unwrap();
        assert!(err.starts_with("--auth-secret-file"), "{err}");
        let c = config(&["--allowed-origins", "https://app.example"], &[]);
        assert_eq!(
            c.auth.origins,
            AllowedOrigins::List(vec!["https://app.example".into()])
        );
        let err = parse(&["--allowed-origins", "app.example"], &[])
            .err()
            .unwrap();
        assert!(err.starts_with("--allowed-origins"), "{err}");
        let c = config(&[], &[("METRICS_TOKEN", "the-metrics-token")]);
        assert_eq!(c.auth.metrics_token.as_deref(), Some("the-metrics-token"));
        assert!(!format!("{c:?}").contains("the-metrics-token"));
    }

    #[test]
    fn the_token_command_signs_what_the_server_accepts() {
        let secret = "t".repeat(40);
        let env = move |name: &str| (name == "AUTH_SECRET").then(|| secret.clone());
        let args = ["--user", "ann", "--room", "private-design", "--ttl", "2h"];
        let t = parse_token_args(args.iter().map(OsString::from), env)
            .unwrap()
            .unwrap();
        assert_eq!((t.user.as_str(), t.ttl), ("ann", Duration::from_secs(7200)));
        let no_user = parse_token_args(["--room", "x"].iter().map(OsString::from), |_| {
            Some("t".repeat(40))
        });
        assert!(no_user.unwrap_err().contains("--user"));
        let no_secret = parse_token_args(["--user", "ann"].iter().map(OsString::from), |_| None);
        assert!(no_secret.unwrap_err().contains("no secret"));
        let bad_ttl = parse_token_args(
            ["--user", "ann", "--ttl", "soon"]
                .iter()
                .map(OsString::from),
            |_| Some("t".repeat(40)),
        );
        assert!(bad_ttl.unwrap_err().starts_with("--ttl"));
    }

    #[test]
    fn help_and_version_stop_without_running() {
        assert!(parse(&["--help"], &[]).unwrap().is_none());
        assert!(parse(&["-V"], &[]).unwrap().is_none());
    }
}
