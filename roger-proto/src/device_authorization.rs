//! The device authorization endpoint (RFC 8628 §3.1–3.2) as Roger uses it (PROTOCOL.md §4, §5, §8):
//! registration (`scope=roger.device`, no authentication), session QR codes (`scope=roger.release`,
//! device-bound, §7) and desktop login (`client_id=roger-desktop`, `scope=roger.app`).

use http::{Request, Response};
use serde::{Deserialize, Serialize};

use crate::error::{PeerViolation, ResponseError};
use crate::secret::{AccessToken, DeviceCode, UserCode, VerificationUriComplete};
use crate::wire::{encode_form, post_form, Form, FormError};

/// A device authorization request (RFC 8628 §3.1) with Roger's device description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceAuthorizationRequest {
    /// `emb-<vendor>` or `roger-desktop`.
    pub client_id: String,
    /// `roger.device` (registration), `roger.release` (session) or `roger.app` (desktop).
    pub scope: String,
    /// The printer model (registration; shown to the admin, R-QR-2).
    pub device_model: Option<String>,
    /// The printer serial number (registration).
    pub device_serial: Option<String>,
}

impl DeviceAuthorizationRequest {
    /// A printer registration (PROTOCOL.md §5.1).
    pub fn registration(client_id: &str, model: &str, serial: &str) -> Self {
        Self {
            client_id: client_id.into(),
            scope: crate::token::scope::DEVICE.into(),
            device_model: Some(model.into()),
            device_serial: Some(serial.into()),
        }
    }

    /// A session QR code for step 1 (PROTOCOL.md §8), sent with device-bound authentication.
    pub fn session(client_id: &str) -> Self {
        Self {
            client_id: client_id.into(),
            scope: crate::token::scope::RELEASE.into(),
            device_model: None,
            device_serial: None,
        }
    }

    /// A desktop login code (PROTOCOL.md §4).
    pub fn desktop() -> Self {
        Self {
            client_id: crate::token::client_id::DESKTOP.into(),
            scope: crate::token::scope::APP.into(),
            device_model: None,
            device_serial: None,
        }
    }

    /// The form body.
    pub fn to_form(&self) -> Vec<u8> {
        encode_form([
            ("client_id", Some(self.client_id.as_str())),
            ("scope", Some(self.scope.as_str())),
            ("device_model", self.device_model.as_deref()),
            ("device_serial", self.device_serial.as_deref()),
        ])
    }

    /// `POST {device_authorization_endpoint}`; `device_bearer` for session codes (PROTOCOL.md §7).
    pub fn to_http(
        &self,
        endpoint: &str,
        device_bearer: Option<&AccessToken>,
    ) -> Result<Request<Vec<u8>>, http::Error> {
        post_form(endpoint, self.to_form(), device_bearer)
    }

    /// Server side: reads the form (duplicates refused, RFC 6749 §3.1).
    pub fn from_form(body: &[u8]) -> Result<Self, FormError> {
        Self::from_parsed(&Form::parse(body)?)
    }

    /// [`DeviceAuthorizationRequest::from_form`] for a form the caller already parsed.
    pub fn from_parsed(f: &Form) -> Result<Self, FormError> {
        Ok(Self {
            client_id: f.require("client_id")?.to_owned(),
            scope: f.require("scope")?.to_owned(),
            device_model: f.get("device_model").map(str::to_owned),
            device_serial: f.get("device_serial").map(str::to_owned),
        })
    }
}

/// The device authorization response (RFC 8628 §3.2) with Roger's `request_id`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct DeviceAuthorizationResponse {
    /// The device verification code.
    pub device_code: DeviceCode,
    /// The end-user code, wire form (8 letters of the Roger alphabet, no hyphen).
    pub user_code: UserCode,
    /// The page where a user enters the code.
    pub verification_uri: String,
    /// `verification_uri` with the code: the QR payload (RFC 8628 §3.3.1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verification_uri_complete: Option<VerificationUriComplete>,
    /// Lifetime of the codes in seconds (tolerantly parsed).
    #[serde(deserialize_with = "crate::wire::lenient_seconds")]
    pub expires_in: u64,
    /// Minimum polling interval in seconds; absent means 5 (RFC 8628 §3.2).
    #[serde(default, deserialize_with = "crate::wire::lenient_seconds_opt", skip_serializing_if = "Option::is_none")]
    pub interval: Option<u64>,
    /// A non-secret handle for push and logs (PROTOCOL.md §5.1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

/// Classifies an answer of the device authorization endpoint. The user code must be in the Roger format
/// (PROTOCOL.md §5.2: 8 characters of the consonant alphabet), else [`PeerViolation::BadUserCode`].
pub fn classify(resp: &Response<Vec<u8>>) -> Result<DeviceAuthorizationResponse, ResponseError> {
    let r: DeviceAuthorizationResponse = crate::wire::classify_oauth(resp)?;
    let status = resp.status().as_u16();
    if !crate::user_code::is_wire_form(r.user_code.secret()) {
        return Err(ResponseError::Malformed {
            status,
            violation: PeerViolation::BadUserCode,
            detail: "user_code is not 8 characters of BCDFGHJKLMNPQRSTVWXZ".into(),
        });
    }
    if r.device_code.is_empty() || r.verification_uri.is_empty() {
        return Err(ResponseError::Malformed {
            status,
            violation: PeerViolation::MissingRequiredField,
            detail: "device_code and verification_uri must not be empty".into(),
        });
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn request_round_trip(cid in "[a-z-]{1,12}", scope in "[a-z. ]{1,20}", m in proptest::option::of(".{1,12}"), s in proptest::option::of(".{1,12}")) {
            let r = DeviceAuthorizationRequest { client_id: cid, scope, device_model: m, device_serial: s };
            prop_assert_eq!(DeviceAuthorizationRequest::from_form(&r.to_form()).unwrap(), r);
        }

        #[test]
        fn response_round_trip(dc in "[A-Za-z0-9_-]{1,43}", uc in "[BCDFGHJKLMNPQRSTVWXZ]{8}", exp in 0u64..100_000, iv in proptest::option::of(0u64..100), rid in proptest::option::of("[a-z0-9-]{1,20}")) {
            let r = DeviceAuthorizationResponse {
                device_code: dc.into(),
                verification_uri: "https://a.example/device".into(),
                verification_uri_complete: Some(format!("https://a.example/device?user_code={uc}").into()),
                user_code: uc.into(),
                expires_in: exp,
                interval: iv,
                request_id: rid,
            };
            let back: DeviceAuthorizationResponse = serde_json::from_slice(&serde_json::to_vec(&r).unwrap()).unwrap();
            prop_assert_eq!(back, r);
        }
    }

    /// RFC 8628 §3.2 with tolerances; PROTOCOL.md §5.2 user-code format.
    #[test]
    fn classify_checks_user_code() {
        let ok = r#"{"device_code":"d","user_code":"WDJBMJHT","verification_uri":"https://a/device","expires_in":"600","request_id":"r1"}"#;
        let r = classify(&Response::builder().status(200).body(ok.as_bytes().to_vec()).unwrap()).unwrap();
        assert_eq!(r.expires_in, 600);
        assert_eq!(r.interval, None);
        let bad = ok.replace("WDJBMJHT", "WDJB-MJHT");
        assert!(matches!(
            classify(&Response::builder().status(200).body(bad.into_bytes()).unwrap()),
            Err(ResponseError::Malformed { violation: PeerViolation::BadUserCode, .. })
        ));
    }

    #[test]
    fn registration_form() {
        let r = DeviceAuthorizationRequest::registration("emb-acme", "MX-1", "SN 1");
        let body = String::from_utf8(r.to_form()).unwrap();
        assert_eq!(body, "client_id=emb-acme&scope=roger.device&device_model=MX-1&device_serial=SN+1");
        let req = r.to_http("https://a/oauth/device_authorization", None).unwrap();
        assert!(req.headers().get(http::header::AUTHORIZATION).is_none());
    }
}
