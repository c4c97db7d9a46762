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
            aimed_at: &["ignore-issuer"],
            client: client!(defaults, wrong_issuer),
            server: None,
        },
        Case {
            id: "roger/R-DISC-1/ignore-unknown-members",
            area: Area::Discovery,
            requirement: "The MFP ignores JSON members it does not know in discovery, metadata, OAuth and API answers \
                          (objects, arrays and nulls alike) and proceeds exactly as without them.",
            sources: &["R-DISC-1", "RFC 6749 §5.1"],
            level: Level::Must,
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
    Ok(Finding::check(rewritten >= 4 && panel.user.as_deref() == Some(env.user(Who::Alice).name.as_str()), || {
        format!(
            "the flow did not complete as without extra members ({rewritten} rewritten answers, user {:?})",
            panel.user
        )
    }))
}

pub(super) fn server_cases() -> Vec<Case> {
    vec![Case {
        id: "rfc8414/3.3/server-metadata",
        area: Area::Discovery,
        requirement:
            "The server's metadata names an `issuer` identical to the API base, places every endpoint on that \
                      origin, and offers the members and values of PROTOCOL.md §2 (S256 only, the four grants, the \
                      `none` and `roger_device_bearer` authentication methods).",
        sources: &["RFC 8414 §3.3", "R-META-1", "RFC 7636 §4.2"],
        level: Level::Must,
        aimed_at: &[],
        client: None,
        server: server!(false, server_metadata),
    }]
}

fn strings(v: &serde_json::Value, key: &str) -> Vec<String> {
    v.get(key)
        .and_then(|a| a.as_array())
        .map(|a| a.iter().filter_map(|x| x.as_str()).map(str::to_owned).collect())
        .unwrap_or_default()
}

async fn server_metadata(env: &mut ServerEnv) -> Result<Finding, CaseError> {
    // The environment already refused a metadata document whose issuer differs (RFC 8414 §3.3); check the rest.
    let m = env.metadata.clone();
    let api = env.endpoints.api.clone();
    let mut problems = Vec::new();
    if m.get("issuer").and_then(|v| v.as_str()) != Some(api.as_str()) {
        problems.push(format!("issuer is {:?}, not {api:?}", m.get("issuer")));
    }
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
    Ok(match problems.first() {
        Some(p) => Finding::Broken(format!(
            "{p}{}",
            if problems.len() > 1 { format!(" (and {} more)", problems.len() - 1) } else { String::new() }
        )),
        None => Finding::Holds,
    })
}
