//! Model-based test of the device-grant poller (RFC 8628 §3.4–3.5; PROTOCOL.md §5, §7, §8, §12).
//!
//! The reference model below restates the polling rules in milliseconds, from the specifications; the system
//! under test is the real [`DevicePoller`]. After every transition the test checks that the model and the poller
//! agree exactly (whether a poll is released, when the next timer fires, the interval, the events and the result),
//! and, independently of the model, an observer checks every released poll against the rules it must obey.

use std::time::{Duration, Instant};

use http::Response;
use proptest::prelude::*;
use proptest::strategy::Union;
use proptest::test_runner::Config;
use proptest_state_machine::{prop_state_machine, ReferenceStateMachine, StateMachineTest};
use roger_proto::device_authorization::DeviceAuthorizationResponse;
use roger_proto::poller::{DevicePoller, PollOutcome, PollResult, PollerConfig, PollerEvent};
use roger_proto::timing;
use roger_proto::token::{self, TokenResponse};

/// RFC 8628 §3.2 default interval.
const DEFAULT_INTERVAL_MS: u64 = 5_000;
/// PROTOCOL.md §12 floor.
const MIN_INTERVAL_MS: u64 = 1_000;
/// RFC 8628 §3.5 slow_down step.
const SLOW_DOWN_MS: u64 = 5_000;
/// PROTOCOL.md §8: with push healthy, at least every 30 s.
const PUSH_MAX_MS: u64 = 30_000;
/// The crate's documented backoff cap (`timing::MAX_BACKOFF`).
const BACKOFF_CAP_MS: u64 = 300_000;

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).expect("durations in this test fit in u64 milliseconds")
}

/// PROTOCOL.md §12: after `n` consecutive failures the wait is the interval doubled `n` times (capped).
fn doubled(interval: u64, n: u32) -> u64 {
    if n == 0 {
        return interval;
    }
    interval.saturating_mul(1u64 << n.min(20)).min(BACKOFF_CAP_MS.max(interval))
}

/// PROTOCOL.md §8: the cadence with push healthy relaxes to the configured value (at most 30 s), never below the
/// interval (R-POLL-1).
fn cadence(interval: u64, push_healthy: bool, relaxed: u64) -> u64 {
    if push_healthy {
        interval.max(relaxed.min(PUSH_MAX_MS))
    } else {
        interval
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Waiting,
    InFlight,
    AwaitingToken,
    Done,
}

/// How the flow ended, as the model expects it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    Granted,
    Denied,
    Expired,
    InvalidGrant,
    Failed,
    Cancelled,
}

fn end_of(r: &PollResult) -> End {
    match r {
        PollResult::Granted(_) => End::Granted,
        PollResult::Denied => End::Denied,
        PollResult::Expired => End::Expired,
        PollResult::InvalidGrant => End::InvalidGrant,
        PollResult::Failed(_) => End::Failed,
        PollResult::Cancelled => End::Cancelled,
        other => panic!("unexpected poll result {other:?}"),
    }
}

/// A definite error that is none of the named RFC 8628 §3.5 codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FailKind {
    /// `400 {"error":"invalid_scope"}`.
    InvalidScope,
    /// `404` with an HTML page.
    NotFoundHtml,
    /// `200` with a body that is no token response.
    GarbageSuccess,
}

/// An answer to the poll in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    Pending,
    /// Retry-After in seconds.
    SlowDown(Option<u64>),
    /// 5xx/429; Retry-After in seconds.
    Transient(Option<u64>),
    DeviceTokenRejected,
    Denied,
    Expired,
    InvalidGrant,
    Granted,
    Failed(FailKind),
}

#[derive(Debug, Clone)]
enum Transition {
    /// Let time pass (ms).
    Advance(u64),
    /// Jump to the model's next timer plus an offset in ms (exercises the exact boundaries).
    AdvanceToTimer(i64),
    Transmit,
    /// Deliver an answer; `true` = as an HTTP response through `handle_response`, else `handle_outcome`.
    Answer(Answer, bool),
    TransportError,
    Doorbell,
    PushHealthy(bool),
    DeviceToken,
    Timeout,
    Cancel,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ev {
    NeedDeviceToken,
    Finished,
}

/// The reference model: the poller's rules in milliseconds since the device authorization answer.
#[derive(Debug, Clone)]
struct Model {
    /// `interval` as the server sent it (seconds).
    sent_interval: Option<u64>,
    /// `expires_in` (seconds).
    expires_in: u64,
    /// Configured push-relaxed cadence (ms).
    relaxed: u64,
    now: u64,
    interval: u64,
    expires_at: u64,
    /// The last poll, or the issuance before the first one.
    last_ref: u64,
    polled_once: bool,
    /// The wait the last answer asked for: interval, backoff, Retry-After.
    wait: u64,
    failures: u32,
    token_failures: u32,
    doorbell: bool,
    push_healthy: bool,
    phase: Phase,
    end: Option<End>,
    /// Outputs of the last transition.
    transmitted: bool,
    events: Vec<Ev>,
}

impl Model {
    fn new(sent_interval: Option<u64>, expires_in: u64, relaxed: u64) -> Self {
        let interval = match sent_interval {
            None => DEFAULT_INTERVAL_MS,
            Some(s) => (s * 1000).max(MIN_INTERVAL_MS),
        };
        Self {
            sent_interval,
            expires_in,
            relaxed,
            now: 0,
            interval,
            expires_at: expires_in * 1000,
            last_ref: 0,
            polled_once: false,
            wait: interval,
            failures: 0,
            token_failures: 0,
            doorbell: false,
            push_healthy: false,
            phase: Phase::Waiting,
            end: None,
            transmitted: false,
            events: Vec::new(),
        }
    }

    /// The earliest moment the next poll may go (R-POLL-1, §8, §12).
    fn next_poll_at(&self) -> u64 {
        let gap = if self.doorbell && !self.polled_once {
            0
        } else if self.doorbell {
            self.wait
        } else {
            self.wait.max(cadence(self.interval, self.push_healthy, self.relaxed))
        };
        self.last_ref + gap
    }

    fn timer(&self) -> Option<u64> {
        (self.phase == Phase::Waiting).then(|| self.next_poll_at().min(self.expires_at))
    }

    fn finish(&mut self, end: End) {
        self.phase = Phase::Done;
        self.end = Some(end);
        self.events.retain(|e| *e != Ev::NeedDeviceToken);
        self.events.push(Ev::Finished);
    }

    /// RFC 8628 §3.5: stop once `expires_in` has passed (not while a poll is in flight: its answer decides).
    fn check_expiry(&mut self) {
        if matches!(self.phase, Phase::Waiting | Phase::AwaitingToken) && self.now >= self.expires_at {
            self.finish(End::Expired);
        }
    }

    fn answered(&mut self) {
        self.failures = 0;
        self.token_failures = 0;
        self.wait = self.interval;
    }
}

struct PollerMachine;

fn answer_strategy() -> BoxedStrategy<Answer> {
    let ra = proptest::option::of(0u64..=120);
    Union::new_weighted(vec![
        (8, Just(Answer::Pending).boxed()),
        (3, ra.clone().prop_map(Answer::SlowDown).boxed()),
        (4, ra.prop_map(Answer::Transient).boxed()),
        (2, Just(Answer::DeviceTokenRejected).boxed()),
        (
            2,
            prop_oneof![
                Just(Answer::Denied),
                Just(Answer::Expired),
                Just(Answer::InvalidGrant),
                Just(Answer::Granted),
                Just(Answer::Failed(FailKind::InvalidScope)),
                Just(Answer::Failed(FailKind::NotFoundHtml)),
                Just(Answer::Failed(FailKind::GarbageSuccess)),
            ]
            .boxed(),
        ),
    ])
    .boxed()
}

impl ReferenceStateMachine for PollerMachine {
    type State = Model;
    type Transition = Transition;

    fn init_state() -> BoxedStrategy<Model> {
        (
            prop_oneof![Just(None), (0u64..=12).prop_map(Some)],
            prop_oneof![1 => 1u64..=40, 4 => 40u64..=900],
            prop_oneof![Just(30_000u64), (0u64..=60).prop_map(|s| s * 1000)],
        )
            .prop_map(|(i, e, r)| Model::new(i, e, r))
            .boxed()
    }

    fn transitions(state: &Model) -> BoxedStrategy<Transition> {
        let in_flight = state.phase == Phase::InFlight;
        let waiting = state.phase == Phase::Waiting;
        let awaiting = state.phase == Phase::AwaitingToken;
        Union::new_weighted(vec![
            (10, (0u64..=3_000).prop_map(Transition::Advance).boxed()),
            (6, (0u64..=40_000).prop_map(Transition::Advance).boxed()),
            (
                if waiting { 30 } else { 4 },
                prop_oneof![Just(-1i64), Just(0), Just(1), -2_000i64..=2_000]
                    .prop_map(Transition::AdvanceToTimer)
                    .boxed(),
            ),
            (if waiting { 40 } else { 10 }, Just(Transition::Transmit).boxed()),
            (
                if in_flight { 60 } else { 3 },
                (answer_strategy(), any::<bool>()).prop_map(|(a, h)| Transition::Answer(a, h)).boxed(),
            ),
            (if in_flight { 12 } else { 3 }, Just(Transition::TransportError).boxed()),
            (5, Just(Transition::Doorbell).boxed()),
            (5, any::<bool>().prop_map(Transition::PushHealthy).boxed()),
            (if awaiting { 40 } else { 3 }, Just(Transition::DeviceToken).boxed()),
            (5, Just(Transition::Timeout).boxed()),
            (1, Just(Transition::Cancel).boxed()),
        ])
        .boxed()
    }

    fn apply(mut s: Model, t: &Transition) -> Model {
        s.transmitted = false;
        s.events.clear();
        match *t {
            Transition::Advance(d) => s.now += d,
            Transition::AdvanceToTimer(off) => {
                if let Some(at) = s.timer() {
                    s.now = s.now.max(at.saturating_add_signed(off));
                }
            }
            Transition::Transmit => {
                s.check_expiry();
                if s.phase == Phase::Waiting && s.now >= s.next_poll_at() {
                    s.phase = Phase::InFlight;
                    s.last_ref = s.now;
                    s.polled_once = true;
                    s.doorbell = false;
                    s.transmitted = true;
                }
            }
            Transition::Answer(a, _) => {
                if s.phase != Phase::InFlight {
                    return s;
                }
                s.phase = Phase::Waiting;
                match a {
                    Answer::Pending => s.answered(),
                    Answer::SlowDown(ra) => {
                        s.interval += SLOW_DOWN_MS;
                        s.answered();
                        s.wait = s.interval.max(ra.unwrap_or(0) * 1000);
                    }
                    Answer::Transient(ra) => {
                        s.failures += 1;
                        s.wait = doubled(s.interval, s.failures).max(ra.unwrap_or(0) * 1000);
                    }
                    Answer::DeviceTokenRejected => {
                        s.token_failures += 1;
                        s.failures = 0;
                        s.wait = doubled(s.interval, s.token_failures - 1);
                        s.phase = Phase::AwaitingToken;
                        s.events.push(Ev::NeedDeviceToken);
                    }
                    Answer::Denied => s.finish(End::Denied),
                    Answer::Expired => s.finish(End::Expired),
                    Answer::InvalidGrant => s.finish(End::InvalidGrant),
                    Answer::Granted => s.finish(End::Granted),
                    Answer::Failed(_) => s.finish(End::Failed),
                }
                s.check_expiry();
            }
            Transition::TransportError => {
                if s.phase == Phase::InFlight {
                    s.phase = Phase::Waiting;
                    s.failures += 1;
                    s.wait = doubled(s.interval, s.failures);
                    s.check_expiry();
                }
            }
            Transition::Doorbell => {
                // A doorbell counts in every phase but the end, also while a device token is awaited: the retry
                // then goes at the earliest moment the interval allows.
                if !matches!(s.phase, Phase::Done) {
                    s.doorbell = true;
                }
                s.check_expiry();
            }
            Transition::PushHealthy(h) => s.push_healthy = h,
            Transition::DeviceToken => {
                if s.phase == Phase::AwaitingToken {
                    s.phase = Phase::Waiting;
                    s.check_expiry();
                }
            }
            Transition::Timeout => s.check_expiry(),
            Transition::Cancel => {
                if s.phase != Phase::Done {
                    s.finish(End::Cancelled);
                }
            }
        }
        s
    }
}

/// What the observer knows about the rules in force for the next poll, learnt only from what it fed the poller.
#[derive(Debug, Default)]
struct Observer {
    /// The last released poll: when (ms) and the interval in force then.
    last_transmit: Option<(u64, u64)>,
    /// Transport errors and 5xx/429 since the last answer (PROTOCOL.md §12).
    failures: u32,
    /// Retry-After of the last answer, for the next poll (ms).
    retry_after: Option<u64>,
    /// A doorbell arrived since the last poll.
    doorbell: bool,
    /// The device token was refused since the last ordinary answer.
    token_rejected: bool,
    /// Highest interval seen (RFC 8628 §3.5: never decreases).
    max_interval: u64,
    /// A Finished event was delivered.
    finished: bool,
    transmits: u32,
}

struct Sut {
    poller: DevicePoller,
    t0: Instant,
    now: u64,
    push_healthy: bool,
    relaxed: u64,
    obs: Observer,
}

impl Sut {
    fn at(&self, ms: u64) -> Instant {
        self.t0 + Duration::from_millis(ms)
    }

    fn rel(&self, at: Instant) -> u64 {
        ms(at.duration_since(self.t0))
    }
}

fn json(status: u16, body: &str) -> Response<Vec<u8>> {
    Response::builder().status(status).body(body.as_bytes().to_vec()).unwrap()
}

fn with_retry_after(mut r: Response<Vec<u8>>, ra: Option<u64>) -> Response<Vec<u8>> {
    if let Some(ra) = ra {
        r.headers_mut().insert(http::header::RETRY_AFTER, ra.to_string().parse().unwrap());
    }
    r
}

/// The HTTP answer a real server gives for `a`.
fn response_for(a: Answer) -> Response<Vec<u8>> {
    match a {
        Answer::Pending => json(400, r#"{"error":"authorization_pending"}"#),
        Answer::SlowDown(ra) => with_retry_after(json(400, r#"{"error":"slow_down"}"#), ra),
        Answer::Transient(Some(ra)) => with_retry_after(json(429, "Too Many Requests"), Some(ra)),
        Answer::Transient(None) => json(503, "<html><body>maintenance</body></html>"),
        Answer::DeviceTokenRejected => {
            let mut r = json(401, r#"{"error":"invalid_client"}"#);
            r.headers_mut().insert(
                http::header::WWW_AUTHENTICATE,
                r#"Bearer realm="roger", error="invalid_token""#.parse().unwrap(),
            );
            r
        }
        Answer::Denied => json(400, r#"{"error":"access_denied"}"#),
        Answer::Expired => json(400, r#"{"error":"expired_token"}"#),
        Answer::InvalidGrant => json(400, r#"{"error":"invalid_grant"}"#),
        Answer::Granted => json(
            200,
            r#"{"access_token":"at-1","token_type":"Bearer","expires_in":1200,"refresh_token":"rt-1",
                "scope":"roger.device","device_id":"dev-1","tenant_id":"acme"}"#,
        ),
        Answer::Failed(FailKind::InvalidScope) => json(400, r#"{"error":"invalid_scope"}"#),
        Answer::Failed(FailKind::NotFoundHtml) => json(404, "<html>not found</html>"),
        Answer::Failed(FailKind::GarbageSuccess) => json(200, r#"{"access_token":"#),
    }
}

/// The classified outcome for `a` (what `handle_outcome` gets).
fn outcome_for(a: Answer) -> PollOutcome {
    let secs = |ra: Option<u64>| ra.map(Duration::from_secs);
    match a {
        Answer::Pending => PollOutcome::Pending,
        Answer::SlowDown(ra) => PollOutcome::SlowDown { retry_after: secs(ra) },
        Answer::Transient(ra) => PollOutcome::Transient { retry_after: secs(ra) },
        Answer::DeviceTokenRejected => PollOutcome::DeviceTokenRejected,
        Answer::Denied => PollOutcome::Denied,
        Answer::Expired => PollOutcome::Expired,
        Answer::InvalidGrant => PollOutcome::InvalidGrant,
        Answer::Granted => PollOutcome::Granted(Box::new(TokenResponse {
            access_token: "at-1".into(),
            token_type: "Bearer".into(),
            expires_in: Some(1200),
            refresh_token: Some("rt-1".into()),
            scope: Some("roger.device".into()),
            device_id: Some("dev-1".into()),
            tenant_id: None,
            user: None,
        })),
        Answer::Failed(_) => {
            let o = PollOutcome::from_result(token::classify(&response_for(a)));
            assert!(matches!(o, PollOutcome::Failed(_)), "RFC 8628 §3.5: {a:?} is a definite error, got {o:?}");
            o
        }
    }
}

impl StateMachineTest for PollerMachine {
    type SystemUnderTest = Sut;
    type Reference = PollerMachine;

    fn init_test(m: &Model) -> Sut {
        let t0 = Instant::now();
        let auth = DeviceAuthorizationResponse {
            device_code: "dc-model".into(),
            user_code: "WDJBMJHT".into(),
            verification_uri: "https://api.example/device".into(),
            verification_uri_complete: None,
            expires_in: m.expires_in,
            interval: m.sent_interval,
            request_id: Some("req-1".into()),
        };
        let config = PollerConfig { push_relaxed_interval: Duration::from_millis(m.relaxed), device_bound: true };
        let poller = DevicePoller::new(t0, &auth, "emb-acme", config);
        let obs = Observer { max_interval: ms(poller.interval()), ..Observer::default() };
        Sut { poller, t0, now: 0, push_healthy: false, relaxed: m.relaxed, obs }
    }

    fn apply(mut sut: Sut, m: &Model, t: Transition) -> Sut {
        let now = m.now;
        assert!(now >= sut.now, "time never goes back");
        sut.now = now;
        let at = sut.at(now);
        let was_in_flight = sut.poller.is_in_flight();
        let interval_before = ms(sut.poller.interval());
        match t {
            Transition::Advance(_) | Transition::AdvanceToTimer(_) => {}
            Transition::Transmit => {
                let tx = sut.poller.poll_transmit(at);
                assert_eq!(
                    tx.is_some(),
                    m.transmitted,
                    "the model's 'a poll is allowed now' must match the poller exactly (t={now} ms, model {m:?}, \
                     poller {:?})",
                    sut.poller
                );
                if let Some(tx) = tx {
                    assert_eq!(tx.at, at, "a released poll is stamped with now");
                    check_transmit(&mut sut, now);
                }
            }
            Transition::Answer(a, via_http) => {
                if via_http {
                    sut.poller.handle_response(at, &response_for(a));
                } else {
                    sut.poller.handle_outcome(at, outcome_for(a));
                }
                let interval_after = ms(sut.poller.interval());
                if was_in_flight {
                    match a {
                        Answer::SlowDown(ra) => {
                            assert_eq!(
                                interval_after,
                                interval_before + SLOW_DOWN_MS,
                                "RFC 8628 §3.5: slow_down increases the interval by exactly 5 s"
                            );
                            sut.obs.failures = 0;
                            sut.obs.token_rejected = false;
                            sut.obs.retry_after = ra.map(|s| s * 1000);
                        }
                        Answer::Transient(ra) => {
                            sut.obs.failures += 1;
                            sut.obs.retry_after = ra.map(|s| s * 1000);
                        }
                        Answer::DeviceTokenRejected => {
                            sut.obs.failures = 0;
                            sut.obs.token_rejected = true;
                            sut.obs.retry_after = None;
                        }
                        _ => {
                            sut.obs.failures = 0;
                            sut.obs.token_rejected = false;
                            sut.obs.retry_after = None;
                        }
                    }
                }
                if !matches!(a, Answer::SlowDown(_)) || !was_in_flight {
                    assert_eq!(
                        interval_after, interval_before,
                        "RFC 8628 §3.5: only slow_down changes the interval (answer {a:?}, in flight {was_in_flight})"
                    );
                }
            }
            Transition::TransportError => {
                sut.poller.handle_transport_error(at);
                if was_in_flight {
                    sut.obs.failures += 1;
                    sut.obs.retry_after = None;
                }
            }
            Transition::Doorbell => {
                sut.poller.handle_doorbell(at);
                sut.obs.doorbell = true;
            }
            Transition::PushHealthy(h) => {
                sut.poller.set_push_healthy(h);
                sut.push_healthy = h;
            }
            Transition::DeviceToken => sut.poller.handle_device_token(at),
            Transition::Timeout => sut.poller.handle_timeout(at),
            Transition::Cancel => sut.poller.cancel(),
        }
        // The driver drains the events after every step.
        // Deviation reports (docs/protocol.md §7) are the driver's to log; this model checks the flow events.
        let events: Vec<Ev> = std::iter::from_fn(|| sut.poller.poll_event())
            .filter_map(|e| match e {
                PollerEvent::NeedDeviceToken => Some(Ev::NeedDeviceToken),
                PollerEvent::Finished => Some(Ev::Finished),
                _ => None,
            })
            .collect();
        assert_eq!(events, m.events, "events after {t:?} (t={now} ms)");
        if events.contains(&Ev::Finished) {
            assert!(!sut.obs.finished, "the flow finishes once");
            sut.obs.finished = true;
            let result = sut.poller.take_result().expect("a finished flow has a result");
            assert_eq!(Some(end_of(&result)), m.end, "result of the flow");
            assert_eq!(sut.poller.take_result(), None, "the result is taken once");
        }
        let interval = ms(sut.poller.interval());
        assert!(
            interval >= sut.obs.max_interval,
            "RFC 8628 §3.5: the interval never decreases ({interval} ms < {} ms after {t:?})",
            sut.obs.max_interval
        );
        sut.obs.max_interval = interval;
        sut
    }

    fn check_invariants(sut: &Sut, m: &Model) {
        let p = &sut.poller;
        let interval = ms(p.interval());
        assert!(
            interval >= sut.obs.max_interval,
            "RFC 8628 §3.5: the interval never decreases ({interval} < {})",
            sut.obs.max_interval
        );
        assert_eq!(interval, m.interval, "model interval");
        assert_eq!(p.is_finished(), m.phase == Phase::Done, "finished flag");
        assert_eq!(p.is_in_flight(), m.phase == Phase::InFlight, "in-flight flag");
        assert_eq!(p.last_poll().map(|t| sut.rel(t)), m.polled_once.then_some(m.last_ref), "last poll");
        let expires_at = sut.rel(p.expires_at());
        assert_eq!(expires_at, m.expires_at, "RFC 8628 §3.2: the codes live expires_in seconds from issuance");
        let timer = p.poll_timeout().map(|t| sut.rel(t));
        assert_eq!(timer, m.timer(), "the model's next timer must match poll_timeout() exactly");
        if p.is_finished() {
            assert_eq!(timer, None, "no request after a terminal state: no timer once the flow has finished");
        }
        if let Some(timer) = timer {
            assert!(timer <= expires_at, "RFC 8628 §3.5: the driver is woken at the latest at expiry");
            // Liveness (PROTOCOL.md §8): without push the MFP polls at the interval; with push at least every 30 s
            // (or as soon as backoff and Retry-After allow). Not checked after a refused device token, whose
            // retry pacing is the implementation's choice.
            if !sut.obs.token_rejected {
                let base = sut.obs.last_transmit.map_or(0, |(t, _)| t);
                let mut required = interval.max(doubled(interval, sut.obs.failures));
                if let Some(ra) = sut.obs.retry_after {
                    required = required.max(ra);
                }
                let slack = if sut.push_healthy { PUSH_MAX_MS } else { 0 };
                assert!(
                    timer <= base + required.max(slack),
                    "PROTOCOL.md §8: the next poll is scheduled no later than the rules require (timer {timer}, \
                     base {base}, required {required}, push {})",
                    sut.push_healthy
                );
            }
        }
        if sut.obs.finished {
            assert!(p.is_finished(), "a finished flow stays finished");
        }
    }
}

/// Checks a released poll at `now` (ms) against the rules, independently of the model, then records it.
fn check_transmit(sut: &mut Sut, now: u64) {
    let obs = &sut.obs;
    let interval = ms(sut.poller.interval());
    assert!(!obs.finished, "RFC 8628 §3.5: no request after a terminal state");
    let expires_at = sut.rel(sut.poller.expires_at());
    assert!(now < expires_at, "RFC 8628 §3.5: no poll at or after expiry (now {now} ms, expires {expires_at} ms)");
    match obs.last_transmit {
        Some((prev, interval_then)) => {
            let gap = now - prev;
            assert!(
                gap >= interval_then,
                "R-POLL-1 / RFC 8628 §3.5: two polls {gap} ms apart, closer than the interval in force at the earlier \
                 one ({interval_then} ms)"
            );
            assert!(
                gap >= interval,
                "RFC 8628 §3.5: slow_down raises the interval 'for this and all subsequent requests' (gap {gap} ms, \
                 interval {interval} ms)"
            );
            if obs.doorbell {
                assert!(
                    gap >= interval,
                    "PROTOCOL.md §8 / R-POLL-1: a doorbell never releases a poll before the interval"
                );
            }
            if obs.failures > 0 {
                let need = doubled(interval, obs.failures);
                assert!(
                    gap >= need,
                    "PROTOCOL.md §12: after {} failure(s) the wait doubles: gap {gap} ms < {need} ms",
                    obs.failures
                );
            }
            if let Some(ra) = obs.retry_after {
                assert!(gap >= ra, "PROTOCOL.md §12: Retry-After honoured: gap {gap} ms < {ra} ms");
            }
            if sut.push_healthy && !obs.doorbell {
                let need =
                    ms(timing::poll_cadence(Duration::from_millis(interval), true, Duration::from_millis(sut.relaxed)));
                assert!(
                    gap >= need,
                    "PROTOCOL.md §8: with push healthy and no doorbell the cadence relaxes to {need} ms (gap {gap} ms)"
                );
                assert_eq!(
                    need,
                    cadence(interval, true, sut.relaxed),
                    "timing::poll_cadence: min(30 s, relaxed) ∨ interval"
                );
            }
        }
        None => {
            // The first poll: nothing to keep a distance from, but without a doorbell the poller waits its cadence.
            if !obs.doorbell {
                let need = cadence(interval, sut.push_healthy, sut.relaxed);
                assert!(now >= need, "RFC 8628 §3.5 / PROTOCOL.md §8: first poll at {now} ms, before {need} ms");
            }
        }
    }
    let obs = &mut sut.obs;
    obs.last_transmit = Some((now, interval));
    obs.retry_after = None;
    obs.doorbell = false;
    obs.transmits += 1;
}

prop_state_machine! {
    #![proptest_config(Config { cases: 512, failure_persistence: None, ..Config::default() })]

    /// The poller against its reference model: timing rules of RFC 8628 §3.5 and PROTOCOL.md §8, §12.
    #[test]
    fn poller_matches_model(sequential 5..50 => PollerMachine);
}

/// A fixed trace through the model and the poller, so a regression in the harness itself is noticed: the slow_down
/// and backoff arithmetic of RFC 8628 §3.5 / PROTOCOL.md §12 on a known sequence.
#[test]
fn scripted_trace() {
    let mut m = Model::new(Some(5), 600, 30_000);
    let mut sut = <PollerMachine as StateMachineTest>::init_test(&m);
    let steps = [
        Transition::AdvanceToTimer(0),
        Transition::Transmit,
        Transition::Answer(Answer::SlowDown(None), true),
        Transition::AdvanceToTimer(-1),
        Transition::Transmit,
        Transition::Advance(1),
        Transition::Transmit,
        Transition::TransportError,
        Transition::AdvanceToTimer(0),
        Transition::Transmit,
        Transition::Answer(Answer::Transient(Some(60)), false),
        Transition::Doorbell,
        Transition::AdvanceToTimer(0),
        Transition::Transmit,
        Transition::Answer(Answer::Granted, true),
    ];
    let mut transmits = Vec::new();
    for t in steps {
        m = <PollerMachine as ReferenceStateMachine>::apply(m, &t);
        if m.transmitted {
            transmits.push(m.now);
        }
        sut = <PollerMachine as StateMachineTest>::apply(sut, &m, t);
        <PollerMachine as StateMachineTest>::check_invariants(&sut, &m);
    }
    // 5 s; then interval 10 s (slow_down); then transport error → 20 s; then Retry-After 60 s beats 40 s.
    assert_eq!(transmits, vec![5_000, 15_000, 35_000, 95_000]);
    assert_eq!(m.end, Some(End::Granted));
    assert_eq!(sut.obs.transmits, 4);
}
