//! The orchestrator's configuration: flags, an optional TOML file, and one validation pass
//! that reports every problem at once, before anything starts.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use serde::Deserialize;

/// One orchestrator of an edgeplane control plane.
///
/// Every member of a cluster is started with the same --member list. Flags override values
/// from --config.
#[derive(Debug, Parser)]
#[command(name = "orchestrator", version, about)]
pub struct Args {
    /// TOML file with any of the settings below (keys as the flags, with underscores).
    #[arg(long, short = 'c', env = "EDGEPLANE_CONFIG")]
    pub config: Option<PathBuf>,
    /// This node's id: one of the --member ids.
    #[arg(long)]
    pub id: Option<u64>,
    /// Directory for the Raft log and snapshots.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// A cluster member as ID=PEER_ADDR,API_ADDR, e.g. 1=127.0.0.1:7001,127.0.0.1:8001.
    /// Repeat for every member, including this one.
    #[arg(long = "member", value_name = "ID=PEER,API")]
    pub members: Vec<String>,
    /// Address to listen on for peers (default: this member's PEER_ADDR).
    #[arg(long)]
    pub peer_listen: Option<String>,
    /// Address to serve the REST API on (default: this member's API_ADDR).
    #[arg(long)]
    pub api_listen: Option<String>,
    /// Length of one Raft tick in milliseconds.
    #[arg(long)]
    pub tick_ms: Option<u64>,
    /// Ticks without a leader before an election starts (randomised up to twice this).
    #[arg(long)]
    pub election_ticks: Option<u64>,
    /// Ticks between leader heartbeats.
    #[arg(long)]
    pub heartbeat_ticks: Option<u64>,
    /// Snapshot the state and compact the log every this many entries.
    #[arg(long)]
    pub snapshot_every: Option<u64>,
    /// How long a request waits for its write to commit, in milliseconds.
    #[arg(long)]
    pub write_timeout_ms: Option<u64>,
    /// Log filter, e.g. info or edgeplane=debug,raft=info (RUST_LOG wins when set).
    #[arg(long)]
    pub log: Option<String>,
    /// This member's TLS directory, as `orchestrator init` wrote it: ca.crt and ca.key (the
    /// cluster CA), member.crt and member.key (this member's certificate).
    #[arg(long)]
    pub tls_dir: Option<PathBuf>,
    /// Lifetime of the certificates edge nodes are issued, in seconds; nodes renew them when
    /// two thirds have passed. Default 86400 (a day).
    #[arg(long)]
    pub node_cert_ttl_s: Option<u64>,
    /// ONNX Runtime's C library (`libonnxruntime.so.*`): the model registry then checks pushed
    /// models with it too, and accepts those only it can run.
    #[arg(long)]
    pub onnxruntime_lib: Option<PathBuf>,
    /// Connections the API accepts at once, in all. Default 8192.
    #[arg(long)]
    pub max_connections: Option<usize>,
    /// Connections the API accepts at once from one client address. Default 256.
    #[arg(long)]
    pub max_connections_per_ip: Option<usize>,
    /// TLS handshakes of the API that do their cryptography at once (the others wait their
    /// turn, once their ClientHello arrived). Default 32.
    #[arg(long)]
    pub concurrent_handshakes: Option<usize>,
    /// Silence (no heartbeat) after which a node is Suspect: it keeps its replicas but gets no
    /// new ones. Default 1000 (two missed heartbeats at the edge runtime's default 500 ms).
    #[arg(long)]
    pub node_suspect_ms: Option<u64>,
    /// Silence after which a node is Down and its replicas move (after their Workload's
    /// lostAfterSeconds). A new leader gives every node this long from its election. Default
    /// 1500.
    #[arg(long)]
    pub node_grace_ms: Option<u64>,
    /// For a node whose heartbeat connections to the leader all closed (the kernel closes a
    /// dead process's sockets; a partition closes nothing): how long after the close, unheard
    /// from since, it is Down. It is Suspect from the close on. Default 250; a live node that
    /// lost its connection heartbeats again on a new one well within that.
    #[arg(long)]
    pub node_disconnect_grace_ms: Option<u64>,
    /// Readings the cloud sink keeps (an opaque record counts as one); the oldest records
    /// are evicted beyond this. Default 1000000.
    #[arg(long, env = "EDGEPLANE_DATA_RETENTION_READINGS")]
    pub data_retention_readings: Option<u64>,
    /// Take a backup of the whole state into this directory on a schedule (needs
    /// --backup-key). Best on storage other than the data directory's.
    #[arg(long)]
    pub backup_dir: Option<PathBuf>,
    /// The key that seals backups: 64 hex digits (`edgectl backup key FILE` makes one).
    #[arg(long)]
    pub backup_key: Option<PathBuf>,
    /// Seconds between scheduled backups. Default 3600.
    #[arg(long)]
    pub backup_interval_s: Option<u64>,
    /// Keep the newest backup of each of this many hours. Default 24.
    #[arg(long)]
    pub backup_keep_hourly: Option<usize>,
    /// ... of this many days. Default 7.
    #[arg(long)]
    pub backup_keep_daily: Option<usize>,
    /// ... of this many weeks. Default 4.
    #[arg(long)]
    pub backup_keep_weekly: Option<usize>,
}

/// Node ids occupy 16 bits of every request id (see `edgeplane_raft::engine::RequestOrigin`).
pub const MAX_NODE_ID: u64 = 65_535;

/// The file form of [`Args`].
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    id: Option<u64>,
    data_dir: Option<PathBuf>,
    #[serde(default)]
    members: Vec<String>,
    peer_listen: Option<String>,
    api_listen: Option<String>,
    tick_ms: Option<u64>,
    election_ticks: Option<u64>,
    heartbeat_ticks: Option<u64>,
    snapshot_every: Option<u64>,
    write_timeout_ms: Option<u64>,
    log: Option<String>,
    tls_dir: Option<PathBuf>,
    node_cert_ttl_s: Option<u64>,
    onnxruntime_lib: Option<PathBuf>,
    max_connections: Option<usize>,
    max_connections_per_ip: Option<usize>,
    concurrent_handshakes: Option<usize>,
    node_suspect_ms: Option<u64>,
    node_grace_ms: Option<u64>,
    node_disconnect_grace_ms: Option<u64>,
    data_retention_readings: Option<u64>,
    backup_dir: Option<PathBuf>,
    backup_key: Option<PathBuf>,
    backup_interval_s: Option<u64>,
    backup_keep_hourly: Option<usize>,
    backup_keep_daily: Option<usize>,
    backup_keep_weekly: Option<usize>,
}

/// Scheduled backups: where, sealed with which key, how often, and how many are kept.
#[derive(Debug, Clone)]
pub struct BackupSchedule {
    pub dir: PathBuf,
    pub key: PathBuf,
    pub interval: Duration,
    pub retention: edgeplane_core::retention::RetentionPolicy,
}

/// A member of the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub id: u64,
    pub peer: SocketAddr,
    pub api: SocketAddr,
}

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub id: u64,
    pub data_dir: PathBuf,
    pub members: Vec<Member>,
    pub peer_listen: SocketAddr,
    pub api_listen: SocketAddr,
    pub tick: Duration,
    pub election_ticks: usize,
    pub heartbeat_ticks: usize,
    pub snapshot_every: u64,
    pub write_timeout: Duration,
    pub log: String,
    pub tls_dir: PathBuf,
    pub node_cert_ttl: Duration,
    /// ONNX Runtime's library, loaded by `load` when set.
    pub onnxruntime_lib: Option<PathBuf>,
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
    pub concurrent_handshakes: usize,
    pub node_health: edgeplane_core::health::HealthPolicy,
    pub data_retention_readings: u64,
    pub backups: Option<BackupSchedule>,
}

impl Config {
    pub fn member(&self, id: u64) -> Option<&Member> {
        self.members.iter().find(|m| m.id == id)
    }

    /// Merges the file (if any) under the flags and validates the result. Every problem
    /// found is returned, each naming the setting it concerns.
    pub fn load(args: Args) -> Result<Config, Vec<String>> {
        let file = match &args.config {
            None => FileConfig::default(),
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| vec![format!("config: cannot read {}: {e}", path.display())])?;
                toml::from_str(&text).map_err(|e| vec![format!("config: {} is not valid: {e}", path.display())])?
            }
        };
        let mut errors = Vec::new();
        let backups = backup_schedule(&args, &file, &mut errors);
        let id = args.id.or(file.id);
        let data_dir = args.data_dir.or(file.data_dir);
        let member_specs = if args.members.is_empty() { file.members } else { args.members };
        // 20 ms ticks x 10 = elections after 200-400 ms of silence: failover well under a second,
        // and still 50x the fsync time of these disks, so a slow disk does not depose a leader.
        let tick_ms = args.tick_ms.or(file.tick_ms).unwrap_or(20);
        let election_ticks = args.election_ticks.or(file.election_ticks).unwrap_or(10);
        let heartbeat_ticks = args.heartbeat_ticks.or(file.heartbeat_ticks).unwrap_or(2);
        let snapshot_every = args.snapshot_every.or(file.snapshot_every).unwrap_or(50_000);
        let write_timeout_ms = args.write_timeout_ms.or(file.write_timeout_ms).unwrap_or(5_000);
        let log = args.log.or(file.log).unwrap_or_else(|| "info".to_owned());
        let tls_dir = args.tls_dir.or(file.tls_dir);
        let node_cert_ttl_s = args.node_cert_ttl_s.or(file.node_cert_ttl_s).unwrap_or(86_400);
        let onnxruntime_lib = args.onnxruntime_lib.or(file.onnxruntime_lib);
        if let Some(library) = &onnxruntime_lib {
            if let Err(e) = edgeplane_inference::load_onnxruntime(library) {
                errors.push(format!("onnxruntime-lib: {e}"));
            }
        }
        let max_connections = args.max_connections.or(file.max_connections).unwrap_or(8192);
        let max_connections_per_ip = args.max_connections_per_ip.or(file.max_connections_per_ip).unwrap_or(256);
        let concurrent_handshakes = args.concurrent_handshakes.or(file.concurrent_handshakes).unwrap_or(32);
        let node_suspect_ms = args.node_suspect_ms.or(file.node_suspect_ms).unwrap_or(1_000);
        let node_grace_ms = args.node_grace_ms.or(file.node_grace_ms).unwrap_or(1_500);
        let node_disconnect_grace_ms = args.node_disconnect_grace_ms.or(file.node_disconnect_grace_ms).unwrap_or(250);
        let data_retention_readings = args.data_retention_readings.or(file.data_retention_readings).unwrap_or(1_000_000);

        match id {
            None => errors.push("id: required (this node's id, one of the --member ids)".to_owned()),
            Some(0) => errors.push("id: must be >= 1 (0 means \"no node\" in Raft)".to_owned()),
            Some(id) if id > MAX_NODE_ID => errors.push(format!("id: must be <= {MAX_NODE_ID}, got {id}")),
            Some(_) => {}
        }
        match &data_dir {
            None => errors.push("data-dir: required (where the Raft log is kept)".to_owned()),
            Some(d) if d.exists() && !d.is_dir() => errors.push(format!("data-dir: {} exists and is not a directory", d.display())),
            Some(_) => {}
        }
        let mut members = Vec::new();
        if member_specs.is_empty() {
            errors.push("member: at least one required, as ID=PEER_ADDR,API_ADDR".to_owned());
        }
        for spec in &member_specs {
            match parse_member(spec) {
                Ok(m) => members.push(m),
                Err(e) => errors.push(format!("member {spec:?}: {e}")),
            }
        }
        check_unique(&members, |m| m.id.to_string(), "id", &mut errors);
        check_unique(&members, |m| m.peer.to_string(), "peer address", &mut errors);
        check_unique(&members, |m| m.api.to_string(), "API address", &mut errors);
        let me = id.and_then(|id| members.iter().find(|m| m.id == id)).cloned();
        if let (Some(id), None, false) = (id, &me, members.is_empty()) {
            if id != 0 {
                let ids: Vec<String> = members.iter().map(|m| m.id.to_string()).collect();
                errors.push(format!("id: {id} is not among the members ({})", ids.join(", ")));
            }
        }
        let peer_listen = listen_addr(args.peer_listen.or(file.peer_listen), me.as_ref().map(|m| m.peer), "peer-listen", &mut errors);
        let api_listen = listen_addr(args.api_listen.or(file.api_listen), me.as_ref().map(|m| m.api), "api-listen", &mut errors);
        if !(1..=60_000).contains(&tick_ms) {
            errors.push(format!("tick-ms: must be between 1 and 60000, got {tick_ms}"));
        }
        if heartbeat_ticks == 0 {
            errors.push("heartbeat-ticks: must be >= 1".to_owned());
        }
        if election_ticks <= heartbeat_ticks {
            errors.push(format!("election-ticks: must be greater than heartbeat-ticks ({heartbeat_ticks}), got {election_ticks}"));
        }
        if snapshot_every == 0 {
            errors.push("snapshot-every: must be >= 1".to_owned());
        }
        if write_timeout_ms == 0 {
            errors.push("write-timeout-ms: must be >= 1".to_owned());
        }
        match &tls_dir {
            None => errors.push("tls-dir: required (this member's certificates; create them with `orchestrator init`)".to_owned()),
            Some(dir) => {
                for file in ["ca.crt", "ca.key", "member.crt", "member.key"] {
                    if !dir.join(file).is_file() {
                        errors.push(format!("tls-dir: {} has no {file} (create the directory with `orchestrator init`)", dir.display()));
                    }
                }
            }
        }
        if !(5..=366 * 86_400).contains(&node_cert_ttl_s) {
            errors.push(format!("node-cert-ttl-s: must be between 5 and 31622400 (a year), got {node_cert_ttl_s}"));
        }
        if max_connections == 0 || max_connections_per_ip == 0 {
            errors.push("max-connections and max-connections-per-ip: must be >= 1".to_owned());
        }
        if concurrent_handshakes == 0 {
            errors.push("concurrent-handshakes: must be >= 1".to_owned());
        }
        if node_suspect_ms == 0 || node_grace_ms < node_suspect_ms {
            errors
                .push(format!("node-suspect-ms and node-grace-ms: need 1 <= suspect <= grace, got {node_suspect_ms} and {node_grace_ms}"));
        }
        if node_disconnect_grace_ms > node_grace_ms {
            errors
                .push(format!("node-disconnect-grace-ms: must not exceed node-grace-ms ({node_grace_ms}), got {node_disconnect_grace_ms}"));
        }
        if data_retention_readings == 0 {
            errors.push("data-retention-readings: must be >= 1".to_owned());
        }
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&log) {
            errors.push(format!("log: {log:?} is not a valid filter: {e}"));
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        let (Some(id), Some(data_dir), Some(peer_listen), Some(api_listen), Some(tls_dir)) =
            (id, data_dir, peer_listen, api_listen, tls_dir)
        else {
            unreachable!("every missing value was reported above");
        };
        members.sort_by_key(|m| m.id);
        Ok(Config {
            id,
            data_dir,
            members,
            peer_listen,
            api_listen,
            tick: Duration::from_millis(tick_ms),
            election_ticks: election_ticks as usize,
            heartbeat_ticks: heartbeat_ticks as usize,
            snapshot_every,
            write_timeout: Duration::from_millis(write_timeout_ms),
            log,
            tls_dir,
            node_cert_ttl: Duration::from_secs(node_cert_ttl_s),
            onnxruntime_lib,
            max_connections,
            max_connections_per_ip,
            concurrent_handshakes,
            node_health: edgeplane_core::health::HealthPolicy {
                suspect_after_ms: node_suspect_ms,
                down_after_ms: node_grace_ms,
                down_after_disconnect_ms: node_disconnect_grace_ms,
            },
            data_retention_readings,
            backups,
        })
    }
}

fn backup_schedule(args: &Args, file: &FileConfig, errors: &mut Vec<String>) -> Option<BackupSchedule> {
    let dir = args.backup_dir.clone().or_else(|| file.backup_dir.clone());
    let key = args.backup_key.clone().or_else(|| file.backup_key.clone());
    let interval_s = args.backup_interval_s.or(file.backup_interval_s).unwrap_or(3_600);
    let retention = edgeplane_core::retention::RetentionPolicy {
        hourly: args.backup_keep_hourly.or(file.backup_keep_hourly).unwrap_or(24),
        daily: args.backup_keep_daily.or(file.backup_keep_daily).unwrap_or(7),
        weekly: args.backup_keep_weekly.or(file.backup_keep_weekly).unwrap_or(4),
    };
    if interval_s == 0 {
        errors.push("backup-interval-s: must be >= 1".to_owned());
    }
    match (dir, key) {
        (None, None) => None,
        (Some(_), None) => {
            errors.push("backup-key: required with backup-dir (backups are always sealed)".to_owned());
            None
        }
        (None, Some(_)) => {
            errors.push("backup-dir: required with backup-key".to_owned());
            None
        }
        (Some(dir), Some(key)) => {
            if dir.exists() && !dir.is_dir() {
                errors.push(format!("backup-dir: {} exists and is not a directory", dir.display()));
            }
            if let Err(e) = edgeplane_tls::sealing::SealingKey::load(&key, false) {
                errors.push(format!("backup-key: {e}"));
            }
            Some(BackupSchedule { dir, key, interval: Duration::from_secs(interval_s), retention })
        }
    }
}

pub(crate) fn parse_member(spec: &str) -> Result<Member, String> {
    let (id, addrs) = spec.split_once('=').ok_or("expected ID=PEER_ADDR,API_ADDR")?;
    let id: u64 = id.trim().parse().map_err(|_| format!("id {:?} is not a positive integer", id.trim()))?;
    if !(1..=MAX_NODE_ID).contains(&id) {
        return Err(format!("id must be between 1 and {MAX_NODE_ID}"));
    }
    let (peer, api) = addrs.split_once(',').ok_or("expected ID=PEER_ADDR,API_ADDR (two addresses)")?;
    let peer: SocketAddr = peer.trim().parse().map_err(|_| format!("peer address {:?} is not IP:PORT", peer.trim()))?;
    let api: SocketAddr = api.trim().parse().map_err(|_| format!("API address {:?} is not IP:PORT", api.trim()))?;
    for (what, addr) in [("peer", peer), ("API", api)] {
        if addr.port() == 0 || addr.ip().is_unspecified() {
            return Err(format!("{what} address {addr} must be a concrete IP and port that other members can reach"));
        }
    }
    Ok(Member { id, peer, api })
}

fn listen_addr(flag: Option<String>, default: Option<SocketAddr>, name: &str, errors: &mut Vec<String>) -> Option<SocketAddr> {
    match flag {
        Some(s) => match s.parse() {
            Ok(a) => Some(a),
            Err(_) => {
                errors.push(format!("{name}: {s:?} is not IP:PORT"));
                None
            }
        },
        None => default,
    }
}

fn check_unique(members: &[Member], key: impl Fn(&Member) -> String, what: &str, errors: &mut Vec<String>) {
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for m in members {
        *seen.entry(key(m)).or_default() += 1;
    }
    for (value, n) in seen {
        if n > 1 {
            errors.push(format!("member: {what} {value} is used by {n} members"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A TLS directory with the files the configuration checks for (their contents are read
    /// at startup, not here).
    fn tls_dir() -> &'static str {
        static DIR: std::sync::OnceLock<tempfile::TempDir> = std::sync::OnceLock::new();
        let dir = DIR.get_or_init(|| {
            let dir = tempfile::tempdir().expect("tempdir");
            for file in ["ca.crt", "ca.key", "member.crt", "member.key"] {
                std::fs::write(dir.path().join(file), "").expect("write");
            }
            dir
        });
        dir.path().to_str().expect("utf-8")
    }

    /// The flags, with a TLS directory.
    fn args(list: &[&str]) -> Args {
        let all = std::iter::once("orchestrator").chain(list.iter().copied()).chain(["--tls-dir", tls_dir()]);
        Args::try_parse_from(all).expect("flags parse")
    }

    #[test]
    fn a_valid_three_node_config_defaults_listen_addresses_to_the_member_entry() {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path().to_str().expect("utf-8");
        let config = Config::load(args(&[
            "--id",
            "2",
            "--data-dir",
            d,
            "--member",
            "1=127.0.0.1:7001,127.0.0.1:8001",
            "--member",
            "2=127.0.0.2:7001,127.0.0.2:8001",
            "--member",
            "3=127.0.0.3:7001,127.0.0.3:8001",
        ]))
        .expect("valid");
        assert_eq!(config.peer_listen, "127.0.0.2:7001".parse().expect("addr"));
        assert_eq!(config.api_listen, "127.0.0.2:8001".parse().expect("addr"));
        assert_eq!(config.members.len(), 3);
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let errors = Config::load(args(&[
            "--id",
            "0",
            "--member",
            "1=127.0.0.1:7001,127.0.0.1:8001",
            "--member",
            "1=127.0.0.2:7001,127.0.0.1:8001",
            "--member",
            "x=nowhere",
            "--election-ticks",
            "2",
            "--heartbeat-ticks",
            "2",
            "--tick-ms",
            "0",
        ]))
        .expect_err("invalid");
        let all = errors.join("\n");
        for expected in [
            "id: must be >= 1",
            "data-dir: required",
            "member \"x=nowhere\"",
            "member: id 1 is used by 2 members",
            "member: API address 127.0.0.1:8001 is used by 2 members",
            "election-ticks: must be greater than heartbeat-ticks",
            "tick-ms: must be between 1 and 60000, got 0",
        ] {
            assert!(all.contains(expected), "missing {expected:?} in:\n{all}");
        }
    }

    #[test]
    fn the_node_must_be_a_member() {
        let errors =
            Config::load(args(&["--id", "4", "--data-dir", "/tmp/x", "--member", "1=127.0.0.1:7001,127.0.0.1:8001"])).expect_err("invalid");
        assert_eq!(errors, ["id: 4 is not among the members (1)"]);
    }

    #[test]
    fn node_ids_must_fit_in_sixteen_bits() {
        let errors = Config::load(args(&["--id", "70000", "--data-dir", "/tmp/x", "--member", "70000=127.0.0.1:7001,127.0.0.1:8001"]))
            .expect_err("invalid");
        let all = errors.join("\n");
        assert!(all.contains("id: must be <= 65535, got 70000"), "{all}");
        assert!(all.contains("id must be between 1 and 65535"), "{all}");
    }

    #[test]
    fn the_tls_directory_must_hold_the_member_certificates() {
        let empty = tempfile::tempdir().expect("tempdir");
        let flags = ["orchestrator", "--id", "1", "--data-dir", "/tmp/x", "--member", "1=127.0.0.1:7001,127.0.0.1:8001"];
        let errors = Config::load(Args::try_parse_from(flags).expect("flags")).expect_err("no tls dir");
        assert!(errors.iter().any(|e| e.starts_with("tls-dir: required")), "{errors:?}");
        let with = flags.iter().copied().chain(["--tls-dir", empty.path().to_str().expect("utf-8")]);
        let errors = Config::load(Args::try_parse_from(with).expect("flags")).expect_err("empty tls dir");
        assert_eq!(errors.iter().filter(|e| e.starts_with("tls-dir:")).count(), 4, "{errors:?}");
    }

    #[test]
    fn unknown_keys_in_the_file_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("o.toml");
        std::fs::write(&path, "id = 1\ndata_dir = \"/tmp/x\"\nmembers = [\"1=127.0.0.1:7001,127.0.0.1:8001\"]\nelection_tiks = 5\n")
            .expect("write");
        let errors = Config::load(args(&["--config", path.to_str().expect("utf-8")])).expect_err("invalid");
        assert!(errors[0].contains("unknown field `election_tiks`"), "{errors:?}");
    }

    #[test]
    fn flags_override_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("o.toml");
        std::fs::write(&path, "id = 1\ndata_dir = \"/tmp/x\"\nmembers = [\"1=127.0.0.1:7001,127.0.0.1:8001\"]\ntick_ms = 20\n")
            .expect("write");
        let config = Config::load(args(&["--config", path.to_str().expect("utf-8"), "--tick-ms", "30"])).expect("valid");
        assert_eq!(config.tick, Duration::from_millis(30));
        assert_eq!(config.id, 1);
    }

    #[test]
    fn data_retention_comes_from_the_flag_or_the_file_and_must_be_positive() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("o.toml");
        let path = path.to_str().expect("utf-8");
        let base = ["--id", "1", "--data-dir", "/tmp/x", "--member", "1=127.0.0.1:7001,127.0.0.1:8001"];
        let load = |extra: &[&str]| Config::load(args(&[&base[..], extra].concat()));
        assert_eq!(load(&[]).expect("valid").data_retention_readings, 1_000_000);
        std::fs::write(path, "data_retention_readings = 500\n").expect("write");
        assert_eq!(load(&["--config", path]).expect("valid").data_retention_readings, 500);
        assert_eq!(load(&["--config", path, "--data-retention-readings", "7"]).expect("valid").data_retention_readings, 7);
        let errors = load(&["--data-retention-readings", "0"]).expect_err("invalid");
        assert_eq!(errors, ["data-retention-readings: must be >= 1"]);
    }

    #[test]
    fn scheduled_backups_need_a_directory_and_a_key_that_loads() {
        let dir = tempfile::tempdir().expect("tempdir");
        let key = dir.path().join("backup.key");
        std::fs::write(&key, format!("{}\n", "ab".repeat(32))).expect("key");
        let (key, backups) = (key.to_str().expect("utf-8"), dir.path().join("b"));
        let backups = backups.to_str().expect("utf-8");
        let base = ["--id", "1", "--data-dir", "/tmp/x", "--member", "1=127.0.0.1:7001,127.0.0.1:8001"];
        let load = |extra: &[&str]| Config::load(args(&[&base[..], extra].concat()));
        assert!(load(&[]).expect("valid").backups.is_none(), "off unless asked for");
        let on = load(&["--backup-dir", backups, "--backup-key", key, "--backup-keep-daily", "3"]).expect("valid");
        let schedule = on.backups.expect("scheduled");
        assert_eq!((schedule.interval, schedule.retention.hourly, schedule.retention.daily), (Duration::from_secs(3600), 24, 3));
        assert_eq!(
            load(&["--backup-dir", backups]).expect_err("no key"),
            ["backup-key: required with backup-dir (backups are always sealed)"]
        );
        let errors = load(&["--backup-dir", backups, "--backup-key", "/nonexistent/k", "--backup-interval-s", "0"]).expect_err("bad");
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(errors[0].starts_with("backup-interval-s") && errors[1].contains("cannot read /nonexistent/k"), "{errors:?}");
    }
}
