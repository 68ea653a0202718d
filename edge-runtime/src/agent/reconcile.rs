//! Reconciling the node's instances with its Assignments.
//!
//! Assignments arrive through one long-lived watch (`labelSelector=edgeplane.io/node=NAME`),
//! resumed from the last resourceVersion seen, so there is no polling. The desired set is
//! written to `assignments.json` before it is acted on, so a restart without the cloud resumes
//! the same work.
//!
//! A reconcile pass is quick and takes the instances' table only briefly: removed
//! Assignments stop their instances, a change of configuration or Model reconfigures the
//! running instance (`ep_configure`, no restart), and anything else (a new Assignment, a new
//! module, limits, outputs or generation) gets a start task. The task fetches and compiles
//! the module without holding anything, then installs the instance if its start is still the
//! current one. A module fetch that fails for a reason that may pass (the network, the
//! registry) is retried with backoff; a module that is itself at fault (invalid, too complex,
//! a compile past its time) fails the assignment, reported as `Failed`, until it changes.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use edgeplane_api::node::{InstancePhase, InstanceReport, StartReport, NODE_LABEL};
use edgeplane_api::resources::{AssignedModel, AssignmentSpec, ModelArtifact};
use edgeplane_api::watch::{WatchEvent, WatchEventType};
use edgeplane_client::Request;
use futures::StreamExt as _;
use tokio::sync::{oneshot, Semaphore};

use super::files::Access;
use super::{lock, signers, Agent, Slot, SlotState};
use crate::dataplane::Route;
use crate::host::InstanceLimits;
use crate::pool::{InstanceSpec, RestartPolicy};

/// Batches that may wait for one instance.
const INSTANCE_QUEUE: usize = 64;
/// Wait before following the watch again after it broke.
const RETRY: Duration = Duration::from_millis(500);
/// The longest wait between attempts to fetch a module.
const FETCH_BACKOFF_MAX: Duration = Duration::from_secs(30);
/// The watch is a long-lived stream: an attempt lasts until the server ends it.
const WATCH_TIMEOUT: Duration = Duration::from_secs(24 * 3600);

impl Agent {
    fn assignments_path(&self) -> std::path::PathBuf {
        self.config.data_dir.join("assignments.json")
    }

    /// Starts the assignments saved on disk, and waits until each has had its first start.
    pub(super) async fn resume_saved(self: &Arc<Self>) {
        match self.at_rest.load_json::<BTreeMap<String, AssignmentSpec>>(self.assignments_path()).await {
            Ok(Some(saved)) => {
                tracing::info!(assignments = saved.len(), "resuming the assignments saved on disk");
                for first in self.reconcile(saved) {
                    let _ = first.await;
                }
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "ignoring the saved assignments"),
        }
    }

    /// Follows the node's Assignments: a full list (ADDED events up to a BOOKMARK), then
    /// changes; on a broken stream it resumes where it was, on 410 it lists anew.
    ///
    /// Resuming: the events of one write (a transaction places many Assignments) share its
    /// resourceVersion, and a stream may break between them. So the watch resumes from the
    /// version before the last one seen and applies that write's events again, which changes
    /// nothing for the ones already applied. A stream that breaks during the listing lists
    /// again: its objects' own versions say nothing about how far the listing got.
    pub(super) async fn watch_loop(self: &Arc<Self>) {
        let base = format!(
            "{}/assignments?watch=true&labelSelector={}%3D{}",
            edgeplane_api::paths::RESOURCES,
            NODE_LABEL.replace('/', "%2F"),
            self.config.name
        );
        let mut resume: Option<u64> = None;
        let mut desired: BTreeMap<String, AssignmentSpec> = BTreeMap::new();
        loop {
            let path = match resume {
                Some(version) => format!("{base}&resourceVersion={}", version.saturating_sub(1)),
                None => base.clone(),
            };
            match self.follow(&path, &mut desired, &mut resume).await {
                Ok(()) => tracing::debug!("assignment watch ended; resuming"),
                Err(why) => tracing::info!("assignment watch: {why}"),
            }
            tokio::time::sleep(RETRY).await;
        }
    }

    async fn follow(
        self: &Arc<Self>,
        path: &str,
        desired: &mut BTreeMap<String, AssignmentSpec>,
        resume: &mut Option<u64>,
    ) -> Result<(), String> {
        let opened = self.client().open(Request::get(path).attempt_timeout(WATCH_TIMEOUT)).await.map_err(|e| e.to_string())?;
        let (server, response) = match opened {
            Ok(live) => live,
            Err(answer) if answer.status == edgeplane_client::StatusCode::GONE => {
                *resume = None;
                return Err("the watch version expired; listing again".to_owned());
            }
            Err(answer) => return Err(answer.status_error().to_string()),
        };
        // Without a version to resume from, the stream starts with the whole set.
        let mut listing = resume.is_none().then(BTreeMap::new);
        let mut stream = response.bytes_stream();
        let mut buffer = Vec::new();
        while let Some(chunk) = stream.next().await {
            buffer.extend_from_slice(&chunk.map_err(|e| format!("the watch stream from {server} broke: {e}"))?);
            while let Some(end) = buffer.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = buffer.drain(..=end).collect();
                let event: WatchEvent = serde_json::from_slice(&line).map_err(|e| format!("an unreadable watch event: {e}"))?;
                let version = event.resource_version();
                let object = &event.object;
                let key = format!(
                    "{}/{}",
                    object.pointer("/metadata/namespace").and_then(serde_json::Value::as_str).unwrap_or_default(),
                    object.pointer("/metadata/name").and_then(serde_json::Value::as_str).unwrap_or_default()
                );
                match event.type_ {
                    WatchEventType::Added | WatchEventType::Modified => {
                        let spec: AssignmentSpec =
                            serde_json::from_value(object["spec"].clone()).map_err(|e| format!("assignment {key} is unreadable: {e}"))?;
                        match listing.as_mut() {
                            Some(listing) => drop(listing.insert(key, spec)),
                            None => {
                                desired.insert(key, spec);
                                self.apply(desired).await;
                            }
                        }
                    }
                    WatchEventType::Deleted => {
                        desired.remove(&key);
                        self.apply(desired).await;
                    }
                    WatchEventType::Bookmark => {
                        if let Some(listed) = listing.take() {
                            *desired = listed;
                            self.apply(desired).await;
                        }
                    }
                    WatchEventType::Error => {
                        *resume = None;
                        return Err(format!("the orchestrator ended the watch: {}", object["message"]));
                    }
                }
                // During the listing the objects carry their own (older) versions; only the
                // bookmark and the events after it say how far the stream has come.
                if let Some(version) = version.filter(|_| listing.is_none()) {
                    *resume = Some(version);
                }
            }
        }
        Ok(())
    }

    /// Persists the desired set, then reconciles to it.
    async fn apply(self: &Arc<Self>, desired: &BTreeMap<String, AssignmentSpec>) {
        if let Err(e) = self.at_rest.save_json(self.assignments_path(), desired.clone(), Access::Owner).await {
            tracing::error!(error = %e, "cannot persist the assignments");
        }
        drop(self.reconcile(desired.clone()));
    }

    /// Makes the instances match `desired`. Returns, for each start it began, a receiver that
    /// completes after the start's first attempt.
    pub(super) fn reconcile(self: &Arc<Self>, desired: BTreeMap<String, AssignmentSpec>) -> Vec<oneshot::Receiver<()>> {
        let mut firsts = Vec::new();
        {
            let mut instances = lock(&self.instances);
            // Dropping a handle stops its instance.
            instances.retain(|key, _| {
                let keep = desired.contains_key(key);
                if !keep {
                    tracing::info!(assignment = %key, "stopping");
                }
                keep
            });
            for (key, spec) in desired {
                match instances.get_mut(&key) {
                    Some(slot) if slot.spec == spec => {}
                    Some(slot @ Slot { state: SlotState::Running { .. }, .. }) if same_instance(&slot.spec, &spec) => {
                        tracing::info!(assignment = %key, model = ?spec.model.as_ref().map(|m| &m.version), "reconfiguring");
                        if let SlotState::Running { handle, .. } = &slot.state {
                            match model_file(&spec) {
                                None => handle.configure(config_document(&spec), model_version(&spec), None),
                                Some((model, artifact)) => match self.models.ready(model, artifact) {
                                    Some(bound) => handle.configure(config_document(&spec), model_version(&spec), Some(bound)),
                                    // The instance keeps its model until the new one is ready.
                                    None => drop(tokio::spawn(self.clone().rebind(key.clone(), spec.clone()))),
                                },
                            }
                        }
                        slot.spec = spec;
                    }
                    _ => {
                        let attempt = self.next_attempt.fetch_add(1, Ordering::Relaxed);
                        let slot = Slot { spec: spec.clone(), attempt, state: SlotState::Starting(None), model_problem: None };
                        instances.insert(key.clone(), slot);
                        let (first, done) = oneshot::channel();
                        firsts.push(done);
                        tokio::spawn(self.clone().start(key, spec, attempt, first));
                    }
                }
            }
            self.publish_routes(&instances);
        }
        firsts
    }

    /// Fetches and compiles the module of one assignment, then starts its instance, unless
    /// another start of the slot has become current meanwhile.
    async fn start(self: Arc<Self>, key: String, spec: AssignmentSpec, attempt: u64, first: oneshot::Sender<()>) {
        let received = Instant::now();
        // Before anything is fetched: what this node's own trust roots refuse never runs.
        let roots = self.config.trusted_signers.as_deref();
        let signed = signers::check_module(roots, &spec)
            .and_then(|()| model_file(&spec).map_or(Ok(()), |(model, artifact)| signers::check_model(roots, model, artifact)));
        if let Err(why) = signed {
            tracing::warn!(assignment = %key, "refused: {why}");
            self.settle(&key, attempt, SlotState::Failed(why));
            return;
        }
        let mut first = Some(first);
        let mut backoff = Duration::from_millis(500);
        let (module, module_source) = loop {
            let result = self.modules.get(&self.client(), &spec.module_digest).await;
            let current = lock(&self.instances).get(&key).is_some_and(|s| s.attempt == attempt);
            if !current {
                return;
            }
            match result {
                Ok(module) => break module,
                Err(e) if e.is_permanent() => {
                    tracing::warn!(assignment = %key, "cannot start: {}", chain(&e));
                    self.settle(&key, attempt, SlotState::Failed(chain(&e)));
                    return;
                }
                Err(e) => {
                    let why = format!("{}; retrying in {} s", chain(&e), backoff.as_secs_f32());
                    tracing::info!(assignment = %key, "cannot start yet: {why}");
                    self.settle(&key, attempt, SlotState::Starting(Some(why)));
                    if let Some(first) = first.take() {
                        let _ = first.send(());
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(FETCH_BACKOFF_MAX);
                }
            }
        };
        let model = match model_file(&spec) {
            None => None,
            Some((model, artifact)) => loop {
                let result = self.models.get(&self.client(), model, artifact).await;
                let current = lock(&self.instances).get(&key).is_some_and(|s| s.attempt == attempt);
                if !current {
                    return;
                }
                match result {
                    Ok(bound) => break Some(bound),
                    Err(e) if e.is_permanent() => {
                        tracing::warn!(assignment = %key, model = %model.name, "cannot start: {}", chain(&e));
                        self.settle(&key, attempt, SlotState::Failed(format!("model {}@{}: {}", model.name, model.version, chain(&e))));
                        return;
                    }
                    Err(e) => {
                        let why = format!("model {}: {}; retrying in {} s", model.name, chain(&e), backoff.as_secs_f32());
                        tracing::info!(assignment = %key, "cannot start yet: {why}");
                        self.settle(&key, attempt, SlotState::Starting(Some(why)));
                        if let Some(first) = first.take() {
                            let _ = first.send(());
                        }
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(FETCH_BACKOFF_MAX);
                    }
                }
            },
        };
        let limits = InstanceLimits {
            memory_bytes: (spec.resources.memory_mib as usize) << 20,
            batch_deadline: Duration::from_millis(spec.resources.batch_time_ms),
            outputs: spec.outputs.iter().map(|o| o.name.clone()).collect(),
            log_name: key.clone(),
        };
        let handle = self.pool.start(InstanceSpec {
            name: key.clone(),
            module,
            limits,
            config_doc: config_document(&spec),
            model_version: model_version(&spec),
            model,
            restart: RestartPolicy {
                first_backoff: Duration::from_millis(spec.failure_policy.restart_backoff_ms.max(1)),
                max_restarts: spec.failure_policy.max_restarts,
            },
            queue_capacity: INSTANCE_QUEUE,
        });
        let started = StartReport { module: module_source, micros: received.elapsed().as_micros().try_into().unwrap_or(u64::MAX) };
        tracing::info!(assignment = %key, module = %spec.module_ref, generation = spec.generation, from = ?started.module, micros = started.micros, "started");
        let running = SlotState::Running { handle: Arc::new(handle), slots: Arc::new(Semaphore::new(INSTANCE_QUEUE)), started };
        self.settle(&key, attempt, running);
    }

    /// Fetches and prepares the new model file of a running instance, then hands it over
    /// with the configuration, if the assignment has not changed meanwhile. Until then, and
    /// for good if the file cannot be prepared, the instance runs with its previous model.
    async fn rebind(self: Arc<Self>, key: String, spec: AssignmentSpec) {
        let Some((model, artifact)) = model_file(&spec) else { return };
        if let Err(why) = signers::check_model(self.config.trusted_signers.as_deref(), model, artifact) {
            let problem = format!("model {}@{} is not in use: {why}", model.name, model.version);
            tracing::warn!(assignment = %key, "{problem}");
            if let Some(slot) = lock(&self.instances).get_mut(&key).filter(|s| s.spec == spec) {
                slot.model_problem = Some(problem);
            }
            return;
        }
        let mut backoff = Duration::from_millis(500);
        loop {
            let result = self.models.get(&self.client(), model, artifact).await;
            let retry = {
                let mut instances = lock(&self.instances);
                let Some(slot) = instances.get_mut(&key).filter(|s| s.spec == spec) else { return };
                let SlotState::Running { handle, .. } = &slot.state else { return };
                match result {
                    Ok(bound) => {
                        handle.configure(config_document(&spec), model_version(&spec), Some(bound));
                        slot.model_problem = None;
                        false
                    }
                    Err(e) => {
                        let problem = format!("model {}@{} is not in use: {}", model.name, model.version, chain(&e));
                        tracing::warn!(assignment = %key, "{problem}");
                        slot.model_problem = Some(problem);
                        !e.is_permanent()
                    }
                }
            };
            if !retry {
                return;
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(FETCH_BACKOFF_MAX);
        }
    }

    /// Records how a start went, if it is still the slot's current one.
    fn settle(&self, key: &str, attempt: u64, state: SlotState) {
        let running = matches!(state, SlotState::Running { .. });
        let mut instances = lock(&self.instances);
        match instances.get_mut(key) {
            Some(slot) if slot.attempt == attempt => slot.state = state,
            // Superseded: a running instance dropped here stops.
            _ => return,
        }
        if running {
            self.publish_routes(&instances);
        }
    }

    /// Hands the data plane the running instances, and MQTT ingest their input topics. Called
    /// with the instances' table locked, so that two callers cannot install their tables in
    /// the opposite order of the changes they saw.
    fn publish_routes(&self, instances: &BTreeMap<String, Slot>) {
        let routes: Vec<Route> = instances
            .iter()
            .filter_map(|(key, slot)| match &slot.state {
                SlotState::Running { handle, slots, .. } => {
                    Some(Route::new(key, &slot.spec, handle.clone(), slots.clone(), self.dataplane.counters(key)))
                }
                _ => None,
            })
            .collect();
        self.dataplane.set_routes(routes);
        self.topics.send_replace(self.dataplane.input_topics().into_iter().collect());
    }

    /// Every assignment's instance as heartbeats report it.
    pub fn instance_reports(&self) -> Vec<InstanceReport> {
        let instances = lock(&self.instances);
        instances
            .iter()
            .map(|(key, slot)| {
                let counters = self.dataplane.counters(key);
                let mut report = InstanceReport {
                    assignment: key.clone(),
                    generation: slot.spec.generation,
                    module_digest: slot.spec.module_digest.clone(),
                    model_version: slot.spec.model.as_ref().map(|m| m.version.clone()),
                    phase: InstancePhase::Pending,
                    restarts: 0,
                    message: None,
                    batches_ok: 0,
                    batches_failed: 0,
                    reconfigurations: 0,
                    memory_bytes: 0,
                    queue_depth: 0,
                    readings_in: counters.readings_in.get(),
                    bytes_in: counters.bytes_in.get(),
                    bytes_up: counters.bytes_up.get(),
                    readings_dropped: counters.readings_dropped.get(),
                    started: None,
                };
                match &slot.state {
                    SlotState::Starting(message) => {
                        report.message = message.clone().or_else(|| Some("fetching and compiling its module".to_owned()))
                    }
                    SlotState::Failed(message) => {
                        report.phase = InstancePhase::Failed;
                        report.message = Some(message.clone());
                    }
                    SlotState::Running { handle, started, .. } => {
                        report.started = Some(*started);
                        let s = handle.status();
                        report.phase = s.phase;
                        report.restarts = s.restarts;
                        report.message = s.message;
                        report.batches_ok = s.batches_ok;
                        report.batches_failed = s.batches_failed;
                        report.reconfigurations = s.reconfigurations;
                        report.model_version = s.model_version.as_deref().map(str::to_owned);
                        if let Some(problem) = &slot.model_problem {
                            report.message = Some(match report.message {
                                Some(m) => format!("{problem}; {m}"),
                                None => problem.clone(),
                            });
                        }
                        report.memory_bytes = s.memory_bytes;
                        report.queue_depth = s.queue_depth;
                    }
                }
                report
            })
            .collect()
    }
}

/// An error and its causes, on one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
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
    let doc = serde_json::json!({ "config": spec.config, "model": spec.model });
    serde_json::to_vec(&doc).expect("JSON values serialize")
}

/// The Model of an assignment and its file, for an `onnx` Model.
fn model_file(spec: &AssignmentSpec) -> Option<(&AssignedModel, &ModelArtifact)> {
    let model = spec.model.as_ref()?;
    Some((model, model.artifact.as_ref()?))
}

/// The version of the Model in the configuration document, which the instance's cloud
/// records carry.
fn model_version(spec: &AssignmentSpec) -> Option<Arc<str>> {
    spec.model.as_ref().map(|m| Arc::from(m.version.as_str()))
}
