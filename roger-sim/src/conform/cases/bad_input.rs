//! Answers a client must refuse (PROTOCOL.md §7, RFC 6749 §7.1, R-QR-4): a token of a type it does not
//! understand is never used; a QR on a foreign origin is not shown.

use super::super::judge;
use super::observe;
use super::prelude::*;

pub(super) fn cases() -> Vec<Case> {
    vec![
        Case {
            id: "rfc6749/7.1/refuse-unknown-token-type",
            area: Area::BadInput,
            requirement: "The MFP never uses an access token whose `token_type` it does not understand (anything but \
                          `Bearer`, case-insensitive).",
            sources: &["RFC 6749 §7.1", "RFC 6750 §2.1"],
            level: Level::Must,
            basis: Basis::Rfc,
            rationale: "RFC 6749 §7.1: \"The client MUST NOT use an access token if it does not understand the token \
                        type.\"",
            aimed_at: &[],
            client: client!(mac_tokens, unknown_token_type),
            server: None,
        },
        Case {
            id: "roger/R-QR-4/no-foreign-qr",
            area: Area::BadInput,
            requirement:
                "The MFP does not show a QR whose `verification_uri_complete` is on another origin than its API.",
            sources: &["R-QR-4", "RFC 8628 §5.4"],
            level: Level::Should,
            basis: Basis::Roger,
            rationale:
                "R-QR-4 is the phone's duty; the MFP-side SHOULD exists only in docs/protocol.md (RFC 8628 §5.4 \
                        puts the check on the user and the authorization server, not on the device). Ours at most.",
            aimed_at: &[],
            client: client!(foreign_qr_setup, foreign_qr),
            server: None,
        },
    ]
}

fn mac_tokens(s: &mut ClientSetup) {
    s.rewrites.token_type = Some("MAC".into());
}

async fn unknown_token_type(env: &mut ClientEnv) -> Result<Finding, CaseError> {
    env.start_shim().await?;
    let shown = env.register().await?;
    env.decide(&shown, Who::Admin, true).await?;
    // Whatever the MFP makes of it: give it time to use the token if it would.
    env.wait_exchanges(Duration::from_secs(10), |ex| ex.iter().any(|e| e.is_poll() && e.delivered_ok())).await;
    observe(Duration::from_secs(3)).await;
    let ex = env.exchanges();
    let mac_tokens: Vec<String> = ex
        .iter()
        .filter(|e| e.rewritten.contains(&"token_type"))
        .filter_map(|e| e.json()?.get("access_token")?.as_str().map(str::to_owned))
        .collect();
    if mac_tokens.is_empty() {
        return Ok(Finding::Broken("no token answer reached the MFP".into()));
    }
    let used: Vec<&Exchange> = ex.iter().filter(|e| e.bearer().is_some_and(|b| mac_tokens.contains(&b))).collect();
    env.note_exchanges(used.iter().copied(), 4);
    let tokens = judge::device_tokens(&ex).len();
    env.note(EvidenceSource::Wire, format!("{tokens} token answer(s) with token_type MAC reached the MFP"));
    Ok(match used.first() {
        Some(e) => Finding::Broken(format!(
            "exchange #{}: {} {} used a token of type MAC as a bearer",
            e.seq, e.method, e.path
        )),
        None => Finding::Holds,
    })
}

const PHISH: &str = "https://phish.example";

fn foreign_qr_setup(s: &mut ClientSetup) {
    s.rewrites.verification_origin = Some(PHISH.into());
}

async fn foreign_qr(env: &mut ClientEnv) -> Result<Finding, CaseError> {
    env.start_shim().await?;
    let reg = env.ask(&roger_proto::shim::ShimRequest::Register).await?;
    let qr = reg.fields().get("qr").and_then(|v| v.as_str()).unwrap_or_default().to_owned();
    if qr.starts_with(PHISH) {
        return Ok(Finding::Broken(format!("the panel shows a QR for {PHISH}")));
    }
    let screenshot = reg.fields().get("screenshot").and_then(|v| v.as_str()).map(str::to_owned);
    if let Some(path) = screenshot {
        if let Ok(png) = std::fs::read(&path) {
            if let Ok(payloads) = crate::phone::scan::decode_png(&png) {
                if payloads.iter().any(|p| p.starts_with(PHISH)) {
                    return Ok(Finding::Broken(format!("the screenshot's QR points to {PHISH}")));
                }
            }
        }
    }
    let rewritten = env.exchanges().iter().filter(|e| e.rewritten.contains(&"verification_uri_complete")).count();
    Ok(Finding::check(rewritten > 0, || "no registration code with a foreign QR reached the MFP".into()))
}

pub(super) fn server_cases() -> Vec<Case> {
    vec![
        Case {
            id: "rfc6749/5.2/server-oauth-errors-for-bad-input",
            area: Area::BadInput,
            requirement: "Malformed requests to the token, device authorization and revocation endpoints (wrong media \
                          type, empty or broken forms, an unknown grant) get an error answer with an OAuth `error` \
                          member, never a 5xx (an oversized body: any 4xx; the error member with a 2xx status is \
                          INFO).",
            sources: &["RFC 6749 §5.2", "PROTOCOL §10"],
            level: Level::Must,
            basis: Basis::Rfc,
            rationale: "RFC 6749 §5.2: the error answer's `error` member is REQUIRED and `invalid_request` names a \
                        malformed request, so a 5xx page fails; the status 400 is named without a MUST (INFO). RFC \
                        7009 §2.2.1 and RFC 8628 §3.2 use the same answers.",
            aimed_at: &["error-500-on-bad-input"],
            client: None,
            server: server!(false, server_oauth_bad_input, oauth),
        },
        Case {
            id: "roger/sec10/server-no-5xx-for-bad-input",
            area: Area::BadInput,
            requirement:
                "Malformed API requests (broken or wrongly typed JSON, oversized bodies, bad path segments) get a \
                          4xx problem+json answer, never a 5xx.",
            sources: &["PROTOCOL §10", "RFC 6749 §5.2", "R-DATA-1"],
            level: Level::Should,
            basis: Basis::Roger,
            rationale: "The API and its RFC 9457 problem answers are Roger's (docs/protocol.md §3.1); the OAuth \
                        endpoints' error answers have their own RFC case.",
            aimed_at: &["error-500-on-bad-input"],
            client: None,
            server: server!(false, server_bad_input),
        },
    ]
}

/// One malformed request: method, URL, content type, `Authorization`, body.
type BadRequest<'a> = (&'a str, String, Option<&'a str>, Option<&'a str>, Vec<u8>);

/// Sends each malformed request and judges its answer: a 4xx in the endpoint's error shape (an OAuth `error`
/// member for `/oauth/` endpoints, `application/problem+json` for the API); `any_4xx` accepts any 4xx body (an
/// oversized request may be refused before the endpoint reads it). The problems, and the answers that carried an
/// OAuth error member with a success status.
async fn judge_bad_requests(
    env: &mut ServerEnv,
    cases: Vec<(BadRequest<'_>, bool)>,
) -> Result<(Vec<String>, Vec<String>), CaseError> {
    let mut bad = Vec::new();
    let mut notes = Vec::new();
    for ((method, url, ct, auth, body), any_4xx) in cases {
        let mut b = http::Request::builder().method(method).uri(url);
        if let Some(ct) = ct {
            b = b.header(http::header::CONTENT_TYPE, ct);
        }
        if let Some(a) = auth {
            b = b.header(http::header::AUTHORIZATION, a);
        }
        let e = env.send(b.body(body).map_err(|e| CaseError::Kit(e.to_string()))?).await?;
        let shape_ok = any_4xx
            || if e.path.starts_with("/api/") {
                e.resp_headers
                    .get(http::header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .is_some_and(|v| v.starts_with("application/problem+json"))
            } else {
                e.oauth_error().is_some()
            };
        match e.status {
            Some(s) if (400..500).contains(&s) && shape_ok => {}
            // An OAuth error member with another status than 4xx: the REQUIRED member is there (RFC 6749 §5.2
            // names the status without a MUST).
            Some(s) if s < 400 && shape_ok && !e.path.starts_with("/api/") => {
                notes.push(format!("{} {} → {s} with an OAuth error member", e.method, e.path))
            }
            other => bad.push(format!(
                "{} {} → {:?}{}",
                e.method,
                e.path,
                other,
                if shape_ok { "" } else { " (not the endpoint's error shape)" }
            )),
        }
    }
    Ok((bad, notes))
}

fn bad_finding((bad, notes): &(Vec<String>, Vec<String>)) -> Finding {
    match (bad.first(), notes.first()) {
        (Some(b), _) => Finding::Broken(format!(
            "{b}{}",
            if bad.len() > 1 { format!(" (and {} more)", bad.len() - 1) } else { String::new() }
        )),
        (None, Some(_)) => Finding::Info(format!(
            "every malformed request got an OAuth error member, but not with a 4xx status: {}",
            notes.join("; ")
        )),
        (None, None) => Finding::Holds,
    }
}

async fn server_oauth_bad_input(env: &mut ServerEnv) -> Result<Finding, CaseError> {
    let token = env.endpoints.token.clone();
    let client = env.client_id();
    let form = "application/x-www-form-urlencoded";
    let json = "application/json";
    let mut cases: Vec<(BadRequest, bool)> = vec![
        (("POST", token.clone(), Some(json), None, b"{\"grant_type\":\"password\"}".to_vec()), false),
        (("POST", token.clone(), Some(form), None, Vec::new()), false),
        (("POST", token.clone(), Some(form), None, format!("grant_type=dance&client_id={client}").into_bytes()), false),
        (("POST", token.clone(), Some(form), None, b"grant_type=%FF%FE&client_id=%".to_vec()), false),
        (("POST", token, Some(form), None, vec![b'a'; 70 * 1024]), true),
    ];
    if !env.endpoints.device_authorization.is_empty() {
        let url = env.endpoints.device_authorization.clone();
        cases.push((("POST", url, Some(form), None, b"client_id=&scope=%%%".to_vec()), false));
    }
    if !env.endpoints.revocation.is_empty() {
        let url = env.endpoints.revocation.clone();
        cases.push((("POST", url, Some("text/plain"), None, b"\x00\x01\x02".to_vec()), false));
    }
    let bad = judge_bad_requests(env, cases).await?;
    Ok(bad_finding(&bad))
}

async fn server_bad_input(env: &mut ServerEnv) -> Result<Finding, CaseError> {
    let api = env.endpoints.api.clone();
    let app = env.app_token(Actor::User).await?;
    let bearer = format!("Bearer {app}");
    let json = "application/json";
    let big = vec![b'a'; 70 * 1024];
    let cases: Vec<BadRequest> = vec![
        ("POST", format!("{api}/api/v1/codes/approve"), Some(json), Some(bearer.as_str()), b"{\"user_code\":".to_vec()),
        (
            "POST",
            format!("{api}/api/v1/codes/approve"),
            Some(json),
            Some(bearer.as_str()),
            b"{\"user_code\":12}".to_vec(),
        ),
        ("GET", format!("{api}/api/v1/codes/%FF%00"), None, Some(bearer.as_str()), Vec::new()),
        ("POST", format!("{api}/api/v1/jobs/nope/release"), Some(json), Some(bearer.as_str()), b"[]".to_vec()),
        ("POST", format!("{api}/api/v1/jobs"), Some(json), Some(bearer.as_str()), big),
    ];
    let bad = judge_bad_requests(env, cases.into_iter().map(|c| (c, false)).collect()).await?;
    Ok(bad_finding(&bad))
}
