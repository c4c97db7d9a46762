//! Scenario (issue 4): the simulated MFP registers over HTTP (PROTOCOL.md §5: the QR as a PNG screenshot and the
//! user code beside it, R-QR-1), an admin approves it, alice signs in by the panel's session QR (§8 step 1, the
//! push doorbell `code.approved` bringing the poll forward), and the release of her queued drive job downloads
//! the document straight from the drive and prints it into the output folder with a record, then reports it
//! printed (§9, R-DATA-1). Step 2 with her PIN lists her drive, submits a file as a job and scans to the drive with
//! a resumable upload; an app-side session end (push `session.ended`) returns the panel to its QR.

mod common;
mod mfp_support;

use std::time::Duration;

use common::TestServer;
use mfp_support::{config, contains_number, qr_sign_in, registered, server, temp_dir, text_files, WAIT};
use roger_proto::api::{self, CodeKind, CodeLookup, JobList, MeExport};
use roger_proto::secret::{AccessToken, Pin, UserCode};
use roger_proto::server::drive::Folder;
use roger_proto::wire::classify_api;
use roger_sim::mfp::{Mfp, PanelState, PrintSource, ReleaseOutcome};
use sha2::{Digest, Sha256};

fn hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

async fn user_id(s: &TestServer, app: &AccessToken) -> String {
    let a = s.send(api::export_me(&s.api, app).unwrap()).await;
    let export: MeExport = classify_api(&a.to_http()).expect("export");
    export.user.id
}

#[tokio::test]
async fn registers_then_releases_alices_drive_job() {
    let s = server().await;
    let dir = temp_dir("register-release");
    let mfp = Mfp::start(config(&s, &dir)).await.expect("the printer starts");
    assert_eq!(mfp.panel().state, PanelState::Unregistered, "no registration before `register`");

    // §5: the registration QR and the user code side by side (R-QR-1), as a PNG screenshot with a text file.
    let shown = mfp.register().await.expect("registration code");
    let qr = shown.qr.clone().expect("a QR payload");
    assert!(qr.starts_with(&format!("{}/device?user_code=", s.api)), "the QR is on the API origin");
    let code = qr.rsplit('=').next().expect("code in the QR").to_owned();
    assert_eq!(code.len(), 8);
    assert_eq!(shown.user_code, format!("{}-{}", &code[..4], &code[4..]), "XXXX-XXXX beside the QR");
    let png = shown.screenshot.clone().expect("a screenshot");
    assert!(std::fs::read(&png).expect("png").starts_with(b"\x89PNG\r\n\x1a\n"));
    let beside = std::fs::read_to_string(png.with_file_name("panel-code.txt")).expect("code file");
    assert!(beside.starts_with(&shown.user_code), "{beside}");
    let again = mfp.register().await.expect("register while registering returns the current code");
    assert_eq!(again.user_code, shown.user_code);

    // The admin looks it up (R-QR-2: the printer's vendor, model and serial) and approves.
    let admin = s.app_login("admin", "admin-pass").await.access_token;
    let a = s.send(api::lookup_code(&s.api, &admin, &UserCode::new(shown.user_code.clone())).unwrap()).await;
    let lookup: CodeLookup = classify_api(&a.to_http()).expect("lookup");
    assert_eq!(lookup.kind, CodeKind::Registration);
    assert_eq!(
        (lookup.vendor.as_deref(), lookup.model.as_deref(), lookup.serial.as_deref()),
        (Some("simvendor"), Some("SimPrinter 5000"), Some("SIM-0001"))
    );
    assert_eq!(s.decide(&admin, &shown.user_code, true).await.status, 204);
    let idle = mfp.wait_for(PanelState::Idle, WAIT).await.expect("registered");
    let device_id = idle.device_id.clone().expect("device id");
    assert!(matches!(mfp.register().await, Err(e) if e.is_state_error()), "no second registration when idle");

    // The connection state is on disk (atomically written) and holds only the device's own credentials.
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("state/connection.json")).expect("state file")).unwrap();
    assert_eq!((state["state"].as_str(), state["device_id"].as_str()), (Some("connected"), Some(device_id.as_str())));
    let mut keys: Vec<&str> = state.as_object().unwrap().keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["device_id", "refresh_token", "state", "tenant_id"]);

    // The job endpoint is published for hand-overs (§9).
    assert!(mfp.wait_job_url_published(WAIT).await, "job_url published");
    let a = s.store().await;
    assert_eq!(a["devices"][&device_id]["job_url"].as_str(), Some(mfp.job_url().as_str()), "{}", a["devices"]);

    // §8 step 1: alice scans the session QR and approves it in her app.
    let alice = qr_sign_in(&s, &mfp, "alice", "alice-pass").await;
    let view = mfp.panel();
    assert_eq!(view.scopes, ["roger.release"], "{view:?}");
    assert!(view.qr.is_none() && view.user_code.is_none(), "no QR during a session");

    // §9: her queued drive job, released and printed from the drive.
    let jobs = mfp.jobs().await.expect("jobs");
    let job = jobs.iter().find(|j| j.file_name == "quarterly-report.pdf").expect("alice's fixture job").clone();
    let served_before = s.server.shared.drive.total_bytes_served();
    let outcome = mfp.release(&job.id).await.expect("release");
    let ReleaseOutcome::Printed { record, reported } = outcome else { panic!("a drive job prints at once") };
    assert!(reported, "the result was reported");
    assert_eq!((record.job_id.as_str(), record.file_name.as_str()), (job.id.as_str(), "quarterly-report.pdf"));
    assert_eq!((record.source, record.pages), (PrintSource::Drive, job.pages));
    let printed = std::fs::read(&record.path).expect("printed document");
    assert!(record.path.starts_with(dir.join("out")), "{}", record.path.display());
    assert!(printed.starts_with(b"%PDF"), "a PDF");
    assert_eq!((printed.len() as u64, hex(&printed)), (record.bytes, record.sha256.clone()));
    assert_eq!(
        s.server.shared.drive.total_bytes_served() - served_before,
        record.bytes,
        "the bytes came from the drive listener (R-DATA-1)"
    );
    // The after-print rule moved the file to "Printed": the bytes printed are the drive file's bytes.
    let alice_id = user_id(&s, &alice).await;
    let moved = s.server.shared.drive.files(&alice_id, Folder::Printed);
    let drive_file = moved.iter().find(|f| f.name == "quarterly-report.pdf").expect("moved to Printed");
    let drive_bytes = s.server.shared.drive.file_bytes(&alice_id, &drive_file.id).expect("drive bytes");
    assert_eq!(&drive_bytes[..], &printed[..]);
    assert_eq!(mfp.printed(), vec![record.clone()], "printed.jsonl records it");

    // The server lists it as printed; it is no longer queued.
    let a = s
        .raw("GET", "/api/v1/jobs?state=printed", &[("authorization", &format!("Bearer {}", alice.secret()))], vec![])
        .await;
    let printed_jobs: JobList = classify_api(&a.to_http()).expect("printed jobs");
    assert!(printed_jobs.jobs.iter().any(|j| j.id == job.id), "{printed_jobs:?}");
    assert!(mfp.jobs().await.expect("jobs").iter().all(|j| j.id != job.id));
    // A second release of a printed job is a conflict (§9 409), and nothing more is printed.
    assert!(mfp.release(&job.id).await.is_err());
    assert_eq!(mfp.printed().len(), 1);

    // Logout: back to a fresh QR (§8 "End").
    mfp.logout().await.expect("logout");
    let (shown, view) = mfp.wait_until(WAIT, |v| v.state == PanelState::Idle && v.qr.is_some()).await;
    assert!(shown, "a fresh QR after logout: {view:?}");

    // The narration says what happened, without credentials (R-SEC-1).
    let events = mfp.events().join("\n");
    for want in ["registered as device", "alice signed in", "printed job", "reported job", "logged out"] {
        assert!(events.contains(want), "{want:?} in\n{events}");
    }
    assert!(!events.contains(&code) && !events.contains(&shown_code(&view)), "no user code in the log");
    mfp.stop().await;
    s.server.stop().await;
    std::fs::remove_dir_all(&dir).ok();
}

fn shown_code(view: &roger_sim::mfp::PanelView) -> String {
    view.user_code.clone().unwrap_or_else(|| "-none-".into())
}

#[tokio::test]
async fn pin_step2_print_from_drive_scan_and_server_side_end() {
    let s = server().await;
    let dir = temp_dir("step2");
    let (mfp, device_id) = registered(&s, config(&s, &dir)).await;
    let alice = qr_sign_in(&s, &mfp, "alice", "alice-pass").await;

    // Step 2 needs the PIN: without it, print-from-drive is refused locally.
    assert!(matches!(mfp.drive_files().await, Err(e) if e.is_state_error()));
    assert!(!mfp.pin("alice", Pin::new("0000")).await.expect("pin answer"), "a wrong PIN is not accepted");
    assert!(mfp.pin("alice", Pin::new("1234")).await.expect("pin answer"), "alice's PIN gives step 2");
    let view = mfp.panel();
    for sc in ["roger.release", "roger.print", "roger.scan"] {
        assert!(view.scopes.iter().any(|x| x == sc), "{sc} in {:?}", view.scopes);
    }

    // Print from drive: list the Print folder, submit a file as a job (§9).
    let files = mfp.drive_files().await.expect("drive files");
    let file = files.first().expect("a file in alice's Print folder").clone();
    let job = mfp.submit_drive_file(&file.id).await.expect("submitted");
    assert_eq!(job.file_name, file.name);
    assert!(mfp.jobs().await.expect("jobs").iter().any(|j| j.id == job.id), "queued");

    // Scan: a resumable upload to the drive's Scan folder, then completed (§9, R-DATA-1).
    let received_before = s.server.shared.drive.total_bytes_received();
    let scan = mfp.scan("pdf-300").await.expect("scan");
    assert!(scan.bytes > 64 * 1024, "several chunks: {}", scan.bytes);
    assert_eq!(s.server.shared.drive.total_bytes_received() - received_before, scan.bytes);
    let alice_id = user_id(&s, &alice).await;
    let scans = s.server.shared.drive.files(&alice_id, Folder::Scan);
    let stored = scans.iter().find(|f| f.size == scan.bytes).expect("the scan is in the Scan folder");
    let bytes = s.server.shared.drive.file_bytes(&alice_id, &stored.id).expect("bytes");
    assert_eq!(hex(&bytes), scan.sha256);
    assert!(!s.store().await.to_string().contains(&stored.name), "the server never learns the scan's name");
    assert!(mfp.scan("no-such-profile").await.is_err());

    // The user ends the session from the app: push session.ended, confirmed over HTTPS (§8 "End", R-PUSH-1).
    let a = s.send(api::end_session(&s.api, &alice, &api::SessionEnd { device_id: device_id.clone() }).unwrap()).await;
    assert_eq!(a.status, 204, "{}", String::from_utf8_lossy(&a.body));
    mfp.wait_for(PanelState::Idle, WAIT).await.expect("the session ended at the printer");
    assert!(mfp.jobs().await.is_err(), "no session, no jobs");

    // PIN login from idle (all three scopes at once), then logout.
    assert!(mfp.pin("alice", Pin::new("1234")).await.expect("pin"));
    let view = mfp.wait_for(PanelState::Session, Duration::from_secs(5)).await.expect("PIN login");
    assert_eq!(view.user.as_deref(), Some("alice"));
    mfp.logout().await.expect("logout");
    assert_eq!(mfp.panel().state, PanelState::Idle);

    // R-PWD-1: the PIN is in no file of the state directory and in no log line.
    for (path, text) in text_files(&dir) {
        assert!(!contains_number(&text, "1234"), "PIN in {}", path.display());
    }
    let events = mfp.events();
    assert!(events.iter().all(|l| !contains_number(l, "1234")), "{events:?}");
    assert!(events.iter().any(|l| l.contains("PIN accepted")), "{events:?}");
    mfp.stop().await;
    s.server.stop().await;
    std::fs::remove_dir_all(&dir).ok();
}
