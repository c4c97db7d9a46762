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
            level: Level::Should,
            basis: Basis::Roger,
            rationale:
                "Documents between drive and MFP only, and the jobs API, are Roger's (R-DATA-1, docs/protocol.md \
                        §3.13); no RFC speaks of them.",
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
            level: Level::Should,
            basis: Basis::Roger,
            rationale:
                "Documents between drive and MFP only, and the jobs API, are Roger's (R-DATA-1, docs/protocol.md \
                        §3.13); no RFC speaks of them.",
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
            basis: Basis::Rfc,
            rationale:
                "RFC 6749 §10.3 and §10.4: access and refresh tokens \"MUST be kept confidential in transit and \
                        storage\", and §4.3.1: the PIN MUST be discarded; a log is storage whoever reads logs shares. \
                        Device codes, tickets and broker passwords in the log are R-SEC-1's (INFO).",
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
    // RFC 6749 §10.3, §10.4 and §4.3.1 speak of tokens and the user's credentials; the rest is R-SEC-1's.
    let rfc = |kind: &str| matches!(kind, "access token" | "refresh token" | "PIN" | "password");
    let describe = |list: Vec<&&super::super::vault::Secret>| {
        let mut kinds: Vec<&str> = list.iter().map(|s| s.kind).collect();
        kinds.sort_unstable();
        kinds.dedup();
        let labels: Vec<String> = list.iter().take(4).map(|s| s.label()).collect();
        format!("{} ({})", kinds.join(", "), labels.join(", "))
    };
    let (tokens, others): (Vec<_>, Vec<_>) = found.iter().partition(|s| rfc(s.kind));
    if !tokens.is_empty() {
        return Ok(Finding::Broken(format!("the shim's stderr holds {}", describe(tokens))));
    }
    Ok(Finding::Info(format!(
        "no token, PIN or password in the log, but {} (R-SEC-1, a Roger choice)",
        describe(others)
    )))
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
            basis: Basis::Rfc,
            rationale: "RFC 6749 §5.1: the server \"MUST include the HTTP Cache-Control response header field with a \
                        value of no-store in any response containing tokens, credentials, or other sensitive \
                        information\". Its Pragma: no-cache is INFO when missing (RFC 9111 §5.4 deprecates Pragma).",
            aimed_at: &["no-no-store"],
            client: None,
            server: server!(false, server_no_store, oauth),
        },
        Case {
            id: "roger/R-TOK-3/server-stores-only-hashes",
            area: Area::Data,
            requirement: "The server's store holds no plaintext token, device code, password or PIN: secrets only as \
                          hashes.",
            sources: &["R-TOK-3", "R-PWD-2", "R-DATA-2"],
            level: Level::Should,
            basis: Basis::Roger,
            rationale: "Storing secrets only as hashes is R-TOK-3's, R-PWD-2's and R-DATA-2's; the RFCs ask for \
                        confidentiality, not for a storage form.",
            aimed_at: &["plaintext-secret"],
            client: None,
            server: server!(false, server_hashes),
        },
        Case {
            id: "roger/sec9/server-release-idempotent",
            area: Area::Data,
            requirement:
                "Repeating a release at the printer with the same `Idempotency-Key` returns an equivalent answer \
                          (the same kind of hand-over for the same job), and the job is released once: no longer \
                          queued, listed once among the released jobs.",
            sources: &["PROTOCOL §9"],
            level: Level::Should,
            basis: Basis::Roger,
            rationale: "The jobs API is Roger's (docs/protocol.md §3.13); no RFC speaks of it.",
            aimed_at: &[],
            client: None,
            server: server!(false, server_release_idempotent),
        },
        Case {
            id: "roger/sec9/server-release-foreign-job-404",
            area: Area::Data,
            requirement: "Releasing another user's job at the printer is answered 404.",
            sources: &["PROTOCOL §9", "PROTOCOL §10"],
            level: Level::Should,
            basis: Basis::Roger,
            rationale: "The jobs API is Roger's (docs/protocol.md §3.13); no RFC speaks of it.",
            aimed_at: &[],
            client: None,
            server: server!(false, server_release_foreign),
        },
        Case {
            id: "roger/sec9/server-result-idempotent-then-409",
            area: Area::Data,
            requirement:
                "Reporting a released job `printed` twice is accepted both times, and releasing the printed job \
                          again is answered 409.",
            sources: &["PROTOCOL §9"],
            level: Level::Should,
            basis: Basis::Roger,
            rationale: "The jobs API is Roger's (docs/protocol.md §3.13); no RFC speaks of it.",
            aimed_at: &[],
            client: None,
            server: server!(false, server_result_idempotent),
        },
        Case {
            id: "roger/sec9/server-ticket-redeems-once",
            area: Area::Data,
            requirement:
                "A desktop job's release ticket redeems at the printer it was released to, for that job; another \
                          printer's redemption is refused, and so is a second redemption after the 30 s lost-answer \
                          grace.",
            sources: &["PROTOCOL §9"],
            level: Level::Should,
            basis: Basis::Roger,
            rationale: "The jobs API is Roger's (docs/protocol.md §3.13); no RFC speaks of it.",
            aimed_at: &[],
            client: None,
            server: server!(false, server_ticket_once),
        },
    ]
}

/// How the server hands a released job over (PROTOCOL.md §9): `document` (a drive URL) or `desktop` (a ticket).
fn hand_over_kind(answer: &serde_json::Value) -> Option<&'static str> {
    if answer.get("document").and_then(|d| d.get("url")).is_some_and(|u| u.is_string()) {
        Some("document")
    } else if answer.get("desktop").and_then(|d| d.get("ticket")).is_some_and(|t| t.is_string()) {
        Some("desktop")
    } else {
        None
    }
}

/// How often `job_id` appears in a `GET /api/v1/jobs` answer (`{"jobs":[{"id"…}]}`).
fn listed(list: &serde_json::Value, job_id: &str) -> usize {
    list.get("jobs")
        .and_then(|j| j.as_array())
        .map_or(0, |jobs| jobs.iter().filter(|j| j.get("id").and_then(|i| i.as_str()) == Some(job_id)).count())
}

/// A status and JSON body, as the jobs judgements read them.
type Seen = (Option<u16>, Option<serde_json::Value>);

/// Judges a release repeated with the same key: both answers 200 with the same kind of hand-over, the job not
/// queued any more, and (when the server lists released jobs) listed once among them.
fn judge_repeat(first: &Seen, second: &Seen, queued: &Seen, released: &Seen, job_id: &str) -> Result<String, String> {
    let kind = |s: &Seen| s.1.as_ref().and_then(hand_over_kind);
    if first.0 != Some(200) || kind(first).is_none() {
        return Err(format!("the first release was answered {:?} without a document or desktop hand-over", first.0));
    }
    if second.0 != first.0 || kind(second) != kind(first) {
        return Err(format!(
            "the repeated release (same Idempotency-Key) was answered {:?} with a {:?} hand-over, the first {:?} \
             with a {:?} one",
            second.0,
            kind(second),
            first.0,
            kind(first)
        ));
    }
    match queued {
        (Some(200), Some(list)) if listed(list, job_id) == 0 => {}
        (Some(200), Some(_)) => return Err("the released job is still listed as queued".into()),
        (status, _) => return Err(format!("the list of queued jobs was answered {status:?}")),
    }
    match released {
        (Some(200), Some(list)) => match listed(list, job_id) {
            1 => Ok("released once: listed once in state=released".into()),
            n => Err(format!("the job is listed {n} times among the released jobs")),
        },
        (status, _) => Ok(format!("released (not queued); state=released answered {status:?}, so not counted")),
    }
}

/// Judges `printed` reported twice (`results`, the statuses) and a later release (`again`).
fn judge_result_then_release(results: [Option<u16>; 2], again: Option<u16>) -> Result<(), String> {
    let ok = |s: Option<u16>| s.is_some_and(|s| (200..300).contains(&s));
    if !ok(results[0]) {
        return Err(format!("reporting the released job printed was answered {:?}", results[0]));
    }
    if !ok(results[1]) {
        return Err(format!("reporting printed a second time was answered {:?}: not idempotent", results[1]));
    }
    match again {
        Some(409) => Ok(()),
        other => Err(format!("releasing a printed job was answered {other:?}, not 409")),
    }
}

/// Judges the redemptions of one ticket: by its printer (`first`, with the answer's `job_id`), by another printer
/// (`other`), and by its printer again after the grace (`later`).
fn judge_redemptions(first: &Seen, job_id: &str, other: Option<u16>, later: Option<u16>) -> Result<(), String> {
    let redeemed = first.1.as_ref().and_then(|v| v.get("job_id")?.as_str().map(str::to_owned));
    if first.0 != Some(200) {
        return Err(format!("the printer's redemption of its ticket was answered {:?}", first.0));
    }
    if redeemed.as_deref() != Some(job_id) {
        return Err(format!("the redeemed ticket names job {redeemed:?}, not the released one"));
    }
    let success = |s: Option<u16>| s.is_some_and(|s| (200..300).contains(&s));
    match other {
        None => return Err("another printer's redemption of the ticket got no answer".into()),
        Some(s) if success(Some(s)) => {
            return Err(format!("another printer's redemption of the ticket was answered {s}: not bound to a device"))
        }
        Some(_) => {}
    }
    match later {
        None => Err("the second redemption after the 30 s grace got no answer".into()),
        Some(s) if success(Some(s)) => {
            Err(format!("a second redemption after the 30 s grace was answered {s}: the ticket is not one-use"))
        }
        Some(_) => Ok(()),
    }
}

fn seen(e: &Exchange) -> Seen {
    (e.status, e.json())
}

/// A fresh `Idempotency-Key` (random, so reruns against a long-lived server never collide).
fn fresh_key() -> String {
    use rand::RngCore;
    format!("conform-{:016x}", rand::rngs::OsRng.next_u64())
}

/// A desktop job of the first user, queued through the app (PROTOCOL.md §9 `{"desktop":{"file_name","pages"}}`;
/// only metadata, so every fixture allows it): its id.
async fn queue_desktop_job(env: &mut ServerEnv) -> Result<String, CaseError> {
    let token = roger_proto::secret::AccessToken::new(env.app_token(Actor::User).await?);
    let body = roger_proto::api::SubmitJob::Desktop {
        desktop: roger_proto::api::DesktopFile { file_name: format!("conform-{:08x}.pdf", env.seed as u32), pages: 1 },
    };
    let api = env.endpoints.api.clone();
    let req = roger_proto::api::submit_job(&api, &token, &body).map_err(|e| CaseError::Kit(e.to_string()))?;
    let e = env.send(req).await?;
    e.json()
        .filter(|_| e.delivered_ok())
        .and_then(|v| v.get("id")?.as_str().map(str::to_owned))
        .ok_or_else(|| CaseError::Peer(format!("queueing a desktop job through the app was answered {:?}", e.status)))
}

/// `POST /api/v1/jobs/{id}/release` at the printer with `key`.
async fn release(env: &mut ServerEnv, token: &str, job_id: &str, key: &str) -> Result<Exchange, CaseError> {
    let api = env.endpoints.api.clone();
    let token = roger_proto::secret::AccessToken::new(token);
    let req = roger_proto::api::release_job(&api, &token, job_id, key, &Default::default())
        .map_err(|e| CaseError::Kit(e.to_string()))?;
    env.send(req).await
}

/// `POST /api/v1/tickets/redeem` with a printer's device token.
async fn redeem(env: &mut ServerEnv, device_access: &str, ticket: &str) -> Result<Exchange, CaseError> {
    let api = env.endpoints.api.clone();
    let token = roger_proto::secret::AccessToken::new(device_access);
    let req = roger_proto::api::redeem_ticket(&api, &token, &roger_proto::secret::Ticket::new(ticket))
        .map_err(|e| CaseError::Kit(e.to_string()))?;
    env.send(req).await
}

async fn server_release_idempotent(env: &mut ServerEnv) -> Result<Finding, CaseError> {
    let job = queue_desktop_job(env).await?;
    let d = env.register().await?;
    let user = env.pin_login(&d.access, Actor::User).await?;
    let key = fresh_key();
    let first = seen(&release(env, &user, &job, &key).await?);
    let second = seen(&release(env, &user, &job, &key).await?);
    let queued = seen(&env.api_get("/api/v1/jobs?state=queued", &user).await?);
    let released = seen(&env.api_get("/api/v1/jobs?state=released", &user).await?);
    Ok(match judge_repeat(&first, &second, &queued, &released, &job) {
        Ok(how) => {
            env.note(EvidenceSource::Kit, how);
            Finding::Holds
        }
        Err(why) => Finding::Broken(why),
    })
}

async fn server_release_foreign(env: &mut ServerEnv) -> Result<Finding, CaseError> {
    let job = queue_desktop_job(env).await?;
    let d = env.register().await?;
    let other = env.pin_login(&d.access, Actor::Sacrificial).await?;
    let e = release(env, &other, &job, &fresh_key()).await?;
    Ok(Finding::check(e.status == Some(404), || {
        format!("releasing another user's job at the printer was answered {:?}, not 404", e.status)
    }))
}

async fn server_result_idempotent(env: &mut ServerEnv) -> Result<Finding, CaseError> {
    let job = queue_desktop_job(env).await?;
    let d = env.register().await?;
    let user = env.pin_login(&d.access, Actor::User).await?;
    let first = release(env, &user, &job, &fresh_key()).await?;
    if !first.delivered_ok() {
        return Err(CaseError::Peer(format!("the release was answered {:?}", first.status)));
    }
    let api = env.endpoints.api.clone();
    let token = roger_proto::secret::AccessToken::new(user.clone());
    let printed = roger_proto::api::JobResult { state: roger_proto::api::JobOutcome::Printed, pages: 1 };
    let mut results = [None; 2];
    for r in &mut results {
        let req = roger_proto::api::report_job_result(&api, &token, &job, &printed)
            .map_err(|e| CaseError::Kit(e.to_string()))?;
        *r = env.send(req).await?.status;
    }
    let again = release(env, &user, &job, &fresh_key()).await?;
    Ok(match judge_result_then_release(results, again.status) {
        Ok(()) => Finding::Holds,
        Err(why) => Finding::Broken(why),
    })
}

async fn server_ticket_once(env: &mut ServerEnv) -> Result<Finding, CaseError> {
    let job = queue_desktop_job(env).await?;
    let d = env.register().await?;
    let user = env.pin_login(&d.access, Actor::User).await?;
    let answer = release(env, &user, &job, &fresh_key()).await?;
    let ticket = answer
        .json()
        .filter(|_| answer.delivered_ok())
        .and_then(|v| v.get("desktop")?.get("ticket")?.as_str().map(str::to_owned))
        .ok_or_else(|| {
            CaseError::Peer(format!("the release of a desktop job gave no ticket (status {:?})", answer.status))
        })?;
    let first = redeem(env, &d.access, &ticket).await?;
    let redeemed_at = first.at;
    let other_printer = env.register().await?;
    let other = redeem(env, &other_printer.access, &ticket).await?.status;
    let grace = Duration::from_secs(31);
    tokio::time::sleep(grace.saturating_sub(redeemed_at.elapsed())).await;
    env.note(EvidenceSource::Kit, "waited until 31 s after the first redemption (past the 30 s lost-answer grace)");
    let later = redeem(env, &d.access, &ticket).await?.status;
    Ok(match judge_redemptions(&seen(&first), &job, other, later) {
        Ok(()) => Finding::Holds,
        Err(why) => Finding::Broken(why),
    })
}

async fn server_no_store(env: &mut ServerEnv) -> Result<Finding, CaseError> {
    let d = env.register().await?;
    if !d.refresh.is_empty() {
        env.refresh(&d.refresh).await?;
    }
    let credential = |e: &&Exchange| {
        e.delivered_ok() && e.json().is_some_and(|v| v.get("access_token").is_some() || v.get("device_code").is_some())
    };
    let carrying: Vec<Exchange> = env.exchanges().iter().filter(credential).cloned().collect();
    if carrying.len() < 2 {
        return Err(CaseError::Kit(format!("only {} credential answers were seen", carrying.len())));
    }
    if let Some(e) = carrying.iter().find(|e| !super::has_directive(e, "cache-control", "no-store")) {
        return Ok(Finding::Broken(format!(
            "exchange #{}: {} {} carries a credential without Cache-Control: no-store",
            e.seq, e.method, e.path
        )));
    }
    Ok(match carrying.iter().find(|e| !super::has_directive(e, "pragma", "no-cache")) {
        Some(e) => Finding::Info(format!(
            "every credential answer has Cache-Control: no-store; exchange #{} ({} {}) lacks Pragma: no-cache \
             (RFC 6749 §5.1 asks for it, RFC 9111 §5.4 deprecates Pragma)",
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

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// PROTOCOL.md §9 in server mode: the jobs judgements on crafted answers.
    #[test]
    fn repeated_release_judgement() {
        let desk = |t: &str| (Some(200), Some(json!({"desktop": {"ticket": t, "expires_at": "2026-01-01T00:00:00Z"}})));
        let doc = (Some(200), Some(json!({"document": {"url": "https://drive/x", "size": 3}, "options": {}})));
        let empty = (Some(200), Some(json!({"jobs": []})));
        let once = (Some(200), Some(json!({"jobs": [{"id": "job_1"}]})));
        let twice = (Some(200), Some(json!({"jobs": [{"id": "job_1"}, {"id": "job_1"}]})));
        assert!(judge_repeat(&desk("a"), &desk("b"), &empty, &once, "job_1").is_ok(), "a fresh ticket is equivalent");
        assert!(judge_repeat(&doc, &doc, &empty, &(Some(400), None), "job_1").unwrap().contains("not counted"));
        assert!(judge_repeat(&desk("a"), &doc, &empty, &once, "job_1").unwrap_err().contains("repeated release"));
        let conflict = (Some(409), Some(json!({"type": "urn:roger:problem:conflict"})));
        assert!(judge_repeat(&desk("a"), &conflict, &empty, &once, "job_1").is_err());
        assert!(judge_repeat(&conflict, &conflict, &empty, &once, "job_1").unwrap_err().contains("first release"));
        assert!(judge_repeat(&desk("a"), &desk("b"), &once, &once, "job_1").unwrap_err().contains("still listed"));
        assert!(judge_repeat(&desk("a"), &desk("b"), &empty, &twice, "job_1").unwrap_err().contains("2 times"));
    }

    #[test]
    fn result_then_release_judgement() {
        assert_eq!(judge_result_then_release([Some(204), Some(204)], Some(409)), Ok(()));
        assert!(judge_result_then_release([Some(204), Some(409)], Some(409)).unwrap_err().contains("idempotent"));
        assert!(judge_result_then_release([Some(204), Some(204)], Some(200)).unwrap_err().contains("not 409"));
        assert!(judge_result_then_release([None, Some(204)], Some(409)).is_err());
    }

    #[test]
    fn redemption_judgement() {
        let ok = (Some(200), Some(json!({"job_id": "job_1", "device_id": "dev_1"})));
        assert_eq!(judge_redemptions(&ok, "job_1", Some(404), Some(404)), Ok(()));
        assert!(judge_redemptions(&ok, "job_1", Some(200), Some(404)).unwrap_err().contains("bound"));
        assert!(judge_redemptions(&ok, "job_1", Some(404), Some(200)).unwrap_err().contains("one-use"));
        assert!(judge_redemptions(&ok, "job_2", Some(404), Some(404)).unwrap_err().contains("names job"));
        assert!(judge_redemptions(&(Some(404), None), "job_1", Some(404), Some(404)).is_err());
        assert!(judge_redemptions(&ok, "job_1", None, Some(404)).is_err(), "no answer is not a refusal");
    }
}
