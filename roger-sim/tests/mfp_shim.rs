//! Scenario (issue 4): the conformance shim of PROTOCOL.md §13, driven as the runner drives it: one JSON request
//! per line, exactly one JSON answer per line, in order, over in-memory pipes into the library's shim loop (the
//! same loop `roger-sim mfp --shim` runs on stdin/stdout). The run registers, signs in with a PIN, lists, releases
//! and scans, logs out, restarts, and stops; the shim's log (its stderr) never holds the PIN (R-PWD-1, R-SEC-1).

mod common;
mod mfp_support;

use std::sync::{Arc, Mutex};

use mfp_support::{contains_number, server, temp_dir, text_files};
use roger_proto::shim::{
    JobsAnswer, PanelAnswer, PanelState, PinAnswer, RegisterAnswer, ReleaseAnswer, ScanAnswer, ShimAnswer, StartAnswer,
};
use roger_sim::mfp::shim::{serve_with_log, ShimOptions};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

/// The runner's side of the pipes.
struct Runner {
    to_shim: tokio::io::WriteHalf<tokio::io::DuplexStream>,
    from_shim: tokio::io::Lines<BufReader<tokio::io::ReadHalf<tokio::io::DuplexStream>>>,
}

impl Runner {
    async fn ask(&mut self, request: serde_json::Value) -> ShimAnswer {
        let line = format!("{request}\n");
        self.to_shim.write_all(line.as_bytes()).await.expect("write");
        let answer = tokio::time::timeout(std::time::Duration::from_secs(60), self.from_shim.next_line())
            .await
            .expect("the shim answers in time")
            .expect("read")
            .expect("one line per request");
        ShimAnswer::parse_line(&answer).unwrap_or_else(|e| panic!("not a shim answer: {e}: {answer}"))
    }
}

#[tokio::test]
async fn the_shim_runs_a_whole_session() {
    let s = server().await;
    let dir = temp_dir("shim");
    let state_dir = dir.join("state");

    let (runner_end, shim_end) = tokio::io::duplex(64 * 1024);
    let (shim_read, shim_write) = tokio::io::split(shim_end);
    let (runner_read, runner_write) = tokio::io::split(runner_end);
    let log = Arc::new(Mutex::new(Vec::<String>::new()));
    let sink = log.clone();
    let options =
        ShimOptions { push: Some(s.server.shared.bus.clone()), out_dir: Some(dir.join("out")), ..Default::default() };
    let shim = tokio::spawn(serve_with_log(
        BufReader::new(shim_read),
        shim_write,
        options,
        Arc::new(move |l: &str| sink.lock().expect("log").push(l.to_owned())),
    ));
    let mut r = Runner { to_shim: runner_write, from_shim: BufReader::new(runner_read).lines() };

    // start: capabilities include screenshot and wait (and push, with a bus).
    let a = r
        .ask(serde_json::json!({
            "op": "start", "discovery": s.server.info.discovery, "ca": null, "client_id": "emb-shimvendor",
            "state_dir": state_dir.display().to_string()
        }))
        .await;
    let caps: StartAnswer = a.typed().unwrap_or_else(|e| panic!("start: {e} {}", a.to_line()));
    for cap in ["screenshot", "wait", "push", "pin", "release", "scan", "desktop"] {
        assert!(caps.capabilities.iter().any(|c| c == cap), "{cap} in {:?}", caps.capabilities);
    }
    let again = r
        .ask(serde_json::json!({ "op": "start", "discovery": "x", "ca": null, "client_id": "emb-x", "state_dir": "y" }))
        .await;
    assert_eq!(again.error(), Some("invalid_state"));

    let panel: PanelAnswer = r.ask(serde_json::json!({ "op": "panel" })).await.typed().expect("panel");
    assert_eq!(panel.state, PanelState::Unregistered);
    assert!(panel.user.is_none() && panel.scopes.is_empty());
    // Before registration there is no session to sign in to.
    let pin: PinAnswer =
        r.ask(serde_json::json!({ "op": "pin", "username": "alice", "pin": "1234" })).await.typed().expect("pin");
    assert!(!pin.accepted);

    // register: the QR, the user code beside it, and a PNG screenshot.
    let reg: RegisterAnswer = r.ask(serde_json::json!({ "op": "register" })).await.typed().expect("register");
    assert!(reg.qr.as_deref().unwrap_or_default().starts_with(&format!("{}/device?user_code=", s.api)));
    assert_eq!(reg.user_code.len(), 9, "XXXX-XXXX");
    let png = reg.screenshot.clone().expect("screenshot path");
    assert!(std::fs::read(&png).expect("png").starts_with(b"\x89PNG"));
    let admin = s.app_login("admin", "admin-pass").await.access_token;
    assert_eq!(s.decide(&admin, &reg.user_code, true).await.status, 204);

    // wait: answers the panel once idle; a wait that cannot be met times out with the panel fields.
    let idle = r.ask(serde_json::json!({ "op": "wait", "state": "idle", "timeout_ms": 30000 })).await;
    let idle: PanelAnswer = idle.typed().unwrap_or_else(|e| panic!("wait idle: {e} {}", idle.to_line()));
    assert_eq!(idle.state, PanelState::Idle);
    let timeout = r.ask(serde_json::json!({ "op": "wait", "state": "session", "timeout_ms": 50 })).await;
    assert_eq!(timeout.error(), Some("timeout"));
    let fields: PanelAnswer = timeout.fields_as().expect("panel fields with the timeout");
    assert_eq!(fields.state, PanelState::Idle);
    assert_eq!(r.ask(serde_json::json!({ "op": "register" })).await.error(), Some("invalid_state"));
    assert_eq!(r.ask(serde_json::json!({ "op": "jobs" })).await.error(), Some("invalid_state"), "no session");

    // pin from idle: the PIN login (§8); a wrong PIN is not accepted.
    let wrong: PinAnswer =
        r.ask(serde_json::json!({ "op": "pin", "username": "alice", "pin": "0000" })).await.typed().expect("pin");
    assert!(!wrong.accepted);
    let right: PinAnswer =
        r.ask(serde_json::json!({ "op": "pin", "username": "alice", "pin": "1234" })).await.typed().expect("pin");
    assert!(right.accepted);
    let panel: PanelAnswer = r.ask(serde_json::json!({ "op": "panel" })).await.typed().expect("panel");
    assert_eq!((panel.state, panel.user.as_deref()), (PanelState::Session, Some("alice")));
    assert!(panel.scopes.iter().any(|sc| sc == "roger.scan"), "{:?}", panel.scopes);

    // jobs, release, scan.
    let jobs: JobsAnswer = r.ask(serde_json::json!({ "op": "jobs" })).await.typed().expect("jobs");
    let job = jobs.jobs.iter().find(|j| j.file_name == "quarterly-report.pdf").expect("alice's job").clone();
    let released: ReleaseAnswer =
        r.ask(serde_json::json!({ "op": "release", "job": job.id })).await.typed().expect("release");
    assert!(released.printed);
    let twice: ReleaseAnswer =
        r.ask(serde_json::json!({ "op": "release", "job": job.id })).await.typed().expect("release");
    assert!(!twice.printed, "a printed job does not print again");
    let scanned: ScanAnswer =
        r.ask(serde_json::json!({ "op": "scan", "profile": "pdf-300" })).await.typed().expect("scan");
    assert!(scanned.uploaded);
    let unknown: ScanAnswer =
        r.ask(serde_json::json!({ "op": "scan", "profile": "nope" })).await.typed().expect("scan");
    assert!(!unknown.uploaded);

    // logout, restart, and the registration survives.
    assert!(r.ask(serde_json::json!({ "op": "logout" })).await.is_ok());
    assert!(r.ask(serde_json::json!({ "op": "restart" })).await.is_ok());
    let after: PanelAnswer =
        r.ask(serde_json::json!({ "op": "wait", "state": "idle", "timeout_ms": 30000 })).await.typed().expect("idle");
    assert_eq!(after.state, PanelState::Idle);

    // Garbage gets bad_request and the conversation goes on; stop ends it.
    assert_eq!(r.ask(serde_json::json!({ "op": "fly" })).await.error(), Some("bad_request"));
    assert!(r.ask(serde_json::json!({ "op": "stop" })).await.is_ok());
    shim.await.expect("shim task").expect("shim I/O");

    // The runner reads state_dir and the shim's stderr for the PIN under test: it is in neither.
    let log = log.lock().expect("log").clone();
    assert!(log.iter().any(|l| l.contains("printed job")), "the log narrates: {log:?}");
    assert!(log.iter().all(|l| !contains_number(l, "1234")), "PIN in the log: {log:?}");
    for (path, text) in text_files(&state_dir) {
        assert!(!contains_number(&text, "1234"), "PIN in {}", path.display());
    }
    s.server.stop().await;
    std::fs::remove_dir_all(&dir).ok();
}
