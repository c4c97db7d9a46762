//! Helpers of the simulated-MFP scenarios (issue 4): a server with a 1-second polling interval, a printer
//! configuration in a fresh temporary directory, registration by an admin's approval over HTTP, and a QR sign-in
//! approved in a user's app.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use roger_sim::mfp::{Mfp, MfpConfig, MfpHandle, PanelState};

pub use super::common::temp_dir;
use super::common::TestServer;

/// How long a scenario waits for a panel state.
pub const WAIT: Duration = Duration::from_secs(40);

/// A fresh server whose codes are polled every second (PROTOCOL.md §3: the interval is a tenant setting).
pub async fn server() -> TestServer {
    let s = TestServer::start().await;
    s.settings(serde_json::json!({ "interval_secs": 1 })).await;
    s
}

/// A printer for `s`: state in `dir/state`, prints in `dir/out`, push from the server's in-process bus, plain
/// HTTP on loopback (R-DISC-2 test mode).
pub fn config(s: &TestServer, dir: &Path) -> MfpConfig {
    let mut c = MfpConfig::new(s.server.info.discovery.clone(), dir.join("state"));
    c.allow_loopback_http = true;
    c.push = Some(s.server.shared.bus.clone());
    c.out_dir = Some(dir.join("out"));
    c.handover_wait = Duration::from_secs(20);
    c
}

/// Starts a printer and registers it: the admin looks the shown code up and approves it (PROTOCOL.md §5).
/// Returns the printer and its device id.
pub async fn registered(s: &TestServer, config: MfpConfig) -> (MfpHandle, String) {
    let mfp = Mfp::start(config).await.expect("the printer starts");
    assert_eq!(mfp.panel().state, PanelState::Unregistered);
    let shown = mfp.register().await.expect("a registration code is shown");
    let admin = s.app_login("admin", "admin-pass").await;
    let a = s.decide(&admin.access_token, &shown.user_code, true).await;
    assert_eq!(a.status, 204, "approve: {}", String::from_utf8_lossy(&a.body));
    let view = mfp.wait_for(PanelState::Idle, WAIT).await.expect("registered and idle");
    let device_id = view.device_id.expect("a device id");
    (mfp, device_id)
}

/// Waits for the session QR and approves it in `user`'s app (PROTOCOL.md §8 step 1); returns the app token.
pub async fn qr_sign_in(
    s: &TestServer,
    mfp: &MfpHandle,
    user: &str,
    password: &str,
) -> roger_proto::secret::AccessToken {
    let (shown, view) = mfp.wait_until(WAIT, |v| v.state == PanelState::Idle && v.user_code.is_some()).await;
    assert!(shown, "a session QR is shown: {view:?}");
    let code = view.user_code.expect("user code");
    let app = s.app_login(user, password).await;
    let a = s.decide(&app.access_token, &code, true).await;
    assert_eq!(a.status, 204, "approve the session code: {}", String::from_utf8_lossy(&a.body));
    let view = mfp.wait_for(PanelState::Session, WAIT).await.expect("signed in");
    assert_eq!(view.user.as_deref(), Some(user));
    app.access_token
}

/// Whether `text` contains `digits` as a whole number (not inside a longer run of digits, such as a port).
pub fn contains_number(text: &str, digits: &str) -> bool {
    let bytes = text.as_bytes();
    text.match_indices(digits).any(|(i, m)| {
        let before = i.checked_sub(1).map(|j| bytes[j].is_ascii_digit()).unwrap_or(false);
        let after = bytes.get(i + m.len()).is_some_and(u8::is_ascii_digit);
        !before && !after
    })
}

/// The text of every non-PNG file under `dir`, with its path.
pub fn text_files(dir: &Path) -> Vec<(PathBuf, String)> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else { return out };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(text_files(&p));
        } else if p.extension().is_none_or(|x| x != "png") {
            out.push((p.clone(), String::from_utf8_lossy(&std::fs::read(&p).unwrap_or_default()).into_owned()));
        }
    }
    out
}
