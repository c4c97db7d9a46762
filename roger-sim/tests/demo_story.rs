//! `roger-sim demo` (issue 4): the story runs to the end in one process and its numbers are what the story says —
//! two jobs printed (one from the drive, one handed over by the desktop), one scan, no document bytes at the API
//! server (R-DATA-1), only R-DATA-2 personal data in its store, the printer disconnected after 91 days and
//! reconnected as a new device (R-TOK-4). The binary runs the same story and exits 0 with the summary.

use std::process::Command;

use roger_sim::demo::{run_story, DemoOptions};

mod common;
use common::temp_dir;

#[tokio::test]
async fn the_story_does_what_it_says() {
    let dir = temp_dir("story");
    let mut lines = Vec::new();
    let report = run_story(&DemoOptions::new(3, &dir), &mut |l: &str| lines.push(l.to_owned()))
        .await
        .unwrap_or_else(|f| panic!("FAILED: {f}"));

    assert_eq!(lines.len(), 7, "one line per step: {lines:#?}");
    assert_eq!(lines, report.lines);
    for (i, line) in lines.iter().enumerate() {
        assert!(line.starts_with(&format!("[{:>2}] ", i + 1)), "{line}");
    }

    assert_eq!((report.jobs_printed, report.drive_jobs_printed, report.desktop_jobs_printed), (2, 1, 1));
    assert_eq!(report.jobs_printed_in_store, 2, "the server lists both as printed");
    assert!(report.bytes_printed > 0);
    assert_eq!(report.scans_completed, 1);
    assert!(report.scan_bytes > 0);
    assert_eq!(report.drive_bytes_received, report.scan_bytes, "the scan went to the drive listener");
    assert!(report.drive_bytes_served > 0 && report.drive_bytes_served < report.bytes_printed, "only the drive job");

    assert_eq!(report.document_bytes_at_server, 0, "R-DATA-1");
    assert_eq!(report.documents_checked, 3, "two printed documents and the scan");
    assert!(report.fragments_checked >= 3);
    assert!(report.api_requests > 0);
    assert!(report.api_request_bodies > 0 && report.api_request_body_bytes > 0, "request bodies were counted");
    assert!(!report.secrets_in_store && !report.scan_name_in_store);

    assert!(report.disconnected && report.reconnected);
    assert_eq!(report.disconnect_reason, "refresh_token_dead");
    assert!(report.first_device_id.starts_with("dev_"));
    assert_ne!(report.first_device_id, report.second_device_id, "a reconnect is a new device (R-TOK-4)");

    let has = |field: &str, value: &str| report.personal_data.iter().any(|d| d.field == field && d.value == value);
    assert!(has("users.email", "alice@acme.example"), "{:?}", report.personal_data);
    assert!(has("users.username", "alice"));
    assert!(has("jobs.file_name", "quarterly-report.pdf") && has("jobs.file_name", "travel-expenses.pdf"));
    assert!(report.personal_data.iter().any(|d| d.field == "scans.completed_at"));
    let summary = report.summary().join("\n");
    assert!(summary.contains("jobs printed: 2") && summary.contains("document bytes seen at the API server: 0"));
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn the_binary_runs_the_demo_and_prints_the_summary() {
    let out = Command::new(env!("CARGO_BIN_EXE_roger-sim")).args(["demo", "--seed", "7"]).output().expect("runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "exit {:?}\n{stdout}\n{}", out.status, String::from_utf8_lossy(&out.stderr));
    for want in
        ["[ 1] ", "[ 7] ", "summary", "jobs printed: 2", "document bytes seen at the API server: 0", "users.email"]
    {
        assert!(stdout.contains(want), "{want:?} in\n{stdout}");
    }
    assert!(!stdout.contains("FAILED"), "{stdout}");
}

/// `--tls`: the same story with every connection over TLS, the printer's job endpoint included (its certificate
/// from the simulator's CA); the desktop accepts no plain-HTTP job URL then (R-DISC-2).
#[tokio::test]
async fn the_story_runs_over_tls() {
    let dir = temp_dir("story-tls");
    let mut options = DemoOptions::new(5, &dir);
    options.tls = true;
    let report = run_story(&options, &mut |_: &str| {}).await.unwrap_or_else(|f| panic!("FAILED: {f}"));
    assert_eq!((report.drive_jobs_printed, report.desktop_jobs_printed), (1, 1), "both jobs printed over TLS");
    assert_eq!(report.document_bytes_at_server, 0, "R-DATA-1");
    assert!(report.reconnected);
}
