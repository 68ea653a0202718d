//! The audit log's IO: records of requests that wrote nothing, batched into the log; each
//! orchestrator's archive of the whole chain on disk; and `GET /v1/audit`.
//!
//! The replicated state holds the chain's head and its recent records
//! ([`edgeplane_core::audit`]). Every orchestrator appends each record it applies to its
//! archive, `<data-dir>/audit/<first seq>.jsonl` (JSON lines, a new file every
//! [`SEGMENT_RECORDS`]), and serves the log from there, so the history outlives the window.
//! A member that missed records (it was down for long, or caught up by snapshot) fetches them
//! from another member and checks that they chain on before writing them.
//!
//! Refused requests can come faster than anything should be written: at most
//! [`QUEUE`] records wait; beyond that they are counted, and one record says how many were
//! not recorded one by one.

use std::io::{BufRead as _, Write as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::Json;
use edgeplane_api::audit::{AuditEvent, AuditPage, AuditRecord, GENESIS};
use edgeplane_client::{Client, Request};
use edgeplane_core::Command;
use edgeplane_raft::NodeHandle;
use tokio::sync::mpsc;

use crate::app::AppState;
use crate::http::{cause, off_reactor, only_params, ApiError, RawQuery};

/// Audit records of refused requests waiting to be written.
const QUEUE: usize = 10_000;
/// Records per batch entry.
const BATCH: usize = 512;
/// Records per archive file.
pub const SEGMENT_RECORDS: u64 = 100_000;
/// Records `GET /v1/audit` returns at most.
const MAX_PAGE: usize = 1_000;

/// Where records of requests that wrote nothing go.
#[derive(Debug, Clone)]
pub struct AuditSink {
    queue: mpsc::Sender<AuditEvent>,
    dropped: Arc<AtomicU64>,
}

impl AuditSink {
    /// Starts the task that writes queued records in batches, through `node`.
    pub fn start(node: NodeHandle, server: u64) -> AuditSink {
        let (queue, received) = mpsc::channel(QUEUE);
        let dropped = Arc::new(AtomicU64::new(0));
        tokio::spawn(write_batches(node, received, dropped.clone(), server));
        AuditSink { queue, dropped }
    }

    /// Queues a record; counts it when the queue is full.
    pub fn record(&self, event: AuditEvent) {
        if self.queue.try_send(event).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

async fn write_batches(node: NodeHandle, mut received: mpsc::Receiver<AuditEvent>, dropped: Arc<AtomicU64>, server: u64) {
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        if received.recv_many(&mut batch, BATCH).await == 0 {
            return;
        }
        let lost = dropped.swap(0, Ordering::Relaxed);
        if lost > 0 {
            batch.push(AuditEvent {
                time: crate::http::rfc3339_millis_now(),
                request_id: String::new(),
                server,
                user: "system:orchestrator".to_owned(),
                groups: Vec::new(),
                source: String::new(),
                method: String::new(),
                path: String::new(),
                code: 0,
                outcome: format!("{lost} refused or failed requests came while the audit queue was full and were not recorded one by one"),
            });
        }
        let mut wait = Duration::from_millis(100);
        loop {
            match node.write(Command::Audit(batch.clone())).await {
                Ok(_) => break,
                Err(e) => {
                    tracing::debug!("audit records wait: {e}");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(2));
                }
            }
        }
        batch.clear();
    }
}

/// An orchestrator's archive of the chain.
#[derive(Debug, Clone)]
pub struct Archive {
    dir: PathBuf,
}

impl Archive {
    pub fn new(data_dir: &Path) -> Archive {
        Archive { dir: data_dir.join("audit") }
    }

    /// The segment files, by the sequence number of their first record.
    fn segments(&self) -> std::io::Result<Vec<(u64, PathBuf)>> {
        let mut all = Vec::new();
        match std::fs::read_dir(&self.dir) {
            Ok(entries) => {
                for entry in entries {
                    let path = entry?.path();
                    if let Some(first) = path.file_stem().and_then(|s| s.to_str()).and_then(|s| s.parse::<u64>().ok()) {
                        all.push((first, path));
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        all.sort();
        Ok(all)
    }

    /// The last record archived: `(seq, hash)`, `(0, GENESIS)` for an empty archive.
    fn last(&self) -> std::io::Result<(u64, String)> {
        let Some((_, path)) = self.segments()?.pop() else { return Ok((0, GENESIS.to_owned())) };
        let mut last = None;
        for line in std::io::BufReader::new(std::fs::File::open(&path)?).lines() {
            let line = line?;
            if let Ok(record) = serde_json::from_str::<AuditRecord>(&line) {
                last = Some((record.seq, record.hash));
            }
        }
        Ok(last.unwrap_or((0, GENESIS.to_owned())))
    }

    /// Appends records (which follow the last one archived) and syncs them.
    fn append(&self, records: &[AuditRecord]) -> std::io::Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        let mut segments = self.segments()?;
        let mut current = segments.pop();
        let mut file: Option<(u64, std::fs::File)> = None;
        for record in records {
            let start_new = match &current {
                None => true,
                Some((first, _)) => record.seq >= first + SEGMENT_RECORDS,
            };
            if start_new || file.is_none() {
                if let Some((_, f)) = file.take() {
                    f.sync_data()?;
                }
                let (first, path) = if start_new {
                    (record.seq, self.dir.join(format!("{:020}.jsonl", record.seq)))
                } else {
                    current.clone().expect("checked above")
                };
                current = Some((first, path.clone()));
                file = Some((first, std::fs::OpenOptions::new().create(true).append(true).open(&path)?));
            }
            let (_, f) = file.as_mut().expect("opened above");
            let mut line = serde_json::to_vec(record).map_err(std::io::Error::other)?;
            line.push(b'\n');
            f.write_all(&line)?;
        }
        if let Some((_, f)) = file {
            f.sync_data()?;
        }
        Ok(())
    }

    /// Up to `limit` records after `after`, as stored (an unreadable line comes back as a
    /// record that cannot verify, so that a verifier names it).
    fn read(&self, after: u64, limit: usize) -> std::io::Result<Vec<AuditRecord>> {
        let segments = self.segments()?;
        let start = segments.iter().rposition(|(first, _)| *first <= after + 1).unwrap_or(0);
        let mut out = Vec::new();
        let mut expected = after + 1;
        for (_, path) in &segments[start..] {
            for line in std::io::BufReader::new(std::fs::File::open(path)?).lines() {
                let line = line?;
                let record = serde_json::from_str::<AuditRecord>(&line).unwrap_or_else(|e| unreadable(expected, &line, &e));
                if record.seq <= after {
                    continue;
                }
                expected = record.seq + 1;
                out.push(record);
                if out.len() >= limit {
                    return Ok(out);
                }
            }
        }
        Ok(out)
    }
}

fn unreadable(seq: u64, line: &str, e: &serde_json::Error) -> AuditRecord {
    let shown: String = line.chars().take(80).collect();
    AuditRecord {
        seq,
        prev_hash: String::new(),
        hash: String::new(),
        event: AuditEvent {
            time: String::new(),
            request_id: String::new(),
            server: 0,
            user: String::new(),
            groups: Vec::new(),
            source: String::new(),
            method: String::new(),
            path: String::new(),
            code: 0,
            outcome: format!("unreadable archive line ({e}): {shown}"),
        },
    }
}

/// Keeps the archive up with the replicated chain, until the process stops.
pub async fn keep_archive(app: AppState, archive: Archive, peers: Option<Arc<Client>>) {
    let reader = archive.clone();
    let mut last = match tokio::task::spawn_blocking(move || reader.last()).await {
        Ok(Ok(last)) => last,
        Ok(Err(e)) => {
            tracing::error!("cannot read the audit archive in {}: {e}; not archiving", archive.dir.display());
            return;
        }
        Err(_) => return,
    };
    let mut warned = false;
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let state = app.node.latest();
        if state.audit().head().seq <= last.0 {
            continue;
        }
        let mut records: Vec<AuditRecord> = state.audit().after(last.0, 10_000).iter().map(|r| AuditRecord::clone(r)).collect();
        if records.first().is_some_and(|r| r.seq > last.0 + 1) {
            // Records left the window before this member archived them: fetch them.
            let Some(peers) = &peers else { continue };
            match backfill(peers, last.0, records[0].seq).await {
                Ok(mut missing) => {
                    missing.append(&mut records);
                    records = missing;
                }
                Err(e) => {
                    if !warned {
                        tracing::warn!("the audit archive misses records {}..{}: {e}; retrying", last.0 + 1, records[0].seq);
                        warned = true;
                    }
                    continue;
                }
            }
        }
        match edgeplane_api::audit::verify((last.0, &last.1), &records) {
            Ok(_) => {}
            Err(broken) => {
                tracing::error!(seq = broken.seq, "the audit chain does not continue this member's archive: {}", broken.why);
                tokio::time::sleep(Duration::from_secs(5)).await;
                continue;
            }
        }
        let writer = archive.clone();
        let next = records.last().map(|r| (r.seq, r.hash.clone()));
        match tokio::task::spawn_blocking(move || writer.append(&records)).await {
            Ok(Ok(())) => {
                warned = false;
                if let Some(next) = next {
                    last = next;
                }
            }
            Ok(Err(e)) => {
                tracing::error!("cannot write the audit archive: {e}");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(_) => return,
        }
    }
}

/// Records `after + 1 .. until` from the other members.
async fn backfill(peers: &Client, after: u64, until: u64) -> Result<Vec<AuditRecord>, String> {
    let mut out: Vec<AuditRecord> = Vec::new();
    let mut from = after;
    while from + 1 < until {
        let page: AuditPage = peers
            .send(Request::get(format!("{}?after={from}&limit={MAX_PAGE}", edgeplane_api::audit::AUDIT)))
            .await
            .map_err(|e| e.to_string())?
            .json()
            .map_err(|e| e.to_string())?;
        let got: Vec<AuditRecord> = page.records.into_iter().take_while(|r| r.seq < until).collect();
        let Some(last) = got.last() else { return Err("no member holds them".to_owned()) };
        from = last.seq;
        out.extend(got);
    }
    Ok(out)
}

/// `GET /v1/audit?after=N&limit=M`: records from this member's archive (then from the
/// replicated window, for what the archive has not caught up with), and the head.
pub async fn page(State(app): State<AppState>, q: RawQuery) -> Result<Json<AuditPage>, ApiError> {
    let params = only_params(q, &["after", "limit"])?;
    let number = |key: &str, default: u64| -> Result<u64, ApiError> {
        params.get(key).map_or(Ok(default), |v| {
            v.parse().map_err(|_| ApiError::invalid(vec![cause(format!("query.{key}"), format!("{v:?} is not a number"))]))
        })
    };
    let after = number("after", 0)?;
    let limit = number("limit", 100)?.clamp(1, MAX_PAGE as u64) as usize;
    let state = app.node.latest();
    let head = state.audit().head().clone();
    let archive = app.archive.clone();
    let mut records =
        off_reactor(move || archive.read(after, limit)).await?.map_err(|e| ApiError::internal(format!("the audit archive: {e}")))?;
    if records.len() < limit {
        let from = records.last().map_or(after, |r| r.seq);
        records.extend(state.audit().after(from, limit - records.len()).iter().map(|r| AuditRecord::clone(r)));
    }
    Ok(Json(AuditPage { records, head }))
}
