//! App login with the authorization-code grant and PKCE S256 (RFC 6749 §4.1, RFC 7636, RFC 8252; PROTOCOL.md §4).

use serde::{Deserialize, Serialize};

use crate::error::OAuthErrorCode;
use crate::secret::{AuthorizationCode, CsrfToken, Password, PkceVerifier};
use crate::wire::{encode_form, Form, FormError};

/// The phone's redirect URI (RFC 8252 §7.1 private-use scheme).
pub const MOBILE_REDIRECT_URI: &str = "roger://callback";

/// The authorization request of RFC 6749 §4.1.1 with PKCE (RFC 7636 §4.3).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthorizationRequest {
    /// Always `code`.
    pub response_type: String,
    /// `roger-mobile`.
    pub client_id: String,
    /// `roger://callback`.
    pub redirect_uri: String,
    /// BASE64URL(SHA256(verifier)).
    pub code_challenge: String,
    /// Always `S256`.
    pub code_challenge_method: String,
    /// Opaque value to bind the redirect to this request (RFC 6749 §10.12).
    pub state: String,
    /// Requested scope (`roger.app`).
    pub scope: String,
}

impl AuthorizationRequest {
    /// A phone login request for `verifier` (RFC 7636 §4.3) with the caller's random `state`.
    pub fn for_app(client_id: &str, redirect_uri: &str, verifier: &PkceVerifier, state: &str) -> Self {
        Self {
            response_type: "code".into(),
            client_id: client_id.into(),
            redirect_uri: redirect_uri.into(),
            code_challenge: crate::pkce::challenge_s256(verifier),
            code_challenge_method: crate::pkce::METHOD_S256.into(),
            state: state.into(),
            scope: crate::token::scope::APP.into(),
        }
    }

    fn pairs(&self) -> [(&str, Option<&str>); 7] {
        [
            ("response_type", Some(self.response_type.as_str())),
            ("client_id", Some(self.client_id.as_str())),
            ("redirect_uri", Some(self.redirect_uri.as_str())),
            ("code_challenge", Some(self.code_challenge.as_str())),
            ("code_challenge_method", Some(self.code_challenge_method.as_str())),
            ("state", Some(self.state.as_str())),
            ("scope", Some(self.scope.as_str())),
        ]
    }

    /// The URL the app opens: `{authorization_endpoint}?…`.
    pub fn to_url(&self, authorization_endpoint: &str) -> String {
        let q = String::from_utf8(encode_form(self.pairs())).unwrap_or_default();
        format!("{authorization_endpoint}?{q}")
    }

    /// Server side: reads the query string (or the same parameters from the login form).
    pub fn from_form(form: &Form) -> Result<Self, FormError> {
        Ok(Self {
            response_type: form.require("response_type")?.to_owned(),
            client_id: form.require("client_id")?.to_owned(),
            redirect_uri: form.require("redirect_uri")?.to_owned(),
            code_challenge: form.require("code_challenge")?.to_owned(),
            code_challenge_method: form.require("code_challenge_method")?.to_owned(),
            state: form.require("state")?.to_owned(),
            scope: form.require("scope")?.to_owned(),
        })
    }
}

/// The login form post (`POST /oauth/authorize`): the authorization request plus tenant, credentials and the
/// form's CSRF token (PROTOCOL.md §4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginForm {
    /// The original request.
    pub request: AuthorizationRequest,
    /// Tenant name.
    pub tenant: String,
    /// User name.
    pub username: String,
    /// Password (wiped by the caller after the post, R-PWD-1).
    pub password: Password,
    /// The CSRF token from the form page.
    pub csrf: CsrfToken,
}

impl LoginForm {
    /// The form body.
    pub fn to_form(&self) -> Vec<u8> {
        let mut pairs: Vec<(&str, Option<&str>)> = self.request.pairs().to_vec();
        pairs.extend([
            ("tenant", Some(self.tenant.as_str())),
            ("username", Some(self.username.as_str())),
            ("password", Some(self.password.secret())),
            ("csrf_token", Some(self.csrf.secret())),
        ]);
        encode_form(pairs)
    }

    /// Server side: reads the post.
    pub fn from_form(body: &[u8]) -> Result<Self, FormError> {
        let f = Form::parse(body)?;
        Ok(Self {
            request: AuthorizationRequest::from_form(&f)?,
            tenant: f.require("tenant")?.to_owned(),
            username: f.require("username")?.to_owned(),
            password: Password::new(f.require("password")?),
            csrf: CsrfToken::new(f.require("csrf_token")?),
        })
    }
}

/// What the redirect says (RFC 6749 §4.1.2 / §4.1.2.1).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RedirectError {
    /// The location is not a URL or not on the expected redirect URI.
    #[error("redirect does not go to the registered redirect URI")]
    WrongTarget,
    /// RFC 6749 §10.12: the `state` does not match the request's (possible CSRF).
    #[error("state mismatch (RFC 6749 §10.12)")]
    StateMismatch,
    /// The server answered with an error (RFC 6749 §4.1.2.1).
    #[error("authorization failed: {0}")]
    Denied(OAuthErrorCode),
    /// Neither `code` nor `error`.
    #[error("redirect carries no code")]
    NoCode,
}

/// Reads the `Location` of the `302` that ends the login (RFC 6749 §4.1.2): checks the target and `state`,
/// returns the code.
pub fn parse_redirect(
    location: &str,
    redirect_uri: &str,
    expected_state: &str,
) -> Result<AuthorizationCode, RedirectError> {
    let (target, query) = location.split_once('?').unwrap_or((location, ""));
    if target != redirect_uri {
        return Err(RedirectError::WrongTarget);
    }
    let form = Form::parse(query.as_bytes()).map_err(|_| RedirectError::NoCode)?;
    let state_ok = form.get("state").is_some_and(|s| {
        use subtle::ConstantTimeEq;
        bool::from(s.as_bytes().ct_eq(expected_state.as_bytes()))
    });
    if let Some(err) = form.get("error") {
        return Err(if state_ok {
            RedirectError::Denied(OAuthErrorCode::parse(err))
        } else {
            RedirectError::StateMismatch
        });
    }
    if !state_ok {
        return Err(RedirectError::StateMismatch);
    }
    form.get("code").map(AuthorizationCode::new).ok_or(RedirectError::NoCode)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn verifier() -> PkceVerifier {
        PkceVerifier::new("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk")
    }

    /// RFC 7636 §4.3: the request carries the S256 challenge, never the verifier.
    #[test]
    fn url_carries_challenge_not_verifier() {
        let r = AuthorizationRequest::for_app("roger-mobile", MOBILE_REDIRECT_URI, &verifier(), "st");
        let url = r.to_url("https://a/oauth/authorize");
        assert!(url.contains("code_challenge=E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"));
        assert!(url.contains("code_challenge_method=S256"));
        assert!(!url.contains(verifier().secret()));
        let q = url.split_once('?').unwrap().1;
        assert_eq!(AuthorizationRequest::from_form(&Form::parse(q.as_bytes()).unwrap()).unwrap(), r);
    }

    /// RFC 6749 §4.1.2, §4.1.2.1 and §10.12.
    #[test]
    fn redirect_rules() {
        let ok = parse_redirect("roger://callback?code=abc&state=st", MOBILE_REDIRECT_URI, "st").unwrap();
        assert_eq!(ok.secret(), "abc");
        assert_eq!(
            parse_redirect("roger://callback?code=abc&state=xx", MOBILE_REDIRECT_URI, "st"),
            Err(RedirectError::StateMismatch)
        );
        assert_eq!(
            parse_redirect("https://evil/cb?code=abc&state=st", MOBILE_REDIRECT_URI, "st"),
            Err(RedirectError::WrongTarget)
        );
        assert_eq!(
            parse_redirect("roger://callback?error=access_denied&state=st", MOBILE_REDIRECT_URI, "st"),
            Err(RedirectError::Denied(OAuthErrorCode::AccessDenied))
        );
        assert_eq!(parse_redirect("roger://callback?state=st", MOBILE_REDIRECT_URI, "st"), Err(RedirectError::NoCode));
    }

    proptest! {
        #[test]
        fn login_form_round_trip(state in "[A-Za-z0-9]{1,20}", tenant in ".{1,10}", user in ".{1,10}", pw in ".{1,10}", csrf in "[A-Za-z0-9]{1,30}") {
            let f = LoginForm {
                request: AuthorizationRequest::for_app("roger-mobile", MOBILE_REDIRECT_URI, &verifier(), &state),
                tenant, username: user, password: pw.into(), csrf: csrf.into(),
            };
            prop_assert_eq!(LoginForm::from_form(&f.to_form()).unwrap(), f);
        }
    }
}
