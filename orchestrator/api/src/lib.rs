//! Wire types shared by every edgeplane binary.
//!
//! The edge runtime links this crate, and edge nodes are small, so nothing from the
//! orchestrator's implementation may leak in here: it depends on serde, serde_json, serde_yaml
//! and sha2. The `crd` feature adds the resources as Kubernetes objects, defined with kube's
//! `CustomResource` derive (kube, k8s-openapi and schemars, no kube client or runtime), their
//! CRDs and OpenAPI, manifests, and the checks of whole resources; the orchestrators and
//! edgectl use it, the edge runtime does not. `module-limits` adds wasmparser.
//!
//! # Layout
//! - [`ObjectView`]: an object of the replicated store as the REST API returns it.
//! - [`ClusterStatus`] and [`MemberStatus`]: what `GET /v1/cluster` reports.
//! - [`Status`]: the error body of every failed request (Kubernetes' `Status` shape).
//! - [`paths`]: the REST paths, so that servers and clients cannot drift apart.
//! - [`resources`]: EdgeNode, Module, Workload and Model in Kubernetes form, with their CRDs
//!   (the specs always; the objects and CRDs with `crd`).
//! - [`manifest`] (`crd`): parsing YAML manifests, all-or-nothing, every problem with its field path.
//! - [`validate`]: the semantic rules (names, labels, counts, references).
//! - [`selector`]: label selectors.
//! - [`node`]: registration and heartbeats of edge runtimes.
//! - [`abi`]: the limits on guest modules' size and complexity.
//! - [`auth`]: enrollment, certificates, tokens and the route table; [`audit`]: the
//!   hash-chained audit log.
//! - [`data`]: readings, the v1 batch format, and the cloud sink's upload and query types.
//! - [`openapi`] (`crd`): the OpenAPI document of the resource API.
//! - [`watch`]: the events of a watch stream.
//! - [`table`]: the columns each resource is listed with (edgectl, and kubectl's server-side Tables).
//! - [`events`]: Events in Kubernetes' two shapes (`events.k8s.io/v1` as stored, core `v1`).
//! - [`exposition`]: the Prometheus text formats `/metrics` answers in (OpenMetrics, classic).
//! - [`hex`]: lowercase hex, as digests, serials and tokens are written.

use serde::{Deserialize, Serialize};

pub mod abi;
pub mod audit;
pub mod auth;
pub mod backup;
pub mod data;
#[cfg(feature = "crd")]
pub mod discovery;
pub mod events;
pub mod exposition;
pub mod grammar;
pub mod hex;
#[cfg(feature = "crd")]
pub mod manifest;
pub mod node;
#[cfg(feature = "crd")]
pub mod openapi;
pub mod resources;
pub mod selector;
pub mod table;
pub mod validate;
pub mod watch;

/// REST paths of the orchestrator.
pub mod paths {
    /// Cluster membership, leader, term and log positions.
    pub const CLUSTER: &str = "/v1/cluster";
    /// Prefix of the resource API: `{RESOURCES}/[namespaces/{ns}/]{plural}[/{name}]`.
    pub const RESOURCES: &str = "/apis/edgeplane.io/v1alpha1";
    /// Prefix of the generic object store: `/v1/store/{kind}` and `/v1/store/{kind}/{name}`.
    pub const STORE: &str = "/v1/store";
    /// Prometheus text exposition.
    pub const METRICS: &str = "/metrics";
    /// Liveness of the process (not of the cluster).
    pub const HEALTHZ: &str = "/healthz";
    /// The OpenAPI 3 document of the resource API.
    pub const OPENAPI: &str = "/openapi/v3";
    /// A consistent copy of the whole state, for a backup (`crate::backup`).
    pub const BACKUP: &str = "/v1/backup";
    /// Every node's last heartbeat figures, as the leader holds them (`node::FleetHeartbeats`).
    pub const HEARTBEATS: &str = "/v1/heartbeats";

    /// Path of one object in the generic store.
    pub fn object(kind: &str, name: &str) -> String {
        format!("{STORE}/{kind}/{name}")
    }

    /// Path of all objects of a kind in the generic store.
    pub fn kind(kind: &str) -> String {
        format!("{STORE}/{kind}")
    }
}

/// How a read is served.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Consistency {
    /// Confirmed with a quorum through Raft's ReadIndex: never returns a value older than a
    /// write that was acknowledged before the read started.
    #[default]
    Linearizable,
    /// Served from this node's applied state without asking anyone: may be behind.
    Stale,
}

/// An object of the replicated store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectView {
    pub kind: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    pub name: String,
    /// The Raft log index of the write that last changed this object.
    pub resource_version: u64,
    /// The Raft log index of the write that created this object.
    pub created_version: u64,
    pub value: serde_json::Value,
}

/// A list of objects and the applied index it was read at.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectList {
    /// The applied log index of the state the list was read from.
    pub resource_version: u64,
    pub items: Vec<ObjectView>,
}

/// What `DELETE` returns: the object as it was, and the index of the deletion.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Deleted {
    pub deleted_at: u64,
    pub object: ObjectView,
}

/// The role of an orchestrator in its Raft group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Follower,
    Candidate,
    PreCandidate,
    Leader,
}

/// One member of the orchestrator cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MemberStatus {
    pub id: u64,
    pub peer_addr: String,
    pub api_addr: String,
    /// Highest log index known replicated on this member; only the leader knows it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub match_index: Option<u64>,
}

/// The state of one orchestrator and what it knows of its cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterStatus {
    pub node_id: u64,
    pub role: Role,
    pub term: u64,
    /// `None` while no leader is known (during an election, or when cut off).
    pub leader_id: Option<u64>,
    pub leader_api_addr: Option<String>,
    pub commit_index: u64,
    pub applied_index: u64,
    pub first_log_index: u64,
    pub last_log_index: u64,
    pub snapshot_index: u64,
    pub members: Vec<MemberStatus>,
    /// The last scheduled backup of each member that takes them, from this member's applied
    /// state.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub backups: Vec<backup::LastBackup>,
}

/// The body of every failed request, in the shape of Kubernetes' `Status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    /// Always `"Status"`.
    pub kind: String,
    /// Always `"v1"`: Kubernetes clients (kubectl) read a Status only with it.
    #[serde(default = "status_api_version")]
    pub api_version: String,
    /// Always `"Failure"`.
    pub status: String,
    pub code: u16,
    pub reason: StatusReason,
    pub message: String,
    #[serde(default, skip_serializing_if = "StatusDetails::is_empty")]
    pub details: StatusDetails,
}

/// Machine-readable class of a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum StatusReason {
    BadRequest,
    Invalid,
    NotFound,
    AlreadyExists,
    Conflict,
    /// The requested resourceVersion is older than the server keeps: list again.
    Expired,
    RequestEntityTooLarge,
    /// The body's Content-Type is not one the route takes.
    UnsupportedMediaType,
    /// The resource cannot be written this way (Assignments are written by the orchestrators).
    MethodNotAllowed,
    /// No credentials, or credentials that are not (or no longer) valid.
    Unauthorized,
    /// Authenticated, but not allowed to do this.
    Forbidden,
    ServiceUnavailable,
    Timeout,
    InternalError,
}

/// Extra facts that help a client act on a failure.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusDetails {
    /// Each offending field, with the reason it is wrong.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub causes: Vec<StatusCause>,
    /// The current leader, when this node is not it and knows who is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader_api_addr: Option<String>,
    /// The object's current resourceVersion, on a conflict.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_resource_version: Option<u64>,
    /// Whether the request may have taken effect although it failed (a timeout after the
    /// write was proposed). A client that retries must make its write idempotent, e.g. with a
    /// resourceVersion precondition.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub outcome_unknown: bool,
}

impl StatusDetails {
    fn is_empty(&self) -> bool {
        self == &StatusDetails::default()
    }
}

/// One offending field of a rejected request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusCause {
    /// Path of the field, e.g. `spec.replicas` or `query.ifVersion`.
    pub field: String,
    pub message: String,
}

fn status_api_version() -> String {
    "v1".to_owned()
}

impl Status {
    pub fn new(code: u16, reason: StatusReason, message: impl Into<String>) -> Self {
        Status {
            kind: "Status".to_owned(),
            api_version: status_api_version(),
            status: "Failure".to_owned(),
            code,
            reason,
            message: message.into(),
            details: StatusDetails::default(),
        }
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({:?}): {}", self.code, self.reason, self.message)?;
        for cause in &self.details.causes {
            write!(f, "\n  {}: {}", cause.field, cause.message)?;
        }
        Ok(())
    }
}

impl std::error::Error for Status {}
