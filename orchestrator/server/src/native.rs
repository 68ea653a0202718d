//! Ahead-of-time compilation: modules compiled in the cloud for the targets edges report, so
//! that an edge loads native code instead of running Cranelift itself.
//!
//! `GET /v1/blobs/{digest}/native?triple=...&features=...&fingerprint=...` answers with the
//! module of that digest compiled for that target (its sha256 in
//! [`ARTIFACT_SHA256_HEADER`]). The orchestrator rebuilds the edge's engine from the target
//! with the settings both share (`edgeplane_engine`) and compiles only if the fingerprints
//! agree; otherwise (another wasmtime, other settings, an architecture this build cannot
//! compile for) it says so and the edge compiles for itself.
//!
//! Each orchestrator keeps what it compiled in `<data-dir>/native/` (recompiled after a loss:
//! compiling is deterministic) and remembers the targets it was asked for (`<fingerprint>.target`
//! there, read again at start); a module pushed later is compiled for those at once, on every
//! orchestrator (they all apply the push), so that the edges it is rolled out to find it
//! ready, and its compiled forms are deleted with its bytes. Compiles run one at a time on a
//! blocking thread; concurrent requests for the same artifact wait for one compile.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use edgeplane_api::node::ARTIFACT_SHA256_HEADER;
use edgeplane_api::{Consistency, StatusReason};
use edgeplane_core::gc::BLOBS;
use edgeplane_core::ObjectKey;
use edgeplane_engine::{Target, TargetError};
use edgeplane_raft::watch::{Change, Next};
use tokio::sync::Semaphore;
use wasmtime::Engine;

use crate::app::AppState;
use crate::http::{cause, only_params, read, ApiError, RawQuery};
use crate::secrets::sha256_digest;

/// How long a request waits for a compile before the edge is told to compile for itself.
const COMPILE_WAIT: Duration = Duration::from_secs(20);
/// The most distinct targets one orchestrator compiles for; more are compiled on demand
/// only (a fleet has a handful: one per CPU generation and architecture).
const MAX_TARGETS: usize = 32;

/// This orchestrator's compiled modules and the targets it compiles them for.
pub struct Precompiler {
    dir: PathBuf,
    /// By fingerprint: the targets edges asked for, with an engine that compiles for each.
    targets: Mutex<BTreeMap<String, (Target, Engine)>>,
    /// One compile per artifact at a time; later requests for it wait and read the file.
    gates: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    compiles: Arc<Semaphore>,
}

impl std::fmt::Debug for Precompiler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Precompiler").field("dir", &self.dir).finish_non_exhaustive()
    }
}

/// Why an artifact could not be had.
#[derive(Debug, thiserror::Error)]
pub enum NativeError {
    #[error(transparent)]
    Target(#[from] TargetError),
    #[error(
        "this orchestrator's engine for {target} has fingerprint {ours}, not {theirs}: it runs another wasmtime or other settings \
         than the node, which compiles the module itself"
    )]
    Fingerprint { target: String, ours: String, theirs: String },
    #[error("the module does not compile for {target}: {why}")]
    Compile { target: String, why: String },
    #[error("compiling took longer than {0:?}; the node compiles the module itself")]
    Busy(Duration),
    #[error("the compiled module cannot be kept: {0}")]
    Io(#[from] std::io::Error),
}

impl Precompiler {
    pub fn new(data_dir: &std::path::Path) -> Precompiler {
        Precompiler {
            dir: data_dir.join("native"),
            targets: Mutex::default(),
            gates: Mutex::default(),
            compiles: Arc::new(Semaphore::new(1)),
        }
    }

    /// The engine for a target an edge reported, if it makes code with the fingerprint the
    /// edge's own engine has; the target is remembered for modules pushed later.
    pub async fn engine_for(&self, target: Target, fingerprint: &str) -> Result<Engine, NativeError> {
        if let Some((_, engine)) = lock(&self.targets).get(fingerprint) {
            return Ok(engine.clone());
        }
        let built = target.clone();
        // Building an engine runs Cranelift's setup: off the reactor.
        let engine = tokio::task::spawn_blocking(move || built.compiling_engine())
            .await
            .map_err(|e| NativeError::Compile { target: target.to_string(), why: e.to_string() })??;
        let ours = edgeplane_engine::fingerprint(&engine);
        if ours != fingerprint {
            return Err(NativeError::Fingerprint { target: target.to_string(), ours, theirs: fingerprint.to_owned() });
        }
        let learned = {
            let mut targets = lock(&self.targets);
            let new = targets.len() < MAX_TARGETS && !targets.contains_key(fingerprint);
            if new {
                targets.insert(fingerprint.to_owned(), (target.clone(), engine.clone()));
            }
            new
        };
        if learned {
            tracing::info!(%target, fingerprint, "compiling modules ahead of time for a new target");
            let (dir, name) = (self.dir.clone(), format!("{fingerprint}.target"));
            let text = format!("{}\n{}\n", target.triple, target.features.join(","));
            let saved = tokio::task::spawn_blocking(move || write_whole(&dir, &name, text.as_bytes())).await;
            if let Ok(Err(e)) = saved {
                tracing::warn!(fingerprint, "cannot remember the target: {e}");
            }
        }
        Ok(engine)
    }

    /// The targets remembered from before a restart whose engines still have the same
    /// fingerprint (not after an upgrade of wasmtime or the settings: edges teach the new ones).
    fn recall(&self) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else { return };
        for entry in entries.flatten() {
            let file = entry.file_name().to_string_lossy().into_owned();
            let Some(fingerprint) = file.strip_suffix(".target") else { continue };
            let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
            let mut lines = text.lines();
            let (triple, features) = (lines.next().unwrap_or_default(), lines.next().unwrap_or_default());
            let features = features.split(',').filter(|f| !f.is_empty()).map(str::to_owned);
            let rebuilt = Target::checked(triple, features).and_then(|t| t.compiling_engine().map(|e| (t, e)));
            match rebuilt {
                Ok((target, engine)) if edgeplane_engine::fingerprint(&engine) == fingerprint => {
                    lock(&self.targets).insert(fingerprint.to_owned(), (target, engine));
                }
                _ => {
                    tracing::info!(fingerprint, "forgetting a target this build compiles differently for");
                    let _ = std::fs::remove_file(entry.path());
                }
            }
        }
    }

    /// Deletes the compiled forms of a module whose bytes are gone.
    fn forget(&self, digest: &str) {
        let prefix = format!("{}.", digest.trim_start_matches("sha256:"));
        let Ok(entries) = std::fs::read_dir(&self.dir) else { return };
        for entry in entries.flatten() {
            if entry.file_name().to_string_lossy().starts_with(&prefix) {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }

    /// The module `digest` (its bytes from `wasm`, called only if it must be compiled)
    /// compiled by `engine`, whose fingerprint is `fingerprint`: from the disk, else compiled
    /// now (and kept).
    pub async fn artifact(
        &self,
        engine: &Engine,
        fingerprint: &str,
        digest: &str,
        wasm: impl std::future::Future<Output = Result<Vec<u8>, ApiError>>,
    ) -> Result<Result<Artifact, NativeError>, ApiError> {
        let name = format!("{}.{fingerprint}.cwasm", digest.trim_start_matches("sha256:"));
        let gate = lock(&self.gates).entry(name.clone()).or_default().clone();
        let result = {
            let _turn = gate.lock().await;
            match self.read(&name).await {
                Some(artifact) => Ok(Ok(artifact)),
                None => match wasm.await {
                    Ok(wasm) => Ok(self.compile(engine.clone(), wasm, name.clone(), fingerprint).await),
                    Err(e) => Err(e),
                },
            }
        };
        let mut gates = lock(&self.gates);
        if gates.get(&name).is_some_and(|g| Arc::ptr_eq(g, &gate) && Arc::strong_count(g) == 2) {
            gates.remove(&name);
        }
        result
    }

    async fn read(&self, name: &str) -> Option<Artifact> {
        let path = self.dir.join(name);
        let bytes = tokio::task::spawn_blocking(move || std::fs::read(path).ok()).await.ok().flatten()?;
        let sha256 = edgeplane_api::hex::sha256(&bytes);
        Some(Artifact { bytes, sha256 })
    }

    async fn compile(&self, engine: Engine, wasm: Vec<u8>, name: String, fingerprint: &str) -> Result<Artifact, NativeError> {
        let turn = self.compiles.clone().acquire_owned().await.expect("the semaphore is never closed");
        let dir = self.dir.clone();
        let target = lock(&self.targets).get(fingerprint).map_or_else(|| fingerprint.to_owned(), |(t, _)| t.to_string());
        // Spawned: a compile outlives a request that stopped waiting, and its file serves
        // the next one.
        let compiling = tokio::task::spawn_blocking(move || {
            let _turn = turn;
            let started = std::time::Instant::now();
            let bytes = engine.precompile_module(&wasm).map_err(|e| NativeError::Compile { target, why: format!("{e:#}") })?;
            let millis = started.elapsed().as_millis();
            write_whole(&dir, &name, &bytes)?;
            tracing::debug!(artifact = %name, bytes = bytes.len(), millis, "compiled ahead of time");
            let sha256 = edgeplane_api::hex::sha256(&bytes);
            Ok(Artifact { bytes, sha256 })
        });
        match tokio::time::timeout(COMPILE_WAIT, compiling).await {
            Ok(Ok(result)) => result,
            Ok(Err(e)) => Err(NativeError::Compile { target: fingerprint.to_owned(), why: e.to_string() }),
            Err(_) => Err(NativeError::Busy(COMPILE_WAIT)),
        }
    }

    /// The targets edges asked for so far.
    fn targets(&self) -> Vec<(String, Engine)> {
        lock(&self.targets).iter().map(|(fingerprint, (_, engine))| (fingerprint.clone(), engine.clone())).collect()
    }
}

/// A compiled module and its sha256 (hex).
#[derive(Debug, Clone)]
pub struct Artifact {
    pub bytes: Vec<u8>,
    pub sha256: String,
}

/// Writes a file whole or not at all: aside, then renamed into place. (Not synced: what a
/// crash loses is compiled again.)
fn write_whole(dir: &std::path::Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let partial = dir.join(format!("{name}.partial"));
    std::fs::write(&partial, bytes)?;
    std::fs::rename(&partial, dir.join(name))
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// `GET /v1/blobs/{digest}/native`.
pub(crate) async fn native(State(state): State<AppState>, Path(digest): Path<String>, raw: RawQuery) -> Result<Response, ApiError> {
    if let Err(e) = edgeplane_api::validate::digest(&digest) {
        return Err(ApiError::invalid(vec![cause("path.digest", e)]));
    }
    let params = only_params(raw, &["triple", "features", "fingerprint"])?;
    let (triple, fingerprint) = match (params.get("triple"), params.get("fingerprint")) {
        (Some(t), Some(f)) => (t.clone(), f.clone()),
        _ => {
            let missing = ["triple", "fingerprint"].into_iter().filter(|p| !params.contains_key(*p));
            return Err(ApiError::invalid(missing.map(|p| cause(format!("query.{p}"), "required")).collect()));
        }
    };
    if fingerprint.len() != 16 || !fingerprint.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ApiError::invalid(vec![cause("query.fingerprint", format!("{fingerprint:?} is not 16 hex digits"))]));
    }
    let features = params.get("features").map(|f| f.split(',').filter(|f| !f.is_empty()).map(str::to_owned).collect::<Vec<_>>());
    let target =
        Target::checked(&triple, features.unwrap_or_default()).map_err(|e| ApiError::invalid(vec![cause("query", e.to_string())]))?;
    let precompiler = &state.precompiler;
    let engine = match precompiler.engine_for(target, &fingerprint).await {
        Ok(engine) => engine,
        Err(e) => return Err(native_error(e)),
    };
    let wasm = stored_module(&state, &digest);
    let artifact = precompiler.artifact(&engine, &fingerprint, &digest, wasm).await?.map_err(native_error)?;
    let sha256 = HeaderValue::from_str(&artifact.sha256).expect("hex is a header value");
    Ok((
        [
            (header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream")),
            (ARTIFACT_SHA256_HEADER.parse().expect("a header name"), sha256),
        ],
        artifact.bytes,
    )
        .into_response())
}

fn native_error(e: NativeError) -> ApiError {
    match e {
        NativeError::Target(_) => ApiError::invalid(vec![cause("query", e.to_string())]),
        NativeError::Fingerprint { .. } => ApiError::status(StatusCode::CONFLICT, StatusReason::Conflict, e.to_string()),
        NativeError::Compile { .. } => ApiError::status(StatusCode::UNPROCESSABLE_ENTITY, StatusReason::Invalid, e.to_string()),
        NativeError::Busy(_) => ApiError::status(StatusCode::SERVICE_UNAVAILABLE, StatusReason::ServiceUnavailable, e.to_string()),
        NativeError::Io(_) => ApiError::internal(e.to_string()),
    }
}

/// The registry's bytes of a module.
async fn stored_module(state: &AppState, digest: &str) -> Result<Vec<u8>, ApiError> {
    let key = ObjectKey::new(BLOBS, "", digest.trim_start_matches("sha256:"));
    let found = read(state, Consistency::Linearizable).await?.get(&key).map(|o| Arc::clone(&o.value));
    let Some(blob) = found else {
        return Err(ApiError::not_found(format!("no module with digest {digest}")));
    };
    blob_bytes(&blob, digest).ok_or_else(|| ApiError::internal(format!("the stored bytes of {digest} do not match their digest")))
}

/// A stored blob's bytes, if they have its digest.
pub(crate) fn blob_bytes(blob: &serde_json::Value, digest: &str) -> Option<Vec<u8>> {
    blob["data"].as_str().and_then(|d| base64::engine::general_purpose::STANDARD.decode(d).ok()).filter(|b| sha256_digest(b) == digest)
}

/// Compiles every module pushed from now on for the targets this orchestrator was asked for,
/// as this member applies the push, and deletes the compiled forms of modules collected.
pub async fn compile_pushed(state: AppState, from: u64) {
    let recalling = state.clone();
    let _ = tokio::task::spawn_blocking(move || recalling.precompiler.recall()).await;
    let mut from = from;
    loop {
        let Ok(mut pushes) = state.watch.subscribe(from) else {
            // Fell out of the history (a snapshot was installed): later pushes only; those
            // missed are compiled when an edge asks.
            from = state.node.latest().applied_index();
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        loop {
            match pushes.next().await {
                Next::Event(event) if event.kind == Change::Added && event.key.kind == BLOBS => {
                    from = event.index;
                    let digest = format!("sha256:{}", event.key.name);
                    let Some(wasm) = blob_bytes(&event.object.value, &digest).filter(|b| b.starts_with(b"\0asm")) else { continue };
                    for (fingerprint, engine) in state.precompiler.targets() {
                        let wasm = wasm.clone();
                        match state.precompiler.artifact(&engine, &fingerprint, &digest, async { Ok(wasm) }).await {
                            Ok(Ok(_)) => {}
                            Ok(Err(e)) => tracing::warn!(%digest, "cannot compile ahead of time: {e}"),
                            Err(e) => tracing::warn!(%digest, "cannot compile ahead of time: {}", e.0.message),
                        }
                    }
                }
                Next::Event(event) if event.kind == Change::Deleted && event.key.kind == BLOBS => {
                    from = event.index;
                    let forgetting = state.clone();
                    let digest = event.key.name.clone();
                    let _ = tokio::task::spawn_blocking(move || forgetting.precompiler.forget(&digest)).await;
                }
                Next::Event(event) => from = event.index,
                Next::Expired => break,
                Next::Closed => return,
            }
        }
    }
}
