//! Parsing benchmarks (DESIGN.md "Benchmarks"): each roger-proto parser beside bare `serde_json` into a plain
//! struct with the same members, measured in the same run; the reporter prints the ratios at the end.
//!
//! `cargo bench -p roger-benches --bench parse` (add `-- --warm-up-time 1 --measurement-time 2` for a quick run).

use std::hint::black_box;
use std::time::{Duration, SystemTime};

use criterion::{criterion_group, Criterion};
use roger_benches::baseline::{PlainDeviceAuthorizationResponse, PlainPushEnvelope, PlainTokenResponse};
use roger_benches::{fixtures, Comparison};

/// The rows of the report: `(group, function)` ids as registered below.
const COMPARISONS: [Comparison; 5] = [
    Comparison {
        name: "token response: token::classify(&http::Response)",
        ours: ("token_response", "roger_classify"),
        baseline: ("token_response", "serde_json_plain"),
    },
    Comparison {
        name: "token response: serde_json -> TokenResponse",
        ours: ("token_response", "roger_serde"),
        baseline: ("token_response", "serde_json_plain"),
    },
    Comparison {
        name: "device authorization: device_authorization::classify",
        ours: ("device_authorization", "roger_classify"),
        baseline: ("device_authorization", "serde_json_plain"),
    },
    Comparison {
        name: "device authorization: serde_json -> DeviceAuthorizationResponse",
        ours: ("device_authorization", "roger_serde"),
        baseline: ("device_authorization", "serde_json_plain"),
    },
    Comparison {
        name: "push envelope: PushEnvelope::parse",
        ours: ("push_envelope", "roger_parse"),
        baseline: ("push_envelope", "serde_json_plain"),
    },
];

fn response(body: &str) -> http::Response<Vec<u8>> {
    let mut r = http::Response::new(body.as_bytes().to_vec());
    r.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
    r
}

fn token_response(c: &mut Criterion) {
    let resp = response(fixtures::TOKEN_RESPONSE);
    let bytes = fixtures::TOKEN_RESPONSE.as_bytes();
    let mut g = c.benchmark_group("token_response");
    g.bench_function("roger_classify", |b| b.iter(|| roger_proto::token::classify(black_box(&resp))));
    g.bench_function("roger_serde", |b| {
        b.iter(|| serde_json::from_slice::<roger_proto::token::TokenResponse>(black_box(bytes)))
    });
    g.bench_function("serde_json_plain", |b| b.iter(|| serde_json::from_slice::<PlainTokenResponse>(black_box(bytes))));
    g.finish();
}

fn device_authorization(c: &mut Criterion) {
    let resp = response(fixtures::DEVICE_AUTHORIZATION_RESPONSE);
    let bytes = fixtures::DEVICE_AUTHORIZATION_RESPONSE.as_bytes();
    let mut g = c.benchmark_group("device_authorization");
    g.bench_function("roger_classify", |b| b.iter(|| roger_proto::device_authorization::classify(black_box(&resp))));
    g.bench_function("roger_serde", |b| {
        b.iter(|| {
            serde_json::from_slice::<roger_proto::device_authorization::DeviceAuthorizationResponse>(black_box(bytes))
        })
    });
    g.bench_function("serde_json_plain", |b| {
        b.iter(|| serde_json::from_slice::<PlainDeviceAuthorizationResponse>(black_box(bytes)))
    });
    g.finish();
}

fn push_envelope(c: &mut Criterion) {
    let bytes = fixtures::PUSH_ENVELOPE.as_bytes();
    let mut g = c.benchmark_group("push_envelope");
    g.bench_function("roger_parse", |b| b.iter(|| roger_proto::push::PushEnvelope::parse(black_box(bytes))));
    g.bench_function("serde_json_plain", |b| b.iter(|| serde_json::from_slice::<PlainPushEnvelope>(black_box(bytes))));
    g.finish();
}

criterion_group!(parse, token_response, device_authorization, push_envelope);

fn main() {
    // Estimates written by this run only (2 s of slack for file systems with coarse timestamps).
    let started = SystemTime::now() - Duration::from_secs(2);
    parse();
    Criterion::default().configure_from_args().final_summary();
    roger_benches::report("parse benchmarks", &COMPARISONS, started);
}
