//! What the example printers share: keeping the connection in a state directory, written atomically (R-TOK-2: the
//! newest refresh token must never be lost, and a crash must never leave a half-written file).

use std::path::Path;

use roger_proto::lifecycle::PersistedConnection;

/// The state file inside the state directory.
pub const STATE_FILE: &str = "connection.json";

/// Writes `value` so that a crash leaves either the old or the new file: write a temporary file, fsync it, rename
/// it over the old one, fsync the directory.
pub fn store_atomically(dir: &Path, value: &PersistedConnection) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join("connection.json.tmp");
    let dst = dir.join(STATE_FILE);
    let bytes = serde_json::to_vec_pretty(value).map_err(std::io::Error::other)?;
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, &dst)?;
    std::fs::File::open(dir)?.sync_all()
}

/// The saved connection, `None` when the directory holds none yet.
pub fn load(dir: &Path) -> Result<Option<PersistedConnection>, String> {
    match std::fs::read(dir.join(STATE_FILE)) {
        Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| format!("state file unreadable: {e}")),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("cannot read the state directory: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_state_is_none_and_garbage_is_an_error() {
        let dir = std::env::temp_dir().join(format!("roger-examples-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        assert!(load(&dir).unwrap().is_none());
        std::fs::write(dir.join(STATE_FILE), b"{not json").unwrap();
        assert!(load(&dir).unwrap_err().contains("unreadable"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
