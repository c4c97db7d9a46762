//! User-code formatting and normalisation (RFC 8628 §6.1, R-QR-1).
//!
//! Roger user codes are 8 characters from the consonant alphabet `BCDFGHJKLMNPQRSTVWXZ` (RFC 8628 §6.1: "a
//! limited character set … with no vowels" avoids words and ambiguous glyphs). On the wire and in the QR they are
//! upper case with no separator; on the panel they are shown as `XXXX-XXXX`.

/// The alphabet of Roger user codes: 20 consonants, no vowels and no `Y` (RFC 8628 §6.1).
pub const ALPHABET: &[u8; 20] = b"BCDFGHJKLMNPQRSTVWXZ";

/// Length of a Roger user code in characters (20^8 ≈ 2^34.6 combinations, RFC 8628 §6.1 example).
pub const LENGTH: usize = 8;

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
        if c.is_whitespace() || matches!(c, '-' | '–' | '—' | '.' | '_' | '/' | ':') {
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

/// Whether `b` is one of the 20 letters of [`ALPHABET`] (as ranges: B–D, F–H, J–N, P–T, V–X, Z).
pub fn in_alphabet(b: u8) -> bool {
    matches!(b, b'B'..=b'D' | b'F'..=b'H' | b'J'..=b'N' | b'P'..=b'T' | b'V'..=b'X' | b'Z')
}

/// Whether `code` is already in wire form: exactly 8 characters of [`ALPHABET`].
pub fn is_wire_form(code: &str) -> bool {
    code.len() == LENGTH && code.bytes().all(in_alphabet)
}

/// Formats a wire-form code for display as `XXXX-XXXX` (RFC 8628 §6.1 "a dash … to improve readability", R-QR-1).
///
/// Input that is not 8 characters long is returned unchanged, so a server's unexpected code is still shown.
pub fn format_for_display(code: &str) -> String {
    if code.len() == LENGTH && code.is_ascii() {
        format!("{}-{}", &code[..4], &code[4..])
    } else {
        code.to_owned()
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
        }
    }
}
