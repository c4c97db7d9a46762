//! `roger-sim phone`: one phone action against any Roger server, from the command line (issue 4).
//!
//! ```text
//! roger-sim phone --discovery URL --tenant acme --user alice --password alice-pass approve --png panel.png
//! roger-sim phone --discovery URL --user alice jobs                        # password from ROGER_PASSWORD
//! roger-sim phone --discovery URL --user alice jobs --wait 300 --file report.pdf   # until it is queued (push)
//! roger-sim phone --discovery URL --user alice release JOB --device DEV
//! roger-sim phone --discovery URL --user admin approve --qr 'https://…/device?user_code=…' --expect registration
//! ```
//!
//! Each run signs in afresh (PROTOCOL.md §4), does one thing, prints one readable line per fact on stdout and exits
//! `0`, or prints the refusal (with the server's status and problem type or OAuth error) on stderr and exits `1`.

use std::collections::HashSet;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Subcommand, ValueEnum};
use roger_proto::api::{CodeKind, Job};
use roger_proto::secret::{Password, UserCode};

use super::app::{ClientConfig, ServerArgs};
use super::{Phone, PhoneError, PushSource};
use crate::amqp::{BrokerPool, ConsumerOptions};

/// The environment variable read for the password when `--password` is absent (keeps it out of `ps`).
pub const PASSWORD_ENV: &str = "ROGER_PASSWORD";

/// Arguments of `roger-sim phone` (issue 4: the simulated phone).
#[derive(Debug, clap::Args)]
pub struct PhoneArgs {
    /// How to find and trust the server.
    #[command(flatten)]
    pub server: ServerArgs,
    /// The tenant to sign in to.
    #[arg(long, default_value = "acme")]
    pub tenant: String,
    /// User name (or e-mail).
    #[arg(long)]
    pub user: String,
    /// Password; read from the ROGER_PASSWORD environment variable when absent.
    #[arg(long)]
    pub password: Option<String>,
    /// What to do.
    #[command(subcommand)]
    pub action: PhoneAction,
}

/// The code kinds a user can say they expect (R-QR-2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ExpectKind {
    /// A printer session (the panel's dynamic QR, PROTOCOL.md §8).
    Session,
    /// A printer registration (PROTOCOL.md §5; tenant admins only).
    Registration,
    /// A desktop sign-in (PROTOCOL.md §4).
    Desktop,
}

impl From<ExpectKind> for CodeKind {
    fn from(k: ExpectKind) -> Self {
        match k {
            ExpectKind::Session => CodeKind::Session,
            ExpectKind::Registration => CodeKind::Registration,
            ExpectKind::Desktop => CodeKind::Desktop,
        }
    }
}

/// One phone action.
#[derive(Debug, Subcommand)]
pub enum PhoneAction {
    /// Scan a QR (payload or PNG screenshot) or take a typed code, show what it grants (R-QR-2), then approve or
    /// deny it. A QR of another origin than the region's API is refused without any request (R-QR-4).
    Approve {
        /// The QR payload (`{api}/device?user_code=…`).
        #[arg(long, group = "source")]
        qr: Option<String>,
        /// A PNG screenshot of the panel.
        #[arg(long, group = "source")]
        png: Option<PathBuf>,
        /// A code typed by hand (`XXXX-XXXX`).
        #[arg(long, group = "source")]
        code: Option<String>,
        /// Deny instead of approving.
        #[arg(long)]
        deny: bool,
        /// Refuse unless the code is of this kind (RFC 8628 §5.4).
        #[arg(long, value_enum)]
        expect: Option<ExpectKind>,
    },
    /// List the user's queued jobs (PROTOCOL.md §9). With `--wait`, first wait until a job named `--file` (or any
    /// job not queued when the command started) is queued: by push from the region's broker when it names one
    /// (the installation's own queue, re-reading the list on each doorbell and after every reconnect, PROTOCOL.md
    /// §11), else by re-reading the list every 5 s.
    Jobs {
        /// Seconds to wait for the job (0: list at once).
        #[arg(long, default_value_t = 0)]
        wait: u64,
        /// With `--wait`: the file name of the job to wait for.
        #[arg(long, requires = "wait")]
        file: Option<String>,
    },
    /// Release a job to a printer the user has a session at (PROTOCOL.md §9, docs/protocol.md C4).
    Release {
        /// The job id.
        job: String,
        /// The printer's device id.
        #[arg(long)]
        device: String,
    },
    /// Delete one of the user's jobs.
    Delete {
        /// The job id.
        job: String,
    },
    /// End the user's session at a printer (PROTOCOL.md §8 "End").
    EndSession {
        /// The printer's device id.
        #[arg(long)]
        device: String,
    },
    /// Remove a printer (tenant admins; R-TOK-4).
    RemoveDevice {
        /// The printer's device id.
        device: String,
    },
    /// Print everything the server keeps about the user (R-DATA-2), as JSON.
    Export,
}

/// Runs `roger-sim phone` (see the module documentation); exit code `0` on success, `1` on any refusal.
pub async fn run(args: PhoneArgs) -> ExitCode {
    match execute(args).await {
        Ok(lines) => {
            for line in lines {
                println!("{line}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("roger-sim phone: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Why the command failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PhoneCliError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// No password given.
    #[error("no password: pass --password or set {PASSWORD_ENV}")]
    NoPassword,
    /// `approve` needs one of `--qr`, `--png`, `--code`.
    #[error("approve needs --qr, --png or --code")]
    NoCode,
    /// The phone refused or the server answered with a refusal.
    #[error(transparent)]
    Phone(#[from] PhoneError),
    /// An answer could not be printed.
    #[error("cannot print the answer: {0}")]
    Output(String),
}

/// `jobs --wait`: waits for a job named `file` (or any job not queued now) to be queued, by push when the region
/// names a broker (PROTOCOL.md §11), else by re-reading every [`FALLBACK_POLL`](super::push::FALLBACK_POLL).
async fn wait_for_job(
    phone: &mut Phone,
    config: &ClientConfig,
    wait: Duration,
    file: Option<&str>,
    out: &mut Vec<String>,
) -> Result<Vec<Job>, PhoneCliError> {
    let before: HashSet<String> = phone.jobs().await?.into_iter().map(|j| j.id).collect();
    let pool = if phone.app().region().amqp.is_some() {
        let ca_pem = config.ca_pem.as_deref().and_then(|c| String::from_utf8(c.to_vec()).ok());
        let pool = BrokerPool::new(ConsumerOptions::new(config.policy(), ca_pem, "roger-phone"), 1);
        // An installation id made for this run (docs/protocol.md §3.16; one queue per installation).
        let installation = format!("phone-{:08x}", rand::random::<u32>());
        phone.attach_push(PushSource::Broker(pool.clone()), &installation)?;
        Some(pool)
    } else {
        None
    };
    let result = phone
        .wait_for_jobs(wait, |jobs| match file {
            Some(name) => jobs.iter().any(|j| j.file_name == name),
            None => jobs.iter().any(|j| !before.contains(&j.id)),
        })
        .await;
    match phone.detach_push() {
        Some(stats) => out.push(format!(
            "push: {} doorbell(s), {} connect(s), {} re-read(s) of the job list",
            stats.doorbells, stats.connects, stats.rereads
        )),
        None => out.push("push: the region names no broker; re-read the job list every 5 s".into()),
    }
    if let Some(pool) = pool {
        pool.close().await;
    }
    Ok(result?)
}

fn read(path: &PathBuf) -> Result<Vec<u8>, PhoneCliError> {
    std::fs::read(path).map_err(|source| PhoneCliError::Read { path: path.clone(), source })
}

/// Does the work of [`run`] and returns the lines to print.
pub async fn execute(args: PhoneArgs) -> Result<Vec<String>, PhoneCliError> {
    let password = match args.password.clone().or_else(|| std::env::var(PASSWORD_ENV).ok()) {
        Some(p) => Password::new(p),
        None => return Err(PhoneCliError::NoPassword),
    };
    let config = args.server.client_config().map_err(|(path, source)| PhoneCliError::Read { path, source })?;
    let mut phone = Phone::connect(&config).await?;
    // Scan before signing in: a foreign QR is refused without a single request (R-QR-4).
    let scanned: Option<UserCode> = match &args.action {
        PhoneAction::Approve { qr: Some(payload), .. } => Some(phone.scan_payload(payload)?),
        PhoneAction::Approve { png: Some(path), .. } => Some(phone.scan_png(&read(path)?)?),
        PhoneAction::Approve { code: Some(typed), .. } => Some(phone.typed_code(typed)?),
        PhoneAction::Approve { .. } => return Err(PhoneCliError::NoCode),
        _ => None,
    };
    let user = phone.login(&args.tenant, &args.user, password).await?;
    let mut out = vec![format!("signed in as {} at {}", user.username, phone.api())];
    match args.action {
        PhoneAction::Approve { deny, expect, .. } => {
            let code = scanned.ok_or(PhoneCliError::NoCode)?;
            let review = phone.look_up(&code).await?;
            out.push(format!("code: {}", review.describe()));
            if deny {
                phone.deny(&review).await?;
                out.push("denied".into());
            } else {
                phone.approve(&review, expect.map(CodeKind::from)).await?;
                out.push("approved".into());
            }
        }
        PhoneAction::Jobs { wait, file } => {
            let jobs = if wait > 0 {
                wait_for_job(&mut phone, &config, Duration::from_secs(wait), file.as_deref(), &mut out).await?
            } else {
                phone.jobs().await?
            };
            out.push(format!("{} queued job(s)", jobs.len()));
            for j in jobs {
                out.push(format!("{}  {:?}  {} page(s)  {}", j.id, j.source, j.pages, j.file_name));
            }
        }
        PhoneAction::Release { job, device } => {
            let r = phone.release(&job, &device).await?;
            out.push(format!("release of {} requested at printer {}", r.job_id, r.device_id));
        }
        PhoneAction::Delete { job } => {
            phone.delete_job(&job).await?;
            out.push(format!("deleted {job}"));
        }
        PhoneAction::EndSession { device } => {
            phone.end_session(&device).await?;
            out.push(format!("session at {device} ended"));
        }
        PhoneAction::RemoveDevice { device } => {
            phone.remove_device(&device).await?;
            out.push(format!("printer {device} removed"));
        }
        PhoneAction::Export => {
            let export = phone.export().await?;
            out.push(serde_json::to_string_pretty(&export).map_err(|e| PhoneCliError::Output(e.to_string()))?);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, Parser};

    #[derive(Debug, Parser)]
    struct Wrapper {
        #[command(flatten)]
        args: PhoneArgs,
    }

    #[test]
    fn command_line_is_consistent() {
        Wrapper::command().debug_assert();
    }

    #[test]
    fn parses_the_documented_forms() {
        let w = Wrapper::try_parse_from([
            "phone",
            "--discovery",
            "http://127.0.0.1:1",
            "--user",
            "alice",
            "approve",
            "--png",
            "panel.png",
            "--expect",
            "session",
        ])
        .expect("approve --png");
        assert!(matches!(
            w.args.action,
            PhoneAction::Approve { png: Some(_), qr: None, code: None, deny: false, expect: Some(ExpectKind::Session) }
        ));
        assert_eq!(w.args.tenant, "acme");
        let w =
            Wrapper::try_parse_from(["phone", "--discovery", "d", "--user", "a", "release", "J1", "--device", "D1"])
                .expect("release");
        assert!(matches!(w.args.action, PhoneAction::Release { ref job, ref device } if job == "J1" && device == "D1"));
        let both = Wrapper::try_parse_from([
            "phone",
            "--discovery",
            "d",
            "--user",
            "a",
            "approve",
            "--qr",
            "x",
            "--code",
            "y",
        ]);
        assert!(both.is_err(), "one code source at a time");
        let w = Wrapper::try_parse_from([
            "phone",
            "--discovery",
            "d",
            "--user",
            "a",
            "jobs",
            "--wait",
            "30",
            "--file",
            "r.pdf",
        ])
        .expect("jobs --wait --file");
        assert!(matches!(w.args.action, PhoneAction::Jobs { wait: 30, file: Some(ref f) } if f == "r.pdf"));
        let w = Wrapper::try_parse_from(["phone", "--discovery", "d", "--user", "a", "jobs"]).expect("jobs");
        assert!(matches!(w.args.action, PhoneAction::Jobs { wait: 0, file: None }));
        let orphan = Wrapper::try_parse_from(["phone", "--discovery", "d", "--user", "a", "jobs", "--file", "r.pdf"]);
        assert!(orphan.is_err(), "--file needs --wait");
    }
}
