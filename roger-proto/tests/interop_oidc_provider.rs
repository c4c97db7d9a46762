//! Interoperability with an independent OAuth 2.0 server: oidc-provider (npm, by panva), the real package started by
//! `interop/oidc-provider/provider.mjs`, over plain HTTP on loopback. Run by `interop/oidc-provider/run.sh`;
//! skipped (and passing) unless `ROGER_INTEROP_OIDC_ISSUER` names the running server.
//!
//! One scenario, driven through roger-proto's `driver` feature and the reqwest transport on the real clock (the
//! server runs on real time):
//!
//! 1. RFC 8414 metadata with `Driver::metadata` (docs/protocol.md §3.3, R-META-1).
//! 2. A device code with `DeviceAuthorizationRequest` and `device_authorization::classify` (RFC 8628 §3.1–3.2,
//!    docs/protocol.md §3.7): oidc-provider's user codes are hyphenated base-20 (`WDJB-MJHT`), it sends no
//!    `interval` (so 5 s, RFC 8628 §3.2).
//! 3. A `DevicePoller` under `Driver::run_poller` (RFC 8628 §3.4–3.5, docs/protocol.md §5.1, §6), through a
//!    transport wrapper that sends the first poll twice back to back, as a duplicating network would, and hands
//!    the poller the second answer. The user's step (`ROGER_INTEROP_APPROVE`, oidc-provider's own verification,
//!    login and consent pages) runs after the first `authorization_pending`. oidc-provider never answers
//!    `slow_down` (its device-code grant has no such branch), so the duplicate is answered `authorization_pending`
//!    and the poller keeps 5 s; the poller's `slow_down` handling meets independent implementations as clients
//!    instead: openid-client and authlib against `roger-sim server` (interop/clients).
//! 4. Refresh with rotation (RFC 6749 §6, R-TOK-2), then the old refresh token again (RFC 9700 §4.14.2, R-TOK-3).
//! 5. Revocation of a second grant's refresh token (RFC 7009, docs/protocol.md §3.8).

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use http::{Request, Response};
use roger_proto::device_authorization::{self, DeviceAuthorizationRequest, DeviceAuthorizationResponse};
use roger_proto::discovery::TransportPolicy;
use roger_proto::driver::reqwest_transport::ReqwestTransport;
use roger_proto::driver::{Driver, HttpTransport, SystemClock, TransportError};
use roger_proto::metadata::{Endpoints, GRANT_DEVICE_CODE};
use roger_proto::poller::{DevicePoller, PollResult, PollerConfig};
use roger_proto::revocation::{self, RevocationRequest};
use roger_proto::secret::RefreshToken;
use roger_proto::token::{self, scope, TokenRequest, TokenResponse};
use roger_proto::{OAuthErrorCode, ResponseError};
use tokio::sync::Notify;

/// The issuer of the running oidc-provider, e.g. `http://127.0.0.1:40005` (provider.mjs's JSON line).
const ENV_ISSUER: &str = "ROGER_INTEROP_OIDC_ISSUER";
/// The approval command prefix, e.g. `node interop/oidc-provider/approve.mjs` (relative to the workspace root);
/// the test appends `--issuer URL --user-code CODE`.
const ENV_APPROVE: &str = "ROGER_INTEROP_APPROVE";

/// The printer's client in provider.mjs: public, device_code + refresh_token.
const CLIENT: &str = "emb-acme";
/// The approval never takes this long (it is eight requests on loopback).
const APPROVAL_TIMEOUT: Duration = Duration::from_secs(20);
/// The whole device grant (a few polls, one approval) ends well within this.
const GRANT_TIMEOUT: Duration = Duration::from_secs(40);
/// Between the poller taking `now` for a poll and the wrapper stamping it there is only the building of the
/// request: the wrapper may see a gap this much shorter than the interval the poller kept.
const STAMP_SLACK: Duration = Duration::from_millis(50);
/// A poll may be late by timer and scheduling jitter, not by a whole back-off step.
const LATE_SLACK: Duration = Duration::from_millis(1500);
/// RFC 8628 §3.2: the interval when the server sends none.
const DEFAULT_INTERVAL: Duration = Duration::from_secs(5);

struct Config {
    issuer: String,
    approve: Vec<String>,
}

impl Config {
    /// The peer from the environment, or `None` after printing why the scenario is skipped.
    fn from_env() -> Option<Self> {
        let issuer = match std::env::var(ENV_ISSUER) {
            Ok(v) if !v.trim().is_empty() => v.trim().trim_end_matches('/').to_owned(),
            _ => {
                println!(
                    "skipped: {ENV_ISSUER} not set (interop/oidc-provider/run.sh starts oidc-provider and sets it)"
                );
                return None;
            }
        };
        let approve: Vec<String> =
            std::env::var(ENV_APPROVE).unwrap_or_default().split_whitespace().map(str::to_owned).collect();
        assert!(!approve.is_empty(), "{ENV_ISSUER} is set but {ENV_APPROVE} (the approval command) is not");
        Some(Self { issuer, approve })
    }
}

/// What an answer was, for the log (no secrets: codes and statuses only).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Answer {
    /// A token endpoint success that `token::classify` accepts.
    Tokens,
    /// An OAuth error code (RFC 6749 §5.2, RFC 8628 §3.5).
    OAuth(String),
    /// Anything else: the HTTP status.
    Status(u16),
    /// No answer.
    Transport,
}

impl Answer {
    fn is(&self, code: &OAuthErrorCode) -> bool {
        matches!(self, Self::OAuth(c) if c == code.as_str())
    }
}

/// One request the wrapper sent and what came back.
#[derive(Debug, Clone)]
struct Exchange {
    sent: Instant,
    answered: Instant,
    method: http::Method,
    path: String,
    grant_type: Option<String>,
    answer: Answer,
    /// Whether the answer went to the caller (false for the copy a duplicating network delivered first).
    delivered: bool,
}

impl Exchange {
    fn is_poll(&self) -> bool {
        self.grant_type.as_deref() == Some(GRANT_DEVICE_CODE)
    }
}

/// The reqwest transport with a log of every exchange and, when armed, a duplicating network for the next poll.
struct Wire {
    inner: ReqwestTransport,
    log: Mutex<Vec<Exchange>>,
    duplicate_next_poll: AtomicBool,
    /// Notified on every `authorization_pending` (a permit is kept if nobody waits yet).
    pending: Arc<Notify>,
}

impl Wire {
    fn new(inner: ReqwestTransport) -> Self {
        Self {
            inner,
            log: Mutex::default(),
            duplicate_next_poll: AtomicBool::new(false),
            pending: Arc::new(Notify::new()),
        }
    }

    fn log(&self) -> Vec<Exchange> {
        self.log.lock().expect("log lock").clone()
    }

    fn polls_since(&self, from: usize) -> Vec<Exchange> {
        self.log().into_iter().skip(from).filter(Exchange::is_poll).collect()
    }

    async fn exchange(
        &self,
        request: Request<Vec<u8>>,
        grant_type: Option<String>,
        delivered: bool,
    ) -> Result<Response<Vec<u8>>, TransportError> {
        let method = request.method().clone();
        let path = request.uri().path().to_owned();
        let sent = Instant::now();
        let result = self.inner.send(request).await;
        let answered = Instant::now();
        let answer = match &result {
            Err(_) => Answer::Transport,
            Ok(resp) if grant_type.is_some() => match token::classify(resp) {
                Ok(_) => Answer::Tokens,
                Err(e) => {
                    e.oauth_code().map_or(Answer::Status(resp.status().as_u16()), |c| Answer::OAuth(c.as_str().into()))
                }
            },
            Ok(resp) => Answer::Status(resp.status().as_u16()),
        };
        if answer.is(&OAuthErrorCode::AuthorizationPending) {
            self.pending.notify_one();
        }
        self.log.lock().expect("log lock").push(Exchange {
            sent,
            answered,
            method,
            path,
            grant_type,
            answer,
            delivered,
        });
        result
    }
}

/// A copy of a request (what a duplicating network delivers a second time).
fn copy_request(request: &Request<Vec<u8>>) -> Request<Vec<u8>> {
    let mut copy = Request::new(request.body().clone());
    *copy.method_mut() = request.method().clone();
    *copy.uri_mut() = request.uri().clone();
    *copy.headers_mut() = request.headers().clone();
    copy
}

#[async_trait]
impl HttpTransport for Wire {
    async fn send(&self, request: Request<Vec<u8>>) -> Result<Response<Vec<u8>>, TransportError> {
        let grant_type =
            form_urlencoded::parse(request.body()).find(|(k, _)| k == "grant_type").map(|(_, v)| v.into_owned());
        if grant_type.as_deref() == Some(GRANT_DEVICE_CODE) && self.duplicate_next_poll.swap(false, Ordering::SeqCst) {
            // The network delivers the poll twice, back to back; the poller only ever sees the second answer.
            let _ = self.exchange(copy_request(&request), grant_type.clone(), false).await;
        }
        self.exchange(request, grant_type, true).await
    }
}

/// The shape of a JSON answer without its values (for reports when roger-proto refuses one): member names, types,
/// string lengths, and strings with letters as `A` and digits as `9`.
fn shape(resp: &Response<Vec<u8>>) -> String {
    fn mask(v: &serde_json::Value) -> serde_json::Value {
        use serde_json::Value;
        match v {
            Value::String(s) if s.len() <= 16 => Value::String(
                s.chars()
                    .map(|c| match c {
                        c if c.is_ascii_alphabetic() => 'A',
                        c if c.is_ascii_digit() => '9',
                        c => c,
                    })
                    .collect(),
            ),
            Value::String(s) if s.starts_with("http") => {
                let (base, query) = s.split_once('?').unwrap_or((s, ""));
                Value::String(if query.is_empty() {
                    base.to_owned()
                } else {
                    format!("{base}?<{} chars>", query.len())
                })
            }
            Value::String(s) => Value::String(format!("<string, {} chars>", s.len())),
            Value::Array(a) => Value::Array(a.iter().map(mask).collect()),
            Value::Object(o) => Value::Object(o.iter().map(|(k, v)| (k.clone(), mask(v))).collect()),
            other => other.clone(),
        }
    }
    let body = match serde_json::from_slice::<serde_json::Value>(resp.body()) {
        Ok(v) => mask(&v).to_string(),
        Err(_) => format!("<{} bytes, not JSON>", resp.body().len()),
    };
    let content_type = resp.headers().get(http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("-");
    format!("HTTP {} ({content_type}) {body}", resp.status().as_u16())
}

fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// What the approval command did.
struct Approval {
    started: Instant,
    finished: Instant,
}

/// Runs the user's step on oidc-provider's pages (approve.mjs) for `user_code`; panics with its output if it fails.
async fn approve(cfg: &Config, user_code: &str) -> Approval {
    let mut command = std::process::Command::new(&cfg.approve[0]);
    command.args(&cfg.approve[1..]).args(["--issuer", &cfg.issuer, "--user-code", user_code]);
    command.current_dir(workspace_root());
    let started = Instant::now();
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .expect("the approval thread")
        .unwrap_or_else(|e| panic!("could not start the approval command ({ENV_APPROVE}): {e}"));
    let finished = Instant::now();
    assert!(
        output.status.success(),
        "the approval command failed ({}): {}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    println!(
        "approval: {:.1} s, {}",
        (finished - started).as_secs_f64(),
        String::from_utf8_lossy(&output.stdout).trim()
    );
    Approval { started, finished }
}

/// RFC 8628 §3.1–3.2: a registration-style device code for `emb-acme` (docs/protocol.md §3.7). The Roger
/// description parameters are extensions oidc-provider ignores; `scope=roger.device` alone gets a refresh token
/// (provider.mjs's issueRefreshToken: no `offline_access` needed).
async fn device_code(
    driver: &Driver<Wire, SystemClock>,
    endpoints: &Endpoints,
) -> (Instant, DeviceAuthorizationResponse) {
    let request = DeviceAuthorizationRequest::registration(CLIENT, "interop-printer", "SN-OIDC-1")
        .to_http(&endpoints.device_authorization, None)
        .expect("a device authorization request");
    let resp = driver.send(request).await.expect("an answer from the device authorization endpoint");
    let received = Instant::now();
    let auth = device_authorization::classify(&resp).unwrap_or_else(|e| {
        panic!("roger-proto refused oidc-provider's device authorization answer: {e}\n  answer shape: {}", shape(&resp))
    });
    (received, auth)
}

/// RFC 6749 §6 with `token::classify`.
async fn refresh(
    driver: &Driver<Wire, SystemClock>,
    endpoints: &Endpoints,
    refresh_token: &RefreshToken,
) -> Result<TokenResponse, ResponseError> {
    let request =
        TokenRequest::RefreshToken { refresh_token: refresh_token.clone(), scope: None, client_id: CLIENT.into() }
            .to_http(&endpoints.token, None)
            .expect("a refresh request");
    let resp = driver.send(request).await.expect("an answer from the token endpoint");
    token::classify(&resp)
}

fn assert_invalid_grant(result: Result<TokenResponse, ResponseError>, what: &str) {
    match result {
        Err(e) => {
            assert_eq!(e.oauth_code(), Some(&OAuthErrorCode::InvalidGrant), "{what}: expected invalid_grant, got {e}")
        }
        Ok(_) => panic!("{what}: expected invalid_grant, got tokens"),
    }
}

fn granted(result: PollResult, log: &[Exchange]) -> Box<TokenResponse> {
    match result {
        PollResult::Granted(t) => t,
        other => panic!("the device grant ended with {other:?}; polls: {log:#?}"),
    }
}

fn print_log(start: Instant, log: &[Exchange]) {
    for e in log {
        println!(
            "  +{:>6.3} s  {:<4} {:<42} {:<45} -> {:?}{}",
            (e.sent - start).as_secs_f64(),
            e.method.as_str(),
            e.path,
            e.grant_type.as_deref().unwrap_or("-"),
            e.answer,
            if e.delivered { "" } else { "  (duplicate, not delivered)" }
        );
    }
}

#[tokio::test]
async fn device_grant_rotation_reuse_and_revocation_against_oidc_provider() {
    let Some(cfg) = Config::from_env() else { return };
    let start = Instant::now();
    println!("peer: oidc-provider at {}", cfg.issuer);
    let transport = ReqwestTransport::new(None).expect("the reqwest transport");
    let driver = Driver::with_clock(Wire::new(transport), SystemClock).request_timeout(Duration::from_secs(10));

    // 1. RFC 8414 §3 metadata (docs/protocol.md §3.3). oidc-provider serves the same document at
    //    /.well-known/oauth-authorization-server and /.well-known/openid-configuration; the issuer is exactly the
    //    configured origin (R-META-1) and every endpoint sits on it. Plain HTTP is allowed on loopback (R-DISC-2).
    let endpoints = driver
        .metadata(&cfg.issuer, TransportPolicy::AllowLoopbackPlain)
        .await
        .unwrap_or_else(|e| panic!("roger-proto refused oidc-provider's metadata: {e}"));
    assert_eq!(endpoints.api, cfg.issuer);
    assert_eq!(endpoints.token, format!("{}/token", cfg.issuer));
    assert_eq!(endpoints.device_authorization, format!("{}/device/auth", cfg.issuer));
    assert_eq!(endpoints.revocation, format!("{}/token/revocation", cfg.issuer), "from revocation_endpoint");
    assert!(!endpoints.push, "no roger_push member: no push");

    // 2. RFC 8628 §3.2. oidc-provider's user codes are 8 of BCDFGHJKLMNPQRSTVWXZ with a hyphen after the fourth
    //    (its default mask `****-****`, RFC 8628 §6.1); verification_uri_complete is verification_uri with
    //    `?user_code=` and the hyphenated code; no `interval` member; `expires_in` a JSON number.
    let (issued, auth) = device_code(&driver, &endpoints).await;
    let code = auth.user_code.secret().to_owned();
    assert!(
        code.len() == 9
            && code.as_bytes()[4] == b'-'
            && code.bytes().enumerate().all(|(i, b)| i == 4 || roger_proto::user_code::ALPHABET.contains(&b)),
        "oidc-provider's default user code is XXXX-XXXX in base-20, and roger-proto keeps the server's value"
    );
    assert_eq!(auth.verification_uri, format!("{}/device", cfg.issuer));
    assert_eq!(
        auth.verification_uri_complete.as_ref().map(|u| u.secret().to_owned()),
        Some(format!("{}/device?user_code={code}", cfg.issuer))
    );
    assert_eq!(auth.interval, None, "oidc-provider advertises no interval: RFC 8628 §3.2's 5 s applies");
    assert_eq!(auth.expires_in, 600, "provider.mjs's DeviceCode ttl");

    // 3. RFC 8628 §3.4–3.5 polling (docs/protocol.md §5.1, §6). The first poll goes one interval after the code
    //    was issued and is duplicated by the network; the user's step starts after the first
    //    authorization_pending.
    let first_poll = driver.transport().log().len();
    driver.transport().duplicate_next_poll.store(true, Ordering::SeqCst);
    let mut poller = DevicePoller::new(issued, &auth, CLIENT, PollerConfig::default());
    assert_eq!(poller.interval(), DEFAULT_INTERVAL);
    let pending = Arc::clone(&driver.transport().pending);
    let user_step = async {
        tokio::time::timeout(APPROVAL_TIMEOUT, pending.notified())
            .await
            .expect("an authorization_pending answer before the user's step");
        approve(&cfg, &code).await
    };
    let (result, approval) = tokio::time::timeout(GRANT_TIMEOUT, async {
        tokio::join!(driver.run_poller(&endpoints.token, &mut poller, || None), user_step)
    })
    .await
    .unwrap_or_else(|_| {
        panic!("the device grant did not end in {GRANT_TIMEOUT:?}; log: {:#?}", driver.transport().log())
    });
    let result = result.expect("the poller loop");
    let polls = driver.transport().polls_since(first_poll);
    println!("device grant:");
    print_log(start, &polls);
    let tokens = granted(result, &polls);

    // What was sent, and what came back, in order: the copy and the delivered duplicate of poll 1, then the
    // later polls until the tokens.
    assert!(polls.len() >= 3, "two copies of the first poll and at least one more: {polls:#?}");
    let (copy, delivered, later) = (&polls[0], &polls[1], &polls[2..]);
    assert!(!copy.delivered && delivered.delivered, "the first exchange is the network's extra copy");
    assert!(copy.answer.is(&OAuthErrorCode::AuthorizationPending), "the first poll arrives before approval");
    assert!(approval.started >= copy.answered, "the user's step starts after an authorization_pending");
    // oidc-provider does not enforce the interval: a poll milliseconds after the previous one is answered
    // authorization_pending again (lib/actions/grants/device_code.js has no slow_down branch), and the poller keeps
    // RFC 8628 §3.2's 5 s.
    assert!(
        delivered.answer.is(&OAuthErrorCode::AuthorizationPending),
        "oidc-provider answers a too-early poll authorization_pending: {delivered:?}"
    );
    assert_eq!(poller.interval(), DEFAULT_INTERVAL);
    let interval = DEFAULT_INTERVAL;
    // R-POLL-1: the next poll waits the whole (new) interval from the first one, and not a back-off step more.
    let gap = later[0].sent - copy.sent;
    assert!(
        gap + STAMP_SLACK >= interval && gap <= interval + LATE_SLACK,
        "the poll after the first waited {gap:?}, expected {interval:?}"
    );
    for pair in later.windows(2) {
        let gap = pair[1].sent - pair[0].sent;
        assert!(gap + STAMP_SLACK >= interval, "two later polls {gap:?} apart, under the interval {interval:?}");
    }
    // authorization_pending → … → tokens: every later poll but the last is pending (the user's step
    // may still be running), the last one brings the tokens, and it was sent after the approval finished.
    let (last, middle) = later.split_last().expect("a later poll");
    assert!(middle.iter().all(|e| e.answer.is(&OAuthErrorCode::AuthorizationPending)), "{middle:#?}");
    assert_eq!(last.answer, Answer::Tokens);
    assert!(last.sent >= approval.finished, "the tokens come from the first poll after the approval");
    assert!(polls.iter().all(|e| e.answer != Answer::Transport), "no transport failure: {polls:#?}");

    // RFC 6749 §5.1 as oidc-provider sends it: token_type "Bearer", expires_in a number, the granted scope, and a
    // refresh token for the device grant. No Roger members (device_id, tenant_id): it is not a Roger server.
    assert!(tokens.is_bearer());
    assert_eq!(tokens.expires_in, Some(1200), "provider.mjs's AccessToken ttl");
    assert!(tokens.has_scope(scope::DEVICE), "granted scope: {:?}", tokens.scope);
    let rt1 = tokens.refresh_token.clone().expect("a refresh token for the device grant");

    // 4a. Rotation (RFC 6749 §6, RFC 9700 §4.14.2, R-TOK-2): the refresh answer carries a new refresh token.
    let second = refresh(&driver, &endpoints, &rt1).await.expect("a refresh with the first refresh token");
    let rt2 = second.refresh_token.clone().expect("a rotated refresh token");
    assert_ne!(rt2, rt1, "R-TOK-2: a new refresh token on every refresh");
    assert_ne!(second.access_token, tokens.access_token);
    assert!(second.has_scope(scope::DEVICE));

    // 4b. The old refresh token again. oidc-provider treats any second use of a rotated refresh token as reuse
    //     (lib/actions/grants/refresh_token.js: a consumed token → destroy it, revoke the whole grant,
    //     invalid_grant "refresh token already used"): RFC 9700 §4.14.2 reuse detection, with no grace. R-TOK-3
    //     keeps the old token redeemable until its successor's first use (a lost refresh answer is recoverable);
    //     oidc-provider does not, so a client that retries a refresh whose answer was lost loses the family here.
    assert_invalid_grant(refresh(&driver, &endpoints, &rt1).await, "the rotated-out refresh token");
    assert_invalid_grant(
        refresh(&driver, &endpoints, &rt2).await,
        "the successor after reuse (oidc-provider revokes the family)",
    );

    // 5. RFC 7009 on a second grant (the first family is gone). The user approves before the first poll (one
    //    interval after issuance), so that poll brings the tokens.
    let (issued, auth) = device_code(&driver, &endpoints).await;
    approve(&cfg, auth.user_code.secret()).await;
    let mut poller = DevicePoller::new(issued, &auth, CLIENT, PollerConfig::default());
    let before = driver.transport().log().len();
    let result = driver.run_poller(&endpoints.token, &mut poller, || None).await.expect("the poller loop");
    let tokens = granted(result, &driver.transport().polls_since(before));
    let rt = tokens.refresh_token.clone().expect("a refresh token for the second grant");
    let revoke = |token: &RefreshToken| {
        RevocationRequest::refresh(token, CLIENT).to_http(&endpoints.revocation, None).expect("a revocation request")
    };
    // RFC 7009 §2.2: 200; oidc-provider sends an empty text/plain body and no no-store header.
    let resp = driver.send(revoke(&rt)).await.expect("an answer from the revocation endpoint");
    revocation::classify(&resp)
        .unwrap_or_else(|e| panic!("roger-proto refused the revocation answer: {e}; {}", shape(&resp)));
    assert_eq!(resp.status(), 200);
    // The revoked refresh token is dead (RFC 7009 §2.1; docs/protocol.md §3.5.4).
    assert_invalid_grant(refresh(&driver, &endpoints, &rt).await, "the revoked refresh token");
    // RFC 7009 §2.2: an unknown (here: already revoked) token is answered 200 as well.
    let resp = driver.send(revoke(&rt)).await.expect("an answer from the revocation endpoint");
    revocation::classify(&resp).expect("200 for a token revoked already (RFC 7009 §2.2)");

    println!("all requests:");
    print_log(start, &driver.transport().log());
    println!("done in {:.1} s", start.elapsed().as_secs_f64());
}
