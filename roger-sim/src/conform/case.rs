//! What a conformance case is (after h2spec): a stable ID, the requirement sentence, its source (an RFC section or
//! a docs/protocol.md rule ID), its level (MUST / SHOULD), its [`Basis`] (an RFC requirement or a Roger choice,
//! and why), the modes it runs in, and the mutants it is aimed at (so the suite's self-test runs only those cases
//! against each mutant); plus the code that plays it. A case returns a [`Finding`] with its [`Evidence`]; the
//! runner turns it into a [`Verdict`] by the level.
//!
//! The kit judges foreign peers fairly: a case may FAIL a peer only for breaking a MUST that rests on an RFC MUST
//! (level [`Level::Must`] implies [`Basis::Rfc`], a unit test checks it). What Roger chose beyond the RFCs (bare
//! user codes, members Roger requires, the MFP-side SHOULDs, the Roger API) is judged at [`Level::Should`] with
//! [`Basis::Roger`], so a peer that follows the RFCs but not our choices gets NON-STRICT or INFO, never FAIL. A
//! MUST case whose RFC requirement holds but whose stricter Roger expectation does not returns
//! [`Finding::Info`] with the reason.

use std::fmt;
use std::future::Future;
use std::pin::Pin;

use serde::{Deserialize, Serialize};

use super::env::{ClientEnv, ClientSetup};
use super::server_env::ServerEnv;

/// How binding a requirement is (RFC 2119).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum Level {
    /// A failure is a FAIL and makes the run's exit code non-zero.
    Must,
    /// A failure is NON-STRICT: reported, never fatal.
    Should,
}

impl Level {
    /// `MUST` or `SHOULD`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Must => "MUST",
            Self::Should => "SHOULD",
        }
    }
}

/// What a case judges: a requirement of an RFC (or of an RFC that docs/protocol.md cites), or a choice Roger made
/// beyond the RFCs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Basis {
    /// An RFC requirement: at [`Level::Must`] an RFC MUST (a peer that follows the RFCs always passes), at
    /// [`Level::Should`] an RFC SHOULD or RECOMMENDED.
    Rfc,
    /// A Roger choice stricter than the RFCs (or outside them: the Roger API, push, the panel): never more than
    /// [`Level::Should`], so an RFC-conformant peer gets NON-STRICT or INFO for it, never FAIL.
    Roger,
}

impl Basis {
    /// `RFC` or `Roger`, as reports show it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Rfc => "RFC",
            Self::Roger => "Roger",
        }
    }
}

/// Which server a server-mode run judges (`roger-sim conform server --profile`).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    schemars::JsonSchema,
    clap::ValueEnum,
)]
#[serde(rename_all = "snake_case")]
pub enum Profile {
    /// A Roger server: every server-mode case runs.
    Roger,
    /// A generic OAuth 2.0 server (no `roger_api_version` in its metadata): only the cases that judge what any
    /// OAuth server can be held to run; the Roger-only ones are SKIP ("not a Roger server").
    Oauth,
}

impl Profile {
    /// `roger` or `oauth`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Roger => "roger",
            Self::Oauth => "oauth",
        }
    }
}

/// Which side is under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// The vendor's MFP client, driven through its shim (PROTOCOL.md §13) against the kit's server and phone.
    Client,
    /// A vendor's server, driven by the kit's MFP and phone.
    Server,
}

impl Mode {
    /// `client` or `server`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Client => "client",
            Self::Server => "server",
        }
    }
}

/// The catalogue's areas, one source file each under `conform/cases/`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Area {
    /// Discovery and RFC 8414 metadata (PROTOCOL.md §2).
    Discovery,
    /// The RFC 8628 device grant and the §12 timing model.
    DeviceGrant,
    /// Registration and session QR codes, step 1 and step 2 (PROTOCOL.md §5, §8).
    QrSession,
    /// The password grant: PINs and passwords (R-PWD-1).
    Password,
    /// Refresh ahead and rotation (R-TOK-1, R-TOK-2, R-TOK-4).
    Refresh,
    /// Lost answers (R-DEV-1, R-TOK-3, R-PWD-1 retries).
    LostAnswers,
    /// Revocation, logout, session end, device removal (RFC 7009, PROTOCOL.md §8 "End").
    Revocation,
    /// Use of bearer tokens (RFC 6750) and device-bound client authentication (PROTOCOL.md §7).
    Bearer,
    /// Documents and secrets (R-DATA-1, R-SEC-1, R-PWD-1 storage).
    Data,
    /// TLS (R-DISC-2).
    Tls,
    /// Answers a client must refuse or tolerate (PROTOCOL.md §7).
    BadInput,
    /// The push channel: doorbells confirmed over HTTPS, a cut broker (PROTOCOL.md §11, R-PUSH-1).
    Push,
}

impl Area {
    /// Every area, in catalogue order.
    pub const ALL: [Self; 12] = [
        Self::Discovery,
        Self::DeviceGrant,
        Self::QrSession,
        Self::Password,
        Self::Refresh,
        Self::LostAnswers,
        Self::Revocation,
        Self::Bearer,
        Self::Data,
        Self::Tls,
        Self::BadInput,
        Self::Push,
    ];

    /// The snake_case name (also the source file under `conform/cases/`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Discovery => "discovery",
            Self::DeviceGrant => "device_grant",
            Self::QrSession => "qr_session",
            Self::Password => "password",
            Self::Refresh => "refresh",
            Self::LostAnswers => "lost_answers",
            Self::Revocation => "revocation",
            Self::Bearer => "bearer",
            Self::Data => "data",
            Self::Tls => "tls",
            Self::BadInput => "bad_input",
            Self::Push => "push",
        }
    }
}

/// A case's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "SCREAMING-KEBAB-CASE")]
pub enum Verdict {
    /// The requirement holds.
    Pass,
    /// A MUST is broken.
    Fail,
    /// A SHOULD is missed.
    NonStrict,
    /// Not judged, with a reason (a capability the peer lacks, a setup the machine cannot offer).
    Skip,
    /// Informational: observed, not judged.
    Info,
}

impl Verdict {
    /// `PASS`, `FAIL`, `NON-STRICT`, `SKIP`, `INFO`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pass => "PASS",
            Self::Fail => "FAIL",
            Self::NonStrict => "NON-STRICT",
            Self::Skip => "SKIP",
            Self::Info => "INFO",
        }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a case found, before its level turns it into a verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finding {
    /// The requirement holds.
    Holds,
    /// The requirement is broken: why, in one sentence.
    Broken(String),
    /// Not judged: why.
    Skip(String),
    /// Observed, not judged.
    Info(String),
}

impl Finding {
    /// The verdict for a requirement of `level`: a broken MUST is FAIL, a broken SHOULD NON-STRICT.
    pub fn verdict(&self, level: Level) -> Verdict {
        match (self, level) {
            (Self::Holds, _) => Verdict::Pass,
            (Self::Broken(_), Level::Must) => Verdict::Fail,
            (Self::Broken(_), Level::Should) => Verdict::NonStrict,
            (Self::Skip(_), _) => Verdict::Skip,
            (Self::Info(_), _) => Verdict::Info,
        }
    }

    /// The reason (empty for [`Finding::Holds`]).
    pub fn reason(&self) -> &str {
        match self {
            Self::Holds => "",
            Self::Broken(r) | Self::Skip(r) | Self::Info(r) => r,
        }
    }

    /// `Holds` if `ok`, else `Broken(why())`.
    pub fn check(ok: bool, why: impl FnOnce() -> String) -> Self {
        if ok {
            Self::Holds
        } else {
            Self::Broken(why())
        }
    }
}

/// Where a piece of evidence comes from. Evidence that rests on the shim's own report is labelled as such
/// (PROTOCOL.md §13).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum EvidenceSource {
    /// A request the peer sent and the answer it got, as the kit's front door saw them on the wire.
    Wire,
    /// The kit server's own state (its store, its fault plan, its clock).
    Server,
    /// What the shim answered: self-reported by the MFP under test.
    Shim,
    /// The shim's stderr (its log).
    Stderr,
    /// The shim's `state_dir`.
    StateDir,
    /// What the kit did (set a fault, moved the clock, approved a code).
    Kit,
}

impl EvidenceSource {
    /// The label shown in reports.
    pub fn label(self) -> &'static str {
        match self {
            Self::Wire => "wire",
            Self::Server => "server state",
            Self::Shim => "shim (self-reported)",
            Self::Stderr => "shim stderr",
            Self::StateDir => "state_dir",
            Self::Kit => "kit",
        }
    }
}

/// One line of evidence, already redacted (R-SEC-1: reports never carry a secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Evidence {
    /// Where it comes from.
    pub source: EvidenceSource,
    /// Milliseconds since the case started.
    pub at_ms: u64,
    /// What was seen or done.
    pub text: String,
}

/// Why a case could not be played to its end.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CaseError {
    /// The shim broke the shim protocol (docs/protocol.md §8: no answer in time, not one JSON line, exited): the
    /// case fails.
    #[error("the shim broke the shim protocol (docs/protocol.md §8): {0}")]
    Shim(String),
    /// The shim answered an operation `{"ok":false,"error":"unsupported"}`: the case is skipped (PROTOCOL.md §13).
    #[error("the shim does not support `{0}`")]
    Unsupported(String),
    /// The MFP did something the case cannot continue from (a refused operation, a state never reached): the
    /// requirement the case checks could not be shown to hold.
    #[error("{0}")]
    Peer(String),
    /// The server under test does not offer a control the case needs (`/sim/clock/advance`, `/sim/store`): the
    /// case is skipped with that reason.
    #[error("the server does not offer {0}")]
    NotOffered(String),
    /// The kit itself failed (a server that did not start, a temporary directory that could not be made).
    #[error("kit error: {0}")]
    Kit(String),
}

impl CaseError {
    /// The finding a case that stopped with this error gets: SKIP for an unsupported operation, otherwise broken
    /// (a case that cannot show its requirement holds does not pass).
    pub fn finding(&self) -> Finding {
        match self {
            Self::Unsupported(op) => {
                Finding::Skip(format!("the shim answered `unsupported` to `{op}` (PROTOCOL.md §13)"))
            }
            Self::NotOffered(what) => Finding::Skip(format!("the server does not offer {what}, which this case needs")),
            other => Finding::Broken(other.to_string()),
        }
    }
}

/// The future a client-mode case returns.
pub type CaseFuture<'a> = Pin<Box<dyn Future<Output = Result<Finding, CaseError>> + Send + 'a>>;

/// How a client-mode case is played: `setup` adjusts the environment before anything starts (server settings,
/// transport, answer rewrites); `run` drives the shim and judges.
#[derive(Clone, Copy)]
pub struct ClientCase {
    /// Adjusts the per-case environment before it starts.
    pub setup: fn(&mut ClientSetup),
    /// Plays the case.
    pub run: for<'a> fn(&'a mut ClientEnv) -> CaseFuture<'a>,
}

/// How a server-mode case is played.
#[derive(Clone, Copy)]
pub struct ServerCase {
    /// Whether the case moves the server's clock or locks an account: such cases run alone, after the others
    /// (they share the vendor's server).
    pub exclusive: bool,
    /// Whether the case also runs against a generic OAuth server ([`Profile::Oauth`]): it needs nothing but RFC
    /// endpoints, the fixture's `client_id` and `scope`, and approvals (the Roger API or `--approve-command`).
    pub oauth: bool,
    /// Plays the case.
    pub run: for<'a> fn(&'a mut ServerEnv) -> CaseFuture<'a>,
}

/// A case of the catalogue.
#[derive(Clone, Copy)]
pub struct Case {
    /// Stable ID: `<source>/<section or rule>/<slug>`, e.g. `rfc8628/3.5/slow-down-adds-5s`.
    pub id: &'static str,
    /// The area (the file under `conform/cases/` that declares it).
    pub area: Area,
    /// The requirement, as one sentence about the peer under test.
    pub requirement: &'static str,
    /// Where the requirement comes from: RFC sections (`RFC 8628 §3.5`) and PROTOCOL.md rule IDs (`R-POLL-1`) or
    /// sections (`PROTOCOL §12`), each a key of [`super::coverage::RULES`].
    pub sources: &'static [&'static str],
    /// MUST or SHOULD (MUST only with [`Basis::Rfc`]).
    pub level: Level,
    /// What the case judges: an RFC requirement or a Roger choice.
    pub basis: Basis,
    /// Why the case judges at its level: the RFC sentence it rests on, or the Roger choice and what the RFCs
    /// allow instead (one or two sentences; listed per case in docs/conformance.md).
    pub rationale: &'static str,
    /// Mutants of our own MFP or server that this case must catch (the suite's self-test).
    pub aimed_at: &'static [&'static str],
    /// How the case is played in client mode.
    pub client: Option<ClientCase>,
    /// How the case is played in server mode.
    pub server: Option<ServerCase>,
}

impl fmt::Debug for Case {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Case")
            .field("id", &self.id)
            .field("area", &self.area)
            .field("level", &self.level)
            .field("basis", &self.basis)
            .field("modes", &self.modes())
            .finish()
    }
}

impl Case {
    /// The modes the case runs in.
    pub fn modes(&self) -> Vec<Mode> {
        let mut m = Vec::new();
        if self.client.is_some() {
            m.push(Mode::Client);
        }
        if self.server.is_some() {
            m.push(Mode::Server);
        }
        m
    }

    /// Whether the case runs in `mode`.
    pub fn runs_in(&self, mode: Mode) -> bool {
        self.modes().contains(&mode)
    }

    /// Whether the case runs against a server of `profile` (every server-mode case runs against a Roger server).
    pub fn runs_in_profile(&self, profile: Profile) -> bool {
        match profile {
            Profile::Roger => self.server.is_some(),
            Profile::Oauth => self.server.is_some_and(|s| s.oauth),
        }
    }

    /// Whether `pattern` (a case ID with `*` for any run of characters and `?` for one) names this case.
    pub fn matches(&self, pattern: &str) -> bool {
        glob_match(pattern, self.id)
    }
}

/// `*` matches any run of characters (including `/`), `?` one character; everything else itself.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    // Iterative matcher with one backtrack point (the last `*`): linear in practice, never exponential.
    let (mut pi, mut ti) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '*' {
        pi += 1;
    }
    pi == p.len()
}

/// The names of the mutants of our own MFP (`roger-sim mfp --mutant NAME`, [`MfpMutant::ALL`]), one per kind of
/// real-world mistake; client-mode cases name the ones they catch in [`Case::aimed_at`].
///
/// [`MfpMutant::ALL`]: crate::mfp::mutant::MfpMutant::ALL
pub fn mfp_mutants() -> Vec<&'static str> {
    crate::mfp::mutant::MfpMutant::ALL.iter().map(|m| m.name()).collect()
}

/// The names of the mutants of our own server (`roger-sim server --mutant NAME`, [`ServerMutant::ALL`]);
/// server-mode cases name the ones they catch.
///
/// [`ServerMutant::ALL`]: crate::server::mutant::ServerMutant::ALL
pub fn server_mutants() -> Vec<&'static str> {
    crate::server::mutant::ServerMutant::ALL.iter().map(|m| m.name()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob() {
        assert!(glob_match("rfc8628/*", "rfc8628/3.5/slow-down-adds-5s"));
        assert!(glob_match("*slow-down*", "rfc8628/3.5/slow-down-adds-5s"));
        assert!(glob_match("rfc8628/3.?/x", "rfc8628/3.5/x"));
        assert!(glob_match("exact", "exact"));
        assert!(!glob_match("exact", "exactly"));
        assert!(!glob_match("rfc8628/*", "roger/R-TOK-1/x"));
        assert!(glob_match("*", ""));
        assert!(glob_match("a*b*c", "axxbyyc"));
        assert!(!glob_match("a*b*c", "axxbyy"));
    }

    #[test]
    fn verdict_by_level() {
        let broken = Finding::Broken("x".into());
        assert_eq!(broken.verdict(Level::Must), Verdict::Fail);
        assert_eq!(broken.verdict(Level::Should), Verdict::NonStrict);
        assert_eq!(Finding::Holds.verdict(Level::Must), Verdict::Pass);
        assert_eq!(Finding::Skip("s".into()).verdict(Level::Must), Verdict::Skip);
        assert_eq!(Finding::Info("i".into()).verdict(Level::Should), Verdict::Info);
        assert_eq!(CaseError::Unsupported("pin".into()).finding().verdict(Level::Must), Verdict::Skip);
        assert_eq!(CaseError::Shim("silent".into()).finding().verdict(Level::Must), Verdict::Fail);
    }

    #[test]
    fn verdict_names() {
        assert_eq!(serde_json::to_string(&Verdict::NonStrict).unwrap(), "\"NON-STRICT\"");
        assert_eq!(Verdict::NonStrict.as_str(), "NON-STRICT");
        assert_eq!(serde_json::to_string(&Level::Must).unwrap(), "\"MUST\"");
    }
}
