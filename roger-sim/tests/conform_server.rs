//! Scenario (issue 6): the conformance kit's server-mode suite against our own server (in-process, plain HTTP on
//! loopback, the built-in tenant and `fixtures/conform-accounts.toml`): every case passes (the TLS-version cases
//! skip over plain HTTP, with that reason), the clock-moving and account-locking cases run alone after the others,
//! and the exit code is 0. Over TLS the TLS-version cases (R-DISC-2) pass too. With `ROGER_AMQP_URL` set the
//! server pushes through that broker (its own name prefix, deleted afterwards) and the push case passes too;
//! without it the push case is skipped with its reason (the region names no broker).

mod common;

use std::path::PathBuf;
use std::time::Instant;

use roger_sim::conform::case::Verdict;
use roger_sim::conform::{run_server, CommonArgs, ServerArgs};
use roger_sim::server::{start, ServerConfig};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn our_server_passes_the_server_suite() {
    let broker = std::env::var("ROGER_AMQP_URL").ok().filter(|u| !u.trim().is_empty());
    let amqp = broker.as_deref().map(roger_sim::conform::broker::case_config);
    let server = start(ServerConfig { plain_http: true, seed: Some(11), amqp, ..ServerConfig::default() })
        .await
        .expect("server");
    let args = ServerArgs {
        discovery: server.info.discovery.clone(),
        fixture: PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/conform-accounts.toml"),
        ca: None,
        allow_loopback_http: true,
        common: CommonArgs { seed: Some(11), quiet: true, ..CommonArgs::new() },
    };
    let started = Instant::now();
    let report = run_server(&args).await.expect("the run starts");
    println!("{}", report.terminal());
    println!("server suite: {} cases in {:.1} s", report.cases.len(), started.elapsed().as_secs_f64());
    assert!(report.cases.len() >= 20, "{}", report.cases.len());
    for c in &report.cases {
        if c.id.starts_with("roger/R-DISC-2/server-") {
            assert_eq!(c.verdict, Verdict::Skip, "{}: no TLS to probe over plain HTTP", c.id);
            assert!(c.reason.contains("plain HTTP"), "{}: {}", c.id, c.reason);
            continue;
        }
        if broker.is_none() && c.id.starts_with("roger/R-PUSH-1/") {
            assert_eq!(c.verdict, Verdict::Skip, "{}: no broker", c.id);
            assert!(c.reason.contains("no push broker"), "{}", c.reason);
            continue;
        }
        assert_eq!(c.verdict, Verdict::Pass, "{}: {}\n{:#?}", c.id, c.reason, c.evidence);
    }
    assert_eq!(report.exit_code, 0);
    if let Some(bus) = server.amqp.clone() {
        bus.delete_topology().await.expect("the test's queues and exchange are deleted");
    }
    server.stop().await;
}

/// R-DISC-2 in server mode: our TLS server (TLS 1.2/1.3, AEAD suites only) refuses the hand-crafted TLS 1.0, TLS 1.1
/// and CBC-only TLS 1.2 hellos and accepts TLS 1.2 with AEAD and TLS 1.3.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_tls_server_passes_the_tls_version_cases() {
    let dir = common::temp_dir("conform-tls");
    let config = ServerConfig { tls_dir: Some(dir.clone()), seed: Some(12), ..ServerConfig::default() };
    let server = start(config).await.expect("server");
    let ca = server.info.ca.clone().expect("a TLS server names its CA");
    let args = ServerArgs {
        discovery: server.info.discovery.clone(),
        fixture: PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/conform-accounts.toml"),
        ca: Some(PathBuf::from(ca)),
        allow_loopback_http: false,
        common: CommonArgs {
            seed: Some(12),
            quiet: true,
            cases: vec!["roger/R-DISC-2/server-*".into()],
            ..CommonArgs::new()
        },
    };
    let report = run_server(&args).await.expect("the run starts");
    println!("{}", report.terminal());
    assert_eq!(report.cases.len(), 3);
    for c in &report.cases {
        assert_eq!(c.verdict, Verdict::Pass, "{}: {}\n{:#?}", c.id, c.reason, c.evidence);
    }
    assert_eq!(report.exit_code, 0);
    server.stop().await;
    let _ = std::fs::remove_dir_all(dir);
}
