//! The judge's readings of what the proxy recorded: device-code polls against the timing model of docs/protocol.md
//! §6 (RFC 8628 §3.5), the device token's issue and refresh history (R-TOK-1, R-TOK-2), and session codes and
//! their renewal window (R-QR-3). Pure functions over [`Exchange`]s, so they are tested without a network.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use roger_proto::metadata::GRANT_DEVICE_CODE;
use roger_proto::timing;
use serde_json::Value;

use super::proxy::Exchange;

/// Why a poll came too early (PROTOCOL.md §12).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TooEarly {
    /// Earlier than the code's interval (R-POLL-1, RFC 8628 §3.2).
    Interval,
    /// Earlier than the interval as grown by `slow_down` (RFC 8628 §3.5: "increased by 5 seconds for this and all
    /// subsequent requests").
    SlowDown,
    /// Earlier than the doubled wait after a connection failure, a `5xx` or an OAuth `server_error` /
    /// `temporarily_unavailable` (docs/protocol.md §6.3; RFC 8628 §3.5 asks a client to reduce its polling
    /// frequency after a connection timeout and recommends doubling).
    Backoff,
    /// Earlier than the answer's `Retry-After` (docs/protocol.md §6.3: after `429` or `408` the longer of
    /// `Retry-After` and the interval; after any other answer the longer of `Retry-After` and the wait it imposes).
    RetryAfter,
    /// Any poll after the code's definite end (a token answer, `access_denied`, `expired_token`, …) was received.
    AfterEnd,
}

impl TooEarly {
    /// What was broken, for reports.
    pub fn describe(self) -> &'static str {
        match self {
            Self::Interval => "earlier than the interval",
            Self::SlowDown => "earlier than the interval grown by slow_down",
            Self::Backoff => "earlier than the doubled wait after a failure",
            Self::RetryAfter => "earlier than Retry-After",
            Self::AfterEnd => "after the code's polling had ended",
        }
    }
}

/// One poll that broke the timing model.
#[derive(Debug, Clone)]
pub struct PollViolation {
    /// What it broke.
    pub kind: TooEarly,
    /// The poll's exchange sequence number.
    pub seq: u64,
    /// When it arrived.
    pub at: Instant,
    /// The gap since the previous poll of the code.
    pub gap: Duration,
    /// The wait the model required (before the 0.5 s tolerance).
    pub required: Duration,
    /// The device code (redact before reporting).
    pub device_code: String,
}

impl PollViolation {
    /// A sentence for the report (the device code appears as given; pass it through the vault).
    pub fn sentence(&self) -> String {
        match self.kind {
            TooEarly::AfterEnd => format!(
                "exchange #{}: a poll of device code {} {}",
                self.seq,
                self.device_code,
                self.kind.describe()
            ),
            _ => format!(
                "exchange #{}: a poll of device code {} came {:.2} s after the previous one, {} ({:.2} s, minus the 0.5 s tolerance)",
                self.seq,
                self.device_code,
                self.gap.as_secs_f64(),
                self.kind.describe(),
                self.required.as_secs_f64()
            ),
        }
    }
}

/// A device code the MFP received, with its polls.
#[derive(Debug, Clone)]
pub struct PolledCode {
    /// The device code.
    pub device_code: String,
    /// The user code that came with it.
    pub user_code: Option<String>,
    /// The interval of the device authorization answer (effective, PROTOCOL.md §12), 5 s if unknown.
    pub interval: Duration,
    /// `expires_in`.
    pub expires_in: Option<Duration>,
    /// When the MFP got the code (the answer left the proxy).
    pub issued: Option<Instant>,
    /// Whether the request carried device-bound authentication (a session code, PROTOCOL.md §8).
    pub session: bool,
    /// The polls, in order of arrival.
    pub polls: Vec<Exchange>,
}

/// Every device code the MFP received or polled, in order of first appearance.
pub fn polled_codes(exchanges: &[Exchange]) -> Vec<PolledCode> {
    let mut order: Vec<String> = Vec::new();
    let mut codes: BTreeMap<String, PolledCode> = BTreeMap::new();
    for e in exchanges {
        if e.is("POST", "/oauth/device_authorization") && e.delivered_ok() {
            if let Some(v) = e.json() {
                if let Some(dc) = v.get("device_code").and_then(Value::as_str) {
                    let interval = timing::effective_interval(v.get("interval").and_then(Value::as_u64));
                    let code = PolledCode {
                        device_code: dc.to_owned(),
                        user_code: v.get("user_code").and_then(Value::as_str).map(str::to_owned),
                        interval,
                        expires_in: v.get("expires_in").and_then(Value::as_u64).map(Duration::from_secs),
                        issued: Some(e.done),
                        session: e.bearer().is_some(),
                        polls: Vec::new(),
                    };
                    if !codes.contains_key(dc) {
                        order.push(dc.to_owned());
                    }
                    codes.insert(dc.to_owned(), code);
                }
            }
        } else if e.is_poll() {
            if let Some(dc) = e.form_get("device_code") {
                let entry = codes.entry(dc.clone()).or_insert_with(|| {
                    order.push(dc.clone());
                    PolledCode {
                        device_code: dc.clone(),
                        user_code: None,
                        interval: timing::DEFAULT_INTERVAL,
                        expires_in: None,
                        issued: None,
                        session: e.bearer().is_some(),
                        polls: Vec::new(),
                    }
                });
                entry.polls.push(e.clone());
            }
        }
    }
    order.into_iter().filter_map(|dc| codes.remove(&dc)).collect()
}

fn retry_after(e: &Exchange) -> Option<Duration> {
    roger_proto::wire::retry_after(&e.resp_headers)
}

/// How an answer bears on the wait before the next poll (docs/protocol.md §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnswerClass {
    /// No answer (connection failure, timeout), a `5xx`, or an OAuth `server_error` / `temporarily_unavailable`:
    /// the wait doubles with each such answer in a row (RFC 8628 §3.5 for connection timeouts; docs/protocol.md
    /// §6.3 for the rest).
    Failure,
    /// `429` or `408`: the longer of `Retry-After` and the interval, no doubling (RFC 9110 §10.2.3, RFC 6585 §4).
    Throttled,
    /// A definite answer: `authorization_pending`, `slow_down`, a token, or an error that ends the polling.
    Definite,
}

/// Classifies an answer for the timing model (docs/protocol.md §6.3).
pub fn answer_class(e: &Exchange) -> AnswerClass {
    match e.status {
        None => AnswerClass::Failure,
        Some(s) if s >= 500 => AnswerClass::Failure,
        Some(429 | 408) => AnswerClass::Throttled,
        Some(_) if matches!(e.oauth_error().as_deref(), Some("server_error" | "temporarily_unavailable")) => {
            AnswerClass::Failure
        }
        Some(_) => AnswerClass::Definite,
    }
}

/// Checks every poll of `code` against the timing model of docs/protocol.md §6: the wait after each answer, and no
/// poll after a definite end. A client may always wait longer than the model requires (roger-proto doubles after
/// `429` too); only earlier polls are reported.
pub fn poll_violations(code: &PolledCode) -> Vec<PollViolation> {
    let mut out = Vec::new();
    let base = code.interval;
    let mut interval = base;
    let mut failures = 0u32;
    // The wait the previous answer imposed, and why it exceeded the interval.
    let mut required: Option<(Duration, TooEarly)> = None;
    let mut ended = false;
    let mut prev_at: Option<Instant> = None;
    for p in &code.polls {
        if let Some(prev) = prev_at {
            let gap = p.at.saturating_duration_since(prev);
            let violation = |kind, req| PollViolation {
                kind,
                seq: p.seq,
                at: p.at,
                gap,
                required: req,
                device_code: code.device_code.clone(),
            };
            if ended {
                out.push(violation(TooEarly::AfterEnd, Duration::ZERO));
            } else if let Some((req, why)) = required {
                if timing::is_too_early(gap, base) {
                    out.push(violation(TooEarly::Interval, base));
                } else if timing::is_too_early(gap, req) {
                    out.push(violation(why, req));
                }
            }
        }
        prev_at = Some(p.at);
        // What this answer requires of the next poll.
        let ra = retry_after(p);
        match answer_class(p) {
            AnswerClass::Failure => {
                failures += 1;
                let doubled = timing::backoff_wait(interval, failures);
                let wait = timing::wait_with_retry_after(doubled, ra);
                let why = if wait > doubled { TooEarly::RetryAfter } else { TooEarly::Backoff };
                required = Some((wait, why));
                continue;
            }
            AnswerClass::Throttled => {
                // A throttling answer neither doubles nor counts towards a later doubling (the judge asks the least
                // the model allows; a client that counts it as a failure only waits longer).
                failures = 0;
                let wait = timing::wait_with_retry_after(interval, ra);
                let why = if wait > interval {
                    TooEarly::RetryAfter
                } else if interval > base {
                    TooEarly::SlowDown
                } else {
                    TooEarly::Interval
                };
                required = Some((wait, why));
                continue;
            }
            AnswerClass::Definite => {}
        }
        failures = 0;
        match p.oauth_error().as_deref() {
            Some("authorization_pending") | Some("invalid_client") => {
                let why = if interval > base { TooEarly::SlowDown } else { TooEarly::Interval };
                let wait = timing::wait_with_retry_after(interval, ra);
                required = Some((wait, if wait > interval { TooEarly::RetryAfter } else { why }));
            }
            Some("slow_down") => {
                interval = timing::after_slow_down(interval);
                let wait = timing::wait_with_retry_after(interval, ra);
                required = Some((wait, if wait > interval { TooEarly::RetryAfter } else { TooEarly::SlowDown }));
            }
            // A token answer, access_denied, expired_token, invalid_grant or any other error ends the code's polling
            // (RFC 8628 §3.5: "If the client receives an error response with any other error code, it MUST stop").
            _ => ended = true,
        }
    }
    out
}

/// A token answer the MFP received with a refresh token: a device token set (registration or refresh).
#[derive(Debug, Clone)]
pub struct DeviceTokens {
    /// The exchange.
    pub seq: u64,
    /// When the answer left the proxy.
    pub at: Instant,
    /// `expires_in` of the access token.
    pub lifetime: Duration,
    /// The access token.
    pub access_token: String,
    /// The refresh token.
    pub refresh_token: String,
}

/// Every device token set the MFP received (answers to `device_code` and `refresh_token` grants that carry a
/// `refresh_token`), in order.
pub fn device_tokens(exchanges: &[Exchange]) -> Vec<DeviceTokens> {
    exchanges
        .iter()
        .filter(|e| e.delivered_ok() && matches!(e.grant_type().as_deref(), Some(GRANT_DEVICE_CODE | "refresh_token")))
        .filter_map(|e| {
            let v = e.json()?;
            Some(DeviceTokens {
                seq: e.seq,
                at: e.done,
                lifetime: timing::lifetime(v.get("expires_in").and_then(Value::as_u64)),
                access_token: v.get("access_token")?.as_str()?.to_owned(),
                refresh_token: v.get("refresh_token")?.as_str()?.to_owned(),
            })
        })
        .collect()
}

/// The refresh requests (RFC 6749 §6).
pub fn refreshes(exchanges: &[Exchange]) -> Vec<&Exchange> {
    exchanges.iter().filter(|e| e.grant_type().as_deref() == Some("refresh_token")).collect()
}

/// R-TOK-2: each refresh request must present the refresh token of the newest token answer the MFP had received
/// when it sent it (an answer that never arrived does not count, so re-sending after a lost answer is right,
/// R-TOK-3). Returns `(refresh exchange seq, presented, expected)` for each that did not.
pub fn stale_refreshes(exchanges: &[Exchange]) -> Vec<(u64, String, String)> {
    let issued = device_tokens(exchanges);
    let mut out = Vec::new();
    for r in refreshes(exchanges) {
        let Some(presented) = r.form_get("refresh_token") else { continue };
        let newest = issued.iter().rfind(|t| t.at <= r.at);
        if let Some(t) = newest {
            if t.refresh_token != presented {
                out.push((r.seq, presented, t.refresh_token.clone()));
            }
        }
    }
    out
}

/// One missed refresh deadline.
#[derive(Debug, Clone)]
pub struct LateRefresh {
    /// The token answer whose access token was not refreshed in time.
    pub issued_seq: u64,
    /// Lifetime.
    pub lifetime: Duration,
    /// How long after the answer the next refresh arrived (`None`: none arrived before the end of observation).
    pub after: Option<Duration>,
}

/// R-TOK-1: after each device token answer, the next refresh must arrive no later than 0.9 × lifetime (plus
/// `tolerance`). Only answers whose deadline lies before `until` are judged. Returns the misses, and how many
/// deadlines were judged.
pub fn late_refreshes(exchanges: &[Exchange], until: Instant, tolerance: Duration) -> (Vec<LateRefresh>, usize) {
    let issued = device_tokens(exchanges);
    let refresh_times: Vec<Instant> = refreshes(exchanges).iter().map(|e| e.at).collect();
    let mut late = Vec::new();
    let mut judged = 0;
    for t in &issued {
        let deadline = t.at + t.lifetime.mul_f64(timing::REFRESH_LATEST_FRACTION) + tolerance;
        let next = refresh_times.iter().find(|&&at| at > t.at).copied();
        match next {
            Some(at) if at <= deadline => judged += 1,
            Some(at) => {
                judged += 1;
                late.push(LateRefresh { issued_seq: t.seq, lifetime: t.lifetime, after: Some(at - t.at) });
            }
            None if deadline < until => {
                judged += 1;
                late.push(LateRefresh { issued_seq: t.seq, lifetime: t.lifetime, after: None });
            }
            None => {}
        }
    }
    (late, judged)
}

/// R-TOK-1 (SHOULD): refreshes that came before half the lifetime had passed (minus `tolerance`): `(token answer
/// seq, how long after it)`.
pub fn early_refreshes(exchanges: &[Exchange], tolerance: Duration) -> Vec<(u64, Duration)> {
    let issued = device_tokens(exchanges);
    let mut out = Vec::new();
    for r in refreshes(exchanges) {
        if let Some(t) = issued.iter().rfind(|t| t.at <= r.at) {
            let after = r.at - t.at;
            if after + tolerance < t.lifetime / 2 {
                out.push((t.seq, after));
            }
        }
    }
    out
}

/// A session code the MFP received (PROTOCOL.md §8 step 1).
#[derive(Debug, Clone)]
pub struct SessionCode {
    /// The request's sequence number.
    pub seq: u64,
    /// When the request arrived.
    pub requested: Instant,
    /// When the answer left the proxy.
    pub issued: Instant,
    /// Lifetime (`expires_in`).
    pub lifetime: Duration,
    /// The user code (wire form).
    pub user_code: String,
    /// The QR payload.
    pub verification_uri_complete: Option<String>,
}

/// The session codes the MFP received (device-bound device authorization answers), in order.
pub fn session_codes(exchanges: &[Exchange]) -> Vec<SessionCode> {
    exchanges
        .iter()
        .filter(|e| e.is("POST", "/oauth/device_authorization") && e.delivered_ok() && e.bearer().is_some())
        .filter_map(|e| {
            let v = e.json()?;
            Some(SessionCode {
                seq: e.seq,
                requested: e.at,
                issued: e.done,
                lifetime: Duration::from_secs(v.get("expires_in")?.as_u64()?),
                user_code: v.get("user_code")?.as_str()?.to_owned(),
                verification_uri_complete: v
                    .get("verification_uri_complete")
                    .and_then(Value::as_str)
                    .map(str::to_owned),
            })
        })
        .collect()
}

/// R-QR-3: when, after a session code of `lifetime` was received, the MFP requests the next one: `(earliest,
/// latest)`, before any tolerance for transit and scheduling. The rule reads "no later than 10 s before the current
/// one expires (at half the lifetime when it lives less than 20 s)" and "not faster than rotation requires". For
/// codes of 20 s and more both readings agree on 10 s before expiry; for codes of 10–20 s "10 s before expiry"
/// comes before "half the lifetime" and both are the rule, so the window spans them; a code under 10 s cannot be
/// renewed 10 s before its expiry, so half its lifetime is the only reading.
pub fn qr_renewal_window(lifetime: Duration) -> (Duration, Duration) {
    let ahead = timing::QR_RENEW_AHEAD;
    let half = lifetime / 2;
    let latest = if lifetime >= ahead * 2 { lifetime - ahead } else { half };
    let earliest = if lifetime >= ahead { lifetime - ahead } else { half };
    (earliest, latest)
}

/// The wire form of a user code as shown (`WDJB-MJHT` → `WDJBMJHT`), if it is one.
pub fn wire_code(shown: &str) -> Option<String> {
    roger_proto::user_code::normalize(shown).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Bytes;
    use http::{HeaderMap, HeaderValue};

    struct Clock {
        t0: Instant,
        seq: u64,
    }

    impl Clock {
        fn new() -> Self {
            Self { t0: Instant::now(), seq: 0 }
        }

        fn ex(&mut self, at_ms: u64, path: &str, form: &str, status: Option<u16>, answer: Value) -> Exchange {
            let mut headers = HeaderMap::new();
            headers.insert("content-type", HeaderValue::from_static("application/x-www-form-urlencoded"));
            let at = self.t0 + Duration::from_millis(at_ms);
            self.seq += 1;
            Exchange {
                seq: self.seq,
                route: "api",
                at,
                done: at + Duration::from_millis(5),
                method: "POST".into(),
                path: path.into(),
                query: None,
                headers,
                body: Bytes::from(form.to_owned()),
                status,
                resp_headers: HeaderMap::new(),
                resp_body: Bytes::from(answer.to_string()),
                rewritten: Vec::new(),
            }
        }

        fn poll(&mut self, at_ms: u64, answer: &str) -> Exchange {
            let form =
                "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Adevice_code&device_code=rdc_1&client_id=emb-x";
            if answer == "drop" {
                return self.ex(at_ms, "/oauth/token", form, None, Value::Null);
            }
            if answer == "ok" {
                return self.ex(
                    at_ms,
                    "/oauth/token",
                    form,
                    Some(200),
                    serde_json::json!({"access_token":"rat_a","refresh_token":"rrt_a","expires_in":10,"token_type":"Bearer"}),
                );
            }
            self.ex(at_ms, "/oauth/token", form, Some(400), serde_json::json!({ "error": answer }))
        }

        fn code(&mut self, interval: u64) -> Exchange {
            self.ex(
                0,
                "/oauth/device_authorization",
                "client_id=emb-x&scope=roger.device",
                Some(200),
                serde_json::json!({"device_code":"rdc_1","user_code":"BCDFGHJK","interval":interval,"expires_in":600}),
            )
        }
    }

    fn kinds(v: &[PollViolation]) -> Vec<TooEarly> {
        v.iter().map(|x| x.kind).collect()
    }

    #[test]
    fn interval_and_tolerance() {
        let mut c = Clock::new();
        let ex = vec![
            c.code(2),
            c.poll(100, "authorization_pending"),
            c.poll(1700, "authorization_pending"), // 1.6 s ≥ 2 − 0.5
            c.poll(3000, "authorization_pending"), // 1.3 s: too early
            c.poll(5000, "ok"),
        ];
        let codes = polled_codes(&ex);
        assert_eq!(codes.len(), 1);
        assert_eq!(codes[0].interval, Duration::from_secs(2));
        assert_eq!(kinds(&poll_violations(&codes[0])), vec![TooEarly::Interval]);
    }

    #[test]
    fn slow_down_is_for_good() {
        let mut c = Clock::new();
        let ex = vec![
            c.code(1),
            c.poll(0, "slow_down"),
            c.poll(6000, "authorization_pending"), // 6 s: fine
            c.poll(7100, "authorization_pending"), // back to 1 s: broken
            c.poll(8200, "authorization_pending"),
        ];
        let v = poll_violations(&polled_codes(&ex)[0]);
        assert_eq!(kinds(&v), vec![TooEarly::SlowDown, TooEarly::SlowDown]);
        let mut c = Clock::new();
        let ignored = vec![c.code(1), c.poll(0, "slow_down"), c.poll(1000, "authorization_pending")];
        assert_eq!(kinds(&poll_violations(&polled_codes(&ignored)[0])), vec![TooEarly::SlowDown]);
    }

    #[test]
    fn backoff_after_lost_answers_and_end() {
        let mut c = Clock::new();
        let ex = vec![
            c.code(1),
            c.poll(0, "drop"),
            c.poll(1000, "authorization_pending"), // needs 2 s after a lost answer
            c.poll(2000, "access_denied"),
            c.poll(9000, "access_denied"), // after the end
        ];
        let v = poll_violations(&polled_codes(&ex)[0]);
        assert_eq!(kinds(&v), vec![TooEarly::Backoff, TooEarly::AfterEnd]);
        assert!(v[0].sentence().contains("doubled"));
    }

    /// R-QR-3's window follows the rule at the boundaries of its two readings.
    #[test]
    fn qr_renewal_window_boundaries() {
        let s = Duration::from_secs;
        let ms = Duration::from_millis;
        // 10 s: "10 s before expiry" is at once, "half the lifetime" at 5 s: both are the rule.
        assert_eq!(qr_renewal_window(s(10)), (s(0), s(5)));
        // 19 s: 9 s (10 s before expiry) to 9.5 s (half).
        assert_eq!(qr_renewal_window(s(19)), (s(9), ms(9500)));
        // 20 s: both readings meet at 10 s.
        assert_eq!(qr_renewal_window(s(20)), (s(10), s(10)));
        // 21 s and 120 s: 10 s before expiry.
        assert_eq!(qr_renewal_window(s(21)), (s(11), s(11)));
        assert_eq!(qr_renewal_window(s(120)), (s(110), s(110)));
        // Under 10 s only half the lifetime is possible.
        assert_eq!(qr_renewal_window(s(8)), (s(4), s(4)));
        // Never an empty or inverted window, and never past the expiry.
        for l in 1..200 {
            let (a, b) = qr_renewal_window(s(l));
            assert!(a <= b && b < s(l), "{l}: {a:?}..{b:?}");
        }
    }

    /// docs/protocol.md §6.3: `429` and `408` do not double the wait; the longer of `Retry-After` and the
    /// interval holds. A `5xx` and a lost answer double it.
    #[test]
    fn throttling_does_not_double() {
        let mut c = Clock::new();
        let mut throttled = c.poll(0, "authorization_pending");
        throttled.status = Some(429);
        throttled.resp_body = Bytes::from_static(b"<html>busy</html>");
        let ex = vec![c.code(2), throttled, c.poll(2000, "authorization_pending")];
        assert!(poll_violations(&polled_codes(&ex)[0]).is_empty(), "the interval after a 429 is enough");
        // With Retry-After the longer one holds.
        let mut c = Clock::new();
        let mut throttled = c.poll(0, "authorization_pending");
        throttled.status = Some(429);
        throttled.resp_body = Bytes::from_static(b"{}");
        throttled.resp_headers.insert("retry-after", HeaderValue::from_static("4"));
        let ex = vec![c.code(2), throttled, c.poll(3000, "authorization_pending")];
        assert_eq!(kinds(&poll_violations(&polled_codes(&ex)[0])), vec![TooEarly::RetryAfter]);
        // 408 alike; a 503 doubles.
        let mut c = Clock::new();
        let mut timeout = c.poll(0, "authorization_pending");
        timeout.status = Some(408);
        timeout.resp_body = Bytes::from_static(b"{}");
        let mut unavailable = c.poll(2000, "authorization_pending");
        unavailable.status = Some(503);
        unavailable.resp_body = Bytes::from_static(b"<html>down</html>");
        let ex = vec![c.code(2), timeout, unavailable, c.poll(4500, "authorization_pending")];
        assert_eq!(kinds(&poll_violations(&polled_codes(&ex)[0])), vec![TooEarly::Backoff], "2.5 s < 4 s − 0.5 s");
    }

    #[test]
    fn refresh_history() {
        let mut c = Clock::new();
        let reg = c.poll(0, "ok");
        let r1 = c.ex(
            8000,
            "/oauth/token",
            "grant_type=refresh_token&refresh_token=rrt_a&client_id=emb-x",
            Some(200),
            serde_json::json!({"access_token":"rat_b","refresh_token":"rrt_b","expires_in":10}),
        );
        // Presents rrt_a again although rrt_b arrived: stale.
        let r2 = c.ex(
            16000,
            "/oauth/token",
            "grant_type=refresh_token&refresh_token=rrt_a&client_id=emb-x",
            Some(200),
            serde_json::json!({"access_token":"rat_c","refresh_token":"rrt_c","expires_in":10}),
        );
        let ex = vec![reg, r1, r2];
        let stale = stale_refreshes(&ex);
        assert_eq!(stale.len(), 1);
        assert_eq!((stale[0].1.as_str(), stale[0].2.as_str()), ("rrt_a", "rrt_b"));
        let until = c.t0 + Duration::from_secs(40);
        let (late, judged) = late_refreshes(&ex, until, Duration::from_millis(500));
        // 0 → 8 s: within 9 s; 8 → 16 s: within 9 s; 16 s → nothing by 40 s: late.
        assert_eq!(judged, 3);
        assert_eq!(late.len(), 1);
        assert!(late[0].after.is_none());
        assert!(early_refreshes(&ex, Duration::from_millis(300)).is_empty());
    }
}
