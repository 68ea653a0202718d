//! The orchestrator itself: metrics and this member's view of the cluster.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use edgeplane_api::exposition::Exposition;
use edgeplane_api::{ClusterStatus, MemberStatus, Role, StatusReason};
use edgeplane_raft::EngineStatus;
use raft::StateRole;

use crate::app::AppState;
use crate::http::ApiError;

/// `GET /metrics`: OpenMetrics to Prometheus, the classic text format to other clients.
pub(crate) async fn metrics(State(state): State<AppState>, headers: HeaderMap) -> Response {
    crate::data::observe(&state).await;
    let mut text = String::new();
    if prometheus_client::encoding::text::encode(&mut text, &state.registry).is_err() {
        return ApiError::internal("encoding metrics failed").into_response();
    }
    let format = Exposition::negotiate(headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()));
    ([(header::CONTENT_TYPE, format.content_type())], format.render(text)).into_response()
}

async fn engine_status(state: &AppState) -> Result<EngineStatus, ApiError> {
    state.node.status().await.ok_or_else(|| {
        ApiError::status(StatusCode::SERVICE_UNAVAILABLE, StatusReason::ServiceUnavailable, "the orchestrator is shutting down")
    })
}

pub(crate) async fn cluster_status(State(state): State<AppState>) -> Result<Json<ClusterStatus>, ApiError> {
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
        backups: state
            .node
            .latest()
            .list(edgeplane_api::backup::LAST_BACKUP_KIND, None)
            .filter_map(|(_, o)| serde_json::from_value((*o.value).clone()).ok())
            .collect(),
    }))
}
