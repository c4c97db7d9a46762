//! PIN and password verification with Argon2id (RFC 9106), identical in body and time whether the user is unknown,
//! the secret wrong, or the user locked out (R-PWD-2).

use std::collections::HashMap;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};

use super::settings::Argon2Cost;
use super::ServerCore;

fn argon2(cost: Argon2Cost) -> Option<Argon2<'static>> {
    let params = Params::new(cost.m_kib, cost.t, cost.p, None).ok()?;
    Some(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
}

/// Precomputed hashes of a throw-away secret, one per cost, verified against when there is no real hash so that
/// every failure costs the same time (R-PWD-2 "a dummy verify for unknown users").
#[derive(Debug, Default, Clone)]
pub struct DummyHashes {
    by_cost: HashMap<(u32, u32, u32), String>,
}

impl ServerCore {
    /// Hashes a PIN or password as an Argon2id PHC string with a fresh salt from the core's CSPRNG.
    pub fn hash_secret(&mut self, secret: &str, cost: Argon2Cost) -> String {
        let mut salt = [0u8; 16];
        self.minter.fill(&mut salt);
        let Some(a) = argon2(cost).or_else(|| argon2(Argon2Cost::TEST)) else { return String::new() };
        let Ok(salt) = SaltString::encode_b64(&salt) else { return String::new() };
        a.hash_password(secret.as_bytes(), &salt).map(|h| h.to_string()).unwrap_or_default()
    }

    fn dummy_hash(&mut self, cost: Argon2Cost) -> String {
        let key = (cost.m_kib, cost.t, cost.p);
        if let Some(h) = self.dummy_hash.by_cost.get(&key) {
            return h.clone();
        }
        let h = self.hash_secret("roger-dummy-secret-never-matches", cost);
        self.dummy_hash.by_cost.insert(key, h.clone());
        h
    }

    /// Verifies `secret` against the PIN hash and the password hash of a user (either may match, PROTOCOL.md §8),
    /// always running exactly two Argon2id verifications at `cost`, with dummy hashes standing in for missing
    /// ones, so unknown users, users without a PIN and locked users take the same time as everyone else.
    pub(crate) fn verify_pin_or_password(
        &mut self,
        secret: &str,
        pin_hash: Option<&str>,
        password_hash: Option<&str>,
        cost: Argon2Cost,
    ) -> bool {
        let dummy = self.dummy_hash(cost);
        let a = verify(secret, pin_hash.unwrap_or(&dummy), cost) && pin_hash.is_some();
        let b = verify(secret, password_hash.unwrap_or(&dummy), cost) && password_hash.is_some();
        a | b
    }

    /// Verifies a password only (app login, PROTOCOL.md §4), with the same two-verification cost profile.
    pub(crate) fn verify_password(&mut self, secret: &str, password_hash: Option<&str>, cost: Argon2Cost) -> bool {
        let dummy = self.dummy_hash(cost);
        let ok = verify(secret, password_hash.unwrap_or(&dummy), cost) && password_hash.is_some();
        let _ = verify(secret, &dummy, cost);
        ok
    }
}

/// Verifies against a PHC string; the string's own parameters are used (so a cost change does not break old
/// hashes), falling back to `cost` only for the hasher instance.
fn verify(secret: &str, phc: &str, cost: Argon2Cost) -> bool {
    let Ok(parsed) = PasswordHash::new(phc) else { return false };
    let Some(a) = argon2(cost).or_else(|| argon2(Argon2Cost::TEST)) else { return false };
    a.verify_password(secret.as_bytes(), &parsed).is_ok()
}

#[cfg(test)]
mod tests {
    use super::super::test_support::core;
    use super::*;

    /// R-PWD-2: Argon2id PHC strings; PIN or password both accepted; unknown user never matches.
    #[test]
    fn hash_and_verify() {
        let mut c = core();
        let h = c.hash_secret("1234", Argon2Cost::TEST);
        assert!(h.starts_with("$argon2id$v=19$"), "{h}");
        assert!(c.verify_pin_or_password("1234", Some(&h), None, Argon2Cost::TEST));
        assert!(!c.verify_pin_or_password("4321", Some(&h), None, Argon2Cost::TEST));
        let pw = c.hash_secret("alice-pass", Argon2Cost::TEST);
        assert!(c.verify_pin_or_password("alice-pass", Some(&h), Some(&pw), Argon2Cost::TEST));
        assert!(!c.verify_pin_or_password("roger-dummy-secret-never-matches", None, None, Argon2Cost::TEST));
        assert!(c.verify_password("alice-pass", Some(&pw), Argon2Cost::TEST));
        assert!(!c.verify_password("1234", Some(&pw), Argon2Cost::TEST));
        assert_ne!(c.hash_secret("1234", Argon2Cost::TEST), h, "fresh salt every time");
    }
}
