//! Scenario: a user session by QR code and a drive release (PROTOCOL.md §8 step 1, §9, R-DATA-1, R-SEC-1).
//! A registered printer asks for a session code with device-bound authentication (§7); alice looks it up and
//! approves it in the app; the printer's poll yields a `roger.release` user token with `user` and no refresh token.
//! The token lists alice's queued fixture job; the release (with `Idempotency-Key`) answers a pre-authorised URL on
//! the **drive** origin, not the API origin, and the document's bytes come from the drive listener only. Reporting
//! `printed` takes the job out of the queue. Session codes need device-bound authentication: without it, `401
//! invalid_client` with the `invalid_token` challenge.

mod common;

use common::{Answer, TestServer, MFP};
use roger_proto::api::{
    list_jobs, lookup_code, release_job, report_job_result, CodeKind, CodeLookup, JobList, JobOutcome, JobResult,
    JobSource, ReleaseAnswer, ReleaseRequest,
};
use roger_proto::device_authorization::DeviceAuthorizationRequest;
use roger_proto::error::OAuthErrorCode;
use roger_proto::token;
use roger_proto::wire::classify_api;

/// Asserts a failed device-bound authentication (PROTOCOL.md §7).
fn assert_invalid_client(a: &Answer) {
    assert_eq!(a.status, 401, "{}", String::from_utf8_lossy(&a.body));
    let challenge = a.header("www-authenticate").expect("WWW-Authenticate");
    assert!(challenge.starts_with("Bearer") && challenge.contains("error=\"invalid_token\""), "{challenge}");
    let err = token::classify(&a.to_http()).expect_err("refused");
    assert_eq!(err.oauth_code(), Some(&OAuthErrorCode::InvalidClient));
    assert!(err.is_token_rejected(), "the MFP refreshes its device token and retries (R-TOK-1)");
}

/// The server's (virtual) clock.
async fn server_now(s: &TestServer) -> time::OffsetDateTime {
    let clock = s.raw("GET", "/sim/clock", &[], Vec::new()).await.json();
    let now = clock["now"].as_str().expect("now");
    time::OffsetDateTime::parse(now, &time::format_description::well_known::Rfc3339).expect("RFC 3339")
}

#[tokio::test]
async fn qr_session_then_release_from_the_drive() {
    let s = TestServer::start().await;
    let device = s.register_printer().await;
    let device_id = device.device_id.clone().unwrap();

    // Step 1: a device-bound session code, on the API origin (R-QR-4).
    let code = s
        .device_authorization(&DeviceAuthorizationRequest::session(MFP), Some(&device.access_token))
        .await
        .expect("session code");
    assert_eq!(code.expires_in, 120);
    let qr = code.verification_uri_complete.as_ref().expect("verification_uri_complete");
    assert_eq!(qr.secret(), format!("{}/device?user_code={}", s.api, code.user_code.secret()));

    // Alice looks it up (R-QR-2) and approves.
    let alice = s.app_login("alice", "alice-pass").await;
    let a = s.send(lookup_code(&s.api, &alice.access_token, &code.user_code).unwrap()).await;
    let lookup: CodeLookup = classify_api(&a.to_http()).expect("lookup");
    assert_eq!(lookup.kind, CodeKind::Session);
    assert_eq!(
        (lookup.vendor.as_deref(), lookup.model.as_deref(), lookup.serial.as_deref()),
        (Some("acme"), Some("MX-1"), Some("SN-1"))
    );
    let a = s.decide(&alice.access_token, code.user_code.secret(), true).await;
    assert_eq!(a.status, 204);

    s.advance(5.0).await;
    let a = s.poll(&code.device_code, MFP, Some(&device.access_token)).await;
    assert_eq!(a.header("cache-control").as_deref(), Some("no-store"));
    assert_eq!(a.header("pragma").as_deref(), Some("no-cache"));
    let user = token::classify(&a.to_http()).expect("user token");
    assert_eq!(user.scope.as_deref(), Some("roger.release"));
    assert!(user.refresh_token.is_none(), "user tokens at the MFP have no refresh token");
    let who = user.user.as_ref().expect("user");
    assert_eq!(who.username, "alice");
    assert_eq!(who.email.as_deref(), Some("alice@acme.example"));
    assert_eq!(user.tenant_id.as_deref(), Some("acme"));

    // Alice's queued jobs: the fixture's drive job.
    let a = s.send(list_jobs(&s.api, &user.access_token).unwrap()).await;
    let jobs: JobList = classify_api(&a.to_http()).expect("job list");
    assert_eq!(jobs.jobs.len(), 1, "{jobs:?}");
    let job = &jobs.jobs[0];
    assert_eq!((job.file_name.as_str(), job.pages, job.source), ("quarterly-report.pdf", 3, JobSource::Drive));

    // Release: a fresh pre-authorised URL on the drive origin (R-DATA-1), no-store (R-SEC-1).
    let key = "release-0001";
    let a = s.send(release_job(&s.api, &user.access_token, &job.id, key, &ReleaseRequest::default()).unwrap()).await;
    assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.body));
    assert_eq!(a.header("cache-control").as_deref(), Some("no-store"));
    let answer: ReleaseAnswer = classify_api(&a.to_http()).expect("release answer");
    let ReleaseAnswer::Drive { document, .. } = answer else { panic!("a drive job answers a document") };
    let url = document.url.secret().to_owned();
    let drive = &s.server.info.drive;
    assert_ne!(drive, &s.api, "the drive has its own listener");
    assert!(url.starts_with(&format!("{drive}/")), "{url} is on the drive origin {drive}");
    assert!(!url.starts_with(&s.api), "never on the API origin");
    let lifetime = document.expires_at.expect("the simulated server sends expires_at") - server_now(&s).await;
    assert!(
        lifetime > time::Duration::seconds(290) && lifetime <= time::Duration::seconds(300),
        "the URL lives 300 s: {lifetime}"
    );

    // The MFP downloads from the drive.
    let resp = s.http.get(&url).send().await.expect("drive download");
    assert_eq!(resp.status().as_u16(), 200);
    let bytes = resp.bytes().await.unwrap();
    assert!(bytes.starts_with(b"%PDF"), "a PDF document");
    assert_eq!(Some(bytes.len() as u64), document.size);
    // The API origin does not serve it (R-DATA-1).
    let path = &url[drive.len()..];
    let a = s.raw("GET", path, &[], Vec::new()).await;
    assert_eq!(a.status, 404, "the API listener serves no document bytes");
    assert!(!a.body.starts_with(b"%PDF"));

    // Printed: 204; the job leaves the queue.
    let result = JobResult { state: JobOutcome::Printed, pages: 3 };
    let a = s.send(report_job_result(&s.api, &user.access_token, &job.id, &result).unwrap()).await;
    assert_eq!(a.status, 204, "{}", String::from_utf8_lossy(&a.body));
    let a = s.send(list_jobs(&s.api, &user.access_token).unwrap()).await;
    let jobs: JobList = classify_api(&a.to_http()).expect("job list");
    assert!(jobs.jobs.iter().all(|j| j.id != job.id), "no longer queued: {jobs:?}");
    let a = s
        .raw(
            "GET",
            "/api/v1/jobs?state=printed",
            &[("authorization", &format!("Bearer {}", user.access_token.secret()))],
            Vec::new(),
        )
        .await;
    let printed: JobList = classify_api(&a.to_http()).expect("printed jobs");
    assert!(printed.jobs.iter().any(|j| j.id == job.id), "listed as printed: {printed:?}");

    // The user token is bound to this printer's session; the store never saw the document.
    let store = s.store().await.to_string();
    assert!(!store.contains("revenue up"), "no document bytes on the server (R-DATA-2)");
    assert!(!store.contains(&url), "no pre-authorised URL on the server");
    assert!(store.contains(&device_id));
}

#[tokio::test]
async fn session_codes_need_device_bound_authentication() {
    let s = TestServer::start().await;
    let device = s.register_printer().await;

    // No Authorization header: 401 invalid_client with the invalid_token challenge.
    let req = DeviceAuthorizationRequest::session(MFP);
    let a = s.send(req.to_http(&s.url("/oauth/device_authorization"), None).unwrap()).await;
    assert_invalid_client(&a);

    // An app token is no device token.
    let alice = s.app_login("alice", "alice-pass").await;
    let a = s.send(req.to_http(&s.url("/oauth/device_authorization"), Some(&alice.access_token)).unwrap()).await;
    assert_invalid_client(&a);

    // Another client id than the one the printer registered with.
    let other = DeviceAuthorizationRequest::session("emb-other");
    let a = s.send(other.to_http(&s.url("/oauth/device_authorization"), Some(&device.access_token)).unwrap()).await;
    assert_invalid_client(&a);

    // Polling a genuine session code without the device token is refused the same way.
    let code = s.device_authorization(&req, Some(&device.access_token)).await.expect("session code");
    let a = s.decide(&alice.access_token, code.user_code.secret(), true).await;
    assert_eq!(a.status, 204);
    s.advance(5.0).await;
    let a = s.poll(&code.device_code, MFP, None).await;
    assert_invalid_client(&a);
    // A refusal is no oracle and no redemption: with the device token the approval is still there.
    s.advance(5.0).await;
    let a = s.poll(&code.device_code, MFP, Some(&device.access_token)).await;
    let user = token::classify(&a.to_http()).expect("user token");
    assert_eq!(user.user.map(|u| u.username).as_deref(), Some("alice"));
}
