//! Scenario: the real `roger-sim server` binary, killed and started again on the same `--state` file (the issue:
//! "a server killed with SIGKILL in the middle of a refresh or a release and started again loses no registration,
//! never un-rotates a token, and never releases a job twice"; R-TOK-2, R-TOK-3, RFC 9700 §4.14.2, PROTOCOL.md §9).
//! Also the CLI contract: one JSON line `{"discovery","api","drive","amqp","ca"}` on stdout once it accepts
//! connections, a graceful stop on SIGTERM with exit status 0, virtual time that never runs backwards across a
//! restart, and a `--seed` that does not make a restarted server mint the secrets and ids of an earlier run again.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::Duration;

use common::{Answer, TestServer, MFP};
use roger_proto::api::{self, JobOutcome, JobResult, ReleaseRequest};
use roger_proto::device_authorization::{DeviceAuthorizationRequest, DeviceAuthorizationResponse};
use roger_proto::secret::RefreshToken;
use roger_proto::token::{self, TokenRequest, TokenResponse};

/// A `roger-sim server` child process.
struct Sim {
    child: Child,
    _stdout: BufReader<ChildStdout>,
    info: serde_json::Value,
}

impl Sim {
    /// Starts the binary on `state` and waits for its contract line.
    fn start(state: &Path) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_roger-sim"))
            .args(["server", "--listen", "127.0.0.1:0", "--plain-http", "--seed", "1", "--state"])
            .arg(state)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn roger-sim server");
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let mut line = String::new();
        let n = stdout.read_line(&mut line).expect("read the contract line");
        if n == 0 {
            let status = child.wait().expect("wait");
            panic!("roger-sim server exited before printing its line: {status}");
        }
        let info: serde_json::Value = serde_json::from_str(line.trim()).expect("one JSON line on stdout");
        for k in ["discovery", "api", "drive", "amqp", "ca"] {
            assert!(info.get(k).is_some(), "the contract line has {k}: {line}");
        }
        assert!(info["ca"].is_null(), "plain HTTP: no CA ({line})");
        assert!(info["api"].as_str().unwrap().starts_with("http://127.0.0.1:"), "{line}");
        Self { child, _stdout: stdout, info }
    }

    fn api(&self) -> String {
        self.info["api"].as_str().unwrap().to_owned()
    }

    fn harness(&self) -> TestServer {
        TestServer::attach(&self.api())
    }

    /// SIGKILL (what `Child::kill` sends on Unix) and reap.
    fn kill9(mut self) {
        self.child.kill().expect("SIGKILL");
        let status = self.child.wait().expect("wait");
        assert!(!status.success(), "killed, not exited: {status}");
    }

    /// SIGTERM and wait for a clean exit.
    fn terminate(mut self) {
        let pid = self.child.id().to_string();
        let ok = Command::new("kill").arg("-TERM").arg(&pid).status().expect("run kill");
        assert!(ok.success(), "kill -TERM {pid}");
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                assert!(status.success(), "a SIGTERM stop exits 0: {status}");
                return;
            }
            if std::time::Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("roger-sim server did not stop within 20 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        // A failing test must not leave a server behind.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A fresh directory for one test's state file.
fn state_file(test: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("restart-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("state dir");
    dir.join("state.db")
}

fn text(a: &Answer) -> String {
    String::from_utf8_lossy(&a.body).into_owned()
}

/// Sends a request whose answer may never come (the server is killed meanwhile): `None` then.
async fn try_send(http: reqwest::Client, req: http::Request<Vec<u8>>) -> Option<(u16, Vec<u8>)> {
    let (parts, body) = req.into_parts();
    let mut r = http.request(parts.method, parts.uri.to_string()).body(body);
    for (k, v) in &parts.headers {
        r = r.header(k, v);
    }
    let resp = r.send().await.ok()?;
    let status = resp.status().as_u16();
    Some((status, resp.bytes().await.ok()?.to_vec()))
}

/// The server's handle of a secret (tokens are stored only as SHA-256 hashes, R-TOK-3).
fn sha256_hex(secret: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(secret.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

/// A refresh that must succeed; returns the new pair's refresh token and access token.
async fn refresh_ok(s: &TestServer, rt: &RefreshToken, what: &str) -> (RefreshToken, roger_proto::secret::AccessToken) {
    let a = s.refresh(rt, MFP).await;
    assert_eq!(a.status, 200, "{what}: {}", text(&a));
    let t = token::classify(&a.to_http()).unwrap_or_else(|e| panic!("{what}: {e:?}"));
    (t.refresh_token.unwrap_or_else(|| panic!("{what}: rotated refresh token")), t.access_token)
}

async fn refresh_refused(s: &TestServer, rt: &RefreshToken, what: &str) {
    let a = s.refresh(rt, MFP).await;
    assert_eq!((a.status, a.json()["error"].as_str()), (400, Some("invalid_grant")), "{what}: {}", text(&a));
}

/// A registration step by step (as `TestServer::register_printer`), keeping the device authorization answer.
async fn register(s: &TestServer) -> (DeviceAuthorizationResponse, TokenResponse) {
    let code = s
        .device_authorization(&DeviceAuthorizationRequest::registration(MFP, "MX-1", "SN-1"), None)
        .await
        .expect("registration code");
    let admin = s.app_login("admin", "admin-pass").await.access_token;
    let a = s.decide(&admin, code.user_code.secret(), true).await;
    assert_eq!(a.status, 204, "approve: {}", text(&a));
    s.advance(5.0).await;
    let t = token::classify(&s.poll(&code.device_code, MFP, None).await.to_http()).expect("device tokens");
    (code, t)
}

async fn virtual_now_ms(s: &TestServer) -> i64 {
    let a = s.raw("GET", "/sim/clock", &[], Vec::new()).await;
    assert_eq!(a.status, 200, "{}", text(&a));
    a.json()["unix_ms"].as_i64().expect("unix_ms")
}

async fn release(s: &TestServer, user: &roger_proto::secret::AccessToken, job: &str, key: &str) -> Answer {
    s.send(api::release_job(&s.api, user, job, key, &ReleaseRequest::default()).unwrap()).await
}

/// Registration, rotation and a printed job survive SIGKILL; the rotation is never undone (the retired token's
/// reuse still revokes the family); the printed job is never released again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_loses_no_registration_no_rotation_and_no_release() {
    let state = state_file("sigkill");
    let sim = Sim::start(&state);
    let s = sim.harness();

    let reg = s.register_printer().await;
    let device_id = reg.device_id.clone().expect("device_id");
    let rt1 = reg.refresh_token.clone().expect("refresh token");
    let (rt2, device) = refresh_ok(&s, &rt1, "RT1 → RT2").await;
    assert_ne!(rt1, rt2, "R-TOK-2: rotation");

    // Alice releases the fixture job at the printer, it prints.
    let alice = s.qr_session(&device, "alice", "alice-pass").await.access_token;
    let jobs = s.send(api::list_jobs(&s.api, &alice).unwrap()).await.json();
    let job_id = jobs["jobs"][0]["id"].as_str().expect("a queued job").to_owned();
    let a = release(&s, &alice, &job_id, "before-kill").await;
    assert_eq!(a.status, 200, "release: {}", text(&a));
    let a = s
        .send(
            api::report_job_result(&s.api, &alice, &job_id, &JobResult { state: JobOutcome::Printed, pages: 3 })
                .unwrap(),
        )
        .await;
    assert_eq!(a.status, 204, "result: {}", text(&a));
    s.advance(60.0).await;
    let before = virtual_now_ms(&s).await;

    sim.kill9();
    let sim = Sim::start(&state);
    let s = sim.harness();

    assert!(virtual_now_ms(&s).await >= before, "virtual time never runs backwards across a restart");
    // The device exists and RT2 is its current refresh token: RT2 → RT3.
    let (rt3, device) = refresh_ok(&s, &rt2, "RT2 → RT3 after the restart").await;
    let a = s.send(api::get_device(&s.api, &device).unwrap()).await;
    assert_eq!(a.status, 200, "the device still exists: {}", text(&a));
    assert_eq!(a.json()["device_id"], device_id.as_str());
    // The printed job stays printed: no second release, with the old key or a new one.
    for key in ["before-kill", "after-kill"] {
        let a = release(&s, &alice, &job_id, key).await;
        assert_eq!(a.status, 409, "release of a printed job after the restart ({key}): {}", text(&a));
    }
    assert_eq!(s.store().await["jobs"][&job_id]["state"], "printed");
    // RT1 stays retired: presenting it now is reuse, which revokes the whole family (no un-rotation).
    refresh_refused(&s, &rt1, "RT1 after the restart").await;
    refresh_refused(&s, &rt3, "RT3 after RT1's reuse (family revoked)").await;
    let a = s.send(api::get_device(&s.api, &device).unwrap()).await;
    assert_eq!(a.status, 401, "the family's access tokens died with it: {}", text(&a));

    // The revocation itself survives a kill too.
    sim.kill9();
    let sim = Sim::start(&state);
    let s = sim.harness();
    refresh_refused(&s, &rt3, "RT3 after a second restart").await;
    sim.terminate();
    let _ = std::fs::remove_dir_all(state.parent().unwrap());
}

/// SIGKILL while a refresh is in flight, at several points of the race: after the restart, the token the client
/// must use next works, never neither. With the answer lost the client resends the old token (R-TOK-3 grace, or it
/// was never rotated); with the answer in hand it uses the new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_refresh_leaves_a_working_token() {
    let state = state_file("mid-refresh");
    let mut sim = Sim::start(&state);
    let s = sim.harness();
    let mut rt = s.register_printer().await.refresh_token.expect("refresh token");
    let (mut lost, mut received, mut rotated_but_lost) = (0, 0, 0);

    for (round, delay_us) in [0u64, 0, 50, 100, 200, 300, 500, 1_000, 2_000, 5_000, 50_000].into_iter().enumerate() {
        let s = sim.harness();
        let req = TokenRequest::RefreshToken { refresh_token: rt.clone(), scope: None, client_id: MFP.into() };
        let in_flight = tokio::spawn(try_send(s.http.clone(), req.to_http(&s.url("/oauth/token"), None).unwrap()));
        // The request runs on a worker thread; this thread waits (blocking, for microsecond precision) and kills.
        if delay_us > 0 {
            std::thread::sleep(Duration::from_micros(delay_us));
        }
        sim.kill9();
        let answer = in_flight.await.expect("request task");
        sim = Sim::start(&state);
        let s = sim.harness();
        rt = match answer {
            Some((200, body)) => {
                received += 1;
                let t: token::TokenResponse = serde_json::from_slice(&body).expect("token answer");
                let new = t.refresh_token.expect("rotated");
                refresh_ok(&s, &new, &format!("round {round}: the new token after the restart")).await.0
            }
            Some((status, body)) => panic!("round {round}: unexpected {status}: {}", String::from_utf8_lossy(&body)),
            None => {
                lost += 1;
                // Did the rotation commit before the kill (the answer was lost on the way), or never happen?
                let hash = sha256_hex(rt.secret());
                let families = s.store().await["families"].clone();
                let rotated = families.as_object().is_some_and(|f| f.values().any(|f| f["previous"] == hash.as_str()));
                if rotated {
                    rotated_but_lost += 1;
                } else {
                    assert!(families.to_string().contains(&hash), "round {round}: the old token is still current");
                }
                refresh_ok(&s, &rt, &format!("round {round}: the old token after a lost answer")).await.0
            }
        };
    }
    eprintln!("mid-refresh rounds: {received} answers received, {lost} lost ({rotated_but_lost} after the rotation committed)");
    // The chain still works after all the restarts.
    let s = sim.harness();
    refresh_ok(&s, &rt, "after the last round").await;
    sim.terminate();
    let _ = std::fs::remove_dir_all(state.parent().unwrap());
}

/// SIGKILL while a release is in flight: after the restart the MFP's retry with the same `Idempotency-Key` gets
/// the release (again, or for the first time), the job is released exactly once (one key, one printer), and once it
/// printed no key releases it again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_release_never_releases_twice() {
    let state = state_file("mid-release");
    let mut sim = Sim::start(&state);
    let s = sim.harness();
    let device = s.register_printer().await.access_token;
    let alice = s.qr_session(&device, "alice", "alice-pass").await.access_token;
    let app = s.app_login("alice", "alice-pass").await.access_token;

    for (round, delay_us) in [0u64, 100, 300, 1_000, 5_000].into_iter().enumerate() {
        let s = sim.harness();
        let a = s
            .raw(
                "POST",
                "/api/v1/jobs",
                &[("authorization", &format!("Bearer {}", app.secret())), ("content-type", "application/json")],
                format!(r#"{{"desktop":{{"file_name":"round-{round}.pdf","pages":1}}}}"#).into_bytes(),
            )
            .await;
        assert_eq!(a.status, 201, "round {round}: submit: {}", text(&a));
        let job = a.json()["id"].as_str().expect("job id").to_owned();
        let key = format!("round-{round}");
        let req = api::release_job(&s.api, &alice, &job, &key, &ReleaseRequest::default()).unwrap();
        let in_flight = tokio::spawn(try_send(s.http.clone(), req));
        if delay_us > 0 {
            std::thread::sleep(Duration::from_micros(delay_us));
        }
        sim.kill9();
        let _ = in_flight.await.expect("request task");
        sim = Sim::start(&state);
        let s = sim.harness();
        let a = release(&s, &alice, &job, &key).await;
        assert_eq!(a.status, 200, "round {round}: the retry with the same key: {}", text(&a));
        assert!(a.json()["desktop"]["ticket"].is_string(), "round {round}: {}", text(&a));
        let rec = s.store().await["jobs"][&job].clone();
        assert_eq!(rec["state"], "released", "round {round}: {rec}");
        assert_eq!(rec["release_keys"].as_object().map(|k| k.len()), Some(1), "round {round}: one release: {rec}");
        let done = JobResult { state: JobOutcome::Printed, pages: 1 };
        assert_eq!(s.send(api::report_job_result(&s.api, &alice, &job, &done).unwrap()).await.status, 204);
        for k in [key.as_str(), "another-key"] {
            assert_eq!(release(&s, &alice, &job, k).await.status, 409, "round {round}: printed, {k}");
        }
    }
    sim.terminate();
    let _ = std::fs::remove_dir_all(state.parent().unwrap());
}

/// `--seed` makes a run reproducible, but a restart on a persisted state must not replay the random stream of an
/// earlier run: a printer registered after each restart gets a new `device_id` (and new secrets), and the first
/// printer keeps working. Also: SIGTERM stops the server cleanly (exit 0) and loses nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarts_with_the_same_seed_mint_fresh_ids_and_sigterm_exits_cleanly() {
    let state = state_file("seed");
    // Run 1 creates the state (fixtures) and stops gracefully.
    Sim::start(&state).terminate();
    // Run 2 registers printer A; run 3 repeats exactly the same requests for printer B.
    let sim = Sim::start(&state);
    let (code_a, a) = register(&sim.harness()).await;
    sim.kill9();
    let sim = Sim::start(&state);
    let s = sim.harness();
    let (code_b, b) = register(&s).await;
    assert_ne!(code_a.device_code, code_b.device_code, "a restarted server must not hand out an earlier run's codes");
    assert_ne!(a.device_id, b.device_id, "… nor mint its ids");
    assert_ne!(a.access_token, b.access_token, "… nor its tokens");
    let devices = s.store().await["devices"].as_object().map(|d| d.len());
    assert_eq!(devices, Some(2), "both printers are registered");
    refresh_ok(&s, a.refresh_token.as_ref().unwrap(), "printer A after the restarts").await;
    refresh_ok(&s, b.refresh_token.as_ref().unwrap(), "printer B").await;
    sim.terminate();
    // Everything committed before the SIGTERM is still there.
    let sim = Sim::start(&state);
    let devices = sim.harness().store().await["devices"].as_object().map(|d| d.len());
    assert_eq!(devices, Some(2));
    sim.terminate();
    let _ = std::fs::remove_dir_all(state.parent().unwrap());
}
