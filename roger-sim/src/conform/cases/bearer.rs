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
            level: Level::Must,
            aimed_at: &["token-in-query"],
            client: client!(defaults, header_not_query),
            server: None,
        },
        Case {
            id: "roger/sec7/device-bound-client-authentication",
            area: Area::Bearer,
            requirement: "Session-code requests, session-code polls, password grants and revocations carry the MFP's \
                          current device token as `Authorization: Bearer` and the `client_id` it registered with.",
            sources: &["PROTOCOL §7", "RFC 6749 §2.3"],
            level: Level::Must,
            aimed_at: &[],
            client: client!(defaults, device_bound),
            server: None,
        },
    ]
}

/// A session with API use: PIN login, the job list, a release, logout.
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
    env.logout().await?;
    Ok(())
}

async fn header_not_query(env: &mut ClientEnv) -> Result<Finding, CaseError> {
    api_session(env).await?;
    let ex = env.exchanges();
    let vault = env.vault();
    let api: Vec<&Exchange> = ex.iter().filter(|e| e.route == "api" && e.path.starts_with("/api/")).collect();
    env.note_exchanges(api.iter().copied(), 10);
    if api.is_empty() {
        return Ok(Finding::Broken("the MFP made no API request".into()));
    }
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
    match api.iter().find(|e| e.bearer().is_none()) {
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
            level: Level::Must,
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

async fn server_bearer_errors(env: &mut ServerEnv) -> Result<Finding, CaseError> {
    let none = get_device_with(env, None).await?;
    let challenge = super::www_authenticate(&none).unwrap_or_default();
    if none.status != Some(401) || !challenge.starts_with("Bearer") || !challenge.contains("realm=\"roger\"") {
        return Ok(Finding::Broken(format!(
            "no token: answered {:?} with WWW-Authenticate {challenge:?}",
            none.status
        )));
    }
    let bad = get_device_with(env, Some("Bearer rat_conform_not_a_token")).await?;
    let challenge = super::www_authenticate(&bad).unwrap_or_default();
    if bad.status != Some(401) || !challenge.contains("error=\"invalid_token\"") {
        return Ok(Finding::Broken(format!(
            "a bad token: answered {:?} with WWW-Authenticate {challenge:?}",
            bad.status
        )));
    }
    let app = env.app_token(Actor::User).await?;
    let scope = get_device_with(env, Some(&format!("Bearer {app}"))).await?;
    let challenge = super::www_authenticate(&scope).unwrap_or_default();
    Ok(Finding::check(scope.status == Some(403) && challenge.contains("insufficient_scope"), || {
        format!("an app token on a device endpoint: answered {:?} with WWW-Authenticate {challenge:?}", scope.status)
    }))
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
