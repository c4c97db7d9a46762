//! The async driver and the reqwest transport against crafted answers (wiremock) and a raw TCP listener for
//! what wiremock cannot do (a reset connection, a hung answer). Times run on a [`ScaledClock`], so a 5 s
//! interval passes in 5 s / FACTOR of real time; gaps are measured at the server and scaled back.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use roger_proto::device_authorization::DeviceAuthorizationResponse;
use roger_proto::driver::reqwest_transport::ReqwestTransport;
use roger_proto::driver::{Driver, ScaledClock};
use roger_proto::lifecycle::{Connection, ConnectionState, LifecycleConfig, LifecycleEvent};
use roger_proto::metadata::{AuthorizationServerMetadata, Endpoints};
use roger_proto::poller::{DevicePoller, PollResult, PollerConfig};
use roger_proto::PeerViolation;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use wiremock::matchers::{body_string_contains, method, path};
use wiremock::{Mock, MockServer, Respond, ResponseTemplate};

const FACTOR: u32 = 50;

/// Answers a scripted sequence (the last one repeats) and records when each request arrived.
#[derive(Clone)]
struct Script {
    answers: Arc<Mutex<Vec<ResponseTemplate>>>,
    arrivals: Arc<Mutex<Vec<Instant>>>,
}

impl Script {
    fn new(answers: Vec<ResponseTemplate>) -> Self {
        Self { answers: Arc::new(Mutex::new(answers)), arrivals: Arc::default() }
    }

    /// Gaps between arrivals, scaled to the virtual clock.
    fn virtual_gaps(&self) -> Vec<Duration> {
        let a = self.arrivals.lock().unwrap();
        a.windows(2).map(|w| (w[1] - w[0]) * FACTOR).collect()
    }
}

impl Respond for Script {
    fn respond(&self, _: &wiremock::Request) -> ResponseTemplate {
        self.arrivals.lock().unwrap().push(Instant::now());
        let mut answers = self.answers.lock().unwrap();
        if answers.len() > 1 {
            answers.remove(0)
        } else {
            answers[0].clone()
        }
    }
}

fn oauth_error(status: u16, code: &str) -> ResponseTemplate {
    ResponseTemplate::new(status).set_body_raw(format!(r#"{{"error":"{code}"}}"#), "application/json")
}

fn token_ok() -> ResponseTemplate {
    ResponseTemplate::new(200).insert_header("cache-control", "no-store").set_body_raw(
        r#"{"access_token":"at-1","token_type":"Bearer","expires_in":1200,"refresh_token":"rt-1","scope":"roger.device","device_id":"dev-1","tenant_id":"acme"}"#,
        "application/json",
    )
}

fn auth(interval: u64) -> DeviceAuthorizationResponse {
    DeviceAuthorizationResponse {
        device_code: "dc-1".into(),
        user_code: "WDJBMJHT".into(),
        verification_uri: "http://127.0.0.1/device".into(),
        verification_uri_complete: None,
        expires_in: 600,
        interval: Some(interval),
        request_id: Some("req-1".into()),
    }
}

fn driver() -> Driver<ReqwestTransport, ScaledClock> {
    Driver::with_clock(ReqwestTransport::new(None).unwrap(), ScaledClock::new(FACTOR))
        .request_timeout(Duration::from_millis(500))
}

async fn poll_against(answers: Vec<ResponseTemplate>, interval: u64) -> (PollResult, Script) {
    let server = MockServer::start().await;
    let script = Script::new(answers);
    Mock::given(method("POST")).and(path("/oauth/token")).respond_with(script.clone()).mount(&server).await;
    let d = driver();
    let mut poller = DevicePoller::new(d.clock_now(), &auth(interval), "emb-acme", PollerConfig::default());
    let result = d.run_poller(&format!("{}/oauth/token", server.uri()), &mut poller, || None).await.unwrap();
    (result, script)
}

trait ClockNow {
    fn clock_now(&self) -> Instant;
}

impl ClockNow for Driver<ReqwestTransport, ScaledClock> {
    fn clock_now(&self) -> Instant {
        use roger_proto::driver::Clock;
        self.clock().now()
    }
}

/// Allow for scheduling jitter of the test machine, scaled: 60 ms real = 3 s virtual is far too much, so
/// compare with a tolerance of 0.5 s virtual (10 ms real) below the rule.
fn at_least(gap: Duration, rule: Duration) -> bool {
    gap + Duration::from_millis(500) >= rule
}

/// RFC 8628 §3.5: slow_down twice → 6 s then 11 s between polls (interval 1 s), then success.
#[tokio::test]
async fn slow_down_twice_then_success() {
    let (result, script) = poll_against(
        vec![
            oauth_error(400, "slow_down"),
            oauth_error(400, "slow_down"),
            oauth_error(400, "authorization_pending"),
            token_ok(),
        ],
        1,
    )
    .await;
    assert!(matches!(result, PollResult::Granted(ref t) if t.device_id.as_deref() == Some("dev-1")), "{result:?}");
    let gaps = script.virtual_gaps();
    assert_eq!(gaps.len(), 3);
    assert!(at_least(gaps[0], Duration::from_secs(6)), "{gaps:?}");
    assert!(at_least(gaps[1], Duration::from_secs(11)), "{gaps:?}");
    assert!(at_least(gaps[2], Duration::from_secs(11)), "the interval never goes back down: {gaps:?}");
}

/// A 200 carrying {"error":"authorization_pending"} is a pending answer, not a success or a failure.
#[tokio::test]
async fn ok_status_with_error_body_keeps_polling() {
    let (result, script) = poll_against(vec![oauth_error(200, "authorization_pending"), token_ok()], 1).await;
    assert!(matches!(result, PollResult::Granted(_)), "{result:?}");
    assert_eq!(script.arrivals.lock().unwrap().len(), 2);
}

/// PROTOCOL.md §12: a 503 with an HTML body is retryable and doubles the wait (2 s after a 1 s interval).
#[tokio::test]
async fn html_503_is_retried_with_doubled_wait() {
    let html = ResponseTemplate::new(503).set_body_raw("<html><h1>503 Service Unavailable</h1></html>", "text/html");
    let (result, script) = poll_against(vec![html.clone(), html, token_ok()], 1).await;
    assert!(matches!(result, PollResult::Granted(_)), "{result:?}");
    let gaps = script.virtual_gaps();
    assert!(at_least(gaps[0], Duration::from_secs(2)), "{gaps:?}");
    assert!(at_least(gaps[1], Duration::from_secs(4)), "{gaps:?}");
}

/// PROTOCOL.md §12: 429 + Retry-After → wait the longer of the two.
#[tokio::test]
async fn too_many_requests_honours_retry_after() {
    let limited = ResponseTemplate::new(429).insert_header("retry-after", "9").set_body_raw("slow", "text/plain");
    let (result, script) = poll_against(vec![limited, token_ok()], 1).await;
    assert!(matches!(result, PollResult::Granted(_)), "{result:?}");
    assert!(at_least(script.virtual_gaps()[0], Duration::from_secs(9)), "{:?}", script.virtual_gaps());
}

/// A 200 with garbage JSON ends the flow with a typed, reported violation (no panic, no endless loop).
#[tokio::test]
async fn garbage_success_is_a_typed_failure() {
    let garbage = ResponseTemplate::new(200).set_body_raw("{\"access_token\": [1,2", "application/json");
    let (result, _) = poll_against(vec![garbage], 1).await;
    match result {
        PollResult::Failed(e) => {
            assert!(matches!(
                e,
                roger_proto::ResponseError::Malformed { violation: PeerViolation::MalformedSuccessBody, .. }
            ))
        }
        other => panic!("{other:?}"),
    }
}

/// access_denied stops polling at once (RFC 8628 §3.5).
#[tokio::test]
async fn denied_stops() {
    let (result, script) = poll_against(vec![oauth_error(400, "access_denied"), token_ok()], 1).await;
    assert_eq!(result, PollResult::Denied);
    assert_eq!(script.arrivals.lock().unwrap().len(), 1);
}

/// The lifecycle registers a printer end to end over HTTP (PROTOCOL.md §5) with metadata validation.
#[tokio::test]
async fn lifecycle_registers_over_http() {
    let server = MockServer::start().await;
    let api = server.uri();
    let meta = AuthorizationServerMetadata::for_api(&api, false);
    Mock::given(method("GET"))
        .and(path("/.well-known/oauth-authorization-server"))
        .respond_with(ResponseTemplate::new(200).set_body_json(&meta))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/oauth/device_authorization"))
        .and(body_string_contains("scope=roger.device"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(
            format!(
                r#"{{"device_code":"dc-1","user_code":"WDJBMJHT","verification_uri":"{api}/device","verification_uri_complete":"{api}/device?user_code=WDJBMJHT","expires_in":"600","interval":1,"request_id":"req-1"}}"#
            ),
            "application/json",
        ))
        .mount(&server)
        .await;
    let script = Script::new(vec![oauth_error(400, "authorization_pending"), token_ok()]);
    Mock::given(method("POST")).and(path("/oauth/token")).respond_with(script.clone()).mount(&server).await;

    let d = driver();
    let endpoints: Endpoints =
        d.metadata(&api, roger_proto::discovery::TransportPolicy::AllowLoopbackPlain).await.unwrap();
    let mut conn = Connection::new(LifecycleConfig::new("emb-acme", "MX-1", "SN-1"));
    let mut shown = None;
    let state = d
        .run_lifecycle(
            &endpoints,
            &mut conn,
            |ev| {
                if let LifecycleEvent::ShowRegistration { user_code_display, .. } = ev {
                    shown = Some(user_code_display.clone());
                }
            },
            |c, now| c.device_token(now).is_some(),
            None,
        )
        .await
        .unwrap();
    assert_eq!(state, ConnectionState::Connected);
    assert_eq!(shown.as_deref(), Some("WDJB-MJHT"));
    assert_eq!(conn.device_id(), Some("dev-1"));
}

/// docs/protocol.md §7: a server that publishes its metadata only at `/.well-known/openid-configuration` (Google,
/// Keycloak before 26.4; RFC 8414 §5) is read there, with the issuer check, and that is reported once through the
/// driver's sink.
#[tokio::test]
async fn metadata_at_the_openid_path_is_read_and_reported() {
    let server = MockServer::start().await;
    let api = server.uri();
    let meta = AuthorizationServerMetadata::for_api(&api, false);
    Mock::given(method("GET"))
        .and(path("/.well-known/openid-configuration"))
        .respond_with(ResponseTemplate::new(200).set_body_json(&meta))
        .mount(&server)
        .await;
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = seen.clone();
    let d = driver().on_peer_report(move |r| sink.lock().unwrap().push(r.to_string()));
    for _ in 0..2 {
        let e = d.metadata(&api, roger_proto::discovery::TransportPolicy::AllowLoopbackPlain).await.unwrap();
        assert_eq!(e.token, format!("{api}/oauth/token"));
    }
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1, "reported once: {seen:?}");
    assert!(seen[0].contains("openid-configuration") && seen[0].contains("RFC 8414 §5"), "{}", seen[0]);
    // The issuer check applies there too (R-META-1).
    let other = MockServer::start().await;
    let wrong = AuthorizationServerMetadata::for_api("http://127.0.0.1:1", false);
    Mock::given(method("GET"))
        .and(path("/.well-known/openid-configuration"))
        .respond_with(ResponseTemplate::new(200).set_body_json(&wrong))
        .mount(&other)
        .await;
    let err = d.metadata(&other.uri(), roger_proto::discovery::TransportPolicy::AllowLoopbackPlain).await.unwrap_err();
    assert!(matches!(err, roger_proto::driver::DriverError::Metadata(_)), "{err:?}");
}

/// An answer larger than the transport's cap fails as a transport error instead of filling the printer's memory
/// (a hostile or broken server; docs/protocol.md §7).
#[tokio::test]
async fn oversized_answers_are_cut_off() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/big"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(vec![b'x'; 4096], "application/json"))
        .mount(&server)
        .await;
    let t = ReqwestTransport::new(None).unwrap().max_body(1024);
    let req = http::Request::get(format!("{}/big", server.uri())).body(Vec::new()).unwrap();
    let e = roger_proto::driver::HttpTransport::send(&t, req).await.unwrap_err();
    assert!(e.message.contains("larger than 1024"), "{e}");
    let t = ReqwestTransport::new(None).unwrap().max_body(4096);
    let req = http::Request::get(format!("{}/big", server.uri())).body(Vec::new()).unwrap();
    assert_eq!(roger_proto::driver::HttpTransport::send(&t, req).await.unwrap().body().len(), 4096);
}

/// R-META-1: metadata whose issuer is not the API origin is refused.
#[tokio::test]
async fn wrong_issuer_refused() {
    let server = MockServer::start().await;
    let meta = AuthorizationServerMetadata::for_api("http://127.0.0.1:1", false);
    Mock::given(method("GET"))
        .and(path("/.well-known/oauth-authorization-server"))
        .respond_with(ResponseTemplate::new(200).set_body_json(&meta))
        .mount(&server)
        .await;
    let err = driver()
        .metadata(&server.uri(), roger_proto::discovery::TransportPolicy::AllowLoopbackPlain)
        .await
        .unwrap_err();
    assert!(matches!(err, roger_proto::driver::DriverError::Metadata(_)), "{err:?}");
}

/// What a raw connection does.
#[derive(Clone, Copy)]
enum Behaviour {
    /// Read the request, then close without answering (the answer is lost).
    Reset,
    /// Read the request and never answer.
    Hang,
    /// Answer with a token response.
    Answer,
}

/// A raw TCP listener serving one behaviour per connection (the last repeats), recording arrivals.
async fn raw_server(script: Vec<Behaviour>) -> (String, Arc<Mutex<Vec<Instant>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let arrivals: Arc<Mutex<Vec<Instant>>> = Arc::default();
    let rec = arrivals.clone();
    tokio::spawn(async move {
        let mut held = Vec::new();
        let mut n = 0usize;
        while let Ok((mut sock, _)) = listener.accept().await {
            let behaviour = script[n.min(script.len() - 1)];
            n += 1;
            let mut buf = vec![0u8; 8192];
            // Read until the end of the headers and the small form body.
            let mut got = 0;
            loop {
                match sock.read(&mut buf[got..]).await {
                    Ok(0) | Err(_) => break,
                    Ok(k) => got += k,
                }
                let text = String::from_utf8_lossy(&buf[..got]);
                if let Some(end) = text.find("\r\n\r\n") {
                    let len = text
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                        })
                        .unwrap_or(0);
                    if got >= end + 4 + len {
                        break;
                    }
                }
            }
            rec.lock().unwrap().push(Instant::now());
            match behaviour {
                Behaviour::Reset => drop(sock),
                Behaviour::Hang => held.push(sock),
                Behaviour::Answer => {
                    let body = r#"{"access_token":"at-1","token_type":"Bearer","expires_in":1200,"refresh_token":"rt-1","device_id":"dev-1"}"#;
                    let resp = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncache-control: no-store\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = sock.write_all(resp.as_bytes()).await;
                    let _ = sock.shutdown().await;
                }
            }
        }
    });
    (format!("http://{addr}"), arrivals)
}

/// A connection closed before the answer (a lost answer, R-DEV-1) is a transport error: the poller doubles its
/// wait and re-sends the same poll.
#[tokio::test]
async fn reset_connection_is_retried() {
    let (base, arrivals) = raw_server(vec![Behaviour::Reset, Behaviour::Answer]).await;
    let d = driver();
    let mut poller = DevicePoller::new(d.clock_now(), &auth(1), "emb-acme", PollerConfig::default());
    let result = d.run_poller(&format!("{base}/oauth/token"), &mut poller, || None).await.unwrap();
    assert!(matches!(result, PollResult::Granted(_)), "{result:?}");
    let a = arrivals.lock().unwrap();
    assert_eq!(a.len(), 2);
    assert!(at_least((a[1] - a[0]) * FACTOR, Duration::from_secs(2)));
}

/// A hung answer hits the request timeout and is retried like a lost answer.
#[tokio::test]
async fn hung_answer_times_out_and_is_retried() {
    let (base, arrivals) = raw_server(vec![Behaviour::Hang, Behaviour::Answer]).await;
    let d = driver();
    let mut poller = DevicePoller::new(d.clock_now(), &auth(1), "emb-acme", PollerConfig::default());
    let result = d.run_poller(&format!("{base}/oauth/token"), &mut poller, || None).await.unwrap();
    assert!(matches!(result, PollResult::Granted(_)), "{result:?}");
    assert_eq!(arrivals.lock().unwrap().len(), 2);
}

/// Nothing listening: connection refused is a transport error, retried until the code expires locally.
#[tokio::test]
async fn refused_connection_until_expiry() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let d = driver();
    let mut a = auth(1);
    a.expires_in = 20;
    let mut poller = DevicePoller::new(d.clock_now(), &a, "emb-acme", PollerConfig::default());
    let result = d.run_poller(&format!("http://{addr}/oauth/token"), &mut poller, || None).await.unwrap();
    assert_eq!(result, PollResult::Expired);
}
