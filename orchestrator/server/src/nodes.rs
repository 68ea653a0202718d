//! Edge runtimes' heartbeats (enrollment and certificates are in [`crate::trust`]).
//!
//! - `POST /v1/nodes/{name}/heartbeat` (the node's certificate): kept in the leader's memory
//!   only ([`crate::heartbeats`]). A follower answers 503 with the leader's address.
//! - `GET /v1/nodes/{name}/heartbeat`: the leader's view of the node's last heartbeat.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use edgeplane_api::node::{Heartbeat, NodeLiveness};
use edgeplane_api::StatusReason;
use raft::StateRole;

use crate::app::AppState;
use crate::http::{body_error, cause, leader_hint, ApiError, MAX_BODY_BYTES};

/// `POST /v1/nodes/{name}/heartbeat`. The route admits only node `name` itself, whose
/// certificate the door checked against the store (every time: a revoked node is refused at
/// its next heartbeat).
pub(crate) async fn heartbeat(
    State(state): State<AppState>,
    Path(name): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<StatusCode, ApiError> {
    let body = body.map_err(|e| body_error(e, "body", MAX_BODY_BYTES))?;
    let heartbeat: Heartbeat = serde_json::from_slice(&body).map_err(|e| ApiError::invalid(vec![cause("body", e.to_string())]))?;
    if !state.heartbeats.leading() {
        ensure_leader(&state).await?;
    }
    state.heartbeats.record(&name, heartbeat);
    Ok(StatusCode::NO_CONTENT)
}

pub(crate) async fn last_heartbeat(State(state): State<AppState>, Path(name): Path<String>) -> Result<Json<NodeLiveness>, ApiError> {
    ensure_leader(&state).await?;
    state
        .heartbeats
        .get(&name)
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("no heartbeat from node {name:?} since this orchestrator became leader")))
}

async fn ensure_leader(state: &AppState) -> Result<(), ApiError> {
    match state.node.status().await {
        Some(s) if s.role == StateRole::Leader => Ok(()),
        _ => Err(ApiError::status(StatusCode::SERVICE_UNAVAILABLE, StatusReason::ServiceUnavailable, "heartbeats go to the leader")
            .leader_hint(leader_hint(state).await)),
    }
}
