//! Scenario: a refresh answer is lost (R-TOK-3; RFC 9700 §4.14.2). The printer refreshes with RT1 and the server
//! rotates to RT2, but the answer never arrives; RT1 stays redeemable until RT2 is first used, so the printer's
//! resend of RT1 gets a fresh pair (RT3) that works, and the never-delivered RT2 is retired. Whoever presents RT2
//! after that is replaying a retired token: `invalid_grant`, and the whole family is revoked (RT3 and its access
//! token die too).

mod common;

use common::{Answer, TestServer, MFP};
use roger_proto::api::get_device;
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
async fn resend_after_a_lost_answer_works_and_the_lost_successor_is_retired() {
    let s = TestServer::start().await;
    let reg = s.register_printer().await;
    let rt1 = reg.refresh_token.clone().unwrap();

    s.advance(1100.0).await;
    let lost = tokens(&s.refresh(&rt1, MFP).await); // the answer with RT2 never reaches the printer
    let rt2 = lost.refresh_token.clone().unwrap();

    s.advance(10.0).await;
    let resent = tokens(&s.refresh(&rt1, MFP).await);
    let rt3 = resent.refresh_token.clone().unwrap();
    assert_ne!(rt3, rt2);
    assert_ne!(rt3, rt1);
    assert_eq!(resent.device_id, reg.device_id, "same device");
    assert_eq!(s.send(get_device(&s.api, &resent.access_token).unwrap()).await.status, 200);

    // RT3 is the printer's token now; a normal refresh with it works.
    s.advance(1100.0).await;
    let next = tokens(&s.refresh(&rt3, MFP).await);
    let rt4 = next.refresh_token.clone().unwrap();
    assert_eq!(s.send(get_device(&s.api, &next.access_token).unwrap()).await.status, 200);

    // RT2 was retired by the resend; presenting it is reuse: invalid_grant, and the family is revoked.
    let a = s.refresh(&rt2, MFP).await;
    assert_eq!(a.status, 400);
    assert_eq!(oauth_error(&a), OAuthErrorCode::InvalidGrant);
    for (name, rt) in [("RT4", &rt4), ("RT3", &rt3), ("RT1", &rt1)] {
        assert_eq!(oauth_error(&s.refresh(rt, MFP).await), OAuthErrorCode::InvalidGrant, "{name} is dead");
    }
    let a = s.send(get_device(&s.api, &next.access_token).unwrap()).await;
    assert_eq!(a.status, 401, "the family's access tokens are revoked too");
    assert!(a.header("www-authenticate").unwrap_or_default().contains("invalid_token"));
}

#[tokio::test]
async fn reusing_the_retired_successor_right_away_revokes_the_family() {
    let s = TestServer::start().await;
    let reg = s.register_printer().await;
    let rt1 = reg.refresh_token.clone().unwrap();
    let rt2 = tokens(&s.refresh(&rt1, MFP).await).refresh_token.unwrap(); // lost
    let resent = tokens(&s.refresh(&rt1, MFP).await);
    let rt3 = resent.refresh_token.clone().unwrap();

    let a = s.refresh(&rt2, MFP).await;
    assert_eq!(oauth_error(&a), OAuthErrorCode::InvalidGrant);
    assert_eq!(oauth_error(&s.refresh(&rt3, MFP).await), OAuthErrorCode::InvalidGrant, "RT3 is dead");
    let a = s.send(get_device(&s.api, &resent.access_token).unwrap()).await;
    assert_eq!(a.status, 401, "RT3's access token is revoked");
}
