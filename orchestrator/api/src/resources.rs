//! The edgeplane resources, in Kubernetes form (`apiVersion: edgeplane.io/v1alpha1`, `kind`,
//! `metadata`, `spec`, `status`), defined with kube's `CustomResource` derive so that the same
//! types can be served to Kubernetes as CRDs (generated into `manifests/crds/`).
//!
//! - [`EdgeNode`] (cluster-scoped): an edge runtime, its capabilities and capacity.
//! - [`Module`]: a WebAssembly module, content-addressed by its sha256 digest.
//! - [`Workload`]: what to run where: a module, how many replicas, placement, IO.
//! - [`Model`]: versioned parameters for inference workloads.
//! - [`Assignment`]: one replica of a Workload bound to one node, written by the orchestrators
//!   (like a Kubernetes Pod); edge runtimes watch their own.
//! - Authorization, as Kubernetes' RBAC: [`Role`] and [`ClusterRole`] (rules: verbs on
//!   resources), [`RoleBinding`] and [`ClusterRoleBinding`] (subjects to a role);
//!   [`ServiceAccount`] (a program's identity, authenticated by a bearer token).
//! - [`SinkPolicy`] and [`ClusterSinkPolicy`]: the HTTP endpoints workloads may send to.
//!
//! Every spec rejects unknown fields; [`crate::validate`] checks what types cannot.

use std::collections::BTreeMap;

#[cfg(feature = "crd")]
use kube::CustomResource;
#[cfg(feature = "crd")]
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub const GROUP: &str = "edgeplane.io";
pub const VERSION: &str = "v1alpha1";
pub const API_VERSION: &str = "edgeplane.io/v1alpha1";

/// A resource type: its kind, the plural in REST paths, its scope, and the short names
/// people type on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResourceKind {
    pub kind: &'static str,
    pub plural: &'static str,
    pub namespaced: bool,
    pub aliases: &'static [&'static str],
}

/// Every resource type the API serves.
pub const KINDS: &[ResourceKind] = &[
    ResourceKind { kind: "EdgeNode", plural: "edgenodes", namespaced: false, aliases: &["edgenode", "node", "nodes"] },
    ResourceKind { kind: "Module", plural: "modules", namespaced: true, aliases: &["module", "mod"] },
    ResourceKind { kind: "Workload", plural: "workloads", namespaced: true, aliases: &["workload", "wl"] },
    ResourceKind { kind: "Model", plural: "models", namespaced: true, aliases: &["model"] },
    ResourceKind { kind: "Assignment", plural: "assignments", namespaced: true, aliases: &["assignment", "asg"] },
    ResourceKind { kind: "Role", plural: "roles", namespaced: true, aliases: &["role"] },
    ResourceKind { kind: "ClusterRole", plural: "clusterroles", namespaced: false, aliases: &["clusterrole"] },
    ResourceKind { kind: "RoleBinding", plural: "rolebindings", namespaced: true, aliases: &["rolebinding"] },
    ResourceKind { kind: "ClusterRoleBinding", plural: "clusterrolebindings", namespaced: false, aliases: &["clusterrolebinding"] },
    ResourceKind { kind: "ServiceAccount", plural: "serviceaccounts", namespaced: true, aliases: &["serviceaccount", "sa"] },
    ResourceKind { kind: "SinkPolicy", plural: "sinkpolicies", namespaced: true, aliases: &["sinkpolicy"] },
    ResourceKind { kind: "ClusterSinkPolicy", plural: "clustersinkpolicies", namespaced: false, aliases: &["clustersinkpolicy"] },
    ResourceKind { kind: "TrustPolicy", plural: "trustpolicies", namespaced: true, aliases: &["trustpolicy"] },
];

/// The CustomResourceDefinition of every kind, in [`KINDS`] order.
#[cfg(feature = "crd")]
pub fn crds() -> Vec<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition> {
    use kube::CustomResourceExt;
    vec![
        EdgeNode::crd(),
        Module::crd(),
        Workload::crd(),
        Model::crd(),
        Assignment::crd(),
        Role::crd(),
        ClusterRole::crd(),
        RoleBinding::crd(),
        ClusterRoleBinding::crd(),
        ServiceAccount::crd(),
        SinkPolicy::crd(),
        ClusterSinkPolicy::crd(),
        TrustPolicy::crd(),
    ]
}

impl ResourceKind {
    pub fn by_plural(plural: &str) -> Option<ResourceKind> {
        KINDS.iter().copied().find(|k| k.plural == plural)
    }

    pub fn by_kind(kind: &str) -> Option<ResourceKind> {
        KINDS.iter().copied().find(|k| k.kind == kind)
    }

    /// Any name a person might use: plural, kind or alias, in any case.
    pub fn by_any_name(name: &str) -> Option<ResourceKind> {
        let lower = name.to_lowercase();
        KINDS.iter().copied().find(|k| k.plural == lower || k.kind.to_lowercase() == lower || k.aliases.contains(&lower.as_str()))
    }
}

/// Where a runtime sits: next to the sensors, aggregating for a site, or in the cloud.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "crd", derive(JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    #[default]
    Edge,
    Gateway,
    Cloud,
}

/// An edge runtime registered with the orchestrators.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "crd", derive(CustomResource, JsonSchema))]
#[cfg_attr(
    feature = "crd",
    kube(
        group = "edgeplane.io",
        version = "v1alpha1",
        kind = "EdgeNode",
        plural = "edgenodes",
        derive = "PartialEq",
        shortname = "node",
        status = "EdgeNodeStatus",
        printcolumn = r#"{"name":"Tier","type":"string","jsonPath":".spec.tier"}"#,
        printcolumn = r#"{"name":"Cordoned","type":"boolean","jsonPath":".spec.cordoned"}"#
    )
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EdgeNodeSpec {
    #[serde(default)]
    pub tier: Tier,
    /// What the node offers, e.g. `sensor.temperature`, `accel.gpu`, `wasm.simd`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub capabilities: Vec<String>,
    pub capacity: Capacity,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub taints: Vec<Taint>,
    /// A cordoned node keeps its replicas but receives no new ones.
    #[serde(default)]
    pub cordoned: bool,
}

/// What a node can hold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "crd", derive(JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Capacity {
    #[cfg_attr(feature = "crd", schemars(range(min = 1)))]
    pub memory_mib: u64,
    /// Workload instances the node runs at most.
    #[cfg_attr(feature = "crd", schemars(range(min = 1)))]
    pub instance_slots: u32,
    /// CPU in thousandths of a core.
    #[cfg_attr(feature = "crd", schemars(range(min = 1)))]
    pub cpu_millis: u32,
}

/// Keeps workloads off a node unless they tolerate it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "crd", derive(JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Taint {
    pub key: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub value: String,
    pub effect: TaintEffect,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "crd", derive(JsonSchema))]
pub enum TaintEffect {
    /// New replicas are not placed here.
    NoSchedule,
    /// New replicas avoid the node when another fits.
    PreferNoSchedule,
}

/// What the orchestrators know of a node.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "crd", derive(JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct EdgeNodeStatus {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// RFC 3339 time of the last heartbeat the leader received.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_heartbeat: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load: Option<NodeLoad>,
}

/// A node's reported load.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "crd", derive(JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct NodeLoad {
    pub cpu_millis: u32,
    pub memory_mib: u64,
    pub instances: u32,
    pub queue_depth: u64,
}

/// A Kubernetes-style condition (`Ready`, `Progressing`, ...).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "crd", derive(JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<String>,
}

/// A WebAssembly module. Its bytes live in the module registry under `digest`; versions are
/// immutable.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "crd", derive(CustomResource, JsonSchema))]
#[cfg_attr(
    feature = "crd",
    kube(
        group = "edgeplane.io",
        version = "v1alpha1",
        kind = "Module",
        plural = "modules",
        derive = "PartialEq",
        namespaced,
        printcolumn = r#"{"name":"Version","type":"string","jsonPath":".spec.version"}"#,
        printcolumn = r#"{"name":"Digest","type":"string","jsonPath":".spec.digest"}"#
    )
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ModuleSpec {
    /// Semantic version, e.g. `1.2.0`.
    pub version: String,
    /// `sha256:` and 64 lowercase hex digits.
    pub digest: String,
    #[cfg_attr(feature = "crd", schemars(range(min = 1)))]
    pub size_bytes: u64,
    /// The guest ABI the module exports (see docs/abi.md), e.g. `edgeplane/v1`.
    pub abi: String,
    /// Who vouches for it, when it was pushed signed (`edgectl module push --sign`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<ArtifactSignature>,
}

/// An ed25519 signature over an artifact's kind, name, version and digest (docs/security.md).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "crd", derive(JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ArtifactSignature {
    /// The signer's public key: `ed25519:` and the base64 of its 32 bytes.
    pub key: String,
    /// The signature, base64.
    pub signature: String,
}

/// What a signature vouches for: a module or a model file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "crd", derive(JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum ArtifactKind {
    Module,
    Model,
}

impl ArtifactKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ArtifactKind::Module => "module",
            ArtifactKind::Model => "model",
        }
    }
}

/// The signature of the module an Assignment runs, with the name and version it was signed
/// under: what the edge checks against its own trust roots before it runs the module.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "crd", derive(JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SignedModule {
    pub name: String,
    pub version: String,
    pub signature: ArtifactSignature,
}

/// What to run, how many, where, and on which data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "crd", derive(CustomResource, JsonSchema))]
#[cfg_attr(
    feature = "crd",
    kube(
        group = "edgeplane.io",
        version = "v1alpha1",
        kind = "Workload",
        plural = "workloads",
        derive = "PartialEq",
        shortname = "wl",
        namespaced,
        status = "WorkloadStatus",
        printcolumn = r#"{"name":"Module","type":"string","jsonPath":".spec.module"}"#,
        printcolumn = r#"{"name":"Replicas","type":"integer","jsonPath":".spec.replicas"}"#,
        printcolumn = r#"{"name":"Ready","type":"integer","jsonPath":".status.readyReplicas"}"#
    )
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkloadSpec {
    /// `name@version` of a Module in the same namespace, or `sha256:<digest>`.
    pub module: String,
    /// How many instances to run; exclusive with `mode: daemon`. Default 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "crd", schemars(range(min = 0, max = 10000)))]
    pub replicas: Option<i64>,
    #[serde(default)]
    pub mode: WorkloadMode,
    #[serde(default)]
    pub placement: Placement,
    #[serde(default)]
    pub resources: WorkloadResources,
    /// Topics the workload consumes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inputs: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub outputs: Vec<Output>,
    /// Handed to the module as is (its own schema).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "crd", schemars(schema_with = "free_form_object"))]
    pub config: Option<serde_json::Map<String, serde_json::Value>>,
    /// A Model in the same namespace whose parameters the instances use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_ref: Option<String>,
    #[serde(default)]
    pub failure_policy: FailurePolicy,
    #[serde(default)]
    pub rollout: Rollout,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "crd", derive(JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum WorkloadMode {
    /// `replicas` instances on the best-fitting nodes.
    #[default]
    Replicated,
    /// One instance on every matching node.
    Daemon,
}

/// Which nodes may run the workload, and which are preferred.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "crd", derive(JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Placement {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub required_capabilities: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
    /// Spread replicas across the values of this node label (e.g. `zone`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spread_by: Option<String>,
    /// Tiers in order of preference; empty means any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub preferred_tiers: Vec<Tier>,
    /// Run on cloud-tier nodes when no preferred node fits, and move back when one does.
    #[serde(default)]
    pub cloud_fallback: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "crd", derive(JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Toleration {
    pub key: String,
    /// Tolerates only this value; empty tolerates any.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub value: String,
}

/// What one instance may use.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "crd", derive(JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkloadResources {
    #[cfg_attr(feature = "crd", schemars(range(min = 1)))]
    pub memory_mib: u64,
    /// Time budget for processing one batch; the instance is stopped past it.
    #[cfg_attr(feature = "crd", schemars(range(min = 1, max = 60000)))]
    pub batch_time_ms: u64,
}

impl Default for WorkloadResources {
    fn default() -> Self {
        WorkloadResources { memory_mib: 16, batch_time_ms: 100 }
    }
}

/// Where a workload's results go: a topic (to chain workloads) or a sink.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "crd", derive(JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Output {
    /// The output name the module emits on.
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sink: Option<Sink>,
}

/// A destination outside the node's topics.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "crd", derive(JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Sink {
    #[serde(rename = "type")]
    pub type_: SinkType,
    /// The MQTT topic (`type: mqtt`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
    /// The endpoint (`type: http`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "crd", derive(JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum SinkType {
    /// Upstream to the orchestrators through the durable outbox.
    Cloud,
    Mqtt,
    Http,
    Log,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "crd", derive(JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FailurePolicy {
    /// How long a lost node's replicas wait for it before being placed elsewhere.
    pub lost_after_seconds: u64,
    /// First restart delay after a trap; doubles up to 60 s.
    #[cfg_attr(feature = "crd", schemars(range(min = 1)))]
    pub restart_backoff_ms: u64,
    /// Restarts on one node before the replica is moved to another.
    pub max_restarts: u32,
}

impl Default for FailurePolicy {
    fn default() -> Self {
        FailurePolicy { lost_after_seconds: 0, restart_backoff_ms: 100, max_restarts: 5 }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "crd", derive(JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Rollout {
    /// Replicas that may be unavailable at once during a rollout or rebalancing.
    #[cfg_attr(feature = "crd", schemars(range(min = 1)))]
    pub max_unavailable: u32,
    /// A new replica must report healthy within this long.
    pub health_gate_seconds: u64,
    pub auto_rollback: bool,
}

impl Default for Rollout {
    fn default() -> Self {
        Rollout { max_unavailable: 1, health_gate_seconds: 30, auto_rollback: true }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "crd", derive(JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct WorkloadStatus {
    #[serde(default)]
    pub observed_generation: i64,
    #[serde(default)]
    pub replicas: u32,
    #[serde(default)]
    pub ready_replicas: u32,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The last change of module or configuration as it rolls over the replicas.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<RolloutStatus>,
}

/// Where a rollout stands. Written by the scheduler.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "crd", derive(JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct RolloutStatus {
    /// The Workload generation being rolled out.
    pub revision: i64,
    pub phase: RolloutPhase,
    /// Replicas running the revision, of the desired count.
    pub updated: u32,
    pub replicas: u32,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// When the scheduler last updated replicas (ms since the Unix epoch, leader clock): each
    /// must report Running on its new module within `healthGateSeconds` of it.
    #[serde(default)]
    pub step_started_ms: u64,
    /// The module and configuration before this revision: what a rollback (or `edgectl
    /// rollout undo`) returns to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<PreviousRevision>,
}

/// The phase of a rollout.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "crd", derive(JsonSchema))]
pub enum RolloutPhase {
    /// Replicas are being updated to the revision.
    #[default]
    Progressing,
    /// Every replica runs the revision.
    Complete,
    /// A replica on the revision failed; the spec went back to `previous`, which rolls out in
    /// turn.
    RolledBack,
}

impl RolloutPhase {
    pub fn as_str(self) -> &'static str {
        match self {
            RolloutPhase::Progressing => "Progressing",
            RolloutPhase::Complete => "Complete",
            RolloutPhase::RolledBack => "RolledBack",
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "crd", derive(JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct PreviousRevision {
    pub module: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "crd", schemars(schema_with = "free_form_object"))]
    pub config: Option<serde_json::Map<String, serde_json::Value>>,
}

/// Versioned parameters for inference workloads: the cloud trains, edges infer. Changing it
/// reaches every instance that references it without a restart.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "crd", derive(CustomResource, JsonSchema))]
#[cfg_attr(
    feature = "crd",
    kube(
        group = "edgeplane.io",
        version = "v1alpha1",
        kind = "Model",
        plural = "models",
        derive = "PartialEq",
        namespaced,
        printcolumn = r#"{"name":"Version","type":"string","jsonPath":".spec.version"}"#,
        printcolumn = r#"{"name":"Format","type":"string","jsonPath":".spec.format"}"#
    )
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ModelSpec {
    pub version: String,
    /// How the workload reads the model: `onnx` (a model file in the registry, pushed with
    /// `edgectl model push`), or a parameter format such as `zscore-logistic/v1`.
    pub format: String,
    /// Named parameter vectors (weights, biases, thresholds) of a parameter format.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub parameters: BTreeMap<String, Vec<f64>>,
    /// The model file of an `onnx` Model, as the registry checked it at push.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact: Option<ModelArtifact>,
}

/// The format of Models whose file is in the registry.
pub const MODEL_FORMAT_ONNX: &str = "onnx";

/// A model file in the registry: its bytes by digest, what it takes and gives, and which
/// inference backends can run it (each loaded it at push).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "crd", derive(JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ModelArtifact {
    /// `sha256:<hex>` of the file; `GET /v1/blobs/{digest}` serves it.
    pub digest: String,
    pub size_bytes: u64,
    pub inputs: Vec<TensorSignature>,
    pub outputs: Vec<TensorSignature>,
    /// Backends that can run the model (`tract`, `onnxruntime`): the scheduler places its
    /// workloads only on nodes with the capability `inference.onnx.<backend>` of one of them.
    pub backends: Vec<String>,
    /// Who vouches for the file, when it was pushed signed (`edgectl model push --sign`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<ArtifactSignature>,
}

/// The node capability that says a node runs ONNX models with `backend`.
pub fn inference_capability(backend: &str) -> String {
    format!("inference.onnx.{backend}")
}

/// One input or output of a model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "crd", derive(JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TensorSignature {
    pub name: String,
    /// ONNX's element type name: `float`, `double`, `int64`, `int32`, `bool`, `string`, ...
    pub elem_type: String,
    /// One entry per dimension: its size, or the name of a free dimension (`?` if unnamed).
    /// Absent when the model does not say.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shape: Option<Vec<String>>,
}

/// One replica of a Workload on one node, with everything the node needs to run it resolved:
/// the module's digest, the configuration and the Model's parameters. Written only by the
/// orchestrators' placement controller; the node watches the Assignments labelled with its
/// name ([`crate::node::NODE_LABEL`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "crd", derive(CustomResource, JsonSchema))]
#[cfg_attr(
    feature = "crd",
    kube(
        group = "edgeplane.io",
        version = "v1alpha1",
        kind = "Assignment",
        plural = "assignments",
        derive = "PartialEq",
        shortname = "asg",
        namespaced,
        printcolumn = r#"{"name":"Workload","type":"string","jsonPath":".spec.workload"}"#,
        printcolumn = r#"{"name":"Node","type":"string","jsonPath":".spec.nodeName"}"#,
        printcolumn = r#"{"name":"Generation","type":"integer","jsonPath":".spec.generation"}"#
    )
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AssignmentSpec {
    /// The Workload (same namespace) this is a replica of.
    pub workload: String,
    /// Which replica: 0..replicas, or the node's position for daemon workloads.
    pub replica: u32,
    pub node_name: String,
    /// Bumped every time the replica is placed anew; outputs of an older generation are fenced.
    pub generation: u64,
    /// When the leader placed this generation (ms since the Unix epoch, the leader's clock).
    /// Outputs of older generations produced after it are fenced by the cloud sink; those
    /// produced before it (a dead node's backlog) are kept.
    #[serde(default)]
    pub placed_at_ms: u64,
    /// The Workload's `spec.module` as written.
    pub module_ref: String,
    /// What `module_ref` resolved to.
    pub module_digest: String,
    /// The module's signature, when it was pushed signed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub module_signature: Option<SignedModule>,
    #[serde(default)]
    pub resources: WorkloadResources,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inputs: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub outputs: Vec<Output>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "crd", schemars(schema_with = "free_form_object"))]
    pub config: Option<serde_json::Map<String, serde_json::Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<AssignedModel>,
    #[serde(default)]
    pub failure_policy: FailurePolicy,
    /// Where this replica ran before, newest first (at most [`MAX_PREVIOUS_PLACEMENTS`]): those
    /// nodes may still upload what they produced there (the backlog of a node that was lost).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub previous: Vec<PreviousPlacement>,
}

/// How many earlier placements an Assignment remembers.
pub const MAX_PREVIOUS_PLACEMENTS: usize = 8;

/// An earlier placement of a replica.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "crd", derive(JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PreviousPlacement {
    pub generation: u64,
    pub node_name: String,
}

impl AssignmentSpec {
    /// Whether `node` held this replica at `generation`: now, or in an earlier placement.
    pub fn held_by(&self, node: &str, generation: u64) -> bool {
        (self.node_name == node && self.generation == generation)
            || self.previous.iter().any(|p| p.node_name == node && p.generation == generation)
    }
}

/// The Model an Assignment runs with, copied in so that the node needs nothing else.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "crd", derive(JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AssignedModel {
    pub name: String,
    pub version: String,
    pub format: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub parameters: BTreeMap<String, Vec<f64>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact: Option<ModelArtifact>,
}

#[cfg(feature = "crd")]
fn free_form_object(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true
    })
}

/// Verbs on resources a rule may grant, in Kubernetes' words.
pub const VERBS: &[&str] = &["get", "list", "watch", "create", "update", "patch", "delete"];

/// Permissions within one namespace: what its bindings grant there.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "crd", derive(CustomResource, JsonSchema))]
#[cfg_attr(
    feature = "crd",
    kube(group = "edgeplane.io", version = "v1alpha1", kind = "Role", plural = "roles", derive = "PartialEq", namespaced)
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RoleSpec {
    pub rules: Vec<PolicyRule>,
}

/// Permissions in every namespace (through a ClusterRoleBinding) or one (through a
/// RoleBinding), and on cluster-wide resources. The built-in ones (`cluster-admin`,
/// `operator`, `viewer`, `node`) are always there and cannot be changed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "crd", derive(CustomResource, JsonSchema))]
#[cfg_attr(
    feature = "crd",
    kube(group = "edgeplane.io", version = "v1alpha1", kind = "ClusterRole", plural = "clusterroles", derive = "PartialEq")
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClusterRoleSpec {
    pub rules: Vec<PolicyRule>,
}

/// `verbs` on `resources` (plurals such as `workloads`, or `resource/subresource` such as
/// `edgenodes/certificate`; `*` for all), optionally only those named in `resourceNames`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "crd", derive(JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PolicyRule {
    #[cfg_attr(feature = "crd", schemars(length(min = 1), inner(regex(pattern = r"^(get|list|watch|create|update|patch|delete|\*)$"))))]
    pub verbs: Vec<String>,
    pub resources: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resource_names: Vec<String>,
}

/// Grants a role's rules to subjects, in the binding's namespace.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "crd", derive(CustomResource, JsonSchema))]
#[cfg_attr(
    feature = "crd",
    kube(group = "edgeplane.io", version = "v1alpha1", kind = "RoleBinding", plural = "rolebindings", derive = "PartialEq", namespaced)
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RoleBindingSpec {
    pub role_ref: RoleRef,
    pub subjects: Vec<RbacSubject>,
}

/// Grants a ClusterRole's rules to subjects, everywhere.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "crd", derive(CustomResource, JsonSchema))]
#[cfg_attr(
    feature = "crd",
    kube(group = "edgeplane.io", version = "v1alpha1", kind = "ClusterRoleBinding", plural = "clusterrolebindings", derive = "PartialEq")
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClusterRoleBindingSpec {
    pub role_ref: RoleRef,
    pub subjects: Vec<RbacSubject>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "crd", derive(JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RoleRef {
    pub kind: RoleKind,
    pub name: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "crd", derive(JsonSchema))]
pub enum RoleKind {
    Role,
    ClusterRole,
}

/// Who a binding grants to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "crd", derive(JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RbacSubject {
    pub kind: SubjectKind,
    pub name: String,
    /// The ServiceAccount's namespace (the binding's when left out).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "crd", derive(JsonSchema))]
pub enum SubjectKind {
    /// The common name of a client certificate.
    User,
    /// An organization of a client certificate, or a system group.
    Group,
    ServiceAccount,
}

/// A program's identity in a namespace; it authenticates with a bearer token
/// (`POST /v1/serviceaccounts/{ns}/{name}/token`), and bindings grant it roles.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "crd", derive(CustomResource, JsonSchema))]
#[cfg_attr(
    feature = "crd",
    kube(
        group = "edgeplane.io",
        version = "v1alpha1",
        kind = "ServiceAccount",
        plural = "serviceaccounts",
        derive = "PartialEq",
        namespaced
    )
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceAccountSpec {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
}

/// The HTTP endpoints the Workloads of one namespace may send results to (`sink.type: http`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "crd", derive(CustomResource, JsonSchema))]
#[cfg_attr(
    feature = "crd",
    kube(group = "edgeplane.io", version = "v1alpha1", kind = "SinkPolicy", plural = "sinkpolicies", derive = "PartialEq", namespaced)
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SinkPolicySpec {
    /// URL prefixes, e.g. `http://10.0.0.5:8080/ingest/`: a sink URL is allowed when it has the
    /// same scheme, host and port as one of them and its path starts with that one's path.
    pub http_allow: Vec<String>,
}

/// Who may sign the modules and models of a namespace, and whether they must be signed. Where
/// a policy requires signatures, the registry refuses an unsigned artifact or one signed by a
/// key no policy of the namespace trusts for it, and the scheduler stops placing an artifact
/// whose signer is no longer trusted. (Edges check signatures against their own trust roots,
/// `edge-runtime --trusted-signers`, whatever the orchestrators say.)
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "crd", derive(CustomResource, JsonSchema))]
#[cfg_attr(
    feature = "crd",
    kube(
        group = "edgeplane.io",
        version = "v1alpha1",
        kind = "TrustPolicy",
        plural = "trustpolicies",
        derive = "PartialEq",
        namespaced,
        printcolumn = r#"{"name":"Required","type":"boolean","jsonPath":".spec.requireSignatures"}"#
    )
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TrustPolicySpec {
    #[serde(default)]
    pub require_signatures: bool,
    pub keys: Vec<TrustedKey>,
}

/// A public key a TrustPolicy trusts, and for what.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "crd", derive(JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TrustedKey {
    pub name: String,
    /// `ed25519:` and the base64 of the 32-byte key, as `edgectl key create` prints it.
    pub public_key: String,
    /// What the key may sign; both kinds when left out.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub artifacts: Vec<ArtifactKind>,
}

/// The HTTP endpoints the Workloads of every namespace may send results to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "crd", derive(CustomResource, JsonSchema))]
#[cfg_attr(
    feature = "crd",
    kube(group = "edgeplane.io", version = "v1alpha1", kind = "ClusterSinkPolicy", plural = "clustersinkpolicies", derive = "PartialEq")
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClusterSinkPolicySpec {
    pub http_allow: Vec<String>,
}
