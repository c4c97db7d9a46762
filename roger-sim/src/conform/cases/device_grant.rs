//! The device grant and the timing model (RFC 8628 §3.4–3.5, docs/protocol.md §6, R-POLL-1): polls no faster than
//! the interval, `slow_down` adds 5 s for good, polling stops on a definite answer (for every code: registration and
//! session codes alike), failures double the wait, `Retry-After` is honoured, and an expired registration code is
//! not shown any more.

use roger_proto::metadata::GRANT_DEVICE_CODE;

use std::time::Instant;

use super::super::env::Shown;
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
            basis: Basis::Rfc,
            rationale: "RFC 8628 §3.5: \"Before each new request, the client MUST wait at least the number of \
                        seconds specified by the interval parameter ... or 5 seconds if none was provided\".",
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
            basis: Basis::Rfc,
            rationale: "RFC 8628 §3.5 on slow_down: \"the interval MUST be increased by 5 seconds for this and all \
                        subsequent requests\".",
            aimed_at: &["ignore-slow-down"],
            client: client!(defaults, slow_down_once),
            server: None,
        },
        Case {
            id: "rfc8628/3.5/slow-down-is-permanent",
            area: Area::DeviceGrant,
            requirement:
                "The interval grown by `slow_down` holds for every later poll of that code, not only the next, \
                          for registration and session codes alike.",
            sources: &["RFC 8628 §3.5", "R-POLL-1"],
            level: Level::Must,
            basis: Basis::Rfc,
            rationale: "RFC 8628 §3.5: the increase holds \"for this and all subsequent requests\" (a MUST).",
            aimed_at: &["reset-interval", "ignore-slow-down"],
            client: client!(defaults, slow_down_for_good),
            server: None,
        },
        Case {
            id: "rfc8628/3.5/stop-after-access-denied",
            area: Area::DeviceGrant,
            requirement: "After an `access_denied` answer the MFP never polls that device code again: a denied \
                          registration code and a denied session code alike.",
            sources: &["RFC 8628 §3.5"],
            level: Level::Must,
            basis: Basis::Rfc,
            rationale: "RFC 8628 §3.5: on any error other than authorization_pending and slow_down \"it MUST stop \
                        polling\".",
            aimed_at: &["poll-after-denied"],
            client: client!(defaults, denied),
            server: None,
        },
        Case {
            id: "rfc8628/3.5/stop-after-expired-token",
            area: Area::DeviceGrant,
            requirement: "After an `expired_token` answer the MFP never polls that device code again: an expired \
                          registration code and expired session codes alike.",
            sources: &["RFC 8628 §3.5"],
            level: Level::Must,
            basis: Basis::Rfc,
            rationale: "RFC 8628 §3.5: on any error other than authorization_pending and slow_down \"it MUST stop \
                        polling\".",
            aimed_at: &["never-renew-qr"],
            client: client!(short_session_codes, expired_stops),
            server: None,
        },
        Case {
            id: "roger/sec5/expired-registration-code-replaced",
            area: Area::DeviceGrant,
            requirement: "After `expired_token` on its registration code the MFP no longer shows that code: it shows \
                          a new one, at once or when the user asks again (`register`), and the registration with the \
                          new code completes.",
            sources: &["PROTOCOL §5", "RFC 8628 §3.5"],
            level: Level::Should,
            basis: Basis::Roger,
            rationale: "RFC 8628 §3.5 lets the client \"commence a new device authorization request\" and says it \
                        \"SHOULD wait for user interaction before restarting\", so both a new code at once (our MFP, \
                        docs/protocol.md §5.2) and one after the user asks are right; not showing a dead code is \
                        Roger's panel rule.",
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
            level: Level::Should,
            basis: Basis::Roger,
            rationale: "RFC 8628 §3.5 asks a client to reduce its polling frequency after a connection timeout \
                        (doubling RECOMMENDED) and says nothing of a 5xx; doubling after a 5xx is the timing model of \
                        docs/protocol.md §6.3.",
            aimed_at: &[],
            client: client!(defaults, backoff_5xx),
            server: None,
        },
        Case {
            id: "roger/sec12/retry-after-honoured",
            area: Area::DeviceGrant,
            requirement:
                "After `429` with `Retry-After` the MFP waits the longer of `Retry-After` and the interval before \
                          polling again.",
            sources: &["PROTOCOL §12", "R-POLL-1"],
            level: Level::Should,
            basis: Basis::Roger,
            rationale: "RFC 6585 §4 lets a 429 carry Retry-After and RFC 9110 §10.2.3 says how long the client \
                        \"ought to wait\", without a MUST; waiting the longer of it and the interval is \
                        docs/protocol.md §6.3 (no doubling after a 429).",
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
    // The same rule where it applies next: one slow_down on a session-code poll of the idle panel.
    if env.panel().await?.state == PanelState::Idle {
        let before = env.exchanges().len();
        env.set_faults(vec![rule("/oauth/token", Some(GRANT_DEVICE_CODE), FaultKind::SlowDown, Some(1))])?;
        let followed = env
            .wait_exchanges(Duration::from_secs(20), |ex| {
                let session = |e: &Exchange| e.is_poll() && e.bearer().is_some();
                let slowed = ex
                    .get(before..)
                    .unwrap_or_default()
                    .iter()
                    .position(|e| session(e) && poll_answered(e, "slow_down"));
                slowed.is_some_and(|i| ex[before + i + 1..].iter().filter(|e| session(e)).count() >= 2)
            })
            .await;
        if !followed {
            env.note(
                EvidenceSource::Kit,
                "fewer than two session-code polls followed the session code's slow_down in 20 s",
            );
        }
    } else {
        env.note(EvidenceSource::Kit, "the MFP did not reach idle, so no session code could be slowed down");
    }
    Ok(poll_timing(env, &[TooEarly::SlowDown, TooEarly::Interval], 2))
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
    // The same rule for a session code: register again, then alice denies the first session QR.
    match deny_a_session_code(env).await {
        Ok(()) => observe(Duration::from_secs(4)).await,
        Err(CaseError::Peer(why)) => {
            env.note(EvidenceSource::Kit, format!("the session-code half was not played: {why}"))
        }
        Err(e) => return Err(e),
    }
    Ok(poll_timing(env, &[TooEarly::AfterEnd], 0))
}

async fn deny_a_session_code(env: &mut ClientEnv) -> Result<(), CaseError> {
    let shown = env.register().await?;
    env.decide(&shown, Who::Admin, true).await?;
    let panel = env.idle_panel().await?;
    env.decide(&panel.shown, Who::Alice, false).await?;
    let polled = env
        .wait_exchanges(Duration::from_secs(10), |ex| {
            ex.iter().any(|e| e.bearer().is_some() && poll_answered(e, "access_denied"))
        })
        .await;
    if !polled {
        return Err(CaseError::Peer("the MFP did not poll the denied session code within 10 s".into()));
    }
    Ok(())
}

fn short_session_codes(s: &mut ClientSetup) {
    s.settings.session_code_secs = 8;
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

/// The expired registration code: its user code (wire form) and when its `expired_token` answer arrived.
fn dead_code(env: &ClientEnv) -> Result<(String, Instant), CaseError> {
    let ex = env.exchanges();
    let poll = ex
        .iter()
        .find(|e| poll_answered(e, "expired_token"))
        .ok_or_else(|| CaseError::Kit("no expired_token answer was recorded".into()))?;
    let device_code = poll.form_get("device_code").unwrap_or_default();
    let user_code = judge::polled_codes(&ex)
        .into_iter()
        .find(|c| c.device_code == device_code)
        .and_then(|c| c.user_code)
        .ok_or_else(|| CaseError::Kit("the expired code's user code was not recorded".into()))?;
    Ok((user_code, poll.done))
}

/// How long after `expired_token` a panel may still show the dead code (the MFP draws the next state).
const DEAD_CODE_GRACE: Duration = Duration::from_secs(3);

/// What the panel shows after its registration code expired.
struct Replacement {
    /// The new code shown.
    shown: Shown,
    /// Whether the kit had to ask again (`register`) before a new code appeared.
    asked: bool,
    /// Whether the panel still showed the dead code after [`DEAD_CODE_GRACE`].
    dead_shown_late: bool,
}

/// After the registration code `dead` expired: the new code the panel shows, by itself within 10 s or once the
/// user asks again (`register`; RFC 8628 §3.5: the client "SHOULD wait for user interaction before restarting").
async fn replacement(env: &mut ClientEnv, dead: &str, expired_at: Instant) -> Result<Replacement, CaseError> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut dead_shown_late = false;
    loop {
        let panel = env.panel().await?;
        match env.code_of(&panel.shown).ok().map(|c| c.secret().to_owned()) {
            Some(c) if c != dead => return Ok(Replacement { shown: panel.shown, asked: false, dead_shown_late }),
            Some(_) if expired_at.elapsed() > DEAD_CODE_GRACE => dead_shown_late = true,
            _ => {}
        }
        if Instant::now() >= deadline {
            break;
        }
        observe(Duration::from_millis(500)).await;
    }
    env.note(
        EvidenceSource::Kit,
        "no new registration code within 10 s of expired_token: the kit asks again (`register`), as a user would",
    );
    let shown = env.register().await?;
    if env.code_of(&shown)?.secret() == dead {
        return Err(CaseError::Peer("asked again, the panel shows the expired registration code".into()));
    }
    Ok(Replacement { shown, asked: true, dead_shown_late })
}

/// After the registration code expired: registers with the new one and watches 8-second session codes come and
/// go, so any session code answered `expired_token` shows whether its polling stops too.
async fn session_codes_expire(env: &mut ClientEnv) -> Result<(), CaseError> {
    let (dead, expired_at) = dead_code(env)?;
    let r = replacement(env, &dead, expired_at).await?;
    env.decide(&r.shown, Who::Admin, true).await?;
    env.expect_state(PanelState::Idle, STATE_WAIT).await?;
    observe(Duration::from_secs(14)).await;
    let expired = env.exchanges().iter().filter(|e| e.bearer().is_some() && poll_answered(e, "expired_token")).count();
    env.note(EvidenceSource::Wire, format!("{expired} session-code poll(s) were answered expired_token"));
    Ok(())
}

async fn expired_stops(env: &mut ClientEnv) -> Result<Finding, CaseError> {
    expire_registration(env).await?;
    observe(Duration::from_secs(2)).await;
    match session_codes_expire(env).await {
        Ok(()) => {}
        Err(CaseError::Peer(why)) => {
            env.note(EvidenceSource::Kit, format!("the session-code half was not played: {why}"))
        }
        Err(e) => return Err(e),
    }
    Ok(poll_timing(env, &[TooEarly::AfterEnd], 0))
}

async fn expired_replaced(env: &mut ClientEnv) -> Result<Finding, CaseError> {
    expire_registration(env).await?;
    let (dead, expired_at) = dead_code(env)?;
    let r = match replacement(env, &dead, expired_at).await {
        Ok(r) => r,
        Err(CaseError::Peer(why)) => return Ok(Finding::Broken(why)),
        Err(e) => return Err(e),
    };
    if r.dead_shown_late {
        return Ok(Finding::Broken(format!(
            "the panel still showed the expired registration code more than {} s after expired_token",
            DEAD_CODE_GRACE.as_secs()
        )));
    }
    if r.asked {
        env.note(EvidenceSource::Kit, "the MFP showed a new code once asked again (RFC 8628 §3.5 allows waiting)");
    }
    env.decide(&r.shown, Who::Admin, true).await?;
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
            level: Level::Should,
            basis: Basis::Roger,
            rationale: "RFC 8628 §3.5 defines slow_down for a server to use but does not oblige it to enforce the \
                        interval; R-POLL-1 makes a Roger server answer it.",
            aimed_at: &["no-slow-down"],
            client: None,
            server: server!(false, server_slow_down, oauth),
        },
        Case {
            id: "rfc8628/3.5/server-slow-down-adds-5s",
            area: Area::DeviceGrant,
            requirement:
                "After a `slow_down` the server judges every later poll of that code by the interval plus 5 s.",
            sources: &["RFC 8628 §3.5", "R-POLL-1"],
            level: Level::Should,
            basis: Basis::Roger,
            rationale: "RFC 8628 §3.5's +5 s is the client's MUST; holding the client to it is R-POLL-1's choice \
                        for a Roger server.",
            aimed_at: &["no-slow-down"],
            client: None,
            server: server!(false, server_slow_down_for_good, oauth),
        },
        Case {
            id: "rfc8628/3.2/server-device-authorization-answer",
            area: Area::DeviceGrant,
            requirement: "A device authorization answer carries the REQUIRED `device_code`, `user_code`, \
                          `verification_uri` and `expires_in`; where it differs from Roger's shape (a bare \
                          XXXXXXXX code, `verification_uri_complete` on the API origin, an integer `interval`) that is \
                          reported as INFO.",
            sources: &["RFC 8628 §3.2", "RFC 8628 §3.3.1", "R-QR-1"],
            level: Level::Must,
            basis: Basis::Rfc,
            rationale: "RFC 8628 §3.2 makes device_code, user_code, verification_uri and expires_in REQUIRED (so \
                        `verification_url` instead of `verification_uri` FAILs, though tolerant clients read it); \
                        verification_uri_complete and interval are OPTIONAL and the user code's form is the \
                        server's, so Roger's shape is INFO.",
            aimed_at: &[],
            client: None,
            server: server!(false, server_device_authorization_answer, oauth),
        },
        Case {
            id: "rfc8628/6.1/server-user-codes",
            area: Area::DeviceGrant,
            requirement: "User codes resist guessing: over 40 codes (compared case-insensitively and without \
                          punctuation) none repeats and every position spreads over many characters.",
            sources: &["RFC 8628 §6.1", "RFC 8628 §5.1", "R-QR-1"],
            level: Level::Should,
            basis: Basis::Rfc,
            rationale: "RFC 8628 §5.1: the user code \"SHOULD have enough entropy\" that brute force is infeasible \
                        with rate limiting; §6.1 compares codes case-insensitively without punctuation, as the kit \
                        does. Roger's alphabet and length are judged (as INFO) by the device authorization case.",
            aimed_at: &["weak-user-codes"],
            client: None,
            server: server!(false, server_user_codes, oauth),
        },
        Case {
            id: "rfc8628/3.5/server-access-denied",
            area: Area::DeviceGrant,
            requirement:
                "A poll of a denied code is answered `access_denied`, and a pending one `authorization_pending`.",
            sources: &["RFC 8628 §3.5", "RFC 6749 §5.2"],
            level: Level::Should,
            basis: Basis::Rfc,
            rationale: "RFC 8628 §3.5 defines these error codes for exactly these states, in the error answer of \
                        RFC 6749 §5.2, but no RFC 2119 keyword binds a server to them, so a miss is NON-STRICT; its \
                        status 400 carries no MUST either, so another status is INFO.",
            aimed_at: &[],
            client: None,
            server: server!(false, server_denied, oauth),
        },
        Case {
            id: "rfc8628/3.5/server-device-code-expires",
            area: Area::DeviceGrant,
            requirement: "Once a device code's `expires_in` has passed it no longer redeems, even if approved: a \
                          poll is answered with an error, not a token or `authorization_pending` (`expired_token` \
                          expected).",
            sources: &["RFC 8628 §3.5", "RFC 8628 §3.2"],
            level: Level::Should,
            basis: Basis::Rfc,
            rationale: "RFC 8628 §3.2: expires_in is \"the lifetime ... of the device_code and user_code\"; an \
                        expired code that still redeems or stays pending contradicts it, but the RFC states no \
                        MUST, so a miss is NON-STRICT. §3.5 names expired_token for the answer; another error \
                        (invalid_grant) is INFO.",
            aimed_at: &[],
            client: None,
            server: server!(true, server_code_expires, oauth),
        },
    ]
}

/// A fresh registration code: `(device_code, user_code, interval)`.
async fn fresh_code(env: &mut ServerEnv) -> Result<(String, String, Duration), CaseError> {
    let e = env.registration_code().await?;
    let v = e
        .json()
        .filter(|_| e.delivered_ok())
        .ok_or_else(|| CaseError::Peer(format!("the device authorization request was answered {:?}", e.status)))?;
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

/// `expires_in` as a number of seconds: a JSON integer, or (tolerated) a string of digits.
pub(super) fn lifetime_of(v: &serde_json::Value) -> Option<u64> {
    match v.get("expires_in")? {
        serde_json::Value::Number(n) => n.as_u64(),
        serde_json::Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// What a device authorization answer lacks (RFC 8628 §3.2) and where it differs from Roger's shape.
#[derive(Debug, Default, PartialEq, Eq)]
struct AnswerJudgement {
    /// REQUIRED members missing or unusable.
    missing: Vec<String>,
    /// Differences from docs/protocol.md §3.7 (only for a Roger server).
    roger: Vec<String>,
}

fn judge_device_authorization(v: &serde_json::Value, api: &str) -> AnswerJudgement {
    let mut j = AnswerJudgement::default();
    let text = |k: &str| v.get(k).and_then(|x| x.as_str()).filter(|s| !s.is_empty()).map(str::to_owned);
    for k in ["device_code", "user_code"] {
        if text(k).is_none() {
            j.missing.push(format!("`{k}`"));
        }
    }
    match (text("verification_uri"), text("verification_url")) {
        (Some(_), _) => {}
        // RFC 8628 §3.2 makes `verification_uri` REQUIRED: Google's and Azure AD v1's misspelling breaks it, however
        // widely tolerant clients (ours among them, docs/protocol.md §7) read it.
        (None, Some(_)) => j.missing.push("`verification_uri` (it sent `verification_url`)".into()),
        (None, None) => j.missing.push("`verification_uri`".into()),
    }
    match (v.get("expires_in"), lifetime_of(v)) {
        (None, _) | (Some(_), None) => j.missing.push("`expires_in` (seconds)".into()),
        (Some(serde_json::Value::String(_)), Some(_)) => j.roger.push("`expires_in` is a string, not a number".into()),
        _ => {}
    }
    let uc = text("user_code").unwrap_or_default();
    if !uc.is_empty() && !roger_proto::user_code::is_wire_form(&uc) {
        j.roger.push("the user code is not 8 characters of BCDFGHJKLMNPQRSTVWXZ without separator".into());
    }
    match text("verification_uri_complete") {
        None => j.roger.push("no `verification_uri_complete` (no QR)".into()),
        Some(c) if c != format!("{api}/device?user_code={uc}") => {
            j.roger.push("`verification_uri_complete` is not {api}/device?user_code=<the code>".into())
        }
        Some(_) => {}
    }
    match v.get("interval") {
        None => j.roger.push("no `interval` (clients use 5 s)".into()),
        Some(i) if i.as_u64().is_none_or(|i| i < 1) => j.roger.push(format!("`interval` is {i}, not whole seconds")),
        Some(_) => {}
    }
    j
}

async fn server_device_authorization_answer(env: &mut ServerEnv) -> Result<Finding, CaseError> {
    let e = env.registration_code().await?;
    if !e.delivered_ok() {
        return Ok(Finding::Broken(format!(
            "the device authorization request was answered {:?} {:?}",
            e.status,
            e.oauth_error()
        )));
    }
    let v = e.json().unwrap_or_default();
    let j = judge_device_authorization(&v, &env.endpoints.api);
    if !j.missing.is_empty() {
        return Ok(Finding::Broken(format!(
            "the device authorization answer lacks the REQUIRED {} (RFC 8628 §3.2)",
            j.missing.join(", ")
        )));
    }
    if env.is_oauth() || j.roger.is_empty() {
        for r in &j.roger {
            env.note(EvidenceSource::Kit, format!("not Roger's shape (allowed): {r}"));
        }
        return Ok(Finding::Holds);
    }
    Ok(Finding::Info(format!(
        "RFC 8628 §3.2 holds; not Roger's shape (docs/protocol.md §3.7, a Roger choice): {}",
        j.roger.join("; ")
    )))
}

/// The least spread 40 user codes must show, in bits (a six-digit numeric code has about 20; Roger's eight
/// characters of 20 letters about 34, of which 40 samples show about 33).
const MIN_CODE_BITS: f64 = 20.0;

/// A user code compared as RFC 8628 §6.1 suggests: case-insensitively, without punctuation.
fn loose(code: &str) -> String {
    code.chars().filter(|c| c.is_alphanumeric()).flat_map(char::to_uppercase).collect()
}

/// Judges 40 user codes (already [`loose`]) for guessability: `Ok` with what was seen, `Err` with the weakness.
fn judge_entropy(codes: &[String]) -> Result<String, String> {
    if codes.iter().any(String::is_empty) {
        return Err("an answer carried no user code".into());
    }
    let distinct: std::collections::BTreeSet<&String> = codes.iter().collect();
    if distinct.len() < codes.len() {
        return Err(format!("{} repeats among {} user codes", codes.len() - distinct.len(), codes.len()));
    }
    // Over 40 codes the characters seen at each position estimate the code space: a narrowed alphabet shows few.
    // A position that never changes (a fixed suffix) adds nothing and takes nothing away.
    let len = codes.iter().map(|c| c.chars().count()).min().unwrap_or(0);
    let spread: Vec<usize> = (0..len)
        .map(|pos| codes.iter().filter_map(|c| c.chars().nth(pos)).collect::<std::collections::BTreeSet<char>>().len())
        .collect();
    let bits: f64 = spread.iter().map(|&n| (n as f64).log2()).sum();
    if bits < MIN_CODE_BITS {
        return Err(format!(
            "{} user codes spread over only about {bits:.0} bits (characters seen per position: {spread:?}); RFC 8628 \
             §5.1 wants enough entropy to make guessing infeasible",
            codes.len()
        ));
    }
    Ok(format!(
        "{} user codes of {len}+ characters: all distinct, about {bits:.0} bits of spread (characters seen per position: \
         {spread:?})",
        codes.len()
    ))
}

async fn server_user_codes(env: &mut ServerEnv) -> Result<Finding, CaseError> {
    let mut codes = Vec::new();
    for _ in 0..40 {
        let e = env.registration_code().await?;
        let v = e.json().filter(|_| e.delivered_ok()).ok_or_else(|| CaseError::Peer("a code request failed".into()))?;
        codes.push(loose(v.get("user_code").and_then(|x| x.as_str()).unwrap_or_default()));
    }
    Ok(match judge_entropy(&codes) {
        Ok(seen) => {
            env.note(EvidenceSource::Kit, seen);
            Finding::Holds
        }
        Err(why) => Finding::Broken(why),
    })
}

async fn server_denied(env: &mut ServerEnv) -> Result<Finding, CaseError> {
    let (dc, uc, interval) = fresh_code(env).await?;
    let pending = env.poll(&dc, None).await?;
    if pending.oauth_error().as_deref() != Some("authorization_pending") {
        return Ok(Finding::Broken(format!("a pending code was answered {:?}", pending.oauth_error())));
    }
    let d = env.decide(&uc, Actor::Admin, false).await?;
    if !d.delivered_ok() {
        return Err(CaseError::Kit(format!("the denial was not made (answered {:?})", d.status)));
    }
    tokio::time::sleep(interval + Duration::from_millis(300)).await;
    let denied = env.poll(&dc, None).await?;
    if denied.oauth_error().as_deref() != Some("access_denied") {
        return Ok(Finding::Broken(format!(
            "a poll of the denied code was answered {:?} {:?}",
            denied.status,
            denied.oauth_error()
        )));
    }
    if pending.status != Some(400) || denied.status != Some(400) {
        return Ok(Finding::Info(format!(
            "the error codes are right, sent with status {:?} and {:?}, not 400 (RFC 6749 §5.2 names 400 without a \
             MUST)",
            pending.status, denied.status
        )));
    }
    Ok(Finding::Holds)
}

/// How long the kit waits in real time for a code to expire on a server without `/sim/clock`.
const REAL_TIME_EXPIRY_LIMIT: u64 = 60;

/// Judges the poll of an expired, approved device code.
fn judge_expired_poll(delivered: bool, error: Option<&str>) -> Finding {
    match (delivered, error) {
        (true, _) => Finding::Broken("an expired device code redeemed after its approval".into()),
        (false, Some("expired_token")) => Finding::Holds,
        (false, Some(e @ ("authorization_pending" | "slow_down"))) => {
            Finding::Broken(format!("a poll after expires_in had passed was answered {e}: the code still lives"))
        }
        (false, Some(e)) => Finding::Info(format!(
            "a poll after expires_in had passed was answered {e}; RFC 8628 §3.5 names expired_token for this"
        )),
        (false, None) => Finding::Info("a poll after expires_in had passed got no OAuth error answer".into()),
    }
}

async fn server_code_expires(env: &mut ServerEnv) -> Result<Finding, CaseError> {
    let e = env.registration_code().await?;
    let v = e
        .json()
        .filter(|_| e.delivered_ok())
        .ok_or_else(|| CaseError::Peer(format!("the device authorization request was answered {:?}", e.status)))?;
    let Some(lifetime) = lifetime_of(&v) else {
        return Ok(Finding::Skip("the answer has no usable expires_in to wait for".into()));
    };
    let field = |k: &str| v.get(k).and_then(|x| x.as_str()).unwrap_or_default().to_owned();
    let (device_code, user_code) = (field("device_code"), field("user_code"));
    if env.sim_available().await {
        env.advance(lifetime + 1).await?;
    } else if lifetime <= REAL_TIME_EXPIRY_LIMIT {
        env.note(EvidenceSource::Kit, format!("waiting {} s in real time for the code to expire", lifetime + 1));
        tokio::time::sleep(Duration::from_secs(lifetime + 1)).await;
    } else {
        return Ok(Finding::Skip(format!(
            "the code lives {lifetime} s; without the server's clock (/sim/clock) the kit waits at most \
             {REAL_TIME_EXPIRY_LIMIT} s"
        )));
    }
    let approval = env.decide(&user_code, Actor::Admin, true).await;
    let approved = matches!(&approval, Ok(x) if x.delivered_ok());
    env.note(
        EvidenceSource::Kit,
        format!("the approval of the expired code {}", if approved { "was accepted" } else { "was refused" }),
    );
    let poll = env.poll(&device_code, None).await?;
    Ok(judge_expired_poll(poll.delivered_ok(), poll.oauth_error().as_deref()))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// RFC 8628 §3.2 in server mode: only REQUIRED members fail; Roger's shape is noted.
    #[test]
    fn device_authorization_judgement() {
        let api = "https://as.example";
        let roger = json!({"device_code": "d", "user_code": "BCDFGHJK", "verification_uri": "https://as.example/device",
                           "verification_uri_complete": "https://as.example/device?user_code=BCDFGHJK",
                           "expires_in": 600, "interval": 5});
        assert_eq!(judge_device_authorization(&roger, api), AnswerJudgement::default());
        let google = json!({"device_code": "d", "user_code": "bcdf-ghjk", "verification_url": "https://g/device",
                            "expires_in": "1800"});
        let j = judge_device_authorization(&google, api);
        assert_eq!(j.missing, ["`verification_uri` (it sent `verification_url`)"], "RFC 8628 §3.2 REQUIRED");
        assert_eq!(j.roger.len(), 4, "{j:?}");
        let broken = json!({"user_code": "BCDFGHJK", "interval": 5});
        let j = judge_device_authorization(&broken, api);
        assert_eq!(j.missing.len(), 3, "{j:?}");
    }

    #[test]
    fn entropy_judgement() {
        let alphabet = b"BCDFGHJKLMNPQRSTVWXZ";
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            char::from(alphabet[(x % 20) as usize])
        };
        let good: Vec<String> = (0..40).map(|_| (0..8).map(|_| next()).collect()).collect();
        assert!(judge_entropy(&good).is_ok(), "{:?}", judge_entropy(&good));
        let weak: Vec<String> = (0..40u32).map(|i| format!("{:08b}", i).replace('0', "B").replace('1', "C")).collect();
        assert!(judge_entropy(&weak).unwrap_err().contains("only about"));
        // A fixed suffix (`WDJB-MJHT-7`) takes nothing away.
        let suffixed: Vec<String> = good.iter().map(|c| format!("{c}7")).collect();
        assert!(judge_entropy(&suffixed).is_ok());
        let repeated = vec!["ABCDEFGH".to_owned(); 40];
        assert!(judge_entropy(&repeated).unwrap_err().contains("repeats"));
        assert_eq!(loose("wdjb-mjht"), "WDJBMJHT");
    }

    #[test]
    fn expired_poll_judgement() {
        assert_eq!(judge_expired_poll(false, Some("expired_token")), Finding::Holds);
        assert!(matches!(judge_expired_poll(true, None), Finding::Broken(_)));
        assert!(matches!(judge_expired_poll(false, Some("authorization_pending")), Finding::Broken(_)));
        assert!(matches!(judge_expired_poll(false, Some("invalid_grant")), Finding::Info(_)));
    }
}
