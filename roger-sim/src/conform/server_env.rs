//! The world of one server-mode case: the vendor's server (found through its discovery URL, or its issuer
//! identifier), the accounts the vendor gave the kit (`--fixture accounts.toml`), and the kit's MFP and phone
//! moves, made with roger-proto's request builders over TLS-verified HTTP. Every request and answer is recorded as
//! an [`Exchange`] (redacted in the evidence), every secret the server hands out goes into the case's [`Vault`].
//!
//! Cases that need the clock or the store use the server's `/sim/` control API when it offers one (the simulated
//! server does, on loopback) and SKIP with that reason when it does not.
//!
//! Against a generic OAuth server ([`Profile::Oauth`]) the kit's moves are plain RFC requests: a device
//! authorization with the fixture's `client_id` and `scope`, polls and refreshes without device-bound
//! authentication, revocations by `client_id`; approvals go through `--approve-command` (the kit runs
//! `sh -c CMD` with `ROGER_USER_CODE`, `ROGER_VERIFICATION_URI` and `ROGER_APPROVE=approve|deny` in its
//! environment; exit 0 means the user approved or denied). Only `client_id` (and `scope`) of the accounts file are
//! needed then.
//!
//! The accounts file of a Roger server:
//!
//! ```toml
//! tenant = "acme"                  # the tenant name typed in the login form
//! client_id = "emb-conform"        # the MFP client id (emb-<vendor>) the kit registers printers with
//!
//! [admin]                          # a tenant admin: approves registrations, removes printers
//! username = "admin"
//! password = "admin-pass"          # or app_token = "…": a ready-made roger.app access token
//!
//! [[users]]                        # at least two users with a PIN; the LAST one is locked out and rate-limited
//! username = "alice"               # by the cases that test those limits (give the kit one it may lock), and is
//!                                  # "the other user" of the step-2 binding and foreign-job cases
//! password = "alice-pass"          # (or app_token)
//! pin = "1234"
//! ```

use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{Request, Response};
use roger_proto::authorize::{self, AuthorizationRequest, LoginForm, MOBILE_REDIRECT_URI};
use roger_proto::device_authorization::DeviceAuthorizationRequest;
use roger_proto::discovery::{Regions, TransportPolicy};
use roger_proto::driver::reqwest_transport::ReqwestTransport;
use roger_proto::driver::HttpTransport;
use roger_proto::metadata::{AuthorizationServerMetadata, Endpoints};
use roger_proto::secret::{AccessToken, CsrfToken, DeviceCode, Password, RefreshToken, UserCode};
use roger_proto::token::TokenRequest;
use serde::Deserialize;
use serde_json::Value;

use super::case::{CaseError, Evidence, EvidenceSource, Profile};
use super::proxy::Exchange;
use super::vault::Vault;

/// One account of the fixture.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Account {
    /// User name.
    pub username: String,
    /// Password (app login through the form, PROTOCOL.md §4).
    #[serde(default)]
    pub password: Option<String>,
    /// PIN (the MFP's password grant, PROTOCOL.md §8).
    #[serde(default)]
    pub pin: Option<String>,
    /// A ready-made `roger.app` access token, for servers whose login the kit cannot drive.
    #[serde(default)]
    pub app_token: Option<String>,
}

/// The accounts file (see the module documentation). For a generic OAuth server only `client_id` and `scope`
/// are used; the rest is Roger's.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Accounts {
    /// Tenant name for the login form (Roger only).
    #[serde(default)]
    pub tenant: Option<String>,
    /// The client id the kit's device authorization requests carry (an `emb-<vendor>` printer for a Roger
    /// server; any public client registered for the device grant otherwise).
    #[serde(default = "default_client_id")]
    pub client_id: String,
    /// The scope the kit asks for in its device authorization requests to a generic OAuth server (e.g.
    /// `"roger.device offline_access"`: a scope that brings a refresh token). Roger servers: `roger.device`.
    #[serde(default)]
    pub scope: Option<String>,
    /// Further form parameters a generic server wants on device authorization requests (a table of strings,
    /// e.g. `[device_authorization]` with `device_model = "Kit"`); Roger servers get their own.
    #[serde(default)]
    pub device_authorization: std::collections::BTreeMap<String, String>,
    /// A tenant admin (Roger only).
    #[serde(default)]
    pub admin: Option<Account>,
    /// Users with a PIN, at least two (Roger only).
    #[serde(default)]
    pub users: Vec<Account>,
}

fn default_client_id() -> String {
    super::env::DEFAULT_CLIENT_ID.to_owned()
}

impl Accounts {
    /// Parses the file (its format; what a profile needs is [`Accounts::check`]).
    pub fn parse_lenient(text: &str) -> Result<Self, String> {
        let a: Self = toml::from_str(text).map_err(|e| format!("accounts file: {}", e.message()))?;
        if a.client_id.trim().is_empty() {
            return Err("accounts file: client_id is empty".into());
        }
        Ok(a)
    }

    /// Parses the file and checks it for a Roger server.
    pub fn parse(text: &str) -> Result<Self, String> {
        let a = Self::parse_lenient(text)?;
        a.check(Profile::Roger)?;
        Ok(a)
    }

    /// Whether the file has what a run against a server of `profile` needs: for a Roger server a tenant, an
    /// `emb-<vendor>` client id, an admin and at least two users with a PIN; for a generic OAuth server only the
    /// client id.
    pub fn check(&self, profile: Profile) -> Result<(), String> {
        if profile == Profile::Oauth {
            return Ok(());
        }
        let roger = "accounts file (a Roger server; for a generic OAuth server use --profile oauth)";
        if self.tenant.is_none() {
            return Err(format!("{roger}: `tenant` is missing"));
        }
        if !roger_proto::token::client_id::is_emb(&self.client_id) {
            return Err(format!("{roger}: client_id {:?} must look like emb-<vendor>", self.client_id));
        }
        let Some(admin) = &self.admin else { return Err(format!("{roger}: [admin] is missing")) };
        if admin.password.is_none() && admin.app_token.is_none() {
            return Err(format!("{roger}: the admin needs a password or an app_token"));
        }
        if self.users.len() < 2 {
            return Err(format!("{roger}: at least two users are needed (the last one is locked out by a case)"));
        }
        for u in &self.users {
            if u.pin.is_none() || (u.password.is_none() && u.app_token.is_none()) {
                return Err(format!("{roger}: user {:?} needs a pin and a password or app_token", u.username));
            }
        }
        Ok(())
    }

    /// The tenant (empty when the file names none).
    pub fn tenant(&self) -> &str {
        self.tenant.as_deref().unwrap_or_default()
    }

    /// Every secret in the file (never in reports; looked for in `/sim/store`).
    pub fn secrets(&self) -> Vec<(&str, &'static str)> {
        let mut out = Vec::new();
        for a in self.admin.iter().chain(&self.users) {
            if let Some(p) = &a.password {
                out.push((p.as_str(), "password"));
            }
            if let Some(p) = &a.pin {
                out.push((p.as_str(), "PIN"));
            }
            if let Some(t) = &a.app_token {
                out.push((t.as_str(), "app token"));
            }
        }
        out
    }
}

/// Where the kit finds the server's metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// A Roger discovery URL (regions at `{discovery}/regions`; the first region's API is the issuer).
    Discovery(String),
    /// An issuer identifier (RFC 8414 §3): metadata at `/.well-known/oauth-authorization-server`, or at
    /// `/.well-known/openid-configuration` when that answers 404 (RFC 8414 §5).
    Issuer(String),
}

impl Entry {
    /// The URL as given.
    pub fn url(&self) -> &str {
        match self {
            Self::Discovery(u) | Self::Issuer(u) => u,
        }
    }
}

/// What every server-mode case of a run shares.
#[derive(Debug, Clone)]
pub struct ServerContext {
    /// Where the metadata is found.
    pub entry: Entry,
    /// An extra CA (PEM) to trust.
    pub ca_pem: Option<Vec<u8>>,
    /// Accept plain HTTP on loopback (R-DISC-2 test setups).
    pub allow_loopback_http: bool,
    /// The accounts.
    pub accounts: Accounts,
    /// The profile the server is judged by.
    pub profile: Profile,
    /// The command that approves or denies a user code for servers whose approval the kit cannot make through the
    /// Roger API (`--approve-command`).
    pub approve_command: Option<String>,
}

/// The metadata document of a server, as the kit found it.
#[derive(Debug, Clone)]
pub struct FoundMetadata {
    /// The issuer identifier the metadata URL was formed from (RFC 8414 §3.3 compares `issuer` with it).
    pub issuer: String,
    /// The region's push broker, when found through Roger discovery.
    pub broker: Option<String>,
    /// The metadata (as JSON).
    pub document: Value,
    /// The exchange that fetched it.
    pub exchange: Exchange,
    /// What the kit noted on the way (the `openid-configuration` fallback).
    pub notes: Vec<String>,
}

/// The RFC 8414 §3.1 metadata URL of `issuer` for `suffix`: the well-known path goes between the host and the
/// issuer's path (for an issuer without a path that is `{issuer}/.well-known/{suffix}`).
pub fn well_known_url(issuer: &str, suffix: &str) -> Result<String, String> {
    let u = url::Url::parse(issuer).map_err(|e| format!("the issuer {issuer:?} is not a URL: {e}"))?;
    let path = u.path().trim_end_matches('/');
    Ok(format!("{}/.well-known/{suffix}{path}", u.origin().ascii_serialization()))
}

/// Who acts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Actor {
    /// The tenant admin.
    Admin,
    /// The first user (everyday flows).
    User,
    /// The last user (lock-out and rate limits).
    Sacrificial,
}

/// A printer the kit registered.
#[derive(Debug, Clone)]
pub struct Device {
    /// Its id.
    pub device_id: String,
    /// The newest device access token.
    pub access: String,
    /// The newest refresh token.
    pub refresh: String,
}

/// The world of one server-mode case.
pub struct ServerEnv {
    ctx: Arc<ServerContext>,
    /// The case's ID.
    pub case_id: &'static str,
    /// The case's seed.
    pub seed: u64,
    /// The issuer identifier the metadata URL was formed from.
    pub issuer: String,
    /// The validated endpoints (RFC 8414); an endpoint the metadata does not name is empty (generic servers).
    pub endpoints: Endpoints,
    /// The raw metadata document.
    pub metadata: Value,
    /// The region's push broker (PROTOCOL.md §2 `amqp`), if it has one.
    pub broker: Option<String>,
    transport: ReqwestTransport,
    exchanges: Vec<Exchange>,
    vault: Vault,
    evidence: Vec<Evidence>,
    t0: Instant,
    app_tokens: Vec<(Actor, String)>,
}

impl std::fmt::Debug for ServerEnv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerEnv").field("case_id", &self.case_id).field("api", &self.endpoints.api).finish()
    }
}

fn policy(ctx: &ServerContext) -> TransportPolicy {
    TransportPolicy::loopback_plain_allowed(ctx.allow_loopback_http)
}

/// Finds and fetches the metadata (recorded in `env`): through Roger discovery, or from the issuer's well-known
/// URLs.
async fn find_metadata(env: &mut ServerEnv) -> Result<FoundMetadata, CaseError> {
    let ctx = env.ctx.clone();
    let mut notes = Vec::new();
    match &ctx.entry {
        Entry::Discovery(discovery) => {
            roger_proto::discovery::check_transport(discovery, policy(&ctx))
                .map_err(|e| CaseError::Peer(format!("discovery URL: {e}")))?;
            let req = roger_proto::discovery::request(discovery).map_err(|e| CaseError::Kit(e.to_string()))?;
            let regions = env.send(req).await?;
            let regions: Regions = serde_json::from_slice(&regions.resp_body)
                .map_err(|e| CaseError::Peer(format!("the discovery document is not a region list: {e}")))?;
            let region = regions
                .regions
                .first()
                .ok_or_else(|| CaseError::Peer("the discovery document offers no region".into()))?;
            let api = region.api.trim_end_matches('/').to_owned();
            let broker = region.amqp.clone().filter(|u| !u.is_empty());
            let req = roger_proto::metadata::request(&api).map_err(|e| CaseError::Kit(e.to_string()))?;
            let meta = env.send(req).await?;
            let document = meta.json().unwrap_or(Value::Null);
            Ok(FoundMetadata { issuer: api, broker, document, exchange: meta, notes })
        }
        Entry::Issuer(issuer) => {
            roger_proto::discovery::check_transport(issuer, policy(&ctx))
                .map_err(|e| CaseError::Peer(format!("issuer: {e}")))?;
            let get = |url: String| {
                http::Request::get(url)
                    .header(http::header::ACCEPT, "application/json")
                    .body(Vec::new())
                    .map_err(|e| CaseError::Kit(e.to_string()))
            };
            let url = well_known_url(issuer, "oauth-authorization-server").map_err(CaseError::Kit)?;
            let mut meta = env.send(get(url)?).await?;
            if meta.status == Some(404) {
                let oidc = format!("{}/.well-known/openid-configuration", issuer.trim_end_matches('/'));
                notes.push(format!(
                    "/.well-known/oauth-authorization-server answered 404; the metadata was read from {oidc} \
                     (RFC 8414 §5 lets OpenID Connect providers publish it there)"
                ));
                meta = env.send(get(oidc)?).await?;
            }
            if !meta.delivered_ok() {
                return Err(CaseError::Peer(format!("the metadata request was answered {:?}", meta.status)));
            }
            let document = meta.json().unwrap_or(Value::Null);
            Ok(FoundMetadata { issuer: issuer.clone(), broker: None, document, exchange: meta, notes })
        }
    }
}

/// The endpoints of a generic server's metadata: `issuer` identical to the identifier the URL was formed from
/// (RFC 8414 §3.3), a `token_endpoint` (REQUIRED, RFC 8414 §2), every URL allowed by the transport policy; an
/// endpoint the metadata does not name is left empty.
pub fn generic_endpoints(doc: &Value, issuer: &str, policy: TransportPolicy) -> Result<Endpoints, String> {
    let found = doc.get("issuer").and_then(Value::as_str);
    if found != Some(issuer) && found != Some(issuer.trim_end_matches('/')) {
        return Err(format!("the metadata's issuer is {found:?}, not {issuer:?} (RFC 8414 §3.3)"));
    }
    let member = |k: &str| -> Result<String, String> {
        match doc.get(k).and_then(Value::as_str) {
            None => Ok(String::new()),
            Some(u) => roger_proto::discovery::check_transport(u, policy)
                .map(|_| u.to_owned())
                .map_err(|e| format!("{k}: {e}")),
        }
    };
    let token = member("token_endpoint")?;
    if token.is_empty() {
        return Err("the metadata names no token_endpoint (REQUIRED, RFC 8414 §2)".into());
    }
    let api = url::Url::parse(issuer).map(|u| u.origin().ascii_serialization()).map_err(|e| e.to_string())?;
    Ok(Endpoints {
        api,
        authorization: member("authorization_endpoint")?,
        token,
        device_authorization: member("device_authorization_endpoint")?,
        revocation: member("revocation_endpoint")?,
        push: false,
    })
}

impl ServerEnv {
    /// Finds and reads the metadata (recorded); a server that fails here fails the case.
    pub async fn create(ctx: Arc<ServerContext>, case_id: &'static str, seed: u64) -> Result<Self, CaseError> {
        let transport = ReqwestTransport::new(ctx.ca_pem.as_deref()).map_err(|e| CaseError::Kit(e.to_string()))?;
        let mut env = Self {
            ctx: ctx.clone(),
            case_id,
            seed,
            issuer: String::new(),
            endpoints: Endpoints::conventional("http://invalid"),
            metadata: Value::Null,
            broker: None,
            transport,
            exchanges: Vec::new(),
            vault: Vault::default(),
            evidence: Vec::new(),
            t0: Instant::now(),
            app_tokens: Vec::new(),
        };
        for (s, kind) in ctx.accounts.secrets() {
            env.vault.add(s, kind, true);
        }
        let found = find_metadata(&mut env).await?;
        for n in &found.notes {
            env.note(EvidenceSource::Kit, n);
        }
        env.issuer = found.issuer.clone();
        env.broker = found.broker.clone();
        env.metadata = found.document.clone();
        env.endpoints = match ctx.profile {
            Profile::Roger => {
                let parsed: AuthorizationServerMetadata = serde_json::from_slice(&found.exchange.resp_body)
                    .map_err(|e| CaseError::Peer(format!("the metadata is not RFC 8414 JSON: {e}")))?;
                parsed
                    .validate(&found.issuer, policy(&ctx))
                    .map_err(|e| CaseError::Peer(format!("the metadata was refused: {e}")))?
            }
            Profile::Oauth => generic_endpoints(&found.document, &found.issuer, policy(&ctx))
                .map_err(|e| CaseError::Peer(format!("the metadata was refused: {e}")))?,
        };
        Ok(env)
    }

    /// The profile the server is judged by.
    pub fn profile(&self) -> Profile {
        self.ctx.profile
    }

    /// Whether the server is judged as a generic OAuth server.
    pub fn is_oauth(&self) -> bool {
        self.ctx.profile == Profile::Oauth
    }

    /// `endpoint`, or [`CaseError::NotOffered`] when the metadata does not name it (`what`).
    pub fn endpoint(&self, endpoint: &str, what: &str) -> Result<String, CaseError> {
        if endpoint.is_empty() {
            return Err(CaseError::NotOffered(format!("a {what} (the metadata names none)")));
        }
        Ok(endpoint.to_owned())
    }

    /// R-DISC-2 as this run allows it (plain `http` / `amqp` on loopback only with `--allow-loopback-http`).
    pub fn transport_policy(&self) -> TransportPolicy {
        policy(&self.ctx)
    }

    /// The run's extra CA (PEM text), trusted besides the system roots (also for an `amqps` broker).
    pub fn ca_pem(&self) -> Option<String> {
        self.ctx.ca_pem.as_ref().and_then(|b| String::from_utf8(b.clone()).ok())
    }

    /// The accounts.
    pub fn accounts(&self) -> &Accounts {
        &self.ctx.accounts
    }

    /// The MFP client id.
    pub fn client_id(&self) -> String {
        self.ctx.accounts.client_id.clone()
    }

    /// The account of `who` (a Roger server's accounts file has them all, [`Accounts::check`]).
    pub fn account(&self, who: Actor) -> &Account {
        static NOBODY: Account = Account { username: String::new(), password: None, pin: None, app_token: None };
        let a = &self.ctx.accounts;
        match who {
            Actor::Admin => a.admin.as_ref().unwrap_or(&NOBODY),
            Actor::User => a.users.first().unwrap_or(&NOBODY),
            Actor::Sacrificial => a.users.last().unwrap_or(&NOBODY),
        }
    }

    /// Every exchange so far.
    pub fn exchanges(&self) -> &[Exchange] {
        &self.exchanges
    }

    /// The secrets so far.
    pub fn vault(&self) -> &Vault {
        &self.vault
    }

    /// Adds a line of evidence (redacted).
    pub fn note(&mut self, source: EvidenceSource, text: impl AsRef<str>) {
        let text = self.vault.redact(text.as_ref());
        let at_ms = self.t0.elapsed().as_millis() as u64;
        self.evidence.push(Evidence { source, at_ms, text });
    }

    /// Records `e` as wire evidence.
    pub fn note_exchange(&mut self, e: &Exchange) {
        let at_ms = e.at.saturating_duration_since(self.t0).as_millis() as u64;
        let text = e.describe(&self.vault);
        self.evidence.push(Evidence { source: EvidenceSource::Wire, at_ms, text });
    }

    /// The evidence so far.
    pub fn into_evidence(self) -> Vec<Evidence> {
        self.evidence
    }

    /// Sends one request and records it; a transport failure is an exchange without a status.
    pub async fn send(&mut self, req: Request<Vec<u8>>) -> Result<Exchange, CaseError> {
        let at = Instant::now();
        let (parts, body) = req.into_parts();
        let mut e = Exchange {
            seq: self.exchanges.len() as u64,
            route: "api",
            at,
            done: at,
            method: parts.method.to_string(),
            path: parts.uri.path().to_owned(),
            query: parts.uri.query().map(str::to_owned),
            headers: parts.headers.clone(),
            body: body.clone().into(),
            status: None,
            resp_headers: http::HeaderMap::new(),
            resp_body: Default::default(),
            rewritten: Vec::new(),
        };
        let req = Request::from_parts(parts, body);
        let answer: Option<Response<Vec<u8>>> =
            tokio::time::timeout(Duration::from_secs(30), self.transport.send(req)).await.ok().and_then(Result::ok);
        e.done = Instant::now();
        if let Some(a) = answer {
            e.status = Some(a.status().as_u16());
            e.resp_headers = a.headers().clone();
            e.resp_body = a.into_body().into();
            if let Some(v) = e.json() {
                self.vault.collect(&v);
            }
        }
        self.note_exchange(&e);
        self.exchanges.push(e.clone());
        Ok(e)
    }

    /// A `roger.app` access token for `who`: the ready-made one, or a login through the form with PKCE S256
    /// (PROTOCOL.md §4, RFC 7636).
    pub async fn app_token(&mut self, who: Actor) -> Result<String, CaseError> {
        if let Some((_, t)) = self.app_tokens.iter().find(|(a, _)| *a == who) {
            return Ok(t.clone());
        }
        let account = self.account(who).clone();
        let token = match (&account.app_token, &account.password) {
            (Some(t), _) => t.clone(),
            (None, Some(pw)) => self.login(&account.username, pw).await?,
            (None, None) => return Err(CaseError::Kit(format!("{} has no password or app_token", account.username))),
        };
        self.app_tokens.push((who, token.clone()));
        Ok(token)
    }

    async fn login(&mut self, username: &str, password: &str) -> Result<String, CaseError> {
        let mut rng = rand::rngs::OsRng;
        let verifier = roger_proto::pkce::new_verifier(&mut rng);
        let state = format!("conform-{}", self.seed);
        let request = AuthorizationRequest::for_app("roger-mobile", MOBILE_REDIRECT_URI, &verifier, &state);
        let endpoint = self.endpoints.authorization.clone();
        let form = http::Request::get(request.to_url(&endpoint))
            .header(http::header::ACCEPT, "text/html")
            .body(Vec::new())
            .map_err(|e| CaseError::Kit(e.to_string()))?;
        let page = self.send(form).await?;
        let html = String::from_utf8_lossy(&page.resp_body).into_owned();
        let csrf = crate::phone::login::hidden_field(&html, "csrf_token")
            .ok_or_else(|| CaseError::Peer("the login form has no csrf_token".into()))?;
        let cookie = crate::phone::login::cookie_header(&page.resp_headers)
            .ok_or_else(|| CaseError::Peer("the login form set no cookie".into()))?;
        let body = LoginForm {
            request,
            tenant: self.ctx.accounts.tenant().to_owned(),
            username: username.to_owned(),
            password: Password::new(password),
            csrf: CsrfToken::new(csrf),
        }
        .to_form();
        let post = http::Request::post(&endpoint)
            .header(http::header::CONTENT_TYPE, roger_proto::wire::FORM)
            .header(http::header::COOKIE, cookie)
            .body(body)
            .map_err(|e| CaseError::Kit(e.to_string()))?;
        let answer = self.send(post).await?;
        let location = answer
            .resp_headers
            .get(http::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| {
                CaseError::Peer(format!("the app login of {username} did not redirect (status {:?})", answer.status))
            })?
            .to_owned();
        let code = authorize::parse_redirect(&location, MOBILE_REDIRECT_URI, &state)
            .map_err(|e| CaseError::Peer(format!("the login redirect: {e}")))?;
        let redeem = TokenRequest::AuthorizationCode {
            code,
            redirect_uri: MOBILE_REDIRECT_URI.into(),
            code_verifier: verifier,
            client_id: "roger-mobile".into(),
        };
        let req = redeem.to_http(&self.endpoints.token, None).map_err(|e| CaseError::Kit(e.to_string()))?;
        let a = self.send(req).await?;
        a.json()
            .and_then(|v| v.get("access_token")?.as_str().map(str::to_owned))
            .ok_or_else(|| CaseError::Peer("the code redemption gave no access token".into()))
    }

    /// `POST /oauth/device_authorization` for a registration (docs/protocol.md §3.7; a generic server gets the
    /// fixture's `client_id` and `scope` only, RFC 8628 §3.1): the exchange.
    pub async fn registration_code(&mut self) -> Result<Exchange, CaseError> {
        let endpoint = self.endpoint(&self.endpoints.device_authorization, "device authorization endpoint")?;
        let req = if self.is_oauth() {
            let accounts = &self.ctx.accounts;
            let mut form = form_urlencoded::Serializer::new(String::new());
            form.append_pair("client_id", &accounts.client_id);
            if let Some(scope) = accounts.scope.as_deref().filter(|s| !s.is_empty()) {
                form.append_pair("scope", scope);
            }
            for (k, v) in &accounts.device_authorization {
                form.append_pair(k, v);
            }
            http::Request::post(&endpoint)
                .header(http::header::CONTENT_TYPE, roger_proto::wire::FORM)
                .header(http::header::ACCEPT, "application/json")
                .body(form.finish().into_bytes())
        } else {
            let serial = format!("CONFORM-{:08X}", (self.seed as u32) ^ (self.exchanges.len() as u32));
            DeviceAuthorizationRequest::registration(&self.client_id(), "Conformance Kit", &serial)
                .to_http(&endpoint, None)
        }
        .map_err(|e| CaseError::Kit(e.to_string()))?;
        self.send(req).await
    }

    /// One device-code poll (RFC 8628 §3.4), device-bound with `bearer` for session codes.
    pub async fn poll(&mut self, device_code: &str, bearer: Option<&str>) -> Result<Exchange, CaseError> {
        let req = TokenRequest::DeviceCode { device_code: DeviceCode::new(device_code), client_id: self.client_id() };
        let bearer = bearer.map(AccessToken::new);
        let req = req.to_http(&self.endpoints.token, bearer.as_ref()).map_err(|e| CaseError::Kit(e.to_string()))?;
        self.send(req).await
    }

    /// Approves (or denies) a user code as `who`: with `--approve-command` through that command, otherwise on the
    /// Roger API after looking it up (R-QR-2). The decision's exchange (for the command a record of its run:
    /// status 200 for exit 0).
    pub async fn decide(&mut self, user_code: &str, who: Actor, approve: bool) -> Result<Exchange, CaseError> {
        if let Some(cmd) = self.ctx.approve_command.clone() {
            return self.decide_by_command(&cmd, user_code, approve).await;
        }
        if self.is_oauth() {
            return Err(CaseError::NotOffered(
                "a way to approve codes: a generic OAuth server needs --approve-command".into(),
            ));
        }
        let token = AccessToken::new(self.app_token(who).await?);
        // As a person types it into the app: RFC 8628 §6.1 compares codes case-insensitively and without
        // punctuation, so a code shown as `wdjb mjht` is entered as WDJBMJHT.
        let code = UserCode::new(roger_proto::user_code::normalize(user_code).unwrap_or_else(|_| user_code.to_owned()));
        let api = self.endpoints.api.clone();
        let lookup = roger_proto::api::lookup_code(&api, &token, &code).map_err(|e| CaseError::Kit(e.to_string()))?;
        self.send(lookup).await?;
        let req = if approve {
            roger_proto::api::approve_code(&api, &token, &code)
        } else {
            roger_proto::api::deny_code(&api, &token, &code)
        }
        .map_err(|e| CaseError::Kit(e.to_string()))?;
        self.send(req).await
    }

    /// Runs the approve command for `user_code` (`ROGER_USER_CODE` as the server sent it, `ROGER_VERIFICATION_URI`
    /// the last `verification_uri` the server sent, `ROGER_APPROVE=approve|deny`); exit 0 is the user's decision
    /// made. Recorded as an exchange `EXEC approve-command` with status 200 (exit 0) or none.
    async fn decide_by_command(&mut self, cmd: &str, user_code: &str, approve: bool) -> Result<Exchange, CaseError> {
        let uri = self
            .exchanges
            .iter()
            .rev()
            .filter_map(|e| e.json())
            .find_map(|v| {
                v.get("verification_uri")
                    .or_else(|| v.get("verification_url"))
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            })
            .unwrap_or_default();
        let at = Instant::now();
        let verb = if approve { "approve" } else { "deny" };
        let mut child = tokio::process::Command::new("sh");
        child
            .arg("-c")
            .arg(cmd)
            .env("ROGER_USER_CODE", user_code)
            .env("ROGER_VERIFICATION_URI", &uri)
            .env("ROGER_APPROVE", verb)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        let out = tokio::time::timeout(Duration::from_secs(60), child.output())
            .await
            .map_err(|_| CaseError::Kit("--approve-command did not finish within 60 s".into()))?
            .map_err(|e| CaseError::Kit(format!("--approve-command could not run: {e}")))?;
        let code = out.status.code();
        let tail = |b: &[u8]| {
            let t = String::from_utf8_lossy(b);
            let t = t.trim();
            t.chars().rev().take(300).collect::<Vec<_>>().into_iter().rev().collect::<String>()
        };
        let mut text = format!("--approve-command ({verb}) exited {code:?}");
        let err = tail(&out.stderr);
        if !err.is_empty() && code != Some(0) {
            text.push_str(&format!("; stderr: {err}"));
        }
        self.note(EvidenceSource::Kit, text);
        let e = Exchange {
            seq: self.exchanges.len() as u64,
            route: "kit",
            at,
            done: Instant::now(),
            method: "EXEC".into(),
            path: "approve-command".into(),
            query: None,
            headers: http::HeaderMap::new(),
            body: Default::default(),
            status: (code == Some(0)).then_some(200),
            resp_headers: http::HeaderMap::new(),
            resp_body: tail(&out.stdout).into_bytes().into(),
            rewritten: Vec::new(),
        };
        self.exchanges.push(e.clone());
        Ok(e)
    }

    /// A refresh (RFC 6749 §6).
    pub async fn refresh(&mut self, refresh_token: &str) -> Result<Exchange, CaseError> {
        let req = TokenRequest::RefreshToken {
            refresh_token: RefreshToken::new(refresh_token),
            scope: None,
            client_id: self.client_id(),
        };
        let req = req.to_http(&self.endpoints.token, None).map_err(|e| CaseError::Kit(e.to_string()))?;
        self.send(req).await
    }

    /// `GET /api/v1/device` with `token` (a cheap authenticated call).
    pub async fn get_device(&mut self, token: &str) -> Result<Exchange, CaseError> {
        let req = roger_proto::api::get_device(&self.endpoints.api.clone(), &AccessToken::new(token))
            .map_err(|e| CaseError::Kit(e.to_string()))?;
        self.send(req).await
    }

    /// Registers a printer: a registration code, the admin's approval, polls at the interval until the tokens come
    /// (PROTOCOL.md §5).
    pub async fn register(&mut self) -> Result<Device, CaseError> {
        let code = self.registration_code().await?;
        let v = code
            .json()
            .filter(|_| code.delivered_ok())
            .ok_or_else(|| CaseError::Peer(format!("the registration code request was answered {:?}", code.status)))?;
        let device_code = v.get("device_code").and_then(Value::as_str).unwrap_or_default().to_owned();
        let user_code = v.get("user_code").and_then(Value::as_str).unwrap_or_default().to_owned();
        let interval = roger_proto::timing::effective_interval(v.get("interval").and_then(Value::as_u64));
        let decision = self.decide(&user_code, Actor::Admin, true).await?;
        if !decision.delivered_ok() {
            return Err(CaseError::Peer(format!("the admin's approval was answered {:?}", decision.status)));
        }
        for _ in 0..6 {
            tokio::time::sleep(interval + Duration::from_millis(100)).await;
            let p = self.poll(&device_code, None).await?;
            // (An OAuth error sent with 200 is not delivered_ok: it is that error, docs/protocol.md §7.)
            if p.delivered_ok() {
                let v = p.json().unwrap_or(Value::Null);
                let s = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or_default().to_owned();
                let d = Device { device_id: s("device_id"), access: s("access_token"), refresh: s("refresh_token") };
                if d.access.is_empty() || (d.refresh.is_empty() && !self.is_oauth()) {
                    return Err(CaseError::Peer("the registration's token answer lacks a token".into()));
                }
                return Ok(d);
            }
            if p.oauth_error().as_deref() != Some("authorization_pending") {
                return Err(CaseError::Peer(format!("polling the approved registration got {:?}", p.oauth_error())));
            }
        }
        Err(CaseError::Peer("the approved registration code never redeemed".into()))
    }

    /// `device`'s refresh token, or [`CaseError::NotOffered`] when the server gave none (RFC 6749 §5.1 makes it
    /// OPTIONAL; a generic server may need a scope such as `offline_access` in the accounts file).
    pub fn refresh_of(&self, device: &Device) -> Result<String, CaseError> {
        if device.refresh.is_empty() {
            return Err(CaseError::NotOffered(
                "a refresh token with the device grant (ask for a scope that brings one, e.g. offline_access)".into(),
            ));
        }
        Ok(device.refresh.clone())
    }

    /// The discovery base URL or issuer the run was given.
    pub fn discovery_url(&self) -> &str {
        self.ctx.entry.url()
    }

    /// `POST /oauth/device_authorization` for a session QR code (PROTOCOL.md §8 step 1: scope `roger.release`,
    /// device-bound with the printer's `roger.device` access token, §7): the exchange.
    pub async fn session_code(&mut self, device_access: &str) -> Result<Exchange, CaseError> {
        let req = DeviceAuthorizationRequest::session(&self.client_id())
            .to_http(&self.endpoints.device_authorization, Some(&AccessToken::new(device_access)))
            .map_err(|e| CaseError::Kit(e.to_string()))?;
        self.send(req).await
    }

    /// Step 1 of a user session (PROTOCOL.md §8): a session code for `device`, approved by `who` on the phone after
    /// a look-up, polled device-bound at its interval until the user token comes; the successful poll's exchange.
    pub async fn qr_session(&mut self, device: &Device, who: Actor) -> Result<Exchange, CaseError> {
        let code = self.session_code(&device.access).await?;
        let v = code
            .json()
            .filter(|_| code.delivered_ok())
            .ok_or_else(|| CaseError::Peer(format!("the session code request was answered {:?}", code.status)))?;
        let device_code = v.get("device_code").and_then(Value::as_str).unwrap_or_default().to_owned();
        let user_code = v.get("user_code").and_then(Value::as_str).unwrap_or_default().to_owned();
        let interval = roger_proto::timing::effective_interval(v.get("interval").and_then(Value::as_u64));
        let decision = self.decide(&user_code, who, true).await?;
        if !decision.delivered_ok() {
            return Err(CaseError::Peer(format!(
                "the approval of the session code was answered {:?}",
                decision.status
            )));
        }
        for _ in 0..6 {
            tokio::time::sleep(interval + Duration::from_millis(100)).await;
            let p = self.poll(&device_code, Some(&device.access)).await?;
            if p.delivered_ok() {
                if p.json().and_then(|v| v.get("access_token")?.as_str().map(str::to_owned)).is_none() {
                    return Err(CaseError::Peer("the session's token answer lacks an access token".into()));
                }
                return Ok(p);
            }
            if p.oauth_error().as_deref() != Some("authorization_pending") {
                return Err(CaseError::Peer(format!("polling the approved session code got {:?}", p.oauth_error())));
            }
        }
        Err(CaseError::Peer("the approved session code never redeemed".into()))
    }

    /// A device-bound password grant (PROTOCOL.md §8 step 2 or PIN login, RFC 6749 §4.3) at the printer whose
    /// `roger.device` access token is `device_access`.
    pub async fn password_grant(
        &mut self,
        device_access: &str,
        username: &str,
        secret: &str,
        scope: &str,
    ) -> Result<Exchange, CaseError> {
        let req = TokenRequest::Password {
            username: username.to_owned(),
            password: Password::new(secret),
            scope: scope.to_owned(),
            client_id: self.client_id(),
        };
        let bearer = AccessToken::new(device_access);
        let req = req.to_http(&self.endpoints.token, Some(&bearer)).map_err(|e| CaseError::Kit(e.to_string()))?;
        self.send(req).await
    }

    /// The PIN login of `who` from idle (PROTOCOL.md §8: scope `roger.release roger.print roger.scan`): the user
    /// access token; a refusal stops the case.
    pub async fn pin_login(&mut self, device_access: &str, who: Actor) -> Result<String, CaseError> {
        let account = self.account(who).clone();
        let pin = account.pin.clone().unwrap_or_default();
        let e =
            self.password_grant(device_access, &account.username, &pin, roger_proto::token::scope::PIN_LOGIN).await?;
        e.json()
            .filter(|_| e.delivered_ok())
            .and_then(|v| v.get("access_token")?.as_str().map(str::to_owned))
            .ok_or_else(|| {
                CaseError::Peer(format!("the PIN login of {} was answered {:?}", account.username, e.status))
            })
    }

    /// `POST /oauth/revoke` (RFC 7009 §2.1) of an access or refresh token, device-bound with `bearer` when given
    /// (PROTOCOL.md §7: the MFP revokes user tokens with its device token).
    pub async fn revoke(&mut self, token: &str, refresh: bool, bearer: Option<&str>) -> Result<Exchange, CaseError> {
        let client = self.client_id();
        let req = if refresh {
            roger_proto::revocation::RevocationRequest::refresh(&RefreshToken::new(token), &client)
        } else {
            roger_proto::revocation::RevocationRequest::access(&AccessToken::new(token), &client)
        };
        let bearer = bearer.map(AccessToken::new);
        let endpoint = self.endpoint(&self.endpoints.revocation, "revocation endpoint")?;
        let req = req.to_http(&endpoint, bearer.as_ref()).map_err(|e| CaseError::Kit(e.to_string()))?;
        self.send(req).await
    }

    /// `GET {api}{path_and_query}` with `Authorization: Bearer <token>` (RFC 6750 §2.1).
    pub async fn api_get(&mut self, path_and_query: &str, token: &str) -> Result<Exchange, CaseError> {
        let req = http::Request::get(format!("{}{path_and_query}", self.endpoints.api))
            .header(http::header::AUTHORIZATION, format!("Bearer {token}"))
            .header(http::header::ACCEPT, "application/json")
            .body(Vec::new())
            .map_err(|e| CaseError::Kit(e.to_string()))?;
        self.send(req).await
    }

    /// Whether the server offers the `/sim/` control API (the simulated server does, on loopback).
    pub async fn sim_available(&mut self) -> bool {
        let api = self.endpoints.api.clone();
        let Ok(req) = http::Request::get(format!("{api}/sim/clock")).body(Vec::new()) else { return false };
        matches!(self.send(req).await, Ok(e) if e.status == Some(200))
    }

    /// Moves the server's clock forward through `/sim/clock/advance`; [`CaseError::NotOffered`] when not offered.
    pub async fn advance(&mut self, seconds: u64) -> Result<(), CaseError> {
        let api = self.endpoints.api.clone();
        let body = serde_json::to_vec(&serde_json::json!({ "seconds": seconds })).unwrap_or_default();
        let req = http::Request::post(format!("{api}/sim/clock/advance"))
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(body)
            .map_err(|e| CaseError::Kit(e.to_string()))?;
        let e = self.send(req).await?;
        if e.status != Some(200) {
            return Err(CaseError::NotOffered("/sim/clock/advance".into()));
        }
        self.note(EvidenceSource::Kit, format!("moved the server's clock forward by {seconds} s (/sim/clock/advance)"));
        Ok(())
    }

    /// The server's store through `/sim/store`; [`CaseError::NotOffered`] when not offered.
    pub async fn store(&mut self) -> Result<Vec<u8>, CaseError> {
        let api = self.endpoints.api.clone();
        let req = http::Request::get(format!("{api}/sim/store"))
            .body(Vec::new())
            .map_err(|e| CaseError::Kit(e.to_string()))?;
        let at = Instant::now();
        let answer = self.transport.send(req).await.ok().filter(|a| a.status().as_u16() == 200);
        let Some(a) = answer else { return Err(CaseError::NotOffered("/sim/store".into())) };
        let at_ms = at.saturating_duration_since(self.t0).as_millis() as u64;
        let text = format!("GET /sim/store → 200 ({} bytes, not shown)", a.body().len());
        self.evidence.push(Evidence { source: EvidenceSource::Server, at_ms, text });
        Ok(a.into_body())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_committed_accounts_file_parses() {
        let text = include_str!("../../fixtures/conform-accounts.toml");
        let a = Accounts::parse(text).expect("accounts");
        assert_eq!(a.tenant(), "acme");
        assert_eq!(a.users.len(), 2);
        assert!(a.secrets().iter().any(|(s, k)| *s == "5678" && *k == "PIN"));
    }

    #[test]
    fn bad_accounts_are_refused_with_a_reason() {
        let one_user = "tenant = \"t\"\n[admin]\nusername = \"a\"\npassword = \"p\"\n[[users]]\nusername = \"u\"\npassword = \"p\"\npin = \"1\"\n";
        assert!(Accounts::parse(one_user).unwrap_err().contains("two users"));
        let no_pin = format!("{one_user}[[users]]\nusername = \"v\"\npassword = \"p\"\n");
        assert!(Accounts::parse(&no_pin).unwrap_err().contains("needs a pin"));
        let bad_client = format!("client_id = \"roger-mobile\"\n{one_user}");
        assert!(Accounts::parse(&bad_client).unwrap_err().contains("emb-"));
        let typo = format!("{one_user}[[users]]\nusername = \"v\"\npasword = \"p\"\npin = \"2\"\n");
        assert!(Accounts::parse(&typo).is_err(), "unknown members are refused");
        let ok = format!("{one_user}[[users]]\nusername = \"v\"\napp_token = \"rat_x\"\npin = \"2\"\n");
        assert!(Accounts::parse(&ok).is_ok());
    }

    /// A generic OAuth server needs only the client id (and a scope); the Roger parts are optional then.
    #[test]
    fn oauth_accounts_need_only_a_client() {
        let a = Accounts::parse_lenient("client_id = \"printer\"\nscope = \"roger.device offline_access\"\n")
            .expect("parses");
        assert!(a.check(Profile::Oauth).is_ok());
        assert!(a.check(Profile::Roger).unwrap_err().contains("--profile oauth"));
        assert_eq!(a.scope.as_deref(), Some("roger.device offline_access"));
        assert!(Accounts::parse_lenient("client_id = \"\"\n").is_err());
    }

    /// RFC 8414 §3.1: the well-known path goes between host and path; RFC 8414 §3.3: the issuer must be identical.
    #[test]
    fn generic_metadata() {
        assert_eq!(
            well_known_url("https://as.example", "oauth-authorization-server").unwrap(),
            "https://as.example/.well-known/oauth-authorization-server"
        );
        assert_eq!(
            well_known_url("https://as.example/realms/x/", "oauth-authorization-server").unwrap(),
            "https://as.example/.well-known/oauth-authorization-server/realms/x"
        );
        let doc = serde_json::json!({"issuer": "https://as.example", "token_endpoint": "https://as.example/token",
                                      "device_authorization_endpoint": "https://as.example/device/auth"});
        let e = generic_endpoints(&doc, "https://as.example", TransportPolicy::TlsOnly).expect("endpoints");
        assert_eq!(e.device_authorization, "https://as.example/device/auth");
        assert!(e.revocation.is_empty(), "not named: empty");
        assert!(generic_endpoints(&doc, "https://other.example", TransportPolicy::TlsOnly).is_err());
        let no_token = serde_json::json!({"issuer": "https://as.example"});
        assert!(generic_endpoints(&no_token, "https://as.example", TransportPolicy::TlsOnly).is_err());
    }
}
