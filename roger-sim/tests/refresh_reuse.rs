//! Scenario: refresh-token reuse detection (RFC 9700 §4.14.2, R-TOK-3). RT1 → RT2, then RT2 → RT3: once RT2 (RT1's
//! successor) has been used, RT1 is retired for good. Presenting RT1 again is a replay: `invalid_grant`, and the
//! whole family is revoked, so the legitimate holder's RT3 and its access token are dead too (the theft becomes
//! visible because both parties are logged out).

mod common;

use common::{Answer, TestServer, MFP};
use roger_proto::api::{get_device, list_jobs};
use roger_proto::error::OAuthErrorCode;
use roger_proto::token::{self, TokenResponse};

fn oauth_error(a: &Answer) -> OAuthErrorCode {
    let err = token::classify(&a.to_http()).expect_err("an OAuth error answer");
    err.oauth_code().cloned().unwrap_or_else(|| panic!("not an OAuth error: {err:?}"))
}

fn tokens(a: &Answer) -> TokenResponse {
    token::classify(&a.to_http()).unwrap_or_else(|e| panic!("refresh: {e:?}"))
}

#[tokio::test]
async fn replaying_a_retired_refresh_token_revokes_the_family() {
    let s = TestServer::start().await;
    let reg = s.register_printer().await;
    let rt1 = reg.refresh_token.clone().unwrap();

    s.advance(600.0).await;
    let t2 = tokens(&s.refresh(&rt1, MFP).await);
    let rt2 = t2.refresh_token.clone().unwrap();
    s.advance(600.0).await;
    let t3 = tokens(&s.refresh(&rt2, MFP).await);
    let rt3 = t3.refresh_token.clone().unwrap();
    assert_eq!(s.send(get_device(&s.api, &t3.access_token).unwrap()).await.status, 200);

    // RT1's successor was used: RT1 is no longer redeemable, and its replay revokes the family.
    s.advance(5.0).await;
    let a = s.refresh(&rt1, MFP).await;
    assert_eq!(a.status, 400);
    assert_eq!(oauth_error(&a), OAuthErrorCode::InvalidGrant);

    assert_eq!(oauth_error(&s.refresh(&rt3, MFP).await), OAuthErrorCode::InvalidGrant, "RT3 is dead");
    assert_eq!(oauth_error(&s.refresh(&rt2, MFP).await), OAuthErrorCode::InvalidGrant, "RT2 is dead");
    for (name, at) in [("RT3's", &t3.access_token), ("RT2's", &t2.access_token)] {
        let a = s.send(get_device(&s.api, at).unwrap()).await;
        assert_eq!(a.status, 401, "{name} access token is revoked");
    }
}

#[tokio::test]
async fn the_same_holds_for_app_tokens() {
    let s = TestServer::start().await;
    let app = s.app_login("alice", "alice-pass").await;
    let rt1 = app.refresh_token.clone().unwrap();
    let rt2 = tokens(&s.refresh(&rt1, "roger-mobile").await).refresh_token.unwrap();
    let t3 = tokens(&s.refresh(&rt2, "roger-mobile").await);
    let a = s.refresh(&rt1, "roger-mobile").await;
    assert_eq!(oauth_error(&a), OAuthErrorCode::InvalidGrant);
    let rt3 = t3.refresh_token.clone().unwrap();
    assert_eq!(oauth_error(&s.refresh(&rt3, "roger-mobile").await), OAuthErrorCode::InvalidGrant);
    assert_eq!(s.send(list_jobs(&s.api, &t3.access_token).unwrap()).await.status, 401);
}
