//! Known-broken variants of the simulated MFP ("mutants", DESIGN.md "Conformance": "known-broken variants of our
//! own MFP and server prove the suite: every mutant must be caught by at least one case").
//!
//! `roger-sim mfp --mutant NAME` (also with `--shim`), or [`MfpConfig::mutant`](crate::mfp::MfpConfig::mutant) /
//! [`ShimOptions::mutant`](crate::mfp::shim::ShimOptions::mutant) in process, runs a printer that makes exactly one
//! real-world mistake, named by an [`MfpMutant`], and says so loudly on stderr when it powers on.
//!
//! The printer's protocol behaviour lives in roger-proto's state machines, which stay correct: a vendor reads that
//! library, and it has no switch that turns a rule off. The mistakes are made around the machines instead, where a
//! careless firmware would make them:
//! * in the printer's HTTP layer (`MfpTransport`, under the machines' driver), which distorts what goes out and
//!   what comes back: a rewritten `interval` or `expires_in`, a `slow_down` read as something else, a retired
//!   refresh token presented, the bearer token copied into the query, a password grant sent twice, the PIN
//!   written to the state directory, tokens written to the log, a `401` taken for the end of the registration,
//!   certificates not checked;
//! * in the panel's display ([`MfpMutant::QrWithoutUserCode`], in `runtime.rs`).
//!
//! Each mistake shows on the wire, on the panel, in the log or on disk, where the conformance runner looks.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use http::{header, HeaderValue, Request, Response, StatusCode};
use roger_proto::driver::reqwest_transport::{install_crypto_provider, ReqwestTransport};
use roger_proto::driver::{HttpTransport, TransportError, TransportErrorKind};
use roger_proto::metadata::{GRANT_DEVICE_CODE, WELL_KNOWN_PATH};
use roger_proto::wire::{encode_form, Form};
use serde::Serialize;

use super::runtime::{lock, EventLog};
use super::state;

/// One mistake a real printer makes (test-only; see the module documentation). The names are fixed: the
/// conformance runner uses them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum MfpMutant {
    /// Polls every second whatever the interval.
    PollTooFast,
    /// Reads `slow_down` as `authorization_pending`.
    IgnoreSlowDown,
    /// Waits longer once after `slow_down`, then polls at the old interval again.
    ResetInterval,
    /// Keeps polling after `access_denied`.
    PollAfterDenied,
    /// Presents a refresh token older than the newest it received.
    ReuseOldRefresh,
    /// Refreshes only after the access token has been refused.
    NoEarlyRefresh,
    /// Abandons a user's flow on a device-bound `401 invalid_client`.
    GiveUpInvalidClient,
    /// Drops its registration on any `401`.
    Every401Fatal,
    /// Shows the QR code without the user code.
    QrWithoutUserCode,
    /// Never renews the session QR code.
    NeverRenewQr,
    /// Uses metadata whose `issuer` is not the API base.
    IgnoreIssuer,
    /// Accepts any TLS certificate.
    SkipTlsVerify,
    /// Sends the bearer token in the query string too.
    TokenInQuery,
    /// Sends every password grant twice.
    ResendPin,
    /// Writes the PIN into its state directory.
    KeepPin,
    /// Writes the tokens it receives to its log.
    LogTokens,
    /// Acts on a `session.ended` doorbell without confirming it over HTTPS.
    TrustDoorbell,
    /// Keeps its relaxed push cadence after the broker connection is lost.
    NoPollFallback,
}

impl MfpMutant {
    /// Every MFP mutant, in the order of the issue.
    pub const ALL: [MfpMutant; 18] = [
        Self::PollTooFast,
        Self::IgnoreSlowDown,
        Self::ResetInterval,
        Self::PollAfterDenied,
        Self::ReuseOldRefresh,
        Self::NoEarlyRefresh,
        Self::GiveUpInvalidClient,
        Self::Every401Fatal,
        Self::QrWithoutUserCode,
        Self::NeverRenewQr,
        Self::IgnoreIssuer,
        Self::SkipTlsVerify,
        Self::TokenInQuery,
        Self::ResendPin,
        Self::KeepPin,
        Self::LogTokens,
        Self::TrustDoorbell,
        Self::NoPollFallback,
    ];

    /// The fixed name (`--mutant NAME`).
    pub fn name(self) -> &'static str {
        match self {
            Self::PollTooFast => "poll-too-fast",
            Self::IgnoreSlowDown => "ignore-slow-down",
            Self::ResetInterval => "reset-interval",
            Self::PollAfterDenied => "poll-after-denied",
            Self::ReuseOldRefresh => "reuse-old-refresh",
            Self::NoEarlyRefresh => "no-early-refresh",
            Self::GiveUpInvalidClient => "give-up-invalid-client",
            Self::Every401Fatal => "every-401-fatal",
            Self::QrWithoutUserCode => "qr-without-user-code",
            Self::NeverRenewQr => "never-renew-qr",
            Self::IgnoreIssuer => "ignore-issuer",
            Self::SkipTlsVerify => "skip-tls-verify",
            Self::TokenInQuery => "token-in-query",
            Self::ResendPin => "resend-pin",
            Self::KeepPin => "keep-pin",
            Self::LogTokens => "log-tokens",
            Self::TrustDoorbell => "trust-doorbell",
            Self::NoPollFallback => "no-poll-fallback",
        }
    }

    /// The real-world mistake, in one line.
    pub fn description(self) -> &'static str {
        match self {
            Self::PollTooFast => {
                "polls device codes every second whatever the server's interval (shows with an interval of 2 s or \
                 more)"
            }
            Self::IgnoreSlowDown => "treats slow_down like authorization_pending: the interval never grows",
            Self::ResetInterval => "after slow_down waits interval + 5 s once, then polls at the old interval again",
            Self::PollAfterDenied => "keeps polling a device code after access_denied, until it expires",
            Self::ReuseOldRefresh => {
                "presents the refresh token of its previous refresh instead of the newest one (the family is revoked \
                 at the third refresh)"
            }
            Self::NoEarlyRefresh => {
                "never refreshes ahead: uses the access token until the server refuses it, then refreshes"
            }
            Self::GiveUpInvalidClient => {
                "abandons the QR or PIN flow on a device-bound 401 invalid_client instead of refreshing and retrying"
            }
            Self::Every401Fatal => {
                "takes any 401 for the end of its registration: drops it and goes disconnected without refreshing"
            }
            Self::QrWithoutUserCode => "shows the QR code but not the user code beside it",
            Self::NeverRenewQr => "never renews the session QR code and keeps showing it after it expired",
            Self::IgnoreIssuer => "uses metadata whose issuer differs from the API base it fetched it from",
            Self::SkipTlsVerify => "accepts any TLS certificate (no chain, name or expiry check)",
            Self::TokenInQuery => "sends its bearer token in the query string (?access_token=) of API calls too",
            Self::ResendPin => "sends every password grant twice, the second time unasked",
            Self::KeepPin => "writes the user name and PIN of every PIN entry into its state directory",
            Self::LogTokens => "writes every access and refresh token it receives to its log (stderr)",
            Self::TrustDoorbell => {
                "takes a session.ended doorbell at its word: logs the user out at once instead of confirming over \
                 HTTPS that the session ended (shows with a broker)"
            }
            Self::NoPollFallback => {
                "never notices that its broker connection is gone: keeps polling at the relaxed push cadence (30 s) \
                 instead of the interval, so a missed doorbell delays the session (shows with a broker)"
            }
        }
    }

    /// The rule the mistake breaks (rule ID of docs/protocol.md and the RFC section).
    pub fn rule(self) -> &'static str {
        match self {
            Self::PollTooFast => "R-POLL-1, RFC 8628 §3.2, §3.5",
            Self::IgnoreSlowDown => "R-POLL-1, RFC 8628 §3.5",
            Self::ResetInterval => "R-POLL-1, RFC 8628 §3.5",
            Self::PollAfterDenied => "RFC 8628 §3.5",
            Self::ReuseOldRefresh => "R-TOK-2, RFC 9700 §4.14.2",
            Self::NoEarlyRefresh => "R-TOK-1, RFC 6749 §10.4",
            Self::GiveUpInvalidClient => "R-TOK-1, PROTOCOL.md §7",
            Self::Every401Fatal => "R-TOK-1, R-TOK-4, RFC 6750 §3.1",
            Self::QrWithoutUserCode => "R-QR-1, RFC 8628 §3.3.1",
            Self::NeverRenewQr => "R-QR-3, RFC 8628 §3.2",
            Self::IgnoreIssuer => "R-META-1, RFC 8414 §3.3",
            Self::SkipTlsVerify => "R-DISC-2, RFC 6749 §10.9",
            Self::TokenInQuery => "PROTOCOL.md §1.4 bearer tokens, RFC 6750 §2.1, §5.3",
            Self::ResendPin => "R-PWD-1, RFC 6749 §4.3.1",
            Self::KeepPin => "R-PWD-1, RFC 6749 §4.3.1",
            Self::LogTokens => "R-SEC-1, RFC 6749 §10.3",
            Self::TrustDoorbell => "R-PUSH-1, PROTOCOL.md §11",
            Self::NoPollFallback => "R-PUSH-1, PROTOCOL.md §8",
        }
    }

    /// The loud power-on warning.
    pub fn warning(self) -> String {
        format!(
            "WARNING: MUTANT PRINTER `{}` ACTIVE: it deliberately {} (breaks {}). For testing the conformance suite \
             only; never use it for anything else.",
            self.name(),
            self.description(),
            self.rule()
        )
    }
}

impl fmt::Display for MfpMutant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An unknown mutant name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown MFP mutant {given:?}; known: {}", MfpMutant::ALL.map(MfpMutant::name).join(", "))]
pub struct UnknownMutant {
    /// What was given.
    pub given: String,
}

impl FromStr for MfpMutant {
    type Err = UnknownMutant;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL.into_iter().find(|m| m.name() == s).ok_or_else(|| UnknownMutant { given: s.to_owned() })
    }
}

impl clap::ValueEnum for MfpMutant {
    fn value_variants<'a>() -> &'a [Self] {
        &Self::ALL
    }

    fn to_possible_value(&self) -> Option<clap::builder::PossibleValue> {
        Some(clap::builder::PossibleValue::new(self.name()).help(self.description()))
    }
}

impl Serialize for MfpMutant {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

/// The file [`MfpMutant::KeepPin`] writes into the state directory (exactly what R-PWD-1 forbids).
pub const KEPT_PIN_FILE: &str = "last-login.json";

/// The `expires_in` [`MfpMutant::NoEarlyRefresh`] believes for device tokens: 90 days, the longest the lifecycle
/// accepts (so its refresh-ahead point never comes).
const BELIEVED_TOKEN_LIFETIME: u64 = 90 * 24 * 3600;

/// The `expires_in` [`MfpMutant::NeverRenewQr`] believes for session codes: a day, the longest the panel accepts
/// (so its renewal point never comes).
const BELIEVED_CODE_LIFETIME: u64 = 24 * 3600;

/// What the mutant's HTTP layer remembers between requests.
#[derive(Debug, Default)]
struct Memory {
    /// [`MfpMutant::ResetInterval`]: the interval each device code started with.
    intervals: HashMap<String, u64>,
    /// [`MfpMutant::NeverRenewQr`]: the session codes whose lifetime was stretched.
    stretched: HashSet<String>,
    /// [`MfpMutant::ReuseOldRefresh`]: the refresh token the machines presented last time.
    previous_refresh: Option<String>,
    /// [`MfpMutant::Every401Fatal`]: a `401` arrived; the next refresh is given up.
    fatal: bool,
}

/// The printer's HTTP layer: reqwest with rustls (certificates verified), and, for a mutant, the distortion that
/// makes its mistake (see the module documentation). Clones share the mutant's memory.
#[derive(Clone)]
pub(crate) struct MfpTransport {
    inner: ReqwestTransport,
    mutant: Option<MfpMutant>,
    state_dir: PathBuf,
    log: Arc<EventLog>,
    memory: Arc<Mutex<Memory>>,
}

impl fmt::Debug for MfpTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MfpTransport").field("mutant", &self.mutant).finish_non_exhaustive()
    }
}

/// What a request is, read before it is sent (the request itself goes to the transport).
#[derive(Debug, Default)]
struct Outgoing {
    path: String,
    origin: String,
    /// The form of a `POST /oauth/*` request.
    form: Option<Form>,
    device_bound: bool,
}

impl Outgoing {
    fn of(req: &Request<Vec<u8>>) -> Self {
        let uri = req.uri();
        let path = uri.path().to_owned();
        let origin = match (uri.scheme_str(), uri.authority()) {
            (Some(s), Some(a)) => format!("{s}://{a}"),
            _ => String::new(),
        };
        let form = (req.method() == http::Method::POST && path.starts_with("/oauth/"))
            .then(|| Form::parse(req.body()).ok())
            .flatten();
        Self { path, origin, form, device_bound: req.headers().contains_key(header::AUTHORIZATION) }
    }

    fn param(&self, name: &str) -> Option<&str> {
        self.form.as_ref().and_then(|f| f.get(name))
    }

    fn is_grant(&self, grant: &str) -> bool {
        self.path == "/oauth/token" && self.param("grant_type") == Some(grant)
    }

    fn is_poll(&self) -> bool {
        self.is_grant(GRANT_DEVICE_CODE)
    }
}

impl MfpTransport {
    /// The printer's transport: TLS verified against the system roots and `extra_ca_pem`, unless the mutant is
    /// [`MfpMutant::SkipTlsVerify`].
    pub(crate) fn new(
        extra_ca_pem: Option<&[u8]>,
        mutant: Option<MfpMutant>,
        state_dir: PathBuf,
        log: Arc<EventLog>,
    ) -> Result<Self, TransportError> {
        let inner = match mutant {
            Some(MfpMutant::SkipTlsVerify) => insecure_transport()?,
            _ => ReqwestTransport::new(extra_ca_pem)?,
        };
        Ok(Self { inner, mutant, state_dir, log, memory: Arc::new(Mutex::new(Memory::default())) })
    }

    fn say(&self, line: String) {
        self.log.say(format!("[mutant {}] {line}", self.mutant.map(MfpMutant::name).unwrap_or("none")));
    }

    /// Sends `req` as the mutant would (see [`MfpMutant`]).
    async fn send_mutated(&self, m: MfpMutant, req: Request<Vec<u8>>) -> Result<Response<Vec<u8>>, TransportError> {
        let out = Outgoing::of(&req);
        let req = match m {
            MfpMutant::ReuseOldRefresh if out.is_grant("refresh_token") => self.present_previous_refresh(&out, req),
            MfpMutant::TokenInQuery if out.path.starts_with("/api/") => token_in_query(req),
            MfpMutant::KeepPin if out.is_grant("password") => {
                self.keep_pin(&out);
                req
            }
            MfpMutant::Every401Fatal if out.is_grant("refresh_token") && lock(&self.memory).fatal => {
                lock(&self.memory).fatal = false;
                self.say("giving up the registration after the 401 (no refresh is sent)".into());
                return Ok(oauth_error(400, "invalid_grant", None));
            }
            _ => req,
        };
        let resend = (m == MfpMutant::ResendPin && out.is_grant("password")).then(|| copy(&req));
        let resp = self.inner.send(req).await?;
        if let Some(Ok(again)) = resend {
            // The answer of the unasked repeat is dropped: the machines asked for one request.
            let _ = self.inner.send(again).await;
        }
        Ok(self.distort_answer(m, &out, resp))
    }

    /// The answer as the mutant reads it.
    fn distort_answer(&self, m: MfpMutant, out: &Outgoing, resp: Response<Vec<u8>>) -> Response<Vec<u8>> {
        let status = resp.status().as_u16();
        let error = oauth_error_code(&resp);
        match m {
            MfpMutant::PollTooFast if out.path == "/oauth/device_authorization" && status == 200 => {
                with_json(resp, |j| {
                    j.insert("interval".into(), 1.into());
                })
            }
            MfpMutant::ResetInterval if out.path == "/oauth/device_authorization" && status == 200 => {
                if let Ok(j) = serde_json::from_slice::<serde_json::Value>(resp.body()) {
                    if let Some(code) = j.get("device_code").and_then(|c| c.as_str()) {
                        let interval = j.get("interval").and_then(|i| i.as_u64()).unwrap_or(5).max(1);
                        lock(&self.memory).intervals.insert(code.to_owned(), interval);
                    }
                }
                resp
            }
            MfpMutant::ResetInterval if out.is_poll() && error.as_deref() == Some("slow_down") => {
                // Read as a temporary refusal: one longer wait (interval + 5 s), then the old interval again.
                let interval = out.param("device_code").and_then(|c| lock(&self.memory).intervals.get(c).copied());
                oauth_error(429, "temporarily_unavailable", Some(interval.unwrap_or(5) + 5))
            }
            MfpMutant::IgnoreSlowDown if out.is_poll() && error.as_deref() == Some("slow_down") => {
                oauth_error(400, "authorization_pending", None)
            }
            MfpMutant::PollAfterDenied if out.is_poll() && error.as_deref() == Some("access_denied") => {
                oauth_error(400, "authorization_pending", None)
            }
            MfpMutant::NeverRenewQr
                if out.path == "/oauth/device_authorization"
                    && out.param("scope") == Some(roger_proto::token::scope::RELEASE)
                    && status == 200 =>
            {
                with_json(resp, |j| {
                    if let Some(code) = j.get("device_code").and_then(|c| c.as_str()) {
                        lock(&self.memory).stretched.insert(code.to_owned());
                    }
                    j.insert("expires_in".into(), BELIEVED_CODE_LIFETIME.into());
                })
            }
            MfpMutant::NeverRenewQr
                if out.is_poll()
                    && error.as_deref() == Some("expired_token")
                    && out.param("device_code").is_some_and(|c| lock(&self.memory).stretched.contains(c)) =>
            {
                oauth_error(400, "authorization_pending", None)
            }
            MfpMutant::NoEarlyRefresh if out.path == "/oauth/token" && status == 200 => with_json(resp, |j| {
                if j.contains_key("refresh_token") {
                    j.insert("expires_in".into(), BELIEVED_TOKEN_LIFETIME.into());
                }
            }),
            MfpMutant::IgnoreIssuer if out.path == WELL_KNOWN_PATH && status == 200 => {
                let origin = out.origin.clone();
                with_json(resp, |j| {
                    j.insert("issuer".into(), origin.into());
                })
            }
            MfpMutant::GiveUpInvalidClient
                if out.device_bound && status == 401 && error.as_deref() == Some("invalid_client") =>
            {
                // A refusal for good, as far as this printer is concerned: no refresh, no retry.
                oauth_error(400, "invalid_client", None)
            }
            MfpMutant::Every401Fatal if status == 401 => {
                lock(&self.memory).fatal = true;
                self.say(format!("{} answered 401: treating it as fatal", out.path));
                resp
            }
            MfpMutant::LogTokens if out.path == "/oauth/token" && status == 200 => {
                if let Ok(j) = serde_json::from_slice::<serde_json::Value>(resp.body()) {
                    for kind in ["access_token", "refresh_token"] {
                        if let Some(t) = j.get(kind).and_then(|t| t.as_str()) {
                            self.say(format!("received {kind} {t}"));
                        }
                    }
                }
                resp
            }
            _ => resp,
        }
    }

    /// [`MfpMutant::ReuseOldRefresh`]: presents the token the machines presented last time, when they now present
    /// a newer one.
    fn present_previous_refresh(&self, out: &Outgoing, req: Request<Vec<u8>>) -> Request<Vec<u8>> {
        let (Some(form), Some(newest)) = (&out.form, out.param("refresh_token")) else { return req };
        let previous = lock(&self.memory).previous_refresh.replace(newest.to_owned());
        let Some(old) = previous.filter(|p| p != newest) else { return req };
        let body =
            encode_form(form.pairs().map(|(k, v)| (k, Some(if k == "refresh_token" { old.as_str() } else { v }))));
        let (mut parts, _) = req.into_parts();
        parts.headers.remove(header::CONTENT_LENGTH);
        Request::from_parts(parts, body)
    }

    /// [`MfpMutant::KeepPin`]: writes the user name and PIN of a password grant into the state directory.
    fn keep_pin(&self, out: &Outgoing) {
        let kept = serde_json::json!({
            "username": out.param("username").unwrap_or_default(),
            "pin": out.param("password").unwrap_or_default(),
        });
        if let Err(e) = state::write_atomically(&self.state_dir, KEPT_PIN_FILE, kept.to_string().as_bytes()) {
            self.say(format!("could not keep the PIN: {e}"));
        }
    }
}

#[async_trait]
impl HttpTransport for MfpTransport {
    async fn send(&self, request: Request<Vec<u8>>) -> Result<Response<Vec<u8>>, TransportError> {
        match self.mutant {
            None | Some(MfpMutant::QrWithoutUserCode | MfpMutant::SkipTlsVerify) => self.inner.send(request).await,
            Some(m) => self.send_mutated(m, request).await,
        }
    }
}

/// A copy of a request (method, URI, headers, body) for an unasked repeat.
fn copy(req: &Request<Vec<u8>>) -> Result<Request<Vec<u8>>, http::Error> {
    let mut b = Request::builder().method(req.method().clone()).uri(req.uri().clone()).version(req.version());
    if let Some(h) = b.headers_mut() {
        *h = req.headers().clone();
    }
    b.body(req.body().clone())
}

/// [`MfpMutant::TokenInQuery`]: the bearer token of the `Authorization` header also goes into the query string
/// (RFC 6750 §2.3's method, which Roger forbids); the header stays, so the server still answers.
fn token_in_query(req: Request<Vec<u8>>) -> Request<Vec<u8>> {
    let token = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_owned);
    let Some(token) = token else { return req };
    let uri = req.uri().to_string();
    let encoded: String = form_urlencoded::byte_serialize(token.as_bytes()).collect();
    let sep = if uri.contains('?') { '&' } else { '?' };
    let Ok(uri) = format!("{uri}{sep}access_token={encoded}").parse::<http::Uri>() else { return req };
    let (mut parts, body) = req.into_parts();
    parts.uri = uri;
    Request::from_parts(parts, body)
}

/// The OAuth `error` member of an answer (RFC 6749 §5.2), if it has one.
fn oauth_error_code(resp: &Response<Vec<u8>>) -> Option<String> {
    if resp.status().is_success() {
        return None;
    }
    let j: serde_json::Value = serde_json::from_slice(resp.body()).ok()?;
    j.get("error")?.as_str().map(str::to_owned)
}

/// An RFC 6749 §5.2 error answer as the mutant pretends to have received it.
fn oauth_error(status: u16, error: &str, retry_after: Option<u64>) -> Response<Vec<u8>> {
    let mut r = Response::new(serde_json::json!({ "error": error }).to_string().into_bytes());
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if let Some(s) = retry_after {
        r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(s));
    }
    r
}

/// The answer with its JSON object body changed by `f` (unchanged if the body is not a JSON object).
fn with_json(
    resp: Response<Vec<u8>>,
    f: impl FnOnce(&mut serde_json::Map<String, serde_json::Value>),
) -> Response<Vec<u8>> {
    let Ok(serde_json::Value::Object(mut j)) = serde_json::from_slice::<serde_json::Value>(resp.body()) else {
        return resp;
    };
    f(&mut j);
    let (mut parts, _) = resp.into_parts();
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, serde_json::Value::Object(j).to_string().into_bytes())
}

/// [`MfpMutant::SkipTlsVerify`]: a reqwest transport whose rustls configuration accepts every certificate (the
/// handshake signatures are still checked, so the connection works; who is on the other end is not).
fn insecure_transport() -> Result<ReqwestTransport, TransportError> {
    install_crypto_provider();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| TransportError::new(TransportErrorKind::Tls, e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate(provider)))
        .with_no_client_auth();
    let client = reqwest::Client::builder()
        .use_preconfigured_tls(config)
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .connect_timeout(std::time::Duration::from_secs(10))
        .build()
        .map_err(|e| TransportError::new(TransportErrorKind::Other, e.to_string()))?;
    Ok(ReqwestTransport::from_client(client))
}

/// The certificate "verifier" of [`MfpMutant::SkipTlsVerify`].
#[derive(Debug)]
struct AcceptAnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The names are fixed (the conformance runner uses them), unique, and parse back.
    #[test]
    fn names_round_trip() {
        let names: Vec<&str> = MfpMutant::ALL.iter().map(|m| m.name()).collect();
        assert_eq!(
            names,
            [
                "poll-too-fast",
                "ignore-slow-down",
                "reset-interval",
                "poll-after-denied",
                "reuse-old-refresh",
                "no-early-refresh",
                "give-up-invalid-client",
                "every-401-fatal",
                "qr-without-user-code",
                "never-renew-qr",
                "ignore-issuer",
                "skip-tls-verify",
                "token-in-query",
                "resend-pin",
                "keep-pin",
                "log-tokens",
                "trust-doorbell",
                "no-poll-fallback"
            ]
        );
        for m in MfpMutant::ALL {
            assert_eq!(m.name().parse::<MfpMutant>(), Ok(m));
            assert_eq!(<MfpMutant as clap::ValueEnum>::from_str(m.name(), false), Ok(m));
            assert_eq!(m.to_string(), m.name());
            assert!(!m.description().is_empty() && m.rule().contains(char::is_numeric), "{m}");
            assert!(m.warning().contains(m.name()));
        }
        assert!("poll-too-slow".parse::<MfpMutant>().unwrap_err().to_string().contains("poll-too-fast"));
    }

    /// The bearer token goes into the query (percent-encoded), after an existing query; the header stays.
    #[test]
    fn token_goes_into_the_query() {
        let req = Request::get("http://127.0.0.1:1/api/v1/jobs?state=queued")
            .header(header::AUTHORIZATION, "Bearer rat_a+b")
            .body(Vec::new())
            .expect("request");
        let req = token_in_query(req);
        assert_eq!(req.uri().to_string(), "http://127.0.0.1:1/api/v1/jobs?state=queued&access_token=rat_a%2Bb");
        assert!(req.headers().contains_key(header::AUTHORIZATION));
        let bare = Request::get("http://127.0.0.1:1/api/v1/device").body(Vec::new()).expect("request");
        assert_eq!(token_in_query(bare).uri().path_and_query().map(|p| p.as_str()), Some("/api/v1/device"));
    }

    /// The answers the mutants pretend to have received are RFC 6749 §5.2 errors that roger-proto classifies.
    #[test]
    fn pretended_answers_classify() {
        let e = roger_proto::token::classify(&oauth_error(429, "temporarily_unavailable", Some(6))).unwrap_err();
        assert_eq!(e.retry_after(), Some(std::time::Duration::from_secs(6)));
        let e = roger_proto::token::classify(&oauth_error(400, "authorization_pending", None)).unwrap_err();
        assert_eq!(e.oauth_code(), Some(&roger_proto::error::OAuthErrorCode::AuthorizationPending));
        assert!(!roger_proto::token::classify(&oauth_error(400, "invalid_client", None))
            .unwrap_err()
            .is_token_rejected());
    }
}
