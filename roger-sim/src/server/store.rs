//! Persistence of the server core's records (DESIGN.md, roger-sim: "state behind a store trait (in-memory default,
//! optional file/SQLite persistence so a restart loses no registration)").
//!
//! `--state PATH` keeps tenants, devices, refresh-token families, codes and jobs (every table of
//! [`roger_proto::server::State`]) across restarts in SQLite; without it the server runs in memory ([`Store::Memory`]).
//!
//! The core journals every mutation as a [`Change`]; after each request the front end takes the journal and
//! [`Store::commit`]s it in **one** transaction before it answers (`roger_proto::server` module docs). The database
//! runs with `journal_mode=WAL` and `synchronous=FULL`, so a committed transaction survives SIGKILL and power loss,
//! and an interrupted one leaves no trace. A server killed in the middle of a refresh or a release and started again
//! therefore loses no registration, never un-rotates a refresh token (R-TOK-3: the rotation was committed before
//! the new token left the server, or the old token is still current), and never releases a job twice (the
//! `released` state and its idempotency key were committed before the document URL left).
//!
//! Layout: one table per [`Table`] (`CREATE TABLE <name> (key TEXT PRIMARY KEY, value TEXT NOT NULL)`, the value the
//! record's JSON) plus `meta (key, value)` for the server's own settings ([`META_CLOCK_OFFSET`], [`META_SEED`], and
//! [`META_SCHEMA_VERSION`]). One writer per file: the server holds the store behind its core's lock.
//!
//! [`SqliteStore::commit`] blocks on `fsync`; call it from `tokio::task::spawn_blocking` or accept a short stall on
//! the runtime thread (a commit is a few small rows).

use std::path::{Path, PathBuf};
use std::time::Duration;

use roger_proto::server::{Change, State, Table};
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// `meta` key of the schema version this build writes and reads.
pub const META_SCHEMA_VERSION: &str = "schema_version";
/// `meta` key of the virtual clock's offset ([`Store::clock_offset`]).
pub const META_CLOCK_OFFSET: &str = "clock_offset_nanos";
/// `meta` key of the server's seed (the fault and CSPRNG seed printed in reports, DESIGN.md "the seed goes into
/// every report").
pub const META_SEED: &str = "seed";
/// `meta` key of how often a server started on this file (a seeded restart derives a fresh random stream from it).
pub const META_STARTS: &str = "starts";
/// The schema version. 2: refresh families carry the hash of their family handle and no list of retired token
/// hashes (docs/protocol.md C12); a version-1 file is refused ([`StoreError::Schema`]) rather than read into
/// families no refresh token could reach.
pub const SCHEMA_VERSION: &str = "2";

/// How long a write waits for another connection's lock before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The state file could not be opened or set up.
    #[error("state file {path}: {source}")]
    Open {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: rusqlite::Error,
    },
    /// A database operation failed (the transaction was rolled back).
    #[error("state store: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// A stored row is not a valid record (the file was edited, or written by an incompatible build).
    #[error("state store: row {key:?} of table {table} is not a valid record: {reason}")]
    Corrupt {
        /// The table.
        table: &'static str,
        /// The row's key.
        key: String,
        /// What failed to parse.
        reason: String,
    },
    /// The file was written by a build with another schema.
    #[error("state file {path} has schema version {found}; this build reads version {SCHEMA_VERSION}")]
    Schema {
        /// The file.
        path: PathBuf,
        /// The version found.
        found: String,
    },
    /// A record could not be serialised.
    #[error("state store: cannot serialise a {table} record: {reason}")]
    Serialise {
        /// The table.
        table: &'static str,
        /// Why.
        reason: String,
    },
}

/// A SQLite state file (`--state PATH`).
#[derive(Debug)]
pub struct SqliteStore {
    path: PathBuf,
    conn: Connection,
}

impl SqliteStore {
    /// Opens (or creates) the state file at `path`: WAL journal, `synchronous=FULL`, one table per [`Table`] and the
    /// `meta` table. Refuses a file of another schema version.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        let path = path.as_ref().to_owned();
        let open_err = |source| StoreError::Open { path: path.clone(), source };
        create_private(&path);
        let mut conn = Connection::open(&path).map_err(open_err)?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(open_err)?;
        let mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0)).map_err(open_err)?;
        if !mode.eq_ignore_ascii_case("wal") && !mode.eq_ignore_ascii_case("memory") {
            // The rollback journal with synchronous=FULL is just as atomic and durable, only slower.
            tracing::warn!(path = %path.display(), %mode, "SQLite WAL mode unavailable; using the rollback journal");
        }
        conn.pragma_update(None, "synchronous", "FULL").map_err(open_err)?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(open_err)?;
        for table in Table::ALL {
            tx.execute_batch(&format!(
                "CREATE TABLE IF NOT EXISTS {} (key TEXT PRIMARY KEY NOT NULL, value TEXT NOT NULL)",
                table.name()
            ))
            .map_err(open_err)?;
        }
        tx.execute_batch("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY NOT NULL, value TEXT NOT NULL)")
            .map_err(open_err)?;
        let version: Option<String> = tx
            .query_row("SELECT value FROM meta WHERE key = ?1", [META_SCHEMA_VERSION], |r| r.get(0))
            .optional()
            .map_err(open_err)?;
        match version {
            None => {
                tx.execute("INSERT INTO meta (key, value) VALUES (?1, ?2)", [META_SCHEMA_VERSION, SCHEMA_VERSION])
                    .map_err(open_err)?;
            }
            Some(v) if v == SCHEMA_VERSION => {}
            Some(found) => return Err(StoreError::Schema { path, found }),
        }
        tx.commit().map_err(open_err)?;
        Ok(Self { path, conn })
    }

    /// The state file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads every row into the typed tables of a [`State`]. A row that does not parse is reported with its table
    /// and key ([`StoreError::Corrupt`]).
    pub fn load(&self) -> Result<State, StoreError> {
        let mut state = State::default();
        for table in Table::ALL {
            // Exhaustive: a new table in roger-proto fails to compile here until it is persisted.
            match table {
                Table::Tenants => state.tenants = self.load_table(table)?,
                Table::Users => state.users = self.load_table(table)?,
                Table::Devices => state.devices = self.load_table(table)?,
                Table::Codes => state.codes = self.load_table(table)?,
                Table::Access => state.access = self.load_table(table)?,
                Table::Families => state.families = self.load_table(table)?,
                Table::AuthCodes => state.auth_codes = self.load_table(table)?,
                Table::Jobs => state.jobs = self.load_table(table)?,
                Table::Tickets => state.tickets = self.load_table(table)?,
                Table::Scans => state.scans = self.load_table(table)?,
            }
        }
        Ok(state)
    }

    fn load_table<K, V, M>(&self, table: Table) -> Result<M, StoreError>
    where
        K: DeserializeOwned,
        V: DeserializeOwned,
        M: Default + Extend<(K, V)>,
    {
        let name = table.name();
        let mut stmt = self.conn.prepare(&format!("SELECT key, value FROM {name} ORDER BY key"))?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
        let mut out = M::default();
        for row in rows {
            let (key, value) = row?;
            let corrupt = |reason: String| StoreError::Corrupt { table: name, key: key.clone(), reason };
            let k: K = serde_json::from_value(serde_json::Value::String(key.clone()))
                .map_err(|e| corrupt(format!("bad key: {e}")))?;
            let v: V = serde_json::from_str(&value).map_err(|e| corrupt(e.to_string()))?;
            out.extend([(k, v)]);
        }
        Ok(out)
    }

    /// Applies `changes` in order (upserts and deletions) in one transaction, committed (and synced) before it
    /// returns. On error nothing of `changes` is stored.
    pub fn commit(&mut self, changes: &[Change]) -> Result<(), StoreError> {
        self.commit_with_meta(changes, &[])
    }

    /// Like [`commit`](Self::commit), and also sets `meta` entries in the same transaction (e.g. the clock offset
    /// with the sweep that followed a clock advance).
    pub fn commit_with_meta(&mut self, changes: &[Change], meta: &[(&str, &str)]) -> Result<(), StoreError> {
        if changes.is_empty() && meta.is_empty() {
            return Ok(());
        }
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        for c in changes {
            let name = c.table.name();
            match &c.value {
                Some(json) => {
                    tx.prepare_cached(&format!(
                        "INSERT INTO {name} (key, value) VALUES (?1, ?2) \
                         ON CONFLICT(key) DO UPDATE SET value = excluded.value"
                    ))?
                    .execute(params![c.key, json])?;
                }
                None => {
                    tx.prepare_cached(&format!("DELETE FROM {name} WHERE key = ?1"))?.execute(params![c.key])?;
                }
            }
        }
        for (k, v) in meta {
            put_meta_in(&tx, k, v)?;
        }
        tx.commit()?;
        Ok(())
    }

    /// A `meta` value.
    pub fn get_meta(&self, key: &str) -> Result<Option<String>, StoreError> {
        Ok(self.conn.query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0)).optional()?)
    }

    /// Sets a `meta` value (committed before it returns).
    pub fn put_meta(&mut self, key: &str, value: &str) -> Result<(), StoreError> {
        self.commit_with_meta(&[], &[(key, value)])
    }
}

/// Creates the state file's directory and the file itself with mode 0600 if it does not exist yet: it holds
/// Argon2id hashes and token hashes (R-DATA-2), and SQLite gives its `-wal` and `-shm` files the same mode. Best
/// effort: if this fails, opening the database reports the problem with the path.
fn create_private(path: &Path) {
    if path.exists() {
        return;
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        let _ = std::fs::create_dir_all(dir);
    }
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let _ = opts.open(path);
}

fn put_meta_in(conn: &Connection, key: &str, value: &str) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO meta (key, value) VALUES (?1, ?2) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
    )?
    .execute(params![key, value])?;
    Ok(())
}

/// The server's store: in memory (the default), or a SQLite state file. The server calls this one type.
#[derive(Debug)]
pub enum Store {
    /// No persistence: `commit` is a no-op, `load` gives an empty [`State`], `meta` is empty.
    Memory,
    /// A SQLite state file.
    Sqlite(SqliteStore),
}

impl Store {
    /// [`Store::Sqlite`] at `path` if given, else [`Store::Memory`].
    pub fn open(path: Option<&Path>) -> Result<Self, StoreError> {
        match path {
            Some(p) => Ok(Store::Sqlite(SqliteStore::open(p)?)),
            None => Ok(Store::Memory),
        }
    }

    /// Whether records survive a restart.
    pub fn is_persistent(&self) -> bool {
        matches!(self, Store::Sqlite(_))
    }

    /// The state file, if any.
    pub fn path(&self) -> Option<&Path> {
        match self {
            Store::Memory => None,
            Store::Sqlite(s) => Some(s.path()),
        }
    }

    /// Everything stored (empty in memory). See [`SqliteStore::load`].
    pub fn load(&self) -> Result<State, StoreError> {
        match self {
            Store::Memory => Ok(State::default()),
            Store::Sqlite(s) => s.load(),
        }
    }

    /// Commits `changes` in one transaction before returning. See [`SqliteStore::commit`].
    pub fn commit(&mut self, changes: &[Change]) -> Result<(), StoreError> {
        match self {
            Store::Memory => Ok(()),
            Store::Sqlite(s) => s.commit(changes),
        }
    }

    /// Commits `changes` and `meta` entries in one transaction. See [`SqliteStore::commit_with_meta`].
    pub fn commit_with_meta(&mut self, changes: &[Change], meta: &[(&str, &str)]) -> Result<(), StoreError> {
        match self {
            Store::Memory => Ok(()),
            Store::Sqlite(s) => s.commit_with_meta(changes, meta),
        }
    }

    /// A `meta` value (`None` in memory).
    pub fn get_meta(&self, key: &str) -> Result<Option<String>, StoreError> {
        match self {
            Store::Memory => Ok(None),
            Store::Sqlite(s) => s.get_meta(key),
        }
    }

    /// Sets a `meta` value (a no-op in memory).
    pub fn put_meta(&mut self, key: &str, value: &str) -> Result<(), StoreError> {
        match self {
            Store::Memory => Ok(()),
            Store::Sqlite(s) => s.put_meta(key, value),
        }
    }

    /// The persisted virtual-clock offset ([`META_CLOCK_OFFSET`], in nanoseconds), zero if none; start the clock
    /// with `VirtualClock::starting_at_offset` so virtual time never runs backwards across a restart.
    pub fn clock_offset(&self) -> Result<Duration, StoreError> {
        match self.get_meta(META_CLOCK_OFFSET)? {
            None => Ok(Duration::ZERO),
            Some(v) => v.parse::<u64>().map(Duration::from_nanos).map_err(|e| StoreError::Corrupt {
                table: "meta",
                key: META_CLOCK_OFFSET.to_owned(),
                reason: e.to_string(),
            }),
        }
    }

    /// Persists the virtual-clock offset (saturating at about 584 years).
    pub fn set_clock_offset(&mut self, offset: Duration) -> Result<(), StoreError> {
        let nanos = u64::try_from(offset.as_nanos()).unwrap_or(u64::MAX);
        self.put_meta(META_CLOCK_OFFSET, &nanos.to_string())
    }
}

/// Every record of `state` as upserts, table by table (to write a whole state into a fresh store, e.g. after
/// applying fixtures to a core that had no journal consumer).
pub fn snapshot(state: &State) -> Result<Vec<Change>, StoreError> {
    fn rows<'a, K: AsKey + 'a, V: Serialize + 'a>(
        out: &mut Vec<Change>,
        table: Table,
        map: impl IntoIterator<Item = (&'a K, &'a V)>,
    ) -> Result<(), StoreError> {
        for (k, v) in map {
            let value = serde_json::to_string(v)
                .map_err(|e| StoreError::Serialise { table: table.name(), reason: e.to_string() })?;
            out.push(Change { table, key: k.as_key(), value: Some(value) });
        }
        Ok(())
    }
    let mut out = Vec::new();
    for table in Table::ALL {
        match table {
            Table::Tenants => rows(&mut out, table, &state.tenants)?,
            Table::Users => rows(&mut out, table, &state.users)?,
            Table::Devices => rows(&mut out, table, &state.devices)?,
            Table::Codes => rows(&mut out, table, &state.codes)?,
            Table::Access => rows(&mut out, table, &state.access)?,
            Table::Families => rows(&mut out, table, &state.families)?,
            Table::AuthCodes => rows(&mut out, table, &state.auth_codes)?,
            Table::Jobs => rows(&mut out, table, &state.jobs)?,
            Table::Tickets => rows(&mut out, table, &state.tickets)?,
            Table::Scans => rows(&mut out, table, &state.scans)?,
        }
    }
    Ok(out)
}

/// A map key as the store's `key` column.
trait AsKey {
    fn as_key(&self) -> String;
}

impl AsKey for String {
    fn as_key(&self) -> String {
        self.clone()
    }
}

impl AsKey for roger_proto::server::model::Name {
    fn as_key(&self) -> String {
        self.to_string()
    }
}

impl AsKey for roger_proto::server::mint::SecretHash {
    fn as_key(&self) -> String {
        self.to_hex()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::TempDir;
    use roger_proto::server::mint::SecretHash;
    use roger_proto::server::model::*;
    use roger_proto::server::settings::TenantSettings;
    use time::OffsetDateTime;

    /// The state file inside a test's own directory.
    fn db(d: &TempDir) -> PathBuf {
        d.path().join("state.sqlite")
    }

    fn t0() -> OffsetDateTime {
        time::macros::datetime!(2026-11-26 12:00 UTC)
    }

    fn put<T: Serialize>(table: Table, key: &str, v: &T) -> Change {
        Change { table, key: key.to_owned(), value: Some(serde_json::to_string(v).expect("json")) }
    }

    fn del(table: Table, key: &str) -> Change {
        Change { table, key: key.to_owned(), value: None }
    }

    fn job(id: &str, state: JobState) -> JobRecord {
        JobRecord {
            id: id.into(),
            tenant: "acme".into(),
            user_id: "usr_acme_alice".into(),
            file_name: "quarterly-report.pdf".into(),
            pages: 3,
            source: JobSource::Drive { drive_file_id: "file_1".into() },
            state,
            created: t0(),
            expires: t0() + time::Duration::days(7),
            released_to: None,
            release_keys: std::collections::BTreeMap::new(),
        }
    }

    /// A state with a tenant, a registered device, its refresh family and access token, a pending code and a job.
    fn sample() -> State {
        let mut s = State::default();
        s.tenants.insert(
            "acme".into(),
            Tenant {
                id: "acme".into(),
                name: "ACME".into(),
                settings: TenantSettings::default(),
                print_features: Default::default(),
                scan_profiles: Vec::new(),
            },
        );
        s.devices.insert(
            "dev_1".into(),
            Box::new(Device {
                id: "dev_1".into(),
                tenant: "acme".into(),
                client_id: "emb-acme".into(),
                model: Some("MX-1".into()),
                serial: Some("SN-1".into()),
                job_url: None,
                created: t0(),
            }),
        );
        let subject = Subject::Device { device_id: "dev_1".into() };
        let current = SecretHash::of("rrt_current");
        s.families.insert(
            "fam_1".into(),
            Box::new(RefreshFamily {
                id: "fam_1".into(),
                client_id: "emb-acme".into(),
                tenant: "acme".into(),
                subject: subject.clone(),
                scope: "roger.device".into(),
                handle: SecretHash::of("family-handle-000001"),
                current,
                previous: Some(SecretHash::of("rrt_previous")),
                previous_until: Some(t0()),
                expires: t0() + time::Duration::days(90),
                revoked: false,
            }),
        );
        let at = SecretHash::of("rat_1");
        s.access.insert(
            at,
            Box::new(AccessRecord {
                hash: at,
                client_id: "emb-acme".into(),
                tenant: "acme".into(),
                subject,
                scope: "roger.device".into(),
                expires: t0() + time::Duration::minutes(20),
                family: Some("fam_1".into()),
            }),
        );
        let dc = SecretHash::of("rdc_1");
        s.codes.insert(
            dc,
            Box::new(DeviceCodeRecord {
                hash: dc,
                user_code: WireUserCode::new("BCDFGHJK").expect("wire form"),
                kind: CodeKind::Registration,
                client_id: "emb-acme".into(),
                scope: "roger.device".into(),
                device_id: None,
                tenant: None,
                model: Some("MX-1".into()),
                serial: None,
                request_id: "req_1".into(),
                created: t0(),
                expires: t0() + time::Duration::minutes(10),
                interval: 5,
                last_poll: None,
                state: CodeState::Pending,
            }),
        );
        s.jobs.insert("job_1".into(), job("job_1", JobState::Queued));
        s
    }

    #[test]
    fn round_trip_through_commit_and_load() {
        let d = TempDir::new("store");
        let state = sample();
        let mut store = Store::open(Some(&db(&d))).expect("open");
        assert!(store.is_persistent());
        store.commit(&snapshot(&state).expect("snapshot")).expect("commit");
        assert_eq!(store.load().expect("load"), state);
        drop(store);
        let store = Store::open(Some(&db(&d))).expect("reopen");
        assert_eq!(store.load().expect("load"), state);
    }

    /// Deletions and later writes of the same key apply in journal order.
    #[test]
    fn deletes_and_overwrites_apply_in_order() {
        let d = TempDir::new("store");
        let mut store = SqliteStore::open(db(&d)).expect("open");
        let mut state = sample();
        store.commit(&snapshot(&state).expect("snapshot")).expect("commit");
        let released = JobRecord { released_to: Some("dev_1".into()), ..job("job_1", JobState::Released) };
        let at = SecretHash::of("rat_1");
        store
            .commit(&[
                put(Table::Jobs, "job_1", &job("job_1", JobState::Queued)),
                put(Table::Jobs, "job_1", &released),
                del(Table::Access, &at.to_hex()),
                del(Table::Devices, "dev_missing"),
                put(Table::Jobs, "job_2", &job("job_2", JobState::Queued)),
                del(Table::Jobs, "job_2"),
            ])
            .expect("commit");
        state.jobs.insert("job_1".into(), released);
        state.access.remove(&at);
        assert_eq!(store.load().expect("load"), state);
    }

    /// A failing transaction leaves nothing behind.
    #[test]
    fn a_failed_commit_stores_nothing() {
        let d = TempDir::new("store");
        let mut store = SqliteStore::open(db(&d)).expect("open");
        store
            .conn
            .execute_batch(
                "CREATE TRIGGER no_job_9 BEFORE INSERT ON jobs WHEN NEW.key = 'job_9' \
                 BEGIN SELECT RAISE(ABORT, 'refused'); END",
            )
            .expect("trigger");
        let r = store.commit(&[
            put(Table::Jobs, "job_1", &job("job_1", JobState::Queued)),
            put(Table::Jobs, "job_9", &job("job_9", JobState::Queued)),
        ]);
        assert!(matches!(r, Err(StoreError::Sqlite(_))), "{r:?}");
        assert!(store.load().expect("load").jobs.is_empty());
    }

    /// A committed transaction is there after the connection is abandoned without closing (a crash).
    #[test]
    fn committed_data_survives_an_abandoned_connection() {
        let d = TempDir::new("store");
        let mut store = SqliteStore::open(db(&d)).expect("open");
        store.commit(&snapshot(&sample()).expect("snapshot")).expect("commit");
        store.put_meta(META_SEED, "42").expect("meta");
        std::mem::forget(store);
        let store = SqliteStore::open(db(&d)).expect("reopen");
        assert_eq!(store.load().expect("load"), sample());
        assert_eq!(store.get_meta(META_SEED).expect("meta").as_deref(), Some("42"));
    }

    /// A row that does not parse is reported with its table and key, never a panic.
    #[test]
    fn corrupt_rows_are_named() {
        let d = TempDir::new("store");
        let mut store = SqliteStore::open(db(&d)).expect("open");
        store
            .commit(&[Change {
                table: Table::Families,
                key: "fam_x".into(),
                value: Some(serde_json::json!({"id": 1}).to_string()),
            }])
            .expect("commit");
        let e = store.load().expect_err("corrupt");
        assert!(matches!(&e, StoreError::Corrupt { table: "families", key, .. } if key == "fam_x"), "{e}");
        assert!(e.to_string().contains("families") && e.to_string().contains("fam_x"), "{e}");
        store.conn.execute("UPDATE families SET value = 'not json' WHERE key = 'fam_x'", []).expect("update");
        assert!(matches!(store.load(), Err(StoreError::Corrupt { .. })));
    }

    #[test]
    fn meta_and_clock_offset() {
        let d = TempDir::new("store");
        let mut store = Store::open(Some(&db(&d))).expect("open");
        assert_eq!(store.clock_offset().expect("offset"), Duration::ZERO);
        store.set_clock_offset(Duration::from_secs(90 * 86_400)).expect("set");
        assert_eq!(store.get_meta(META_SCHEMA_VERSION).expect("meta").as_deref(), Some(SCHEMA_VERSION));
        store
            .commit_with_meta(&[put(Table::Jobs, "job_1", &job("job_1", JobState::Queued))], &[(META_SEED, "7")])
            .expect("commit");
        drop(store);
        let store = Store::open(Some(&db(&d))).expect("reopen");
        assert_eq!(store.clock_offset().expect("offset"), Duration::from_secs(90 * 86_400));
        assert_eq!(store.get_meta(META_SEED).expect("meta").as_deref(), Some("7"));
        assert_eq!(store.load().expect("load").jobs.len(), 1);
    }

    /// The state file is created with its directory, readable by its owner only.
    #[test]
    fn state_file_is_private() {
        let d = TempDir::new("store");
        let path = d.path().join("nested").join("state.sqlite");
        let store = SqliteStore::open(&path).expect("open");
        assert_eq!(store.path(), path);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).expect("file").permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{mode:o}");
        }
    }

    #[test]
    fn other_schema_versions_are_refused() {
        let d = TempDir::new("store");
        let mut store = SqliteStore::open(db(&d)).expect("open");
        store.put_meta(META_SCHEMA_VERSION, "99").expect("meta");
        drop(store);
        assert!(matches!(SqliteStore::open(db(&d)), Err(StoreError::Schema { found, .. }) if found == "99"));
    }

    #[test]
    fn memory_store_is_a_no_op() {
        let mut m = Store::open(None).expect("memory");
        assert!(!m.is_persistent() && m.path().is_none());
        m.commit(&snapshot(&sample()).expect("snapshot")).expect("commit");
        m.put_meta(META_SEED, "1").expect("meta");
        assert_eq!(m.load().expect("load"), State::default());
        assert_eq!(m.get_meta(META_SEED).expect("meta"), None);
        assert_eq!(m.clock_offset().expect("offset"), Duration::ZERO);
    }

    const CHILD_ENV: &str = "ROGER_SIM_STORE_SIGKILL_DB";
    const ROWS_PER_GENERATION: usize = 10;

    /// The child half of [`sigkill_mid_write_is_all_or_nothing`]: commits generation after generation (each
    /// replacing all rows of the previous one and recording its number in `meta`) until it is killed. Does nothing
    /// unless started by the parent.
    #[test]
    #[ignore = "child process of sigkill_mid_write_is_all_or_nothing"]
    fn sigkill_child_writer() {
        let Some(path) = std::env::var_os(CHILD_ENV) else { return };
        let mut store = SqliteStore::open(PathBuf::from(path)).expect("open");
        let started = std::time::Instant::now();
        for generation in 1u64.. {
            let mut changes = Vec::new();
            for k in 0..ROWS_PER_GENERATION {
                if generation > 1 {
                    changes.push(del(Table::Jobs, &format!("job_{}_{k}", generation - 1)));
                }
                let id = format!("job_{generation}_{k}");
                changes.push(put(Table::Jobs, &id, &job(&id, JobState::Released)));
            }
            store.commit_with_meta(&changes, &[("generation", &generation.to_string())]).expect("commit");
            if started.elapsed() > Duration::from_secs(120) {
                return; // the parent is gone
            }
        }
    }

    /// DESIGN.md: a server killed with SIGKILL in the middle of a write "loses no registration, never un-rotates a
    /// token, and never releases a job twice": after the kill, exactly one whole generation is stored, the one
    /// `meta` names.
    #[cfg(unix)]
    #[test]
    fn sigkill_mid_write_is_all_or_nothing() {
        let d = TempDir::new("store");
        let exe = std::env::current_exe().expect("test binary");
        let mut child = std::process::Command::new(exe)
            .args(["server::store::tests::sigkill_child_writer", "--exact", "--ignored", "--test-threads=1"])
            .env(CHILD_ENV, db(&d))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn child");
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        let mut seen = 0u64;
        while seen < 20 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
            if let Ok(conn) = Connection::open_with_flags(db(&d), rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY) {
                let _ = conn.busy_timeout(Duration::from_secs(1));
                seen = conn
                    .query_row("SELECT value FROM meta WHERE key = 'generation'", [], |r| r.get::<_, String>(0))
                    .ok()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
            }
        }
        child.kill().expect("SIGKILL");
        child.wait().expect("reap");
        assert!(seen >= 20, "the child committed only {seen} generations");

        let store = SqliteStore::open(db(&d)).expect("reopen after SIGKILL");
        let generation: u64 =
            store.get_meta("generation").expect("meta").and_then(|v| v.parse().ok()).expect("a generation");
        assert!(generation >= seen);
        let jobs = store.load().expect("load after SIGKILL").jobs;
        assert_eq!(jobs.len(), ROWS_PER_GENERATION, "exactly one generation: {:?}", jobs.keys().collect::<Vec<_>>());
        assert!(jobs.keys().all(|k| k.starts_with(&format!("job_{generation}_"))), "{:?}", jobs.keys());
    }
}
