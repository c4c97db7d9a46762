//! The secrets of one case: every credential the kit's server handed to the MFP (seen by the proxy in its answers)
//! and every secret the case typed (a PIN). The judge scans the shim's log and `state_dir` for them (R-SEC-1,
//! R-PWD-1), and every line of evidence passes through [`Vault::redact`] so reports never carry one.

use serde_json::Value;
use sha2::{Digest, Sha256};

/// One secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Secret {
    /// The plaintext.
    pub value: String,
    /// What it is (`access token`, `refresh token`, `device code`, `PIN`, …).
    pub kind: &'static str,
    /// Whether it is a credential R-SEC-1 forbids in logs (user codes and QR payloads are shown on the panel on
    /// purpose: redacted in reports, not searched for in logs).
    pub credential: bool,
}

impl Secret {
    /// A short, stable name for reports: its kind and the first 6 hex digits of its SHA-256.
    pub fn label(&self) -> String {
        format!("‹{} #{}›", self.kind, short_hash(&self.value))
    }
}

/// The first 6 hex digits of SHA-256 (enough to tell secrets apart in a report, useless to an attacker).
pub fn short_hash(s: &str) -> String {
    Sha256::digest(s.as_bytes()).iter().take(3).map(|b| format!("{b:02x}")).collect()
}

/// The members of an answer that carry a credential (RFC 6749 §5.1, RFC 8628 §3.2, PROTOCOL.md §9, §11).
const CREDENTIAL_MEMBERS: [(&str, &str); 5] = [
    ("access_token", "access token"),
    ("refresh_token", "refresh token"),
    ("device_code", "device code"),
    ("ticket", "ticket"),
    ("password", "broker password"),
];

/// Members shown on the panel on purpose: redacted, not searched for.
const SHOWN_MEMBERS: [(&str, &str); 3] =
    [("user_code", "user code"), ("verification_uri_complete", "QR payload"), ("code", "code")];

/// Shortest value taken for a secret (a stray `"password":"x"` in a fixture is not one).
const MIN_SECRET_LEN: usize = 4;

/// The secrets of one case.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Vault {
    secrets: Vec<Secret>,
}

impl Vault {
    /// Adds a secret (once).
    pub fn add(&mut self, value: &str, kind: &'static str, credential: bool) {
        if value.len() < MIN_SECRET_LEN || self.secrets.iter().any(|s| s.value == value) {
            return;
        }
        self.secrets.push(Secret { value: value.to_owned(), kind, credential });
        // Longest first, so a secret that contains another is replaced whole.
        self.secrets.sort_by_key(|s| std::cmp::Reverse(s.value.len()));
    }

    /// Collects the credentials of one JSON answer (any depth): tokens, device codes, tickets, broker passwords,
    /// pre-authorised URLs (`document.url`, `upload.url`), and the user codes and QR payloads shown on the panel.
    pub fn collect(&mut self, v: &Value) {
        match v {
            Value::Object(map) => {
                for (k, val) in map {
                    if let Value::String(s) = val {
                        if let Some((_, kind)) = CREDENTIAL_MEMBERS.iter().find(|(m, _)| m == k) {
                            self.add(s, kind, true);
                        } else if let Some((_, kind)) = SHOWN_MEMBERS.iter().find(|(m, _)| m == k) {
                            self.add(s, kind, false);
                            if *kind == "user code" {
                                // The panel shows it as XXXX-XXXX (R-QR-1).
                                self.add(&roger_proto::user_code::format_for_display(s), kind, false);
                            }
                        }
                    }
                    if (k == "document" || k == "upload") && val.is_object() {
                        if let Some(Value::String(url)) = val.get("url") {
                            self.add(url, "pre-authorised URL", true);
                        }
                    }
                    self.collect(val);
                }
            }
            Value::Array(items) => items.iter().for_each(|i| self.collect(i)),
            _ => {}
        }
    }

    /// Every secret.
    pub fn secrets(&self) -> &[Secret] {
        &self.secrets
    }

    /// The credentials of `kind`.
    pub fn of_kind(&self, kind: &str) -> Vec<&Secret> {
        self.secrets.iter().filter(|s| s.kind == kind).collect()
    }

    /// `text` with every secret replaced by its [`Secret::label`].
    pub fn redact(&self, text: &str) -> String {
        let mut out = text.to_owned();
        for s in &self.secrets {
            if out.contains(&s.value) {
                out = out.replace(&s.value, &s.label());
            }
        }
        out
    }

    /// The credentials that occur in `haystack` (R-SEC-1 scans).
    pub fn credentials_in(&self, haystack: &[u8]) -> Vec<&Secret> {
        self.secrets.iter().filter(|s| s.credential && contains(haystack, s.value.as_bytes())).collect()
    }
}

/// Whether `needle` occurs in `haystack`.
pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

/// Whether the digits `pin` occur in `text` as a number of their own (not inside a longer run of digits).
pub fn contains_number(text: &[u8], pin: &str) -> bool {
    let n = pin.as_bytes();
    if n.is_empty() {
        return false;
    }
    text.windows(n.len()).enumerate().any(|(i, w)| {
        w == n && (i == 0 || !text[i - 1].is_ascii_digit()) && text.get(i + n.len()).is_none_or(|b| !b.is_ascii_digit())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collects_and_redacts() {
        let mut v = Vault::default();
        v.collect(&serde_json::json!({
            "access_token": "rat_AAAA", "refresh_token": "rrt_BBBB", "token_type": "Bearer",
            "document": { "url": "https://d/x?sig=SSSS", "size": 3 },
            "user_code": "WDJBMJHT", "device_code": "rdc_CCCC"
        }));
        assert_eq!(v.of_kind("access token").len(), 1);
        assert_eq!(v.of_kind("user code").len(), 2, "wire form and XXXX-XXXX");
        let text = "sent rat_AAAA and rrt_BBBB, showed WDJB-MJHT, fetched https://d/x?sig=SSSS";
        let r = v.redact(text);
        assert!(!r.contains("rat_AAAA") && !r.contains("rrt_BBBB") && !r.contains("WDJB-MJHT"), "{r}");
        assert!(!r.contains("sig=SSSS") && r.contains("‹access token #"), "{r}");
        let found: Vec<&str> = v.credentials_in(text.as_bytes()).iter().map(|s| s.kind).collect();
        assert!(found.contains(&"access token") && found.contains(&"pre-authorised URL"));
        assert!(!found.contains(&"user code"), "shown on purpose, not a logged credential");
    }

    #[test]
    fn pins_as_numbers() {
        assert!(contains_number(b"pin=40718263;", "40718263"));
        assert!(!contains_number(b"x140718263", "40718263"));
        assert!(!contains_number(b"407182639", "40718263"));
        assert!(contains_number(b"40718263", "40718263"));
    }
}
