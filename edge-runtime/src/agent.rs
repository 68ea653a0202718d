//! The node agent: identity, registration, heartbeats, and reconciling instances with the
//! node's Assignments.
//!
//! - Identity: `identity.json` in the data directory holds the node's uid (chosen once) and
//!   the credential registration returned. A credential the orchestrators no longer accept
//!   (401) makes the agent register again with the bootstrap token.
//! - Assignments arrive through one long-lived watch (`labelSelector=edgeplane.io/node=NAME`),
//!   resumed from the last resourceVersion seen, so there is no polling; the desired set is
//!   written to `assignments.json` before it is acted on, so a restart without the cloud
//!   resumes the same work.
//! - Reconcile: new Assignments start instances, removed ones stop them; a change of module,
//!   limits or outputs replaces the instance, a change of configuration or Model only
//!   reconfigures it (`ep_configure`, no restart). Every reconcile hands the data plane its
//!   new routing table.
//! - Upload: the outbox's records go to the orchestrators in order, oldest first, and are
//!   acknowledged (deleted) only after the orchestrators have committed them. Unreachable
//!   orchestrators are retried with a backoff capped at one second, so a backlog starts
//!   draining within a second of the cloud's return, and then at full speed.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _};
use edgeplane_api::data::{self, UpRecord, UploadRequest, UploadResponse};
use edgeplane_api::node::{self, Heartbeat, InstanceReport, RegisterRequest, RegisterResponse, NODE_LABEL};
use edgeplane_api::resources::{AssignmentSpec, NodeLoad};
use futures::StreamExt as _;
use reqwest::{Method, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::Digest as _;

use crate::config::Config;
use crate::dataplane::{DataPlane, Route};
use crate::outbox::DataKind;
use crate::host::{CompiledModule, InstanceLimits};
use crate::pool::{InstanceHandle, InstanceSpec, RestartPolicy, WasmPool};

/// Batches that may wait for one instance.
const INSTANCE_QUEUE: usize = 64;
/// One upload carries at most this many records and about this many bytes of data.
const UPLOAD_RECORDS: usize = 1000;
const UPLOAD_BYTES: usize = 1 << 20;
/// Wait between attempts to reach the orchestrators.
const RETRY: Duration = Duration::from_millis(500);

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Identity {
    name: String,
    uid: String,
    #[serde(default)]
    token: Option<String>,
}

/// Talks to whichever orchestrator answers, preferring the one that answered last and
/// following leader hints.
#[derive(Debug)]
pub struct Client {
    http: reqwest::Client,
    servers: Vec<String>,
    preferred: Mutex<usize>,
}

impl Client {
    pub fn new(servers: Vec<String>) -> anyhow::Result<Client> {
        let http = reqwest::Client::builder().connect_timeout(Duration::from_secs(2)).build()?;
        Ok(Client { http, servers, preferred: Mutex::new(0) })
    }

    fn order(&self) -> Vec<String> {
        let first = *self.preferred.lock().unwrap_or_else(|p| p.into_inner());
        (0..self.servers.len()).map(|i| self.servers[(first + i) % self.servers.len()].clone()).collect()
    }

    /// Moves on from `server` to the one after it, for the next request.
    fn skip(&self, server: &str) {
        if let Some(i) = self.servers.iter().position(|s| s == server) {
            *self.preferred.lock().unwrap_or_else(|p| p.into_inner()) = (i + 1) % self.servers.len();
        }
    }

    fn prefer(&self, server: &str) {
        if let Some(i) = self.servers.iter().position(|s| s == server) {
            *self.preferred.lock().unwrap_or_else(|p| p.into_inner()) = i;
        }
    }

    /// Sends a request to each orchestrator in turn (and to a leader one of them names) until
    /// one gives an answer that is not "unavailable". Returns the status and body.
    pub async fn call(&self, method: Method, path: &str, token: Option<&str>, body: Option<&[u8]>) -> anyhow::Result<(StatusCode, Vec<u8>)> {
        let mut candidates = self.order();
        let mut last_error = anyhow!("no orchestrator configured");
        let mut tried = 0;
        while tried < candidates.len() && tried < 8 {
            let server = candidates[tried].clone();
            tried += 1;
            let mut request = self.http.request(method.clone(), format!("http://{server}{path}")).timeout(Duration::from_secs(10));
            if let Some(token) = token {
                request = request.bearer_auth(token);
            }
            if let Some(body) = body {
                request = request.header(reqwest::header::CONTENT_TYPE, "application/json").body(body.to_vec());
            }
            match request.send().await {
                Ok(response) => {
                    let status = response.status();
                    let bytes = response.bytes().await.map(|b| b.to_vec()).unwrap_or_default();
                    if status == StatusCode::SERVICE_UNAVAILABLE || status == StatusCode::GATEWAY_TIMEOUT {
                        let hint = serde_json::from_slice::<Value>(&bytes)
                            .ok()
                            .and_then(|v| v.pointer("/details/leaderApiAddr").and_then(Value::as_str).map(str::to_owned));
                        if let Some(leader) = hint.filter(|l| !candidates[tried..].contains(l)) {
                            candidates.insert(tried, leader);
                        }
                        last_error = anyhow!("{server} answered {status}: {}", String::from_utf8_lossy(&bytes));
                        continue;
                    }
                    self.prefer(&server);
                    return Ok((status, bytes));
                }
                Err(e) => last_error = anyhow!("{server}: {e}"),
            }
        }
        Err(last_error)
    }
}

/// What the agent shares with its tasks.
#[derive(Debug)]
pub struct Agent {
    config: Config,
    client: Client,
    pool: WasmPool,
    identity: Mutex<Identity>,
    running: tokio::sync::Mutex<BTreeMap<String, Running>>,
    compiled: Mutex<BTreeMap<String, Arc<CompiledModule>>>,
    load: Mutex<LoadMeter>,
    dataplane: Arc<DataPlane>,
    /// The input topics of the running instances (what MQTT ingest subscribes to).
    topics: tokio::sync::watch::Sender<BTreeSet<String>>,
    /// Set once the assignments saved on disk run again (or there were none).
    resumed: tokio::sync::watch::Sender<bool>,
}

#[derive(Debug)]
struct Running {
    spec: AssignmentSpec,
    /// Shared with the data plane's routes; the instance stops when the last one is dropped.
    handle: Arc<InstanceHandle>,
    slots: Arc<tokio::sync::Semaphore>,
}

impl Agent {
    pub fn new(config: Config, pool: WasmPool, dataplane: Arc<DataPlane>) -> anyhow::Result<Arc<Agent>> {
        std::fs::create_dir_all(config.data_dir.join("modules"))
            .with_context(|| format!("cannot create {}", config.data_dir.display()))?;
        let identity = load_identity(&config.data_dir, &config.name)?;
        let client = Client::new(config.servers.clone())?;
        Ok(Arc::new(Agent {
            config,
            client,
            pool,
            identity: Mutex::new(identity),
            running: tokio::sync::Mutex::new(BTreeMap::new()),
            compiled: Mutex::new(BTreeMap::new()),
            load: Mutex::new(LoadMeter::default()),
            dataplane,
            topics: tokio::sync::watch::Sender::new(BTreeSet::new()),
            resumed: tokio::sync::watch::Sender::new(false),
        }))
    }

    pub fn name(&self) -> &str {
        &self.config.name
    }

    pub fn dataplane(&self) -> &Arc<DataPlane> {
        &self.dataplane
    }

    /// Returns once the assignments saved on disk run again (instances may still be
    /// compiling): from then on the data plane knows every topic the node reads. MQTT ingest
    /// waits for this, or it would take the messages its persistent session queued while the
    /// node was down, find no route for them and drop them.
    pub async fn resumed(&self) {
        let mut resumed = self.resumed.subscribe();
        // The sender lives as long as the agent, so this only returns once it is set.
        let _ = resumed.wait_for(|r| *r).await;
    }

    /// The input topics of the running instances, as they change.
    pub fn topics(&self) -> tokio::sync::watch::Receiver<BTreeSet<String>> {
        self.topics.subscribe()
    }

    /// Runs the agent until the process stops: resumes the persisted assignments at once,
    /// then keeps the heartbeat and the assignment watch going.
    pub async fn run(self: Arc<Self>) {
        match read_json::<BTreeMap<String, AssignmentSpec>>(&self.assignments_path()) {
            Ok(Some(saved)) => {
                tracing::info!(assignments = saved.len(), "resuming the assignments saved on disk");
                self.reconcile(saved).await;
            }
            Ok(None) => {}
            Err(e) => tracing::warn!("ignoring the saved assignments: {e:#}"),
        }
        self.resumed.send_replace(true);
        let heartbeats = tokio::spawn(self.clone().heartbeat_loop());
        let uploads = tokio::spawn(self.clone().upload_loop());
        self.watch_loop().await;
        heartbeats.abort();
        uploads.abort();
    }

    fn token(&self) -> Option<String> {
        self.identity.lock().unwrap_or_else(|p| p.into_inner()).token.clone()
    }

    async fn register(&self) -> anyhow::Result<()> {
        let token = self.config.bootstrap_token.as_deref().context("not registered, and no --bootstrap-token to register with")?;
        let uid = self.identity.lock().unwrap_or_else(|p| p.into_inner()).uid.clone();
        let request = RegisterRequest {
            name: self.config.name.clone(),
            uid,
            labels: self.config.labels.clone(),
            tier: self.config.tier,
            capabilities: self.config.capabilities.clone(),
            capacity: self.config.capacity.clone(),
        };
        let (status, body) = self.client.call(Method::POST, node::REGISTER, Some(token), Some(&serde_json::to_vec(&request)?)).await?;
        if !status.is_success() {
            bail!("registration refused ({status}): {}", message(&body));
        }
        let response: RegisterResponse = serde_json::from_slice(&body).context("registration answer")?;
        let mut identity = self.identity.lock().unwrap_or_else(|p| p.into_inner());
        identity.token = Some(response.token);
        write_json(&self.config.data_dir.join("identity.json"), &*identity)?;
        tracing::info!(node = %self.config.name, "registered");
        Ok(())
    }

    async fn heartbeat_loop(self: Arc<Self>) {
        let mut ticker = tokio::time::interval(self.config.heartbeat);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            if let Err(e) = self.heartbeat_once().await {
                tracing::debug!("heartbeat: {e:#}");
            }
        }
    }

    async fn heartbeat_once(&self) -> anyhow::Result<()> {
        if self.token().is_none() {
            self.register().await?;
        }
        let heartbeat = self.heartbeat().await;
        let body = serde_json::to_vec(&heartbeat)?;
        let path = node::heartbeat_path(&self.config.name);
        let (status, answer) = self.client.call(Method::POST, &path, self.token().as_deref(), Some(&body)).await?;
        match status {
            s if s.is_success() => Ok(()),
            StatusCode::UNAUTHORIZED => {
                tracing::warn!("the orchestrators do not know this node's credential; registering again");
                self.register().await
            }
            s => bail!("heartbeat refused ({s}): {}", message(&answer)),
        }
    }

    /// The node's load and every instance's state.
    pub async fn heartbeat(&self) -> Heartbeat {
        let instances = self.instance_reports().await;
        let queue_depth = instances.iter().map(|i| i.queue_depth).sum();
        let (cpu_millis, memory_mib) = self.load.lock().unwrap_or_else(|p| p.into_inner()).sample();
        let data = self.dataplane.report();
        Heartbeat { load: NodeLoad { cpu_millis, memory_mib, instances: instances.len() as u32, queue_depth }, instances, data }
    }

    pub async fn instance_reports(&self) -> Vec<InstanceReport> {
        let running = self.running.lock().await;
        running
            .iter()
            .map(|(key, r)| {
                let s = r.handle.status();
                let counters = self.dataplane.counters(key);
                let load = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
                InstanceReport {
                    assignment: key.clone(),
                    generation: r.spec.generation,
                    module_digest: r.spec.module_digest.clone(),
                    model_version: r.spec.model.as_ref().map(|m| m.version.clone()),
                    phase: s.phase,
                    restarts: s.restarts,
                    message: s.message,
                    batches_ok: s.batches_ok,
                    batches_failed: s.batches_failed,
                    reconfigurations: s.reconfigurations,
                    memory_bytes: s.memory_bytes,
                    queue_depth: s.queue_depth,
                    readings_in: load(&counters.readings_in),
                    bytes_in: load(&counters.bytes_in),
                    bytes_up: load(&counters.bytes_up),
                    readings_dropped: load(&counters.readings_dropped),
                }
            })
            .collect()
    }

    /// Follows the node's Assignments: a full list (ADDED events up to a BOOKMARK), then
    /// changes; on a broken stream it resumes from the last version seen, on 410 it lists anew.
    async fn watch_loop(&self) {
        let base = format!(
            "{}/assignments?watch=true&labelSelector={}%3D{}",
            edgeplane_api::paths::RESOURCES,
            NODE_LABEL.replace('/', "%2F"),
            self.config.name
        );
        let mut resume: Option<String> = None;
        let mut desired: BTreeMap<String, AssignmentSpec> = BTreeMap::new();
        loop {
            let path = match &resume {
                Some(version) => format!("{base}&resourceVersion={version}"),
                None => base.clone(),
            };
            match self.follow(&path, &mut desired, &mut resume).await {
                Ok(()) => tracing::debug!("assignment watch ended; resuming"),
                Err(e) => tracing::info!("assignment watch: {e:#}"),
            }
            tokio::time::sleep(RETRY).await;
        }
    }

    async fn follow(&self, path: &str, desired: &mut BTreeMap<String, AssignmentSpec>, resume: &mut Option<String>) -> anyhow::Result<()> {
        // The watch goes to the server that answered last; any of them serves it.
        let server = self.client.order().into_iter().next().context("no orchestrator configured")?;
        let response = self.client.http.get(format!("http://{server}{path}")).send().await;
        let response = match response {
            Ok(r) => r,
            Err(e) => {
                self.client.skip(&server);
                return Err(anyhow!("{server}: {e}"));
            }
        };
        if response.status() == StatusCode::GONE {
            *resume = None;
            bail!("the watch version expired; listing again");
        }
        if !response.status().is_success() {
            let status = response.status();
            self.client.skip(&server);
            bail!("{server} answered {status}");
        }
        // Without a version to resume from, the stream starts with the whole set.
        let mut listing = resume.is_none().then(BTreeMap::new);
        let mut stream = response.bytes_stream();
        let mut buffer = Vec::new();
        while let Some(chunk) = stream.next().await {
            buffer.extend_from_slice(&chunk.context("watch stream broke")?);
            while let Some(end) = buffer.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = buffer.drain(..=end).collect();
                let event: Value = serde_json::from_slice(&line).context("unreadable watch event")?;
                let object = &event["object"];
                let version = object.pointer("/metadata/resourceVersion").and_then(Value::as_str).map(str::to_owned);
                let key = format!(
                    "{}/{}",
                    object.pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or_default(),
                    object.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default()
                );
                match event["type"].as_str() {
                    Some("ADDED" | "MODIFIED") => {
                        let spec: AssignmentSpec = serde_json::from_value(object["spec"].clone())
                            .with_context(|| format!("assignment {key} is unreadable"))?;
                        match listing.as_mut() {
                            Some(listing) => drop(listing.insert(key, spec)),
                            None => {
                                desired.insert(key, spec);
                                self.apply(desired).await;
                            }
                        }
                    }
                    Some("DELETED") => {
                        desired.remove(&key);
                        self.apply(desired).await;
                    }
                    Some("BOOKMARK") => {
                        if let Some(listed) = listing.take() {
                            *desired = listed;
                            self.apply(desired).await;
                        }
                    }
                    Some("ERROR") => {
                        *resume = None;
                        bail!("the orchestrator ended the watch: {}", object["message"]);
                    }
                    other => tracing::debug!(?other, "ignoring a watch event"),
                }
                if let Some(version) = version {
                    *resume = Some(version);
                }
            }
        }
        Ok(())
    }

    /// Persists the desired set, then reconciles to it.
    async fn apply(&self, desired: &BTreeMap<String, AssignmentSpec>) {
        if let Err(e) = write_json(&self.assignments_path(), desired) {
            tracing::error!("cannot persist the assignments: {e:#}");
        }
        self.reconcile(desired.clone()).await;
    }

    fn assignments_path(&self) -> PathBuf {
        self.config.data_dir.join("assignments.json")
    }

    /// Makes the running instances match `desired`.
    pub async fn reconcile(&self, desired: BTreeMap<String, AssignmentSpec>) {
        let mut running = self.running.lock().await;
        // Dropping a handle stops its instance.
        running.retain(|key, _| {
            let keep = desired.contains_key(key);
            if !keep {
                tracing::info!(assignment = %key, "stopping");
            }
            keep
        });
        for (key, spec) in desired {
            match running.get_mut(&key) {
                Some(r) if r.spec == spec => {}
                Some(r) if same_instance(&r.spec, &spec) => {
                    tracing::info!(assignment = %key, model = ?spec.model.as_ref().map(|m| &m.version), "reconfiguring");
                    r.handle.configure(config_document(&spec), model_version(&spec));
                    r.spec = spec;
                }
                _ => match self.start(&key, &spec).await {
                    Ok(handle) => {
                        tracing::info!(assignment = %key, module = %spec.module_ref, generation = spec.generation, "started");
                        let slots = Arc::new(tokio::sync::Semaphore::new(INSTANCE_QUEUE));
                        running.insert(key, Running { spec, handle: Arc::new(handle), slots });
                    }
                    Err(e) => tracing::warn!(assignment = %key, "cannot start: {e:#}"),
                },
            }
        }
        let routes = running.iter().map(|(key, r)| Route::new(key, &r.spec, r.handle.clone(), r.slots.clone(), self.dataplane.counters(key))).collect();
        self.dataplane.set_routes(routes);
        self.topics.send_replace(self.dataplane.input_topics().into_iter().collect());
    }

    /// Sends the outbox to the orchestrators, oldest first, for as long as the node runs.
    async fn upload_loop(self: Arc<Self>) {
        let mut backoff = Duration::from_millis(50);
        // Drops to 1 after the orchestrators refuse a batch as invalid, to find the record
        // they refuse; back to the full size after the next success.
        let mut batch = UPLOAD_RECORDS;
        loop {
            match self.upload_once(batch).await {
                Ok(Upload::Sent) => {
                    backoff = Duration::from_millis(50);
                    batch = UPLOAD_RECORDS;
                }
                Ok(Upload::Invalid) => batch = 1,
                Ok(Upload::Nothing) => {
                    // Nothing waiting: sleep until an append (or a second, as a safety net).
                    let _ = tokio::time::timeout(Duration::from_secs(1), self.dataplane.appended.notified()).await;
                }
                Err(e) => {
                    tracing::debug!("upload: {e:#}");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
            }
        }
    }

    /// Sends one batch of at most `max_records` of the oldest records.
    async fn upload_once(&self, max_records: usize) -> anyhow::Result<Upload> {
        let outbox = self.dataplane.outbox().clone();
        let stored = tokio::task::spawn_blocking(move || outbox.peek(max_records, UPLOAD_BYTES)).await??;
        let Some(last) = stored.last().map(|s| s.index) else { return Ok(Upload::Nothing) };
        let count = stored.len();
        if self.token().is_none() {
            self.register().await?;
        }
        let records = stored.into_iter().map(up_record).collect::<anyhow::Result<Vec<_>>>()?;
        let body = serde_json::to_vec(&UploadRequest { records })?;
        let (status, answer) = self.client.call(Method::POST, &data::upload_path(&self.config.name), self.token().as_deref(), Some(&body)).await?;
        match status {
            s if s.is_success() => {
                let response: UploadResponse = serde_json::from_slice(&answer).context("upload answer")?;
                tracing::debug!(accepted = response.accepted, duplicates = response.duplicates, "uploaded");
                if response.stale > 0 {
                    tracing::warn!(records = response.stale, "the orchestrators fenced records of an assignment generation that has moved elsewhere");
                }
                self.dataplane.uploaded(body.len() as u64, response.stale);
                // Deleting segments and syncing state.json are disk work: off the reactor.
                let outbox = self.dataplane.outbox().clone();
                tokio::task::spawn_blocking(move || outbox.ack(last + 1)).await??;
                Ok(Upload::Sent)
            }
            // Resending will not help: isolate the record, then set it aside (counted) rather
            // than let it block everything behind it.
            StatusCode::BAD_REQUEST | StatusCode::PAYLOAD_TOO_LARGE | StatusCode::UNPROCESSABLE_ENTITY => {
                if count == 1 {
                    tracing::error!(index = last, "the orchestrators refuse an outbox record ({status}), setting it aside: {}", message(&answer));
                    let outbox = self.dataplane.outbox().clone();
                    tokio::task::spawn_blocking(move || outbox.reject(last + 1)).await??;
                }
                Ok(Upload::Invalid)
            }
            StatusCode::UNAUTHORIZED => {
                tracing::warn!("the orchestrators do not know this node's credential; registering again");
                self.register().await?;
                bail!("upload refused: not registered")
            }
            s => bail!("upload refused ({s}): {}", message(&answer)),
        }
    }

    async fn start(&self, key: &str, spec: &AssignmentSpec) -> anyhow::Result<InstanceHandle> {
        let module = self.module(&spec.module_digest).await?;
        let limits = InstanceLimits {
            memory_bytes: (spec.resources.memory_mib as usize) << 20,
            batch_deadline: Duration::from_millis(spec.resources.batch_time_ms),
            outputs: spec.outputs.iter().map(|o| o.name.clone()).collect(),
            log_name: key.to_owned(),
        };
        Ok(self.pool.start(InstanceSpec {
            name: key.to_owned(),
            module,
            limits,
            config_doc: config_document(spec),
            model_version: model_version(spec),
            restart: RestartPolicy {
                first_backoff: Duration::from_millis(spec.failure_policy.restart_backoff_ms.max(1)),
                max_restarts: spec.failure_policy.max_restarts,
            },
            queue_capacity: INSTANCE_QUEUE,
        }))
    }

    /// The compiled module for a digest: from memory, else from the disk cache (verified),
    /// else downloaded from the registry (verified, then cached).
    async fn module(&self, digest: &str) -> anyhow::Result<Arc<CompiledModule>> {
        if let Some(m) = self.compiled.lock().unwrap_or_else(|p| p.into_inner()).get(digest) {
            return Ok(m.clone());
        }
        let hex = digest.strip_prefix("sha256:").filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit())).context("malformed module digest")?;
        let path = self.config.data_dir.join("modules").join(format!("{hex}.wasm"));
        let bytes = match std::fs::read(&path) {
            Ok(bytes) if sha256_hex(&bytes) == hex => bytes,
            cached => {
                if cached.is_ok() {
                    tracing::warn!(%digest, "the cached module is corrupt; fetching it again");
                }
                let (status, bytes) = self.client.call(Method::GET, &format!("/v1/blobs/{digest}"), None, None).await?;
                if !status.is_success() {
                    bail!("fetching module {digest} failed ({status}): {}", message(&bytes));
                }
                let actual = sha256_hex(&bytes);
                if actual != hex {
                    bail!("module {digest} arrived with digest sha256:{actual}; refusing it");
                }
                write_atomically(&path, &bytes)?;
                bytes
            }
        };
        let host = self.pool.host().clone();
        let compiled = tokio::task::spawn_blocking(move || host.load(&bytes)).await??;
        let compiled = Arc::new(compiled);
        self.compiled.lock().unwrap_or_else(|p| p.into_inner()).insert(digest.to_owned(), compiled.clone());
        Ok(compiled)
    }
}

/// What one upload attempt did.
enum Upload {
    Nothing,
    Sent,
    /// The orchestrators refused the batch as invalid.
    Invalid,
}

/// An outbox record in the upload's form: readings decoded, other data in base64.
fn up_record(stored: crate::outbox::Stored) -> anyhow::Result<UpRecord> {
    use base64::Engine as _;
    let r = stored.record;
    let (readings, opaque) = match r.kind {
        DataKind::Readings => (data::decode_batch(&r.data)?, None),
        DataKind::Opaque => (Vec::new(), Some(base64::engine::general_purpose::STANDARD.encode(&r.data))),
    };
    Ok(UpRecord {
        stream: r.stream,
        seq: stored.seq,
        namespace: r.namespace,
        workload: r.workload,
        output: r.output,
        generation: r.generation,
        model: r.model,
        produced_ms: r.produced_ms,
        readings,
        opaque,
    })
}

/// Whether a change can be applied to the running instance (configuration and Model only).
fn same_instance(a: &AssignmentSpec, b: &AssignmentSpec) -> bool {
    a.module_digest == b.module_digest
        && a.resources == b.resources
        && a.outputs == b.outputs
        && a.generation == b.generation
        && a.failure_policy == b.failure_policy
}

/// The document `ep_configure` receives (docs/abi.md).
pub fn config_document(spec: &AssignmentSpec) -> Vec<u8> {
    let doc = json!({ "config": spec.config, "model": spec.model });
    serde_json::to_vec(&doc).expect("JSON values serialize")
}

/// The version of the Model in the configuration document, which the instance's cloud
/// records carry.
fn model_version(spec: &AssignmentSpec) -> Option<Arc<str>> {
    spec.model.as_ref().map(|m| Arc::from(m.version.as_str()))
}

fn load_identity(dir: &Path, name: &str) -> anyhow::Result<Identity> {
    let path = dir.join("identity.json");
    match read_json::<Identity>(&path)? {
        Some(identity) if identity.name == name => Ok(identity),
        Some(identity) => bail!(
            "{} belongs to node {:?}, not {name:?}; use another data directory or the same name",
            path.display(),
            identity.name
        ),
        None => {
            let identity = Identity { name: name.to_owned(), uid: random_hex(16)?, token: None };
            write_json(&path, &identity)?;
            Ok(identity)
        }
    }
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> anyhow::Result<Option<T>> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map(Some).with_context(|| format!("{} is unreadable", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

fn write_json(path: &Path, value: &impl Serialize) -> anyhow::Result<()> {
    write_atomically(path, &serde_json::to_vec_pretty(value)?)
}

/// Write to a temporary file, fsync, rename: a crash leaves the old or the new file, whole.
fn write_atomically(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write as _;
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::File::create(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot replace {}", path.display()))?;
    Ok(())
}

fn message(body: &[u8]) -> String {
    serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v.get("message").and_then(Value::as_str).map(str::to_owned))
        .unwrap_or_else(|| String::from_utf8_lossy(body).into_owned())
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex(&sha2::Sha256::digest(bytes))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn random_hex(bytes: usize) -> anyhow::Result<String> {
    use std::io::Read as _;
    let mut buf = vec![0u8; bytes];
    std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut buf)).context("cannot read /dev/urandom")?;
    Ok(hex(&buf))
}

/// The process's CPU use since the previous sample, and its resident memory, from /proc.
#[derive(Debug, Default)]
struct LoadMeter {
    last: Option<(std::time::Instant, u64)>,
}

impl LoadMeter {
    fn sample(&mut self) -> (u32, u64) {
        let ticks = std::fs::read_to_string("/proc/self/stat").ok().and_then(|s| {
            // Fields after the command name (which may contain spaces) start after ')'.
            let rest = s.rsplit_once(')')?.1;
            let fields: Vec<&str> = rest.split_whitespace().collect();
            Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
        });
        let rss_pages = std::fs::read_to_string("/proc/self/statm")
            .ok()
            .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
            .unwrap_or(0);
        let now = std::time::Instant::now();
        let cpu = match (self.last, ticks) {
            // Linux reports CPU time in clock ticks of 1/100 s.
            (Some((then, before)), Some(t)) => {
                let elapsed = now.duration_since(then).as_secs_f64().max(1e-3);
                ((t.saturating_sub(before)) as f64 * 10.0 / elapsed) as u32
            }
            _ => 0,
        };
        if let Some(t) = ticks {
            self.last = Some((now, t));
        }
        (cpu, rss_pages * 4096 / (1 << 20))
    }
}
