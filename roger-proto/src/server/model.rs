//! The server's data model: every record it keeps, as plain serde types (so a store can persist them as rows and
//! `/sim/store` can show them). Personal data appears only where R-DATA-2 allows it: a user's e-mail, user name and
//! display name, Argon2id hashes of PIN and password, job file names, scan timestamps. Secrets appear only as
//! [`SecretHash`]es.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::mint::SecretHash;

/// A short string (an id, a tenant, a client id, a scope) stored inline when it has at most 24 bytes, as every id
/// the server mints does: the records that grow with the fleet (devices, refresh families, access tokens) then hold
/// no heap string of their own. Serialised as a plain string.
pub type Name = compact_str::CompactString;
use super::settings::TenantSettings;

/// A tenant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tenant {
    /// Id (also its name in the login form).
    pub id: String,
    /// Display name.
    pub name: String,
    /// Lifetimes, intervals, lock-out, Argon2 cost, after-print rule.
    pub settings: TenantSettings,
    /// What users may choose when printing (PROTOCOL.md §9 `GET /api/v1/print-features`).
    #[serde(default)]
    pub print_features: crate::api::PrintFeatures,
    /// The tenant's scan profiles (`GET /api/v1/scan-profiles`).
    #[serde(default)]
    pub scan_profiles: Vec<crate::api::ScanProfile>,
}

/// A person (R-DATA-2: e-mail, user name, display name and the Argon2id hashes are all the server keeps).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    /// Stable id.
    pub id: String,
    /// Tenant.
    pub tenant: String,
    /// Login name (unique in the tenant).
    pub username: String,
    /// Display name.
    pub display_name: Option<String>,
    /// E-mail.
    pub email: Option<String>,
    /// Argon2id PHC string of the PIN.
    pub pin_hash: Option<String>,
    /// Argon2id PHC string of the password.
    pub password_hash: Option<String>,
    /// Tenant admin (approves registrations, removes printers).
    pub admin: bool,
    /// Failed logins in a row (one counter across PIN, password and app login, R-PWD-2).
    pub failures: u32,
    /// Locked out until then.
    #[serde(with = "time::serde::rfc3339::option")]
    pub locked_until: Option<OffsetDateTime>,
}

/// A registered printer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Device {
    /// `device_id`.
    pub id: Name,
    /// Tenant.
    pub tenant: Name,
    /// `emb-<vendor>`.
    pub client_id: Name,
    /// Model (technical record, R-DATA-2).
    pub model: Option<Name>,
    /// Serial (technical record).
    pub serial: Option<Name>,
    /// The job endpoint for desktop hand-over (PROTOCOL.md §9).
    pub job_url: Option<Name>,
    /// Registered at.
    #[serde(with = "time::serde::rfc3339")]
    pub created: OffsetDateTime,
}

/// What a device code is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CodeKind {
    /// MFP registration (§5).
    Registration,
    /// A user session at an MFP (§8 step 1).
    Session,
    /// Desktop login (§4).
    Desktop,
}

/// Where a device code stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum CodeState {
    /// Waiting for the user.
    Pending,
    /// Approved by `user` (for a registration: the admin, whose tenant the printer joins).
    Approved {
        /// The approving user.
        user: String,
    },
    /// Denied.
    Denied,
    /// Redeemed (R-DEV-1: a repeat within 30 s re-mints for the same subject and revokes the first pair). Boxed:
    /// only redeemed codes pay for it, and a pending code stays small.
    Redeemed(Box<Redemption>),
}

/// What a redeemed device code remembers for R-DEV-1 (serialised inside [`CodeState::Redeemed`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Redemption {
    /// When it was first redeemed (the R-DEV-1 window starts here; a re-mint keeps it).
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// The approving user (kept for the re-mint).
    pub user: String,
    /// The device created by a registration.
    pub device_id: Option<String>,
    /// The access token handed out (revoked on a lost-answer re-mint).
    pub access: SecretHash,
    /// The refresh family handed out, if any.
    pub family: Option<String>,
}

/// A device authorization record (RFC 8628 §3.2), looked up by the hash of its device code and by user code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceCodeRecord {
    /// SHA-256 of the device code.
    pub hash: SecretHash,
    /// The user code (wire form). A user code is short-lived and low-entropy by design (RFC 8628 §5.1); it is kept
    /// in the clear so a typed code can be found, and rate limits protect it.
    pub user_code: WireUserCode,
    /// What approving it does.
    pub kind: CodeKind,
    /// The requesting client.
    pub client_id: Name,
    /// Requested scope.
    pub scope: Name,
    /// For session codes: the requesting device. For registrations: none until redeemed.
    pub device_id: Option<Name>,
    /// For session codes: the device's tenant (the approver must belong to it).
    pub tenant: Option<Name>,
    /// Registration: model.
    pub model: Option<Name>,
    /// Registration: serial.
    pub serial: Option<Name>,
    /// Non-secret handle for push and logs.
    pub request_id: Name,
    /// Issued at.
    #[serde(with = "time::serde::rfc3339")]
    pub created: OffsetDateTime,
    /// Expires at.
    #[serde(with = "time::serde::rfc3339")]
    pub expires: OffsetDateTime,
    /// The code's current interval in seconds (grows by 5 on every slow_down, RFC 8628 §3.5).
    pub interval: u64,
    /// Arrival of the previous poll (PROTOCOL.md §12: intervals are measured between arrivals).
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_poll: Option<OffsetDateTime>,
    /// Where it stands.
    pub state: CodeState,
}

/// A user code in wire form (8 letters of [`crate::user_code::ALPHABET`], RFC 8628 §6.1), stored inline: a device
/// code's record and the user-code index hold it without a heap allocation. Serialised as its 8 letters.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WireUserCode(
    /// The letters; built only from [`crate::user_code::ALPHABET`] (by [`WireUserCode::new`] or the minter).
    pub(super) [u8; crate::user_code::LENGTH],
);

impl WireUserCode {
    /// `code` if it is in wire form ([`crate::user_code::is_wire_form`]).
    pub fn new(code: &str) -> Option<Self> {
        crate::user_code::is_wire_form(code).then(|| {
            let mut b = [0u8; crate::user_code::LENGTH];
            b.copy_from_slice(code.as_bytes());
            Self(b)
        })
    }

    /// The 8 letters.
    pub fn as_str(&self) -> &str {
        // Only alphabet letters (ASCII) get in through `new`.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

impl std::fmt::Debug for WireUserCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "WireUserCode({})", self.as_str())
    }
}

impl std::fmt::Display for WireUserCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for WireUserCode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for WireUserCode {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Self::new(&s).ok_or_else(|| serde::de::Error::custom("expected a user code: 8 letters of BCDFGHJKLMNPQRSTVWXZ"))
    }
}

/// Whom a token speaks for.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Subject {
    /// A registered printer (`roger.device`).
    Device {
        /// The device id.
        device_id: Name,
    },
    /// A user: at a printer (`device_id` set, step 1/2 tokens) or in an app.
    User {
        /// The user id.
        user_id: Name,
        /// The printer the session runs at (MFP user tokens).
        device_id: Option<Name>,
    },
}

/// An access token (stored by hash; RFC 6750).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessRecord {
    /// SHA-256 of the token.
    pub hash: SecretHash,
    /// The client it was issued to.
    pub client_id: Name,
    /// Tenant.
    pub tenant: Name,
    /// Subject.
    pub subject: Subject,
    /// Granted scope.
    pub scope: Name,
    /// Expiry.
    #[serde(with = "time::serde::rfc3339")]
    pub expires: OffsetDateTime,
    /// The refresh family it came from (revoked with it, RFC 7009 §2.1).
    pub family: Option<Name>,
}

/// A refresh-token family: one chain of rotations (R-TOK-2, R-TOK-3, RFC 9700 §4.14.2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefreshFamily {
    /// Family id.
    pub id: Name,
    /// The client.
    pub client_id: Name,
    /// Tenant.
    pub tenant: Name,
    /// Subject.
    pub subject: Subject,
    /// Scope.
    pub scope: Name,
    /// SHA-256 of the family handle: the part every refresh token of the family starts with
    /// ([`Minter::refresh_token`](super::mint::Minter::refresh_token)). A presented token finds its family through
    /// it, so reuse of any older token of the family is detected (RFC 9700 §4.14.2) without keeping the hashes of
    /// every token the family ever had.
    pub handle: SecretHash,
    /// Hash of the current (newest) refresh token.
    pub current: SecretHash,
    /// Hash of the previous token, redeemable (for a lost answer) until `current` is first used, 24 h at most
    /// (R-TOK-3). Presenting `current` rotates it into this slot, so "until its successor is first used" needs
    /// no flag: the slot is overwritten at that moment.
    pub previous: Option<SecretHash>,
    /// When `previous` was rotated out.
    #[serde(with = "time::serde::rfc3339::option")]
    pub previous_until: Option<OffsetDateTime>,
    /// Sliding expiry: each successful refresh moves it to now + 90 days (R-TOK-4).
    #[serde(with = "time::serde::rfc3339")]
    pub expires: OffsetDateTime,
    /// Revoked (reuse detected, logout, device removal, RFC 7009).
    pub revoked: bool,
}

/// An authorization code (RFC 6749 §4.1.2; one use within 60 s; PKCE S256).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthCodeRecord {
    /// SHA-256 of the code.
    pub hash: SecretHash,
    /// The client.
    pub client_id: String,
    /// The redirect URI it was issued for.
    pub redirect_uri: String,
    /// The S256 challenge.
    pub code_challenge: String,
    /// The user.
    pub user_id: String,
    /// Tenant.
    pub tenant: String,
    /// Scope.
    pub scope: String,
    /// Expiry.
    #[serde(with = "time::serde::rfc3339")]
    pub expires: OffsetDateTime,
    /// Used (a second use revokes what the first minted, RFC 6749 §4.1.2).
    pub used: bool,
    /// The family the first use created.
    pub family: Option<String>,
}

/// Where a job stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Waiting to be released.
    Queued,
    /// Released to a printer; the result is pending.
    Released,
    /// Printed.
    Printed,
    /// Failed.
    Failed,
}

/// A print job (R-DATA-2: the file name is kept; the document never is, R-DATA-1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobRecord {
    /// Job id.
    pub id: String,
    /// Tenant.
    pub tenant: String,
    /// Owner.
    pub user_id: String,
    /// File name.
    pub file_name: String,
    /// Pages.
    pub pages: u32,
    /// Where the document is: a drive file, or a desktop's disk.
    pub source: JobSource,
    /// State.
    pub state: JobState,
    /// Created.
    #[serde(with = "time::serde::rfc3339")]
    pub created: OffsetDateTime,
    /// Expires (7 days by default).
    #[serde(with = "time::serde::rfc3339")]
    pub expires: OffsetDateTime,
    /// The printer it was released to.
    pub released_to: Option<String>,
    /// Idempotency keys of releases already answered (PROTOCOL.md §9): a repeat gets an equivalent answer.
    pub release_keys: BTreeMap<String, String>,
}

/// Where a job's document lives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum JobSource {
    /// A file in the user's drive.
    Drive {
        /// Drive file id.
        drive_file_id: String,
    },
    /// A file on a desktop client (only metadata reaches the server).
    Desktop {
        /// The desktop's app installation (its user's app token family).
        installation: Option<String>,
    },
}

/// A one-use desktop hand-over ticket (PROTOCOL.md §9), bound to a job and a device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TicketRecord {
    /// SHA-256 of the ticket.
    pub hash: SecretHash,
    /// Job.
    pub job_id: String,
    /// Device.
    pub device_id: String,
    /// Expiry.
    #[serde(with = "time::serde::rfc3339")]
    pub expires: OffsetDateTime,
    /// Redeemed at.
    #[serde(with = "time::serde::rfc3339::option")]
    pub redeemed: Option<OffsetDateTime>,
}

/// A scan (R-DATA-2: only its timestamp is personal data; no file name is kept).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScanRecord {
    /// Scan id.
    pub id: String,
    /// Tenant.
    pub tenant: String,
    /// User.
    pub user_id: String,
    /// Profile.
    pub profile_id: String,
    /// When.
    #[serde(with = "time::serde::rfc3339")]
    pub created: OffsetDateTime,
    /// Completed.
    pub completed: bool,
    /// When the upload was reported complete (a timestamp, R-DATA-2; absent in records from before it was kept).
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub completed_at: Option<OffsetDateTime>,
}
