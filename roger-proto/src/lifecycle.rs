//! The MFP connection lifecycle (PROTOCOL.md §5–7): unregistered → registering → connected → disconnected.
//!
//! Sans-IO, in the style of quinn-proto. The driver calls, in this order, whenever anything happens:
//!
//! 1. [`Connection::poll_transmit`] → send the returned request (build it with [`LifecycleTransmit::to_http`]);
//!    at most one request is in flight;
//! 2. [`Connection::handle_response`] / [`Connection::handle_transport_error`] with the outcome;
//! 3. [`Connection::poll_event`] until `None` (show the registration QR, persist state, report disconnection);
//! 4. sleep until [`Connection::poll_timeout`], then [`Connection::handle_timeout`] (spurious calls are no-ops).
//!
//! Rules:
//! * registration is the device grant of RFC 8628 (PROTOCOL.md §5), polled by [`DevicePoller`]; a lost success
//!   answer is re-polled with the same device code, which the server honours within 30 s (R-DEV-1);
//! * the registration QR is displayed only on the API origin (R-QR-4, with [`LifecycleConfig::api`] set): a
//!   `verification_uri_complete` elsewhere is replaced by the canonical `{api}/device?user_code=…` and reported as
//!   [`LifecycleEvent::PeerViolation`];
//! * the device access token is refreshed ahead of expiry, at the latest when 10% of its lifetime is left, and at
//!   once when someone reports it refused (R-TOK-1);
//! * every refresh rotates; only the newest refresh token is kept (R-TOK-2) and handed out for persistence as a
//!   [`PersistedConnection`] value the caller stores atomically;
//! * a lost refresh answer is retried with the same refresh token, which the server honours (R-TOK-3); transport
//!   errors and 5xx back off (doubling) and keep the tokens;
//! * `invalid_grant` on refresh (the 90-day sliding expiry passed, R-TOK-4, or the device was removed) →
//!   disconnected; a push `device.disconnected` is a doorbell (R-PUSH-1): it triggers an immediate refresh that
//!   confirms the disconnection over HTTPS;
//! * reconnecting from disconnected is a new registration (new `device_id`, R-TOK-4).

use std::time::{Duration, Instant};

use http::{Request, Response};
use serde::{Deserialize, Serialize};

use crate::device_authorization::{DeviceAuthorizationRequest, DeviceAuthorizationResponse};
use crate::error::{OAuthErrorCode, PeerReport, PeerViolation, ReportOnce, ResponseError};
use crate::metadata::Endpoints;
use crate::poller::{DevicePoller, PollResult, PollerConfig};
use crate::secret::{AccessToken, RefreshToken, VerificationUriComplete};
use crate::timing;
use crate::token::{TokenRequest, TokenResponse};

/// Base of the doubling backoff for registration-code and refresh retries (PROTOCOL.md §12).
const RETRY_BASE: Duration = Duration::from_secs(2);

/// Settings of the lifecycle.
#[derive(Debug, Clone, PartialEq)]
pub struct LifecycleConfig {
    /// `emb-<vendor>`.
    pub client_id: String,
    /// Printer model (shown to the admin, R-QR-2).
    pub device_model: String,
    /// Printer serial number.
    pub device_serial: String,
    /// Fraction of an access token's lifetime after which it is refreshed (R-TOK-1; clamped to 0.5–0.9).
    pub refresh_fraction: f64,
    /// Poll cadence during registration while push is healthy (≤ 30 s, PROTOCOL.md §8).
    pub push_relaxed_interval: Duration,
    /// The API origin (`https://host[:port]`, the metadata's issuer). With it the registration QR is checked
    /// against it before display (R-QR-4) and built from it when the server omits `verification_uri_complete`;
    /// without it the received payload is shown as is. The driver's `MfpClient::new` (feature `driver`) fills
    /// it from the endpoints when unset. Default `None`.
    pub api: Option<String>,
}

impl LifecycleConfig {
    /// Defaults for a printer: refresh at 80% of the lifetime.
    pub fn new(client_id: &str, device_model: &str, device_serial: &str) -> Self {
        Self {
            client_id: client_id.into(),
            device_model: device_model.into(),
            device_serial: device_serial.into(),
            refresh_fraction: 0.8,
            push_relaxed_interval: timing::MAX_PUSH_RELAXED_INTERVAL,
            api: None,
        }
    }

    /// The same settings with the API origin to check registration QRs against (R-QR-4).
    pub fn with_api(mut self, api: impl Into<String>) -> Self {
        self.api = Some(api.into());
        self
    }
}

/// What the caller persists (atomically: write, fsync, rename). Holds no user secret, only the device's own
/// newest refresh token (R-TOK-2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum PersistedConnection {
    /// A registered printer.
    Connected {
        /// The `device_id` from registration.
        device_id: String,
        /// The tenant.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        tenant_id: Option<String>,
        /// The newest refresh token.
        refresh_token: RefreshToken,
    },
    /// The printer was disconnected from its tenant (R-TOK-4); reconnecting is a new registration.
    Disconnected {
        /// The former `device_id`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        device_id: Option<String>,
        /// Why.
        reason: DisconnectReason,
    },
}

/// Why the printer is disconnected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum DisconnectReason {
    /// The refresh token was refused with `invalid_grant` (90 days unused, R-TOK-4, or revoked).
    RefreshTokenDead,
    /// The server confirmed a `device.disconnected` push (an admin removed the printer).
    Removed,
}

/// The externally visible state (PROTOCOL.md §5–7, the shim's `panel` states).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionState {
    /// No registration.
    Unregistered,
    /// A registration code is being requested or shown and polled.
    Registering,
    /// Registered, with a refresh token.
    Connected,
    /// Cut from the tenant; no user login until reconnected.
    Disconnected,
}

/// Why a registration attempt ended without a device.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RegistrationFailure {
    /// The admin denied it (`access_denied`).
    Denied,
    /// The code expired before approval.
    Expired,
    /// `invalid_grant` or another definite error.
    Refused(Option<OAuthErrorCode>),
    /// The server's success answer lacked the refresh token or device id (RFC 8628 §3.5 / PROTOCOL.md §5.4).
    IncompleteGrant,
}

/// What the lifecycle tells its driver.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum LifecycleEvent {
    /// Show the registration QR and, beside it, the user code (R-QR-1).
    ShowRegistration {
        /// The QR payload; `None` when the server sent no `verification_uri_complete` (RFC 8628 §3.2 makes it
        /// OPTIONAL): then show `verification_uri` and the code for manual entry, and no QR (docs/protocol.md §7).
        verification_uri_complete: Option<VerificationUriComplete>,
        /// The verification page to show in text beside or instead of the QR; `None` when the server named one on
        /// another origin than the API (R-QR-4, docs/protocol.md §7): then only the code is shown.
        verification_uri: Option<String>,
        /// The code as a person reads it: `XXXX-XXXX` for a Roger code in any spelling, another server's code
        /// verbatim ([`crate::user_code::format_for_display`]).
        user_code_display: String,
        /// The non-secret request id (for push `code.approved`).
        request_id: Option<String>,
        /// When the code expires.
        expires_at: Instant,
    },
    /// Registration ended without a device; the lifecycle is back to unregistered.
    RegistrationFailed(RegistrationFailure),
    /// Registered.
    Registered {
        /// The new device id.
        device_id: String,
        /// The tenant.
        tenant_id: Option<String>,
    },
    /// Store this value atomically, replacing the previous one.
    Persist(PersistedConnection),
    /// A fresh device access token is available (retry what was refused with it).
    DeviceTokenRefreshed,
    /// The printer is disconnected (R-TOK-4).
    Disconnected(DisconnectReason),
    /// An answer deviated from the RFCs or from Roger's profile, and the lifecycle read past it or refused it
    /// (docs/protocol.md §7): a Roger code in another spelling, a foreign code, `verification_url`, a string
    /// `expires_in`, no `verification_uri_complete`, a refresh without rotation, a malformed answer (refused and
    /// retried), or [`PeerViolation::ForeignQrOrigin`] (R-QR-4: the [`LifecycleEvent::ShowRegistration`] that
    /// follows carries the canonical URI instead). Each kind is reported once per connection: log it at warn level
    /// (it names the endpoint and the rule, never a value), so a vendor whose printer does not register sees why.
    PeerViolation(PeerReport),
}

/// A request the lifecycle wants sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LifecycleTransmit {
    /// `POST /oauth/device_authorization` for a registration code (PROTOCOL.md §5.1).
    RegistrationCode(DeviceAuthorizationRequest),
    /// A registration poll (RFC 8628 §3.4).
    RegistrationPoll(TokenRequest),
    /// A refresh (RFC 6749 §6).
    Refresh(TokenRequest),
}

impl LifecycleTransmit {
    /// Builds the HTTP request (none of these is device-bound).
    pub fn to_http(&self, endpoints: &Endpoints) -> Result<Request<Vec<u8>>, http::Error> {
        match self {
            Self::RegistrationCode(r) => r.to_http(&endpoints.device_authorization, None),
            Self::RegistrationPoll(t) | Self::Refresh(t) => t.to_http(&endpoints.token, None),
        }
    }
}

#[derive(Debug)]
enum Registering {
    /// Asking for a code; `next_at` is when the (re)try may go.
    Requesting { next_at: Instant, failures: u32 },
    /// Code shown, polling.
    Polling(Box<DevicePoller>),
}

#[derive(Debug)]
struct Connected {
    device_id: String,
    tenant_id: Option<String>,
    refresh_token: RefreshToken,
    access: Option<(AccessToken, Instant)>,
    refresh_at: Instant,
    failures: u32,
    /// A `device.disconnected` push is being confirmed.
    confirming_removal: bool,
    /// The server's last `Retry-After` ends here: even an urgent refresh waits for it (PROTOCOL.md §12).
    not_before: Instant,
}

#[derive(Debug)]
enum Inner {
    Unregistered,
    Registering(Registering),
    Connected(Connected),
    Disconnected { device_id: Option<String>, reason: DisconnectReason },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum InFlight {
    None,
    Code,
    Poll,
    Refresh,
}

/// The MFP connection lifecycle (see the module documentation).
#[derive(Debug)]
pub struct Connection {
    config: LifecycleConfig,
    inner: Inner,
    in_flight: InFlight,
    push_healthy: bool,
    events: std::collections::VecDeque<LifecycleEvent>,
    reported: ReportOnce,
}

impl Connection {
    /// A printer that has never registered.
    pub fn new(config: LifecycleConfig) -> Self {
        Self {
            config,
            inner: Inner::Unregistered,
            in_flight: InFlight::None,
            push_healthy: false,
            events: Default::default(),
            reported: ReportOnce::default(),
        }
    }

    /// A printer restarted from persisted state (as after a power cycle). A connected printer refreshes at once
    /// to obtain an access token (the access token is not persisted).
    pub fn restore(config: LifecycleConfig, persisted: PersistedConnection, now: Instant) -> Self {
        let inner = match persisted {
            PersistedConnection::Connected { device_id, tenant_id, refresh_token } => Inner::Connected(Connected {
                device_id,
                tenant_id,
                refresh_token,
                access: None,
                refresh_at: now,
                failures: 0,
                confirming_removal: false,
                not_before: now,
            }),
            PersistedConnection::Disconnected { device_id, reason } => Inner::Disconnected { device_id, reason },
        };
        Self { inner, ..Self::new(config) }
    }

    /// The visible state.
    pub fn state(&self) -> ConnectionState {
        match self.inner {
            Inner::Unregistered => ConnectionState::Unregistered,
            Inner::Registering(_) => ConnectionState::Registering,
            Inner::Connected(_) => ConnectionState::Connected,
            Inner::Disconnected { .. } => ConnectionState::Disconnected,
        }
    }

    /// The registered device id.
    pub fn device_id(&self) -> Option<&str> {
        match &self.inner {
            Inner::Connected(c) => Some(&c.device_id),
            Inner::Disconnected { device_id, .. } => device_id.as_deref(),
            _ => None,
        }
    }

    /// The client id.
    pub fn client_id(&self) -> &str {
        &self.config.client_id
    }

    /// The settings.
    pub fn config(&self) -> &LifecycleConfig {
        &self.config
    }

    /// Sets the API origin registration QRs are checked against (R-QR-4) when the configuration has none
    /// ([`LifecycleConfig::api`]; a driver calls it with the metadata's issuer once discovery is done).
    pub fn set_api_if_unset(&mut self, api: &str) {
        if self.config.api.is_none() {
            self.config.api = Some(api.to_owned());
        }
    }

    /// The device access token, if one is held and unexpired at `now` (for device-bound authentication, §7).
    pub fn device_token(&self, now: Instant) -> Option<&AccessToken> {
        match &self.inner {
            Inner::Connected(Connected { access: Some((t, exp)), .. }) if now < *exp => Some(t),
            _ => None,
        }
    }

    /// The current refresh token (for inspection and tests; it is persisted through [`LifecycleEvent::Persist`]).
    pub fn refresh_token(&self) -> Option<&RefreshToken> {
        match &self.inner {
            Inner::Connected(c) => Some(&c.refresh_token),
            _ => None,
        }
    }

    /// The value to persist now (the same as the last [`LifecycleEvent::Persist`]); `None` when unregistered.
    pub fn persisted(&self) -> Option<PersistedConnection> {
        match &self.inner {
            Inner::Connected(c) => Some(PersistedConnection::Connected {
                device_id: c.device_id.clone(),
                tenant_id: c.tenant_id.clone(),
                refresh_token: c.refresh_token.clone(),
            }),
            Inner::Disconnected { device_id, reason } => {
                Some(PersistedConnection::Disconnected { device_id: device_id.clone(), reason: *reason })
            }
            _ => None,
        }
    }

    /// Starts a registration (from unregistered, or a reconnect from disconnected: a new device, R-TOK-4).
    /// Ignored while registering or connected.
    pub fn start_registration(&mut self, now: Instant) {
        if matches!(self.inner, Inner::Unregistered | Inner::Disconnected { .. }) {
            self.inner = Inner::Registering(Registering::Requesting { next_at: now, failures: 0 });
            self.in_flight = InFlight::None;
        }
    }

    /// Someone's request was refused with `401 invalid_token` / device-bound `invalid_client`: refresh now
    /// (R-TOK-1). Coalesced: a refresh already in flight or due covers it.
    pub fn request_fresh_device_token(&mut self, now: Instant) {
        if let Inner::Connected(c) = &mut self.inner {
            c.access = None;
            if self.in_flight != InFlight::Refresh {
                // R-TOK-1 asks for a refresh now, but a server that said `Retry-After` is not asked earlier.
                c.refresh_at = c.refresh_at.min(now.max(c.not_before));
                c.failures = 0;
            }
        }
    }

    /// Push `device.disconnected` (a doorbell, R-PUSH-1): confirm over HTTPS with an immediate refresh; the
    /// server's `invalid_grant` then disconnects the printer.
    pub fn handle_disconnected_push(&mut self, now: Instant) {
        if let Inner::Connected(c) = &mut self.inner {
            c.confirming_removal = true;
        }
        self.request_fresh_device_token(now);
    }

    /// Push `code.approved`/`code.denied` for the registration's `request_id` (PROTOCOL.md §8).
    pub fn handle_doorbell(&mut self, now: Instant) {
        if let Inner::Registering(Registering::Polling(p)) = &mut self.inner {
            p.handle_doorbell(now);
        }
    }

    /// Push connection health (relaxes registration polling, PROTOCOL.md §8).
    pub fn set_push_healthy(&mut self, healthy: bool) {
        self.push_healthy = healthy;
        if let Inner::Registering(Registering::Polling(p)) = &mut self.inner {
            p.set_push_healthy(healthy);
        }
    }

    /// When to call [`Connection::handle_timeout`].
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.in_flight != InFlight::None {
            return match &self.inner {
                Inner::Registering(Registering::Polling(p)) => p.poll_timeout(),
                _ => None,
            };
        }
        match &self.inner {
            Inner::Registering(Registering::Requesting { next_at, .. }) => Some(*next_at),
            Inner::Registering(Registering::Polling(p)) => p.poll_timeout(),
            Inner::Connected(c) => Some(c.refresh_at),
            Inner::Unregistered | Inner::Disconnected { .. } => None,
        }
    }

    /// Timer expiry (no-op when nothing is due).
    pub fn handle_timeout(&mut self, now: Instant) {
        if let Inner::Registering(Registering::Polling(p)) = &mut self.inner {
            p.handle_timeout(now);
            self.drain_poller(now);
        }
    }

    /// The next request to send, if one is due at `now`.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<LifecycleTransmit> {
        self.handle_timeout(now);
        if self.in_flight != InFlight::None {
            return None;
        }
        match &mut self.inner {
            Inner::Registering(Registering::Requesting { next_at, .. }) if now >= *next_at => {
                self.in_flight = InFlight::Code;
                Some(LifecycleTransmit::RegistrationCode(DeviceAuthorizationRequest::registration(
                    &self.config.client_id,
                    &self.config.device_model,
                    &self.config.device_serial,
                )))
            }
            Inner::Registering(Registering::Polling(p)) => {
                p.poll_transmit(now)?;
                self.in_flight = InFlight::Poll;
                Some(LifecycleTransmit::RegistrationPoll(p.token_request()))
            }
            Inner::Connected(c) if now >= c.refresh_at => {
                self.in_flight = InFlight::Refresh;
                Some(LifecycleTransmit::Refresh(TokenRequest::RefreshToken {
                    refresh_token: c.refresh_token.clone(),
                    scope: None,
                    client_id: self.config.client_id.clone(),
                }))
            }
            _ => None,
        }
    }

    /// The answer to the request in flight. Answers with nothing in flight are ignored.
    pub fn handle_response(&mut self, now: Instant, response: &Response<Vec<u8>>) {
        match self.in_flight {
            InFlight::None => {}
            InFlight::Code => {
                let result = crate::device_authorization::classify_noted(response);
                let result = PeerReport::unpack(crate::device_authorization::ENDPOINT, result, |r| self.report(r));
                self.on_code(now, result)
            }
            InFlight::Poll => {
                self.in_flight = InFlight::None;
                if let Inner::Registering(Registering::Polling(p)) = &mut self.inner {
                    p.handle_response(now, response);
                }
                self.drain_poller(now);
            }
            InFlight::Refresh => {
                let result = crate::token::classify_noted(response);
                let result = PeerReport::unpack(crate::token::ENDPOINT, result, |r| self.report(r));
                if matches!(&result, Ok(t) if t.refresh_token.is_none()) {
                    self.report(PeerReport::tolerated(crate::token::ENDPOINT, PeerViolation::RefreshNotRotated));
                }
                self.on_refresh(now, result)
            }
        }
    }

    fn report(&mut self, r: PeerReport) {
        if self.reported.first(&r) {
            self.events.push_back(LifecycleEvent::PeerViolation(r));
        }
    }

    /// The request in flight failed at the transport (refused, reset, timed out, answer lost): back off, keep
    /// every token, retry the same request (R-DEV-1, R-TOK-3).
    pub fn handle_transport_error(&mut self, now: Instant) {
        match std::mem::replace(&mut self.in_flight, InFlight::None) {
            InFlight::None => {}
            InFlight::Code => self.code_retry(now, None),
            InFlight::Poll => {
                if let Inner::Registering(Registering::Polling(p)) = &mut self.inner {
                    p.handle_transport_error(now);
                }
                self.drain_poller(now);
            }
            InFlight::Refresh => self.refresh_retry(now, None),
        }
    }

    /// The next event for the driver.
    pub fn poll_event(&mut self) -> Option<LifecycleEvent> {
        self.events.pop_front()
    }

    fn on_code(&mut self, now: Instant, result: Result<DeviceAuthorizationResponse, ResponseError>) {
        self.in_flight = InFlight::None;
        if !matches!(self.inner, Inner::Registering(Registering::Requesting { .. })) {
            return;
        }
        match result {
            Ok(auth) => {
                let mut poller = DevicePoller::new(
                    now,
                    &auth,
                    &self.config.client_id,
                    PollerConfig { push_relaxed_interval: self.config.push_relaxed_interval, device_bound: false },
                );
                poller.set_push_healthy(self.push_healthy);
                let (payload, page) = match &self.config.api {
                    // R-QR-4: a payload or page on another origin (or for another code) is never displayed.
                    Some(api) => {
                        let shown = crate::qr::displayable(
                            auth.verification_uri_complete.as_ref(),
                            &auth.verification_uri,
                            api,
                            &auth.user_code,
                        );
                        if shown.refused.is_some() {
                            self.report(PeerReport::refused(
                                crate::device_authorization::ENDPOINT,
                                PeerViolation::ForeignQrOrigin,
                            ));
                        }
                        (shown.qr, shown.page)
                    }
                    None => (auth.verification_uri_complete.clone(), Some(auth.verification_uri.clone())),
                };
                self.events.push_back(LifecycleEvent::ShowRegistration {
                    verification_uri_complete: payload,
                    verification_uri: page,
                    user_code_display: auth.user_code.display().to_string(),
                    request_id: auth.request_id.clone(),
                    expires_at: poller.expires_at(),
                });
                self.inner = Inner::Registering(Registering::Polling(Box::new(poller)));
            }
            Err(e) if e.is_retryable() || matches!(e, ResponseError::Malformed { .. }) => {
                self.code_retry(now, e.retry_after())
            }
            Err(e) => {
                self.inner = Inner::Unregistered;
                self.events.push_back(LifecycleEvent::RegistrationFailed(RegistrationFailure::Refused(
                    e.oauth_code().cloned(),
                )));
            }
        }
    }

    fn code_retry(&mut self, now: Instant, retry_after: Option<Duration>) {
        if let Inner::Registering(Registering::Requesting { next_at, failures }) = &mut self.inner {
            *failures = failures.saturating_add(1);
            *next_at = now + timing::wait_with_retry_after(timing::backoff_wait(RETRY_BASE, *failures), retry_after);
        }
    }

    fn drain_poller(&mut self, now: Instant) {
        let Inner::Registering(Registering::Polling(p)) = &mut self.inner else { return };
        let mut reports = Vec::new();
        while let Some(ev) = p.poll_event() {
            if let crate::poller::PollerEvent::PeerViolation(r) = ev {
                reports.push(r);
            }
        }
        let result = p.take_result();
        for r in reports {
            self.report(r);
        }
        let Some(result) = result else { return };
        match result {
            PollResult::Granted(t) => {
                if crate::token::scope_narrowed(crate::token::scope::DEVICE, t.scope.as_deref()) {
                    self.report(PeerReport::tolerated(crate::token::ENDPOINT, PeerViolation::ScopeNarrowed));
                }
                self.on_registered(now, *t)
            }
            PollResult::Expired => {
                // The code died unapproved: show a fresh one (the printer keeps asking to be registered).
                self.events.push_back(LifecycleEvent::RegistrationFailed(RegistrationFailure::Expired));
                self.inner = Inner::Registering(Registering::Requesting { next_at: now, failures: 0 });
            }
            PollResult::Denied => self.registration_failed(RegistrationFailure::Denied),
            PollResult::InvalidGrant => {
                self.registration_failed(RegistrationFailure::Refused(Some(OAuthErrorCode::InvalidGrant)))
            }
            PollResult::Failed(e) => self.registration_failed(RegistrationFailure::Refused(e.oauth_code().cloned())),
            PollResult::ClientRejected => {
                self.registration_failed(RegistrationFailure::Refused(Some(OAuthErrorCode::InvalidClient)))
            }
            PollResult::Cancelled => self.inner = Inner::Unregistered,
        }
    }

    fn registration_failed(&mut self, why: RegistrationFailure) {
        self.inner = Inner::Unregistered;
        self.events.push_back(LifecycleEvent::RegistrationFailed(why));
    }

    fn on_registered(&mut self, now: Instant, t: TokenResponse) {
        let (Some(refresh_token), Some(device_id)) = (t.refresh_token, t.device_id) else {
            return self.registration_failed(RegistrationFailure::IncompleteGrant);
        };
        let lifetime = timing::lifetime(t.expires_in);
        let c = Connected {
            device_id: device_id.clone(),
            tenant_id: t.tenant_id.clone(),
            refresh_token,
            access: Some((t.access_token, now + lifetime)),
            refresh_at: now + timing::refresh_after(lifetime, self.config.refresh_fraction),
            failures: 0,
            confirming_removal: false,
            not_before: now,
        };
        self.inner = Inner::Connected(c);
        self.events.push_back(LifecycleEvent::Registered { device_id, tenant_id: t.tenant_id });
        self.push_persist();
        self.events.push_back(LifecycleEvent::DeviceTokenRefreshed);
    }

    fn on_refresh(&mut self, now: Instant, result: Result<TokenResponse, ResponseError>) {
        self.in_flight = InFlight::None;
        let Inner::Connected(c) = &mut self.inner else { return };
        match result {
            Ok(t) => {
                let lifetime = timing::lifetime(t.expires_in);
                if let Some(rt) = t.refresh_token {
                    // R-TOK-2: keep only the newest.
                    c.refresh_token = rt;
                }
                c.access = Some((t.access_token, now + lifetime));
                c.refresh_at = now + timing::refresh_after(lifetime, self.config.refresh_fraction);
                c.failures = 0;
                c.confirming_removal = false;
                self.push_persist();
                self.events.push_back(LifecycleEvent::DeviceTokenRefreshed);
            }
            Err(e) if e.oauth_code() == Some(&OAuthErrorCode::InvalidGrant) => {
                let reason =
                    if c.confirming_removal { DisconnectReason::Removed } else { DisconnectReason::RefreshTokenDead };
                self.inner = Inner::Disconnected { device_id: Some(c.device_id.clone()), reason };
                self.push_persist();
                self.events.push_back(LifecycleEvent::Disconnected(reason));
            }
            // Transport trouble, 5xx, 429, or an answer we cannot read: keep the tokens, back off, retry with the
            // same refresh token (R-TOK-3). Only `invalid_grant` is a verdict on the token.
            Err(e) => {
                let ra = e.retry_after();
                self.refresh_retry(now, ra)
            }
        }
    }

    fn refresh_retry(&mut self, now: Instant, retry_after: Option<Duration>) {
        if let Inner::Connected(c) = &mut self.inner {
            c.failures = c.failures.saturating_add(1);
            c.refresh_at =
                now + timing::wait_with_retry_after(timing::backoff_wait(RETRY_BASE, c.failures), retry_after);
            c.not_before = now + retry_after.unwrap_or_default();
        }
    }

    fn push_persist(&mut self) {
        if let Some(p) = self.persisted() {
            self.events.push_back(LifecycleEvent::Persist(p));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    fn resp(status: u16, body: &str) -> Response<Vec<u8>> {
        // Credential answers carry no-store (R-SEC-1); its absence would be reported (docs/protocol.md §7).
        Response::builder()
            .status(status)
            .header(http::header::CACHE_CONTROL, "no-store")
            .body(body.as_bytes().to_vec())
            .unwrap()
    }

    fn code_answer() -> Response<Vec<u8>> {
        resp(
            200,
            r#"{"device_code":"dc1","user_code":"WDJBMJHT","verification_uri":"https://a/device",
               "verification_uri_complete":"https://a/device?user_code=WDJBMJHT","expires_in":600,"interval":5,"request_id":"r1"}"#,
        )
    }

    fn token_answer(at: &str, rt: &str, lifetime: u64) -> Response<Vec<u8>> {
        resp(
            200,
            &format!(
                r#"{{"access_token":"{at}","token_type":"Bearer","expires_in":{lifetime},"refresh_token":"{rt}","scope":"roger.device","device_id":"dev1","tenant_id":"acme"}}"#
            ),
        )
    }

    fn drain(c: &mut Connection) -> Vec<LifecycleEvent> {
        std::iter::from_fn(|| c.poll_event()).collect()
    }

    /// Registers a connection and returns it with the time of registration.
    fn registered(t0: Instant) -> (Connection, Instant) {
        let mut c = Connection::new(LifecycleConfig::new("emb-acme", "MX-1", "SN1"));
        c.start_registration(t0);
        assert!(matches!(c.poll_transmit(t0), Some(LifecycleTransmit::RegistrationCode(_))));
        c.handle_response(t0, &code_answer());
        let ev = drain(&mut c);
        assert!(
            matches!(&ev[0], LifecycleEvent::ShowRegistration { user_code_display, .. } if user_code_display == "WDJB-MJHT")
        );
        let t1 = t0 + s(5);
        assert!(matches!(c.poll_transmit(t1), Some(LifecycleTransmit::RegistrationPoll(_))));
        c.handle_response(t1, &token_answer("at1", "rt1", 100));
        (c, t1)
    }

    /// The registration QR a connection with API origin `https://a` shows for a code answer whose
    /// `verification_uri_complete` is `vuc` (absent: `None`), and the events before it.
    fn shown_registration(api: Option<&str>, vuc: Option<&str>) -> (Vec<LifecycleEvent>, Option<String>) {
        let t0 = Instant::now();
        let mut config = LifecycleConfig::new("emb-acme", "MX-1", "SN1");
        if let Some(api) = api {
            config = config.with_api(api);
        }
        let mut c = Connection::new(config);
        c.start_registration(t0);
        assert!(matches!(c.poll_transmit(t0), Some(LifecycleTransmit::RegistrationCode(_))));
        let vuc = vuc.map(|v| format!(r#","verification_uri_complete":"{v}""#)).unwrap_or_default();
        let body = format!(
            r#"{{"device_code":"dc1","user_code":"WDJBMJHT","verification_uri":"https://a/device"{vuc},"expires_in":600,"interval":5,"request_id":"r1"}}"#
        );
        c.handle_response(t0, &resp(200, &body));
        let mut ev = drain(&mut c);
        let Some(LifecycleEvent::ShowRegistration { verification_uri_complete, user_code_display, .. }) = ev.pop()
        else {
            panic!("{ev:?}")
        };
        assert_eq!(user_code_display, "WDJB-MJHT", "R-QR-1: the user code beside the QR is unchanged");
        assert_eq!(c.state(), ConnectionState::Registering, "the code itself is still polled");
        (ev, verification_uri_complete.map(|v| v.secret().to_owned()))
    }

    /// R-QR-4 (MFP side, RFC 8628 §5.4): with the API origin known, a registration QR on another origin (or for
    /// another code) is not displayed; the canonical `{api}/device?user_code=…` is, and the violation is reported.
    #[test]
    fn foreign_registration_qr_is_not_displayed() {
        let own = "https://a/device?user_code=WDJBMJHT";
        let endpoint = crate::device_authorization::ENDPOINT;
        let violation =
            vec![LifecycleEvent::PeerViolation(PeerReport::refused(endpoint, PeerViolation::ForeignQrOrigin))];
        let shown = Some(own.to_owned());
        assert_eq!(shown_registration(Some("https://a"), Some(own)), (vec![], shown.clone()));
        // No payload (RFC 8628 §3.2 OPTIONAL): no QR, reported (docs/protocol.md §7).
        let missing = vec![LifecycleEvent::PeerViolation(PeerReport::tolerated(
            endpoint,
            PeerViolation::MissingVerificationUriComplete,
        ))];
        assert_eq!(shown_registration(Some("https://a"), None), (missing.clone(), None));
        assert_eq!(shown_registration(None, None), (missing, None));
        for bad in [
            "https://phish.example/device?user_code=WDJBMJHT",
            "https://a:8443/device?user_code=WDJBMJHT",
            "https://a/device?user_code=BBBBBBBB",
            "https://a/elsewhere?user_code=WDJBMJHT",
        ] {
            assert_eq!(shown_registration(Some("https://a"), Some(bad)), (violation.clone(), shown.clone()), "{bad}");
        }
        // Without an API origin there is nothing to compare with: the payload is shown as received.
        let phish = "https://phish.example/device?user_code=WDJBMJHT";
        assert_eq!(shown_registration(None, Some(phish)), (vec![], Some(phish.to_owned())));
        assert_eq!(LifecycleConfig::new("emb-acme", "MX-1", "SN1").api, None);
    }

    /// PROTOCOL.md §5: unregistered → registering → connected, with the state to persist.
    #[test]
    fn registration_flow() {
        let t0 = Instant::now();
        let (mut c, t1) = registered(t0);
        assert_eq!(c.state(), ConnectionState::Connected);
        let ev = drain(&mut c);
        assert!(ev.contains(&LifecycleEvent::Registered { device_id: "dev1".into(), tenant_id: Some("acme".into()) }));
        assert!(ev.iter().any(|e| matches!(e, LifecycleEvent::Persist(PersistedConnection::Connected { refresh_token, .. }) if refresh_token.secret() == "rt1")));
        assert_eq!(c.device_token(t1).map(|t| t.secret()), Some("at1"));
        assert_eq!(c.device_token(t1 + s(100)), None, "expired access tokens are not handed out");
    }

    /// R-TOK-1 refresh ahead (80% of 100 s) and R-TOK-2 keep the newest refresh token.
    #[test]
    fn refresh_ahead_and_rotation() {
        let t0 = Instant::now();
        let (mut c, t1) = registered(t0);
        drain(&mut c);
        assert_eq!(c.poll_timeout(), Some(t1 + s(80)));
        assert!(c.poll_transmit(t1 + s(79)).is_none());
        match c.poll_transmit(t1 + s(80)) {
            Some(LifecycleTransmit::Refresh(TokenRequest::RefreshToken { refresh_token, .. })) => {
                assert_eq!(refresh_token.secret(), "rt1")
            }
            other => panic!("{other:?}"),
        }
        c.handle_response(t1 + s(80), &token_answer("at2", "rt2", 100));
        assert_eq!(c.refresh_token().unwrap().secret(), "rt2");
        let ev = drain(&mut c);
        assert!(ev.contains(&LifecycleEvent::DeviceTokenRefreshed));
    }

    /// docs/protocol.md §7: a refresh answer without a new refresh token (RFC 6749 §6 "MAY"; Google, Auth0 without
    /// rotation) keeps the one the printer has, and is reported once; a string `expires_in` is read and reported.
    #[test]
    fn refresh_without_rotation_keeps_the_token() {
        let t0 = Instant::now();
        let (mut c, t1) = registered(t0);
        drain(&mut c);
        let unrotated = r#"{"access_token":"at2","token_type":"bearer","expires_in":"100","scope":"roger.device"}"#;
        for n in 1..=2 {
            let t = t1 + s(80 * n);
            assert!(matches!(c.poll_transmit(t), Some(LifecycleTransmit::Refresh(_))));
            c.handle_response(t, &resp(200, unrotated));
            assert_eq!(c.refresh_token().unwrap().secret(), "rt1", "the only refresh token it has");
            assert_eq!(c.device_token(t).map(|x| x.secret()), Some("at2"));
            let reports: Vec<PeerViolation> = drain(&mut c)
                .into_iter()
                .filter_map(|e| match e {
                    LifecycleEvent::PeerViolation(r) => Some(r.violation),
                    _ => None,
                })
                .collect();
            if n == 1 {
                assert_eq!(reports, [PeerViolation::ExpiresInAsString, PeerViolation::RefreshNotRotated]);
            } else {
                assert_eq!(reports, [], "each kind once per connection");
            }
        }
    }

    /// R-TOK-3: a lost refresh answer is retried with the same refresh token, after a backoff; tokens kept.
    #[test]
    fn lost_refresh_answer_retries_same_token() {
        let t0 = Instant::now();
        let (mut c, t1) = registered(t0);
        drain(&mut c);
        let t = t1 + s(80);
        c.poll_transmit(t).unwrap();
        c.handle_transport_error(t);
        assert_eq!(c.state(), ConnectionState::Connected);
        assert_eq!(c.poll_timeout(), Some(t + s(4)));
        c.handle_response(t + s(1), &resp(503, "<html>"));
        match c.poll_transmit(t + s(4)) {
            Some(LifecycleTransmit::Refresh(TokenRequest::RefreshToken { refresh_token, .. })) => {
                assert_eq!(refresh_token.secret(), "rt1")
            }
            other => panic!("{other:?}"),
        }
        c.handle_response(t + s(4), &resp(502, "<html>bad gateway</html>"));
        assert_eq!(c.poll_timeout(), Some(t + s(4) + s(8)), "5xx doubles the wait");
        assert_eq!(c.device_token(t + s(5)).map(|x| x.secret()), Some("at1"), "the access token is kept");
    }

    /// R-TOK-4: invalid_grant on refresh → disconnected, persisted; reconnect is a new registration.
    #[test]
    fn invalid_grant_disconnects() {
        let t0 = Instant::now();
        let (mut c, t1) = registered(t0);
        drain(&mut c);
        let t = t1 + s(80);
        c.poll_transmit(t).unwrap();
        c.handle_response(t, &resp(400, r#"{"error":"invalid_grant"}"#));
        assert_eq!(c.state(), ConnectionState::Disconnected);
        let ev = drain(&mut c);
        assert!(ev.contains(&LifecycleEvent::Disconnected(DisconnectReason::RefreshTokenDead)));
        assert!(ev.iter().any(|e| matches!(e, LifecycleEvent::Persist(PersistedConnection::Disconnected { .. }))));
        assert_eq!(c.poll_timeout(), None);
        assert!(c.poll_transmit(t + s(1000)).is_none(), "no request after a terminal state");
        c.start_registration(t + s(1000));
        assert!(matches!(c.poll_transmit(t + s(1000)), Some(LifecycleTransmit::RegistrationCode(_))));
    }

    /// R-PUSH-1: device.disconnected is confirmed over HTTPS before disconnecting.
    #[test]
    fn disconnected_push_is_confirmed() {
        let t0 = Instant::now();
        let (mut c, t1) = registered(t0);
        drain(&mut c);
        let t = t1 + s(10);
        c.handle_disconnected_push(t);
        assert_eq!(c.state(), ConnectionState::Connected);
        assert!(matches!(c.poll_transmit(t), Some(LifecycleTransmit::Refresh(_))));
        c.handle_response(t, &resp(400, r#"{"error":"invalid_grant"}"#));
        assert!(drain(&mut c).contains(&LifecycleEvent::Disconnected(DisconnectReason::Removed)));
    }

    /// R-TOK-1: a refused device token triggers an immediate refresh.
    #[test]
    fn refused_token_refreshes_now() {
        let t0 = Instant::now();
        let (mut c, t1) = registered(t0);
        drain(&mut c);
        let t = t1 + s(10);
        c.request_fresh_device_token(t);
        assert_eq!(c.device_token(t), None);
        assert!(matches!(c.poll_transmit(t), Some(LifecycleTransmit::Refresh(_))));
    }

    /// PROTOCOL.md §12: a refused-token report does not jump over the server's Retry-After.
    #[test]
    fn urgent_refresh_respects_retry_after() {
        let t0 = Instant::now();
        let (mut c, t1) = registered(t0);
        drain(&mut c);
        let t = t1 + s(80);
        c.poll_transmit(t).unwrap();
        let limited = Response::builder().status(429).header("retry-after", "120").body(Vec::new()).unwrap();
        c.handle_response(t, &limited);
        c.request_fresh_device_token(t + s(1));
        assert!(c.poll_transmit(t + s(60)).is_none());
        assert!(matches!(c.poll_transmit(t + s(120)), Some(LifecycleTransmit::Refresh(_))));
    }

    /// RFC 6749 §5.2: a registration poll answered 401 invalid_client ends the attempt (it is not device-bound).
    #[test]
    fn registration_poll_invalid_client_fails() {
        let t0 = Instant::now();
        let mut c = Connection::new(LifecycleConfig::new("emb-acme", "MX-1", "SN1"));
        c.start_registration(t0);
        c.poll_transmit(t0).unwrap();
        c.handle_response(t0, &code_answer());
        c.poll_transmit(t0 + s(5)).unwrap();
        c.handle_response(t0 + s(5), &resp(401, r#"{"error":"invalid_client"}"#));
        assert_eq!(c.state(), ConnectionState::Unregistered);
        assert!(drain(&mut c).contains(&LifecycleEvent::RegistrationFailed(RegistrationFailure::Refused(Some(
            OAuthErrorCode::InvalidClient
        )))));
    }

    /// R-DEV-1: a lost registration answer is re-polled with the same device code.
    #[test]
    fn lost_registration_answer_repolls() {
        let t0 = Instant::now();
        let mut c = Connection::new(LifecycleConfig::new("emb-acme", "MX-1", "SN1"));
        c.start_registration(t0);
        c.poll_transmit(t0).unwrap();
        c.handle_response(t0, &code_answer());
        drain(&mut c);
        c.poll_transmit(t0 + s(5)).unwrap();
        c.handle_transport_error(t0 + s(5));
        assert_eq!(c.poll_timeout(), Some(t0 + s(15)));
        match c.poll_transmit(t0 + s(15)) {
            Some(LifecycleTransmit::RegistrationPoll(TokenRequest::DeviceCode { device_code, .. })) => {
                assert_eq!(device_code.secret(), "dc1")
            }
            other => panic!("{other:?}"),
        }
        c.handle_response(t0 + s(15), &token_answer("at", "rt", 1200));
        assert_eq!(c.state(), ConnectionState::Connected);
    }

    /// A denied registration returns to unregistered; an expired one asks for a new code.
    #[test]
    fn denied_and_expired_registration() {
        let t0 = Instant::now();
        let mut c = Connection::new(LifecycleConfig::new("emb-acme", "MX-1", "SN1"));
        c.start_registration(t0);
        c.poll_transmit(t0).unwrap();
        c.handle_response(t0, &code_answer());
        c.poll_transmit(t0 + s(5)).unwrap();
        c.handle_response(t0 + s(5), &resp(400, r#"{"error":"expired_token"}"#));
        assert_eq!(c.state(), ConnectionState::Registering);
        assert!(matches!(c.poll_transmit(t0 + s(5)), Some(LifecycleTransmit::RegistrationCode(_))));
        c.handle_response(t0 + s(5), &code_answer());
        c.poll_transmit(t0 + s(10)).unwrap();
        c.handle_response(t0 + s(10), &resp(400, r#"{"error":"access_denied"}"#));
        assert_eq!(c.state(), ConnectionState::Unregistered);
        assert!(drain(&mut c).contains(&LifecycleEvent::RegistrationFailed(RegistrationFailure::Denied)));
    }

    /// Restart from persisted state (power cycle): refresh at once, no secret lost.
    #[test]
    fn restore_round_trip() {
        let t0 = Instant::now();
        let (c, _) = registered(t0);
        let json = serde_json::to_string(&c.persisted().unwrap()).unwrap();
        let p: PersistedConnection = serde_json::from_str(&json).unwrap();
        let mut r = Connection::restore(LifecycleConfig::new("emb-acme", "MX-1", "SN1"), p, t0 + s(500));
        assert_eq!(r.state(), ConnectionState::Connected);
        assert_eq!(r.device_id(), Some("dev1"));
        assert!(matches!(r.poll_transmit(t0 + s(500)), Some(LifecycleTransmit::Refresh(_))));
    }

    /// A 5xx with an HTML body while asking for a registration code is retried, not fatal.
    #[test]
    fn html_5xx_on_code_request_retries() {
        let t0 = Instant::now();
        let mut c = Connection::new(LifecycleConfig::new("emb-acme", "MX-1", "SN1"));
        c.start_registration(t0);
        c.poll_transmit(t0).unwrap();
        c.handle_response(t0, &resp(503, "<html>maintenance</html>"));
        assert_eq!(c.state(), ConnectionState::Registering);
        assert_eq!(c.poll_timeout(), Some(t0 + s(4)));
    }
}
