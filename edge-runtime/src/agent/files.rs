//! The agent's files (identity, key and certificate, saved assignments, cached modules and
//! models): written whole or not at all (temporary file, sync, rename, sync of the directory),
//! from async code on a blocking thread, and sealed at rest under the node's storage key.
//!
//! A sealed file is `edgeplane_tls::sealing`'s: a magic line, then the contents sealed with
//! ChaCha20-Poly1305 ([`StorageKey`]) under associated data naming the file, so that one sealed
//! file cannot stand in for another. A file that does not open (changed, cut, another key) is refused and
//! counted ([`refused_files`]), never read; so is a plain file where sealed ones belong, except
//! when the key was made on this start: the plain files found then were written before the
//! node had a key, and are read (and sealed when next written).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::Serialize;

pub use edgeplane_tls::durable::Access;
use edgeplane_tls::sealing::is_sealed_file;

use crate::storage::StorageKey;

/// Files refused since the process started: they did not open with the storage key, or were
/// plain where sealed ones belong. Process-wide, like the files themselves (one data directory
/// per process), so that the metrics and `GET /v1/stats` read it without plumbing.
static REFUSED_FILES: AtomicU64 = AtomicU64::new(0);

/// Files refused since the process started (see [`REFUSED_FILES`]).
pub fn refused_files() -> u64 {
    REFUSED_FILES.load(Ordering::Relaxed)
}

/// How the agent's files are kept at rest.
#[derive(Debug, Clone, Default)]
pub struct AtRest {
    key: Option<Arc<StorageKey>>,
    /// The key was made on this start: plain files are from before it.
    adopt_plain: bool,
}

impl AtRest {
    /// Files in plain text (`--plaintext-storage`).
    pub fn plain() -> AtRest {
        AtRest::default()
    }

    /// Files sealed under `key`; `made_now` when the key did not exist before this start.
    pub fn sealed(key: Arc<StorageKey>, made_now: bool) -> AtRest {
        AtRest { key: Some(key), adopt_plain: made_now }
    }

    /// A file's content, `None` when it does not exist. Blocks.
    pub fn read(&self, path: &Path) -> Result<Option<Vec<u8>>, FileError> {
        let bytes = match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(FileError::Io { path: path.to_owned(), source }),
        };
        let refuse = |error: FileError| {
            REFUSED_FILES.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(%error, "refused a file of the data directory");
            Err(error)
        };
        match (is_sealed_file(&bytes), &self.key) {
            (true, Some(key)) => match key.open_file(&file_name(path), &bytes) {
                Some(plain) => Ok(Some(plain)),
                None => refuse(FileError::Unopened { path: path.to_owned() }),
            },
            (true, None) => refuse(FileError::NoKey { path: path.to_owned() }),
            (false, Some(_)) if !self.adopt_plain => refuse(FileError::Plain { path: path.to_owned() }),
            (false, _) => Ok(Some(bytes)),
        }
    }

    /// Replaces `path` with `bytes` (sealed when there is a key) durably. Blocks.
    pub fn write(&self, path: &Path, bytes: &[u8], access: Access) -> Result<(), FileError> {
        match &self.key {
            None => write_atomically(path, bytes, access),
            Some(key) => write_atomically(path, &key.seal_file(&file_name(path), bytes), access),
        }
    }

    /// A JSON file's content, `None` when it does not exist. Blocks.
    pub fn read_json<T: DeserializeOwned>(&self, path: &Path) -> Result<Option<T>, FileError> {
        match self.read(path)? {
            None => Ok(None),
            Some(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|source| FileError::Corrupt { path: path.to_owned(), source }),
        }
    }

    pub fn write_json(&self, path: &Path, value: &impl Serialize, access: Access) -> Result<(), FileError> {
        self.write(path, &serde_json::to_vec_pretty(value).expect("plain data serializes"), access)
    }

    /// [`AtRest::write_json`] from async code, on a blocking thread.
    pub async fn save_json<T: Serialize + Send + 'static>(&self, path: PathBuf, value: T, access: Access) -> Result<(), FileError> {
        let at_rest = self.clone();
        tokio::task::spawn_blocking(move || at_rest.write_json(&path, &value, access))
            .await
            .unwrap_or_else(|e| Err(FileError::Io { path: PathBuf::new(), source: std::io::Error::other(e) }))
    }

    /// [`AtRest::read_json`] from async code, on a blocking thread.
    pub async fn load_json<T: DeserializeOwned + Send + 'static>(&self, path: PathBuf) -> Result<Option<T>, FileError> {
        let at_rest = self.clone();
        tokio::task::spawn_blocking(move || at_rest.read_json(&path))
            .await
            .unwrap_or_else(|e| Err(FileError::Io { path: PathBuf::new(), source: std::io::Error::other(e) }))
    }
}

fn file_name(path: &Path) -> String {
    path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
}

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
    #[error("{path} does not open with the storage key: it was changed, cut, or sealed with another key")]
    Unopened { path: PathBuf },
    #[error("{path} is sealed, and this node has no storage key (started with --plaintext-storage?)")]
    NoKey { path: PathBuf },
    #[error("{path} is in plain text where this node keeps its files sealed")]
    Plain { path: PathBuf },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> FileError + '_ {
    move |source| FileError::Io { path: path.to_owned(), source }
}

/// Replaces `path` with `bytes` durably: a crash leaves the old or the new file, whole, and
/// once this returns the new one survives a crash. Blocks.
fn write_atomically(path: &Path, bytes: &[u8], access: Access) -> Result<(), FileError> {
    edgeplane_tls::durable::write_atomically(path, bytes, access).map_err(io(path))
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
        let plain = AtRest::plain();
        plain.write_json(&path, &serde_json::json!({"token": "secret"}), Access::Owner).expect("write");
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "credentials are the owner's only: {mode:o}");
        plain.write_json(&path, &serde_json::json!({"token": "new"}), Access::Owner).expect("replace");
        assert_eq!(plain.read_json::<serde_json::Value>(&path).expect("read"), Some(serde_json::json!({"token": "new"})));
        assert!(!path.with_extension("tmp").exists(), "no temporary file is left");
        assert_eq!(plain.read_json::<serde_json::Value>(&dir.path().join("missing.json")).expect("read"), None);
    }

    #[test]
    fn sealed_files_open_only_intact_in_their_own_place_and_plain_ones_only_before_the_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let key = Arc::new(StorageKey::from_bytes(&[9; 32]));
        let sealed = AtRest::sealed(key.clone(), false);
        let (assignments, identity) = (dir.path().join("assignments.json"), dir.path().join("identity.json"));
        sealed.write_json(&assignments, &serde_json::json!({"factory/pass-0": {"node": "a"}}), Access::Owner).expect("write");
        sealed.write_json(&identity, &serde_json::json!({"name": "a"}), Access::Owner).expect("write");
        let on_disk = std::fs::read(&assignments).expect("read");
        assert!(is_sealed_file(&on_disk) && !on_disk.windows(4).any(|w| w == b"pass"), "sealed, not in clear");
        assert_eq!(
            sealed.read_json::<serde_json::Value>(&assignments).expect("opens"),
            Some(serde_json::json!({"factory/pass-0": {"node": "a"}}))
        );

        let before = refused_files();
        let mut flipped = on_disk.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        std::fs::write(&assignments, &flipped).expect("tamper");
        assert!(matches!(sealed.read(&assignments), Err(FileError::Unopened { .. })), "a flipped byte");
        std::fs::write(&assignments, &on_disk[..on_disk.len() - 5]).expect("cut");
        assert!(matches!(sealed.read(&assignments), Err(FileError::Unopened { .. })), "cut short");
        std::fs::copy(&identity, &assignments).expect("swap");
        assert!(matches!(sealed.read(&assignments), Err(FileError::Unopened { .. })), "another file's sealed bytes");
        std::fs::write(&assignments, br#"{"factory/evil-0": {}}"#).expect("plain");
        assert!(matches!(sealed.read(&assignments), Err(FileError::Plain { .. })), "plain where sealed belong");
        assert!(matches!(AtRest::plain().read(&identity), Err(FileError::NoKey { .. })), "sealed, no key");
        assert!(refused_files() >= before + 5, "every refusal is counted");

        let adopting = AtRest::sealed(key, true);
        assert_eq!(
            adopting.read(&assignments).expect("adopted").as_deref(),
            Some(&br#"{"factory/evil-0": {}}"#[..]),
            "written before the key"
        );
    }
}
