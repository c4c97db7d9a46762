//! Scenario: the conformance kit's server-mode suite against our own server (in-process, plain HTTP on loopback,
//! the built-in tenant and `fixtures/conform-accounts.toml`).
//!
//! * As a Roger server every case passes (the TLS-version cases skip over plain HTTP, with that reason), the
//!   clock-moving and account-locking cases run alone after the others, the verdicts are those committed in
//!   `tests/conform_expected_verdicts_server.toml`, and the exit code is 0. Over TLS the TLS-version cases
//!   (R-DISC-2) pass too. With `ROGER_AMQP_URL` set the server pushes through that broker (its own name prefix,
//!   deleted afterwards) and the push case passes too; without it the push case is skipped with its reason.
//! * Judged as a generic OAuth server (`--issuer`, `--profile oauth`, approvals through `--approve-command`
//!   running our phone, an accounts file with only `client_id` and `scope`) every RFC-level case passes and the
//!   Roger-only ones SKIP with "not a Roger server".
//! * A server that publishes its metadata only at `/.well-known/openid-configuration` is read from there (RFC 8414
//!   §5) with a note in the report, and is judged by the oauth profile because its metadata has no
//!   `roger_api_version`.
//! * oidc-provider (npm, a server nobody here wrote) comes to exactly its committed verdicts, none of them FAIL,
//!   when `ROGER_INTEROP_OIDC_ISSUER` and `ROGER_INTEROP_APPROVE` name it and its approve script (as
//!   `interop/oidc-provider/run.sh` sets them); skipped otherwise.
//! * Tolerance: each `deviation` fault of our server gets the right verdicts (below).

mod common;

use std::path::PathBuf;
use std::time::Instant;

use roger_sim::conform::case::{Profile, Verdict};
use roger_sim::conform::report::shell_quote;
use roger_sim::conform::{run_server, CommonArgs, ServerArgs};
use roger_sim::server::{start, ServerConfig};

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/conform-accounts.toml")
}

fn expected_verdicts() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/conform_expected_verdicts_server.toml")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn our_server_passes_the_server_suite() {
    let broker = std::env::var("ROGER_AMQP_URL").ok().filter(|u| !u.trim().is_empty());
    let amqp = broker.as_deref().map(roger_sim::conform::broker::case_config);
    let server = start(ServerConfig { plain_http: true, seed: Some(11), amqp, ..ServerConfig::default() })
        .await
        .expect("server");
    let mut args = ServerArgs::new(server.info.discovery.clone(), fixture());
    args.allow_loopback_http = true;
    args.common = CommonArgs {
        seed: Some(11),
        quiet: true,
        // Without a broker the push case is SKIP, which the table does not expect.
        expected_verdicts: broker.is_some().then(expected_verdicts),
        ..CommonArgs::new()
    };
    let started = Instant::now();
    let report = run_server(&args).await.expect("the run starts");
    println!("{}", report.terminal());
    println!("server suite: {} cases in {:.1} s", report.cases.len(), started.elapsed().as_secs_f64());
    assert_eq!(report.profile, Some(Profile::Roger), "detected from roger_api_version");
    assert!(report.notes.iter().any(|n| n.contains("roger_api_version")), "{:?}", report.notes);
    assert!(report.cases.len() >= 20, "{}", report.cases.len());
    for c in &report.cases {
        if c.id.starts_with("roger/R-DISC-2/server-") {
            assert_eq!(c.verdict, Verdict::Skip, "{}: no TLS to probe over plain HTTP", c.id);
            assert!(c.reason.contains("plain HTTP"), "{}: {}", c.id, c.reason);
            continue;
        }
        if broker.is_none() && c.id.starts_with("roger/R-PUSH-1/") {
            assert_eq!(c.verdict, Verdict::Skip, "{}: no broker", c.id);
            assert!(c.reason.contains("no push broker"), "{}", c.reason);
            continue;
        }
        assert_eq!(c.verdict, Verdict::Pass, "{}: {}\n{:#?}", c.id, c.reason, c.evidence);
    }
    assert!(report.verdict_diffs.is_empty(), "{:#?}", report.verdict_diffs);
    assert_eq!(report.exit_code, 0);
    if let Some(bus) = server.amqp.clone() {
        bus.delete_topology().await.expect("the test's queues and exchange are deleted");
    }
    server.stop().await;
}

/// R-DISC-2 in server mode: our TLS server (TLS 1.2/1.3, AEAD suites only) refuses the hand-crafted TLS 1.0, TLS 1.1
/// and CBC-only TLS 1.2 hellos and accepts TLS 1.2 with AEAD and TLS 1.3.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_tls_server_passes_the_tls_version_cases() {
    let dir = common::temp_dir("conform-tls");
    let config = ServerConfig { tls_dir: Some(dir.clone()), seed: Some(12), ..ServerConfig::default() };
    let server = start(config).await.expect("server");
    let ca = server.info.ca.clone().expect("a TLS server names its CA");
    let mut args = ServerArgs::new(server.info.discovery.clone(), fixture());
    args.ca = Some(PathBuf::from(ca));
    args.common =
        CommonArgs { seed: Some(12), quiet: true, cases: vec!["roger/R-DISC-2/server-*".into()], ..CommonArgs::new() };
    let report = run_server(&args).await.expect("the run starts");
    println!("{}", report.terminal());
    assert_eq!(report.cases.len(), 3);
    for c in &report.cases {
        assert_eq!(c.verdict, Verdict::Pass, "{}: {}\n{:#?}", c.id, c.reason, c.evidence);
    }
    assert_eq!(report.exit_code, 0);
    server.stop().await;
    let _ = std::fs::remove_dir_all(dir);
}

/// The approve command a generic-server run uses against our server: our phone, signed in as the admin.
fn phone_approver(discovery: &str) -> String {
    format!(
        "{} phone --discovery {} --allow-loopback-http --tenant acme --user admin --password admin-pass approve \
         --code \"$ROGER_USER_CODE\" $( [ \"$ROGER_APPROVE\" = deny ] && echo --deny ) > /dev/null",
        shell_quote(env!("CARGO_BIN_EXE_roger-sim")),
        shell_quote(discovery)
    )
}

/// The oauth profile: our server judged as any OAuth 2.0 server with the device grant, through its issuer, with
/// approvals by command and an accounts file that names only the client and the scope.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn our_server_as_a_generic_oauth_server() {
    let server =
        start(ServerConfig { plain_http: true, seed: Some(13), ..ServerConfig::default() }).await.expect("server");
    let dir = common::temp_dir("conform-oauth");
    let accounts = dir.join("client.toml");
    // Our server wants a model and a serial on a registration (docs/protocol.md §3.7): parameters beyond the RFC.
    let text = "client_id = \"emb-conform\"\nscope = \"roger.device\"\n\n[device_authorization]\n\
                device_model = \"Generic\"\ndevice_serial = \"OAUTH-1\"\n";
    std::fs::write(&accounts, text).expect("accounts");
    let mut args = ServerArgs::new(String::new(), accounts);
    args.discovery = None;
    args.issuer = Some(server.info.api.clone());
    args.profile = Some(Profile::Oauth);
    args.approve_command = Some(phone_approver(&server.info.discovery));
    args.allow_loopback_http = true;
    args.common = CommonArgs { seed: Some(13), quiet: true, ..CommonArgs::new() };
    let report = run_server(&args).await.expect("the run starts");
    println!("{}", report.terminal());
    assert_eq!(report.profile, Some(Profile::Oauth));
    let mut judged = 0;
    for c in &report.cases {
        if c.reason.starts_with("not a Roger server") {
            assert_eq!(c.verdict, Verdict::Skip, "{}", c.id);
            continue;
        }
        if c.id.starts_with("roger/R-DISC-2/server-") {
            assert_eq!(c.verdict, Verdict::Skip, "{}: no TLS over plain HTTP", c.id);
            continue;
        }
        judged += 1;
        assert!(matches!(c.verdict, Verdict::Pass), "{} {}: {}\n{:#?}", c.verdict, c.id, c.reason, c.evidence);
    }
    assert!(judged >= 12, "{judged} cases judged a generic server");
    assert_eq!(report.exit_code, 0);
    server.stop().await;
    let _ = std::fs::remove_dir_all(dir);
}

/// RFC 8414 §5: an OpenID provider's metadata at `/.well-known/openid-configuration`; no `roger_api_version`, so
/// the oauth profile is chosen, with a line saying so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_openid_configuration_is_read_with_a_note() {
    use axum::routing::get;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let issuer = format!("http://{}", listener.local_addr().expect("addr"));
    let doc = serde_json::json!({
        "issuer": issuer,
        "token_endpoint": format!("{issuer}/token"),
        "response_types_supported": ["code"],
    });
    let app = axum::Router::new().route(
        "/.well-known/openid-configuration",
        get(move || {
            let doc = doc.clone();
            async move { axum::Json(doc) }
        }),
    );
    let task = tokio::spawn(async move { axum::serve(listener, app).await });
    let dir = common::temp_dir("conform-oidc");
    let accounts = dir.join("client.toml");
    std::fs::write(&accounts, "client_id = \"printer\"\n").expect("accounts");
    let mut args = ServerArgs::new(String::new(), accounts);
    args.discovery = None;
    args.issuer = Some(issuer.clone());
    args.allow_loopback_http = true;
    args.common = CommonArgs {
        seed: Some(14),
        quiet: true,
        cases: vec!["rfc8414/3.3/server-metadata".into(), "roger/R-META-1/server-metadata-roger-members".into()],
        ..CommonArgs::new()
    };
    let report = run_server(&args).await.expect("the run starts");
    println!("{}", report.terminal());
    assert_eq!(report.profile, Some(Profile::Oauth));
    assert!(report.notes.iter().any(|n| n.contains("no roger_api_version")), "{:?}", report.notes);
    assert!(report.notes.iter().any(|n| n.contains("openid-configuration")), "{:?}", report.notes);
    assert!(report.terminal().contains("openid-configuration"));
    assert_eq!(report.cases[0].verdict, Verdict::Pass, "{:#?}", report.cases[0]);
    assert_eq!(report.cases[1].verdict, Verdict::Skip);
    assert!(report.cases[1].reason.starts_with("not a Roger server"));
    assert_eq!(report.exit_code, 0);
    task.abort();
    let _ = std::fs::remove_dir_all(dir);
}

// ---------------------------------------------------------------------------------------------------------------
// Tolerance: our server made to answer as servers nobody here wrote do (the `deviation` fault of
// roger-sim/src/server/faults.rs). For each deviation the kit gives the right verdict: PASS, or NON-STRICT / INFO
// where a Roger choice is missed, never FAIL for what the RFCs allow. (`no_cache_headers` breaks RFC 6749 §5.1's MUST
// and is the one FAIL, of exactly the case that judges it.)

use roger_sim::conform::report::Report;
use roger_sim::server::faults::{Deviation, FaultKind, FaultPlan, FaultRule};

const DEVICE_AUTHORIZATION: &str = "/oauth/device_authorization";
const TOKEN: &str = "/oauth/token";

/// Cases that read device authorization answers and approve their codes.
const CODE_CASES: &[&str] = &[
    "rfc8628/3.2/server-device-authorization-answer",
    "rfc8628/6.1/server-user-codes",
    "rfc8628/3.5/server-access-denied",
    "rfc8628/3.5/server-device-code-expires",
    "roger/R-TOK-2/server-rotates-refresh-tokens",
    "roger/R-QR-2/server-lookup-shows-printer",
    "roger/R-QR-3/server-session-code-lifetime",
    "rfc7009/2.1/server-revocation-cascades",
];

/// Cases that read token answers.
const TOKEN_CASES: &[&str] = &[
    "rfc8628/3.5/server-access-denied",
    "roger/R-TOK-2/server-rotates-refresh-tokens",
    "roger/R-TOK-3/server-reuse-revokes-family",
    "rfc7009/2.1/server-revocation-cascades",
    "roger/R-SEC-1/server-no-store",
    "roger/sec8/server-step2-bound-to-session-user",
    "rfc6749/5.2/server-oauth-errors-for-bad-input",
];

/// Runs `cases` against our server with `deviation` on `routes`, and checks that no case FAILs (but `fails`), and
/// that each of `expect` comes to its verdict.
async fn deviation(
    seed: u64,
    deviation: Deviation,
    routes: &[&str],
    cases: &[&str],
    expect: &[(&str, Verdict)],
    fails: &[&str],
) -> Report {
    let report = deviation_report(seed, deviation, routes, cases).await;
    println!("deviation {}:\n{}", deviation.name(), report.terminal());
    assert_eq!(report.cases.len(), cases.len());
    for c in &report.cases {
        if fails.contains(&c.id.as_str()) {
            assert_eq!(c.verdict, Verdict::Fail, "{}: {}", c.id, c.reason);
            continue;
        }
        assert_ne!(
            c.verdict,
            Verdict::Fail,
            "{} must not FAIL for {}: {}\n{:#?}",
            c.id,
            deviation.name(),
            c.reason,
            c.evidence
        );
    }
    for (id, want) in expect {
        let c = report.cases.iter().find(|c| c.id == *id).expect("the case ran");
        assert_eq!(c.verdict, *want, "{id} for {}: {}", deviation.name(), c.reason);
    }
    report
}

const DA_ANSWER: &str = "rfc8628/3.2/server-device-authorization-answer";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deviation_hyphenated_user_code() {
    let r = deviation(
        21,
        Deviation::HyphenatedUserCode,
        &[DEVICE_AUTHORIZATION],
        CODE_CASES,
        &[(DA_ANSWER, Verdict::Info)],
        &[],
    )
    .await;
    assert!(r.cases.iter().any(|c| c.id == DA_ANSWER && c.reason.contains("without separator")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deviation_lowercase_user_code() {
    deviation(
        22,
        Deviation::LowercaseUserCode,
        &[DEVICE_AUTHORIZATION],
        CODE_CASES,
        &[(DA_ANSWER, Verdict::Info)],
        &[],
    )
    .await;
}

/// A code of another alphabet and length: this server cannot approve it, so only the cases that read the answer
/// run; the entropy case looks past the fixed suffix.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deviation_foreign_user_code() {
    let cases = [DA_ANSWER, "rfc8628/6.1/server-user-codes", "rfc8628/3.5/server-answers-slow-down"];
    let expect = [(DA_ANSWER, Verdict::Info), ("rfc8628/6.1/server-user-codes", Verdict::Pass)];
    deviation(23, Deviation::ForeignUserCode, &[DEVICE_AUTHORIZATION], &cases, &expect, &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deviation_verification_url() {
    // `verification_uri` is REQUIRED (RFC 8628 §3.2): the answer case FAILs, and only it; the kit's own moves read
    // `verification_url` (docs/protocol.md §7), so nothing else cascades.
    let r = deviation(24, Deviation::VerificationUrl, &[DEVICE_AUTHORIZATION], CODE_CASES, &[], &[DA_ANSWER]).await;
    assert!(r.cases.iter().any(|c| c.id == DA_ANSWER && c.reason.contains("verification_url")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deviation_no_interval() {
    let mut cases = CODE_CASES.to_vec();
    cases.push("rfc8628/3.5/server-answers-slow-down");
    deviation(25, Deviation::NoInterval, &[DEVICE_AUTHORIZATION], &cases, &[(DA_ANSWER, Verdict::Info)], &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deviation_expires_in_string() {
    let mut cases = CODE_CASES.to_vec();
    cases.push("roger/R-TOK-3/server-reuse-revokes-family");
    let expect = [(DA_ANSWER, Verdict::Info), ("rfc8628/3.5/server-device-code-expires", Verdict::Pass)];
    deviation(26, Deviation::ExpiresInString, &[DEVICE_AUTHORIZATION, TOKEN], &cases, &expect, &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deviation_no_verification_uri_complete() {
    deviation(
        27,
        Deviation::NoVerificationUriComplete,
        &[DEVICE_AUTHORIZATION],
        CODE_CASES,
        &[(DA_ANSWER, Verdict::Info)],
        &[],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deviation_token_type_lowercase() {
    let expect = [("roger/R-TOK-2/server-rotates-refresh-tokens", Verdict::Pass)];
    deviation(28, Deviation::TokenTypeLowercase, &[TOKEN], TOKEN_CASES, &expect, &[]).await;
}

/// RFC 6749 §3.3 lets a server narrow the scope: step 2 without `roger.scan` misses a Roger expectation only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deviation_scope_subset() {
    let expect = [
        ("roger/R-TOK-2/server-rotates-refresh-tokens", Verdict::Pass),
        ("roger/sec8/server-step2-bound-to-session-user", Verdict::NonStrict),
    ];
    deviation(29, Deviation::ScopeSubset, &[TOKEN], TOKEN_CASES, &expect, &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deviation_scope_array() {
    deviation(30, Deviation::ScopeArray, &[TOKEN], TOKEN_CASES, &[], &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deviation_extra_members() {
    let mut cases = CODE_CASES.to_vec();
    cases.extend(["rfc8414/3.3/server-metadata", "roger/R-TOK-3/server-reuse-revokes-family"]);
    let routes = [DEVICE_AUTHORIZATION, TOKEN, "/.well-known/oauth-authorization-server"];
    let expect: Vec<(&str, Verdict)> = cases.iter().map(|c| (*c, Verdict::Pass)).collect();
    deviation(31, Deviation::ExtraMembers, &routes, &cases, &expect, &[]).await;
}

/// OAuth errors sent with 200 (GitHub's device flow): the error codes are right, the status is INFO.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deviation_error_with_status_200() {
    let expect = [
        ("rfc8628/3.5/server-access-denied", Verdict::Info),
        ("roger/R-TOK-2/server-rotates-refresh-tokens", Verdict::Pass),
    ];
    deviation(32, Deviation::ErrorWithStatus200, &[TOKEN], TOKEN_CASES, &expect, &[]).await;
}

/// The job list with gaps (a job without pages, one without a file name): the Roger jobs cases do not FAIL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deviation_job_list_gaps() {
    let cases = ["roger/sec9/server-release-idempotent", "roger/sec9/server-release-foreign-job-404"];
    deviation(33, Deviation::JobListGaps, &["/api/v1/jobs"], &cases, &[], &[]).await;
}

/// No `Cache-Control: no-store` breaks RFC 6749 §5.1's MUST: the one deviation that FAILs, and only the case that
/// judges it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deviation_no_cache_headers_fails_only_no_store() {
    let no_store = "roger/R-SEC-1/server-no-store";
    let cases = [no_store, "roger/R-TOK-2/server-rotates-refresh-tokens"];
    let expect = [("roger/R-TOK-2/server-rotates-refresh-tokens", Verdict::Pass)];
    let routes = [DEVICE_AUTHORIZATION, TOKEN];
    let probe = deviation_report(35, Deviation::NoCacheHeaders, &routes, &cases).await;
    let c = probe.cases.iter().find(|c| c.id == no_store).expect("ran");
    assert_eq!(c.verdict, Verdict::Fail, "{}", c.reason);
    assert!(c.reason.contains("without Cache-Control: no-store"), "{}", c.reason);
    deviation(34, Deviation::NoCacheHeaders, &routes, &cases, &expect, &[no_store]).await;
}

/// The report of `cases` with `deviation` on `routes`, unjudged.
async fn deviation_report(seed: u64, deviation: Deviation, routes: &[&str], cases: &[&str]) -> Report {
    let server =
        start(ServerConfig { plain_http: true, seed: Some(seed), ..ServerConfig::default() }).await.expect("server");
    let rules = routes
        .iter()
        .map(|route| FaultRule {
            route: (*route).to_owned(),
            grant_type: None,
            fault: FaultKind::Deviation,
            probability: 1.0,
            count: None,
            delay_ms: None,
            status: None,
            retry_after: None,
            deviation: Some(deviation),
        })
        .collect();
    server.shared.faults.set(FaultPlan { seed, rules }).expect("the fault plan");
    let mut args = ServerArgs::new(server.info.discovery.clone(), fixture());
    args.allow_loopback_http = true;
    args.common = CommonArgs {
        seed: Some(seed),
        quiet: true,
        cases: cases.iter().map(|c| (*c).to_owned()).collect(),
        ..CommonArgs::new()
    };
    let report = run_server(&args).await.expect("the run starts");
    server.stop().await;
    report
}
