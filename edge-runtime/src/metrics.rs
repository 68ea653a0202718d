//! The edge runtime's Prometheus metrics, kept with prometheus-client like the
//! orchestrator's: counters the data plane increments as it works, and figures read at scrape
//! time from the outbox and the in-flight budget ([`Scraped`]).

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex, RwLock};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use tokio::sync::Semaphore;

use edgeplane_api::node::InstancePhase;

use crate::dataplane::Table;
use crate::outbox::Outbox;
use crate::pool::InstanceStatus;

/// Counters of the whole node.
#[derive(Debug, Clone, Default)]
pub struct NodeCounters {
    pub requests: Counter,
    pub readings_in: Counter,
    pub bytes_in: Counter,
    pub bytes_up: Counter,
    /// Refused with 429 or 503: the producer kept them.
    pub readings_refused: Counter,
    /// Refused with 413: a batch larger than the node ever holds at once.
    pub readings_too_large: Counter,
    pub readings_dropped: Counter,
    pub chain_loops: Counter,
    /// Chained batches dropped because the node's in-flight budget was used up.
    pub chain_overflow: Counter,
    pub records_fenced: Counter,
    /// Records the cloud refused for good (invalid, or past its stream limit) and set aside.
    pub records_rejected: Counter,
    pub mqtt_messages: Counter,
    /// MQTT messages that were not readings in any accepted form: acknowledged and dropped.
    pub mqtt_malformed: Counter,
}

/// Counters of one instance (shared with its route, kept across restarts by assignment).
#[derive(Debug, Clone, Default)]
pub struct WorkloadCounters {
    pub readings_in: Counter,
    pub bytes_in: Counter,
    pub records_up: Counter,
    pub bytes_up: Counter,
    pub bytes_out: Counter,
    pub readings_dropped: Counter,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Assignment {
    assignment: String,
}

/// The per-instance series, labelled by assignment.
#[derive(Debug, Default)]
struct Families {
    readings_in: Family<Assignment, Counter>,
    bytes_in: Family<Assignment, Counter>,
    records_up: Family<Assignment, Counter>,
    bytes_up: Family<Assignment, Counter>,
    bytes_out: Family<Assignment, Counter>,
    readings_dropped: Family<Assignment, Counter>,
}

impl Families {
    fn register(&self, registry: &mut Registry) {
        for (name, help, family) in [
            ("workload_readings_in", "Readings handed to the workload", &self.readings_in),
            ("workload_bytes_in", "Bytes handed to the workload", &self.bytes_in),
            ("workload_records_up", "Records the workload sent to the cloud sink", &self.records_up),
            ("workload_bytes_up", "Bytes the workload sent to the cloud sink", &self.bytes_up),
            ("workload_bytes_out", "Bytes the workload sent to mqtt, http and log sinks", &self.bytes_out),
            ("workload_dropped_readings", "Readings lost in or after the workload", &self.readings_dropped),
        ] {
            registry.register(name, help, family.clone());
        }
    }

    /// The instance's counters: the same series the families expose.
    fn counters(&self, label: &Assignment) -> WorkloadCounters {
        WorkloadCounters {
            readings_in: self.readings_in.get_or_create(label).clone(),
            bytes_in: self.bytes_in.get_or_create(label).clone(),
            records_up: self.records_up.get_or_create(label).clone(),
            bytes_up: self.bytes_up.get_or_create(label).clone(),
            bytes_out: self.bytes_out.get_or_create(label).clone(),
            readings_dropped: self.readings_dropped.get_or_create(label).clone(),
        }
    }
}

/// Every metric of the edge runtime.
#[derive(Debug)]
pub struct EdgeMetrics {
    registry: Registry,
    pub node: NodeCounters,
    /// Time from sending an upload to the orchestrators' answer, whatever it was.
    pub upload_seconds: Histogram,
    families: Families,
    /// Each instance's counters by assignment, for `/v1/stats` and heartbeats.
    workloads: Mutex<BTreeMap<String, WorkloadCounters>>,
}

impl EdgeMetrics {
    pub fn new(scraped: Scraped) -> EdgeMetrics {
        let mut registry = Registry::with_prefix("edgeplane");
        let node = NodeCounters::default();
        for (name, help, metric) in [
            ("ingest_requests", "Batches accepted by ingest", &node.requests),
            ("ingest_readings", "Readings accepted by ingest", &node.readings_in),
            ("ingest_bytes", "Bytes of accepted readings as they arrived", &node.bytes_in),
            ("ingest_refused_readings", "Readings refused by ingest with 429 or 503; the producer kept them", &node.readings_refused),
            (
                "ingest_too_large_readings",
                "Readings in batches refused with 413: larger than the node ever holds at once",
                &node.readings_too_large,
            ),
            (
                "dropped_readings",
                "Readings lost after acceptance (workload failures, sink errors, topic loops, chain overflow)",
                &node.readings_dropped,
            ),
            ("chain_loops", "Batches dropped after passing through too many workloads (topics form a loop)", &node.chain_loops),
            ("chain_overflow_batches", "Chained batches dropped because the node's in-flight budget was used up", &node.chain_overflow),
            ("upstream_bytes", "Bytes of upload bodies the orchestrators accepted", &node.bytes_up),
            ("fenced_records", "Uploaded records the orchestrators fenced (an older assignment generation)", &node.records_fenced),
            ("rejected_records", "Records the orchestrators refused for good and the outbox set aside", &node.records_rejected),
            ("mqtt_messages", "MQTT messages received", &node.mqtt_messages),
            (
                "mqtt_malformed_messages",
                "MQTT messages that were not readings in an accepted form (acknowledged and dropped)",
                &node.mqtt_malformed,
            ),
        ] {
            registry.register(name, help, metric.clone());
        }
        let families = Families::default();
        families.register(&mut registry);
        // 1 ms to ~16 s: an upload of 512 records to a loaded orchestrator over a slow link.
        let upload_seconds = Histogram::new(exponential_buckets(0.001, 2.0, 15));
        registry.register(
            "upload_seconds",
            "Time from sending an upload of outbox records to the orchestrators' answer",
            upload_seconds.clone(),
        );
        registry.register_collector(Box::new(scraped));
        EdgeMetrics { registry, node, upload_seconds, families, workloads: Mutex::default() }
    }

    /// One instance's counters, created on first use.
    pub fn workload(&self, assignment: &str) -> WorkloadCounters {
        let mut workloads = self.workloads.lock().unwrap_or_else(|p| p.into_inner());
        workloads
            .entry(assignment.to_owned())
            .or_insert_with(|| self.families.counters(&Assignment { assignment: assignment.to_owned() }))
            .clone()
    }

    /// Every instance's counters, by assignment.
    pub fn workloads(&self) -> BTreeMap<String, WorkloadCounters> {
        self.workloads.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The Prometheus text exposition (OpenMetrics).
    pub fn encode(&self) -> Result<String, fmt::Error> {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)?;
        Ok(text)
    }
}

/// Figures read when scraped: the outbox's, the in-flight budget's and each running
/// instance's (from its pool status, through the data plane's routes).
#[derive(Debug)]
pub struct Scraped {
    pub outbox: Arc<Outbox>,
    pub inflight: Arc<Semaphore>,
    pub max_inflight: u64,
    pub routes: Arc<RwLock<Arc<Table>>>,
}

impl Scraped {
    /// Per-instance series, labelled by assignment (`namespace/name`): as many as the node
    /// runs instances, which its capacity bounds.
    fn encode_instances(&self, encoder: &mut DescriptorEncoder) -> Result<(), fmt::Error> {
        let routes = self.routes.read().unwrap_or_else(|p| p.into_inner()).clone();
        let instances: BTreeMap<&str, InstanceStatus> =
            routes.values().flatten().map(|route| (route.key.as_str(), route.handle.status())).collect();
        let queued: u64 = instances.values().map(|s| s.queue_depth).sum();
        let pool = ConstGauge::new(queued as i64);
        pool.encode(encoder.encode_descriptor(
            "pool_queued_batches",
            "Batches waiting for an instance, over all instances",
            None,
            MetricType::Gauge,
        )?)?;
        let mut batches = encoder.encode_descriptor(
            "instance_batches",
            "Batches an instance processed, by outcome (ok, failed: trap, deadline, refused output)",
            None,
            MetricType::Counter,
        )?;
        for (assignment, s) in &instances {
            for (outcome, count) in [("ok", s.batches_ok), ("failed", s.batches_failed)] {
                ConstCounter::new(count).encode(batches.encode_family(&[("assignment", *assignment), ("outcome", outcome)])?)?;
            }
        }
        let mut restarts =
            encoder.encode_descriptor("instance_restarts", "Restarts of an instance after failures", None, MetricType::Counter)?;
        for (assignment, s) in &instances {
            ConstCounter::new(u64::from(s.restarts)).encode(restarts.encode_family(&[("assignment", *assignment)])?)?;
        }
        let mut guest = encoder.encode_descriptor(
            "instance_guest_seconds",
            "Time an instance spent in the guest processing batches",
            None,
            MetricType::Counter,
        )?;
        for (assignment, s) in &instances {
            ConstCounter::new(s.guest_nanos as f64 / 1e9).encode(guest.encode_family(&[("assignment", *assignment)])?)?;
        }
        for (name, help, read) in [
            ("instance_memory_bytes", "An instance's linear memory", (|s: &InstanceStatus| s.memory_bytes) as fn(&InstanceStatus) -> u64),
            ("instance_queued_batches", "Batches waiting for an instance", |s: &InstanceStatus| s.queue_depth),
        ] {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for (assignment, s) in &instances {
                ConstGauge::new(read(s) as i64).encode(family.encode_family(&[("assignment", *assignment)])?)?;
            }
        }
        let mut phase = encoder.encode_descriptor(
            "instance_phase",
            "1 for an instance's phase (Pending, Running, BackingOff, CrashLoop, Failed), 0 for the others",
            None,
            MetricType::Gauge,
        )?;
        for (assignment, s) in &instances {
            for each in
                [InstancePhase::Pending, InstancePhase::Running, InstancePhase::BackingOff, InstancePhase::CrashLoop, InstancePhase::Failed]
            {
                let name = format!("{each:?}");
                ConstGauge::new(i64::from(s.phase == each))
                    .encode(phase.encode_family(&[("assignment", *assignment), ("phase", name.as_str())])?)?;
            }
        }
        Ok(())
    }
}

impl Collector for Scraped {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        let stats = self.outbox.stats();
        let now_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        let oldest_age = stats.oldest_pending_ms.map_or(0.0, |at| now_ms.saturating_sub(at) as f64 / 1000.0);
        let gauges: [(&str, &str, f64); 7] = [
            (
                "inflight_readings",
                "Readings inside the node's workloads now",
                (self.max_inflight - self.inflight.available_permits() as u64) as f64,
            ),
            ("outbox_pending_records", "Records waiting for the cloud", stats.pending_records as f64),
            ("outbox_pending_readings", "Readings waiting for the cloud", stats.pending_readings as f64),
            ("outbox_pending_bytes", "Bytes on disk waiting for the cloud", stats.pending_bytes as f64),
            ("outbox_max_bytes", "The outbox's bound", stats.max_bytes as f64),
            ("outbox_oldest_pending_age_seconds", "How long the oldest record waiting for the cloud has waited (0 when none)", oldest_age),
            ("outbox_corrupt_records", "Records lost to damage on disk (over the node's life)", stats.corrupt_records as f64),
        ];
        for (name, help, value) in gauges {
            let gauge = ConstGauge::new(value);
            gauge.encode(encoder.encode_descriptor(name, help, None, gauge.metric_type())?)?;
        }
        let counters: [(&str, &str, u64); 8] = [
            (
                "storage_refused_files",
                "Files of the data directory refused since the start: changed, cut, sealed with another key, or plain where sealed ones belong",
                crate::agent::refused_files(),
            ),
            ("outbox_appended_records", "Records appended to the outbox", stats.appended_records),
            ("outbox_delivered_records", "Records the orchestrators acknowledged", stats.delivered_records),
            ("outbox_delivered_readings", "Readings the orchestrators acknowledged", stats.delivered_readings),
            ("outbox_dropped_records", "Records dropped by the drop-oldest policy (over the node's life)", stats.dropped_records),
            ("outbox_dropped_readings", "Readings dropped by the drop-oldest policy (over the node's life)", stats.dropped_readings),
            (
                "outbox_rejected_records",
                "Records the orchestrators refused as invalid, set aside (over the node's life)",
                stats.rejected_records,
            ),
            ("outbox_rejected_readings", "Readings in records set aside (over the node's life)", stats.rejected_readings),
        ];
        for (name, help, value) in counters {
            let counter = ConstCounter::new(value);
            counter.encode(encoder.encode_descriptor(name, help, None, counter.metric_type())?)?;
        }
        self.encode_instances(&mut encoder)
    }
}
