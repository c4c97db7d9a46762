//! Starting a server: listeners (API and drive), TLS, state, fixtures, the router, and the stable contract of
//! `roger-sim server` (one JSON line on stdout once connections are accepted; logs on stderr; SIGTERM stops it).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use axum::extract::ConnectInfo;
use axum::http::Request;
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use rand::rngs::adapter::ReseedingRng;
use rand::rngs::OsRng;
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha12Core;
use roger_proto::server::mint::Minter;
use roger_proto::server::settings::TenantSettings;
use roger_proto::server::ServerCore;
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tower::ServiceExt;

use super::app::Shared;
use super::clock::{ClockKind, SharedClock, SystemClock, VirtualClock};
use super::log::RequestLog;
use super::service::ApiService;
use super::store::Store;
use super::{faults, fixtures, oauth_routes as o, respond, sim_routes as sim, tls};
use crate::amqp::{AmqpBus, AmqpConfig};
use crate::bus::{InProcessBus, PushBus};
use crate::drive::Drive;
use roger_proto::server::api::PushConfig;

/// How to run a server.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Where the API listens (`127.0.0.1:0` picks a free port).
    pub listen: SocketAddr,
    /// Where the drive listens (port 0: any free port on the API's address).
    pub drive_listen: Option<SocketAddr>,
    /// Plain HTTP instead of TLS (loopback tests only, R-DISC-2).
    pub plain_http: bool,
    /// System or virtual clock.
    pub clock: ClockKind,
    /// A tenant fixture (TOML); the built-in default when absent.
    pub fixture: Option<PathBuf>,
    /// SQLite state file; in memory when absent.
    pub state: Option<PathBuf>,
    /// Where the generated CA and certificate live (default: next to the state file, or a temp dir).
    pub tls_dir: Option<PathBuf>,
    /// Seed of the server's CSPRNG (reproducible runs); fresh OS randomness when absent.
    pub seed: Option<u64>,
    /// Opens `/sim/` to non-loopback callers presenting it.
    pub control_token: Option<String>,
    /// Settings for new tenants and registrations (fixtures may override per tenant).
    pub settings: Option<TenantSettings>,
    /// **Test-only**: run a known-broken variant that makes this one mistake (DESIGN.md "Conformance": mutants
    /// prove the suite; see [`super::mutant`]). `None`, the default, is the server as specified.
    pub mutant: Option<super::mutant::ServerMutant>,
    /// Push through a real AMQP broker (PROTOCOL.md §11) instead of the in-process bus.
    pub amqp: Option<AmqpConfig>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            drive_listen: None,
            plain_http: false,
            clock: ClockKind::Virtual,
            fixture: None,
            state: None,
            tls_dir: None,
            seed: None,
            control_token: None,
            settings: None,
            mutant: None,
            amqp: None,
        }
    }
}

/// The JSON line `roger-sim server` prints once it accepts connections (the harness contract).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct ServerInfo {
    /// Discovery base (`{discovery}/regions`).
    pub discovery: String,
    /// API origin.
    pub api: String,
    /// Drive origin.
    pub drive: String,
    /// Broker URL, or null for the in-process bus.
    pub amqp: Option<String>,
    /// The CA to trust, or null for plain HTTP.
    pub ca: Option<String>,
}

/// Why a server did not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// A listener could not be bound.
    #[error("cannot listen on {0}: {1}")]
    Bind(SocketAddr, std::io::Error),
    /// TLS setup failed.
    #[error("TLS setup failed: {0}")]
    Tls(String),
    /// The state file could not be opened or read.
    #[error("state: {0}")]
    State(String),
    /// The fixture is unreadable or invalid.
    #[error("fixture: {0}")]
    Fixture(String),
    /// The push broker could not be used (PROTOCOL.md §11).
    #[error("push broker: {0}")]
    Broker(#[from] crate::amqp::AmqpError),
    /// The operating system's random number generator failed (seeding the minter).
    #[error("the operating system's random number generator failed: {0}")]
    Entropy(String),
}

/// A running server.
pub struct RunningServer {
    /// The contract line.
    pub info: ServerInfo,
    /// The shared state (for in-process tests and the demo).
    pub shared: Arc<Shared>,
    /// The AMQP bus when the server pushes through a broker (tests delete its topology at the end).
    pub amqp: Option<AmqpBus>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl RunningServer {
    /// Stops accepting, closes the listeners and waits for the accept loops to end.
    pub async fn stop(self) {
        let _ = self.shutdown.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

/// The API: its routes behind [`ApiService`] (body counting and limit, fault injection, R-SEC-1 headers).
pub fn router(shared: Arc<Shared>) -> ApiService {
    let routes = Router::new()
        .route("/regions", get(o::regions))
        .route("/.well-known/oauth-authorization-server", get(o::metadata))
        .route("/oauth/device_authorization", post(o::device_authorization))
        .route("/oauth/token", post(o::token))
        .route("/oauth/revoke", post(o::revoke))
        .route("/oauth/authorize", get(o::authorize_form).post(o::authorize_submit))
        .route("/device", get(o::verification_page))
        .route("/api/v1/codes/approve", post(o::approve))
        .route("/api/v1/codes/deny", post(o::deny))
        .route("/api/v1/codes/{user_code}", get(o::lookup_code))
        .merge(super::api_routes::routes())
        .route("/sim/clock", get(sim::clock))
        .route("/sim/clock/advance", post(sim::advance))
        .route("/sim/settings", get(sim::get_settings).put(sim::put_settings))
        .route("/sim/store", get(sim::store))
        .route("/sim/log", get(sim::log))
        .route("/sim/traffic", get(sim::traffic))
        .route("/sim/faults", get(sim::get_faults).post(sim::post_faults).delete(sim::delete_faults))
        .route("/openapi.json", get(super::openapi::serve))
        .fallback(|| async { respond::not_found() })
        .method_not_allowed_fallback(|| async { respond::method_not_allowed() });
    // A test-only mutant rewrites the routes' answers (nothing is added for a correct server).
    let routes = super::mutant::wrap(routes, &shared).with_state(shared.clone());
    ApiService::new(routes, shared)
}

fn origin(scheme: &str, addr: SocketAddr) -> String {
    format!("{scheme}://{addr}")
}

/// Starts a server in this process.
pub async fn start(config: ServerConfig) -> Result<RunningServer, StartError> {
    tls::install_crypto_provider();
    let api_listener = TcpListener::bind(config.listen).await.map_err(|e| StartError::Bind(config.listen, e))?;
    let api_addr = api_listener.local_addr().map_err(|e| StartError::Bind(config.listen, e))?;
    let drive_bind = config.drive_listen.unwrap_or(SocketAddr::new(api_addr.ip(), 0));
    let drive_listener = TcpListener::bind(drive_bind).await.map_err(|e| StartError::Bind(drive_bind, e))?;
    let drive_addr = drive_listener.local_addr().map_err(|e| StartError::Bind(drive_bind, e))?;

    let scheme = if config.plain_http { "http" } else { "https" };
    let api = origin(scheme, api_addr);
    let drive_origin = origin(scheme, drive_addr);

    let tls = if config.plain_http {
        None
    } else {
        let dir = config
            .tls_dir
            .clone()
            .or_else(|| config.state.as_ref().and_then(|p| p.parent().map(|d| d.join("roger-sim-tls"))))
            .unwrap_or_else(|| std::env::temp_dir().join("roger-sim-tls"));
        let hosts = vec![api_addr.ip().to_string(), "localhost".to_owned()];
        Some(tls::load_or_create(&dir, &hosts).map_err(|e| StartError::Tls(e.to_string()))?)
    };

    // State: the SQLite file if given (with the clock offset it saved), else memory.
    let mut store = Store::open(config.state.as_deref()).map_err(|e| StartError::State(e.to_string()))?;
    let state =
        if store.is_persistent() { Some(store.load().map_err(|e| StartError::State(e.to_string()))?) } else { None };
    let saved_offset = store.clock_offset().map_err(|e| StartError::State(e.to_string()))?;
    let clock: SharedClock = match config.clock {
        ClockKind::System => SystemClock::shared(),
        ClockKind::Virtual => VirtualClock::shared(saved_offset),
    };
    // A seeded server restarted on a state file must not replay the random stream of an earlier start: it would hand
    // out that run's device codes, tokens and ids again (RFC 6749 §10.10) and overwrite their records. Each start of
    // the file therefore draws from its own stream, derived from the seed and a start counter kept in the file; the
    // first start (and every in-memory server) uses the seed as it is, so runs stay reproducible.
    let starts: u64 = store
        .get_meta(super::store::META_STARTS)
        .map_err(|e| StartError::State(e.to_string()))?
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    store
        .put_meta(super::store::META_STARTS, &starts.saturating_add(1).to_string())
        .map_err(|e| StartError::State(e.to_string()))?;
    let rng: Box<dyn rand_core::CryptoRngCore + Send> = match config.seed {
        Some(seed) => Box::new(rand::rngs::StdRng::seed_from_u64(seed ^ starts.wrapping_mul(0x9E37_79B9_7F4A_7C15))),
        None => Box::new(os_seeded_rng().map_err(|e| StartError::Entropy(e.to_string()))?),
    };
    let defaults = config.settings.unwrap_or_default();
    let fresh = state.as_ref().is_none_or(|s| s.tenants.is_empty());
    let mut core = match state {
        Some(state) => ServerCore::from_state(&api, defaults, Minter::new(rng), state),
        None => ServerCore::new(&api, defaults, Minter::new(rng)),
    };
    let clock_for_drive = clock.clone();
    let mut drive = Drive::new(Arc::new(move || clock_for_drive.now()));
    drive.set_base_url(&drive_origin);
    if fresh {
        let text = match &config.fixture {
            Some(p) => std::fs::read_to_string(p).map_err(|e| StartError::Fixture(format!("{}: {e}", p.display())))?,
            None => fixtures::DEFAULT_FIXTURE.to_owned(),
        };
        let fixture = fixtures::parse(&text).map_err(|e| StartError::Fixture(e.to_string()))?;
        fixtures::apply(&fixture, &mut core, clock.now(), &mut drive)
            .map_err(|e| StartError::Fixture(e.to_string()))?;
    }
    if let Some(m) = config.mutant {
        // Loud on purpose: a mutant must never pass for the real server.
        eprintln!("roger-sim server: {}", m.warning());
        tracing::warn!("{}", m.warning());
    }
    core.set_mutations(super::mutant::ServerMutant::core_mutations(config.mutant));
    let initial = core.take_changes();
    store.commit(&initial).map_err(|e| StartError::State(e.to_string()))?;
    let mut csrf_key = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut csrf_key);
    // PROTOCOL.md §11: a real broker when configured, else the in-process bus.
    let (bus, amqp_bus, push): (Arc<dyn PushBus>, Option<AmqpBus>, PushConfig) = match config.amqp {
        Some(amqp) => {
            let amqp = AmqpBus::connect(amqp).await?;
            (Arc::new(amqp.clone()), Some(amqp.clone()), amqp.push_config())
        }
        None => (Arc::new(InProcessBus::new()), None, PushConfig::without_broker()),
    };
    let amqp_url = push.url.clone();
    let shared = Arc::new(Shared {
        core: Mutex::new(core),
        persistent: store.is_persistent(),
        store: Mutex::new(store),
        clock,
        bus,
        drive: drive.clone(),
        log: Mutex::new(RequestLog::default()),
        discovery: api.clone(),
        api: api.clone(),
        amqp: amqp_url.clone(),
        push,
        control_token: config.control_token.clone(),
        csrf_key,
        tls: tls.is_some(),
        faults: faults::FaultState::default(),
        traffic: Default::default(),
        mutant: super::mutant::MutantState::new(config.mutant),
    });

    let (tx, rx) = watch::channel(false);
    let acceptor = tls.as_ref().map(|t| tokio_rustls::TlsAcceptor::from(t.config.clone()));
    let tasks = vec![
        tokio::spawn(serve(api_listener, router(shared.clone()), acceptor.clone(), rx.clone())),
        tokio::spawn(serve(drive_listener, crate::drive::router(drive), acceptor, rx.clone())),
        tokio::spawn(sweep_periodically(shared.clone(), rx)),
    ];
    let info = ServerInfo {
        discovery: api.clone(),
        api,
        drive: drive_origin,
        amqp: amqp_url,
        ca: tls.map(|t| t.ca_path.display().to_string()),
    };
    Ok(RunningServer { info, shared, amqp: amqp_bus, shutdown: tx, tasks })
}

/// Accepts connections until shutdown; each gets the router with its peer address (for `/sim` access control).
pub(crate) async fn serve<S>(
    listener: TcpListener,
    app: S,
    tls: Option<tokio_rustls::TlsAcceptor>,
    mut shutdown: watch::Receiver<bool>,
) where
    S: tower::Service<Request<hyper::body::Incoming>, Response = Response, Error = std::convert::Infallible>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
{
    loop {
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => return,
        };
        let app = app.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            // A `drop_response` fault marks its response; the service error closes the connection unanswered.
            let service = app
                .map_request(move |mut req: Request<hyper::body::Incoming>| {
                    req.extensions_mut().insert(ConnectInfo(peer));
                    req
                })
                .map_result(faults::connection_result);
            let service = TowerToHyperService::new(service);
            let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            builder
                .http1()
                .max_buf_size(64 * 1024)
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(std::time::Duration::from_secs(30));
            let builder = builder.http1_only();
            let result = match tls {
                Some(acceptor) => match acceptor.accept(stream).await {
                    Ok(s) => builder.serve_connection(TokioIo::new(s), service).await,
                    Err(e) => {
                        tracing::debug!("TLS handshake with {peer} failed: {e}");
                        return;
                    }
                },
                None => builder.serve_connection(TokioIo::new(stream), service).await,
            };
            if let Err(e) = result {
                tracing::debug!("connection from {peer} ended: {e}");
            }
        });
    }
}

/// How often a running server sweeps what has expired ([`ServerCore::sweep`]), in real time.
pub const SWEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

/// Sweeps the core every [`SWEEP_EVERY`] until shutdown. Expired device codes, authorization codes, tickets, jobs
/// and refresh families have no other way out: without this a server on the system clock (or a virtual clock that
/// is never advanced through `/sim/clock/advance`, which sweeps at once) would keep them for as long as it runs.
/// Access tokens are also dropped as new ones are minted (`ServerCore::put_access`).
async fn sweep_periodically(shared: Arc<Shared>, mut shutdown: watch::Receiver<bool>) {
    let mut every = tokio::time::interval(SWEEP_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first tick is immediate; a fresh server has nothing to sweep.
    every.tick().await;
    loop {
        tokio::select! {
            _ = every.tick() => {
                if shared.act(|core, now| core.sweep(now)).is_err() {
                    tracing::warn!("the periodic sweep could not be committed; the next one retries");
                }
            }
            _ = shutdown.changed() => return,
        }
    }
}

/// How many bytes the minter's generator produces before it reseeds from the operating system (as `rand`'s
/// `ThreadRng`, 64 KiB: about a thousand secrets).
pub const RESEED_AFTER_BYTES: u64 = 64 * 1024;

/// The minter's CSPRNG without `--seed`: ChaCha12 seeded from the operating system and reseeded from it every
/// [`RESEED_AFTER_BYTES`], the construction of `rand`'s `ThreadRng`. Asking the kernel for each secret instead
/// (`OsRng`) costs a system call per secret, a tenth of a refresh grant's CPU time (`benches/benches/server.rs`).
fn os_seeded_rng() -> Result<ReseedingRng<ChaCha12Core, OsRng>, rand::Error> {
    Ok(ReseedingRng::new(ChaCha12Core::from_rng(OsRng)?, RESEED_AFTER_BYTES, OsRng))
}

#[cfg(test)]
mod tests {
    use super::*;
    use roger_proto::device_authorization::DeviceAuthorizationRequest;

    /// Nothing but the periodic sweep removes an expired code when the clock moves without `/sim/clock/advance`
    /// (here the virtual clock is moved directly, as real time moves a system clock).
    #[tokio::test(start_paused = true)]
    async fn a_running_server_sweeps_on_its_own() {
        let server = start(ServerConfig { plain_http: true, seed: Some(3), ..ServerConfig::default() })
            .await
            .expect("the server starts");
        let shared = server.shared.clone();
        let req = DeviceAuthorizationRequest::registration("emb-acme", "MX-1", "SN-1");
        shared.act(|core, now| core.device_authorization(now, &req, None)).unwrap().expect("a code");
        let codes = |s: &Shared| s.read(|core, _| core.state().codes.len());
        assert_eq!(codes(&shared), 1);

        shared.clock.advance(std::time::Duration::from_secs(30 * 24 * 3600)).expect("a virtual clock");
        tokio::time::sleep(SWEEP_EVERY / 2).await;
        assert_eq!(codes(&shared), 1, "no sweep before SWEEP_EVERY has passed");
        tokio::time::sleep(SWEEP_EVERY).await;
        assert_eq!(codes(&shared), 0, "the expired code was swept");
        server.stop().await;
    }
}
