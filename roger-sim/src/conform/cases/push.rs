//! The push channel (PROTOCOL.md §11, R-PUSH-1; §8 push-first polling).
//!
//! Client mode needs the kit's broker (`--amqp URL` or `ROGER_AMQP_URL`; SKIP without one): the case's server
//! pushes through it under a name prefix of its own, the MFP finds it through discovery and
//! `GET /api/v1/device/push` (through the kit's relay, `amqps` unless `--plain-http`), and the kit publishes forged
//! or repeated doorbells to the device queue and can cut the MFP's broker connection at the relay
//! ([`super::super::broker::BrokerCut`]). An MFP that does not consume its device
//! queue (push is optional; it then polls at the interval) gets SKIP. Server mode consumes the device queue of a
//! printer the kit registered, with the credentials the server hands out, and inspects every doorbell.

use std::time::Instant;

use roger_proto::api::{PushCredentials, SessionEnd};
use roger_proto::push::{Id, PushEnvelope, PushEvent, PushTarget};
use roger_proto::secret::AccessToken;
use serde_json::Value;
use time::OffsetDateTime;

use super::super::env::Shown;
use super::super::judge::{self, PolledCode};
use super::super::vault::{self, Vault};
use super::prelude::*;
use crate::amqp::{ConsumerOptions, RawConsumer, RawMessage};
use crate::bus::QueueSpec;

/// How long the kit waits for the MFP to consume its device queue once registered.
const CONSUMER_WAIT: Duration = Duration::from_secs(20);
/// A poll this recent is close enough to approve after: the relaxed (≤ 30 s) poll is still far off.
const RECENT_POLL: Duration = Duration::from_secs(8);
/// How long after a doorbell the confirming poll may come, beyond the interval (request latency, scheduling).
const CONFIRM_SLACK: Duration = Duration::from_secs(5);
/// How late after the earliest moment the interval allows the push-first poll may come.
const PUSH_FIRST_SLACK: Duration = Duration::from_secs(3);
/// PROTOCOL.md §8: with push healthy the MFP polls at least every 30 s (plus the kit's slack).
const RELAXED_POLL_WAIT: Duration = Duration::from_secs(35);
/// How long the kit waits for the MFP to reconnect after the broker is reachable again (the MFP's back-off grew
/// while the broker was refused).
const RECONNECT_WAIT: Duration = Duration::from_secs(45);
/// How long after the broker is back the MFP has to re-read its state over HTTPS.
const REREAD_WAIT: Duration = Duration::from_secs(10);
/// How long a forged or repeated doorbell is given to do harm.
const HARM_WAIT: Duration = Duration::from_secs(4);

pub(super) fn cases() -> Vec<Case> {
    vec![
        Case {
            id: "roger/R-PUSH-1/forged-code-approved-confirmed",
            area: Area::Push,
            requirement: "A `code.approved` doorbell for the shown session code that nobody approved opens no \
                          session: the MFP confirms it over HTTPS (a poll of that code at the earliest moment the \
                          interval allows) and stays idle.",
            sources: &["R-PUSH-1", "PROTOCOL §11", "R-POLL-1"],
            level: Level::Should,
            basis: Basis::Roger,
            rationale: "The push channel and its doorbells are Roger's (R-PUSH-1, docs/protocol.md §4); no RFC \
                        speaks of them.",
            aimed_at: &[],
            client: client!(broker, forged_code_approved),
            server: None,
        },
        Case {
            id: "roger/R-PUSH-1/forged-session-ended-confirmed",
            area: Area::Push,
            requirement: "A `session.ended` doorbell for a session the server did not end leaves the session open: \
                          the MFP confirms over HTTPS before it ends a session, and its user token stays valid.",
            sources: &["R-PUSH-1", "PROTOCOL §11", "PROTOCOL §8"],
            level: Level::Should,
            basis: Basis::Roger,
            rationale: "The push channel and its doorbells are Roger's (R-PUSH-1, docs/protocol.md §4); no RFC \
                        speaks of them.",
            aimed_at: &["trust-doorbell"],
            client: client!(broker, forged_session_ended),
            server: None,
        },
        Case {
            id: "roger/R-PUSH-1/doorbell-polls-early",
            area: Area::Push,
            requirement: "With push healthy, the `code.approved` doorbell makes the MFP poll the approved code at \
                          the earliest moment the interval allows (never earlier), so the session opens within \
                          the interval of the approval.",
            sources: &["R-PUSH-1", "PROTOCOL §8", "PROTOCOL §11", "R-POLL-1"],
            level: Level::Should,
            basis: Basis::Roger,
            rationale: "The push channel and its doorbells are Roger's (R-PUSH-1, docs/protocol.md §4); no RFC \
                        speaks of them.",
            aimed_at: &[],
            client: client!(broker_slow_interval, doorbell_polls_early),
            server: None,
        },
        Case {
            id: "roger/R-PUSH-1/cut-broker-no-lost-session",
            area: Area::Push,
            requirement: "When the MFP's broker connection is cut, an approval made meanwhile still opens the \
                          session (the MFP falls back to polling); once the broker is back the MFP reconnects, \
                          re-reads its state over HTTPS, and the stale and duplicate doorbells change nothing.",
            sources: &["R-PUSH-1", "PROTOCOL §11", "PROTOCOL §8"],
            level: Level::Should,
            basis: Basis::Roger,
            rationale: "The push channel and its doorbells are Roger's (R-PUSH-1, docs/protocol.md §4); no RFC \
                        speaks of them.",
            aimed_at: &["no-poll-fallback"],
            client: client!(broker, cut_broker),
            server: None,
        },
    ]
}

pub(super) fn server_cases() -> Vec<Case> {
    vec![Case {
        id: "roger/R-PUSH-1/server-doorbells-carry-ids-only",
        area: Area::Push,
        requirement: "Every doorbell on a device queue (read with the credentials of `GET /api/v1/device/push`) is \
                      a JSON envelope with `id`, `type`, `occurred_at`, `device_id` and `data` holding ids only \
                      (no token, code, user code, URL, password or document), published persistent with \
                      `content_type=application/json` and `message_id` = `id`.",
        sources: &["R-PUSH-1", "PROTOCOL §11"],
        level: Level::Should,
        basis: Basis::Roger,
        rationale: "The push channel and its doorbells are Roger's (R-PUSH-1, docs/protocol.md §4); no RFC \
                        speaks of them.",
        aimed_at: &[],
        client: None,
        server: server!(false, server_doorbells),
    }]
}

/// The kit's broker, the default 1-second interval.
fn broker(s: &mut ClientSetup) {
    s.push = PushSetup::Broker;
}

/// The kit's broker and a 5-second interval, so a poll the doorbell brought forward is told apart from one at
/// the interval.
fn broker_slow_interval(s: &mut ClientSetup) {
    s.push = PushSetup::Broker;
    s.settings.interval_secs = 5;
}

/// The session code the panel shows, as the MFP got it from the server.
#[derive(Debug, Clone)]
struct ShownCode {
    device_code: String,
    request_id: String,
}

/// Finds the device authorization answer behind what the panel shows (its user code), for its device code and
/// `request_id` (PROTOCOL.md §5: the non-secret handle push uses).
fn shown_code(env: &ClientEnv, shown: &Shown) -> Result<ShownCode, CaseError> {
    let wanted = env.code_of(shown)?;
    let norm = |s: &str| s.chars().filter(|c| *c != '-').flat_map(char::to_uppercase).collect::<String>();
    let wanted = norm(wanted.secret());
    env.exchanges()
        .iter()
        .rev()
        .filter(|e| e.is("POST", "/oauth/device_authorization") && e.delivered_ok())
        .filter_map(|e| e.json())
        .find(|v| v.get("user_code").and_then(Value::as_str).is_some_and(|u| norm(u) == wanted))
        .and_then(|v| {
            Some(ShownCode {
                device_code: v.get("device_code")?.as_str()?.to_owned(),
                request_id: v.get("request_id")?.as_str()?.to_owned(),
            })
        })
        .ok_or_else(|| {
            CaseError::Kit("the shown code's device authorization answer (with its request_id) was not seen".into())
        })
}

/// Registers the MFP and waits until it consumes its device queue; the device id, or the SKIP finding for an MFP
/// that does not use push.
async fn connect_with_push(env: &mut ClientEnv) -> Result<Result<String, Finding>, CaseError> {
    env.connect().await?;
    let device = env.devices().into_iter().next().ok_or_else(|| CaseError::Kit("no device was registered".into()))?;
    let consumers = env.wait_consumers(&device, CONSUMER_WAIT, |n| n >= 1).await;
    if consumers.unwrap_or(0) == 0 {
        env.note(EvidenceSource::Server, "the broker: no consumer on the device queue");
        return Ok(Err(Finding::Skip(format!(
            "the MFP did not consume its device queue within {} s of registering (push is optional; without it \
             the MFP polls at the interval, PROTOCOL.md §8)",
            CONSUMER_WAIT.as_secs()
        ))));
    }
    env.note(EvidenceSource::Server, format!("the broker: {} consumer(s) on the device queue", consumers.unwrap_or(0)));
    Ok(Ok(device))
}

fn envelope_id(env: &ClientEnv, what: &str) -> Result<Id, CaseError> {
    Id::new(format!("conform-{what}-{:x}", env.seed)).map_err(|_| CaseError::Kit("envelope id".into()))
}

fn id(s: &str) -> Result<Id, CaseError> {
    Id::new(s).map_err(|_| CaseError::Kit(format!("{s:?} is not a PROTOCOL.md §11 id")))
}

/// `f` with the case's secrets replaced by their labels (a poll violation names its device code, R-SEC-1).
fn redacted(env: &ClientEnv, f: Finding) -> Finding {
    match f {
        Finding::Broken(why) => Finding::Broken(env.vault().redact(&why)),
        other => other,
    }
}

/// The polls of `device_code` the proxy saw.
fn code_polls(env: &ClientEnv, device_code: &str) -> Option<PolledCode> {
    judge::polled_codes(&env.exchanges()).into_iter().find(|c| c.device_code == device_code)
}

/// R-PUSH-1 after a forged `code.approved` at `doorbell`: a poll of the code within `window` (the confirmation
/// over HTTPS), no token for it, and no poll earlier than the interval allows (R-POLL-1).
fn judge_forged_approval(code: &PolledCode, doorbell: Instant, window: Duration) -> Finding {
    let after: Vec<&Exchange> = code.polls.iter().filter(|p| p.at >= doorbell).collect();
    if after.iter().any(|p| p.delivered_ok()) {
        return Finding::Broken("a poll after the forged doorbell was answered with tokens".into());
    }
    if let Some(v) = judge::poll_violations(code).first() {
        return Finding::Broken(v.sentence());
    }
    match after.first() {
        Some(p) if p.at <= doorbell + window => Finding::Holds,
        Some(p) => Finding::Broken(format!(
            "the first poll of the code came {:.1} s after the doorbell; the MFP confirms a doorbell over HTTPS at \
             the earliest moment the interval allows (within {:.1} s)",
            p.at.duration_since(doorbell).as_secs_f64(),
            window.as_secs_f64()
        )),
        None => Finding::Broken(format!(
            "no poll of the code followed the doorbell within {:.1} s: the MFP did not confirm it over HTTPS",
            window.as_secs_f64()
        )),
    }
}

async fn forged_code_approved(env: &mut ClientEnv) -> Result<Finding, CaseError> {
    let device = match connect_with_push(env).await? {
        Ok(d) => d,
        Err(skip) => return Ok(skip),
    };
    let panel = env.idle_panel().await?;
    let shown = shown_code(env, &panel.shown)?;
    let envelope = PushEnvelope::new(
        envelope_id(env, "forged-approval")?,
        OffsetDateTime::now_utc(),
        PushTarget::Device(id(&device)?),
        PushEvent::CodeApproved { request_id: id(&shown.request_id)? },
    );
    let doorbell = Instant::now();
    env.publish(&envelope).await?;
    env.note(EvidenceSource::Kit, "nobody approved the shown code: the doorbell is forged");
    let window = Duration::from_secs(env.settings.interval_secs.max(1)) + CONFIRM_SLACK;
    let dc = shown.device_code.clone();
    env.wait_exchanges(window, |ex| {
        ex.iter().any(|e| e.at >= doorbell && e.is_poll() && e.form_get("device_code").as_deref() == Some(dc.as_str()))
    })
    .await;
    let session = env.wait_state(PanelState::Session, HARM_WAIT).await?;
    let Some(code) = code_polls(env, &shown.device_code) else {
        return Ok(Finding::Broken("the shown code was never polled".into()));
    };
    let polls: Vec<&Exchange> = code.polls.iter().filter(|p| p.at + Duration::from_secs(10) >= doorbell).collect();
    env.note_exchanges(polls, 8);
    if session.is_some() {
        return Ok(Finding::Broken("the panel opened a session on a doorbell nobody confirmed (self-reported)".into()));
    }
    Ok(redacted(env, judge_forged_approval(&code, doorbell, window)))
}

async fn forged_session_ended(env: &mut ClientEnv) -> Result<Finding, CaseError> {
    let device = match connect_with_push(env).await? {
        Ok(d) => d,
        Err(skip) => return Ok(skip),
    };
    env.qr_session(Who::Alice).await?;
    let user_token = env
        .exchanges()
        .iter()
        .rfind(|e| e.is_poll() && e.bearer().is_some() && e.delivered_ok())
        .and_then(|e| e.json()?.get("access_token")?.as_str().map(str::to_owned))
        .ok_or_else(|| CaseError::Peer("no session token was issued".into()))?;
    let envelope = PushEnvelope::new(
        envelope_id(env, "forged-end")?,
        OffsetDateTime::now_utc(),
        PushTarget::Device(id(&device)?),
        PushEvent::SessionEnded { device_id: id(&device)? },
    );
    let doorbell = Instant::now();
    env.publish(&envelope).await?;
    env.note(EvidenceSource::Kit, "the session was not ended at the server: the doorbell is forged");
    let left = env.wait_state(PanelState::Idle, HARM_WAIT).await?;
    let token_alive = env.server().shared.read(|core, now| {
        core.state()
            .access
            .get(&roger_proto::server::mint::SecretHash::of(&user_token))
            .is_some_and(|a| a.expires > now)
    });
    let ex = env.exchanges();
    let confirmations: Vec<&Exchange> =
        ex.iter().filter(|e| e.at >= doorbell && e.bearer().as_deref() == Some(user_token.as_str())).collect();
    env.note_exchanges(confirmations.iter().copied(), 6);
    Ok(judge_forged_end(left.is_some(), token_alive, confirmations.len()))
}

/// R-PUSH-1 after a forged `session.ended`: the panel stays in the session and the user token stays valid.
fn judge_forged_end(left_session: bool, token_alive: bool, confirmations: usize) -> Finding {
    if left_session {
        let how = if confirmations == 0 { " without a single request with its user token" } else { "" };
        return Finding::Broken(format!(
            "the panel left the session on a doorbell the server never sent{how}: a doorbell is confirmed over \
             HTTPS before it is acted on"
        ));
    }
    Finding::check(token_alive, || "the session's user token was revoked on a forged doorbell".into())
}

/// PROTOCOL.md §8 push-first: the first poll of the approved code after `approved` comes no later than `slack`
/// after the earliest moment the interval allows, and no poll is early (R-POLL-1).
fn judge_push_first(code: &PolledCode, approved: Instant, slack: Duration) -> Finding {
    if let Some(v) = judge::poll_violations(code).first() {
        return Finding::Broken(v.sentence());
    }
    let before = code.polls.iter().filter(|p| p.at < approved).map(|p| p.at).max();
    let earliest = before.map_or(approved, |b| (b + code.interval).max(approved));
    let Some(first) = code.polls.iter().find(|p| p.at >= approved) else {
        return Finding::Broken("the approved code was not polled again".into());
    };
    let late = first.at.saturating_duration_since(earliest);
    Finding::check(late <= slack, || {
        format!(
            "the first poll after the approval came {:.1} s after it, {:.1} s after the earliest moment the \
             {} s interval allowed: the doorbell should make the MFP poll then (PROTOCOL.md §8)",
            first.at.duration_since(approved).as_secs_f64(),
            late.as_secs_f64(),
            code.interval.as_secs()
        )
    })
}

async fn doorbell_polls_early(env: &mut ClientEnv) -> Result<Finding, CaseError> {
    if let Err(skip) = connect_with_push(env).await? {
        return Ok(skip);
    }
    let panel = env.idle_panel().await?;
    let shown = shown_code(env, &panel.shown)?;
    // Approve right after a poll (one in the last few seconds, or the next): the next one the interval allows is
    // at most an interval away, and an MFP that waits for its relaxed (≤ 30 s) poll instead of the doorbell is
    // told apart.
    let since = Instant::now().checked_sub(RECENT_POLL).unwrap_or_else(Instant::now);
    let dc = shown.device_code.clone();
    let polled = env
        .wait_exchanges(RELAXED_POLL_WAIT, |ex| {
            ex.iter().any(|e| e.at >= since && e.is_poll() && e.form_get("device_code").as_deref() == Some(dc.as_str()))
        })
        .await;
    if !polled {
        return Ok(Finding::Broken(format!(
            "with push healthy the MFP did not poll its session code for {} s (at least every 30 s, PROTOCOL.md §8)",
            RELAXED_POLL_WAIT.as_secs()
        )));
    }
    let approved = Instant::now();
    env.decide(&panel.shown, Who::Alice, true).await?;
    let session = env.wait_state(PanelState::Session, RELAXED_POLL_WAIT).await?;
    let Some(code) = code_polls(env, &shown.device_code) else {
        return Ok(Finding::Broken("the shown code was never polled".into()));
    };
    let polls: Vec<&Exchange> = code.polls.iter().collect();
    env.note_exchanges(polls, 8);
    if session.is_none() {
        return Ok(Finding::Broken(format!(
            "the approval did not open the session within {} s",
            RELAXED_POLL_WAIT.as_secs()
        )));
    }
    Ok(redacted(env, judge_push_first(&code, approved, PUSH_FIRST_SLACK)))
}

/// What the cut case saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct CutOutcome {
    /// The approval made while the broker was cut opened the session.
    session_during_cut: bool,
    /// The MFP consumed its device queue again once the broker was back.
    reconnected: bool,
    /// After it reconnected, the MFP made an HTTPS request besides fetching push credentials (re-reading its
    /// state: its configuration, its session, the codes it shows).
    reread: bool,
    /// The session was still open, for the same user, after the stale and duplicate doorbells.
    session_kept: bool,
}

/// R-PUSH-1 with a cut broker connection (see [`CutOutcome`]).
fn judge_cut(o: CutOutcome) -> Finding {
    if !o.session_during_cut {
        return Finding::Broken(format!(
            "the approval made while the broker connection was cut did not open the session within {} s: a \
             missed doorbell must never be a lost session (poll at the interval without push)",
            STATE_WAIT.as_secs()
        ));
    }
    if !o.reconnected {
        return Finding::Broken(format!(
            "the MFP did not consume its device queue again within {} s of the broker being reachable",
            RECONNECT_WAIT.as_secs()
        ));
    }
    if !o.reread {
        return Finding::Broken(format!(
            "within {} s of the broker being back the MFP made no HTTPS request besides fetching push credentials: \
             it did not re-read its state (R-PUSH-1)",
            REREAD_WAIT.as_secs()
        ));
    }
    Finding::check(o.session_kept, || "the stale and duplicate doorbells after the reconnect ended the session".into())
}

async fn cut_broker(env: &mut ClientEnv) -> Result<Finding, CaseError> {
    let device = match connect_with_push(env).await? {
        Ok(d) => d,
        Err(skip) => return Ok(skip),
    };
    let through_cut = env.broker_cut().map(|c| c.accepted()).unwrap_or(0);
    env.note(EvidenceSource::Kit, format!("the MFP's broker connections through the kit's cut: {through_cut}"));
    let cut = env.broker_cut().ok_or_else(|| CaseError::Kit("no broker cut".into()))?;
    cut.set_refusing(true);
    cut.cut();
    env.note(EvidenceSource::Kit, "cut the MFP's broker connection; new connections are refused");
    let gone = env.wait_consumers(&device, Duration::from_secs(15), |n| n == 0).await;
    env.note(EvidenceSource::Server, format!("the broker: {} consumer(s) on the device queue", gone.unwrap_or(0)));
    let panel = env.idle_panel().await?;
    let shown = shown_code(env, &panel.shown)?;
    env.decide(&panel.shown, Who::Alice, true).await?;
    let session = env.wait_state(PanelState::Session, STATE_WAIT).await?;
    if let Some(code) = code_polls(env, &shown.device_code) {
        let polls: Vec<&Exchange> = code.polls.iter().collect();
        env.note_exchanges(polls, 6);
    }
    let queue = QueueSpec::Device(id(&device)?);
    let depth = match env.broker() {
        Some(bus) => bus.depth(&queue).await,
        None => None,
    };
    env.note(
        EvidenceSource::Server,
        format!("the broker: {} doorbell(s) waiting in the device queue", depth.unwrap_or(0)),
    );
    let mut outcome =
        CutOutcome { session_during_cut: session.is_some(), reconnected: false, reread: false, session_kept: false };
    if !outcome.session_during_cut {
        return Ok(judge_cut(outcome));
    }
    let cut = env.broker_cut().ok_or_else(|| CaseError::Kit("no broker cut".into()))?;
    cut.set_refusing(false);
    let back = Instant::now();
    env.note(EvidenceSource::Kit, "the broker is reachable again");
    let consumers = env.wait_consumers(&device, RECONNECT_WAIT, |n| n >= 1).await.unwrap_or(0);
    outcome.reconnected = consumers >= 1;
    env.note(EvidenceSource::Server, format!("the broker: {consumers} consumer(s) on the device queue"));
    if outcome.reconnected {
        // A duplicate of the (already used) approval's doorbell, besides the stale one that waited in the queue.
        let envelope = PushEnvelope::new(
            envelope_id(env, "duplicate-approval")?,
            OffsetDateTime::now_utc(),
            PushTarget::Device(id(&device)?),
            PushEvent::CodeApproved { request_id: id(&shown.request_id)? },
        );
        // Re-read before the duplicate goes out, so a poll it prompts does not count as one.
        outcome.reread = env
            .wait_exchanges(REREAD_WAIT, |ex| {
                ex.iter().any(|e| e.at >= back && e.route == "api" && !e.is("GET", "/api/v1/device/push"))
            })
            .await;
        env.publish(&envelope).await?;
        let left = env.wait_state(PanelState::Idle, HARM_WAIT).await?;
        let panel = env.panel().await?;
        let alice = env.user(Who::Alice).name.clone();
        outcome.session_kept =
            left.is_none() && panel.state == PanelState::Session && panel.user.as_deref() == Some(alice.as_str());
    }
    let ex = env.exchanges();
    let after: Vec<&Exchange> = ex.iter().filter(|e| e.at >= back).collect();
    env.note_exchanges(after.iter().copied(), 8);
    Ok(judge_cut(outcome))
}

/// A name from a doorbell as reports may show it: an id-shaped word of at most 32 characters, else a placeholder
/// (a broken server could put a secret anywhere).
fn printable(name: &str) -> String {
    if name.len() <= 32 && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-')) {
        name.to_owned()
    } else {
        "(unprintable)".to_owned()
    }
}

/// R-PUSH-1 / PROTOCOL.md §11 on one message of the device queue of `device_id`: its type, or why it is not a
/// doorbell. `vault` holds every secret the case saw (tokens, codes, user codes, the broker password).
fn judge_envelope(m: &RawMessage, device_id: &str, vault: &Vault) -> Result<String, String> {
    if m.content_type.as_deref() != Some(roger_proto::push::CONTENT_TYPE) {
        return Err(format!("a doorbell has content_type {:?}, not application/json", m.content_type));
    }
    if m.delivery_mode != Some(2) {
        return Err(format!("a doorbell was not published persistent (delivery_mode {:?})", m.delivery_mode));
    }
    for s in vault.secrets() {
        if vault::contains(&m.body, s.value.as_bytes()) {
            return Err(format!("a doorbell carries a secret the case saw: its {} (R-PUSH-1: ids only)", s.kind));
        }
    }
    let v: Value = serde_json::from_slice(&m.body).map_err(|_| "a doorbell is not JSON".to_owned())?;
    let obj = v.as_object().ok_or("a doorbell is not a JSON object")?;
    let text = |k: &str| obj.get(k).and_then(Value::as_str);
    let id = text("id").ok_or("a doorbell lacks a string `id`")?;
    let kind = printable(text("type").ok_or("a doorbell lacks a string `type`")?);
    let at = text("occurred_at").ok_or("a doorbell lacks a string `occurred_at`")?;
    if OffsetDateTime::parse(at, &time::format_description::well_known::Rfc3339).is_err() {
        return Err(format!("the `{kind}` doorbell's occurred_at is not RFC 3339"));
    }
    if text("device_id") != Some(device_id) || obj.contains_key("user_id") {
        return Err(format!("the `{kind}` doorbell on the device queue does not name that device as `device_id`"));
    }
    if m.message_id.as_deref() != Some(id) {
        return Err(format!("the `{kind}` doorbell's message_id is not its `id`"));
    }
    if !obj.get("data").is_some_and(Value::is_object) {
        return Err(format!("the `{kind}` doorbell has no `data` object"));
    }
    for (k, val) in obj.get("data").and_then(Value::as_object).into_iter().flatten() {
        let s = val.as_str().unwrap_or_default();
        if s.contains("://") || Id::looks_like_credential(s) {
            let k = printable(k);
            return Err(format!("the `{kind}` doorbell's data member `{k}` is a URL or a credential, not an id"));
        }
    }
    PushEnvelope::parse_strict(&m.body).map_err(|e| format!("the `{kind}` doorbell is not one (R-PUSH-1): {e}"))?;
    Ok(kind)
}

async fn server_doorbells(env: &mut ServerEnv) -> Result<Finding, CaseError> {
    let Some(broker) = env.broker.clone() else {
        return Ok(Finding::Skip(
            "the region names no push broker (PROTOCOL.md §2 `amqp`): there is no device queue to inspect".into(),
        ));
    };
    let shown = url::Url::parse(&broker)
        .map(|mut u| {
            let _ = u.set_username("");
            let _ = u.set_password(None);
            u.to_string()
        })
        .unwrap_or_else(|_| "(not a URL)".into());
    env.note(EvidenceSource::Kit, format!("the region's broker: {shown}"));
    let device = env.register().await?;
    let api = env.endpoints.api.clone();
    let device_token = AccessToken::new(device.access.clone());
    let req = roger_proto::api::get_device_push(&api, &device_token).map_err(|e| CaseError::Kit(e.to_string()))?;
    let answer = env.send(req).await?;
    if !answer.delivered_ok() {
        return Ok(Finding::Broken(format!(
            "GET /api/v1/device/push was answered {:?} although the region names a broker",
            answer.status
        )));
    }
    let creds: PushCredentials = serde_json::from_slice(&answer.resp_body).map_err(|e| {
        CaseError::Peer(format!(
            "the push credentials are not PROTOCOL.md §11 JSON (line {}, column {})",
            e.line(),
            e.column()
        ))
    })?;
    let own_queue = roger_proto::push::device_queue(&id(&device.device_id)?);
    if !creds.queue.ends_with(&own_queue) {
        return Ok(Finding::Broken(format!(
            "the push credentials name the queue {:?}, not {own_queue:?}",
            creds.queue
        )));
    }
    let options = ConsumerOptions::new(env.transport_policy(), env.ca_pem(), "roger-conform");
    let mut consumer = RawConsumer::open(&creds, &options)
        .await
        .map_err(|e| CaseError::Peer(format!("consuming {} with the handed-out credentials: {e}", creds.queue)))?;
    env.note(EvidenceSource::Kit, format!("consuming {} with the handed-out credentials", creds.queue));
    let provoked = provoke_doorbells(env, &device_token, &device.device_id).await;
    let mut messages = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while messages.len() < 2 {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        match consumer.next(left).await {
            Some(m) => messages.push(m),
            None => break,
        }
    }
    consumer.close().await;
    provoked?;
    if messages.is_empty() {
        return Ok(Finding::Broken(
            "no doorbell reached the device queue within 10 s of an approval of its session code and a session end"
                .into(),
        ));
    }
    for m in &messages {
        // At most 600 characters of it (a broken server could push a whole document).
        let body: String = String::from_utf8_lossy(&m.body).chars().take(600).collect();
        env.note(
            EvidenceSource::Wire,
            format!(
                "doorbell routed {} (content_type {:?}, message_id {:?}, delivery_mode {:?}): {body}",
                m.routing_key, m.content_type, m.message_id, m.delivery_mode
            ),
        );
    }
    for m in &messages {
        if let Err(why) = judge_envelope(m, &device.device_id, env.vault()) {
            return Ok(Finding::Broken(env.vault().redact(&why)));
        }
    }
    Ok(Finding::Holds)
}

/// A session code for the kit's printer, approved by the user (`code.approved`), redeemed, and ended from the
/// app (`session.ended`).
async fn provoke_doorbells(env: &mut ServerEnv, device_token: &AccessToken, device_id: &str) -> Result<(), CaseError> {
    let req = roger_proto::device_authorization::DeviceAuthorizationRequest::session(&env.client_id())
        .to_http(&env.endpoints.device_authorization, Some(device_token))
        .map_err(|e| CaseError::Kit(e.to_string()))?;
    let code = env.send(req).await?;
    let v = code
        .json()
        .filter(|_| code.delivered_ok())
        .ok_or_else(|| CaseError::Peer(format!("the session code request was answered {:?}", code.status)))?;
    let s = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or_default().to_owned();
    let (device_code, user_code) = (s("device_code"), s("user_code"));
    let interval = roger_proto::timing::effective_interval(v.get("interval").and_then(Value::as_u64));
    let decision = env.decide(&user_code, Actor::User, true).await?;
    if !decision.delivered_ok() {
        return Err(CaseError::Peer(format!("the user's approval was answered {:?}", decision.status)));
    }
    for _ in 0..3 {
        tokio::time::sleep(interval + Duration::from_millis(100)).await;
        if env.poll(&device_code, Some(device_token.secret())).await?.delivered_ok() {
            break;
        }
    }
    let app = AccessToken::new(env.app_token(Actor::User).await?);
    let body = SessionEnd { device_id: device_id.to_owned() };
    let req = roger_proto::api::end_session(&env.endpoints.api.clone(), &app, &body)
        .map_err(|e| CaseError::Kit(e.to_string()))?;
    env.send(req).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Bytes;
    use http::{HeaderMap, HeaderValue};

    const POLL: &str =
        "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Adevice_code&device_code=rdc_1&client_id=emb-x";

    fn poll(t0: Instant, at_ms: u64, ok: bool) -> Exchange {
        let mut headers = HeaderMap::new();
        headers.insert("content-type", HeaderValue::from_static("application/x-www-form-urlencoded"));
        let at = t0 + Duration::from_millis(at_ms);
        let (status, answer) = if ok {
            (200, serde_json::json!({"access_token":"rat_a","token_type":"Bearer","expires_in":10}))
        } else {
            (400, serde_json::json!({"error":"authorization_pending"}))
        };
        Exchange {
            seq: at_ms,
            route: "api",
            at,
            done: at + Duration::from_millis(5),
            method: "POST".into(),
            path: "/oauth/token".into(),
            query: None,
            headers,
            body: Bytes::from(POLL),
            status: Some(status),
            resp_headers: HeaderMap::new(),
            resp_body: Bytes::from(answer.to_string()),
            rewritten: Vec::new(),
        }
    }

    fn code(interval_secs: u64, polls: Vec<Exchange>) -> PolledCode {
        PolledCode {
            device_code: "rdc_1".into(),
            user_code: None,
            interval: Duration::from_secs(interval_secs),
            expires_in: Some(Duration::from_secs(120)),
            issued: None,
            session: true,
            polls,
        }
    }

    /// A confirming poll within the window holds; none, a late one, a token answer or an early poll is broken.
    #[test]
    fn forged_approval_judge() {
        let t0 = Instant::now();
        let doorbell = t0 + Duration::from_millis(10_000);
        let window = Duration::from_secs(6);
        let ok = code(1, vec![poll(t0, 0, false), poll(t0, 10_300, false), poll(t0, 11_400, false)]);
        assert_eq!(judge_forged_approval(&ok, doorbell, window), Finding::Holds);
        let none = code(1, vec![poll(t0, 0, false)]);
        assert!(
            matches!(judge_forged_approval(&none, doorbell, window), Finding::Broken(r) if r.contains("did not confirm"))
        );
        let late = code(1, vec![poll(t0, 0, false), poll(t0, 30_000, false)]);
        assert!(matches!(judge_forged_approval(&late, doorbell, window), Finding::Broken(r) if r.contains("20.0 s")));
        let tokens = code(1, vec![poll(t0, 0, false), poll(t0, 10_500, true)]);
        assert!(matches!(judge_forged_approval(&tokens, doorbell, window), Finding::Broken(r) if r.contains("tokens")));
        let early = code(5, vec![poll(t0, 9_000, false), poll(t0, 10_050, false)]);
        assert!(matches!(judge_forged_approval(&early, doorbell, window), Finding::Broken(_)), "R-POLL-1");
    }

    #[test]
    fn forged_end_judge() {
        assert_eq!(judge_forged_end(false, true, 1), Finding::Holds);
        assert_eq!(judge_forged_end(false, true, 0), Finding::Holds, "ignoring the doorbell is harmless");
        assert!(
            matches!(judge_forged_end(true, true, 0), Finding::Broken(r) if r.contains("without a single request"))
        );
        assert!(matches!(judge_forged_end(true, false, 1), Finding::Broken(_)));
        assert!(matches!(judge_forged_end(false, false, 1), Finding::Broken(r) if r.contains("revoked")));
    }

    /// Push-first: a poll at the earliest moment the interval allows holds; the relaxed 30 s poll and an early
    /// poll do not.
    #[test]
    fn push_first_judge() {
        let t0 = Instant::now();
        let approved = t0 + Duration::from_millis(100);
        let slack = Duration::from_secs(3);
        let prompt = code(5, vec![poll(t0, 0, false), poll(t0, 5_050, true)]);
        assert_eq!(judge_push_first(&prompt, approved, slack), Finding::Holds);
        let relaxed = code(5, vec![poll(t0, 0, false), poll(t0, 30_000, true)]);
        assert!(
            matches!(judge_push_first(&relaxed, approved, slack), Finding::Broken(r) if r.contains("PROTOCOL.md §8"))
        );
        let eager = code(5, vec![poll(t0, 0, false), poll(t0, 150, true)]);
        assert!(matches!(judge_push_first(&eager, approved, slack), Finding::Broken(_)), "R-POLL-1");
        let never = code(5, vec![poll(t0, 0, false)]);
        assert!(matches!(judge_push_first(&never, approved, slack), Finding::Broken(r) if r.contains("not polled")));
    }

    #[test]
    fn cut_judge() {
        let all = CutOutcome { session_during_cut: true, reconnected: true, reread: true, session_kept: true };
        assert_eq!(judge_cut(all), Finding::Holds);
        let lost = CutOutcome { session_during_cut: false, ..all };
        assert!(matches!(judge_cut(lost), Finding::Broken(r) if r.contains("lost session")));
        assert!(
            matches!(judge_cut(CutOutcome { reconnected: false, ..all }), Finding::Broken(r) if r.contains("again"))
        );
        assert!(matches!(judge_cut(CutOutcome { reread: false, ..all }), Finding::Broken(r) if r.contains("re-read")));
        assert!(matches!(judge_cut(CutOutcome { session_kept: false, ..all }), Finding::Broken(_)));
    }

    fn message(body: &str, message_id: Option<&str>) -> RawMessage {
        RawMessage {
            body: body.as_bytes().to_vec(),
            content_type: Some("application/json".into()),
            message_id: message_id.map(str::to_owned),
            delivery_mode: Some(2),
            routing_key: "device.dev_1.code.approved".into(),
        }
    }

    /// The envelope of PROTOCOL.md §11 passes; a secret, a URL, a wrong property or a foreign target does not.
    #[test]
    fn envelope_judge() {
        let mut vault = Vault::default();
        vault.add("rat_SECRETTOKEN", "access token", true);
        let good = r#"{"id":"msg_1","type":"code.approved","occurred_at":"2026-11-26T10:00:00Z","device_id":"dev_1","data":{"request_id":"req_1"}}"#;
        assert_eq!(judge_envelope(&message(good, Some("msg_1")), "dev_1", &vault), Ok("code.approved".into()));
        let cases: Vec<(RawMessage, &str)> = vec![
            (message(good, Some("msg_2")), "message_id"),
            (message(good, None), "message_id"),
            (RawMessage { content_type: Some("text/plain".into()), ..message(good, Some("msg_1")) }, "content_type"),
            (RawMessage { delivery_mode: Some(1), ..message(good, Some("msg_1")) }, "persistent"),
            (message(&good.replace("req_1", "rat_SECRETTOKEN"), Some("msg_1")), "access token"),
            (message(&good.replace(r#""req_1""#, r#""req_1","url":"https://drive.example/x""#), Some("msg_1")), "URL"),
            (message(&good.replace("dev_1", "dev_2"), Some("msg_1")), "device_id"),
            (
                message(&good.replace(r#""device_id":"dev_1","#, r#""device_id":"dev_1","token":"x","#), Some("msg_1")),
                "not one",
            ),
            (message("not json", Some("msg_1")), "not JSON"),
            (message(&good.replace("2026-11-26T10:00:00Z", "yesterday"), Some("msg_1")), "RFC 3339"),
        ];
        for (m, why) in cases {
            let r = judge_envelope(&m, "dev_1", &vault);
            assert!(matches!(&r, Err(e) if e.contains(why)), "{why}: {r:?}");
        }
    }
}
