//! What edge runtimes and orchestrators say to each other outside the resource API:
//! heartbeats, and the per-instance reports heartbeats carry (enrollment and certificates
//! are in [`crate::auth`]).
//!
//! - `POST /v1/nodes/{name}/heartbeat`, authenticated by the node's certificate, with a
//!   [`Heartbeat`]. Heartbeats are kept in the leader's memory, not written through Raft.
//! - `POST /v1/nodes/{name}/heartbeat/stream`, by the node itself: the same heartbeats on one
//!   long-lived request, see [`heartbeat_stream_path`].
//! - `GET /v1/nodes/{name}/heartbeat`: the last heartbeat the leader received, as
//!   [`NodeLiveness`].

use serde::{Deserialize, Serialize};

use crate::resources::NodeLoad;

/// Path of a node's heartbeats.
pub fn heartbeat_path(node: &str) -> String {
    format!("/v1/nodes/{node}/heartbeat")
}

/// Path of a node's heartbeat stream: one request whose body is the node's heartbeats, one
/// [`Heartbeat`] of JSON per line (`application/x-ndjson`, chunked), sent as they are made.
/// The leader authenticates and authorizes the node once, when the stream opens, and checks
/// at every heartbeat that it still leads and that the node's certificate is still valid. It
/// answers `200` with a [`HeartbeatStreamEvent`] per line: after the first heartbeat and then
/// after every third at least (counts are cumulative), and a last one with `end` set when it
/// stops taking them. A refusal before the stream
/// opens (not the leader, not the node) is an ordinary error answer.
///
/// A heartbeat costs the leader a line's parse and a short write instead of a request's
/// routing, authentication and response.
pub fn heartbeat_stream_path(node: &str) -> String {
    format!("/v1/nodes/{node}/heartbeat/stream")
}

/// The media type of a heartbeat stream's lines, both ways.
pub const NDJSON: &str = "application/x-ndjson";

/// A line of the leader's answer on a heartbeat stream.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HeartbeatStreamEvent {
    /// Heartbeats taken on this stream so far.
    pub received: u64,
    /// Why the leader takes no more on this stream (it no longer leads, the node's certificate
    /// was revoked, a line was not a heartbeat); the last line. The node sends its next
    /// heartbeat as a request of its own, which is answered and redirected as usual.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end: Option<crate::Status>,
}

/// The label every Assignment carries with its node's name, so that a node can watch its own.
pub const NODE_LABEL: &str = "edgeplane.io/node";

/// A runtime's periodic report.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Heartbeat {
    pub load: NodeLoad,
    #[serde(default)]
    pub instances: Vec<InstanceReport>,
    #[serde(default)]
    pub data: DataReport,
}

/// The node's data plane: how much came in, how much went up, what waits and what was lost.
/// Counters run from the runtime's start, except the outbox's drops, which are kept on disk.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct DataReport {
    /// Readings accepted by ingest (HTTP and MQTT).
    pub readings_in: u64,
    /// Bytes of those readings as they arrived.
    pub bytes_in: u64,
    /// Bytes of upload bodies the orchestrators accepted.
    pub bytes_up: u64,
    /// Readings refused by ingest (backpressure, nothing to route to); the producer kept them.
    pub readings_refused: u64,
    /// Readings lost after acceptance, by cause (e.g. a workload that trapped on them, an
    /// unreachable HTTP sink); outbox drops are counted below.
    pub readings_dropped: u64,
    pub outbox_pending_records: u64,
    pub outbox_pending_bytes: u64,
    pub outbox_dropped_records: u64,
    /// Records the orchestrators fenced: produced by an Assignment generation that had been
    /// replaced (the work moved to another node while this one was away).
    pub records_fenced: u64,
    /// Batches queued for instances right now.
    pub queue_depth: u64,
}

/// One instance as its runtime sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InstanceReport {
    /// `namespace/name` of the Assignment it runs.
    pub assignment: String,
    /// The Assignment's generation it runs (fencing).
    pub generation: u64,
    pub module_digest: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_version: Option<String>,
    pub phase: InstancePhase,
    /// Restarts after failures since the instance was first started.
    pub restarts: u32,
    /// Why it is not running, or its last error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    pub batches_ok: u64,
    pub batches_failed: u64,
    /// Configurations applied to the running instance without a restart.
    pub reconfigurations: u64,
    pub memory_bytes: u64,
    /// Batches waiting for it.
    pub queue_depth: u64,
    /// Readings (and their bytes) handed to the instance, from ingest or another workload.
    #[serde(default)]
    pub readings_in: u64,
    #[serde(default)]
    pub bytes_in: u64,
    /// Bytes it sent to the cloud sink (before upload framing).
    #[serde(default)]
    pub bytes_up: u64,
    /// Readings lost because it failed on them (trap, deadline) or its output could not be
    /// delivered to a sink.
    #[serde(default)]
    pub readings_dropped: u64,
    /// How its module was made ready, and how long it took to start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started: Option<StartReport>,
}

/// How an instance's current start went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StartReport {
    pub module: ModuleSource,
    /// From the Assignment reaching the node to the instance running, in microseconds.
    pub micros: u64,
}

/// Where a node had an instance's module from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ModuleSource {
    /// Already loaded, for an earlier instance.
    Loaded,
    /// Compiled ahead of time by the orchestrators for the node's target, downloaded now.
    Precompiled,
    /// Compiled ahead of time by the orchestrators, from the node's disk cache.
    PrecompiledCached,
    /// Compiled on the node.
    Compiled,
}

/// The header the sha256 (hex) of a precompiled module is served with
/// (`GET /v1/blobs/{digest}/native`).
pub const ARTIFACT_SHA256_HEADER: &str = "x-edgeplane-artifact-sha256";

/// Where an instance is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum InstancePhase {
    /// Fetching or compiling its module.
    Pending,
    Running,
    /// Failed and waiting to be restarted.
    BackingOff,
    /// Failed more times in a row than its failure policy allows; still retried, slowly, and
    /// a candidate to be moved elsewhere.
    CrashLoop,
    /// Cannot run as specified (module invalid, configuration refused) until the
    /// Assignment changes.
    Failed,
}

/// The last heartbeat of a node, as the leader knows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeLiveness {
    pub name: String,
    /// Milliseconds since the leader received it.
    pub age_ms: u64,
    pub heartbeat: Heartbeat,
}

/// `GET /v1/heartbeats`: the figures of every node's last heartbeat, as the leader holds
/// them (the instance reports are left out: they are in the Assignments' status).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FleetHeartbeats {
    /// The member whose memory this is.
    pub leader_id: u64,
    /// By name.
    pub nodes: Vec<NodeFigures>,
}

/// One node's last heartbeat, without its instance reports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeFigures {
    pub name: String,
    /// Milliseconds since the leader received it.
    pub age_ms: u64,
    pub load: NodeLoad,
    pub data: DataReport,
}
