//! Discovery, metadata, the OAuth endpoints (PROTOCOL.md §2–8), the app login form (§4), the verification page
//! and the code approvals (§5.3).

use std::borrow::Cow;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use roger_proto::api::CodeDecision;
use roger_proto::authorize::{AuthorizationRequest, LoginForm};
use roger_proto::device_authorization::DeviceAuthorizationRequest;
use roger_proto::discovery::{Region, Regions};
use roger_proto::metadata::AuthorizationServerMetadata;
use roger_proto::revocation::RevocationRequest;
use roger_proto::server::mint::SecretHash;
use roger_proto::server::oauth::LoginFailure;
use roger_proto::server::ApiFailure;
use roger_proto::token::TokenRequest;
use roger_proto::wire::Form;
use sha2::{Digest, Sha256};

use super::app::Shared;
use super::log::{intern, LogEntry, GRANT_TYPES, LOG_CODE_HEX};
use super::respond::{
    json, json_body, oauth_code, oauth_error, oauth_invalid_request, ok_empty, problem, problem_name, read_oauth_form,
    MAX_BODY,
};

type S = State<Arc<Shared>>;

/// A log entry for a request that arrives now (the route's own strings are borrowed, not copied).
pub(crate) fn entry(s: &Shared, method: &Method, path: impl Into<Cow<'static, str>>) -> LogEntry {
    let method = match *method {
        Method::GET => Cow::Borrowed("GET"),
        Method::POST => Cow::Borrowed("POST"),
        Method::PUT => Cow::Borrowed("PUT"),
        Method::DELETE => Cow::Borrowed("DELETE"),
        ref other => Cow::Owned(other.to_string()),
    };
    LogEntry {
        seq: 0,
        time: s.now(),
        method,
        path: path.into(),
        grant_type: None,
        client_id: None,
        status: 200,
        outcome: None,
        code: None,
        gap_ms: None,
        interval_s: None,
        authenticated: false,
    }
}

pub(crate) fn authorization(headers: &HeaderMap) -> Option<&str> {
    headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok())
}

fn body_or_oauth_error(body: Result<Bytes, BytesRejection>) -> Result<Bytes, Response> {
    body.map_err(|_| oauth_body_error())
}

/// The answer to an OAuth request whose body cannot be read or is over [`MAX_BODY`] (PROTOCOL.md §10).
fn oauth_body_error() -> Response {
    oauth_invalid_request(&format!("the body is unreadable or larger than {MAX_BODY} bytes"))
}

/// Renders a core answer of an OAuth endpoint, noting a refusal's code in the log entry.
fn oauth_answer<T: serde::Serialize>(e: &mut LogEntry, out: Result<T, roger_proto::server::OAuthFailure>) -> Response {
    match out {
        Ok(answer) => json(200, &answer),
        Err(f) => {
            e.outcome = Some(oauth_code(&f));
            oauth_error(&f)
        }
    }
}

/// `GET {discovery}/regions` (PROTOCOL.md §2).
pub async fn regions(State(s): S) -> Response {
    let body = Regions {
        regions: vec![Region {
            id: "local".into(),
            name: "Simulator".into(),
            api: s.api.clone(),
            amqp: s.amqp.clone(),
        }],
    };
    json(200, &body)
}

/// `GET /.well-known/oauth-authorization-server` (RFC 8414, R-META-1).
pub async fn metadata(State(s): S) -> Response {
    json(200, &AuthorizationServerMetadata::for_api(&s.api, s.amqp.is_some()))
}

/// `POST /oauth/device_authorization` (RFC 8628 §3.1).
pub async fn device_authorization(State(s): S, headers: HeaderMap, body: Result<Bytes, BytesRejection>) -> Response {
    let mut e = entry(&s, &Method::POST, "/oauth/device_authorization");
    e.authenticated = authorization(&headers).is_some();
    let resp = (|| {
        let body = body_or_oauth_error(body)?;
        let form = read_oauth_form(&headers, &body)?;
        let req =
            DeviceAuthorizationRequest::from_parsed(&form).map_err(|err| oauth_invalid_request(&err.to_string()))?;
        e.client_id = Some(req.client_id.as_str().into());
        let out = s.act(|core, now| core.device_authorization(now, &req, authorization(&headers)))?;
        Ok(oauth_answer(&mut e, out))
    })()
    .unwrap_or_else(|r| r);
    e.status = resp.status().as_u16();
    s.log(e);
    resp
}

/// `POST /oauth/token` (RFC 6749 §3.2, RFC 8628 §3.4).
///
/// The hot path of every printer (polls and refreshes). It takes the request whole rather than a `HeaderMap`
/// extractor, which would copy the headers, and awaits nothing but the body: the rest (`token_answer`) is
/// synchronous, so the future axum allocates for each request holds only the headers and the body being read.
pub async fn token(State(s): S, req: Request) -> Response {
    let (headers, body) = {
        let (parts, body) = req.into_parts();
        (parts.headers, body)
    };
    let body = axum::body::to_bytes(body, MAX_BODY).await;
    token_answer(&s, &headers, body)
}

/// The token endpoint's answer to a request whose body has been read (or failed to be).
fn token_answer(s: &Shared, headers: &HeaderMap, body: Result<Bytes, axum::Error>) -> Response {
    let mut e = entry(s, &Method::POST, "/oauth/token");
    e.authenticated = authorization(headers).is_some();
    let resp = (|| {
        let body = body.map_err(|_| oauth_body_error())?;
        let form = read_oauth_form(headers, &body)?;
        e.grant_type = form.get("grant_type").map(|g| intern(g, &GRANT_TYPES));
        e.client_id = form.get("client_id").map(Into::into);
        let req = TokenRequest::from_parsed(&form).map_err(|err| {
            let f = roger_proto::server::OAuthFailure::bad(err.oauth_code(), &err.to_string());
            e.outcome = Some(oauth_code(&f));
            oauth_error(&f)
        })?;
        let polled = match &req {
            TokenRequest::DeviceCode { device_code, .. } => Some(SecretHash::of(device_code.secret())),
            _ => None,
        };
        let out = s.act(|core, now| {
            // PROTOCOL.md §12: the log shows each poll's gap and the interval it was judged by (read under the same
            // lock as the poll itself).
            if let Some(hash) = &polled {
                e.code = Some(hash.hex_prefix(LOG_CODE_HEX));
                if let Some(rec) = core.state().codes.get(hash) {
                    e.interval_s = Some(rec.interval);
                    e.gap_ms = rec.last_poll.map(|p| (now - p).whole_milliseconds() as i64);
                }
            }
            core.token(now, req, authorization(headers))
        })?;
        Ok(oauth_answer(&mut e, out))
    })()
    .unwrap_or_else(|r| r);
    e.status = resp.status().as_u16();
    s.log(e);
    resp
}

/// `POST /oauth/revoke` (RFC 7009).
pub async fn revoke(State(s): S, headers: HeaderMap, body: Result<Bytes, BytesRejection>) -> Response {
    let mut e = entry(&s, &Method::POST, "/oauth/revoke");
    e.authenticated = authorization(&headers).is_some();
    let resp = (|| {
        let body = body_or_oauth_error(body)?;
        let form = read_oauth_form(&headers, &body)?;
        let req = RevocationRequest::from_parsed(&form).map_err(|err| oauth_invalid_request(&err.to_string()))?;
        e.client_id = Some(req.client_id.as_str().into());
        match s.act(|core, now| core.revoke(now, &req, authorization(&headers)))? {
            Ok(()) => Ok(ok_empty()),
            Err(f) => {
                e.outcome = Some(oauth_code(&f));
                Ok(oauth_error(&f))
            }
        }
    })()
    .unwrap_or_else(|r| r);
    e.status = resp.status().as_u16();
    s.log(e);
    resp
}

// ---------------------------------------------------------------------------------------------------------------
// App login form (PROTOCOL.md §4): CSRF token bound to a SameSite cookie, frame-ancestors 'none'.
// ---------------------------------------------------------------------------------------------------------------

const CSRF_COOKIE: &str = "roger_csrf";

fn csrf_token(key: &[u8; 32], nonce: &str) -> String {
    let mut h = Sha256::new();
    h.update(key);
    h.update(b"|csrf|");
    h.update(nonce.as_bytes());
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers.get_all(header::COOKIE).iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(';')).find_map(|c| {
        let (k, v) = c.trim().split_once('=')?;
        (k == name).then(|| v.to_owned())
    })
}

fn escape(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '&' => "&amp;".to_owned(),
            '<' => "&lt;".to_owned(),
            '>' => "&gt;".to_owned(),
            '"' => "&quot;".to_owned(),
            '\'' => "&#39;".to_owned(),
            c => c.to_string(),
        })
        .collect()
}

fn page(status: StatusCode, title: &str, body: &str) -> Response {
    let html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{t}</title>\
         <meta name=\"viewport\" content=\"width=device-width\"></head><body><h1>{t}</h1>{body}</body></html>",
        t = escape(title)
    );
    let mut r = (status, Html(html)).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; form-action 'self'; frame-ancestors 'none'"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    r
}

fn login_page(s: &Shared, req: &AuthorizationRequest, message: Option<&str>) -> Response {
    let mut nonce = [0u8; 16];
    rand::Rng::fill(&mut rand::thread_rng(), &mut nonce);
    let nonce: String = nonce.iter().map(|b| format!("{b:02x}")).collect();
    let token = csrf_token(&s.csrf_key, &nonce);
    let hidden: String = [
        ("response_type", &req.response_type),
        ("client_id", &req.client_id),
        ("redirect_uri", &req.redirect_uri),
        ("code_challenge", &req.code_challenge),
        ("code_challenge_method", &req.code_challenge_method),
        ("state", &req.state),
        ("scope", &req.scope),
        ("csrf_token", &token),
    ]
    .iter()
    .map(|(k, v)| format!("<input type=\"hidden\" name=\"{k}\" value=\"{}\">", escape(v)))
    .collect();
    let msg = message.map(|m| format!("<p role=\"alert\">{}</p>", escape(m))).unwrap_or_default();
    let body = format!(
        "{msg}<form method=\"post\" action=\"/oauth/authorize\">{hidden}\
         <label>Tenant <input name=\"tenant\" autocomplete=\"organization\" required></label>\
         <label>User name <input name=\"username\" autocomplete=\"username\" required></label>\
         <label>Password <input name=\"password\" type=\"password\" autocomplete=\"current-password\" required></label>\
         <button type=\"submit\">Sign in</button></form>"
    );
    // A failed sign-in shows the form again with 200 (docs/protocol.md §3.4): a 401 would need a
    // `WWW-Authenticate` challenge (RFC 9110 §15.5.2), and a form is not one.
    let mut r = page(StatusCode::OK, "Sign in to Roger", &body);
    let secure = if s.tls { "; Secure" } else { "" };
    if let Ok(v) = HeaderValue::from_str(&format!(
        "{CSRF_COOKIE}={nonce}; Path=/oauth/authorize; HttpOnly; SameSite=Strict{secure}"
    )) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

/// `GET /oauth/authorize`: the login form (PROTOCOL.md §4).
pub async fn authorize_form(State(s): S, uri: axum::http::Uri) -> Response {
    let mut e = entry(&s, &Method::GET, "/oauth/authorize");
    let form = Form::parse(uri.query().unwrap_or("").as_bytes());
    let resp = match form
        .as_ref()
        .map_err(|err| err.to_string())
        .and_then(|f| AuthorizationRequest::from_form(f).map_err(|err| err.to_string()))
    {
        Ok(req) => match s.read(|core, _| core.check_authorization_request(&req)) {
            Ok(()) => {
                e.client_id = Some(req.client_id.as_str().into());
                login_page(&s, &req, None)
            }
            Err(f) => {
                page(StatusCode::BAD_REQUEST, "Invalid sign-in request", &format!("<p>{}</p>", escape(&f.to_string())))
            }
        },
        Err(msg) => page(StatusCode::BAD_REQUEST, "Invalid sign-in request", &format!("<p>{}</p>", escape(&msg))),
    };
    e.status = resp.status().as_u16();
    s.log(e);
    resp
}

/// `POST /oauth/authorize`: checks the CSRF token against the cookie, then the credentials; `302` to the app.
pub async fn authorize_submit(State(s): S, headers: HeaderMap, body: Result<Bytes, BytesRejection>) -> Response {
    let mut e = entry(&s, &Method::POST, "/oauth/authorize");
    let resp = (|| {
        let body =
            body.map_err(|_| page(StatusCode::BAD_REQUEST, "Invalid sign-in request", "<p>Unreadable form.</p>"))?;
        if super::respond::media_type(&headers) != "application/x-www-form-urlencoded" {
            return Err(page(StatusCode::BAD_REQUEST, "Invalid sign-in request", "<p>Not a form post.</p>"));
        }
        let form = LoginForm::from_form(&body).map_err(|err| {
            page(StatusCode::BAD_REQUEST, "Invalid sign-in request", &format!("<p>{}</p>", escape(&err.to_string())))
        })?;
        e.client_id = Some(form.request.client_id.as_str().into());
        let csrf_ok = cookie(&headers, CSRF_COOKIE).is_some_and(|nonce| {
            let expected = csrf_token(&s.csrf_key, &nonce);
            subtle_eq(expected.as_bytes(), form.csrf.secret().as_bytes())
        });
        if !csrf_ok {
            e.outcome = Some("csrf".into());
            return Err(page(
                StatusCode::FORBIDDEN,
                "Sign-in refused",
                "<p>The form expired or was not ours. Start again from the app.</p>",
            ));
        }
        match s.act(|core, now| core.app_login(now, &form))? {
            Ok(location) => {
                let mut r = StatusCode::FOUND.into_response();
                if let Ok(v) = HeaderValue::from_str(&location) {
                    r.headers_mut().insert(header::LOCATION, v);
                }
                Ok(r)
            }
            Err(LoginFailure::BadCredentials) => {
                e.outcome = Some("bad_credentials".into());
                Ok(login_page(&s, &form.request, Some("The tenant, user name or password is wrong.")))
            }
            Err(f) => Ok(page(
                StatusCode::BAD_REQUEST,
                "Invalid sign-in request",
                &format!("<p>{}</p>", escape(&f.to_string())),
            )),
        }
    })()
    .unwrap_or_else(|r| r);
    e.status = resp.status().as_u16();
    s.log(e);
    resp
}

fn subtle_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// `GET /device?user_code=…`: the verification page (RFC 8628 §3.3): shows the code to compare with the panel and
/// the printer it belongs to, and sends the user to the app to approve it.
pub async fn verification_page(State(s): S, Query(q): Query<std::collections::HashMap<String, String>>) -> Response {
    let e = entry(&s, &Method::GET, "/device");
    let code = q.get("user_code").and_then(|c| roger_proto::user_code::normalize(c).ok());
    let body = match code {
        Some(code) => {
            let found = s.read(|core, now| {
                core.state()
                    .codes
                    .values()
                    .find(|c| c.user_code.as_str() == code && c.expires > now)
                    .map(|c| (c.kind, c.client_id.clone(), c.model.clone()))
            });
            match found {
                Some((kind, client, model)) => format!(
                    "<p>Code <strong>{}</strong>: check that the printer panel shows the same code.</p>\
                     <p>Request: {:?} from {}{}.</p><p>Open the Roger app and confirm the code there.</p>",
                    escape(&roger_proto::user_code::format_for_display(&code)),
                    kind,
                    escape(&client),
                    model.map(|m| format!(", model {}", escape(&m))).unwrap_or_default()
                ),
                None => "<p>This code is unknown or has expired. Look at the printer panel for a fresh one.</p>".into(),
            }
        }
        None => "<p>Enter the code shown on the printer panel in the Roger app.</p>".into(),
    };
    let mut r = page(StatusCode::OK, "Confirm the code", &body);
    r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    let mut e = e;
    e.status = 200;
    s.log(e);
    r
}

// ---------------------------------------------------------------------------------------------------------------
// Approvals (PROTOCOL.md §5.3, §8)
// ---------------------------------------------------------------------------------------------------------------

/// `GET /api/v1/codes/{user_code}`.
pub async fn lookup_code(
    State(s): S,
    headers: HeaderMap,
    path: Result<Path<String>, axum::extract::rejection::PathRejection>,
) -> Response {
    let mut e = entry(&s, &Method::GET, "/api/v1/codes/{user_code}");
    let resp = (|| {
        let Path(code) = path.map_err(|_| problem(&ApiFailure::bad_request("bad path")))?;
        let who = s.read(|core, now| core.authenticate(now, authorization(&headers))).map_err(|f| problem(&f))?;
        e.authenticated = true;
        match s.act(|core, now| core.lookup_code(now, &who, &code))? {
            Ok(l) => Ok(json(200, &l)),
            Err(f) => Err(problem(&f)),
        }
    })()
    .unwrap_or_else(|r| r);
    e.status = resp.status().as_u16();
    s.log(e);
    resp
}

async fn decide(s: Arc<Shared>, headers: HeaderMap, body: Result<Bytes, BytesRejection>, approve: bool) -> Response {
    let path = if approve { "/api/v1/codes/approve" } else { "/api/v1/codes/deny" };
    let mut e = entry(&s, &Method::POST, path);
    let resp = (|| {
        let who = s.read(|core, now| core.authenticate(now, authorization(&headers))).map_err(|f| problem(&f))?;
        e.authenticated = true;
        let d: CodeDecision = json_body(&headers, body)?;
        match s.act(|core, now| core.decide_code(now, &who, d.user_code.secret(), approve))? {
            Ok(()) => Ok(StatusCode::NO_CONTENT.into_response()),
            Err(f) => {
                e.outcome = Some(problem_name(&f.problem));
                Err(problem(&f))
            }
        }
    })()
    .unwrap_or_else(|r| r);
    e.status = resp.status().as_u16();
    s.log(e);
    resp
}

/// `POST /api/v1/codes/approve`.
pub async fn approve(State(s): S, headers: HeaderMap, body: Result<Bytes, BytesRejection>) -> Response {
    decide(s, headers, body, true).await
}

/// `POST /api/v1/codes/deny`.
pub async fn deny(State(s): S, headers: HeaderMap, body: Result<Bytes, BytesRejection>) -> Response {
    decide(s, headers, body, false).await
}
