//! A TCP proxy in front of a service (Redis, PostgreSQL) that a test can cut
//! and restore, so an outage of that service, for one instance only, lasts
//! exactly as long as the test wants; or freeze and thaw, so the service
//! hangs (its connections stay open and nothing passes) instead of failing;
//! or partition, so the open connections go silent for good, as when the
//! network loses a peer without a reset, and new ones are refused until
//! the proxy is restored. A test can wait until a client's request is held
//! by a freeze, and until that client hangs up, both seen at the proxy (no
//! guess at how long either takes).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::TIMEOUT;

pub struct Proxy {
    /// Where clients connect instead of the service.
    pub addr: SocketAddr,
    up: Arc<AtomicBool>,
    /// Which connections pass bytes; those that do not hold what they read.
    flowing: watch::Sender<Flow>,
    /// What clients did while held.
    seen: watch::Sender<Seen>,
    /// The number the next connection gets.
    next: Arc<AtomicU64>,
    conns: Arc<Mutex<Vec<JoinHandle<()>>>>,
    accept: JoinHandle<()>,
}

/// Which connections pass bytes.
#[derive(Clone, Copy)]
struct Flow {
    /// `false` while frozen: none does.
    thawed: bool,
    /// Connections numbered below this were partitioned: never again.
    lost_below: u64,
}

impl Flow {
    fn passes(&self, conn: u64) -> bool {
        self.thawed && conn >= self.lost_below
    }
}

/// What clients did on connections that did not flow.
#[derive(Default)]
struct Seen {
    /// Each hold of what a client sent: its connection's number and the
    /// bytes held (so far), in the order holds began.
    held: Vec<(u64, Vec<u8>)>,
    /// Connections their client closed while they did not flow.
    hung_up: Vec<u64>,
}

/// Passes what `from` sends to `to` on connection number `conn` until
/// either side closes. While the connection does not flow, what is read is
/// held, and reading goes on while the buffer has room (beyond that the
/// sender waits, as on a hung service), so a sender closing its side is
/// seen even then; `seen`, on the client's side, records both. What was
/// held passes on when the connection flows again, then the close.
async fn pump(
    mut from: impl AsyncRead + Unpin,
    mut to: impl AsyncWrite + Unpin,
    conn: u64,
    mut flowing: watch::Receiver<Flow>,
    seen: Option<watch::Sender<Seen>>,
) {
    let mut buf = vec![0u8; 16 << 10];
    // Bytes read and not passed on yet; whether `from` may send more; this
    // hold's place in `seen.held`, once recorded.
    let (mut held, mut open, mut hold) = (0, true, None::<usize>);
    loop {
        let passes = flowing.borrow_and_update().passes(conn);
        if passes && held > 0 {
            if to.write_all(&buf[..held]).await.is_err() {
                break;
            }
            (held, hold) = (0, None);
        }
        if !open && held == 0 {
            break;
        }
        tokio::select! {
            changed = flowing.changed(), if !passes => {
                if changed.is_err() {
                    break;
                }
            }
            read = from.read(&mut buf[held..]), if open && held < buf.len() => {
                let n = match read {
                    Ok(0) | Err(_) => 0,
                    Ok(n) => n,
                };
                held += n;
                open = n > 0;
                // Held if the connection does not flow now (it may have
                // frozen during the read).
                let held_now = !flowing.borrow().passes(conn);
                let Some(seen) = seen.as_ref().filter(|_| held_now) else {
                    continue;
                };
                seen.send_modify(|seen| match (open, hold) {
                    (false, _) => seen.hung_up.push(conn),
                    (true, Some(i)) => seen.held[i].1 = buf[..held].to_vec(),
                    (true, None) => {
                        hold = Some(seen.held.len());
                        seen.held.push((conn, buf[..held].to_vec()));
                    }
                });
            }
        }
    }
    let _ = to.shutdown().await;
}

impl Proxy {
    /// A proxy on 127.0.0.1 to `target` (`host:port`), passing traffic.
    pub async fn start(target: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let up = Arc::new(AtomicBool::new(true));
        let (flowing, _) = watch::channel(Flow {
            thawed: true,
            lost_below: 0,
        });
        let (seen, _) = watch::channel(Seen::default());
        let next = Arc::new(AtomicU64::new(0));
        let conns = Arc::new(Mutex::new(Vec::new()));
        let target = target.to_owned();
        let accept = tokio::spawn({
            let (up, conns, flowing) = (up.clone(), conns.clone(), flowing.clone());
            let seen = seen.clone();
            let next = next.clone();
            async move {
                while let Ok((client, _)) = listener.accept().await {
                    // Numbered before the check: one numbered after a
                    // partition read its number sees it refused.
                    let conn = next.fetch_add(1, Ordering::SeqCst);
                    if !up.load(Ordering::SeqCst) {
                        continue; // refused: the connection is dropped at once
                    }
                    let target = target.clone();
                    let flowing = flowing.subscribe();
                    let seen = seen.clone();
                    let task = tokio::spawn(async move {
                        if let Ok(service) = TcpStream::connect(&target).await {
                            let (client_r, client_w) = client.into_split();
                            let (service_r, service_w) = service.into_split();
                            tokio::join!(
                                pump(client_r, service_w, conn, flowing.clone(), Some(seen)),
                                pump(service_r, client_w, conn, flowing, None),
                            );
                        }
                    });
                    conns.lock().unwrap().push(task);
                }
            }
        });
        Self {
            addr,
            up,
            flowing,
            seen,
            next,
            conns,
            accept,
        }
    }

    /// How many connections it accepted, refused ones included.
    pub fn connections(&self) -> u64 {
        self.next.load(Ordering::SeqCst)
    }

    /// Drops every proxied connection and refuses new ones.
    pub fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        for task in self.conns.lock().unwrap().drain(..) {
            task.abort();
        }
    }

    /// Refuses new connections; those open pass traffic as before (an
    /// outage that only a connection opened from now on meets).
    pub fn refuse(&self) {
        self.up.store(false, Ordering::SeqCst);
    }

    pub fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }

    /// Keeps every connection open but passes nothing either way, as a
    /// service that hangs does.
    pub fn freeze(&self) {
        self.flowing.send_modify(|f| f.thawed = false);
    }

    /// Passes traffic again, what was held first.
    pub fn thaw(&self) {
        self.flowing.send_modify(|f| f.thawed = true);
    }

    /// Refuses new connections and silences every open one for good: they
    /// stay open and pass nothing either way, even after [`Proxy::restore`]
    /// (a peer the network lost without a reset). Restoring lets new
    /// connections through.
    pub fn partition(&self) {
        self.up.store(false, Ordering::SeqCst);
        let lost_below = self.next.load(Ordering::SeqCst);
        self.flowing.send_modify(|f| f.lost_below = lost_below);
    }

    /// Waits until a client sent, while its connection did not flow, bytes
    /// that begin with `start` (say, a request line), and returns that
    /// connection's number; fails after [`TIMEOUT`].
    pub async fn wait_held(&self, start: &[u8]) -> u64 {
        let mut seen = self.seen.subscribe();
        let mut conn = None;
        let found = seen.wait_for(|seen| {
            conn = seen
                .held
                .iter()
                .find(|(_, bytes)| bytes.starts_with(start))
                .map(|(conn, _)| *conn);
            conn.is_some()
        });
        let found = tokio::time::timeout(TIMEOUT, found).await;
        match (found, conn) {
            (Ok(Ok(_)), Some(conn)) => conn,
            _ => panic!(
                "no client sent {:?} while held",
                String::from_utf8_lossy(start)
            ),
        }
    }

    /// Waits until the client of connection `conn` closed it while it did
    /// not flow; fails after [`TIMEOUT`].
    pub async fn wait_hung_up(&self, conn: u64) {
        let mut seen = self.seen.subscribe();
        let closed = seen.wait_for(|seen| seen.hung_up.contains(&conn));
        let closed = tokio::time::timeout(TIMEOUT, closed).await;
        assert!(
            matches!(closed, Ok(Ok(_))),
            "the client of connection {conn} never hung up while held"
        );
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}
