//! A vendor-style printer client that registers itself with a Roger server through roger-proto's async driver,
//! and stays registered across restarts.
//!
//! ```text
//! cargo run -p roger-examples --bin register_printer -- \
//!     --discovery https://discovery.example [--region eu] [--ca ca.pem] [--state-dir ./printer-state] \
//!     [--client-id emb-example] [--allow-loopback-http]
//! ```
//!
//! What it shows, in the order a firmware engineer needs it:
//! 1. discovery and RFC 8414 metadata, validated (R-DISC-2, R-META-1);
//! 2. restoring the connection from the state directory (a power cycle keeps the registration);
//! 3. otherwise a registration: the QR payload and the user code shown side by side (R-QR-1), polling per
//!    RFC 8628 §3.5 handled by the state machine;
//! 4. persisting the state the lifecycle hands out, atomically (write, fsync, rename), so a crash never leaves a
//!    half-written file and the newest refresh token is never lost (R-TOK-2).
//!
//! Only roger-proto is used; to put it on your own HTTP stack, implement
//! `roger_proto::driver::HttpTransport` (one async `send` method) instead of using `ReqwestTransport`.

use std::process::ExitCode;

use roger_examples::{driver, exit_code, load, parse_printer_args, store_atomically, transport, PrinterArgs};
use roger_proto::driver::Clock;
use roger_proto::lifecycle::{Connection, ConnectionState, LifecycleConfig, LifecycleEvent};

const USAGE: &str = "usage: register_printer --discovery URL [--region ID] [--ca PEM] [--state-dir DIR] \
[--client-id emb-VENDOR] [--allow-loopback-http] [--timeout-secs N]";

async fn run(args: PrinterArgs) -> Result<(), String> {
    // Deviations of the server (docs/protocol.md §7) are written to stderr as warnings, once each.
    let driver = driver(transport(args.ca.as_deref())?);

    let region =
        driver.discover(&args.discovery, args.region.as_deref(), args.policy).await.map_err(|e| e.to_string())?;
    eprintln!("region {} ({}), API {}", region.id, region.name, region.api);
    let endpoints = driver.metadata(&region.api, args.policy).await.map_err(|e| e.to_string())?;
    eprintln!("metadata valid: issuer is the API origin (R-META-1)");

    let config = LifecycleConfig::new(&args.client_id, "Example MFP", "EX-0001");
    let now = driver.clock().now();
    let mut connection = match load(&args.state_dir)? {
        Some(saved) => {
            eprintln!("restoring the saved connection from {}", args.state_dir.display());
            Connection::restore(config, saved, now)
        }
        None => Connection::new(config),
    };
    if connection.state() == ConnectionState::Disconnected {
        eprintln!("this printer was disconnected from its tenant; registering it again (a new device)");
        connection.start_registration(now);
    }

    let mut store_error = None;
    let give_up = driver.clock().now() + args.timeout;
    let state_dir = args.state_dir.clone();
    let result = driver
        .run_lifecycle(
            &endpoints,
            &mut connection,
            |event| match event {
                LifecycleEvent::ShowRegistration {
                    verification_uri_complete,
                    verification_uri,
                    user_code_display,
                    ..
                } => {
                    // A real panel draws the QR; R-QR-1 requires the user code beside it. A server that sends no
                    // verification_uri_complete gets no QR: the page and the code (docs/protocol.md §7).
                    match verification_uri_complete {
                        Some(qr) => println!("Scan to register this printer: {}", qr.secret()),
                        None => println!(
                            "Open {} to register this printer",
                            verification_uri.as_deref().unwrap_or("the Roger app")
                        ),
                    }
                    println!("or enter the code {user_code_display} at the verification page");
                }
                // Already written to stderr by the driver's sink, once per kind.
                LifecycleEvent::PeerViolation(_) => {}
                LifecycleEvent::Persist(value) => {
                    if let Err(e) = store_atomically(&state_dir, value) {
                        store_error = Some(e.to_string());
                    }
                }
                LifecycleEvent::Registered { device_id, tenant_id } => {
                    eprintln!("registered as device {device_id} in tenant {}", tenant_id.as_deref().unwrap_or("?"));
                }
                other => eprintln!("{other:?}"),
            },
            // Registered and holding a device token (a restored printer refreshes first).
            |c, now| c.device_token(now).is_some(),
            Some(give_up),
        )
        .await;
    if let Some(e) = store_error {
        return Err(format!("could not persist the connection: {e}"));
    }
    result.map_err(|e| e.to_string())?;
    if let Some(value) = connection.persisted() {
        store_atomically(&args.state_dir, &value).map_err(|e| e.to_string())?;
    }
    println!("device_id={}", connection.device_id().unwrap_or("?"));
    Ok(())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    match parse_printer_args(std::env::args().skip(1), USAGE) {
        Ok(args) => exit_code(run(args).await, false),
        Err(usage) => exit_code(Err(usage), true),
    }
}
