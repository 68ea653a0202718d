//! Prometheus metrics of the replication layer.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// Outcome label of a proposal.
pub type OutcomeLabels = Vec<(&'static str, &'static str)>;

/// Metrics of one node's Raft replica, its disk and its transport.
#[derive(Debug, Clone)]
pub struct RaftMetrics {
    pub term: Gauge,
    pub is_leader: Gauge,
    pub leader_changes: Counter,
    pub commit_index: Gauge,
    pub applied_index: Gauge,
    pub snapshot_index: Gauge,
    /// Proposals by outcome: committed, rejected (refused by a precondition), no_leader,
    /// overloaded, timeout.
    pub proposals: Family<OutcomeLabels, Counter>,
    pub reads: Family<OutcomeLabels, Counter>,
    pub fsync_seconds: Histogram,
    pub batch_entries: Histogram,
    pub snapshots_taken: Counter,
    pub snapshots_restored: Counter,
    pub messages_sent: Counter,
    /// Messages dropped because a peer's queue was full or its connection failed.
    pub messages_dropped: Counter,
    pub peer_connects: Counter,
    /// Inbound peer connections refused: a failed handshake (no certificate, another CA, not a
    /// member), a member claiming another's id, or what is not the protocol.
    pub peer_connections_refused: Counter,
}

impl RaftMetrics {
    pub fn new(registry: &mut Registry) -> Self {
        let m = RaftMetrics {
            term: Gauge::default(),
            is_leader: Gauge::default(),
            leader_changes: Counter::default(),
            commit_index: Gauge::default(),
            applied_index: Gauge::default(),
            snapshot_index: Gauge::default(),
            proposals: Family::default(),
            reads: Family::default(),
            // 50 us .. ~1.6 s
            fsync_seconds: Histogram::new(exponential_buckets(0.000_05, 2.0, 16)),
            batch_entries: Histogram::new(exponential_buckets(1.0, 2.0, 14)),
            snapshots_taken: Counter::default(),
            snapshots_restored: Counter::default(),
            messages_sent: Counter::default(),
            messages_dropped: Counter::default(),
            peer_connects: Counter::default(),
            peer_connections_refused: Counter::default(),
        };
        let r = registry.sub_registry_with_prefix("edgeplane_raft");
        r.register("term", "Current Raft term", m.term.clone());
        r.register("is_leader", "1 while this node is the leader", m.is_leader.clone());
        r.register("leader_changes", "Times the known leader changed", m.leader_changes.clone());
        r.register("commit_index", "Highest log index known committed", m.commit_index.clone());
        r.register("applied_index", "Highest log index applied to the state machine", m.applied_index.clone());
        r.register("snapshot_index", "Log index of the newest snapshot", m.snapshot_index.clone());
        r.register("proposals", "Proposals accepted on this node, by outcome", m.proposals.clone());
        r.register("reads", "Reads served on this node, by consistency and outcome", m.reads.clone());
        r.register("fsync_seconds", "Time to persist one Ready (one fsync)", m.fsync_seconds.clone());
        r.register("batch_entries", "Log entries persisted per Ready", m.batch_entries.clone());
        r.register("snapshots_taken", "Snapshots of the state machine taken", m.snapshots_taken.clone());
        r.register("snapshots_restored", "Snapshots received from a leader and restored", m.snapshots_restored.clone());
        r.register("messages_sent", "Raft messages written to peer connections", m.messages_sent.clone());
        r.register("messages_dropped", "Raft messages dropped (queue full or connection lost)", m.messages_dropped.clone());
        r.register("peer_connects", "Outbound peer connections established", m.peer_connects.clone());
        r.register(
            "peer_connections_refused",
            "Inbound peer connections refused (handshake, identity or protocol)",
            m.peer_connections_refused.clone(),
        );
        m
    }
}
