//! A load generator for roomcast (or any server speaking the same subset of
//! its protocol, like `examples/baseline_broadcast.rs`): R rooms × N clients
//! over real WebSockets to one address, S of them sending at a target total
//! rate, end-to-end latency from a send timestamp carried in each message's
//! content, and loss counted as expected minus received deliveries.
//!
//! ```text
//! cargo run --release --example loadgen -- fanout --clients 1000 --senders 10 --rate 100,200 --server-pid PID
//! cargo run --release --example loadgen -- rooms --rooms 100 --clients 10 --senders 100 --rate 200
//! cargo run --release --example loadgen -- idle --rooms 100 --clients 100 --server-pid PID
//! cargo run --release --example loadgen -- churn --rate 200 --server-pid PID
//! cargo run --release --example loadgen -- calibrate
//! ```
//!
//! The clients are deliberately thin (a hand-written WebSocket reader on one
//! single-threaded runtime) so the generator costs less CPU per delivery than
//! the server it measures; it prints its own CPU use so you can tell. Start
//! the server with a generous `--rate` (`0`: no limit) and `--max-connections`,
//! and without the per-address limits (every client here is on 127.0.0.1):
//! `--max-connections-per-address 0 --max-http-per-address 0 --joins-per-minute 0`.

use std::cell::{Cell, RefCell};
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::Semaphore;

const HELP: &str = "\
loadgen: drive roomcast (or the baseline server) over real WebSockets

USAGE: loadgen MODE [OPTIONS]

MODES
  fanout      1 room x --clients members, --senders of them sending
  rooms       --rooms rooms x --clients members each, --senders spread over rooms
  idle        --rooms x --clients idle connections; reports server KiB per connection
  churn       connect, read welcome, close, at --rate connections/s
  calibrate   CPU cost of one small write() to a loopback TCP socket

OPTIONS
  --addr A          server address                      [127.0.0.1:8000]
  --rooms R         rooms (fanout: always 1)            [1]
  --clients N       clients per room                    [1000]
  --senders S       sending clients in total            [10]
  --rate LIST       total messages/s (churn: connects/s); a comma list runs
                    one step per rate on the same connections  [100]
  --duration SECS   length of each step (idle: how long to hold)  [10]
  --size BYTES      message content length (calibrate: write size)  [64]
  --server-pid PID  report server CPU per delivery and RSS per connection
  --concurrency C   handshakes in flight while connecting  [256]
  --burst           all senders in phase: S messages arrive together each
                    period (default: spread evenly over the period)
  --token-secret S  token mode: each connection presents a JWT signed with S
                    (the server's --auth-secret-file contents or AUTH_SECRET)
  --spin            never sleep in epoll_wait (uses a whole CPU): the server's
                    writes then find the generator awake, as a busy client
                    would be, and pay no cross-CPU wake-up
  --stop-p99 MS     end the rate list after a step whose p99 is over MS or
                    that lost a delivery (later, higher rates would only be worse)
";

// ---------------------------------------------------------------- options

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    Fanout,
    Rooms,
    Idle,
    Churn,
    Calibrate,
}

struct Args {
    mode: Mode,
    addr: SocketAddr,
    rooms: usize,
    clients: usize,
    senders: usize,
    rates: Vec<f64>,
    duration: Duration,
    size: usize,
    server_pid: Option<u32>,
    concurrency: usize,
    spin: bool,
    burst: bool,
    stop_p99_ms: Option<f64>,
    token_secret: Option<roomcast::auth::Secret>,
}

fn parse_args() -> Result<Args, lexopt::Error> {
    use lexopt::prelude::*;
    let mut mode = None;
    let mut args = Args {
        mode: Mode::Fanout,
        addr: "127.0.0.1:8000".parse().expect("literal address"),
        rooms: 1,
        clients: 1000,
        senders: 10,
        rates: vec![100.0],
        duration: Duration::from_secs(10),
        size: 64,
        server_pid: None,
        concurrency: 256,
        spin: false,
        burst: false,
        stop_p99_ms: None,
        token_secret: None,
    };
    let mut parser = lexopt::Parser::from_env();
    while let Some(arg) = parser.next()? {
        match arg {
            Short('h') | Long("help") => {
                print!("{HELP}");
                std::process::exit(0);
            }
            Value(v) if mode.is_none() => {
                mode = Some(match v.to_str() {
                    Some("fanout") => Mode::Fanout,
                    Some("rooms") => Mode::Rooms,
                    Some("idle") => Mode::Idle,
                    Some("churn") => Mode::Churn,
                    Some("calibrate") => Mode::Calibrate,
                    _ => return Err(format!("unknown mode {v:?}; see --help").into()),
                });
            }
            Long("addr") => args.addr = parser.value()?.parse()?,
            Long("rooms") => args.rooms = parser.value()?.parse()?,
            Long("clients") => args.clients = parser.value()?.parse()?,
            Long("senders") => args.senders = parser.value()?.parse()?,
            Long("rate") => {
                let list: String = parser.value()?.parse()?;
                args.rates = list
                    .split(',')
                    .map(|r| r.trim().parse::<f64>())
                    .collect::<Result<_, _>>()
                    .map_err(|e| format!("--rate {list:?}: {e}"))?;
            }
            Long("duration") => {
                args.duration = Duration::from_secs_f64(parser.value()?.parse()?);
            }
            Long("size") => args.size = parser.value()?.parse()?,
            Long("server-pid") => args.server_pid = Some(parser.value()?.parse()?),
            Long("concurrency") => args.concurrency = parser.value()?.parse()?,
            Long("spin") => args.spin = true,
            Long("token-secret") => {
                let secret: String = parser.value()?.parse()?;
                args.token_secret = Some(
                    roomcast::auth::Secret::new(secret.into_bytes())
                        .map_err(|e| lexopt::Error::Custom(e.into()))?,
                );
            }
            Long("burst") => args.burst = true,
            Long("stop-p99") => args.stop_p99_ms = Some(parser.value()?.parse()?),
            _ => return Err(arg.unexpected()),
        }
    }
    args.mode = mode.ok_or("a MODE is required; see --help")?;
    if args.mode == Mode::Fanout {
        args.rooms = 1;
    }
    args.senders = args.senders.clamp(1, args.rooms * args.clients);
    Ok(args)
}

// ------------------------------------------------------ process accounting

/// Raises the soft open-file limit to the hard limit; returns the new soft limit.
fn raise_nofile() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 0;
        }
        lim.rlim_cur = lim.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
    }
    lim.rlim_cur
}

/// User + system CPU time of a process in µs, from `/proc/<pid>/stat`
/// (clock-tick resolution, usually 10 ms).
fn proc_cpu_us(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start at field 3.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Some((utime + stime) * 1_000_000 / hz)
}

/// Resident set size of a process in KiB, from `/proc/<pid>/status`.
fn proc_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// This process's user + system CPU time in µs.
fn self_cpu_us() -> u64 {
    // SAFETY: getrusage writes into the zeroed struct we pass.
    let ru = unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut ru);
        ru
    };
    let us = |t: libc::timeval| t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64;
    us(ru.ru_utime) + us(ru.ru_stime)
}

/// The calling thread's CPU time in ns.
fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the struct we pass.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// CPU used by the server and by us over a window.
struct CpuWindow {
    server_pid: Option<u32>,
    server_us: Option<u64>,
    self_us: u64,
    wall: Instant,
}

impl CpuWindow {
    fn start(server_pid: Option<u32>) -> Self {
        Self {
            server_pid,
            server_us: server_pid.and_then(proc_cpu_us),
            self_us: self_cpu_us(),
            wall: Instant::now(),
        }
    }

    /// (server CPU µs, server CPU %, our CPU %, wall seconds) since `start`.
    fn stop(&self) -> (Option<u64>, Option<f64>, f64, f64) {
        let wall = self.wall.elapsed().as_secs_f64();
        let server = match (self.server_pid.and_then(proc_cpu_us), self.server_us) {
            (Some(now), Some(then)) => Some(now.saturating_sub(then)),
            _ => None,
        };
        let ours = (self_cpu_us() - self.self_us) as f64;
        (
            server,
            server.map(|us| us as f64 / wall / 1e4),
            ours / wall / 1e4,
            wall,
        )
    }
}

// ------------------------------------------------------- a thin WS client

/// Opens a WebSocket to `path`; returns the halves and a frame reader
/// holding any bytes that came in with the handshake response.
async fn connect(
    addr: SocketAddr,
    path: &str,
) -> io::Result<(OwnedReadHalf, OwnedWriteHalf, FrameReader)> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (mut rd, mut wr) = stream.into_split();
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: bG9hZGdlbi1rZXktMDAwMQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    wr.write_all(req.as_bytes()).await?;
    let mut reader = FrameReader::new();
    let end = loop {
        if let Some(at) = reader.filled().windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        if reader.len > 8192 || !reader.fill(&mut rd).await? {
            return Err(io::Error::other("connection closed during the handshake"));
        }
    };
    if !reader.filled().starts_with(b"HTTP/1.1 101") {
        let head = String::from_utf8_lossy(&reader.filled()[..end]);
        let line = head.lines().next().unwrap_or_default().to_owned();
        return Err(io::Error::other(format!("upgrade refused: {line}")));
    }
    reader.consume(end);
    Ok((rd, wr, reader))
}

/// Appends one masked client text frame carrying `payload`.
fn push_client_frame(out: &mut Vec<u8>, opcode: u8, payload: &[u8]) {
    const MASK: [u8; 4] = [0x5a, 0x17, 0xc3, 0x88];
    out.push(0x80 | opcode);
    match payload.len() {
        n if n < 126 => out.push(0x80 | n as u8),
        n if n <= u16::MAX as usize => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(0x80 | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(&MASK);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ MASK[i % 4]));
}

/// Buffers server frames (never masked) and hands out complete ones.
struct FrameReader {
    buf: Vec<u8>,
    len: usize,
}

impl FrameReader {
    fn new() -> Self {
        Self {
            buf: vec![0; 4096],
            len: 0,
        }
    }

    fn filled(&self) -> &[u8] {
        &self.buf[..self.len]
    }

    fn consume(&mut self, n: usize) {
        self.buf.copy_within(n..self.len, 0);
        self.len -= n;
    }

    /// One `read` into the free space (growing it if full); false at EOF.
    async fn fill(&mut self, rd: &mut OwnedReadHalf) -> io::Result<bool> {
        if self.len == self.buf.len() {
            self.buf.resize(self.buf.len() * 2, 0);
        }
        let n = rd.read(&mut self.buf[self.len..]).await?;
        self.len += n;
        Ok(n > 0)
    }

    /// Calls `f(opcode, payload)` for every complete buffered frame;
    /// returns how many there were.
    fn parse(&mut self, f: &mut impl FnMut(u8, &[u8])) -> usize {
        let (mut pos, mut count) = (0, 0);
        loop {
            let b = &self.buf[pos..self.len];
            if b.len() < 2 {
                break;
            }
            let (head, plen) = match b[1] & 0x7f {
                126 if b.len() >= 4 => (4, u16::from_be_bytes([b[2], b[3]]) as usize),
                127 if b.len() >= 10 => {
                    let n = u64::from_be_bytes(b[2..10].try_into().expect("8 bytes"));
                    (10, n as usize)
                }
                126 | 127 => break,
                n => (2, n as usize),
            };
            if b.len() < head + plen {
                if head + plen > self.buf.len() {
                    self.buf.resize(head + plen, 0);
                }
                break;
            }
            f(b[0] & 0x0f, &b[head..head + plen]);
            pos += head + plen;
            count += 1;
        }
        self.consume(pos);
        count
    }

    /// Hands buffered complete frames to `f`, or reads once and hands over
    /// what completed. Returns false at end of stream. Cancel-safe.
    async fn read_frames(
        &mut self,
        rd: &mut OwnedReadHalf,
        mut f: impl FnMut(u8, &[u8]),
    ) -> io::Result<bool> {
        if self.parse(&mut f) > 0 {
            return Ok(true);
        }
        if !self.fill(rd).await? {
            return Ok(false);
        }
        self.parse(&mut f);
        Ok(true)
    }
}

// ------------------------------------------------------------ shared state

/// One sending step: every sender sends `per_sender` messages/s from
/// `start` until `end`, sender i of S shifted by i/S of its period so the
/// total rate arrives evenly spaced rather than in bursts of S.
#[derive(Clone, Copy)]
struct Step {
    per_sender: f64,
    start: Instant,
    end: Instant,
}

struct Shared {
    addr: SocketAddr,
    epoch: Instant,
    run_id: u32,
    /// Token mode: each connection presents a token signed with this.
    token_secret: Option<roomcast::auth::Secret>,
    content_pad: usize,
    connect_permits: Semaphore,
    step: Cell<Option<Step>>,
    /// Members currently connected (welcomed and not closed), per room.
    alive: Vec<Cell<u64>>,
    welcomed: Cell<usize>,
    failed: Cell<usize>,
    closed: Cell<usize>,
    close_codes: RefCell<Vec<u16>>,
    sent: Cell<u64>,
    expected: Cell<u64>,
    received: Cell<u64>,
    frames: Cell<u64>,
    last_frame: Cell<Instant>,
    latency_us: RefCell<Histogram<u64>>,
    first_error: RefCell<Option<String>>,
    /// `error` events the server sent this step (a post it refused shows
    /// up as lost deliveries; this says why), and the first one's text.
    refused: Cell<u64>,
    first_refusal: RefCell<Option<String>>,
}

impl Shared {
    fn new(args: &Args) -> Self {
        Self {
            addr: args.addr,
            epoch: Instant::now(),
            run_id: std::process::id(),
            token_secret: args.token_secret.clone(),
            content_pad: args.size,
            connect_permits: Semaphore::new(args.concurrency.max(1)),
            step: Cell::new(None),
            alive: (0..args.rooms).map(|_| Cell::new(0)).collect(),
            welcomed: Cell::new(0),
            failed: Cell::new(0),
            closed: Cell::new(0),
            close_codes: RefCell::new(Vec::new()),
            sent: Cell::new(0),
            expected: Cell::new(0),
            received: Cell::new(0),
            frames: Cell::new(0),
            last_frame: Cell::new(Instant::now()),
            latency_us: RefCell::new(
                Histogram::new_with_bounds(1, 120_000_000, 3).expect("valid histogram bounds"),
            ),
            first_error: RefCell::new(None),
            refused: Cell::new(0),
            first_refusal: RefCell::new(None),
        }
    }

    fn fail(&self, what: String) {
        self.failed.set(self.failed.get() + 1);
        self.first_error.borrow_mut().get_or_insert(what);
    }

    fn path(&self, room: usize, user: usize) -> String {
        let path = format!("/ws/lg{}-r{room}/u{user}", self.run_id);
        match &self.token_secret {
            None => path,
            Some(secret) => {
                let now = roomcast::auth::now();
                let sub = format!("u{user}");
                let token = roomcast::auth::jwt::sign(
                    &roomcast::auth::jwt::Issue {
                        sub: &sub,
                        rooms: &[],
                        moderator: false,
                        iat: now,
                        exp: now + 3600,
                    },
                    secret,
                );
                format!("{path}?token={token}")
            }
        }
    }

    /// Nanoseconds since the generator started: the send stamp.
    fn now_ns(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    fn bump(cell: &Cell<u64>, by: u64) {
        cell.set(cell.get() + by);
    }
}

// Field order is not significant in the protocol (a server using the Redis
// backbone writes events in another order), so these are searched for, not
// expected at the start. The generator's own content never contains them.
const MESSAGE_TYPE: &[u8] = br#""type":"message""#;
const WELCOME_TYPE: &[u8] = br#""type":"welcome""#;
const STAMP: &[u8] = br#""content":"LG "#;
const ERROR_TYPE: &[u8] = br#""type":"error""#;

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Parses the send stamp out of a `message` event's payload.
fn stamp_of(payload: &[u8]) -> Option<u64> {
    if !contains(payload, MESSAGE_TYPE) {
        return None;
    }
    let at = payload.windows(STAMP.len()).position(|w| w == STAMP)? + STAMP.len();
    let digits = payload[at..].iter().take_while(|b| b.is_ascii_digit());
    Some(digits.fold(0u64, |n, d| n * 10 + u64::from(d - b'0')))
}

/// One client: connect, read everything promptly, answer pings, and send
/// on the step's schedule if it is a sender (`phase`: its offset within its
/// sending period, in periods).
async fn client(shared: Rc<Shared>, room: usize, user: usize, phase: Option<f64>) {
    let sender = phase.is_some();
    let phase = phase.unwrap_or(0.0);
    let permit = shared
        .connect_permits
        .acquire()
        .await
        .expect("never closed");
    let (mut rd, mut wr, mut reader) = match connect(shared.addr, &shared.path(room, user)).await {
        Ok(c) => c,
        Err(e) => return shared.fail(e.to_string()),
    };
    let mut welcomed = false;
    let mut permit = Some(permit);
    let mut out = Vec::with_capacity(1024);
    let mut pongs: Vec<Vec<u8>> = Vec::new();
    let mut close_code = None;
    let mut sent_in_step = 0u64;
    let mut step_start = None;
    loop {
        // When the next message is due (senders in a running step only).
        let due = match (sender, shared.step.get()) {
            (true, Some(step)) => {
                if step_start != Some(step.start) {
                    step_start = Some(step.start);
                    sent_in_step = 0;
                }
                let at = step.start
                    + Duration::from_secs_f64((sent_in_step as f64 + phase) / step.per_sender);
                (at < step.end).then_some((at, step))
            }
            _ => None,
        };
        let idle_check = Instant::now() + Duration::from_millis(20);
        tokio::select! {
            read = reader.read_frames(&mut rd, |opcode, payload| {
                Shared::bump(&shared.frames, 1);
                match opcode {
                    0x1 => {
                        if let Some(stamp) = stamp_of(payload) {
                            let us = shared.now_ns().saturating_sub(stamp) / 1000;
                            shared.latency_us.borrow_mut().saturating_record(us.max(1));
                            Shared::bump(&shared.received, 1);
                        } else if !welcomed && contains(payload, WELCOME_TYPE) {
                            welcomed = true;
                        } else if contains(payload, ERROR_TYPE) {
                            Shared::bump(&shared.refused, 1);
                            shared
                                .first_refusal
                                .borrow_mut()
                                .get_or_insert_with(|| String::from_utf8_lossy(payload).into_owned());
                        }
                    }
                    0x8 => close_code = Some(payload.get(..2).map_or(1005, |c| u16::from_be_bytes([c[0], c[1]]))),
                    0x9 => pongs.push(payload.to_vec()),
                    _ => {}
                }
            }) => {
                shared.last_frame.set(Instant::now());
                match read {
                    Ok(true) if close_code.is_none() => {}
                    other => {
                        if let Err(e) = other {
                            shared.first_error.borrow_mut().get_or_insert(e.to_string());
                        }
                        break;
                    }
                }
                if welcomed && permit.is_some() {
                    permit = None;
                    shared.welcomed.set(shared.welcomed.get() + 1);
                    Shared::bump(&shared.alive[room], 1);
                }
                if !pongs.is_empty() {
                    out.clear();
                    for p in pongs.drain(..) {
                        push_client_frame(&mut out, 0xA, &p);
                    }
                    if wr.write_all(&out).await.is_err() {
                        break;
                    }
                }
            }
            // Senders only: the next message is due (or, between steps, look again).
            _ = tokio::time::sleep_until(due.map_or(idle_check, |(at, _)| at).into()), if sender => {
                let Some((_, step)) = due else { continue };
                // Send everything due by now in one write.
                let now = Instant::now();
                let elapsed = (now.min(step.end) - step.start).as_secs_f64();
                let target = (elapsed * step.per_sender - phase).max(0.0) as u64 + 1;
                out.clear();
                let stamp = shared.now_ns();
                let n = target.saturating_sub(sent_in_step).max(1);
                let mut content = format!("LG {stamp} ");
                let pad = shared.content_pad.saturating_sub(content.len());
                content.extend(std::iter::repeat_n('x', pad));
                let msg = format!(r#"{{"type":"message","content":"{content}"}}"#);
                for _ in 0..n {
                    push_client_frame(&mut out, 0x1, msg.as_bytes());
                }
                sent_in_step += n;
                Shared::bump(&shared.sent, n);
                Shared::bump(&shared.expected, n * shared.alive[room].get());
                if let Err(e) = wr.write_all(&out).await {
                    shared.first_error.borrow_mut().get_or_insert(e.to_string());
                    break;
                }
            }
        }
    }
    if welcomed {
        shared.alive[room].set(shared.alive[room].get() - 1);
        shared.closed.set(shared.closed.get() + 1);
        if let Some(code) = close_code {
            shared.close_codes.borrow_mut().push(code);
        }
    } else {
        shared.fail(format!("closed before welcome (close code {close_code:?})"));
    }
}

// -------------------------------------------------------------- the modes

/// Connects every client and waits for their welcomes and the join storm.
async fn connect_all(shared: &Rc<Shared>, args: &Args) -> Duration {
    let total = args.rooms * args.clients;
    let started = Instant::now();
    for i in 0..total {
        let (room, user) = (i % args.rooms, i / args.rooms);
        // Senders are spread over rooms: the first S clients in round-robin order.
        // Each sender's phase in its period: spread evenly, or all at 0.
        let spread = if args.burst {
            0.0
        } else {
            1.0 / args.senders as f64
        };
        let phase = (args.mode != Mode::Idle && i < args.senders).then_some(i as f64 * spread);
        tokio::task::spawn_local(client(Rc::clone(shared), room, user, phase));
    }
    while shared.welcomed.get() + shared.failed.get() < total {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let took = started.elapsed();
    // Let the join/leave storm drain: wait for 300 ms without a frame.
    let deadline = Instant::now() + Duration::from_secs(30);
    while shared.last_frame.get().elapsed() < Duration::from_millis(300)
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if shared.failed.get() > 0 {
        eprintln!(
            "{} of {total} clients failed to connect; first error: {}",
            shared.failed.get(),
            shared.first_error.borrow().as_deref().unwrap_or("?")
        );
    }
    took
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

async fn run_load(args: &Args) {
    let shared = Rc::new(Shared::new(args));
    let rss_before = args.server_pid.and_then(proc_rss_kib);
    let took = connect_all(&shared, args).await;
    let conns = shared.welcomed.get();
    println!(
        "# {:?}: {} rooms x {} clients = {conns} connected in {:.1}s, {} senders, content {} B, {} s per step",
        args.mode,
        args.rooms,
        args.clients,
        took.as_secs_f64(),
        args.senders,
        args.size,
        args.duration.as_secs_f64()
    );
    if let (Some(before), Some(after)) = (rss_before, args.server_pid.and_then(proc_rss_kib)) {
        println!(
            "# server RSS {before} -> {after} KiB: {:.1} KiB per connection",
            (after.saturating_sub(before)) as f64 / conns.max(1) as f64
        );
    }
    println!(
        "| target msg/s | sent | expected | received | lost | deliveries/s | min ms | p50 ms | p99 ms | p99.9 ms | max ms | server CPU % | server µs/delivery | loadgen CPU % | closed |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for &rate in &args.rates {
        for c in [
            &shared.sent,
            &shared.expected,
            &shared.received,
            &shared.refused,
        ] {
            c.set(0);
        }
        shared.first_refusal.take();
        shared.latency_us.borrow_mut().reset();
        let cpu = CpuWindow::start(args.server_pid);
        let start = Instant::now() + Duration::from_millis(50);
        let end = start + args.duration;
        shared.step.set(Some(Step {
            per_sender: rate / args.senders as f64,
            start,
            end,
        }));
        tokio::time::sleep_until(end.into()).await;
        // Wait for stragglers: everything expected, or 5 s.
        let drain = Instant::now() + Duration::from_secs(5);
        while shared.received.get() < shared.expected.get() && Instant::now() < drain {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        shared.step.set(None);
        let (server_us, server_pct, self_pct, wall) = cpu.stop();
        let (sent, expected, received) = (
            shared.sent.get(),
            shared.expected.get(),
            shared.received.get(),
        );
        let h = shared.latency_us.borrow();
        let q = |q: f64| ms(h.value_at_quantile(q));
        println!(
            "| {rate} | {sent} | {expected} | {received} | {} | {:.0} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {} | {} | {self_pct:.0} | {} |",
            expected.saturating_sub(received),
            received as f64 / args.duration.as_secs_f64(),
            ms(h.min()),
            q(0.5),
            q(0.99),
            q(0.999),
            ms(h.max()),
            server_pct.map_or("-".into(), |p| format!("{p:.0}")),
            server_us.map_or("-".into(), |us| format!(
                "{:.2}",
                us as f64 / received.max(1) as f64
            )),
            shared.closed.get(),
        );
        let _ = wall;
        if shared.refused.get() > 0 {
            println!(
                "# the server sent {} errors (refused posts are lost deliveries); the first: {}",
                shared.refused.get(),
                shared.first_refusal.borrow().as_deref().unwrap_or("?")
            );
        }
        if shared.closed.get() > 0 {
            println!(
                "# {} clients were closed by the server (codes {:?}); stopping",
                shared.closed.get(),
                shared.close_codes.borrow()
            );
            break;
        }
        let lost = expected.saturating_sub(received);
        if let Some(limit) = args.stop_p99_ms.filter(|&l| lost > 0 || q(0.99) > l) {
            println!("# p99 over {limit} ms or deliveries lost; stopping");
            break;
        }
    }
}

async fn run_idle(args: &Args) {
    let shared = Rc::new(Shared::new(args));
    let pid = args.server_pid;
    let rss_before = pid.and_then(proc_rss_kib);
    let cpu = CpuWindow::start(pid);
    let took = connect_all(&shared, args).await;
    let conns = shared.welcomed.get();
    let (connect_cpu, ..) = cpu.stop();
    let rss_connected = pid.and_then(proc_rss_kib);
    let cpu = CpuWindow::start(pid);
    tokio::time::sleep(args.duration).await;
    let (idle_cpu, idle_pct, ..) = cpu.stop();
    let rss_after = pid.and_then(proc_rss_kib);
    println!(
        "# idle: {} rooms x {} clients = {conns} connected in {:.1}s ({} failed)",
        args.rooms,
        args.clients,
        took.as_secs_f64(),
        shared.failed.get()
    );
    if let (Some(b), Some(c), Some(a)) = (rss_before, rss_connected, rss_after) {
        let per = |x: u64| x.saturating_sub(b) as f64 / conns.max(1) as f64;
        println!(
            "# server RSS before {b} KiB, connected {c} KiB, after {:.0}s idle {a} KiB",
            args.duration.as_secs_f64()
        );
        println!(
            "| connections | KiB/conn (connected) | KiB/conn (after idle) | server CPU µs per connect | server CPU % idle |"
        );
        println!("|---|---|---|---|---|");
        println!(
            "| {conns} | {:.1} | {:.1} | {} | {} |",
            per(c),
            per(a),
            connect_cpu.map_or("-".into(), |us| format!(
                "{:.0}",
                us as f64 / conns.max(1) as f64
            )),
            idle_pct.map_or("-".into(), |p| format!("{p:.1}")),
        );
        let _ = idle_cpu;
    }
    if shared.closed.get() > 0 {
        println!(
            "# {} connections were closed by the server",
            shared.closed.get()
        );
    }
}

/// One churn cycle: connect, wait for welcome, send a close frame, wait for
/// the server's close (so the server side closes first).
async fn churn_once(addr: SocketAddr, path: &str) -> io::Result<()> {
    let (mut rd, mut wr, mut reader) = connect(addr, path).await?;
    let mut welcomed = false;
    while !welcomed {
        if !reader
            .read_frames(&mut rd, |op, p| {
                welcomed |= op == 1 && contains(p, WELCOME_TYPE)
            })
            .await?
        {
            return Err(io::Error::other("closed before welcome"));
        }
    }
    let mut out = Vec::new();
    push_client_frame(&mut out, 0x8, &1000u16.to_be_bytes());
    wr.write_all(&out).await?;
    let mut closed = false;
    while !closed {
        if !reader
            .read_frames(&mut rd, |op, _| closed |= op == 8)
            .await?
        {
            break;
        }
    }
    Ok(())
}

async fn run_churn(args: &Args) {
    let rate = args.rates[0];
    let shared = Rc::new(Shared::new(args));
    let done = Rc::new(Cell::new(0u64));
    let cpu = CpuWindow::start(args.server_pid);
    let start = Instant::now();
    let end = start + args.duration;
    let mut started = 0u64;
    let mut tasks = tokio::task::JoinSet::new();
    while Instant::now() < end {
        let due = (start.elapsed().as_secs_f64() * rate) as u64;
        while started < due {
            let (shared, done) = (Rc::clone(&shared), Rc::clone(&done));
            let room = started as usize % args.rooms;
            let user = started as usize;
            tasks.spawn_local(async move {
                let t = Instant::now();
                match churn_once(shared.addr, &shared.path(room, user)).await {
                    Ok(()) => {
                        let us = t.elapsed().as_micros() as u64;
                        shared.latency_us.borrow_mut().saturating_record(us.max(1));
                        done.set(done.get() + 1);
                    }
                    Err(e) => shared.fail(e.to_string()),
                }
            });
            started += 1;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let _ = tokio::time::timeout(Duration::from_secs(10), async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    let (server_us, server_pct, self_pct, wall) = cpu.stop();
    let h = shared.latency_us.borrow();
    println!(
        "# churn: target {rate} connects/s for {:.0}s",
        args.duration.as_secs_f64()
    );
    println!(
        "| target/s | completed | failed | cycles/s | cycle p50 ms | cycle p99 ms | server CPU % | server µs/cycle | loadgen CPU % |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    println!(
        "| {rate} | {} | {} | {:.0} | {:.2} | {:.2} | {} | {} | {self_pct:.0} |",
        done.get(),
        shared.failed.get(),
        done.get() as f64 / wall,
        ms(h.value_at_quantile(0.5)),
        ms(h.value_at_quantile(0.99)),
        server_pct.map_or("-".into(), |p| format!("{p:.0}")),
        server_us.map_or("-".into(), |us| format!(
            "{:.0}",
            us as f64 / done.get().max(1) as f64
        )),
    );
    if let Some(e) = shared.first_error.borrow().as_deref() {
        println!("# first error: {e}");
    }
}

/// CPUs this process may run on.
fn allowed_cpus() -> Vec<usize> {
    // SAFETY: the set is plain data; sched_getaffinity fills it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of_val(&set), &mut set) != 0 {
            return Vec::new();
        }
        (0..libc::CPU_SETSIZE as usize)
            .filter(|&c| libc::CPU_ISSET(c, &set))
            .collect()
    }
}

/// Pins the calling thread to one CPU.
fn pin_thread(cpu: usize) {
    // SAFETY: as above; pid 0 is the calling thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set);
    }
}

/// What one writer pays, in CPU µs per call, to a loopback TCP socket whose
/// peer reads on another thread.
struct WriteCosts {
    /// One `size`-byte `write()`, back to back.
    single: f64,
    /// `writev()` of `n` separate `size`-byte slices, per `n` in [`BATCHES`].
    vectored: [f64; 2],
    /// The same `n` frames copied into one buffer, then one `write()`.
    copied: [f64; 2],
    /// A lone `write()` every millisecond, the peer asleep in between.
    lone: f64,
}

/// Frames per batch in the batched measurements.
const BATCHES: [usize; 2] = [16, 64];

fn calibrate_pair(size: usize, writer: usize, reader: usize) -> io::Result<WriteCosts> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let mut tx = std::net::TcpStream::connect(listener.local_addr()?)?;
    tx.set_nodelay(true)?;
    let (mut rx, _) = listener.accept()?;
    let reading = std::thread::spawn(move || {
        pin_thread(reader);
        let mut buf = vec![0u8; 256 << 10];
        while let Ok(n) = rx.read(&mut buf) {
            if n == 0 {
                break;
            }
        }
    });
    pin_thread(writer);
    // Separate allocations, as queued frames would be.
    let frames: Vec<Vec<u8>> = (0..64).map(|_| vec![b'x'; size.max(1)]).collect();
    let mut copy_buf: Vec<u8> = Vec::with_capacity(64 * size.max(1));
    // CPU µs per call of writing `batch` frames, as one writev (or one
    // copy and write when `copy`), `count` times.
    let mut measure = |count: u64, batch: usize, copy: bool| -> io::Result<f64> {
        let slices: Vec<io::IoSlice<'_>> = frames[..batch]
            .iter()
            .map(|f| io::IoSlice::new(f))
            .collect();
        let cpu0 = thread_cpu_ns();
        for _ in 0..count {
            if copy {
                copy_buf.clear();
                for f in &frames[..batch] {
                    copy_buf.extend_from_slice(f);
                }
                tx.write_all(&copy_buf)?;
            } else if batch == 1 {
                tx.write_all(&frames[0])?;
            } else {
                // Loopback takes the whole batch at once unless the peer lags.
                let n = tx.write_vectored(&slices)?;
                if n < size.max(1) * batch {
                    tx.write_all(&vec![b'x'; size.max(1) * batch - n])?;
                }
            }
        }
        Ok((thread_cpu_ns() - cpu0) as f64 / 1000.0 / count as f64)
    };
    measure(20_000, 1, false)?; // warm-up
    let single = measure(200_000, 1, false)?;
    let mut vectored = [0.0; 2];
    let mut copied = [0.0; 2];
    for (i, &n) in BATCHES.iter().enumerate() {
        vectored[i] = measure(50_000 / n as u64 * 16, n, false)?;
        copied[i] = measure(50_000 / n as u64 * 16, n, true)?;
    }
    let mut lone_ns = 0;
    for _ in 0..2000 {
        std::thread::sleep(Duration::from_millis(1));
        let cpu0 = thread_cpu_ns();
        tx.write_all(&frames[0])?;
        lone_ns += thread_cpu_ns() - cpu0;
    }
    drop(tx);
    let _ = reading.join();
    Ok(WriteCosts {
        single,
        vectored,
        copied,
        lone: lone_ns as f64 / 1000.0 / 2000.0,
    })
}

/// The cost to beat: CPU time of one small `write()` to a loopback TCP
/// socket whose peer reads promptly, with the peer on the same CPU and, if
/// this process may use two, on another one (as the load generator is
/// when it measures the server); and what batching frames saves, as a
/// `writev()` of separate frames or copied into one buffer.
fn calibrate(size: usize) -> io::Result<()> {
    let cpus = allowed_cpus();
    let first = cpus.first().copied().unwrap_or(0);
    let mut pairs = vec![(first, first)];
    if let Some(&second) = cpus.get(1) {
        pairs.push((first, second));
    }
    println!("# calibrate: loopback TCP, {size}-byte frames, CPU time of the writing thread");
    println!(
        "| writer CPU | reader CPU | write() back to back, µs | writev() of 16 frames | copy 16 + write() | writev() of 64 | copy 64 + write() | lone write() every 1 ms, µs |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for (writer, reader) in pairs {
        let c = calibrate_pair(size, writer, reader)?;
        println!(
            "| {writer} | {reader} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} |",
            c.single, c.vectored[0], c.copied[0], c.vectored[1], c.copied[1], c.lone
        );
    }
    Ok(())
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("loadgen: {e}");
            std::process::exit(2);
        }
    };
    let nofile = raise_nofile();
    let needed = (args.rooms * args.clients) as u64 + 64;
    if matches!(args.mode, Mode::Fanout | Mode::Rooms | Mode::Idle) && nofile < needed {
        eprintln!("loadgen: open-file limit is {nofile}, {needed} needed; expect connect failures");
    }
    if args.mode == Mode::Calibrate {
        if let Err(e) = calibrate(args.size) {
            eprintln!("loadgen: calibrate: {e}");
            std::process::exit(1);
        }
        return;
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async {
        if args.spin {
            // A task that is always ready keeps the runtime from parking:
            // it polls the sockets with a zero timeout instead.
            tokio::task::spawn_local(async {
                loop {
                    tokio::task::yield_now().await;
                }
            });
        }
        match args.mode {
            Mode::Fanout | Mode::Rooms => run_load(&args).await,
            Mode::Idle => run_idle(&args).await,
            Mode::Churn => run_churn(&args).await,
            Mode::Calibrate => unreachable!(),
        }
    });
    // Exit without closing every connection politely: the report is out.
    std::process::exit(0);
}
