//! QR codes and the user session (PROTOCOL.md §5, §8; RFC 8628 §3.3.1): the panel shows the QR of exactly the
//! `verification_uri_complete` it received and the user code beside it (R-QR-1); session QR codes rotate before
//! they expire (R-QR-3); step 1 by QR and step 2 by PIN.

use std::time::Instant;

use super::super::env::{KitUser, Shown};
use super::super::judge::{self, SessionCode};
use super::observe;
use super::prelude::*;

pub(super) fn cases() -> Vec<Case> {
    vec![
        Case {
            id: "rfc8628/3.3.1/registration-qr-and-user-code",
            area: Area::QrSession,
            requirement:
                "While registering, the panel shows the user code it received (in any case and with any separator) \
                          and, if it shows a QR, that QR encodes the `verification_uri_complete` it received; a \
                          code not shown as XXXX-XXXX or a QR of anything else is INFO.",
            sources: &["RFC 8628 §3.3.1", "RFC 8628 §6.1", "R-QR-1"],
            level: Level::Must,
            basis: Basis::Rfc,
            rationale: "RFC 8628 §3.3.1: a client that shows verification_uri_complete non-textually \"MUST still \
                        display the user_code\". The XXXX-XXXX form and a QR at all are Roger's (R-QR-1): INFO.",
            aimed_at: &["qr-without-user-code"],
            client: client!(defaults, registration_qr),
            server: None,
        },
        Case {
            id: "roger/R-QR-1/session-qr-and-user-code",
            area: Area::QrSession,
            requirement: "While idle, the panel shows the current session code's user code (in any case and with any \
                          separator) and, if it shows a QR, that QR encodes the code's `verification_uri_complete`; \
                          a code not shown as XXXX-XXXX or a QR of anything else is INFO.",
            sources: &["R-QR-1", "RFC 8628 §3.3.1"],
            level: Level::Must,
            basis: Basis::Rfc,
            rationale: "RFC 8628 §3.3.1: a client that shows verification_uri_complete non-textually \"MUST still \
                        display the user_code\" (a session code is a device code too). The XXXX-XXXX form and the \
                        QR itself are Roger's: INFO.",
            aimed_at: &["qr-without-user-code"],
            client: client!(defaults, session_qr),
            server: None,
        },
        Case {
            id: "roger/R-QR-3/session-qr-renewed-before-expiry",
            area: Area::QrSession,
            requirement:
                "While idle, the MFP requests the next session code no later than 10 s before the current one \
                          expires (half its lifetime when it lives less than 20 s; for 10–20 s codes anywhere between \
                          the two), not faster than rotation requires, shows it at once and never shows an expired \
                          code.",
            sources: &["R-QR-3", "RFC 8628 §3.2"],
            level: Level::Should,
            basis: Basis::Roger,
            rationale: "RFC 8628 has no rotating codes: expires_in only bounds a code's life. Rotating the session \
                        QR ahead of expiry, and never showing an expired code, are R-QR-3's choices (polling an \
                        expired code is judged by the RFC case on expired_token).",
            aimed_at: &["never-renew-qr"],
            client: client!(short_session_codes, renewal),
            server: None,
        },
        Case {
            id: "roger/R-QR-3/poll-outgoing-code",
            area: Area::QrSession,
            requirement:
                "After rotating its session QR the MFP keeps polling the outgoing code until it expires, so an \
                          approval given in its last seconds is not lost.",
            sources: &["R-QR-3"],
            level: Level::Should,
            basis: Basis::Roger,
            rationale: "An R-QR-3 SHOULD of our own; the RFCs know no rotation.",
            aimed_at: &[],
            client: client!(short_session_codes, outgoing_polled),
            server: None,
        },
        Case {
            id: "rfc8628/3.4/session-by-qr",
            area: Area::QrSession,
            requirement:
                "When a user approves the session QR on the phone, the MFP redeems the code by polling and opens a \
                          session for that user (a session without the `roger.release` scope is INFO).",
            sources: &["RFC 8628 §3.4", "PROTOCOL §8"],
            level: Level::Must,
            basis: Basis::Rfc,
            rationale: "RFC 8628 §3.4–§3.5: the client polls an approved device code until the token answer comes; \
                        a client that never redeems an approved code has no device grant. The scope name is Roger's \
                        (INFO).",
            aimed_at: &[],
            client: client!(defaults, session_by_qr),
            server: None,
        },
        Case {
            id: "roger/sec8/step2-pin-after-qr",
            area: Area::QrSession,
            requirement:
                "In a QR session, every PIN entered at the panel (step 2, and again for later scans and prints) \
                          is sent as a device-bound password grant for the step-1 user with scope `roger.print \
                          roger.scan`, and the session gains those scopes.",
            sources: &["PROTOCOL §8", "RFC 6749 §4.3"],
            level: Level::Should,
            basis: Basis::Roger,
            rationale: "RFC 6749 §4.3 defines the password grant; step 2 bound to the step-1 user, its scopes and \
                        device-bound client authentication are Roger's session design (docs/protocol.md §5.3).",
            aimed_at: &[],
            client: client!(defaults, step2),
            server: None,
        },
    ]
}

/// A user code as RFC 8628 §6.1 compares it: case-insensitively, without punctuation.
fn loose(code: &str) -> String {
    code.chars().filter(|c| c.is_alphanumeric()).flat_map(char::to_uppercase).collect()
}

/// Compares what the panel shows with the code the MFP received: `Err` when the RFC MUST is broken (no user code,
/// another user code, a screenshot that contradicts the shim), else how it was judged and where it differs from
/// Roger's display (R-QR-1).
fn check_shown(
    shown: &Shown,
    vuc: Option<&str>,
    user_code: &str,
    screenshots: bool,
) -> Result<(String, Vec<String>), String> {
    let mut roger = Vec::new();
    let display = roger_proto::user_code::format_for_display(user_code);
    match shown.user_code.as_deref() {
        None => return Err("the panel shows no user code (RFC 8628 §3.3.1: it MUST still be displayed)".into()),
        Some(c) if loose(c) != loose(user_code) => {
            return Err("the panel shows another user code than the one it received".into())
        }
        Some(c) if c != display => roger.push(format!("the user code is shown as {c:?}, not {display:?} (XXXX-XXXX)")),
        Some(_) => {}
    }
    match (shown.qr.as_deref(), vuc) {
        (None, Some(_)) => roger.push("no QR, although the server sent a verification_uri_complete".into()),
        (Some(q), Some(v)) if q != v => {
            roger.push("the QR payload is not the verification_uri_complete the MFP received".into())
        }
        (Some(_), None) => roger.push("a QR although the server sent no verification_uri_complete".into()),
        _ => {}
    }
    if screenshots && shown.qr.is_some() {
        let Some(path) = &shown.screenshot else {
            return Ok((
                "QR payload and user code are self-reported (the shim gave no screenshot of this panel)".into(),
                roger,
            ));
        };
        let png = std::fs::read(path).map_err(|e| format!("the screenshot cannot be read: {e}"))?;
        let payloads =
            crate::phone::scan::decode_png(&png).map_err(|e| format!("the screenshot holds no readable QR: {e}"))?;
        if !payloads.iter().any(|p| Some(p.as_str()) == shown.qr.as_deref()) {
            return Err("the QR in the screenshot is not the one the shim reports".into());
        }
        return Ok((
            "the QR decoded from the screenshot is the one reported; the user code is self-reported".into(),
            roger,
        ));
    }
    Ok(("QR payload and user code are self-reported (no screenshot capability)".into(), roger))
}

/// The finding of [`check_shown`]: `Holds`, `Info` with Roger's display gaps, or `Broken`.
fn shown_finding(env: &mut ClientEnv, checked: Result<(String, Vec<String>), String>) -> Finding {
    match checked {
        Ok((how, roger)) => {
            env.note(EvidenceSource::Kit, how);
            if roger.is_empty() {
                Finding::Holds
            } else {
                Finding::Info(format!(
                    "RFC 8628 §3.3.1 holds; not Roger's display (R-QR-1, a Roger choice): {}",
                    roger.join("; ")
                ))
            }
        }
        Err(why) => Finding::Broken(why),
    }
}

async fn registration_qr(env: &mut ClientEnv) -> Result<Finding, CaseError> {
    env.start_shim().await?;
    let shown = env.register().await?;
    let code = judge::polled_codes(&env.exchanges()).into_iter().rfind(|c| !c.session);
    let Some(code) = code else { return Ok(Finding::Broken("the MFP received no registration code".into())) };
    let answer = env
        .exchanges()
        .into_iter()
        .rfind(|e| e.is("POST", "/oauth/device_authorization") && e.delivered_ok() && e.bearer().is_none());
    let vuc =
        answer.and_then(|e| e.json()).and_then(|v| v.get("verification_uri_complete")?.as_str().map(str::to_owned));
    let user_code = code.user_code.unwrap_or_default();
    let screenshots = env.has(roger_proto::shim::CAP_SCREENSHOT);
    let checked = check_shown(&shown, vuc.as_deref(), &user_code, screenshots);
    Ok(shown_finding(env, checked))
}

async fn session_qr(env: &mut ClientEnv) -> Result<Finding, CaseError> {
    env.connect().await?;
    // The panel may need a moment after `idle` to show its first session code.
    let panel = env.idle_panel().await?;
    let Some(current) = judge::session_codes(&env.exchanges()).pop() else {
        return Ok(Finding::Broken("the idle MFP requested no session code".into()));
    };
    let screenshots = env.has(roger_proto::shim::CAP_SCREENSHOT);
    let checked =
        check_shown(&panel.shown, current.verification_uri_complete.as_deref(), &current.user_code, screenshots);
    Ok(shown_finding(env, checked))
}

fn short_session_codes(s: &mut ClientSetup) {
    s.settings.session_code_secs = 8;
}

/// Samples the panel for `span`, returning `(when, user code shown, wire form)`.
async fn sample_panel(env: &mut ClientEnv, span: Duration) -> Result<Vec<(Instant, Option<String>)>, CaseError> {
    let end = Instant::now() + span;
    let mut samples = Vec::new();
    while Instant::now() < end {
        let p = env.panel().await?;
        samples.push((Instant::now(), p.shown.user_code.as_deref().and_then(judge::wire_code)));
        observe(Duration::from_millis(700)).await;
    }
    Ok(samples)
}

/// Transit and scheduling slack around R-QR-3's renewal window.
const RENEWAL_TOLERANCE: Duration = Duration::from_millis(1500);

fn renewal_problems(codes: &[SessionCode], samples: &[(Instant, Option<String>)]) -> Vec<String> {
    let tol = RENEWAL_TOLERANCE;
    let mut out = Vec::new();
    for w in codes.windows(2) {
        let (prev, next) = (&w[0], &w[1]);
        let (earliest, latest) = judge::qr_renewal_window(prev.lifetime);
        let after = next.requested.saturating_duration_since(prev.issued);
        if after > latest + tol {
            out.push(format!(
                "exchange #{}: the next session code was requested {:.1} s after the previous one ({} s) was received; R-QR-3 wants it by {:.1} s",
                next.seq,
                after.as_secs_f64(),
                prev.lifetime.as_secs(),
                latest.as_secs_f64()
            ));
        }
        if after + tol < earliest {
            out.push(format!(
                "exchange #{}: the next session code was requested {:.1} s after the previous one ({} s), earlier than rotation requires ({:.1} s)",
                next.seq,
                after.as_secs_f64(),
                prev.lifetime.as_secs(),
                earliest.as_secs_f64()
            ));
        }
    }
    for (at, shown) in samples {
        let Some(code) = shown else { continue };
        let Some(c) = codes.iter().find(|c| &c.user_code == code) else {
            out.push("the panel showed a user code the MFP never received as a session code".into());
            continue;
        };
        if *at > c.issued + c.lifetime + Duration::from_millis(500) {
            out.push(format!(
                "the panel showed a session code {:.1} s after it expired",
                (*at - (c.issued + c.lifetime)).as_secs_f64()
            ));
        }
        if let Some(newer) = codes.iter().find(|n| n.issued > c.issued) {
            if *at > newer.issued + tol {
                out.push(format!(
                    "the panel still showed the previous session code {:.1} s after the next one arrived",
                    (*at - newer.issued).as_secs_f64()
                ));
            }
        }
    }
    out
}

async fn renewal(env: &mut ClientEnv) -> Result<Finding, CaseError> {
    env.connect().await?;
    let samples = sample_panel(env, Duration::from_secs(14)).await?;
    let codes = judge::session_codes(&env.exchanges());
    let vault = env.vault();
    for c in &codes {
        env.note(
            EvidenceSource::Wire,
            format!(
                "session code {} received at +{:.2} s, lifetime {} s",
                vault.redact(&c.user_code),
                env.ms(c.issued) as f64 / 1000.0,
                c.lifetime.as_secs()
            ),
        );
    }
    if codes.len() < 3 {
        return Ok(Finding::Broken(format!(
            "only {} session code(s) in 14 s with 8-second codes: the QR was not renewed",
            codes.len()
        )));
    }
    let problems = renewal_problems(&codes, &samples);
    Ok(match problems.first() {
        Some(p) => Finding::Broken(vault.redact(&format!(
            "{p}{}",
            if problems.len() > 1 { format!(" (and {} more)", problems.len() - 1) } else { String::new() }
        ))),
        None => Finding::Holds,
    })
}

async fn outgoing_polled(env: &mut ClientEnv) -> Result<Finding, CaseError> {
    env.connect().await?;
    observe(Duration::from_secs(14)).await;
    let ex = env.exchanges();
    let codes = judge::session_codes(&ex);
    let polled = judge::polled_codes(&ex);
    let now = Instant::now();
    let mut judged = 0;
    for w in codes.windows(2) {
        let (old, new) = (&w[0], &w[1]);
        let expiry = old.issued + old.lifetime;
        if expiry > now {
            continue;
        }
        judged += 1;
        let polls = polled
            .iter()
            .find(|p| p.user_code.as_deref() == Some(old.user_code.as_str()))
            .map(|p| p.polls.clone())
            .unwrap_or_default();
        // A poll while the successor was already shown, before the old code expired (one interval of slack).
        let kept = polls.iter().any(|p| p.at > new.issued && p.at <= expiry);
        let gap = expiry.saturating_duration_since(new.issued);
        if !kept && gap > Duration::from_millis(1500) {
            let vault = env.vault();
            return Ok(Finding::Broken(vault.redact(&format!(
                "session code {} was not polled in the {:.1} s between its successor's arrival and its expiry",
                old.user_code,
                gap.as_secs_f64()
            ))));
        }
    }
    Ok(Finding::check(judged >= 1, || "no rotated session code expired during the observation".into()))
}

async fn session_by_qr(env: &mut ClientEnv) -> Result<Finding, CaseError> {
    env.connect().await?;
    let panel = env.qr_session(Who::Alice).await?;
    let alice = env.user(Who::Alice).name.clone();
    let redeemed = env.exchanges().iter().any(|e| e.is_poll() && e.bearer().is_some() && e.delivered_ok());
    if !redeemed {
        return Ok(Finding::Broken("no session-code poll was answered with tokens".into()));
    }
    if panel.user.as_deref() != Some(alice.as_str()) {
        return Ok(Finding::Broken(format!("the panel reports user {:?}, not {alice:?}", panel.user)));
    }
    if !panel.scopes.iter().any(|s| s == "roger.release") {
        return Ok(Finding::Info(format!(
            "the session opened, but its reported scopes {:?} lack roger.release (a Roger name)",
            panel.scopes
        )));
    }
    Ok(Finding::Holds)
}

fn scope_set(s: &str) -> std::collections::BTreeSet<&str> {
    s.split(' ').filter(|x| !x.is_empty()).collect()
}

async fn step2(env: &mut ClientEnv) -> Result<Finding, CaseError> {
    env.connect().await?;
    env.qr_session(Who::Alice).await?;
    let KitUser { name, pin, .. } = env.user(Who::Alice).clone();
    if !env.pin(Who::Alice).await? {
        return Ok(Finding::Broken("the step-2 PIN was not accepted".into()));
    }
    let panel = env.panel().await?;
    // Use the step-2 session as a user would: the job list and a scan, so every password grant they bring is seen.
    env.jobs().await?;
    match env.scan("pdf-300").await {
        Ok(_) | Err(CaseError::Unsupported(_)) => {}
        Err(e) => return Err(e),
    }
    let grants: Vec<Exchange> =
        env.exchanges().into_iter().filter(|e| e.grant_type().as_deref() == Some("password")).collect();
    env.note_exchanges(grants.iter(), 6);
    if !grants.iter().any(|g| g.delivered_ok()) {
        return Ok(Finding::Broken("no password grant succeeded".into()));
    }
    for g in &grants {
        if g.form_get("username").as_deref() != Some(name.as_str())
            || g.form_get("password").as_deref() != Some(pin.as_str())
        {
            return Ok(Finding::Broken(format!(
                "exchange #{}: the password grant did not carry the step-1 user and the typed PIN",
                g.seq
            )));
        }
        let scope = g.form_get("scope").unwrap_or_default();
        if scope_set(&scope) != scope_set("roger.print roger.scan") {
            return Ok(Finding::Broken(format!(
                "exchange #{}: step 2 asked for scope {scope:?}, not \"roger.print roger.scan\"",
                g.seq
            )));
        }
        if g.bearer().is_none() {
            return Ok(Finding::Broken(format!(
                "exchange #{}: the step-2 password grant was not device-bound (no Authorization: Bearer)",
                g.seq
            )));
        }
    }
    Ok(Finding::check(
        panel.scopes.iter().any(|s| s == "roger.print") && panel.scopes.iter().any(|s| s == "roger.scan"),
        || format!("after step 2 the session's scopes are {:?}", panel.scopes),
    ))
}

pub(super) fn server_cases() -> Vec<Case> {
    vec![
        Case {
            id: "roger/R-QR-2/server-lookup-shows-printer",
            area: Area::QrSession,
            requirement:
                "Looking up a registration code shows its kind, the printer's vendor, model and serial and its \
                      expiry; only a tenant admin may approve it (others get 403).",
            sources: &["R-QR-2", "RFC 8628 §5.4", "PROTOCOL §5"],
            level: Level::Should,
            basis: Basis::Roger,
            rationale: "RFC 8628 §5.4 asks the authorization server to show the user what they authorize, in prose; \
                        the look-up API, its members and admin-only registrations are Roger's.",
            aimed_at: &[],
            client: None,
            server: server!(false, server_lookup),
        },
        Case {
            id: "rfc8628/5.1/server-approval-rate-limit",
            area: Area::QrSession,
            requirement:
                "Look-ups of unknown codes are limited per user (at most 10 a minute by default), then answered \
                      429 with `Retry-After`.",
            sources: &["RFC 8628 §5.1", "PROTOCOL §10"],
            level: Level::Should,
            basis: Basis::Roger,
            rationale: "RFC 8628 §5.1 only recommends rate-limiting user code attempts; the limit on the Roger \
                        look-up API, its 429 and Retry-After are docs/protocol.md §6.6's.",
            aimed_at: &["no-approval-rate-limit"],
            client: None,
            server: server!(false, server_rate_limit),
        },
        Case {
            id: "roger/R-QR-3/server-session-code-lifetime",
            area: Area::QrSession,
            requirement:
                "A session code (device-bound, scope `roger.release`) announces an `expires_in` of at most the 120 s \
                      default session-code lifetime and an `interval`.",
            sources: &["R-QR-3", "RFC 8628 §3.2", "PROTOCOL §8"],
            level: Level::Should,
            basis: Basis::Roger,
            rationale: "RFC 8628 §3.2 leaves the lifetime to the server and makes interval OPTIONAL; 120 s session \
                        codes with an interval are R-QR-3's default.",
            aimed_at: &[],
            client: None,
            server: server!(false, server_session_lifetime),
        },
        Case {
            id: "roger/R-QR-3/server-session-code-expires",
            area: Area::QrSession,
            requirement: "A session code announces a positive `expires_in`, and once that has passed a poll of it is \
                      answered `expired_token` and an approval of it 404.",
            sources: &["R-QR-3", "RFC 8628 §3.2", "RFC 8628 §3.5", "PROTOCOL §8"],
            level: Level::Should,
            basis: Basis::Roger,
            rationale: "That an expired code no longer redeems is RFC 8628 §3.2's, judged for any server by \
                        rfc8628/3.5/server-device-code-expires; expired_token exactly and a 404 on the Roger \
                        approval API are Roger's.",
            aimed_at: &[],
            client: None,
            server: server!(true, server_session_expires),
        },
    ]
}

/// The default session-code lifetime (PROTOCOL.md §3 and §8: 120 s, a per-tenant setting).
const SESSION_CODE_SECS: u64 = 120;

/// The `expires_in` of a device authorization answer (RFC 8628 §3.2: REQUIRED, seconds; PROTOCOL.md §1.4: a
/// non-negative integer; a code that lives 0 s cannot be shown, so it must be positive).
fn announced_lifetime(answer: &serde_json::Value) -> Result<u64, String> {
    match answer.get("expires_in") {
        None => Err("the session code's answer has no `expires_in` (RFC 8628 §3.2)".into()),
        Some(v) => match v.as_u64() {
            Some(s) if s > 0 => Ok(s),
            _ => Err(format!("the session code's `expires_in` is {v}, not a positive integer number of seconds")),
        },
    }
}

/// Judges a session code's lifetime and interval against the defaults (PROTOCOL.md §3, §8): `Ok` with what was
/// seen, `Err` with what is off.
fn judge_session_lifetime(answer: &serde_json::Value) -> Result<String, String> {
    let lifetime = announced_lifetime(answer)?;
    if lifetime > SESSION_CODE_SECS {
        return Err(format!(
            "the session code lives {lifetime} s, longer than the {SESSION_CODE_SECS} s default of PROTOCOL.md §8 \
             (a longer tenant setting keeps a code on an unattended panel longer)"
        ));
    }
    match answer.get("interval") {
        None => Err("the session code's answer has no `interval` (PROTOCOL.md §8 relies on it for polling)".into()),
        Some(v) => match v.as_u64() {
            Some(i) if i >= 1 => Ok(format!("expires_in {lifetime} s, interval {i} s")),
            _ => Err(format!("the session code's `interval` is {v}, not a whole number of seconds of at least 1")),
        },
    }
}

/// Judges the answers about an expired session code: the poll's OAuth `error` and the approval's status.
fn judge_expired(poll_error: Option<&str>, approve_status: Option<u16>) -> Result<(), String> {
    if poll_error != Some("expired_token") {
        return Err(format!("a poll after expires_in passed was answered {poll_error:?}, not expired_token"));
    }
    if approve_status != Some(404) {
        return Err(format!("an approval after expires_in passed was answered {approve_status:?}, not 404"));
    }
    Ok(())
}

/// A device-bound session code for a freshly registered printer: the device and the code's answer.
async fn fresh_session_code(
    env: &mut ServerEnv,
) -> Result<(super::super::server_env::Device, serde_json::Value), CaseError> {
    let d = env.register().await?;
    let e = env.session_code(&d.access).await?;
    let v = e
        .json()
        .filter(|_| e.delivered_ok())
        .ok_or_else(|| CaseError::Peer(format!("the session code request was answered {:?}", e.status)))?;
    Ok((d, v))
}

async fn server_session_lifetime(env: &mut ServerEnv) -> Result<Finding, CaseError> {
    let (_, v) = fresh_session_code(env).await?;
    Ok(match judge_session_lifetime(&v) {
        Ok(seen) => {
            env.note(EvidenceSource::Kit, seen);
            Finding::Holds
        }
        Err(why) => Finding::Broken(why),
    })
}

async fn server_session_expires(env: &mut ServerEnv) -> Result<Finding, CaseError> {
    let (d, v) = fresh_session_code(env).await?;
    let lifetime = match announced_lifetime(&v) {
        Ok(s) => s,
        Err(why) => return Ok(Finding::Broken(why)),
    };
    if !env.sim_available().await {
        return Ok(Finding::Skip(format!(
            "the session code announces expires_in {lifetime} s; whether it dies then needs the server's clock \
             (/sim/clock), which this server does not offer"
        )));
    }
    let field = |k: &str| v.get(k).and_then(|x| x.as_str()).unwrap_or_default().to_owned();
    let (device_code, user_code) = (field("device_code"), field("user_code"));
    env.advance(lifetime + 1).await?;
    let poll = env.poll(&device_code, Some(&d.access)).await?;
    let approve = env.decide(&user_code, Actor::User, true).await?;
    Ok(match judge_expired(poll.oauth_error().as_deref(), approve.status) {
        Ok(()) => Finding::Holds,
        Err(why) => Finding::Broken(why),
    })
}

async fn server_rate_limit(env: &mut ServerEnv) -> Result<Finding, CaseError> {
    let api = env.endpoints.api.clone();
    let token = roger_proto::secret::AccessToken::new(env.app_token(Actor::Sacrificial).await?);
    // Well-formed codes nobody was given (a seed-dependent walk through the alphabet).
    let alphabet = roger_proto::user_code::ALPHABET;
    let mut limited = None;
    for i in 0..12u64 {
        let code: String = (0..8u64)
            .map(|k| {
                let at = (env.seed >> (k * 4)).wrapping_add(i * 7 + k * 3) as usize;
                char::from(alphabet[at % alphabet.len()])
            })
            .collect();
        let req = roger_proto::api::lookup_code(&api, &token, &roger_proto::secret::UserCode::new(code))
            .map_err(|e| CaseError::Kit(e.to_string()))?;
        let e = env.send(req).await?;
        match e.status {
            Some(429) => {
                limited = Some((i, e));
                break;
            }
            Some(404) => {}
            other => {
                return Ok(Finding::Broken(format!("a look-up of an unknown code was answered {other:?}, not 404")))
            }
        }
    }
    let Some((i, e)) = limited else {
        return Ok(Finding::Broken("12 look-ups of unknown codes within a minute were all answered".into()));
    };
    if i < 10 {
        env.note(EvidenceSource::Kit, format!("the server limited after {i} look-ups (stricter than 10 a minute)"));
    }
    Ok(Finding::check(e.resp_headers.contains_key("retry-after"), || "the 429 has no Retry-After".into()))
}

async fn server_lookup(env: &mut ServerEnv) -> Result<Finding, CaseError> {
    let e = env.registration_code().await?;
    let v = e.json().filter(|_| e.delivered_ok()).ok_or_else(|| CaseError::Peer("no registration code".into()))?;
    let uc = v.get("user_code").and_then(|x| x.as_str()).unwrap_or_default().to_owned();
    let api = env.endpoints.api.clone();
    let admin = roger_proto::secret::AccessToken::new(env.app_token(Actor::Admin).await?);
    let code = roger_proto::secret::UserCode::new(uc.clone());
    let req = roger_proto::api::lookup_code(&api, &admin, &code).map_err(|e| CaseError::Kit(e.to_string()))?;
    let lookup = env.send(req).await?;
    let l = lookup.json().unwrap_or_default();
    let vendor = env.client_id().trim_start_matches("emb-").to_owned();
    let field = |k: &str| l.get(k).and_then(|x| x.as_str()).map(str::to_owned);
    if !lookup.delivered_ok() || field("kind").as_deref() != Some("registration") {
        return Ok(Finding::Broken(format!("the look-up answered {:?} with kind {:?}", lookup.status, field("kind"))));
    }
    if field("vendor").as_deref() != Some(vendor.as_str()) || field("model").is_none() || field("serial").is_none() {
        return Ok(Finding::Broken("the look-up does not show the printer's vendor, model and serial".into()));
    }
    if field("expires").is_none() {
        return Ok(Finding::Broken("the look-up does not show when the code expires".into()));
    }
    let user = roger_proto::secret::AccessToken::new(env.app_token(Actor::User).await?);
    let req = roger_proto::api::approve_code(&api, &user, &code).map_err(|e| CaseError::Kit(e.to_string()))?;
    let by_user = env.send(req).await?;
    Ok(Finding::check(by_user.status == Some(403), || {
        format!("a non-admin's approval of a registration code was answered {:?}, not 403", by_user.status)
    }))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// R-QR-3 in server mode: the lifetime and interval judgement on crafted answers.
    #[test]
    fn session_lifetime_judgement() {
        assert!(judge_session_lifetime(&json!({"expires_in": 120, "interval": 5})).is_ok());
        assert!(judge_session_lifetime(&json!({"expires_in": 8, "interval": 1})).is_ok());
        let long = judge_session_lifetime(&json!({"expires_in": 600, "interval": 5})).unwrap_err();
        assert!(long.contains("600 s"), "{long}");
        assert!(judge_session_lifetime(&json!({"interval": 5})).unwrap_err().contains("no `expires_in`"));
        assert!(judge_session_lifetime(&json!({"expires_in": 0, "interval": 5})).unwrap_err().contains("positive"));
        assert!(judge_session_lifetime(&json!({"expires_in": "120", "interval": 5})).is_err());
        assert!(judge_session_lifetime(&json!({"expires_in": 120})).unwrap_err().contains("no `interval`"));
        assert!(judge_session_lifetime(&json!({"expires_in": 120, "interval": 0})).is_err());
        assert_eq!(announced_lifetime(&json!({"expires_in": 90})), Ok(90));
    }

    #[test]
    fn expired_code_judgement() {
        assert_eq!(judge_expired(Some("expired_token"), Some(404)), Ok(()));
        assert!(judge_expired(Some("authorization_pending"), Some(404)).unwrap_err().contains("not expired_token"));
        assert!(judge_expired(None, Some(404)).is_err(), "a token for an expired code");
        assert!(judge_expired(Some("expired_token"), Some(200)).unwrap_err().contains("not 404"));
        assert!(judge_expired(Some("expired_token"), None).is_err());
    }
}
