//! The async driver (feature `driver`): an HTTP transport trait a vendor implements on its own stack, and loops
//! that run this crate's sans-IO state machines over it.
//!
//! The state machines stay the single source of protocol behaviour; this module only moves bytes and time:
//! it sends what they emit, feeds back answers or transport errors, and sleeps until their `poll_timeout`.
//! A per-request timeout turns a hung answer into a transport error (PROTOCOL.md §12: back off and retry).
//!
//! Time comes from a [`Clock`]: [`SystemClock`] in production; tests may run a faster clock so that 5-second
//! intervals pass in milliseconds while every rule still sees consistent times.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use http::{Request, Response};

use crate::discovery::{self, Region, TransportPolicy};
use crate::error::{PeerReport, PeerViolation, ReportOnce};
use crate::lifecycle::{Connection, ConnectionState, LifecycleEvent};
use crate::metadata::{self, AuthorizationServerMetadata, Endpoints, MetadataError};
use crate::poller::{DevicePoller, PollResult, PollerEvent};
use crate::secret::AccessToken;
use crate::ResponseError;

pub mod mfp;
#[cfg(feature = "reqwest")]
pub mod reqwest_transport;

/// What went wrong below HTTP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TransportErrorKind {
    /// Could not connect (refused, unreachable, DNS).
    Connect,
    /// The TLS handshake failed (bad certificate, wrong name, old protocol).
    Tls,
    /// No answer in time.
    Timeout,
    /// The connection broke mid-exchange (reset, closed early): the answer may have been lost.
    Reset,
    /// Anything else.
    Other,
}

/// A transport failure. Its message never contains a request body or header (which may carry secrets).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("transport error ({kind:?}): {message}")]
pub struct TransportError {
    /// Category.
    pub kind: TransportErrorKind,
    /// Human-readable description.
    pub message: String,
}

impl TransportError {
    /// A new transport error.
    pub fn new(kind: TransportErrorKind, message: impl Into<String>) -> Self {
        Self { kind, message: message.into() }
    }
}

/// The HTTP stack a vendor plugs in: send one request, return the whole answer.
///
/// Implementations must not follow redirects (the app-login `302` is read by the caller), must verify TLS
/// certificates, and must not log request bodies or `Authorization` headers (R-SEC-1).
#[async_trait]
pub trait HttpTransport: Send + Sync {
    /// Sends `request` and returns the answer, or a transport error.
    async fn send(&self, request: Request<Vec<u8>>) -> Result<Response<Vec<u8>>, TransportError>;
}

/// The driver's source of time.
#[async_trait]
pub trait Clock: Send + Sync {
    /// Now.
    fn now(&self) -> Instant;
    /// Sleeps until `deadline` (returns at once if it has passed).
    async fn sleep_until(&self, deadline: Instant);
}

/// The real monotonic clock (tokio timers).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

#[async_trait]
impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }

    async fn sleep_until(&self, deadline: Instant) {
        tokio::time::sleep_until(tokio::time::Instant::from_std(deadline)).await;
    }
}

/// A clock that runs `factor` times faster than real time, for tests: a 5 s interval passes in 5 s / factor.
#[derive(Debug, Clone, Copy)]
pub struct ScaledClock {
    start: Instant,
    factor: u32,
}

impl ScaledClock {
    /// A clock running `factor` times real speed from now.
    pub fn new(factor: u32) -> Self {
        Self { start: Instant::now(), factor: factor.max(1) }
    }
}

#[async_trait]
impl Clock for ScaledClock {
    fn now(&self) -> Instant {
        self.start + self.start.elapsed() * self.factor
    }

    async fn sleep_until(&self, deadline: Instant) {
        let now = self.now();
        if deadline > now {
            tokio::time::sleep((deadline - now) / self.factor).await;
        }
    }
}

/// Why a driver loop stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DriverError {
    /// The discovery answer or a configured URL was refused (R-DISC-1, R-DISC-2).
    #[error(transparent)]
    Discovery(#[from] discovery::DiscoveryError),
    /// The metadata was refused (R-META-1).
    #[error(transparent)]
    Metadata(#[from] MetadataError),
    /// The server gave a definite error.
    #[error(transparent)]
    Response(#[from] ResponseError),
    /// The transport failed and retrying is not this call's job.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// A request could not be built (a configured URL is not a valid URI).
    #[error("could not build a request: {0}")]
    Build(String),
    /// The registration ended without a device.
    #[error("registration failed: {0:?}")]
    RegistrationFailed(crate::lifecycle::RegistrationFailure),
    /// The printer is disconnected (R-TOK-4).
    #[error("the printer is disconnected: {0:?}")]
    Disconnected(crate::lifecycle::DisconnectReason),
    /// The deadline given to the loop passed.
    #[error("gave up waiting")]
    GaveUp,
}

impl From<http::Error> for DriverError {
    fn from(e: http::Error) -> Self {
        Self::Build(e.to_string())
    }
}

/// Where a driver sends the deviations it saw ([`Driver::on_peer_report`]).
pub type ReportSink = Arc<dyn Fn(&PeerReport) + Send + Sync>;

/// Runs the state machines over a transport.
///
/// Every deviation of the server that the machines read past or refused (docs/protocol.md §7) is reported once
/// per kind: by default as a `tracing` warning (target `roger_proto::peer`), or to the sink given to
/// [`Driver::on_peer_report`]. Lifecycle deviations also reach `run_lifecycle`'s `on_event` as
/// [`LifecycleEvent::PeerViolation`].
pub struct Driver<T, C = SystemClock> {
    transport: T,
    clock: C,
    request_timeout: Duration,
    sink: ReportSink,
    reported: Arc<Mutex<ReportOnce>>,
}

impl<T, C> fmt::Debug for Driver<T, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Driver").field("request_timeout", &self.request_timeout).finish_non_exhaustive()
    }
}

impl<T: HttpTransport> Driver<T, SystemClock> {
    /// A driver on the system clock with a 30 s per-request timeout.
    pub fn new(transport: T) -> Self {
        Self::with_clock(transport, SystemClock)
    }
}

impl<T: HttpTransport, C: Clock> Driver<T, C> {
    /// A driver on another clock.
    pub fn with_clock(transport: T, clock: C) -> Self {
        Self {
            transport,
            clock,
            request_timeout: Duration::from_secs(30),
            sink: Arc::new(|r: &PeerReport| tracing::warn!(target: "roger_proto::peer", "{r}")),
            reported: Arc::default(),
        }
    }

    /// Sends each kind of deviation, once, to `sink` instead of the default `tracing` warning (a printer without
    /// `tracing` writes it to its own log). The report names the endpoint and the rule, never a value.
    pub fn on_peer_report(mut self, sink: impl Fn(&PeerReport) + Send + Sync + 'static) -> Self {
        self.sink = Arc::new(sink);
        self
    }

    /// The value of a classifier's result, after reporting what it noted or refused ([`PeerReport::unpack`]).
    pub fn noted<V>(
        &self,
        endpoint: &'static str,
        result: Result<(V, crate::error::PeerViolations), ResponseError>,
    ) -> Result<V, ResponseError> {
        PeerReport::unpack(endpoint, result, |r| self.report(r))
    }

    /// Reports `r` to the sink, unless this kind was reported before.
    pub fn report(&self, r: PeerReport) {
        let first = self.reported.lock().unwrap_or_else(|e| e.into_inner()).first(&r);
        if first {
            (self.sink)(&r);
        }
    }

    /// Sets the per-request timeout (real time); a request without an answer by then is a transport error.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// The clock.
    pub fn clock(&self) -> &C {
        &self.clock
    }

    /// The transport.
    pub fn transport(&self) -> &T {
        &self.transport
    }

    /// Sends one request with the per-request timeout.
    pub async fn send(&self, request: Request<Vec<u8>>) -> Result<Response<Vec<u8>>, TransportError> {
        match tokio::time::timeout(self.request_timeout, self.transport.send(request)).await {
            Ok(r) => r,
            Err(_) => Err(TransportError::new(TransportErrorKind::Timeout, "no answer within the request timeout")),
        }
    }

    /// `GET {discovery}/regions` and picks `region` (or the first), checking R-DISC-2.
    pub async fn discover(
        &self,
        discovery_base: &str,
        region: Option<&str>,
        policy: TransportPolicy,
    ) -> Result<Region, DriverError> {
        discovery::check_transport(discovery_base, policy)?;
        let resp = self.send(discovery::request(discovery_base)?).await?;
        let regions: discovery::Regions = crate::wire::classify_api(&resp)?;
        Ok(match region {
            Some(id) => regions.select(id, policy)?,
            None => regions.first(policy)?,
        })
    }

    /// Fetches and validates RFC 8414 metadata for `api` (R-META-1). After a `404` at
    /// `/.well-known/oauth-authorization-server` it reads `/.well-known/openid-configuration`, as RFC 8414 §5
    /// allows (reported as [`PeerViolation::MetadataAtOpenIdPath`]); the issuer check applies to either.
    pub async fn metadata(&self, api: &str, policy: TransportPolicy) -> Result<Endpoints, DriverError> {
        let mut resp = self.send(metadata::request(api)?).await?;
        if resp.status() == http::StatusCode::NOT_FOUND {
            let fallback = self.send(metadata::openid_configuration_request(api)?).await?;
            if fallback.status().is_success() {
                self.report(PeerReport::tolerated(metadata::ENDPOINT, PeerViolation::MetadataAtOpenIdPath));
                resp = fallback;
            }
        }
        let m: AuthorizationServerMetadata = crate::wire::classify_api(&resp).inspect_err(|e| {
            if let Some(r) = PeerReport::from_error(metadata::ENDPOINT, e) {
                self.report(r);
            }
        })?;
        let (endpoints, notes) = m.validate_noted(api, policy)?;
        for v in notes.iter() {
            self.report(PeerReport::tolerated(metadata::ENDPOINT, v));
        }
        Ok(endpoints)
    }

    /// Runs a device-grant poller to its end (desktop login, or any flow without a lifecycle). `device_token`
    /// is consulted for device-bound polls; a refused device token ends the loop only if `device_token` returns
    /// `None` (there is nobody to refresh it).
    pub async fn run_poller(
        &self,
        token_endpoint: &str,
        poller: &mut DevicePoller,
        mut device_token: impl FnMut() -> Option<AccessToken> + Send,
    ) -> Result<PollResult, DriverError> {
        loop {
            let now = self.clock.now();
            if poller.poll_transmit(now).is_some() {
                let token = device_token();
                let request = poller.request(token_endpoint, token.as_ref())?;
                match self.send(request).await {
                    Ok(resp) => poller.handle_response(self.clock.now(), &resp),
                    Err(_) => poller.handle_transport_error(self.clock.now()),
                }
            }
            while let Some(ev) = poller.poll_event() {
                match ev {
                    PollerEvent::NeedDeviceToken => {
                        if device_token().is_none() {
                            poller.cancel();
                        } else {
                            poller.handle_device_token(self.clock.now());
                        }
                    }
                    PollerEvent::Finished => {}
                    PollerEvent::PeerViolation(r) => self.report(r),
                }
            }
            if poller.is_finished() {
                return Ok(poller.take_result().unwrap_or(PollResult::Cancelled));
            }
            if let Some(deadline) = poller.poll_timeout() {
                self.clock.sleep_until(deadline).await;
            }
            poller.handle_timeout(self.clock.now());
        }
    }

    /// Drives the connection lifecycle until `done(connection, now)` holds, handing every event to `on_event`
    /// (show the QR, persist state). Starts a registration when unregistered. Returns the final state, or an
    /// error when the registration fails, the printer is disconnected (unless `done` accepts that), or
    /// `give_up_at` passes.
    ///
    /// A typical `done` for "registered and holding a device token": `|c, now| c.device_token(now).is_some()`.
    pub async fn run_lifecycle(
        &self,
        endpoints: &Endpoints,
        connection: &mut Connection,
        mut on_event: impl FnMut(&LifecycleEvent) + Send,
        done: impl Fn(&Connection, Instant) -> bool + Send,
        give_up_at: Option<Instant>,
    ) -> Result<ConnectionState, DriverError> {
        if connection.state() == ConnectionState::Unregistered && !done(connection, self.clock.now()) {
            connection.start_registration(self.clock.now());
        }
        loop {
            let now = self.clock.now();
            if let Some(tx) = connection.poll_transmit(now) {
                let request = tx.to_http(endpoints)?;
                match self.send(request).await {
                    Ok(resp) => connection.handle_response(self.clock.now(), &resp),
                    Err(_) => connection.handle_transport_error(self.clock.now()),
                }
            }
            while let Some(ev) = connection.poll_event() {
                if let LifecycleEvent::PeerViolation(r) = &ev {
                    self.report(*r);
                }
                on_event(&ev);
                match ev {
                    LifecycleEvent::RegistrationFailed(why) if connection.state() == ConnectionState::Unregistered => {
                        return Err(DriverError::RegistrationFailed(why));
                    }
                    LifecycleEvent::Disconnected(reason) if !done(connection, self.clock.now()) => {
                        return Err(DriverError::Disconnected(reason));
                    }
                    _ => {}
                }
            }
            let state = connection.state();
            if done(connection, self.clock.now()) {
                return Ok(state);
            }
            if give_up_at.is_some_and(|g| self.clock.now() >= g) {
                return Err(DriverError::GaveUp);
            }
            let wake = match (connection.poll_timeout(), give_up_at) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            match wake {
                Some(deadline) => self.clock.sleep_until(deadline).await,
                None => return Ok(state),
            }
            connection.handle_timeout(self.clock.now());
        }
    }
}
