//! Error vocabulary: OAuth error codes (RFC 6749 §5.2, RFC 8628 §3.5, RFC 6750 §3.1, RFC 7009 §2.2.1),
//! RFC 9457 problem details, the flat list of peer violations the conformance suite reports, and the error a
//! response classifier returns.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An OAuth 2.0 error code, with a fallback for codes this crate does not know (servers invent their own).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum OAuthErrorCode {
    /// RFC 6749 §5.2 `invalid_request`.
    InvalidRequest,
    /// RFC 6749 §5.2 `invalid_client`; in Roger also a failed device-bound authentication (PROTOCOL.md §7).
    InvalidClient,
    /// RFC 6749 §5.2 `invalid_grant`: bad, expired, revoked or reused code or refresh token; wrong password.
    InvalidGrant,
    /// RFC 6749 §5.2 `unauthorized_client`.
    UnauthorizedClient,
    /// RFC 6749 §5.2 `unsupported_grant_type`.
    UnsupportedGrantType,
    /// RFC 6749 §5.2 `invalid_scope`.
    InvalidScope,
    /// RFC 6749 §4.1.2.1 `access_denied` and RFC 8628 §3.5 (the user denied the request).
    AccessDenied,
    /// RFC 6749 §4.1.2.1 `unsupported_response_type`.
    UnsupportedResponseType,
    /// RFC 6749 §4.1.2.1 `server_error`.
    ServerError,
    /// RFC 6749 §4.1.2.1 `temporarily_unavailable`.
    TemporarilyUnavailable,
    /// RFC 8628 §3.5 `authorization_pending`.
    AuthorizationPending,
    /// RFC 8628 §3.5 `slow_down`: "the interval MUST be increased by 5 seconds for this and all subsequent requests".
    SlowDown,
    /// RFC 8628 §3.5 `expired_token`: the device code expired.
    ExpiredToken,
    /// RFC 6750 §3.1 `invalid_token`.
    InvalidToken,
    /// RFC 6750 §3.1 `insufficient_scope`.
    InsufficientScope,
    /// RFC 7009 §2.2.1 `unsupported_token_type`.
    UnsupportedTokenType,
    /// Any other code, kept verbatim.
    Other(String),
}

impl OAuthErrorCode {
    /// Every code this crate names (all but [`Self::Other`]).
    pub const KNOWN: [Self; 16] = [
        Self::InvalidRequest,
        Self::InvalidClient,
        Self::InvalidGrant,
        Self::UnauthorizedClient,
        Self::UnsupportedGrantType,
        Self::InvalidScope,
        Self::AccessDenied,
        Self::UnsupportedResponseType,
        Self::ServerError,
        Self::TemporarilyUnavailable,
        Self::AuthorizationPending,
        Self::SlowDown,
        Self::ExpiredToken,
        Self::InvalidToken,
        Self::InsufficientScope,
        Self::UnsupportedTokenType,
    ];

    /// The wire string.
    pub fn as_str(&self) -> &str {
        match self {
            Self::InvalidRequest => "invalid_request",
            Self::InvalidClient => "invalid_client",
            Self::InvalidGrant => "invalid_grant",
            Self::UnauthorizedClient => "unauthorized_client",
            Self::UnsupportedGrantType => "unsupported_grant_type",
            Self::InvalidScope => "invalid_scope",
            Self::AccessDenied => "access_denied",
            Self::UnsupportedResponseType => "unsupported_response_type",
            Self::ServerError => "server_error",
            Self::TemporarilyUnavailable => "temporarily_unavailable",
            Self::AuthorizationPending => "authorization_pending",
            Self::SlowDown => "slow_down",
            Self::ExpiredToken => "expired_token",
            Self::InvalidToken => "invalid_token",
            Self::InsufficientScope => "insufficient_scope",
            Self::UnsupportedTokenType => "unsupported_token_type",
            Self::Other(s) => s,
        }
    }

    /// Parses a wire string; unknown codes become [`OAuthErrorCode::Other`].
    pub fn parse(s: &str) -> Self {
        match s {
            "invalid_request" => Self::InvalidRequest,
            "invalid_client" => Self::InvalidClient,
            "invalid_grant" => Self::InvalidGrant,
            "unauthorized_client" => Self::UnauthorizedClient,
            "unsupported_grant_type" => Self::UnsupportedGrantType,
            "invalid_scope" => Self::InvalidScope,
            "access_denied" => Self::AccessDenied,
            "unsupported_response_type" => Self::UnsupportedResponseType,
            "server_error" => Self::ServerError,
            "temporarily_unavailable" => Self::TemporarilyUnavailable,
            "authorization_pending" => Self::AuthorizationPending,
            "slow_down" => Self::SlowDown,
            "expired_token" => Self::ExpiredToken,
            "invalid_token" => Self::InvalidToken,
            "insufficient_scope" => Self::InsufficientScope,
            "unsupported_token_type" => Self::UnsupportedTokenType,
            other => Self::Other(other.to_owned()),
        }
    }
}

impl fmt::Display for OAuthErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for OAuthErrorCode {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for OAuthErrorCode {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = std::borrow::Cow::<'de, str>::deserialize(deserializer)?;
        Ok(Self::parse(&s))
    }
}

/// A string (RFC 6749 §5.2, RFC 6750 §3.1, RFC 8628 §3.5, RFC 7009 §2.2.1 codes, and any other: a client must not
/// fail on an unknown code); the known codes are listed as `examples` (`schema` feature).
#[cfg(feature = "schema")]
impl schemars::JsonSchema for OAuthErrorCode {
    fn inline_schema() -> bool {
        true
    }

    fn schema_name() -> std::borrow::Cow<'static, str> {
        "OAuthErrorCode".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        let codes = Self::KNOWN;
        let known: Vec<&str> = codes.iter().map(Self::as_str).collect();
        schemars::json_schema!({ "type": "string", "examples": known })
    }
}

/// The error body of RFC 6749 §5.2 (also used by RFC 8628 §3.5 and RFC 7009 §2.2.1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct OAuthErrorResponse {
    /// The error code.
    pub error: OAuthErrorCode,
    /// Human-readable text (ASCII, RFC 6749 §5.2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_description: Option<String>,
    /// A page about the error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_uri: Option<String>,
}

impl OAuthErrorResponse {
    /// An error with just a code.
    pub fn new(error: OAuthErrorCode) -> Self {
        Self { error, error_description: None, error_uri: None }
    }

    /// Adds a description.
    pub fn with_description(mut self, d: impl Into<String>) -> Self {
        self.error_description = Some(d.into());
        self
    }
}

/// RFC 9457 problem details, the error body of the Roger API (PROTOCOL.md §10).
///
/// `type` is `urn:roger:problem:<name>`; unknown members are ignored (RFC 9457 §3.2 allows extensions).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ProblemDetails {
    /// A URI reference naming the problem type (RFC 9457 §3.1.1); `about:blank` when absent.
    #[serde(rename = "type", default = "about_blank")]
    pub problem_type: String,
    /// Short summary of the problem type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// The HTTP status code (advisory, RFC 9457 §3.1.2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// Explanation specific to this occurrence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// A URI reference for this occurrence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
}

fn about_blank() -> String {
    "about:blank".to_owned()
}

/// The prefix of Roger problem types (PROTOCOL.md §10).
pub const PROBLEM_TYPE_PREFIX: &str = "urn:roger:problem:";

/// The media type of RFC 9457 bodies.
pub const PROBLEM_JSON: &str = "application/problem+json";

impl ProblemDetails {
    /// A Roger problem: `type` = `urn:roger:problem:<name>`.
    pub fn roger(name: &str, status: u16, title: impl Into<String>) -> Self {
        Self {
            problem_type: format!("{PROBLEM_TYPE_PREFIX}{name}"),
            title: Some(title.into()),
            status: Some(status),
            detail: None,
            instance: None,
        }
    }

    /// Adds the occurrence-specific detail.
    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    /// The `<name>` of a `urn:roger:problem:<name>` type, if it is one.
    pub fn roger_name(&self) -> Option<&str> {
        self.problem_type.strip_prefix(PROBLEM_TYPE_PREFIX)
    }
}

/// What a peer did wrong, as a flat list the conformance suite can count and report (after rustls'
/// `PeerMisbehaved`). Each variant names the rule it breaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum PeerViolation {
    /// A success body that is not the JSON the endpoint promises (RFC 6749 §5.1, RFC 8628 §3.2).
    MalformedSuccessBody,
    /// An error body that is neither RFC 6749 §5.2 JSON nor RFC 9457 problem details.
    MalformedErrorBody,
    /// `token_type` is not `Bearer` (RFC 6749 §7.1, RFC 6750).
    UnexpectedTokenType,
    /// A credential-bearing answer without `Cache-Control: no-store` (RFC 6749 §5.1, R-SEC-1).
    MissingNoStore,
    /// Metadata `issuer` differs from the API origin (RFC 8414 §3.3, R-META-1).
    IssuerMismatch,
    /// A URL that is not `https` where TLS is required (R-DISC-2).
    InsecureUrl,
    /// The QR payload points at another origin than the API, or is not `{api}/device?user_code=<the code>`
    /// (R-QR-4). The MFP displays the canonical payload instead and reports this ([`crate::qr`]).
    ForeignQrOrigin,
    /// A success status with an OAuth error body (tolerated, but reported).
    ErrorInSuccessStatus,
    /// `expires_in` sent as a string (tolerated, but reported; RFC 6749 §5.1 says number).
    ExpiresInAsString,
    /// A 401 without `WWW-Authenticate` (RFC 6750 §3).
    MissingWwwAuthenticate,
    /// A push payload carrying something other than ids (R-PUSH-1).
    SecretInPush,
    /// A device authorization answer without a required member (RFC 8628 §3.2).
    MissingRequiredField,
    /// A user code outside the Roger alphabet/length (RFC 8628 §6.1, PROTOCOL.md §5).
    BadUserCode,
}

/// Everything a response classifier can say about an answer that is not the expected success.
///
/// The split the state machines care about: [`ResponseError::is_retryable`] (transport trouble, 5xx, 429: back
/// off and try again, keep all state) versus a definite answer from the server.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ResponseError {
    /// An OAuth error (RFC 6749 §5.2), whatever the status (a 200 carrying `{"error":…}` lands here too).
    #[error("OAuth error {} (HTTP {status})", .body.error)]
    OAuth {
        /// HTTP status.
        status: u16,
        /// The parsed error body (boxed to keep `Result<_, ResponseError>` small).
        body: Box<OAuthErrorResponse>,
        /// `Retry-After`, if the server sent one.
        retry_after: Option<Duration>,
        /// The `error` parameter of `WWW-Authenticate`, if any (PROTOCOL.md §7).
        www_authenticate_error: Option<String>,
    },
    /// An RFC 9457 problem from the Roger API.
    #[error("API problem {} (HTTP {status})", .problem.problem_type)]
    Problem {
        /// HTTP status.
        status: u16,
        /// The problem body (boxed to keep `Result<_, ResponseError>` small).
        problem: Box<ProblemDetails>,
        /// `Retry-After`, if the server sent one (e.g. 429 on approvals).
        retry_after: Option<Duration>,
        /// The `error` parameter of `WWW-Authenticate` (RFC 6750 §3.1), if any.
        www_authenticate_error: Option<String>,
    },
    /// 5xx, 429 or 408 with a body that is not an OAuth error or problem (often an HTML page from a proxy):
    /// retry with backoff, never end the flow (PROTOCOL.md §12).
    #[error("temporarily unavailable (HTTP {status})")]
    Unavailable {
        /// HTTP status.
        status: u16,
        /// `Retry-After`, if the server sent one.
        retry_after: Option<Duration>,
    },
    /// A 4xx whose body could not be understood.
    #[error("HTTP {status} with an unreadable body")]
    UnexpectedStatus {
        /// HTTP status.
        status: u16,
        /// The `error` parameter of `WWW-Authenticate` (RFC 6750 §3.1), if any.
        www_authenticate_error: Option<String>,
    },
    /// A success status whose body is not what the endpoint promises.
    #[error("malformed answer: {violation:?}: {detail}")]
    Malformed {
        /// HTTP status.
        status: u16,
        /// The rule broken.
        violation: PeerViolation,
        /// Parser message (never the body itself, which may carry secrets).
        detail: String,
    },
}

impl ResponseError {
    /// The HTTP status of the answer.
    pub fn status(&self) -> u16 {
        match self {
            Self::OAuth { status, .. }
            | Self::Problem { status, .. }
            | Self::Unavailable { status, .. }
            | Self::UnexpectedStatus { status, .. }
            | Self::Malformed { status, .. } => *status,
        }
    }

    /// The OAuth error code, if this is an OAuth error.
    pub fn oauth_code(&self) -> Option<&OAuthErrorCode> {
        match self {
            Self::OAuth { body, .. } => Some(&body.error),
            _ => None,
        }
    }

    /// `Retry-After` as sent.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::OAuth { retry_after, .. }
            | Self::Problem { retry_after, .. }
            | Self::Unavailable { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// Transport-level trouble that calls for backoff and a retry of the same request (PROTOCOL.md §12):
    /// 5xx, 429, 408, and the OAuth codes `server_error` / `temporarily_unavailable`.
    pub fn is_retryable(&self) -> bool {
        let status = self.status();
        if status >= 500 || status == 429 || status == 408 {
            return true;
        }
        matches!(self.oauth_code(), Some(OAuthErrorCode::ServerError | OAuthErrorCode::TemporarilyUnavailable))
    }

    /// A 401 that asks for a fresh token (RFC 6750 §3.1 `invalid_token`, or PROTOCOL.md §7 device-bound
    /// `invalid_client`): refresh once and retry once (R-TOK-1).
    pub fn is_token_rejected(&self) -> bool {
        if self.status() != 401 {
            return false;
        }
        match self {
            Self::OAuth { body, www_authenticate_error, .. } => {
                body.error == OAuthErrorCode::InvalidClient
                    || body.error == OAuthErrorCode::InvalidToken
                    || www_authenticate_error.as_deref() == Some("invalid_token")
            }
            Self::Problem { www_authenticate_error, .. } | Self::UnexpectedStatus { www_authenticate_error, .. } => {
                www_authenticate_error.as_deref() == Some("invalid_token")
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// RFC 6749 §5.2 error bodies round-trip, known and unknown codes alike.
        #[test]
        fn oauth_error_round_trip(code in "[a-z_]{1,24}", d in proptest::option::of("[ -~]{0,40}"), u in proptest::option::of("https://[a-z]{1,10}/[a-z]{0,10}")) {
            let e = OAuthErrorResponse { error: OAuthErrorCode::parse(&code), error_description: d, error_uri: u };
            let back: OAuthErrorResponse = serde_json::from_slice(&serde_json::to_vec(&e).unwrap()).unwrap();
            prop_assert_eq!(back, e);
        }

        /// RFC 9457 problem details round-trip.
        #[test]
        fn problem_round_trip(name in "[a-z-]{1,20}", status in 400u16..600, detail in proptest::option::of(".{0,40}"), instance in proptest::option::of("/[a-z]{0,10}")) {
            let mut p = ProblemDetails::roger(&name, status, "title");
            p.detail = detail;
            p.instance = instance;
            let back: ProblemDetails = serde_json::from_slice(&serde_json::to_vec(&p).unwrap()).unwrap();
            prop_assert_eq!(back, p);
        }
    }

    /// RFC 6749 §5.2 / RFC 8628 §3.5: known codes round-trip; unknown codes are kept.
    #[test]
    fn error_codes_round_trip() {
        for s in [
            "invalid_request",
            "invalid_client",
            "invalid_grant",
            "unauthorized_client",
            "unsupported_grant_type",
            "invalid_scope",
            "access_denied",
            "unsupported_response_type",
            "server_error",
            "temporarily_unavailable",
            "authorization_pending",
            "slow_down",
            "expired_token",
            "invalid_token",
            "insufficient_scope",
            "unsupported_token_type",
            "vendor_specific",
        ] {
            let c = OAuthErrorCode::parse(s);
            assert_eq!(c.as_str(), s);
            let json = serde_json::to_string(&c).unwrap();
            assert_eq!(serde_json::from_str::<OAuthErrorCode>(&json).unwrap(), c);
        }
        assert_eq!(OAuthErrorCode::parse("x"), OAuthErrorCode::Other("x".into()));
        for c in OAuthErrorCode::KNOWN {
            assert_eq!(OAuthErrorCode::parse(c.as_str()), c, "KNOWN lists only named codes");
        }
    }

    #[test]
    fn problem_defaults_and_roger_name() {
        let p: ProblemDetails = serde_json::from_str(r#"{"status":404,"extra":1}"#).unwrap();
        assert_eq!(p.problem_type, "about:blank");
        let p = ProblemDetails::roger("not-found", 404, "Not found");
        assert_eq!(p.roger_name(), Some("not-found"));
    }

    /// PROTOCOL.md §12: 5xx/429 are retryable, a definite OAuth answer is not.
    #[test]
    fn retryable_classes() {
        assert!(ResponseError::Unavailable { status: 503, retry_after: None }.is_retryable());
        assert!(ResponseError::Unavailable { status: 429, retry_after: None }.is_retryable());
        let denied = ResponseError::OAuth {
            status: 400,
            body: Box::new(OAuthErrorResponse::new(OAuthErrorCode::AccessDenied)),
            retry_after: None,
            www_authenticate_error: None,
        };
        assert!(!denied.is_retryable());
        let unavailable = ResponseError::OAuth {
            status: 400,
            body: Box::new(OAuthErrorResponse::new(OAuthErrorCode::TemporarilyUnavailable)),
            retry_after: None,
            www_authenticate_error: None,
        };
        assert!(unavailable.is_retryable());
    }

    /// PROTOCOL.md §7 / R-TOK-1: a 401 invalid_client or invalid_token asks for a fresh token.
    #[test]
    fn token_rejected() {
        let e = ResponseError::OAuth {
            status: 401,
            body: Box::new(OAuthErrorResponse::new(OAuthErrorCode::InvalidClient)),
            retry_after: None,
            www_authenticate_error: Some("invalid_token".into()),
        };
        assert!(e.is_token_rejected());
        let e400 = ResponseError::OAuth {
            status: 400,
            body: Box::new(OAuthErrorResponse::new(OAuthErrorCode::InvalidClient)),
            retry_after: None,
            www_authenticate_error: None,
        };
        assert!(!e400.is_token_rejected());
    }
}
