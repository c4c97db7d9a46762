//! `roger-sim conform`: the conformance kit. A vendor points it at its MFP client (through a shim,
//! docs/protocol.md §8) or its server and gets a verdict per rule, fast, in CI, with no human at the printer. A
//! peer that follows the RFCs never FAILs for a choice Roger made beyond them (see [`case::Basis`]).
//!
//! * [`case`]: what a case is (ID, requirement, sources, level, basis, modes, mutants it is aimed at) and the
//!   verdicts;
//! * [`cases`]: the catalogue, one file per area;
//! * [`env`](mod@env): the world of one client-mode case (its own server, the judge's proxy, a fresh shim, the phone);
//! * [`broker`]: the kit's AMQP broker for the push cases (per-case name prefixes, a cut between MFP and broker);
//! * [`proxy`]: the recording reverse proxy the MFP talks to, and the answers it can rewrite;
//! * [`judge`]: readings of the recorded exchanges against the timing model and the token rules;
//! * [`server_env`]: the world of one server-mode case (the vendor's server, its accounts, the kit's MFP and phone
//!   moves);
//! * [`shim_driver`]: the §13 line protocol with its time limits;
//! * [`tls_probe`]: hand-crafted ClientHellos and the server's first answer (R-DISC-2 in server mode);
//! * [`runner`]: cases in parallel, each with its own seed and time limit;
//! * [`report`] and [`expected`]: terminal, JSON, JUnit and HTML reports; the expected-failures file and the
//!   expected-verdicts table;
//! * [`coverage`]: which rules the catalogue covers (the table in `docs/conformance.md`).
//!
//! `roger-sim conform client --shim "roger-sim mfp --shim"` judges our own MFP, `roger-sim conform server
//! --discovery URL --fixture accounts.toml` a Roger server (ours: `roger-sim server --plain-http`), and
//! `roger-sim conform server --issuer URL --profile oauth --approve-command CMD --fixture accounts.toml` any OAuth
//! 2.0 server with the device grant.

pub mod broker;
pub mod case;
pub mod cases;
pub mod coverage;
pub mod env;
pub mod expected;
pub mod judge;
pub mod proxy;
pub mod report;
pub mod runner;
pub mod server_env;
pub mod shim_driver;
pub mod tls_probe;
pub mod vault;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use case::{mfp_mutants, server_mutants, Case, Mode, Profile};
use env::{KitContext, KitTls};
use expected::{ExpectedFailures, ExpectedVerdicts};
use report::{shell_quote, Report, RunInfo};
use runner::{CaseResult, RunOptions};

/// Arguments of `roger-sim conform`.
#[derive(Debug, clap::Args)]
pub struct ConformArgs {
    /// Print the catalogue (ID, level, modes, area, requirement, sources, mutants aimed at) and exit.
    #[arg(long)]
    pub list: bool,
    /// What is under test.
    #[command(subcommand)]
    pub mode: Option<ConformMode>,
}

/// The side under test.
#[derive(Debug, clap::Subcommand)]
pub enum ConformMode {
    /// Judge an MFP client through its shim (docs/protocol.md §8): for each case the kit starts its own server, its
    /// phone and a fresh shim process, plays the case and judges from what it saw on the wire, the shim's answers
    /// (labelled self-reported), its stderr and its state_dir. Exit code 1 iff a MUST failed without an
    /// expected-failures excuse, or a verdict differs from --expected-verdicts; 2 for bad arguments.
    Client(ClientArgs),
    /// Judge a server with the kit's MFP and phone moves: device grant and slow_down enforcement, code format,
    /// one-time codes, rotation, lost-answer grace, reuse detection, revocation, error shapes, no-store headers.
    /// A Roger server (metadata with `roger_api_version`) gets every case; a generic OAuth server (`--profile
    /// oauth`, detected when the metadata has no `roger_api_version`) the RFC-level ones, the Roger-only ones
    /// SKIP. Cases that need the clock or the store use the server's `/sim/` control API and are skipped when it is
    /// not offered. Exit codes as for `client`.
    Server(ServerArgs),
}

/// What every mode shares: which cases, how many at a time, the seed, the reports.
#[derive(Debug, Clone, clap::Args)]
pub struct CommonArgs {
    /// Run only these cases (IDs or globs with `*` and `?`; repeatable). Default: every case of the mode.
    #[arg(long = "case", value_name = "ID_OR_GLOB")]
    pub cases: Vec<String>,
    /// Run only the cases aimed at this mutant of our own MFP or server (the suite's self-test).
    #[arg(long, value_name = "MUTANT")]
    pub aimed_at: Option<String>,
    /// Cases at a time.
    #[arg(long, default_value_t = 8)]
    pub jobs: usize,
    /// The run's seed (fixture secrets, server randomness, fault draws); the same seed replays the run. Random
    /// when absent, and printed in every report.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Time limit of one case, in seconds.
    #[arg(long, default_value_t = 90)]
    pub case_timeout_secs: u64,
    /// Write the JSON report here (schema `roger-conform-report/1`, docs/conformance.md).
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Write a JUnit XML report here (for CI).
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,
    /// Write the self-contained HTML report here.
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
    /// Expected failures (TOML: case, reason, expires); excused failures do not fail the run until they expire.
    #[arg(long, value_name = "FILE")]
    pub expected_failures: Option<PathBuf>,
    /// The committed verdict of every case (TOML or JSON: case ID → verdict, or {verdict, reason}); the run exits 1
    /// with a diff (case, expected, got, reason) when any verdict differs, or a case that ran is not listed.
    #[arg(long, value_name = "FILE")]
    pub expected_verdicts: Option<PathBuf>,
    /// No progress lines on stderr.
    #[arg(long)]
    pub quiet: bool,
}

impl CommonArgs {
    /// Defaults: every case, 8 at a time, a random seed, 90 s per case, no report files.
    pub fn new() -> Self {
        Self {
            cases: Vec::new(),
            aimed_at: None,
            jobs: 8,
            seed: None,
            case_timeout_secs: 90,
            json: None,
            junit: None,
            html: None,
            expected_failures: None,
            expected_verdicts: None,
            quiet: false,
        }
    }
}

impl Default for CommonArgs {
    fn default() -> Self {
        Self::new()
    }
}

/// Arguments of `roger-sim conform server`.
#[derive(Debug, Clone, clap::Args)]
pub struct ServerArgs {
    /// The server's Roger discovery base URL (regions at `{discovery}/regions`).
    #[arg(long, required_unless_present = "issuer", conflicts_with = "issuer")]
    pub discovery: Option<String>,
    /// Instead of --discovery: the server's issuer identifier (RFC 8414). The metadata is read from
    /// `/.well-known/oauth-authorization-server`, or from `{issuer}/.well-known/openid-configuration` when that
    /// answers 404 (RFC 8414 §5; noted in the report).
    #[arg(long, value_name = "URL")]
    pub issuer: Option<String>,
    /// The accounts the kit may use (TOML; format in docs/conformance.md): for a Roger server the tenant,
    /// client_id, an admin and at least two users with PIN (the last one is locked out by a case); for a generic
    /// OAuth server only `client_id` and `scope`.
    #[arg(long, value_name = "FILE")]
    pub fixture: PathBuf,
    /// Judge the server as a Roger server (`roger`: every case) or a generic OAuth 2.0 server (`oauth`: the
    /// RFC-level cases; the Roger-only ones SKIP). Default: `roger` when the metadata names `roger_api_version`,
    /// else `oauth`.
    #[arg(long, value_enum)]
    pub profile: Option<Profile>,
    /// How the kit approves or denies a user code when it cannot do so through the Roger API: run with `sh -c`,
    /// with `ROGER_USER_CODE` (the code as the server sent it), `ROGER_VERIFICATION_URI` and
    /// `ROGER_APPROVE=approve|deny` in its environment; exit 0 means the user approved or denied.
    #[arg(long, value_name = "CMD")]
    pub approve_command: Option<String>,
    /// An extra CA certificate (PEM) to trust.
    #[arg(long, value_name = "FILE")]
    pub ca: Option<PathBuf>,
    /// Accept plain http on loopback addresses (R-DISC-2 allows it only for tests).
    #[arg(long)]
    pub allow_loopback_http: bool,
    /// Cases, jobs, seed, reports.
    #[command(flatten)]
    pub common: CommonArgs,
}

impl ServerArgs {
    /// A run against the Roger server at `discovery` with the accounts in `fixture`, with the defaults.
    pub fn new(discovery: impl Into<String>, fixture: impl Into<PathBuf>) -> Self {
        Self {
            discovery: Some(discovery.into()),
            issuer: None,
            fixture: fixture.into(),
            profile: None,
            approve_command: None,
            ca: None,
            allow_loopback_http: false,
            common: CommonArgs::new(),
        }
    }
}

/// Arguments of `roger-sim conform client`.
#[derive(Debug, Clone, clap::Args)]
pub struct ClientArgs {
    /// The shim command, run with `sh -c` once per case, e.g. "roger-sim mfp --shim".
    #[arg(long)]
    pub shim: String,
    /// The client id given to the MFP in `start` (`emb-<vendor>`).
    #[arg(long, default_value = env::DEFAULT_CLIENT_ID)]
    pub client_id: String,
    /// Serve the MFP plain HTTP on loopback (`ca: null`) instead of TLS with the kit's CA, for shims that allow it.
    /// The TLS cases use TLS regardless.
    #[arg(long)]
    pub plain_http: bool,
    /// Where case directories (state_dir, fixtures, the kit's CA) go; a fresh temporary directory by default.
    #[arg(long, value_name = "DIR")]
    pub work_dir: Option<PathBuf>,
    /// Keep the case directories after the run.
    #[arg(long)]
    pub keep_work_dir: bool,
    /// An AMQP 0-9-1 broker for the push cases (R-PUSH-1), e.g. `amqp://guest:guest@127.0.0.1:5672/%2f`; default:
    /// the `ROGER_AMQP_URL` environment variable, if set. Each push case starts its server on this broker under a
    /// name prefix of its own and deletes its exchange and queues afterwards; the MFP finds the broker through
    /// discovery and `GET /api/v1/device/push`. Without a broker the push cases are skipped. Plain `amqp` and the
    /// simulator handing its account to the MFP are for a loopback test broker only.
    #[arg(long, value_name = "URL")]
    pub amqp: Option<String>,
    /// Cases, jobs, seed, reports.
    #[command(flatten)]
    pub common: CommonArgs,
}

impl ClientArgs {
    /// A run of `shim` with the defaults.
    pub fn new(shim: impl Into<String>) -> Self {
        Self {
            shim: shim.into(),
            client_id: env::DEFAULT_CLIENT_ID.into(),
            plain_http: false,
            work_dir: None,
            keep_work_dir: false,
            amqp: None,
            common: CommonArgs::new(),
        }
    }
}

/// Why a run could not start (exit code 2).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConformError {
    /// A `--case` pattern names no case of the mode.
    #[error("--case {pattern:?} names no {mode}-mode case (see roger-sim conform --list)")]
    NoSuchCase {
        /// The pattern.
        pattern: String,
        /// The mode.
        mode: &'static str,
    },
    /// `--aimed-at` names no known mutant of the mode's side.
    #[error("--aimed-at {name:?} is not a mutant of this side ({known})")]
    NoSuchMutant {
        /// The name given.
        name: String,
        /// The known names.
        known: String,
    },
    /// A bad option value.
    #[error("{0}")]
    Usage(String),
    /// The expected-failures file.
    #[error("{0}")]
    Expected(#[from] expected::ExpectedError),
    /// The expected-verdicts file.
    #[error("{0}")]
    Verdicts(#[from] expected::VerdictsError),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The kit's TLS material could not be made.
    #[error("the kit's CA: {0}")]
    Tls(String),
}

/// The cases of `mode` that `args` selects, in catalogue order.
pub fn select_cases(mode: Mode, args: &CommonArgs) -> Result<Vec<Case>, ConformError> {
    let all: Vec<Case> = cases::catalogue().into_iter().filter(|c| c.runs_in(mode)).collect();
    for p in &args.cases {
        if !all.iter().any(|c| c.matches(p)) {
            return Err(ConformError::NoSuchCase { pattern: p.clone(), mode: mode.as_str() });
        }
    }
    if let Some(m) = &args.aimed_at {
        let known = match mode {
            Mode::Client => mfp_mutants(),
            Mode::Server => server_mutants(),
        };
        if !known.contains(&m.as_str()) {
            return Err(ConformError::NoSuchMutant { name: m.clone(), known: known.join(", ") });
        }
    }
    Ok(all
        .into_iter()
        .filter(|c| args.cases.is_empty() || args.cases.iter().any(|p| c.matches(p)))
        .filter(|c| args.aimed_at.as_deref().is_none_or(|m| c.aimed_at.contains(&m)))
        .collect())
}

fn read(path: &PathBuf) -> Result<String, ConformError> {
    std::fs::read_to_string(path).map_err(|source| ConformError::Io { path: path.clone(), source })
}

fn write(path: &PathBuf, text: &str) -> Result<(), ConformError> {
    std::fs::write(path, text).map_err(|source| ConformError::Io { path: path.clone(), source })
}

/// The expected failures and the expected verdicts a run was given.
struct Expectations {
    failures: ExpectedFailures,
    verdicts: Option<ExpectedVerdicts>,
}

fn check_common(args: &CommonArgs) -> Result<Expectations, ConformError> {
    if args.jobs == 0 || args.case_timeout_secs == 0 {
        return Err(ConformError::Usage("--jobs and --case-timeout-secs must be at least 1".into()));
    }
    let ids: Vec<&str> = cases::catalogue().iter().map(|c| c.id).collect();
    let failures = match &args.expected_failures {
        Some(p) => ExpectedFailures::parse(&read(p)?, &ids)?,
        None => ExpectedFailures::default(),
    };
    let verdicts = match &args.expected_verdicts {
        Some(p) => Some(ExpectedVerdicts::parse(&read(p)?, &ids)?),
        None => None,
    };
    Ok(Expectations { failures, verdicts })
}

fn progress(quiet: bool) -> runner::Progress {
    Arc::new(move |r: &CaseResult, n, total| {
        if !quiet {
            eprintln!("[{n}/{total}] {:<10} {} ({:.1} s)", r.verdict.as_str(), r.case.id, r.duration.as_secs_f64());
        }
    })
}

fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339).unwrap_or_default()
}

/// Builds the report and writes the files `args` names.
fn finish(
    args: &CommonArgs,
    mut info: RunInfo,
    started: Instant,
    results: &[CaseResult],
    expected: &Expectations,
) -> Result<Report, ConformError> {
    info.duration_ms = started.elapsed().as_millis() as u64;
    let today = time::OffsetDateTime::now_utc().date();
    let report = Report::build(&info, results, &expected.failures, expected.verdicts.as_ref(), today);
    if let Some(p) = &args.json {
        write(p, &report.to_json())?;
    }
    if let Some(p) = &args.junit {
        write(p, &report.junit())?;
    }
    if let Some(p) = &args.html {
        write(p, &report.html())?;
    }
    Ok(report)
}

/// The command that reruns a client-mode case of this run (everything but `--case` and `--seed`).
fn client_rerun_prefix(args: &ClientArgs) -> String {
    let mut s = format!("roger-sim conform client --shim {}", shell_quote(&args.shim));
    if args.client_id != env::DEFAULT_CLIENT_ID {
        s.push_str(&format!(" --client-id {}", shell_quote(&args.client_id)));
    }
    if args.plain_http {
        s.push_str(" --plain-http");
    }
    s
}

/// Runs the client-mode cases `args` selects and builds the report (also used by the tests). The reports named
/// in `args` are written; the terminal summary is the caller's to print.
pub async fn run_client(args: &ClientArgs) -> Result<Report, ConformError> {
    if !roger_proto::token::client_id::is_emb(&args.client_id) {
        return Err(ConformError::Usage(format!("--client-id {:?} must look like emb-<vendor>", args.client_id)));
    }
    let common = &args.common;
    let expected = check_common(common)?;
    let selected = select_cases(Mode::Client, common)?;
    let amqp = broker::broker_url(args.amqp.as_deref());
    if let Some(url) = &amqp {
        broker::check_url(url).map_err(|e| ConformError::Usage(format!("--amqp / {}: {e}", broker::AMQP_ENV)))?;
    }
    let seed = common.seed.unwrap_or_else(rand::random);
    let (work_dir, temporary) = match &args.work_dir {
        Some(d) => (d.clone(), false),
        None => {
            let nanos =
                std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
            (std::env::temp_dir().join(format!("roger-conform-{}-{nanos}", std::process::id())), true)
        }
    };
    std::fs::create_dir_all(&work_dir).map_err(|source| ConformError::Io { path: work_dir.clone(), source })?;
    crate::server::tls::install_crypto_provider();
    let tls = KitTls::create(&work_dir).map_err(ConformError::Tls)?;
    let kit = Arc::new(KitContext {
        shim: args.shim.clone(),
        client_id: args.client_id.clone(),
        plain_http: args.plain_http,
        work_dir: work_dir.clone(),
        tls,
        amqp: amqp.clone(),
    });
    let info = RunInfo {
        mode: Mode::Client,
        target: args.shim.clone(),
        profile: None,
        notes: Vec::new(),
        seed,
        started_at: now_rfc3339(),
        duration_ms: 0,
        jobs: common.jobs,
        rerun_prefix: client_rerun_prefix(args),
    };
    let started = Instant::now();
    if !common.quiet {
        eprintln!("roger-sim conform client: {} cases, {} at a time, seed {seed}", selected.len(), common.jobs);
        match amqp.as_deref().and_then(|u| crate::amqp::parse_url(u).ok()) {
            Some(uri) => eprintln!("push cases on the broker at {}", crate::amqp::public_url(&uri)),
            None => eprintln!("no broker (--amqp URL or {}): the push cases are skipped", broker::AMQP_ENV),
        }
    }
    let opts = RunOptions {
        jobs: common.jobs,
        case_timeout: Duration::from_secs(common.case_timeout_secs),
        seed,
        keep_work_dir: args.keep_work_dir,
    };
    let results = runner::run_client(kit, selected, opts, progress(common.quiet)).await;
    let report = finish(common, info, started, &results, &expected);
    if temporary && !args.keep_work_dir {
        let _ = std::fs::remove_dir_all(&work_dir);
    }
    report
}

/// Reads the metadata once to choose the profile: `roger` when it names `roger_api_version`, else `oauth`. The
/// profile and the notes for the report (how it was chosen, where the metadata came from).
async fn detect_profile(ctx: &server_env::ServerContext, seed: u64) -> (Profile, Vec<String>) {
    let probe = Arc::new(server_env::ServerContext { profile: Profile::Oauth, ..ctx.clone() });
    match server_env::ServerEnv::create(probe, "profile-detection", seed).await {
        Ok(env) => {
            let version = env.metadata.get("roger_api_version").and_then(|v| v.as_str()).map(str::to_owned);
            let mut notes: Vec<String> = env
                .into_evidence()
                .into_iter()
                .filter(|e| e.source == case::EvidenceSource::Kit)
                .map(|e| e.text)
                .collect();
            match version {
                Some(v) => {
                    notes.push(format!(
                        "the metadata names roger_api_version {v:?}: judged as a Roger server (profile roger)"
                    ));
                    (Profile::Roger, notes)
                }
                None => {
                    notes.push(
                        "the metadata has no roger_api_version: judged as a generic OAuth server (profile oauth; the \
                         Roger-only cases SKIP; --profile roger judges it as a Roger server)"
                            .into(),
                    );
                    (Profile::Oauth, notes)
                }
            }
        }
        Err(e) => {
            let profile = match ctx.entry {
                server_env::Entry::Discovery(_) => Profile::Roger,
                server_env::Entry::Issuer(_) => Profile::Oauth,
            };
            let why = format!(
                "the metadata could not be read to choose the profile ({e}): judged as profile {}",
                profile.as_str()
            );
            (profile, vec![why])
        }
    }
}

/// Runs the server-mode cases `args` selects against the server at `args.discovery` (or `args.issuer`) and builds
/// the report.
pub async fn run_server(args: &ServerArgs) -> Result<Report, ConformError> {
    let common = &args.common;
    let expected = check_common(common)?;
    let selected = select_cases(Mode::Server, common)?;
    let accounts = server_env::Accounts::parse_lenient(&read(&args.fixture)?).map_err(ConformError::Usage)?;
    let ca_pem = match &args.ca {
        Some(p) => Some(std::fs::read(p).map_err(|source| ConformError::Io { path: p.clone(), source })?),
        None => None,
    };
    let entry = match (&args.discovery, &args.issuer) {
        (Some(d), None) => server_env::Entry::Discovery(d.trim_end_matches('/').to_owned()),
        (None, Some(i)) => server_env::Entry::Issuer(i.clone()),
        _ => return Err(ConformError::Usage("give exactly one of --discovery and --issuer".into())),
    };
    crate::server::tls::install_crypto_provider();
    let seed = common.seed.unwrap_or_else(rand::random);
    let mut ctx = server_env::ServerContext {
        entry: entry.clone(),
        ca_pem,
        allow_loopback_http: args.allow_loopback_http,
        accounts,
        profile: args.profile.unwrap_or(Profile::Roger),
        approve_command: args.approve_command.clone(),
    };
    // The metadata is read once before the cases: to choose the profile, and for what the report notes about it
    // (where it was found).
    let (detected, mut notes) = detect_profile(&ctx, seed).await;
    ctx.profile = detected;
    if let Some(p) = args.profile {
        notes.retain(|n| !n.contains("judged as"));
        notes.push(format!("judged as profile {} (--profile)", p.as_str()));
        ctx.profile = p;
    }
    ctx.accounts.check(ctx.profile).map_err(ConformError::Usage)?;
    if ctx.profile == Profile::Oauth && ctx.approve_command.is_none() {
        notes.push("no --approve-command: the cases that need a user's approval are SKIP".into());
    }
    let profile = ctx.profile;
    let ctx = Arc::new(ctx);
    let mut prefix = match &entry {
        server_env::Entry::Discovery(d) => format!("roger-sim conform server --discovery {}", shell_quote(d)),
        server_env::Entry::Issuer(i) => format!("roger-sim conform server --issuer {}", shell_quote(i)),
    };
    prefix.push_str(&format!(
        " --fixture {} --profile {}",
        shell_quote(&args.fixture.display().to_string()),
        profile.as_str()
    ));
    if let Some(cmd) = &args.approve_command {
        prefix.push_str(&format!(" --approve-command {}", shell_quote(cmd)));
    }
    if let Some(ca) = &args.ca {
        prefix.push_str(&format!(" --ca {}", shell_quote(&ca.display().to_string())));
    }
    if args.allow_loopback_http {
        prefix.push_str(" --allow-loopback-http");
    }
    let info = RunInfo {
        mode: Mode::Server,
        target: entry.url().to_owned(),
        profile: Some(profile),
        notes: notes.clone(),
        seed,
        started_at: now_rfc3339(),
        duration_ms: 0,
        jobs: common.jobs,
        rerun_prefix: prefix,
    };
    let started = Instant::now();
    if !common.quiet {
        eprintln!(
            "roger-sim conform server: {} cases, {} at a time, seed {seed}, profile {}",
            selected.len(),
            common.jobs,
            profile.as_str()
        );
        for n in &notes {
            eprintln!("{n}");
        }
    }
    let opts = RunOptions {
        jobs: common.jobs,
        case_timeout: Duration::from_secs(common.case_timeout_secs),
        seed,
        keep_work_dir: false,
    };
    let results = runner::run_server(ctx, selected, opts, progress(common.quiet)).await;
    finish(common, info, started, &results, &expected)
}

fn outcome(mode: &str, r: Result<Report, ConformError>) -> ExitCode {
    match r {
        Ok(report) => {
            print!("{}", report.terminal());
            ExitCode::from(u8::try_from(report.exit_code).unwrap_or(1))
        }
        Err(e) => {
            eprintln!("roger-sim conform {mode}: {e}");
            ExitCode::from(2)
        }
    }
}

/// `roger-sim conform`.
pub async fn run(args: ConformArgs) -> ExitCode {
    if args.list {
        print!("{}", coverage::listing(&cases::catalogue()));
        return ExitCode::SUCCESS;
    }
    match args.mode {
        None => {
            eprintln!("roger-sim conform: name a mode (`client` or `server`) or pass --list; see --help");
            ExitCode::from(2)
        }
        Some(ConformMode::Client(a)) => outcome("client", run_client(&a).await),
        Some(ConformMode::Server(a)) => outcome("server", run_server(&a).await),
    }
}
