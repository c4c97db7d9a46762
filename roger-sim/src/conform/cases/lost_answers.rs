//! Lost answers (R-DEV-1, R-TOK-3, PROTOCOL.md §9 and §12): the server processes a request and the connection
//! closes without an answer (the `drop_response` fault). The MFP must retry the same request after the doubled
//! wait and end where it would have been.

use roger_proto::metadata::GRANT_DEVICE_CODE;

use super::super::judge::{self, TooEarly};
use super::prelude::*;
use super::{observe, poll_timing};

pub(super) fn cases() -> Vec<Case> {
    vec![
        Case {
            id: "roger/R-DEV-1/lost-registration-answer",
            area: Area::LostAnswers,
            requirement:
                "When the answer that carries its registration tokens is lost, the MFP polls the same device code \
                          again and ends up registered as one device.",
            sources: &["R-DEV-1", "RFC 8628 §3.5", "PROTOCOL §12"],
            level: Level::Should,
            basis: Basis::Roger,
            rationale: "RFC 8628 does not say what a client does after a lost token answer (starting over is \
                        allowed); recovering by polling the same code relies on R-DEV-1's 30 s re-mint.",
            aimed_at: &[],
            client: client!(defaults, lost_registration),
            server: None,
        },
        Case {
            id: "roger/R-TOK-3/lost-refresh-answer",
            area: Area::LostAnswers,
            requirement:
                "When a refresh answer is lost, the MFP re-sends the same refresh token, receives a fresh pair and \
                          stays registered.",
            sources: &["R-TOK-3", "R-TOK-2", "RFC 9700 §4.14.2"],
            level: Level::Should,
            basis: Basis::Roger,
            rationale: "Re-sending a refresh token whose answer was lost relies on R-TOK-3's grace; against a \
                        server with plain RFC 9700 reuse detection it would revoke the family, so no RFC asks it.",
            aimed_at: &[],
            client: client!(six_second_tokens, lost_refresh),
            server: None,
        },
        Case {
            id: "roger/sec12/backoff-after-lost-answer",
            area: Area::LostAnswers,
            requirement:
                "A poll whose answer was lost counts as a poll: the next poll of that code waits at least twice \
                          the interval.",
            sources: &["PROTOCOL §12", "R-POLL-1"],
            level: Level::Should,
            basis: Basis::Roger,
            rationale: "RFC 8628 §3.5: after a connection timeout the client MUST reduce its polling frequency, \
                        doubling RECOMMENDED; counting a lost answer as a poll and doubling exactly is \
                        docs/protocol.md §6.3.",
            aimed_at: &[],
            client: client!(defaults, lost_poll),
            server: None,
        },
        Case {
            id: "roger/sec9/release-retried-with-same-key",
            area: Area::LostAnswers,
            requirement:
                "Every job release carries an `Idempotency-Key`; if the MFP retries a release whose answer was \
                          lost, the retry carries the same key, so the job prints once (not retrying is INFO).",
            sources: &["PROTOCOL §9"],
            level: Level::Should,
            basis: Basis::Roger,
            rationale: "The jobs API and its Idempotency-Key are Roger's (docs/protocol.md §3.13, after an IETF \
                        draft, not an RFC). The rule asks for the key, not for a retry.",
            aimed_at: &[],
            client: client!(defaults, lost_release),
            server: None,
        },
    ]
}

fn six_second_tokens(s: &mut ClientSetup) {
    s.settings.access_token_secs = 6;
}

async fn lost_registration(env: &mut ClientEnv) -> Result<Finding, CaseError> {
    env.start_shim().await?;
    let shown = env.register().await?;
    env.wait_exchanges(Duration::from_secs(10), |ex| ex.iter().any(|e| e.is_poll())).await;
    // Approve, then at once lose the answer of the next poll: the one that carries the tokens.
    env.decide(&shown, Who::Admin, true).await?;
    env.set_faults(vec![rule("/oauth/token", Some(GRANT_DEVICE_CODE), FaultKind::DropResponse, Some(1))])?;
    let reached = env.wait_state(PanelState::Idle, Duration::from_secs(30)).await?;
    // The server's own log says whether the lost answer was the success (processing entry 200, then the fault).
    let log = env.server().shared.log_since(0);
    let dropped_success = log.windows(2).any(|w| {
        w[0].grant_type.as_deref() == Some(GRANT_DEVICE_CODE)
            && w[0].status == 200
            && w[1].outcome.as_deref() == Some("fault:drop_response")
    });
    if !dropped_success {
        return Err(CaseError::Kit("the lost answer did not fall on the successful poll".into()));
    }
    let codes: Vec<_> = judge::polled_codes(&env.exchanges()).into_iter().filter(|c| !c.session).collect();
    let Some(code) = codes.last() else { return Ok(Finding::Broken("no registration code was polled".into())) };
    let polls: Vec<&Exchange> = code.polls.iter().collect();
    env.note_exchanges(polls.iter().copied(), 8);
    let lost = code.polls.iter().position(|p| p.status.is_none());
    let recovered = lost.is_some_and(|i| code.polls[i + 1..].iter().any(Exchange::delivered_ok));
    if reached.is_none() || !recovered {
        return Ok(Finding::Broken(
            "after the lost answer the MFP did not poll the same code again to a success".into(),
        ));
    }
    let devices = env.devices();
    Ok(Finding::check(devices.len() == 1, || {
        format!("the server has {} devices after one registration", devices.len())
    }))
}

async fn lost_refresh(env: &mut ClientEnv) -> Result<Finding, CaseError> {
    env.connect().await?;
    env.set_faults(vec![rule("/oauth/token", Some("refresh_token"), FaultKind::DropResponse, Some(1))])?;
    let recovered = env
        .wait_exchanges(Duration::from_secs(20), |ex| {
            let refreshes = judge::refreshes(ex);
            let lost = refreshes.iter().position(|r| r.status.is_none());
            lost.is_some_and(|i| refreshes[i + 1..].iter().any(|r| r.status.is_some()))
        })
        .await;
    observe(Duration::from_millis(500)).await;
    let ex = env.exchanges();
    let refreshes = judge::refreshes(&ex);
    env.note_exchanges(refreshes.iter().copied(), 6);
    if !recovered {
        return Ok(Finding::Broken("after a lost refresh answer no further refresh came within 20 s".into()));
    }
    let i = refreshes.iter().position(|r| r.status.is_none()).unwrap_or(0);
    let (lost, next) = (refreshes[i], refreshes[i + 1]);
    if lost.form_get("refresh_token") != next.form_get("refresh_token") {
        return Ok(Finding::Broken(
            "the refresh after the lost answer presented another refresh token than the lost one".into(),
        ));
    }
    if !next.delivered_ok() {
        return Ok(Finding::Broken(format!("the re-sent refresh was refused: {:?}", next.oauth_error())));
    }
    let panel = env.panel().await?;
    Ok(Finding::check(panel.state == PanelState::Idle && env.devices().len() == 1, || {
        format!("after the lost refresh answer the panel is {:?}", panel.state)
    }))
}

async fn lost_poll(env: &mut ClientEnv) -> Result<Finding, CaseError> {
    env.start_shim().await?;
    env.set_faults(vec![rule("/oauth/token", Some(GRANT_DEVICE_CODE), FaultKind::DropResponse, Some(1))])?;
    let shown = env.register().await?;
    let after = env
        .wait_exchanges(Duration::from_secs(15), |ex| {
            let lost = ex.iter().position(|e| e.is_poll() && e.status.is_none());
            lost.is_some_and(|i| ex[i + 1..].iter().any(|e| e.is_poll()))
        })
        .await;
    env.decide(&shown, Who::Admin, true).await?;
    env.wait_state(PanelState::Idle, STATE_WAIT).await?;
    if !after {
        return Ok(Finding::Broken("no poll followed the lost answer within 15 s".into()));
    }
    Ok(poll_timing(env, &[TooEarly::Backoff, TooEarly::Interval], 1))
}

async fn lost_release(env: &mut ClientEnv) -> Result<Finding, CaseError> {
    env.connect().await?;
    if !env.pin(Who::Alice).await? {
        return Err(CaseError::Peer("the PIN login was not accepted".into()));
    }
    let file = env.tenant.job_file.clone();
    let jobs = env.jobs().await?;
    let Some((job, _)) = jobs.into_iter().find(|(_, name)| *name == file) else {
        return Ok(Finding::Broken(format!("the panel does not list alice's queued job {file}")));
    };
    env.set_faults(vec![rule("/api/v1/jobs/{id}/release", None, FaultKind::DropResponse, Some(1))])?;
    let printed = env.release(&job).await?;
    let ex = env.exchanges();
    let releases: Vec<&Exchange> = ex
        .iter()
        .filter(|e| e.method == "POST" && e.path.starts_with("/api/v1/jobs/") && e.path.ends_with("/release"))
        .collect();
    env.note_exchanges(releases.iter().copied(), 4);
    let keys: Vec<Option<String>> = releases
        .iter()
        .map(|e| e.headers.get("idempotency-key").and_then(|v| v.to_str().ok()).map(str::to_owned))
        .collect();
    if let Some(f) = judge_release_keys(&keys, printed) {
        return Ok(f);
    }
    let results = ex.iter().filter(|e| e.method == "POST" && e.path.ends_with("/result") && e.delivered_ok()).count();
    let state = env.server().shared.read(|core, _| core.state().jobs.get(&job).map(|j| j.state));
    env.note(EvidenceSource::Server, format!("job state at the server: {state:?}; results reported: {results}"));
    Ok(Finding::check(printed && state == Some(roger_proto::server::model::JobState::Printed), || {
        format!("after the retried release: printed {printed}, server job state {state:?}")
    }))
}

/// Judges the `Idempotency-Key`s of a release whose first answer was lost: every release carries one, and a retry
/// carries the same; not retrying is allowed (INFO). `None` when the keys are right and the release was retried.
fn judge_release_keys(keys: &[Option<String>], printed: bool) -> Option<Finding> {
    if keys.is_empty() {
        return Some(Finding::Broken("the MFP sent no release".into()));
    }
    if keys.iter().any(Option::is_none) {
        return Some(Finding::Broken("a release request carried no Idempotency-Key".into()));
    }
    if keys.windows(2).any(|w| w[0] != w[1]) {
        return Some(Finding::Broken("the retried release carried another Idempotency-Key".into()));
    }
    if keys.len() < 2 {
        return Some(Finding::Info(format!(
            "the MFP did not retry the release after its answer was lost (allowed: the rule asks only that a retry \
             carry the same key); the shim reports printed {printed}"
        )));
    }
    None
}

pub(super) fn server_cases() -> Vec<Case> {
    vec![
        Case {
            id: "roger/R-DEV-1/server-one-shot-redemption",
            area: Area::LostAnswers,
            requirement:
                "A repeat redemption of a device code within 30 s (a lost answer) mints a fresh pair for the same \
                          device and revokes the first; a repeat after 30 s gets `invalid_grant`.",
            sources: &["R-DEV-1", "RFC 8628 §3.5", "RFC 8628 §3.4"],
            level: Level::Should,
            basis: Basis::Roger,
            rationale: "RFC 8628 does not say how often a device code redeems (R-DEV-1 borrows single use from \
                        RFC 6749 §4.1.2 by analogy); the 30 s re-mint is Roger's.",
            aimed_at: &["double-redeem"],
            client: None,
            server: server!(false, server_one_shot),
        },
        Case {
            id: "roger/R-TOK-3/server-lost-refresh-grace",
            area: Area::LostAnswers,
            requirement:
                "A refresh token whose successor was never used stays redeemable (a lost answer): redeeming it \
                          again mints a fresh pair that works.",
            sources: &["R-TOK-3", "RFC 9700 §4.14.2"],
            level: Level::Should,
            basis: Basis::Roger,
            rationale: "RFC 9700 §4.14.2 lets a server treat any second use of a rotated token as replay; the grace \
                        for lost answers is R-TOK-3's.",
            aimed_at: &["no-lost-answer-grace"],
            client: None,
            server: server!(false, server_grace),
        },
    ]
}

async fn server_one_shot(env: &mut ServerEnv) -> Result<Finding, CaseError> {
    let e = env.registration_code().await?;
    let v = e.json().filter(|_| e.delivered_ok()).ok_or_else(|| CaseError::Peer("no registration code".into()))?;
    let dc = v.get("device_code").and_then(|x| x.as_str()).unwrap_or_default().to_owned();
    let uc = v.get("user_code").and_then(|x| x.as_str()).unwrap_or_default().to_owned();
    let interval = roger_proto::timing::effective_interval(v.get("interval").and_then(|x| x.as_u64()));
    env.decide(&uc, Actor::Admin, true).await?;
    tokio::time::sleep(interval + Duration::from_millis(200)).await;
    let first = env.poll(&dc, None).await?;
    if !first.delivered_ok() {
        return Ok(Finding::Broken(format!("the approved code was answered {:?}", first.oauth_error())));
    }
    // The answer "was lost": the same poll again, an interval later.
    tokio::time::sleep(interval + Duration::from_millis(200)).await;
    let again = env.poll(&dc, None).await?;
    let field = |e: &Exchange, k: &str| e.json().and_then(|v| v.get(k)?.as_str().map(str::to_owned));
    if !again.delivered_ok() {
        return Ok(Finding::Broken(format!(
            "a repeat within 30 s was answered {:?}, not a fresh pair",
            again.oauth_error()
        )));
    }
    if field(&again, "access_token") == field(&first, "access_token")
        || field(&again, "device_id") != field(&first, "device_id")
    {
        return Ok(Finding::Broken("the repeat did not mint a fresh pair for the same device".into()));
    }
    let old = field(&first, "access_token").unwrap_or_default();
    let old_use = env.get_device(&old).await?;
    if old_use.status != Some(401) {
        return Ok(Finding::Broken(format!(
            "the first pair still works after the re-mint (answered {:?})",
            old_use.status
        )));
    }
    // Past the 30 s window, measured from the first success.
    let wait = Duration::from_secs(31).saturating_sub(first.done.elapsed());
    tokio::time::sleep(wait).await;
    let late = env.poll(&dc, None).await?;
    Ok(Finding::check(late.oauth_error().as_deref() == Some("invalid_grant"), || {
        format!(
            "a repeat 31 s after the first success was answered {:?} {:?}, not invalid_grant",
            late.status,
            late.oauth_error()
        )
    }))
}

async fn server_grace(env: &mut ServerEnv) -> Result<Finding, CaseError> {
    let d = env.register().await?;
    let lost = env.refresh(&d.refresh).await?;
    if !lost.delivered_ok() {
        return Ok(Finding::Broken("the first refresh failed".into()));
    }
    env.note(EvidenceSource::Kit, "the kit treats that answer as lost and presents the same refresh token again");
    let retry = env.refresh(&d.refresh).await?;
    let tokens = |e: &Exchange| {
        e.json().and_then(|v| {
            Some((v.get("access_token")?.as_str()?.to_owned(), v.get("refresh_token")?.as_str()?.to_owned()))
        })
    };
    let Some((access, refresh)) = tokens(&retry).filter(|_| retry.delivered_ok()) else {
        return Ok(Finding::Broken(format!(
            "re-sending the refresh token whose answer was lost was answered {:?} {:?}",
            retry.status,
            retry.oauth_error()
        )));
    };
    if Some(&refresh) == tokens(&lost).map(|t| t.1).as_ref() {
        return Ok(Finding::Broken("the retry returned the same refresh token as the lost answer".into()));
    }
    let use_ = env.get_device(&access).await?;
    let next = env.refresh(&refresh).await?;
    Ok(Finding::check(use_.delivered_ok() && next.delivered_ok(), || {
        format!(
            "the pair minted for the retry does not work (access {:?}, refresh {:?})",
            use_.status,
            next.oauth_error()
        )
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// docs/protocol.md §3.13: the key is the rule, not the retry. A release not retried after a lost answer is
    /// INFO (it failed the case before); a retry with the same key holds; a missing or changed key is broken.
    #[test]
    fn release_keys_judgement() {
        let k = |s: &str| Some(s.to_owned());
        assert!(matches!(judge_release_keys(&[k("a")], false), Some(Finding::Info(r)) if r.contains("did not retry")));
        assert_eq!(judge_release_keys(&[k("a"), k("a")], true), None);
        assert!(
            matches!(judge_release_keys(&[k("a"), k("b")], true), Some(Finding::Broken(r)) if r.contains("another"))
        );
        assert!(matches!(judge_release_keys(&[None], false), Some(Finding::Broken(_))));
        assert!(matches!(judge_release_keys(&[], false), Some(Finding::Broken(_))));
    }
}
