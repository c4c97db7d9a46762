//! Helpers of the broker scenarios (issue 5, PROTOCOL.md §11): the broker URL from `ROGER_AMQP_URL` (a scenario
//! skips itself without it), a unique name prefix per test, a server pushing through the broker, and a TCP proxy
//! inside the test that can cut every connection or refuse new ones, optionally terminating TLS (`amqps`) in
//! front of the plain broker.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use roger_sim::amqp::{AmqpConfig, QueueLimits};
use roger_sim::conform::broker::{self, BrokerCut};
use roger_sim::server::ServerConfig;

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

/// `url` with its host and port replaced by `addr` (to route through a [`BrokerCut`]), and its scheme by `scheme`
/// (`amqp` or `amqps`).
pub fn via(url: &str, addr: SocketAddr, scheme: &str) -> String {
    broker::via(url, addr, scheme == "amqps").expect("a broker URL")
}

/// The broker's address in `url`.
pub async fn upstream(url: &str) -> SocketAddr {
    broker::upstream(url).await.expect("the broker's address")
}

/// The conformance kit's TCP relay in front of the broker ([`BrokerCut`]): forwards bytes both ways, cuts every
/// connection on demand (a broken network as the receivers see it), refuses new ones while told to, and with a
/// TLS configuration terminates `amqps` in front of the plain broker.
pub async fn proxy(upstream: SocketAddr, tls: Option<Arc<rustls::ServerConfig>>) -> BrokerCut {
    BrokerCut::start(upstream, tls).await.expect("the proxy listens")
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
