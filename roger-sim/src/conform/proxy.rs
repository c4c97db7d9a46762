//! The judge's front door: a recording reverse proxy between the MFP under test and the kit's server (one listener
//! per upstream origin: the API and the drive), TLS with the kit's CA by default.
//!
//! Why a proxy: the server's own request log (`/sim/log`) leaves out what a judge of a *client* must see: the query
//! string (a bearer token there, RFC 6750 §2.3), which refresh token was presented (R-TOK-2), the secrets the
//! server handed out (so the shim's log and `state_dir` can be scanned for every one of them, R-SEC-1), the exact
//! `verification_uri_complete` the MFP received (R-QR-1), and the `Authorization` header of every request
//! (PROTOCOL.md §7). It also lets a case feed the MFP answers a server could send: extra JSON members (R-DISC-1), a
//! wrong issuer (R-META-1), an unknown `token_type` (RFC 6749 §7.1), a QR on a foreign origin (R-QR-4).
//!
//! The proxy rewrites every occurrence of an upstream origin in an answer (body and `Location`) to its own public
//! origin, so the MFP sees one consistent server (metadata `issuer` equals the API base it was given, RFC 8414
//! §3.3). A request the server answers by closing the connection (the `drop_response` fault) is answered the same
//! way: the proxy closes the MFP's connection without a response, so the MFP sees a lost answer. `/sim/` is not
//! reachable through the proxy.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use http::{header, HeaderMap, HeaderValue, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use roger_proto::driver::reqwest_transport::ReqwestTransport;
use roger_proto::driver::HttpTransport;
use roger_proto::metadata::GRANT_DEVICE_CODE;
use roger_proto::wire::Form;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::{watch, Notify};

use super::vault::Vault;

/// Largest request or answer body relayed (the server refuses API bodies over 64 KiB anyway; drive documents and
/// scans in the kit's fixture are small).
pub const MAX_BODY: usize = 16 * 1024 * 1024;
/// How long the proxy waits for the server (longer than the longest `delay` fault).
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(70);

/// The answer rewrites a case can switch on (each applies to every matching answer while set).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rewrites {
    /// R-DISC-1: add unknown members (an object, an array, a `null`) to every JSON object answer and to the objects
    /// in its top-level arrays.
    pub unknown_members: bool,
    /// Limits [`Rewrites::unknown_members`] to answers of this API path (`/oauth/token`: RFC 6749 §5.1 alone);
    /// `None`: every answer.
    pub unknown_members_path: Option<String>,
    /// R-META-1: the metadata `issuer` becomes this.
    pub issuer: Option<String>,
    /// RFC 6749 §7.1: `token_type` of token answers becomes this.
    pub token_type: Option<String>,
    /// R-QR-4: `verification_uri_complete` of device authorization answers moves to this origin (same path and
    /// query).
    pub verification_origin: Option<String>,
}

/// The member added by [`Rewrites::unknown_members`].
pub const UNKNOWN_MEMBER: &str = "x_conform_extension";

/// One request the MFP sent through the proxy and what it got.
#[derive(Debug, Clone)]
pub struct Exchange {
    /// Order of arrival.
    pub seq: u64,
    /// The listener (`api` or `drive`).
    pub route: &'static str,
    /// Arrival at the proxy.
    pub at: Instant,
    /// When the answer was sent (or the connection closed).
    pub done: Instant,
    /// Method.
    pub method: String,
    /// Path.
    pub path: String,
    /// Query string, if any.
    pub query: Option<String>,
    /// Request headers.
    pub headers: HeaderMap,
    /// Request body.
    pub body: Bytes,
    /// Status delivered, `None` when the MFP got no answer (connection closed).
    pub status: Option<u16>,
    /// Answer headers as delivered.
    pub resp_headers: HeaderMap,
    /// Answer body as delivered (after rewrites).
    pub resp_body: Bytes,
    /// Which rewrites changed this answer.
    pub rewritten: Vec<&'static str>,
}

impl Exchange {
    /// The request body as a form (`application/x-www-form-urlencoded`).
    pub fn form(&self) -> Option<Form> {
        let ct = self.headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
        if !ct.to_ascii_lowercase().starts_with("application/x-www-form-urlencoded") {
            return None;
        }
        Form::parse(&self.body).ok()
    }

    /// One form member of the request.
    pub fn form_get(&self, name: &str) -> Option<String> {
        self.form().and_then(|f| f.get(name).map(str::to_owned))
    }

    /// The answer as JSON.
    pub fn json(&self) -> Option<Value> {
        serde_json::from_slice(&self.resp_body).ok()
    }

    /// The answer's OAuth `error` (RFC 6749 §5.2).
    pub fn oauth_error(&self) -> Option<String> {
        self.json().and_then(|v| v.get("error").and_then(Value::as_str).map(str::to_owned))
    }

    /// The `Authorization: Bearer` credential of the request.
    pub fn bearer(&self) -> Option<String> {
        let v = self.headers.get(header::AUTHORIZATION)?.to_str().ok()?;
        let (scheme, token) = v.split_once(' ')?;
        scheme.eq_ignore_ascii_case("bearer").then(|| token.trim().to_owned())
    }

    /// Whether the request is `POST {path}` on the API.
    pub fn is(&self, method: &str, path: &str) -> bool {
        self.route == "api" && self.method == method && self.path == path
    }

    /// The token request's `grant_type`, for `POST /oauth/token`.
    pub fn grant_type(&self) -> Option<String> {
        if self.is("POST", "/oauth/token") {
            self.form_get("grant_type")
        } else {
            None
        }
    }

    /// Whether this is a device-code poll (RFC 8628 §3.4).
    pub fn is_poll(&self) -> bool {
        self.grant_type().as_deref() == Some(GRANT_DEVICE_CODE)
    }

    /// Whether a `2xx` answer was delivered that is not an OAuth error: a `200` with `{"error":…}` (GitHub's device
    /// flow) is that error, as clients read it (docs/protocol.md §7).
    pub fn delivered_ok(&self) -> bool {
        self.status.is_some_and(|s| (200..300).contains(&s)) && self.oauth_error().is_none()
    }

    /// A one-line, redacted description: `POST /oauth/token grant_type=… → 400 slow_down`.
    pub fn describe(&self, vault: &Vault) -> String {
        let mut s = format!("{} {}", self.method, self.path);
        if let Some(q) = &self.query {
            s.push('?');
            s.push_str(q);
        }
        if self.route != "api" {
            s = format!("[{}] {s}", self.route);
        }
        if let Some(form) = self.form() {
            let shown: Vec<String> = ["grant_type", "client_id", "scope", "username", "token_type_hint"]
                .iter()
                .filter_map(|k| form.get(k).map(|v| format!("{k}={v}")))
                .chain(
                    ["device_code", "refresh_token", "password", "token"]
                        .iter()
                        .filter_map(|k| form.get(k).map(|v| format!("{k}={v}"))),
                )
                .collect();
            if !shown.is_empty() {
                s.push(' ');
                s.push_str(&shown.join(" "));
            }
        }
        if self.headers.contains_key(header::AUTHORIZATION) {
            let scheme = self
                .headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.split(' ').next())
                .unwrap_or("?");
            s.push_str(&format!(" [Authorization: {scheme} …]"));
        }
        match self.status {
            None => s.push_str(" → no answer (connection closed)"),
            Some(st) => {
                s.push_str(&format!(" → {st}"));
                if let Some(e) = self.oauth_error() {
                    s.push(' ');
                    s.push_str(&e);
                }
            }
        }
        if !self.rewritten.is_empty() {
            s.push_str(&format!(" (answer rewritten by the kit: {})", self.rewritten.join(", ")));
        }
        vault.redact(&s)
    }
}

/// Everything the proxy saw, shared with the case.
#[derive(Debug, Default)]
pub struct Recorder {
    exchanges: Mutex<Vec<Exchange>>,
    vault: Mutex<Vault>,
    tls_failures: Mutex<Vec<String>>,
    rewrites: Mutex<Rewrites>,
    changed: Notify,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Recorder {
    /// All exchanges so far, in arrival order.
    pub fn exchanges(&self) -> Vec<Exchange> {
        lock(&self.exchanges).clone()
    }

    /// The number of exchanges so far.
    pub fn len(&self) -> usize {
        lock(&self.exchanges).len()
    }

    /// Whether nothing arrived yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The secrets seen so far (handed out by the server, or registered by the case).
    pub fn vault(&self) -> Vault {
        lock(&self.vault).clone()
    }

    /// Registers a secret the case knows (a PIN it will type).
    pub fn add_secret(&self, value: &str, kind: &'static str, credential: bool) {
        lock(&self.vault).add(value, kind, credential);
    }

    /// TLS handshakes that failed, with the reason.
    pub fn tls_failures(&self) -> Vec<String> {
        lock(&self.tls_failures).clone()
    }

    /// Replaces the answer rewrites.
    pub fn set_rewrites(&self, r: Rewrites) {
        *lock(&self.rewrites) = r;
    }

    /// The answer rewrites in force.
    pub fn rewrites(&self) -> Rewrites {
        lock(&self.rewrites).clone()
    }

    /// Waits until `pred` holds for the exchanges so far, or `timeout` passes; returns whether it held.
    pub async fn wait_for(&self, timeout: Duration, pred: impl Fn(&[Exchange]) -> bool) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.changed.notified();
            if pred(&lock(&self.exchanges)) {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return pred(&lock(&self.exchanges));
            }
        }
    }

    fn push(&self, mut e: Exchange) {
        {
            let mut v = lock(&self.exchanges);
            e.seq = v.len() as u64;
            v.push(e);
        }
        self.changed.notify_waiters();
    }
}

/// One listener of the proxy: where it listens publicly and where it forwards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// `api` or `drive`.
    pub name: &'static str,
    /// The upstream origin (`http://127.0.0.1:PORT`).
    pub upstream: String,
    /// The public origin clients use (`https://127.0.0.1:PORT`).
    pub public: String,
}

/// How to start the proxy.
#[derive(Clone)]
pub struct ProxyConfig {
    /// `(name, upstream origin)` per listener.
    pub upstreams: Vec<(&'static str, String)>,
    /// The address to listen on (loopback normally; a non-loopback address for R-DISC-2 cases).
    pub ip: IpAddr,
    /// TLS for the listeners; plain HTTP when `None`.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// The public host name in the origins (the IP by default).
    pub host: Option<String>,
}

/// A running proxy.
pub struct JudgeProxy {
    /// The listeners.
    pub routes: Vec<Route>,
    /// What it saw.
    pub recorder: Arc<Recorder>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for JudgeProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JudgeProxy").field("routes", &self.routes).finish()
    }
}

/// Why the proxy did not start.
#[derive(Debug, thiserror::Error)]
#[error("the kit's proxy could not start: {0}")]
pub struct ProxyError(String);

struct Shared {
    route: &'static str,
    upstream: String,
    /// Every upstream origin with the public origin it becomes.
    origins: Vec<(String, String)>,
    transport: ReqwestTransport,
    recorder: Arc<Recorder>,
}

impl JudgeProxy {
    /// Binds one listener per upstream and starts relaying.
    pub async fn start(config: ProxyConfig) -> Result<Self, ProxyError> {
        let scheme = if config.tls.is_some() { "https" } else { "http" };
        let mut bound = Vec::new();
        for (name, upstream) in &config.upstreams {
            let l = TcpListener::bind(SocketAddr::new(config.ip, 0)).await.map_err(|e| ProxyError(e.to_string()))?;
            let addr = l.local_addr().map_err(|e| ProxyError(e.to_string()))?;
            let host = match (&config.host, addr.ip()) {
                (Some(h), _) => h.clone(),
                (None, IpAddr::V6(ip)) => format!("[{ip}]"),
                (None, ip) => ip.to_string(),
            };
            let public = format!("{scheme}://{host}:{}", addr.port());
            bound.push((l, Route { name, upstream: upstream.trim_end_matches('/').to_owned(), public }));
        }
        let origins: Vec<(String, String)> =
            bound.iter().map(|(_, r)| (r.upstream.clone(), r.public.clone())).collect();
        let transport = ReqwestTransport::new(None).map_err(|e| ProxyError(e.to_string()))?;
        let recorder = Arc::new(Recorder::default());
        let (tx, rx) = watch::channel(false);
        let acceptor = config.tls.map(tokio_rustls::TlsAcceptor::from);
        let mut tasks = Vec::new();
        let mut routes = Vec::new();
        for (listener, route) in bound {
            let shared = Arc::new(Shared {
                route: route.name,
                upstream: route.upstream.clone(),
                origins: origins.clone(),
                transport: transport.clone(),
                recorder: recorder.clone(),
            });
            tasks.push(tokio::spawn(accept_loop(listener, shared, acceptor.clone(), rx.clone())));
            routes.push(route);
        }
        Ok(Self { routes, recorder, shutdown: tx, tasks })
    }

    /// The public origin of listener `name`.
    pub fn origin(&self, name: &str) -> Option<&str> {
        self.routes.iter().find(|r| r.name == name).map(|r| r.public.as_str())
    }

    /// Stops accepting and closes every open connection.
    pub async fn stop(self) {
        let _ = self.shutdown.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    mut shutdown: watch::Receiver<bool>,
) {
    // Connections live in this set: stopping the proxy drops it, which aborts them all.
    let mut conns = tokio::task::JoinSet::new();
    loop {
        let (stream, _peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => return,
            Some(_) = conns.join_next(), if !conns.is_empty() => continue,
        };
        let shared = shared.clone();
        let tls = tls.clone();
        conns.spawn(async move {
            let svc_shared = shared.clone();
            let service = hyper::service::service_fn(move |req| relay(svc_shared.clone(), req));
            let builder = hyper::server::conn::http1::Builder::new();
            match tls {
                Some(acceptor) => match acceptor.accept(stream).await {
                    Ok(s) => {
                        let _ = builder.serve_connection(TokioIo::new(s), service).await;
                    }
                    Err(e) => lock(&shared.recorder.tls_failures).push(format!("[{}] {e}", shared.route)),
                },
                None => {
                    let _ = builder.serve_connection(TokioIo::new(stream), service).await;
                }
            }
        });
    }
}

/// The error that makes hyper close the MFP's connection without an answer (the server closed its own).
#[derive(Debug, thiserror::Error)]
#[error("the server closed the connection without an answer")]
struct Dropped;

const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
];

fn forward_headers(from: &HeaderMap) -> HeaderMap {
    let mut out = HeaderMap::new();
    for (k, v) in from {
        if !HOP_BY_HOP.contains(&k.as_str()) && k != header::CONTENT_LENGTH {
            out.append(k.clone(), v.clone());
        }
    }
    out
}

async fn relay(shared: Arc<Shared>, req: Request<Incoming>) -> Result<Response<Body>, Dropped> {
    let at = Instant::now();
    let (parts, body) = req.into_parts();
    let body = axum::body::to_bytes(Body::new(body), MAX_BODY).await.unwrap_or_default();
    let path = parts.uri.path().to_owned();
    let query = parts.uri.query().map(str::to_owned);
    let mut record = Exchange {
        seq: 0,
        route: shared.route,
        at,
        done: at,
        method: parts.method.to_string(),
        path: path.clone(),
        query: query.clone(),
        headers: parts.headers.clone(),
        body: body.clone(),
        status: None,
        resp_headers: HeaderMap::new(),
        resp_body: Bytes::new(),
        rewritten: Vec::new(),
    };
    if path == "/sim" || path.starts_with("/sim/") {
        let answer =
            Bytes::from_static(b"{\"type\":\"urn:roger:problem:not-found\",\"title\":\"Not found\",\"status\":404}");
        let mut resp = Response::new(Body::from(answer.clone()));
        *resp.status_mut() = StatusCode::NOT_FOUND;
        resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
        record.status = Some(404);
        record.resp_headers = resp.headers().clone();
        record.resp_body = answer;
        record.done = Instant::now();
        shared.recorder.push(record);
        return Ok(resp);
    }
    let target = match &query {
        Some(q) => format!("{}{path}?{q}", shared.upstream),
        None => format!("{}{path}", shared.upstream),
    };
    let mut upstream = Request::builder().method(parts.method.clone()).uri(target);
    if let Some(h) = upstream.headers_mut() {
        *h = forward_headers(&parts.headers);
    }
    let Ok(upstream) = upstream.body(body.to_vec()) else {
        record.done = Instant::now();
        shared.recorder.push(record);
        return Err(Dropped);
    };
    let answer = match tokio::time::timeout(UPSTREAM_TIMEOUT, shared.transport.send(upstream)).await {
        Ok(Ok(a)) => a,
        _ => {
            record.done = Instant::now();
            shared.recorder.push(record);
            return Err(Dropped);
        }
    };
    let (aparts, abody) = answer.into_parts();
    let rewrites = shared.recorder.rewrites();
    let (new_body, rewritten) = rewrite_body(&shared, &path, &aparts.headers, abody, &rewrites);
    let mut headers = forward_headers(&aparts.headers);
    if let Some(loc) = headers.get(header::LOCATION).and_then(|v| v.to_str().ok()).map(str::to_owned) {
        if let Ok(v) = HeaderValue::from_str(&replace_origins(&loc, &shared.origins)) {
            headers.insert(header::LOCATION, v);
        }
    }
    let new_body = Bytes::from(new_body);
    if let Some(v) = serde_json::from_slice::<Value>(&new_body).ok().as_ref() {
        lock(&shared.recorder.vault).collect(v);
    }
    let mut resp = Response::new(Body::from(new_body.clone()));
    *resp.status_mut() = aparts.status;
    *resp.headers_mut() = headers.clone();
    record.status = Some(aparts.status.as_u16());
    record.resp_headers = headers;
    record.resp_body = new_body;
    record.rewritten = rewritten;
    record.done = Instant::now();
    shared.recorder.push(record);
    Ok(resp)
}

fn replace_origins(text: &str, origins: &[(String, String)]) -> String {
    let mut out = text.to_owned();
    for (from, to) in origins {
        if out.contains(from.as_str()) {
            out = out.replace(from.as_str(), to);
        }
    }
    out
}

/// Rewrites an answer body: upstream origins become public ones (text bodies), then the JSON rewrites in force
/// apply. Binary and compressed bodies pass unchanged.
fn rewrite_body(
    shared: &Shared,
    path: &str,
    headers: &HeaderMap,
    body: Vec<u8>,
    rewrites: &Rewrites,
) -> (Vec<u8>, Vec<&'static str>) {
    if headers.contains_key(header::CONTENT_ENCODING) {
        return (body, Vec::new());
    }
    let text = match String::from_utf8(body) {
        Ok(t) => replace_origins(&t, &shared.origins),
        Err(e) => return (e.into_bytes(), Vec::new()),
    };
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.to_ascii_lowercase().contains("json"));
    if !is_json || *rewrites == Rewrites::default() {
        return (text.into_bytes(), Vec::new());
    }
    let Ok(mut value) = serde_json::from_str::<Value>(&text) else {
        return (text.into_bytes(), Vec::new());
    };
    let applied = apply_rewrites(&mut value, shared.route, path, rewrites);
    if applied.is_empty() {
        return (text.into_bytes(), applied);
    }
    (serde_json::to_vec(&value).unwrap_or_else(|_| text.into_bytes()), applied)
}

/// Applies the JSON rewrites of `r` to one answer of `path`; returns the names of those that changed it.
pub fn apply_rewrites(value: &mut Value, route: &str, path: &str, r: &Rewrites) -> Vec<&'static str> {
    let mut applied = Vec::new();
    let Some(obj) = value.as_object_mut() else { return applied };
    if route == "api" {
        if let Some(issuer) = &r.issuer {
            if path == roger_proto::metadata::WELL_KNOWN_PATH && obj.contains_key("issuer") {
                obj.insert("issuer".into(), Value::String(issuer.clone()));
                applied.push("issuer");
            }
        }
        if let Some(tt) = &r.token_type {
            if path == "/oauth/token" && obj.contains_key("access_token") {
                obj.insert("token_type".into(), Value::String(tt.clone()));
                applied.push("token_type");
            }
        }
        if let Some(origin) = &r.verification_origin {
            if path == "/oauth/device_authorization" {
                if let Some(Value::String(uri)) = obj.get("verification_uri_complete") {
                    if let Ok(u) = url::Url::parse(uri) {
                        let moved = format!(
                            "{}{}{}",
                            origin.trim_end_matches('/'),
                            u.path(),
                            u.query().map(|q| format!("?{q}")).unwrap_or_default()
                        );
                        obj.insert("verification_uri_complete".into(), Value::String(moved));
                        applied.push("verification_uri_complete");
                    }
                }
            }
        }
    }
    if r.unknown_members && r.unknown_members_path.as_deref().is_none_or(|p| route == "api" && p == path) {
        let extra = serde_json::json!({ "note": "an extension member the client must ignore", "list": [1, "two", null], "nested": { "deep": true } });
        for v in obj.values_mut() {
            if let Value::Array(items) = v {
                for item in items.iter_mut() {
                    if let Value::Object(inner) = item {
                        inner.insert(UNKNOWN_MEMBER.into(), extra.clone());
                        inner.insert("x_conform_null".into(), Value::Null);
                    }
                }
            }
        }
        obj.insert(UNKNOWN_MEMBER.into(), extra);
        obj.insert("x_conform_null".into(), Value::Null);
        applied.push("unknown members");
    }
    applied
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_replaced_everywhere() {
        let origins = vec![
            ("http://127.0.0.1:1000".to_owned(), "https://127.0.0.1:2000".to_owned()),
            ("http://127.0.0.1:1001".to_owned(), "https://127.0.0.1:2001".to_owned()),
        ];
        let t = r#"{"api":"http://127.0.0.1:1000","u":"http://127.0.0.1:1001/d/x?sig=1","o":"http://127.0.0.1:10000"}"#;
        let out = replace_origins(t, &origins);
        assert!(out.contains(r#""api":"https://127.0.0.1:2000""#), "{out}");
        assert!(out.contains("https://127.0.0.1:2001/d/x?sig=1"), "{out}");
    }

    #[test]
    fn rewrites_touch_only_their_answers() {
        let r = Rewrites {
            issuer: Some("https://localhost:9".into()),
            token_type: Some("MAC".into()),
            verification_origin: Some("https://phish.example".into()),
            unknown_members: true,
            unknown_members_path: None,
        };
        let mut meta = serde_json::json!({ "issuer": "https://127.0.0.1:1", "token_endpoint": "x" });
        let applied = apply_rewrites(&mut meta, "api", roger_proto::metadata::WELL_KNOWN_PATH, &r);
        assert_eq!(meta["issuer"], "https://localhost:9");
        assert_eq!(applied, vec!["issuer", "unknown members"]);
        let mut da = serde_json::json!({ "verification_uri_complete": "https://127.0.0.1:1/device?user_code=ABCD" });
        apply_rewrites(&mut da, "api", "/oauth/device_authorization", &r);
        assert_eq!(da["verification_uri_complete"], "https://phish.example/device?user_code=ABCD");
        let mut tok = serde_json::json!({ "access_token": "rat_x", "token_type": "Bearer" });
        apply_rewrites(&mut tok, "api", "/oauth/token", &r);
        assert_eq!(tok["token_type"], "MAC");
        let mut regions = serde_json::json!({ "regions": [{ "id": "eu" }] });
        apply_rewrites(&mut regions, "api", "/regions", &r);
        assert!(regions["regions"][0][UNKNOWN_MEMBER].is_object());
        assert!(regions[UNKNOWN_MEMBER]["list"].is_array());
        let mut other = serde_json::json!({ "issuer": "keep" });
        let applied = apply_rewrites(
            &mut other,
            "api",
            "/oauth/token",
            &Rewrites { issuer: r.issuer.clone(), ..Default::default() },
        );
        assert!(applied.is_empty() && other["issuer"] == "keep");
        // Limited to token answers: a metadata answer keeps its members.
        let only =
            Rewrites { unknown_members: true, unknown_members_path: Some("/oauth/token".into()), ..Default::default() };
        let mut meta = serde_json::json!({ "issuer": "x" });
        assert!(apply_rewrites(&mut meta, "api", roger_proto::metadata::WELL_KNOWN_PATH, &only).is_empty());
        let mut tok = serde_json::json!({ "access_token": "rat_x" });
        assert_eq!(apply_rewrites(&mut tok, "api", "/oauth/token", &only), vec!["unknown members"]);
    }
}
