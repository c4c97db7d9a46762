//! The kit's broker (PROTOCOL.md §11, R-PUSH-1): with `roger-sim conform client --amqp URL` (or `ROGER_AMQP_URL`)
//! the push cases start their per-case server on that broker, under a name prefix no other case or run shares,
//! and delete their exchange and queues afterwards. The server hands the MFP the address of a [`BrokerCut`], a relay
//! of the kit's in front of the broker: `amqps` with a certificate from the kit's CA when the kit's front door
//! speaks TLS (so a client that accepts only `amqps`, R-DISC-2, takes the region), plain `amqp` with
//! `--plain-http`; and a case can break the MFP's broker connection there while the server keeps publishing.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::amqp::{parse_url, AmqpConfig, QueueLimits};

/// The environment variable `roger-sim conform client` reads the broker URL from when `--amqp` is absent.
pub const AMQP_ENV: &str = "ROGER_AMQP_URL";

/// Why a push case is skipped without a broker.
pub const NEEDS_BROKER: &str = "needs a broker: --amqp URL or ROGER_AMQP_URL (PROTOCOL.md §11)";

/// Why the kit could not use its broker. Never quotes the broker URL (it carries a password, R-SEC-1).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KitBrokerError {
    /// The URL is not one the simulator can use (scheme, host, port).
    #[error("the broker URL is not usable: {0}")]
    BadUrl(String),
    /// The broker's address did not resolve.
    #[error("the broker's address does not resolve")]
    Unresolved,
    /// The cut proxy could not listen.
    #[error("the broker cut could not listen: {0}")]
    Listen(String),
}

/// The broker URL of a run: `--amqp` if given, else a non-empty `ROGER_AMQP_URL`, else none (push cases SKIP).
pub fn broker_url(flag: Option<&str>) -> Option<String> {
    let from_env = || std::env::var(AMQP_ENV).ok();
    flag.map(str::to_owned).or_else(from_env).map(|u| u.trim().to_owned()).filter(|u| !u.is_empty())
}

/// Checks a broker URL before a run (exit code 2 for a bad one); the error never quotes it.
pub fn check_url(url: &str) -> Result<(), KitBrokerError> {
    parse_url(url).map(|_| ()).map_err(|e| KitBrokerError::BadUrl(e.to_string()))
}

/// A name prefix no other case of any run shares: `conform-<pid>-<counter>-<nanos>.` (PROTOCOL.md §11 names
/// stay valid: `A-Z a-z 0-9 . _ : -`).
pub fn unique_prefix() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    format!("conform-{}-{n}-{nanos}.", std::process::id())
}

/// The bus configuration of one case: its own prefix, an exchange that goes with its last binding and queues that
/// expire two minutes after their last use, so even an aborted run leaves nothing behind for long (the case also
/// deletes its topology when it ends).
pub fn case_config(url: &str) -> AmqpConfig {
    AmqpConfig {
        prefix: unique_prefix(),
        auto_delete_exchange: true,
        limits: QueueLimits { expires: Duration::from_secs(120), ..QueueLimits::default() },
        ..AmqpConfig::new(url)
    }
}

/// The broker's socket address in `url`.
pub async fn upstream(url: &str) -> Result<SocketAddr, KitBrokerError> {
    let uri = parse_url(url).map_err(|e| KitBrokerError::BadUrl(e.to_string()))?;
    let host = uri.authority.host.trim_start_matches('[').trim_end_matches(']').to_owned();
    let mut addrs =
        tokio::net::lookup_host((host.as_str(), uri.authority.port)).await.map_err(|_| KitBrokerError::Unresolved)?;
    addrs.next().ok_or(KitBrokerError::Unresolved)
}

/// `url` with its host and port replaced by `addr` and its scheme by `amqps` when `tls` (what the server hands out
/// with a [`BrokerCut`] in between).
pub fn via(url: &str, addr: SocketAddr, tls: bool) -> Result<String, KitBrokerError> {
    let bad = |what: &str| KitBrokerError::BadUrl(what.to_owned());
    let mut u = url::Url::parse(url).map_err(|_| bad("it does not parse as a URL"))?;
    u.set_scheme(if tls { "amqps" } else { "amqp" }).map_err(|()| bad("its scheme cannot be replaced"))?;
    u.set_host(Some(&addr.ip().to_string())).map_err(|_| bad("its host cannot be replaced"))?;
    u.set_port(Some(addr.port())).map_err(|()| bad("its port cannot be replaced"))?;
    Ok(u.to_string())
}

struct CutState {
    upstream: SocketAddr,
    tls: Option<tokio_rustls::TlsAcceptor>,
    refusing: AtomicBool,
    accepted: AtomicU64,
    cut: watch::Sender<u64>,
}

/// A TCP relay between the MFP and the broker: forwards bytes both ways (terminating TLS in front of the plain
/// broker when it has a TLS configuration), [`cut`](Self::cut)s every connection on demand (a broken network as the
/// MFP sees it) and refuses new ones while [`set_refusing`](Self::set_refusing).
pub struct BrokerCut {
    /// Where the MFP connects (the broker address the case's server hands out).
    pub addr: SocketAddr,
    state: Arc<CutState>,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for BrokerCut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrokerCut")
            .field("addr", &self.addr)
            .field("refusing", &self.state.refusing.load(Ordering::SeqCst))
            .field("accepted", &self.accepted())
            .finish()
    }
}

impl BrokerCut {
    /// Listens on a free loopback port and relays to `upstream`, terminating TLS with `tls` when given.
    pub async fn start(upstream: SocketAddr, tls: Option<Arc<rustls::ServerConfig>>) -> Result<Self, KitBrokerError> {
        let listener =
            TcpListener::bind(("127.0.0.1", 0)).await.map_err(|e| KitBrokerError::Listen(e.kind().to_string()))?;
        let addr = listener.local_addr().map_err(|e| KitBrokerError::Listen(e.kind().to_string()))?;
        let state = Arc::new(CutState {
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
        Ok(Self { addr, state, task })
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

impl Drop for BrokerCut {
    fn drop(&mut self) {
        self.task.abort();
        self.cut();
    }
}

async fn relay(st: Arc<CutState>, client: TcpStream) {
    let mut cut = st.cut.subscribe();
    let Ok(mut server) = TcpStream::connect(st.upstream).await else { return };
    match &st.tls {
        Some(acceptor) => {
            let handshake = tokio::select! {
                r = acceptor.accept(client) => r,
                _ = cut.changed() => return,
            };
            let Ok(mut client) = handshake else { return };
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

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn urls_and_prefixes() {
        assert_eq!(
            broker_url(Some(" amqp://u:p@127.0.0.1:5672/%2f ")).as_deref(),
            Some("amqp://u:p@127.0.0.1:5672/%2f")
        );
        assert!(check_url("amqp://u:p@127.0.0.1:5672/%2f").is_ok());
        let err = check_url("http://u:s3cret@127.0.0.1/").expect_err("not amqp");
        assert!(!err.to_string().contains("s3cret"), "{err}");
        let addr: SocketAddr = "127.0.0.1:40001".parse().expect("addr");
        assert_eq!(via("amqp://u:p@127.0.0.1:5672/%2f", addr, false).expect("via"), "amqp://u:p@127.0.0.1:40001/%2f");
        assert_eq!(via("amqp://u:p@127.0.0.1:5672/%2f", addr, true).expect("via"), "amqps://u:p@127.0.0.1:40001/%2f");
        let (a, b) = (unique_prefix(), unique_prefix());
        assert_ne!(a, b);
        assert!(crate::amqp::Names::new(&a).is_ok(), "{a}");
        let c = case_config("amqp://u:p@127.0.0.1:5672/%2f");
        assert!(c.auto_delete_exchange && c.prefix.starts_with("conform-"));
    }

    /// The cut relays bytes, closes open connections on demand and refuses new ones while told to.
    #[tokio::test]
    async fn cut_relays_cuts_and_refuses() {
        let echo = TcpListener::bind(("127.0.0.1", 0)).await.expect("echo");
        let echo_addr = echo.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((mut s, _)) = echo.accept().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 64];
                    while let Ok(n) = s.read(&mut buf).await {
                        if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        let cut = BrokerCut::start(echo_addr, None).await.expect("cut");
        let mut c = TcpStream::connect(cut.addr).await.expect("connect");
        c.write_all(b"ping").await.expect("write");
        let mut buf = [0u8; 4];
        c.read_exact(&mut buf).await.expect("echo");
        assert_eq!(&buf, b"ping");
        assert_eq!(cut.accepted(), 1);
        cut.set_refusing(true);
        cut.cut();
        let mut rest = Vec::new();
        let n = tokio::time::timeout(Duration::from_secs(5), c.read_to_end(&mut rest)).await.expect("closed");
        assert!(n.is_ok_and(|n| n == 0) || rest.is_empty());
        let mut d = TcpStream::connect(cut.addr).await.expect("accepted by the kernel");
        let mut one = [0u8; 1];
        let r = tokio::time::timeout(Duration::from_secs(5), d.read(&mut one)).await.expect("refused quickly");
        assert!(matches!(r, Ok(0) | Err(_)), "a refused connection is closed at once");
        assert_eq!(cut.accepted(), 1);
    }
}
