//! Scenario (issue 6): the conformance kit's server-mode suite against our own server (in-process, plain HTTP on
//! loopback, the built-in tenant and `fixtures/conform-accounts.toml`): every case passes, the clock-moving and
//! account-locking cases run alone after the others, and the exit code is 0.

use std::path::PathBuf;
use std::time::Instant;

use roger_sim::conform::case::Verdict;
use roger_sim::conform::{run_server, CommonArgs, ServerArgs};
use roger_sim::server::{start, ServerConfig};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn our_server_passes_the_server_suite() {
    let server =
        start(ServerConfig { plain_http: true, seed: Some(11), ..ServerConfig::default() }).await.expect("server");
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
        assert_eq!(c.verdict, Verdict::Pass, "{}: {}\n{:#?}", c.id, c.reason, c.evidence);
    }
    assert_eq!(report.exit_code, 0);
    server.stop().await;
}
