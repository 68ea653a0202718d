//! The durable outbox: what a node's workloads send to the cloud waits here, on disk, until
//! the orchestrators have committed it.
//!
//! Records are appended to segment files (`outbox/seg-<first index>.log`) by one writer
//! thread, which writes every waiting append and then syncs once (group commit): an append
//! returns only when its records are on disk, so anything the node accepted survives a
//! SIGKILL or a power cut. Each record gets a node-wide index (its position in the outbox)
//! and a per-stream sequence number (1, 2, 3, ... per `{namespace}/{assignment}/{output}`),
//! which the receiver deduplicates on: the uploader may send a record twice (it crashed
//! between sending and remembering the answer), never zero times.
//!
//! `state.json` remembers how far the orchestrators have acknowledged, the last sequence
//! number of every stream (so numbering continues after the segments holding them are gone)
//! and the drop counters. Acknowledged segments are deleted.
//!
//! The outbox is bounded (`max_bytes`): under [`OverflowPolicy::RejectNew`] a full outbox makes
//! ingest answer 503, so producers keep their data; under [`OverflowPolicy::DropOldest`] the
//! oldest unsent segment is deleted to make room, and every record and reading dropped that
//! way is counted (and persisted) so the books always balance.
//!
//! Frame: `u32 len, u32 crc32(payload), payload`; payload: `u64 index, u64 seq, u64
//! generation, u64 produced_ms, u32 readings, u8 kind, 4 x (u16 len, UTF-8) stream, namespace,
//! workload, output`, then the data. Bit 7 of `kind` (`WITH_MODEL`) says a fifth name, the
//! Model version, follows the four; records without one keep the original layout, which older
//! segments were written in. A torn frame at the end of the last segment (a crash
//! mid-write, never acknowledged) is cut off at startup.

use std::collections::{BTreeMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::{Read as _, Seek as _, SeekFrom, Write as _};
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Mutex, MutexGuard};

use anyhow::{bail, Context as _};
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

/// What happens when the outbox is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OverflowPolicy {
    /// Refuse new ingest (503) until the cloud has taken some: nothing is lost.
    RejectNew,
    /// Delete the oldest unsent data to make room, and count it.
    DropOldest,
}

impl std::str::FromStr for OverflowPolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "reject-new" => Ok(OverflowPolicy::RejectNew),
            "drop-oldest" => Ok(OverflowPolicy::DropOldest),
            other => Err(format!("must be reject-new or drop-oldest, got {other:?}")),
        }
    }
}

#[derive(Debug, Clone)]
pub struct OutboxConfig {
    pub dir: PathBuf,
    /// Unsent bytes on disk beyond which the policy applies.
    pub max_bytes: u64,
    pub policy: OverflowPolicy,
    /// A segment is closed and a new one started past this size.
    pub segment_bytes: u64,
}

/// Whether a record's data is a v1 batch of readings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataKind {
    Readings,
    Opaque,
}

/// One output batch on its way to the cloud.
#[derive(Debug, Clone, PartialEq)]
pub struct OutRecord {
    pub stream: String,
    pub namespace: String,
    pub workload: String,
    pub output: String,
    pub generation: u64,
    /// The version of the Model the instance ran with, if it has one.
    pub model: Option<String>,
    pub produced_ms: u64,
    /// Readings in `data` (0 for opaque data).
    pub readings: u32,
    pub kind: DataKind,
    pub data: Vec<u8>,
}

/// A record as stored: with its outbox index and stream sequence number.
#[derive(Debug, Clone, PartialEq)]
pub struct Stored {
    pub index: u64,
    pub seq: u64,
    pub record: OutRecord,
}

/// Counters, for `/metrics`, `/v1/stats` and heartbeats.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OutboxStats {
    /// Records and readings waiting to be sent (or being sent).
    pub pending_records: u64,
    pub pending_readings: u64,
    pub pending_bytes: u64,
    /// Appended since this process started.
    pub appended_records: u64,
    pub appended_readings: u64,
    /// Acknowledged by the orchestrators since this process started.
    pub delivered_records: u64,
    pub delivered_readings: u64,
    /// Dropped under the drop-oldest policy, over the node's whole life (persisted).
    pub dropped_records: u64,
    pub dropped_readings: u64,
    /// Corrupt records found at startup and skipped (persisted).
    pub corrupt_records: u64,
    /// Records the orchestrators refused as invalid (400), set aside so that they do not
    /// block the rest (persisted).
    pub rejected_records: u64,
    pub rejected_readings: u64,
    pub max_bytes: u64,
}

/// What survives restarts beside the segments.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Persisted {
    /// Records with a lower index were delivered or dropped.
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
}

#[derive(Debug)]
struct Segment {
    first: u64,
    /// One past the last record's index.
    end: u64,
    path: PathBuf,
    bytes: u64,
    /// Readings per record, to count drops and pending readings without reading the file.
    readings: VecDeque<u32>,
}

#[derive(Debug)]
struct State {
    segments: VecDeque<Segment>,
    /// Index of the next record appended; every record below it is on disk.
    next_index: u64,
    persisted: Persisted,
    stats: OutboxStats,
}

impl State {
    fn pending_bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.bytes).sum()
    }

    fn refresh_pending(&mut self) {
        let acked = self.persisted.acked;
        let (mut records, mut readings) = (0, 0);
        for segment in &self.segments {
            let skip = acked.saturating_sub(segment.first) as usize;
            records += segment.readings.len().saturating_sub(skip) as u64;
            readings += segment.readings.iter().skip(skip).map(|&r| u64::from(r)).sum::<u64>();
        }
        self.stats.pending_records = records;
        self.stats.pending_readings = readings;
        self.stats.pending_bytes = self.pending_bytes();
        self.stats.dropped_records = self.persisted.dropped_records;
        self.stats.dropped_readings = self.persisted.dropped_readings;
        self.stats.corrupt_records = self.persisted.corrupt_records;
        self.stats.rejected_records = self.persisted.rejected_records;
        self.stats.rejected_readings = self.persisted.rejected_readings;
    }
}

type AppendReply = oneshot::Sender<anyhow::Result<()>>;

/// The outbox. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct Outbox {
    config: OutboxConfig,
    state: Arc<Mutex<State>>,
    appends: mpsc::Sender<(Vec<OutRecord>, AppendReply)>,
}

impl Outbox {
    /// Opens (or creates) the outbox in `config.dir`, recovering what a crash left behind, and
    /// starts its writer thread.
    pub fn open(config: OutboxConfig) -> anyhow::Result<Outbox> {
        std::fs::create_dir_all(&config.dir).with_context(|| format!("cannot create {}", config.dir.display()))?;
        let mut persisted: Persisted = match std::fs::read(config.dir.join("state.json")) {
            Ok(bytes) => serde_json::from_slice(&bytes).context("outbox/state.json is corrupt")?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Persisted::default(),
            Err(e) => return Err(e).context("cannot read outbox/state.json"),
        };
        let mut paths: Vec<(u64, PathBuf)> = Vec::new();
        for entry in std::fs::read_dir(&config.dir)? {
            let path = entry?.path();
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
            let scan = scan_segment(&path, first)?;
            if scan.valid_len < scan.file_len {
                if i == last {
                    tracing::warn!(segment = %path.display(), bytes = scan.file_len - scan.valid_len, "cutting off a torn write at the end of the outbox");
                } else {
                    tracing::error!(segment = %path.display(), "corrupt outbox segment: records after byte {} are lost", scan.valid_len);
                    persisted.corrupt_records += 1;
                }
                let file = OpenOptions::new().write(true).open(&path)?;
                file.set_len(scan.valid_len)?;
                file.sync_all()?;
            }
            for (stream, seq) in scan.seqs {
                let last = persisted.seqs.entry(stream).or_insert(0);
                *last = (*last).max(seq);
            }
            let end = first + scan.readings.len() as u64;
            if end <= persisted.acked && i != last {
                std::fs::remove_file(&path)?;
                continue;
            }
            next_index = next_index.max(end);
            segments.push_back(Segment { first, end, path, bytes: scan.valid_len, readings: scan.readings });
        }
        let mut state = State { segments, next_index, persisted, stats: OutboxStats { max_bytes: config.max_bytes, ..OutboxStats::default() } };
        state.refresh_pending();
        let state = Arc::new(Mutex::new(state));
        let (appends, jobs) = mpsc::channel();
        let writer = Writer { config: config.clone(), state: state.clone(), active: None, torn: false };
        std::thread::Builder::new().name("outbox".into()).spawn(move || writer.run(jobs)).context("cannot start the outbox writer")?;
        Ok(Outbox { config, state, appends })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends records and returns once they are on disk.
    pub async fn append(&self, records: Vec<OutRecord>) -> anyhow::Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        let (reply, done) = oneshot::channel();
        self.appends.send((records, reply)).map_err(|_| anyhow::anyhow!("the outbox writer has stopped"))?;
        done.await.map_err(|_| anyhow::anyhow!("the outbox writer has stopped"))?
    }

    /// Whether new data must be refused: the outbox is full and the policy keeps old data.
    pub fn refuses_new(&self) -> bool {
        self.config.policy == OverflowPolicy::RejectNew && self.lock().pending_bytes() >= self.config.max_bytes
    }

    pub fn stats(&self) -> OutboxStats {
        self.lock().stats.clone()
    }

    /// The oldest unacknowledged records, at most `max_records` and about `max_bytes` of data.
    pub fn peek(&self, max_records: usize, max_bytes: usize) -> anyhow::Result<Vec<Stored>> {
        // Find the files under the lock, read them outside it: appends go on meanwhile.
        let (from, end, files) = {
            let state = self.lock();
            let from = state.persisted.acked;
            let files: Vec<(u64, PathBuf)> = state.segments.iter().filter(|s| s.end > from).map(|s| (s.first, s.path.clone())).collect();
            (from, state.next_index, files)
        };
        let mut out = Vec::new();
        let mut bytes = 0;
        for (first, path) in files {
            let mut file = match File::open(&path) {
                Ok(file) => file,
                // Deleted by drop-oldest since we looked: the next call starts after it.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
                Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
            };
            let mut buf = Vec::new();
            file.read_to_end(&mut buf)?;
            let mut at = 0;
            let mut index = first;
            while let Some((payload, next)) = frame(&buf, at) {
                at = next;
                if index >= end {
                    break;
                }
                if index >= from {
                    let stored = decode(payload).with_context(|| format!("record {index} in {}", path.display()))?;
                    bytes += stored.record.data.len();
                    out.push(stored);
                    if out.len() >= max_records || bytes >= max_bytes {
                        return Ok(out);
                    }
                }
                index += 1;
            }
        }
        Ok(out)
    }

    /// Marks every record below `upto` delivered; deletes segments nothing needs any more.
    pub fn ack(&self, upto: u64) -> anyhow::Result<()> {
        self.settle(upto, true)
    }

    /// Sets aside the records below `upto`, which the orchestrators refused as invalid, and
    /// counts them.
    pub fn reject(&self, upto: u64) -> anyhow::Result<()> {
        self.settle(upto, false)
    }

    fn settle(&self, upto: u64, delivered: bool) -> anyhow::Result<()> {
        let mut state = self.lock();
        if upto <= state.persisted.acked {
            return Ok(());
        }
        let upto = upto.min(state.next_index);
        let (mut records, mut readings) = (0, 0);
        for segment in &state.segments {
            let from = state.persisted.acked.max(segment.first);
            let to = upto.min(segment.end);
            if to > from {
                records += to - from;
                let start = (from - segment.first) as usize;
                readings += segment.readings.iter().skip(start).take((to - from) as usize).map(|&r| u64::from(r)).sum::<u64>();
            }
        }
        state.persisted.acked = upto;
        if delivered {
            state.stats.delivered_records += records;
            state.stats.delivered_readings += readings;
        } else {
            state.persisted.rejected_records += records;
            state.persisted.rejected_readings += readings;
        }
        // Keep the last segment even when fully sent: the writer appends to it.
        while state.segments.len() > 1 && state.segments[0].end <= upto {
            let segment = state.segments.pop_front().expect("len > 1");
            remove(&segment.path);
        }
        save_state(&self.config.dir, &state.persisted)?;
        state.refresh_pending();
        Ok(())
    }
}

fn remove(path: &Path) {
    if let Err(e) = std::fs::remove_file(path) {
        tracing::warn!(segment = %path.display(), "cannot delete a sent outbox segment: {e}");
    }
}

fn save_state(dir: &Path, persisted: &Persisted) -> anyhow::Result<()> {
    let tmp = dir.join("state.json.tmp");
    let mut file = File::create(&tmp)?;
    file.write_all(&serde_json::to_vec(persisted)?)?;
    file.sync_all()?;
    std::fs::rename(&tmp, dir.join("state.json"))?;
    Ok(())
}

/// The writer thread: the only code that appends to segments.
struct Writer {
    config: OutboxConfig,
    state: Arc<Mutex<State>>,
    active: Option<File>,
    /// A write failed part-way: the active segment's tail is unknown, so start another.
    torn: bool,
}

impl Writer {
    fn run(mut self, jobs: mpsc::Receiver<(Vec<OutRecord>, AppendReply)>) {
        while let Ok(first) = jobs.recv() {
            let mut batch = vec![first];
            batch.extend(jobs.try_iter());
            let result = self.write(batch.iter().map(|(records, _)| records.as_slice()));
            for (_, reply) in batch {
                let _ = reply.send(result.as_ref().map(|_| ()).map_err(|e| anyhow::anyhow!("outbox write failed: {e:#}")));
            }
        }
    }

    fn write<'a>(&mut self, batches: impl Iterator<Item = &'a [OutRecord]>) -> anyhow::Result<()> {
        let shared = self.state.clone();
        let mut state = shared.lock().unwrap_or_else(|p| p.into_inner());
        if state.segments.back().is_none_or(|s| s.bytes >= self.config.segment_bytes) || self.active.is_none() {
            self.open_segment(&mut state)?;
        }
        let mut buf = Vec::new();
        let mut readings = Vec::new();
        let mut index = state.next_index;
        let mut seqs: Vec<(String, u64)> = Vec::new();
        for record in batches.flatten() {
            let seq = {
                let last = state.persisted.seqs.entry(record.stream.clone()).or_insert(0);
                *last += 1;
                *last
            };
            encode(&mut buf, index, seq, record);
            readings.push(record.readings);
            seqs.push((record.stream.clone(), seq));
            index += 1;
        }
        let file = self.active.as_mut().expect("opened above");
        let written = file.write_all(&buf).and_then(|()| file.sync_data());
        if let Err(e) = written {
            // The tail of the segment is unknown now: give the numbers back and start a new
            // segment next time (recovery cuts a torn frame off).
            for (stream, seq) in seqs {
                state.persisted.seqs.insert(stream, seq - 1);
            }
            self.active = None;
            self.torn = true;
            bail!("cannot write the outbox: {e}");
        }
        let count = readings.len() as u64;
        state.stats.appended_records += count;
        state.stats.appended_readings += readings.iter().map(|&r| u64::from(r)).sum::<u64>();
        let segment = state.segments.back_mut().expect("opened above");
        segment.bytes += buf.len() as u64;
        segment.end += count;
        segment.readings.extend(readings);
        state.next_index = index;
        if self.config.policy == OverflowPolicy::DropOldest {
            self.drop_oldest(&mut state)?;
        }
        state.refresh_pending();
        Ok(())
    }

    fn open_segment(&mut self, state: &mut State) -> anyhow::Result<()> {
        let first = state.next_index;
        let path = self.config.dir.join(format!("seg-{first:020}.log"));
        // Reopening the last segment after a restart appends to it.
        let reuse = !self.torn && state.segments.back().is_some_and(|s| s.end == first && s.bytes < self.config.segment_bytes);
        if reuse {
            let last = state.segments.back().expect("checked");
            self.active = Some(OpenOptions::new().append(true).open(&last.path)?);
            return Ok(());
        }
        let file = OpenOptions::new().create(true).append(true).open(&path).with_context(|| format!("cannot create {}", path.display()))?;
        File::open(&self.config.dir)?.sync_all()?;
        self.active = Some(file);
        self.torn = false;
        state.segments.push_back(Segment { first, end: first, path, bytes: 0, readings: VecDeque::new() });
        Ok(())
    }

    /// Deletes the oldest segments while the unsent data is over the bound, counting what
    /// they held. The segment being written is never deleted, so one segment may stay over.
    fn drop_oldest(&self, state: &mut State) -> anyhow::Result<()> {
        let mut dropped = false;
        while state.pending_bytes() > self.config.max_bytes && state.segments.len() > 1 {
            let segment = state.segments.pop_front().expect("len > 1");
            let skip = state.persisted.acked.saturating_sub(segment.first) as usize;
            state.persisted.dropped_records += segment.readings.len().saturating_sub(skip) as u64;
            state.persisted.dropped_readings += segment.readings.iter().skip(skip).map(|&r| u64::from(r)).sum::<u64>();
            state.persisted.acked = state.persisted.acked.max(segment.end);
            tracing::warn!(segment = %segment.path.display(), "outbox full: dropped its oldest unsent segment");
            remove(&segment.path);
            dropped = true;
        }
        if dropped {
            save_state(&self.config.dir, &state.persisted)?;
        }
        Ok(())
    }
}

/// Set in a frame's kind byte when the Model version follows the names.
const WITH_MODEL: u8 = 0x80;

fn encode(buf: &mut Vec<u8>, index: u64, seq: u64, r: &OutRecord) {
    let start = buf.len();
    buf.extend_from_slice(&[0; 8]);
    for n in [index, seq, r.generation, r.produced_ms] {
        buf.extend_from_slice(&n.to_le_bytes());
    }
    buf.extend_from_slice(&r.readings.to_le_bytes());
    let kind = match r.kind {
        DataKind::Readings => 0,
        DataKind::Opaque => 1,
    };
    buf.push(if r.model.is_some() { kind | WITH_MODEL } else { kind });
    // Names come from validated resources: DNS names, and versions of at most 128 bytes.
    for s in [&r.stream, &r.namespace, &r.workload, &r.output].into_iter().chain(&r.model) {
        buf.extend_from_slice(&(s.len() as u16).to_le_bytes());
        buf.extend_from_slice(s.as_bytes());
    }
    buf.extend_from_slice(&r.data);
    let payload_len = (buf.len() - start - 8) as u32;
    let crc = crc32fast::hash(&buf[start + 8..]);
    buf[start..start + 4].copy_from_slice(&payload_len.to_le_bytes());
    buf[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// The payload of the frame at `at` and where the next one starts; `None` at the end or at a
/// torn or corrupt frame.
fn frame(buf: &[u8], at: usize) -> Option<(&[u8], usize)> {
    let header = buf.get(at..at + 8)?;
    let len = u32::from_le_bytes(header[..4].try_into().ok()?) as usize;
    let crc = u32::from_le_bytes(header[4..].try_into().ok()?);
    let payload = buf.get(at + 8..at + 8 + len)?;
    (crc32fast::hash(payload) == crc).then_some((payload, at + 8 + len))
}

fn decode(payload: &[u8]) -> anyhow::Result<Stored> {
    let mut at = 0;
    let mut take = |n: usize| -> anyhow::Result<&[u8]> {
        let bytes = payload.get(at..at + n).context("truncated record")?;
        at += n;
        Ok(bytes)
    };
    let mut u64s = [0u64; 4];
    for n in &mut u64s {
        *n = u64::from_le_bytes(take(8)?.try_into()?);
    }
    let readings = u32::from_le_bytes(take(4)?.try_into()?);
    let kind_byte = take(1)?[0];
    let kind = match kind_byte & !WITH_MODEL {
        0 => DataKind::Readings,
        1 => DataKind::Opaque,
        k => bail!("unknown record kind {k}"),
    };
    let mut name = || -> anyhow::Result<String> {
        let len = u16::from_le_bytes(take(2)?.try_into()?) as usize;
        String::from_utf8(take(len)?.to_vec()).context("name is not UTF-8")
    };
    let (stream, namespace, workload, output) = (name()?, name()?, name()?, name()?);
    let model = if kind_byte & WITH_MODEL != 0 { Some(name()?) } else { None };
    let data = payload[at..].to_vec();
    let [index, seq, generation, produced_ms] = u64s;
    Ok(Stored { index, seq, record: OutRecord { stream, namespace, workload, output, generation, model, produced_ms, readings, kind, data } })
}

struct Scan {
    file_len: u64,
    valid_len: u64,
    readings: VecDeque<u32>,
    seqs: BTreeMap<String, u64>,
}

fn scan_segment(path: &Path, first: u64) -> anyhow::Result<Scan> {
    let mut file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let file_len = file.seek(SeekFrom::End(0))?;
    file.seek(SeekFrom::Start(0))?;
    let mut buf = Vec::with_capacity(file_len as usize);
    file.read_to_end(&mut buf)?;
    let mut scan = Scan { file_len, valid_len: 0, readings: VecDeque::new(), seqs: BTreeMap::new() };
    let mut at = 0;
    while let Some((payload, next)) = frame(&buf, at) {
        let Ok(stored) = decode(payload) else { break };
        if stored.index != first + scan.readings.len() as u64 {
            break;
        }
        scan.readings.push_back(stored.record.readings);
        scan.seqs.insert(stored.record.stream, stored.seq);
        at = next;
    }
    scan.valid_len = at as u64;
    Ok(scan)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(stream: &str, n: u32) -> OutRecord {
        OutRecord {
            stream: stream.into(),
            namespace: "ns".into(),
            workload: "wl".into(),
            output: "out".into(),
            generation: 7,
            // Records with and without a model version, so that both survive the round trip.
            model: (n % 2 == 1).then(|| format!("1.{n}.0")),
            produced_ms: 1000 + u64::from(n),
            readings: n,
            kind: DataKind::Readings,
            data: vec![n as u8; 100],
        }
    }

    fn open(dir: &Path, max_bytes: u64, policy: OverflowPolicy) -> Outbox {
        Outbox::open(OutboxConfig { dir: dir.to_owned(), max_bytes, policy, segment_bytes: 1000 }).expect("open")
    }

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread().build().expect("runtime")
    }

    #[test]
    fn records_survive_reopening_in_order_with_per_stream_numbers() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let outbox = open(dir.path(), 1 << 20, OverflowPolicy::RejectNew);
            rt().block_on(async {
                outbox.append(vec![record("a", 1), record("b", 2), record("a", 3)]).await.expect("append");
                outbox.append(vec![record("a", 4)]).await.expect("append");
            });
        }
        let outbox = open(dir.path(), 1 << 20, OverflowPolicy::RejectNew);
        let got = outbox.peek(100, 1 << 20).expect("peek");
        let seen: Vec<(u64, &str, u64, u32)> = got.iter().map(|s| (s.index, s.record.stream.as_str(), s.seq, s.record.readings)).collect();
        assert_eq!(seen, vec![(0, "a", 1, 1), (1, "b", 1, 2), (2, "a", 2, 3), (3, "a", 3, 4)]);
        assert_eq!(got[3].record, record("a", 4));
        assert_eq!(outbox.stats().pending_readings, 10);
        // Numbering continues after acknowledged records are gone.
        outbox.ack(4).expect("ack");
        assert_eq!(outbox.stats().pending_records, 0);
        drop(outbox);
        let outbox = open(dir.path(), 1 << 20, OverflowPolicy::RejectNew);
        rt().block_on(outbox.append(vec![record("a", 5)])).expect("append");
        let got = outbox.peek(100, 1 << 20).expect("peek");
        assert_eq!(got.iter().map(|s| (s.index, s.seq)).collect::<Vec<_>>(), vec![(4, 4)]);
    }

    #[test]
    fn a_torn_tail_is_cut_off() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let outbox = open(dir.path(), 1 << 20, OverflowPolicy::RejectNew);
            rt().block_on(outbox.append(vec![record("a", 1), record("a", 2)])).expect("append");
        }
        let segment = std::fs::read_dir(dir.path()).expect("dir").map(|e| e.expect("entry").path()).find(|p| p.extension().is_some_and(|e| e == "log")).expect("segment");
        let len = std::fs::metadata(&segment).expect("meta").len();
        OpenOptions::new().write(true).open(&segment).expect("open").set_len(len - 5).expect("truncate");
        let outbox = open(dir.path(), 1 << 20, OverflowPolicy::RejectNew);
        assert_eq!(outbox.peek(100, 1 << 20).expect("peek").len(), 1);
        rt().block_on(outbox.append(vec![record("a", 3)])).expect("append");
        let got = outbox.peek(100, 1 << 20).expect("peek");
        // The torn record's number is given again: it was never acknowledged to anyone.
        assert_eq!(got.iter().map(|s| (s.index, s.seq, s.record.readings)).collect::<Vec<_>>(), vec![(0, 1, 1), (1, 2, 3)]);
    }

    #[test]
    fn reject_new_reports_full_and_drop_oldest_counts_what_it_drops() {
        let dir = tempfile::tempdir().expect("tempdir");
        let outbox = open(dir.path(), 2000, OverflowPolicy::RejectNew);
        for n in 0..30 {
            rt().block_on(outbox.append(vec![record("a", n)])).expect("append");
        }
        assert!(outbox.refuses_new());
        assert_eq!(outbox.stats().dropped_records, 0);
        assert_eq!(outbox.peek(1000, 1 << 20).expect("peek").len(), 30);

        let dir = tempfile::tempdir().expect("tempdir");
        let outbox = open(dir.path(), 2000, OverflowPolicy::DropOldest);
        for n in 0..30 {
            rt().block_on(outbox.append(vec![record("a", n)])).expect("append");
        }
        assert!(!outbox.refuses_new());
        let stats = outbox.stats();
        let kept = outbox.peek(1000, 1 << 20).expect("peek");
        assert!(stats.dropped_records > 0, "{stats:?}");
        assert_eq!(stats.dropped_records + kept.len() as u64, 30, "{stats:?}");
        assert_eq!(stats.dropped_readings + kept.iter().map(|s| u64::from(s.record.readings)).sum::<u64>(), (0..30).sum::<u64>());
        // What is kept is the newest, still in order.
        assert_eq!(kept.last().expect("kept").seq, 30);
        assert!(kept.windows(2).all(|w| w[1].seq == w[0].seq + 1));
        // The drop counters survive a restart.
        drop(outbox);
        let outbox = open(dir.path(), 2000, OverflowPolicy::DropOldest);
        assert_eq!(outbox.stats().dropped_records, stats.dropped_records);
    }
}
