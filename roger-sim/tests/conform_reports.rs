//! Scenario: the conformance kit's reports and exit code, through the real `roger-sim conform` command against our
//! MFP and one of its mutants: the JSON report carries its documented fields (each case's basis among them), the
//! JUnit XML is well-formed, the HTML page is self-contained, the exit code is 1 iff a MUST failed or a verdict
//! differs from `--expected-verdicts` (with the diff printed), and an expected-failures entry excuses a failure
//! until its expiry date (and names only cases that exist).

use std::path::{Path, PathBuf};
use std::process::Command;

use roger_sim::conform::report::shell_quote;

const CASE: &str = "rfc8628/3.3.1/registration-qr-and-user-code";
const OTHER: &str = "roger/R-DISC-1/ignore-unknown-members";

fn exe() -> &'static str {
    env!("CARGO_BIN_EXE_roger-sim")
}

fn temp_dir(tag: &str) -> PathBuf {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    let dir = std::env::temp_dir().join(format!("roger-it-{tag}-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

fn shim(mutant: Option<&str>) -> String {
    match mutant {
        Some(m) => format!("{} mfp --shim --mutant {m}", shell_quote(exe())),
        None => format!("{} mfp --shim", shell_quote(exe())),
    }
}

/// Runs `roger-sim conform …`: (exit code, stdout, stderr).
fn conform(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(exe()).arg("conform").args(args).output().expect("roger-sim runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).expect("report")).expect("JSON")
}

/// A small XML 1.0 well-formedness check: one root, balanced tags, quoted attributes, escaped text.
fn assert_well_formed_xml(xml: &str) {
    let body = xml.strip_prefix("<?xml version=\"1.0\" encoding=\"UTF-8\"?>").expect("XML declaration");
    let mut stack: Vec<String> = Vec::new();
    let mut roots = 0;
    let mut rest = body;
    while let Some(lt) = rest.find('<') {
        let text = &rest[..lt];
        assert!(!text.contains('>'), "a bare > in text: {text:?}");
        for (i, _) in text.match_indices('&') {
            let t = &text[i..];
            assert!(
                ["&amp;", "&lt;", "&gt;", "&quot;", "&apos;"].iter().any(|e| t.starts_with(e)),
                "bad entity in {t:?}"
            );
        }
        let gt = rest[lt..].find('>').expect("an unclosed tag") + lt;
        let tag = &rest[lt + 1..gt];
        assert!(!tag.contains('<'), "< inside a tag: {tag:?}");
        if let Some(name) = tag.strip_prefix('/') {
            assert_eq!(stack.pop().as_deref(), Some(name.trim()), "mismatched close tag");
        } else {
            let self_closing = tag.ends_with('/');
            let inner = tag.trim_end_matches('/');
            let name = inner.split_whitespace().next().expect("a tag name").to_owned();
            // Attribute values are double-quoted and free of < and raw quotes.
            assert_eq!(inner.matches('"').count() % 2, 0, "unbalanced quotes in {inner:?}");
            if stack.is_empty() {
                roots += 1;
            }
            if !self_closing {
                stack.push(name);
            }
        }
        rest = &rest[gt + 1..];
    }
    assert!(rest.trim().is_empty(), "text after the root");
    assert!(stack.is_empty(), "unclosed: {stack:?}");
    assert_eq!(roots, 1, "one root element");
}

#[test]
fn a_passing_run_writes_three_reports() {
    let dir = temp_dir("conform-reports");
    let (j, x, h) = (dir.join("r.json"), dir.join("r.xml"), dir.join("r.html"));
    let shim = shim(None);
    let (code, stdout, stderr) = conform(&[
        "client",
        "--shim",
        &shim,
        "--case",
        CASE,
        "--case",
        OTHER,
        "--seed",
        "5",
        "--json",
        j.to_str().unwrap(),
        "--junit",
        x.to_str().unwrap(),
        "--html",
        h.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(stdout.contains("seed 5") && stdout.contains("2 PASS"), "{stdout}");

    // JSON: the documented fields (docs/conformance.md, docs/schemas/conform-report.json).
    let r = json(&j);
    assert_eq!(r["schema"], "roger-conform-report/1");
    assert_eq!(r["seed"], 5);
    assert_eq!(r["mode"], "client");
    assert_eq!(r["exit_code"], 0);
    assert!(r["kit_version"].as_str().is_some_and(|v| !v.is_empty()));
    assert!(r["criteria_version"].as_str().is_some_and(|v| v.starts_with("roger-protocol-1.1")));
    assert_eq!(r["summary"]["pass"], 2);
    let cases = r["cases"].as_array().expect("cases");
    assert_eq!(cases.len(), 2);
    for c in cases {
        for field in [
            "id",
            "area",
            "requirement",
            "sources",
            "level",
            "basis",
            "rationale",
            "modes",
            "aimed_at",
            "verdict",
            "reason",
            "duration_ms",
            "seed",
            "evidence",
            "rerun",
        ] {
            assert!(c.get(field).is_some(), "{field} in {c}");
        }
        assert_eq!(c["verdict"], "PASS");
        let id = c["id"].as_str().unwrap();
        // The QR case judges an RFC MUST; R-DISC-1 beyond token answers is a Roger choice.
        assert_eq!(c["basis"], if id == CASE { "rfc" } else { "roger" }, "{id}");
        assert!(c["rerun"].as_str().unwrap().contains(&format!("--case {id} --seed 5")), "{}", c["rerun"]);
        assert!(!c["evidence"].as_array().unwrap().is_empty(), "evidence for {id}");
    }
    // No secret of the run reaches the report: tokens and codes appear only as labels.
    let text = std::fs::read_to_string(&j).unwrap();
    for prefix in ["rat_", "rrt_", "rdc_"] {
        assert!(!text.contains(prefix), "a {prefix} secret in the JSON report");
    }

    // JUnit XML.
    let xml = std::fs::read_to_string(&x).unwrap();
    assert_well_formed_xml(&xml);
    assert_eq!(xml.matches("<testcase ").count(), 2);
    assert!(xml.contains("failures=\"0\"") && !xml.contains("<failure"));
    assert!(xml.contains("name=\"seed\" value=\"5\""));
    assert!(xml.contains("<property name=\"basis\" value=\"RFC\"/>"), "each case names its basis");
    assert!(xml.contains("<property name=\"basis\" value=\"Roger\"/>"), "each case names its basis");

    // HTML: one page, nothing fetched from elsewhere, every case with its rerun command.
    let html = std::fs::read_to_string(&h).unwrap();
    assert!(html.starts_with("<!doctype html>"));
    assert!(!html.contains("<script") && !html.contains(" src=") && !html.contains("<link"));
    for href in html.split("href=\"").skip(1) {
        assert!(href.starts_with('#'), "only in-page links: {}", &href[..href.len().min(40)]);
    }
    assert!(html.contains(CASE) && html.contains(OTHER) && html.contains("seed 5"));
    assert!(html.contains("Rerun just this case") && html.contains("criteria"));
    assert!(html.contains("Judges an RFC requirement") && html.contains("Judges a Roger choice"));
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_must_failure_exits_1_and_expected_failures_excuse_it_until_they_expire() {
    let dir = temp_dir("conform-exit");
    let shim = shim(Some("qr-without-user-code"));
    let (j, x, h) = (dir.join("r.json"), dir.join("r.xml"), dir.join("r.html"));
    let (code, stdout, _) = conform(&[
        "client",
        "--shim",
        &shim,
        "--case",
        CASE,
        "--seed",
        "9",
        "--quiet",
        "--json",
        j.to_str().unwrap(),
        "--junit",
        x.to_str().unwrap(),
        "--html",
        h.to_str().unwrap(),
    ]);
    assert_eq!(code, 1, "a MUST failed: {stdout}");
    assert!(stdout.contains("FAIL") && stdout.contains("no user code"), "{stdout}");
    assert!(stdout.contains(&format!("--case {CASE} --seed 9")), "the rerun command: {stdout}");
    let r = json(&j);
    assert_eq!(r["exit_code"], 1);
    assert_eq!(r["summary"]["must_failed"], 1);
    assert_eq!(r["cases"][0]["verdict"], "FAIL");
    let xml = std::fs::read_to_string(&x).unwrap();
    assert_well_formed_xml(&xml);
    assert!(xml.contains("<failure message=") && xml.contains("failures=\"1\""));
    assert!(std::fs::read_to_string(&h).unwrap().contains("class=\"v FAIL\""));

    // Excused until a date in the future: reported, but the run passes.
    let excuses = dir.join("expected.toml");
    let entry = |expires: &str| {
        format!(
            "[[expected_failure]]\ncase = \"rfc8628/3.3.1/*\"\nreason = \"vendor ticket 42\"\nexpires = {expires}\n"
        )
    };
    // The same run each time; only the excuses file changes.
    let run = || {
        conform(&[
            "client",
            "--shim",
            &shim,
            "--case",
            CASE,
            "--quiet",
            "--expected-failures",
            excuses.to_str().unwrap(),
            "--json",
            j.to_str().unwrap(),
        ])
    };
    std::fs::write(&excuses, entry("2999-12-31")).unwrap();
    let (code, stdout, _) = run();
    assert_eq!(code, 0, "{stdout}");
    assert!(stdout.contains("FAIL (expected)") && stdout.contains("vendor ticket 42"), "{stdout}");
    let r = json(&j);
    assert_eq!(r["cases"][0]["expected_failure"]["reason"], "vendor ticket 42");
    assert_eq!(r["summary"]["expected"], 1);

    // Past its date the entry excuses nothing and the report says so.
    std::fs::write(&excuses, entry("2001-01-01")).unwrap();
    let (code, stdout, _) = run();
    assert_eq!(code, 1, "{stdout}");
    assert!(stdout.contains("expired on 2001-01-01"), "{stdout}");
    assert_eq!(json(&j)["expired_expected_failures"][0]["expires"], "2001-01-01");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn bad_arguments_exit_2_and_the_catalogue_lists() {
    let shim = shim(None);
    let (code, _, stderr) = conform(&["client", "--shim", &shim, "--case", "no/such/case"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("names no client-mode case"), "{stderr}");
    let (code, _, stderr) = conform(&["client", "--shim", &shim, "--aimed-at", "no-such-mutant"]);
    assert_eq!(code, 2, "{stderr}");
    let dir = temp_dir("conform-args");
    let bad = dir.join("bad.toml");
    std::fs::write(&bad, "[[expected_failure]]\ncase = \"typo/*\"\nreason = \"r\"\nexpires = 2999-01-01\n").unwrap();
    let (code, _, stderr) = conform(&["client", "--shim", &shim, "--expected-failures", bad.to_str().unwrap()]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("names no case"), "{stderr}");
    let (code, _, _) = conform(&[]);
    assert_eq!(code, 2, "a mode or --list is required");
    let missing = dir.join("no-such-accounts.toml");
    let (code, _, stderr) =
        conform(&["server", "--discovery", "http://127.0.0.1:9", "--fixture", missing.to_str().unwrap()]);
    assert_eq!(code, 2, "{stderr}");
    let (code, _, stderr) =
        conform(&["server", "--discovery", "http://127.0.0.1:9", "--fixture", bad.to_str().unwrap()]);
    assert_eq!(code, 2, "not an accounts file: {stderr}");
    let (code, stdout, _) = conform(&["--list"]);
    assert_eq!(code, 0);
    assert!(stdout.contains(CASE) && stdout.contains("aimed at: qr-without-user-code"), "{stdout}");
    assert!(stdout.contains("[MUST · RFC · client · qr_session]"), "the basis is listed: {stdout}");
    assert!(stdout.contains("judges a Roger choice"), "{stdout}");
    let listed = stdout.lines().filter(|l| !l.starts_with(' ') && l.contains("  [")).count();
    assert!(listed >= 40, "{listed} cases listed");
    std::fs::remove_dir_all(&dir).ok();
}

/// `--expected-verdicts`: the run passes when every verdict is the one committed, and fails (exit 1) with a diff
/// (case, expected, got, reason) when one differs, as when a case starts failing a correct peer.
#[test]
fn expected_verdicts_catch_a_changed_verdict() {
    let dir = temp_dir("conform-verdicts");
    let table = dir.join("verdicts.toml");
    std::fs::write(&table, format!("[verdicts]\n\"{CASE}\" = \"PASS\"\n")).unwrap();
    let j = dir.join("r.json");
    let run = |mutant: Option<&str>| {
        let shim = shim(mutant);
        conform(&[
            "client",
            "--shim",
            &shim,
            "--case",
            CASE,
            "--seed",
            "6",
            "--quiet",
            "--expected-verdicts",
            table.to_str().unwrap(),
            "--json",
            j.to_str().unwrap(),
        ])
    };
    let (code, stdout, _) = run(None);
    assert_eq!(code, 0, "{stdout}");
    assert_eq!(json(&j)["cases"][0]["expected_verdicts"][0], "PASS");
    assert!(json(&j)["verdict_diffs"].as_array().unwrap().is_empty());

    let (code, stdout, _) = run(Some("qr-without-user-code"));
    assert_eq!(code, 1, "{stdout}");
    assert!(stdout.contains("verdicts that differ from the expected verdicts (1):"), "{stdout}");
    assert!(stdout.contains(&format!("{CASE}: expected PASS, got FAIL — the panel shows no user code")), "{stdout}");
    let r = json(&j);
    assert_eq!(r["verdict_diffs"][0]["case"], CASE);
    assert_eq!(r["verdict_diffs"][0]["got"], "FAIL");
    assert_eq!(r["summary"]["verdict_diffs"], 1);

    // The table may expect that FAIL: the run passes, the failure still reported.
    std::fs::write(&table, format!("[verdicts]\n\"{CASE}\" = {{ verdict = \"FAIL\", reason = \"known\" }}\n")).unwrap();
    let (code, stdout, _) = run(Some("qr-without-user-code"));
    assert_eq!(code, 0, "{stdout}");
    assert!(stdout.contains("FAIL") && stdout.contains("MUST failures: 0"), "{stdout}");

    // A case the table does not know, or a verdict that is none, is refused.
    std::fs::write(&table, "[verdicts]\n\"no/such/case\" = \"PASS\"\n").unwrap();
    let (code, _, stderr) = run(None);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("not a case of the catalogue"), "{stderr}");
    std::fs::remove_dir_all(&dir).ok();
}
