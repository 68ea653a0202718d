//! `edge-runtime`: one edge node. Runs the wasm host, the node agent and the data plane, and
//! serves the node's own API: ingest (`POST /v1/ingest/{topic}`), `GET /v1/instances`,
//! `GET /v1/stats`, `GET /v1/heartbeat`, `GET /metrics`, `GET /healthz`.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use clap::Parser;
use edgeplane_edge_runtime::agent::Agent;
use edgeplane_edge_runtime::config::{Args, Config};
use edgeplane_edge_runtime::dataplane::{self, DataPlane, Refused};
use edgeplane_edge_runtime::outbox::{Outbox, OutboxConfig};
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
    let outbox = Outbox::open(OutboxConfig {
        dir: config.data_dir.join("outbox"),
        max_bytes: config.outbox_max_bytes,
        policy: config.outbox_policy,
        segment_bytes: OUTBOX_SEGMENT_BYTES.min(config.outbox_max_bytes / 4).max(64 << 10),
    })?;
    let dataplane = Arc::new(DataPlane::new(Arc::new(outbox), config.max_inflight_readings));
    let mqtt_broker = config.mqtt_broker.clone();
    let max_body = config.max_body_bytes;
    let agent = Agent::new(config, pool, dataplane.clone())?;
    tracing::info!(node = agent.name(), status_api = %address, "edge runtime started");
    if let Some(broker) = mqtt_broker {
        let client_id = format!("edgeplane-{}", agent.name());
        let (agent, dataplane) = (agent.clone(), dataplane.clone());
        tokio::spawn(async move {
            agent.resumed().await;
            edgeplane_edge_runtime::mqtt::run(broker, client_id, dataplane, agent.topics()).await;
        });
    }
    let app = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/v1/instances", get(instances))
        .route("/v1/heartbeat", get(heartbeat))
        .route("/v1/stats", get(stats))
        .route("/metrics", get(metrics))
        .route("/v1/ingest/{*topic}", post(ingest))
        .layer(DefaultBodyLimit::max(max_body))
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

/// Outbox segments are closed past this size (smaller for small outboxes, so drop-oldest has
/// something to drop).
const OUTBOX_SEGMENT_BYTES: u64 = 8 << 20;

async fn stats(State(agent): State<Arc<Agent>>) -> Json<dataplane::Stats> {
    Json(agent.dataplane().stats())
}

async fn metrics(State(agent): State<Arc<Agent>>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], agent.dataplane().metrics())
}

/// `POST /v1/ingest/{topic}`: readings as JSON, NDJSON or a binary v1 batch (by Content-Type).
/// 200 once processed and durable; 400/415 for bodies it cannot read; 429 and 503 (with
/// Retry-After) when it cannot take them now; the producer keeps what was not accepted.
async fn ingest(State(agent): State<Arc<Agent>>, Path(topic): Path<String>, headers: HeaderMap, body: Bytes) -> Response {
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("application/json");
    let (batch, count) = match dataplane::parse_body(content_type, &body) {
        Ok(parsed) => parsed,
        Err(message) if message.starts_with("unsupported content type") => return error(StatusCode::UNSUPPORTED_MEDIA_TYPE, &message),
        Err(message) => return error(StatusCode::BAD_REQUEST, &message),
    };
    match agent.dataplane().ingest(&topic, batch, u64::from(count), body.len()).await {
        Ok(()) => Json(serde_json::json!({ "accepted": count })).into_response(),
        Err(refused) => {
            let status = match refused {
                Refused::Busy(..) => StatusCode::TOO_MANY_REQUESTS,
                Refused::TooLarge(..) => StatusCode::PAYLOAD_TOO_LARGE,
                Refused::NoSubscriber(_) | Refused::NotReady(..) | Refused::OutboxFull(_) => StatusCode::SERVICE_UNAVAILABLE,
                Refused::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            };
            let mut response = error(status, &refused.to_string());
            if status == StatusCode::TOO_MANY_REQUESTS || status == StatusCode::SERVICE_UNAVAILABLE {
                response.headers_mut().insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
            }
            response
        }
    }
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(serde_json::json!({ "code": status.as_u16(), "message": message }))).into_response()
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
