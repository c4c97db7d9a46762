//! Token revocation (RFC 7009) at `/oauth/revoke` (PROTOCOL.md §6). The MFP revokes user tokens with
//! device-bound authentication (§7); the server answers 200 also for unknown tokens (RFC 7009 §2.2).

use http::{Request, Response};

use crate::error::ResponseError;
use crate::secret::AccessToken;
use crate::wire::{encode_form, post_form, Form, FormError};

/// RFC 7009 §2.1 `token_type_hint`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenTypeHint {
    /// `access_token`.
    AccessToken,
    /// `refresh_token`.
    RefreshToken,
}

impl TokenTypeHint {
    /// Wire string.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::AccessToken => "access_token",
            Self::RefreshToken => "refresh_token",
        }
    }

    /// Parses a hint; unknown hints are `None` (RFC 7009 §2.1: the server MAY ignore them and searches all types).
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "access_token" => Some(Self::AccessToken),
            "refresh_token" => Some(Self::RefreshToken),
            _ => None,
        }
    }
}

/// A revocation request (RFC 7009 §2.1). The token is either kind, so it is held as a plain secret string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevocationRequest {
    /// The token to revoke (access or refresh).
    pub token: crate::secret::AccessToken,
    /// Optional hint.
    pub token_type_hint: Option<TokenTypeHint>,
    /// The client the token was issued to.
    pub client_id: String,
}

impl RevocationRequest {
    /// Revoke an access token.
    pub fn access(token: &AccessToken, client_id: &str) -> Self {
        Self { token: token.clone(), token_type_hint: Some(TokenTypeHint::AccessToken), client_id: client_id.into() }
    }

    /// Revoke a refresh token (and with it its access tokens, RFC 7009 §2.1).
    pub fn refresh(token: &crate::secret::RefreshToken, client_id: &str) -> Self {
        Self {
            token: AccessToken::new(token.secret()),
            token_type_hint: Some(TokenTypeHint::RefreshToken),
            client_id: client_id.into(),
        }
    }

    /// Form body.
    pub fn to_form(&self) -> Vec<u8> {
        encode_form([
            ("token", Some(self.token.secret())),
            ("token_type_hint", self.token_type_hint.map(TokenTypeHint::as_str)),
            ("client_id", Some(self.client_id.as_str())),
        ])
    }

    /// `POST {revocation_endpoint}`, device-bound when `device_bearer` is given (PROTOCOL.md §7).
    pub fn to_http(
        &self,
        endpoint: &str,
        device_bearer: Option<&AccessToken>,
    ) -> Result<Request<Vec<u8>>, http::Error> {
        post_form(endpoint, self.to_form(), device_bearer)
    }

    /// Server side: reads the form. An unknown hint is dropped (RFC 7009 §2.1).
    pub fn from_form(body: &[u8]) -> Result<Self, FormError> {
        Self::from_parsed(&Form::parse(body)?)
    }

    /// [`RevocationRequest::from_form`] for a form the caller already parsed.
    pub fn from_parsed(f: &Form) -> Result<Self, FormError> {
        Ok(Self {
            token: AccessToken::new(f.require("token")?),
            token_type_hint: f.get("token_type_hint").and_then(TokenTypeHint::parse),
            client_id: f.require("client_id")?.to_owned(),
        })
    }
}

/// The request line revocation answers belong to, for [`crate::error::PeerReport`]s.
pub const ENDPOINT: &str = "POST /oauth/revoke";

/// Classifies a revocation answer: any 2xx is success (RFC 7009 §2.2: "The content of the response body is
/// ignored by the client"); errors as RFC 7009 §2.2.1 / RFC 6749 §5.2.
pub fn classify(resp: &Response<Vec<u8>>) -> Result<(), ResponseError> {
    if resp.status().is_success() {
        return Ok(());
    }
    crate::wire::classify_oauth::<serde::de::IgnoredAny>(resp).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn round_trip(t in "[A-Za-z0-9._-]{1,40}", hint in proptest::option::of(prop_oneof![Just(TokenTypeHint::AccessToken), Just(TokenTypeHint::RefreshToken)]), cid in "[a-z-]{1,12}") {
            let r = RevocationRequest { token: t.into(), token_type_hint: hint, client_id: cid };
            prop_assert_eq!(RevocationRequest::from_form(&r.to_form()).unwrap(), r);
        }
    }

    /// RFC 7009 §2.2: body ignored on success; §2.2.1 errors typed.
    #[test]
    fn classify_answers() {
        assert!(classify(&Response::builder().status(200).body(b"<html>".to_vec()).unwrap()).is_ok());
        let e =
            classify(&Response::builder().status(400).body(br#"{"error":"unsupported_token_type"}"#.to_vec()).unwrap());
        assert_eq!(e.unwrap_err().oauth_code(), Some(&crate::OAuthErrorCode::UnsupportedTokenType));
        assert!(classify(&Response::builder().status(503).body(b"<html>".to_vec()).unwrap())
            .unwrap_err()
            .is_retryable());
    }

    #[test]
    fn unknown_hint_is_dropped() {
        let r = RevocationRequest::from_form(b"token=t&token_type_hint=id_token&client_id=c").unwrap();
        assert_eq!(r.token_type_hint, None);
    }
}
