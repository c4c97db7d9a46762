//! `roger-sim`: simulators and tools for the Roger protocol.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use roger_sim::server::clock::ClockKind;
use roger_sim::server::{start, ServerConfig};
use roger_sim::{conform, demo, desktop, mfp, phone, probe};

/// Simulators and tools for the Roger cloud print protocol.
#[derive(Debug, Parser)]
#[command(name = "roger-sim", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum ClockArg {
    /// Real time plus an offset that `/sim/clock/advance` moves forward.
    Virtual,
    /// The machine's clock.
    System,
}

/// `roger-sim server`.
#[derive(Debug, clap::Args)]
struct ServerArgs {
    /// Address of the API listener (`127.0.0.1:0` picks a free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Plain HTTP instead of TLS (loopback tests only).
    #[arg(long)]
    plain_http: bool,
    /// The clock every lifetime reads.
    #[arg(long, value_enum, default_value = "virtual")]
    clock: ClockArg,
    /// Tenant fixture (TOML); the built-in default tenant `acme` when absent.
    #[arg(long)]
    fixture: Option<PathBuf>,
    /// SQLite state file: tenants, devices, token families, codes and jobs survive restarts.
    #[arg(long)]
    state: Option<PathBuf>,
    /// Directory for the generated CA and certificate.
    #[arg(long)]
    tls_dir: Option<PathBuf>,
    /// Seed of the server's random generator (reproducible codes and tokens).
    #[arg(long)]
    seed: Option<u64>,
    /// Opens `/sim/` to non-loopback callers that send it in `X-Roger-Sim-Token`.
    #[arg(long)]
    control_token: Option<String>,
    /// TEST ONLY: run a known-broken server that makes this one mistake, to prove the conformance suite
    /// catches it (a loud warning goes to stderr). Never use it for anything else.
    #[arg(long, value_name = "NAME")]
    mutant: Option<roger_sim::server::ServerMutant>,
    /// Push through a real AMQP broker (PROTOCOL.md §11); the in-process bus without it.
    #[command(flatten)]
    amqp: roger_sim::amqp::AmqpArgs,
    /// On SIGTERM or Ctrl-C, delete the exchange and every queue this server declared on the broker (test runs
    /// sharing a broker, e.g. the conformance kit's self-test, leave nothing behind).
    #[arg(long, requires = "amqp")]
    amqp_delete_on_exit: bool,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the Roger server (discovery, metadata, OAuth, API, drive, /sim control API). Prints one JSON line
    /// `{"discovery","api","drive","amqp","ca"}` on stdout once it accepts connections; logs go to stderr;
    /// SIGTERM or Ctrl-C stops it.
    Server(ServerArgs),
    /// Check a server's discovery document and authorization-server metadata as an MFP would (R-DISC-1,
    /// R-DISC-2, R-META-1, RFC 8414 §3.3, RFC 7636 §4.2). Exit code 1 if any MUST fails.
    Probe(probe::ProbeArgs),
    /// Run a simulated printer (MFP): registers (QR in the terminal and as PNG), then the panel loop of
    /// PROTOCOL.md §8, release and scan, desktop hand-over on its own job endpoint. `--shim` speaks the
    /// conformance shim protocol of §13 on stdin/stdout instead.
    Mfp(mfp::MfpArgs),
    /// The simulated phone app: log in (authorization code + PKCE), scan a panel QR (payload or PNG), approve or
    /// deny, list and release jobs, end a session, and as tenant admin approve printers and remove them.
    Phone(phone::PhoneArgs),
    /// The simulated desktop client: log in by QR (device grant, approved on the phone) and submit a job whose
    /// document stays on this computer until a printer asks for it with a ticket (PROTOCOL.md §9).
    Desktop(desktop::DesktopArgs),
    /// The whole system in one process: a narrated story and a summary; exit 0 only if every step did what it said.
    Demo(demo::DemoArgs),
    /// The conformance kit: `conform client --shim "<command>"` judges an MFP client rule by rule (PROTOCOL.md
    /// §13 shim); `--list` prints the catalogue. Exit code 1 iff a MUST failed.
    Conform(conform::ConformArgs),
}

async fn run_server(args: ServerArgs) -> ExitCode {
    let amqp = match args.amqp.config() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("roger-sim server: {e}");
            return ExitCode::from(2);
        }
    };
    let config = ServerConfig {
        listen: args.listen,
        plain_http: args.plain_http,
        clock: match args.clock {
            ClockArg::Virtual => ClockKind::Virtual,
            ClockArg::System => ClockKind::System,
        },
        fixture: args.fixture,
        state: args.state,
        tls_dir: args.tls_dir,
        seed: args.seed,
        control_token: args.control_token,
        mutant: args.mutant,
        amqp,
        ..ServerConfig::default()
    };
    // Watch for SIGTERM (and Ctrl-C) before the contract line goes out: a harness may send it as soon as it has read the line,
    // and a signal that arrives before the handler exists would kill the process uncleanly.
    use tokio::signal::unix::{signal, SignalKind};
    let (mut term, mut int) = match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
        (Ok(t), Ok(i)) => (t, i),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("roger-sim server: cannot watch SIGTERM and SIGINT: {e}");
            return ExitCode::FAILURE;
        }
    };
    let server = match start(config).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("roger-sim server: {e}");
            return ExitCode::FAILURE;
        }
    };
    match serde_json::to_string(&server.info) {
        Ok(line) => println!("{line}"),
        Err(e) => {
            eprintln!("roger-sim server: {e}");
            return ExitCode::FAILURE;
        }
    }
    if let Some(ca) = &server.info.ca {
        eprintln!("roger-sim server: trust the CA at {ca}");
    }
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    if args.amqp_delete_on_exit {
        if let Some(bus) = server.amqp.clone() {
            match bus.delete_topology().await {
                Ok(n) => {
                    eprintln!("roger-sim server: deleted {n} queue(s) and the exchange {}", bus.names().exchange())
                }
                Err(e) => eprintln!("roger-sim server: could not delete the broker topology: {e}"),
            }
        }
    }
    server.stop().await;
    ExitCode::SUCCESS
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("ROGER_LOG").unwrap_or_else(|_| "warn".into()))
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Server(args) => run_server(args).await,
        Command::Probe(args) => probe::run(args).await,
        Command::Mfp(args) => mfp::run(args).await,
        Command::Phone(args) => phone::run(args).await,
        Command::Desktop(args) => desktop::run(args).await,
        Command::Demo(args) => demo::run(args).await,
        Command::Conform(args) => conform::run(args).await,
    }
}
