//! Scenario: guessing PINs and passwords (R-PWD-2; PROTOCOL.md §3, §8; docs/protocol.md §3.4, §3.5.3, C5;
//! RFC 6749 §4.3.2, §10.10). Five failures lock a user out for 300 s, with one counter across the PIN, the password
//! grant and the app login form; while locked, even the right PIN is refused with a body identical, byte for byte,
//! to an unknown user's and a wrong PIN's. Failures are also throttled per device and per tenant with `429`,
//! `Retry-After` and `temporarily_unavailable`.

mod common;

use common::{Answer, TestServer, MFP};
use roger_proto::secret::{AccessToken, Password};
use roger_proto::token::{self, scope, TokenRequest};

/// A password-grant request at the printer (device-bound, PROTOCOL.md §7): the PIN login from idle.
async fn pin_login(s: &TestServer, device: &AccessToken, user: &str, secret: &str) -> Answer {
    let req = TokenRequest::Password {
        username: user.into(),
        password: Password::new(secret),
        scope: scope::PIN_LOGIN.into(),
        client_id: MFP.into(),
    };
    s.send(req.to_http(&s.url("/oauth/token"), Some(device)).unwrap()).await
}

fn text(a: &Answer) -> String {
    String::from_utf8_lossy(&a.body).into_owned()
}

/// Asserts a PIN login was refused as a credential failure (`400 invalid_grant`) and returns the answer.
fn refused(a: Answer, what: &str) -> Answer {
    assert_eq!(a.status, 400, "{what}: {}", text(&a));
    assert_eq!(a.json()["error"], "invalid_grant", "{what}: {}", text(&a));
    a
}

fn accepted(a: &Answer, what: &str) {
    assert_eq!(a.status, 200, "{what}: {}", text(a));
    let t = token::classify(&a.to_http()).unwrap_or_else(|e| panic!("{what}: {e:?}"));
    assert_eq!(t.user.map(|u| u.username).as_deref(), Some("alice"), "{what}");
}

/// The sixth attempt within 300 s fails even with the right PIN, and looks exactly like every other failure; after
/// the lock-out the right PIN works again.
#[tokio::test]
async fn five_wrong_pins_lock_the_user_out_and_every_failure_looks_the_same() {
    let s = TestServer::start().await;
    let device = s.register_printer().await.access_token;

    let unknown = refused(pin_login(&s, &device, "mallory", "1234").await, "unknown user");
    let mut wrong = Vec::new();
    for i in 0..5 {
        wrong.push(refused(pin_login(&s, &device, "alice", "0000").await, &format!("wrong PIN #{}", i + 1)));
    }
    let locked = refused(pin_login(&s, &device, "alice", "1234").await, "right PIN while locked out");
    for (i, w) in wrong.iter().enumerate() {
        assert_eq!(w.body, unknown.body, "wrong PIN #{} vs unknown user: bodies must be identical", i + 1);
    }
    assert_eq!(locked.body, unknown.body, "locked user vs unknown user: bodies must be identical");
    // The answers also carry the same headers that matter (no hint in a header either).
    for h in ["content-type", "cache-control", "pragma", "www-authenticate", "retry-after"] {
        assert_eq!(locked.header(h), unknown.header(h), "header {h}");
        assert_eq!(wrong[0].header(h), unknown.header(h), "header {h}");
    }
    // The password (not only the PIN) is locked too, and bob is not affected.
    refused(pin_login(&s, &device, "alice", "alice-pass").await, "right password while locked out");
    assert_eq!(pin_login(&s, &device, "bob", "5678").await.status, 200, "the lock-out is per user");

    s.advance(150.0).await;
    refused(pin_login(&s, &device, "alice", "1234").await, "still locked after 150 s");
    s.advance(151.0).await;
    accepted(&pin_login(&s, &device, "alice", "1234").await, "the right PIN after 301 s");
}

/// One counter across PIN, password grant and app login (R-PWD-2): wrong PINs and wrong passwords at the login form
/// add up, and the lock-out then refuses both the form and the printer.
#[tokio::test]
async fn the_app_login_form_shares_the_lockout_counter() {
    let s = TestServer::start().await;
    let device = s.register_printer().await.access_token;

    // Two wrong PINs at the printer, one wrong password through the password grant, two at the login form.
    refused(pin_login(&s, &device, "alice", "0000").await, "wrong PIN #1");
    refused(pin_login(&s, &device, "alice", "9999").await, "wrong PIN #2");
    refused(pin_login(&s, &device, "alice", "not-the-password").await, "wrong password (grant)");
    for i in 0..2 {
        let r = s.app_login_location("alice", "wrong-pass").await;
        assert!(r.is_err(), "wrong password at the form #{} must not log in", i + 1);
    }
    // Locked now: the right password at the form and the right PIN at the printer are both refused.
    let form = s.app_login_location("alice", "alice-pass").await;
    assert!(form.is_err(), "the form refuses a locked user even with the right password");
    refused(pin_login(&s, &device, "alice", "1234").await, "right PIN while locked out");

    s.advance(301.0).await;
    assert!(s.app_login_location("alice", "alice-pass").await.is_ok(), "the form works again after 301 s");
    accepted(&pin_login(&s, &device, "alice", "1234").await, "the right PIN after 301 s");
}

/// The other direction: five wrong passwords at the login form lock the PIN at the printer; a success in between
/// resets the counter.
#[tokio::test]
async fn wrong_passwords_at_the_form_lock_the_pin_and_a_success_resets_the_counter() {
    let s = TestServer::start().await;
    let device = s.register_printer().await.access_token;

    for _ in 0..4 {
        assert!(s.app_login_location("alice", "wrong-pass").await.is_err());
    }
    accepted(&pin_login(&s, &device, "alice", "1234").await, "a success after four failures");
    // The counter started again: four more failures do not lock …
    for _ in 0..4 {
        refused(pin_login(&s, &device, "alice", "0000").await, "wrong PIN");
    }
    assert!(s.app_login_location("alice", "alice-pass").await.is_ok(), "four failures do not lock");
    // … but five do.
    for _ in 0..5 {
        assert!(s.app_login_location("alice", "wrong-pass").await.is_err());
    }
    refused(pin_login(&s, &device, "alice", "1234").await, "the PIN is locked by the form's failures");
}

/// Per-device throttle (docs/protocol.md §3.5.3, C5): with 3 failures per 5 min allowed, the 4th attempt at that
/// printer gets `429` + `Retry-After` + `temporarily_unavailable`, whatever the user and the secret; another
/// printer is not affected; after the window the printer works again.
#[tokio::test]
async fn per_device_throttle_answers_429_with_retry_after() {
    let s = TestServer::start().await;
    s.settings(serde_json::json!({ "device_failures_per_5min": 3 })).await;
    let device = s.register_printer().await.access_token;
    let other = s.register_printer().await.access_token;

    // Unknown users, so no user lock-out gets in the way.
    for u in ["mallory", "eve", "trent"] {
        refused(pin_login(&s, &device, u, "1234").await, u);
    }
    let a = pin_login(&s, &device, "alice", "1234").await;
    assert_eq!(a.status, 429, "4th attempt: {}", text(&a));
    assert_eq!(a.json()["error"], "temporarily_unavailable", "{}", text(&a));
    let retry: u64 = a.header("retry-after").expect("Retry-After").parse().expect("delta-seconds");
    assert!((1..=300).contains(&retry), "Retry-After {retry}");
    assert_eq!(a.header("cache-control").as_deref(), Some("no-store"));

    accepted(&pin_login(&s, &other, "alice", "1234").await, "another printer is not throttled");

    s.advance(301.0).await;
    accepted(&pin_login(&s, &device, "alice", "1234").await, "the throttled printer after the window");
}

/// Per-tenant throttle (C5): failures at all printers of a tenant add up.
#[tokio::test]
async fn per_tenant_throttle_counts_failures_across_printers() {
    let s = TestServer::start().await;
    s.settings(serde_json::json!({ "tenant_failures_per_minute": 4 })).await;
    let one = s.register_printer().await.access_token;
    let two = s.register_printer().await.access_token;

    refused(pin_login(&s, &one, "mallory", "1").await, "failure 1");
    refused(pin_login(&s, &two, "eve", "2").await, "failure 2");
    refused(pin_login(&s, &one, "trent", "3").await, "failure 3");
    refused(pin_login(&s, &two, "oscar", "4").await, "failure 4");
    for (name, d) in [("printer one", &one), ("printer two", &two)] {
        let a = pin_login(&s, d, "alice", "1234").await;
        assert_eq!(a.status, 429, "{name}: {}", text(&a));
        assert_eq!(a.json()["error"], "temporarily_unavailable");
        assert!(a.header("retry-after").is_some(), "{name}: Retry-After");
    }
    s.advance(61.0).await;
    accepted(&pin_login(&s, &one, "alice", "1234").await, "after the minute");
}
