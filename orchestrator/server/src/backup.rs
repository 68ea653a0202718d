//! Backups of the whole replicated state, and restoring one into a new cluster.
//!
//! - `GET /v1/backup` (cluster-admin): a linearizable copy of the state, as one line of
//!   [`BackupInfo`] and the state's snapshot encoding. The copy is consistent by construction
//!   (the state machine at one applied index); `edgectl backup create` seals it.
//! - Scheduled backups (`--backup-dir`, `--backup-key`): every interval the member takes the
//!   same copy, seals it into `<dir>/edgeplane-<time>-<index>.epbackup` (written whole, then
//!   renamed), deletes what the retention policy no longer keeps, and records the backup in the
//!   replicated store so that every member reports it (`edgectl cluster status`).
//! - `orchestrator restore --from FILE --backup-key KEY <the member's usual flags>`: opens
//!   the backup, checks it, and seeds the member's empty data directory
//!   (`edgeplane_raft::restore`). Run it on every member of the new cluster, then start them.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context as _;
use axum::body::Body;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use edgeplane_api::backup::{BackupInfo, LastBackup, LAST_BACKUP_KIND};
use edgeplane_api::Consistency;
use edgeplane_core::{Command, ObjectKey, Precondition};
use edgeplane_tls::sealing::SealingKey;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::app::AppState;
use crate::config::BackupSchedule;
use crate::http::{off_reactor, read, unix_ms_now, ApiError};

/// Files of scheduled backups end so.
const EXTENSION: &str = "epbackup";

/// A consistent copy of the state and its header, from a linearizable read.
async fn capture(state: &AppState) -> Result<(BackupInfo, Vec<u8>), ApiError> {
    let current = read(state, Consistency::Linearizable).await?;
    let term = state.node.status().await.map_or(0, |s| s.term);
    let member = state.config.id;
    off_reactor(move || {
        let bytes = current.to_snapshot();
        let info = BackupInfo::describe(&bytes, current.applied_index(), term, current.len() as u64, member, unix_ms_now());
        (info, bytes)
    })
    .await
}

/// `GET /v1/backup`: the header line, then the state.
pub(crate) async fn take(State(state): State<AppState>) -> Result<Response, ApiError> {
    let (info, bytes) = capture(&state).await?;
    let mut body = serde_json::to_vec(&info).map_err(|e| ApiError::internal(format!("the backup header: {e}")))?;
    body.push(b'\n');
    body.extend_from_slice(&bytes);
    Ok(([(header::CONTENT_TYPE, "application/octet-stream")], Body::from(body)).into_response())
}

/// Scheduled backups' metrics.
#[derive(Debug, Clone, Default)]
pub struct BackupMetrics {
    taken: Counter,
    failed: Counter,
    last_success: Gauge,
    last_duration_seconds: Gauge<f64, std::sync::atomic::AtomicU64>,
    last_bytes: Gauge,
    last_index: Gauge,
}

impl BackupMetrics {
    pub fn new(registry: &mut Registry) -> BackupMetrics {
        let m = BackupMetrics::default();
        let r = registry.sub_registry_with_prefix("edgeplane_backup");
        r.register("taken", "Scheduled backups written", m.taken.clone());
        r.register("failed", "Scheduled backups that failed", m.failed.clone());
        r.register(
            "last_success_timestamp_seconds",
            "When the last good scheduled backup was taken (Unix seconds; 0: none yet)",
            m.last_success.clone(),
        );
        r.register("last_duration_seconds", "How long the last good scheduled backup took", m.last_duration_seconds.clone());
        r.register("last_size_bytes", "Size of the last good scheduled backup's file", m.last_bytes.clone());
        r.register("last_index", "The log index the last good scheduled backup holds the state at", m.last_index.clone());
        m
    }
}

/// Takes a backup every interval while the process runs.
pub(crate) async fn run_schedule(state: AppState, schedule: BackupSchedule) {
    let key = match SealingKey::load(&schedule.key, false) {
        Ok(key) => std::sync::Arc::new(key),
        Err(e) => {
            tracing::error!("scheduled backups are off: {e}");
            return;
        }
    };
    let mut ticker = tokio::time::interval(schedule.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first tick is immediate: give the cluster an interval to elect and catch up first.
    ticker.tick().await;
    loop {
        ticker.tick().await;
        match scheduled_backup(&state, &schedule, &key).await {
            Ok(last) => {
                let m = &state.backup_metrics;
                m.taken.inc();
                m.last_success.set((last.created_at_ms / 1000) as i64);
                m.last_duration_seconds.set(last.duration_ms as f64 / 1000.0);
                m.last_bytes.set(last.file_bytes as i64);
                m.last_index.set(last.index as i64);
                tracing::info!(path = %last.path, index = last.index, objects = last.objects, bytes = last.file_bytes, ms = last.duration_ms, "backup taken");
                record(&state, last).await;
            }
            Err(e) => {
                state.backup_metrics.failed.inc();
                tracing::warn!("scheduled backup failed: {e:#}");
            }
        }
    }
}

async fn scheduled_backup(state: &AppState, schedule: &BackupSchedule, key: &std::sync::Arc<SealingKey>) -> anyhow::Result<LastBackup> {
    let started = Instant::now();
    let (info, bytes) = capture(state).await.map_err(|e| anyhow::anyhow!("reading the state: {}", e.0.message))?;
    let dir = schedule.dir.clone();
    let key = std::sync::Arc::clone(key);
    let retention = schedule.retention;
    tokio::task::spawn_blocking(move || -> anyhow::Result<LastBackup> {
        let header = serde_json::to_vec(&info)?;
        let file = edgeplane_tls::backup::seal(&key, &header, &bytes);
        // The member in the name: members sharing a directory never write the same file.
        let name = format!("edgeplane-{}-m{}-{}.{EXTENSION}", file_time(info.created_at_ms), info.member, info.index);
        let path = dir.join(name);
        write_durably(&path, &file)?;
        prune(&dir, retention, info.member)?;
        Ok(LastBackup {
            member: info.member,
            path: path.display().to_string(),
            created_at_ms: info.created_at_ms,
            index: info.index,
            objects: info.objects,
            file_bytes: file.len() as u64,
            duration_ms: started.elapsed().as_millis() as u64,
        })
    })
    .await?
}

/// `20261202T223000Z`: sorts as it reads.
fn file_time(ms: u64) -> String {
    jiff::Timestamp::from_millisecond(ms as i64).map_or_else(|_| ms.to_string(), |t| t.strftime("%Y%m%dT%H%M%SZ").to_string())
}

/// Writes `bytes` to `path` whole or not at all: a temporary file, fsync, rename, fsync of the
/// directory.
pub(crate) fn write_durably(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let dir = path.parent().context("a backup path has a directory")?;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    edgeplane_tls::durable::write_atomically(path, bytes, edgeplane_tls::durable::Access::Shared).context("cannot write the backup")
}

/// Deletes the backups in `dir` the policy does not keep (by the time in each file's header;
/// files whose header does not read are left alone), and this member's temporary files of
/// failed attempts (another member sharing the directory may be writing its own).
fn prune(dir: &Path, policy: edgeplane_core::retention::RetentionPolicy, member: u64) -> anyhow::Result<()> {
    let own_tmp = format!("-m{member}-");
    let mut backups: Vec<(PathBuf, u64)> = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))? {
        let path = entry?.path();
        match path.extension().and_then(|e| e.to_str()) {
            Some(EXTENSION) => {
                if let Some(taken) = read_header(&path).ok().map(|info| info.created_at_ms) {
                    backups.push((path, taken));
                }
            }
            Some("tmp")
                if path
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("edgeplane-") && n.to_string_lossy().contains(&own_tmp)) =>
            {
                let _ = std::fs::remove_file(&path);
            }
            _ => {}
        }
    }
    let taken: Vec<u64> = backups.iter().map(|(_, t)| *t).collect();
    for ((path, _), keep) in backups.iter().zip(edgeplane_core::retention::keep(&taken, policy)) {
        if !keep {
            std::fs::remove_file(path).with_context(|| format!("cannot delete {}", path.display()))?;
            tracing::info!(path = %path.display(), "deleted a backup the retention policy no longer keeps");
        }
    }
    Ok(())
}

/// The header of a backup file, read from its first line only.
fn read_header(path: &Path) -> anyhow::Result<BackupInfo> {
    use std::io::Read as _;
    let mut start = Vec::new();
    std::fs::File::open(path)?.take(64 * 1024).read_to_end(&mut start)?;
    let header = edgeplane_tls::backup::header(&start).map_err(anyhow::Error::new)?;
    Ok(serde_json::from_slice(header)?)
}

/// Records the last good backup in the replicated store; a lost write only means the status
/// shows the one before until the next.
async fn record(state: &AppState, last: LastBackup) {
    let key = ObjectKey::new(LAST_BACKUP_KIND, "", format!("member-{}", last.member));
    let Ok(value) = serde_json::to_value(&last) else { return };
    if let Err(e) = state.node.write(Command::Put { key, value, precondition: Precondition::None }).await {
        tracing::debug!(error = %e, "the last backup was not recorded in the store");
    }
}

/// `orchestrator restore`: seeds this member's empty data directory from a backup file.
#[derive(Debug, clap::Parser)]
#[command(name = "orchestrator restore", args_override_self = true)]
pub struct RestoreArgs {
    /// The backup file (`edgectl backup create`, or a scheduled backup).
    #[arg(long = "from")]
    pub from: PathBuf,
    /// The restored log continues this many indices after the backup's, so that no
    /// resourceVersion clients saw in the old cluster after the backup is reused (their watches
    /// are answered 410 Gone and they list again). More than the old cluster could have
    /// written since the backup; give every member the same value.
    #[arg(long, default_value_t = 1_000_000_000)]
    pub bump_index: u64,
    /// The member's usual flags (or --config): its id, the new cluster's members, its data
    /// directory and TLS directory; and --backup-key, the key the backup was sealed with.
    #[command(flatten)]
    pub member: crate::config::Args,
}

/// Restores one member; prints what it restored.
pub fn restore(mut args: RestoreArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    // The key without --backup-dir is the restore's alone, not half a schedule.
    let key_flag = args.member.backup_key.clone();
    if args.member.backup_dir.is_none() {
        args.member.backup_key = None;
    }
    let config = crate::config::Config::load(args.member).map_err(|errors| anyhow::anyhow!("the configuration: {}", errors.join("; ")))?;
    let key_path = key_flag
        .or_else(|| config.backups.as_ref().map(|b| b.key.clone()))
        .context("--backup-key: required (the key the backup was sealed with)")?;
    let key = SealingKey::load(&key_path, false).map_err(anyhow::Error::msg)?;
    let file = std::fs::read(&args.from).with_context(|| format!("cannot read {}", args.from.display()))?;
    let (header, state) = edgeplane_tls::backup::open(&key, &file).with_context(|| format!("{}", args.from.display()))?;
    let info: BackupInfo = serde_json::from_slice(&header).context("the backup's header")?;
    info.check(&state).map_err(|e| anyhow::anyhow!("{}: {e}", args.from.display()))?;
    let voters = config.members.iter().map(|m| m.id).collect();
    std::fs::create_dir_all(&config.data_dir).with_context(|| format!("cannot create {}", config.data_dir.display()))?;
    let restored = edgeplane_raft::restore::seed(&config.data_dir, &state, info.index, info.term, voters, args.bump_index)?;
    println!(
        "restored member {} from {} (index {}, continuing at {}, {} objects, taken {} by member {}) into {} in {} ms",
        config.id,
        args.from.display(),
        info.index,
        restored.applied_index(),
        restored.len(),
        file_time(info.created_at_ms),
        info.member,
        config.data_dir.display(),
        started.elapsed().as_millis()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_restore_command_line_is_well_formed() {
        <RestoreArgs as clap::CommandFactory>::command().debug_assert();
    }

    #[test]
    fn pruning_keeps_what_the_policy_keeps_and_clears_failed_attempts() {
        let dir = tempfile::tempdir().expect("tempdir");
        let key = SealingKey::from_bytes(&[3; 32]);
        let hour = 3_600_000;
        let base = 1_795_996_800_000; // Monday 2026-11-30 00:00 UTC
        for h in 0..5u64 {
            let info = BackupInfo::describe(b"{}", h + 1, 1, 0, 1, base + h * hour);
            let file = edgeplane_tls::backup::seal(&key, &serde_json::to_vec(&info).expect("json"), b"{}");
            write_durably(&dir.path().join(format!("edgeplane-{}-m1-{}.{EXTENSION}", file_time(info.created_at_ms), h + 1)), &file)
                .expect("written");
        }
        std::fs::write(dir.path().join("edgeplane-x-m1-9.tmp"), b"half").expect("tmp");
        std::fs::write(dir.path().join("edgeplane-x-m2-9.tmp"), b"member 2 is writing").expect("tmp");
        std::fs::write(dir.path().join("notes.txt"), b"mine").expect("other");
        std::fs::write(dir.path().join("broken.epbackup"), b"not a backup").expect("broken");
        prune(dir.path(), edgeplane_core::retention::RetentionPolicy { hourly: 2, daily: 0, weekly: 0 }, 1).expect("pruned");
        let mut left: Vec<String> =
            std::fs::read_dir(dir.path()).expect("dir").map(|e| e.expect("entry").file_name().to_string_lossy().into_owned()).collect();
        left.sort();
        assert_eq!(
            left,
            [
                "broken.epbackup",
                "edgeplane-20261130T030000Z-m1-4.epbackup",
                "edgeplane-20261130T040000Z-m1-5.epbackup",
                "edgeplane-x-m2-9.tmp",
                "notes.txt"
            ]
        );
    }
}
