//! Edge runtimes' heartbeats (enrollment and certificates are in [`crate::trust`]).
//!
//! - `POST /v1/nodes/{name}/heartbeat` (the node's certificate): kept in the leader's memory
//!   only ([`crate::heartbeats`]). A follower answers 503 with the leader's address.
//! - `POST /v1/nodes/{name}/heartbeat/stream` (the node itself): the same heartbeats, a line
//!   each, on one long-lived request ([`edgeplane_api::node::heartbeat_stream_path`]).
//! - `GET /v1/nodes/{name}/heartbeat`: the leader's view of the node's last heartbeat.
//! - `GET /v1/heartbeats`: every node's last heartbeat figures; any member answers (a follower
//!   asks the leader).

use std::convert::Infallible;

use axum::body::{Body, BodyDataStream, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use edgeplane_api::node::{FleetHeartbeats, Heartbeat, HeartbeatStreamEvent, NodeLiveness, NDJSON};
use edgeplane_api::StatusReason;
use edgeplane_core::authz::Identity;
use edgeplane_tls::serve::Connection;
use futures::StreamExt;
use raft::StateRole;

use crate::app::AppState;
use crate::auth::{node_credential, node_revoked, Authenticated};
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
    ensure_leading(&state).await?;
    let via = connection.map(|Extension(c)| c);
    state.scheduler_metrics.heartbeats_via_request.inc();
    if state.heartbeats.record(&name, heartbeat, via.as_ref().map(|c| c.id)) {
        if let Some(connection) = via {
            watch_connection(&state, name, connection);
        }
    }
    Ok(StatusCode::NO_CONTENT)
}

/// Tells the heartbeats when `connection`, new among node `name`'s, closes.
fn watch_connection(state: &AppState, name: String, connection: Connection) {
    let heartbeats = state.heartbeats.clone();
    tokio::spawn(async move {
        connection.closed().await;
        heartbeats.connection_closed(&name, connection.id);
    });
}

/// `POST /v1/nodes/{name}/heartbeat/stream`. The route's rule admits whoever may send the
/// node's heartbeats; a stream is the node's own, since its certificate is checked again at
/// every heartbeat.
pub(crate) async fn heartbeat_stream(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Authenticated(caller): Authenticated,
    connection: Option<Extension<Connection>>,
    body: Body,
) -> Result<Response, ApiError> {
    let own = caller.node() == Some(name.as_str());
    let (true, Some(Extension(connection))) = (own, connection) else {
        return Err(ApiError::status(StatusCode::FORBIDDEN, StatusReason::Forbidden, format!("only node {name} streams its heartbeats")));
    };
    let Some(serial) = connection.certificate.as_ref().map(|c| c.serial.clone()) else {
        return Err(ApiError::status(StatusCode::FORBIDDEN, StatusReason::Forbidden, "a heartbeat stream needs the node's certificate"));
    };
    ensure_leading(&state).await?;
    let stream = HeartbeatStream {
        state,
        name,
        serial,
        connection,
        body: body.into_data_stream(),
        pending: Vec::new(),
        received: 0,
        acknowledged: 0,
        credential_checked_at: None,
        over: false,
    };
    let answers = futures::stream::unfold(stream, HeartbeatStream::next_answer);
    Ok(([(header::CONTENT_TYPE, NDJSON)], Body::from_stream(answers)).into_response())
}

/// One node's open heartbeat stream. It does its work when the connection asks for the next
/// answer line, so nothing runs for it between the node's heartbeats and nothing outlives the
/// connection.
struct HeartbeatStream {
    state: AppState,
    name: String,
    /// The certificate the stream was opened with: it must stay one of the node's.
    serial: String,
    connection: Connection,
    body: BodyDataStream,
    /// The part of a line that has arrived.
    pending: Vec<u8>,
    received: u64,
    /// The count the last acknowledgement carried.
    acknowledged: u64,
    /// The applied index at which the node's credential was last found valid: until the
    /// state changes, it still is.
    credential_checked_at: Option<u64>,
    /// The last line went out.
    over: bool,
}

/// A stream's heartbeats are acknowledged at the first and then at every third: one write
/// for three heartbeats, while the oldest one a node has not heard back about is at most two
/// intervals old (it gives up on the stream at four).
const ACKNOWLEDGE_EVERY: u64 = 3;

/// Why a stream takes no more heartbeats.
enum End {
    NotLeader,
    Refused(ApiError),
}

impl HeartbeatStream {
    /// Takes the heartbeats that arrive until there is something to answer: how many were
    /// taken, or why the stream ends. `None` once the stream is over.
    async fn next_answer(mut self) -> Option<(Result<Bytes, Infallible>, HeartbeatStream)> {
        if self.over {
            return None;
        }
        loop {
            let taken = self.received;
            let end = match self.body.next().await {
                Some(Ok(chunk)) => self.take_chunk(&chunk).err(),
                // The node ended its request: a last line may lack its newline.
                None => {
                    self.over = true;
                    let last = std::mem::take(&mut self.pending);
                    self.take_line(&last).err()
                }
                // The connection failed; nobody reads an answer.
                Some(Err(_)) => return None,
            };
            let due = self.acknowledged == 0 || self.received - self.acknowledged >= ACKNOWLEDGE_EVERY;
            let end = match end {
                None if self.over && self.received == taken => return None,
                None if self.received == taken || (!due && !self.over) => continue,
                None => None,
                Some(End::NotLeader) => Some(
                    ApiError::status(StatusCode::SERVICE_UNAVAILABLE, StatusReason::ServiceUnavailable, "heartbeats go to the leader")
                        .leader_hint(leader_hint(&self.state).await),
                ),
                Some(End::Refused(e)) => Some(e),
            };
            self.over |= end.is_some();
            self.acknowledged = self.received;
            let event = HeartbeatStreamEvent { received: self.received, end: end.map(|e| *e.0) };
            let mut line = serde_json::to_vec(&event).expect("stream events serialize");
            line.push(b'\n');
            return Some((Ok(Bytes::from(line)), self));
        }
    }

    fn take_chunk(&mut self, chunk: &[u8]) -> Result<(), End> {
        let mut rest = chunk;
        while let Some(at) = rest.iter().position(|&b| b == b'\n') {
            let (head, tail) = (&rest[..at], &rest[at + 1..]);
            rest = tail;
            if self.pending.is_empty() {
                self.take_line(head)?;
            } else {
                let mut line = std::mem::take(&mut self.pending);
                line.extend_from_slice(head);
                self.take_line(&line)?;
            }
        }
        if self.pending.len() + rest.len() > MAX_BODY_BYTES {
            return Err(End::Refused(ApiError::status(
                StatusCode::PAYLOAD_TOO_LARGE,
                StatusReason::RequestEntityTooLarge,
                format!("heartbeat {} is longer than {MAX_BODY_BYTES} bytes", self.received + 1),
            )));
        }
        self.pending.extend_from_slice(rest);
        Ok(())
    }

    /// One line: a heartbeat, or nothing (blank lines keep nothing alive, but cost nothing).
    fn take_line(&mut self, line: &[u8]) -> Result<(), End> {
        if line.trim_ascii().is_empty() {
            return Ok(());
        }
        let heartbeat: Heartbeat = serde_json::from_slice(line)
            .map_err(|e| End::Refused(ApiError::invalid(vec![cause(format!("heartbeat {}", self.received + 1), e.to_string())])))?;
        if !self.state.heartbeats.leading() {
            return Err(End::NotLeader);
        }
        // A revoked or replaced certificate ends the stream at the node's next heartbeat, as
        // it refuses the next request.
        let latest = self.state.node.latest();
        if self.credential_checked_at != Some(latest.applied_index()) {
            if node_credential(&latest, &self.name, &self.serial).is_none() {
                return Err(End::Refused(node_revoked(&self.name)));
            }
            self.credential_checked_at = Some(latest.applied_index());
        }
        self.state.scheduler_metrics.heartbeats_via_stream.inc();
        if self.state.heartbeats.record(&self.name, heartbeat, Some(self.connection.id)) {
            watch_connection(&self.state, self.name.clone(), self.connection.clone());
        }
        self.received += 1;
        Ok(())
    }
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

/// A heartbeat's check that this node leads: the flag the placement loop keeps, and when it
/// says no, the Raft actor (whose answer sets the flag).
async fn ensure_leading(state: &AppState) -> Result<(), ApiError> {
    if !state.heartbeats.leading() {
        let term = ensure_leader(state).await?;
        state.heartbeats.set_leading(Some(term));
    }
    Ok(())
}

/// This node's term if it leads; otherwise a 503 naming the leader.
async fn ensure_leader(state: &AppState) -> Result<u64, ApiError> {
    match state.node.status().await {
        Some(s) if s.role == StateRole::Leader => Ok(s.term),
        _ => Err(ApiError::status(StatusCode::SERVICE_UNAVAILABLE, StatusReason::ServiceUnavailable, "heartbeats go to the leader")
            .leader_hint(leader_hint(state).await)),
    }
}
