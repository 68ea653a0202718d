//! Edge runtimes' heartbeats (enrollment and certificates are in [`crate::trust`]).
//!
//! - `POST /v1/nodes/{name}/heartbeat` (the node's certificate): kept in the leader's memory
//!   only ([`crate::heartbeats`]). A follower answers 503 with the leader's address.
//! - `GET /v1/nodes/{name}/heartbeat`: the leader's view of the node's last heartbeat.
//! - `GET /v1/heartbeats`: every node's last heartbeat figures; any member answers (a follower
//!   asks the leader).

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use edgeplane_api::node::{FleetHeartbeats, Heartbeat, NodeLiveness};
use edgeplane_api::StatusReason;
use edgeplane_core::authz::Identity;
use edgeplane_tls::serve::Connection;
use raft::StateRole;

use crate::app::AppState;
use crate::auth::Authenticated;
use crate::http::{body_error, cause, leader_hint, ApiError, MAX_BODY_BYTES};

/// `POST /v1/nodes/{name}/heartbeat`. The route admits only node `name` itself, whose
/// certificate the door checked against the store (every time: a revoked node is refused at
/// its next heartbeat). The leader watches each connection heartbeats come on, to learn at
/// once when a node's process dies (`heartbeats` module).
pub(crate) async fn heartbeat(
    State(state): State<AppState>,
    Path(name): Path<String>,
    connection: Option<Extension<Connection>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<StatusCode, ApiError> {
    let body = body.map_err(|e| body_error(e, "body", MAX_BODY_BYTES))?;
    let heartbeat: Heartbeat = serde_json::from_slice(&body).map_err(|e| ApiError::invalid(vec![cause("body", e.to_string())]))?;
    if !state.heartbeats.leading() {
        let term = ensure_leader(&state).await?;
        state.heartbeats.set_leading(Some(term));
    }
    let via = connection.map(|Extension(c)| c);
    if state.heartbeats.record(&name, heartbeat, via.as_ref().map(|c| c.id)) {
        if let Some(connection) = via {
            let heartbeats = state.heartbeats.clone();
            tokio::spawn(async move {
                connection.closed().await;
                heartbeats.connection_closed(&name, connection.id);
            });
        }
    }
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

/// `GET /v1/heartbeats`. Heartbeats live in the leader's memory only, so a follower asks the
/// leader with its member certificate, having authorized the caller itself against the same
/// replicated RBAC: a console on any member shows the fleet's live figures. A request from
/// an orchestrator is answered by the leader only, so nothing is forwarded twice.
pub(crate) async fn fleet(State(state): State<AppState>, Authenticated(caller): Authenticated) -> Result<Json<FleetHeartbeats>, ApiError> {
    let status = state.node.status().await;
    if let Some(s) = status.as_ref().filter(|s| s.role == StateRole::Leader) {
        return Ok(Json(FleetHeartbeats { leader_id: s.id, nodes: state.heartbeats.figures() }));
    }
    let hint = leader_hint(&state).await;
    let unavailable =
        |why: String| ApiError::status(StatusCode::SERVICE_UNAVAILABLE, StatusReason::ServiceUnavailable, why).leader_hint(hint.clone());
    let (Some(leader), Some(members)) = (hint.as_deref(), state.other_members.as_ref()) else {
        return Err(unavailable("heartbeats go to the leader, and no leader is known".to_owned()));
    };
    if matches!(caller.identity, Identity::Orchestrator { .. }) {
        return Err(unavailable("heartbeats go to the leader; this member does not lead".to_owned()));
    }
    let answer = members
        .send_to(leader, edgeplane_client::Request::get(edgeplane_api::paths::HEARTBEATS))
        .await
        .map_err(|e| unavailable(format!("the leader at {leader} did not answer: {e}")))?;
    if !answer.is_success() {
        return Err(ApiError(Box::new(answer.status_error()), None));
    }
    answer.json().map(Json).map_err(|e| unavailable(format!("the leader at {leader} answered what this member cannot read: {e}")))
}

/// This node's term if it leads; otherwise a 503 naming the leader.
async fn ensure_leader(state: &AppState) -> Result<u64, ApiError> {
    match state.node.status().await {
        Some(s) if s.role == StateRole::Leader => Ok(s.term),
        _ => Err(ApiError::status(StatusCode::SERVICE_UNAVAILABLE, StatusReason::ServiceUnavailable, "heartbeats go to the leader")
            .leader_hint(leader_hint(state).await)),
    }
}
