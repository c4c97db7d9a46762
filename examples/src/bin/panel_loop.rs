//! A vendor's minimal panel loop on roger-proto alone: a registered printer shows the dynamic session QR with its
//! user code, waits until a user approves it on the phone, greets the user, logs out, and keeps its connection
//! state current on disk the whole time.
//!
//! ```text
//! cargo run -p roger-examples --bin register_printer -- --discovery URL --state-dir ./printer   # first, once
//! cargo run -p roger-examples --bin panel_loop -- --discovery URL --state-dir ./printer \
//!     [--region eu] [--ca ca.pem] [--client-id emb-example] [--allow-loopback-http] [--timeout-secs N]
//! ```
//!
//! What it shows:
//! 1. restoring the saved connection (the printer refreshes its device token first, R-TOK-1);
//! 2. [`MfpClient`] + [`Driver::run_mfp`](roger_proto::driver::Driver::run_mfp): the connection lifecycle and the panel session on one task. The panel
//!    fetches a session code (device-bound, PROTOCOL.md §7), renews the QR 10 s before it expires (R-QR-3) and
//!    polls per RFC 8628 §3.5; the example only draws what the machines tell it;
//! 3. the session: `SessionStarted` carries the user (PROTOCOL.md §8 step 1); logout revokes the user token and the
//!    panel fetches a fresh QR (§8 "End");
//! 4. every `Persist` event written atomically (R-TOK-2), so a power cycle at any moment keeps the printer
//!    registered.
//!
//! No push here (a real printer adds its AMQP consumer and feeds `MfpInput::Doorbell`); the panel then polls at the
//! code's interval, as PROTOCOL.md §8 requires without a healthy push connection.

use std::process::ExitCode;

use roger_examples::{driver, exit_code, load, parse_printer_args, store_atomically, transport, PrinterArgs};
use roger_proto::driver::mfp::{MfpClient, MfpEvent, MfpInput};
use roger_proto::driver::Clock;
use roger_proto::lifecycle::{Connection, ConnectionState, LifecycleConfig, LifecycleEvent};
use roger_proto::panel::{PanelConfig, PanelEvent};
use tokio::sync::mpsc;

const USAGE: &str = "usage: panel_loop --discovery URL [--region ID] [--ca PEM] [--state-dir DIR] \
[--client-id emb-VENDOR] [--allow-loopback-http] [--timeout-secs N]";

async fn run(args: PrinterArgs) -> Result<(), String> {
    // Deviations of the server (docs/protocol.md §7) are written to stderr as warnings, once each.
    let driver = driver(transport(args.ca.as_deref())?);
    let region =
        driver.discover(&args.discovery, args.region.as_deref(), args.policy).await.map_err(|e| e.to_string())?;
    let endpoints = driver.metadata(&region.api, args.policy).await.map_err(|e| e.to_string())?;

    let saved = load(&args.state_dir)?
        .ok_or_else(|| format!("no saved connection in {}: run register_printer first", args.state_dir.display()))?;
    let config = LifecycleConfig::new(&args.client_id, "Example MFP", "EX-0001");
    let connection = Connection::restore(config, saved, driver.clock().now());
    if connection.state() != ConnectionState::Connected {
        return Err("the saved printer is not connected to a tenant (run register_printer again)".into());
    }
    let mut client = MfpClient::new(connection, PanelConfig::default(), endpoints);

    let (inputs_tx, mut inputs) = mpsc::channel(8);
    let mut greeted = None;
    let mut store_error = None;
    let mut shown_first_qr = false;
    let state_dir = args.state_dir.clone();
    let on_event = |_: &MfpClient, event: &MfpEvent| match event {
        MfpEvent::Lifecycle(LifecycleEvent::Persist(value)) => {
            if let Err(e) = store_atomically(&state_dir, value) {
                store_error = Some(e.to_string());
            }
        }
        MfpEvent::Panel(PanelEvent::ShowQr(qr)) => {
            // A real panel redraws on every ShowQr (R-QR-3); R-QR-1 requires the user code beside the QR.
            if !shown_first_qr {
                match &qr.verification_uri_complete {
                    Some(uri) => println!("Scan to sign in: {}", uri.secret()),
                    // No verification_uri_complete from the server: no QR (docs/protocol.md §7).
                    None => println!("Open {} to sign in", qr.verification_uri.as_deref().unwrap_or("the Roger app")),
                }
                println!("or enter the code {} at the verification page", qr.user_code_display);
                shown_first_qr = true;
            } else {
                eprintln!("QR renewed: code {}", qr.user_code_display);
            }
        }
        MfpEvent::Panel(PanelEvent::SessionStarted { user, scopes }) => {
            println!("Hello {}: session started ({})", user.username, scopes.join(" "));
            greeted = Some(user.username.clone());
            // The example's user is done at once; a real panel waits for the logout button.
            let _ = inputs_tx.try_send(MfpInput::Logout);
        }
        MfpEvent::Panel(PanelEvent::LoggedOut) => {
            println!("logged out; the panel fetches a fresh QR");
            let _ = inputs_tx.try_send(MfpInput::Stop);
        }
        MfpEvent::Lifecycle(LifecycleEvent::Disconnected { .. }) => {
            eprintln!("the printer was disconnected from its tenant");
            let _ = inputs_tx.try_send(MfpInput::Stop);
        }
        // Written to stderr as warnings by the driver's sink, once per kind (docs/protocol.md §7).
        MfpEvent::Lifecycle(LifecycleEvent::PeerViolation(_)) | MfpEvent::Panel(PanelEvent::PeerViolation(_)) => {}
        other => eprintln!("{other:?}"),
    };
    let outcome = tokio::time::timeout(args.timeout, driver.run_mfp(&mut client, &mut inputs, on_event)).await;
    if let Some(e) = store_error {
        return Err(format!("could not persist the connection: {e}"));
    }
    match outcome {
        Err(_) => return Err(format!("no session within {} s", args.timeout.as_secs())),
        Ok(r) => r.map_err(|e| e.to_string())?,
    }
    if let Some(value) = client.connection.persisted() {
        store_atomically(&args.state_dir, &value).map_err(|e| e.to_string())?;
    }
    match greeted {
        Some(user) => {
            println!("user={user}");
            Ok(())
        }
        None => Err("the panel stopped before a user signed in".into()),
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    match parse_printer_args(std::env::args().skip(1), USAGE) {
        Ok(args) => exit_code(run(args).await, false),
        Err(usage) => exit_code(Err(usage), true),
    }
}
