//! Helpers of the broker scenarios (issue 5, PROTOCOL.md §11): the broker URL from `ROGER_AMQP_URL` (a scenario
//! skips itself without it), a unique name prefix per test, a server pushing through the broker, and a TCP proxy
//! inside the test that can cut every connection or refuse new ones, optionally terminating TLS (`amqps`) in
//! front of the plain broker.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use roger_sim::amqp::{AmqpConfig, QueueLimits};
use roger_sim::server::ServerConfig;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use super::TestServer;

/// The environment variable naming the test broker, e.g. `amqp://guest:guest@127.0.0.1:5672/%2f`.
pub const ENV: &str = "ROGER_AMQP_URL";

/// The broker URL, or `None` after printing that the scenario is skipped (so `cargo test` passes without a
/// broker; `.ci/run`'s `amqp` stage sets it).
pub fn broker_url() -> Option<String> {
    match std::env::var(ENV) {
        Ok(url) if !url.trim().is_empty() => Some(url.trim().to_owned()),
        _ => {
            println!("skipped: {ENV} not set");
            None
        }
    }
}

/// A name prefix no other run shares: `it-<tag>-<pid>-<counter>-<nanos>.`.
pub fn unique_prefix(tag: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    format!("it-{tag}-{}-{n}-{nanos}.", std::process::id())
}

/// The bus configuration of a test: its own prefix, an exchange that goes with its last binding and queues that
/// expire two minutes after their last use, so even an aborted run leaves nothing behind for long.
pub fn test_config(url: &str, prefix: &str) -> AmqpConfig {
    AmqpConfig {
        prefix: prefix.to_owned(),
        auto_delete_exchange: true,
        limits: QueueLimits { expires: Duration::from_secs(120), ..QueueLimits::default() },
        ..AmqpConfig::new(url)
    }
}

/// A server (plain HTTP on loopback, virtual clock, default tenant) pushing through the broker with `config`;
/// codes are polled every `interval_secs`.
pub async fn server(config: AmqpConfig, interval_secs: u64) -> TestServer {
    let s = TestServer::start_with(ServerConfig {
        plain_http: true,
        seed: Some(11),
        amqp: Some(config),
        ..ServerConfig::default()
    })
    .await;
    s.settings(serde_json::json!({ "interval_secs": interval_secs })).await;
    s
}

/// Deletes the server's exchange and queues, then stops it.
pub async fn clean_up(s: TestServer) {
    if let Some(bus) = s.server.amqp.clone() {
        match bus.delete_topology().await {
            Ok(n) => println!("deleted {n} queue(s) and the exchange {}", bus.names().exchange()),
            Err(e) => println!("could not delete the topology (queues expire on their own): {e}"),
        }
    }
    s.server.stop().await;
}

/// `url` with its host and port replaced by `addr` (to route through a [`Proxy`]), and its scheme by `scheme`.
pub fn via(url: &str, addr: SocketAddr, scheme: &str) -> String {
    let mut u = url::Url::parse(url).expect("broker URL");
    u.set_scheme(scheme).expect("scheme");
    u.set_host(Some(&addr.ip().to_string())).expect("host");
    u.set_port(Some(addr.port())).expect("port");
    u.to_string()
}

/// The broker's address in `url`.
pub async fn upstream(url: &str) -> SocketAddr {
    let u = url::Url::parse(url).expect("broker URL");
    let host = u.host_str().expect("host").to_owned();
    let port = u.port().unwrap_or(5672);
    let mut addrs = tokio::net::lookup_host((host.as_str(), port)).await.expect("resolve");
    addrs.next().expect("an address")
}

struct ProxyState {
    upstream: SocketAddr,
    tls: Option<tokio_rustls::TlsAcceptor>,
    refusing: AtomicBool,
    accepted: AtomicU64,
    cut: watch::Sender<u64>,
}

/// A TCP proxy in front of the broker: forwards bytes both ways, [`cut`](Self::cut)s every connection on demand
/// (a broken network as the receivers see it), refuses new ones while [`set_refusing`](Self::set_refusing), and
/// with a TLS configuration terminates `amqps` in front of the plain broker.
pub struct Proxy {
    /// Where clients connect.
    pub addr: SocketAddr,
    state: Arc<ProxyState>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    /// Listens on a free loopback port and forwards to `upstream`, terminating TLS with `tls` when given.
    pub async fn start(upstream: SocketAddr, tls: Option<Arc<rustls::ServerConfig>>) -> Self {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await.expect("proxy listens");
        let addr = listener.local_addr().expect("proxy address");
        let state = Arc::new(ProxyState {
            upstream,
            tls: tls.map(tokio_rustls::TlsAcceptor::from),
            refusing: AtomicBool::new(false),
            accepted: AtomicU64::new(0),
            cut: watch::channel(0).0,
        });
        let st = state.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                if st.refusing.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                st.accepted.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(relay(st.clone(), client));
            }
        });
        Self { addr, state, task }
    }

    /// Closes every connection now open (both sides).
    pub fn cut(&self) {
        self.state.cut.send_modify(|n| *n += 1);
    }

    /// While `true`, new connections are closed as soon as they are accepted.
    pub fn set_refusing(&self, refusing: bool) {
        self.state.refusing.store(refusing, Ordering::SeqCst);
    }

    /// Connections accepted and relayed so far.
    pub fn accepted(&self) -> u64 {
        self.state.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
        self.cut();
    }
}

async fn relay(st: Arc<ProxyState>, client: TcpStream) {
    let mut cut = st.cut.subscribe();
    let Ok(mut server) = TcpStream::connect(st.upstream).await else { return };
    match &st.tls {
        Some(acceptor) => {
            let Ok(mut client) = acceptor.accept(client).await else { return };
            tokio::select! {
                _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                _ = cut.changed() => {}
            }
        }
        None => {
            let mut client = client;
            tokio::select! {
                _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                _ = cut.changed() => {}
            }
        }
    }
}

/// Waits until `pred` holds (checked every 50 ms) or `timeout` passes; returns whether it held.
pub async fn eventually(timeout: Duration, mut pred: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if pred() {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
