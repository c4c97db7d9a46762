//! Scenario (issue 4): a printer restarted mid-session stays registered. The connection state (device id and the
//! newest refresh token, R-TOK-2) is written atomically to the state directory on every rotation; after a power
//! cycle the printer restores it, refreshes (R-TOK-1) and shows a fresh session QR with the same device id. The
//! user session does not survive (user tokens live in memory only), and no PIN is ever on disk (R-PWD-1).

mod common;
mod mfp_support;

use mfp_support::{config, contains_number, qr_sign_in, registered, server, temp_dir, text_files, WAIT};
use roger_proto::secret::Pin;
use roger_sim::mfp::{Mfp, PanelState};

#[tokio::test]
async fn restart_mid_session_stays_registered() {
    let s = server().await;
    let dir = temp_dir("restart");
    let cfg = config(&s, &dir);
    let (mut mfp, device_id) = registered(&s, cfg.clone()).await;
    qr_sign_in(&s, &mfp, "alice", "alice-pass").await;
    assert!(mfp.pin("alice", Pin::new("1234")).await.expect("pin"), "step 2");
    let rt_before: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("state/connection.json")).expect("state")).unwrap();

    // Power cycle in the middle of alice's session.
    let old_job_url = mfp.job_url();
    mfp.restart().await.expect("restart");
    let (shown, view) = mfp.wait_until(WAIT, |v| v.state == PanelState::Idle && v.qr.is_some()).await;
    assert!(shown, "idle with a fresh session QR after the restart: {view:?}");
    assert_eq!(view.device_id.as_deref(), Some(device_id.as_str()), "the same device");
    assert!(view.user.is_none(), "the session did not survive the power cycle");
    // The restored printer refreshed with the stored token, which rotated (R-TOK-2) and was stored again.
    let rt_after: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("state/connection.json")).expect("state")).unwrap();
    assert_eq!(rt_after["device_id"], rt_before["device_id"]);
    assert_ne!(rt_after["refresh_token"], rt_before["refresh_token"], "rotated on the restoring refresh");
    // The new job endpoint is published again.
    assert!(mfp.wait_job_url_published(WAIT).await);
    assert_ne!(mfp.job_url(), old_job_url, "a new listener after the power cycle");
    let store = s.store().await;
    assert_eq!(store["devices"][&device_id]["job_url"].as_str(), Some(mfp.job_url().as_str()));
    assert_eq!(store["devices"].as_object().map(|d| d.len()), Some(1), "no second registration");

    // Still usable: alice signs in again.
    qr_sign_in(&s, &mfp, "alice", "alice-pass").await;
    mfp.stop().await;

    // A brand-new printer process over the same state directory is registered too.
    let mfp = Mfp::start(cfg).await.expect("restarted");
    let view = mfp.wait_for(PanelState::Idle, WAIT).await.expect("registered after a cold start");
    assert_eq!(view.device_id.as_deref(), Some(device_id.as_str()));
    let (shown, _) = mfp.wait_until(WAIT, |v| v.qr.is_some()).await;
    assert!(shown, "the restored device token works for session codes (§7)");
    assert!(matches!(mfp.register().await, Err(e) if e.is_state_error()), "no re-registration");

    // R-PWD-1: the state directory never held the PIN.
    for (path, text) in text_files(&dir) {
        assert!(!contains_number(&text, "1234"), "PIN in {}", path.display());
    }
    mfp.stop().await;
    s.server.stop().await;
    std::fs::remove_dir_all(&dir).ok();
}
