//! The module registry.
//!
//! `POST /v1/modules/{namespace}/{name}/{version}` takes the bytes of a `.wasm` file, checks that
//! it is a valid WebAssembly module following the edgeplane guest ABI (docs/abi.md), and stores
//! it content-addressed by sha256, together with its `Module` resource
//! (`{name}.{version}`), in one Raft transaction: every orchestrator holds the bytes, so any
//! of them can serve them after the leader is lost. Versions are immutable: the same bytes
//! again are accepted as unchanged, different bytes under an existing version are refused.
//!
//! `GET /v1/blobs/{digest}` serves the bytes of a digest (`sha256:<hex>`); `crate::native`
//! serves modules compiled for an edge's target.

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine as _;
use edgeplane_api::abi::MAX_MODULE_BYTES;
use edgeplane_api::resources::{ArtifactKind, ModuleSpec};
use edgeplane_api::{Consistency, StatusReason};
use edgeplane_core::gc::BLOBS;
use edgeplane_core::{Applied, ApplyError, Command, ObjectKey, Precondition, ResourceWrite};
use edgeplane_raft::WriteError;
use serde_json::{json, Value};
use wasmparser::{ExternalKind, Parser, Payload, TypeRef, ValType, Validator, WasmFeatures};

use crate::app::AppState;
use crate::auth::Audit;
use crate::http::{body_error, cause, only_params, read, rfc3339_now, versioned_path, write, write_error, ApiError, RawQuery};
use crate::resources::render;
use crate::secrets::sha256_digest;
use crate::signatures;
/// The ABI this registry checks modules against (docs/abi.md).
pub const ABI: &str = "edgeplane/v1";

/// What the registry learned of a valid module.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checked {
    pub digest: String,
    pub size: usize,
}

/// Checks a module against the guest ABI. Every problem is reported.
pub fn check_module(bytes: &[u8]) -> Result<Checked, Vec<String>> {
    let mut validator = Validator::new_with_features(WasmFeatures::default());
    let types = validator.validate_all(bytes).map_err(|e| vec![format!("not a valid WebAssembly module: {e}")])?;
    let types = types.as_ref();
    let mut problems = Vec::new();
    let mut exports: BTreeMap<String, (ExternalKind, u32)> = BTreeMap::new();
    for payload in Parser::new(0).parse_all(bytes) {
        match payload.map_err(|e| vec![format!("not a valid WebAssembly module: {e}")])? {
            Payload::ImportSection(reader) => {
                for import in reader.into_imports() {
                    let import = import.map_err(|e| vec![format!("unreadable import section: {e}")])?;
                    let offered = match (import.module, import.name) {
                        ("edgeplane", "emit") => Some(sig(&[ValType::I32; 4], &[ValType::I32])),
                        ("edgeplane", "log") => Some(sig(&[ValType::I32; 3], &[])),
                        ("edgeplane", "now_ms") => Some(sig(&[], &[ValType::I64])),
                        // ABI v1.1: inference.
                        ("edgeplane", "nn_bind") => Some(sig(&[ValType::I32; 2], &[ValType::I32])),
                        ("edgeplane", "nn_set_input" | "nn_get_output") => Some(sig(&[ValType::I32; 6], &[ValType::I32])),
                        ("edgeplane", "nn_compute") => Some(sig(&[ValType::I32], &[ValType::I32])),
                        _ => None,
                    };
                    match (offered, import.ty) {
                        (None, _) => problems.push(format!(
                            "imports {}.{}, which the host does not offer (only edgeplane.emit, log, now_ms, nn_bind, nn_set_input, \
                             nn_compute and nn_get_output)",
                            import.module, import.name
                        )),
                        (Some(expected), TypeRef::Func(index)) => {
                            let actual = describe(types[types.core_type_at_in_module(index)].unwrap_func());
                            if actual != expected {
                                problems.push(format!(
                                    "imports {}.{} as {actual}; ABI v1 defines it as {expected}",
                                    import.module, import.name
                                ));
                            }
                        }
                        (Some(_), _) => {
                            problems.push(format!("imports {}.{} as something other than a function", import.module, import.name))
                        }
                    }
                }
            }
            Payload::ExportSection(reader) => {
                for export in reader {
                    let export = export.map_err(|e| vec![format!("unreadable export section: {e}")])?;
                    exports.insert(export.name.to_owned(), (export.kind, export.index));
                }
            }
            _ => {}
        }
    }
    match exports.get("memory") {
        Some((ExternalKind::Memory, _)) => {}
        _ => problems.push("exports no memory named `memory` (required by ABI v1, docs/abi.md)".to_owned()),
    }
    let required = [
        ("ep_abi_version", sig(&[], &[ValType::I32]), true),
        ("ep_alloc", sig(&[ValType::I32], &[ValType::I32]), true),
        ("ep_process", sig(&[ValType::I32, ValType::I32], &[ValType::I32]), true),
        ("ep_configure", sig(&[ValType::I32, ValType::I32], &[ValType::I32]), false),
        // ABI 1.2.
        ("ep_process_validated", sig(&[ValType::I32, ValType::I32], &[ValType::I32]), false),
    ];
    for (name, expected, mandatory) in required {
        match exports.get(name) {
            Some((ExternalKind::Func, index)) => {
                let actual = describe(types[types.core_function_at(*index)].unwrap_func());
                if actual != expected {
                    problems.push(format!("`{name}` has type {actual}; ABI v1 requires {expected}"));
                }
            }
            Some(_) => problems.push(format!("`{name}` is exported but is not a function")),
            None if mandatory => problems.push(format!("exports no `{name}` function (required by ABI v1, docs/abi.md)")),
            None => {}
        }
    }
    // What an edge would refuse to compile is refused here, at the door.
    if let Err(complexity) = edgeplane_api::abi::check_complexity(bytes) {
        problems.extend(complexity);
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    Ok(Checked { digest: sha256_digest(bytes), size: bytes.len() })
}

fn sig(params: &[ValType], results: &[ValType]) -> String {
    let list = |v: &[ValType]| v.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ");
    format!("({}) -> ({})", list(params), list(results))
}

fn describe(f: &wasmparser::FuncType) -> String {
    sig(f.params(), f.results())
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
    let bytes = body.map_err(|e| body_error(e, "module", MAX_MODULE_BYTES))?;
    let checked =
        check_module(&bytes).map_err(|problems| ApiError::unprocessable(problems.into_iter().map(|p| cause("body", p)).collect()))?;

    let resource_name = format!("{name}.{version}");
    let module_key = ObjectKey::new("modules", ns.clone(), resource_name.clone());
    let current = read(&state, Consistency::Linearizable).await?;
    let signature = signatures::check_push(&params, &current, &ns, ArtifactKind::Module, (&name, &version, &checked.digest))?;
    // Versions are immutable: look first, so the same bytes again are simply unchanged.
    if let Some(existing) = current.get(&module_key) {
        let held = existing.value.pointer("/spec/digest").and_then(Value::as_str);
        let held_signature = existing.value.pointer("/spec/signature").and_then(|v| serde_json::from_value(v.clone()).ok());
        return match held {
            Some(d) if d == checked.digest && (signature.is_none() || signature == held_signature) => {
                Ok((StatusCode::OK, Json(render(existing))).into_response())
            }
            Some(d) if d == checked.digest => Err(ApiError::status(
                StatusCode::CONFLICT,
                StatusReason::AlreadyExists,
                format!("module {name}@{version} was pushed with another signature or none; versions are immutable: push a new version"),
            )),
            other => Err(immutable(&name, &version, other)),
        };
    }
    drop(current);
    let resource = json!({
        "apiVersion": edgeplane_api::resources::API_VERSION,
        "kind": "Module",
        "metadata": { "name": resource_name, "namespace": ns, "labels": { "edgeplane.io/module": name } },
        "spec": ModuleSpec {
            version: version.clone(),
            digest: checked.digest.clone(),
            size_bytes: checked.size as u64,
            abi: ABI.to_owned(),
            signature,
        },
    });
    let hex_digest = checked.digest.trim_start_matches("sha256:").to_owned();
    let blob =
        json!({ "digest": checked.digest, "sizeBytes": checked.size, "data": base64::engine::general_purpose::STANDARD.encode(&bytes) });
    let transaction = Command::Transaction(vec![
        // Content-addressed: the same bytes under two names are stored once.
        Command::Put { key: ObjectKey::new(BLOBS, "", hex_digest), value: blob, precondition: Precondition::None },
        Command::PutResource {
            key: module_key,
            resource,
            precondition: Precondition::None,
            write: ResourceWrite::Create { created_at: rfc3339_now() },
        },
    ]);
    match write(&state, &audit, transaction).await {
        Ok(Applied::Transaction(applied)) => {
            let module = applied.into_iter().find_map(|a| match a {
                Applied::Put { key, object, .. } if key.kind == "modules" => Some(object),
                _ => None,
            });
            let module = module.expect("the transaction created the module");
            Ok((StatusCode::CREATED, Json(render(&module))).into_response())
        }
        Ok(_) => unreachable!("a transaction applies as a transaction"),
        // Someone pushed this version between our look and our write.
        Err(WriteError::Rejected(ApplyError::AlreadyExists { .. })) => Err(immutable(&name, &version, None)),
        Err(e) => Err(write_error(&state, e).await),
    }
}

fn immutable(name: &str, version: &str, digest: Option<&str>) -> ApiError {
    let held = digest.map(|d| format!(" (it holds {d})")).unwrap_or_default();
    ApiError::status(
        StatusCode::CONFLICT,
        StatusReason::AlreadyExists,
        format!("module {name}@{version} already exists with different bytes{held}; versions are immutable: push a new version"),
    )
}

pub(crate) async fn blob(State(state): State<AppState>, Path(digest): Path<String>) -> Result<Response, ApiError> {
    if let Err(e) = edgeplane_api::validate::digest(&digest) {
        return Err(ApiError::invalid(vec![cause("path.digest", e)]));
    }
    let key = ObjectKey::new(BLOBS, "", digest.trim_start_matches("sha256:"));
    let found = read(&state, Consistency::Linearizable).await?.get(&key).map(|o| std::sync::Arc::clone(&o.value));
    let Some(blob) = found else {
        return Err(ApiError::not_found(format!("no module with digest {digest}")));
    };
    let bytes = crate::native::blob_bytes(&blob, &digest)
        .ok_or_else(|| ApiError::internal(format!("the stored bytes of {digest} do not match their digest")))?;
    Ok(([(header::CONTENT_TYPE, "application/wasm")], bytes).into_response())
}
