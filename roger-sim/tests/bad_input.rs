//! Scenario: bad input never causes a 5xx (PROTOCOL.md §10; docs/protocol.md §1.4, §3.1, §3.5, §3.7, §3.8). A
//! table of malformed requests, sent byte for byte over a raw TCP connection (so path junk such as `..` reaches the
//! server unnormalised), each answered with a 4xx in the right shape: OAuth endpoints with RFC 6749 §5.2 JSON
//! `{"error":…}`, API endpoints with RFC 9457 `application/problem+json` whose `type` starts `urn:roger:problem:`,
//! `401` with the RFC 6750 §3 challenge, `405` with `Allow` (RFC 9110 §15.5.6). Oversized headers may also just
//! close the connection. `/sim/` answers loopback callers.

mod common;

use std::time::Duration;

use common::TestServer;
use roger_proto::secret::AccessToken;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// What came back on the wire.
#[derive(Debug)]
enum Wire {
    /// A parsed HTTP answer.
    Answer { status: u16, headers: Vec<(String, String)>, body: Vec<u8> },
    /// The server closed (or reset) the connection without an answer.
    Closed,
}

impl Wire {
    fn header(&self, name: &str) -> Option<&str> {
        match self {
            Wire::Answer { headers, .. } => {
                headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
            }
            Wire::Closed => None,
        }
    }
}

/// What a case expects.
#[derive(Debug, Clone)]
enum Expect {
    /// An OAuth error (RFC 6749 §5.2): this status and `error` code, JSON body.
    OAuth(u16, &'static str),
    /// An API problem (RFC 9457): this status and problem name.
    Problem(u16, &'static str),
    /// An HTML error page of the login form with this status (RFC 6749 §4.1.2.1: no redirect).
    Html(u16),
    /// Any 4xx, or a closed connection (limits enforced by the HTTP layer).
    FourXxOrClosed,
    /// A success (the control API from loopback).
    Ok(u16),
}

struct Case {
    name: String,
    request: Vec<u8>,
    expect: Expect,
}

fn request(method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut r = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n").into_bytes();
    for (k, v) in headers {
        r.extend_from_slice(format!("{k}: {v}\r\n").as_bytes());
    }
    if !body.is_empty() || matches!(method, "POST" | "PUT") {
        r.extend_from_slice(format!("Content-Length: {}\r\n", body.len()).as_bytes());
    }
    r.extend_from_slice(b"\r\n");
    r.extend_from_slice(body);
    r
}

const FORM: (&str, &str) = ("Content-Type", "application/x-www-form-urlencoded");
const JSON: (&str, &str) = ("Content-Type", "application/json");

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(pos) = b.windows(2).position(|w| w == b"\r\n") {
        let size = std::str::from_utf8(&b[..pos]).ok().and_then(|s| usize::from_str_radix(s.trim(), 16).ok());
        let Some(size) = size.filter(|s| *s > 0) else { break };
        let start = pos + 2;
        out.extend_from_slice(&b[start..(start + size).min(b.len())]);
        b = &b[(start + size + 2).min(b.len())..];
    }
    out
}

/// Sends raw bytes, reads until the server closes, parses the answer.
async fn exchange(addr: &str, bytes: &[u8]) -> Wire {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    // A server may answer (e.g. 431) and close while the request is still being written: keep what it sent.
    let _ = stream.write_all(bytes).await;
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "the server neither answered nor closed within 10 s");
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else { return Wire::Closed };
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines.next().and_then(|l| l.split(' ').nth(1)).and_then(|s| s.parse().ok()).expect("status line");
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let raw = &buf[end + 4..];
    let chunked = headers.iter().any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"));
    let body = if chunked { dechunk(raw) } else { raw.to_vec() };
    Wire::Answer { status, headers, body }
}

/// Checks one case; every failure message starts with the case's name.
fn check(case: &Case, wire: &Wire) {
    let name = &case.name;
    let (status, body) = match wire {
        Wire::Answer { status, body, .. } => (*status, body),
        Wire::Closed => {
            assert!(matches!(case.expect, Expect::FourXxOrClosed), "[{name}] the connection closed without an answer");
            return;
        }
    };
    let text = String::from_utf8_lossy(body);
    assert!(status < 500, "[{name}] a 5xx for bad input: {status} {text}");
    let ctype = wire.header("content-type").unwrap_or("").to_owned();
    let json: serde_json::Value = serde_json::from_slice(body).unwrap_or(serde_json::Value::Null);
    match &case.expect {
        Expect::OAuth(want, code) => {
            assert_eq!(status, *want, "[{name}] status: {text}");
            assert!(ctype.starts_with("application/json"), "[{name}] RFC 6749 §5.2 JSON, got {ctype:?}: {text}");
            assert_eq!(json["error"].as_str(), Some(*code), "[{name}] error code: {text}");
            assert_eq!(wire.header("cache-control"), Some("no-store"), "[{name}] no-store on OAuth answers");
            if *want == 401 {
                let w = wire.header("www-authenticate").unwrap_or_default();
                assert!(w.starts_with("Bearer"), "[{name}] 401 carries WWW-Authenticate: {w:?}");
            }
        }
        Expect::Problem(want, problem) => {
            assert_eq!(status, *want, "[{name}] status: {text}");
            assert_eq!(ctype, "application/problem+json", "[{name}] RFC 9457 content type: {text}");
            let ty = json["type"].as_str().unwrap_or_default();
            assert!(ty.starts_with("urn:roger:problem:"), "[{name}] problem type {ty:?}");
            assert_eq!(ty.trim_start_matches("urn:roger:problem:"), *problem, "[{name}] problem name: {text}");
            assert_eq!(json["status"].as_u64(), Some(u64::from(status)), "[{name}] problem status member: {text}");
            assert!(json["title"].is_string(), "[{name}] problem title: {text}");
            match status {
                401 => {
                    let w = wire.header("www-authenticate").unwrap_or_default();
                    assert!(w.starts_with("Bearer realm=\"roger\""), "[{name}] 401 challenge: {w:?}");
                    if *problem == "invalid-token" {
                        assert!(w.contains("error=\"invalid_token\""), "[{name}] invalid_token challenge: {w:?}");
                    } else {
                        assert_eq!(w, "Bearer realm=\"roger\"", "[{name}] no-credentials challenge");
                    }
                }
                403 if *problem == "insufficient-scope" => {
                    let w = wire.header("www-authenticate").unwrap_or_default();
                    assert!(w.contains("error=\"insufficient_scope\""), "[{name}] 403 challenge: {w:?}");
                }
                405 => assert!(wire.header("allow").is_some(), "[{name}] RFC 9110 §15.5.6: 405 carries Allow"),
                _ => {}
            }
        }
        Expect::Html(want) => {
            assert_eq!(status, *want, "[{name}] status: {text}");
            assert!(ctype.starts_with("text/html"), "[{name}] an HTML page, got {ctype:?}");
            assert!(wire.header("location").is_none(), "[{name}] no redirect");
        }
        Expect::FourXxOrClosed => assert!((400..500).contains(&status), "[{name}] a 4xx: {status} {text}"),
        Expect::Ok(want) => assert_eq!(status, *want, "[{name}] status: {text}"),
    }
}

fn bearer(t: &AccessToken) -> String {
    format!("Bearer {}", t.secret())
}

#[tokio::test]
async fn malformed_requests_get_a_4xx_in_the_right_shape() {
    let s = TestServer::start().await;
    let addr = s.api.trim_start_matches("http://").to_owned();
    let reg = s.register_printer().await;
    let device = bearer(&reg.access_token);
    let app = bearer(&s.app_login("alice", "alice-pass").await.access_token);
    let step1 = bearer(&s.qr_session(&reg.access_token, "alice", "alice-pass").await.access_token);
    let jobs = s.raw("GET", "/api/v1/jobs", &[("authorization", &step1)], Vec::new()).await.json();
    let job = jobs["jobs"][0]["id"].as_str().expect("the fixture job").to_owned();

    let mut cases: Vec<Case> = Vec::new();
    let mut add =
        |name: &str, request: Vec<u8>, expect: Expect| cases.push(Case { name: name.into(), request, expect });
    use Expect::*;

    // --- OAuth endpoints: RFC 6749 §5.2 JSON errors.
    let refresh = b"grant_type=refresh_token&refresh_token=x&client_id=emb-acme";
    add(
        "token: JSON instead of a form",
        request("POST", "/oauth/token", &[JSON], br#"{"grant_type":"refresh_token"}"#),
        OAuth(400, "invalid_request"),
    );
    add(
        "token: text/plain",
        request("POST", "/oauth/token", &[("Content-Type", "text/plain")], refresh),
        OAuth(400, "invalid_request"),
    );
    add("token: no content type", request("POST", "/oauth/token", &[], refresh), OAuth(400, "invalid_request"));
    add(
        "token: multipart",
        request("POST", "/oauth/token", &[("Content-Type", "multipart/form-data; boundary=x")], refresh),
        OAuth(400, "invalid_request"),
    );
    add(
        "token: duplicate grant_type",
        request(
            "POST",
            "/oauth/token",
            &[FORM],
            b"grant_type=refresh_token&grant_type=password&refresh_token=x&client_id=emb-acme",
        ),
        OAuth(400, "invalid_request"),
    );
    add(
        "token: duplicate client_id",
        request(
            "POST",
            "/oauth/token",
            &[FORM],
            b"grant_type=refresh_token&refresh_token=x&client_id=emb-acme&client_id=emb-acme",
        ),
        OAuth(400, "invalid_request"),
    );
    add(
        "token: invalid UTF-8 bytes",
        request("POST", "/oauth/token", &[FORM], b"grant_type=refresh_token&refresh_token=\xff\xfe&client_id=emb-acme"),
        OAuth(400, "invalid_request"),
    );
    add(
        "token: percent-encoded invalid UTF-8",
        request("POST", "/oauth/token", &[FORM], b"grant_type=refresh_token&refresh_token=%ff%fe&client_id=emb-acme"),
        OAuth(400, "invalid_request"),
    );
    add(
        "token: charset parameter is fine, missing refresh_token is not",
        request(
            "POST",
            "/oauth/token",
            &[("Content-Type", "application/x-www-form-urlencoded; charset=UTF-8")],
            b"grant_type=refresh_token&client_id=emb-acme",
        ),
        OAuth(400, "invalid_request"),
    );
    add("token: empty body", request("POST", "/oauth/token", &[FORM], b""), OAuth(400, "invalid_request"));
    add(
        "token: no grant_type",
        request("POST", "/oauth/token", &[FORM], b"client_id=emb-acme"),
        OAuth(400, "invalid_request"),
    );
    add(
        "token: no client_id",
        request("POST", "/oauth/token", &[FORM], b"grant_type=refresh_token&refresh_token=x"),
        OAuth(400, "invalid_request"),
    );
    add(
        "token: empty client_id counts as absent",
        request("POST", "/oauth/token", &[FORM], b"grant_type=refresh_token&refresh_token=x&client_id="),
        OAuth(400, "invalid_request"),
    );
    add(
        "token: device_code grant without device_code",
        request(
            "POST",
            "/oauth/token",
            &[FORM],
            b"grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Adevice_code&client_id=emb-acme",
        ),
        OAuth(400, "invalid_request"),
    );
    add(
        "token: password grant without password",
        request(
            "POST",
            "/oauth/token",
            &[FORM, ("Authorization", &device)],
            b"grant_type=password&username=alice&scope=roger.release&client_id=emb-acme",
        ),
        OAuth(400, "invalid_request"),
    );
    add(
        "token: implicit is no grant",
        request("POST", "/oauth/token", &[FORM], b"grant_type=implicit&client_id=emb-acme"),
        OAuth(400, "unsupported_grant_type"),
    );
    add(
        "token: client_credentials",
        request("POST", "/oauth/token", &[FORM], b"grant_type=client_credentials&client_id=emb-acme"),
        OAuth(400, "unsupported_grant_type"),
    );
    add(
        "token: junk grant_type",
        request("POST", "/oauth/token", &[FORM], b"grant_type=%00%0D%0Ajunk&client_id=emb-acme"),
        OAuth(400, "unsupported_grant_type"),
    );
    add(
        "token: unknown client",
        request("POST", "/oauth/token", &[FORM], b"grant_type=refresh_token&refresh_token=x&client_id=evil"),
        OAuth(400, "invalid_client"),
    );
    add(
        "token: malformed emb client id",
        request("POST", "/oauth/token", &[FORM], b"grant_type=refresh_token&refresh_token=x&client_id=emb-"),
        OAuth(400, "invalid_client"),
    );
    add("token: unknown refresh token", request("POST", "/oauth/token", &[FORM], refresh), OAuth(400, "invalid_grant"));
    add("token: garbage bearer on the password grant", request("POST", "/oauth/token", &[FORM, ("Authorization", "Bearer garbage")], b"grant_type=password&username=alice&password=1234&scope=roger.release+roger.print+roger.scan&client_id=emb-acme"), OAuth(401, "invalid_client"));
    add(
        "token: password grant by the phone",
        request(
            "POST",
            "/oauth/token",
            &[FORM],
            b"grant_type=password&username=alice&password=alice-pass&scope=roger.app&client_id=roger-mobile",
        ),
        OAuth(400, "unauthorized_client"),
    );
    add(
        "token: 70 KiB body",
        request(
            "POST",
            "/oauth/token",
            &[FORM],
            format!("grant_type=refresh_token&client_id=emb-acme&refresh_token={}", "a".repeat(70 * 1024)).as_bytes(),
        ),
        OAuth(400, "invalid_request"),
    );
    add(
        "device_authorization: unknown client",
        request(
            "POST",
            "/oauth/device_authorization",
            &[FORM],
            b"client_id=evil&scope=roger.device&device_model=m&device_serial=s",
        ),
        OAuth(400, "invalid_client"),
    );
    add(
        "device_authorization: no scope",
        request("POST", "/oauth/device_authorization", &[FORM], b"client_id=emb-acme&device_model=m&device_serial=s"),
        OAuth(400, "invalid_request"),
    );
    add(
        "device_authorization: duplicate scope",
        request(
            "POST",
            "/oauth/device_authorization",
            &[FORM],
            b"client_id=emb-acme&scope=roger.device&scope=roger.device&device_model=m&device_serial=s",
        ),
        OAuth(400, "invalid_request"),
    );
    add(
        "device_authorization: registration without device_serial",
        request(
            "POST",
            "/oauth/device_authorization",
            &[FORM],
            b"client_id=emb-acme&scope=roger.device&device_model=m",
        ),
        OAuth(400, "invalid_request"),
    );
    add(
        "device_authorization: registration without device_model",
        request(
            "POST",
            "/oauth/device_authorization",
            &[FORM],
            b"client_id=emb-acme&scope=roger.device&device_serial=s",
        ),
        OAuth(400, "invalid_request"),
    );
    add(
        "device_authorization: 65-character device_model",
        request(
            "POST",
            "/oauth/device_authorization",
            &[FORM],
            format!("client_id=emb-acme&scope=roger.device&device_serial=s&device_model={}", "m".repeat(65)).as_bytes(),
        ),
        OAuth(400, "invalid_request"),
    );
    add(
        "device_authorization: unknown scope",
        request(
            "POST",
            "/oauth/device_authorization",
            &[FORM],
            b"client_id=emb-acme&scope=roger.everything&device_model=m&device_serial=s",
        ),
        OAuth(400, "invalid_scope"),
    );
    add(
        "device_authorization: JSON body",
        request("POST", "/oauth/device_authorization", &[JSON], br#"{"client_id":"emb-acme"}"#),
        OAuth(400, "invalid_request"),
    );
    add(
        "device_authorization: session code without device token",
        request("POST", "/oauth/device_authorization", &[FORM], b"client_id=emb-acme&scope=roger.release"),
        OAuth(401, "invalid_client"),
    );
    add(
        "revoke: no token",
        request("POST", "/oauth/revoke", &[FORM], b"client_id=emb-acme"),
        OAuth(400, "invalid_request"),
    );
    add(
        "revoke: unknown client",
        request("POST", "/oauth/revoke", &[FORM], b"token=x&client_id=evil"),
        OAuth(400, "invalid_client"),
    );
    add(
        "revoke: JSON body",
        request("POST", "/oauth/revoke", &[JSON], br#"{"token":"x"}"#),
        OAuth(400, "invalid_request"),
    );
    add(
        "revoke: duplicate token",
        request("POST", "/oauth/revoke", &[FORM], b"token=a&token=b&client_id=emb-acme"),
        OAuth(400, "invalid_request"),
    );
    add(
        "revoke: garbage device bearer",
        request("POST", "/oauth/revoke", &[FORM, ("Authorization", "Bearer garbage")], b"token=x&client_id=emb-acme"),
        OAuth(401, "invalid_client"),
    );

    // --- The login form: HTML error pages, never a redirect to an unchecked URI.
    add("authorize: no parameters", request("GET", "/oauth/authorize", &[], b""), Html(400));
    add("authorize: foreign redirect_uri", request("GET", "/oauth/authorize?response_type=code&client_id=roger-mobile&redirect_uri=https%3A%2F%2Fevil.example%2F&code_challenge=E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM&code_challenge_method=S256&state=abc&scope=roger.app", &[], b""), Html(400));
    add("authorize: invalid UTF-8 query", request("GET", "/oauth/authorize?client_id=%ff%fe", &[], b""), Html(400));
    add("authorize: POST of JSON", request("POST", "/oauth/authorize", &[JSON], b"{}"), Html(400));
    add("authorize: POST without CSRF token", request("POST", "/oauth/authorize", &[FORM], b"response_type=code&client_id=roger-mobile&redirect_uri=roger%3A%2F%2Fcallback&code_challenge=E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM&code_challenge_method=S256&state=abc&scope=roger.app&tenant=acme&username=alice&password=alice-pass"), Html(400));

    // --- API endpoints: RFC 9457 problems.
    let big = format!(r#"{{"job_url":"https://printer.example/{}"}}"#, "a".repeat(70 * 1024));
    add(
        "api: broken JSON",
        request("PUT", "/api/v1/device", &[JSON, ("Authorization", &device)], br#"{"job_url": "#),
        Problem(400, "invalid-request"),
    );
    add(
        "api: JSON of the wrong shape",
        request("PUT", "/api/v1/device", &[JSON, ("Authorization", &device)], br#"{"job_url": 42}"#),
        Problem(400, "invalid-request"),
    );
    add(
        "api: JSON array",
        request("POST", "/api/v1/jobs", &[JSON, ("Authorization", &app)], b"[]"),
        Problem(400, "invalid-request"),
    );
    add(
        "api: JSON null",
        request("POST", "/api/v1/jobs", &[JSON, ("Authorization", &app)], b"null"),
        Problem(400, "invalid-request"),
    );
    add(
        "api: deeply nested JSON",
        request("POST", "/api/v1/jobs", &[JSON, ("Authorization", &app)], "[".repeat(20_000).as_bytes()),
        Problem(400, "invalid-request"),
    );
    add(
        "api: negative page count",
        request(
            "POST",
            "/api/v1/jobs",
            &[JSON, ("Authorization", &app)],
            br#"{"desktop":{"file_name":"a.pdf","pages":-1}}"#,
        ),
        Problem(400, "invalid-request"),
    );
    add(
        "api: page count as a string",
        request(
            "POST",
            "/api/v1/jobs",
            &[JSON, ("Authorization", &app)],
            br#"{"desktop":{"file_name":"a.pdf","pages":"two"}}"#,
        ),
        Problem(400, "invalid-request"),
    );
    add(
        "api: page count beyond u32",
        request(
            "POST",
            "/api/v1/jobs",
            &[JSON, ("Authorization", &app)],
            br#"{"desktop":{"file_name":"a.pdf","pages":99999999999999999999}}"#,
        ),
        Problem(400, "invalid-request"),
    );
    add(
        "api: file name with control characters",
        request(
            "POST",
            "/api/v1/jobs",
            &[JSON, ("Authorization", &app)],
            br#"{"desktop":{"file_name":"a\u0000\r\n.pdf","pages":1}}"#,
        ),
        Problem(400, "invalid-request"),
    );
    add(
        "api: invalid UTF-8 in JSON",
        request(
            "POST",
            "/api/v1/jobs",
            &[JSON, ("Authorization", &app)],
            b"{\"desktop\":{\"file_name\":\"\xff\xfe\",\"pages\":1}}",
        ),
        Problem(400, "invalid-request"),
    );
    add(
        "api: wrong content type",
        request(
            "PUT",
            "/api/v1/device",
            &[("Content-Type", "text/plain"), ("Authorization", &device)],
            br#"{"job_url":null}"#,
        ),
        Problem(415, "unsupported-media-type"),
    );
    add(
        "api: form instead of JSON",
        request("POST", "/api/v1/codes/approve", &[FORM, ("Authorization", &app)], b"user_code=BCDFGHJK"),
        Problem(415, "unsupported-media-type"),
    );
    add(
        "api: no content type",
        request("POST", "/api/v1/jobs", &[("Authorization", &app)], br#"{"desktop":{"file_name":"a.pdf","pages":1}}"#),
        Problem(415, "unsupported-media-type"),
    );
    add(
        "api: 70 KiB body",
        request("PUT", "/api/v1/device", &[JSON, ("Authorization", &device)], big.as_bytes()),
        Problem(413, "payload-too-large"),
    );
    add(
        "api: 70 KiB body on jobs",
        request("POST", "/api/v1/jobs", &[JSON, ("Authorization", &app)], big.as_bytes()),
        Problem(413, "payload-too-large"),
    );
    add(
        "api: 70 KiB approval",
        request("POST", "/api/v1/codes/approve", &[JSON, ("Authorization", &app)], big.as_bytes()),
        Problem(413, "payload-too-large"),
    );
    add(
        "api: dot segments",
        request("GET", "/api/v1/../../etc/passwd", &[("Authorization", &app)], b""),
        Problem(404, "not-found"),
    );
    add(
        "api: encoded dot segments",
        request("GET", "/api/v1/%2e%2e/%2e%2e/etc/passwd", &[("Authorization", &app)], b""),
        Problem(404, "not-found"),
    );
    add(
        "api: unknown route",
        request("GET", "/api/v2/jobs", &[("Authorization", &app)], b""),
        Problem(404, "not-found"),
    );
    add(
        "api: invalid UTF-8 job id",
        request("DELETE", "/api/v1/jobs/%ff%fe", &[("Authorization", &app)], b""),
        Problem(400, "invalid-request"),
    );
    add(
        "api: invalid UTF-8 job id on release",
        request(
            "POST",
            "/api/v1/jobs/%ff%fe/release",
            &[JSON, ("Authorization", &step1), ("Idempotency-Key", "k1")],
            b"{}",
        ),
        Problem(400, "invalid-request"),
    );
    add(
        "api: NUL in a job id",
        request("DELETE", "/api/v1/jobs/%00", &[("Authorization", &app)], b""),
        Problem(404, "not-found"),
    );
    add(
        "api: 5000-character job id",
        request("DELETE", &format!("/api/v1/jobs/{}", "j".repeat(5000)), &[("Authorization", &app)], b""),
        Problem(404, "not-found"),
    );
    add(
        "api: 5000-character user code",
        request("GET", &format!("/api/v1/codes/{}", "B".repeat(5000)), &[("Authorization", &app)], b""),
        Problem(404, "not-found"),
    );
    add(
        "api: invalid UTF-8 user code",
        request("GET", "/api/v1/codes/%ff", &[("Authorization", &app)], b""),
        Problem(400, "invalid-request"),
    );
    add(
        "api: unknown job state",
        request("GET", "/api/v1/jobs?state=bogus", &[("Authorization", &app)], b""),
        Problem(400, "invalid-request"),
    );
    add(
        "api: junk query",
        request("GET", "/api/v1/jobs?state=%ff", &[("Authorization", &app)], b""),
        Problem(400, "invalid-request"),
    );
    add(
        "api: drive files with an app token",
        request("GET", "/api/v1/drive/files?folder=..%2FScan", &[("Authorization", &app)], b""),
        Problem(403, "insufficient-scope"),
    );
    add(
        "api: release without Idempotency-Key",
        request("POST", &format!("/api/v1/jobs/{job}/release"), &[JSON, ("Authorization", &step1)], b"{}"),
        Problem(400, "idempotency-key-required"),
    );
    add(
        "api: 300-character Idempotency-Key",
        request(
            "POST",
            &format!("/api/v1/jobs/{job}/release"),
            &[JSON, ("Authorization", &step1), ("Idempotency-Key", &"k".repeat(300))],
            b"{}",
        ),
        Problem(400, "invalid-request"),
    );
    add(
        "api: Idempotency-Key with a space",
        request(
            "POST",
            &format!("/api/v1/jobs/{job}/release"),
            &[JSON, ("Authorization", &step1), ("Idempotency-Key", "a b")],
            b"{}",
        ),
        Problem(400, "invalid-request"),
    );
    let mut obs_text = request(
        "POST",
        &format!("/api/v1/jobs/{job}/release"),
        &[JSON, ("Authorization", &step1), ("Idempotency-Key", "k-OBS")],
        b"{}",
    );
    let at = obs_text.windows(5).position(|w| w == b"k-OBS").unwrap();
    obs_text.splice(at..at + 5, b"k-\xff\xfe".iter().copied());
    add("api: Idempotency-Key with non-ASCII bytes", obs_text, Problem(400, "invalid-request"));
    add(
        "api: wrong method on a collection",
        request("PUT", "/api/v1/jobs", &[("Authorization", &app)], b""),
        Problem(405, "method-not-allowed"),
    );
    add(
        "api: wrong method on the token endpoint",
        request("GET", "/oauth/token", &[], b""),
        Problem(405, "method-not-allowed"),
    );
    add(
        "api: wrong method on metadata",
        request("POST", "/.well-known/oauth-authorization-server", &[FORM], b""),
        Problem(405, "method-not-allowed"),
    );
    add("api: no credentials", request("GET", "/api/v1/jobs", &[], b""), Problem(401, "unauthorized"));
    add(
        "api: no credentials on a POST with junk",
        request("POST", "/api/v1/codes/approve", &[JSON], b"{junk"),
        Problem(401, "unauthorized"),
    );
    add(
        "api: garbage bearer",
        request("GET", "/api/v1/jobs", &[("Authorization", "Bearer garbage")], b""),
        Problem(401, "invalid-token"),
    );
    add(
        "api: empty bearer",
        request("GET", "/api/v1/jobs", &[("Authorization", "Bearer ")], b""),
        Problem(401, "invalid-token"),
    );
    add(
        "api: Basic instead of Bearer",
        request("GET", "/api/v1/jobs", &[("Authorization", "Basic YWxpY2U6YWxpY2UtcGFzcw==")], b""),
        Problem(401, "invalid-token"),
    );
    add(
        "api: bearer with a space inside",
        request("GET", "/api/v1/jobs", &[("Authorization", "Bearer abc def")], b""),
        Problem(401, "invalid-token"),
    );
    add(
        "api: 10 KiB bearer",
        request("GET", "/api/v1/jobs", &[("Authorization", &format!("Bearer {}", "x".repeat(10 * 1024)))], b""),
        Problem(401, "invalid-token"),
    );
    add(
        "api: wrong scope",
        request("GET", "/api/v1/me/export", &[("Authorization", &device)], b""),
        Problem(403, "insufficient-scope"),
    );

    // --- The HTTP layer.
    add(
        "http: 200 KiB header",
        request("GET", "/api/v1/jobs", &[("X-Junk", &"h".repeat(200 * 1024))], b""),
        FourXxOrClosed,
    );
    let many: Vec<(String, String)> = (0..500).map(|i| (format!("X-H{i}"), "v".into())).collect();
    let many: Vec<(&str, &str)> = many.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    add("http: 500 header fields", request("GET", "/api/v1/jobs", &many, b""), FourXxOrClosed);
    add("http: garbage request line", b"GARBAGE\r\n\r\n".to_vec(), FourXxOrClosed);
    add(
        "http: invalid Content-Length",
        b"POST /oauth/token HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\nConnection: close\r\n\r\n".to_vec(),
        FourXxOrClosed,
    );
    add("http: broken chunked body", b"POST /api/v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\nzz\r\n{}\r\n0\r\n\r\n".to_vec(), FourXxOrClosed);
    add(
        "http: 5000-character path",
        request("GET", &format!("/api/v1/codes/{}", "%".repeat(5000)), &[("Authorization", &app)], b""),
        FourXxOrClosed,
    );

    // --- The control API answers loopback callers; bad control input is a 4xx too.
    add("sim: clock from loopback", request("GET", "/sim/clock", &[], b""), Ok(200));
    add("sim: log from loopback", request("GET", "/sim/log?since=0", &[], b""), Ok(200));
    add(
        "sim: advance backwards",
        request("POST", "/sim/clock/advance", &[JSON], br#"{"seconds":-5}"#),
        Problem(400, "invalid-request"),
    );
    add(
        "sim: advance by NaN-ish junk",
        request("POST", "/sim/clock/advance", &[JSON], br#"{"seconds":"soon"}"#),
        Problem(400, "invalid-request"),
    );
    add(
        "sim: unknown setting",
        request("PUT", "/sim/settings", &[JSON], br#"{"no_such_setting":1}"#),
        Problem(400, "invalid-request"),
    );
    add(
        "sim: setting of the wrong type",
        request("PUT", "/sim/settings", &[JSON], br#"{"access_token_secs":"long"}"#),
        Problem(400, "invalid-request"),
    );

    // Every case runs; the failures are reported together, each with its case name.
    let total = cases.len();
    let mut failures = Vec::new();
    for case in &cases {
        let wire = exchange(&addr, &case.request).await;
        if let Err(e) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| check(case, &wire))) {
            let msg = e.downcast_ref::<String>().cloned().or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()));
            failures.push(msg.unwrap_or_else(|| format!("[{}] failed", case.name)));
        }
    }
    assert!(failures.is_empty(), "{} of {total} cases failed:\n{}", failures.len(), failures.join("\n"));
    // The server is still healthy after all of it.
    let a = s.raw("GET", "/.well-known/oauth-authorization-server", &[], Vec::new()).await;
    assert_eq!(a.status, 200, "metadata after {total} bad requests");
    let log = s.log().await;
    assert!(log.iter().all(|e| e["status"].as_u64().unwrap_or(0) < 500), "no 5xx in the request log");
}
