//! Scenario: a standard OAuth 2.0 client interoperates (RFC 6749, RFC 7636, RFC 7009, RFC 8628; PROTOCOL.md §4–6).
//! The `oauth2` crate's own client, unmodified, talks to the server over TLS (its revocation requires `https`, RFC
//! 7009 §2): the phone's authorization code with PKCE S256 (the login form filled in as a browser would), the device
//! authorization grant for a printer registration (with the admin approving between two polls), refresh with
//! rotation, and revocation of refresh and access tokens.

mod common;

use std::cell::Cell;
use std::time::Duration;

use common::TestServer;
use oauth2::basic::{
    BasicErrorResponse, BasicRevocationErrorResponse, BasicTokenIntrospectionResponse, BasicTokenType,
};
use oauth2::{
    AuthUrl, AuthorizationCode, Client, ClientId, CsrfToken, DeviceAuthorizationUrl, EndpointNotSet, EndpointSet,
    ExtraTokenFields, PkceCodeChallenge, RedirectUrl, RequestTokenError, RevocationUrl, Scope, StandardRevocableToken,
    StandardTokenResponse, TokenResponse, TokenUrl,
};
use roger_sim::server::ServerConfig;
use serde::{Deserialize, Serialize};

/// Roger's members of a token answer (docs/protocol.md §3.5), read through the crate's extension point.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct RogerFields {
    #[serde(default)]
    device_id: Option<String>,
    #[serde(default)]
    tenant_id: Option<String>,
    #[serde(default)]
    user: Option<serde_json::Value>,
}

impl ExtraTokenFields for RogerFields {}

type RogerToken = StandardTokenResponse<RogerFields, BasicTokenType>;

/// A client with every endpoint this test uses set.
type RogerClient = Client<
    BasicErrorResponse,
    RogerToken,
    BasicTokenIntrospectionResponse,
    StandardRevocableToken,
    BasicRevocationErrorResponse,
    EndpointSet,
    EndpointSet,
    EndpointNotSet,
    EndpointSet,
    EndpointSet,
>;

fn client(api: &str, client_id: &str) -> RogerClient {
    Client::new(ClientId::new(client_id.into()))
        .set_auth_uri(AuthUrl::new(format!("{api}/oauth/authorize")).unwrap())
        .set_device_authorization_url(DeviceAuthorizationUrl::new(format!("{api}/oauth/device_authorization")).unwrap())
        .set_revocation_url(RevocationUrl::new(format!("{api}/oauth/revoke")).unwrap())
        .set_token_uri(TokenUrl::new(format!("{api}/oauth/token")).unwrap())
}

/// A server on TLS (the crate insists on `https` for revocation) with the harness's client trusting its CA.
async fn tls_server(test: &str) -> TestServer {
    let dir =
        std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("oauth2-{test}-tls-{}", std::process::id()));
    let config =
        ServerConfig { plain_http: false, seed: Some(11), tls_dir: Some(dir.clone()), ..ServerConfig::default() };
    let mut s = TestServer::start_with(config).await;
    assert!(s.api.starts_with("https://"), "{}", s.api);
    let ca = s.server.info.ca.clone().expect("a CA for the TLS server");
    let pem = std::fs::read(&ca).expect("CA file");
    // The server holds its certificate in memory now; the files are not needed any more.
    let _ = std::fs::remove_dir_all(&dir);
    s.http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).expect("CA PEM"))
        .build()
        .expect("TLS client");
    s
}

/// The value of `<input … name="NAME" value="…">` in the login form.
fn hidden_inputs(html: &str) -> Vec<(String, String)> {
    html.split("<input ")
        .skip(1)
        .filter(|tag| tag.contains("type=\"hidden\""))
        .filter_map(|tag| {
            let name = tag.split("name=\"").nth(1)?.split('"').next()?;
            let value = tag.split("value=\"").nth(1)?.split('"').next()?;
            let value = value.replace("&quot;", "\"").replace("&#39;", "'").replace("&lt;", "<").replace("&gt;", ">");
            Some((name.to_owned(), value.replace("&amp;", "&")))
        })
        .collect()
}

/// Opens the authorization URL the crate built, fills in the form as a browser would, and returns the redirect.
async fn sign_in(s: &TestServer, authorize_url: &str, user: &str, password: &str) -> url::Url {
    let form = s.http.get(authorize_url).send().await.expect("GET the login form");
    assert_eq!(form.status().as_u16(), 200, "the crate's authorization URL is accepted");
    let cookie = form
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .and_then(|c| c.split(';').next())
        .expect("CSRF cookie")
        .to_owned();
    let html = form.text().await.expect("HTML");
    let mut fields = hidden_inputs(&html);
    assert!(fields.iter().any(|(k, _)| k == "csrf_token"), "the form carries a CSRF token");
    for (k, v) in [("tenant", "acme"), ("username", user), ("password", password)] {
        fields.push((k.into(), v.into()));
    }
    let body = form_urlencoded::Serializer::new(String::new()).extend_pairs(&fields).finish();
    let resp = s
        .http
        .post(s.url("/oauth/authorize"))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("cookie", cookie)
        .body(body)
        .send()
        .await
        .expect("POST the login form");
    assert_eq!(resp.status().as_u16(), 302, "a successful sign-in redirects to the app");
    let location = resp.headers().get("location").and_then(|v| v.to_str().ok()).expect("Location");
    url::Url::parse(location).expect("a URL")
}

fn query(url: &url::Url, name: &str) -> Option<String> {
    url.query_pairs().find(|(k, _)| k == name).map(|(_, v)| v.into_owned())
}

async fn api_status(s: &TestServer, path: &str, token: &str) -> u16 {
    s.http.get(s.url(path)).bearer_auth(token).send().await.expect("API call").status().as_u16()
}

fn oauth_error<RE: std::error::Error + 'static>(e: RequestTokenError<RE, BasicErrorResponse>) -> String {
    match e {
        RequestTokenError::ServerResponse(r) => r.error().as_ref().to_owned(),
        other => panic!("expected an RFC 6749 §5.2 error answer, got {other:?}"),
    }
}

#[tokio::test]
async fn phone_login_with_pkce_refresh_and_revocation() {
    let s = tls_server("phone").await;
    let phone = client(&s.api, "roger-mobile")
        .set_redirect_uri(RedirectUrl::new("roger://callback".into()).expect("redirect URI"));

    // Authorization code + PKCE S256 (RFC 7636), built by the crate.
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let (url, state) = phone
        .authorize_url(CsrfToken::new_random)
        .add_scope(Scope::new("roger.app".into()))
        .set_pkce_challenge(challenge)
        .url();
    let back = sign_in(&s, url.as_str(), "alice", "alice-pass").await;
    assert_eq!(format!("{}://{}", back.scheme(), back.host_str().unwrap_or_default()), "roger://callback");
    assert_eq!(query(&back, "state").as_deref(), Some(state.secret().as_str()), "state round-trips (RFC 6749 §10.12)");
    let code = query(&back, "code").expect("code in the redirect");

    // A wrong verifier is refused (RFC 7636 §4.6) …
    let wrong = phone
        .exchange_code(AuthorizationCode::new(code.clone()))
        .set_pkce_verifier(oauth2::PkceCodeVerifier::new("x".repeat(43)))
        .request_async(&s.http)
        .await
        .expect_err("a wrong verifier");
    assert_eq!(oauth_error(wrong), "invalid_grant");
    // … the right one is not (the failed attempt did not burn the code).
    let token = phone
        .exchange_code(AuthorizationCode::new(code.clone()))
        .set_pkce_verifier(verifier)
        .request_async(&s.http)
        .await
        .expect("the crate exchanges the code");
    assert_eq!(*token.token_type(), BasicTokenType::Bearer);
    assert_eq!(
        token.scopes().map(|v| v.iter().map(|s| s.to_string()).collect::<Vec<_>>()),
        Some(vec!["roger.app".into()])
    );
    assert_eq!(token.expires_in(), Some(Duration::from_secs(1200)));
    assert_eq!(token.extra_fields().tenant_id.as_deref(), Some("acme"));
    assert_eq!(token.extra_fields().user.as_ref().and_then(|u| u["username"].as_str()), Some("alice"));
    let access = token.access_token().secret().clone();
    let rt1 = token.refresh_token().expect("a refresh token for the app").clone();
    assert_eq!(api_status(&s, "/api/v1/jobs", &access).await, 200, "the token works on the API");

    // Refresh with rotation (R-TOK-2), as the crate sends it.
    let refreshed = phone.exchange_refresh_token(&rt1).request_async(&s.http).await.expect("refresh");
    let rt2 = refreshed.refresh_token().expect("rotated refresh token").clone();
    assert_ne!(rt1.secret(), rt2.secret(), "R-TOK-2: a new refresh token");
    let access2 = refreshed.access_token().secret().clone();
    assert_eq!(api_status(&s, "/api/v1/jobs", &access2).await, 200);

    // Revocation (RFC 7009): the access token, then the refresh token with its family.
    phone
        .revoke_token(StandardRevocableToken::AccessToken(refreshed.access_token().clone()))
        .expect("revocation request")
        .request_async(&s.http)
        .await
        .expect("revoke the access token");
    assert_eq!(api_status(&s, "/api/v1/jobs", &access2).await, 401, "a revoked access token is refused");
    phone
        .revoke_token(StandardRevocableToken::RefreshToken(rt2.clone()))
        .expect("revocation request")
        .request_async(&s.http)
        .await
        .expect("revoke the refresh token");
    let e = phone.exchange_refresh_token(&rt2).request_async(&s.http).await.expect_err("revoked");
    assert_eq!(oauth_error(e), "invalid_grant");
    assert_eq!(api_status(&s, "/api/v1/jobs", &access).await, 401, "the family's access tokens went with it");
    // Unknown tokens are fine too (RFC 7009 §2.2).
    phone
        .revoke_token(StandardRevocableToken::RefreshToken(oauth2::RefreshToken::new("nope".into())))
        .expect("revocation request")
        .request_async(&s.http)
        .await
        .expect("revoking an unknown token answers 200");
    // The code is one-use, and its second use is an error the crate understands.
    let e = phone
        .exchange_code(AuthorizationCode::new(code))
        .set_pkce_verifier(oauth2::PkceCodeVerifier::new("y".repeat(43)))
        .request_async(&s.http)
        .await
        .expect_err("a used code");
    assert_eq!(oauth_error(e), "invalid_grant");
}

#[tokio::test]
async fn printer_registration_with_the_device_grant_then_refresh_and_revoke() {
    let s = tls_server("printer").await;
    let admin = s.app_login("admin", "admin-pass").await.access_token;
    let mfp = client(&s.api, common::MFP);

    // RFC 8628 §3.1 with Roger's device description as extra parameters.
    let details: oauth2::StandardDeviceAuthorizationResponse = mfp
        .exchange_device_code()
        .add_scope(Scope::new("roger.device".into()))
        .add_extra_param("device_model", "MX-9")
        .add_extra_param("device_serial", "SN-9")
        .request_async(&s.http)
        .await
        .expect("device authorization");
    assert_eq!(details.interval(), Duration::from_secs(5));
    assert_eq!(details.expires_in(), Duration::from_secs(600));
    let user_code = details.user_code().secret().clone();
    let complete = details.verification_uri_complete().expect("verification_uri_complete (R-QR-1)");
    assert_eq!(complete.secret(), &format!("{}/device?user_code={user_code}", s.api));

    // The crate polls at once (authorization_pending), then sleeps the interval: the sleep approves the code as the
    // admin and moves the virtual clock by the interval, so the next poll is on time and succeeds.
    let (polls, approved) = (Cell::new(0u32), Cell::new(false));
    let sleep = |d: Duration| {
        polls.set(polls.get() + 1);
        let first = !approved.replace(true);
        let (s, admin, user_code) = (&s, &admin, &user_code);
        async move {
            if first {
                let a = s.decide(admin, user_code, true).await;
                assert_eq!(a.status, 204, "approve: {}", String::from_utf8_lossy(&a.body));
            }
            s.advance(d.as_secs_f64()).await;
        }
    };
    let token: RogerToken = mfp
        .exchange_device_access_token(&details)
        .request_async(&s.http, sleep, None)
        .await
        .expect("the crate's poller gets the device tokens");
    assert_eq!(polls.get(), 1, "one pending poll, one wait, one successful poll");
    let log = s.log().await;
    let gaps: Vec<i64> = log
        .iter()
        .filter(|e| e["grant_type"].as_str().is_some_and(|g| g.ends_with("device_code")))
        .filter_map(|e| e["gap_ms"].as_i64())
        .collect();
    assert!(gaps.iter().all(|g| *g >= 4_500), "no poll earlier than interval − 0.5 s (R-POLL-1): {gaps:?}");
    assert!(log.iter().all(|e| e["outcome"] != "slow_down"), "the crate never polled too fast");
    assert_eq!(
        token.scopes().map(|v| v.iter().map(|s| s.to_string()).collect::<Vec<_>>()),
        Some(vec!["roger.device".into()])
    );
    let device_id = token.extra_fields().device_id.clone().expect("device_id");
    assert_eq!(token.extra_fields().tenant_id.as_deref(), Some("acme"));
    let device = s.store().await["devices"][&device_id].clone();
    assert_eq!((device["model"].as_str(), device["serial"].as_str()), (Some("MX-9"), Some("SN-9")), "{device}");
    assert_eq!(api_status(&s, "/api/v1/device", token.access_token().secret()).await, 200);

    // Refresh (rotation) and revocation through the crate.
    let rt1 = token.refresh_token().expect("refresh token").clone();
    let refreshed = mfp.exchange_refresh_token(&rt1).request_async(&s.http).await.expect("refresh");
    assert_eq!(refreshed.extra_fields().device_id.as_deref(), Some(device_id.as_str()), "same device");
    let rt2 = refreshed.refresh_token().expect("rotated").clone();
    assert_ne!(rt1.secret(), rt2.secret());
    mfp.revoke_token(StandardRevocableToken::RefreshToken(rt2.clone()))
        .expect("revocation request")
        .request_async(&s.http)
        .await
        .expect("revoke");
    let e = mfp.exchange_refresh_token(&rt2).request_async(&s.http).await.expect_err("revoked");
    assert_eq!(oauth_error(e), "invalid_grant");
    assert_eq!(api_status(&s, "/api/v1/device", refreshed.access_token().secret()).await, 401);

    // A denied code ends the crate's poller with access_denied (RFC 8628 §3.5).
    let details: oauth2::StandardDeviceAuthorizationResponse = mfp
        .exchange_device_code()
        .add_scope(Scope::new("roger.device".into()))
        .add_extra_param("device_model", "MX-9")
        .add_extra_param("device_serial", "SN-9")
        .request_async(&s.http)
        .await
        .expect("device authorization");
    let a = s.decide(&admin, details.user_code().secret(), false).await;
    assert_eq!(a.status, 204);
    let e = mfp
        .exchange_device_access_token(&details)
        .request_async(&s.http, |d: Duration| s.advance(d.as_secs_f64()), None)
        .await
        .expect_err("denied");
    match e {
        RequestTokenError::ServerResponse(r) => assert_eq!(r.error().as_ref(), "access_denied"),
        other => panic!("expected access_denied, got {other:?}"),
    }
}
