//! Scenario: the approver denies (PROTOCOL.md §5 steps 3–4, §8; RFC 8628 §3.5). A tenant admin denies a printer's
//! registration code: the printer's next poll gets `access_denied` (and keeps getting it), and the code is no longer
//! pending, so approving, denying or looking it up afterwards is `404 not-found` (docs/protocol.md §3.11). The same
//! holds for a user denying a session QR code at a registered printer.

mod common;

use common::{Answer, TestServer, MFP};
use roger_proto::api::lookup_code;
use roger_proto::device_authorization::DeviceAuthorizationRequest;
use roger_proto::error::{OAuthErrorCode, ResponseError};
use roger_proto::token;

fn oauth_error(a: &Answer) -> OAuthErrorCode {
    let err = token::classify(&a.to_http()).expect_err("an OAuth error answer");
    err.oauth_code().cloned().unwrap_or_else(|| panic!("not an OAuth error: {err:?}"))
}

/// A `404` problem `urn:roger:problem:not-found`.
fn assert_not_found(a: &Answer, what: &str) {
    assert_eq!(a.status, 404, "{what}: {}", String::from_utf8_lossy(&a.body));
    let err = roger_proto::wire::classify_api_empty(&a.to_http()).expect_err("a refusal");
    let ResponseError::Problem { problem, .. } = err else { panic!("{what}: not a problem: {err:?}") };
    assert_eq!(problem.roger_name(), Some("not-found"), "{what}");
}

#[tokio::test]
async fn denied_registration_is_access_denied_and_cannot_be_approved_later() {
    let s = TestServer::start().await;
    let admin = s.app_login("admin", "admin-pass").await;
    let code = s
        .device_authorization(&DeviceAuthorizationRequest::registration(MFP, "MX-1", "SN-1"), None)
        .await
        .expect("registration code");

    let a = s.poll(&code.device_code, MFP, None).await;
    assert_eq!(oauth_error(&a), OAuthErrorCode::AuthorizationPending);

    let a = s.decide(&admin.access_token, code.user_code.secret(), false).await;
    assert_eq!(a.status, 204, "deny: {}", String::from_utf8_lossy(&a.body));

    s.advance(5.0).await;
    let a = s.poll(&code.device_code, MFP, None).await;
    assert_eq!(a.status, 400);
    assert_eq!(oauth_error(&a), OAuthErrorCode::AccessDenied);

    // No pending code any more: approving (or denying again, or looking it up) is 404.
    let a = s.decide(&admin.access_token, code.user_code.secret(), true).await;
    assert_not_found(&a, "approve after deny");
    let a = s.decide(&admin.access_token, code.user_code.secret(), false).await;
    assert_not_found(&a, "deny after deny");
    let a = s.send(lookup_code(&s.api, &admin.access_token, &code.user_code).unwrap()).await;
    assert_not_found(&a, "lookup after deny");

    // The denial stands: a later poll is still access_denied, no device was created.
    s.advance(5.0).await;
    let a = s.poll(&code.device_code, MFP, None).await;
    assert_eq!(oauth_error(&a), OAuthErrorCode::AccessDenied);
    let store = s.store().await;
    assert!(store["devices"].as_object().is_none_or(|d| d.is_empty()), "no device: {}", store["devices"]);
}

#[tokio::test]
async fn denied_session_code_is_access_denied_at_the_printer() {
    let s = TestServer::start().await;
    let device = s.register_printer().await;
    let alice = s.app_login("alice", "alice-pass").await;
    let code = s
        .device_authorization(&DeviceAuthorizationRequest::session(MFP), Some(&device.access_token))
        .await
        .expect("session code");

    let a = s.decide(&alice.access_token, code.user_code.secret(), false).await;
    assert_eq!(a.status, 204);
    let a = s.poll(&code.device_code, MFP, Some(&device.access_token)).await;
    assert_eq!(oauth_error(&a), OAuthErrorCode::AccessDenied);

    let a = s.decide(&alice.access_token, code.user_code.secret(), true).await;
    assert_not_found(&a, "approve a denied session code");
    s.advance(5.0).await;
    let a = s.poll(&code.device_code, MFP, Some(&device.access_token)).await;
    assert_eq!(oauth_error(&a), OAuthErrorCode::AccessDenied, "no user token after a denial");
}
