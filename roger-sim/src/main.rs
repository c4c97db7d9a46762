//! `roger-sim`: tools and simulators for the Roger protocol.
//!
//! Today: `roger-sim probe`, which checks a server's discovery and RFC 8414 metadata the way a printer does
//! before it trusts it (R-DISC-1, R-DISC-2, R-META-1), and prints a verdict per rule.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use roger_sim::probe;

/// Simulators and tools for the Roger cloud print protocol.
#[derive(Debug, Parser)]
#[command(name = "roger-sim", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check a server's discovery document and authorization-server metadata as an MFP would (R-DISC-1,
    /// R-DISC-2, R-META-1, RFC 8414 §3.3, RFC 7636 §4.2). Exit code 1 if any MUST fails.
    Probe(probe::ProbeArgs),
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Probe(args) => probe::run(args).await,
    }
}
