//! The device-grant poller: the client side of RFC 8628 §3.4–3.5 under the timing model of PROTOCOL.md §12.
//!
//! Sans-IO: the poller never sends anything and never reads a clock. The driver
//!
//! 1. calls [`DevicePoller::poll_transmit`] with `now`; when it returns `Some`, builds the request with
//!    [`DevicePoller::request`] and sends it;
//! 2. feeds the answer back with [`DevicePoller::handle_response`] (or [`DevicePoller::handle_outcome`] with a
//!    pre-classified [`PollOutcome`]), or a connection failure with [`DevicePoller::handle_transport_error`];
//! 3. drains [`DevicePoller::poll_event`] (a fresh device token is needed; the flow has finished);
//! 4. sleeps until [`DevicePoller::poll_timeout`] (or until a push doorbell, [`DevicePoller::handle_doorbell`]) and
//!    calls [`DevicePoller::handle_timeout`]; a spurious or early timeout is a no-op.
//!
//! Rules enforced (each with its source):
//! * absent `interval` → 5 s, floor 1 s (RFC 8628 §3.2, PROTOCOL.md §12);
//! * never two polls closer than the current interval (R-POLL-1);
//! * `slow_down` adds 5 s for this and every later poll (RFC 8628 §3.5);
//! * connection failures and 5xx double the wait until the next answer (PROTOCOL.md §12);
//! * `Retry-After` is honoured: the longer of it and the wait (PROTOCOL.md §12);
//! * stop on `access_denied`, `expired_token`, `invalid_grant`, other definite errors, or when `expires_in` has
//!   passed (RFC 8628 §3.5);
//! * a push doorbell moves the next poll to the earliest allowed moment; with push healthy the cadence may relax
//!   to at most 30 s (PROTOCOL.md §8);
//! * a device-bound `invalid_client` is not terminal: the poller asks for a fresh device token and retries (R-TOK-1,
//!   PROTOCOL.md §7).
//!
//! The state transitions (`poll_transmit`, `handle_outcome`, `handle_timeout`, `handle_doorbell`) allocate
//! nothing; only building the request and classifying the response do.

use std::time::{Duration, Instant};

use http::{Request, Response};

use crate::device_authorization::DeviceAuthorizationResponse;
use crate::error::{OAuthErrorCode, PeerReport, ResponseError};
use crate::secret::{AccessToken, DeviceCode};
use crate::timing;
use crate::token::{TokenRequest, TokenResponse};

/// Settings of a poller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PollerConfig {
    /// Poll cadence while push is healthy (PROTOCOL.md §8: at most 30 s; larger values are clamped).
    pub push_relaxed_interval: Duration,
    /// Whether polls carry the device-bound client authentication of PROTOCOL.md §7 (session codes).
    pub device_bound: bool,
}

impl Default for PollerConfig {
    fn default() -> Self {
        Self { push_relaxed_interval: timing::MAX_PUSH_RELAXED_INTERVAL, device_bound: false }
    }
}

/// A token-endpoint answer to a poll, classified (RFC 8628 §3.5).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PollOutcome {
    /// `authorization_pending`.
    Pending,
    /// `slow_down` (with `Retry-After` if sent).
    SlowDown {
        /// `Retry-After`.
        retry_after: Option<Duration>,
    },
    /// 5xx, 429, `temporarily_unavailable`, `server_error`, or an unreadable error page: back off and retry.
    Transient {
        /// `Retry-After`.
        retry_after: Option<Duration>,
    },
    /// `401 invalid_client` on a device-bound poll: the device token was refused (PROTOCOL.md §7).
    DeviceTokenRejected,
    /// The user approved: the token response.
    Granted(Box<TokenResponse>),
    /// `access_denied`.
    Denied,
    /// `expired_token`.
    Expired,
    /// `invalid_grant` (e.g. a device code redeemed twice outside the R-DEV-1 grace).
    InvalidGrant,
    /// Any other definite error (RFC 8628 §3.5: stop polling).
    Failed(ResponseError),
}

impl PollOutcome {
    /// Classifies a token-endpoint result.
    pub fn from_result(result: Result<TokenResponse, ResponseError>) -> Self {
        let err = match result {
            Ok(t) => return Self::Granted(Box::new(t)),
            Err(e) => e,
        };
        let retry_after = err.retry_after();
        match err.oauth_code() {
            Some(OAuthErrorCode::AuthorizationPending) => return Self::Pending,
            Some(OAuthErrorCode::SlowDown) => return Self::SlowDown { retry_after },
            Some(OAuthErrorCode::AccessDenied) => return Self::Denied,
            Some(OAuthErrorCode::ExpiredToken) => return Self::Expired,
            Some(OAuthErrorCode::InvalidGrant) => return Self::InvalidGrant,
            Some(OAuthErrorCode::InvalidClient) if err.status() == 401 => return Self::DeviceTokenRejected,
            _ => {}
        }
        if err.is_token_rejected() {
            return Self::DeviceTokenRejected;
        }
        if err.is_retryable() {
            return Self::Transient { retry_after };
        }
        Self::Failed(err)
    }
}

/// How a poll flow ended.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PollResult {
    /// Approved; the tokens.
    Granted(Box<TokenResponse>),
    /// The user denied (`access_denied`).
    Denied,
    /// The code expired (`expired_token`, or `expires_in` passed locally).
    Expired,
    /// `invalid_grant`.
    InvalidGrant,
    /// Another definite error.
    Failed(ResponseError),
    /// `401 invalid_client` on a poll that carried no device token (registration, desktop login): the client id
    /// itself is refused (RFC 6749 §5.2), and nobody can fix that by refreshing.
    ClientRejected,
    /// The owner abandoned the flow ([`DevicePoller::cancel`]).
    Cancelled,
}

/// What the poller asks of its driver.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PollerEvent {
    /// The device token was refused: refresh it (R-TOK-1), then call [`DevicePoller::handle_device_token`].
    NeedDeviceToken,
    /// The flow has ended; take the result with [`DevicePoller::take_result`].
    Finished,
    /// An answer deviated from the RFCs or from Roger's profile, and the poller read past it or refused it
    /// (docs/protocol.md §7). Each kind is reported once per poller; report it at warn level.
    PeerViolation(PeerReport),
}

/// A poll is due: build it with [`DevicePoller::request`] and send it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PollTransmit {
    /// When the poll was released (the driver should send it now).
    pub at: Instant,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Waiting,
    InFlight,
    AwaitingDeviceToken,
    Done,
}

/// The device-grant poller (see the module documentation for the driving order).
#[derive(Debug)]
pub struct DevicePoller {
    device_code: DeviceCode,
    client_id: String,
    config: PollerConfig,
    interval: Duration,
    expires_at: Instant,
    /// When the last poll was sent, or when the code was issued before the first poll.
    last_ref: Instant,
    polled_once: bool,
    /// The wait the last answer asked for (interval, doubled backoff, Retry-After).
    wait: Duration,
    failures: u32,
    token_failures: u32,
    doorbell: bool,
    push_healthy: bool,
    phase: Phase,
    need_token_event: bool,
    finished_event: bool,
    result: Option<PollResult>,
    /// Deviations to report, and the kinds already reported (the same deviation on every poll is reported once).
    reports: std::collections::VecDeque<PeerReport>,
    reported: crate::error::ReportOnce,
}

impl DevicePoller {
    /// Starts polling for a device authorization answer received at `now` (RFC 8628 §3.2: the codes live
    /// `expires_in` seconds from then).
    pub fn new(now: Instant, auth: &DeviceAuthorizationResponse, client_id: &str, config: PollerConfig) -> Self {
        let interval = timing::effective_interval(auth.interval);
        Self {
            device_code: auth.device_code.clone(),
            client_id: client_id.to_owned(),
            config,
            interval,
            expires_at: now + Duration::from_secs(auth.expires_in).min(timing::MAX_LIFETIME),
            last_ref: now,
            polled_once: false,
            wait: interval,
            failures: 0,
            token_failures: 0,
            doorbell: false,
            push_healthy: false,
            phase: Phase::Waiting,
            need_token_event: false,
            finished_event: false,
            result: None,
            reports: Default::default(),
            reported: Default::default(),
        }
    }

    /// The current polling interval (never decreases, RFC 8628 §3.5).
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// When the device code expires.
    pub fn expires_at(&self) -> Instant {
        self.expires_at
    }

    /// When the last poll was sent.
    pub fn last_poll(&self) -> Option<Instant> {
        self.polled_once.then_some(self.last_ref)
    }

    /// Whether the flow has ended.
    pub fn is_finished(&self) -> bool {
        self.phase == Phase::Done
    }

    /// Whether a poll is in flight.
    pub fn is_in_flight(&self) -> bool {
        self.phase == Phase::InFlight
    }

    /// The earliest moment the next poll may be sent under the current rules.
    fn next_poll_at(&self) -> Instant {
        let wait = if self.doorbell && !self.polled_once {
            // No poll of this code yet: nothing to keep a distance from.
            Duration::ZERO
        } else if self.doorbell {
            self.wait
        } else {
            self.wait.max(timing::poll_cadence(self.interval, self.push_healthy, self.config.push_relaxed_interval))
        };
        self.last_ref + wait
    }

    /// When to call [`DevicePoller::handle_timeout`] next; `None` while a poll is in flight, while waiting for a
    /// device token, or after the end.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.phase {
            Phase::Waiting => Some(self.next_poll_at().min(self.expires_at)),
            Phase::InFlight | Phase::AwaitingDeviceToken | Phase::Done => None,
        }
    }

    /// Timer expiry: ends the flow if the code has expired (RFC 8628 §3.5); otherwise a no-op (the due poll is
    /// released by [`DevicePoller::poll_transmit`]).
    pub fn handle_timeout(&mut self, now: Instant) {
        if matches!(self.phase, Phase::Waiting | Phase::AwaitingDeviceToken) && now >= self.expires_at {
            self.finish(PollResult::Expired);
        }
    }

    /// Releases the next poll if it is due at `now`. At most one poll is in flight.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<PollTransmit> {
        self.handle_timeout(now);
        if self.phase != Phase::Waiting || now < self.next_poll_at() {
            return None;
        }
        self.phase = Phase::InFlight;
        self.last_ref = now;
        self.polled_once = true;
        self.doorbell = false;
        Some(PollTransmit { at: now })
    }

    /// The token request of RFC 8628 §3.4 (the same for every poll, including a re-sent one after a lost answer).
    pub fn token_request(&self) -> TokenRequest {
        TokenRequest::DeviceCode { device_code: self.device_code.clone(), client_id: self.client_id.clone() }
    }

    /// Builds the HTTP request for a released poll; `device_token` is required for device-bound polls
    /// (PROTOCOL.md §7) and ignored otherwise.
    pub fn request(
        &self,
        token_endpoint: &str,
        device_token: Option<&AccessToken>,
    ) -> Result<Request<Vec<u8>>, http::Error> {
        let bearer = if self.config.device_bound { device_token } else { None };
        self.token_request().to_http(token_endpoint, bearer)
    }

    /// Feeds the HTTP answer to the in-flight poll. What the answer deviated in is reported as
    /// [`PollerEvent::PeerViolation`] (once per kind).
    pub fn handle_response(&mut self, now: Instant, response: &Response<Vec<u8>>) {
        if self.phase != Phase::InFlight {
            return;
        }
        let result =
            PeerReport::unpack(crate::token::ENDPOINT, crate::token::classify_noted(response), |r| self.report(r));
        self.handle_outcome(now, PollOutcome::from_result(result));
    }

    fn report(&mut self, r: PeerReport) {
        if self.reported.first(&r) {
            self.reports.push_back(r);
        }
    }

    /// Feeds a classified answer to the in-flight poll. Ignored when no poll is in flight.
    pub fn handle_outcome(&mut self, now: Instant, outcome: PollOutcome) {
        if self.phase != Phase::InFlight {
            return;
        }
        self.phase = Phase::Waiting;
        match outcome {
            PollOutcome::Pending => self.answered(),
            PollOutcome::SlowDown { retry_after } => {
                self.interval = timing::after_slow_down(self.interval);
                self.answered();
                self.wait = timing::wait_with_retry_after(self.interval, retry_after);
            }
            PollOutcome::Transient { retry_after } => self.failed(retry_after),
            PollOutcome::DeviceTokenRejected if !self.config.device_bound => {
                return self.finish(PollResult::ClientRejected)
            }
            PollOutcome::DeviceTokenRejected => {
                self.token_failures = self.token_failures.saturating_add(1);
                self.failures = 0;
                self.wait = timing::backoff_wait(self.interval, self.token_failures - 1);
                self.phase = Phase::AwaitingDeviceToken;
                self.need_token_event = true;
            }
            PollOutcome::Granted(t) => return self.finish(PollResult::Granted(t)),
            PollOutcome::Denied => return self.finish(PollResult::Denied),
            PollOutcome::Expired => return self.finish(PollResult::Expired),
            PollOutcome::InvalidGrant => return self.finish(PollResult::InvalidGrant),
            PollOutcome::Failed(e) => return self.finish(PollResult::Failed(e)),
        }
        self.handle_timeout(now);
    }

    /// The in-flight poll failed at the transport (connection refused or reset, timeout, lost answer): double the
    /// wait (PROTOCOL.md §12). The next poll re-sends the same device code (R-DEV-1 covers a lost success).
    pub fn handle_transport_error(&mut self, now: Instant) {
        if self.phase != Phase::InFlight {
            return;
        }
        self.phase = Phase::Waiting;
        self.failed(None);
        self.handle_timeout(now);
    }

    /// The lifecycle has a fresh device token: retry the poll that was refused, as soon as the interval allows.
    pub fn handle_device_token(&mut self, now: Instant) {
        if self.phase == Phase::AwaitingDeviceToken {
            self.phase = Phase::Waiting;
            self.handle_timeout(now);
        }
    }

    /// A push doorbell (`code.approved` / `code.denied` for this request): poll at the earliest moment the
    /// interval allows (PROTOCOL.md §8). Never earlier (R-POLL-1).
    pub fn handle_doorbell(&mut self, now: Instant) {
        if self.phase != Phase::Done {
            self.doorbell = true;
        }
        self.handle_timeout(now);
    }

    /// Whether the push connection is healthy (PROTOCOL.md §8: the cadence may then relax to at most 30 s).
    pub fn set_push_healthy(&mut self, healthy: bool) {
        self.push_healthy = healthy;
    }

    /// Abandons the flow (the QR was replaced, the panel went away).
    pub fn cancel(&mut self) {
        if self.phase != Phase::Done {
            self.finish(PollResult::Cancelled);
        }
    }

    /// The next event for the driver.
    pub fn poll_event(&mut self) -> Option<PollerEvent> {
        if let Some(r) = self.reports.pop_front() {
            return Some(PollerEvent::PeerViolation(r));
        }
        if std::mem::take(&mut self.need_token_event) {
            return Some(PollerEvent::NeedDeviceToken);
        }
        if std::mem::take(&mut self.finished_event) {
            return Some(PollerEvent::Finished);
        }
        None
    }

    /// Takes the result once the flow has ended.
    pub fn take_result(&mut self) -> Option<PollResult> {
        self.result.take()
    }

    fn answered(&mut self) {
        self.failures = 0;
        self.token_failures = 0;
        self.wait = self.interval;
    }

    fn failed(&mut self, retry_after: Option<Duration>) {
        self.failures = self.failures.saturating_add(1);
        self.wait = timing::wait_with_retry_after(timing::backoff_wait(self.interval, self.failures), retry_after);
    }

    fn finish(&mut self, result: PollResult) {
        self.phase = Phase::Done;
        self.need_token_event = false;
        self.finished_event = true;
        self.result = Some(result);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth(interval: Option<u64>, expires_in: u64) -> DeviceAuthorizationResponse {
        DeviceAuthorizationResponse {
            device_code: "dc".into(),
            user_code: "WDJBMJHT".into(),
            verification_uri: "https://a/device".into(),
            verification_uri_complete: None,
            expires_in,
            interval,
            request_id: Some("r".into()),
        }
    }

    fn s(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    fn granted() -> PollOutcome {
        PollOutcome::Granted(Box::new(TokenResponse {
            access_token: "at".into(),
            token_type: "Bearer".into(),
            expires_in: Some(1200),
            refresh_token: None,
            scope: None,
            device_id: None,
            tenant_id: None,
            user: None,
        }))
    }

    /// RFC 8628 §3.2: absent interval → 5 s; nothing before it.
    #[test]
    fn default_interval_5s() {
        let t0 = Instant::now();
        let mut p = DevicePoller::new(t0, &auth(None, 600), "emb-x", PollerConfig::default());
        assert_eq!(p.poll_timeout(), Some(t0 + s(5)));
        assert!(p.poll_transmit(t0 + Duration::from_millis(4999)).is_none());
        assert!(p.poll_transmit(t0 + s(5)).is_some());
        assert!(p.poll_transmit(t0 + s(5)).is_none(), "one poll in flight at a time");
    }

    /// PROTOCOL.md §12: values below 1 s count as 1 s.
    #[test]
    fn floor_1s() {
        let t0 = Instant::now();
        let p = DevicePoller::new(t0, &auth(Some(0), 600), "emb-x", PollerConfig::default());
        assert_eq!(p.interval(), s(1));
    }

    /// RFC 8628 §3.5: slow_down adds 5 s for good, twice → 15 s, and stays after a pending answer.
    #[test]
    fn slow_down_twice_then_pending() {
        let t0 = Instant::now();
        let mut p = DevicePoller::new(t0, &auth(Some(5), 600), "emb-x", PollerConfig::default());
        let t1 = t0 + s(5);
        p.poll_transmit(t1).unwrap();
        p.handle_outcome(t1, PollOutcome::SlowDown { retry_after: None });
        assert_eq!(p.poll_timeout(), Some(t1 + s(10)));
        let t2 = t1 + s(10);
        p.poll_transmit(t2).unwrap();
        p.handle_outcome(t2, PollOutcome::SlowDown { retry_after: None });
        assert_eq!(p.interval(), s(15));
        let t3 = t2 + s(15);
        p.poll_transmit(t3).unwrap();
        p.handle_outcome(t3, PollOutcome::Pending);
        assert_eq!(p.poll_timeout(), Some(t3 + s(15)), "the interval never goes back down");
    }

    /// PROTOCOL.md §12: doubling after failures until the next answer, then the interval again.
    #[test]
    fn backoff_after_failures() {
        let t0 = Instant::now();
        let mut p = DevicePoller::new(t0, &auth(Some(5), 600), "emb-x", PollerConfig::default());
        let mut t = t0 + s(5);
        p.poll_transmit(t).unwrap();
        p.handle_transport_error(t);
        assert_eq!(p.poll_timeout(), Some(t + s(10)));
        t += s(10);
        p.poll_transmit(t).unwrap();
        p.handle_outcome(t, PollOutcome::Transient { retry_after: None });
        assert_eq!(p.poll_timeout(), Some(t + s(20)));
        t += s(20);
        p.poll_transmit(t).unwrap();
        p.handle_outcome(t, PollOutcome::Pending);
        assert_eq!(p.poll_timeout(), Some(t + s(5)));
    }

    /// PROTOCOL.md §12: Retry-After honoured, the longer wins.
    #[test]
    fn retry_after_honoured() {
        let t0 = Instant::now();
        let mut p = DevicePoller::new(t0, &auth(Some(5), 600), "emb-x", PollerConfig::default());
        let t = t0 + s(5);
        p.poll_transmit(t).unwrap();
        p.handle_outcome(t, PollOutcome::Transient { retry_after: Some(s(42)) });
        assert_eq!(p.poll_timeout(), Some(t + s(42)));
    }

    /// RFC 8628 §3.5: terminal answers stop polling.
    #[test]
    fn terminal_answers_stop() {
        for (outcome, expect) in [
            (PollOutcome::Denied, PollResult::Denied),
            (PollOutcome::Expired, PollResult::Expired),
            (PollOutcome::InvalidGrant, PollResult::InvalidGrant),
        ] {
            let t0 = Instant::now();
            let mut p = DevicePoller::new(t0, &auth(Some(5), 600), "emb-x", PollerConfig::default());
            p.poll_transmit(t0 + s(5)).unwrap();
            p.handle_outcome(t0 + s(5), outcome);
            assert_eq!(p.poll_event(), Some(PollerEvent::Finished));
            assert_eq!(p.take_result(), Some(expect));
            assert_eq!(p.poll_timeout(), None);
            assert!(p.poll_transmit(t0 + s(500)).is_none());
        }
    }

    /// RFC 8628 §3.5: stop when expires_in has passed, locally.
    #[test]
    fn local_expiry() {
        let t0 = Instant::now();
        let mut p = DevicePoller::new(t0, &auth(Some(5), 12), "emb-x", PollerConfig::default());
        p.poll_transmit(t0 + s(5)).unwrap();
        p.handle_outcome(t0 + s(5), PollOutcome::Pending);
        p.poll_transmit(t0 + s(10)).unwrap();
        p.handle_outcome(t0 + s(10), PollOutcome::Pending);
        assert_eq!(p.poll_timeout(), Some(t0 + s(12)));
        p.handle_timeout(t0 + s(12));
        assert_eq!(p.take_result(), Some(PollResult::Expired));
    }

    /// PROTOCOL.md §8: a doorbell moves the poll to the earliest allowed moment, never earlier.
    #[test]
    fn doorbell_with_push_relaxed() {
        let t0 = Instant::now();
        let mut p = DevicePoller::new(t0, &auth(Some(5), 600), "emb-x", PollerConfig::default());
        p.set_push_healthy(true);
        assert_eq!(p.poll_timeout(), Some(t0 + s(30)), "relaxed cadence with healthy push");
        let t1 = t0 + s(30);
        p.poll_transmit(t1).unwrap();
        p.handle_outcome(t1, PollOutcome::Pending);
        assert_eq!(p.poll_timeout(), Some(t1 + s(30)));
        p.handle_doorbell(t1 + s(2));
        assert_eq!(p.poll_timeout(), Some(t1 + s(5)), "doorbell: earliest the interval allows");
        assert!(p.poll_transmit(t1 + s(3)).is_none());
        let t = t1 + s(5);
        p.poll_transmit(t).unwrap();
        p.handle_outcome(t, granted());
        assert!(matches!(p.take_result(), Some(PollResult::Granted(_))));
    }

    /// A doorbell before the first poll releases it at once (there is no earlier poll to keep a distance from).
    #[test]
    fn doorbell_before_first_poll() {
        let t0 = Instant::now();
        let mut p = DevicePoller::new(t0, &auth(Some(5), 600), "emb-x", PollerConfig::default());
        p.handle_doorbell(t0 + s(1));
        assert_eq!(p.poll_timeout(), Some(t0));
        assert!(p.poll_transmit(t0 + s(1)).is_some());
    }

    /// R-TOK-1 / PROTOCOL.md §7: a device-bound invalid_client asks for a fresh token and retries.
    #[test]
    fn invalid_client_is_not_terminal() {
        let t0 = Instant::now();
        let cfg = PollerConfig { device_bound: true, ..PollerConfig::default() };
        let mut p = DevicePoller::new(t0, &auth(Some(5), 600), "emb-x", cfg);
        let t = t0 + s(5);
        p.poll_transmit(t).unwrap();
        let rejected = ResponseError::OAuth {
            status: 401,
            body: Box::new(crate::OAuthErrorResponse::new(OAuthErrorCode::InvalidClient)),
            retry_after: None,
            www_authenticate_error: Some("invalid_token".into()),
        };
        p.handle_outcome(t, PollOutcome::from_result(Err(rejected)));
        assert_eq!(p.poll_event(), Some(PollerEvent::NeedDeviceToken));
        assert_eq!(p.poll_timeout(), None);
        assert!(p.poll_transmit(t + s(60)).is_none());
        p.handle_device_token(t + s(1));
        assert_eq!(p.poll_timeout(), Some(t + s(5)), "retry, but not closer than the interval");
        assert!(p.poll_transmit(t + s(5)).is_some());
        let req = p.request("https://a/oauth/token", Some(&AccessToken::new("fresh"))).unwrap();
        assert_eq!(req.headers()[http::header::AUTHORIZATION], "Bearer fresh");
    }

    /// RFC 6749 §5.2: invalid_client on a poll without a device token ends the flow (nothing to refresh).
    #[test]
    fn invalid_client_without_device_binding_ends() {
        let t0 = Instant::now();
        let mut p = DevicePoller::new(t0, &auth(Some(5), 600), "emb-x", PollerConfig::default());
        p.poll_transmit(t0 + s(5)).unwrap();
        p.handle_outcome(t0 + s(5), PollOutcome::DeviceTokenRejected);
        assert_eq!(p.poll_event(), Some(PollerEvent::Finished));
        assert_eq!(p.take_result(), Some(PollResult::ClientRejected));
    }

    /// Classification of real answers (RFC 8628 §3.5, PROTOCOL.md §12).
    #[test]
    fn outcome_classification() {
        let r = |status: u16, body: &str| {
            let resp = Response::builder().status(status).body(body.as_bytes().to_vec()).unwrap();
            PollOutcome::from_result(crate::token::classify(&resp))
        };
        assert_eq!(r(400, r#"{"error":"authorization_pending"}"#), PollOutcome::Pending);
        assert_eq!(r(200, r#"{"error":"authorization_pending"}"#), PollOutcome::Pending);
        assert_eq!(r(400, r#"{"error":"slow_down"}"#), PollOutcome::SlowDown { retry_after: None });
        assert_eq!(r(503, "<html>down</html>"), PollOutcome::Transient { retry_after: None });
        assert_eq!(r(400, r#"{"error":"temporarily_unavailable"}"#), PollOutcome::Transient { retry_after: None });
        assert_eq!(r(400, r#"{"error":"access_denied"}"#), PollOutcome::Denied);
        assert_eq!(r(400, r#"{"error":"expired_token"}"#), PollOutcome::Expired);
        assert_eq!(r(400, r#"{"error":"invalid_grant"}"#), PollOutcome::InvalidGrant);
        assert_eq!(r(401, r#"{"error":"invalid_client"}"#), PollOutcome::DeviceTokenRejected);
        assert!(matches!(r(400, r#"{"error":"invalid_client"}"#), PollOutcome::Failed(_)));
        assert!(matches!(r(400, r#"{"error":"made_up"}"#), PollOutcome::Failed(_)));
        assert!(matches!(r(200, "garbage"), PollOutcome::Failed(_)));
    }
}
