//! The durable copy of a node's Raft state, in a redb database.
//!
//! One redb write transaction per [`WriteBatch`], committed with `Durability::Immediate`: a
//! whole Ready (every entry, the hard state, a snapshot) costs one fsync, and a crash leaves
//! either all of a batch or none of it. Every call blocks on disk IO, so async callers run it
//! on a blocking thread (see [`crate::node`]), never on the reactor.

use std::path::{Path, PathBuf};

use redb::{Database, Durability, TableDefinition};

use crate::storage::{LogState, WriteBatch};

const ENTRIES: TableDefinition<u64, &[u8]> = TableDefinition::new("raft_entries");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("raft_meta");

const HARD_STATE: &str = "hard_state";
const CONF_STATE: &str = "conf_state";
const SNAPSHOT: &str = "snapshot";
const COMPACTED: &str = "compacted";

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
}

fn db_err(e: impl Into<redb::Error>) -> DiskError {
    DiskError::Database(Box::new(e.into()))
}

/// A node's Raft log, hard state, conf state and latest snapshot on disk.
#[derive(Debug)]
pub struct DiskLog {
    db: Database,
}

impl DiskLog {
    /// Opens (or creates) the log at `path` and reads the state it holds.
    pub fn open(path: &Path) -> Result<(DiskLog, LogState), DiskError> {
        let db = Database::create(path).map_err(|source| DiskError::Open { path: path.to_owned(), source })?;
        // Create both tables up front so that reads never meet a missing table.
        let txn = db.begin_write().map_err(db_err)?;
        txn.open_table(ENTRIES).map_err(db_err)?;
        txn.open_table(META).map_err(db_err)?;
        txn.commit().map_err(db_err)?;
        let disk = DiskLog { db };
        let state = disk.load()?;
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
        if let Some(v) = meta.get(SNAPSHOT).map_err(db_err)? {
            state.snapshot = decode(v.value(), "snapshot")?;
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
        for row in entries.range(state.compacted.0 + 1..).map_err(db_err)? {
            let (_, v) = row.map_err(db_err)?;
            state.entries.push_back(decode(v.value(), "log entry")?);
        }
        Ok(state)
    }

    /// Makes a batch durable: one transaction, one fsync.
    pub fn persist(&self, batch: &WriteBatch) -> Result<(), DiskError> {
        if batch.is_empty() {
            return Ok(());
        }
        let mut txn = self.db.begin_write().map_err(db_err)?;
        txn.set_durability(Durability::Immediate);
        {
            let mut entries = txn.open_table(ENTRIES).map_err(db_err)?;
            let mut meta = txn.open_table(META).map_err(db_err)?;
            if let Some(snapshot) = &batch.snapshot {
                let m = snapshot.get_metadata();
                entries.retain(|_, _| false).map_err(db_err)?;
                meta.insert(SNAPSHOT, encode(snapshot).as_slice()).map_err(db_err)?;
                meta.insert(CONF_STATE, encode(m.get_conf_state()).as_slice()).map_err(db_err)?;
                meta.insert(COMPACTED, compaction_mark(m.index, m.term).as_slice()).map_err(db_err)?;
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
                meta.insert(SNAPSHOT, encode(snapshot).as_slice()).map_err(db_err)?;
            }
            if let Some((index, term)) = batch.compact_through {
                entries.retain_in(..=index, |_, _| false).map_err(db_err)?;
                meta.insert(COMPACTED, compaction_mark(index, term).as_slice()).map_err(db_err)?;
            }
        }
        txn.commit().map_err(db_err)
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
    use raft::prelude::{ConfState, Entry, HardState, Snapshot};

    fn entry(index: u64, term: u64, data: &str) -> Entry {
        Entry { index, term, data: data.as_bytes().to_vec().into(), ..Default::default() }
    }

    fn summary(s: &LogState) -> (Vec<(u64, u64)>, (u64, u64), u64, u64, Vec<u64>) {
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
        let path = dir.path().join("raft.redb");
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
        let path = dir.path().join("raft.redb");
        let mut snapshot = Snapshot::default();
        snapshot.mut_metadata().index = 50;
        snapshot.mut_metadata().term = 4;
        snapshot.mut_metadata().mut_conf_state().voters = vec![1, 2, 3];
        {
            let (disk, _) = DiskLog::open(&path).expect("open");
            disk.persist(&WriteBatch { entries: vec![entry(1, 1, "a"), entry(2, 1, "b")], ..Default::default() })
                .expect("persist");
            disk.persist(&WriteBatch { snapshot: Some(snapshot), ..Default::default() }).expect("persist");
        }
        let (_, s) = DiskLog::open(&path).expect("reopen");
        assert_eq!((s.first_index(), s.last_index(), s.term(50)), (51, 50, Some(4)));
        assert_eq!(s.conf_state.voters, [1, 2, 3]);
    }
}
