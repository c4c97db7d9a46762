//! The MFP panel session (PROTOCOL.md §8): the dynamic session QR of step 1 (RFC 8628 for a user, R-QR-1,
//! R-QR-3), the command request of step 2 and the PIN login (RFC 6749 §4.3, R-PWD-1), logout with revocation
//! (RFC 7009) and the ends of a session (push `session.ended`, a refused or expired user token).
//!
//! Sans-IO in the style of quinn-proto: the machine never sends anything and never reads a clock; `now` is always
//! an argument. See [`PanelSession`] for the order in which a driver polls it.

use std::collections::VecDeque;
use std::fmt;
use std::time::{Duration, Instant};

use http::{Request, Response};

use crate::device_authorization::{DeviceAuthorizationRequest, DeviceAuthorizationResponse};
use crate::error::{OAuthErrorCode, PeerReport, PeerViolation, ReportOnce, ResponseError};
use crate::metadata::Endpoints;
use crate::poller::{DevicePoller, PollResult, PollerConfig, PollerEvent};
use crate::revocation::RevocationRequest;
use crate::secret::{AccessToken, Password, VerificationUriComplete};
use crate::timing;
use crate::token::{scope, TokenRequest, TokenResponse, TokenUser};

/// Base of the doubled wait between retries of a session-code request, a password request or a revocation
/// (PROTOCOL.md §12 doubles the wait after a failure; 1 s is this implementation's base).
pub const RETRY_BASE: Duration = Duration::from_secs(1);

/// Never two session-code requests closer than this (a server answering with `expires_in: 0` must not make the
/// panel hammer `/oauth/device_authorization`; PROTOCOL.md §12 floor of 1 s).
pub const MIN_CODE_REQUEST_GAP: Duration = timing::MIN_INTERVAL;

/// Revocations are best-effort (RFC 7009 §2.2.1: the client may retry): at most this many retries after a
/// transient failure, then the revocation is dropped.
pub const MAX_REVOCATION_RETRIES: u32 = 3;

/// How often a password request or a revocation is retried after the device token was refused (PROTOCOL.md §7,
/// R-TOK-1 "refresh once and retry once", with one extra attempt for a refresh that raced the refusal).
pub const MAX_DEVICE_TOKEN_RETRIES: u32 = 2;

/// R-PWD-1: the longest a PIN or password is held waiting for a retry (a device token that never comes, a
/// server that stays down). After this the request is given up and the secret wiped.
pub const MAX_PASSWORD_HOLD: Duration = Duration::from_secs(60);

/// Lifetime assumed for a user token whose response lacks `expires_in` (PROTOCOL.md §3 default: 1200 s).
pub const DEFAULT_USER_TOKEN_LIFETIME: Duration = Duration::from_secs(1200);

/// Upper bound on lifetimes and intervals taken from the server, so that hostile values cannot overflow an
/// `Instant` (a choice of this implementation: no Roger lifetime at the panel exceeds a day).
const MAX_LIFETIME_SECS: u64 = 86_400;
/// Upper bound on a session code's polling interval taken from the server.
const MAX_INTERVAL_SECS: u64 = 3_600;
/// At most this many revocations are queued; further ones are dropped (they are best-effort).
const MAX_REVOCATIONS: usize = 8;
/// At most this many abandoned token requests are remembered (to revoke a token they may still yield).
const MAX_ORPHANS: usize = 4;
/// At most this many replaced session codes are still polled (R-QR-3). Rotation keeps one outgoing code alive
/// for the 10 s before its expiry; the second slot covers a code that is still waiting for a late poll answer.
const MAX_OUTGOING: usize = 2;

/// Settings of a panel session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PanelConfig {
    /// Whether step 2 and the PIN login (the resource owner password credentials grant, RFC 6749 §4.3) are
    /// enabled. RFC 9700 §2.4 forbids that grant; Roger uses it, so it is an explicit opt-in (PROTOCOL.md §8).
    /// Default `false`.
    pub allow_password_grant: bool,
    /// Poll cadence of a session code while push is healthy (PROTOCOL.md §8: at most 30 s).
    pub push_relaxed_interval: Duration,
    /// How often a password request is re-sent after a lost or transient answer (R-PWD-1 allows re-sending it
    /// only as a retry of the same request). Default 2.
    pub max_password_retries: u32,
}

impl Default for PanelConfig {
    fn default() -> Self {
        Self {
            allow_password_grant: false,
            push_relaxed_interval: timing::MAX_PUSH_RELAXED_INTERVAL,
            max_password_retries: 2,
        }
    }
}

/// The panel's state as a display shows it (PROTOCOL.md §8, the whitepaper's two steps).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PanelState {
    /// No user: the session QR and its user code are shown (R-QR-1).
    Idle,
    /// A user signed in by QR (step 1, `roger.release`): queued jobs can be listed and released.
    Step1,
    /// The user also holds a step-2 token (`roger.print roger.scan`), from a command request or a PIN login.
    Step2,
}

/// A stable handle of one request the panel asked to send, so its answer can be matched
/// ([`PanelSession::handle_response`]). A re-sent request gets a fresh id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PanelRequestId(u64);

impl PanelRequestId {
    /// The number (unique within one [`PanelSession`]).
    pub fn as_u64(self) -> u64 {
        self.0
    }
}

impl fmt::Display for PanelRequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "panel-req-{}", self.0)
    }
}

/// A request the panel asks its driver to send. Every one is device-bound (PROTOCOL.md §7): build it with
/// [`PanelTransmit::to_http`] and the current device token.
///
/// A [`PanelTransmit::Password`] holds a copy of the PIN or password: build the HTTP request, send it, and drop
/// both (R-PWD-1); the session keeps its own copy only until the answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PanelTransmit {
    /// `POST {device_authorization}` for a session QR code (PROTOCOL.md §8 step 1, RFC 8628 §3.1).
    SessionCode {
        /// Handle of this request.
        id: PanelRequestId,
        /// The request (`scope=roger.release`).
        request: DeviceAuthorizationRequest,
    },
    /// `POST {token}` polling the session code (RFC 8628 §3.4).
    Poll {
        /// Handle of this request.
        id: PanelRequestId,
        /// The device-code token request.
        request: TokenRequest,
    },
    /// `POST {token}` with the password grant (RFC 6749 §4.3.2; step 2 or PIN login, PROTOCOL.md §8).
    Password {
        /// Handle of this request.
        id: PanelRequestId,
        /// The password token request.
        request: TokenRequest,
    },
    /// `POST {revocation}` for a user token (RFC 7009 §2.1; logout, PROTOCOL.md §8).
    Revoke {
        /// Handle of this request.
        id: PanelRequestId,
        /// The revocation request.
        request: RevocationRequest,
    },
}

impl PanelTransmit {
    /// The handle to pass back with the answer.
    pub fn id(&self) -> PanelRequestId {
        match self {
            Self::SessionCode { id, .. }
            | Self::Poll { id, .. }
            | Self::Password { id, .. }
            | Self::Revoke { id, .. } => *id,
        }
    }

    /// Builds the HTTP request with the device-bound client authentication of PROTOCOL.md §7
    /// (`Authorization: Bearer <device token>` and `client_id`). Without a device token the request goes out
    /// unauthenticated and the server's `401 invalid_client` leads to [`PanelEvent::NeedDeviceToken`].
    pub fn to_http(
        &self,
        endpoints: &Endpoints,
        device_token: Option<&AccessToken>,
    ) -> Result<Request<Vec<u8>>, http::Error> {
        match self {
            Self::SessionCode { request, .. } => request.to_http(&endpoints.device_authorization, device_token),
            Self::Poll { request, .. } | Self::Password { request, .. } => {
                request.to_http(&endpoints.token, device_token)
            }
            Self::Revoke { request, .. } => request.to_http(&endpoints.revocation, device_token),
        }
    }
}

/// The session QR as the panel draws it: the QR **and** the user code (R-QR-1, RFC 8628 §3.3.1).
///
/// `Debug` redacts the code and the URI (R-SEC-1: they are credentials until the code expires).
#[derive(Clone, PartialEq, Eq)]
pub struct QrCode {
    /// The QR payload, `{api}/device?user_code=XXXXXXXX` (RFC 8628 §3.3.1, docs/protocol.md §3.7); the canonical URI
    /// built from the API origin when the server sent one on another origin (R-QR-4). `None` when the server sent
    /// none (RFC 8628 §3.2 makes it OPTIONAL): then the panel shows `verification_uri` and the code, and no QR
    /// (docs/protocol.md §7).
    pub verification_uri_complete: Option<VerificationUriComplete>,
    /// The verification page to show in text beside or instead of the QR; `None` when the server named one on
    /// another origin than the API (R-QR-4, docs/protocol.md §7): then only the code is shown.
    pub verification_uri: Option<String>,
    /// The user code as shown next to the QR: `XXXX-XXXX` for a Roger code in any spelling (R-QR-1, RFC 8628
    /// §6.1), another server's code verbatim.
    pub user_code_display: String,
    /// When the code expires (RFC 8628 §3.2 `expires_in` from the answer's arrival).
    pub expires_at: Instant,
    /// The non-secret handle of the code, matched against push doorbells (PROTOCOL.md §5.1, §11).
    pub request_id: Option<String>,
}

impl fmt::Debug for QrCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QrCode")
            .field("verification_uri_complete", &self.verification_uri_complete)
            .field("verification_uri", &self.verification_uri)
            .field("user_code_display", &"[redacted]")
            .field("expires_at", &self.expires_at)
            .field("request_id", &self.request_id)
            .finish()
    }
}

/// Why a PIN or password was not accepted (PROTOCOL.md §8).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum PinRejectReason {
    /// `invalid_grant`: wrong user name, PIN or password, or a locked-out user (R-PWD-2 answers every failure
    /// alike).
    WrongCredentials,
    /// The server could not be reached or stayed unavailable after the retries (R-PWD-1, PROTOCOL.md §12).
    Unavailable,
    /// Another definite refusal (e.g. `invalid_scope`, `unauthorized_client`, an unreadable answer).
    Refused,
    /// The session changed before the answer (logout, session end, a QR login): the request was abandoned and
    /// the secret wiped.
    Cancelled,
}

/// Why a session ended without a logout (PROTOCOL.md §8 "End").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SessionEndReason {
    /// Push `session.ended`: the user (in the app) or an admin ended it (PROTOCOL.md §8, §11).
    ServerEnded,
    /// The API refused the user token with `401` (RFC 6750 §3.1).
    TokenRejected,
    /// The session token expired; user tokens have no refresh token (PROTOCOL.md §8).
    Expired,
}

/// What the panel tells its driver and display.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PanelEvent {
    /// Draw this QR and its user code (R-QR-1); replaces any QR shown before (R-QR-3).
    ShowQr(QrCode),
    /// The shown code expired or was refused before a replacement arrived: clear it; a new one is being fetched.
    QrExpired,
    /// The user denied the session code (RFC 8628 §3.5 `access_denied`, or `invalid_grant`); a fresh QR follows.
    QrDenied,
    /// An answer deviated from the RFCs or from Roger's profile, and the panel read past it or refused it
    /// (docs/protocol.md §7): a code in another spelling or alphabet, a string `expires_in`, no
    /// `verification_uri_complete`, a narrowed scope, a malformed answer (refused and retried), or
    /// [`PeerViolation::ForeignQrOrigin`] (R-QR-4: the QR shows the canonical URI built from the configured API
    /// origin instead, [`crate::qr::displayable`]). Each kind is reported once per panel: log it at warn
    /// level (it names the endpoint and the rule, never a value).
    PeerViolation(PeerReport),
    /// A user signed in (step 1 by QR, or a PIN login; PROTOCOL.md §8).
    SessionStarted {
        /// The user of the session token.
        user: TokenUser,
        /// Granted scopes (RFC 6749 §3.3).
        scopes: Vec<String>,
    },
    /// Step 2 was granted: print from drive and scan are available (PROTOCOL.md §8).
    Step2Granted {
        /// Granted scopes of the step-2 token.
        scopes: Vec<String>,
    },
    /// The step-2 token expired; the session is back at step 1 (a new PIN entry gives step 2 again).
    Step2Expired,
    /// The PIN or password was not accepted; the session state is unchanged (R-PWD-1: the secret is wiped).
    PinRejected {
        /// Why.
        reason: PinRejectReason,
    },
    /// The device token was refused (`401 invalid_client`, PROTOCOL.md §7): refresh it (R-TOK-1), then call
    /// [`PanelSession::handle_device_token`]. The refused requests are retried then, never abandoned.
    NeedDeviceToken,
    /// The session ended without a logout; the panel is idle and fetches a fresh QR.
    SessionEnded {
        /// Why.
        reason: SessionEndReason,
    },
    /// The user logged out: the user tokens are being revoked (RFC 7009) and a fresh QR is fetched (§8 "End").
    LoggedOut,
}

/// Why a PIN entry was refused locally, before anything was sent (PROTOCOL.md §8).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum PanelError {
    /// The password grant is not enabled ([`PanelConfig::allow_password_grant`]; RFC 9700 §2.4).
    #[error("the password grant is disabled (RFC 9700 §2.4); enable it explicitly in PanelConfig")]
    PasswordGrantDisabled,
    /// A PIN login from idle needs a user name (RFC 6749 §4.3.2 `username` is REQUIRED).
    #[error("a user name is required for a PIN login")]
    UsernameRequired,
    /// Step 2 names another user than the step-1 user (PROTOCOL.md §8: the server would answer `invalid_grant`).
    #[error("step 2 must be requested for the signed-in user")]
    WrongUser,
    /// A PIN entry is already being checked.
    #[error("a PIN entry is already being checked")]
    PinInProgress,
    /// The printer is not connected to a tenant (unregistered or disconnected, R-TOK-4): no user login.
    #[error("the printer is not connected to a tenant")]
    NotConnected,
}

/// When a request is to be sent, or where it stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    /// To be sent at or after the instant; `None`: as soon as possible.
    Due(Option<Instant>),
    /// Sent; waiting for the answer.
    InFlight(PanelRequestId),
    /// Refused for the device token; waiting for [`PanelSession::handle_device_token`].
    AwaitingDeviceToken,
}

impl Slot {
    fn is_due(self, now: Instant) -> bool {
        match self {
            Slot::Due(None) => true,
            Slot::Due(Some(at)) => at <= now,
            Slot::InFlight(_) | Slot::AwaitingDeviceToken => false,
        }
    }

    fn deadline(self) -> Option<Instant> {
        match self {
            Slot::Due(at) => at,
            Slot::InFlight(_) | Slot::AwaitingDeviceToken => None,
        }
    }

    fn is(self, id: PanelRequestId) -> bool {
        self == Slot::InFlight(id)
    }
}

/// A session code on display (or replaced but still live, R-QR-3), with its poller.
#[derive(Debug)]
struct ShownCode {
    qr: QrCode,
    poller: DevicePoller,
    /// The poll in flight, if any.
    poll: Option<PanelRequestId>,
}

/// What a password request is for (PROTOCOL.md §8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PinPurpose {
    /// Step 2 of an open session (`roger.print roger.scan`).
    Step2,
    /// PIN login from idle (`roger.release roger.print roger.scan`).
    Login,
}

/// An outstanding password request: the only place the secret lives (R-PWD-1).
#[derive(Debug)]
struct PasswordFlow {
    purpose: PinPurpose,
    username: String,
    password: Password,
    scope: &'static str,
    slot: Slot,
    retries: u32,
    token_failures: u32,
    give_up_at: Instant,
}

/// A user token held by the panel (no refresh token: PROTOCOL.md §8).
#[derive(Debug)]
struct UserToken {
    token: AccessToken,
    scopes: Vec<String>,
    expires_at: Instant,
}

/// An open user session.
#[derive(Debug)]
struct UserSession {
    user: TokenUser,
    /// The token that opened the session: the step-1 QR token, or the PIN-login token (all three scopes).
    primary: UserToken,
    /// The second token of step 2.
    step2: Option<UserToken>,
}

/// A best-effort revocation (RFC 7009).
#[derive(Debug)]
struct PendingRevocation {
    request: RevocationRequest,
    slot: Slot,
    failures: u32,
    token_failures: u32,
}

/// The panel session state machine (PROTOCOL.md §8).
///
/// # Driving it (polling order)
///
/// 1. Feed inputs as they happen: user actions ([`enter_pin`](Self::enter_pin), [`logout`](Self::logout)), push
///    ([`handle_doorbell`](Self::handle_doorbell), [`handle_session_ended`](Self::handle_session_ended),
///    [`set_push_healthy`](Self::set_push_healthy)), the lifecycle ([`handle_device_token`](Self::handle_device_token)),
///    the API layer ([`handle_user_token_rejected`](Self::handle_user_token_rejected)), and the answers to sent
///    requests ([`handle_response`](Self::handle_response) or [`handle_transport_error`](Self::handle_transport_error)
///    with the request's [`PanelRequestId`]).
/// 2. Call [`poll_transmit`](Self::poll_transmit) with `now` until it returns `None`; build each request with
///    [`PanelTransmit::to_http`] and the current device token, send it (several may be outstanding at once) and
///    remember its id. A new session starts here: the first call asks for a session QR code.
/// 3. Drain [`poll_event`](Self::poll_event) until `None` (draw the QR, show the user, refresh the device token …).
/// 4. Sleep until [`poll_timeout`](Self::poll_timeout) or the next input; on wake-up call
///    [`handle_timeout`](Self::handle_timeout) and go back to step 2. A spurious or early timeout is a no-op;
///    requests that have become due are released by `poll_transmit`.
///
/// Answers with an unknown or stale id (a request that belonged to a replaced QR or an ended session) are ignored.
/// Nothing here panics on any input.
///
/// # Rules
/// * idle: a session QR (`scope=roger.release`, device-bound) is shown with its user code (R-QR-1) and renewed
///   10 s before it expires (R-QR-3, [`timing::qr_renew_after`]) and the new code replaces it on the display as
///   soon as it arrives; a failed renewal backs off (PROTOCOL.md §12) while the old QR stays up until it expires;
/// * a replaced code is still polled until it expires or is answered (R-QR-3 SHOULD, docs/protocol.md §5.3), so a
///   user who scanned it just before the QR changed still signs in; its doorbells are honoured too;
/// * a `verification_uri_complete` that is not `{api}/device?user_code=<the code>` on the API origin is never
///   displayed: the QR shows the canonical URI instead and [`PanelEvent::PeerViolation`] reports
///   [`PeerViolation::ForeignQrOrigin`] (R-QR-4);
/// * the code is polled by a [`DevicePoller`] (R-POLL-1, RFC 8628 §3.5); a doorbell for its `request_id` polls at
///   the earliest allowed moment (PROTOCOL.md §8);
/// * step 2 and the PIN login use the password grant only when enabled (RFC 9700 §2.4); the secret is held only
///   while its request is outstanding or awaiting a retry of that same request (R-PWD-1);
/// * logout revokes both user tokens (RFC 7009, PROTOCOL.md §8); a server-side end, a refused or an expired user
///   token drops them; either way the panel goes back to idle with a fresh QR;
/// * a device-bound request refused with `401 invalid_client` asks for a fresh device token and is retried
///   (PROTOCOL.md §7, R-TOK-1).
///
/// `Debug` shows no secret: every credential is held in a [`crate::secret`] type.
#[derive(Debug)]
pub struct PanelSession {
    config: PanelConfig,
    client_id: String,
    endpoints: Endpoints,
    next_id: u64,
    push_healthy: bool,
    /// The session-code request (`None` while a user session is open).
    code_request: Option<Slot>,
    /// When the last session-code request was sent ([`MIN_CODE_REQUEST_GAP`]).
    last_code_request: Option<Instant>,
    code_failures: u32,
    code_token_failures: u32,
    /// The code on display (idle only).
    current: Option<ShownCode>,
    /// Codes replaced on the display but still live, oldest first: polled until they expire or are answered, so an
    /// approval given in their last seconds is not lost (R-QR-3). At most [`MAX_OUTGOING`].
    outgoing: Vec<ShownCode>,
    password: Option<PasswordFlow>,
    session: Option<UserSession>,
    revocations: Vec<PendingRevocation>,
    /// Token requests abandoned while in flight: a success they still yield is revoked.
    orphans: Vec<PanelRequestId>,
    events: VecDeque<PanelEvent>,
    reported: ReportOnce,
}

impl PanelSession {
    /// A new panel for the MFP client `client_id` (`emb-<vendor>`), idle: the first
    /// [`poll_transmit`](Self::poll_transmit) asks for a session QR code (PROTOCOL.md §8).
    pub fn new(config: PanelConfig, client_id: impl Into<String>, endpoints: Endpoints) -> Self {
        Self {
            config,
            client_id: client_id.into(),
            endpoints,
            next_id: 1,
            push_healthy: false,
            code_request: Some(Slot::Due(None)),
            last_code_request: None,
            code_failures: 0,
            code_token_failures: 0,
            current: None,
            outgoing: Vec::new(),
            password: None,
            session: None,
            revocations: Vec::new(),
            orphans: Vec::new(),
            events: VecDeque::new(),
            reported: ReportOnce::default(),
        }
    }

    /// The settings.
    pub fn config(&self) -> &PanelConfig {
        &self.config
    }

    /// The endpoints the requests go to (PROTOCOL.md §2).
    pub fn endpoints(&self) -> &Endpoints {
        &self.endpoints
    }

    /// The display state (PROTOCOL.md §8).
    pub fn state(&self) -> PanelState {
        match &self.session {
            None => PanelState::Idle,
            Some(s) if s.step2.is_some() || s.primary.scopes.iter().any(|x| x == scope::PRINT) => PanelState::Step2,
            Some(_) => PanelState::Step1,
        }
    }

    /// The signed-in user, if any (PROTOCOL.md §8 `user {id, username, display_name, email}`).
    pub fn user(&self) -> Option<&TokenUser> {
        self.session.as_ref().map(|s| &s.user)
    }

    /// The scopes the session's tokens hold together (RFC 6749 §3.3), for display.
    pub fn scopes(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        if let Some(s) = &self.session {
            for sc in s.primary.scopes.iter().chain(s.step2.iter().flat_map(|t| t.scopes.iter())) {
                if !out.contains(sc) {
                    out.push(sc.clone());
                }
            }
        }
        out
    }

    /// The user token for API calls (PROTOCOL.md §10): the step-2 token if there is one (print from drive, scan),
    /// else the session token. Use [`release_token`](Self::release_token) for the step-1 calls (jobs, release).
    pub fn user_token(&self) -> Option<&AccessToken> {
        let s = self.session.as_ref()?;
        Some(s.step2.as_ref().map_or(&s.primary.token, |t| &t.token))
    }

    /// The session token (`roger.release`, or all three scopes after a PIN login) for listing and releasing jobs
    /// (PROTOCOL.md §9).
    pub fn release_token(&self) -> Option<&AccessToken> {
        self.session.as_ref().map(|s| &s.primary.token)
    }

    /// The QR on display, if any (idle only; R-QR-1: it always carries its user code).
    pub fn current_qr(&self) -> Option<&QrCode> {
        self.current.as_ref().map(|c| &c.qr)
    }

    /// The replaced session codes that are still polled (R-QR-3: until they expire or are answered), oldest
    /// first. They are not on display; for tests and diagnostics.
    pub fn outgoing_qrs(&self) -> impl Iterator<Item = &QrCode> + '_ {
        self.outgoing.iter().map(|c| &c.qr)
    }

    /// Whether the panel holds a PIN or password (R-PWD-1: only while its request is outstanding or awaiting a
    /// retry of that same request). For tests and audits.
    pub fn holds_password(&self) -> bool {
        self.password.is_some()
    }

    /// Whether a PIN entry is being checked (its request outstanding or awaiting a retry).
    pub fn pin_in_progress(&self) -> bool {
        self.password.is_some()
    }

    /// How many requests are outstanding (sent and not yet answered), for tests and diagnostics.
    pub fn outstanding_requests(&self) -> usize {
        let mut n = 0;
        n += usize::from(matches!(self.code_request, Some(Slot::InFlight(_))));
        n += self.current.iter().chain(&self.outgoing).filter(|c| c.poll.is_some()).count();
        n += usize::from(matches!(self.password.as_ref().map(|p| p.slot), Some(Slot::InFlight(_))));
        n += self.revocations.iter().filter(|r| matches!(r.slot, Slot::InFlight(_))).count();
        n + self.orphans.len()
    }

    // ---------------------------------------------------------------------------------------------------------
    // Inputs

    /// The push connection's health (PROTOCOL.md §8: with push healthy the code may be polled less often, at
    /// least every 30 s; doorbells then bring the poll forward).
    pub fn set_push_healthy(&mut self, healthy: bool) {
        self.push_healthy = healthy;
        for c in self.current.iter_mut().chain(self.outgoing.iter_mut()) {
            c.poller.set_push_healthy(healthy);
        }
    }

    /// A push doorbell `code.approved` / `code.denied` with `request_id` (PROTOCOL.md §8, R-PUSH-1): when it is the
    /// shown code's, or a replaced code's that is still live (R-QR-3), poll that code at the earliest moment the
    /// interval allows (never earlier, R-POLL-1). Others are ignored.
    pub fn handle_doorbell(&mut self, now: Instant, request_id: &str) {
        let code = self
            .current
            .iter_mut()
            .chain(self.outgoing.iter_mut())
            .find(|c| c.qr.request_id.as_deref() == Some(request_id));
        if let Some(c) = code {
            c.poller.handle_doorbell(now);
            self.after_poller(now);
        }
    }

    /// Push `session.ended` (PROTOCOL.md §8 "End", §11): the server ended the session, so its tokens are dead and
    /// are dropped without revocation; the panel goes idle with a fresh QR ([`PanelEvent::SessionEnded`]).
    pub fn handle_session_ended(&mut self, now: Instant) {
        self.end_session(now, EndKind::Ended(SessionEndReason::ServerEnded));
    }

    /// The API answered `401` for the user token (RFC 6750 §3.1): the session is over, as with
    /// [`handle_session_ended`](Self::handle_session_ended).
    pub fn handle_user_token_rejected(&mut self, now: Instant) {
        self.end_session(now, EndKind::Ended(SessionEndReason::TokenRejected));
    }

    /// The lifecycle has a fresh device token (after [`PanelEvent::NeedDeviceToken`]): every request that was
    /// refused with `401 invalid_client` is retried (PROTOCOL.md §7, R-TOK-1).
    pub fn handle_device_token(&mut self, now: Instant) {
        for c in self.current.iter_mut().chain(self.outgoing.iter_mut()) {
            c.poller.handle_device_token(now);
        }
        if self.code_request == Some(Slot::AwaitingDeviceToken) {
            // The first retry goes at once; a device token refused again and again backs off (PROTOCOL.md §12).
            let wait = if self.code_token_failures > 1 {
                timing::backoff_wait(RETRY_BASE, self.code_token_failures - 1)
            } else {
                Duration::ZERO
            };
            self.code_request = Some(Slot::Due(Some(after(now, wait))));
        }
        if let Some(p) = &mut self.password {
            if p.slot == Slot::AwaitingDeviceToken {
                p.slot = Slot::Due(Some(now));
            }
        }
        for r in &mut self.revocations {
            if r.slot == Slot::AwaitingDeviceToken {
                r.slot = Slot::Due(Some(now));
            }
        }
        self.after_poller(now);
    }

    /// The user entered a PIN or password (PROTOCOL.md §8, RFC 6749 §4.3).
    ///
    /// * In a session this is step 2 (`scope=roger.print roger.scan`) for the step-1 user: `username` may be
    ///   omitted; naming another user is refused locally ([`PanelError::WrongUser`]).
    /// * Idle, it is the PIN login (`scope=roger.release roger.print roger.scan`) and needs `username`.
    ///
    /// Needs [`PanelConfig::allow_password_grant`] (RFC 9700 §2.4). The secret is kept only until a definite
    /// answer, or until the retries of that same request run out (R-PWD-1); on refusal it is dropped (and so
    /// zeroized) at once.
    pub fn enter_pin(&mut self, now: Instant, username: Option<&str>, mut secret: Password) -> Result<(), PanelError> {
        let result = self.check_pin_entry(username);
        match result {
            Ok((purpose, username, scope)) => {
                self.password = Some(PasswordFlow {
                    purpose,
                    username,
                    password: secret,
                    scope,
                    slot: Slot::Due(Some(now)),
                    retries: 0,
                    token_failures: 0,
                    give_up_at: after(now, MAX_PASSWORD_HOLD),
                });
                Ok(())
            }
            Err(e) => {
                secret.wipe();
                Err(e)
            }
        }
    }

    /// The local checks of a PIN entry (PROTOCOL.md §8) and what the request will be.
    fn check_pin_entry(&self, username: Option<&str>) -> Result<(PinPurpose, String, &'static str), PanelError> {
        if !self.config.allow_password_grant {
            return Err(PanelError::PasswordGrantDisabled);
        }
        if self.password.is_some() {
            return Err(PanelError::PinInProgress);
        }
        let given = username.map(str::trim).filter(|u| !u.is_empty());
        match &self.session {
            None => {
                let u = given.ok_or(PanelError::UsernameRequired)?;
                Ok((PinPurpose::Login, u.to_owned(), scope::PIN_LOGIN))
            }
            Some(s) => {
                let step1 = s.user.username.as_str();
                let u = match given {
                    // Usernames are compared case-insensitively; the step-1 spelling is sent.
                    Some(u) if !step1.is_empty() && !u.eq_ignore_ascii_case(step1) => {
                        return Err(PanelError::WrongUser);
                    }
                    Some(u) if step1.is_empty() => u.to_owned(),
                    Some(_) => step1.to_owned(),
                    None if step1.is_empty() => return Err(PanelError::UsernameRequired),
                    None => step1.to_owned(),
                };
                Ok((PinPurpose::Step2, u, scope::STEP2))
            }
        }
    }

    /// Logout (PROTOCOL.md §8 "End"): revokes the step-1 and step-2 tokens (RFC 7009, device-bound, best-effort),
    /// goes idle at once and fetches a fresh QR ([`PanelEvent::LoggedOut`]). A no-op when idle.
    pub fn logout(&mut self, now: Instant) {
        self.end_session(now, EndKind::Logout);
    }

    /// Feeds the HTTP answer to the request `id`. Answers to unknown or stale ids are ignored.
    pub fn handle_response(&mut self, now: Instant, id: PanelRequestId, response: &Response<Vec<u8>>) {
        if self.code_request.is_some_and(|s| s.is(id)) {
            let result = crate::device_authorization::classify_noted(response);
            let result = PeerReport::unpack(crate::device_authorization::ENDPOINT, result, |r| self.report(r));
            self.on_code_answer(now, result);
        } else if let Some(c) = self.code_polled_by(id) {
            c.poll = None;
            c.poller.handle_response(now, response);
        } else if self.password.as_ref().is_some_and(|p| p.slot.is(id)) {
            let result = crate::token::classify_noted(response);
            let result = PeerReport::unpack(crate::token::ENDPOINT, result, |r| self.report(r));
            self.on_password_answer(now, result);
        } else if let Some(pos) = self.revocations.iter().position(|r| r.slot.is(id)) {
            let result = crate::revocation::classify(response);
            if let Err(e) = &result {
                if let Some(r) = PeerReport::from_error(crate::revocation::ENDPOINT, e) {
                    self.report(r);
                }
            }
            self.on_revocation_answer(now, pos, result.map_err(Some));
        } else if let Some(pos) = self.orphans.iter().position(|o| *o == id) {
            self.orphans.remove(pos);
            // An abandoned token request still minted a token: revoke it (RFC 7009), it is nobody's.
            if let Ok(t) = crate::token::classify(response) {
                self.queue_revocation(now, &t.access_token);
            }
        }
        self.after_poller(now);
    }

    /// The request `id` failed at the transport (connection refused or reset, timeout, lost answer): it is
    /// retried with a doubled wait (PROTOCOL.md §12). Unknown or stale ids are ignored.
    pub fn handle_transport_error(&mut self, now: Instant, id: PanelRequestId) {
        if self.code_request.is_some_and(|s| s.is(id)) {
            self.code_failed(now, None);
        } else if let Some(c) = self.code_polled_by(id) {
            c.poll = None;
            c.poller.handle_transport_error(now);
        } else if self.password.as_ref().is_some_and(|p| p.slot.is(id)) {
            self.password_retry(now, None);
        } else if let Some(pos) = self.revocations.iter().position(|r| r.slot.is(id)) {
            self.on_revocation_answer(now, pos, Err(None));
        } else if let Some(pos) = self.orphans.iter().position(|o| *o == id) {
            self.orphans.remove(pos);
        }
        self.after_poller(now);
    }

    /// Timer expiry: ends an expired session or step 2, lets the poller notice an expired code, gives up a
    /// password held too long. A spurious or early call is a no-op; due requests are released by
    /// [`poll_transmit`](Self::poll_transmit).
    pub fn handle_timeout(&mut self, now: Instant) {
        if let Some(s) = &mut self.session {
            if now >= s.primary.expires_at {
                self.end_session(now, EndKind::Ended(SessionEndReason::Expired));
            } else if s.step2.as_ref().is_some_and(|t| now >= t.expires_at) {
                s.step2 = None;
                self.events.push_back(PanelEvent::Step2Expired);
            }
        }
        if let Some(p) = &self.password {
            if !matches!(p.slot, Slot::InFlight(_)) && now >= p.give_up_at {
                self.finish_password(PinRejectReason::Unavailable);
            }
        }
        for c in self.current.iter_mut().chain(self.outgoing.iter_mut()) {
            c.poller.handle_timeout(now);
        }
        self.after_poller(now);
    }

    // ---------------------------------------------------------------------------------------------------------
    // Outputs

    /// The next request to send, if one is due at `now` (see the type's documentation for the order). Call until
    /// `None`. Order of preference: the PIN entry, the session code, the code poll, revocations.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<PanelTransmit> {
        self.handle_timeout(now);
        if let Some(p) = &mut self.password {
            if p.slot.is_due(now) {
                let id = PanelRequestId(self.next_id);
                self.next_id += 1;
                p.slot = Slot::InFlight(id);
                let request = TokenRequest::Password {
                    username: p.username.clone(),
                    password: p.password.clone(),
                    scope: p.scope.to_owned(),
                    client_id: self.client_id.clone(),
                };
                return Some(PanelTransmit::Password { id, request });
            }
        }
        if let Some(slot) = self.code_request {
            if slot.is_due(now) && self.code_gap_ok(now) {
                let id = self.fresh_id();
                self.code_request = Some(Slot::InFlight(id));
                self.last_code_request = Some(now);
                let request = DeviceAuthorizationRequest::session(&self.client_id);
                return Some(PanelTransmit::SessionCode { id, request });
            }
        }
        if self.session.is_none() {
            let id = PanelRequestId(self.next_id);
            // The shown code first, then the replaced codes still live (R-QR-3); each keeps its own interval.
            for c in self.current.iter_mut().chain(self.outgoing.iter_mut()) {
                if c.poll.is_none() && c.poller.poll_transmit(now).is_some() {
                    self.next_id += 1;
                    c.poll = Some(id);
                    return Some(PanelTransmit::Poll { id, request: c.poller.token_request() });
                }
            }
        }
        let id = PanelRequestId(self.next_id);
        if let Some(r) = self.revocations.iter_mut().find(|r| r.slot.is_due(now)) {
            self.next_id += 1;
            r.slot = Slot::InFlight(id);
            return Some(PanelTransmit::Revoke { id, request: r.request.clone() });
        }
        None
    }

    /// The next event for the driver or the display.
    pub fn poll_event(&mut self) -> Option<PanelEvent> {
        self.events.pop_front()
    }

    /// When to call [`handle_timeout`](Self::handle_timeout) (and then [`poll_transmit`](Self::poll_transmit))
    /// next; `None` when only an answer or an input can move the machine.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut t: Option<Instant> = None;
        let mut add = |x: Option<Instant>| {
            if let Some(x) = x {
                t = Some(t.map_or(x, |t| t.min(x)));
            }
        };
        if let Some(s) = &self.session {
            add(Some(s.primary.expires_at));
            add(s.step2.as_ref().map(|x| x.expires_at));
        }
        if let Some(slot) = self.code_request {
            if let Some(at) = slot.deadline() {
                add(Some(self.last_code_request.map_or(at, |l| at.max(after(l, MIN_CODE_REQUEST_GAP)))));
            } else if slot == Slot::Due(None) {
                add(self.last_code_request.map(|l| after(l, MIN_CODE_REQUEST_GAP)));
            }
        }
        if self.session.is_none() {
            for c in self.current.iter().chain(&self.outgoing) {
                add(c.poller.poll_timeout());
                if !c.poller.is_in_flight() && !c.poller.is_finished() {
                    add(Some(c.poller.expires_at()));
                }
            }
        }
        if let Some(p) = &self.password {
            add(p.slot.deadline());
            if !matches!(p.slot, Slot::InFlight(_)) {
                add(Some(p.give_up_at));
            }
        }
        for r in &self.revocations {
            add(r.slot.deadline());
        }
        t
    }

    // ---------------------------------------------------------------------------------------------------------
    // Internals

    fn report(&mut self, r: PeerReport) {
        if self.reported.first(&r) {
            self.events.push_back(PanelEvent::PeerViolation(r));
        }
    }

    /// RFC 6749 §3.3: a grant narrower than the request is used as granted, and reported.
    fn note_scope(&mut self, requested: &str, granted: Option<&str>) {
        if crate::token::scope_narrowed(requested, granted) {
            self.report(PeerReport::tolerated(crate::token::ENDPOINT, PeerViolation::ScopeNarrowed));
        }
    }

    fn fresh_id(&mut self) -> PanelRequestId {
        let id = PanelRequestId(self.next_id);
        self.next_id += 1;
        id
    }

    fn code_gap_ok(&self, now: Instant) -> bool {
        self.last_code_request.is_none_or(|l| now >= after(l, MIN_CODE_REQUEST_GAP))
    }

    fn request_device_token(&mut self) {
        if !self.events.iter().any(|e| matches!(e, PanelEvent::NeedDeviceToken)) {
            self.events.push_back(PanelEvent::NeedDeviceToken);
        }
    }

    /// Ask for a session code as soon as allowed (idle only), unless one is already coming or the code requests
    /// are backing off after failures (PROTOCOL.md §12: the doubled wait holds until the next answer).
    fn fetch_code_now(&mut self, now: Instant) {
        if self.session.is_some() {
            return;
        }
        match self.code_request {
            None => self.code_request = Some(Slot::Due(Some(now))),
            Some(Slot::Due(Some(at))) if at > now && self.code_failures == 0 => {
                self.code_request = Some(Slot::Due(Some(now)))
            }
            Some(_) => {}
        }
    }

    fn on_code_answer(&mut self, now: Instant, result: Result<DeviceAuthorizationResponse, ResponseError>) {
        let auth = match result {
            Ok(a) => a,
            Err(e) if e.is_token_rejected() => {
                self.code_token_failures = self.code_token_failures.saturating_add(1);
                self.code_request = Some(Slot::AwaitingDeviceToken);
                self.request_device_token();
                return;
            }
            Err(e) => return self.code_failed(now, e.retry_after()),
        };
        self.code_failures = 0;
        self.code_token_failures = 0;
        // Hostile lifetimes must not overflow an Instant inside the poller.
        let auth = DeviceAuthorizationResponse {
            expires_in: auth.expires_in.min(MAX_LIFETIME_SECS),
            interval: auth.interval.map(|i| i.min(MAX_INTERVAL_SECS)),
            ..auth
        };
        let lifetime = Duration::from_secs(auth.expires_in);
        // R-QR-4: a payload on another origin (or for another code) is never displayed; the canonical URI is.
        let shown = crate::qr::displayable(
            auth.verification_uri_complete.as_ref(),
            &auth.verification_uri,
            &self.endpoints.api,
            &auth.user_code,
        );
        if shown.refused.is_some() {
            self.report(PeerReport::refused(crate::device_authorization::ENDPOINT, PeerViolation::ForeignQrOrigin));
        }
        let qr = QrCode {
            verification_uri_complete: shown.qr,
            verification_uri: shown.page,
            user_code_display: crate::user_code::format_for_display(auth.user_code.secret()),
            expires_at: after(now, lifetime),
            request_id: auth.request_id.clone(),
        };
        let cfg = PollerConfig { push_relaxed_interval: self.config.push_relaxed_interval, device_bound: true };
        let mut poller = DevicePoller::new(now, &auth, &self.client_id, cfg);
        poller.set_push_healthy(self.push_healthy);
        // R-QR-3: the next code is fetched 10 s before this one expires (never sooner than 1 s from now).
        let renew = timing::qr_renew_after(lifetime).max(MIN_CODE_REQUEST_GAP);
        self.code_request = Some(Slot::Due(Some(after(now, renew))));
        // R-QR-3: the new code is shown at once; the one it replaces is still polled until it expires or is
        // answered (a poll in flight stays with it), so a scan made just before the switch still signs in.
        if let Some(old) = self.current.take() {
            if !old.poller.is_finished() {
                self.outgoing.push(old);
            }
        }
        while self.outgoing.len() > MAX_OUTGOING {
            let mut oldest = self.outgoing.remove(0);
            oldest.poller.cancel();
            if let Some(id) = oldest.poll {
                self.add_orphan(id);
            }
        }
        self.events.push_back(PanelEvent::ShowQr(qr.clone()));
        self.current = Some(ShownCode { qr, poller, poll: None });
    }

    /// The session code (shown or outgoing) whose poll `id` is in flight.
    fn code_polled_by(&mut self, id: PanelRequestId) -> Option<&mut ShownCode> {
        self.current.iter_mut().chain(self.outgoing.iter_mut()).find(|c| c.poll == Some(id))
    }

    fn code_failed(&mut self, now: Instant, retry_after: Option<Duration>) {
        self.code_failures = self.code_failures.saturating_add(1);
        let wait = timing::wait_with_retry_after(timing::backoff_wait(RETRY_BASE, self.code_failures), retry_after);
        self.code_request = Some(Slot::Due(Some(after(now, wait))));
    }

    /// Drains the pollers' events and acts on their results: the shown code's as [`Self::on_poll_result`] says;
    /// a replaced code's approval opens the session (R-QR-3), any other end of it just drops it.
    fn after_poller(&mut self, now: Instant) {
        let mut need_token = false;
        let mut result = None;
        let mut reports = Vec::new();
        if let Some(c) = &mut self.current {
            while let Some(ev) = c.poller.poll_event() {
                match ev {
                    PollerEvent::NeedDeviceToken => need_token = true,
                    PollerEvent::Finished => result = c.poller.take_result(),
                    PollerEvent::PeerViolation(r) => reports.push(r),
                }
            }
        }
        let mut granted = Vec::new();
        for c in &mut self.outgoing {
            while let Some(ev) = c.poller.poll_event() {
                match ev {
                    PollerEvent::NeedDeviceToken => need_token = true,
                    PollerEvent::Finished => {
                        if let Some(PollResult::Granted(t)) = c.poller.take_result() {
                            granted.push(t);
                        }
                    }
                    PollerEvent::PeerViolation(r) => reports.push(r),
                }
            }
        }
        for r in reports {
            self.report(r);
        }
        // Denied, expired or refused outgoing codes simply go: the display already shows their successor.
        self.outgoing.retain(|c| !c.poller.is_finished());
        if need_token {
            self.request_device_token();
        }
        if let Some(r) = result {
            self.on_poll_result(now, r);
        }
        for t in granted {
            if self.session.is_none() {
                // The user scanned the previous QR just before it changed: their approval still counts.
                self.start_session(now, *t, scope::RELEASE, None);
            } else {
                // A second approval in the same instant: that token is nobody's (RFC 7009).
                self.queue_revocation(now, &t.access_token);
            }
        }
    }

    /// The shown code's poll flow ended (PROTOCOL.md §8, RFC 8628 §3.5).
    fn on_poll_result(&mut self, now: Instant, result: PollResult) {
        match result {
            PollResult::Granted(t) => self.start_session(now, *t, scope::RELEASE, None),
            PollResult::Cancelled => {}
            PollResult::Denied | PollResult::InvalidGrant => {
                self.current = None;
                self.events.push_back(PanelEvent::QrDenied);
                self.fetch_code_now(now);
            }
            PollResult::Expired => {
                self.current = None;
                self.events.push_back(PanelEvent::QrExpired);
                self.fetch_code_now(now);
            }
            PollResult::Failed(_) | PollResult::ClientRejected => {
                self.current = None;
                self.events.push_back(PanelEvent::QrExpired);
                // A server refusing polls outright: back off before the next code (PROTOCOL.md §12).
                if matches!(self.code_request, None | Some(Slot::Due(_))) {
                    self.code_failed(now, None);
                }
            }
        }
    }

    /// Opens a user session with a QR grant or a PIN login (PROTOCOL.md §8).
    fn start_session(&mut self, now: Instant, t: TokenResponse, requested: &str, username: Option<&str>) {
        // Leave idle: the QR and the outgoing codes go away, their pending polls become stale (a token such a
        // poll still yields is revoked).
        let codes: Vec<ShownCode> = self.current.take().into_iter().chain(self.outgoing.drain(..)).collect();
        for mut c in codes {
            c.poller.cancel();
            if let Some(id) = c.poll {
                self.add_orphan(id);
            }
        }
        self.code_request = None;
        self.code_failures = 0;
        if self.password.as_ref().is_some_and(|p| p.purpose == PinPurpose::Login) {
            // A QR login overtook a PIN login: the PIN request is abandoned (R-PWD-1).
            self.abandon_password();
        }
        self.note_scope(requested, t.scope.as_deref());
        let user = t.user.clone().unwrap_or_else(|| TokenUser {
            id: String::new(),
            username: username.unwrap_or_default().to_owned(),
            display_name: None,
            email: None,
        });
        let token = user_token(now, t, requested);
        let scopes = token.scopes.clone();
        let via_pin = username.is_some();
        self.session = Some(UserSession { user: user.clone(), primary: token, step2: None });
        self.events.push_back(PanelEvent::SessionStarted { user, scopes: scopes.clone() });
        if via_pin {
            self.events.push_back(PanelEvent::Step2Granted { scopes });
        }
    }

    fn end_session(&mut self, now: Instant, kind: EndKind) {
        let Some(s) = self.session.take() else { return };
        if self.password.is_some() {
            self.abandon_password();
        }
        match kind {
            EndKind::Logout => {
                // RFC 7009 §2.1 / PROTOCOL.md §8: logout revokes both tokens, device-bound.
                self.queue_revocation(now, &s.primary.token);
                if let Some(t) = &s.step2 {
                    self.queue_revocation(now, &t.token);
                }
                self.events.push_back(PanelEvent::LoggedOut);
            }
            EndKind::Ended(reason) => self.events.push_back(PanelEvent::SessionEnded { reason }),
        }
        drop(s);
        self.code_failures = 0;
        self.code_token_failures = 0;
        self.code_request = Some(Slot::Due(Some(now)));
    }

    fn queue_revocation(&mut self, now: Instant, token: &AccessToken) {
        if self.revocations.len() >= MAX_REVOCATIONS {
            return;
        }
        self.revocations.push(PendingRevocation {
            request: RevocationRequest::access(token, &self.client_id),
            slot: Slot::Due(Some(now)),
            failures: 0,
            token_failures: 0,
        });
    }

    /// `err`: `None` for a transport failure.
    fn on_revocation_answer(&mut self, now: Instant, pos: usize, result: Result<(), Option<ResponseError>>) {
        let Some(r) = self.revocations.get_mut(pos) else { return };
        let (retryable, retry_after) = match &result {
            Ok(()) => {
                self.revocations.remove(pos);
                return;
            }
            Err(Some(e)) if e.is_token_rejected() => {
                r.token_failures = r.token_failures.saturating_add(1);
                if r.token_failures > MAX_DEVICE_TOKEN_RETRIES {
                    self.revocations.remove(pos);
                } else {
                    r.slot = Slot::AwaitingDeviceToken;
                    self.request_device_token();
                }
                return;
            }
            Err(Some(e)) => (e.is_retryable(), e.retry_after()),
            Err(None) => (true, None),
        };
        r.failures = r.failures.saturating_add(1);
        if !retryable || r.failures > MAX_REVOCATION_RETRIES {
            // Best-effort: dropped (a definite refusal, or the retries ran out). User tokens are short-lived.
            self.revocations.remove(pos);
            return;
        }
        let wait = timing::wait_with_retry_after(timing::backoff_wait(RETRY_BASE, r.failures), retry_after);
        r.slot = Slot::Due(Some(after(now, wait)));
    }

    fn on_password_answer(&mut self, now: Instant, result: Result<TokenResponse, ResponseError>) {
        let err = match result {
            Ok(t) => return self.password_granted(now, t),
            Err(e) => e,
        };
        if err.is_token_rejected() {
            // PROTOCOL.md §7: the device token was refused; retry the same request with a fresh one.
            let Some(p) = &mut self.password else { return };
            p.token_failures = p.token_failures.saturating_add(1);
            if p.token_failures > MAX_DEVICE_TOKEN_RETRIES {
                self.finish_password(PinRejectReason::Unavailable);
            } else {
                p.slot = Slot::AwaitingDeviceToken;
                self.request_device_token();
            }
            return;
        }
        if err.is_retryable() {
            return self.password_retry(now, err.retry_after());
        }
        // A definite answer: R-PWD-1, the secret goes now.
        let reason = match err.oauth_code() {
            Some(OAuthErrorCode::InvalidGrant) => PinRejectReason::WrongCredentials,
            _ => PinRejectReason::Refused,
        };
        self.finish_password(reason);
    }

    /// A lost or transient answer: re-send the same request (R-PWD-1) after a doubled wait, or give up.
    fn password_retry(&mut self, now: Instant, retry_after: Option<Duration>) {
        let max = self.config.max_password_retries;
        let Some(p) = &mut self.password else { return };
        if p.retries >= max {
            self.finish_password(PinRejectReason::Unavailable);
            return;
        }
        p.retries += 1;
        let wait = timing::wait_with_retry_after(timing::backoff_wait(RETRY_BASE, p.retries), retry_after);
        p.slot = Slot::Due(Some(after(now, wait)));
    }

    fn password_granted(&mut self, now: Instant, t: TokenResponse) {
        let Some(mut flow) = self.password.take() else { return };
        flow.password.wipe();
        let (purpose, username, requested) = (flow.purpose, std::mem::take(&mut flow.username), flow.scope);
        drop(flow);
        match (purpose, self.session.is_some()) {
            // A step-2 grant that does not carry print or scan is no step 2 (PROTOCOL.md §8): give it back.
            (PinPurpose::Step2, true)
                if t.scope
                    .as_deref()
                    .is_some_and(|sc| !scope::contains(sc, scope::PRINT) && !scope::contains(sc, scope::SCAN)) =>
            {
                self.queue_revocation(now, &t.access_token);
                self.events.push_back(PanelEvent::PinRejected { reason: PinRejectReason::Refused });
            }
            (PinPurpose::Step2, true) => {
                self.note_scope(requested, t.scope.as_deref());
                let token = user_token(now, t, requested);
                let scopes = token.scopes.clone();
                let old = self.session.as_mut().and_then(|s| s.step2.replace(token));
                if let Some(old) = old {
                    // A replaced step-2 token is not needed any more (RFC 7009).
                    self.queue_revocation(now, &old.token);
                }
                self.events.push_back(PanelEvent::Step2Granted { scopes });
            }
            (PinPurpose::Login, false) => self.start_session(now, t, requested, Some(&username)),
            // The session changed under the request (not reachable: such requests are abandoned).
            _ => self.queue_revocation(now, &t.access_token),
        }
    }

    /// Ends the password flow with a refusal; the secret is wiped now (R-PWD-1).
    fn finish_password(&mut self, reason: PinRejectReason) {
        if let Some(mut p) = self.password.take() {
            p.password.wipe();
            self.events.push_back(PanelEvent::PinRejected { reason });
        }
    }

    /// The session changed under an outstanding PIN entry: wipe the secret, forget the request; a token it may
    /// still yield is revoked.
    fn abandon_password(&mut self) {
        if let Some(p) = &self.password {
            if let Slot::InFlight(id) = p.slot {
                self.add_orphan(id);
            }
        }
        self.finish_password(PinRejectReason::Cancelled);
    }

    fn add_orphan(&mut self, id: PanelRequestId) {
        if self.orphans.len() >= MAX_ORPHANS {
            self.orphans.remove(0);
        }
        self.orphans.push(id);
    }
}

#[derive(Debug, Clone, Copy)]
enum EndKind {
    Logout,
    Ended(SessionEndReason),
}

/// `now + d`, saturating instead of panicking on overflow.
fn after(now: Instant, d: Duration) -> Instant {
    now.checked_add(d).unwrap_or(now)
}

fn user_token(now: Instant, t: TokenResponse, requested: &str) -> UserToken {
    // RFC 6749 §5.1: a response without `scope` grants the requested scope.
    let scopes = t.scope.as_deref().unwrap_or(requested).split_whitespace().map(str::to_owned).collect();
    let lifetime = t.expires_in.map_or(DEFAULT_USER_TOKEN_LIFETIME, |s| Duration::from_secs(s.min(MAX_LIFETIME_SECS)));
    UserToken { token: t.access_token, scopes, expires_at: after(now, lifetime) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::header::{AUTHORIZATION, RETRY_AFTER, WWW_AUTHENTICATE};

    const API: &str = "https://api.example";
    const CID: &str = "emb-acme";

    fn s(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    fn ep() -> Endpoints {
        Endpoints::conventional(API)
    }

    fn cfg(password: bool) -> PanelConfig {
        PanelConfig { allow_password_grant: password, ..PanelConfig::default() }
    }

    fn resp(status: u16, body: &str) -> Response<Vec<u8>> {
        Response::builder()
            .status(status)
            .header(http::header::CONTENT_TYPE, "application/json")
            // Credential answers carry no-store (R-SEC-1); its absence would be reported (docs/protocol.md §7).
            .header(http::header::CACHE_CONTROL, "no-store")
            .body(body.as_bytes().to_vec())
            .unwrap()
    }

    fn oauth_err(status: u16, code: &str) -> Response<Vec<u8>> {
        resp(status, &format!(r#"{{"error":"{code}"}}"#))
    }

    /// PROTOCOL.md §7: the device-bound refusal.
    fn invalid_client() -> Response<Vec<u8>> {
        let mut r = oauth_err(401, "invalid_client");
        r.headers_mut().insert(WWW_AUTHENTICATE, r#"Bearer realm="roger", error="invalid_token""#.parse().unwrap());
        r
    }

    fn unavailable() -> Response<Vec<u8>> {
        Response::builder().status(503).body(b"<html>down</html>".to_vec()).unwrap()
    }

    /// A user code of the Roger alphabet derived from `n` (distinct for distinct small `n`).
    fn user_code(n: u32) -> String {
        let mut v = n;
        (0..8)
            .map(|_| {
                let c = crate::user_code::ALPHABET[(v % 20) as usize] as char;
                v /= 20;
                c
            })
            .collect()
    }

    fn code_body(n: u32, expires_in: u64, interval: u64, with_uri: bool) -> String {
        let uc = user_code(n);
        let uri = if with_uri {
            format!(r#","verification_uri_complete":"{API}/device?user_code={uc}""#)
        } else {
            String::new()
        };
        format!(
            r#"{{"device_code":"dc-secret-{n}","user_code":"{uc}","verification_uri":"{API}/device"{uri},"expires_in":{expires_in},"interval":{interval},"request_id":"req-{n}"}}"#
        )
    }

    fn token_body(at: &str, scope: &str, username: &str, expires_in: u64) -> String {
        format!(
            r#"{{"access_token":"{at}","token_type":"Bearer","expires_in":{expires_in},"scope":"{scope}","user":{{"id":"u-{username}","username":"{username}"}}}}"#
        )
    }

    fn events(p: &mut PanelSession) -> Vec<PanelEvent> {
        std::iter::from_fn(|| p.poll_event()).collect()
    }

    fn transmits(p: &mut PanelSession, now: Instant) -> Vec<PanelTransmit> {
        std::iter::from_fn(|| p.poll_transmit(now)).collect()
    }

    fn one(p: &mut PanelSession, now: Instant) -> PanelTransmit {
        let mut t = transmits(p, now);
        assert_eq!(t.len(), 1, "{t:?}");
        t.remove(0)
    }

    /// A panel showing code 1 (120 s, interval 5 s), issued at `t0`.
    fn idle_with_qr(config: PanelConfig, t0: Instant) -> PanelSession {
        let mut p = PanelSession::new(config, CID, ep());
        let t = one(&mut p, t0);
        assert!(matches!(t, PanelTransmit::SessionCode { .. }), "{t:?}");
        p.handle_response(t0, t.id(), &resp(200, &code_body(1, 120, 5, true)));
        p
    }

    /// A panel in step 1 for alice (token `at-secret-1`), reached at `t0 + 5 s`.
    fn step1(config: PanelConfig, t0: Instant) -> PanelSession {
        let mut p = idle_with_qr(config, t0);
        let t = one(&mut p, t0 + s(5));
        assert!(matches!(t, PanelTransmit::Poll { .. }));
        p.handle_response(t0 + s(5), t.id(), &resp(200, &token_body("at-secret-1", "roger.release", "alice", 1200)));
        assert_eq!(p.state(), PanelState::Step1);
        events(&mut p);
        p
    }

    fn password_of(t: &PanelTransmit) -> (String, String, String) {
        match t {
            PanelTransmit::Password { request: TokenRequest::Password { username, password, scope, .. }, .. } => {
                (username.clone(), password.secret().to_owned(), scope.clone())
            }
            other => panic!("not a password request: {other:?}"),
        }
    }

    /// PROTOCOL.md §8 step 1 / §7: idle asks for a session code, `scope=roger.release`, device-bound.
    #[test]
    fn idle_requests_device_bound_session_code() {
        let t0 = Instant::now();
        let mut p = PanelSession::new(PanelConfig::default(), CID, ep());
        assert_eq!(p.state(), PanelState::Idle);
        let t = one(&mut p, t0);
        let PanelTransmit::SessionCode { request, .. } = &t else { panic!("{t:?}") };
        assert_eq!(request, &DeviceAuthorizationRequest::session(CID));
        let req = t.to_http(&ep(), Some(&AccessToken::new("dev"))).unwrap();
        assert_eq!(req.uri(), "https://api.example/oauth/device_authorization");
        assert_eq!(req.headers()[AUTHORIZATION], "Bearer dev");
        assert_eq!(String::from_utf8(req.body().clone()).unwrap(), "client_id=emb-acme&scope=roger.release");
        assert!(p.poll_transmit(t0).is_none(), "one code request at a time");
    }

    /// R-QR-1 (RFC 8628 §3.3.1): the user code is always shown with the QR, as `XXXX-XXXX`.
    #[test]
    fn user_code_shown_with_qr() {
        let t0 = Instant::now();
        let mut p = idle_with_qr(PanelConfig::default(), t0);
        let uc = user_code(1);
        let ev = events(&mut p);
        let [PanelEvent::ShowQr(qr)] = ev.as_slice() else { panic!("{ev:?}") };
        assert_eq!(qr.user_code_display, format!("{}-{}", &uc[..4], &uc[4..]));
        assert_eq!(qr.verification_uri_complete.as_ref().unwrap().secret(), format!("{API}/device?user_code={uc}"));
        assert_eq!(qr.expires_at, t0 + s(120));
        assert_eq!(qr.request_id.as_deref(), Some("req-1"));
        assert_eq!(p.current_qr(), Some(qr));
        // R-SEC-1: Debug redacts the code.
        let dbg = format!("{qr:?} {p:?}");
        assert!(!dbg.contains(&uc[..4]), "{dbg}");

        // Server omitted verification_uri_complete (RFC 8628 §3.2 OPTIONAL): no QR, the URI and the code in text,
        // reported once (docs/protocol.md §7).
        let mut p = PanelSession::new(PanelConfig::default(), CID, ep());
        let t = one(&mut p, t0);
        p.handle_response(t0, t.id(), &resp(200, &code_body(7, 120, 5, false)));
        let ev = events(&mut p);
        let [PanelEvent::PeerViolation(r), PanelEvent::ShowQr(qr)] = ev.as_slice() else { panic!("{ev:?}") };
        assert_eq!(r.violation, PeerViolation::MissingVerificationUriComplete);
        assert_eq!(qr.verification_uri_complete, None);
        assert_eq!(qr.verification_uri, Some(format!("{API}/device")));
        assert_eq!(qr.user_code_display.len(), 9);
    }

    /// R-QR-3: the next code is fetched 10 s before expiry; when it arrives it replaces the old one on the display
    /// at once, and the old one is still polled (at its own interval) until it expires.
    #[test]
    fn qr_renewed_10s_before_expiry() {
        let t0 = Instant::now();
        let mut p = idle_with_qr(PanelConfig::default(), t0);
        events(&mut p);
        // Answer the polls until just before the renewal.
        loop {
            let t = p.poll_timeout().unwrap();
            if t >= t0 + s(110) {
                break;
            }
            p.handle_timeout(t);
            for tx in transmits(&mut p, t) {
                assert!(matches!(tx, PanelTransmit::Poll { .. }), "only polls before the renewal: {tx:?}");
                p.handle_response(t, tx.id(), &oauth_err(400, "authorization_pending"));
            }
        }
        assert_eq!(p.poll_timeout(), Some(t0 + s(110)));
        assert!(!transmits(&mut p, t0 + s(109)).iter().any(|x| matches!(x, PanelTransmit::SessionCode { .. })));
        let txs = transmits(&mut p, t0 + s(110));
        let code = txs.iter().find(|x| matches!(x, PanelTransmit::SessionCode { .. })).expect("renewal at 110 s");
        for tx in txs.iter().filter(|x| matches!(x, PanelTransmit::Poll { .. })) {
            p.handle_response(t0 + s(110), tx.id(), &oauth_err(400, "authorization_pending"));
        }
        p.handle_response(t0 + s(110), code.id(), &resp(200, &code_body(2, 120, 5, true)));
        let ev = events(&mut p);
        let [PanelEvent::ShowQr(qr)] = ev.as_slice() else { panic!("{ev:?}") };
        assert_eq!(qr.request_id.as_deref(), Some("req-2"));
        assert_eq!(p.current_qr().unwrap().request_id.as_deref(), Some("req-2"));
        let outgoing: Vec<_> = p.outgoing_qrs().map(|q| q.request_id.clone()).collect();
        assert_eq!(outgoing, vec![Some("req-1".to_owned())]);
        // At 115 s both codes are due: the new one 5 s after it arrived, the old one 5 s after its last poll.
        assert_eq!(p.poll_timeout(), Some(t0 + s(115)));
        let mut polled: Vec<String> = transmits(&mut p, t0 + s(115))
            .into_iter()
            .map(|tx| {
                let PanelTransmit::Poll { id, request: TokenRequest::DeviceCode { device_code, .. } } = tx else {
                    panic!("{tx:?}")
                };
                p.handle_response(t0 + s(115), id, &oauth_err(400, "authorization_pending"));
                device_code.secret().to_owned()
            })
            .collect();
        polled.sort();
        assert_eq!(polled, vec!["dc-secret-1", "dc-secret-2"]);
        // The old code is polled up to its expiry at 120 s and never after; its end changes nothing on display.
        p.handle_timeout(t0 + s(120));
        assert_eq!(p.outgoing_qrs().count(), 0);
        assert!(events(&mut p).is_empty(), "no QrExpired: the display already shows the successor");
        let tx = one(&mut p, t0 + s(120));
        let PanelTransmit::Poll { request: TokenRequest::DeviceCode { device_code, .. }, .. } = tx else {
            panic!("{tx:?}")
        };
        assert_eq!(device_code.secret(), "dc-secret-2");
    }

    /// Answers every due request with `authorization_pending` (polls) up to `until`, returning the last instant.
    fn pending_until(p: &mut PanelSession, until: Instant) {
        while let Some(t) = p.poll_timeout().filter(|t| *t < until) {
            p.handle_timeout(t);
            for tx in transmits(p, t) {
                assert!(matches!(tx, PanelTransmit::Poll { .. }), "only polls: {tx:?}");
                p.handle_response(t, tx.id(), &oauth_err(400, "authorization_pending"));
            }
        }
    }

    /// R-QR-3 (SHOULD; docs/protocol.md §5.3): a user who scanned the QR just before it changed still signs in.
    /// The renewal replaces the QR even while a poll of the old code is in flight; that poll's answer and the
    /// later polls of the old code still count, and its approval opens the session.
    #[test]
    fn approval_of_outgoing_code_opens_session() {
        let t0 = Instant::now();
        let mut p = idle_with_qr(PanelConfig::default(), t0);
        events(&mut p);
        pending_until(&mut p, t0 + s(110));
        let txs = transmits(&mut p, t0 + s(110));
        let code = txs.iter().find(|x| matches!(x, PanelTransmit::SessionCode { .. })).expect("renewal").id();
        let old_poll = txs.iter().find(|x| matches!(x, PanelTransmit::Poll { .. })).expect("old code's poll").id();
        // The renewal arrives while the old code's poll is out: shown at once (R-QR-3 "as soon as it has it").
        p.handle_response(t0 + s(110), code, &resp(200, &code_body(2, 120, 5, true)));
        let ev = events(&mut p);
        assert!(matches!(ev.as_slice(), [PanelEvent::ShowQr(q)] if q.request_id.as_deref() == Some("req-2")), "{ev:?}");
        assert_eq!(p.outstanding_requests(), 1, "the old code's poll is still awaited");
        p.handle_response(t0 + s(111), old_poll, &oauth_err(400, "authorization_pending"));
        // At 115 s: the user approved the old code in its last seconds; its poll is answered with the token.
        let mut new_poll = None;
        for tx in transmits(&mut p, t0 + s(115)) {
            let PanelTransmit::Poll { id, request: TokenRequest::DeviceCode { device_code, .. } } = &tx else {
                panic!("{tx:?}")
            };
            if device_code.secret() == "dc-secret-1" {
                p.handle_response(
                    t0 + s(115),
                    *id,
                    &resp(200, &token_body("at-secret-1", "roger.release", "alice", 1200)),
                );
            } else {
                new_poll = Some(*id);
            }
        }
        let ev = events(&mut p);
        assert!(
            matches!(ev.as_slice(), [PanelEvent::SessionStarted { user, .. }] if user.username == "alice"),
            "{ev:?}"
        );
        assert_eq!(p.state(), PanelState::Step1);
        assert!(p.current_qr().is_none() && p.outgoing_qrs().count() == 0);
        assert_eq!(p.release_token().unwrap().secret(), "at-secret-1");
        // The new code's poll was abandoned with the QR; a token it still yields is nobody's and is revoked.
        let new_poll = new_poll.expect("the new code was polled too");
        p.handle_response(t0 + s(115), new_poll, &resp(200, &token_body("at-secret-2", "roger.release", "bob", 1200)));
        assert_eq!(p.user().unwrap().username, "alice");
        let PanelTransmit::Revoke { request, .. } = one(&mut p, t0 + s(115)) else { panic!() };
        assert_eq!(request.token.secret(), "at-secret-2");
    }

    /// R-QR-3 / PROTOCOL.md §8: a doorbell for the outgoing code brings its poll forward; a denial of it changes
    /// nothing on display (the successor stays, no QrDenied).
    #[test]
    fn outgoing_code_doorbell_and_denial() {
        let t0 = Instant::now();
        let mut p = idle_with_qr(PanelConfig::default(), t0);
        p.set_push_healthy(true); // relaxed cadence: only a doorbell makes an early poll
        events(&mut p);
        pending_until(&mut p, t0 + s(110));
        let code = transmits(&mut p, t0 + s(110))
            .into_iter()
            .find(|x| matches!(x, PanelTransmit::SessionCode { .. }))
            .expect("renewal at 110 s");
        p.handle_response(t0 + s(110), code.id(), &resp(200, &code_body(2, 120, 5, true)));
        events(&mut p);
        let before = p.poll_timeout().unwrap();
        assert!(before > t0 + s(116), "relaxed polling with push healthy: {:?}", before - t0);
        p.handle_doorbell(t0 + s(116), "req-1");
        let tx = one(&mut p, t0 + s(116));
        let PanelTransmit::Poll { id, request: TokenRequest::DeviceCode { device_code, .. } } = tx else {
            panic!("{tx:?}")
        };
        assert_eq!(device_code.secret(), "dc-secret-1");
        p.handle_response(t0 + s(116), id, &oauth_err(400, "access_denied"));
        assert!(events(&mut p).is_empty(), "the denial of a replaced code is silent");
        assert_eq!(p.outgoing_qrs().count(), 0);
        assert_eq!(p.current_qr().unwrap().request_id.as_deref(), Some("req-2"));
        assert_eq!(p.state(), PanelState::Idle);
        assert!(!transmits(&mut p, t0 + s(117)).iter().any(|x| matches!(x, PanelTransmit::SessionCode { .. })));
    }

    /// R-QR-4 (MFP side, RFC 8628 §5.4): a session code whose `verification_uri_complete` is on another origin is
    /// not displayed; the canonical `{api}/device?user_code=…` is, with the same user code, and the violation is
    /// reported. The code itself still works.
    #[test]
    fn foreign_session_qr_is_not_displayed() {
        let t0 = Instant::now();
        let mut p = PanelSession::new(PanelConfig::default(), CID, ep());
        let tx = one(&mut p, t0);
        let foreign = code_body(1, 120, 5, true).replace(
            &format!(r#""verification_uri_complete":"{API}"#),
            r#""verification_uri_complete":"https://phish.example"#,
        );
        assert!(foreign.contains("phish.example/device?user_code="));
        p.handle_response(t0, tx.id(), &resp(200, &foreign));
        let ev = events(&mut p);
        let [PanelEvent::PeerViolation(r), PanelEvent::ShowQr(qr)] = ev.as_slice() else { panic!("{ev:?}") };
        assert_eq!(*r, PeerReport::refused(crate::device_authorization::ENDPOINT, PeerViolation::ForeignQrOrigin));
        let uc = user_code(1);
        assert_eq!(qr.verification_uri_complete.as_ref().unwrap().secret(), format!("{API}/device?user_code={uc}"));
        assert_eq!(qr.user_code_display, format!("{}-{}", &uc[..4], &uc[4..]));
        assert_eq!(p.current_qr(), Some(qr));
        // An own-origin payload raises nothing.
        let mut p = PanelSession::new(PanelConfig::default(), CID, ep());
        let tx = one(&mut p, t0);
        p.handle_response(t0, tx.id(), &resp(200, &code_body(1, 120, 5, true)));
        assert!(matches!(events(&mut p).as_slice(), [PanelEvent::ShowQr(_)]));
        // And the code of the refused payload is still polled and redeemable.
        let mut p = PanelSession::new(PanelConfig::default(), CID, ep());
        let tx = one(&mut p, t0);
        p.handle_response(t0, tx.id(), &resp(200, &foreign));
        let tx = one(&mut p, t0 + s(5));
        p.handle_response(t0 + s(5), tx.id(), &resp(200, &token_body("at-secret-1", "roger.release", "alice", 1200)));
        assert_eq!(p.state(), PanelState::Step1);
    }

    /// R-QR-3 + PROTOCOL.md §12: a failed renewal backs off; the old QR stays until it expires.
    #[test]
    fn failed_renewal_backs_off_and_keeps_old_qr() {
        let t0 = Instant::now();
        let mut p = idle_with_qr(PanelConfig::default(), t0);
        p.set_push_healthy(true); // relaxed polling: fewer polls to answer
        events(&mut p);
        let mut t = t0 + s(110);
        let mut waits = Vec::new();
        let mut last_code_at = None;
        while t < t0 + s(121) {
            for tx in transmits(&mut p, t) {
                match tx {
                    PanelTransmit::SessionCode { id, .. } => {
                        if let Some(l) = last_code_at {
                            waits.push(t - l);
                        }
                        last_code_at = Some(t);
                        p.handle_response(t, id, &unavailable());
                    }
                    PanelTransmit::Poll { id, .. } => {
                        p.handle_response(t, id, &oauth_err(400, "authorization_pending"))
                    }
                    other => panic!("{other:?}"),
                }
            }
            if t < t0 + s(120) {
                assert!(p.current_qr().is_some(), "old QR still shown at {:?}", t - t0);
            }
            t = p.poll_timeout().unwrap().max(t);
            p.handle_timeout(t);
        }
        assert_eq!(waits, vec![s(2), s(4)], "doubling waits from a 1 s base");
        assert!(events(&mut p).contains(&PanelEvent::QrExpired));
        assert!(p.current_qr().is_none());
    }

    /// PROTOCOL.md §8 / R-PUSH-1: a doorbell for the shown code's request_id brings the poll forward; others don't.
    #[test]
    fn doorbell_forwarded_by_request_id() {
        let t0 = Instant::now();
        let mut p = idle_with_qr(PanelConfig::default(), t0);
        events(&mut p);
        p.set_push_healthy(true);
        let t = one(&mut p, t0 + s(30));
        p.handle_response(t0 + s(30), t.id(), &oauth_err(400, "authorization_pending"));
        assert_eq!(p.poll_timeout(), Some(t0 + s(60)), "relaxed cadence with push healthy");
        p.handle_doorbell(t0 + s(31), "req-other");
        assert_eq!(p.poll_timeout(), Some(t0 + s(60)), "another request's doorbell is ignored");
        p.handle_doorbell(t0 + s(31), "req-1");
        assert_eq!(p.poll_timeout(), Some(t0 + s(35)), "earliest moment the interval allows (R-POLL-1)");
        assert!(p.poll_transmit(t0 + s(34)).is_none());
        let t = one(&mut p, t0 + s(35));
        p.handle_response(t0 + s(35), t.id(), &resp(200, &token_body("at-secret-1", "roger.release", "alice", 1200)));
        let ev = events(&mut p);
        assert!(
            matches!(ev.as_slice(), [PanelEvent::SessionStarted { user, scopes }] if user.username == "alice" && scopes == &["roger.release"]),
            "{ev:?}"
        );
        assert_eq!(p.state(), PanelState::Step1);
        assert!(p.current_qr().is_none());
        assert_eq!(p.user_token().unwrap().secret(), "at-secret-1");
        assert_eq!(p.release_token().unwrap().secret(), "at-secret-1");
    }

    /// RFC 8628 §3.5: a denied code is replaced by a fresh one, nothing alarming.
    #[test]
    fn denied_code_fetches_fresh_qr() {
        let t0 = Instant::now();
        let mut p = idle_with_qr(PanelConfig::default(), t0);
        events(&mut p);
        let t = one(&mut p, t0 + s(5));
        p.handle_response(t0 + s(5), t.id(), &oauth_err(400, "access_denied"));
        assert_eq!(events(&mut p), vec![PanelEvent::QrDenied]);
        assert_eq!(p.state(), PanelState::Idle);
        let t = one(&mut p, t0 + s(5));
        assert!(matches!(t, PanelTransmit::SessionCode { .. }));
    }

    /// RFC 9700 §2.4 / PROTOCOL.md §8: the password grant is off unless enabled.
    #[test]
    fn ropc_disabled_by_default() {
        assert!(!PanelConfig::default().allow_password_grant);
        assert_eq!(PanelConfig::default().max_password_retries, 2);
        let t0 = Instant::now();
        let mut p = step1(PanelConfig::default(), t0);
        assert_eq!(p.enter_pin(t0 + s(6), None, Password::new("sekret")), Err(PanelError::PasswordGrantDisabled));
        assert!(!p.holds_password());
        assert!(transmits(&mut p, t0 + s(6)).is_empty());
    }

    /// PROTOCOL.md §8: step 2 is for the step-1 user only (refused locally); a PIN login needs a user name.
    #[test]
    fn wrong_user_refused_locally() {
        let t0 = Instant::now();
        let mut p = step1(cfg(true), t0);
        let t = t0 + s(6);
        assert_eq!(p.enter_pin(t, Some("bob"), Password::new("sekret")), Err(PanelError::WrongUser));
        assert!(!p.holds_password());
        assert!(transmits(&mut p, t).is_empty());
        // The step-1 user (any case) is accepted, sent in the step-1 spelling.
        p.enter_pin(t, Some("ALICE"), Password::new("sekret")).unwrap();
        let (u, _, scope) = password_of(&one(&mut p, t));
        assert_eq!((u.as_str(), scope.as_str()), ("alice", scope::STEP2));
        assert_eq!(p.enter_pin(t, None, Password::new("x")), Err(PanelError::PinInProgress));

        let mut idle = PanelSession::new(cfg(true), CID, ep());
        assert_eq!(idle.enter_pin(t0, None, Password::new("sekret")), Err(PanelError::UsernameRequired));
        assert_eq!(idle.enter_pin(t0, Some("  "), Password::new("sekret")), Err(PanelError::UsernameRequired));
    }

    /// RFC 6749 §4.3.2 / PROTOCOL.md §8 / R-PWD-1: step 2 from step 1; the PIN is wiped with the answer.
    #[test]
    fn step2_granted_and_pin_wiped() {
        let t0 = Instant::now();
        let mut p = step1(cfg(true), t0);
        let t = t0 + s(6);
        p.enter_pin(t, None, Password::new("sekret-1234")).unwrap();
        assert!(p.holds_password());
        let tx = one(&mut p, t);
        assert_eq!(password_of(&tx), ("alice".into(), "sekret-1234".into(), scope::STEP2.into()));
        let req = tx.to_http(&ep(), Some(&AccessToken::new("dev"))).unwrap();
        assert_eq!(req.uri(), "https://api.example/oauth/token");
        assert_eq!(req.headers()[AUTHORIZATION], "Bearer dev", "device-bound (PROTOCOL.md §7)");
        let id = tx.id();
        drop(tx);
        assert!(!format!("{p:?}").contains("sekret"), "Debug redacts the PIN (R-SEC-1)");
        p.handle_response(t, id, &resp(200, &token_body("at-secret-2", scope::STEP2, "alice", 600)));
        assert!(!p.holds_password(), "R-PWD-1: wiped after the answer");
        assert_eq!(
            events(&mut p),
            vec![PanelEvent::Step2Granted { scopes: vec!["roger.print".into(), "roger.scan".into()] }]
        );
        assert_eq!(p.state(), PanelState::Step2);
        assert_eq!(p.user_token().unwrap().secret(), "at-secret-2");
        assert_eq!(p.release_token().unwrap().secret(), "at-secret-1");
        assert_eq!(p.scopes(), vec!["roger.release", "roger.print", "roger.scan"]);
        // The step-2 token expires before the session: back to step 1.
        p.handle_timeout(t + s(600));
        assert_eq!(events(&mut p), vec![PanelEvent::Step2Expired]);
        assert_eq!(p.state(), PanelState::Step1);
        assert_eq!(p.user_token().unwrap().secret(), "at-secret-1");
    }

    /// docs/protocol.md §7, RFC 6749 §3.3: a step-2 grant narrower than requested (print, no scan) is used as granted:
    /// the panel offers print only, and reports the narrowing once.
    #[test]
    fn narrowed_step2_grant_is_used_as_granted() {
        let t0 = Instant::now();
        let mut p = step1(cfg(true), t0);
        let t = t0 + s(6);
        p.enter_pin(t, None, Password::new("sekret")).unwrap();
        let tx = one(&mut p, t);
        p.handle_response(t, tx.id(), &resp(200, &token_body("at-2", scope::PRINT, "alice", 600)));
        let ev = events(&mut p);
        let [PanelEvent::PeerViolation(r), PanelEvent::Step2Granted { scopes }] = ev.as_slice() else {
            panic!("{ev:?}")
        };
        assert_eq!(*r, PeerReport::tolerated(crate::token::ENDPOINT, PeerViolation::ScopeNarrowed));
        assert_eq!(scopes, &["roger.print"]);
        assert_eq!(p.scopes(), vec!["roger.release", "roger.print"], "no roger.scan: no scan is offered");
    }

    /// PROTOCOL.md §8 / R-PWD-2: invalid_grant → wrong credentials, state unchanged, PIN wiped (R-PWD-1).
    #[test]
    fn invalid_grant_rejects_pin_and_wipes() {
        let t0 = Instant::now();
        let mut p = step1(cfg(true), t0);
        let t = t0 + s(6);
        p.enter_pin(t, None, Password::new("sekret")).unwrap();
        let tx = one(&mut p, t);
        p.handle_response(t, tx.id(), &oauth_err(400, "invalid_grant"));
        assert!(!p.holds_password());
        assert_eq!(events(&mut p), vec![PanelEvent::PinRejected { reason: PinRejectReason::WrongCredentials }]);
        assert_eq!(p.state(), PanelState::Step1);
        assert!(transmits(&mut p, t + s(100)).iter().all(|x| !matches!(x, PanelTransmit::Password { .. })));
    }

    /// R-PWD-1 / PROTOCOL.md §12: transient answers re-send the same request with backoff; after
    /// `max_password_retries` the PIN is wiped and the entry reported unavailable.
    #[test]
    fn pin_retried_as_same_request_then_wiped() {
        let t0 = Instant::now();
        let mut p = step1(cfg(true), t0);
        let mut t = t0 + s(6);
        p.enter_pin(t, Some("alice"), Password::new("sekret")).unwrap();
        let first = one(&mut p, t);
        p.handle_transport_error(t, first.id());
        assert!(p.holds_password(), "kept for the retry of the same request");
        assert_eq!(p.poll_timeout(), Some(t + s(2)));
        assert!(transmits(&mut p, t + s(1)).is_empty());
        t += s(2);
        let second = one(&mut p, t);
        assert_ne!(second.id(), first.id());
        assert_eq!(password_of(&second), password_of(&first), "re-sent only as the same request");
        let mut r429 = oauth_err(429, "temporarily_unavailable");
        r429.headers_mut().insert(RETRY_AFTER, "9".parse().unwrap());
        p.handle_response(t, second.id(), &r429);
        assert!(p.holds_password());
        assert_eq!(p.poll_timeout(), Some(t + s(9)), "Retry-After: the longer wait wins");
        t += s(9);
        let third = one(&mut p, t);
        assert_eq!(password_of(&third), password_of(&first));
        p.handle_response(t, third.id(), &unavailable());
        assert!(!p.holds_password(), "retries ran out: wiped");
        assert_eq!(events(&mut p), vec![PanelEvent::PinRejected { reason: PinRejectReason::Unavailable }]);
        assert!(transmits(&mut p, t + s(60)).iter().all(|x| !matches!(x, PanelTransmit::Password { .. })));
        // A late answer to an old attempt is ignored.
        p.handle_response(t, second.id(), &resp(200, &token_body("at-secret-9", scope::STEP2, "alice", 600)));
        assert_eq!(p.state(), PanelState::Step1);
    }

    /// PROTOCOL.md §7 / R-TOK-1: invalid_client asks for a fresh device token and retries the same request.
    #[test]
    fn invalid_client_needs_device_token_then_retries() {
        let t0 = Instant::now();
        // The session-code request.
        let mut p = PanelSession::new(cfg(true), CID, ep());
        let tx = one(&mut p, t0);
        p.handle_response(t0, tx.id(), &invalid_client());
        assert_eq!(events(&mut p), vec![PanelEvent::NeedDeviceToken]);
        assert!(transmits(&mut p, t0 + s(30)).is_empty(), "waits for the device token");
        p.handle_device_token(t0 + s(30));
        let tx = one(&mut p, t0 + s(30));
        assert!(matches!(tx, PanelTransmit::SessionCode { .. }));
        p.handle_response(t0 + s(30), tx.id(), &resp(200, &code_body(1, 120, 5, true)));
        events(&mut p);
        // The code poll.
        let t1 = t0 + s(35);
        let tx = one(&mut p, t1);
        p.handle_response(t1, tx.id(), &invalid_client());
        assert_eq!(events(&mut p), vec![PanelEvent::NeedDeviceToken]);
        p.handle_device_token(t1 + s(1));
        assert!(p.poll_transmit(t1 + s(1)).is_none(), "not closer than the interval (R-POLL-1)");
        let tx = one(&mut p, t1 + s(5));
        p.handle_response(t1 + s(5), tx.id(), &resp(200, &token_body("at-secret-1", "roger.release", "alice", 1200)));
        events(&mut p);
        // The password request: the secret is kept across the refusal, then the same request goes again.
        let t2 = t1 + s(6);
        p.enter_pin(t2, None, Password::new("sekret")).unwrap();
        let first = one(&mut p, t2);
        p.handle_response(t2, first.id(), &invalid_client());
        assert_eq!(events(&mut p), vec![PanelEvent::NeedDeviceToken]);
        assert!(p.holds_password());
        p.handle_device_token(t2 + s(1));
        let again = one(&mut p, t2 + s(1));
        assert_eq!(password_of(&again), password_of(&first));
        p.handle_response(t2 + s(1), again.id(), &resp(200, &token_body("at-secret-2", scope::STEP2, "alice", 600)));
        assert!(!p.holds_password());
        assert_eq!(p.state(), PanelState::Step2);
    }

    /// PROTOCOL.md §8 "End" / RFC 7009 §2.1: logout revokes both tokens, device-bound, and goes idle with a new QR.
    #[test]
    fn logout_revokes_both_tokens() {
        let t0 = Instant::now();
        let mut p = step1(cfg(true), t0);
        let t = t0 + s(6);
        p.enter_pin(t, None, Password::new("sekret")).unwrap();
        let tx = one(&mut p, t);
        p.handle_response(t, tx.id(), &resp(200, &token_body("at-secret-2", scope::STEP2, "alice", 600)));
        events(&mut p);
        p.logout(t + s(1));
        assert_eq!(p.state(), PanelState::Idle);
        assert!(p.user_token().is_none() && p.user().is_none());
        assert_eq!(events(&mut p), vec![PanelEvent::LoggedOut]);
        let txs = transmits(&mut p, t + s(1));
        let mut revoked: Vec<String> = txs
            .iter()
            .filter_map(|x| match x {
                PanelTransmit::Revoke { request, .. } => {
                    assert_eq!(request.token_type_hint, Some(crate::revocation::TokenTypeHint::AccessToken));
                    assert_eq!(request.client_id, CID);
                    let req = x.to_http(&ep(), Some(&AccessToken::new("dev"))).unwrap();
                    assert_eq!(req.uri(), "https://api.example/oauth/revoke");
                    assert_eq!(req.headers()[AUTHORIZATION], "Bearer dev");
                    Some(request.token.secret().to_owned())
                }
                _ => None,
            })
            .collect();
        revoked.sort();
        assert_eq!(revoked, vec!["at-secret-1", "at-secret-2"]);
        assert!(txs.iter().any(|x| matches!(x, PanelTransmit::SessionCode { .. })), "fresh QR at once");
        assert_eq!(txs.len(), 3);
        // Revocations are best-effort: 3 retries of a transient failure, then dropped.
        let mut now = t + s(1);
        let mut rev = txs.into_iter().find(|x| matches!(x, PanelTransmit::Revoke { .. })).unwrap();
        for attempt in 0..=MAX_REVOCATION_RETRIES {
            p.handle_response(now, rev.id(), &unavailable());
            if attempt == MAX_REVOCATION_RETRIES {
                break;
            }
            now += timing::backoff_wait(RETRY_BASE, attempt + 1);
            let retry = transmits(&mut p, now);
            assert_eq!(retry.len(), 1, "{retry:?}");
            assert_eq!(
                retry[0].clone(),
                PanelTransmit::Revoke {
                    id: retry[0].id(),
                    request: match &rev {
                        PanelTransmit::Revoke { request, .. } => request.clone(),
                        _ => unreachable!(),
                    }
                }
            );
            rev = retry.into_iter().next().unwrap();
        }
        assert!(transmits(&mut p, now + s(600)).iter().all(|x| !matches!(x, PanelTransmit::Revoke { .. })));
        assert!(events(&mut p).iter().all(|e| !matches!(e, PanelEvent::NeedDeviceToken)));
    }

    /// PROTOCOL.md §8 "End", §11: push session.ended drops the tokens (no revocation) and goes idle.
    #[test]
    fn session_ended_goes_idle() {
        let t0 = Instant::now();
        let mut p = step1(PanelConfig::default(), t0);
        p.handle_session_ended(t0 + s(7));
        assert_eq!(p.state(), PanelState::Idle);
        assert!(p.user_token().is_none());
        assert_eq!(events(&mut p), vec![PanelEvent::SessionEnded { reason: SessionEndReason::ServerEnded }]);
        let t = one(&mut p, t0 + s(7));
        assert!(matches!(t, PanelTransmit::SessionCode { .. }), "fresh QR, no revocation: {t:?}");
        // A second end is a no-op.
        p.handle_user_token_rejected(t0 + s(8));
        assert!(events(&mut p).is_empty());
    }

    /// PROTOCOL.md §8: user tokens have no refresh token; the session ends when the step-1 token expires.
    #[test]
    fn session_token_expiry_ends_session() {
        let t0 = Instant::now();
        let mut p = step1(PanelConfig::default(), t0);
        assert_eq!(p.poll_timeout(), Some(t0 + s(5) + s(1200)));
        p.handle_timeout(t0 + s(1000));
        assert_eq!(p.state(), PanelState::Step1, "spurious timeout is a no-op");
        p.handle_timeout(t0 + s(1205));
        assert_eq!(events(&mut p), vec![PanelEvent::SessionEnded { reason: SessionEndReason::Expired }]);
        assert!(matches!(one(&mut p, t0 + s(1205)), PanelTransmit::SessionCode { .. }));
    }

    /// PROTOCOL.md §8: the PIN login from idle yields one token with all three scopes.
    #[test]
    fn pin_login_from_idle() {
        let t0 = Instant::now();
        let mut p = idle_with_qr(cfg(true), t0);
        events(&mut p);
        p.enter_pin(t0 + s(1), Some("bob"), Password::new("sekret")).unwrap();
        let tx = one(&mut p, t0 + s(1));
        assert_eq!(password_of(&tx), ("bob".into(), "sekret".into(), scope::PIN_LOGIN.into()));
        // A code poll goes out meanwhile; its answer arrives after the login and is stale.
        let poll = one(&mut p, t0 + s(5));
        p.handle_response(t0 + s(5), tx.id(), &resp(200, &token_body("at-secret-3", scope::PIN_LOGIN, "bob", 1200)));
        assert!(!p.holds_password());
        let ev = events(&mut p);
        assert!(
            matches!(&ev[..], [PanelEvent::SessionStarted { user, .. }, PanelEvent::Step2Granted { .. }] if user.username == "bob"),
            "{ev:?}"
        );
        assert_eq!(p.state(), PanelState::Step2);
        assert!(p.current_qr().is_none());
        assert_eq!(p.user_token(), p.release_token());
        // The orphaned poll still minted a token: it is revoked, and the session is unchanged.
        p.handle_response(t0 + s(5), poll.id(), &resp(200, &token_body("at-secret-4", "roger.release", "alice", 1200)));
        assert_eq!(p.user().unwrap().username, "bob");
        let PanelTransmit::Revoke { request, .. } = one(&mut p, t0 + s(5)) else { panic!() };
        assert_eq!(request.token.secret(), "at-secret-4");
        // Logout revokes the single session token.
        p.logout(t0 + s(6));
        let revokes =
            transmits(&mut p, t0 + s(6)).into_iter().filter(|x| matches!(x, PanelTransmit::Revoke { .. })).count();
        assert_eq!(revokes, 1);
    }

    /// R-PWD-1: a logout while the PIN is being checked wipes it; a late success is revoked, not used.
    #[test]
    fn logout_during_pin_check_wipes_and_revokes_late_token() {
        let t0 = Instant::now();
        let mut p = step1(cfg(true), t0);
        let t = t0 + s(6);
        p.enter_pin(t, None, Password::new("sekret")).unwrap();
        let tx = one(&mut p, t);
        p.logout(t);
        assert!(!p.holds_password());
        let ev = events(&mut p);
        assert!(
            ev.contains(&PanelEvent::PinRejected { reason: PinRejectReason::Cancelled })
                && ev.contains(&PanelEvent::LoggedOut)
        );
        transmits(&mut p, t);
        p.handle_response(t, tx.id(), &resp(200, &token_body("at-secret-2", scope::STEP2, "alice", 600)));
        assert_eq!(p.state(), PanelState::Idle);
        assert!(p.user_token().is_none());
        let PanelTransmit::Revoke { request, .. } = one(&mut p, t) else { panic!() };
        assert_eq!(request.token.secret(), "at-secret-2");
    }

    /// Unknown and stale ids are ignored; a spurious timeout changes nothing.
    #[test]
    fn stale_ids_and_spurious_timeouts_are_ignored() {
        let t0 = Instant::now();
        let mut p = idle_with_qr(PanelConfig::default(), t0);
        events(&mut p);
        p.handle_response(t0, PanelRequestId(999), &resp(200, &token_body("at-x", "roger.release", "eve", 10)));
        p.handle_transport_error(t0, PanelRequestId(998));
        p.handle_response(t0, PanelRequestId(1), &resp(200, &code_body(3, 120, 5, true)));
        p.handle_timeout(t0 + s(1));
        p.handle_timeout(t0);
        assert_eq!(p.state(), PanelState::Idle);
        assert!(events(&mut p).is_empty());
        assert_eq!(p.current_qr().unwrap().request_id.as_deref(), Some("req-1"));
        assert_eq!(p.poll_timeout(), Some(t0 + s(5)));
    }

    /// Hostile numbers from the server never panic (no Instant overflow).
    #[test]
    fn huge_lifetimes_do_not_panic() {
        let t0 = Instant::now();
        let mut p = PanelSession::new(PanelConfig::default(), CID, ep());
        let tx = one(&mut p, t0);
        p.handle_response(t0, tx.id(), &resp(200, &code_body(1, u64::MAX, u64::MAX, true)));
        assert!(p.current_qr().is_some());
        let _ = p.poll_timeout();
        p.handle_timeout(t0 + s(3600));
        let tx = one(&mut p, t0 + s(3600));
        p.handle_response(t0 + s(3600), tx.id(), &resp(200, &token_body("at-1", "roger.release", "a", u64::MAX)));
        assert_eq!(p.state(), PanelState::Step1);
    }

    /// The model test: random drives of the panel, checking the invariants after every step
    /// (R-POLL-1, R-PWD-1, R-QR-1, PROTOCOL.md §8 logout, never panics, no busy loop).
    mod model {
        use super::*;
        use proptest::prelude::*;
        use proptest::test_runner::Config;
        use proptest_state_machine::{prop_state_machine, ReferenceStateMachine, StateMachineTest};
        use std::collections::HashMap;

        #[derive(Debug, Clone, Copy)]
        pub enum Answer {
            Ok,
            OkShortLived,
            Pending,
            SlowDown,
            Denied,
            Expired,
            InvalidGrant,
            InvalidClient,
            Unavailable,
            TooMany,
            Garbage,
            BadRequest,
        }

        impl Answer {
            /// Whether a password request's answer is definite (R-PWD-1: the secret must be gone after it).
            fn definite_for_password(self) -> bool {
                !matches!(self, Answer::InvalidClient | Answer::Unavailable | Answer::TooMany)
            }
        }

        #[derive(Debug, Clone)]
        pub enum Step {
            Advance(u64),
            Answer(usize, Answer),
            TransportError(usize),
            Doorbell(bool),
            EnterPin(Option<u8>, u8),
            Logout,
            SessionEnded,
            UserTokenRejected,
            DeviceToken,
            Push(bool),
        }

        pub struct Model;

        impl ReferenceStateMachine for Model {
            /// Whether the password grant is enabled.
            type State = bool;
            type Transition = Step;

            fn init_state() -> BoxedStrategy<bool> {
                prop_oneof![3 => Just(true), 1 => Just(false)].boxed()
            }

            fn transitions(_: &bool) -> BoxedStrategy<Step> {
                let answer = prop_oneof![
                    8 => Just(Answer::Ok),
                    1 => Just(Answer::OkShortLived),
                    3 => Just(Answer::Pending),
                    1 => Just(Answer::SlowDown),
                    1 => Just(Answer::Denied),
                    1 => Just(Answer::Expired),
                    1 => Just(Answer::InvalidGrant),
                    1 => Just(Answer::InvalidClient),
                    2 => Just(Answer::Unavailable),
                    1 => Just(Answer::TooMany),
                    1 => Just(Answer::Garbage),
                    1 => Just(Answer::BadRequest),
                ];
                prop_oneof![
                    8 => (0u64..20_000).prop_map(Step::Advance),
                    14 => (any::<usize>(), answer).prop_map(|(i, a)| Step::Answer(i, a)),
                    2 => any::<usize>().prop_map(Step::TransportError),
                    2 => any::<bool>().prop_map(Step::Doorbell),
                    4 => (proptest::option::of(0u8..2), 0u8..4).prop_map(|(u, p)| Step::EnterPin(u, p)),
                    1 => Just(Step::Logout),
                    1 => Just(Step::SessionEnded),
                    1 => Just(Step::UserTokenRejected),
                    2 => Just(Step::DeviceToken),
                    1 => any::<bool>().prop_map(Step::Push),
                ]
                .boxed()
            }

            fn apply(state: bool, _: &Step) -> bool {
                state
            }
        }

        pub struct Harness {
            p: PanelSession,
            now: Instant,
            counter: u32,
            outstanding: Vec<PanelTransmit>,
            /// Per device code: the last poll, the interval the server has asked for, and the code's expiry.
            polls: HashMap<String, (Option<Instant>, Duration, Instant)>,
            /// Session codes the panel took whose `verification_uri_complete` was on a foreign origin, not yet
            /// reported.
            foreign_unreported: u32,
            /// Reports are once per kind: after the first ForeignQrOrigin, later foreign payloads raise none.
            foreign_reported: bool,
            /// The number of the last session-code answer that carried a foreign payload.
            foreign_sent: Option<u32>,
            /// The open PIN entry: the first request it sent (username, password, scope), and its latest id.
            pin_open: bool,
            pin_first: Option<(String, String, String)>,
            pin_latest: Option<PanelRequestId>,
            session_tokens: Vec<String>,
            dead_tokens: Vec<String>,
        }

        impl Harness {
            fn pump(&mut self) {
                let now = self.now;
                while let Some(t) = self.p.poll_transmit(now) {
                    self.record(t);
                    assert!(self.outstanding.len() < 200);
                }
                while let Some(e) = self.p.poll_event() {
                    match e {
                        PanelEvent::ShowQr(qr) => check_qr(&qr),
                        PanelEvent::PeerViolation(r) if r.violation == PeerViolation::ForeignQrOrigin => {
                            // R-QR-4: reported with the first answer that carried a foreign payload, once.
                            assert!(self.foreign_unreported > 0, "a ForeignQrOrigin without a foreign payload");
                            assert!(!self.foreign_reported, "a second ForeignQrOrigin report");
                            self.foreign_unreported = 0;
                            self.foreign_reported = true;
                        }
                        PanelEvent::PeerViolation(r) => {
                            // The other deviations this model's server makes: unreadable answers (refused), codes
                            // without a QR payload (read, docs/protocol.md §7).
                            assert!(
                                matches!(
                                    r.violation,
                                    PeerViolation::MalformedSuccessBody | PeerViolation::MissingVerificationUriComplete
                                ),
                                "{r}"
                            );
                        }
                        PanelEvent::PinRejected { .. } => {
                            assert!(self.pin_open, "a PIN verdict without a PIN entry");
                            self.pin_open = false;
                        }
                        PanelEvent::Step2Granted { .. } => {
                            assert!(self.pin_open);
                            self.pin_open = false;
                        }
                        PanelEvent::LoggedOut | PanelEvent::SessionEnded { .. } => {
                            self.dead_tokens.append(&mut self.session_tokens);
                        }
                        _ => {}
                    }
                }
                if !self.pin_open {
                    self.pin_first = None;
                    self.pin_latest = None;
                }
                // No busy loop: everything due at `now` has been done.
                if let Some(t) = self.p.poll_timeout() {
                    assert!(t > now, "poll_timeout {:?} not after now", t.checked_duration_since(now));
                }
            }

            fn record(&mut self, t: PanelTransmit) {
                match &t {
                    PanelTransmit::Poll { request: TokenRequest::DeviceCode { device_code, .. }, .. } => {
                        let entry =
                            self.polls.get_mut(device_code.secret()).expect("polls only codes the server issued");
                        if let Some(last) = entry.0 {
                            // R-POLL-1: never two polls of one code closer than its interval.
                            assert!(self.now - last >= entry.1, "poll after {:?} < {:?}", self.now - last, entry.1);
                        }
                        // RFC 8628 §3.5 / R-QR-3: an outgoing code is polled until it expires, never after.
                        assert!(self.now < entry.2, "a poll of an expired code");
                        entry.0 = Some(self.now);
                    }
                    PanelTransmit::Password { id, .. } => {
                        assert!(self.pin_open, "R-PWD-1: a password request without an open PIN entry");
                        let body = password_of(&t);
                        if self.p.state() == PanelState::Idle {
                            assert_eq!(body.2, scope::PIN_LOGIN, "no step-2 request outside a session");
                        } else {
                            assert_eq!(body.2, scope::STEP2);
                        }
                        match &self.pin_first {
                            Some(first) => assert_eq!(first, &body, "R-PWD-1: re-sent only as the same request"),
                            None => self.pin_first = Some(body),
                        }
                        self.pin_latest = Some(*id);
                    }
                    PanelTransmit::Poll { .. } => panic!("a poll that is not a device-code request"),
                    PanelTransmit::SessionCode { .. } | PanelTransmit::Revoke { .. } => {}
                }
                // Build it as the driver would; must not fail.
                t.to_http(&ep(), Some(&AccessToken::new("dev"))).unwrap();
                self.outstanding.push(t);
            }

            fn answer(&mut self, t: &PanelTransmit, a: Answer) -> Response<Vec<u8>> {
                self.counter += 1;
                let n = self.counter;
                let error = |code: &str| oauth_err(400, code);
                match a {
                    Answer::Ok | Answer::OkShortLived => match t {
                        PanelTransmit::SessionCode { .. } => {
                            let (life, interval) = if matches!(a, Answer::Ok) { (120, 5) } else { (15, 1) };
                            self.polls.insert(
                                format!("dc-secret-{n}"),
                                (None, timing::effective_interval(Some(interval)), self.now + s(life)),
                            );
                            let body = code_body(n, life, interval, n.is_multiple_of(2));
                            if n.is_multiple_of(4) {
                                // R-QR-4: now and then the answer points the QR at a phishing origin.
                                self.foreign_sent = Some(n);
                                let own = format!(r#""verification_uri_complete":"{API}"#);
                                resp(200, &body.replace(&own, r#""verification_uri_complete":"https://phish.example"#))
                            } else {
                                resp(200, &body)
                            }
                        }
                        PanelTransmit::Poll { .. } => {
                            let life = if matches!(a, Answer::Ok) { 1200 } else { 30 };
                            resp(200, &token_body(&format!("at-secret-{n}"), scope::RELEASE, "alice", life))
                        }
                        PanelTransmit::Password { .. } => {
                            let (user, _, scope) = password_of(t);
                            let life = if matches!(a, Answer::Ok) { 600 } else { 20 };
                            resp(200, &token_body(&format!("at-secret-{n}"), &scope, &user, life))
                        }
                        PanelTransmit::Revoke { .. } => resp(200, ""),
                    },
                    Answer::Pending => error("authorization_pending"),
                    Answer::SlowDown => {
                        if let PanelTransmit::Poll { request: TokenRequest::DeviceCode { device_code, .. }, .. } = t {
                            if let Some(e) = self.polls.get_mut(device_code.secret()) {
                                e.1 = timing::after_slow_down(e.1);
                            }
                        }
                        error("slow_down")
                    }
                    Answer::Denied => error("access_denied"),
                    Answer::Expired => error("expired_token"),
                    Answer::InvalidGrant => error("invalid_grant"),
                    Answer::InvalidClient => invalid_client(),
                    Answer::Unavailable => unavailable(),
                    Answer::TooMany => {
                        let mut r = Response::builder().status(429).body(Vec::new()).unwrap();
                        r.headers_mut().insert(RETRY_AFTER, "3".parse().unwrap());
                        r
                    }
                    Answer::Garbage => resp(200, "{not json"),
                    Answer::BadRequest => error("invalid_request"),
                }
            }

            fn check(&mut self) {
                assert_eq!(self.foreign_unreported, 0, "R-QR-4: a foreign QR payload went unreported");
                let p = &self.p;
                // R-PWD-1: the secret exists exactly while its PIN entry is open (outstanding or awaiting a retry).
                assert_eq!(p.holds_password(), self.pin_open);
                if p.state() == PanelState::Idle {
                    assert!(p.user_token().is_none() && p.release_token().is_none() && p.user().is_none());
                    // R-QR-1: a QR on display always comes with its user code.
                    if let Some(qr) = p.current_qr() {
                        check_qr(qr);
                    }
                } else {
                    assert!(p.current_qr().is_none());
                }
                // PROTOCOL.md §8: after logout or an end, the old tokens are never used again.
                for tok in [p.user_token(), p.release_token()].into_iter().flatten() {
                    assert!(!self.dead_tokens.iter().any(|d| d == tok.secret()), "a dead user token in use");
                    if !self.session_tokens.iter().any(|d| d == tok.secret()) {
                        self.session_tokens.push(tok.secret().to_owned());
                    }
                }
                // R-SEC-1: Debug shows no secret.
                let dbg = format!("{p:?}");
                for needle in ["sekret", "at-secret", "dc-secret"] {
                    assert!(!dbg.contains(needle), "Debug leaks {needle}");
                }
            }
        }

        fn check_qr(qr: &QrCode) {
            let d = qr.user_code_display.as_bytes();
            assert_eq!(d.len(), 9, "XXXX-XXXX");
            assert_eq!(d[4], b'-');
            let wire: String = qr.user_code_display.chars().filter(|c| *c != '-').collect();
            assert!(crate::user_code::is_wire_form(&wire));
            // No payload from the server: no QR, the verification URI and the code in text (RFC 8628 §3.3).
            let Some(uri) = qr.verification_uri_complete.as_ref() else {
                assert!(qr.verification_uri.as_deref().is_some_and(|p| p.starts_with(API)), "the page, on the API");
                return;
            };
            assert!(uri.secret().ends_with(&format!("user_code={wire}")));
            // R-QR-4: whatever the server sent, the displayed payload is on the API origin.
            let carried = crate::qr::parse(uri.secret(), API).map(|c| c.secret().to_owned());
            assert_eq!(carried, Ok(wire));
        }

        impl StateMachineTest for Harness {
            type SystemUnderTest = Harness;
            type Reference = Model;

            fn init_test(allow: &bool) -> Harness {
                let mut h = Harness {
                    p: PanelSession::new(cfg(*allow), CID, ep()),
                    now: Instant::now(),
                    counter: 0,
                    outstanding: Vec::new(),
                    polls: HashMap::new(),
                    foreign_unreported: 0,
                    foreign_reported: false,
                    foreign_sent: None,
                    pin_open: false,
                    pin_first: None,
                    pin_latest: None,
                    session_tokens: Vec::new(),
                    dead_tokens: Vec::new(),
                };
                h.pump();
                h.check();
                h
            }

            fn apply(mut h: Harness, allow: &bool, step: Step) -> Harness {
                match step {
                    Step::Advance(ms) => {
                        // Wake at every deadline on the way, as a driver would.
                        let target = h.now + Duration::from_millis(ms);
                        let mut guard = 0;
                        while let Some(t) = h.p.poll_timeout().filter(|t| *t <= target) {
                            guard += 1;
                            assert!(guard < 10_000, "timer storm");
                            h.now = t;
                            h.p.handle_timeout(t);
                            h.pump();
                        }
                        h.now = target;
                        h.p.handle_timeout(target);
                    }
                    Step::Answer(i, a) => {
                        if !h.outstanding.is_empty() {
                            let t = h.outstanding.remove(i % h.outstanding.len());
                            // R-QR-3: the poll of a code still live (shown or replaced but unexpired) whose answer
                            // is the approval opens the session, whether or not the code is still on display.
                            let live_poll = match &t {
                                PanelTransmit::Poll {
                                    request: TokenRequest::DeviceCode { device_code, .. }, ..
                                } => {
                                    let rid = device_code.secret().replace("dc-secret-", "req-");
                                    h.p.state() == PanelState::Idle
                                        && h.p
                                            .current_qr()
                                            .into_iter()
                                            .chain(h.p.outgoing_qrs())
                                            .any(|q| q.request_id.as_deref() == Some(rid.as_str()))
                                }
                                _ => false,
                            };
                            let r = h.answer(&t, a);
                            h.p.handle_response(h.now, t.id(), &r);
                            if let Some(n) = h.foreign_sent.take() {
                                // Taken (not a stale answer): the violation must be reported with it.
                                let rid = format!("req-{n}");
                                if !h.foreign_reported
                                    && h.p.current_qr().is_some_and(|q| q.request_id.as_deref() == Some(rid.as_str()))
                                {
                                    h.foreign_unreported += 1;
                                }
                            }
                            if live_poll && matches!(a, Answer::Ok | Answer::OkShortLived) {
                                assert_ne!(
                                    h.p.state(),
                                    PanelState::Idle,
                                    "R-QR-3: an approval of a live code was lost"
                                );
                            }
                            if h.pin_latest == Some(t.id()) && a.definite_for_password() {
                                assert!(!h.p.holds_password(), "R-PWD-1: wiped after a definite answer");
                            }
                        }
                    }
                    Step::TransportError(i) => {
                        if !h.outstanding.is_empty() {
                            let t = h.outstanding.remove(i % h.outstanding.len());
                            h.p.handle_transport_error(h.now, t.id());
                        }
                    }
                    Step::Doorbell(matching) => {
                        let rid = h.p.current_qr().and_then(|q| q.request_id.clone());
                        let rid = if matching { rid.unwrap_or_else(|| "req-none".into()) } else { "req-other".into() };
                        h.p.handle_doorbell(h.now, &rid);
                    }
                    Step::EnterPin(user, pin) => {
                        let user = user.map(|u| ["alice", "bob"][usize::from(u)]);
                        let before = h.p.holds_password();
                        match h.p.enter_pin(h.now, user, Password::new(format!("sekret-{pin}"))) {
                            Ok(()) => {
                                assert!(*allow && !before);
                                h.pin_open = true;
                                h.pin_first = None;
                            }
                            Err(PanelError::PasswordGrantDisabled) => assert!(!*allow),
                            Err(PanelError::WrongUser) => assert_ne!(h.p.state(), PanelState::Idle),
                            Err(PanelError::UsernameRequired) => assert!(user.is_none()),
                            Err(PanelError::PinInProgress) => assert!(before),
                            Err(PanelError::NotConnected) => panic!("the panel itself never reports NotConnected"),
                        }
                        assert_eq!(h.p.holds_password(), h.pin_open);
                    }
                    Step::Logout => h.p.logout(h.now),
                    Step::SessionEnded => h.p.handle_session_ended(h.now),
                    Step::UserTokenRejected => h.p.handle_user_token_rejected(h.now),
                    Step::DeviceToken => h.p.handle_device_token(h.now),
                    Step::Push(healthy) => h.p.set_push_healthy(healthy),
                }
                h.pump();
                h.check();
                h
            }

            fn check_invariants(h: &Harness, _: &bool) {
                // `check` records tokens, so it needs `&mut`; run it on the mutable path in `apply` instead and
                // repeat the read-only checks here.
                assert_eq!(h.p.holds_password(), h.pin_open);
                if let Some(qr) = h.p.current_qr() {
                    check_qr(qr);
                }
            }

            fn teardown(h: Harness, _: bool) {
                assert!(!format!("{:?}", h.p).contains("sekret"));
            }
        }

        prop_state_machine! {
            #![proptest_config(Config { cases: 64, failure_persistence: None, ..Config::default() })]

            #[test]
            fn panel_model(sequential 20..40 => Harness);
        }
    }
}
