//! Ends of sessions and registrations (PROTOCOL.md §8 "End", RFC 7009, R-TOK-4): logout revokes the user tokens,
//! a session ended at the server ends at the panel, and a removed printer is disconnected.

use roger_proto::server::mint::SecretHash;

use super::prelude::*;

pub(super) fn cases() -> Vec<Case> {
    vec![
        Case {
            id: "rfc7009/2.1/logout-revokes-user-tokens",
            area: Area::Revocation,
            requirement:
                "Logout revokes every user token of the session at the revocation endpoint, with device-bound \
                          client authentication, and the panel returns to idle.",
            sources: &["RFC 7009 §2.1", "PROTOCOL §8", "PROTOCOL §7"],
            level: Level::Should,
            basis: Basis::Roger,
            rationale:
                "RFC 7009 lets a client revoke tokens it no longer needs but obliges none to; revoking both user \
                        tokens at logout, device-bound, is docs/protocol.md §5.3's.",
            aimed_at: &[],
            client: client!(defaults, logout_revokes),
            server: None,
        },
        Case {
            id: "roger/sec8/session-ended-by-server",
            area: Area::Revocation,
            requirement:
                "When the user ends the session from the phone, the panel leaves the session at the latest when \
                          its user token is next refused, and does not keep using that token.",
            sources: &["PROTOCOL §8", "RFC 6750 §3.1"],
            level: Level::Should,
            basis: Basis::Roger,
            rationale: "Ending the panel session on a refused user token is docs/protocol.md §5.3's; RFC 6750 §3.1 \
                        only names the error.",
            aimed_at: &[],
            client: client!(defaults, ended_by_server),
            server: None,
        },
        Case {
            id: "roger/R-TOK-4/device-removed",
            area: Area::Revocation,
            requirement:
                "When a tenant admin removes the printer, the MFP becomes `disconnected` (its refresh refused) and \
                          refuses user logins.",
            sources: &["R-TOK-4", "RFC 7009 §2.1"],
            level: Level::Should,
            basis: Basis::Roger,
            rationale:
                "Device removal and the disconnected state are R-TOK-4's; the RFCs do not say what a client does \
                        when its refresh token is revoked.",
            aimed_at: &[],
            client: client!(defaults, device_removed),
            server: None,
        },
    ]
}

async fn logout_revokes(env: &mut ClientEnv) -> Result<Finding, CaseError> {
    env.connect().await?;
    env.qr_session(Who::Alice).await?;
    if !env.pin(Who::Alice).await? {
        return Err(CaseError::Peer("the step-2 PIN was not accepted".into()));
    }
    let before = env.exchanges().len();
    env.logout().await?;
    env.expect_state(PanelState::Idle, STATE_WAIT).await?;
    let ex = env.exchanges();
    // The user tokens: answers to session-code polls and password grants.
    let user_tokens: Vec<String> = ex
        .iter()
        .filter(|e| {
            e.delivered_ok() && ((e.is_poll() && e.bearer().is_some()) || e.grant_type().as_deref() == Some("password"))
        })
        .filter_map(|e| e.json()?.get("access_token")?.as_str().map(str::to_owned))
        .collect();
    if user_tokens.len() < 2 {
        return Ok(Finding::Broken(format!(
            "the session had {} user tokens, expected two (step 1 and step 2)",
            user_tokens.len()
        )));
    }
    env.wait_exchanges(Duration::from_secs(10), |ex| {
        user_tokens.iter().all(|t| {
            ex[before..]
                .iter()
                .any(|e| e.is("POST", "/oauth/revoke") && e.form_get("token").as_deref() == Some(t.as_str()))
        })
    })
    .await;
    let ex = env.exchanges();
    let revokes: Vec<&Exchange> = ex.iter().filter(|e| e.is("POST", "/oauth/revoke")).collect();
    env.note_exchanges(revokes.iter().copied(), 6);
    let client_id = env.kit().client_id.clone();
    for t in &user_tokens {
        let Some(r) = revokes.iter().find(|e| e.form_get("token").as_deref() == Some(t.as_str())) else {
            return Ok(Finding::Broken(env.vault().redact(&format!("user token {t} was not revoked at logout"))));
        };
        if r.bearer().is_none() || r.form_get("client_id").as_deref() != Some(client_id.as_str()) {
            return Ok(Finding::Broken(
                "a revocation lacked device-bound client authentication (Bearer + client_id)".into(),
            ));
        }
        if !r.delivered_ok() {
            return Ok(Finding::Broken(format!("a revocation was refused with status {:?}", r.status)));
        }
        let alive = env
            .server()
            .shared
            .read(|core, now| core.state().access.get(&SecretHash::of(t)).is_some_and(|a| a.expires > now));
        if alive {
            return Ok(Finding::Broken("the server still holds a live user token after logout".into()));
        }
    }
    Ok(Finding::Holds)
}

async fn ended_by_server(env: &mut ClientEnv) -> Result<Finding, CaseError> {
    env.connect().await?;
    env.qr_session(Who::Alice).await?;
    let device = env.devices().into_iter().next().ok_or_else(|| CaseError::Kit("no device".into()))?;
    let user_token = env
        .exchanges()
        .iter()
        .rfind(|e| e.is_poll() && e.bearer().is_some() && e.delivered_ok())
        .and_then(|e| e.json()?.get("access_token")?.as_str().map(str::to_owned))
        .ok_or_else(|| CaseError::Peer("no session token was issued".into()))?;
    env.phone(Who::Alice)
        .await?
        .end_session(&device)
        .await
        .map_err(|e| CaseError::Kit(format!("the phone could not end the session: {e}")))?;
    env.note(EvidenceSource::Kit, "alice ended her session at the printer from the phone (POST /api/v1/sessions/end)");
    // Without push the panel learns it when it next uses the token: ask for the jobs.
    let jobs = env.ask(&roger_proto::shim::ShimRequest::Jobs).await?;
    env.note(EvidenceSource::Shim, format!("jobs after the end: {}", if jobs.is_ok() { "listed" } else { "refused" }));
    let idle = env.wait_state(PanelState::Idle, Duration::from_secs(10)).await?;
    let ex = env.exchanges();
    let uses: Vec<&Exchange> = ex.iter().filter(|e| e.bearer().as_deref() == Some(user_token.as_str())).collect();
    let refused = uses.iter().filter(|e| e.status == Some(401)).count();
    env.note_exchanges(uses.iter().copied(), 6);
    if idle.is_none() {
        return Ok(Finding::Broken("the panel stayed in the ended session".into()));
    }
    Ok(Finding::check(refused <= 2, || {
        format!("the ended session's token was sent {refused} times after it was refused")
    }))
}

async fn device_removed(env: &mut ClientEnv) -> Result<Finding, CaseError> {
    env.connect().await?;
    let device = env.devices().into_iter().next().ok_or_else(|| CaseError::Kit("no device".into()))?;
    env.phone(Who::Admin)
        .await?
        .remove_device(&device)
        .await
        .map_err(|e| CaseError::Kit(format!("the admin could not remove the printer: {e}")))?;
    env.note(EvidenceSource::Kit, "the admin removed the printer (DELETE /api/v1/devices/{id})");
    if env.wait_state(PanelState::Disconnected, Duration::from_secs(20)).await?.is_none() {
        return Ok(Finding::Broken("the removed printer did not become `disconnected` within 20 s".into()));
    }
    let refused = env.exchanges().iter().any(|e| {
        e.grant_type().as_deref() == Some("refresh_token") && e.oauth_error().as_deref() == Some("invalid_grant")
    });
    if !refused {
        env.note(EvidenceSource::Kit, "the MFP became disconnected without a refused refresh (e.g. on push)");
    }
    let accepted = env.pin(Who::Alice).await?;
    Ok(Finding::check(!accepted, || "a removed printer accepted a PIN login".into()))
}

pub(super) fn server_cases() -> Vec<Case> {
    vec![
        Case {
            id: "rfc7009/2.2/server-revoke-unknown-token",
            area: Area::Revocation,
            requirement: "Revoking a token the server does not know is answered 200, like any revocation.",
            sources: &["RFC 7009 §2.2"],
            level: Level::Should,
            basis: Basis::Rfc,
            rationale: "RFC 7009 §2.2: \"The authorization server responds with HTTP status code 200 if the token has \
                        been revoked successfully or if the client submitted an invalid token.\" A description \
                        without an RFC 2119 keyword (Google answers 400 invalid_token, docs/protocol.md §7.1), so a \
                        miss is NON-STRICT.",
            aimed_at: &[],
            client: None,
            server: server!(false, server_revoke_unknown, oauth),
        },
        Case {
            id: "rfc7009/2.1/server-revocation-cascades",
            area: Area::Revocation,
            requirement: "A revoked refresh token stops working; the access token issued with it stops working too \
                          (INFO when it does not).",
            sources: &["RFC 7009 §2.1", "R-TOK-3"],
            level: Level::Must,
            basis: Basis::Rfc,
            rationale: "RFC 7009 §2.1: the server invalidates the revoked token (and MUST support revoking refresh \
                        tokens, RFC 7009 §2); it SHOULD also invalidate the access tokens of the same grant, so a \
                        surviving access token is INFO.",
            aimed_at: &[],
            client: None,
            server: server!(false, server_cascade, oauth),
        },
        Case {
            id: "rfc7009/2.1/server-logout-revokes-user-tokens",
            area: Area::Revocation,
            requirement:
                "At logout the printer revokes the step-1 and step-2 user tokens with device-bound revocation \
                          requests: each is answered 200 and both tokens stop working, while the printer's own \
                          token keeps working.",
            sources: &["RFC 7009 §2.1", "PROTOCOL §8", "PROTOCOL §7"],
            level: Level::Should,
            basis: Basis::Roger,
            rationale: "RFC 7009 §2 makes revoking access tokens a SHOULD; step 1 and step 2 tokens revoked \
                        device-bound at logout are docs/protocol.md §5.3's.",
            aimed_at: &[],
            client: None,
            server: server!(false, server_logout),
        },
    ]
}

/// The statuses the logout judgement reads, in the order they are taken.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Logout {
    /// The step-1 token on `GET /api/v1/jobs` before logout.
    step1_before: Option<u16>,
    /// The step-2 token on `GET /api/v1/print-features` before logout.
    step2_before: Option<u16>,
    /// The two revocation answers.
    revocations: [Option<u16>; 2],
    /// The step-1 and step-2 tokens on the same calls after logout.
    step1_after: Option<u16>,
    step2_after: Option<u16>,
    /// The device token on `GET /api/v1/device` after logout.
    device_after: Option<u16>,
}

/// Judges a logout (RFC 7009 §2.1-2.2, PROTOCOL.md §8 "logout revokes both").
fn judge_logout(l: &Logout) -> Result<(), String> {
    if l.step1_before != Some(200) || l.step2_before != Some(200) {
        return Err(format!(
            "before logout the user tokens were answered {:?} (step 1) and {:?} (step 2), not 200: nothing to revoke",
            l.step1_before, l.step2_before
        ));
    }
    if let Some(bad) = l.revocations.iter().find(|s| **s != Some(200)) {
        return Err(format!("a device-bound revocation of a user token was answered {bad:?}, not 200"));
    }
    if l.step1_after != Some(401) {
        return Err(format!("the revoked step-1 token is answered {:?}, not 401", l.step1_after));
    }
    if l.step2_after != Some(401) {
        return Err(format!("the revoked step-2 token is answered {:?}, not 401", l.step2_after));
    }
    if l.device_after != Some(200) {
        return Err(format!("after the user's logout the printer's own token is answered {:?}", l.device_after));
    }
    Ok(())
}

async fn server_logout(env: &mut ServerEnv) -> Result<Finding, CaseError> {
    let d = env.register().await?;
    let step1 = env.qr_session(&d, Actor::User).await?;
    let token = |e: &Exchange| e.json().and_then(|v| v.get("access_token")?.as_str().map(str::to_owned));
    let step1 = token(&step1).unwrap_or_default();
    let alice = env.account(Actor::User).clone();
    let pin = alice.pin.clone().unwrap_or_default();
    let step2 = env.password_grant(&d.access, &alice.username, &pin, roger_proto::token::scope::STEP2).await?;
    let Some(step2) = token(&step2).filter(|_| step2.delivered_ok()) else {
        return Err(CaseError::Peer(format!("the step-2 PIN of {} was answered {:?}", alice.username, step2.status)));
    };
    let mut l = Logout {
        step1_before: env.api_get("/api/v1/jobs?state=queued", &step1).await?.status,
        step2_before: env.api_get("/api/v1/print-features", &step2).await?.status,
        ..Logout::default()
    };
    l.revocations = [
        env.revoke(&step1, false, Some(&d.access)).await?.status,
        env.revoke(&step2, false, Some(&d.access)).await?.status,
    ];
    l.step1_after = env.api_get("/api/v1/jobs?state=queued", &step1).await?.status;
    l.step2_after = env.api_get("/api/v1/print-features", &step2).await?.status;
    l.device_after = env.get_device(&d.access).await?.status;
    Ok(match judge_logout(&l) {
        Ok(()) => Finding::Holds,
        Err(why) => Finding::Broken(why),
    })
}

async fn server_revoke_unknown(env: &mut ServerEnv) -> Result<Finding, CaseError> {
    let unknown = format!("rat_conform_unknown_{}", env.seed);
    let r = if env.is_oauth() {
        env.revoke(&unknown, false, None).await?
    } else {
        let d = env.register().await?;
        env.revoke(&unknown, false, Some(&d.access)).await?
    };
    Ok(Finding::check(r.status == Some(200), || format!("revoking an unknown token was answered {:?}", r.status)))
}

async fn server_cascade(env: &mut ServerEnv) -> Result<Finding, CaseError> {
    let d = env.register().await?;
    let refresh_token = env.refresh_of(&d)?;
    let bearer = (!env.is_oauth()).then(|| d.access.clone());
    let r = env.revoke(&refresh_token, true, bearer.as_deref()).await?;
    if !r.delivered_ok() {
        return Ok(Finding::Broken(format!("the revocation was answered {:?}", r.status)));
    }
    let refresh = env.refresh(&refresh_token).await?;
    if refresh.delivered_ok() {
        return Ok(Finding::Broken("the revoked refresh token still refreshes".into()));
    }
    if env.is_oauth() {
        env.note(EvidenceSource::Kit, "a generic server offers the kit no resource to try the access token on");
        return Ok(Finding::Holds);
    }
    let access = env.get_device(&d.access).await?;
    if access.status != Some(401) {
        return Ok(Finding::Info(format!(
            "the revoked refresh token is dead, but its access token is answered {:?}, not 401 (RFC 7009 §2.1: \
             SHOULD)",
            access.status
        )));
    }
    Ok(Finding::Holds)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7009 §2.1 logout in server mode: the judgement on crafted statuses.
    #[test]
    fn logout_judgement() {
        let good = Logout {
            step1_before: Some(200),
            step2_before: Some(200),
            revocations: [Some(200), Some(200)],
            step1_after: Some(401),
            step2_after: Some(401),
            device_after: Some(200),
        };
        assert_eq!(judge_logout(&good), Ok(()));
        let kept = Logout { step2_after: Some(200), ..good };
        assert!(judge_logout(&kept).unwrap_err().contains("step-2 token"));
        let kept1 = Logout { step1_after: Some(200), ..good };
        assert!(judge_logout(&kept1).unwrap_err().contains("step-1 token"));
        let refused = Logout { revocations: [Some(200), Some(401)], ..good };
        assert!(judge_logout(&refused).unwrap_err().contains("not 200"));
        let device_gone = Logout { device_after: Some(401), ..good };
        assert!(judge_logout(&device_gone).unwrap_err().contains("printer's own token"));
        let nothing = Logout { step1_before: Some(403), ..good };
        assert!(judge_logout(&nothing).unwrap_err().contains("nothing to revoke"));
    }
}
