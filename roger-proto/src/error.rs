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

/// What a peer did wrong, or did differently from Roger's profile, as a flat list the conformance suite and the
/// actors can count and report (after rustls' `PeerMisbehaved`). Each variant names the rule it touches
/// ([`PeerViolation::rule`]) and whether an RFC allows the peer's behaviour ([`PeerViolation::rfc_allows`]);
/// docs/protocol.md §7 lists what the library does with each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
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
    /// An answer without a member the endpoint requires (RFC 8628 §3.2, RFC 6749 §5.1).
    MissingRequiredField,
    /// A user code a panel cannot show safely: empty, longer than [`crate::user_code::MAX_FOREIGN_LENGTH`], or with
    /// control characters (RFC 8628 §6.1 asks for codes a person can read and type).
    BadUserCode,
    /// A Roger user code in another spelling: with separators, spaces or lower case (`wdjb-mjht`). RFC 8628 §3.2
    /// shows exactly that form, and §6.1 lets the server pick it; Roger's server sends the bare upper-case form
    /// (docs/protocol.md §3.7). Shown as `XXXX-XXXX`; the server's value is kept for the wire.
    UserCodeNotCanonical,
    /// A user code of another length or alphabet than Roger's (RFC 8628 §6.1 leaves both to the server). Shown
    /// verbatim; the server's value is kept for the wire.
    ForeignUserCode,
    /// `verification_url` instead of RFC 8628 §3.2's `verification_uri` (Google's device endpoint, Azure AD v1).
    VerificationUrlMember,
    /// No `verification_uri_complete` (OPTIONAL in RFC 8628 §3.2; Roger's server always sends it, R-QR-1): the
    /// panel shows the verification URI and the code, and no QR.
    MissingVerificationUriComplete,
    /// A granted `scope` narrower than the one requested (RFC 6749 §3.3 allows it): only what was granted is used.
    ScopeNarrowed,
    /// RFC 8414 metadata found only at `/.well-known/openid-configuration` (RFC 8414 §5 allows it).
    MetadataAtOpenIdPath,
    /// A metadata endpoint on another origin than the issuer (RFC 8414 allows it; Roger keeps every endpoint on
    /// the API origin, R-META-1). Used, TLS still required.
    EndpointOffOrigin,
    /// An item of an API list (jobs, drive files, scan profiles) without a member the client needs, or with a
    /// member of the wrong type: that item is left out, the rest of the list is used (docs/protocol.md §7).
    ListItemRefused,
    /// An optional member of an API answer is absent and a documented default stands in (docs/protocol.md §7).
    MemberDefaulted,
    /// An optional Roger extension the server does not offer (e.g. `PUT /api/v1/device` answered `404` or `405`):
    /// noted once and not retried until the next restart or reconnect.
    ExtensionNotOffered,
    /// A refresh answer without a new refresh token (RFC 6749 §6: the server "MAY issue a new refresh token"; Roger
    /// rotates every time, R-TOK-2): the client keeps the one it has.
    RefreshNotRotated,
    /// `scope` as a JSON array of strings instead of one space-delimited string (RFC 6749 §3.3): read as the
    /// space-joined string.
    ScopeNotSpaceDelimited,
}

impl PeerViolation {
    /// Every variant, in declaration order (for sets and for listing the vocabulary).
    pub const ALL: [Self; 25] = [
        Self::MalformedSuccessBody,
        Self::MalformedErrorBody,
        Self::UnexpectedTokenType,
        Self::MissingNoStore,
        Self::IssuerMismatch,
        Self::InsecureUrl,
        Self::ForeignQrOrigin,
        Self::ErrorInSuccessStatus,
        Self::ExpiresInAsString,
        Self::MissingWwwAuthenticate,
        Self::SecretInPush,
        Self::MissingRequiredField,
        Self::BadUserCode,
        Self::UserCodeNotCanonical,
        Self::ForeignUserCode,
        Self::VerificationUrlMember,
        Self::MissingVerificationUriComplete,
        Self::ScopeNarrowed,
        Self::MetadataAtOpenIdPath,
        Self::EndpointOffOrigin,
        Self::ListItemRefused,
        Self::MemberDefaulted,
        Self::ExtensionNotOffered,
        Self::RefreshNotRotated,
        Self::ScopeNotSpaceDelimited,
    ];

    /// The rule or RFC section the behaviour touches, for reports.
    pub fn rule(self) -> &'static str {
        match self {
            Self::MalformedSuccessBody => "RFC 6749 §5.1",
            Self::MalformedErrorBody => "RFC 6749 §5.2, RFC 9457 §3",
            Self::UnexpectedTokenType => "RFC 6749 §7.1, RFC 6750 §1",
            Self::MissingNoStore => "RFC 6749 §5.1, R-SEC-1",
            Self::IssuerMismatch => "RFC 8414 §3.3, R-META-1",
            Self::InsecureUrl => "R-DISC-2",
            Self::ForeignQrOrigin => "R-QR-4",
            Self::ErrorInSuccessStatus => "RFC 6749 §5.2",
            Self::ExpiresInAsString => "RFC 6749 §5.1",
            Self::MissingWwwAuthenticate => "RFC 6750 §3",
            Self::SecretInPush => "R-PUSH-1",
            Self::MissingRequiredField => "RFC 8628 §3.2, RFC 6749 §5.1",
            Self::BadUserCode => "RFC 8628 §6.1",
            Self::UserCodeNotCanonical | Self::ForeignUserCode => "RFC 8628 §6.1, R-QR-1",
            Self::VerificationUrlMember => "RFC 8628 §3.2",
            Self::MissingVerificationUriComplete => "RFC 8628 §3.3.1, R-QR-1",
            Self::ScopeNarrowed => "RFC 6749 §3.3",
            Self::MetadataAtOpenIdPath => "RFC 8414 §5",
            Self::EndpointOffOrigin => "RFC 8414 §2, R-META-1",
            Self::ListItemRefused | Self::MemberDefaulted => "docs/protocol.md §7",
            Self::ExtensionNotOffered => "docs/protocol.md §10.2 C11",
            Self::RefreshNotRotated => "RFC 6749 §6, RFC 9700 §2.2.2, R-TOK-2",
            Self::ScopeNotSpaceDelimited => "RFC 6749 §3.3",
        }
    }

    /// Whether an RFC allows what the peer did, so that only Roger's own profile is stricter; a report says so
    /// (docs/protocol.md §7). A refresh without rotation is not among them: RFC 6749 §6 allows it, but RFC 9700
    /// §2.2.2 asks rotation (or sender-constraining) of refresh tokens issued to public clients such as printers.
    pub fn rfc_allows(self) -> bool {
        matches!(
            self,
            Self::UserCodeNotCanonical
                | Self::ForeignUserCode
                | Self::MissingVerificationUriComplete
                | Self::ScopeNarrowed
                | Self::MetadataAtOpenIdPath
                | Self::EndpointOffOrigin
                | Self::MemberDefaulted
                | Self::ExtensionNotOffered
                | Self::ForeignQrOrigin
        )
    }

    /// What a client does with an answer that shows this deviation, when it reads the answer at all: `Refused` for
    /// the deviations that refuse a part of it (a list item, a QR payload or page), `Tolerated` for the rest.
    pub fn action(self) -> PeerAction {
        match self {
            Self::ListItemRefused | Self::ForeignQrOrigin => PeerAction::Refused,
            _ => PeerAction::Tolerated,
        }
    }

    /// What the peer did, in a few words, never quoting a value (it may be a secret, R-SEC-1).
    pub fn describe(self) -> &'static str {
        match self {
            Self::MalformedSuccessBody => "a success answer that is not the promised JSON",
            Self::MalformedErrorBody => "an error answer that is neither OAuth JSON nor problem details",
            Self::UnexpectedTokenType => "a token_type other than Bearer",
            Self::MissingNoStore => "a credential answer without Cache-Control: no-store",
            Self::IssuerMismatch => "a metadata issuer that is not the API origin",
            Self::InsecureUrl => "a URL without TLS where TLS is required",
            Self::ForeignQrOrigin => {
                "a verification_uri_complete or verification_uri on another origin than the API, or for another code"
            }
            Self::ErrorInSuccessStatus => "an OAuth error in a 2xx answer",
            Self::ExpiresInAsString => "expires_in sent as a string",
            Self::MissingWwwAuthenticate => "a 401 without WWW-Authenticate",
            Self::SecretInPush => "a push message carrying more than ids",
            Self::MissingRequiredField => "an answer without a required member",
            Self::BadUserCode => "a user code that cannot be shown (empty, too long or with control characters)",
            Self::UserCodeNotCanonical => "a Roger user code with separators or in lower case",
            Self::ForeignUserCode => "a user code of another length or alphabet than Roger's",
            Self::VerificationUrlMember => "verification_url instead of verification_uri",
            Self::MissingVerificationUriComplete => "no verification_uri_complete",
            Self::ScopeNarrowed => "a granted scope narrower than the one requested",
            Self::MetadataAtOpenIdPath => "metadata only at /.well-known/openid-configuration",
            Self::EndpointOffOrigin => "a metadata endpoint on another origin than the issuer",
            Self::ListItemRefused => "a list item without a needed member or with a wrong type",
            Self::MemberDefaulted => "an optional member left out",
            Self::ExtensionNotOffered => "an optional Roger extension the server does not offer",
            Self::RefreshNotRotated => "a refresh answer without a new refresh token",
            Self::ScopeNotSpaceDelimited => "scope as a JSON array instead of a space-delimited string",
        }
    }

    fn bit(self) -> u32 {
        // A fieldless enum: the discriminant is the declaration index (`ALL` lists every variant in that order,
        // which a test checks), and there are fewer than 32 variants (checked below at compile time).
        1 << (self as u32)
    }
}

impl fmt::Display for PeerViolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.describe(), self.rule())
    }
}

const _: () = assert!(PeerViolation::ALL.len() <= 32, "PeerViolations is a u32 bit set");

/// A small set of [`PeerViolation`]s: what one answer deviated in while still being used (a classifier's notes).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct PeerViolations(u32);

impl PeerViolations {
    /// The empty set.
    pub const NONE: Self = Self(0);

    /// Adds `v`.
    pub fn insert(&mut self, v: PeerViolation) {
        self.0 |= v.bit();
    }

    /// Whether `v` is in the set.
    pub fn contains(self, v: PeerViolation) -> bool {
        self.0 & v.bit() != 0
    }

    /// Whether the set is empty.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The members, in declaration order.
    pub fn iter(self) -> impl Iterator<Item = PeerViolation> {
        PeerViolation::ALL.into_iter().filter(move |v| self.contains(*v))
    }
}

impl FromIterator<PeerViolation> for PeerViolations {
    fn from_iter<I: IntoIterator<Item = PeerViolation>>(iter: I) -> Self {
        let mut s = Self::NONE;
        for v in iter {
            s.insert(v);
        }
        s
    }
}

/// What a client did with an answer that deviated (docs/protocol.md §7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PeerAction {
    /// The answer (or the rest of it) was used, with the documented reading.
    Tolerated,
    /// The answer (or that item of it) was refused.
    Refused,
}

/// One deviation a state machine saw in a server's answer, for its driver to report (once per kind, at warn
/// level: [`ReportOnce`]). It names the endpoint, the violation (and with it the rule) and what the client did,
/// never a value from the answer (R-SEC-1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PeerReport {
    /// The request the answer belongs to, e.g. `POST /oauth/device_authorization`.
    pub endpoint: &'static str,
    /// What deviated.
    pub violation: PeerViolation,
    /// Used or refused.
    pub action: PeerAction,
}

impl PeerReport {
    /// A deviation the client read past.
    pub fn tolerated(endpoint: &'static str, violation: PeerViolation) -> Self {
        Self { endpoint, violation, action: PeerAction::Tolerated }
    }

    /// An answer the client refused.
    pub fn refused(endpoint: &'static str, violation: PeerViolation) -> Self {
        Self { endpoint, violation, action: PeerAction::Refused }
    }

    /// The report of an error a classifier returned, if it says the peer misbehaved: a malformed answer
    /// (refused), or an OAuth error sent with a 2xx status (read as the error).
    pub fn from_error(endpoint: &'static str, e: &ResponseError) -> Option<Self> {
        match e {
            ResponseError::Malformed { violation, .. } => Some(Self::refused(endpoint, *violation)),
            ResponseError::OAuth { status: 200..=299, .. } => {
                Some(Self::tolerated(endpoint, PeerViolation::ErrorInSuccessStatus))
            }
            _ => None,
        }
    }
}

impl PeerReport {
    /// The reports of a classifier's result: one per deviation it noted (`Ok` with notes; a refused list item is
    /// reported refused), or the refusal its error stands for ([`Self::from_error`]).
    pub fn of_result<T>(
        endpoint: &'static str,
        result: &Result<(T, PeerViolations), ResponseError>,
    ) -> impl Iterator<Item = PeerReport> {
        let (notes, refused) = match result {
            Ok((_, notes)) => (*notes, None),
            Err(e) => (PeerViolations::NONE, Self::from_error(endpoint, e)),
        };
        notes.iter().map(move |v| Self { endpoint, violation: v, action: v.action() }).chain(refused)
    }

    /// The value of a classifier's result, after handing each of its reports ([`Self::of_result`]) to `report`
    /// (a machine's once-per-kind queue, a driver's sink).
    pub fn unpack<T>(
        endpoint: &'static str,
        result: Result<(T, PeerViolations), ResponseError>,
        report: impl FnMut(PeerReport),
    ) -> Result<T, ResponseError> {
        Self::of_result(endpoint, &result).for_each(report);
        result.map(|(value, _)| value)
    }
}

impl fmt::Display for PeerReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match (self.action, self.violation.rfc_allows()) {
            (PeerAction::Refused, _) => "refused",
            (PeerAction::Tolerated, true) => "accepted (the RFC allows it; Roger's own server does not do this)",
            (PeerAction::Tolerated, false) => "tolerated",
        };
        write!(f, "{}: {}: {what}", self.endpoint, self.violation)
    }
}

/// Remembers which [`PeerReport`]s were reported, so a driver reports each kind once (a server that sends
/// hyphenated codes would otherwise fill a printer's log every rotation). Bounded: there are few kinds.
#[derive(Debug, Clone, Default)]
pub struct ReportOnce {
    seen: Vec<PeerReport>,
}

impl ReportOnce {
    /// Whether `report` is new (and remembers it).
    pub fn first(&mut self, report: &PeerReport) -> bool {
        if self.seen.contains(report) {
            return false;
        }
        self.seen.push(*report);
        true
    }
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

    /// docs/protocol.md §7: what a classifier's error says about the peer, and the report's wording (endpoint and
    /// rule, never a value), once per kind.
    #[test]
    fn reports_from_errors_once() {
        let in_200 = ResponseError::OAuth {
            status: 200,
            body: Box::new(OAuthErrorResponse::new(OAuthErrorCode::AuthorizationPending)),
            retry_after: None,
            www_authenticate_error: None,
        };
        let r = PeerReport::from_error("POST /oauth/token", &in_200).unwrap();
        assert_eq!((r.violation, r.action), (PeerViolation::ErrorInSuccessStatus, PeerAction::Tolerated));
        let in_400 = ResponseError::OAuth {
            status: 400,
            body: Box::new(OAuthErrorResponse::new(OAuthErrorCode::AuthorizationPending)),
            retry_after: None,
            www_authenticate_error: None,
        };
        assert_eq!(PeerReport::from_error("POST /oauth/token", &in_400), None, "a plain error is no deviation");
        let malformed =
            ResponseError::Malformed { status: 200, violation: PeerViolation::BadUserCode, detail: "x".into() };
        let r = PeerReport::from_error("POST /oauth/device_authorization", &malformed).unwrap();
        assert_eq!(r.action, PeerAction::Refused);
        assert_eq!(
            r.to_string(),
            "POST /oauth/device_authorization: a user code that cannot be shown (empty, too long or with control \
             characters) (RFC 8628 §6.1): refused"
        );
        let mut once = ReportOnce::default();
        assert!(once.first(&r) && !once.first(&r));
        assert!(once.first(&PeerReport::tolerated("POST /oauth/device_authorization", PeerViolation::BadUserCode)));
        // Every variant has a rule, a description, and a bit of its own: ALL lists them in declaration order.
        for (i, v) in PeerViolation::ALL.into_iter().enumerate() {
            assert_eq!(v as usize, i, "{v:?} is not at its declaration index in ALL");
        }
        let all: PeerViolations = PeerViolation::ALL.into_iter().collect();
        assert_eq!(all.iter().count(), PeerViolation::ALL.len());
        for v in PeerViolation::ALL {
            assert!(!v.rule().is_empty() && !v.describe().is_empty(), "{v:?}");
        }
    }

    /// docs/protocol.md §7: a 401 with an OAuth `invalid_token` or `invalid_client` body asks for a fresh token even
    /// without `WWW-Authenticate` (RFC 6750 §3 asks for the header; some servers leave it out).
    #[test]
    fn token_rejected_without_www_authenticate() {
        for code in [OAuthErrorCode::InvalidToken, OAuthErrorCode::InvalidClient] {
            let e = ResponseError::OAuth {
                status: 401,
                body: Box::new(OAuthErrorResponse::new(code)),
                retry_after: None,
                www_authenticate_error: None,
            };
            assert!(e.is_token_rejected());
        }
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
