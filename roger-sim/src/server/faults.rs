//! Seeded, per-route fault injection (DESIGN.md "Faults": "seeded and named like turmoil's vocabulary … set per
//! route through `/sim/faults`; the seed goes into every report").
//!
//! A [`FaultPlan`] (`POST /sim/faults`) is a seed and an ordered list of [`FaultRule`]s. For every request to the API
//! listener whose route a rule names, [`inject`] (called by the listener's service layer, `service.rs`) looks at the
//! rules in order. A rule *matches* when its `route` names the request path (exactly, or as a route template whose
//! `{name}` segments stand for any one segment), its optional `grant_type` filter names the request's form
//! `grant_type`, the fault fits the request (see [`FaultKind`]), and its `count` is not used up. Each matching rule
//! takes one draw from the plan's `StdRng::seed_from_u64(seed)`: the rule fires when the draw (uniform in `[0, 1)`) is
//! below its `probability`. The first rule that fires is applied; at most one fault per request. The same seed and the
//! same request sequence therefore replay the same faults. Every applied fault adds an entry to the request log (`GET
//! /sim/log`) with `outcome: "fault:<name>"` after the entries of any processing it let through; its `status` is what
//! the client received (`0`: no answer at all).
//!
//! `drop_response` lets the core process the request (its journal is committed) and then closes the connection
//! without an answer: [`inject`] marks the response with [`DropConnection`], and the connection layer in
//! `run.rs` turns it into a service error with [`connection_result`], on which hyper closes the connection without
//! writing anything. The client sees a connection error, as after a lost answer (R-TOK-3, R-DEV-1, R-PWD-1).

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use roger_proto::error::OAuthErrorCode;
use roger_proto::metadata::{GRANT_DEVICE_CODE, WELL_KNOWN_PATH};
use roger_proto::server::mint::SecretHash;
use roger_proto::server::{ApiFailure, OAuthFailure};
use roger_proto::wire::Form;
use serde::{Deserialize, Serialize};

use super::app::Shared;
use super::log::LogEntry;
use super::oauth_routes::entry;
use super::respond::{media_type, oauth_error, problem, MAX_BODY};

/// The token endpoint, the only route of `slow_down` and of `grant_type` filters (RFC 6749 §3.2).
pub const TOKEN_ROUTE: &str = "/oauth/token";

/// Most rules in one plan (a plan is a test's script, not a database).
pub const MAX_RULES: usize = 64;

/// Longest `delay` (a minute: longer would only outlast the client's own timeout).
pub const MAX_DELAY_MS: u64 = 60_000;

/// Default `Retry-After` of `too_many_requests`, in seconds (PROTOCOL.md §12: "wait the longer of the two").
pub const DEFAULT_RETRY_AFTER: u64 = 1;

/// The named faults (turmoil's vocabulary, DESIGN.md "Faults").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    /// The request is processed (state committed) but the connection closes without an answer: a lost response
    /// (R-TOK-3 lost refresh answer, R-DEV-1 lost registration answer, R-PWD-1 resent password grant).
    DropResponse,
    /// Sleep `delay_ms` before processing.
    Delay,
    /// Process the request twice and answer the second result (idempotency: PROTOCOL.md §9 release and result,
    /// R-DEV-1 and R-TOK-3 repeats).
    Duplicate,
    /// Answer `status` (default 503; 500–599) with an HTML body, without processing (PROTOCOL.md §12: the client
    /// doubles its wait after a 5xx). `retry_after` adds a `Retry-After` header.
    #[serde(rename = "status_5xx")]
    Status5xx,
    /// Answer `429` with `Retry-After: retry_after` (default 1 s), without processing (PROTOCOL.md §12). On
    /// `/oauth/*` the body is RFC 6749 §5.2 `temporarily_unavailable`, elsewhere an RFC 9457 `rate-limited` problem.
    TooManyRequests,
    /// On `/oauth/token` device-code polls only: answer `400 {"error":"slow_down"}` without processing (RFC 8628
    /// §3.5). Other grants on that route are not matched.
    SlowDown,
    /// On the metadata route only: the answer's `issuer` names another origin (same scheme and host, another
    /// port), which a client must refuse (RFC 8414 §3.3, R-META-1).
    WrongIssuer,
    /// Processes the request and rewrites the answer the way a server that nobody here wrote does it (the rule's
    /// `deviation`, one of [`Deviation`]): what a client must tolerate, and what docs/protocol.md §7 says it does.
    Deviation,
}

/// How a [`FaultKind::Deviation`] rewrites an answer: what real RFC 8628 / 6749 / 8414 servers send that Roger's own
/// server does not (docs/protocol.md §7, each row with its source). Rewrites that do not apply to an answer leave it
/// as it is (`hyphenated_user_code` on a token answer, say).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Deviation {
    /// Device authorization: `user_code` as `WDJB-MJHT`, in the answer and in `verification_uri_complete` (RFC 8628
    /// §3.2's own example; GitHub, Keycloak, oidc-provider). The server still accepts the code.
    HyphenatedUserCode,
    /// Device authorization: `user_code` in lower case, with a space (`wdjb mjht`); the server still accepts it.
    LowercaseUserCode,
    /// Device authorization: a code of another alphabet and length (`WDJB-MJHT-7`, as Azure AD's or GitHub's codes
    /// differ from Roger's). Displayed verbatim; this server cannot approve it.
    ForeignUserCode,
    /// Device authorization: `verification_url` instead of `verification_uri` (Google, Azure AD v1).
    VerificationUrl,
    /// Device authorization: no `interval` (oidc-provider, Spring Authorization Server; RFC 8628 §3.2: 5 s).
    NoInterval,
    /// Device authorization and token answers: `expires_in` (and `interval`) as strings (Azure AD v1, Oracle OCI).
    ExpiresInString,
    /// Device authorization: no `verification_uri_complete` (GitHub, Azure AD v2; OPTIONAL in RFC 8628 §3.2).
    NoVerificationUriComplete,
    /// Token answers: `"token_type":"bearer"` (GitHub, Keycloak, UAA; RFC 6749 §5.1: case-insensitive).
    TokenTypeLowercase,
    /// Token answers: the last scope of a multi-scope grant left out (RFC 6749 §3.3 lets a server narrow it).
    ScopeSubset,
    /// Token answers: `scope` as a JSON array (SimpleIdServer).
    ScopeArray,
    /// Every JSON object answer: extra members (`message`, `ext_expires_in`, nested objects; RFC 6749 §5.1).
    ExtraMembers,
    /// Every answer: no `Cache-Control: no-store` and no `Pragma: no-cache` (RFC 6749 §5.1, R-SEC-1).
    NoCacheHeaders,
    /// OAuth errors sent with `200` (GitHub's device flow answers `authorization_pending` with `200`).
    #[serde(rename = "error_with_status_200")]
    ErrorWithStatus200,
    /// `GET /api/v1/jobs`: the first job without `pages`, and one more job without `file_name` (docs/protocol.md
    /// §7: a default for the one, a refusal of only the other).
    JobListGaps,
    /// `GET /api/v1/jobs`: every job of a `source` this crate does not know (`fax`).
    UnknownJobSource,
    /// `POST /api/v1/scans`: the upload link without `expires_at`.
    UploadWithoutExpiry,
    /// Any route: `404` without processing, as a server without that optional extension answers (`PUT
    /// /api/v1/device`, docs/protocol.md §10.2 C11).
    NotOffered,
}

impl Deviation {
    /// The wire name (`hyphenated_user_code`, …).
    pub fn name(self) -> &'static str {
        match self {
            Self::HyphenatedUserCode => "hyphenated_user_code",
            Self::LowercaseUserCode => "lowercase_user_code",
            Self::ForeignUserCode => "foreign_user_code",
            Self::VerificationUrl => "verification_url",
            Self::NoInterval => "no_interval",
            Self::ExpiresInString => "expires_in_string",
            Self::NoVerificationUriComplete => "no_verification_uri_complete",
            Self::TokenTypeLowercase => "token_type_lowercase",
            Self::ScopeSubset => "scope_subset",
            Self::ScopeArray => "scope_array",
            Self::ExtraMembers => "extra_members",
            Self::NoCacheHeaders => "no_cache_headers",
            Self::ErrorWithStatus200 => "error_with_status_200",
            Self::JobListGaps => "job_list_gaps",
            Self::UnknownJobSource => "unknown_job_source",
            Self::UploadWithoutExpiry => "upload_without_expiry",
            Self::NotOffered => "not_offered",
        }
    }

    /// Rewrites a JSON answer in place; `status` may change (only [`Self::ErrorWithStatus200`] does).
    fn rewrite(self, value: &mut serde_json::Value, status: &mut StatusCode) {
        use serde_json::Value;
        let Some(obj) = value.as_object_mut() else { return };
        let user_code = |obj: &mut serde_json::Map<String, Value>, f: &dyn Fn(&str) -> String| {
            let Some(code) = obj.get("user_code").and_then(Value::as_str).map(str::to_owned) else { return };
            let new = f(&code);
            if let Some(Value::String(vuc)) = obj.get_mut("verification_uri_complete") {
                let encoded: String = form_urlencoded::byte_serialize(new.as_bytes()).collect();
                *vuc = vuc.replace(&format!("user_code={code}"), &format!("user_code={encoded}"));
            }
            obj.insert("user_code".into(), Value::String(new));
        };
        let success = status.is_success();
        match self {
            Self::HyphenatedUserCode if success => {
                user_code(obj, &|c| if c.len() == 8 { format!("{}-{}", &c[..4], &c[4..]) } else { c.to_owned() })
            }
            Self::LowercaseUserCode if success => user_code(obj, &|c| {
                let lower = c.to_ascii_lowercase();
                if lower.len() == 8 {
                    format!("{} {}", &lower[..4], &lower[4..])
                } else {
                    lower
                }
            }),
            Self::ForeignUserCode if success => user_code(obj, &|c| {
                if c.len() == 8 {
                    format!("{}-{}-7", &c[..4], &c[4..])
                } else {
                    format!("{c}-7")
                }
            }),
            Self::VerificationUrl if success => {
                if let Some(v) = obj.remove("verification_uri") {
                    obj.insert("verification_url".into(), v);
                }
            }
            Self::NoInterval if success && obj.contains_key("device_code") => {
                obj.remove("interval");
            }
            Self::ExpiresInString if success => {
                for key in ["expires_in", "interval"] {
                    if let Some(n) = obj.get(key).and_then(Value::as_u64) {
                        obj.insert(key.into(), Value::String(n.to_string()));
                    }
                }
            }
            Self::NoVerificationUriComplete if success => {
                obj.remove("verification_uri_complete");
            }
            Self::TokenTypeLowercase if success && obj.contains_key("token_type") => {
                obj.insert("token_type".into(), Value::String("bearer".into()));
            }
            Self::ScopeSubset if success => {
                if let Some(Value::String(scope)) = obj.get_mut("scope") {
                    if let Some((kept, _)) = scope.rsplit_once(' ') {
                        *scope = kept.to_owned();
                    }
                }
            }
            Self::ScopeArray if success => {
                if let Some(Value::String(scope)) = obj.get("scope") {
                    let parts = scope.split(' ').map(|s| Value::String(s.to_owned())).collect();
                    obj.insert("scope".into(), Value::Array(parts));
                }
            }
            Self::ExtraMembers => {
                obj.insert("message".into(), Value::String("extra member (roger-sim deviation fault)".into()));
                obj.insert("ext_expires_in".into(), Value::from(3600));
                obj.insert("x_vendor".into(), serde_json::json!({"nested": [1, null, {"a": true}]}));
            }
            Self::ErrorWithStatus200 if !success && obj.get("error").is_some_and(Value::is_string) => {
                *status = StatusCode::OK;
            }
            Self::JobListGaps if success => {
                if let Some(Value::Array(jobs)) = obj.get_mut("jobs") {
                    if let Some(Value::Object(first)) = jobs.first_mut() {
                        first.remove("pages");
                    }
                    jobs.push(serde_json::json!({"id": "roger-sim-deviation-job", "pages": 1, "source": "drive"}));
                }
            }
            Self::UnknownJobSource if success => {
                if let Some(Value::Array(jobs)) = obj.get_mut("jobs") {
                    for job in jobs.iter_mut().filter_map(Value::as_object_mut) {
                        job.insert("source".into(), Value::String("fax".into()));
                    }
                }
            }
            Self::UploadWithoutExpiry if success => {
                if let Some(Value::Object(upload)) = obj.get_mut("upload") {
                    upload.remove("expires_at");
                }
            }
            _ => {}
        }
    }
}

impl FaultKind {
    /// The wire name (`drop_response`, …), as in the log's `fault:<name>` outcome.
    pub fn name(self) -> &'static str {
        match self {
            Self::DropResponse => "drop_response",
            Self::Delay => "delay",
            Self::Duplicate => "duplicate",
            Self::Status5xx => "status_5xx",
            Self::TooManyRequests => "too_many_requests",
            Self::SlowDown => "slow_down",
            Self::WrongIssuer => "wrong_issuer",
            Self::Deviation => "deviation",
        }
    }
}

fn one() -> f64 {
    1.0
}

/// One rule of a [`FaultPlan`]. Unknown members are refused (a misspelt `probabilty` would silently test nothing).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FaultRule {
    /// The route: a request path (`/oauth/token`) or a route template (`/api/v1/jobs/{id}/release`). `/sim/`
    /// routes cannot be faulted.
    pub route: String,
    /// Only requests whose form `grant_type` is this (`/oauth/token` only; `device_code` is short for the RFC 8628
    /// URN).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grant_type: Option<String>,
    /// What to do.
    pub fault: FaultKind,
    /// Chance that a matching request gets the fault, 0.0 to 1.0 (default 1).
    #[serde(default = "one")]
    pub probability: f64,
    /// Apply at most this many times (default: no limit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
    /// `delay` only (required there): milliseconds to sleep before processing, at most [`MAX_DELAY_MS`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay_ms: Option<u64>,
    /// `status_5xx` only: the status, 500 to 599 (default 503).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// `status_5xx` (optional) and `too_many_requests` (default 1): the `Retry-After` header in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<u64>,
    /// `deviation` only (required there): how the answer is rewritten.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deviation: Option<Deviation>,
}

/// The body of `POST /sim/faults`: a seed and the rules, in the order they are tried.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FaultPlan {
    /// Seed of the plan's `StdRng` (reports name it, DESIGN.md "Faults").
    pub seed: u64,
    /// The rules.
    #[serde(default)]
    pub rules: Vec<FaultRule>,
}

/// A rule with how often it was applied (`GET /sim/faults`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct RuleStatus {
    /// The rule as set.
    #[serde(flatten)]
    pub rule: FaultRule,
    /// How many requests got this rule's fault.
    pub applied: u64,
}

/// The answer of `GET`, `POST` and `DELETE /sim/faults`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct FaultStatus {
    /// The plan's seed, `null` when no plan is set.
    pub seed: Option<u64>,
    /// The rules with their counters.
    pub rules: Vec<RuleStatus>,
    /// Random draws taken so far (one per matching rule tried).
    pub draws: u64,
}

/// Why a plan is refused (`400` from `POST /sim/faults`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("rule {index}: {reason}")]
pub struct PlanError {
    /// The rule's position (0-based).
    pub index: usize,
    /// What is wrong.
    pub reason: String,
}

fn normalize_grant(g: &str) -> &str {
    if g == "device_code" {
        GRANT_DEVICE_CODE
    } else {
        g
    }
}

impl FaultRule {
    /// Checks the rule's members against its fault (see [`FaultKind`]).
    pub fn validate(&self) -> Result<(), String> {
        let k = self.fault;
        if !self.route.starts_with('/') || self.route.contains(['?', '#']) {
            return Err("route must be a path starting with / (no query)".into());
        }
        if self.route == "/sim" || self.route.starts_with("/sim/") {
            return Err("/sim/ routes cannot be faulted".into());
        }
        if !self.probability.is_finite() || !(0.0..=1.0).contains(&self.probability) {
            return Err("probability must be between 0 and 1".into());
        }
        if self.grant_type.is_some() && self.route != TOKEN_ROUTE {
            return Err(format!("grant_type filters only {TOKEN_ROUTE}"));
        }
        match (k, self.delay_ms) {
            (FaultKind::Delay, None) => return Err("delay needs delay_ms".into()),
            (FaultKind::Delay, Some(ms)) if ms > MAX_DELAY_MS => {
                return Err(format!("delay_ms must be at most {MAX_DELAY_MS}"))
            }
            (FaultKind::Delay, Some(_)) | (_, None) => {}
            (_, Some(_)) => return Err("delay_ms belongs to delay".into()),
        }
        match (k, self.status) {
            (FaultKind::Status5xx, Some(s)) if !(500..=599).contains(&s) => {
                return Err("status must be between 500 and 599".into())
            }
            (FaultKind::Status5xx, _) | (_, None) => {}
            (_, Some(_)) => return Err("status belongs to status_5xx".into()),
        }
        if self.retry_after.is_some() && !matches!(k, FaultKind::Status5xx | FaultKind::TooManyRequests) {
            return Err("retry_after belongs to status_5xx and too_many_requests".into());
        }
        if k == FaultKind::SlowDown {
            if self.route != TOKEN_ROUTE {
                return Err(format!("slow_down applies to {TOKEN_ROUTE} only"));
            }
            if self.grant_type.as_deref().is_some_and(|g| normalize_grant(g) != GRANT_DEVICE_CODE) {
                return Err("slow_down applies to device-code polls only".into());
            }
        }
        if k == FaultKind::WrongIssuer && self.route != WELL_KNOWN_PATH {
            return Err(format!("wrong_issuer applies to {WELL_KNOWN_PATH} only"));
        }
        match (k, self.deviation) {
            (FaultKind::Deviation, None) => {
                return Err("deviation needs a deviation (e.g. hyphenated_user_code)".into())
            }
            (FaultKind::Deviation, Some(_)) | (_, None) => {}
            (_, Some(_)) => return Err("deviation belongs to the deviation fault".into()),
        }
        Ok(())
    }

    /// Whether the rule's route names `path`: equal, or equal segment by segment with `{name}` matching any one
    /// non-empty segment.
    pub fn names_path(&self, path: &str) -> bool {
        route_matches(&self.route, path)
    }

    fn matches(&self, path: &str, grant_type: Option<&str>) -> bool {
        if !self.names_path(path) {
            return false;
        }
        if let Some(want) = &self.grant_type {
            if grant_type != Some(normalize_grant(want)) {
                return false;
            }
        }
        match self.fault {
            FaultKind::SlowDown => grant_type == Some(GRANT_DEVICE_CODE),
            _ => true,
        }
    }
}

/// Whether `route` (a path or a `{name}` template) names `path`.
pub fn route_matches(route: &str, path: &str) -> bool {
    if route == path {
        return true;
    }
    let (mut r, mut p) = (route.split('/'), path.split('/'));
    loop {
        match (r.next(), p.next()) {
            (None, None) => return true,
            (Some(rs), Some(ps)) => {
                let placeholder = rs.len() > 2 && rs.starts_with('{') && rs.ends_with('}');
                if !(rs == ps || (placeholder && !ps.is_empty())) {
                    return false;
                }
            }
            _ => return false,
        }
    }
}

impl FaultPlan {
    /// Checks every rule.
    pub fn validate(&self) -> Result<(), PlanError> {
        if self.rules.len() > MAX_RULES {
            return Err(PlanError { index: MAX_RULES, reason: format!("at most {MAX_RULES} rules") });
        }
        for (index, rule) in self.rules.iter().enumerate() {
            rule.validate().map_err(|reason| PlanError { index, reason })?;
        }
        Ok(())
    }
}

/// The fault state a server keeps (in [`Shared`]): the plan, its random stream and its counters.
#[derive(Debug)]
pub struct Faults {
    plan: Option<FaultPlan>,
    rng: StdRng,
    applied: Vec<u64>,
    draws: u64,
}

impl Default for Faults {
    fn default() -> Self {
        Self { plan: None, rng: StdRng::seed_from_u64(0), applied: Vec::new(), draws: 0 }
    }
}

/// The fault state of one server ([`Shared::faults`]): [`Faults`] behind a lock, and whether a plan is set, readable
/// without it. Every request of the API listener asks ([`FaultState::targets`]) and almost always none is, so that answer takes
/// no lock.
#[derive(Debug, Default)]
pub struct FaultState {
    armed: AtomicBool,
    faults: Mutex<Faults>,
}

impl FaultState {
    fn faults(&self) -> MutexGuard<'_, Faults> {
        lock(&self.faults)
    }

    /// [`Faults::set`].
    pub fn set(&self, plan: FaultPlan) -> Result<(), PlanError> {
        let mut f = self.faults();
        f.set(plan)?;
        self.armed.store(true, Ordering::Release);
        Ok(())
    }

    /// [`Faults::clear`].
    pub fn clear(&self) {
        let mut f = self.faults();
        f.clear();
        self.armed.store(false, Ordering::Release);
    }

    /// [`Faults::status`].
    pub fn status(&self) -> FaultStatus {
        self.faults().status()
    }

    /// Whether the plan of `POST /sim/faults` may apply to a request for `path` ([`Faults::targets`]): the API
    /// service's cheap first look, without the lock while no plan is set; [`inject`] then decides.
    pub fn targets(&self, path: &str) -> bool {
        self.armed.load(Ordering::Acquire) && self.faults().targets(path)
    }

    /// [`Faults::choose`].
    pub fn choose(&self, path: &str, grant_type: Option<&str>) -> Option<Chosen> {
        self.faults().choose(path, grant_type)
    }
}

/// A fault chosen for one request.
#[derive(Debug, Clone, PartialEq)]
pub struct Chosen {
    /// The rule's position in the plan.
    pub index: usize,
    /// The rule.
    pub rule: FaultRule,
}

impl Faults {
    /// Replaces the plan (validated first), restarting the random stream at its seed and zeroing the counters.
    pub fn set(&mut self, plan: FaultPlan) -> Result<(), PlanError> {
        plan.validate()?;
        self.rng = StdRng::seed_from_u64(plan.seed);
        self.applied = vec![0; plan.rules.len()];
        self.draws = 0;
        self.plan = Some(plan);
        Ok(())
    }

    /// Removes the plan: no more faults.
    pub fn clear(&mut self) {
        *self = Self::default();
    }

    /// The plan and its counters.
    pub fn status(&self) -> FaultStatus {
        let rules = self
            .plan
            .iter()
            .flat_map(|p| p.rules.iter())
            .zip(self.applied.iter())
            .map(|(rule, applied)| RuleStatus { rule: rule.clone(), applied: *applied })
            .collect();
        FaultStatus { seed: self.plan.as_ref().map(|p| p.seed), rules, draws: self.draws }
    }

    /// Whether any rule names `path` (only then does [`inject`] buffer the body).
    pub fn targets(&self, path: &str) -> bool {
        self.plan.as_ref().is_some_and(|p| p.rules.iter().any(|r| r.names_path(path)))
    }

    /// Tries the matching rules in order, one draw each, and returns the first that fires (its counter counted).
    pub fn choose(&mut self, path: &str, grant_type: Option<&str>) -> Option<Chosen> {
        let plan = self.plan.as_ref()?;
        for (index, rule) in plan.rules.iter().enumerate() {
            let used = self.applied.get(index).copied().unwrap_or(0);
            if rule.count.is_some_and(|c| used >= c) || !rule.matches(path, grant_type) {
                continue;
            }
            self.draws += 1;
            let draw: f64 = self.rng.gen();
            if draw < rule.probability {
                if let Some(a) = self.applied.get_mut(index) {
                    *a += 1;
                }
                return Some(Chosen { index, rule: rule.clone() });
            }
        }
        None
    }
}

fn lock(m: &Mutex<Faults>) -> MutexGuard<'_, Faults> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The marker [`inject`] puts on a response that must not be sent (`drop_response`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DropConnection;

/// The service error that makes hyper close a connection without answering (`drop_response`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("connection closed without an answer by an injected drop_response fault")]
pub struct ConnectionDropped;

impl From<Infallible> for ConnectionDropped {
    fn from(never: Infallible) -> Self {
        match never {}
    }
}

/// For the connection layer (`run.rs`): a response marked with [`DropConnection`] becomes [`ConnectionDropped`],
/// so hyper closes the connection without writing a response; every other response passes.
pub fn connection_result(r: Result<Response, Infallible>) -> Result<Response, ConnectionDropped> {
    match r {
        Ok(resp) if resp.extensions().get::<DropConnection>().is_some() => Err(ConnectionDropped),
        Ok(resp) => Ok(resp),
        Err(never) => match never {},
    }
}

fn is_oauth(path: &str) -> bool {
    path.starts_with("/oauth/")
}

/// What the handlers answer to a body over [`MAX_BODY`], in the route's shape (PROTOCOL.md §10).
fn too_large(path: &str) -> Response {
    if is_oauth(path) {
        super::respond::oauth_invalid_request(&format!("the body is unreadable or larger than {MAX_BODY} bytes"))
    } else {
        problem(&ApiFailure::new(413, "payload-too-large", "The body is unreadable or too large"))
    }
}

fn html_5xx(status: u16, retry_after: Option<u64>) -> Response {
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
    let title = format!("{} {}", code.as_u16(), code.canonical_reason().unwrap_or("Server Error"));
    let html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{title}</title></head>\
         <body><h1>{title}</h1><p>Injected fault (roger-sim /sim/faults).</p></body></html>"
    );
    let mut r =
        (code, [(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"))], html).into_response();
    if let Some(ra) = retry_after {
        r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(ra));
    }
    r
}

/// Another origin than `api`: same scheme and host, the next port (RFC 6454 §4: a different port is a different
/// origin), so a loopback-only client still reaches the issuer check (R-META-1) rather than a transport refusal.
pub fn wrong_issuer(api: &str) -> String {
    match url::Url::parse(api) {
        Ok(mut u) => {
            let port = u.port_or_known_default().unwrap_or(443);
            let other = if port == u16::MAX { port - 1 } else { port + 1 };
            if u.set_port(Some(other)).is_ok() {
                u.as_str().trim_end_matches('/').to_owned()
            } else {
                "https://wrong-issuer.invalid".to_owned()
            }
        }
        Err(_) => "https://wrong-issuer.invalid".to_owned(),
    }
}

/// Rewrites a JSON answer with `f` (which may change the status); an answer that is not JSON passes unchanged.
async fn rewrite_json(resp: Response, f: impl FnOnce(&mut serde_json::Value, &mut StatusCode)) -> Response {
    let (mut parts, body) = resp.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, MAX_BODY).await else {
        return problem(&ApiFailure::new(500, "internal", "The answer could not be read"));
    };
    let mut value: serde_json::Value = match serde_json::from_slice(&bytes) {
        Ok(v) => v,
        Err(_) => return Response::from_parts(parts, Body::from(bytes)),
    };
    f(&mut value, &mut parts.status);
    let body = serde_json::to_vec(&value).unwrap_or_else(|_| bytes.to_vec());
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(body))
}

async fn rewrite_issuer(resp: Response, api: &str) -> Response {
    let issuer = wrong_issuer(api);
    rewrite_json(resp, move |value, _| {
        if let Some(obj) = value.as_object_mut() {
            obj.insert("issuer".into(), serde_json::Value::String(issuer));
        }
    })
    .await
}

/// The marker a `no_cache_headers` deviation puts on an answer: the API service then leaves out the R-SEC-1 headers
/// it adds to every other answer (`service.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WithoutCacheHeaders;

/// Applies a [`FaultKind::Deviation`] to the answer of the processed request.
async fn deviate(resp: Response, deviation: Deviation) -> Response {
    if deviation == Deviation::NoCacheHeaders {
        let mut resp = resp;
        resp.headers_mut().remove(header::CACHE_CONTROL);
        resp.headers_mut().remove(header::PRAGMA);
        resp.extensions_mut().insert(WithoutCacheHeaders);
        return resp;
    }
    rewrite_json(resp, |value, status| deviation.rewrite(value, status)).await
}

/// The log entry of an applied fault (after any entries of the processing it let through).
fn fault_entry(s: &Shared, req: &axum::http::request::Parts, rule: &FaultRule, form: Option<&Form>) -> LogEntry {
    let path = if rule.route.contains('{') { rule.route.as_str() } else { req.uri.path() };
    let mut e = entry(s, &req.method, path.to_owned());
    e.outcome = Some(format!("fault:{}", rule.fault.name()).into());
    e.authenticated = req.headers.contains_key(header::AUTHORIZATION);
    if let Some(f) = form {
        e.grant_type = f.get("grant_type").map(|g| super::log::intern(g, &super::log::GRANT_TYPES));
        e.client_id = f.get("client_id").map(Into::into);
        // Device-code polls: the code's hash prefix, its interval and the gap since its last processed poll, as
        // the token handler logs them (PROTOCOL.md §12: a poll is a poll, answered or not).
        if e.grant_type.as_deref() == Some(GRANT_DEVICE_CODE) {
            if let Some(code) = f.get("device_code") {
                let hash = SecretHash::of(code);
                e.code = Some(hash.hex_prefix(super::log::LOG_CODE_HEX));
                s.read(|core, now| {
                    if let Some(rec) = core.state().codes.get(&hash) {
                        e.interval_s = Some(rec.interval);
                        e.gap_ms = rec.last_poll.map(|p| (now - p).whole_milliseconds() as i64);
                    }
                });
            }
        }
    }
    e
}

fn rebuild(parts: &axum::http::request::Parts, body: &Bytes) -> Request {
    Request::from_parts(parts.clone(), Body::from(body.clone()))
}

/// Runs `req` through `router` (the API router without its service layer).
async fn next(router: &Router, req: Request) -> Response {
    match tower::ServiceExt::oneshot(router.clone(), req).await {
        Ok(r) => r,
        Err(never) => match never {},
    }
}

/// Applies the plan of `POST /sim/faults` to a request whose path the plan [`targets`](FaultState::targets), as
/// described in the module documentation; `router` processes whatever the chosen fault lets through.
pub async fn inject(s: Arc<Shared>, req: Request, router: Router) -> Response {
    let path = req.uri().path().to_owned();
    let (parts, body) = req.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, MAX_BODY).await else { return too_large(&path) };
    let form =
        (media_type(&parts.headers) == "application/x-www-form-urlencoded").then(|| Form::parse(&bytes).ok()).flatten();
    let grant_type = form.as_ref().and_then(|f| f.get("grant_type"));
    let Some(chosen) = s.faults.choose(&path, grant_type) else {
        return next(&router, rebuild(&parts, &bytes)).await;
    };
    let rule = chosen.rule;
    let mut e = fault_entry(&s, &parts, &rule, form.as_ref());
    let resp = match rule.fault {
        FaultKind::DropResponse => {
            let processed = next(&router, rebuild(&parts, &bytes)).await;
            drop(processed);
            let mut r = StatusCode::SERVICE_UNAVAILABLE.into_response();
            r.extensions_mut().insert(DropConnection);
            e.status = 0;
            s.log(e);
            return r;
        }
        FaultKind::Delay => {
            tokio::time::sleep(Duration::from_millis(rule.delay_ms.unwrap_or(0))).await;
            next(&router, rebuild(&parts, &bytes)).await
        }
        FaultKind::Duplicate => {
            let first = next(&router, rebuild(&parts, &bytes)).await;
            drop(first);
            next(&router, rebuild(&parts, &bytes)).await
        }
        FaultKind::Status5xx => html_5xx(rule.status.unwrap_or(503), rule.retry_after),
        FaultKind::TooManyRequests => {
            let ra = rule.retry_after.unwrap_or(DEFAULT_RETRY_AFTER);
            if is_oauth(&path) {
                oauth_error(&OAuthFailure::throttled(ra))
            } else {
                problem(&ApiFailure::rate_limited(ra))
            }
        }
        FaultKind::SlowDown => oauth_error(&OAuthFailure::bad(
            OAuthErrorCode::SlowDown,
            "polling too fast: add 5 seconds to the interval (RFC 8628 §3.5)",
        )),
        FaultKind::WrongIssuer => {
            let r = next(&router, rebuild(&parts, &bytes)).await;
            rewrite_issuer(r, &s.api).await
        }
        FaultKind::Deviation => match rule.deviation.unwrap_or(Deviation::ExtraMembers) {
            Deviation::NotOffered => {
                problem(&ApiFailure::new(404, "not-found", "Not offered by this server (roger-sim deviation fault)"))
            }
            d => {
                let r = next(&router, rebuild(&parts, &bytes)).await;
                deviate(r, d).await
            }
        },
    };
    e.status = resp.status().as_u16();
    s.log(e);
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::{start, RunningServer, ServerConfig};
    use serde_json::{json, Value};

    fn rule(route: &str, fault: FaultKind) -> FaultRule {
        FaultRule {
            route: route.into(),
            grant_type: None,
            fault,
            probability: 1.0,
            count: None,
            delay_ms: None,
            status: None,
            retry_after: None,
            deviation: None,
        }
    }

    #[test]
    fn route_templates_match_one_segment() {
        assert!(route_matches("/oauth/token", "/oauth/token"));
        assert!(route_matches("/api/v1/jobs/{id}/release", "/api/v1/jobs/j-1/release"));
        assert!(!route_matches("/api/v1/jobs/{id}/release", "/api/v1/jobs//release"));
        assert!(!route_matches("/api/v1/jobs/{id}", "/api/v1/jobs/j-1/release"));
        assert!(!route_matches("/oauth/token", "/oauth/token/"));
        assert!(!route_matches("/oauth/{x}", "/api/token"));
    }

    #[test]
    fn plans_are_validated() {
        let ok = FaultPlan { seed: 1, rules: vec![rule("/oauth/token", FaultKind::SlowDown)] };
        assert_eq!(ok.validate(), Ok(()));
        let bad = |r: FaultRule| FaultPlan { seed: 1, rules: vec![rule("/regions", FaultKind::Delay), r] }.validate();
        let mut r = rule("/regions", FaultKind::Delay);
        r.delay_ms = Some(10);
        assert_eq!(FaultPlan { seed: 1, rules: vec![r] }.validate(), Ok(()));
        assert_eq!(bad(rule("/regions", FaultKind::Delay)).map_err(|e| e.index), Err(0), "delay needs delay_ms");
        assert!(bad(rule("/regions", FaultKind::SlowDown)).is_err());
        assert!(bad(rule("/regions", FaultKind::WrongIssuer)).is_err());
        assert!(bad(rule("/sim/clock", FaultKind::Status5xx)).is_err());
        assert!(bad(FaultRule { probability: 1.5, ..rule("/regions", FaultKind::Status5xx) }).is_err());
        assert!(bad(FaultRule { status: Some(404), ..rule("/regions", FaultKind::Status5xx) }).is_err());
        assert!(bad(FaultRule { status: Some(502), ..rule("/regions", FaultKind::Duplicate) }).is_err());
        assert!(
            bad(FaultRule { grant_type: Some("password".into()), ..rule("/regions", FaultKind::Duplicate) }).is_err()
        );
        assert!(bad(FaultRule {
            grant_type: Some("refresh_token".into()),
            ..rule("/oauth/token", FaultKind::SlowDown)
        })
        .is_err());
        let parsed: Result<FaultPlan, _> =
            serde_json::from_value(json!({"seed":1,"rules":[{"route":"/x","fault":"delay","probabilty":0.5}]}));
        assert!(parsed.is_err(), "unknown members are refused");
        let parsed: FaultPlan =
            serde_json::from_value(json!({"seed":1,"rules":[{"route":"/x","fault":"status_5xx"}]})).expect("plan");
        assert_eq!(parsed.rules[0].probability, 1.0, "probability defaults to 1");
    }

    /// DESIGN.md "Faults": the same seed and request sequence replay the same faults; `count` caps them.
    #[test]
    fn same_seed_same_sequence() {
        let run = |seed: u64| {
            let mut f = Faults::default();
            let mut r = rule("/oauth/token", FaultKind::Status5xx);
            r.probability = 0.5;
            f.set(FaultPlan { seed, rules: vec![r, rule("/regions", FaultKind::Duplicate)] }).expect("plan");
            (0..64).map(|_| f.choose("/oauth/token", Some("refresh_token")).is_some()).collect::<Vec<bool>>()
        };
        let a = run(7);
        assert_eq!(a, run(7));
        assert_ne!(a, run(8), "another seed, another sequence (with overwhelming probability)");
        assert!(a.iter().any(|x| *x) && a.iter().any(|x| !*x));

        let mut f = Faults::default();
        let mut r = rule("/oauth/token", FaultKind::SlowDown);
        r.count = Some(2);
        f.set(FaultPlan { seed: 1, rules: vec![r] }).expect("plan");
        assert_eq!(f.choose("/oauth/token", Some("refresh_token")), None, "slow_down needs a device-code poll");
        assert!(f.choose("/oauth/token", Some(GRANT_DEVICE_CODE)).is_some());
        assert!(f.choose("/oauth/token", Some(GRANT_DEVICE_CODE)).is_some());
        assert_eq!(f.choose("/oauth/token", Some(GRANT_DEVICE_CODE)), None, "count is used up");
        assert_eq!(f.status().rules[0].applied, 2);
        f.clear();
        assert_eq!(f.status(), FaultStatus { seed: None, rules: vec![], draws: 0 });
    }

    #[test]
    fn wrong_issuer_is_another_origin() {
        assert_eq!(wrong_issuer("http://127.0.0.1:8080"), "http://127.0.0.1:8081");
        assert_eq!(wrong_issuer("https://api.example"), "https://api.example:444");
        assert_eq!(wrong_issuer("https://h:65535"), "https://h:65534");
    }

    // -- over real HTTP -------------------------------------------------------------------------------------------

    const FORM: &str = "application/x-www-form-urlencoded";
    const REGISTER: &str = "client_id=emb-acme&scope=roger.device&device_model=M1&device_serial=S1";

    async fn server() -> (RunningServer, reqwest::Client) {
        let config = ServerConfig { plain_http: true, seed: Some(1), ..ServerConfig::default() };
        let s = start(config).await.expect("server");
        let http = reqwest::Client::builder().no_proxy().build().expect("client");
        (s, http)
    }

    async fn set_plan(s: &RunningServer, http: &reqwest::Client, plan: Value) -> Value {
        let r = http.post(format!("{}/sim/faults", s.info.api)).json(&plan).send().await.expect("post");
        assert_eq!(r.status(), 200, "{plan}");
        r.json().await.expect("status json")
    }

    async fn post_form(s: &RunningServer, http: &reqwest::Client, path: &str, body: &str) -> reqwest::Response {
        http.post(format!("{}{path}", s.info.api))
            .header("content-type", FORM)
            .body(body.to_owned())
            .send()
            .await
            .expect("answer")
    }

    fn codes(s: &RunningServer) -> usize {
        s.shared.read(|core, _| core.state().codes.len())
    }

    fn fault_outcomes(s: &RunningServer) -> Vec<(String, u16)> {
        s.shared
            .log_since(0)
            .into_iter()
            .filter_map(|e| e.outcome.filter(|o| o.starts_with("fault:")).map(|o| (o.into_owned(), e.status)))
            .collect()
    }

    /// R-DEV-1's lost answer: the registration is processed and committed, the client gets a connection error.
    #[tokio::test]
    async fn drop_response_processes_then_closes_the_connection() {
        let (s, http) = server().await;
        let rule = json!({"route": "/oauth/device_authorization", "fault": "drop_response", "count": 1});
        set_plan(&s, &http, json!({"seed": 3, "rules": [rule]})).await;
        let before = codes(&s);
        let err = http
            .post(format!("{}/oauth/device_authorization", s.info.api))
            .header("content-type", FORM)
            .body(REGISTER)
            .send()
            .await
            .expect_err("no answer, a connection error");
        assert!(err.status().is_none() && err.is_request(), "{err:?}");
        assert!(format!("{err:?}").contains("IncompleteMessage"), "closed before any answer: {err:?}");
        assert_eq!(codes(&s), before + 1, "the request was processed");
        let log = s.shared.log_since(0);
        let n = log.len();
        assert_eq!(log[n - 2].path, "/oauth/device_authorization");
        assert_eq!(log[n - 2].status, 200, "the core answered");
        assert_eq!((log[n - 1].outcome.as_deref(), log[n - 1].status), (Some("fault:drop_response"), 0));
        // count 1: the retry gets through (and is a second code).
        let r = post_form(&s, &http, "/oauth/device_authorization", REGISTER).await;
        assert_eq!(r.status(), 200);
        assert_eq!(codes(&s), before + 2);
        s.stop().await;
    }

    #[tokio::test]
    async fn duplicate_processes_twice_and_answers_the_second() {
        let (s, http) = server().await;
        set_plan(
            &s,
            &http,
            json!({"seed": 3, "rules": [{"route": "/oauth/device_authorization", "fault": "duplicate"}]}),
        )
        .await;
        let before = codes(&s);
        let r = post_form(&s, &http, "/oauth/device_authorization", REGISTER).await;
        assert_eq!(r.status(), 200);
        let body: Value = r.json().await.expect("json");
        assert_eq!(codes(&s), before + 2, "processed twice");
        let hash = SecretHash::of(body["device_code"].as_str().expect("device_code"));
        assert!(
            s.shared.read(|core, _| core.state().codes.contains_key(&hash)),
            "the answer is one of the processed requests"
        );
        let handled = s.shared.log_since(0).iter().filter(|e| e.path == "/oauth/device_authorization").count();
        assert_eq!(handled, 3, "two processed requests and the fault entry");
        assert_eq!(fault_outcomes(&s), [("fault:duplicate".to_owned(), 200)]);
        s.stop().await;
    }

    #[tokio::test]
    async fn delay_sleeps_before_processing() {
        let (s, http) = server().await;
        set_plan(&s, &http, json!({"seed": 3, "rules": [{"route": "/regions", "fault": "delay", "delay_ms": 300}]}))
            .await;
        let t = std::time::Instant::now();
        let r = http.get(format!("{}/regions", s.info.api)).send().await.expect("answer");
        assert_eq!(r.status(), 200);
        assert!(t.elapsed() >= Duration::from_millis(300), "{:?}", t.elapsed());
        assert_eq!(fault_outcomes(&s), [("fault:delay".to_owned(), 200)]);
        s.stop().await;
    }

    #[tokio::test]
    async fn status_5xx_answers_html_without_processing() {
        let (s, http) = server().await;
        set_plan(
            &s,
            &http,
            json!({"seed": 3, "rules": [
                {"route": "/oauth/device_authorization", "fault": "status_5xx", "status": 502, "retry_after": 4}
            ]}),
        )
        .await;
        let before = codes(&s);
        let r = post_form(&s, &http, "/oauth/device_authorization", REGISTER).await;
        assert_eq!(r.status(), 502);
        assert_eq!(r.headers()["retry-after"], "4");
        assert!(r.headers()["content-type"].to_str().expect("ct").starts_with("text/html"));
        assert!(r.text().await.expect("body").contains("<h1>502 Bad Gateway</h1>"));
        assert_eq!(codes(&s), before, "not processed");
        assert_eq!(fault_outcomes(&s), [("fault:status_5xx".to_owned(), 502)]);
        s.stop().await;
    }

    #[tokio::test]
    async fn too_many_requests_answers_429_with_retry_after() {
        let (s, http) = server().await;
        set_plan(
            &s,
            &http,
            json!({"seed": 3, "rules": [
                {"route": "/oauth/token", "fault": "too_many_requests", "retry_after": 7},
                {"route": "/api/v1/jobs/{id}/release", "fault": "too_many_requests"}
            ]}),
        )
        .await;
        let r =
            post_form(&s, &http, "/oauth/token", "grant_type=refresh_token&refresh_token=x&client_id=emb-acme").await;
        assert_eq!(r.status(), 429);
        assert_eq!(r.headers()["retry-after"], "7");
        let body: Value = r.json().await.expect("json");
        assert_eq!(body["error"], "temporarily_unavailable");
        let r = http.post(format!("{}/api/v1/jobs/j-9/release", s.info.api)).send().await.expect("answer");
        assert_eq!(r.status(), 429);
        assert_eq!(r.headers()["retry-after"], "1");
        assert_eq!(r.headers()["content-type"], roger_proto::error::PROBLEM_JSON);
        let outcomes = s.shared.log_since(0);
        assert_eq!(outcomes.len(), 2, "nothing was processed: only the fault entries");
        assert_eq!(outcomes[1].path, "/api/v1/jobs/{id}/release");
        s.stop().await;
    }

    #[tokio::test]
    async fn slow_down_hits_device_code_polls_only_and_grant_filters_work() {
        let (s, http) = server().await;
        let r = post_form(&s, &http, "/oauth/device_authorization", REGISTER).await;
        let auth: Value = r.json().await.expect("json");
        let poll = format!(
            "grant_type={}&device_code={}&client_id=emb-acme",
            form_urlencoded::byte_serialize(GRANT_DEVICE_CODE.as_bytes()).collect::<String>(),
            auth["device_code"].as_str().expect("device_code")
        );
        set_plan(
            &s,
            &http,
            json!({"seed": 3, "rules": [
                {"route": "/oauth/token", "fault": "slow_down", "count": 1},
                {"route": "/oauth/token", "grant_type": "refresh_token", "fault": "status_5xx"}
            ]}),
        )
        .await;
        let r = post_form(&s, &http, "/oauth/token", &poll).await;
        assert_eq!(r.status(), 400);
        assert_eq!(r.json::<Value>().await.expect("json")["error"], "slow_down");
        let last = s.shared.log_since(0).pop().expect("entry");
        assert_eq!(last.outcome.as_deref(), Some("fault:slow_down"));
        assert_eq!(last.grant_type.as_deref(), Some(GRANT_DEVICE_CODE));
        assert_eq!(last.code.as_ref().map(String::len), Some(12), "the poll is noted with its code");
        // The next poll is processed (count 1): pending, not a fault.
        let r = post_form(&s, &http, "/oauth/token", &poll).await;
        assert_eq!(r.json::<Value>().await.expect("json")["error"], "authorization_pending");
        // The grant filter: a refresh gets the 503, the device-code poll did not.
        let r =
            post_form(&s, &http, "/oauth/token", "grant_type=refresh_token&refresh_token=x&client_id=emb-acme").await;
        assert_eq!(r.status(), 503);
        assert_eq!(fault_outcomes(&s), [("fault:slow_down".to_owned(), 400), ("fault:status_5xx".to_owned(), 503)]);
        s.stop().await;
    }

    #[tokio::test]
    async fn deviations_rewrite_answers_as_other_servers_do() {
        let (s, http) = server().await;
        let registration = "client_id=emb-acme&scope=roger.device&device_model=M&device_serial=S";
        let deviations = [
            ("/oauth/device_authorization", "hyphenated_user_code"),
            ("/oauth/token", "error_with_status_200"),
            (WELL_KNOWN_PATH, "no_cache_headers"),
            ("/api/v1/device", "not_offered"),
        ];
        let rules: Vec<Value> =
            deviations.iter().map(|(r, d)| json!({"route": r, "fault": "deviation", "deviation": d})).collect();
        set_plan(&s, &http, json!({"seed": 5, "rules": rules})).await;
        // RFC 8628 §3.2's spelling, in the answer and in its QR payload; the server still takes the code.
        let a: Value = post_form(&s, &http, "/oauth/device_authorization", registration).await.json().await.unwrap();
        let code = a["user_code"].as_str().unwrap().to_owned();
        assert_eq!((code.len(), code.as_bytes()[4]), (9, b'-'), "{code}");
        assert!(a["verification_uri_complete"].as_str().unwrap().ends_with(&format!("user_code={code}")));
        // An OAuth error with 200 (GitHub's device flow).
        let poll = format!(
            "grant_type={}&device_code={}&client_id=emb-acme",
            form_urlencoded::byte_serialize(GRANT_DEVICE_CODE.as_bytes()).collect::<String>(),
            a["device_code"].as_str().unwrap()
        );
        let r = post_form(&s, &http, "/oauth/token", &poll).await;
        assert_eq!(r.status(), 200);
        assert_eq!(r.json::<Value>().await.unwrap()["error"], "authorization_pending");
        // No R-SEC-1 headers at all on that route (the service adds them to every other answer).
        let r = http.get(format!("{}{WELL_KNOWN_PATH}", s.info.api)).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert!(r.headers().get("cache-control").is_none() && r.headers().get("pragma").is_none());
        let r = http.get(format!("{}/.well-known/openid-configuration", s.info.api)).send().await.unwrap();
        assert!(r.headers().get("cache-control").is_some(), "other routes keep them");
        // An extension the server does not offer.
        let r = http.put(format!("{}/api/v1/device", s.info.api)).body("{}").send().await.unwrap();
        assert_eq!(r.status(), 404);
        // A deviation needs its name, and only the deviation fault takes one.
        let bad = json!({"seed": 1, "rules": [{"route": "/oauth/token", "fault": "deviation"}]});
        let r = http.post(format!("{}/sim/faults", s.info.api)).json(&bad).send().await.unwrap();
        assert_eq!(r.status(), 400);
        let bad = json!({"seed": 1, "rules": [{"route": "/oauth/token", "fault": "delay", "delay_ms": 1,
                                                "deviation": "no_interval"}]});
        let r = http.post(format!("{}/sim/faults", s.info.api)).json(&bad).send().await.unwrap();
        assert_eq!(r.status(), 400);
        s.stop().await;
    }

    #[tokio::test]
    async fn wrong_issuer_names_another_origin() {
        let (s, http) = server().await;
        set_plan(&s, &http, json!({"seed": 3, "rules": [{"route": WELL_KNOWN_PATH, "fault": "wrong_issuer"}]})).await;
        let r = http.get(format!("{}{WELL_KNOWN_PATH}", s.info.api)).send().await.expect("answer");
        assert_eq!(r.status(), 200);
        let body = r.bytes().await.expect("body");
        let meta: roger_proto::metadata::AuthorizationServerMetadata = serde_json::from_slice(&body).expect("metadata");
        assert_ne!(meta.issuer, s.info.api);
        assert_eq!(meta.issuer, wrong_issuer(&s.info.api));
        assert!(meta.token_endpoint.starts_with(&s.info.api), "only the issuer changes");
        s.stop().await;
    }

    /// The control API: GET shows the plan and counters, DELETE clears, bad plans are 400.
    #[tokio::test]
    async fn control_api_and_replay_over_http() {
        let (s, http) = server().await;
        let plan = json!({"seed": 42, "rules": [{"route": "/regions", "fault": "status_5xx", "probability": 0.5}]});
        let mut runs = Vec::new();
        for _ in 0..2 {
            set_plan(&s, &http, plan.clone()).await;
            let mut statuses = Vec::new();
            for _ in 0..24 {
                statuses.push(http.get(format!("{}/regions", s.info.api)).send().await.expect("answer").status());
            }
            runs.push(statuses);
        }
        assert_eq!(runs[0], runs[1], "the same seed replays the same faults");
        assert!(runs[0].iter().any(|c| *c == 503) && runs[0].iter().any(|c| *c == 200));
        let status: Value =
            http.get(format!("{}/sim/faults", s.info.api)).send().await.expect("get").json().await.expect("json");
        assert_eq!(status["seed"], 42);
        assert_eq!(status["draws"], 24);
        let faulted = runs[1].iter().filter(|c| **c == 503).count();
        assert_eq!(status["rules"][0]["applied"], faulted);
        assert_eq!(status["rules"][0]["fault"], "status_5xx");
        let bad = http
            .post(format!("{}/sim/faults", s.info.api))
            .json(&json!({"seed": 1, "rules": [{"route": "/regions", "fault": "delay"}]}))
            .send()
            .await
            .expect("post");
        assert_eq!(bad.status(), 400);
        let cleared: Value =
            http.delete(format!("{}/sim/faults", s.info.api)).send().await.expect("delete").json().await.expect("json");
        assert_eq!(cleared, json!({"seed": null, "rules": [], "draws": 0}));
        assert_eq!(http.get(format!("{}/regions", s.info.api)).send().await.expect("answer").status(), 200);
        s.stop().await;
    }
}
