//! Events, read-only (the leader's planner writes them, `edgeplane_core::events`): in the
//! core `v1` shape at `/api/v1` (what `kubectl get events` and `kubectl describe` read) and
//! as stored at `/apis/events.k8s.io/v1`. Lists page, select on fields (`involvedObject.*`,
//! `regarding.*`, `reason`, `type`) and watch like the resource API.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use axum::Json;
use edgeplane_api::table::{self, IncludeObject};
use edgeplane_core::events::EVENTS;
use serde_json::{json, Value};

use crate::app::AppState;
use crate::http::{
    cause, consistency, field_selector_param, include_object_param, off_reactor, only_params, read, resource_version_param, ApiError,
    RawQuery,
};
use crate::resources::{list_consistency, render, stream_changes, Page, Source};

/// Which of Kubernetes' two Event shapes a route answers in.
#[derive(Debug, Clone, Copy)]
enum Shape {
    /// Core `v1`: `involvedObject`, `message`, `count`, `firstTimestamp`, `lastTimestamp`.
    Core,
    /// `events.k8s.io/v1`, as stored: `regarding`, `note`, `series`.
    Stored,
}

impl Shape {
    fn api_version(self) -> &'static str {
        match self {
            Shape::Core => "v1",
            Shape::Stored => "events.k8s.io/v1",
        }
    }

    fn show(self, event: Value) -> Value {
        match self {
            Shape::Core => edgeplane_api::events::to_core_v1(&event),
            Shape::Stored => event,
        }
    }
}

pub(crate) async fn list_core(
    state: State<AppState>,
    path: Path<BTreeMap<String, String>>,
    headers: HeaderMap,
    q: RawQuery,
) -> Result<Response, ApiError> {
    list(state, path, headers, q, Shape::Core).await
}

pub(crate) async fn list_stored(
    state: State<AppState>,
    path: Path<BTreeMap<String, String>>,
    headers: HeaderMap,
    q: RawQuery,
) -> Result<Response, ApiError> {
    list(state, path, headers, q, Shape::Stored).await
}

/// A Table of Events (core shape) with Kubernetes' columns, ages by this orchestrator's clock.
fn event_table(events: &[Value], include: IncludeObject, metadata: Value) -> Value {
    let now = jiff::Timestamp::now();
    let since = |t: &str| t.parse::<jiff::Timestamp>().map_or_else(|_| "<unknown>".to_owned(), |at| human_duration(now.duration_since(at)));
    let rows = events.iter().map(|e| (table::event_cells(e, since), e)).collect();
    table::table_of(table::EVENT_COLUMNS, rows, include, metadata)
}

/// A duration as kubectl shows ages: 45s, 3m20s, 17m, 5h3m, 30h, 12d.
fn human_duration(d: jiff::SignedDuration) -> String {
    let s = d.as_secs().max(0);
    match s {
        0..120 => format!("{s}s"),
        120..600 => format!("{}m{}s", s / 60, s % 60),
        600..10_800 => format!("{}m", s / 60),
        10_800..28_800 => format!("{}h{}m", s / 3600, s % 3600 / 60),
        28_800..172_800 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86_400),
    }
}

pub(crate) async fn read_core(state: State<AppState>, path: Path<BTreeMap<String, String>>, q: RawQuery) -> Result<Json<Value>, ApiError> {
    read_one(state, path, q, Shape::Core).await
}

pub(crate) async fn read_stored(
    state: State<AppState>,
    path: Path<BTreeMap<String, String>>,
    q: RawQuery,
) -> Result<Json<Value>, ApiError> {
    read_one(state, path, q, Shape::Stored).await
}

async fn read_one(
    State(state): State<AppState>,
    Path(path): Path<BTreeMap<String, String>>,
    q: RawQuery,
    shape: Shape,
) -> Result<Json<Value>, ApiError> {
    let params = only_params(q, &["consistency"])?;
    let (namespace, name) = (path.get("ns").cloned().unwrap_or_default(), path.get("name").cloned().unwrap_or_default());
    let key = edgeplane_core::ObjectKey::new(EVENTS, namespace.clone(), name.clone());
    match read(&state, consistency(&params)?).await?.get(&key) {
        Some(object) => Ok(Json(shape.show(render(object)))),
        None => Err(ApiError::not_found(format!("Event {name:?} not found in namespace {namespace} (Events expire after an hour)"))),
    }
}

async fn list(
    State(state): State<AppState>,
    Path(path): Path<BTreeMap<String, String>>,
    headers: HeaderMap,
    q: RawQuery,
    shape: Shape,
) -> Result<Response, ApiError> {
    let params = only_params(q, &["consistency", "fieldSelector", "watch", "resourceVersion", "limit", "continue", "includeObject"])?;
    let include = include_object_param(&params)?;
    // kubectl asks for a Table; the core shape has one, with Kubernetes' columns.
    let as_table = matches!(shape, Shape::Core) && table::wants_table(headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()));
    let namespace = path.get("ns").cloned();
    if let Some(ns) = &namespace {
        edgeplane_api::validate::dns_label(ns).map_err(|e| ApiError::invalid(vec![cause("path.namespace", e)]))?;
    }
    let fields = field_selector_param(&params, edgeplane_api::events::FIELDS)?;
    let matches = move |_: &edgeplane_core::ObjectKey, event: &Value| fields.matches(|f| edgeplane_api::events::field(event, f));
    let from = resource_version_param(&params)?;
    match params.get("watch").map(String::as_str) {
        None | Some("false") => {}
        Some("true") => {
            let source = Source {
                plural: EVENTS,
                namespace,
                matches: Arc::new(matches),
                present: Arc::new(move |mut line: Value| {
                    let object = line["object"].take();
                    line["object"] = match line["type"].as_str() {
                        Some("ERROR") => object,
                        Some("BOOKMARK") if as_table => event_table(&[], include, object["metadata"].clone()),
                        Some("BOOKMARK") => object,
                        _ if as_table => {
                            let version = object["metadata"]["resourceVersion"].clone();
                            event_table(&[shape.show(object)], include, json!({ "resourceVersion": version }))
                        }
                        _ => shape.show(object),
                    };
                    line
                }),
                kind: "Event",
                api_version: shape.api_version(),
            };
            return stream_changes(&state, source, from).await;
        }
        Some(other) => return Err(ApiError::invalid(vec![cause("query.watch", format!("must be true or false, got {other:?}"))])),
    }
    let page = Page::from_params(&params)?;
    let snapshot = read(&state, list_consistency(&params, from)?).await?;
    let (version, (items, rest)) = off_reactor(move || {
        let listed = snapshot.list(EVENTS, namespace.as_deref()).filter(|(k, o)| matches(k, &o.value));
        (snapshot.applied_index(), page.take(listed, |object| shape.show(render(object))))
    })
    .await?;
    let mut metadata = json!({ "resourceVersion": version.to_string() });
    if let Some((next, _)) = rest {
        metadata["continue"] = json!(next);
    }
    if as_table {
        return Ok(Json(event_table(&items, include, metadata)).into_response());
    }
    Ok(Json(json!({ "apiVersion": shape.api_version(), "kind": "EventList", "metadata": metadata, "items": items })).into_response())
}
