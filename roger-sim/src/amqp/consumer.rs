//! The receiver side of the broker (PROTOCOL.md §11): consuming the one queue that `GET /api/v1/device/push` (or
//! `/api/v1/me/push`) names, with the credentials it hands out.
//!
//! A [`BrokerPool`] keeps at most `max_connections` connections per broker account and gives each receiver its
//! own channel and consumer on one of them (AMQP channels are cheap; connections and file descriptors are not),
//! so a process simulating a fleet stays within its descriptor limit. A single printer uses a pool of one.
//!
//! Every delivery is parsed and checked as a doorbell ([`PushEnvelope::parse`], R-PUSH-1) before it is handed on;
//! one that fails is rejected without requeueing and its content is never logged. Deliveries are acknowledged
//! manually by the receiver ([`Delivery::ack`]): a receiver that dies (or loses its connection) before it
//! acknowledges gets the message again, a harmless duplicate. The subscription ends when the connection or the
//! channel ends, or the queue is deleted, and also shortly before the credentials' `expires_at`
//! ([`renew_after`]): the credentials are short-lived (PROTOCOL.md §11), so the receiver then reconnects after a
//! [`Backoff`](super::Backoff) wait with fresh ones and re-reads its state over HTTPS, as after any reconnect.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures_lite::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions, BasicRejectOptions};
use lapin::types::FieldTable;
use lapin::{Acker, Channel, Connection};
use roger_proto::api::PushCredentials;
use roger_proto::discovery::{check_transport, DiscoveryError, TransportPolicy};
use roger_proto::push::PushEnvelope;
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, Mutex};

use super::{connect, parse_url, AmqpError};
use crate::bus::{Acknowledge, BusError, Delivery, Subscription};

/// Deliveries a receiver may hold unacknowledged (AMQP `basic.qos` prefetch): doorbells are tiny and handled one
/// by one, so a small window suffices.
pub const DEFAULT_PREFETCH: u16 = 16;

/// How long before the credentials' `expires_at` a subscription ends for renewal (see [`renew_after`]).
pub const RENEW_MARGIN: Duration = Duration::from_secs(60);
/// The shortest a subscription lives before it is renewed, however soon its credentials expire: a server whose
/// clock runs behind the receiver's, or that hands out credentials already expired, costs a reconnect and a
/// re-read this often, not a busy loop.
pub const MIN_RENEWAL: Duration = Duration::from_secs(5);

/// When a subscription made at `now` with credentials valid until `expires_at` ends so that the receiver fetches
/// fresh ones (PROTOCOL.md §11: short-lived broker credentials): [`RENEW_MARGIN`] before `expires_at`, or halfway
/// there when less than twice the margin is left, and never sooner than [`MIN_RENEWAL`]. The two times come from
/// different clocks (the server's and the receiver's), which is why the floor exists.
pub fn renew_after(expires_at: time::OffsetDateTime, now: time::OffsetDateTime) -> Duration {
    let left = Duration::try_from(expires_at - now).unwrap_or(Duration::ZERO);
    let wait = if left > RENEW_MARGIN * 2 { left - RENEW_MARGIN } else { left / 2 };
    wait.max(MIN_RENEWAL)
}

/// How a receiver reaches the broker, besides what the credentials say.
#[derive(Clone)]
pub struct ConsumerOptions {
    /// A CA (PEM) to trust for `amqps` besides the system roots: the simulator's CA (PROTOCOL.md §13 `ca`).
    pub ca_pem: Option<String>,
    /// R-DISC-2: `amqps` always; plain `amqp` only on loopback when allowed.
    pub policy: TransportPolicy,
    /// Deliveries held unacknowledged at most ([`DEFAULT_PREFETCH`]).
    pub prefetch: u16,
    /// How long connecting (and opening a channel) may take.
    pub connect_timeout: Duration,
    /// The connection name shown on the broker (`roger-mfp`, `roger-desktop`, …).
    pub connection_name: String,
}

impl std::fmt::Debug for ConsumerOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsumerOptions")
            .field("ca_pem", &self.ca_pem.is_some())
            .field("policy", &self.policy)
            .field("prefetch", &self.prefetch)
            .field("connect_timeout", &self.connect_timeout)
            .field("connection_name", &self.connection_name)
            .finish()
    }
}

impl ConsumerOptions {
    /// Options with `policy`, an optional CA, [`DEFAULT_PREFETCH`] and a 10 s connect timeout.
    pub fn new(policy: TransportPolicy, ca_pem: Option<String>, connection_name: impl Into<String>) -> Self {
        Self {
            ca_pem,
            policy,
            prefetch: DEFAULT_PREFETCH,
            connect_timeout: Duration::from_secs(10),
            connection_name: connection_name.into(),
        }
    }
}

/// Why a receiver could not consume its queue.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ConsumerError {
    /// R-DISC-2: the broker URL is not `amqps` (plain `amqp` only on loopback, when allowed), or not a URL.
    #[error("refusing the broker URL: {0}")]
    Insecure(#[from] DiscoveryError),
    /// The credentials are unusable (an empty or overlong queue name, a URL lapin cannot parse).
    #[error("unusable push credentials: {0}")]
    Credentials(&'static str),
    /// The broker refused the connection, the channel or the consumer, or is unreachable.
    #[error(transparent)]
    Broker(#[from] AmqpError),
}

impl From<lapin::Error> for ConsumerError {
    fn from(e: lapin::Error) -> Self {
        Self::Broker(AmqpError::from(e))
    }
}

/// The account a connection is opened with; connections are shared only within one account.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct AccountKey {
    url: String,
    vhost: String,
    username: String,
    /// SHA-256 of the password (the key is kept; the password itself only inside the URI used to connect).
    password: [u8; 32],
}

struct Pooled {
    conn: Connection,
    channels: AtomicUsize,
}

impl Pooled {
    fn alive(&self) -> bool {
        self.conn.status().connected()
    }
}

/// A bounded set of broker connections shared by the receivers of one process (see the module documentation).
pub struct BrokerPool {
    options: ConsumerOptions,
    max_connections: usize,
    conns: Mutex<HashMap<AccountKey, Vec<Arc<Pooled>>>>,
    opened: AtomicU64,
    consumers: AtomicU64,
}

impl std::fmt::Debug for BrokerPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrokerPool")
            .field("options", &self.options)
            .field("max_connections", &self.max_connections)
            .field("opened", &self.opened.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl BrokerPool {
    /// A pool of at most `max_connections` connections per broker account (at least one).
    pub fn new(options: ConsumerOptions, max_connections: usize) -> Arc<Self> {
        Arc::new(Self {
            options,
            max_connections: max_connections.max(1),
            conns: Mutex::new(HashMap::new()),
            opened: AtomicU64::new(0),
            consumers: AtomicU64::new(0),
        })
    }

    /// The options the pool connects with.
    pub fn options(&self) -> &ConsumerOptions {
        &self.options
    }

    /// Connections opened since the pool was made (reconnects included).
    pub fn connections_opened(&self) -> u64 {
        self.opened.load(Ordering::Relaxed)
    }

    /// Live connections now.
    pub async fn live_connections(&self) -> usize {
        self.conns.lock().await.values().flatten().filter(|p| p.alive()).count()
    }

    /// Closes every connection: all subscriptions of the pool end (their unacknowledged deliveries go back to
    /// their queues).
    pub async fn close(&self) {
        let all: Vec<Arc<Pooled>> = self.conns.lock().await.drain().flat_map(|(_, v)| v).collect();
        for p in all {
            let _ = p.conn.close(200, "closing".into()).await;
        }
    }

    /// Consumes the queue the credentials name (PROTOCOL.md §11) on a channel of a pooled connection, with manual
    /// acknowledgements. The [`Subscription`] ends when the connection, the channel or the consumer ends, and
    /// [`renew_after`] the credentials' `expires_at`, so that the receiver reconnects with fresh credentials.
    pub async fn consume(&self, creds: &PushCredentials) -> Result<Subscription, ConsumerError> {
        check_credentials(creds, self.options.policy)?;
        let pooled = self.connection(creds).await?;
        let opened = tokio::time::timeout(self.options.connect_timeout, self.open_consumer(&pooled, &creds.queue))
            .await
            .map_err(|_| AmqpError::Timeout(self.options.connect_timeout))?;
        let (channel, consumer) = match opened {
            Ok(x) => x,
            Err(e) => {
                pooled.channels.fetch_sub(1, Ordering::Relaxed);
                return Err(e);
            }
        };
        let (tx, rx) = mpsc::channel(usize::from(self.options.prefetch.max(1)));
        let renew_at = tokio::time::Instant::now() + renew_after(creds.expires_at, time::OffsetDateTime::now_utc());
        tokio::spawn(forward(pooled, channel, consumer, tx, renew_at));
        Ok(Subscription::from_deliveries(rx))
    }

    async fn open_consumer(&self, pooled: &Pooled, queue: &str) -> Result<(Channel, lapin::Consumer), ConsumerError> {
        let channel = pooled.conn.create_channel().await?;
        channel.basic_qos(self.options.prefetch.max(1), BasicQosOptions::default()).await?;
        let tag = format!("roger-{}", self.consumers.fetch_add(1, Ordering::Relaxed));
        let consumer = channel
            .basic_consume(queue.into(), tag.as_str().into(), BasicConsumeOptions::default(), FieldTable::default())
            .await?;
        Ok((channel, consumer))
    }

    /// A live connection for the credentials' account with a channel slot taken: a new one while fewer than
    /// `max_connections` are live, else the least loaded.
    async fn connection(&self, creds: &PushCredentials) -> Result<Arc<Pooled>, ConsumerError> {
        let key = AccountKey {
            url: creds.url.clone(),
            vhost: creds.vhost.clone(),
            username: creds.username.clone(),
            password: Sha256::digest(creds.password.secret().as_bytes()).into(),
        };
        let mut conns = self.conns.lock().await;
        let list = conns.entry(key).or_default();
        list.retain(|p| p.alive());
        if list.len() >= self.max_connections {
            if let Some(p) = list.iter().min_by_key(|p| p.channels.load(Ordering::Relaxed)) {
                p.channels.fetch_add(1, Ordering::Relaxed);
                return Ok(p.clone());
            }
        }
        let uri = credentials_uri(creds)?;
        let conn =
            connect(uri, self.options.ca_pem.as_deref(), &self.options.connection_name, self.options.connect_timeout)
                .await?;
        self.opened.fetch_add(1, Ordering::Relaxed);
        let pooled = Arc::new(Pooled { conn, channels: AtomicUsize::new(1) });
        list.push(pooled.clone());
        Ok(pooled)
    }
}

/// What a receiver checks of push credentials before it connects: the broker URL's transport (R-DISC-2: `amqps`,
/// plain `amqp` only on loopback when `policy` allows) and a queue name AMQP can carry.
fn check_credentials(creds: &PushCredentials, policy: TransportPolicy) -> Result<(), ConsumerError> {
    check_transport(&creds.url, policy)?;
    if creds.queue.is_empty() || creds.queue.len() > roger_proto::push::MAX_ROUTING_KEY_LEN {
        return Err(ConsumerError::Credentials("the queue name is empty or longer than 255 octets"));
    }
    Ok(())
}

/// The broker URI of push credentials: their URL with their account and virtual host.
fn credentials_uri(creds: &PushCredentials) -> Result<lapin::uri::AMQPUri, ConsumerError> {
    let mut uri = parse_url(&creds.url).map_err(|_| ConsumerError::Credentials("the broker URL does not parse"))?;
    uri.authority.userinfo.username = creds.username.clone();
    uri.authority.userinfo.password = creds.password.secret().to_owned();
    uri.vhost = creds.vhost.clone();
    Ok(uri)
}

/// One message as it came off a queue, before any parsing: what the conformance kit inspects when it judges a
/// server's doorbells (R-PUSH-1: the body and the AMQP properties of PROTOCOL.md §11). Its `Debug` shows sizes
/// and properties only (a broken server's body could carry a secret, R-SEC-1).
#[derive(Clone)]
pub struct RawMessage {
    /// The body, as published.
    pub body: Vec<u8>,
    /// The `content_type` property.
    pub content_type: Option<String>,
    /// The `message_id` property.
    pub message_id: Option<String>,
    /// The `delivery_mode` property (2: persistent).
    pub delivery_mode: Option<u8>,
    /// The routing key it was published with.
    pub routing_key: String,
}

impl std::fmt::Debug for RawMessage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawMessage")
            .field("body_len", &self.body.len())
            .field("content_type", &self.content_type)
            .field("message_id", &self.message_id)
            .field("delivery_mode", &self.delivery_mode)
            .field("routing_key", &self.routing_key)
            .finish()
    }
}

/// A consumer of one queue that hands out [`RawMessage`]s unparsed and acknowledges each as it is taken: the
/// conformance kit's view of a server's push channel (PROTOCOL.md §11, R-PUSH-1), on a connection of its own.
pub struct RawConsumer {
    conn: Connection,
    consumer: lapin::Consumer,
}

impl std::fmt::Debug for RawConsumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawConsumer").field("queue", &self.consumer.queue().as_str()).finish_non_exhaustive()
    }
}

impl RawConsumer {
    /// Connects with the credentials of `GET /api/v1/device/push` (R-DISC-2 as `options.policy` says) and consumes
    /// the queue they name.
    pub async fn open(creds: &PushCredentials, options: &ConsumerOptions) -> Result<Self, ConsumerError> {
        check_credentials(creds, options.policy)?;
        let uri = credentials_uri(creds)?;
        let conn = connect(uri, options.ca_pem.as_deref(), &options.connection_name, options.connect_timeout).await?;
        let opened = tokio::time::timeout(options.connect_timeout, async {
            let channel = conn.create_channel().await?;
            channel.basic_qos(options.prefetch.max(1), BasicQosOptions::default()).await?;
            channel
                .basic_consume(
                    creds.queue.as_str().into(),
                    "roger-conform".into(),
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                )
                .await
        })
        .await;
        match opened {
            Ok(Ok(consumer)) => Ok(Self { conn, consumer }),
            Ok(Err(e)) => {
                let _ = conn.close(200, "OK".into()).await;
                Err(e.into())
            }
            Err(_) => {
                let _ = conn.close(200, "OK".into()).await;
                Err(AmqpError::Timeout(options.connect_timeout).into())
            }
        }
    }

    /// The next message within `timeout` (acknowledged), or `None` when none came or the consumer ended.
    pub async fn next(&mut self, timeout: Duration) -> Option<RawMessage> {
        let d = match tokio::time::timeout(timeout, self.consumer.next()).await {
            Ok(Some(Ok(d))) => d,
            _ => return None,
        };
        let _ = d.acker.ack(BasicAckOptions::default()).await;
        let p = &d.properties;
        Some(RawMessage {
            content_type: p.content_type().as_ref().map(|s| s.as_str().to_owned()),
            message_id: p.message_id().as_ref().map(|s| s.as_str().to_owned()),
            delivery_mode: *p.delivery_mode(),
            routing_key: d.routing_key.as_str().to_owned(),
            body: d.data,
        })
    }

    /// Closes the connection.
    pub async fn close(self) {
        let _ = self.conn.close(200, "OK".into()).await;
    }
}

/// Acknowledges one lapin delivery (PROTOCOL.md §11 manual acks).
struct LapinAck(Acker);

#[async_trait]
impl Acknowledge for LapinAck {
    async fn ack(&self) -> Result<(), BusError> {
        match self.0.ack(BasicAckOptions::default()).await {
            Ok(true) => Ok(()),
            Ok(false) => Err(BusError::Broker("the channel of this delivery is closed".into())),
            Err(e) => Err(BusError::Broker(e.to_string())),
        }
    }
}

/// Wraps a lapin delivery: checked as a doorbell (R-PUSH-1), or rejected without requeueing.
async fn to_delivery(d: lapin::message::Delivery, queue_hint: &str) -> Option<Delivery> {
    match PushEnvelope::parse(&d.data) {
        Ok(envelope) => Some(Delivery::new(envelope, d.redelivered, Some(Box::new(LapinAck(d.acker))))),
        Err(e) => {
            // R-PUSH-1: a message that is not a doorbell is dropped; its content never reaches a log.
            tracing::warn!(queue = %queue_hint, error = %e, "rejected a push message that is not a doorbell");
            let _ = d.acker.reject(BasicRejectOptions { requeue: false }).await;
            None
        }
    }
}

/// Forwards deliveries until the consumer ends or the subscription is dropped, then closes the channel (what is
/// unacknowledged goes back to the queue) and frees the connection's slot.
async fn forward(
    pooled: Arc<Pooled>,
    channel: Channel,
    consumer: lapin::Consumer,
    tx: mpsc::Sender<Delivery>,
    renew_at: tokio::time::Instant,
) {
    forward_loop(channel, consumer, tx, Some(renew_at)).await;
    pooled.channels.fetch_sub(1, Ordering::Relaxed);
}

/// The forwarding loop shared by pooled receivers and [`consume_on`]; it also ends at `renew_at`, if given.
async fn forward_loop(
    channel: Channel,
    mut consumer: lapin::Consumer,
    tx: mpsc::Sender<Delivery>,
    renew_at: Option<tokio::time::Instant>,
) {
    let queue = consumer.queue().to_string();
    let renewal = async {
        match renew_at {
            Some(at) => tokio::time::sleep_until(at).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(renewal);
    loop {
        tokio::select! {
            () = tx.closed() => break,
            () = &mut renewal => {
                tracing::debug!(queue = %queue, "push credentials expire soon: ending the subscription for fresh ones");
                break;
            }
            next = consumer.next() => match next {
                Some(Ok(d)) => {
                    if let Some(delivery) = to_delivery(d, &queue).await {
                        if tx.send(delivery).await.is_err() {
                            break;
                        }
                    }
                }
                Some(Err(e)) => {
                    tracing::debug!(queue = %queue, "push consumer ended: {e}");
                    break;
                }
                None => break,
            },
        }
    }
    if channel.status().connected() {
        let _ = channel.close(200, "OK".into()).await;
    }
}

/// Consumes `queue` on a new channel of `conn` with manual acknowledgements: the server-side consumers of
/// [`AmqpBus::subscribe`](super::AmqpBus) on the bus's own connection.
pub(crate) async fn consume_on(conn: &Connection, queue: &str, prefetch: u16) -> Result<Subscription, AmqpError> {
    let channel = conn.create_channel().await?;
    channel.basic_qos(prefetch.max(1), BasicQosOptions::default()).await?;
    let consumer =
        channel.basic_consume(queue.into(), "".into(), BasicConsumeOptions::default(), FieldTable::default()).await?;
    let (tx, rx) = mpsc::channel(usize::from(prefetch.max(1)));
    tokio::spawn(forward_loop(channel, consumer, tx, None));
    Ok(Subscription::from_deliveries(rx))
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::OffsetDateTime;

    /// Renewal: a margin before `expires_at`, halfway when little is left, never sooner than the floor.
    #[test]
    fn renewal_comes_before_the_credentials_expire() {
        let now = OffsetDateTime::UNIX_EPOCH;
        let at = |secs: i64| now + time::Duration::seconds(secs);
        assert_eq!(renew_after(at(3600), now), Duration::from_secs(3540), "an hour: a minute before");
        assert_eq!(renew_after(at(121), now), Duration::from_secs(61));
        assert_eq!(renew_after(at(120), now), Duration::from_secs(60), "two margins or less: halfway");
        assert_eq!(renew_after(at(30), now), Duration::from_secs(15));
        assert_eq!(renew_after(at(8), now), MIN_RENEWAL, "the floor");
        assert_eq!(renew_after(at(-600), now), MIN_RENEWAL, "already expired (clock skew): the floor, no busy loop");
    }
}
