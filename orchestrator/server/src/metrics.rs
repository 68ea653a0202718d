//! The orchestrator's own metrics beyond Raft's (see `edgeplane_raft::metrics`): the cloud
//! sink's, the API door's, and the leader's scheduler and health checks.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use edgeplane_core::health::Health;
use edgeplane_core::placement::PlacementReason;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// The cloud sink's metrics. Counters count the uploads this orchestrator answered (summed
/// over orchestrators, they are the cluster's); gauges are this replica's view of what is
/// stored.
#[derive(Debug, Clone)]
pub struct SinkMetrics {
    pub accepted: Counter,
    pub duplicates: Counter,
    pub stale: Counter,
    pub refused: Counter,
    pub evicted: Counter,
    pub stored_records: Gauge,
    pub stored_readings: Gauge,
}

impl SinkMetrics {
    pub fn new(registry: &mut Registry) -> Self {
        let m = SinkMetrics {
            accepted: Counter::default(),
            duplicates: Counter::default(),
            stale: Counter::default(),
            refused: Counter::default(),
            evicted: Counter::default(),
            stored_records: Gauge::default(),
            stored_readings: Gauge::default(),
        };
        let r = registry.sub_registry_with_prefix("edgeplane_sink");
        r.register("records_accepted", "Uploaded records stored, on uploads answered here", m.accepted.clone());
        r.register("records_duplicate", "Uploaded records refused as already stored, on uploads answered here", m.duplicates.clone());
        r.register(
            "records_stale",
            "Uploaded records fenced: produced by an older generation of their Assignment, or an earlier incarnation of their node",
            m.stale.clone(),
        );
        r.register(
            "records_refused",
            "Uploaded records refused: their node has as many streams as the sink keeps per node",
            m.refused.clone(),
        );
        r.register("records_evicted", "Records evicted by retention, on uploads answered here", m.evicted.clone());
        r.register("stored_records", "Records the sink holds", m.stored_records.clone());
        r.register("stored_readings", "Readings the sink holds (an opaque record counts as one)", m.stored_readings.clone());
        m
    }
}

/// The API server's refusals at the door, read at scrape time.
#[derive(Debug)]
struct ServeMetrics(std::sync::Arc<edgeplane_tls::serve::ServeCounters>);

impl prometheus_client::collector::Collector for ServeMetrics {
    fn encode(&self, mut encoder: prometheus_client::encoding::DescriptorEncoder) -> Result<(), std::fmt::Error> {
        use prometheus_client::encoding::EncodeMetric as _;
        use std::sync::atomic::Ordering;
        let counters = [
            (
                "edgeplane_api_connections_refused",
                "API connections closed at once: over the limit in all or for their client address",
                self.0.connections_refused.load(Ordering::Relaxed),
            ),
            (
                "edgeplane_api_tls_handshakes_failed",
                "API TLS handshakes that failed or timed out (a certificate the cluster CA did not issue, an expired one, not TLS)",
                self.0.handshakes_failed.load(Ordering::Relaxed),
            ),
        ];
        for (name, help, value) in counters {
            let counter = prometheus_client::metrics::counter::ConstCounter::new(value);
            counter.encode(encoder.encode_descriptor(name, help, None, counter.metric_type())?)?;
        }
        Ok(())
    }
}

/// Registers the API server's counters.
pub fn register_serve_counters(registry: &mut Registry, counters: &std::sync::Arc<edgeplane_tls::serve::ServeCounters>) {
    registry.register_collector(Box::new(ServeMetrics(counters.clone())));
}

/// The leader's scheduler and health checks. The series of nodes and pending replicas come
/// from the leader only: a follower's view would be stale, so it exports none of them, and
/// alerts aggregate over the members (`max by (node)`).
#[derive(Debug, Clone)]
pub struct SchedulerMetrics {
    /// Time to plan once (the pure planner, on a blocking thread).
    pub plan_seconds: Histogram,
    placements: Family<ReasonLabel, Counter>,
    /// Heartbeats taken as requests of their own, and as lines of a node's stream.
    pub heartbeats_via_request: Counter,
    pub heartbeats_via_stream: Counter,
    view: Arc<Mutex<Option<LeaderView>>>,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ViaLabel {
    via: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: String,
}

/// What the leader saw on its last placement turn, read at scrape time.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LeaderView {
    /// Each registered node's health and milliseconds since its last heartbeat (or since
    /// this leader took over, if later).
    pub nodes: BTreeMap<String, (Health, u64)>,
    /// Replicas the last plan could not place, over all Workloads.
    pub pending_replicas: u64,
    /// Workloads with such replicas.
    pub unplaced_workloads: u64,
}

impl SchedulerMetrics {
    pub fn new(registry: &mut Registry) -> Self {
        // 0.5 ms to ~8 s: a plan of thousands of Workloads takes tens of milliseconds.
        let heartbeats = Family::<ViaLabel, Counter>::default();
        // One at a time: the family's lock is held while its guard lives.
        let heartbeats_via_request = heartbeats.get_or_create(&ViaLabel { via: "request" }).clone();
        let heartbeats_via_stream = heartbeats.get_or_create(&ViaLabel { via: "stream" }).clone();
        let m = SchedulerMetrics {
            plan_seconds: Histogram::new(exponential_buckets(0.0005, 2.0, 15)),
            placements: Family::default(),
            heartbeats_via_request,
            heartbeats_via_stream,
            view: Arc::default(),
        };
        registry.register(
            "edgeplane_heartbeats",
            "Heartbeats this member took as the leader, by how they came: request or stream",
            heartbeats,
        );
        // Every reason exists from the start, so that `increase()` sees the first placement.
        for reason in PlacementReason::ALL {
            let _created = m.placements.get_or_create(&ReasonLabel { reason: reason.as_str().to_owned() });
        }
        let r = registry.sub_registry_with_prefix("edgeplane_scheduler");
        r.register("plan_seconds", "Time to plan placements once, on the leader", m.plan_seconds.clone());
        r.register(
            "placements",
            "Replicas placed by applied plans, by reason: new_replica, failover (node down or crash loop) or rebalance",
            m.placements.clone(),
        );
        registry.register_collector(Box::new(LeaderCollector(Arc::clone(&m.view))));
        m
    }

    /// Counts the placements of a plan that was applied.
    pub fn placed(&self, placements: &BTreeMap<PlacementReason, u32>) {
        for (reason, &count) in placements {
            self.placements.get_or_create(&ReasonLabel { reason: reason.as_str().to_owned() }).inc_by(u64::from(count));
        }
    }

    /// What the leader sees now; `None` when this member stops leading.
    pub fn observe(&self, view: Option<LeaderView>) {
        *self.view.lock().unwrap_or_else(|p| p.into_inner()) = view;
    }
}

/// The node and pending-replica series, from the leader's last view.
#[derive(Debug)]
struct LeaderCollector(Arc<Mutex<Option<LeaderView>>>);

impl prometheus_client::collector::Collector for LeaderCollector {
    fn encode(&self, mut encoder: prometheus_client::encoding::DescriptorEncoder) -> Result<(), std::fmt::Error> {
        use prometheus_client::encoding::EncodeMetric as _;
        use prometheus_client::metrics::gauge::ConstGauge;
        use prometheus_client::metrics::MetricType;
        // A copy, so that the lock is not held while encoding.
        let Some(view) = self.0.lock().unwrap_or_else(|p| p.into_inner()).clone() else { return Ok(()) };
        for (name, help, value) in [
            ("edgeplane_scheduler_pending_replicas", "Replicas the last plan could not place", view.pending_replicas),
            ("edgeplane_scheduler_unplaced_workloads", "Workloads with replicas the last plan could not place", view.unplaced_workloads),
        ] {
            let gauge = ConstGauge::new(value as i64);
            gauge.encode(encoder.encode_descriptor(name, help, None, MetricType::Gauge)?)?;
        }
        const STATES: [(Health, &str); 3] = [(Health::Ready, "ready"), (Health::Suspect, "suspect"), (Health::Down, "down")];
        let mut nodes = encoder.encode_descriptor("edgeplane_nodes", "Registered edge nodes, by health", None, MetricType::Gauge)?;
        for (health, state) in STATES {
            let count = view.nodes.values().filter(|(h, _)| *h == health).count();
            ConstGauge::new(count as i64).encode(nodes.encode_family(&[("state", state)])?)?;
        }
        let mut by_node = encoder.encode_descriptor(
            "edgeplane_node_health",
            "1 for the health the leader judges an edge node to be in (ready, suspect, down), 0 for the others",
            None,
            MetricType::Gauge,
        )?;
        for (node, (health, _)) in &view.nodes {
            for (each, state) in STATES {
                ConstGauge::new(i64::from(*health == each)).encode(by_node.encode_family(&[("node", node.as_str()), ("state", state)])?)?;
            }
        }
        let mut age = encoder.encode_descriptor(
            "edgeplane_node_heartbeat_age_seconds",
            "Time since the leader last heard an edge node's heartbeat (or took over, if later)",
            None,
            MetricType::Gauge,
        )?;
        for (node, (_, silent_ms)) in &view.nodes {
            ConstGauge::new(*silent_ms as f64 / 1000.0).encode(age.encode_family(&[("node", node.as_str())])?)?;
        }
        Ok(())
    }
}
