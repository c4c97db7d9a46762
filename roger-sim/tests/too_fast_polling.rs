//! Scenario: polling a device code too fast (PROTOCOL.md §5.4, §12, R-POLL-1; RFC 8628 §3.5). A poll that arrives
//! earlier than interval − 0.5 s after the previous poll of the same code gets `slow_down`, and the code's interval
//! grows by 5 s for this and every later poll (it never shrinks back). The request log (`/sim/log`) records each
//! poll's gap and the interval it was judged against, and never the device code itself (R-SEC-1).

mod common;

use common::{Answer, TestServer, MFP};
use roger_proto::device_authorization::DeviceAuthorizationRequest;
use roger_proto::error::OAuthErrorCode;
use roger_proto::token;

/// The OAuth error code of a refused token request.
fn oauth_error(a: &Answer) -> OAuthErrorCode {
    let err = token::classify(&a.to_http()).expect_err("an OAuth error answer");
    err.oauth_code().cloned().unwrap_or_else(|| panic!("not an OAuth error: {err:?}"))
}

#[tokio::test]
async fn too_fast_polls_get_slow_down_and_the_interval_grows_for_good() {
    let s = TestServer::start().await;
    // Log in first: the Argon2 verification takes real time, which must not land between two "too early" polls.
    let admin = s.app_login("admin", "admin-pass").await;
    let code = s
        .device_authorization(&DeviceAuthorizationRequest::registration(MFP, "MX-1", "SN-1"), None)
        .await
        .expect("registration code");
    assert_eq!(code.interval, Some(5), "the default interval (PROTOCOL.md §3)");
    let first_seq = s.log().await.last().map(|e| e["seq"].as_u64().unwrap() + 1).unwrap_or(0);

    // (virtual seconds to advance before the poll, expected answer, interval the poll is judged against)
    let steps: [(f64, OAuthErrorCode, u64); 7] = [
        (0.0, OAuthErrorCode::AuthorizationPending, 5), // the first poll of a code is never too early
        (4.7, OAuthErrorCode::AuthorizationPending, 5), // 4.7 s ≥ 5 − 0.5: fine
        (4.3, OAuthErrorCode::SlowDown, 5),             // 4.3 s < 4.5 s: too early, the interval becomes 10 s
        (9.7, OAuthErrorCode::AuthorizationPending, 10), // 9.7 s ≥ 10 − 0.5: fine under the new interval
        (5.0, OAuthErrorCode::SlowDown, 10), // 5 s was fine before the slow_down, but the interval stays 10 s: 15 s
        (9.7, OAuthErrorCode::SlowDown, 15), // …and stays 15 s: 9.7 s is too early now, so 20 s
        (19.7, OAuthErrorCode::AuthorizationPending, 20),
    ];
    for (i, (advance, expected, _)) in steps.iter().enumerate() {
        if *advance > 0.0 {
            s.advance(*advance).await;
        }
        let a = s.poll(&code.device_code, MFP, None).await;
        assert_eq!(a.status, 400, "poll {i}: {}", String::from_utf8_lossy(&a.body));
        assert_eq!(&oauth_error(&a), expected, "poll {i} after {advance} s");
    }

    // The code still works at its (grown) interval: approve it and poll 20 s later.
    let a = s.decide(&admin.access_token, code.user_code.secret(), true).await;
    assert_eq!(a.status, 204);
    s.advance(20.0).await;
    let tokens = token::classify(&s.poll(&code.device_code, MFP, None).await.to_http()).expect("device tokens");
    assert_eq!(tokens.scope.as_deref(), Some("roger.device"));

    // The request log: every poll has its gap since the previous poll of that code and the interval it was judged
    // against; the first poll has no gap. The code appears only as a short hash prefix.
    let log = s.log().await;
    let polls: Vec<&serde_json::Value> = log
        .iter()
        .filter(|e| e["seq"].as_u64().unwrap() >= first_seq)
        .filter(|e| e["grant_type"] == "urn:ietf:params:oauth:grant-type:device_code")
        .collect();
    assert_eq!(polls.len(), steps.len() + 1, "{polls:#?}");
    let code_tag = polls[0]["code"].as_str().expect("code tag").to_owned();
    assert_eq!(code_tag.len(), 12);
    assert!(code_tag.bytes().all(|b| b.is_ascii_hexdigit()));
    assert!(polls[0].get("gap_ms").is_none(), "the first poll has no previous one: {}", polls[0]);
    for (i, (advance, expected, interval)) in steps.iter().enumerate() {
        let e = polls[i];
        assert_eq!(e["code"], code_tag.as_str(), "polls of one code share its tag");
        assert_eq!(e["interval_s"].as_u64(), Some(*interval), "poll {i}: {e}");
        assert_eq!(e["outcome"], expected.as_str(), "poll {i}: {e}");
        if i > 0 {
            let gap = e["gap_ms"].as_i64().unwrap_or_else(|| panic!("poll {i} has gap_ms: {e}"));
            let min = (advance * 1000.0) as i64;
            assert!(gap >= min && gap < min + 5_000, "poll {i}: gap {gap} ms after advancing {advance} s");
            if *expected == OAuthErrorCode::SlowDown {
                assert!(gap < (*interval as i64) * 1000 - 500, "a slow_down poll arrived too early: {e}");
            } else {
                assert!(gap >= (*interval as i64) * 1000 - 500, "an accepted poll kept the interval: {e}");
            }
        }
    }
    let last = polls[steps.len()];
    assert_eq!((last["status"].as_u64(), last["interval_s"].as_u64()), (Some(200), Some(20)));

    let dump = serde_json::to_string(&log).unwrap();
    assert!(!dump.contains(code.device_code.secret()), "the log never contains the device code (R-SEC-1)");
    assert!(!dump.contains(code.user_code.secret()), "nor the user code");
    assert!(!dump.contains(tokens.access_token.secret()), "nor a token");
}
