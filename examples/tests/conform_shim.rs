//! The example conformance shim (`src/bin/conform_shim.rs`) played through PROTOCOL.md §13 against the simulated
//! server, in-process over TLS with its generated CA: registration approved by the tenant admin on the simulated
//! phone, background refresh with rotation persisted (R-TOK-1, R-TOK-2), a power cycle that keeps the printer
//! registered, a PIN login with release and scan (PROTOCOL.md §8–9), a QR session, and a log and state directory
//! that hold no secret (R-SEC-1, R-PWD-1).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use roger_proto::api::CodeKind;
use roger_proto::secret::Password;
use roger_proto::server::drive::Folder;
use roger_proto::server::settings::TenantSettings;
use roger_proto::shim::{PanelAnswer, PanelState, ShimAnswer};
use roger_sim::phone::{ClientConfig, Phone};
use roger_sim::server::{start, RunningServer, ServerConfig};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout};

/// Alice's PIN: long and unusual, so finding it in the log or the state directory cannot be a coincidence.
const PIN: &str = "80531974";
const JOB_FILE: &str = "annual-report.pdf";

fn tenant_toml() -> String {
    format!(
        r#"[[tenants]]
id = "acme"
name = "ACME"

[[tenants.scan_profiles]]
id = "pdf-300"
name = "PDF, 300 dpi"
format = "pdf"
dpi = 300

[[tenants.users]]
username = "admin"
display_name = "Admin"
email = "admin@acme.example"
password = "admin-pass"
admin = true

[[tenants.users]]
username = "alice"
display_name = "Alice"
email = "alice@acme.example"
pin = "{PIN}"
password = "alice-pass"

[[tenants.drive_files]]
user = "alice"
folder = "Print"
name = "{JOB_FILE}"
content = "%PDF-1.4 a short document %%EOF"

[[tenants.jobs]]
user = "alice"
file = "{JOB_FILE}"
pages = 2
"#
    )
}

/// A scratch directory removed at the end of the test.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("roger-conform-shim-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("scratch dir");
        Self(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The simulated server over TLS (its own CA), with a one-second polling interval and `access_token_secs`.
async fn server(dir: &Path, access_token_secs: u64) -> RunningServer {
    let fixture = dir.join("tenant.toml");
    std::fs::write(&fixture, tenant_toml()).expect("fixture");
    start(ServerConfig {
        seed: Some(41),
        fixture: Some(fixture),
        tls_dir: Some(dir.join("tls")),
        settings: Some(TenantSettings { interval_secs: 1, access_token_secs, ..TenantSettings::default() }),
        ..ServerConfig::default()
    })
    .await
    .expect("server starts")
}

/// The example shim as a child process: requests on stdin, answers on stdout, stderr collected.
struct Shim {
    child: Child,
    stdin: ChildStdin,
    stdout: Lines<BufReader<ChildStdout>>,
    stderr: Arc<Mutex<String>>,
}

impl Shim {
    fn spawn() -> Self {
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_conform_shim"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("the shim starts");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let mut err = child.stderr.take().expect("stderr");
        let stderr = Arc::new(Mutex::new(String::new()));
        let sink = stderr.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 4096];
            while let Ok(n @ 1..) = err.read(&mut buf).await {
                sink.lock().expect("stderr").push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        Self { child, stdin, stdout, stderr }
    }

    /// One request, one answer line (PROTOCOL.md §13), within the runner's 30 s (a `wait`: plus its timeout).
    async fn ask(&mut self, request: Value) -> ShimAnswer {
        let limit = Duration::from_secs(30) + Duration::from_millis(request["timeout_ms"].as_u64().unwrap_or(0));
        self.stdin.write_all(format!("{request}\n").as_bytes()).await.expect("write request");
        let line = tokio::time::timeout(limit, self.stdout.next_line()).await;
        let line = line.expect("answered in time").expect("stdout readable").expect("an answer line");
        ShimAnswer::parse_line(&line).expect("a shim answer")
    }

    async fn ok(&mut self, request: Value) -> ShimAnswer {
        let what = request.to_string();
        let a = self.ask(request).await;
        assert!(a.is_ok(), "{what} → {}", a.to_line());
        a
    }

    async fn panel(&mut self) -> PanelAnswer {
        self.ok(json!({"op": "panel"})).await.typed().expect("panel answer")
    }

    async fn wait(&mut self, state: &str, secs: u64) -> PanelAnswer {
        self.ok(json!({"op": "wait", "state": state, "timeout_ms": secs * 1000})).await.typed().expect("panel answer")
    }

    fn stderr(&self) -> String {
        self.stderr.lock().expect("stderr").clone()
    }

    /// `stop`, then the process exits with status 0 (PROTOCOL.md §13).
    async fn stop(mut self) -> String {
        self.ok(json!({"op": "stop"})).await;
        let status = tokio::time::timeout(Duration::from_secs(15), self.child.wait()).await;
        assert!(status.expect("exits after stop").expect("status").success());
        tokio::time::sleep(Duration::from_millis(100)).await;
        self.stderr()
    }
}

/// The simulated phone signed in as `user` (PROTOCOL.md §4), trusting the server's CA.
async fn phone(server: &RunningServer, user: &str, password: &str) -> Phone {
    let mut config = ClientConfig::new(server.info.discovery.clone());
    let ca = server.info.ca.as_ref().expect("a TLS server has a CA");
    config.ca_pem = Some(std::fs::read(ca).expect("CA file"));
    let mut phone = Phone::connect(&config).await.expect("phone connects");
    phone.login("acme", user, Password::new(password)).await.expect("phone signs in");
    phone
}

/// Scans the QR the panel shows (R-QR-4: on the API origin), looks it up (R-QR-2) and approves it.
async fn approve(phone: &mut Phone, qr: &str, kind: CodeKind) {
    let code = phone.scan_payload(qr).expect("the QR is a Roger verification URI on the API origin");
    let review = phone.look_up(&code).await.expect("look-up");
    assert_eq!(review.lookup.kind, kind);
    phone.approve(&review, Some(kind)).await.expect("approval");
}

/// `start` against `server`, `register`, the admin approves on the phone, `idle`.
async fn register(server: &RunningServer, state_dir: &Path) -> Shim {
    let mut shim = Shim::spawn();
    let started = shim
        .ok(json!({
            "op": "start", "discovery": server.info.discovery, "ca": server.info.ca,
            "client_id": "emb-example", "state_dir": state_dir,
        }))
        .await;
    let caps = started.fields()["capabilities"].as_array().expect("capabilities").clone();
    assert!(["pin", "release", "scan"].iter().all(|c| caps.contains(&json!(c))), "{caps:?}");
    assert!(!caps.contains(&json!("desktop")), "no hand-over in the example: {caps:?}");
    assert_eq!(shim.panel().await.state, PanelState::Unregistered, "nothing happens before `register`");

    let registration = shim.ok(json!({"op": "register"})).await;
    let qr = registration.fields()["qr"].as_str().expect("qr").to_owned();
    let user_code = registration.fields()["user_code"].as_str().expect("user_code").to_owned();
    assert!(user_code.len() == 9 && user_code.as_bytes()[4] == b'-', "R-QR-1: XXXX-XXXX, got {user_code:?}");
    assert_eq!(shim.panel().await.state, PanelState::Registering);
    let mut admin = phone(server, "admin", "admin-pass").await;
    approve(&mut admin, &qr, CodeKind::Registration).await;
    let idle = shim.wait("idle", 20).await;
    assert_eq!((idle.user, idle.scopes.len()), (None, 0));
    shim
}

/// The device id and newest refresh token the shim keeps in `state_dir` (R-TOK-2).
fn saved(state_dir: &Path) -> (String, String) {
    let text = std::fs::read_to_string(state_dir.join(roger_examples::STATE_FILE)).expect("state file");
    let v: Value = serde_json::from_str(&text).expect("state JSON");
    assert_eq!(v["state"], "connected", "{v}");
    (v["device_id"].as_str().expect("device_id").into(), v["refresh_token"].as_str().expect("refresh_token").into())
}

/// Every file in `dir` (recursively) as bytes.
fn all_files(dir: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("read dir").flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(all_files(&path));
        } else {
            out.extend(std::fs::read(&path).expect("read file"));
        }
    }
    out
}

/// Registration through §13, the refresh ahead of expiry persisted with rotation, and a power cycle that keeps
/// the printer registered (R-TOK-1, R-TOK-2; PROTOCOL.md §5, §13 `restart`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registration_survives_refreshes_and_a_power_cycle() {
    let scratch = Scratch::new("restart");
    let server = server(&scratch.0, 6).await;
    let state_dir = scratch.0.join("state");
    let mut shim = register(&server, &state_dir).await;
    let (device_id, first_rt) = saved(&state_dir);

    // 6-second device tokens: the lifecycle refreshes at 80% of the lifetime, in the background, and every
    // rotated refresh token reaches the state file (R-TOK-1, R-TOK-2).
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut rotated = saved(&state_dir);
    while rotated.1 == first_rt && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(250)).await;
        rotated = saved(&state_dir);
    }
    assert_ne!(rotated.1, first_rt, "no refresh within 20 s of 6-second tokens");
    assert_eq!(rotated.0, device_id);
    let idle = shim.panel().await;
    assert_eq!(idle.state, PanelState::Idle);
    let session_code = idle.user_code.clone().expect("R-QR-1: the idle panel shows a user code");
    assert!(idle.qr.is_some(), "R-QR-1: and a QR");

    // A power cycle: the same device comes back from state_dir, without a new registration.
    shim.ok(json!({"op": "restart"})).await;
    let after = shim.wait("idle", 20).await;
    assert!(after.qr.is_some() && after.user_code.is_some(), "a fresh session QR after the restart");
    assert_eq!(saved(&state_dir).0, device_id, "still the same device");
    let devices = server.shared.read(|core, _| core.state().devices.len());
    assert_eq!(devices, 1, "no second registration");

    let log = shim.stop().await;
    let (_, last_rt) = saved(&state_dir);
    for secret in [&first_rt, &rotated.1, &last_rt, &session_code] {
        assert!(!log.contains(secret.as_str()), "R-SEC-1: a credential in the shim's log:\n{log}");
    }
    assert!(log.contains("op restart"), "the log narrates the ops:\n{log}");
    server.stop().await;
}

/// A PIN login with release, scan and logout, a wrong PIN, and a QR session (PROTOCOL.md §8–9), with the PIN in
/// neither the log nor the state directory (R-PWD-1).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pin_login_release_scan_and_qr_session() {
    let scratch = Scratch::new("session");
    let server = server(&scratch.0, 1200).await;
    let state_dir = scratch.0.join("state");
    let mut shim = register(&server, &state_dir).await;

    let wrong = shim.ok(json!({"op": "pin", "username": "alice", "pin": "11112222"})).await;
    assert_eq!(wrong.fields()["accepted"], json!(false));
    let accepted = shim.ok(json!({"op": "pin", "username": "alice", "pin": PIN})).await;
    assert_eq!(accepted.fields()["accepted"], json!(true));
    let session = shim.wait("session", 5).await;
    assert_eq!(session.user.as_deref(), Some("alice"));
    assert!(session.scopes.iter().any(|s| s == "roger.scan"), "a PIN login holds all three scopes");

    let jobs = shim.ok(json!({"op": "jobs"})).await;
    let list = jobs.fields()["jobs"].as_array().expect("jobs").clone();
    let job = list.iter().find(|j| j["file_name"] == JOB_FILE).expect("alice's queued job is listed");
    let job_id = job["id"].as_str().expect("job id").to_owned();
    let released = shim.ok(json!({"op": "release", "job": job_id})).await;
    assert_eq!(released.fields()["printed"], json!(true), "{}", released.to_line());
    let state = server.shared.read(|core, _| core.state().jobs.get(&job_id).map(|j| j.state));
    assert_eq!(state, Some(roger_proto::server::model::JobState::Printed), "the result was reported");

    let scanned = shim.ok(json!({"op": "scan", "profile": "pdf-300"})).await;
    assert_eq!(scanned.fields()["uploaded"], json!(true), "{}", scanned.to_line());
    let files = server.shared.drive.files("usr_acme_alice", Folder::Scan);
    assert_eq!(files.len(), 1, "the scan is in alice's drive (R-DATA-1)");

    shim.ok(json!({"op": "logout"})).await;
    let idle = shim.wait("idle", 10).await;
    assert_eq!(idle.user, None);

    // Step 1 by QR: alice approves the session QR on her phone.
    let qr = shim.wait("idle", 10).await.qr.expect("the idle panel shows a session QR");
    let mut alice = phone(&server, "alice", "alice-pass").await;
    approve(&mut alice, &qr, CodeKind::Session).await;
    let session = shim.wait("session", 15).await;
    assert_eq!((session.user.as_deref(), session.scopes.clone()), (Some("alice"), vec!["roger.release".to_owned()]));
    let scan = shim.ask(json!({"op": "scan", "profile": "pdf-300"})).await;
    assert_eq!(scan.error(), Some("invalid_state"), "step 1 cannot scan: {}", scan.to_line());
    shim.ok(json!({"op": "logout"})).await;

    // Bad input gets a typed error, and the shim goes on.
    let bad = shim.ask(json!({"op": "dance"})).await;
    assert_eq!(bad.error(), Some("bad_request"));
    let again = shim.ask(json!({"op": "start", "discovery": "x", "ca": null, "client_id": "emb-x", "state_dir": "y"}));
    assert_eq!(again.await.error(), Some("invalid_state"));

    let log = shim.stop().await;
    assert!(!log.contains(PIN) && !log.contains("11112222"), "R-PWD-1: a PIN in the shim's log:\n{log}");
    let kept = all_files(&state_dir);
    assert!(!String::from_utf8_lossy(&kept).contains(PIN), "R-PWD-1: the PIN was kept in state_dir");
    assert!(log.contains("op pin (user alice)"), "{log}");
    server.stop().await;
}

/// Before `start` only `stop` works; a `start` the shim cannot honour is refused with a typed error.
#[tokio::test]
async fn ops_before_start_and_a_bad_start() {
    let scratch = Scratch::new("bad-start");
    let mut shim = Shim::spawn();
    assert_eq!(shim.ask(json!({"op": "panel"})).await.error(), Some("invalid_state"));
    let bad = json!({"op": "start", "discovery": "https://127.0.0.1:9", "ca": null, "client_id": "roger-mobile",
                     "state_dir": scratch.0});
    assert_eq!(shim.ask(bad).await.error(), Some("bad_request"), "not an emb- client id");
    // Nothing listens on port 9: the boot fails with `internal`, and the shim still answers.
    let unreachable = json!({"op": "start", "discovery": "https://127.0.0.1:9", "ca": null, "client_id": "emb-x",
                             "state_dir": scratch.0});
    assert_eq!(shim.ask(unreachable).await.error(), Some("internal"));
    shim.stop().await;
}
