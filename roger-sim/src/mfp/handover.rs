//! The printer's job endpoint for desktop hand-overs (PROTOCOL.md §9, docs/protocol.md §3.14): a small HTTP
//! listener on loopback whose URL the printer publishes with `PUT /api/v1/device {"job_url"}`.
//!
//! `POST {job_url}` with `Authorization: Ticket <ticket>` and the document as the body. The ticket is checked
//! with `POST /api/v1/tickets/redeem` **before** a single body byte is read, and accepted only when the server
//! redeems it for this printer (one use, bound to job and device; the printer also remembers the tickets it
//! redeemed, so a replay within the server's 30-second lost-answer grace prints nothing either). Then the document prints like a drive job and
//! the result is reported with the session's token when a session is open.
//!
//! Answers: `201 {"job_id","bytes","sha256"}` when printed; `401` + `WWW-Authenticate: Ticket realm="roger-mfp"`
//! without a ticket or for a ticket the server refuses; `403` for a ticket bound to another printer or a printer
//! that is not connected; `400` for an empty document; `413` for one larger than `MAX_DOCUMENT_BYTES`; `503`
//! when the server cannot be asked. A refusal prints nothing.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use roger_proto::api::JobOutcome;
use roger_proto::secret::Ticket;
use serde_json::json;
use tokio::net::TcpListener;

use super::ops::Refusal;
use super::printer::{sha256_hex, PrintSource};
use super::runtime::{lock, Core, JOB_PATH};

/// Largest document the job endpoint accepts (PROTOCOL.md §9 hand-over; 64 MiB, the drive's upload limit too).
pub const MAX_DOCUMENT_BYTES: usize = 64 * 1024 * 1024;

/// The `WWW-Authenticate` challenge of a refused hand-over (RFC 9110 §11.6.1; docs/protocol.md §3.14).
pub const TICKET_CHALLENGE: &str = "Ticket realm=\"roger-mfp\"";

/// Most ticket fingerprints remembered for the one-use check.
const MAX_USED_TICKETS: usize = 10_000;

/// Longest ticket accepted in the header (tickets are short random strings; this bounds what is forwarded).
const MAX_TICKET_LEN: usize = 512;

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::FORBIDDEN);
        let mut resp = (status, axum::Json(json!({ "error": self.error, "detail": self.detail }))).into_response();
        if status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(TICKET_CHALLENGE));
        }
        if status == StatusCode::SERVICE_UNAVAILABLE {
            resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
        }
        resp
    }
}

/// Reads `Authorization: Ticket <ticket>` (the scheme is case-insensitive, RFC 9110 §11.1; the ticket is one
/// token68, RFC 9110 §11.2). Anything else is a `401` with the `Ticket` challenge.
pub(crate) fn parse_ticket_header(headers: &HeaderMap) -> Result<Ticket, Refusal> {
    let missing = || Refusal::new(401, "ticket_required", "send the document with Authorization: Ticket <ticket>");
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let value = values.next().ok_or_else(missing)?;
    if values.next().is_some() {
        return Err(Refusal::new(401, "invalid_ticket", "more than one Authorization header"));
    }
    let value = value.to_str().map_err(|_| missing())?.trim();
    let (scheme, rest) = value.split_once(' ').ok_or_else(missing)?;
    if !scheme.eq_ignore_ascii_case("ticket") {
        return Err(missing());
    }
    let ticket = rest.trim();
    let token68 = |c: char| c.is_ascii_alphanumeric() || "-._~+/=".contains(c);
    if ticket.is_empty() || ticket.len() > MAX_TICKET_LEN || !ticket.chars().all(token68) {
        return Err(Refusal::new(401, "invalid_ticket", "the ticket is not a token68 value"));
    }
    Ok(Ticket::new(ticket))
}

/// Serves the job endpoint until the printer shuts down.
pub(crate) async fn serve(core: Arc<Core>, listener: TcpListener) {
    let shutdown = core.shutdown.subscribe();
    let app = Router::new()
        .route(JOB_PATH, post(accept))
        .fallback(|| async { Refusal::new(404, "not_found", "the job endpoint is POST /roger/jobs") })
        .with_state(core.clone());
    // The server's own accept loop (TLS 1.2+ with AEAD suites when configured, plain HTTP otherwise), stopped by
    // the printer's shutdown signal.
    let acceptor = core.config.job_tls.clone().map(tokio_rustls::TlsAcceptor::from);
    crate::server::run::serve(listener, app, acceptor, shutdown).await;
}

/// `POST {job_url}`: see the module documentation.
async fn accept(State(core): State<Arc<Core>>, headers: HeaderMap, body: Body) -> Response {
    let ticket = match parse_ticket_header(&headers) {
        Ok(t) => t,
        Err(refusal) => {
            core.say(format!("hand-over refused ({}): {}", refusal.status, refusal.detail));
            return refusal.into_response();
        }
    };
    let fingerprint = sha256_hex(ticket.secret().as_bytes());
    if lock(&core.used_tickets).contains(&fingerprint) {
        let refusal = Refusal::new(401, "invalid_ticket", "the ticket was already used at this printer");
        core.say(format!("hand-over refused ({}): {}", refusal.status, refusal.detail));
        return refusal.into_response();
    }
    let redeemed = match core.redeem(&ticket).await {
        Ok(r) => r,
        Err(refusal) => {
            core.say(format!("hand-over refused ({}): {}", refusal.status, refusal.detail));
            return refusal.into_response();
        }
    };
    drop(ticket);
    {
        let mut used = lock(&core.used_tickets);
        if used.len() >= MAX_USED_TICKETS {
            // Tickets live 300 s (PROTOCOL.md §3 defaults): forgetting very old ones loses nothing.
            used.clear();
        }
        used.insert(fingerprint);
    }
    let bytes = match axum::body::to_bytes(body, MAX_DOCUMENT_BYTES).await {
        Ok(b) => b,
        Err(_) => {
            core.say(format!("hand-over of job {} refused: the document is too large or broke off", redeemed.job_id));
            return Refusal::new(413, "too_large", "the document is larger than this printer accepts").into_response();
        }
    };
    if bytes.is_empty() {
        return Refusal::new(400, "empty_document", "the request body is the document; it was empty").into_response();
    }
    let record =
        match core.printer.print(&redeemed.job_id, &redeemed.file_name, PrintSource::Desktop, redeemed.pages, &bytes) {
            Ok(r) => r,
            Err(e) => {
                core.say(format!("job {} could not be printed: {e}", redeemed.job_id));
                return (StatusCode::INTERNAL_SERVER_ERROR, axum::Json(json!({ "error": "print_failed" })))
                    .into_response();
            }
        };
    core.say(format!(
        "printed desktop job {} ({}, {} bytes, {} pages) handed over with a valid ticket",
        record.job_id, record.file_name, record.bytes, record.pages
    ));
    if core.snapshot(|s| s.release_token.is_some()) {
        if core.report_result(&record.job_id, JobOutcome::Printed, record.pages).await {
            core.say(format!("reported job {} printed", record.job_id));
        }
    } else {
        core.say(format!("job {} printed after the session ended; no user token to report it with", record.job_id));
    }
    let answer = json!({ "job_id": record.job_id, "bytes": record.bytes, "sha256": record.sha256 });
    core.note_handover(record);
    (StatusCode::CREATED, axum::Json(answer)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(header::AUTHORIZATION, HeaderValue::from_str(v).expect("header"));
        }
        h
    }

    /// PROTOCOL.md §9: `Authorization: Ticket <ticket>`, scheme case-insensitive (RFC 9110 §11.1).
    #[test]
    fn ticket_header_is_parsed() {
        for v in ["Ticket dGlja2V0LWZvci1qb2I", "ticket dGlja2V0LWZvci1qb2I", "TICKET   dGlja2V0LWZvci1qb2I "] {
            assert_eq!(parse_ticket_header(&headers(&[v])).expect(v).secret(), "dGlja2V0LWZvci1qb2I");
        }
    }

    /// No ticket, another scheme, an empty or malformed ticket, two headers: 401 with the Ticket challenge.
    #[test]
    fn bad_ticket_headers_are_unauthorized() {
        let cases: [&[&str]; 8] = [
            &[],
            &["Bearer abc"],
            &["Ticket"],
            &["Ticket "],
            &["Ticket a b"],
            &["Ticket <script>"],
            &["Basic dXNlcjpwYXNz"],
            &["Ticket abc", "Ticket def"],
        ];
        for case in cases {
            let e = parse_ticket_header(&headers(case)).expect_err("refused");
            assert_eq!(e.status, 401, "{case:?}");
            let resp = e.into_response();
            assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
            assert_eq!(resp.headers()[header::WWW_AUTHENTICATE], TICKET_CHALLENGE);
        }
        let long = format!("Ticket {}", "a".repeat(MAX_TICKET_LEN + 1));
        assert_eq!(parse_ticket_header(&headers(&[&long])).expect_err("too long").status, 401);
    }

    /// A refusal for another printer is 403 without the challenge; an unavailable server 503 with Retry-After.
    #[test]
    fn refusal_responses() {
        let resp = Refusal::new(403, "wrong_printer", "x").into_response();
        assert_eq!(resp.status(), StatusCode::FORBIDDEN);
        assert!(resp.headers().get(header::WWW_AUTHENTICATE).is_none());
        let resp = Refusal::new(503, "server_unavailable", "x").into_response();
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(resp.headers()[header::RETRY_AFTER], "5");
    }
}
