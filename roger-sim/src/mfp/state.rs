//! The printer's state directory: the connection state (PROTOCOL.md §5–6: device id and the newest refresh token,
//! R-TOK-2) and the panel's screenshot files, all written atomically.
//!
//! Atomic means: write a temporary file in the same directory, `fsync` it, `rename` it over the target, `fsync`
//! the directory (POSIX `rename(2)` replaces the name in one step; the directory `fsync` makes the rename itself
//! durable). A crash at any point leaves either the old or the new file, never a torn one, so the newest refresh
//! token is never lost (R-TOK-2, R-TOK-3).
//!
//! The state file holds `PersistedConnection` only: the device's own credentials, never a secret a user typed
//! (R-PWD-1: the PIN lives in memory until its request is answered).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use roger_proto::lifecycle::PersistedConnection;

/// The name of the connection state file inside the state directory (PROTOCOL.md §6, R-TOK-2).
pub const CONNECTION_FILE: &str = "connection.json";

/// Why the state directory could not be read or written (R-TOK-2: the newest refresh token must be stored).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StateError {
    /// A file system operation failed.
    #[error("{what} {}: {source}", path.display())]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The state file exists but is not a connection state (corrupt or from another program). It is never
    /// overwritten silently: the caller decides.
    #[error("the state file {} is unreadable: {detail}", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// The parse error, without quoting the file's content (it holds a refresh token, R-SEC-1).
        detail: String,
    },
}

fn io_err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> StateError + 'a {
    move |source| StateError::Io { what, path: path.to_owned(), source }
}

/// Writes `bytes` to `dir/name` atomically (temporary file, `fsync`, `rename`, directory `fsync`), creating `dir`
/// if needed. The temporary file is created with mode 0600 on Unix, since state files hold credentials
/// (R-SEC-1).
pub fn write_atomically(dir: &Path, name: &str, bytes: &[u8]) -> Result<PathBuf, StateError> {
    fs::create_dir_all(dir).map_err(io_err("cannot create", dir))?;
    let target = dir.join(name);
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let result = (|| {
        let mut options = OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut f = options.open(&tmp).map_err(io_err("cannot create", &tmp))?;
        f.write_all(bytes).map_err(io_err("cannot write", &tmp))?;
        f.sync_all().map_err(io_err("cannot fsync", &tmp))?;
        drop(f);
        fs::rename(&tmp, &target).map_err(io_err("cannot rename into", &target))?;
        sync_dir(dir)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map(|()| target)
}

/// `fsync` on a directory, so a rename inside it is durable (POSIX; a no-op where directories cannot be opened).
fn sync_dir(dir: &Path) -> Result<(), StateError> {
    #[cfg(unix)]
    {
        File::open(dir).and_then(|d| d.sync_all()).map_err(io_err("cannot fsync", dir))?;
    }
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

/// Stores the connection state (R-TOK-2: only the newest refresh token; a [`roger_proto::lifecycle::LifecycleEvent::Persist`] value) atomically in
/// `state_dir/connection.json`.
pub fn store_connection(state_dir: &Path, value: &PersistedConnection) -> Result<PathBuf, StateError> {
    // A `PersistedConnection` holds strings and an enum only; serialisation cannot fail.
    let bytes = serde_json::to_vec_pretty(value).unwrap_or_default();
    write_atomically(state_dir, CONNECTION_FILE, &bytes)
}

/// Loads the connection state from `state_dir` (a restart keeps the registration, PROTOCOL.md §13 `restart`): `None` when the printer never registered.
pub fn load_connection(state_dir: &Path) -> Result<Option<PersistedConnection>, StateError> {
    let path = state_dir.join(CONNECTION_FILE);
    match fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| StateError::Corrupt { path, detail: redacted_json_error(&e) }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(StateError::Io { what: "cannot read", path, source }),
    }
}

/// A serde_json error without the offending value (serde quotes it, and it may be a token): category and
/// position only.
pub(crate) fn redacted_json_error(e: &serde_json::Error) -> String {
    let kind = match e.classify() {
        serde_json::error::Category::Io => "I/O error",
        serde_json::error::Category::Syntax => "syntax error",
        serde_json::error::Category::Data => "unexpected content",
        serde_json::error::Category::Eof => "unexpected end",
    };
    format!("{kind} at line {} column {}", e.line(), e.column())
}

/// Appends one line to `path` and `fsync`s it (the printed-jobs record of PROTOCOL.md §9: one JSON object per line).
pub fn append_line(path: &Path, line: &str) -> Result<(), StateError> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).map_err(io_err("cannot create", dir))?;
    }
    let mut f = OpenOptions::new().create(true).append(true).open(path).map_err(io_err("cannot open", path))?;
    let mut buf = Vec::with_capacity(line.len() + 1);
    buf.extend_from_slice(line.as_bytes());
    buf.push(b'\n');
    f.write_all(&buf).map_err(io_err("cannot append to", path))?;
    f.sync_all().map_err(io_err("cannot fsync", path))
}

/// Removes `dir/name` if it exists (a screenshot that no longer shows a live code, R-QR-3).
pub fn remove_if_exists(dir: &Path, name: &str) -> Result<(), StateError> {
    let path = dir.join(name);
    match fs::remove_file(&path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(StateError::Io { what: "cannot remove", path, source }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::TempDir;
    use roger_proto::lifecycle::DisconnectReason;
    use roger_proto::secret::RefreshToken;

    fn connected(rt: &str) -> PersistedConnection {
        PersistedConnection::Connected {
            device_id: "dev_1".into(),
            tenant_id: Some("acme".into()),
            refresh_token: RefreshToken::new(rt),
        }
    }

    /// A stored state loads back identically; a missing file is "never registered".
    #[test]
    fn round_trip_and_missing() {
        let tmp = TempDir::new("mfp-round-trip");
        let dir = tmp.path().to_path_buf();
        assert_eq!(load_connection(&dir).expect("load"), None);
        store_connection(&dir, &connected("rt_1")).expect("store");
        assert_eq!(load_connection(&dir).expect("load"), Some(connected("rt_1")));
        // R-TOK-2: the newest replaces the old.
        store_connection(&dir, &connected("rt_2")).expect("store");
        assert_eq!(load_connection(&dir).expect("load"), Some(connected("rt_2")));
        let gone = PersistedConnection::Disconnected {
            device_id: Some("dev_1".into()),
            reason: DisconnectReason::RefreshTokenDead,
        };
        store_connection(&dir, &gone).expect("store");
        assert_eq!(load_connection(&dir).expect("load"), Some(gone));
        fs::remove_dir_all(&dir).ok();
    }

    /// The write leaves no temporary file behind, creates the directory, and is private to the owner.
    #[test]
    fn atomic_write_leaves_only_the_target() {
        let tmp = TempDir::new("mfp-atomic");
        let dir = tmp.path().to_path_buf().join("nested");
        let path = write_atomically(&dir, "x.json", b"{\"a\":1}").expect("write");
        assert_eq!(fs::read(&path).expect("read"), b"{\"a\":1}");
        write_atomically(&dir, "x.json", b"{\"a\":2}").expect("overwrite");
        assert_eq!(fs::read(&path).expect("read"), b"{\"a\":2}");
        let names: Vec<String> =
            fs::read_dir(&dir).expect("list").map(|e| e.expect("entry").file_name().to_string_lossy().into()).collect();
        assert_eq!(names, vec!["x.json".to_owned()], "no temporary file is left");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&path).expect("meta").permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "state files hold credentials");
        }
        fs::remove_dir_all(dir.parent().expect("parent")).ok();
    }

    /// A failed write (the target is a directory) keeps nothing half-written and reports a typed error.
    #[test]
    fn failed_write_is_an_error_and_cleans_up() {
        let tmp = TempDir::new("mfp-fail");
        let dir = tmp.path().to_path_buf();
        fs::create_dir_all(dir.join("blocked")).expect("mkdir");
        let err = write_atomically(&dir, "blocked", b"x").expect_err("cannot rename over a directory");
        assert!(matches!(err, StateError::Io { .. }), "{err}");
        let names: Vec<String> =
            fs::read_dir(&dir).expect("list").map(|e| e.expect("entry").file_name().to_string_lossy().into()).collect();
        assert_eq!(names, vec!["blocked".to_owned()]);
        fs::remove_dir_all(&dir).ok();
    }

    /// A corrupt state file is a typed error that does not quote the file (it may hold a refresh token).
    #[test]
    fn corrupt_file_is_reported_without_its_content() {
        let tmp = TempDir::new("mfp-corrupt");
        let dir = tmp.path().to_path_buf();
        fs::write(dir.join(CONNECTION_FILE), br#"{"state":"connected","refresh_token":"rt_SECRET"#).expect("write");
        let err = load_connection(&dir).expect_err("corrupt");
        assert!(matches!(err, StateError::Corrupt { .. }));
        assert!(!err.to_string().contains("rt_SECRET"), "{err}");
        fs::write(dir.join(CONNECTION_FILE), br#"{"state":"connected","refresh_token":7}"#).expect("write");
        let err = load_connection(&dir).expect_err("wrong type");
        assert!(matches!(err, StateError::Corrupt { .. }));
        fs::remove_dir_all(&dir).ok();
    }

    /// The printed record appends whole lines.
    #[test]
    fn append_line_appends() {
        let tmp = TempDir::new("mfp-append");
        let dir = tmp.path().to_path_buf();
        let path = dir.join("sub").join("log.jsonl");
        append_line(&path, "{\"n\":1}").expect("append");
        append_line(&path, "{\"n\":2}").expect("append");
        assert_eq!(fs::read_to_string(&path).expect("read"), "{\"n\":1}\n{\"n\":2}\n");
        remove_if_exists(&dir.join("sub"), "log.jsonl").expect("remove");
        remove_if_exists(&dir.join("sub"), "log.jsonl").expect("removing twice is fine");
        fs::remove_dir_all(&dir).ok();
    }
}
