//! Seeds a new member's empty data directory with a state taken from another cluster (a
//! backup), as if a leader had sent it a snapshot, under the new cluster's members. Every
//! member of the new cluster is seeded from the same backup, so they start with identical
//! logs and elect a leader in the next term.
//!
//! The new log does not continue at the backup's index but `bump` after it (as etcd's restore
//! `--bump-revision` with `--mark-compacted`): the old cluster went on writing after the
//! backup, and clients (edges watching their Assignments, controllers) hold resourceVersions
//! from then. Continued at the backup's index, the new cluster would reuse those numbers for
//! other changes, and a watch resumed from one would silently skip them. Bumped, every such
//! version is older than the new history starts, so the watch is answered 410 Gone and the
//! client lists again. Objects keep their resourceVersions (compare-and-swap still works).

use std::path::Path;

use edgeplane_core::ClusterState;
use raft::prelude::{ConfState, HardState, Snapshot};

use crate::disk::{DiskError, DiskLog};
use crate::storage::WriteBatch;

/// Why a data directory was not seeded.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error("{dir} already holds a Raft log (last index {last_index}); restore only into an empty data directory")]
    NotEmpty { dir: String, last_index: u64 },
    #[error("the backup's state does not decode")]
    Undecodable(#[source] serde_json::Error),
    #[error("the backup's state is at index {state}, its header says {header}")]
    IndexMismatch { state: u64, header: u64 },
    #[error("index {index} bumped by {bump} does not fit in 64 bits")]
    IndexOverflow { index: u64, bump: u64 },
    #[error("the new cluster has no members")]
    NoMembers,
    #[error(transparent)]
    Disk(#[from] DiskError),
}

/// Writes `state` (the state machine's snapshot encoding, taken at `index` in `term`) into the
/// empty data directory `dir` as a snapshot at `index + bump` of a cluster of `voters`.
/// Returns the state as restored, for the caller to report on.
pub fn seed(dir: &Path, state: &[u8], index: u64, term: u64, voters: Vec<u64>, bump: u64) -> Result<ClusterState, RestoreError> {
    if voters.is_empty() {
        return Err(RestoreError::NoMembers);
    }
    let decoded = ClusterState::from_snapshot(state).map_err(RestoreError::Undecodable)?;
    if decoded.applied_index() != index {
        return Err(RestoreError::IndexMismatch { state: decoded.applied_index(), header: index });
    }
    let at = index.checked_add(bump).ok_or(RestoreError::IndexOverflow { index, bump })?;
    let restored = decoded.continued_at(at);
    let (disk, log) = DiskLog::open(dir)?;
    if log.last_index() != 0 || log.snapshot_index() != 0 || log.hard_state != HardState::default() {
        return Err(RestoreError::NotEmpty { dir: dir.display().to_string(), last_index: log.last_index() });
    }
    // A term of at least 1: term 0 is raft-rs's "nothing yet".
    let term = term.max(1);
    let mut snapshot = Snapshot { data: restored.to_snapshot().into(), ..Snapshot::default() };
    let meta = snapshot.mut_metadata();
    meta.index = at;
    meta.term = term;
    meta.set_conf_state(ConfState { voters, ..ConfState::default() });
    let hard_state = HardState { term, vote: 0, commit: at, ..HardState::default() };
    disk.persist(&WriteBatch { snapshot: Some(snapshot), hard_state: Some(hard_state), ..WriteBatch::default() })?;
    Ok(restored)
}

#[cfg(test)]
mod tests {
    use edgeplane_core::{Command, ObjectKey, Precondition};

    use super::*;
    use crate::engine::{Engine, EngineConfig};

    fn state_at(index: u64) -> ClusterState {
        let mut state = ClusterState::default();
        for i in 1..=index {
            let put = Command::Put {
                key: ObjectKey::new("things", "", format!("t{i}")),
                value: serde_json::json!(i),
                precondition: Precondition::None,
            };
            state.apply_entry(i, &put.encode(), None);
        }
        state
    }

    #[test]
    fn a_seeded_directory_opens_as_the_backed_up_state_under_the_new_members() {
        let dir = tempfile::tempdir().expect("tempdir");
        let original = state_at(5);
        seed(dir.path(), &original.to_snapshot(), 5, 3, vec![1, 2, 3], 1000).expect("seeded");
        let (_, log) = DiskLog::open(dir.path()).expect("opens");
        assert_eq!((log.snapshot_index(), log.hard_state.commit, log.hard_state.term), (1005, 1005, 3));
        assert_eq!(log.conf_state.voters, vec![1, 2, 3]);
        let engine = Engine::new(EngineConfig::new(2, vec![1, 2, 3]), log, &crate::logging::raft_logger()).expect("engine");
        assert_eq!(engine.state(), &original.clone().continued_at(1005), "the engine starts from the backup's state");
        assert_eq!(engine.status().applied_index, 1005);
        let thing = ObjectKey::new("things", "", "t5");
        assert_eq!(engine.state().get(&thing).map(|o| o.resource_version), Some(5), "objects keep their versions");

        let again = seed(dir.path(), &original.to_snapshot(), 5, 3, vec![1, 2, 3], 1000).expect_err("not empty");
        assert!(matches!(again, RestoreError::NotEmpty { .. }), "{again}");
    }

    #[test]
    fn a_state_that_does_not_match_its_header_is_refused_before_anything_is_written() {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = state_at(4).to_snapshot();
        assert!(matches!(seed(dir.path(), &state, 5, 3, vec![1], 10), Err(RestoreError::IndexMismatch { state: 4, header: 5 })));
        assert!(matches!(seed(dir.path(), b"{not json", 5, 3, vec![1], 10), Err(RestoreError::Undecodable(_))));
        assert!(!dir.path().join(crate::disk::LOG_DIR).exists(), "nothing written for a refused backup");
    }
}
