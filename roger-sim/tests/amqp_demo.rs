//! Scenario (issue 5, PROTOCOL.md §11) against the machine's RabbitMQ (`ROGER_AMQP_URL`; skipped without it): the
//! whole demo story of `roger-sim demo` with every doorbell going through the broker. The printer and the desktop
//! fetch their credentials over HTTP and consume their own queues there (nothing uses the in-process bus); every
//! step must do what it says, the broker must have confirmed the doorbells, and the run deletes its exchange and
//! queues at the end.

mod common;

use common::amqp::{broker_url, test_config, unique_prefix};
use lapin::options::ExchangeDeclareOptions;
use lapin::types::FieldTable;
use lapin::ExchangeKind;
use roger_sim::demo::{run_story, DemoOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_story_over_the_broker() {
    let Some(url) = broker_url() else { return };
    let dir = common::temp_dir("amqp-demo");
    let prefix = unique_prefix("demo");
    let mut options = DemoOptions::new(9, &dir);
    options.amqp = Some(test_config(&url, &prefix));
    let mut lines = Vec::new();
    let report = run_story(&options, &mut |l: &str| lines.push(l.to_owned()))
        .await
        .unwrap_or_else(|f| panic!("the story failed: {f}\n{}", lines.join("\n")));
    assert_eq!(lines.len(), 7, "seven narrated steps");
    assert_eq!(report.jobs_printed, 2, "{:#?}", report.summary());
    assert_eq!(report.desktop_jobs_printed, 1, "the desktop's doorbell came from its queue on the broker");
    assert!(report.reconnected && report.disconnected);
    let broker = report.push_broker.as_deref().expect("pushed through the broker");
    assert!(broker.starts_with("amqp://"), "{broker}");
    // Registration, two session approvals, the desktop's release request, the re-registration: all confirmed.
    assert!(report.push_confirmed >= 4, "{} doorbells confirmed", report.push_confirmed);
    assert!(report.summary().iter().any(|l| l.contains("doorbells confirmed by the broker")));

    // The run deleted what it declared: the exchange is gone (a passive declaration is refused).
    let conn = lapin::Connection::connect(&url, lapin::ConnectionProperties::default()).await.expect("connect");
    let ch = conn.create_channel().await.expect("channel");
    let passive = ExchangeDeclareOptions { passive: true, ..ExchangeDeclareOptions::default() };
    let exchange = format!("{prefix}roger.events");
    let gone = ch.exchange_declare(exchange.as_str().into(), ExchangeKind::Topic, passive, FieldTable::default()).await;
    assert!(gone.is_err(), "the exchange {exchange} was deleted at the end");
    let _ = conn.close(200, "OK".into()).await;
    let _ = std::fs::remove_dir_all(&dir);
}
