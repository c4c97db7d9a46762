//! The password grant at the panel (PROTOCOL.md §8 step 2 and the PIN login; R-PWD-1; RFC 6749 §4.3): the PIN goes
//! to the server once per entry, again only as a retry of the same request after a lost answer, and is never kept.

use roger_proto::server::mint::SecretHash;

use super::super::vault::{contains, contains_number};
use super::observe;
use super::prelude::*;

pub(super) fn cases() -> Vec<Case> {
    vec![
        Case {
            id: "roger/R-PWD-1/pin-sent-once",
            area: Area::Password,
            requirement: "A PIN typed once at the panel is never sent again once it brought a token: not for the job \
                          list, a release, a scan or at logout (sent twice before its answer is INFO: Roger wants \
                          exactly one request when nothing is lost).",
            sources: &["R-PWD-1", "RFC 6749 §4.3"],
            level: Level::Must,
            basis: Basis::Rfc,
            rationale: "RFC 6749 §4.3.1: \"The client MUST discard the credentials once an access token has been \
                        obtained.\" A second request before the first answer is not covered by it (INFO).",
            aimed_at: &["resend-pin"],
            client: client!(defaults, sent_once),
            server: None,
        },
        Case {
            id: "roger/R-PWD-1/pin-resent-only-as-retry",
            area: Area::Password,
            requirement:
                "When the answer to a password grant is lost, the MFP sends the PIN again at most once, as the \
                          same request (same user, PIN, scope and client).",
            sources: &["R-PWD-1", "RFC 6749 §4.3"],
            level: Level::Should,
            basis: Basis::Roger,
            rationale: "RFC 6749 §4.3.1 binds the client only once a token was obtained; retrying a lost request at \
                        most once and unchanged is R-PWD-1's.",
            aimed_at: &["resend-pin"],
            client: client!(defaults, resent_as_retry),
            server: None,
        },
        Case {
            id: "roger/R-PWD-1/pin-not-kept-in-state-dir",
            area: Area::Password,
            requirement:
                "The MFP never writes a PIN to its storage: after PIN logins, a logout, a restart, a QR session \
                          with a step-2 PIN and a scan, no file under `state_dir` holds it.",
            sources: &["R-PWD-1", "RFC 6749 §4.3"],
            level: Level::Must,
            basis: Basis::Rfc,
            rationale: "RFC 6749 §4.3.1: \"The client MUST discard the credentials once an access token has been \
                        obtained\"; a PIN kept in storage is not discarded.",
            aimed_at: &["keep-pin"],
            client: client!(defaults, pin_not_kept),
            server: None,
        },
        Case {
            id: "roger/R-PWD-1/no-user-tokens-in-state-dir",
            area: Area::Password,
            requirement:
                "The MFP keeps user tokens in memory only: no file under `state_dir` holds an access token issued \
                          for a user session.",
            sources: &["R-PWD-1", "PROTOCOL §8"],
            level: Level::Should,
            basis: Basis::Roger,
            rationale: "RFC 6749 §10.3 asks for confidential storage, not for none; keeping user tokens in memory \
                        only is R-PWD-1's (docs/protocol.md §5.2).",
            aimed_at: &[],
            client: client!(defaults, user_tokens_not_kept),
            server: None,
        },
    ]
}

fn password_grants(env: &ClientEnv) -> Vec<Exchange> {
    env.exchanges().into_iter().filter(|e| e.grant_type().as_deref() == Some("password")).collect()
}

/// Uses the session the PIN opened as a user would: the job list, a release, a scan (each optional).
async fn use_session(env: &mut ClientEnv) -> Result<(), CaseError> {
    let ignore_unsupported = |r: Result<(), CaseError>| match r {
        Err(CaseError::Unsupported(_)) => Ok(()),
        other => other,
    };
    let jobs = match env.jobs().await {
        Ok(j) => j,
        Err(CaseError::Unsupported(_)) => Vec::new(),
        Err(e) => return Err(e),
    };
    if let Some((id, _)) = jobs.first() {
        let id = id.clone();
        ignore_unsupported(env.release(&id).await.map(|_| ()))?;
    }
    ignore_unsupported(env.scan("pdf-300").await.map(|_| ()))
}

/// Judges the password grants carrying `pin` from one PIN entry: a grant after one that brought a token breaks
/// RFC 6749 §4.3.1; more than one before any answer is only Roger's concern.
fn judge_one_entry(grants: &[Exchange], pin: &str) -> Finding {
    let with_pin: Vec<&Exchange> = grants.iter().filter(|g| g.form_get("password").as_deref() == Some(pin)).collect();
    let Some(first_token) = with_pin.iter().position(|g| g.delivered_ok()) else {
        return Finding::Broken(format!("the PIN was sent {} time(s) and never brought a token", with_pin.len()));
    };
    let token_at = with_pin[first_token].done;
    if let Some(again) = with_pin[first_token + 1..].iter().find(|g| g.at >= token_at) {
        return Finding::Broken(format!(
            "exchange #{}: the PIN was sent again after it had brought a token (exchange #{})",
            again.seq, with_pin[first_token].seq
        ));
    }
    if with_pin.len() > 1 {
        return Finding::Info(format!(
            "one PIN entry reached the server {} times before its answer; RFC 6749 §4.3.1 allows it, R-PWD-1 wants once",
            with_pin.len()
        ));
    }
    Finding::Holds
}

async fn sent_once(env: &mut ClientEnv) -> Result<Finding, CaseError> {
    env.connect().await?;
    if !env.pin(Who::Alice).await? {
        return Err(CaseError::Peer("the PIN login was not accepted".into()));
    }
    use_session(env).await?;
    observe(Duration::from_secs(2)).await;
    env.logout().await?;
    observe(Duration::from_secs(2)).await;
    let pin = env.user(Who::Alice).pin.clone();
    let grants = password_grants(env);
    env.note_exchanges(grants.iter(), 6);
    Ok(judge_one_entry(&grants, &pin))
}

fn fingerprint(e: &Exchange) -> Vec<Option<String>> {
    ["grant_type", "username", "password", "scope", "client_id"].iter().map(|k| e.form_get(k)).collect()
}

async fn resent_as_retry(env: &mut ClientEnv) -> Result<Finding, CaseError> {
    env.connect().await?;
    env.set_faults(vec![rule("/oauth/token", Some("password"), FaultKind::DropResponse, Some(1))])?;
    let accepted = env.pin(Who::Alice).await?;
    env.note(EvidenceSource::Shim, format!("pin accepted: {accepted}"));
    observe(Duration::from_secs(4)).await;
    let grants = password_grants(env);
    env.note_exchanges(grants.iter(), 6);
    let Some(first) = grants.first() else { return Ok(Finding::Broken("the PIN was never sent".into())) };
    if first.status.is_some() {
        return Err(CaseError::Kit("the lost answer was not placed on the first password grant".into()));
    }
    let retries = &grants[1..];
    if retries.len() > 1 {
        return Ok(Finding::Broken(format!("after one lost answer the PIN was sent {} more times", retries.len())));
    }
    if let Some(r) = retries.first() {
        if fingerprint(r) != fingerprint(first) {
            return Ok(Finding::Broken("the resent password grant differs from the lost one".into()));
        }
        env.note(EvidenceSource::Kit, "the MFP retried the lost request once, unchanged (allowed)");
    } else {
        env.note(EvidenceSource::Kit, "the MFP did not retry the lost request (allowed)");
    }
    Ok(Finding::Holds)
}

/// PIN logins, a logout, another PIN login, a restart, then a QR session with a step-2 PIN and a scan: what a
/// PIN (or a user token) could leave behind, wherever the MFP handles one.
async fn pin_cycle(env: &mut ClientEnv) -> Result<(), CaseError> {
    env.connect().await?;
    if !env.pin(Who::Alice).await? {
        return Err(CaseError::Peer("the PIN login was not accepted".into()));
    }
    env.logout().await?;
    env.expect_state(PanelState::Idle, STATE_WAIT).await?;
    env.pin(Who::Alice).await?;
    observe(Duration::from_secs(1)).await;
    env.restart().await?;
    env.expect_state(PanelState::Idle, STATE_WAIT).await?;
    env.qr_session(Who::Alice).await?;
    if env.pin(Who::Alice).await? {
        use_session(env).await?;
    }
    observe(Duration::from_secs(1)).await;
    Ok(())
}

async fn pin_not_kept(env: &mut ClientEnv) -> Result<Finding, CaseError> {
    pin_cycle(env).await?;
    let pin = env.user(Who::Alice).pin.clone();
    let files = env.state_files();
    env.note(EvidenceSource::StateDir, format!("{} files scanned for the PIN", files.len()));
    for (path, bytes) in &files {
        // The raw digits, and their SHA-256 in hex (a hash of an 8-digit PIN is as good as the PIN).
        let hashed = SecretHash::of(&pin).to_hex();
        if contains_number(bytes, &pin) || contains(bytes, hashed.as_bytes()) {
            let rel = path.strip_prefix(&env.state_dir).unwrap_or(path).display().to_string();
            return Ok(Finding::Broken(format!("the PIN is stored in state_dir/{rel}")));
        }
    }
    Ok(Finding::Holds)
}

async fn user_tokens_not_kept(env: &mut ClientEnv) -> Result<Finding, CaseError> {
    pin_cycle(env).await?;
    // User tokens: those from password grants and session-code polls.
    let user_tokens: Vec<String> = env
        .exchanges()
        .iter()
        .filter(|e| {
            e.delivered_ok() && (e.grant_type().as_deref() == Some("password") || (e.is_poll() && e.bearer().is_some()))
        })
        .filter_map(|e| e.json()?.get("access_token")?.as_str().map(str::to_owned))
        .collect();
    if user_tokens.is_empty() {
        return Ok(Finding::Broken("no user token was issued, so none could be looked for".into()));
    }
    for (path, bytes) in env.state_files() {
        if user_tokens.iter().any(|t| contains(&bytes, t.as_bytes())) {
            let rel = path.strip_prefix(&env.state_dir).unwrap_or(&path).display().to_string();
            return Ok(Finding::Broken(format!("a user access token is stored in state_dir/{rel}")));
        }
    }
    Ok(Finding::Holds)
}

pub(super) fn server_cases() -> Vec<Case> {
    vec![
        Case {
            id: "roger/R-PWD-2/server-lockout",
            area: Area::Password,
            requirement:
                "After 5 failed PIN logins a user is locked out (the right PIN is refused too), and every failure \
                          (unknown user, wrong PIN, locked) gets the same answer.",
            sources: &["R-PWD-2", "RFC 6749 §4.3"],
            level: Level::Should,
            basis: Basis::Roger,
            rationale: "RFC 6749 §4.3.2: the server MUST protect the endpoint against brute force \"(e.g., using \
                        rate-limitation or generating alerts)\"; an alert is invisible from outside, so lock-out after \
                        5 failures with identical answers is R-PWD-2's choice.",
            aimed_at: &["no-lockout"],
            client: None,
            server: server!(true, server_lockout),
        },
        Case {
            id: "roger/sec8/server-step2-bound-to-session-user",
            area: Area::Password,
            requirement:
                "While a user's QR session is open at a printer, a step-2 password grant there for another user \
                          is refused with `invalid_grant` even with that user's right PIN, and the session user's \
                          own PIN gets the `roger.print roger.scan` token.",
            sources: &["PROTOCOL §8", "RFC 6749 §4.3"],
            level: Level::Should,
            basis: Basis::Roger,
            rationale: "Step 2 bound to the step-1 user is Roger's session design (docs/protocol.md §3.5.3); RFC \
                        6749 §4.3 knows no session.",
            aimed_at: &["no-step2-binding"],
            client: None,
            server: server!(false, server_step2_binding),
        },
    ]
}

/// What the step-2 judgement needs of a token endpoint answer: its status, OAuth `error` and `scope`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct GrantAnswer {
    status: Option<u16>,
    error: Option<String>,
    scope: Option<String>,
}

impl GrantAnswer {
    fn of(e: &Exchange) -> Self {
        let scope = e.json().and_then(|v| v.get("scope")?.as_str().map(str::to_owned));
        Self { status: e.status, error: e.oauth_error(), scope }
    }
}

/// Judges step 2 in another user's session (`other`) and in the user's own (`own`) (PROTOCOL.md §8: `username`
/// must be the step-1 user while a session is open, else `invalid_grant`).
fn judge_step2(other: &GrantAnswer, own: &GrantAnswer) -> Result<(), String> {
    if other.status == Some(200) {
        return Err("another user's step-2 password grant in an open QR session was granted".into());
    }
    if other.status != Some(400) || other.error.as_deref() != Some("invalid_grant") {
        return Err(format!(
            "another user's step-2 password grant was answered {:?} {:?}, not 400 invalid_grant",
            other.status, other.error
        ));
    }
    if own.status != Some(200) {
        return Err(format!("the session user's own step-2 PIN was answered {:?} {:?}", own.status, own.error));
    }
    let granted: std::collections::BTreeSet<&str> = own.scope.as_deref().unwrap_or("").split(' ').collect();
    if !(granted.contains("roger.print") && granted.contains("roger.scan")) {
        return Err(format!("the step-2 token's scope is {:?}, not roger.print roger.scan", own.scope));
    }
    Ok(())
}

async fn server_step2_binding(env: &mut ServerEnv) -> Result<Finding, CaseError> {
    let device = env.register().await?;
    let step1 = env.qr_session(&device, Actor::User).await?;
    let alice = env.account(Actor::User).clone();
    let bob = env.account(Actor::Sacrificial).clone();
    let shown = step1.json().and_then(|v| v.get("user")?.get("username")?.as_str().map(str::to_owned));
    env.note(EvidenceSource::Kit, format!("{}'s QR session is open (step-1 user {shown:?})", alice.username));
    let scope = roger_proto::token::scope::STEP2;
    let other =
        env.password_grant(&device.access, &bob.username, bob.pin.as_deref().unwrap_or_default(), scope).await?;
    let own =
        env.password_grant(&device.access, &alice.username, alice.pin.as_deref().unwrap_or_default(), scope).await?;
    Ok(match judge_step2(&GrantAnswer::of(&other), &GrantAnswer::of(&own)) {
        Ok(()) => Finding::Holds,
        Err(why) => Finding::Broken(why),
    })
}

async fn pin_login(env: &mut ServerEnv, device: &str, username: &str, pin: &str) -> Result<Exchange, CaseError> {
    env.password_grant(device, username, pin, roger_proto::token::scope::PIN_LOGIN).await
}

async fn server_lockout(env: &mut ServerEnv) -> Result<Finding, CaseError> {
    let device = env.register().await?;
    let victim = env.account(Actor::Sacrificial).clone();
    let pin = victim.pin.clone().unwrap_or_default();
    let wrong = if pin == "00000000" { "11111111".to_owned() } else { "00000000".to_owned() };
    let unknown = pin_login(env, &device.access, "conform-no-such-user", &pin).await?;
    let mut failures = Vec::new();
    for _ in 0..5 {
        failures.push(pin_login(env, &device.access, &victim.username, &wrong).await?);
    }
    let locked = pin_login(env, &device.access, &victim.username, &pin).await?;
    let sim = env.sim_available().await;
    if sim {
        // Unlock for whoever uses the account next (the lock-out lasts 300 s by default).
        let _ = env.advance(301).await;
    }
    if locked.delivered_ok() {
        return Ok(Finding::Broken("the right PIN was accepted after 5 failures: no lock-out".into()));
    }
    let reference = (&unknown.status, &unknown.resp_body);
    let mut differ = failures.iter().chain(std::iter::once(&locked)).filter(|e| (&e.status, &e.resp_body) != reference);
    if let Some(d) = differ.next() {
        return Ok(Finding::Broken(format!(
            "failures are told apart: an unknown user got {:?}, exchange #{} got {:?} with another body",
            unknown.status, d.seq, d.status
        )));
    }
    env.note(EvidenceSource::Kit, "unknown user, wrong PIN and locked user got identical answers (timing not judged)");
    Ok(Finding::Holds)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u16, error: Option<&str>, scope: Option<&str>) -> GrantAnswer {
        GrantAnswer { status: Some(status), error: error.map(str::to_owned), scope: scope.map(str::to_owned) }
    }

    fn grant(seq: u64, t0: std::time::Instant, at_ms: u64, pin: &str, ok: Option<bool>) -> Exchange {
        let at = t0 + Duration::from_millis(at_ms);
        let mut headers = http::HeaderMap::new();
        headers.insert("content-type", http::HeaderValue::from_static("application/x-www-form-urlencoded"));
        Exchange {
            seq,
            route: "api",
            at,
            done: at + Duration::from_millis(50),
            method: "POST".into(),
            path: "/oauth/token".into(),
            query: None,
            headers,
            body: format!("grant_type=password&username=alice&password={pin}&client_id=emb-x").into(),
            status: ok.map(|ok| if ok { 200 } else { 400 }),
            resp_headers: http::HeaderMap::new(),
            resp_body: Default::default(),
            rewritten: Vec::new(),
        }
    }

    /// RFC 6749 §4.3.1: a resend after the token is a FAIL wherever it happens; a double send before is INFO.
    #[test]
    fn one_entry_judgement() {
        let t0 = std::time::Instant::now();
        let once = vec![grant(1, t0, 0, "12345678", Some(true))];
        assert_eq!(judge_one_entry(&once, "12345678"), Finding::Holds);
        let resent = vec![grant(1, t0, 0, "12345678", Some(true)), grant(5, t0, 9000, "12345678", Some(true))];
        assert!(matches!(judge_one_entry(&resent, "12345678"), Finding::Broken(r) if r.contains("#5")));
        let doubled = vec![grant(1, t0, 0, "12345678", Some(true)), grant(2, t0, 10, "12345678", Some(true))];
        assert!(matches!(judge_one_entry(&doubled, "12345678"), Finding::Info(_)));
        assert!(matches!(judge_one_entry(&[], "12345678"), Finding::Broken(_)));
    }

    /// PROTOCOL.md §8 step 2 in server mode: the judgement on crafted answers.
    #[test]
    fn step2_judgement() {
        let refused = answer(400, Some("invalid_grant"), None);
        let granted = answer(200, None, Some("roger.print roger.scan"));
        assert_eq!(judge_step2(&refused, &granted), Ok(()));
        assert!(judge_step2(&granted, &granted).unwrap_err().contains("was granted"), "no binding");
        let other_error = answer(400, Some("invalid_request"), None);
        assert!(judge_step2(&other_error, &granted).unwrap_err().contains("not 400 invalid_grant"));
        assert!(judge_step2(&refused, &refused).unwrap_err().contains("own step-2 PIN"));
        let narrow = answer(200, None, Some("roger.print"));
        assert!(judge_step2(&refused, &narrow).unwrap_err().contains("scope"));
        assert!(judge_step2(&GrantAnswer::default(), &granted).is_err(), "no answer at all");
    }
}
