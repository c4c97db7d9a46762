//! The device authorization endpoint (RFC 8628 §3.1–3.2) as Roger uses it (PROTOCOL.md §4, §5, §8):
//! registration (`scope=roger.device`, no authentication), session QR codes (`scope=roger.release`,
//! device-bound, §7) and desktop login (`client_id=roger-desktop`, `scope=roger.app`).

use http::{Request, Response};
use serde::{Deserialize, Serialize};

use crate::error::{PeerViolation, PeerViolations, ResponseError};
use crate::secret::{AccessToken, DeviceCode, UserCode, VerificationUriComplete};
use crate::user_code::ServerCodeForm;
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
    /// The end-user code as the server sent it: Roger's server sends the wire form (8 letters of the Roger
    /// alphabet, no hyphen); other servers other spellings and alphabets (docs/protocol.md §7). Shown with
    /// [`UserCode::display`].
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

/// The request line the device authorization answers belong to, for [`crate::error::PeerReport`]s.
pub const ENDPOINT: &str = "POST /oauth/device_authorization";

/// The answer as servers in the field send it, read tolerantly (docs/protocol.md §7): `verification_url` beside
/// `verification_uri`, lifetimes as strings, a `user_code` in any spelling.
#[derive(Deserialize)]
struct FieldAnswer {
    device_code: DeviceCode,
    user_code: UserCode,
    #[serde(default)]
    verification_uri: Option<String>,
    /// Google's and Azure AD v1's name for `verification_uri`.
    #[serde(default)]
    verification_url: Option<String>,
    #[serde(default)]
    verification_uri_complete: Option<VerificationUriComplete>,
    expires_in: crate::wire::LenientSeconds,
    #[serde(default)]
    interval: Option<crate::wire::LenientSeconds>,
    #[serde(default)]
    request_id: Option<String>,
}

/// Classifies an answer of the device authorization endpoint (RFC 8628 §3.2) and says what it tolerated.
///
/// Liberal where an RFC or a known server allows it (docs/protocol.md §7), each noted in the returned set:
/// * a Roger code in another spelling (`WDJB-MJHT`, `wdjbmjht`): [`PeerViolation::UserCodeNotCanonical`]; a code of
///   another length or alphabet: [`PeerViolation::ForeignUserCode`]. Either is kept as the server sent it (the
///   wire value) and displayed by [`UserCode::display`];
/// * `verification_url` for `verification_uri`: [`PeerViolation::VerificationUrlMember`];
/// * no `verification_uri_complete`: [`PeerViolation::MissingVerificationUriComplete`] (the panel shows no QR);
/// * `expires_in` or `interval` as a string: [`PeerViolation::ExpiresInAsString`];
/// * no `Cache-Control: no-store` (the device code is a credential, R-SEC-1): [`PeerViolation::MissingNoStore`].
///
/// Refused, as unsafe or unusable: an empty `device_code` or verification URI, and a user code a panel cannot
/// show ([`crate::user_code::ServerCodeForm::Unusable`]).
pub fn classify_noted(
    resp: &Response<Vec<u8>>,
) -> Result<(DeviceAuthorizationResponse, PeerViolations), ResponseError> {
    let r: FieldAnswer = crate::wire::classify_oauth(resp)?;
    let status = resp.status().as_u16();
    let mut notes = PeerViolations::NONE;
    match crate::user_code::classify_server_code(r.user_code.secret()) {
        ServerCodeForm::Wire => {}
        ServerCodeForm::RogerSpelling => notes.insert(PeerViolation::UserCodeNotCanonical),
        ServerCodeForm::Foreign => notes.insert(PeerViolation::ForeignUserCode),
        ServerCodeForm::Unusable => {
            return Err(ResponseError::Malformed {
                status,
                violation: PeerViolation::BadUserCode,
                detail: format!(
                    "user_code is empty, longer than {} characters or has control characters",
                    crate::user_code::MAX_FOREIGN_LENGTH
                ),
            })
        }
    }
    let verification_uri = match (r.verification_uri, r.verification_url) {
        (Some(uri), _) if !uri.is_empty() => uri,
        (_, Some(url)) if !url.is_empty() => {
            notes.insert(PeerViolation::VerificationUrlMember);
            url
        }
        _ => {
            return Err(ResponseError::Malformed {
                status,
                violation: PeerViolation::MissingRequiredField,
                detail: "verification_uri is missing or empty".into(),
            })
        }
    };
    if r.device_code.is_empty() {
        return Err(ResponseError::Malformed {
            status,
            violation: PeerViolation::MissingRequiredField,
            detail: "device_code must not be empty".into(),
        });
    }
    if r.verification_uri_complete.is_none() {
        notes.insert(PeerViolation::MissingVerificationUriComplete);
    }
    if r.expires_in.from_string || r.interval.is_some_and(|i| i.from_string) {
        notes.insert(PeerViolation::ExpiresInAsString);
    }
    if !crate::wire::has_no_store(resp.headers()) {
        notes.insert(PeerViolation::MissingNoStore);
    }
    let answer = DeviceAuthorizationResponse {
        device_code: r.device_code,
        user_code: r.user_code,
        verification_uri,
        verification_uri_complete: r.verification_uri_complete,
        expires_in: r.expires_in.secs,
        interval: r.interval.map(|i| i.secs),
        request_id: r.request_id,
    };
    Ok((answer, notes))
}

/// [`classify_noted`] without the notes.
pub fn classify(resp: &Response<Vec<u8>>) -> Result<DeviceAuthorizationResponse, ResponseError> {
    classify_noted(resp).map(|(r, _)| r)
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

    fn answer(body: &str) -> Response<Vec<u8>> {
        Response::builder()
            .status(200)
            .header(http::header::CACHE_CONTROL, "no-store")
            .body(body.as_bytes().to_vec())
            .unwrap()
    }

    const ROGER: &str = r#"{"device_code":"d","user_code":"WDJBMJHT","verification_uri":"https://a/device",
        "verification_uri_complete":"https://a/device?user_code=WDJBMJHT","expires_in":600,"interval":5,
        "request_id":"r1"}"#;

    /// Roger's own answer: nothing to note.
    #[test]
    fn roger_answer_has_no_notes() {
        let (r, notes) = classify_noted(&answer(ROGER)).unwrap();
        assert!(notes.is_empty(), "{notes:?}");
        assert_eq!((r.expires_in, r.interval), (600, Some(5)));
    }

    /// docs/protocol.md §7, one row each: what a real server sends is read, kept for the wire, and noted.
    #[test]
    fn field_deviations_are_read_and_noted() {
        let cases: [(&str, &str, PeerViolation); 7] = [
            // RFC 8628 §3.2's own example; GitHub, Auth0, Keycloak, oidc-provider.
            ("\"WDJBMJHT\",", "\"WDJB-MJHT\",", PeerViolation::UserCodeNotCanonical),
            ("\"WDJBMJHT\",", "\"wdjb mjht\",", PeerViolation::UserCodeNotCanonical),
            // Azure AD: nine letters and digits.
            ("\"WDJBMJHT\",", "\"BPPVYQZMA\",", PeerViolation::ForeignUserCode),
            // Google, Azure AD v1.
            ("\"verification_uri\"", "\"verification_url\"", PeerViolation::VerificationUrlMember),
            // Azure AD v2, GitHub.
            (
                "\"verification_uri_complete\":\"https://a/device?user_code=WDJBMJHT\",",
                "",
                PeerViolation::MissingVerificationUriComplete,
            ),
            // Azure AD v1, Oracle OCI.
            ("\"expires_in\":600", "\"expires_in\":\"600\"", PeerViolation::ExpiresInAsString),
            ("\"interval\":5", "\"interval\":\"5\"", PeerViolation::ExpiresInAsString),
        ];
        for (from, to, note) in cases {
            let body = ROGER.replacen(from, to, 1);
            assert_ne!(body, ROGER, "{from}");
            let (r, notes) = classify_noted(&answer(&body)).unwrap_or_else(|e| panic!("{to}: {e}"));
            assert!(notes.contains(note), "{to}: {notes:?}");
            assert_eq!(notes.iter().count(), 1, "{to}: {notes:?}");
            assert_eq!((r.expires_in, r.interval), (600, Some(5)), "{to}");
            assert_eq!(r.verification_uri, "https://a/device");
        }
        // The server's value stays for the wire; the display form is Roger's.
        let (r, _) = classify_noted(&answer(&ROGER.replacen("\"WDJBMJHT\",", "\"wdjb-mjht\",", 1))).unwrap();
        assert_eq!(r.user_code.secret(), "wdjb-mjht");
        assert_eq!(r.user_code.display().as_str(), "WDJB-MJHT");
        // No interval (oidc-provider, Spring AS): RFC 8628 §3.2's 5 s applies later, nothing to report.
        let (r, notes) = classify_noted(&answer(&ROGER.replacen(",\"interval\":5", "", 1))).unwrap();
        assert_eq!((r.interval, notes), (None, PeerViolations::NONE));
        // Extra members are ignored (R-DISC-1), Azure's `message` among them.
        let (_, notes) = classify_noted(&answer(&ROGER.replacen("{", "{\"message\":\"x\",\"extra\":[1],", 1))).unwrap();
        assert!(notes.is_empty());
        // No no-store header: noted (R-SEC-1), still used.
        let bare = Response::builder().status(200).body(ROGER.as_bytes().to_vec()).unwrap();
        assert!(classify_noted(&bare).unwrap().1.contains(PeerViolation::MissingNoStore));
    }

    /// What cannot be used safely is refused, with the rule, never the value.
    #[test]
    fn unusable_answers_are_refused() {
        for (body, violation) in [
            (ROGER.replacen("\"WDJBMJHT\",", "\"\",", 1), PeerViolation::BadUserCode),
            (ROGER.replacen("\"WDJBMJHT\",", "\"AB\\u0007CD\",", 1), PeerViolation::BadUserCode),
            (ROGER.replacen("\"d\"", "\"\"", 1), PeerViolation::MissingRequiredField),
            (ROGER.replacen("\"verification_uri\":\"https://a/device\",", "", 1), PeerViolation::MissingRequiredField),
        ] {
            match classify(&answer(&body)) {
                Err(ResponseError::Malformed { violation: v, detail, .. }) => {
                    assert_eq!(v, violation, "{body}");
                    assert!(!detail.contains("WDJB"), "{detail}");
                }
                other => panic!("{body}: {other:?}"),
            }
        }
        // A wrong type is an error, never a guess (docs/protocol.md §7).
        assert!(classify(&answer(&ROGER.replacen("600", "\"soon\"", 1))).is_err());
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
