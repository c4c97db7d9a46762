//! The server core (feature `server`): every rule the Roger server enforces, sans-IO.
//!
//! [`ServerCore`] owns the data model ([`model`]) and mints every secret from an injected CSPRNG
//! ([`mint::Minter`]). Time is an argument (`now: OffsetDateTime`, read from the simulator's clock, system or
//! virtual). HTTP stays outside: a front end (roger-sim's axum server) parses requests into this crate's message
//! types, calls the core, and renders the typed answers and failures.
//!
//! Durability without I/O: every mutation is also written to a journal of [`Change`]s. After each request the front
//! end takes the journal ([`ServerCore::take_changes`]) and commits it in one transaction **before** it answers, so
//! a crash after the answer never loses what the answer promised (a rotation is never undone, a release never
//! repeated). [`ServerCore::from_state`] rebuilds the core from persisted records.
//!
//! Push messages go to an outbox ([`ServerCore::take_push`]); the front end hands them to its bus.

pub mod api;
pub mod drive;
pub mod mint;
pub mod model;
pub mod oauth;
pub mod passwords;
pub mod settings;

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::error::{OAuthErrorCode, OAuthErrorResponse, ProblemDetails};
use crate::push::{PushEnvelope, PushEvent, PushTarget};
use mint::{Minter, SecretHash};
use model::*;
use settings::TenantSettings;

/// Everything the server keeps, as tables of records keyed by id or by secret hash.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct State {
    /// Tenants by id.
    pub tenants: BTreeMap<String, Tenant>,
    /// Users by id.
    pub users: BTreeMap<String, User>,
    /// Devices by id.
    pub devices: BTreeMap<String, Device>,
    /// Device codes by hash.
    pub codes: BTreeMap<SecretHash, DeviceCodeRecord>,
    /// Access tokens by hash.
    pub access: BTreeMap<SecretHash, AccessRecord>,
    /// Refresh families by id.
    pub families: BTreeMap<String, RefreshFamily>,
    /// Authorization codes by hash.
    pub auth_codes: BTreeMap<SecretHash, AuthCodeRecord>,
    /// Jobs by id.
    pub jobs: BTreeMap<String, JobRecord>,
    /// Tickets by hash.
    pub tickets: BTreeMap<SecretHash, TicketRecord>,
    /// Scans by id.
    pub scans: BTreeMap<String, ScanRecord>,
}

/// The tables of [`State`], named for the journal and for stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Table {
    /// [`State::tenants`].
    Tenants,
    /// [`State::users`].
    Users,
    /// [`State::devices`].
    Devices,
    /// [`State::codes`].
    Codes,
    /// [`State::access`].
    Access,
    /// [`State::families`].
    Families,
    /// [`State::auth_codes`].
    AuthCodes,
    /// [`State::jobs`].
    Jobs,
    /// [`State::tickets`].
    Tickets,
    /// [`State::scans`].
    Scans,
}

impl Table {
    /// Every table.
    pub const ALL: [Table; 10] = [
        Table::Tenants,
        Table::Users,
        Table::Devices,
        Table::Codes,
        Table::Access,
        Table::Families,
        Table::AuthCodes,
        Table::Jobs,
        Table::Tickets,
        Table::Scans,
    ];

    /// The table's name (for SQL and JSON).
    pub fn name(self) -> &'static str {
        match self {
            Table::Tenants => "tenants",
            Table::Users => "users",
            Table::Devices => "devices",
            Table::Codes => "codes",
            Table::Access => "access",
            Table::Families => "families",
            Table::AuthCodes => "auth_codes",
            Table::Jobs => "jobs",
            Table::Tickets => "tickets",
            Table::Scans => "scans",
        }
    }
}

/// One journalled mutation: the new JSON of a record, or its deletion.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Change {
    /// The table.
    pub table: Table,
    /// The record's key (id or secret hash).
    pub key: String,
    /// The new record, or `None` for a deletion.
    pub value: Option<serde_json::Value>,
}

/// An OAuth endpoint's refusal (RFC 6749 §5.2, RFC 8628 §3.5, RFC 7009 §2.2.1, PROTOCOL.md §7).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{status} {}", .body.error)]
pub struct OAuthFailure {
    /// HTTP status (400, 401, 429).
    pub status: u16,
    /// The JSON body (boxed to keep results small).
    pub body: Box<OAuthErrorResponse>,
    /// `WWW-Authenticate` value (401 answers).
    pub www_authenticate: Option<String>,
    /// `Retry-After` seconds (429).
    pub retry_after: Option<u64>,
}

impl OAuthFailure {
    /// A 400 with `code`.
    pub fn bad(code: OAuthErrorCode, description: &str) -> Self {
        Self {
            status: 400,
            body: Box::new(OAuthErrorResponse::new(code).with_description(description)),
            www_authenticate: None,
            retry_after: None,
        }
    }

    /// PROTOCOL.md §7: a failed device-bound client authentication: 401 `invalid_client` with
    /// `WWW-Authenticate: Bearer realm="roger", error="invalid_token"`.
    pub fn device_auth(description: &str) -> Self {
        Self {
            status: 401,
            body: Box::new(OAuthErrorResponse::new(OAuthErrorCode::InvalidClient).with_description(description)),
            www_authenticate: Some(r#"Bearer realm="roger", error="invalid_token""#.into()),
            retry_after: None,
        }
    }

    /// A 429 with `temporarily_unavailable` and `Retry-After` (docs/protocol.md C5).
    pub fn throttled(retry_after: u64) -> Self {
        Self {
            status: 429,
            body: Box::new(
                OAuthErrorResponse::new(OAuthErrorCode::TemporarilyUnavailable)
                    .with_description("too many attempts; retry later"),
            ),
            www_authenticate: None,
            retry_after: Some(retry_after),
        }
    }
}

/// An API refusal: RFC 9457 problem details with the headers of PROTOCOL.md §10.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{status} {}", .problem.problem_type)]
pub struct ApiFailure {
    /// HTTP status.
    pub status: u16,
    /// The problem (boxed to keep results small).
    pub problem: Box<ProblemDetails>,
    /// `WWW-Authenticate` (401, 403).
    pub www_authenticate: Option<String>,
    /// `Retry-After` seconds (429).
    pub retry_after: Option<u64>,
}

impl ApiFailure {
    /// A problem `urn:roger:problem:<name>`.
    pub fn new(status: u16, name: &str, title: &str) -> Self {
        Self {
            status,
            problem: Box::new(ProblemDetails::roger(name, status, title)),
            www_authenticate: None,
            retry_after: None,
        }
    }

    /// PROTOCOL.md §10: no credentials → 401 + `WWW-Authenticate: Bearer realm="roger"`.
    pub fn no_credentials() -> Self {
        Self {
            www_authenticate: Some(r#"Bearer realm="roger""#.into()),
            ..Self::new(401, "unauthorized", "Authentication required")
        }
    }

    /// PROTOCOL.md §10 / RFC 6750 §3.1: a bad token → 401 `error="invalid_token"`.
    pub fn invalid_token() -> Self {
        Self {
            www_authenticate: Some(r#"Bearer realm="roger", error="invalid_token""#.into()),
            ..Self::new(401, "invalid-token", "The access token is invalid or expired")
        }
    }

    /// RFC 6750 §3.1: wrong scope → 403 `error="insufficient_scope", scope="…"`.
    pub fn insufficient_scope(needed: &str) -> Self {
        Self {
            www_authenticate: Some(format!(r#"Bearer realm="roger", error="insufficient_scope", scope="{needed}""#)),
            ..Self::new(403, "insufficient-scope", "The token lacks the required scope")
        }
    }

    /// 404 (also for things that exist but are not the caller's: no oracle).
    pub fn not_found() -> Self {
        Self::new(404, "not-found", "Not found")
    }

    /// 429 with `Retry-After`.
    pub fn rate_limited(retry_after: u64) -> Self {
        Self { retry_after: Some(retry_after), ..Self::new(429, "rate-limited", "Too many attempts") }
    }

    /// 400 for a body or parameter that is not acceptable.
    pub fn bad_request(detail: &str) -> Self {
        Self::new(400, "invalid-request", "Bad request").with_detail(detail)
    }

    /// Adds a detail.
    pub fn with_detail(mut self, detail: &str) -> Self {
        self.problem.detail = Some(detail.to_owned());
        self
    }
}

/// The authenticated caller of an API request (RFC 6750).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The token's hash (for revocation of the caller's own session).
    pub token: SecretHash,
    /// The client it was issued to.
    pub client_id: String,
    /// Tenant.
    pub tenant: String,
    /// Subject.
    pub subject: Subject,
    /// Scope.
    pub scope: String,
    /// The refresh family (app tokens).
    pub family: Option<String>,
}

impl Principal {
    /// The user id, for user and app tokens.
    pub fn user_id(&self) -> Option<&str> {
        match &self.subject {
            Subject::User { user_id, .. } => Some(user_id),
            Subject::Device { .. } => None,
        }
    }

    /// The device id: the printer itself, or the printer a user token was issued at.
    pub fn device_id(&self) -> Option<&str> {
        match &self.subject {
            Subject::Device { device_id } => Some(device_id),
            Subject::User { device_id, .. } => device_id.as_deref(),
        }
    }

    /// Whether the token has one of `scopes` (PROTOCOL.md §10 matrix).
    pub fn has_any_scope(&self, scopes: &[&str]) -> bool {
        scopes.iter().any(|s| crate::token::scope::contains(&self.scope, s))
    }

    /// RFC 6750 §3.1: 403 `insufficient_scope` unless one of `scopes` is granted.
    pub fn require_scope(&self, scopes: &[&str]) -> Result<(), ApiFailure> {
        if self.has_any_scope(scopes) {
            Ok(())
        } else {
            Err(ApiFailure::insufficient_scope(&scopes.join(" ")))
        }
    }
}

/// Sliding-window counters for the rate limits of RFC 8628 §5.1 and R-PWD-2 (kept in memory only: a restart
/// forgives, which errs on the side of availability; lock-outs themselves are persisted on the user).
#[derive(Debug, Default, Clone)]
pub(crate) struct RateLimits {
    hits: HashMap<String, Vec<OffsetDateTime>>,
}

impl RateLimits {
    /// Counts an event under `key` and returns how many happened within `window_secs` (this one included).
    pub(crate) fn hit(&mut self, key: String, now: OffsetDateTime, window_secs: i64) -> usize {
        let v = self.hits.entry(key).or_default();
        v.retain(|t| (now - *t).whole_seconds() < window_secs);
        v.push(now);
        v.len()
    }

    /// How many events happened under `key` within the window, without counting one.
    pub(crate) fn count(&mut self, key: &str, now: OffsetDateTime, window_secs: i64) -> usize {
        match self.hits.get_mut(key) {
            Some(v) => {
                v.retain(|t| (now - *t).whole_seconds() < window_secs);
                v.len()
            }
            None => 0,
        }
    }

    /// Seconds until the oldest event in the window leaves it.
    pub(crate) fn retry_after(&self, key: &str, now: OffsetDateTime, window_secs: i64) -> u64 {
        self.hits
            .get(key)
            .and_then(|v| v.first())
            .map(|t| (window_secs - (now - *t).whole_seconds()).max(1) as u64)
            .unwrap_or(1)
    }
}

/// How long [`ServerCore::sweep`] keeps a device code after it expired, so that late polls still get
/// `expired_token` (RFC 8628 §3.5) rather than `invalid_grant` for an unknown code.
pub const EXPIRED_CODE_MEMORY_SECS: i64 = 3600;

/// The server core. See the module documentation.
#[derive(Debug)]
pub struct ServerCore {
    pub(crate) api: String,
    pub(crate) minter: Minter,
    pub(crate) state: State,
    pub(crate) defaults: TenantSettings,
    /// Derived: user code → device-code hash.
    pub(crate) user_codes: HashMap<String, SecretHash>,
    /// Derived: refresh-token hash → family id (current, previous and retired tokens).
    pub(crate) refresh_index: HashMap<SecretHash, String>,
    pub(crate) limits: RateLimits,
    pub(crate) dummy_hash: passwords::DummyHashes,
    journal: Vec<Change>,
    outbox: Vec<PushEnvelope>,
}

impl ServerCore {
    /// A core for the API origin `api` (`https://host:port`), with `defaults` for registrations (which belong to
    /// no tenant until approved), minting from `minter`.
    pub fn new(api: &str, defaults: TenantSettings, minter: Minter) -> Self {
        Self::from_state(api, defaults, minter, State::default())
    }

    /// Rebuilds a core from persisted records (derived indexes are recomputed).
    pub fn from_state(api: &str, defaults: TenantSettings, minter: Minter, state: State) -> Self {
        let mut core = Self {
            api: api.trim_end_matches('/').to_owned(),
            minter,
            state,
            defaults,
            user_codes: HashMap::new(),
            refresh_index: HashMap::new(),
            limits: RateLimits::default(),
            dummy_hash: passwords::DummyHashes::default(),
            journal: Vec::new(),
            outbox: Vec::new(),
        };
        core.reindex();
        core
    }

    fn reindex(&mut self) {
        self.user_codes =
            self.state.codes.iter().map(|(h, c)| (c.user_code.clone(), h.clone())).collect::<HashMap<_, _>>();
        self.refresh_index.clear();
        for f in self.state.families.values() {
            self.refresh_index.insert(f.current.clone(), f.id.clone());
            if let Some(p) = &f.previous {
                self.refresh_index.insert(p.clone(), f.id.clone());
            }
            for r in &f.retired {
                self.refresh_index.insert(r.clone(), f.id.clone());
            }
        }
    }

    /// The API origin.
    pub fn api(&self) -> &str {
        &self.api
    }

    /// Everything the server keeps (for `/sim/store`, export checks and tests).
    pub fn state(&self) -> &State {
        &self.state
    }

    /// The default settings (for registrations and new tenants).
    pub fn defaults(&self) -> &TenantSettings {
        &self.defaults
    }

    /// Replaces the default settings and every tenant's settings (the simulator's `PUT /sim/settings`).
    pub fn set_settings(&mut self, settings: TenantSettings) {
        self.defaults = settings;
        let ids: Vec<String> = self.state.tenants.keys().cloned().collect();
        for id in ids {
            if let Some(mut t) = self.state.tenants.get(&id).cloned() {
                t.settings = settings;
                self.put_tenant(t);
            }
        }
    }

    /// The mutations since the last call, to commit before answering.
    pub fn take_changes(&mut self) -> Vec<Change> {
        std::mem::take(&mut self.journal)
    }

    /// The push messages since the last call (R-PUSH-1: ids only).
    pub fn take_push(&mut self) -> Vec<PushEnvelope> {
        std::mem::take(&mut self.outbox)
    }

    /// The settings of `tenant` (defaults if unknown).
    pub fn settings(&self, tenant: &str) -> TenantSettings {
        self.state.tenants.get(tenant).map(|t| t.settings).unwrap_or(self.defaults)
    }

    pub(crate) fn push(&mut self, now: OffsetDateTime, target: PushTarget, event: PushEvent) {
        let id = self.minter.id("msg");
        if let Ok(id) = crate::push::Id::new(id) {
            self.outbox.push(PushEnvelope::new(id, now, target, event));
        }
    }

    fn journal<T: Serialize>(&mut self, table: Table, key: &str, value: Option<&T>) {
        let value = value.and_then(|v| serde_json::to_value(v).ok());
        self.journal.push(Change { table, key: key.to_owned(), value });
    }

    /// Inserts or replaces a tenant.
    pub fn put_tenant(&mut self, t: Tenant) {
        self.journal(Table::Tenants, &t.id, Some(&t));
        self.state.tenants.insert(t.id.clone(), t);
    }

    /// Inserts or replaces a user.
    pub fn put_user(&mut self, u: User) {
        self.journal(Table::Users, &u.id, Some(&u));
        self.state.users.insert(u.id.clone(), u);
    }

    pub(crate) fn delete_user(&mut self, id: &str) {
        if self.state.users.remove(id).is_some() {
            self.journal::<User>(Table::Users, id, None);
        }
    }

    pub(crate) fn put_device(&mut self, d: Device) {
        self.journal(Table::Devices, &d.id, Some(&d));
        self.state.devices.insert(d.id.clone(), d);
    }

    pub(crate) fn delete_device(&mut self, id: &str) {
        self.journal::<Device>(Table::Devices, id, None);
        self.state.devices.remove(id);
    }

    pub(crate) fn put_code(&mut self, c: DeviceCodeRecord) {
        self.journal(Table::Codes, c.hash.as_str(), Some(&c));
        self.user_codes.insert(c.user_code.clone(), c.hash.clone());
        self.state.codes.insert(c.hash.clone(), c);
    }

    pub(crate) fn delete_code(&mut self, hash: &SecretHash) {
        if let Some(c) = self.state.codes.remove(hash) {
            self.user_codes.remove(&c.user_code);
            self.journal::<DeviceCodeRecord>(Table::Codes, hash.as_str(), None);
        }
    }

    pub(crate) fn put_access(&mut self, a: AccessRecord) {
        self.journal(Table::Access, a.hash.as_str(), Some(&a));
        self.state.access.insert(a.hash.clone(), a);
    }

    pub(crate) fn delete_access(&mut self, hash: &SecretHash) {
        if self.state.access.remove(hash).is_some() {
            self.journal::<AccessRecord>(Table::Access, hash.as_str(), None);
        }
    }

    pub(crate) fn put_family(&mut self, f: RefreshFamily) {
        self.journal(Table::Families, &f.id, Some(&f));
        // Every hash of a family enters the index when it becomes `current`, and a rotation only ever moves
        // hashes from `current` to `previous` to `retired`: indexing the newest one is enough (and keeps a refresh
        // from re-inserting the whole history).
        self.refresh_index.insert(f.current.clone(), f.id.clone());
        self.state.families.insert(f.id.clone(), f);
    }

    pub(crate) fn delete_family(&mut self, id: &str) {
        if self.state.families.remove(id).is_some() {
            self.refresh_index.retain(|_, fam| fam != id);
            self.journal::<RefreshFamily>(Table::Families, id, None);
        }
    }

    pub(crate) fn put_auth_code(&mut self, a: AuthCodeRecord) {
        self.journal(Table::AuthCodes, a.hash.as_str(), Some(&a));
        self.state.auth_codes.insert(a.hash.clone(), a);
    }

    pub(crate) fn delete_auth_code(&mut self, hash: &SecretHash) {
        if self.state.auth_codes.remove(hash).is_some() {
            self.journal::<AuthCodeRecord>(Table::AuthCodes, hash.as_str(), None);
        }
    }

    pub(crate) fn put_job(&mut self, j: JobRecord) {
        self.journal(Table::Jobs, &j.id, Some(&j));
        self.state.jobs.insert(j.id.clone(), j);
    }

    /// Inserts or replaces a job, journalled like every mutation (for fixtures: the simulator seeds queued drive
    /// jobs at start-up; the API creates jobs through the endpoints of PROTOCOL.md §9).
    pub fn seed_job(&mut self, job: JobRecord) {
        self.put_job(job);
    }

    pub(crate) fn delete_job(&mut self, id: &str) {
        if self.state.jobs.remove(id).is_some() {
            self.journal::<JobRecord>(Table::Jobs, id, None);
        }
    }

    pub(crate) fn put_ticket(&mut self, t: TicketRecord) {
        self.journal(Table::Tickets, t.hash.as_str(), Some(&t));
        self.state.tickets.insert(t.hash.clone(), t);
    }

    pub(crate) fn delete_ticket(&mut self, hash: &SecretHash) {
        if self.state.tickets.remove(hash).is_some() {
            self.journal::<TicketRecord>(Table::Tickets, hash.as_str(), None);
        }
    }

    pub(crate) fn put_scan(&mut self, s: ScanRecord) {
        self.journal(Table::Scans, &s.id, Some(&s));
        self.state.scans.insert(s.id.clone(), s);
    }

    pub(crate) fn delete_scan(&mut self, id: &str) {
        if self.state.scans.remove(id).is_some() {
            self.journal::<ScanRecord>(Table::Scans, id, None);
        }
    }

    /// Revokes a refresh family and every access token minted from it (RFC 7009 §2.1, RFC 9700 §4.14.2).
    pub(crate) fn revoke_family(&mut self, family_id: &str) {
        if let Some(mut f) = self.state.families.get(family_id).cloned() {
            if !f.revoked {
                f.revoked = true;
                self.put_family(f);
            }
        }
        let tokens: Vec<SecretHash> = self
            .state
            .access
            .iter()
            .filter(|(_, a)| a.family.as_deref() == Some(family_id))
            .map(|(h, _)| h.clone())
            .collect();
        for h in tokens {
            self.delete_access(&h);
        }
    }

    /// Revokes every token whose subject matches `pred` (device removal, session end, erasure).
    pub(crate) fn revoke_where(&mut self, pred: impl Fn(&Subject) -> bool) {
        let families: Vec<String> =
            self.state.families.values().filter(|f| !f.revoked && pred(&f.subject)).map(|f| f.id.clone()).collect();
        for f in families {
            self.revoke_family(&f);
        }
        let tokens: Vec<SecretHash> =
            self.state.access.iter().filter(|(_, a)| pred(&a.subject)).map(|(h, _)| h.clone()).collect();
        for h in tokens {
            self.delete_access(&h);
        }
    }

    /// Removes what has expired at `now`: device codes ([`EXPIRED_CODE_MEMORY_SECS`] after their expiry), access
    /// tokens, authorization codes, tickets, queued jobs past their lifetime, and refresh families dead for longer
    /// than the reuse-detection window. Call it now and then (the simulator does on every clock advance).
    pub fn sweep(&mut self, now: OffsetDateTime) {
        let codes: Vec<SecretHash> = self
            .state
            .codes
            .iter()
            .filter(|(_, c)| match &c.state {
                // R-DEV-1: a redeemed code answers repeats for 30 s after its first success.
                CodeState::Redeemed { at, .. } => {
                    c.expires <= now && (now - *at).whole_seconds() > settings::DEVICE_CODE_GRACE_SECS
                }
                // RFC 8628 §3.5: a late poll of an expired code gets `expired_token` (the client fetches a new
                // code), not `invalid_grant` (the client gives up), so expired codes are remembered for a while.
                _ => (now - c.expires).whole_seconds() >= EXPIRED_CODE_MEMORY_SECS,
            })
            .map(|(h, _)| h.clone())
            .collect();
        for h in codes {
            self.delete_code(&h);
        }
        let access: Vec<SecretHash> =
            self.state.access.iter().filter(|(_, a)| a.expires <= now).map(|(h, _)| h.clone()).collect();
        for h in access {
            self.delete_access(&h);
        }
        let auth: Vec<SecretHash> =
            self.state.auth_codes.iter().filter(|(_, a)| a.expires <= now && !a.used).map(|(h, _)| h.clone()).collect();
        for h in auth {
            self.delete_auth_code(&h);
        }
        let tickets: Vec<SecretHash> =
            self.state.tickets.iter().filter(|(_, t)| t.expires <= now).map(|(h, _)| h.clone()).collect();
        for h in tickets {
            self.delete_ticket(&h);
        }
        let jobs: Vec<String> = self
            .state
            .jobs
            .values()
            .filter(|j| j.expires <= now && matches!(j.state, JobState::Queued))
            .map(|j| j.id.clone())
            .collect();
        for id in jobs {
            self.delete_job(&id);
        }
    }
}

#[cfg(test)]
pub(crate) mod test_support {
    use super::*;
    use rand::SeedableRng;

    pub const API: &str = "https://api.test";

    /// A core with tenant `acme`: admin `admin`/`admin-pass`, `alice` (PIN 1234, password alice-pass), `bob`
    /// (PIN 5678, password bob-pass).
    pub fn core() -> ServerCore {
        let minter = Minter::new(Box::new(rand::rngs::StdRng::seed_from_u64(42)));
        let mut core = ServerCore::new(API, TenantSettings::default(), minter);
        core.put_tenant(Tenant {
            id: "acme".into(),
            name: "ACME".into(),
            settings: TenantSettings::default(),
            print_features: crate::api::PrintFeatures::default(),
            scan_profiles: Vec::new(),
        });
        for (id, name, admin, pin, pw) in [
            ("u-admin", "admin", true, None, "admin-pass"),
            ("u-alice", "alice", false, Some("1234"), "alice-pass"),
            ("u-bob", "bob", false, Some("5678"), "bob-pass"),
        ] {
            let cost = core.settings("acme").argon2;
            let pin_hash = pin.map(|p| core.hash_secret(p, cost));
            let password_hash = Some(core.hash_secret(pw, cost));
            core.put_user(User {
                id: id.into(),
                tenant: "acme".into(),
                username: name.into(),
                display_name: Some(name.to_uppercase()),
                email: Some(format!("{name}@acme.example")),
                pin_hash,
                password_hash,
                admin,
                failures: 0,
                locked_until: None,
            });
        }
        core.take_changes();
        core
    }

    pub fn t0() -> OffsetDateTime {
        time::macros::datetime!(2026-11-26 12:00 UTC)
    }
}
