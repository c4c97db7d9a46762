//! Minting of secrets from an injected CSPRNG and their SHA-256 handles (PROTOCOL.md §6 R-TOK-3 "stored only as
//! SHA-256 hashes"; RFC 6749 §10.10 "the probability of an attacker guessing generated tokens … MUST be less than
//! or equal to 2^(-128)"; RFC 8628 §5.1).

use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rand_core::CryptoRngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::model::WireUserCode;

/// Bytes of entropy in every minted token, code and ticket (256 bits).
pub const SECRET_BYTES: usize = 32;

/// Random bytes of a refresh-token family handle (120 bits: 20 base64url characters, no padding).
pub const FAMILY_HANDLE_BYTES: usize = 15;

/// Characters of a refresh token: `rrt_`, the 20-character family handle and 43 characters of 256 random bits.
pub const REFRESH_TOKEN_LEN: usize = 4 + 20 + 43;

/// The family handle of a presented refresh token (see [`Minter::refresh_token`]), or `None` if the token does not
/// have the shape this server mints (then it is simply unknown: `invalid_grant`).
pub fn family_handle_of(token: &str) -> Option<&str> {
    let rest = token.strip_prefix(SecretKind::RefreshToken.prefix())?;
    (token.len() == REFRESH_TOKEN_LEN && rest.bytes().all(|b| BASE64URL[usize::from(b)])).then(|| &rest[..20])
}

/// Which bytes are base64url characters (RFC 4648 §5): one table load per byte of a presented token.
const BASE64URL: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        table[b] = c.is_ascii_alphanumeric() || c == b'-' || c == b'_';
        b += 1;
    }
    table
};

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

/// The SHA-256 of a secret: the only form in which the server stores or looks up a secret. Kept as the 32 raw
/// bytes (a `Copy` value, no heap); serialised as 64 lowercase hex digits, so stores and `/sim/store` show the
/// familiar form.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct SecretHash([u8; 32]);

/// Hashes as its first eight bytes: a SHA-256 digest is uniformly distributed already, and keys come only from
/// secrets the server minted itself (a presented secret is only looked up), so there is nothing to flood.
impl std::hash::Hash for SecretHash {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        let mut first = [0u8; 8];
        first.copy_from_slice(&self.0[..8]);
        state.write_u64(u64::from_le_bytes(first));
    }
}

/// The [`Hasher`](std::hash::Hasher) of [`SecretHashMap`]: passes [`SecretHash`]'s eight bytes through instead of
/// running SipHash over them (the digest is already a good hash). Other input is folded in, so the type stays a
/// correct hasher for any key, just not a good one.
#[derive(Debug, Clone, Copy, Default)]
pub struct SecretHashHasher(u64);

impl std::hash::Hasher for SecretHashHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.0 = self.0.rotate_left(29) ^ u64::from_le_bytes(word).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// A table keyed by secret hash: the tables that grow with traffic (access tokens) are hash tables, one probe
/// per lookup and no node shifting on insert, where a B-tree compares 32-byte keys down its levels.
pub type SecretHashMap<V> = std::collections::HashMap<SecretHash, V, std::hash::BuildHasherDefault<SecretHashHasher>>;

/// Serialises a hash table in key order, so stores and `/sim/store` read the same from run to run.
///
/// # Errors
/// Whatever the serializer reports.
pub fn serialize_sorted<S, K, V, H>(map: &std::collections::HashMap<K, V, H>, serializer: S) -> Result<S::Ok, S::Error>
where
    S: serde::Serializer,
    K: Ord + Serialize,
    V: Serialize,
{
    let mut entries: Vec<(&K, &V)> = map.iter().collect();
    entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
    serializer.collect_map(entries)
}

const HEX: &[u8; 16] = b"0123456789abcdef";

impl SecretHash {
    /// Hashes a presented secret.
    pub fn of(secret: &str) -> Self {
        Self(Sha256::digest(secret.as_bytes()).into())
    }

    /// The raw digest.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The digest as 64 lowercase hex digits.
    pub fn to_hex(&self) -> String {
        self.hex_prefix(64)
    }

    /// The first `digits` (at most 64) lowercase hex digits of the digest: enough to tell records apart in a log,
    /// useless to an attacker.
    pub fn hex_prefix(&self, digits: usize) -> String {
        let digits = digits.min(64);
        let mut out = String::with_capacity(digits);
        for i in 0..digits {
            let b = self.0[i / 2];
            let nibble = if i % 2 == 0 { b >> 4 } else { b & 0xf };
            out.push(char::from(HEX[usize::from(nibble)]));
        }
        out
    }

    /// Parses 64 hex digits (either case).
    pub fn from_hex(hex: &str) -> Option<Self> {
        fn nibble(c: u8) -> Option<u8> {
            match c {
                b'0'..=b'9' => Some(c - b'0'),
                b'a'..=b'f' => Some(c - b'a' + 10),
                b'A'..=b'F' => Some(c - b'A' + 10),
                _ => None,
            }
        }
        let hex = hex.as_bytes();
        if hex.len() != 64 {
            return None;
        }
        let mut out = [0u8; 32];
        for (o, pair) in out.iter_mut().zip(hex.chunks_exact(2)) {
            *o = (nibble(pair[0])? << 4) | nibble(pair[1])?;
        }
        Some(Self(out))
    }
}

impl fmt::Display for SecretHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for SecretHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A hash is not a secret, but a short form keeps logs readable.
        write!(f, "SecretHash({}…)", self.hex_prefix(12))
    }
}

impl Serialize for SecretHash {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut buf = [0u8; 64];
        for (i, b) in self.0.iter().enumerate() {
            buf[2 * i] = HEX[usize::from(b >> 4)];
            buf[2 * i + 1] = HEX[usize::from(b & 0xf)];
        }
        // Hex digits are ASCII.
        s.serialize_str(std::str::from_utf8(&buf).map_err(serde::ser::Error::custom)?)
    }
}

impl<'de> Deserialize<'de> for SecretHash {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Self::from_hex(&s).ok_or_else(|| serde::de::Error::custom("expected a SHA-256 as 64 hex digits"))
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
        // One allocation, sized up front (a `format!` of the encoded bytes would make three).
        let prefix = kind.prefix();
        let mut plain = String::with_capacity(prefix.len() + SECRET_BYTES.div_ceil(3) * 4);
        plain.push_str(prefix);
        URL_SAFE_NO_PAD.encode_string(bytes.as_ref(), &mut plain);
        let hash = SecretHash::of(&plain);
        (plain, hash)
    }

    /// A user code: 8 characters of `BCDFGHJKLMNPQRSTVWXZ` (RFC 8628 §6.1), drawn without modulo bias.
    pub fn user_code(&mut self) -> WireUserCode {
        let alphabet = crate::user_code::ALPHABET;
        let mut out = [0u8; crate::user_code::LENGTH];
        let mut filled = 0;
        while filled < out.len() {
            let mut b = [0u8; 1];
            self.rng.fill_bytes(&mut b);
            // 240 = 12 * 20: reject the top 16 values so every letter is equally likely.
            if b[0] < 240 {
                out[filled] = alphabet[usize::from(b[0]) % alphabet.len()];
                filled += 1;
            }
        }
        WireUserCode(out)
    }

    /// A family handle (PROTOCOL.md §6, docs/protocol.md): [`FAMILY_HANDLE_BYTES`] random bytes, base64url. Every
    /// refresh token of one family starts with it, so a presented token names its family, and the server finds a
    /// replayed old token's family without keeping the hash of every token it ever issued (RFC 9700 §4.14.2).
    pub fn family_handle(&mut self) -> String {
        let mut bytes = [0u8; FAMILY_HANDLE_BYTES];
        self.rng.fill_bytes(&mut bytes);
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// A refresh token of the family with `handle`: `rrt_`, the handle, then 256 fresh random bits (base64url).
    /// Returns the plaintext and its hash.
    pub fn refresh_token(&mut self, handle: &str) -> (String, SecretHash) {
        let mut bytes = zeroize::Zeroizing::new([0u8; SECRET_BYTES]);
        self.rng.fill_bytes(bytes.as_mut());
        let mut plain = String::with_capacity(REFRESH_TOKEN_LEN);
        plain.push_str(SecretKind::RefreshToken.prefix());
        plain.push_str(handle);
        URL_SAFE_NO_PAD.encode_string(bytes.as_ref(), &mut plain);
        let hash = SecretHash::of(&plain);
        (plain, hash)
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
        assert_eq!(ha.to_hex().len(), 64);
        assert_eq!(SecretHash::from_hex(&ha.to_hex()), Some(ha));
        assert_eq!(serde_json::to_string(&ha).unwrap(), format!("\"{ha}\""));
        assert!(!format!("{ha:?}").contains(&a));
    }

    /// RFC 8628 §6.1: user codes from the consonant alphabet, roughly uniform.
    #[test]
    fn user_codes_are_uniform_over_the_alphabet() {
        let mut m = minter();
        let mut counts = [0usize; 20];
        for _ in 0..2000 {
            let c = m.user_code();
            assert!(crate::user_code::is_wire_form(c.as_str()), "{c}");
            for ch in c.as_str().bytes() {
                counts[crate::user_code::ALPHABET.iter().position(|a| *a == ch).unwrap()] += 1;
            }
        }
        // 16000 letters over 20 symbols: 800 expected each; a biased draw would be far off.
        assert!(counts.iter().all(|c| (650..950).contains(c)), "{counts:?}");
    }

    /// Refresh tokens: 256 fresh bits each, behind the family's handle (docs/protocol.md C12).
    #[test]
    fn refresh_tokens_carry_their_family_handle() {
        let mut m = minter();
        let handle = m.family_handle();
        assert_eq!(handle.len(), 20);
        let (a, ha) = m.refresh_token(&handle);
        let (b, _) = m.refresh_token(&handle);
        assert_eq!(a.len(), REFRESH_TOKEN_LEN);
        assert_ne!(a, b);
        assert_eq!(ha, SecretHash::of(&a));
        assert_eq!(family_handle_of(&a), Some(handle.as_str()));
        assert_eq!(family_handle_of(&b), Some(handle.as_str()));
        assert_eq!(family_handle_of("rrt_short"), None);
        assert_eq!(family_handle_of(&a.replace("rrt_", "rat_")), None);
        assert_eq!(family_handle_of(&format!("{}!", &a[..a.len() - 1])), None);
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
