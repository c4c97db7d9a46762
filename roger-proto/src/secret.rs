//! Secret newtypes (R-SEC-1).
//!
//! Every credential the protocol moves (tokens, device codes, user codes, tickets, pre-authorised drive URLs,
//! passwords, PINs, PKCE verifiers, broker passwords) is wrapped in a type that
//!
//! * prints `Name([redacted])` from `Debug`, so a stray `{:?}` in a log never leaks it (R-SEC-1);
//! * compares in constant time (`subtle`), so equality checks do not leak a prefix through timing;
//! * zeroizes its bytes when dropped, so a PIN does not linger in freed memory (R-PWD-1).
//!
//! The inner value is reachable only through [`secret`](AccessToken::secret), which makes every place that
//! handles the plaintext easy to find. Serialization is transparent (the wire carries the plain string).

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, Zeroizing};

macro_rules! secret_type {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Clone)]
        pub struct $name(Zeroizing<String>);

        impl $name {
            /// Wraps a plaintext value.
            pub fn new(value: impl Into<String>) -> Self {
                Self(Zeroizing::new(value.into()))
            }

            /// The plaintext. Call only where the value must go on the wire or into a hash.
            pub fn secret(&self) -> &str {
                self.0.as_str()
            }

            /// Length of the plaintext in bytes (not secret: lengths are visible on the wire anyway).
            pub fn len(&self) -> usize {
                self.0.len()
            }

            /// Whether the plaintext is empty.
            pub fn is_empty(&self) -> bool {
                self.0.is_empty()
            }

            /// Overwrites the plaintext with zeroes now and leaves an empty value (R-PWD-1).
            pub fn wipe(&mut self) {
                self.0.zeroize();
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(concat!(stringify!($name), "([redacted])"))
            }
        }

        impl PartialEq for $name {
            /// Constant-time comparison of the plaintexts (`subtle::ConstantTimeEq`).
            fn eq(&self, other: &Self) -> bool {
                self.0.as_bytes().ct_eq(other.0.as_bytes()).into()
            }
        }

        impl Eq for $name {}

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(self.secret())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let s = String::deserialize(deserializer)?;
                Ok(Self::new(s))
            }
        }

        /// A plain string on the wire, marked as a credential (`schema` feature; R-SEC-1).
        #[cfg(feature = "schema")]
        impl schemars::JsonSchema for $name {
            fn inline_schema() -> bool {
                true
            }

            fn schema_name() -> std::borrow::Cow<'static, str> {
                stringify!($name).into()
            }

            fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
                crate::schema::secret_string()
            }
        }

        impl From<String> for $name {
            fn from(value: String) -> Self {
                Self::new(value)
            }
        }

        impl From<&str> for $name {
            fn from(value: &str) -> Self {
                Self::new(value)
            }
        }
    };
}

secret_type!(
    /// An OAuth 2.0 access token (RFC 6749 §1.4), sent as `Authorization: Bearer` (RFC 6750 §2.1).
    AccessToken
);
secret_type!(
    /// An OAuth 2.0 refresh token (RFC 6749 §1.5); rotated on every use (R-TOK-2).
    RefreshToken
);
secret_type!(
    /// The device verification code of RFC 8628 §3.2 (`device_code`).
    DeviceCode
);
secret_type!(
    /// The end-user verification code of RFC 8628 §3.2 (`user_code`), in its wire form (8 upper-case
    /// letters, no hyphen). Use [`crate::user_code`] to format and normalise it.
    UserCode
);
secret_type!(
    /// An OAuth 2.0 authorization code (RFC 6749 §4.1.2); one use within 60 s (PROTOCOL.md §4).
    AuthorizationCode
);
secret_type!(
    /// A PKCE code verifier (RFC 7636 §4.1).
    PkceVerifier
);
secret_type!(
    /// A one-use desktop hand-over ticket (PROTOCOL.md §9), bound to one job and one device.
    Ticket
);
secret_type!(
    /// A pre-authorised, short-lived drive URL (download or upload session); whoever holds it can read or write
    /// the document, so it is a credential (R-SEC-1).
    PreAuthorizedUrl
);
secret_type!(
    /// A user's password (RFC 6749 §4.3.2). Wiped after the request that used it (R-PWD-1).
    Password
);
secret_type!(
    /// A user's PIN, sent as the `password` of the password grant (PROTOCOL.md §8). Wiped after use (R-PWD-1).
    Pin
);
secret_type!(
    /// A short-lived broker password handed out by `GET /api/v1/device/push` (PROTOCOL.md §11).
    BrokerPassword
);
secret_type!(
    /// `verification_uri_complete` (RFC 8628 §3.2): it carries the user code, so it is handled like one; it is
    /// drawn as the QR (that is its purpose) but never logged.
    VerificationUriComplete
);
secret_type!(
    /// A CSRF token of the app login form (PROTOCOL.md §4).
    CsrfToken
);

impl UserCode {
    /// The code as the panel shows it: `XXXX-XXXX` (RFC 8628 §6.1, R-QR-1).
    pub fn display(&self) -> Zeroizing<String> {
        Zeroizing::new(crate::user_code::format_for_display(self.secret()))
    }
}

impl From<Pin> for Password {
    /// A PIN goes on the wire as the `password` parameter of the password grant.
    fn from(pin: Pin) -> Self {
        Password::new(pin.secret())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// R-SEC-1: `Debug` never prints the plaintext.
    #[test]
    fn debug_is_redacted_for_every_secret() {
        let cases: Vec<(String, &str)> = vec![
            (format!("{:?}", AccessToken::new("at-SECRET")), "AccessToken"),
            (format!("{:?}", RefreshToken::new("rt-SECRET")), "RefreshToken"),
            (format!("{:?}", DeviceCode::new("dc-SECRET")), "DeviceCode"),
            (format!("{:?}", UserCode::new("SECRETCD")), "UserCode"),
            (format!("{:?}", AuthorizationCode::new("SECRET")), "AuthorizationCode"),
            (format!("{:?}", PkceVerifier::new("SECRET")), "PkceVerifier"),
            (format!("{:?}", Ticket::new("SECRET")), "Ticket"),
            (format!("{:?}", PreAuthorizedUrl::new("https://SECRET")), "PreAuthorizedUrl"),
            (format!("{:?}", Password::new("SECRET")), "Password"),
            (format!("{:?}", Pin::new("SECRET")), "Pin"),
            (format!("{:?}", BrokerPassword::new("SECRET")), "BrokerPassword"),
            (format!("{:?}", CsrfToken::new("SECRET")), "CsrfToken"),
            (format!("{:?}", VerificationUriComplete::new("https://SECRET")), "VerificationUriComplete"),
        ];
        for (printed, name) in cases {
            assert_eq!(printed, format!("{name}([redacted])"));
            assert!(!printed.contains("SECRET"));
        }
    }

    #[test]
    fn debug_of_containing_struct_is_redacted() {
        #[derive(Debug)]
        #[allow(dead_code)]
        struct Holder {
            token: AccessToken,
        }
        let s = format!("{:?}", Holder { token: AccessToken::new("abc123") });
        assert!(!s.contains("abc123"), "{s}");
    }

    #[test]
    fn equality_is_by_value() {
        assert_eq!(RefreshToken::new("a"), RefreshToken::new("a"));
        assert_ne!(RefreshToken::new("a"), RefreshToken::new("b"));
        assert_ne!(RefreshToken::new("a"), RefreshToken::new("aa"));
        assert_ne!(RefreshToken::new(""), RefreshToken::new("a"));
    }

    #[test]
    fn serde_is_transparent() {
        let t = AccessToken::new("tok");
        assert_eq!(serde_json::to_string(&t).unwrap(), "\"tok\"");
        let back: AccessToken = serde_json::from_str("\"tok\"").unwrap();
        assert_eq!(back, t);
        assert!(serde_json::from_str::<AccessToken>("12").is_err());
    }

    /// R-PWD-1: `wipe` zeroes the plaintext in place.
    #[test]
    fn wipe_clears_the_value() {
        let mut p = Pin::new("1234");
        p.wipe();
        assert!(p.is_empty());
        assert_eq!(p.secret(), "");
    }

    /// Zeroize on drop: the buffer of a dropped secret no longer holds the plaintext.
    ///
    /// We check through `Zeroizing`'s documented contract by zeroizing a clone's buffer in place and
    /// observing the bytes through a raw pointer before the allocation is released.
    #[test]
    #[allow(unsafe_code)]
    fn zeroize_clears_bytes_in_place() {
        let mut s = Zeroizing::new(String::from("PIN-4321"));
        let ptr = s.as_ptr();
        let len = s.len();
        s.zeroize();
        // SAFETY: `zeroize` on a String clears its contents and truncates it but keeps the allocation
        // (capacity unchanged), so the first `len` bytes are still owned by `s` and readable.
        let bytes = unsafe { std::slice::from_raw_parts(ptr, len) };
        assert!(bytes.iter().all(|b| *b == 0), "{bytes:?}");
    }

    #[test]
    fn user_code_display_has_hyphen() {
        assert_eq!(UserCode::new("BCDFGHJK").display().as_str(), "BCDF-GHJK");
    }
}
