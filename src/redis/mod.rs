//! The Redis link under the hub: what lets several instances behind one
//! URL act as one server.
//!
//! Three tasks per instance, each with one job:
//! - the **command** task owns one pipelined connection. Requests come in
//!   through a bounded queue ([`Settings::queue`]); a full queue, or a link
//!   that is down, refuses at once ([`Unavailable`]) instead of waiting.
//!   Replies go back in order. Every shared change is one Lua script
//!   ([`scripts`]). A connection that leaves what it was sent unanswered
//!   for [`SILENCE`] is given up and replaced: silence is the only sign a
//!   dead peer gives.
//! - the **subscriber** task owns the pub/sub connection. It subscribes to
//!   `<prefix>:room:<name>` for exactly the rooms with local members (a
//!   desired set, not a queue: nothing to overflow) and hands each event to
//!   the hub ([`Inbound`]), which builds one frame and fans it out locally.
//! - the **heartbeat** task ([`heartbeat`]) refreshes this instance's
//!   presence entry, removes instances whose entry expired (their members
//!   leave), and re-announces this instance's members after a reconnect.
//!
//! On any connection error: log, mark the link down (`/health` answers 503),
//! fail what was waiting (a request written and unanswered, or one that
//! timed out, is failed *in doubt*: Redis may still run it, see
//! [`Unanswered`]; one queued and never written is refused), reconnect with
//! exponential back-off, subscribe again, ask for a marker per room to
//! detect events missed meanwhile.
//! Every new connection reads `<prefix>:epoch` first: a new value means
//! Redis lost its data, and every member starts over ([`Inbound::lost`]).
//! Nothing here panics; nothing here knows about sockets or sessions.

mod backbone;
mod conn;
mod heartbeat;
pub(crate) mod resp;
pub(crate) mod scripts;

use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::AsyncWriteExt;
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::task::JoinHandle;

pub(crate) use backbone::RedisBackbone;
pub use conn::Target;

use crate::hub::Inbound;
use conn::Conn;
use resp::{LinkError, Value};
pub(crate) use scripts::Script;

/// How long one request may wait for its reply.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the command connection may leave what it was sent unanswered
/// before it is replaced. Longer than [`CALL_TIMEOUT`]: a request's caller
/// gives up first, and is told its request timed out (in doubt), not that
/// the connection was lost, whichever timer the runtime wakes first.
const SILENCE: Duration = Duration::from_secs(6);
/// How long opening a connection may take, all of it: connect, handshake,
/// the epoch, the scripts. A Redis that accepts and then hangs is retried
/// like one that refuses.
const OPEN_TIMEOUT: Duration = Duration::from_secs(3);
const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// How to reach Redis and how this instance appears there.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Where Redis is.
    pub target: Target,
    /// Prefix of every key and channel.
    pub prefix: String,
    /// An instance whose presence entry is older than this is dead: its
    /// members are removed. The heartbeat refreshes it every third of it.
    pub presence_ttl: Duration,
    /// Online names up to which join/leave carry the list.
    pub online_list_cap: usize,
    /// An empty room's history expires after this long.
    pub empty_room_ttl: Duration,
    /// Requests waiting for the command connection; beyond this they are
    /// refused with `unavailable` (the session tells its client). A
    /// quarter as many more may be sent and not yet answered.
    pub queue: usize,
}

impl Settings {
    /// Commands sent but not yet answered on the command connection.
    fn max_in_flight(&self) -> usize {
        (self.queue / 4).max(1)
    }
}

/// The link is down or overloaded: the request was not carried out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unavailable(pub String);

impl fmt::Display for Unavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A request that got no usable answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Unanswered {
    /// What happened, as the client is told, without advice: whether to
    /// try again depends on `in_doubt` and on the request.
    pub what: &'static str,
    /// Redis may have run it, or may yet: it was sent (or queued to be)
    /// and no answer came in time, or the connection failed after it was
    /// written. `false`: it never reached Redis, or Redis refused it.
    pub in_doubt: bool,
}

impl fmt::Display for Unanswered {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.what)
    }
}

/// Where a command's reply goes. An `Err` means the command was written
/// and its connection failed before the answer (see [`Unanswered`]); a
/// command dropped unsent drops its sender instead.
type Reply = oneshot::Sender<Result<Value, LinkError>>;

struct Cmd {
    script: Script,
    args: Vec<Bytes>,
    reply: Reply,
}

#[derive(Default)]
struct Chan {
    /// (Un)subscribe replies still to come.
    outstanding: u32,
    /// The last request sent was SUBSCRIBE.
    subscribed: bool,
    /// Subscribed, and Redis said so for the last request.
    confirmed: bool,
}

#[derive(Default)]
struct Subs {
    /// Rooms with local members.
    want: HashSet<String>,
    /// Rooms whose want changed since the task last looked.
    dirty: HashSet<String>,
    chans: HashMap<String, Chan>,
    up: bool,
    /// Rooms that were subscribed when the connection dropped: once
    /// subscribed again they need a marker, as events may have been missed.
    remark: HashSet<String>,
}

struct Status {
    cmd_up: bool,
    sub_up: bool,
    /// Why the command connection is down (while it is).
    cmd_reason: String,
    /// Why the pub/sub connection is down (while it is).
    sub_reason: String,
}

struct Inner {
    settings: Settings,
    instance: String,
    queue: mpsc::Sender<Cmd>,
    status: Mutex<Status>,
    subs: Mutex<Subs>,
    subs_changed: Notify,
    subs_confirmed: Notify,
    resync: AtomicBool,
    wake_heartbeat: Notify,
    /// Where room events go: the hub.
    inbound: Inbound,
    /// Rooms whose marker is still to be asked for; the heartbeat asks,
    /// and keeps a room here until Redis has answered.
    marks_due: Mutex<HashSet<String>>,
    /// The value of `<prefix>:epoch` the command connection last saw: a
    /// different one after a reconnect means Redis lost its data.
    epoch: Mutex<Option<Bytes>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Every critical section leaves the state whole; poisoning is ignored.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The running link. Dropping it stops its tasks.
pub(crate) struct Link {
    inner: Arc<Inner>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Link {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Link {
    /// Starts the link's tasks (needs a tokio runtime).
    pub fn start(settings: Settings, inbound: Inbound) -> Self {
        let (inner, rx) = Inner::new(settings, inbound);
        tracing::info!(
            instance = %inner.instance,
            redis = %inner.settings.target.addr,
            prefix = %inner.settings.prefix,
            "starting the Redis backbone"
        );
        let tasks = vec![
            tokio::spawn(command_task(Arc::clone(&inner), rx)),
            tokio::spawn(subscriber_task(Arc::clone(&inner))),
            tokio::spawn(heartbeat::heartbeat_task(Arc::clone(&inner))),
        ];
        Self { inner, tasks }
    }

    /// This instance's id in Redis.
    pub fn instance(&self) -> &str {
        &self.inner.instance
    }

    /// `None` when both connections are up; otherwise why not.
    pub fn degraded(&self) -> Option<String> {
        let s = lock(&self.inner.status);
        match (s.cmd_up, s.sub_up) {
            (true, true) => None,
            (false, true) => Some(s.cmd_reason.clone()),
            (true, false) => Some(s.sub_reason.clone()),
            (false, false) if s.cmd_reason == s.sub_reason => Some(s.cmd_reason.clone()),
            (false, false) => Some(format!("{}; {}", s.cmd_reason, s.sub_reason)),
        }
    }

    /// Queues `script` with the prefix and `args`; never waits. Call it under
    /// the lock that orders the change, then await [`Link::reply`] outside it.
    pub fn call(
        &self,
        script: Script,
        args: &[&[u8]],
    ) -> Result<oneshot::Receiver<Result<Value, LinkError>>, Unavailable> {
        if let Some(reason) = self.degraded() {
            return Err(Unavailable(format!(
                "the chat backbone is unavailable ({reason}); try again shortly"
            )));
        }
        LinkRef(&self.inner).call(script, args)
    }

    /// [`Link::call`] for a change that needs only the command connection
    /// (presence, leaving at shutdown): queued whenever that connection is
    /// up, whether or not the pub/sub connection is. It waits on no event,
    /// and refused it would leave this instance's members in Redis, their
    /// names held and shown online, until the heartbeat catches up (or,
    /// at shutdown, until the presence TTL reaps the instance).
    fn call_commands(
        &self,
        script: Script,
        args: &[&[u8]],
    ) -> Result<oneshot::Receiver<Result<Value, LinkError>>, Unavailable> {
        {
            let s = lock(&self.inner.status);
            if !s.cmd_up {
                return Err(Unavailable(format!(
                    "the chat backbone is unavailable ({}); try again shortly",
                    s.cmd_reason
                )));
            }
        }
        LinkRef(&self.inner).call(script, args)
    }

    /// Waits for a reply queued by [`Link::call`]. Without one, says
    /// whether Redis may have run the command all the same: a command that
    /// timed out may still be written and run later (the connection may
    /// only be stalled).
    pub async fn reply(
        rx: oneshot::Receiver<Result<Value, LinkError>>,
    ) -> Result<Value, Unanswered> {
        match tokio::time::timeout(CALL_TIMEOUT, rx).await {
            Err(_) => Err(Unanswered {
                what: "the chat backbone did not answer in time",
                in_doubt: true,
            }),
            Ok(answer) => Self::settle(answer),
        }
    }

    /// What a reply that arrived means to the caller.
    fn settle(
        answer: Result<Result<Value, LinkError>, oneshot::error::RecvError>,
    ) -> Result<Value, Unanswered> {
        let lost = |in_doubt| Unanswered {
            what: "the chat backbone lost its connection",
            in_doubt,
        };
        match answer {
            // Dropped unsent: queued while the link was down.
            Err(_) => Err(lost(false)),
            // Written, and the connection failed before the answer.
            Ok(Err(_)) => Err(lost(true)),
            Ok(Ok(Value::Error(e))) => {
                tracing::error!("a backbone script failed: {e}");
                Err(Unanswered {
                    what: "the chat backbone refused the request",
                    in_doubt: false,
                })
            }
            Ok(Ok(v)) => Ok(v),
        }
    }

    /// Queues a presence change nobody waits for, on the command connection
    /// whenever it is up ([`Link::call_commands`]); if it is not carried out
    /// (not queued, refused, or left in doubt) every member is announced
    /// again soon, so no leave is lost.
    pub fn call_or_resync(&self, script: Script, args: &[&[u8]]) {
        let queued = self.call_commands(script, args);
        match (queued, tokio::runtime::Handle::try_current()) {
            (Ok(rx), Ok(runtime)) => {
                let inner = Arc::clone(&self.inner);
                runtime.spawn(async move {
                    if Self::reply(rx).await.is_err() {
                        inner.need_resync();
                    }
                });
            }
            // No runtime to wait on (the instance is stopping): resync too.
            _ => self.inner.need_resync(),
        }
    }

    /// The room has local members: subscribe to it.
    pub fn want(&self, room: &str) {
        let mut s = lock(&self.inner.subs);
        if s.want.insert(room.to_owned()) {
            s.dirty.insert(room.to_owned());
            drop(s);
            self.inner.subs_changed.notify_one();
        }
    }

    /// The room has no local members left: unsubscribe.
    pub fn unwant(&self, room: &str) {
        let mut s = lock(&self.inner.subs);
        if s.want.remove(room) {
            s.dirty.insert(room.to_owned());
            drop(s);
            self.inner.subs_changed.notify_one();
        }
    }

    /// What can wait for a room's subscription after the call that
    /// asked for it returned.
    pub fn handle(&self) -> Subscriptions {
        Subscriptions(Arc::clone(&self.inner))
    }

    /// Removes this instance's presence (graceful shutdown), briefly, if
    /// the command connection is up (the pub/sub one need not be). The
    /// heartbeat stops first so it cannot register the instance again.
    pub async fn bye(&self) {
        if let Some(heartbeat) = self.tasks.get(2) {
            heartbeat.abort();
        }
        let cap = self.inner.settings.online_list_cap.to_string();
        let ttl = ms(self.inner.settings.empty_room_ttl);
        let args: [&[u8]; 3] = [
            self.inner.instance.as_bytes(),
            cap.as_bytes(),
            ttl.as_bytes(),
        ];
        if let Ok(rx) = self.call_commands(Script::Bye, &args) {
            let _ = tokio::time::timeout(Duration::from_secs(2), rx).await;
        }
    }
}

/// Waits for subscriptions; see [`Link::handle`].
pub(crate) struct Subscriptions(Arc<Inner>);

impl Subscriptions {
    /// Waits until Redis has confirmed the subscription to `room`.
    pub async fn subscribed(&self, room: &str) -> Result<(), Unavailable> {
        let deadline = tokio::time::Instant::now() + CALL_TIMEOUT;
        loop {
            let notified = self.0.subs_confirmed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let s = lock(&self.0.subs);
                if s.chans.get(room).is_some_and(|c| c.confirmed) {
                    return Ok(());
                }
                if !s.up {
                    return Err(Unavailable(
                        "the chat backbone is reconnecting; try again shortly".into(),
                    ));
                }
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Err(Unavailable(
                    "the chat backbone did not confirm the room in time; try again".into(),
                ));
            }
        }
    }
}

/// A duration in whole milliseconds, as text for a script argument.
pub(crate) fn ms(d: Duration) -> String {
    d.as_millis().to_string()
}

impl Inner {
    /// The link's state under a fresh instance id, both connections down,
    /// and the receiving end of its request queue.
    fn new(settings: Settings, inbound: Inbound) -> (Arc<Self>, mpsc::Receiver<Cmd>) {
        let mut id = [0u8; 8];
        let _ = getrandom::fill(&mut id);
        let instance = id.iter().map(|b| format!("{b:02x}")).collect::<String>();
        let (queue, rx) = mpsc::channel(settings.queue.max(1));
        let inner = Arc::new(Self {
            settings,
            instance,
            queue,
            status: Mutex::new(Status {
                cmd_up: false,
                sub_up: false,
                cmd_reason: "connecting to Redis".into(),
                sub_reason: "connecting to Redis".into(),
            }),
            subs: Mutex::new(Subs::default()),
            subs_changed: Notify::new(),
            subs_confirmed: Notify::new(),
            resync: AtomicBool::new(true),
            wake_heartbeat: Notify::new(),
            inbound,
            marks_due: Mutex::new(HashSet::new()),
            epoch: Mutex::new(None),
        });
        (inner, rx)
    }

    fn need_resync(&self) {
        self.resync.store(true, Ordering::Release);
        self.wake_heartbeat.notify_one();
    }

    fn set_up(&self, cmd: bool) {
        let mut s = lock(&self.status);
        let was = s.cmd_up && s.sub_up;
        if cmd {
            s.cmd_up = true;
        } else {
            s.sub_up = true;
        }
        if s.cmd_up && s.sub_up && !was {
            tracing::info!("Redis backbone connected");
        }
    }

    fn set_down(&self, cmd: bool, err: &LinkError) {
        let which = if cmd { "command" } else { "pub/sub" };
        let mut s = lock(&self.status);
        let was = if cmd { s.cmd_up } else { s.sub_up };
        if cmd {
            s.cmd_up = false;
        } else {
            s.sub_up = false;
        }
        let reason = format!("Redis {which} connection: {err}");
        if cmd {
            s.cmd_reason = reason;
        } else {
            s.sub_reason = reason;
        }
        if was {
            tracing::warn!(
                "lost the Redis {which} connection: {err}; serving local members, posts are refused until it is back"
            );
        } else {
            tracing::debug!("Redis {which} connection still down: {err}");
        }
    }

    fn name(&self, role: &str) -> String {
        let clean: String = self
            .settings
            .prefix
            .chars()
            .map(|c| if c.is_ascii_graphic() { c } else { '_' })
            .collect();
        format!("{clean}:{}:{role}", self.instance)
    }

    fn channel_prefix(&self) -> String {
        format!("{}:room:", self.settings.prefix)
    }
}

/// How long a connection must have served before its failure counts as a
/// new outage (the pause starts again from [`MIN_BACKOFF`]). One that
/// opens and dies at once (Redis killing a subscriber over its output
/// limit, a script refused every time) backs off like a failed open.
const STAYED_UP: Duration = Duration::from_secs(10);

/// The pause before the next attempt, after a connection that served for
/// `served` (zero: it never opened).
fn next_backoff(backoff: Duration, served: Duration) -> Duration {
    match served >= STAYED_UP {
        true => MIN_BACKOFF,
        false => backoff,
    }
}

async fn backoff_sleep(backoff: &mut Duration) {
    tokio::time::sleep(*backoff).await;
    *backoff = (*backoff * 2).min(MAX_BACKOFF);
}

// ---------------------------------------------------------------- commands

async fn command_task(inner: Arc<Inner>, mut rx: mpsc::Receiver<Cmd>) {
    let mut backoff = MIN_BACKOFF;
    loop {
        let (err, served) = match open_command(&inner).await {
            Ok((conn, shas)) => {
                let opened = tokio::time::Instant::now();
                check_epoch(&inner, &conn.epoch);
                // Before any request goes out on it: the rooms' floors are
                // read again, in case Redis came back older.
                inner.inbound.reconnected();
                let conn = conn.conn;
                inner.set_up(true);
                // Members may have come and gone while the link was down,
                // or this instance may have been reaped: announce them again.
                inner.resync.store(true, Ordering::Release);
                inner.wake_heartbeat.notify_one();
                let err = serve_commands(&inner, conn, &shas, &mut rx).await;
                (err, opened.elapsed())
            }
            Err(e) => (e, Duration::ZERO),
        };
        backoff = next_backoff(backoff, served);
        inner.set_down(true, &err);
        // What was queued while down is refused, not replayed later.
        while rx.try_recv().is_ok() {}
        backoff_sleep(&mut backoff).await;
        while rx.try_recv().is_ok() {}
    }
}

/// A freshly opened command connection and the epoch Redis holds.
struct Opened {
    conn: Conn,
    epoch: Bytes,
}

/// Records `epoch`, as read on a fresh connection (either one: whichever
/// comes back first after Redis lost its data tells). If an earlier,
/// different one was seen, every member starts over.
fn check_epoch(inner: &Inner, epoch: &Bytes) {
    let lost = {
        let mut seen = lock(&inner.epoch);
        let lost = seen.as_ref().is_some_and(|e| e != epoch);
        *seen = Some(epoch.clone());
        lost
    };
    if lost {
        tracing::warn!(
            "Redis came back without its data (restarted empty?): \
             every member starts over from a fresh welcome"
        );
        inner.inbound.lost();
    }
}

/// Reads `<prefix>:epoch`, setting it first if it is missing. It is set
/// once by whichever instance comes first and never expires; it changes
/// only if Redis loses its data.
async fn read_epoch(inner: &Inner, conn: &mut Conn) -> Result<Bytes, LinkError> {
    let key = format!("{}:epoch", inner.settings.prefix);
    let mut fresh = [0u8; 16];
    getrandom::fill(&mut fresh).map_err(|e| LinkError(format!("no randomness: {e}")))?;
    let fresh: String = fresh.iter().map(|b| format!("{b:02x}")).collect();
    conn.ask(&[b"SET", key.as_bytes(), fresh.as_bytes(), b"NX"])
        .await?;
    conn.ask(&[b"GET", key.as_bytes()])
        .await?
        .as_bytes()
        .map(Bytes::copy_from_slice)
        .ok_or_else(|| LinkError("the epoch key vanished as it was set".into()))
}

/// Runs `opening` (of the `which` connection) within [`OPEN_TIMEOUT`].
async fn bounded<T>(
    inner: &Inner,
    which: &str,
    opening: impl Future<Output = Result<T, LinkError>>,
) -> Result<T, LinkError> {
    tokio::time::timeout(OPEN_TIMEOUT, opening)
        .await
        .map_err(|_| {
            LinkError(format!(
                "{} did not finish opening the {which} connection within {OPEN_TIMEOUT:?}",
                inner.settings.target.addr
            ))
        })?
}

async fn open_command(inner: &Inner) -> Result<(Opened, Vec<Bytes>), LinkError> {
    bounded(inner, "command", load_command(inner)).await
}

async fn load_command(inner: &Inner) -> Result<(Opened, Vec<Bytes>), LinkError> {
    let mut conn = Conn::open(&inner.settings.target, &inner.name("cmd")).await?;
    let epoch = read_epoch(inner, &mut conn).await?;
    // Pipelined: one round trip for all of them, so that opening fits its
    // bound on a link with a long round trip too.
    let mut out = Vec::new();
    for script in Script::ALL {
        resp::encode(&mut out, &[b"SCRIPT", b"LOAD", script.source().as_bytes()]);
    }
    conn.stream.write_all(&out).await?;
    let mut shas = Vec::with_capacity(Script::ALL.len());
    for _ in Script::ALL {
        let sha = match conn.read().await? {
            Value::Error(e) => return Err(LinkError(e)),
            reply => reply
                .as_bytes()
                .map(Bytes::copy_from_slice)
                .ok_or_else(|| LinkError("SCRIPT LOAD answered without a SHA".into()))?,
        };
        shas.push(sha);
    }
    Ok((Opened { conn, epoch }, shas))
}

async fn serve_commands(
    inner: &Inner,
    conn: Conn,
    shas: &[Bytes],
    rx: &mut mpsc::Receiver<Cmd>,
) -> LinkError {
    let mut waiting: VecDeque<Reply> = VecDeque::new();
    let err = exchange(inner, conn, shas, rx, &mut waiting).await;
    // Written and never answered: Redis may have run them, or may yet (a
    // stalled connection still delivers what it was given). Told apart
    // from what was queued and never written, which is dropped unsent.
    for reply in waiting {
        let _ = reply.send(Err(err.clone()));
    }
    err
}

/// Writes queued commands on `conn` and hands each reply to its caller in
/// order, until the connection fails; `waiting` holds the commands written
/// and not yet answered.
///
/// A connection whose peer is gone without a reset (a partition, a host
/// that died) would wait on its socket forever, and with every in-flight
/// slot taken nothing else would ever notice: callers give up, but what
/// they queued stays queued. So Redis must keep answering: with commands
/// waiting, [`SILENCE`] without a byte read (or a write that cannot get
/// through) ends the connection, which fails what was written in doubt
/// and refuses what was queued, and the link reconnects.
async fn exchange(
    inner: &Inner,
    mut conn: Conn,
    shas: &[Bytes],
    rx: &mut mpsc::Receiver<Cmd>,
    waiting: &mut VecDeque<Reply>,
) -> LinkError {
    let max_in_flight = inner.settings.max_in_flight();
    let mut out: Vec<u8> = Vec::with_capacity(16 << 10);
    // When Redis last showed it was alive while something was waiting:
    // the last read, or the first write after all had been answered.
    let mut heard = tokio::time::Instant::now();
    let encode = |out: &mut Vec<u8>, cmd: Cmd, waiting: &mut VecDeque<Reply>| {
        let mut args: Vec<&[u8]> = Vec::with_capacity(cmd.args.len() + 3);
        args.extend([&b"EVALSHA"[..], &shas[cmd.script.index()], b"0"]);
        args.extend(cmd.args.iter().map(|a| &a[..]));
        resp::encode(out, &args);
        waiting.push_back(cmd.reply);
    };
    loop {
        tokio::select! {
            cmd = rx.recv(), if waiting.len() < max_in_flight => {
                let Some(cmd) = cmd else {
                    return LinkError("the backbone stopped".into());
                };
                if waiting.is_empty() {
                    heard = tokio::time::Instant::now();
                }
                encode(&mut out, cmd, waiting);
                while waiting.len() < max_in_flight {
                    match rx.try_recv() {
                        Ok(cmd) => encode(&mut out, cmd, waiting),
                        Err(_) => break,
                    }
                }
                let deadline = heard + SILENCE;
                match tokio::time::timeout_at(deadline, conn.stream.write_all(&out)).await {
                    Err(_) => return stopped_answering(waiting.len()),
                    Ok(Err(e)) => return e.into(),
                    Ok(Ok(())) => {}
                }
                out.clear();
                if out.capacity() > 1 << 20 {
                    out = Vec::with_capacity(16 << 10);
                }
            }
            read = tokio::io::AsyncReadExt::read_buf(&mut conn.stream, &mut conn.buf) => {
                match read {
                    Ok(0) => return LinkError("Redis closed the connection".into()),
                    Err(e) => return e.into(),
                    Ok(_) => heard = tokio::time::Instant::now(),
                }
                loop {
                    let value = match conn.parse() {
                        Ok(Some(v)) => v,
                        Ok(None) => break,
                        Err(e) => return e,
                    };
                    let Some(reply) = waiting.pop_front() else {
                        return LinkError("Redis sent a reply nobody asked for".into());
                    };
                    let gone = match &value {
                        Value::Error(e) => unusable(e),
                        _ => None,
                    };
                    let _ = reply.send(Ok(value));
                    if let Some(why) = gone {
                        return why;
                    }
                }
            }
            () = tokio::time::sleep_until(heard + SILENCE), if !waiting.is_empty() => {
                return stopped_answering(waiting.len());
            }
        }
    }
}

/// An error reply that says this connection cannot serve the backbone any
/// more, though it still answers: the caller is refused (Redis ran
/// nothing), and the link reconnects. Someone ran `SCRIPT FLUSH`
/// (reconnecting loads the scripts again); or this Redis was demoted to a
/// replica, or is one that lost its master (a failover moved the primary:
/// reconnecting through the same address, a proxy or a DNS name that
/// follows the primary, finds the new one; until then the opening fails
/// and `/health` says so). Redis 7 passes a script's error on as it is;
/// older ones wrap it, after a `-`.
fn unusable(error: &str) -> Option<LinkError> {
    let says = |code: &str| error.starts_with(code) || error.contains(&format!("-{code} "));
    if says("NOSCRIPT") {
        Some(LinkError("Redis forgot the backbone's scripts".into()))
    } else if says("READONLY") || says("MASTERDOWN") {
        Some(LinkError(format!("Redis cannot take writes here: {error}")))
    } else {
        None
    }
}

fn stopped_answering(waiting: usize) -> LinkError {
    LinkError(format!(
        "Redis stopped answering ({waiting} commands unanswered for {SILENCE:?})"
    ))
}

// ---------------------------------------------------------------- pub/sub

async fn subscriber_task(inner: Arc<Inner>) {
    let mut backoff = MIN_BACKOFF;
    loop {
        let (err, served) = match open_subscriber(&inner).await {
            Ok(conn) => {
                let opened = tokio::time::Instant::now();
                let err = serve_subscriptions(&inner, conn).await;
                (err, opened.elapsed())
            }
            Err(e) => (e, Duration::ZERO),
        };
        backoff = next_backoff(backoff, served);
        {
            let mut s = lock(&inner.subs);
            s.up = false;
            let was_subscribed: Vec<String> = s
                .chans
                .iter()
                .filter(|(_, c)| c.subscribed)
                .map(|(room, _)| room.clone())
                .collect();
            s.remark.extend(was_subscribed);
            s.chans.clear();
            s.dirty = s.want.clone();
        }
        inner.subs_confirmed.notify_waiters();
        inner.set_down(false, &err);
        backoff_sleep(&mut backoff).await;
    }
}

/// Opens the pub/sub connection. It reads the epoch too before it
/// subscribes, so events of a numbering that started again (Redis lost its
/// data) are never taken for the old one's, whichever connection is back
/// first.
async fn open_subscriber(inner: &Inner) -> Result<Conn, LinkError> {
    let (conn, epoch) = bounded(inner, "pub/sub", async {
        let mut conn = Conn::open(&inner.settings.target, &inner.name("sub")).await?;
        let epoch = read_epoch(inner, &mut conn).await?;
        Ok((conn, epoch))
    })
    .await?;
    check_epoch(inner, &epoch);
    Ok(conn)
}

async fn serve_subscriptions(inner: &Arc<Inner>, mut conn: Conn) -> LinkError {
    {
        let mut s = lock(&inner.subs);
        s.up = true;
        s.dirty = s.want.clone();
        // A room left while the link was down needs no marker any more.
        let Subs { remark, want, .. } = &mut *s;
        remark.retain(|r| want.contains(r));
    }
    // Healthy only once every room with local members is subscribed again.
    let mut announced = false;
    let prefix = inner.channel_prefix();
    let every = (inner.settings.presence_ttl / 3).max(Duration::from_millis(100));
    let mut ping = tokio::time::interval(every);
    let mut unanswered = 0u32;
    let mut out = Vec::new();
    loop {
        {
            let mut s = lock(&inner.subs);
            let dirty: Vec<String> = s.dirty.drain().collect();
            for room in dirty {
                let want = s.want.contains(&room);
                if !want && !s.chans.contains_key(&room) {
                    continue; // wanted and unwanted before it was ever subscribed
                }
                let chan = s.chans.entry(room.clone()).or_default();
                if want == chan.subscribed {
                    continue;
                }
                let verb: &[u8] = if want { b"SUBSCRIBE" } else { b"UNSUBSCRIBE" };
                let name = format!("{prefix}{room}");
                resp::encode(&mut out, &[verb, name.as_bytes()]);
                chan.subscribed = want;
                chan.confirmed = false;
                chan.outstanding += 1;
            }
        }
        if !out.is_empty() {
            // Bounded as the command connection's writes are: while this
            // waits, nothing pings or reads, so a Redis that stopped
            // reading would hold the connection (and its rooms' events)
            // for good.
            match tokio::time::timeout(SILENCE, conn.stream.write_all(&out)).await {
                Err(_) => {
                    return LinkError(format!(
                        "Redis stopped reading the pub/sub connection (a write waited {SILENCE:?})"
                    ));
                }
                Ok(Err(e)) => return e.into(),
                Ok(Ok(())) => {}
            }
            out.clear();
        }
        if !announced {
            let s = lock(&inner.subs);
            if s.want
                .iter()
                .all(|r| s.chans.get(r).is_some_and(|c| c.confirmed))
            {
                drop(s);
                inner.set_up(false);
                announced = true;
            }
        }
        tokio::select! {
            () = inner.subs_changed.notified() => {}
            _ = ping.tick() => {
                if unanswered >= 2 {
                    return LinkError("no answer to PING on the pub/sub connection".into());
                }
                unanswered += 1;
                resp::encode(&mut out, &[b"PING"]);
            }
            read = tokio::io::AsyncReadExt::read_buf(&mut conn.stream, &mut conn.buf) => {
                match read {
                    Ok(0) => return LinkError("Redis closed the connection".into()),
                    Err(e) => return e.into(),
                    Ok(_) => unanswered = 0,
                }
                loop {
                    match conn.parse() {
                        Ok(Some(v)) => on_push(inner, &prefix, &v),
                        Ok(None) => break,
                        Err(e) => return e,
                    }
                }
            }
        }
    }
}

fn on_push(inner: &Arc<Inner>, prefix: &str, v: &Value) {
    let items = v.items();
    let kind = items.first().and_then(Value::as_bytes).unwrap_or_default();
    let room = items
        .get(1)
        .and_then(Value::as_bytes)
        .and_then(|c| std::str::from_utf8(c).ok())
        .and_then(|c| c.strip_prefix(prefix));
    match (kind, room) {
        (b"message", Some(room)) => {
            let payload = items.get(2).and_then(Value::as_bytes).unwrap_or_default();
            dispatch(&inner.inbound, room, payload);
        }
        (b"subscribe" | b"unsubscribe", Some(room)) => {
            let (confirmed, remark) = {
                let mut s = lock(&inner.subs);
                let Some(chan) = s.chans.get_mut(room) else {
                    return;
                };
                chan.outstanding = chan.outstanding.saturating_sub(1);
                if chan.outstanding > 0 {
                    (false, false)
                } else if chan.subscribed {
                    chan.confirmed = true;
                    (true, s.remark.remove(room))
                } else {
                    s.chans.remove(room);
                    s.remark.remove(room);
                    (false, false)
                }
            };
            if confirmed {
                inner.subs_confirmed.notify_waiters();
            }
            if remark {
                // Events may have been published while we were away: a
                // marker tells the hub how far the room has gone. The
                // heartbeat asks for it, again until Redis answers.
                lock(&inner.marks_due).insert(room.to_owned());
                inner.wake_heartbeat.notify_one();
            }
        }
        _ => {} // pong and anything else: liveness only
    }
}

/// Decodes one published payload (see [`scripts`]) and hands it to the hub.
fn dispatch(inbound: &Inbound, room: &str, payload: &[u8]) {
    let number = |b: &[u8]| {
        std::str::from_utf8(b)
            .ok()
            .and_then(|s| s.parse::<u64>().ok())
    };
    if let Some(rest) = payload.strip_prefix(b"s") {
        if let Some(ev) = number(rest) {
            inbound.mark(room, ev);
        }
        return;
    }
    let parsed = payload.iter().position(|b| *b == b'\n').and_then(|nl| {
        let (head, body) = (&payload[..nl], &payload[nl + 1..]);
        let body = std::str::from_utf8(body).ok()?;
        match head.iter().position(|b| *b == b'\t') {
            Some(t) => Some((
                number(&head[..t])?,
                Some(std::str::from_utf8(&head[t + 1..]).ok()?),
                body,
            )),
            None => Some((number(head)?, None, body)),
        }
    });
    match parsed {
        Some((ev, skip, body)) => inbound.deliver(room, ev, skip, body),
        None => tracing::warn!("ignoring a malformed event on room {room:?}"),
    }
}

/// [`Link::call`] for the link's own tasks, which hold only the inner state.
struct LinkRef<'a>(&'a Inner);

impl LinkRef<'_> {
    fn call(
        &self,
        script: Script,
        args: &[&[u8]],
    ) -> Result<oneshot::Receiver<Result<Value, LinkError>>, Unavailable> {
        let (reply, rx) = oneshot::channel();
        let mut all = Vec::with_capacity(args.len() + 1);
        all.push(Bytes::copy_from_slice(self.0.settings.prefix.as_bytes()));
        all.extend(args.iter().map(|a| Bytes::copy_from_slice(a)));
        self.0
            .queue
            .try_send(Cmd {
                script,
                args: all,
                reply,
            })
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => {
                    Unavailable("the chat backbone is overloaded; try again shortly".into())
                }
                mpsc::error::TrySendError::Closed(_) => {
                    Unavailable("the chat backbone has stopped".into())
                }
            })?;
        Ok(rx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_connection_that_stayed_up_starts_the_pauses_again() {
        let grown = Duration::from_secs(2);
        // It never opened, or died at once: the pause keeps growing.
        assert_eq!(next_backoff(grown, Duration::ZERO), grown);
        assert_eq!(next_backoff(grown, Duration::from_millis(50)), grown);
        // It served a while: a new outage starts from the shortest pause.
        assert_eq!(next_backoff(grown, STAYED_UP), MIN_BACKOFF);
    }

    /// A Redis that stops reading the pub/sub connection: the write that
    /// would wait on it for good (and with it the pings and reads) gives
    /// up after [`SILENCE`], as the command connection's writes do, so the
    /// link reconnects. Paused time: the runtime skips to the next timer
    /// once the write is stuck, so nothing here waits for real.
    #[tokio::test(start_paused = true)]
    async fn a_pubsub_write_redis_never_reads_fails_the_connection() {
        let listener = tokio::net::TcpSocket::new_v4().unwrap();
        listener.set_recv_buffer_size(4096).unwrap();
        listener.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let listener = listener.listen(1).unwrap();
        let addr = listener.local_addr().unwrap();
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_send_buffer_size(4096).unwrap();
        let stream = socket.connect(addr).await.unwrap();
        // Accepted, and never read.
        let (_redis, _) = listener.accept().await.unwrap();
        let settings = Settings {
            target: Target::parse(&format!("redis://{addr}")).unwrap(),
            prefix: "p".into(),
            presence_ttl: Duration::from_secs(3),
            online_list_cap: 100,
            empty_room_ttl: Duration::from_secs(60),
            queue: 16,
        };
        let (inner, _requests) = Inner::new(settings, Inbound::nowhere());
        // Subscriptions to far more than the sockets' buffers hold.
        lock(&inner.subs)
            .want
            .extend((0..2000).map(|i| format!("{i:0>1000}")));
        let served = tokio::time::timeout(
            SILENCE * 10,
            serve_subscriptions(&inner, Conn::wrap(stream)),
        )
        .await;
        let err = served.expect("the write waited on a Redis that never reads");
        assert!(err.0.contains("stopped reading"), "{err}");
    }
}
