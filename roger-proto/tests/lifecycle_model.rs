//! Model-based test of the MFP connection lifecycle (PROTOCOL.md §5–7, §12): unregistered → registering →
//! connected → disconnected, the refresh-token rotation of R-TOK-2/3/4, persistence across power cycles.
//!
//! The reference model tracks the visible state, the request in flight, its timers, and the refresh tokens the
//! server has handed out (all of them, and which is the newest). The system under test is the real
//! [`Connection`], driven with crafted HTTP answers. Besides the exact agreement of model and connection, a
//! server-side observer checks every request and every persisted value against the token rules.

use std::time::{Duration, Instant};

use http::Response;
use proptest::prelude::*;
use proptest::strategy::Union;
use proptest::test_runner::Config;
use proptest_state_machine::{prop_state_machine, ReferenceStateMachine, StateMachineTest};
use roger_proto::lifecycle::{
    Connection, ConnectionState, DisconnectReason, LifecycleConfig, LifecycleEvent, LifecycleTransmit,
    PersistedConnection,
};
use roger_proto::metadata::Endpoints;
use roger_proto::timing;
use roger_proto::token::TokenRequest;

/// Base of the lifecycle's retry backoff for code requests and refreshes (PROTOCOL.md §12 doubling).
const RETRY_BASE: Duration = Duration::from_secs(2);
/// The crate's documented backoff cap (`timing::MAX_BACKOFF`).
const BACKOFF_CAP: Duration = Duration::from_secs(300);
/// The refresh fraction of `LifecycleConfig::new` (R-TOK-1: at 80% of the lifetime).
const REFRESH_FRACTION: f64 = 0.8;

/// A `401 invalid_client` answer to a registration poll once wedged the lifecycle (the poller waited for a device
/// token nobody would bring). It now ends the attempt; the generator covers it on every request kind.
const NARROWED_401_ON_POLL: bool = false;

fn config() -> LifecycleConfig {
    LifecycleConfig::new("emb-acme", "MX-1", "SN1")
}

/// PROTOCOL.md §12: the wait doubles with every consecutive failure (capped).
fn doubled(base: Duration, n: u32) -> Duration {
    if n == 0 {
        return base;
    }
    base.saturating_mul(1u32 << n.min(20)).min(BACKOFF_CAP.max(base))
}

/// RFC 8628 §3.2 / PROTOCOL.md §12: absent → 5 s, floor 1 s.
fn effective_interval(sent: Option<u64>) -> Duration {
    sent.map_or(Duration::from_secs(5), |s| Duration::from_secs(s.max(1)))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Code,
    Poll,
    Refresh,
}

/// A crafted server answer to the request in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    /// Device authorization answer (PROTOCOL.md §5.1): `interval` (s, absent if `None`), `expires_in` (s).
    CodeOk {
        interval: Option<u64>,
        expires_in: u64,
    },
    Pending,
    SlowDown,
    Denied,
    ExpiredToken,
    /// Registration success with a fresh refresh token; access-token lifetime (s).
    Granted {
        lifetime: u64,
    },
    /// Refresh success with a fresh refresh token (R-TOK-2); access-token lifetime (s).
    RefreshOk {
        lifetime: u64,
    },
    InvalidGrant,
    /// 503 with an HTML page.
    Html503,
    /// 429 with `Retry-After` (s).
    TooMany(u64),
    /// 200 with a truncated JSON body.
    Garbage,
    /// 400 `invalid_client`.
    Refused400,
    /// 401 `invalid_client` (RFC 6749 §5.2 allows 401 for client authentication failures).
    Unauthorized401,
}

impl Answer {
    fn fits(self, kind: Kind) -> bool {
        use Answer::*;
        match self {
            Html503 | TooMany(_) | Garbage | Refused400 => true,
            Unauthorized401 => !(NARROWED_401_ON_POLL && kind == Kind::Poll),
            CodeOk { .. } => kind == Kind::Code,
            Pending | SlowDown | Denied | ExpiredToken | Granted { .. } => kind == Kind::Poll,
            RefreshOk { .. } => kind == Kind::Refresh,
            InvalidGrant => kind != Kind::Code,
        }
    }
}

#[derive(Debug, Clone)]
enum Transition {
    /// Let time pass (ms).
    Advance(u64),
    /// Jump to the model's next timer plus an offset (ms).
    AdvanceToTimer(i64),
    Transmit,
    Deliver(Answer),
    TransportError,
    Timeout,
    RequestFreshDeviceToken,
    DisconnectedPush,
    StartRegistration,
    /// Power cycle: rebuild from the last stored `Persist` value.
    Restore,
}

/// The registration poller as the lifecycle runs it (no push, no doorbell).
#[derive(Debug, Clone)]
struct Poll {
    interval: Duration,
    expires_at: Duration,
    last_ref: Duration,
    wait: Duration,
    failures: u32,
    /// A 401 put the poller into "waiting for a device token".
    awaiting_token: bool,
}

#[derive(Debug, Clone)]
struct Conn {
    device: String,
    refresh_at: Duration,
    failures: u32,
    confirming_removal: bool,
    /// The end of the server's last Retry-After (PROTOCOL.md §12): an urgent refresh waits for it.
    not_before: Duration,
}

#[derive(Debug, Clone)]
enum St {
    Unregistered,
    Requesting { next_at: Duration, failures: u32 },
    Polling(Poll),
    Connected(Conn),
    Disconnected,
}

/// What the test stored from the last `Persist` event, as the model expects it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Stored {
    Connected { device: String, refresh_token: String },
    Disconnected { reason: DisconnectReason },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ev {
    ShowRegistration,
    RegistrationFailed,
    Registered,
    Persist,
    DeviceTokenRefreshed,
    Disconnected,
}

#[derive(Debug, Clone)]
struct Model {
    now: Duration,
    st: St,
    in_flight: Option<Kind>,
    /// Every refresh token the server has handed out, oldest first (`rt-N`).
    issued: Vec<String>,
    /// The newest one (R-TOK-2: the only one the client may use).
    newest: Option<String>,
    codes: u32,
    devices: u32,
    stored: Option<Stored>,
    /// Outputs of the last transition.
    transmitted: Option<Kind>,
    events: Vec<Ev>,
}

impl Model {
    fn fresh() -> Self {
        Self {
            now: Duration::ZERO,
            st: St::Unregistered,
            in_flight: None,
            issued: Vec::new(),
            newest: None,
            codes: 0,
            devices: 0,
            stored: None,
            transmitted: None,
            events: Vec::new(),
        }
    }

    /// Registered earlier as `dev-1` with refresh token `rt-1`, restored at t = 0 (refreshes at once).
    fn restored() -> Self {
        let device = "dev-1".to_owned();
        Self {
            st: St::Connected(Conn {
                device: device.clone(),
                refresh_at: Duration::ZERO,
                failures: 0,
                confirming_removal: false,
                not_before: Duration::ZERO,
            }),
            issued: vec!["rt-1".into()],
            newest: Some("rt-1".into()),
            devices: 1,
            stored: Some(Stored::Connected { device, refresh_token: "rt-1".into() }),
            ..Self::fresh()
        }
    }

    fn state(&self) -> ConnectionState {
        match self.st {
            St::Unregistered => ConnectionState::Unregistered,
            St::Requesting { .. } | St::Polling(_) => ConnectionState::Registering,
            St::Connected(_) => ConnectionState::Connected,
            St::Disconnected => ConnectionState::Disconnected,
        }
    }

    fn timer(&self) -> Option<Duration> {
        if self.in_flight.is_some() {
            return None;
        }
        match &self.st {
            St::Requesting { next_at, .. } => Some(*next_at),
            St::Polling(p) if p.awaiting_token => None,
            St::Polling(p) => Some((p.last_ref + p.wait).min(p.expires_at)),
            St::Connected(c) => Some(c.refresh_at),
            St::Unregistered | St::Disconnected => None,
        }
    }

    fn issue_refresh_token(&mut self) -> String {
        let rt = format!("rt-{}", self.issued.len() + 1);
        self.issued.push(rt.clone());
        self.newest = Some(rt.clone());
        rt
    }

    /// RFC 8628 §3.5: the registration code died; the lifecycle shows a fresh one.
    fn registration_expired(&mut self) {
        self.st = St::Requesting { next_at: self.now, failures: 0 };
        self.events.push(Ev::RegistrationFailed);
    }

    fn registration_failed(&mut self) {
        self.st = St::Unregistered;
        self.events.push(Ev::RegistrationFailed);
    }

    /// The lifecycle's timer handling: only the registration poller has a deadline of its own.
    fn handle_timeout(&mut self) {
        if self.in_flight == Some(Kind::Poll) {
            return;
        }
        if let St::Polling(p) = &self.st {
            if self.now >= p.expires_at {
                self.registration_expired();
            }
        }
    }

    fn poll_expiry_after_answer(&mut self) {
        if let St::Polling(p) = &self.st {
            if self.now >= p.expires_at {
                self.registration_expired();
            }
        }
    }

    fn code_retry(&mut self, retry_after: Option<u64>) {
        let now = self.now;
        if let St::Requesting { next_at, failures } = &mut self.st {
            *failures += 1;
            *next_at = now + doubled(RETRY_BASE, *failures).max(Duration::from_secs(retry_after.unwrap_or(0)));
        }
    }

    fn refresh_retry(&mut self, retry_after: Option<u64>) {
        let now = self.now;
        if let St::Connected(c) = &mut self.st {
            c.failures += 1;
            c.refresh_at = now + doubled(RETRY_BASE, c.failures).max(Duration::from_secs(retry_after.unwrap_or(0)));
            c.not_before = now + Duration::from_secs(retry_after.unwrap_or(0));
        }
    }

    fn request_fresh(&mut self) {
        let (now, refreshing) = (self.now, self.in_flight == Some(Kind::Refresh));
        if let St::Connected(c) = &mut self.st {
            if !refreshing {
                c.refresh_at = c.refresh_at.min(now.max(c.not_before));
                c.failures = 0;
            }
        }
    }

    fn on_code(&mut self, a: Answer) {
        match a {
            Answer::CodeOk { interval, expires_in } => {
                self.codes += 1;
                let interval = effective_interval(interval);
                self.st = St::Polling(Poll {
                    interval,
                    expires_at: self.now + Duration::from_secs(expires_in),
                    last_ref: self.now,
                    wait: interval,
                    failures: 0,
                    awaiting_token: false,
                });
                self.events.push(Ev::ShowRegistration);
            }
            Answer::Html503 | Answer::Garbage => self.code_retry(None),
            Answer::TooMany(ra) => self.code_retry(Some(ra)),
            _ => self.registration_failed(),
        }
    }

    fn on_poll(&mut self, a: Answer) {
        let now = self.now;
        let St::Polling(p) = &mut self.st else { unreachable!("a poll is in flight only while polling") };
        match a {
            Answer::Pending => {
                p.failures = 0;
                p.wait = p.interval;
            }
            Answer::SlowDown => {
                p.interval += Duration::from_secs(5);
                p.failures = 0;
                p.wait = p.interval;
            }
            Answer::Html503 => {
                p.failures += 1;
                p.wait = doubled(p.interval, p.failures);
            }
            Answer::TooMany(ra) => {
                p.failures += 1;
                p.wait = doubled(p.interval, p.failures).max(Duration::from_secs(ra));
            }
            // Registration polls carry no device token: invalid_client refuses the client id itself and ends the
            // attempt (RFC 6749 §5.2), like any other definite error below.
            Answer::ExpiredToken => return self.registration_expired(),
            Answer::Granted { lifetime } => {
                self.issue_refresh_token();
                self.devices += 1;
                let device = format!("dev-{}", self.devices);
                let rt = self.newest.clone().unwrap();
                let refresh_at = now + timing::refresh_after(Duration::from_secs(lifetime), REFRESH_FRACTION);
                self.stored = Some(Stored::Connected { device: device.clone(), refresh_token: rt });
                self.st = St::Connected(Conn {
                    device,
                    refresh_at,
                    failures: 0,
                    confirming_removal: false,
                    not_before: Duration::ZERO,
                });
                self.events.extend([Ev::Registered, Ev::Persist, Ev::DeviceTokenRefreshed]);
                return;
            }
            // access_denied, invalid_grant, any other definite error, an unreadable success: the attempt ends.
            _ => return self.registration_failed(),
        }
        self.poll_expiry_after_answer();
    }

    fn on_refresh(&mut self, a: Answer) {
        let now = self.now;
        match a {
            Answer::RefreshOk { lifetime } => {
                let rt = self.issue_refresh_token();
                let St::Connected(c) = &mut self.st else { unreachable!() };
                c.refresh_at = now + timing::refresh_after(Duration::from_secs(lifetime), REFRESH_FRACTION);
                c.failures = 0;
                c.confirming_removal = false;
                self.stored = Some(Stored::Connected { device: c.device.clone(), refresh_token: rt });
                self.events.extend([Ev::Persist, Ev::DeviceTokenRefreshed]);
            }
            Answer::InvalidGrant => {
                let St::Connected(c) = &self.st else { unreachable!() };
                let reason =
                    if c.confirming_removal { DisconnectReason::Removed } else { DisconnectReason::RefreshTokenDead };
                self.st = St::Disconnected;
                self.stored = Some(Stored::Disconnected { reason });
                self.events.extend([Ev::Persist, Ev::Disconnected]);
            }
            Answer::TooMany(ra) => self.refresh_retry(Some(ra)),
            _ => self.refresh_retry(None),
        }
    }
}

struct LifecycleMachine;

fn lifetime() -> impl Strategy<Value = u64> {
    prop_oneof![Just(30u64), Just(100), Just(1200), 1u64..=20]
}

fn answers_for(kind: Option<Kind>) -> BoxedStrategy<Answer> {
    let mut v = vec![
        (2, Just(Answer::Html503).boxed()),
        (2, (0u64..=120).prop_map(Answer::TooMany).boxed()),
        (1, Just(Answer::Garbage).boxed()),
        (1, Just(Answer::Refused400).boxed()),
    ];
    if !(NARROWED_401_ON_POLL && kind == Some(Kind::Poll)) {
        v.push((1, Just(Answer::Unauthorized401).boxed()));
    }
    match kind {
        Some(Kind::Code) => v.push((
            12,
            (proptest::option::of(0u64..=6), prop_oneof![5u64..=30, 30u64..=600])
                .prop_map(|(interval, expires_in)| Answer::CodeOk { interval, expires_in })
                .boxed(),
        )),
        Some(Kind::Poll) => v.extend([
            (6, Just(Answer::Pending).boxed()),
            (2, Just(Answer::SlowDown).boxed()),
            (1, Just(Answer::Denied).boxed()),
            (1, Just(Answer::ExpiredToken).boxed()),
            (1, Just(Answer::InvalidGrant).boxed()),
            (10, lifetime().prop_map(|lifetime| Answer::Granted { lifetime }).boxed()),
        ]),
        Some(Kind::Refresh) => v.extend([
            (12, lifetime().prop_map(|lifetime| Answer::RefreshOk { lifetime }).boxed()),
            (2, Just(Answer::InvalidGrant).boxed()),
        ]),
        // A stray answer with nothing in flight: ignored by the connection.
        None => v.push((1, Just(Answer::Pending).boxed())),
    }
    Union::new_weighted(v).boxed()
}

impl ReferenceStateMachine for LifecycleMachine {
    type State = Model;
    type Transition = Transition;

    /// A printer fresh from the factory, or one powered on with a registration in its flash (`rt-1`).
    fn init_state() -> BoxedStrategy<Model> {
        any::<bool>().prop_map(|registered| if registered { Model::restored() } else { Model::fresh() }).boxed()
    }

    fn transitions(s: &Model) -> BoxedStrategy<Transition> {
        let idle = s.in_flight.is_none();
        let can_register = matches!(s.st, St::Unregistered | St::Disconnected);
        let connected = matches!(s.st, St::Connected(_));
        Union::new_weighted(vec![
            (6, (0u64..=3_000).prop_map(Transition::Advance).boxed()),
            (4, (0u64..=40_000).prop_map(Transition::Advance).boxed()),
            (
                if idle { 20 } else { 2 },
                prop_oneof![Just(-1i64), Just(0), Just(1), -1_000i64..=1_000]
                    .prop_map(Transition::AdvanceToTimer)
                    .boxed(),
            ),
            (if idle { 30 } else { 4 }, Just(Transition::Transmit).boxed()),
            (if idle { 2 } else { 40 }, answers_for(s.in_flight).prop_map(Transition::Deliver).boxed()),
            (if idle { 1 } else { 8 }, Just(Transition::TransportError).boxed()),
            (3, Just(Transition::Timeout).boxed()),
            (if connected { 4 } else { 1 }, Just(Transition::RequestFreshDeviceToken).boxed()),
            (if connected { 2 } else { 1 }, Just(Transition::DisconnectedPush).boxed()),
            (if can_register { 30 } else { 1 }, Just(Transition::StartRegistration).boxed()),
            (3, Just(Transition::Restore).boxed()),
        ])
        .boxed()
    }

    /// Answers must suit the request in flight (they may also arrive with nothing in flight: then they are
    /// ignored). Checked again while shrinking.
    fn preconditions(s: &Model, t: &Transition) -> bool {
        match (t, s.in_flight) {
            (Transition::Deliver(a), Some(kind)) => a.fits(kind),
            _ => true,
        }
    }

    fn apply(mut s: Model, t: &Transition) -> Model {
        s.transmitted = None;
        s.events.clear();
        match *t {
            Transition::Advance(d) => s.now += Duration::from_millis(d),
            Transition::AdvanceToTimer(off) => {
                if let Some(at) = s.timer() {
                    let target = if off >= 0 {
                        at + Duration::from_millis(off.unsigned_abs())
                    } else {
                        at.saturating_sub(Duration::from_millis(off.unsigned_abs()))
                    };
                    s.now = s.now.max(target);
                }
            }
            Transition::Transmit => {
                s.handle_timeout();
                if s.in_flight.is_some() {
                    return s;
                }
                let now = s.now;
                let kind = match &mut s.st {
                    St::Requesting { next_at, .. } if now >= *next_at => Some(Kind::Code),
                    St::Polling(p) if !p.awaiting_token && now >= p.last_ref + p.wait => {
                        p.last_ref = now;
                        Some(Kind::Poll)
                    }
                    St::Connected(c) if now >= c.refresh_at => Some(Kind::Refresh),
                    _ => None,
                };
                s.in_flight = kind;
                s.transmitted = kind;
            }
            Transition::Deliver(a) => match s.in_flight.take() {
                None => {}
                Some(Kind::Code) => s.on_code(a),
                Some(Kind::Poll) => s.on_poll(a),
                Some(Kind::Refresh) => s.on_refresh(a),
            },
            Transition::TransportError => match s.in_flight.take() {
                None => {}
                Some(Kind::Code) => s.code_retry(None),
                Some(Kind::Poll) => {
                    if let St::Polling(p) = &mut s.st {
                        p.failures += 1;
                        p.wait = doubled(p.interval, p.failures);
                    }
                    s.poll_expiry_after_answer();
                }
                Some(Kind::Refresh) => s.refresh_retry(None),
            },
            Transition::Timeout => s.handle_timeout(),
            Transition::RequestFreshDeviceToken => s.request_fresh(),
            Transition::DisconnectedPush => {
                if let St::Connected(c) = &mut s.st {
                    c.confirming_removal = true;
                }
                s.request_fresh();
            }
            Transition::StartRegistration => {
                if matches!(s.st, St::Unregistered | St::Disconnected) {
                    s.st = St::Requesting { next_at: s.now, failures: 0 };
                    s.in_flight = None;
                }
            }
            Transition::Restore => {
                s.in_flight = None;
                s.st = match &s.stored {
                    None => St::Unregistered,
                    Some(Stored::Disconnected { .. }) => St::Disconnected,
                    Some(Stored::Connected { device, .. }) => St::Connected(Conn {
                        device: device.clone(),
                        refresh_at: s.now,
                        failures: 0,
                        confirming_removal: false,
                        not_before: Duration::ZERO,
                    }),
                };
            }
        }
        s
    }
}

/// The server's view, kept by the test from what it handed out and what it received.
#[derive(Debug, Default)]
struct Server {
    /// The newest refresh token handed to the client.
    newest: Option<String>,
    /// Refresh tokens rotated out (or belonging to a replaced registration): never to be sent again.
    retired: Vec<String>,
    /// Every access token handed out (never to be persisted).
    access_tokens: Vec<String>,
    /// Every device code handed out (never to be persisted).
    device_codes: Vec<String>,
    /// The request in flight and, for a refresh, the token it carried.
    outstanding: Option<(Kind, Option<String>)>,
    /// A refresh whose answer was lost or was a 5xx/429/unreadable: the next refresh must carry this token.
    resend: Option<String>,
    /// Consecutive failed refreshes since the last answer (PROTOCOL.md §12 doubling).
    refresh_failures: u32,
    /// The earliest moment the next refresh may go after a failure (doubled wait, Retry-After), unless a fresh
    /// device token was requested (R-TOK-1) or the printer power-cycled since.
    refresh_not_before: Option<Duration>,
    /// The last `Persist` value, as JSON (what an MFP writes to flash).
    stored_json: Option<String>,
    refreshes: u32,
}

struct Sut {
    conn: Connection,
    t0: Instant,
    now: Duration,
    server: Server,
    endpoints: Endpoints,
}

fn resp(status: u16, body: &str) -> Response<Vec<u8>> {
    // Credential answers carry no-store (R-SEC-1); its absence would be reported (docs/protocol.md §7).
    Response::builder()
        .status(status)
        .header(http::header::CACHE_CONTROL, "no-store")
        .body(body.as_bytes().to_vec())
        .unwrap()
}

fn token_answer(at: &str, rt: &str, device: &str, lifetime: u64) -> Response<Vec<u8>> {
    let body = serde_json::json!({
        "access_token": at,
        "token_type": "Bearer",
        "expires_in": lifetime,
        "refresh_token": rt,
        "scope": "roger.device",
        "device_id": device,
        "tenant_id": "acme",
    });
    resp(200, &body.to_string())
}

impl Sut {
    /// The HTTP answer for `a` (the model's post-state names the fresh refresh token, code and device).
    fn response_for(&mut self, a: Answer, m: &Model) -> Response<Vec<u8>> {
        let mut fresh_access = || {
            let at = format!("AT-SECRET-{}", self.server.access_tokens.len() + 1);
            self.server.access_tokens.push(at.clone());
            at
        };
        let newest = m.newest.clone().unwrap_or_default();
        match a {
            Answer::CodeOk { interval, expires_in } => {
                let dc = format!("dc-{}", m.codes);
                self.server.device_codes.push(dc.clone());
                let mut body = serde_json::json!({
                    "device_code": dc,
                    "user_code": "WDJBMJHT",
                    "verification_uri": "https://api.example/device",
                    "verification_uri_complete": "https://api.example/device?user_code=WDJBMJHT",
                    "expires_in": expires_in,
                    "request_id": format!("req-{}", m.codes),
                });
                if let Some(i) = interval {
                    body["interval"] = i.into();
                }
                resp(200, &body.to_string())
            }
            Answer::Pending => resp(400, r#"{"error":"authorization_pending"}"#),
            Answer::SlowDown => resp(400, r#"{"error":"slow_down"}"#),
            Answer::Denied => resp(400, r#"{"error":"access_denied"}"#),
            Answer::ExpiredToken => resp(400, r#"{"error":"expired_token"}"#),
            Answer::InvalidGrant => resp(400, r#"{"error":"invalid_grant"}"#),
            Answer::Granted { lifetime } => {
                token_answer(&fresh_access(), &newest, &format!("dev-{}", m.devices), lifetime)
            }
            Answer::RefreshOk { lifetime } => {
                let device = match &m.st {
                    St::Connected(c) => c.device.clone(),
                    _ => "dev-stray".into(),
                };
                token_answer(&fresh_access(), &newest, &device, lifetime)
            }
            Answer::Html503 => {
                let mut r = resp(503, "<html><body><h1>503 Service Unavailable</h1></body></html>");
                r.headers_mut().insert(http::header::CONTENT_TYPE, "text/html".parse().unwrap());
                r
            }
            Answer::TooMany(ra) => {
                let mut r = resp(429, "Too Many Requests");
                r.headers_mut().insert(http::header::RETRY_AFTER, ra.to_string().parse().unwrap());
                r
            }
            Answer::Garbage => resp(200, r#"{"access_token": 12, "token_type": "#),
            Answer::Refused400 => resp(400, r#"{"error":"invalid_client"}"#),
            Answer::Unauthorized401 => resp(401, r#"{"error":"invalid_client"}"#),
        }
    }

    fn at(&self) -> Instant {
        self.t0 + self.now
    }

    /// Checks a released request against the token rules and records it.
    fn on_transmit(&mut self, tx: &LifecycleTransmit, state_before: ConnectionState) {
        assert!(
            self.server.outstanding.is_none(),
            "at most one request in flight: {tx:?} released while {:?} is unanswered",
            self.server.outstanding
        );
        assert!(
            !matches!(state_before, ConnectionState::Unregistered | ConnectionState::Disconnected),
            "R-TOK-4 / PROTOCOL.md §5: no request at all in {state_before:?} (no request after a terminal state)"
        );
        let http = tx.to_http(&self.endpoints).expect("the request builds");
        assert!(
            http.headers().get(http::header::AUTHORIZATION).is_none(),
            "PROTOCOL.md §7: registration and refresh requests are not device-bound"
        );
        let body = String::from_utf8(http.body().clone()).unwrap();
        let sent = match tx {
            LifecycleTransmit::RegistrationCode(r) => {
                assert_eq!(state_before, ConnectionState::Registering, "a code request belongs to a registration");
                assert_eq!(r.scope, "roger.device", "PROTOCOL.md §5.1: registration asks for scope roger.device");
                assert_eq!(http.uri(), self.endpoints.device_authorization.as_str());
                (Kind::Code, None)
            }
            LifecycleTransmit::RegistrationPoll(TokenRequest::DeviceCode { device_code, client_id }) => {
                assert_eq!(state_before, ConnectionState::Registering, "a poll belongs to a registration");
                assert_eq!(client_id, "emb-acme");
                assert_eq!(
                    self.server.device_codes.last().map(String::as_str),
                    Some(device_code.secret()),
                    "RFC 8628 §3.4: polls carry the current device code"
                );
                (Kind::Poll, None)
            }
            LifecycleTransmit::Refresh(TokenRequest::RefreshToken { refresh_token, client_id, .. }) => {
                assert_eq!(state_before, ConnectionState::Connected, "refreshes only while connected");
                assert_eq!(client_id, "emb-acme", "RFC 6749 §6: the client the token was issued to");
                let rt = refresh_token.secret().to_owned();
                assert!(
                    !self.server.retired.contains(&rt),
                    "R-TOK-2: refresh token {rt} was rotated out and must never be sent again (retired {:?})",
                    self.server.retired
                );
                assert_eq!(
                    Some(&rt),
                    self.server.newest.as_ref(),
                    "R-TOK-2: every refresh carries the newest refresh token the client was given"
                );
                if let Some(nb) = self.server.refresh_not_before.take() {
                    assert!(
                        self.now >= nb,
                        "PROTOCOL.md §12: after a failed refresh the next one waits the doubled wait / Retry-After \
                         (sent at {:?}, not before {nb:?})",
                        self.now
                    );
                }
                if let Some(prev) = self.server.resend.take() {
                    assert_eq!(rt, prev, "R-TOK-3: a refresh after a lost answer or 5xx resends the same token");
                }
                assert!(body.contains("grant_type=refresh_token"), "RFC 6749 §6 grant_type");
                assert!(body.contains(&format!("refresh_token={rt}")), "RFC 6749 §6: the token is in the form body");
                self.server.refreshes += 1;
                (Kind::Refresh, Some(rt))
            }
            other => panic!("unexpected request {other:?}"),
        };
        self.server.outstanding = Some(sent);
    }

    /// Checks every drained event; stores `Persist` values as JSON.
    fn on_events(&mut self, events: &[LifecycleEvent]) {
        for e in events {
            let LifecycleEvent::Persist(p) = e else { continue };
            let json = serde_json::to_string(p).expect("persisted state serializes");
            for at in &self.server.access_tokens {
                assert!(!json.contains(at.as_str()), "R-TOK-2 / R-SEC-1: the persisted state holds no access token");
            }
            for dc in &self.server.device_codes {
                assert!(!json.contains(&format!("\"{dc}\"")), "the persisted state holds no device code");
            }
            let back: PersistedConnection = serde_json::from_str(&json).expect("persisted state round-trips");
            assert_eq!(&back, p, "persisted state round-trips through JSON");
            if let PersistedConnection::Connected { refresh_token, .. } = p {
                assert_eq!(
                    Some(refresh_token.secret()),
                    self.server.newest.as_deref(),
                    "R-TOK-2: the persisted refresh token is the newest"
                );
                let value: serde_json::Value = serde_json::from_str(&json).unwrap();
                let mut strings = Vec::new();
                collect_strings(&value, &mut strings);
                let issued_rts = strings.iter().filter(|s| s.starts_with("rt-")).count();
                assert_eq!(issued_rts, 1, "R-TOK-2: only the device's own newest refresh token is persisted: {json}");
            }
            self.server.stored_json = Some(json);
        }
    }

    fn stored(&self) -> Option<PersistedConnection> {
        self.server.stored_json.as_deref().map(|j| serde_json::from_str(j).unwrap())
    }
}

impl Server {
    fn note_refresh_failure(&mut self, now: Duration, retry_after: Duration) {
        self.refresh_failures += 1;
        self.refresh_not_before = Some(now + doubled(RETRY_BASE, self.refresh_failures).max(retry_after));
    }
}

fn collect_strings(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::String(s) => out.push(s.clone()),
        serde_json::Value::Array(a) => a.iter().for_each(|x| collect_strings(x, out)),
        serde_json::Value::Object(o) => o.values().for_each(|x| collect_strings(x, out)),
        _ => {}
    }
}

/// The flow event's kind; `None` for a deviation report (docs/protocol.md §7), the driver's to log: this model's
/// server sends unreadable answers on purpose, and only those may be reported.
fn ev_kind(e: &LifecycleEvent) -> Option<Ev> {
    Some(match e {
        LifecycleEvent::ShowRegistration { .. } => Ev::ShowRegistration,
        LifecycleEvent::RegistrationFailed(_) => Ev::RegistrationFailed,
        LifecycleEvent::Registered { .. } => Ev::Registered,
        LifecycleEvent::Persist(_) => Ev::Persist,
        LifecycleEvent::DeviceTokenRefreshed => Ev::DeviceTokenRefreshed,
        LifecycleEvent::Disconnected(_) => Ev::Disconnected,
        LifecycleEvent::PeerViolation(r) => {
            assert_eq!(r.violation, roger_proto::PeerViolation::MalformedSuccessBody, "unexpected report {r}");
            return None;
        }
        other => panic!("unexpected event {other:?}"),
    })
}

impl StateMachineTest for LifecycleMachine {
    type SystemUnderTest = Sut;
    type Reference = LifecycleMachine;

    fn init_test(m: &Model) -> Sut {
        let t0 = Instant::now();
        let mut server = Server::default();
        let conn = match &m.stored {
            None => Connection::new(config()),
            Some(Stored::Connected { device, refresh_token }) => {
                let p = PersistedConnection::Connected {
                    device_id: device.clone(),
                    tenant_id: Some("acme".into()),
                    refresh_token: refresh_token.as_str().into(),
                };
                server.newest = Some(refresh_token.clone());
                server.stored_json = Some(serde_json::to_string(&p).unwrap());
                Connection::restore(config(), p, t0)
            }
            Some(other) => unreachable!("initial states are fresh or connected, not {other:?}"),
        };
        Sut { conn, t0, now: Duration::ZERO, server, endpoints: Endpoints::conventional("https://api.example") }
    }

    fn apply(mut sut: Sut, m: &Model, t: Transition) -> Sut {
        assert!(m.now >= sut.now, "time never goes back");
        sut.now = m.now;
        let at = sut.at();
        let before = sut.conn.state();
        let access_before = sut.conn.device_token(at).map(|t| t.secret().to_owned());
        match t {
            Transition::Advance(_) | Transition::AdvanceToTimer(_) => {}
            Transition::Transmit => {
                let tx = sut.conn.poll_transmit(at);
                let kind = tx.as_ref().map(|tx| match tx {
                    LifecycleTransmit::RegistrationCode(_) => Kind::Code,
                    LifecycleTransmit::RegistrationPoll(_) => Kind::Poll,
                    LifecycleTransmit::Refresh(_) => Kind::Refresh,
                });
                assert_eq!(kind, m.transmitted, "the model predicts the released request exactly (t={:?})", m.now);
                if let Some(tx) = tx {
                    sut.on_transmit(&tx, before);
                } else if matches!(before, ConnectionState::Unregistered | ConnectionState::Disconnected) {
                    assert_eq!(sut.conn.poll_timeout(), None, "no timer in {before:?}");
                }
            }
            Transition::Deliver(a) => {
                let response = sut.response_for(a, m);
                sut.conn.handle_response(at, &response);
                let after = sut.conn.state();
                match sut.server.outstanding.take() {
                    None => {
                        assert_eq!(after, before, "an answer with nothing in flight is ignored");
                    }
                    Some((Kind::Refresh, Some(sent))) => match a {
                        Answer::RefreshOk { .. } => {
                            // R-TOK-2: the rotation retires the token just used.
                            sut.server.retired.push(sent);
                            sut.server.newest = m.newest.clone();
                            sut.server.resend = None;
                            sut.server.refresh_failures = 0;
                            assert_eq!(after, ConnectionState::Connected);
                        }
                        Answer::InvalidGrant => {
                            sut.server.refresh_failures = 0;
                            sut.server.refresh_not_before = None;
                            assert_eq!(
                                after,
                                ConnectionState::Disconnected,
                                "R-TOK-4: invalid_grant on refresh disconnects"
                            );
                        }
                        _ => {
                            assert_eq!(
                                after,
                                ConnectionState::Connected,
                                "R-TOK-3 / PROTOCOL.md §12: {a:?} on refresh keeps the connection and its tokens"
                            );
                            assert_eq!(
                                sut.conn.refresh_token().map(|t| t.secret().to_owned()),
                                Some(sent.clone()),
                                "R-TOK-3: the refresh token is kept after {a:?}"
                            );
                            assert_eq!(
                                sut.conn.device_token(at).map(|t| t.secret().to_owned()),
                                access_before,
                                "the access token is kept after {a:?}"
                            );
                            sut.server.resend = Some(sent);
                            let ra = if let Answer::TooMany(ra) = a { Duration::from_secs(ra) } else { Duration::ZERO };
                            sut.server.note_refresh_failure(m.now, ra);
                        }
                    },
                    Some((Kind::Poll, _)) => {
                        if let Answer::Granted { .. } = a {
                            // A new registration: the previous device's token (if any) is dead for good.
                            if let Some(old) = sut.server.newest.take() {
                                sut.server.retired.push(old);
                            }
                            sut.server.newest = m.newest.clone();
                            sut.server.resend = None;
                            sut.server.refresh_failures = 0;
                            sut.server.refresh_not_before = None;
                            assert_eq!(after, ConnectionState::Connected, "RFC 8628 §3.5: approval registers");
                        }
                    }
                    Some(_) => {}
                }
            }
            Transition::TransportError => {
                sut.conn.handle_transport_error(at);
                if let Some((kind, sent)) = sut.server.outstanding.take() {
                    if kind == Kind::Refresh {
                        assert_eq!(
                            sut.conn.state(),
                            ConnectionState::Connected,
                            "R-TOK-3: a transport error on refresh keeps the connection"
                        );
                        assert_eq!(
                            sut.conn.refresh_token().map(|t| t.secret().to_owned()),
                            sent,
                            "R-TOK-3: tokens are kept on transport errors"
                        );
                        assert_eq!(
                            sut.conn.device_token(at).map(|t| t.secret().to_owned()),
                            access_before,
                            "the access token is kept on transport errors"
                        );
                        sut.server.resend = sent;
                        sut.server.note_refresh_failure(m.now, Duration::ZERO);
                    }
                }
            }
            Transition::Timeout => sut.conn.handle_timeout(at),
            Transition::RequestFreshDeviceToken | Transition::DisconnectedPush => {
                if matches!(t, Transition::DisconnectedPush) {
                    sut.conn.handle_disconnected_push(at);
                } else {
                    sut.conn.request_fresh_device_token(at);
                }
                // R-TOK-1 (refresh at once when a token is refused) overrides the backoff, unless a refresh is
                // already in flight (coalesced).
                if !matches!(sut.server.outstanding, Some((Kind::Refresh, _))) {
                    sut.server.refresh_failures = 0;
                    sut.server.refresh_not_before = None;
                }
                if before == ConnectionState::Connected {
                    assert_eq!(sut.conn.device_token(at), None, "R-TOK-1: a refused token is not handed out again");
                }
            }
            Transition::StartRegistration => sut.conn.start_registration(at),
            Transition::Restore => {
                // Power cycle: the request in flight is lost, the access token too; the flash keeps the JSON.
                sut.server.outstanding = None;
                sut.server.refresh_failures = 0;
                sut.server.refresh_not_before = None;
                sut.conn = match sut.stored() {
                    Some(p) => Connection::restore(config(), p, at),
                    None => Connection::new(config()),
                };
            }
        }
        let after = sut.conn.state();
        if before == ConnectionState::Connected && after != ConnectionState::Connected {
            assert!(
                matches!(t, Transition::Deliver(Answer::InvalidGrant)) && after == ConnectionState::Disconnected,
                "R-TOK-4: only invalid_grant on refresh moves Connected → Disconnected (got {after:?} after {t:?})"
            );
        }
        let events: Vec<LifecycleEvent> = std::iter::from_fn(|| sut.conn.poll_event()).collect();
        let kinds: Vec<Ev> = events.iter().filter_map(ev_kind).collect();
        assert_eq!(kinds, m.events, "events after {t:?}");
        for e in &events {
            match e {
                LifecycleEvent::Disconnected(reason) => {
                    assert_eq!(Some(&Stored::Disconnected { reason: *reason }), m.stored.as_ref());
                }
                LifecycleEvent::Registered { device_id, .. } => {
                    assert_eq!(Some(device_id.as_str()), sut.conn.device_id(), "the new device id");
                }
                _ => {}
            }
        }
        sut.on_events(&events);
        sut
    }

    fn check_invariants(sut: &Sut, m: &Model) {
        let c = &sut.conn;
        assert_eq!(c.state(), m.state(), "visible state vs model ({:?})", m.st);
        assert_eq!(sut.server.outstanding.as_ref().map(|(k, _)| *k), m.in_flight, "request in flight vs model");
        let timer = c.poll_timeout().map(|t| t.duration_since(sut.t0));
        assert_eq!(timer, m.timer(), "poll_timeout() vs model ({:?})", m.st);
        match c.state() {
            ConnectionState::Unregistered | ConnectionState::Disconnected => {
                assert_eq!(timer, None, "no request after a terminal state: no timer in {:?}", c.state());
                assert!(sut.server.outstanding.is_none(), "nothing in flight in {:?}", c.state());
            }
            ConnectionState::Registering | ConnectionState::Connected => {
                if sut.server.outstanding.is_none() {
                    assert!(
                        timer.is_some(),
                        "liveness: {:?} with nothing in flight must have a timer, or it is wedged ({:?})",
                        c.state(),
                        m.st
                    );
                }
            }
        }
        // The last Persist event equals persisted(); with nothing to persist (a registration in progress, or
        // one that failed) the flash still holds the last value, which can only be a disconnection.
        let stored = sut.stored();
        match c.persisted() {
            Some(p) => assert_eq!(stored.as_ref(), Some(&p), "the last Persist event equals persisted()"),
            None => assert!(
                matches!(stored, None | Some(PersistedConnection::Disconnected { .. })),
                "persisted() is None only before the first registration or while re-registering ({stored:?})"
            ),
        }
        let stored_model = stored.map(|p| match p {
            PersistedConnection::Connected { device_id, refresh_token, .. } => {
                Stored::Connected { device: device_id, refresh_token: refresh_token.secret().to_owned() }
            }
            PersistedConnection::Disconnected { reason, .. } => Stored::Disconnected { reason },
        });
        assert_eq!(stored_model, m.stored, "stored value vs model");
        if c.state() == ConnectionState::Connected {
            assert_eq!(
                c.refresh_token().map(|t| t.secret()),
                sut.server.newest.as_deref(),
                "R-TOK-2: the client keeps only the newest refresh token"
            );
            assert_eq!(sut.server.newest, m.newest, "newest refresh token vs model");
        }
        assert!(m.newest.as_ref().is_none_or(|n| m.issued.last() == Some(n)), "model: the newest is the last issued");
    }
}

prop_state_machine! {
    #![proptest_config(Config { cases: 512, failure_persistence: None, ..Config::default() })]

    /// The lifecycle against its reference model: R-TOK-1..4, PROTOCOL.md §5–7 and §12.
    #[test]
    fn lifecycle_matches_model(sequential 5..50 => LifecycleMachine);
}

/// A fixed trace: register, rotate twice, lose an answer, power-cycle, and get disconnected (R-TOK-2/3/4).
#[test]
fn scripted_rotation_trace() {
    let steps = [
        Transition::StartRegistration,
        Transition::Transmit,
        Transition::Deliver(Answer::CodeOk { interval: Some(5), expires_in: 600 }),
        Transition::AdvanceToTimer(0),
        Transition::Transmit,
        Transition::Deliver(Answer::Granted { lifetime: 100 }),
        Transition::AdvanceToTimer(0),
        Transition::Transmit,
        Transition::Deliver(Answer::RefreshOk { lifetime: 100 }),
        Transition::AdvanceToTimer(0),
        Transition::Transmit,
        Transition::TransportError,
        Transition::AdvanceToTimer(0),
        Transition::Transmit,
        Transition::Deliver(Answer::Html503),
        Transition::Restore,
        Transition::Transmit,
        Transition::Deliver(Answer::RefreshOk { lifetime: 100 }),
        Transition::DisconnectedPush,
        Transition::Transmit,
        Transition::Deliver(Answer::InvalidGrant),
        Transition::Advance(40_000),
        Transition::Transmit,
    ];
    let mut m = Model::fresh();
    let mut sut = <LifecycleMachine as StateMachineTest>::init_test(&m);
    let mut sent = Vec::new();
    for t in steps {
        m = <LifecycleMachine as ReferenceStateMachine>::apply(m, &t);
        sut = <LifecycleMachine as StateMachineTest>::apply(sut, &m, t);
        <LifecycleMachine as StateMachineTest>::check_invariants(&sut, &m);
        if let Some(k) = m.transmitted {
            sent.push(k);
        }
    }
    use Kind::*;
    assert_eq!(sent, vec![Code, Poll, Refresh, Refresh, Refresh, Refresh, Refresh]);
    assert_eq!(m.issued, vec!["rt-1", "rt-2", "rt-3"]);
    assert_eq!(sut.server.retired, vec!["rt-1", "rt-2"]);
    assert_eq!(sut.server.refreshes, 5);
    assert_eq!(sut.conn.state(), ConnectionState::Disconnected);
    assert_eq!(
        sut.stored(),
        Some(PersistedConnection::Disconnected { device_id: Some("dev-1".into()), reason: DisconnectReason::Removed })
    );
}
