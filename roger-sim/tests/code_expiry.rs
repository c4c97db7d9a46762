//! Scenario: registration codes expire (PROTOCOL.md §3 lifetimes, §5; RFC 8628 §3.2 `expires_in`, §3.5
//! `expired_token`). A registration code lives 600 s by default: a poll after that gets `expired_token` (not
//! `invalid_grant`, which would tell the printer to give up instead of fetching a new code, docs/protocol.md §5.2),
//! and approving it is `404`. The lifetime is a setting: `PUT /sim/settings {"registration_code_secs":3}` makes new
//! codes expire in 3 s.

mod common;

use common::{Answer, TestServer, MFP};
use roger_proto::api::{lookup_code, CodeKind, CodeLookup};
use roger_proto::device_authorization::DeviceAuthorizationRequest;
use roger_proto::error::OAuthErrorCode;
use roger_proto::token;

fn oauth_error(a: &Answer) -> OAuthErrorCode {
    let err = token::classify(&a.to_http()).expect_err("an OAuth error answer");
    err.oauth_code().cloned().unwrap_or_else(|| panic!("not an OAuth error: {err:?}"))
}

fn registration() -> DeviceAuthorizationRequest {
    DeviceAuthorizationRequest::registration(MFP, "MX-1", "SN-1")
}

#[tokio::test]
async fn registration_code_expires_after_600_seconds() {
    let s = TestServer::start().await;
    let admin = s.app_login("admin", "admin-pass").await;
    let code = s.device_authorization(&registration(), None).await.expect("registration code");
    assert_eq!(code.expires_in, 600);

    s.advance(595.0).await;
    let a = s.poll(&code.device_code, MFP, None).await;
    assert_eq!(oauth_error(&a), OAuthErrorCode::AuthorizationPending, "still alive at 595 s");

    s.advance(5.0).await;
    let a = s.poll(&code.device_code, MFP, None).await;
    assert_eq!(a.status, 400);
    assert_eq!(oauth_error(&a), OAuthErrorCode::ExpiredToken, "expired at 600 s");

    // An expired code cannot be approved (or looked up): 404.
    let a = s.decide(&admin.access_token, code.user_code.secret(), true).await;
    assert_eq!(a.status, 404, "{}", String::from_utf8_lossy(&a.body));
    let a = s.send(lookup_code(&s.api, &admin.access_token, &code.user_code).unwrap()).await;
    assert_eq!(a.status, 404);

    // Some minutes later the printer still learns that its code expired.
    s.advance(300.0).await;
    let a = s.poll(&code.device_code, MFP, None).await;
    assert_eq!(oauth_error(&a), OAuthErrorCode::ExpiredToken, "still expired_token after 900 s");
}

#[tokio::test]
async fn registration_code_lifetime_is_a_setting() {
    let s = TestServer::start().await;
    let admin = s.app_login("admin", "admin-pass").await;
    s.settings(serde_json::json!({ "registration_code_secs": 3 })).await;

    let code = s.device_authorization(&registration(), None).await.expect("registration code");
    assert_eq!(code.expires_in, 3);
    let a = s.send(lookup_code(&s.api, &admin.access_token, &code.user_code).unwrap()).await;
    let lookup: CodeLookup = roger_proto::wire::classify_api(&a.to_http()).expect("lookup while alive");
    assert_eq!(lookup.kind, CodeKind::Registration);
    let clock = s.raw("GET", "/sim/clock", &[], Vec::new()).await.json();
    let now =
        time::OffsetDateTime::parse(clock["now"].as_str().unwrap(), &time::format_description::well_known::Rfc3339)
            .unwrap();
    let left = lookup.expires - now;
    assert!(left > time::Duration::ZERO && left <= time::Duration::seconds(3), "expires within 3 s: {left}");

    s.advance(3.0).await;
    let a = s.decide(&admin.access_token, code.user_code.secret(), true).await;
    assert_eq!(a.status, 404, "approving after 3 s is too late");
    let a = s.poll(&code.device_code, MFP, None).await;
    assert_eq!(oauth_error(&a), OAuthErrorCode::ExpiredToken);

    // A fresh code under the same setting can still be approved and redeemed in time.
    let code = s.device_authorization(&registration(), None).await.expect("registration code");
    let a = s.decide(&admin.access_token, code.user_code.secret(), true).await;
    assert_eq!(a.status, 204);
    let tokens = token::classify(&s.poll(&code.device_code, MFP, None).await.to_http()).expect("device tokens");
    assert!(tokens.device_id.is_some());
}
