//! Scenario: the printer's registration answer is lost (R-DEV-1; RFC 8628 §3.5, RFC 9700 §4.14). A device code
//! redeems once; a repeat redemption within 30 s of the first success mints a fresh token pair for the **same**
//! `device_id` and revokes the first pair (its access token answers `401` with `error="invalid_token"`, its refresh
//! token `invalid_grant`); repeats after that window get `invalid_grant`. The window is counted from the first
//! success, so repeats cannot stretch it.

mod common;

use common::{Answer, TestServer, MFP};
use roger_proto::api::{get_device, DeviceConfig};
use roger_proto::device_authorization::{DeviceAuthorizationRequest, DeviceAuthorizationResponse};
use roger_proto::error::OAuthErrorCode;
use roger_proto::token::{self, TokenResponse};

fn oauth_error(a: &Answer) -> OAuthErrorCode {
    let err = token::classify(&a.to_http()).expect_err("an OAuth error answer");
    err.oauth_code().cloned().unwrap_or_else(|| panic!("not an OAuth error: {err:?}"))
}

/// A registration code approved by the admin.
async fn approved_code(s: &TestServer) -> DeviceAuthorizationResponse {
    let code = s
        .device_authorization(&DeviceAuthorizationRequest::registration(MFP, "MX-1", "SN-1"), None)
        .await
        .expect("registration code");
    let admin = s.app_login("admin", "admin-pass").await;
    let a = s.decide(&admin.access_token, code.user_code.secret(), true).await;
    assert_eq!(a.status, 204);
    code
}

async fn redeem(s: &TestServer, code: &DeviceAuthorizationResponse) -> TokenResponse {
    let a = s.poll(&code.device_code, MFP, None).await;
    token::classify(&a.to_http()).unwrap_or_else(|e| panic!("tokens: {e:?}"))
}

#[tokio::test]
async fn repeat_within_30_seconds_remints_and_revokes_the_first_pair() {
    let s = TestServer::start().await;
    let code = approved_code(&s).await;
    s.advance(5.0).await;
    let first = redeem(&s, &code).await;
    let device_id = first.device_id.clone().expect("device_id");

    // The answer was lost; the printer polls again 10 s later.
    s.advance(10.0).await;
    let second = redeem(&s, &code).await;
    assert_eq!(second.device_id.as_deref(), Some(device_id.as_str()), "same device");
    assert_eq!(second.scope.as_deref(), Some("roger.device"));
    assert_ne!(second.access_token, first.access_token);
    assert_ne!(second.refresh_token, first.refresh_token);
    assert!(second.refresh_token.is_some());

    // The first pair is revoked: its access token is an invalid token at the API…
    let a = s.send(get_device(&s.api, &first.access_token).unwrap()).await;
    assert_eq!(a.status, 401);
    let challenge = a.header("www-authenticate").expect("WWW-Authenticate");
    assert!(challenge.starts_with("Bearer") && challenge.contains("error=\"invalid_token\""), "{challenge}");
    // …and its refresh token is dead.
    let a = s.refresh(first.refresh_token.as_ref().unwrap(), MFP).await;
    assert_eq!(oauth_error(&a), OAuthErrorCode::InvalidGrant);

    // The second pair works.
    let a = s.send(get_device(&s.api, &second.access_token).unwrap()).await;
    assert_eq!(a.status, 200);
    let cfg: DeviceConfig = roger_proto::wire::classify_api(&a.to_http()).unwrap();
    assert_eq!(cfg.device_id, device_id);
    assert_eq!(s.store().await["devices"].as_object().map(|d| d.len()), Some(1), "one device only");

    // More than 30 s later, the code is spent.
    s.advance(31.0).await;
    let a = s.poll(&code.device_code, MFP, None).await;
    assert_eq!(a.status, 400);
    assert_eq!(oauth_error(&a), OAuthErrorCode::InvalidGrant);
    // …and that did not touch the pair the printer holds.
    let a = s.refresh(second.refresh_token.as_ref().unwrap(), MFP).await;
    assert!(token::classify(&a.to_http()).is_ok(), "the second pair survives: {}", String::from_utf8_lossy(&a.body));
}

#[tokio::test]
async fn the_window_is_counted_from_the_first_success() {
    let s = TestServer::start().await;
    let code = approved_code(&s).await;
    s.advance(5.0).await;
    let first = redeem(&s, &code).await;
    s.advance(20.0).await;
    let second = redeem(&s, &code).await;
    assert_eq!(second.device_id, first.device_id);
    // 35 s after the first success (15 s after the repeat): too late, however recent the repeat was.
    s.advance(15.0).await;
    let a = s.poll(&code.device_code, MFP, None).await;
    assert_eq!(oauth_error(&a), OAuthErrorCode::InvalidGrant);
    let a = s.send(get_device(&s.api, &second.access_token).unwrap()).await;
    assert_eq!(a.status, 200, "the latest pair stays valid");
}
