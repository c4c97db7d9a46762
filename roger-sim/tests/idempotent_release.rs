//! Scenario: releasing a drive job at the printer is idempotent (PROTOCOL.md §9; docs/protocol.md §3.13;
//! draft-ietf-httpapi-idempotency-key-header; R-DATA-1, R-SEC-1). A repeat with the same `Idempotency-Key` gets an
//! equivalent answer (same job, a fresh pre-authorised drive URL that works); the same key for another job is
//! `422`; a printed job is `409`; someone else's job is `404`; the result report is idempotent (`204` twice) and a
//! contradictory result is `409`.

mod common;

use common::{Answer, TestServer};
use roger_proto::api::{self, JobOutcome, JobResult, ReleaseAnswer, ReleaseRequest};
use roger_proto::secret::AccessToken;

fn text(a: &Answer) -> String {
    String::from_utf8_lossy(&a.body).into_owned()
}

async fn release(s: &TestServer, token: &AccessToken, job: &str, key: &str) -> Answer {
    s.send(api::release_job(&s.api, token, job, key, &ReleaseRequest::default()).unwrap()).await
}

async fn result(s: &TestServer, token: &AccessToken, job: &str, state: JobOutcome) -> Answer {
    s.send(api::report_job_result(&s.api, token, job, &JobResult { state, pages: 3 }).unwrap()).await
}

fn problem_type(a: &Answer) -> String {
    assert_eq!(a.header("content-type").as_deref(), Some("application/problem+json"), "{}", text(a));
    a.json()["type"].as_str().unwrap_or_default().to_owned()
}

/// Checks a drive release answer and fetches the document from the drive (not from the API origin, R-DATA-1).
async fn fetch_document(s: &TestServer, a: &Answer) -> (String, u64, serde_json::Value) {
    assert_eq!(a.status, 200, "release: {}", text(a));
    assert_eq!(a.header("cache-control").as_deref(), Some("no-store"), "R-SEC-1");
    assert_eq!(a.header("pragma").as_deref(), Some("no-cache"), "R-SEC-1");
    let ReleaseAnswer::Drive { document, options } = serde_json::from_slice(&a.body).expect("release answer") else {
        panic!("a drive job answers a document: {}", text(a));
    };
    let url = document.url.secret().to_owned();
    assert!(!url.starts_with(&s.api), "the document is not served by the API origin (R-DATA-1): {url}");
    let resp = s.http.get(&url).send().await.expect("drive download");
    assert_eq!(resp.status().as_u16(), 200, "the pre-authorised URL works");
    let bytes = resp.bytes().await.expect("document");
    assert!(bytes.starts_with(b"%PDF"), "the document's bytes");
    assert_eq!(Some(bytes.len() as u64), document.size, "size matches the document");
    (url, document.size.expect("the simulated server sends the size"), serde_json::to_value(options).unwrap())
}

#[tokio::test]
async fn release_is_idempotent_and_result_reports_too() {
    let s = TestServer::start().await;
    let device = s.register_printer().await.access_token;
    let alice = s.qr_session(&device, "alice", "alice-pass").await.access_token;

    let list = s.send(api::list_jobs(&s.api, &alice).unwrap()).await;
    assert_eq!(list.status, 200, "{}", text(&list));
    let jobs = list.json()["jobs"].as_array().cloned().unwrap_or_default();
    let job = jobs
        .iter()
        .find(|j| j["file_name"] == "quarterly-report.pdf")
        .unwrap_or_else(|| panic!("the fixture job: {jobs:?}"));
    let job_id = job["id"].as_str().unwrap().to_owned();
    assert_eq!(job["source"], "drive");

    // Bob (his own session at the same printer) cannot release or report alice's job: it does not exist for him.
    let bob = s.qr_session(&device, "bob", "bob-pass").await.access_token;
    let a = release(&s, &bob, &job_id, "bob-key-1").await;
    assert_eq!((a.status, problem_type(&a).as_str()), (404, "urn:roger:problem:not-found"), "bob's release");

    // No key at the printer → 400 idempotency-key-required.
    let mut no_key = api::release_job(&s.api, &alice, &job_id, "x", &ReleaseRequest::default()).unwrap();
    no_key.headers_mut().remove(api::IDEMPOTENCY_KEY);
    let a = s.send(no_key).await;
    assert_eq!((a.status, problem_type(&a).as_str()), (400, "urn:roger:problem:idempotency-key-required"));

    // Release twice with the same key: two 200s, equivalent answers, each URL valid.
    let first = release(&s, &alice, &job_id, "release-key-1").await;
    let second = release(&s, &alice, &job_id, "release-key-1").await;
    let (url1, size1, options1) = fetch_document(&s, &first).await;
    let (url2, size2, options2) = fetch_document(&s, &second).await;
    assert_eq!((size1, &options1), (size2, &options2), "equivalent answers: same document, same options");
    // Both URLs stay usable until they expire (the repeat does not invalidate the first answer).
    assert_eq!(s.http.get(&url1).send().await.unwrap().status().as_u16(), 200, "the first URL still works");
    let _ = url2;

    // The job is released, not queued, and exactly once in the server's store.
    let store = s.store().await;
    assert_eq!(store["jobs"][&job_id]["state"], "released", "{}", store["jobs"][&job_id]);
    let queued = s.send(api::list_jobs(&s.api, &alice).unwrap()).await.json();
    assert!(queued["jobs"].as_array().unwrap().iter().all(|j| j["id"] != job_id.as_str()), "not queued any more");

    // The same key for another job → 422.
    let app = s.app_login("alice", "alice-pass").await.access_token;
    let other = s
        .raw(
            "POST",
            "/api/v1/jobs",
            &[("authorization", &format!("Bearer {}", app.secret())), ("content-type", "application/json")],
            br#"{"desktop":{"file_name":"memo.txt","pages":1}}"#.to_vec(),
        )
        .await;
    assert_eq!(other.status, 201, "{}", text(&other));
    let other_id = other.json()["id"].as_str().unwrap().to_owned();
    let a = release(&s, &alice, &other_id, "release-key-1").await;
    assert_eq!((a.status, problem_type(&a).as_str()), (422, "urn:roger:problem:idempotency-key-mismatch"));

    // Bob cannot report a result for alice's job either.
    let a = result(&s, &bob, &job_id, JobOutcome::Printed).await;
    assert_eq!(a.status, 404, "bob's result: {}", text(&a));

    // The result, twice: 204 both times.
    for i in 1..=2 {
        let a = result(&s, &alice, &job_id, JobOutcome::Printed).await;
        assert_eq!(a.status, 204, "result #{i}: {}", text(&a));
    }
    assert_eq!(s.store().await["jobs"][&job_id]["state"], "printed");
    // A contradictory result → 409.
    let a = result(&s, &alice, &job_id, JobOutcome::Failed).await;
    assert_eq!((a.status, problem_type(&a).as_str()), (409, "urn:roger:problem:conflict"), "failed after printed");

    // After printed: release → 409, with the old key and with a new one.
    for key in ["release-key-1", "release-key-2"] {
        let a = release(&s, &alice, &job_id, key).await;
        assert_eq!((a.status, problem_type(&a).as_str()), (409, "urn:roger:problem:conflict"), "release with {key}");
    }
    // And bob still gets 404, not 409 (no oracle for someone else's job).
    let a = release(&s, &bob, &job_id, "bob-key-2").await;
    assert_eq!(a.status, 404, "bob after printed: {}", text(&a));
    let auth = format!("Bearer {}", alice.secret());
    let printed = s.raw("GET", "/api/v1/jobs?state=printed", &[("authorization", &auth)], Vec::new()).await.json();
    assert_eq!(printed["jobs"].as_array().map(Vec::len), Some(1), "{printed}");
}
