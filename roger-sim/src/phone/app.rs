//! The `roger.app` client side shared by the simulated phone and the simulated desktop: region discovery and
//! metadata (PROTOCOL.md §2, R-DISC-1, R-DISC-2, R-META-1), holding an app token set, refreshing it ahead of expiry
//! with rotation (R-TOK-1, R-TOK-2), and API calls that refresh once and retry once on `401 invalid_token`
//! (R-TOK-1, RFC 6750 §3.1).
//!
//! Everything goes over HTTP through `roger_proto`'s [`ReqwestTransport`] (TLS verified, no redirects followed, no
//! cookies kept, nothing logged), with `roger_proto`'s request builders and response classifiers. The client never
//! reads the server's internals, so what the phone and desktop prove holds for any Roger server.

use std::time::{Duration, Instant};

use http::{Request, Response};
use roger_proto::discovery::{DiscoveryError, Region, TransportPolicy};
use roger_proto::driver::reqwest_transport::ReqwestTransport;
use roger_proto::driver::{Driver, DriverError, TransportError};
use roger_proto::metadata::{Endpoints, MetadataError};
use roger_proto::secret::{AccessToken, RefreshToken};
use roger_proto::token::{self, scope, TokenRequest, TokenResponse, TokenUser};
use roger_proto::{timing, wire, ResponseError};
use serde::de::DeserializeOwned;

/// When an app refreshes its access token, as a fraction of the lifetime (R-TOK-1: no later than 0.9, and not
/// before half of it has passed).
pub const REFRESH_FRACTION: f64 = 0.8;

/// How an app finds and trusts its server (PROTOCOL.md §2: every URL is configuration).
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// The discovery base: regions are at `{discovery}/regions` (PROTOCOL.md §2).
    pub discovery: String,
    /// The region id to use; the first region offered when `None`.
    pub region: Option<String>,
    /// An extra CA certificate (PEM) to trust, e.g. the simulator's generated CA (R-DISC-2: certificates are always
    /// verified).
    pub ca_pem: Option<Vec<u8>>,
    /// Accept plain `http` on loopback addresses (R-DISC-2 allows it only for loopback testing).
    pub allow_loopback_http: bool,
    /// Per-request timeout; a request without an answer by then is a transport error (PROTOCOL.md §12).
    pub request_timeout: Duration,
}

impl ClientConfig {
    /// TLS only, system roots plus nothing else, 30 s per request.
    pub fn new(discovery: impl Into<String>) -> Self {
        Self {
            discovery: discovery.into(),
            region: None,
            ca_pem: None,
            allow_loopback_http: false,
            request_timeout: Duration::from_secs(30),
        }
    }

    /// For a simulator on loopback: plain `http` allowed on loopback hosts only (R-DISC-2), 10 s per request.
    pub fn loopback(discovery: impl Into<String>) -> Self {
        Self { allow_loopback_http: true, request_timeout: Duration::from_secs(10), ..Self::new(discovery) }
    }

    /// The R-DISC-2 policy this configuration stands for.
    pub fn policy(&self) -> TransportPolicy {
        TransportPolicy::loopback_plain_allowed(self.allow_loopback_http)
    }
}

/// The command-line options every app simulator takes to find and trust its server (`roger-sim phone`,
/// `roger-sim desktop`), flattened into their arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct ServerArgs {
    /// The discovery base URL (regions are at `{discovery}/regions`, PROTOCOL.md §2).
    #[arg(long)]
    pub discovery: String,
    /// Region id (default: the first region offered).
    #[arg(long)]
    pub region: Option<String>,
    /// Extra CA certificate (PEM) to trust, e.g. the simulator's generated CA.
    #[arg(long)]
    pub ca: Option<std::path::PathBuf>,
    /// Accept plain http on loopback addresses (R-DISC-2 allows it only for tests).
    #[arg(long)]
    pub allow_loopback_http: bool,
}

impl ServerArgs {
    /// Plain `http` on loopback allowed (a test against `roger-sim server --plain-http`).
    pub fn loopback(discovery: impl Into<String>) -> Self {
        Self { discovery: discovery.into(), region: None, ca: None, allow_loopback_http: true }
    }

    /// The client configuration these options stand for (the CA file read now); the error names the CA file.
    pub fn client_config(&self) -> Result<ClientConfig, (std::path::PathBuf, std::io::Error)> {
        let ca_pem = match &self.ca {
            Some(p) => Some(std::fs::read(p).map_err(|e| (p.clone(), e))?),
            None => None,
        };
        Ok(ClientConfig {
            region: self.region.clone(),
            ca_pem,
            allow_loopback_http: self.allow_loopback_http,
            ..ClientConfig::new(self.discovery.clone())
        })
    }
}

/// What went wrong in the shared app layer. Every refusal says what the server answered: the HTTP status and the
/// RFC 9457 problem type or the RFC 6749 §5.2 error code, through the wrapped [`ResponseError`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AppError {
    /// The client could not be set up (a CA file that holds no certificate, an unusable URL).
    #[error("setup: {0}")]
    Setup(String),
    /// Discovery refused a URL (R-DISC-1, R-DISC-2).
    #[error(transparent)]
    Discovery(#[from] DiscoveryError),
    /// The metadata was refused (R-META-1, RFC 8414 §3.3).
    #[error(transparent)]
    Metadata(#[from] MetadataError),
    /// No answer: connection refused, TLS failure, timeout, reset (PROTOCOL.md §12).
    #[error("{what}: {source}")]
    Transport {
        /// The operation.
        what: &'static str,
        /// The transport failure (never carries a body or header).
        #[source]
        source: TransportError,
    },
    /// The server answered with a refusal or something unreadable.
    #[error("{what}: {}", describe(.source))]
    Server {
        /// The operation.
        what: &'static str,
        /// The classified answer.
        #[source]
        source: ResponseError,
    },
    /// The operation needs an app token and the app is not signed in.
    #[error("not signed in")]
    NotSignedIn,
    /// The server granted tokens that cannot serve an app (PROTOCOL.md §3: `roger.app`, with a refresh token).
    #[error("unusable token answer: {0}")]
    UnusableGrant(&'static str),
}

impl AppError {
    /// The HTTP status the server answered, if it answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Server { source, .. } => Some(source.status()),
            _ => None,
        }
    }

    /// The `<name>` of a `urn:roger:problem:<name>` answer (PROTOCOL.md §10), if that is what the server said.
    pub fn problem_name(&self) -> Option<&str> {
        match self {
            Self::Server { source: ResponseError::Problem { problem, .. }, .. } => problem.roger_name(),
            _ => None,
        }
    }

    /// The RFC 6749 §5.2 error code, if the server answered with one.
    pub fn oauth_code(&self) -> Option<&roger_proto::OAuthErrorCode> {
        match self {
            Self::Server { source, .. } => source.oauth_code(),
            _ => None,
        }
    }
}

/// One line about a classified refusal: status, problem type or OAuth code, and the server's detail.
pub fn describe(e: &ResponseError) -> String {
    match e {
        ResponseError::Problem { status, problem, .. } => {
            let detail =
                problem.detail.as_deref().or(problem.title.as_deref()).map(|d| format!(": {d}")).unwrap_or_default();
            format!("HTTP {status} {}{detail}", problem.problem_type)
        }
        ResponseError::OAuth { status, body, .. } => {
            let detail = body.error_description.as_deref().map(|d| format!(": {d}")).unwrap_or_default();
            format!("HTTP {status} {}{detail}", body.error)
        }
        other => other.to_string(),
    }
}

fn driver_error(what: &'static str, e: DriverError) -> AppError {
    match e {
        DriverError::Discovery(d) => AppError::Discovery(d),
        DriverError::Metadata(m) => AppError::Metadata(m),
        DriverError::Response(r) => AppError::Server { what, source: r },
        DriverError::Transport(t) => AppError::Transport { what, source: t },
        other => AppError::Setup(other.to_string()),
    }
}

/// The app's token set (R-TOK-2: only the newest refresh token is kept).
#[derive(Debug, Clone)]
struct Tokens {
    access: AccessToken,
    refresh: Option<RefreshToken>,
    received: Instant,
    lifetime: Duration,
    user: Option<TokenUser>,
    tenant_id: Option<String>,
}

impl Tokens {
    fn refresh_due(&self, now: Instant) -> bool {
        now >= self.received + timing::refresh_after(self.lifetime, REFRESH_FRACTION)
    }

    fn expired(&self, now: Instant) -> bool {
        now >= self.received + self.lifetime
    }
}

/// A `roger.app` client (PROTOCOL.md §3, §10): the phone's and the desktop's connection to their region.
pub struct AppClient {
    driver: Driver<ReqwestTransport>,
    region: Region,
    endpoints: Endpoints,
    policy: TransportPolicy,
    client_id: String,
    tokens: Option<Tokens>,
}

impl std::fmt::Debug for AppClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppClient")
            .field("api", &self.endpoints.api)
            .field("client_id", &self.client_id)
            .field("signed_in", &self.tokens.is_some())
            .finish_non_exhaustive()
    }
}

impl AppClient {
    /// Discovers the region and validates its metadata (PROTOCOL.md §2: R-DISC-1, R-DISC-2, R-META-1), for the
    /// public client `client_id` (`roger-mobile` or `roger-desktop`, PROTOCOL.md §3).
    pub async fn connect(config: &ClientConfig, client_id: &str) -> Result<Self, AppError> {
        let transport = ReqwestTransport::new(config.ca_pem.as_deref()).map_err(|e| AppError::Setup(e.to_string()))?;
        let driver = Driver::new(transport).request_timeout(config.request_timeout);
        let policy = config.policy();
        let region = driver
            .discover(&config.discovery, config.region.as_deref(), policy)
            .await
            .map_err(|e| driver_error("discovery", e))?;
        let endpoints = driver.metadata(&region.api, policy).await.map_err(|e| driver_error("metadata", e))?;
        Ok(Self { driver, region, endpoints, policy, client_id: client_id.to_owned(), tokens: None })
    }

    /// The region in use (its `api` is a clean origin).
    pub fn region(&self) -> &Region {
        &self.region
    }

    /// The API origin, which is also the issuer (R-META-1) and the only origin a scanned QR may point at (R-QR-4).
    pub fn api(&self) -> &str {
        &self.endpoints.api
    }

    /// The validated endpoints of the metadata (RFC 8414 §2).
    pub fn endpoints(&self) -> &Endpoints {
        &self.endpoints
    }

    /// The R-DISC-2 policy (applied also to a printer's `job_url`).
    pub fn policy(&self) -> TransportPolicy {
        self.policy
    }

    /// The public client id.
    pub fn client_id(&self) -> &str {
        &self.client_id
    }

    /// The driver (for `roger_proto`'s loops, e.g. [`Driver::run_poller`]).
    pub fn driver(&self) -> &Driver<ReqwestTransport> {
        &self.driver
    }

    /// The signed-in user, from the token answer (PROTOCOL.md §8 `user`).
    pub fn user(&self) -> Option<&TokenUser> {
        self.tokens.as_ref().and_then(|t| t.user.as_ref())
    }

    /// The tenant of the signed-in user.
    pub fn tenant_id(&self) -> Option<&str> {
        self.tokens.as_ref().and_then(|t| t.tenant_id.as_deref())
    }

    /// Whether the app holds a token set.
    pub fn is_signed_in(&self) -> bool {
        self.tokens.is_some()
    }

    /// Sends one request with the per-request timeout; `what` names the operation in errors.
    pub async fn send(&self, what: &'static str, request: Request<Vec<u8>>) -> Result<Response<Vec<u8>>, AppError> {
        self.driver.send(request).await.map_err(|source| AppError::Transport { what, source })
    }

    /// Posts a token request and classifies the answer (RFC 6749 §5.1/§5.2); what it was read past is reported
    /// once per kind (docs/protocol.md §7).
    pub async fn token_request(&self, what: &'static str, request: &TokenRequest) -> Result<TokenResponse, AppError> {
        let http = request.to_http(&self.endpoints.token, None).map_err(|e| AppError::Setup(e.to_string()))?;
        let resp = self.send(what, http).await?;
        // What the answer was read past or refused is reported once per kind at warn level (docs/protocol.md §7).
        self.driver
            .noted(token::ENDPOINT, token::classify_noted(&resp))
            .map_err(|source| AppError::Server { what, source })
    }

    /// Takes a fresh app token set received at `now` (login, desktop grant, refresh). Refuses one without
    /// `roger.app` (PROTOCOL.md §3) or, for a first grant, without a refresh token (PROTOCOL.md §3: apps get
    /// sliding refresh tokens). On a refresh without a new refresh token the current one is kept.
    pub fn install(&mut self, now: Instant, answer: TokenResponse) -> Result<(), AppError> {
        let granted = answer.scope.as_deref().unwrap_or(scope::APP);
        if !scope::contains(granted, scope::APP) {
            return Err(AppError::UnusableGrant("the token answer lacks scope roger.app"));
        }
        let previous = self.tokens.take();
        let refresh = answer.refresh_token.or_else(|| previous.as_ref().and_then(|p| p.refresh.clone()));
        if refresh.is_none() {
            return Err(AppError::UnusableGrant("the app grant carries no refresh token"));
        }
        let user = answer.user.or_else(|| previous.as_ref().and_then(|p| p.user.clone()));
        let tenant_id = answer.tenant_id.or_else(|| previous.as_ref().and_then(|p| p.tenant_id.clone()));
        self.tokens = Some(Tokens {
            access: answer.access_token,
            refresh,
            received: now,
            lifetime: timing::lifetime(answer.expires_in),
            user,
            tenant_id,
        });
        Ok(())
    }

    /// Refreshes now (RFC 6749 §6): the answer's refresh token replaces the old one (R-TOK-2). A refused refresh
    /// (`invalid_grant`: dead, revoked or reused, R-TOK-3/R-TOK-4) signs the app out.
    pub async fn refresh(&mut self) -> Result<(), AppError> {
        let refresh_token = self.tokens.as_ref().and_then(|t| t.refresh.clone()).ok_or(AppError::NotSignedIn)?;
        let request = TokenRequest::RefreshToken { refresh_token, scope: None, client_id: self.client_id.clone() };
        match self.token_request("refresh", &request).await {
            Ok(answer) => self.install(Instant::now(), answer),
            Err(e) => {
                if e.oauth_code() == Some(&roger_proto::OAuthErrorCode::InvalidGrant) {
                    self.tokens = None;
                }
                Err(e)
            }
        }
    }

    /// R-TOK-1 refresh-ahead: refreshes when [`REFRESH_FRACTION`] of the lifetime has passed. A failed early
    /// refresh is tolerated while the access token is still valid (the next call tries again).
    async fn ensure_fresh(&mut self) -> Result<AccessToken, AppError> {
        let now = Instant::now();
        let tokens = self.tokens.as_ref().ok_or(AppError::NotSignedIn)?;
        if tokens.refresh_due(now) {
            let still_valid = !tokens.expired(now);
            if let Err(e) = self.refresh().await {
                if !still_valid || self.tokens.is_none() {
                    return Err(e);
                }
                tracing::warn!("early refresh failed, the access token is still valid: {e}");
            }
        }
        self.tokens.as_ref().map(|t| t.access.clone()).ok_or(AppError::NotSignedIn)
    }

    /// Sends an API request built by `build(api, token)`; on `401 invalid_token` refreshes once and retries once
    /// (R-TOK-1). Returns the final answer unclassified.
    pub async fn call_raw(
        &mut self,
        what: &'static str,
        build: impl Fn(&str, &AccessToken) -> Result<Request<Vec<u8>>, http::Error>,
    ) -> Result<Response<Vec<u8>>, AppError> {
        let token = self.ensure_fresh().await?;
        let request = build(&self.endpoints.api, &token).map_err(|e| AppError::Setup(e.to_string()))?;
        let resp = self.send(what, request).await?;
        let rejected = matches!(wire::classify_api_empty(&resp), Err(e) if e.is_token_rejected());
        if !rejected {
            return Ok(resp);
        }
        self.refresh().await?;
        let token = self.tokens.as_ref().map(|t| t.access.clone()).ok_or(AppError::NotSignedIn)?;
        let request = build(&self.endpoints.api, &token).map_err(|e| AppError::Setup(e.to_string()))?;
        self.send(what, request).await
    }

    /// [`call_raw`](Self::call_raw) and classify a JSON answer (PROTOCOL.md §10, RFC 9457 on refusal).
    pub async fn call<T: DeserializeOwned>(
        &mut self,
        what: &'static str,
        build: impl Fn(&str, &AccessToken) -> Result<Request<Vec<u8>>, http::Error>,
    ) -> Result<T, AppError> {
        let resp = self.call_raw(what, build).await?;
        wire::classify_api(&resp).map_err(|source| AppError::Server { what, source })
    }

    /// [`call_raw`](Self::call_raw) for an answer without a body of interest (`204`, `202`).
    pub async fn call_empty(
        &mut self,
        what: &'static str,
        build: impl Fn(&str, &AccessToken) -> Result<Request<Vec<u8>>, http::Error>,
    ) -> Result<(), AppError> {
        let resp = self.call_raw(what, build).await?;
        wire::classify_api_empty(&resp).map_err(|source| AppError::Server { what, source })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use roger_proto::error::{OAuthErrorCode, OAuthErrorResponse, ProblemDetails};

    /// R-TOK-1: refresh at 80 % of the lifetime, never later than 90 %.
    #[test]
    fn refresh_is_due_ahead_of_expiry() {
        let t0 = Instant::now();
        let t = Tokens {
            access: AccessToken::new("a"),
            refresh: Some(RefreshToken::new("r")),
            received: t0,
            lifetime: Duration::from_secs(100),
            user: None,
            tenant_id: None,
        };
        assert!(!t.refresh_due(t0 + Duration::from_secs(79)));
        assert!(t.refresh_due(t0 + Duration::from_secs(80)));
        assert!(!t.expired(t0 + Duration::from_secs(99)));
        assert!(t.expired(t0 + Duration::from_secs(100)));
    }

    /// Errors say what the server answered: status plus problem type or OAuth code (PROTOCOL.md §10).
    #[test]
    fn errors_name_the_answer() {
        let problem = AppError::Server {
            what: "release",
            source: ResponseError::Problem {
                status: 409,
                problem: Box::new(ProblemDetails::roger("no-session", 409, "No session").with_detail("log in first")),
                retry_after: None,
                www_authenticate_error: None,
            },
        };
        assert_eq!(problem.to_string(), "release: HTTP 409 urn:roger:problem:no-session: log in first");
        assert_eq!((problem.status(), problem.problem_name()), (Some(409), Some("no-session")));
        let oauth = AppError::Server {
            what: "refresh",
            source: ResponseError::OAuth {
                status: 400,
                body: Box::new(OAuthErrorResponse::new(OAuthErrorCode::InvalidGrant)),
                retry_after: None,
                www_authenticate_error: None,
            },
        };
        assert_eq!(oauth.to_string(), "refresh: HTTP 400 invalid_grant");
        assert_eq!(oauth.oauth_code(), Some(&OAuthErrorCode::InvalidGrant));
        assert_eq!(oauth.problem_name(), None);
    }

    #[test]
    fn loopback_config_allows_plain_loopback_only() {
        assert_eq!(ClientConfig::loopback("http://127.0.0.1:1").policy(), TransportPolicy::AllowLoopbackPlain);
        assert_eq!(ClientConfig::new("https://a.example").policy(), TransportPolicy::TlsOnly);
    }
}
