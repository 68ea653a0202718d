//! `edge-runtime`: one edge node. Wires the wasm host, the data plane, the outbox, the node
//! agent, MQTT ingest and the node's own API (see the library's modules), and runs until
//! SIGINT or SIGTERM.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use clap::Parser;
use edgeplane_edge_runtime::agent::{Agent, AtRest, NodeCertificate};
use edgeplane_edge_runtime::config::{Args, Config, StorageKeySource};
use edgeplane_edge_runtime::dataplane::DataPlane;
use edgeplane_edge_runtime::host::{HostConfig, WasmHost};
use edgeplane_edge_runtime::outbox::{Outbox, OutboxConfig};
use edgeplane_edge_runtime::pool::WasmPool;
use edgeplane_edge_runtime::storage::StorageKey;

fn main() -> ExitCode {
    let config = match Config::load(Args::parse()) {
        Ok(config) => config,
        Err(errors) => {
            eprintln!("edge-runtime: the configuration has {} problem(s):", errors.len());
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
    // The reactor needs little: wasm runs on the pool's own threads.
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("edge-runtime: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("edge-runtime: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(config: Config) -> anyhow::Result<()> {
    let slots = config.capacity.instance_slots;
    let host_config = HostConfig {
        // Room for every slot plus a replacement starting while the old instance stops.
        max_instances: slots * 2,
        max_instance_memory: (config.capacity.memory_mib as usize) << 20,
        ..HostConfig::default()
    };
    let host = Arc::new(WasmHost::new(host_config)?);
    let pool = WasmPool::new(host, config.wasm_threads)?;
    let listener = tokio::net::TcpListener::bind(config.listen).await.with_context(|| format!("cannot listen on {}", config.listen))?;
    let address = listener.local_addr()?;
    let mut outbox_config = OutboxConfig {
        dir: config.data_dir.join("outbox"),
        max_bytes: config.outbox_max_bytes,
        policy: config.outbox_policy,
        segment_bytes: OUTBOX_SEGMENT_BYTES.min(config.outbox_max_bytes / 4).max(64 << 10),
        key: None,
    };
    let data_dir = config.data_dir.clone();
    let key_source = config.storage_key.clone();
    // The key and the outbox's recovery (it reads every segment): disk work, off the reactor.
    let (outbox, at_rest) = tokio::task::spawn_blocking(move || -> anyhow::Result<(Outbox, AtRest)> {
        std::fs::create_dir_all(&data_dir).with_context(|| format!("cannot create {}", data_dir.display()))?;
        let (key, made_now) = match key_source {
            StorageKeySource::Off => (None, false),
            StorageKeySource::DataDir => {
                let path = data_dir.join("storage.key");
                let made_now = !path.exists();
                (Some(StorageKey::load(&path, true).map_err(anyhow::Error::msg)?), made_now)
            }
            StorageKeySource::File(path) => (Some(StorageKey::load(&path, false).map_err(anyhow::Error::msg)?), false),
        };
        let key = key.map(Arc::new);
        outbox_config.key = key.clone();
        let at_rest = key.map_or_else(AtRest::plain, |key| AtRest::sealed(key, made_now));
        Ok((Outbox::open(outbox_config).context("cannot open the outbox")?, at_rest))
    })
    .await??;
    let dataplane = Arc::new(DataPlane::new(Arc::new(outbox), config.max_inflight_readings));
    let mqtt_broker = config.mqtt_broker.clone();
    let max_body = config.max_body_bytes;
    let status_addr = config.data_dir.join("status.addr");
    let certificate = {
        let (dir, at_rest) = (config.data_dir.clone(), at_rest.clone());
        Arc::new(tokio::task::spawn_blocking(move || NodeCertificate::load(&dir, &at_rest)).await?)
    };
    let ca_pem = config.ca_pem.clone();
    let agent = Agent::new(config, at_rest, certificate.clone(), pool, dataplane.clone()).await?;
    // Tests and scripts find the status API here when it listens on port 0.
    tokio::fs::write(&status_addr, address.to_string()).await.with_context(|| format!("cannot write {}", status_addr.display()))?;
    tracing::info!(node = agent.name(), status_api = %address, "edge runtime started");
    if let Some(broker) = mqtt_broker {
        let client_id = format!("edgeplane-{}", agent.name());
        let tls = edgeplane_tls::config::client_config_renewable(&ca_pem, certificate.current.clone())?;
        let (agent, dataplane) = (agent.clone(), dataplane.clone());
        tokio::spawn(async move {
            agent.resumed().await;
            edgeplane_edge_runtime::mqtt::run(broker, client_id, tls, dataplane, agent.topics()).await;
        });
    }
    let app = edgeplane_edge_runtime::api::router(agent.clone(), dataplane, max_body);
    let tls = edgeplane_tls::config::server_config(&ca_pem, certificate.current.clone(), edgeplane_tls::ClientAuth::Optional)?;
    let counters = Arc::new(edgeplane_tls::serve::ServeCounters::default());
    let server = edgeplane_tls::serve::serve(
        listener,
        Arc::new(tls),
        app,
        edgeplane_tls::serve::ServeLimits::default(),
        counters,
        shutdown_signal(),
    );
    tokio::select! {
        () = server => {}
        () = agent.run() => {}
    }
    tracing::info!("edge runtime stopped");
    Ok(())
}

/// Outbox segments are closed past this size (smaller for small outboxes, so drop-oldest has
/// something to drop).
const OUTBOX_SEGMENT_BYTES: u64 = 8 << 20;

async fn shutdown_signal() {
    let mut terminate = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
}
