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
#[doc(hidden)]
pub mod mutations;
pub mod oauth;
pub mod passwords;
pub mod settings;

use std::collections::{BTreeMap, HashMap, VecDeque};

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::error::{OAuthErrorCode, OAuthErrorResponse, ProblemDetails};
use crate::push::{PushEnvelope, PushEvent, PushTarget};
use mint::{Minter, SecretHash, SecretHashMap};
use model::*;
use settings::TenantSettings;

/// Everything the server keeps, as tables of records keyed by id or by secret hash.
///
/// The four tables that grow with the fleet (devices, device codes, access tokens, refresh families) hold their
/// records boxed: a B-tree node (or hash-table slot) then moves and over-allocates 8-byte pointers instead of
/// 200–300-byte records, which halves what a record costs in slack (`benches/tests/server_memory.rs` prints the
/// breakdown). The tables every printer request reads or writes (access tokens, refresh families, devices) are hash
/// tables: one probe per lookup where a B-tree of thousands of records walks several levels of cache-cold nodes.
/// Access tokens moving to a [`SecretHashMap`] took the grant's core time from about 8 µs to 5 µs at 4,096
/// printers; families and devices following cut the core lock's mean hold time in the server benchmark by a fifth.
/// Hash tables are serialised in key order ([`mint::serialize_sorted`]), so stores and `/sim/store` stay stable.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct State {
    /// Tenants by id.
    pub tenants: BTreeMap<String, Tenant>,
    /// Users by id.
    pub users: BTreeMap<String, User>,
    /// Devices by id.
    #[serde(serialize_with = "mint::serialize_sorted")]
    pub devices: HashMap<Name, Box<Device>>,
    /// Device codes by hash.
    pub codes: BTreeMap<SecretHash, Box<DeviceCodeRecord>>,
    /// Access tokens by hash (a hash table: it grows with every refresh, [`SecretHashMap`]).
    #[serde(serialize_with = "mint::serialize_sorted")]
    pub access: SecretHashMap<Box<AccessRecord>>,
    /// Refresh families by id.
    #[serde(serialize_with = "mint::serialize_sorted")]
    pub families: HashMap<Name, Box<RefreshFamily>>,
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    /// The table.
    pub table: Table,
    /// The record's key (id, or secret hash as 64 hex digits).
    pub key: String,
    /// The record's JSON text as it stands after the request, or `None` for a deletion.
    pub value: Option<String>,
}

/// A record as JSON text, object-safe so one lookup serves every table ([`ServerCore::take_changes`]).
trait ToJson {
    fn to_json(&self) -> Option<String>;
}

impl<T: Serialize> ToJson for T {
    fn to_json(&self) -> Option<String> {
        // The model's types serialise infallibly (string keys, no non-finite floats).
        serde_json::to_string(self).ok()
    }
}

/// The key of a record the current request touched (the journal keeps keys; values are read at commit time).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Dirty {
    /// Ids are short: inline, so touching a record allocates nothing.
    Id(Table, Name),
    Hash(Table, SecretHash),
}

impl Dirty {
    fn table(&self) -> Table {
        match self {
            Dirty::Id(t, _) | Dirty::Hash(t, _) => *t,
        }
    }

    fn key(&self) -> String {
        match self {
            Dirty::Id(_, k) => k.to_string(),
            Dirty::Hash(_, h) => h.to_hex(),
        }
    }
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
    /// The longest window any limit may use (the per-code approval window of RFC 8628 §5.1 is this long; the
    /// device, tenant and per-user windows are shorter).
    pub(crate) const MAX_WINDOW_SECS: i64 = 600;

    /// Counts an event under `key` and returns how many happened within `window_secs` (this one included).
    pub(crate) fn hit(&mut self, key: String, now: OffsetDateTime, window_secs: i64) -> usize {
        debug_assert!(window_secs <= Self::MAX_WINDOW_SECS, "prune would forget events still in the window");
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

    /// Forgets keys whose events all left their window (a key's window is at most [`RateLimits::MAX_WINDOW_SECS`]),
    /// so counters for codes and devices that are gone do not pile up.
    pub(crate) fn prune(&mut self, now: OffsetDateTime) {
        self.hits.retain(|_, v| v.last().is_some_and(|t| (now - *t).whole_seconds() < Self::MAX_WINDOW_SECS));
        if self.hits.capacity() > 64 && self.hits.len() < self.hits.capacity() / 4 {
            self.hits.shrink_to_fit();
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

/// How many expired access tokens each newly minted one may clear ([`ServerCore::expire_access`]): more than one,
/// so the backlog shrinks while tokens are minted, and few, so one request never waits for a long clean-up.
const EXPIRE_PER_MINT: usize = 4;

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
    pub(crate) user_codes: HashMap<WireUserCode, SecretHash>,
    /// Derived: hash of a family handle → family id (every refresh token of a family carries its handle).
    pub(crate) refresh_index: SecretHashMap<Name>,
    /// Derived: every access token's expiry (Unix seconds) and hash, in the order they were minted, so that minting
    /// drops expired tokens as it goes ([`ServerCore::expire_access`]). Entries of tokens revoked or swept earlier are
    /// skipped when they come up.
    access_expiry: VecDeque<(i64, SecretHash)>,
    pub(crate) limits: RateLimits,
    pub(crate) dummy_hash: passwords::DummyHashes,
    /// Test-only mistakes (module `mutations`); empty in every real server.
    pub(crate) mutations: mutations::Mutations,
    journal: Vec<Dirty>,
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
            refresh_index: SecretHashMap::default(),
            access_expiry: VecDeque::new(),
            limits: RateLimits::default(),
            dummy_hash: passwords::DummyHashes::default(),
            mutations: mutations::Mutations::NONE,
            journal: Vec::new(),
            outbox: Vec::new(),
        };
        core.reindex();
        core.revoke_orphaned_families();
        core
    }

    /// Revokes every live refresh family of a device that is not in the state. The core never makes one (removing
    /// a device revokes its families first, [`ServerCore::remove_device`]), but a store can be edited by hand; with
    /// this, "a live device family has its device" holds for every core, and a refresh grant needs no device
    /// lookup to refuse a removed printer.
    fn revoke_orphaned_families(&mut self) {
        let devices = &self.state.devices;
        let orphans: Vec<Name> = self
            .state
            .families
            .values()
            .filter(|f| {
                !f.revoked && matches!(&f.subject, Subject::Device { device_id } if !devices.contains_key(device_id))
            })
            .map(|f| f.id.clone())
            .collect();
        for id in orphans {
            self.revoke_family(&id);
        }
    }

    fn reindex(&mut self) {
        self.user_codes = self.state.codes.iter().map(|(h, c)| (c.user_code, *h)).collect();
        self.refresh_index = self.state.families.values().map(|f| (f.handle, f.id.clone())).collect();
        let mut expiry: Vec<(i64, SecretHash)> =
            self.state.access.values().map(|a| (a.expires.unix_timestamp(), a.hash)).collect();
        expiry.sort_unstable();
        self.access_expiry = expiry.into();
    }

    /// **Test-only**: makes this core commit the given mistakes (the simulator's `--mutant`, DESIGN.md
    /// "Conformance": mutants prove the suite). Never call it in a real server.
    #[doc(hidden)]
    pub fn set_mutations(&mut self, m: mutations::Mutations) {
        self.mutations = m;
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

    /// The mutations since the last call, to commit before answering: one [`Change`] per touched record (in the
    /// order each was first touched), with the record's JSON as it stands now, or `None` if it is gone.
    pub fn take_changes(&mut self) -> Vec<Change> {
        let dirty = self.take_dirty();
        dirty
            .into_iter()
            .map(|d| {
                let value = self.record_json(&d);
                Change { table: d.table(), key: d.key(), value }
            })
            .collect()
    }

    /// Drops the journal without serialising a record (for a front end that keeps no durable state, such as the
    /// in-memory simulator) and returns the keys of the records of `table` that the requests since the last call
    /// touched and that still exist (the simulator declares the push queues of new devices from them).
    pub fn take_changed_keys(&mut self, table: Table) -> Vec<String> {
        let mut keys: Vec<String> =
            self.journal.iter().filter(|d| d.table() == table && self.record_exists(d)).map(Dirty::key).collect();
        // Cleared, not replaced: the journal keeps its capacity for the next request.
        self.journal.clear();
        keys.dedup();
        keys
    }

    /// The journal, each key once (first-touched order).
    fn take_dirty(&mut self) -> Vec<Dirty> {
        let mut dirty = std::mem::take(&mut self.journal);
        if dirty.len() > 1 {
            let mut seen = std::collections::HashSet::with_capacity(dirty.len());
            dirty.retain(|d| seen.insert(d.clone()));
        }
        dirty
    }

    /// The record `d` names, if it exists (one place that maps journal keys to tables).
    fn record(&self, d: &Dirty) -> Option<&dyn ToJson> {
        fn dyn_json<T: Serialize>(v: &T) -> &dyn ToJson {
            v
        }
        let s = &self.state;
        match d {
            Dirty::Id(Table::Tenants, k) => s.tenants.get(k.as_str()).map(dyn_json),
            Dirty::Id(Table::Users, k) => s.users.get(k.as_str()).map(dyn_json),
            Dirty::Id(Table::Devices, k) => s.devices.get(k.as_str()).map(dyn_json),
            Dirty::Id(Table::Families, k) => s.families.get(k.as_str()).map(dyn_json),
            Dirty::Id(Table::Jobs, k) => s.jobs.get(k.as_str()).map(dyn_json),
            Dirty::Id(Table::Scans, k) => s.scans.get(k.as_str()).map(dyn_json),
            Dirty::Hash(Table::Codes, h) => s.codes.get(h).map(dyn_json),
            Dirty::Hash(Table::Access, h) => s.access.get(h).map(dyn_json),
            Dirty::Hash(Table::AuthCodes, h) => s.auth_codes.get(h).map(dyn_json),
            Dirty::Hash(Table::Tickets, h) => s.tickets.get(h).map(dyn_json),
            Dirty::Id(..) | Dirty::Hash(..) => None,
        }
    }

    fn record_exists(&self, d: &Dirty) -> bool {
        self.record(d).is_some()
    }

    fn record_json(&self, d: &Dirty) -> Option<String> {
        self.record(d).and_then(ToJson::to_json)
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

    fn touch(&mut self, table: Table, key: &str) {
        self.journal.push(Dirty::Id(table, Name::from(key)));
    }

    fn touch_hash(&mut self, table: Table, hash: SecretHash) {
        self.journal.push(Dirty::Hash(table, hash));
    }

    /// Inserts or replaces a tenant.
    pub fn put_tenant(&mut self, t: Tenant) {
        self.touch(Table::Tenants, &t.id);
        self.state.tenants.insert(t.id.clone(), t);
    }

    /// Inserts or replaces a user.
    pub fn put_user(&mut self, u: User) {
        self.touch(Table::Users, &u.id);
        self.state.users.insert(u.id.clone(), u);
    }

    pub(crate) fn delete_user(&mut self, id: &str) {
        if self.state.users.remove(id).is_some() {
            self.touch(Table::Users, id);
        }
    }

    pub(crate) fn put_device(&mut self, d: Device) {
        self.touch(Table::Devices, &d.id);
        self.state.devices.insert(d.id.clone(), Box::new(d));
    }

    pub(crate) fn delete_device(&mut self, id: &str) {
        if self.state.devices.remove(id).is_some() {
            self.touch(Table::Devices, id);
        }
    }

    pub(crate) fn put_code(&mut self, c: DeviceCodeRecord) {
        self.touch_hash(Table::Codes, c.hash);
        self.user_codes.insert(c.user_code, c.hash);
        self.state.codes.insert(c.hash, Box::new(c));
    }

    /// Marks a device code changed in place (through `state.codes.get_mut`).
    pub(crate) fn touched_code(&mut self, hash: SecretHash) {
        self.touch_hash(Table::Codes, hash);
    }

    pub(crate) fn delete_code(&mut self, hash: &SecretHash) {
        if let Some(c) = self.state.codes.remove(hash) {
            self.user_codes.remove(&c.user_code);
            self.touch_hash(Table::Codes, *hash);
        }
    }

    /// Stores a newly minted access token, after dropping up to [`EXPIRE_PER_MINT`] access tokens that have expired
    /// ([`ServerCore::expire_access`]).
    pub(crate) fn put_access(&mut self, now: OffsetDateTime, a: AccessRecord) {
        self.expire_access(now, EXPIRE_PER_MINT);
        self.touch_hash(Table::Access, a.hash);
        self.access_expiry.push_back((a.expires.unix_timestamp(), a.hash));
        self.state.access.insert(a.hash, Box::new(a));
    }

    /// Deletes up to `limit` access tokens expired at `now`, oldest minted first.
    ///
    /// Access tokens are the one record every refresh adds (R-TOK-1: about 20 minutes each), so they are not left
    /// to [`ServerCore::sweep`] alone: a server whose printers refresh around the clock keeps about one live token
    /// per printer instead of every token minted since the last sweep, and no sweep has to find and delete a long
    /// backlog while requests wait for the core. The queue is in minting order; where tenants' lifetimes differ, a
    /// token behind a longer-lived one waits for it (or for the next sweep), which only delays freeing its memory:
    /// an expired token is refused whether or not it is still stored.
    fn expire_access(&mut self, now: OffsetDateTime, limit: usize) {
        let due = now.unix_timestamp();
        for _ in 0..limit {
            let Some(&(expires, hash)) = self.access_expiry.front() else { break };
            if expires > due {
                break;
            }
            match self.state.access.get(&hash) {
                // The queue keeps whole seconds: a token expiring later within this second is still valid.
                Some(a) if a.expires > now => break,
                Some(_) => {
                    self.access_expiry.pop_front();
                    self.delete_access(&hash);
                }
                // Revoked or swept earlier.
                None => {
                    self.access_expiry.pop_front();
                }
            }
        }
    }

    pub(crate) fn delete_access(&mut self, hash: &SecretHash) {
        if self.state.access.remove(hash).is_some() {
            self.touch_hash(Table::Access, *hash);
        }
    }

    pub(crate) fn put_family(&mut self, f: RefreshFamily) {
        self.touch(Table::Families, &f.id);
        self.refresh_index.insert(f.handle, f.id.clone());
        self.state.families.insert(f.id.clone(), Box::new(f));
    }

    /// Marks a refresh family changed in place (through `state.families.get_mut`).
    pub(crate) fn touched_family(&mut self, id: &str) {
        self.touch(Table::Families, id);
    }

    pub(crate) fn delete_family(&mut self, id: &str) {
        if let Some(f) = self.state.families.remove(id) {
            self.refresh_index.remove(&f.handle);
            self.touch(Table::Families, id);
        }
    }

    pub(crate) fn put_auth_code(&mut self, a: AuthCodeRecord) {
        self.touch_hash(Table::AuthCodes, a.hash);
        self.state.auth_codes.insert(a.hash, a);
    }

    pub(crate) fn delete_auth_code(&mut self, hash: &SecretHash) {
        if self.state.auth_codes.remove(hash).is_some() {
            self.touch_hash(Table::AuthCodes, *hash);
        }
    }

    pub(crate) fn put_job(&mut self, j: JobRecord) {
        self.touch(Table::Jobs, &j.id);
        self.state.jobs.insert(j.id.clone(), j);
    }

    /// Inserts or replaces a job, journalled like every mutation (for fixtures: the simulator seeds queued drive
    /// jobs at start-up; the API creates jobs through the endpoints of PROTOCOL.md §9).
    pub fn seed_job(&mut self, job: JobRecord) {
        self.put_job(job);
    }

    pub(crate) fn delete_job(&mut self, id: &str) {
        if self.state.jobs.remove(id).is_some() {
            self.touch(Table::Jobs, id);
        }
    }

    pub(crate) fn put_ticket(&mut self, t: TicketRecord) {
        self.touch_hash(Table::Tickets, t.hash);
        self.state.tickets.insert(t.hash, t);
    }

    pub(crate) fn delete_ticket(&mut self, hash: &SecretHash) {
        if self.state.tickets.remove(hash).is_some() {
            self.touch_hash(Table::Tickets, *hash);
        }
    }

    pub(crate) fn put_scan(&mut self, s: ScanRecord) {
        self.touch(Table::Scans, &s.id);
        self.state.scans.insert(s.id.clone(), s);
    }

    pub(crate) fn delete_scan(&mut self, id: &str) {
        if self.state.scans.remove(id).is_some() {
            self.touch(Table::Scans, id);
        }
    }

    /// Revokes a refresh family and every access token minted from it (RFC 7009 §2.1, RFC 9700 §4.14.2).
    pub(crate) fn revoke_family(&mut self, family_id: &str) {
        if let Some(f) = self.state.families.get_mut(family_id) {
            if !f.revoked {
                f.revoked = true;
                self.touched_family(family_id);
            }
        }
        let tokens: Vec<SecretHash> =
            self.state.access.iter().filter(|(_, a)| a.family.as_deref() == Some(family_id)).map(|(h, _)| *h).collect();
        for h in tokens {
            self.delete_access(&h);
        }
    }

    /// Revokes every token whose subject matches `pred` (device removal, session end, erasure).
    pub(crate) fn revoke_where(&mut self, pred: impl Fn(&Subject) -> bool) {
        let families: Vec<Name> =
            self.state.families.values().filter(|f| !f.revoked && pred(&f.subject)).map(|f| f.id.clone()).collect();
        for f in families {
            self.revoke_family(&f);
        }
        let tokens: Vec<SecretHash> =
            self.state.access.iter().filter(|(_, a)| pred(&a.subject)).map(|(h, _)| *h).collect();
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
                CodeState::Redeemed(r) => {
                    c.expires <= now && (now - r.at).whole_seconds() > settings::DEVICE_CODE_GRACE_SECS
                }
                // RFC 8628 §3.5: a late poll of an expired code gets `expired_token` (the client fetches a new
                // code), not `invalid_grant` (the client gives up), so expired codes are remembered for a while.
                _ => (now - c.expires).whole_seconds() >= EXPIRED_CODE_MEMORY_SECS,
            })
            .map(|(h, _)| *h)
            .collect();
        for h in codes {
            self.delete_code(&h);
        }
        let access: Vec<SecretHash> =
            self.state.access.iter().filter(|(_, a)| a.expires <= now).map(|(h, _)| *h).collect();
        for h in access {
            self.delete_access(&h);
        }
        // The queue's entries for tokens that are gone (expired, revoked) go too.
        let access = &self.state.access;
        self.access_expiry.retain(|(_, hash)| access.contains_key(hash));
        if self.access_expiry.capacity() > 2 * self.access_expiry.len() + 64 {
            self.access_expiry.shrink_to_fit();
        }
        // A hash table keeps its capacity when entries go: after a burst of refreshes (every rotation adds an access
        // token that lives 20 minutes) the swept table gives the memory back.
        if self.state.access.capacity() > 2 * self.state.access.len() + 64 {
            self.state.access.shrink_to_fit();
        }
        let auth: Vec<SecretHash> =
            self.state.auth_codes.iter().filter(|(_, a)| a.expires <= now && !a.used).map(|(h, _)| *h).collect();
        for h in auth {
            self.delete_auth_code(&h);
        }
        let tickets: Vec<SecretHash> =
            self.state.tickets.iter().filter(|(_, t)| t.expires <= now).map(|(h, _)| *h).collect();
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
        self.limits.prune(now);
        // A hash map keeps its capacity when emptied; after a wave of codes has gone, give the memory back.
        if self.user_codes.capacity() > 64 && self.user_codes.len() < self.user_codes.capacity() / 4 {
            self.user_codes.shrink_to_fit();
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
