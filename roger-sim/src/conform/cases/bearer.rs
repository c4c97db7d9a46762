//! How the MFP presents its credentials (RFC 6750 §2; PROTOCOL.md §7, §10): bearer tokens in the `Authorization`
//! header and never in a URL; device-bound client authentication on the session-code, token and revocation
//! endpoints.

use super::super::judge;
use super::prelude::*;

pub(super) fn cases() -> Vec<Case> {
    vec![
        Case {
            id: "rfc6750/2.1/bearer-in-header-never-in-query",
            area: Area::Bearer,
            requirement:
                "Every API request carries its token in `Authorization: Bearer`, and no request URL carries a \
                          token, code or other credential.",
            sources: &["RFC 6750 §2.1", "RFC 6750 §2.3", "R-SEC-1", "PROTOCOL §10"],
            level: Level::Should,
            basis: Basis::Rfc,
            rationale:
                "RFC 6750 §2: clients SHOULD use the Authorization header; §2.3 and §5.3: tokens SHOULD NOT go in \
                        URLs. docs/protocol.md §1.4 makes it a MUST, stricter than the RFC.",
            aimed_at: &["token-in-query"],
            client: client!(defaults, header_not_query),
            server: None,
        },
        Case {
            id: "rfc6750/2/one-method-per-request",
            area: Area::Bearer,
            requirement: "No request carries its bearer token by more than one method (the `Authorization` header, a \
                          form body `access_token`, a URL query): on the job list, releases, scans and logout alike.",
            sources: &["RFC 6750 §2.1", "RFC 6750 §2.3", "PROTOCOL §10"],
            level: Level::Must,
            basis: Basis::Rfc,
            rationale: "RFC 6750 §2: \"Clients MUST NOT use more than one method to transmit the token in each \
                        request.\"",
            aimed_at: &["token-in-query"],
            client: client!(defaults, one_method),
            server: None,
        },
        Case {
            id: "roger/sec7/device-bound-client-authentication",
            area: Area::Bearer,
            requirement: "Session-code requests, session-code polls, password grants and revocations carry the MFP's \
                          current device token as `Authorization: Bearer` and the `client_id` it registered with.",
            sources: &["PROTOCOL §7", "RFC 6749 §2.3"],
            level: Level::Should,
            basis: Basis::Roger,
            rationale: "Device-bound client authentication (roger_device_bearer) is Roger's own method under RFC 6749 \
                        §2.3, which leaves methods for public clients open.",
            aimed_at: &[],
            client: client!(defaults, device_bound),
            server: None,
        },
    ]
}

/// A session with API use: PIN login, the job list, a release, a scan (when supported), logout.
async fn api_session(env: &mut ClientEnv) -> Result<(), CaseError> {
    env.connect().await?;
    if !env.pin(Who::Alice).await? {
        return Err(CaseError::Peer("the PIN login was not accepted".into()));
    }
    let jobs = env.jobs().await?;
    if let Some((id, _)) = jobs.first() {
        let id = id.clone();
        env.release(&id).await?;
    }
    match env.scan("pdf-300").await {
        Ok(_) | Err(CaseError::Unsupported(_)) => {}
        Err(e) => return Err(e),
    }
    env.logout().await?;
    Ok(())
}

/// The methods by which a request carries a bearer token the kit handed out (RFC 6750 §2.1–2.3).
fn token_methods(e: &Exchange, vault: &super::super::vault::Vault) -> Vec<&'static str> {
    let mut m = Vec::new();
    if e.bearer().is_some() {
        m.push("the Authorization header");
    }
    if e.path != "/oauth/token" && e.path != "/oauth/revoke" && e.form_get("access_token").is_some() {
        m.push("a form body access_token");
    }
    if let Some(q) = &e.query {
        let named = form_urlencoded::parse(q.as_bytes()).any(|(k, _)| k == "access_token");
        let token = vault.credentials_in(q.as_bytes()).iter().any(|s| s.kind == "access token");
        if named || token {
            m.push("the URL query");
        }
    }
    m
}

/// An exchange with the Roger API (not OAuth, not the drive).
fn is_api(e: &Exchange) -> bool {
    e.route == "api" && e.path.starts_with("/api/")
}

/// Plays [`api_session`] and returns every exchange, with the API ones noted as evidence; `None` when the MFP made
/// no API request.
async fn api_session_exchanges(env: &mut ClientEnv) -> Result<Option<Vec<Exchange>>, CaseError> {
    api_session(env).await?;
    let ex = env.exchanges();
    env.note_exchanges(ex.iter().filter(|e| is_api(e)), 10);
    Ok(ex.iter().any(is_api).then_some(ex))
}

fn no_api_request() -> Finding {
    Finding::Broken("the MFP made no API request".into())
}

async fn one_method(env: &mut ClientEnv) -> Result<Finding, CaseError> {
    let Some(ex) = api_session_exchanges(env).await? else { return Ok(no_api_request()) };
    let vault = env.vault();
    for e in &ex {
        let m = token_methods(e, &vault);
        if m.len() > 1 {
            return Ok(Finding::Broken(format!(
                "exchange #{}: {} {} carries its token in {}",
                e.seq,
                e.method,
                e.path,
                m.join(" and ")
            )));
        }
    }
    Ok(Finding::Holds)
}

async fn header_not_query(env: &mut ClientEnv) -> Result<Finding, CaseError> {
    let Some(ex) = api_session_exchanges(env).await? else { return Ok(no_api_request()) };
    let vault = env.vault();
    for e in &ex {
        let Some(q) = &e.query else { continue };
        let names: Vec<String> = form_urlencoded::parse(q.as_bytes()).map(|(k, _)| k.into_owned()).collect();
        let secret_in_url = vault.credentials_in(q.as_bytes()).first().map(|s| s.kind);
        if names.iter().any(|n| n == "access_token") || secret_in_url.is_some() {
            let what = secret_in_url.unwrap_or("an access_token parameter");
            return Ok(Finding::Broken(format!(
                "exchange #{}: {} {} carries {what} in its URL",
                e.seq, e.method, e.path
            )));
        }
    }
    match ex.iter().filter(|e| is_api(e)).find(|e| e.bearer().is_none()) {
        Some(e) => {
            Ok(Finding::Broken(format!("exchange #{}: {} {} has no Authorization: Bearer", e.seq, e.method, e.path)))
        }
        None => Ok(Finding::Holds),
    }
}

async fn device_bound(env: &mut ClientEnv) -> Result<Finding, CaseError> {
    api_session(env).await?;
    let ex = env.exchanges();
    let device_tokens: Vec<String> = judge::device_tokens(&ex).into_iter().map(|t| t.access_token).collect();
    let client_id = env.kit().client_id.clone();
    let bound: Vec<&Exchange> = ex
        .iter()
        .filter(|e| {
            (e.is("POST", "/oauth/device_authorization")
                && e.form_get("scope").is_some_and(|s| s.contains("roger.release")))
                || (e.is_poll() && e.bearer().is_some())
                || e.grant_type().as_deref() == Some("password")
                || e.is("POST", "/oauth/revoke")
        })
        .collect();
    env.note_exchanges(bound.iter().copied(), 10);
    let kinds = ["session code", "password grant", "revocation"];
    let seen = [
        bound.iter().any(|e| e.path == "/oauth/device_authorization"),
        bound.iter().any(|e| e.grant_type().as_deref() == Some("password")),
        bound.iter().any(|e| e.path == "/oauth/revoke"),
    ];
    if let Some(k) = kinds.iter().zip(seen).find(|(_, s)| !s).map(|(k, _)| k) {
        return Ok(Finding::Broken(format!("no {k} request was seen to judge")));
    }
    for e in &bound {
        let bearer = e.bearer();
        if !bearer.as_ref().is_some_and(|b| device_tokens.contains(b)) {
            return Ok(Finding::Broken(format!(
                "exchange #{}: {} {} does not carry a device token as Bearer",
                e.seq, e.method, e.path
            )));
        }
        if e.form_get("client_id").as_deref() != Some(client_id.as_str()) {
            return Ok(Finding::Broken(format!(
                "exchange #{}: {} {} names client_id {:?}, not {client_id:?}",
                e.seq,
                e.method,
                e.path,
                e.form_get("client_id")
            )));
        }
    }
    Ok(Finding::Holds)
}

pub(super) fn server_cases() -> Vec<Case> {
    vec![
        Case {
            id: "rfc6750/3.1/server-bearer-errors",
            area: Area::Bearer,
            requirement:
                "An API request without a token gets 401 with `WWW-Authenticate: Bearer realm=\"roger\"`, a bad \
                          token 401 with `error=\"invalid_token\"`, a token without the scope 403 with \
                          `error=\"insufficient_scope\"`.",
            sources: &["RFC 6750 §3.1", "PROTOCOL §10"],
            level: Level::Must,
            basis: Basis::Rfc,
            rationale: "RFC 6750 §3: a refused request \"MUST include the HTTP WWW-Authenticate response header\" \
                        (scheme Bearer); the error codes and statuses of §3.1 are SHOULDs and the realm is Roger's, \
                        so those are INFO.",
            aimed_at: &[],
            client: None,
            server: server!(false, server_bearer_errors),
        },
        Case {
            id: "roger/sec7/server-device-bound-errors",
            area: Area::Bearer,
            requirement: "A session-code request without device-bound authentication, or with a token that is not a \
                          device token, gets 401 `invalid_client` with a Bearer `WWW-Authenticate` challenge.",
            sources: &["PROTOCOL §7", "RFC 6749 §2.3"],
            level: Level::Should,
            basis: Basis::Roger,
            rationale: "Device-bound client authentication and its 401 invalid_client are Roger's profile of RFC 6749 \
                        §2.3 and §5.2.",
            aimed_at: &[],
            client: None,
            server: server!(false, server_device_bound_errors),
        },
    ]
}

async fn get_device_with(env: &mut ServerEnv, auth: Option<&str>) -> Result<Exchange, CaseError> {
    let mut b = http::Request::get(format!("{}/api/v1/device", env.endpoints.api));
    if let Some(a) = auth {
        b = b.header(http::header::AUTHORIZATION, a);
    }
    env.send(b.body(Vec::new()).map_err(|e| CaseError::Kit(e.to_string()))?).await
}

/// One refused API request as the bearer-error judgement reads it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Refusal {
    what: &'static str,
    status: Option<u16>,
    challenge: Option<String>,
}

/// Judges three refused requests (no token, a bad token, a token without the scope): `Err` when one was not
/// refused or lacks a Bearer challenge (RFC 6750 §3 MUST); `Ok` with the SHOULD and Roger details that differ.
fn judge_bearer_errors(r: &[Refusal; 3]) -> Result<Vec<String>, String> {
    let mut details = Vec::new();
    let wanted = [(401, None), (401, Some("invalid_token")), (403, Some("insufficient_scope"))];
    for (x, (status, error)) in r.iter().zip(wanted) {
        let challenge = x.challenge.clone().unwrap_or_default();
        if x.status.is_none_or(|s| (200..300).contains(&s)) {
            return Err(format!("{}: answered {:?}, not refused", x.what, x.status));
        }
        if !challenge.to_ascii_lowercase().starts_with("bearer") {
            return Err(format!("{}: answered {:?} without a Bearer WWW-Authenticate challenge", x.what, x.status));
        }
        if x.status != Some(status) {
            details.push(format!("{}: status {:?}, not {status}", x.what, x.status));
        }
        if let Some(e) = error {
            if !challenge.contains(&format!("error=\"{e}\"")) {
                details.push(format!("{}: the challenge names no error=\"{e}\"", x.what));
            }
        }
        if !challenge.contains("realm=\"roger\"") {
            details.push(format!("{}: the challenge names no realm=\"roger\"", x.what));
        }
    }
    Ok(details)
}

async fn server_bearer_errors(env: &mut ServerEnv) -> Result<Finding, CaseError> {
    let refusal =
        |what: &'static str, e: &Exchange| Refusal { what, status: e.status, challenge: super::www_authenticate(e) };
    let none = get_device_with(env, None).await?;
    let bad = get_device_with(env, Some("Bearer rat_conform_not_a_token")).await?;
    let app = env.app_token(Actor::User).await?;
    let scope = get_device_with(env, Some(&format!("Bearer {app}"))).await?;
    let seen = [
        refusal("no token", &none),
        refusal("a bad token", &bad),
        refusal("an app token on a device endpoint", &scope),
    ];
    Ok(match judge_bearer_errors(&seen) {
        Err(why) => Finding::Broken(why),
        Ok(details) if details.is_empty() => Finding::Holds,
        Ok(details) => Finding::Info(format!(
            "every refusal carries a Bearer challenge (RFC 6750 §3); beyond it: {}",
            details.join("; ")
        )),
    })
}

async fn session_code(env: &mut ServerEnv, bearer: Option<&str>) -> Result<Exchange, CaseError> {
    let bearer = bearer.map(roger_proto::secret::AccessToken::new);
    let req = roger_proto::device_authorization::DeviceAuthorizationRequest::session(&env.client_id())
        .to_http(&env.endpoints.device_authorization, bearer.as_ref())
        .map_err(|e| CaseError::Kit(e.to_string()))?;
    env.send(req).await
}

async fn server_device_bound_errors(env: &mut ServerEnv) -> Result<Finding, CaseError> {
    let d = env.register().await?;
    let ok = session_code(env, Some(&d.access)).await?;
    if !ok.delivered_ok() {
        return Ok(Finding::Broken(format!("a device-bound session-code request was answered {:?}", ok.status)));
    }
    let missing = session_code(env, None).await?;
    let app = env.app_token(Actor::User).await?;
    let wrong = session_code(env, Some(&app)).await?;
    for (what, e) in [("without Authorization", &missing), ("with an app token", &wrong)] {
        let challenge = super::www_authenticate(e).unwrap_or_default();
        if e.status != Some(401)
            || e.oauth_error().as_deref() != Some("invalid_client")
            || !challenge.starts_with("Bearer")
        {
            return Ok(Finding::Broken(format!(
                "a session-code request {what} was answered {:?} {:?} with WWW-Authenticate {challenge:?}",
                e.status,
                e.oauth_error()
            )));
        }
    }
    Ok(Finding::Holds)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal(what: &'static str, status: u16, challenge: &str) -> Refusal {
        Refusal { what, status: Some(status), challenge: Some(challenge.to_owned()).filter(|c| !c.is_empty()) }
    }

    /// RFC 6750 §3 in server mode: a missing challenge fails; SHOULD details are INFO.
    #[test]
    fn bearer_error_judgement() {
        let roger = [
            refusal("a", 401, "Bearer realm=\"roger\""),
            refusal("b", 401, "Bearer realm=\"roger\", error=\"invalid_token\""),
            refusal("c", 403, "Bearer realm=\"roger\", error=\"insufficient_scope\", scope=\"roger.device\""),
        ];
        assert_eq!(judge_bearer_errors(&roger), Ok(vec![]));
        let plain = [refusal("a", 401, "Bearer"), refusal("b", 401, "Bearer"), refusal("c", 401, "Bearer")];
        assert_eq!(judge_bearer_errors(&plain).unwrap().len(), 6);
        let bare = [refusal("a", 401, ""), refusal("b", 401, "Bearer"), refusal("c", 403, "Bearer")];
        assert!(judge_bearer_errors(&bare).unwrap_err().contains("without a Bearer"));
        let open = [refusal("a", 200, ""), refusal("b", 401, "Bearer"), refusal("c", 403, "Bearer")];
        assert!(judge_bearer_errors(&open).unwrap_err().contains("not refused"));
    }
}
