//! The control API under `/sim/` (answered only on loopback or with the control token; absent from metadata):
//! clock, settings, store, request log, fault plan.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{ConnectInfo, Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use roger_proto::server::settings::TenantSettings;
use roger_proto::server::ApiFailure;
use serde::Deserialize;

use super::app::Shared;
use super::respond::{json, json_body, problem};

type S = State<Arc<Shared>>;

/// The header that carries the control token for non-loopback callers.
pub const CONTROL_TOKEN_HEADER: &str = "x-roger-sim-token";

fn allowed(s: &Shared, peer: &SocketAddr, headers: &HeaderMap) -> Result<(), Response> {
    if peer.ip().is_loopback() {
        return Ok(());
    }
    let presented = headers.get(CONTROL_TOKEN_HEADER).and_then(|v| v.to_str().ok());
    match (&s.control_token, presented) {
        (Some(t), Some(p)) if t.len() == p.len() && t.as_bytes().iter().zip(p.as_bytes()).all(|(a, b)| a == b) => {
            Ok(())
        }
        _ => Err(problem(&ApiFailure::not_found())),
    }
}

fn clock_json(s: &Shared) -> serde_json::Value {
    let now = s.now();
    serde_json::json!({
        "now": now.format(&time::format_description::well_known::Rfc3339).unwrap_or_default(),
        "unix_ms": (now.unix_timestamp_nanos() / 1_000_000) as i64,
        "kind": format!("{:?}", s.clock.kind()).to_lowercase(),
        "offset_secs": s.clock.offset().as_secs_f64(),
    })
}

/// `GET /sim/clock`.
pub async fn clock(State(s): S, ConnectInfo(peer): ConnectInfo<SocketAddr>, headers: HeaderMap) -> Response {
    if let Err(r) = allowed(&s, &peer, &headers) {
        return r;
    }
    json(200, &clock_json(&s))
}

#[derive(Deserialize)]
struct Advance {
    seconds: f64,
}

/// `POST /sim/clock/advance {"seconds":N}`: moves the virtual clock forward; due expiries are applied at once.
pub async fn advance(
    State(s): S,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    if let Err(r) = allowed(&s, &peer, &headers) {
        return r;
    }
    let a: Advance = match json_body(&headers, body) {
        Ok(a) => a,
        Err(r) => return r,
    };
    if !a.seconds.is_finite() || a.seconds < 0.0 || a.seconds > 10.0 * 365.0 * 86_400.0 {
        return problem(&ApiFailure::bad_request("seconds must be between 0 and ten years"));
    }
    if let Err(e) = s.clock.advance(std::time::Duration::from_secs_f64(a.seconds)) {
        return problem(
            &ApiFailure::new(409, "clock-not-virtual", "The server runs on the system clock")
                .with_detail(&e.to_string()),
        );
    }
    if let Err(r) = s.act(|core, now| core.sweep(now)) {
        return r;
    }
    let offset = s.clock.offset();
    if let Err(e) = s.store.lock().unwrap_or_else(|e| e.into_inner()).set_clock_offset(offset) {
        tracing::warn!("could not persist the clock offset: {e}");
    }
    json(200, &clock_json(&s))
}

/// `PUT /sim/settings`: merges the given members over the current settings of every tenant and the defaults.
pub async fn put_settings(
    State(s): S,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    if let Err(r) = allowed(&s, &peer, &headers) {
        return r;
    }
    let patch: serde_json::Value = match json_body(&headers, body) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let Some(patch) = patch.as_object() else { return problem(&ApiFailure::bad_request("expected a JSON object")) };
    let current = s.read(|core, _| *core.defaults());
    let mut merged = serde_json::to_value(current).unwrap_or_default();
    if let Some(m) = merged.as_object_mut() {
        for (k, v) in patch {
            if !m.contains_key(k) {
                return problem(&ApiFailure::bad_request(&format!("unknown setting {k:?}")));
            }
            m.insert(k.clone(), v.clone());
        }
    }
    let settings: TenantSettings = match serde_json::from_value(merged) {
        Ok(s) => s,
        Err(e) => return problem(&ApiFailure::bad_request(&format!("bad setting value: {e}"))),
    };
    match s.act(|core, _| core.set_settings(settings)) {
        Ok(()) => json(200, &settings),
        Err(r) => r,
    }
}

/// `GET /sim/settings`.
pub async fn get_settings(State(s): S, ConnectInfo(peer): ConnectInfo<SocketAddr>, headers: HeaderMap) -> Response {
    if let Err(r) = allowed(&s, &peer, &headers) {
        return r;
    }
    json(200, &s.read(|core, _| *core.defaults()))
}

/// `GET /sim/store`: everything the API server keeps (not the drive's files).
pub async fn store(State(s): S, ConnectInfo(peer): ConnectInfo<SocketAddr>, headers: HeaderMap) -> Response {
    if let Err(r) = allowed(&s, &peer, &headers) {
        return r;
    }
    s.read(|core, _| json(200, core.state()))
}

/// `GET /sim/traffic`: request bodies and their bytes received by the API listener (R-DATA-1 evidence).
pub async fn traffic(State(s): S, ConnectInfo(peer): ConnectInfo<SocketAddr>, headers: HeaderMap) -> Response {
    if let Err(r) = allowed(&s, &peer, &headers) {
        return r;
    }
    json(200, &s.traffic.totals())
}

/// The query of `GET /sim/log`.
#[derive(Deserialize)]
pub struct Since {
    /// First sequence number wanted.
    #[serde(default)]
    pub since: u64,
}

/// `GET /sim/log?since=N`: the request log (secrets redacted).
pub async fn log(
    State(s): S,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    q: Result<Query<Since>, axum::extract::rejection::QueryRejection>,
) -> Response {
    if let Err(r) = allowed(&s, &peer, &headers) {
        return r;
    }
    let since = q.map(|Query(q)| q.since).unwrap_or(0);
    json(200, &serde_json::json!({ "entries": s.log_since(since) }))
}

fn faults_json(s: &Shared) -> Response {
    json(200, &s.faults.status())
}

/// `GET /sim/faults`: the fault plan, with how often each rule was applied (DESIGN.md "Faults").
pub async fn get_faults(State(s): S, ConnectInfo(peer): ConnectInfo<SocketAddr>, headers: HeaderMap) -> Response {
    if let Err(r) = allowed(&s, &peer, &headers) {
        return r;
    }
    faults_json(&s)
}

/// `POST /sim/faults {"seed":N,"rules":[…]}`: replaces the fault plan (see [`super::faults`]); `400` for a plan
/// that does not hold together.
pub async fn post_faults(
    State(s): S,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    if let Err(r) = allowed(&s, &peer, &headers) {
        return r;
    }
    let value: serde_json::Value = match json_body(&headers, body) {
        Ok(v) => v,
        Err(r) => return r,
    };
    // A plan holds no secret, so the parser's message (which member is unknown or wrong) may be echoed.
    let plan: super::faults::FaultPlan = match serde_json::from_value(value) {
        Ok(p) => p,
        Err(e) => return problem(&ApiFailure::bad_request(&format!("not a fault plan: {e}"))),
    };
    if let Err(e) = s.faults.set(plan) {
        return problem(&ApiFailure::bad_request(&e.to_string()));
    }
    faults_json(&s)
}

/// `DELETE /sim/faults`: no more faults.
pub async fn delete_faults(State(s): S, ConnectInfo(peer): ConnectInfo<SocketAddr>, headers: HeaderMap) -> Response {
    if let Err(r) = allowed(&s, &peer, &headers) {
        return r;
    }
    s.faults.clear();
    faults_json(&s)
}
