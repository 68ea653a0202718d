//! Reading a log kept by earlier versions, which stored it in a redb database (`raft.redb`),
//! so that a member upgraded in place keeps its log. [`super::DiskLog::open`] imports it into
//! the first segment once, then removes the database.

use std::path::Path;

use raft::prelude::SnapshotMetadata;
use redb::{Database, TableDefinition};

use super::DiskError;
use crate::storage::LogState;

pub const FILE_NAME: &str = "raft.redb";

const ENTRIES: TableDefinition<u64, &[u8]> = TableDefinition::new("raft_entries");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("raft_meta");

fn db_err(e: impl Into<redb::Error>) -> DiskError {
    DiskError::Import(Box::new(e.into()))
}

/// The state the database at `path` holds, with the snapshot's metadata only (its data is in
/// the snapshot file of its index, which the import leaves where it is).
pub fn load(path: &Path) -> Result<LogState, DiskError> {
    let db = Database::open(path).map_err(db_err)?;
    let txn = db.begin_read().map_err(db_err)?;
    let mut state = LogState::default();
    let meta = match txn.open_table(META) {
        Ok(meta) => meta,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(state),
        Err(e) => return Err(db_err(e)),
    };
    if let Some(v) = meta.get("hard_state").map_err(db_err)? {
        state.hard_state = super::decode(v.value(), "hard state")?;
    }
    if let Some(v) = meta.get("conf_state").map_err(db_err)? {
        state.conf_state = super::decode(v.value(), "conf state")?;
    }
    if let Some(v) = meta.get("snapshot_meta").map_err(db_err)? {
        let m: SnapshotMetadata = super::decode(v.value(), "snapshot metadata")?;
        state.snapshot.set_metadata(m);
    }
    if let Some(v) = meta.get("compacted").map_err(db_err)? {
        let bytes: [u8; 16] = v.value().try_into().map_err(|_| DiskError::Damaged {
            path: path.to_owned(),
            offset: 0,
            why: "the compaction mark is not 16 bytes".into(),
        })?;
        let (index, term) = bytes.split_at(8);
        state.compacted = (u64::from_be_bytes(index.try_into().expect("8 bytes")), u64::from_be_bytes(term.try_into().expect("8 bytes")));
    }
    let entries = txn.open_table(ENTRIES).map_err(db_err)?;
    // Rows at or below the mark may still exist (they were deleted lazily); skip them.
    for row in entries.range(state.compacted.0 + 1..).map_err(db_err)? {
        let (_, v) = row.map_err(db_err)?;
        state.entries.push_back(super::decode(v.value(), "log entry")?);
    }
    Ok(state)
}

/// Writes a database as earlier versions did, for the import's tests.
#[cfg(test)]
pub fn write_for_test(path: &Path, state: &LogState, garbage_rows: std::ops::RangeInclusive<u64>) {
    let encode = |m: &dyn protobuf::Message| m.write_to_bytes().expect("encodes");
    let db = Database::create(path).expect("create");
    let txn = db.begin_write().expect("begin");
    {
        let mut entries = txn.open_table(ENTRIES).expect("entries");
        for index in garbage_rows {
            entries.insert(index, b"garbage behind the mark".as_slice()).expect("insert");
        }
        for e in &state.entries {
            entries.insert(e.index, encode(e).as_slice()).expect("insert");
        }
        let mut meta = txn.open_table(META).expect("meta");
        meta.insert("hard_state", encode(&state.hard_state).as_slice()).expect("insert");
        meta.insert("conf_state", encode(&state.conf_state).as_slice()).expect("insert");
        meta.insert("snapshot_meta", encode(state.snapshot.get_metadata()).as_slice()).expect("insert");
        let mut mark = state.compacted.0.to_be_bytes().to_vec();
        mark.extend_from_slice(&state.compacted.1.to_be_bytes());
        meta.insert("compacted", mark.as_slice()).expect("insert");
    }
    txn.commit().expect("commit");
}
