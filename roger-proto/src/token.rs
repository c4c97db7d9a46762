//! The token endpoint (RFC 6749 §3.2): requests for the authorization-code (RFC 6749 §4.1.3 + RFC 7636 §4.5),
//! device-code (RFC 8628 §3.4), password (RFC 6749 §4.3.2) and refresh (RFC 6749 §6) grants, and the token
//! response with the Roger members `device_id`, `tenant_id` and `user` (PROTOCOL.md §5, §8).

use http::{Request, Response};
use serde::{Deserialize, Serialize};

use crate::error::{PeerViolation, PeerViolations, ResponseError};
use crate::metadata::GRANT_DEVICE_CODE;
use crate::secret::{AccessToken, AuthorizationCode, DeviceCode, Password, PkceVerifier, RefreshToken};
use crate::wire::{encode_form, post_form, Form, FormError};

/// The Roger scopes (PROTOCOL.md §3).
pub mod scope {
    /// A registered MFP: device config, push credentials, session codes, device-bound client authentication.
    pub const DEVICE: &str = "roger.device";
    /// Step 1 at the MFP: list and release the user's queued jobs, report results.
    pub const RELEASE: &str = "roger.release";
    /// Step 2: drive files, submit jobs, print features.
    pub const PRINT: &str = "roger.print";
    /// Step 2: scan profiles and scans.
    pub const SCAN: &str = "roger.scan";
    /// Phone and desktop apps.
    pub const APP: &str = "roger.app";
    /// Every scope, in the order metadata lists them.
    pub const ALL: [&str; 5] = [DEVICE, RELEASE, PRINT, SCAN, APP];
    /// Step 2 (command request) scope string.
    pub const STEP2: &str = "roger.print roger.scan";
    /// PIN login from idle: step 1 and step 2 at once.
    pub const PIN_LOGIN: &str = "roger.release roger.print roger.scan";

    /// Whether a space-delimited scope string (RFC 6749 §3.3) contains `wanted`.
    pub fn contains(scopes: &str, wanted: &str) -> bool {
        scopes.split(' ').any(|s| s == wanted)
    }
}

/// The public client ids of PROTOCOL.md §3.
pub mod client_id {
    /// The phone app.
    pub const MOBILE: &str = "roger-mobile";
    /// The desktop client.
    pub const DESKTOP: &str = "roger-desktop";
    /// Prefix of MFP client ids (`emb-<vendor>`).
    pub const EMB_PREFIX: &str = "emb-";

    /// Whether `id` is an MFP client id: `emb-` followed by 1–64 of `[a-z0-9._-]`.
    pub fn is_emb(id: &str) -> bool {
        id.strip_prefix(EMB_PREFIX).is_some_and(|v| {
            !v.is_empty()
                && v.len() <= 64
                && v.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
        })
    }
}

/// A token request, one variant per grant Roger uses.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TokenRequest {
    /// RFC 6749 §4.1.3 with the PKCE `code_verifier` of RFC 7636 §4.5 (app login, PROTOCOL.md §4).
    AuthorizationCode {
        /// The code from the redirect.
        code: AuthorizationCode,
        /// The redirect URI of the authorization request.
        redirect_uri: String,
        /// The PKCE verifier.
        code_verifier: PkceVerifier,
        /// The public client.
        client_id: String,
    },
    /// RFC 8628 §3.4 device access token request.
    DeviceCode {
        /// The device code.
        device_code: DeviceCode,
        /// The client that asked for the code.
        client_id: String,
    },
    /// RFC 6749 §4.3.2 resource owner password credentials (PROTOCOL.md §8, step 2 and PIN login).
    Password {
        /// The user name (step 2: the step-1 user).
        username: String,
        /// The PIN or password (R-PWD-1: wiped after the request).
        password: Password,
        /// Requested scope.
        scope: String,
        /// The MFP's client id.
        client_id: String,
    },
    /// RFC 6749 §6 refresh (rotating, R-TOK-2).
    RefreshToken {
        /// The newest refresh token.
        refresh_token: RefreshToken,
        /// Optional narrowed scope.
        scope: Option<String>,
        /// The client the token was issued to.
        client_id: String,
    },
}

impl TokenRequest {
    /// The `grant_type` parameter.
    pub fn grant_type(&self) -> &'static str {
        match self {
            Self::AuthorizationCode { .. } => "authorization_code",
            Self::DeviceCode { .. } => GRANT_DEVICE_CODE,
            Self::Password { .. } => "password",
            Self::RefreshToken { .. } => "refresh_token",
        }
    }

    /// The client id the request names.
    pub fn client_id(&self) -> &str {
        match self {
            Self::AuthorizationCode { client_id, .. }
            | Self::DeviceCode { client_id, .. }
            | Self::Password { client_id, .. }
            | Self::RefreshToken { client_id, .. } => client_id,
        }
    }

    /// The form body (RFC 6749 Appendix B encoding).
    pub fn to_form(&self) -> Vec<u8> {
        let gt = self.grant_type();
        match self {
            Self::AuthorizationCode { code, redirect_uri, code_verifier, client_id } => encode_form([
                ("grant_type", Some(gt)),
                ("code", Some(code.secret())),
                ("redirect_uri", Some(redirect_uri.as_str())),
                ("code_verifier", Some(code_verifier.secret())),
                ("client_id", Some(client_id.as_str())),
            ]),
            Self::DeviceCode { device_code, client_id } => encode_form([
                ("grant_type", Some(gt)),
                ("device_code", Some(device_code.secret())),
                ("client_id", Some(client_id.as_str())),
            ]),
            Self::Password { username, password, scope, client_id } => encode_form([
                ("grant_type", Some(gt)),
                ("username", Some(username.as_str())),
                ("password", Some(password.secret())),
                ("scope", Some(scope.as_str())),
                ("client_id", Some(client_id.as_str())),
            ]),
            Self::RefreshToken { refresh_token, scope, client_id } => encode_form([
                ("grant_type", Some(gt)),
                ("refresh_token", Some(refresh_token.secret())),
                ("scope", scope.as_deref()),
                ("client_id", Some(client_id.as_str())),
            ]),
        }
    }

    /// Builds `POST {token_endpoint}`; `device_bearer` adds the device-bound client authentication of
    /// PROTOCOL.md §7 (session-code polls and the password grant).
    ///
    /// The request body of a password grant holds the plaintext: send it, then drop it; the state machines
    /// keep the secret itself only until the answer arrives (R-PWD-1).
    pub fn to_http(
        &self,
        token_endpoint: &str,
        device_bearer: Option<&AccessToken>,
    ) -> Result<Request<Vec<u8>>, http::Error> {
        post_form(token_endpoint, self.to_form(), device_bearer)
    }

    /// Server side: reads a token request from a form body (RFC 6749 §3.2, §4.1.3, §4.3.2, §6; RFC 8628 §3.4).
    pub fn from_form(body: &[u8]) -> Result<Self, TokenRequestError> {
        Self::from_parsed(&Form::parse(body)?)
    }

    /// [`TokenRequest::from_form`] for a form the caller already parsed (a front end that checked it first).
    pub fn from_parsed(form: &Form) -> Result<Self, TokenRequestError> {
        let client_id = form.require("client_id")?.to_owned();
        match form.require("grant_type")? {
            "authorization_code" => Ok(Self::AuthorizationCode {
                code: AuthorizationCode::new(form.require("code")?),
                redirect_uri: form.require("redirect_uri")?.to_owned(),
                code_verifier: PkceVerifier::new(form.require("code_verifier")?),
                client_id,
            }),
            GRANT_DEVICE_CODE => {
                Ok(Self::DeviceCode { device_code: DeviceCode::new(form.require("device_code")?), client_id })
            }
            "password" => Ok(Self::Password {
                username: form.require("username")?.to_owned(),
                password: Password::new(form.require("password")?),
                scope: form.require("scope")?.to_owned(),
                client_id,
            }),
            "refresh_token" => Ok(Self::RefreshToken {
                refresh_token: RefreshToken::new(form.require("refresh_token")?),
                scope: form.get("scope").map(str::to_owned),
                client_id,
            }),
            other => Err(TokenRequestError::UnsupportedGrantType(other.to_owned())),
        }
    }
}

/// Why a token request form is refused (server side). Maps to RFC 6749 §5.2 codes with [`Self::oauth_code`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenRequestError {
    /// Duplicate, missing or malformed parameters (`invalid_request`).
    #[error(transparent)]
    Form(#[from] FormError),
    /// `unsupported_grant_type`.
    #[error("grant type {0:?} is not supported")]
    UnsupportedGrantType(String),
}

impl TokenRequestError {
    /// The RFC 6749 §5.2 code for this error.
    pub fn oauth_code(&self) -> crate::error::OAuthErrorCode {
        match self {
            Self::Form(_) => crate::error::OAuthErrorCode::InvalidRequest,
            Self::UnsupportedGrantType(_) => crate::error::OAuthErrorCode::UnsupportedGrantType,
        }
    }
}

/// The user a step-1, step-2 or app token belongs to (PROTOCOL.md §8: `user {id, username, display_name, email}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct TokenUser {
    /// Stable user id.
    pub id: String,
    /// Login name.
    pub username: String,
    /// Display name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    /// E-mail (R-DATA-2 allows it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
}

/// A successful token response (RFC 6749 §5.1) with the Roger members.
///
/// Tolerant where real servers are sloppy: `expires_in` may be a string; `token_type` is compared
/// case-insensitively (RFC 6749 §5.1: "The value is case insensitive").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct TokenResponse {
    /// The access token.
    pub access_token: AccessToken,
    /// `Bearer`.
    pub token_type: String,
    /// Lifetime in seconds (RFC 6749 §5.1 RECOMMENDED; Roger always sends it).
    #[serde(default, deserialize_with = "crate::wire::lenient_seconds_opt", skip_serializing_if = "Option::is_none")]
    pub expires_in: Option<u64>,
    /// The refresh token (device and app tokens; user tokens at the MFP have none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<RefreshToken>,
    /// Granted scope (RFC 6749 §5.1: required if it differs from the request).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// The registered device (registration and device refresh).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_id: Option<String>,
    /// The tenant of the device or user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant_id: Option<String>,
    /// The user (session and app tokens).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<TokenUser>,
}

impl TokenResponse {
    /// Whether `token_type` is `Bearer` (case-insensitive, RFC 6749 §5.1 / RFC 6750).
    pub fn is_bearer(&self) -> bool {
        self.token_type.eq_ignore_ascii_case("bearer")
    }

    /// Whether the granted scope contains `wanted`.
    pub fn has_scope(&self, wanted: &str) -> bool {
        self.scope.as_deref().is_some_and(|s| scope::contains(s, wanted))
    }
}

/// The request line token answers belong to, for [`crate::error::PeerReport`]s.
pub const ENDPOINT: &str = "POST /oauth/token";

/// A token answer as servers in the field send it (docs/protocol.md §7): `expires_in` as a string, `scope` as an
/// array.
#[derive(Deserialize)]
struct FieldAnswer {
    access_token: AccessToken,
    token_type: String,
    #[serde(default)]
    expires_in: Option<crate::wire::LenientSeconds>,
    #[serde(default)]
    refresh_token: Option<RefreshToken>,
    #[serde(default)]
    scope: Option<FieldScope>,
    #[serde(default)]
    device_id: Option<String>,
    #[serde(default)]
    tenant_id: Option<String>,
    #[serde(default)]
    user: Option<TokenUser>,
}

/// RFC 6749 §3.3's space-delimited string, or the array of strings some servers send.
#[derive(Deserialize)]
#[serde(untagged)]
enum FieldScope {
    Delimited(String),
    Array(Vec<String>),
}

/// Classifies a token-endpoint answer (see [`crate::wire::classify_oauth`]) and says what it tolerated
/// (docs/protocol.md §7):
/// * `expires_in` as a string: [`crate::PeerViolation::ExpiresInAsString`];
/// * `scope` as a JSON array: [`crate::PeerViolation::ScopeNotSpaceDelimited`] (read as the space-joined string);
/// * no `Cache-Control: no-store` (R-SEC-1): [`crate::PeerViolation::MissingNoStore`].
///
/// `token_type` is compared case-insensitively (RFC 6749 §5.1: "The value is case insensitive"), so `bearer` is not
/// even a deviation. Any other type is refused as [`crate::PeerViolation::UnexpectedTokenType`]: the token would
/// be sent as a bearer token (RFC 6750) to a server that did not issue it as one. Whether a granted scope is
/// narrower than the request is the caller's to judge ([`scope_narrowed`]).
pub fn classify_noted(resp: &Response<Vec<u8>>) -> Result<(TokenResponse, PeerViolations), ResponseError> {
    let t: FieldAnswer = crate::wire::classify_oauth(resp)?;
    if !t.token_type.eq_ignore_ascii_case("bearer") {
        return Err(ResponseError::Malformed {
            status: resp.status().as_u16(),
            violation: PeerViolation::UnexpectedTokenType,
            detail: "token_type is not Bearer".into(),
        });
    }
    let mut notes = PeerViolations::NONE;
    if t.expires_in.is_some_and(|e| e.from_string) {
        notes.insert(PeerViolation::ExpiresInAsString);
    }
    let scope = match t.scope {
        Some(FieldScope::Delimited(s)) => Some(s),
        Some(FieldScope::Array(a)) => {
            notes.insert(PeerViolation::ScopeNotSpaceDelimited);
            Some(a.join(" "))
        }
        None => None,
    };
    if !crate::wire::has_no_store(resp.headers()) {
        notes.insert(PeerViolation::MissingNoStore);
    }
    let answer = TokenResponse {
        access_token: t.access_token,
        token_type: t.token_type,
        expires_in: t.expires_in.map(|e| e.secs),
        refresh_token: t.refresh_token,
        scope,
        device_id: t.device_id,
        tenant_id: t.tenant_id,
        user: t.user,
    };
    Ok((answer, notes))
}

/// [`classify_noted`] without the notes.
pub fn classify(resp: &Response<Vec<u8>>) -> Result<TokenResponse, ResponseError> {
    classify_noted(resp).map(|(t, _)| t)
}

/// Whether `granted` (a token answer's `scope`; absent means what was requested, RFC 6749 §5.1) lacks a scope of
/// `requested`. RFC 6749 §3.3 lets the server narrow the scope; a client then offers only what was granted and
/// reports [`crate::PeerViolation::ScopeNarrowed`].
pub fn scope_narrowed(requested: &str, granted: Option<&str>) -> bool {
    granted.is_some_and(|g| requested.split(' ').filter(|s| !s.is_empty()).any(|want| !scope::contains(g, want)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn arb_secret() -> impl Strategy<Value = String> {
        "[A-Za-z0-9._~+/=-]{1,40}"
    }

    fn arb_request() -> impl Strategy<Value = TokenRequest> {
        let cid = "[a-z-]{1,20}";
        prop_oneof![
            (arb_secret(), "[a-z:/.]{1,30}", arb_secret(), cid).prop_map(|(c, r, v, id)| {
                TokenRequest::AuthorizationCode {
                    code: c.into(),
                    redirect_uri: r,
                    code_verifier: v.into(),
                    client_id: id,
                }
            }),
            (arb_secret(), cid).prop_map(|(d, id)| TokenRequest::DeviceCode { device_code: d.into(), client_id: id }),
            (".{1,20}", ".{1,20}", "[a-z. ]{1,30}", cid).prop_map(|(u, p, s, id)| TokenRequest::Password {
                username: u,
                password: p.into(),
                scope: s,
                client_id: id
            }),
            (arb_secret(), proptest::option::of("[a-z.]{1,20}"), cid)
                .prop_map(|(r, s, id)| TokenRequest::RefreshToken { refresh_token: r.into(), scope: s, client_id: id }),
        ]
    }

    fn arb_response() -> impl Strategy<Value = TokenResponse> {
        (
            arb_secret(),
            proptest::option::of(0u64..10_000_000),
            proptest::option::of(arb_secret()),
            proptest::option::of("[a-z. ]{1,30}"),
            proptest::option::of("[a-z0-9-]{1,20}"),
            proptest::option::of("[a-z0-9-]{1,20}"),
            proptest::option::of((
                "[a-z0-9]{1,8}",
                ".{0,10}",
                proptest::option::of(".{0,10}"),
                proptest::option::of(".{0,10}"),
            )),
        )
            .prop_map(|(at, e, rt, s, d, t, u)| TokenResponse {
                access_token: at.into(),
                token_type: "Bearer".into(),
                expires_in: e,
                refresh_token: rt.map(Into::into),
                scope: s,
                device_id: d,
                tenant_id: t,
                user: u.map(|(id, username, display_name, email)| TokenUser { id, username, display_name, email }),
            })
    }

    proptest! {
        /// Form round trip of every grant (RFC 6749 Appendix B).
        #[test]
        fn request_round_trip(r in arb_request()) {
            let form = r.to_form();
            let back = TokenRequest::from_form(&form).unwrap();
            // Empty optional scope is omitted, as RFC 6749 §3.1 allows.
            prop_assert_eq!(back, r);
        }

        #[test]
        fn response_round_trip(t in arb_response()) {
            let back: TokenResponse = serde_json::from_slice(&serde_json::to_vec(&t).unwrap()).unwrap();
            prop_assert_eq!(back, t);
        }

        #[test]
        fn from_form_never_panics(body in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = TokenRequest::from_form(&body);
        }
    }

    /// RFC 6749 §3.1: parameters MUST NOT repeat; RFC 6749 §5.2 unsupported_grant_type.
    #[test]
    fn server_side_errors() {
        let e = TokenRequest::from_form(b"grant_type=password&grant_type=refresh_token&client_id=x").unwrap_err();
        assert_eq!(e.oauth_code(), crate::OAuthErrorCode::InvalidRequest);
        let e = TokenRequest::from_form(b"grant_type=client_credentials&client_id=x").unwrap_err();
        assert_eq!(e.oauth_code(), crate::OAuthErrorCode::UnsupportedGrantType);
        let e = TokenRequest::from_form(b"grant_type=refresh_token&client_id=x").unwrap_err();
        assert_eq!(e, TokenRequestError::Form(FormError::Missing("refresh_token")));
    }

    /// PROTOCOL.md §7: device-bound authentication puts the device token in the header and client_id in the body.
    #[test]
    fn device_bound_request() {
        let r = TokenRequest::DeviceCode { device_code: "dc".into(), client_id: "emb-acme".into() };
        let http = r.to_http("https://a/oauth/token", Some(&AccessToken::new("dev-at"))).unwrap();
        assert_eq!(http.headers()[http::header::AUTHORIZATION], "Bearer dev-at");
        assert_eq!(http.headers()[http::header::CONTENT_TYPE], crate::wire::FORM);
        let body = String::from_utf8(http.body().clone()).unwrap();
        assert!(body.contains("client_id=emb-acme"));
        assert!(body.contains("grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Adevice_code"));
        assert!(!format!("{http:?}").contains("dev-at"), "the Authorization header is marked sensitive");
    }

    /// Tolerances: string `expires_in`, case-insensitive `token_type`, unknown members; non-Bearer refused.
    #[test]
    fn classify_tolerates_real_servers() {
        let body = r#"{"access_token":"a","token_type":"bearer","expires_in":"1200","refresh_token":"r",
            "scope":"roger.device","device_id":"d1","tenant_id":"t1","extra":{"x":1}}"#;
        let resp = Response::builder().status(200).body(body.as_bytes().to_vec()).unwrap();
        let t = classify(&resp).unwrap();
        assert_eq!(t.expires_in, Some(1200));
        assert!(t.has_scope(scope::DEVICE));
        assert_eq!(t.device_id.as_deref(), Some("d1"));
        let mac = Response::builder().status(200).body(br#"{"access_token":"a","token_type":"mac"}"#.to_vec()).unwrap();
        assert!(matches!(
            classify(&mac),
            Err(ResponseError::Malformed { violation: crate::PeerViolation::UnexpectedTokenType, .. })
        ));
    }

    /// docs/protocol.md §7: the token answers of servers in the field, each read and noted.
    #[test]
    fn classify_notes_field_deviations() {
        let ok = |body: &str| {
            Response::builder()
                .status(200)
                .header(http::header::CACHE_CONTROL, "no-store")
                .body(body.as_bytes().to_vec())
                .unwrap()
        };
        let base = r#"{"access_token":"a","token_type":"Bearer","expires_in":1200,"scope":"roger.print roger.scan"}"#;
        assert!(classify_noted(&ok(base)).unwrap().1.is_empty());
        // Azure AD v1, Oracle OCI: a string lifetime.
        let (t, n) = classify_noted(&ok(&base.replace("1200", "\"1200\""))).unwrap();
        assert_eq!((t.expires_in, n.iter().collect::<Vec<_>>()), (Some(1200), vec![PeerViolation::ExpiresInAsString]));
        // GitHub, Keycloak, UAA: lower-case `bearer` is RFC-legal and not noted.
        assert!(classify_noted(&ok(&base.replace("Bearer", "bearer"))).unwrap().1.is_empty());
        // SimpleIdServer: scope as an array.
        let (t, n) =
            classify_noted(&ok(&base.replace("\"roger.print roger.scan\"", "[\"roger.print\",\"roger.scan\"]")))
                .unwrap();
        assert_eq!(t.scope.as_deref(), Some("roger.print roger.scan"));
        assert!(n.contains(PeerViolation::ScopeNotSpaceDelimited));
        // GitHub OAuth apps, Salesforce: no expires_in (RFC 6749 §5.1 RECOMMENDED only).
        let (t, n) = classify_noted(&ok(&base.replace(",\"expires_in\":1200", ""))).unwrap();
        assert_eq!((t.expires_in, n), (None, PeerViolations::NONE));
        // No no-store: noted (R-SEC-1).
        let bare = Response::builder().status(200).body(base.as_bytes().to_vec()).unwrap();
        assert!(classify_noted(&bare).unwrap().1.contains(PeerViolation::MissingNoStore));
        // RFC 8693's N_A is no bearer token: refused.
        assert!(classify(&ok(&base.replace("Bearer", "N_A"))).is_err());
    }

    /// RFC 6749 §3.3: a narrower grant is noticed, an absent or equal or wider one is not.
    #[test]
    fn narrowed_scopes() {
        assert!(scope_narrowed("roger.print roger.scan", Some("roger.print")));
        assert!(!scope_narrowed("roger.print roger.scan", Some("roger.scan roger.print")));
        assert!(!scope_narrowed("roger.print roger.scan", None));
        assert!(!scope_narrowed("roger.device", Some("roger.device offline_access")));
        assert!(scope_narrowed("roger.device offline_access", Some("roger.device")));
    }

    #[test]
    fn emb_client_ids() {
        assert!(client_id::is_emb("emb-acme"));
        assert!(client_id::is_emb("emb-konica.minolta_2"));
        assert!(!client_id::is_emb("emb-"));
        assert!(!client_id::is_emb("emb-ACME"));
        assert!(!client_id::is_emb("roger-mobile"));
    }
}
