//! Scenario (issue 4): the simulated phone scans panels. An admin's phone registers two printers by scanning their
//! registration QR codes (PROTOCOL.md §5, R-QR-2); alice's phone scans a PNG screenshot of printer B's panel and
//! approves that code: printer B gets alice's session and printer A, whose own code is live at the same time, gets
//! nothing (PROTOCOL.md §8, RFC 8628 §3.3.1). A QR on another origin, as a sticker or as a screenshot, is refused
//! before the phone sends any request (R-QR-4, RFC 8628 §5.4). The phone talks to the server only through
//! `roger_sim::phone::Phone`; the printers' side is played with raw protocol requests.

mod common;

use common::{TestServer, MFP};
use roger_proto::api::CodeKind;
use roger_proto::device_authorization::{DeviceAuthorizationRequest, DeviceAuthorizationResponse};
use roger_proto::qr::QrError;
use roger_proto::secret::{AccessToken, Password};
use roger_proto::token::{self, scope};
use roger_sim::desktop::qr_png;
use roger_sim::phone::{ClientConfig, Phone, PhoneError};

async fn signed_in(s: &TestServer, user: &str, password: &str) -> Phone {
    let mut phone = Phone::connect(&ClientConfig::loopback(&s.server.info.discovery)).await.expect("phone connects");
    let who = phone.login("acme", user, Password::new(password)).await.expect("phone signs in");
    assert_eq!(who.username, user);
    phone
}

/// A printer asks for a registration code; the admin's phone scans its QR, reviews and approves it; the printer's
/// poll after the interval gets its device tokens.
async fn register(s: &TestServer, admin: &mut Phone, serial: &str) -> (AccessToken, String) {
    let code = s
        .device_authorization(&DeviceAuthorizationRequest::registration(MFP, "MX-1", serial), None)
        .await
        .expect("registration code");
    let qr = code.verification_uri_complete.as_ref().expect("verification_uri_complete (R-QR-1)");
    let user_code = admin.scan_payload(qr.secret()).expect("the QR is on the API origin");
    assert_eq!(user_code, code.user_code);
    let review = admin.look_up(&user_code).await.expect("lookup");
    assert_eq!(review.lookup.kind, CodeKind::Registration);
    assert_eq!(review.lookup.serial.as_deref(), Some(serial), "R-QR-2: the admin sees which printer");
    admin.approve(&review, Some(CodeKind::Registration)).await.expect("admin approves");
    s.advance(5.0).await;
    let answer = s.poll(&code.device_code, MFP, None).await;
    let tokens = token::classify(&answer.to_http()).expect("device tokens");
    (tokens.access_token, tokens.device_id.expect("device_id"))
}

async fn session_code(s: &TestServer, device: &AccessToken) -> DeviceAuthorizationResponse {
    s.device_authorization(&DeviceAuthorizationRequest::session(MFP), Some(device)).await.expect("session code")
}

/// Requests the server logged for the protocol (discovery, metadata and `/sim` are not logged).
async fn logged(s: &TestServer) -> usize {
    s.log().await.len()
}

#[tokio::test]
async fn a_scanned_screenshot_authorises_that_printer_only() {
    let s = TestServer::start().await;
    let mut admin = signed_in(&s, "admin", "admin-pass").await;
    let (device_a, id_a) = register(&s, &mut admin, "SN-A").await;
    let (device_b, id_b) = register(&s, &mut admin, "SN-B").await;
    assert_ne!(id_a, id_b);

    // Both panels show a live session QR at the same time.
    let code_a = session_code(&s, &device_a).await;
    let code_b = session_code(&s, &device_b).await;
    let payload_b = code_b.verification_uri_complete.as_ref().expect("QR payload").secret().to_owned();

    // alice photographs printer B's panel.
    let mut alice = signed_in(&s, "alice", "alice-pass").await;
    let screenshot = qr_png(&payload_b).expect("screenshot");
    let scanned = alice.scan_png(&screenshot).expect("the screenshot's QR decodes");
    assert_eq!(scanned, code_b.user_code, "the phone read printer B's code");
    let review = alice.look_up(&scanned).await.expect("lookup");
    assert_eq!(review.lookup.kind, CodeKind::Session);
    assert_eq!(review.lookup.serial.as_deref(), Some("SN-B"), "R-QR-2: the phone shows printer B");
    assert!(review.describe().contains("SN-B"), "{}", review.describe());
    // A sign-in code is not a desktop sign-in: the phone refuses before sending when the kinds differ.
    let wrong = alice.approve(&review, Some(CodeKind::Desktop)).await;
    assert!(matches!(wrong, Err(PhoneError::UnexpectedKind { expected: CodeKind::Desktop, .. })), "{wrong:?}");
    alice.approve(&review, Some(CodeKind::Session)).await.expect("alice approves");

    // Printer B's next poll opens alice's session; printer A's code is still pending.
    s.advance(5.0).await;
    let b = s.poll(&code_b.device_code, MFP, Some(&device_b)).await;
    let session = token::classify(&b.to_http()).expect("printer B gets a user token");
    assert_eq!(session.scope.as_deref(), Some(scope::RELEASE));
    assert_eq!(session.user.as_ref().map(|u| u.username.as_str()), Some("alice"));
    let a = s.poll(&code_a.device_code, MFP, Some(&device_a)).await;
    assert_eq!(a.status, 400);
    assert_eq!(a.json()["error"], "authorization_pending", "printer A is not authorised: {:?}", a.json());

    // The used code cannot be approved again (R-DEV-1: lookups and approvals answer 404 after redemption).
    let again = alice.look_up(&scanned).await.expect_err("a used code");
    assert_eq!((again.status(), again.problem_name()), (Some(404), Some("not-found")), "{again}");
    s.server.stop().await;
}

#[tokio::test]
async fn a_foreign_origin_qr_is_refused_without_a_request() {
    let s = TestServer::start().await;
    let mut admin = signed_in(&s, "admin", "admin-pass").await;
    let (device, _) = register(&s, &mut admin, "SN-1").await;
    let code = session_code(&s, &device).await;
    let genuine = code.verification_uri_complete.as_ref().expect("QR payload").secret().to_owned();
    let alice = signed_in(&s, "alice", "alice-pass").await;

    // The same user code on other origins: a phishing host, another port, another scheme, credentials in the URL.
    let path = format!("/device?user_code={}", code.user_code.secret());
    let port: u16 = s.api.rsplit(':').next().and_then(|p| p.parse().ok()).expect("port");
    let stickers = [
        format!("https://phish.example{path}"),
        format!("http://127.0.0.1:{}{path}", port.wrapping_add(1)),
        format!("https://127.0.0.1:{port}{path}"),
        format!("http://user@127.0.0.1:{port}{path}"),
    ];
    let before = logged(&s).await;
    for sticker in &stickers {
        let refused = alice.scan_payload(sticker);
        assert!(matches!(refused, Err(PhoneError::Qr(QrError::ForeignOrigin { .. }))), "{sticker}: {refused:?}");
        let refused = alice.scan_png(&qr_png(sticker).expect("png"));
        assert!(matches!(refused, Err(PhoneError::Qr(QrError::ForeignOrigin { .. }))), "{sticker} as a screenshot");
    }
    // Right origin, wrong path or no code: refused too.
    let wrong_path = genuine.replace("/device?", "/login?");
    assert!(matches!(alice.scan_payload(&wrong_path), Err(PhoneError::Qr(QrError::WrongPath))));
    assert!(matches!(alice.scan_payload(&format!("{}/device", s.api)), Err(PhoneError::Qr(QrError::BadUserCode(_)))));
    assert!(matches!(alice.scan_png(b"not a picture"), Err(PhoneError::Scan(_))));
    assert_eq!(logged(&s).await, before, "R-QR-4: a refused QR costs no request");

    // The genuine panel QR is accepted.
    assert_eq!(alice.scan_payload(&genuine).expect("genuine"), code.user_code);
    s.server.stop().await;
}
