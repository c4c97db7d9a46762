//! Scenario: PIN login from idle (PROTOCOL.md §8 step 2 "From idle the same request is the PIN login"; RFC 6749
//! §4.3; §7 device-bound client authentication; R-PWD-2). With no session open, the device-bound password grant
//! with scope `roger.release roger.print roger.scan` and alice's password (or PIN) yields one user token with all
//! three scopes; a wrong PIN is `invalid_grant` (the same answer as an unknown user); without the device bearer the
//! request is `401 invalid_client` with the `invalid_token` challenge.

mod common;

use common::{Answer, TestServer, MFP};
use roger_proto::api::{get_print_features, list_jobs, list_scan_profiles, JobList};
use roger_proto::error::OAuthErrorCode;
use roger_proto::secret::{AccessToken, Password};
use roger_proto::token::{self, scope, TokenRequest};
use roger_proto::wire::classify_api;

fn pin_login(user: &str, secret: &str) -> TokenRequest {
    TokenRequest::Password {
        username: user.into(),
        password: Password::new(secret),
        scope: scope::PIN_LOGIN.into(),
        client_id: MFP.into(),
    }
}

async fn grant(s: &TestServer, req: TokenRequest, device: Option<&AccessToken>) -> Answer {
    s.send(req.to_http(&s.url("/oauth/token"), device).unwrap()).await
}

fn oauth_error(a: &Answer) -> OAuthErrorCode {
    let err = token::classify(&a.to_http()).expect_err("an OAuth error answer");
    err.oauth_code().cloned().unwrap_or_else(|| panic!("not an OAuth error: {err:?}"))
}

#[tokio::test]
async fn pin_login_from_idle() {
    let s = TestServer::start().await;
    let device = s.register_printer().await;

    let a = grant(&s, pin_login("alice", "alice-pass"), Some(&device.access_token)).await;
    assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.body));
    let t = token::classify(&a.to_http()).expect("user token");
    assert_eq!(t.scope.as_deref(), Some("roger.release roger.print roger.scan"));
    assert!(t.refresh_token.is_none());
    assert_eq!(t.user.as_ref().map(|u| u.username.as_str()), Some("alice"));
    assert_eq!(t.tenant_id.as_deref(), Some("acme"));

    // One token for both steps: release endpoints and print/scan endpoints.
    let a = s.send(list_jobs(&s.api, &t.access_token).unwrap()).await;
    let jobs: JobList = classify_api(&a.to_http()).expect("jobs");
    assert_eq!(jobs.jobs.len(), 1);
    assert_eq!(s.send(get_print_features(&s.api, &t.access_token).unwrap()).await.status, 200);
    assert_eq!(s.send(list_scan_profiles(&s.api, &t.access_token).unwrap()).await.status, 200);

    // The PIN works as well as the password (§8: "password matches the PIN or the password").
    let a = grant(&s, pin_login("bob", "5678"), Some(&device.access_token)).await;
    let bob = token::classify(&a.to_http()).expect("bob by PIN");
    assert_eq!(bob.user.map(|u| u.username).as_deref(), Some("bob"));
}

#[tokio::test]
async fn wrong_pin_and_missing_device_bearer() {
    let s = TestServer::start().await;
    let device = s.register_printer().await;

    let wrong = grant(&s, pin_login("alice", "0000"), Some(&device.access_token)).await;
    assert_eq!(wrong.status, 400);
    assert_eq!(oauth_error(&wrong), OAuthErrorCode::InvalidGrant);
    let unknown = grant(&s, pin_login("mallory", "0000"), Some(&device.access_token)).await;
    assert_eq!(unknown.status, 400);
    assert_eq!(unknown.body, wrong.body, "identical failures (R-PWD-2)");

    // Without the device bearer: 401 invalid_client, whatever the credentials.
    let a = grant(&s, pin_login("alice", "alice-pass"), None).await;
    assert_eq!(a.status, 401);
    assert_eq!(oauth_error(&a), OAuthErrorCode::InvalidClient);
    let challenge = a.header("www-authenticate").expect("WWW-Authenticate");
    assert!(challenge.contains("error=\"invalid_token\""), "{challenge}");
    // A bearer that is not a device token is no device-bound authentication either.
    let alice_app = s.app_login("alice", "alice-pass").await;
    let a = grant(&s, pin_login("alice", "alice-pass"), Some(&alice_app.access_token)).await;
    assert_eq!(a.status, 401);
    assert_eq!(oauth_error(&a), OAuthErrorCode::InvalidClient);

    // A single failure does not lock alice out: the right password still works.
    let a = grant(&s, pin_login("alice", "1234"), Some(&device.access_token)).await;
    assert!(token::classify(&a.to_http()).is_ok(), "{}", String::from_utf8_lossy(&a.body));
}
