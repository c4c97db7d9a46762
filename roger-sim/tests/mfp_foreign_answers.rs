//! Scenario: the simulated MFP against a server that answers the way servers nobody here wrote do (docs/protocol.md
//! §7), through the simulated server's `deviation` faults: hyphenated user codes (RFC 8628 §3.2's own example, sent
//! by GitHub, Keycloak and oidc-provider), lifetimes as strings, extra metadata members, a job list with a job that
//! lacks `pages` and one that lacks `file_name`, a scan upload link without `expires_at`, and no `PUT /api/v1/device`
//! extension. The printer registers and runs the whole panel story (QR sign-in, release, PIN, scan, logout),
//! reports each deviation once at warn level with its endpoint and rule, never a value, and asks for the missing
//! extension once, not every few seconds.

mod common;
mod mfp_support;

use std::time::Duration;

use common::TestServer;
use mfp_support::{config, server, temp_dir, WAIT};
use roger_proto::secret::Pin;
use roger_sim::mfp::{Mfp, PanelState, ReleaseOutcome};
use serde_json::json;

/// Sets the server's fault plan: one `deviation` rule per route.
async fn deviate(s: &TestServer, rules: &[(&str, &str)]) {
    let rules: Vec<serde_json::Value> =
        rules.iter().map(|(route, d)| json!({"route": route, "fault": "deviation", "deviation": d})).collect();
    let body = serde_json::to_vec(&json!({"seed": 7, "rules": rules})).unwrap();
    let a = s.raw("POST", "/sim/faults", &[("content-type", "application/json")], body).await;
    assert_eq!(a.status, 200, "fault plan: {}", String::from_utf8_lossy(&a.body));
}

/// The narration lines that report a deviation of `endpoint`.
fn reports<'a>(events: &'a [String], endpoint: &str) -> Vec<&'a String> {
    events.iter().filter(|l| l.starts_with("server answer deviates:") && l.contains(endpoint)).collect()
}

#[tokio::test]
async fn the_printer_runs_the_panel_story_against_a_server_that_deviates() {
    let s = server().await;
    deviate(
        &s,
        &[
            ("/.well-known/oauth-authorization-server", "extra_members"),
            ("/oauth/device_authorization", "hyphenated_user_code"),
            ("/oauth/token", "expires_in_string"),
            ("/api/v1/jobs", "job_list_gaps"),
            ("/api/v1/scans", "upload_without_expiry"),
            ("/api/v1/device", "not_offered"),
        ],
    )
    .await;
    // Short session codes, so that several hyphenated codes are shown during the story.
    s.settings(json!({ "session_code_secs": 12 })).await;
    let dir = temp_dir("foreign-answers");
    let mfp = Mfp::start(config(&s, &dir)).await.expect("the printer starts");

    // Registration: the server sent `WDJB-MJHT`; the panel shows `XXXX-XXXX` and the QR carries the server's value
    // (the wire value is kept), and the admin's approval with what the panel shows works.
    let shown = mfp.register().await.expect("a registration code is shown");
    let qr = shown.qr.clone().expect("the QR payload");
    let code = shown.user_code.clone();
    assert_eq!((code.len(), code.as_bytes()[4]), (9, b'-'), "XXXX-XXXX: {code:?}");
    assert!(qr.ends_with(&format!("user_code={code}")), "the server's own value in the QR");
    let admin = s.app_login("admin", "admin-pass").await;
    assert_eq!(s.decide(&admin.access_token, &code, true).await.status, 204);
    let idle = mfp.wait_for(PanelState::Idle, WAIT).await.expect("registered and idle");
    assert!(idle.device_id.is_some());

    // Step 1 with a hyphenated session code, approved as the panel shows it.
    let (ok, view) = mfp.wait_until(WAIT, |v| v.state == PanelState::Idle && v.user_code.is_some()).await;
    assert!(ok, "a session QR: {view:?}");
    let session_code = view.user_code.clone().expect("user code");
    assert_eq!(session_code.as_bytes()[4], b'-');
    let alice = s.app_login("alice", "alice-pass").await;
    assert_eq!(s.decide(&alice.access_token, &session_code, true).await.status, 204);
    let view = mfp.wait_for(PanelState::Session, WAIT).await.expect("alice signed in");
    assert_eq!(view.user.as_deref(), Some("alice"));

    // The job list: the job without `file_name` is left out, the fixture job (sent without `pages`) is kept.
    let jobs = mfp.jobs().await.expect("the job list is read item by item");
    assert!(jobs.iter().all(|j| j.id != "roger-sim-deviation-job"), "the job without a file name is left out");
    let job = jobs.iter().find(|j| j.file_name == "quarterly-report.pdf").expect("alice's job is still listed");
    assert_eq!(job.pages, 0, "no page count from the server: 0 (unknown)");
    let ReleaseOutcome::Printed { record, .. } = mfp.release(&job.id).await.expect("release") else {
        panic!("a drive job prints at once")
    };
    assert!(record.bytes > 0);

    // Step 2 and a scan whose upload link has no `expires_at`.
    assert!(mfp.pin("alice", Pin::new("1234")).await.expect("pin"), "PIN accepted");
    let profile = mfp.scan_profiles().await.expect("profiles")[0].id.clone();
    let scan = mfp.scan(&profile).await.expect("the scan uploads without an expiry");
    assert!(scan.bytes > 0);
    mfp.logout().await.expect("logout");
    let (ok, _) = mfp.wait_until(WAIT, |v| v.state == PanelState::Idle && v.user_code.is_some()).await;
    assert!(ok, "back to a QR after logout");

    // Let a few more short-lived session codes rotate: their deviations are not reported again.
    tokio::time::sleep(Duration::from_secs(14)).await;

    let events = mfp.events();
    let codes = reports(&events, "POST /oauth/device_authorization");
    assert_eq!(codes.len(), 1, "the hyphenated codes are reported once: {codes:?}");
    assert!(codes[0].contains("RFC 8628 §6.1") && codes[0].contains("accepted"), "{}", codes[0]);
    assert!(!codes.iter().any(|l| l.contains(&code) || l.contains(&session_code)), "no code in the report");
    let tokens = reports(&events, "POST /oauth/token");
    assert!(tokens.iter().any(|l| l.contains("expires_in sent as a string")), "{tokens:?}");
    assert_eq!(tokens.iter().filter(|l| l.contains("expires_in")).count(), 1, "{tokens:?}");
    let jobs = reports(&events, "GET /api/v1/jobs");
    assert!(jobs.iter().any(|l| l.contains("list item")) && jobs.iter().any(|l| l.contains("optional member")));
    assert_eq!(reports(&events, "POST /api/v1/scans").len(), 1);
    let extension = reports(&events, "PUT /api/v1/device");
    assert_eq!(extension.len(), 1, "the missing extension is noted once: {extension:?}");
    assert!(
        !events.iter().any(|l| l.contains("could not publish the job endpoint")),
        "no retry loop for an extension the server does not offer"
    );
    // The server saw the extension asked for once, not every few seconds.
    let puts = s.log().await.into_iter().filter(|e| e["method"] == "PUT" && e["path"] == "/api/v1/device").count();
    assert!(puts <= 2, "PUT /api/v1/device asked {puts} times");
    mfp.stop().await;
}
