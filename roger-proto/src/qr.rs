//! The QR payload (`verification_uri_complete`, RFC 8628 §3.3.1) and the origin checks of R-QR-4: the phone's
//! (it refuses to follow a scanned QR on another origin) and the MFP's (it refuses to display one).

use crate::secret::{UserCode, VerificationUriComplete};

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
    /// The payload is well formed but for another user code than the one it came with (the MFP's check).
    #[error("the QR carries another user code than its answer")]
    OtherUserCode,
}

/// The path of the verification page under the API origin (PROTOCOL.md §5.2).
pub const VERIFICATION_PATH: &str = "/device";

/// Builds the QR payload `{api}/device?user_code=XXXXXXXX` (upper case, no hyphen; docs/protocol.md §3.7). The code
/// goes in as the server issued it, percent-encoded when it is not in Roger's wire form (a foreign server's code).
pub fn verification_uri_complete(api: &str, user_code: &UserCode) -> String {
    let code: String = form_urlencoded::byte_serialize(user_code.secret().as_bytes()).collect();
    format!("{}{VERIFICATION_PATH}?user_code={code}", api.trim_end_matches('/'))
}

/// Reads a scanned QR: checks its origin against the configured API origin (R-QR-4, compared as origins:
/// scheme, host and port) and the path, and returns the normalised user code (RFC 8628 §6.1).
pub fn parse(payload: &str, expected_api: &str) -> Result<UserCode, QrError> {
    let url = on_origin(payload, expected_api)?;
    if url.path() != VERIFICATION_PATH {
        return Err(QrError::WrongPath);
    }
    let code = user_code_param(&url)?;
    let normalised = crate::user_code::normalize(&code).map_err(|e| QrError::BadUserCode(e.to_string()))?;
    Ok(UserCode::new(normalised))
}

/// Checks a `verification_uri_complete` a panel is about to display (R-QR-4, MFP side; RFC 8628 §5.4 remote
/// phishing): it must be on the API origin (same scheme, host and port, no user info), its path `/device` or the
/// path of the answer's own `verification_uri` on that origin (another server's verification page, docs/protocol.md
/// §7), with one `user_code` parameter that is the answer's code (R-QR-1: the QR and the text beside it are one
/// code), compared as RFC 8628 §6.1 recommends ([`crate::user_code::canonical`]), so `WDJB-MJHT` in the QR matches
/// `WDJBMJHT` in the answer and a foreign server's `BCE3-88D0` matches itself.
pub fn check_display_payload(
    payload: &str,
    api: &str,
    verification_uri: &str,
    user_code: &UserCode,
) -> Result<(), QrError> {
    let url = on_origin(payload, api)?;
    let page = on_origin(verification_uri, api).ok().map(|v| v.path().to_owned());
    if url.path() != VERIFICATION_PATH && page.as_deref() != Some(url.path()) {
        return Err(QrError::WrongPath);
    }
    let carried = user_code_param(&url)?;
    if crate::user_code::canonical(&carried) != crate::user_code::canonical(user_code.secret()) {
        return Err(QrError::OtherUserCode);
    }
    Ok(())
}

/// What an MFP shows for a code ([`displayable`]): the QR, the verification page as text, and why something the
/// server sent was not shown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Displayable {
    /// The QR payload, if there is one to show.
    pub qr: Option<VerificationUriComplete>,
    /// The verification page to show in text (beside or instead of the QR), if it is on the API origin.
    pub page: Option<String>,
    /// Why a received payload or page was not shown (the caller reports [`crate::PeerViolation::ForeignQrOrigin`]).
    pub refused: Option<QrError>,
}

/// What an MFP displays for a code (R-QR-1, R-QR-4, docs/protocol.md §7):
/// * the QR: the `verification_uri_complete` it received when [`check_display_payload`] accepts it. A refused one
///   (another origin, another code) is replaced by the canonical `{api}/device?user_code=…` built from the configured
///   API origin (docs/protocol.md §3.7) when the code is a Roger code, so the QR points where the phone accepts it
///   and the code itself (issued by the API) stays usable; a foreign code gets no QR, since that page would not
///   exist on its server. No received payload (OPTIONAL in RFC 8628 §3.2) gives no QR either;
/// * the page: `verification_uri` when it is on the API origin, for manual entry (RFC 8628 §3.3); a page on another
///   origin, or not a URL, is not shown (the same R-QR-4 reasoning as for the QR, and never a `javascript:` or
///   plain-HTTP link the API itself does not use). The user code is always shown.
pub fn displayable(
    received: Option<&VerificationUriComplete>,
    verification_uri: &str,
    api: &str,
    user_code: &UserCode,
) -> Displayable {
    let mut refused = None;
    let qr = match received.map(|uri| (uri, check_display_payload(uri.secret(), api, verification_uri, user_code))) {
        None => None,
        Some((uri, Ok(()))) => Some(uri.clone()),
        Some((_, Err(e))) => {
            refused = Some(e);
            crate::user_code::normalize(user_code.secret())
                .is_ok()
                .then(|| VerificationUriComplete::new(verification_uri_complete(api, user_code)))
        }
    };
    let page = match on_origin(verification_uri, api) {
        Ok(_) => Some(verification_uri.to_owned()),
        Err(e) => {
            refused.get_or_insert(e);
            None
        }
    };
    Displayable { qr, page, refused }
}

/// `url`, parsed, if it is on the origin of `api` (R-QR-4: scheme, host and port; no user info).
fn on_origin(url: &str, api: &str) -> Result<url::Url, QrError> {
    let url = url::Url::parse(url.trim()).map_err(|_| QrError::NotAUrl)?;
    let expected = url::Url::parse(api).map_err(|_| QrError::NotAUrl)?.origin().ascii_serialization();
    let found = url.origin().ascii_serialization();
    if found != expected || !url.username().is_empty() || url.password().is_some() {
        return Err(QrError::ForeignOrigin { expected, found });
    }
    Ok(url)
}

/// The one `user_code` query parameter of a QR payload (RFC 8628 §3.3.1).
fn user_code_param(url: &url::Url) -> Result<String, QrError> {
    let mut code = None;
    for (k, v) in url.query_pairs() {
        if k == "user_code" {
            if code.is_some() {
                return Err(QrError::BadUserCode("user_code appears twice".into()));
            }
            code = Some(v.into_owned());
        }
    }
    code.ok_or_else(|| QrError::BadUserCode("missing".into()))
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

    /// R-QR-4 (MFP side): only a payload on the API origin for this code is displayed; anything else is replaced by
    /// the canonical payload (Roger codes) or by none (foreign codes), and the refusal is returned.
    #[test]
    fn display_payload_on_api_origin_only() {
        let api = "https://eu.roger.example";
        let code = UserCode::new("WDJBMJHT");
        let own = VerificationUriComplete::new("https://eu.roger.example/device?user_code=WDJBMJHT");
        let canonical = "https://eu.roger.example/device?user_code=WDJBMJHT";
        let page = "https://eu.roger.example/device";
        let shown = |received: Option<&VerificationUriComplete>, page: &str, code: &UserCode| {
            let d = displayable(received, page, api, code);
            (d.qr.map(|q| q.secret().to_owned()), d.page, d.refused)
        };
        let ok = |qr: &str| (Some(qr.to_owned()), Some(page.to_owned()), None);
        assert_eq!(shown(Some(&own), page, &code), ok(own.secret()));
        // Absent (RFC 8628 §3.2 OPTIONAL): no QR, nothing refused; the panel shows the page and the code.
        assert_eq!(shown(None, page, &code), (None, Some(page.to_owned()), None));
        // The received spelling is kept when it is the same code (RFC 8628 §6.1 normalisation), whichever side
        // carries the separators.
        let spelled = VerificationUriComplete::new("https://eu.roger.example:443/device?user_code=wdjb-mjht");
        assert_eq!(shown(Some(&spelled), page, &code), ok(spelled.secret()));
        assert_eq!(shown(Some(&own), page, &UserCode::new("WDJB-MJHT")), ok(own.secret()));
        // A foreign server's code and verification page on the API origin (oidc-provider, Keycloak).
        let foreign = UserCode::new("BCE3-88D0");
        let their_page = "https://eu.roger.example/realms/x/device";
        let theirs = VerificationUriComplete::new(format!("{their_page}?user_code=BCE3-88D0"));
        assert_eq!(
            shown(Some(&theirs), their_page, &foreign),
            (Some(theirs.secret().to_owned()), Some(their_page.to_owned()), None)
        );
        // A foreign code whose page is on another host (Google): neither its QR nor its page is shown, and no
        // canonical QR either (that page would not exist there): the code alone, and the refusal.
        let google = UserCode::new("QCP-GZV-LGZ");
        let elsewhere = VerificationUriComplete::new("https://www.google.com/device?user_code=QCP-GZV-LGZ");
        let (qr, page_shown, refused) = shown(Some(&elsewhere), "https://www.google.com/device", &google);
        assert_eq!((qr, page_shown), (None, None));
        assert!(matches!(refused, Some(QrError::ForeignOrigin { .. })));
        // A page that is not HTTPS on the API origin, or not a link at all, is never shown.
        for bad_page in ["http://eu.roger.example/device", "javascript:alert(1)", "https://phish.example/device"] {
            let d = displayable(None, bad_page, api, &code);
            assert_eq!(d.page, None, "{bad_page}");
            assert!(d.refused.is_some(), "{bad_page}");
        }
        for (bad, why) in [
            ("https://phish.example/device?user_code=WDJBMJHT", "foreign"),
            ("http://eu.roger.example/device?user_code=WDJBMJHT", "foreign"),
            ("https://eu.roger.example.evil/device?user_code=WDJBMJHT", "foreign"),
            ("https://eu.roger.example/login?user_code=WDJBMJHT", "path"),
            ("https://eu.roger.example/device?user_code=BBBBBBBB", "other"),
            ("https://eu.roger.example/device", "code"),
            ("javascript:alert(1)", "foreign"),
            ("no url at all", "url"),
        ] {
            let d = displayable(Some(&VerificationUriComplete::new(bad)), page, api, &code);
            let (shown, refused) = (d.qr, d.refused);
            assert_eq!(shown.as_ref().map(|s| s.secret()), Some(canonical), "{bad}");
            let refused = refused.unwrap_or_else(|| panic!("{bad} was accepted"));
            let kind = match refused {
                QrError::ForeignOrigin { .. } => "foreign",
                QrError::WrongPath => "path",
                QrError::OtherUserCode => "other",
                QrError::BadUserCode(_) => "code",
                QrError::NotAUrl => "url",
            };
            assert_eq!(kind, why, "{bad}");
        }
    }

    proptest! {
        /// R-QR-4: whatever the server sends, a displayed payload is on the API origin and carries the code.
        #[test]
        fn displayed_payload_always_on_api_origin(received in proptest::option::of(".*"), idx in proptest::collection::vec(0usize..20, 8)) {
            let api = "https://h.example:8443";
            let code: String = idx.iter().map(|i| crate::user_code::ALPHABET[*i] as char).collect();
            let code = UserCode::new(code);
            let received = received.map(VerificationUriComplete::new);
            let d = displayable(received.as_ref(), "https://h.example:8443/device", api, &code);
            prop_assert_eq!(d.qr.is_some(), received.is_some());
            prop_assert_eq!(d.page.as_deref(), Some("https://h.example:8443/device"));
            if let Some(shown) = d.qr {
                prop_assert_eq!(parse(shown.secret(), api), Ok(code));
            }
        }

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
