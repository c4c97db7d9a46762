//! The expected-failures file: how a vendor adopts the kit gradually. Each entry names a case (or a glob of case
//! IDs), the reason it is known to fail, and the date the excuse expires. A FAIL or NON-STRICT of an excused case is
//! still reported as such, but marked expected and left out of the exit code; after its expiry date an entry
//! excuses nothing and the report says so.
//!
//! And the expected-verdicts table ([`ExpectedVerdicts`], `--expected-verdicts FILE`): the committed verdict of
//! every case of a run against a known peer (a correct foreign server, our own MFP), so a case that starts judging
//! that peer differently (a wrong FAIL of a correct server above all) fails the run like a regression.
//!
//! ```toml
//! [[expected_failure]]
//! case = "rfc8628/3.5/slow-down-adds-5s"
//! reason = "firmware 4.2 resets the interval; fixed in 4.3 (ticket FW-1234)"
//! expires = 2026-06-30
//! ```

use serde::{Deserialize, Serialize};
use time::{Date, Month};

use super::case::{glob_match, Verdict};

/// Why the file is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ExpectedError {
    /// Not TOML of the documented shape.
    #[error("expected-failures file: {0}")]
    Syntax(String),
    /// An entry is incomplete or names no case of the catalogue.
    #[error("expected-failures entry {index} ({case}): {reason}")]
    Entry {
        /// 0-based position.
        index: usize,
        /// Its `case`.
        case: String,
        /// What is wrong.
        reason: String,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    expected_failure: Vec<RawEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEntry {
    case: String,
    reason: String,
    expires: toml::value::Datetime,
}

/// One entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Excuse {
    /// The case ID or glob.
    pub case: String,
    /// Why it fails.
    pub reason: String,
    /// The last day the excuse holds (`YYYY-MM-DD`, UTC).
    pub expires: String,
    #[serde(skip)]
    #[schemars(skip)]
    date: Option<Date>,
}

impl Excuse {
    /// Whether the excuse still holds on `today` (it holds through its expiry date).
    pub fn holds_on(&self, today: Date) -> bool {
        self.date.is_some_and(|d| today <= d)
    }
}

/// The parsed file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExpectedFailures {
    entries: Vec<Excuse>,
}

fn date_of(dt: &toml::value::Datetime) -> Option<Date> {
    if dt.time.is_some() || dt.offset.is_some() {
        return None;
    }
    let d = dt.date?;
    Date::from_calendar_date(i32::from(d.year), Month::try_from(d.month).ok()?, d.day).ok()
}

impl ExpectedFailures {
    /// Parses the file; every entry must name at least one of `ids` (a misspelt ID would silently excuse nothing).
    pub fn parse(text: &str, ids: &[&str]) -> Result<Self, ExpectedError> {
        let file: File = toml::from_str(text).map_err(|e| ExpectedError::Syntax(e.message().to_owned()))?;
        let mut entries = Vec::new();
        for (index, raw) in file.expected_failure.into_iter().enumerate() {
            let bad = |reason: &str| ExpectedError::Entry { index, case: raw.case.clone(), reason: reason.to_owned() };
            if raw.reason.trim().is_empty() {
                return Err(bad("the reason is empty"));
            }
            let Some(date) = date_of(&raw.expires) else {
                return Err(bad("`expires` must be a date (YYYY-MM-DD)"));
            };
            if !ids.iter().any(|id| glob_match(&raw.case, id)) {
                return Err(bad("it names no case of the catalogue"));
            }
            entries.push(Excuse {
                case: raw.case,
                reason: raw.reason,
                expires: raw.expires.to_string(),
                date: Some(date),
            });
        }
        Ok(Self { entries })
    }

    /// The first entry that names `id` and still holds on `today`.
    pub fn excuse(&self, id: &str, today: Date) -> Option<&Excuse> {
        self.entries.iter().find(|e| glob_match(&e.case, id) && e.holds_on(today))
    }

    /// Entries past their expiry date on `today`.
    pub fn expired(&self, today: Date) -> Vec<&Excuse> {
        self.entries.iter().filter(|e| !e.holds_on(today)).collect()
    }

    /// Every entry.
    pub fn entries(&self) -> &[Excuse] {
        &self.entries
    }
}

/// Why an expected-verdicts file is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VerdictsError {
    /// Not TOML or JSON of the documented shape.
    #[error("expected-verdicts file: {0}")]
    Syntax(String),
    /// An entry names no case of the catalogue.
    #[error("expected-verdicts file: {0:?} is not a case of the catalogue")]
    UnknownCase(String),
}

/// One row of the table: the verdicts a case may come to (usually one), and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ExpectedVerdict {
    /// The verdicts accepted (one, or a few for a case that may legitimately come to either).
    pub verdicts: Vec<Verdict>,
    /// Why (optional; shown in the diff).
    pub reason: Option<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(Verdict),
    Many(Vec<Verdict>),
}

impl OneOrMany {
    fn into_vec(self) -> Vec<Verdict> {
        match self {
            Self::One(v) => vec![v],
            Self::Many(v) => v,
        }
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawVerdict {
    Bare(OneOrMany),
    Full {
        verdict: OneOrMany,
        #[serde(default)]
        reason: Option<String>,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct VerdictsFile {
    verdicts: std::collections::BTreeMap<String, RawVerdict>,
}

/// The committed verdict table: case ID → verdict(s), with an optional reason.
///
/// ```toml
/// [verdicts]
/// "rfc8628/3.5/poll-no-faster-than-interval" = "PASS"
/// "roger/R-QR-4/no-foreign-qr" = { verdict = "NON-STRICT", reason = "this printer shows foreign QR codes" }
/// "roger/R-TOK-1/invalid-client-keeps-user-flow" = { verdict = ["PASS", "SKIP"], reason = "SKIP when …" }
/// ```
///
/// or the same as JSON (`{"verdicts": {"<id>": "PASS" | {"verdict": …, "reason": …}}}`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExpectedVerdicts {
    entries: std::collections::BTreeMap<String, ExpectedVerdict>,
}

/// A case whose verdict differs from the table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct VerdictDiff {
    /// The case.
    pub case: String,
    /// What the table expects (`None`: the case is not in the table).
    pub expected: Option<Vec<Verdict>>,
    /// What the run came to.
    pub got: Verdict,
    /// The run's reason for its verdict.
    pub reason: String,
    /// The table's reason, if any.
    pub expected_reason: Option<String>,
}

impl VerdictDiff {
    /// One line: `case: expected X, got Y — reason`.
    pub fn line(&self) -> String {
        let expected = match &self.expected {
            None => "(not in the table)".to_owned(),
            Some(v) => v.iter().map(|v| v.as_str()).collect::<Vec<_>>().join(" or "),
        };
        let mut s = format!("{}: expected {expected}, got {}", self.case, self.got);
        if !self.reason.is_empty() {
            s.push_str(&format!(" — {}", self.reason));
        }
        if let Some(r) = &self.expected_reason {
            s.push_str(&format!(" (table: {r})"));
        }
        s
    }
}

impl ExpectedVerdicts {
    /// Parses a TOML or JSON table (JSON when the text starts with `{`); every ID must be a case of `ids`.
    pub fn parse(text: &str, ids: &[&str]) -> Result<Self, VerdictsError> {
        let file: VerdictsFile = if text.trim_start().starts_with('{') {
            serde_json::from_str(text).map_err(|e| VerdictsError::Syntax(e.to_string()))?
        } else {
            toml::from_str(text).map_err(|e| VerdictsError::Syntax(e.message().to_owned()))?
        };
        let mut entries = std::collections::BTreeMap::new();
        for (id, raw) in file.verdicts {
            if !ids.contains(&id.as_str()) {
                return Err(VerdictsError::UnknownCase(id));
            }
            let (verdicts, reason) = match raw {
                RawVerdict::Bare(v) => (v.into_vec(), None),
                RawVerdict::Full { verdict, reason } => (verdict.into_vec(), reason),
            };
            if verdicts.is_empty() {
                return Err(VerdictsError::Syntax(format!("{id}: no verdict")));
            }
            entries.insert(id, ExpectedVerdict { verdicts, reason });
        }
        Ok(Self { entries })
    }

    /// The row of `id`.
    pub fn get(&self, id: &str) -> Option<&ExpectedVerdict> {
        self.entries.get(id)
    }

    /// The difference for a case that came to `got` with `reason`, if any: a case the table does not list, or a
    /// verdict it does not accept.
    pub fn diff(&self, id: &str, got: Verdict, reason: &str) -> Option<VerdictDiff> {
        let row = self.entries.get(id);
        if row.is_some_and(|r| r.verdicts.contains(&got)) {
            return None;
        }
        Some(VerdictDiff {
            case: id.to_owned(),
            expected: row.map(|r| r.verdicts.clone()),
            got,
            reason: reason.to_owned(),
            expected_reason: row.and_then(|r| r.reason.clone()),
        })
    }

    /// Every row.
    pub fn entries(&self) -> &std::collections::BTreeMap<String, ExpectedVerdict> {
        &self.entries
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::date;

    #[test]
    fn verdict_tables_in_toml_and_json() {
        let toml = r#"
[verdicts]
"rfc8628/3.5/slow-down-adds-5s" = "PASS"
"roger/R-TOK-1/refresh-ahead" = { verdict = ["PASS", "SKIP"], reason = "timing" }
"#;
        let t = ExpectedVerdicts::parse(toml, &IDS).expect("toml");
        assert!(t.diff("rfc8628/3.5/slow-down-adds-5s", Verdict::Pass, "").is_none());
        let d = t.diff("rfc8628/3.5/slow-down-adds-5s", Verdict::Fail, "too early").expect("a diff");
        assert_eq!(d.line(), "rfc8628/3.5/slow-down-adds-5s: expected PASS, got FAIL — too early");
        assert!(t.diff("roger/R-TOK-1/refresh-ahead", Verdict::Skip, "").is_none());
        let d = t.diff("roger/R-TOK-1/refresh-ahead", Verdict::NonStrict, "late").unwrap();
        assert!(d.line().contains("expected PASS or SKIP, got NON-STRICT — late (table: timing)"), "{}", d.line());
        let json = r#"{"verdicts": {"rfc8628/3.5/slow-down-adds-5s": {"verdict": "NON-STRICT"}}}"#;
        let j = ExpectedVerdicts::parse(json, &IDS).expect("json");
        assert!(j.diff("rfc8628/3.5/slow-down-adds-5s", Verdict::NonStrict, "").is_none());
        let missing = j.diff("roger/R-TOK-1/refresh-ahead", Verdict::Pass, "").expect("not in the table");
        assert!(missing.line().contains("not in the table"));
        assert!(matches!(
            ExpectedVerdicts::parse("[verdicts]\n\"no/such/case\" = \"PASS\"\n", &IDS),
            Err(VerdictsError::UnknownCase(_))
        ));
        assert!(ExpectedVerdicts::parse("[verdicts]\n\"roger/R-TOK-1/refresh-ahead\" = \"GREAT\"\n", &IDS).is_err());
        assert!(ExpectedVerdicts::parse("[verdict]\n", &IDS).is_err(), "unknown table");
    }

    const IDS: [&str; 2] = ["rfc8628/3.5/slow-down-adds-5s", "roger/R-TOK-1/refresh-ahead"];

    #[test]
    fn entries_excuse_until_their_expiry() {
        let text = r#"
[[expected_failure]]
case = "rfc8628/3.5/*"
reason = "fixed in 4.3"
expires = 2026-06-30
"#;
        let x = ExpectedFailures::parse(text, &IDS).expect("parses");
        assert!(x.excuse("rfc8628/3.5/slow-down-adds-5s", date!(2026 - 06 - 30)).is_some(), "through the day");
        assert!(x.excuse("rfc8628/3.5/slow-down-adds-5s", date!(2026 - 07 - 01)).is_none(), "expired");
        assert!(x.excuse("roger/R-TOK-1/refresh-ahead", date!(2026 - 01 - 01)).is_none(), "another case");
        assert_eq!(x.expired(date!(2026 - 07 - 01)).len(), 1);
        assert_eq!(x.entries()[0].expires, "2026-06-30");
    }

    #[test]
    fn bad_files_are_refused_with_a_reason() {
        let unknown = "[[expected_failure]]\ncase = \"nope/*\"\nreason = \"x\"\nexpires = 2026-01-01\n";
        assert!(matches!(ExpectedFailures::parse(unknown, &IDS), Err(ExpectedError::Entry { .. })));
        let no_reason = "[[expected_failure]]\ncase = \"roger/*\"\nreason = \" \"\nexpires = 2026-01-01\n";
        assert!(ExpectedFailures::parse(no_reason, &IDS).unwrap_err().to_string().contains("reason"));
        let datetime = "[[expected_failure]]\ncase = \"roger/*\"\nreason = \"r\"\nexpires = 2026-01-01T00:00:00Z\n";
        assert!(ExpectedFailures::parse(datetime, &IDS).unwrap_err().to_string().contains("date"));
        let missing = "[[expected_failure]]\ncase = \"roger/*\"\nreason = \"r\"\n";
        assert!(matches!(ExpectedFailures::parse(missing, &IDS), Err(ExpectedError::Syntax(_))));
        let typo = "[[expected_failure]]\ncase = \"roger/*\"\nreason = \"r\"\nexpire = 2026-01-01\n";
        assert!(ExpectedFailures::parse(typo, &IDS).is_err());
        assert_eq!(ExpectedFailures::parse("", &IDS).expect("empty").entries().len(), 0);
    }
}
