//! Scenario: step 2 at the printer, the command request (PROTOCOL.md §8 step 2, §10 endpoint matrix; RFC 6749
//! §4.3, RFC 6750 §3.1). With alice's QR session open, the device-bound password grant for `roger.print
//! roger.scan` is refused for another user (bob, even with his right PIN: `invalid_grant`) and granted for alice
//! with her PIN. The step-2 token reads print features, scan profiles and the drive's Print folder; the step-1 token
//! (`roger.release`) gets `403` with `WWW-Authenticate: Bearer error="insufficient_scope", scope="…"` there.

mod common;

use common::{Answer, TestServer, MFP};
use roger_proto::api::{
    get_print_features, list_drive_files, list_scan_profiles, DriveFileList, PrintFeatures, ScanProfileList,
    PRINT_FOLDER,
};
use roger_proto::error::{OAuthErrorCode, ResponseError};
use roger_proto::secret::{AccessToken, Password};
use roger_proto::token::{self, scope, TokenRequest};
use roger_proto::wire::classify_api;

fn password_grant(user: &str, secret: &str, scope: &str) -> TokenRequest {
    TokenRequest::Password {
        username: user.into(),
        password: Password::new(secret),
        scope: scope.into(),
        client_id: MFP.into(),
    }
}

async fn grant(s: &TestServer, req: TokenRequest, device: Option<&AccessToken>) -> Answer {
    s.send(req.to_http(&s.url("/oauth/token"), device).unwrap()).await
}

/// Asserts `403 insufficient-scope` with the RFC 6750 §3.1 challenge naming `needed`.
fn assert_insufficient_scope(a: &Answer, needed: &str) {
    assert_eq!(a.status, 403, "{}", String::from_utf8_lossy(&a.body));
    let challenge = a.header("www-authenticate").expect("WWW-Authenticate");
    assert!(challenge.starts_with("Bearer"), "{challenge}");
    assert!(challenge.contains("error=\"insufficient_scope\""), "{challenge}");
    assert!(challenge.contains(&format!("scope=\"{needed}\"")), "{challenge}");
    let err = classify_api::<serde_json::Value>(&a.to_http()).expect_err("refused");
    let ResponseError::Problem { problem, www_authenticate_error, .. } = err else { panic!("a problem: {err:?}") };
    assert_eq!(problem.roger_name(), Some("insufficient-scope"));
    assert_eq!(www_authenticate_error.as_deref(), Some("insufficient_scope"));
}

#[tokio::test]
async fn step2_for_the_step1_user_only_and_its_scopes() {
    let s = TestServer::start().await;
    let device = s.register_printer().await;
    let step1 = s.qr_session(&device.access_token, "alice", "alice-pass").await;
    assert_eq!(step1.scope.as_deref(), Some("roger.release"));

    // Bob, even with his own right PIN, is not the session's user.
    let a = grant(&s, password_grant("bob", "5678", scope::STEP2), Some(&device.access_token)).await;
    assert_eq!(a.status, 400);
    let err = token::classify(&a.to_http()).expect_err("refused");
    assert_eq!(err.oauth_code(), Some(&OAuthErrorCode::InvalidGrant));

    // Alice with her PIN.
    let a = grant(&s, password_grant("alice", "1234", scope::STEP2), Some(&device.access_token)).await;
    assert_eq!(a.header("cache-control").as_deref(), Some("no-store"));
    let step2 = token::classify(&a.to_http()).expect("step-2 token");
    assert_eq!(step2.scope.as_deref(), Some("roger.print roger.scan"));
    assert!(step2.refresh_token.is_none(), "short-lived, no refresh token (docs/protocol.md §9.3)");
    assert_eq!(step2.user.as_ref().map(|u| u.username.as_str()), Some("alice"));
    assert_ne!(step2.access_token, step1.access_token, "a second token");

    // The step-2 token reaches the print and scan endpoints.
    let a = s.send(get_print_features(&s.api, &step2.access_token).unwrap()).await;
    let features: PrintFeatures = classify_api(&a.to_http()).expect("print features");
    assert_eq!(features.paper_sizes, ["A4", "Letter"]);
    assert_eq!(features.max_copies, Some(99));
    let a = s.send(list_scan_profiles(&s.api, &step2.access_token).unwrap()).await;
    let profiles: ScanProfileList = classify_api(&a.to_http()).expect("scan profiles");
    let ids: Vec<&str> = profiles.profiles.iter().map(|p| p.id.as_str()).collect();
    assert_eq!(ids, ["pdf-300", "jpeg-color"]);
    let a = s.send(list_drive_files(&s.api, &step2.access_token, PRINT_FOLDER).unwrap()).await;
    let files: DriveFileList = classify_api(&a.to_http()).expect("drive files");
    let mut names: Vec<&str> = files.files.iter().map(|f| f.name.as_str()).collect();
    names.sort();
    assert_eq!(names, ["lunch-menu.pdf", "quarterly-report.pdf"]);
    assert!(files.files.iter().all(|f| f.size > 0 && !f.id.is_empty()));

    // The step-1 token does not.
    let a = s.send(get_print_features(&s.api, &step1.access_token).unwrap()).await;
    assert_insufficient_scope(&a, "roger.print");
    let a = s.send(list_scan_profiles(&s.api, &step1.access_token).unwrap()).await;
    assert_insufficient_scope(&a, "roger.scan");
    let a = s.send(list_drive_files(&s.api, &step1.access_token, PRINT_FOLDER).unwrap()).await;
    assert_insufficient_scope(&a, "roger.print");
}

#[tokio::test]
async fn step2_needs_an_open_session_and_the_device_token() {
    let s = TestServer::start().await;
    let device = s.register_printer().await;
    // No QR session: the step-2 scope alone is refused (PIN login asks for roger.release too).
    let a = grant(&s, password_grant("alice", "1234", scope::STEP2), Some(&device.access_token)).await;
    assert_eq!(token::classify(&a.to_http()).unwrap_err().oauth_code(), Some(&OAuthErrorCode::InvalidGrant));
    // With the session but without device-bound authentication: 401 invalid_client.
    let _step1 = s.qr_session(&device.access_token, "alice", "alice-pass").await;
    let a = grant(&s, password_grant("alice", "1234", scope::STEP2), None).await;
    assert_eq!(a.status, 401);
    assert_eq!(token::classify(&a.to_http()).unwrap_err().oauth_code(), Some(&OAuthErrorCode::InvalidClient));
    // A wider scope than the step-2 scopes is refused.
    let a = grant(&s, password_grant("alice", "1234", "roger.print roger.scan roger.app"), Some(&device.access_token))
        .await;
    assert_eq!(token::classify(&a.to_http()).unwrap_err().oauth_code(), Some(&OAuthErrorCode::InvalidScope));
}
