//! Heap allocations per token-endpoint request, through roger-sim's whole API router (its middleware layers, the
//! handler, the core, the answer), beside the same count for an axum hello-world route: the server benchmark's
//! throughput (`benches/benches/server.rs`) is bounded by per-request work, and on this 2-core machine a large share
//! of that work is the allocator. Counts are deterministic where timings are not, so this file pins them: a change
//! that adds allocations to the hot path fails here, with the numbers, instead of showing up as noise in a bench.
//!
//! The requests go through `tower::ServiceExt::oneshot` on a current-thread runtime, so hyper's own connection
//! buffers (the same for both routers) are not counted. The counter counts only allocations made on this thread
//! while counting is on (a thread-local flag), so the test harness's threads cannot disturb it.
//!
//! `cargo test --release -p roger-benches --test server_allocs -- --nocapture` prints the table.

use std::convert::Infallible;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::routing::post;
use axum::Router;
use http::header::CONTENT_TYPE;
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use roger_benches::alloc_count::{self, counted, set_counting, CountingAllocator};
use roger_benches::core_setup::{app_principal, drain, register_printer, registration_code, MFP};
use roger_proto::device_authorization::DeviceAuthorizationRequest;
use roger_proto::metadata::GRANT_DEVICE_CODE;
use roger_sim::server::run::router;
use roger_sim::server::{start, ServerConfig};
use tower::ServiceExt;

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

/// Requests measured per kind (after one unmeasured warm-up request, which fills lazily grown tables).
const REQUESTS: usize = 64;

/// Upper bounds, allocations per request, measured through the router (see the module documentation). Raise one
/// only with a reason in the commit message.
const MAX_REFRESH: usize = 28;
const MAX_PENDING_POLL: usize = 24;

fn form_request(path: &str, body: impl Into<Body>) -> Request<Body> {
    Request::post(path)
        .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(body.into())
        .expect("a valid request")
}

/// Sends `body` to `router`, returns the status and the answer's body; counts allocations when `count` is set.
async fn send<S>(service: &S, path: &str, body: impl Into<Body>, count: bool) -> (usize, StatusCode, Bytes)
where
    S: tower::Service<Request<Body>, Response = axum::response::Response, Error = Infallible> + Clone,
{
    let req = form_request(path, body);
    let before = alloc_count::Counts::now();
    set_counting(count);
    let Ok(resp) = service.clone().oneshot(req).await;
    let status = resp.status();
    let bytes = resp.into_body().collect().await.expect("the body").to_bytes();
    set_counting(false);
    ((alloc_count::Counts::now() - before).allocations.unsigned_abs(), status, bytes)
}

fn json_string(body: &[u8], name: &str) -> String {
    let v: serde_json::Value = serde_json::from_slice(body).expect("a JSON answer");
    v[name].as_str().unwrap_or_else(|| panic!("no {name} in {v}")).to_owned()
}

fn registration_request(i: usize) -> DeviceAuthorizationRequest {
    DeviceAuthorizationRequest::registration(MFP, "MX-4050", &format!("SN-{i:06}"))
}

async fn hello(_body: Bytes) -> &'static str {
    "Hello, World!"
}

struct Counts {
    hello: f64,
    refresh: f64,
    poll: f64,
}

async fn measure() -> Counts {
    let server = start(ServerConfig { plain_http: true, seed: Some(1), ..ServerConfig::default() })
        .await
        .expect("roger-sim starts");
    let shared = server.shared.clone();
    let app = router(shared.clone());

    // Printers and pending codes, straight through the core, as the benchmark sets them up.
    let (mut tokens, polls) = {
        let now = shared.now();
        let mut core = shared.core.lock().expect("core lock");
        let admin = app_principal(&mut core, now, "acme", "admin", "admin-pass");
        let tokens: Vec<String> = (0..REQUESTS + 1)
            .map(|i| {
                let t = register_printer(&mut core, now, &admin, &registration_request(i));
                t.refresh_token.expect("a refresh token").secret().to_owned()
            })
            .collect();
        let mut settings = *core.defaults();
        settings.interval_secs = 1;
        core.set_settings(settings);
        drain(&mut core);
        let polls: Vec<Vec<u8>> = (0..REQUESTS + 1)
            .map(|i| {
                let code = registration_code(&mut core, now, &registration_request(10_000 + i));
                roger_proto::wire::encode_form([
                    ("grant_type", Some(GRANT_DEVICE_CODE)),
                    ("device_code", Some(code.device_code.secret())),
                    ("client_id", Some(MFP)),
                ])
            })
            .collect();
        (tokens, polls)
    };

    let mut refresh = 0;
    for (i, token) in tokens.iter_mut().enumerate() {
        let body = format!("grant_type=refresh_token&refresh_token={token}&client_id={MFP}");
        let (n, status, answer) = send(&app, "/oauth/token", body, i > 0).await;
        assert_eq!(status, StatusCode::OK, "refresh: {}", String::from_utf8_lossy(&answer));
        *token = json_string(&answer, "refresh_token");
        refresh += n;
    }

    let mut poll = 0;
    for (i, body) in polls.into_iter().enumerate() {
        let (n, status, answer) = send(&app, "/oauth/token", body, i > 0).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(json_string(&answer, "error"), "authorization_pending");
        poll += n;
    }

    let hello_app = Router::new().route("/hello", post(hello));
    let sample = format!("grant_type=refresh_token&refresh_token=rrt_{}&client_id={MFP}", "A".repeat(63));
    let mut hello_total = 0;
    for i in 0..=REQUESTS {
        let (n, status, answer) = send(&hello_app, "/hello", sample.clone(), i > 0).await;
        assert_eq!((status, &answer[..]), (StatusCode::OK, &b"Hello, World!"[..]));
        hello_total += n;
    }
    server.stop().await;

    let per = |total: usize| total as f64 / REQUESTS as f64;
    Counts { hello: per(hello_total), refresh: per(refresh), poll: per(poll) }
}

#[test]
fn token_endpoint_allocations_per_request() {
    // The counter works: a Vec allocates.
    let (counts, v) = counted(|| Vec::<u8>::with_capacity(16));
    assert!(counts.allocations >= 1, "the counting allocator counts");
    drop(v);

    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let counts = rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(120), measure()).await.expect("measured within two minutes")
    });
    println!("allocations per request through the router ({REQUESTS} requests each):");
    println!("  axum hello-world                 {:6.1}", counts.hello);
    println!("  refresh_token (rotation)         {:6.1}  (bound {MAX_REFRESH})", counts.refresh);
    println!("  device_code (pending)            {:6.1}  (bound {MAX_PENDING_POLL})", counts.poll);
    assert!(counts.refresh <= MAX_REFRESH as f64, "a refresh allocates {} times (bound {MAX_REFRESH})", counts.refresh);
    assert!(
        counts.poll <= MAX_PENDING_POLL as f64,
        "a pending poll allocates {} times (bound {MAX_PENDING_POLL})",
        counts.poll
    );
}
