//! Scenario (issue 4): the simulated MFP's ends of a registration (R-TOK-4). A printer whose refresh token is
//! unused for 90 days is *disconnected* (the server's clock jumps 90 days and a day; the next refresh is
//! `invalid_grant`): no user login, the state on disk says so, and reconnecting is a new registration with a new
//! device id. An admin's removal (`DELETE /api/v1/devices/{id}`) pushes `device.disconnected`, which the printer
//! confirms with a refresh before it disconnects (R-PUSH-1), also after a broker cut and resubscription.

mod common;
mod mfp_support;

use mfp_support::{config, registered, server, temp_dir, WAIT};
use roger_proto::api;
use roger_proto::secret::Pin;
use roger_sim::mfp::PanelState;

#[tokio::test]
async fn a_dead_refresh_token_disconnects_and_register_reconnects() {
    let s = server().await;
    // 3-second access tokens: the printer refreshes every 2.4 s, so it notices the dead token quickly.
    s.settings(serde_json::json!({ "access_token_secs": 3 })).await;
    let dir = temp_dir("disconnect");
    let (mfp, device_id) = registered(&s, config(&s, &dir)).await;

    s.advance(91.0 * 86_400.0).await;
    let view = mfp.wait_for(PanelState::Disconnected, WAIT).await.expect("disconnected after 90 days unused");
    assert!(view.qr.is_none() && view.user.is_none(), "no login offered: {view:?}");
    assert!(!mfp.pin("alice", Pin::new("1234")).await.expect("pin"), "no PIN login while disconnected");
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("state/connection.json")).expect("state")).unwrap();
    assert_eq!(state["state"], "disconnected");
    assert_eq!(state["reason"], "refresh_token_dead");
    assert!(state.get("refresh_token").is_none(), "the dead token is gone from disk");

    // Reconnect: a new registration, a new device.
    let shown = mfp.register().await.expect("a new registration code");
    let admin = s.app_login("admin", "admin-pass").await.access_token;
    assert_eq!(s.decide(&admin, &shown.user_code, true).await.status, 204);
    let view = mfp.wait_for(PanelState::Idle, WAIT).await.expect("reconnected");
    let new_id = view.device_id.expect("device id");
    assert_ne!(new_id, device_id, "reconnecting is a new device (R-TOK-4)");
    assert!(mfp.wait_job_url_published(WAIT).await, "the new device publishes its job endpoint");
    let events = mfp.events().join("\n");
    assert!(events.contains("disconnected from the tenant"), "{events}");
    mfp.stop().await;
    s.server.stop().await;
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test]
async fn an_admin_removal_is_pushed_and_confirmed() {
    let s = server().await;
    let dir = temp_dir("removed");
    let (mfp, device_id) = registered(&s, config(&s, &dir)).await;
    let (shown, _) = mfp.wait_until(WAIT, |v| v.qr.is_some()).await;
    assert!(shown);

    // A broker cut ends the subscription; the printer subscribes again (PROTOCOL.md §11) and re-reads its state.
    let connected = |m: &roger_sim::mfp::MfpHandle| {
        m.events().iter().filter(|l| l.as_str() == "push: connected to the device queue").count()
    };
    let (before, start) = (connected(&mfp), std::time::Instant::now());
    assert!(s.server.shared.bus.fault_cut(), "the in-process bus supports cuts");
    while connected(&mfp) == before && start.elapsed() < WAIT {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(connected(&mfp) > before, "resubscribed after the cut: {:?}", mfp.events());
    assert!(mfp.events().iter().any(|l| l.contains("subscription ended")));

    let admin = s.app_login("admin", "admin-pass").await.access_token;
    let a = s.send(api::remove_device(&s.api, &admin, &device_id).unwrap()).await;
    assert_eq!(a.status, 204, "{}", String::from_utf8_lossy(&a.body));
    mfp.wait_for(PanelState::Disconnected, WAIT).await.expect("disconnected after the removal");
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("state/connection.json")).expect("state")).unwrap();
    assert_eq!(state["reason"], "removed", "confirmed over HTTPS as a removal");
    let events = mfp.events().join("\n");
    assert!(events.contains("push: device.disconnected"), "the push doorbell arrived: {events}");
    mfp.stop().await;
    s.server.stop().await;
    std::fs::remove_dir_all(&dir).ok();
}
