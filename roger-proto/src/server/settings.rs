//! Per-tenant settings (PROTOCOL.md §3: "Default lifetimes, all per-tenant settings").

use serde::{Deserialize, Serialize};

/// What happens to a drive job's file after it printed (whitepaper: delete, move to "Printed", or leave).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum AfterPrint {
    /// Delete the file.
    Delete,
    /// Move it to the "Printed" folder.
    #[default]
    MovePrinted,
    /// Leave it.
    Leave,
}

/// Argon2id cost parameters (RFC 9106; cheap in tests, real in production).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Argon2Cost {
    /// Memory in KiB.
    pub m_kib: u32,
    /// Iterations.
    pub t: u32,
    /// Parallelism.
    pub p: u32,
}

impl Argon2Cost {
    /// RFC 9106 §4 second recommended option (64 MiB, 3 passes, 4 lanes).
    pub const PRODUCTION: Self = Self { m_kib: 64 * 1024, t: 3, p: 4 };
    /// Cheap parameters for tests and the simulator's default tenant.
    pub const TEST: Self = Self { m_kib: 256, t: 1, p: 1 };
}

/// The settings of one tenant. Every lifetime the server applies reads these.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(default)]
pub struct TenantSettings {
    /// Access-token lifetime in seconds (1200).
    pub access_token_secs: u64,
    /// Refresh-token sliding lifetime in seconds (90 days).
    pub refresh_token_secs: u64,
    /// Registration code lifetime (600 s).
    pub registration_code_secs: u64,
    /// Session QR code lifetime (120 s).
    pub session_code_secs: u64,
    /// Desktop login code lifetime (120 s).
    pub desktop_code_secs: u64,
    /// Polling interval (5 s).
    pub interval_secs: u64,
    /// Queued job lifetime (7 days).
    pub job_secs: u64,
    /// Failed logins before lock-out (5).
    pub lockout_failures: u32,
    /// Lock-out duration (300 s).
    pub lockout_secs: u64,
    /// Approval attempts with an unknown/expired code per user per minute (10).
    pub approvals_per_minute: u32,
    /// Password-grant failures per device per 5 minutes before 429 (docs/protocol.md C5: 20).
    pub device_failures_per_5min: u32,
    /// Password-grant failures per tenant per minute before 429 (C5: 100).
    pub tenant_failures_per_minute: u32,
    /// Pre-authorised drive URL lifetime (300 s).
    pub drive_url_secs: u64,
    /// Desktop ticket lifetime (300 s).
    pub ticket_secs: u64,
    /// Authorization code lifetime (60 s).
    pub auth_code_secs: u64,
    /// Argon2id cost for new hashes.
    pub argon2: Argon2Cost,
    /// After-print rule for drive jobs.
    pub after_print: AfterPrint,
}

impl Default for TenantSettings {
    fn default() -> Self {
        Self {
            access_token_secs: 1200,
            refresh_token_secs: 90 * 24 * 3600,
            registration_code_secs: 600,
            session_code_secs: 120,
            desktop_code_secs: 120,
            interval_secs: 5,
            job_secs: 7 * 24 * 3600,
            lockout_failures: 5,
            lockout_secs: 300,
            approvals_per_minute: 10,
            device_failures_per_5min: 20,
            tenant_failures_per_minute: 100,
            drive_url_secs: 300,
            ticket_secs: 300,
            auth_code_secs: 60,
            argon2: Argon2Cost::TEST,
            after_print: AfterPrint::MovePrinted,
        }
    }
}

/// The R-DEV-1 grace: a repeat redemption within this many seconds of the success re-mints.
pub const DEVICE_CODE_GRACE_SECS: i64 = 30;

/// The R-TOK-3 bound: a previous refresh token stays redeemable at most this long.
pub const PREVIOUS_REFRESH_GRACE_SECS: i64 = 24 * 3600;
