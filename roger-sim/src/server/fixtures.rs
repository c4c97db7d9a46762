//! Tenant fixtures in TOML (DESIGN.md, roger-sim; the built-in default is `roger-sim/fixtures/default-tenant.toml`,
//! embedded as [`DEFAULT_FIXTURE`]).
//!
//! The default: tenant `acme`; admin `admin` / password `admin-pass`; users `alice` (PIN 1234, password
//! `alice-pass`, alice@acme.example) and `bob` (PIN 5678, password `bob-pass`); one queued drive job for alice
//! (`quarterly-report.pdf`); two scan profiles (`pdf-300`, `jpeg-color`); print features. MFP client ids
//! `emb-<vendor>` are accepted for any vendor name (PROTOCOL.md §3): that is the server's rule, not fixture data.
//!
//! # Format
//!
//! ```toml
//! [[tenants]]                   # one per tenant
//! id = "acme"                   # [A-Za-z0-9._-], 1..=40 characters; typed in the login form (PROTOCOL.md §4)
//! name = "ACME Corporation"
//!
//! [tenants.settings]            # optional: any TenantSettings field (PROTOCOL.md §3 "all per-tenant settings");
//! access_token_secs = 3         # absent fields inherit the server's defaults (`ServerCore::defaults`)
//! argon2 = { m_kib = 256, t = 1, p = 1 }
//!
//! [tenants.print_features]      # `GET /api/v1/print-features` (PROTOCOL.md §9); roger_proto::api::PrintFeatures
//! color_modes = ["color", "monochrome"]
//! duplex_modes = ["one_sided", "two_sided_long_edge", "two_sided_short_edge"]
//! paper_sizes = ["A4", "Letter"]
//! max_copies = 99
//! [tenants.print_features.defaults]
//! copies = 1
//! color = "monochrome"
//!
//! [[tenants.scan_profiles]]     # `GET /api/v1/scan-profiles`; roger_proto::api::ScanProfile
//! id = "pdf-300"
//! name = "PDF, 300 dpi"
//! format = "pdf"
//! dpi = 300
//! color = "monochrome"
//! duplex = true
//!
//! [[tenants.users]]             # stored as id `usr_<tenant>_<username>`, PIN and password as Argon2id (R-PWD-2)
//! username = "alice"            # [A-Za-z0-9._-], 1..=64 characters, unique in the tenant (ignoring case)
//! display_name = "Alice"        # optional
//! email = "alice@acme.example"  # optional
//! pin = "1234"                  # optional, digits only
//! password = "alice-pass"       # optional
//! admin = false                 # optional; admins approve registrations (PROTOCOL.md §5)
//!
//! [[tenants.drive_files]]       # files of the fake drive, never of the server (R-DATA-1)
//! user = "alice"                # a username of this tenant
//! folder = "Print"              # "Print" or "Scan"
//! name = "report.pdf"           # unique per user and folder; no '/'
//! content = "%PDF-1.4 ..."      # the file's bytes
//!
//! [[tenants.jobs]]              # queued drive jobs (PROTOCOL.md §9), ids `job_<n>`
//! user = "alice"
//! file = "report.pdf"           # a file of that user in the "Print" folder
//! pages = 3                     # at least 1
//! ```
//!
//! Unknown keys are errors (a typo in a fixture should not silently drop a user). [`parse`] checks every cross
//! reference and reports problems with their TOML path (`tenants[0].jobs[1].user: unknown user "carol"`);
//! [`apply`] then cannot fail half-way, except when a tenant already exists on the server (checked first).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use roger_proto::api::{ColorMode, Duplex, PrintFeatures, ScanProfile};
use roger_proto::server::model::{JobRecord, JobSource, JobState, Tenant, User};
use roger_proto::server::settings::TenantSettings;
use roger_proto::server::ServerCore;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// The built-in default fixture (`roger-sim/fixtures/default-tenant.toml`).
pub const DEFAULT_FIXTURE: &str = include_str!("../../fixtures/default-tenant.toml");

/// Longest tenant id (keeps `usr_<tenant>_<username>` a valid push id, R-PUSH-1).
pub const MAX_TENANT_ID_LEN: usize = 40;
/// Longest user name.
pub const MAX_USERNAME_LEN: usize = 64;

/// A problem with a fixture, naming where it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FixtureError {
    /// Not TOML, or a value of the wrong type, or an unknown key (the message carries line and column).
    #[error("fixture is not valid: {0}")]
    Toml(String),
    /// A value that is not acceptable.
    #[error("fixture {path}: {message}")]
    Invalid {
        /// TOML path, e.g. `tenants[0].users[2].pin`.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// Something that must be unique appears twice.
    #[error("fixture {path}: duplicate {what} {value:?}")]
    Duplicate {
        /// TOML path of the second occurrence.
        path: String,
        /// What kind of thing (`tenant id`, `username`, …).
        what: &'static str,
        /// The repeated value.
        value: String,
    },
    /// A drive file or job names a user the tenant does not have.
    #[error("fixture {path}: unknown user {user:?} in tenant {tenant:?}")]
    UnknownUser {
        /// TOML path.
        path: String,
        /// Tenant id.
        tenant: String,
        /// The username given.
        user: String,
    },
    /// A job names a file that is not in its user's "Print" folder.
    #[error("fixture {path}: no file {file:?} in the Print folder of {user:?}")]
    UnknownFile {
        /// TOML path.
        path: String,
        /// The username.
        user: String,
        /// The file name given.
        file: String,
    },
    /// [`apply`]: the server already has this tenant (e.g. restored from `--state`); nothing was changed.
    #[error("fixture {path}: tenant {tenant:?} already exists on the server")]
    TenantExists {
        /// TOML path.
        path: String,
        /// Tenant id.
        tenant: String,
    },
}

/// A parsed fixture: the tenants to create.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fixture {
    /// `[[tenants]]`.
    #[serde(default)]
    pub tenants: Vec<TenantFixture>,
}

/// One `[[tenants]]` entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantFixture {
    /// Tenant id.
    pub id: String,
    /// Display name.
    pub name: String,
    /// Overrides of the server's default [`TenantSettings`], field by field (`[tenants.settings]`).
    #[serde(default)]
    pub settings: toml::Table,
    /// `[tenants.print_features]`.
    #[serde(default)]
    pub print_features: PrintFeatures,
    /// `[[tenants.scan_profiles]]`.
    #[serde(default)]
    pub scan_profiles: Vec<ScanProfile>,
    /// `[[tenants.users]]`.
    #[serde(default)]
    pub users: Vec<UserFixture>,
    /// `[[tenants.drive_files]]` (for the fake drive).
    #[serde(default)]
    pub drive_files: Vec<DriveFileFixture>,
    /// `[[tenants.jobs]]`.
    #[serde(default)]
    pub jobs: Vec<JobFixture>,
}

/// One `[[tenants.users]]` entry. `Debug` redacts the PIN and the password (DESIGN.md: secrets print `[redacted]`).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserFixture {
    /// Login name.
    pub username: String,
    /// Display name.
    #[serde(default)]
    pub display_name: Option<String>,
    /// E-mail.
    #[serde(default)]
    pub email: Option<String>,
    /// PIN (digits), stored as Argon2id.
    #[serde(default)]
    pub pin: Option<String>,
    /// Password, stored as Argon2id.
    #[serde(default)]
    pub password: Option<String>,
    /// Tenant admin.
    #[serde(default)]
    pub admin: bool,
}

impl fmt::Debug for UserFixture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let redact = |s: &Option<String>| s.as_ref().map(|_| "[redacted]");
        f.debug_struct("UserFixture")
            .field("username", &self.username)
            .field("display_name", &self.display_name)
            .field("email", &self.email)
            .field("pin", &redact(&self.pin))
            .field("password", &redact(&self.password))
            .field("admin", &self.admin)
            .finish()
    }
}

/// A drive folder (PROTOCOL.md §9: jobs come from "Print", scans go to "Scan").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum DriveFolder {
    /// `Print`.
    Print,
    /// `Scan`.
    Scan,
}

impl DriveFolder {
    /// The folder's name (`Print`, `Scan`).
    pub fn as_str(self) -> &'static str {
        match self {
            DriveFolder::Print => "Print",
            DriveFolder::Scan => "Scan",
        }
    }
}

/// One `[[tenants.drive_files]]` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DriveFileFixture {
    /// Owner's username.
    pub user: String,
    /// Folder.
    pub folder: DriveFolder,
    /// File name.
    pub name: String,
    /// The file's bytes.
    pub content: String,
}

/// One `[[tenants.jobs]]` entry: a queued drive job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobFixture {
    /// Owner's username.
    pub user: String,
    /// The name of a drive file of that user in "Print".
    pub file: String,
    /// Page count.
    pub pages: u32,
}

/// Where fixture files go: the fake drive implements this (R-DATA-1: documents live in the drive, never in the
/// server).
pub trait FixtureDrive {
    /// Stores `bytes` as `name` in `folder` (`Print` or `Scan`) of `user_id`'s drive and returns the drive file id.
    fn put_file(&mut self, user_id: &str, folder: &str, name: &str, bytes: Vec<u8>) -> String;
}

/// The stable id of a fixture user: `usr_<tenant>_<username>`.
pub fn user_id(tenant: &str, username: &str) -> String {
    format!("usr_{tenant}_{username}")
}

/// Parses and checks a fixture (see the module documentation for the format).
pub fn parse(toml_text: &str) -> Result<Fixture, FixtureError> {
    let fixture: Fixture = toml::from_str(toml_text).map_err(|e| FixtureError::Toml(e.to_string()))?;
    validate(&fixture)?;
    Ok(fixture)
}

/// The built-in default fixture, parsed.
pub fn default_fixture() -> Result<Fixture, FixtureError> {
    parse(DEFAULT_FIXTURE)
}

/// Creates the fixture's tenants, users (Argon2id hashes at each tenant's `settings.argon2` cost), drive files
/// (through `drive`) and queued jobs (created at `now`, expiring after the tenant's `job_secs`) on `core`. Every
/// mutation is journalled by the core: commit [`ServerCore::take_changes`] afterwards.
///
/// Refuses with [`FixtureError::TenantExists`], before changing anything, if the core already has one of the
/// tenants (a server restored from its store keeps its own data).
pub fn apply(
    fixture: &Fixture,
    core: &mut ServerCore,
    now: OffsetDateTime,
    drive: &mut dyn FixtureDrive,
) -> Result<(), FixtureError> {
    validate(fixture)?;
    let mut settings = Vec::with_capacity(fixture.tenants.len());
    for (ti, t) in fixture.tenants.iter().enumerate() {
        if core.state().tenants.contains_key(&t.id) {
            return Err(FixtureError::TenantExists { path: format!("tenants[{ti}].id"), tenant: t.id.clone() });
        }
        settings.push(merge_settings(core.defaults(), &t.settings, &format!("tenants[{ti}].settings"))?);
    }
    let mut next_job = 1u64;
    for (t, settings) in fixture.tenants.iter().zip(settings) {
        core.put_tenant(Tenant {
            id: t.id.clone(),
            name: t.name.clone(),
            settings,
            print_features: t.print_features.clone(),
            scan_profiles: t.scan_profiles.clone(),
        });
        for u in &t.users {
            let pin_hash = u.pin.as_deref().map(|p| core.hash_secret(p, settings.argon2));
            let password_hash = u.password.as_deref().map(|p| core.hash_secret(p, settings.argon2));
            core.put_user(User {
                id: user_id(&t.id, &u.username),
                tenant: t.id.clone(),
                username: u.username.clone(),
                display_name: u.display_name.clone(),
                email: u.email.clone(),
                pin_hash,
                password_hash,
                admin: u.admin,
                failures: 0,
                locked_until: None,
            });
        }
        let mut files: BTreeMap<(&str, DriveFolder, &str), String> = BTreeMap::new();
        for f in &t.drive_files {
            let id =
                drive.put_file(&user_id(&t.id, &f.user), f.folder.as_str(), &f.name, f.content.as_bytes().to_vec());
            files.insert((f.user.as_str(), f.folder, f.name.as_str()), id);
        }
        let expires = now.checked_add(secs(settings.job_secs)).unwrap_or(now);
        for j in &t.jobs {
            // `validate` checked the file exists; a drive that lost it is the drive's problem at release time.
            let drive_file_id =
                files.get(&(j.user.as_str(), DriveFolder::Print, j.file.as_str())).cloned().unwrap_or_default();
            let mut id = format!("job_{next_job}");
            while core.state().jobs.contains_key(&id) {
                next_job += 1;
                id = format!("job_{next_job}");
            }
            next_job += 1;
            core.seed_job(JobRecord {
                id,
                tenant: t.id.clone(),
                user_id: user_id(&t.id, &j.user),
                file_name: j.file.clone(),
                pages: j.pages,
                source: JobSource::Drive { drive_file_id },
                state: JobState::Queued,
                created: now,
                expires,
                released_to: None,
                release_keys: BTreeMap::new(),
            });
        }
    }
    Ok(())
}

fn secs(s: u64) -> time::Duration {
    time::Duration::seconds(i64::try_from(s).unwrap_or(i64::MAX))
}

fn invalid(path: String, message: impl Into<String>) -> FixtureError {
    FixtureError::Invalid { path, message: message.into() }
}

fn is_name(s: &str, max: usize) -> bool {
    !s.is_empty() && s.len() <= max && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// `defaults` with the fields of `overrides` replaced (keys must be [`TenantSettings`] fields).
fn merge_settings(
    defaults: &TenantSettings,
    overrides: &toml::Table,
    path: &str,
) -> Result<TenantSettings, FixtureError> {
    let base = serde_json::to_value(defaults).map_err(|e| invalid(path.to_owned(), e.to_string()))?;
    let serde_json::Value::Object(mut base) = base else {
        return Err(invalid(path.to_owned(), "settings are not a table"));
    };
    for (k, v) in overrides {
        if !base.contains_key(k) {
            let known: Vec<&str> = base.keys().map(String::as_str).collect();
            return Err(invalid(
                format!("{path}.{k}"),
                format!("unknown setting; expected one of {}", known.join(", ")),
            ));
        }
        let v = serde_json::to_value(v).map_err(|e| invalid(format!("{path}.{k}"), e.to_string()))?;
        base.insert(k.clone(), v);
    }
    let merged: TenantSettings = serde_json::from_value(serde_json::Value::Object(base))
        .map_err(|e| invalid(path.to_owned(), format!("bad value: {e}")))?;
    let a = merged.argon2;
    if a.m_kib < 8 * a.p.max(1) || a.t == 0 || a.p == 0 {
        return Err(invalid(
            format!("{path}.argon2"),
            "Argon2 needs t >= 1, p >= 1 and m_kib >= 8 * p (RFC 9106 §3.1)",
        ));
    }
    Ok(merged)
}

fn validate(fixture: &Fixture) -> Result<(), FixtureError> {
    let mut tenant_ids = BTreeSet::new();
    for (ti, t) in fixture.tenants.iter().enumerate() {
        let p = format!("tenants[{ti}]");
        if !is_name(&t.id, MAX_TENANT_ID_LEN) {
            return Err(invalid(
                format!("{p}.id"),
                format!("tenant id {:?} must be 1 to {MAX_TENANT_ID_LEN} of A-Z a-z 0-9 . _ -", t.id),
            ));
        }
        if !tenant_ids.insert(t.id.as_str()) {
            return Err(FixtureError::Duplicate { path: format!("{p}.id"), what: "tenant id", value: t.id.clone() });
        }
        if t.name.trim().is_empty() {
            return Err(invalid(format!("{p}.name"), "the tenant name is empty"));
        }
        merge_settings(&TenantSettings::default(), &t.settings, &format!("{p}.settings"))?;
        validate_print_features(&t.print_features, &format!("{p}.print_features"))?;
        validate_scan_profiles(&t.scan_profiles, &p)?;
        let users = validate_users(t, &p)?;
        let unknown_user =
            |path: String, user: &str| FixtureError::UnknownUser { path, tenant: t.id.clone(), user: user.to_owned() };
        let mut files = BTreeSet::new();
        for (fi, f) in t.drive_files.iter().enumerate() {
            let fp = format!("{p}.drive_files[{fi}]");
            if !users.contains(f.user.as_str()) {
                return Err(unknown_user(format!("{fp}.user"), &f.user));
            }
            if f.name.trim().is_empty() || f.name.contains(['/', '\\']) || f.name.chars().any(char::is_control) {
                return Err(invalid(
                    format!("{fp}.name"),
                    format!("file name {:?} is empty or not a plain name", f.name),
                ));
            }
            if !files.insert((f.user.as_str(), f.folder, f.name.as_str())) {
                return Err(FixtureError::Duplicate {
                    path: format!("{fp}.name"),
                    what: "drive file",
                    value: format!("{}/{}/{}", f.user, f.folder.as_str(), f.name),
                });
            }
        }
        for (ji, j) in t.jobs.iter().enumerate() {
            let jp = format!("{p}.jobs[{ji}]");
            if !users.contains(j.user.as_str()) {
                return Err(unknown_user(format!("{jp}.user"), &j.user));
            }
            if !files.contains(&(j.user.as_str(), DriveFolder::Print, j.file.as_str())) {
                return Err(FixtureError::UnknownFile {
                    path: format!("{jp}.file"),
                    user: j.user.clone(),
                    file: j.file.clone(),
                });
            }
            if j.pages == 0 {
                return Err(invalid(format!("{jp}.pages"), "a job has at least one page"));
            }
        }
    }
    Ok(())
}

fn validate_users<'a>(t: &'a TenantFixture, p: &str) -> Result<BTreeSet<&'a str>, FixtureError> {
    let mut names = BTreeSet::new();
    let mut folded = BTreeSet::new();
    for (ui, u) in t.users.iter().enumerate() {
        let up = format!("{p}.users[{ui}]");
        if !is_name(&u.username, MAX_USERNAME_LEN) {
            return Err(invalid(
                format!("{up}.username"),
                format!("username {:?} must be 1 to {MAX_USERNAME_LEN} of A-Z a-z 0-9 . _ -", u.username),
            ));
        }
        if !folded.insert(u.username.to_ascii_lowercase()) {
            return Err(FixtureError::Duplicate {
                path: format!("{up}.username"),
                what: "username",
                value: u.username.clone(),
            });
        }
        names.insert(u.username.as_str());
        if let Some(pin) = &u.pin {
            if pin.is_empty() || pin.len() > 32 || !pin.bytes().all(|b| b.is_ascii_digit()) {
                return Err(invalid(format!("{up}.pin"), "a PIN is 1 to 32 digits"));
            }
        }
        if u.password.as_deref().is_some_and(str::is_empty) {
            return Err(invalid(format!("{up}.password"), "the password is empty (leave it out instead)"));
        }
        if u.email.as_deref().is_some_and(|e| !e.contains('@')) {
            return Err(invalid(format!("{up}.email"), "not an e-mail address"));
        }
    }
    Ok(names)
}

fn validate_print_features(f: &PrintFeatures, p: &str) -> Result<(), FixtureError> {
    if f.color_modes.contains(&ColorMode::Unknown) {
        return Err(invalid(format!("{p}.color_modes"), "colour modes are \"color\" and \"monochrome\""));
    }
    if f.duplex_modes.contains(&Duplex::Unknown) {
        return Err(invalid(
            format!("{p}.duplex_modes"),
            "duplex modes are \"one_sided\", \"two_sided_long_edge\" and \"two_sided_short_edge\"",
        ));
    }
    if f.paper_sizes.iter().any(|s| s.trim().is_empty()) {
        return Err(invalid(format!("{p}.paper_sizes"), "a paper size name is empty"));
    }
    if f.max_copies == Some(0) {
        return Err(invalid(format!("{p}.max_copies"), "at least 1"));
    }
    let d = &f.defaults;
    let dp = format!("{p}.defaults");
    if d.copies == Some(0) || matches!((d.copies, f.max_copies), (Some(c), Some(m)) if c > m) {
        return Err(invalid(format!("{dp}.copies"), "between 1 and max_copies"));
    }
    if let Some(c) = d.color {
        if c == ColorMode::Unknown || (!f.color_modes.is_empty() && !f.color_modes.contains(&c)) {
            return Err(invalid(format!("{dp}.color"), "not one of color_modes"));
        }
    }
    if let Some(x) = d.duplex {
        if x == Duplex::Unknown || (!f.duplex_modes.is_empty() && !f.duplex_modes.contains(&x)) {
            return Err(invalid(format!("{dp}.duplex"), "not one of duplex_modes"));
        }
    }
    if let Some(s) = &d.paper_size {
        if !f.paper_sizes.is_empty() && !f.paper_sizes.contains(s) {
            return Err(invalid(format!("{dp}.paper_size"), "not one of paper_sizes"));
        }
    }
    Ok(())
}

fn validate_scan_profiles(profiles: &[ScanProfile], p: &str) -> Result<(), FixtureError> {
    let mut ids = BTreeSet::new();
    for (si, s) in profiles.iter().enumerate() {
        let sp = format!("{p}.scan_profiles[{si}]");
        if !is_name(&s.id, 128) {
            return Err(invalid(
                format!("{sp}.id"),
                format!("profile id {:?} must be 1 to 128 of A-Z a-z 0-9 . _ -", s.id),
            ));
        }
        if !ids.insert(s.id.as_str()) {
            return Err(FixtureError::Duplicate {
                path: format!("{sp}.id"),
                what: "scan profile id",
                value: s.id.clone(),
            });
        }
        if s.name.trim().is_empty() {
            return Err(invalid(format!("{sp}.name"), "the profile name is empty"));
        }
        if s.color == Some(ColorMode::Unknown) {
            return Err(invalid(format!("{sp}.color"), "colour modes are \"color\" and \"monochrome\""));
        }
        if s.dpi == Some(0) {
            return Err(invalid(format!("{sp}.dpi"), "at least 1"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use roger_proto::server::mint::Minter;

    #[derive(Default)]
    struct Drive {
        files: Vec<(String, String, String, Vec<u8>)>,
    }

    impl FixtureDrive for Drive {
        fn put_file(&mut self, user_id: &str, folder: &str, name: &str, bytes: Vec<u8>) -> String {
            self.files.push((user_id.into(), folder.into(), name.into(), bytes));
            format!("file_{}", self.files.len())
        }
    }

    fn core() -> ServerCore {
        ServerCore::new(
            "https://127.0.0.1:1",
            TenantSettings::default(),
            Minter::new(Box::new(rand::rngs::StdRng::seed_from_u64(1))),
        )
    }

    fn t0() -> OffsetDateTime {
        time::macros::datetime!(2026-11-26 12:00 UTC)
    }

    fn err(toml: &str) -> FixtureError {
        parse(toml).expect_err("must be refused")
    }

    #[test]
    fn default_fixture_parses() {
        let f = default_fixture().expect("default fixture");
        assert_eq!(f.tenants.len(), 1);
        let t = &f.tenants[0];
        assert_eq!(t.id, "acme");
        let names: Vec<&str> = t.users.iter().map(|u| u.username.as_str()).collect();
        assert_eq!(names, ["admin", "alice", "bob"]);
        assert!(t.users[0].admin && !t.users[1].admin);
        assert_eq!(t.users[1].pin.as_deref(), Some("1234"));
        assert_eq!(t.users[1].email.as_deref(), Some("alice@acme.example"));
        assert_eq!(t.users[2].password.as_deref(), Some("bob-pass"));
        assert_eq!(t.scan_profiles.len(), 2);
        assert_eq!(t.jobs.len(), 1);
        assert!(t.drive_files[0].content.starts_with("%PDF-1.4"), "{:?}", &t.drive_files[0].content[..10]);
        assert_eq!(t.print_features.paper_sizes, ["A4", "Letter"]);
        assert_eq!(t.print_features.color_modes, [ColorMode::Color, ColorMode::Monochrome]);
        assert!(t.settings.is_empty());
    }

    /// The default tenant lands in the core: users with Argon2id hashes that verify, the job, profiles, features.
    #[test]
    fn default_fixture_applies() {
        let f = default_fixture().expect("default fixture");
        let mut c = core();
        let mut drive = Drive::default();
        apply(&f, &mut c, t0(), &mut drive).expect("apply");
        let s = c.state();
        let acme = s.tenants.get("acme").expect("tenant");
        assert_eq!(acme.scan_profiles.iter().map(|p| p.id.as_str()).collect::<Vec<_>>(), ["pdf-300", "jpeg-color"]);
        assert_eq!(acme.print_features.max_copies, Some(99));
        assert_eq!(acme.settings, TenantSettings::default());
        let alice = s.users.get("usr_acme_alice").expect("alice");
        assert_eq!(alice.tenant, "acme");
        assert_eq!(alice.email.as_deref(), Some("alice@acme.example"));
        let pin = alice.pin_hash.as_deref().expect("pin hash");
        assert!(pin.starts_with("$argon2id$v=19$m=256,t=1,p=1$"), "{pin}");
        assert!(!pin.contains("1234"));
        assert!(alice.password_hash.as_deref().is_some_and(|h| h.starts_with("$argon2id$")));
        let admin = s.users.get("usr_acme_admin").expect("admin");
        assert!(admin.admin && admin.pin_hash.is_none());
        assert!(s.users.contains_key("usr_acme_bob"));

        assert_eq!(s.jobs.len(), 1);
        let job = s.jobs.get("job_1").expect("job_1");
        assert_eq!(job.user_id, "usr_acme_alice");
        assert_eq!(job.file_name, "quarterly-report.pdf");
        assert_eq!(job.pages, 3);
        assert_eq!(job.state, JobState::Queued);
        assert_eq!(job.expires - job.created, time::Duration::days(7));
        assert_eq!(job.source, JobSource::Drive { drive_file_id: "file_1".into() });

        let pin = pin.to_owned();
        assert_eq!(drive.files.len(), 2);
        assert_eq!(drive.files[0].0, "usr_acme_alice");
        assert_eq!(drive.files[0].1, "Print");
        assert_eq!(drive.files[0].2, "quarterly-report.pdf");
        assert!(drive.files[0].3.starts_with(b"%PDF-1.4"));

        let changes = c.take_changes();
        assert_eq!(changes.len(), 1 + 3 + 1, "tenant, users, job are journalled");

        // The hashes verify through the core: alice's PIN and password, the admin's password, bob's PIN.
        assert!(login(&mut c, "alice", "alice-pass"));
        assert!(login(&mut c, "admin", "admin-pass"));
        assert!(!login(&mut c, "alice", "bob-pass"));
        assert!(verify(&mut c, &pin, "1234"));
        assert!(!verify(&mut c, &pin, "5678"));
        let bob_pin = c.state().users.get("usr_acme_bob").and_then(|u| u.pin_hash.clone()).unwrap_or_default();
        assert!(verify(&mut c, &bob_pin, "5678"));
        c.take_changes();

        // A second application (a restored server) is refused without changes.
        let e = apply(&f, &mut c, t0(), &mut drive).expect_err("exists");
        assert!(matches!(e, FixtureError::TenantExists { .. }), "{e}");
        assert!(c.take_changes().is_empty());
    }

    /// Whether `password` logs `username` in through the core's app login (PROTOCOL.md §4).
    fn login(c: &mut ServerCore, username: &str, password: &str) -> bool {
        use roger_proto::authorize::{AuthorizationRequest, LoginForm};
        use roger_proto::secret::{CsrfToken, Password, PkceVerifier};
        let verifier = PkceVerifier::new("v".repeat(43));
        let form = LoginForm {
            request: AuthorizationRequest::for_app("roger-mobile", "roger://callback", &verifier, "st"),
            tenant: "acme".into(),
            username: username.into(),
            password: Password::new(password),
            csrf: CsrfToken::new("csrf"),
        };
        c.app_login(t0(), &form).is_ok()
    }

    /// Whether `secret` matches the PHC string `hash`, checked by the core: a probe user whose password hash is
    /// `hash` logs in.
    fn verify(c: &mut ServerCore, hash: &str, secret: &str) -> bool {
        let probe = User {
            id: "usr_acme_probe".into(),
            tenant: "acme".into(),
            username: "probe".into(),
            display_name: None,
            email: None,
            pin_hash: None,
            password_hash: Some(hash.to_owned()),
            admin: false,
            failures: 0,
            locked_until: None,
        };
        c.put_user(probe);
        login(c, "probe", secret)
    }

    /// Settings override the server defaults field by field; the cost is used for the hashes.
    #[test]
    fn settings_override_defaults() {
        let f = parse(
            r#"
            [[tenants]]
            id = "fast"
            name = "Fast"
            [tenants.settings]
            access_token_secs = 3
            argon2 = { m_kib = 64, t = 1, p = 1 }
            [[tenants.users]]
            username = "u"
            pin = "1"
            "#,
        )
        .expect("parse");
        let mut c = core();
        c.set_settings(TenantSettings { interval_secs: 1, ..TenantSettings::default() });
        apply(&f, &mut c, t0(), &mut Drive::default()).expect("apply");
        let s = c.settings("fast");
        assert_eq!(s.access_token_secs, 3);
        assert_eq!(s.interval_secs, 1, "inherited from the server defaults");
        let h = c.state().users.get("usr_fast_u").and_then(|u| u.pin_hash.clone()).unwrap_or_default();
        assert!(h.starts_with("$argon2id$v=19$m=64,t=1,p=1$"), "{h}");
    }

    #[test]
    fn bad_toml_is_an_error() {
        assert!(matches!(err("[[tenants]\nid = "), FixtureError::Toml(_)));
        // Wrong type.
        assert!(matches!(err("[[tenants]]\nid = 1\nname = \"x\""), FixtureError::Toml(_)));
        // Typo in a key.
        let e = err("[[tenants]]\nid = \"a\"\nname = \"A\"\n[[tenants.users]]\nusername = \"u\"\npasword = \"x\"");
        assert!(e.to_string().contains("pasword"), "{e}");
        // Unknown setting and unknown folder.
        let e = err("[[tenants]]\nid = \"a\"\nname = \"A\"\n[tenants.settings]\naccess_token = 3");
        assert!(matches!(&e, FixtureError::Invalid { path, .. } if path == "tenants[0].settings.access_token"), "{e}");
        let e = err("[[tenants]]\nid = \"a\"\nname = \"A\"\n[tenants.settings]\naccess_token_secs = \"soon\"");
        assert!(matches!(&e, FixtureError::Invalid { path, .. } if path == "tenants[0].settings"), "{e}");
        assert!(matches!(
            err(concat!(
                "[[tenants]]\nid=\"a\"\nname=\"A\"\n[[tenants.users]]\nusername=\"u\"\n",
                "[[tenants.drive_files]]\nuser=\"u\"\nfolder=\"Inbox\"\nname=\"x\"\ncontent=\"\""
            )),
            FixtureError::Toml(_)
        ));
        assert!(matches!(
            err("[[tenants]]\nid=\"a\"\nname=\"A\"\n[tenants.print_features]\ncolor_modes=[\"sepia\"]"),
            FixtureError::Invalid { .. }
        ));
    }

    #[test]
    fn job_for_unknown_user_is_an_error() {
        let e = err(r#"
            [[tenants]]
            id = "a"
            name = "A"
            [[tenants.users]]
            username = "alice"
            [[tenants.drive_files]]
            user = "alice"
            folder = "Print"
            name = "r.pdf"
            content = "%PDF-1.4"
            [[tenants.jobs]]
            user = "alice"
            file = "r.pdf"
            pages = 1
            [[tenants.jobs]]
            user = "carol"
            file = "r.pdf"
            pages = 1
            "#);
        assert_eq!(
            e,
            FixtureError::UnknownUser {
                path: "tenants[0].jobs[1].user".into(),
                tenant: "a".into(),
                user: "carol".into()
            }
        );
        assert_eq!(e.to_string(), "fixture tenants[0].jobs[1].user: unknown user \"carol\" in tenant \"a\"");
    }

    #[test]
    fn job_for_missing_file_is_an_error() {
        let e = err(r#"
            [[tenants]]
            id = "a"
            name = "A"
            [[tenants.users]]
            username = "alice"
            [[tenants.drive_files]]
            user = "alice"
            folder = "Scan"
            name = "r.pdf"
            content = ""
            [[tenants.jobs]]
            user = "alice"
            file = "r.pdf"
            pages = 1
            "#);
        assert!(matches!(&e, FixtureError::UnknownFile { path, .. } if path == "tenants[0].jobs[0].file"), "{e}");
    }

    #[test]
    fn duplicates_are_errors() {
        let e = err(concat!(
            "[[tenants]]\nid=\"a\"\nname=\"A\"\n",
            "[[tenants.users]]\nusername=\"bob\"\n[[tenants.users]]\nusername=\"Bob\""
        ));
        assert_eq!(
            e,
            FixtureError::Duplicate {
                path: "tenants[0].users[1].username".into(),
                what: "username",
                value: "Bob".into()
            }
        );
        let e = err("[[tenants]]\nid=\"a\"\nname=\"A\"\n[[tenants]]\nid=\"a\"\nname=\"B\"");
        assert!(matches!(e, FixtureError::Duplicate { what: "tenant id", .. }), "{e}");
        let e = err(concat!(
            "[[tenants]]\nid=\"a\"\nname=\"A\"\n",
            "[[tenants.scan_profiles]]\nid=\"p\"\nname=\"P\"\n[[tenants.scan_profiles]]\nid=\"p\"\nname=\"Q\""
        ));
        assert!(matches!(e, FixtureError::Duplicate { what: "scan profile id", .. }), "{e}");
    }

    #[test]
    fn bad_values_are_errors() {
        for (toml, path) in [
            ("[[tenants]]\nid=\"a b\"\nname=\"A\"", "tenants[0].id"),
            ("[[tenants]]\nid=\"a\"\nname=\" \"", "tenants[0].name"),
            (
                "[[tenants]]\nid=\"a\"\nname=\"A\"\n[[tenants.users]]\nusername=\"u\"\npin=\"12a4\"",
                "tenants[0].users[0].pin",
            ),
            ("[[tenants]]\nid=\"a\"\nname=\"A\"\n[[tenants.users]]\nusername=\"u/x\"", "tenants[0].users[0].username"),
            (
                "[[tenants]]\nid=\"a\"\nname=\"A\"\n[tenants.settings]\nargon2={m_kib=0,t=0,p=0}",
                "tenants[0].settings.argon2",
            ),
        ] {
            let e = err(toml);
            assert!(matches!(&e, FixtureError::Invalid { path: p, .. } if p == path), "{toml}: {e}");
        }
    }

    #[test]
    fn debug_redacts_secrets() {
        let f = default_fixture().expect("default");
        let dbg = format!("{f:?}");
        assert!(!dbg.contains("alice-pass") && !dbg.contains("1234"), "{dbg}");
        assert!(dbg.contains("[redacted]"));
    }
}
