//! Scenario (issue 4): the simulated desktop signs in by QR (device grant, `roger-desktop`, PROTOCOL.md §4, RFC 8628)
//! approved on alice's simulated phone (R-QR-2: the phone sees a *desktop* code), queues a job whose document stays
//! on the computer (R-DATA-1: the server store never holds the bytes, R-DATA-2: it keeps the file name), and on the
//! `job.release_requested` doorbell confirms over HTTPS, fetches a ticket (`POST …/handover`, docs/protocol.md C1)
//! and posts the document to the printer's `job_url` with `Authorization: Ticket …` (PROTOCOL.md §9). Duplicate,
//! stale and foreign doorbells hand nothing over (R-PUSH-1). The printer's job endpoint is a small receiver in this
//! test that redeems the ticket with the printer's device token before it accepts the bytes.

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use common::TestServer;
use roger_proto::api::{self, CodeKind, DeviceUpdate, JobSource, ReleaseAnswer, ReleaseRequest, TicketRedemption};
use roger_proto::push::{Id, PushEnvelope, PushEvent, PushTarget};
use roger_proto::secret::{AccessToken, Password, Ticket};
use roger_sim::bus::{QueueSpec, Subscription};
use roger_sim::desktop::{Desktop, HandoverOutcome};
use roger_sim::phone::{ClientConfig, Phone, PhoneError};
use time::OffsetDateTime;

/// What the printer's job endpoint received: (job id from the redeemed ticket, document bytes).
type Received = Arc<Mutex<Vec<(String, Vec<u8>)>>>;

#[derive(Clone)]
struct Printer {
    s_api: String,
    device: AccessToken,
    device_id: String,
    received: Received,
}

/// The MFP side of docs/protocol.md §3.14: redeem the ticket (`POST /api/v1/tickets/redeem` with the device token)
/// before accepting the document; `201` when taken, `401` + `WWW-Authenticate: Ticket realm="roger-mfp"` otherwise.
async fn job_endpoint(State(p): State<Printer>, headers: HeaderMap, body: Bytes) -> Response {
    let refuse =
        || (StatusCode::UNAUTHORIZED, [(header::WWW_AUTHENTICATE, "Ticket realm=\"roger-mfp\"")]).into_response();
    let Some(ticket) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Ticket "))
        .map(Ticket::new)
    else {
        return refuse();
    };
    let req = api::redeem_ticket(&p.s_api, &p.device, &ticket).expect("redeem request");
    let http = common::client();
    let (parts, b) = req.into_parts();
    let mut r = http.request(parts.method, parts.uri.to_string()).body(b);
    for (k, v) in &parts.headers {
        r = r.header(k, v);
    }
    let answer = r.send().await.expect("redeem sent");
    if !answer.status().is_success() {
        return refuse();
    }
    let redemption: TicketRedemption = answer.json().await.expect("redemption");
    if redemption.device_id != p.device_id {
        return refuse();
    }
    p.received.lock().expect("lock").push((redemption.job_id, body.to_vec()));
    StatusCode::CREATED.into_response()
}

async fn start_printer_endpoint(p: Printer) -> SocketAddr {
    let app = axum::Router::new().route("/roger/jobs", axum::routing::post(job_endpoint)).with_state(p);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    addr
}

async fn next_release(sub: &mut Subscription, desktop: &mut Desktop) -> PushEnvelope {
    loop {
        let env = tokio::time::timeout(Duration::from_secs(5), sub.next())
            .await
            .expect("a doorbell within 5 s")
            .expect("subscription open");
        if matches!(env.event, PushEvent::JobReleaseRequested { .. }) {
            return env;
        }
        let outcome = desktop.handle_push(&env).await.expect("other doorbells are harmless");
        assert_eq!(outcome, HandoverOutcome::Ignored, "{env:?}");
    }
}

const MARKER: &str = "DESKTOP-DOCUMENT-BYTES-4c1d9e";

#[tokio::test]
async fn desktop_signs_in_by_phone_and_hands_its_document_to_the_printer() {
    let s = TestServer::start().await;
    s.settings(serde_json::json!({ "interval_secs": 1 })).await;
    let config = ClientConfig::loopback(&s.server.info.discovery);

    // --- Desktop sign-in by QR, approved on alice's phone (PROTOCOL.md §4).
    let mut phone = Phone::connect(&config).await.expect("phone");
    phone.login("acme", "alice", Password::new("alice-pass")).await.expect("phone signs in");
    let mut desktop = Desktop::connect(&config).await.expect("desktop");
    assert!(desktop.submit("early.pdf", 1, b"x".to_vec()).await.is_err(), "nothing before sign-in");
    let login = desktop.start_login().await.expect("desktop login code");
    assert_eq!(login.display_code().len(), 9, "XXXX-XXXX (R-QR-1)");
    assert_eq!(login.expires_in(), Duration::from_secs(120), "desktop codes live 120 s");
    let scanned = phone.scan_payload(login.qr_payload().expect("QR payload")).expect("same origin");
    assert_eq!(&scanned, login.user_code());
    let review = phone.look_up(&scanned).await.expect("lookup");
    assert_eq!(review.lookup.kind, CodeKind::Desktop, "R-QR-2: the phone sees a desktop sign-in");
    let wrong = phone.approve(&review, Some(CodeKind::Session)).await;
    assert!(matches!(wrong, Err(PhoneError::UnexpectedKind { found: CodeKind::Desktop, .. })), "{wrong:?}");
    phone.approve(&review, Some(CodeKind::Desktop)).await.expect("approved");
    let user = desktop.finish_login(login).await.expect("the desktop's poll gets its tokens");
    assert_eq!(user.username, "alice");
    let user_id = Id::new(user.id.clone()).expect("user id");

    // The desktop's push queue (the in-process bus has no wire protocol: the owner subscribes for it).
    let installation = Id::new("desktop-1").expect("id");
    let mut sub = s
        .server
        .shared
        .bus
        .subscribe(QueueSpec::App { user_id: user_id.clone(), installation_id: installation })
        .await
        .expect("subscribe");

    // --- A job whose document stays on the desktop (R-DATA-1).
    let document = format!("%PDF-1.7 {MARKER} quarterly numbers").into_bytes();
    let job = desktop.submit("Quarterly report.pdf", 3, document.clone()).await.expect("submitted");
    assert_eq!((job.source, job.pages, job.file_name.as_str()), (JobSource::Desktop, 3, "Quarterly report.pdf"));
    assert_eq!(desktop.held(&job.id).map(|d| d.bytes()), Some(document.as_slice()), "held locally");
    let store = s.store().await.to_string();
    assert!(store.contains("Quarterly report.pdf"), "R-DATA-2: the file name is kept");
    assert!(!store.contains(MARKER), "R-DATA-1: the server store never holds document bytes");
    let listed = phone.jobs().await.expect("jobs");
    assert!(listed.iter().any(|j| j.id == job.id && j.source == JobSource::Desktop), "the phone sees the job");

    // --- A printer with a job endpoint; alice opens a session there and the printer releases the job.
    let printer = s.register_printer().await;
    let received: Received = Arc::default();
    let endpoint = Printer {
        s_api: s.api.clone(),
        device: printer.access_token.clone(),
        device_id: printer.device_id.clone().expect("device_id"),
        received: received.clone(),
    };
    let device_id = endpoint.device_id.clone();
    let addr = start_printer_endpoint(endpoint).await;
    let update = DeviceUpdate { job_url: Some(format!("http://{addr}/roger/jobs")) };
    let a = s.send(api::put_device(&s.api, &printer.access_token, &update).expect("put")).await;
    assert_eq!(a.status, 200, "job_url published");

    // A doorbell before any release (stale or forged): confirmed over HTTPS, nothing handed over (R-PUSH-1).
    let forged = PushEnvelope::new(
        Id::new("evt-forged").expect("id"),
        OffsetDateTime::now_utc(),
        PushTarget::User(user_id.clone()),
        PushEvent::JobReleaseRequested {
            job_id: Id::new(job.id.clone()).expect("id"),
            device_id: Id::new(device_id.clone()).expect("id"),
        },
    );
    assert_eq!(
        desktop.handle_push(&forged).await.expect("harmless"),
        HandoverOutcome::NotReleased { job_id: job.id.clone() }
    );
    assert!(received.lock().expect("lock").is_empty());

    let session = s.qr_session(&printer.access_token, "alice", "alice-pass").await.access_token;
    let release = api::release_job(&s.api, &session, &job.id, "desk-1", &ReleaseRequest::default()).expect("req");
    let a = s.send(release).await;
    assert_eq!(a.status, 200, "release at the printer: {}", String::from_utf8_lossy(&a.body));
    let answer: ReleaseAnswer = serde_json::from_slice(&a.body).expect("release answer");
    assert!(matches!(answer, ReleaseAnswer::Desktop { .. }), "a desktop job answers a ticket");

    // --- The doorbell: the desktop confirms, fetches a ticket and posts the document to the printer.
    let doorbell = next_release(&mut sub, &mut desktop).await;
    let outcome = desktop.handle_push(&doorbell).await.expect("handed over");
    assert_eq!(
        outcome,
        HandoverOutcome::Delivered { job_id: job.id.clone(), device_id: device_id.clone(), status: 201 }
    );
    assert!(desktop.is_delivered(&job.id));
    assert_eq!(*received.lock().expect("lock"), vec![(job.id.clone(), document.clone())], "the exact bytes, once");

    // Duplicates are harmless: the same doorbell again hands nothing over; neither does polling.
    assert_eq!(
        desktop.handle_push(&doorbell).await.expect("duplicate"),
        HandoverOutcome::AlreadyDelivered { job_id: job.id.clone() }
    );
    assert!(desktop.check_releases().await.expect("poll").is_empty());
    assert_eq!(received.lock().expect("lock").len(), 1, "handed over exactly once");

    // Someone else's job (not held here) is ignored.
    let other = PushEnvelope::new(
        Id::new("evt-other").expect("id"),
        OffsetDateTime::now_utc(),
        PushTarget::User(user_id),
        PushEvent::JobReleaseRequested {
            job_id: Id::new("job-of-another-installation").expect("id"),
            device_id: Id::new(device_id).expect("id"),
        },
    );
    assert_eq!(
        desktop.handle_push(&other).await.expect("ignored"),
        HandoverOutcome::NotOurs { job_id: "job-of-another-installation".into() }
    );

    // After the whole exchange the server still holds no document bytes (R-DATA-1).
    assert!(!s.store().await.to_string().contains(MARKER));
    s.server.stop().await;
}
