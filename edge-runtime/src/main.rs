//! `edge-runtime`: one edge node. Runs the wasm host and the node agent, and serves the
//! node's own status API (`GET /v1/instances`, `GET /healthz`).

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use clap::Parser;
use edgeplane_edge_runtime::agent::Agent;
use edgeplane_edge_runtime::config::{Args, Config};
use edgeplane_edge_runtime::host::{HostConfig, WasmHost};
use edgeplane_edge_runtime::pool::WasmPool;

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
    // Tests and scripts find the status API here when it listens on port 0.
    std::fs::create_dir_all(&config.data_dir).with_context(|| format!("cannot create {}", config.data_dir.display()))?;
    std::fs::write(config.data_dir.join("status.addr"), address.to_string())?;
    let agent = Agent::new(config, pool)?;
    tracing::info!(node = agent.name(), status_api = %address, "edge runtime started");
    let app = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/v1/instances", get(instances))
        .route("/v1/heartbeat", get(heartbeat))
        .with_state(agent.clone());
    let server = axum::serve(listener, app).with_graceful_shutdown(shutdown_signal());
    tokio::select! {
        served = server => served.context("the status API failed")?,
        () = agent.run() => {}
    }
    tracing::info!("edge runtime stopped");
    Ok(())
}

async fn instances(State(agent): State<Arc<Agent>>) -> Json<Vec<edgeplane_api::node::InstanceReport>> {
    Json(agent.instance_reports().await)
}

async fn heartbeat(State(agent): State<Arc<Agent>>) -> Json<edgeplane_api::node::Heartbeat> {
    Json(agent.heartbeat().await)
}

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
