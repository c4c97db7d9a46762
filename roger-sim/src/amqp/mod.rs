//! The push channel over a real AMQP 0-9-1 broker (PROTOCOL.md §11; issue 5), on `lapin` and RabbitMQ.
//!
//! Two halves, as in production:
//!
//! * the **server** side, [`AmqpBus`]: the [`PushBus`](crate::bus::PushBus) of `roger-sim server --amqp URL`. It
//!   declares the topic exchange `roger.events` and every queue (`roger.device.<device_id>` bound to
//!   `device.<device_id>.#`, `roger.app.<installation_id>` bound to `user.<user_id>.#`) with `x-expires`,
//!   `x-max-length` and `x-message-ttl` ([`QueueLimits`]: an offline printer's queue can neither grow nor live for
//!   months), and publishes persistent JSON doorbells with `message_id`, waiting for the broker's publisher
//!   confirm;
//! * the **receiver** side, [`BrokerPool`]: what a printer, phone or desktop uses with the credentials of
//!   `GET /api/v1/device/push` (or `/api/v1/me/push`): a channel per receiver on a bounded number of connections,
//!   manual acknowledgements (a receiver that dies before acknowledging gets the message again), and
//!   [`Backoff`] (jittered exponential) between reconnects. After every (re)connect the receiver re-reads its state
//!   over HTTPS (R-PUSH-1), so a missed doorbell is never a lost session.
//!
//! Names carry a configurable prefix ([`Names`]), so several servers (or test runs) share one broker without
//! seeing each other's messages. `amqps://` goes through rustls with the workspace's `ring` provider and trusts the
//! simulator's CA besides the system roots (R-DISC-2: plain `amqp://` only for a loopback test broker).

mod backoff;
mod bus;
mod consumer;

pub use backoff::Backoff;
pub use bus::{AmqpBus, AmqpConfig, AmqpStats, QueueLimits};
pub use consumer::{
    renew_after, BrokerPool, ConsumerError, ConsumerOptions, RawConsumer, RawMessage, DEFAULT_PREFETCH, MIN_RENEWAL,
    RENEW_MARGIN,
};

use std::time::Duration;

use lapin::uri::AMQPUri;
use lapin::{Connection, ConnectionProperties};
use roger_proto::push::{Id, EXCHANGE};

use crate::bus::QueueSpec;

/// Longest name prefix (PROTOCOL.md §11 names stay far below AMQP's 255-octet `shortstr`).
pub const MAX_PREFIX_LEN: usize = 64;

/// The heartbeat a client asks the broker for, in seconds: a half-open connection is noticed within two of them.
pub const HEARTBEAT_SECS: u16 = 10;

/// Why the broker could not be used. Never quotes a broker URL (it may carry a password, R-SEC-1).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AmqpError {
    /// The broker URL is not `amqp://` or `amqps://` with a host (the URL itself is not repeated: it may carry a
    /// password).
    #[error("the broker URL is not usable: {0}")]
    BadUrl(&'static str),
    /// The name prefix has characters outside `A-Z a-z 0-9 . _ : -` or is too long.
    #[error("the name prefix must be at most {MAX_PREFIX_LEN} characters of A-Z a-z 0-9 . _ : -")]
    BadPrefix,
    /// The simulator hands out its own broker account only for a loopback test broker (PROTOCOL.md §11).
    #[error("the simulator hands out its broker account only on a loopback test broker (PROTOCOL.md §11)")]
    NotLoopback,
    /// Connecting, declaring or publishing failed.
    #[error("broker: {0}")]
    Broker(String),
    /// The broker refused (negatively confirmed) a published message.
    #[error("the broker did not confirm the message")]
    NotConfirmed,
    /// The broker did not answer in time.
    #[error("the broker did not answer within {0:?}")]
    Timeout(Duration),
}

impl From<lapin::Error> for AmqpError {
    fn from(e: lapin::Error) -> Self {
        Self::Broker(e.to_string())
    }
}

impl From<AmqpError> for crate::bus::BusError {
    fn from(e: AmqpError) -> Self {
        crate::bus::BusError::Broker(e.to_string())
    }
}

/// The command-line options of `roger-sim server` and `roger-sim demo` for a real broker (PROTOCOL.md §11);
/// without `--amqp` the in-process bus is used.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct AmqpArgs {
    /// Push through this AMQP 0-9-1 broker instead of the in-process bus, e.g.
    /// `amqp://guest:guest@127.0.0.1:5672/%2f` (plain `amqp` and the simulator handing its account to clients are
    /// for a loopback test broker only).
    #[arg(long, value_name = "URL")]
    pub amqp: Option<String>,
    /// Prefix of the exchange and queue names (`<prefix>roger.events`, `<prefix>roger.device.<id>`), so several
    /// servers or test runs can share one broker.
    #[arg(long, value_name = "PREFIX", default_value = "", requires = "amqp")]
    pub amqp_prefix: String,
    /// A CA certificate (PEM) to trust for an `amqps` broker besides the system roots.
    #[arg(long, value_name = "PATH", requires = "amqp")]
    pub amqp_ca: Option<std::path::PathBuf>,
}

impl AmqpArgs {
    /// The bus configuration these options ask for (`None` without `--amqp`); the CA file is read now.
    pub fn config(&self) -> Result<Option<AmqpConfig>, String> {
        let Some(url) = &self.amqp else { return Ok(None) };
        parse_url(url).map_err(|e| e.to_string())?;
        Names::new(&self.amqp_prefix).map_err(|e| e.to_string())?;
        let ca_pem = match &self.amqp_ca {
            Some(p) => Some(std::fs::read_to_string(p).map_err(|e| format!("--amqp-ca {}: {e}", p.display()))?),
            None => None,
        };
        Ok(Some(AmqpConfig { prefix: self.amqp_prefix.clone(), ca_pem, ..AmqpConfig::new(url.clone()) }))
    }
}

/// Exchange and queue names with a prefix (PROTOCOL.md §11 names; the prefix is empty in production and unique per
/// test run, so runs sharing a broker never see each other's messages).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Names {
    prefix: String,
}

impl Names {
    /// Names with `prefix` (at most [`MAX_PREFIX_LEN`] characters of the id alphabet, e.g. `t-4711.`).
    pub fn new(prefix: &str) -> Result<Self, AmqpError> {
        let ok = prefix.len() <= MAX_PREFIX_LEN
            && prefix.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'));
        if ok {
            Ok(Self { prefix: prefix.to_owned() })
        } else {
            Err(AmqpError::BadPrefix)
        }
    }

    /// The prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The topic exchange: `<prefix>roger.events`.
    pub fn exchange(&self) -> String {
        format!("{}{EXCHANGE}", self.prefix)
    }

    /// A queue: `<prefix>roger.device.<id>` or `<prefix>roger.app.<installation_id>`.
    pub fn queue(&self, spec: &QueueSpec) -> String {
        format!("{}{}", self.prefix, spec.queue_name())
    }

    /// The queue of a device (`<prefix>roger.device.<id>`).
    pub fn device_queue(&self, device: &Id) -> String {
        self.queue(&QueueSpec::Device(device.clone()))
    }
}

/// Parses a broker URL (`amqp://user:pass@host:port/vhost` or `amqps://…`). The error never quotes it.
pub fn parse_url(url: &str) -> Result<AMQPUri, AmqpError> {
    let scheme_ok = url.starts_with("amqp://") || url.starts_with("amqps://");
    if !scheme_ok {
        return Err(AmqpError::BadUrl("the scheme must be amqp or amqps"));
    }
    let uri: AMQPUri = url.parse().map_err(|_| AmqpError::BadUrl("it does not parse as an AMQP URI"))?;
    if uri.authority.host.is_empty() {
        return Err(AmqpError::BadUrl("it names no host"));
    }
    Ok(uri)
}

/// The URL clients are told (PROTOCOL.md §2 `amqp`, §11 `url`): scheme, host and port only; credentials and the
/// virtual host travel in their own members of the push credentials.
pub fn public_url(uri: &AMQPUri) -> String {
    let host = &uri.authority.host;
    let host = if host.contains(':') && !host.starts_with('[') { format!("[{host}]") } else { host.clone() };
    format!("{}://{host}:{}", uri.scheme, uri.authority.port)
}

/// Whether the broker is on this machine (R-DISC-2 "loopback testing"; the simulator's shared test account is
/// only handed out for such a broker, PROTOCOL.md §11).
pub fn is_loopback(uri: &AMQPUri) -> bool {
    url::Url::parse(&public_url(uri)).is_ok_and(|u| roger_proto::discovery::is_loopback(&u))
}

/// Opens a connection: rustls with the workspace's `ring` provider for `amqps` (trusting `ca_pem` besides the
/// system roots), the [`HEARTBEAT_SECS`] heartbeat, `name` shown in the broker's management view.
pub(crate) async fn connect(
    mut uri: AMQPUri,
    ca_pem: Option<&str>,
    name: &str,
    timeout: Duration,
) -> Result<Connection, AmqpError> {
    crate::server::tls::install_crypto_provider();
    uri.query.heartbeat = Some(HEARTBEAT_SECS);
    uri.query.connection_timeout = u64::try_from(timeout.as_millis()).ok();
    let props = ConnectionProperties::default().with_connection_name(name.into());
    let tls = lapin::tcp::OwnedTLSConfig { identity: None, cert_chain: ca_pem.map(str::to_owned) };
    let runtime = lapin::runtime::default_runtime()?;
    match tokio::time::timeout(timeout, Connection::connect_uri_with_config(uri, props, tls, runtime)).await {
        Ok(Ok(conn)) => Ok(conn),
        Ok(Err(e)) => Err(AmqpError::Broker(e.to_string())),
        Err(_) => Err(AmqpError::Timeout(timeout)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> Id {
        Id::new(s).expect("id")
    }

    /// PROTOCOL.md §11 names with a prefix; prefixes are checked.
    #[test]
    fn names_carry_the_prefix() {
        let n = Names::new("t-42.").expect("prefix");
        assert_eq!(n.exchange(), "t-42.roger.events");
        assert_eq!(n.device_queue(&id("dev_1")), "t-42.roger.device.dev_1");
        let app = QueueSpec::App { user_id: id("usr_1"), installation_id: id("inst-1") };
        assert_eq!(n.queue(&app), "t-42.roger.app.inst-1");
        assert_eq!(Names::default().exchange(), "roger.events");
        for bad in ["a b", "a/b", "ä", &"x".repeat(MAX_PREFIX_LEN + 1)] {
            assert_eq!(Names::new(bad), Err(AmqpError::BadPrefix), "{bad:?}");
        }
    }

    /// The handed-out URL has no credentials and no virtual host; errors never quote the URL (R-SEC-1).
    #[test]
    fn urls_are_split_and_never_quoted() {
        let uri = parse_url("amqp://guest:s3cret@127.0.0.1:5672/%2f").expect("url");
        assert_eq!(uri.authority.userinfo.username, "guest");
        assert_eq!(uri.vhost, "/");
        assert_eq!(public_url(&uri), "amqp://127.0.0.1:5672");
        assert!(is_loopback(&uri));
        let tls = parse_url("amqps://u:p@broker.example:5671/prod").expect("url");
        assert_eq!(public_url(&tls), "amqps://broker.example:5671");
        assert_eq!(tls.vhost, "prod");
        assert!(!is_loopback(&tls));
        assert!(is_loopback(&parse_url("amqp://localhost").expect("url")));
        for bad in ["http://u:s3cret@h/", "amqp://u:s3cret@:1/", "s3cret", "amqp://u:s3cret@h:notaport/"] {
            let err = parse_url(bad).expect_err(bad);
            assert!(!err.to_string().contains("s3cret"), "{err}");
        }
    }
}
