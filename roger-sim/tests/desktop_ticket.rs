//! Scenario: a desktop job and its hand-over ticket (PROTOCOL.md §4 desktop login, §9 jobs and desktop hand-over;
//! docs/protocol.md §3.10 ticket redemption, §3.13, C1, C6; RFC 8628; R-DATA-1, R-DATA-2, R-SEC-1). The desktop
//! logs in with the device grant approved in alice's app, queues a job with metadata only, the printer (alice's
//! step-1 session) releases it and gets a one-use ticket bound to job and printer, redeems it once (a repeat within
//! 30 s is the lost-answer grace, later it is `404`), another printer cannot use a ticket, and the desktop's
//! `POST /api/v1/jobs/{id}/handover` mints a fresh ticket for the printer the job went to.

mod common;

use common::{Answer, TestServer};
use roger_proto::api::{self, CodeKind, CodeLookup, DeviceUpdate, ReleaseAnswer, ReleaseRequest, TicketRedemption};
use roger_proto::device_authorization::DeviceAuthorizationRequest;
use roger_proto::secret::{AccessToken, Ticket};
use roger_proto::token::{self, client_id, scope};

fn text(a: &Answer) -> String {
    String::from_utf8_lossy(&a.body).into_owned()
}

fn bearer(t: &AccessToken) -> String {
    format!("Bearer {}", t.secret())
}

fn no_store(a: &Answer, what: &str) {
    assert_eq!(a.header("cache-control").as_deref(), Some("no-store"), "{what}: R-SEC-1");
    assert_eq!(a.header("pragma").as_deref(), Some("no-cache"), "{what}: R-SEC-1");
}

async fn redeem(s: &TestServer, device: &AccessToken, ticket: &Ticket) -> Answer {
    s.send(api::redeem_ticket(&s.api, device, ticket).unwrap()).await
}

const JOB_URL: &str = "http://127.0.0.1:9/roger/jobs";

#[tokio::test]
async fn desktop_job_ticket_is_one_use_and_bound_to_the_printer() {
    let s = TestServer::start().await;

    // --- The desktop logs in with the device grant (PROTOCOL.md §4), approved in alice's phone app.
    let code = s.device_authorization(&DeviceAuthorizationRequest::desktop(), None).await.expect("desktop code");
    assert_eq!(code.expires_in, 120, "desktop login codes live 120 s");
    let phone = s.app_login("alice", "alice-pass").await.access_token;
    let a = s.send(api::lookup_code(&s.api, &phone, &code.user_code).unwrap()).await;
    assert_eq!(a.status, 200, "lookup: {}", text(&a));
    let lookup: CodeLookup = serde_json::from_slice(&a.body).unwrap();
    assert_eq!(lookup.kind, CodeKind::Desktop, "R-QR-2: the phone sees it approves a desktop sign-in");
    assert!(lookup.vendor.is_none() && lookup.serial.is_none(), "no printer facts for a desktop code");
    let pending = s.poll(&code.device_code, client_id::DESKTOP, None).await;
    assert_eq!(pending.json()["error"], "authorization_pending");
    let a = s.decide(&phone, code.user_code.secret(), true).await;
    assert_eq!(a.status, 204, "approve: {}", text(&a));
    s.advance(5.0).await;
    let a = s.poll(&code.device_code, client_id::DESKTOP, None).await;
    no_store(&a, "desktop token");
    let desktop = token::classify(&a.to_http()).expect("desktop app token");
    assert_eq!(desktop.scope.as_deref(), Some(scope::APP));
    assert!(desktop.refresh_token.is_some(), "the desktop gets a refresh token");
    assert_eq!(desktop.user.as_ref().map(|u| u.username.as_str()), Some("alice"));
    let desktop = desktop.access_token;

    // --- The desktop queues a job: metadata only (R-DATA-1).
    let a = s
        .raw(
            "POST",
            "/api/v1/jobs",
            &[("authorization", &bearer(&desktop)), ("content-type", "application/json")],
            br#"{"desktop":{"file_name":"memo from desktop.docx","pages":2}}"#.to_vec(),
        )
        .await;
    assert_eq!(a.status, 201, "submit: {}", text(&a));
    let job = a.json();
    let job_id = job["id"].as_str().expect("job id").to_owned();
    assert_eq!((job["source"].as_str(), job["pages"].as_u64()), (Some("desktop"), Some(2)), "{job}");
    let store = s.store().await;
    let rec = &store["jobs"][&job_id];
    assert_eq!(rec["file_name"], "memo from desktop.docx", "R-DATA-2: the file name is kept: {rec}");
    let keys: Vec<&String> = rec.as_object().expect("job record").keys().collect();
    for k in ["document", "content", "bytes", "data", "url", "ticket"] {
        assert!(!keys.iter().any(|key| key.as_str() == k), "no {k} in the job record: {rec}");
    }

    // --- Two printers; the first publishes its job endpoint (PROTOCOL.md §9 hand-over).
    let printer = s.register_printer().await;
    let (device, device_id) = (printer.access_token, printer.device_id.expect("device_id"));
    let other = s.register_printer().await;
    let (other_device, other_id) = (other.access_token, other.device_id.expect("device_id"));
    assert_ne!(device_id, other_id);
    let update = DeviceUpdate { job_url: Some(JOB_URL.into()) };
    let a = s.send(api::put_device(&s.api, &device, &update).unwrap()).await;
    assert_eq!(a.status, 200, "publish job_url: {}", text(&a));

    // Before any release there is nothing to hand over.
    let handover_path = format!("/api/v1/jobs/{job_id}/handover");
    let auth = bearer(&desktop);
    let a = s.raw("POST", &handover_path, &[("authorization", &auth)], Vec::new()).await;
    assert_eq!(a.status, 404, "handover before the release: {}", text(&a));

    // --- Alice at the printer (step 1) lists the job and releases it.
    let alice = s.qr_session(&device, "alice", "alice-pass").await.access_token;
    let list = s.send(api::list_jobs(&s.api, &alice).unwrap()).await.json();
    let listed = list["jobs"].as_array().unwrap().iter().find(|j| j["id"] == job_id.as_str()).cloned();
    let listed = listed.unwrap_or_else(|| panic!("the desktop job is listed at the printer: {list}"));
    assert_eq!(
        (listed["file_name"].as_str(), listed["source"].as_str()),
        (Some("memo from desktop.docx"), Some("desktop"))
    );
    let a = s.send(api::release_job(&s.api, &alice, &job_id, "desk-1", &ReleaseRequest::default()).unwrap()).await;
    assert_eq!(a.status, 200, "release: {}", text(&a));
    no_store(&a, "release");
    assert!(a.json()["desktop"]["ticket"].is_string() && a.json()["desktop"]["expires_at"].is_string());
    let ReleaseAnswer::Desktop { desktop: handed } = serde_json::from_slice(&a.body).expect("release answer") else {
        panic!("a desktop job answers a ticket: {}", text(&a));
    };
    let ticket = handed.ticket;
    assert!(!s.store().await.to_string().contains(ticket.secret()), "tickets are stored only as hashes");

    // --- The printer redeems it: bound to this job and this printer.
    let a = redeem(&s, &device, &ticket).await;
    assert_eq!(a.status, 200, "redeem: {}", text(&a));
    let r: TicketRedemption = serde_json::from_slice(&a.body).unwrap();
    assert_eq!((r.job_id.as_str(), r.device_id.as_str()), (job_id.as_str(), device_id.as_str()));
    assert_eq!((r.file_name.as_str(), r.pages), ("memo from desktop.docx", 2));
    // A repeat within 30 s is a lost answer (C6): the same answer again.
    let again = redeem(&s, &device, &ticket).await;
    assert_eq!((again.status, again.json()), (200, a.json()), "repeat within the grace: {}", text(&again));
    // After the grace it is used up (docs/protocol.md §3.10: 404).
    s.advance(31.0).await;
    let a = redeem(&s, &device, &ticket).await;
    assert_eq!(a.status, 404, "redeemed twice after the grace: {}", text(&a));
    assert_eq!(a.json()["type"], "urn:roger:problem:not-found");

    // --- The desktop fetches a fresh ticket for the printer the job went to (C1).
    let a = s.raw("POST", &handover_path, &[("authorization", &auth)], Vec::new()).await;
    assert_eq!(a.status, 200, "handover: {}", text(&a));
    no_store(&a, "handover");
    let h = a.json();
    assert_eq!((h["device_id"].as_str(), h["job_url"].as_str()), (Some(device_id.as_str()), Some(JOB_URL)), "{h}");
    assert!(h["expires_at"].is_string(), "{h}");
    let fresh = Ticket::new(h["ticket"].as_str().expect("ticket"));
    assert_ne!(fresh, ticket, "a new ticket each time");

    // Another registered printer cannot use it …
    let a = redeem(&s, &other_device, &fresh).await;
    assert_eq!(a.status, 404, "a ticket at another printer: {}", text(&a));
    // … nor the first, already-used one.
    assert_eq!(redeem(&s, &other_device, &ticket).await.status, 404);
    // The printer it is bound to can, once.
    let a = redeem(&s, &device, &fresh).await;
    assert_eq!(a.status, 200, "the bound printer redeems the handover ticket: {}", text(&a));
    assert_eq!(a.json()["device_id"], device_id.as_str());

    // Someone else's app gets nothing (404), and the wrong kind of token gets 403.
    let bob = s.app_login("bob", "bob-pass").await.access_token;
    let a = s.raw("POST", &handover_path, &[("authorization", &bearer(&bob))], Vec::new()).await;
    assert_eq!(a.status, 404, "bob's handover of alice's job: {}", text(&a));
    let a = s.raw("POST", &handover_path, &[("authorization", &bearer(&device))], Vec::new()).await;
    assert_eq!(a.status, 403, "a device token cannot fetch hand-overs: {}", text(&a));
    let a = s.send(api::redeem_ticket(&s.api, &desktop, &fresh).unwrap()).await;
    assert_eq!(a.status, 403, "only a device token redeems tickets: {}", text(&a));
}
