//! A TCP proxy in front of a service (Redis, PostgreSQL) that a test can cut
//! and restore, so an outage of that service, for one instance only, lasts
//! exactly as long as the test wants; or freeze and thaw, so the service
//! hangs (its connections stay open and nothing passes) instead of failing;
//! or partition, so the open connections go silent for good, as when the
//! network loses a peer without a reset, and new ones are refused until
//! the proxy is restored.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub struct Proxy {
    /// Where clients connect instead of the service.
    pub addr: SocketAddr,
    up: Arc<AtomicBool>,
    /// Which connections pass bytes; those that do not hold what they read.
    flowing: watch::Sender<Flow>,
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

/// Passes what `from` sends to `to` on connection number `conn`, holding
/// each read while that connection does not flow, until either side closes.
async fn pump(
    mut from: impl AsyncRead + Unpin,
    mut to: impl AsyncWrite + Unpin,
    conn: u64,
    mut flowing: watch::Receiver<Flow>,
) {
    let mut buf = vec![0u8; 16 << 10];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if flowing.wait_for(|f| f.passes(conn)).await.is_err()
            || to.write_all(&buf[..n]).await.is_err()
        {
            break;
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
        let next = Arc::new(AtomicU64::new(0));
        let conns = Arc::new(Mutex::new(Vec::new()));
        let target = target.to_owned();
        let accept = tokio::spawn({
            let (up, conns, flowing) = (up.clone(), conns.clone(), flowing.clone());
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
                    let task = tokio::spawn(async move {
                        if let Ok(service) = TcpStream::connect(&target).await {
                            let (client_r, client_w) = client.into_split();
                            let (service_r, service_w) = service.into_split();
                            tokio::join!(
                                pump(client_r, service_w, conn, flowing.clone()),
                                pump(service_r, client_w, conn, flowing),
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
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}
