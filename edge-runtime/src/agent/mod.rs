//! The node agent: the edge runtime's side of the conversation with the orchestrators.
//!
//! - [`identity`]: who the node is (`identity.json`: name and uid; `node.key`, `node.crt`:
//!   its certificate, owner-only), enrollment with a bootstrap token, and renewal.
//! - [`heartbeat`]: heartbeats every `--heartbeat-ms` with the node's load and every
//!   instance's state.
//! - [`reconcile`]: the Assignment watch, the desired set persisted before it is acted on (a
//!   restart without the cloud resumes it), and reconciling instances with it.
//! - [`modules`]: the module cache: download, verify, check limits, compile (bounded).
//! - [`uplink`]: the outbox's records to the orchestrators' cloud sink, in order.
//!
//! What they share is here. No lock in the agent is held across IO or an await: the
//! instances' table is a std mutex held for map operations; downloads and compiles happen in
//! tasks that take it only to install their result. Heartbeats therefore never wait for a
//! slow download or a long compile.

mod files;
mod heartbeat;
mod identity;
mod models;
mod modules;
mod reconcile;
pub mod signers;
mod uplink;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, MutexGuard};

use edgeplane_api::node::{Heartbeat, StartReport};
use edgeplane_api::resources::AssignmentSpec;
use edgeplane_api::Status;
use edgeplane_client::{Client, ClientError, ClientOptions};
use tokio::sync::{watch, Semaphore};

pub use files::{refused_files, AtRest, FileError};
pub use identity::NodeCertificate;
pub use models::ModelError;
pub use modules::ModuleError;

use crate::config::Config;
use crate::dataplane::DataPlane;
use crate::pool::{InstanceHandle, WasmPool};
use identity::Identity;

/// Why the agent could not do something. Its loops log these and try again.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("not enrolled, and no --bootstrap-token to enroll with")]
    NoBootstrapToken,
    #[error("the node's certificate: {0}")]
    Tls(String),
    #[error("cannot reach the orchestrators")]
    Unreachable(#[source] ClientError),
    #[error("the orchestrators refused the {what}: {status}")]
    Refused { what: &'static str, status: Box<Status> },
    #[error("the node's files")]
    File(#[from] FileError),
    #[error("{path} belongs to node {owner:?}, not {name:?}; use another data directory or the same name")]
    WrongIdentity { path: String, owner: String, name: String },
}

impl From<ClientError> for AgentError {
    fn from(e: ClientError) -> AgentError {
        AgentError::Unreachable(e)
    }
}

/// One assignment on this node and how far its instance has come.
#[derive(Debug)]
struct Slot {
    spec: AssignmentSpec,
    /// Which start of this slot is current; a start that finds another current discards
    /// its result.
    attempt: u64,
    state: SlotState,
    /// Why the running instance is not on its Model's current file (it could not be fetched
    /// or prepared); the instance goes on with the one it has.
    model_problem: Option<String>,
}

#[derive(Debug)]
enum SlotState {
    /// Fetching or compiling its module; the message says how it goes.
    Starting(Option<String>),
    /// Cannot run as assigned (the module is invalid or too complex) until the assignment
    /// changes.
    Failed(String),
    Running {
        /// Shared with the data plane's routes; the instance stops when the last one is dropped.
        handle: Arc<InstanceHandle>,
        /// Room in the instance's queue.
        slots: Arc<Semaphore>,
        started: StartReport,
    },
}

/// What the agent shares with its tasks.
#[derive(Debug)]
pub struct Agent {
    config: Config,
    /// How its files are kept: sealed under the storage key, or plain.
    at_rest: AtRest,
    /// Rebuilt when the node's certificate changes, so that no pooled connection keeps
    /// presenting the old one.
    client: Mutex<Arc<Client>>,
    certificate: Arc<NodeCertificate>,
    /// Held while enrolling.
    enrolling: tokio::sync::Mutex<()>,
    pool: WasmPool,
    modules: modules::ModuleCache,
    models: models::ModelCache,
    identity: Mutex<Identity>,
    /// The node's assignments and their instances, by `namespace/name`. Held for map
    /// operations only.
    instances: Mutex<BTreeMap<String, Slot>>,
    next_attempt: AtomicU64,
    load: Mutex<heartbeat::LoadMeter>,
    dataplane: Arc<DataPlane>,
    /// The input topics of the running instances (what MQTT ingest subscribes to).
    topics: watch::Sender<BTreeSet<String>>,
    /// Set once the assignments saved on disk have had their first start.
    resumed: watch::Sender<bool>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Nothing panics while holding these locks; a poisoned one still holds consistent data.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Agent {
    /// Sets up the agent: its directories and identity (created on the first start).
    pub async fn new(
        config: Config,
        at_rest: AtRest,
        certificate: Arc<NodeCertificate>,
        pool: WasmPool,
        dataplane: Arc<DataPlane>,
    ) -> Result<Arc<Agent>, AgentError> {
        let identity = identity::load_or_create(config.data_dir.clone(), config.name.clone(), at_rest.clone()).await?;
        let client = Self::new_client(&config, &certificate)?;
        let modules =
            modules::ModuleCache::new(config.data_dir.join("modules"), at_rest.clone(), pool.host().clone(), config.precompiled_modules)
                .await?;
        let models =
            models::ModelCache::new(config.data_dir.join("models"), at_rest.clone(), edgeplane_inference::BackendKind::available()).await?;
        Ok(Arc::new(Agent {
            config,
            at_rest,
            client: Mutex::new(Arc::new(client)),
            certificate,
            enrolling: tokio::sync::Mutex::new(()),
            pool,
            modules,
            models,
            identity: Mutex::new(identity),
            instances: Mutex::new(BTreeMap::new()),
            next_attempt: AtomicU64::new(1),
            load: Mutex::new(heartbeat::LoadMeter::default()),
            dataplane,
            topics: watch::Sender::new(BTreeSet::new()),
            resumed: watch::Sender::new(false),
        }))
    }

    pub fn name(&self) -> &str {
        &self.config.name
    }

    fn new_client(config: &Config, certificate: &NodeCertificate) -> Result<Client, AgentError> {
        let tls = edgeplane_tls::config::client_config_renewable(&config.ca_pem, certificate.current.clone())
            .map_err(|e| AgentError::Tls(e.to_string()))?;
        Ok(Client::new(&config.servers, ClientOptions::default(), tls)?)
    }

    /// The client of the orchestrators.
    fn client(&self) -> Arc<Client> {
        lock(&self.client).clone()
    }

    /// Replaces the client: new connections, with the current certificate.
    fn reconnect(&self) -> Result<(), AgentError> {
        let client = Self::new_client(&self.config, &self.certificate)?;
        *lock(&self.client) = Arc::new(client);
        Ok(())
    }

    pub fn dataplane(&self) -> &Arc<DataPlane> {
        &self.dataplane
    }

    /// Returns once the assignments saved on disk have had their first start (instances
    /// whose modules were cached run): from then on the data plane knows the topics the node
    /// reads. MQTT ingest waits for this, or it would take the messages its persistent
    /// session queued while the node was down before anything could route them.
    pub async fn resumed(&self) {
        let mut resumed = self.resumed.subscribe();
        // The sender lives as long as the agent, so this only returns once it is set.
        let _ = resumed.wait_for(|r| *r).await;
    }

    /// The input topics of the running instances, as they change.
    pub fn topics(&self) -> watch::Receiver<BTreeSet<String>> {
        self.topics.subscribe()
    }

    /// Runs the agent until the process stops: heartbeats and the uplink at once; the
    /// persisted assignments resumed, and then the assignment watch (whose desired set
    /// supersedes the saved one).
    pub async fn run(self: Arc<Self>) {
        let heartbeats = tokio::spawn(self.clone().heartbeat_loop());
        let uploads = tokio::spawn(self.clone().upload_loop());
        let renewals = tokio::spawn(self.clone().renewal_loop());
        self.resume_saved().await;
        self.resumed.send_replace(true);
        self.watch_loop().await;
        heartbeats.abort();
        uploads.abort();
        renewals.abort();
    }

    /// The node's load and every instance's state.
    pub fn heartbeat(&self) -> Heartbeat {
        let instances = self.instance_reports();
        let load = heartbeat::node_load(&mut lock(&self.load), &instances);
        Heartbeat { load, instances, data: self.dataplane.report() }
    }
}
