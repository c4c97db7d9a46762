//! Scenario (issue 5, PROTOCOL.md §11) against the machine's RabbitMQ (`ROGER_AMQP_URL`; skipped without it):
//! delivery is at-least-once with manual acknowledgements. A receiver that dies before it acknowledges gets the
//! message again (`redelivered`), an acknowledged one is gone; a message that is not a doorbell is rejected and
//! never handed to the receiver (R-PUSH-1); the server's queues have `x-max-length` (oldest dropped) and a message
//! TTL; the credentials of `GET /api/v1/device/push` name the prefixed queue and say they are a shared test
//! account; a receiver refuses plain `amqp` to a host that is not loopback (R-DISC-2).

mod common;

use std::time::Duration;

use common::amqp::{broker_url, clean_up, server, test_config, unique_prefix};
use lapin::options::BasicPublishOptions;
use lapin::BasicProperties;
use roger_proto::api::PushCredentials;
use roger_proto::discovery::TransportPolicy;
use roger_proto::push::{Id, PushEnvelope, PushEvent, PushTarget};
use roger_proto::secret::BrokerPassword;
use roger_sim::amqp::{BrokerPool, ConsumerError, ConsumerOptions, QueueLimits};
use roger_sim::bus::{PushBus, QueueSpec, Subscription};
use time::OffsetDateTime;

fn id(s: &str) -> Id {
    Id::new(s).expect("id")
}

fn doorbell(n: u32, device: &str, job: &str) -> PushEnvelope {
    PushEnvelope::new(
        id(&format!("msg_{n}")),
        OffsetDateTime::now_utc(),
        PushTarget::Device(id(device)),
        PushEvent::JobQueued { job_id: id(job) },
    )
}

fn options() -> ConsumerOptions {
    ConsumerOptions::new(TransportPolicy::AllowLoopbackPlain, None, "it-redelivery")
}

async fn next(sub: &mut Subscription) -> Option<roger_sim::bus::Delivery> {
    tokio::time::timeout(Duration::from_secs(10), sub.next_delivery()).await.expect("a delivery or the end in time")
}

async fn nothing(sub: &mut Subscription) {
    assert!(tokio::time::timeout(Duration::from_millis(500), sub.next_delivery()).await.is_err(), "nothing waits");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_that_dies_before_acking_gets_the_message_again() {
    let Some(url) = broker_url() else { return };
    let prefix = unique_prefix("redeliver");
    let s = server(test_config(&url, &prefix), 5).await;
    let bus = s.server.amqp.clone().expect("the server pushes through the broker");

    // The server declares the device's queue and hands out credentials for it (PROTOCOL.md §11).
    let device = s.register_printer().await;
    let device_id = device.device_id.clone().expect("device id");
    let a = s
        .raw(
            "GET",
            "/api/v1/device/push",
            &[("authorization", &format!("Bearer {}", device.access_token.secret()))],
            vec![],
        )
        .await;
    assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.body));
    assert_eq!(a.header("cache-control").as_deref(), Some("no-store"), "R-SEC-1: credentials are not cached");
    let creds: PushCredentials = serde_json::from_slice(&a.body).expect("push credentials");
    assert_eq!(creds.queue, format!("{prefix}roger.device.{device_id}"));
    assert!(creds.shared_test_account, "the simulator says it hands out its shared test account");
    assert!(creds.url.starts_with("amqp://127.0.0.1:") && !creds.url.contains('@'), "no credentials in the URL");
    assert_eq!(s.server.info.amqp.as_deref(), Some(creds.url.as_str()), "the contract line names the broker");

    // 1. A receiver takes the message and dies without acknowledging it.
    bus.publish(&doorbell(1, &device_id, "job_a")).await.expect("confirmed by the broker");
    let pool = BrokerPool::new(options(), 1);
    let mut sub = pool.consume(&creds).await.expect("consume");
    let first = next(&mut sub).await.expect("the message");
    assert_eq!(first.envelope, doorbell(1, &device_id, "job_a").clone_with_time(first.envelope.occurred_at));
    assert!(!first.redelivered && first.needs_ack());
    drop(first);
    drop(sub);
    pool.close().await;

    // 2. The next receiver gets it again, marked redelivered; acknowledged, it is gone.
    let pool = BrokerPool::new(options(), 1);
    let mut sub = pool.consume(&creds).await.expect("consume again");
    let again = next(&mut sub).await.expect("redelivered");
    assert!(again.redelivered, "the broker marks the second delivery");
    assert_eq!(again.envelope.id.as_str(), "msg_1");
    again.ack().await.expect("acknowledged");
    nothing(&mut sub).await;
    drop(sub);
    pool.close().await;
    let pool = BrokerPool::new(options(), 1);
    let mut sub = pool.consume(&creds).await.expect("consume a third time");
    nothing(&mut sub).await;

    // 3. R-PUSH-1: a message that is not a doorbell (a token in it) never reaches the receiver.
    let conn = lapin::Connection::connect(&url, lapin::ConnectionProperties::default()).await.expect("raw connection");
    let ch = conn.create_channel().await.expect("channel");
    let forged = br#"{"id":"m9","type":"code.approved","occurred_at":"2024-01-01T00:00:00Z","device_id":"d","data":{"request_id":"rat_Xk3_9aQ-7fLmZ0pR2sTuVwYb4cDeF6gHiJkLmNoPqRs"}}"#;
    ch.basic_publish(
        bus.names().exchange().as_str().into(),
        format!("device.{device_id}.code.approved").as_str().into(),
        BasicPublishOptions::default(),
        forged,
        BasicProperties::default(),
    )
    .await
    .expect("publish")
    .await
    .expect("confirm");
    bus.publish(&doorbell(2, &device_id, "job_b")).await.expect("confirmed");
    let d = next(&mut sub).await.expect("the good one");
    assert_eq!(d.envelope.id.as_str(), "msg_2", "the forged message was rejected, not delivered");
    d.ack().await.expect("ack");
    nothing(&mut sub).await;
    drop(sub);
    pool.close().await;
    let _ = conn.close(200, "OK".into()).await;

    // 4. R-DISC-2: plain amqp to a host that is not loopback is refused before connecting.
    let remote = PushCredentials { url: "amqp://broker.example:5672".into(), ..creds.clone() };
    let err = BrokerPool::new(options(), 1).consume(&remote).await.expect_err("refused");
    assert!(matches!(err, ConsumerError::Insecure(_)), "{err}");
    let strict = ConsumerOptions::new(TransportPolicy::TlsOnly, None, "it-strict");
    assert!(matches!(BrokerPool::new(strict, 1).consume(&creds).await, Err(ConsumerError::Insecure(_))));
    let wrong_password = PushCredentials { password: BrokerPassword::new("not-the-password"), ..creds.clone() };
    assert!(BrokerPool::new(options(), 1).consume(&wrong_password).await.is_err(), "the broker refuses");

    clean_up(s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queues_are_bounded_by_length_and_age() {
    let Some(url) = broker_url() else { return };
    let prefix = unique_prefix("limits");
    let mut config = test_config(&url, &prefix);
    config.limits = QueueLimits { max_length: 3, message_ttl: Duration::from_millis(800), ..config.limits };
    let s = server(config, 5).await;
    let bus = s.server.amqp.clone().expect("broker bus");
    let queue = QueueSpec::Device(id("dev_limits"));
    bus.declare(queue.clone()).await.expect("declared");
    for n in 1..=5 {
        bus.publish(&doorbell(n, "dev_limits", &format!("job_{n}"))).await.expect("confirmed");
    }
    // x-max-length 3 with the default overflow: the two oldest are dropped.
    assert_eq!(bus.depth(&queue).await, Some(3));
    let mut sub = bus.subscribe(queue.clone()).await.expect("subscribe");
    for n in 3..=5 {
        let d = next(&mut sub).await.expect("message");
        assert_eq!(d.envelope.id.as_str(), format!("msg_{n}"));
        d.ack().await.expect("ack");
    }
    drop(sub);
    // The message TTL: a doorbell nobody took in time is gone.
    bus.publish(&doorbell(6, "dev_limits", "job_6")).await.expect("confirmed");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(bus.depth(&queue).await, Some(0), "expired by x-message-ttl");
    // An unroutable message (no queue bound) is confirmed and dropped, not an error.
    bus.publish(&doorbell(7, "dev_nobody", "job_7")).await.expect("confirmed although unroutable");
    assert!(bus.stats().confirmed >= 7);
    clean_up(s).await;
}

/// A test-only helper: the same envelope with another timestamp (RFC 3339 loses nothing we compare).
trait CloneWithTime {
    fn clone_with_time(&self, at: OffsetDateTime) -> PushEnvelope;
}

impl CloneWithTime for PushEnvelope {
    fn clone_with_time(&self, at: OffsetDateTime) -> PushEnvelope {
        PushEnvelope { occurred_at: at, ..self.clone() }
    }
}
