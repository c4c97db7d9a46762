//! Refresh ahead, rotation, the one retry on a refused token, and the 90-day end (R-TOK-1, R-TOK-2, R-TOK-4;
//! RFC 6749 §6, §10.4; PROTOCOL.md §7). Short access tokens make refresh-ahead visible in seconds.

use std::time::Instant;

use super::super::judge;
use super::observe;
use super::prelude::*;

pub(super) fn cases() -> Vec<Case> {
    vec![
        Case {
            id: "roger/R-TOK-1/refresh-ahead",
            area: Area::Refresh,
            requirement: "The MFP refreshes its device token no later than when 10% of the access token's lifetime is \
                          left.",
            sources: &["R-TOK-1", "RFC 6749 §6"],
            level: Level::Should,
            basis: Basis::Roger,
            rationale: "RFC 6749 §6 lets a client refresh when it likes, also only after a 401; refreshing by 90 % of \
                        the lifetime is R-TOK-1's.",
            aimed_at: &["no-early-refresh"],
            client: client!(six_second_tokens, refresh_ahead),
            server: None,
        },
        Case {
            id: "roger/R-TOK-1/not-before-half-lifetime",
            area: Area::Refresh,
            requirement:
                "Without another reason the MFP does not refresh before half of the access token's lifetime has \
                          passed.",
            sources: &["R-TOK-1"],
            level: Level::Should,
            basis: Basis::Roger,
            rationale: "An R-TOK-1 SHOULD of our own (refresh traffic); the RFCs set no lower bound.",
            aimed_at: &[],
            client: client!(six_second_tokens, not_too_early),
            server: None,
        },
        Case {
            id: "roger/R-TOK-2/present-newest-refresh-token",
            area: Area::Refresh,
            requirement: "Every refresh presents the refresh token of the newest token answer the MFP has received; a \
                          rotated-out token is never presented again.",
            sources: &["R-TOK-2", "RFC 9700 §4.14.2", "RFC 6749 §10.4", "RFC 6749 §6"],
            level: Level::Must,
            basis: Basis::Rfc,
            rationale: "RFC 6749 §6: when the server issues a new refresh token \"the client MUST discard the old \
                        refresh token and replace it with the new refresh token\".",
            aimed_at: &["reuse-old-refresh"],
            client: client!(six_second_tokens, newest),
            server: None,
        },
        Case {
            id: "roger/R-TOK-2/newest-survives-restart",
            area: Area::Refresh,
            requirement: "After a power cycle the MFP comes back with the newest refresh token it received (persisted \
                          before the old one was dropped) and stays registered as the same device.",
            sources: &["R-TOK-2", "PROTOCOL §13", "RFC 6749 §6"],
            level: Level::Must,
            basis: Basis::Rfc,
            rationale: "RFC 6749 §6: the old refresh token MUST be discarded for the new one, also across a power \
                        cycle; staying the same device is Roger's wish (INFO).",
            aimed_at: &["reuse-old-refresh"],
            client: client!(six_second_tokens, restart_newest),
            server: None,
        },
        Case {
            id: "roger/R-TOK-1/refresh-once-on-invalid-token",
            area: Area::Refresh,
            requirement:
                "When the server refuses the device token (401), the MFP refreshes once, retries with the new \
                          token and carries on; it does not give up the registration.",
            sources: &["R-TOK-1", "RFC 6750 §3.1", "PROTOCOL §7"],
            level: Level::Should,
            basis: Basis::Roger,
            rationale: "RFC 6750 §3.1: on invalid_token the client \"MAY request a new access token and retry\"; \
                        R-TOK-1 makes one refresh and one retry the rule and forbids giving up.",
            aimed_at: &["every-401-fatal", "give-up-invalid-client"],
            client: client!(five_minute_tokens, refused_token),
            server: None,
        },
        Case {
            id: "roger/R-TOK-1/invalid-client-keeps-user-flow",
            area: Area::Refresh,
            requirement:
                "A device-bound PIN login answered `401 invalid_client` is completed after one refresh and one \
                          retry: the MFP never abandons a user's flow on it.",
            sources: &["R-TOK-1", "PROTOCOL §7", "RFC 6749 §2.3"],
            level: Level::Should,
            basis: Basis::Roger,
            rationale: "Device-bound client authentication is Roger's profile of RFC 6749 §2.3; recovering from its \
                        401 is R-TOK-1's.",
            aimed_at: &["give-up-invalid-client"],
            client: client!(slow_polls_five_minute_tokens, invalid_client_pin),
            server: None,
        },
        Case {
            id: "roger/R-TOK-4/disconnected-after-90-days",
            area: Area::Refresh,
            requirement: "Once its refresh token is dead (90 days unused) the MFP shows `disconnected`, refuses user \
                          logins and sends no further token requests.",
            sources: &["R-TOK-4", "RFC 6749 §6"],
            level: Level::Should,
            basis: Basis::Roger,
            rationale:
                "RFC 6749 §6 answers a dead refresh token with invalid_grant but says nothing of what the client \
                        does next; the disconnected state is R-TOK-4's.",
            aimed_at: &[],
            client: client!(defaults, ninety_days),
            server: None,
        },
    ]
}

fn six_second_tokens(s: &mut ClientSetup) {
    s.settings.access_token_secs = 6;
}

fn five_minute_tokens(s: &mut ClientSetup) {
    s.settings.access_token_secs = 300;
}

fn slow_polls_five_minute_tokens(s: &mut ClientSetup) {
    s.settings.access_token_secs = 300;
    // Few session-code polls, so the PIN login is the first device-bound request after the token dies.
    s.settings.interval_secs = 5;
}

/// Registers and watches 15 s of refreshing.
async fn watch_refreshes(env: &mut ClientEnv) -> Result<(), CaseError> {
    env.connect().await?;
    observe(Duration::from_secs(15)).await;
    let ex = env.exchanges();
    let refreshes: Vec<&Exchange> = judge::refreshes(&ex);
    env.note_exchanges(refreshes, 8);
    Ok(())
}

async fn refresh_ahead(env: &mut ClientEnv) -> Result<Finding, CaseError> {
    watch_refreshes(env).await?;
    let (late, judged) = judge::late_refreshes(&env.exchanges(), Instant::now(), Duration::from_millis(500));
    if let Some(l) = late.first() {
        return Ok(Finding::Broken(match l.after {
            Some(after) => format!(
                "a {}-second device token (exchange #{}) was refreshed only after {:.2} s; R-TOK-1 wants it by {:.2} s",
                l.lifetime.as_secs(),
                l.issued_seq,
                after.as_secs_f64(),
                l.lifetime.as_secs_f64() * roger_proto::timing::REFRESH_LATEST_FRACTION
            ),
            None => format!(
                "a {}-second device token (exchange #{}) was never refreshed",
                l.lifetime.as_secs(),
                l.issued_seq
            ),
        }));
    }
    Ok(Finding::check(judged >= 2, || format!("only {judged} refresh deadline(s) could be judged")))
}

async fn not_too_early(env: &mut ClientEnv) -> Result<Finding, CaseError> {
    watch_refreshes(env).await?;
    let ex = env.exchanges();
    if judge::refreshes(&ex).len() < 2 {
        return Ok(Finding::Broken("fewer than two refreshes in 15 s with 6-second tokens".into()));
    }
    let early = judge::early_refreshes(&ex, Duration::from_millis(300));
    Ok(match early.first() {
        Some((seq, after)) => Finding::Broken(format!(
            "the token of exchange #{seq} was refreshed after {:.2} s, before half its lifetime",
            after.as_secs_f64()
        )),
        None => Finding::Holds,
    })
}

fn stale_finding(env: &ClientEnv) -> Option<Finding> {
    let stale = judge::stale_refreshes(&env.exchanges());
    stale.first().map(|(seq, presented, expected)| {
        let v = env.vault();
        Finding::Broken(v.redact(&format!(
            "exchange #{seq} presented refresh token {presented}, but the newest the MFP had received was {expected}"
        )))
    })
}

async fn newest(env: &mut ClientEnv) -> Result<Finding, CaseError> {
    watch_refreshes(env).await?;
    if let Some(f) = stale_finding(env) {
        return Ok(f);
    }
    let ex = env.exchanges();
    let refreshes = judge::refreshes(&ex);
    if let Some(bad) = refreshes.iter().find(|r| r.status.is_some() && !r.delivered_ok()) {
        return Ok(Finding::Broken(format!("refresh exchange #{} was refused: {:?}", bad.seq, bad.oauth_error())));
    }
    Ok(Finding::check(refreshes.len() >= 2, || {
        format!("only {} refresh(es) in 15 s with 6-second tokens", refreshes.len())
    }))
}

async fn restart_newest(env: &mut ClientEnv) -> Result<Finding, CaseError> {
    env.connect().await?;
    let two = env
        .wait_exchanges(Duration::from_secs(15), |ex| {
            judge::refreshes(ex).iter().filter(|r| r.delivered_ok()).count() >= 2
        })
        .await;
    if !two {
        return Ok(Finding::Broken("fewer than two refreshes in 15 s with 6-second tokens".into()));
    }
    let before = env.exchanges().len();
    let devices_before = env.devices();
    env.restart().await?;
    env.expect_state(PanelState::Idle, STATE_WAIT).await?;
    let after_restart = env
        .wait_exchanges(Duration::from_secs(10), |ex| {
            judge::refreshes(&ex[before..]).iter().any(|r| r.status.is_some())
        })
        .await;
    if !after_restart {
        return Ok(Finding::Broken("the MFP did not refresh within 10 s of its restart".into()));
    }
    if let Some(f) = stale_finding(env) {
        return Ok(f);
    }
    let ex = env.exchanges();
    if let Some(r) = judge::refreshes(&ex[before..]).into_iter().find(|r| r.status.is_some() && !r.delivered_ok()) {
        return Ok(Finding::Broken(format!("the first refresh after the restart was refused: {:?}", r.oauth_error())));
    }
    let devices = env.devices();
    if devices != devices_before {
        return Ok(Finding::Info(format!(
            "no old refresh token was used, but the devices changed across the restart ({devices_before:?} → \
             {devices:?}): Roger wants the same device back"
        )));
    }
    Ok(Finding::Holds)
}

/// The exchanges that carried `token` as a bearer.
fn bearing<'a>(ex: &'a [Exchange], token: &str) -> Vec<&'a Exchange> {
    ex.iter().filter(|e| e.bearer().as_deref() == Some(token)).collect()
}

async fn refused_token(env: &mut ClientEnv) -> Result<Finding, CaseError> {
    env.connect().await?;
    env.wait_exchanges(Duration::from_secs(5), |ex| ex.iter().any(|e| e.is_poll() && e.bearer().is_some())).await;
    let Some(old) = judge::device_tokens(&env.exchanges()).pop() else {
        return Ok(Finding::Broken("the MFP received no device token".into()));
    };
    let lifetime = env.settings.access_token_secs;
    env.advance(lifetime + 1)?;
    // The next device-bound request meets a dead token; then a refresh, then the new token in use.
    let recovered = env
        .wait_exchanges(Duration::from_secs(15), |ex| {
            let rejected = bearing(ex, &old.access_token).iter().any(|e| e.status == Some(401));
            let fresh = judge::device_tokens(ex).into_iter().rfind(|t| t.access_token != old.access_token);
            rejected
                && fresh.is_some_and(|t| {
                    ex.iter().any(|e| e.bearer().as_deref() == Some(t.access_token.as_str()) && e.delivered_ok())
                })
        })
        .await;
    let ex = env.exchanges();
    let uses = bearing(&ex, &old.access_token);
    env.note_exchanges(uses.iter().copied(), 6);
    let Some(first_401) = uses.iter().find(|e| e.status == Some(401)).map(|e| e.seq) else {
        return Ok(Finding::Broken("no device-bound request met the expired token within 15 s".into()));
    };
    let refreshes_after: Vec<&Exchange> = judge::refreshes(&ex).into_iter().filter(|r| r.seq > first_401).collect();
    env.note_exchanges(refreshes_after.iter().copied(), 4);
    let panel = env.panel().await?;
    if panel.state == PanelState::Disconnected || panel.state == PanelState::Unregistered {
        return Ok(Finding::Broken(format!("the MFP gave up its registration after a 401 (panel: {:?})", panel.state)));
    }
    if refreshes_after.is_empty() {
        return Ok(Finding::Broken("the MFP did not refresh after its device token was refused".into()));
    }
    let rejected_after = uses.iter().filter(|e| e.seq > first_401 && e.status == Some(401)).count();
    if rejected_after > 2 {
        return Ok(Finding::Broken(format!(
            "the refused token was sent {rejected_after} more times instead of one refresh"
        )));
    }
    Ok(Finding::check(recovered, || "no device-bound request succeeded with a fresh token after the refresh".into()))
}

async fn invalid_client_pin(env: &mut ClientEnv) -> Result<Finding, CaseError> {
    env.connect().await?;
    // Wait for the first session-code poll; the next is an interval away.
    env.wait_exchanges(Duration::from_secs(10), |ex| ex.iter().any(|e| e.is_poll() && e.bearer().is_some())).await;
    let lifetime = env.settings.access_token_secs;
    env.advance(lifetime + 1)?;
    let accepted = env.pin(Who::Alice).await?;
    let ex = env.exchanges();
    let grants: Vec<&Exchange> = ex.iter().filter(|e| e.grant_type().as_deref() == Some("password")).collect();
    env.note_exchanges(grants.iter().copied(), 4);
    let Some(first) = grants.first() else { return Ok(Finding::Broken("the PIN was never sent".into())) };
    if first.status != Some(401) {
        return Ok(Finding::Skip(
            "another device-bound request met the dead token first, so the PIN login was not refused; rerun the case"
                .into(),
        ));
    }
    let refreshed = judge::refreshes(&ex).iter().any(|r| r.seq > first.seq && r.delivered_ok());
    let retried = grants.iter().any(|g| g.seq > first.seq && g.delivered_ok());
    if !refreshed || !retried || !accepted {
        return Ok(Finding::Broken(format!(
            "after `401 invalid_client` on the PIN login: refreshed {refreshed}, retried {retried}, accepted {accepted}"
        )));
    }
    Ok(Finding::check(grants.len() <= 2, || format!("the PIN login was sent {} times", grants.len())))
}

async fn ninety_days(env: &mut ClientEnv) -> Result<Finding, CaseError> {
    env.connect().await?;
    let lifetime = env.settings.refresh_token_secs;
    env.advance(lifetime + 3600)?;
    if env.wait_state(PanelState::Disconnected, STATE_WAIT).await?.is_none() {
        return Ok(Finding::Broken(
            "the MFP did not show `disconnected` within 20 s of its refresh token's death".into(),
        ));
    }
    let accepted = env.pin(Who::Alice).await?;
    observe(Duration::from_secs(3)).await;
    let ex = env.exchanges();
    let Some(dead) = ex.iter().find(|e| {
        e.grant_type().as_deref() == Some("refresh_token") && e.oauth_error().as_deref() == Some("invalid_grant")
    }) else {
        return Ok(Finding::Broken("the MFP became disconnected without its refresh being refused".into()));
    };
    let later: Vec<&Exchange> = ex
        .iter()
        .filter(|e| e.seq > dead.seq && (e.path == "/oauth/token" || e.path == "/oauth/device_authorization"))
        .collect();
    env.note_exchanges(later.iter().copied(), 6);
    if accepted {
        return Ok(Finding::Broken("a disconnected MFP accepted a PIN login".into()));
    }
    Ok(Finding::check(later.is_empty(), || {
        format!("{} token request(s) followed the refresh token's death", later.len())
    }))
}

pub(super) fn server_cases() -> Vec<Case> {
    vec![
        Case {
            id: "roger/R-TOK-2/server-rotates-refresh-tokens",
            area: Area::Refresh,
            requirement: "Every successful refresh returns a new refresh token and a working access token.",
            sources: &["R-TOK-2", "RFC 6749 §6", "RFC 9700 §4.14.2"],
            level: Level::Must,
            basis: Basis::Rfc,
            rationale:
                "RFC 9700 §2.2.2: \"Refresh tokens for public clients MUST be sender-constrained or use refresh \
                        token rotation\"; the kit is a public client without sender-constraining.",
            aimed_at: &["no-rotation"],
            client: None,
            server: server!(false, server_rotates, oauth),
        },
        Case {
            id: "roger/R-TOK-3/server-reuse-revokes-family",
            area: Area::Refresh,
            requirement:
                "Presenting a retired refresh token (not as a lost-answer retry) is refused and revokes the whole \
                          family: the newest refresh token and its access token stop working.",
            sources: &["R-TOK-3", "RFC 9700 §4.14.2", "RFC 6749 §10.4"],
            level: Level::Must,
            basis: Basis::Rfc,
            rationale: "RFC 9700 §2.2.2 makes rotation a MUST for public clients so that replay is detected; §4.14.2: \
                        on a retired token's presentation the active refresh token is revoked. (That its access \
                        token dies too is checked where the kit can use one: a Roger server.)",
            aimed_at: &["no-reuse-detection"],
            client: None,
            server: server!(false, server_reuse, oauth),
        },
        Case {
            id: "roger/R-TOK-4/server-sliding-expiry",
            area: Area::Refresh,
            requirement:
                "Each refresh moves the refresh token's expiry to now + 90 days; a token unused for 90 days is \
                          refused with `invalid_grant`.",
            sources: &["R-TOK-4", "RFC 6749 §6"],
            level: Level::Should,
            basis: Basis::Roger,
            rationale: "RFC 6749 leaves refresh token lifetimes to the server; 90 days sliding is R-TOK-4's.",
            aimed_at: &["no-sliding-expiry"],
            client: None,
            server: server!(true, server_sliding),
        },
    ]
}

fn tokens_of(e: &Exchange) -> Option<(String, String)> {
    let v = e.json()?;
    Some((v.get("access_token")?.as_str()?.to_owned(), v.get("refresh_token")?.as_str()?.to_owned()))
}

async fn server_rotates(env: &mut ServerEnv) -> Result<Finding, CaseError> {
    let d = env.register().await?;
    let first = env.refresh_of(&d)?;
    let r = env.refresh(&first).await?;
    let Some((access, refresh)) = tokens_of(&r).filter(|_| r.delivered_ok()) else {
        return Ok(Finding::Broken(format!("the refresh was answered {:?} {:?}", r.status, r.oauth_error())));
    };
    if refresh == first {
        return Ok(Finding::Broken("the refresh answer carries the same refresh token: no rotation".into()));
    }
    let r2 = env.refresh(&refresh).await?;
    let Some((_, refresh2)) = tokens_of(&r2).filter(|_| r2.delivered_ok()) else {
        return Ok(Finding::Broken("the rotated refresh token was refused".into()));
    };
    if refresh2 == refresh {
        return Ok(Finding::Broken("the second refresh did not rotate".into()));
    }
    if env.is_oauth() {
        env.note(EvidenceSource::Kit, "a generic server offers the kit no resource to try the access token on");
        return Ok(Finding::Holds);
    }
    let use_ = env.get_device(&access).await?;
    Ok(Finding::check(use_.delivered_ok(), || format!("the refreshed access token was refused: {:?}", use_.status)))
}

async fn server_reuse(env: &mut ServerEnv) -> Result<Finding, CaseError> {
    let d = env.register().await?;
    let original = env.refresh_of(&d)?;
    let r1 = env.refresh(&original).await?;
    let Some((_, s1)) = tokens_of(&r1).filter(|_| r1.delivered_ok()) else {
        return Ok(Finding::Broken("the first refresh failed".into()));
    };
    // Using the successor retires the original for good (R-TOK-3: no lost answer any more).
    let r2 = env.refresh(&s1).await?;
    let Some((a2, s2)) = tokens_of(&r2).filter(|_| r2.delivered_ok()) else {
        return Ok(Finding::Broken("the second refresh failed".into()));
    };
    let replay = env.refresh(&original).await?;
    if replay.delivered_ok() {
        return Ok(Finding::Broken("a retired refresh token was redeemed again".into()));
    }
    let after = env.refresh(&s2).await?;
    if after.delivered_ok() {
        return Ok(Finding::Broken("after the reuse the family's newest refresh token still works".into()));
    }
    if env.is_oauth() {
        env.note(EvidenceSource::Kit, "a generic server offers the kit no resource to try the access token on");
        return Ok(Finding::Holds);
    }
    let access = env.get_device(&a2).await?;
    Ok(Finding::check(access.status == Some(401), || {
        format!("after the reuse the family's access token is answered {:?}, not 401", access.status)
    }))
}

async fn server_sliding(env: &mut ServerEnv) -> Result<Finding, CaseError> {
    if !env.sim_available().await {
        return Err(CaseError::NotOffered("/sim/clock/advance".into()));
    }
    let d = env.register().await?;
    let day = 86_400;
    env.advance(80 * day).await?;
    let r1 = env.refresh(&d.refresh).await?;
    let Some((_, s1)) = tokens_of(&r1).filter(|_| r1.delivered_ok()) else {
        return Ok(Finding::Broken(format!("a refresh 80 days in was refused: {:?}", r1.oauth_error())));
    };
    env.advance(80 * day).await?;
    let r2 = env.refresh(&s1).await?;
    let Some((_, s2)) = tokens_of(&r2).filter(|_| r2.delivered_ok()) else {
        return Ok(Finding::Broken(format!(
            "a refresh 160 days after registration, 80 after the last refresh, was refused ({:?}): the expiry does not slide",
            r2.oauth_error()
        )));
    };
    env.advance(91 * day).await?;
    let r3 = env.refresh(&s2).await?;
    Ok(Finding::check(r3.oauth_error().as_deref() == Some("invalid_grant"), || {
        format!(
            "a refresh token unused for 91 days was answered {:?} {:?}, not invalid_grant",
            r3.status,
            r3.oauth_error()
        )
    }))
}
