//! **Test-only.** Known-broken behaviours of the server core ("mutants", DESIGN.md "Conformance": "known-broken
//! variants of our own MFP and server prove the suite: every mutant must be caught by at least one case").
//!
//! A production server never sets any of these; [`ServerCore`](super::ServerCore) starts with
//! [`Mutations::NONE`]. They exist so that the simulator (`roger-sim server --mutant NAME`) can run a server that
//! makes one real-world mistake, and the conformance suite can show that it catches it. Each variant names the rule
//! it breaks. The mutants that the simulator can inject from outside the core (a `500` for bad input, missing
//! `no-store`, plaintext secrets) live in `roger-sim`, not here.
//!
//! The module is hidden from the documentation: vendors reading this crate should never see a switch that turns a
//! rule off.

use std::collections::HashMap;

use super::mint::{Minter, SecretHash};
use super::model::WireUserCode;

/// One server-core mistake (test-only, see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Mutation {
    /// Never answers `slow_down`: polls are judged as if every gap were long enough (breaks R-POLL-1, RFC 8628
    /// §3.5).
    NoSlowDown,
    /// A redeemed device code redeems again at any time, minting a fresh pair without revoking the first
    /// (breaks R-DEV-1).
    DoubleRedeem,
    /// A refresh answers the presented refresh token again instead of a new one (breaks R-TOK-2, RFC 9700
    /// §4.14.2).
    NoRotation,
    /// A retired refresh token is refused, but its family is not revoked (breaks R-TOK-3, RFC 9700 §4.14.2).
    NoReuseDetection,
    /// The predecessor of an unused refresh token is not redeemable: a lost refresh answer looks like reuse and
    /// revokes the family (breaks R-TOK-3).
    NoLostAnswerGrace,
    /// A refresh does not move the family's expiry: the family dies 90 days after the original grant however
    /// often it is used (breaks R-TOK-4).
    NoSlidingExpiry,
    /// User codes come from the letters `B` and `C` only: 256 possible codes instead of 20⁸ (breaks RFC 8628 §5.1
    /// and §6.1).
    WeakUserCodes,
    /// No limit on approvals and lookups with unknown codes (breaks PROTOCOL.md §3 "at most 10 per user per
    /// minute", RFC 8628 §5.1).
    NoApprovalRateLimit,
    /// Failed logins never lock the user out (breaks R-PWD-2, RFC 6749 §4.3.2).
    NoLockout,
    /// A step-2 password grant is granted to any user with a right PIN, not only to the user whose QR session is
    /// open at that printer (breaks PROTOCOL.md §8 step 2).
    NoStep2Binding,
}

impl Mutation {
    fn bit(self) -> u16 {
        1 << (self as u16)
    }
}

/// A set of [`Mutation`]s (test-only, see the module documentation). Empty by default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Mutations(u16);

impl Mutations {
    /// No mutation: the server as specified.
    pub const NONE: Self = Self(0);

    /// This set plus `m`.
    pub fn with(self, m: Mutation) -> Self {
        Self(self.0 | m.bit())
    }

    /// Whether `m` is in the set.
    pub fn has(self, m: Mutation) -> bool {
        self.0 & m.bit() != 0
    }

    /// Whether the set is empty (a correct server).
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
}

impl From<Mutation> for Mutations {
    fn from(m: Mutation) -> Self {
        Self::NONE.with(m)
    }
}

/// The letters of [`Mutation::WeakUserCodes`].
pub const WEAK_ALPHABET: [u8; 2] = *b"BC";

/// A user code of [`Mutation::WeakUserCodes`]: eight letters of [`WEAK_ALPHABET`] (one random byte, one bit a
/// letter), not in use yet. `None` when a few draws found only codes in use (then the caller keeps its strong code,
/// so a crowded weak space cannot wedge the endpoint).
pub(crate) fn weak_user_code(minter: &mut Minter, in_use: &HashMap<WireUserCode, SecretHash>) -> Option<WireUserCode> {
    for _ in 0..64 {
        let mut byte = [0u8; 1];
        minter.fill(&mut byte);
        let mut letters = [0u8; crate::user_code::LENGTH];
        for (i, l) in letters.iter_mut().enumerate() {
            *l = WEAK_ALPHABET[usize::from((byte[0] >> i) & 1)];
        }
        let code = WireUserCode::new(std::str::from_utf8(&letters).ok()?)?;
        if !in_use.contains_key(&code) {
            return Some(code);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn sets() {
        let m = Mutations::NONE.with(Mutation::NoRotation).with(Mutation::NoLockout);
        assert!(m.has(Mutation::NoRotation) && m.has(Mutation::NoLockout));
        assert!(!m.has(Mutation::NoSlowDown));
        assert!(Mutations::default().is_empty() && !m.is_empty());
        assert_eq!(Mutations::from(Mutation::WeakUserCodes), Mutations::NONE.with(Mutation::WeakUserCodes));
    }

    /// The weak codes are valid wire codes (RFC 8628 §6.1 alphabet) from a space of 256, and skip codes in use.
    #[test]
    fn weak_codes() {
        let mut minter = Minter::new(Box::new(rand::rngs::StdRng::seed_from_u64(3)));
        let mut in_use = HashMap::new();
        for _ in 0..200 {
            let Some(c) = weak_user_code(&mut minter, &in_use) else { break };
            assert!(crate::user_code::is_wire_form(c.as_str()), "{c}");
            assert!(c.as_str().bytes().all(|b| WEAK_ALPHABET.contains(&b)), "{c}");
            assert!(in_use.insert(c, SecretHash::of(c.as_str())).is_none(), "a free code");
        }
        assert!(in_use.len() <= 256);
    }
}
