//! Scenario (issue 5, PROTOCOL.md §11, R-PUSH-1) against the machine's RabbitMQ (`ROGER_AMQP_URL`; skipped
//! without it): the phone's push receiver on the broker.
//!
//! * alice's phone fetches `GET /api/v1/me/push` for its installation and consumes `roger.app.<installation>`;
//!   a job her desktop queues reaches it as a `job.queued` doorbell, and the phone re-reads its list;
//! * its broker connection is cut, and the doorbell of a job queued meanwhile is lost (the queue is purged): the
//!   phone reconnects after a back-off with fresh credentials, and the re-read after the reconnect finds the job
//!   (a missed doorbell is never a missed job).

mod common;

use std::time::Duration;

use common::amqp::{broker_url, clean_up, server, test_config, unique_prefix};
use lapin::options::QueuePurgeOptions;
use roger_proto::api::Job;
use roger_proto::discovery::TransportPolicy;
use roger_proto::push::Id;
use roger_proto::secret::Password;
use roger_sim::amqp::{BrokerPool, ConsumerOptions};
use roger_sim::bus::QueueSpec;
use roger_sim::phone::{ClientConfig, Phone, PushSource};

const WAIT: Duration = Duration::from_secs(15);
const INSTALLATION: &str = "alices-phone";

fn has(jobs: &[Job], id: &str) -> bool {
    jobs.iter().any(|j| j.id == id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_phone_consumes_its_queue_on_the_broker() {
    let Some(url) = broker_url() else { return };
    let s = server(test_config(&url, &unique_prefix("phone")), 1).await;
    let bus = s.server.amqp.clone().expect("broker bus");
    let mut phone = Phone::connect(&ClientConfig::loopback(&s.server.info.discovery)).await.expect("phone");
    let alice = phone.login("acme", "alice", Password::new("alice-pass")).await.expect("signed in");
    let desktop = s.app_login("alice", "alice-pass").await.access_token;

    // The region names the broker; the credentials name this installation's queue (the server declared it).
    let creds = phone.push_credentials(INSTALLATION).await.expect("push credentials");
    assert!(creds.queue.ends_with("roger.app.alices-phone"), "{}", creds.queue);
    let pool = BrokerPool::new(ConsumerOptions::new(TransportPolicy::AllowLoopbackPlain, None, "roger-phone"), 1);
    phone.attach_push(PushSource::Broker(pool.clone()), INSTALLATION).expect("receiver");
    phone.wait_for_jobs(WAIT, |_| true).await.expect("subscribed and read");
    assert!(phone.push_connected(), "consuming: {:?}", phone.push_last_error());

    // The desktop queues a job: the doorbell comes through the broker.
    let job = s.queue_desktop_job(&desktop, "memo.pdf").await;
    phone.wait_for_jobs(WAIT, |jobs| has(jobs, &job)).await.expect("seen by push");
    let stats = phone.push_stats().expect("stats");
    assert_eq!((stats.connects, stats.doorbells, stats.rereads), (1, 1, 2), "{stats:?}");

    // Cut the phone's connection, and lose the doorbell of a job queued meanwhile.
    pool.close().await;
    let late = s.queue_desktop_job(&desktop, "late.pdf").await;
    let queue = QueueSpec::App {
        user_id: Id::new(alice.id.clone()).expect("user id"),
        installation_id: Id::new(INSTALLATION).expect("installation"),
    };
    let deadline = tokio::time::Instant::now() + WAIT;
    while bus.depth(&queue).await != Some(1) {
        assert!(tokio::time::Instant::now() < deadline, "the doorbell reached the queue");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let conn = lapin::Connection::connect(&url, lapin::ConnectionProperties::default()).await.expect("connect");
    let ch = conn.create_channel().await.expect("channel");
    let purged =
        ch.queue_purge(bus.names().queue(&queue).as_str().into(), QueuePurgeOptions::default()).await.expect("purge");
    assert_eq!(purged, 1, "the doorbell is lost");
    let _ = conn.close(200, "OK".into()).await;

    // The phone notices, reconnects after a back-off with fresh credentials, and its re-read finds the job.
    let jobs = phone.wait_for_jobs(WAIT, |jobs| has(jobs, &late)).await.expect("found after the reconnect");
    assert!(has(&jobs, &job));
    let stats = phone.push_stats().expect("stats");
    assert_eq!((stats.ended, stats.connects, stats.doorbells), (1, 2, 1), "{stats:?}");
    assert!(pool.connections_opened() >= 2, "a new broker connection");

    phone.detach_push();
    pool.close().await;
    clean_up(s).await;
}

/// PROTOCOL.md §11: the broker credentials are short-lived, so a receiver ends its subscription before they expire
/// and subscribes again with fresh ones (re-reading its state, as after any reconnect); doorbells keep arriving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_phone_renews_its_broker_credentials() {
    let Some(url) = broker_url() else { return };
    // Credentials good for 8 s: renewed after roger_sim::amqp::MIN_RENEWAL (5 s), the floor.
    let config = roger_sim::amqp::AmqpConfig {
        credentials_ttl: Duration::from_secs(8),
        ..test_config(&url, &unique_prefix("renew"))
    };
    let s = server(config, 1).await;
    let mut phone = Phone::connect(&ClientConfig::loopback(&s.server.info.discovery)).await.expect("phone");
    phone.login("acme", "alice", Password::new("alice-pass")).await.expect("signed in");
    let desktop = s.app_login("alice", "alice-pass").await.access_token;
    let pool = BrokerPool::new(ConsumerOptions::new(TransportPolicy::AllowLoopbackPlain, None, "roger-phone"), 1);
    phone.attach_push(PushSource::Broker(pool.clone()), INSTALLATION).expect("receiver");

    // Nothing happens for longer than the credentials' renewal time: the waiting phone renews on its own.
    let quiet = phone.wait_for_jobs(Duration::from_secs(7), |_| false).await;
    assert!(matches!(quiet, Err(roger_sim::phone::PhoneError::WaitTimeout { .. })), "{quiet:?}");
    let stats = phone.push_stats().expect("stats");
    assert_eq!((stats.connects, stats.ended), (2, 1), "one renewal: {stats:?}");
    assert!(stats.rereads >= 2, "a re-read after each (re)connect: {stats:?}");

    // The renewed subscription carries doorbells.
    let job = s.queue_desktop_job(&desktop, "after-renewal.pdf").await;
    phone.wait_for_jobs(Duration::from_secs(4), |jobs| has(jobs, &job)).await.expect("seen by push");
    assert_eq!(phone.push_stats().expect("stats").doorbells, 1);

    phone.detach_push();
    pool.close().await;
    clean_up(s).await;
}
