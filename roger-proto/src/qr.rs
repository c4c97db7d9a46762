//! The QR payload (`verification_uri_complete`, RFC 8628 §3.3.1) and the phone's origin check (R-QR-4).

use crate::secret::UserCode;

/// Why a scanned QR is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum QrError {
    /// Not a URL.
    #[error("the QR does not hold a URL")]
    NotAUrl,
    /// R-QR-4: the QR points at another origin than the phone's region API (a phishing sticker).
    #[error("the QR points at {found}, not at this region's API {expected} (R-QR-4)")]
    ForeignOrigin {
        /// The region's API origin.
        expected: String,
        /// The QR's origin.
        found: String,
    },
    /// The path is not `/device`.
    #[error("the QR is not a Roger device-code link")]
    WrongPath,
    /// No or an invalid `user_code` parameter.
    #[error("the QR carries no valid user code: {0}")]
    BadUserCode(String),
}

/// The path of the verification page under the API origin (PROTOCOL.md §5.2).
pub const VERIFICATION_PATH: &str = "/device";

/// Builds the QR payload `{api}/device?user_code=XXXXXXXX` (upper case, no hyphen; PROTOCOL.md §5.2).
pub fn verification_uri_complete(api: &str, user_code: &UserCode) -> String {
    format!("{}{VERIFICATION_PATH}?user_code={}", api.trim_end_matches('/'), user_code.secret())
}

/// Reads a scanned QR: checks its origin against the configured API origin (R-QR-4, compared as origins:
/// scheme, host and port) and the path, and returns the normalised user code (RFC 8628 §6.1).
pub fn parse(payload: &str, expected_api: &str) -> Result<UserCode, QrError> {
    let url = url::Url::parse(payload.trim()).map_err(|_| QrError::NotAUrl)?;
    let expected = url::Url::parse(expected_api).map_err(|_| QrError::NotAUrl)?.origin().ascii_serialization();
    let found = url.origin().ascii_serialization();
    if found != expected || !url.username().is_empty() || url.password().is_some() {
        return Err(QrError::ForeignOrigin { expected, found });
    }
    if url.path() != VERIFICATION_PATH {
        return Err(QrError::WrongPath);
    }
    let mut code = None;
    for (k, v) in url.query_pairs() {
        if k == "user_code" {
            if code.is_some() {
                return Err(QrError::BadUserCode("user_code appears twice".into()));
            }
            code = Some(v.into_owned());
        }
    }
    let code = code.ok_or_else(|| QrError::BadUserCode("missing".into()))?;
    let normalised = crate::user_code::normalize(&code).map_err(|e| QrError::BadUserCode(e.to_string()))?;
    Ok(UserCode::new(normalised))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// R-QR-4: same origin accepted, anything else refused.
    #[test]
    fn origin_check() {
        let api = "https://eu.roger.example";
        assert_eq!(parse("https://eu.roger.example/device?user_code=WDJBMJHT", api).unwrap().secret(), "WDJBMJHT");
        assert_eq!(parse("https://eu.roger.example:443/device?user_code=wdjb-mjht", api).unwrap().secret(), "WDJBMJHT");
        for bad in [
            "https://eu.roger.example.evil/device?user_code=WDJBMJHT",
            "http://eu.roger.example/device?user_code=WDJBMJHT",
            "https://eu.roger.example:8443/device?user_code=WDJBMJHT",
            "https://evil@eu.roger.example/device?user_code=WDJBMJHT",
        ] {
            assert!(matches!(parse(bad, api), Err(QrError::ForeignOrigin { .. })), "{bad}");
        }
        assert_eq!(parse("https://eu.roger.example/login?user_code=WDJBMJHT", api), Err(QrError::WrongPath));
        assert!(matches!(parse("https://eu.roger.example/device", api), Err(QrError::BadUserCode(_))));
        assert!(matches!(
            parse("https://eu.roger.example/device?user_code=WDJBMJHT&user_code=BBBBBBBB", api),
            Err(QrError::BadUserCode(_))
        ));
        assert_eq!(parse("not a url", api), Err(QrError::NotAUrl));
    }

    proptest! {
        /// RFC 8628 §3.3.1 payload round trip.
        #[test]
        fn round_trip(idx in proptest::collection::vec(0usize..20, 8), port in 1u16..) {
            let code: String = idx.iter().map(|i| crate::user_code::ALPHABET[*i] as char).collect();
            let api = format!("https://h.example:{port}");
            let payload = verification_uri_complete(&api, &UserCode::new(code.clone()));
            let parsed = parse(&payload, &api).unwrap();
            prop_assert_eq!(parsed.secret(), code.as_str());
        }

        #[test]
        fn never_panics(s in ".*") {
            let _ = parse(&s, "https://a.example");
        }
    }
}
