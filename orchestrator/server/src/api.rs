//! The REST API: cluster status, metrics, and the generic replicated object store.
//!
//! Handlers validate everything about a request before it reaches Raft, so a bad request
//! changes nothing; every failure is a [`Status`] with a reason and, where a field is at
//! fault, its path.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use edgeplane_api::{
    paths, ClusterStatus, Consistency, Deleted, MemberStatus, ObjectList, ObjectView, Role, Status, StatusCause,
    StatusReason,
};
use edgeplane_core::{Applied, ApplyError, Command, ObjectKey, Precondition, StoredObject};
use edgeplane_raft::{EngineStatus, NodeHandle, ReadError, WriteError};
use prometheus_client::registry::Registry;
use raft::StateRole;

use edgeplane_api::validate::{dns_label, dns_subdomain};

use crate::config::Config;

/// Largest accepted request body.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

#[derive(Clone)]
pub struct AppState {
    pub node: NodeHandle,
    pub watch: Arc<edgeplane_raft::watch::WatchHub>,
    pub config: Arc<Config>,
    pub registry: Arc<Registry>,
    pub liveness: Arc<crate::nodes::Liveness>,
    pub sink_metrics: crate::data::SinkMetrics,
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route(paths::HEALTHZ, get(|| async { "ok\n" }))
        .route(paths::METRICS, get(metrics))
        .route(paths::CLUSTER, get(cluster_status))
        .route(paths::OPENAPI, get(|| async { Json(edgeplane_api::openapi::document()) }))
        .route("/v1/store/{kind}", get(list_objects))
        .route("/v1/store/{kind}/{name}", get(get_object).put(put_object).delete(delete_object))
        .merge(crate::resources::routes())
        .merge(crate::modules::routes())
        .merge(crate::nodes::routes())
        .merge(crate::data::routes())
        .fallback(|| async { ApiError::status(StatusCode::NOT_FOUND, StatusReason::NotFound, "no such API path") })
        // The body limit is enforced again when reading (to answer with a Status); this layer
        // stops oversized bodies before they are buffered.
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

/// A failed request, rendered as a [`Status`] body.
#[derive(Debug)]
pub struct ApiError(pub(crate) Status);

impl ApiError {
    pub(crate) fn status(code: StatusCode, reason: StatusReason, message: impl Into<String>) -> ApiError {
        ApiError(Status::new(code.as_u16(), reason, message))
    }

    /// 400: the request itself is malformed (path, query, body syntax).
    pub(crate) fn invalid(causes: Vec<StatusCause>) -> ApiError {
        Self::with_causes(StatusCode::BAD_REQUEST, "invalid request", causes)
    }

    /// 422: a well-formed resource that breaks the rules (Kubernetes' `Invalid`).
    pub(crate) fn unprocessable(causes: Vec<StatusCause>) -> ApiError {
        Self::with_causes(StatusCode::UNPROCESSABLE_ENTITY, "invalid resource", causes)
    }

    fn with_causes(code: StatusCode, what: &str, causes: Vec<StatusCause>) -> ApiError {
        let summary: Vec<String> = causes.iter().map(|c| format!("{}: {}", c.field, c.message)).collect();
        let mut status = Status::new(code.as_u16(), StatusReason::Invalid, format!("{what}: {}", summary.join("; ")));
        status.details.causes = causes;
        ApiError(status)
    }

    pub(crate) fn leader_hint(mut self, hint: Option<String>) -> ApiError {
        self.0.details.leader_api_addr = hint;
        self
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = StatusCode::from_u16(self.0.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        if code == StatusCode::PAYLOAD_TOO_LARGE {
            // The rest of the body was never read, so the connection cannot carry another
            // request; say so, or a client may reuse it and lose its next request.
            return (code, [(header::CONNECTION, "close")], Json(self.0)).into_response();
        }
        (code, Json(self.0)).into_response()
    }
}

/// The Status for a body axum could not read: 413 past `limit` bytes (naming `what`), 400
/// otherwise.
pub(crate) fn body_error(e: BytesRejection, what: &str, limit: usize) -> ApiError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::status(
            StatusCode::PAYLOAD_TOO_LARGE,
            StatusReason::RequestEntityTooLarge,
            format!("the {what} exceeds the limit of {limit} bytes"),
        )
    } else {
        ApiError::invalid(vec![cause("body", e.body_text())])
    }
}

pub(crate) fn cause(field: impl Into<String>, message: impl Into<String>) -> StatusCause {
    StatusCause { field: field.into(), message: message.into() }
}

async fn metrics(State(state): State<AppState>) -> Response {
    crate::data::observe(&state).await;
    let mut text = String::new();
    if prometheus_client::encoding::text::encode(&mut text, &state.registry).is_err() {
        return ApiError::status(StatusCode::INTERNAL_SERVER_ERROR, StatusReason::InternalError, "encoding metrics failed")
            .into_response();
    }
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], text).into_response()
}

async fn engine_status(state: &AppState) -> Result<EngineStatus, ApiError> {
    state.node.status().await.ok_or_else(|| {
        ApiError::status(StatusCode::SERVICE_UNAVAILABLE, StatusReason::ServiceUnavailable, "the orchestrator is shutting down")
    })
}

async fn cluster_status(State(state): State<AppState>) -> Result<Json<ClusterStatus>, ApiError> {
    let s = engine_status(&state).await?;
    let matched: BTreeMap<u64, u64> = s.matched.iter().flatten().copied().collect();
    let members = state
        .config
        .members
        .iter()
        .map(|m| MemberStatus {
            id: m.id,
            peer_addr: m.peer.to_string(),
            api_addr: m.api.to_string(),
            match_index: matched.get(&m.id).copied(),
        })
        .collect();
    Ok(Json(ClusterStatus {
        node_id: s.id,
        role: match s.role {
            StateRole::Follower => Role::Follower,
            StateRole::Candidate => Role::Candidate,
            StateRole::PreCandidate => Role::PreCandidate,
            StateRole::Leader => Role::Leader,
        },
        term: s.term,
        leader_id: s.leader_id,
        leader_api_addr: s.leader_id.and_then(|id| state.config.member(id)).map(|m| m.api.to_string()),
        commit_index: s.commit_index,
        applied_index: s.applied_index,
        first_log_index: s.first_index,
        last_log_index: s.last_index,
        snapshot_index: s.snapshot_index,
        members,
    }))
}

/// Query parameters each route accepts; anything else is an error, not silently ignored.
struct StoreQuery {
    namespace: String,
    consistency: Consistency,
    precondition: Precondition,
}

/// Query parameters as axum extracts them; a malformed query string is the handler's to report.
pub(crate) type RawQuery = Result<Query<BTreeMap<String, String>>, QueryRejection>;

/// The parameters of a query string, or a 400 naming the problem.
pub(crate) fn query_params(raw: RawQuery) -> Result<BTreeMap<String, String>, ApiError> {
    raw.map(|Query(params)| params).map_err(|e| ApiError::invalid(vec![cause("query", e.body_text())]))
}

/// A cause for every parameter the route does not accept: unknown parameters are reported,
/// not ignored.
pub(crate) fn unknown_params(params: &BTreeMap<String, String>, allowed: &[&str]) -> Vec<StatusCause> {
    params
        .keys()
        .filter(|k| !allowed.contains(&k.as_str()))
        .map(|k| cause(format!("query.{k}"), format!("unknown parameter; this route accepts: {}", allowed.join(", "))))
        .collect()
}

/// The `consistency` parameter.
pub(crate) fn parse_consistency(value: &str) -> Result<Consistency, String> {
    match value {
        "linearizable" => Ok(Consistency::Linearizable),
        "stale" => Ok(Consistency::Stale),
        _ => Err(format!("must be \"linearizable\" or \"stale\", got {value:?}")),
    }
}

fn parse_query(query: RawQuery, allowed: &[&str]) -> Result<StoreQuery, ApiError> {
    let params = query_params(query)?;
    let mut causes = unknown_params(&params, allowed);
    let mut out = StoreQuery { namespace: String::new(), consistency: Consistency::Linearizable, precondition: Precondition::None };
    for (key, value) in params.iter().filter(|(k, _)| allowed.contains(&k.as_str())) {
        let field = format!("query.{key}");
        match key.as_str() {
            "namespace" => match dns_label(value) {
                Ok(()) => out.namespace = value.clone(),
                Err(e) => causes.push(cause(field, e)),
            },
            "consistency" => match parse_consistency(value) {
                Ok(c) => out.consistency = c,
                Err(e) => causes.push(cause(field, e)),
            },
            "ifVersion" => match value.parse::<u64>() {
                Ok(v) if v > 0 => out.precondition = Precondition::ResourceVersion(v),
                _ => causes.push(cause(field, format!("must be a resourceVersion (a positive integer), got {value:?}"))),
            },
            "ifAbsent" => match value.as_str() {
                "true" => out.precondition = Precondition::MustNotExist,
                "false" => {}
                _ => causes.push(cause(field, format!("must be true or false, got {value:?}"))),
            },
            _ => unreachable!("only allowed keys reach here"),
        }
    }
    if params.contains_key("ifVersion") && params.get("ifAbsent").is_some_and(|v| v == "true") {
        causes.push(cause("query.ifAbsent", "cannot be combined with ifVersion"));
    }
    if causes.is_empty() { Ok(out) } else { Err(ApiError::invalid(causes)) }
}

fn object_key(kind: &str, name: &str, namespace: &str) -> Result<ObjectKey, ApiError> {
    let mut causes = Vec::new();
    if let Err(e) = dns_label(kind) {
        causes.push(cause("path.kind", e));
    }
    if let Err(e) = dns_subdomain(name) {
        causes.push(cause("path.name", e));
    }
    if causes.is_empty() { Ok(ObjectKey::new(kind, namespace, name)) } else { Err(ApiError::invalid(causes)) }
}

fn view(key: &ObjectKey, object: &StoredObject) -> ObjectView {
    ObjectView {
        kind: key.kind.clone(),
        namespace: key.namespace.clone(),
        name: key.name.clone(),
        resource_version: object.resource_version,
        created_version: object.created_version,
        value: (*object.value).clone(),
    }
}

async fn get_object(
    State(state): State<AppState>,
    Path((kind, name)): Path<(String, String)>,
    query: RawQuery,
) -> Result<Json<ObjectView>, ApiError> {
    let q = parse_query(query, &["namespace", "consistency"])?;
    let key = object_key(&kind, &name, &q.namespace)?;
    let lookup = key.clone();
    let found = match state.node.read(q.consistency, move |s| s.get(&lookup).cloned()).await {
        Ok(found) => found,
        Err(e) => return Err(read_error(&state, e).await),
    };
    match found {
        Some(object) => Ok(Json(view(&key, &object))),
        None => Err(ApiError::status(StatusCode::NOT_FOUND, StatusReason::NotFound, format!("{key} not found"))),
    }
}

async fn list_objects(
    State(state): State<AppState>,
    Path(kind): Path<String>,
    query: RawQuery,
) -> Result<Json<ObjectList>, ApiError> {
    let q = parse_query(query, &["namespace", "consistency"])?;
    if let Err(e) = dns_label(&kind) {
        return Err(ApiError::invalid(vec![cause("path.kind", e)]));
    }
    let namespace = (!q.namespace.is_empty()).then_some(q.namespace);
    let listed = state
        .node
        .read(q.consistency, move |s| ObjectList {
            resource_version: s.applied_index(),
            items: s.list(&kind, namespace.as_deref()).map(|(k, o)| view(k, o)).collect(),
        })
        .await;
    let list = match listed {
        Ok(list) => list,
        Err(e) => return Err(read_error(&state, e).await),
    };
    Ok(Json(list))
}

async fn put_object(
    State(state): State<AppState>,
    Path((kind, name)): Path<(String, String)>,
    query: RawQuery,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let q = parse_query(query, &["namespace", "ifVersion", "ifAbsent"])?;
    let key = object_key(&kind, &name, &q.namespace)?;
    let body = body.map_err(|e| body_error(e, "body", MAX_BODY_BYTES))?;
    if body.is_empty() {
        return Err(ApiError::invalid(vec![cause("body", "required: the object's value as JSON")]));
    }
    let value: serde_json::Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::invalid(vec![cause("body", format!("not valid JSON: {e}"))]))?;
    let applied = match state.node.write(Command::Put { key, value, precondition: q.precondition }).await {
        Ok(applied) => applied,
        Err(e) => return Err(write_error(&state, e).await),
    };
    match applied {
        Applied::Put { key, object, created } => {
            let code = if created { StatusCode::CREATED } else { StatusCode::OK };
            Ok((code, Json(view(&key, &object))).into_response())
        }
        Applied::Deleted { .. } | Applied::Transaction(_) | Applied::AppendedData(_) => unreachable!("a put never deletes"),
    }
}

async fn delete_object(
    State(state): State<AppState>,
    Path((kind, name)): Path<(String, String)>,
    query: RawQuery,
) -> Result<Json<Deleted>, ApiError> {
    let q = parse_query(query, &["namespace", "ifVersion"])?;
    let key = object_key(&kind, &name, &q.namespace)?;
    let applied = match state.node.write(Command::Delete { key, precondition: q.precondition }).await {
        Ok(applied) => applied,
        Err(e) => return Err(write_error(&state, e).await),
    };
    match applied {
        Applied::Deleted { key, previous, index } => Ok(Json(Deleted { deleted_at: index, object: view(&key, &previous) })),
        Applied::Put { .. } | Applied::Transaction(_) | Applied::AppendedData(_) => unreachable!("a delete never puts"),
    }
}

/// The API address of the leader this node knows of, if any.
pub(crate) async fn leader_hint(state: &AppState) -> Option<String> {
    let s = state.node.status().await?;
    state.config.member(s.leader_id?).map(|m| m.api.to_string())
}

/// Maps a failed write to its Status. Answers that invite a retry (503, 504) name the leader
/// this node knows of, so a client can go there directly.
pub(crate) async fn write_error(state: &AppState, e: WriteError) -> ApiError {
    let message = e.to_string();
    let conflict = |reason, current| {
        let mut err = ApiError::status(StatusCode::CONFLICT, reason, message.clone());
        err.0.details.current_resource_version = Some(current);
        err
    };
    match e {
        WriteError::Rejected(ApplyError::NotFound { .. }) => {
            ApiError::status(StatusCode::NOT_FOUND, StatusReason::NotFound, message)
        }
        WriteError::Rejected(ApplyError::AlreadyExists { current, .. }) => conflict(StatusReason::AlreadyExists, current),
        WriteError::Rejected(ApplyError::Conflict { current, .. }) => conflict(StatusReason::Conflict, current),
        WriteError::Rejected(ApplyError::Undecodable { .. }) => {
            ApiError::status(StatusCode::INTERNAL_SERVER_ERROR, StatusReason::InternalError, message)
        }
        // Definitely without effect: safe to retry.
        WriteError::Rejected(ApplyError::Expired { .. }) => {
            ApiError::status(StatusCode::SERVICE_UNAVAILABLE, StatusReason::ServiceUnavailable, message)
                .leader_hint(leader_hint(state).await)
        }
        WriteError::Timeout | WriteError::CommittedResultUnknown => {
            let mut err = ApiError::status(StatusCode::GATEWAY_TIMEOUT, StatusReason::Timeout, message);
            err.0.details.outcome_unknown = true;
            err.leader_hint(leader_hint(state).await)
        }
        WriteError::NoLeader | WriteError::Overloaded | WriteError::Stopped => {
            ApiError::status(StatusCode::SERVICE_UNAVAILABLE, StatusReason::ServiceUnavailable, message)
                .leader_hint(leader_hint(state).await)
        }
    }
}

pub(crate) async fn read_error(state: &AppState, e: ReadError) -> ApiError {
    let (code, reason) = match e {
        ReadError::Timeout => (StatusCode::GATEWAY_TIMEOUT, StatusReason::Timeout),
        ReadError::NoLeader | ReadError::Overloaded | ReadError::Stopped => {
            (StatusCode::SERVICE_UNAVAILABLE, StatusReason::ServiceUnavailable)
        }
    };
    ApiError::status(code, reason, e.to_string()).leader_hint(leader_hint(state).await)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_kubernetes_rules() {
        // The store's kinds and namespaces are DNS labels, its names DNS subdomains.
        assert!(dns_subdomain("line-a.sensor-1").is_ok());
        assert!(dns_subdomain("Line").is_err());
        assert!(dns_subdomain("-a").is_err());
        assert!(dns_label("a.b").is_err());
        assert!(dns_label(&"a".repeat(64)).is_err());
        assert!(dns_label("").is_err());
    }
}
