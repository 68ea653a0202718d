//! The agent's small files (identity, saved assignments, cached modules): written whole or
//! not at all (temporary file, sync, rename, sync of the directory), and, from async code,
//! on a blocking thread.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::Serialize;

/// Why a file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("{path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is unreadable")]
    Corrupt {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> FileError + '_ {
    move |source| FileError::Io { path: path.to_owned(), source }
}

/// Who may read a file the agent writes.
#[derive(Debug, Clone, Copy)]
pub enum Access {
    /// Anyone on the machine (the default umask applies).
    Shared,
    /// The runtime's user only: credentials.
    Owner,
}

/// A JSON file's content, `None` when it does not exist. Blocks.
pub fn read_json<T: DeserializeOwned>(path: &Path) -> Result<Option<T>, FileError> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|source| FileError::Corrupt { path: path.to_owned(), source }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(FileError::Io { path: path.to_owned(), source }),
    }
}

/// Replaces `path` with `bytes` durably: a crash leaves the old or the new file, whole, and
/// once this returns the new one survives a crash. Blocks.
pub fn write_atomically(path: &Path, bytes: &[u8], access: Access) -> Result<(), FileError> {
    let tmp = path.with_extension("tmp");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    if let Access::Owner = access {
        options.mode(0o600);
    }
    let mut file = options.open(&tmp).map_err(io(&tmp))?;
    file.write_all(bytes).and_then(|()| file.sync_all()).map_err(io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io(path))?;
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))
}

pub fn write_json(path: &Path, value: &impl Serialize, access: Access) -> Result<(), FileError> {
    write_atomically(path, &serde_json::to_vec_pretty(value).expect("plain data serializes"), access)
}

/// [`write_json`] from async code, on a blocking thread.
pub async fn save_json<T: Serialize + Send + 'static>(path: PathBuf, value: T, access: Access) -> Result<(), FileError> {
    tokio::task::spawn_blocking(move || write_json(&path, &value, access))
        .await
        .unwrap_or_else(|e| Err(FileError::Io { path: PathBuf::new(), source: std::io::Error::other(e) }))
}

/// [`read_json`] from async code, on a blocking thread.
pub async fn load_json<T: DeserializeOwned + Send + 'static>(path: PathBuf) -> Result<Option<T>, FileError> {
    tokio::task::spawn_blocking(move || read_json(&path))
        .await
        .unwrap_or_else(|e| Err(FileError::Io { path: PathBuf::new(), source: std::io::Error::other(e) }))
}

/// Creates a directory and its parents on a blocking thread.
pub async fn create_dir(dir: PathBuf) -> Result<(), FileError> {
    tokio::task::spawn_blocking(move || std::fs::create_dir_all(&dir).map_err(|source| FileError::Io { path: dir.clone(), source }))
        .await
        .unwrap_or_else(|e| Err(FileError::Io { path: PathBuf::new(), source: std::io::Error::other(e) }))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    #[test]
    fn owner_only_files_are_not_readable_by_others_and_replacing_is_whole() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("identity.json");
        write_json(&path, &serde_json::json!({"token": "secret"}), Access::Owner).expect("write");
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "credentials are the owner's only: {mode:o}");
        write_json(&path, &serde_json::json!({"token": "new"}), Access::Owner).expect("replace");
        assert_eq!(read_json::<serde_json::Value>(&path).expect("read"), Some(serde_json::json!({"token": "new"})));
        assert!(!path.with_extension("tmp").exists(), "no temporary file is left");
        assert_eq!(read_json::<serde_json::Value>(&dir.path().join("missing.json")).expect("read"), None);
    }
}
