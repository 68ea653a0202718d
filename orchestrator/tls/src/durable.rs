//! Files that must survive a crash whole or not at all (keys, sealed state, snapshots,
//! backups): written beside their final name, fsynced, renamed over it, and the directory
//! fsynced so that the rename itself survives. A crash leaves the old file or the new one,
//! never a mix, and once [`write_atomically`] returns the new one is on disk.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;

/// Who may read a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone on the machine the umask lets in.
    Shared,
    /// The process's user only (0600): credentials and sealed data.
    Owner,
}

/// Replaces `path` with `bytes` durably. Blocks: call it off the async reactor. The error
/// names the file or directory that failed.
pub fn write_atomically(path: &Path, bytes: &[u8], access: Access) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    if access == Access::Owner {
        options.mode(0o600);
    }
    let mut file = options.open(&tmp).map_err(named(&tmp))?;
    file.write_all(bytes).and_then(|()| file.sync_all()).map_err(named(&tmp))?;
    std::fs::rename(&tmp, path).map_err(named(path))?;
    sync_dir_of(path)
}

/// The error, saying which file it happened to.
fn named(path: &Path) -> impl FnOnce(std::io::Error) -> std::io::Error + '_ {
    move |e| std::io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

/// Makes the names in `path`'s directory durable (after a rename or a create).
pub fn sync_dir_of(path: &Path) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(named(dir))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    #[test]
    fn replaces_whole_files_and_keeps_owner_only_ones_private() {
        let dir = tempfile::tempdir().expect("tempdir");
        let key = dir.path().join("node.key");
        write_atomically(&key, b"first", Access::Owner).expect("write");
        write_atomically(&key, b"second, longer", Access::Owner).expect("replace");
        assert_eq!(std::fs::read(&key).expect("read"), b"second, longer");
        assert_eq!(std::fs::metadata(&key).expect("metadata").permissions().mode() & 0o777, 0o600);
        let names: Vec<_> = std::fs::read_dir(dir.path()).expect("list").map(|e| e.expect("entry").file_name()).collect();
        assert_eq!(names, ["node.key"], "no temporary file is left behind");
    }

    #[test]
    fn failures_name_the_path() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("no-such-dir/state.json");
        let error = write_atomically(&missing, b"x", Access::Shared).expect_err("no directory");
        assert!(error.to_string().contains("no-such-dir/state.tmp"), "{error}");
    }
}
