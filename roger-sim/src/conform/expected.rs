//! The expected-failures file: how a vendor adopts the kit gradually. Each entry names a case (or a glob of case
//! IDs), the reason it is known to fail, and the date the excuse expires. A FAIL or NON-STRICT of an excused case is
//! still reported as such, but marked expected and left out of the exit code; after its expiry date an entry
//! excuses nothing and the report says so.
//!
//! ```toml
//! [[expected_failure]]
//! case = "rfc8628/3.5/slow-down-adds-5s"
//! reason = "firmware 4.2 resets the interval; fixed in 4.3 (ticket FW-1234)"
//! expires = 2026-06-30
//! ```

use serde::{Deserialize, Serialize};
use time::{Date, Month};

use super::case::glob_match;

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

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::date;

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
