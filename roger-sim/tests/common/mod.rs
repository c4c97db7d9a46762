//! Shared helpers of the scenario tests: an in-process server (plain HTTP on loopback, virtual clock, default
//! tenant), a raw HTTP client, and the protocol moves every scenario needs (app login with PKCE through the real
//! form, registering a printer, approving codes, advancing the clock).
#![allow(dead_code)]

/// Broker scenarios (issue 5): `ROGER_AMQP_URL`, unique prefixes, a cutting and TLS-terminating proxy.
pub mod amqp;

use std::time::Duration;

use roger_proto::api;
use roger_proto::authorize::{parse_redirect, AuthorizationRequest, MOBILE_REDIRECT_URI};
use roger_proto::device_authorization::{self, DeviceAuthorizationRequest, DeviceAuthorizationResponse};
use roger_proto::secret::{AccessToken, DeviceCode, PkceVerifier};
use roger_proto::token::{self, TokenRequest, TokenResponse};
use roger_proto::ResponseError;
use roger_sim::server::{start, RunningServer, ServerConfig};

/// A running server and a client for it.
pub struct TestServer {
    pub server: ServerHandle,
    pub api: String,
    pub http: reqwest::Client,
}

/// The in-process server behind a [`TestServer`]; absent when the harness is attached to an external server
/// ([`TestServer::attach`]). Derefs to the [`RunningServer`] (panics for an attached server).
pub struct ServerHandle(Option<RunningServer>);

impl std::ops::Deref for ServerHandle {
    type Target = RunningServer;

    fn deref(&self) -> &RunningServer {
        self.0.as_ref().expect("attached to an external server: no in-process handle")
    }
}

impl ServerHandle {
    /// Stops the in-process server (nothing for an attached one).
    pub async fn stop(self) {
        if let Some(s) = self.0 {
            s.stop().await;
        }
    }

    /// Whether the server runs in this process.
    pub fn is_in_process(&self) -> bool {
        self.0.is_some()
    }
}

/// The harness's HTTP client: no redirects followed (the login form answers `302` to `roger://`), no proxy.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).no_proxy().build().expect("client")
}

/// An HTTP answer as the tests look at it.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Vec<u8>,
}

impl Answer {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned)
    }

    /// As an `http::Response`, for roger-proto's classifiers.
    pub fn to_http(&self) -> http::Response<Vec<u8>> {
        let mut b = http::Response::builder().status(self.status);
        for (k, v) in &self.headers {
            b = b.header(k.as_str(), v.as_bytes());
        }
        b.body(self.body.clone()).expect("valid response")
    }
}

pub const MFP: &str = "emb-acme";

impl TestServer {
    /// A fresh server with the default tenant.
    pub async fn start() -> Self {
        Self::start_with(ServerConfig { plain_http: true, seed: Some(7), ..ServerConfig::default() }).await
    }

    pub async fn start_with(config: ServerConfig) -> Self {
        let server = start(config).await.expect("server starts");
        let api = server.info.api.clone();
        Self { server: ServerHandle(Some(server)), api, http: client() }
    }

    /// Wraps a server running elsewhere (e.g. a `roger-sim server` child process) at the API origin `api`; every
    /// helper works over HTTP as with an in-process server (`/sim/` answers loopback callers).
    pub fn attach(api: &str) -> Self {
        Self { server: ServerHandle(None), api: api.trim_end_matches('/').to_owned(), http: client() }
    }

    /// Sends a `roger-proto` request as built by its builders.
    pub async fn send(&self, req: http::Request<Vec<u8>>) -> Answer {
        let (parts, body) = req.into_parts();
        let mut r = self.http.request(parts.method, parts.uri.to_string()).body(body);
        for (k, v) in &parts.headers {
            r = r.header(k, v);
        }
        let resp = r.send().await.expect("request sent");
        Answer {
            status: resp.status().as_u16(),
            headers: resp.headers().clone(),
            body: resp.bytes().await.expect("body").to_vec(),
        }
    }

    /// A raw request: method, path (relative to the API), headers, body.
    pub async fn raw(&self, method: &str, path: &str, headers: &[(&str, &str)], body: Vec<u8>) -> Answer {
        let mut b = http::Request::builder().method(method).uri(format!("{}{path}", self.api));
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        self.send(b.body(body).expect("request")).await
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.api)
    }

    /// Moves the virtual clock forward.
    pub async fn advance(&self, seconds: f64) {
        let a = self
            .raw(
                "POST",
                "/sim/clock/advance",
                &[("content-type", "application/json")],
                serde_json::to_vec(&serde_json::json!({ "seconds": seconds })).unwrap(),
            )
            .await;
        assert_eq!(a.status, 200, "advance: {:?}", String::from_utf8_lossy(&a.body));
    }

    /// Changes settings for every tenant (`PUT /sim/settings`).
    pub async fn settings(&self, patch: serde_json::Value) {
        let a = self
            .raw("PUT", "/sim/settings", &[("content-type", "application/json")], serde_json::to_vec(&patch).unwrap())
            .await;
        assert_eq!(a.status, 200, "settings: {:?}", String::from_utf8_lossy(&a.body));
    }

    /// `GET /sim/store` as JSON.
    pub async fn store(&self) -> serde_json::Value {
        self.raw("GET", "/sim/store", &[], Vec::new()).await.json()
    }

    /// `GET /sim/log` entries.
    pub async fn log(&self) -> Vec<serde_json::Value> {
        let v = self.raw("GET", "/sim/log", &[], Vec::new()).await.json();
        v["entries"].as_array().cloned().unwrap_or_default()
    }

    /// Logs in to the phone app as `user` through the real login form (PROTOCOL.md §4: authorization code + PKCE
    /// S256, CSRF token and cookie) and returns the app token response.
    /// A desktop (app token `token`) queues a job of one page named `file_name`: only its name and page count
    /// reach the server (R-DATA-1). Returns the job id.
    pub async fn queue_desktop_job(&self, token: &AccessToken, file_name: &str) -> String {
        let body = api::SubmitJob::Desktop { desktop: api::DesktopFile { file_name: file_name.to_owned(), pages: 1 } };
        let a = self.send(api::submit_job(&self.api, token, &body).expect("request")).await;
        let job: api::Job = roger_proto::wire::classify_api(&a.to_http()).expect("job queued");
        job.id
    }

    pub async fn app_login(&self, user: &str, password: &str) -> TokenResponse {
        let location = self.app_login_location(user, password).await.expect("login succeeds");
        let code = parse_redirect(&location.0, MOBILE_REDIRECT_URI, "st-1").expect("code in redirect");
        let req = TokenRequest::AuthorizationCode {
            code,
            redirect_uri: MOBILE_REDIRECT_URI.into(),
            code_verifier: location.1.clone(),
            client_id: "roger-mobile".into(),
        };
        let a = self.send(req.to_http(&self.url("/oauth/token"), None).unwrap()).await;
        token::classify(&a.to_http()).expect("app token")
    }

    /// The login form round trip; returns the redirect `Location` and the PKCE verifier, or the status of a refusal.
    pub async fn app_login_location(&self, user: &str, password: &str) -> Result<(String, PkceVerifier), u16> {
        let verifier = PkceVerifier::new("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk");
        let req = AuthorizationRequest::for_app("roger-mobile", MOBILE_REDIRECT_URI, &verifier, "st-1");
        let form = self.http.get(req.to_url(&self.url("/oauth/authorize"))).send().await.expect("form");
        assert_eq!(form.status().as_u16(), 200);
        let cookie = form
            .headers()
            .get("set-cookie")
            .and_then(|v| v.to_str().ok())
            .and_then(|c| c.split(';').next())
            .expect("csrf cookie")
            .to_owned();
        let html = form.text().await.expect("html");
        let csrf = html
            .split("name=\"csrf_token\" value=\"")
            .nth(1)
            .and_then(|r| r.split('"').next())
            .expect("csrf token in form")
            .to_owned();
        let body = roger_proto::authorize::LoginForm {
            request: req,
            tenant: "acme".into(),
            username: user.into(),
            password: password.into(),
            csrf: csrf.into(),
        }
        .to_form();
        let resp = self
            .http
            .post(self.url("/oauth/authorize"))
            .header("content-type", "application/x-www-form-urlencoded")
            .header("cookie", cookie)
            .body(body)
            .send()
            .await
            .expect("post");
        if resp.status().as_u16() != 302 {
            return Err(resp.status().as_u16());
        }
        let location = resp.headers().get("location").and_then(|v| v.to_str().ok()).expect("location").to_owned();
        Ok((location, verifier))
    }

    /// `POST /oauth/device_authorization`.
    pub async fn device_authorization(
        &self,
        req: &DeviceAuthorizationRequest,
        bearer: Option<&AccessToken>,
    ) -> Result<DeviceAuthorizationResponse, ResponseError> {
        let a = self.send(req.to_http(&self.url("/oauth/device_authorization"), bearer).unwrap()).await;
        device_authorization::classify(&a.to_http())
    }

    /// One device-code poll.
    pub async fn poll(&self, code: &DeviceCode, client: &str, bearer: Option<&AccessToken>) -> Answer {
        let req = TokenRequest::DeviceCode { device_code: code.clone(), client_id: client.into() };
        self.send(req.to_http(&self.url("/oauth/token"), bearer).unwrap()).await
    }

    /// Approves (or denies) a user code with an app token.
    pub async fn decide(&self, app: &AccessToken, user_code: &str, approve: bool) -> Answer {
        let api = &self.api;
        let req = if approve {
            roger_proto::api::approve_code(api, app, &user_code.into())
        } else {
            roger_proto::api::deny_code(api, app, &user_code.into())
        };
        self.send(req.unwrap()).await
    }

    /// Registers a printer (`emb-acme`): code, admin login and approval, one poll after the interval.
    pub async fn register_printer(&self) -> TokenResponse {
        let code = self
            .device_authorization(&DeviceAuthorizationRequest::registration(MFP, "MX-1", "SN-1"), None)
            .await
            .expect("registration code");
        let admin = self.app_login("admin", "admin-pass").await;
        let a = self.decide(&admin.access_token, code.user_code.secret(), true).await;
        assert_eq!(a.status, 204, "approve: {}", String::from_utf8_lossy(&a.body));
        self.advance(5.0).await;
        let a = self.poll(&code.device_code, MFP, None).await;
        token::classify(&a.to_http()).expect("device tokens")
    }

    /// Starts a QR session at the printer for `user` (step 1) and returns the user token response.
    pub async fn qr_session(&self, device: &AccessToken, user: &str, password: &str) -> TokenResponse {
        let code = self
            .device_authorization(&DeviceAuthorizationRequest::session(MFP), Some(device))
            .await
            .expect("session code");
        let app = self.app_login(user, password).await;
        let a = self.decide(&app.access_token, code.user_code.secret(), true).await;
        assert_eq!(a.status, 204);
        self.advance(5.0).await;
        let a = self.poll(&code.device_code, MFP, Some(device)).await;
        token::classify(&a.to_http()).expect("user token")
    }

    /// A refresh with `client`.
    pub async fn refresh(&self, rt: &roger_proto::secret::RefreshToken, client: &str) -> Answer {
        let req = TokenRequest::RefreshToken { refresh_token: rt.clone(), scope: None, client_id: client.into() };
        self.send(req.to_http(&self.url("/oauth/token"), None).unwrap()).await
    }
}

/// Short pause for background work (push publication).
pub async fn settle() {
    tokio::time::sleep(Duration::from_millis(20)).await;
}

/// A fresh, empty directory under the system temp dir (`roger-it-<tag>-<pid>-<nanos>`).
pub fn temp_dir(tag: &str) -> std::path::PathBuf {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    let dir = std::env::temp_dir().join(format!("roger-it-{tag}-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}
