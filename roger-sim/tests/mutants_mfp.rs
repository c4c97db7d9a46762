//! The MFP mutants (`roger-sim mfp --mutant NAME`, DESIGN.md "Conformance": known-broken variants prove the
//! suite): one test per mutant. Each runs a correct printer and the mutant side by side (each against its own or
//! a shared in-process server) and shows that the mutant really makes its mistake on the wire (the server's
//! request log, or a recording proxy), on its panel, in its log or on disk, and that the correct printer does not.
//! See docs/mutants.md for the table of mistakes and the rules they break.

mod common;
mod mfp_support;

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::TestServer;
use mfp_support::{contains_number, registered, temp_dir, text_files, WAIT};
use roger_proto::secret::Pin;
use roger_sim::mfp::{Mfp, MfpConfig, MfpHandle, MfpMutant, PanelState};
use serde_json::{json, Value};

/// The correct printer's client id (each printer has its own, so the server's log tells them apart).
const GOOD: &str = "emb-good";
/// The mutant's client id.
const BAD: &str = "emb-mutant";

/// A printer for `s` with client id `client`, state under `dir/<client>`, no push (so it polls at the plain
/// interval, PROTOCOL.md §8), running `mutant`.
fn printer(s: &TestServer, dir: &Path, client: &str, mutant: Option<MfpMutant>) -> MfpConfig {
    let mut c = mfp_support::config(s, &dir.join(client));
    c.client_id = client.into();
    c.push = None;
    c.mutant = mutant;
    c
}

/// A server with a 1-second interval and the given extra settings.
async fn server_with(settings: Value) -> TestServer {
    let s = mfp_support::server().await;
    if settings.as_object().is_some_and(|o| !o.is_empty()) {
        s.settings(settings).await;
    }
    s
}

/// A correct and a mutant printer, both registered and idle.
async fn registered_pair(s: &TestServer, dir: &Path, m: MfpMutant) -> (MfpHandle, MfpHandle) {
    let (good, _) = registered(s, printer(s, dir, GOOD, None)).await;
    let (bad, _) = registered(s, printer(s, dir, BAD, Some(m))).await;
    (good, bad)
}

/// The server's log entries of `client`'s OAuth requests, optionally of one grant type (`device_code` is short for
/// the RFC 8628 URN).
async fn requests(s: &TestServer, client: &str, grant: Option<&str>) -> Vec<Value> {
    let grant = grant.map(|g| if g == "device_code" { roger_proto::metadata::GRANT_DEVICE_CODE } else { g });
    s.log()
        .await
        .into_iter()
        .filter(|e| e["client_id"] == client)
        .filter(|e| grant.is_none_or(|g| e["grant_type"] == g))
        .collect()
}

/// Milliseconds on the server's clock of a log entry.
fn at_ms(e: &Value) -> i128 {
    let t = e["time"].as_str().expect("time");
    let t = time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).expect("RFC 3339");
    t.unix_timestamp_nanos() / 1_000_000
}

/// The gaps between consecutive entries, in milliseconds.
fn gaps(entries: &[Value]) -> Vec<i128> {
    entries.windows(2).map(|w| at_ms(&w[1]) - at_ms(&w[0])).collect()
}

fn outcomes(entries: &[Value]) -> Vec<String> {
    entries.iter().map(|e| e["outcome"].as_str().unwrap_or("ok").to_owned()).collect()
}

/// A server whose first device-code poll is answered `slow_down` (fault plan of `/sim/faults`), with one
/// registering printer on it.
async fn forced_slow_down(dir: &Path, client: &str, mutant: Option<MfpMutant>) -> (TestServer, MfpHandle) {
    let s = server_with(json!({})).await;
    let plan = json!({"seed": 1, "rules": [
        {"route": "/oauth/token", "grant_type": "device_code", "fault": "slow_down", "count": 1}]});
    let a = s.raw("POST", "/sim/faults", &[("content-type", "application/json")], plan.to_string().into_bytes()).await;
    assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.body));
    let mfp = Mfp::start(printer(&s, dir, client, mutant)).await.expect("the printer starts");
    mfp.register().await.expect("a registration code");
    (s, mfp)
}

/// The polls after the forced `slow_down`, and their gaps (the first gap is measured from the refused poll).
async fn polls_after_fault(s: &TestServer, client: &str) -> (usize, Vec<i128>) {
    let polls = requests(s, client, Some("device_code")).await;
    let first = polls.iter().position(|e| e["outcome"] == "fault:slow_down").expect("the forced slow_down");
    let after = &polls[first..];
    (after.len() - 1, gaps(after))
}

/// R-POLL-1, RFC 8628 §3.2: never two polls closer than the interval (here 2 s).
#[tokio::test]
async fn poll_too_fast() {
    let s = server_with(json!({"interval_secs": 2})).await;
    let dir = temp_dir("mutant-poll-fast");
    let good = Mfp::start(printer(&s, &dir, GOOD, None)).await.expect("start");
    let bad = Mfp::start(printer(&s, &dir, BAD, Some(MfpMutant::PollTooFast))).await.expect("start");
    good.register().await.expect("code");
    bad.register().await.expect("code");
    // The first poll comes one interval after the code (RFC 8628 §3.5), so 5 s see two of the correct printer's.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let g = requests(&s, GOOD, Some("device_code")).await;
    assert!(g.len() >= 2 && gaps(&g).iter().all(|gap| *gap >= 1500), "{:?}", gaps(&g));
    assert!(!outcomes(&g).contains(&"slow_down".to_owned()));
    let b = requests(&s, BAD, Some("device_code")).await;
    assert!(gaps(&b).iter().any(|gap| *gap < 1500), "the mutant polls every second: {:?}", gaps(&b));
    assert!(outcomes(&b).contains(&"slow_down".to_owned()), "{:?}", outcomes(&b));
    good.stop().await;
    bad.stop().await;
}

/// R-POLL-1, RFC 8628 §3.5: after `slow_down` the interval grows by 5 s for good.
#[tokio::test]
async fn ignore_slow_down() {
    let dir = temp_dir("mutant-ignore-slow-down");
    let (sg, good) = forced_slow_down(&dir, GOOD, None).await;
    let (sb, bad) = forced_slow_down(&dir, BAD, Some(MfpMutant::IgnoreSlowDown)).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let (n, g) = polls_after_fault(&sg, GOOD).await;
    assert!(n <= 1 && g.iter().all(|gap| *gap >= 5500), "the correct printer waits 1 + 5 s: {g:?}");
    let (n, b) = polls_after_fault(&sb, BAD).await;
    assert!(n >= 2 && b.iter().all(|gap| *gap < 2500), "the mutant keeps polling every second: {b:?}");
    good.stop().await;
    bad.stop().await;
}

/// R-POLL-1, RFC 8628 §3.5: the grown interval holds "for this and all subsequent requests".
#[tokio::test]
async fn reset_interval() {
    let dir = temp_dir("mutant-reset-interval");
    let (sg, good) = forced_slow_down(&dir, GOOD, None).await;
    let (sb, bad) = forced_slow_down(&dir, BAD, Some(MfpMutant::ResetInterval)).await;
    tokio::time::sleep(Duration::from_millis(8500)).await;
    let (n, g) = polls_after_fault(&sg, GOOD).await;
    assert!(n >= 1 && g.iter().all(|gap| *gap >= 5500), "every later gap is at least 6 s: {g:?}");
    let (_, b) = polls_after_fault(&sb, BAD).await;
    assert!(b.first().is_some_and(|gap| *gap >= 5500), "the mutant waits longer once: {b:?}");
    assert!(b.iter().skip(1).any(|gap| *gap < 2500), "then it is back at 1 s: {b:?}");
    good.stop().await;
    bad.stop().await;
}

/// RFC 8628 §3.5: `access_denied` ends the polling of that code.
#[tokio::test]
async fn poll_after_denied() {
    let s = server_with(json!({})).await;
    let dir = temp_dir("mutant-denied");
    let good = Mfp::start(printer(&s, &dir, GOOD, None)).await.expect("start");
    let bad = Mfp::start(printer(&s, &dir, BAD, Some(MfpMutant::PollAfterDenied))).await.expect("start");
    let admin = s.app_login("admin", "admin-pass").await;
    for mfp in [&good, &bad] {
        let shown = mfp.register().await.expect("code");
        assert_eq!(s.decide(&admin.access_token, &shown.user_code, false).await.status, 204);
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let denied = |e: &Vec<Value>| outcomes(e).iter().filter(|o| *o == "access_denied").count();
    assert_eq!(denied(&requests(&s, GOOD, Some("device_code")).await), 1);
    assert_eq!(good.panel().state, PanelState::Unregistered);
    assert!(denied(&requests(&s, BAD, Some("device_code")).await) >= 2, "the mutant polls on after the denial");
    good.stop().await;
    bad.stop().await;
}

/// R-TOK-2, RFC 9700 §4.14.2: the printer presents only the newest refresh token (2-second access tokens, so
/// refreshes come every 1.6 s).
#[tokio::test]
async fn reuse_old_refresh() {
    let s = server_with(json!({"access_token_secs": 2})).await;
    let dir = temp_dir("mutant-reuse-refresh");
    let (good, bad) = registered_pair(&s, &dir, MfpMutant::ReuseOldRefresh).await;
    assert!(bad.wait_for(PanelState::Disconnected, Duration::from_secs(15)).await.is_ok(), "the family is revoked");
    let b = requests(&s, BAD, Some("refresh_token")).await;
    assert!(outcomes(&b).contains(&"invalid_grant".to_owned()), "{:?}", outcomes(&b));
    let g = requests(&s, GOOD, Some("refresh_token")).await;
    assert!(g.len() >= 3 && outcomes(&g).iter().all(|o| o == "ok"), "{:?}", outcomes(&g));
    assert_eq!(good.panel().state, PanelState::Idle);
    good.stop().await;
    bad.stop().await;
}

/// R-TOK-1: refresh at the latest when 10 % of the access token's lifetime is left (3-second tokens).
#[tokio::test]
async fn no_early_refresh() {
    let s = server_with(json!({"access_token_secs": 3})).await;
    let dir = temp_dir("mutant-no-early-refresh");
    let (good, bad) = registered_pair(&s, &dir, MfpMutant::NoEarlyRefresh).await;
    tokio::time::sleep(Duration::from_millis(5500)).await;
    /// (ms from registration to the first refresh, whether a 401 came before it)
    async fn first_refresh(s: &TestServer, client: &str) -> (i128, bool) {
        let all = requests(s, client, None).await;
        let registered = all
            .iter()
            .find(|e| e["grant_type"] == roger_proto::metadata::GRANT_DEVICE_CODE && e["status"] == 200)
            .expect("registration");
        let refresh = all.iter().position(|e| e["grant_type"] == "refresh_token").expect("a refresh");
        let refused_first = all[..refresh].iter().any(|e| e["status"] == 401);
        (at_ms(&all[refresh]) - at_ms(registered), refused_first)
    }
    let (after, refused) = first_refresh(&s, GOOD).await;
    assert!((1000..=2700).contains(&after) && !refused, "ahead of expiry: {after} ms, 401 first: {refused}");
    let (after, refused) = first_refresh(&s, BAD).await;
    assert!(after >= 3000 && refused, "the mutant refreshes after the 401: {after} ms");
    good.stop().await;
    bad.stop().await;
}

/// Both printers idle with a session QR, then the server's clock jumps past the device tokens' lifetime: their
/// next device-bound poll gets `401 invalid_client` (PROTOCOL.md §7). Returns the printers.
async fn device_token_refused(s: &TestServer, dir: &Path, m: MfpMutant) -> (MfpHandle, MfpHandle) {
    let (good, bad) = registered_pair(s, dir, m).await;
    for mfp in [&good, &bad] {
        let (shown, view) = mfp.wait_until(WAIT, |v| v.state == PanelState::Idle && v.qr.is_some()).await;
        assert!(shown, "{view:?}");
    }
    s.advance(1300.0).await;
    (good, bad)
}

/// R-TOK-1, PROTOCOL.md §7: on a device-bound `401 invalid_client` the printer refreshes once and retries; it
/// never abandons the user's flow.
#[tokio::test]
async fn give_up_invalid_client() {
    let s = server_with(json!({})).await;
    let dir = temp_dir("mutant-give-up");
    let (good, bad) = device_token_refused(&s, &dir, MfpMutant::GiveUpInvalidClient).await;
    let (shown, view) = good.wait_until(WAIT, |v| v.state == PanelState::Idle && v.qr.is_some()).await;
    assert!(shown, "a fresh QR after refresh and retry: {view:?}");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(!requests(&s, GOOD, Some("refresh_token")).await.is_empty());
    assert!(requests(&s, BAD, None).await.iter().any(|e| e["status"] == 401), "the mutant was refused");
    assert!(requests(&s, BAD, Some("refresh_token")).await.is_empty(), "and never refreshed");
    assert_eq!(bad.panel().qr, None, "its QR flow is abandoned");
    good.stop().await;
    bad.stop().await;
}

/// R-TOK-1, R-TOK-4: a `401` asks for a refresh; only a refresh answered `invalid_grant` disconnects.
#[tokio::test]
async fn every_401_fatal() {
    let s = server_with(json!({})).await;
    let dir = temp_dir("mutant-401-fatal");
    let (good, bad) = device_token_refused(&s, &dir, MfpMutant::Every401Fatal).await;
    assert!(bad.wait_for(PanelState::Disconnected, Duration::from_secs(10)).await.is_ok(), "the mutant gave up");
    assert!(requests(&s, BAD, Some("refresh_token")).await.is_empty(), "without even trying a refresh");
    let (shown, view) = good.wait_until(WAIT, |v| v.state == PanelState::Idle && v.qr.is_some()).await;
    assert!(shown, "{view:?}");
    assert!(!requests(&s, GOOD, Some("refresh_token")).await.is_empty());
    good.stop().await;
    bad.stop().await;
}

/// R-QR-1, RFC 8628 §3.3.1: the QR code and the user code (`XXXX-XXXX`) are shown together.
#[tokio::test]
async fn qr_without_user_code() {
    let s = server_with(json!({})).await;
    let dir = temp_dir("mutant-qr-code");
    for (client, mutant) in [(GOOD, None), (BAD, Some(MfpMutant::QrWithoutUserCode))] {
        let mfp = Mfp::start(printer(&s, &dir, client, mutant)).await.expect("start");
        let shown = mfp.register().await.expect("a registration QR");
        let code = roger_proto::qr::parse(shown.qr.as_deref().unwrap_or_default(), &s.api).expect("the QR is valid");
        let display = roger_proto::user_code::format_for_display(code.secret());
        let beside = std::fs::read_to_string(dir.join(client).join("state").join("panel-code.txt")).expect("code file");
        if mutant.is_none() {
            assert_eq!(shown.user_code, display);
            assert_eq!(mfp.panel().user_code.as_deref(), Some(display.as_str()));
            assert!(beside.contains(&display));
        } else {
            assert_eq!(shown.user_code, "", "the mutant reports no user code");
            assert_eq!(mfp.panel().user_code, None);
            assert!(!beside.contains(&display) && !beside.starts_with(code.secret()), "{beside}");
        }
        mfp.stop().await;
    }
}

/// R-QR-3: a session code is renewed before it expires (here it lives 4 s, so at 2 s), and an expired code is
/// never shown.
#[tokio::test]
async fn never_renew_qr() {
    let s = server_with(json!({"session_code_secs": 4})).await;
    let dir = temp_dir("mutant-never-renew");
    let (good, bad) = registered_pair(&s, &dir, MfpMutant::NeverRenewQr).await;
    let first = |m: &MfpHandle| m.panel().user_code;
    let (g0, b0) = (first(&good), first(&bad));
    assert!(g0.is_some() && b0.is_some(), "both show a session QR");
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_ne!(first(&good), g0, "renewed");
    assert_eq!(first(&bad), b0, "the mutant still shows its first code");
    let alice = s.app_login("alice", "alice-pass").await;
    let bearer = format!("Bearer {}", alice.access_token.secret());
    let path = format!("/api/v1/codes/{}", b0.unwrap_or_default());
    let lookup = s.raw("GET", &path, &[("authorization", &bearer)], vec![]).await;
    assert_eq!(lookup.status, 404, "and that code expired on the server");
    let codes = |e: Vec<Value>| {
        e.iter().filter(|e| e["path"] == "/oauth/device_authorization" && e["authenticated"] == true).count()
    };
    assert!(codes(requests(&s, GOOD, None).await) >= 2);
    assert_eq!(codes(requests(&s, BAD, None).await), 1, "one session code, never renewed");
    good.stop().await;
    bad.stop().await;
}

/// R-META-1, RFC 8414 §3.3: metadata whose `issuer` is not the API base is refused.
#[tokio::test]
async fn ignore_issuer() {
    let s = server_with(json!({})).await;
    let plan =
        json!({"seed": 1, "rules": [{"route": "/.well-known/oauth-authorization-server", "fault": "wrong_issuer"}]});
    let a = s.raw("POST", "/sim/faults", &[("content-type", "application/json")], plan.to_string().into_bytes()).await;
    assert_eq!(a.status, 200);
    let dir = temp_dir("mutant-issuer");
    let refused = Mfp::start(printer(&s, &dir, GOOD, None)).await.expect_err("a wrong issuer is refused");
    assert!(refused.to_string().to_lowercase().contains("issuer"), "{refused}");
    let bad = Mfp::start(printer(&s, &dir, BAD, Some(MfpMutant::IgnoreIssuer))).await.expect("the mutant uses it");
    bad.register().await.expect("and registers through it");
    assert!(!requests(&s, BAD, None).await.is_empty());
    bad.stop().await;
}

/// R-DISC-2, RFC 6749 §10.9: server certificates are verified (here the server's CA is not given to the printer).
#[tokio::test]
async fn skip_tls_verify() {
    let dir = temp_dir("mutant-tls");
    let tls = roger_sim::server::ServerConfig {
        plain_http: false,
        seed: Some(7),
        tls_dir: Some(dir.join("tls")),
        ..Default::default()
    };
    let s = TestServer::start_with(tls).await;
    assert!(s.api.starts_with("https://"));
    let refused = Mfp::start(printer(&s, &dir, GOOD, None)).await.expect_err("an unknown CA is refused");
    assert!(refused.to_string().contains("transport error"), "{refused}");
    let bad = Mfp::start(printer(&s, &dir, BAD, Some(MfpMutant::SkipTlsVerify))).await.expect("the mutant connects");
    let shown = bad.register().await.expect("and talks to whoever answers");
    assert!(roger_proto::qr::parse(shown.qr.as_deref().unwrap_or_default(), &s.api).is_ok());
    bad.stop().await;
}

/// A recording reverse proxy in front of a plain-HTTP server: every request's method, path and query are kept,
/// and the server's origin is rewritten to the proxy's in answers (so discovery and metadata point at the proxy).
struct WireTap {
    upstream: String,
    origin: String,
    seen: Mutex<Vec<String>>,
    http: reqwest::Client,
}

async fn relay(
    axum::extract::State(tap): axum::extract::State<Arc<WireTap>>,
    req: axum::extract::Request,
) -> axum::response::Response {
    let (parts, body) = req.into_parts();
    let target = parts.uri.path_and_query().map(|p| p.as_str().to_owned()).unwrap_or_else(|| "/".into());
    tap.seen.lock().expect("tap").push(format!("{} {target}", parts.method));
    let body = axum::body::to_bytes(body, 1 << 24).await.expect("request body");
    let mut out = tap.http.request(parts.method.clone(), format!("{}{target}", tap.upstream)).body(body.to_vec());
    for (k, v) in &parts.headers {
        if k != http::header::HOST && k != http::header::CONTENT_LENGTH {
            out = out.header(k, v);
        }
    }
    let resp = out.send().await.expect("upstream answers");
    let (status, headers) = (resp.status(), resp.headers().clone());
    let bytes = resp.bytes().await.expect("upstream body");
    let bytes = match std::str::from_utf8(&bytes) {
        Ok(text) => text.replace(&tap.upstream, &tap.origin).into_bytes(),
        Err(_) => bytes.to_vec(),
    };
    let mut answer = axum::response::Response::builder().status(status);
    for (k, v) in &headers {
        if k != http::header::CONTENT_LENGTH && k != http::header::TRANSFER_ENCODING {
            answer = answer.header(k, v);
        }
    }
    answer.body(axum::body::Body::from(bytes)).expect("answer")
}

/// Starts a [`WireTap`] in front of `s`; returns it and its discovery URL.
async fn wiretap(s: &TestServer) -> (Arc<WireTap>, String) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let origin = format!("http://{}", listener.local_addr().expect("addr"));
    let tap = Arc::new(WireTap {
        upstream: s.api.clone(),
        origin: origin.clone(),
        seen: Mutex::new(Vec::new()),
        http: common::client(),
    });
    let app = axum::Router::new().fallback(relay).with_state(tap.clone());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (tap, origin)
}

/// RFC 6750 §2.1, PROTOCOL.md §1.4: bearer tokens travel only in the `Authorization` header, never in a query.
#[tokio::test]
async fn token_in_query() {
    let s = server_with(json!({})).await;
    let dir = temp_dir("mutant-query");
    let mut seen = Vec::new();
    for (client, mutant) in [(GOOD, None), (BAD, Some(MfpMutant::TokenInQuery))] {
        let (tap, discovery) = wiretap(&s).await;
        let mut config = printer(&s, &dir, client, mutant);
        config.discovery = discovery;
        let (mfp, _) = registered(&s, config).await;
        assert!(mfp.wait_job_url_published(WAIT).await, "PUT /api/v1/device with the device token");
        seen.push(tap.seen.lock().expect("tap").clone());
        mfp.stop().await;
    }
    let api_calls = |s: &Vec<String>| s.iter().filter(|l| l.contains(" /api/v1/")).cloned().collect::<Vec<_>>();
    assert!(!api_calls(&seen[0]).is_empty() && seen[0].iter().all(|l| !l.contains("access_token")), "{:?}", seen[0]);
    assert!(
        api_calls(&seen[1]).iter().any(|l| l.contains("/api/v1/device?access_token=rat_")),
        "the mutant's token is in the query: {:?}",
        api_calls(&seen[1])
    );
}

/// Both printers registered; each user signs in with a PIN from idle (PROTOCOL.md §8 PIN login).
async fn pin_login(s: &TestServer, dir: &Path, m: MfpMutant) -> (MfpHandle, MfpHandle) {
    let (good, bad) = registered_pair(s, dir, m).await;
    for mfp in [&good, &bad] {
        assert!(mfp.pin("alice", Pin::new("1234")).await.expect("pin"), "the PIN is accepted");
        assert_eq!(mfp.panel().state, PanelState::Session);
    }
    (good, bad)
}

/// R-PWD-1, RFC 6749 §4.3.1: the PIN is sent once per entry (again only after a lost answer).
#[tokio::test]
async fn resend_pin() {
    let s = server_with(json!({})).await;
    let dir = temp_dir("mutant-resend-pin");
    let (good, bad) = pin_login(&s, &dir, MfpMutant::ResendPin).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(requests(&s, GOOD, Some("password")).await.len(), 1);
    assert_eq!(requests(&s, BAD, Some("password")).await.len(), 2, "the mutant sent the PIN again unasked");
    good.stop().await;
    bad.stop().await;
}

/// R-PWD-1: the PIN is never written to storage.
#[tokio::test]
async fn keep_pin() {
    let s = server_with(json!({})).await;
    let dir = temp_dir("mutant-keep-pin");
    let (good, bad) = pin_login(&s, &dir, MfpMutant::KeepPin).await;
    let has_pin = |m: &MfpHandle| text_files(m.state_dir()).iter().any(|(_, text)| contains_number(text, "1234"));
    assert!(!has_pin(&good));
    assert!(has_pin(&bad), "the mutant kept the PIN in its state directory");
    assert!(bad.state_dir().join(roger_sim::mfp::mutant::KEPT_PIN_FILE).exists());
    good.stop().await;
    bad.stop().await;
}

/// R-SEC-1: logs never hold a credential (in process: the narration the shim copies to its stderr).
#[tokio::test]
async fn log_tokens() {
    let s = server_with(json!({})).await;
    let dir = temp_dir("mutant-log-tokens");
    let (good, bad) = registered_pair(&s, &dir, MfpMutant::LogTokens).await;
    let leaks = |m: &MfpHandle| m.events().iter().filter(|l| l.contains("rat_") || l.contains("rrt_")).count();
    assert_eq!(leaks(&good), 0);
    assert!(leaks(&bad) >= 2, "the mutant logged its access and refresh tokens: {:?}", bad.events());
    good.stop().await;
    bad.stop().await;
}

/// `roger-sim mfp --shim --mutant log-tokens`, as the conformance runner starts a mutant: the warning and, after a
/// registration through the shim protocol (PROTOCOL.md §13), the device's tokens on its stderr.
#[tokio::test]
async fn cli_shim_mutant() {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
    let s = server_with(json!({})).await;
    let dir = temp_dir("mutant-cli-shim");
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_roger-sim"))
        .args(["mfp", "--shim", "--mutant", "log-tokens"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("the shim starts");
    let mut stdin = child.stdin.take().expect("stdin");
    let mut answers = BufReader::new(child.stdout.take().expect("stdout")).lines();
    async fn ask(
        stdin: &mut tokio::process::ChildStdin,
        answers: &mut tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
        request: Value,
    ) -> Value {
        stdin.write_all(format!("{request}\n").as_bytes()).await.expect("write");
        let line = tokio::time::timeout(Duration::from_secs(40), answers.next_line())
            .await
            .expect("an answer in time")
            .expect("read")
            .expect("a line");
        serde_json::from_str(&line).expect("JSON")
    }
    let start = json!({"op": "start", "discovery": s.server.info.discovery, "ca": null, "client_id": BAD,
        "state_dir": dir.join("state").display().to_string()});
    assert_eq!(ask(&mut stdin, &mut answers, start).await["ok"], true);
    let reg = ask(&mut stdin, &mut answers, json!({"op": "register"})).await;
    let admin = s.app_login("admin", "admin-pass").await;
    let code = reg["user_code"].as_str().expect("user code");
    assert_eq!(s.decide(&admin.access_token, code, true).await.status, 204);
    let idle = ask(&mut stdin, &mut answers, json!({"op": "wait", "state": "idle", "timeout_ms": 20000})).await;
    assert_eq!(idle["ok"], true, "{idle}");
    assert_eq!(ask(&mut stdin, &mut answers, json!({"op": "stop"})).await["ok"], true);
    let mut err = String::new();
    child.stderr.take().expect("stderr").read_to_string(&mut err).await.expect("stderr");
    let _ = child.wait().await;
    assert!(err.contains("MUTANT PRINTER `log-tokens` ACTIVE"), "{err}");
    assert!(err.contains("rrt_") && err.contains("rat_"), "tokens on the shim's stderr: {err}");
}
