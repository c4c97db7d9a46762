//! The simulated MFP (issue 4): a printer panel that talks to a Roger server **only over HTTP** (plus the push
//! envelopes it is given), driving roger-proto's lifecycle and panel machines with [`Driver::run_mfp`].
//!
//! What it does, by PROTOCOL.md section:
//!
//! * §2: discovery and RFC 8414 metadata, validated (R-DISC-1, R-DISC-2, R-META-1);
//! * §5: registration by device grant; the QR code drawn in the terminal (Unicode half blocks) and written as a PNG
//!   screenshot into the state directory, the user code as text beside it (R-QR-1);
//! * §6: refresh ahead and rotation (R-TOK-1, R-TOK-2), lost answers retried (R-TOK-3, R-DEV-1), *disconnected*
//!   after a dead refresh token with a reconnect path (R-TOK-4) — all inside roger-proto's machines;
//! * §8: the panel loop: a dynamic session QR renewed before expiry (R-QR-3), push-first polling with a safety poll
//!   (R-POLL-1), step 2 and the PIN login (R-PWD-1: the PIN lives only in memory until its request is answered),
//!   logout with revocation, server-side session end;
//! * §9: listing and releasing queued jobs with an `Idempotency-Key`, downloading straight from the pre-authorised
//!   drive URL, "printing" into an output folder with a JSON-lines record, reporting the result; print from drive
//!   and scans with a resumable upload (step 2); the job endpoint for desktop hand-overs, which accepts a document
//!   only with a ticket the server redeems for this printer (R-DATA-1);
//! * §11: push envelopes as doorbells (R-PUSH-1), from an in-process [`crate::bus::PushBus`] or from the region's
//!   AMQP broker with the credentials of `GET /api/v1/device/push` ([`BrokerPush`]), reconnecting with jittered
//!   back-off and re-reading its state after every reconnect;
//! * §13: the conformance shim, natively ([`shim`]).
//!
//! The connection state is kept in the state directory and written atomically ([`state`]); it never holds a
//! secret a user typed. A new [`Mfp`] over the same state directory (or [`MfpHandle::restart`]) comes back
//! registered, as after a power cycle.
//!
//! ```no_run
//! # async fn demo() -> Result<(), roger_sim::mfp::MfpError> {
//! use std::time::Duration;
//! use roger_sim::mfp::{Mfp, MfpConfig, PanelState};
//!
//! let mut config = MfpConfig::new("http://127.0.0.1:8443", "./printer-state");
//! config.allow_loopback_http = true;
//! let mfp = Mfp::start(config).await?;
//! let shown = mfp.register().await?; // an admin approves `shown.user_code`
//! mfp.wait_for(PanelState::Idle, Duration::from_secs(60)).await.ok();
//! for line in mfp.events() {
//!     println!("{line}");
//! }
//! mfp.stop().await;
//! # Ok(()) }
//! ```

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use roger_proto::api::{DriveFile, Job, ScanProfile};
use roger_proto::discovery::TransportPolicy;
use roger_proto::driver::mfp::MfpInput;
use roger_proto::driver::{DriverError, TransportError};
use roger_proto::secret::{Password, Pin};
use roger_proto::ResponseError;
use tokio::sync::broadcast;

#[cfg(doc)]
use roger_proto::driver::Driver;

/// The job endpoint for desktop hand-overs (PROTOCOL.md §9).
pub mod handover;
pub mod mutant;
mod ops;
/// The simulated print engine and its record (PROTOCOL.md §9 "print", R-DATA-1).
pub mod printer;
/// The push input (PROTOCOL.md §11, R-PUSH-1).
pub mod push;
/// QR drawing: terminal and PNG (PROTOCOL.md §5.2, R-QR-1).
pub mod qr;
mod runtime;
/// The conformance shim (PROTOCOL.md §13).
pub mod shim;
/// The state directory, written atomically (PROTOCOL.md §6 R-TOK-2, R-PWD-1).
pub mod state;

pub use mutant::MfpMutant;
pub use ops::{ReleaseOutcome, ScanRecord};
pub use printer::{PrintRecord, PrintSource};
/// The panel states of the shim protocol (PROTOCOL.md §13): `unregistered`, `registering`, `idle`, `session`,
/// `disconnected`.
pub use roger_proto::shim::PanelState;
pub use runtime::JOB_PATH;

/// Default client id of the simulated printer (PROTOCOL.md §3: `emb-<vendor>`).
pub const DEFAULT_CLIENT_ID: &str = "emb-simvendor";
/// Default printer model (shown to the admin, R-QR-2).
pub const DEFAULT_MODEL: &str = "SimPrinter 5000";
/// Default serial number (PROTOCOL.md §5.1 `device_serial`).
pub const DEFAULT_SERIAL: &str = "SIM-0001";

/// How long [`MfpHandle::register`] waits for the first registration code (PROTOCOL.md §5.1).
const REGISTER_WAIT: Duration = Duration::from_secs(30);
/// How long [`MfpHandle::pin`] waits for the answer: longer than the panel holds a PIN (R-PWD-1, 60 s).
const PIN_WAIT: Duration = Duration::from_secs(75);
/// How long [`MfpHandle::logout`] waits for the panel to go idle.
const LOGOUT_WAIT: Duration = Duration::from_secs(10);

/// Settings of a simulated printer (PROTOCOL.md §2 discovery, §3 client, §5 registration, §9 output).
#[derive(Clone)]
pub struct MfpConfig {
    /// The discovery base URL (PROTOCOL.md §2: regions at `{discovery}/regions`).
    pub discovery: String,
    /// The region to use (PROTOCOL.md §2; default: the first offered).
    pub region: Option<String>,
    /// A PEM CA file to trust besides the system roots (the simulator's generated CA; PROTOCOL.md §13 `ca`).
    pub ca: Option<PathBuf>,
    /// Accept plain `http` on loopback addresses (R-DISC-2 allows it for tests only).
    pub allow_loopback_http: bool,
    /// The client id (`emb-<vendor>`, PROTOCOL.md §3).
    pub client_id: String,
    /// Printer model (PROTOCOL.md §5.1 `device_model`).
    pub model: String,
    /// Serial number (PROTOCOL.md §5.1 `device_serial`).
    pub serial: String,
    /// Where the connection state (PROTOCOL.md §6, R-TOK-2) and the panel screenshot (R-QR-1) live.
    pub state_dir: PathBuf,
    /// Where printed documents and `printed.jsonl` go (PROTOCOL.md §9; default `<state_dir>/printed`).
    pub out_dir: Option<PathBuf>,
    /// An in-process push source (PROTOCOL.md §11); when `None`, [`MfpConfig::broker`] decides.
    pub push: Option<Arc<dyn crate::bus::PushBus>>,
    /// Push from the region's AMQP broker (PROTOCOL.md §11) when [`MfpConfig::push`] is `None`: the printer fetches
    /// `GET /api/v1/device/push` and consumes its queue (default [`BrokerPush::Auto`]).
    pub broker: BrokerPush,
    /// Start a registration (PROTOCOL.md §5) at once when unregistered (otherwise wait for
    /// [`MfpHandle::register`], as the shim's `register` of PROTOCOL.md §13).
    pub auto_register: bool,
    /// Draw every QR code in the terminal (stdout) with its user code (R-QR-1).
    pub terminal_qr: bool,
    /// How long a release of a desktop job waits for the desktop's hand-over (PROTOCOL.md §9) before answering
    /// [`ReleaseOutcome::AwaitingHandover`].
    pub handover_wait: Duration,
    /// Per-request timeout (a hung answer is a transport error, PROTOCOL.md §12).
    pub request_timeout: Duration,
    /// How often a registration or session code is polled while push is healthy (PROTOCOL.md §8: at most 30 s,
    /// the default; longer values are capped at 30 s).
    pub push_relaxed_interval: Duration,
    /// TLS for the job endpoint (PROTOCOL.md §9 hand-over): `https` with this configuration, or plain `http` on
    /// loopback when `None`. How printers obtain a certificate desktops trust is open (docs/protocol.md C11); the
    /// simulator issues one from its own CA ([`crate::server::tls::load_or_create`] on the server's TLS directory).
    pub job_tls: Option<Arc<rustls::ServerConfig>>,
    /// **Test-only**: run a known-broken printer that makes this one mistake (DESIGN.md "Conformance": mutants
    /// prove the suite; see [`mutant`]). `None`, the default, is the printer as specified.
    pub mutant: Option<MfpMutant>,
}

impl fmt::Debug for MfpConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MfpConfig")
            .field("discovery", &self.discovery)
            .field("region", &self.region)
            .field("ca", &self.ca)
            .field("allow_loopback_http", &self.allow_loopback_http)
            .field("client_id", &self.client_id)
            .field("model", &self.model)
            .field("serial", &self.serial)
            .field("state_dir", &self.state_dir)
            .field("out_dir", &self.out_dir)
            .field("push", &self.push.is_some())
            .field("broker", &self.broker)
            .field("auto_register", &self.auto_register)
            .field("terminal_qr", &self.terminal_qr)
            .field("handover_wait", &self.handover_wait)
            .field("request_timeout", &self.request_timeout)
            .field("push_relaxed_interval", &self.push_relaxed_interval)
            .field("job_tls", &self.job_tls.is_some())
            .field("mutant", &self.mutant)
            .finish()
    }
}

/// How a printer uses the region's push broker (PROTOCOL.md §11).
#[derive(Debug, Clone, Default)]
pub enum BrokerPush {
    /// When discovery names a broker for the region: a connection of the printer's own (trusting
    /// [`MfpConfig::ca`] for `amqps`, R-DISC-2 for plain `amqp`).
    #[default]
    Auto,
    /// A channel on this shared pool (a simulated fleet: bounded connections for many printers).
    Pool(Arc<crate::amqp::BrokerPool>),
    /// Poll only.
    Off,
}

impl MfpConfig {
    /// A printer (PROTOCOL.md §3 `emb-<vendor>`) with the defaults: [`DEFAULT_CLIENT_ID`], [`DEFAULT_MODEL`], [`DEFAULT_SERIAL`], TLS only,
    /// push from the region's broker if it has one ([`BrokerPush::Auto`]), no auto-registration, no terminal drawing, a 30 s hand-over wait, a 30 s request timeout and the
    /// 30 s relaxed poll of PROTOCOL.md §8.
    pub fn new(discovery: impl Into<String>, state_dir: impl Into<PathBuf>) -> Self {
        Self {
            discovery: discovery.into(),
            region: None,
            ca: None,
            allow_loopback_http: false,
            client_id: DEFAULT_CLIENT_ID.into(),
            model: DEFAULT_MODEL.into(),
            serial: DEFAULT_SERIAL.into(),
            state_dir: state_dir.into(),
            out_dir: None,
            push: None,
            broker: BrokerPush::Auto,
            auto_register: false,
            terminal_qr: false,
            handover_wait: Duration::from_secs(30),
            request_timeout: Duration::from_secs(30),
            push_relaxed_interval: roger_proto::timing::MAX_PUSH_RELAXED_INTERVAL,
            job_tls: None,
            mutant: None,
        }
    }

    /// The output folder (PROTOCOL.md §9 "print"): [`MfpConfig::out_dir`] or `<state_dir>/printed`.
    pub fn out_dir(&self) -> PathBuf {
        self.out_dir.clone().unwrap_or_else(|| self.state_dir.join("printed"))
    }

    /// R-DISC-2: TLS only, unless plain HTTP on loopback was allowed.
    pub fn transport_policy(&self) -> TransportPolicy {
        TransportPolicy::loopback_plain_allowed(self.allow_loopback_http)
    }
}

/// Why a printer operation failed (PROTOCOL.md §10 errors, §12 failures; §13 maps them to `invalid_state` and
/// `internal`).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MfpError {
    /// The configuration is unusable (client id, CA file).
    #[error("configuration: {0}")]
    Config(String),
    /// Discovery or metadata was refused (R-DISC-1, R-DISC-2, R-META-1), or the printer client stopped.
    #[error(transparent)]
    Driver(#[from] DriverError),
    /// The state directory could not be read or written.
    #[error(transparent)]
    State(#[from] state::StateError),
    /// The job endpoint could not listen.
    #[error("the job endpoint cannot listen: {0}")]
    Listener(std::io::Error),
    /// The transport failed (after retries, for idempotent calls; PROTOCOL.md §12).
    #[error(transparent)]
    Transport(TransportError),
    /// The server gave a definite error.
    #[error(transparent)]
    Api(ResponseError),
    /// A request could not be built (a URL from the server is not a valid URI).
    #[error("could not build a request: {0}")]
    Build(String),
    /// The operation does not fit the panel's state (PROTOCOL.md §13 `invalid_state`).
    #[error("not possible in state {0:?}")]
    InvalidState(PanelState),
    /// The printer is not connected to a tenant (unregistered or disconnected, R-TOK-4).
    #[error("the printer is not connected to a tenant")]
    NotConnected,
    /// No user session is open (PROTOCOL.md §8).
    #[error("no user is signed in")]
    NoSession,
    /// The operation needs step 2 (a PIN; PROTOCOL.md §8).
    #[error("this needs step 2: enter the PIN first")]
    NeedsStep2,
    /// The API refused the user token: the session is over (RFC 6750 §3.1).
    #[error("the session ended")]
    SessionEnded,
    /// The server does not know the thing (or it is someone else's; PROTOCOL.md §9 `404`).
    #[error("not found: {0}")]
    NotFound(String),
    /// The server refused it in the current state (PROTOCOL.md §9 `409`).
    #[error("conflict: {0}")]
    Conflict(String),
    /// The drive refused or broke a transfer (R-DATA-1).
    #[error("drive: {0}")]
    Drive(String),
    /// Something did not happen in time.
    #[error("timed out waiting for {0}")]
    Timeout(&'static str),
}

impl MfpError {
    /// Whether the error is about the panel's state rather than a failure (PROTOCOL.md §13 `invalid_state`).
    pub fn is_state_error(&self) -> bool {
        matches!(self, Self::InvalidState(_) | Self::NotConnected | Self::NoSession | Self::NeedsStep2)
    }
}

/// What the panel shows (PROTOCOL.md §13 `panel`). In `session`, `user` and `scopes` are set; in `registering`
/// and `idle`, the QR payload, its user code and the screenshot.
///
/// `Debug` redacts the QR payload and the user code (they are credentials until the code expires, R-SEC-1).
#[derive(Clone, PartialEq, Eq)]
pub struct PanelView {
    /// The state (PROTOCOL.md §13).
    pub state: PanelState,
    /// The QR payload shown (`verification_uri_complete`, RFC 8628 §3.3.1).
    pub qr: Option<String>,
    /// The user code shown beside it (`XXXX-XXXX`, R-QR-1).
    pub user_code: Option<String>,
    /// The PNG screenshot of the shown QR (PROTOCOL.md §13 `screenshot`).
    pub screenshot: Option<PathBuf>,
    /// The signed-in user's name (PROTOCOL.md §8 `user.username`).
    pub user: Option<String>,
    /// The scopes the printer holds for the user (RFC 6749 §3.3).
    pub scopes: Vec<String>,
    /// The registered device id (PROTOCOL.md §5.4).
    pub device_id: Option<String>,
}

impl fmt::Debug for PanelView {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PanelView")
            .field("state", &self.state)
            .field("qr", &self.qr.as_ref().map(|_| "[redacted]"))
            .field("user_code", &self.user_code.as_ref().map(|_| "[redacted]"))
            .field("screenshot", &self.screenshot)
            .field("user", &self.user)
            .field("scopes", &self.scopes)
            .field("device_id", &self.device_id)
            .finish()
    }
}

impl PanelView {
    /// The shim's `panel` answer (PROTOCOL.md §13).
    pub fn to_answer(&self) -> roger_proto::shim::PanelAnswer {
        roger_proto::shim::PanelAnswer {
            state: self.state,
            qr: self.qr.clone(),
            user_code: self.user_code.clone(),
            screenshot: self.screenshot.as_ref().map(|p| p.display().to_string()),
            user: self.user.clone(),
            scopes: self.scopes.clone(),
        }
    }
}

/// A shown registration code (PROTOCOL.md §5.2, R-QR-1). `Debug` redacts the payload and the code.
#[derive(Clone, PartialEq, Eq)]
pub struct RegistrationView {
    /// The QR payload (`verification_uri_complete`, RFC 8628 §3.3.1); `None` when the server sent none: the panel
    /// then shows the verification URI and the code (docs/protocol.md §7).
    pub qr: Option<String>,
    /// The user code (`XXXX-XXXX`, R-QR-1).
    pub user_code: String,
    /// The PNG screenshot (PROTOCOL.md §13 `register`).
    pub screenshot: Option<PathBuf>,
}

impl fmt::Debug for RegistrationView {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegistrationView")
            .field("qr", &"[redacted]")
            .field("user_code", &"[redacted]")
            .field("screenshot", &self.screenshot)
            .finish()
    }
}

/// The simulated printer's entry point (issue 4; PROTOCOL.md §5–§9, §11).
#[derive(Debug, Clone, Copy)]
pub struct Mfp;

impl Mfp {
    /// Powers a printer on (PROTOCOL.md §2 discovery and metadata, then the machines): restored from
    /// `config.state_dir` if it was registered before, else unregistered (registering at once with
    /// [`MfpConfig::auto_register`]).
    pub async fn start(config: MfpConfig) -> Result<MfpHandle, MfpError> {
        let log = Arc::new(runtime::EventLog::new());
        if let Some(m) = config.mutant {
            // Loud on purpose: a mutant must never pass for the real printer.
            eprintln!("roger-sim mfp: {}", m.warning());
            log.say(m.warning());
        }
        let inst = runtime::Instance::start(&config, log.clone()).await?;
        Ok(MfpHandle { config, log, inst })
    }
}

/// The control API of a running printer (for the demo, the tests and the shim of PROTOCOL.md §13).
pub struct MfpHandle {
    config: MfpConfig,
    log: Arc<runtime::EventLog>,
    inst: runtime::Instance,
}

impl fmt::Debug for MfpHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MfpHandle").field("config", &self.config).field("panel", &self.panel()).finish()
    }
}

impl MfpHandle {
    fn core(&self) -> &Arc<runtime::Core> {
        &self.inst.core
    }

    /// The settings (see [`MfpConfig`]; PROTOCOL.md §2–§3).
    pub fn config(&self) -> &MfpConfig {
        &self.config
    }

    /// What the panel shows now (PROTOCOL.md §13 `panel`).
    pub fn panel(&self) -> PanelView {
        self.core().snapshot(runtime::Snapshot::view)
    }

    /// The registered device id, if any (PROTOCOL.md §5.4).
    pub fn device_id(&self) -> Option<String> {
        self.core().snapshot(|s| s.device_id.clone())
    }

    /// The job endpoint's URL (PROTOCOL.md §9 `job_url`; loopback HTTP).
    pub fn job_url(&self) -> String {
        self.core().job_url.clone()
    }

    /// Whether the job endpoint is published for the current device (PROTOCOL.md §9).
    pub fn job_url_published(&self) -> bool {
        self.core().snapshot(|s| s.device_id.is_some() && s.published_for == s.device_id)
    }

    /// Waits until the panel is in `state` (PROTOCOL.md §13 `wait`); `Err` with the panel as it is on timeout.
    pub async fn wait_for(&self, state: PanelState, timeout: Duration) -> Result<PanelView, PanelView> {
        let reached = self.core().wait_until(timeout, |s| s.state() == state).await;
        let view = self.panel();
        if reached {
            Ok(view)
        } else {
            Err(view)
        }
    }

    /// Waits until `pred` holds for the panel, or `timeout` passes; returns the panel either way and whether it
    /// held (a generalised PROTOCOL.md §13 `wait`).
    pub async fn wait_until(&self, timeout: Duration, pred: impl Fn(&PanelView) -> bool) -> (bool, PanelView) {
        let ok = self.core().wait_until(timeout, |s| pred(&s.view())).await;
        (ok, self.panel())
    }

    /// Waits until the job endpoint is published for the current device (PROTOCOL.md §9 `PUT /api/v1/device`).
    pub async fn wait_job_url_published(&self, timeout: Duration) -> bool {
        self.core().wait_until(timeout, |s| s.device_id.is_some() && s.published_for == s.device_id).await
    }

    /// Starts a registration (PROTOCOL.md §5; from `unregistered`, or a reconnect from `disconnected`, which is a
    /// new device, R-TOK-4) and returns the code once shown; in `registering` returns the current code. Other
    /// states: [`MfpError::InvalidState`] (PROTOCOL.md §13).
    pub async fn register(&self) -> Result<RegistrationView, MfpError> {
        let core = self.core();
        let state = core.snapshot(runtime::Snapshot::state);
        match state {
            PanelState::Unregistered | PanelState::Disconnected => {
                core.update(|s| s.registration = None);
                core.input(MfpInput::Register).await;
            }
            PanelState::Registering => {}
            other => return Err(MfpError::InvalidState(other)),
        }
        let shown =
            core.wait_until(REGISTER_WAIT, |s| s.state() == PanelState::Registering && s.registration.is_some()).await;
        if !shown {
            return Err(MfpError::Timeout("a registration code"));
        }
        let view = self.panel();
        match (view.qr, view.user_code) {
            (qr, Some(user_code)) => Ok(RegistrationView { qr, user_code, screenshot: view.screenshot }),
            // Only the test-only mutant `qr-without-user-code` shows a QR without its user code (R-QR-1).
            (Some(qr), None) if self.config.mutant == Some(MfpMutant::QrWithoutUserCode) => {
                Ok(RegistrationView { qr: Some(qr), user_code: String::new(), screenshot: view.screenshot })
            }
            _ => Err(MfpError::Timeout("a registration code")),
        }
    }

    /// Types a user name and PIN (PROTOCOL.md §8): step 2 in a session, the PIN login when idle. Returns whether
    /// it was accepted; `false` without asking when the printer is not connected (PROTOCOL.md §13). The PIN is
    /// handed to the panel machine, which wipes it after its request (R-PWD-1); it is never logged or stored.
    pub async fn pin(&self, username: &str, pin: Pin) -> Result<bool, MfpError> {
        let core = self.core();
        let state = core.snapshot(runtime::Snapshot::state);
        if !matches!(state, PanelState::Idle | PanelState::Session) {
            return Ok(false);
        }
        let seq = core.update(|s| {
            s.pin_pending = true;
            s.pin_seq
        });
        let secret = Password::new(pin.secret());
        drop(pin);
        core.input(MfpInput::Pin { username: Some(username.to_owned()), secret }).await;
        if !core.wait_until(PIN_WAIT, |s| s.pin_seq > seq || s.stopped).await {
            core.update(|s| s.pin_pending = false);
            return Err(MfpError::Timeout("the PIN check"));
        }
        Ok(core.snapshot(|s| s.pin_seq > seq && s.pin_accepted))
    }

    /// The signed-in user's queued jobs (PROTOCOL.md §9 `GET /api/v1/jobs?state=queued`).
    pub async fn jobs(&self) -> Result<Vec<Job>, MfpError> {
        self.core().jobs().await
    }

    /// Releases a job and prints it (PROTOCOL.md §9; see [`ReleaseOutcome`]).
    pub async fn release(&self, job_id: &str) -> Result<ReleaseOutcome, MfpError> {
        self.core().release(job_id).await
    }

    /// The drive's print folder (PROTOCOL.md §9, step 2).
    pub async fn drive_files(&self) -> Result<Vec<DriveFile>, MfpError> {
        self.core().drive_files().await
    }

    /// Submits a drive file as a job (PROTOCOL.md §9 `POST /api/v1/jobs {"drive_file_id"}`, step 2).
    pub async fn submit_drive_file(&self, file_id: &str) -> Result<Job, MfpError> {
        self.core().submit_drive_file(file_id).await
    }

    /// The scan profiles (PROTOCOL.md §9, step 2).
    pub async fn scan_profiles(&self) -> Result<Vec<ScanProfile>, MfpError> {
        self.core().scan_profiles().await
    }

    /// Scans with a profile and uploads to the drive's "Scan" folder (PROTOCOL.md §9, step 2).
    pub async fn scan(&self, profile_id: &str) -> Result<ScanRecord, MfpError> {
        self.core().scan(profile_id).await
    }

    /// Logs the user out (PROTOCOL.md §8 "End": user tokens revoked, a fresh QR); a no-op when no one is signed in.
    pub async fn logout(&self) -> Result<(), MfpError> {
        let core = self.core();
        if core.snapshot(|s| s.state() != PanelState::Session) {
            return Ok(());
        }
        core.input(MfpInput::Logout).await;
        if core.wait_until(LOGOUT_WAIT, |s| s.state() != PanelState::Session).await {
            Ok(())
        } else {
            Err(MfpError::Timeout("the logout"))
        }
    }

    /// Feeds an input to the machines, e.g. a doorbell from a push source of the caller's own (PROTOCOL.md §11).
    pub async fn input(&self, input: MfpInput) {
        self.core().input(input).await;
    }

    /// Power-cycles the printer (PROTOCOL.md §13 `restart`): stops everything and starts again from the state
    /// directory (the registration survives, R-TOK-2; the user session does not).
    pub async fn restart(&mut self) -> Result<(), MfpError> {
        self.inst.stop().await;
        self.log.say("restarting (power cycle)");
        self.inst = runtime::Instance::start(&self.config, self.log.clone()).await?;
        Ok(())
    }

    /// Powers the printer off (PROTOCOL.md §13 `stop`); nothing is revoked, as after pulling the plug.
    pub async fn stop(mut self) {
        self.inst.stop().await;
        self.log.say("powered off");
    }

    /// The narration so far: one human-readable line per event, without credentials (R-SEC-1).
    pub fn events(&self) -> Vec<String> {
        self.log.lines()
    }

    /// A live stream of narration lines (credential-free, R-SEC-1).
    pub fn subscribe_events(&self) -> broadcast::Receiver<String> {
        self.log.subscribe()
    }

    /// Everything printed so far (the output folder's `printed.jsonl`; PROTOCOL.md §9).
    pub fn printed(&self) -> Vec<PrintRecord> {
        self.core().printer.records()
    }

    /// The output folder (PROTOCOL.md §9 "print").
    pub fn out_dir(&self) -> &Path {
        self.core().printer.out_dir()
    }

    /// The state directory (PROTOCOL.md §13 `state_dir`).
    pub fn state_dir(&self) -> &Path {
        &self.config.state_dir
    }
}

/// Arguments of `roger-sim mfp` (issue 4; the shim mode is PROTOCOL.md §13).
#[derive(Debug, Clone, clap::Args)]
pub struct MfpArgs {
    /// The discovery base URL (PROTOCOL.md §2: regions at `{discovery}/regions`). Required unless `--shim`.
    #[arg(long)]
    pub discovery: Option<String>,
    /// Region id (PROTOCOL.md §2; default: the first offered).
    #[arg(long)]
    pub region: Option<String>,
    /// Extra CA certificate (PEM) to trust, e.g. the simulator's generated CA (R-DISC-2: TLS verified).
    #[arg(long)]
    pub ca: Option<PathBuf>,
    /// The printer's client id (`emb-<vendor>`, PROTOCOL.md §3).
    #[arg(long, default_value = DEFAULT_CLIENT_ID)]
    pub client_id: String,
    /// Where the printer keeps its connection state (R-TOK-2) and panel screenshot (R-QR-1).
    #[arg(long, default_value = "mfp-state")]
    pub state_dir: PathBuf,
    /// Where printed documents and `printed.jsonl` go (PROTOCOL.md §9; default `<state-dir>/printed`).
    #[arg(long)]
    pub out_dir: Option<PathBuf>,
    /// Speak the conformance shim protocol (PROTOCOL.md §13) on stdin/stdout instead; logs go to stderr.
    #[arg(long)]
    pub shim: bool,
    /// Printer model, shown to the admin who approves the registration (R-QR-2).
    #[arg(long, default_value = DEFAULT_MODEL)]
    pub model: String,
    /// Printer serial number (R-QR-2).
    #[arg(long, default_value = DEFAULT_SERIAL)]
    pub serial: String,
    /// Accept plain http on loopback addresses (R-DISC-2 allows it only for tests).
    #[arg(long)]
    pub allow_loopback_http: bool,
    /// Serve the job endpoint over TLS with a certificate from the CA in this directory (the simulated server's
    /// `--tls-dir`, whose CA the desktop trusts); plain HTTP on loopback without it (docs/protocol.md C11).
    #[arg(long)]
    pub job_tls_dir: Option<PathBuf>,
    /// TEST ONLY: run a known-broken printer that makes this one mistake, to prove the conformance suite catches
    /// it (also with `--shim`; a loud warning goes to stderr). Never use it for anything else.
    #[arg(long, value_name = "NAME")]
    pub mutant: Option<MfpMutant>,
}

/// `roger-sim mfp`: registers (the QR in the terminal and as a PNG, the user code beside it), then runs the panel
/// loop until Ctrl-C or SIGTERM, narrating every event on stderr. With `--shim`, speaks PROTOCOL.md §13 on
/// stdin/stdout. Exit code 0 on a clean stop, 1 on a failure, 2 on bad arguments.
pub async fn run(args: MfpArgs) -> ExitCode {
    if args.shim {
        let options = shim::ShimOptions {
            push: None,
            out_dir: args.out_dir.clone(),
            model: args.model.clone(),
            serial: args.serial.clone(),
            mutant: args.mutant,
        };
        if let Some(m) = args.mutant {
            eprintln!("roger-sim mfp: {}", m.warning());
        }
        return shim::run_stdio(options).await;
    }
    let Some(discovery) = args.discovery.clone() else {
        eprintln!("roger-sim mfp: --discovery is required (or --shim)");
        return ExitCode::from(2);
    };
    let mut config = MfpConfig::new(discovery, args.state_dir.clone());
    config.region = args.region.clone();
    config.ca = args.ca.clone();
    config.allow_loopback_http = args.allow_loopback_http;
    config.client_id = args.client_id.clone();
    config.model = args.model.clone();
    config.serial = args.serial.clone();
    config.out_dir = args.out_dir.clone();
    config.auto_register = true;
    config.terminal_qr = true;
    config.mutant = args.mutant;
    if let Some(dir) = &args.job_tls_dir {
        match crate::server::tls::load_or_create(dir, &[]) {
            Ok(tls) => config.job_tls = Some(tls.config),
            Err(e) => {
                eprintln!("roger-sim mfp: job endpoint certificate: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    use tokio::signal::unix::{signal, SignalKind};
    let (mut term, mut int) = match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
        (Ok(t), Ok(i)) => (t, i),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("roger-sim mfp: cannot watch SIGTERM and SIGINT: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mfp = match Mfp::start(config).await {
        Ok(m) => m,
        Err(e) => {
            eprintln!("roger-sim mfp: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut events = mfp.subscribe_events();
    for line in mfp.events() {
        eprintln!("mfp: {line}");
    }
    eprintln!("mfp: job endpoint {}; output folder {}", mfp.job_url(), mfp.out_dir().display());
    loop {
        tokio::select! {
            line = events.recv() => match line {
                Ok(line) => eprintln!("mfp: {line}"),
                Err(broadcast::error::RecvError::Lagged(n)) => eprintln!("mfp: ({n} lines skipped)"),
                Err(broadcast::error::RecvError::Closed) => break,
            },
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    mfp.stop().await;
    eprintln!("mfp: stopped");
    ExitCode::SUCCESS
}
