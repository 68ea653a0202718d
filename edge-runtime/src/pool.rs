//! The wasm thread pool and instance supervision.
//!
//! Wasm never runs on the async reactor: a fixed set of OS threads (one per core by default)
//! each own some instances and run every call into them. An instance stays on the thread
//! that started it, so its batches are processed in the order they were queued, without a
//! lock. Async code talks to the pool through [`InstanceHandle`]s and gets answers on
//! oneshot channels.
//!
//! Supervision lives here too: an instance that traps or runs past its deadline is dropped
//! and started again from its `InstancePre` after a backoff that doubles from the failure
//! policy's first delay up to [`MAX_BACKOFF`]. After more consecutive failures than the policy
//! allows it reports [`InstancePhase::CrashLoop`], so the scheduler can move it. A module
//! that cannot load, or a configuration it refuses, is [`InstancePhase::Failed`] until the
//! configuration changes.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use edgeplane_api::node::InstancePhase;
use tokio::sync::oneshot;

use crate::host::{BoundModel, CompiledModule, Emitted, GuestError, Instance, InstanceLimits, WasmHost};

/// A pool thread could not be started.
#[derive(Debug, thiserror::Error)]
#[error("cannot start wasm thread {index}")]
pub struct PoolError {
    index: usize,
    #[source]
    source: std::io::Error,
}

/// The longest wait between restarts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// How an instance is restarted after failures.
#[derive(Debug, Clone, Copy)]
pub struct RestartPolicy {
    pub first_backoff: Duration,
    /// Consecutive failures before the instance reports CrashLoop.
    pub max_restarts: u32,
}

/// Everything needed to (re)start an instance.
#[derive(Debug, Clone)]
pub struct InstanceSpec {
    /// Names the instance in logs and errors (`namespace/assignment`).
    pub name: String,
    pub module: Arc<CompiledModule>,
    pub limits: InstanceLimits,
    /// The configuration document (docs/abi.md) handed to `ep_configure`.
    pub config_doc: Vec<u8>,
    /// The version of the Model in `config_doc`, if any: what the instance's outputs are
    /// stamped with.
    pub model_version: Option<Arc<str>>,
    /// The model file the instance may bind (an `onnx` Model), prepared.
    pub model: Option<Arc<BoundModel>>,
    pub restart: RestartPolicy,
    /// Batches that may wait for the instance; more are refused with [`ProcessError::Busy`].
    pub queue_capacity: usize,
}

/// Why a batch was not processed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ProcessError {
    #[error("instance {0} has {1} batches waiting already")]
    Busy(String, usize),
    #[error("instance {0} is not running: {1}")]
    NotRunning(String, String),
    #[error("instance {0} {1}")]
    Guest(String, GuestError),
    #[error("instance {0} was stopped")]
    Stopped(String),
}

/// A point-in-time view of an instance, for heartbeats and the local status API.
#[derive(Debug, Clone, PartialEq)]
pub struct InstanceStatus {
    pub phase: InstancePhase,
    pub restarts: u32,
    pub consecutive_failures: u32,
    pub message: Option<String>,
    pub batches_ok: u64,
    pub batches_failed: u64,
    pub reconfigurations: u64,
    pub memory_bytes: u64,
    pub queue_depth: u64,
    /// Time spent in the guest processing batches, over the instance's life (restarts
    /// included).
    pub guest_nanos: u64,
    /// The version of the Model the instance runs with now (a refused update leaves the
    /// previous one).
    pub model_version: Option<Arc<str>>,
}

/// What the pool thread and the handles share about one instance.
#[derive(Debug)]
struct Shared {
    status: Mutex<InstanceStatus>,
    queued: AtomicUsize,
}

impl Shared {
    fn update(&self, f: impl FnOnce(&mut InstanceStatus)) {
        // A poisoned lock means a panic while holding it, which the update cannot make worse.
        f(&mut self.status.lock().unwrap_or_else(|p| p.into_inner()));
    }
}

/// A batch's outputs, with the version of the Model the instance processed it with. The
/// worker reads the version with the batch, so it is exact across a reconfiguration.
#[derive(Debug, Clone, PartialEq)]
pub struct Processed {
    pub emitted: Emitted,
    pub model_version: Option<Arc<str>>,
}

type Reply = oneshot::Sender<Result<Processed, ProcessError>>;

enum Job {
    Start { id: u64, spec: InstanceSpec, shared: Arc<Shared> },
    Configure { id: u64, doc: Vec<u8>, model_version: Option<Arc<str>>, model: Option<Arc<BoundModel>> },
    Process { id: u64, batch: Vec<u8>, validated: bool, reply: Reply },
    Stop { id: u64 },
}

/// The pool of threads that run wasm.
#[derive(Debug)]
pub struct WasmPool {
    host: Arc<WasmHost>,
    workers: Vec<mpsc::Sender<Job>>,
    next_id: AtomicU64,
    /// Instances per worker, to place new ones on the least busy thread.
    load: Arc<Vec<AtomicUsize>>,
}

impl WasmPool {
    pub fn new(host: Arc<WasmHost>, threads: usize) -> Result<WasmPool, PoolError> {
        let threads = threads.max(1);
        let load = Arc::new((0..threads).map(|_| AtomicUsize::new(0)).collect::<Vec<_>>());
        let mut workers = Vec::with_capacity(threads);
        for index in 0..threads {
            let (tx, rx) = mpsc::channel();
            let worker = Worker { host: host.clone(), slots: HashMap::new(), load: load.clone(), index };
            std::thread::Builder::new()
                .name(format!("wasm-{index}"))
                .spawn(move || worker.run(rx))
                .map_err(|source| PoolError { index, source })?;
            workers.push(tx);
        }
        Ok(WasmPool { host, workers, next_id: AtomicU64::new(1), load })
    }

    pub fn host(&self) -> &Arc<WasmHost> {
        &self.host
    }

    /// Starts an instance on the least busy thread. It is `Pending` until the thread has
    /// instantiated it; failures show in its status, never here.
    pub fn start(&self, spec: InstanceSpec) -> InstanceHandle {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let worker = (0..self.workers.len()).min_by_key(|&i| self.load[i].load(Ordering::Relaxed)).unwrap_or(0);
        self.load[worker].fetch_add(1, Ordering::Relaxed);
        let shared = Arc::new(Shared {
            status: Mutex::new(InstanceStatus {
                phase: InstancePhase::Pending,
                restarts: 0,
                consecutive_failures: 0,
                message: None,
                batches_ok: 0,
                batches_failed: 0,
                reconfigurations: 0,
                memory_bytes: 0,
                queue_depth: 0,
                guest_nanos: 0,
                model_version: spec.model_version.clone(),
            }),
            queued: AtomicUsize::new(0),
        });
        let name = spec.name.clone();
        let capacity = spec.queue_capacity;
        let sender = self.workers[worker].clone();
        // The worker outlives every handle (it only stops when the pool is dropped and all
        // senders are gone), so a failed send cannot happen while a handle exists.
        let _ = sender.send(Job::Start { id, spec, shared: shared.clone() });
        InstanceHandle { id, name, capacity, sender, shared }
    }
}

/// The async side's grip on one instance. Dropping it stops the instance.
#[derive(Debug)]
pub struct InstanceHandle {
    id: u64,
    name: String,
    capacity: usize,
    sender: mpsc::Sender<Job>,
    shared: Arc<Shared>,
}

impl InstanceHandle {
    /// Queues a batch, which the instance checks; the answer arrives on the returned channel
    /// once the instance has processed it. Refused at once when the instance's queue is full.
    pub fn process(&self, batch: Vec<u8>) -> Result<oneshot::Receiver<Result<Processed, ProcessError>>, ProcessError> {
        self.queue(batch, false)
    }

    /// [`InstanceHandle::process`] for a batch that passed `validate_batch`
    /// ([`Instance::process_validated`](crate::host::Instance::process_validated)).
    pub fn process_validated(&self, batch: Vec<u8>) -> Result<oneshot::Receiver<Result<Processed, ProcessError>>, ProcessError> {
        self.queue(batch, true)
    }

    fn queue(&self, batch: Vec<u8>, validated: bool) -> Result<oneshot::Receiver<Result<Processed, ProcessError>>, ProcessError> {
        let queued = self.shared.queued.fetch_add(1, Ordering::AcqRel);
        if queued >= self.capacity {
            self.shared.queued.fetch_sub(1, Ordering::AcqRel);
            return Err(ProcessError::Busy(self.name.clone(), queued));
        }
        let (reply, answer) = oneshot::channel();
        if self.sender.send(Job::Process { id: self.id, batch, validated, reply }).is_err() {
            self.shared.queued.fetch_sub(1, Ordering::AcqRel);
            return Err(ProcessError::Stopped(self.name.clone()));
        }
        Ok(answer)
    }

    /// Processes a batch and waits for the result.
    pub async fn process_wait(&self, batch: Vec<u8>) -> Result<Processed, ProcessError> {
        self.answer(self.process(batch)?).await
    }

    /// Processes a batch that passed `validate_batch` and waits for the result.
    pub async fn process_validated_wait(&self, batch: Vec<u8>) -> Result<Processed, ProcessError> {
        self.answer(self.process_validated(batch)?).await
    }

    async fn answer(&self, answer: oneshot::Receiver<Result<Processed, ProcessError>>) -> Result<Processed, ProcessError> {
        answer.await.unwrap_or_else(|_| Err(ProcessError::Stopped(self.name.clone())))
    }

    /// Hands the running instance a new configuration document (with the version of the Model
    /// in it) and the model file it may bind, without restarting it. An instance that had
    /// refused its configuration is started again with this one; a running instance that
    /// refuses it keeps its previous configuration and model.
    pub fn configure(&self, doc: Vec<u8>, model_version: Option<Arc<str>>, model: Option<Arc<BoundModel>>) {
        let _ = self.sender.send(Job::Configure { id: self.id, doc, model_version, model });
    }

    pub fn status(&self) -> InstanceStatus {
        let mut status = self.shared.status.lock().unwrap_or_else(|p| p.into_inner()).clone();
        status.queue_depth = self.shared.queued.load(Ordering::Relaxed) as u64;
        status
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for InstanceHandle {
    fn drop(&mut self) {
        let _ = self.sender.send(Job::Stop { id: self.id });
    }
}

/// One pool thread and the instances it owns.
struct Worker {
    host: Arc<WasmHost>,
    slots: HashMap<u64, Slot>,
    load: Arc<Vec<AtomicUsize>>,
    index: usize,
}

struct Slot {
    spec: InstanceSpec,
    shared: Arc<Shared>,
    instance: Option<Instance>,
    /// When a failed instance is due to be started again.
    restart_at: Option<Instant>,
    consecutive_failures: u32,
}

impl Worker {
    fn run(mut self, jobs: mpsc::Receiver<Job>) {
        loop {
            let job = match self.next_restart() {
                Some(at) => match jobs.recv_timeout(at.saturating_duration_since(Instant::now())) {
                    Ok(job) => Some(job),
                    Err(mpsc::RecvTimeoutError::Timeout) => None,
                    Err(mpsc::RecvTimeoutError::Disconnected) => return,
                },
                None => match jobs.recv() {
                    Ok(job) => Some(job),
                    Err(_) => return,
                },
            };
            if let Some(job) = job {
                self.handle(job);
            }
            self.restart_due(Instant::now());
        }
    }

    fn next_restart(&self) -> Option<Instant> {
        self.slots.values().filter_map(|s| s.restart_at).min()
    }

    fn handle(&mut self, job: Job) {
        match job {
            Job::Start { id, spec, shared } => {
                let mut slot = Slot { spec, shared, instance: None, restart_at: None, consecutive_failures: 0 };
                slot.start(&self.host);
                self.slots.insert(id, slot);
            }
            Job::Configure { id, doc, model_version, model } => {
                let Some(slot) = self.slots.get_mut(&id) else { return };
                let previous = (
                    std::mem::replace(&mut slot.spec.config_doc, doc),
                    std::mem::replace(&mut slot.spec.model_version, model_version),
                    std::mem::replace(&mut slot.spec.model, model),
                );
                match slot.instance.as_mut() {
                    Some(instance) => match instance.configure(&slot.spec.config_doc, slot.spec.model.clone()) {
                        Ok(()) => slot.shared.update(|s| {
                            s.reconfigurations += 1;
                            s.model_version = slot.spec.model_version.clone();
                            if s.phase == InstancePhase::Running {
                                s.message = None;
                            }
                        }),
                        // Refused (a model whose inputs do not fit the workload, say): the
                        // instance is unharmed and goes on as it was, which is also what it
                        // restarts with; its status says why.
                        Err(e @ GuestError::Returned { .. }) => {
                            tracing::warn!(instance = %slot.spec.name, "new configuration refused, keeping the previous one: {e}");
                            let kept = previous.1.as_deref().map(|v| format!(" (model version {v})")).unwrap_or_default();
                            (slot.spec.config_doc, slot.spec.model_version, slot.spec.model) = previous;
                            slot.shared
                                .update(|s| s.message = Some(format!("new configuration refused, running the previous one{kept}: {e}")));
                        }
                        Err(e) => slot.fail(e),
                    },
                    // Failed or backing off: start over with the new configuration now.
                    None => {
                        slot.restart_at = None;
                        slot.start(&self.host);
                    }
                }
            }
            Job::Process { id, batch, validated, reply } => {
                let Some(slot) = self.slots.get_mut(&id) else {
                    let _ = reply.send(Err(ProcessError::Stopped(format!("#{id}"))));
                    return;
                };
                slot.shared.queued.fetch_sub(1, Ordering::AcqRel);
                let Some(instance) = slot.instance.as_mut() else {
                    let why = slot.shared.status.lock().map(|s| s.message.clone()).ok().flatten();
                    let _ = reply.send(Err(ProcessError::NotRunning(slot.spec.name.clone(), why.unwrap_or_else(|| "starting".into()))));
                    return;
                };
                let started = Instant::now();
                let processed = if validated { instance.process_validated(&batch) } else { instance.process(&batch) };
                let guest_nanos = started.elapsed().as_nanos() as u64;
                match processed {
                    Ok(emitted) => {
                        let memory = instance.memory_bytes() as u64;
                        slot.consecutive_failures = 0;
                        slot.shared.update(|s| {
                            s.batches_ok += 1;
                            s.guest_nanos += guest_nanos;
                            s.memory_bytes = memory;
                            s.consecutive_failures = 0;
                        });
                        let _ = reply.send(Ok(Processed { emitted, model_version: slot.spec.model_version.clone() }));
                    }
                    Err(e) => {
                        // Status first, so whoever gets the answer sees the consequence.
                        slot.shared.update(|s| {
                            s.batches_failed += 1;
                            s.guest_nanos += guest_nanos;
                        });
                        let answer = Err(ProcessError::Guest(slot.spec.name.clone(), e.clone()));
                        if e.poisons_instance() {
                            slot.fail(e);
                        } else {
                            slot.shared.update(|s| s.message = Some(e.to_string()));
                        }
                        let _ = reply.send(answer);
                    }
                }
            }
            Job::Stop { id } => {
                if self.slots.remove(&id).is_some() {
                    self.load[self.index].fetch_sub(1, Ordering::Relaxed);
                }
            }
        }
    }

    fn restart_due(&mut self, now: Instant) {
        for slot in self.slots.values_mut().filter(|s| s.restart_at.is_some_and(|at| at <= now)) {
            slot.restart_at = None;
            slot.shared.update(|s| s.restarts += 1);
            slot.start(&self.host);
        }
    }
}

impl Slot {
    fn start(&mut self, host: &WasmHost) {
        match host.instantiate(&self.spec.module, self.spec.limits.clone(), &self.spec.config_doc, self.spec.model.clone()) {
            Ok(instance) => {
                let memory = instance.memory_bytes() as u64;
                self.instance = Some(instance);
                let proven = self.consecutive_failures == 0;
                let version = self.spec.model_version.clone();
                self.shared.update(|s| {
                    s.phase = InstancePhase::Running;
                    s.memory_bytes = memory;
                    s.model_version = version;
                    // Keep the last error visible while the instance is still proving itself.
                    if proven {
                        s.message = None;
                    }
                });
            }
            // A refused configuration will be refused again: wait for a new one.
            Err(e @ GuestError::Returned { .. }) => {
                tracing::warn!(instance = %self.spec.name, "configuration refused: {e}");
                self.instance = None;
                self.restart_at = None;
                self.shared.update(|s| {
                    s.phase = InstancePhase::Failed;
                    s.message = Some(format!("configuration refused: {e}"));
                });
            }
            Err(e) => self.fail(e),
        }
    }

    /// Drops the instance and schedules its restart.
    fn fail(&mut self, error: GuestError) {
        self.instance = None;
        self.consecutive_failures += 1;
        let failures = self.consecutive_failures;
        let backoff = backoff(self.spec.restart.first_backoff, failures);
        self.restart_at = Some(Instant::now() + backoff);
        let crash_loop = failures > self.spec.restart.max_restarts;
        tracing::warn!(instance = %self.spec.name, failures, ?backoff, "instance failed: {error}");
        self.shared.update(|s| {
            s.phase = if crash_loop { InstancePhase::CrashLoop } else { InstancePhase::BackingOff };
            s.consecutive_failures = failures;
            s.message = Some(format!("{error}; restart {failures} in {} ms", backoff.as_millis()));
        });
    }
}

/// The wait before restart number `failures` (1-based): doubling, capped.
pub fn backoff(first: Duration, failures: u32) -> Duration {
    let factor = 1u32.checked_shl(failures.saturating_sub(1)).unwrap_or(u32::MAX);
    first.saturating_mul(factor).min(MAX_BACKOFF)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        let first = Duration::from_millis(100);
        assert_eq!(backoff(first, 1), Duration::from_millis(100));
        assert_eq!(backoff(first, 2), Duration::from_millis(200));
        assert_eq!(backoff(first, 4), Duration::from_millis(800));
        assert_eq!(backoff(first, 40), MAX_BACKOFF);
    }
}
