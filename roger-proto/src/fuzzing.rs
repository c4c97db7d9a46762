//! Fuzzing entry points (DESIGN.md "Fuzz"): one function per parser family and per state machine, each taking
//! the raw fuzzer input. The cargo-fuzz targets under `fuzz/fuzz_targets/` are three lines calling these.
//!
//! Every function checks the properties that must hold for *any* input, by panicking when one is broken:
//!
//! * parsing never panics (DESIGN.md: "Parsing never panics; every parser has a fuzz target");
//! * whatever parses re-serialises and re-parses to an equal value (JSON bodies, forms, lines);
//! * the rules of the state machines hold whatever the peer answers and whenever the driver calls (R-POLL-1: no two
//!   polls closer than the interval; RFC 8628 §3.5: the interval never decreases; nothing after the end).
//!
//! The module is `#[doc(hidden)]`: it is not part of the crate's API and may change with any release.

use std::fmt::Debug;
use std::time::{Duration, Instant};

use http::header::{HeaderValue, CONTENT_TYPE, DATE, RETRY_AFTER, WWW_AUTHENTICATE};
use http::{Response, StatusCode};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::device_authorization::{DeviceAuthorizationRequest, DeviceAuthorizationResponse};
use crate::discovery::{api_origin, Regions, TransportPolicy};
use crate::error::{OAuthErrorCode, OAuthErrorResponse, ResponseError};
use crate::metadata::AuthorizationServerMetadata;
use crate::poller::{DevicePoller, PollOutcome, PollResult, PollerConfig, PollerEvent};
use crate::secret::{AccessToken, UserCode};
use crate::token::{TokenRequest, TokenResponse};
use crate::wire::{encode_form, Form};

// ---------------------------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------------------------

/// Reads structured choices off the front of the fuzzer input; an exhausted input yields zeroes.
struct Bytes<'a>(&'a [u8]);

impl<'a> Bytes<'a> {
    fn u8(&mut self) -> u8 {
        match self.0.split_first() {
            Some((b, rest)) => {
                self.0 = rest;
                *b
            }
            None => 0,
        }
    }

    fn u16(&mut self) -> u16 {
        u16::from_be_bytes([self.u8(), self.u8()])
    }

    fn take(&mut self, n: usize) -> &'a [u8] {
        let (head, rest) = self.0.split_at(n.min(self.0.len()));
        self.0 = rest;
        head
    }

    fn rest(&mut self) -> &'a [u8] {
        self.take(self.0.len())
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// API origins the origin checks are run against (TLS default port, explicit port, loopback plain HTTP).
const APIS: [&str; 3] = ["https://eu.roger.example", "https://h.example:8443", "http://127.0.0.1:8080"];

const POLICIES: [TransportPolicy; 2] = [TransportPolicy::TlsOnly, TransportPolicy::AllowLoopbackPlain];

/// Whether a JSON value holds a float anywhere (serde_json's default float parsing is not exact, so values with
/// floats may legitimately differ in the last bit after a round trip).
fn has_float(v: &serde_json::Value) -> bool {
    match v {
        serde_json::Value::Number(n) => n.is_f64(),
        serde_json::Value::Array(a) => a.iter().any(has_float),
        serde_json::Value::Object(o) => o.values().any(has_float),
        _ => false,
    }
}

/// JSON round trip: `from_slice(to_vec(x)) == x`.
fn assert_json_round_trip<T: Serialize + DeserializeOwned + PartialEq + Debug>(value: &T) {
    let bytes = serde_json::to_vec(value).expect("a parsed value serialises");
    let back: T = serde_json::from_slice(&bytes).expect("a serialised value parses back");
    assert!(&back == value, "JSON round trip changed the value: {value:?} -> {back:?}");
}

/// Parses `data` as `T` and, if it parses, checks the JSON round trip.
fn json_round_trip<T: Serialize + DeserializeOwned + PartialEq + Debug>(data: &[u8]) -> Option<T> {
    let value: T = serde_json::from_slice(data).ok()?;
    assert_json_round_trip(&value);
    Some(value)
}

/// [`Form`] round trip: parse, re-encode the pairs, parse again, and get the same form.
fn check_form(body: &[u8]) {
    if let Ok(form) = Form::parse(body) {
        let encoded = encode_form(form.pairs().map(|(k, v)| (k, Some(v))));
        assert_eq!(Form::parse(&encoded).as_ref(), Ok(&form), "form round trip");
        for (k, _) in form.pairs() {
            if let Some(v) = form.get(k) {
                assert!(!v.is_empty(), "Form::get never returns an empty value (RFC 6749 §3.1)");
            }
        }
    }
}

/// A status from one byte: the statuses the classifiers care about, or any valid status.
fn status_from(byte: u8) -> StatusCode {
    const COMMON: [u16; 16] = [200, 201, 204, 400, 401, 403, 404, 408, 409, 418, 429, 500, 502, 503, 504, 302];
    let code = if byte < 128 { COMMON[usize::from(byte) % COMMON.len()] } else { 100 + u16::from(byte - 128) * 7 };
    StatusCode::from_u16(code).unwrap_or(StatusCode::OK)
}

/// A response with a status from one byte, canned headers chosen by the bits of another, and `body`.
fn canned_response(status: u8, headers: u8, body: &[u8]) -> Response<Vec<u8>> {
    response(status_from(status), headers, body)
}

/// A response with `status`, canned headers chosen by the bits of `headers`, and `body`.
fn response(status: StatusCode, headers: u8, body: &[u8]) -> Response<Vec<u8>> {
    let mut resp = Response::new(body.to_vec());
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    if headers & 0x01 != 0 {
        h.insert(CONTENT_TYPE, HeaderValue::from_static(crate::wire::JSON));
    }
    if headers & 0x02 != 0 {
        h.insert(CONTENT_TYPE, HeaderValue::from_static(crate::error::PROBLEM_JSON));
    }
    if headers & 0x04 != 0 {
        h.insert(CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    }
    if headers & 0x08 != 0 {
        h.insert(RETRY_AFTER, HeaderValue::from_static("7"));
    }
    if headers & 0x10 != 0 {
        h.insert(RETRY_AFTER, HeaderValue::from_static("Wed, 21 Oct 2015 07:28:30 GMT"));
        h.insert(DATE, HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"));
    }
    if headers & 0x20 != 0 {
        h.insert(WWW_AUTHENTICATE, HeaderValue::from_static(r#"Bearer realm="roger", error="invalid_token""#));
    }
    if headers & 0x40 != 0 {
        h.append(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer error=invalid_client"));
    }
    resp
}

/// What holds for every classifier error: it names the answer's status, its `Retry-After` is bounded (RFC 9110
/// §10.2.3 as parsed by [`crate::wire::retry_after`]: at most a day), and it displays.
fn check_response_error(e: &ResponseError, status: u16) {
    assert_eq!(e.status(), status, "the error names the answer's status");
    assert!(e.retry_after().is_none_or(|d| d <= Duration::from_secs(86_400)), "Retry-After is capped at a day");
    if status >= 500 || status == 429 || status == 408 {
        assert!(e.is_retryable(), "5xx, 429 and 408 are retryable: {e:?}");
    }
    if e.is_token_rejected() {
        assert_eq!(status, 401, "only a 401 asks for a fresh token");
    }
    let _ = e.to_string();
}

// ---------------------------------------------------------------------------------------------------------------
// Parser targets
// ---------------------------------------------------------------------------------------------------------------

/// `discovery`: the `GET /regions` answer (PROTOCOL.md §2) and [`Regions::select`] under both transport policies.
pub fn discovery(data: &[u8]) {
    let Some(regions) = json_round_trip::<Regions>(data) else { return };
    let ids = regions.regions.iter().map(|r| r.id.as_str()).chain(["eu", ""]);
    for id in ids {
        for policy in POLICIES {
            if let Ok(region) = regions.select(id, policy) {
                assert_eq!(region.id, id);
                // The selected API is a clean origin: selecting it again changes nothing.
                assert_eq!(api_origin(&region.api, policy).as_deref(), Ok(region.api.as_str()), "api is an origin");
                if policy == TransportPolicy::TlsOnly {
                    assert!(region.api.starts_with("https://"), "R-DISC-2: TLS only");
                }
            }
        }
    }
    for policy in POLICIES {
        let _ = regions.first(policy);
    }
}

/// `metadata`: RFC 8414 metadata JSON and [`AuthorizationServerMetadata::validate`] against its own issuer and
/// fixed origins.
pub fn metadata(data: &[u8]) {
    let Some(m) = json_round_trip::<AuthorizationServerMetadata>(data) else { return };
    let _ = m.supports_s256();
    for expected in std::iter::once(m.issuer.as_str()).chain(APIS) {
        for policy in POLICIES {
            let Ok((e, notes)) = m.validate_noted(expected, policy) else { continue };
            // R-META-1: the issuer is the configured origin; every endpoint passes R-DISC-2, and one off the
            // issuer's origin is noted (docs/protocol.md §7).
            assert!(!e.api.ends_with('/'), "the API origin has no trailing slash");
            for url in [&e.authorization, &e.token, &e.device_authorization, &e.revocation] {
                let parsed = url::Url::parse(url).expect("validated endpoints are URLs");
                assert!(crate::discovery::check_transport(url, policy).is_ok(), "endpoint {url} passes R-DISC-2");
                if parsed.origin().ascii_serialization() != e.api {
                    assert!(
                        notes.contains(crate::PeerViolation::EndpointOffOrigin),
                        "endpoint {url} off-origin, unnoted"
                    );
                }
            }
            assert_eq!(e.push, m.roger_push.as_deref() == Some("amqp"));
        }
    }
}

/// `device_authorization`: the RFC 8628 §3.2 answer through [`crate::device_authorization::classify`] (input:
/// a status byte, a header-choice byte, the body), and the §3.1 request form through
/// [`DeviceAuthorizationRequest::from_form`].
pub fn device_authorization(data: &[u8]) {
    let mut input = Bytes(data);
    let (status, headers) = (input.u8(), input.u8());
    let body = input.rest();
    let resp = canned_response(status, headers, body);
    match crate::device_authorization::classify(&resp) {
        Ok(r) => {
            assert!(resp.status().is_success(), "only a 2xx is a success");
            assert_displayable(&r.user_code.display());
            assert!(!r.device_code.is_empty() && !r.verification_uri.is_empty());
            assert_json_round_trip(&r);
            check_poller_start(&r);
        }
        Err(e) => check_response_error(&e, resp.status().as_u16()),
    }
    check_form(body);
    if let Ok(req) = DeviceAuthorizationRequest::from_form(body) {
        assert_eq!(DeviceAuthorizationRequest::from_form(&req.to_form()).as_ref(), Ok(&req), "form round trip");
    }
}

/// R-QR-1 and docs/protocol.md §7: a code a panel shows is Roger's `XXXX-XXXX`, or another server's code verbatim
/// that a person can read (non-empty, bounded, no control characters).
fn assert_displayable(shown: &str) {
    use crate::user_code::{normalize, MAX_FOREIGN_LENGTH};
    if normalize(shown).is_ok() {
        assert!(shown.len() == 9 && shown.as_bytes()[4] == b'-', "R-QR-1: a Roger code is shown as XXXX-XXXX");
    } else {
        assert!(!shown.is_empty() && shown.chars().count() <= MAX_FOREIGN_LENGTH, "a foreign code is shown bounded");
        assert!(!shown.chars().any(char::is_control), "no control characters on a panel");
        assert_eq!(shown, shown.trim(), "shown trimmed");
    }
}

/// Starting a poller from a classified answer must not panic, however large `expires_in` and `interval` are
/// (lifetimes and intervals are capped by [`crate::timing`], so no `Instant` arithmetic overflows).
fn check_poller_start(r: &DeviceAuthorizationResponse) {
    let now = Instant::now();
    let mut p = DevicePoller::new(now, r, "emb-fuzz", PollerConfig::default());
    assert!(p.interval() >= crate::timing::MIN_INTERVAL, "PROTOCOL.md §12 floor");
    assert!(p.expires_at() >= now);
    let _ = p.poll_timeout();
    let _ = p.poll_transmit(now);
    p.handle_doorbell(now);
    let _ = p.poll_transmit(now);
    p.handle_transport_error(now);
    let _ = p.poll_timeout();
}

/// `token`: the token endpoint answer through [`crate::token::classify`] and [`PollOutcome::from_result`] (input:
/// a status byte, a header-choice byte, the body), and the request form through [`TokenRequest::from_form`] with
/// the round trip `from_form(to_form(x)) == x`.
pub fn token(data: &[u8]) {
    let mut input = Bytes(data);
    let (status, headers) = (input.u8(), input.u8());
    let body = input.rest();
    let resp = canned_response(status, headers, body);
    let result = crate::token::classify(&resp);
    match &result {
        Ok(t) => {
            assert!(resp.status().is_success(), "only a 2xx is a success");
            assert!(t.is_bearer(), "RFC 6750: only Bearer tokens are accepted");
            assert_json_round_trip(t);
        }
        Err(e) => check_response_error(e, resp.status().as_u16()),
    }
    let outcome = PollOutcome::from_result(result);
    if let PollOutcome::DeviceTokenRejected = outcome {
        assert_eq!(resp.status().as_u16(), 401, "PROTOCOL.md §7: a refused device token is a 401");
    }
    check_form(body);
    if let Ok(req) = TokenRequest::from_form(body) {
        assert!(!req.client_id().is_empty());
        assert_eq!(TokenRequest::from_form(&req.to_form()).as_ref(), Ok(&req), "form round trip");
    }
    let _ = json_round_trip::<TokenResponse>(body);
}

/// `revocation`: the RFC 7009 §2.1 request form through [`crate::revocation::RevocationRequest::from_form`] (with
/// its round trip) and the §2.2 answer classifier.
pub fn revocation(data: &[u8]) {
    use crate::revocation::RevocationRequest;
    check_form(data);
    if let Ok(req) = RevocationRequest::from_form(data) {
        assert_eq!(RevocationRequest::from_form(&req.to_form()).as_ref(), Ok(&req), "form round trip");
    }
    for status in [200, 400, 401, 503] {
        let resp = Response::builder().status(status).body(data.to_vec()).expect("a valid status");
        match crate::revocation::classify(&resp) {
            Ok(()) => assert_eq!(status, 200, "RFC 7009 §2.2: any 2xx is success, nothing else"),
            Err(e) => check_response_error(&e, status),
        }
    }
}

/// `authorize`: the login form post ([`crate::authorize::LoginForm::from_form`], with its round trip) and the
/// redirect of RFC 6749 §4.1.2 ([`crate::authorize::parse_redirect`]). For the redirect the input is split at
/// line breaks into location, redirect URI and expected state.
pub fn authorize(data: &[u8]) {
    use crate::authorize::{parse_redirect, LoginForm, RedirectError, MOBILE_REDIRECT_URI};
    check_form(data);
    if let Ok(f) = LoginForm::from_form(data) {
        assert_eq!(LoginForm::from_form(&f.to_form()).as_ref(), Ok(&f), "form round trip");
    }

    let text = String::from_utf8_lossy(data);
    let mut lines = text.split('\n');
    let location = lines.next().unwrap_or_default();
    let redirect_uri = lines.next().unwrap_or(MOBILE_REDIRECT_URI);
    let state = lines.next().unwrap_or("st");
    let code = lines.next().unwrap_or("code");
    if let Ok(c) = parse_redirect(location, redirect_uri, state) {
        assert!(!c.is_empty(), "a code is never empty");
        let (target, query) = location.split_once('?').unwrap_or((location, ""));
        assert_eq!(target, redirect_uri, "RFC 6749 §4.1.2: only the registered redirect URI");
        let form = Form::parse(query.as_bytes()).expect("an accepted redirect has a readable query");
        assert_eq!(form.get("state"), Some(state), "RFC 6749 §10.12: the state matches");
        assert!(form.get("error").is_none(), "an error redirect is never a success");
    }

    // Constructive: a redirect built from the pieces is read back exactly (RFC 6749 §4.1.2, §4.1.2.1, §10.12).
    if !redirect_uri.contains('?') {
        let built = |pairs: &[(&str, &str)]| {
            let q = encode_form(pairs.iter().map(|(k, v)| (*k, Some(*v))));
            format!("{redirect_uri}?{}", String::from_utf8(q).expect("form encoding is ASCII"))
        };
        let ok = parse_redirect(&built(&[("code", code), ("state", state)]), redirect_uri, state);
        match (code.is_empty(), state.is_empty()) {
            (_, true) => assert_eq!(ok, Err(RedirectError::StateMismatch), "an empty state never matches"),
            (true, false) => assert_eq!(ok, Err(RedirectError::NoCode)),
            (false, false) => assert_eq!(ok.map(|c| c.secret().to_owned()), Ok(code.to_owned())),
        }
        if !state.is_empty() && !code.is_empty() {
            let denied = parse_redirect(&built(&[("error", code), ("state", state)]), redirect_uri, state);
            assert_eq!(denied, Err(RedirectError::Denied(OAuthErrorCode::parse(code))));
            let forged = format!("{state}x");
            let mismatch = parse_redirect(&built(&[("code", code), ("state", &forged)]), redirect_uri, state);
            assert_eq!(mismatch, Err(RedirectError::StateMismatch), "RFC 6749 §10.12");
        }
    }
}

/// `qr`: a scanned QR payload through [`crate::qr::parse`] against several API origins (R-QR-4), with the round
/// trip through [`crate::qr::verification_uri_complete`].
pub fn qr(data: &[u8]) {
    let payload = String::from_utf8_lossy(data);
    for api in APIS {
        let Ok(code) = crate::qr::parse(&payload, api) else { continue };
        assert!(crate::user_code::is_wire_form(code.secret()), "RFC 8628 §6.1: the code is normalised");
        let url = url::Url::parse(payload.trim()).expect("an accepted QR is a URL");
        let expected = url::Url::parse(api).expect("a fixed origin");
        assert_eq!(url.origin(), expected.origin(), "R-QR-4: the QR is on the region's origin");
        let rebuilt = crate::qr::verification_uri_complete(api, &code);
        assert_eq!(crate::qr::parse(&rebuilt, api).as_ref(), Ok(&code), "QR payload round trip");
    }
}

/// `user_code`: [`crate::user_code::normalize`]: a normalised code is in wire form, and display formatting
/// normalises back to it (RFC 8628 §6.1, R-QR-1).
pub fn user_code(data: &[u8]) {
    use crate::user_code::{classify_server_code, format_for_display, is_wire_form, normalize, ServerCodeForm};
    use crate::user_code::{UserCodeError, LENGTH};
    let input = String::from_utf8_lossy(data);
    // docs/protocol.md §7: what a server's code is taken for, and how it is shown.
    match classify_server_code(&input) {
        ServerCodeForm::Wire => assert!(is_wire_form(&input)),
        ServerCodeForm::RogerSpelling => assert!(normalize(&input).is_ok()),
        ServerCodeForm::Foreign => assert_displayable(&format_for_display(&input)),
        ServerCodeForm::Unusable => assert!(normalize(&input).is_err()),
    }
    match normalize(&input) {
        Ok(code) => {
            assert!(is_wire_form(&code), "normalize yields the wire form");
            let shown = format_for_display(&code);
            assert_eq!(shown.len(), LENGTH + 1);
            assert_eq!(normalize(&shown).as_ref(), Ok(&code), "display form normalises back");
            assert_eq!(normalize(&code.to_lowercase()).as_ref(), Ok(&code), "case-insensitive");
            assert_eq!(normalize(&code).as_ref(), Ok(&code), "idempotent");
        }
        Err(UserCodeError::WrongLength(n)) => assert_ne!(n, LENGTH),
        Err(_) => {}
    }
}

/// `classify`: [`crate::wire::classify_oauth`], [`crate::wire::classify_api`] and
/// [`crate::wire::classify_api_empty`] on arbitrary status, headers and body; `Retry-After`, `Date`,
/// `WWW-Authenticate` and `Content-Type` values are taken from the input.
///
/// Input: status (2 bytes), header flags, three length bytes, the three header values, then the body.
pub fn classify(data: &[u8]) {
    let mut input = Bytes(data);
    let status = StatusCode::from_u16(100 + input.u16() % 900).expect("100..=999 is a valid status");
    let flags = input.u8();
    let (ra_len, www_len, date_len) = (input.u8(), input.u8(), input.u8());
    let ra = input.take(usize::from(ra_len));
    let www = input.take(usize::from(www_len));
    let date = input.take(usize::from(date_len));
    let body = input.rest();

    let mut resp = Response::new(body.to_vec());
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_bytes(ra) {
        h.insert(RETRY_AFTER, v);
    }
    if let Ok(v) = HeaderValue::from_bytes(www) {
        h.insert(WWW_AUTHENTICATE, v);
    }
    if let Ok(v) = HeaderValue::from_bytes(date) {
        h.insert(DATE, v);
    }
    let content_type = match flags & 0x03 {
        0 => None,
        1 => Some(crate::wire::JSON),
        2 => Some(crate::error::PROBLEM_JSON),
        _ => Some("text/html"),
    };
    if let Some(ct) = content_type {
        h.insert(CONTENT_TYPE, HeaderValue::from_static(ct));
    }
    if flags & 0x04 != 0 {
        h.append(WWW_AUTHENTICATE, HeaderValue::from_static(r#"Bearer error="invalid_token""#));
    }

    let code = status.as_u16();
    assert!(crate::wire::retry_after(resp.headers()).is_none_or(|d| d <= Duration::from_secs(86_400)));
    if let Ok(s) = std::str::from_utf8(www) {
        for name in ["error", "realm", "scope", "error_description"] {
            let _ = crate::wire::auth_param(s, name);
        }
    }
    let _ = crate::wire::www_authenticate_error(resp.headers());

    for result in [crate::wire::classify_oauth::<serde_json::Value>(&resp), crate::wire::classify_api(&resp)] {
        match result {
            Ok(v) => {
                assert!(status.is_success(), "only a 2xx is a success");
                let is_error_body = v.get("error").is_some_and(serde_json::Value::is_string);
                assert!(!is_error_body || serde_json::from_value::<OAuthErrorResponse>(v).is_err());
            }
            Err(e) => check_response_error(&e, code),
        }
    }
    match crate::wire::classify_api_empty(&resp) {
        Ok(()) => assert!(status.is_success()),
        Err(e) => {
            assert!(!status.is_success(), "classify_api_empty accepts every 2xx");
            check_response_error(&e, code);
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// API, push and shim messages
// ---------------------------------------------------------------------------------------------------------------

/// `api`: the first byte picks one of the REST API bodies (PROTOCOL.md §9–10), the rest is parsed as it with
/// the JSON round trip; the rest is also used as a path segment ([`crate::api::encode_path_segment`]) and must
/// neither change the route nor make a request builder fail.
pub fn api(data: &[u8]) {
    use crate::api::*;
    let mut input = Bytes(data);
    let which = input.u8();
    let body = input.rest();
    match which % 22 {
        0 => drop(json_round_trip::<CodeLookup>(body)),
        1 => drop(json_round_trip::<CodeDecision>(body)),
        2 => drop(json_round_trip::<DeviceConfig>(body)),
        3 => drop(json_round_trip::<DeviceUpdate>(body)),
        4 => drop(json_round_trip::<PushCredentials>(body)),
        5 => drop(json_round_trip::<TicketRedeem>(body)),
        6 => drop(json_round_trip::<TicketRedemption>(body)),
        7 => drop(json_round_trip::<JobList>(body)),
        8 => drop(json_round_trip::<ReleaseRequest>(body)),
        9 => drop(json_round_trip::<ReleaseAnswer>(body)),
        10 => drop(json_round_trip::<JobResult>(body)),
        11 => drop(json_round_trip::<SubmitJob>(body)),
        12 => drop(json_round_trip::<DriveFileList>(body)),
        13 => drop(json_round_trip::<PrintFeatures>(body)),
        14 => drop(json_round_trip::<ScanProfileList>(body)),
        15 => drop(json_round_trip::<ScanCreate>(body)),
        16 => drop(json_round_trip::<ScanCreated>(body)),
        17 => drop(json_round_trip::<ScanComplete>(body)),
        18 => drop(json_round_trip::<SessionEnd>(body)),
        19 => drop(json_round_trip::<UserProfile>(body)),
        20 => drop(json_round_trip::<MeExport>(body)),
        _ => {
            // Through the classifier, as a client reads it.
            let resp = Response::builder().status(200).body(body.to_vec()).expect("200 is a valid status");
            if let Ok(list) = crate::wire::classify_api::<JobList>(&resp) {
                assert_json_round_trip(&list);
            }
        }
    }

    let segment = String::from_utf8_lossy(body);
    let encoded = encode_path_segment(&segment);
    assert!(
        encoded.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~%".contains(&b)),
        "only unreserved characters and escapes (RFC 3986 §3.3)"
    );
    assert!(encoded != "." && encoded != "..", "RFC 3986 §5.2.4: no dot segments");
    let decoded: Vec<u8> = percent_decode(encoded.as_bytes());
    assert_eq!(decoded, segment.as_bytes(), "percent-encoding is reversible");

    let token = AccessToken::new("fuzz-token");
    let api = "https://api.example:8443/";
    for req in [
        delete_job(api, &token, &segment),
        remove_device(api, &token, &segment),
        report_job_result(api, &token, &segment, &JobResult { state: JobOutcome::Printed, pages: 1 }),
        complete_scan(api, &token, &segment, &ScanComplete::default()),
        lookup_code(api, &token, &UserCode::new(segment.as_ref())),
        get_app_push(api, &token, &segment),
        list_drive_files(api, &token, &segment),
    ] {
        let req = req.expect("an encoded segment or query always makes a valid request");
        assert!(req.uri().path().starts_with("/api/v1/"), "the route stays under /api/v1");
        assert!(req.uri().query().is_none_or(|q| !q.contains('#')));
    }
    let _ = release_job(api, &token, &segment, &segment, &ReleaseRequest::default());
}

fn percent_decode(s: &[u8]) -> Vec<u8> {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'%' && i + 2 < s.len() {
            if let (Some(h), Some(l)) = (hex(s[i + 1]), hex(s[i + 2])) {
                out.push(h << 4 | l);
                i += 3;
                continue;
            }
        }
        out.push(s[i]);
        i += 1;
    }
    out
}

/// `push`: [`crate::push::PushEnvelope::parse`] and `parse_strict` (PROTOCOL.md §11, R-PUSH-1): what parses
/// re-serialises to an equal envelope, carries only valid ids, and yields a bounded routing key.
pub fn push(data: &[u8]) {
    use crate::push::{Id, PushEnvelope, PushTarget, EVENT_TYPES, MAX_ROUTING_KEY_LEN};
    let lenient = PushEnvelope::parse(data);
    let strict = PushEnvelope::parse_strict(data);
    if let Ok(s) = &strict {
        assert_eq!(lenient.as_ref(), Ok(s), "what the strict parser accepts, the lenient one reads the same");
    }
    if let Err(e) = &lenient {
        let _ = (e.to_string(), e.violation());
    }
    if let Err(e) = &strict {
        let _ = (e.to_string(), e.violation());
    }
    let Ok(env) = lenient else { return };
    let json = env.to_json();
    assert_eq!(PushEnvelope::parse(&json).as_ref(), Ok(&env), "envelope round trip");
    assert_eq!(PushEnvelope::parse_strict(&json).as_ref(), Ok(&env), "what we send passes the strict check");
    assert!(Id::is_valid(env.id.as_str()));
    let target_id = match &env.target {
        PushTarget::Device(id) | PushTarget::User(id) => id,
    };
    assert!(Id::is_valid(target_id.as_str()), "R-PUSH-1: ids only");
    if let crate::push::PushEvent::Unknown(name) = &env.event {
        assert!(!EVENT_TYPES.contains(&name.as_str()), "a known type never parses as Unknown");
    }
    if let Ok(key) = env.routing_key() {
        assert!(key.len() <= MAX_ROUTING_KEY_LEN, "AMQP shortstr");
        assert!(key.starts_with("device.") || key.starts_with("user."));
        assert!(key.ends_with(env.event_type()));
    }
}

/// `shim`: the conformance shim's line protocol (PROTOCOL.md §13): [`crate::shim::ShimRequest::parse_line`] and
/// [`crate::shim::ShimAnswer::parse_line`], with the line round trip and the typed answers.
pub fn shim(data: &[u8]) {
    use crate::shim::*;
    let line = String::from_utf8_lossy(data);
    if let Ok(req) = ShimRequest::parse_line(&line) {
        let out = req.to_line();
        assert!(!out.contains(['\n', '\r']), "one line");
        assert!(OPS.contains(&req.op()));
        assert_eq!(ShimRequest::parse_line(&out).as_ref(), Ok(&req), "request line round trip");
    }
    if let Ok(answer) = ShimAnswer::parse_line(&line) {
        let out = answer.to_line();
        assert!(!out.contains(['\n', '\r']), "one line");
        assert!(out.starts_with("{\"ok\":"), "ok comes first");
        let back = ShimAnswer::parse_line(&out).expect("our own line parses");
        assert_eq!(back.is_ok(), answer.is_ok());
        assert_eq!(back.error(), answer.error());
        if !answer.fields().values().any(has_float) {
            assert_eq!(back, answer, "answer line round trip");
        }
        let _ = answer.typed::<StartAnswer>();
        let _ = answer.typed::<RegisterAnswer>();
        let _ = answer.typed::<PinAnswer>();
        let _ = answer.typed::<JobsAnswer>();
        let _ = answer.typed::<ReleaseAnswer>();
        let _ = answer.typed::<ScanAnswer>();
        if let Ok(panel) = answer.fields_as::<PanelAnswer>() {
            assert_eq!(ShimAnswer::ok(&panel).typed::<PanelAnswer>().as_ref(), Ok(&panel), "typed round trip");
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// State machines
// ---------------------------------------------------------------------------------------------------------------

/// `poller`: drives a [`DevicePoller`] with a program read from the input and checks its invariants after every
/// step.
///
/// Input: interval byte (`0xff` = absent), `expires_in` (2 bytes, seconds), a config byte, then one operation per
/// byte (some take an argument byte): advance time, `poll_transmit`, deliver an answer (pending, slow_down with
/// and without `Retry-After`, transient, refused device token, denied, expired, invalid_grant, granted, another
/// error, or a real HTTP answer), transport error, doorbell, push health, fresh device token, timeout, cancel,
/// events, result.
///
/// Invariants: two consecutive polls are never closer than the interval in force at the earlier one (R-POLL-1);
/// the interval never decreases (RFC 8628 §3.5); at most one poll is in flight; no poll at or after expiry;
/// nothing is released before [`DevicePoller::poll_timeout`]; after the end nothing is sent, `poll_timeout` is
/// `None`, `Finished` is reported exactly once and the result can be taken exactly once.
pub fn poller(data: &[u8]) {
    let mut input = Bytes(data);
    let interval = match input.u8() {
        0xff => None,
        b => Some(u64::from(b % 40)),
    };
    let expires_in = u64::from(input.u16());
    let config_byte = input.u8();
    let config = PollerConfig {
        device_bound: config_byte & 1 != 0,
        push_relaxed_interval: Duration::from_secs(u64::from(config_byte >> 1)),
    };
    let auth = DeviceAuthorizationResponse {
        device_code: "GmRhmhcxhwAzkoEqiMEg_DnyEysNkuNhszIySk9eS".into(),
        user_code: "WDJBMJHT".into(),
        verification_uri: "https://eu.roger.example/device".into(),
        verification_uri_complete: None,
        expires_in,
        interval,
        request_id: None,
    };
    let t0 = Instant::now();
    let mut now = t0;
    let mut p = DevicePoller::new(now, &auth, "emb-fuzz", config);
    let expires_at = p.expires_at();
    assert_eq!(expires_at, t0 + Duration::from_secs(expires_in));
    assert_eq!(p.interval(), crate::timing::effective_interval(interval));

    let mut interval = p.interval();
    // (when, interval in force) of the last poll released.
    let mut last_poll: Option<(Instant, Duration)> = None;
    let mut finished_events = 0u32;
    let mut results_taken = 0u32;
    let token = AccessToken::new("fuzz-device-token");

    let transmit = |p: &mut DevicePoller, now: Instant, last_poll: &mut Option<(Instant, Duration)>| {
        let timeout_before = p.poll_timeout();
        let was_finished = p.is_finished();
        let was_in_flight = p.is_in_flight();
        let Some(t) = p.poll_transmit(now) else { return };
        assert!(!was_finished, "nothing is sent after the end");
        assert!(!was_in_flight, "at most one poll in flight");
        assert_eq!(t.at, now);
        assert!(now < expires_at, "RFC 8628 §3.5: no poll once the code has expired");
        assert!(timeout_before.is_some_and(|to| to <= now), "released no earlier than poll_timeout said");
        if let Some((prev, iv)) = *last_poll {
            assert!(now - prev >= iv, "R-POLL-1: polls {:?} apart, interval was {iv:?}", now - prev);
        }
        *last_poll = Some((now, p.interval()));
        assert!(p.is_in_flight());
        assert_eq!(p.poll_timeout(), None, "no timer while a poll is in flight");
        assert_eq!(p.last_poll(), Some(now));
        let req = p.request("https://eu.roger.example/oauth/token", Some(&token)).expect("a valid request");
        assert_eq!(
            req.headers().contains_key(http::header::AUTHORIZATION),
            config.device_bound,
            "PROTOCOL.md §7: device-bound polls only"
        );
        let form = TokenRequest::from_form(req.body()).expect("the poll is a valid token request");
        assert_eq!(form, p.token_request());
    };

    let mut ops = 0u32;
    while !input.is_empty() && ops < 4096 {
        ops += 1;
        match input.u8() % 20 {
            0 => now += Duration::from_millis(u64::from(input.u8()) * 100),
            1 => now += Duration::from_millis(u64::from(input.u16())),
            2 => {
                if let Some(to) = p.poll_timeout() {
                    now = now.max(to);
                }
            }
            3 => {
                // Just before the timer: nothing may be released yet.
                if let Some(to) = p.poll_timeout() {
                    let just_before = to.checked_sub(Duration::from_millis(1)).unwrap_or(to);
                    if just_before > now {
                        now = just_before;
                        let was_waiting = !p.is_finished() && !p.is_in_flight();
                        let released = p.poll_transmit(now);
                        assert!(released.is_none() || !was_waiting, "released {:?} before poll_timeout {to:?}", now);
                    }
                }
            }
            4 | 5 => transmit(&mut p, now, &mut last_poll),
            6 | 7 => {
                let outcome = outcome_from(input.u8());
                p.handle_outcome(now, outcome);
            }
            8 => {
                let resp = canned_poll_answer(input.u8());
                p.handle_response(now, &resp);
            }
            9 => p.handle_transport_error(now),
            10 => p.handle_doorbell(now),
            11 => p.set_push_healthy(true),
            12 => p.set_push_healthy(false),
            13 => p.handle_device_token(now),
            14 => p.handle_timeout(now),
            15 => {
                if input.u8() == 0xca {
                    p.cancel();
                    assert!(p.is_finished());
                }
            }
            16 | 17 => {
                while let Some(ev) = p.poll_event() {
                    if ev == PollerEvent::Finished {
                        assert!(p.is_finished(), "Finished is reported only at the end");
                        finished_events += 1;
                    }
                }
            }
            18 => {
                if let Some(r) = p.take_result() {
                    assert!(p.is_finished(), "a result only at the end");
                    if let PollResult::Granted(t) = &r {
                        assert!(t.is_bearer());
                    }
                    results_taken += 1;
                }
            }
            _ => {
                // Step to the next poll and release it.
                if let Some(to) = p.poll_timeout() {
                    now = now.max(to);
                }
                transmit(&mut p, now, &mut last_poll);
            }
        }
        assert!(p.interval() >= interval, "RFC 8628 §3.5: the interval never decreases");
        interval = p.interval();
        if let Some(to) = p.poll_timeout() {
            assert!(to <= expires_at, "the timer never sleeps past expiry");
            assert!(!p.is_finished() && !p.is_in_flight());
        }
        if p.is_finished() {
            assert_eq!(p.poll_timeout(), None, "no timer after the end");
            assert!(p.poll_transmit(now).is_none(), "nothing is sent after the end");
        }
    }

    while let Some(ev) = p.poll_event() {
        if ev == PollerEvent::Finished {
            finished_events += 1;
        }
    }
    if p.take_result().is_some() {
        results_taken += 1;
    }
    assert!(p.take_result().is_none(), "the result is taken once");
    if p.is_finished() {
        assert_eq!(finished_events, 1, "Finished is reported exactly once");
        assert_eq!(results_taken, 1, "the result is there exactly once");
    } else {
        assert_eq!(finished_events, 0);
        assert_eq!(results_taken, 0);
    }
}

fn outcome_from(byte: u8) -> PollOutcome {
    let retry_after = Some(Duration::from_secs(u64::from(byte >> 4) * 7));
    match byte % 11 {
        0 => PollOutcome::Pending,
        1 => PollOutcome::SlowDown { retry_after: None },
        2 => PollOutcome::SlowDown { retry_after },
        3 => PollOutcome::Transient { retry_after: None },
        4 => PollOutcome::Transient { retry_after },
        5 => PollOutcome::DeviceTokenRejected,
        6 => PollOutcome::Denied,
        7 => PollOutcome::Expired,
        8 => PollOutcome::InvalidGrant,
        9 => PollOutcome::Granted(Box::new(TokenResponse {
            access_token: "at".into(),
            token_type: "Bearer".into(),
            expires_in: Some(1200),
            refresh_token: None,
            scope: Some(crate::token::scope::RELEASE.into()),
            device_id: None,
            tenant_id: None,
            user: None,
        })),
        _ => PollOutcome::Failed(ResponseError::UnexpectedStatus { status: 418, www_authenticate_error: None }),
    }
}

fn canned_poll_answer(byte: u8) -> Response<Vec<u8>> {
    const BODIES: [(u16, &str); 8] = [
        (400, r#"{"error":"authorization_pending"}"#),
        (400, r#"{"error":"slow_down"}"#),
        (503, "<html>busy</html>"),
        (401, r#"{"error":"invalid_client"}"#),
        (400, r#"{"error":"access_denied"}"#),
        (400, r#"{"error":"expired_token"}"#),
        (200, r#"{"access_token":"at","token_type":"Bearer","expires_in":1200}"#),
        (429, r#"{"error":"slow_down"}"#),
    ];
    let (status, body) = BODIES[usize::from(byte) % BODIES.len()];
    response(StatusCode::from_u16(status).unwrap_or(StatusCode::OK), byte >> 3, body.as_bytes())
}

/// The device-authorization and device-grant answers both templates share (`kind` 0–8): the two shapes of a
/// device authorization, the RFC 8628 §3.5 errors, a 503 with HTML and a 429, with the interval and `Retry-After`
/// bounded by `max_interval` and `max_retry_after`, lifetimes by the caller's `small`.
fn device_grant_answer(
    kind: u8,
    arg: u16,
    serial: u32,
    small: u64,
    max_interval: u16,
    max_retry_after: u16,
) -> (u16, String, Option<u16>) {
    match kind {
        0 => (
            200,
            format!(
                r#"{{"device_code":"dc{serial}","user_code":"WDJBMJHT","verification_uri":"https://eu.roger.example/device","verification_uri_complete":"https://eu.roger.example/device?user_code=WDJBMJHT","expires_in":{small},"interval":{},"request_id":"r{serial}"}}"#,
                arg % max_interval
            ),
            None,
        ),
        1 => (
            200,
            format!(
                r#"{{"device_code":"dc{serial}","user_code":"BCDFGHJK","verification_uri":"https://eu.roger.example/device","expires_in":"{small}"}}"#
            ),
            None,
        ),
        2 => (400, r#"{"error":"authorization_pending"}"#.to_owned(), None),
        3 => (400, r#"{"error":"slow_down"}"#.to_owned(), None),
        4 => (503, "<html>maintenance</html>".to_owned(), Some(arg % max_retry_after)),
        5 => (429, r#"{"error":"slow_down"}"#.to_owned(), Some(arg % max_retry_after)),
        6 => (400, r#"{"error":"access_denied"}"#.to_owned(), None),
        7 => (400, r#"{"error":"expired_token"}"#.to_owned(), None),
        _ => (400, r#"{"error":"invalid_grant"}"#.to_owned(), None),
    }
}

/// A JSON answer with `status` and, if given, `Retry-After`.
fn json_answer(status: u16, body: String, retry_after: Option<u16>) -> Response<Vec<u8>> {
    let mut resp = Response::new(body.into_bytes());
    *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    resp.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(crate::wire::JSON));
    if let Some(ra) = retry_after {
        resp.headers_mut().insert(RETRY_AFTER, HeaderValue::from(ra));
    }
    resp
}

/// A token-endpoint or device-authorization answer from a template: `kind` picks the answer, `arg` its numbers
/// (bounded, so lifetimes stay realistic), `serial` makes codes and tokens unique.
fn templated_answer(kind: u8, arg: u16, serial: u32) -> Response<Vec<u8>> {
    let small = u64::from(arg % 4000);
    let (status, body, retry_after) = match kind % 16 {
        k @ 0..=8 => device_grant_answer(k, arg, serial, small, 12, 120),
        9 => (
            200,
            format!(
                r#"{{"access_token":"at{serial}","token_type":"Bearer","expires_in":{small},"refresh_token":"rt{serial}","scope":"roger.device","device_id":"dev{}","tenant_id":"acme"}}"#,
                arg % 3
            ),
            None,
        ),
        10 => (200, format!(r#"{{"access_token":"at{serial}","token_type":"bearer","expires_in":{small}}}"#), None),
        11 => (401, r#"{"error":"invalid_client"}"#.to_owned(), None),
        12 => (400, r#"{"error":"invalid_request"}"#.to_owned(), None),
        13 => (200, "<html>captive portal</html>".to_owned(), None),
        14 => (
            200,
            format!(
                r#"{{"access_token":"at{serial}","token_type":"Bearer","refresh_token":"rt{serial}","device_id":"dev1"}}"#
            ),
            None,
        ),
        _ => (500, r#"{"error":"server_error"}"#.to_owned(), None),
    };
    json_answer(status, body, retry_after)
}

/// The driver's side of the [`lifecycle`] target: what it sent and what it was told to persist.
struct LifecycleDriver {
    endpoints: crate::metadata::Endpoints,
    in_flight: Option<crate::lifecycle::LifecycleTransmit>,
    /// The device code of the registration being polled, and its interval.
    code: Option<(String, Duration)>,
    last_poll: Option<Instant>,
    /// Refresh tokens that have been rotated away (R-TOK-2).
    retired: Vec<String>,
    last_persist: Option<crate::lifecycle::PersistedConnection>,
}

impl LifecycleDriver {
    /// Step 1 of the driving order: send what is due, checking it.
    fn transmit(&mut self, c: &mut crate::lifecycle::Connection, now: Instant) {
        use crate::lifecycle::{ConnectionState, LifecycleTransmit};
        let state = c.state();
        let Some(t) = c.poll_transmit(now) else { return };
        assert!(self.in_flight.is_none(), "at most one request in flight: {t:?} after {:?}", self.in_flight);
        let req = t.to_http(&self.endpoints).expect("a valid request");
        assert!(req.headers().get(http::header::AUTHORIZATION).is_none(), "lifecycle requests are not device-bound");
        match &t {
            LifecycleTransmit::RegistrationCode(r) => {
                assert_eq!(state, ConnectionState::Registering);
                assert_eq!(r.scope, crate::token::scope::DEVICE, "PROTOCOL.md §5.1");
            }
            LifecycleTransmit::RegistrationPoll(TokenRequest::DeviceCode { device_code, .. }) => {
                assert_eq!(state, ConnectionState::Registering);
                let (dc, interval) = self.code.as_ref().expect("a poll only after a code was issued");
                assert_eq!(device_code.secret(), dc, "R-DEV-1: polls carry the issued code");
                if let Some(prev) = self.last_poll {
                    assert!(now - prev >= *interval, "R-POLL-1: polls {:?} apart, interval {interval:?}", now - prev);
                }
                self.last_poll = Some(now);
            }
            LifecycleTransmit::Refresh(TokenRequest::RefreshToken { refresh_token, .. }) => {
                assert_eq!(state, ConnectionState::Connected);
                assert_eq!(Some(refresh_token), c.refresh_token(), "R-TOK-2: the newest refresh token");
                assert!(!self.retired.iter().any(|r| r == refresh_token.secret()), "R-TOK-2: never reused");
            }
            other => panic!("unexpected transmit {other:?}"),
        }
        self.in_flight = Some(t);
    }

    /// Step 3: drain events, remembering what to persist.
    fn drain(&mut self, c: &mut crate::lifecycle::Connection, now: Instant) {
        use crate::lifecycle::{LifecycleEvent, PersistedConnection};
        while let Some(ev) = c.poll_event() {
            match ev {
                LifecycleEvent::Persist(p) => {
                    if let (
                        Some(PersistedConnection::Connected { refresh_token: old, .. }),
                        PersistedConnection::Connected { refresh_token: new, .. },
                    ) = (&self.last_persist, &p)
                    {
                        if old != new {
                            self.retired.push(old.secret().to_owned());
                        }
                    }
                    self.last_persist = Some(p);
                }
                LifecycleEvent::ShowRegistration { user_code_display, expires_at, .. } => {
                    assert_displayable(&user_code_display);
                    assert!(expires_at >= now);
                }
                _ => {}
            }
        }
    }
}

/// `lifecycle`: drives the MFP [`crate::lifecycle::Connection`] (PROTOCOL.md §5–7) with a program read from the
/// input, in the driving order of its documentation, and checks its invariants after every step.
///
/// Input: a config byte, then one input per byte (some take arguments): advance time, an answer from a template
/// (registration code, pending, slow_down, 5xx/429 with `Retry-After`, denied, expired, `invalid_grant`, grants
/// with and without refresh token or device id, `invalid_client`, garbage), transport error, start registration,
/// refused device token, `device.disconnected` push, doorbell, push health, timeout, restart from the persisted
/// state. After every input the driver sends what is due and drains the events.
///
/// Invariants: at most one request in flight; requests match the state (codes and polls only while registering,
/// refreshes only while connected); registration polls of one code are never closer than its interval
/// (R-POLL-1) and carry that code; a refresh always uses the newest refresh token and a rotated one is never sent
/// again (R-TOK-2); the persisted value the driver last saw is the current one; a registering or connected printer
/// always has a timer or a request in flight (it never stalls); the persisted state survives a JSON round trip
/// and a restart.
pub fn lifecycle(data: &[u8]) {
    use crate::lifecycle::{Connection, ConnectionState, LifecycleConfig, LifecycleTransmit, PersistedConnection};

    let mut input = Bytes(data);
    let config_byte = input.u8();
    let mut config = LifecycleConfig::new("emb-fuzz", "MX-1", "SN 1");
    config.refresh_fraction = f64::from(config_byte & 0x0f) / 10.0;
    config.push_relaxed_interval = Duration::from_secs(u64::from(config_byte >> 4) * 3);

    let mut now = Instant::now();
    let mut c = Connection::new(config.clone());
    let mut d = LifecycleDriver {
        endpoints: crate::metadata::Endpoints::conventional("https://eu.roger.example"),
        in_flight: None,
        code: None,
        last_poll: None,
        retired: Vec::new(),
        last_persist: None,
    };
    let mut serial = 0u32;

    let mut ops = 0u32;
    while !input.is_empty() && ops < 4096 {
        ops += 1;
        match input.u8() % 16 {
            0 => now += Duration::from_millis(u64::from(input.u8()) * 100),
            1 => now += Duration::from_secs(u64::from(input.u16() % 4000)),
            2 => {
                // Step 4: sleep until the timer, then handle it.
                if let Some(to) = c.poll_timeout() {
                    now = now.max(to);
                }
                c.handle_timeout(now);
            }
            3..=6 => {
                let (kind, arg) = (input.u8(), input.u16());
                serial += 1;
                let resp = templated_answer(kind, arg, serial);
                if let Some(LifecycleTransmit::RegistrationCode(_)) = d.in_flight {
                    if let Ok(auth) = crate::device_authorization::classify(&resp) {
                        let interval = crate::timing::effective_interval(auth.interval);
                        d.code = Some((auth.device_code.secret().to_owned(), interval));
                        d.last_poll = None;
                    }
                }
                c.handle_response(now, &resp);
                d.in_flight = None;
            }
            7 => {
                c.handle_transport_error(now);
                d.in_flight = None;
            }
            8 => {
                if matches!(c.state(), ConnectionState::Unregistered | ConnectionState::Disconnected) {
                    d.in_flight = None;
                }
                c.start_registration(now);
            }
            9 => c.request_fresh_device_token(now),
            10 => c.handle_disconnected_push(now),
            11 => c.handle_doorbell(now),
            12 => c.set_push_healthy(input.u8() & 1 == 1),
            13 => c.handle_timeout(now),
            14 => {
                // Power cycle: restart from what the driver persisted.
                if let Some(p) = d.last_persist.clone() {
                    let json = serde_json::to_vec(&p).expect("persisted state serialises");
                    let back: PersistedConnection = serde_json::from_slice(&json).expect("and parses back");
                    assert_eq!(back, p, "persisted state round trip");
                    c = Connection::restore(config.clone(), back, now);
                    d.in_flight = None;
                    assert_eq!(c.persisted().as_ref(), Some(&p), "a restart restores what was persisted");
                }
            }
            _ => {
                if let Some(t) = c.device_token(now) {
                    assert!(!t.is_empty());
                    assert_eq!(c.state(), ConnectionState::Connected);
                }
            }
        }

        // Steps 1 and 3 of the driving order after every input.
        d.transmit(&mut c, now);
        d.drain(&mut c, now);

        let state = c.state();
        if let Some(PersistedConnection::Connected { refresh_token, .. }) = c.persisted() {
            assert!(!d.retired.iter().any(|r| r == refresh_token.secret()), "R-TOK-2: a rotated token is dead");
        }
        if matches!(state, ConnectionState::Connected | ConnectionState::Disconnected) {
            assert_eq!(c.persisted(), d.last_persist, "the driver has been told to persist the current state");
        }
        if d.in_flight.is_none() && matches!(state, ConnectionState::Registering | ConnectionState::Connected) {
            assert!(c.poll_timeout().is_some(), "a {state:?} printer with nothing in flight has a timer (no stall)");
        }
        if matches!(state, ConnectionState::Unregistered | ConnectionState::Disconnected) {
            assert!(c.poll_timeout().is_none() && c.poll_transmit(now).is_none(), "nothing to do while {state:?}");
        }
    }
}

/// Marks every credential the [`panel`] target hands the session, so `Debug` output can be searched for leaks.
const SECRET_MARK: &str = "SECRET";

/// A panel answer from a template: `kind` picks the answer, `arg` its numbers, `serial` makes codes and tokens
/// unique. Tokens carry [`SECRET_MARK`].
fn panel_answer(kind: u8, arg: u16, serial: u32) -> Response<Vec<u8>> {
    let small = u64::from(arg % 700);
    let user = r#""user":{"id":"u1","username":"alice","display_name":"Alice"}"#;
    let (status, body, retry_after) = match kind % 18 {
        k @ 0..=8 => device_grant_answer(k, arg, serial, small, 7, 90),
        9 => (
            200,
            format!(
                r#"{{"access_token":"{SECRET_MARK}-at{serial}","token_type":"Bearer","expires_in":{small},"scope":"roger.release",{user}}}"#
            ),
            None,
        ),
        10 => (
            200,
            format!(
                r#"{{"access_token":"{SECRET_MARK}-at{serial}","token_type":"Bearer","expires_in":{small},"scope":"roger.release roger.print roger.scan",{user}}}"#
            ),
            None,
        ),
        11 => (
            200,
            format!(
                r#"{{"access_token":"{SECRET_MARK}-at{serial}","token_type":"Bearer","expires_in":{small},"scope":"roger.print roger.scan"}}"#
            ),
            None,
        ),
        12 => (401, r#"{"error":"invalid_client"}"#.to_owned(), None),
        13 => (200, String::new(), None),
        14 => (400, r#"{"error":"invalid_request"}"#.to_owned(), None),
        15 => (200, "<html>captive portal</html>".to_owned(), None),
        16 => (200, format!(r#"{{"access_token":"{SECRET_MARK}-at{serial}","token_type":"Bearer"}}"#), None),
        _ => (500, r#"{"error":"server_error"}"#.to_owned(), None),
    };
    let mut resp = json_answer(status, body, retry_after);
    if status == 401 {
        resp.headers_mut()
            .insert(WWW_AUTHENTICATE, HeaderValue::from_static(r#"Bearer realm="roger", error="invalid_token""#));
    }
    resp
}

/// A session code the [`panel`] target issued: device code, interval, request id.
struct IssuedCode {
    device_code: String,
    interval: Duration,
    request_id: Option<String>,
    last_poll: Option<Instant>,
}

/// The driver's side of the [`panel`] target.
struct PanelDriver {
    config: crate::panel::PanelConfig,
    endpoints: crate::metadata::Endpoints,
    outstanding: Vec<crate::panel::PanelTransmit>,
    /// Ids whose answer was delivered (answers to them again must be ignored).
    answered: Vec<crate::panel::PanelRequestId>,
    codes: Vec<IssuedCode>,
    last_code_request: Option<Instant>,
    /// The PIN being checked: when it was entered, how often its request was sent, the PIN itself.
    pin: Option<(Instant, u32, String)>,
    awaiting_device_token: bool,
}

impl PanelDriver {
    /// Step 2 of the driving order: send everything that is due, checking each request.
    fn transmit_all(&mut self, p: &mut crate::panel::PanelSession, now: Instant) {
        use crate::panel::{PanelState, PanelTransmit, MAX_DEVICE_TOKEN_RETRIES, MIN_CODE_REQUEST_GAP};
        let device_token = AccessToken::new("fuzz-device-token");
        for _ in 0..64 {
            let Some(t) = p.poll_transmit(now) else { return };
            // After the call: `poll_transmit` handles due timers first (a session may have just expired).
            let state = p.state();
            let qr_request_id = p.current_qr().map(|q| q.request_id.clone());
            // R-QR-3: a code replaced by a newer QR is still polled until it expires or is answered.
            let outgoing_request_ids: Vec<_> = p.outgoing_qrs().map(|q| q.request_id.clone()).collect();
            assert!(!self.outstanding.iter().any(|o| o.id() == t.id()), "request ids are unique");
            assert!(!self.answered.contains(&t.id()), "request ids are never reused");
            let req = t.to_http(&self.endpoints, Some(&device_token)).expect("a valid request");
            assert!(req.headers().contains_key(http::header::AUTHORIZATION), "PROTOCOL.md §7: device-bound");
            match &t {
                PanelTransmit::SessionCode { request, .. } => {
                    assert_eq!(state, PanelState::Idle, "session codes only while idle");
                    assert_eq!(request.scope, crate::token::scope::RELEASE);
                    assert!(
                        !self.outstanding.iter().any(|o| matches!(o, PanelTransmit::SessionCode { .. })),
                        "one session-code request at a time"
                    );
                    if let Some(prev) = self.last_code_request {
                        assert!(now - prev >= MIN_CODE_REQUEST_GAP, "code requests {:?} apart", now - prev);
                    }
                    self.last_code_request = Some(now);
                }
                PanelTransmit::Poll { request: TokenRequest::DeviceCode { device_code, .. }, .. } => {
                    assert_eq!(state, PanelState::Idle, "no polls during a session");
                    let code = self
                        .codes
                        .iter_mut()
                        .find(|c| c.device_code == device_code.secret())
                        .expect("polls carry an issued device code");
                    assert!(
                        qr_request_id.as_ref() == Some(&code.request_id)
                            || outgoing_request_ids.contains(&code.request_id),
                        "only the shown code and the codes it replaced (R-QR-3) are polled"
                    );
                    if let Some(prev) = code.last_poll {
                        assert!(now - prev >= code.interval, "R-POLL-1: {:?} < {:?}", now - prev, code.interval);
                    }
                    code.last_poll = Some(now);
                    let same = |o: &PanelTransmit| matches!(o, PanelTransmit::Poll { request: TokenRequest::DeviceCode { device_code: d, .. }, .. } if d == device_code);
                    assert!(!self.outstanding.iter().any(same), "one poll of a code at a time");
                }
                PanelTransmit::Password { request: TokenRequest::Password { password, .. }, .. } => {
                    assert!(self.config.allow_password_grant, "RFC 9700 §2.4: only when enabled");
                    assert!(password.secret().contains(SECRET_MARK));
                    // An abandoned entry's request may still be out (an orphan); each entry has its own PIN here.
                    let same = |o: &PanelTransmit| matches!(o, PanelTransmit::Password { request: TokenRequest::Password { password: q, .. }, .. } if q == password);
                    assert!(!self.outstanding.iter().any(same), "one request per PIN entry at a time");
                    let (_, sends, pin) = self.pin.as_mut().expect("a password request only after a PIN entry");
                    assert_eq!(password.secret(), pin, "R-PWD-1: only the PIN being checked is sent");
                    *sends += 1;
                    let most = 1 + self.config.max_password_retries + MAX_DEVICE_TOKEN_RETRIES;
                    assert!(*sends <= most, "R-PWD-1: the PIN is re-sent at most {most} times, not {sends}");
                }
                PanelTransmit::Revoke { request, .. } => {
                    assert!(request.token.secret().starts_with(SECRET_MARK), "only tokens we were given are revoked");
                }
                other => panic!("unexpected transmit {other:?}"),
            }
            self.outstanding.push(t);
        }
        panic!("poll_transmit keeps releasing requests at one instant");
    }

    /// Step 3: drain the events.
    fn drain(&mut self, p: &mut crate::panel::PanelSession) {
        use crate::panel::{PanelEvent, PanelTransmit};
        while let Some(ev) = p.poll_event() {
            assert!(!format!("{ev:?}").contains(SECRET_MARK), "R-SEC-1: events do not print credentials");
            match ev {
                PanelEvent::NeedDeviceToken => self.awaiting_device_token = true,
                PanelEvent::ShowQr(qr) => {
                    assert_displayable(&qr.user_code_display);
                }
                PanelEvent::SessionStarted { .. } => {
                    // Leaving idle drops the session-code request: its id is stale from now on.
                    let (stale, live): (Vec<_>, Vec<_>) = std::mem::take(&mut self.outstanding)
                        .into_iter()
                        .partition(|o| matches!(o, PanelTransmit::SessionCode { .. }));
                    self.outstanding = live;
                    for t in stale {
                        self.retire(t.id());
                    }
                }
                _ => {}
            }
        }
        if !p.holds_password() {
            self.pin = None;
        }
    }

    fn take(&mut self, index: u8) -> Option<crate::panel::PanelTransmit> {
        if self.outstanding.is_empty() {
            return None;
        }
        let t = self.outstanding.remove(usize::from(index) % self.outstanding.len());
        self.retire(t.id());
        Some(t)
    }

    /// Remembers an id whose request is over (answered, or dropped by the panel).
    fn retire(&mut self, id: crate::panel::PanelRequestId) {
        self.answered.push(id);
        if self.answered.len() > 16 {
            self.answered.remove(0);
        }
    }
}

/// `panel`: drives the MFP [`crate::panel::PanelSession`] (PROTOCOL.md §8) with a program read from the input,
/// in the polling order of its documentation, and checks its invariants after every step.
///
/// Input: a config byte, then one input per byte (some take arguments): advance time, sleep until the timer,
/// answer one of the outstanding requests from a template (session codes, poll answers, step-1, PIN-login and
/// step-2 grants, `invalid_client`, revocation answers, garbage), a transport error, a stale answer, a PIN entry,
/// logout, push `session.ended`, a refused user token, a fresh device token, a doorbell, push health, a timeout.
/// After every input the driver sends everything due and drains the events.
///
/// Invariants: requests match the state (codes and polls only while idle, only the shown code is polled, never
/// closer than its interval, R-POLL-1; one code request, one poll and one password request at a time; code
/// requests at least [`crate::panel::MIN_CODE_REQUEST_GAP`] apart); the password grant only when enabled and a PIN
/// re-sent only a bounded number of times, and held no longer than [`crate::panel::MAX_PASSWORD_HOLD`] while
/// nothing is in flight (R-PWD-1); answers to stale ids change nothing; an idle panel with nothing outstanding
/// always has a timer unless it waits for a device token (it never stalls); the display state agrees with the
/// tokens held; `Debug` never shows a credential (R-SEC-1).
pub fn panel(data: &[u8]) {
    use crate::panel::{PanelConfig, PanelSession, PanelState, PanelTransmit, MAX_PASSWORD_HOLD};

    let mut input = Bytes(data);
    let config_byte = input.u8();
    let config = PanelConfig {
        allow_password_grant: config_byte & 1 != 0,
        push_relaxed_interval: Duration::from_secs(u64::from((config_byte >> 1) & 7) * 5),
        max_password_retries: u32::from((config_byte >> 4) & 3),
    };
    let endpoints = crate::metadata::Endpoints::conventional("https://eu.roger.example");
    let mut now = Instant::now();
    let mut p = PanelSession::new(config, "emb-fuzz", endpoints.clone());
    let mut d = PanelDriver {
        config,
        endpoints,
        outstanding: Vec::new(),
        answered: Vec::new(),
        codes: Vec::new(),
        last_code_request: None,
        pin: None,
        awaiting_device_token: false,
    };
    let mut serial = 0u32;
    d.transmit_all(&mut p, now);
    d.drain(&mut p);

    let mut ops = 0u32;
    while !input.is_empty() && ops < 2048 {
        ops += 1;
        match input.u8() % 20 {
            0 => now += Duration::from_millis(u64::from(input.u8()) * 100),
            1 => now += Duration::from_secs(u64::from(input.u16() % 1000)),
            2 => {
                // Step 4: sleep until the timer, then handle it.
                if let Some(to) = p.poll_timeout() {
                    now = now.max(to);
                }
                p.handle_timeout(now);
            }
            3..=6 => {
                let (index, kind, arg) = (input.u8(), input.u8(), input.u16());
                serial += 1;
                let resp = panel_answer(kind, arg, serial);
                if let Some(t) = d.take(index) {
                    if let PanelTransmit::SessionCode { .. } = t {
                        if let Ok(auth) = crate::device_authorization::classify(&resp) {
                            d.codes.push(IssuedCode {
                                device_code: auth.device_code.secret().to_owned(),
                                interval: crate::timing::effective_interval(auth.interval),
                                request_id: auth.request_id.clone(),
                                last_poll: None,
                            });
                        }
                    }
                    p.handle_response(now, t.id(), &resp);
                }
            }
            7 => {
                if let Some(t) = d.take(input.u8()) {
                    p.handle_transport_error(now, t.id());
                }
            }
            8 => {
                // An answer to a request that was already answered must change nothing.
                let (index, kind, arg) = (input.u8(), input.u8(), input.u16());
                if !d.answered.is_empty() {
                    let id = d.answered[usize::from(index) % d.answered.len()];
                    let before = (p.state(), p.outstanding_requests(), p.holds_password(), p.poll_timeout());
                    let qr_before = p.current_qr().cloned();
                    serial += 1;
                    p.handle_response(now, id, &panel_answer(kind, arg, serial));
                    let after = (p.state(), p.outstanding_requests(), p.holds_password(), p.poll_timeout());
                    assert_eq!(before, after, "a stale answer is ignored");
                    assert!(p.current_qr() == qr_before.as_ref(), "a stale answer does not change the QR");
                    assert_eq!(p.poll_event(), None, "a stale answer makes no event");
                    p.handle_transport_error(now, id);
                    assert_eq!(p.poll_event(), None, "a stale transport error makes no event");
                }
            }
            9 => {
                let username = match input.u8() % 5 {
                    0 => None,
                    1 => Some("alice"),
                    2 => Some("ALICE"),
                    3 => Some("bob"),
                    _ => Some("  "),
                };
                let had = p.holds_password();
                serial += 1;
                let pin = format!("PIN-{SECRET_MARK}-{serial}");
                match p.enter_pin(now, username, crate::secret::Password::new(pin.as_str())) {
                    Ok(()) => {
                        assert!(!had, "one PIN entry at a time");
                        assert!(config.allow_password_grant, "RFC 9700 §2.4: refused unless enabled");
                        assert!(p.holds_password());
                        d.pin = Some((now, 0, pin));
                    }
                    Err(_) => assert_eq!(p.holds_password(), had, "a refused entry holds nothing new"),
                }
            }
            10 => p.logout(now),
            11 => p.handle_session_ended(now),
            12 => p.handle_user_token_rejected(now),
            13 => {
                d.awaiting_device_token = false;
                p.handle_device_token(now);
            }
            14 => {
                let rid = match p.current_qr().and_then(|q| q.request_id.clone()) {
                    Some(r) if input.u8() & 1 == 0 => r,
                    _ => "r-unknown".to_owned(),
                };
                p.handle_doorbell(now, &rid);
            }
            15 => p.set_push_healthy(input.u8() & 1 == 1),
            16 => p.handle_timeout(now),
            _ => {}
        }

        // Steps 2 and 3 of the polling order after every input (events are drained first as well, so the driver
        // sees a session start before the requests it made stale are replaced).
        d.drain(&mut p);
        d.transmit_all(&mut p, now);
        d.drain(&mut p);

        let state = p.state();
        assert!(!format!("{p:?}").contains(SECRET_MARK), "R-SEC-1: Debug shows no credential");
        match state {
            PanelState::Idle => {
                assert!(p.user().is_none() && p.user_token().is_none() && p.release_token().is_none());
            }
            PanelState::Step1 | PanelState::Step2 => {
                assert!(p.user().is_some() && p.user_token().is_some() && p.release_token().is_some());
                assert!(p.current_qr().is_none(), "no QR during a session");
            }
        }
        if state == PanelState::Step1 {
            assert!(!p.scopes().iter().any(|s| s == crate::token::scope::PRINT), "step 1 does not print from drive");
        }
        if p.holds_password() {
            assert!(config.allow_password_grant);
            let current = |o: &PanelTransmit| matches!((o, &d.pin), (PanelTransmit::Password { request: TokenRequest::Password { password, .. }, .. }, Some((_, _, pin))) if password.secret() == pin);
            let in_flight = d.outstanding.iter().any(current);
            if let (false, Some((entered, _, _))) = (in_flight, &d.pin) {
                assert!(now < *entered + MAX_PASSWORD_HOLD, "R-PWD-1: a PIN is not held past its deadline");
            }
        }
        assert!(p.outstanding_requests() <= d.outstanding.len(), "the panel waits only for what was sent");
        if d.outstanding.is_empty() && !d.awaiting_device_token {
            let busy = state == PanelState::Idle || p.holds_password();
            assert!(!busy || p.poll_timeout().is_some(), "a {state:?} panel with nothing outstanding has a timer");
        }
    }
}

#[cfg(test)]
mod tests {
    /// A fuzz entry point.
    type Target = fn(&[u8]);

    /// Every target passes on its committed seed corpus (`fuzz/corpus/<target>`), so `cargo test` checks the
    /// fuzz properties on realistic inputs without cargo-fuzz.
    #[test]
    fn seed_corpus_passes() {
        let targets: [(&str, Target); 15] = [
            ("discovery", super::discovery),
            ("metadata", super::metadata),
            ("device_authorization", super::device_authorization),
            ("token", super::token),
            ("revocation", super::revocation),
            ("authorize", super::authorize),
            ("qr", super::qr),
            ("user_code", super::user_code),
            ("classify", super::classify),
            ("api", super::api),
            ("push", super::push),
            ("shim", super::shim),
            ("poller", super::poller),
            ("lifecycle", super::lifecycle),
            ("panel", super::panel),
        ];
        let corpus = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus");
        for (name, target) in targets {
            let dir = corpus.join(name);
            let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
            let mut seeds = 0;
            for entry in entries {
                let path = entry.expect("a directory entry").path();
                let data = std::fs::read(&path).expect("a readable seed");
                target(&data);
                seeds += 1;
            }
            assert!(seeds >= 3, "{name}: at least three seeds, found {seeds}");
        }
        // Edge inputs.
        for (_, target) in targets {
            target(b"");
            target(&[0xff; 64]);
        }
    }
}
