//! The outbox's owner: one thread that recovers the outbox at startup, appends (group
//! commit), settles acknowledgements and rejections, applies the size bound, and publishes
//! the result after each change. Everything here blocks on disk IO, which is why it has a
//! thread of its own.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};

use serde::{Deserialize, Serialize};

use super::segment::{self, Frames, Sealing};
use super::{Job, OutRecord, OutboxConfig, OutboxError, OutboxStats, OverflowPolicy, Published, View};

/// What survives restarts beside the segments.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Persisted {
    /// Records with a lower index were delivered, dropped, set aside or lost.
    acked: u64,
    /// The last sequence number given to each stream.
    seqs: BTreeMap<String, u64>,
    dropped_records: u64,
    dropped_readings: u64,
    corrupt_records: u64,
    #[serde(default)]
    rejected_records: u64,
    #[serde(default)]
    rejected_readings: u64,
    /// Records from this index on are sealed with the node's storage key; set when the outbox
    /// first opens with a key (what it held then stays readable as it was written).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sealed_from: Option<u64>,
}

/// What the writer knows of one readable record without reading its segment.
#[derive(Debug, Clone, Copy)]
struct Meta {
    index: u64,
    readings: u32,
    bytes: u64,
    produced_ms: u64,
}

#[derive(Debug)]
struct Segment {
    first: u64,
    /// One past the last record's index.
    end: u64,
    path: PathBuf,
    bytes: u64,
    /// The readable records, by index (damage leaves gaps).
    records: VecDeque<Meta>,
}

/// Faults to inject, for the crash tests.
#[derive(Debug, Clone, Default)]
pub(super) struct Faults {
    /// Fail the next segment write (as a full disk would), once.
    pub fail_next_write: Arc<AtomicBool>,
    /// Stop dead between the two durable steps of settling (the process crashes there).
    pub crash_mid_settle: bool,
}

/// The writer thread stopped dead (a simulated crash).
struct Crashed;

/// Records, readings and bytes not yet settled, kept up to date as they change so that a
/// group commit does not walk the whole outbox.
#[derive(Debug, Clone, Copy, Default)]
struct Pending {
    records: u64,
    readings: u64,
    bytes: u64,
}

impl Pending {
    fn add(&mut self, m: &Meta) {
        self.records += 1;
        self.readings += u64::from(m.readings);
        self.bytes += m.bytes;
    }

    fn remove(&mut self, m: &Meta) {
        self.records = self.records.saturating_sub(1);
        self.readings = self.readings.saturating_sub(u64::from(m.readings));
        self.bytes = self.bytes.saturating_sub(m.bytes);
    }
}

struct Writer {
    config: OutboxConfig,
    /// How appended frames are sealed.
    sealing: Sealing,
    segments: VecDeque<Segment>,
    pending: Pending,
    /// Index of the next record appended; every record below it is on disk.
    next_index: u64,
    persisted: Persisted,
    /// Counters of this process's life.
    appended: (u64, u64),
    delivered: (u64, u64),
    active: Option<File>,
    /// A write failed part-way: the active segment's tail is unknown, so start another.
    torn: bool,
    published: Arc<Published>,
    faults: Faults,
}

/// Recovers the outbox in `config.dir` and starts its writer thread; returns its queue and how
/// its frames are sealed, for readers.
pub(super) fn start(config: OutboxConfig, published: Arc<Published>, faults: Faults) -> Result<(mpsc::Sender<Job>, Sealing), OutboxError> {
    let writer = recover(config, published, faults)?;
    writer.publish();
    let sealing = writer.sealing.clone();
    let (jobs, queue) = mpsc::channel();
    std::thread::Builder::new()
        .name("outbox".into())
        .spawn(move || writer.run(queue))
        .map_err(|source| OutboxError::Io { path: PathBuf::from("outbox writer thread"), source })?;
    Ok((jobs, sealing))
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> OutboxError + '_ {
    move |source| OutboxError::Io { path: path.to_owned(), source }
}

fn recover(config: OutboxConfig, published: Arc<Published>, faults: Faults) -> Result<Writer, OutboxError> {
    std::fs::create_dir_all(&config.dir).map_err(io(&config.dir))?;
    let state_path = config.dir.join("state.json");
    let mut persisted: Persisted = match std::fs::read(&state_path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|source| OutboxError::CorruptState { path: state_path.clone(), source })?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Persisted::default(),
        Err(source) => return Err(OutboxError::Io { path: state_path, source }),
    };
    // What the segments were written with: with a key, frames from `sealed_from` on are sealed
    // (none yet when the outbox first opens with a key: every frame so far may be plain).
    let reading = match (&config.key, persisted.sealed_from) {
        (Some(key), from) => Sealing { key: Some(Arc::clone(key)), from: from.unwrap_or(u64::MAX) },
        (None, Some(_)) => return Err(OutboxError::Sealed(config.dir.clone())),
        (None, None) => Sealing::default(),
    };
    let mut paths: Vec<(u64, PathBuf)> = Vec::new();
    for entry in std::fs::read_dir(&config.dir).map_err(io(&config.dir))? {
        let path = entry.map_err(io(&config.dir))?.path();
        let first = path.file_name().and_then(|n| n.to_str()).and_then(|n| n.strip_prefix("seg-")).and_then(|n| n.strip_suffix(".log"));
        if let Some(first) = first.and_then(|f| f.parse().ok()) {
            paths.push((first, path));
        }
    }
    paths.sort();
    let mut segments = VecDeque::new();
    let mut next_index = persisted.acked;
    let last = paths.len().saturating_sub(1);
    for (i, (first, path)) in paths.into_iter().enumerate() {
        let buf = std::fs::read(&path).map_err(io(&path))?;
        let mut frames = Frames::new(&buf, first, &reading);
        let mut records = VecDeque::new();
        let mut valid_len = 0;
        for frame in frames.by_ref() {
            let r = &frame.record;
            records.push_back(Meta {
                index: r.index,
                readings: r.record.readings,
                bytes: (frame.end - frame.start) as u64,
                produced_ms: r.record.produced_ms,
            });
            let last_seq = persisted.seqs.entry(r.record.stream.to_string()).or_insert(0);
            *last_seq = (*last_seq).max(r.seq);
            valid_len = frame.end;
        }
        if frames.sealed_without_key {
            return Err(OutboxError::Sealed(path));
        }
        if frames.skipped > 0 {
            tracing::error!(segment = %path.display(), records = frames.skipped, "damaged outbox records; they are counted as corrupt when the uploader passes them");
        }
        if valid_len < buf.len() {
            if i == last {
                // A write cut short by a crash: never synced, so never acknowledged to anyone.
                tracing::warn!(segment = %path.display(), bytes = buf.len() - valid_len, "cutting off a torn write at the end of the outbox");
                let file = OpenOptions::new().write(true).open(&path).map_err(io(&path))?;
                file.set_len(valid_len as u64).map_err(io(&path))?;
                file.sync_all().map_err(io(&path))?;
            } else {
                tracing::error!(segment = %path.display(), "an outbox segment is damaged after byte {valid_len}; its records there are counted as corrupt when the uploader passes them");
            }
        }
        let end = records.back().map_or(first, |m| m.index + 1);
        if end <= persisted.acked && i != last {
            // Settled before a crash that came between saving the state and deleting this.
            std::fs::remove_file(&path).map_err(io(&path))?;
            continue;
        }
        next_index = next_index.max(end);
        segments.push_back(Segment { first, end, path, bytes: valid_len as u64, records });
    }
    // Non-last segments' ends are where the next begins, damage or not.
    for i in 1..segments.len() {
        let next_first = segments[i].first;
        segments[i - 1].end = segments[i - 1].end.max(next_first);
    }
    let mut pending = Pending::default();
    for m in segments.iter().flat_map(|s| s.records.iter()).filter(|m| m.index >= persisted.acked) {
        pending.add(m);
    }
    let sealing = match config.key.clone() {
        None => Sealing::default(),
        Some(key) => Sealing { key: Some(key), from: *persisted.sealed_from.get_or_insert(next_index) },
    };
    let first_sealing = config.key.is_some() && reading.from == u64::MAX;
    let writer = Writer {
        config,
        sealing,
        segments,
        pending,
        next_index,
        persisted,
        appended: (0, 0),
        delivered: (0, 0),
        active: None,
        torn: false,
        published,
        faults,
    };
    if first_sealing {
        // Durable before anything is sealed: a restart must know which frames may be plain.
        writer.save_state()?;
    }
    Ok(writer)
}

impl Writer {
    fn run(mut self, queue: mpsc::Receiver<Job>) {
        while let Ok(first) = queue.recv() {
            let mut jobs: VecDeque<Job> = std::iter::once(first).chain(queue.try_iter()).collect();
            while let Some(job) = jobs.pop_front() {
                match job {
                    Job::Append { records, reply } => {
                        // Every append waiting behind this one joins its sync (group commit).
                        let mut batch = vec![(records, reply)];
                        while let Some(Job::Append { .. }) = jobs.front() {
                            let Some(Job::Append { records, reply }) = jobs.pop_front() else { unreachable!("checked") };
                            batch.push((records, reply));
                        }
                        let result = self.append(batch.iter().flat_map(|(records, _)| records));
                        for (_, reply) in batch {
                            let _ = reply.send(result.as_ref().map(|_| ()).map_err(|e| OutboxError::WriteFailed(e.to_string())));
                        }
                    }
                    Job::Settle { upto, delivered, unreadable, reply } => match self.settle(upto, delivered, &unreadable) {
                        Ok(result) => drop(reply.send(result)),
                        Err(Crashed) => return,
                    },
                }
            }
        }
    }

    fn append<'a>(&mut self, records: impl Iterator<Item = &'a OutRecord>) -> Result<(), OutboxError> {
        if self.segments.back().is_none_or(|s| s.bytes >= self.config.segment_bytes) || self.active.is_none() {
            self.open_segment()?;
        }
        let mut buf = Vec::new();
        let mut metas = Vec::new();
        let mut index = self.next_index;
        // The numbers before this batch, to give back if the write fails.
        let mut before: BTreeMap<String, Option<u64>> = BTreeMap::new();
        for record in records {
            let stream = record.stream.to_string();
            let last = self.persisted.seqs.get(&stream).copied();
            before.entry(stream.clone()).or_insert(last);
            let seq = last.unwrap_or(0) + 1;
            self.persisted.seqs.insert(stream, seq);
            let start = buf.len();
            segment::encode(&mut buf, index, seq, record, &self.sealing);
            metas.push(Meta { index, readings: record.readings, bytes: (buf.len() - start) as u64, produced_ms: record.produced_ms });
            index += 1;
        }
        if let Err(e) = self.write_synced(&buf) {
            // Give the numbers back, and take back whatever part of the batch reached the file:
            // its producers are told it failed and will send it again.
            for (stream, last) in before {
                match last {
                    Some(seq) => self.persisted.seqs.insert(stream, seq),
                    None => self.persisted.seqs.remove(&stream),
                };
            }
            self.truncate_active();
            return Err(e);
        }
        self.appended.0 += metas.len() as u64;
        self.appended.1 += metas.iter().map(|m| u64::from(m.readings)).sum::<u64>();
        for m in &metas {
            self.pending.add(m);
        }
        let segment = self.segments.back_mut().expect("opened above");
        segment.bytes += buf.len() as u64;
        segment.end = index;
        segment.records.extend(metas);
        self.next_index = index;
        if self.config.policy == OverflowPolicy::DropOldest {
            // The batch is durable whatever happens here: a failure to make room is the next
            // append's problem, not this one's.
            if let Err(e) = self.drop_oldest() {
                tracing::error!(error = %e, "the outbox is over its bound and could not drop its oldest segment");
            }
        }
        self.publish();
        Ok(())
    }

    /// After a failed write: cuts the active segment back to what was durable before it. If
    /// even that fails, the segment's tail is unknown: the next append starts a new segment,
    /// and recovery cuts a torn frame off.
    fn truncate_active(&mut self) {
        let Some(segment) = self.segments.back() else { return };
        let cut = self.active.as_ref().map(|f| f.set_len(segment.bytes).and_then(|()| f.sync_data()));
        if !matches!(cut, Some(Ok(()))) {
            tracing::error!(segment = %segment.path.display(), "cannot cut a failed write back; the next append starts a new segment");
            self.active = None;
            self.torn = true;
        }
    }

    fn write_synced(&mut self, buf: &[u8]) -> Result<(), OutboxError> {
        let path = self.segments.back().map(|s| s.path.clone()).unwrap_or_default();
        let file = self.active.as_mut().expect("a segment is open");
        if self.faults.fail_next_write.swap(false, Ordering::Relaxed) {
            // As a full disk does: part of the batch reaches the file before the error.
            let _ = file.write_all(&buf[..buf.len() / 2]);
            return Err(OutboxError::Io { path, source: std::io::Error::other("injected write failure") });
        }
        file.write_all(buf).and_then(|()| file.sync_data()).map_err(io(&path))
    }

    fn open_segment(&mut self) -> Result<(), OutboxError> {
        let first = self.next_index;
        // Reopening the last segment after a restart appends to it.
        let reuse = !self.torn && self.segments.back().is_some_and(|s| s.end == first && s.bytes < self.config.segment_bytes);
        if reuse {
            let last = self.segments.back().expect("checked");
            self.active = Some(OpenOptions::new().append(true).open(&last.path).map_err(io(&last.path))?);
            return Ok(());
        }
        // A segment that starts here and holds nothing (every write to it failed) is started
        // over in place: its name is the one a new segment would take, and two entries for one
        // file would let settling the first delete the second's.
        if let Some(empty) = self.segments.back().filter(|s| s.first == first && s.records.is_empty()) {
            let file = OpenOptions::new().write(true).truncate(true).open(&empty.path).map_err(io(&empty.path))?;
            file.sync_all().map_err(io(&empty.path))?;
            let file = OpenOptions::new().append(true).open(&empty.path).map_err(io(&empty.path))?;
            self.segments.back_mut().expect("checked").bytes = 0;
            self.active = Some(file);
            self.torn = false;
            return Ok(());
        }
        let path = self.config.dir.join(format!("seg-{first:020}.log"));
        let file = OpenOptions::new().create(true).append(true).open(&path).map_err(io(&path))?;
        sync_dir(&self.config.dir)?;
        self.active = Some(file);
        self.torn = false;
        self.segments.push_back(Segment { first, end: first, path, bytes: 0, records: VecDeque::new() });
        Ok(())
    }

    /// Settles everything below `upto` (`unreadable`: the indices among them the uploader
    /// could not read, lost to damage). State first, durably; then the segments it makes
    /// unnecessary. A crash in between leaves segments that recovery deletes.
    fn settle(&mut self, upto: u64, delivered: bool, unreadable: &BTreeSet<u64>) -> Result<Result<(), OutboxError>, Crashed> {
        let from = self.persisted.acked;
        if upto <= from {
            return Ok(Ok(()));
        }
        let upto = upto.min(self.next_index);
        let (mut records, mut readings) = (0, 0);
        for m in self.segments.iter().flat_map(|s| s.records.iter()).filter(|m| m.index >= from && m.index < upto) {
            self.pending.remove(m);
            if !unreadable.contains(&m.index) {
                records += 1;
                readings += u64::from(m.readings);
            }
        }
        self.persisted.acked = upto;
        self.persisted.corrupt_records += unreadable.range(from..upto).count() as u64;
        if delivered {
            self.delivered.0 += records;
            self.delivered.1 += readings;
        } else {
            self.persisted.rejected_records += records;
            self.persisted.rejected_readings += readings;
        }
        if let Err(e) = self.save_state() {
            return Ok(Err(e));
        }
        if self.faults.crash_mid_settle {
            return Err(Crashed);
        }
        // Keep the last segment even when fully sent: the writer appends to it.
        let mut removed = false;
        while self.segments.len() > 1 && self.segments[0].end <= upto {
            let segment = self.segments.pop_front().expect("len > 1");
            remove(&segment.path);
            removed = true;
        }
        if removed {
            // Best effort: a deletion lost to a crash is redone by recovery.
            let _ = sync_dir(&self.config.dir);
        }
        self.publish();
        Ok(Ok(()))
    }

    /// Deletes the oldest segments while the unsent data is over the bound, counting what
    /// they held. The segment being written is never deleted, so one segment may stay over.
    fn drop_oldest(&mut self) -> Result<(), OutboxError> {
        let mut doomed = Vec::new();
        while self.pending_bytes() > self.config.max_bytes && self.segments.len() > 1 {
            let segment = self.segments.pop_front().expect("len > 1");
            let (records, readings) = pending_in(&segment, self.persisted.acked);
            for m in segment.records.iter().filter(|m| m.index >= self.persisted.acked) {
                self.pending.remove(m);
            }
            self.persisted.dropped_records += records;
            self.persisted.dropped_readings += readings;
            self.persisted.acked = self.persisted.acked.max(segment.end);
            tracing::warn!(segment = %segment.path.display(), records, "outbox full: dropped its oldest unsent segment");
            doomed.push(segment.path);
        }
        if doomed.is_empty() {
            return Ok(());
        }
        self.save_state()?;
        for path in &doomed {
            remove(path);
        }
        let _ = sync_dir(&self.config.dir);
        Ok(())
    }

    fn pending_bytes(&self) -> u64 {
        self.pending.bytes
    }

    /// Writes `state.json` durably: a temporary file, synced, renamed over the old one, and
    /// the directory synced so that the rename itself survives a crash.
    fn save_state(&self) -> Result<(), OutboxError> {
        let dir = &self.config.dir;
        let tmp = dir.join("state.json.tmp");
        let bytes = serde_json::to_vec(&self.persisted).expect("the state serializes");
        let mut file = File::create(&tmp).map_err(io(&tmp))?;
        file.write_all(&bytes).and_then(|()| file.sync_all()).map_err(io(&tmp))?;
        let path = dir.join("state.json");
        std::fs::rename(&tmp, &path).map_err(io(&path))?;
        sync_dir(dir)
    }

    /// Publishes counters and the segment list for readers. Constant work per segment, not
    /// per record: it runs on every group commit.
    fn publish(&self) {
        let acked = self.persisted.acked;
        let oldest = self.segments.iter().find(|s| s.end > acked).and_then(|s| {
            let at = s.records.partition_point(|m| m.index < acked);
            s.records.get(at).map(|m| m.produced_ms)
        });
        let p = &self.persisted;
        let stats = OutboxStats {
            pending_records: self.pending.records,
            pending_readings: self.pending.readings,
            pending_bytes: self.pending.bytes,
            appended_records: self.appended.0,
            appended_readings: self.appended.1,
            delivered_records: self.delivered.0,
            delivered_readings: self.delivered.1,
            dropped_records: p.dropped_records,
            dropped_readings: p.dropped_readings,
            corrupt_records: p.corrupt_records,
            rejected_records: p.rejected_records,
            rejected_readings: p.rejected_readings,
            oldest_pending_ms: oldest,
            max_bytes: self.config.max_bytes,
        };
        let view = View { acked, next_index: self.next_index, segments: self.segments.iter().map(|s| (s.first, s.path.clone())).collect() };
        self.published.pending_bytes.store(stats.pending_bytes, Ordering::Relaxed);
        *self.published.stats.lock().unwrap_or_else(|p| p.into_inner()) = stats;
        *self.published.view.lock().unwrap_or_else(|p| p.into_inner()) = Arc::new(view);
    }
}

fn pending_in(segment: &Segment, acked: u64) -> (u64, u64) {
    segment
        .records
        .iter()
        .filter(|m| m.index >= acked)
        .fold((0, 0), |(records, readings), m| (records + 1, readings + u64::from(m.readings)))
}

fn remove(path: &Path) {
    if let Err(e) = std::fs::remove_file(path) {
        tracing::warn!(segment = %path.display(), "cannot delete a settled outbox segment: {e}");
    }
}

fn sync_dir(dir: &Path) -> Result<(), OutboxError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))
}
