//! The running printer: one [`Instance`] per power cycle. It owns the tasks that make the printer:
//!
//! * the **runner** drives roger-proto's lifecycle and panel machines with [`Driver::run_mfp`] (PROTOCOL.md §5–8);
//!   its event callback keeps a [`Snapshot`] of what the panel shows (for the control API and the shim), persists
//!   the connection state atomically, draws the QR codes and narrates;
//! * the **publisher** keeps the job endpoint published with `PUT /api/v1/device` (PROTOCOL.md §9) and re-reads
//!   the device after `config.changed` and push reconnects (docs/protocol.md §3.10);
//! * the **push** task turns envelopes into doorbells (PROTOCOL.md §11, R-PUSH-1; see `push.rs`);
//! * the **job endpoint** accepts desktop hand-overs with a ticket (PROTOCOL.md §9; see `handover.rs`).
//!
//! Protocol behaviour lives in the machines; this module only moves events, files and inputs around.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use roger_proto::api;
use roger_proto::discovery::TransportPolicy;
use roger_proto::driver::mfp::{MfpClient, MfpEvent, MfpInput};
use roger_proto::driver::Driver;
use roger_proto::error::PeerReport;
use roger_proto::lifecycle::{
    Connection, ConnectionState, DisconnectReason, LifecycleConfig, LifecycleEvent, RegistrationFailure,
};
use roger_proto::metadata::Endpoints;
use roger_proto::panel::{PanelConfig, PanelEvent, PanelState as MachinePanelState, PinRejectReason};
use roger_proto::secret::AccessToken;
use roger_proto::shim::PanelState;
use roger_proto::token::TokenUser;
use roger_proto::PeerViolation;
use tokio::net::TcpListener;
use tokio::sync::{broadcast, mpsc, watch};
use tokio::task::JoinHandle;

use super::mutant::{MfpMutant, MfpTransport};
use super::printer::{PrintRecord, Printer};
use super::{qr, state, MfpConfig, MfpError, PanelView};

/// Most narration lines kept in memory (older ones are dropped; the broadcast stream still saw them).
const MAX_LOG_LINES: usize = 10_000;

/// The path of the job endpoint on the printer's listener (PROTOCOL.md §9 `job_url`).
pub const JOB_PATH: &str = "/roger/jobs";

/// The narration: one human-readable line per event, kept across restarts of the printer. Lines never hold a
/// credential (R-SEC-1): no token, user code, QR payload, URL or PIN.
#[derive(Debug)]
pub(crate) struct EventLog {
    lines: Mutex<Vec<String>>,
    tx: broadcast::Sender<String>,
}

impl EventLog {
    pub(crate) fn new() -> Self {
        Self { lines: Mutex::new(Vec::new()), tx: broadcast::channel(1024).0 }
    }

    pub(crate) fn say(&self, line: impl Into<String>) {
        let line = line.into();
        tracing::debug!(target: "roger_sim::mfp", "{line}");
        {
            let mut lines = lock(&self.lines);
            if lines.len() >= MAX_LOG_LINES {
                lines.remove(0);
            }
            lines.push(line.clone());
        }
        let _ = self.tx.send(line);
    }

    pub(crate) fn lines(&self) -> Vec<String> {
        lock(&self.lines).clone()
    }

    pub(crate) fn subscribe(&self) -> broadcast::Receiver<String> {
        self.tx.subscribe()
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A code on display: the QR payload and the user code beside it (R-QR-1), and its non-secret `request_id` (a
/// push reconnect polls it at once, R-PUSH-1).
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Shown {
    /// The QR payload; `None` when the server sent no `verification_uri_complete` (docs/protocol.md §7): no QR,
    /// the verification URI and the code in text.
    pub payload: Option<String>,
    /// The verification page to show in text; `None` when the server named one on another origin (R-QR-4).
    pub verification_uri: Option<String>,
    pub user_code: String,
    pub request_id: Option<String>,
}

/// What the printer shows and holds, as of its last event (the control API reads it; the machines stay the
/// source of truth).
#[derive(Default)]
pub(crate) struct Snapshot {
    pub conn: Option<ConnectionState>,
    /// The runner has started (an unregistered printer without auto-registration waits for `register`).
    pub running: bool,
    pub stopped: bool,
    pub runner_error: Option<String>,
    pub device_id: Option<String>,
    pub device_token: Option<AccessToken>,
    /// Bumped whenever a new device token arrives (to wait for a refresh after a refusal, R-TOK-1).
    pub device_token_gen: u64,
    pub registration: Option<Shown>,
    pub session_qr: Option<Shown>,
    pub screenshot: Option<std::path::PathBuf>,
    pub panel: Option<MachinePanelState>,
    pub user: Option<TokenUser>,
    pub scopes: Vec<String>,
    pub release_token: Option<AccessToken>,
    pub user_token: Option<AccessToken>,
    /// A PIN entry is waiting for its outcome.
    pub pin_pending: bool,
    /// Bumped when a PIN entry ends; `pin_accepted` is its outcome.
    pub pin_seq: u64,
    pub pin_accepted: bool,
    /// `GET /api/v1/device` should be re-read (config.changed, push reconnect).
    pub reread_device: bool,
    /// The device the job endpoint was last published for.
    pub published_for: Option<String>,
    /// The device for which the server answered `PUT /api/v1/device` with `404`/`405`: the optional `job_url`
    /// extension (docs/protocol.md §10.2 C11) is not offered, and is not asked for again until a restart or a
    /// reconnect (a new device).
    pub job_url_unoffered_for: Option<String>,
    /// Test-only mutant [`MfpMutant::QrWithoutUserCode`]: the panel shows no user code beside the QR.
    pub hide_user_code: bool,
}

impl Snapshot {
    fn refresh_from(&mut self, client: &MfpClient, now: Instant) {
        let conn = client.connection.state();
        self.conn = Some(conn);
        self.device_id = client.connection.device_id().map(str::to_owned);
        let token = client.connection.device_token(now).cloned();
        if token.is_some() && token != self.device_token {
            self.device_token_gen += 1;
        }
        self.device_token = token;
        if conn != ConnectionState::Registering {
            self.registration = None;
        }
        match &client.panel {
            Some(p) => {
                self.panel = Some(p.state());
                self.user = p.user().cloned();
                self.scopes = p.scopes();
                self.release_token = p.release_token().cloned();
                self.user_token = p.user_token().cloned();
                self.session_qr = p.current_qr().map(|q| Shown {
                    payload: q.verification_uri_complete.as_ref().map(|v| v.secret().to_owned()),
                    verification_uri: q.verification_uri.clone(),
                    user_code: q.user_code_display.clone(),
                    request_id: q.request_id.clone(),
                });
            }
            None => {
                self.panel = None;
                self.user = None;
                self.scopes.clear();
                self.release_token = None;
                self.user_token = None;
                self.session_qr = None;
            }
        }
    }

    /// The shim's panel state (PROTOCOL.md §13).
    pub fn state(&self) -> PanelState {
        match self.conn {
            None | Some(ConnectionState::Unregistered) => PanelState::Unregistered,
            Some(ConnectionState::Registering) => PanelState::Registering,
            Some(ConnectionState::Disconnected) => PanelState::Disconnected,
            Some(ConnectionState::Connected) => match self.panel {
                Some(MachinePanelState::Step1 | MachinePanelState::Step2) => PanelState::Session,
                _ => PanelState::Idle,
            },
        }
    }

    pub fn view(&self) -> PanelView {
        let state = self.state();
        let shown = match state {
            PanelState::Registering => self.registration.as_ref(),
            PanelState::Idle => self.session_qr.as_ref(),
            _ => None,
        };
        let in_session = state == PanelState::Session;
        PanelView {
            state,
            qr: shown.and_then(|s| s.payload.clone()),
            user_code: shown.map(|s| s.user_code.clone()).filter(|_| !self.hide_user_code),
            screenshot: shown.and(self.screenshot.clone()),
            user: if in_session { self.user.as_ref().map(|u| u.username.clone()) } else { None },
            scopes: if in_session { self.scopes.clone() } else { Vec::new() },
            device_id: self.device_id.clone(),
        }
    }

    pub fn connected(&self) -> bool {
        self.conn == Some(ConnectionState::Connected)
    }
}

/// Everything the tasks of one running printer share.
pub(crate) struct Core {
    pub config: MfpConfig,
    pub endpoints: Endpoints,
    pub policy: TransportPolicy,
    /// The driver the control API, the publisher and the job endpoint send through (the runner has its own).
    pub api: Driver<MfpTransport>,
    pub inputs: mpsc::Sender<MfpInput>,
    snap: Mutex<Snapshot>,
    pub version: watch::Sender<u64>,
    pub log: Arc<EventLog>,
    pub printer: Printer,
    /// Jobs printed through the job endpoint, by id (a desktop release waits for its hand-over).
    pub handed_over: Mutex<HashMap<String, PrintRecord>>,
    /// The job list as last read (file names and page counts for releases).
    pub jobs_cache: Mutex<HashMap<String, roger_proto::api::Job>>,
    /// SHA-256 of every ticket redeemed here (PROTOCOL.md §9 "one use": a replay at this printer is refused even
    /// within the server's 30-second lost-answer grace).
    pub used_tickets: Mutex<std::collections::HashSet<String>>,
    pub job_url: String,
    pub shutdown: watch::Sender<bool>,
}

impl Core {
    /// Reads the snapshot.
    pub fn snapshot<R>(&self, f: impl FnOnce(&Snapshot) -> R) -> R {
        f(&lock(&self.snap))
    }

    /// Changes the snapshot and wakes every waiter.
    pub fn update<R>(&self, f: impl FnOnce(&mut Snapshot) -> R) -> R {
        let r = f(&mut lock(&self.snap));
        self.version.send_modify(|v| *v = v.wrapping_add(1));
        r
    }

    /// Waits until `pred` holds on the snapshot, or `timeout` passes; returns whether it holds.
    pub async fn wait_until(&self, timeout: Duration, pred: impl Fn(&Snapshot) -> bool) -> bool {
        let mut rx = self.version.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if self.snapshot(&pred) {
                return true;
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) | Err(_) => return self.snapshot(&pred),
            }
        }
    }

    /// Narrates one line.
    pub fn say(&self, line: impl Into<String>) {
        self.log.say(line);
    }

    /// Sends an input to the runner (dropped silently once the printer has stopped).
    pub async fn input(&self, input: MfpInput) {
        let _ = self.inputs.send(input).await;
    }

    fn screenshot_dir(&self) -> &std::path::Path {
        &self.config.state_dir
    }

    /// Shows a code: the PNG screenshot and its code file in the state directory, and the terminal rendering
    /// when configured (R-QR-1: QR and user code together).
    fn show_code(&self, title: &str, shown: &Shown) -> Option<std::path::PathBuf> {
        // Test-only mutant `qr-without-user-code`: the code is drawn without its user code (breaks R-QR-1).
        let user_code = if self.config.mutant == Some(MfpMutant::QrWithoutUserCode) { "" } else { &shown.user_code };
        let Some(payload) = &shown.payload else {
            // No `verification_uri_complete` from the server (RFC 8628 §3.2 OPTIONAL): no QR; the user opens the
            // page and types the code (RFC 8628 §3.3, docs/protocol.md §7).
            if self.config.terminal_qr {
                match &shown.verification_uri {
                    Some(page) => println!("\n{title}\nopen {page} and enter the code {user_code}\n"),
                    None => println!("\n{title}\nenter the code {user_code} in the Roger app\n"),
                }
            }
            self.clear_code();
            return None;
        };
        if self.config.terminal_qr {
            match qr::render_terminal(payload, user_code) {
                Ok(text) if user_code.is_empty() => {
                    let qr_only = text.lines().filter(|l| !l.starts_with("code:")).collect::<Vec<_>>().join("\n");
                    println!("\n{title}\n{qr_only}\n")
                }
                Ok(text) => println!("\n{title}\n{text}or open {payload}\n"),
                Err(e) => self.say(format!("cannot draw the QR code in the terminal: {e}")),
            }
        }
        match qr::write_screenshot(self.screenshot_dir(), payload, user_code) {
            Ok(path) => Some(path),
            Err(e) => {
                self.say(format!("cannot write the panel screenshot: {e}"));
                None
            }
        }
    }

    fn clear_code(&self) {
        if let Err(e) = qr::clear_screenshot(self.screenshot_dir()) {
            self.say(format!("cannot remove the old panel screenshot: {e}"));
        }
    }

    /// The runner's event callback (see the module documentation).
    fn on_event(&self, client: &MfpClient, ev: &MfpEvent) {
        let now = Instant::now();
        let mut pin_outcome: Option<bool> = None;
        let mut lines: Vec<String> = Vec::new();
        // What to draw: Some(Some(code)) shows a code, Some(None) clears the screen.
        let mut draw: Option<Option<(String, Shown)>> = None;
        match ev {
            MfpEvent::Lifecycle(le) => match le {
                LifecycleEvent::ShowRegistration {
                    verification_uri_complete,
                    verification_uri,
                    user_code_display,
                    request_id,
                    ..
                } => {
                    let shown = Shown {
                        payload: verification_uri_complete.as_ref().map(|v| v.secret().to_owned()),
                        verification_uri: verification_uri.clone(),
                        user_code: user_code_display.clone(),
                        request_id: request_id.clone(),
                    };
                    self.update(|s| s.registration = Some(shown.clone()));
                    draw = Some(Some(("Scan to register this printer (an admin approves it):".into(), shown)));
                    lines.push("registration: showing the QR code and its user code (R-QR-1)".into());
                }
                LifecycleEvent::RegistrationFailed(why) => {
                    draw = Some(None);
                    lines.push(format!("registration failed: {}", registration_failure(why)));
                }
                LifecycleEvent::Registered { device_id, tenant_id } => {
                    draw = Some(None);
                    lines.push(format!(
                        "registered as device {device_id} in tenant {}",
                        tenant_id.as_deref().unwrap_or("(unnamed)")
                    ));
                }
                LifecycleEvent::Persist(value) => {
                    if let Err(e) = state::store_connection(&self.config.state_dir, value) {
                        lines.push(format!("could not persist the connection state: {e}"));
                    }
                }
                LifecycleEvent::DeviceTokenRefreshed => lines.push("device token refreshed".into()),
                LifecycleEvent::Disconnected(reason) => {
                    draw = Some(None);
                    lines.push(format!(
                        "disconnected from the tenant ({}); no user login until the printer is reconnected \
                         (register again)",
                        match reason {
                            DisconnectReason::RefreshTokenDead => "the refresh token is dead, R-TOK-4",
                            DisconnectReason::Removed => "an admin removed the printer",
                            _ => "refused",
                        }
                    ));
                }
                // Reported by the runner's driver (its sink narrates and warns), once per kind.
                LifecycleEvent::PeerViolation(_) => {}
                other => lines.push(format!("lifecycle: {other:?}")),
            },
            MfpEvent::Panel(pe) => match pe {
                PanelEvent::ShowQr(q) => {
                    let shown = Shown {
                        payload: q.verification_uri_complete.as_ref().map(|v| v.secret().to_owned()),
                        verification_uri: q.verification_uri.clone(),
                        user_code: q.user_code_display.clone(),
                        request_id: q.request_id.clone(),
                    };
                    draw = Some(Some(("Scan to sign in at this printer:".into(), shown)));
                    lines.push("panel: showing a session QR code and its user code".into());
                }
                PanelEvent::QrExpired => {
                    draw = Some(None);
                    lines.push("panel: the session QR code expired; fetching a new one".into());
                }
                PanelEvent::QrDenied => lines.push("panel: the session code was denied; showing a new one".into()),
                PanelEvent::SessionStarted { user, scopes } => {
                    draw = Some(None);
                    pin_outcome = Some(true);
                    lines.push(format!("{} signed in ({})", user.username, scopes.join(" ")));
                }
                PanelEvent::Step2Granted { scopes } => {
                    pin_outcome = Some(true);
                    lines.push(format!("PIN accepted: step 2 granted ({})", scopes.join(" ")));
                }
                PanelEvent::Step2Expired => lines.push("the step-2 token expired; back at step 1".into()),
                PanelEvent::PinRejected { reason } => {
                    pin_outcome = Some(false);
                    lines.push(format!("PIN not accepted ({})", pin_reason(*reason)));
                }
                PanelEvent::NeedDeviceToken => {
                    lines.push("the device token was refused; refreshing it and retrying (R-TOK-1)".into())
                }
                PanelEvent::SessionEnded { reason } => {
                    lines.push(format!("the session ended ({reason:?}); back to the QR code"));
                }
                PanelEvent::LoggedOut => lines.push("logged out; user tokens revoked (RFC 7009)".into()),
                PanelEvent::PeerViolation(_) => {}
                other => lines.push(format!("panel: {other:?}")),
            },
            MfpEvent::PinRefused(e) => {
                pin_outcome = Some(false);
                lines.push(format!("PIN entry refused at the panel: {e}"));
            }
            other => lines.push(format!("{other:?}")),
        }
        let screenshot = match &draw {
            Some(Some((title, shown))) => Some(self.show_code(title, shown)),
            Some(None) => {
                self.clear_code();
                Some(None)
            }
            None => None,
        };
        self.update(|s| {
            s.refresh_from(client, now);
            if let Some(path) = screenshot {
                s.screenshot = path;
            }
            if let (Some(ok), true) = (pin_outcome, s.pin_pending) {
                s.pin_pending = false;
                s.pin_accepted = ok;
                s.pin_seq += 1;
            }
        });
        for line in lines {
            self.say(line);
        }
    }
}

/// Reports, at warn level, an answer the printer read past or refused (docs/protocol.md §7): the endpoint, the rule
/// and the `PeerViolation`, never a value (it may carry a user code or a token, R-SEC-1). The machines report each
/// kind once, so a server that sends hyphenated codes does not fill the log every rotation; a vendor whose
/// printer does not register sees why on the first screen of its log.
fn peer_report(r: &PeerReport) -> String {
    let hint = match r.violation {
        PeerViolation::ForeignQrOrigin => {
            "; the panel shows the API's own /device link with the same user code instead (R-QR-4)"
        }
        PeerViolation::MissingVerificationUriComplete => "; the panel shows the verification URI and the code, no QR",
        _ => "",
    };
    tracing::warn!(
        target: "roger_sim::mfp",
        endpoint = r.endpoint,
        violation = ?r.violation,
        action = ?r.action,
        "server answer deviates: {r}{hint}"
    );
    format!("server answer deviates: {r}{hint}")
}

fn registration_failure(why: &RegistrationFailure) -> String {
    match why {
        RegistrationFailure::Denied => "the admin denied it".into(),
        RegistrationFailure::Expired => "the code expired".into(),
        RegistrationFailure::Refused(code) => format!("refused ({code:?})"),
        RegistrationFailure::IncompleteGrant => "the server's answer lacked the device id or refresh token".into(),
        other => format!("{other:?}"),
    }
}

fn pin_reason(reason: PinRejectReason) -> &'static str {
    match reason {
        PinRejectReason::WrongCredentials => "wrong user name or PIN",
        PinRejectReason::Unavailable => "the server is unavailable",
        PinRejectReason::Refused => "refused by the server",
        PinRejectReason::Cancelled => "cancelled",
        _ => "refused",
    }
}

/// One power cycle of the printer: its shared core and its tasks.
pub(crate) struct Instance {
    pub core: Arc<Core>,
    runner: Option<JoinHandle<()>>,
    tasks: Vec<JoinHandle<()>>,
}

impl Instance {
    /// Boots the printer: discovery and metadata (R-DISC-1, R-DISC-2, R-META-1), the state directory, the job
    /// endpoint, then the tasks.
    pub async fn start(config: &MfpConfig, log: Arc<EventLog>) -> Result<Self, MfpError> {
        if !roger_proto::token::client_id::is_emb(&config.client_id) {
            return Err(MfpError::Config(format!("the client id must look like emb-<vendor>: {:?}", config.client_id)));
        }
        let ca = match &config.ca {
            Some(path) => Some(
                std::fs::read(path).map_err(|e| MfpError::Config(format!("cannot read CA {}: {e}", path.display())))?,
            ),
            None => None,
        };
        // The printer's HTTP layer; for a test-only mutant it also makes the mutant's mistake (`mutant.rs`).
        let transport = MfpTransport::new(ca.as_deref(), config.mutant, config.state_dir.clone(), log.clone())
            .map_err(MfpError::Transport)?;
        // Deviations seen on the API calls (lists read item by item, links without optional members, metadata)
        // are reported once each, at warn level and in the narration (docs/protocol.md §7).
        let sink_log = log.clone();
        let api = Driver::new(transport.clone())
            .request_timeout(config.request_timeout)
            .on_peer_report(move |r| sink_log.say(peer_report(r)));
        let policy = config.transport_policy();
        let region = api.discover(&config.discovery, config.region.as_deref(), policy).await?;
        let endpoints = api.metadata(&region.api, policy).await?;

        let mut lifecycle = LifecycleConfig::new(&config.client_id, &config.model, &config.serial);
        // PROTOCOL.md §8: with push healthy, poll at least every 30 s; a configuration may ask for more often.
        let relaxed = lifecycle.push_relaxed_interval.min(config.push_relaxed_interval);
        lifecycle.push_relaxed_interval = relaxed;
        let connection = match state::load_connection(&config.state_dir)? {
            Some(saved) => Connection::restore(lifecycle, saved, Instant::now()),
            None => Connection::new(lifecycle),
        };
        let panel_config =
            PanelConfig { allow_password_grant: true, push_relaxed_interval: relaxed, ..PanelConfig::default() };
        let client = MfpClient::new(connection, panel_config, endpoints.clone());

        let listener = TcpListener::bind(("127.0.0.1", 0)).await.map_err(MfpError::Listener)?;
        let addr = listener.local_addr().map_err(MfpError::Listener)?;
        let scheme = if config.job_tls.is_some() { "https" } else { "http" };
        let job_url = format!("{scheme}://{addr}{JOB_PATH}");

        let (inputs, rx) = mpsc::channel(64);
        let core = Arc::new(Core {
            printer: Printer::new(config.out_dir()),
            config: config.clone(),
            endpoints,
            policy,
            api,
            inputs,
            snap: Mutex::new(Snapshot {
                hide_user_code: config.mutant == Some(MfpMutant::QrWithoutUserCode),
                ..Snapshot::default()
            }),
            version: watch::channel(0).0,
            log,
            handed_over: Mutex::new(HashMap::new()),
            jobs_cache: Mutex::new(HashMap::new()),
            used_tickets: Mutex::new(std::collections::HashSet::new()),
            job_url,
            shutdown: watch::channel(false).0,
        });
        core.update(|s| s.refresh_from(&client, Instant::now()));
        core.say(format!(
            "powered on: {} {} ({}), region {}, state {}",
            config.model,
            config.serial,
            config.client_id,
            region.id,
            match core.snapshot(Snapshot::state) {
                PanelState::Unregistered => "unregistered",
                PanelState::Disconnected => "disconnected",
                _ => "registered",
            }
        ));

        let sink_log = core.log.clone();
        let runner_driver = Driver::new(transport)
            .request_timeout(config.request_timeout)
            .on_peer_report(move |r| sink_log.say(peer_report(r)));
        let runner = tokio::spawn(run_runner(core.clone(), runner_driver, client, rx));
        let mut tasks = vec![
            tokio::spawn(super::handover::serve(core.clone(), listener)),
            tokio::spawn(run_publisher(core.clone())),
        ];
        // PROTOCOL.md §11: an in-process bus when given, else the region's broker (credentials over HTTPS).
        let source = match (&config.push, &config.broker) {
            (Some(bus), _) => Some(super::push::Source::Bus(bus.clone())),
            (None, super::BrokerPush::Pool(pool)) => Some(super::push::Source::Broker(pool.clone())),
            (None, super::BrokerPush::Auto) if region.amqp.is_some() => {
                let ca_pem = ca.as_deref().and_then(|c| String::from_utf8(c.to_vec()).ok());
                let options = crate::amqp::ConsumerOptions::new(policy, ca_pem, "roger-mfp");
                Some(super::push::Source::Broker(crate::amqp::BrokerPool::new(options, 1)))
            }
            (None, _) => None,
        };
        if let Some(source) = source {
            tasks.push(tokio::spawn(super::push::run(core.clone(), source)));
        }
        Ok(Self { core, runner: Some(runner), tasks })
    }

    /// Powers the printer off: the runner stops at its next step, the other tasks at once. Nothing is revoked
    /// (a power cycle keeps the registration, and user tokens simply lapse).
    pub async fn stop(&mut self) {
        let _ = self.core.inputs.try_send(MfpInput::Stop);
        if let Some(runner) = self.runner.take() {
            let abort = runner.abort_handle();
            if tokio::time::timeout(Duration::from_secs(10), runner).await.is_err() {
                abort.abort();
            }
        }
        let _ = self.core.shutdown.send(true);
        for t in self.tasks.drain(..) {
            let abort = t.abort_handle();
            if tokio::time::timeout(Duration::from_secs(5), t).await.is_err() {
                abort.abort();
            }
        }
        self.core.update(|s| s.stopped = true);
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        if let Some(r) = &self.runner {
            r.abort();
        }
        let _ = self.core.shutdown.send(true);
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// The runner task: waits for `register` when unregistered without auto-registration, then runs
/// [`Driver::run_mfp`] until stopped.
async fn run_runner(
    core: Arc<Core>,
    driver: Driver<MfpTransport>,
    mut client: MfpClient,
    mut rx: mpsc::Receiver<MfpInput>,
) {
    if client.connection.state() == ConnectionState::Unregistered && !core.config.auto_register {
        loop {
            match rx.recv().await {
                Some(MfpInput::Register) => break,
                Some(MfpInput::Stop) | None => return,
                // Nothing else means anything before the printer is registered.
                Some(_) => {}
            }
        }
    }
    core.update(|s| s.running = true);
    let on_event_core = core.clone();
    let result = driver.run_mfp(&mut client, &mut rx, move |c, ev| on_event_core.on_event(c, ev)).await;
    if let Err(e) = result {
        core.say(format!("the printer client stopped: {e}"));
        core.update(|s| s.runner_error = Some(e.to_string()));
    }
    core.update(|s| {
        s.running = false;
        s.stopped = true;
    });
}

/// Keeps the job endpoint published for the current device (PROTOCOL.md §9 `PUT /api/v1/device {"job_url"}`),
/// and re-reads the device configuration when asked (docs/protocol.md §3.10: after `config.changed` and after
/// every push reconnect). Failures back off, doubling up to a minute (PROTOCOL.md §12).
async fn run_publisher(core: Arc<Core>) {
    let mut version = core.version.subscribe();
    let mut shutdown = core.shutdown.subscribe();
    let mut failures: u32 = 0;
    loop {
        let (device, has_token, published, reread) = core.snapshot(|s| {
            (
                s.device_id.clone().filter(|_| s.connected() && s.job_url_unoffered_for != s.device_id),
                s.device_token.is_some(),
                s.published_for.clone(),
                s.reread_device,
            )
        });
        if let (Some(device), true) = (device, has_token) {
            let due = published.as_deref() != Some(device.as_str()) || reread;
            if due {
                core.update(|s| s.reread_device = false);
                let publishing = published.as_deref() != Some(device.as_str());
                let result =
                    if publishing { core.publish_job_url().await.map(|()| true) } else { core.reread_device().await };
                match result {
                    Ok(changed) => {
                        failures = 0;
                        core.update(|s| s.published_for = Some(device.clone()));
                        if changed {
                            core.say(format!("job endpoint published for hand-overs: {}", core.job_url));
                        }
                    }
                    // Only the PUT is the optional extension: a 404 on `GET /api/v1/device` is an error like any.
                    Err(MfpError::Api(e)) if publishing && matches!(e.status(), 404 | 405) => {
                        // An optional extension this server does not offer: noted once, not asked again until a
                        // restart or a reconnect (docs/protocol.md §7). Desktop hand-overs cannot reach this
                        // printer; drive jobs and scans are unaffected.
                        failures = 0;
                        core.api
                            .report(PeerReport::tolerated(api::DEVICE_ENDPOINT, PeerViolation::ExtensionNotOffered));
                        core.update(|s| s.job_url_unoffered_for = Some(device.clone()));
                        core.say(format!(
                            "the server does not offer {} (HTTP {}): desktop hand-overs cannot reach this printer; \
                             not asking again until a restart or a reconnect",
                            api::DEVICE_ENDPOINT,
                            e.status()
                        ));
                        continue;
                    }
                    Err(e) => {
                        failures = failures.saturating_add(1);
                        core.say(format!("could not publish the job endpoint (will retry): {e}"));
                        let wait = Duration::from_millis(500u64.saturating_mul(1 << failures.min(7))).min(MAX_WAIT);
                        tokio::select! {
                            () = tokio::time::sleep(wait) => continue,
                            _ = shutdown.changed() => return,
                        }
                    }
                }
                continue;
            }
        }
        tokio::select! {
            r = version.changed() => if r.is_err() { return },
            _ = shutdown.changed() => return,
        }
    }
}

/// The longest wait between retries of background work.
const MAX_WAIT: Duration = Duration::from_secs(60);
