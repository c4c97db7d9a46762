//! What the catalogue covers: every rule of PROTOCOL.md v1.1 and every RFC section it cites that a peer can be
//! observed keeping, with the cases that judge it in each mode, or why none does. The table in
//! `docs/conformance.md` is generated from this (a test fails when the committed table drifts; regenerate with
//! `ROGER_REGENERATE_CONFORMANCE=1 cargo test -p roger-sim --lib conform::coverage`).

use std::fmt::Write as _;

use super::case::{Case, Mode};

/// A rule or section the catalogue cites (the keys of [`super::case::Case::sources`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    /// The key cases cite: a PROTOCOL.md rule ID (`R-POLL-1`), a PROTOCOL.md section (`PROTOCOL §12`) or an RFC
    /// section (`RFC 8628 §3.5`).
    pub key: &'static str,
    /// What it asks, in a few words.
    pub summary: &'static str,
    /// Why no client-mode case covers it, if none does.
    pub client_gap: Option<&'static str>,
    /// Why no server-mode case covers it, if none does.
    pub server_gap: Option<&'static str>,
}

const SERVER_RULE: &str = "a rule for servers, judged in server mode";
const CLIENT_RULE: &str = "a rule for clients, judged in client mode";
const PHONE_RULE: &str = "a rule for the phone and desktop apps, not the MFP";
const TLS_CLIENT_GAP: &str = "the kit's front door is rustls, which cannot speak TLS 1.0/1.1 or CBC suites, so it \
                              cannot offer an MFP a legacy server to refuse";

/// Judged in both modes.
const fn both(key: &'static str, summary: &'static str) -> Rule {
    Rule { key, summary, client_gap: None, server_gap: None }
}

/// Judged in client mode only; `server_gap` says why not in server mode.
const fn client(key: &'static str, summary: &'static str, server_gap: &'static str) -> Rule {
    Rule { key, summary, client_gap: None, server_gap: Some(server_gap) }
}

/// Judged in server mode only; `client_gap` says why not in client mode.
const fn server(key: &'static str, summary: &'static str, client_gap: &'static str) -> Rule {
    Rule { key, summary, client_gap: Some(client_gap), server_gap: None }
}

/// Every rule and section, in PROTOCOL.md order, then the RFC sections.
pub const RULES: &[Rule] = &[
    client("R-DISC-1", "unknown JSON members are ignored", CLIENT_RULE),
    both("R-DISC-2", "TLS only (loopback tests excepted); certificates validated; TLS 1.2+ with AEAD suites"),
    both("R-META-1", "metadata issuer equals the API base; a mismatch is refused"),
    both("R-QR-1", "the QR of verification_uri_complete and the user code as XXXX-XXXX"),
    server("R-QR-2", "the approver looks the code up and sees what it approves", PHONE_RULE),
    both("R-QR-3", "session QR codes live 120 s by default and rotate before expiry; an expired QR is never shown"),
    client("R-QR-4", "a QR on another origin is refused (phone MUST, MFP SHOULD)", CLIENT_RULE),
    both("R-DEV-1", "a device code redeems once; a lost answer is recovered within 30 s"),
    client("R-TOK-1", "refresh ahead; one refresh and one retry on a refused token", CLIENT_RULE),
    both("R-TOK-2", "every refresh rotates; only the newest token is used"),
    both("R-TOK-3", "lost refresh answers are recoverable; other reuse revokes the family"),
    both("R-TOK-4", "90 days unused kills the refresh token; the MFP becomes disconnected"),
    both("R-POLL-1", "never two polls of one code closer than its interval; slow_down enforced"),
    client("R-PWD-1", "the MFP discards PINs; resends only as a retry of a lost answer", CLIENT_RULE),
    server("R-PWD-2", "Argon2id hashes, identical failures, lock-out, throttles", SERVER_RULE),
    both("R-DATA-1", "documents never pass through the server; no API body over 64 KiB"),
    server("R-DATA-2", "the server stores only the listed personal data", SERVER_RULE),
    both("R-SEC-1", "credentials are not cached and not logged"),
    both("R-PUSH-1", "push is a doorbell: ids only, confirmed over HTTPS; a missed doorbell is never a lost session"),
    both("PROTOCOL §5", "MFP registration: the registration code and its approval"),
    both("PROTOCOL §7", "device-bound client authentication (Bearer + client_id)"),
    both("PROTOCOL §8", "the user session: step 1 by QR, step 2 by PIN, logout, server-side end"),
    both("PROTOCOL §9", "jobs: Idempotency-Key on release, results, tickets, scans"),
    both("PROTOCOL §10", "endpoint matrix and error shapes; never a 5xx for bad input"),
    both("PROTOCOL §11", "the push channel: device queue, push credentials, the envelope and its AMQP properties"),
    both("PROTOCOL §12", "the timing model: interval, slow_down, doubling after failures, Retry-After"),
    client("PROTOCOL §13", "the conformance shim: restart from state_dir", "the shim drives clients only"),
    both("RFC 6749 §2.3", "client authentication"),
    both("RFC 6749 §4.3", "the password grant; credentials discarded, endpoint protected against brute force"),
    both("RFC 6749 §5.1", "token answers: no-store, unknown members ignored"),
    server("RFC 6749 §5.2", "error answers", SERVER_RULE),
    both("RFC 6749 §6", "refreshing an access token"),
    client("RFC 6749 §7.1", "a token of an unknown type is not used", CLIENT_RULE),
    client(
        "RFC 6749 §10.9",
        "the client validates the server's TLS certificate (RFC 6125)",
        "a rule for clients, judged in client mode (servers: their TLS versions, R-DISC-2)",
    ),
    both("RFC 6749 §10.4", "refresh token protection"),
    client("RFC 6750 §2.1", "the Authorization request header", CLIENT_RULE),
    client("RFC 6750 §2.3", "no tokens in URI query parameters", CLIENT_RULE),
    both("RFC 6750 §3.1", "WWW-Authenticate errors; invalid_token: refresh, retry once"),
    both("RFC 7009 §2.1", "revocation requests; a refresh token takes its access tokens with it"),
    server("RFC 7009 §2.2", "revocation answers (200 for unknown tokens)", SERVER_RULE),
    server("RFC 7636 §4.2", "code_challenge_method S256 only (no plain)", PHONE_RULE),
    both("RFC 8414 §3.3", "issuer validation"),
    both("RFC 8628 §3.2", "device authorization answer: interval, expires_in"),
    both("RFC 8628 §3.3.1", "verification_uri_complete shown as a QR, the user code beside it"),
    both("RFC 8628 §3.4", "the device access token request"),
    both("RFC 8628 §3.5", "polling: pending, slow_down (+5 s for good), denied, expired"),
    server("RFC 8628 §5.1", "user codes resist guessing (entropy, rate limits)", SERVER_RULE),
    both("RFC 8628 §5.4", "remote phishing: show what is approved, refuse foreign QR"),
    both("RFC 8628 §6.1", "user code format and display"),
    both("RFC 9700 §4.14.2", "refresh token rotation and reuse detection"),
    server("RFC 8996 §2", "TLS 1.0 and TLS 1.1 are not negotiated", TLS_CLIENT_GAP),
    server("RFC 9325 §4.2", "TLS 1.2 only with AEAD cipher suites; TLS 1.2 and 1.3 accepted", TLS_CLIENT_GAP),
];

/// The cases of `mode` that cite `key`.
pub fn cases_for<'a>(cases: &'a [Case], key: &str, mode: Mode) -> Vec<&'a Case> {
    cases.iter().filter(|c| c.runs_in(mode) && c.sources.contains(&key)).collect()
}

fn cell(cases: &[&Case], gap: Option<&str>) -> String {
    if cases.is_empty() {
        return format!("**not covered**: {}", gap.unwrap_or("no case yet"));
    }
    cases.iter().map(|c| format!("`{}`", c.id)).collect::<Vec<_>>().join("<br>")
}

/// The coverage table (Markdown).
pub fn table(cases: &[Case]) -> String {
    let mut s =
        String::from("| rule | what it asks | client mode (the MFP under test) | server mode |\n|---|---|---|---|\n");
    for r in RULES {
        let client = cases_for(cases, r.key, Mode::Client);
        let server = cases_for(cases, r.key, Mode::Server);
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} |",
            r.key,
            r.summary,
            cell(&client, r.client_gap),
            cell(&server, r.server_gap)
        );
    }
    s
}

/// The catalogue listing (`roger-sim conform --list`).
pub fn listing(cases: &[Case]) -> String {
    let mut s = String::new();
    for c in cases {
        let mut modes: Vec<&str> = c.modes().iter().map(|m| m.as_str()).collect();
        if c.runs_in_profile(super::case::Profile::Oauth) {
            modes.push("server:oauth");
        }
        let _ = writeln!(
            s,
            "{}  [{} · {} · {} · {}]",
            c.id,
            c.level.as_str(),
            c.basis.as_str(),
            modes.join(","),
            c.area.as_str()
        );
        let _ = writeln!(s, "    {}", c.requirement);
        let _ = writeln!(s, "    sources: {}", c.sources.join(", "));
        let _ = writeln!(
            s,
            "    judges {}: {}",
            match c.basis {
                super::case::Basis::Rfc => "an RFC requirement",
                super::case::Basis::Roger => "a Roger choice",
            },
            c.rationale
        );
        if !c.aimed_at.is_empty() {
            let _ = writeln!(s, "    aimed at: {}", c.aimed_at.join(", "));
        }
    }
    let rfc = cases.iter().filter(|c| c.basis == super::case::Basis::Rfc).count();
    let _ = writeln!(s, "{} cases ({rfc} judge an RFC requirement, {} a Roger choice)", cases.len(), cases.len() - rfc);
    s
}

/// The per-case classification table of docs/conformance.md: every case with its modes, level and basis, and why
/// its level is what it is (generated; a test fails when the committed table drifts).
pub fn classification(cases: &[Case]) -> String {
    let mut s = String::from("| case | modes | level | judges | why |\n|---|---|---|---|---|\n");
    for c in cases {
        let mut modes: Vec<String> = c.modes().iter().map(|m| m.as_str().to_owned()).collect();
        if c.runs_in_profile(super::case::Profile::Oauth) {
            modes.push("server (oauth too)".into());
            modes.retain(|m| m != "server");
        }
        let basis = match c.basis {
            super::case::Basis::Rfc => "RFC requirement",
            super::case::Basis::Roger => "Roger choice",
        };
        let _ = writeln!(
            s,
            "| `{}` | {} | {} | {basis} | {} |",
            c.id,
            modes.join(", "),
            c.level.as_str(),
            c.rationale.replace('|', "\\|")
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conform::cases::catalogue;

    const BEGIN: &str = "<!-- coverage:begin (generated by roger-sim/src/conform/coverage.rs) -->";
    const END: &str = "<!-- coverage:end -->";

    #[test]
    fn every_rule_is_covered_or_says_why() {
        let all = catalogue();
        for r in RULES {
            for (mode, gap) in [(Mode::Client, r.client_gap), (Mode::Server, r.server_gap)] {
                let cases = cases_for(&all, r.key, mode);
                assert!(
                    cases.is_empty() != gap.is_none(),
                    "{} in {} mode: either cases or a reason for their absence (not both)",
                    r.key,
                    mode.as_str()
                );
            }
        }
    }

    /// Keeps the generated block between `begin` and `end` of docs/conformance.md current; regenerates it with
    /// ROGER_REGENERATE_CONFORMANCE=1.
    fn check_block(begin: &str, end: &str, body: String) {
        // Both tables live in one file: one test at a time reads and rewrites it.
        static FILE: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let _guard = FILE.lock().unwrap_or_else(|e| e.into_inner());
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/conformance.md");
        let doc = std::fs::read_to_string(&path).expect("docs/conformance.md");
        let (Some(b), Some(e)) = (doc.find(begin), doc.find(end)) else {
            panic!("docs/conformance.md lacks the markers {begin}");
        };
        let fresh = format!("{begin}\n{body}{end}");
        let current = &doc[b..e + end.len()];
        if current != fresh {
            if std::env::var_os("ROGER_REGENERATE_CONFORMANCE").is_some() {
                let updated = format!("{}{fresh}{}", &doc[..b], &doc[e + end.len()..]);
                std::fs::write(&path, updated).expect("write docs/conformance.md");
            } else {
                panic!(
                    "a generated table in docs/conformance.md is stale; run \
                     ROGER_REGENERATE_CONFORMANCE=1 cargo test -p roger-sim --lib conform::coverage"
                );
            }
        }
    }

    /// docs/conformance.md carries the generated coverage table.
    #[test]
    fn committed_table_is_current() {
        check_block(BEGIN, END, table(&catalogue()));
    }

    /// docs/conformance.md carries the generated per-case classification.
    #[test]
    fn committed_classification_is_current() {
        check_block(
            "<!-- classification:begin (generated by roger-sim/src/conform/coverage.rs) -->",
            "<!-- classification:end -->",
            classification(&catalogue()),
        );
    }
}
