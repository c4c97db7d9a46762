//! Scenario: the conformance kit's whole client-mode suite against our own MFP, driven through its shim
//! (`roger-sim mfp --shim`, a separate process per case; docs/protocol.md §8), cases in parallel, each with its own
//! server, proxy and phone. Every case passes, or is skipped with a reason, or is a failure excused by the committed
//! expected failures (`tests/conform_expected_failures.toml`, each with a reason and an expiry date); the exit code
//! is 0. The wall time is printed (target on the 2-core CI machine: 60 s).
//!
//! And the kit waits as a person would for printers that behave differently from ours but within the rules: one
//! that reports `idle` a moment before it draws its first session QR, and one that shows no new registration code
//! after the old one expired until the user asks again (RFC 8628 §3.5). Both are played by a small wrapper around
//! our MFP's shim that changes only what its panel shows.

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
    // With a broker the push cases run, and every verdict must be the committed one.
    let broker = std::env::var("ROGER_AMQP_URL").ok().filter(|u| !u.trim().is_empty());
    let verdicts = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/conform_expected_verdicts_mfp.toml");
    let mut args = ClientArgs::new(format!("{} mfp --shim", shell_quote(exe)));
    args.work_dir = Some(dir.join("work"));
    args.amqp = broker.clone();
    args.common = CommonArgs {
        seed: Some(20_261_126),
        json: Some(dir.join("report.json")),
        junit: Some(dir.join("report.xml")),
        html: Some(dir.join("report.html")),
        expected_failures: Some(expected),
        expected_verdicts: broker.is_some().then_some(verdicts),
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
    assert!(report.verdict_diffs.is_empty(), "{:#?}", report.verdict_diffs);
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

/// A shim wrapper (Python, beside our MFP's shim) that changes only what the panel shows:
/// * `late-qr`: the panel shows no code for 400 ms after it first reports `idle` (it draws its QR a moment later);
/// * `wait-for-user`: once a second registration code exists, the panel shows no code until the kit sends
///   `register` again (a printer that waits for the user before restarting, RFC 8628 §3.5).
const WRAPPER: &str = r#"
import json, subprocess, sys, time
mode, cmd = sys.argv[1], sys.argv[2]
child = subprocess.Popen(["sh", "-c", cmd], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
first_idle, first_code, asked_again = None, None, False
for line in sys.stdin:
    req = json.loads(line)
    child.stdin.write(line)
    child.stdin.flush()
    out = child.stdout.readline()
    if not out:
        break
    ans = json.loads(out)
    op = req.get("op")
    if mode == "late-qr" and ans.get("state") == "idle":
        now = time.monotonic()
        first_idle = now if first_idle is None else first_idle
        if now - first_idle < 0.4:
            ans.update({"qr": None, "user_code": None, "screenshot": None})
    if mode == "wait-for-user":
        if op == "register" and first_code is not None:
            asked_again = True
        code = ans.get("user_code")
        if code and first_code is None:
            first_code = code
        elif code and code != first_code and not asked_again:
            ans.update({"qr": None, "user_code": None, "screenshot": None})
    sys.stdout.write(json.dumps(ans) + "\n")
    sys.stdout.flush()
child.stdin.close()
child.wait()
"#;

/// The command of our MFP's shim behind [`WRAPPER`] in `mode`, or `None` without python3.
fn wrapped_shim(dir: &std::path::Path, mode: &str) -> Option<String> {
    let ok = std::process::Command::new("python3").arg("--version").output().is_ok_and(|o| o.status.success());
    if !ok {
        eprintln!("skipped: python3 is not installed");
        return None;
    }
    let script = dir.join("wrapper.py");
    std::fs::write(&script, WRAPPER).expect("wrapper");
    let inner = format!("{} mfp --shim", shell_quote(env!("CARGO_BIN_EXE_roger-sim")));
    Some(format!("python3 {} {mode} {}", shell_quote(&script.display().to_string()), shell_quote(&inner)))
}

async fn run_wrapped(tag: &str, mode: &str, cases: &[&str]) -> Option<roger_sim::conform::report::Report> {
    let dir = temp_dir(tag);
    let shim = wrapped_shim(&dir, mode)?;
    let mut args = ClientArgs::new(shim);
    args.work_dir = Some(dir.join("work"));
    args.common = CommonArgs {
        seed: Some(7),
        cases: cases.iter().map(|c| (*c).to_owned()).collect(),
        quiet: true,
        ..CommonArgs::new()
    };
    let report = run_client(&args).await.expect("the run starts");
    println!("{}", report.terminal());
    std::fs::remove_dir_all(&dir).ok();
    Some(report)
}

/// A panel that reports `idle` and draws its first QR a moment later is asked again before the kit concludes it
/// shows no code: the cases that open a QR session pass (they failed with "the panel shows neither a QR nor a user
/// code" when the kit approved whatever the `wait idle` answer showed).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_panel_that_draws_its_qr_after_idle_is_waited_for() {
    let cases = [
        "rfc8628/3.4/session-by-qr",
        "roger/sec8/step2-pin-after-qr",
        "rfc7009/2.1/logout-revokes-user-tokens",
        "roger/R-QR-1/session-qr-and-user-code",
    ];
    let Some(report) = run_wrapped("conform-late-qr", "late-qr", &cases).await else { return };
    assert_eq!(report.cases.len(), cases.len());
    for c in &report.cases {
        assert_eq!(c.verdict, Verdict::Pass, "{}: {}\n{:#?}", c.id, c.reason, c.evidence);
    }
}

/// RFC 8628 §3.5: after `expired_token` a client "SHOULD wait for user interaction before restarting". A printer
/// that shows nothing until the user asks again passes the expired-code case (it was NON-STRICT when the case
/// wanted a new code on the panel within seconds).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_printer_that_waits_for_the_user_after_expiry_passes() {
    let case = "roger/sec5/expired-registration-code-replaced";
    let Some(report) = run_wrapped("conform-wait-user", "wait-for-user", &[case]).await else { return };
    let c = &report.cases[0];
    assert_eq!(c.verdict, Verdict::Pass, "{}: {}\n{:#?}", c.id, c.reason, c.evidence);
    assert!(c.evidence.iter().any(|e| e.text.contains("the kit asks again")), "{:#?}", c.evidence);
}
