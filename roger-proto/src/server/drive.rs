//! What the server core needs from the user's drive (PROTOCOL.md §9, R-DATA-1): file listings and short-lived
//! pre-authorised links. The drive itself (OneDrive in production, roger-sim's fake Graph subset on its own
//! listener) holds the documents; the core only ever sees ids, names, sizes and links, never document bytes.

use time::OffsetDateTime;

use crate::api::DriveFile;
use crate::secret::PreAuthorizedUrl;

use super::settings::AfterPrint;

/// A drive folder Roger uses (whitepaper: "Print" and "Scan", created on first use; "Printed" for the
/// after-print rule).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Folder {
    /// Documents to print.
    Print,
    /// Scans land here.
    Scan,
    /// Printed documents, if the tenant moves them.
    Printed,
}

impl Folder {
    /// The folder's name in the drive.
    pub fn name(self) -> &'static str {
        match self {
            Folder::Print => "Print",
            Folder::Scan => "Scan",
            Folder::Printed => "Printed",
        }
    }

    /// Parses a folder name (case-insensitive).
    pub fn parse(s: &str) -> Option<Self> {
        [Folder::Print, Folder::Scan, Folder::Printed].into_iter().find(|f| f.name().eq_ignore_ascii_case(s))
    }
}

/// The drive as the server core sees it. Implementations must not block for long: the core calls them while it
/// handles a request.
pub trait DriveLinks: Send {
    /// The files in `folder` of `user`'s drive (the folder is created on first use).
    fn list(&mut self, user_id: &str, folder: Folder) -> Vec<DriveFile>;

    /// One file's metadata, if it exists in the user's drive.
    fn file(&mut self, user_id: &str, file_id: &str) -> Option<DriveFile>;

    /// A fresh pre-authorised download URL for one file, valid until `expires` (PROTOCOL.md §9: 300 s).
    fn download_link(
        &mut self,
        now: OffsetDateTime,
        user_id: &str,
        file_id: &str,
        expires: OffsetDateTime,
    ) -> Option<PreAuthorizedUrl>;

    /// A resumable upload session into `folder` (Content-Range uploads), valid until `expires`.
    fn upload_link(
        &mut self,
        now: OffsetDateTime,
        user_id: &str,
        folder: Folder,
        expires: OffsetDateTime,
    ) -> PreAuthorizedUrl;

    /// Applies the tenant's after-print rule to a printed drive file.
    fn after_print(&mut self, user_id: &str, file_id: &str, rule: AfterPrint);
}

/// A drive with nothing in it, for cores that serve no drive jobs (tests of the OAuth side, desktop-only setups).
#[derive(Debug, Default, Clone, Copy)]
pub struct NoDrive;

impl DriveLinks for NoDrive {
    fn list(&mut self, _: &str, _: Folder) -> Vec<DriveFile> {
        Vec::new()
    }

    fn file(&mut self, _: &str, _: &str) -> Option<DriveFile> {
        None
    }

    fn download_link(&mut self, _: OffsetDateTime, _: &str, _: &str, _: OffsetDateTime) -> Option<PreAuthorizedUrl> {
        None
    }

    fn upload_link(&mut self, _: OffsetDateTime, _: &str, _: Folder, _: OffsetDateTime) -> PreAuthorizedUrl {
        PreAuthorizedUrl::new("")
    }

    fn after_print(&mut self, _: &str, _: &str, _: AfterPrint) {}
}
