//! Scenario: refresh-token rotation (R-TOK-2; RFC 6749 §6, RFC 9700 §4.14.2). Every successful refresh returns a
//! new refresh token (and a new access token that works); the printer's `device_id` and `tenant_id` and the scope
//! stay the same; the answers are no-store (R-SEC-1). The same holds for the phone's app tokens, whose `user` stays.

mod common;

use common::{Answer, TestServer, MFP};
use roger_proto::api::{get_device, list_jobs, DeviceConfig};
use roger_proto::error::OAuthErrorCode;
use roger_proto::secret::RefreshToken;
use roger_proto::token::{self, TokenResponse};
use roger_proto::wire::classify_api;

fn tokens(a: &Answer) -> TokenResponse {
    assert_eq!(a.header("cache-control").as_deref(), Some("no-store"));
    assert_eq!(a.header("pragma").as_deref(), Some("no-cache"));
    token::classify(&a.to_http()).unwrap_or_else(|e| panic!("refresh: {e:?}"))
}

#[tokio::test]
async fn every_refresh_rotates_and_the_device_stays() {
    let s = TestServer::start().await;
    let reg = s.register_printer().await;
    let device_id = reg.device_id.clone().expect("device_id");
    let mut seen: Vec<RefreshToken> = vec![reg.refresh_token.clone().expect("refresh token")];
    let mut access = vec![reg.access_token.clone()];

    for round in 0..4 {
        s.advance(1000.0).await;
        let t = tokens(&s.refresh(seen.last().unwrap(), MFP).await);
        let rt = t.refresh_token.clone().expect("a refresh answer carries a new refresh token");
        assert!(!seen.contains(&rt), "round {round}: the refresh token rotated");
        assert!(!access.contains(&t.access_token), "round {round}: a new access token");
        assert_eq!(t.device_id.as_deref(), Some(device_id.as_str()), "round {round}: same device");
        assert_eq!(t.tenant_id.as_deref(), Some("acme"));
        assert_eq!(t.scope.as_deref(), Some("roger.device"));
        assert_eq!(t.expires_in, Some(1200));
        assert!(t.user.is_none());
        let a = s.send(get_device(&s.api, &t.access_token).unwrap()).await;
        let cfg: DeviceConfig = classify_api(&a.to_http()).expect("the new access token works");
        assert_eq!(cfg.device_id, device_id);
        seen.push(rt);
        access.push(t.access_token);
    }
    assert_eq!(s.store().await["devices"].as_object().map(|d| d.len()), Some(1), "no new device");
}

#[tokio::test]
async fn app_refresh_rotates_and_the_user_stays() {
    let s = TestServer::start().await;
    let app = s.app_login("alice", "alice-pass").await;
    let rt1 = app.refresh_token.clone().expect("refresh token");
    let t = tokens(&s.refresh(&rt1, "roger-mobile").await);
    let rt2 = t.refresh_token.clone().unwrap();
    assert_ne!(rt2, rt1);
    assert_eq!(t.user.as_ref().map(|u| u.username.as_str()), Some("alice"));
    assert_eq!(t.scope.as_deref(), Some("roger.app"));
    assert_eq!(s.send(list_jobs(&s.api, &t.access_token).unwrap()).await.status, 200);
    let t = tokens(&s.refresh(&rt2, "roger-mobile").await);
    assert_ne!(t.refresh_token.as_ref(), Some(&rt2));
    assert_eq!(t.user.map(|u| u.id), app.user.map(|u| u.id));
}

#[tokio::test]
async fn a_refresh_token_is_bound_to_its_client() {
    let s = TestServer::start().await;
    let reg = s.register_printer().await;
    let rt = reg.refresh_token.unwrap();
    let a = s.refresh(&rt, "roger-mobile").await;
    let err = token::classify(&a.to_http()).expect_err("another client");
    assert_eq!(err.oauth_code(), Some(&OAuthErrorCode::InvalidGrant));
    // The refusal did not spend or revoke it.
    assert!(token::classify(&s.refresh(&rt, MFP).await.to_http()).is_ok());
}
