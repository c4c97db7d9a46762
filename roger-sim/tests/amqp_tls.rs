//! Scenario (issue 5, PROTOCOL.md §11, R-DISC-2) against the machine's RabbitMQ (`ROGER_AMQP_URL`; skipped
//! without it): `amqps` through a TLS proxy inside the test, in front of the plain broker, with a certificate from
//! the simulator's CA. The server publishes and declares over TLS; the printer fetches its credentials over HTTP,
//! connects with rustls trusting the simulator's CA and gets its session doorbell in well under the 30 s it would
//! otherwise wait between polls; a receiver that does not trust the CA is refused by the TLS handshake.

mod common;
mod mfp_support;

use std::time::{Duration, Instant};

use common::amqp::{broker_url, clean_up, eventually, proxy, server, test_config, unique_prefix, upstream, via};
use mfp_support::{registered, temp_dir, WAIT};
use roger_proto::api::PushCredentials;
use roger_proto::discovery::TransportPolicy;
use roger_sim::amqp::{BrokerPool, ConsumerOptions};
use roger_sim::mfp::PanelState;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_over_amqps_with_the_simulators_ca() {
    let Some(url) = broker_url() else { return };
    let dir = temp_dir("amqp-tls");
    let tls = roger_sim::server::tls::load_or_create(&dir.join("tls"), &["127.0.0.1".to_owned()]).expect("CA and cert");
    let proxy = proxy(upstream(&url).await, Some(tls.config.clone())).await;
    let amqps = via(&url, proxy.addr, "amqps");
    let mut config = test_config(&amqps, &unique_prefix("tls"));
    config.ca_pem = Some(tls.ca_pem.clone());
    let s = server(config, 1).await;
    assert!(s.server.info.amqp.as_deref().is_some_and(|u| u.starts_with("amqps://127.0.0.1:")), "{:?}", s.server.info);

    let mut c = mfp_support::config(&s, &dir.join("printer"));
    c.push = None;
    c.ca = Some(tls.ca_path.clone());
    let (mfp, _device) = registered(&s, c).await;
    let connected = "push: connected to the device queue";
    assert!(eventually(WAIT, || mfp.events().iter().any(|l| l.contains(connected))).await, "{:#?}", mfp.events());

    // With push healthy the printer polls a session code only every 30 s; the doorbell over amqps makes it poll
    // at once.
    let (shown, view) = mfp.wait_until(WAIT, |v| v.state == PanelState::Idle && v.user_code.is_some()).await;
    assert!(shown, "{view:?}");
    let app = s.app_login("alice", "alice-pass").await;
    let approved = Instant::now();
    let a = s.decide(&app.access_token, &view.user_code.expect("code"), true).await;
    assert_eq!(a.status, 204);
    mfp.wait_for(PanelState::Session, WAIT).await.expect("signed in");
    let took = approved.elapsed();
    assert!(took < Duration::from_secs(10), "the doorbell arrived over TLS: {took:?}");
    assert!(mfp.events().iter().any(|l| l.contains("code.approved doorbell")), "{:#?}", mfp.events());

    // A receiver that does not trust the simulator's CA cannot connect.
    let device_token = {
        let store = s.store().await;
        assert!(store["devices"].as_object().is_some_and(|d| !d.is_empty()));
        s.register_printer().await.access_token
    };
    let a = s
        .raw("GET", "/api/v1/device/push", &[("authorization", &format!("Bearer {}", device_token.secret()))], vec![])
        .await;
    let creds: PushCredentials = serde_json::from_slice(&a.body).expect("credentials");
    assert!(creds.url.starts_with("amqps://"));
    let untrusting = ConsumerOptions::new(TransportPolicy::TlsOnly, None, "it-untrusting");
    assert!(BrokerPool::new(untrusting, 1).consume(&creds).await.is_err(), "an unknown CA is refused");
    let trusting = ConsumerOptions::new(TransportPolicy::TlsOnly, Some(tls.ca_pem.clone()), "it-trusting");
    let pool = BrokerPool::new(trusting, 1);
    let sub = pool.consume(&creds).await.expect("amqps with the CA, TLS-only policy");
    drop(sub);
    pool.close().await;

    mfp.stop().await;
    clean_up(s).await;
}
