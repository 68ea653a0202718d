//! The durable copy of a node's Raft state: an append-only log of batches in segment files,
//! and snapshot files.
//!
//! Each [`WriteBatch`] is one record appended to the active segment, then one `fdatasync`: a
//! whole Ready (every entry, the hard state) costs one write and one sync, and a crash leaves
//! either all of a batch or none of it (each record carries its length and a CRC-32; a record
//! cut short by a crash is the last one, and opening drops it). Nothing is ever rewritten in
//! place, so the cost of a batch is encoding its entries once and the sync.
//!
//! The log is read only when a node starts: the engine keeps the whole uncompacted log in
//! memory (see [`crate::storage`]). Opening replays every segment in order. A segment starts
//! with a checkpoint of the small state (hard state, conf state, snapshot metadata, compaction
//! mark) as of its creation, so older segments can go once every entry they hold is behind the
//! compaction mark or was replaced later; the oldest segment kept is where the replay starts.
//!
//! Snapshots are large and rare, so they live in their own files, written and fsynced before
//! the record that points at them. Every call blocks on disk IO: async callers run it on a
//! blocking thread (see [`crate::node`]), never on the reactor.

mod record;
mod redb_import;

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use edgeplane_tls::durable;
use raft::prelude::{ConfState, HardState, Snapshot, SnapshotMetadata};

use crate::storage::{LogState, WriteBatch};

/// The directory of segment files inside a node's data directory.
pub const LOG_DIR: &str = "raft-log";

/// A segment this large is closed and a new one begun. Large enough that rolling over (one
/// small file and two syncs) is rare, small enough that a compacted log frees its disk soon.
const SEGMENT_BYTES: u64 = 64 * 1024 * 1024;

/// Why the durable log could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    #[error("the Raft log at {path} is in use by another process")]
    InUse { path: PathBuf },
    #[error("the Raft log's file {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the Raft log's file {path} is damaged at byte {offset}: {why}")]
    Damaged { path: PathBuf, offset: u64, why: String },
    #[error("the Raft log holds a corrupt {what}")]
    Corrupt {
        what: &'static str,
        #[source]
        source: protobuf::ProtobufError,
    },
    #[error("cannot import the Raft log from an earlier version's {}", redb_import::FILE_NAME)]
    Import(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("an earlier write to the Raft log failed; nothing more is written until a restart reads the log again")]
    Failed,
    #[error("snapshot file {path}")]
    SnapshotFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn io_at(path: &Path) -> impl FnOnce(std::io::Error) -> DiskError + '_ {
    move |source| DiskError::Io { path: path.to_owned(), source }
}

/// A node's Raft log, hard state, conf state and latest snapshot on disk.
#[derive(Debug)]
pub struct DiskLog {
    log_dir: PathBuf,
    snapshot_dir: PathBuf,
    segment_bytes: u64,
    segments: Mutex<Segments>,
    /// Held (locked) for as long as this value lives: one process per log.
    _lock: File,
}

/// The segment files and what the disk holds, as of the last batch made durable.
#[derive(Debug)]
struct Segments {
    /// The active segment, open for appending.
    file: File,
    active: Segment,
    /// Closed segments still needed, oldest first.
    closed: VecDeque<Segment>,
    durable: Checkpoint,
    /// Reused for encoding each batch.
    buffer: Vec<u8>,
    /// Set when a write or sync failed: the file's tail is unknown, so nothing more may be
    /// appended after it.
    failed: bool,
}

#[derive(Debug)]
struct Segment {
    number: u64,
    bytes: u64,
    /// The highest index among this segment's entries that no later batch replaced; 0 when
    /// none is left. The segment is garbage once the compaction mark reaches it.
    live_through: u64,
}

/// The small part of the durable state, which every new segment starts with.
#[derive(Debug, Default, Clone)]
struct Checkpoint {
    hard_state: HardState,
    conf_state: ConfState,
    snapshot: SnapshotMetadata,
    compacted: (u64, u64),
}

impl Checkpoint {
    fn of(state: &LogState) -> Checkpoint {
        Checkpoint {
            hard_state: state.hard_state.clone(),
            conf_state: state.conf_state.clone(),
            snapshot: state.snapshot.get_metadata().clone(),
            compacted: state.compacted,
        }
    }

    /// Follows a batch, as `LogState::apply` would.
    fn note(&mut self, batch: &WriteBatch) {
        if let Some(snapshot) = &batch.snapshot {
            let m = snapshot.get_metadata();
            self.compacted = (m.index, m.term);
            self.conf_state = m.get_conf_state().clone();
            self.snapshot = m.clone();
        }
        if let Some(hs) = &batch.hard_state {
            self.hard_state = hs.clone();
        }
        if let Some(cs) = &batch.conf_state {
            self.conf_state = cs.clone();
        }
        if let Some(snapshot) = &batch.own_snapshot {
            self.snapshot = snapshot.get_metadata().clone();
        }
        if let Some(mark) = batch.compact_through {
            if mark.0 > self.compacted.0 {
                self.compacted = mark;
            }
        }
    }

    /// The checkpoint as a batch without entries: a segment's first record.
    fn to_batch(&self) -> WriteBatch {
        let snapshot = (self.snapshot.index > 0).then(|| {
            let mut s = Snapshot::default();
            s.set_metadata(self.snapshot.clone());
            s
        });
        WriteBatch {
            hard_state: Some(self.hard_state.clone()),
            conf_state: Some(self.conf_state.clone()),
            own_snapshot: snapshot,
            compact_through: (self.compacted.0 > 0).then_some(self.compacted),
            ..WriteBatch::default()
        }
    }
}

/// Follows which entries each segment still holds live once `batch` is appended to the
/// `active` one: what writing does and what replaying does.
fn follow_live_marks<'a>(older: impl Iterator<Item = &'a mut u64>, active: &mut u64, batch: &WriteBatch) {
    let first = batch.entries.first().map(|e| e.index);
    let follow = |mark: &mut u64| {
        if batch.snapshot.is_some() {
            // A received snapshot replaces the whole log.
            *mark = 0;
        }
        if let Some(first) = first {
            // Entries from `first` on are replaced.
            *mark = (*mark).min(first - 1);
        }
    };
    older.for_each(follow);
    follow(active);
    if let Some(last) = batch.entries.last() {
        *active = last.index;
    }
}

impl DiskLog {
    /// Opens (or creates) the log in `dir` (`raft-log/` and `snapshots/`) and reads the state
    /// it holds. A log kept by an earlier version in `raft.redb` is imported first.
    pub fn open(dir: &Path) -> Result<(DiskLog, LogState), DiskError> {
        Self::open_with(dir, SEGMENT_BYTES)
    }

    fn open_with(dir: &Path, segment_bytes: u64) -> Result<(DiskLog, LogState), DiskError> {
        let log_dir = dir.join(LOG_DIR);
        let snapshot_dir = dir.join("snapshots");
        for d in [&log_dir, &snapshot_dir] {
            fs::create_dir_all(d).map_err(io_at(d))?;
        }
        let lock_path = log_dir.join("LOCK");
        let lock = OpenOptions::new().create(true).truncate(false).write(true).open(&lock_path).map_err(io_at(&lock_path))?;
        lock.try_lock().map_err(|e| match e {
            fs::TryLockError::WouldBlock => DiskError::InUse { path: log_dir.clone() },
            fs::TryLockError::Error(source) => DiskError::Io { path: lock_path.clone(), source },
        })?;
        let mut numbers = segment_numbers(&log_dir)?;
        let legacy = dir.join(redb_import::FILE_NAME);
        if numbers.is_empty() {
            let imported = if legacy.exists() { redb_import::load(&legacy)? } else { LogState::default() };
            write_first_segment(&log_dir, &imported)?;
            numbers.push(1);
        }
        if legacy.exists() {
            // Imported into the first segment, which is durable by now.
            fs::remove_file(&legacy).map_err(io_at(&legacy))?;
            durable::sync_dir_of(&legacy).map_err(io_at(&legacy))?;
        }
        let mut replay = Replay::default();
        let mut segments = Vec::with_capacity(numbers.len());
        for (i, &number) in numbers.iter().enumerate() {
            let path = segment_path(&log_dir, number);
            let bytes = replay.segment(&path, i + 1 == numbers.len())?;
            segments.push(Segment { number, bytes, live_through: 0 });
        }
        let (mut state, marks) = replay.finish(&log_dir)?;
        for (segment, live_through) in segments.iter_mut().zip(marks) {
            segment.live_through = live_through;
        }
        let durable = Checkpoint::of(&state);
        let active = segments.pop().expect("at least the first segment");
        let active_path = segment_path(&log_dir, active.number);
        let file = OpenOptions::new().append(true).open(&active_path).map_err(io_at(&active_path))?;
        let segments = Segments { file, active, closed: segments.into(), durable, buffer: Vec::new(), failed: false };
        let disk = DiskLog { log_dir, snapshot_dir, segment_bytes, segments: Mutex::new(segments), _lock: lock };
        if state.snapshot_index() > 0 {
            let path = disk.snapshot_path(state.snapshot_index());
            let bytes = fs::read(&path).map_err(|source| DiskError::SnapshotFile { path, source })?;
            let snapshot: Snapshot = decode(&bytes, "snapshot file")?;
            state.snapshot = snapshot;
        }
        Ok((disk, state))
    }

    fn snapshot_path(&self, index: u64) -> PathBuf {
        self.snapshot_dir.join(format!("{index:020}.snap"))
    }

    /// Writes a snapshot's file durably (temporary file, fsync, rename, fsync of the
    /// directory). Done before any record refers to it; idempotent.
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

    /// Makes a batch durable: one record appended, one `fdatasync` (plus the snapshot file's,
    /// if the batch brings a snapshot whose file is not written yet).
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
        let mut guard = self.segments.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let segments = &mut *guard;
        if segments.failed {
            return Err(DiskError::Failed);
        }
        segments.buffer.clear();
        record::encode(&mut segments.buffer, batch);
        let written = segments.file.write_all(&segments.buffer).and_then(|()| segments.file.sync_data());
        if let Err(source) = written {
            segments.failed = true;
            return Err(DiskError::Io { path: segment_path(&self.log_dir, segments.active.number), source });
        }
        segments.active.bytes += segments.buffer.len() as u64;
        segments.durable.note(batch);
        follow_live_marks(segments.closed.iter_mut().map(|s| &mut s.live_through), &mut segments.active.live_through, batch);
        if segments.active.bytes >= self.segment_bytes {
            self.roll_over(segments)?;
        }
        self.remove_garbage_segments(segments);
        drop(guard);
        if let Some(snapshot) = new_snapshot {
            self.remove_snapshot_files_except(snapshot.get_metadata().index);
        }
        Ok(())
    }

    /// Closes the active segment and begins the next, which starts with a checkpoint.
    fn roll_over(&self, segments: &mut Segments) -> Result<(), DiskError> {
        let number = segments.active.number + 1;
        let mut bytes = record::MAGIC.to_vec();
        record::encode(&mut bytes, &segments.durable.to_batch());
        let path = segment_path(&self.log_dir, number);
        durable::write_atomically(&path, &bytes, durable::Access::Shared).map_err(io_at(&path))?;
        segments.file = OpenOptions::new().append(true).open(&path).map_err(io_at(&path))?;
        let closed = std::mem::replace(&mut segments.active, Segment { number, bytes: bytes.len() as u64, live_through: 0 });
        segments.closed.push_back(closed);
        Ok(())
    }

    /// Deletes the oldest closed segments while nothing in them is needed any more. Best
    /// effort: a segment left behind costs disk space, and replays to the same state.
    fn remove_garbage_segments(&self, segments: &mut Segments) {
        while let Some(oldest) = segments.closed.front() {
            if oldest.live_through > segments.durable.compacted.0 {
                break;
            }
            let path = segment_path(&self.log_dir, oldest.number);
            if let Err(e) = fs::remove_file(&path) {
                tracing::warn!(path = %path.display(), error = %e, "cannot delete a Raft log segment that is no longer needed");
                break;
            }
            segments.closed.pop_front();
        }
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

    #[cfg(test)]
    fn segment_count(&self) -> usize {
        let segments = self.segments.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        segments.closed.len() + 1
    }
}

fn segment_path(log_dir: &Path, number: u64) -> PathBuf {
    log_dir.join(format!("{number:020}.seg"))
}

/// The numbers of the segment files in `log_dir`, in order. Removes temporary files a crash
/// left behind while a segment was being created.
fn segment_numbers(log_dir: &Path) -> Result<Vec<u64>, DiskError> {
    let mut numbers = Vec::new();
    for entry in fs::read_dir(log_dir).map_err(io_at(log_dir))? {
        let path = entry.map_err(io_at(log_dir))?.path();
        match path.extension().and_then(|e| e.to_str()) {
            Some("seg") => {
                let number = path.file_stem().and_then(|s| s.to_str()).and_then(|s| s.parse::<u64>().ok());
                numbers.push(number.ok_or_else(|| DiskError::Damaged {
                    path: path.clone(),
                    offset: 0,
                    why: "not a segment's name".into(),
                })?);
            }
            Some("tmp") => fs::remove_file(&path).map_err(io_at(&path))?,
            _ => {}
        }
    }
    numbers.sort_unstable();
    Ok(numbers)
}

/// The first segment of a new log (or of one imported from redb): a checkpoint, then the
/// entries. Created whole under a temporary name, so it exists complete or not at all.
fn write_first_segment(log_dir: &Path, state: &LogState) -> Result<(), DiskError> {
    let mut bytes = record::MAGIC.to_vec();
    record::encode(&mut bytes, &Checkpoint::of(state).to_batch());
    if !state.entries.is_empty() {
        record::encode(&mut bytes, &WriteBatch { entries: state.entries.iter().cloned().collect(), ..WriteBatch::default() });
    }
    let path = segment_path(log_dir, 1);
    durable::write_atomically(&path, &bytes, durable::Access::Shared).map_err(io_at(&path))
}

/// Rebuilds the state from the segments, oldest first.
///
/// Unlike `LogState::apply`, the replay accepts entries that do not continue the log: the
/// segments holding the entries before them may have been deleted, once compacted. Such a gap
/// is fine if the compaction mark ends up at or past it, and damage otherwise.
#[derive(Default)]
struct Replay {
    state: LogState,
    /// Entries at or below this index are missing; the final mark must cover them.
    gap_below: u64,
    /// Per segment read so far: the highest index it holds live.
    live_marks: Vec<u64>,
}

impl Replay {
    /// Replays one segment file; returns its length once any torn tail is cut off. Only the
    /// last segment may end in a torn record: the one write a crash interrupted.
    fn segment(&mut self, path: &Path, last: bool) -> Result<u64, DiskError> {
        let bytes = fs::read(path).map_err(io_at(path))?;
        let damaged = |offset: usize, why: String| DiskError::Damaged { path: path.to_owned(), offset: offset as u64, why };
        if !bytes.starts_with(record::MAGIC) {
            return Err(damaged(0, "not a segment of this format".into()));
        }
        self.live_marks.push(0);
        let mut offset = record::MAGIC.len();
        while let Some(next) = record::next(&bytes[offset..]) {
            match next {
                Ok((batch, length)) => {
                    self.apply(batch);
                    offset += length;
                }
                // A crash interrupts at most the last write, which leaves the last record short,
                // or (on file systems that grow a file before writing its data) whole but wrong.
                Err(record::Damage::Truncated | record::Damage::Checksum) if last && record::ends_at_or_past(&bytes[offset..]) => {
                    tracing::warn!(path = %path.display(), offset, dropped = bytes.len() - offset, "dropping a Raft log record a crash cut short");
                    let file = OpenOptions::new().write(true).open(path).map_err(io_at(path))?;
                    file.set_len(offset as u64).and_then(|()| file.sync_all()).map_err(io_at(path))?;
                    break;
                }
                Err(damage) => return Err(damaged(offset, damage.to_string())),
            }
        }
        Ok(offset as u64)
    }

    fn apply(&mut self, batch: WriteBatch) {
        let (active, older) = self.live_marks.split_last_mut().expect("inside a segment");
        follow_live_marks(older.iter_mut(), active, &batch);
        let state = &mut self.state;
        if let Some(snapshot) = &batch.snapshot {
            let m = snapshot.get_metadata();
            state.entries.clear();
            state.compacted = (m.index, m.term);
            state.conf_state = m.get_conf_state().clone();
            state.snapshot = snapshot.clone();
        }
        if let Some(first) = batch.entries.first() {
            match (state.entries.front().map(|e| e.index), state.entries.back().map(|e| e.index)) {
                (Some(front), Some(back)) if front <= first.index && first.index <= back + 1 => {
                    state.entries.truncate((first.index - front) as usize);
                }
                _ => {
                    state.entries.clear();
                    if first.index > state.compacted.0 + 1 {
                        self.gap_below = self.gap_below.max(first.index - 1);
                    }
                }
            }
            state.entries.extend(batch.entries);
        }
        if let Some(hs) = batch.hard_state {
            state.hard_state = hs;
        }
        if let Some(cs) = batch.conf_state {
            state.conf_state = cs;
        }
        if let Some(snapshot) = batch.own_snapshot {
            state.snapshot = snapshot;
        }
        if let Some((index, term)) = batch.compact_through {
            if index > state.compacted.0 {
                state.compacted = (index, term);
                while state.entries.front().is_some_and(|e| e.index <= index) {
                    state.entries.pop_front();
                }
            }
        }
    }

    /// The state replayed (snapshot metadata only), and each segment's live mark.
    fn finish(mut self, log_dir: &Path) -> Result<(LogState, Vec<u64>), DiskError> {
        let state = &mut self.state;
        while state.entries.front().is_some_and(|e| e.index <= state.compacted.0) {
            state.entries.pop_front();
        }
        let starts_after_mark = state.entries.front().is_none_or(|e| e.index == state.compacted.0 + 1);
        if self.gap_below > state.compacted.0 || !starts_after_mark {
            return Err(DiskError::Damaged {
                path: log_dir.to_owned(),
                offset: 0,
                why: format!("entries after index {} are missing: a segment was deleted or lost", state.compacted.0),
            });
        }
        Ok((self.state, self.live_marks))
    }
}

fn encode(m: &impl protobuf::Message) -> Vec<u8> {
    m.write_to_bytes().expect("raft messages always encode")
}

fn decode<M: protobuf::Message>(bytes: &[u8], what: &'static str) -> Result<M, DiskError> {
    M::parse_from_bytes(bytes).map_err(|source| DiskError::Corrupt { what, source })
}

#[cfg(test)]
mod tests {
    use super::*;
    use raft::prelude::Entry;

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

    fn snapshot_at(index: u64, term: u64) -> Snapshot {
        let mut s = Snapshot::default();
        s.mut_metadata().index = index;
        s.mut_metadata().term = term;
        s.mut_metadata().mut_conf_state().voters = vec![1, 2, 3];
        s.data = format!("state@{index}").into_bytes().into();
        s
    }

    /// The disk must mean exactly what `LogState::apply` means, across a reopen.
    #[test]
    fn reopened_disk_equals_the_reference_state() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().to_owned();
        let batches = vec![
            WriteBatch {
                entries: vec![entry(1, 1, "a"), entry(2, 1, "b"), entry(3, 1, "c")],
                hard_state: Some(HardState { term: 1, vote: 1, commit: 2, ..Default::default() }),
                conf_state: Some(ConfState { voters: vec![1, 2, 3], ..Default::default() }),
                ..Default::default()
            },
            WriteBatch { entries: vec![entry(3, 2, "c2"), entry(4, 2, "d")], ..Default::default() },
            WriteBatch { own_snapshot: Some(snapshot_at(2, 1)), compact_through: Some((1, 1)), ..Default::default() },
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
        assert_eq!(reopened.snapshot.data.as_ref(), b"state@2");
    }

    #[test]
    fn a_received_snapshot_replaces_the_log_on_disk() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().to_owned();
        {
            let (disk, _) = DiskLog::open(&path).expect("open");
            disk.persist(&WriteBatch { entries: vec![entry(1, 1, "a"), entry(2, 1, "b")], ..Default::default() }).expect("persist");
            disk.persist(&WriteBatch { snapshot: Some(snapshot_at(50, 4)), ..Default::default() }).expect("persist");
        }
        let (_, s) = DiskLog::open(&path).expect("reopen");
        assert_eq!((s.first_index(), s.last_index(), s.term(50)), (51, 50, Some(4)));
        assert_eq!(s.conf_state.voters, [1, 2, 3]);
    }

    /// Compacted entries never reappear after a reopen; snapshot files other than the current
    /// one go.
    #[test]
    fn compacted_entries_stay_invisible_and_old_snapshot_files_are_removed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().to_owned();
        let mut reference = LogState::default();
        {
            let (disk, _) = DiskLog::open(&path).expect("open");
            let all: Vec<Entry> = (1..=3000).map(|i| entry(i, 1, "x")).collect();
            let b = WriteBatch { entries: all, ..Default::default() };
            reference.apply(&b);
            disk.persist(&b).expect("persist");
            for (snap, compact) in [(1000, 900), (2500, 2400)] {
                let b = WriteBatch { own_snapshot: Some(snapshot_at(snap, 1)), compact_through: Some((compact, 1)), ..Default::default() };
                reference.apply(&b);
                disk.persist(&b).expect("persist");
            }
        }
        let (_, reopened) = DiskLog::open(&path).expect("reopen");
        assert_eq!(summary(&reopened), summary(&reference));
        assert_eq!((reopened.first_index(), reopened.last_index()), (2401, 3000));
        assert_eq!(reopened.snapshot.data.as_ref(), b"state@2500");
        let files: Vec<_> = fs::read_dir(path.join("snapshots")).expect("dir").flatten().map(|e| e.file_name()).collect();
        assert_eq!(files.len(), 1, "only the current snapshot file remains: {files:?}");
    }

    /// A seeded walk through appends, overwritten suffixes, compactions and received
    /// snapshots on tiny segments: every reopen replays to the reference state, and the
    /// segments behind the compaction mark are deleted.
    #[test]
    fn segments_roll_over_and_garbage_ones_go_while_every_reopen_equals_the_reference() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().to_owned();
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut draw = |below: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % below.max(1)
        };
        let mut reference = LogState::default();
        let (mut disk, _) = DiskLog::open_with(&path, 4096).expect("open");
        let mut term = 1;
        let mut most_segments = 0;
        for step in 0..1500u64 {
            let last = reference.last_index();
            let compacted = reference.compacted.0;
            let batch = match draw(20) {
                0 if last > compacted => {
                    let index = compacted + 1 + draw(last - compacted);
                    let own = (draw(2) == 0).then(|| snapshot_at(index, reference.term(index).expect("in the log")));
                    WriteBatch {
                        own_snapshot: own,
                        compact_through: Some((index, reference.term(index).expect("in the log"))),
                        ..Default::default()
                    }
                }
                1 if step % 7 == 0 => {
                    term += 1;
                    WriteBatch { snapshot: Some(snapshot_at(last + draw(4), term)), ..Default::default() }
                }
                roll => {
                    // Mostly appends; sometimes a new term overwrites an uncompacted suffix.
                    let first = if roll < 4 && last > compacted {
                        term += 1;
                        last + 1 - draw(last - compacted).min(5)
                    } else {
                        last + 1
                    };
                    let count = 1 + draw(12);
                    let entries = (first..first + count).map(|i| entry(i, term, &"v".repeat(draw(200) as usize))).collect();
                    let hard_state = Some(HardState { term, vote: 1, commit: first - 1, ..Default::default() });
                    WriteBatch { entries, hard_state, ..Default::default() }
                }
            };
            reference.apply(&batch);
            disk.persist(&batch).expect("persist");
            most_segments = most_segments.max(disk.segment_count());
            if step % 50 == 49 {
                drop(disk);
                let reopened;
                (disk, reopened) = DiskLog::open_with(&path, 4096).expect("reopen");
                assert_eq!(summary(&reopened), summary(&reference), "after step {step}");
                let data = |s: &LogState| s.entries.iter().map(|e| e.data.clone()).collect::<Vec<_>>();
                assert_eq!(data(&reopened), data(&reference), "entry data after step {step}");
            }
        }
        assert!(most_segments > 5, "the walk should have rolled over many times, saw at most {most_segments} segments");
        // More entries over several segments, then everything compacted: only the active
        // segment is left.
        let last = reference.last_index();
        for i in 1..=100 {
            disk.persist(&WriteBatch { entries: vec![entry(last + i, term, &"w".repeat(100))], ..Default::default() }).expect("persist");
        }
        assert!(disk.segment_count() > 2, "100 entries of 100 bytes span several 4 KiB segments");
        disk.persist(&WriteBatch { compact_through: Some((last + 100, term)), ..Default::default() }).expect("persist");
        let files =
            fs::read_dir(path.join(LOG_DIR)).expect("dir").flatten().filter(|e| e.path().extension().is_some_and(|x| x == "seg")).count();
        assert_eq!((disk.segment_count(), files), (1, 1), "segments behind the compaction mark are deleted");
    }

    #[test]
    fn a_torn_last_record_is_dropped_and_damage_anywhere_else_refuses_to_open() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().to_owned();
        let segment = path.join(LOG_DIR).join(format!("{:020}.seg", 1));
        {
            let (disk, _) = DiskLog::open(&path).expect("open");
            for i in 1..=3 {
                disk.persist(&WriteBatch { entries: vec![entry(i, 1, "abc")], ..Default::default() }).expect("persist");
            }
        }
        let intact = fs::read(&segment).expect("segment");
        let mut last_record = Vec::new();
        record::encode(&mut last_record, &WriteBatch { entries: vec![entry(3, 1, "abc")], ..Default::default() });
        assert!(intact.ends_with(&last_record));
        for cut in [1, 5, last_record.len() - 1] {
            // The last write cut short.
            fs::write(&segment, &intact[..intact.len() - cut]).expect("tear");
            let (_, s) = DiskLog::open(&path).expect("a torn tail opens");
            assert_eq!(s.last_index(), 2, "the torn record is dropped (cut {cut})");
            assert_eq!(fs::metadata(&segment).expect("segment").len(), (intact.len() - last_record.len()) as u64, "and cut off the file");
            fs::write(&segment, &intact).expect("restore");
        }
        // The last write's length landed but not its data (a file system that grows the file
        // first).
        let mut zeroed = intact.clone();
        let payload_at = zeroed.len() - last_record.len() + record::HEADER_BYTES;
        zeroed[payload_at..].fill(0);
        fs::write(&segment, &zeroed).expect("zero");
        let (_, s) = DiskLog::open(&path).expect("a zeroed tail opens");
        assert_eq!(s.last_index(), 2);
        fs::write(&segment, &intact).expect("restore");
        // A bit flipped in an earlier record is damage, not a torn write: refuse, naming it.
        let mut flipped = intact;
        let at = record::MAGIC.len() + 30;
        flipped[at] ^= 1;
        fs::write(&segment, &flipped).expect("flip");
        let err = DiskLog::open(&path).expect_err("damage refuses to open").to_string();
        assert!(err.contains("00000000000000000001.seg") && err.contains("checksum"), "{err}");
    }

    #[test]
    fn a_log_kept_in_an_earlier_versions_redb_is_imported_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().to_owned();
        let mut state = LogState {
            hard_state: HardState { term: 3, vote: 2, commit: 9, ..Default::default() },
            conf_state: ConfState { voters: vec![1, 2, 3], ..Default::default() },
            compacted: (4, 2),
            ..Default::default()
        };
        state.entries.extend((5..=12).map(|i| entry(i, 3, "old")));
        let snapshot = snapshot_at(4, 2);
        state.snapshot.set_metadata(snapshot.get_metadata().clone());
        fs::create_dir_all(path.join("snapshots")).expect("dir");
        fs::write(path.join("snapshots").join(format!("{:020}.snap", 4)), encode(&snapshot)).expect("snapshot file");
        redb_import::write_for_test(&path.join(redb_import::FILE_NAME), &state, 1..=4);
        for round in ["import", "reopen"] {
            let (_, s) = DiskLog::open(&path).expect(round);
            assert_eq!(summary(&s), summary(&state), "{round}");
            assert_eq!((s.hard_state.vote, s.snapshot.data.as_ref()), (2, &b"state@4"[..]), "{round}");
            assert!(!path.join(redb_import::FILE_NAME).exists(), "the database goes once imported");
        }
    }

    #[test]
    fn a_second_process_on_the_same_log_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (_first, _) = DiskLog::open(dir.path()).expect("open");
        let err = DiskLog::open(dir.path()).expect_err("a second open");
        assert!(matches!(err, DiskError::InUse { .. }) && err.to_string().contains(LOG_DIR), "{err}");
    }
}
