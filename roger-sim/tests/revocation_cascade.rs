//! Scenario: revocation (RFC 7009; PROTOCOL.md §6 "Revocation", §7, §8 "End"; docs/protocol.md §3.8). Revoking a
//! refresh token takes its access tokens with it (the access token then fails at the API with `401
//! invalid_token`); revoking an unknown token is still `200`; the printer revokes a user token it holds with
//! device-bound authentication (logout), after which that token fails at `GET /api/v1/jobs`. Another printer cannot
//! revoke it (docs/protocol.md C3: `200` without effect), and a bad device bearer is `401 invalid_client`.

mod common;

use common::{Answer, TestServer, MFP};
use roger_proto::api::{get_device, list_jobs};
use roger_proto::error::OAuthErrorCode;
use roger_proto::revocation::{self, RevocationRequest, TokenTypeHint};
use roger_proto::secret::{AccessToken, Password};
use roger_proto::token::{self, scope, TokenRequest};

async fn revoke(s: &TestServer, req: &RevocationRequest, device: Option<&AccessToken>) -> Answer {
    s.send(req.to_http(&s.url("/oauth/revoke"), device).unwrap()).await
}

fn assert_invalid_token(a: &Answer) {
    assert_eq!(a.status, 401, "{}", String::from_utf8_lossy(&a.body));
    let challenge = a.header("www-authenticate").expect("WWW-Authenticate");
    assert!(challenge.contains("error=\"invalid_token\""), "{challenge}");
}

#[tokio::test]
async fn revoking_the_refresh_token_takes_its_access_tokens() {
    let s = TestServer::start().await;
    let reg = s.register_printer().await;
    let rt1 = reg.refresh_token.clone().unwrap();
    // A refresh first, so the family has two access tokens.
    let t2 = token::classify(&s.refresh(&rt1, MFP).await.to_http()).expect("refresh");
    let rt2 = t2.refresh_token.clone().unwrap();
    for at in [&reg.access_token, &t2.access_token] {
        assert_eq!(s.send(get_device(&s.api, at).unwrap()).await.status, 200);
    }

    let a = revoke(&s, &RevocationRequest::refresh(&rt2, MFP), None).await;
    assert_eq!(a.status, 200);
    assert!(revocation::classify(&a.to_http()).is_ok());
    assert_eq!(a.header("cache-control").as_deref(), Some("no-store"));

    for at in [&reg.access_token, &t2.access_token] {
        assert_invalid_token(&s.send(get_device(&s.api, at).unwrap()).await);
    }
    for rt in [&rt2, &rt1] {
        let err = token::classify(&s.refresh(rt, MFP).await.to_http()).expect_err("revoked");
        assert_eq!(err.oauth_code(), Some(&OAuthErrorCode::InvalidGrant));
    }
    // Revoking again is harmless.
    assert_eq!(revoke(&s, &RevocationRequest::refresh(&rt2, MFP), None).await.status, 200);
}

#[tokio::test]
async fn revoking_an_unknown_token_is_200() {
    let s = TestServer::start().await;
    let unknown = AccessToken::new("rat_this-token-was-never-issued");
    for hint in [Some(TokenTypeHint::AccessToken), Some(TokenTypeHint::RefreshToken), None] {
        let req = RevocationRequest { token: unknown.clone(), token_type_hint: hint, client_id: MFP.into() };
        let a = revoke(&s, &req, None).await;
        assert_eq!(a.status, 200, "hint {hint:?}: {}", String::from_utf8_lossy(&a.body));
    }
    let req = RevocationRequest::access(&unknown, "roger-mobile");
    assert_eq!(revoke(&s, &req, None).await.status, 200);
}

#[tokio::test]
async fn the_printer_revokes_user_tokens_with_device_bound_authentication() {
    let s = TestServer::start().await;
    let device = s.register_printer().await;
    let step1 = s.qr_session(&device.access_token, "alice", "alice-pass").await;
    let step2 = token::classify(
        &s.send(
            TokenRequest::Password {
                username: "alice".into(),
                password: Password::new("1234"),
                scope: scope::STEP2.into(),
                client_id: MFP.into(),
            }
            .to_http(&s.url("/oauth/token"), Some(&device.access_token))
            .unwrap(),
        )
        .await
        .to_http(),
    )
    .expect("step-2 token");
    assert_eq!(s.send(list_jobs(&s.api, &step1.access_token).unwrap()).await.status, 200);

    // A bad device bearer: 401 invalid_client, nothing revoked.
    let bogus = AccessToken::new("rat_not-a-device-token");
    let a = revoke(&s, &RevocationRequest::access(&step1.access_token, MFP), Some(&bogus)).await;
    assert_eq!(a.status, 401);
    let err = revocation::classify(&a.to_http()).expect_err("refused");
    assert_eq!(err.oauth_code(), Some(&OAuthErrorCode::InvalidClient));
    assert_eq!(s.send(list_jobs(&s.api, &step1.access_token).unwrap()).await.status, 200);

    // Another printer of the same vendor cannot revoke this printer's user token (docs/protocol.md C3).
    let other = s.register_printer().await;
    assert_ne!(other.device_id, device.device_id);
    let a = revoke(&s, &RevocationRequest::access(&step1.access_token, MFP), Some(&other.access_token)).await;
    assert_eq!(a.status, 200, "no oracle");
    assert_eq!(s.send(list_jobs(&s.api, &step1.access_token).unwrap()).await.status, 200, "not revoked");

    // Logout: the printer revokes step 2, then step 1, with its device token.
    for t in [&step2.access_token, &step1.access_token] {
        let a = revoke(&s, &RevocationRequest::access(t, MFP), Some(&device.access_token)).await;
        assert_eq!(a.status, 200);
    }
    assert_invalid_token(&s.send(list_jobs(&s.api, &step1.access_token).unwrap()).await);
    assert_invalid_token(&s.send(roger_proto::api::get_print_features(&s.api, &step2.access_token).unwrap()).await);
    // The device token itself is untouched.
    assert_eq!(s.send(get_device(&s.api, &device.access_token).unwrap()).await.status, 200);
}
