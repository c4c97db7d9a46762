//! The Roger API of PROTOCOL.md §9–10 over HTTP: each route authenticates the bearer token (RFC 6750), reads its
//! body strictly, calls one method of the server core, and renders the answer (RFC 9457 problems on refusal).

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::Router;
use roger_proto::push::Id;
use roger_proto::server::api::{is_valid_installation_id, PushConfig, ReleaseOutcome};
use roger_proto::server::{ApiFailure, Principal, ServerCore};
use roger_proto::token::scope;
use serde::Serialize;
use time::OffsetDateTime;

use super::app::Shared;
use super::oauth_routes::{authorization, entry};
use super::respond::{json, json_body, optional_json_body, problem, problem_name};
use crate::bus::QueueSpec;
use crate::drive::Drive;

type S = State<Arc<Shared>>;
type Q = Query<HashMap<String, String>>;
type Body = Result<Bytes, BytesRejection>;
type P = Result<Path<String>, PathRejection>;

/// What a successful call renders as.
enum Ok2 {
    Json(u16, serde_json::Value),
    NoContent,
}

fn to_json<T: Serialize>(code: u16, v: &T) -> Result<Ok2, ApiFailure> {
    serde_json::to_value(v)
        .map(|v| Ok2::Json(code, v))
        .map_err(|_| ApiFailure::new(500, "internal", "The answer could not be encoded"))
}

/// Authenticates, runs `f` on the core (journal committed before answering), renders, logs.
async fn call(
    s: Arc<Shared>,
    method: Method,
    template: &'static str,
    headers: &HeaderMap,
    f: impl FnOnce(&mut ServerCore, OffsetDateTime, &Principal, &mut Drive) -> Result<Ok2, ApiFailure>,
) -> Response {
    let mut e = entry(&s, &method, template);
    let who = s.read(|core, now| core.authenticate(now, authorization(headers)));
    let resp = match who {
        Err(f) => {
            e.outcome = Some(problem_name(&f.problem));
            problem(&f)
        }
        Ok(who) => {
            e.authenticated = true;
            e.client_id = Some(who.client_id.as_str().into());
            let mut drive = s.drive.clone();
            match s.act(|core, now| f(core, now, &who, &mut drive)) {
                Err(r) => r,
                Ok(Err(f)) => {
                    e.outcome = Some(problem_name(&f.problem));
                    problem(&f)
                }
                Ok(Ok(Ok2::Json(code, v))) => json(code, &v),
                Ok(Ok(Ok2::NoContent)) => StatusCode::NO_CONTENT.into_response(),
            }
        }
    };
    e.status = resp.status().as_u16();
    s.log(e);
    resp
}

fn path_arg(p: P) -> Result<String, Response> {
    p.map(|Path(v)| v).map_err(|_| problem(&ApiFailure::bad_request("the path is not valid")))
}

/// What the push endpoints hand out (PROTOCOL.md §11): the broker of `roger-sim server --amqp`, with the shared test
/// account it was started with (and `shared_test_account: true`, "says so"), or no broker (`404 push-unavailable`).
fn push_config(s: &Shared) -> PushConfig {
    s.push.clone()
}

/// PROTOCOL.md §11: the server declares the caller's queue before it hands out credentials for it, so the queue
/// exists (again, after `x-expires` removed it) when the client starts consuming, and an app queue is bound to the
/// user now signed in. Callers the endpoint will refuse (no token, wrong scope, bad installation id) are left to
/// the endpoint's own answer. `Err` is the answer when the broker cannot declare it: `503`, retry later.
async fn declare_push_queue(s: &Shared, h: &HeaderMap, installation: Option<&str>) -> Result<(), Response> {
    if s.push.url.is_none() {
        return Ok(());
    }
    let Ok(who) = s.read(|core, now| core.authenticate(now, authorization(h))) else { return Ok(()) };
    let spec = match installation {
        None if who.has_any_scope(&[scope::DEVICE]) => {
            who.device_id().and_then(|d| Id::new(d).ok()).map(QueueSpec::Device)
        }
        Some(inst) if who.has_any_scope(&[scope::APP]) && is_valid_installation_id(inst) => {
            match (who.user_id().map(Id::new), Id::new(inst)) {
                (Some(Ok(user_id)), Ok(installation_id)) => Some(QueueSpec::App { user_id, installation_id }),
                _ => None,
            }
        }
        _ => None,
    };
    let Some(spec) = spec else { return Ok(()) };
    s.bus.declare(spec).await.map_err(|e| {
        tracing::warn!("push queue declaration failed: {e}");
        problem(
            &ApiFailure::new(503, "unavailable", "The push broker is unavailable")
                .with_detail("retry later; poll at the plain interval meanwhile"),
        )
    })
}

async fn get_device(State(s): S, h: HeaderMap) -> Response {
    call(s, Method::GET, "/api/v1/device", &h, |c, _, w, _| to_json(200, &c.get_device(w)?)).await
}

async fn put_device(State(s): S, h: HeaderMap, b: Body) -> Response {
    let body = match json_body(&h, b) {
        Ok(v) => v,
        Err(r) => return r,
    };
    call(s, Method::PUT, "/api/v1/device", &h, move |c, _, w, _| to_json(200, &c.update_device(w, &body)?)).await
}

async fn device_push(State(s): S, h: HeaderMap) -> Response {
    if let Err(r) = declare_push_queue(&s, &h, None).await {
        return r;
    }
    let cfg = push_config(&s);
    call(s, Method::GET, "/api/v1/device/push", &h, move |c, now, w, _| {
        to_json(200, &c.device_push_credentials(now, w, &cfg)?)
    })
    .await
}

async fn app_push(State(s): S, h: HeaderMap, Query(q): Q) -> Response {
    let installation = q.get("installation_id").cloned().unwrap_or_default();
    if let Err(r) = declare_push_queue(&s, &h, Some(&installation)).await {
        return r;
    }
    let cfg = push_config(&s);
    call(s, Method::GET, "/api/v1/me/push", &h, move |c, now, w, _| {
        to_json(200, &c.app_push_credentials(now, w, &installation, &cfg)?)
    })
    .await
}

async fn redeem_ticket(State(s): S, h: HeaderMap, b: Body) -> Response {
    let body = match json_body(&h, b) {
        Ok(v) => v,
        Err(r) => return r,
    };
    call(s, Method::POST, "/api/v1/tickets/redeem", &h, move |c, now, w, _| {
        to_json(200, &c.redeem_ticket(now, w, &body)?)
    })
    .await
}

async fn list_jobs(State(s): S, h: HeaderMap, Query(q): Q) -> Response {
    let state = q.get("state").cloned();
    call(s, Method::GET, "/api/v1/jobs", &h, move |c, now, w, _| to_json(200, &c.list_jobs(now, w, state.as_deref())?))
        .await
}

async fn submit_job(State(s): S, h: HeaderMap, b: Body) -> Response {
    let body = match json_body(&h, b) {
        Ok(v) => v,
        Err(r) => return r,
    };
    call(s, Method::POST, "/api/v1/jobs", &h, move |c, now, w, d| to_json(201, &c.submit_job(now, w, &body, d)?)).await
}

async fn cancel_job(State(s): S, h: HeaderMap, p: P) -> Response {
    let id = match path_arg(p) {
        Ok(v) => v,
        Err(r) => return r,
    };
    call(s, Method::DELETE, "/api/v1/jobs/{id}", &h, move |c, now, w, _| {
        c.cancel_job(now, w, &id)?;
        Ok(Ok2::NoContent)
    })
    .await
}

async fn release_job(State(s): S, h: HeaderMap, p: P, b: Body) -> Response {
    let id = match path_arg(p) {
        Ok(v) => v,
        Err(r) => return r,
    };
    // The MFP may post no body at all; the phone sends {"device_id"}.
    let body: roger_proto::api::ReleaseRequest = match optional_json_body(&h, b) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let key = h.get(roger_proto::api::IDEMPOTENCY_KEY).and_then(|v| v.to_str().ok()).map(str::to_owned);
    if h.get(roger_proto::api::IDEMPOTENCY_KEY).is_some() && key.is_none() {
        return problem(&ApiFailure::bad_request("Idempotency-Key must be visible ASCII"));
    }
    call(s, Method::POST, "/api/v1/jobs/{id}/release", &h, move |c, now, w, d| {
        match c.release_job(now, w, &id, key.as_deref(), &body, d)? {
            ReleaseOutcome::Answer(a) => to_json(200, &a),
            ReleaseOutcome::Requested(r) => to_json(202, &r),
        }
    })
    .await
}

async fn handover(State(s): S, h: HeaderMap, p: P) -> Response {
    let id = match path_arg(p) {
        Ok(v) => v,
        Err(r) => return r,
    };
    call(s, Method::POST, "/api/v1/jobs/{id}/handover", &h, move |c, now, w, _| to_json(200, &c.handover(now, w, &id)?))
        .await
}

async fn report_result(State(s): S, h: HeaderMap, p: P, b: Body) -> Response {
    let id = match path_arg(p) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let body = match json_body(&h, b) {
        Ok(v) => v,
        Err(r) => return r,
    };
    call(s, Method::POST, "/api/v1/jobs/{id}/result", &h, move |c, now, w, d| {
        c.report_result(now, w, &id, &body, d)?;
        Ok(Ok2::NoContent)
    })
    .await
}

async fn drive_files(State(s): S, h: HeaderMap, Query(q): Q) -> Response {
    let folder = q.get("folder").cloned();
    call(s, Method::GET, "/api/v1/drive/files", &h, move |c, _, w, d| {
        to_json(200, &c.drive_files(w, folder.as_deref(), d)?)
    })
    .await
}

async fn print_features(State(s): S, h: HeaderMap) -> Response {
    call(s, Method::GET, "/api/v1/print-features", &h, |c, _, w, _| to_json(200, &c.print_features(w)?)).await
}

async fn scan_profiles(State(s): S, h: HeaderMap) -> Response {
    call(s, Method::GET, "/api/v1/scan-profiles", &h, |c, _, w, _| to_json(200, &c.scan_profiles(w)?)).await
}

async fn create_scan(State(s): S, h: HeaderMap, b: Body) -> Response {
    let body = match json_body(&h, b) {
        Ok(v) => v,
        Err(r) => return r,
    };
    call(s, Method::POST, "/api/v1/scans", &h, move |c, now, w, d| to_json(201, &c.create_scan(now, w, &body, d)?))
        .await
}

async fn complete_scan(State(s): S, h: HeaderMap, p: P, b: Body) -> Response {
    let id = match path_arg(p) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let body: roger_proto::api::ScanComplete = match optional_json_body(&h, b) {
        Ok(v) => v,
        Err(r) => return r,
    };
    call(s, Method::POST, "/api/v1/scans/{id}/complete", &h, move |c, now, w, _| {
        c.complete_scan(now, w, &id, &body)?;
        Ok(Ok2::NoContent)
    })
    .await
}

async fn end_session(State(s): S, h: HeaderMap, b: Body) -> Response {
    let body = match json_body(&h, b) {
        Ok(v) => v,
        Err(r) => return r,
    };
    call(s, Method::POST, "/api/v1/sessions/end", &h, move |c, now, w, _| {
        c.end_session(now, w, &body)?;
        Ok(Ok2::NoContent)
    })
    .await
}

async fn remove_device(State(s): S, h: HeaderMap, p: P) -> Response {
    let id = match path_arg(p) {
        Ok(v) => v,
        Err(r) => return r,
    };
    call(s, Method::DELETE, "/api/v1/devices/{id}", &h, move |c, now, w, _| {
        c.remove_device(now, w, &id)?;
        Ok(Ok2::NoContent)
    })
    .await
}

async fn export_me(State(s): S, h: HeaderMap) -> Response {
    call(s, Method::GET, "/api/v1/me/export", &h, |c, _, w, _| to_json(200, &c.export_me(w)?)).await
}

async fn delete_me(State(s): S, h: HeaderMap) -> Response {
    call(s, Method::DELETE, "/api/v1/me", &h, |c, now, w, _| {
        c.delete_me(now, w)?;
        Ok(Ok2::NoContent)
    })
    .await
}

/// The API routes.
pub fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/api/v1/device", get(get_device).put(put_device))
        .route("/api/v1/device/push", get(device_push))
        .route("/api/v1/me/push", get(app_push))
        .route("/api/v1/tickets/redeem", post(redeem_ticket))
        .route("/api/v1/jobs", get(list_jobs).post(submit_job))
        .route("/api/v1/jobs/{id}", delete(cancel_job))
        .route("/api/v1/jobs/{id}/release", post(release_job))
        .route("/api/v1/jobs/{id}/handover", post(handover))
        .route("/api/v1/jobs/{id}/result", post(report_result))
        .route("/api/v1/drive/files", get(drive_files))
        .route("/api/v1/print-features", get(print_features))
        .route("/api/v1/scan-profiles", get(scan_profiles))
        .route("/api/v1/scans", post(create_scan))
        .route("/api/v1/scans/{id}/complete", post(complete_scan))
        .route("/api/v1/sessions/end", post(end_session))
        .route("/api/v1/devices/{id}", delete(remove_device))
        .route("/api/v1/me/export", get(export_me))
        .route("/api/v1/me", delete(delete_me))
}
