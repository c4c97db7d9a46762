//! The request log behind `GET /sim/log`: every request with its time, method, path, grant type, client, outcome and,
//! for device-code polls, the gap since the previous poll of the same code (PROTOCOL.md §12: intervals are measured
//! between request arrivals). Secrets never enter it (R-SEC-1): codes appear only as a short hash prefix.

use std::borrow::Cow;
use std::collections::VecDeque;

use serde::Serialize;
use time::OffsetDateTime;

/// Most entries kept (the oldest are dropped first).
pub const CAPACITY: usize = 50_000;

/// One request.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct LogEntry {
    /// Sequence number (monotone; survives the drop of old entries).
    pub seq: u64,
    /// Arrival, on the server's clock (virtual or system).
    #[serde(with = "time::serde::rfc3339")]
    #[schemars(with = "roger_proto::schema::Rfc3339")]
    pub time: OffsetDateTime,
    /// HTTP method.
    pub method: Cow<'static, str>,
    /// Path without the query (queries can carry codes); the route template for routes with ids in the path.
    pub path: Cow<'static, str>,
    /// `grant_type` of a token request.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grant_type: Option<Cow<'static, str>>,
    /// `client_id` of an OAuth request.
    // A `Name` keeps up to 24 bytes inline: logging a client costs no allocation.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>")]
    pub client_id: Option<roger_proto::server::model::Name>,
    /// HTTP status of the answer.
    pub status: u16,
    /// The OAuth error code or problem name of a refusal.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outcome: Option<Cow<'static, str>>,
    /// Device-code polls: the first 12 hex digits of the code's SHA-256 (enough to group polls, useless to an
    /// attacker).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// Device-code polls: milliseconds since the previous poll of the same code.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gap_ms: Option<i64>,
    /// Device-code polls: the code's interval (seconds) when the poll arrived.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interval_s: Option<u64>,
    /// Whether the request carried device-bound client authentication or a bearer token.
    pub authenticated: bool,
}

/// Hex digits of a device code's SHA-256 in [`LogEntry::code`].
pub const LOG_CODE_HEX: usize = 12;

/// The log.
#[derive(Debug, Default)]
pub struct RequestLog {
    entries: VecDeque<LogEntry>,
    next: u64,
}

impl RequestLog {
    /// Appends an entry (its `seq` is assigned here).
    pub fn push(&mut self, mut e: LogEntry) {
        e.seq = self.next;
        self.next += 1;
        if self.entries.len() == CAPACITY {
            self.entries.pop_front();
        }
        self.entries.push_back(e);
    }

    /// Entries with `seq >= since`.
    pub fn since(&self, since: u64) -> Vec<LogEntry> {
        self.entries.iter().filter(|e| e.seq >= since).cloned().collect()
    }
}

/// `value` as a log string: borrowed when it is one of `known` (the protocol's grant types and error codes), so the
/// request log costs no allocation for them; copied otherwise.
pub fn intern(value: &str, known: &[&'static str]) -> Cow<'static, str> {
    match known.iter().find(|k| **k == value) {
        Some(k) => Cow::Borrowed(k),
        None => Cow::Owned(value.to_owned()),
    }
}

/// The grant types of PROTOCOL.md §3 (RFC 6749 §4, RFC 8628 §3.4), for [`intern`].
pub const GRANT_TYPES: [&str; 4] =
    ["refresh_token", roger_proto::metadata::GRANT_DEVICE_CODE, "authorization_code", "password"];

/// The OAuth error codes of RFC 6749 §5.2, RFC 6750 §3.1, RFC 7009 §2.2.1 and RFC 8628 §3.5, for [`intern`].
pub const OAUTH_ERRORS: [&str; 15] = [
    "invalid_request",
    "invalid_client",
    "invalid_grant",
    "unauthorized_client",
    "unsupported_grant_type",
    "invalid_scope",
    "authorization_pending",
    "slow_down",
    "access_denied",
    "expired_token",
    "unsupported_token_type",
    "temporarily_unavailable",
    "server_error",
    "invalid_token",
    "insufficient_scope",
];
