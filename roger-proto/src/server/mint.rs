//! Minting of secrets from an injected CSPRNG and their SHA-256 handles (PROTOCOL.md §6 R-TOK-3 "stored only as
//! SHA-256 hashes"; RFC 6749 §10.10 "the probability of an attacker guessing generated tokens … MUST be less than
//! or equal to 2^(-128)"; RFC 8628 §5.1).

use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rand_core::CryptoRngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Bytes of entropy in every minted token, code and ticket (256 bits).
pub const SECRET_BYTES: usize = 32;

/// The kinds of minted secrets, each with its typed prefix (so a leaked string says what it is, and a token of one
/// kind can never be mistaken for another).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SecretKind {
    /// Access token (`rat_`).
    AccessToken,
    /// Refresh token (`rrt_`).
    RefreshToken,
    /// Device code (`rdc_`).
    DeviceCode,
    /// Authorization code (`rac_`).
    AuthorizationCode,
    /// Desktop hand-over ticket (`rtk_`).
    Ticket,
    /// Pre-authorised drive URL token (`rdu_`).
    DriveUrl,
    /// CSRF token of the login form (`rcs_`).
    Csrf,
}

impl SecretKind {
    /// The typed prefix.
    pub fn prefix(self) -> &'static str {
        match self {
            Self::AccessToken => "rat_",
            Self::RefreshToken => "rrt_",
            Self::DeviceCode => "rdc_",
            Self::AuthorizationCode => "rac_",
            Self::Ticket => "rtk_",
            Self::DriveUrl => "rdu_",
            Self::Csrf => "rcs_",
        }
    }
}

/// The SHA-256 of a secret, hex-encoded: the only form in which the server stores or looks up a secret.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SecretHash(String);

impl SecretHash {
    /// Hashes a presented secret.
    pub fn of(secret: &str) -> Self {
        let digest = Sha256::digest(secret.as_bytes());
        let mut hex = String::with_capacity(64);
        for b in digest {
            hex.push_str(&format!("{b:02x}"));
        }
        Self(hex)
    }

    /// The hex digest.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A hash is not a secret, but a short form keeps logs readable.
        write!(f, "SecretHash({}…)", &self.0[..self.0.len().min(12)])
    }
}

/// Mints secrets and identifiers from the injected CSPRNG.
pub struct Minter {
    rng: Box<dyn CryptoRngCore + Send>,
}

impl fmt::Debug for Minter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Minter")
    }
}

impl Minter {
    /// A minter over `rng` (a CSPRNG: `rand::rngs::OsRng` in production, a seeded `ChaCha` in tests).
    pub fn new(rng: Box<dyn CryptoRngCore + Send>) -> Self {
        Self { rng }
    }

    /// A fresh secret of `kind`: its prefix and 256 random bits, base64url. Returns the plaintext (to hand out
    /// once) and its hash (to store).
    pub fn secret(&mut self, kind: SecretKind) -> (String, SecretHash) {
        let mut bytes = zeroize::Zeroizing::new([0u8; SECRET_BYTES]);
        self.rng.fill_bytes(bytes.as_mut());
        let plain = format!("{}{}", kind.prefix(), URL_SAFE_NO_PAD.encode(bytes.as_ref()));
        let hash = SecretHash::of(&plain);
        (plain, hash)
    }

    /// A user code: 8 characters of `BCDFGHJKLMNPQRSTVWXZ` (RFC 8628 §6.1), drawn without modulo bias.
    pub fn user_code(&mut self) -> String {
        let alphabet = crate::user_code::ALPHABET;
        let mut out = String::with_capacity(crate::user_code::LENGTH);
        while out.len() < crate::user_code::LENGTH {
            let mut b = [0u8; 1];
            self.rng.fill_bytes(&mut b);
            // 240 = 12 * 20: reject the top 16 values so every letter is equally likely.
            if b[0] < 240 {
                out.push(alphabet[usize::from(b[0]) % alphabet.len()] as char);
            }
        }
        out
    }

    /// A non-secret identifier with a readable prefix (`dev_…`, `job_…`), 96 random bits.
    pub fn id(&mut self, prefix: &str) -> String {
        let mut bytes = [0u8; 12];
        self.rng.fill_bytes(&mut bytes);
        format!("{prefix}_{}", URL_SAFE_NO_PAD.encode(bytes).replace(['-', '_'], "x"))
    }

    /// Random bytes (salts).
    pub fn fill(&mut self, buf: &mut [u8]) {
        self.rng.fill_bytes(buf);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn minter() -> Minter {
        Minter::new(Box::new(rand::rngs::StdRng::seed_from_u64(7)))
    }

    /// RFC 6749 §10.10: ≥ 128 bits (we mint 256) with a typed prefix; stored as SHA-256.
    #[test]
    fn secrets_are_long_prefixed_and_hashed() {
        let mut m = minter();
        let (a, ha) = m.secret(SecretKind::AccessToken);
        let (b, _) = m.secret(SecretKind::AccessToken);
        assert!(a.starts_with("rat_"));
        assert_eq!(a.len(), 4 + 43);
        assert_ne!(a, b);
        assert_eq!(ha, SecretHash::of(&a));
        assert_eq!(ha.as_str().len(), 64);
        assert!(!format!("{ha:?}").contains(&a));
    }

    /// RFC 8628 §6.1: user codes from the consonant alphabet, roughly uniform.
    #[test]
    fn user_codes_are_uniform_over_the_alphabet() {
        let mut m = minter();
        let mut counts = [0usize; 20];
        for _ in 0..2000 {
            let c = m.user_code();
            assert!(crate::user_code::is_wire_form(&c), "{c}");
            for ch in c.bytes() {
                counts[crate::user_code::ALPHABET.iter().position(|a| *a == ch).unwrap()] += 1;
            }
        }
        // 16000 letters over 20 symbols: 800 expected each; a biased draw would be far off.
        assert!(counts.iter().all(|c| (650..950).contains(c)), "{counts:?}");
    }

    #[test]
    fn ids_are_readable() {
        let mut m = minter();
        let id = m.id("dev");
        assert!(id.starts_with("dev_") && id.len() == 20, "{id}");
        assert!(crate::push::Id::is_valid(&id));
        assert!(!id[4..].contains('.'));
    }
}
