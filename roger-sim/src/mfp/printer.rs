//! The simulated print engine: a released document is "printed" by writing its bytes into the output folder, and
//! every print is recorded as one JSON line in `printed.jsonl` (job id, file name, source, pages, bytes, SHA-256,
//! time). The record is what the demo and the tests read to prove that the bytes came from the drive or the
//! desktop and never through the API (R-DATA-1).
//!
//! File names come from the server (drive jobs) or the ticket redemption (desktop jobs): they are untrusted, so
//! the stored name is the job id plus a sanitised base name that cannot leave the output folder.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use super::state::{self, StateError};

/// The record file's name inside the output folder (one JSON object per line; PROTOCOL.md §9).
pub const RECORD_FILE: &str = "printed.jsonl";

/// Longest stored file name component (bytes), well below common file system limits (255).
const MAX_NAME: usize = 120;

/// Where a printed document came from (PROTOCOL.md §9 job `source`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PrintSource {
    /// Downloaded from the pre-authorised drive URL of a release (PROTOCOL.md §9).
    Drive,
    /// Handed over by the desktop client with a ticket (PROTOCOL.md §9 desktop hand-over).
    Desktop,
}

/// One line of `printed.jsonl`: what was printed (PROTOCOL.md §9; the document itself stays in the output folder).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrintRecord {
    /// The job id (PROTOCOL.md §9).
    pub job_id: String,
    /// The job's file name as the server or the ticket named it (PROTOCOL.md §9 `file_name`).
    pub file_name: String,
    /// Drive or desktop (PROTOCOL.md §9 `source`).
    pub source: PrintSource,
    /// Page count reported with the result (PROTOCOL.md §9 `POST …/result {"pages"}`).
    pub pages: u32,
    /// Document size in bytes (PROTOCOL.md §9 `document.size` for drive jobs).
    pub bytes: u64,
    /// SHA-256 of the document, lower-case hex.
    pub sha256: String,
    /// When it printed (RFC 3339 UTC, PROTOCOL.md §1).
    pub printed_at: String,
    /// Where the bytes were written (the output folder, PROTOCOL.md §9 "print").
    pub path: PathBuf,
}

/// Lower-case hex SHA-256 (FIPS 180-4) of `bytes`, as in the print record (PROTOCOL.md §9).
pub fn sha256_hex(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    let mut out = String::with_capacity(64);
    for b in digest {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// A file-name component from an untrusted name (PROTOCOL.md §9 `file_name` is user data): the last path segment, only `A–Z a–z 0–9 . _ -` and spaces kept
/// (others become `_`), no leading dots, at most 120 bytes, never empty.
pub fn sanitize_file_name(name: &str) -> String {
    let base = name.rsplit(['/', '\\']).next().unwrap_or("");
    let mut out: String = base
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | ' ') { c } else { '_' })
        .collect();
    let trimmed = out.trim_start_matches('.').trim().to_owned();
    out = trimmed;
    if out.len() > MAX_NAME {
        out.truncate(MAX_NAME);
    }
    if out.is_empty() {
        out.push_str("document");
    }
    out
}

/// The print engine (PROTOCOL.md §9 "print"): an output folder and its record. Prints are serialised, so record lines never interleave.
#[derive(Debug)]
pub struct Printer {
    out_dir: PathBuf,
    lock: Mutex<()>,
}

impl Printer {
    /// A printer writing into `out_dir` (created on the first print; PROTOCOL.md §9).
    pub fn new(out_dir: impl Into<PathBuf>) -> Self {
        Self { out_dir: out_dir.into(), lock: Mutex::new(()) }
    }

    /// The output folder (PROTOCOL.md §9).
    pub fn out_dir(&self) -> &Path {
        &self.out_dir
    }

    /// The record file's path (PROTOCOL.md §9 print record).
    pub fn record_path(&self) -> PathBuf {
        self.out_dir.join(RECORD_FILE)
    }

    /// "Prints" a document (PROTOCOL.md §9, R-DATA-1: the bytes came from the drive or the desktop): writes it as `<job id>-<sanitised name>` atomically, then appends its record line.
    pub fn print(
        &self,
        job_id: &str,
        file_name: &str,
        source: PrintSource,
        pages: u32,
        document: &[u8],
    ) -> Result<PrintRecord, StateError> {
        let _guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let stored = format!("{}-{}", sanitize_file_name(job_id), sanitize_file_name(file_name));
        let path = state::write_atomically(&self.out_dir, &stored, document)?;
        let record = PrintRecord {
            job_id: job_id.to_owned(),
            file_name: file_name.to_owned(),
            source,
            pages,
            bytes: document.len() as u64,
            sha256: sha256_hex(document),
            printed_at: OffsetDateTime::now_utc().format(&Rfc3339).unwrap_or_default(),
            path,
        };
        // A record of strings and numbers always serialises.
        let line = serde_json::to_string(&record).unwrap_or_default();
        state::append_line(&self.record_path(), &line)?;
        Ok(record)
    }

    /// Every record so far (PROTOCOL.md §9), in print order (lines that do not parse are skipped: the file is ours, but a crash
    /// mid-append may leave a torn last line).
    pub fn records(&self) -> Vec<PrintRecord> {
        let _guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        read_records(&self.record_path())
    }
}

/// Reads a `printed.jsonl` file (PROTOCOL.md §9 print record; see [`Printer::records`]); a missing file has no records.
pub fn read_records(path: &Path) -> Vec<PrintRecord> {
    std::fs::read_to_string(path)
        .map(|text| text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_of_known_input() {
        assert_eq!(sha256_hex(b"abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }

    /// Untrusted names cannot climb out of the output folder or hide as dot files.
    #[test]
    fn sanitised_names_stay_inside() {
        assert_eq!(sanitize_file_name("quarterly-report.pdf"), "quarterly-report.pdf");
        assert_eq!(sanitize_file_name("../../etc/passwd"), "passwd");
        assert_eq!(sanitize_file_name("..\\..\\boot.ini"), "boot.ini");
        assert_eq!(sanitize_file_name(".."), "document");
        assert_eq!(sanitize_file_name(".hidden"), "hidden");
        assert_eq!(sanitize_file_name(""), "document");
        assert_eq!(sanitize_file_name("memo from desktop.docx"), "memo from desktop.docx");
        assert_eq!(sanitize_file_name("a\u{0}b\nc:d*?.pdf"), "a_b_c_d__.pdf");
        assert_eq!(sanitize_file_name("Überblick.pdf"), "_berblick.pdf");
        assert_eq!(sanitize_file_name(&"x".repeat(500)).len(), MAX_NAME);
    }

    /// A print writes the bytes and one record line with their size and hash.
    #[test]
    fn print_writes_bytes_and_record() {
        let tmp = crate::test_support::TempDir::new("mfp-printer");
        let dir = tmp.path().to_path_buf();
        let printer = Printer::new(dir.join("out"));
        assert!(printer.records().is_empty());
        let r = printer.print("job_1", "../report.pdf", PrintSource::Drive, 3, b"%PDF-1.7 hello").expect("print");
        assert_eq!(r.path, dir.join("out").join("job_1-report.pdf"));
        assert_eq!(std::fs::read(&r.path).expect("bytes"), b"%PDF-1.7 hello");
        assert_eq!((r.bytes, r.pages, r.source), (14, 3, PrintSource::Drive));
        assert_eq!(r.sha256, sha256_hex(b"%PDF-1.7 hello"));
        assert!(OffsetDateTime::parse(&r.printed_at, &Rfc3339).is_ok());
        let r2 = printer.print("job_2", "memo.docx", PrintSource::Desktop, 2, b"memo").expect("print");
        assert_eq!(printer.records(), vec![r, r2]);
        std::fs::remove_dir_all(&dir).ok();
    }
}
