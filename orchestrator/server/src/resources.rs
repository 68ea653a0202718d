//! The resource API, in Kubernetes' shape:
//!
//! ```text
//! /apis/edgeplane.io/v1alpha1/edgenodes[/{name}[/status|/events]]                   (cluster-scoped)
//! /apis/edgeplane.io/v1alpha1/namespaces/{ns}/{plural}[/{name}[/status|/events]]    (namespaced)
//! /apis/edgeplane.io/v1alpha1/{plural}                                              (all namespaces)
//! ```
//!
//! POST creates, GET reads or lists (`labelSelector`, `consistency=stale`) or watches
//! (`watch=true`, see [`edgeplane_api::watch`]), PUT replaces (compare-and-swap when the body
//! carries `metadata.resourceVersion`), PATCH applies a JSON merge patch, DELETE deletes
//! (`?resourceVersion=` as precondition), and `/status` reads or writes the status alone.
//! Every body is validated as a manifest (see `edgeplane_api::manifest`) before anything
//! reaches Raft; invalid ones get 422 with every problem and its field path (400 when the
//! request itself is malformed). A Workload written with a module or Model that does not exist
//! is stored, and the answer carries a `Warning` header saying why it will stay pending.
//!
//! One handler serves each verb on both path shapes: [`Target`] reads the kind, namespace and
//! name from whichever shape matched.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use edgeplane_api::manifest::{self, Resource};
use edgeplane_api::resources::{ResourceKind, API_VERSION};
use edgeplane_api::selector::{FieldSelector, LabelSelector, OBJECT_FIELDS};
use edgeplane_api::table::{self, IncludeObject};
use edgeplane_api::watch::WatchEventType;
use edgeplane_api::{Consistency, StatusReason};
use edgeplane_core::{Applied, ApplyError, ClusterState, Command, ObjectKey, Precondition, ResourceWrite, StoredObject};
use edgeplane_raft::watch::{Change, Next, WatchEvent};
use edgeplane_raft::WriteError;
use futures::StreamExt as _;
use serde_json::{json, Value};

use crate::app::AppState;
use crate::auth::Audit;
use crate::http::{
    body_error, cause, consistency, field_selector_param, include_object_param, off_reactor, only_params, read, resource_version_param,
    rfc3339_now, write_error, write_params, ApiError, RawQuery, MAX_BODY_BYTES,
};

use edgeplane_api::paths::RESOURCES as PREFIX;
/// Read-modify-write attempts of a PATCH that keeps losing compare-and-swap races.
const PATCH_ATTEMPTS: usize = 5;

/// What a resource path points at: a kind, the namespace in the path (if the path has one)
/// and the object's name (on object paths).
pub(crate) struct Target {
    kind: ResourceKind,
    namespace: Option<String>,
    name: Option<String>,
}

/// Where an object lives: its kind, and for namespaced kinds its namespace.
struct Scope {
    kind: ResourceKind,
    namespace: String,
}

impl Scope {
    fn key(&self, name: &str) -> ObjectKey {
        ObjectKey::new(self.kind.plural, self.namespace.clone(), name)
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Target {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Target, ApiError> {
        let Path(params) = Path::<BTreeMap<String, String>>::from_request_parts(parts, state)
            .await
            .map_err(|e| ApiError::invalid(vec![cause("path", e.body_text())]))?;
        let plural = params.get("plural").map(String::as_str).unwrap_or_default();
        let kind = ResourceKind::by_plural(plural).ok_or_else(|| {
            let served: Vec<&str> = edgeplane_api::resources::KINDS.iter().map(|k| k.plural).collect();
            ApiError::not_found(format!("no resource type {plural:?}; this API serves {}", served.join(", ")))
        })?;
        let namespace = params.get("ns").cloned();
        if let Some(ns) = &namespace {
            if !kind.namespaced {
                return Err(ApiError::not_found(format!("{} are cluster-scoped: use {PREFIX}/{}", kind.plural, kind.plural)));
            }
            edgeplane_api::validate::dns_label(ns).map_err(|e| ApiError::invalid(vec![cause("path.namespace", e)]))?;
        }
        Ok(Target { kind, namespace, name: params.get("name").cloned() })
    }
}

impl Target {
    /// The scope of one object: a namespaced kind needs the namespace in the path.
    fn scope(&self) -> Result<Scope, ApiError> {
        match (&self.namespace, self.kind.namespaced) {
            (Some(ns), _) => Ok(Scope { kind: self.kind, namespace: ns.clone() }),
            (None, false) => Ok(Scope { kind: self.kind, namespace: String::new() }),
            (None, true) => Err(ApiError::not_found(format!(
                "{} are namespaced: use {PREFIX}/namespaces/{{namespace}}/{}",
                self.kind.plural, self.kind.plural
            ))),
        }
    }

    /// The object's scope and name (object routes always have a name).
    fn object(&self) -> Result<(Scope, &str), ApiError> {
        Ok((self.scope()?, self.name.as_deref().unwrap_or_default()))
    }
}

type Body = Result<Bytes, BytesRejection>;

/// The resource as clients see it: the stored value with its resourceVersion.
pub(crate) fn render(object: &StoredObject) -> Value {
    let mut v = Value::clone(&object.value);
    if let Some(meta) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.insert("resourceVersion".to_owned(), json!(object.resource_version.to_string()));
    }
    v
}

fn not_found(scope: &Scope, name: &str) -> ApiError {
    let place = if scope.namespace.is_empty() { String::new() } else { format!(" in namespace {}", scope.namespace) };
    ApiError::not_found(format!("{} {name:?} not found{place}", scope.kind.kind))
}

// ---- reads ------------------------------------------------------------------------------

/// How an answer shows objects: as themselves, or as the rows of a `meta.k8s.io/v1` Table
/// (kubectl's `get` asks for one in its `Accept` header) with the columns of
/// [`edgeplane_api::table`].
#[derive(Debug, Clone, Copy)]
enum Shape {
    Objects,
    Table(IncludeObject),
}

impl Shape {
    fn of(headers: &HeaderMap, params: &std::collections::BTreeMap<String, String>) -> Result<Shape, ApiError> {
        let include = include_object_param(params)?;
        let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
        Ok(if table::wants_table(accept) { Shape::Table(include) } else { Shape::Objects })
    }
}

pub(crate) async fn read_one(
    State(state): State<AppState>,
    target: Target,
    headers: HeaderMap,
    q: RawQuery,
) -> Result<Json<Value>, ApiError> {
    let params = only_params(q, &["consistency", "includeObject"])?;
    let shape = Shape::of(&headers, &params)?;
    let (scope, name) = target.object()?;
    match read(&state, consistency(&params)?).await?.get(&scope.key(name)) {
        Some(object) => Ok(Json(match shape {
            Shape::Objects => render(object),
            Shape::Table(include) => table::table(scope.kind, &[render(object)], include, json!({})),
        })),
        None => Err(not_found(&scope, name)),
    }
}

pub(crate) async fn list(State(state): State<AppState>, target: Target, headers: HeaderMap, q: RawQuery) -> Result<Response, ApiError> {
    let params = only_params(
        q,
        &["consistency", "labelSelector", "fieldSelector", "watch", "resourceVersion", "limit", "continue", "includeObject"],
    )?;
    let shape = Shape::of(&headers, &params)?;
    let page = Page::from_params(&params)?;
    let selector = match params.get("labelSelector") {
        Some(s) => LabelSelector::parse(s).map_err(|e| ApiError::invalid(vec![cause("query.labelSelector", e)]))?,
        None => LabelSelector::default(),
    };
    let fields = field_selector_param(&params, OBJECT_FIELDS)?;
    let filter = Filter { kind: target.kind, namespace: target.namespace, selector, fields };
    match params.get("watch").map(String::as_str) {
        None | Some("false") => {}
        Some("true") => return watch(&state, filter, resource_version_param(&params)?, shape).await,
        Some(other) => return Err(ApiError::invalid(vec![cause("query.watch", format!("must be true or false, got {other:?}"))])),
    }
    let resource_version = resource_version_param(&params)?;
    let snapshot = read(&state, list_consistency(&params, resource_version)?).await?;
    let kind = filter.kind;
    let (version, (items, rest)) = off_reactor(move || (snapshot.applied_index(), page.take(filter.matching(&snapshot), render))).await?;
    let mut metadata = json!({ "resourceVersion": version.to_string() });
    if let Some((next, remaining)) = rest {
        metadata["continue"] = json!(next);
        metadata["remainingItemCount"] = json!(remaining);
    }
    if let Shape::Table(include) = shape {
        return Ok(Json(table::table(kind, &items, include, metadata)).into_response());
    }
    Ok(Json(json!({
        "apiVersion": API_VERSION,
        "kind": format!("{}List", kind.kind),
        "metadata": metadata,
        "items": items,
    }))
    .into_response())
}

/// The consistency of a list: at a `resourceVersion` it means "at least that new" (0: any),
/// which a linearizable read always is and a stale one may not be.
pub(crate) fn list_consistency(params: &BTreeMap<String, String>, resource_version: Option<u64>) -> Result<Consistency, ApiError> {
    // Read the parameter even when the version decides, so that a malformed one is refused.
    let asked = consistency(params)?;
    Ok(if resource_version.unwrap_or(0) > 0 { Consistency::Linearizable } else { asked })
}

/// A page of a list: at most `limit` items, after the object a `continue` token names. Each
/// page is read from the state current when it is asked for (there is no multi-version
/// store to read an earlier one from): an object created or deleted between pages shows up
/// on a later page or not at all, but no object appears twice.
pub(crate) struct Page {
    limit: Option<u64>,
    after: Option<(String, String)>,
}

impl Page {
    pub fn from_params(params: &std::collections::BTreeMap<String, String>) -> Result<Page, ApiError> {
        // An int64, as Kubernetes takes it (and the OpenAPI document says).
        let limit = match params.get("limit").map(|v| v.parse::<i64>()) {
            None | Some(Ok(0)) => None,
            Some(Ok(n)) if n > 0 => Some(n.unsigned_abs()),
            Some(_) => return Err(ApiError::invalid(vec![cause("query.limit", "must be an integer from 0 to 2^63-1")])),
        };
        let after = match params.get("continue").filter(|t| !t.is_empty()) {
            None => None,
            Some(token) => Some(Page::parse_token(token).ok_or_else(|| {
                ApiError::invalid(vec![cause("query.continue", "is not a continue token: the namespace/name of the last object on a page")])
            })?),
        };
        Ok(Page { limit, after })
    }

    /// This page of `objects` (listed in key order), each shown by `show`; when more follow,
    /// the continue token naming the last one shown and how many are left.
    pub fn take<'s>(
        &self,
        objects: impl Iterator<Item = (&'s ObjectKey, &'s StoredObject)>,
        show: impl Fn(&StoredObject) -> Value,
    ) -> (Vec<Value>, Option<(String, u64)>) {
        let mut items = Vec::new();
        let mut last: Option<&ObjectKey> = None;
        let mut remaining = 0u64;
        let after = objects.filter(|(k, _)| self.after.as_ref().is_none_or(|after| (&k.namespace, &k.name) > (&after.0, &after.1)));
        for (key, object) in after {
            if self.limit.is_some_and(|limit| items.len() as u64 >= limit) {
                remaining += 1;
                continue;
            }
            items.push(show(object));
            last = Some(key);
        }
        let rest = last.filter(|_| remaining > 0).map(|k| (Page::token(&k.namespace, &k.name), remaining));
        (items, rest)
    }

    /// The position after which the next page starts (`grammar::CONTINUE`): readable rather
    /// than opaque, because every well-formed position is a valid place to continue from.
    fn token(namespace: &str, name: &str) -> String {
        format!("{namespace}/{name}")
    }

    fn parse_token(token: &str) -> Option<(String, String)> {
        let (namespace, name) = token.split_once('/').filter(|_| edgeplane_api::grammar::CONTINUE.matches(token))?;
        Some((namespace.to_owned(), name.to_owned()))
    }
}

/// Which objects a list or watch covers.
#[derive(Clone)]
struct Filter {
    kind: ResourceKind,
    namespace: Option<String>,
    selector: LabelSelector,
    fields: FieldSelector,
}

impl Filter {
    fn matches(&self, key: &ObjectKey, value: &Value) -> bool {
        key.kind == self.kind.plural
            && self.namespace.as_ref().is_none_or(|ns| &key.namespace == ns)
            && self.selector.matches(value.pointer("/metadata/labels"))
            && self.fields.matches_object(&key.namespace, &key.name)
    }

    fn matching<'s>(&'s self, state: &'s ClusterState) -> impl Iterator<Item = (&'s ObjectKey, &'s StoredObject)> + 's {
        state.list(self.kind.plural, self.namespace.as_deref()).filter(|(k, o)| self.matches(k, &o.value))
    }
}

// ---- watch ------------------------------------------------------------------------------

/// A watch of resources, as objects or as Table rows ([`stream_changes`]).
async fn watch(state: &AppState, filter: Filter, from: Option<u64>, shape: Shape) -> Result<Response, ApiError> {
    let kind = filter.kind;
    // In a Table watch every object (bookmarks too) travels as a Table of one row (or none).
    let present = move |mut event: Value| {
        if let Shape::Table(include) = shape {
            let object = event["object"].take();
            event["object"] = match event["type"].as_str() {
                Some("ERROR") => object,
                Some("BOOKMARK") => table::table(kind, &[], include, object["metadata"].clone()),
                _ => table::table(
                    kind,
                    std::slice::from_ref(&object),
                    include,
                    json!({ "resourceVersion": object["metadata"]["resourceVersion"] }),
                ),
            };
        }
        event
    };
    let source = Source {
        plural: kind.plural,
        namespace: filter.namespace.clone(),
        matches: Arc::new(move |key, value| filter.matches(key, value)),
        present: Arc::new(present),
        kind: kind.kind,
        api_version: API_VERSION,
    };
    stream_changes(state, source, from).await
}

/// Whether a stored object (by key and value) belongs to a watch.
pub(crate) type Matches = Arc<dyn Fn(&ObjectKey, &Value) -> bool + Send + Sync>;

/// What a watch streams: which stored objects, and how the client sees each event.
#[derive(Clone)]
pub(crate) struct Source {
    pub plural: &'static str,
    pub namespace: Option<String>,
    pub matches: Matches,
    /// An event (`{"type", "object"}`, the object rendered with its resourceVersion) as sent.
    pub present: Arc<dyn Fn(Value) -> Value + Send + Sync>,
    /// What bookmarks say they are.
    pub kind: &'static str,
    pub api_version: &'static str,
}

/// Streams changes as newline-delimited JSON events (see [`edgeplane_api::watch`]). From a
/// resourceVersion: every change after it, then live ones. Without one: the current objects
/// as ADDED, a BOOKMARK carrying the version they were read at, then live changes. A client
/// that reconnects (to any orchestrator) with the last version it saw misses nothing and sees
/// nothing twice. Too old a version answers 410 Gone.
pub(crate) async fn stream_changes(state: &AppState, source: Source, from: Option<u64>) -> Result<Response, ApiError> {
    let mut initial = Vec::new();
    let from = match from {
        Some(v) => v,
        None => {
            let snapshot = read(state, Consistency::Linearizable).await?;
            let listing = source.clone();
            let (at, items) = off_reactor(move || {
                let items: Vec<Value> = snapshot
                    .list(listing.plural, listing.namespace.as_deref())
                    .filter(|(k, o)| (listing.matches)(k, &o.value))
                    .map(|(_, o)| event_line(WatchEventType::Added, render(o)))
                    .collect();
                (snapshot.applied_index(), items)
            })
            .await?;
            initial = items;
            let bookmark =
                json!({ "kind": source.kind, "apiVersion": source.api_version, "metadata": { "resourceVersion": at.to_string() } });
            initial.push(event_line(WatchEventType::Bookmark, bookmark));
            at
        }
    };
    let subscription = state.watch.subscribe(from).map_err(|e| ApiError::status(StatusCode::GONE, StatusReason::Expired, e.to_string()))?;
    // The hub carries every kind's changes: the source's kind and namespace decide here, as
    // the listing above decides by them, whatever else `matches` checks.
    let (plural, namespace, selected) = (source.plural, source.namespace.clone(), Arc::clone(&source.matches));
    let matches = Arc::new(move |key: &ObjectKey, value: &Value| {
        key.kind == plural && namespace.as_ref().is_none_or(|ns| &key.namespace == ns) && selected(key, value)
    });
    let live = futures::stream::unfold(Some(subscription), move |subscription| {
        let matches = Arc::clone(&matches);
        async move {
            let mut subscription = subscription?;
            loop {
                match subscription.next().await {
                    Next::Event(e) if matches(&e.key, &e.object.value) => return Some((watch_event_line(&e), Some(subscription))),
                    Next::Event(_) => continue,
                    // The history no longer connects (a snapshot was installed) or this
                    // watcher fell too far behind: the client must list again.
                    Next::Expired => {
                        let status = edgeplane_api::Status::new(
                            410,
                            StatusReason::Expired,
                            "the watch fell behind or the node reset its history: list again",
                        );
                        return Some((event_line(WatchEventType::Error, serde_json::to_value(status).expect("json")), None));
                    }
                    Next::Closed => return None,
                }
            }
        }
    });
    let present = source.present;
    let stream = futures::stream::iter(initial)
        .chain(live)
        .map(move |line| Ok::<_, std::convert::Infallible>(Bytes::from(format!("{}\n", present(line)))));
    Ok(([(header::CONTENT_TYPE, "application/json;stream=watch")], axum::body::Body::from_stream(stream)).into_response())
}

fn watch_event_line(e: &WatchEvent) -> Value {
    let mut object = render(&e.object);
    if e.kind == Change::Deleted {
        // The deletion's own index, so a client resuming from it does not see it again.
        if let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.insert("resourceVersion".to_owned(), json!(e.index.to_string()));
        }
    }
    event_line(e.kind.event_type(), object)
}

fn event_line(type_: WatchEventType, object: Value) -> Value {
    serde_json::to_value(edgeplane_api::watch::WatchEvent::new(type_, object)).expect("json")
}

pub(crate) async fn events(State(state): State<AppState>, target: Target) -> Result<Json<Value>, ApiError> {
    let (scope, name) = target.object()?;
    Ok(change_history(&state, &scope.key(name)))
}

/// The object's recent changes, as this orchestrator recorded them, each described by what
/// it changed.
fn change_history(state: &AppState, key: &ObjectKey) -> Json<Value> {
    let history = state.watch.history_of(key);
    let mut previous: Option<&Value> = None;
    let mut items = Vec::new();
    for e in &history {
        let now = &e.object.value;
        let what = match (e.kind, previous) {
            (Change::Added, _) => "created".to_owned(),
            (Change::Deleted, _) => "deleted".to_owned(),
            (Change::Modified, before) => {
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
                if parts.is_empty() {
                    "rewritten without changes".to_owned()
                } else {
                    parts.join(", ")
                }
            }
        };
        let mut item = json!({ "type": e.kind.event_type(), "resourceVersion": e.index.to_string(), "message": what });
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

/// Refuses a write to a kind people do not write (405, with the methods the route takes).
fn writable(scope: &Scope, allow: &'static str) -> Result<(), ApiError> {
    if scope.kind.plural == "assignments" {
        return Err(ApiError::method_not_allowed(
            allow,
            "Assignments are written by the orchestrators' placement controller; change the Workload instead (deleting an Assignment makes the controller place the replica again)",
        ));
    }
    Ok(())
}

/// Parses and validates a body as one resource of the scope's kind.
fn parse_body(body: Body, scope: &Scope, name: Option<&str>) -> Result<(Resource, Value), ApiError> {
    let body = body.map_err(|e| body_error(e, "body", MAX_BODY_BYTES))?;
    let text = std::str::from_utf8(&body).map_err(|_| ApiError::invalid(vec![cause("body", "must be UTF-8 YAML or JSON")]))?;
    let mut value: Value = edgeplane_api::manifest::yaml_value(text)
        .map_err(|e| ApiError::invalid(vec![cause("body", format!("not valid YAML or JSON: {e}"))]))?;
    // Fill in what the path already says, and refuse what contradicts it.
    let mut causes = Vec::new();
    if let Some(meta) = value.get_mut("metadata").and_then(Value::as_object_mut) {
        match (meta.get("namespace"), scope.kind.namespaced) {
            (None | Some(Value::Null), true) => {
                meta.insert("namespace".to_owned(), json!(scope.namespace));
            }
            (Some(Value::String(ns)), true) if *ns != scope.namespace => {
                causes.push(cause("metadata.namespace", format!("{ns:?} does not match the namespace in the path ({:?})", scope.namespace)))
            }
            (Some(Value::String(_)), _) | (None | Some(Value::Null), false) => {}
            (Some(other), _) => causes.push(cause("metadata.namespace", format!("must be a string, got {other}"))),
        }
        if let (Some(path_name), Some(body_name)) = (name, meta.get("name").and_then(Value::as_str)) {
            if path_name != body_name {
                causes.push(cause("metadata.name", format!("{body_name:?} does not match the name in the path ({path_name:?})")));
            }
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
    if let Some(status) = status.as_ref().filter(|s| !s.is_null()) {
        check_status(scope.kind.kind, status)?;
    }
    let resource = manifest::parse_value(&value)
        .map_err(|problems| ApiError::unprocessable(problems.into_iter().map(|p| cause(p.field, p.message)).collect()))?;
    if let Some(status) = status {
        value["status"] = status;
    }
    Ok((resource, value))
}

/// A status as its kind's status type reads it, with no field the type does not know: what
/// a status write stores, and what a create or replace may carry (and leaves to the
/// orchestrators) without being refused.
fn check_status(kind: &str, status: &Value) -> Result<(), ApiError> {
    use edgeplane_api::resources::{EdgeNodeStatus, WorkloadStatus};
    fn typed<T: serde::de::DeserializeOwned + serde::Serialize>(status: &Value) -> Result<Value, String> {
        let read: T = serde_json::from_value(status.clone()).map_err(|e| e.to_string())?;
        Ok(serde_json::to_value(read).expect("statuses serialize"))
    }
    let read = match kind {
        "EdgeNode" => typed::<EdgeNodeStatus>(status),
        "Workload" => typed::<WorkloadStatus>(status),
        _ => Err(format!("a {kind} has no status")),
    };
    let read = read.map_err(|e| ApiError::unprocessable(vec![cause("status", e)]))?;
    let mut unknown = Vec::new();
    unknown_fields(status, &read, "status", &mut unknown);
    if unknown.is_empty() {
        Ok(())
    } else {
        Err(ApiError::unprocessable(unknown.into_iter().map(|field| cause(field, "unknown field")).collect()))
    }
}

/// The fields of `given` that reading it into a type dropped (`read` is the type written back).
fn unknown_fields(given: &Value, read: &Value, path: &str, out: &mut Vec<String>) {
    match (given, read) {
        (Value::Object(given), Value::Object(read)) => {
            for (key, value) in given {
                match read.get(key) {
                    Some(kept) => unknown_fields(value, kept, &format!("{path}.{key}"), out),
                    None if value.is_null() => {}
                    None => out.push(format!("{path}.{key}")),
                }
            }
        }
        (Value::Array(given), Value::Array(read)) => {
            for (i, (value, kept)) in given.iter().zip(read).enumerate() {
                unknown_fields(value, kept, &format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

fn body_version(value: &Value) -> Result<Precondition, ApiError> {
    match value.pointer("/metadata/resourceVersion") {
        // Empty, as Kubernetes reads it: no precondition.
        None => Ok(Precondition::None),
        Some(Value::String(s)) if s.is_empty() => Ok(Precondition::None),
        Some(Value::String(s)) => s.parse::<u64>().map(Precondition::ResourceVersion).map_err(|_| {
            ApiError::invalid(vec![cause("metadata.resourceVersion", format!("{s:?} is not a resourceVersion this server issued"))])
        }),
        Some(other) => Err(ApiError::invalid(vec![cause("metadata.resourceVersion", format!("must be a string, got {other}"))])),
    }
}

async fn put_resource(
    state: &AppState,
    audit: &Audit,
    key: ObjectKey,
    resource: Value,
    precondition: Precondition,
    write: ResourceWrite,
) -> Result<(bool, Value), ApiError> {
    match crate::http::write(state, audit, Command::PutResource { key, resource, precondition, write }).await {
        Ok(Applied::Put { object, created, .. }) => Ok((created, render(&object))),
        Ok(_) => unreachable!("a resource write never deletes"),
        Err(e) => Err(write_error(state, e).await),
    }
}

/// What the API refuses on top of a resource's own rules: built-in role names, and Workloads
/// that send to HTTP endpoints no SinkPolicy allows (the orchestrators must not be a way to
/// reach addresses their operators did not choose).
fn admit(state: &AppState, scope: &Scope, resource: &Resource) -> Result<(), ApiError> {
    match resource {
        Resource::ClusterRole(_) if edgeplane_core::authz::BUILTIN_ROLES.contains(&resource.name()) => {
            Err(ApiError::unprocessable(vec![cause(
                "metadata.name",
                format!("{:?} is a built-in ClusterRole and cannot be replaced", resource.name()),
            )]))
        }
        Resource::Workload(workload) => {
            let latest = state.node.latest();
            let mut causes = Vec::new();
            for (i, output) in workload.spec.outputs.iter().enumerate() {
                let Some(url) = output.sink.as_ref().and_then(|s| s.url.as_deref()) else { continue };
                if !crate::policy::http_sink_allowed(&latest, &scope.namespace, url) {
                    causes.push(cause(
                        format!("spec.outputs[{i}].sink.url"),
                        format!(
                            "{url:?} is not allowed by any SinkPolicy in namespace {} or ClusterSinkPolicy (httpAllow)",
                            scope.namespace
                        ),
                    ));
                }
            }
            if causes.is_empty() {
                Ok(())
            } else {
                Err(ApiError::unprocessable(causes))
            }
        }
        _ => Ok(()),
    }
}

/// Kubernetes-style warnings about a resource that was stored but cannot take effect yet.
async fn warnings(state: &AppState, scope: &Scope, resource: &Resource) -> Vec<String> {
    let Resource::Workload(workload) = resource else { return Vec::new() };
    let Ok(snapshot) = state.node.read(Consistency::Stale).await else { return Vec::new() };
    let name = workload.metadata.name.as_deref().unwrap_or_default();
    edgeplane_core::placement::unresolved(&snapshot, &scope.namespace, name, &workload.spec)
        .map(|why| format!("{why}; its replicas stay pending until it does"))
        .into_iter()
        .collect()
}

/// The answer to a write, with a `Warning: 299` header per warning (what kubectl prints).
fn answer(code: StatusCode, object: Value, warnings: Vec<String>) -> Response {
    let mut response = (code, Json(object)).into_response();
    for w in warnings {
        let text = format!("299 - {:?}", w.replace(['\n', '"'], " "));
        if let Ok(value) = HeaderValue::from_str(&text) {
            response.headers_mut().append(header::WARNING, value);
        }
    }
    response
}

pub(crate) async fn create(
    State(state): State<AppState>,
    audit: Audit,
    target: Target,
    q: RawQuery,
    body: Body,
) -> Result<Response, ApiError> {
    let scope = target.scope()?;
    writable(&scope, "GET")?;
    write_params(q, &[])?;
    let (resource, value) = parse_body(body, &scope, None)?;
    admit(&state, &scope, &resource)?;
    let key = scope.key(resource.name());
    let created = ResourceWrite::Create { created_at: rfc3339_now() };
    let (_, object) = put_resource(&state, &audit, key, value, Precondition::None, created).await?;
    Ok(answer(StatusCode::CREATED, object, warnings(&state, &scope, &resource).await))
}

pub(crate) async fn replace(
    State(state): State<AppState>,
    audit: Audit,
    target: Target,
    q: RawQuery,
    body: Body,
) -> Result<Response, ApiError> {
    let (scope, name) = target.object()?;
    writable(&scope, "GET, DELETE")?;
    write_params(q, &[])?;
    let (resource, value) = parse_body(body, &scope, Some(name))?;
    admit(&state, &scope, &resource)?;
    let precondition = body_version(&value)?;
    let (_, object) = put_resource(&state, &audit, scope.key(name), value, precondition, ResourceWrite::Replace).await?;
    Ok(answer(StatusCode::OK, object, warnings(&state, &scope, &resource).await))
}

pub(crate) async fn write_status(
    State(state): State<AppState>,
    audit: Audit,
    target: Target,
    q: RawQuery,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let (scope, name) = target.object()?;
    writable(&scope, "GET")?;
    write_params(q, &[])?;
    if !matches!(scope.kind.kind, "EdgeNode" | "Workload") {
        return Err(ApiError::not_found(format!("{} has no status", scope.kind.kind)));
    }
    // parse_body checked the status against the kind's status type.
    let (_, value) = parse_body(body, &scope, Some(name))?;
    let precondition = body_version(&value)?;
    let (_, object) = put_resource(&state, &audit, scope.key(name), value, precondition, ResourceWrite::Status).await?;
    Ok(Json(object))
}

/// JSON merge patch (RFC 7386) or JSON patch (RFC 6902): read, patch, validate, and
/// compare-and-swap on the version read, retrying when another write got in between.
pub(crate) async fn patch(
    State(state): State<AppState>,
    audit: Audit,
    target: Target,
    headers: HeaderMap,
    q: RawQuery,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let (scope, name) = target.object()?;
    writable(&scope, "GET, DELETE")?;
    write_params(q, &[])?;
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let media = content_type.split(';').next().unwrap_or_default().trim();
    let body = body.map_err(|e| body_error(e, "body", MAX_BODY_BYTES))?;
    let not_json = |e: serde_json::Error| ApiError::invalid(vec![cause("body", format!("not a valid patch: {e}"))]);
    let patch = match media {
        "application/merge-patch+json" => Patch::Merge(serde_json::from_slice(&body).map_err(not_json)?),
        "application/json-patch+json" => Patch::Json(serde_json::from_slice(&body).map_err(not_json)?),
        _ => {
            return Err(ApiError::status(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                StatusReason::UnsupportedMediaType,
                format!(
                    "PATCH takes application/merge-patch+json (RFC 7386) or application/json-patch+json (RFC 6902), got {content_type:?}; \
                     strategic merge patch is Kubernetes' own types' (kubectl patch --type merge or --type json)"
                ),
            ))
        }
    };
    let key = scope.key(name);
    for _ in 0..PATCH_ATTEMPTS {
        let Some(current) = read(&state, Consistency::Linearizable).await?.get(&key).cloned() else {
            return Err(not_found(&scope, name));
        };
        let mut patched = render(&current);
        match &patch {
            Patch::Merge(patch) => merge_patch(&mut patched, patch),
            // A failed `test` (on metadata.resourceVersion, say) or a path that is not there.
            Patch::Json(patch) => json_patch::patch(&mut patched, patch)
                .map_err(|e| ApiError::unprocessable(vec![cause("body", format!("the JSON patch does not apply: {e}"))]))?,
        }
        if let Some(meta) = patched.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.remove("resourceVersion");
        }
        let text = serde_json::to_vec(&patched).expect("JSON values serialize");
        let (resource, value) = parse_body(Ok(text.into()), &scope, Some(name))?;
        admit(&state, &scope, &resource)?;
        let precondition = Precondition::ResourceVersion(current.resource_version);
        let command = Command::PutResource { key: key.clone(), resource: value, precondition, write: ResourceWrite::Replace };
        match crate::http::write_retrying_conflicts(&state, &audit, command).await {
            Ok(Applied::Put { object, .. }) => return Ok(Json(render(&object))),
            Ok(_) => unreachable!("a resource write never deletes"),
            Err(WriteError::Rejected(ApplyError::Conflict { .. })) => continue,
            Err(e) => return Err(write_error(&state, e).await),
        }
    }
    Err(ApiError::status(
        StatusCode::CONFLICT,
        StatusReason::Conflict,
        format!("{} {name:?} kept changing; the patch lost {PATCH_ATTEMPTS} races in a row", scope.kind.kind),
    ))
}

/// A PATCH body by its Content-Type.
enum Patch {
    Merge(Value),
    Json(json_patch::Patch),
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

pub(crate) async fn delete(State(state): State<AppState>, audit: Audit, target: Target, q: RawQuery) -> Result<Json<Value>, ApiError> {
    let params = only_params(q, &["resourceVersion"])?;
    let (scope, name) = target.object()?;
    let precondition = match params.get("resourceVersion") {
        None => Precondition::None,
        Some(v) => Precondition::ResourceVersion(
            v.parse().map_err(|_| ApiError::invalid(vec![cause("query.resourceVersion", format!("{v:?} is not a resourceVersion"))]))?,
        ),
    };
    let delete = Command::Delete { key: scope.key(name), precondition };
    // Deleting an EdgeNode ends its certificates in the same write.
    let command = match (scope.kind.plural, crate::trust::revoke_with_node(&state.node.latest(), name)) {
        ("edgenodes", Some(revoke)) => Command::Transaction(vec![delete, revoke]),
        _ => delete,
    };
    match crate::http::write(&state, &audit, command).await {
        Ok(Applied::Deleted { previous, .. }) => Ok(Json(render(&previous))),
        Ok(Applied::Transaction(applied)) => match applied.into_iter().next() {
            Some(Applied::Deleted { previous, .. }) => Ok(Json(render(&previous))),
            _ => unreachable!("the transaction starts with the delete"),
        },
        Ok(_) => unreachable!("a delete never puts"),
        Err(WriteError::Rejected(ApplyError::NotFound { .. })) => Err(not_found(&scope, name)),
        Err(e) => Err(write_error(&state, e).await),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_patch_follows_rfc_7386() {
        let mut target = json!({ "a": "b", "c": { "d": "e", "f": "g" } });
        merge_patch(&mut target, &json!({ "a": "z", "c": { "f": null } }));
        assert_eq!(target, json!({ "a": "z", "c": { "d": "e" } }));
        merge_patch(&mut target, &json!({ "c": [1, 2] }));
        assert_eq!(target["c"], json!([1, 2]));
    }
}
