//! Turning the core's typed answers and failures into HTTP, and reading request bodies strictly: every refusal is a
//! clear 4xx in the right shape (RFC 6749 §5.2 JSON on OAuth endpoints, RFC 9457 problem details on the API), never
//! a 5xx for bad input (PROTOCOL.md §10).

use std::borrow::Cow;

use axum::body::Bytes;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use roger_proto::error::{OAuthErrorCode, ProblemDetails, PROBLEM_JSON};
use roger_proto::server::{ApiFailure, OAuthFailure};
use roger_proto::wire::Form;
use serde::Serialize;

use super::log::{intern, OAUTH_ERRORS};

/// Largest request body the API accepts (docs/protocol.md C10: 413 beyond 64 KiB).
pub const MAX_BODY: usize = 64 * 1024;

fn status(code: u16) -> StatusCode {
    StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_REQUEST)
}

/// A JSON answer.
pub fn json<T: Serialize>(code: u16, body: &T) -> Response {
    // Sized for a token response, so serialising does not grow the buffer several times.
    let mut bytes = Vec::with_capacity(512);
    match serde_json::to_writer(&mut bytes, body) {
        Ok(()) => (status(code), [(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], bytes)
            .into_response(),
        Err(_) => problem(&ApiFailure::new(500, "internal", "The answer could not be encoded")),
    }
}

/// An OAuth error answer (RFC 6749 §5.2), with `WWW-Authenticate` and `Retry-After` when the failure has them.
pub fn oauth_error(f: &OAuthFailure) -> Response {
    let mut r = json(f.status, &*f.body);
    if let Some(w) = f.www_authenticate.as_deref().and_then(|w| HeaderValue::from_str(w).ok()) {
        r.headers_mut().insert(header::WWW_AUTHENTICATE, w);
    }
    if let Some(ra) = f.retry_after {
        r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(ra));
    }
    r
}

/// An RFC 6749 §5.2 `invalid_request` for a malformed OAuth request.
pub fn oauth_invalid_request(description: &str) -> Response {
    oauth_error(&OAuthFailure::bad(OAuthErrorCode::InvalidRequest, description))
}

/// An RFC 9457 problem answer.
pub fn problem(f: &ApiFailure) -> Response {
    let body = serde_json::to_vec(&*f.problem).unwrap_or_default();
    let mut r =
        (status(f.status), [(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON))], body).into_response();
    if let Some(w) = f.www_authenticate.as_deref().and_then(|w| HeaderValue::from_str(w).ok()) {
        r.headers_mut().insert(header::WWW_AUTHENTICATE, w);
    }
    if let Some(ra) = f.retry_after {
        r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(ra));
    }
    r
}

/// The media type of a request, lower-cased, without parameters.
pub fn media_type(headers: &HeaderMap) -> String {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or("").trim().to_ascii_lowercase())
        .unwrap_or_default()
}

/// Whether the request's media type (without parameters) is `expected` (ASCII case-insensitive, RFC 9110 §8.3.1).
pub fn is_media_type(headers: &HeaderMap, expected: &str) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(';').next().unwrap_or("").trim().eq_ignore_ascii_case(expected))
}

/// Reads an OAuth form body (RFC 6749 §3.2: `application/x-www-form-urlencoded`; parameters MUST NOT repeat).
pub fn read_oauth_form(headers: &HeaderMap, body: &Bytes) -> Result<Form, Response> {
    if !is_media_type(headers, "application/x-www-form-urlencoded") {
        return Err(oauth_invalid_request("the body must be application/x-www-form-urlencoded"));
    }
    if body.len() > MAX_BODY {
        return Err(oauth_invalid_request("the body is too large"));
    }
    // Form errors name parameters, never values.
    Form::parse(body).map_err(|e| oauth_invalid_request(&e.to_string()))
}

/// Reads a JSON API body: `application/json` (else 415), at most [`MAX_BODY`] (else 413), the right shape (else
/// 400 with the parser's position, never the input).
pub fn read_json<T: serde::de::DeserializeOwned>(headers: &HeaderMap, body: &Bytes) -> Result<T, Response> {
    let mt = media_type(headers);
    if mt != "application/json" && !mt.ends_with("+json") {
        return Err(problem(&ApiFailure::new(415, "unsupported-media-type", "The body must be application/json")));
    }
    if body.len() > MAX_BODY {
        return Err(problem(&ApiFailure::new(413, "payload-too-large", "The body is too large")));
    }
    serde_json::from_slice(body).map_err(|e| {
        problem(&ApiFailure::bad_request(&format!(
            "the JSON body is not acceptable (line {}, column {})",
            e.line(),
            e.column()
        )))
    })
}

/// A required JSON body from an axum body extraction (413 when unreadable or over the limit).
pub fn json_body<T: serde::de::DeserializeOwned>(
    headers: &HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<T, Response> {
    let body =
        body.map_err(|_| problem(&ApiFailure::new(413, "payload-too-large", "The body is unreadable or too large")))?;
    read_json(headers, &body)
}

/// A JSON body the client may leave empty (the MFP's release, a scan completion).
pub fn optional_json_body<T: serde::de::DeserializeOwned + Default>(
    headers: &HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<T, Response> {
    match body {
        Ok(b) if b.is_empty() => Ok(T::default()),
        other => json_body(headers, other),
    }
}

/// A problem for an unknown route (path junk, PROTOCOL.md §10).
pub fn not_found() -> Response {
    problem(&ApiFailure::not_found())
}

/// A problem for a known path with the wrong method.
pub fn method_not_allowed() -> Response {
    problem(&ApiFailure::new(405, "method-not-allowed", "Method not allowed"))
}

/// The OAuth error code of a refusal (for logs).
pub fn oauth_code(f: &OAuthFailure) -> Cow<'static, str> {
    intern(f.body.error.as_str(), &OAUTH_ERRORS)
}

/// A problem's short name (for logs).
pub fn problem_name(p: &ProblemDetails) -> Cow<'static, str> {
    Cow::Owned(p.roger_name().unwrap_or(&p.problem_type).to_owned())
}

/// A 200 with an empty JSON object (answers whose body does not matter, RFC 7009 §2.2).
pub fn ok_empty() -> Response {
    json(200, &serde_json::json!({}))
}
