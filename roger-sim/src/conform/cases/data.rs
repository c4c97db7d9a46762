//! Documents and secrets (R-DATA-1, R-SEC-1): documents travel only between the drive and the MFP; the MFP's log
//! never holds a credential.

use roger_proto::server::drive::Folder;

use super::super::vault::contains;
use super::observe;
use super::prelude::*;

pub(super) fn cases() -> Vec<Case> {
    vec![
        Case {
            id: "roger/R-DATA-1/release-fetches-from-drive",
            area: Area::Data,
            requirement:
                "A released drive job is fetched from the drive's pre-authorised URL, never through the API, and \
                          its result is reported to the server.",
            sources: &["R-DATA-1", "PROTOCOL §9"],
            level: Level::Must,
            aimed_at: &[],
            client: client!(defaults, release_from_drive),
            server: None,
        },
        Case {
            id: "roger/R-DATA-1/scan-uploads-to-drive",
            area: Area::Data,
            requirement:
                "A scan is uploaded to the drive's upload URL, never to the API, and its completion is reported \
                          to the server.",
            sources: &["R-DATA-1", "PROTOCOL §9"],
            level: Level::Must,
            aimed_at: &[],
            client: client!(defaults, scan_to_drive),
            server: None,
        },
        Case {
            id: "roger/R-SEC-1/no-credentials-in-shim-log",
            area: Area::Data,
            requirement:
                "The MFP's log (the shim's stderr) never holds a token, device code, ticket, pre-authorised URL, \
                          PIN or password, whatever happened.",
            sources: &["R-SEC-1", "R-PWD-1"],
            level: Level::Must,
            aimed_at: &["log-tokens"],
            client: client!(six_second_tokens, log_clean),
            server: None,
        },
    ]
}

fn six_second_tokens(s: &mut ClientSetup) {
    s.settings.access_token_secs = 6;
}

/// Whether any API request body holds `marker` or is larger than the API's 64 KiB limit.
fn api_bodies_clean(ex: &[Exchange], marker: Option<&str>) -> Result<(), String> {
    for e in ex.iter().filter(|e| e.route == "api") {
        if marker.is_some_and(|m| contains(&e.body, m.as_bytes())) {
            return Err(format!("exchange #{}: {} {} carried document content to the API", e.seq, e.method, e.path));
        }
        if e.body.len() > 64 * 1024 {
            return Err(format!("exchange #{}: {} {} sent {} bytes to the API", e.seq, e.method, e.path, e.body.len()));
        }
    }
    Ok(())
}

async fn release_from_drive(env: &mut ClientEnv) -> Result<Finding, CaseError> {
    env.connect().await?;
    if !env.pin(Who::Alice).await? {
        return Err(CaseError::Peer("the PIN login was not accepted".into()));
    }
    let file = env.tenant.job_file.clone();
    let Some((job, _)) = env.jobs().await?.into_iter().find(|(_, n)| *n == file) else {
        return Ok(Finding::Broken(format!("the panel does not list alice's queued job {file}")));
    };
    let printed = env.release(&job).await?;
    let ex = env.exchanges();
    let drive: Vec<&Exchange> = ex.iter().filter(|e| e.route == "drive").collect();
    let results: Vec<&Exchange> = ex.iter().filter(|e| e.method == "POST" && e.path.ends_with("/result")).collect();
    env.note_exchanges(drive.iter().chain(results.iter()).copied(), 6);
    if let Err(why) = api_bodies_clean(&ex, Some(&env.tenant.document_marker)) {
        return Ok(Finding::Broken(why));
    }
    let marker = env.tenant.document_marker.clone();
    if !drive.iter().any(|e| e.method == "GET" && e.delivered_ok() && contains(&e.resp_body, marker.as_bytes())) {
        return Ok(Finding::Broken("the document was not fetched from the drive".into()));
    }
    if !printed {
        return Ok(Finding::Broken("the shim reports the job as not printed".into()));
    }
    let state = env.server().shared.read(|core, _| core.state().jobs.get(&job).map(|j| j.state));
    env.note(EvidenceSource::Server, format!("job state at the server: {state:?}"));
    Ok(Finding::check(!results.is_empty() && state == Some(roger_proto::server::model::JobState::Printed), || {
        format!("the result was not reported (result requests: {}, job state {state:?})", results.len())
    }))
}

async fn scan_to_drive(env: &mut ClientEnv) -> Result<Finding, CaseError> {
    env.connect().await?;
    if !env.pin(Who::Alice).await? {
        return Err(CaseError::Peer("the PIN login was not accepted".into()));
    }
    let uploaded = env.scan("pdf-300").await?;
    let ex = env.exchanges();
    let puts: Vec<&Exchange> = ex.iter().filter(|e| e.route == "drive" && e.method == "PUT").collect();
    let completes: Vec<&Exchange> = ex
        .iter()
        .filter(|e| e.method == "POST" && e.path.starts_with("/api/v1/scans/") && e.path.ends_with("/complete"))
        .collect();
    env.note_exchanges(puts.iter().chain(completes.iter()).copied(), 6);
    if let Err(why) = api_bodies_clean(&ex, None) {
        return Ok(Finding::Broken(why));
    }
    let alice = format!("usr_{}_{}", super::super::env::TENANT, env.user(Who::Alice).name);
    let files = env.server().shared.drive.files(&alice, Folder::Scan);
    env.note(EvidenceSource::Server, format!("{} file(s) in alice's drive Scan folder", files.len()));
    if !uploaded || puts.is_empty() || files.is_empty() {
        return Ok(Finding::Broken(format!(
            "the scan did not reach the drive (shim: uploaded {uploaded}; drive PUTs {}; files {})",
            puts.len(),
            files.len()
        )));
    }
    Ok(Finding::check(completes.iter().any(|e| e.delivered_ok()), || "the scan's completion was not reported".into()))
}

async fn log_clean(env: &mut ClientEnv) -> Result<Finding, CaseError> {
    env.connect().await?;
    env.qr_session(Who::Alice).await?;
    env.pin(Who::Alice).await?;
    let jobs = env.jobs().await?;
    if let Some((id, _)) = jobs.first() {
        let id = id.clone();
        env.release(&id).await?;
    }
    env.logout().await?;
    // Let a few refreshes happen too.
    observe(Duration::from_secs(7)).await;
    let stderr = env.stderr();
    let vault = env.vault();
    env.note(
        EvidenceSource::Stderr,
        format!(
            "{} bytes of stderr scanned for {} secrets handed out or typed",
            stderr.len(),
            vault.secrets().iter().filter(|s| s.credential).count()
        ),
    );
    let found = vault.credentials_in(stderr.as_bytes());
    if found.is_empty() {
        return Ok(Finding::Holds);
    }
    let mut kinds: Vec<&str> = found.iter().map(|s| s.kind).collect();
    kinds.sort_unstable();
    kinds.dedup();
    let labels: Vec<String> = found.iter().take(4).map(|s| s.label()).collect();
    Ok(Finding::Broken(format!("the shim's stderr holds {} ({})", kinds.join(", "), labels.join(", "))))
}

pub(super) fn server_cases() -> Vec<Case> {
    vec![
        Case {
            id: "roger/R-SEC-1/server-no-store",
            area: Area::Data,
            requirement:
                "Every answer that carries a credential (device codes, tokens) has `Cache-Control: no-store` and \
                          `Pragma: no-cache`.",
            sources: &["R-SEC-1", "RFC 6749 §5.1"],
            level: Level::Must,
            aimed_at: &["no-no-store"],
            client: None,
            server: server!(false, server_no_store),
        },
        Case {
            id: "roger/R-TOK-3/server-stores-only-hashes",
            area: Area::Data,
            requirement: "The server's store holds no plaintext token, device code, password or PIN: secrets only as \
                          hashes.",
            sources: &["R-TOK-3", "R-PWD-2", "R-DATA-2"],
            level: Level::Must,
            aimed_at: &["plaintext-secret"],
            client: None,
            server: server!(false, server_hashes),
        },
    ]
}

async fn server_no_store(env: &mut ServerEnv) -> Result<Finding, CaseError> {
    let d = env.register().await?;
    env.refresh(&d.refresh).await?;
    let credential = |e: &&Exchange| {
        e.delivered_ok() && e.json().is_some_and(|v| v.get("access_token").is_some() || v.get("device_code").is_some())
    };
    let carrying: Vec<Exchange> = env.exchanges().iter().filter(credential).cloned().collect();
    if carrying.len() < 3 {
        return Ok(Finding::Broken(format!("only {} credential answers were seen", carrying.len())));
    }
    Ok(match carrying.iter().find(|e| !super::no_store(e)) {
        Some(e) => Finding::Broken(format!(
            "exchange #{}: {} {} carries a credential without Cache-Control: no-store and Pragma: no-cache",
            e.seq, e.method, e.path
        )),
        None => Finding::Holds,
    })
}

async fn server_hashes(env: &mut ServerEnv) -> Result<Finding, CaseError> {
    let d = env.register().await?;
    env.refresh(&d.refresh).await?;
    // A PIN login, so the PIN went over the wire too.
    let user = env.account(Actor::User).clone();
    let req = roger_proto::token::TokenRequest::Password {
        username: user.username.clone(),
        password: roger_proto::secret::Password::new(user.pin.clone().unwrap_or_default()),
        scope: "roger.release roger.print roger.scan".into(),
        client_id: env.client_id(),
    };
    let bearer = roger_proto::secret::AccessToken::new(d.access.clone());
    let req = req.to_http(&env.endpoints.token, Some(&bearer)).map_err(|e| CaseError::Kit(e.to_string()))?;
    env.send(req).await?;
    let store = env.store().await?;
    // Long secrets the server handed out (tokens, device codes): anywhere in the store.
    let vault = env.vault().clone();
    let long: Vec<_> = vault.credentials_in(&store).into_iter().filter(|s| s.value.len() >= 16).collect();
    if let Some(s) = long.first() {
        return Ok(Finding::Broken(format!("the store holds a plaintext {} ({})", s.kind, s.label())));
    }
    // The accounts' passwords and PINs are short: look for them as whole JSON strings, not as substrings.
    let accounts: Vec<(String, &'static str, String)> = std::iter::once(env.account(Actor::Admin))
        .chain(env.accounts().users.iter())
        .flat_map(|a| {
            [(a.pin.clone(), "PIN"), (a.password.clone(), "password")]
                .into_iter()
                .filter_map(|(v, k)| v.map(|v| (v, k, a.username.clone())))
                .collect::<Vec<_>>()
        })
        .collect();
    for (secret, kind, user) in accounts {
        if contains(&store, format!("\"{secret}\"").as_bytes()) {
            return Ok(Finding::Broken(format!("the store holds the {kind} of {user} in plaintext")));
        }
    }
    Ok(Finding::Holds)
}
