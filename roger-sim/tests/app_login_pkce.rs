//! Scenario: the phone's login (PROTOCOL.md §4, docs/protocol.md §3.4, §3.5.1; RFC 7636 PKCE S256, RFC 6749
//! §4.1.2, §10.12 CSRF, §10.13 clickjacking). The login page forbids framing (`Content-Security-Policy:
//! frame-ancestors 'none'`) and binds its CSRF token to a `SameSite=Strict` cookie; a POST without that cookie is
//! `403` and a wrong password is the form again (200, docs/protocol.md §3.4), neither with a redirect. The code redeems only with the right PKCE
//! verifier (`invalid_grant` otherwise) and only once: a second redemption fails and revokes what the first minted.

mod common;

use common::{Answer, TestServer};
use roger_proto::api::list_jobs;
use roger_proto::authorize::{parse_redirect, AuthorizationRequest, LoginForm, MOBILE_REDIRECT_URI};
use roger_proto::error::OAuthErrorCode;
use roger_proto::secret::{AuthorizationCode, PkceVerifier};
use roger_proto::token::{self, TokenRequest};

const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";

fn oauth_error(a: &Answer) -> OAuthErrorCode {
    let err = token::classify(&a.to_http()).expect_err("an OAuth error answer");
    err.oauth_code().cloned().unwrap_or_else(|| panic!("not an OAuth error: {err:?}"))
}

fn code_grant(code: &AuthorizationCode, verifier: &str) -> TokenRequest {
    TokenRequest::AuthorizationCode {
        code: code.clone(),
        redirect_uri: MOBILE_REDIRECT_URI.into(),
        code_verifier: PkceVerifier::new(verifier),
        client_id: "roger-mobile".into(),
    }
}

/// Logs alice in through the form and returns the authorization code.
async fn alice_code(s: &TestServer) -> AuthorizationCode {
    let (location, verifier) = s.app_login_location("alice", "alice-pass").await.expect("302");
    assert_eq!(verifier.secret(), VERIFIER);
    parse_redirect(&location, MOBILE_REDIRECT_URI, "st-1").expect("code and state in the redirect")
}

#[tokio::test]
async fn login_form_is_protected_against_framing_and_csrf() {
    let s = TestServer::start().await;
    let request =
        AuthorizationRequest::for_app("roger-mobile", MOBILE_REDIRECT_URI, &PkceVerifier::new(VERIFIER), "st-1");
    let form = s.http.get(request.to_url(&s.url("/oauth/authorize"))).send().await.unwrap();
    assert_eq!(form.status().as_u16(), 200);
    let h = form.headers().clone();
    let get = |name: &str| h.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    assert!(get("content-security-policy").contains("frame-ancestors 'none'"), "{}", get("content-security-policy"));
    assert_eq!(get("x-frame-options"), "DENY");
    assert_eq!(get("cache-control"), "no-store", "the page carries a CSRF token (R-SEC-1)");
    let cookie = get("set-cookie");
    assert!(cookie.contains("SameSite=Strict"), "{cookie}");
    assert!(cookie.contains("HttpOnly"), "{cookie}");
    let html = form.text().await.unwrap();
    let csrf = html
        .split("name=\"csrf_token\" value=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .expect("csrf token in the form")
        .to_owned();

    let body = |csrf: &str, password: &str| {
        LoginForm {
            request: request.clone(),
            tenant: "acme".into(),
            username: "alice".into(),
            password: password.into(),
            csrf: csrf.into(),
        }
        .to_form()
    };
    let post = |body: Vec<u8>, cookie: Option<&str>| {
        let mut r = s
            .http
            .post(s.url("/oauth/authorize"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body);
        if let Some(c) = cookie {
            r = r.header("cookie", c.to_owned());
        }
        r.send()
    };

    // The right password but no cookie: 403, no redirect, no code.
    let r = post(body(&csrf, "alice-pass"), None).await.unwrap();
    assert_eq!(r.status().as_u16(), 403);
    assert!(r.headers().get("location").is_none());
    // A token that is not bound to the cookie: 403 as well.
    let pair = cookie.split(';').next().unwrap().to_owned();
    let r = post(body(&"0".repeat(64), "alice-pass"), Some(&pair)).await.unwrap();
    assert_eq!(r.status().as_u16(), 403);
    assert!(r.headers().get("location").is_none());

    // Cookie and token, wrong password: the form again with a message, no redirect.
    let r = post(body(&csrf, "wrong-pass"), Some(&pair)).await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert!(r.headers().get("location").is_none());
    assert!(r.text().await.unwrap().contains("name=\"csrf_token\""), "the form again");
    assert_eq!(s.app_login_location("alice", "wrong-pass").await.unwrap_err(), 200);

    // Cookie, token and the right password: 302 to the app with code and state.
    let r = post(body(&csrf, "alice-pass"), Some(&pair)).await.unwrap();
    assert_eq!(r.status().as_u16(), 302);
    let location = r.headers().get("location").unwrap().to_str().unwrap().to_owned();
    assert!(location.starts_with("roger://callback?"), "{location}");
    parse_redirect(&location, MOBILE_REDIRECT_URI, "st-1").expect("code and state");
}

#[tokio::test]
async fn the_code_needs_the_pkce_verifier() {
    let s = TestServer::start().await;
    let code = alice_code(&s).await;
    let other = "M25iVXpKU3puUjFaYWg3T1NDTDQtcW1ROUY5YXlwalNoc0hhakxifmZHag";
    let a = s.send(code_grant(&code, other).to_http(&s.url("/oauth/token"), None).unwrap()).await;
    assert_eq!(a.status, 400);
    assert_eq!(oauth_error(&a), OAuthErrorCode::InvalidGrant);

    // With the right verifier, a fresh login's code redeems.
    let code = alice_code(&s).await;
    let a = s.send(code_grant(&code, VERIFIER).to_http(&s.url("/oauth/token"), None).unwrap()).await;
    let t = token::classify(&a.to_http()).expect("app tokens");
    assert_eq!(t.scope.as_deref(), Some("roger.app"));
    assert!(t.refresh_token.is_some());
    assert_eq!(t.user.map(|u| u.username).as_deref(), Some("alice"));
}

#[tokio::test]
async fn a_second_redemption_fails_and_revokes_the_first() {
    let s = TestServer::start().await;
    let code = alice_code(&s).await;
    let redeem = || async { s.send(code_grant(&code, VERIFIER).to_http(&s.url("/oauth/token"), None).unwrap()).await };
    let first = token::classify(&redeem().await.to_http()).expect("first redemption");
    assert_eq!(s.send(list_jobs(&s.api, &first.access_token).unwrap()).await.status, 200);

    let a = redeem().await;
    assert_eq!(a.status, 400);
    assert_eq!(oauth_error(&a), OAuthErrorCode::InvalidGrant);

    // RFC 6749 §4.1.2: the tokens of the first redemption are revoked.
    let a = s.send(list_jobs(&s.api, &first.access_token).unwrap()).await;
    assert_eq!(a.status, 401);
    assert!(a.header("www-authenticate").unwrap_or_default().contains("invalid_token"));
    let a = s.refresh(first.refresh_token.as_ref().unwrap(), "roger-mobile").await;
    assert_eq!(oauth_error(&a), OAuthErrorCode::InvalidGrant);
}
