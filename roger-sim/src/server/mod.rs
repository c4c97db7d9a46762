//! The simulated Roger server: axum on tokio, driving `roger_proto::server::ServerCore`.
//!
//! Start one in-process with [`run::start`] (tests, the demo, the conformance runner: each gets its own port,
//! clock and settings), or from the command line with `roger-sim server` (see the README for the contract).

pub mod api_routes;
pub mod app;
pub mod clock;
pub mod faults;
pub mod fixtures;
pub mod log;
pub mod mutant;
pub mod oauth_routes;
pub mod openapi;
pub mod respond;
pub mod run;
pub mod service;
pub mod sim_routes;
pub mod store;
pub mod tls;
pub mod traffic;

pub use mutant::ServerMutant;
pub use run::{start, RunningServer, ServerConfig, ServerInfo, StartError};
