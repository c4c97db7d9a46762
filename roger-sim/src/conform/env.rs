//! The world of one client-mode case: its own in-process server (own port, virtual clock, per-case settings and
//! tenant fixture with fresh secrets), the judge's proxy in front of it, a fresh shim process, and the kit's phone
//! (PROTOCOL.md §13: "for each case the runner starts a server instance, our phone and a fresh shim process").
//!
//! A case drives the shim through the helpers here (each answer becomes evidence labelled "self-reported"), moves
//! the server's clock, sets its faults, approves codes with the phone, and judges from what the proxy recorded.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use roger_proto::api::CodeKind;
use roger_proto::secret::{Password, Pin};
use roger_proto::server::settings::TenantSettings;
use roger_proto::shim::{PanelState, ShimAnswer, ShimRequest};
use serde_json::{Map, Value};

use super::broker::BrokerCut;
use super::case::{CaseError, Evidence, EvidenceSource};
use super::proxy::{Exchange, JudgeProxy, ProxyConfig, Recorder, Rewrites};
use super::shim_driver::{ShimDriver, ShimDriverError, Turn};
use super::vault::Vault;
use crate::phone::{ClientConfig, Phone};
use crate::server::faults::FaultPlan;
use crate::server::tls::ServerTls;
use crate::server::{start, RunningServer, ServerConfig};

/// The client id the kit gives the MFP in `start` unless told otherwise (PROTOCOL.md §3 `emb-<vendor>`).
pub const DEFAULT_CLIENT_ID: &str = "emb-conform";
/// The kit fixture's tenant.
pub const TENANT: &str = "conform";
/// How long the kit waits for a state the MFP should reach promptly (a registration after approval, a session).
pub const STATE_WAIT: Duration = Duration::from_secs(20);
/// How long after reporting `idle` a panel may take to draw its first session QR (as a person at the printer
/// would wait a moment before concluding there is none).
pub const SHOW_GRACE: Duration = Duration::from_secs(5);

/// The TLS material of one run: the kit CA the shim is told to trust, a leaf for loopback from it, a leaf from it
/// for another host name, and a leaf from a rogue CA the shim does not trust (R-DISC-2).
#[derive(Clone)]
pub struct KitTls {
    /// The kit CA (PEM), given to the shim as `ca`.
    pub ca_path: PathBuf,
    /// Leaf for `127.0.0.1` and `localhost`, from the kit CA.
    pub good: Arc<rustls::ServerConfig>,
    /// Leaf for `127.0.0.1` and `localhost`, from a CA the shim was not told about.
    pub rogue: Arc<rustls::ServerConfig>,
    /// Leaf from the kit CA for another host name only.
    pub wrong_host: Arc<rustls::ServerConfig>,
}

impl std::fmt::Debug for KitTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KitTls").field("ca_path", &self.ca_path).finish()
    }
}

/// The host name the `wrong_host` certificate is for.
pub const OTHER_HOST: &str = "conform-other-host.invalid";

impl KitTls {
    /// Creates the CAs and leaves under `dir` (`ca/` and `rogue-ca/`).
    pub fn create(dir: &Path) -> Result<Self, String> {
        let loopback = vec!["127.0.0.1".to_owned(), "localhost".to_owned()];
        let good: ServerTls =
            crate::server::tls::load_or_create(&dir.join("ca"), &loopback).map_err(|e| e.to_string())?;
        let wrong_host =
            crate::server::tls::load_or_create(&dir.join("ca"), &[OTHER_HOST.to_owned()]).map_err(|e| e.to_string())?;
        let rogue = crate::server::tls::load_or_create(&dir.join("rogue-ca"), &loopback).map_err(|e| e.to_string())?;
        Ok(Self { ca_path: good.ca_path, good: good.config, rogue: rogue.config, wrong_host: wrong_host.config })
    }
}

/// What every case of one run shares.
#[derive(Debug, Clone)]
pub struct KitContext {
    /// The shim command (`sh -c`).
    pub shim: String,
    /// The client id given in `start`.
    pub client_id: String,
    /// Whether the kit's front door speaks plain HTTP on loopback instead of TLS (for shims that allow it).
    pub plain_http: bool,
    /// Where case directories go.
    pub work_dir: PathBuf,
    /// TLS material.
    pub tls: KitTls,
    /// The broker URL for the push cases (`--amqp` or `ROGER_AMQP_URL`; `None`: they are skipped, R-PUSH-1).
    pub amqp: Option<String>,
}

/// How the kit's front door presents itself to the MFP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// TLS with the kit CA (or plain HTTP on loopback with `--plain-http`).
    Kit,
    /// TLS with a certificate from a CA the shim was not told to trust.
    RogueCa,
    /// TLS with a kit-CA certificate for another host name.
    WrongHost,
    /// Plain HTTP on a non-loopback address (R-DISC-2).
    PlainNonLoopback,
}

/// Where the case's server pushes (PROTOCOL.md §11).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PushSetup {
    /// The in-process bus: the region names no broker, the MFP polls only (every case but the push cases).
    #[default]
    InProcess,
    /// The kit's broker under a per-case name prefix. The region names the kit's relay in front of it (a
    /// [`BrokerCut`]: `amqps` with a kit-CA certificate, plain `amqp` with `--plain-http`), where the case can
    /// break the MFP's broker connection while the server keeps publishing; the MFP consumes its device queue.
    Broker,
}

impl PushSetup {
    /// Whether the case needs the kit's broker.
    pub fn needs_broker(self) -> bool {
        self != Self::InProcess
    }
}

/// What a case may adjust before its world starts.
#[derive(Debug, Clone)]
pub struct ClientSetup {
    /// The tenant settings of the case's server (PROTOCOL.md §3: lifetimes, intervals, limits).
    pub settings: TenantSettings,
    /// The front door.
    pub transport: Transport,
    /// Answer rewrites in force from the start.
    pub rewrites: Rewrites,
    /// Where the server pushes.
    pub push: PushSetup,
}

impl Default for ClientSetup {
    /// The kit's defaults: a 1-second polling interval (PROTOCOL.md §12's floor) so flows take seconds, and a high
    /// approval rate limit so the kit's own look-ups never hit it.
    fn default() -> Self {
        Self {
            settings: TenantSettings { interval_secs: 1, approvals_per_minute: 10_000, ..TenantSettings::default() },
            transport: Transport::Kit,
            rewrites: Rewrites::default(),
            push: PushSetup::InProcess,
        }
    }
}

/// A user of the case's tenant, with fresh secrets.
#[derive(Debug, Clone)]
pub struct KitUser {
    /// User name.
    pub name: String,
    /// Password.
    pub password: String,
    /// PIN (8 digits, so a scan for it has no false positives).
    pub pin: String,
}

/// The case's tenant: an admin, alice (with one queued drive job) and bob.
#[derive(Debug, Clone)]
pub struct Tenant {
    /// The admin.
    pub admin: KitUser,
    /// A user with a queued job.
    pub alice: KitUser,
    /// Another user.
    pub bob: KitUser,
    /// The file name of alice's queued job.
    pub job_file: String,
    /// A marker inside the job's document: it must never reach the API listener (R-DATA-1).
    pub document_marker: String,
}

impl Tenant {
    fn generate(rng: &mut impl Rng) -> Self {
        let mut pin = || format!("{:08}", rng.gen_range(10_000_000u32..100_000_000));
        let (a, b, c) = (pin(), pin(), pin());
        let mut word = || (0..16).map(|_| char::from(b'a' + rng.gen_range(0..26u8))).collect::<String>();
        let user = |name: &str, password: String, pin: String| KitUser { name: name.to_owned(), password, pin };
        Self {
            admin: user("admin", word(), a),
            alice: user("alice", word(), b),
            bob: user("bob", word(), c),
            job_file: "conformance-page.pdf".to_owned(),
            document_marker: format!("ROGER-CONFORM-DOCUMENT-{}", word()),
        }
    }

    /// The fixture TOML (roger-sim/fixtures/default-tenant.toml format).
    fn fixture(&self) -> String {
        format!(
            r#"[[tenants]]
id = "{TENANT}"
name = "Conformance tenant"

[[tenants.scan_profiles]]
id = "pdf-300"
name = "PDF, 300 dpi"
format = "pdf"
dpi = 300
color = "monochrome"
duplex = false

[[tenants.users]]
username = "{admin}"
display_name = "Conformance Admin"
email = "admin@conform.example"
password = "{admin_pw}"
admin = true

[[tenants.users]]
username = "{alice}"
display_name = "Alice Conform"
email = "alice@conform.example"
pin = "{alice_pin}"
password = "{alice_pw}"

[[tenants.users]]
username = "{bob}"
display_name = "Bob Conform"
email = "bob@conform.example"
pin = "{bob_pin}"
password = "{bob_pw}"

[[tenants.drive_files]]
user = "{alice}"
folder = "Print"
name = "{file}"
content = '''
%PDF-1.4
% {marker}
%%EOF
'''

[[tenants.jobs]]
user = "{alice}"
file = "{file}"
pages = 1
"#,
            admin = self.admin.name,
            admin_pw = self.admin.password,
            alice = self.alice.name,
            alice_pin = self.alice.pin,
            alice_pw = self.alice.password,
            bob = self.bob.name,
            bob_pin = self.bob.pin,
            bob_pw = self.bob.password,
            file = self.job_file,
            marker = self.document_marker,
        )
    }
}

/// Who approves with the kit's phone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Who {
    /// The tenant admin (registrations).
    Admin,
    /// Alice.
    Alice,
    /// Bob.
    Bob,
}

/// A code the panel shows (PROTOCOL.md §13 `register` / `panel`), as reported by the shim.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Shown {
    /// The QR payload.
    pub qr: Option<String>,
    /// The user code as shown.
    pub user_code: Option<String>,
    /// A PNG screenshot path.
    pub screenshot: Option<String>,
}

/// The panel as the shim reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Panel {
    /// The state.
    pub state: PanelState,
    /// The code shown, if any.
    pub shown: Shown,
    /// The signed-in user.
    pub user: Option<String>,
    /// The user's scopes.
    pub scopes: Vec<String>,
}

fn opt_str(fields: &Map<String, Value>, k: &str) -> Option<String> {
    fields.get(k).and_then(Value::as_str).filter(|s| !s.is_empty()).map(str::to_owned)
}

impl Shown {
    fn from_fields(f: &Map<String, Value>) -> Self {
        Self { qr: opt_str(f, "qr"), user_code: opt_str(f, "user_code"), screenshot: opt_str(f, "screenshot") }
    }
}

impl Panel {
    fn from_fields(f: &Map<String, Value>) -> Result<Self, CaseError> {
        let state = f
            .get("state")
            .cloned()
            .and_then(|v| serde_json::from_value::<PanelState>(v).ok())
            .ok_or_else(|| CaseError::Shim("a panel answer without a valid `state`".into()))?;
        let scopes = f
            .get("scopes")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).map(str::to_owned).collect())
            .unwrap_or_default();
        Ok(Self { state, shown: Shown::from_fields(f), user: opt_str(f, "user"), scopes })
    }
}

fn state_name(s: PanelState) -> &'static str {
    match s {
        PanelState::Unregistered => "unregistered",
        PanelState::Registering => "registering",
        PanelState::Idle => "idle",
        PanelState::Session => "session",
        PanelState::Disconnected => "disconnected",
    }
}

/// The world of one client-mode case.
pub struct ClientEnv {
    kit: Arc<KitContext>,
    /// The case's ID.
    pub case_id: &'static str,
    /// The case's seed (server RNG, fault plans, fixture secrets).
    pub seed: u64,
    /// The case directory.
    pub dir: PathBuf,
    /// The shim's `state_dir`.
    pub state_dir: PathBuf,
    /// The tenant and its secrets.
    pub tenant: Tenant,
    /// The settings the server runs with.
    pub settings: TenantSettings,
    /// The front door.
    pub transport: Transport,
    /// What the shim answered to `start`.
    pub capabilities: Vec<String>,
    server: RunningServer,
    broker_cut: Option<BrokerCut>,
    proxy: JudgeProxy,
    shim: Option<ShimDriver>,
    phones: HashMap<Who, Phone>,
    evidence: Vec<Evidence>,
    /// The exchanges already in the evidence (by sequence number), so none is listed twice.
    noted: HashSet<u64>,
    t0: Instant,
    fault_seq: u64,
}

impl std::fmt::Debug for ClientEnv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientEnv").field("case_id", &self.case_id).field("dir", &self.dir).finish()
    }
}

/// What is left of a case's world after it ends: its evidence and the shim's transcript and log.
#[derive(Debug, Clone, Default)]
pub struct Leftovers {
    /// Evidence, redacted.
    pub evidence: Vec<Evidence>,
    /// The shim's stderr, redacted, last lines only.
    pub stderr_tail: String,
    /// The requests sent to the shim.
    pub turns: Vec<Turn>,
}

/// The first non-loopback IPv4 address of this machine, if any (for [`Transport::PlainNonLoopback`]).
pub fn non_loopback_ip() -> Option<IpAddr> {
    // Connecting a UDP socket sends nothing; it only asks the kernel which source address routes outwards.
    let s = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    s.connect("192.0.2.1:9").or_else(|_| s.connect("198.51.100.1:9")).ok()?;
    let ip = s.local_addr().ok()?.ip();
    (!ip.is_loopback() && !ip.is_unspecified()).then_some(ip)
}

impl ClientEnv {
    /// Starts the case's server and proxy (the shim starts with [`ClientEnv::start_shim`]).
    pub async fn create(
        kit: Arc<KitContext>,
        case_id: &'static str,
        seed: u64,
        setup: ClientSetup,
    ) -> Result<Self, CaseError> {
        let dir = kit.work_dir.join(case_id.replace(['/', '*', '?', ' '], "_"));
        std::fs::create_dir_all(&dir).map_err(|e| CaseError::Kit(format!("case directory: {e}")))?;
        let state_dir = dir.join("state");
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let tenant = Tenant::generate(&mut rng);
        let fixture = dir.join("tenant.toml");
        std::fs::write(&fixture, tenant.fixture()).map_err(|e| CaseError::Kit(format!("fixture: {e}")))?;
        let (amqp, broker_cut) = match (setup.push, kit.amqp.as_deref()) {
            (PushSetup::InProcess, _) => (None, None),
            (_, None) => return Err(CaseError::Kit(super::broker::NEEDS_BROKER.into())),
            (PushSetup::Broker, Some(url)) => {
                let kit_err = |e: super::broker::KitBrokerError| CaseError::Kit(e.to_string());
                let tls = (!kit.plain_http).then(|| kit.tls.good.clone());
                let upstream = super::broker::upstream(url).await.map_err(kit_err)?;
                let cut = BrokerCut::start(upstream, tls.clone()).await.map_err(kit_err)?;
                let mut config = super::broker::case_config(url);
                config.client_url = Some(super::broker::via(url, cut.addr, tls.is_some()).map_err(kit_err)?);
                (Some(config), Some(cut))
            }
        };
        let server = start(ServerConfig {
            plain_http: true,
            seed: Some(seed),
            fixture: Some(fixture),
            settings: Some(setup.settings),
            amqp,
            ..ServerConfig::default()
        })
        .await
        .map_err(|e| CaseError::Kit(format!("the case's server did not start: {e}")))?;
        let (ip, tls) = match setup.transport {
            Transport::Kit if kit.plain_http => (IpAddr::from([127, 0, 0, 1]), None),
            Transport::Kit => (IpAddr::from([127, 0, 0, 1]), Some(kit.tls.good.clone())),
            Transport::RogueCa => (IpAddr::from([127, 0, 0, 1]), Some(kit.tls.rogue.clone())),
            Transport::WrongHost => (IpAddr::from([127, 0, 0, 1]), Some(kit.tls.wrong_host.clone())),
            Transport::PlainNonLoopback => match non_loopback_ip() {
                Some(ip) => (ip, None),
                None => {
                    stop_server(server).await;
                    return Err(CaseError::Kit("no non-loopback address".into()));
                }
            },
        };
        let proxy = JudgeProxy::start(ProxyConfig {
            upstreams: vec![("api", server.info.api.clone()), ("drive", server.info.drive.clone())],
            ip,
            tls,
            host: None,
        })
        .await;
        let proxy = match proxy {
            Ok(p) => p,
            Err(e) => {
                stop_server(server).await;
                return Err(CaseError::Kit(e.to_string()));
            }
        };
        proxy.recorder.set_rewrites(setup.rewrites);
        for u in [&tenant.admin, &tenant.alice, &tenant.bob] {
            proxy.recorder.add_secret(&u.pin, "PIN", true);
            proxy.recorder.add_secret(&u.password, "password", true);
        }
        Ok(Self {
            kit,
            case_id,
            seed,
            dir,
            state_dir,
            tenant,
            settings: setup.settings,
            transport: setup.transport,
            capabilities: Vec::new(),
            server,
            broker_cut,
            proxy,
            shim: None,
            phones: HashMap::new(),
            evidence: Vec::new(),
            noted: HashSet::new(),
            t0: Instant::now(),
            fault_seq: 0,
        })
    }

    /// The kit context.
    pub fn kit(&self) -> &KitContext {
        &self.kit
    }

    /// The case's server.
    pub fn server(&self) -> &RunningServer {
        &self.server
    }

    /// The API origin the MFP sees (the proxy's).
    pub fn api(&self) -> String {
        self.proxy.origin("api").unwrap_or_default().to_owned()
    }

    /// What the proxy recorded.
    pub fn recorder(&self) -> &Arc<Recorder> {
        &self.proxy.recorder
    }

    /// Every exchange so far.
    pub fn exchanges(&self) -> Vec<Exchange> {
        self.proxy.recorder.exchanges()
    }

    /// The case's secrets so far.
    pub fn vault(&self) -> Vault {
        self.proxy.recorder.vault()
    }

    /// When the case started.
    pub fn t0(&self) -> Instant {
        self.t0
    }

    /// Milliseconds since `at`'s case start.
    pub fn ms(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.t0).as_millis() as u64
    }

    /// Adds a line of evidence (redacted).
    pub fn note(&mut self, source: EvidenceSource, text: impl AsRef<str>) {
        let text = self.vault().redact(text.as_ref());
        let at_ms = self.ms(Instant::now());
        self.evidence.push(Evidence { source, at_ms, text });
    }

    /// Adds exchanges as wire evidence (at most `max`, the last ones if there are more), leaving out those already
    /// in the evidence.
    pub fn note_exchanges<'a>(&mut self, list: impl IntoIterator<Item = &'a Exchange>, max: usize) {
        let vault = self.vault();
        let lines = wire_evidence(list, max, &mut self.noted, self.t0, &vault);
        self.evidence.extend(lines);
    }

    /// Spawns the shim and sends `start` (PROTOCOL.md §13); the answer's capabilities are kept.
    pub async fn start_shim(&mut self) -> Result<(), CaseError> {
        let started = self.start_shim_answer().await?;
        if let Some(e) = started.error() {
            return Err(CaseError::Peer(format!("the shim refused `start`: {e}")));
        }
        Ok(())
    }

    /// Spawns the shim and sends `start`, returning the answer whatever it is (cases where refusing is right).
    pub async fn start_shim_answer(&mut self) -> Result<ShimAnswer, CaseError> {
        if self.shim.is_some() {
            return Err(CaseError::Kit("the shim was started twice".into()));
        }
        let env = [("ROGER_CONFORM_CASE", self.case_id.to_owned()), ("ROGER_CONFORM_SEED", self.seed.to_string())];
        let shim = ShimDriver::spawn(&self.kit.shim, &env).map_err(|e| CaseError::Kit(e.to_string()))?;
        self.shim = Some(shim);
        let discovery = self.api();
        let ca = match self.transport {
            Transport::Kit if self.kit.plain_http => None,
            Transport::PlainNonLoopback => None,
            _ => Some(self.kit.tls.ca_path.display().to_string()),
        };
        let req = ShimRequest::Start {
            discovery,
            ca,
            client_id: self.kit.client_id.clone(),
            state_dir: self.state_dir.display().to_string(),
        };
        let answer = self.ask(&req).await?;
        if answer.is_ok() {
            self.capabilities = answer
                .fields()
                .get("capabilities")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(Value::as_str).map(str::to_owned).collect())
                .unwrap_or_default();
        }
        Ok(answer)
    }

    /// Whether the shim declared `cap` in `start`.
    pub fn has(&self, cap: &str) -> bool {
        self.capabilities.iter().any(|c| c == cap)
    }

    /// Sends one request; the answer (or its error) becomes "self-reported" evidence. `unsupported` is
    /// [`CaseError::Unsupported`]; a protocol break is [`CaseError::Shim`].
    pub async fn ask(&mut self, req: &ShimRequest) -> Result<ShimAnswer, CaseError> {
        let shim = self.shim.as_mut().ok_or_else(|| CaseError::Kit("the shim is not running".into()))?;
        let result = shim.ask(req).await;
        let op = req.op();
        match result {
            Ok(a) => {
                let summary = match a.error() {
                    None => format!("{op} → ok {}", summarize(a.fields())),
                    Some(e) => format!("{op} → error {e} {}", summarize(a.fields())),
                };
                self.note(EvidenceSource::Shim, summary.trim_end());
                if a.error() == Some("unsupported") {
                    return Err(CaseError::Unsupported(op.to_owned()));
                }
                Ok(a)
            }
            Err(e) => {
                self.note(EvidenceSource::Shim, format!("{op} → {e}"));
                Err(match e {
                    ShimDriverError::Spawn(e) => CaseError::Kit(e.to_string()),
                    other => CaseError::Shim(other.to_string()),
                })
            }
        }
    }

    /// Sends a request that must succeed.
    pub async fn ask_ok(&mut self, req: &ShimRequest) -> Result<Map<String, Value>, CaseError> {
        let a = self.ask(req).await?;
        match a.error() {
            None => Ok(a.fields().clone()),
            Some(e) => Err(CaseError::Peer(format!("the shim refused `{}`: {e}", req.op()))),
        }
    }

    /// `register` (PROTOCOL.md §13): what the panel shows.
    pub async fn register(&mut self) -> Result<Shown, CaseError> {
        let f = self.ask_ok(&ShimRequest::Register).await?;
        Ok(Shown::from_fields(&f))
    }

    /// `panel`.
    pub async fn panel(&mut self) -> Result<Panel, CaseError> {
        let f = self.ask_ok(&ShimRequest::Panel).await?;
        Panel::from_fields(&f)
    }

    /// `wait` for `state`: the panel once reached, `None` on the shim's timeout.
    pub async fn wait_state(&mut self, state: PanelState, timeout: Duration) -> Result<Option<Panel>, CaseError> {
        let req = ShimRequest::Wait { state, timeout_ms: timeout.as_millis() as u64 };
        let a = self.ask(&req).await?;
        match a.error() {
            None => Panel::from_fields(a.fields()).map(Some),
            Some(roger_proto::shim::TIMEOUT_ERROR) => Ok(None),
            Some(e) => Err(CaseError::Peer(format!("the shim refused `wait`: {e}"))),
        }
    }

    /// `wait` that must reach `state`.
    pub async fn expect_state(&mut self, state: PanelState, timeout: Duration) -> Result<Panel, CaseError> {
        self.wait_state(state, timeout).await?.ok_or_else(|| {
            CaseError::Peer(format!("the panel did not reach `{}` within {} s", state_name(state), timeout.as_secs()))
        })
    }

    /// `pin` (PROTOCOL.md §13): whether it was accepted.
    pub async fn pin(&mut self, who: Who) -> Result<bool, CaseError> {
        let u = self.user(who).clone();
        let f = self.ask_ok(&ShimRequest::Pin { username: u.name, pin: Pin::new(u.pin) }).await?;
        f.get("accepted")
            .and_then(Value::as_bool)
            .ok_or_else(|| CaseError::Shim("a `pin` answer without a boolean `accepted`".into()))
    }

    /// `pin` with a PIN of the case's choosing (e.g. a wrong one).
    pub async fn pin_with(&mut self, username: &str, pin: &str) -> Result<bool, CaseError> {
        let f = self.ask_ok(&ShimRequest::Pin { username: username.to_owned(), pin: Pin::new(pin) }).await?;
        f.get("accepted")
            .and_then(Value::as_bool)
            .ok_or_else(|| CaseError::Shim("a `pin` answer without a boolean `accepted`".into()))
    }

    /// `logout`.
    pub async fn logout(&mut self) -> Result<(), CaseError> {
        self.ask_ok(&ShimRequest::Logout).await.map(|_| ())
    }

    /// `restart` (a power cycle from `state_dir`).
    pub async fn restart(&mut self) -> Result<(), CaseError> {
        self.ask_ok(&ShimRequest::Restart).await.map(|_| ())
    }

    /// `jobs`: `(id, file_name)` pairs.
    pub async fn jobs(&mut self) -> Result<Vec<(String, String)>, CaseError> {
        let f = self.ask_ok(&ShimRequest::Jobs).await?;
        let jobs =
            f.get("jobs").and_then(Value::as_array).ok_or_else(|| CaseError::Shim("`jobs` without a list".into()))?;
        Ok(jobs
            .iter()
            .filter_map(|j| Some((j.get("id")?.as_str()?.to_owned(), j.get("file_name")?.as_str()?.to_owned())))
            .collect())
    }

    /// `release`: whether it printed.
    pub async fn release(&mut self, job: &str) -> Result<bool, CaseError> {
        let f = self.ask_ok(&ShimRequest::Release { job: job.to_owned() }).await?;
        f.get("printed").and_then(Value::as_bool).ok_or_else(|| CaseError::Shim("`release` without `printed`".into()))
    }

    /// `scan`: whether it reached the drive.
    pub async fn scan(&mut self, profile: &str) -> Result<bool, CaseError> {
        let f = self.ask_ok(&ShimRequest::Scan { profile: profile.to_owned() }).await?;
        f.get("uploaded").and_then(Value::as_bool).ok_or_else(|| CaseError::Shim("`scan` without `uploaded`".into()))
    }

    /// A user of the tenant.
    pub fn user(&self, who: Who) -> &KitUser {
        match who {
            Who::Admin => &self.tenant.admin,
            Who::Alice => &self.tenant.alice,
            Who::Bob => &self.tenant.bob,
        }
    }

    /// The kit's phone, signed in as `who` (PROTOCOL.md §4), talking to the server directly.
    pub async fn phone(&mut self, who: Who) -> Result<&mut Phone, CaseError> {
        if !self.phones.contains_key(&who) {
            let config = ClientConfig::loopback(self.server.info.discovery.clone());
            let mut phone = Phone::connect(&config).await.map_err(|e| CaseError::Kit(format!("phone: {e}")))?;
            let u = self.user(who).clone();
            phone
                .login(TENANT, &u.name, Password::new(u.password))
                .await
                .map_err(|e| CaseError::Kit(format!("phone sign-in: {e}")))?;
            self.phones.insert(who, phone);
        }
        self.phones.get_mut(&who).ok_or_else(|| CaseError::Kit("phone".into()))
    }

    /// The user code a shown QR stands for: the QR payload must be a `verification_uri_complete` on the MFP's API
    /// origin (R-QR-1); without a payload, the typed user code.
    pub fn code_of(&self, shown: &Shown) -> Result<roger_proto::secret::UserCode, CaseError> {
        if let Some(qr) = &shown.qr {
            return roger_proto::qr::parse(qr, &self.api())
                .map_err(|e| CaseError::Peer(format!("the panel's QR is not a Roger verification URI: {e}")));
        }
        if let Some(code) = &shown.user_code {
            return roger_proto::user_code::normalize(code)
                .map(roger_proto::secret::UserCode::new)
                .map_err(|e| CaseError::Peer(format!("the panel's user code is not one: {e}")));
        }
        Err(CaseError::Peer("the panel shows neither a QR nor a user code".into()))
    }

    /// Approves (or denies) what the panel shows, as `who` on the kit's phone (look-up first, R-QR-2).
    pub async fn decide(&mut self, shown: &Shown, who: Who, approve: bool) -> Result<(), CaseError> {
        let code = self.code_of(shown)?;
        let phone = self.phone(who).await?;
        let review =
            phone.look_up(&code).await.map_err(|e| CaseError::Peer(format!("look-up of the shown code: {e}")))?;
        let kind = review.lookup.kind;
        let result = if approve { phone.approve(&review, None).await } else { phone.deny(&review).await };
        result.map_err(|e| {
            CaseError::Peer(format!("{} of the shown code: {e}", if approve { "approval" } else { "denial" }))
        })?;
        let what = match kind {
            CodeKind::Registration => "registration",
            CodeKind::Session => "session",
            CodeKind::Desktop => "desktop",
            CodeKind::Unknown => "unknown",
        };
        let verb = if approve { "approved" } else { "denied" };
        self.note(EvidenceSource::Kit, format!("the phone ({who:?}) looked up the shown {what} code and {verb} it"));
        Ok(())
    }

    /// Starts the shim, registers, approves as the admin and waits for `idle` (PROTOCOL.md §5).
    pub async fn connect(&mut self) -> Result<(), CaseError> {
        self.start_shim().await?;
        let shown = self.register().await?;
        self.decide(&shown, Who::Admin, true).await?;
        self.expect_state(PanelState::Idle, STATE_WAIT).await?;
        Ok(())
    }

    /// Waits for `idle`, then for the panel to show a session code: a panel may report `idle` a moment before it
    /// draws its first QR, so the kit looks again (every 250 ms, for at most [`SHOW_GRACE`]) before it concludes
    /// there is none. The last panel seen (it may still show nothing).
    pub async fn idle_panel(&mut self) -> Result<Panel, CaseError> {
        let mut panel = self.expect_state(PanelState::Idle, STATE_WAIT).await?;
        let deadline = Instant::now() + SHOW_GRACE;
        while panel.shown.qr.is_none() && panel.shown.user_code.is_none() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(250)).await;
            panel = self.panel().await?;
            if panel.state != PanelState::Idle {
                break;
            }
        }
        Ok(panel)
    }

    /// Approves the session QR the idle panel shows as `who` and waits for `session` (docs/protocol.md §5.3 step 1).
    pub async fn qr_session(&mut self, who: Who) -> Result<Panel, CaseError> {
        let panel = self.idle_panel().await?;
        self.decide(&panel.shown, who, true).await?;
        self.expect_state(PanelState::Session, STATE_WAIT).await
    }

    /// Moves the server's virtual clock forward (due expiries apply at once).
    pub fn advance(&mut self, seconds: u64) -> Result<(), CaseError> {
        let s = &self.server.shared;
        s.clock.advance(Duration::from_secs(seconds)).map_err(|e| CaseError::Kit(format!("clock: {e}")))?;
        s.act(|core, now| core.sweep(now))
            .map_err(|_| CaseError::Kit("the sweep after the clock jump failed".into()))?;
        self.note(EvidenceSource::Kit, format!("moved the server's clock forward by {seconds} s"));
        Ok(())
    }

    /// Sets the server's fault plan (server/faults.rs), seeded from the case seed.
    pub fn set_faults(&mut self, rules: Vec<crate::server::faults::FaultRule>) -> Result<(), CaseError> {
        self.fault_seq += 1;
        let plan = FaultPlan { seed: self.seed ^ self.fault_seq, rules };
        let text = serde_json::to_string(&plan).unwrap_or_default();
        self.server.shared.faults.set(plan).map_err(|e| CaseError::Kit(format!("fault plan: {e}")))?;
        self.note(EvidenceSource::Kit, format!("fault plan set: {text}"));
        Ok(())
    }

    /// How often each rule of the fault plan was applied.
    pub fn faults_applied(&self) -> Vec<u64> {
        let status = self.server.shared.faults.status();
        status.rules.iter().map(|r| r.applied).collect()
    }

    /// Switches answer rewrites on or off.
    pub fn set_rewrites(&mut self, r: Rewrites) {
        self.note(EvidenceSource::Kit, format!("answer rewrites: {r:?}"));
        self.proxy.recorder.set_rewrites(r);
    }

    /// Waits until `pred` holds for the exchanges so far (or `timeout`); whether it held.
    pub async fn wait_exchanges(&self, timeout: Duration, pred: impl Fn(&[Exchange]) -> bool) -> bool {
        self.proxy.recorder.wait_for(timeout, pred).await
    }

    /// The registered devices of the case's server.
    pub fn devices(&self) -> Vec<String> {
        self.server.shared.read(|core, _| core.state().devices.keys().map(|k| k.to_string()).collect())
    }

    /// The shim's stderr so far.
    pub fn stderr(&self) -> String {
        self.shim.as_ref().map(ShimDriver::stderr_text).unwrap_or_default()
    }

    /// Every regular file under the shim's `state_dir` with its bytes.
    pub fn state_files(&self) -> Vec<(PathBuf, Vec<u8>)> {
        let mut out = Vec::new();
        let mut stack = vec![self.state_dir.clone()];
        while let Some(dir) = stack.pop() {
            let Ok(entries) = std::fs::read_dir(&dir) else { continue };
            for e in entries.flatten() {
                let p = e.path();
                match e.file_type() {
                    Ok(t) if t.is_dir() => stack.push(p),
                    Ok(t) if t.is_file() => {
                        if let Ok(bytes) = std::fs::read(&p) {
                            out.push((p, bytes));
                        }
                    }
                    _ => {}
                }
            }
        }
        out
    }

    /// The case's broker bus, when the case pushes through the kit's broker (PROTOCOL.md §11).
    pub fn broker(&self) -> Option<&crate::amqp::AmqpBus> {
        self.server.amqp.as_ref()
    }

    /// The kit's relay between the MFP and the broker ([`PushSetup::Broker`]), where a case cuts the connection.
    pub fn broker_cut(&self) -> Option<&BrokerCut> {
        self.broker_cut.as_ref()
    }

    /// How many consumers the device queue of `device` has now (`None`: no broker, or no such queue yet). The
    /// server declares the queue when it hands out push credentials, so before the MFP got them it has none (and
    /// the broker is not asked about a queue it does not know).
    pub async fn device_queue_consumers(&self, device: &str) -> Option<u32> {
        let bus = self.broker()?;
        let asked = self.exchanges().iter().any(|e| e.is("GET", "/api/v1/device/push") && e.delivered_ok());
        if !asked {
            return Some(0);
        }
        let id = roger_proto::push::Id::new(device).ok()?;
        bus.consumers(&crate::bus::QueueSpec::Device(id)).await
    }

    /// Waits until the device queue's consumer count satisfies `want` (checked every 100 ms) or `timeout` passes;
    /// the last count seen.
    pub async fn wait_consumers(&self, device: &str, timeout: Duration, want: impl Fn(u32) -> bool) -> Option<u32> {
        let deadline = Instant::now() + timeout;
        loop {
            let n = self.device_queue_consumers(device).await;
            if n.is_some_and(&want) || Instant::now() >= deadline {
                return n;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Publishes `envelope` through the case's broker, as the server would (the kit forging or repeating a
    /// doorbell, R-PUSH-1); noted as kit evidence.
    pub async fn publish(&mut self, envelope: &roger_proto::push::PushEnvelope) -> Result<(), CaseError> {
        use crate::bus::PushBus;
        let bus = self.broker().cloned().ok_or_else(|| CaseError::Kit(super::broker::NEEDS_BROKER.into()))?;
        bus.publish(envelope).await.map_err(|e| CaseError::Kit(format!("publishing a doorbell: {e}")))?;
        let body = String::from_utf8_lossy(&envelope.to_json()).into_owned();
        self.note(EvidenceSource::Kit, format!("published to the device queue: {body}"));
        Ok(())
    }

    /// Stops the shim, the proxy and the server; removes the case directory unless `keep`.
    pub async fn finish(mut self, keep: bool) -> Leftovers {
        let (stderr, turns) = match self.shim.take() {
            Some(shim) => {
                let turns = shim.turns().to_vec();
                (shim.shutdown().await, turns)
            }
            None => (String::new(), Vec::new()),
        };
        let vault = self.vault();
        let redacted = vault.redact(&stderr);
        let lines: Vec<&str> = redacted.lines().collect();
        let tail = lines[lines.len().saturating_sub(40)..].join("\n");
        if let Some(bus) = self.server.amqp.clone() {
            // The case's exchange and queues go with it (they would expire on their own after two minutes).
            if let Err(e) = bus.delete_topology().await {
                let text = format!("the case's broker topology could not be deleted (its queues expire): {e}");
                self.note(EvidenceSource::Kit, text);
            }
        }
        self.proxy.stop().await;
        drop(self.broker_cut.take());
        self.server.stop().await;
        if !keep {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
        Leftovers { evidence: self.evidence, stderr_tail: tail, turns }
    }
}

/// Wire evidence for `list` (at most `max` lines, the last ones, after a line saying how many were left out),
/// skipping the exchanges in `noted` and adding the rest to it. One exchange is one line however many readings
/// of a case name it: a case notes the polls it judged, and the runner then notes the whole conversation of a case
/// that did not pass; listed twice at the same millisecond, an exchange read as a client that sends twice.
fn wire_evidence<'a>(
    list: impl IntoIterator<Item = &'a Exchange>,
    max: usize,
    noted: &mut HashSet<u64>,
    t0: Instant,
    vault: &Vault,
) -> Vec<Evidence> {
    let ms = |at: Instant| at.saturating_duration_since(t0).as_millis() as u64;
    let fresh: Vec<&Exchange> = list.into_iter().filter(|e| !noted.contains(&e.seq)).collect();
    let mut seen = HashSet::new();
    let fresh: Vec<&Exchange> = fresh.into_iter().filter(|e| seen.insert(e.seq)).collect();
    let skipped = fresh.len().saturating_sub(max);
    let mut out = Vec::new();
    if skipped > 0 {
        out.push(Evidence {
            source: EvidenceSource::Wire,
            at_ms: ms(fresh[0].at),
            text: format!("… {skipped} earlier exchanges not shown"),
        });
    }
    for e in fresh.into_iter().skip(skipped) {
        noted.insert(e.seq);
        out.push(Evidence { source: EvidenceSource::Wire, at_ms: ms(e.at), text: e.describe(vault) });
    }
    out
}

/// Stops a server that never served a case, deleting its broker topology first.
async fn stop_server(server: RunningServer) {
    if let Some(bus) = server.amqp.clone() {
        let _ = bus.delete_topology().await;
    }
    server.stop().await;
}

/// A short rendering of a shim answer's fields for the evidence (the vault redacts codes).
fn summarize(fields: &Map<String, Value>) -> String {
    let mut parts = Vec::new();
    for (k, v) in fields {
        let shown = match v {
            Value::String(s) if s.len() > 120 => {
                format!("{}…", &s[..s.char_indices().nth(117).map(|(i, _)| i).unwrap_or(s.len())])
            }
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        parts.push(format!("{k}={shown}"));
    }
    parts.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixture_parses_and_secrets_are_fresh() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let t = Tenant::generate(&mut rng);
        let parsed = crate::server::fixtures::parse(&t.fixture()).expect("fixture");
        assert_eq!(parsed.tenants.len(), 1);
        assert_eq!(t.alice.pin.len(), 8);
        assert_ne!(t.alice.pin, t.bob.pin);
        let mut rng2 = rand::rngs::StdRng::seed_from_u64(3);
        assert_eq!(Tenant::generate(&mut rng2).alice.pin, t.alice.pin, "the seed replays the fixture");
    }

    fn exchange(seq: u64, t0: Instant) -> Exchange {
        Exchange {
            seq,
            route: "api",
            at: t0 + Duration::from_millis(seq * 100),
            done: t0 + Duration::from_millis(seq * 100 + 5),
            method: "POST".into(),
            path: "/oauth/token".into(),
            query: None,
            headers: http::HeaderMap::new(),
            body: Default::default(),
            status: Some(400),
            resp_headers: http::HeaderMap::new(),
            resp_body: axum::body::Bytes::from_static(b"{\"error\":\"authorization_pending\"}"),
            rewritten: Vec::new(),
        }
    }

    /// An exchange a case noted and the runner's whole conversation noted again is one line of evidence, not two
    /// at the same millisecond (which read as a client that sends twice).
    #[test]
    fn an_exchange_is_listed_once() {
        let t0 = Instant::now();
        let all: Vec<Exchange> = (0..5).map(|i| exchange(i, t0)).collect();
        let vault = Vault::default();
        let mut noted = HashSet::new();
        // The case notes the polls it judged (2 and 3)…
        let first = wire_evidence(all[2..4].iter(), 12, &mut noted, t0, &vault);
        assert_eq!(first.len(), 2);
        // …then the runner notes the whole conversation: only the other three are added.
        let second = wire_evidence(all.iter(), 60, &mut noted, t0, &vault);
        assert_eq!(second.len(), 3);
        let mut at: Vec<u64> = first.iter().chain(&second).map(|e| e.at_ms).collect();
        at.sort_unstable();
        at.dedup();
        assert_eq!(at.len(), 5, "every exchange once");
        // A list that names one exchange twice lists it once; the cap counts fresh exchanges only.
        let mut noted = HashSet::new();
        let twice = [&all[0], &all[0], &all[1]];
        assert_eq!(wire_evidence(twice.into_iter(), 12, &mut noted, t0, &vault).len(), 2);
        let capped = wire_evidence(all.iter(), 2, &mut noted, t0, &vault);
        assert_eq!(capped.len(), 3, "one line saying how many were left out, then the last two");
        assert!(capped[0].text.contains("1 earlier"));
    }

    #[test]
    fn panel_answers_are_read_loosely() {
        let f: Map<String, Value> = serde_json::from_str(
            r#"{"state":"idle","qr":"https://x/device?user_code=BCDFGHJK","user_code":"","scopes":["a",1]}"#,
        )
        .unwrap();
        let p = Panel::from_fields(&f).unwrap();
        assert_eq!(p.state, PanelState::Idle);
        assert_eq!(p.shown.user_code, None, "an empty user code is no user code");
        assert_eq!(p.scopes, vec!["a"]);
        let bad: Map<String, Value> = serde_json::from_str(r#"{"state":"dancing"}"#).unwrap();
        assert!(Panel::from_fields(&bad).is_err());
    }
}
