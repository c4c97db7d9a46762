//! `roger-sim demo`: the whole system in one process (issue 4). A server (plain HTTP on loopback unless `--tls`,
//! the virtual clock, the fake drive, the in-process push bus), a simulated printer, phones for the admin and for
//! alice, and alice's desktop, all talking HTTP to each other (push only through the bus), act out one story, one
//! narrated line per step:
//!
//! 1. a printer registers and the admin approves it on the phone by scanning the panel screenshot (PROTOCOL.md §5);
//! 2. alice scans the panel's session QR on her phone and approves it (§8 step 1); the printer releases her queued
//!    drive job and prints it (§9);
//! 3. she enters her PIN (§8 step 2) and scans a page to her drive (§9);
//! 4. her desktop signs in by QR approved on her phone, holds a document (only metadata goes to the server), her
//!    phone learns of the queued job by push (`job.queued`, §11) and she releases it to the printer from there, and
//!    the desktop hands the file to the printer with a ticket (§9);
//! 5. she logs out (§8 "End");
//! 6. the clock jumps 91 days: the printer's refresh token is dead and the printer is disconnected (R-TOK-4);
//! 7. the admin reconnects it (a new registration).
//!
//! Every step checks its outcome over the wire and in the server's store (`GET /sim/store`), and fails with a
//! reason; every step has a time limit. The summary says what was printed, what the checks for document bytes at
//! the server found (R-DATA-1) and which personal data the store keeps (R-DATA-2).

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use http::{Method, Request};
use roger_proto::api::{CodeKind, Job, JobSource};
use roger_proto::driver::reqwest_transport::ReqwestTransport;
use roger_proto::driver::Driver;
use roger_proto::push::{Id, PushEvent};
use roger_proto::secret::{Password, Pin};
use roger_proto::server::drive::Folder;

use crate::bus::{QueueSpec, Subscription};
use crate::desktop::{Desktop, HandoverOutcome};
use crate::mfp::printer::sha256_hex;
use crate::mfp::{Mfp, MfpConfig, MfpHandle, PanelState, PrintSource, ReleaseOutcome};
use crate::phone::{ClientConfig, Phone, PushSource};
use crate::server::clock::ClockKind;
use crate::server::{start, RunningServer, ServerConfig};

/// The tenant of the built-in fixture.
pub const TENANT: &str = "acme";
/// The fixture's tenant admin and password.
pub const ADMIN: (&str, &str) = ("admin", "admin-pass");
/// The fixture's user, password and PIN.
pub const ALICE: (&str, &str, &str) = ("alice", "alice-pass", "1234");
/// How far the clock jumps in step 6: 90 days and a day (R-TOK-4: a refresh token unused for 90 days dies).
pub const CLOCK_JUMP_SECS: u64 = 91 * 86_400;
/// The default time limit of one step.
pub const DEFAULT_STEP_TIMEOUT: Duration = Duration::from_secs(30);

/// Arguments of `roger-sim demo`.
#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    /// Seed of the server's random generator: the same seed gives the same codes, tokens and ids.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Run the server over TLS (a generated CA, trusted by the simulated clients) instead of plain HTTP.
    #[arg(long)]
    pub tls: bool,
    /// Print only the summary (and a failure), not the narrated steps.
    #[arg(long)]
    pub quiet: bool,
    /// Keep the printer's state, the printed documents and the TLS files in this directory (default: a
    /// temporary directory, removed at the end).
    #[arg(long)]
    pub keep: Option<PathBuf>,
    /// Time limit of each step, in seconds.
    #[arg(long, default_value_t = 30)]
    pub step_timeout: u64,
    /// Push through a real AMQP broker instead of the in-process bus (PROTOCOL.md §11): the printer and the
    /// desktop fetch their credentials over HTTP and consume their queues on the broker. Without
    /// `--amqp-prefix` the demo uses a prefix of its own and deletes its exchange and queues at the end.
    #[command(flatten)]
    pub amqp: crate::amqp::AmqpArgs,
}

/// Settings of one run of the story.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Seed of the server's random generator ([`ServerConfig::seed`]).
    pub seed: u64,
    /// TLS with a generated CA instead of plain HTTP on loopback.
    pub tls: bool,
    /// Where the printer's state, its output folder and the TLS files go (must exist or be creatable).
    pub work_dir: PathBuf,
    /// Time limit of each step.
    pub step_timeout: Duration,
    /// Push through this AMQP broker instead of the in-process bus (PROTOCOL.md §11); its exchange and queues are
    /// deleted at the end.
    pub amqp: Option<crate::amqp::AmqpConfig>,
}

impl DemoOptions {
    /// Plain HTTP, the default step time limit, the in-process bus.
    pub fn new(seed: u64, work_dir: impl Into<PathBuf>) -> Self {
        Self { seed, tls: false, work_dir: work_dir.into(), step_timeout: DEFAULT_STEP_TIMEOUT, amqp: None }
    }
}

/// A step that did not do what it said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DemoFailure {
    /// The step number (0: setting up, 8: the closing checks).
    pub step: u8,
    /// What the step was doing.
    pub what: String,
    /// Why it failed.
    pub reason: String,
}

impl std::fmt::Display for DemoFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "step {} ({}): {}", self.step, self.what, self.reason)
    }
}

impl std::error::Error for DemoFailure {}

/// One personal datum the server keeps (R-DATA-2), as read from `GET /sim/store`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PersonalDatum {
    /// Where it is: `users.email`, `jobs.file_name`, `scans.completed_at`, …
    pub field: String,
    /// The value.
    pub value: String,
}

/// What a finished story measured (every number comes from the run, none is assumed).
#[derive(Debug, Clone, Default)]
pub struct DemoReport {
    /// The narrated lines, one per step.
    pub lines: Vec<String>,
    /// Jobs the printer printed (its `printed.jsonl`).
    pub jobs_printed: usize,
    /// Of those, jobs printed from the drive.
    pub drive_jobs_printed: usize,
    /// Of those, jobs handed over by the desktop.
    pub desktop_jobs_printed: usize,
    /// Bytes printed in all.
    pub bytes_printed: u64,
    /// Jobs the server's store lists as `printed`.
    pub jobs_printed_in_store: usize,
    /// Scans completed (store records with `completed: true`).
    pub scans_completed: usize,
    /// Bytes of the scans uploaded to the drive.
    pub scan_bytes: u64,
    /// Bytes the drive listener served (document downloads) during the run.
    pub drive_bytes_served: u64,
    /// Bytes the drive listener received (scan uploads) during the run.
    pub drive_bytes_received: u64,
    /// Documents whose contents were searched for in the server's store and request log.
    pub documents_checked: usize,
    /// Their size in all.
    pub document_bytes_checked: u64,
    /// Fragments of those documents searched for.
    pub fragments_checked: usize,
    /// Bytes of the fragments found in the server's store or request log (R-DATA-1: must be 0).
    pub document_bytes_at_server: u64,
    /// Requests in the API listener's request log (`GET /sim/log`), not counting the `/sim/` control calls.
    pub api_requests: usize,
    /// Request bodies the API listener received (`GET /sim/traffic`), control calls included.
    pub api_request_bodies: u64,
    /// Their bytes in all; every one of them was searched for the documents.
    pub api_request_body_bytes: u64,
    /// Whether a plaintext password of the story appears in the store (must be false).
    pub secrets_in_store: bool,
    /// Whether the scan's file name (known only to the drive) appears in the store (must be false).
    pub scan_name_in_store: bool,
    /// The printer's first device id.
    pub first_device_id: String,
    /// Whether the printer was disconnected after the clock jump.
    pub disconnected: bool,
    /// Why, as the printer's state file says.
    pub disconnect_reason: String,
    /// Whether the admin's reconnect made it connected and idle again.
    pub reconnected: bool,
    /// The device id after reconnecting (a new device, R-TOK-4).
    pub second_device_id: String,
    /// The R-DATA-2 fields found in the store.
    pub personal_data: Vec<PersonalDatum>,
    /// The broker the doorbells went through (`None`: the in-process bus).
    pub push_broker: Option<String>,
    /// Doorbells the broker confirmed (publisher confirms), with a broker.
    pub push_confirmed: u64,
    /// Wall time of the story.
    pub elapsed: Duration,
}

impl DemoReport {
    /// The closing summary, one line each.
    pub fn summary(&self) -> Vec<String> {
        let mut out = vec![
            "summary".to_owned(),
            format!(
                "  jobs printed: {} ({} from the drive, {} handed over by the desktop), {} bytes; {} listed as printed \
                 by the server",
                self.jobs_printed,
                self.drive_jobs_printed,
                self.desktop_jobs_printed,
                self.bytes_printed,
                self.jobs_printed_in_store
            ),
            format!("  scans completed: {} ({} bytes, uploaded to the drive)", self.scans_completed, self.scan_bytes),
            format!(
                "  drive listener: {} bytes served (downloads), {} bytes received (uploads)",
                self.drive_bytes_served, self.drive_bytes_received
            ),
            format!(
                "  document bytes seen at the API server: {} — searched every request body the API listener received \
                 ({} bodies, {} bytes), its store (GET /sim/store) and its request log ({} API requests) for {} \
                 fragments of the {} documents ({} bytes)",
                self.document_bytes_at_server,
                self.api_request_bodies,
                self.api_request_body_bytes,
                self.api_requests,
                self.fragments_checked,
                self.documents_checked,
                self.document_bytes_checked
            ),
            format!(
                "  plaintext passwords in the store: {}; scan file name in the store: {}",
                if self.secrets_in_store { "FOUND" } else { "none" },
                if self.scan_name_in_store { "FOUND" } else { "no" }
            ),
            format!(
                "  printer: {} → disconnected ({}) → reconnected as {}",
                self.first_device_id,
                if self.disconnected { self.disconnect_reason.as_str() } else { "NOT disconnected" },
                if self.reconnected { self.second_device_id.as_str() } else { "NOT reconnected" }
            ),
            "  personal data the server keeps (R-DATA-2 fields found in GET /sim/store):".to_owned(),
        ];
        let mut fields: Vec<&str> = self.personal_data.iter().map(|d| d.field.as_str()).collect();
        fields.dedup();
        for field in fields {
            let values: Vec<&str> =
                self.personal_data.iter().filter(|d| d.field == field).map(|d| d.value.as_str()).collect();
            out.push(format!("    {field}: {}", values.join(", ")));
        }
        match &self.push_broker {
            Some(url) => out
                .push(format!("  push: AMQP broker {url}, {} doorbells confirmed by the broker", self.push_confirmed)),
            None => out.push("  push: the in-process bus".to_owned()),
        }
        out.push(format!("  wall time: {:.1} s", self.elapsed.as_secs_f64()));
        out
    }
}

/// The `/sim` control API and plain reads, over HTTP like everyone else.
struct Control {
    driver: Driver<ReqwestTransport>,
    api: String,
}

impl Control {
    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<serde_json::Value, String> {
        let mut builder = Request::builder().method(method.clone()).uri(format!("{}{path}", self.api));
        let bytes = match body {
            Some(b) => {
                builder = builder.header(http::header::CONTENT_TYPE, "application/json");
                serde_json::to_vec(&b).map_err(|e| e.to_string())?
            }
            None => Vec::new(),
        };
        let request = builder.body(bytes).map_err(|e| e.to_string())?;
        let answer = self.driver.send(request).await.map_err(|e| format!("{method} {path}: {e}"))?;
        if !answer.status().is_success() {
            return Err(format!("{method} {path}: {} {}", answer.status(), String::from_utf8_lossy(answer.body())));
        }
        serde_json::from_slice(answer.body()).map_err(|e| format!("{method} {path}: not JSON: {e}"))
    }

    async fn store(&self) -> Result<serde_json::Value, String> {
        self.call(Method::GET, "/sim/store", None).await
    }
}

/// Runs `f` as step `step`, failing it with a clear message when `limit` passes.
async fn step<T>(
    step: u8,
    what: &str,
    limit: Duration,
    f: impl Future<Output = Result<T, String>>,
) -> Result<T, DemoFailure> {
    let fail = |reason: String| DemoFailure { step, what: what.to_owned(), reason };
    match tokio::time::timeout(limit, f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(reason)) => Err(fail(reason)),
        Err(_) => Err(fail(format!("no outcome within {} s", limit.as_secs_f64()))),
    }
}

fn ensure(cond: bool, what: impl FnOnce() -> String) -> Result<(), String> {
    if cond {
        Ok(())
    } else {
        Err(what())
    }
}

/// Polls `check` every 50 ms until it gives a value (the caller's step limit bounds it).
async fn until<T>(mut check: impl FnMut() -> Option<T>) -> T {
    loop {
        if let Some(v) = check() {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Everything a running story holds; torn down whatever happens.
struct World {
    server: RunningServer,
    /// Every request body the API listener received, as the server's body inspector handed it over.
    api_bodies: Arc<Mutex<Vec<u8>>>,
    control: Control,
    client: ClientConfig,
    /// TLS for the printer's job endpoint (with `--tls`).
    job_tls: Option<Arc<rustls::ServerConfig>>,
    mfp: Option<MfpHandle>,
}

/// Runs the story of [`crate::demo`] and measures it. `say` gets each narrated line as the step finishes.
/// Everything runs in this process; the server, printer and clients are stopped before this returns.
pub async fn run_story(options: &DemoOptions, say: &mut (dyn FnMut(&str) + Send)) -> Result<DemoReport, DemoFailure> {
    let started = Instant::now();
    let setup = |reason: String| DemoFailure { step: 0, what: "setting up".into(), reason };
    std::fs::create_dir_all(&options.work_dir)
        .map_err(|e| setup(format!("cannot create {}: {e}", options.work_dir.display())))?;
    let config = ServerConfig {
        plain_http: !options.tls,
        clock: ClockKind::Virtual,
        seed: Some(options.seed),
        tls_dir: Some(options.work_dir.join("tls")),
        amqp: options.amqp.clone(),
        ..ServerConfig::default()
    };
    let server = start(config).await.map_err(|e| setup(format!("the server did not start: {e}")))?;
    // R-DATA-1 evidence: keep every request body the API listener receives, to search it for the documents.
    let api_bodies = Arc::new(Mutex::new(Vec::new()));
    let sink = api_bodies.clone();
    server.shared.traffic.inspect(Arc::new(move |body: &[u8]| {
        let mut all = sink.lock().unwrap_or_else(|e| e.into_inner());
        all.extend_from_slice(body);
        all.push(b'\n');
    }));
    let ca_pem = match &server.info.ca {
        Some(path) => Some(std::fs::read(path).map_err(|e| setup(format!("cannot read the CA {path}: {e}")))?),
        None => None,
    };
    let transport = ReqwestTransport::new(ca_pem.as_deref()).map_err(|e| setup(format!("HTTP client: {e}")))?;
    let control = Control { driver: Driver::new(transport), api: server.info.api.clone() };
    // The printer's job endpoint certificate, issued by the same CA the clients trust.
    let job_tls = if options.tls {
        let tls = crate::server::tls::load_or_create(&options.work_dir.join("tls"), &[])
            .map_err(|e| setup(format!("job endpoint certificate: {e}")))?;
        Some(tls.config)
    } else {
        None
    };
    let client = ClientConfig {
        discovery: server.info.discovery.clone(),
        region: None,
        ca_pem,
        // Plain HTTP on loopback only without `--tls`; with it everything is HTTPS, the printer's job endpoint
        // included (its certificate comes from the simulator's CA, docs/protocol.md C11).
        allow_loopback_http: !options.tls,
        request_timeout: Duration::from_secs(10),
    };
    let mut world = World { server, api_bodies, control, client, job_tls, mfp: None };
    let result = story(options, &mut world, say).await;
    if let Some(mfp) = world.mfp.take() {
        mfp.stop().await;
    }
    let mut confirmed = 0;
    if let Some(bus) = world.server.amqp.clone() {
        confirmed = bus.stats().confirmed;
        if let Err(e) = bus.delete_topology().await {
            tracing::warn!("could not delete the demo's exchange and queues (they expire on their own): {e}");
        }
    }
    let broker = world.server.info.amqp.clone();
    world.server.stop().await;
    result.map(|mut report| {
        report.elapsed = started.elapsed();
        report.push_broker = broker;
        report.push_confirmed = confirmed;
        report
    })
}

async fn story(
    options: &DemoOptions,
    world: &mut World,
    say: &mut (dyn FnMut(&str) + Send),
) -> Result<DemoReport, DemoFailure> {
    let limit = options.step_timeout;
    let mut report = DemoReport::default();
    let mut tell = |report: &mut DemoReport, n: u8, line: String| {
        let line = format!("[{n:>2}] {line}");
        say(&line);
        report.lines.push(line);
    };
    let drive = world.server.shared.drive.clone();
    let (served0, received0) = (drive.total_bytes_served(), drive.total_bytes_received());

    // Polls every second (PROTOCOL.md §3: the interval is a tenant setting; the default 5 s only slows the story).
    step(0, "shortening the polling interval", limit, async {
        world.control.call(Method::PUT, "/sim/settings", Some(serde_json::json!({ "interval_secs": 1 }))).await
    })
    .await?;

    // ---------------------------------------------------------------------------------------------------------
    // 1. Registration, approved by the admin on the phone (PROTOCOL.md §5).
    let what = "the printer registers and the admin approves it";
    let (mut admin, first_device) = step(1, what, limit, async {
        let mut config = MfpConfig::new(world.server.info.discovery.clone(), options.work_dir.join("printer"));
        config.out_dir = Some(options.work_dir.join("printed"));
        config.ca = world.server.info.ca.as_ref().map(PathBuf::from);
        config.allow_loopback_http = !options.tls;
        config.job_tls = world.job_tls.clone();
        // PROTOCOL.md §11: with a broker the printer fetches its credentials over HTTP and consumes its queue
        // there; otherwise it takes the in-process bus.
        config.push = if world.server.amqp.is_some() { None } else { Some(world.server.shared.bus.clone()) };
        config.handover_wait = limit;
        // With push healthy the printer may poll a session code only every 30 s (PROTOCOL.md §8); the demo's
        // printer checks every 2 s so that the dead token of step 6 shows within seconds.
        config.push_relaxed_interval = Duration::from_secs(2);
        let mfp = Mfp::start(config).await.map_err(|e| format!("the printer did not start: {e}"))?;
        let mfp = world.mfp.insert(mfp);
        let shown = mfp.register().await.map_err(|e| format!("no registration code: {e}"))?;
        let mut admin = Phone::connect(&world.client).await.map_err(|e| format!("admin's phone: {e}"))?;
        admin.login(TENANT, ADMIN.0, Password::new(ADMIN.1)).await.map_err(|e| format!("admin sign-in: {e}"))?;
        let (code, how) = match &shown.screenshot {
            Some(png) => {
                let bytes = std::fs::read(png).map_err(|e| format!("cannot read {}: {e}", png.display()))?;
                (
                    admin.scan_png(&bytes).map_err(|e| format!("the phone cannot read the screenshot: {e}"))?,
                    "screenshot",
                )
            }
            None => match &shown.qr {
                Some(qr) => (admin.scan_payload(qr).map_err(|e| format!("QR refused: {e}"))?, "QR"),
                None => (admin.typed_code(&shown.user_code).map_err(|e| format!("code refused: {e}"))?, "typed code"),
            },
        };
        let review = admin.look_up(&code).await.map_err(|e| format!("lookup: {e}"))?;
        let l = &review.lookup;
        ensure(l.kind == CodeKind::Registration, || format!("the code is a {:?}, not a registration", l.kind))?;
        let printer = format!(
            "{} {} (serial {})",
            l.vendor.as_deref().unwrap_or("?"),
            l.model.as_deref().unwrap_or("?"),
            l.serial.as_deref().unwrap_or("?")
        );
        admin.approve(&review, Some(CodeKind::Registration)).await.map_err(|e| format!("approve: {e}"))?;
        let view = mfp.wait_for(PanelState::Idle, limit).await.map_err(|v| format!("not idle: panel {:?}", v.state))?;
        let device = view.device_id.ok_or("idle without a device id")?;
        ensure(mfp.wait_job_url_published(limit).await, || "the job endpoint was not published".into())?;
        let store = world.control.store().await?;
        ensure(store["devices"][&device].is_object(), || format!("device {device} not in the store"))?;
        Ok::<_, String>((admin, (device, printer, how)))
    })
    .await?;
    let (device_id, printer, how) = first_device;
    tell(
        &mut report,
        1,
        format!(
            "printer {printer} shows its registration QR; admin scans the panel {how} and approves → registered as \
             {device_id}, job endpoint published"
        ),
    );
    report.first_device_id = device_id.clone();

    // ---------------------------------------------------------------------------------------------------------
    // 2. alice signs in by the panel's QR and releases her queued drive job (§8 step 1, §9).
    let what = "alice signs in by QR and releases her drive job";
    let (mut alice, alice_id, line) = step(2, what, limit, async {
        let mfp = world.mfp.as_ref().ok_or("no printer")?;
        let (shown, view) = mfp.wait_until(limit, |v| v.state == PanelState::Idle && v.qr.is_some()).await;
        ensure(shown, || format!("no session QR on the panel ({:?})", view.state))?;
        let qr = view.qr.ok_or("no QR")?;
        let mut alice = Phone::connect(&world.client).await.map_err(|e| format!("alice's phone: {e}"))?;
        let user =
            alice.login(TENANT, ALICE.0, Password::new(ALICE.1)).await.map_err(|e| format!("alice sign-in: {e}"))?;
        let code = alice.scan_payload(&qr).map_err(|e| format!("the phone refused the QR: {e}"))?;
        let review = alice.look_up(&code).await.map_err(|e| format!("lookup: {e}"))?;
        ensure(review.lookup.kind == CodeKind::Session, || format!("a {:?} code, not a session", review.lookup.kind))?;
        alice.approve(&review, Some(CodeKind::Session)).await.map_err(|e| format!("approve: {e}"))?;
        let view =
            mfp.wait_for(PanelState::Session, limit).await.map_err(|v| format!("no session: panel {:?}", v.state))?;
        ensure(view.user.as_deref() == Some(ALICE.0), || format!("session for {:?}", view.user))?;
        let jobs = mfp.jobs().await.map_err(|e| format!("jobs: {e}"))?;
        let job = jobs.iter().find(|j| j.source == JobSource::Drive).ok_or("alice has no queued drive job")?.clone();
        let outcome = mfp.release(&job.id).await.map_err(|e| format!("release: {e}"))?;
        let ReleaseOutcome::Printed { record, reported } = outcome else {
            return Err(format!("the drive job did not print: {outcome:?}"));
        };
        ensure(reported, || "the result was not reported".into())?;
        ensure(record.bytes > 0 && record.source == PrintSource::Drive, || format!("printed {record:?}"))?;
        let printed = std::fs::read(&record.path).map_err(|e| format!("printed file: {e}"))?;
        ensure(printed.len() as u64 == record.bytes && sha256_hex(&printed) == record.sha256, || {
            "the printed file does not match its record".into()
        })?;
        let store = world.control.store().await?;
        let state = store["jobs"][&job.id]["state"].as_str().unwrap_or("missing").to_owned();
        ensure(state == "printed", || format!("the server says the job is {state}"))?;
        let line = format!(
            "alice scans the panel QR on her phone … approved; session for alice at printer {device_id}; her queued \
             drive job \"{}\" is released, downloaded from the drive and printed ({} bytes, {} pages); server: {state}",
            job.file_name, record.bytes, record.pages
        );
        Ok::<_, String>((alice, user.id, line))
    })
    .await?;
    tell(&mut report, 2, line);

    // ---------------------------------------------------------------------------------------------------------
    // 3. Step 2 with the PIN, then a scan to the drive (§8 step 2, §9).
    let what = "alice enters her PIN and scans to her drive";
    let (scan_name, scan_bytes, line) = step(3, what, limit, async {
        let mfp = world.mfp.as_ref().ok_or("no printer")?;
        let accepted = mfp.pin(ALICE.0, Pin::new(ALICE.2)).await.map_err(|e| format!("PIN: {e}"))?;
        ensure(accepted, || "the PIN was not accepted".into())?;
        let scopes = mfp.panel().scopes;
        ensure(scopes.iter().any(|s| s == "roger.scan"), || format!("no scan scope: {scopes:?}"))?;
        let profiles = mfp.scan_profiles().await.map_err(|e| format!("scan profiles: {e}"))?;
        let profile = profiles.first().ok_or("no scan profile")?.clone();
        let received_before = drive.total_bytes_received();
        let scan = mfp.scan(&profile.id).await.map_err(|e| format!("scan: {e}"))?;
        let store = world.control.store().await?;
        let record = &store["scans"][&scan.scan_id];
        ensure(record["completed"] == serde_json::Value::Bool(true), || format!("scan record: {record}"))?;
        let uploaded = drive.total_bytes_received() - received_before;
        ensure(uploaded == scan.bytes, || format!("the drive received {uploaded} bytes, the scan has {}", scan.bytes))?;
        let stored = drive
            .files(&alice_id, Folder::Scan)
            .into_iter()
            .find(|f| drive.file_bytes(&alice_id, &f.id).map(|b| sha256_hex(&b) == scan.sha256).unwrap_or(false))
            .ok_or("the scan is not in alice's Scan folder")?;
        let line = format!(
            "alice enters her PIN (step 2: print and scan allowed) and scans with \"{}\": {} bytes uploaded to her \
             drive's Scan folder as \"{}\"; server: scan completed",
            profile.name, scan.bytes, stored.name
        );
        Ok::<_, String>((stored.name, scan.bytes, line))
    })
    .await?;
    report.scans_completed = 1;
    report.scan_bytes = scan_bytes;
    tell(&mut report, 3, line);

    // ---------------------------------------------------------------------------------------------------------
    // 4. A job held on the desktop, released from the phone, handed to the printer with a ticket (§9).
    let what = "alice releases a job held on her desktop";
    let document = desktop_document(options.seed);
    let line = step(4, what, limit, async {
        let mfp = world.mfp.as_ref().ok_or("no printer")?;
        let mut desktop = Desktop::connect(&world.client).await.map_err(|e| format!("desktop: {e}"))?;
        let login = desktop.start_login().await.map_err(|e| format!("desktop login code: {e}"))?;
        let payload = login.qr_payload().ok_or("the desktop shows no QR")?.to_owned();
        let code = alice.scan_payload(&payload).map_err(|e| format!("the phone refused the QR: {e}"))?;
        let review = alice.look_up(&code).await.map_err(|e| format!("lookup: {e}"))?;
        ensure(review.lookup.kind == CodeKind::Desktop, || format!("a {:?} code", review.lookup.kind))?;
        alice.approve(&review, Some(CodeKind::Desktop)).await.map_err(|e| format!("approve: {e}"))?;
        let user = desktop.finish_login(login).await.map_err(|e| format!("desktop sign-in: {e}"))?;
        ensure(user.username == ALICE.0, || format!("the desktop signed in as {}", user.username))?;
        let pool = match world.server.amqp {
            // The desktop's own queue on the broker, with the credentials of GET /api/v1/me/push.
            Some(_) => {
                let ca = world.client.ca_pem.as_deref().and_then(|c| String::from_utf8(c.to_vec()).ok());
                let policy = world.client.policy();
                Some(crate::amqp::BrokerPool::new(crate::amqp::ConsumerOptions::new(policy, ca, "roger-desktop"), 1))
            }
            None => None,
        };
        let mut sub = match &pool {
            Some(pool) => desktop.subscribe_push("demo-desktop", pool).await.map_err(|e| format!("push: {e}"))?,
            None => {
                let queue = QueueSpec::App {
                    user_id: Id::new(user.id.clone()).map_err(|e| format!("user id: {e}"))?,
                    installation_id: Id::new("demo-desktop").map_err(|e| format!("installation id: {e}"))?,
                };
                world.server.shared.bus.subscribe(queue).await.map_err(|e| format!("subscribe: {e}"))?
            }
        };
        // alice's phone consumes its own installation queue (PROTOCOL.md §11): on the broker with the credentials
        // of GET /api/v1/me/push, or on the in-process bus. The first wait subscribes and reads the list.
        let phone_pool = match world.server.amqp {
            Some(_) => {
                let ca = world.client.ca_pem.as_deref().and_then(|c| String::from_utf8(c.to_vec()).ok());
                let options = crate::amqp::ConsumerOptions::new(world.client.policy(), ca, "roger-phone");
                Some(crate::amqp::BrokerPool::new(options, 1))
            }
            None => None,
        };
        let source = match &phone_pool {
            Some(pool) => PushSource::Broker(pool.clone()),
            None => PushSource::Bus(world.server.shared.bus.clone()),
        };
        alice.attach_push(source, "demo-phone").map_err(|e| format!("phone push: {e}"))?;
        alice.wait_for_jobs(limit, |_| true).await.map_err(|e| format!("phone push: {e}"))?;
        ensure(alice.push_connected(), || {
            format!("the phone does not consume its queue: {}", alice.push_last_error().unwrap_or("?"))
        })?;
        let job =
            desktop.submit("travel-expenses.pdf", 2, document.clone()).await.map_err(|e| format!("submit: {e}"))?;
        ensure(job.source == JobSource::Desktop, || format!("a {:?} job", job.source))?;
        // The job.queued doorbell makes the phone re-read its list; she picks the desktop job from it.
        let queued = |jobs: &[Job]| jobs.iter().any(|j| j.source == JobSource::Desktop && j.file_name == job.file_name);
        let listed =
            alice.wait_for_jobs(limit, queued).await.map_err(|e| format!("the phone did not see the job: {e}"))?;
        let stats = alice.detach_push().unwrap_or_default();
        if let Some(pool) = phone_pool {
            pool.close().await;
        }
        ensure(stats.doorbells >= 1, || format!("the phone saw the job without a doorbell: {stats:?}"))?;
        let seen = listed.iter().find(|j| j.file_name == job.file_name).ok_or("the job left the list")?;
        ensure(seen.id == job.id, || format!("the phone lists job {}, the desktop queued {}", seen.id, job.id))?;
        alice.release(&seen.id, &device_id).await.map_err(|e| format!("release from the phone: {e}"))?;
        let delivered = serve_until_delivered(&mut desktop, &mut sub, &job.id).await?;
        let record = until(|| mfp.printed().into_iter().find(|r| r.job_id == job.id)).await;
        ensure(record.source == PrintSource::Desktop, || format!("printed from {:?}", record.source))?;
        let printed = std::fs::read(&record.path).map_err(|e| format!("printed file: {e}"))?;
        ensure(printed == document, || "the printed bytes differ from the desktop's document".into())?;
        let state = loop {
            let store = world.control.store().await?;
            let state = store["jobs"][&job.id]["state"].as_str().unwrap_or("missing").to_owned();
            if state == "printed" {
                break state;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        Ok::<_, String>(format!(
            "alice's desktop signs in by QR (approved on her phone) and holds \"{}\" ({} bytes; only its name and page \
             count go to the server); her phone gets job.queued by push and lists it; she releases it from there \
             to {device_id}; the desktop gets job.release_requested by push, hands the file to the printer's job \
             endpoint with a ticket ({delivered}); \
             printed {} identical bytes; server: {state}",
            job.file_name,
            document.len(),
            record.bytes
        ))
    })
    .await?;
    tell(&mut report, 4, line);

    // ---------------------------------------------------------------------------------------------------------
    // 5. Logout (§8 "End").
    let line = step(5, "alice logs out", limit, async {
        let mfp = world.mfp.as_ref().ok_or("no printer")?;
        mfp.logout().await.map_err(|e| format!("logout: {e}"))?;
        let (idle, view) = mfp.wait_until(limit, |v| v.state == PanelState::Idle && v.qr.is_some()).await;
        ensure(idle, || format!("panel {:?} after logout", view.state))?;
        Ok::<_, String>("alice logs out: her tokens are revoked; the panel is idle with a fresh QR".to_owned())
    })
    .await?;
    tell(&mut report, 5, line);

    // ---------------------------------------------------------------------------------------------------------
    // 6. 90 days and a day later the refresh token is dead (R-TOK-4).
    let line = step(6, "the clock jumps 91 days and the printer is disconnected", limit, async {
        let mfp = world.mfp.as_ref().ok_or("no printer")?;
        let clock = world
            .control
            .call(Method::POST, "/sim/clock/advance", Some(serde_json::json!({ "seconds": CLOCK_JUMP_SECS })))
            .await?;
        let view = mfp
            .wait_for(PanelState::Disconnected, limit)
            .await
            .map_err(|v| format!("still {:?} after the clock jump", v.state))?;
        ensure(view.qr.is_none() && view.user.is_none(), || "a disconnected panel offers a login".into())?;
        let state = read_connection(mfp.state_dir())?;
        ensure(state["state"] == "disconnected", || format!("state file: {}", state["state"]))?;
        let reason = state["reason"].as_str().unwrap_or("unknown").to_owned();
        Ok::<_, String>((
            reason.clone(),
            format!(
                "the clock jumps 90 days + 1 day (server time now {}): the printer's token is refused and its refresh \
                 is invalid_grant → disconnected (reason {reason}); no login offered",
                clock["now"].as_str().unwrap_or("?")
            ),
        ))
    })
    .await?;
    report.disconnected = true;
    report.disconnect_reason = line.0;
    tell(&mut report, 6, line.1);

    // ---------------------------------------------------------------------------------------------------------
    // 7. The admin reconnects it: a new registration, a new device (R-TOK-4).
    let line = step(7, "the admin reconnects the printer", limit, async {
        let mfp = world.mfp.as_ref().ok_or("no printer")?;
        let shown = mfp.register().await.map_err(|e| format!("no registration code: {e}"))?;
        // The admin's app session lapsed with the jump as well (its refresh token is as old): sign in again.
        admin.login(TENANT, ADMIN.0, Password::new(ADMIN.1)).await.map_err(|e| format!("admin sign-in: {e}"))?;
        let code = match &shown.screenshot {
            Some(png) => {
                let bytes = std::fs::read(png).map_err(|e| format!("cannot read {}: {e}", png.display()))?;
                admin.scan_png(&bytes).map_err(|e| format!("the phone cannot read the screenshot: {e}"))?
            }
            None => match &shown.qr {
                Some(qr) => admin.scan_payload(qr).map_err(|e| format!("QR refused: {e}"))?,
                None => admin.typed_code(&shown.user_code).map_err(|e| format!("code refused: {e}"))?,
            },
        };
        let review = admin.look_up(&code).await.map_err(|e| format!("lookup: {e}"))?;
        admin.approve(&review, Some(CodeKind::Registration)).await.map_err(|e| format!("approve: {e}"))?;
        let view = mfp.wait_for(PanelState::Idle, limit).await.map_err(|v| format!("not idle: panel {:?}", v.state))?;
        let device = view.device_id.ok_or("idle without a device id")?;
        ensure(device != device_id, || "reconnected under the old device id".into())?;
        ensure(mfp.wait_job_url_published(limit).await, || "the job endpoint was not published".into())?;
        let (shown, _) = mfp.wait_until(limit, |v| v.state == PanelState::Idle && v.qr.is_some()).await;
        ensure(shown, || "no session QR after reconnecting".into())?;
        Ok::<_, String>((
            device.clone(),
            format!(
                "the admin reconnects it: the printer shows a new registration QR, the admin signs in again, scans \
                 and approves → connected as new device {device}, idle with a session QR"
            ),
        ))
    })
    .await?;
    report.reconnected = true;
    report.second_device_id = line.0;
    tell(&mut report, 7, line.1);

    // ---------------------------------------------------------------------------------------------------------
    // The closing measurements.
    let what = "measuring what the server saw and keeps";
    step(8, what, limit, async {
        let mfp = world.mfp.as_ref().ok_or("no printer")?;
        let printed = mfp.printed();
        report.jobs_printed = printed.len();
        report.drive_jobs_printed = printed.iter().filter(|r| r.source == PrintSource::Drive).count();
        report.desktop_jobs_printed = printed.iter().filter(|r| r.source == PrintSource::Desktop).count();
        report.bytes_printed = printed.iter().map(|r| r.bytes).sum();
        report.drive_bytes_served = drive.total_bytes_served() - served0;
        report.drive_bytes_received = drive.total_bytes_received() - received0;

        let store = world.control.store().await?;
        let log = world.control.call(Method::GET, "/sim/log", None).await?;
        report.api_requests = log["entries"]
            .as_array()
            .map(|e| e.iter().filter(|e| !e["path"].as_str().unwrap_or("").starts_with("/sim/")).count())
            .unwrap_or(0);
        report.jobs_printed_in_store =
            store["jobs"].as_object().map(|m| m.values().filter(|j| j["state"] == "printed").count()).unwrap_or(0);
        report.scans_completed = store["scans"]
            .as_object()
            .map(|m| m.values().filter(|s| s["completed"] == serde_json::Value::Bool(true)).count())
            .unwrap_or(0);

        let traffic = world.control.call(Method::GET, "/sim/traffic", None).await?;
        report.api_request_bodies = traffic["request_bodies"].as_u64().ok_or("no traffic totals")?;
        report.api_request_body_bytes = traffic["request_body_bytes"].as_u64().ok_or("no traffic totals")?;

        // R-DATA-1: search what the API listener received, its store and its request log for the documents.
        let bodies = String::from_utf8_lossy(&world.api_bodies.lock().unwrap_or_else(|e| e.into_inner())).into_owned();
        // What the server keeps (store and log) must hold no password; what it received (login forms) may.
        let kept = format!("{store}\n{log}");
        let haystack = format!("{bodies}\n{kept}");
        let mut documents: Vec<Vec<u8>> = Vec::new();
        for r in &printed {
            documents.push(std::fs::read(&r.path).map_err(|e| format!("printed file: {e}"))?);
        }
        for f in drive.files(&alice_id, Folder::Scan) {
            documents.extend(drive.file_bytes(&alice_id, &f.id).map(|b| b.to_vec()));
        }
        report.documents_checked = documents.len();
        report.document_bytes_checked = documents.iter().map(|d| d.len() as u64).sum();
        for d in &documents {
            for probe in probes(d) {
                report.fragments_checked += 1;
                if haystack.contains(&probe) {
                    report.document_bytes_at_server += probe.len() as u64;
                }
            }
        }
        report.secrets_in_store = [ADMIN.1, ALICE.1].iter().any(|p| kept.contains(p));
        report.scan_name_in_store = kept.contains(&scan_name);
        report.personal_data = personal_data(&store);
        Ok::<_, String>(())
    })
    .await?;
    step(8, what, limit, async {
        ensure(report.jobs_printed_in_store == report.jobs_printed, || {
            format!(
                "the printer printed {} jobs, the server lists {}",
                report.jobs_printed, report.jobs_printed_in_store
            )
        })?;
        ensure(report.document_bytes_at_server == 0, || {
            format!("{} bytes of document content found at the server", report.document_bytes_at_server)
        })?;
        ensure(report.fragments_checked > 0, || "no document fragment could be searched for".into())?;
        ensure(report.api_request_body_bytes > 0, || "the API listener's request bodies were not counted".into())?;
        ensure(!report.secrets_in_store, || "a plaintext password is in the store".into())?;
        ensure(!report.scan_name_in_store, || "the scan's file name is in the store".into())?;
        Ok(())
    })
    .await?;
    Ok(report)
}

/// Serves the desktop's push queue until `job_id` is handed over; returns how the printer answered.
async fn serve_until_delivered(desktop: &mut Desktop, sub: &mut Subscription, job_id: &str) -> Result<String, String> {
    loop {
        let envelope = sub.next().await.ok_or("the desktop's push subscription ended")?;
        let is_release = matches!(&envelope.event, PushEvent::JobReleaseRequested { .. });
        match desktop.handle_push(&envelope).await {
            Ok(HandoverOutcome::Delivered { job_id: id, status, .. }) if id == job_id => {
                return Ok(format!("printer answered {status}"));
            }
            Ok(_) => {}
            Err(e) if is_release => return Err(format!("hand-over: {e}")),
            Err(_) => {}
        }
    }
}

fn read_connection(state_dir: &Path) -> Result<serde_json::Value, String> {
    let path = state_dir.join("connection.json");
    let bytes = std::fs::read(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    serde_json::from_slice(&bytes).map_err(|e| format!("{}: {e}", path.display()))
}

/// The desktop's document: a small PDF-like text that names the seed (so each run's bytes are its own).
fn desktop_document(seed: u64) -> Vec<u8> {
    let mut doc = format!("%PDF-1.7\n% roger-sim demo: a document that stays on alice's desktop (seed {seed})\n");
    for line in 1..=40 {
        doc.push_str(&format!(
            "travel expenses line {line:02}: taxi {}.{:02} EUR, receipt kept locally\n",
            10 + line,
            (seed as usize * 7 + line) % 100
        ));
    }
    doc.push_str("%%EOF\n");
    doc.into_bytes()
}

/// Fragments of `document` to search for in the server's JSON: 24-byte windows of plain ASCII text (as JSON
/// would carry them unescaped), the base64 of its start and the hex of its start.
fn probes(document: &[u8]) -> Vec<String> {
    const WINDOW: usize = 24;
    let mut out = Vec::new();
    let mut offset = 0;
    while offset + WINDOW <= document.len() {
        let w = &document[offset..offset + WINDOW];
        if w.iter().all(|&b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\') {
            out.push(String::from_utf8_lossy(w).into_owned());
            offset += 97;
        } else {
            offset += 1;
        }
    }
    let head = &document[..document.len().min(48)];
    if head.len() >= 12 {
        out.push(base64::engine::general_purpose::STANDARD.encode(head));
        out.push(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(head));
        out.push(head.iter().map(|b| format!("{b:02x}")).collect());
    }
    out
}

/// The R-DATA-2 fields in the store: users' user names, display names and e-mails, job file names, scan times.
fn personal_data(store: &serde_json::Value) -> Vec<PersonalDatum> {
    let mut out = Vec::new();
    let mut take = |table: &str, field: &str| {
        if let Some(map) = store[table].as_object() {
            for record in map.values() {
                if let Some(v) = record[field].as_str() {
                    out.push(PersonalDatum { field: format!("{table}.{field}"), value: v.to_owned() });
                }
            }
        }
    };
    for field in ["username", "display_name", "email"] {
        take("users", field);
    }
    take("jobs", "file_name");
    take("scans", "created");
    take("scans", "completed_at");
    let hashes = store["users"]
        .as_object()
        .map(|m| {
            m.values()
                .flat_map(|u| [&u["pin_hash"], &u["password_hash"]])
                .filter(|h| h.as_str().is_some_and(|s| s.starts_with("$argon2id$")))
                .count()
        })
        .unwrap_or(0);
    out.push(PersonalDatum {
        field: "users.pin_hash/password_hash".into(),
        value: format!("{hashes} Argon2id hashes"),
    });
    out
}

/// `roger-sim demo`: runs the story, narrating each step, then prints the summary. Exit code 0 only if every
/// step did what it said; otherwise `FAILED: …` and 1.
pub async fn run(args: DemoArgs) -> ExitCode {
    let (work_dir, temporary) = match &args.keep {
        Some(dir) => (dir.clone(), false),
        None => {
            let nanos =
                std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
            (std::env::temp_dir().join(format!("roger-sim-demo-{}-{nanos}", std::process::id())), true)
        }
    };
    let options = DemoOptions {
        seed: args.seed,
        tls: args.tls,
        work_dir: work_dir.clone(),
        step_timeout: Duration::from_secs(args.step_timeout.max(1)),
        amqp: None,
    };
    let mut args = args;
    if args.amqp.amqp.is_some() && args.amqp.amqp_prefix.is_empty() {
        // A prefix of its own, so the demo never meets another run's queues and can delete everything it made.
        args.amqp.amqp_prefix = format!("roger-demo-{}-{}.", std::process::id(), args.seed);
    }
    let options = match args.amqp.config() {
        Ok(amqp) => DemoOptions { amqp, ..options },
        Err(e) => {
            println!("roger-sim demo: {e}");
            return ExitCode::from(2);
        }
    };
    let quiet = args.quiet;
    if !quiet {
        println!(
            "roger-sim demo (seed {}, {}, {}): server, drive, push bus, printer, phones and desktop in this process",
            args.seed,
            if args.tls { "TLS with a generated CA" } else { "plain HTTP on loopback" },
            if options.amqp.is_some() { "push through the AMQP broker" } else { "in-process push bus" }
        );
    }
    let mut say = |line: &str| {
        if !quiet {
            println!("{line}");
        }
    };
    let result = run_story(&options, &mut say).await;
    let code = match result {
        Ok(report) => {
            for line in report.summary() {
                println!("{line}");
            }
            println!("all 7 steps did what they said");
            ExitCode::SUCCESS
        }
        Err(failure) => {
            println!("FAILED: {failure}");
            ExitCode::FAILURE
        }
    };
    if temporary {
        let _ = std::fs::remove_dir_all(&work_dir);
    } else if !quiet {
        println!("kept the printer's state and output in {}", work_dir.display());
    }
    code
}
