//! Scenario (issue 4): desktop hand-over at the simulated MFP (PROTOCOL.md §9, docs/protocol.md §3.13–3.14). The
//! printer publishes its job endpoint with `PUT /api/v1/device {"job_url"}`; a document posted there without a
//! valid ticket is refused (401 with the `Ticket` challenge) and nothing prints; after alice releases her desktop
//! job at the printer, the desktop fetches a ticket (`POST …/handover`) and posts the file with
//! `Authorization: Ticket <ticket>`; the printer redeems the ticket (one use, bound to job and device) and prints
//! the bytes, which never touched the API (R-DATA-1). A replayed ticket, and a ticket bound to another printer,
//! print nothing.

mod common;
mod mfp_support;

use std::time::{Duration, Instant};

use common::{Answer, TestServer};
use mfp_support::{config, qr_sign_in, registered, server, temp_dir};
use roger_proto::api::{self, DeviceUpdate, JobList, ReleaseAnswer, ReleaseRequest};
use roger_proto::device_authorization::DeviceAuthorizationRequest;
use roger_proto::secret::AccessToken;
use roger_proto::token::{self, client_id};
use roger_proto::wire::classify_api;
use roger_sim::mfp::{PrintSource, ReleaseOutcome};

const DOC: &[u8] = b"PK\x03\x04 memo from the desktop: this never passes through the server";

fn bearer(t: &AccessToken) -> String {
    format!("Bearer {}", t.secret())
}

/// The desktop client's login: device grant approved in alice's app (PROTOCOL.md §4).
async fn desktop_login(s: &TestServer) -> AccessToken {
    let code = s.device_authorization(&DeviceAuthorizationRequest::desktop(), None).await.expect("desktop code");
    let phone = s.app_login("alice", "alice-pass").await.access_token;
    assert_eq!(s.decide(&phone, code.user_code.secret(), true).await.status, 204);
    s.advance(5.0).await;
    let a = s.poll(&code.device_code, client_id::DESKTOP, None).await;
    token::classify(&a.to_http()).expect("desktop token").access_token
}

/// A desktop job: metadata only (R-DATA-1).
async fn desktop_job(s: &TestServer, desktop: &AccessToken, name: &str) -> String {
    let body = serde_json::json!({ "desktop": { "file_name": name, "pages": 2 } });
    let a = s
        .raw(
            "POST",
            "/api/v1/jobs",
            &[("authorization", &bearer(desktop)), ("content-type", "application/json")],
            serde_json::to_vec(&body).unwrap(),
        )
        .await;
    assert_eq!(a.status, 201, "{}", String::from_utf8_lossy(&a.body));
    a.json()["id"].as_str().expect("job id").to_owned()
}

async fn post_document(url: &str, authorization: Option<&str>, body: &[u8]) -> reqwest::Response {
    let mut r = common::client().post(url).body(body.to_vec());
    if let Some(a) = authorization {
        r = r.header("authorization", a);
    }
    r.send().await.expect("the job endpoint answers")
}

async fn assert_refused(url: &str, authorization: Option<&str>, status: u16) {
    let resp = post_document(url, authorization, DOC).await;
    assert_eq!(resp.status().as_u16(), status, "{authorization:?}");
    if status == 401 {
        let challenge = resp.headers().get("www-authenticate").and_then(|v| v.to_str().ok()).unwrap_or_default();
        assert_eq!(challenge, "Ticket realm=\"roger-mfp\"");
    }
    let body: serde_json::Value = resp.json().await.expect("a JSON refusal");
    assert!(body["error"].is_string() && body["detail"].is_string(), "{body}");
}

#[tokio::test]
async fn handover_needs_a_valid_ticket() {
    let s = server().await;
    let dir = temp_dir("handover");
    let (mfp, device_id) = registered(&s, config(&s, &dir)).await;
    assert!(mfp.wait_job_url_published(Duration::from_secs(20)).await, "job endpoint published");
    let job_url = mfp.job_url();
    assert!(job_url.starts_with("http://127.0.0.1:") && job_url.ends_with("/roger/jobs"), "{job_url}");

    let desktop = desktop_login(&s).await;
    let job_id = desktop_job(&s, &desktop, "memo from desktop.docx").await;

    // Without a valid ticket nothing prints: no Authorization, another scheme, a ticket the server refuses.
    assert_refused(&job_url, None, 401).await;
    assert_refused(&job_url, Some(&bearer(&desktop)), 401).await;
    assert_refused(&job_url, Some("Ticket dGhpcy1pcy1ub3QtYS10aWNrZXQ"), 401).await;
    assert_refused(&job_url, Some("Ticket"), 401).await;
    assert!(mfp.printed().is_empty(), "nothing printed without a ticket");

    // Alice releases her desktop job at the printer; the desktop hands the file over with a fresh ticket.
    let alice = qr_sign_in(&s, &mfp, "alice", "alice-pass").await;
    let handover_path = format!("/api/v1/jobs/{job_id}/handover");
    let desktop_side = async {
        let end = Instant::now() + Duration::from_secs(20);
        let handover = loop {
            let a: Answer = s.raw("POST", &handover_path, &[("authorization", &bearer(&desktop))], vec![]).await;
            if a.status == 200 {
                break a.json();
            }
            assert_eq!(a.status, 404, "before the release: {}", String::from_utf8_lossy(&a.body));
            assert!(Instant::now() < end, "the release never happened");
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert_eq!(handover["device_id"].as_str(), Some(device_id.as_str()), "{handover}");
        assert_eq!(handover["job_url"].as_str(), Some(job_url.as_str()), "{handover}");
        let ticket = handover["ticket"].as_str().expect("ticket").to_owned();
        let resp = post_document(&job_url, Some(&format!("Ticket {ticket}")), DOC).await;
        let status = resp.status().as_u16();
        (status, resp.json::<serde_json::Value>().await.unwrap_or_default(), ticket)
    };
    let (outcome, (status, answer, ticket)) = tokio::join!(mfp.release(&job_id), desktop_side);
    assert_eq!(status, 201, "{answer}");
    let outcome = outcome.expect("release");
    let ReleaseOutcome::Printed { record, .. } = outcome else { panic!("the hand-over arrived in time: {outcome:?}") };
    assert_eq!((record.job_id.as_str(), record.source, record.pages), (job_id.as_str(), PrintSource::Desktop, 2));
    assert_eq!(record.file_name, "memo from desktop.docx");
    assert_eq!(std::fs::read(&record.path).expect("printed"), DOC);
    assert_eq!(answer["sha256"].as_str(), Some(record.sha256.as_str()));
    assert_eq!(answer["bytes"].as_u64(), Some(DOC.len() as u64));
    // The result was reported with alice's session token: the job is printed.
    let a = s
        .raw("GET", "/api/v1/jobs?state=printed", &[("authorization", &format!("Bearer {}", alice.secret()))], vec![])
        .await;
    let printed: JobList = classify_api(&a.to_http()).expect("printed jobs");
    assert!(printed.jobs.iter().any(|j| j.id == job_id), "{printed:?}");

    // One use: the same ticket again prints nothing.
    assert_refused(&job_url, Some(&format!("Ticket {ticket}")), 401).await;
    assert_eq!(mfp.printed().len(), 1);

    // A ticket bound to another printer is refused here too.
    let other = s.register_printer().await;
    let update = DeviceUpdate { job_url: Some("http://127.0.0.1:9/roger/jobs".into()) };
    assert_eq!(s.send(api::put_device(&s.api, &other.access_token, &update).unwrap()).await.status, 200);
    let second_job = desktop_job(&s, &desktop, "second memo.docx").await;
    let alice_there = s.qr_session(&other.access_token, "alice", "alice-pass").await.access_token;
    let a = s
        .send(api::release_job(&s.api, &alice_there, &second_job, "other-1", &ReleaseRequest::default()).unwrap())
        .await;
    let ReleaseAnswer::Desktop { desktop: bound_elsewhere } = classify_api(&a.to_http()).expect("release") else {
        panic!("a desktop job answers a ticket")
    };
    assert_refused(&job_url, Some(&format!("Ticket {}", bound_elsewhere.ticket.secret())), 401).await;
    assert_eq!(mfp.printed().len(), 1, "nothing printed for another printer's ticket");

    let events = mfp.events().join("\n");
    assert!(events.contains("hand-over refused"), "{events}");
    assert!(!events.contains(&ticket), "no ticket in the log (R-SEC-1)");
    mfp.stop().await;
    s.server.stop().await;
    std::fs::remove_dir_all(&dir).ok();
}
