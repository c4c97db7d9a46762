//! The Roger REST API bodies and request builders (PROTOCOL.md §9–10).
//!
//! Every body the API moves is a serde type here: code lookup and approval (§5, §8), device configuration and
//! push credentials (§9, §11), jobs, releases and results (§9), the drive file list, print features, scan
//! profiles and scans (§9), session end (§8) and the user's data export (R-DATA-2).
//!
//! Conventions (DESIGN.md): unknown JSON members are ignored, wrong types are errors; timestamps are RFC 3339
//! (PROTOCOL.md §1); enums over fixed wire strings are `snake_case`, and those a server may extend (job source,
//! code kind, colour and duplex modes) have an `Unknown` fallback. Credentials in bodies (user codes, tickets,
//! pre-authorised URLs, broker passwords) are [`crate::secret`] newtypes, so `Debug` never prints them (R-SEC-1).
//!
//! Request builders take the API origin (`https://host:port`, PROTOCOL.md §1) and an access token, which always
//! travels in the `Authorization` header and never in the URL (RFC 6750 §2.3, RFC 9700 §2.5). Path segments
//! (job ids, user codes, device ids) are percent-encoded with [`encode_path_segment`]. Answers are read with
//! [`crate::wire::classify_api`] (or [`crate::wire::classify_api_empty`] for answers without a body of interest).

use http::{Method, Request};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::secret::{AccessToken, BrokerPassword, PreAuthorizedUrl, Ticket, UserCode};
use crate::wire::api_request;

/// Route templates of the Roger API (PROTOCOL.md §9–10), in the `{name}` placeholder syntax of axum 0.8, so the
/// server routes and the client builders share one spelling.
pub mod paths {
    /// `GET /api/v1/codes/{user_code}`: look a user code up (R-QR-2, RFC 8628 §5.4).
    pub const CODE: &str = "/api/v1/codes/{user_code}";
    /// `POST /api/v1/codes/approve` (PROTOCOL.md §5 step 3, §8).
    pub const CODE_APPROVE: &str = "/api/v1/codes/approve";
    /// `POST /api/v1/codes/deny` (PROTOCOL.md §5 step 3, §8).
    pub const CODE_DENY: &str = "/api/v1/codes/deny";
    /// `GET/PUT /api/v1/device`: the calling device's configuration (PROTOCOL.md §9, §10).
    pub const DEVICE: &str = "/api/v1/device";
    /// `GET /api/v1/device/push`: broker credentials for the device queue (PROTOCOL.md §11).
    pub const DEVICE_PUSH: &str = "/api/v1/device/push";
    /// `GET /api/v1/me/push?installation_id=…`: the app equivalent of [`DEVICE_PUSH`] (PROTOCOL.md §11; the path
    /// is this crate's choice inside the `/api/v1/me/*` family of §10).
    pub const ME_PUSH: &str = "/api/v1/me/push";
    /// `POST /api/v1/tickets/redeem`: check a desktop hand-over ticket (PROTOCOL.md §9).
    pub const TICKET_REDEEM: &str = "/api/v1/tickets/redeem";
    /// `GET /api/v1/jobs?state=queued` and `POST /api/v1/jobs` (PROTOCOL.md §9).
    pub const JOBS: &str = "/api/v1/jobs";
    /// `DELETE /api/v1/jobs/{id}` (PROTOCOL.md §9).
    pub const JOB: &str = "/api/v1/jobs/{id}";
    /// `POST /api/v1/jobs/{id}/release` with `Idempotency-Key` (PROTOCOL.md §9).
    pub const JOB_RELEASE: &str = "/api/v1/jobs/{id}/release";
    /// `POST /api/v1/jobs/{id}/result` (PROTOCOL.md §9).
    pub const JOB_RESULT: &str = "/api/v1/jobs/{id}/result";
    /// `GET /api/v1/drive/files?folder=Print` (PROTOCOL.md §9).
    pub const DRIVE_FILES: &str = "/api/v1/drive/files";
    /// `GET /api/v1/print-features` (PROTOCOL.md §9).
    pub const PRINT_FEATURES: &str = "/api/v1/print-features";
    /// `GET /api/v1/scan-profiles` (PROTOCOL.md §9).
    pub const SCAN_PROFILES: &str = "/api/v1/scan-profiles";
    /// `POST /api/v1/scans` (PROTOCOL.md §9).
    pub const SCANS: &str = "/api/v1/scans";
    /// `POST /api/v1/scans/{id}/complete` (PROTOCOL.md §9).
    pub const SCAN_COMPLETE: &str = "/api/v1/scans/{id}/complete";
    /// `POST /api/v1/sessions/end` (PROTOCOL.md §8 "End").
    pub const SESSIONS_END: &str = "/api/v1/sessions/end";
    /// `GET /api/v1/me/export` (R-DATA-2).
    pub const ME_EXPORT: &str = "/api/v1/me/export";
    /// `DELETE /api/v1/me` (R-DATA-2).
    pub const ME: &str = "/api/v1/me";
    /// `DELETE /api/v1/devices/{id}`: an admin removes a device (R-TOK-4).
    pub const DEVICE_REMOVE: &str = "/api/v1/devices/{id}";
}

/// The `Idempotency-Key` request header of `POST /api/v1/jobs/{id}/release` (PROTOCOL.md §9: "Repeating a
/// release with the same key returns an equivalent answer").
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// The folder of print-ready files on the user's drive (PROTOCOL.md §9 `?folder=Print`).
pub const PRINT_FOLDER: &str = "Print";

// ---------------------------------------------------------------------------------------------------------------
// Codes (PROTOCOL.md §5 step 3, §8, R-QR-2)
// ---------------------------------------------------------------------------------------------------------------

/// What a user code authorises (PROTOCOL.md §5, §8, §4; R-QR-2: the app shows it before approving).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum CodeKind {
    /// An MFP registration (`scope=roger.device`, PROTOCOL.md §5); only a tenant admin may approve.
    Registration,
    /// A user session at an MFP (the step-1 dynamic QR, `scope=roger.release`, PROTOCOL.md §8).
    Session,
    /// A desktop login (`client_id=roger-desktop`, PROTOCOL.md §4).
    Desktop,
    /// A kind this crate does not know (a newer server); show it as unknown, do not fail.
    #[serde(other)]
    Unknown,
}

/// The answer of `GET /api/v1/codes/{user_code}` (PROTOCOL.md §5 step 3, R-QR-2, RFC 8628 §5.4: the user must
/// see which device they authorise).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct CodeLookup {
    /// What approving the code does.
    pub kind: CodeKind,
    /// The MFP vendor (from its `emb-<vendor>` client id), if the code belongs to a printer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vendor: Option<String>,
    /// The MFP model, if the code belongs to a printer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// The MFP serial number, if the code belongs to a printer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
    /// When the code expires (RFC 3339, PROTOCOL.md §1).
    #[serde(with = "time::serde::rfc3339")]
    #[cfg_attr(feature = "schema", schemars(with = "crate::schema::Rfc3339"))]
    pub expires: OffsetDateTime,
}

/// The body of `POST /api/v1/codes/approve` and `POST /api/v1/codes/deny` (PROTOCOL.md §5 step 3, §8).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct CodeDecision {
    /// The user code in wire form (8 upper-case letters, no hyphen; RFC 8628 §6.1).
    pub user_code: UserCode,
}

// ---------------------------------------------------------------------------------------------------------------
// Device configuration and push credentials (PROTOCOL.md §9, §10, §11)
// ---------------------------------------------------------------------------------------------------------------

/// The answer of `GET /api/v1/device` and `PUT /api/v1/device` (PROTOCOL.md §9–10, scope `roger.device`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct DeviceConfig {
    /// The device id issued at registration (PROTOCOL.md §5 step 4).
    pub device_id: String,
    /// The tenant the device belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant_id: Option<String>,
    /// The vendor (from the `emb-<vendor>` client id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vendor: Option<String>,
    /// The model sent at registration (`device_model`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// The serial number sent at registration (`device_serial`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
    /// The MFP's job endpoint for desktop hand-over, if published (PROTOCOL.md §9).
    #[serde(default)]
    pub job_url: Option<String>,
}

/// The body of `PUT /api/v1/device` (PROTOCOL.md §9: "the MFP publishes its job endpoint").
///
/// `job_url` is always sent; `null` withdraws a published endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct DeviceUpdate {
    /// Where desktops `POST` files with `Authorization: Ticket <ticket>` (PROTOCOL.md §9).
    #[serde(default)]
    pub job_url: Option<String>,
}

/// The answer of `GET /api/v1/device/push` (and the app equivalent): short-lived broker credentials that may only
/// consume one queue (PROTOCOL.md §11).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct PushCredentials {
    /// The broker URL (`amqps://…`; plain `amqp://` only on a loopback test broker, R-DISC-2).
    pub url: String,
    /// The AMQP virtual host.
    pub vhost: String,
    /// The broker user name.
    pub username: String,
    /// The broker password (a credential, R-SEC-1).
    pub password: BrokerPassword,
    /// The queue the credentials may consume (`roger.device.<id>` or `roger.app.<installation>`).
    pub queue: String,
    /// When the credentials expire; fetch new ones before (PROTOCOL.md §11).
    #[serde(with = "time::serde::rfc3339")]
    #[cfg_attr(feature = "schema", schemars(with = "crate::schema::Rfc3339"))]
    pub expires_at: OffsetDateTime,
    /// Set by the simulator when it hands out a shared test account on a loopback broker instead of a
    /// per-principal user, "and says so" (PROTOCOL.md §11). Absent means `false`.
    #[serde(default, skip_serializing_if = "is_false")]
    pub shared_test_account: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

// ---------------------------------------------------------------------------------------------------------------
// Desktop hand-over tickets (PROTOCOL.md §9)
// ---------------------------------------------------------------------------------------------------------------

/// The body of `POST /api/v1/tickets/redeem` (PROTOCOL.md §9: one use, bound to job and device).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct TicketRedeem {
    /// The ticket the desktop presented as `Authorization: Ticket <ticket>`.
    pub ticket: Ticket,
}

/// The answer of `POST /api/v1/tickets/redeem`: what the ticket is good for (PROTOCOL.md §9). The MFP accepts the
/// file only if `device_id` is its own.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct TicketRedemption {
    /// The job the ticket releases.
    pub job_id: String,
    /// The device the ticket is bound to.
    pub device_id: String,
    /// The job's file name (kept by the server under R-DATA-2).
    pub file_name: String,
    /// The job's page count.
    pub pages: u32,
}

// ---------------------------------------------------------------------------------------------------------------
// Jobs (PROTOCOL.md §9)
// ---------------------------------------------------------------------------------------------------------------

/// Where a queued job's document lives (PROTOCOL.md §9, R-DATA-1: never on the server).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum JobSource {
    /// A file on the user's drive; released as a pre-authorised URL.
    Drive,
    /// A file on the user's desktop; released as a hand-over ticket.
    Desktop,
    /// A source this crate does not know (a newer server).
    #[serde(other)]
    Unknown,
}

/// One queued job (docs/protocol.md §3.13 `GET /api/v1/jobs?state=queued`). Read item by item with
/// [`classify_job_list`]: `id` and `file_name` are needed (an item without them is left out); the rest has a
/// default when a server leaves it out (docs/protocol.md §7).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Job {
    /// The job id.
    pub id: String,
    /// The document's file name (kept under R-DATA-2).
    pub file_name: String,
    /// Page count; `0` when the server did not say (the printer counts the pages it prints).
    #[serde(default)]
    pub pages: u32,
    /// Drive or desktop; [`JobSource::Unknown`] for a source this crate does not know, which is still released
    /// (the release answer says how the document comes).
    pub source: JobSource,
    /// When the job was queued (informational; absent when the server did not say).
    #[serde(default, with = "time::serde::rfc3339::option", skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schemars(with = "Option<crate::schema::Rfc3339>"))]
    pub created: Option<OffsetDateTime>,
    /// When the queued job lapses (default 7 days, docs/protocol.md §6.6; informational, absent when the server
    /// did not say).
    #[serde(default, with = "time::serde::rfc3339::option", skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schemars(with = "Option<crate::schema::Rfc3339>"))]
    pub expires: Option<OffsetDateTime>,
}

/// The answer of `GET /api/v1/jobs?state=queued` (PROTOCOL.md §9).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct JobList {
    /// The caller's queued jobs.
    pub jobs: Vec<Job>,
}

/// The body of `POST /api/v1/jobs/{id}/release` (PROTOCOL.md §9). The MFP sends `{}`; the phone names the
/// printer, and the server pushes `job.release_requested` to it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ReleaseRequest {
    /// The printer to release to (phone only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_id: Option<String>,
}

/// Colour mode of a print or scan (PROTOCOL.md §9 print features, scan profiles).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum ColorMode {
    /// Colour.
    Color,
    /// Black and white.
    Monochrome,
    /// A mode this crate does not know.
    #[serde(other)]
    Unknown,
}

/// Duplex mode of a print (PROTOCOL.md §9 print features).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum Duplex {
    /// Single-sided.
    OneSided,
    /// Double-sided, flipped on the long edge.
    TwoSidedLongEdge,
    /// Double-sided, flipped on the short edge.
    TwoSidedShortEdge,
    /// A mode this crate does not know.
    #[serde(other)]
    Unknown,
}

/// Print options of a released drive job (PROTOCOL.md §9 `"options":{…}`); every member is optional and the
/// MFP's defaults apply to what is absent.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct PrintOptions {
    /// Number of copies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub copies: Option<u32>,
    /// Colour or black and white.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub color: Option<ColorMode>,
    /// Single- or double-sided.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duplex: Option<Duplex>,
    /// Paper size name (e.g. `A4`, `Letter`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paper_size: Option<String>,
}

/// A fresh pre-authorised drive URL for a released drive job (docs/protocol.md §3.13: 300 s; R-DATA-1: the MFP
/// fetches the document from the drive, never through the server).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct DocumentLink {
    /// The download URL (a credential, R-SEC-1).
    pub url: PreAuthorizedUrl,
    /// When the URL stops working; absent when the server did not say (the MFP fetches at once either way, and
    /// the drive decides; docs/protocol.md §7).
    #[serde(default, with = "time::serde::rfc3339::option", skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schemars(with = "Option<crate::schema::Rfc3339>"))]
    pub expires_at: Option<OffsetDateTime>,
    /// Document size in bytes; when present the MFP checks the download against it, when absent it reads to the
    /// end under its own size cap (docs/protocol.md §7).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
}

/// A desktop job's hand-over ticket (PROTOCOL.md §9): the desktop `POST`s the file to the MFP's `job_url` with
/// `Authorization: Ticket <ticket>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct DesktopHandover {
    /// The one-use ticket (a credential, R-SEC-1).
    pub ticket: Ticket,
    /// When the ticket lapses.
    #[serde(with = "time::serde::rfc3339")]
    #[cfg_attr(feature = "schema", schemars(with = "crate::schema::Rfc3339"))]
    pub expires_at: OffsetDateTime,
}

/// The answer of `POST /api/v1/jobs/{id}/release` at the MFP (PROTOCOL.md §9), told apart by its member:
/// `{"document":…,"options":…}` or `{"desktop":…}`.
///
/// The phone's release (with a `device_id`) only triggers a push; read its answer with
/// [`crate::wire::classify_api_empty`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(untagged)]
pub enum ReleaseAnswer {
    /// A drive job: fetch the document from the pre-authorised URL.
    Drive {
        /// Where to fetch it.
        document: DocumentLink,
        /// How to print it (absent means MFP defaults).
        #[serde(default)]
        options: PrintOptions,
    },
    /// A desktop job: wait for the desktop to deliver it with this ticket.
    Desktop {
        /// The hand-over ticket.
        desktop: DesktopHandover,
    },
}

/// The outcome the MFP reports for a released job (PROTOCOL.md §9). Closed set: a server refuses anything else.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum JobOutcome {
    /// Printed; the tenant's after-print rule applies (delete / move to "Printed" / leave).
    Printed,
    /// Not printed.
    Failed,
}

/// The body of `POST /api/v1/jobs/{id}/result` (PROTOCOL.md §9; idempotent).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct JobResult {
    /// Printed or failed.
    pub state: JobOutcome,
    /// Pages actually printed.
    pub pages: u32,
}

/// A desktop job's metadata (PROTOCOL.md §9 `{"desktop":{"file_name","pages"}}`; the file stays on the desktop).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct DesktopFile {
    /// The document's file name.
    pub file_name: String,
    /// Page count.
    pub pages: u32,
}

/// The body of `POST /api/v1/jobs` (PROTOCOL.md §9): a drive file (step 2 at the MFP) or a desktop document
/// (the desktop client). The answer is the created [`Job`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(untagged)]
pub enum SubmitJob {
    /// `{"drive_file_id":…}`.
    Drive {
        /// The drive file id from [`DriveFileList`].
        drive_file_id: String,
    },
    /// `{"desktop":{"file_name","pages"}}`.
    Desktop {
        /// The document's metadata.
        desktop: DesktopFile,
    },
}

// ---------------------------------------------------------------------------------------------------------------
// Drive, print features, scans (PROTOCOL.md §9)
// ---------------------------------------------------------------------------------------------------------------

/// One file of the drive's print folder (docs/protocol.md §3.15: ids, names, sizes). Read item by item with
/// [`classify_drive_files`]: `id` and `name` are needed, `size` defaults to `0` (unknown).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct DriveFile {
    /// The drive's file id.
    pub id: String,
    /// The file name.
    pub name: String,
    /// Size in bytes; `0` when the server did not say.
    #[serde(default)]
    pub size: u64,
}

/// The answer of `GET /api/v1/drive/files?folder=Print` (PROTOCOL.md §9).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct DriveFileList {
    /// The files.
    pub files: Vec<DriveFile>,
}

/// The answer of `GET /api/v1/print-features` (PROTOCOL.md §9): what the user may choose at the panel.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct PrintFeatures {
    /// Allowed colour modes.
    #[serde(default)]
    pub color_modes: Vec<ColorMode>,
    /// Allowed duplex modes.
    #[serde(default)]
    pub duplex_modes: Vec<Duplex>,
    /// Allowed paper sizes.
    #[serde(default)]
    pub paper_sizes: Vec<String>,
    /// Most copies per job, if limited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_copies: Option<u32>,
    /// The tenant's defaults.
    #[serde(default)]
    pub defaults: PrintOptions,
}

/// One scan profile (PROTOCOL.md §9 `GET /api/v1/scan-profiles`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ScanProfile {
    /// The profile id, sent back in [`ScanCreate`].
    pub id: String,
    /// What the panel shows.
    pub name: String,
    /// File format (e.g. `pdf`, `jpeg`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
    /// Resolution in dots per inch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dpi: Option<u32>,
    /// Colour or black and white.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub color: Option<ColorMode>,
    /// Scan both sides.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duplex: Option<bool>,
}

/// The answer of `GET /api/v1/scan-profiles` (PROTOCOL.md §9).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ScanProfileList {
    /// The profiles.
    pub profiles: Vec<ScanProfile>,
}

/// The body of `POST /api/v1/scans` (PROTOCOL.md §9).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ScanCreate {
    /// The chosen profile.
    pub profile_id: String,
}

/// A pre-authorised, resumable upload session into the drive's "Scan" folder (PROTOCOL.md §9: the MFP `PUT`s
/// with `Content-Range`; R-DATA-1: the scan never passes through the server).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct UploadLink {
    /// The upload URL (a credential, R-SEC-1).
    pub url: PreAuthorizedUrl,
    /// When the session lapses; absent when the server did not say (the MFP uploads at once either way and the
    /// drive decides; docs/protocol.md §7).
    #[serde(default, with = "time::serde::rfc3339::option", skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schemars(with = "Option<crate::schema::Rfc3339>"))]
    pub expires_at: Option<OffsetDateTime>,
}

/// The answer of `POST /api/v1/scans` (PROTOCOL.md §9).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ScanCreated {
    /// The scan id, used in `POST /api/v1/scans/{id}/complete`.
    pub scan_id: String,
    /// Where to upload.
    pub upload: UploadLink,
}

/// The body of `POST /api/v1/scans/{id}/complete` (PROTOCOL.md §9). Technical records only (R-DATA-2: never a
/// scan file name); `{}` is a valid body.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ScanComplete {
    /// Bytes uploaded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// Pages scanned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pages: Option<u32>,
}

// ---------------------------------------------------------------------------------------------------------------
// Sessions and the user's own data (PROTOCOL.md §8 "End", R-DATA-2)
// ---------------------------------------------------------------------------------------------------------------

/// The body of `POST /api/v1/sessions/end` (PROTOCOL.md §8 "End": the user ends their session at a printer from
/// the app; the server pushes `session.ended`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct SessionEnd {
    /// The printer whose session ends.
    pub device_id: String,
}

/// The user in the data export: the same shape as the token response's `user` (R-DATA-2: e-mail, user name,
/// display name).
pub use crate::token::TokenUser as UserProfile;

/// A print job in the data export (R-DATA-2: the file name is kept, the document is not).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ExportedJob {
    /// The job id.
    pub id: String,
    /// The file name.
    pub file_name: String,
    /// Page count.
    pub pages: u32,
    /// Drive or desktop.
    pub source: JobSource,
    /// When it was queued.
    #[serde(with = "time::serde::rfc3339")]
    #[cfg_attr(feature = "schema", schemars(with = "crate::schema::Rfc3339"))]
    pub created: OffsetDateTime,
}

/// A scan in the data export (R-DATA-2: timestamps only, never a file name).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ExportedScan {
    /// The scan id.
    pub id: String,
    /// When the scan was started.
    #[serde(with = "time::serde::rfc3339")]
    #[cfg_attr(feature = "schema", schemars(with = "crate::schema::Rfc3339"))]
    pub created: OffsetDateTime,
    /// When the upload was reported complete.
    #[serde(default, with = "time::serde::rfc3339::option", skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schemars(with = "Option<crate::schema::Rfc3339>"))]
    pub completed: Option<OffsetDateTime>,
}

/// The answer of `GET /api/v1/me/export` (R-DATA-2): everything the server keeps about the caller.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct MeExport {
    /// The person.
    pub user: UserProfile,
    /// Their print jobs (file names included).
    #[serde(default)]
    pub jobs: Vec<ExportedJob>,
    /// Their scans (timestamps only).
    #[serde(default)]
    pub scans: Vec<ExportedScan>,
}

// ---------------------------------------------------------------------------------------------------------------
// Request builders
// ---------------------------------------------------------------------------------------------------------------

/// Percent-encodes one path segment (RFC 3986 §3.3): everything but the unreserved characters
/// `A–Z a–z 0–9 - . _ ~` becomes `%XX`, so an id with `/`, `?`, `#`, `%` or a space cannot change the route.
/// The dot segments `.` and `..` are encoded as `%2E` too, so they cannot climb the path (RFC 3986 §5.2.4).
pub fn encode_path_segment(segment: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let all_dots = !segment.is_empty() && segment.len() <= 2 && segment.bytes().all(|b| b == b'.');
    let mut out = String::with_capacity(segment.len());
    for b in segment.bytes() {
        let unreserved = b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~');
        if unreserved && !(all_dots && b == b'.') {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0x0f)]));
        }
    }
    out
}

/// `{api}{path}`, tolerating a trailing slash on the origin (PROTOCOL.md §1: the API base has no path).
fn endpoint(api: &str, path: &str) -> String {
    format!("{}{}", api.trim_end_matches('/'), path)
}

/// `{api}{prefix}/{segment}{suffix}` with the segment percent-encoded.
fn endpoint_with(api: &str, prefix: &str, segment: &str, suffix: &str) -> String {
    format!("{}{prefix}/{}{suffix}", api.trim_end_matches('/'), encode_path_segment(segment))
}

/// Serialises a body. The types of this module hold only strings, numbers, booleans and timestamps inside
/// structs, which `serde_json` always serialises, so the fallback is unreachable.
fn json<T: Serialize>(body: &T) -> Vec<u8> {
    serde_json::to_vec(body).unwrap_or_default()
}

/// `GET /api/v1/codes/{user_code}` with an app token (PROTOCOL.md §5 step 3, R-QR-2, scope `roger.app`).
pub fn lookup_code(api: &str, token: &AccessToken, user_code: &UserCode) -> Result<Request<Vec<u8>>, http::Error> {
    api_request(Method::GET, &endpoint_with(api, "/api/v1/codes", user_code.secret(), ""), token, None)
}

/// `POST /api/v1/codes/approve {"user_code"}` (PROTOCOL.md §5 step 3, §8; scope `roger.app`; non-admins get 403
/// for registrations, unknown/expired codes 404, too many 429).
pub fn approve_code(api: &str, token: &AccessToken, user_code: &UserCode) -> Result<Request<Vec<u8>>, http::Error> {
    let body = json(&CodeDecision { user_code: user_code.clone() });
    api_request(Method::POST, &endpoint(api, paths::CODE_APPROVE), token, Some(body))
}

/// `POST /api/v1/codes/deny {"user_code"}` (PROTOCOL.md §5 step 3, §8; scope `roger.app`).
pub fn deny_code(api: &str, token: &AccessToken, user_code: &UserCode) -> Result<Request<Vec<u8>>, http::Error> {
    let body = json(&CodeDecision { user_code: user_code.clone() });
    api_request(Method::POST, &endpoint(api, paths::CODE_DENY), token, Some(body))
}

/// `GET /api/v1/device` with the device token (PROTOCOL.md §10, scope `roger.device`); answer [`DeviceConfig`].
pub fn get_device(api: &str, token: &AccessToken) -> Result<Request<Vec<u8>>, http::Error> {
    api_request(Method::GET, &endpoint(api, paths::DEVICE), token, None)
}

/// `PUT /api/v1/device {"job_url"}` with the device token (PROTOCOL.md §9 desktop hand-over, scope
/// `roger.device`); answer [`DeviceConfig`].
pub fn put_device(api: &str, token: &AccessToken, body: &DeviceUpdate) -> Result<Request<Vec<u8>>, http::Error> {
    api_request(Method::PUT, &endpoint(api, paths::DEVICE), token, Some(json(body)))
}

/// `GET /api/v1/device/push` with the device token (PROTOCOL.md §11, scope `roger.device`); answer
/// [`PushCredentials`].
pub fn get_device_push(api: &str, token: &AccessToken) -> Result<Request<Vec<u8>>, http::Error> {
    api_request(Method::GET, &endpoint(api, paths::DEVICE_PUSH), token, None)
}

/// `GET /api/v1/me/push?installation_id=…` with an app token: the app equivalent of [`get_device_push`] for the
/// queue `roger.app.<installation_id>` (PROTOCOL.md §11, scope `roger.app`); answer [`PushCredentials`].
pub fn get_app_push(api: &str, token: &AccessToken, installation_id: &str) -> Result<Request<Vec<u8>>, http::Error> {
    let query =
        form_urlencoded::Serializer::new(String::new()).append_pair("installation_id", installation_id).finish();
    api_request(Method::GET, &format!("{}?{query}", endpoint(api, paths::ME_PUSH)), token, None)
}

/// `POST /api/v1/tickets/redeem {"ticket"}` with the device token (PROTOCOL.md §9, scope `roger.device`); answer
/// [`TicketRedemption`].
pub fn redeem_ticket(api: &str, token: &AccessToken, ticket: &Ticket) -> Result<Request<Vec<u8>>, http::Error> {
    let body = json(&TicketRedeem { ticket: ticket.clone() });
    api_request(Method::POST, &endpoint(api, paths::TICKET_REDEEM), token, Some(body))
}

/// `GET /api/v1/jobs?state=queued` (PROTOCOL.md §9; scope `roger.release` or `roger.app`); answer [`JobList`].
pub fn list_jobs(api: &str, token: &AccessToken) -> Result<Request<Vec<u8>>, http::Error> {
    api_request(Method::GET, &format!("{}?state=queued", endpoint(api, paths::JOBS)), token, None)
}

/// `POST /api/v1/jobs/{id}/release` with an `Idempotency-Key` header (PROTOCOL.md §9: a repeat with the same key
/// returns an equivalent answer, so a retry after a lost response is safe; a printed job → 409, someone else's →
/// 404). Answer [`ReleaseAnswer`] at the MFP; the phone (with `device_id`) gets no body of interest.
///
/// Fails if `idempotency_key` is not a valid header value (e.g. contains a line break).
pub fn release_job(
    api: &str,
    token: &AccessToken,
    job_id: &str,
    idempotency_key: &str,
    body: &ReleaseRequest,
) -> Result<Request<Vec<u8>>, http::Error> {
    let key = http::HeaderValue::from_str(idempotency_key)?;
    let uri = endpoint_with(api, paths::JOBS, job_id, "/release");
    let mut req = api_request(Method::POST, &uri, token, Some(json(body)))?;
    req.headers_mut().insert(http::HeaderName::from_static(IDEMPOTENCY_KEY), key);
    Ok(req)
}

/// `POST /api/v1/jobs/{id}/result {"state","pages"}` (PROTOCOL.md §9; idempotent; scope `roger.release`).
pub fn report_job_result(
    api: &str,
    token: &AccessToken,
    job_id: &str,
    body: &JobResult,
) -> Result<Request<Vec<u8>>, http::Error> {
    api_request(Method::POST, &endpoint_with(api, paths::JOBS, job_id, "/result"), token, Some(json(body)))
}

/// `GET /api/v1/drive/files?folder=…` with the step-2 token (PROTOCOL.md §9, scope `roger.print`); answer
/// [`DriveFileList`]. The folder is normally [`PRINT_FOLDER`].
pub fn list_drive_files(api: &str, token: &AccessToken, folder: &str) -> Result<Request<Vec<u8>>, http::Error> {
    let query = form_urlencoded::Serializer::new(String::new()).append_pair("folder", folder).finish();
    api_request(Method::GET, &format!("{}?{query}", endpoint(api, paths::DRIVE_FILES)), token, None)
}

/// `POST /api/v1/jobs` (PROTOCOL.md §9; step-2 token with `roger.print`, or an app token for desktop jobs);
/// answer the created [`Job`].
pub fn submit_job(api: &str, token: &AccessToken, body: &SubmitJob) -> Result<Request<Vec<u8>>, http::Error> {
    api_request(Method::POST, &endpoint(api, paths::JOBS), token, Some(json(body)))
}

/// `DELETE /api/v1/jobs/{id}` (PROTOCOL.md §9).
pub fn delete_job(api: &str, token: &AccessToken, job_id: &str) -> Result<Request<Vec<u8>>, http::Error> {
    api_request(Method::DELETE, &endpoint_with(api, paths::JOBS, job_id, ""), token, None)
}

/// `GET /api/v1/print-features` (PROTOCOL.md §9, scope `roger.print`); answer [`PrintFeatures`].
pub fn get_print_features(api: &str, token: &AccessToken) -> Result<Request<Vec<u8>>, http::Error> {
    api_request(Method::GET, &endpoint(api, paths::PRINT_FEATURES), token, None)
}

/// `GET /api/v1/scan-profiles` (PROTOCOL.md §9, scope `roger.scan`); answer [`ScanProfileList`].
pub fn list_scan_profiles(api: &str, token: &AccessToken) -> Result<Request<Vec<u8>>, http::Error> {
    api_request(Method::GET, &endpoint(api, paths::SCAN_PROFILES), token, None)
}

/// `POST /api/v1/scans {"profile_id"}` (PROTOCOL.md §9, scope `roger.scan`); answer [`ScanCreated`].
pub fn create_scan(api: &str, token: &AccessToken, body: &ScanCreate) -> Result<Request<Vec<u8>>, http::Error> {
    api_request(Method::POST, &endpoint(api, paths::SCANS), token, Some(json(body)))
}

/// `POST /api/v1/scans/{id}/complete` after the upload (PROTOCOL.md §9, scope `roger.scan`).
pub fn complete_scan(
    api: &str,
    token: &AccessToken,
    scan_id: &str,
    body: &ScanComplete,
) -> Result<Request<Vec<u8>>, http::Error> {
    api_request(Method::POST, &endpoint_with(api, paths::SCANS, scan_id, "/complete"), token, Some(json(body)))
}

/// `POST /api/v1/sessions/end {"device_id"}` with an app token (PROTOCOL.md §8 "End", scope `roger.app`).
pub fn end_session(api: &str, token: &AccessToken, body: &SessionEnd) -> Result<Request<Vec<u8>>, http::Error> {
    api_request(Method::POST, &endpoint(api, paths::SESSIONS_END), token, Some(json(body)))
}

/// `GET /api/v1/me/export` with an app token (R-DATA-2, scope `roger.app`); answer [`MeExport`].
pub fn export_me(api: &str, token: &AccessToken) -> Result<Request<Vec<u8>>, http::Error> {
    api_request(Method::GET, &endpoint(api, paths::ME_EXPORT), token, None)
}

/// `DELETE /api/v1/me` with an app token: erase the caller's data (R-DATA-2, scope `roger.app`).
pub fn delete_me(api: &str, token: &AccessToken) -> Result<Request<Vec<u8>>, http::Error> {
    api_request(Method::DELETE, &endpoint(api, paths::ME), token, None)
}

/// `DELETE /api/v1/devices/{id}` with a tenant admin's app token (R-TOK-4: tokens revoked, push
/// `device.disconnected`).
pub fn remove_device(api: &str, token: &AccessToken, device_id: &str) -> Result<Request<Vec<u8>>, http::Error> {
    api_request(Method::DELETE, &endpoint_with(api, "/api/v1/devices", device_id, ""), token, None)
}

// ---------------------------------------------------------------------------------------------------------------
// Reading answers liberally (docs/protocol.md §7)
// ---------------------------------------------------------------------------------------------------------------

/// The request line of the job list, for [`crate::error::PeerReport`]s.
pub const JOBS_ENDPOINT: &str = "GET /api/v1/jobs";
/// The request line of the drive file list.
pub const DRIVE_FILES_ENDPOINT: &str = "GET /api/v1/drive/files";
/// The request line of the scan profiles.
pub const SCAN_PROFILES_ENDPOINT: &str = "GET /api/v1/scan-profiles";
/// The request line of a release.
pub const RELEASE_ENDPOINT: &str = "POST /api/v1/jobs/{id}/release";
/// The request line of a scan's creation.
pub const SCANS_ENDPOINT: &str = "POST /api/v1/scans";
/// The request line of the device's own configuration (the `job_url` extension, docs/protocol.md §10.2 C11).
pub const DEVICE_ENDPOINT: &str = "PUT /api/v1/device";

/// Reads `GET /api/v1/jobs` item by item: a job without `id` or `file_name`, or with a member of the wrong type, is
/// left out and noted as [`crate::PeerViolation::ListItemRefused`]; a job without `pages`, `created` or `expires`
/// is kept with the default and noted as [`crate::PeerViolation::MemberDefaulted`]; a job of an unknown `source` is
/// kept as [`JobSource::Unknown`]. One bad job never costs the user the others (docs/protocol.md §7).
pub fn classify_job_list(
    resp: &http::Response<Vec<u8>>,
) -> Result<(JobList, crate::error::PeerViolations), crate::ResponseError> {
    let (jobs, notes) = crate::wire::classify_api_list(resp, "jobs", &["pages", "created", "expires"])?;
    Ok((JobList { jobs }, notes))
}

/// Reads `GET /api/v1/drive/files` item by item as [`classify_job_list`] does: `id` and `name` are needed, `size`
/// defaults to `0`.
pub fn classify_drive_files(
    resp: &http::Response<Vec<u8>>,
) -> Result<(DriveFileList, crate::error::PeerViolations), crate::ResponseError> {
    let (files, notes) = crate::wire::classify_api_list(resp, "files", &["size"])?;
    Ok((DriveFileList { files }, notes))
}

/// Reads `GET /api/v1/scan-profiles` item by item as [`classify_job_list`] does: `id` and `name` are needed, the
/// rest is optional anyway.
pub fn classify_scan_profiles(
    resp: &http::Response<Vec<u8>>,
) -> Result<(ScanProfileList, crate::error::PeerViolations), crate::ResponseError> {
    let (profiles, notes) = crate::wire::classify_api_list(resp, "profiles", &[])?;
    Ok((ScanProfileList { profiles }, notes))
}

/// Reads a release answer: a drive link without `expires_at` or `size` is used and noted as
/// [`crate::PeerViolation::MemberDefaulted`] (docs/protocol.md §7).
pub fn classify_release(
    resp: &http::Response<Vec<u8>>,
) -> Result<(ReleaseAnswer, crate::error::PeerViolations), crate::ResponseError> {
    crate::wire::classify_api_defaults(resp, &[&["document", "expires_at"], &["document", "size"]])
}

/// Reads the answer of `POST /api/v1/scans`: an upload link without `expires_at` is used and noted as
/// [`crate::PeerViolation::MemberDefaulted`] (docs/protocol.md §7).
pub fn classify_scan_created(
    resp: &http::Response<Vec<u8>>,
) -> Result<(ScanCreated, crate::error::PeerViolations), crate::ResponseError> {
    crate::wire::classify_api_defaults(resp, &[&["upload", "expires_at"]])
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde::de::DeserializeOwned;
    use std::fmt::Debug;

    const API: &str = "https://api.example:8443";
    const TOKEN: &str = "tok-SECRET-abc.def_ghi";

    fn token() -> AccessToken {
        AccessToken::new(TOKEN)
    }

    fn round_trip<T: Serialize + DeserializeOwned + PartialEq + Debug>(value: &T) -> Result<(), TestCaseError> {
        let bytes = serde_json::to_vec(value).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let back: T = serde_json::from_slice(&bytes).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(&back, value);
        Ok(())
    }

    // -- strategies ----------------------------------------------------------------------------------------------

    fn arb_time() -> impl Strategy<Value = OffsetDateTime> {
        // 1970 .. 2100, whole seconds, UTC: what RFC 3339 in the API carries.
        (0i64..4_102_444_800).prop_map(|s| OffsetDateTime::from_unix_timestamp(s).unwrap_or(OffsetDateTime::UNIX_EPOCH))
    }

    fn arb_text() -> impl Strategy<Value = String> {
        any::<String>()
    }

    fn arb_opt_text() -> impl Strategy<Value = Option<String>> {
        proptest::option::of(arb_text())
    }

    fn arb_code_kind() -> impl Strategy<Value = CodeKind> {
        prop_oneof![
            Just(CodeKind::Registration),
            Just(CodeKind::Session),
            Just(CodeKind::Desktop),
            Just(CodeKind::Unknown)
        ]
    }

    fn arb_source() -> impl Strategy<Value = JobSource> {
        prop_oneof![Just(JobSource::Drive), Just(JobSource::Desktop), Just(JobSource::Unknown)]
    }

    fn arb_color() -> impl Strategy<Value = ColorMode> {
        prop_oneof![Just(ColorMode::Color), Just(ColorMode::Monochrome), Just(ColorMode::Unknown)]
    }

    fn arb_duplex() -> impl Strategy<Value = Duplex> {
        prop_oneof![
            Just(Duplex::OneSided),
            Just(Duplex::TwoSidedLongEdge),
            Just(Duplex::TwoSidedShortEdge),
            Just(Duplex::Unknown)
        ]
    }

    fn arb_job() -> impl Strategy<Value = Job> {
        (
            arb_text(),
            arb_text(),
            any::<u32>(),
            arb_source(),
            proptest::option::of(arb_time()),
            proptest::option::of(arb_time()),
        )
            .prop_map(|(id, file_name, pages, source, created, expires)| Job {
                id,
                file_name,
                pages,
                source,
                created,
                expires,
            })
    }

    fn arb_options() -> impl Strategy<Value = PrintOptions> {
        (
            proptest::option::of(any::<u32>()),
            proptest::option::of(arb_color()),
            proptest::option::of(arb_duplex()),
            arb_opt_text(),
        )
            .prop_map(|(copies, color, duplex, paper_size)| PrintOptions { copies, color, duplex, paper_size })
    }

    fn arb_release_answer() -> impl Strategy<Value = ReleaseAnswer> {
        prop_oneof![
            (arb_text(), proptest::option::of(arb_time()), proptest::option::of(any::<u64>()), arb_options()).prop_map(
                |(url, expires_at, size, options)| {
                    ReleaseAnswer::Drive { document: DocumentLink { url: url.into(), expires_at, size }, options }
                }
            ),
            (arb_text(), arb_time()).prop_map(|(ticket, expires_at)| ReleaseAnswer::Desktop {
                desktop: DesktopHandover { ticket: ticket.into(), expires_at }
            }),
        ]
    }

    fn arb_submit() -> impl Strategy<Value = SubmitJob> {
        prop_oneof![
            arb_text().prop_map(|drive_file_id| SubmitJob::Drive { drive_file_id }),
            (arb_text(), any::<u32>())
                .prop_map(|(file_name, pages)| SubmitJob::Desktop { desktop: DesktopFile { file_name, pages } }),
        ]
    }

    fn arb_export() -> impl Strategy<Value = MeExport> {
        let user = (arb_text(), arb_text(), arb_opt_text(), arb_opt_text())
            .prop_map(|(id, username, display_name, email)| UserProfile { id, username, display_name, email });
        let job = (arb_text(), arb_text(), any::<u32>(), arb_source(), arb_time())
            .prop_map(|(id, file_name, pages, source, created)| ExportedJob { id, file_name, pages, source, created });
        let scan = (arb_text(), arb_time(), proptest::option::of(arb_time()))
            .prop_map(|(id, created, completed)| ExportedScan { id, created, completed });
        (user, proptest::collection::vec(job, 0..4), proptest::collection::vec(scan, 0..4))
            .prop_map(|(user, jobs, scans)| MeExport { user, jobs, scans })
    }

    proptest! {
        #[test]
        fn code_lookup_round_trips(kind in arb_code_kind(), vendor in arb_opt_text(), model in arb_opt_text(),
                                   serial in arb_opt_text(), expires in arb_time()) {
            round_trip(&CodeLookup { kind, vendor, model, serial, expires })?;
        }

        #[test]
        fn code_decision_round_trips(code in arb_text()) {
            round_trip(&CodeDecision { user_code: UserCode::new(code) })?;
        }

        #[test]
        fn device_config_round_trips(device_id in arb_text(), tenant_id in arb_opt_text(), vendor in arb_opt_text(),
                                     model in arb_opt_text(), serial in arb_opt_text(), job_url in arb_opt_text()) {
            round_trip(&DeviceConfig { device_id, tenant_id, vendor, model, serial, job_url })?;
        }

        #[test]
        fn device_update_round_trips(job_url in arb_opt_text()) {
            round_trip(&DeviceUpdate { job_url })?;
        }

        #[test]
        fn push_credentials_round_trip(url in arb_text(), vhost in arb_text(), username in arb_text(),
                                       password in arb_text(), queue in arb_text(), expires_at in arb_time(),
                                       shared_test_account in any::<bool>()) {
            round_trip(&PushCredentials {
                url, vhost, username, password: BrokerPassword::new(password), queue, expires_at, shared_test_account,
            })?;
        }

        #[test]
        fn ticket_messages_round_trip(ticket in arb_text(), job_id in arb_text(), device_id in arb_text(),
                                      file_name in arb_text(), pages in any::<u32>()) {
            round_trip(&TicketRedeem { ticket: Ticket::new(ticket) })?;
            round_trip(&TicketRedemption { job_id, device_id, file_name, pages })?;
        }

        #[test]
        fn job_list_round_trips(jobs in proptest::collection::vec(arb_job(), 0..5)) {
            round_trip(&JobList { jobs })?;
        }

        #[test]
        fn release_request_round_trips(device_id in arb_opt_text()) {
            round_trip(&ReleaseRequest { device_id })?;
        }

        #[test]
        fn release_answer_round_trips(answer in arb_release_answer()) {
            round_trip(&answer)?;
        }

        #[test]
        fn job_result_round_trips(printed in any::<bool>(), pages in any::<u32>()) {
            let state = if printed { JobOutcome::Printed } else { JobOutcome::Failed };
            round_trip(&JobResult { state, pages })?;
        }

        #[test]
        fn drive_files_round_trip(files in proptest::collection::vec((arb_text(), arb_text(), any::<u64>()), 0..5)) {
            let files = files.into_iter().map(|(id, name, size)| DriveFile { id, name, size }).collect();
            round_trip(&DriveFileList { files })?;
        }

        #[test]
        fn submit_job_round_trips(body in arb_submit(), created in arb_job()) {
            round_trip(&body)?;
            round_trip(&created)?;
        }

        #[test]
        fn print_features_round_trip(color_modes in proptest::collection::vec(arb_color(), 0..3),
                                     duplex_modes in proptest::collection::vec(arb_duplex(), 0..4),
                                     paper_sizes in proptest::collection::vec(arb_text(), 0..3),
                                     max_copies in proptest::option::of(any::<u32>()), defaults in arb_options()) {
            round_trip(&PrintFeatures { color_modes, duplex_modes, paper_sizes, max_copies, defaults })?;
        }

        #[test]
        fn scan_profiles_round_trip(profiles in proptest::collection::vec(
            (arb_text(), arb_text(), arb_opt_text(), proptest::option::of(any::<u32>()),
             proptest::option::of(arb_color()), proptest::option::of(any::<bool>())), 0..4)) {
            let profiles = profiles
                .into_iter()
                .map(|(id, name, format, dpi, color, duplex)| ScanProfile { id, name, format, dpi, color, duplex })
                .collect();
            round_trip(&ScanProfileList { profiles })?;
        }

        #[test]
        fn scan_messages_round_trip(profile_id in arb_text(), scan_id in arb_text(), url in arb_text(),
                                    expires_at in proptest::option::of(arb_time()), size in proptest::option::of(any::<u64>()),
                                    pages in proptest::option::of(any::<u32>())) {
            round_trip(&ScanCreate { profile_id })?;
            round_trip(&ScanCreated { scan_id, upload: UploadLink { url: PreAuthorizedUrl::new(url), expires_at } })?;
            round_trip(&ScanComplete { size, pages })?;
        }

        #[test]
        fn session_end_round_trips(device_id in arb_text()) {
            round_trip(&SessionEnd { device_id })?;
        }

        #[test]
        fn me_export_round_trips(export in arb_export()) {
            round_trip(&export)?;
        }

        /// Path segments never leave their segment: the encoded form has no reserved characters, and decoding it
        /// gives the input back.
        #[test]
        fn path_segment_encoding_is_reversible(s in arb_text()) {
            let enc = encode_path_segment(&s);
            prop_assert!(enc.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~%".contains(&b)), "{}", enc);
            prop_assert!(enc != "." && enc != "..");
            let dec = url::form_urlencoded::parse(format!("x={enc}").as_bytes())
                .next()
                .map(|(_, v)| v.into_owned());
            prop_assert_eq!(dec, Some(s));
        }

        /// The token never appears in the request line, whatever the ids.
        #[test]
        fn job_builders_keep_token_out_of_uri(job_id in arb_text(), tok in "[A-Za-z0-9._~+/=-]{8,40}") {
            let t = AccessToken::new(tok.clone());
            for req in [
                release_job(API, &t, &job_id, "k1", &ReleaseRequest::default()),
                report_job_result(API, &t, &job_id, &JobResult { state: JobOutcome::Printed, pages: 1 }),
                delete_job(API, &t, &job_id),
            ] {
                let req = req.map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert!(!req.uri().to_string().contains(&tok));
                prop_assert_eq!(req.headers().get(http::header::AUTHORIZATION).map(|v| v.as_bytes().to_vec()),
                                Some(format!("Bearer {tok}").into_bytes()));
            }
        }
    }

    /// Every builder, with its expected method and path.
    fn all_builders() -> Vec<(Request<Vec<u8>>, Method, &'static str)> {
        let t = token();
        let code = UserCode::new("BCDFGHJK");
        let built = vec![
            (lookup_code(API, &t, &code), Method::GET, "/api/v1/codes/BCDFGHJK"),
            (approve_code(API, &t, &code), Method::POST, paths::CODE_APPROVE),
            (deny_code(API, &t, &code), Method::POST, paths::CODE_DENY),
            (get_device(API, &t), Method::GET, paths::DEVICE),
            (put_device(API, &t, &DeviceUpdate { job_url: None }), Method::PUT, paths::DEVICE),
            (get_device_push(API, &t), Method::GET, paths::DEVICE_PUSH),
            (get_app_push(API, &t, "inst-1"), Method::GET, "/api/v1/me/push?installation_id=inst-1"),
            (redeem_ticket(API, &t, &Ticket::new("tkt")), Method::POST, paths::TICKET_REDEEM),
            (list_jobs(API, &t), Method::GET, "/api/v1/jobs?state=queued"),
            (release_job(API, &t, "j1", "key", &ReleaseRequest::default()), Method::POST, "/api/v1/jobs/j1/release"),
            (
                report_job_result(API, &t, "j1", &JobResult { state: JobOutcome::Failed, pages: 0 }),
                Method::POST,
                "/api/v1/jobs/j1/result",
            ),
            (list_drive_files(API, &t, PRINT_FOLDER), Method::GET, "/api/v1/drive/files?folder=Print"),
            (submit_job(API, &t, &SubmitJob::Drive { drive_file_id: "f".into() }), Method::POST, paths::JOBS),
            (delete_job(API, &t, "j1"), Method::DELETE, "/api/v1/jobs/j1"),
            (get_print_features(API, &t), Method::GET, paths::PRINT_FEATURES),
            (list_scan_profiles(API, &t), Method::GET, paths::SCAN_PROFILES),
            (create_scan(API, &t, &ScanCreate { profile_id: "p".into() }), Method::POST, paths::SCANS),
            (complete_scan(API, &t, "s1", &ScanComplete::default()), Method::POST, "/api/v1/scans/s1/complete"),
            (end_session(API, &t, &SessionEnd { device_id: "d1".into() }), Method::POST, paths::SESSIONS_END),
            (export_me(API, &t), Method::GET, paths::ME_EXPORT),
            (delete_me(API, &t), Method::DELETE, paths::ME),
            (remove_device(API, &t, "d1"), Method::DELETE, "/api/v1/devices/d1"),
        ];
        built.into_iter().map(|(r, m, p)| (r.expect("builder"), m, p)).collect()
    }

    /// RFC 6750 §2.3 / RFC 9700 §2.5: the token is in the `Authorization` header of every request and never in
    /// the URL; JSON bodies are labelled as such.
    #[test]
    fn no_builder_puts_the_token_in_the_url() {
        let builders = all_builders();
        assert_eq!(builders.len(), 22);
        for (req, method, path) in builders {
            let uri = req.uri().to_string();
            assert!(!uri.contains(TOKEN) && !uri.contains("SECRET"), "{uri}");
            assert!(!String::from_utf8_lossy(req.body()).contains(TOKEN));
            let auth = req.headers().get(http::header::AUTHORIZATION).expect("authorization");
            assert_eq!(auth.as_bytes(), format!("Bearer {TOKEN}").as_bytes());
            assert!(auth.is_sensitive(), "the header value is marked sensitive");
            assert_eq!(req.method(), method);
            assert_eq!(uri, format!("{API}{path}"));
            if !req.body().is_empty() {
                assert_eq!(
                    req.headers().get(http::header::CONTENT_TYPE).map(|v| v.as_bytes()),
                    Some(&b"application/json"[..])
                );
                assert!(serde_json::from_slice::<serde_json::Value>(req.body()).is_ok(), "{uri}");
            }
        }
    }

    /// The templates in [`paths`] name the same routes as the builders use.
    #[test]
    fn path_templates_match_builders() {
        let t = token();
        let fill = |tpl: &str, v: &str| tpl.replace("{id}", v).replace("{user_code}", v);
        let cases = [
            (lookup_code(API, &t, &UserCode::new("X1")), fill(paths::CODE, "X1")),
            (delete_job(API, &t, "X1"), fill(paths::JOB, "X1")),
            (release_job(API, &t, "X1", "k", &ReleaseRequest::default()), fill(paths::JOB_RELEASE, "X1")),
            (
                report_job_result(API, &t, "X1", &JobResult { state: JobOutcome::Printed, pages: 2 }),
                fill(paths::JOB_RESULT, "X1"),
            ),
            (complete_scan(API, &t, "X1", &ScanComplete::default()), fill(paths::SCAN_COMPLETE, "X1")),
            (remove_device(API, &t, "X1"), fill(paths::DEVICE_REMOVE, "X1")),
        ];
        for (req, path) in cases {
            assert_eq!(req.expect("builder").uri().path(), path);
        }
    }

    /// RFC 3986 §3.3: ids are percent-encoded so they cannot change the route.
    #[test]
    fn path_segments_are_percent_encoded() {
        assert_eq!(encode_path_segment("a/b c?d#e%f"), "a%2Fb%20c%3Fd%23e%25f");
        assert_eq!(encode_path_segment("job-1.2_x~"), "job-1.2_x~");
        assert_eq!(encode_path_segment(".."), "%2E%2E");
        assert_eq!(encode_path_segment("."), "%2E");
        assert_eq!(encode_path_segment("..."), "...");
        assert_eq!(encode_path_segment("é"), "%C3%A9");
        let req = release_job(API, &token(), "../../me", "k", &ReleaseRequest::default()).expect("builder");
        assert_eq!(req.uri().path(), "/api/v1/jobs/..%2F..%2Fme/release");
        let req = lookup_code(API, &token(), &UserCode::new("AB/CD?x")).expect("builder");
        assert_eq!(req.uri().path(), "/api/v1/codes/AB%2FCD%3Fx");
        assert_eq!(req.uri().query(), None);
        let req = remove_device(&format!("{API}/"), &token(), "d 1").expect("builder");
        assert_eq!(
            req.uri().to_string(),
            format!("{API}/api/v1/devices/d%201"),
            "a trailing slash on the origin is dropped"
        );
        let req = list_drive_files(API, &token(), "My Print&x=1").expect("builder");
        assert_eq!(req.uri().query(), Some("folder=My+Print%26x%3D1"));
    }

    /// PROTOCOL.md §9: the release carries the `Idempotency-Key` header; a key that is not a header value fails
    /// instead of producing a broken request.
    #[test]
    fn release_sets_idempotency_key() {
        let req = release_job(API, &token(), "j1", "3f2c-01", &ReleaseRequest { device_id: Some("d9".into()) })
            .expect("builder");
        assert_eq!(req.headers().get("Idempotency-Key").map(|v| v.as_bytes()), Some(&b"3f2c-01"[..]));
        assert_eq!(req.headers().get_all(IDEMPOTENCY_KEY).iter().count(), 1);
        let body: serde_json::Value = serde_json::from_slice(req.body()).expect("json");
        assert_eq!(body, serde_json::json!({"device_id": "d9"}));
        let mfp = release_job(API, &token(), "j1", "k", &ReleaseRequest::default()).expect("builder");
        assert_eq!(mfp.body().as_slice(), b"{}");
        assert!(release_job(API, &token(), "j1", "bad\nkey", &ReleaseRequest::default()).is_err());
        let others = all_builders();
        for (req, _, path) in others {
            if !path.ends_with("/release") {
                assert!(req.headers().get(IDEMPOTENCY_KEY).is_none(), "{path}");
            }
        }
    }

    #[test]
    fn release_answer_variants_parse_from_the_wire() {
        let drive: ReleaseAnswer = serde_json::from_str(
            r#"{"document":{"url":"https://drive/x?sig=1","expires_at":"2030-01-01T00:05:00Z","size":42},
                "options":{"copies":2,"duplex":"two_sided_long_edge","staple":true}}"#,
        )
        .expect("drive");
        match &drive {
            ReleaseAnswer::Drive { document, options } => {
                assert_eq!(document.url.secret(), "https://drive/x?sig=1");
                assert_eq!(document.size, Some(42));
                assert_eq!(options.copies, Some(2));
                assert_eq!(options.duplex, Some(Duplex::TwoSidedLongEdge));
            }
            other => panic!("{other:?}"),
        }
        assert!(!format!("{drive:?}").contains("sig=1"), "Debug redacts the URL (R-SEC-1)");
        let no_options: ReleaseAnswer =
            serde_json::from_str(r#"{"document":{"url":"u","expires_at":"2030-01-01T00:05:00Z","size":1}}"#)
                .expect("options default");
        assert!(matches!(no_options, ReleaseAnswer::Drive { options, .. } if options == PrintOptions::default()));
        let desktop: ReleaseAnswer =
            serde_json::from_str(r#"{"desktop":{"ticket":"T-1","expires_at":"2030-01-01T00:02:00+00:00"}}"#)
                .expect("desktop");
        assert!(matches!(&desktop, ReleaseAnswer::Desktop { desktop } if desktop.ticket.secret() == "T-1"));
        assert!(serde_json::from_str::<ReleaseAnswer>(r#"{"other":{}}"#).is_err());
        assert!(
            serde_json::from_str::<ReleaseAnswer>(r#"{"desktop":{"ticket":5,"expires_at":"2030-01-01T00:02:00Z"}}"#)
                .is_err(),
            "wrong types are errors"
        );
    }

    /// DESIGN.md: unknown members ignored, wrong types refused, extensible enums fall back to `Unknown`.
    #[test]
    fn unknown_fields_ignored_wrong_types_refused() {
        let jobs: JobList = serde_json::from_str(
            r#"{"jobs":[{"id":"j1","file_name":"a.pdf","pages":3,"source":"fax","created":"2024-05-01T10:00:00Z",
                "expires":"2024-05-08T10:00:00Z","color":true}],"next":null}"#,
        )
        .expect("jobs");
        assert_eq!(jobs.jobs[0].source, JobSource::Unknown);
        assert_eq!(jobs.jobs[0].pages, 3);
        assert!(serde_json::from_str::<JobList>(
            r#"{"jobs":[{"id":"j1","file_name":"a.pdf","pages":"3","source":"drive","created":"2024-05-01T10:00:00Z",
                "expires":"2024-05-08T10:00:00Z"}]}"#
        )
        .is_err());
        assert!(serde_json::from_str::<JobList>(
            r#"{"jobs":[{"id":"j1","file_name":"a.pdf","pages":3,"source":"drive","created":"yesterday",
                "expires":"2024-05-08T10:00:00Z"}]}"#
        )
        .is_err());
        let lookup: CodeLookup =
            serde_json::from_str(r#"{"kind":"printer_pairing","expires":"2024-05-01T10:00:00Z","x":1}"#).expect("code");
        assert_eq!(lookup.kind, CodeKind::Unknown);
        assert_eq!(lookup.vendor, None);
        assert!(serde_json::from_str::<JobResult>(r#"{"state":"lost","pages":1}"#).is_err(), "closed set");
        assert!(serde_json::from_str::<PushCredentials>(
            r#"{"url":"amqps://b","vhost":"/","username":"u","password":7,"queue":"q","expires_at":"2024-05-01T10:00:00Z"}"#
        )
        .is_err());
    }

    #[test]
    fn push_credentials_wire_form() {
        let creds: PushCredentials = serde_json::from_str(
            r#"{"url":"amqps://bus:5671","vhost":"roger","username":"dev-1","password":"pw-SECRET",
                "queue":"roger.device.d1","expires_at":"2024-05-01T10:00:00Z"}"#,
        )
        .expect("creds");
        assert!(!creds.shared_test_account, "absent means false");
        assert!(!format!("{creds:?}").contains("pw-SECRET"), "Debug redacts the password");
        let json = serde_json::to_value(&creds).expect("json");
        assert!(json.get("shared_test_account").is_none());
        assert_eq!(json["password"], "pw-SECRET");
        let shared = PushCredentials { shared_test_account: true, ..creds };
        assert_eq!(serde_json::to_value(&shared).expect("json")["shared_test_account"], true);
    }

    /// R-DATA-2: a scan in the export carries timestamps only (no name), a job its file name.
    #[test]
    fn export_keeps_only_allowed_data() {
        let t = OffsetDateTime::from_unix_timestamp(1_700_000_000).expect("time");
        let export = MeExport {
            user: UserProfile {
                id: "u1".into(),
                username: "alice".into(),
                display_name: Some("Alice".into()),
                email: Some("a@example.com".into()),
            },
            jobs: vec![ExportedJob {
                id: "j1".into(),
                file_name: "report.pdf".into(),
                pages: 2,
                source: JobSource::Drive,
                created: t,
            }],
            scans: vec![ExportedScan { id: "s1".into(), created: t, completed: Some(t) }],
        };
        let v = serde_json::to_value(&export).expect("json");
        let scan_keys: Vec<&String> = v["scans"][0].as_object().expect("object").keys().collect();
        assert_eq!(scan_keys, ["completed", "created", "id"]);
        assert_eq!(v["scans"][0]["created"], "2023-11-14T22:13:20Z");
        assert_eq!(v["jobs"][0]["file_name"], "report.pdf");
        let parsed: MeExport = serde_json::from_str(r#"{"user":{"id":"u","username":"bob"}}"#).expect("minimal");
        assert!(parsed.jobs.is_empty() && parsed.scans.is_empty());
    }

    #[test]
    fn submit_job_wire_forms() {
        let d = serde_json::to_value(SubmitJob::Drive { drive_file_id: "f1".into() }).expect("json");
        assert_eq!(d, serde_json::json!({"drive_file_id": "f1"}));
        let k = SubmitJob::Desktop { desktop: DesktopFile { file_name: "a.pdf".into(), pages: 4 } };
        assert_eq!(
            serde_json::to_value(&k).expect("json"),
            serde_json::json!({"desktop": {"file_name": "a.pdf", "pages": 4}})
        );
        assert!(serde_json::from_str::<SubmitJob>(r#"{"drive_file_id":5}"#).is_err());
        assert!(serde_json::from_str::<SubmitJob>(r#"{}"#).is_err());
        let put = serde_json::to_value(DeviceUpdate { job_url: None }).expect("json");
        assert_eq!(put, serde_json::json!({"job_url": null}), "PUT always states job_url");
    }

    /// Thin end-to-end check: a server answer goes through the shared API classifier into these types.
    #[test]
    fn classify_api_reads_the_types() {
        let resp = http::Response::builder()
            .status(200)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(
                br#"{"scan_id":"s1","upload":{"url":"https://drive/up","expires_at":"2030-01-01T00:00:00Z"}}"#.to_vec(),
            )
            .expect("response");
        let created: ScanCreated = crate::wire::classify_api(&resp).expect("classified");
        assert_eq!(created.scan_id, "s1");
        assert_eq!(created.upload.url.secret(), "https://drive/up");
    }

    fn ok(body: &str) -> http::Response<Vec<u8>> {
        http::Response::builder().status(200).body(body.as_bytes().to_vec()).unwrap()
    }

    /// docs/protocol.md §7: one bad job is left out, the others are shown; defaults are noted.
    #[test]
    fn job_list_is_read_item_by_item() {
        use crate::PeerViolation::{ListItemRefused, MemberDefaulted};
        let full = r#"{"id":"j1","file_name":"a.pdf","pages":3,"source":"drive","created":"2024-05-01T10:00:00Z",
            "expires":"2024-05-08T10:00:00Z"}"#;
        let (list, notes) = classify_job_list(&ok(&format!(r#"{{"jobs":[{full}]}}"#))).unwrap();
        assert_eq!((list.jobs.len(), notes.is_empty()), (1, true));
        // A job without pages (kept, 0 = unknown), one of an unknown source (kept), one without a file name and one
        // with pages as a string (both left out).
        let body = format!(
            r#"{{"jobs":[{full},{{"id":"j2","file_name":"b.pdf","source":"drive"}},
                {{"id":"j3","file_name":"c.pdf","pages":1,"source":"fax"}},{{"id":"j4","pages":1,"source":"drive"}},
                {{"id":"j5","file_name":"e.pdf","pages":"2","source":"drive"}}]}}"#
        );
        let (list, notes) = classify_job_list(&ok(&body)).unwrap();
        let ids: Vec<&str> = list.jobs.iter().map(|j| j.id.as_str()).collect();
        assert_eq!(ids, ["j1", "j2", "j3"]);
        assert_eq!((list.jobs[1].pages, list.jobs[1].created), (0, None));
        assert_eq!(list.jobs[2].source, JobSource::Unknown);
        assert_eq!(notes.iter().collect::<Vec<_>>(), vec![ListItemRefused, MemberDefaulted]);
        // Without the list itself the answer is refused: there is nothing to show.
        assert!(matches!(
            classify_job_list(&ok(r#"{"items":[]}"#)),
            Err(crate::ResponseError::Malformed { violation: crate::PeerViolation::MissingRequiredField, .. })
        ));
        // Errors stay errors.
        let e = http::Response::builder().status(401).body(b"{}".to_vec()).unwrap();
        assert!(classify_job_list(&e).is_err());
    }

    /// docs/protocol.md §7: drive files and scan profiles likewise.
    #[test]
    fn drive_files_and_profiles_item_by_item() {
        let (files, notes) =
            classify_drive_files(&ok(r#"{"files":[{"id":"f1","name":"a.pdf"},{"name":"no-id.pdf","size":1}]}"#))
                .unwrap();
        assert_eq!((files.files.len(), files.files[0].size), (1, 0));
        assert!(
            notes.contains(crate::PeerViolation::ListItemRefused)
                && notes.contains(crate::PeerViolation::MemberDefaulted)
        );
        let (profiles, notes) =
            classify_scan_profiles(&ok(r#"{"profiles":[{"id":"p1","name":"PDF"},{"id":"p2","dpi":"high"}]}"#)).unwrap();
        assert_eq!(profiles.profiles.len(), 1);
        assert!(notes.contains(crate::PeerViolation::ListItemRefused));
    }

    /// docs/protocol.md §7: a release link or an upload link without `expires_at`/`size` is used, and noted.
    #[test]
    fn links_without_optional_members() {
        let (answer, notes) = classify_release(&ok(r#"{"document":{"url":"https://d/x"}}"#)).unwrap();
        assert!(
            matches!(answer, ReleaseAnswer::Drive { document, .. } if document.size.is_none() && document.expires_at.is_none())
        );
        assert!(notes.contains(crate::PeerViolation::MemberDefaulted));
        let (_, notes) =
            classify_release(&ok(r#"{"desktop":{"ticket":"t","expires_at":"2030-01-01T00:00:00Z"}}"#)).unwrap();
        assert!(notes.is_empty());
        let (created, notes) =
            classify_scan_created(&ok(r#"{"scan_id":"s1","upload":{"url":"https://d/u"}}"#)).unwrap();
        assert_eq!((created.upload.expires_at, notes.iter().count()), (None, 1));
        assert!(classify_scan_created(&ok(r#"{"scan_id":"s1"}"#)).is_err(), "no upload link at all: refused");
    }
}
