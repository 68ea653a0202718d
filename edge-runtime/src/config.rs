//! The edge runtime's configuration: flags (or `EDGEPLANE_*` environment variables), every
//! problem reported at once before anything starts.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use edgeplane_api::resources::{Capacity, Tier};
use edgeplane_tls::signing::PublicKey;

use crate::outbox::OverflowPolicy;

#[derive(Debug, Parser)]
#[command(name = "edge-runtime", version, about = "Runs edgeplane WebAssembly workloads on an edge node")]
pub struct Args {
    /// The node's name (a DNS subdomain), unique in the cluster.
    #[arg(long, env = "EDGEPLANE_NODE_NAME")]
    pub name: String,
    /// Where the node keeps its identity, assignments and module cache.
    #[arg(long, env = "EDGEPLANE_DATA_DIR")]
    pub data_dir: PathBuf,
    /// Orchestrator API addresses (host:port), comma-separated; any of them will do.
    #[arg(long, env = "EDGEPLANE_SERVERS", value_delimiter = ',', required = true)]
    pub servers: Vec<String>,
    /// A bootstrap token (`edgectl token create`), needed to enroll the first time and after
    /// the node's certificate was revoked.
    #[arg(long, env = "EDGEPLANE_BOOTSTRAP_TOKEN", hide_env_values = true)]
    pub bootstrap_token: Option<String>,
    /// The cluster CA's certificate (PEM): the only authority the node trusts, for the
    /// orchestrators, the MQTT broker, and the clients of its own API.
    #[arg(long, env = "EDGEPLANE_CA_CERT")]
    pub ca_cert: PathBuf,
    /// A node label, KEY=VALUE; repeat for more.
    #[arg(long = "label", value_name = "KEY=VALUE")]
    pub labels: Vec<String>,
    #[arg(long, default_value = "edge")]
    pub tier: String,
    /// Capabilities offered, comma-separated (e.g. sensor.temperature,wasm.simd).
    #[arg(long, value_delimiter = ',')]
    pub capabilities: Vec<String>,
    #[arg(long, default_value_t = 512)]
    pub memory_mib: u64,
    #[arg(long, default_value_t = 8)]
    pub instance_slots: u32,
    #[arg(long, default_value_t = 1000)]
    pub cpu_millis: u32,
    /// Where the node's own status API listens.
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: String,
    /// Heartbeat interval. The orchestrators suspect a node after 1 s of silence and move its
    /// work after 1.5 s by default: keep this well below both.
    #[arg(long, default_value_t = 500)]
    pub heartbeat_ms: u64,
    /// Threads that run wasm; 0 means one per core.
    #[arg(long, default_value_t = 0)]
    pub wasm_threads: usize,
    #[arg(long, default_value = "info")]
    pub log: String,
    /// Unsent cloud data the outbox holds on disk before its policy applies.
    #[arg(long, env = "EDGEPLANE_OUTBOX_MAX_MIB", default_value_t = 256)]
    pub outbox_max_mib: u64,
    /// What a full outbox does: reject-new (ingest answers 503; nothing is lost) or
    /// drop-oldest (the oldest unsent data is deleted and counted).
    #[arg(long, env = "EDGEPLANE_OUTBOX_POLICY", default_value = "reject-new")]
    pub outbox_policy: String,
    /// Readings inside the node's workloads at once; ingest beyond it answers 429.
    #[arg(long, default_value_t = 262_144)]
    pub max_inflight_readings: u64,
    /// The largest ingest request body.
    #[arg(long, default_value_t = 16)]
    pub max_body_mib: u64,
    /// An MQTT broker (host:port) to subscribe to the workloads' input topics on, and to
    /// publish `mqtt` sink outputs to.
    #[arg(long, env = "EDGEPLANE_MQTT_BROKER")]
    pub mqtt_broker: Option<String>,
    /// ONNX Runtime's C library (`libonnxruntime.so.*`, e.g. from the `onnxruntime` wheel's
    /// `capi/`): the node then runs ONNX models tract cannot, and reports
    /// `inference.onnx.onnxruntime`.
    #[arg(long)]
    pub onnxruntime_lib: Option<PathBuf>,
    /// This node's own trust roots: a file of public keys (`ed25519:...`, one per line, `#`
    /// comments). The node then runs only modules and model files signed by one of them,
    /// whatever the orchestrators say (docs/security.md).
    #[arg(long)]
    pub trusted_signers: Option<PathBuf>,
    /// Compile every module on this node, never loading the native code the orchestrators
    /// compiled for it ahead of time (a node with `--trusted-signers` never loads it either).
    #[arg(long)]
    pub compile_locally: bool,
    /// The key what the node keeps on disk is sealed with (its outbox): a file of 64 hex
    /// digits. Without it the node makes one on its first start, `<data-dir>/storage.key`,
    /// owner-only (keep the data directory's disk or that file elsewhere safe).
    #[arg(long, env = "EDGEPLANE_STORAGE_KEY", conflicts_with = "plaintext_storage")]
    pub storage_key: Option<PathBuf>,
    /// Keep the outbox in plain text (an outbox already sealed still needs its key).
    #[arg(long)]
    pub plaintext_storage: bool,
}

/// Where the storage key comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StorageKeySource {
    /// `<data-dir>/storage.key`, made on the first start.
    DataDir,
    /// A file the operator provides; it must exist.
    File(PathBuf),
    /// No encryption at rest.
    Off,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub name: String,
    pub data_dir: PathBuf,
    pub servers: Vec<String>,
    pub bootstrap_token: Option<String>,
    /// The cluster CA's certificate (PEM text).
    pub ca_pem: String,
    pub labels: BTreeMap<String, String>,
    pub tier: Tier,
    pub capabilities: Vec<String>,
    pub capacity: Capacity,
    pub listen: SocketAddr,
    pub heartbeat: Duration,
    pub wasm_threads: usize,
    pub log: String,
    pub outbox_max_bytes: u64,
    pub outbox_policy: OverflowPolicy,
    pub max_inflight_readings: u64,
    pub max_body_bytes: usize,
    pub mqtt_broker: Option<String>,
    /// `--trusted-signers`: when set, what the node runs must be signed by one of these.
    pub trusted_signers: Option<Vec<PublicKey>>,
    /// Whether modules the orchestrators compiled ahead of time may be loaded: not with
    /// `--compile-locally`, nor with trust roots (publishers sign the wasm, not native code).
    pub precompiled_modules: bool,
    pub storage_key: StorageKeySource,
}

impl Config {
    pub fn load(args: Args) -> Result<Config, Vec<String>> {
        let mut errors = Vec::new();
        if let Err(e) = edgeplane_api::validate::dns_subdomain(&args.name) {
            errors.push(format!("name: {e}"));
        }
        let mut labels = BTreeMap::new();
        for label in &args.labels {
            match label.split_once('=') {
                Some((k, v)) => match edgeplane_api::validate::label_key(k).and_then(|()| edgeplane_api::validate::label_value(v)) {
                    Ok(()) => drop(labels.insert(k.to_owned(), v.to_owned())),
                    Err(e) => errors.push(format!("label {label:?}: {e}")),
                },
                None => errors.push(format!("label {label:?}: expected KEY=VALUE")),
            }
        }
        let tier = match args.tier.as_str() {
            "edge" => Tier::Edge,
            "gateway" => Tier::Gateway,
            "cloud" => Tier::Cloud,
            other => {
                errors.push(format!("tier: must be edge, gateway or cloud, got {other:?}"));
                Tier::Edge
            }
        };
        let servers: Vec<String> = args.servers.iter().map(|s| s.trim().to_owned()).filter(|s| !s.is_empty()).collect();
        if servers.is_empty() {
            errors.push("servers: at least one orchestrator address is required".to_owned());
        }
        let listen = args.listen.parse().map_err(|e| errors.push(format!("listen: {:?} is not an address: {e}", args.listen))).ok();
        if args.heartbeat_ms == 0 {
            errors.push("heartbeat-ms: must be >= 1".to_owned());
        }
        if args.instance_slots == 0 || args.memory_mib == 0 {
            errors.push("instance-slots and memory-mib: must be >= 1".to_owned());
        }
        let outbox_policy =
            args.outbox_policy.parse().map_err(|e| errors.push(format!("outbox-policy: {e}"))).unwrap_or(OverflowPolicy::RejectNew);
        if args.outbox_max_mib == 0 || args.max_inflight_readings == 0 || args.max_body_mib == 0 {
            errors.push("outbox-max-mib, max-inflight-readings and max-body-mib: must be >= 1".to_owned());
        }
        if args.mqtt_broker.as_deref().is_some_and(|b| b.trim().is_empty()) {
            errors.push("mqtt-broker: must be host:port".to_owned());
        }
        // Loaded now, so that the capabilities say what the node has; a library that does not
        // load is a configuration error, not a node quietly without the backend.
        if let Some(library) = &args.onnxruntime_lib {
            if let Err(e) = edgeplane_inference::load_onnxruntime(library) {
                errors.push(format!("onnxruntime-lib: {e}"));
            }
        }
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&args.log) {
            errors.push(format!("log: {:?} is not a valid filter: {e}", args.log));
        }
        let trusted_signers = match &args.trusted_signers {
            None => None,
            Some(path) => crate::agent::signers::read_trust_roots(path).map_err(|e| errors.push(format!("trusted-signers: {e}"))).ok(),
        };
        let ca_pem = match std::fs::read_to_string(&args.ca_cert) {
            Ok(pem) => match edgeplane_tls::config::roots(&pem) {
                Ok(_) => Some(pem),
                Err(e) => {
                    errors.push(format!("ca-cert: {}: {e}", args.ca_cert.display()));
                    None
                }
            },
            Err(e) => {
                errors.push(format!("ca-cert: cannot read {}: {e}", args.ca_cert.display()));
                None
            }
        };
        if args
            .bootstrap_token
            .as_deref()
            .is_some_and(|t| edgeplane_api::auth::split_token(t, edgeplane_api::auth::BOOTSTRAP_TOKEN_PREFIX).is_none())
        {
            errors.push("bootstrap-token: not a bootstrap token (ept.<id>.<secret>, from edgectl token create)".to_owned());
        }
        let (Some(listen), Some(ca_pem)) = (listen.filter(|_| errors.is_empty()), ca_pem) else { return Err(errors) };
        let wasm_threads = match args.wasm_threads {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        Ok(Config {
            name: args.name,
            data_dir: args.data_dir,
            servers,
            bootstrap_token: args.bootstrap_token,
            ca_pem,
            labels,
            tier,
            capabilities: with_inference_backends(args.capabilities),
            capacity: Capacity { memory_mib: args.memory_mib, instance_slots: args.instance_slots, cpu_millis: args.cpu_millis },
            listen,
            heartbeat: Duration::from_millis(args.heartbeat_ms),
            wasm_threads,
            log: args.log,
            outbox_max_bytes: args.outbox_max_mib << 20,
            outbox_policy,
            max_inflight_readings: args.max_inflight_readings,
            max_body_bytes: (args.max_body_mib << 20) as usize,
            mqtt_broker: args.mqtt_broker,
            precompiled_modules: !args.compile_locally && trusted_signers.is_none(),
            trusted_signers,
            storage_key: match (args.storage_key, args.plaintext_storage) {
                (Some(path), _) => StorageKeySource::File(path),
                (None, true) => StorageKeySource::Off,
                (None, false) => StorageKeySource::DataDir,
            },
        })
    }
}

/// The configured capabilities plus one per inference backend the node has
/// (`inference.onnx.tract`, `inference.onnx.onnxruntime`): the scheduler places a workload whose
/// Model is an ONNX file only where a backend that can run it is.
fn with_inference_backends(mut capabilities: Vec<String>) -> Vec<String> {
    for backend in edgeplane_inference::BackendKind::available() {
        let capability = edgeplane_api::resources::inference_capability(backend.name());
        if !capabilities.contains(&capability) {
            capabilities.push(capability);
        }
    }
    capabilities
}
