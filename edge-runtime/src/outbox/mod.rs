//! The durable outbox: what a node's workloads send to the cloud waits here, on disk, until
//! the orchestrators have committed it.
//!
//! One thread owns the outbox's files and numbering ([`writer`]): it appends records to
//! segment files (`outbox/seg-<first index>.log`), writing every waiting append and then
//! syncing once (group commit), and it settles what the uploader reports (delivered, or
//! refused as invalid) and what the size bound drops. An append returns only when its
//! records are on disk, so anything the node accepted survives a SIGKILL or a power cut.
//! Nothing else takes a lock the writer holds across IO: counters and the list of segments
//! are published after every change, and the uploader reads segment files on its own.
//!
//! Each record gets a node-wide index (its position in the outbox) and a per-stream sequence
//! number (1, 2, 3, ... per [`StreamId`]), which the receiver deduplicates on: the uploader may
//! send a record twice (it crashed between sending and remembering the answer), never zero
//! times.
//!
//! `state.json` remembers how far the orchestrators have acknowledged, the last sequence
//! number of every stream and the loss counters. It is written durably (file, rename,
//! directory) before any segment it makes unnecessary is deleted, so a crash between the two
//! leaves segments that a restart deletes, never numbers that go back: numbering that went
//! back would make the cloud drop new records as duplicates.
//!
//! The outbox is bounded (`max_bytes`): under [`OverflowPolicy::RejectNew`] a full outbox makes
//! ingest answer 503, so producers keep their data; under [`OverflowPolicy::DropOldest`] the
//! oldest unsent segment is deleted to make room, and every record and reading dropped that
//! way is counted (and persisted) so the books always balance.
//!
//! Recovery reads every segment past damage ([`segment`]): a torn frame at the end of the last
//! segment (a crash mid-write, never acknowledged to anyone) is cut off; damage anywhere else
//! loses exactly the records it covers, which are counted as corrupt, and the readable records
//! after it are kept.

mod segment;
mod writer;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};

use edgeplane_api::data::StreamId;
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use segment::{Frames, Sealing};

use crate::storage::StorageKey;

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
    /// The node's storage key: records are sealed with it at rest ([`crate::storage`]).
    pub key: Option<Arc<StorageKey>>,
}

/// Why the outbox could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    #[error("outbox IO on {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is corrupt")]
    CorruptState {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    /// A write failed; the records were not appended (the producer keeps them).
    #[error("the outbox could not write: {0}")]
    WriteFailed(String),
    #[error("the outbox writer has stopped")]
    Stopped,
    #[error("{0} holds records sealed with a storage key; start the node with the key that wrote them")]
    Sealed(PathBuf),
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
    pub stream: StreamId,
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
    /// Records and readings waiting to be sent (or being sent), and their bytes on disk.
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
    /// Records lost to damage on disk, found at startup or when read (persisted).
    pub corrupt_records: u64,
    /// Records the orchestrators refused as invalid, set aside so that they do not block the
    /// rest (persisted).
    pub rejected_records: u64,
    pub rejected_readings: u64,
    /// When the oldest pending record was appended (ms since the Unix epoch), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oldest_pending_ms: Option<u64>,
    pub max_bytes: u64,
}

/// The oldest unacknowledged records, as the uploader reads them.
#[derive(Debug, Default)]
pub struct Peeked {
    pub records: Vec<Stored>,
    /// The indices up to `upto` that could not be read (damaged since they were written):
    /// settling past them counts them as corrupt, not as delivered.
    pub unreadable: BTreeSet<u64>,
    /// Acknowledge up to here (exclusive) once the records are delivered.
    pub upto: u64,
}

/// The segments as the writer last published them, for readers.
#[derive(Debug, Clone, Default)]
struct View {
    acked: u64,
    next_index: u64,
    /// (first index, path) of each segment, oldest first.
    segments: Vec<(u64, PathBuf)>,
}

/// What the writer publishes and anyone may read without waiting for it.
#[derive(Debug, Default)]
struct Published {
    view: Mutex<Arc<View>>,
    stats: Mutex<OutboxStats>,
    /// Unsent bytes, for the admission check on every ingest.
    pending_bytes: AtomicU64,
}

type Reply<T> = oneshot::Sender<Result<T, OutboxError>>;

/// Work for the writer thread.
enum Job {
    Append {
        records: Vec<OutRecord>,
        reply: Reply<()>,
    },
    /// Everything below `upto` but `unreadable` was delivered or, when not `delivered`,
    /// refused as invalid; `unreadable` was lost to damage.
    Settle {
        upto: u64,
        delivered: bool,
        unreadable: BTreeSet<u64>,
        reply: Reply<()>,
    },
}

/// The outbox. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct Outbox {
    config: OutboxConfig,
    jobs: mpsc::Sender<Job>,
    published: Arc<Published>,
    sealing: Sealing,
    /// Where the last peek's records started and ended on disk: the next peek resumes at the
    /// later of the two that is not past the acknowledged position, instead of reading and
    /// opening every frame of the segment before it again (draining a segment in batches
    /// opened a number of frames quadratic in its length).
    resume: Mutex<[Option<Resume>; 2]>,
    /// Frames peeks read (and opened, when sealed), for the test that draining a segment
    /// reads each frame about once.
    #[cfg(test)]
    frames_read: AtomicU64,
}

/// A frame boundary a peek saw: in the segment starting at index `segment`, the frame at
/// byte `offset` holds record `index` (or, at the segment's end so far, the next one will).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Resume {
    segment: u64,
    offset: u64,
    index: u64,
}

impl Outbox {
    /// Opens (or creates) the outbox in `config.dir`, recovering what a crash left behind, and
    /// starts its writer thread. Blocks on disk IO: call it where blocking is allowed.
    pub fn open(config: OutboxConfig) -> Result<Outbox, OutboxError> {
        Self::open_with(config, writer::Faults::default())
    }

    fn open_with(config: OutboxConfig, faults: writer::Faults) -> Result<Outbox, OutboxError> {
        let published = Arc::new(Published::default());
        let (jobs, sealing) = writer::start(config.clone(), Arc::clone(&published), faults)?;
        Ok(Outbox {
            config,
            jobs,
            published,
            sealing,
            resume: Mutex::default(),
            #[cfg(test)]
            frames_read: AtomicU64::new(0),
        })
    }

    /// Appends records and returns once they are on disk.
    pub async fn append(&self, records: Vec<OutRecord>) -> Result<(), OutboxError> {
        if records.is_empty() {
            return Ok(());
        }
        self.ask(|reply| Job::Append { records, reply }).await
    }

    /// Marks every record below `upto` delivered but those `unreadable` (counted as corrupt);
    /// segments nothing needs any more are deleted once that is durable.
    pub async fn ack(&self, upto: u64, unreadable: BTreeSet<u64>) -> Result<(), OutboxError> {
        self.ask(|reply| Job::Settle { upto, delivered: true, unreadable, reply }).await
    }

    /// Sets aside the records below `upto`, which the orchestrators refused as invalid, and
    /// counts them (those `unreadable` as corrupt).
    pub async fn reject(&self, upto: u64, unreadable: BTreeSet<u64>) -> Result<(), OutboxError> {
        self.ask(|reply| Job::Settle { upto, delivered: false, unreadable, reply }).await
    }

    async fn ask(&self, job: impl FnOnce(Reply<()>) -> Job) -> Result<(), OutboxError> {
        let (reply, done) = oneshot::channel();
        self.jobs.send(job(reply)).map_err(|_| OutboxError::Stopped)?;
        done.await.map_err(|_| OutboxError::Stopped)?
    }

    /// Whether new data must be refused: the outbox is full and the policy keeps old data.
    pub fn refuses_new(&self) -> bool {
        self.config.policy == OverflowPolicy::RejectNew && self.published.pending_bytes.load(Ordering::Relaxed) >= self.config.max_bytes
    }

    pub fn stats(&self) -> OutboxStats {
        self.published.stats.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The oldest unacknowledged records, at most `max_records` and about `max_bytes` of
    /// data. Reads segment files: blocks on disk IO, so call it where blocking is allowed.
    /// Appends go on meanwhile; a segment dropped by drop-oldest while this reads ends the
    /// read early (the next one starts after it).
    pub fn peek(&self, max_records: usize, max_bytes: usize) -> Result<Peeked, OutboxError> {
        let view = Arc::clone(&self.published.view.lock().unwrap_or_else(|p| p.into_inner()));
        let resume = *self.resume.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = Peeked { upto: view.acked, ..Peeked::default() };
        let mut seen: [Option<Resume>; 2] = [None; 2];
        let mut bytes = 0;
        for (i, (first, path)) in view.segments.iter().enumerate() {
            let end = view.segments.get(i + 1).map_or(view.next_index, |(next, _)| *next);
            if end <= view.acked {
                continue;
            }
            // Segments only grow (a failed write is cut back to what was published before),
            // so a boundary seen in this segment is still one.
            let from = resume
                .iter()
                .flatten()
                .filter(|r| r.segment == *first && r.index <= view.acked)
                .max_by_key(|r| r.index)
                .map_or((0, *first), |r| (r.offset, r.index));
            let buf = match read_from(path, from.0) {
                Ok(buf) => buf,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(self.resume_at(out, seen)),
                Err(source) => return Err(OutboxError::Io { path: path.clone(), source }),
            };
            let mut frames = Frames::new(&buf, from.1, &self.sealing);
            let mut last_read = None;
            for frame in frames.by_ref() {
                #[cfg(test)]
                self.frames_read.fetch_add(1, Ordering::Relaxed);
                let index = frame.record.index;
                if index >= end {
                    break;
                }
                last_read = Some(index);
                if index < view.acked {
                    continue;
                }
                // Damage between the acknowledged position and this record.
                out.unreadable.extend(out.upto.max(view.acked)..index);
                out.upto = index + 1;
                let at = |offset: usize, index| Some(Resume { segment: *first, offset: from.0 + offset as u64, index });
                seen[0] = seen[0].or(at(frame.start, index));
                seen[1] = at(frame.end, index + 1);
                bytes += frame.record.record.data.len();
                out.records.push(frame.record);
                if out.records.len() >= max_records || bytes >= max_bytes {
                    return Ok(self.resume_at(out, seen));
                }
            }
            // Damage at the segment's end: the records up to the next one are lost too. (Every
            // record below `end` was on disk before the view was published.)
            if last_read.is_none_or(|l| l + 1 < end) {
                out.unreadable.extend(out.upto.max(view.acked)..end);
                out.upto = end;
            }
        }
        Ok(self.resume_at(out, seen))
    }

    /// Keeps the boundaries this peek saw (if it saw any) for the next.
    fn resume_at(&self, peeked: Peeked, seen: [Option<Resume>; 2]) -> Peeked {
        if seen[0].is_some() {
            *self.resume.lock().unwrap_or_else(|p| p.into_inner()) = seen;
        }
        peeked
    }
}

/// The segment file from byte `offset` on.
fn read_from(path: &std::path::Path, offset: u64) -> std::io::Result<Vec<u8>> {
    use std::io::{Read as _, Seek as _};
    let mut file = std::fs::File::open(path)?;
    file.seek(std::io::SeekFrom::Start(offset))?;
    let mut buf = Vec::new();
    file.read_to_end(&mut buf)?;
    Ok(buf)
}

#[cfg(test)]
mod tests;
