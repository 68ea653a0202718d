//! Edge runtimes: registration and heartbeats.
//!
//! - `POST /v1/nodes/register` (bootstrap token): creates the node's `EdgeNode`, or adopts the
//!   one an operator applied, and issues the node a credential. The EdgeNode and the hash of
//!   the credential are written in one transaction. A runtime with a new uid (a fresh data
//!   directory) gets a new epoch: its stream numbers start again, and the cloud sink keys its
//!   deduplication by epoch.
//! - `POST /v1/nodes/{name}/heartbeat` (node credential): kept in the leader's memory only
//!   ([`crate::heartbeats`]). A follower answers 503 with the leader's address.
//! - `GET /v1/nodes/{name}/heartbeat`: the leader's view of the node's last heartbeat.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::routing::post;
use axum::{Json, Router};
use edgeplane_api::node::{self, Heartbeat, NodeLiveness, RegisterRequest, RegisterResponse};
use edgeplane_api::resources::EdgeNodeSpec;
use edgeplane_api::{validate, Consistency, StatusReason};
use edgeplane_core::{Command, ObjectKey, Precondition, ResourceWrite};
use raft::StateRole;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::app::AppState;
use crate::http::{body_error, cause, leader_hint, read, rfc3339_now, write_error, ApiError, MAX_BODY_BYTES};
use crate::secrets::{constant_time_eq, random_token, sha256_hex};

/// Where the hash of each node's credential is kept (generic store kind, cluster-wide).
pub const CREDENTIALS: &str = "node-credentials";
/// The annotation on an EdgeNode naming the runtime that registered it.
pub const UID_ANNOTATION: &str = "edgeplane.io/node-uid";

/// A node's credential as stored: never the token itself.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Credential {
    uid: String,
    token_sha256: String,
    /// The runtime incarnation this credential belongs to (0: registered before epochs).
    #[serde(default)]
    epoch: u64,
}

pub fn routes() -> Router<AppState> {
    Router::new().route(node::REGISTER, post(register)).route("/v1/nodes/{name}/heartbeat", post(heartbeat).get(last_heartbeat))
}

async fn register(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<RegisterResponse>, ApiError> {
    let Some(expected) = state.config.bootstrap_token.as_deref() else {
        return Err(ApiError::status(
            StatusCode::FORBIDDEN,
            StatusReason::Unauthorized,
            "registration is disabled: this orchestrator has no --bootstrap-token",
        ));
    };
    if !constant_time_eq(bearer(&headers)?.as_bytes(), expected.as_bytes()) {
        return Err(unauthorized("the bootstrap token is wrong"));
    }
    let body = body.map_err(|e| body_error(e, "body", MAX_BODY_BYTES))?;
    let request: RegisterRequest = serde_json::from_slice(&body).map_err(|e| ApiError::invalid(vec![cause("body", e.to_string())]))?;
    let mut causes = Vec::new();
    if let Err(e) = validate::dns_subdomain(&request.name) {
        causes.push(cause("name", e));
    }
    if request.uid.is_empty() || request.uid.len() > 128 {
        causes.push(cause("uid", "must be 1 to 128 characters"));
    }
    for (key, value) in &request.labels {
        if let Err(e) = validate::label_key(key).and_then(|()| validate::label_value(value)) {
            causes.push(cause(format!("labels.{key}"), e));
        }
    }
    if !causes.is_empty() {
        return Err(ApiError::invalid(causes));
    }

    let key = ObjectKey::new("edgenodes", "", request.name.clone());
    let credential_key = ObjectKey::new(CREDENTIALS, "", request.name.clone());
    let now = read(&state, Consistency::Linearizable).await?;
    let (spec, write, precondition) = match now.get(&key) {
        None => (
            EdgeNodeSpec {
                tier: request.tier,
                capabilities: request.capabilities.clone(),
                capacity: request.capacity.clone(),
                taints: Vec::new(),
                cordoned: false,
            },
            ResourceWrite::Create { created_at: rfc3339_now() },
            Precondition::MustNotExist,
        ),
        Some(object) => {
            let owner = object.value.pointer(&format!("/metadata/annotations/{}", UID_ANNOTATION.replace('/', "~1")));
            if let Some(owner) = owner.and_then(Value::as_str).filter(|o| *o != request.uid) {
                return Err(ApiError::status(
                    StatusCode::CONFLICT,
                    StatusReason::Conflict,
                    format!(
                        "node name {:?} is registered by another runtime (uid {owner}); delete EdgeNode {} to give the name to this one",
                        request.name, request.name
                    ),
                ));
            }
            // Taints and cordoning are the operator's; what the node is, is the node's.
            let old: Option<EdgeNodeSpec> = object.value.get("spec").and_then(|s| serde_json::from_value(s.clone()).ok());
            let (taints, cordoned) = old.map(|o| (o.taints, o.cordoned)).unwrap_or_default();
            let spec = EdgeNodeSpec {
                tier: request.tier,
                capabilities: request.capabilities.clone(),
                capacity: request.capacity.clone(),
                taints,
                cordoned,
            };
            (spec, ResourceWrite::Replace, Precondition::ResourceVersion(object.resource_version))
        }
    };
    // The same runtime registering again (its credential was lost or refused) keeps its
    // epoch: its stream numbers go on. Another one (a fresh data directory) starts a new epoch
    // above any this node name ever had, in its credential or in the sink.
    let stored = now.get(&credential_key).and_then(|o| serde_json::from_value::<Credential>(Value::clone(&o.value)).ok());
    let epoch = match &stored {
        Some(c) if c.uid == request.uid => c.epoch,
        other => other.as_ref().map_or(0, |c| c.epoch).max(now.sink().epoch(&request.name)) + 1,
    };
    let credential_precondition = match now.get(&credential_key) {
        Some(o) => Precondition::ResourceVersion(o.resource_version),
        None => Precondition::MustNotExist,
    };
    let resource = json!({
        "apiVersion": edgeplane_api::resources::API_VERSION,
        "kind": "EdgeNode",
        "metadata": {"name": request.name, "labels": request.labels, "annotations": {UID_ANNOTATION: request.uid}},
        "spec": spec,
    });
    let token = random_token().map_err(ApiError::internal)?;
    let credential = Credential { uid: request.uid.clone(), token_sha256: sha256_hex(token.as_bytes()), epoch };
    let command = Command::Transaction(vec![
        Command::PutResource { key, resource, precondition, write },
        Command::Put {
            key: credential_key,
            value: serde_json::to_value(credential).expect("serializable"),
            precondition: credential_precondition,
        },
    ]);
    match state.node.write(command).await {
        Ok(_) => {
            tracing::info!(node = %request.name, uid = %request.uid, epoch, "edge runtime registered");
            Ok(Json(RegisterResponse { name: request.name, token }))
        }
        Err(e) => Err(write_error(&state, e).await),
    }
}

async fn heartbeat(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<StatusCode, ApiError> {
    let presented = sha256_hex(bearer(&headers)?.as_bytes());
    if state.heartbeats.recently_verified(&name, &presented).is_none() {
        let epoch = authenticate(&state, &name, &headers).await?;
        state.heartbeats.remember_verified(&name, presented, epoch);
    }
    let body = body.map_err(|e| body_error(e, "body", MAX_BODY_BYTES))?;
    let heartbeat: Heartbeat = serde_json::from_slice(&body).map_err(|e| ApiError::invalid(vec![cause("body", e.to_string())]))?;
    if !state.heartbeats.leading() {
        ensure_leader(&state).await?;
    }
    state.heartbeats.record(&name, heartbeat);
    Ok(StatusCode::NO_CONTENT)
}

/// Checks the `Authorization: Bearer` credential of node `name` and returns the epoch of the
/// runtime incarnation it belongs to; works on any orchestrator.
///
/// A credential changes only when a runtime registers (again) under the name. This node's
/// applied state is trusted to accept: if it lags behind such a registration, it accepts the
/// replaced credential for no longer than its replication lag, and a runtime holding that
/// credential was this node until the moment it was replaced. A refusal is confirmed with a
/// linearizable read: a 401 tells the runtime to register again, which must not happen
/// because this orchestrator has not yet applied the registration that issued its credential.
pub(crate) async fn authenticate(state: &AppState, name: &str, headers: &HeaderMap) -> Result<u64, ApiError> {
    let presented = sha256_hex(bearer(headers)?.as_bytes());
    let key = ObjectKey::new(CREDENTIALS, "", name.to_owned());
    for consistency in [Consistency::Stale, Consistency::Linearizable] {
        let now = read(state, consistency).await?;
        let stored = now.get(&key).and_then(|o| serde_json::from_value::<Credential>(Value::clone(&o.value)).ok());
        if let Some(c) = stored.filter(|c| constant_time_eq(c.token_sha256.as_bytes(), presented.as_bytes())) {
            return Ok(c.epoch);
        }
    }
    Err(unauthorized(&format!("no node {name:?} with this credential; register again")))
}

async fn last_heartbeat(State(state): State<AppState>, Path(name): Path<String>) -> Result<Json<NodeLiveness>, ApiError> {
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

fn bearer(headers: &HeaderMap) -> Result<&str, ApiError> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| unauthorized("an Authorization: Bearer header is required"))
}

fn unauthorized(message: &str) -> ApiError {
    ApiError::status(StatusCode::UNAUTHORIZED, StatusReason::Unauthorized, message)
}
