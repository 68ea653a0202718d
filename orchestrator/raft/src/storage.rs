//! The Raft log as raft-rs reads it, and the batches of changes that make it durable.
//!
//! A node's log lives in memory ([`LogStore`], which raft-rs reads through [`raft::Storage`]) and
//! on disk (see [`crate::disk`]). Every change is described once, as a [`WriteBatch`]; the
//! engine applies it to memory and hands the same batch to the disk, so memory and disk can only
//! differ by batches not yet persisted. [`LogState::apply`] is the reference meaning of a batch.

use std::collections::VecDeque;

use raft::prelude::*;
use raft::{GetEntriesContext, StorageError};

/// Changes to a node's durable Raft state, applied in field order, atomically.
#[derive(Debug, Default, Clone)]
pub struct WriteBatch {
    /// A snapshot received from the leader: replaces the whole log and the conf state.
    pub snapshot: Option<Snapshot>,
    /// New entries; any existing entry at or after `entries[0].index` is replaced.
    pub entries: Vec<Entry>,
    pub hard_state: Option<HardState>,
    pub conf_state: Option<ConfState>,
    /// A snapshot this node took of its own state (kept so it can be sent to followers).
    pub own_snapshot: Option<Snapshot>,
    /// Discard entries up to and including this index, remembering its term.
    pub compact_through: Option<(u64, u64)>,
}

impl WriteBatch {
    pub fn is_empty(&self) -> bool {
        self.snapshot.is_none()
            && self.entries.is_empty()
            && self.hard_state.is_none()
            && self.conf_state.is_none()
            && self.own_snapshot.is_none()
            && self.compact_through.is_none()
    }

    /// Folds `later` into `self` so that applying the result equals applying both in order.
    pub fn merge(&mut self, later: WriteBatch) {
        if let Some(snapshot) = later.snapshot {
            // A received snapshot replaces everything before it.
            *self = WriteBatch { snapshot: Some(snapshot), ..WriteBatch::default() };
        }
        if let Some(first) = later.entries.first() {
            self.entries.retain(|e| e.index < first.index);
            self.entries.extend(later.entries);
        }
        if later.hard_state.is_some() {
            self.hard_state = later.hard_state;
        }
        if later.conf_state.is_some() {
            self.conf_state = later.conf_state;
        }
        if later.own_snapshot.is_some() {
            self.own_snapshot = later.own_snapshot;
        }
        if later.compact_through.is_some() {
            self.compact_through = later.compact_through;
        }
    }
}

/// A node's whole Raft state: what is on disk, and (ahead of it by unpersisted batches) in memory.
#[derive(Debug, Clone, Default)]
pub struct LogState {
    pub hard_state: HardState,
    pub conf_state: ConfState,
    /// The newest snapshot, with its data; index 0 when there is none.
    pub snapshot: Snapshot,
    /// Index and term of the last discarded entry: the log starts right after it.
    pub compacted: (u64, u64),
    pub entries: VecDeque<Entry>,
}

impl LogState {
    pub fn first_index(&self) -> u64 {
        self.compacted.0 + 1
    }

    pub fn last_index(&self) -> u64 {
        self.entries.back().map_or(self.compacted.0, |e| e.index)
    }

    pub fn snapshot_index(&self) -> u64 {
        self.snapshot.get_metadata().index
    }

    /// The term of the entry at `index`, if the log still knows it.
    pub fn term(&self, index: u64) -> Option<u64> {
        if index == self.compacted.0 {
            return Some(self.compacted.1);
        }
        if index < self.first_index() || index > self.last_index() {
            return None;
        }
        Some(self.entries[(index - self.first_index()) as usize].term)
    }

    /// The entry at `index`, if the log holds it.
    pub fn entry(&self, index: u64) -> Option<&Entry> {
        if index < self.first_index() || index > self.last_index() {
            return None;
        }
        self.entries.get((index - self.first_index()) as usize)
    }

    /// Applies a batch: the reference semantics every store must implement.
    pub fn apply(&mut self, batch: &WriteBatch) {
        if let Some(snapshot) = &batch.snapshot {
            let meta = snapshot.get_metadata();
            self.entries.clear();
            self.compacted = (meta.index, meta.term);
            self.conf_state = meta.get_conf_state().clone();
            self.snapshot = snapshot.clone();
        }
        if let Some(first) = batch.entries.first() {
            assert!(
                first.index > self.compacted.0 && first.index <= self.last_index() + 1,
                "appending entries from {} to a log covering {}..={}",
                first.index,
                self.first_index(),
                self.last_index()
            );
            self.entries.truncate((first.index - self.first_index()) as usize);
            self.entries.extend(batch.entries.iter().cloned());
        }
        if let Some(hs) = &batch.hard_state {
            self.hard_state = hs.clone();
        }
        if let Some(cs) = &batch.conf_state {
            self.conf_state = cs.clone();
        }
        if let Some(snapshot) = &batch.own_snapshot {
            self.snapshot = snapshot.clone();
        }
        if let Some((index, term)) = batch.compact_through {
            if index > self.compacted.0 {
                let drop = (index - self.compacted.0).min(self.entries.len() as u64) as usize;
                self.entries.drain(..drop);
                self.compacted = (index, term);
            }
        }
    }
}

/// The in-memory log that raft-rs reads. Owned by the `RawNode`; changed only through
/// [`LogState::apply`] by the engine.
#[derive(Debug, Default)]
pub struct LogStore {
    pub(crate) state: LogState,
}

impl LogStore {
    pub fn new(state: LogState) -> Self {
        LogStore { state }
    }

    pub fn state(&self) -> &LogState {
        &self.state
    }
}

impl Storage for LogStore {
    fn initial_state(&self) -> raft::Result<RaftState> {
        Ok(RaftState { hard_state: self.state.hard_state.clone(), conf_state: self.state.conf_state.clone() })
    }

    fn entries(&self, low: u64, high: u64, max_size: impl Into<Option<u64>>, _context: GetEntriesContext) -> raft::Result<Vec<Entry>> {
        let s = &self.state;
        if low < s.first_index() {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        assert!(high <= s.last_index() + 1, "entries up to {high} requested, log ends at {}", s.last_index());
        let max_size = max_size.into().unwrap_or(u64::MAX);
        let offset = s.first_index();
        let mut size = 0u64;
        let mut out = Vec::with_capacity((high - low) as usize);
        for e in s.entries.range((low - offset) as usize..(high - offset) as usize) {
            size += u64::from(protobuf::Message::compute_size(e));
            // raft-rs requires at least one entry even when it alone exceeds the limit.
            if !out.is_empty() && size > max_size {
                break;
            }
            out.push(e.clone());
        }
        Ok(out)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        let s = &self.state;
        if idx == s.snapshot_index() && idx != 0 {
            return Ok(s.snapshot.get_metadata().term);
        }
        match s.term(idx) {
            Some(t) => Ok(t),
            None if idx < s.first_index() => Err(raft::Error::Store(StorageError::Compacted)),
            None => Err(raft::Error::Store(StorageError::Unavailable)),
        }
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.state.first_index())
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.state.last_index())
    }

    fn snapshot(&self, request_index: u64, _to: u64) -> raft::Result<Snapshot> {
        // The engine snapshots regularly; until the first one exists (or while ours is older
        // than asked for), raft-rs retries later.
        if self.state.snapshot_index() == 0 || self.state.snapshot_index() < request_index {
            return Err(raft::Error::Store(StorageError::SnapshotTemporarilyUnavailable));
        }
        Ok(self.state.snapshot.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(index: u64, term: u64) -> Entry {
        Entry { index, term, ..Default::default() }
    }

    fn batch_of(entries: &[(u64, u64)]) -> WriteBatch {
        WriteBatch { entries: entries.iter().map(|&(i, t)| entry(i, t)).collect(), ..Default::default() }
    }

    #[test]
    fn appending_over_a_conflict_truncates_the_suffix() {
        let mut log = LogState::default();
        log.apply(&batch_of(&[(1, 1), (2, 1), (3, 1)]));
        log.apply(&batch_of(&[(2, 2)]));
        let terms: Vec<_> = log.entries.iter().map(|e| (e.index, e.term)).collect();
        assert_eq!(terms, [(1, 1), (2, 2)]);
    }

    #[test]
    fn compaction_keeps_the_term_of_the_last_discarded_entry() {
        let mut log = LogState::default();
        log.apply(&batch_of(&[(1, 1), (2, 1), (3, 2), (4, 2)]));
        log.apply(&WriteBatch { compact_through: Some((3, 2)), ..Default::default() });
        assert_eq!((log.first_index(), log.last_index()), (4, 4));
        assert_eq!(log.term(3), Some(2));
        assert_eq!(log.term(2), None);
    }

    #[test]
    fn a_received_snapshot_replaces_the_log() {
        let mut log = LogState::default();
        log.apply(&batch_of(&[(1, 1), (2, 1)]));
        let mut snapshot = Snapshot::default();
        snapshot.mut_metadata().index = 10;
        snapshot.mut_metadata().term = 3;
        snapshot.mut_metadata().mut_conf_state().voters = vec![1, 2, 3];
        log.apply(&WriteBatch { snapshot: Some(snapshot), ..Default::default() });
        assert_eq!((log.first_index(), log.last_index(), log.term(10)), (11, 10, Some(3)));
        assert_eq!(log.conf_state.voters, [1, 2, 3]);
    }

    #[test]
    fn merged_batches_apply_like_the_sequence() {
        let steps = [
            batch_of(&[(1, 1), (2, 1), (3, 1)]),
            WriteBatch { compact_through: Some((1, 1)), ..batch_of(&[(3, 2), (4, 2)]) },
            batch_of(&[(5, 2)]),
        ];
        let mut sequential = LogState::default();
        let mut merged_batch = WriteBatch::default();
        for b in &steps {
            sequential.apply(b);
            merged_batch.merge(b.clone());
        }
        let mut merged = LogState::default();
        merged.apply(&merged_batch);
        let pairs = |s: &LogState| s.entries.iter().map(|e| (e.index, e.term)).collect::<Vec<_>>();
        assert_eq!(pairs(&merged), pairs(&sequential));
        assert_eq!(merged.compacted, sequential.compacted);
    }

    #[test]
    fn entries_respect_max_size_but_return_at_least_one() {
        let mut log = LogState::default();
        let big = |i| Entry { index: i, term: 1, data: vec![0u8; 100].into(), ..Default::default() };
        log.apply(&WriteBatch { entries: (1..=5).map(big).collect(), ..Default::default() });
        let store = LogStore::new(log);
        let one = store.entries(1, 6, 10, GetEntriesContext::empty(false)).expect("entries");
        assert_eq!(one.len(), 1);
        let all = store.entries(1, 6, None, GetEntriesContext::empty(false)).expect("entries");
        assert_eq!(all.len(), 5);
    }
}
