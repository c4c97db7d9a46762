//! The push bus (PROTOCOL.md §11) behind a trait: [`InProcessBus`] by default; the AMQP 0-9-1 bus on a real broker
//! ([`crate::amqp::AmqpBus`], lapin, RabbitMQ) implements the same [`PushBus`].
//!
//! The in-process bus models what the server declares on the broker, so clients see the same behaviour either way:
//!
//! * one topic exchange ([`roger_proto::push::EXCHANGE`]); routing key `device.<id>.<type>` or `user.<id>.<type>`
//!   ([`PushEnvelope::routing_key`]);
//! * queue `roger.device.<device_id>` bound to `device.<device_id>.#`, and one queue per app installation,
//!   `roger.app.<installation_id>` bound to `user.<user_id>.#`, so a phone never eats a desktop's message;
//! * `x-max-length` with the default overflow (drop the oldest) and a per-queue message TTL;
//! * a message published to a declared queue waits there until a consumer takes it; a message no queue is bound
//!   for is dropped (an unroutable message, as on a broker without the `mandatory` flag);
//! * every message is serialised with [`PushEnvelope::to_json`] and parsed back with [`PushEnvelope::parse`] on
//!   delivery, so the receiver's doorbell checks (R-PUSH-1: ids only) run exactly as they would on broker bytes.
//!
//! Delivery is at-least-once on a real broker and the receiver must treat every message as a doorbell: duplicates,
//! reordering and loss are harmless because it re-reads its state over HTTPS, and after a reconnect it re-reads
//! everything (R-PUSH-1). The in-process bus hands each message to one consumer of its queue (auto-acknowledged on
//! hand-out), and may lose messages through the TTL, the length limit or [`InProcessBus::cut`].

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use roger_proto::push::{app_queue, device_binding_key, device_queue, user_binding_key, Id, PushEnvelope, PushError};
use time::{Duration, OffsetDateTime};
use tokio::sync::{mpsc, Notify};

use crate::drive::{system_clock, NowFn};

/// Default `x-max-length` of every queue (PROTOCOL.md §11): beyond it the oldest message is dropped.
pub const DEFAULT_MAX_LENGTH: usize = 1000;

/// Default message TTL (PROTOCOL.md §11 "a message TTL"): a doorbell older than this is useless, because a receiver
/// that was away that long re-reads its state anyway.
pub const DEFAULT_MESSAGE_TTL: Duration = Duration::minutes(5);

/// Why the bus refused an operation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BusError {
    /// An id cannot form a routing key, binding or queue name (PROTOCOL.md §11: ids with `.` are not topic words).
    #[error("routing: {0}")]
    Routing(#[from] PushError),
    /// The bus has shut down.
    #[error("the push bus is closed")]
    Closed,
    /// The broker failed (network, channel or protocol error); for broker-backed buses.
    #[error("broker: {0}")]
    Broker(String),
}

/// A queue the server declares (PROTOCOL.md §11).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum QueueSpec {
    /// `roger.device.<device_id>`, bound to `device.<device_id>.#`.
    Device(Id),
    /// `roger.app.<installation_id>`, bound to `user.<user_id>.#`: one queue per app installation.
    App {
        /// The signed-in user, whose `user.…` messages the queue receives.
        user_id: Id,
        /// The installation (phone or desktop) that owns the queue.
        installation_id: Id,
    },
}

impl QueueSpec {
    /// The queue's name: `roger.device.<id>` or `roger.app.<installation_id>` (PROTOCOL.md §11).
    pub fn queue_name(&self) -> String {
        match self {
            Self::Device(id) => device_queue(id),
            Self::App { installation_id, .. } => app_queue(installation_id),
        }
    }

    /// The binding key of the queue on the topic exchange: `device.<id>.#` or `user.<user_id>.#`. Fails for ids
    /// that are not topic words ([`Id::is_routing_word`]).
    pub fn binding_key(&self) -> Result<String, PushError> {
        match self {
            Self::Device(id) => device_binding_key(id),
            Self::App { user_id, installation_id } => {
                if !installation_id.is_routing_word() {
                    return Err(PushError::BadRoutingKey);
                }
                user_binding_key(user_id)
            }
        }
    }
}

/// The push bus as the server sees it (PROTOCOL.md §11).
///
/// Semantics every implementation keeps: delivery is **at-least-once** and unordered across reconnects; a message
/// is a doorbell (R-PUSH-1), so a receiver may get it twice, late, or never, and always confirms over HTTPS. A
/// [`Subscription`] ends (`None`) when the connection is cut; the receiver then subscribes again and re-reads its
/// state.
#[async_trait]
pub trait PushBus: Send + Sync {
    /// Publishes one envelope to the exchange under its routing key (`device.<id>.<type>` / `user.<id>.<type>`).
    /// A message no queue is bound for is dropped, which is not an error.
    async fn publish(&self, msg: &PushEnvelope) -> Result<(), BusError>;

    /// Declares a queue and its binding (idempotent). The server declares a queue before it hands out push
    /// credentials, so messages published before the client connects wait in the queue. Declaring an app queue
    /// for a different user than before rebinds it, drops what was queued for the previous user, and ends the
    /// queue's current subscriptions.
    async fn declare(&self, queue: QueueSpec) -> Result<(), BusError>;

    /// Declares the queue (as [`declare`](Self::declare)) and starts consuming from it.
    async fn subscribe(&self, queue: QueueSpec) -> Result<Subscription, BusError>;

    /// The broker URL clients connect to (`amqps://…`, PROTOCOL.md §2 and §11), or `None` for a bus that lives
    /// inside the simulator (metadata then says `roger_push: null` to outside clients).
    fn broker_url(&self) -> Option<String>;

    /// Fault injection (DESIGN.md "broker cut"): drops every current subscription, as a broken broker connection
    /// would. Returns whether this bus supports it (the default does not).
    fn fault_cut(&self) -> bool {
        false
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Deliveries and acknowledgements
// ---------------------------------------------------------------------------------------------------------------

/// How a broker-backed subscription settles one delivery (PROTOCOL.md §11: manual acknowledgements, so a receiver
/// that dies before it has handled a message gets it again).
#[async_trait]
pub trait Acknowledge: Send + Sync {
    /// The receiver handled the message: the broker forgets it (AMQP `basic.ack`).
    async fn ack(&self) -> Result<(), BusError>;
}

/// One message as a subscription hands it out, with its acknowledgement (PROTOCOL.md §11).
///
/// A delivery from a broker stays unacknowledged until [`ack`](Self::ack): if the receiver's connection ends
/// first, the broker delivers it again (`redelivered`), which is harmless because every message is a doorbell
/// (R-PUSH-1). Deliveries of the in-process bus are settled when handed out and need no acknowledgement.
pub struct Delivery {
    /// The doorbell (R-PUSH-1: ids only), already parsed and checked.
    pub envelope: PushEnvelope,
    /// The broker delivered this message before to a consumer that did not acknowledge it (AMQP `redelivered`).
    pub redelivered: bool,
    acker: Option<Box<dyn Acknowledge>>,
}

impl fmt::Debug for Delivery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Delivery")
            .field("envelope", &self.envelope)
            .field("redelivered", &self.redelivered)
            .field("needs_ack", &self.acker.is_some())
            .finish()
    }
}

impl Delivery {
    /// A delivery to acknowledge with `acker` (a broker-backed bus), or settled already (`None`).
    pub fn new(envelope: PushEnvelope, redelivered: bool, acker: Option<Box<dyn Acknowledge>>) -> Self {
        Self { envelope, redelivered, acker }
    }

    /// Whether the delivery still waits for [`ack`](Self::ack).
    pub fn needs_ack(&self) -> bool {
        self.acker.is_some()
    }

    /// Acknowledges the delivery (a no-op for a settled one) and hands back the envelope. Fails when the
    /// connection it came on is gone; the broker then delivers the message again, and that duplicate is harmless
    /// (R-PUSH-1).
    pub async fn ack(self) -> Result<PushEnvelope, BusError> {
        if let Some(acker) = &self.acker {
            acker.ack().await?;
        }
        Ok(self.envelope)
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Subscription
// ---------------------------------------------------------------------------------------------------------------

/// A stream of [`PushEnvelope`]s from one queue. [`next`](Self::next) returns `None` once the subscription has
/// ended (connection cut, queue rebound or deleted, bus closed); the receiver then subscribes again and re-reads its
/// state (PROTOCOL.md §11).
///
/// [`next_delivery`](Self::next_delivery) hands out each message with its acknowledgement, for a receiver that
/// acknowledges only once it has acted on the message; [`next`](Self::next) acknowledges at once.
pub struct Subscription {
    inner: SubscriptionInner,
}

enum SubscriptionInner {
    Channel(mpsc::Receiver<PushEnvelope>),
    Deliveries(mpsc::Receiver<Delivery>),
    Local(LocalConsumer),
}

impl fmt::Debug for Subscription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.inner {
            SubscriptionInner::Channel(_) => f.debug_struct("Subscription").field("kind", &"channel").finish(),
            SubscriptionInner::Deliveries(_) => f.debug_struct("Subscription").field("kind", &"broker").finish(),
            SubscriptionInner::Local(c) => f
                .debug_struct("Subscription")
                .field("kind", &"in-process")
                .field("queue", &c.queue)
                .field("ended", &c.ended)
                .finish(),
        }
    }
}

impl Subscription {
    /// A subscription fed by a channel: a broker-backed bus forwards parsed deliveries into `rx` (and drops the
    /// sender when the connection ends).
    pub fn from_receiver(rx: mpsc::Receiver<PushEnvelope>) -> Self {
        Self { inner: SubscriptionInner::Channel(rx) }
    }

    /// A subscription fed with deliveries that still need their acknowledgement (a broker-backed consumer forwards
    /// into `rx`, and drops the sender when its connection ends).
    pub fn from_deliveries(rx: mpsc::Receiver<Delivery>) -> Self {
        Self { inner: SubscriptionInner::Deliveries(rx) }
    }

    /// The next message with its acknowledgement (see [`Delivery`]), waiting for one if the queue is empty; `None`
    /// once the subscription has ended. Cancel-safe: dropping the future loses no message.
    pub async fn next_delivery(&mut self) -> Option<Delivery> {
        match &mut self.inner {
            SubscriptionInner::Channel(rx) => rx.recv().await.map(|e| Delivery::new(e, false, None)),
            SubscriptionInner::Deliveries(rx) => rx.recv().await,
            SubscriptionInner::Local(consumer) => consumer.next().await.map(|e| Delivery::new(e, false, None)),
        }
    }

    /// The next message, acknowledged at once, waiting for one if the queue is empty; `None` once the subscription
    /// has ended. Cancel-safe: dropping the future loses no message. A failed acknowledgement (the connection just
    /// ended) still returns the message: the broker will deliver it again, a harmless duplicate (R-PUSH-1).
    pub async fn next(&mut self) -> Option<PushEnvelope> {
        let delivery = self.next_delivery().await?;
        let envelope = delivery.envelope.clone();
        if let Err(e) = delivery.ack().await {
            tracing::debug!("push: acknowledgement failed ({e}); the broker redelivers");
        }
        Some(envelope)
    }
}

/// A consumer of an in-process queue: takes messages straight from the queue, so they stay queued (subject to TTL
/// and length limit) until handed out.
struct LocalConsumer {
    shared: Arc<Shared>,
    queue: String,
    generation: u64,
    notify: Arc<Notify>,
    ended: bool,
}

enum Take {
    Message(Vec<u8>),
    Empty,
    Ended,
}

impl LocalConsumer {
    async fn next(&mut self) -> Option<PushEnvelope> {
        loop {
            if self.ended {
                return None;
            }
            // Register for wake-ups before looking, so a publish or cut between the look and the wait is not lost.
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            match self.take() {
                Take::Ended => {
                    self.ended = true;
                    return None;
                }
                Take::Message(body) => match PushEnvelope::parse(&body) {
                    Ok(envelope) => return Some(envelope),
                    Err(e) => {
                        // The doorbell check failed (R-PUSH-1): a receiver drops the message, never its content.
                        self.shared.lock().stats.dropped_malformed += 1;
                        tracing::warn!(queue = %self.queue, error = %e, "dropped a push message that is not a doorbell");
                    }
                },
                Take::Empty => notified.await,
            }
        }
    }

    fn take(&self) -> Take {
        let now = (self.shared.now)();
        let ttl = self.shared.config.message_ttl;
        let mut state = self.shared.lock();
        if state.closed {
            return Take::Ended;
        }
        let BusState { queues, stats, .. } = &mut *state;
        let Some(queue) = queues.get_mut(&self.queue) else { return Take::Ended };
        if queue.generation != self.generation {
            return Take::Ended;
        }
        while let Some(message) = queue.messages.pop_front() {
            if now - message.enqueued >= ttl {
                stats.dropped_ttl += 1;
                continue;
            }
            stats.delivered += 1;
            return Take::Message(message.body);
        }
        Take::Empty
    }
}

// ---------------------------------------------------------------------------------------------------------------
// In-process bus
// ---------------------------------------------------------------------------------------------------------------

/// Per-queue limits of the in-process bus (PROTOCOL.md §11: the server declares queues with `x-max-length` and a
/// message TTL).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BusConfig {
    /// `x-max-length`: beyond it the oldest message is dropped (RabbitMQ's default `drop-head` overflow).
    pub max_length: usize,
    /// Message TTL: a message older than this (by the bus clock) is dropped when it reaches the head of the queue.
    pub message_ttl: Duration,
}

impl Default for BusConfig {
    fn default() -> Self {
        Self { max_length: DEFAULT_MAX_LENGTH, message_ttl: DEFAULT_MESSAGE_TTL }
    }
}

/// What the in-process bus did so far (for the demo's summary and `/sim`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BusStats {
    /// Envelopes published.
    pub published: u64,
    /// Envelopes no queue was bound for (dropped).
    pub unroutable: u64,
    /// Messages handed to a consumer.
    pub delivered: u64,
    /// Messages dropped because their queue was full (`x-max-length`).
    pub dropped_max_length: u64,
    /// Messages dropped because they outlived the message TTL.
    pub dropped_ttl: u64,
    /// Messages that failed the doorbell parse on delivery (R-PUSH-1).
    pub dropped_malformed: u64,
}

struct Queued {
    body: Vec<u8>,
    enqueued: OffsetDateTime,
}

struct Queue {
    binding: String,
    messages: VecDeque<Queued>,
    /// Bumped when the queue's subscriptions are ended (cut, rebind); consumers of an older generation end.
    generation: u64,
    notify: Arc<Notify>,
}

#[derive(Default)]
struct BusState {
    queues: HashMap<String, Queue>,
    closed: bool,
    stats: BusStats,
    /// Source of queue generations, unique across the bus's life, so a consumer of a deleted queue never
    /// resumes on a re-declared queue of the same name.
    last_generation: u64,
}

impl BusState {
    fn fresh_generation(&mut self) -> u64 {
        self.last_generation += 1;
        self.last_generation
    }
}

struct Shared {
    state: Mutex<BusState>,
    config: BusConfig,
    now: NowFn,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, BusState> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn close(&self) {
        let mut state = self.lock();
        state.closed = true;
        for queue in state.queues.values() {
            queue.notify.notify_waiters();
        }
    }
}

/// Closes the bus when the last [`InProcessBus`] handle goes, so consumers see `None` instead of waiting forever.
struct HandleGuard(Arc<Shared>);

impl Drop for HandleGuard {
    fn drop(&mut self) {
        self.0.close();
    }
}

/// The in-process push bus (PROTOCOL.md §11 "the simulator also has an in-process bus"): topic routing, per-queue
/// length limit and TTL, queues that hold messages until a consumer comes, and a broker-cut hook. Cheap to clone;
/// clones share the queues. The bus closes when the last handle is dropped.
#[derive(Clone)]
pub struct InProcessBus {
    shared: Arc<Shared>,
    _guard: Arc<HandleGuard>,
}

impl fmt::Debug for InProcessBus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.shared.lock();
        f.debug_struct("InProcessBus")
            .field("config", &self.shared.config)
            .field("queues", &state.queues.len())
            .field("stats", &state.stats)
            .finish()
    }
}

impl Default for InProcessBus {
    /// [`InProcessBus::new`].
    fn default() -> Self {
        Self::new()
    }
}

impl InProcessBus {
    /// A bus with the default limits ([`BusConfig::default`]) whose TTL is measured on the system clock.
    pub fn new() -> Self {
        Self::with_config(BusConfig::default(), system_clock())
    }

    /// A bus with `config` limits whose TTL is measured by `now` (pass the server's clock, system or virtual, so
    /// `/sim/clock/advance` ages queued messages too).
    pub fn with_config(config: BusConfig, now: NowFn) -> Self {
        let shared = Arc::new(Shared { state: Mutex::new(BusState::default()), config, now });
        Self { _guard: Arc::new(HandleGuard(shared.clone())), shared }
    }

    /// The limits this bus applies.
    pub fn config(&self) -> BusConfig {
        self.shared.config
    }

    /// Test hook for a broker cut (DESIGN.md faults): ends every current subscription (their [`Subscription::next`]
    /// returns `None`, and they must subscribe again). Queued messages stay queued for the next consumer.
    pub fn cut(&self) {
        let mut state = self.shared.lock();
        let generation = state.fresh_generation();
        for queue in state.queues.values_mut() {
            queue.generation = generation;
            queue.notify.notify_waiters();
        }
    }

    /// Deletes a queue (e.g. when a device is removed, PROTOCOL.md §6): its messages go, its subscriptions end.
    /// Returns whether it existed.
    pub fn delete_queue(&self, queue: &QueueSpec) -> bool {
        let removed = self.shared.lock().queues.remove(&queue.queue_name());
        match removed {
            Some(q) => {
                q.notify.notify_waiters();
                true
            }
            None => false,
        }
    }

    /// How many messages wait in a queue (including any that will be dropped by the TTL on delivery), or `None` if
    /// it is not declared.
    pub fn depth(&self, queue: &QueueSpec) -> Option<usize> {
        self.shared.lock().queues.get(&queue.queue_name()).map(|q| q.messages.len())
    }

    /// Counters of what the bus did.
    pub fn stats(&self) -> BusStats {
        self.shared.lock().stats
    }

    fn declare_now(&self, spec: &QueueSpec) -> Result<(String, u64, Arc<Notify>), BusError> {
        let binding = spec.binding_key()?;
        let name = spec.queue_name();
        let mut state = self.shared.lock();
        if state.closed {
            return Err(BusError::Closed);
        }
        let generation = state.fresh_generation();
        let queue = state.queues.entry(name.clone()).or_insert_with(|| Queue {
            binding: binding.clone(),
            messages: VecDeque::new(),
            generation,
            notify: Arc::new(Notify::new()),
        });
        if queue.binding != binding {
            // The installation now belongs to another user: nothing of the previous user's may reach it.
            queue.binding = binding;
            queue.messages.clear();
            queue.generation = generation;
            queue.notify.notify_waiters();
        }
        Ok((name, queue.generation, queue.notify.clone()))
    }
}

#[async_trait]
impl PushBus for InProcessBus {
    async fn publish(&self, msg: &PushEnvelope) -> Result<(), BusError> {
        let key = msg.routing_key()?;
        let body = msg.to_json();
        let now = (self.shared.now)();
        let max_length = self.shared.config.max_length;
        let mut state = self.shared.lock();
        if state.closed {
            return Err(BusError::Closed);
        }
        let BusState { queues, stats, .. } = &mut *state;
        stats.published += 1;
        let mut routed = false;
        for queue in queues.values_mut().filter(|q| topic_matches(&q.binding, &key)) {
            routed = true;
            queue.messages.push_back(Queued { body: body.clone(), enqueued: now });
            while queue.messages.len() > max_length {
                queue.messages.pop_front();
                stats.dropped_max_length += 1;
            }
            queue.notify.notify_waiters();
        }
        if !routed {
            stats.unroutable += 1;
        }
        Ok(())
    }

    async fn declare(&self, queue: QueueSpec) -> Result<(), BusError> {
        self.declare_now(&queue).map(|_| ())
    }

    async fn subscribe(&self, queue: QueueSpec) -> Result<Subscription, BusError> {
        let (name, generation, notify) = self.declare_now(&queue)?;
        let consumer = LocalConsumer { shared: self.shared.clone(), queue: name, generation, notify, ended: false };
        Ok(Subscription { inner: SubscriptionInner::Local(consumer) })
    }

    fn broker_url(&self) -> Option<String> {
        None
    }

    fn fault_cut(&self) -> bool {
        self.cut();
        true
    }
}

/// AMQP 0-9-1 topic matching: words separated by `.`; `*` matches exactly one word, `#` zero or more.
pub fn topic_matches(binding: &str, routing_key: &str) -> bool {
    fn matches(binding: &[&str], key: &[&str]) -> bool {
        match binding.split_first() {
            None => key.is_empty(),
            Some((&"#", rest)) => (0..=key.len()).any(|skip| matches(rest, &key[skip..])),
            Some((&"*", rest)) => key.split_first().is_some_and(|(_, tail)| matches(rest, tail)),
            Some((word, rest)) => key.split_first().is_some_and(|(first, tail)| first == word && matches(rest, tail)),
        }
    }
    let binding: Vec<&str> = binding.split('.').collect();
    let key: Vec<&str> = routing_key.split('.').collect();
    matches(&binding, &key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use roger_proto::push::{PushEvent, PushTarget};
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::Duration as StdDuration;

    fn id(s: &str) -> Id {
        Id::new(s).expect("id")
    }

    static NEXT: AtomicU64 = AtomicU64::new(0);

    fn env(target: PushTarget, event: PushEvent) -> PushEnvelope {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let at = OffsetDateTime::from_unix_timestamp(1_700_000_000).expect("time");
        PushEnvelope::new(id(&format!("m{n}")), at, target, event)
    }

    fn to_device(device: &str, job: &str) -> PushEnvelope {
        env(PushTarget::Device(id(device)), PushEvent::JobQueued { job_id: id(job) })
    }

    fn to_user(user: &str, job: &str) -> PushEnvelope {
        env(PushTarget::User(id(user)), PushEvent::JobQueued { job_id: id(job) })
    }

    fn job_of(e: &PushEnvelope) -> &str {
        match &e.event {
            PushEvent::JobQueued { job_id } => job_id.as_str(),
            other => panic!("unexpected {other:?}"),
        }
    }

    fn app(user: &str, installation: &str) -> QueueSpec {
        QueueSpec::App { user_id: id(user), installation_id: id(installation) }
    }

    async fn next(sub: &mut Subscription) -> Option<PushEnvelope> {
        tokio::time::timeout(StdDuration::from_secs(5), sub.next()).await.expect("a message or the end in time")
    }

    async fn nothing_waiting(sub: &mut Subscription) {
        assert!(tokio::time::timeout(StdDuration::from_millis(50), sub.next()).await.is_err(), "no message expected");
    }

    #[derive(Clone)]
    struct TestClock(Arc<Mutex<OffsetDateTime>>);

    impl TestClock {
        fn new() -> Self {
            Self(Arc::new(Mutex::new(OffsetDateTime::from_unix_timestamp(1_700_000_000).expect("time"))))
        }
        fn advance(&self, d: Duration) {
            *self.0.lock().expect("clock") += d;
        }
        fn now_fn(&self) -> NowFn {
            let c = self.0.clone();
            Arc::new(move || *c.lock().expect("clock"))
        }
    }

    #[tokio::test]
    async fn routes_device_and_user_messages_to_their_queues() {
        let bus = InProcessBus::new();
        let mut dev1 = bus.subscribe(QueueSpec::Device(id("d1"))).await.expect("sub");
        let mut dev2 = bus.subscribe(QueueSpec::Device(id("d2"))).await.expect("sub");
        let mut phone = bus.subscribe(app("u1", "phone-1")).await.expect("sub");

        bus.publish(&to_device("d1", "j1")).await.expect("publish");
        bus.publish(&to_user("u1", "j2")).await.expect("publish");
        let got = next(&mut dev1).await.expect("message");
        assert_eq!(job_of(&got), "j1");
        assert_eq!(got.target, PushTarget::Device(id("d1")));
        assert_eq!(job_of(&next(&mut phone).await.expect("message")), "j2");
        nothing_waiting(&mut dev1).await;
        nothing_waiting(&mut dev2).await;
        nothing_waiting(&mut phone).await;

        // Nothing bound: dropped, not an error.
        bus.publish(&to_user("u9", "j3")).await.expect("publish");
        assert_eq!(bus.stats().unroutable, 1);
        assert_eq!(bus.broker_url(), None);
    }

    #[tokio::test]
    async fn every_installation_of_a_user_gets_user_messages() {
        let bus = InProcessBus::new();
        let mut phone = bus.subscribe(app("u1", "phone-1")).await.expect("sub");
        let mut desktop = bus.subscribe(app("u1", "desktop-1")).await.expect("sub");
        let mut other = bus.subscribe(app("u2", "phone-2")).await.expect("sub");
        bus.publish(&to_user("u1", "j1")).await.expect("publish");
        assert_eq!(job_of(&next(&mut phone).await.expect("phone")), "j1");
        assert_eq!(job_of(&next(&mut desktop).await.expect("desktop")), "j1", "the phone did not eat it");
        nothing_waiting(&mut other).await;
        assert_eq!(bus.stats().delivered, 2);
    }

    #[tokio::test]
    async fn messages_wait_in_declared_queues() {
        let bus = InProcessBus::new();
        bus.declare(QueueSpec::Device(id("d1"))).await.expect("declare");
        bus.publish(&to_device("d1", "j1")).await.expect("publish");
        bus.publish(&to_device("d1", "j2")).await.expect("publish");
        assert_eq!(bus.depth(&QueueSpec::Device(id("d1"))), Some(2));
        // Not declared yet: a broker drops what no queue is bound for.
        bus.publish(&to_device("d2", "lost")).await.expect("publish");

        let mut sub = bus.subscribe(QueueSpec::Device(id("d1"))).await.expect("sub");
        assert_eq!(job_of(&next(&mut sub).await.expect("m")), "j1");
        assert_eq!(job_of(&next(&mut sub).await.expect("m")), "j2");
        let mut sub2 = bus.subscribe(QueueSpec::Device(id("d2"))).await.expect("sub");
        nothing_waiting(&mut sub2).await;

        // A consumer waiting on an empty queue is woken by a publish.
        let waiter = tokio::spawn(async move { sub.next().await });
        tokio::time::sleep(StdDuration::from_millis(20)).await;
        bus.publish(&to_device("d1", "j3")).await.expect("publish");
        let got = tokio::time::timeout(StdDuration::from_secs(5), waiter).await.expect("in time").expect("join");
        assert_eq!(got.as_ref().map(job_of), Some("j3"));
    }

    #[tokio::test]
    async fn full_queue_drops_the_oldest() {
        let config = BusConfig { max_length: 3, ..BusConfig::default() };
        let bus = InProcessBus::with_config(config, system_clock());
        bus.declare(QueueSpec::Device(id("d1"))).await.expect("declare");
        for j in ["j1", "j2", "j3", "j4", "j5"] {
            bus.publish(&to_device("d1", j)).await.expect("publish");
        }
        assert_eq!(bus.depth(&QueueSpec::Device(id("d1"))), Some(3));
        let mut sub = bus.subscribe(QueueSpec::Device(id("d1"))).await.expect("sub");
        for j in ["j3", "j4", "j5"] {
            assert_eq!(job_of(&next(&mut sub).await.expect("m")), j);
        }
        nothing_waiting(&mut sub).await;
        assert_eq!(bus.stats().dropped_max_length, 2);
        assert_eq!(DEFAULT_MAX_LENGTH, 1000);
        assert_eq!(InProcessBus::new().config().max_length, 1000);
    }

    #[tokio::test]
    async fn expired_messages_are_dropped_on_delivery() {
        let clock = TestClock::new();
        let config = BusConfig { message_ttl: Duration::seconds(60), ..BusConfig::default() };
        let bus = InProcessBus::with_config(config, clock.now_fn());
        bus.declare(QueueSpec::Device(id("d1"))).await.expect("declare");
        bus.publish(&to_device("d1", "old")).await.expect("publish");
        clock.advance(Duration::seconds(30));
        bus.publish(&to_device("d1", "newer")).await.expect("publish");
        clock.advance(Duration::seconds(30));
        let mut sub = bus.subscribe(QueueSpec::Device(id("d1"))).await.expect("sub");
        assert_eq!(job_of(&next(&mut sub).await.expect("m")), "newer", "60 s old is expired, 30 s is not");
        assert_eq!(bus.stats().dropped_ttl, 1);
    }

    #[tokio::test]
    async fn cut_ends_subscriptions_and_resubscribe_resumes() {
        let bus = InProcessBus::new();
        let mut dev = bus.subscribe(QueueSpec::Device(id("d1"))).await.expect("sub");
        let mut phone = bus.subscribe(app("u1", "phone-1")).await.expect("sub");
        let waiting = tokio::spawn(async move { phone.next().await });
        tokio::time::sleep(StdDuration::from_millis(20)).await;

        assert!(bus.fault_cut());
        assert_eq!(next(&mut dev).await, None);
        assert_eq!(next(&mut dev).await, None, "stays ended");
        let woke = tokio::time::timeout(StdDuration::from_secs(5), waiting).await.expect("woken").expect("join");
        assert_eq!(woke, None, "a waiting consumer sees the cut");

        // Messages published during the outage wait for the new subscription.
        bus.publish(&to_device("d1", "j1")).await.expect("publish");
        let mut dev = bus.subscribe(QueueSpec::Device(id("d1"))).await.expect("resubscribe");
        assert_eq!(job_of(&next(&mut dev).await.expect("m")), "j1");
    }

    #[tokio::test]
    async fn rebinding_an_installation_purges_the_previous_users_messages() {
        let bus = InProcessBus::new();
        let mut old = bus.subscribe(app("u1", "phone-1")).await.expect("sub");
        bus.publish(&to_user("u1", "private")).await.expect("publish");
        let mut new = bus.subscribe(app("u2", "phone-1")).await.expect("sub");
        assert_eq!(next(&mut old).await, None, "the previous user's subscription ends");
        nothing_waiting(&mut new).await;
        bus.publish(&to_user("u1", "j-u1")).await.expect("publish");
        bus.publish(&to_user("u2", "j-u2")).await.expect("publish");
        assert_eq!(job_of(&next(&mut new).await.expect("m")), "j-u2");
        nothing_waiting(&mut new).await;
    }

    #[tokio::test]
    async fn delete_queue_and_dropping_the_bus_end_subscriptions() {
        let bus = InProcessBus::new();
        let mut dev = bus.subscribe(QueueSpec::Device(id("d1"))).await.expect("sub");
        assert!(bus.delete_queue(&QueueSpec::Device(id("d1"))));
        assert!(!bus.delete_queue(&QueueSpec::Device(id("d1"))));
        assert_eq!(next(&mut dev).await, None);

        let mut dev = bus.subscribe(QueueSpec::Device(id("d1"))).await.expect("sub");
        let clone = bus.clone();
        drop(bus);
        clone.publish(&to_device("d1", "j1")).await.expect("a clone keeps the bus open");
        assert_eq!(job_of(&next(&mut dev).await.expect("m")), "j1");
        drop(clone);
        assert_eq!(next(&mut dev).await, None, "closed with the last handle");
    }

    #[tokio::test]
    async fn ids_that_are_not_topic_words_are_refused() {
        let bus = InProcessBus::new();
        let err = bus.subscribe(QueueSpec::Device(id("a.b"))).await.expect_err("dotted id");
        assert_eq!(err, BusError::Routing(PushError::BadRoutingKey));
        assert!(bus.declare(app("u.1", "p1")).await.is_err());
        assert!(bus.declare(app("u1", "p.1")).await.is_err());
        assert!(bus.publish(&to_device("a.b", "j1")).await.is_err());
    }

    #[tokio::test]
    async fn channel_subscriptions_for_broker_backed_buses() {
        let (tx, rx) = mpsc::channel(4);
        let mut sub = Subscription::from_receiver(rx);
        tx.send(to_device("d1", "j1")).await.expect("send");
        drop(tx);
        assert_eq!(job_of(&next(&mut sub).await.expect("m")), "j1");
        assert_eq!(next(&mut sub).await, None);
    }

    struct CountingAcker(Arc<AtomicU64>, bool);

    #[async_trait]
    impl Acknowledge for CountingAcker {
        async fn ack(&self) -> Result<(), BusError> {
            self.0.fetch_add(1, Ordering::Relaxed);
            if self.1 {
                Ok(())
            } else {
                Err(BusError::Broker("connection gone".into()))
            }
        }
    }

    /// PROTOCOL.md §11 manual acks: `next_delivery` leaves the acknowledgement to the receiver, `next` acknowledges
    /// at once, and a failed acknowledgement still yields the message (the broker's redelivery is harmless).
    #[tokio::test]
    async fn broker_deliveries_are_acknowledged_explicitly_or_by_next() {
        let acks = Arc::new(AtomicU64::new(0));
        let (tx, rx) = mpsc::channel(4);
        let mut sub = Subscription::from_deliveries(rx);
        let acker = |ok| Some(Box::new(CountingAcker(acks.clone(), ok)) as Box<dyn Acknowledge>);
        tx.send(Delivery::new(to_device("d1", "j1"), false, acker(true))).await.expect("send");
        tx.send(Delivery::new(to_device("d1", "j2"), true, acker(true))).await.expect("send");
        tx.send(Delivery::new(to_device("d1", "j3"), false, acker(false))).await.expect("send");
        drop(tx);

        let first = sub.next_delivery().await.expect("delivery");
        assert!(first.needs_ack() && !first.redelivered);
        assert_eq!(acks.load(Ordering::Relaxed), 0, "not acknowledged until the receiver says so");
        assert_eq!(job_of(&first.ack().await.expect("acked")), "j1");
        assert_eq!(acks.load(Ordering::Relaxed), 1);

        assert_eq!(job_of(&next(&mut sub).await.expect("m")), "j2");
        assert_eq!(acks.load(Ordering::Relaxed), 2, "next acknowledges");
        assert_eq!(job_of(&next(&mut sub).await.expect("m")), "j3", "a failed ack still yields the message");
        assert_eq!(acks.load(Ordering::Relaxed), 3);
        assert!(next(&mut sub).await.is_none());

        // In-process deliveries are settled when handed out.
        let bus = InProcessBus::new();
        let mut local = bus.subscribe(QueueSpec::Device(id("d1"))).await.expect("sub");
        bus.publish(&to_device("d1", "j4")).await.expect("publish");
        let d = tokio::time::timeout(StdDuration::from_secs(5), local.next_delivery()).await.expect("in time");
        let d = d.expect("delivery");
        assert!(!d.needs_ack());
        assert_eq!(job_of(&d.ack().await.expect("no-op")), "j4");
    }

    #[test]
    fn topic_matching() {
        assert!(topic_matches("device.d1.#", "device.d1.job.queued"));
        assert!(topic_matches("device.d1.#", "device.d1"));
        assert!(!topic_matches("device.d1.#", "device.d10.job.queued"));
        assert!(!topic_matches("device.d1.#", "user.d1.job.queued"));
        assert!(topic_matches("user.*.config.changed", "user.u1.config.changed"));
        assert!(!topic_matches("user.*.config.changed", "user.config.changed"));
        assert!(topic_matches("#", "anything.at.all"));
        assert!(topic_matches("a.#.z", "a.z"));
        assert!(topic_matches("a.#.z", "a.b.c.z"));
        assert!(!topic_matches("a.#.z", "a.b.c"));
    }

    #[test]
    fn queue_names_follow_protocol() {
        assert_eq!(QueueSpec::Device(id("d1")).queue_name(), "roger.device.d1");
        assert_eq!(QueueSpec::Device(id("d1")).binding_key().as_deref(), Ok("device.d1.#"));
        assert_eq!(app("u1", "inst-1").queue_name(), "roger.app.inst-1");
        assert_eq!(app("u1", "inst-1").binding_key().as_deref(), Ok("user.u1.#"));
    }
}
