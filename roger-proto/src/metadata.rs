//! Authorization server metadata (RFC 8414) at `{api}/.well-known/oauth-authorization-server` (PROTOCOL.md §2).

use http::Request;
use serde::{Deserialize, Serialize};

use crate::discovery::{check_transport, DiscoveryError, TransportPolicy};
use crate::error::{PeerViolation, PeerViolations};

/// The well-known path of RFC 8414 §3.
pub const WELL_KNOWN_PATH: &str = "/.well-known/oauth-authorization-server";

/// The OpenID Connect Discovery path, where RFC 8414 §5 lets a server publish the same metadata (Google, and
/// Keycloak before 26.4, publish only here). A client tries it after a `404` at [`WELL_KNOWN_PATH`]
/// (docs/protocol.md §7).
pub const OPENID_CONFIGURATION_PATH: &str = "/.well-known/openid-configuration";

/// The request line metadata answers belong to, for [`crate::error::PeerReport`]s.
pub const ENDPOINT: &str = "GET /.well-known/oauth-authorization-server";

/// The device-code grant type URN (RFC 8628 §3.4).
pub const GRANT_DEVICE_CODE: &str = "urn:ietf:params:oauth:grant-type:device_code";

/// The Roger client-authentication method of PROTOCOL.md §7.
pub const AUTH_METHOD_DEVICE_BEARER: &str = "roger_device_bearer";

/// The major API version this crate speaks (`roger_api_version`; docs/protocol.md C8: a client refuses another
/// major version).
pub const API_MAJOR_VERSION: &str = "1";

/// RFC 8414 §2 metadata with the Roger extensions. Unknown members are ignored (RFC 8414 §3.2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct AuthorizationServerMetadata {
    /// MUST equal the API origin (RFC 8414 §3.3, R-META-1).
    pub issuer: String,
    /// `/oauth/authorize` (RFC 6749 §3.1).
    pub authorization_endpoint: String,
    /// `/oauth/token` (RFC 6749 §3.2).
    pub token_endpoint: String,
    /// `/oauth/device_authorization` (RFC 8628 §4).
    pub device_authorization_endpoint: String,
    /// `/oauth/revoke` (RFC 7009, RFC 8414 §2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revocation_endpoint: Option<String>,
    /// `["code"]`.
    #[serde(default)]
    pub response_types_supported: Vec<String>,
    /// authorization_code, the device-code URN, password, refresh_token.
    #[serde(default)]
    pub grant_types_supported: Vec<String>,
    /// `["S256"]` (RFC 7636 §4.2).
    #[serde(default)]
    pub code_challenge_methods_supported: Vec<String>,
    /// `["none","roger_device_bearer"]`.
    #[serde(default)]
    pub token_endpoint_auth_methods_supported: Vec<String>,
    /// `["none","roger_device_bearer"]`.
    #[serde(default)]
    pub revocation_endpoint_auth_methods_supported: Vec<String>,
    /// The Roger scopes.
    #[serde(default)]
    pub scopes_supported: Vec<String>,
    /// Roger extension: the API version (e.g. `"1"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub roger_api_version: Option<String>,
    /// Roger extension: `"amqp"` when push is offered, `null` when not.
    #[serde(default)]
    pub roger_push: Option<String>,
}

/// Why metadata is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MetadataError {
    /// RFC 8414 §3.3 / R-META-1: "the issuer value returned MUST be identical to the authorization server's
    /// issuer identifier value into which the well-known URI string was inserted".
    #[error("metadata issuer {found:?} is not the API origin {expected:?} (RFC 8414 §3.3, R-META-1)")]
    IssuerMismatch {
        /// The API origin the client was configured with.
        expected: String,
        /// What the metadata said.
        found: String,
    },
    /// An endpoint URL is not TLS, or not on the issuer's origin.
    #[error("endpoint {name} is unacceptable: {reason}")]
    BadEndpoint {
        /// Member name.
        name: &'static str,
        /// Why.
        reason: String,
    },
    /// The server does not offer S256 PKCE or the device grant.
    #[error("metadata lacks {0}")]
    Unsupported(&'static str),
}

/// `GET {api}/.well-known/oauth-authorization-server`.
pub fn request(api: &str) -> Result<Request<Vec<u8>>, http::Error> {
    get(api, WELL_KNOWN_PATH)
}

/// `GET {api}/.well-known/openid-configuration`, the fallback of RFC 8414 §5 after a `404` from [`request`].
pub fn openid_configuration_request(api: &str) -> Result<Request<Vec<u8>>, http::Error> {
    get(api, OPENID_CONFIGURATION_PATH)
}

fn get(api: &str, path: &str) -> Result<Request<Vec<u8>>, http::Error> {
    Request::get(format!("{}{path}", api.trim_end_matches('/')))
        .header(http::header::ACCEPT, crate::wire::JSON)
        .body(Vec::new())
}

/// The endpoints a client uses, taken from validated metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoints {
    /// The API origin (= issuer).
    pub api: String,
    /// Authorization endpoint.
    pub authorization: String,
    /// Token endpoint.
    pub token: String,
    /// Device authorization endpoint.
    pub device_authorization: String,
    /// Revocation endpoint (defaults to `{api}/oauth/revoke` when metadata omits it).
    pub revocation: String,
    /// Whether the server offers push (`roger_push == "amqp"`).
    pub push: bool,
}

impl Endpoints {
    /// The conventional Roger endpoint paths under an API origin, for configuration without metadata.
    pub fn conventional(api: &str) -> Self {
        let api = api.trim_end_matches('/').to_owned();
        Self {
            authorization: format!("{api}/oauth/authorize"),
            token: format!("{api}/oauth/token"),
            device_authorization: format!("{api}/oauth/device_authorization"),
            revocation: format!("{api}/oauth/revoke"),
            push: false,
            api,
        }
    }
}

impl AuthorizationServerMetadata {
    /// The metadata a Roger server at `api` publishes (PROTOCOL.md §2).
    pub fn for_api(api: &str, push: bool) -> Self {
        let e = Endpoints::conventional(api);
        Self {
            issuer: e.api.clone(),
            authorization_endpoint: e.authorization,
            token_endpoint: e.token,
            device_authorization_endpoint: e.device_authorization,
            revocation_endpoint: Some(e.revocation),
            response_types_supported: vec!["code".into()],
            grant_types_supported: vec![
                "authorization_code".into(),
                GRANT_DEVICE_CODE.into(),
                "password".into(),
                "refresh_token".into(),
            ],
            code_challenge_methods_supported: vec![crate::pkce::METHOD_S256.into()],
            token_endpoint_auth_methods_supported: vec!["none".into(), AUTH_METHOD_DEVICE_BEARER.into()],
            revocation_endpoint_auth_methods_supported: vec!["none".into(), AUTH_METHOD_DEVICE_BEARER.into()],
            scopes_supported: crate::token::scope::ALL.iter().map(|s| (*s).to_owned()).collect(),
            roger_api_version: Some(API_MAJOR_VERSION.into()),
            roger_push: push.then(|| "amqp".into()),
        }
    }

    /// [`Self::validate_noted`] without the notes.
    pub fn validate(&self, expected_api: &str, policy: TransportPolicy) -> Result<Endpoints, MetadataError> {
        self.validate_noted(expected_api, policy).map(|(e, _)| e)
    }

    /// Validates the metadata against the API origin the client was configured with and returns the endpoints,
    /// with what it tolerated.
    ///
    /// * R-META-1 / RFC 8414 §3.3: `issuer` must equal `expected_api` (compared as origins, so a trailing slash
    ///   does not matter, but scheme, host and port do). Refused otherwise: this is the mix-up defence (RFC 9700
    ///   §4.4).
    /// * R-DISC-2: every endpoint uses TLS (or loopback plain HTTP when allowed); refused otherwise.
    /// * An endpoint on another origin than the issuer: a Roger server (one that names `roger_api_version`) is
    ///   refused, since R-META-1 binds it to the API origin and the printer sends its device token to these
    ///   endpoints; any other server's is used and noted as [`crate::PeerViolation::EndpointOffOrigin`], as RFC
    ///   8414 §2 allows it (Google's token endpoint is on another host than its issuer).
    pub fn validate_noted(
        &self,
        expected_api: &str,
        policy: TransportPolicy,
    ) -> Result<(Endpoints, PeerViolations), MetadataError> {
        let expected = origin_of(expected_api, policy)
            .map_err(|e| MetadataError::BadEndpoint { name: "configured api", reason: e.to_string() })?;
        let issuer = origin_of(&self.issuer, policy).ok();
        if issuer.as_deref() != Some(expected.as_str()) || self.issuer.trim_end_matches('/') != expected {
            return Err(MetadataError::IssuerMismatch { expected, found: self.issuer.clone() });
        }
        let mut notes = PeerViolations::NONE;
        let roger = self.roger_api_version.is_some();
        let mut check = |name: &'static str, url: &str| -> Result<String, MetadataError> {
            let origin =
                origin_of(url, policy).map_err(|e| MetadataError::BadEndpoint { name, reason: e.to_string() })?;
            if origin != expected {
                if roger {
                    return Err(MetadataError::BadEndpoint {
                        name,
                        reason: format!("not on the issuer's origin {expected} (R-META-1)"),
                    });
                }
                notes.insert(PeerViolation::EndpointOffOrigin);
            }
            Ok(url.to_owned())
        };
        if let Some(v) = &self.roger_api_version {
            if v.split('.').next() != Some(API_MAJOR_VERSION) {
                return Err(MetadataError::Unsupported("a supported roger_api_version (major version 1)"));
            }
        }
        let revocation = match &self.revocation_endpoint {
            Some(r) => check("revocation_endpoint", r)?,
            None => format!("{expected}/oauth/revoke"),
        };
        let endpoints = Endpoints {
            authorization: check("authorization_endpoint", &self.authorization_endpoint)?,
            token: check("token_endpoint", &self.token_endpoint)?,
            device_authorization: check("device_authorization_endpoint", &self.device_authorization_endpoint)?,
            revocation,
            push: self.roger_push.as_deref() == Some("amqp"),
            api: expected,
        };
        Ok((endpoints, notes))
    }

    /// Whether S256 PKCE is offered (RFC 7636 §4.2; a phone refuses a server without it).
    pub fn supports_s256(&self) -> bool {
        self.code_challenge_methods_supported.iter().any(|m| m == crate::pkce::METHOD_S256)
    }
}

fn origin_of(url: &str, policy: TransportPolicy) -> Result<String, DiscoveryError> {
    Ok(check_transport(url, policy)?.origin().ascii_serialization())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// R-META-1: the issuer must be the configured API origin.
    #[test]
    fn issuer_must_match() {
        let m = AuthorizationServerMetadata::for_api("https://eu.example", true);
        let e = m.validate("https://eu.example/", TransportPolicy::TlsOnly).unwrap();
        assert_eq!(e.token, "https://eu.example/oauth/token");
        assert!(e.push);
        let err = m.validate("https://us.example", TransportPolicy::TlsOnly).unwrap_err();
        assert!(matches!(err, MetadataError::IssuerMismatch { .. }));
        let mut other_port = m.clone();
        other_port.issuer = "https://eu.example:444".into();
        assert!(other_port.validate("https://eu.example", TransportPolicy::TlsOnly).is_err());
        let mut with_path = m.clone();
        with_path.issuer = "https://eu.example/tenant".into();
        assert!(with_path.validate("https://eu.example", TransportPolicy::TlsOnly).is_err());
        // An issuer with only a trailing slash names the same origin (Auth0 sends one): accepted.
        let mut slash = m.clone();
        slash.issuer = "https://eu.example/".into();
        assert_eq!(slash.validate("https://eu.example", TransportPolicy::TlsOnly).unwrap().api, "https://eu.example");
    }

    /// R-DISC-2 for every endpoint; an endpoint on another origin is used and noted (RFC 8414 §2 allows it).
    #[test]
    fn endpoints_checked() {
        let own = AuthorizationServerMetadata::for_api("https://eu.example", false);
        assert!(own.validate_noted("https://eu.example", TransportPolicy::TlsOnly).unwrap().1.is_empty());
        // A Roger server keeps every endpoint on its origin (R-META-1): the device token goes there.
        let mut roger = own.clone();
        roger.token_endpoint = "https://oauth2.eu.example/token".into();
        assert!(matches!(
            roger.validate("https://eu.example", TransportPolicy::TlsOnly),
            Err(MetadataError::BadEndpoint { name: "token_endpoint", .. })
        ));
        // Another server may place them elsewhere (RFC 8414 §2).
        let mut m = own.clone();
        m.roger_api_version = None;
        m.token_endpoint = "https://oauth2.eu.example/token".into();
        let (e, notes) = m.validate_noted("https://eu.example", TransportPolicy::TlsOnly).unwrap();
        assert_eq!(e.token, "https://oauth2.eu.example/token");
        assert!(notes.contains(PeerViolation::EndpointOffOrigin));
        m.token_endpoint = "http://oauth2.eu.example/token".into();
        assert!(matches!(
            m.validate("https://eu.example", TransportPolicy::TlsOnly),
            Err(MetadataError::BadEndpoint { name: "token_endpoint", .. })
        ));
        let plain = AuthorizationServerMetadata::for_api("http://127.0.0.1:9", false);
        assert!(plain.validate("http://127.0.0.1:9", TransportPolicy::TlsOnly).is_err());
        assert!(plain.validate("http://127.0.0.1:9", TransportPolicy::AllowLoopbackPlain).is_ok());
    }

    /// docs/protocol.md C8: another major API version is refused; a minor version is fine.
    #[test]
    fn api_version() {
        let mut m = AuthorizationServerMetadata::for_api("https://a", false);
        m.roger_api_version = Some("1.3".into());
        assert!(m.validate("https://a", TransportPolicy::TlsOnly).is_ok());
        m.roger_api_version = Some("2".into());
        assert!(matches!(m.validate("https://a", TransportPolicy::TlsOnly), Err(MetadataError::Unsupported(_))));
    }

    #[test]
    fn tolerant_parse() {
        let json = r#"{"issuer":"https://a","authorization_endpoint":"https://a/x","token_endpoint":"https://a/t",
            "device_authorization_endpoint":"https://a/d","unknown":[1,2]}"#;
        let m: AuthorizationServerMetadata = serde_json::from_str(json).unwrap();
        assert_eq!(m.roger_push, None);
        assert!(!m.supports_s256());
        let e = m.validate("https://a", TransportPolicy::TlsOnly).unwrap();
        assert_eq!(e.revocation, "https://a/oauth/revoke");
    }

    proptest! {
        #[test]
        fn round_trip(host in "[a-z]{1,10}", port in 1u16.., push: bool) {
            let m = AuthorizationServerMetadata::for_api(&format!("https://{host}.example:{port}"), push);
            let back: AuthorizationServerMetadata = serde_json::from_slice(&serde_json::to_vec(&m).unwrap()).unwrap();
            prop_assert_eq!(back, m);
        }
    }
}
