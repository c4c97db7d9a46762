//! Known-broken variants of the simulated server ("mutants", DESIGN.md "Conformance": "known-broken variants of our
//! own MFP and server prove the suite: every mutant must be caught by at least one case").
//!
//! `roger-sim server --mutant NAME` (or [`ServerConfig::mutant`](crate::server::ServerConfig::mutant) in process) runs a
//! server that makes exactly one real-world mistake, named by a [`ServerMutant`], and says so loudly on stderr at
//! start-up. The conformance runner starts each mutant and checks that at least one case fails against it.
//!
//! Where each mistake is made:
//! * in the server core, through its test-only `roger_proto::server::mutations` switch, where the behaviour lives
//!   (polling judgement, redemption, rotation, reuse detection, lost-answer grace, sliding expiry, user codes,
//!   approval rate limit, lock-out, the step-2 user binding);
//! * here, in an answer-rewriting middleware ([`wrap`]) that only exists on a mutant's router: `500` for bad
//!   input, answers without `Cache-Control: no-store`, and a plaintext copy of every token the token endpoint
//!   hands out, kept in the server's state (shown by `GET /sim/store` as `token_cache`, and written to the SQLite
//!   state file with `--state`).

use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, Mutex};

use axum::body::{to_bytes, Body};
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use roger_proto::server::mutations::{Mutation, Mutations};
use serde::Serialize;

use super::app::Shared;

/// One mistake a real server makes (test-only; see the module documentation). The names are fixed: the
/// conformance runner uses them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ServerMutant {
    /// Never answers `slow_down`.
    NoSlowDown,
    /// A device code redeems again and again.
    DoubleRedeem,
    /// A refresh answers the same refresh token.
    NoRotation,
    /// A retired refresh token does not revoke its family.
    NoReuseDetection,
    /// A lost refresh answer cannot be recovered.
    NoLostAnswerGrace,
    /// Refreshes do not extend the 90 days.
    NoSlidingExpiry,
    /// User codes from a tiny space.
    WeakUserCodes,
    /// No limit on approvals with unknown codes.
    NoApprovalRateLimit,
    /// No lock-out after failed logins.
    NoLockout,
    /// `500` instead of a `4xx` for malformed requests.
    Error500OnBadInput,
    /// Answers without `Cache-Control: no-store` and `Pragma: no-cache`.
    NoNoStore,
    /// Keeps a plaintext copy of the tokens it issues.
    PlaintextSecret,
    /// Step 2 is granted to any user with a right PIN, whoever's QR session is open.
    NoStep2Binding,
}

impl ServerMutant {
    /// Every server mutant, in the order of the issue.
    pub const ALL: [ServerMutant; 13] = [
        Self::NoSlowDown,
        Self::DoubleRedeem,
        Self::NoRotation,
        Self::NoReuseDetection,
        Self::NoLostAnswerGrace,
        Self::NoSlidingExpiry,
        Self::WeakUserCodes,
        Self::NoApprovalRateLimit,
        Self::NoLockout,
        Self::Error500OnBadInput,
        Self::NoNoStore,
        Self::PlaintextSecret,
        Self::NoStep2Binding,
    ];

    /// The fixed name (`--mutant NAME`).
    pub fn name(self) -> &'static str {
        match self {
            Self::NoSlowDown => "no-slow-down",
            Self::DoubleRedeem => "double-redeem",
            Self::NoRotation => "no-rotation",
            Self::NoReuseDetection => "no-reuse-detection",
            Self::NoLostAnswerGrace => "no-lost-answer-grace",
            Self::NoSlidingExpiry => "no-sliding-expiry",
            Self::WeakUserCodes => "weak-user-codes",
            Self::NoApprovalRateLimit => "no-approval-rate-limit",
            Self::NoLockout => "no-lockout",
            Self::Error500OnBadInput => "error-500-on-bad-input",
            Self::NoNoStore => "no-no-store",
            Self::PlaintextSecret => "plaintext-secret",
            Self::NoStep2Binding => "no-step2-binding",
        }
    }

    /// The real-world mistake, in one line.
    pub fn description(self) -> &'static str {
        match self {
            Self::NoSlowDown => "never answers slow_down: polls arriving too early are served like any other",
            Self::DoubleRedeem => {
                "a redeemed device code redeems again at any time, minting a new pair and revoking nothing"
            }
            Self::NoRotation => "a refresh answers the presented refresh token again instead of a new one",
            Self::NoReuseDetection => "a retired refresh token is refused, but its family stays valid",
            Self::NoLostAnswerGrace => {
                "the previous refresh token dies at once, so a lost refresh answer is treated as reuse"
            }
            Self::NoSlidingExpiry => "refreshing does not extend the refresh token: it dies 90 days after the grant",
            Self::WeakUserCodes => "user codes use only the letters B and C: 256 codes instead of 20^8",
            Self::NoApprovalRateLimit => "lookups and approvals with unknown codes are never rate-limited",
            Self::NoLockout => "failed PIN and password attempts never lock the user out",
            Self::Error500OnBadInput => "malformed requests get 500 Internal Server Error instead of a 4xx",
            Self::NoNoStore => "answers carry no Cache-Control: no-store and no Pragma: no-cache",
            Self::PlaintextSecret => "keeps a plaintext copy of every token it issues in its state",
            Self::NoStep2Binding => {
                "grants step 2 (roger.print roger.scan) to any user with a right PIN, not only to the user whose QR \
                 session is open at that printer"
            }
        }
    }

    /// The rule the mistake breaks (rule ID of docs/protocol.md and the RFC section).
    pub fn rule(self) -> &'static str {
        match self {
            Self::NoSlowDown => "R-POLL-1, RFC 8628 §3.5",
            Self::DoubleRedeem => "R-DEV-1, RFC 8628 §3.5",
            Self::NoRotation => "R-TOK-2, RFC 9700 §4.14.2",
            Self::NoReuseDetection => "R-TOK-3, RFC 9700 §4.14.2",
            Self::NoLostAnswerGrace => "R-TOK-3",
            Self::NoSlidingExpiry => "R-TOK-4, RFC 6749 §6",
            Self::WeakUserCodes => "RFC 8628 §5.1, §6.1",
            Self::NoApprovalRateLimit => "R-QR-2, RFC 8628 §5.1",
            Self::NoLockout => "R-PWD-2, RFC 6749 §4.3.2",
            Self::Error500OnBadInput => "PROTOCOL.md §10 \"never a 5xx for bad input\", RFC 6749 §5.2",
            Self::NoNoStore => "R-SEC-1, RFC 6749 §5.1",
            Self::PlaintextSecret => "R-DATA-2, R-TOK-3 (SHA-256 hashes only)",
            Self::NoStep2Binding => "PROTOCOL.md §8 step 2, RFC 6749 §4.3",
        }
    }

    /// The server-core mistake behind this mutant, if it lives in the core.
    pub fn core_mutation(self) -> Option<Mutation> {
        Some(match self {
            Self::NoSlowDown => Mutation::NoSlowDown,
            Self::DoubleRedeem => Mutation::DoubleRedeem,
            Self::NoRotation => Mutation::NoRotation,
            Self::NoReuseDetection => Mutation::NoReuseDetection,
            Self::NoLostAnswerGrace => Mutation::NoLostAnswerGrace,
            Self::NoSlidingExpiry => Mutation::NoSlidingExpiry,
            Self::WeakUserCodes => Mutation::WeakUserCodes,
            Self::NoApprovalRateLimit => Mutation::NoApprovalRateLimit,
            Self::NoLockout => Mutation::NoLockout,
            Self::NoStep2Binding => Mutation::NoStep2Binding,
            Self::Error500OnBadInput | Self::NoNoStore | Self::PlaintextSecret => return None,
        })
    }

    /// The core's mutation set for an optional mutant (empty for `None` and for the front-end mutants).
    pub fn core_mutations(mutant: Option<Self>) -> Mutations {
        mutant.and_then(Self::core_mutation).map(Mutations::from).unwrap_or(Mutations::NONE)
    }

    /// The loud start-up warning.
    pub fn warning(self) -> String {
        format!(
            "WARNING: MUTANT SERVER `{}` ACTIVE: it deliberately {} (breaks {}). For testing the conformance suite \
             only; never use it for anything else.",
            self.name(),
            self.description(),
            self.rule()
        )
    }
}

impl fmt::Display for ServerMutant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An unknown mutant name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown server mutant {given:?}; known: {}", ServerMutant::ALL.map(ServerMutant::name).join(", "))]
pub struct UnknownMutant {
    /// What was given.
    pub given: String,
}

impl FromStr for ServerMutant {
    type Err = UnknownMutant;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL.into_iter().find(|m| m.name() == s).ok_or_else(|| UnknownMutant { given: s.to_owned() })
    }
}

impl clap::ValueEnum for ServerMutant {
    fn value_variants<'a>() -> &'a [Self] {
        &Self::ALL
    }

    fn to_possible_value(&self) -> Option<clap::builder::PossibleValue> {
        Some(clap::builder::PossibleValue::new(self.name()).help(self.description()))
    }
}

impl Serialize for ServerMutant {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

/// Most plaintext tokens [`ServerMutant::PlaintextSecret`] keeps (its state must not grow without bound).
pub const MAX_KEPT: usize = 10_000;

/// The `meta` key under which [`ServerMutant::PlaintextSecret`] writes its copies into the SQLite state file.
pub const META_TOKEN_CACHE: &str = "mutant_token_cache";

/// A plaintext token kept by [`ServerMutant::PlaintextSecret`] (exactly what R-DATA-2 forbids).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeptToken {
    /// `access_token` or `refresh_token`.
    pub kind: &'static str,
    /// The plaintext.
    pub value: String,
}

/// The mutant a running server has, and what it keeps (part of [`Shared`]).
#[derive(Debug, Default)]
pub struct MutantState {
    mutant: Option<ServerMutant>,
    kept: Mutex<Vec<KeptToken>>,
}

impl MutantState {
    /// The state of a server running `mutant` (`None`: a correct server).
    pub fn new(mutant: Option<ServerMutant>) -> Self {
        Self { mutant, kept: Mutex::new(Vec::new()) }
    }

    /// The active mutant, if any.
    pub fn mutant(&self) -> Option<ServerMutant> {
        self.mutant
    }

    /// The plaintext tokens kept so far (empty unless [`ServerMutant::PlaintextSecret`]).
    pub fn kept(&self) -> Vec<KeptToken> {
        self.kept.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// Adds the answer-rewriting middleware to a mutant's router; a correct server's router is returned unchanged (no
/// cost on its requests). `no-no-store` needs no middleware: the API service leaves the R-SEC-1 headers out for it
/// (`service.rs`).
pub fn wrap(router: Router<Arc<Shared>>, shared: &Arc<Shared>) -> Router<Arc<Shared>> {
    match shared.mutant.mutant() {
        Some(ServerMutant::Error500OnBadInput | ServerMutant::PlaintextSecret) => {
            router.layer(axum::middleware::from_fn_with_state(shared.clone(), rewrite))
        }
        _ => router,
    }
}

/// Largest answer the middleware reads whole (every answer of the API listener is far smaller).
const MAX_ANSWER: usize = 4 * 1024 * 1024;

/// The middleware of [`wrap`].
async fn rewrite(State(s): State<Arc<Shared>>, req: Request, next: Next) -> Response {
    let (method, path) = (req.method().clone(), req.uri().path().to_owned());
    let resp = next.run(req).await;
    match s.mutant.mutant() {
        Some(ServerMutant::Error500OnBadInput)
            if matches!(resp.status().as_u16(), 400 | 413 | 415 | 422) && !path.starts_with("/sim/") =>
        {
            let (parts, body) = resp.into_parts();
            let Ok(bytes) = to_bytes(body, MAX_ANSWER).await else { return internal_error() };
            if is_bad_input(parts.headers.get(header::CONTENT_TYPE), &bytes) {
                internal_error()
            } else {
                Response::from_parts(parts, Body::from(bytes))
            }
        }
        Some(ServerMutant::PlaintextSecret) if resp.status() == StatusCode::OK => {
            let keep = method == Method::POST && path == "/oauth/token";
            let show = method == Method::GET && path == "/sim/store";
            if !keep && !show {
                return resp;
            }
            let (mut parts, body) = resp.into_parts();
            let Ok(bytes) = to_bytes(body, MAX_ANSWER).await else { return internal_error() };
            let Ok(mut json) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
                return Response::from_parts(parts, Body::from(bytes));
            };
            if keep {
                keep_tokens(&s, &json);
                return Response::from_parts(parts, Body::from(bytes));
            }
            if let Some(obj) = json.as_object_mut() {
                obj.insert("token_cache".into(), serde_json::to_value(s.mutant.kept()).unwrap_or_default());
            }
            let body = serde_json::to_vec(&json).unwrap_or_default();
            parts.headers.remove(header::CONTENT_LENGTH);
            Response::from_parts(parts, Body::from(body))
        }
        _ => resp,
    }
}

/// Keeps the plaintext tokens of a token answer (RFC 6749 §5.1 members), and writes the copies into the state file.
fn keep_tokens(s: &Shared, answer: &serde_json::Value) {
    let found: Vec<KeptToken> = ["access_token", "refresh_token"]
        .into_iter()
        .filter_map(|kind| answer.get(kind).and_then(|v| v.as_str()).map(|v| KeptToken { kind, value: v.to_owned() }))
        .collect();
    if found.is_empty() {
        return;
    }
    let snapshot = {
        let mut kept = s.mutant.kept.lock().unwrap_or_else(|e| e.into_inner());
        kept.extend(found);
        let excess = kept.len().saturating_sub(MAX_KEPT);
        kept.drain(..excess);
        serde_json::to_string(&*kept).unwrap_or_default()
    };
    let mut store = s.store.lock().unwrap_or_else(|e| e.into_inner());
    if store.is_persistent() {
        if let Err(e) = store.put_meta(META_TOKEN_CACHE, &snapshot) {
            tracing::warn!("mutant plaintext-secret: could not write the token cache: {e}");
        }
    }
}

/// Whether a refusal is about malformed input: RFC 6749 §5.2 `invalid_request`, an RFC 9457 problem of a bad
/// body or parameter, a too-large or non-JSON body, or the HTML error page of a malformed sign-in request.
fn is_bad_input(content_type: Option<&HeaderValue>, body: &[u8]) -> bool {
    let ct = content_type.and_then(|v| v.to_str().ok()).unwrap_or("");
    if ct.starts_with("text/html") {
        return true;
    }
    let Ok(json) = serde_json::from_slice::<serde_json::Value>(body) else { return false };
    if json.get("error").and_then(|e| e.as_str()) == Some("invalid_request") {
        return true;
    }
    matches!(
        json.get("type").and_then(|t| t.as_str()),
        Some(
            "urn:roger:problem:invalid-request"
                | "urn:roger:problem:payload-too-large"
                | "urn:roger:problem:unsupported-media-type"
                | "urn:roger:problem:idempotency-key-required"
        )
    )
}

/// What a server that crashed on its input answers: `500` with an HTML page.
fn internal_error() -> Response {
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        [(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"))],
        "<!doctype html><title>500 Internal Server Error</title><h1>Internal Server Error</h1>",
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The names are fixed (the conformance runner uses them), unique, and parse back.
    #[test]
    fn names_round_trip() {
        let names: Vec<&str> = ServerMutant::ALL.iter().map(|m| m.name()).collect();
        assert_eq!(
            names,
            [
                "no-slow-down",
                "double-redeem",
                "no-rotation",
                "no-reuse-detection",
                "no-lost-answer-grace",
                "no-sliding-expiry",
                "weak-user-codes",
                "no-approval-rate-limit",
                "no-lockout",
                "error-500-on-bad-input",
                "no-no-store",
                "plaintext-secret",
                "no-step2-binding"
            ]
        );
        for m in ServerMutant::ALL {
            assert_eq!(m.name().parse::<ServerMutant>(), Ok(m));
            assert_eq!(<ServerMutant as clap::ValueEnum>::from_str(m.name(), false), Ok(m));
            assert_eq!(m.to_string(), m.name());
            assert!(!m.description().is_empty() && m.rule().contains(char::is_numeric), "{m}");
            assert!(m.warning().contains(m.name()));
        }
        let e = "no-such".parse::<ServerMutant>().unwrap_err();
        assert!(e.to_string().contains("no-rotation"), "{e}");
    }

    /// Ten mutants live in the core, three in the front end; `None` is a correct core.
    #[test]
    fn core_mapping() {
        let core: Vec<ServerMutant> = ServerMutant::ALL.into_iter().filter(|m| m.core_mutation().is_some()).collect();
        assert_eq!(core.len(), 10);
        assert!(ServerMutant::core_mutations(None).is_empty());
        assert!(ServerMutant::core_mutations(Some(ServerMutant::NoNoStore)).is_empty());
        assert!(ServerMutant::core_mutations(Some(ServerMutant::NoLockout)).has(Mutation::NoLockout));
    }

    /// Only malformed-input refusals count as bad input, never a protocol answer such as `authorization_pending`.
    #[test]
    fn bad_input_classification() {
        let json = HeaderValue::from_static("application/json");
        assert!(is_bad_input(Some(&json), br#"{"error":"invalid_request"}"#));
        assert!(!is_bad_input(Some(&json), br#"{"error":"authorization_pending"}"#));
        assert!(!is_bad_input(Some(&json), br#"{"error":"invalid_grant"}"#));
        let problem = HeaderValue::from_static("application/problem+json");
        assert!(is_bad_input(Some(&problem), br#"{"type":"urn:roger:problem:invalid-request","status":400}"#));
        assert!(!is_bad_input(Some(&problem), br#"{"type":"urn:roger:problem:conflict","status":409}"#));
        assert!(is_bad_input(Some(&HeaderValue::from_static("text/html")), b"<p>bad</p>"));
        assert!(!is_bad_input(None, b"not json"));
    }
}
