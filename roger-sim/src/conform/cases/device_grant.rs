//! The device grant and the timing model (RFC 8628 §3.4–3.5, PROTOCOL.md §12, R-POLL-1): polls no faster than the
//! interval, `slow_down` adds 5 s for good, polling stops on a definite answer, failures double the wait,
//! `Retry-After` is honoured, and an expired registration code is replaced.

use roger_proto::metadata::GRANT_DEVICE_CODE;

use super::super::judge::{self, TooEarly};
use super::prelude::*;
use super::{observe, poll_answered, poll_timing, poll_timing_of, registration_codes};

pub(super) fn cases() -> Vec<Case> {
    vec![
        Case {
            id: "rfc8628/3.5/poll-no-faster-than-interval",
            area: Area::DeviceGrant,
            requirement: "The MFP never sends two polls of one device code closer together than the code's interval \
                          (measured between arrivals, with 0.5 s tolerance), for registration and session codes.",
            sources: &["RFC 8628 §3.5", "RFC 8628 §3.2", "R-POLL-1", "PROTOCOL §12"],
            level: Level::Must,
            aimed_at: &["poll-too-fast"],
            client: client!(interval_2s, poll_interval),
            server: None,
        },
        Case {
            id: "rfc8628/3.5/slow-down-adds-5s",
            area: Area::DeviceGrant,
            requirement:
                "After a `slow_down` answer the MFP waits at least the interval plus 5 s before its next poll \
                          of that code.",
            sources: &["RFC 8628 §3.5", "R-POLL-1", "PROTOCOL §12"],
            level: Level::Must,
            aimed_at: &["ignore-slow-down"],
            client: client!(defaults, slow_down_once),
            server: None,
        },
        Case {
            id: "rfc8628/3.5/slow-down-is-permanent",
            area: Area::DeviceGrant,
            requirement:
                "The interval grown by `slow_down` holds for every later poll of that code, not only the next.",
            sources: &["RFC 8628 §3.5", "R-POLL-1"],
            level: Level::Must,
            aimed_at: &["reset-interval", "ignore-slow-down"],
            client: client!(defaults, slow_down_for_good),
            server: None,
        },
        Case {
            id: "rfc8628/3.5/stop-after-access-denied",
            area: Area::DeviceGrant,
            requirement: "After an `access_denied` answer the MFP never polls that device code again.",
            sources: &["RFC 8628 §3.5"],
            level: Level::Must,
            aimed_at: &["poll-after-denied"],
            client: client!(defaults, denied),
            server: None,
        },
        Case {
            id: "rfc8628/3.5/stop-after-expired-token",
            area: Area::DeviceGrant,
            requirement: "After an `expired_token` answer the MFP never polls that device code again.",
            sources: &["RFC 8628 §3.5"],
            level: Level::Must,
            aimed_at: &[],
            client: client!(defaults, expired_stops),
            server: None,
        },
        Case {
            id: "roger/sec5/expired-registration-code-replaced",
            area: Area::DeviceGrant,
            requirement: "When its registration code expires the MFP requests a new one at once and shows it, so the \
                          registration can still complete.",
            sources: &["PROTOCOL §5", "RFC 8628 §3.5"],
            level: Level::Should,
            aimed_at: &[],
            client: client!(defaults, expired_replaced),
            server: None,
        },
        Case {
            id: "roger/sec12/backoff-after-html-5xx",
            area: Area::DeviceGrant,
            requirement:
                "After a 5xx answer with an HTML body the MFP keeps polling and doubles its wait (interval × 2^k \
                          after k failures in a row) until the next definite answer.",
            sources: &["PROTOCOL §12", "R-POLL-1"],
            level: Level::Must,
            aimed_at: &[],
            client: client!(defaults, backoff_5xx),
            server: None,
        },
        Case {
            id: "roger/sec12/retry-after-honoured",
            area: Area::DeviceGrant,
            requirement:
                "After `429` with `Retry-After` the MFP waits the longer of `Retry-After` and its doubled wait \
                          before polling again.",
            sources: &["PROTOCOL §12", "R-POLL-1"],
            level: Level::Must,
            aimed_at: &[],
            client: client!(defaults, retry_after),
            server: None,
        },
    ]
}

fn interval_2s(s: &mut ClientSetup) {
    s.settings.interval_secs = 2;
}

fn polls_of_registration(ex: &[Exchange]) -> usize {
    ex.iter().filter(|e| e.is_poll() && e.bearer().is_none()).count()
}

async fn poll_interval(env: &mut ClientEnv) -> Result<Finding, CaseError> {
    env.start_shim().await?;
    let shown = env.register().await?;
    // Let the registration code be polled a few times before it is approved.
    env.wait_exchanges(Duration::from_secs(15), |ex| polls_of_registration(ex) >= 4).await;
    // Already too fast? Then that is the verdict (a client that polls too fast may never get its tokens: every
    // poll earns a slow_down).
    let early = judge::polled_codes(&env.exchanges())
        .iter()
        .flat_map(judge::poll_violations)
        .any(|v| v.kind == TooEarly::Interval);
    if early {
        return Ok(poll_timing(env, &[TooEarly::Interval], 0));
    }
    env.decide(&shown, Who::Admin, true).await?;
    // Judge the polls whatever the outcome, and only then ask whether the flow went on.
    let idle = env.wait_state(PanelState::Idle, STATE_WAIT).await?;
    if idle.is_some() {
        // And the session code, polled while idle.
        env.wait_exchanges(Duration::from_secs(12), |ex| {
            ex.iter().filter(|e| e.is_poll() && e.bearer().is_some()).count() >= 4
        })
        .await;
    }
    let finding = poll_timing(env, &[TooEarly::Interval], 5);
    Ok(match (finding, idle) {
        (Finding::Holds, None) => Finding::Broken("the registration did not complete after the approval".into()),
        (f, _) => f,
    })
}

/// The registration code's polls after the `slow_down` fault: how many arrived after the first `slow_down`.
fn polls_after_slow_down(ex: &[Exchange]) -> usize {
    let Some(i) = ex.iter().position(|e| poll_answered(e, "slow_down")) else { return 0 };
    ex[i + 1..].iter().filter(|e| e.is_poll() && e.bearer().is_none()).count()
}

async fn slow_down_run(env: &mut ClientEnv, polls_after: usize) -> Result<(), CaseError> {
    env.start_shim().await?;
    env.set_faults(vec![rule("/oauth/token", Some(GRANT_DEVICE_CODE), FaultKind::SlowDown, Some(1))])?;
    let shown = env.register().await?;
    let wait = Duration::from_secs(8 * polls_after as u64 + 4);
    if !env.wait_exchanges(wait, |ex| polls_after_slow_down(ex) >= polls_after).await {
        env.note(
            EvidenceSource::Kit,
            format!("fewer than {polls_after} polls followed the slow_down in {} s", wait.as_secs()),
        );
    }
    env.decide(&shown, Who::Admin, true).await?;
    env.wait_state(PanelState::Idle, STATE_WAIT).await?;
    Ok(())
}

async fn slow_down_once(env: &mut ClientEnv) -> Result<Finding, CaseError> {
    slow_down_run(env, 1).await?;
    let codes = registration_codes(env);
    if !env.exchanges().iter().any(|e| poll_answered(e, "slow_down")) {
        return Ok(Finding::Broken("the MFP never polled, so no slow_down could be answered".into()));
    }
    // Only the first gap after the slow_down: cut the code's polls there.
    let Some(mut code) = codes.into_iter().find(|c| c.polls.iter().any(|p| poll_answered(p, "slow_down"))) else {
        return Ok(Finding::Broken("no registration poll was answered slow_down".into()));
    };
    let i = code.polls.iter().position(|p| poll_answered(p, "slow_down")).unwrap_or(0);
    if code.polls.len() < i + 2 {
        return Ok(Finding::Broken("no poll followed the slow_down answer".into()));
    }
    code.polls.truncate(i + 2);
    let trimmed = vec![code];
    Ok(poll_timing_of(env, &trimmed, &[TooEarly::SlowDown, TooEarly::Interval], 1))
}

async fn slow_down_for_good(env: &mut ClientEnv) -> Result<Finding, CaseError> {
    slow_down_run(env, 2).await?;
    if polls_after_slow_down(&env.exchanges()) < 2 {
        return Ok(Finding::Broken("fewer than two polls followed the slow_down answer".into()));
    }
    let codes = registration_codes(env);
    Ok(poll_timing_of(env, &codes, &[TooEarly::SlowDown, TooEarly::Interval], 2))
}

async fn denied(env: &mut ClientEnv) -> Result<Finding, CaseError> {
    env.start_shim().await?;
    let shown = env.register().await?;
    env.wait_exchanges(Duration::from_secs(10), |ex| polls_of_registration(ex) >= 1).await;
    env.decide(&shown, Who::Admin, false).await?;
    if !env.wait_exchanges(Duration::from_secs(10), |ex| ex.iter().any(|e| poll_answered(e, "access_denied"))).await {
        return Ok(Finding::Broken("the MFP did not poll the denied code within 10 s".into()));
    }
    // Four intervals for a poll that should not come.
    observe(Duration::from_secs(4)).await;
    let panel = env.panel().await?;
    env.note(EvidenceSource::Shim, format!("panel after the denial: {:?}", panel.state));
    Ok(poll_timing(env, &[TooEarly::AfterEnd], 0))
}

/// Registers, lets the code be polled, then expires it on the server's clock.
async fn expire_registration(env: &mut ClientEnv) -> Result<(), CaseError> {
    env.start_shim().await?;
    env.register().await?;
    env.wait_exchanges(Duration::from_secs(10), |ex| polls_of_registration(ex) >= 1).await;
    let lifetime = env.settings.registration_code_secs;
    env.advance(lifetime + 1)?;
    if !env.wait_exchanges(Duration::from_secs(10), |ex| ex.iter().any(|e| poll_answered(e, "expired_token"))).await {
        return Err(CaseError::Peer("the MFP did not poll its expired registration code within 10 s".into()));
    }
    Ok(())
}

async fn expired_stops(env: &mut ClientEnv) -> Result<Finding, CaseError> {
    expire_registration(env).await?;
    observe(Duration::from_secs(4)).await;
    Ok(poll_timing(env, &[TooEarly::AfterEnd], 0))
}

async fn expired_replaced(env: &mut ClientEnv) -> Result<Finding, CaseError> {
    expire_registration(env).await?;
    let ex = env.exchanges();
    let expired_at = ex.iter().find(|e| poll_answered(e, "expired_token")).map(|e| e.seq).unwrap_or(0);
    let renewed = env
        .wait_exchanges(Duration::from_secs(10), |ex| {
            ex.iter().any(|e| e.seq > expired_at && e.is("POST", "/oauth/device_authorization") && e.delivered_ok())
        })
        .await;
    if !renewed {
        return Ok(Finding::Broken("no new registration code was requested within 10 s of expired_token".into()));
    }
    // The new code is on the panel (give the MFP a moment to draw it) and completes the registration.
    let fresh = judge::polled_codes(&env.exchanges()).into_iter().filter(|c| !c.session).last();
    let fresh_code = fresh.as_ref().and_then(|c| c.user_code.clone());
    let mut panel = env.panel().await?;
    for _ in 0..15 {
        if panel.shown.user_code.as_deref().and_then(judge::wire_code) == fresh_code {
            break;
        }
        observe(Duration::from_millis(200)).await;
        panel = env.panel().await?;
    }
    if fresh_code.is_none() || panel.shown.user_code.as_deref().and_then(judge::wire_code) != fresh_code {
        return Ok(Finding::Broken("the panel does not show the new registration code".into()));
    }
    env.decide(&panel.shown, Who::Admin, true).await?;
    Ok(match env.wait_state(PanelState::Idle, STATE_WAIT).await? {
        Some(_) => Finding::Holds,
        None => Finding::Broken("the registration with the new code did not complete".into()),
    })
}

/// Registers with `rules` set and waits for `faults` of them to have been applied and one poll after.
async fn faulted_registration(env: &mut ClientEnv, rules: Vec<FaultRule>, faults: u64) -> Result<(), CaseError> {
    env.start_shim().await?;
    env.set_faults(rules)?;
    let shown = env.register().await?;
    let deadline = std::time::Instant::now() + Duration::from_secs(25);
    while std::time::Instant::now() < deadline {
        let applied: u64 = env.faults_applied().iter().sum();
        let last_fault_seq = env.exchanges().iter().filter(|e| e.is_poll() && !e.delivered_ok()).map(|e| e.seq).max();
        let after = env.exchanges().iter().filter(|e| e.is_poll() && Some(e.seq) > last_fault_seq).count();
        if applied >= faults && after >= 1 {
            break;
        }
        observe(Duration::from_millis(200)).await;
    }
    env.decide(&shown, Who::Admin, true).await?;
    env.wait_state(PanelState::Idle, STATE_WAIT).await?;
    Ok(())
}

async fn backoff_5xx(env: &mut ClientEnv) -> Result<Finding, CaseError> {
    let mut r = rule("/oauth/token", Some(GRANT_DEVICE_CODE), FaultKind::Status5xx, Some(2));
    r.status = Some(503);
    faulted_registration(env, vec![r], 2).await?;
    let answered_5xx = env.exchanges().iter().filter(|e| e.is_poll() && e.status == Some(503)).count();
    if answered_5xx < 2 {
        return Ok(Finding::Broken(format!("the MFP stopped polling after {answered_5xx} 503 answer(s)")));
    }
    Ok(poll_timing(env, &[TooEarly::Backoff, TooEarly::Interval], 2))
}

async fn retry_after(env: &mut ClientEnv) -> Result<Finding, CaseError> {
    let mut r = rule("/oauth/token", Some(GRANT_DEVICE_CODE), FaultKind::TooManyRequests, Some(1));
    r.retry_after = Some(4);
    faulted_registration(env, vec![r], 1).await?;
    if !env.exchanges().iter().any(|e| e.is_poll() && e.status == Some(429)) {
        return Ok(Finding::Broken("no poll was answered 429".into()));
    }
    Ok(poll_timing(env, &[TooEarly::RetryAfter, TooEarly::Backoff, TooEarly::Interval], 1))
}

pub(super) fn server_cases() -> Vec<Case> {
    vec![
        Case {
            id: "rfc8628/3.5/server-answers-slow-down",
            area: Area::DeviceGrant,
            requirement:
                "The server answers `slow_down` to a poll that arrives earlier than the code's interval minus \
                          0.5 s after the previous poll of that code.",
            sources: &["RFC 8628 §3.5", "R-POLL-1", "PROTOCOL §12"],
            level: Level::Must,
            aimed_at: &["no-slow-down"],
            client: None,
            server: server!(false, server_slow_down),
        },
        Case {
            id: "rfc8628/3.5/server-slow-down-adds-5s",
            area: Area::DeviceGrant,
            requirement:
                "After a `slow_down` the server judges every later poll of that code by the interval plus 5 s.",
            sources: &["RFC 8628 §3.5", "R-POLL-1"],
            level: Level::Must,
            aimed_at: &["no-slow-down"],
            client: None,
            server: server!(false, server_slow_down_for_good),
        },
        Case {
            id: "rfc8628/6.1/server-user-codes",
            area: Area::DeviceGrant,
            requirement: "User codes are 8 characters of BCDFGHJKLMNPQRSTVWXZ drawn uniformly (no repeats or narrowed \
                          alphabet over 40 codes), each with its `verification_uri_complete` on the API origin.",
            sources: &["RFC 8628 §6.1", "RFC 8628 §5.1", "RFC 8628 §3.3.1", "RFC 8628 §3.2", "R-QR-1"],
            level: Level::Must,
            aimed_at: &["weak-user-codes"],
            client: None,
            server: server!(false, server_user_codes),
        },
        Case {
            id: "rfc8628/3.5/server-access-denied",
            area: Area::DeviceGrant,
            requirement:
                "A poll of a denied code is answered `access_denied`, and a pending one `authorization_pending`.",
            sources: &["RFC 8628 §3.5", "RFC 6749 §5.2"],
            level: Level::Must,
            aimed_at: &[],
            client: None,
            server: server!(false, server_denied),
        },
    ]
}

/// A fresh registration code: `(device_code, user_code, interval)`.
async fn fresh_code(env: &mut ServerEnv) -> Result<(String, String, Duration), CaseError> {
    let e = env.registration_code().await?;
    let v = e
        .json()
        .filter(|_| e.delivered_ok())
        .ok_or_else(|| CaseError::Peer(format!("the registration code request was answered {:?}", e.status)))?;
    let s = |k: &str| v.get(k).and_then(|x| x.as_str()).unwrap_or_default().to_owned();
    let interval = roger_proto::timing::effective_interval(v.get("interval").and_then(|x| x.as_u64()));
    Ok((s("device_code"), s("user_code"), interval))
}

async fn server_slow_down(env: &mut ServerEnv) -> Result<Finding, CaseError> {
    let (dc, _, _) = fresh_code(env).await?;
    let first = env.poll(&dc, None).await?;
    let second = env.poll(&dc, None).await?;
    if first.oauth_error().as_deref() != Some("authorization_pending") {
        return Ok(Finding::Broken(format!(
            "the first poll was answered {:?}, not authorization_pending",
            first.oauth_error()
        )));
    }
    Ok(Finding::check(second.oauth_error().as_deref() == Some("slow_down"), || {
        format!(
            "a poll {} ms after the previous one was answered {:?}, not slow_down",
            (second.at - first.at).as_millis(),
            second.oauth_error()
        )
    }))
}

async fn server_slow_down_for_good(env: &mut ServerEnv) -> Result<Finding, CaseError> {
    let (dc, _, interval) = fresh_code(env).await?;
    env.poll(&dc, None).await?;
    let slowed = env.poll(&dc, None).await?;
    if slowed.oauth_error().as_deref() != Some("slow_down") {
        return Ok(Finding::Broken("the early poll was not answered slow_down".into()));
    }
    // One interval later: still too early for the grown interval.
    tokio::time::sleep(interval + Duration::from_millis(600)).await;
    let again = env.poll(&dc, None).await?;
    if again.oauth_error().as_deref() != Some("slow_down") {
        return Ok(Finding::Broken(format!(
            "{:.1} s after a slow_down (interval {} s) the poll was answered {:?}: the interval did not grow by 5 s",
            (again.at - slowed.at).as_secs_f64(),
            interval.as_secs(),
            again.oauth_error()
        )));
    }
    // The grown interval (twice grown now) later: accepted again.
    let grown = roger_proto::timing::after_slow_down(roger_proto::timing::after_slow_down(interval));
    tokio::time::sleep(grown + Duration::from_millis(300)).await;
    let later = env.poll(&dc, None).await?;
    Ok(Finding::check(later.oauth_error().as_deref() == Some("authorization_pending"), || {
        format!("a poll after the grown interval was answered {:?}, not authorization_pending", later.oauth_error())
    }))
}

async fn server_user_codes(env: &mut ServerEnv) -> Result<Finding, CaseError> {
    let api = env.endpoints.api.clone();
    let mut codes = Vec::new();
    for _ in 0..40 {
        let e = env.registration_code().await?;
        let v = e.json().filter(|_| e.delivered_ok()).ok_or_else(|| CaseError::Peer("a code request failed".into()))?;
        for member in ["device_code", "user_code", "verification_uri", "expires_in"] {
            if v.get(member).is_none() {
                return Ok(Finding::Broken(format!("a device authorization answer lacks `{member}` (RFC 8628 §3.2)")));
            }
        }
        let uc = v.get("user_code").and_then(|x| x.as_str()).unwrap_or_default().to_owned();
        let vuc = v.get("verification_uri_complete").and_then(|x| x.as_str()).unwrap_or_default().to_owned();
        if vuc != format!("{api}/device?user_code={uc}") {
            return Ok(Finding::Broken("a verification_uri_complete is not {api}/device?user_code=<the code>".into()));
        }
        codes.push(uc);
    }
    if let Some(bad) = codes.iter().find(|c| !roger_proto::user_code::is_wire_form(c)) {
        let v = env.vault().redact(bad);
        return Ok(Finding::Broken(format!("user code {v} is not 8 characters of BCDFGHJKLMNPQRSTVWXZ")));
    }
    let distinct: std::collections::BTreeSet<&String> = codes.iter().collect();
    if distinct.len() < codes.len() {
        return Ok(Finding::Broken(format!("{} repeats among 40 user codes", codes.len() - distinct.len())));
    }
    // Over 40 codes each position should show most of the 20 letters; a narrowed alphabet shows few.
    for pos in 0..roger_proto::user_code::LENGTH {
        let letters: std::collections::BTreeSet<u8> = codes.iter().map(|c| c.as_bytes()[pos]).collect();
        if letters.len() < 8 {
            return Ok(Finding::Broken(format!(
                "position {} of 40 user codes uses only {} different letters: the codes are not drawn uniformly",
                pos + 1,
                letters.len()
            )));
        }
    }
    env.note(EvidenceSource::Kit, "40 user codes: all distinct, well formed, letters spread over every position");
    Ok(Finding::Holds)
}

async fn server_denied(env: &mut ServerEnv) -> Result<Finding, CaseError> {
    let (dc, uc, interval) = fresh_code(env).await?;
    let pending = env.poll(&dc, None).await?;
    if pending.oauth_error().as_deref() != Some("authorization_pending") {
        return Ok(Finding::Broken(format!("a pending code was answered {:?}", pending.oauth_error())));
    }
    let d = env.decide(&uc, Actor::Admin, false).await?;
    if !d.delivered_ok() {
        return Ok(Finding::Broken(format!("the denial was answered {:?}", d.status)));
    }
    tokio::time::sleep(interval + Duration::from_millis(300)).await;
    let denied = env.poll(&dc, None).await?;
    Ok(Finding::check(denied.oauth_error().as_deref() == Some("access_denied") && denied.status == Some(400), || {
        format!("a poll of the denied code was answered {:?} {:?}", denied.status, denied.oauth_error())
    }))
}
