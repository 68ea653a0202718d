//! The model registry.
//!
//! `POST /v1/models/{namespace}/{name}/{version}` takes the bytes of an ONNX file, reads its
//! signature, prepares it with every inference backend this orchestrator has, and, if at
//! least one can run it, stores it content-addressed (like modules, `GET /v1/blobs/{digest}`
//! serves it) and points the Model `{name}` at it: created if absent, else its spec replaced
//! by this version, so that running instances move to it without a restart. All of this is one
//! Raft transaction with the request's audit record.
//!
//! Versions are immutable: each is recorded (store kind [`MODEL_VERSIONS`]) with its digest;
//! the same bytes again are accepted (and make that version current again, which is how a
//! model is rolled back), different bytes under a pushed version are refused.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine as _;
use edgeplane_api::resources::{ArtifactKind, Model, ModelArtifact, ModelSpec, TensorSignature, API_VERSION, MODEL_FORMAT_ONNX};
use edgeplane_api::{Consistency, StatusReason};
use edgeplane_core::gc::{BLOBS, MODEL_VERSIONS};
use edgeplane_core::{Applied, ApplyError, Command, ObjectKey, Precondition, ResourceWrite};
use edgeplane_inference::{CheckReport, Dim, Limits, TensorSpec};
use edgeplane_raft::WriteError;
use serde_json::{json, Value};

use crate::app::AppState;
use crate::auth::Audit;
use crate::http::{
    body_error, cause, only_params, read, rfc3339_now, versioned_path, write_error, write_retrying_conflicts, ApiError, RawQuery,
};
use crate::resources::render;
use crate::secrets::sha256_digest;
use crate::signatures;

/// The largest model file the registry takes. Model files travel through the Raft log like
/// modules, so this is bounded by what a log entry can reasonably carry.
pub const MAX_MODEL_BYTES: usize = 16 * 1024 * 1024;
/// How long checking a model may take (parsing, type-checking and optimizing it with each
/// backend) before the push is refused.
const CHECK_TIMEOUT: Duration = Duration::from_secs(60);
/// How often a push retries when the Model changed between its read and its write.
const CONFLICT_RETRIES: usize = 5;

/// Bounds a model must fit at push; an edge prepares it with the same ones.
pub fn limits() -> Limits {
    Limits::default()
}

pub(crate) async fn push(
    State(state): State<AppState>,
    audit: Audit,
    Path((ns, name, version)): Path<(String, String, String)>,
    raw: RawQuery,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    versioned_path(&ns, &name, &version)?;
    let params = only_params(raw, signatures::PARAMS)?;
    let bytes = body.map_err(|e| body_error(e, "model", MAX_MODEL_BYTES))?;
    let digest = sha256_digest(&bytes);
    let report = check(bytes.clone()).await?;
    let artifact = artifact(&digest, bytes.len() as u64, &report);
    if artifact.backends.is_empty() {
        let refusals = report.verdicts.iter().filter_map(|(b, v)| v.as_ref().err().map(|e| cause(format!("backends.{b}"), e.to_string())));
        return Err(ApiError::unprocessable(refusals.collect()));
    }

    let version_key = ObjectKey::new(MODEL_VERSIONS, ns.clone(), format!("{name}.{version}"));
    let model_key = ObjectKey::new("models", ns.clone(), name.clone());
    let hex = digest.trim_start_matches("sha256:").to_owned();
    let encoded = base64::engine::general_purpose::STANDARD.encode(&bytes);
    drop(bytes);
    let blob = json!({ "digest": digest, "sizeBytes": artifact.size_bytes, "data": encoded });
    let record = json!({ "digest": digest, "sizeBytes": artifact.size_bytes, "artifact": artifact });
    let mut spec = ModelSpec {
        version: version.clone(),
        format: MODEL_FORMAT_ONNX.to_owned(),
        parameters: Default::default(),
        artifact: Some(artifact),
    };

    for _ in 0..CONFLICT_RETRIES {
        let current = read(&state, Consistency::Linearizable).await?;
        let signature = signatures::check_push(&params, &current, &ns, ArtifactKind::Model, (&name, &version, &digest))?;
        if let Some(artifact) = spec.artifact.as_mut() {
            artifact.signature = signature.clone();
        }
        let pushed_before = match current.get(&version_key) {
            Some(existing) => match existing.value.get("digest").and_then(Value::as_str) {
                Some(d) if d == digest => true,
                other => return Err(immutable(&name, &version, other)),
            },
            None => false,
        };
        let existing = current.get(&model_key).cloned();
        if let Some(model) = &existing {
            if model.value.get("spec") == Some(&serde_json::to_value(&spec).map_err(|e| ApiError::internal(e.to_string()))?) {
                return Ok((StatusCode::OK, Json(render(model))).into_response());
            }
        }
        let (resource, precondition, write, created) = match &existing {
            None => (
                json!({
                    "apiVersion": API_VERSION,
                    "kind": "Model",
                    "metadata": { "name": name, "namespace": ns },
                    "spec": spec,
                }),
                Precondition::MustNotExist,
                ResourceWrite::Create { created_at: rfc3339_now() },
                true,
            ),
            Some(model) => {
                let mut value = render(model);
                value["spec"] = serde_json::to_value(&spec).map_err(|e| ApiError::internal(e.to_string()))?;
                (value, Precondition::ResourceVersion(model.resource_version), ResourceWrite::Replace, false)
            }
        };
        let typed: Model =
            serde_json::from_value(resource.clone()).map_err(|e| ApiError::internal(format!("the Model does not parse: {e}")))?;
        let problems = edgeplane_api::validate::model(&typed);
        if !problems.is_empty() {
            return Err(ApiError::unprocessable(problems.into_iter().map(|p| cause(p.field, p.message)).collect()));
        }
        let mut commands = vec![
            // Content-addressed: the same bytes under two names are stored once.
            Command::Put { key: ObjectKey::new(BLOBS, "", hex.clone()), value: blob.clone(), precondition: Precondition::None },
            Command::PutResource { key: model_key.clone(), resource, precondition, write },
        ];
        if !pushed_before {
            commands.insert(1, Command::Put { key: version_key.clone(), value: record.clone(), precondition: Precondition::MustNotExist });
        }
        match write_retrying_conflicts(&state, &audit, Command::Transaction(commands)).await {
            Ok(Applied::Transaction(applied)) => {
                let model = applied.into_iter().find_map(|a| match a {
                    Applied::Put { key, object, .. } if key.kind == "models" => Some(object),
                    _ => None,
                });
                let model = model.ok_or_else(|| ApiError::internal("the transaction wrote no Model"))?;
                let code = if created { StatusCode::CREATED } else { StatusCode::OK };
                return Ok((code, Json(render(&model))).into_response());
            }
            Ok(_) => return Err(ApiError::internal("a transaction applied as something else")),
            // The Model or the version changed since we read: look again.
            Err(WriteError::Rejected(ApplyError::Conflict { .. } | ApplyError::AlreadyExists { .. })) => continue,
            Err(e) => return Err(write_error(&state, e).await),
        }
    }
    Err(ApiError::status(
        StatusCode::CONFLICT,
        StatusReason::Conflict,
        format!("model {name} kept changing while {version} was pushed; push again"),
    ))
}

/// Checks the model with every backend on a blocking thread (preparing a model is CPU work).
async fn check(bytes: Bytes) -> Result<CheckReport, ApiError> {
    let checking = tokio::task::spawn_blocking(move || edgeplane_inference::check(&bytes, limits()));
    match tokio::time::timeout(CHECK_TIMEOUT, checking).await {
        Ok(Ok(Ok(report))) => Ok(report),
        Ok(Ok(Err(refused))) => Err(ApiError::unprocessable(vec![cause("body", refused.to_string())])),
        Ok(Err(_)) => Err(ApiError::internal("checking the model failed")),
        Err(_) => Err(ApiError::unprocessable(vec![cause("body", format!("checking the model took longer than {CHECK_TIMEOUT:?}"))])),
    }
}

fn artifact(digest: &str, size_bytes: u64, report: &CheckReport) -> ModelArtifact {
    let signature = |specs: &[TensorSpec]| {
        specs
            .iter()
            .map(|s| TensorSignature {
                name: s.name.clone(),
                elem_type: s.elem_type.name().to_owned(),
                shape: s.shape.as_ref().map(|dims| dims.iter().map(Dim::to_string).collect()),
            })
            .collect()
    };
    ModelArtifact {
        digest: digest.to_owned(),
        size_bytes,
        inputs: signature(&report.info.signature.inputs),
        outputs: signature(&report.info.signature.outputs),
        backends: report.backends().into_iter().map(|b| b.name().to_owned()).collect(),
        signature: None,
    }
}

fn immutable(name: &str, version: &str, digest: Option<&str>) -> ApiError {
    let held = digest.map(|d| format!(" (it holds {d})")).unwrap_or_default();
    ApiError::status(
        StatusCode::CONFLICT,
        StatusReason::AlreadyExists,
        format!("model {name}@{version} was pushed before with different bytes{held}; versions are immutable: push a new version"),
    )
}
