//! The durable copy of a node's Raft state: a redb database and snapshot files.
//!
//! One redb write transaction per [`WriteBatch`], committed with `Durability::Immediate`: a
//! whole Ready (every entry, the hard state) costs one fsync, and a crash leaves either all of
//! a batch or none of it. Snapshots are large and rare, so they live outside the B-tree in
//! their own files (written and fsynced before the transaction that points at them commits);
//! the database keeps only their metadata. Compaction moves a mark at once and deletes the
//! rows behind it a bounded number per batch, so no single batch pays for deleting thousands
//! of entries. Every call blocks on disk IO: async callers run it on a blocking thread (see
//! [`crate::node`]), never on the reactor.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use edgeplane_tls::durable;
use raft::prelude::Snapshot;
use redb::{Database, Durability, ReadableTable, TableDefinition};

use crate::storage::{LogState, WriteBatch};

const ENTRIES: TableDefinition<u64, &[u8]> = TableDefinition::new("raft_entries");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("raft_meta");

const HARD_STATE: &str = "hard_state";
const CONF_STATE: &str = "conf_state";
/// Metadata of the current snapshot; its data is in the snapshot file of that index.
const SNAPSHOT_META: &str = "snapshot_meta";
const COMPACTED: &str = "compacted";

/// Rows behind the compaction mark deleted per batch, at least; a batch that appends more
/// deletes twice what it appends, so trimming keeps pace with any write rate.
const TRIM_PER_BATCH: u64 = 512;

/// Why the durable log could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    #[error("cannot open the Raft log at {path}")]
    Open {
        path: PathBuf,
        #[source]
        source: redb::DatabaseError,
    },
    #[error("the Raft log's database failed")]
    Database(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("the Raft log holds a corrupt {what}")]
    Corrupt {
        what: &'static str,
        #[source]
        source: protobuf::ProtobufError,
    },
    #[error("snapshot file {path}")]
    SnapshotFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn db_err(e: impl Into<redb::Error>) -> DiskError {
    DiskError::Database(Box::new(e.into()))
}

/// A node's Raft log, hard state, conf state and latest snapshot on disk.
#[derive(Debug)]
pub struct DiskLog {
    db: Database,
    snapshot_dir: PathBuf,
    /// The compaction mark as last committed; rows at or below it are garbage.
    compacted: AtomicU64,
}

impl DiskLog {
    /// Opens (or creates) the log in `dir` (`raft.redb` and `snapshots/`) and reads the state
    /// it holds.
    pub fn open(dir: &Path) -> Result<(DiskLog, LogState), DiskError> {
        let path = dir.join("raft.redb");
        let snapshot_dir = dir.join("snapshots");
        fs::create_dir_all(&snapshot_dir).map_err(|source| DiskError::SnapshotFile { path: snapshot_dir.clone(), source })?;
        let db = Database::create(&path).map_err(|source| DiskError::Open { path: path.clone(), source })?;
        // Create both tables up front so that reads never meet a missing table.
        let txn = db.begin_write().map_err(db_err)?;
        txn.open_table(ENTRIES).map_err(db_err)?;
        txn.open_table(META).map_err(db_err)?;
        txn.commit().map_err(db_err)?;
        let disk = DiskLog { db, snapshot_dir, compacted: AtomicU64::new(0) };
        let state = disk.load()?;
        disk.compacted.store(state.compacted.0, Ordering::Relaxed);
        Ok((disk, state))
    }

    fn load(&self) -> Result<LogState, DiskError> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let meta = txn.open_table(META).map_err(db_err)?;
        let mut state = LogState::default();
        if let Some(v) = meta.get(HARD_STATE).map_err(db_err)? {
            state.hard_state = decode(v.value(), "hard state")?;
        }
        if let Some(v) = meta.get(CONF_STATE).map_err(db_err)? {
            state.conf_state = decode(v.value(), "conf state")?;
        }
        if let Some(v) = meta.get(SNAPSHOT_META).map_err(db_err)? {
            let m: raft::prelude::SnapshotMetadata = decode(v.value(), "snapshot metadata")?;
            let path = self.snapshot_path(m.index);
            let bytes = fs::read(&path).map_err(|source| DiskError::SnapshotFile { path, source })?;
            state.snapshot = decode(&bytes, "snapshot file")?;
        }
        if let Some(v) = meta.get(COMPACTED).map_err(db_err)? {
            let bytes: [u8; 16] = v.value().try_into().map_err(|_| DiskError::Corrupt {
                what: "compaction mark",
                source: protobuf::ProtobufError::WireError(protobuf::error::WireError::Other),
            })?;
            let (index, term) = bytes.split_at(8);
            state.compacted = (u64_from(index), u64_from(term));
        }
        let entries = txn.open_table(ENTRIES).map_err(db_err)?;
        // Rows at or below the mark may still exist (they are deleted lazily); skip them.
        for row in entries.range(state.compacted.0 + 1..).map_err(db_err)? {
            let (_, v) = row.map_err(db_err)?;
            state.entries.push_back(decode(v.value(), "log entry")?);
        }
        Ok(state)
    }

    fn snapshot_path(&self, index: u64) -> PathBuf {
        self.snapshot_dir.join(format!("{index:020}.snap"))
    }

    /// Writes a snapshot's file durably (temporary file, fsync, rename, fsync of the
    /// directory). Done before any transaction refers to it; idempotent.
    pub fn write_snapshot_file(&self, snapshot: &Snapshot) -> Result<(), DiskError> {
        let path = self.snapshot_path(snapshot.get_metadata().index);
        let io = |source| DiskError::SnapshotFile { path: path.clone(), source };
        if path.exists() {
            // An earlier attempt may have crashed or failed between the rename and the
            // directory's sync, leaving the name not yet durable.
            durable::sync_dir_of(&path).map_err(io)
        } else {
            durable::write_atomically(&path, &encode(snapshot), durable::Access::Shared).map_err(io)
        }
    }

    /// Makes a batch durable: one transaction, one fsync (plus the snapshot file's, if the
    /// batch brings a snapshot whose file is not written yet).
    pub fn persist(&self, batch: &WriteBatch) -> Result<(), DiskError> {
        if batch.is_empty() {
            return Ok(());
        }
        let new_snapshot = batch.own_snapshot.as_ref().or(batch.snapshot.as_ref());
        if let (Some(received), Some(own)) = (&batch.snapshot, &batch.own_snapshot) {
            self.write_snapshot_file(received)?;
            self.write_snapshot_file(own)?;
        } else if let Some(snapshot) = new_snapshot {
            self.write_snapshot_file(snapshot)?;
        }
        let mut compacted = self.compacted.load(Ordering::Relaxed);
        let mut txn = self.db.begin_write().map_err(db_err)?;
        txn.set_durability(Durability::Immediate);
        {
            let mut entries = txn.open_table(ENTRIES).map_err(db_err)?;
            let mut meta = txn.open_table(META).map_err(db_err)?;
            if let Some(snapshot) = &batch.snapshot {
                let m = snapshot.get_metadata();
                // The snapshot replaces the whole log: everything after it goes now, everything
                // up to it becomes garbage behind the mark.
                entries.retain_in(m.index + 1.., |_, _| false).map_err(db_err)?;
                meta.insert(SNAPSHOT_META, encode(m).as_slice()).map_err(db_err)?;
                meta.insert(CONF_STATE, encode(m.get_conf_state()).as_slice()).map_err(db_err)?;
                meta.insert(COMPACTED, compaction_mark(m.index, m.term).as_slice()).map_err(db_err)?;
                compacted = m.index;
            }
            if let Some(first) = batch.entries.first() {
                entries.retain_in(first.index.., |_, _| false).map_err(db_err)?;
                for e in &batch.entries {
                    entries.insert(e.index, encode(e).as_slice()).map_err(db_err)?;
                }
            }
            if let Some(hs) = &batch.hard_state {
                meta.insert(HARD_STATE, encode(hs).as_slice()).map_err(db_err)?;
            }
            if let Some(cs) = &batch.conf_state {
                meta.insert(CONF_STATE, encode(cs).as_slice()).map_err(db_err)?;
            }
            if let Some(snapshot) = &batch.own_snapshot {
                meta.insert(SNAPSHOT_META, encode(snapshot.get_metadata()).as_slice()).map_err(db_err)?;
            }
            if let Some((index, term)) = batch.compact_through {
                if index > compacted {
                    meta.insert(COMPACTED, compaction_mark(index, term).as_slice()).map_err(db_err)?;
                    compacted = index;
                }
            }
            // Delete a bounded number of rows behind the mark.
            let first = entries.first().map_err(db_err)?.map(|(k, _)| k.value());
            if let Some(first) = first.filter(|&f| f <= compacted) {
                let budget = TRIM_PER_BATCH.max(2 * batch.entries.len() as u64);
                let last = compacted.min(first + budget - 1);
                entries.retain_in(first..=last, |_, _| false).map_err(db_err)?;
            }
        }
        txn.commit().map_err(db_err)?;
        self.compacted.store(compacted, Ordering::Relaxed);
        if let Some(snapshot) = new_snapshot {
            self.remove_snapshot_files_except(snapshot.get_metadata().index);
        }
        Ok(())
    }

    /// Deletes snapshot files other than the current one. Best effort: a leftover file is
    /// only wasted space.
    fn remove_snapshot_files_except(&self, keep: u64) {
        let keep = self.snapshot_path(keep);
        let Ok(dir) = fs::read_dir(&self.snapshot_dir) else { return };
        for entry in dir.flatten() {
            let path = entry.path();
            if path != keep && path.extension().is_some_and(|e| e == "snap") {
                let _ = fs::remove_file(path);
            }
        }
    }
}

fn encode(m: &impl protobuf::Message) -> Vec<u8> {
    m.write_to_bytes().expect("raft messages always encode")
}

fn decode<M: protobuf::Message>(bytes: &[u8], what: &'static str) -> Result<M, DiskError> {
    M::parse_from_bytes(bytes).map_err(|source| DiskError::Corrupt { what, source })
}

fn compaction_mark(index: u64, term: u64) -> [u8; 16] {
    let mut out = [0u8; 16];
    out[..8].copy_from_slice(&index.to_be_bytes());
    out[8..].copy_from_slice(&term.to_be_bytes());
    out
}

fn u64_from(bytes: &[u8]) -> u64 {
    u64::from_be_bytes(bytes.try_into().expect("8 bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use raft::prelude::{ConfState, Entry, HardState};

    fn entry(index: u64, term: u64, data: &str) -> Entry {
        Entry { index, term, data: data.as_bytes().to_vec().into(), ..Default::default() }
    }

    /// (index, term) of every entry, the compaction mark, commit, snapshot index, voters.
    type Summary = (Vec<(u64, u64)>, (u64, u64), u64, u64, Vec<u64>);

    fn summary(s: &LogState) -> Summary {
        (
            s.entries.iter().map(|e| (e.index, e.term)).collect(),
            s.compacted,
            s.hard_state.commit,
            s.snapshot_index(),
            s.conf_state.voters.clone(),
        )
    }

    /// The disk must mean exactly what `LogState::apply` means, across a reopen.
    #[test]
    fn reopened_disk_equals_the_reference_state() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().to_owned();
        let mut snapshot = Snapshot::default();
        snapshot.mut_metadata().index = 2;
        snapshot.mut_metadata().term = 1;
        snapshot.mut_metadata().mut_conf_state().voters = vec![1, 2, 3];
        snapshot.data = b"state".to_vec().into();
        let batches = vec![
            WriteBatch {
                entries: vec![entry(1, 1, "a"), entry(2, 1, "b"), entry(3, 1, "c")],
                hard_state: Some(HardState { term: 1, vote: 1, commit: 2, ..Default::default() }),
                conf_state: Some(ConfState { voters: vec![1, 2, 3], ..Default::default() }),
                ..Default::default()
            },
            WriteBatch { entries: vec![entry(3, 2, "c2"), entry(4, 2, "d")], ..Default::default() },
            WriteBatch { own_snapshot: Some(snapshot), compact_through: Some((1, 1)), ..Default::default() },
        ];
        let mut reference = LogState::default();
        {
            let (disk, initial) = DiskLog::open(&path).expect("open");
            assert_eq!(summary(&initial), summary(&LogState::default()));
            for b in &batches {
                reference.apply(b);
                disk.persist(b).expect("persist");
            }
        }
        let (_, reopened) = DiskLog::open(&path).expect("reopen");
        assert_eq!(summary(&reopened), summary(&reference));
        assert_eq!(reopened.entries.back().map(|e| e.data.to_vec()), Some(b"d".to_vec()));
        assert_eq!(reopened.snapshot.data.as_ref(), b"state");
    }

    #[test]
    fn a_received_snapshot_replaces_the_log_on_disk() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().to_owned();
        let mut snapshot = Snapshot::default();
        snapshot.mut_metadata().index = 50;
        snapshot.mut_metadata().term = 4;
        snapshot.mut_metadata().mut_conf_state().voters = vec![1, 2, 3];
        {
            let (disk, _) = DiskLog::open(&path).expect("open");
            disk.persist(&WriteBatch { entries: vec![entry(1, 1, "a"), entry(2, 1, "b")], ..Default::default() }).expect("persist");
            disk.persist(&WriteBatch { snapshot: Some(snapshot), ..Default::default() }).expect("persist");
        }
        let (_, s) = DiskLog::open(&path).expect("reopen");
        assert_eq!((s.first_index(), s.last_index(), s.term(50)), (51, 50, Some(4)));
        assert_eq!(s.conf_state.voters, [1, 2, 3]);
    }

    /// Compaction deletes old rows a bounded number per batch; whatever has not been deleted
    /// yet must never reappear after a reopen. Snapshot files other than the current one go.
    #[test]
    fn lazily_trimmed_rows_stay_invisible_and_old_snapshot_files_are_removed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().to_owned();
        let snapshot_at = |index: u64| {
            let mut s = Snapshot::default();
            s.mut_metadata().index = index;
            s.mut_metadata().term = 1;
            s.data = format!("state@{index}").into_bytes().into();
            s
        };
        let mut reference = LogState::default();
        {
            let (disk, _) = DiskLog::open(&path).expect("open");
            let all: Vec<Entry> = (1..=3000).map(|i| entry(i, 1, "x")).collect();
            let b = WriteBatch { entries: all, ..Default::default() };
            reference.apply(&b);
            disk.persist(&b).expect("persist");
            for (snap, compact) in [(1000, 900), (2500, 2400)] {
                let b = WriteBatch { own_snapshot: Some(snapshot_at(snap)), compact_through: Some((compact, 1)), ..Default::default() };
                reference.apply(&b);
                disk.persist(&b).expect("persist");
            }
        }
        let (disk, reopened) = DiskLog::open(&path).expect("reopen");
        assert_eq!(summary(&reopened), summary(&reference));
        assert_eq!(reopened.snapshot.data.as_ref(), b"state@2500");
        let files: Vec<_> = std::fs::read_dir(path.join("snapshots")).expect("dir").flatten().map(|e| e.file_name()).collect();
        assert_eq!(files.len(), 1, "only the current snapshot file remains: {files:?}");
        // Each further batch trims up to TRIM_PER_BATCH garbage rows; the mark never moves back.
        for i in 0..6 {
            disk.persist(&WriteBatch { hard_state: Some(HardState { commit: 3000 - i, ..Default::default() }), ..Default::default() })
                .expect("persist");
        }
        drop(disk);
        let (_, again) = DiskLog::open(&path).expect("reopen");
        assert_eq!((again.first_index(), again.last_index()), (2401, 3000));
    }
}
