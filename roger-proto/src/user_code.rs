//! User-code formatting and normalisation (RFC 8628 §6.1, R-QR-1).
//!
//! Roger user codes are 8 characters from the consonant alphabet `BCDFGHJKLMNPQRSTVWXZ` (RFC 8628 §6.1: "a
//! limited character set … with no vowels" avoids words and ambiguous glyphs). On the wire and in the QR they are
//! upper case with no separator; on the panel they are shown as `XXXX-XXXX`.
//!
//! Codes from other servers differ (docs/protocol.md §7): RFC 8628 §3.2's own example is `WDJB-MJHT`, GitHub sends
//! `BCE3-88D0`, Azure AD nine letters and digits. [`classify_server_code`] tells a client which it got: a Roger code
//! in another spelling is still shown as `XXXX-XXXX`, a foreign code verbatim, and the server's value always goes
//! back on the wire unchanged.

/// The alphabet of Roger user codes: 20 consonants, no vowels and no `Y` (RFC 8628 §6.1).
pub const ALPHABET: &[u8; 20] = b"BCDFGHJKLMNPQRSTVWXZ";

/// Length of a Roger user code in characters (20^8 ≈ 2^34.6 combinations, RFC 8628 §6.1 example).
pub const LENGTH: usize = 8;

/// The longest user code from another server that a panel shows (RFC 8628 §6.1 asks for codes a person types;
/// Google documents up to 15 characters). Longer or unprintable codes are refused as unsafe to display.
pub const MAX_FOREIGN_LENGTH: usize = 64;

/// The characters a user-code comparison ignores (RFC 8628 §6.1: "characters like hyphens").
fn is_separator(c: char) -> bool {
    c.is_whitespace() || matches!(c, '-' | '–' | '—' | '.' | '_' | '/' | ':')
}

/// Why user input is not a valid user code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UserCodeError {
    /// After removing separators the input does not have [`LENGTH`] characters.
    #[error("a user code has {LENGTH} characters, got {0}")]
    WrongLength(usize),
    /// A character outside [`ALPHABET`] (after upper-casing).
    #[error("character {0:?} is not part of the user-code alphabet")]
    BadCharacter(char),
}

/// Normalises what a person typed into the wire form (RFC 8628 §6.1: "the authorization server SHOULD ignore
/// characters like hyphens … and SHOULD be case insensitive").
///
/// Hyphens, spaces, dots, underscores and other punctuation/whitespace are dropped; letters are upper-cased.
/// Returns the 8-character wire form or says why the input cannot be a user code.
pub fn normalize(input: &str) -> Result<String, UserCodeError> {
    let mut out = String::with_capacity(LENGTH);
    let mut count = 0usize;
    for c in input.chars() {
        if is_separator(c) {
            continue;
        }
        count += 1;
        let up = c.to_ascii_uppercase();
        if !up.is_ascii() || !in_alphabet(up as u8) {
            return Err(UserCodeError::BadCharacter(c));
        }
        if count <= LENGTH {
            out.push(up);
        }
    }
    if count != LENGTH {
        return Err(UserCodeError::WrongLength(count));
    }
    Ok(out)
}

/// A user code reduced for comparison as RFC 8628 §6.1 recommends, whatever its alphabet: separators and
/// whitespace dropped, ASCII letters upper-cased. Two spellings of one code compare equal this way (`wdjb-mjht` and
/// `WDJBMJHT`, `bce3-88d0` and `BCE388D0`).
pub fn canonical(code: &str) -> String {
    code.chars().filter(|c| !is_separator(*c)).map(|c| c.to_ascii_uppercase()).collect()
}

/// What kind of user code a server sent (docs/protocol.md §7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerCodeForm {
    /// Roger's wire form: 8 characters of [`ALPHABET`].
    Wire,
    /// A Roger code in another spelling (separators, spaces, lower case), as RFC 8628 §3.2's example: shown as
    /// `XXXX-XXXX`.
    RogerSpelling,
    /// Another length or alphabet (another server's codes): shown verbatim.
    Foreign,
    /// Nothing a panel can show safely: empty, longer than [`MAX_FOREIGN_LENGTH`] characters, or with control
    /// characters.
    Unusable,
}

/// Classifies the `user_code` of a device authorization answer (RFC 8628 §3.2, §6.1).
pub fn classify_server_code(code: &str) -> ServerCodeForm {
    if is_wire_form(code) {
        return ServerCodeForm::Wire;
    }
    // A Roger code in any spelling is shown rebuilt as `XXXX-XXXX`, so whatever separators it came with (a tab,
    // padding) never reach the panel.
    if normalize(code).is_ok() {
        return ServerCodeForm::RogerSpelling;
    }
    let shown = code.trim();
    if shown.is_empty() || shown.chars().count() > MAX_FOREIGN_LENGTH || shown.chars().any(char::is_control) {
        ServerCodeForm::Unusable
    } else {
        ServerCodeForm::Foreign
    }
}

/// Whether `b` is one of the 20 letters of [`ALPHABET`] (as ranges: B–D, F–H, J–N, P–T, V–X, Z).
pub fn in_alphabet(b: u8) -> bool {
    matches!(b, b'B'..=b'D' | b'F'..=b'H' | b'J'..=b'N' | b'P'..=b'T' | b'V'..=b'X' | b'Z')
}

/// Whether `code` is already in wire form: exactly 8 characters of [`ALPHABET`].
pub fn is_wire_form(code: &str) -> bool {
    code.len() == LENGTH && code.bytes().all(in_alphabet)
}

/// Formats a code for display: a Roger code, in whatever spelling the server sent it, as `XXXX-XXXX` (RFC 8628
/// §6.1 "a dash … to improve readability", R-QR-1); any other code verbatim, trimmed, so a foreign server's code is
/// shown exactly as its verification page expects it (docs/protocol.md §7).
pub fn format_for_display(code: &str) -> String {
    match normalize(code) {
        Ok(wire) => format!("{}-{}", &wire[..4], &wire[4..]),
        Err(_) => code.trim().to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// RFC 8628 §6.1: hyphens ignored, case-insensitive.
    #[test]
    fn normalises_hyphen_and_case() {
        assert_eq!(normalize("wdjb-mjht").unwrap(), "WDJBMJHT");
        assert_eq!(normalize(" WDJB MJHT ").unwrap(), "WDJBMJHT");
        assert_eq!(normalize("WDJBMJHT").unwrap(), "WDJBMJHT");
    }

    #[test]
    fn rejects_vowels_and_wrong_length() {
        assert_eq!(normalize("WDJA-MJHT"), Err(UserCodeError::BadCharacter('A')));
        assert_eq!(normalize("WDJB-MJH"), Err(UserCodeError::WrongLength(7)));
        assert_eq!(normalize("WDJB-MJHTT"), Err(UserCodeError::WrongLength(9)));
        assert_eq!(normalize(""), Err(UserCodeError::WrongLength(0)));
        assert!(matches!(normalize("WDJB-MJHÄ"), Err(UserCodeError::BadCharacter('Ä'))));
    }

    /// R-QR-1: the panel shows `XXXX-XXXX`.
    /// The range test agrees with the alphabet on every byte.
    #[test]
    fn alphabet_ranges_match() {
        for b in 0..=255u8 {
            assert_eq!(in_alphabet(b), ALPHABET.contains(&b), "byte {b}");
        }
    }

    #[test]
    fn display_form() {
        assert_eq!(format_for_display("WDJBMJHT"), "WDJB-MJHT");
        assert_eq!(format_for_display("ODD"), "ODD");
        // RFC 8628 §3.2's example, and the same code in lower case with a space: one display form.
        assert_eq!(format_for_display("WDJB-MJHT"), "WDJB-MJHT");
        assert_eq!(format_for_display("wdjb mjht"), "WDJB-MJHT");
        // Other servers' codes (GitHub, Azure AD, Google) verbatim.
        assert_eq!(format_for_display("BCE3-88D0"), "BCE3-88D0");
        assert_eq!(format_for_display(" BPPVYQZMA "), "BPPVYQZMA");
        assert_eq!(format_for_display("QCP-GZV-LGZ"), "QCP-GZV-LGZ");
    }

    /// docs/protocol.md §7: what a server's user code is taken for.
    #[test]
    fn server_code_forms() {
        assert_eq!(classify_server_code("WDJBMJHT"), ServerCodeForm::Wire);
        let padded = format!("WDJB{}MJHT", " ".repeat(MAX_FOREIGN_LENGTH));
        for roger in ["WDJB-MJHT", "wdjb-mjht", "WDJB MJHT", "wdjbmjht", "WDJB\tMJHT", "bcd.fghW\nk", padded.as_str()] {
            assert_eq!(classify_server_code(roger), ServerCodeForm::RogerSpelling, "{roger}");
        }
        for foreign in ["BCE3-88D0", "BPPVYQZMA", "QCP-GZV-LGZ", "123456", "ÄÖÜ-1"] {
            assert_eq!(classify_server_code(foreign), ServerCodeForm::Foreign, "{foreign}");
        }
        for bad in ["", "   ", "AB\nCD", &"X".repeat(MAX_FOREIGN_LENGTH + 1)] {
            assert_eq!(classify_server_code(bad), ServerCodeForm::Unusable, "{bad:?}");
        }
        assert_eq!(canonical("bce3-88d0"), "BCE388D0");
        assert_eq!(canonical("WDJB–MJHT"), "WDJBMJHT");
    }

    proptest! {
        #[test]
        fn display_then_normalize_round_trips(idx in proptest::collection::vec(0usize..20, LENGTH)) {
            let code: String = idx.iter().map(|i| ALPHABET[*i] as char).collect();
            prop_assert!(is_wire_form(&code));
            let shown = format_for_display(&code);
            prop_assert_eq!(normalize(&shown).unwrap(), code.clone());
            prop_assert_eq!(normalize(&shown.to_lowercase()).unwrap(), code);
        }

        #[test]
        fn normalize_never_panics(s in ".*") {
            let _ = normalize(&s);
            let _ = format_for_display(&s);
            let _ = classify_server_code(&s);
        }

        /// Any spelling of a Roger code (separators anywhere, any case) is shown as the one `XXXX-XXXX` form.
        #[test]
        fn every_spelling_displays_alike(idx in proptest::collection::vec(0usize..20, LENGTH), seps in proptest::collection::vec(proptest::option::of("[ -]"), LENGTH), lower in proptest::collection::vec(any::<bool>(), LENGTH)) {
            let wire: String = idx.iter().map(|i| ALPHABET[*i] as char).collect();
            let mut spelt = String::new();
            for ((c, sep), low) in wire.chars().zip(&seps).zip(&lower) {
                spelt.push(if *low { c.to_ascii_lowercase() } else { c });
                if let Some(s) = sep { spelt.push_str(s); }
            }
            prop_assert_eq!(format_for_display(&spelt), format_for_display(&wire));
            prop_assert_eq!(canonical(&spelt), wire.clone());
            prop_assert!(matches!(classify_server_code(&spelt), ServerCodeForm::Wire | ServerCodeForm::RogerSpelling));
        }
    }
}
