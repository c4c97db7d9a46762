//! The catalogue: one file per area, each declaring its cases with a stable ID, the requirement sentence, its
//! sources, its level and basis (an RFC requirement or a Roger choice, and why), the mutants it is aimed at, and
//! how it is played (after h2spec).

mod bad_input;
mod bearer;
mod data;
mod device_grant;
mod discovery;
mod lost_answers;
mod password;
mod push;
mod qr_session;
mod refresh;
mod revocation;
mod tls;

use std::time::Duration;

use super::case::{Case, Finding};
use super::env::ClientEnv;
use super::judge::{self, PolledCode, TooEarly};
use super::proxy::Exchange;

/// Every case, in catalogue order (area by area).
pub fn catalogue() -> Vec<Case> {
    let mut all = Vec::new();
    all.extend(discovery::cases());
    all.extend(discovery::server_cases());
    all.extend(device_grant::cases());
    all.extend(device_grant::server_cases());
    all.extend(qr_session::cases());
    all.extend(qr_session::server_cases());
    all.extend(password::cases());
    all.extend(password::server_cases());
    all.extend(refresh::cases());
    all.extend(refresh::server_cases());
    all.extend(lost_answers::cases());
    all.extend(lost_answers::server_cases());
    all.extend(revocation::cases());
    all.extend(revocation::server_cases());
    all.extend(bearer::cases());
    all.extend(bearer::server_cases());
    all.extend(data::cases());
    all.extend(data::server_cases());
    all.extend(tls::cases());
    all.extend(tls::server_cases());
    all.extend(bad_input::cases());
    all.extend(bad_input::server_cases());
    all.extend(push::cases());
    all.extend(push::server_cases());
    all
}

/// Declares how a case is played in client mode: `client!(setup_fn, run_fn)`.
macro_rules! client {
    ($setup:expr, $run:path) => {
        Some($crate::conform::case::ClientCase { setup: $setup, run: |env| Box::pin($run(env)) })
    };
}
pub(crate) use client;

/// Declares how a case is played in server mode: `server!(exclusive, run_fn)` for a case that needs a Roger server,
/// `server!(exclusive, run_fn, oauth)` for one that also judges a generic OAuth server (profile `oauth`).
macro_rules! server {
    ($exclusive:expr, $run:path) => {
        Some($crate::conform::case::ServerCase { exclusive: $exclusive, oauth: false, run: |env| Box::pin($run(env)) })
    };
    ($exclusive:expr, $run:path, oauth) => {
        Some($crate::conform::case::ServerCase { exclusive: $exclusive, oauth: true, run: |env| Box::pin($run(env)) })
    };
}
pub(crate) use server;

/// Everything a case file needs.
mod prelude {
    pub(super) use std::time::Duration;

    pub(super) use roger_proto::shim::PanelState;

    pub(super) use super::super::case::{Area, Basis, Case, CaseError, EvidenceSource, Finding, Level};
    pub(super) use super::super::env::{ClientEnv, ClientSetup, PushSetup, Who, STATE_WAIT};
    pub(super) use super::super::proxy::{Exchange, Rewrites};
    pub(super) use super::super::server_env::{Actor, ServerEnv};
    pub(super) use super::{client, server};
    pub(super) use crate::server::faults::{FaultKind, FaultRule};

    /// No adjustment: the kit's defaults.
    pub(super) fn defaults(_: &mut ClientSetup) {}

    /// A fault rule with the defaults of `/sim/faults` (probability 1, no limit).
    pub(super) fn rule(route: &str, grant_type: Option<&str>, fault: FaultKind, count: Option<u64>) -> FaultRule {
        FaultRule {
            route: route.into(),
            grant_type: grant_type.map(str::to_owned),
            fault,
            probability: 1.0,
            count,
            delay_ms: None,
            status: None,
            retry_after: None,
            deviation: None,
        }
    }
}

/// Judges every polled device code against the timing model, counting only violations of `kinds`; `Broken` with
/// the first few (and wire evidence), or `Holds` when at least `min_gaps` gaps were judged.
pub(crate) fn poll_timing(env: &mut ClientEnv, kinds: &[TooEarly], min_gaps: usize) -> Finding {
    let codes = judge::polled_codes(&env.exchanges());
    poll_timing_of(env, &codes, kinds, min_gaps)
}

/// [`poll_timing`] over chosen codes.
pub(crate) fn poll_timing_of(
    env: &mut ClientEnv,
    codes: &[PolledCode],
    kinds: &[TooEarly],
    min_gaps: usize,
) -> Finding {
    let gaps: usize = codes.iter().map(|c| c.polls.len().saturating_sub(1)).sum();
    let violations: Vec<_> =
        codes.iter().flat_map(judge::poll_violations).filter(|v| kinds.contains(&v.kind)).collect();
    let vault = env.vault();
    for c in codes {
        let polls: Vec<&Exchange> = c.polls.iter().collect();
        env.note_exchanges(polls, 12);
    }
    if let Some(first) = violations.first() {
        let more = if violations.len() > 1 { format!(" (and {} more)", violations.len() - 1) } else { String::new() };
        return Finding::Broken(vault.redact(&format!("{}{more}", first.sentence())));
    }
    if gaps < min_gaps {
        return Finding::Broken(format!(
            "only {gaps} gaps between polls were seen; at least {min_gaps} are needed to judge"
        ));
    }
    Finding::Holds
}

/// Sleeps (the MFP works meanwhile).
pub(crate) async fn observe(d: Duration) {
    tokio::time::sleep(d).await;
}

/// The registration codes (not device-bound) the MFP polled.
pub(crate) fn registration_codes(env: &ClientEnv) -> Vec<PolledCode> {
    judge::polled_codes(&env.exchanges()).into_iter().filter(|c| !c.session).collect()
}

/// Whether an answer's header `name` carries the directive `value` (case-insensitive, comma-separated lists).
pub(crate) fn has_directive(e: &Exchange, name: &str, value: &str) -> bool {
    e.resp_headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|v| v.trim().eq_ignore_ascii_case(value))
}

/// The `WWW-Authenticate` header of an answer.
pub(crate) fn www_authenticate(e: &Exchange) -> Option<String> {
    e.resp_headers.get("www-authenticate").and_then(|v| v.to_str().ok()).map(str::to_owned)
}

/// Whether an exchange is a poll answered with OAuth `error`.
pub(crate) fn poll_answered(e: &Exchange, error: &str) -> bool {
    e.is_poll() && e.oauth_error().as_deref() == Some(error)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::super::case::{mfp_mutants, server_mutants, Mode};
    use super::super::coverage::RULES;
    use super::*;

    #[test]
    fn ids_are_unique_and_well_formed() {
        let all = catalogue();
        let mut seen = BTreeSet::new();
        for c in &all {
            assert!(seen.insert(c.id), "duplicate id {}", c.id);
            let parts: Vec<&str> = c.id.split('/').collect();
            assert_eq!(parts.len(), 3, "{}: <source>/<section or rule>/<slug>", c.id);
            assert!(
                ["rfc6749", "rfc6750", "rfc7009", "rfc7636", "rfc8414", "rfc8628", "roger"].contains(&parts[0]),
                "{}",
                c.id
            );
            assert!(parts[2].bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'), "{}", c.id);
            assert!(c.requirement.ends_with('.'), "{}: a sentence", c.id);
            assert!(!c.sources.is_empty(), "{}", c.id);
            assert!(!c.modes().is_empty(), "{}", c.id);
        }
    }

    /// The kit judges foreign peers fairly: only a case that rests on an RFC MUST may FAIL a peer; what Roger chose
    /// beyond the RFCs is never more than SHOULD. Every case says why its level is what it is.
    #[test]
    fn only_rfc_requirements_are_must() {
        for c in catalogue() {
            if c.level == super::super::case::Level::Must {
                assert_eq!(c.basis, super::super::case::Basis::Rfc, "{}: a MUST case must rest on an RFC MUST", c.id);
            }
            assert!(c.rationale.len() > 20 && c.rationale.trim_end().ends_with(['.', '"', ')']), "{}", c.id);
        }
        let all = catalogue();
        let rfc_must = all.iter().filter(|c| c.level == super::super::case::Level::Must).count();
        assert!(rfc_must >= 20, "{rfc_must} RFC MUST cases");
    }

    /// The oauth profile runs only cases that need nothing Roger-specific of the server.
    #[test]
    fn oauth_cases_run_against_any_server() {
        let all = catalogue();
        let oauth: Vec<&str> =
            all.iter().filter(|c| c.runs_in_profile(super::super::case::Profile::Oauth)).map(|c| c.id).collect();
        for id in [
            "rfc8414/3.3/server-metadata",
            "rfc8628/3.5/server-access-denied",
            "roger/R-TOK-2/server-rotates-refresh-tokens",
            "rfc7009/2.2/server-revoke-unknown-token",
            "roger/R-SEC-1/server-no-store",
        ] {
            assert!(oauth.contains(&id), "{id} runs in the oauth profile");
        }
        for id in ["roger/sec9/server-release-idempotent", "roger/R-QR-2/server-lookup-shows-printer"] {
            assert!(!oauth.contains(&id), "{id} needs a Roger server");
        }
    }

    #[test]
    fn sources_are_known_rules_and_mutants_are_known() {
        for c in catalogue() {
            for s in c.sources {
                assert!(RULES.iter().any(|r| r.key == *s), "{}: unknown source {s:?}", c.id);
            }
            for m in c.aimed_at {
                if mfp_mutants().contains(m) {
                    assert!(c.runs_in(Mode::Client), "{}: MFP mutants are caught in client mode", c.id);
                } else {
                    assert!(server_mutants().contains(m), "{}: unknown mutant {m}", c.id);
                    assert!(c.runs_in(Mode::Server), "{}: server mutants are caught in server mode", c.id);
                }
            }
        }
    }

    /// The suite proves itself: every MFP mutant is aimed at by at least one client-mode case.
    #[test]
    fn every_mfp_mutant_has_a_case() {
        let all = catalogue();
        for m in mfp_mutants() {
            assert!(all.iter().any(|c| c.aimed_at.contains(&m)), "no case is aimed at the MFP mutant {m}");
        }
    }

    /// Every server mutant is aimed at by at least one server-mode case.
    #[test]
    fn every_server_mutant_has_a_case() {
        let all = catalogue();
        for m in server_mutants() {
            assert!(all.iter().any(|c| c.aimed_at.contains(&m)), "no case is aimed at the server mutant {m}");
        }
    }

    #[test]
    fn globs_select_cases() {
        let all = catalogue();
        let n = all.iter().filter(|c| c.matches("rfc8628/*")).count();
        assert!(n >= 3, "{n}");
        assert_eq!(all.iter().filter(|c| c.matches("roger/R-TOK-2/present-newest-refresh-token")).count(), 1);
    }
}
