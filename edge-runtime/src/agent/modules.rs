//! The module cache: a module's compiled form by digest, from memory, else from the disk
//! cache (`modules/<sha256>.wasm`, verified on every read), else downloaded from the registry
//! (verified, then cached).
//!
//! Before compiling, a module's size and complexity are checked against the guest ABI's
//! limits (the registry checked them too, but the edge trusts nothing it did not check), and
//! a compile that still takes longer than [`COMPILE_TIMEOUT`] fails the assignment rather than
//! occupying the node. Compiles run one at a time on a blocking thread; downloads may take as
//! long as the link needs, in a task of their own: nothing here holds what heartbeats need.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use edgeplane_api::Status;
use edgeplane_client::{Client, ClientError, Request};
use tokio::sync::Semaphore;

use super::files::{self, Access, AtRest, FileError};
use super::lock;
use crate::host::{CompiledModule, LoadError, WasmHost};

/// The longest a compile may take before the assignment fails.
pub const COMPILE_TIMEOUT: Duration = Duration::from_secs(60);
/// The longest one download attempt may take (8 MiB at 30 KB/s; a 16 MiB model at 60 KB/s).
const DOWNLOAD_TIMEOUT: Duration = Duration::from_secs(300);

/// Why a module could not be made ready.
#[derive(Debug, thiserror::Error)]
pub enum ModuleError {
    #[error("{0:?} is not a sha256 digest")]
    MalformedDigest(String),
    #[error("fetching the module")]
    Blob(#[from] BlobError),
    #[error("the module is too large or complex to compile here: {}", .0.join("; "))]
    TooComplex(Vec<String>),
    #[error("the module does not load")]
    Load(#[source] LoadError),
    #[error("compiling the module took longer than {0:?}")]
    CompileTimeout(Duration),
}

/// Why a blob (a module's or a model's bytes) could not be had.
#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    #[error("the request failed")]
    Fetch(#[source] ClientError),
    #[error("the registry did not serve it: {0}")]
    Registry(Box<Status>),
    #[error("it arrived with digest sha256:{actual}; refusing it")]
    DigestMismatch { actual: String },
    #[error("the local cache")]
    File(#[from] FileError),
}

impl ModuleError {
    /// Whether trying again can help (the network, the registry, the disk) or not (the module
    /// itself is at fault).
    pub fn is_permanent(&self) -> bool {
        matches!(self, ModuleError::MalformedDigest(_) | ModuleError::TooComplex(_) | ModuleError::Load(_) | ModuleError::CompileTimeout(_))
    }
}

#[derive(Debug)]
pub(super) struct ModuleCache {
    dir: PathBuf,
    at_rest: AtRest,
    host: Arc<WasmHost>,
    compiled: Mutex<HashMap<String, Arc<CompiledModule>>>,
    /// One load per digest at a time: a second assignment of a module waits for the first's
    /// download and compile rather than doing them again.
    loading: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Compiles one at a time: the wasm threads and the reactor keep the other cores.
    compiles: Arc<Semaphore>,
}

impl ModuleCache {
    pub async fn new(dir: PathBuf, at_rest: AtRest, host: Arc<WasmHost>) -> Result<ModuleCache, FileError> {
        files::create_dir(dir.clone()).await?;
        Ok(ModuleCache { dir, at_rest, host, compiled: Mutex::default(), loading: Mutex::default(), compiles: Arc::new(Semaphore::new(1)) })
    }

    /// The compiled module for a digest.
    pub async fn get(&self, client: &Client, digest: &str) -> Result<Arc<CompiledModule>, ModuleError> {
        if let Some(m) = lock(&self.compiled).get(digest) {
            return Ok(m.clone());
        }
        let hex = digest_hex(digest).ok_or_else(|| ModuleError::MalformedDigest(digest.to_owned()))?.to_owned();
        let gate = lock(&self.loading).entry(digest.to_owned()).or_default().clone();
        let _loading = gate.lock().await;
        if let Some(m) = lock(&self.compiled).get(digest) {
            return Ok(m.clone());
        }
        let bytes = verified_blob(client, &self.at_rest, &self.dir.join(format!("{hex}.wasm")), digest, &hex).await?;
        let module = Arc::new(self.compile(bytes).await?);
        lock(&self.compiled).insert(digest.to_owned(), module.clone());
        Ok(module)
    }

    /// Checks the limits, then compiles on a blocking thread, one compile at a time, for at
    /// most [`COMPILE_TIMEOUT`]. A compile past the timeout is abandoned (Cranelift cannot be
    /// interrupted; the limits bound how long it can run on) and keeps its turn until done.
    async fn compile(&self, bytes: Vec<u8>) -> Result<CompiledModule, ModuleError> {
        edgeplane_api::abi::check_complexity(&bytes).map_err(ModuleError::TooComplex)?;
        let turn = self.compiles.clone().acquire_owned().await.expect("the semaphore is never closed");
        let host = self.host.clone();
        let compiling = tokio::task::spawn_blocking(move || {
            let _turn = turn;
            host.load(&bytes)
        });
        match tokio::time::timeout(COMPILE_TIMEOUT, compiling).await {
            Ok(Ok(loaded)) => loaded.map_err(ModuleError::Load),
            Ok(Err(e)) => Err(ModuleError::Load(LoadError::Compile(format!("the compiler failed: {e}")))),
            Err(_) => Err(ModuleError::CompileTimeout(COMPILE_TIMEOUT)),
        }
    }
}

/// A blob's bytes, verified against its digest: from the disk cache at `path`, else from the
/// registry (then cached there).
pub(super) async fn verified_blob(
    client: &Client,
    at_rest: &AtRest,
    path: &std::path::Path,
    digest: &str,
    hex: &str,
) -> Result<Vec<u8>, BlobError> {
    let cached = {
        let (path, at_rest) = (path.to_owned(), at_rest.clone());
        // A cached copy that does not open is refused and counted there; fetched again here.
        tokio::task::spawn_blocking(move || at_rest.read(&path).ok().flatten()).await.ok().flatten()
    };
    match cached {
        Some(bytes) if sha256_hex(&bytes) == hex => return Ok(bytes),
        Some(_) => tracing::warn!(%digest, "the cached copy is corrupt; fetching it again"),
        None => {}
    }
    let answer =
        client.send(Request::get(format!("/v1/blobs/{digest}")).attempt_timeout(DOWNLOAD_TIMEOUT)).await.map_err(BlobError::Fetch)?;
    if !answer.is_success() {
        return Err(BlobError::Registry(Box::new(answer.status_error())));
    }
    let bytes = answer.body.to_vec();
    let actual = sha256_hex(&bytes);
    if actual != hex {
        return Err(BlobError::DigestMismatch { actual });
    }
    let save = bytes.clone();
    let (path, at_rest) = (path.to_owned(), at_rest.clone());
    tokio::task::spawn_blocking(move || at_rest.write(&path, &save, Access::Owner))
        .await
        .unwrap_or_else(|e| Err(FileError::Io { path: PathBuf::new(), source: std::io::Error::other(e) }))?;
    Ok(bytes)
}

/// `sha256:<hex>` checked, as its hex.
pub(super) fn digest_hex(digest: &str) -> Option<&str> {
    digest.strip_prefix("sha256:").filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
}

fn sha256_hex(bytes: &[u8]) -> String {
    edgeplane_api::hex::sha256(bytes)
}
