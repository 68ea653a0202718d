//! The module cache: a module's compiled form by digest, from memory; else the native code the
//! orchestrators compiled for this node ahead of time, from the disk cache
//! (`modules/<sha256>.<fingerprint>.cwasm`) or downloaded (`/v1/blobs/{digest}/native`);
//! else compiled here from the wasm, from the disk cache (`modules/<sha256>.wasm`) or
//! downloaded from the registry. Everything read from disk or the network is checked against
//! its sha256 first, and what was downloaded is cached.
//!
//! Precompiled code is used only where the node may trust the orchestrators' compiler
//! ([`crate::precompiled`]); when none is to be had (an orchestrator of another version, a
//! target it cannot compile for, the link down) the node compiles for itself.
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

use edgeplane_api::node::{ModuleSource, ARTIFACT_SHA256_HEADER};
use edgeplane_api::Status;
use edgeplane_client::{Client, ClientError, Request};
use tokio::sync::Semaphore;

use super::files::{self, Access, AtRest, FileError};
use super::lock;
use crate::host::{CompiledModule, LoadError, WasmHost};
use crate::precompiled::Artifact;

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
    /// Whether code the orchestrators compiled may be loaded (`Config::precompiled_modules`).
    precompiled: bool,
}

impl ModuleCache {
    pub async fn new(dir: PathBuf, at_rest: AtRest, host: Arc<WasmHost>, precompiled: bool) -> Result<ModuleCache, FileError> {
        files::create_dir(dir.clone()).await?;
        Ok(ModuleCache {
            dir,
            at_rest,
            host,
            compiled: Mutex::default(),
            loading: Mutex::default(),
            compiles: Arc::new(Semaphore::new(1)),
            precompiled,
        })
    }

    /// The compiled module for a digest, and where it came from.
    pub async fn get(&self, client: &Client, digest: &str) -> Result<(Arc<CompiledModule>, ModuleSource), ModuleError> {
        if let Some(m) = lock(&self.compiled).get(digest) {
            return Ok((m.clone(), ModuleSource::Loaded));
        }
        let hex = digest_hex(digest).ok_or_else(|| ModuleError::MalformedDigest(digest.to_owned()))?.to_owned();
        let gate = lock(&self.loading).entry(digest.to_owned()).or_default().clone();
        let _loading = gate.lock().await;
        if let Some(m) = lock(&self.compiled).get(digest) {
            return Ok((m.clone(), ModuleSource::Loaded));
        }
        let precompiled = match self.precompiled {
            true => self.precompiled(client, digest, &hex).await,
            false => None,
        };
        let (module, source) = match precompiled {
            Some(loaded) => loaded,
            None => {
                let bytes = verified_blob(client, &self.at_rest, &self.dir.join(format!("{hex}.wasm")), digest, &hex).await?;
                (self.compile(bytes).await?, ModuleSource::Compiled)
            }
        };
        let module = Arc::new(module);
        lock(&self.compiled).insert(digest.to_owned(), module.clone());
        Ok((module, source))
    }

    /// The module as the orchestrators compiled it for this node, from the disk cache or
    /// downloaded, if one is to be had and loads; `None` (and why, in the log) if not.
    async fn precompiled(&self, client: &Client, digest: &str, hex: &str) -> Option<(CompiledModule, ModuleSource)> {
        let (target, fingerprint) = self.host.target();
        let path = self.dir.join(format!("{hex}.{fingerprint}.cwasm"));
        let cached = {
            let (path, at_rest) = (path.clone(), self.at_rest.clone());
            tokio::task::spawn_blocking(move || at_rest.read(&path).ok().flatten()).await.ok().flatten()
        };
        let (artifact, source) = match cached.map(unstamp) {
            Some(Ok(artifact)) => (artifact, ModuleSource::PrecompiledCached),
            problem => {
                if let Some(Err(why)) = problem {
                    tracing::warn!(%digest, "the cached precompiled module is refused ({why}); fetching it again");
                }
                let query = format!("triple={}&features={}&fingerprint={fingerprint}", target.triple, target.features.join(","));
                let answer = match client.send(Request::get(format!("/v1/blobs/{digest}/native?{query}"))).await {
                    Ok(answer) if answer.is_success() => answer,
                    Ok(answer) => {
                        tracing::info!(%digest, "no precompiled module ({}); compiling it here", answer.status_error().message);
                        return None;
                    }
                    Err(e) => {
                        tracing::info!(%digest, "no precompiled module ({e}); compiling it here");
                        return None;
                    }
                };
                let stated = answer.headers.get(ARTIFACT_SHA256_HEADER).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
                let artifact = match Artifact::verified(answer.body.to_vec(), &stated) {
                    Ok(artifact) => artifact,
                    Err(why) => {
                        tracing::warn!(%digest, "the precompiled module is refused: {why}; compiling it here");
                        return None;
                    }
                };
                (artifact, ModuleSource::Precompiled)
            }
        };
        let host = self.host.clone();
        let loaded = tokio::task::spawn_blocking(move || host.load_precompiled(&artifact).map(|m| (m, artifact))).await;
        match loaded {
            Ok(Ok((module, artifact))) => {
                if source == ModuleSource::Precompiled {
                    let stamped = stamp(&artifact);
                    let at_rest = self.at_rest.clone();
                    let saved = tokio::task::spawn_blocking(move || at_rest.write(&path, &stamped, Access::Owner)).await;
                    if let Ok(Err(e)) = saved {
                        tracing::warn!(%digest, "cannot cache the precompiled module: {e}");
                    }
                }
                Some((module, source))
            }
            Ok(Err(e)) => {
                tracing::warn!(%digest, "{e}; compiling it here");
                None
            }
            Err(e) => {
                tracing::warn!(%digest, "loading the precompiled module failed: {e}; compiling it here");
                None
            }
        }
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

/// A precompiled module as the disk cache keeps it: its sha256, then its bytes.
fn stamp(artifact: &Artifact) -> Vec<u8> {
    let mut stamped = sha256_hex(artifact.bytes()).into_bytes();
    stamped.extend_from_slice(artifact.bytes());
    stamped
}

fn unstamp(mut stamped: Vec<u8>) -> Result<Artifact, String> {
    if stamped.len() < 64 {
        return Err("the file is truncated".to_owned());
    }
    let bytes = stamped.split_off(64);
    let stated = String::from_utf8(stamped).map_err(|_| "the file has no sha256 at its start".to_owned())?;
    Artifact::verified(bytes, &stated)
}

/// `sha256:<hex>` checked, as its hex.
pub(super) fn digest_hex(digest: &str) -> Option<&str> {
    digest.strip_prefix("sha256:").filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
}

fn sha256_hex(bytes: &[u8]) -> String {
    edgeplane_api::hex::sha256(bytes)
}
