//! Discovery and authorization-server metadata (PROTOCOL.md §2, RFC 8414): the MFP refuses metadata whose issuer
//! is not its API base (R-META-1), and ignores members it does not know (R-DISC-1).

use super::prelude::*;

pub(super) fn cases() -> Vec<Case> {
    vec![
        Case {
            id: "rfc8414/3.3/refuse-wrong-issuer",
            area: Area::Discovery,
            requirement:
                "The MFP refuses metadata whose `issuer` is not identical to the API base it was formed from, \
                          and sends no request to any endpoint named in it.",
            sources: &["RFC 8414 §3.3", "R-META-1"],
            level: Level::Must,
            basis: Basis::Rfc,
            rationale: "RFC 8414 §3.3: when the issuer differs from the identifier the metadata URL was formed \
                        from, \"the data contained in the response MUST NOT be used\".",
            aimed_at: &["ignore-issuer"],
            client: client!(defaults, wrong_issuer),
            server: None,
        },
        Case {
            id: "rfc6749/5.1/ignore-unknown-token-members",
            area: Area::Discovery,
            requirement: "The MFP ignores members it does not know in token answers (objects, arrays and nulls \
                          alike) and proceeds exactly as without them: it registers, refreshes and opens a session.",
            sources: &["RFC 6749 §5.1", "R-DISC-1"],
            level: Level::Must,
            basis: Basis::Rfc,
            rationale: "RFC 6749 §5.1: \"The client MUST ignore unrecognized value names in the response.\" Only \
                        token answers carry the extra members here, so a failure is this MUST.",
            aimed_at: &[],
            client: client!(unknown_token_members_setup, unknown_members),
            server: None,
        },
        Case {
            id: "roger/R-DISC-1/ignore-unknown-members",
            area: Area::Discovery,
            requirement: "The MFP ignores JSON members it does not know in discovery, metadata, OAuth and API answers \
                          (objects, arrays and nulls alike) and proceeds exactly as without them.",
            sources: &["R-DISC-1", "RFC 6749 §5.1"],
            level: Level::Should,
            basis: Basis::Roger,
            rationale: "R-DISC-1 extends RFC 6749 §5.1's rule for token answers to discovery, metadata, device \
                        authorization and API answers; RFC 8414 §2 and RFC 9457 §3.2 allow extension members but do \
                        not bind a client in words (the token-answer MUST has its own case).",
            aimed_at: &[],
            client: client!(unknown_members_setup, unknown_members),
            server: None,
        },
    ]
}

/// Paths an MFP may fetch before it has trusted the metadata.
fn before_trust(e: &Exchange) -> bool {
    e.method == "GET" && (e.path == "/regions" || e.path == roger_proto::metadata::WELL_KNOWN_PATH)
}

async fn wrong_issuer(env: &mut ClientEnv) -> Result<Finding, CaseError> {
    // The same server under another name: a client that ignored the mismatch would reach it (the certificate
    // covers `localhost`), so any use of the metadata shows on the wire.
    let api = env.api();
    let wrong = api.replacen("127.0.0.1", "localhost", 1);
    env.set_rewrites(Rewrites { issuer: Some(wrong.clone()), ..Rewrites::default() });
    env.note(EvidenceSource::Kit, format!("metadata `issuer` rewritten to {wrong} (the MFP was given {api})"));
    let started = env.start_shim_answer().await?;
    if started.is_ok() {
        // Registering needs the metadata's endpoints: the MFP must refuse (an error) or show nothing.
        let reg = env.ask(&roger_proto::shim::ShimRequest::Register).await?;
        if reg.is_ok() && reg.fields().get("qr").and_then(|v| v.as_str()).is_some_and(|q| !q.is_empty()) {
            env.note(EvidenceSource::Shim, "the MFP reported a registration QR despite the wrong issuer");
        }
    }
    super::observe(Duration::from_secs(2)).await;
    let ex = env.exchanges();
    let fetched_metadata = ex.iter().any(|e| e.path == roger_proto::metadata::WELL_KNOWN_PATH);
    let used: Vec<&Exchange> = ex.iter().filter(|e| !before_trust(e)).collect();
    env.note_exchanges(ex.iter(), 20);
    if !fetched_metadata {
        return Ok(Finding::Broken(
            "the MFP never fetched the metadata, so its issuer check could not be shown".into(),
        ));
    }
    Ok(match used.first() {
        Some(e) => Finding::Broken(format!(
            "after metadata with issuer {wrong} the MFP sent {} request(s) to its endpoints, first {} {}",
            used.len(),
            e.method,
            e.path
        )),
        None => Finding::Holds,
    })
}

fn unknown_members_setup(s: &mut ClientSetup) {
    s.rewrites.unknown_members = true;
}

fn unknown_token_members_setup(s: &mut ClientSetup) {
    s.rewrites.unknown_members = true;
    s.rewrites.unknown_members_path = Some("/oauth/token".into());
}

async fn unknown_members(env: &mut ClientEnv) -> Result<Finding, CaseError> {
    env.connect().await?;
    let accepted = env.pin(Who::Alice).await?;
    if !accepted {
        return Ok(Finding::Broken("the PIN login failed while answers carried extra members".into()));
    }
    let panel = env.expect_state(PanelState::Session, STATE_WAIT).await?;
    env.logout().await?;
    let ex = env.exchanges();
    let rewritten = ex.iter().filter(|e| e.rewritten.contains(&"unknown members")).count();
    env.note(
        EvidenceSource::Wire,
        format!("{rewritten} answers carried the extra members `x_conform_extension` (object with array) and `x_conform_null`"),
    );
    let enough = if env.recorder().rewrites().unknown_members_path.is_some() { 2 } else { 4 };
    Ok(Finding::check(rewritten >= enough && panel.user.as_deref() == Some(env.user(Who::Alice).name.as_str()), || {
        format!(
            "the flow did not complete as without extra members ({rewritten} rewritten answers, user {:?})",
            panel.user
        )
    }))
}

pub(super) fn server_cases() -> Vec<Case> {
    vec![
        Case {
            id: "rfc8414/3.3/server-metadata",
            area: Area::Discovery,
            requirement: "The server's metadata names an `issuer` identical to the identifier its URL was formed \
                          from, and carries the REQUIRED members `token_endpoint` and `response_types_supported`.",
            sources: &["RFC 8414 §3.3", "R-META-1"],
            level: Level::Must,
            basis: Basis::Rfc,
            rationale: "RFC 8414 §3.3: \"The issuer value returned MUST be identical to the authorization \
                        server's issuer identifier value\"; RFC 8414 §2 makes `issuer`, `token_endpoint` and \
                        `response_types_supported` REQUIRED. Endpoints on other origins are allowed and only noted.",
            aimed_at: &[],
            client: None,
            server: server!(false, server_metadata, oauth),
        },
        Case {
            id: "roger/R-META-1/server-metadata-roger-members",
            area: Area::Discovery,
            requirement:
                "The metadata places every endpoint on the issuer's origin and offers the members and values of \
                          docs/protocol.md §3.3: `response_types_supported` [\"code\"], the four grants, S256 only, \
                          the `none` and `roger_device_bearer` authentication methods, the scopes and \
                          `roger_api_version`.",
            sources: &["R-META-1", "RFC 7636 §4.2", "RFC 8414 §3.3"],
            level: Level::Should,
            basis: Basis::Roger,
            rationale: "RFC 8414 §2 lets endpoints sit on any origin and makes these members OPTIONAL; RFC 7636 \
                        allows `plain`. Roger's own metadata profile is stricter.",
            aimed_at: &[],
            client: None,
            server: server!(false, server_metadata_roger),
        },
    ]
}

fn strings(v: &serde_json::Value, key: &str) -> Vec<String> {
    v.get(key)
        .and_then(|a| a.as_array())
        .map(|a| a.iter().filter_map(|x| x.as_str()).map(str::to_owned).collect())
        .unwrap_or_default()
}

fn first_of(problems: &[String]) -> Finding {
    match problems.first() {
        Some(p) => Finding::Broken(format!(
            "{p}{}",
            if problems.len() > 1 { format!(" (and {} more)", problems.len() - 1) } else { String::new() }
        )),
        None => Finding::Holds,
    }
}

/// Judges a metadata document against RFC 8414 §2 and §3.3: the problems, and what was merely noted.
fn judge_rfc_metadata(m: &serde_json::Value, issuer: &str) -> (Vec<String>, Vec<String>) {
    let mut problems = Vec::new();
    let mut notes = Vec::new();
    match m.get("issuer").and_then(|v| v.as_str()) {
        Some(i) if i == issuer => {}
        other => problems.push(format!("issuer is {other:?}, not {issuer:?} (RFC 8414 §3.3)")),
    }
    for key in ["token_endpoint"] {
        if m.get(key).and_then(|v| v.as_str()).is_none_or(str::is_empty) {
            problems.push(format!("{key} is missing (REQUIRED, RFC 8414 §2)"));
        }
    }
    if m.get("response_types_supported").and_then(|v| v.as_array()).is_none() {
        problems.push("response_types_supported is missing (REQUIRED, RFC 8414 §2)".into());
    }
    let origin = |u: &str| url::Url::parse(u).ok().map(|u| u.origin().ascii_serialization());
    for key in ["authorization_endpoint", "token_endpoint", "device_authorization_endpoint", "revocation_endpoint"] {
        if let Some(u) = m.get(key).and_then(|v| v.as_str()) {
            if origin(u) != origin(issuer) {
                notes.push(format!("{key} is on another origin than the issuer (RFC 8414 §2 allows it)"));
            }
        }
    }
    (problems, notes)
}

async fn server_metadata(env: &mut ServerEnv) -> Result<Finding, CaseError> {
    // The environment already refused a metadata document whose issuer differs (RFC 8414 §3.3); check the rest.
    let m = env.metadata.clone();
    let issuer = env.issuer.clone();
    let (problems, notes) = judge_rfc_metadata(&m, &issuer);
    for n in notes {
        env.note(EvidenceSource::Kit, n);
    }
    Ok(first_of(&problems))
}

async fn server_metadata_roger(env: &mut ServerEnv) -> Result<Finding, CaseError> {
    let m = env.metadata.clone();
    let api = env.endpoints.api.clone();
    let mut problems = Vec::new();
    for key in ["authorization_endpoint", "token_endpoint", "device_authorization_endpoint", "revocation_endpoint"] {
        match m.get(key).and_then(|v| v.as_str()) {
            Some(url) if url.starts_with(&format!("{api}/")) => {}
            Some(url) => problems.push(format!("{key} {url} is not on the issuer's origin")),
            None => problems.push(format!("{key} is missing")),
        }
    }
    if strings(&m, "response_types_supported") != ["code"] {
        problems.push("response_types_supported is not [\"code\"]".into());
    }
    let grants = strings(&m, "grant_types_supported");
    for g in ["authorization_code", roger_proto::metadata::GRANT_DEVICE_CODE, "password", "refresh_token"] {
        if !grants.iter().any(|x| x == g) {
            problems.push(format!("grant_types_supported lacks {g}"));
        }
    }
    if strings(&m, "code_challenge_methods_supported") != ["S256"] {
        problems.push("code_challenge_methods_supported is not [\"S256\"] (RFC 7636 §7.2: no plain)".into());
    }
    for key in ["token_endpoint_auth_methods_supported", "revocation_endpoint_auth_methods_supported"] {
        let methods = strings(&m, key);
        if !methods.iter().any(|x| x == "none") || !methods.iter().any(|x| x == "roger_device_bearer") {
            problems.push(format!("{key} lacks none or roger_device_bearer"));
        }
    }
    if strings(&m, "scopes_supported").is_empty() {
        problems.push("scopes_supported is missing".into());
    }
    if m.get("roger_api_version").and_then(|v| v.as_str()).is_none() {
        problems.push("roger_api_version is missing".into());
    }
    Ok(first_of(&problems))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// RFC 8414 in server mode: only the RFC's MUSTs fail; other origins are noted.
    #[test]
    fn rfc_metadata_judgement() {
        let i = "https://as.example";
        let good = json!({"issuer": i, "token_endpoint": "https://as.example/token", "response_types_supported": []});
        assert_eq!(judge_rfc_metadata(&good, i), (vec![], vec![]));
        let google = json!({"issuer": i, "token_endpoint": "https://oauth2.example/token",
                            "response_types_supported": ["code"]});
        let (p, n) = judge_rfc_metadata(&google, i);
        assert!(p.is_empty() && n.len() == 1, "{p:?} {n:?}");
        let bad = json!({"issuer": "https://as.example/", "response_types_supported": ["code"]});
        let (p, _) = judge_rfc_metadata(&bad, i);
        assert_eq!(p.len(), 2, "{p:?}");
    }
}
