//! The resource API, in Kubernetes' shape:
//!
//! ```text
//! /apis/edgeplane.io/v1alpha1/edgenodes[/{name}[/status]]                     (cluster-scoped)
//! /apis/edgeplane.io/v1alpha1/namespaces/{ns}/{plural}[/{name}[/status]]      (namespaced)
//! /apis/edgeplane.io/v1alpha1/{plural}                                        (all namespaces)
//! ```
//!
//! POST creates, GET reads or lists (`labelSelector`, `consistency=stale`), PUT replaces
//! (compare-and-swap when the body carries `metadata.resourceVersion`), PATCH applies a JSON
//! merge patch, DELETE deletes (`?resourceVersion=` as precondition), and `/status` reads or
//! writes the status alone. Every body is validated as a manifest (see
//! `edgeplane_api::manifest`) before anything reaches Raft; invalid ones get 422 with every
//! problem and its field path (400 when the request itself is malformed).

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use edgeplane_api::manifest::{self, Resource};
use edgeplane_api::resources::{ResourceKind, API_VERSION};
use edgeplane_api::{Consistency, StatusReason};
use edgeplane_core::{Applied, ApplyError, ClusterState, Command, ObjectKey, Precondition, ResourceWrite, StoredObject};
use edgeplane_raft::watch::{EventType, Feed, WatchEvent};
use edgeplane_raft::WriteError;
use futures::StreamExt as _;
use tokio::sync::broadcast;
use serde_json::{json, Value};

use crate::api::{
    body_error, cause, parse_consistency, query_params, read_error, unknown_params, write_error, ApiError, AppState, RawQuery,
    MAX_BODY_BYTES,
};

use edgeplane_api::paths::RESOURCES as PREFIX;
/// Read-modify-write attempts of a PATCH that keeps losing compare-and-swap races.
const PATCH_ATTEMPTS: usize = 5;


fn kind(plural: &str) -> Result<ResourceKind, ApiError> {
    ResourceKind::by_plural(plural).ok_or_else(|| {
        ApiError::status(
            StatusCode::NOT_FOUND,
            StatusReason::NotFound,
            format!("no resource type {plural:?}; this API serves edgenodes, modules, workloads and models"),
        )
    })
}

pub fn routes() -> Router<AppState> {
    Router::new()
        .route(&format!("{PREFIX}/{{plural}}"), get(list_all).post(create_cluster_scoped))
        .route(
            &format!("{PREFIX}/{{plural}}/{{name}}"),
            get(get_cluster_scoped).put(replace_cluster_scoped).patch(patch_cluster_scoped).delete(delete_cluster_scoped),
        )
        .route(&format!("{PREFIX}/{{plural}}/{{name}}/status"), get(get_cluster_scoped).put(status_cluster_scoped))
        .route(&format!("{PREFIX}/namespaces/{{ns}}/{{plural}}"), get(list_namespaced).post(create_namespaced))
        .route(
            &format!("{PREFIX}/namespaces/{{ns}}/{{plural}}/{{name}}"),
            get(get_namespaced).put(replace_namespaced).patch(patch_namespaced).delete(delete_namespaced),
        )
        .route(&format!("{PREFIX}/namespaces/{{ns}}/{{plural}}/{{name}}/status"), get(get_namespaced).put(status_namespaced))
        .route(&format!("{PREFIX}/{{plural}}/{{name}}/events"), get(events_cluster_scoped))
        .route(&format!("{PREFIX}/namespaces/{{ns}}/{{plural}}/{{name}}/events"), get(events_namespaced))
}

/// Where a request points: a kind, and for namespaced kinds a namespace.
struct Scope {
    kind: ResourceKind,
    namespace: String,
}

impl Scope {
    fn cluster(plural: &str) -> Result<Scope, ApiError> {
        let kind = kind(plural)?;
        if kind.namespaced {
            return Err(ApiError::status(
                StatusCode::NOT_FOUND,
                StatusReason::NotFound,
                format!("{} are namespaced: use {PREFIX}/namespaces/{{namespace}}/{}", kind.plural, kind.plural),
            ));
        }
        Ok(Scope { kind, namespace: String::new() })
    }

    fn namespaced(ns: &str, plural: &str) -> Result<Scope, ApiError> {
        let kind = kind(plural)?;
        if !kind.namespaced {
            return Err(ApiError::status(
                StatusCode::NOT_FOUND,
                StatusReason::NotFound,
                format!("{} are cluster-scoped: use {PREFIX}/{}", kind.plural, kind.plural),
            ));
        }
        if let Err(e) = edgeplane_api::validate::dns_label(ns) {
            return Err(ApiError::invalid(vec![cause("path.namespace", e)]));
        }
        Ok(Scope { kind, namespace: ns.to_owned() })
    }

    fn key(&self, name: &str) -> ObjectKey {
        ObjectKey::new(self.kind.plural, self.namespace.clone(), name)
    }
}

type Body = Result<Bytes, BytesRejection>;

fn query(raw: RawQuery, allowed: &[&str]) -> Result<BTreeMap<String, String>, ApiError> {
    let params = query_params(raw)?;
    let unknown = unknown_params(&params, allowed);
    if unknown.is_empty() { Ok(params) } else { Err(ApiError::invalid(unknown)) }
}

fn consistency(params: &BTreeMap<String, String>) -> Result<Consistency, ApiError> {
    match params.get("consistency") {
        None => Ok(Consistency::Linearizable),
        Some(value) => parse_consistency(value).map_err(|e| ApiError::invalid(vec![cause("query.consistency", e)])),
    }
}

/// The resource as clients see it: the stored value with its resourceVersion.
pub(crate) fn render(object: &StoredObject) -> Value {
    let mut v = Value::clone(&object.value);
    if let Some(meta) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.insert("resourceVersion".to_owned(), json!(object.resource_version.to_string()));
    }
    v
}

// ---- reads ------------------------------------------------------------------------------

async fn get_cluster_scoped(State(s): State<AppState>, Path((plural, name)): Path<(String, String)>, q: RawQuery) -> Result<Json<Value>, ApiError> {
    read_one(&s, Scope::cluster(&plural)?, &name, q).await
}

async fn get_namespaced(
    State(s): State<AppState>,
    Path((ns, plural, name)): Path<(String, String, String)>,
    q: RawQuery,
) -> Result<Json<Value>, ApiError> {
    read_one(&s, Scope::namespaced(&ns, &plural)?, &name, q).await
}

async fn read_one(state: &AppState, scope: Scope, name: &str, q: RawQuery) -> Result<Json<Value>, ApiError> {
    let params = query(q, &["consistency"])?;
    let key = scope.key(name);
    let lookup = key.clone();
    match state.node.read(consistency(&params)?, move |s| s.get(&lookup).map(render)).await {
        Ok(Some(v)) => Ok(Json(v)),
        Ok(None) => Err(not_found(&scope, name)),
        Err(e) => Err(read_error(state, e).await),
    }
}

fn not_found(scope: &Scope, name: &str) -> ApiError {
    let place = if scope.namespace.is_empty() { String::new() } else { format!(" in namespace {}", scope.namespace) };
    ApiError::status(StatusCode::NOT_FOUND, StatusReason::NotFound, format!("{} {name:?} not found{place}", scope.kind.kind))
}

async fn list_all(State(s): State<AppState>, Path(plural): Path<String>, q: RawQuery) -> Result<Response, ApiError> {
    let kind = kind(&plural)?;
    list(&s, kind, None, q).await
}

async fn list_namespaced(State(s): State<AppState>, Path((ns, plural)): Path<(String, String)>, q: RawQuery) -> Result<Response, ApiError> {
    let scope = Scope::namespaced(&ns, &plural)?;
    list(&s, scope.kind, Some(scope.namespace), q).await
}

async fn list(state: &AppState, kind: ResourceKind, namespace: Option<String>, q: RawQuery) -> Result<Response, ApiError> {
    let params = query(q, &["consistency", "labelSelector", "watch", "resourceVersion"])?;
    let selector = match params.get("labelSelector") {
        Some(s) => LabelSelector::parse(s).map_err(|e| ApiError::invalid(vec![cause("query.labelSelector", e)]))?,
        None => LabelSelector::default(),
    };
    match params.get("watch").map(String::as_str) {
        None | Some("false") => {}
        Some("true") => {
            let from = match params.get("resourceVersion") {
                None => None,
                Some(v) => Some(v.parse::<u64>().map_err(|_| {
                    ApiError::invalid(vec![cause("query.resourceVersion", format!("{v:?} is not a resourceVersion"))])
                })?),
            };
            return watch(state, kind, namespace, selector, from).await;
        }
        Some(other) => return Err(ApiError::invalid(vec![cause("query.watch", format!("must be true or false, got {other:?}"))])),
    }
    if params.contains_key("resourceVersion") {
        return Err(ApiError::invalid(vec![cause("query.resourceVersion", "only used with watch=true")]));
    }
    let listed = state
        .node
        .read(consistency(&params)?, move |s: &ClusterState| {
            let items: Vec<Value> = s
                .list(kind.plural, namespace.as_deref())
                .filter(|(_, o)| selector.matches(o.value.pointer("/metadata/labels")))
                .map(|(_, o)| render(o))
                .collect();
            (s.applied_index(), items)
        })
        .await;
    let (version, items) = match listed {
        Ok(l) => l,
        Err(e) => return Err(read_error(state, e).await),
    };
    Ok(Json(json!({
        "apiVersion": API_VERSION,
        "kind": format!("{}List", kind.kind),
        "metadata": { "resourceVersion": version.to_string() },
        "items": items,
    }))
    .into_response())
}

// ---- watch ------------------------------------------------------------------------------

/// Streams changes as newline-delimited JSON events (`{"type":"ADDED","object":{...}}`), like
/// a Kubernetes watch. From a resourceVersion: every change after it, then live ones. Without
/// one: the current objects as ADDED, a BOOKMARK carrying the version they were read at, then
/// live changes. A client that reconnects (to any orchestrator) with the last version it saw
/// misses nothing and sees nothing twice. Too old a version answers 410 Gone.
async fn watch(state: &AppState, kind: ResourceKind, namespace: Option<String>, selector: LabelSelector, from: Option<u64>) -> Result<Response, ApiError> {
    let matches = {
        let namespace = namespace.clone();
        move |key: &ObjectKey, value: &Value| {
            key.kind == kind.plural
                && namespace.as_ref().is_none_or(|ns| &key.namespace == ns)
                && selector.matches(value.pointer("/metadata/labels"))
        }
    };
    let mut initial = Vec::new();
    let from = match from {
        Some(v) => v,
        None => {
            let filter = matches.clone();
            let listed = state
                .node
                .read(Consistency::Linearizable, move |s: &ClusterState| {
                    let items: Vec<Value> = s
                        .list(kind.plural, None)
                        .filter(|(k, o)| filter(k, &o.value))
                        .map(|(_, o)| event_line("ADDED", render(o)))
                        .collect();
                    (s.applied_index(), items)
                })
                .await;
            let (at, items) = match listed {
                Ok(l) => l,
                Err(e) => return Err(read_error(state, e).await),
            };
            initial = items;
            initial.push(event_line("BOOKMARK", json!({ "kind": kind.kind, "apiVersion": API_VERSION, "metadata": { "resourceVersion": at.to_string() } })));
            at
        }
    };
    let (backlog, live) = state.watch.subscribe(from).map_err(|e| ApiError::status(StatusCode::GONE, StatusReason::Expired, e.to_string()))?;
    let backlog: Vec<Value> = backlog
        .into_iter()
        .filter(|e| matches(&e.key, &e.object.value))
        .map(|e| watch_event_line(&e))
        .collect();
    let first: Vec<Value> = initial.into_iter().chain(backlog).collect();
    let stream = futures::stream::iter(first.into_iter().map(Ok::<_, std::convert::Infallible>)).chain(futures::stream::unfold(
        Some(live),
        move |live| {
            let matches = matches.clone();
            async move {
                let mut live = live?;
                loop {
                    match live.recv().await {
                        Ok(Feed::Event(e)) if matches(&e.key, &e.object.value) => return Some((Ok(watch_event_line(&e)), Some(live))),
                        Ok(Feed::Event(_)) => continue,
                        // The history no longer connects (a snapshot was installed) or this
                        // watcher fell too far behind: the client must list again.
                        Ok(Feed::Reset) | Err(broadcast::error::RecvError::Lagged(_)) => {
                            let status = edgeplane_api::Status::new(410, StatusReason::Expired, "the watch fell behind or the node reset its history: list again");
                            return Some((Ok(event_line("ERROR", serde_json::to_value(status).expect("json"))), None));
                        }
                        Err(broadcast::error::RecvError::Closed) => return None,
                    }
                }
            }
        },
    ));
    let body = axum::body::Body::from_stream(stream.map(|r| r.map(|v| Bytes::from(format!("{v}\n")))));
    Ok(([(axum::http::header::CONTENT_TYPE, "application/json;stream=watch")], body).into_response())
}

fn watch_event_line(e: &WatchEvent) -> Value {
    let mut object = render(&e.object);
    if e.kind == EventType::Deleted {
        // The deletion's own index, so a client resuming from it does not see it again.
        if let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.insert("resourceVersion".to_owned(), json!(e.index.to_string()));
        }
    }
    event_line(e.kind.as_str(), object)
}

fn event_line(kind: &str, object: Value) -> Value {
    json!({ "type": kind, "object": object })
}

async fn events_cluster_scoped(State(s): State<AppState>, Path((plural, name)): Path<(String, String)>) -> Result<Json<Value>, ApiError> {
    Ok(events(&s, &Scope::cluster(&plural)?, &name))
}

async fn events_namespaced(State(s): State<AppState>, Path((ns, plural, name)): Path<(String, String, String)>) -> Result<Json<Value>, ApiError> {
    Ok(events(&s, &Scope::namespaced(&ns, &plural)?, &name))
}

/// The object's recent changes, as this orchestrator recorded them, each described by what
/// it changed. (Scheduling decisions join these once the scheduler exists.)
fn events(state: &AppState, scope: &Scope, name: &str) -> Json<Value> {
    let history = state.watch.history_of(&scope.key(name));
    let mut previous: Option<&Value> = None;
    let mut items = Vec::new();
    for e in &history {
        let now = &e.object.value;
        let what = match (e.kind, previous) {
            (EventType::Added, _) => "created".to_owned(),
            (EventType::Deleted, _) => "deleted".to_owned(),
            (EventType::Modified, before) => {
                let changed = |p: &str| before.is_none_or(|b| b.pointer(p) != now.pointer(p));
                let mut parts = Vec::new();
                if changed("/spec") {
                    parts.push(format!("spec changed (generation {})", now.pointer("/metadata/generation").unwrap_or(&Value::Null)));
                }
                if changed("/status") {
                    parts.push("status changed".to_owned());
                }
                if changed("/metadata/labels") || changed("/metadata/annotations") {
                    parts.push("metadata changed".to_owned());
                }
                if parts.is_empty() { "rewritten without changes".to_owned() } else { parts.join(", ") }
            }
        };
        let mut item = json!({ "type": e.kind.as_str(), "resourceVersion": e.index.to_string(), "message": what });
        // What `edgectl rollout history` lists for a Workload's revisions.
        if let Some(generation) = now.pointer("/metadata/generation") {
            item["generation"] = generation.clone();
        }
        if let Some(module) = now.pointer("/spec/module") {
            item["module"] = module.clone();
        }
        items.push(item);
        previous = Some(now);
    }
    Json(json!({ "kind": "EventList", "items": items }))
}

// ---- writes -----------------------------------------------------------------------------

/// Parses and validates a body as one resource of the scope's kind.
fn parse_body(body: Body, scope: &Scope, name: Option<&str>) -> Result<(Resource, Value), ApiError> {
    if scope.kind.plural == "assignments" {
        return Err(ApiError::status(
            StatusCode::METHOD_NOT_ALLOWED,
            StatusReason::MethodNotAllowed,
            "Assignments are written by the orchestrators' placement controller; change the Workload instead (deleting an Assignment makes the controller place the replica again)",
        ));
    }
    let body = body.map_err(|e| body_error(e, "body", MAX_BODY_BYTES))?;
    let text = std::str::from_utf8(&body).map_err(|_| ApiError::invalid(vec![cause("body", "must be UTF-8 YAML or JSON")]))?;
    let mut value: Value = serde_yaml::from_str(text)
        .map_err(|e| ApiError::invalid(vec![cause("body", format!("not valid YAML or JSON: {e}"))]))?;
    // Fill in what the path already says, and refuse what contradicts it.
    let mut causes = Vec::new();
    if let Some(meta) = value.get_mut("metadata").and_then(Value::as_object_mut) {
        match (meta.get("namespace").and_then(Value::as_str), scope.kind.namespaced) {
            (None, true) => {
                meta.insert("namespace".to_owned(), json!(scope.namespace));
            }
            (Some(ns), true) if ns != scope.namespace => {
                causes.push(cause("metadata.namespace", format!("{ns:?} does not match the namespace in the path ({:?})", scope.namespace)))
            }
            _ => {}
        }
        if let (Some(path_name), Some(body_name)) = (name, meta.get("name").and_then(Value::as_str)) {
            if path_name != body_name {
                causes.push(cause("metadata.name", format!("{body_name:?} does not match the name in the path ({path_name:?})")));
            }
        }
        if name.is_some() && !meta.contains_key("name") {
            meta.insert("name".to_owned(), json!(name));
        }
    }
    if let Some(k) = value.get("kind").and_then(Value::as_str) {
        if k != scope.kind.kind {
            causes.push(cause("kind", format!("must be {} on this path, got {k:?}", scope.kind.kind)));
        }
    }
    if !causes.is_empty() {
        return Err(ApiError::unprocessable(causes));
    }
    let status = value.as_object_mut().and_then(|m| m.remove("status"));
    let resource = manifest::parse_value(value.clone())
        .map_err(|problems| ApiError::unprocessable(problems.into_iter().map(|p| cause(p.field, p.message)).collect()))?;
    if let Some(status) = status {
        value["status"] = status;
    }
    Ok((resource, value))
}

fn body_version(value: &Value) -> Result<Precondition, ApiError> {
    match value.pointer("/metadata/resourceVersion") {
        None => Ok(Precondition::None),
        Some(Value::String(s)) => s.parse::<u64>().map(Precondition::ResourceVersion).map_err(|_| {
            ApiError::invalid(vec![cause("metadata.resourceVersion", format!("{s:?} is not a resourceVersion this server issued"))])
        }),
        Some(other) => Err(ApiError::invalid(vec![cause("metadata.resourceVersion", format!("must be a string, got {other}"))])),
    }
}

async fn write(state: &AppState, key: ObjectKey, resource: Value, precondition: Precondition, write: ResourceWrite) -> Result<(bool, Value), ApiError> {
    match state.node.write(Command::PutResource { key, resource, precondition, write }).await {
        Ok(Applied::Put { object, created, .. }) => Ok((created, render(&object))),
        Ok(Applied::Deleted { .. } | Applied::Transaction(_) | Applied::AppendedData(_)) => unreachable!("a resource write never deletes"),
        Err(e) => Err(write_error(state, e).await),
    }
}

async fn create_cluster_scoped(State(s): State<AppState>, Path(plural): Path<String>, q: RawQuery, body: Body) -> Result<Response, ApiError> {
    create(&s, Scope::cluster(&plural)?, q, body).await
}

async fn create_namespaced(State(s): State<AppState>, Path((ns, plural)): Path<(String, String)>, q: RawQuery, body: Body) -> Result<Response, ApiError> {
    create(&s, Scope::namespaced(&ns, &plural)?, q, body).await
}

async fn create(state: &AppState, scope: Scope, q: RawQuery, body: Body) -> Result<Response, ApiError> {
    query(q, &[])?;
    let (resource, value) = parse_body(body, &scope, None)?;
    let key = scope.key(resource.name());
    let created_at = rfc3339_now();
    let (_, object) = write(state, key, value, Precondition::None, ResourceWrite::Create { created_at }).await?;
    Ok((StatusCode::CREATED, Json(object)).into_response())
}

async fn replace_cluster_scoped(State(s): State<AppState>, Path((plural, name)): Path<(String, String)>, q: RawQuery, body: Body) -> Result<Json<Value>, ApiError> {
    replace(&s, Scope::cluster(&plural)?, &name, q, body).await
}

async fn replace_namespaced(
    State(s): State<AppState>,
    Path((ns, plural, name)): Path<(String, String, String)>,
    q: RawQuery,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    replace(&s, Scope::namespaced(&ns, &plural)?, &name, q, body).await
}

async fn replace(state: &AppState, scope: Scope, name: &str, q: RawQuery, body: Body) -> Result<Json<Value>, ApiError> {
    query(q, &[])?;
    let (_, value) = parse_body(body, &scope, Some(name))?;
    let precondition = body_version(&value)?;
    let (_, object) = write(state, scope.key(name), value, precondition, ResourceWrite::Replace).await?;
    Ok(Json(object))
}

async fn status_cluster_scoped(State(s): State<AppState>, Path((plural, name)): Path<(String, String)>, q: RawQuery, body: Body) -> Result<Json<Value>, ApiError> {
    write_status(&s, Scope::cluster(&plural)?, &name, q, body).await
}

async fn status_namespaced(
    State(s): State<AppState>,
    Path((ns, plural, name)): Path<(String, String, String)>,
    q: RawQuery,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    write_status(&s, Scope::namespaced(&ns, &plural)?, &name, q, body).await
}

async fn write_status(state: &AppState, scope: Scope, name: &str, q: RawQuery, body: Body) -> Result<Json<Value>, ApiError> {
    query(q, &[])?;
    let (resource, value) = parse_body(body, &scope, Some(name))?;
    // The status must fit the kind's status type.
    let status = value.get("status").cloned().unwrap_or(Value::Null);
    let typed = match resource {
        Resource::EdgeNode(_) => serde_json::from_value::<edgeplane_api::resources::EdgeNodeStatus>(status).map(drop),
        Resource::Workload(_) => serde_json::from_value::<edgeplane_api::resources::WorkloadStatus>(status).map(drop),
        Resource::Module(_) | Resource::Model(_) => {
            return Err(ApiError::status(StatusCode::NOT_FOUND, StatusReason::NotFound, format!("{} has no status", scope.kind.kind)))
        }
    };
    typed.map_err(|e| ApiError::unprocessable(vec![cause("status", e.to_string())]))?;
    let precondition = body_version(&value)?;
    let (_, object) = write(state, scope.key(name), value, precondition, ResourceWrite::Status).await?;
    Ok(Json(object))
}

async fn patch_cluster_scoped(
    State(s): State<AppState>,
    Path((plural, name)): Path<(String, String)>,
    headers: HeaderMap,
    q: RawQuery,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    patch(&s, Scope::cluster(&plural)?, &name, &headers, q, body).await
}

async fn patch_namespaced(
    State(s): State<AppState>,
    Path((ns, plural, name)): Path<(String, String, String)>,
    headers: HeaderMap,
    q: RawQuery,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    patch(&s, Scope::namespaced(&ns, &plural)?, &name, &headers, q, body).await
}

/// JSON merge patch (RFC 7386): read, patch, validate, and compare-and-swap on the version
/// read, retrying when another write got in between.
async fn patch(state: &AppState, scope: Scope, name: &str, headers: &HeaderMap, q: RawQuery, body: Body) -> Result<Json<Value>, ApiError> {
    query(q, &[])?;
    let content_type = headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("");
    if !content_type.starts_with("application/merge-patch+json") {
        return Err(ApiError::status(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            StatusReason::BadRequest,
            format!("PATCH takes application/merge-patch+json, got {content_type:?}"),
        ));
    }
    let body = body.map_err(|e| ApiError::invalid(vec![cause("body", e.body_text())]))?;
    let patch: Value = serde_json::from_slice(&body).map_err(|e| ApiError::invalid(vec![cause("body", format!("not valid JSON: {e}"))]))?;
    let key = scope.key(name);
    for _ in 0..PATCH_ATTEMPTS {
        let lookup = key.clone();
        let current = match state.node.read(Consistency::Linearizable, move |s| s.get(&lookup).cloned()).await {
            Ok(Some(o)) => o,
            Ok(None) => return Err(not_found(&scope, name)),
            Err(e) => return Err(read_error(state, e).await),
        };
        let mut patched = render(&current);
        merge_patch(&mut patched, &patch);
        if let Some(meta) = patched.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.remove("resourceVersion");
        }
        let text = serde_json::to_vec(&patched).expect("JSON values serialize");
        let (_, value) = parse_body(Ok(text.into()), &scope, Some(name))?;
        let precondition = Precondition::ResourceVersion(current.resource_version);
        match state.node.write(Command::PutResource { key: key.clone(), resource: value, precondition, write: ResourceWrite::Replace }).await {
            Ok(Applied::Put { object, .. }) => return Ok(Json(render(&object))),
            Ok(Applied::Deleted { .. } | Applied::Transaction(_) | Applied::AppendedData(_)) => unreachable!("a resource write never deletes"),
            Err(WriteError::Rejected(ApplyError::Conflict { .. })) => continue,
            Err(e) => return Err(write_error(state, e).await),
        }
    }
    Err(ApiError::status(
        StatusCode::CONFLICT,
        StatusReason::Conflict,
        format!("{} {name:?} kept changing; the patch lost {PATCH_ATTEMPTS} races in a row", scope.kind.kind),
    ))
}

/// RFC 7386: objects merge recursively, `null` removes, anything else replaces.
fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(entries) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = json!({});
    }
    let map = target.as_object_mut().expect("made an object above");
    for (k, v) in entries {
        if v.is_null() {
            map.remove(k);
        } else {
            merge_patch(map.entry(k.clone()).or_insert(Value::Null), v);
        }
    }
}

async fn delete_cluster_scoped(State(s): State<AppState>, Path((plural, name)): Path<(String, String)>, q: RawQuery) -> Result<Json<Value>, ApiError> {
    delete(&s, Scope::cluster(&plural)?, &name, q).await
}

async fn delete_namespaced(State(s): State<AppState>, Path((ns, plural, name)): Path<(String, String, String)>, q: RawQuery) -> Result<Json<Value>, ApiError> {
    delete(&s, Scope::namespaced(&ns, &plural)?, &name, q).await
}

async fn delete(state: &AppState, scope: Scope, name: &str, q: RawQuery) -> Result<Json<Value>, ApiError> {
    let params = query(q, &["resourceVersion"])?;
    let precondition = match params.get("resourceVersion") {
        None => Precondition::None,
        Some(v) => Precondition::ResourceVersion(v.parse().map_err(|_| {
            ApiError::invalid(vec![cause("query.resourceVersion", format!("{v:?} is not a resourceVersion"))])
        })?),
    };
    match state.node.write(Command::Delete { key: scope.key(name), precondition }).await {
        Ok(Applied::Deleted { previous, .. }) => Ok(Json(render(&previous))),
        Ok(Applied::Put { .. } | Applied::Transaction(_) | Applied::AppendedData(_)) => unreachable!("a delete never puts"),
        Err(WriteError::Rejected(ApplyError::NotFound { .. })) => Err(not_found(&scope, name)),
        Err(e) => Err(write_error(state, e).await),
    }
}

// ---- label selectors ----------------------------------------------------------------------

/// Kubernetes label selector syntax: `k=v`, `k==v`, `k!=v`, `k`, `!k`, `k in (a,b)`,
/// `k notin (a,b)`, joined by commas (all must hold).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelSelector(Vec<Requirement>);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Requirement {
    Equals(String, String),
    NotEquals(String, String),
    Exists(String),
    NotExists(String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
}

impl LabelSelector {
    pub fn parse(text: &str) -> Result<LabelSelector, String> {
        let mut requirements = Vec::new();
        let mut depth = 0;
        let mut start = 0;
        let mut parts = Vec::new();
        for (i, c) in text.char_indices() {
            match c {
                '(' => depth += 1,
                ')' => depth -= 1,
                ',' if depth == 0 => {
                    parts.push(&text[start..i]);
                    start = i + 1;
                }
                _ => {}
            }
        }
        parts.push(&text[start..]);
        for part in parts.into_iter().map(str::trim).filter(|p| !p.is_empty()) {
            requirements.push(Self::requirement(part)?);
        }
        Ok(LabelSelector(requirements))
    }

    fn requirement(part: &str) -> Result<Requirement, String> {
        let key = |k: &str| -> Result<String, String> {
            let k = k.trim();
            edgeplane_api::validate::label_key(k).map_err(|e| format!("in {part:?}: {e}"))?;
            Ok(k.to_owned())
        };
        let set = |rest: &str| -> Result<Vec<String>, String> {
            let inner = rest.trim().strip_prefix('(').and_then(|r| r.strip_suffix(')')).ok_or(format!("in {part:?}: expected (a,b,...)"))?;
            Ok(inner.split(',').map(|v| v.trim().to_owned()).filter(|v| !v.is_empty()).collect())
        };
        if let Some(k) = part.strip_prefix('!') {
            return Ok(Requirement::NotExists(key(k)?));
        }
        if let Some((k, v)) = part.split_once("!=") {
            return Ok(Requirement::NotEquals(key(k)?, v.trim().to_owned()));
        }
        if let Some((k, v)) = part.split_once("==").or_else(|| part.split_once('=')) {
            return Ok(Requirement::Equals(key(k)?, v.trim().to_owned()));
        }
        if let Some((k, rest)) = part.split_once(" notin ") {
            return Ok(Requirement::NotIn(key(k)?, set(rest)?));
        }
        if let Some((k, rest)) = part.split_once(" in ") {
            return Ok(Requirement::In(key(k)?, set(rest)?));
        }
        Ok(Requirement::Exists(key(part)?))
    }

    fn matches(&self, labels: Option<&Value>) -> bool {
        let get = |k: &str| labels.and_then(|l| l.get(k)).and_then(Value::as_str);
        self.0.iter().all(|r| match r {
            Requirement::Equals(k, v) => get(k) == Some(v.as_str()),
            Requirement::NotEquals(k, v) => get(k) != Some(v.as_str()),
            Requirement::Exists(k) => get(k).is_some(),
            Requirement::NotExists(k) => get(k).is_none(),
            Requirement::In(k, vs) => get(k).is_some_and(|x| vs.iter().any(|v| v == x)),
            Requirement::NotIn(k, vs) => get(k).is_none_or(|x| vs.iter().all(|v| v != x)),
        })
    }
}

/// The current UTC time as RFC 3339, for creation timestamps.
pub(crate) fn rfc3339_now() -> String {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs()) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_selectors_follow_kubernetes_syntax() {
        let labels = json!({ "line": "a", "zone": "hall-1" });
        let cases = [
            ("line=a", true),
            ("line==a,zone=hall-1", true),
            ("line!=a", false),
            ("line", true),
            ("!line", false),
            ("!tier", true),
            ("zone in (hall-1, hall-2)", true),
            ("zone notin (hall-1)", false),
            ("line=b", false),
            ("", true),
        ];
        for (selector, expected) in cases {
            let parsed = LabelSelector::parse(selector).unwrap_or_else(|e| panic!("{selector:?}: {e}"));
            assert_eq!(parsed.matches(Some(&labels)), expected, "{selector:?}");
        }
        assert!(LabelSelector::parse("bad key=1").is_err());
        assert!(LabelSelector::parse("zone in hall-1").is_err());
    }

    #[test]
    fn merge_patch_follows_rfc_7386() {
        let mut target = json!({ "a": "b", "c": { "d": "e", "f": "g" } });
        merge_patch(&mut target, &json!({ "a": "z", "c": { "f": null } }));
        assert_eq!(target, json!({ "a": "z", "c": { "d": "e" } }));
        merge_patch(&mut target, &json!({ "c": [1, 2] }));
        assert_eq!(target["c"], json!([1, 2]));
    }

    #[test]
    fn timestamps_are_rfc_3339() {
        let now = rfc3339_now();
        assert_eq!(now.len(), 20, "{now}");
        assert!(now.starts_with("20") && now.ends_with('Z') && &now[10..11] == "T", "{now}");
    }
}
