//! Reports of a run: a terminal summary, JSON (schema `roger-conform-report/1`, committed as
//! `docs/schemas/conform-report.json`), JUnit XML for CI, and one self-contained HTML page a person reads. Every
//! report names the kit version, the criteria version and the seed; every case carries the command that reruns just
//! it, and whether the case judges an RFC requirement or a Roger choice. The exit code is non-zero iff a MUST failed
//! that no expected-failures entry (or expected-verdicts row) excuses, or a verdict differs from the
//! expected-verdicts table.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};
use time::Date;

use super::case::{Area, Basis, Evidence, Level, Mode, Profile, Verdict};
use super::expected::{Excuse, ExpectedFailures, ExpectedVerdicts, VerdictDiff};
use super::runner::CaseResult;

/// The JSON report's schema name.
pub const SCHEMA: &str = "roger-conform-report/1";

/// The version of the kit (the `roger-sim` package).
pub const KIT_VERSION: &str = env!("CARGO_PKG_VERSION");

/// The version of the criteria: the protocol brief the catalogue judges against, and the catalogue's own revision
/// (bumped whenever a case is added, removed or judges differently).
pub const CRITERIA_VERSION: &str = "roger-protocol-1.1/catalogue-2";

/// Counts per verdict.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Summary {
    /// PASS.
    pub pass: u32,
    /// FAIL (including expected ones).
    pub fail: u32,
    /// NON-STRICT (including expected ones).
    pub non_strict: u32,
    /// SKIP.
    pub skip: u32,
    /// INFO.
    pub info: u32,
    /// FAIL or NON-STRICT verdicts excused by an expected-failures entry.
    pub expected: u32,
    /// FAIL verdicts of MUST requirements not excused (the exit code is non-zero when this is).
    pub must_failed: u32,
    /// Cases that judge an RFC requirement.
    pub rfc_cases: u32,
    /// Cases that judge a Roger choice (never more than NON-STRICT).
    pub roger_cases: u32,
    /// Verdicts that differ from the expected-verdicts table (the exit code is non-zero when this is).
    pub verdict_diffs: u32,
}

/// One case in a report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct CaseReport {
    /// Stable case ID.
    pub id: String,
    /// Area.
    pub area: Area,
    /// The requirement sentence.
    pub requirement: String,
    /// RFC sections and PROTOCOL.md rules it rests on.
    pub sources: Vec<String>,
    /// MUST or SHOULD.
    pub level: Level,
    /// What the case judges: an RFC requirement (`rfc`) or a Roger choice (`roger`).
    pub basis: Basis,
    /// Why the case judges at its level.
    pub rationale: String,
    /// Modes the case runs in.
    pub modes: Vec<Mode>,
    /// Mutants it is aimed at.
    pub aimed_at: Vec<String>,
    /// The verdict.
    pub verdict: Verdict,
    /// Why (empty for PASS).
    pub reason: String,
    /// The expected-failures entry that excuses a FAIL or NON-STRICT, if any.
    pub expected_failure: Option<Excuse>,
    /// The verdicts the expected-verdicts table accepts for the case (`null` without a table or row).
    pub expected_verdicts: Option<Vec<Verdict>>,
    /// Milliseconds the case took.
    pub duration_ms: u64,
    /// The case's seed (derived from the run's seed and the ID).
    pub seed: u64,
    /// The redacted evidence that decided it.
    pub evidence: Vec<Evidence>,
    /// The last lines of the shim's stderr, redacted.
    pub shim_stderr_tail: String,
    /// The command that reruns only this case with the same seed.
    pub rerun: String,
}

/// A whole run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Report {
    /// [`SCHEMA`].
    pub schema: String,
    /// [`KIT_VERSION`].
    pub kit_version: String,
    /// [`CRITERIA_VERSION`].
    pub criteria_version: String,
    /// Which side was under test.
    pub mode: Mode,
    /// What was under test: the shim command (client mode) or the discovery URL or issuer (server mode).
    pub target: String,
    /// Server mode: the profile the server was judged by (`roger` or `oauth`); `null` in client mode.
    pub profile: Option<Profile>,
    /// What the kit noted about the run as a whole (how the profile was chosen, where the metadata came from).
    pub notes: Vec<String>,
    /// The run's seed: the same seed replays the same fixture secrets, server randomness and fault draws.
    pub seed: u64,
    /// When the run started (RFC 3339, UTC).
    pub started_at: String,
    /// Milliseconds the run took.
    pub duration_ms: u64,
    /// Cases run at a time.
    pub jobs: usize,
    /// Counts.
    pub summary: Summary,
    /// Expected-failures entries past their expiry date (they excused nothing).
    pub expired_expected_failures: Vec<Excuse>,
    /// The cases, in catalogue order.
    pub cases: Vec<CaseReport>,
    /// Cases whose verdict differs from the expected-verdicts table (`--expected-verdicts`).
    pub verdict_diffs: Vec<VerdictDiff>,
    /// The process exit code: 1 iff a MUST failed without an excuse or a verdict differs from the expected
    /// verdicts, else 0.
    pub exit_code: i32,
}

/// What the report needs to know about the run besides the results.
#[derive(Debug, Clone)]
pub struct RunInfo {
    /// The mode.
    pub mode: Mode,
    /// The shim command, discovery URL or issuer.
    pub target: String,
    /// Server mode: the profile.
    pub profile: Option<Profile>,
    /// Notes about the run as a whole.
    pub notes: Vec<String>,
    /// The seed.
    pub seed: u64,
    /// Start (RFC 3339).
    pub started_at: String,
    /// Duration.
    pub duration_ms: u64,
    /// Cases at a time.
    pub jobs: usize,
    /// The command line prefix that reruns a case: everything but `--case` and `--seed`.
    pub rerun_prefix: String,
}

/// Quotes `s` for a POSIX shell (single quotes).
pub fn shell_quote(s: &str) -> String {
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_./:=@%+,".contains(&b)) {
        return s.to_owned();
    }
    format!("'{}'", s.replace('\'', r"'\''"))
}

impl Report {
    /// Builds the report of a run on `today` (for the expiry of expected failures), with the expected-verdicts
    /// table when one was given.
    pub fn build(
        info: &RunInfo,
        results: &[CaseResult],
        expected: &ExpectedFailures,
        verdicts: Option<&ExpectedVerdicts>,
        today: Date,
    ) -> Self {
        let mut summary = Summary::default();
        let mut cases = Vec::new();
        let mut verdict_diffs = Vec::new();
        for r in results {
            let excuse = match r.verdict {
                Verdict::Fail | Verdict::NonStrict => expected.excuse(r.case.id, today).cloned(),
                _ => None,
            };
            let row = verdicts.and_then(|t| t.get(r.case.id));
            if let Some(d) = verdicts.and_then(|t| t.diff(r.case.id, r.verdict, &r.reason)) {
                verdict_diffs.push(d);
            }
            let table_expects_fail = r.verdict == Verdict::Fail && row.is_some_and(|x| x.verdicts.contains(&r.verdict));
            match r.case.basis {
                Basis::Rfc => summary.rfc_cases += 1,
                Basis::Roger => summary.roger_cases += 1,
            }
            match r.verdict {
                Verdict::Pass => summary.pass += 1,
                Verdict::Fail => summary.fail += 1,
                Verdict::NonStrict => summary.non_strict += 1,
                Verdict::Skip => summary.skip += 1,
                Verdict::Info => summary.info += 1,
            }
            if excuse.is_some() || table_expects_fail {
                summary.expected += 1;
            } else if r.verdict == Verdict::Fail && r.case.level == Level::Must {
                summary.must_failed += 1;
            }
            cases.push(CaseReport {
                id: r.case.id.to_owned(),
                area: r.case.area,
                requirement: r.case.requirement.to_owned(),
                sources: r.case.sources.iter().map(|s| (*s).to_owned()).collect(),
                level: r.case.level,
                basis: r.case.basis,
                rationale: r.case.rationale.to_owned(),
                modes: r.case.modes(),
                aimed_at: r.case.aimed_at.iter().map(|s| (*s).to_owned()).collect(),
                verdict: r.verdict,
                reason: r.reason.clone(),
                expected_failure: excuse,
                expected_verdicts: row.map(|x| x.verdicts.clone()),
                duration_ms: r.duration.as_millis() as u64,
                seed: r.seed,
                evidence: r.evidence.clone(),
                shim_stderr_tail: r.stderr_tail.clone(),
                rerun: format!("{} --case {} --seed {}", info.rerun_prefix, shell_quote(r.case.id), info.seed),
            });
        }
        summary.verdict_diffs = verdict_diffs.len() as u32;
        let exit_code = i32::from(summary.must_failed > 0 || !verdict_diffs.is_empty());
        Self {
            schema: SCHEMA.to_owned(),
            kit_version: KIT_VERSION.to_owned(),
            criteria_version: CRITERIA_VERSION.to_owned(),
            mode: info.mode,
            target: info.target.clone(),
            profile: info.profile,
            notes: info.notes.clone(),
            seed: info.seed,
            started_at: info.started_at.clone(),
            duration_ms: info.duration_ms,
            jobs: info.jobs,
            summary,
            expired_expected_failures: expected.expired(today).into_iter().cloned().collect(),
            cases,
            verdict_diffs,
            exit_code,
        }
    }

    /// The JSON report.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// The terminal summary: failures with their reasons and rerun commands, then the counts.
    pub fn terminal(&self) -> String {
        let mut s = String::new();
        let profile = self.profile.map(|p| format!(", profile {}", p.as_str())).unwrap_or_default();
        let _ = writeln!(
            s,
            "roger-sim conform {}{profile} — kit {}, criteria {}, seed {}",
            self.mode.as_str(),
            self.kit_version,
            self.criteria_version,
            self.seed
        );
        for n in &self.notes {
            let _ = writeln!(s, "  note: {n}");
        }
        for c in &self.cases {
            let tag = match (&c.expected_failure, c.verdict) {
                (Some(_), v) => format!("{v} (expected)"),
                (None, v) => v.to_string(),
            };
            let _ = writeln!(
                s,
                "  {:<22} {:<6} {:<5} {} ({:.1} s)",
                tag,
                c.level.as_str(),
                c.basis.as_str(),
                c.id,
                c.duration_ms as f64 / 1000.0
            );
            if matches!(c.verdict, Verdict::Fail | Verdict::NonStrict | Verdict::Skip | Verdict::Info)
                && !c.reason.is_empty()
            {
                let _ = writeln!(s, "      {}", c.reason);
            }
            if let Some(x) = &c.expected_failure {
                let _ = writeln!(s, "      expected until {}: {}", x.expires, x.reason);
            }
            if matches!(c.verdict, Verdict::Fail | Verdict::NonStrict) {
                let _ = writeln!(s, "      rerun: {}", c.rerun);
            }
        }
        for x in &self.expired_expected_failures {
            let _ = writeln!(
                s,
                "  warning: the expected failure of {} expired on {} and excuses nothing",
                x.case, x.expires
            );
        }
        if !self.verdict_diffs.is_empty() {
            let _ = writeln!(s, "verdicts that differ from the expected verdicts ({}):", self.verdict_diffs.len());
            for d in &self.verdict_diffs {
                let _ = writeln!(s, "  {}", d.line());
            }
        }
        let m = &self.summary;
        let _ = writeln!(
            s,
            "{} cases ({} RFC, {} Roger) in {:.1} s: {} PASS, {} FAIL, {} NON-STRICT, {} SKIP, {} INFO ({} expected); \
             MUST failures: {}; verdicts differing from the expected: {}",
            self.cases.len(),
            m.rfc_cases,
            m.roger_cases,
            self.duration_ms as f64 / 1000.0,
            m.pass,
            m.fail,
            m.non_strict,
            m.skip,
            m.info,
            m.expected,
            m.must_failed,
            m.verdict_diffs
        );
        s
    }

    /// JUnit XML (one `testsuite`, one `testcase` per case; FAIL is a `failure`, SKIP and excused failures are
    /// `skipped`, NON-STRICT and INFO pass with the reason in `system-out`).
    pub fn junit(&self) -> String {
        let mut s = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
        let differs = |c: &CaseReport| self.verdict_diffs.iter().any(|d| d.case == c.id);
        let expected_fail = |c: &CaseReport| c.expected_verdicts.as_ref().is_some_and(|v| v.contains(&Verdict::Fail));
        let failures = self
            .cases
            .iter()
            .filter(|c| differs(c) || (c.verdict == Verdict::Fail && c.expected_failure.is_none() && !expected_fail(c)))
            .count();
        let skipped = self
            .cases
            .iter()
            .filter(|c| {
                !differs(c)
                    && (c.verdict == Verdict::Skip
                        || c.expected_failure.is_some()
                        || (c.verdict == Verdict::Fail && expected_fail(c)))
            })
            .count();
        let _ = writeln!(
            s,
            "<testsuites name=\"roger-conform\" tests=\"{}\" failures=\"{failures}\" errors=\"0\" skipped=\"{skipped}\" time=\"{:.3}\">",
            self.cases.len(),
            self.duration_ms as f64 / 1000.0
        );
        let _ = writeln!(
            s,
            "  <testsuite name=\"roger-conform-{}\" tests=\"{}\" failures=\"{failures}\" errors=\"0\" skipped=\"{skipped}\" time=\"{:.3}\" timestamp=\"{}\">",
            self.mode.as_str(),
            self.cases.len(),
            self.duration_ms as f64 / 1000.0,
            xml(&self.started_at)
        );
        let _ = writeln!(s, "    <properties>");
        let mut props = vec![
            ("kit_version", self.kit_version.clone()),
            ("criteria_version", self.criteria_version.clone()),
            ("seed", self.seed.to_string()),
            ("target", self.target.clone()),
        ];
        if let Some(p) = self.profile {
            props.push(("profile", p.as_str().to_owned()));
        }
        for n in &self.notes {
            props.push(("note", n.clone()));
        }
        for (k, v) in props {
            let _ = writeln!(s, "      <property name=\"{k}\" value=\"{}\"/>", xml(&v));
        }
        let _ = writeln!(s, "    </properties>");
        for c in &self.cases {
            let _ = write!(
                s,
                "    <testcase classname=\"{}.{}\" name=\"{}\" time=\"{:.3}\">",
                self.mode.as_str(),
                c.area.as_str(),
                xml(&c.id),
                c.duration_ms as f64 / 1000.0
            );
            let _ = write!(
                s,
                "<properties><property name=\"level\" value=\"{}\"/><property name=\"basis\" value=\"{}\"/>\
<property name=\"rationale\" value=\"{}\"/></properties>",
                c.level.as_str(),
                c.basis.as_str(),
                xml(&c.rationale)
            );
            let evidence = evidence_text(c);
            if let Some(d) = self.verdict_diffs.iter().find(|d| d.case == c.id) {
                let _ = write!(
                    s,
                    "<failure message=\"{}\" type=\"expected-verdict\">{}</failure>",
                    xml(&d.line()),
                    xml(&evidence)
                );
                let _ = writeln!(s, "</testcase>");
                continue;
            }
            match (&c.expected_failure, c.verdict) {
                (Some(x), v) => {
                    let _ = write!(
                        s,
                        "<skipped message=\"{}\"/>",
                        xml(&format!("{v} expected until {}: {} — {}", x.expires, x.reason, c.reason))
                    );
                }
                (None, Verdict::Fail) if expected_fail(c) => {
                    let _ = write!(
                        s,
                        "<skipped message=\"{}\"/>",
                        xml(&format!("FAIL, as the expected verdicts say: {}", c.reason))
                    );
                }
                (None, Verdict::Fail) => {
                    let _ = write!(
                        s,
                        "<failure message=\"{}\" type=\"{} ({})\">{}</failure>",
                        xml(&c.reason),
                        c.level.as_str(),
                        c.basis.as_str(),
                        xml(&evidence)
                    );
                }
                (None, Verdict::Skip) => {
                    let _ = write!(s, "<skipped message=\"{}\"/>", xml(&c.reason));
                }
                (None, Verdict::NonStrict | Verdict::Info) => {
                    let _ = write!(
                        s,
                        "<system-out>{}</system-out>",
                        xml(&format!("{} ({}): {}\n{evidence}", c.verdict, c.basis.as_str(), c.reason))
                    );
                }
                (None, Verdict::Pass) => {}
            }
            let _ = writeln!(s, "</testcase>");
        }
        s.push_str("  </testsuite>\n</testsuites>\n");
        s
    }

    /// One self-contained HTML page: no script, no external resource.
    pub fn html(&self) -> String {
        let mut s = String::new();
        let m = &self.summary;
        let _ = write!(
            s,
            "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width\"><title>Roger conformance report — {mode} mode</title>\
<style>{CSS}</style></head><body>\n<h1>Roger conformance report: {mode} mode</h1>\n\
<p class=\"meta\">Kit {kit} · criteria {crit} · seed {seed} · started {start} · {secs:.1} s · {jobs} at a time</p>\n\
<p class=\"meta\">Under test: <code>{target}</code>{profile}</p>\n\
<p class=\"counts\"><span class=\"v PASS\">{p} PASS</span> <span class=\"v FAIL\">{f} FAIL</span> \
<span class=\"v NON-STRICT\">{n} NON-STRICT</span> <span class=\"v SKIP\">{sk} SKIP</span> <span class=\"v INFO\">{i} INFO</span> \
· {x} expected · <strong>{mf} MUST failures</strong> · {vd} verdicts differing from the expected · \
{rfc} cases judge an RFC requirement, {roger} a Roger choice · exit code {code}</p>\n",
            mode = self.mode.as_str(),
            kit = esc(&self.kit_version),
            crit = esc(&self.criteria_version),
            seed = self.seed,
            start = esc(&self.started_at),
            secs = self.duration_ms as f64 / 1000.0,
            jobs = self.jobs,
            target = esc(&self.target),
            profile = self.profile.map(|p| format!(" · profile {}", p.as_str())).unwrap_or_default(),
            p = m.pass,
            f = m.fail,
            n = m.non_strict,
            sk = m.skip,
            i = m.info,
            x = m.expected,
            mf = m.must_failed,
            vd = m.verdict_diffs,
            rfc = m.rfc_cases,
            roger = m.roger_cases,
            code = self.exit_code,
        );
        for n in &self.notes {
            let _ = writeln!(s, "<p class=\"meta\">Note: {}</p>", esc(n));
        }
        if !self.verdict_diffs.is_empty() {
            s.push_str("<p class=\"warn\">Verdicts that differ from the expected verdicts:</p><ul>\n");
            for d in &self.verdict_diffs {
                let _ = writeln!(s, "<li><code>{}</code></li>", esc(&d.line()));
            }
            s.push_str("</ul>\n");
        }
        for x in &self.expired_expected_failures {
            let _ = writeln!(
                s,
                "<p class=\"warn\">The expected failure of <code>{}</code> expired on {} and excuses nothing.</p>",
                esc(&x.case),
                esc(&x.expires)
            );
        }
        s.push_str(
            "<table><thead><tr><th>verdict</th><th>level</th><th>basis</th><th>case</th><th>requirement</th></tr></thead>\
<tbody>\n",
        );
        for c in &self.cases {
            let _ = writeln!(
                s,
                "<tr><td><span class=\"v {v}\">{v}</span>{x}</td><td>{l}</td><td>{b}</td><td><a href=\"#{a}\"><code>{id}</code></a></td><td>{r}</td></tr>",
                v = c.verdict.as_str(),
                x = if c.expected_failure.is_some() { " <small>(expected)</small>" } else { "" },
                l = c.level.as_str(),
                b = c.basis.as_str(),
                a = anchor(&c.id),
                id = esc(&c.id),
                r = esc(&c.requirement)
            );
        }
        s.push_str("</tbody></table>\n");
        for c in &self.cases {
            let open = if matches!(c.verdict, Verdict::Fail | Verdict::NonStrict) { " open" } else { "" };
            let _ = write!(
                s,
                "<section id=\"{a}\"><details{open}><summary><span class=\"v {v}\">{v}</span> <code>{id}</code></summary>\n\
<p><strong>{l}</strong>: {r}</p><p class=\"meta\">Judges {basis_long}: {why}</p>\n\
<p class=\"meta\">Sources: {src} · area {area} · modes {modes} · aimed at: {aim} · {secs:.1} s · case seed {seed}</p>\n",
                a = anchor(&c.id),
                v = c.verdict.as_str(),
                id = esc(&c.id),
                l = c.level.as_str(),
                r = esc(&c.requirement),
                basis_long = match c.basis {
                    Basis::Rfc => "an RFC requirement",
                    Basis::Roger => "a Roger choice",
                },
                why = esc(&c.rationale),
                src = esc(&c.sources.join(", ")),
                area = c.area.as_str(),
                modes = c.modes.iter().map(|m| m.as_str()).collect::<Vec<_>>().join(", "),
                aim = if c.aimed_at.is_empty() { "–".to_owned() } else { esc(&c.aimed_at.join(", ")) },
                secs = c.duration_ms as f64 / 1000.0,
                seed = c.seed,
            );
            if !c.reason.is_empty() {
                let _ = writeln!(s, "<p class=\"reason\">{}</p>", esc(&c.reason));
            }
            if let Some(x) = &c.expected_failure {
                let _ = writeln!(s, "<p class=\"warn\">Expected until {}: {}</p>", esc(&x.expires), esc(&x.reason));
            }
            if !c.evidence.is_empty() {
                s.push_str(
                    "<table class=\"ev\"><thead><tr><th>t</th><th>source</th><th>evidence</th></tr></thead><tbody>\n",
                );
                for e in &c.evidence {
                    let _ = writeln!(
                        s,
                        "<tr><td>+{:.3}s</td><td>{}</td><td><code>{}</code></td></tr>",
                        e.at_ms as f64 / 1000.0,
                        esc(e.source.label()),
                        esc(&e.text)
                    );
                }
                s.push_str("</tbody></table>\n");
            }
            if !c.shim_stderr_tail.is_empty() {
                let _ = writeln!(
                    s,
                    "<p class=\"meta\">Shim stderr (last lines, redacted):</p><pre>{}</pre>",
                    esc(&c.shim_stderr_tail)
                );
            }
            let _ = writeln!(
                s,
                "<p class=\"meta\">Rerun just this case:</p><pre>{}</pre></details></section>",
                esc(&c.rerun)
            );
        }
        s.push_str("</body></html>\n");
        s
    }
}

/// The committed JSON Schema of the JSON report.
pub const SCHEMA_FILE: &str = "docs/schemas/conform-report.json";

/// The JSON Schema of [`Report`] (draft 2020-12), committed as [`SCHEMA_FILE`].
pub fn json_schema() -> serde_json::Value {
    let mut v = schemars::schema_for!(Report).to_value();
    if let Some(o) = v.as_object_mut() {
        o.insert("$id".into(), serde_json::Value::String("urn:roger:schema:conform-report:1".into()));
        o.insert(
            "description".into(),
            serde_json::Value::String(format!(
                "The JSON report of `roger-sim conform` (schema `{SCHEMA}`): kit and criteria versions, the seed, counts, \
                 and per case its requirement, verdict, redacted evidence and the command that reruns it."
            )),
        );
    }
    v
}

fn evidence_text(c: &CaseReport) -> String {
    let mut t = String::new();
    for e in &c.evidence {
        let _ = writeln!(t, "+{:.3}s [{}] {}", e.at_ms as f64 / 1000.0, e.source.label(), e.text);
    }
    let _ = write!(t, "rerun: {}", c.rerun);
    t
}

const CSS: &str = "body{font-family:system-ui,sans-serif;margin:2em;max-width:80em;color:#222}\
code,pre{font-family:ui-monospace,monospace;font-size:.9em}pre{background:#f4f4f4;padding:.6em;white-space:pre-wrap}\
table{border-collapse:collapse;margin:.6em 0}td,th{border:1px solid #ddd;padding:.25em .5em;text-align:left;vertical-align:top}\
.v{font-weight:bold;padding:0 .3em;border-radius:3px}.PASS{background:#d9f2d9}.FAIL{background:#f8c9c9}\
.NON-STRICT{background:#fde7b0}.SKIP{background:#e4e4e4}.INFO{background:#d6e6fa}.meta{color:#555;font-size:.9em}\
.warn{background:#fff4ce;padding:.3em}.reason{font-weight:bold}section{margin:.4em 0}summary{cursor:pointer}";

/// HTML-escapes text.
pub fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

/// XML-escapes text, dropping characters XML 1.0 cannot carry.
pub fn xml(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&apos;"),
            '\t' | '\n' | '\r' => o.push(ch),
            c if (c as u32) < 0x20 || c == '\u{FFFE}' || c == '\u{FFFF}' => o.push('\u{FFFD}'),
            c => o.push(c),
        }
    }
    o
}

fn anchor(id: &str) -> String {
    id.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// docs/schemas/conform-report.json is what the types generate; ROGER_REGENERATE_CONFORMANCE=1 rewrites it.
    #[test]
    fn committed_schema_is_current() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(SCHEMA_FILE);
        let fresh = format!("{}\n", serde_json::to_string_pretty(&json_schema()).expect("schema"));
        let current = std::fs::read_to_string(&path).unwrap_or_default();
        if current != fresh {
            if std::env::var_os("ROGER_REGENERATE_CONFORMANCE").is_some() {
                std::fs::write(&path, fresh).expect("write the schema");
            } else {
                panic!(
                    "{SCHEMA_FILE} is stale; run ROGER_REGENERATE_CONFORMANCE=1 cargo test -p roger-sim --lib conform::report"
                );
            }
        }
    }

    #[test]
    fn quoting_and_escaping() {
        assert_eq!(shell_quote("roger/R-TOK-1/x"), "roger/R-TOK-1/x");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(esc("<a href=\"x\">&"), "&lt;a href=&quot;x&quot;&gt;&amp;");
        assert_eq!(xml("a\u{1}b<"), "a\u{FFFD}b&lt;");
    }
}
