//! The data plane: readings in (HTTP, MQTT), through the node's workloads, out to topics and
//! sinks.
//!
//! A batch ingested on a topic goes to every running instance whose Assignment lists the
//! topic as an input. Each output of an instance goes where its Assignment says: another
//! topic (so workloads chain on one node: filter -> detector -> aggregator), or a sink:
//! `cloud` (the durable [`Outbox`]), `mqtt`, `http` or `log`. An ingest request is answered
//! only when its batch has been through the whole chain and its cloud outputs are on disk:
//! "accepted" means durable, so a crash after the answer loses nothing, and a crash before
//! it leaves the producer holding the data.
//!
//! Backpressure, never silent loss: at most `max_inflight_readings` readings are inside the
//! chain at once and every instance has a bounded queue (waited on, not overrun). Ingest
//! beyond that is refused (429); ingest that cannot be processed now (a workload restarting,
//! no workload on the topic, the outbox full under reject-new) is refused with 503. Readings
//! lost after acceptance (a workload that trapped on them, a sink that failed) are counted per
//! workload.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use base64::Engine as _;
use edgeplane_api::data::{validate_batch, Reading};
use edgeplane_api::node::{DataReport, InstancePhase};
use edgeplane_api::resources::{AssignmentSpec, SinkType};
use tokio::sync::{Notify, Semaphore};

use crate::outbox::{DataKind, OutRecord, Outbox};
use crate::pool::{InstanceHandle, ProcessError, Processed};

/// Outputs routed to topics may feed other workloads this many times over before the batch is
/// dropped (and counted): a safety net against topic loops.
pub const MAX_CHAIN_DEPTH: usize = 8;

/// One running instance, as the data plane sees it.
#[derive(Debug)]
pub struct Route {
    /// `namespace/assignment`.
    pub key: String,
    pub namespace: String,
    pub workload: String,
    pub assignment: String,
    pub generation: u64,
    pub inputs: Vec<String>,
    /// Destinations, in the order of the instance's outputs (the output index `emit` uses).
    pub outputs: Vec<(String, Destination)>,
    pub handle: Arc<InstanceHandle>,
    /// Room in the instance's queue: waited on, so the queue is never overrun.
    pub slots: Arc<Semaphore>,
    /// The instance's counters, held here so that a batch does not look them up.
    pub counters: Arc<WorkloadCounters>,
}

impl Route {
    pub fn new(key: &str, spec: &AssignmentSpec, handle: Arc<InstanceHandle>, slots: Arc<Semaphore>, counters: Arc<WorkloadCounters>) -> Route {
        let (namespace, assignment) = key.split_once('/').unwrap_or(("", key));
        let outputs = spec.outputs.iter().map(|o| (o.name.clone(), Destination::of(o))).collect();
        Route {
            key: key.to_owned(),
            namespace: namespace.to_owned(),
            workload: spec.workload.clone(),
            assignment: assignment.to_owned(),
            generation: spec.generation,
            inputs: spec.inputs.clone(),
            outputs,
            handle,
            slots,
            counters,
        }
    }
}

/// Where one output goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    Topic(String),
    Cloud,
    Mqtt(String),
    Http(String),
    Log,
    /// Neither a topic nor a sink (validation prevents this; kept total).
    Nowhere,
}

impl Destination {
    fn of(output: &edgeplane_api::resources::Output) -> Destination {
        match (&output.topic, &output.sink) {
            (Some(topic), _) => Destination::Topic(topic.clone()),
            (None, Some(sink)) => match sink.type_ {
                SinkType::Cloud => Destination::Cloud,
                SinkType::Log => Destination::Log,
                SinkType::Mqtt => sink.topic.clone().map_or(Destination::Nowhere, Destination::Mqtt),
                SinkType::Http => sink.url.clone().map_or(Destination::Nowhere, Destination::Http),
            },
            (None, None) => Destination::Nowhere,
        }
    }
}

/// Why ingest refused a batch. The producer still has it: nothing was processed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("too many readings in flight on this node ({0} would exceed {1}); retry later")]
    Busy(u64, u64),
    #[error("a batch of {0} readings is larger than this node ever holds at once ({1})")]
    TooLarge(u64, u64),
    #[error("no workload on this node reads topic {0:?}")]
    NoSubscriber(String),
    #[error("workload {0} cannot take data now: {1}")]
    NotReady(String, String),
    #[error("the outbox is full ({0} bytes waiting for the cloud) and its policy is reject-new")]
    OutboxFull(u64),
    #[error("{0}")]
    Internal(String),
}

/// Counters of one instance (kept across route rebuilds, by assignment key).
#[derive(Debug, Default)]
pub struct WorkloadCounters {
    pub readings_in: AtomicU64,
    pub bytes_in: AtomicU64,
    pub records_up: AtomicU64,
    pub bytes_up: AtomicU64,
    pub bytes_out: AtomicU64,
    pub readings_dropped: AtomicU64,
}

/// Node-wide counters.
#[derive(Debug, Default)]
struct NodeCounters {
    requests: AtomicU64,
    readings_in: AtomicU64,
    bytes_in: AtomicU64,
    bytes_up: AtomicU64,
    readings_refused: AtomicU64,
    readings_dropped: AtomicU64,
    chain_loops: AtomicU64,
    records_fenced: AtomicU64,
}

/// Where outputs to `mqtt` sinks are published (set when the node has a broker).
pub type MqttPublisher = rumqttc::AsyncClient;

#[derive(Debug)]
pub struct DataPlane {
    routes: RwLock<Arc<BTreeMap<String, Vec<Arc<Route>>>>>,
    outbox: Arc<Outbox>,
    inflight: Arc<Semaphore>,
    max_inflight: u64,
    workloads: Mutex<BTreeMap<String, Arc<WorkloadCounters>>>,
    node: NodeCounters,
    mqtt: RwLock<Option<MqttPublisher>>,
    http: reqwest::Client,
    /// Woken after every append, so the uploader sends without polling.
    pub appended: Notify,
}

impl DataPlane {
    pub fn new(outbox: Arc<Outbox>, max_inflight_readings: u64) -> DataPlane {
        // A semaphore holds at most usize::MAX >> 3 permits.
        let max_inflight = max_inflight_readings.min(1 << 40);
        DataPlane {
            routes: RwLock::new(Arc::new(BTreeMap::new())),
            outbox,
            inflight: Arc::new(Semaphore::new(max_inflight as usize)),
            max_inflight,
            workloads: Mutex::new(BTreeMap::new()),
            node: NodeCounters::default(),
            mqtt: RwLock::new(None),
            http: reqwest::Client::builder().timeout(Duration::from_secs(5)).build().unwrap_or_default(),
            appended: Notify::new(),
        }
    }

    pub fn outbox(&self) -> &Arc<Outbox> {
        &self.outbox
    }

    pub fn set_mqtt(&self, publisher: MqttPublisher) {
        *self.mqtt.write().unwrap_or_else(|p| p.into_inner()) = Some(publisher);
    }

    /// Replaces the routing table with the instances running now.
    pub fn set_routes(&self, routes: Vec<Route>) {
        let mut by_topic: BTreeMap<String, Vec<Arc<Route>>> = BTreeMap::new();
        for route in routes.into_iter().map(Arc::new) {
            for topic in &route.inputs {
                by_topic.entry(topic.clone()).or_default().push(route.clone());
            }
        }
        *self.routes.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(by_topic);
    }

    /// The topics some instance reads: what the node subscribes to on its MQTT broker.
    pub fn input_topics(&self) -> Vec<String> {
        self.routes().keys().cloned().collect()
    }

    fn routes(&self) -> Arc<BTreeMap<String, Vec<Arc<Route>>>> {
        self.routes.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// One instance's counters (by assignment key), created on first use.
    pub fn counters(&self, key: &str) -> Arc<WorkloadCounters> {
        self.workloads.lock().unwrap_or_else(|p| p.into_inner()).entry(key.to_owned()).or_default().clone()
    }

    /// Takes a batch (v1 format, already validated, `readings` long) into the node. Returns
    /// once its cloud outputs are on disk; refused without side effects otherwise.
    pub async fn ingest(&self, topic: &str, batch: Vec<u8>, readings: u64, wire_bytes: usize) -> Result<(), Refused> {
        let refused = |e: Refused| {
            self.node.readings_refused.fetch_add(readings, Ordering::Relaxed);
            e
        };
        let routes = self.routes();
        let subscribers = routes.get(topic).filter(|s| !s.is_empty()).ok_or_else(|| refused(Refused::NoSubscriber(topic.to_owned())))?;
        for route in subscribers {
            let status = route.handle.status();
            if status.phase != InstancePhase::Running {
                let why = status.message.unwrap_or_else(|| format!("{:?}", status.phase));
                return Err(refused(Refused::NotReady(route.key.clone(), why)));
            }
        }
        if self.outbox.refuses_new() {
            return Err(refused(Refused::OutboxFull(self.outbox.stats().pending_bytes)));
        }
        if readings > self.max_inflight {
            return Err(refused(Refused::TooLarge(readings, self.max_inflight)));
        }
        // Empty batches take no permit but still go through (workloads may emit on them).
        let _permit = match self.inflight.clone().try_acquire_many_owned(readings as u32) {
            Ok(permit) => permit,
            Err(_) => return Err(refused(Refused::Busy(readings, self.max_inflight))),
        };
        self.node.requests.fetch_add(1, Ordering::Relaxed);
        self.node.readings_in.fetch_add(readings, Ordering::Relaxed);
        self.node.bytes_in.fetch_add(wire_bytes as u64, Ordering::Relaxed);
        let records = self.run_chain(&routes, topic, batch).await;
        if let Err(e) = self.outbox.append(records).await {
            // The disk failed under us: the producer gets an error and keeps the data.
            tracing::error!("{e:#}");
            return Err(Refused::Internal(format!("{e:#}")));
        }
        self.appended.notify_one();
        Ok(())
    }

    /// Runs a batch through every instance on its topic and, breadth first, through the
    /// instances on the topics they emit to. Returns the records for the cloud sink.
    async fn run_chain(&self, routes: &BTreeMap<String, Vec<Arc<Route>>>, topic: &str, batch: Vec<u8>) -> Vec<OutRecord> {
        let mut work = vec![(topic.to_owned(), Arc::new(batch), 0usize)];
        let mut records = Vec::new();
        while let Some((topic, batch, depth)) = work.pop() {
            let Some(subscribers) = routes.get(&topic) else { continue };
            let count = batch_count(&batch);
            if depth > MAX_CHAIN_DEPTH {
                tracing::warn!(%topic, "dropping a batch that went through {MAX_CHAIN_DEPTH} workloads: the topics form a loop");
                self.node.chain_loops.fetch_add(1, Ordering::Relaxed);
                self.node.readings_dropped.fetch_add(count, Ordering::Relaxed);
                continue;
            }
            let results = futures::future::join_all(subscribers.iter().map(|route| self.process(route, batch.clone(), count))).await;
            // Depth first in emission order keeps each stream's order within one request.
            let mut next = Vec::new();
            for (route, processed) in subscribers.iter().zip(results) {
                let Some(Processed { emitted, model_version }) = processed else { continue };
                for (output, data) in emitted {
                    let Some((name, destination)) = route.outputs.get(output) else { continue };
                    match destination {
                        Destination::Topic(t) => next.push((t.clone(), Arc::new(data), depth + 1)),
                        other => self.sink(route, name, model_version.as_deref(), other, data, &mut records).await,
                    }
                }
            }
            work.extend(next.into_iter().rev());
        }
        records
    }

    /// One batch through one instance; a failure costs that instance's readings, counted.
    async fn process(&self, route: &Route, batch: Arc<Vec<u8>>, count: u64) -> Option<Processed> {
        let counters = &route.counters;
        counters.readings_in.fetch_add(count, Ordering::Relaxed);
        counters.bytes_in.fetch_add(batch.len() as u64, Ordering::Relaxed);
        let result = match route.slots.acquire().await {
            Ok(_slot) => route.handle.process_wait(Arc::unwrap_or_clone(batch)).await,
            Err(_) => Err(ProcessError::Stopped(route.key.clone())),
        };
        match result {
            Ok(processed) => Some(processed),
            Err(e) => {
                tracing::warn!(workload = %route.key, readings = count, "batch lost: {e}");
                counters.readings_dropped.fetch_add(count, Ordering::Relaxed);
                self.node.readings_dropped.fetch_add(count, Ordering::Relaxed);
                None
            }
        }
    }

    async fn sink(&self, route: &Route, output: &str, model_version: Option<&str>, destination: &Destination, data: Vec<u8>, records: &mut Vec<OutRecord>) {
        let counters = &route.counters;
        let readings = validate_batch(&data).ok();
        let lost = |why: &str| {
            let count = u64::from(readings.unwrap_or(1));
            tracing::warn!(workload = %route.key, %output, "output lost: {why}");
            counters.readings_dropped.fetch_add(count, Ordering::Relaxed);
            self.node.readings_dropped.fetch_add(count, Ordering::Relaxed);
        };
        match destination {
            Destination::Cloud => {
                counters.records_up.fetch_add(1, Ordering::Relaxed);
                counters.bytes_up.fetch_add(data.len() as u64, Ordering::Relaxed);
                records.push(OutRecord {
                    stream: format!("{}/{}/{output}", route.namespace, route.assignment),
                    namespace: route.namespace.clone(),
                    workload: route.workload.clone(),
                    output: output.to_owned(),
                    generation: route.generation,
                    model: model_version.map(str::to_owned),
                    produced_ms: now_ms(),
                    readings: readings.unwrap_or(0),
                    kind: if readings.is_some() { DataKind::Readings } else { DataKind::Opaque },
                    data,
                });
            }
            Destination::Log => {
                counters.bytes_out.fetch_add(data.len() as u64, Ordering::Relaxed);
                tracing::info!(target: "sink", workload = %route.key, %output, "{}", render(&data));
            }
            Destination::Mqtt(topic) => {
                let publisher = self.mqtt.read().unwrap_or_else(|p| p.into_inner()).clone();
                let Some(publisher) = publisher else { return lost("the node has no MQTT broker (--mqtt-broker)") };
                let payload = render(&data).into_bytes();
                counters.bytes_out.fetch_add(payload.len() as u64, Ordering::Relaxed);
                if let Err(e) = publisher.publish(topic.clone(), rumqttc::QoS::AtLeastOnce, false, payload).await {
                    lost(&format!("MQTT publish to {topic}: {e}"));
                }
            }
            Destination::Http(url) => {
                let body = render(&data);
                counters.bytes_out.fetch_add(body.len() as u64, Ordering::Relaxed);
                let sent = self.http.post(url).header("content-type", "application/json").body(body).send().await;
                match sent {
                    Ok(response) if response.status().is_success() => {}
                    Ok(response) => lost(&format!("POST {url} answered {}", response.status())),
                    Err(e) => lost(&format!("POST {url}: {e}")),
                }
            }
            Destination::Nowhere => lost("the output has neither a topic nor a sink"),
            Destination::Topic(_) => unreachable!("topics are routed by run_chain"),
        }
    }

    /// Records an upload the orchestrators answered: its bytes, and the records they fenced.
    pub fn uploaded(&self, body_bytes: u64, fenced: u64) {
        self.node.bytes_up.fetch_add(body_bytes, Ordering::Relaxed);
        self.node.records_fenced.fetch_add(fenced, Ordering::Relaxed);
    }

    /// The node-wide figures for heartbeats, `/v1/stats` and `/metrics`.
    pub fn report(&self) -> DataReport {
        let outbox = self.outbox.stats();
        let queue_depth = self.routes().values().flatten().map(|r| r.handle.status().queue_depth).sum::<u64>();
        DataReport {
            readings_in: self.node.readings_in.load(Ordering::Relaxed),
            bytes_in: self.node.bytes_in.load(Ordering::Relaxed),
            bytes_up: self.node.bytes_up.load(Ordering::Relaxed),
            readings_refused: self.node.readings_refused.load(Ordering::Relaxed),
            readings_dropped: self.node.readings_dropped.load(Ordering::Relaxed),
            outbox_pending_records: outbox.pending_records,
            outbox_pending_bytes: outbox.pending_bytes,
            outbox_dropped_records: outbox.dropped_records,
            records_fenced: self.node.records_fenced.load(Ordering::Relaxed),
            queue_depth,
        }
    }

    /// Prometheus text exposition of the data plane.
    pub fn metrics(&self) -> String {
        use std::fmt::Write as _;
        let report = self.report();
        let outbox = self.outbox.stats();
        let mut out = String::new();
        let mut counter = |name: &str, help: &str, kind: &str, value: u64| {
            let _ = write!(out, "# HELP edgeplane_{name} {help}\n# TYPE edgeplane_{name} {kind}\nedgeplane_{name} {value}\n");
        };
        counter("ingest_requests_total", "Batches accepted by ingest.", "counter", self.node.requests.load(Ordering::Relaxed));
        counter("ingest_readings_total", "Readings accepted by ingest.", "counter", report.readings_in);
        counter("ingest_bytes_total", "Bytes of accepted readings as they arrived.", "counter", report.bytes_in);
        counter("ingest_refused_readings_total", "Readings refused by ingest (429/503); the producer kept them.", "counter", report.readings_refused);
        counter("dropped_readings_total", "Readings lost after acceptance (workload failures, sink errors, topic loops).", "counter", report.readings_dropped);
        counter("upstream_bytes_total", "Bytes of upload bodies the orchestrators accepted.", "counter", report.bytes_up);
        counter("fenced_records_total", "Uploaded records the orchestrators fenced (an older assignment generation).", "counter", report.records_fenced);
        counter("inflight_readings", "Readings inside the node's workloads now.", "gauge", self.max_inflight - self.inflight.available_permits() as u64);
        counter("queue_depth", "Batches waiting in instance queues.", "gauge", report.queue_depth);
        counter("outbox_pending_records", "Records waiting for the cloud.", "gauge", outbox.pending_records);
        counter("outbox_pending_readings", "Readings waiting for the cloud.", "gauge", outbox.pending_readings);
        counter("outbox_pending_bytes", "Bytes on disk waiting for the cloud.", "gauge", outbox.pending_bytes);
        counter("outbox_max_bytes", "The outbox's bound.", "gauge", outbox.max_bytes);
        counter("outbox_appended_records_total", "Records appended to the outbox.", "counter", outbox.appended_records);
        counter("outbox_delivered_records_total", "Records the orchestrators acknowledged.", "counter", outbox.delivered_records);
        counter("outbox_delivered_readings_total", "Readings the orchestrators acknowledged.", "counter", outbox.delivered_readings);
        counter("outbox_dropped_records_total", "Records dropped by the drop-oldest policy (over the node's life).", "counter", outbox.dropped_records);
        counter("outbox_dropped_readings_total", "Readings dropped by the drop-oldest policy (over the node's life).", "counter", outbox.dropped_readings);
        let workloads = self.workloads.lock().unwrap_or_else(|p| p.into_inner());
        for (name, help, get) in [
            ("workload_readings_in_total", "Readings handed to the workload.", (|c: &WorkloadCounters| &c.readings_in) as fn(&WorkloadCounters) -> &AtomicU64),
            ("workload_bytes_in_total", "Bytes handed to the workload.", |c| &c.bytes_in),
            ("workload_bytes_up_total", "Bytes the workload sent to the cloud sink.", |c| &c.bytes_up),
            ("workload_bytes_out_total", "Bytes the workload sent to mqtt, http and log sinks.", |c| &c.bytes_out),
            ("workload_dropped_readings_total", "Readings lost in or after the workload.", |c| &c.readings_dropped),
        ] {
            let _ = writeln!(out, "# HELP edgeplane_{name} {help}\n# TYPE edgeplane_{name} counter");
            for (key, counters) in workloads.iter() {
                let _ = writeln!(out, "edgeplane_{name}{{assignment=\"{key}\"}} {}", get(counters).load(Ordering::Relaxed));
            }
        }
        out
    }
}

/// The reading count of a v1 batch (its first four bytes; workloads validate the rest).
fn batch_count(batch: &[u8]) -> u64 {
    batch.get(..4).map_or(0, |b| u64::from(u32::from_le_bytes([b[0], b[1], b[2], b[3]])))
}

/// An output as JSON for humans and for mqtt/http sinks: readings as an array of objects,
/// anything else as `{"base64": ...}`.
fn render(data: &[u8]) -> String {
    match edgeplane_api::data::decode_batch(data) {
        Ok(readings) => serde_json::to_string(&readings).unwrap_or_default(),
        Err(_) => serde_json::json!({ "base64": base64::engine::general_purpose::STANDARD.encode(data) }).to_string(),
    }
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// Parses an ingest body into a v1 batch: JSON (one reading or an array), NDJSON (one reading
/// per line) or the binary batch itself. Returns the batch and its reading count.
pub fn parse_body(content_type: &str, body: &[u8]) -> Result<(Vec<u8>, u32), String> {
    let media = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    let readings: Vec<Reading> = match media.as_str() {
        BINARY | "application/octet-stream" => {
            let count = validate_batch(body).map_err(|e| e.to_string())?;
            return Ok((body.to_vec(), count));
        }
        "application/json" => {
            let value: serde_json::Value = serde_json::from_slice(body).map_err(|e| format!("invalid JSON: {e}"))?;
            if value.is_array() {
                serde_json::from_value(value).map_err(|e| format!("expected an array of readings {{ts, device, metric, value}}: {e}"))?
            } else {
                vec![serde_json::from_value(value).map_err(|e| format!("expected a reading {{ts, device, metric, value}}: {e}"))?]
            }
        }
        "application/x-ndjson" | "application/jsonl" => {
            let mut readings = Vec::new();
            for (i, line) in body.split(|&b| b == b'\n').enumerate() {
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                readings.push(serde_json::from_slice(line).map_err(|e| format!("line {}: expected a reading {{ts, device, metric, value}}: {e}", i + 1))?);
            }
            readings
        }
        other => return Err(format!("unsupported content type {other:?}: use application/json, application/x-ndjson or {BINARY}")),
    };
    check_readings(&readings)?;
    Ok((edgeplane_api::data::encode_batch(&readings), readings.len() as u32))
}

/// The binary batch's media type (docs/data-plane.md).
pub const BINARY: &str = "application/vnd.edgeplane.batch";

/// What the binary format checks, for readings that arrived as JSON.
pub fn check_readings(readings: &[Reading]) -> Result<(), String> {
    for (i, r) in readings.iter().enumerate() {
        for (what, name) in [("device", &r.device), ("metric", &r.metric)] {
            if name.is_empty() || name.len() > edgeplane_api::data::MAX_NAME_LEN {
                return Err(format!("reading {i}: {what} must have 1 to {} bytes", edgeplane_api::data::MAX_NAME_LEN));
            }
        }
    }
    Ok(())
}

/// What `/v1/stats` answers: the node's figures and each workload's.
#[derive(Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Stats {
    pub node: DataReport,
    pub outbox: crate::outbox::OutboxStats,
    pub workloads: BTreeMap<String, WorkloadStats>,
}

#[derive(Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadStats {
    pub readings_in: u64,
    pub bytes_in: u64,
    pub records_up: u64,
    pub bytes_up: u64,
    pub bytes_out: u64,
    pub readings_dropped: u64,
}

impl DataPlane {
    pub fn stats(&self) -> Stats {
        let workloads = self.workloads.lock().unwrap_or_else(|p| p.into_inner());
        let workloads = workloads
            .iter()
            .map(|(key, c)| {
                let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
                let stats = WorkloadStats {
                    readings_in: load(&c.readings_in),
                    bytes_in: load(&c.bytes_in),
                    records_up: load(&c.records_up),
                    bytes_up: load(&c.bytes_up),
                    bytes_out: load(&c.bytes_out),
                    readings_dropped: load(&c.readings_dropped),
                };
                (key.clone(), stats)
            })
            .collect();
        Stats { node: self.report(), outbox: self.outbox.stats(), workloads }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_of_every_format_become_the_same_batch() {
        let json = br#"[{"ts":1,"device":"press-1","metric":"temperature","value":20.5},{"ts":2,"device":"press-1","metric":"temperature","value":21}]"#;
        let ndjson = b"{\"ts\":1,\"device\":\"press-1\",\"metric\":\"temperature\",\"value\":20.5}\n\n{\"ts\":2,\"device\":\"press-1\",\"metric\":\"temperature\",\"value\":21}\n";
        let (batch, count) = parse_body("application/json; charset=utf-8", json).expect("json");
        assert_eq!(count, 2);
        assert_eq!(parse_body("application/x-ndjson", ndjson).expect("ndjson"), (batch.clone(), 2));
        assert_eq!(parse_body(BINARY, &batch).expect("binary"), (batch.clone(), 2));
        let one = br#"{"ts":1,"device":"press-1","metric":"temperature","value":20.5}"#;
        assert_eq!(parse_body("application/json", one).expect("one").1, 1);
    }

    #[test]
    fn bad_bodies_say_what_is_wrong() {
        let missing = parse_body("application/json", br#"[{"ts":1,"device":"d","value":1}]"#).expect_err("refused");
        assert!(missing.contains("metric"), "{missing}");
        let line = parse_body("application/x-ndjson", b"{\"ts\":1,\"device\":\"d\",\"metric\":\"m\",\"value\":1}\nnope\n").expect_err("refused");
        assert!(line.starts_with("line 2"), "{line}");
        let empty = parse_body("application/json", br#"{"ts":1,"device":"","metric":"m","value":1}"#).expect_err("refused");
        assert!(empty.contains("device"), "{empty}");
        assert!(parse_body("text/plain", b"x").expect_err("refused").contains("unsupported content type"));
        assert!(parse_body(BINARY, &[1, 0, 0, 0]).expect_err("refused").contains("malformed batch"));
    }
}
