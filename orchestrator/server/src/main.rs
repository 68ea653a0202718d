//! `orchestrator`: one member of the edgeplane control plane.
//!
//! Wires the parts together and owns the process lifecycle: configuration (all errors
//! reported before anything starts), the durable log, the Raft node actor, the peer
//! transport, the REST API and the leader's loops; SIGINT/SIGTERM shut it down gracefully.
//!
//! # Layout
//! - [`config`]: flags and the TOML file, validated in one pass.
//! - [`app`]: what handlers and loops share; [`http`]: the kit every handler uses (errors as
//!   `Status`, query and body parsing, reads and writes mapped to answers).
//! - [`auth`]: the door every request passes (authentication, authorization, audit);
//!   [`router`]: the route table, every route with its access rule.
//! - Handlers, one module per part of the API: [`cluster`] (metrics, members), [`store`] (the
//!   generic store), [`resources`] (the Kubernetes-style resource API and watches),
//!   [`modules`] (the module registry), [`nodes`] (heartbeats), [`data`] (the cloud sink),
//!   [`trust`] (enrollment, certificates, tokens), [`audit`] (the audit log and its archive).
//! - [`heartbeats`]: the leader's memory of heartbeats; [`leader`]: the placement and
//!   collection loops; [`policy`]: which HTTP sinks are allowed; [`metrics`], [`secrets`].
//! - [`backup`]: `GET /v1/backup`, scheduled backups with retention, `orchestrator restore`.
//! - [`init`]: `orchestrator init` (a cluster's CA, member certificates, an administrator)
//!   and `orchestrator pki issue`.

mod app;
mod audit;
mod auth;
mod backup;
mod cluster;
mod config;
mod console;
mod data;
mod events;
mod heartbeats;
mod http;
mod init;
mod leader;
mod metrics;
mod models;
mod modules;
mod native;
mod nodes;
mod policy;
mod resources;
mod router;
mod secrets;
mod signatures;
mod store;
mod trust;

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use edgeplane_raft::disk::DiskLog;
use edgeplane_raft::engine::RequestOrigin;
use edgeplane_raft::metrics::RaftMetrics;
use edgeplane_raft::net::{Network, PeerTls};
use edgeplane_raft::transport::{self, Transport, TransportLimits};
use edgeplane_raft::watch::{HistoryLimits, WatchHub};
use edgeplane_raft::{node, Engine, EngineConfig, NodeConfig};
use edgeplane_tls::ClientAuth;
use prometheus_client::registry::Registry;
use tokio::sync::mpsc;

use crate::config::{Args, Config};

/// Changes each node keeps for watchers that resume from an older resourceVersion.
const WATCH_HISTORY: HistoryLimits = HistoryLimits { events: 10_000, bytes: 64 * 1024 * 1024 };

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("restore") {
        return match backup::restore(<backup::RestoreArgs as clap::Parser>::parse_from(std::env::args().skip(1))) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("orchestrator restore: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    if matches!(args.first().map(String::as_str), Some("init" | "pki")) {
        return match init::main(args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("orchestrator: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    let config = match Config::load(Args::parse()) {
        Ok(config) => config,
        Err(errors) => {
            eprintln!("orchestrator: the configuration has {} problem(s):", errors.len());
            for e in errors {
                eprintln!("  - {e}");
            }
            return ExitCode::from(2);
        }
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&config.log));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("orchestrator: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("orchestrator: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(config: Config) -> anyhow::Result<()> {
    let config = Arc::new(config);
    std::fs::create_dir_all(&config.data_dir).with_context(|| format!("cannot create the data directory {}", config.data_dir.display()))?;
    let dir = config.data_dir.clone();
    let (disk, log) = tokio::task::spawn_blocking(move || DiskLog::open(&dir)).await??;
    tracing::info!(first = log.first_index(), last = log.last_index(), snapshot = log.snapshot_index(), "opened the Raft log");
    let backends: Vec<&str> = edgeplane_inference::BackendKind::available().into_iter().map(|b| b.name()).collect();
    tracing::info!(?backends, onnxruntime_lib = ?config.onnxruntime_lib, "the model registry checks models with these inference backends");

    let mut engine_config = EngineConfig::new(config.id, config.members.iter().map(|m| m.id).collect());
    engine_config.election_ticks = config.election_ticks;
    engine_config.heartbeat_ticks = config.heartbeat_ticks;
    engine_config.snapshot_every = config.snapshot_every;
    engine_config.snapshot_trailing = (config.snapshot_every / 10).max(1);
    let engine = Engine::new(engine_config, log, &edgeplane_raft::logging::raft_logger()).context("cannot start the Raft engine")?;

    let mut registry = Registry::default();
    let metrics = RaftMetrics::new(&mut registry);
    let sink_metrics = metrics::SinkMetrics::new(&mut registry);
    let scheduler_metrics = metrics::SchedulerMetrics::new(&mut registry);
    let backup_metrics = backup::BackupMetrics::new(&mut registry);
    let tls = MemberTls::load(&config)?;
    let network = Network::mutual_tls(PeerTls {
        acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(tls.server(ClientAuth::Required)?)),
        connector: tokio_rustls::TlsConnector::from(Arc::new(tls.client()?)),
        source_ip: Some(config.peer_listen.ip()).filter(|ip| !ip.is_unspecified()),
    });
    let peer_listener =
        network.bind(config.peer_listen).await.with_context(|| format!("cannot listen for peers on {}", config.peer_listen))?;
    let api_listener =
        tokio::net::TcpListener::bind(config.api_listen).await.with_context(|| format!("cannot serve the API on {}", config.api_listen))?;

    let members: Vec<(u64, SocketAddr)> = config.members.iter().map(|m| (m.id, m.peer)).collect();
    let cluster = transport::cluster_id(&members);
    let (events_tx, events_rx) = mpsc::channel(16 * 1024);
    let peers = members.iter().copied().filter(|(id, _)| *id != config.id);
    let limits = TransportLimits::default();
    let transport = Transport::start(config.id, cluster, peers, network.clone(), events_tx.clone(), metrics.clone(), limits);
    let peer_server = tokio::spawn(transport::serve_peers(peer_listener, cluster, events_tx, limits, metrics.clone()));

    let node_config = NodeConfig {
        tick: config.tick,
        write_timeout: config.write_timeout,
        read_timeout: config.write_timeout,
        read_retry: config.tick * config.election_ticks as u32,
        // Elections finish within twice the randomised election timeout, unless the node is
        // cut off or there is no quorum: then it answers instead of holding requests.
        no_leader_timeout: config.tick * (4 * config.election_ticks) as u32,
        ..NodeConfig::default()
    };
    let origin = RequestOrigin::new(config.id, boot_nonce());
    let watch = Arc::new(WatchHub::new(engine.state().applied_index(), WATCH_HISTORY));
    let parts = node::NodeParts {
        engine,
        disk: Arc::new(disk),
        transport,
        peer_events: events_rx,
        config: node_config,
        metrics,
        origin,
        watch: Arc::clone(&watch),
    };
    let (node, mut node_task) = node::spawn(parts);

    tracing::info!(
        id = config.id,
        api = %config.api_listen,
        peer = %config.peer_listen,
        members = config.members.len(),
        "orchestrator started"
    );
    let serve_counters = Arc::new(edgeplane_tls::serve::ServeCounters::default());
    metrics::register_serve_counters(&mut registry, &serve_counters);
    let audit = audit::AuditSink::start(node.clone(), config.id);
    let archive = audit::Archive::new(&config.data_dir);
    let other_members = peer_client(&config, tls.client()?);
    let state = app::AppState::new(app::Shared {
        other_members: other_members.clone(),
        node,
        config: Arc::clone(&config),
        registry: Arc::new(registry),
        watch,
        heartbeats: Arc::new(heartbeats::Heartbeats::default()),
        sink_metrics,
        scheduler_metrics,
        ca: tls.ca.clone(),
        audit,
        archive: archive.clone(),
        backup_metrics,
        precompiler: native::Precompiler::new(&config.data_dir),
    });
    let precompiling = tokio::spawn(native::compile_pushed(state.clone(), state.node.latest().applied_index()));
    let leader_loops = tokio::spawn(leader::run(state.clone()));
    let backups = config.backups.clone().map(|schedule| tokio::spawn(backup::run_schedule(state.clone(), schedule)));
    let archiving = tokio::spawn(audit::keep_archive(state.clone(), archive, other_members));
    let limits = edgeplane_tls::serve::ServeLimits {
        max_connections: config.max_connections,
        max_connections_per_ip: config.max_connections_per_ip,
        concurrent_handshakes: config.concurrent_handshakes,
        ..Default::default()
    };
    let api_tls = Arc::new(tls.server(ClientAuth::Optional)?);
    let server = edgeplane_tls::serve::serve(api_listener, api_tls, router::router(state), limits, serve_counters, shutdown_signal());
    let result = tokio::select! {
        () = server => Ok(()),
        stopped = &mut node_task => match stopped {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(anyhow::Error::new(e)),
            Err(e) => Err(anyhow::Error::new(e).context("the Raft node crashed")),
        },
    };
    peer_server.abort();
    leader_loops.abort();
    archiving.abort();
    precompiling.abort();
    if let Some(backups) = backups {
        backups.abort();
    }
    // The router (and with it the last node handle) is gone: the node flushes and stops.
    if !node_task.is_finished() {
        match tokio::time::timeout(Duration::from_secs(5), node_task).await {
            Ok(Ok(Err(e))) => return Err(e.into()),
            Ok(_) => {}
            Err(_) => tracing::warn!("the Raft node did not stop within 5 s"),
        }
    }
    tracing::info!("orchestrator stopped");
    result
}

/// Distinguishes this process's request ids from those of earlier runs of the same node.
fn boot_nonce() -> u64 {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
    nanos ^ (u64::from(std::process::id()) << 32)
}

async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    let mut terminate = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGTERM; only Ctrl-C stops the orchestrator");
            let _ = interrupt.await;
            return;
        }
    };
    tokio::select! {
        _ = interrupt => {}
        _ = terminate.recv() => {}
    }
    tracing::info!("shutting down");
}

/// This member's TLS material, from its `--tls-dir`.
struct MemberTls {
    ca: Arc<edgeplane_tls::CertificateAuthority>,
    identity: edgeplane_tls::TlsIdentity,
}

impl MemberTls {
    fn load(config: &Config) -> anyhow::Result<MemberTls> {
        let dir = &config.tls_dir;
        let read = |file: &str| edgeplane_tls::config::read(&dir.join(file)).map_err(anyhow::Error::new);
        let ca = edgeplane_tls::CertificateAuthority::load(&read("ca.crt")?, &read("ca.key")?).context("the cluster CA in --tls-dir")?;
        let identity =
            edgeplane_tls::TlsIdentity::from_pem(&read("member.crt")?, &read("member.key")?).context("member.crt and member.key")?;
        let cert = edgeplane_tls::PeerCertificate::from_der(&identity.chain[0]).context("member.crt")?;
        if cert.subject() != Some(edgeplane_tls::pki::ParsedSubject::Orchestrator(config.id)) {
            anyhow::bail!("{}/member.crt is the certificate of {:?}, not of member {}", dir.display(), cert.common_name, config.id);
        }
        Ok(MemberTls { ca: Arc::new(ca), identity })
    }

    fn server(&self, client_auth: ClientAuth) -> anyhow::Result<rustls::ServerConfig> {
        let current = edgeplane_tls::config::CurrentIdentity::new(&self.identity)?;
        Ok(edgeplane_tls::config::server_config(self.ca.cert_pem(), current, client_auth)?)
    }

    fn client(&self) -> anyhow::Result<rustls::ClientConfig> {
        Ok(edgeplane_tls::config::client_config(self.ca.cert_pem(), Some(&self.identity))?)
    }
}

/// A client of the other members' APIs, with this member's certificate (to fill gaps in the
/// audit archive, and to ask the leader for its heartbeat figures).
fn peer_client(config: &Config, tls: rustls::ClientConfig) -> Option<Arc<edgeplane_client::Client>> {
    let others: Vec<String> = config.members.iter().filter(|m| m.id != config.id).map(|m| m.api.to_string()).collect();
    if others.is_empty() {
        return None;
    }
    match edgeplane_client::Client::new(&others, edgeplane_client::ClientOptions::default(), tls) {
        Ok(client) => Some(Arc::new(client)),
        Err(e) => {
            tracing::warn!("cannot build a client of the other members: {e}");
            None
        }
    }
}
