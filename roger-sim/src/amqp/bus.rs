//! [`AmqpBus`]: the server's [`PushBus`] on a real AMQP 0-9-1 broker (PROTOCOL.md §11).
//!
//! * One durable topic exchange `<prefix>roger.events`.
//! * Durable queues declared by the server with [`QueueLimits`] (`x-expires`, `x-max-length` with RabbitMQ's
//!   default drop-head overflow, `x-message-ttl`): an offline printer's queue holds at most the newest
//!   `max_length` doorbells, none older than the TTL, and disappears after `expires` without use; the server
//!   declares it again when the printer next asks for push credentials.
//! * Publishing on a channel in confirm mode: every message is persistent (`delivery_mode` 2), JSON
//!   (`content_type`), carries `message_id` = the envelope's `id`, and counts as sent only once the broker has
//!   confirmed it. A broken connection is re-opened (after a [`Backoff`] wait) and the message sent once more;
//!   a doubled message is a harmless duplicate (R-PUSH-1).
//! * Declarations run on a channel of their own, so a refused declaration (e.g. a queue that exists with other
//!   limits) closes only that channel.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex as StdMutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use lapin::options::{
    BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions,
    QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::uri::AMQPUri;
use lapin::{BasicProperties, Channel, Connection, ExchangeKind};
use roger_proto::push::{PushEnvelope, CONTENT_TYPE};
use roger_proto::secret::BrokerPassword;
use roger_proto::server::api::PushConfig;

use super::consumer::{consume_on, DEFAULT_PREFETCH};
use super::{connect, is_loopback, parse_url, public_url, AmqpError, Backoff, Names};
use crate::bus::{BusError, PushBus, QueueSpec, Subscription};

/// AMQP `delivery_mode` of a persistent message.
const PERSISTENT: u8 = 2;

/// What the server declares every queue with (PROTOCOL.md §11).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueLimits {
    /// `x-max-length`: beyond it the broker drops the oldest message.
    pub max_length: u32,
    /// `x-message-ttl`: a doorbell older than this is useless (a receiver away that long re-reads its state).
    pub message_ttl: Duration,
    /// `x-expires`: a queue without consumers or declarations for this long is deleted.
    pub expires: Duration,
}

impl Default for QueueLimits {
    /// 1000 messages ([`crate::bus::DEFAULT_MAX_LENGTH`]), five minutes ([`crate::bus::DEFAULT_MESSAGE_TTL`]) and
    /// one day: an offline printer's queue can neither grow nor outlive a day of disuse.
    fn default() -> Self {
        Self {
            max_length: u32::try_from(crate::bus::DEFAULT_MAX_LENGTH).unwrap_or(1000),
            message_ttl: Duration::from_secs(
                u64::try_from(crate::bus::DEFAULT_MESSAGE_TTL.whole_seconds()).unwrap_or(300),
            ),
            expires: Duration::from_secs(24 * 3600),
        }
    }
}

impl QueueLimits {
    /// The queue arguments (RabbitMQ: `x-max-length`, `x-message-ttl` and `x-expires` in milliseconds).
    pub fn arguments(&self) -> FieldTable {
        let ms = |d: Duration| AMQPValue::LongLongInt(i64::try_from(d.as_millis()).unwrap_or(i64::MAX).max(1));
        let mut t = FieldTable::default();
        t.insert("x-max-length".into(), AMQPValue::LongLongInt(i64::from(self.max_length)));
        t.insert("x-message-ttl".into(), ms(self.message_ttl));
        t.insert("x-expires".into(), ms(self.expires));
        t
    }
}

/// How the server uses the broker (`roger-sim server --amqp URL [--amqp-prefix P]`).
#[derive(Clone)]
pub struct AmqpConfig {
    /// `amqp://user:pass@host:port/vhost` or `amqps://…`: the account the server publishes and declares with, and
    /// (on a loopback test broker) hands out (PROTOCOL.md §11).
    pub url: String,
    /// The broker URL clients are told (PROTOCOL.md §2 `amqp`, §11 `url`) when it differs from the server's own
    /// route to the broker (a load balancer, or a test's proxy); credentials and virtual host still come from
    /// `url`. Must be on loopback too.
    pub client_url: Option<String>,
    /// Prefix of the exchange and queue names ([`Names`]).
    pub prefix: String,
    /// A CA (PEM) to trust for `amqps` besides the system roots (the simulator's CA).
    pub ca_pem: Option<String>,
    /// Queue limits.
    pub limits: QueueLimits,
    /// Declare the exchange `auto_delete` (tests: it goes with its last binding, so an aborted run leaves nothing
    /// once its queues expire).
    pub auto_delete_exchange: bool,
    /// How long the handed-out credentials are good for (`expires_at`).
    pub credentials_ttl: Duration,
    /// How long connecting may take.
    pub connect_timeout: Duration,
}

impl fmt::Debug for AmqpConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let url = parse_url(&self.url).map(|u| public_url(&u)).unwrap_or_else(|_| "(unusable)".into());
        f.debug_struct("AmqpConfig")
            .field("url", &url)
            .field("client_url", &self.client_url.as_deref().map(|c| parse_url(c).map(|u| public_url(&u))))
            .field("prefix", &self.prefix)
            .field("ca_pem", &self.ca_pem.is_some())
            .field("limits", &self.limits)
            .field("auto_delete_exchange", &self.auto_delete_exchange)
            .field("credentials_ttl", &self.credentials_ttl)
            .field("connect_timeout", &self.connect_timeout)
            .finish()
    }
}

impl AmqpConfig {
    /// The broker at `url`, no prefix, default limits, one-hour credentials, a 10 s connect timeout.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            client_url: None,
            prefix: String::new(),
            ca_pem: None,
            limits: QueueLimits::default(),
            auto_delete_exchange: false,
            credentials_ttl: Duration::from_secs(3600),
            connect_timeout: Duration::from_secs(10),
        }
    }
}

/// What the bus did so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AmqpStats {
    /// Messages the broker confirmed.
    pub confirmed: u64,
    /// Messages that could not be published (connection down, negative confirm).
    pub failed: u64,
    /// Queue declarations done.
    pub declared: u64,
    /// Connections opened (the first one included).
    pub connections: u64,
}

struct Link {
    conn: Connection,
    publish: Channel,
}

impl Link {
    fn alive(&self) -> bool {
        self.conn.status().connected() && self.publish.status().connected()
    }
}

struct Inner {
    uri: AMQPUri,
    ca_pem: Option<String>,
    names: Names,
    limits: QueueLimits,
    auto_delete_exchange: bool,
    connect_timeout: Duration,
    push: PushConfig,
    link: tokio::sync::Mutex<Option<Arc<Link>>>,
    /// No reconnect before this instant (after a failed one), and the back-off that set it.
    retry: StdMutex<(Option<Instant>, Backoff)>,
    /// Queues declared by this bus and their binding keys (an app queue rebound to another user is recreated).
    declared: StdMutex<HashMap<String, String>>,
    stats: StdMutex<AmqpStats>,
}

/// The push bus on an AMQP 0-9-1 broker (see the module documentation). Cheap to clone.
#[derive(Clone)]
pub struct AmqpBus {
    inner: Arc<Inner>,
}

impl fmt::Debug for AmqpBus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AmqpBus")
            .field("url", &self.inner.push.url)
            .field("prefix", &self.inner.names.prefix())
            .field("stats", &self.stats())
            .finish()
    }
}

fn lock<T>(m: &StdMutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl AmqpBus {
    /// Connects, declares the exchange and checks the configuration. The simulator hands its broker account to
    /// clients (PROTOCOL.md §11 "a shared test account"), so the broker must be on loopback.
    pub async fn connect(config: AmqpConfig) -> Result<Self, AmqpError> {
        let uri = parse_url(&config.url)?;
        let told = match &config.client_url {
            Some(c) => parse_url(c)?,
            None => uri.clone(),
        };
        if !is_loopback(&uri) || !is_loopback(&told) {
            return Err(AmqpError::NotLoopback);
        }
        let names = Names::new(&config.prefix)?;
        let push = PushConfig {
            url: Some(public_url(&told)),
            vhost: uri.vhost.clone(),
            username: uri.authority.userinfo.username.clone(),
            password: BrokerPassword::new(uri.authority.userinfo.password.clone()),
            shared_test_account: true,
            ttl_secs: config.credentials_ttl.as_secs(),
            queue_prefix: names.prefix().to_owned(),
        };
        let bus = Self {
            inner: Arc::new(Inner {
                uri,
                ca_pem: config.ca_pem,
                names,
                limits: config.limits,
                auto_delete_exchange: config.auto_delete_exchange,
                connect_timeout: config.connect_timeout,
                push,
                link: tokio::sync::Mutex::new(None),
                retry: StdMutex::new((None, Backoff::new(Duration::from_millis(200), Duration::from_secs(10)))),
                declared: StdMutex::new(HashMap::new()),
                stats: StdMutex::new(AmqpStats::default()),
            }),
        };
        bus.link().await?;
        Ok(bus)
    }

    /// What `GET /api/v1/device/push` and `/api/v1/me/push` hand out (PROTOCOL.md §11): the broker URL without
    /// credentials, the virtual host, the shared test account (and that it is one), the queue prefix.
    pub fn push_config(&self) -> PushConfig {
        self.inner.push.clone()
    }

    /// The exchange and queue names this bus uses.
    pub fn names(&self) -> &Names {
        &self.inner.names
    }

    /// Counters of what the bus did.
    pub fn stats(&self) -> AmqpStats {
        *lock(&self.inner.stats)
    }

    /// The live link, re-opened if it broke (not sooner than the back-off allows after a failed attempt).
    async fn link(&self) -> Result<Arc<Link>, AmqpError> {
        let mut guard = self.inner.link.lock().await;
        if let Some(link) = guard.as_ref().filter(|l| l.alive()) {
            return Ok(link.clone());
        }
        if let (Some(at), _) = *lock(&self.inner.retry) {
            if Instant::now() < at {
                return Err(AmqpError::Broker("the broker is unreachable; retrying after a back-off".into()));
            }
        }
        match self.open_link().await {
            Ok(link) => {
                let link = Arc::new(link);
                *guard = Some(link.clone());
                let mut retry = lock(&self.inner.retry);
                retry.0 = None;
                retry.1.reset();
                lock(&self.inner.stats).connections += 1;
                Ok(link)
            }
            Err(e) => {
                let mut retry = lock(&self.inner.retry);
                let wait = retry.1.next_delay();
                retry.0 = Some(Instant::now() + wait);
                tracing::warn!("push broker unreachable ({e}); next attempt in {} ms", wait.as_millis());
                Err(e)
            }
        }
    }

    async fn open_link(&self) -> Result<Link, AmqpError> {
        let inner = &self.inner;
        let conn = connect(inner.uri.clone(), inner.ca_pem.as_deref(), "roger-server", inner.connect_timeout).await?;
        let publish = conn.create_channel().await?;
        publish.confirm_select(ConfirmSelectOptions::default()).await?;
        let options = ExchangeDeclareOptions {
            durable: true,
            auto_delete: inner.auto_delete_exchange,
            ..ExchangeDeclareOptions::default()
        };
        publish
            .exchange_declare(inner.names.exchange().into(), ExchangeKind::Topic, options, FieldTable::default())
            .await?;
        Ok(Link { conn, publish })
    }

    async fn publish_on(&self, link: &Link, key: &str, body: &[u8], id: &str, at: u64) -> Result<(), AmqpError> {
        let properties = BasicProperties::default()
            .with_content_type(CONTENT_TYPE.into())
            .with_message_id(id.into())
            .with_delivery_mode(PERSISTENT)
            .with_timestamp(at);
        let confirm = link
            .publish
            .basic_publish(
                self.inner.names.exchange().into(),
                key.into(),
                BasicPublishOptions::default(),
                body,
                properties,
            )
            .await?
            .await?;
        if confirm.is_ack() {
            Ok(())
        } else {
            Err(AmqpError::NotConfirmed)
        }
    }

    /// Declares (and binds) one queue on a channel of its own.
    async fn declare_queue(&self, spec: &QueueSpec) -> Result<(), AmqpError> {
        let binding = spec.binding_key().map_err(|e| AmqpError::Broker(e.to_string()))?;
        let queue = self.inner.names.queue(spec);
        let previous = lock(&self.inner.declared).get(&queue).cloned();
        // An app installation that now belongs to another user (or that this server has not declared since it
        // started, so its old binding is unknown) gets a fresh queue: deleting it drops what was queued for
        // anyone else and ends the current consumers, who reconnect and re-read (PROTOCOL.md §11).
        let recreate = matches!(spec, QueueSpec::App { .. }) && previous.as_deref() != Some(binding.as_str());
        let link = self.link().await?;
        let channel = link.conn.create_channel().await?;
        let result = async {
            if recreate {
                channel.queue_delete(queue.as_str().into(), QueueDeleteOptions::default()).await?;
            }
            let options = QueueDeclareOptions { durable: true, ..QueueDeclareOptions::default() };
            channel.queue_declare(queue.as_str().into(), options, self.inner.limits.arguments()).await?;
            channel
                .queue_bind(
                    queue.as_str().into(),
                    self.inner.names.exchange().into(),
                    binding.as_str().into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await?;
            Ok::<(), lapin::Error>(())
        }
        .await;
        if channel.status().connected() {
            let _ = channel.close(200, "OK".into()).await;
        }
        result?;
        lock(&self.inner.declared).insert(queue, binding);
        lock(&self.inner.stats).declared += 1;
        Ok(())
    }

    /// Deletes every queue this bus declared and the exchange, then closes the connection (tests clean up after
    /// themselves). Returns how many queues were deleted.
    pub async fn delete_topology(&self) -> Result<usize, AmqpError> {
        let link = self.link().await?;
        let queues: Vec<String> = lock(&self.inner.declared).drain().map(|(q, _)| q).collect();
        let channel = link.conn.create_channel().await?;
        for q in &queues {
            channel.queue_delete(q.as_str().into(), QueueDeleteOptions::default()).await?;
        }
        channel.exchange_delete(self.inner.names.exchange().into(), ExchangeDeleteOptions::default()).await?;
        let _ = channel.close(200, "OK".into()).await;
        self.close().await;
        Ok(queues.len())
    }

    /// Closes the connection (a later call reconnects).
    pub async fn close(&self) {
        let link = self.inner.link.lock().await.take();
        if let Some(link) = link {
            let _ = link.conn.close(200, "OK".into()).await;
        }
    }

    /// How many consumers a declared queue has, or `None` if the broker does not know it (the conformance kit
    /// uses it to see that a printer under test consumes its device queue, R-PUSH-1).
    pub async fn consumers(&self, spec: &QueueSpec) -> Option<u32> {
        self.inspect(spec).await.map(|q| q.consumer_count())
    }

    /// How many messages wait in a declared queue, or `None` if the broker does not know it.
    pub async fn depth(&self, spec: &QueueSpec) -> Option<u32> {
        self.inspect(spec).await.map(|q| q.message_count())
    }

    /// A passive declaration of the queue (its counts, without creating it), on a channel of its own.
    async fn inspect(&self, spec: &QueueSpec) -> Option<lapin::Queue> {
        let link = self.link().await.ok()?;
        let channel = link.conn.create_channel().await.ok()?;
        let options = QueueDeclareOptions { passive: true, ..QueueDeclareOptions::default() };
        let queue = self.inner.names.queue(spec);
        let declared = channel.queue_declare(queue.as_str().into(), options, FieldTable::default()).await.ok();
        if channel.status().connected() {
            let _ = channel.close(200, "OK".into()).await;
        }
        declared
    }
}

#[async_trait]
impl PushBus for AmqpBus {
    async fn publish(&self, msg: &PushEnvelope) -> Result<(), BusError> {
        let key = msg.routing_key()?;
        let body = msg.to_json();
        let at = u64::try_from(msg.occurred_at.unix_timestamp()).unwrap_or(0);
        let mut last = AmqpError::Broker("not sent".into());
        for _attempt in 0..2 {
            let link = match self.link().await {
                Ok(l) => l,
                Err(e) => {
                    last = e;
                    break;
                }
            };
            match self.publish_on(&link, &key, &body, msg.id.as_str(), at).await {
                Ok(()) => {
                    lock(&self.inner.stats).confirmed += 1;
                    return Ok(());
                }
                // The link broke under the message: open a new one and send it once more (a duplicate, if the
                // first one arrived after all, is harmless: R-PUSH-1).
                Err(e) if !link.alive() => last = e,
                Err(e) => {
                    last = e;
                    break;
                }
            }
        }
        lock(&self.inner.stats).failed += 1;
        Err(last.into())
    }

    async fn declare(&self, queue: QueueSpec) -> Result<(), BusError> {
        self.declare_queue(&queue).await.map_err(Into::into)
    }

    async fn subscribe(&self, queue: QueueSpec) -> Result<Subscription, BusError> {
        self.declare_queue(&queue).await?;
        let link = self.link().await?;
        Ok(consume_on(&link.conn, &self.inner.names.queue(&queue), DEFAULT_PREFETCH).await?)
    }

    fn broker_url(&self) -> Option<String> {
        self.inner.push.url.clone()
    }

    /// Closes the bus's connection: every subscription made through [`PushBus::subscribe`] ends; publishing
    /// reconnects. (Receivers on their own connections are cut by the tests' TCP proxy instead.)
    fn fault_cut(&self) -> bool {
        let Ok(mut guard) = self.inner.link.try_lock() else { return false };
        if let Some(link) = guard.take() {
            tokio::spawn(async move {
                let _ = link.conn.close(320, "cut by fault injection".into()).await;
            });
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// PROTOCOL.md §11: the server declares queues with `x-max-length`, a message TTL and `x-expires`.
    #[test]
    fn queue_arguments() {
        let args = QueueLimits::default().arguments();
        let inner = args.inner();
        assert_eq!(inner.get("x-max-length"), Some(&AMQPValue::LongLongInt(1000)));
        assert_eq!(inner.get("x-message-ttl"), Some(&AMQPValue::LongLongInt(300_000)));
        assert_eq!(inner.get("x-expires"), Some(&AMQPValue::LongLongInt(86_400_000)));
        let tiny = QueueLimits { max_length: 1, message_ttl: Duration::ZERO, expires: Duration::from_millis(1) };
        assert_eq!(tiny.arguments().inner().get("x-message-ttl"), Some(&AMQPValue::LongLongInt(1)), "at least 1 ms");
    }

    /// The simulator hands its account out, so it refuses a broker that is not on loopback; the configuration's
    /// `Debug` never shows the password (R-SEC-1).
    #[tokio::test]
    async fn refuses_remote_brokers_and_redacts() {
        let config = AmqpConfig::new("amqps://u:s3cret@broker.example:5671/prod");
        assert!(!format!("{config:?}").contains("s3cret"));
        assert_eq!(AmqpBus::connect(config).await.err(), Some(AmqpError::NotLoopback));
        let bad_prefix = AmqpConfig { prefix: "a b".into(), ..AmqpConfig::new("amqp://u:p@127.0.0.1:1/") };
        assert_eq!(AmqpBus::connect(bad_prefix).await.err(), Some(AmqpError::BadPrefix));
    }
}
