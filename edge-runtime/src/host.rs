//! The wasm host: wasmtime running guest ABI v1 modules (docs/abi.md).
//!
//! One [`WasmHost`] per process owns the `Engine` (Cranelift, pooling allocator, epoch
//! interruption) and the `Linker` with the `edgeplane` imports. A module is compiled once into
//! a [`CompiledModule`] holding its `InstancePre`, so starting an instance is a pooled-slot
//! instantiation with imports already resolved. Each [`Instance`] has its own `Store` with a
//! memory limit, and every call into the guest runs under an epoch deadline.
//!
//! Everything the guest hands back is untrusted: pointers are bounds-checked against its
//! memory, output names against the instance's declared outputs, and emitted bytes against a
//! per-batch budget. Nothing here blocks on IO; [`crate::pool`] runs these calls on dedicated
//! threads, never on the async reactor.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use edgeplane_inference::{PreparedModel, Tensor, TensorData};

use edgeplane_engine::Target;
use wasmtime::{
    Caller, Engine, InstanceAllocationStrategy, InstancePre, Linker, Memory, Module, ModuleExport, PoolingAllocationConfig,
    ResourceLimiter, Store, Trap, TypedFunc,
};

use crate::precompiled::Artifact;

/// The guest ABI version this host speaks: modules return it from `ep_abi_version`. Minor
/// versions add optional imports (1.1: inference) or exports (1.2: `ep_process_validated`)
/// and do not change it.
pub const ABI_VERSION: i32 = 1;
/// How often the epoch advances: the granularity of per-call deadlines.
pub const EPOCH_TICK: Duration = Duration::from_millis(1);
/// Deadline for instantiation, `ep_abi_version`, `ep_alloc` and `ep_configure`.
const SETUP_DEADLINE: Duration = Duration::from_millis(1_000);
/// A guest log line is cut to this length.
const MAX_LOG_LINE: usize = 4096;
/// What each `emit` costs on top of its bytes, against the per-batch output budget: the
/// host keeps an entry per emit, so calls of zero bytes must not be free (a guest could
/// otherwise grow the host's memory without bound within one batch).
pub const EMIT_OVERHEAD: usize = 64;

/// The largest input tensor a guest may hand to `nn_set_input`, in bytes.
pub const MAX_NN_INPUT_BYTES: usize = 16 << 20;
/// The most elements one output tensor may have for `nn_get_output`.
pub const MAX_NN_OUTPUT_ELEMENTS: usize = 4 << 20;
/// The most dimensions a tensor may have across the ABI.
pub const MAX_NN_RANK: usize = 8;

/// What the `nn_*` imports return (docs/abi.md, "Inference").
pub mod nn_code {
    pub const OK: i32 = 0;
    /// `nn_bind`: the instance has no model of that name.
    pub const NO_MODEL: i32 = -1;
    /// A bad handle, index or rank, or data whose length does not match its dimensions.
    pub const INVALID: i32 = -2;
    /// The model refused the inputs (a shape or type it does not take) or failed to run.
    pub const FAILED: i32 = -3;
    /// `nn_get_output` before a successful `nn_compute` since the inputs last changed.
    pub const NOT_COMPUTED: i32 = -4;
    /// The output does not fit the buffer; its shape was written.
    pub const BUFFER_TOO_SMALL: i32 = -5;
    /// An input or output larger than the host allows.
    pub const TOO_LARGE: i32 = -6;
}

/// The model an instance may bind: the Workload's Model, prepared by the edge for one
/// version. Replaced between batches when the Model changes.
#[derive(Debug, Clone)]
pub struct BoundModel {
    pub name: String,
    pub version: String,
    pub prepared: Arc<dyn PreparedModel>,
    /// Free dimensions (the batch) may be at most this large: the size the model's tensors
    /// were checked at.
    pub max_batch: usize,
}

/// Process-wide limits of the wasm host.
#[derive(Debug, Clone)]
pub struct HostConfig {
    /// Instances that can exist at once (pool slots).
    pub max_instances: u32,
    /// The largest memory limit any instance may be given; above [`MAX_WASM32_MEMORY`] it is
    /// that.
    pub max_instance_memory: usize,
    /// Bytes an instance may emit while processing one batch, each emit counting
    /// [`EMIT_OVERHEAD`] more.
    pub max_output_per_batch: usize,
}

/// All a 32-bit wasm memory can address, and what the pooling allocator reserves for one.
pub const MAX_WASM32_MEMORY: usize = 4 << 30;

impl Default for HostConfig {
    fn default() -> Self {
        HostConfig { max_instances: 128, max_instance_memory: 256 << 20, max_output_per_batch: 8 << 20 }
    }
}

/// Why the wasm host could not start.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error("cannot create the wasm engine: {0}")]
    Engine(String),
    #[error("cannot define the host function {name}: {why}")]
    HostFunction { name: &'static str, why: String },
    #[error("cannot start the epoch thread")]
    Thread(#[source] std::io::Error),
    #[error("cannot tell what this machine compiles for: {0}")]
    Target(String),
}

/// Why a module could not be loaded; permanent for that module (restarting will not help).
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("module does not compile: {0}")]
    Compile(String),
    #[error("module cannot be linked: {0}")]
    Link(String),
    #[error("the precompiled module does not load here: {0}")]
    Precompiled(String),
}

/// Why a call into an instance failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum GuestError {
    /// Ran past its per-call deadline and was stopped.
    #[error("ran past its {0:?} deadline and was stopped")]
    DeadlineExceeded(Duration),
    /// Trapped; `memory_limit_hit` says whether it had been refused memory first.
    #[error("trapped: {message}{}", if *.memory_limit_hit { " (after its memory limit refused a grow)" } else { "" })]
    Trap { message: String, memory_limit_hit: bool },
    /// Broke the ABI: a missing export, a bad pointer, a wrong version.
    #[error("broke the guest ABI: {0}")]
    Abi(String),
    /// `ep_alloc` returned 0 for a buffer of this size.
    #[error("could not allocate {0} bytes for its input")]
    OutOfMemory(usize),
    /// `ep_process` or `ep_configure` returned an error code.
    #[error("returned error code {code}{}", detail.as_deref().map(|d| format!(": {d}")).unwrap_or_default())]
    Returned { code: i32, detail: Option<String> },
}

impl GuestError {
    /// Whether the instance's state can no longer be trusted and it must be replaced: anything
    /// that stopped it mid-call. An error code returned normally leaves it consistent.
    pub fn poisons_instance(&self) -> bool {
        !matches!(self, GuestError::Returned { .. })
    }
}

/// The process-wide wasm engine and the host functions.
pub struct WasmHost {
    engine: Engine,
    /// What `engine` compiles for, and its fingerprint: what the orchestrators must match to
    /// compile modules for this node ahead of time.
    target: Target,
    fingerprint: String,
    linker: Linker<InstanceState>,
    config: HostConfig,
    ticker_stop: Arc<AtomicBool>,
}

impl std::fmt::Debug for WasmHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WasmHost").field("config", &self.config).finish_non_exhaustive()
    }
}

impl WasmHost {
    pub fn new(config: HostConfig) -> Result<WasmHost, HostError> {
        let mut pool = PoolingAllocationConfig::new();
        pool.total_core_instances(config.max_instances)
            .total_memories(config.max_instances)
            .total_tables(config.max_instances)
            .max_memory_size(config.max_instance_memory.min(MAX_WASM32_MEMORY))
            // Keep a few slots' pages warm so a restart does not page in from scratch.
            .max_unused_warm_slots(config.max_instances.min(16));
        // What shapes the code is shared with the orchestrators; the rest is this node's own.
        let mut wasm = edgeplane_engine::code_config();
        wasm.allocation_strategy(InstanceAllocationStrategy::Pooling(pool)).max_wasm_stack(512 << 10);
        let engine = Engine::new(&wasm).map_err(|e| HostError::Engine(format!("{e:#}")))?;
        let target = Target::host().map_err(|e| HostError::Target(e.to_string()))?;
        let fingerprint = edgeplane_engine::fingerprint(&engine);
        let linker = host_functions(&engine)?;
        let ticker_stop = Arc::new(AtomicBool::new(false));
        spawn_epoch_ticker(engine.clone(), ticker_stop.clone())?;
        Ok(WasmHost { engine, target, fingerprint, linker, config, ticker_stop })
    }

    pub fn config(&self) -> &HostConfig {
        &self.config
    }

    /// What this node's engine compiles for, and the fingerprint of its settings.
    pub fn target(&self) -> (&Target, &str) {
        (&self.target, &self.fingerprint)
    }

    /// Compiles a module and resolves its imports. Done once per module digest.
    pub fn load(&self, bytes: &[u8]) -> Result<CompiledModule, LoadError> {
        let module = Module::new(&self.engine, bytes).map_err(|e| LoadError::Compile(format!("{e:#}")))?;
        self.prepare(module)
    }

    /// Loads a module an orchestrator compiled for this node's target, without compiling.
    pub fn load_precompiled(&self, artifact: &Artifact) -> Result<CompiledModule, LoadError> {
        let module = crate::precompiled::deserialize(&self.engine, artifact).map_err(|e| LoadError::Precompiled(format!("{e:#}")))?;
        self.prepare(module)
    }

    fn prepare(&self, module: Module) -> Result<CompiledModule, LoadError> {
        let pre = self.linker.instantiate_pre(&module).map_err(|e| LoadError::Link(format!("{e:#}")))?;
        let required = |name: &str, kind: &str| {
            module
                .get_export_index(name)
                .ok_or_else(|| LoadError::Link(format!("the module exports no {kind} `{name}` (required by guest ABI v1)")))
        };
        // Resolved once here: an instantiation then finds its exports by index, not by name.
        let exports = AbiExports {
            memory: required("memory", "memory")?,
            abi_version: required("ep_abi_version", "function")?,
            alloc: required("ep_alloc", "function")?,
            process: required("ep_process", "function")?,
            configure: module.get_export_index("ep_configure"),
            process_validated: module.get_export_index("ep_process_validated"),
        };
        Ok(CompiledModule { pre, exports: Arc::new(exports) })
    }

    /// Starts an instance: instantiate, check the ABI version, hand it its configuration.
    pub fn instantiate(
        &self,
        module: &CompiledModule,
        limits: InstanceLimits,
        config_doc: &[u8],
        model: Option<Arc<BoundModel>>,
    ) -> Result<Instance, GuestError> {
        let mut instance = self.instantiate_bare(module, limits)?;
        instance.check_abi_version()?;
        instance.configure(config_doc, model)?;
        Ok(instance)
    }

    /// Instantiates without calling into the guest: the part the pooling allocator and
    /// `InstancePre` make cheap (what `wasm_instantiate_us_p50` measures).
    pub fn instantiate_bare(&self, module: &CompiledModule, limits: InstanceLimits) -> Result<Instance, GuestError> {
        let state = InstanceState {
            limiter: MemoryLimiter { limit: limits.memory_bytes, refused: false },
            outputs: limits.outputs,
            emitted: Vec::new(),
            output_budget: self.config.max_output_per_batch,
            output_used: 0,
            log_target: limits.log_name,
            last_error: None,
            model: None,
            inference: Inference::default(),
            call_deadline: None,
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limiter);
        store.epoch_deadline_trap();
        store.set_epoch_deadline(ticks(SETUP_DEADLINE));
        let instance = module.pre.instantiate(&mut store).map_err(|e| classify(&store, e, SETUP_DEADLINE))?;
        let exports = &module.exports;
        let memory = instance
            .get_module_export(&mut store, &exports.memory)
            .and_then(wasmtime::Extern::into_memory)
            .ok_or_else(|| GuestError::Abi("`memory` is not a memory".into()))?;
        let abi_version = typed(&instance, &mut store, &exports.abi_version, "ep_abi_version")?;
        let alloc = typed(&instance, &mut store, &exports.alloc, "ep_alloc")?;
        let process = typed(&instance, &mut store, &exports.process, "ep_process")?;
        let configure = match &exports.configure {
            Some(export) => Some(typed(&instance, &mut store, export, "ep_configure")?),
            None => None,
        };
        let process_validated = match &exports.process_validated {
            Some(export) => Some(typed(&instance, &mut store, export, "ep_process_validated")?),
            None => None,
        };
        Ok(Instance { store, memory, abi_version, alloc, process, process_validated, configure, batch_deadline: limits.batch_deadline })
    }
}

impl Drop for WasmHost {
    fn drop(&mut self) {
        self.ticker_stop.store(true, Ordering::Relaxed);
    }
}

/// A compiled module with its imports resolved, ready to instantiate many times.
#[derive(Clone)]
pub struct CompiledModule {
    pre: InstancePre<InstanceState>,
    exports: Arc<AbiExports>,
}

/// Where the module's ABI exports are, found once per module.
struct AbiExports {
    memory: ModuleExport,
    abi_version: ModuleExport,
    alloc: ModuleExport,
    process: ModuleExport,
    configure: Option<ModuleExport>,
    /// ABI 1.2: `ep_process` for batches the host has validated.
    process_validated: Option<ModuleExport>,
}

impl std::fmt::Debug for CompiledModule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompiledModule")
            .field("has_configure", &self.exports.configure.is_some())
            .field("has_process_validated", &self.exports.process_validated.is_some())
            .finish_non_exhaustive()
    }
}

impl CompiledModule {
    /// Whether the module exports `ep_process_validated` (ABI 1.2), where
    /// [`Instance::process_validated`] hands it batches it need not check.
    pub fn takes_validated_batches(&self) -> bool {
        self.exports.process_validated.is_some()
    }
}

/// What one instance may use, and what it may emit on.
#[derive(Debug, Clone)]
pub struct InstanceLimits {
    pub memory_bytes: usize,
    pub batch_deadline: Duration,
    /// The output names the instance may emit on (its Workload's `spec.outputs`).
    pub outputs: Vec<String>,
    /// Names the instance in the guest's log lines.
    pub log_name: String,
}

/// What an instance emitted while processing one batch: `(output index, bytes)` in emission
/// order, the index into [`InstanceLimits::outputs`].
pub type Emitted = Vec<(usize, Vec<u8>)>;

/// A running instance. Not `Sync`: it lives on one pool thread at a time.
pub struct Instance {
    store: Store<InstanceState>,
    memory: Memory,
    abi_version: TypedFunc<(), i32>,
    alloc: TypedFunc<i32, i32>,
    process: TypedFunc<(i32, i32), i32>,
    process_validated: Option<TypedFunc<(i32, i32), i32>>,
    configure: Option<TypedFunc<(i32, i32), i32>>,
    batch_deadline: Duration,
}

impl std::fmt::Debug for Instance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Instance").field("batch_deadline", &self.batch_deadline).finish_non_exhaustive()
    }
}

impl Instance {
    fn check_abi_version(&mut self) -> Result<(), GuestError> {
        self.store.set_epoch_deadline(ticks(SETUP_DEADLINE));
        let version = self.abi_version.call(&mut self.store, ()).map_err(|e| classify(&self.store, e, SETUP_DEADLINE))?;
        if version != ABI_VERSION {
            return Err(GuestError::Abi(format!("ep_abi_version returned {version}; this host speaks {ABI_VERSION}")));
        }
        Ok(())
    }

    /// Hands the instance a new configuration document (docs/abi.md) and the model it may
    /// bind, without restarting it. A module without `ep_configure` takes no document. If the
    /// guest refuses the document, the instance keeps its previous model.
    pub fn configure(&mut self, doc: &[u8], model: Option<Arc<BoundModel>>) -> Result<(), GuestError> {
        let previous = std::mem::replace(&mut self.store.data_mut().model, model);
        self.store.data_mut().inference.model_changed();
        let Some(configure) = self.configure.clone() else { return Ok(()) };
        let result = self.call_configure(&configure, doc);
        if matches!(result, Err(GuestError::Returned { .. })) {
            self.store.data_mut().model = previous;
            self.store.data_mut().inference.model_changed();
        }
        result
    }

    fn call_configure(&mut self, configure: &TypedFunc<(i32, i32), i32>, doc: &[u8]) -> Result<(), GuestError> {
        let ptr = self.write_input(doc, SETUP_DEADLINE)?;
        self.store.data_mut().begin_call(SETUP_DEADLINE);
        self.store.set_epoch_deadline(ticks(SETUP_DEADLINE));
        let code = configure.call(&mut self.store, (ptr, doc.len() as i32)).map_err(|e| classify(&self.store, e, SETUP_DEADLINE))?;
        self.store.data_mut().emitted.clear();
        if code != 0 {
            // The SDK logs why at level 0 before it returns: say it with the refusal.
            let why = self.store.data_mut().last_error.take().map(|e| format!(": {e}")).unwrap_or_default();
            return Err(GuestError::Returned { code, detail: Some(format!("ep_configure refused the configuration{why}")) });
        }
        Ok(())
    }

    /// Processes one batch (ABI v1 batch format) under the instance's deadline and returns
    /// what it emitted. On error nothing it emitted during this batch is returned. The guest
    /// checks the batch: it may be anything.
    pub fn process(&mut self, batch: &[u8]) -> Result<Emitted, GuestError> {
        self.call_process(batch, false)
    }

    /// [`Instance::process`] for a batch that passed
    /// [`validate_batch`](edgeplane_api::data::validate_batch): a module that exports
    /// `ep_process_validated` (ABI 1.2) gets it there and need not check it again, which for
    /// a simple filter is half its work. Other modules get it through `ep_process`.
    pub fn process_validated(&mut self, batch: &[u8]) -> Result<Emitted, GuestError> {
        debug_assert!(edgeplane_api::data::validate_batch(batch).is_ok(), "process_validated with a batch that is not valid");
        self.call_process(batch, true)
    }

    fn call_process(&mut self, batch: &[u8], validated: bool) -> Result<Emitted, GuestError> {
        let deadline = self.batch_deadline;
        let ptr = self.write_input(batch, deadline)?;
        self.store.data_mut().begin_call(deadline);
        self.store.set_epoch_deadline(ticks(deadline));
        let export = match &self.process_validated {
            Some(process_validated) if validated => process_validated,
            _ => &self.process,
        };
        let code = export.call(&mut self.store, (ptr, batch.len() as i32)).map_err(|e| classify(&self.store, e, deadline))?;
        let emitted = std::mem::take(&mut self.store.data_mut().emitted);
        match code {
            0 => Ok(emitted),
            code => {
                let detail = (self.store.data().output_used > self.store.data().output_budget)
                    .then(|| format!("emitted more than the {} bytes allowed per batch", self.store.data().output_budget));
                Err(GuestError::Returned { code, detail })
            }
        }
    }

    /// Bytes of linear memory the instance has now.
    pub fn memory_bytes(&self) -> usize {
        self.memory.data_size(&self.store)
    }

    /// Asks the guest for a buffer and copies `bytes` into it.
    fn write_input(&mut self, bytes: &[u8], deadline: Duration) -> Result<i32, GuestError> {
        let len = i32::try_from(bytes.len()).map_err(|_| GuestError::Abi(format!("input of {} bytes is over 2 GiB", bytes.len())))?;
        self.store.set_epoch_deadline(ticks(deadline));
        let ptr = self.alloc.call(&mut self.store, len).map_err(|e| classify(&self.store, e, deadline))?;
        if ptr == 0 {
            return Err(GuestError::OutOfMemory(bytes.len()));
        }
        let target = guest_range(ptr, len, self.memory.data_size(&self.store))
            .ok_or_else(|| GuestError::Abi(format!("ep_alloc({len}) returned {ptr:#x}, outside its memory")))?;
        self.memory.data_mut(&mut self.store)[target].copy_from_slice(bytes);
        Ok(ptr)
    }
}

/// Per-instance host state, reachable from the host functions.
struct InstanceState {
    limiter: MemoryLimiter,
    outputs: Vec<String>,
    emitted: Emitted,
    output_budget: usize,
    output_used: usize,
    log_target: String,
    /// The last error the guest logged (level 0) during the current call.
    last_error: Option<String>,
    /// The model `nn_bind` binds, if the instance has one.
    model: Option<Arc<BoundModel>>,
    inference: Inference,
    /// When the current call into the guest must end. Epoch interruption stops guest code;
    /// inference runs in the host, which checks this instead.
    call_deadline: Option<Instant>,
}

impl InstanceState {
    fn begin_call(&mut self, deadline: Duration) {
        self.emitted.clear();
        self.output_used = 0;
        self.last_error = None;
        self.call_deadline = Some(Instant::now() + deadline);
    }

    /// A trap that classifies as [`GuestError::DeadlineExceeded`] if the call's time is up.
    fn check_deadline(&self) -> wasmtime::Result<()> {
        match self.call_deadline {
            Some(deadline) if Instant::now() >= deadline => Err(wasmtime::Error::new(Trap::Interrupt)),
            _ => Ok(()),
        }
    }
}

/// What the guest has set up with the `nn_*` imports: whether it bound the model, its inputs,
/// and the outputs of its last compute.
#[derive(Default)]
struct Inference {
    bound: bool,
    inputs: Vec<Option<Tensor>>,
    outputs: Option<Vec<Tensor>>,
}

impl Inference {
    /// A new model (between batches): the binding holds, as a handle stays valid across
    /// Model updates; the tensors of the old model do not.
    fn model_changed(&mut self) {
        self.inputs.clear();
        self.outputs = None;
    }
}

/// The instance's memory limit, remembering whether it refused a grow (so that the trap that
/// usually follows can be explained).
struct MemoryLimiter {
    limit: usize,
    refused: bool,
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(&mut self, _current: usize, desired: usize, maximum: Option<usize>) -> wasmtime::Result<bool> {
        let allowed = desired <= self.limit && maximum.is_none_or(|max| desired <= max);
        self.refused |= !allowed;
        Ok(allowed)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        // Tables hold function references; a guest has no business growing one past this.
        Ok(desired <= 100_000)
    }
}

fn host_functions(engine: &Engine) -> Result<Linker<InstanceState>, HostError> {
    let mut linker = Linker::new(engine);
    let define = |name: &'static str| move |e: wasmtime::Error| HostError::HostFunction { name, why: format!("{e:#}") };
    linker
        .func_wrap(
            "edgeplane",
            "emit",
            |mut caller: Caller<'_, InstanceState>, name_ptr: i32, name_len: i32, data_ptr: i32, data_len: i32| -> wasmtime::Result<i32> {
                let memory = caller_memory(&mut caller)?;
                let (data, state) = memory.data_and_store_mut(&mut caller);
                let name = guest_slice(data, name_ptr, name_len, "emit: output name")?;
                let Some(output) = state.outputs.iter().position(|o| o.as_bytes() == name) else {
                    return Ok(-1);
                };
                let bytes = guest_slice(data, data_ptr, data_len, "emit: data")?;
                let cost = bytes.len().saturating_add(EMIT_OVERHEAD);
                if state.output_used.saturating_add(cost) > state.output_budget {
                    // Refused and remembered: the batch's answer says the budget was exceeded.
                    state.output_used = state.output_budget.saturating_add(1);
                    return Ok(-2);
                }
                state.output_used += cost;
                state.emitted.push((output, bytes.to_vec()));
                Ok(0)
            },
        )
        .map_err(define("emit"))?;
    linker
        .func_wrap("edgeplane", "log", |mut caller: Caller<'_, InstanceState>, level: i32, ptr: i32, len: i32| -> wasmtime::Result<()> {
            let memory = caller_memory(&mut caller)?;
            let (data, state) = memory.data_and_store_mut(&mut caller);
            let line = guest_slice(data, ptr, len, "log: line")?;
            let line = String::from_utf8_lossy(&line[..line.len().min(MAX_LOG_LINE)]);
            let instance = state.log_target.as_str();
            if level == 0 {
                state.last_error = Some(line.clone().into_owned());
            }
            match level {
                0 => tracing::error!(target: "guest", %instance, "{line}"),
                1 => tracing::warn!(target: "guest", %instance, "{line}"),
                2 => tracing::info!(target: "guest", %instance, "{line}"),
                _ => tracing::debug!(target: "guest", %instance, "{line}"),
            }
            Ok(())
        })
        .map_err(define("log"))?;
    linker
        .func_wrap("edgeplane", "now_ms", || -> i64 {
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
        })
        .map_err(define("now_ms"))?;
    define_inference(&mut linker).map_err(|(name, e)| HostError::HostFunction { name, why: format!("{e:#}") })?;
    Ok(linker)
}

/// The inference imports (ABI v1.1, docs/abi.md "Inference"), modelled on wasi-nn: bind the
/// instance's model by name, set input tensors, compute, read outputs. Tensors cross as
/// little-endian `f32` with `u32` dimensions; the host converts to and from the types the
/// model declares. Every failure is a code the guest can handle, except running past the
/// batch deadline, which stops the instance like a guest loop would.
fn define_inference(linker: &mut Linker<InstanceState>) -> Result<(), (&'static str, wasmtime::Error)> {
    linker
        .func_wrap("edgeplane", "nn_bind", |mut caller: Caller<'_, InstanceState>, name_ptr: i32, name_len: i32| -> wasmtime::Result<i32> {
            let memory = caller_memory(&mut caller)?;
            let (data, state) = memory.data_and_store_mut(&mut caller);
            let name = guest_slice(data, name_ptr, name_len, "nn_bind: model name")?;
            let Some(model) = state.model.as_ref() else { return Ok(nn_code::NO_MODEL) };
            if model.name.as_bytes() != name {
                return Ok(nn_code::NO_MODEL);
            }
            let inputs = model.prepared.signature().inputs.len();
            state.inference = Inference { bound: true, inputs: vec![None; inputs], outputs: None };
            // One model per instance: its handle is 0.
            Ok(0)
        })
        .map_err(|e| ("nn_bind", e))?;
    linker
        .func_wrap(
            "edgeplane",
            "nn_set_input",
            |mut caller: Caller<'_, InstanceState>,
             handle: i32,
             index: i32,
             dims_ptr: i32,
             rank: i32,
             data_ptr: i32,
             data_len: i32|
             -> wasmtime::Result<i32> {
                let memory = caller_memory(&mut caller)?;
                let (data, state) = memory.data_and_store_mut(&mut caller);
                let (Some(model), true) = (state.model.clone(), handle == 0 && state.inference.bound) else {
                    return Ok(nn_code::INVALID);
                };
                let Some(spec) = usize::try_from(index).ok().and_then(|i| model.prepared.signature().inputs.get(i)) else {
                    return Ok(nn_code::INVALID);
                };
                if !(0..=MAX_NN_RANK as i32).contains(&rank) {
                    return Ok(nn_code::INVALID);
                }
                let dims = guest_slice(data, dims_ptr, rank * 4, "nn_set_input: dimensions")?;
                let shape: Vec<usize> = dims.chunks_exact(4).map(|d| u32::from_le_bytes([d[0], d[1], d[2], d[3]]) as usize).collect();
                if data_len < 0 || data_len as usize > MAX_NN_INPUT_BYTES {
                    return Ok(nn_code::TOO_LARGE);
                }
                let elements = shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d));
                if elements.and_then(|n| n.checked_mul(4)) != Some(data_len as usize) {
                    return Ok(nn_code::INVALID);
                }
                // Free dimensions were checked at this size when the model was prepared.
                let free_ok = match &spec.shape {
                    Some(declared) => {
                        declared.iter().zip(&shape).all(|(d, &n)| matches!(d, edgeplane_inference::Dim::Fixed(_)) || n <= model.max_batch)
                    }
                    None => shape.iter().all(|&n| n <= model.max_batch),
                };
                if !free_ok {
                    return Ok(nn_code::TOO_LARGE);
                }
                if !spec.accepts_shape(&shape) {
                    return Ok(nn_code::FAILED);
                }
                let bytes = guest_slice(data, data_ptr, data_len, "nn_set_input: data")?;
                let values: Vec<f32> = bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
                let Some(data) = TensorData::from_f32(values, spec.elem_type) else { return Ok(nn_code::FAILED) };
                let count = model.prepared.signature().inputs.len();
                state.inference.inputs.resize(count, None);
                state.inference.inputs[index as usize] = Some(Tensor { shape, data });
                state.inference.outputs = None;
                Ok(nn_code::OK)
            },
        )
        .map_err(|e| ("nn_set_input", e))?;
    linker
        .func_wrap("edgeplane", "nn_compute", |mut caller: Caller<'_, InstanceState>, handle: i32| -> wasmtime::Result<i32> {
            let state = caller.data_mut();
            let (Some(model), true) = (state.model.clone(), handle == 0 && state.inference.bound) else {
                return Ok(nn_code::INVALID);
            };
            let wanted = model.prepared.signature().inputs.len();
            let inputs = state.inference.inputs.iter().cloned().collect::<Option<Vec<_>>>();
            let Some(inputs) = inputs.filter(|i| i.len() == wanted) else { return Ok(nn_code::INVALID) };
            state.check_deadline()?;
            let result = model.prepared.run(inputs);
            // Inference counts against the batch's time like guest code does.
            state.check_deadline()?;
            match result {
                Ok(outputs) => {
                    state.inference.outputs = Some(outputs);
                    Ok(nn_code::OK)
                }
                Err(e) => {
                    tracing::debug!(target: "guest", instance = %state.log_target, "nn_compute: {e}");
                    Ok(nn_code::FAILED)
                }
            }
        })
        .map_err(|e| ("nn_compute", e))?;
    linker
        .func_wrap(
            "edgeplane",
            "nn_get_output",
            |mut caller: Caller<'_, InstanceState>,
             handle: i32,
             index: i32,
             shape_ptr: i32,
             max_rank: i32,
             data_ptr: i32,
             data_cap: i32|
             -> wasmtime::Result<i32> {
                let memory = caller_memory(&mut caller)?;
                let (data, state) = memory.data_and_store_mut(&mut caller);
                if handle != 0 || !state.inference.bound || !(0..=MAX_NN_RANK as i32).contains(&max_rank) {
                    return Ok(nn_code::INVALID);
                }
                let Some(outputs) = state.inference.outputs.as_ref() else { return Ok(nn_code::NOT_COMPUTED) };
                let Some(output) = usize::try_from(index).ok().and_then(|i| outputs.get(i)) else {
                    return Ok(nn_code::INVALID);
                };
                if output.data.len() > MAX_NN_OUTPUT_ELEMENTS {
                    return Ok(nn_code::TOO_LARGE);
                }
                // The shape first (rank, then each dimension), so a guest whose buffer is too
                // small learns how large it must be.
                let rank = output.shape.len();
                if rank > max_rank as usize {
                    return Ok(nn_code::BUFFER_TOO_SMALL);
                }
                let shape_range = guest_range(shape_ptr, (1 + max_rank) * 4, data.len())
                    .ok_or_else(|| wasmtime::Error::msg("nn_get_output: shape buffer is outside the guest's memory"))?;
                let mut shape_bytes = Vec::with_capacity((1 + rank) * 4);
                shape_bytes.extend_from_slice(&(rank as u32).to_le_bytes());
                for &d in &output.shape {
                    shape_bytes.extend_from_slice(&(d.min(u32::MAX as usize) as u32).to_le_bytes());
                }
                data[shape_range.start..shape_range.start + shape_bytes.len()].copy_from_slice(&shape_bytes);
                let values = output.data.to_f32();
                let needed = values.len() * 4;
                if data_cap < 0 || (data_cap as usize) < needed {
                    return Ok(nn_code::BUFFER_TOO_SMALL);
                }
                let target = guest_range(data_ptr, needed as i32, data.len())
                    .ok_or_else(|| wasmtime::Error::msg("nn_get_output: data buffer is outside the guest's memory"))?;
                for (chunk, v) in data[target].chunks_exact_mut(4).zip(&values) {
                    chunk.copy_from_slice(&v.to_le_bytes());
                }
                Ok(values.len() as i32)
            },
        )
        .map_err(|e| ("nn_get_output", e))?;
    Ok(())
}

fn caller_memory(caller: &mut Caller<'_, InstanceState>) -> wasmtime::Result<Memory> {
    caller
        .get_export("memory")
        .and_then(|e| e.into_memory())
        .ok_or_else(|| wasmtime::Error::msg("the module exports no memory named `memory`"))
}

/// The guest's `ptr..ptr+len`, or a trap naming what was out of bounds.
fn guest_slice<'a>(memory: &'a [u8], ptr: i32, len: i32, what: &str) -> wasmtime::Result<&'a [u8]> {
    guest_range(ptr, len, memory.len())
        .map(|r| &memory[r])
        .ok_or_else(|| wasmtime::Error::msg(format!("{what} at {ptr:#x}+{len} is outside the guest's {} bytes of memory", memory.len())))
}

fn guest_range(ptr: i32, len: i32, memory_len: usize) -> Option<std::ops::Range<usize>> {
    let start = usize::try_from(ptr).ok()?;
    let end = start.checked_add(usize::try_from(len).ok()?)?;
    (end <= memory_len).then_some(start..end)
}

fn typed<P, R>(
    instance: &wasmtime::Instance,
    store: &mut Store<InstanceState>,
    export: &ModuleExport,
    name: &str,
) -> Result<TypedFunc<P, R>, GuestError>
where
    P: wasmtime::WasmParams,
    R: wasmtime::WasmResults,
{
    let func = instance
        .get_module_export(&mut *store, export)
        .and_then(wasmtime::Extern::into_func)
        .ok_or_else(|| GuestError::Abi(format!("`{name}` is not a function")))?;
    func.typed::<P, R>(&*store).map_err(|e| GuestError::Abi(format!("`{name}` has the wrong type: {e}")))
}

/// Turns a wasmtime error from a guest call into what happened, in the guest's terms.
fn classify(store: &Store<InstanceState>, error: wasmtime::Error, deadline: Duration) -> GuestError {
    let memory_limit_hit = store.data().limiter.refused;
    match error.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => GuestError::DeadlineExceeded(deadline),
        Some(trap) => GuestError::Trap { message: trap.to_string(), memory_limit_hit },
        // A host function refused the call (bad pointer) or instantiation failed.
        None => GuestError::Trap { message: format!("{error:#}"), memory_limit_hit },
    }
}

/// Epoch ticks covering `deadline`, plus one: the tick in progress may be nearly over.
fn ticks(deadline: Duration) -> u64 {
    (deadline.as_micros() / EPOCH_TICK.as_micros()).max(1) as u64 + 1
}

fn spawn_epoch_ticker(engine: Engine, stop: Arc<AtomicBool>) -> Result<(), HostError> {
    std::thread::Builder::new()
        .name("wasm-epoch".into())
        .spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(EPOCH_TICK);
                engine.increment_epoch();
            }
        })
        .map_err(HostError::Thread)?;
    Ok(())
}
