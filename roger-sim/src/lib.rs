//! roger-sim: simulators and tools for the Roger protocol (see the README for the command-line contract).
//!
//! * [`server`]: the Roger server (discovery, metadata, OAuth endpoints, the API, the `/sim` control API) on axum,
//!   driving `roger_proto::server::ServerCore`;
//! * [`drive`]: a fake drive (a Graph subset) on its own listener;
//! * [`bus`]: the push bus (in-process by default);
//! * [`amqp`]: the push bus on a real AMQP 0-9-1 broker (lapin, RabbitMQ) and the receivers' broker consumer;
//! * [`probe`]: discovery and metadata checks against any server;
//! * [`mfp`]: the simulated printer (lifecycle, panel, release, scan, desktop hand-over, the §13 shim);
//! * [`phone`]: the simulated phone app (login with PKCE, QR scan, approvals, jobs, admin);
//! * [`desktop`]: the simulated desktop client (QR login, jobs whose documents stay on the computer);
//! * [`conform`]: `roger-sim conform`, the conformance kit (a vendor's MFP through its shim, judged per rule);
//! * [`demo`]: `roger-sim demo`, the whole system in one process acting out one narrated story.

// Handlers return `Result<_, axum::response::Response>`: the error side is the finished early answer, built once
// and moved out; boxing it would only add an allocation to every refusal.
#![allow(clippy::result_large_err)]

pub mod amqp;
pub mod bus;
pub mod conform;
pub mod demo;
pub mod desktop;
pub mod drive;
pub mod mfp;
pub mod phone;
pub mod probe;
pub mod server;

#[cfg(test)]
pub(crate) mod test_support;
