//! Scenario (issue 4): the simulated phone's everyday and admin work, only through `roger_sim::phone::Phone`.
//! alice signs in (PKCE through the login form, PROTOCOL.md §4) and refreshes (R-TOK-2), lists her queued job,
//! cannot release to a printer without a session there (docs/protocol.md C4, `409 no-session`), scans the panel,
//! releases to it (`job.release_requested` to the printer), ends her session from the app (§8 "End"), exports her
//! data (R-DATA-2) and deletes her job. A wrong password is a typed refusal (R-PWD-2). Only a tenant admin approves
//! (or even looks up) a registration (R-QR-2, `403 forbidden`) or removes a printer (R-TOK-4). Every refusal carries the server's
//! status and problem type.

mod common;

use std::time::Duration;

use common::{TestServer, MFP};
use roger_proto::api::{self, CodeKind, JobSource};
use roger_proto::device_authorization::DeviceAuthorizationRequest;
use roger_proto::push::{Id, PushEvent};
use roger_proto::secret::Password;
use roger_proto::token;
use roger_sim::bus::QueueSpec;
use roger_sim::phone::{ClientConfig, LoginError, Phone, PhoneError};

async fn phone(s: &TestServer) -> Phone {
    Phone::connect(&ClientConfig::loopback(&s.server.info.discovery)).await.expect("phone connects")
}

#[tokio::test]
async fn alice_manages_her_jobs_and_session_from_the_phone() {
    let s = TestServer::start().await;

    let mut wrong = phone(&s).await;
    let refused = wrong.login("acme", "alice", Password::new("not-her-password")).await;
    assert!(matches!(refused, Err(PhoneError::Login(LoginError::BadCredentials(_)))), "{refused:?}");
    assert!(matches!(wrong.jobs().await, Err(PhoneError::App(_))), "not signed in");

    let mut alice = phone(&s).await;
    let who = alice.login("acme", "alice", Password::new("alice-pass")).await.expect("signed in");
    assert_eq!(who.email.as_deref(), Some("alice@acme.example"));
    alice.refresh().await.expect("refresh rotates (R-TOK-2)");

    // The fixture queues one drive job for alice.
    let jobs = alice.jobs().await.expect("jobs");
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    let job = jobs[0].clone();
    assert_eq!(job.source, JobSource::Drive);

    // A printer, and its doorbell queue.
    let printer = s.register_printer().await;
    let device_id = printer.device_id.clone().expect("device_id");
    let mut doorbells =
        s.server.shared.bus.subscribe(QueueSpec::Device(Id::new(device_id.clone()).expect("id"))).await.expect("sub");

    // No session there yet: 409 no-session (docs/protocol.md C4).
    let e = alice.release(&job.id, &device_id).await.expect_err("no session");
    assert_eq!((e.status(), e.problem_name()), (Some(409), Some("no-session")), "{e}");

    // alice scans the panel's QR and approves it; the printer's poll opens her session.
    let code = s
        .device_authorization(&DeviceAuthorizationRequest::session(MFP), Some(&printer.access_token))
        .await
        .expect("session code");
    let scanned = alice.scan_payload(code.verification_uri_complete.as_ref().expect("qr").secret()).expect("scan");
    let review = alice.look_up(&scanned).await.expect("lookup");
    alice.approve(&review, Some(CodeKind::Session)).await.expect("approve");
    s.advance(5.0).await;
    let a = s.poll(&code.device_code, MFP, Some(&printer.access_token)).await;
    let session = token::classify(&a.to_http()).expect("user token").access_token;

    // Release from the phone: the printer is rung with the job and its own id (PROTOCOL.md §9).
    let requested = alice.release(&job.id, &device_id).await.expect("release requested");
    assert_eq!((requested.job_id.as_str(), requested.device_id.as_str()), (job.id.as_str(), device_id.as_str()));
    let bell = loop {
        let env =
            tokio::time::timeout(Duration::from_secs(5), doorbells.next()).await.expect("doorbell").expect("open");
        if let PushEvent::JobReleaseRequested { job_id, device_id: d } = env.event {
            break (job_id.into_string(), d.into_string());
        }
    };
    assert_eq!(bell, (job.id.clone(), device_id.clone()));

    // alice ends her session from the app: the printer's user token stops working (PROTOCOL.md §8 "End").
    alice.end_session(&device_id).await.expect("session ended");
    alice.end_session(&device_id).await.expect("idempotent");
    let probe = s.send(api::list_jobs(&s.api, &session).expect("req")).await;
    assert_eq!(probe.status, 401, "the session's user token is revoked");

    // Someone else's or unknown job: 404; her export holds only the allowed data (R-DATA-2).
    let e = alice.delete_job("job-nobody-has").await.expect_err("unknown");
    assert_eq!((e.status(), e.problem_name()), (Some(404), Some("not-found")), "{e}");
    let export = alice.export().await.expect("export");
    assert_eq!(export.user.username, "alice");
    assert!(export.jobs.iter().any(|j| j.id == job.id && j.file_name == job.file_name), "{export:?}");
    alice.delete_job(&job.id).await.expect("deleted");
    assert!(alice.jobs().await.expect("jobs").is_empty());

    // Not an admin: cannot approve a registration (R-QR-2) nor remove a printer (R-TOK-4).
    let reg = s
        .device_authorization(&DeviceAuthorizationRequest::registration(MFP, "MX-9", "SN-9"), None)
        .await
        .expect("registration code");
    // (docs/protocol.md §3.11: for a registration code even the lookup is for admins only.)
    let e = alice.look_up(&reg.user_code).await.expect_err("not an admin");
    assert_eq!((e.status(), e.problem_name()), (Some(403), Some("forbidden")), "{e}");
    let e = alice.remove_device(&device_id).await.expect_err("not an admin");
    assert_eq!((e.status(), e.problem_name()), (Some(403), Some("forbidden")), "{e}");
    s.server.stop().await;
}

#[tokio::test]
async fn an_admin_removes_a_printer() {
    let s = TestServer::start().await;
    let mut admin = phone(&s).await;
    admin.login("acme", "admin", Password::new("admin-pass")).await.expect("admin signs in");
    let printer = s.register_printer().await;
    let device_id = printer.device_id.clone().expect("device_id");
    let device = s.send(api::get_device(&s.api, &printer.access_token).expect("req")).await;
    assert_eq!(device.status, 200, "the device token works");

    // Denying a registration code with the phone: the printer's poll says access_denied.
    let reg = s
        .device_authorization(&DeviceAuthorizationRequest::registration(MFP, "MX-2", "SN-2"), None)
        .await
        .expect("registration code");
    let review = admin.look_up(&reg.user_code).await.expect("lookup");
    admin.deny(&review).await.expect("denied");
    s.advance(5.0).await;
    assert_eq!(s.poll(&reg.device_code, MFP, None).await.json()["error"], "access_denied");

    admin.remove_device(&device_id).await.expect("removed");
    let device = s.send(api::get_device(&s.api, &printer.access_token).expect("req")).await;
    assert_eq!(device.status, 401, "R-TOK-4: the removed printer's tokens are revoked");
    let e = admin.remove_device(&device_id).await.expect_err("gone");
    assert_eq!((e.status(), e.problem_name()), (Some(404), Some("not-found")), "{e}");
    s.server.stop().await;
}

/// R-TOK-1: an API call answered `401 invalid_token` is refreshed once and retried once (here the server's virtual
/// clock ran past the access token's 1200 s while the phone's own clock did not). R-TOK-4: after 90 idle days the
/// refresh token is dead, the call reports `invalid_grant`, and the phone is signed out.
#[tokio::test]
async fn an_expired_token_is_refreshed_once_and_a_dead_one_signs_out() {
    let s = TestServer::start().await;
    let mut alice = phone(&s).await;
    alice.login("acme", "alice", Password::new("alice-pass")).await.expect("signed in");
    s.advance(1300.0).await;
    let seen = s.log().await.len();
    assert_eq!(alice.jobs().await.expect("refreshed and retried").len(), 1);
    let tail: Vec<(String, u64, Option<String>)> = s.log().await[seen..]
        .iter()
        .map(|e| {
            let path = e["path"].as_str().unwrap_or_default().to_owned();
            (path, e["status"].as_u64().unwrap_or_default(), e["grant_type"].as_str().map(str::to_owned))
        })
        .collect();
    assert_eq!(
        tail,
        vec![
            ("/api/v1/jobs".to_owned(), 401, None),
            ("/oauth/token".to_owned(), 200, Some("refresh_token".to_owned())),
            ("/api/v1/jobs".to_owned(), 200, None),
        ],
        "one refresh, one retry"
    );

    s.advance(91.0 * 24.0 * 3600.0).await;
    let e = alice.jobs().await.expect_err("dead refresh token");
    assert_eq!(e.status(), Some(400), "{e}");
    assert!(e.to_string().contains("invalid_grant"), "{e}");
    assert!(alice.user().is_none(), "signed out");
    assert!(matches!(alice.jobs().await, Err(PhoneError::App(roger_sim::phone::AppError::NotSignedIn))));
    s.server.stop().await;
}
