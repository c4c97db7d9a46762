//! Scenario: the 90-day sliding refresh-token lifetime (R-TOK-4; PROTOCOL.md §3, §6; RFC 6749 §6, §10.4). Each
//! successful refresh moves the expiry to now + 90 days, so a printer that refreshes every 89 days stays connected
//! indefinitely; a refresh token left unused for 90 days + 1 s is dead (`invalid_grant`).

mod common;

use common::{Answer, TestServer, MFP};
use roger_proto::api::get_device;
use roger_proto::error::OAuthErrorCode;
use roger_proto::secret::RefreshToken;
use roger_proto::token;

const DAY: f64 = 86_400.0;

fn oauth_error(a: &Answer) -> OAuthErrorCode {
    let err = token::classify(&a.to_http()).expect_err("an OAuth error answer");
    err.oauth_code().cloned().unwrap_or_else(|| panic!("not an OAuth error: {err:?}"))
}

/// Refreshes and checks that the new access token works; returns the new refresh token.
async fn refresh_ok(s: &TestServer, rt: &RefreshToken) -> RefreshToken {
    let a = s.refresh(rt, MFP).await;
    let t = token::classify(&a.to_http()).unwrap_or_else(|e| panic!("refresh: {e:?}"));
    assert_eq!(s.send(get_device(&s.api, &t.access_token).unwrap()).await.status, 200);
    t.refresh_token.expect("rotated")
}

#[tokio::test]
async fn refreshing_within_90_days_slides_the_expiry() {
    let s = TestServer::start().await;
    let mut rt = s.register_printer().await.refresh_token.unwrap();
    // Three refreshes 89 days apart: 267 days in all, far beyond one 90-day lifetime.
    for _ in 0..3 {
        s.advance(89.0 * DAY).await;
        rt = refresh_ok(&s, &rt).await;
    }
    // Just under 90 days unused is still fine.
    s.advance(90.0 * DAY - 10.0).await;
    refresh_ok(&s, &rt).await;
}

#[tokio::test]
async fn a_refresh_token_unused_for_90_days_is_dead() {
    let s = TestServer::start().await;
    let reg = s.register_printer().await;
    let rt = refresh_ok(&s, reg.refresh_token.as_ref().unwrap()).await;

    s.advance(90.0 * DAY + 1.0).await;
    let a = s.refresh(&rt, MFP).await;
    assert_eq!(a.status, 400);
    assert_eq!(oauth_error(&a), OAuthErrorCode::InvalidGrant);
    // Dead for good: it does not come back, and the printer must register anew (a new device_id).
    s.advance(1.0).await;
    assert_eq!(oauth_error(&s.refresh(&rt, MFP).await), OAuthErrorCode::InvalidGrant);
    let again = s.register_printer().await;
    assert_ne!(again.device_id, reg.device_id, "reconnecting is a new registration");
}
