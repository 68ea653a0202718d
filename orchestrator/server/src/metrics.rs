//! The orchestrator's own metrics beyond Raft's (see `edgeplane_raft::metrics`).

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
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
