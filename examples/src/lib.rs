//! What the example printers share: their command line, and keeping the connection in a state directory, written
//! atomically (R-TOK-2: the newest refresh token must never be lost, and a crash must never leave a half-written
//! file).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use roger_proto::discovery::TransportPolicy;
use roger_proto::driver::reqwest_transport::ReqwestTransport;
use roger_proto::driver::Driver;
use roger_proto::error::PeerReport;
use roger_proto::lifecycle::PersistedConnection;

pub mod transfer;

/// The options every example printer takes.
#[derive(Debug, Clone, PartialEq)]
pub struct PrinterArgs {
    /// Discovery base URL (PROTOCOL.md §2).
    pub discovery: String,
    /// Region id (default: the first offered).
    pub region: Option<String>,
    /// Extra CA certificate (PEM) to trust.
    pub ca: Option<PathBuf>,
    /// Where the connection state lives.
    pub state_dir: PathBuf,
    /// `emb-<vendor>` (PROTOCOL.md §3).
    pub client_id: String,
    /// TLS only, or plain HTTP allowed on loopback (R-DISC-2, tests only).
    pub policy: TransportPolicy,
    /// How long the example may run.
    pub timeout: Duration,
}

/// The options after the program name: `--discovery URL [--region ID] [--ca PEM] [--state-dir DIR]
/// [--client-id emb-VENDOR] [--allow-loopback-http] [--timeout-secs N]`. The error says what is wrong, followed by
/// `usage`.
pub fn parse_printer_args(args: impl IntoIterator<Item = String>, usage: &str) -> Result<PrinterArgs, String> {
    let mut args = args.into_iter();
    let mut out = PrinterArgs {
        discovery: String::new(),
        region: None,
        ca: None,
        state_dir: PathBuf::from("printer-state"),
        client_id: "emb-example".into(),
        policy: TransportPolicy::TlsOnly,
        timeout: Duration::from_secs(600),
    };
    while let Some(a) = args.next() {
        let mut value = |name: &str| args.next().ok_or_else(|| format!("{name} needs a value\n{usage}"));
        match a.as_str() {
            "--discovery" => out.discovery = value("--discovery")?,
            "--region" => out.region = Some(value("--region")?),
            "--ca" => out.ca = Some(value("--ca")?.into()),
            "--state-dir" => out.state_dir = value("--state-dir")?.into(),
            "--client-id" => out.client_id = value("--client-id")?,
            "--timeout-secs" => {
                out.timeout =
                    Duration::from_secs(value("--timeout-secs")?.parse().map_err(|_| "--timeout-secs: a number")?)
            }
            "--allow-loopback-http" => out.policy = TransportPolicy::AllowLoopbackPlain,
            "-h" | "--help" => return Err(usage.into()),
            other => return Err(format!("unknown argument {other:?}\n{usage}")),
        }
    }
    if out.discovery.is_empty() {
        return Err(format!("--discovery is required\n{usage}"));
    }
    if !roger_proto::token::client_id::is_emb(&out.client_id) {
        return Err(format!("--client-id must look like emb-<vendor>, got {:?}", out.client_id));
    }
    Ok(out)
}

/// A transport trusting the system roots, plus `ca` if given.
pub fn transport(ca: Option<&Path>) -> Result<ReqwestTransport, String> {
    let pem = match ca {
        Some(p) => Some(std::fs::read(p).map_err(|e| format!("cannot read CA {}: {e}", p.display()))?),
        None => None,
    };
    ReqwestTransport::new(pem.as_deref()).map_err(|e| e.to_string())
}

/// A driver over `transport` that writes every deviation of the server it reads past or refuses to stderr as a
/// warning, once per kind (docs/protocol.md §7): `warning: POST /oauth/device_authorization: … (RFC 8628 §6.1, …)`.
/// The line names the endpoint, the rule and the violation, never a value. Your firmware: its own log, at warn
/// level, so a printer that does not register shows why on the first screen.
pub fn driver(transport: ReqwestTransport) -> Driver<ReqwestTransport> {
    Driver::new(transport).on_peer_report(|r| eprintln!("{}", warning(r)))
}

/// The warning line of a [`PeerReport`] (see [`driver`]).
pub fn warning(r: &PeerReport) -> String {
    format!("warning: the server's answer deviates: {r}")
}

/// The exit code of an example: 0, 2 for a bad command line (the message is the usage), 1 for a failed run.
pub fn exit_code(outcome: Result<(), String>, usage_error: bool) -> ExitCode {
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) if usage_error => {
            eprintln!("{msg}");
            ExitCode::from(2)
        }
        Err(msg) => {
            eprintln!("error: {msg}");
            ExitCode::FAILURE
        }
    }
}

/// The state file inside the state directory.
pub const STATE_FILE: &str = "connection.json";

/// Writes `value` so that a crash leaves either the old or the new file: write a temporary file, fsync it, rename
/// it over the old one, fsync the directory.
pub fn store_atomically(dir: &Path, value: &PersistedConnection) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join("connection.json.tmp");
    let dst = dir.join(STATE_FILE);
    let bytes = serde_json::to_vec_pretty(value).map_err(std::io::Error::other)?;
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, &dst)?;
    std::fs::File::open(dir)?.sync_all()
}

/// The saved connection, `None` when the directory holds none yet.
pub fn load(dir: &Path) -> Result<Option<PersistedConnection>, String> {
    match std::fs::read(dir.join(STATE_FILE)) {
        Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| format!("state file unreadable: {e}")),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("cannot read the state directory: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(v: &[&str]) -> Result<PrinterArgs, String> {
        parse_printer_args(v.iter().map(|s| s.to_string()), "usage")
    }

    #[test]
    fn printer_args_need_a_discovery_url_and_an_emb_client() {
        let a = args(&["--discovery", "https://d.example", "--allow-loopback-http", "--timeout-secs", "5"]).unwrap();
        assert_eq!(a.policy, TransportPolicy::AllowLoopbackPlain);
        assert_eq!(a.timeout, Duration::from_secs(5));
        assert!(args(&[]).unwrap_err().contains("--discovery is required"));
        assert!(args(&["--discovery", "x", "--client-id", "bad"]).unwrap_err().contains("emb-<vendor>"));
        assert!(args(&["--discovery"]).unwrap_err().contains("needs a value"));
        assert!(args(&["--discovery", "x", "--bogus"]).unwrap_err().contains("unknown argument"));
    }

    #[test]
    fn a_missing_state_is_none_and_garbage_is_an_error() {
        let dir = std::env::temp_dir().join(format!("roger-examples-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        assert!(load(&dir).unwrap().is_none());
        std::fs::write(dir.join(STATE_FILE), b"{not json").unwrap();
        assert!(load(&dir).unwrap_err().contains("unreadable"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
