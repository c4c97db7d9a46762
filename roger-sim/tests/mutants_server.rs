//! The server mutants (`roger-sim server --mutant NAME`, DESIGN.md "Conformance": known-broken variants prove the
//! suite): one test per mutant. Each runs the same exchange against a correct server and against the mutant and
//! shows that the mutant really makes its mistake on the wire or in its state, and that the correct server does
//! not. See docs/mutants.md for the table of mistakes and the rules they break.

mod common;

use common::{TestServer, MFP};
use roger_proto::device_authorization::DeviceAuthorizationRequest;
use roger_proto::secret::{AccessToken, Password, RefreshToken};
use roger_proto::token::{self, scope, TokenRequest};
use roger_sim::server::{ServerConfig, ServerMutant};

/// A correct server and a mutant one (plain HTTP on loopback, virtual clock, default tenant).
async fn pair(m: ServerMutant) -> (TestServer, TestServer) {
    let good = TestServer::start().await;
    let bad =
        TestServer::start_with(ServerConfig { plain_http: true, seed: Some(7), mutant: Some(m), ..Default::default() })
            .await;
    assert_eq!(bad.server.shared.mutant.mutant(), Some(m));
    (good, bad)
}

fn error_of(a: &common::Answer) -> String {
    a.json()["error"].as_str().unwrap_or_default().to_owned()
}

fn refresh_token_of(a: &common::Answer) -> RefreshToken {
    assert_eq!(a.status, 200, "refresh: {}", String::from_utf8_lossy(&a.body));
    token::classify(&a.to_http()).expect("token answer").refresh_token.expect("a refresh token")
}

/// `GET /api/v1/device` with a device token: 200 while the token is alive.
async fn device_status(s: &TestServer, token: &AccessToken) -> u16 {
    let bearer = format!("Bearer {}", token.secret());
    s.raw("GET", "/api/v1/device", &[("authorization", bearer.as_str())], Vec::new()).await.status
}

/// R-POLL-1, RFC 8628 §3.5: two polls of one code back to back: the second is too early.
#[tokio::test]
async fn no_slow_down() {
    async fn second_poll(s: &TestServer) -> String {
        let code = s
            .device_authorization(&DeviceAuthorizationRequest::registration(MFP, "MX-1", "SN-1"), None)
            .await
            .expect("registration code");
        assert_eq!(error_of(&s.poll(&code.device_code, MFP, None).await), "authorization_pending");
        error_of(&s.poll(&code.device_code, MFP, None).await)
    }
    let (good, bad) = pair(ServerMutant::NoSlowDown).await;
    assert_eq!(second_poll(&good).await, "slow_down");
    assert_eq!(second_poll(&bad).await, "authorization_pending", "the mutant never says slow_down");
}

/// R-DEV-1: a repeat within 30 s re-mints and revokes the first pair; later repeats get `invalid_grant`.
#[tokio::test]
async fn double_redeem() {
    /// (first pair alive after an in-grace repeat, status of a repeat after the grace)
    async fn redeem_again(s: &TestServer) -> (u16, u16) {
        let code = s
            .device_authorization(&DeviceAuthorizationRequest::registration(MFP, "MX-1", "SN-1"), None)
            .await
            .expect("registration code");
        let admin = s.app_login("admin", "admin-pass").await;
        assert_eq!(s.decide(&admin.access_token, code.user_code.secret(), true).await.status, 204);
        s.advance(5.0).await;
        let first = token::classify(&s.poll(&code.device_code, MFP, None).await.to_http()).expect("tokens");
        s.advance(10.0).await;
        let again = s.poll(&code.device_code, MFP, None).await;
        assert_eq!(again.status, 200, "a lost answer is recovered within 30 s");
        let first_alive = device_status(s, &first.access_token).await;
        s.advance(40.0).await;
        (first_alive, s.poll(&code.device_code, MFP, None).await.status)
    }
    let (good, bad) = pair(ServerMutant::DoubleRedeem).await;
    assert_eq!(redeem_again(&good).await, (401, 400), "the first pair is revoked; no redemption after 30 s");
    assert_eq!(redeem_again(&bad).await, (200, 200), "the mutant keeps both pairs and redeems forever");
}

/// R-TOK-2: every refresh answers a new refresh token.
#[tokio::test]
async fn no_rotation() {
    async fn rotates(s: &TestServer) -> bool {
        let rt1 = s.register_printer().await.refresh_token.expect("refresh token");
        let rt2 = refresh_token_of(&s.refresh(&rt1, MFP).await);
        rt1 != rt2
    }
    let (good, bad) = pair(ServerMutant::NoRotation).await;
    assert!(rotates(&good).await);
    assert!(!rotates(&bad).await, "the mutant answers the same refresh token");
}

/// R-TOK-3, RFC 9700 §4.14.2: presenting a retired refresh token revokes the whole family.
#[tokio::test]
async fn no_reuse_detection() {
    /// Status of a refresh with the newest token after the family's oldest token was replayed.
    async fn newest_after_replay(s: &TestServer) -> u16 {
        let rt1 = s.register_printer().await.refresh_token.expect("refresh token");
        let rt2 = refresh_token_of(&s.refresh(&rt1, MFP).await);
        let rt3 = refresh_token_of(&s.refresh(&rt2, MFP).await);
        let replay = s.refresh(&rt1, MFP).await;
        assert_eq!((replay.status, error_of(&replay).as_str()), (400, "invalid_grant"), "a retired token is refused");
        s.refresh(&rt3, MFP).await.status
    }
    let (good, bad) = pair(ServerMutant::NoReuseDetection).await;
    assert_eq!(newest_after_replay(&good).await, 400, "the replay revoked the family");
    assert_eq!(newest_after_replay(&bad).await, 200, "the mutant lets the family live on");
}

/// R-TOK-3: after a lost refresh answer the previous token is redeemable until its successor is used.
#[tokio::test]
async fn no_lost_answer_grace() {
    async fn retry_after_lost_answer(s: &TestServer) -> u16 {
        let rt1 = s.register_printer().await.refresh_token.expect("refresh token");
        let _lost = refresh_token_of(&s.refresh(&rt1, MFP).await);
        s.refresh(&rt1, MFP).await.status
    }
    let (good, bad) = pair(ServerMutant::NoLostAnswerGrace).await;
    assert_eq!(retry_after_lost_answer(&good).await, 200);
    assert_eq!(retry_after_lost_answer(&bad).await, 400, "the mutant treats the retry as reuse");
}

/// R-TOK-4: each refresh moves the expiry to now + 90 days.
#[tokio::test]
async fn no_sliding_expiry() {
    async fn refresh_at_day_160(s: &TestServer) -> u16 {
        let rt1 = s.register_printer().await.refresh_token.expect("refresh token");
        s.advance(80.0 * 86_400.0).await;
        let rt2 = refresh_token_of(&s.refresh(&rt1, MFP).await);
        s.advance(80.0 * 86_400.0).await;
        s.refresh(&rt2, MFP).await.status
    }
    let (good, bad) = pair(ServerMutant::NoSlidingExpiry).await;
    assert_eq!(refresh_at_day_160(&good).await, 200, "used on day 80, alive on day 160");
    assert_eq!(refresh_at_day_160(&bad).await, 400, "the mutant's family died on day 90");
}

/// RFC 8628 §5.1, §6.1: user codes are 8 letters of a 20-letter alphabet, uniformly drawn.
#[tokio::test]
async fn weak_user_codes() {
    async fn letters(s: &TestServer) -> std::collections::BTreeSet<char> {
        let mut seen = std::collections::BTreeSet::new();
        for i in 0..20 {
            let serial = format!("SN-{i}");
            let code = s
                .device_authorization(&DeviceAuthorizationRequest::registration(MFP, "MX-1", &serial), None)
                .await
                .expect("registration code");
            let c = code.user_code.secret();
            assert!(roger_proto::user_code::is_wire_form(c), "still a valid code: {c}");
            seen.extend(c.chars());
        }
        seen
    }
    let (good, bad) = pair(ServerMutant::WeakUserCodes).await;
    assert!(letters(&good).await.len() > 10, "160 letters drawn from 20 use most of them");
    let weak = letters(&bad).await;
    assert!(weak.iter().all(|c| "BC".contains(*c)), "the mutant's codes use {weak:?}");
}

/// PROTOCOL.md §3, RFC 8628 §5.1: at most 10 approvals with unknown codes per user per minute, then 429.
#[tokio::test]
async fn no_approval_rate_limit() {
    async fn eleventh(s: &TestServer) -> u16 {
        let alice = s.app_login("alice", "alice-pass").await;
        for _ in 0..10 {
            assert_eq!(s.decide(&alice.access_token, "BCDF-GHJK", true).await.status, 404);
        }
        s.decide(&alice.access_token, "BCDF-GHJK", true).await.status
    }
    let (good, bad) = pair(ServerMutant::NoApprovalRateLimit).await;
    assert_eq!(eleventh(&good).await, 429);
    assert_eq!(eleventh(&bad).await, 404, "the mutant lets a guesser go on");
}

/// R-PWD-2: five failures lock the user out for 300 s, even for the right PIN.
#[tokio::test]
async fn no_lockout() {
    async fn right_pin_after_five_wrong(s: &TestServer) -> u16 {
        let device = s.register_printer().await.access_token;
        let url = s.url("/oauth/token");
        let grant = |pin: &str| TokenRequest::Password {
            username: "alice".into(),
            password: Password::new(pin),
            scope: scope::PIN_LOGIN.into(),
            client_id: MFP.into(),
        };
        for _ in 0..5 {
            let a = s.send(grant("0000").to_http(&url, Some(&device)).unwrap()).await;
            assert_eq!(error_of(&a), "invalid_grant");
        }
        s.send(grant("1234").to_http(&url, Some(&device)).unwrap()).await.status
    }
    let (good, bad) = pair(ServerMutant::NoLockout).await;
    assert_eq!(right_pin_after_five_wrong(&good).await, 400, "locked out");
    assert_eq!(right_pin_after_five_wrong(&bad).await, 200, "the mutant never locks");
}

/// PROTOCOL.md §8 step 2: while alice's QR session is open, bob's right PIN does not get step 2 at that printer.
#[tokio::test]
async fn no_step2_binding() {
    async fn bobs_step2_in_alices_session(s: &TestServer) -> u16 {
        let device = s.register_printer().await.access_token;
        s.qr_session(&device, "alice", "alice-pass").await;
        let grant = TokenRequest::Password {
            username: "bob".into(),
            password: Password::new("5678"),
            scope: scope::STEP2.into(),
            client_id: MFP.into(),
        };
        s.send(grant.to_http(&s.url("/oauth/token"), Some(&device)).unwrap()).await.status
    }
    let (good, bad) = pair(ServerMutant::NoStep2Binding).await;
    assert_eq!(bobs_step2_in_alices_session(&good).await, 400, "invalid_grant: step 2 is for the session's user");
    assert_eq!(bobs_step2_in_alices_session(&bad).await, 200, "the mutant grants step 2 to anyone with a PIN");
}

/// PROTOCOL.md §10: bad input gets a clear 4xx, never a 5xx (RFC 6749 §5.2 `invalid_request`, RFC 9457).
#[tokio::test]
async fn error_500_on_bad_input() {
    /// Statuses of: a form with a repeated parameter, a malformed JSON body, a legitimate pending poll.
    async fn statuses(s: &TestServer) -> (u16, u16, u16) {
        let form = [("content-type", "application/x-www-form-urlencoded")];
        let dup = s.raw("POST", "/oauth/token", &form, b"grant_type=refresh_token&grant_type=password".to_vec()).await;
        let app = s.app_login("alice", "alice-pass").await;
        let bearer = format!("Bearer {}", app.access_token.secret());
        let json = [("content-type", "application/json"), ("authorization", bearer.as_str())];
        let bad_json = s.raw("POST", "/api/v1/codes/approve", &json, b"{\"user_code\":".to_vec()).await;
        let code = s
            .device_authorization(&DeviceAuthorizationRequest::registration(MFP, "MX-1", "SN-1"), None)
            .await
            .expect("registration code");
        let pending = s.poll(&code.device_code, MFP, None).await;
        (dup.status, bad_json.status, pending.status)
    }
    let (good, bad) = pair(ServerMutant::Error500OnBadInput).await;
    assert_eq!(statuses(&good).await, (400, 400, 400));
    assert_eq!(statuses(&bad).await, (500, 500, 400), "malformed input crashes the mutant; protocol answers stay");
}

/// R-SEC-1, RFC 6749 §5.1: credential-bearing answers carry `Cache-Control: no-store` and `Pragma: no-cache`.
#[tokio::test]
async fn no_no_store() {
    async fn headers(s: &TestServer) -> (Option<String>, Option<String>) {
        let req = DeviceAuthorizationRequest::registration(MFP, "MX-1", "SN-1");
        let a = s.send(req.to_http(&s.url("/oauth/device_authorization"), None).unwrap()).await;
        assert_eq!(a.status, 200);
        (a.header("cache-control"), a.header("pragma"))
    }
    let (good, bad) = pair(ServerMutant::NoNoStore).await;
    assert_eq!(headers(&good).await, (Some("no-store".into()), Some("no-cache".into())));
    assert_eq!(headers(&bad).await, (None, None), "the mutant's device code answer may be cached");
}

/// R-DATA-2, R-TOK-3: the server keeps tokens only as SHA-256 hashes; the mutant keeps them in plaintext, in
/// `GET /sim/store` and in its SQLite state file.
#[tokio::test]
async fn plaintext_secret() {
    let (good, bad) = pair(ServerMutant::PlaintextSecret).await;
    for (s, keeps) in [(&good, false), (&bad, true)] {
        let t = s.register_printer().await;
        let store = s.store().await.to_string();
        let rt = t.refresh_token.expect("refresh token");
        assert_eq!(store.contains(rt.secret()), keeps, "refresh token in /sim/store");
        assert_eq!(store.contains(t.access_token.secret()), keeps, "access token in /sim/store");
    }
    // With a state file the plaintext reaches the disk too.
    let dir = common::temp_dir("mutant-plaintext");
    let db = dir.join("state.db");
    let disk = TestServer::start_with(ServerConfig {
        plain_http: true,
        seed: Some(7),
        state: Some(db.clone()),
        mutant: Some(ServerMutant::PlaintextSecret),
        ..Default::default()
    })
    .await;
    let rt = disk.register_printer().await.refresh_token.expect("refresh token");
    let on_disk: Vec<u8> = std::fs::read_dir(&dir)
        .expect("state dir")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("state.db"))
        .flat_map(|e| std::fs::read(e.path()).unwrap_or_default())
        .collect();
    let needle = rt.secret().as_bytes();
    assert!(on_disk.windows(needle.len()).any(|w| w == needle), "the plaintext refresh token is in the state file");
    disk.server.stop().await;
    std::fs::remove_dir_all(&dir).ok();
}

/// `roger-sim server --mutant NAME`: the loud warning on stderr, the contract line on stdout, the mistake on the
/// wire; an unknown name is refused with the list of known ones.
#[tokio::test]
async fn cli_server_mutant() {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
    let exe = env!("CARGO_BIN_EXE_roger-sim");
    let mut child = tokio::process::Command::new(exe)
        .args(["server", "--plain-http", "--mutant", "no-no-store"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("roger-sim server starts");
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    tokio::time::timeout(std::time::Duration::from_secs(30), stdout.read_line(&mut line))
        .await
        .expect("contract line in time")
        .expect("read");
    let info: serde_json::Value = serde_json::from_str(&line).expect("contract line is JSON");
    let s = TestServer::attach(info["api"].as_str().expect("api"));
    let req = DeviceAuthorizationRequest::registration(MFP, "MX-1", "SN-1");
    let a = s.send(req.to_http(&s.url("/oauth/device_authorization"), None).unwrap()).await;
    assert_eq!((a.status, a.header("cache-control")), (200, None));
    child.kill().await.expect("kill");
    let mut err = String::new();
    child.stderr.take().expect("stderr").read_to_string(&mut err).await.expect("stderr");
    assert!(err.contains("MUTANT SERVER `no-no-store` ACTIVE"), "{err}");

    let out = tokio::process::Command::new(exe)
        .args(["server", "--plain-http", "--mutant", "no-such-mistake"])
        .output()
        .await
        .expect("runs");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("plaintext-secret"));
}
