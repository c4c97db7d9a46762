//! PKCE with S256 (RFC 7636), used by the phone's app login (PROTOCOL.md §4).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rand_core::{CryptoRng, RngCore};
use sha2::{Digest, Sha256};

use crate::secret::PkceVerifier;

/// The only challenge method Roger accepts (`code_challenge_methods_supported: ["S256"]`).
pub const METHOD_S256: &str = "S256";

/// Why a string is not a valid PKCE verifier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PkceError {
    /// RFC 7636 §4.1: "with a minimum length of 43 characters and a maximum length of 128 characters".
    #[error("a code verifier has 43 to 128 characters, got {0}")]
    Length(usize),
    /// RFC 7636 §4.1: only `[A-Z] / [a-z] / [0-9] / "-" / "." / "_" / "~"`.
    #[error("a code verifier may only contain unreserved characters")]
    Charset,
}

/// Creates a fresh verifier from 32 bytes of the caller's CSPRNG, base64url without padding (43 characters),
/// as RFC 7636 §4.1 recommends ("a 32-octet sequence … base64url-encoded").
pub fn new_verifier<R: RngCore + CryptoRng>(rng: &mut R) -> PkceVerifier {
    let mut bytes = zeroize::Zeroizing::new([0u8; 32]);
    rng.fill_bytes(bytes.as_mut());
    PkceVerifier::new(URL_SAFE_NO_PAD.encode(bytes.as_ref()))
}

/// Checks a verifier against RFC 7636 §4.1 (length 43–128, unreserved characters only).
pub fn validate_verifier(verifier: &str) -> Result<(), PkceError> {
    let len = verifier.len();
    if !(43..=128).contains(&len) {
        return Err(PkceError::Length(len));
    }
    if !verifier.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')) {
        return Err(PkceError::Charset);
    }
    Ok(())
}

/// `code_challenge = BASE64URL-ENCODE(SHA256(ASCII(code_verifier)))` (RFC 7636 §4.2, S256).
pub fn challenge_s256(verifier: &PkceVerifier) -> String {
    let digest = Sha256::digest(verifier.secret().as_bytes());
    URL_SAFE_NO_PAD.encode(digest)
}

/// Server side of RFC 7636 §4.6: recompute the S256 challenge and compare in constant time.
pub fn verify_s256(verifier: &str, challenge: &str) -> bool {
    use subtle::ConstantTimeEq;
    if validate_verifier(verifier).is_err() {
        return false;
    }
    let digest = Sha256::digest(verifier.as_bytes());
    let computed = URL_SAFE_NO_PAD.encode(digest);
    computed.as_bytes().ct_eq(challenge.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7636 Appendix B test vector.
    #[test]
    fn rfc7636_appendix_b_vector() {
        let v = PkceVerifier::new("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk");
        assert_eq!(challenge_s256(&v), "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM");
        assert!(verify_s256(v.secret(), "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"));
        assert!(!verify_s256(v.secret(), "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cN"));
    }

    /// RFC 7636 §4.1 length and charset.
    #[test]
    fn verifier_rules() {
        let mut rng = rand::rngs::OsRng;
        let v = new_verifier(&mut rng);
        assert_eq!(v.len(), 43);
        assert_eq!(validate_verifier(v.secret()), Ok(()));
        assert_eq!(validate_verifier("short"), Err(PkceError::Length(5)));
        assert_eq!(validate_verifier(&"a".repeat(129)), Err(PkceError::Length(129)));
        assert_eq!(validate_verifier(&format!("{}+", "a".repeat(42))), Err(PkceError::Charset));
        assert!(!verify_s256("short", "x"));
    }
}
