//! The machine-readable contract (DESIGN.md: "OpenAPI for the REST API (served at `/openapi.json` and committed
//! under `docs/`), JSON Schema for the push envelope and the shim messages, so vendors in any language generate
//! clients and the suite validates bodies against the same schema").
//!
//! * [`document`]: an OpenAPI 3.1 document of every route of the API listener ([`super::run::router`] and
//!   [`super::api_routes::routes`]): methods, bearer security with the scopes of PROTOCOL.md §10, request and
//!   response bodies, the RFC 9457 problem and RFC 6749 §5.2 error answers. Body schemas come from the Rust types
//!   through `schemars` (roger-proto's `schema` feature) into `components/schemas`; the OAuth form bodies, which
//!   roger-proto parses by hand rather than with serde, are written out here from the same constants.
//! * [`push_envelope_schema`] and [`shim_schema`]: JSON Schema 2020-12 documents of PROTOCOL.md §11 and §13.
//!
//! `GET /openapi.json` ([`serve`], no authentication) answers [`document`] with the server's own origin under
//! `servers`. The committed copies under `docs/` are checked by a test that prints [`REGENERATE`] when they drift.

use std::sync::Arc;

use axum::extract::State;
use axum::response::Response;
use roger_proto::api::{
    CodeDecision, CodeLookup, DeviceConfig, DeviceUpdate, DriveFileList, Job, JobList, JobResult, MeExport,
    PrintFeatures, PushCredentials, ReleaseAnswer, ReleaseRequest, ScanComplete, ScanCreate, ScanCreated,
    ScanProfileList, SessionEnd, SubmitJob, TicketRedeem, TicketRedemption, IDEMPOTENCY_KEY,
};
use roger_proto::device_authorization::DeviceAuthorizationResponse;
use roger_proto::discovery::Regions;
use roger_proto::error::{OAuthErrorResponse, ProblemDetails, PROBLEM_JSON};
use roger_proto::metadata::{AuthorizationServerMetadata, GRANT_DEVICE_CODE};
use roger_proto::push::PushEnvelope;
use roger_proto::server::api::{Handover, ReleaseRequested};
use roger_proto::server::settings::TenantSettings;
use roger_proto::shim::{
    JobsAnswer, PanelAnswer, PinAnswer, RegisterAnswer, ReleaseAnswer as ShimReleaseAnswer, ScanAnswer, ShimAnswer,
    ShimRequest, StartAnswer,
};
use roger_proto::token::{scope, TokenResponse};
use schemars::generate::SchemaSettings;
use schemars::{JsonSchema, SchemaGenerator};
use serde_json::{json, Map, Value};

use super::app::Shared;
use super::faults::{FaultPlan, FaultStatus};
use super::log::LogEntry;
use super::respond::json as json_answer;
use super::sim_routes::CONTROL_TOKEN_HEADER;

/// The committed OpenAPI document, relative to the workspace root.
pub const OPENAPI_FILE: &str = "docs/openapi.json";
/// The committed JSON Schema of the push envelope, relative to the workspace root.
pub const PUSH_ENVELOPE_FILE: &str = "docs/schemas/push-envelope.json";
/// The committed JSON Schema of the shim messages, relative to the workspace root.
pub const SHIM_FILE: &str = "docs/schemas/shim.json";
/// The command that rewrites the committed files from the Rust types (run from the workspace root).
pub const REGENERATE: &str = "ROGER_REGENERATE_CONTRACT=1 cargo test -p roger-sim --lib server::openapi";

/// Where the schemas of the push and shim documents live (`$defs`), with a stable `$id` base.
const SCHEMA_ID_BASE: &str = "https://roger.invalid/schemas/";

// ---------------------------------------------------------------------------------------------------------------
// Building blocks
// ---------------------------------------------------------------------------------------------------------------

/// The schema generator of the OpenAPI document: JSON Schema 2020-12 (the dialect of OpenAPI 3.1), definitions
/// under `components/schemas`, the deserialize contract (what the reference implementation accepts).
fn openapi_generator() -> SchemaGenerator {
    SchemaSettings::draft2020_12()
        .with(|s| {
            s.definitions_path = "/components/schemas".into();
            s.meta_schema = None;
        })
        .into_generator()
}

fn schema<T: JsonSchema>(g: &mut SchemaGenerator) -> Value {
    g.subschema_for::<T>().to_value()
}

/// Puts `T`'s schema into the generator's definitions without using the reference.
fn register<T: JsonSchema>(g: &mut SchemaGenerator) {
    g.subschema_for::<T>();
}

fn content(media: &str, schema: Value) -> Value {
    json!({ media: { "schema": schema } })
}

fn json_body(schema: Value) -> Value {
    json!({ "required": true, "content": content("application/json", schema) })
}

fn form_body(schema_ref: &str) -> Value {
    json!({
        "required": true,
        "content": content("application/x-www-form-urlencoded", json!({ "$ref": component(schema_ref) }))
    })
}

fn component(name: &str) -> String {
    format!("#/components/schemas/{name}")
}

fn response_ref(name: &str) -> Value {
    json!({ "$ref": format!("#/components/responses/{name}") })
}

fn ok_json(description: &str, schema: Value) -> Value {
    json!({
        "description": description,
        "headers": { "Cache-Control": { "$ref": "#/components/headers/Cache-Control" } },
        "content": content("application/json", schema)
    })
}

fn no_content(description: &str) -> Value {
    json!({ "description": description })
}

fn html(description: &str) -> Value {
    json!({ "description": description, "content": content("text/html", json!({ "type": "string" })) })
}

fn path_param(name: &str, description: &str) -> Value {
    json!({ "name": name, "in": "path", "required": true, "description": description, "schema": { "type": "string" } })
}

fn query_param(name: &str, description: &str, required: bool) -> Value {
    json!({
        "name": name,
        "in": "query",
        "required": required,
        "description": description,
        "schema": { "type": "string" }
    })
}

/// The security requirement of a bearer-token route: any one of `scopes` (PROTOCOL.md §10; OpenAPI 3.1 lets a
/// non-OAuth scheme list the roles it needs).
fn bearer(scopes: &[&str]) -> Value {
    Value::Array(scopes.iter().map(|s| json!({ "bearer": [s] })).collect())
}

/// One operation.
struct Op {
    id: &'static str,
    tag: &'static str,
    summary: &'static str,
    security: Value,
    parameters: Vec<Value>,
    body: Option<Value>,
    responses: Vec<(&'static str, Value)>,
}

impl Op {
    fn new(id: &'static str, tag: &'static str, summary: &'static str) -> Self {
        Self { id, tag, summary, security: json!([]), parameters: Vec::new(), body: None, responses: Vec::new() }
    }

    fn security(mut self, security: Value) -> Self {
        self.security = security;
        self
    }

    fn param(mut self, p: Value) -> Self {
        self.parameters.push(p);
        self
    }

    fn body(mut self, body: Value) -> Self {
        self.body = Some(body);
        self
    }

    fn answer(mut self, status: &'static str, response: Value) -> Self {
        self.responses.push((status, response));
        self
    }

    /// The refusals every bearer route can give (RFC 6750 §3.1, PROTOCOL.md §10).
    fn bearer_errors(self) -> Self {
        self.answer("401", response_ref("Unauthorized")).answer("403", response_ref("Forbidden"))
    }

    /// The refusals of a JSON body (PROTOCOL.md §10: "Never a 5xx for bad input").
    fn json_errors(self) -> Self {
        self.answer("400", response_ref("BadRequest"))
            .answer("413", response_ref("Problem"))
            .answer("415", response_ref("Problem"))
    }

    /// The refusals of an OAuth endpoint (RFC 6749 §5.2; PROTOCOL.md §7 device-bound client authentication).
    fn oauth_errors(self) -> Self {
        self.answer("400", response_ref("OAuthError"))
            .answer("401", response_ref("OAuthUnauthorized"))
            .answer("429", response_ref("OAuthTooManyRequests"))
    }

    fn into_value(self) -> Value {
        let mut op = Map::new();
        op.insert("operationId".into(), json!(self.id));
        op.insert("tags".into(), json!([self.tag]));
        op.insert("summary".into(), json!(self.summary));
        op.insert("security".into(), self.security);
        if !self.parameters.is_empty() {
            op.insert("parameters".into(), Value::Array(self.parameters));
        }
        if let Some(b) = self.body {
            op.insert("requestBody".into(), b);
        }
        let mut responses: Map<String, Value> = self.responses.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
        responses.insert("default".into(), response_ref("Problem"));
        op.insert("responses".into(), Value::Object(responses));
        Value::Object(op)
    }
}

// ---------------------------------------------------------------------------------------------------------------
// The OAuth form bodies (roger-proto parses them by hand: RFC 6749 Appendix B encoding, no repeated parameters)
// ---------------------------------------------------------------------------------------------------------------

fn form_schemas() -> Vec<(&'static str, Value)> {
    let client_id = json!({
        "type": "string",
        "description": "emb-<vendor> (MFP), roger-mobile or roger-desktop (PROTOCOL.md §3)"
    });
    let secret = json!({ "type": "string", roger_proto::schema::SECRET_KEYWORD: true });
    let scopes: Vec<&str> = scope::ALL.to_vec();
    let grant = |name: &str, description: &str, props: Value, required: &[&str]| {
        let mut properties = json!({ "grant_type": { "const": name }, "client_id": client_id });
        if let (Some(p), Some(extra)) = (properties.as_object_mut(), props.as_object()) {
            p.extend(extra.clone());
        }
        let mut req = vec!["grant_type", "client_id"];
        req.extend_from_slice(required);
        json!({ "type": "object", "description": description, "properties": properties, "required": req })
    };
    vec![
        (
            "DeviceAuthorizationRequest",
            json!({
                "type": "object",
                "description": "RFC 8628 §3.1 (PROTOCOL.md §4, §5, §8): a registration (scope roger.device, no \
                                authentication), a session QR code (scope roger.release, device-bound, §7) or a \
                                desktop login (client_id roger-desktop, scope roger.app).",
                "properties": {
                    "client_id": client_id,
                    "scope": { "type": "string", "enum": [scope::DEVICE, scope::RELEASE, scope::APP] },
                    "device_model": { "type": "string", "description": "Registration: the printer model" },
                    "device_serial": { "type": "string", "description": "Registration: the serial number" }
                },
                "required": ["client_id", "scope"]
            }),
        ),
        (
            "AuthorizationCodeGrant",
            grant(
                "authorization_code",
                "RFC 6749 §4.1.3 with the PKCE verifier of RFC 7636 §4.5 (app login, PROTOCOL.md §4)",
                json!({ "code": secret, "redirect_uri": { "type": "string" }, "code_verifier": secret }),
                &["code", "redirect_uri", "code_verifier"],
            ),
        ),
        (
            "DeviceCodeGrant",
            grant(
                GRANT_DEVICE_CODE,
                "RFC 8628 §3.4 polling (PROTOCOL.md §5 step 4, §8 step 1); session codes are device-bound (§7)",
                json!({ "device_code": secret }),
                &["device_code"],
            ),
        ),
        (
            "PasswordGrant",
            grant(
                "password",
                "RFC 6749 §4.3.2, device-bound (PROTOCOL.md §8 step 2 and PIN login)",
                json!({
                    "username": { "type": "string" },
                    "password": secret,
                    "scope": { "type": "string", "enum": [scope::STEP2, scope::PIN_LOGIN] }
                }),
                &["username", "password", "scope"],
            ),
        ),
        (
            "RefreshTokenGrant",
            grant(
                "refresh_token",
                "RFC 6749 §6, rotating (R-TOK-2, R-TOK-3)",
                json!({ "refresh_token": secret, "scope": { "type": "string" } }),
                &["refresh_token"],
            ),
        ),
        (
            "TokenRequest",
            json!({
                "description": "A token request (RFC 6749 §3.2), one form per grant",
                "oneOf": [
                    { "$ref": component("AuthorizationCodeGrant") },
                    { "$ref": component("DeviceCodeGrant") },
                    { "$ref": component("PasswordGrant") },
                    { "$ref": component("RefreshTokenGrant") }
                ],
                "discriminator": {
                    "propertyName": "grant_type",
                    "mapping": {
                        "authorization_code": component("AuthorizationCodeGrant"),
                        GRANT_DEVICE_CODE: component("DeviceCodeGrant"),
                        "password": component("PasswordGrant"),
                        "refresh_token": component("RefreshTokenGrant")
                    }
                }
            }),
        ),
        (
            "RevocationRequest",
            json!({
                "type": "object",
                "description": "RFC 7009 §2.1; the MFP revokes user tokens with device-bound authentication (§7)",
                "properties": {
                    "token": secret,
                    "token_type_hint": { "type": "string", "enum": ["access_token", "refresh_token"] },
                    "client_id": client_id
                },
                "required": ["token", "client_id"]
            }),
        ),
        (
            "LoginForm",
            json!({
                "type": "object",
                "description": "The app login form post (PROTOCOL.md §4): the authorization request, the tenant, \
                                the credentials and the form's CSRF token",
                "properties": {
                    "response_type": { "const": "code" },
                    "client_id": client_id,
                    "redirect_uri": { "type": "string" },
                    "code_challenge": { "type": "string" },
                    "code_challenge_method": { "const": "S256" },
                    "state": { "type": "string" },
                    "scope": { "type": "string", "enum": scopes },
                    "tenant": { "type": "string" },
                    "username": { "type": "string" },
                    "password": secret,
                    "csrf_token": secret
                },
                "required": ["response_type", "client_id", "redirect_uri", "code_challenge",
                             "code_challenge_method", "state", "scope", "tenant", "username", "password",
                             "csrf_token"]
            }),
        ),
    ]
}

fn control_schemas() -> Vec<(&'static str, Value)> {
    vec![
        (
            "SimClock",
            json!({
                "type": "object",
                "description": "The server's clock (DESIGN.md: system or virtual; the virtual offset only grows)",
                "properties": {
                    "now": { "type": "string", "format": "date-time" },
                    "unix_ms": { "type": "integer" },
                    "kind": { "type": "string", "enum": ["system", "virtual"] },
                    "offset_secs": { "type": "number" }
                },
                "required": ["now", "unix_ms", "kind", "offset_secs"]
            }),
        ),
        (
            "SimAdvance",
            json!({
                "type": "object",
                "properties": { "seconds": { "type": "number", "minimum": 0, "maximum": 315_360_000 } },
                "required": ["seconds"]
            }),
        ),
        (
            "SimLog",
            json!({
                "type": "object",
                "properties": { "entries": { "type": "array", "items": { "$ref": component("LogEntry") } } },
                "required": ["entries"]
            }),
        ),
    ]
}

// ---------------------------------------------------------------------------------------------------------------
// The operations
// ---------------------------------------------------------------------------------------------------------------

const JOB_ID: &str = "The job id";

fn operations(g: &mut SchemaGenerator) -> Vec<(&'static str, &'static str, Op)> {
    let device = || bearer(&[scope::DEVICE]);
    let app = || bearer(&[scope::APP]);
    let id = |what: &str| path_param("id", what);
    let optional_device_bound = json!([{}, { "deviceBearer": [] }]);
    vec![
        // Discovery and metadata (PROTOCOL.md §2).
        (
            "/regions",
            "get",
            Op::new("getRegions", "discovery", "The regions and their API origins (PROTOCOL.md §2, R-DISC-1)")
                .answer("200", ok_json("The regions", schema::<Regions>(g))),
        ),
        (
            "/.well-known/oauth-authorization-server",
            "get",
            Op::new("getMetadata", "discovery", "Authorization server metadata (RFC 8414; issuer = API origin)")
                .answer("200", ok_json("The metadata", schema::<AuthorizationServerMetadata>(g))),
        ),
        // OAuth (PROTOCOL.md §4–8).
        (
            "/oauth/device_authorization",
            "post",
            Op::new("deviceAuthorization", "oauth", "Device authorization (RFC 8628 §3.1)")
                .security(optional_device_bound.clone())
                .body(form_body("DeviceAuthorizationRequest"))
                .answer("200", ok_json("Codes (RFC 8628 §3.2)", schema::<DeviceAuthorizationResponse>(g)))
                .oauth_errors(),
        ),
        (
            "/oauth/token",
            "post",
            Op::new("token", "oauth", "Token endpoint (RFC 6749 §3.2): code + PKCE, device code, password, refresh")
                .security(optional_device_bound.clone())
                .body(form_body("TokenRequest"))
                .answer("200", ok_json("Tokens (RFC 6749 §5.1) with the Roger members", schema::<TokenResponse>(g)))
                .oauth_errors(),
        ),
        (
            "/oauth/revoke",
            "post",
            Op::new("revoke", "oauth", "Revocation (RFC 7009): 200 also for unknown tokens")
                .security(optional_device_bound)
                .body(form_body("RevocationRequest"))
                .answer("200", ok_json("Revoked (or unknown)", json!({ "type": "object" })))
                .oauth_errors(),
        ),
        (
            "/oauth/authorize",
            "get",
            Op::new("authorizeForm", "oauth", "The app login form (PROTOCOL.md §4; RFC 7636 S256, RFC 8252)")
                .param(query_param("response_type", "code", true))
                .param(query_param("client_id", "roger-mobile", true))
                .param(query_param("redirect_uri", "roger://callback", true))
                .param(query_param("code_challenge", "RFC 7636 §4.2 S256 challenge", true))
                .param(query_param("code_challenge_method", "S256", true))
                .param(query_param("state", "Opaque value echoed in the redirect", true))
                .param(query_param("scope", "roger.app", true))
                .answer("200", html("The login form (CSRF token bound to a SameSite cookie)"))
                .answer("400", html("An invalid authorization request")),
        ),
        (
            "/oauth/authorize",
            "post",
            Op::new("authorizeSubmit", "oauth", "Sign in: 302 to the app with code and state (PROTOCOL.md §4)")
                .body(form_body("LoginForm"))
                .answer(
                    "302",
                    json!({
                        "description": "Redirect to redirect_uri with code (one use within 60 s) and state",
                        "headers": { "Location": { "schema": { "type": "string" } } }
                    }),
                )
                .answer("400", html("An invalid request"))
                .answer("401", html("Wrong tenant, user name or password (the form again)"))
                .answer("403", html("The CSRF token does not match the cookie")),
        ),
        (
            "/device",
            "get",
            Op::new("verificationPage", "oauth", "The verification page of RFC 8628 §3.3")
                .param(query_param("user_code", "The user code (verification_uri_complete)", false))
                .answer("200", html("The code, the printer it belongs to, and a pointer to the app")),
        ),
        // Approvals (PROTOCOL.md §5 step 3, §8).
        (
            "/api/v1/codes/{user_code}",
            "get",
            Op::new("lookupCode", "codes", "Look a user code up before approving it (R-QR-2, RFC 8628 §5.4)")
                .security(app())
                .param(path_param("user_code", "The user code, wire form"))
                .answer("200", ok_json("What approving the code does", schema::<CodeLookup>(g)))
                .bearer_errors()
                .answer("404", response_ref("NotFound"))
                .answer("429", response_ref("TooManyRequests")),
        ),
        (
            "/api/v1/codes/approve",
            "post",
            Op::new("approveCode", "codes", "Approve a code (tenant admins for registrations)")
                .security(app())
                .body(json_body(schema::<CodeDecision>(g)))
                .answer("204", no_content("Approved; the MFP's next poll gets tokens"))
                .bearer_errors()
                .json_errors()
                .answer("404", response_ref("NotFound"))
                .answer("429", response_ref("TooManyRequests")),
        ),
        (
            "/api/v1/codes/deny",
            "post",
            Op::new("denyCode", "codes", "Deny a code (the MFP's next poll gets access_denied)")
                .security(app())
                .body(json_body(schema::<CodeDecision>(g)))
                .answer("204", no_content("Denied"))
                .bearer_errors()
                .json_errors()
                .answer("404", response_ref("NotFound"))
                .answer("429", response_ref("TooManyRequests")),
        ),
        // The device (PROTOCOL.md §9–11).
        (
            "/api/v1/device",
            "get",
            Op::new("getDevice", "device", "The calling device's configuration")
                .security(device())
                .answer("200", ok_json("The configuration", schema::<DeviceConfig>(g)))
                .bearer_errors(),
        ),
        (
            "/api/v1/device",
            "put",
            Op::new("putDevice", "device", "Publish (or withdraw, null) the MFP's job endpoint for desktop hand-over")
                .security(device())
                .body(json_body(schema::<DeviceUpdate>(g)))
                .answer("200", ok_json("The configuration", schema::<DeviceConfig>(g)))
                .bearer_errors()
                .json_errors(),
        ),
        (
            "/api/v1/device/push",
            "get",
            Op::new("getDevicePush", "device", "Short-lived broker credentials for the device queue (PROTOCOL.md §11)")
                .security(device())
                .answer("200", ok_json("Credentials that may only consume that queue", schema::<PushCredentials>(g)))
                .bearer_errors()
                .answer("404", response_ref("NotFound")),
        ),
        (
            "/api/v1/me/push",
            "get",
            Op::new("getAppPush", "me", "Broker credentials for one app installation's queue (PROTOCOL.md §11)")
                .security(app())
                .param(query_param("installation_id", "The app installation (one queue each)", true))
                .answer("200", ok_json("Credentials that may only consume that queue", schema::<PushCredentials>(g)))
                .bearer_errors()
                .answer("400", response_ref("BadRequest"))
                .answer("404", response_ref("NotFound")),
        ),
        (
            "/api/v1/tickets/redeem",
            "post",
            Op::new("redeemTicket", "device", "Check a desktop hand-over ticket (one use, bound to job and device)")
                .security(device())
                .body(json_body(schema::<TicketRedeem>(g)))
                .answer("200", ok_json("What the ticket is good for", schema::<TicketRedemption>(g)))
                .bearer_errors()
                .json_errors()
                .answer("404", response_ref("NotFound")),
        ),
        // Jobs (PROTOCOL.md §9).
        (
            "/api/v1/jobs",
            "get",
            Op::new("listJobs", "jobs", "The caller's queued jobs")
                .security(bearer(&[scope::RELEASE, scope::APP]))
                .param(query_param("state", "queued", false))
                .answer("200", ok_json("The jobs", schema::<JobList>(g)))
                .bearer_errors()
                .answer("400", response_ref("BadRequest")),
        ),
        (
            "/api/v1/jobs",
            "post",
            Op::new("submitJob", "jobs", "Queue a drive file (step 2 or app) or announce a desktop file (app)")
                .security(bearer(&[scope::PRINT, scope::APP]))
                .body(json_body(schema::<SubmitJob>(g)))
                .answer("201", ok_json("The queued job", schema::<Job>(g)))
                .bearer_errors()
                .json_errors()
                .answer("404", response_ref("NotFound")),
        ),
        (
            "/api/v1/jobs/{id}",
            "delete",
            Op::new("deleteJob", "jobs", "Delete one of the caller's jobs")
                .security(app())
                .param(id(JOB_ID))
                .answer("204", no_content("Deleted"))
                .bearer_errors()
                .answer("404", response_ref("NotFound")),
        ),
        (
            "/api/v1/jobs/{id}/release",
            "post",
            Op::new("releaseJob", "jobs", "Release a job (MFP: document link or ticket; phone: rings the printer)")
                .security(bearer(&[scope::RELEASE, scope::APP]))
                .param(id(JOB_ID))
                .param(json!({
                    "name": IDEMPOTENCY_KEY,
                    "in": "header",
                    "required": false,
                    "description":
                        "Repeating a release with the same key returns an equivalent answer (PROTOCOL.md §9)",
                    "schema": { "type": "string", "minLength": 1, "maxLength": 255 }
                }))
                .body(json!({
                    "required": false,
                    "content": content("application/json", schema::<ReleaseRequest>(g))
                }))
                .answer("200", ok_json("At the MFP: a fresh drive URL or a desktop ticket", schema::<ReleaseAnswer>(g)))
                .answer("202", ok_json("From the phone: the printer was rung", schema::<ReleaseRequested>(g)))
                .bearer_errors()
                .json_errors()
                .answer("404", response_ref("NotFound"))
                .answer("409", response_ref("Conflict")),
        ),
        (
            "/api/v1/jobs/{id}/handover",
            "post",
            Op::new("handover", "jobs", "Where and with which ticket the desktop delivers a released desktop job")
                .security(app())
                .param(id(JOB_ID))
                .answer("200", ok_json("The printer's job endpoint and a one-use ticket", schema::<Handover>(g)))
                .bearer_errors()
                .answer("404", response_ref("NotFound"))
                .answer("409", response_ref("Conflict")),
        ),
        (
            "/api/v1/jobs/{id}/result",
            "post",
            Op::new("reportResult", "jobs", "Report printed or failed (idempotent)")
                .security(bearer(&[scope::RELEASE, scope::APP]))
                .param(id(JOB_ID))
                .body(json_body(schema::<JobResult>(g)))
                .answer("204", no_content("Recorded"))
                .bearer_errors()
                .json_errors()
                .answer("404", response_ref("NotFound"))
                .answer("409", response_ref("Conflict")),
        ),
        // Drive, print features, scans (PROTOCOL.md §9).
        (
            "/api/v1/drive/files",
            "get",
            Op::new("listDriveFiles", "drive", "The user's drive files (ids, names, sizes)")
                .security(bearer(&[scope::PRINT]))
                .param(query_param("folder", "Print", false))
                .answer("200", ok_json("The files", schema::<DriveFileList>(g)))
                .bearer_errors(),
        ),
        (
            "/api/v1/print-features",
            "get",
            Op::new("printFeatures", "drive", "What the tenant's printers offer")
                .security(bearer(&[scope::PRINT]))
                .answer("200", ok_json("The features", schema::<PrintFeatures>(g)))
                .bearer_errors(),
        ),
        (
            "/api/v1/scan-profiles",
            "get",
            Op::new("scanProfiles", "scans", "The tenant's scan profiles")
                .security(bearer(&[scope::SCAN]))
                .answer("200", ok_json("The profiles", schema::<ScanProfileList>(g)))
                .bearer_errors(),
        ),
        (
            "/api/v1/scans",
            "post",
            Op::new("createScan", "scans", "Start a scan: a pre-authorised upload URL into the drive's Scan folder")
                .security(bearer(&[scope::SCAN]))
                .body(json_body(schema::<ScanCreate>(g)))
                .answer("201", ok_json("The scan and its upload link", schema::<ScanCreated>(g)))
                .bearer_errors()
                .json_errors()
                .answer("404", response_ref("NotFound")),
        ),
        (
            "/api/v1/scans/{id}/complete",
            "post",
            Op::new("completeScan", "scans", "The upload finished (timestamps only are kept, R-DATA-2)")
                .security(bearer(&[scope::SCAN]))
                .param(id("The scan id"))
                .body(json!({ "required": false, "content": content("application/json", schema::<ScanComplete>(g)) }))
                .answer("204", no_content("Recorded"))
                .bearer_errors()
                .json_errors()
                .answer("404", response_ref("NotFound")),
        ),
        // Sessions, the user's data, devices (PROTOCOL.md §8, R-DATA-2, R-TOK-4).
        (
            "/api/v1/sessions/end",
            "post",
            Op::new("endSession", "me", "End the caller's session at a printer (push session.ended)")
                .security(app())
                .body(json_body(schema::<SessionEnd>(g)))
                .answer("204", no_content("Ended"))
                .bearer_errors()
                .json_errors()
                .answer("404", response_ref("NotFound")),
        ),
        (
            "/api/v1/devices/{id}",
            "delete",
            Op::new("removeDevice", "admin", "An admin removes a device (tokens revoked, device.disconnected)")
                .security(app())
                .param(id("The device id"))
                .answer("204", no_content("Removed"))
                .bearer_errors()
                .answer("404", response_ref("NotFound")),
        ),
        (
            "/api/v1/me/export",
            "get",
            Op::new("exportMe", "me", "Everything the server keeps about the caller (R-DATA-2)")
                .security(app())
                .answer("200", ok_json("The export", schema::<MeExport>(g)))
                .bearer_errors(),
        ),
        (
            "/api/v1/me",
            "delete",
            Op::new("deleteMe", "me", "Erase the caller's data (R-DATA-2)")
                .security(app())
                .answer("204", no_content("Erased"))
                .bearer_errors(),
        ),
        // The control API (loopback or the control token; absent from metadata).
        (
            "/sim/clock",
            "get",
            Op::new("simClock", "sim", "The server's clock")
                .security(control())
                .answer("200", ok_json("The clock", json!({ "$ref": component("SimClock") }))),
        ),
        (
            "/sim/clock/advance",
            "post",
            Op::new("simAdvance", "sim", "Move the virtual clock forward; due expiries apply at once")
                .security(control())
                .body(json_body(json!({ "$ref": component("SimAdvance") })))
                .answer("200", ok_json("The clock", json!({ "$ref": component("SimClock") })))
                .answer("409", response_ref("Conflict")),
        ),
        (
            "/sim/settings",
            "get",
            Op::new("simGetSettings", "sim", "The default tenant settings (lifetimes, intervals, limits)")
                .security(control())
                .answer("200", ok_json("The settings", schema::<TenantSettings>(g))),
        ),
        (
            "/sim/settings",
            "put",
            Op::new("simPutSettings", "sim", "Merge the given members over every tenant's settings and the defaults")
                .security(control())
                .body(json_body(schema::<TenantSettings>(g)))
                .answer("200", ok_json("The settings", schema::<TenantSettings>(g)))
                .json_errors(),
        ),
        (
            "/sim/store",
            "get",
            Op::new("simStore", "sim", "Everything the server keeps (hashes, never secrets)")
                .security(control())
                .answer("200", ok_json("The state", json!({ "type": "object" }))),
        ),
        (
            "/sim/log",
            "get",
            Op::new("simLog", "sim", "The request log (secrets redacted; polls with their gaps)")
                .security(control())
                .param(json!({
                    "name": "since",
                    "in": "query",
                    "required": false,
                    "schema": { "type": "integer", "minimum": 0 }
                }))
                .answer("200", ok_json("The entries", json!({ "$ref": component("SimLog") }))),
        ),
        (
            "/sim/traffic",
            "get",
            Op::new("simTraffic", "sim", "Request bodies and bytes the API listener received (R-DATA-1 evidence)")
                .security(control())
                .answer("200", ok_json("The totals", schema::<super::traffic::TrafficTotals>(g))),
        ),
        (
            "/sim/faults",
            "get",
            Op::new("simGetFaults", "sim", "The fault plan and how often each rule was applied")
                .security(control())
                .answer("200", ok_json("The plan", schema::<FaultStatus>(g))),
        ),
        (
            "/sim/faults",
            "post",
            Op::new("simSetFaults", "sim", "Replace the seeded fault plan (DESIGN.md \"Faults\")")
                .security(control())
                .body(json_body(schema::<FaultPlan>(g)))
                .answer("200", ok_json("The plan", schema::<FaultStatus>(g)))
                .json_errors(),
        ),
        (
            "/sim/faults",
            "delete",
            Op::new("simClearFaults", "sim", "No more faults")
                .security(control())
                .answer("200", ok_json("The (empty) plan", schema::<FaultStatus>(g))),
        ),
        (
            "/openapi.json",
            "get",
            Op::new("openapi", "contract", "This document (DESIGN.md: the machine-readable contract)")
                .answer("200", ok_json("OpenAPI 3.1", json!({ "type": "object" }))),
        ),
    ]
}

fn control() -> Value {
    json!([{}, { "controlToken": [] }])
}

fn components(g: &mut SchemaGenerator) -> Value {
    let problem = schema::<ProblemDetails>(g);
    let oauth = schema::<OAuthErrorResponse>(g);
    register::<LogEntry>(g);
    let problem_answer = |description: &str, headers: Value| {
        let body = content(PROBLEM_JSON, problem.clone());
        json!({ "description": description, "headers": headers, "content": body })
    };
    let oauth_answer = |description: &str, headers: Value| {
        let body = content("application/json", oauth.clone());
        json!({ "description": description, "headers": headers, "content": body })
    };
    let www = json!({ "WWW-Authenticate": { "$ref": "#/components/headers/WWW-Authenticate" } });
    let retry = json!({ "Retry-After": { "$ref": "#/components/headers/Retry-After" } });
    let mut schemas: Map<String, Value> = g.take_definitions(true).into_iter().collect();
    for (name, s) in form_schemas().into_iter().chain(control_schemas()) {
        schemas.insert(name.to_owned(), s);
    }
    json!({
        "schemas": schemas,
        "responses": {
            "Problem": problem_answer("An RFC 9457 problem (type urn:roger:problem:<name>)", json!({})),
            "BadRequest": problem_answer("Malformed request (never a 5xx for bad input, PROTOCOL.md §10)", json!({})),
            "Unauthorized": problem_answer(
                "No credentials (WWW-Authenticate: Bearer realm=\"roger\") or a bad token (error=\"invalid_token\")",
                www.clone()
            ),
            "Forbidden": problem_answer(
                "Wrong scope (WWW-Authenticate: Bearer error=\"insufficient_scope\", scope=\"…\") or wrong role",
                www.clone()
            ),
            "NotFound": problem_answer("Unknown, expired, used, or someone else's", json!({})),
            "Conflict": problem_answer("The object's state forbids the request", json!({})),
            "TooManyRequests": problem_answer("Rate-limited: wait Retry-After seconds (§12)", retry.clone()),
            "OAuthError": oauth_answer("An RFC 6749 §5.2 error (RFC 8628 §3.5 codes while polling)", json!({})),
            "OAuthUnauthorized": oauth_answer(
                "invalid_client: device-bound client authentication failed (PROTOCOL.md §7); refresh once and retry",
                www
            ),
            "OAuthTooManyRequests": oauth_answer("temporarily_unavailable with Retry-After (PROTOCOL.md §12)", retry)
        },
        "headers": {
            "WWW-Authenticate": { "description": "RFC 6750 §3", "schema": { "type": "string" } },
            "Retry-After": {
                "description": "Seconds to wait (RFC 9110 §10.2.3)",
                "schema": { "type": "integer", "minimum": 0 }
            },
            "Cache-Control": {
                "description": "no-store on every answer of the API listener (R-SEC-1)",
                "schema": { "type": "string" }
            }
        },
        "securitySchemes": {
            "bearer": {
                "type": "http",
                "scheme": "bearer",
                "description": "An access token (RFC 6750 §2.1); the roles listed are the scopes of PROTOCOL.md §10"
            },
            "deviceBearer": {
                "type": "http",
                "scheme": "bearer",
                "description": "Device-bound client authentication (PROTOCOL.md §7): the MFP's roger.device access \
                                token plus client_id in the form"
            },
            "controlToken": {
                "type": "apiKey",
                "in": "header",
                "name": CONTROL_TOKEN_HEADER,
                "description": "Opens /sim/ to non-loopback callers (loopback callers need none)"
            }
        }
    })
}

/// The OpenAPI 3.1 document of the API listener, without `servers` (the committed `docs/openapi.json`).
pub fn document() -> Value {
    let mut g = openapi_generator();
    let mut paths: Map<String, Value> = Map::new();
    for (path, method, op) in operations(&mut g) {
        let item = paths.entry(path.to_owned()).or_insert_with(|| json!({}));
        if let Some(item) = item.as_object_mut() {
            item.insert(method.to_owned(), op.into_value());
        }
    }
    let components = components(&mut g);
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Roger API (roger-sim)",
            "version": env!("CARGO_PKG_VERSION"),
            "summary": "The MyQ Roger cloud-print protocol as this project models it (docs/protocol.md)",
            "description": "Generated from the Rust types of roger-proto and roger-sim (DESIGN.md: the machine-\
                            readable \
                            contract). Discovery and metadata (PROTOCOL.md §2), the OAuth endpoints (§4–8), the REST \
                            API (§9–10) and the simulator's control API under /sim/. Timestamps are RFC 3339 UTC \
                            strings; members marked x-roger-secret are credentials (R-SEC-1). Unknown members are \
                            ignored by clients.",
            "license": { "name": "MIT OR Apache-2.0", "identifier": "MIT OR Apache-2.0" }
        },
        "tags": [
            { "name": "discovery", "description": "PROTOCOL.md §2" },
            { "name": "oauth", "description": "PROTOCOL.md §4–8 (RFC 6749, 7009, 7636, 8628)" },
            { "name": "codes", "description": "Approvals (PROTOCOL.md §5 step 3, §8)" },
            { "name": "device", "description": "The MFP's own resources (PROTOCOL.md §9–11)" },
            { "name": "jobs", "description": "PROTOCOL.md §9" },
            { "name": "drive", "description": "PROTOCOL.md §9" },
            { "name": "scans", "description": "PROTOCOL.md §9" },
            { "name": "me", "description": "The app user (PROTOCOL.md §8, §11, R-DATA-2)" },
            { "name": "admin", "description": "Tenant admins (R-TOK-4)" },
            { "name": "sim", "description": "The simulator's control API (loopback or control token)" },
            { "name": "contract", "description": "DESIGN.md: the machine-readable contract" }
        ],
        "paths": paths,
        "components": components
    })
}

/// [`document`] with `servers` naming `api`.
pub fn document_for(api: &str) -> Value {
    let mut doc = document();
    if let Some(obj) = doc.as_object_mut() {
        obj.insert("servers".into(), json!([{ "url": api, "description": "This server" }]));
    }
    doc
}

/// `GET /openapi.json` (no authentication).
pub async fn serve(State(s): State<Arc<Shared>>) -> Response {
    json_answer(200, &document_for(&s.api))
}

fn root_schema(id: &str, title: &str, description: &str, build: impl FnOnce(&mut SchemaGenerator) -> Value) -> Value {
    let mut g = SchemaSettings::draft2020_12().into_generator();
    let root = build(&mut g);
    let defs: Map<String, Value> = g.take_definitions(true).into_iter().collect();
    let mut doc = json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": format!("{SCHEMA_ID_BASE}{id}"),
        "title": title,
        "description": description
    });
    if let (Some(obj), Some(root)) = (doc.as_object_mut(), root.as_object()) {
        obj.extend(root.clone());
        obj.insert("$defs".into(), Value::Object(defs));
    }
    doc
}

/// The JSON Schema of a push message (PROTOCOL.md §11, R-PUSH-1), `docs/schemas/push-envelope.json`.
pub fn push_envelope_schema() -> Value {
    root_schema(
        "push-envelope.json",
        "Roger push envelope",
        "One push message on the roger.events exchange (PROTOCOL.md §11): a doorbell with ids only (R-PUSH-1).",
        schema::<PushEnvelope>,
    )
}

/// The JSON Schema of the conformance shim's lines (PROTOCOL.md §13), `docs/schemas/shim.json`: a request is a
/// `ShimRequest`, an answer a `ShimAnswer` whose other members are those of the typed answer of its request.
pub fn shim_schema() -> Value {
    root_schema(
        "shim.json",
        "Roger conformance shim messages",
        "One line on the shim's stdin (ShimRequest) or stdout (ShimAnswer plus the members of the typed answer of \
         the request's op: StartAnswer, RegisterAnswer, PanelAnswer, PinAnswer, JobsAnswer, ShimReleaseAnswer, \
         ScanAnswer) (PROTOCOL.md §13).",
        |g| {
            let request = schema::<ShimRequest>(g);
            let answer = schema::<ShimAnswer>(g);
            // The typed answers go into `$defs` for generators and validators to pick by `op`.
            register::<StartAnswer>(g);
            register::<RegisterAnswer>(g);
            register::<PanelAnswer>(g);
            register::<PinAnswer>(g);
            register::<JobsAnswer>(g);
            register::<ShimReleaseAnswer>(g);
            register::<ScanAnswer>(g);
            json!({ "anyOf": [request, answer] })
        },
    )
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::path::PathBuf;

    use super::*;

    const METHODS: [&str; 5] = ["get", "post", "put", "delete", "patch"];

    /// Every `.route("path", get(..).post(..))` call in a router's source, as (path, method) pairs. Reading the
    /// source keeps the check honest: axum cannot list a router's routes, and a hand-kept list would drift too.
    fn routes_in_source(src: &str) -> BTreeSet<(String, String)> {
        let mut out = BTreeSet::new();
        let mut rest = src;
        while let Some(i) = rest.find(".route(\"") {
            let open = i + ".route".len();
            let mut depth = 0usize;
            let mut close = rest.len();
            for (k, c) in rest[open..].char_indices() {
                match c {
                    '(' => depth += 1,
                    ')' => {
                        depth -= 1;
                        if depth == 0 {
                            close = open + k;
                            break;
                        }
                    }
                    _ => {}
                }
            }
            let args = &rest[open + 1..close];
            let path = args.trim_start_matches('"').split('"').next().unwrap_or_default().to_owned();
            for m in METHODS {
                let needle = format!("{m}(");
                let mut from = 0;
                while let Some(j) = args[from..].find(&needle) {
                    let at = from + j;
                    let before = args[..at].chars().next_back().unwrap_or(' ');
                    if !(before.is_ascii_alphanumeric() || before == '_' || before == ':') {
                        out.insert((path.clone(), m.to_owned()));
                    }
                    from = at + needle.len();
                }
            }
            rest = &rest[close..];
        }
        out
    }

    fn documented(doc: &Value) -> BTreeSet<(String, String)> {
        let mut out = BTreeSet::new();
        for (path, item) in doc["paths"].as_object().expect("paths") {
            for m in item.as_object().expect("path item").keys() {
                out.insert((path.clone(), m.clone()));
            }
        }
        out
    }

    /// Every `$ref` in `v` (as JSON pointers into the same document).
    fn refs(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                for (k, x) in m {
                    match (k.as_str(), x) {
                        ("$ref", Value::String(r)) => out.push(r.clone()),
                        _ => refs(x, out),
                    }
                }
            }
            Value::Array(a) => a.iter().for_each(|x| refs(x, out)),
            _ => {}
        }
    }

    fn assert_refs_resolve(doc: &Value) {
        let mut all = Vec::new();
        refs(doc, &mut all);
        assert!(!all.is_empty());
        for r in all {
            let pointer = r.strip_prefix('#').unwrap_or_else(|| panic!("non-local $ref {r}"));
            assert!(doc.pointer(pointer).is_some(), "$ref {r} does not resolve");
        }
    }

    #[test]
    fn document_parses_and_every_ref_resolves() {
        let text = serde_json::to_string_pretty(&document()).expect("serialise");
        let doc: Value = serde_json::from_str(&text).expect("parses");
        assert_eq!(doc["openapi"], "3.1.0");
        assert_refs_resolve(&doc);
        for (name, s) in doc["components"]["schemas"].as_object().expect("schemas") {
            assert!(s.get("$schema").is_none(), "{name}: no $schema inside components");
        }
        assert_refs_resolve(&push_envelope_schema());
        assert_refs_resolve(&shim_schema());
    }

    /// Every route of `run::router` and `api_routes::routes` is documented with its methods, and nothing else is.
    #[test]
    fn every_router_path_appears() {
        let mut routed = routes_in_source(include_str!("run.rs"));
        routed.extend(routes_in_source(include_str!("api_routes.rs")));
        assert!(routed.len() > 40, "the source parser found the routes: {routed:?}");
        assert!(routed.contains(&("/oauth/authorize".to_owned(), "post".to_owned())));
        assert!(routed.contains(&("/sim/faults".to_owned(), "delete".to_owned())));
        let doc = documented(&document());
        let missing: Vec<_> = routed.difference(&doc).collect();
        let stale: Vec<_> = doc.difference(&routed).collect();
        assert!(missing.is_empty(), "routes missing from the OpenAPI document: {missing:?}");
        assert!(stale.is_empty(), "documented operations the router does not have: {stale:?}");
    }

    /// Operations name their scopes (PROTOCOL.md §10) and bodies come from the Rust types.
    #[test]
    fn operations_carry_security_and_typed_bodies() {
        let doc = document();
        let op = &doc["paths"]["/api/v1/jobs/{id}/release"]["post"];
        assert_eq!(op["security"], json!([{ "bearer": ["roger.release"] }, { "bearer": ["roger.app"] }]));
        assert_eq!(op["responses"]["200"]["content"]["application/json"]["schema"]["$ref"], component("ReleaseAnswer"));
        assert_eq!(op["responses"]["401"]["$ref"], "#/components/responses/Unauthorized");
        let token = &doc["components"]["schemas"]["TokenResponse"];
        let required: Vec<&str> =
            token["required"].as_array().expect("required").iter().filter_map(Value::as_str).collect();
        assert_eq!(required, ["access_token", "token_type"]);
        assert_eq!(token["properties"]["refresh_token"][roger_proto::schema::SECRET_KEYWORD], true);
        assert_eq!(doc["paths"]["/regions"]["get"]["security"], json!([]));
        let problem = &doc["components"]["responses"]["Problem"]["content"][PROBLEM_JSON]["schema"]["$ref"];
        assert_eq!(problem, &json!(component("ProblemDetails")));
        let push = push_envelope_schema();
        assert_eq!(push["$ref"], "#/$defs/PushEnvelope");
        assert_eq!(push["$defs"]["PushEnvelope"]["additionalProperties"], false);
        let shim = shim_schema();
        for name in ["ShimRequest", "ShimAnswer", "PanelAnswer", "ShimReleaseAnswer", "PanelState"] {
            assert!(shim["$defs"].get(name).is_some(), "{name} in shim.json");
        }
    }

    fn workspace_file(relative: &str) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").join(relative)
    }

    fn pretty(v: &Value) -> String {
        let mut s = serde_json::to_string_pretty(v).expect("serialise");
        s.push('\n');
        s
    }

    /// The committed contract under `docs/` is what the Rust types generate; `ROGER_REGENERATE_CONTRACT=1`
    /// rewrites it.
    #[test]
    fn committed_contract_is_current() {
        let files = [
            (OPENAPI_FILE, pretty(&document())),
            (PUSH_ENVELOPE_FILE, pretty(&push_envelope_schema())),
            (SHIM_FILE, pretty(&shim_schema())),
        ];
        let regenerate = std::env::var_os("ROGER_REGENERATE_CONTRACT").is_some_and(|v| !v.is_empty() && v != "0");
        let mut stale = Vec::new();
        for (relative, generated) in files {
            let path = workspace_file(relative);
            if regenerate {
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir).expect("create docs dir");
                }
                std::fs::write(&path, &generated).expect("write");
                continue;
            }
            let committed = std::fs::read_to_string(&path).unwrap_or_default();
            if committed != generated {
                stale.push(relative);
            }
        }
        assert!(
            stale.is_empty(),
            "{stale:?} differ from what the Rust types generate; regenerate from the workspace root with:\n    \
             {REGENERATE}"
        );
    }

    /// Over HTTP: `GET /openapi.json` names this server, and every documented operation is routed (no 404 from
    /// the fallback, no 405).
    #[tokio::test]
    async fn served_document_and_routes_agree() {
        let config = crate::server::ServerConfig { plain_http: true, ..Default::default() };
        let s = crate::server::start(config).await.expect("server");
        let http = reqwest::Client::builder().no_proxy().build().expect("client");
        let served: Value =
            http.get(format!("{}/openapi.json", s.info.api)).send().await.expect("get").json().await.expect("json");
        assert_eq!(served["servers"][0]["url"], s.info.api);
        assert_eq!(served["paths"], document()["paths"]);
        let unrouted = http.get(format!("{}/no/such/route", s.info.api)).send().await.expect("answer");
        assert_eq!(unrouted.status(), 404);
        let fallback_body = unrouted.text().await.expect("body");
        for (path, method) in documented(&served) {
            let concrete = path.replace("{id}", "x1").replace("{user_code}", "BCDFGHJK");
            let m = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).expect("method");
            let r = http.request(m, format!("{}{concrete}", s.info.api)).send().await.expect("answer");
            let status = r.status().as_u16();
            let body = r.text().await.unwrap_or_default();
            let fallback = status == 404 && body == fallback_body;
            assert!(status != 405 && !fallback, "{method} {path}: {status} {body}");
        }
        s.stop().await;
    }
}
