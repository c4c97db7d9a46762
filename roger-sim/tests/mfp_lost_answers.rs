//! Scenario (issue 4): lost answers do not disconnect the simulated MFP. The server's seeded faults
//! (`POST /sim/faults`, `drop_response`: the request is processed, the answer never arrives) drop
//!
//! * the answer of the registration poll that succeeded: the printer polls the same device code again after a
//!   doubled wait, and the server's 30-second grace mints a fresh pair for the same device (R-DEV-1);
//! * the answer of a refresh: the printer resends the same refresh token, which the server honours until its
//!   successor is first used (R-TOK-3), and keeps refreshing; the stored token still works after a power cycle.

mod common;
mod mfp_support;

use std::time::{Duration, Instant};

use common::TestServer;
use mfp_support::{config, registered, temp_dir, WAIT};
use roger_sim::mfp::{Mfp, PanelState};

async fn set_faults(s: &TestServer, plan: serde_json::Value) {
    let a =
        s.raw("POST", "/sim/faults", &[("content-type", "application/json")], serde_json::to_vec(&plan).unwrap()).await;
    assert_eq!(a.status, 200, "faults: {}", String::from_utf8_lossy(&a.body));
}

async fn faults_applied(s: &TestServer) -> u64 {
    let v = s.raw("GET", "/sim/faults", &[], Vec::new()).await.json();
    v["rules"].as_array().map(|r| r.iter().filter_map(|x| x["applied"].as_u64()).sum()).unwrap_or(0)
}

/// Waits until `cond` holds (checked every 100 ms) or `timeout` passes.
async fn eventually(timeout: Duration, mut cond: impl AsyncFnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    while Instant::now() < end {
        if cond().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    cond().await
}

#[tokio::test]
async fn a_lost_registration_answer_does_not_lose_the_printer() {
    // The default 5 s interval leaves time to approve and arm the fault before the first poll.
    let s = TestServer::start().await;
    let dir = temp_dir("lost-registration");
    let mfp = Mfp::start(config(&s, &dir)).await.expect("start");
    let shown = mfp.register().await.expect("registration code");
    let admin = s.app_login("admin", "admin-pass").await.access_token;
    assert_eq!(s.decide(&admin, &shown.user_code, true).await.status, 204);
    // The next device-code poll (the one that succeeds) loses its answer.
    set_faults(
        &s,
        serde_json::json!({ "seed": 11, "rules": [
            { "route": "/oauth/token", "grant_type": "device_code", "fault": "drop_response", "count": 1 }
        ]}),
    )
    .await;

    let view = mfp.wait_for(PanelState::Idle, WAIT).await.expect("registered despite the lost answer");
    assert_eq!(faults_applied(&s).await, 1, "the success answer was dropped");
    let device_id = view.device_id.expect("device id");
    let store = s.store().await;
    assert_eq!(store["devices"].as_object().map(|d| d.len()), Some(1), "one device, not two (R-DEV-1)");
    assert!(store["devices"].get(&device_id).is_some());
    // The re-minted pair works: device-bound session codes (§7) and the job endpoint (§9).
    let (shown, _) = mfp.wait_until(WAIT, |v| v.qr.is_some()).await;
    assert!(shown, "a session QR with the re-minted device token");
    assert!(mfp.wait_job_url_published(WAIT).await);
    let log = s.log().await;
    assert!(
        log.iter().any(|e| e["outcome"].as_str() == Some("fault:drop_response")),
        "the fault is in the request log"
    );
    mfp.stop().await;
    s.server.stop().await;
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test]
async fn a_lost_refresh_answer_does_not_disconnect_the_printer() {
    let s = TestServer::start().await;
    // 4-second access tokens: the printer refreshes every 3.2 s (R-TOK-1 at 80% of the lifetime).
    s.settings(serde_json::json!({ "interval_secs": 1, "access_token_secs": 4 })).await;
    let dir = temp_dir("lost-refresh");
    let cfg = config(&s, &dir);
    let (mfp, device_id) = registered(&s, cfg.clone()).await;

    set_faults(
        &s,
        serde_json::json!({ "seed": 12, "rules": [
            { "route": "/oauth/token", "grant_type": "refresh_token", "fault": "drop_response", "count": 1 }
        ]}),
    )
    .await;
    assert!(eventually(Duration::from_secs(20), async || faults_applied(&s).await == 1).await, "a refresh was lost");
    let refreshed =
        |m: &roger_sim::mfp::MfpHandle| m.events().iter().filter(|l| l.as_str() == "device token refreshed").count();
    let after_loss = refreshed(&mfp);
    // Two more successful refreshes after the loss: the resend of the same token was honoured and the chain goes on.
    assert!(
        eventually(Duration::from_secs(20), async || refreshed(&mfp) >= after_loss + 2).await,
        "refreshing continues: {:?}",
        mfp.events()
    );
    let view = mfp.panel();
    assert!(matches!(view.state, PanelState::Idle | PanelState::Session), "still connected: {view:?}");
    assert!(!mfp.events().iter().any(|l| l.starts_with("disconnected")), "{:?}", mfp.events());
    mfp.stop().await;

    // The token stored last is the live one: a cold start over the same state directory stays registered.
    let mfp = Mfp::start(cfg).await.expect("restart");
    let (shown, view) = mfp.wait_until(WAIT, |v| v.state == PanelState::Idle && v.qr.is_some()).await;
    assert!(shown, "registered after the restart: {view:?}");
    assert_eq!(view.device_id.as_deref(), Some(device_id.as_str()));
    mfp.stop().await;
    s.server.stop().await;
    std::fs::remove_dir_all(&dir).ok();
}
