//! Edge runtimes: registration, heartbeats, and the leader's placement loop.
//!
//! - `POST /v1/nodes/register` (bootstrap token): creates the node's `EdgeNode`, or adopts the
//!   one an operator applied, and issues the node a credential. The EdgeNode and the hash of
//!   the credential are written in one transaction.
//! - `POST /v1/nodes/{name}/heartbeat` (node credential): kept in the leader's memory only;
//!   heartbeats are frequent and their content is stale within a second, so they are not
//!   worth a Raft write. A follower answers 503 with the leader's address.
//! - `GET /v1/nodes/{name}/heartbeat`: the leader's view of the node's last heartbeat.
//!
//! The placement loop runs on every orchestrator but acts only while it leads: it feeds the
//! pure planner ([`edgeplane_core::placement`]) the applied state and the nodes heard from
//! within the grace period, and proposes the planner's writes as one transaction.

use std::collections::{BTreeMap, HashMap};
use std::io::Read as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::routing::post;
use axum::{Json, Router};
use edgeplane_api::node::{self, Heartbeat, InstancePhase, NodeLiveness, RegisterRequest, RegisterResponse};
use edgeplane_api::resources::EdgeNodeSpec;
use edgeplane_api::{validate, Consistency, StatusReason};
use edgeplane_core::health::HealthPolicy;
use edgeplane_core::placement::{self, Unplaced};
use edgeplane_core::{ClusterState, Command, ObjectKey, Precondition, ResourceWrite};
use raft::StateRole;
use serde_json::{json, Value};
use sha2::Digest as _;

use crate::api::{body_error, cause, leader_hint, read_error, write_error, ApiError, AppState, MAX_BODY_BYTES};
use crate::modules::hex;
use crate::resources::rfc3339_now;

/// Where the hash of each node's credential is kept (generic store kind, cluster-wide).
const CREDENTIALS: &str = "node-credentials";
/// The annotation on an EdgeNode naming the runtime that registered it.
pub const UID_ANNOTATION: &str = "edgeplane.io/node-uid";
/// How often the leader plans placements.
const PLACEMENT_INTERVAL: Duration = Duration::from_millis(100);

/// The leader's memory of heartbeats.
#[derive(Debug)]
pub struct Liveness {
    nodes: Mutex<HashMap<String, (Instant, Heartbeat)>>,
    /// When this node last became leader: silence is counted from here at the earliest.
    leading_since: Mutex<Instant>,
    /// Whether this node led at the placement loop's last look (every 100 ms): heartbeats
    /// check it instead of asking the Raft actor each time.
    leading: AtomicBool,
    /// Credentials (sha256) that passed the store check recently, by node: at thousands of
    /// heartbeats a second, reading the store for each is most of a leader's work.
    verified: Mutex<HashMap<String, (String, Instant)>>,
}

/// How long a checked credential is trusted without looking at the store again. A credential
/// replaced by a new registration stays usable on this leader for at most this long.
const CREDENTIAL_CACHE: Duration = Duration::from_secs(10);

impl Default for Liveness {
    fn default() -> Self {
        Liveness {
            nodes: Mutex::default(),
            leading_since: Mutex::new(Instant::now()),
            leading: AtomicBool::new(false),
            verified: Mutex::default(),
        }
    }
}

impl Liveness {
    fn recently_verified(&self, name: &str, credential_sha256: &str) -> bool {
        let verified = self.verified.lock().unwrap_or_else(|p| p.into_inner());
        verified.get(name).is_some_and(|(sha, at)| sha == credential_sha256 && at.elapsed() < CREDENTIAL_CACHE)
    }

    fn remember_verified(&self, name: &str, credential_sha256: String) {
        self.verified.lock().unwrap_or_else(|p| p.into_inner()).insert(name.to_owned(), (credential_sha256, Instant::now()));
    }

    fn record(&self, name: &str, heartbeat: Heartbeat) {
        self.lock().insert(name.to_owned(), (Instant::now(), heartbeat));
    }

    /// What the planner needs: each node's silence in ms (since its last heartbeat, or since
    /// this leader took over if that is later; nodes in `known` but never heard count from
    /// then too), and the assignments whose instance reports CrashLoop.
    fn observe(&self) -> Observed {
        let since_leading = self.leading_since.lock().unwrap_or_else(|p| p.into_inner()).elapsed();
        let nodes = self.lock();
        let silence = nodes.iter().map(|(n, (at, _))| (n.clone(), at.elapsed().min(since_leading).as_millis() as u64)).collect();
        let instances = || nodes.iter().flat_map(|(node, (_, h))| h.instances.iter().map(move |i| (node, i)));
        let with_phase = |phase| instances().filter(|(_, i)| i.phase == phase).map(|(n, i)| (i.assignment.clone(), n.clone())).collect();
        // What the instances report; health is judged later, against the registered nodes.
        let reports = placement::Liveness {
            crash_looping: with_phase(InstancePhase::CrashLoop),
            running: with_phase(InstancePhase::Running),
            cpu_millis: nodes.iter().map(|(n, (_, h))| (n.clone(), h.load.cpu_millis)).collect(),
            failed: instances()
                .filter(|(_, i)| matches!(i.phase, InstancePhase::CrashLoop | InstancePhase::Failed))
                .map(|(n, i)| ((i.assignment.clone(), n.clone()), i.message.clone().unwrap_or_else(|| format!("{:?}", i.phase))))
                .collect(),
            digests: instances().map(|(n, i)| ((i.assignment.clone(), n.clone()), i.module_digest.clone())).collect(),
            ..placement::Liveness::default()
        };
        Observed { silence, since_leading_ms: since_leading.as_millis() as u64, reports }
    }

    fn get(&self, name: &str) -> Option<NodeLiveness> {
        self.lock().get(name).map(|(at, heartbeat)| NodeLiveness {
            name: name.to_owned(),
            age_ms: at.elapsed().as_millis() as u64,
            heartbeat: heartbeat.clone(),
        })
    }

    /// Forgets everything and restarts the clock: a leader that lost and regained leadership
    /// must not trust heartbeats it heard before (another leader may have had newer ones), and
    /// owes every node a full grace period.
    fn clear(&self) {
        self.lock().clear();
        self.verified.lock().unwrap_or_else(|p| p.into_inner()).clear();
        *self.leading_since.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Instant, Heartbeat)>> {
        self.nodes.lock().unwrap_or_else(|p| p.into_inner())
    }
}

pub fn routes() -> Router<AppState> {
    Router::new()
        .route(node::REGISTER, post(register))
        .route("/v1/nodes/{name}/heartbeat", post(heartbeat).get(last_heartbeat))
}

async fn register(State(state): State<AppState>, headers: HeaderMap, body: Result<Bytes, BytesRejection>) -> Result<Json<RegisterResponse>, ApiError> {
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
    let request: RegisterRequest =
        serde_json::from_slice(&body).map_err(|e| ApiError::invalid(vec![cause("body", e.to_string())]))?;
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
    let lookup = key.clone();
    let current = match state.node.read(Consistency::Linearizable, move |s: &ClusterState| s.get(&lookup).cloned()).await {
        Ok(current) => current,
        Err(e) => return Err(read_error(&state, e).await),
    };
    let (spec, write, precondition) = match &current {
        None => (
            EdgeNodeSpec {
                tier: request.tier,
                capabilities: request.capabilities.clone(),
                capacity: request.capacity.clone(),
                taints: Vec::new(),
                cordoned: false,
            },
            ResourceWrite::Create { created_at: rfc3339_now() },
            Precondition::None,
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
    let resource = json!({
        "apiVersion": edgeplane_api::resources::API_VERSION,
        "kind": "EdgeNode",
        "metadata": {"name": request.name, "labels": request.labels, "annotations": {UID_ANNOTATION: request.uid}},
        "spec": spec,
    });
    let token = random_token().map_err(|e| ApiError::status(StatusCode::INTERNAL_SERVER_ERROR, StatusReason::InternalError, e))?;
    let credential = json!({"uid": request.uid, "tokenSha256": sha256_hex(token.as_bytes())});
    let command = Command::Transaction(vec![
        Command::PutResource { key, resource, precondition, write },
        Command::Put { key: ObjectKey::new(CREDENTIALS, "", request.name.clone()), value: credential, precondition: Precondition::None },
    ]);
    match state.node.write(command).await {
        Ok(_) => {
            tracing::info!(node = %request.name, uid = %request.uid, "edge runtime registered");
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
    if !state.liveness.recently_verified(&name, &presented) {
        authenticate(&state, &name, &headers).await?;
        state.liveness.remember_verified(&name, presented);
    }
    let body = body.map_err(|e| body_error(e, "body", MAX_BODY_BYTES))?;
    let heartbeat: Heartbeat =
        serde_json::from_slice(&body).map_err(|e| ApiError::invalid(vec![cause("body", e.to_string())]))?;
    if !state.liveness.leading.load(Ordering::Relaxed) {
        ensure_leader(&state).await?;
    }
    state.liveness.record(&name, heartbeat);
    Ok(StatusCode::NO_CONTENT)
}

/// Checks the `Authorization: Bearer` credential of node `name`; works on any orchestrator.
///
/// A credential changes only when a runtime registers (again) under the name. This node's
/// applied state is trusted to accept: if it lags behind such a registration, it accepts the
/// replaced credential for no longer than its replication lag, and a runtime holding that
/// credential was this node until the moment it was replaced. A refusal is confirmed with a
/// linearizable read: a 401 tells the runtime to register again, which must not happen
/// because this orchestrator has not yet applied the registration that issued its credential.
pub(crate) async fn authenticate(state: &AppState, name: &str, headers: &HeaderMap) -> Result<(), ApiError> {
    let presented = sha256_hex(bearer(headers)?.as_bytes());
    for consistency in [Consistency::Stale, Consistency::Linearizable] {
        let lookup = ObjectKey::new(CREDENTIALS, "", name.to_owned());
        let stored = match state.node.read(consistency, move |s: &ClusterState| s.get(&lookup).map(|o| o.value.clone())).await {
            Ok(stored) => stored,
            Err(e) => return Err(read_error(state, e).await),
        };
        let known = stored.as_ref().and_then(|v| v.get("tokenSha256")).and_then(Value::as_str);
        if known.is_some_and(|k| constant_time_eq(k.as_bytes(), presented.as_bytes())) {
            return Ok(());
        }
    }
    Err(unauthorized(&format!("no node {name:?} with this credential; register again")))
}

async fn last_heartbeat(State(state): State<AppState>, Path(name): Path<String>) -> Result<Json<NodeLiveness>, ApiError> {
    ensure_leader(&state).await?;
    state.liveness.get(&name).map(Json).ok_or_else(|| {
        ApiError::status(StatusCode::NOT_FOUND, StatusReason::NotFound, format!("no heartbeat from node {name:?} since this orchestrator became leader"))
    })
}

async fn ensure_leader(state: &AppState) -> Result<(), ApiError> {
    match state.node.status().await {
        Some(s) if s.role == StateRole::Leader => Ok(()),
        _ => Err(ApiError::status(StatusCode::SERVICE_UNAVAILABLE, StatusReason::ServiceUnavailable, "heartbeats go to the leader")
            .leader_hint(leader_hint(state).await)),
    }
}

/// The leader's heartbeat memory at one instant.
struct Observed {
    silence: BTreeMap<String, u64>,
    since_leading_ms: u64,
    /// Everything but the health verdicts.
    reports: placement::Liveness,
}

impl Observed {
    /// Judges every registered node: those never heard from this leader have been silent
    /// since it took over.
    fn liveness(mut self, state: &ClusterState, policy: HealthPolicy) -> placement::Liveness {
        for (key, _) in state.list("edgenodes", Some("")) {
            self.silence.entry(key.name.clone()).or_insert(self.since_leading_ms);
        }
        let judged = placement::Liveness::assess(&self.silence, policy);
        placement::Liveness { health: judged.health, down_for_ms: judged.down_for_ms, ..self.reports }
    }
}

/// Plans and proposes placements while this orchestrator leads. Runs until the process stops.
pub async fn placement_loop(state: AppState) {
    let mut was_leader = false;
    let mut last_unplaced: Vec<Unplaced> = Vec::new();
    // The fingerprint of the last inputs that planned nothing, and when.
    let mut idle: Option<(u64, Instant)> = None;
    let mut ticker = tokio::time::interval(PLACEMENT_INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let Some(status) = state.node.status().await else { return };
        let leader = status.role == StateRole::Leader;
        if leader != was_leader {
            state.liveness.clear();
            state.liveness.leading.store(leader, Ordering::Relaxed);
            idle = None;
            was_leader = leader;
        }
        if !leader {
            continue;
        }
        let observed = state.liveness.observe();
        let policy = state.config.node_health;
        let now = rfc3339_now();
        let unix_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        // Planning what was planned last time with nothing to do would find nothing again;
        // at least once a second it plans anyway.
        let skip = idle.filter(|(_, at)| at.elapsed() < Duration::from_secs(1)).map(|(fingerprint, _)| fingerprint);
        let planned = state
            .node
            .read(Consistency::Stale, move |s: &ClusterState| {
                let liveness = observed.liveness(s, policy);
                let fingerprint = liveness.fingerprint(s.applied_index());
                (Some(fingerprint) != skip).then(|| (fingerprint, placement::plan(s, &liveness, placement::Now { rfc3339: &now, unix_ms })))
            })
            .await;
        let (fingerprint, plan) = match planned {
            Ok(Some(planned)) => planned,
            Ok(None) => continue,
            Err(e) => {
                tracing::debug!(error = %e, "placement: cannot read the state");
                continue;
            }
        };
        idle = plan.commands.is_empty().then(|| (fingerprint, Instant::now()));
        if plan.unplaced != last_unplaced {
            for u in &plan.unplaced {
                tracing::info!(workload = %u.workload, missing = u.missing, "placement: {}", u.reason);
            }
            last_unplaced = plan.unplaced;
        }
        if plan.commands.is_empty() {
            continue;
        }
        let writes = plan.commands.len();
        match state.node.write(Command::Transaction(plan.commands)).await {
            Ok(_) => tracing::info!(writes, "placement: applied"),
            // A precondition failed (the state moved on) or no quorum: plan again next tick.
            Err(e) => tracing::debug!(error = %e, "placement: not applied"),
        }
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

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex(&sha2::Sha256::digest(bytes))
}

/// 256 bits from the kernel's CSPRNG, hex-encoded.
fn random_token() -> Result<String, String> {
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(|e| format!("cannot read /dev/urandom: {e}"))?;
    Ok(hex(&bytes))
}
