//! The conformance shim a vendor copies (PROTOCOL.md §13, docs/protocol.md §8): a tiny but complete MFP client on
//! roger-proto alone, driven by `roger-sim conform client` over stdin/stdout.
//!
//! ```text
//! roger-sim conform client --shim "cargo run -q -p roger-examples --bin conform_shim" --html report.html
//! roger-sim conform client --plain-http --shim "target/debug/conform_shim --allow-loopback-http"
//! ```
//!
//! The runner writes one JSON request per line to stdin; this process answers each with exactly one JSON line on
//! stdout, in order, and logs to stderr (which the runner scans for secrets: nothing here ever prints a token,
//! code, QR payload, URL or PIN; R-SEC-1, R-PWD-1). Background work goes on between requests on tokio tasks:
//! roger-proto's machines poll per RFC 8628 §3.5 and PROTOCOL.md §12 (interval, `slow_down`, back-off,
//! `Retry-After`), refresh the device token ahead of expiry (R-TOK-1) and renew the session QR (R-QR-3).
//!
//! | op | what this example does | what your firmware does instead |
//! |---|---|---|
//! | `start` | discovery, metadata with the issuer check (R-META-1), TLS against `ca`, restore `state_dir` | boot the client against the given server |
//! | `register` | starts the device grant, answers the QR and user code shown (R-QR-1) | press "connect to Roger" on the panel |
//! | `panel`, `wait` | reads the snapshot the runner keeps | read your display state |
//! | `pin` | password grant (PIN login or step 2), the PIN wiped after its request (R-PWD-1) | type on the keypad |
//! | `jobs`, `release` | lists, releases, downloads from the drive (R-DATA-1), "prints", reports the result | your job list and print engine |
//! | `scan` | creates a scan, uploads to the drive in `Content-Range` chunks, completes it | your scanner |
//! | `logout`, `restart`, `stop` | revokes the user tokens; power cycle from `state_dir`; power off | buttons and power |
//!
//! Not here: push (PROTOCOL.md §11; without it the panel polls at the interval, as §8 requires), desktop
//! hand-over (`desktop`), screenshots (`screenshot`). Those capabilities are left out of the `start` answer.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::{Request, Response};
use roger_examples::transfer::{download, idempotency_key, send_retrying, upload, UPLOAD_CHUNK};
use roger_examples::{driver, load, store_atomically, transport};
use roger_proto::api::{self, JobOutcome, JobResult, JobSource, ReleaseAnswer as ApiRelease};
use roger_proto::api::{ReleaseRequest, ScanComplete, ScanCreate};
use roger_proto::discovery::TransportPolicy;
use roger_proto::driver::mfp::{MfpClient, MfpEvent, MfpInput};
use roger_proto::driver::reqwest_transport::ReqwestTransport;
use roger_proto::driver::Driver;
use roger_proto::lifecycle::{Connection, ConnectionState, LifecycleConfig, LifecycleEvent};
use roger_proto::metadata::Endpoints;
use roger_proto::panel::{PanelConfig, PanelEvent, PanelState as Machine};
use roger_proto::secret::{AccessToken, Password, Pin};
use roger_proto::shim::{self, JobsAnswer, PanelAnswer, PanelState, PinAnswer, RegisterAnswer, ShimAnswer};
use roger_proto::shim::{ShimJob, ShimRequest, StartAnswer};
use roger_proto::token::scope;
use roger_proto::wire::classify_api_empty;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

const USAGE: &str = "usage: conform_shim [--allow-loopback-http]   (PROTOCOL.md §13 on stdin/stdout)";
/// What the admin sees when approving the registration (R-QR-2). Replace with your model and serial number.
const MODEL: &str = "Example MFP";
const SERIAL: &str = "EX-0001";
/// Answers must come within 30 s (docs/protocol.md §8); our own waits stay below that.
const OP_WAIT: Duration = Duration::from_secs(25);
/// Longest request line accepted (longer lines are refused, not buffered).
const MAX_LINE: u64 = 64 * 1024;

fn log(line: impl std::fmt::Display) {
    // The shim's log (stderr). Only op names, states, user names and ids: never a credential (R-SEC-1).
    eprintln!("conform_shim: {line}");
}

/// An error answer with the codes of docs/protocol.md §8 (`bad_request`, `invalid_state`, `internal`, …).
fn fail(code: &str, detail: impl std::fmt::Display) -> ShimAnswer {
    ShimAnswer::err_with(code, &serde_json::json!({ "detail": detail.to_string() }))
}

// -------------------------------------------------------------------------------------------------------------
// What the panel shows: a snapshot the runner task keeps current, read by `panel` and `wait`.

/// A code on display: the QR payload and, beside it, the user code (R-QR-1).
#[derive(Clone)]
struct Shown {
    /// `None` when the server sent no `verification_uri_complete` (docs/protocol.md §7).
    qr: Option<String>,
    user_code: String,
}

#[derive(Clone, Default)]
struct Snapshot {
    conn: Option<ConnectionState>,
    machine: Option<Machine>,
    registration: Option<Shown>,
    session_qr: Option<Shown>,
    user: Option<String>,
    scopes: Vec<String>,
    /// The session token (jobs, release) and the step-2 token (scan); held in memory only, never stored.
    release_token: Option<AccessToken>,
    user_token: Option<AccessToken>,
    /// A PIN entry is waiting for its outcome; `pin_seq` counts outcomes, `pin_accepted` is the last one.
    pin_pending: bool,
    pin_seq: u64,
    pin_accepted: bool,
    stopped: bool,
}

impl Snapshot {
    fn refresh(&mut self, c: &MfpClient) {
        self.conn = Some(c.connection.state());
        if self.conn != Some(ConnectionState::Registering) {
            self.registration = None;
        }
        let p = c.panel.as_ref();
        self.machine = p.map(|p| p.state());
        self.user = p.and_then(|p| p.user()).map(|u| u.username.clone());
        self.scopes = p.map(|p| p.scopes()).unwrap_or_default();
        self.release_token = p.and_then(|p| p.release_token()).cloned();
        self.user_token = p.and_then(|p| p.user_token()).cloned();
        self.session_qr = p.and_then(|p| p.current_qr()).map(|q| Shown {
            qr: q.verification_uri_complete.as_ref().map(|v| v.secret().to_owned()),
            user_code: q.user_code_display.clone(),
        });
    }

    /// The §13 state: the lifecycle's state, and the panel's while connected (docs/protocol.md §5.3).
    fn state(&self) -> PanelState {
        match (self.conn, self.machine) {
            (None | Some(ConnectionState::Unregistered), _) => PanelState::Unregistered,
            (Some(ConnectionState::Registering), _) => PanelState::Registering,
            (Some(ConnectionState::Disconnected), _) => PanelState::Disconnected,
            (Some(ConnectionState::Connected), Some(Machine::Step1 | Machine::Step2)) => PanelState::Session,
            (Some(ConnectionState::Connected), _) => PanelState::Idle,
        }
    }

    fn answer(&self) -> PanelAnswer {
        let state = self.state();
        let shown = match state {
            PanelState::Registering => self.registration.as_ref(),
            PanelState::Idle => self.session_qr.as_ref(),
            _ => None,
        };
        let session = state == PanelState::Session;
        PanelAnswer {
            state,
            qr: shown.and_then(|s| s.qr.clone()),
            user_code: shown.map(|s| s.user_code.clone()),
            screenshot: None,
            user: self.user.clone().filter(|_| session),
            scopes: if session { self.scopes.clone() } else { Vec::new() },
        }
    }
}

type Panel = Arc<watch::Sender<Snapshot>>;

/// The runner's event callback: persist, note PIN outcomes, keep the snapshot, narrate (without secrets).
fn on_event(panel: &Panel, state_dir: &std::path::Path, client: &MfpClient, ev: &MfpEvent) {
    let mut pin_outcome = None;
    let mut registration = None;
    match ev {
        MfpEvent::Lifecycle(LifecycleEvent::Persist(value)) => {
            // Newest refresh token and device id, written atomically (R-TOK-2). Your firmware: its flash store.
            if let Err(e) = store_atomically(state_dir, value) {
                log(format!("could not persist the connection: {e}"));
            }
        }
        MfpEvent::Lifecycle(LifecycleEvent::ShowRegistration {
            verification_uri_complete, user_code_display, ..
        }) => {
            // Your firmware: draw the QR and print the user code beside it (R-QR-1); without a
            // verification_uri_complete from the server, no QR: the verification page and the code
            // (docs/protocol.md §7).
            let qr = verification_uri_complete.as_ref().map(|v| v.secret().to_owned());
            registration = Some(Shown { qr, user_code: user_code_display.clone() });
            log("registration: showing a QR code and its user code");
        }
        MfpEvent::Lifecycle(LifecycleEvent::Registered { device_id, .. }) => log(format!("registered as {device_id}")),
        MfpEvent::Lifecycle(LifecycleEvent::RegistrationFailed(why)) => log(format!("registration failed: {why:?}")),
        MfpEvent::Lifecycle(LifecycleEvent::Disconnected(why)) => log(format!("disconnected: {why:?}")),
        MfpEvent::Lifecycle(LifecycleEvent::DeviceTokenRefreshed) => log("device token refreshed"),
        MfpEvent::Panel(PanelEvent::ShowQr(_)) => log("panel: showing a session QR code and its user code"),
        MfpEvent::Panel(PanelEvent::SessionStarted { user, .. }) => {
            pin_outcome = Some(true);
            log(format!("{} signed in", user.username));
        }
        MfpEvent::Panel(PanelEvent::Step2Granted { .. }) => pin_outcome = Some(true),
        MfpEvent::Panel(PanelEvent::PinRejected { reason }) => {
            pin_outcome = Some(false);
            log(format!("PIN not accepted: {reason:?}"));
        }
        MfpEvent::PinRefused(e) => {
            pin_outcome = Some(false);
            log(format!("PIN refused at the panel: {e}"));
        }
        MfpEvent::Panel(PanelEvent::SessionEnded { reason }) => log(format!("session ended: {reason:?}")),
        MfpEvent::Panel(PanelEvent::LoggedOut) => log("logged out; user tokens revoked"),
        // Other events carry nothing to show; their `Debug` redacts secrets, but a vendor log needs no more.
        _ => {}
    }
    panel.send_modify(|s| {
        if registration.is_some() {
            s.registration = registration;
        }
        s.refresh(client);
        if let (Some(ok), true) = (pin_outcome, s.pin_pending) {
            s.pin_pending = false;
            s.pin_accepted = ok;
            s.pin_seq += 1;
        }
    });
}

// -------------------------------------------------------------------------------------------------------------
// One power cycle of the printer.

/// What `start` gave us (kept for `restart`).
#[derive(Clone)]
struct StartConfig {
    discovery: String,
    ca: Option<PathBuf>,
    client_id: String,
    state_dir: PathBuf,
    policy: TransportPolicy,
}

struct Printer {
    /// For the API calls of `jobs`, `release`, `scan` (the runner has its own driver).
    api: Driver<ReqwestTransport>,
    endpoints: Endpoints,
    policy: TransportPolicy,
    inputs: mpsc::Sender<MfpInput>,
    panel: Panel,
    runner: JoinHandle<()>,
    /// Page count and source of each job, from the last listing.
    jobs: Mutex<HashMap<String, (u32, JobSource)>>,
}

impl Printer {
    /// Boots: discovery (R-DISC-1, R-DISC-2), metadata (R-META-1: refused unless `issuer` is the API base), the
    /// saved connection, then the runner task that drives roger-proto's lifecycle and panel machines.
    async fn boot(cfg: &StartConfig) -> Result<Self, String> {
        let transport = transport(cfg.ca.as_deref())?; // TLS verified against the system roots plus `ca`.
                                                       // Deviations of the server are logged as warnings, once each (docs/protocol.md §7).
        let api = driver(transport.clone());
        let region = api.discover(&cfg.discovery, None, cfg.policy).await.map_err(|e| e.to_string())?;
        let endpoints = api.metadata(&region.api, cfg.policy).await.map_err(|e| e.to_string())?;
        let lifecycle = LifecycleConfig::new(&cfg.client_id, MODEL, SERIAL);
        let connection = match load(&cfg.state_dir)? {
            Some(saved) => Connection::restore(lifecycle, saved, Instant::now()),
            None => Connection::new(lifecycle),
        };
        // The PIN login and step 2 use the password grant, which roger-proto enables only on request (RFC 9700 §2.4).
        let config = PanelConfig { allow_password_grant: true, ..PanelConfig::default() };
        let mut client = MfpClient::new(connection, config, endpoints.clone());
        let mut snapshot = Snapshot::default();
        snapshot.refresh(&client);
        let panel: Panel = Arc::new(watch::channel(snapshot).0);
        let (inputs, mut rx) = mpsc::channel(16);
        // The runner's driver writes each deviation of the server to the log as a warning, once per kind
        // (docs/protocol.md §7): the endpoint and the rule, never a value. Your firmware: its own log at warn level.
        let (p, dir, driver) = (panel.clone(), cfg.state_dir.clone(), driver(transport));
        let runner = tokio::spawn(async move {
            // An unregistered printer waits for `register` (PROTOCOL.md §13); run_mfp then starts the device grant.
            if client.connection.state() == ConnectionState::Unregistered {
                loop {
                    match rx.recv().await {
                        Some(MfpInput::Register) => break,
                        Some(MfpInput::Stop) | None => return p.send_modify(|s| s.stopped = true),
                        Some(_) => {}
                    }
                }
            }
            let result = driver.run_mfp(&mut client, &mut rx, |c, ev| on_event(&p, &dir, c, ev)).await;
            if let Err(e) = result {
                log(format!("the printer client stopped: {e}"));
            }
            p.send_modify(|s| s.stopped = true);
        });
        log(format!("powered on in region {}", region.id));
        Ok(Self { api, endpoints, policy: cfg.policy, inputs, panel, runner, jobs: Mutex::new(HashMap::new()) })
    }

    /// Power off: the runner stops; nothing is revoked (user tokens simply lapse, the registration stays).
    async fn shutdown(mut self) {
        let _ = self.inputs.send(MfpInput::Stop).await;
        if tokio::time::timeout(Duration::from_secs(10), &mut self.runner).await.is_err() {
            self.runner.abort();
        }
    }

    fn snapshot(&self) -> Snapshot {
        self.panel.borrow().clone()
    }

    /// Waits until `pred` holds (or the runner stopped); `Err` with the snapshot after `timeout`.
    async fn wait(&self, timeout: Duration, pred: impl Fn(&Snapshot) -> bool) -> Result<Snapshot, Snapshot> {
        let mut rx = self.panel.subscribe();
        let outcome = tokio::time::timeout(timeout, rx.wait_for(|s| pred(s) || s.stopped)).await;
        match outcome {
            Ok(Ok(s)) if pred(&s) => Ok(s.clone()),
            _ => Err(self.snapshot()),
        }
    }

    async fn input(&self, input: MfpInput) {
        let _ = self.inputs.send(input).await;
    }

    // --- §13 ops ---------------------------------------------------------------------------------------------

    /// `register`: from `unregistered` or `disconnected` a (new) registration; in `registering` the current code.
    async fn register(&self) -> ShimAnswer {
        match self.snapshot().state() {
            PanelState::Unregistered | PanelState::Disconnected => {
                self.panel.send_modify(|s| s.registration = None);
                self.input(MfpInput::Register).await;
            }
            PanelState::Registering => {}
            other => return fail("invalid_state", format!("cannot register in {other:?}")),
        }
        let shown = |s: &Snapshot| s.state() == PanelState::Registering && s.registration.is_some();
        match self.wait(OP_WAIT, shown).await.map(|s| s.registration) {
            Ok(Some(r)) => ShimAnswer::ok(&RegisterAnswer { qr: r.qr, user_code: r.user_code, screenshot: None }),
            _ => fail("internal", "no registration code was shown"),
        }
    }

    /// `pin`: a PIN login from `idle`, step 2 in `session` (PROTOCOL.md §8). The PIN goes to the panel machine,
    /// which sends it once and wipes it (R-PWD-1); it is never logged or stored.
    async fn pin(&self, username: String, pin: Pin) -> ShimAnswer {
        if !matches!(self.snapshot().state(), PanelState::Idle | PanelState::Session) {
            return ShimAnswer::ok(&PinAnswer { accepted: false });
        }
        let mut seq = 0;
        self.panel.send_modify(|s| {
            s.pin_pending = true;
            seq = s.pin_seq;
        });
        let secret = Password::new(pin.secret());
        drop(pin);
        self.input(MfpInput::Pin { username: Some(username), secret }).await;
        match self.wait(OP_WAIT, |s| s.pin_seq > seq).await {
            Ok(s) => ShimAnswer::ok(&PinAnswer { accepted: s.pin_accepted }),
            Err(_) => {
                self.panel.send_modify(|s| s.pin_pending = false);
                fail("internal", "no answer to the PIN in time")
            }
        }
    }

    /// `logout` (PROTOCOL.md §8 "End"): the panel revokes the user tokens (RFC 7009) and shows a fresh QR.
    async fn logout(&self) -> ShimAnswer {
        if self.snapshot().state() != PanelState::Session {
            return ShimAnswer::ok_empty();
        }
        self.input(MfpInput::Logout).await;
        match self.wait(OP_WAIT, |s| s.state() != PanelState::Session).await {
            Ok(_) => ShimAnswer::ok_empty(),
            Err(_) => fail("internal", "the session did not end"),
        }
    }

    /// `jobs`: `GET /api/v1/jobs?state=queued` with the session token (PROTOCOL.md §9).
    async fn jobs(&self) -> ShimAnswer {
        let api_base = &self.endpoints.api;
        let resp = match self.with_user_token(false, true, |t| api::list_jobs(api_base, t)).await {
            Ok(r) => r,
            Err(a) => return a,
        };
        // Item by item: one job without a needed member never hides the others (docs/protocol.md §7).
        match self.api.noted(api::JOBS_ENDPOINT, api::classify_job_list(&resp)) {
            Ok(list) => {
                let mut cache = self.jobs.lock().unwrap_or_else(|e| e.into_inner());
                for j in &list.jobs {
                    cache.insert(j.id.clone(), (j.pages, j.source));
                }
                let jobs = list.jobs.into_iter().map(|j| ShimJob { id: j.id, file_name: j.file_name }).collect();
                ShimAnswer::ok(&JobsAnswer { jobs })
            }
            Err(e) => fail("internal", e),
        }
    }

    /// `release`: release with an `Idempotency-Key` (the same key on every retry), download the document from
    /// the drive's pre-authorised URL (R-DATA-1), print it, report the result (PROTOCOL.md §9).
    async fn release(&self, job: &str) -> ShimAnswer {
        let known = self.jobs.lock().unwrap_or_else(|e| e.into_inner()).get(job).copied();
        let (pages, source) = known.unwrap_or((1, JobSource::Drive));
        if source == JobSource::Desktop {
            // This example has no job endpoint for the desktop hand-over (no `desktop` capability).
            return not_printed("desktop hand-over is not implemented in this example");
        }
        let (api_base, key) = (&self.endpoints.api, idempotency_key());
        let body = ReleaseRequest::default();
        let resp = match self.with_user_token(false, true, |t| api::release_job(api_base, t, job, &key, &body)).await {
            Ok(r) => r,
            Err(a) => return a,
        };
        let document = match self.api.noted(api::RELEASE_ENDPOINT, api::classify_release(&resp)) {
            Ok(ApiRelease::Drive { document, .. }) => document,
            Ok(ApiRelease::Desktop { .. }) => return not_printed("a desktop job (no hand-over in this example)"),
            Err(e) => return not_printed(format!("release refused: {e}")),
        };
        let printed = match download(&self.api, self.policy, document.url.secret()).await {
            // Your firmware: hand the bytes to the print engine here. Without an announced size (docs/protocol.md
            // §7) the whole download is the document.
            Ok(bytes) if document.size.is_none_or(|size| bytes.len() as u64 == size) => {
                log(format!("printed job {job} ({} bytes, {pages} pages)", bytes.len()));
                true
            }
            Ok(bytes) => {
                log(format!("job {job}: the drive sent {} bytes, {:?} announced", bytes.len(), document.size));
                false
            }
            Err(e) => {
                log(format!("job {job}: download failed: {e}"));
                false
            }
        };
        let (state, n) = if printed { (JobOutcome::Printed, pages) } else { (JobOutcome::Failed, 0) };
        let result = JobResult { state, pages: n };
        match self.with_user_token(false, true, |t| api::report_job_result(api_base, t, job, &result)).await {
            Ok(r) if classify_api_empty(&r).is_ok() => {}
            _ => log(format!("job {job}: the result was not accepted")),
        }
        ShimAnswer::ok(&serde_json::json!({ "printed": printed }))
    }

    /// `scan`: `POST /api/v1/scans` (sent once: not idempotent), the resumable upload to the drive, then
    /// `POST /api/v1/scans/{id}/complete` (PROTOCOL.md §9). Needs step 2 (`roger.scan`).
    async fn scan(&self, profile: &str) -> ShimAnswer {
        if !self.snapshot().scopes.iter().any(|s| s == scope::SCAN) {
            return fail("invalid_state", "scanning needs step 2 (a PIN) first");
        }
        let api_base = &self.endpoints.api;
        let body = ScanCreate { profile_id: profile.to_owned() };
        let created = match self.with_user_token(true, false, |t| api::create_scan(api_base, t, &body)).await {
            Ok(r) => match self.api.noted(api::SCANS_ENDPOINT, api::classify_scan_created(&r)) {
                Ok(c) => c,
                Err(e) => return ShimAnswer::ok(&serde_json::json!({ "uploaded": false, "detail": e.to_string() })),
            },
            Err(a) => return a,
        };
        // Your firmware: the scanner's output. Here: a small fake PDF, large enough for several chunks.
        let mut doc = format!("%PDF-1.7\n% example scan {}\n", created.scan_id).into_bytes();
        doc.extend((0..3 * UPLOAD_CHUNK).map(|i| b"0123456789abcdef\n"[i % 17]));
        doc.extend_from_slice(b"%%EOF\n");
        if let Err(e) = upload(&self.api, self.policy, created.upload.url.secret(), &doc).await {
            log(format!("scan {}: upload failed: {e}", created.scan_id));
            return ShimAnswer::ok(&serde_json::json!({ "uploaded": false }));
        }
        let done = ScanComplete { size: Some(doc.len() as u64), pages: Some(1) };
        let id = &created.scan_id;
        let uploaded = match self.with_user_token(true, true, |t| api::complete_scan(api_base, t, id, &done)).await {
            Ok(r) => classify_api_empty(&r).is_ok(),
            Err(_) => false,
        };
        log(format!("scan {id}: uploaded {} bytes, completed: {uploaded}", doc.len()));
        ShimAnswer::ok(&serde_json::json!({ "uploaded": uploaded }))
    }

    // --- HTTP helpers (retries, drive download and upload: roger_examples::transfer) ------------------------

    /// An API call with a user token (PROTOCOL.md §10): the step-2 token for scans (`step2`), else the session
    /// token. A `401` means the session is gone (RFC 6750 §3.1; user tokens have no refresh token): the panel is
    /// told and goes back to its QR.
    async fn with_user_token(
        &self,
        step2: bool,
        idempotent: bool,
        build: impl Fn(&AccessToken) -> Result<Request<Vec<u8>>, http::Error>,
    ) -> Result<Response<Vec<u8>>, ShimAnswer> {
        let s = self.snapshot();
        let token = if step2 { s.user_token } else { s.release_token };
        let Some(token) = token.filter(|_| s.conn == Some(ConnectionState::Connected)) else {
            return Err(fail("invalid_state", "no user is signed in"));
        };
        let resp = send_retrying(&self.api, idempotent, || build(&token)).await.map_err(|e| fail("internal", e))?;
        if resp.status() == http::StatusCode::UNAUTHORIZED {
            self.input(MfpInput::UserTokenRejected).await;
            return Err(fail("invalid_state", "the server ended the session"));
        }
        Ok(resp)
    }
}

fn not_printed(why: impl std::fmt::Display) -> ShimAnswer {
    ShimAnswer::ok(&serde_json::json!({ "printed": false, "detail": why.to_string() }))
}

// -------------------------------------------------------------------------------------------------------------
// The §13 loop.

struct Shim {
    allow_loopback_http: bool,
    config: Option<StartConfig>,
    printer: Option<Printer>,
}

impl Shim {
    /// Answers one request; `true` when the shim is to exit after writing the answer.
    async fn handle(&mut self, request: ShimRequest) -> (ShimAnswer, bool) {
        match &request {
            ShimRequest::Pin { username, .. } => log(format!("op pin (user {username})")),
            other => log(format!("op {}", other.op())),
        }
        if let ShimRequest::Start { discovery, ca, client_id, state_dir } = request {
            return (self.start(discovery, ca, client_id, state_dir).await, false);
        }
        if matches!(request, ShimRequest::Stop | ShimRequest::Restart) {
            // Power off; a restart then boots again from `state_dir`, as after a power cycle.
            if let Some(p) = self.printer.take() {
                p.shutdown().await;
            }
            return match (&request, self.config.clone()) {
                (ShimRequest::Stop, _) => (ShimAnswer::ok_empty(), true),
                (_, None) => (fail("invalid_state", "send start first"), false),
                (_, Some(config)) => match Printer::boot(&config).await {
                    Ok(p) => {
                        self.printer = Some(p);
                        (ShimAnswer::ok_empty(), false)
                    }
                    Err(e) => (fail("internal", e), false),
                },
            };
        }
        let Some(printer) = &self.printer else {
            return (fail("invalid_state", "send start first"), false);
        };
        let answer = match request {
            ShimRequest::Register => printer.register().await,
            ShimRequest::Panel => ShimAnswer::ok(&printer.snapshot().answer()),
            ShimRequest::Wait { state, timeout_ms } => {
                // `idle` means "showing the session QR" (docs/protocol.md §5.3): wait for the QR too, but report
                // an idle panel still fetching its code rather than a timeout.
                let timeout = Duration::from_millis(timeout_ms.min(600_000));
                let drawn = |s: &Snapshot| s.state() == state && (state != PanelState::Idle || s.session_qr.is_some());
                match printer.wait(timeout, drawn).await {
                    Ok(s) => ShimAnswer::ok(&s.answer()),
                    Err(s) if s.state() == state => ShimAnswer::ok(&s.answer()),
                    Err(s) => ShimAnswer::err_with(shim::TIMEOUT_ERROR, &s.answer()),
                }
            }
            ShimRequest::Pin { username, pin } => printer.pin(username, pin).await,
            ShimRequest::Jobs => printer.jobs().await,
            ShimRequest::Release { job } => printer.release(&job).await,
            ShimRequest::Scan { profile } => printer.scan(&profile).await,
            ShimRequest::Logout => printer.logout().await,
            ShimRequest::Start { .. } | ShimRequest::Stop | ShimRequest::Restart => fail("internal", "handled above"),
        };
        (answer, false)
    }

    /// `start`: boot against the given server. Answers the capabilities this example has.
    async fn start(&mut self, discovery: String, ca: Option<String>, client_id: String, dir: String) -> ShimAnswer {
        if self.printer.is_some() {
            return fail("invalid_state", "already started");
        }
        if !roger_proto::token::client_id::is_emb(&client_id) || dir.is_empty() {
            return fail("bad_request", "client_id must look like emb-<vendor> and state_dir must be set");
        }
        let config = StartConfig {
            discovery,
            ca: ca.map(PathBuf::from),
            client_id,
            state_dir: PathBuf::from(dir),
            policy: TransportPolicy::loopback_plain_allowed(self.allow_loopback_http),
        };
        match Printer::boot(&config).await {
            Ok(p) => {
                self.printer = Some(p);
                self.config = Some(config);
                let capabilities = ["pin", "release", "scan"].map(String::from).to_vec();
                ShimAnswer::ok(&StartAnswer { capabilities })
            }
            Err(e) => fail("internal", e),
        }
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let mut allow_loopback_http = false;
    for arg in std::env::args().skip(1) {
        match arg.as_str() {
            // Plain HTTP on loopback only, for `conform client --plain-http` (R-DISC-2). Never in production.
            "--allow-loopback-http" => allow_loopback_http = true,
            _ => {
                eprintln!("{USAGE}");
                return ExitCode::from(2);
            }
        }
    }
    let mut shim = Shim { allow_loopback_http, config: None, printer: None };
    let mut input = tokio::io::BufReader::new(tokio::io::stdin());
    let mut output = tokio::io::stdout();
    loop {
        let mut line = Vec::new();
        let n = match (&mut input).take(MAX_LINE).read_until(b'\n', &mut line).await {
            Ok(n) => n,
            Err(e) => {
                log(format!("cannot read stdin: {e}"));
                return ExitCode::FAILURE;
            }
        };
        if n == 0 {
            // End of input: power off, as after `stop`.
            if let Some(p) = shim.printer.take() {
                p.shutdown().await;
            }
            return ExitCode::SUCCESS;
        }
        let too_long = n as u64 == MAX_LINE && line.last() != Some(&b'\n');
        let (answer, exit) = match String::from_utf8(line) {
            _ if too_long => {
                // Refuse an over-long line whole: skip to its end, a bounded piece at a time.
                let mut rest = Vec::new();
                while let Ok(1..) = (&mut input).take(MAX_LINE).read_until(b'\n', &mut rest).await {
                    if rest.last() == Some(&b'\n') {
                        break;
                    }
                    rest.clear();
                }
                (fail("bad_request", "the line is too long"), false)
            }
            Err(_) => (fail("bad_request", "the line is not UTF-8"), false),
            Ok(l) if l.trim().is_empty() => continue,
            Ok(l) => match ShimRequest::parse_line(&l) {
                Ok(request) => shim.handle(request).await,
                // The parse error never quotes the line (it may hold a PIN).
                Err(e) => (fail("bad_request", e), false),
            },
        };
        let mut text = answer.to_line();
        text.push('\n');
        let written = async {
            output.write_all(text.as_bytes()).await?;
            output.flush().await
        };
        if let Err(e) = written.await {
            log(format!("cannot write stdout: {e}"));
            return ExitCode::FAILURE;
        }
        if exit {
            return ExitCode::SUCCESS;
        }
    }
}
