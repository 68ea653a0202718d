//! The model cache: an `onnx` Model's file, fetched by digest and verified like a module's
//! (disk cache `models/<sha256>.onnx`), prepared once per digest with a backend this node has
//! and the Model's artifact lists, and kept for every instance that binds it.
//!
//! Preparing (parsing, type-checking, optimizing) is CPU work: it runs on a blocking thread,
//! one at a time, for at most [`PREPARE_TIMEOUT`], with the same limits the registry checked
//! the model against at push.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use edgeplane_api::resources::{AssignedModel, ModelArtifact};
use edgeplane_client::Client;
use edgeplane_inference::{BackendKind, Limits, PreparedModel};
use tokio::sync::Semaphore;

use super::files::{self, AtRest, FileError};
use super::lock;
use super::modules::{digest_hex, verified_blob, BlobError};
use crate::host::BoundModel;

/// The longest preparing a model may take before the assignment fails.
pub const PREPARE_TIMEOUT: Duration = Duration::from_secs(60);

/// Why a model could not be made ready.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("{0:?} is not a sha256 digest")]
    MalformedDigest(String),
    #[error("fetching the model file")]
    Blob(#[from] BlobError),
    #[error("this node has none of the backends that can run it ({0})")]
    NoBackend(String),
    #[error("the model does not load")]
    Prepare(#[source] edgeplane_inference::ModelError),
    #[error("preparing the model took longer than {0:?}")]
    PrepareTimeout(Duration),
}

impl ModelError {
    /// Whether trying again can help (the network, the registry) or not (the model, or this
    /// node's backends).
    pub fn is_permanent(&self) -> bool {
        !matches!(self, ModelError::Blob(_))
    }
}

#[derive(Debug)]
pub(super) struct ModelCache {
    dir: PathBuf,
    at_rest: AtRest,
    backends: Vec<BackendKind>,
    limits: Limits,
    prepared: Mutex<HashMap<String, Arc<dyn PreparedModel>>>,
    /// One load per digest at a time.
    loading: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    prepares: Arc<Semaphore>,
}

impl ModelCache {
    pub async fn new(dir: PathBuf, at_rest: AtRest, backends: Vec<BackendKind>) -> Result<ModelCache, FileError> {
        files::create_dir(dir.clone()).await?;
        Ok(ModelCache {
            dir,
            at_rest,
            backends,
            limits: Limits::default(),
            prepared: Mutex::default(),
            loading: Mutex::default(),
            prepares: Arc::new(Semaphore::new(1)),
        })
    }

    /// The bound model for an assignment's Model, if it is already prepared.
    pub fn ready(&self, model: &AssignedModel, artifact: &ModelArtifact) -> Option<Arc<BoundModel>> {
        let prepared = lock(&self.prepared).get(&artifact.digest).cloned()?;
        Some(self.bind(model, prepared))
    }

    /// The bound model for an assignment's Model: fetched, verified and prepared if needed.
    pub async fn get(&self, client: &Client, model: &AssignedModel, artifact: &ModelArtifact) -> Result<Arc<BoundModel>, ModelError> {
        if let Some(bound) = self.ready(model, artifact) {
            return Ok(bound);
        }
        let digest = artifact.digest.as_str();
        let hex = digest_hex(digest).ok_or_else(|| ModelError::MalformedDigest(digest.to_owned()))?.to_owned();
        let backend = self.choose(artifact)?;
        let gate = lock(&self.loading).entry(digest.to_owned()).or_default().clone();
        let _loading = gate.lock().await;
        if let Some(bound) = self.ready(model, artifact) {
            return Ok(bound);
        }
        let bytes = verified_blob(client, &self.at_rest, &self.dir.join(format!("{hex}.onnx")), digest, &hex).await?;
        let turn = self.prepares.clone().acquire_owned().await.expect("the semaphore is never closed");
        let limits = self.limits;
        let preparing = tokio::task::spawn_blocking(move || {
            let _turn = turn;
            edgeplane_inference::prepare(backend, &bytes, limits)
        });
        let prepared = match tokio::time::timeout(PREPARE_TIMEOUT, preparing).await {
            Ok(Ok(prepared)) => prepared.map_err(ModelError::Prepare)?,
            Ok(Err(e)) => {
                return Err(ModelError::Prepare(edgeplane_inference::ModelError::Unsupported {
                    backend,
                    reason: format!("the backend failed: {e}"),
                }))
            }
            Err(_) => return Err(ModelError::PrepareTimeout(PREPARE_TIMEOUT)),
        };
        tracing::info!(model = %model.name, version = %model.version, %backend, "model prepared");
        lock(&self.prepared).insert(digest.to_owned(), prepared.clone());
        Ok(self.bind(model, prepared))
    }

    /// The backend to run the model with: ONNX Runtime where the node has it and it runs the
    /// model (the reference engine, and the faster one on tree ensembles and large batches;
    /// `scripts/bench.sh` measures both), else tract.
    fn choose(&self, artifact: &ModelArtifact) -> Result<BackendKind, ModelError> {
        let usable: Vec<BackendKind> =
            artifact.backends.iter().filter_map(|b| BackendKind::from_name(b)).filter(|b| self.backends.contains(b)).collect();
        [BackendKind::Onnxruntime, BackendKind::Tract]
            .into_iter()
            .find(|b| usable.contains(b))
            .ok_or_else(|| ModelError::NoBackend(artifact.backends.join(", ")))
    }

    fn bind(&self, model: &AssignedModel, prepared: Arc<dyn PreparedModel>) -> Arc<BoundModel> {
        Arc::new(BoundModel { name: model.name.clone(), version: model.version.clone(), prepared, max_batch: self.limits.max_batch })
    }
}
