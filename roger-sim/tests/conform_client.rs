//! Scenario (issue 6): the conformance kit's whole client-mode suite against our own MFP, driven through its §13
//! shim (`roger-sim mfp --shim`, a separate process per case), cases in parallel, each with its own server, proxy
//! and phone. Every case passes, or is skipped with a reason, or is a failure excused by the committed expected
//! failures (`tests/conform_expected_failures.toml`, each with a reason and an expiry date); the exit code is 0.
//! The wall time is printed (target on the 2-core CI machine: 60 s).

use std::path::PathBuf;
use std::time::Instant;

use roger_sim::conform::case::Verdict;
use roger_sim::conform::report::shell_quote;
use roger_sim::conform::{run_client, ClientArgs, CommonArgs};

fn temp_dir(tag: &str) -> PathBuf {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    let dir = std::env::temp_dir().join(format!("roger-it-{tag}-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn our_mfp_passes_the_client_suite() {
    let dir = temp_dir("conform-client");
    let exe = env!("CARGO_BIN_EXE_roger-sim");
    let expected = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/conform_expected_failures.toml");
    let mut args = ClientArgs::new(format!("{} mfp --shim", shell_quote(exe)));
    args.work_dir = Some(dir.join("work"));
    args.common = CommonArgs {
        seed: Some(20_261_126),
        json: Some(dir.join("report.json")),
        junit: Some(dir.join("report.xml")),
        html: Some(dir.join("report.html")),
        expected_failures: Some(expected),
        quiet: true,
        ..CommonArgs::new()
    };
    let started = Instant::now();
    let report = run_client(&args).await.expect("the run starts");
    let wall = started.elapsed();
    println!("{}", report.terminal());
    println!(
        "client suite: {} cases in {:.1} s wall time ({} at a time)",
        report.cases.len(),
        wall.as_secs_f64(),
        args.common.jobs
    );
    assert!(report.cases.len() >= 40, "the whole catalogue ran: {}", report.cases.len());
    for c in &report.cases {
        let ok = match c.verdict {
            Verdict::Pass => true,
            Verdict::Skip => !c.reason.is_empty(),
            Verdict::Fail | Verdict::NonStrict | Verdict::Info => c.expected_failure.is_some(),
        };
        assert!(ok, "{} {}: {}\n{:#?}", c.verdict, c.id, c.reason, c.evidence);
    }
    assert_eq!(report.exit_code, 0);
    assert_eq!(report.summary.must_failed, 0);
    assert!(
        report.expired_expected_failures.is_empty(),
        "an expected failure expired: fix it or renew it with a reason"
    );
    for f in ["report.json", "report.xml", "report.html"] {
        assert!(dir.join(f).metadata().map(|m| m.len() > 0).unwrap_or(false), "{f} written");
    }
    std::fs::remove_dir_all(&dir).ok();
}
