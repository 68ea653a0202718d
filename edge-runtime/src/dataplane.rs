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
//! chain at once, counting what workloads pass on to other workloads (a chained batch takes
//! its own share of the budget; data that is not a batch of readings counts one reading per
//! [`BYTES_PER_READING`] bytes), and every instance has a bounded queue (waited on, not
//! overrun). Ingest beyond the budget is refused (429); ingest that cannot be processed now
//! (a workload restarting, no workload on the topic, the outbox full under reject-new) is
//! refused with 503. Readings lost after acceptance (a workload that trapped on them, a sink
//! that failed, a chained batch the budget had no room for) are counted per workload.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use base64::Engine as _;
use edgeplane_api::data::{validate_batch, Reading, StreamId};
use edgeplane_api::node::{DataReport, InstancePhase};
use edgeplane_api::resources::{AssignmentSpec, SinkType};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

use crate::metrics::{EdgeMetrics, Scraped, WorkloadCounters};
use crate::outbox::{DataKind, OutRecord, Outbox};
use crate::pool::{InstanceHandle, ProcessError, Processed};

/// Outputs routed to topics may feed other workloads this many times over before the batch is
/// dropped (and counted): a safety net against topic loops.
pub const MAX_CHAIN_DEPTH: usize = 8;
/// Chained data that is not a batch of readings takes one reading's share of the in-flight
/// budget per this many bytes (about a reading's size in the batch format).
pub const BYTES_PER_READING: usize = 64;
/// Cloud records carry at most this many bytes of readings (in the batch format); a larger
/// output is split into several records in order. Encoded for upload (JSON) a record grows by
/// up to about 3.5 times, which keeps every record well inside the orchestrators' upload limit.
pub const MAX_RECORD_BATCH_BYTES: usize = 1 << 20;

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
    pub counters: WorkloadCounters,
}

impl Route {
    pub fn new(key: &str, spec: &AssignmentSpec, handle: Arc<InstanceHandle>, slots: Arc<Semaphore>, counters: WorkloadCounters) -> Route {
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

    fn stream(&self, output: &str) -> StreamId {
        StreamId::new(&self.namespace, &self.assignment, output)
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
    #[error("a batch of {0} readings is larger than this node ever holds at once ({1}); send smaller batches")]
    TooLarge(u64, u64),
    #[error("no workload on this node reads topic {0:?}")]
    NoSubscriber(String),
    #[error("workload {0} cannot take data now: {1}")]
    NotReady(String, String),
    #[error("the outbox is full ({0} bytes waiting for the cloud) and its policy is reject-new")]
    OutboxFull(u64),
    /// The disk failed under the request; the producer keeps the data.
    #[error("{0}")]
    Internal(String),
}

/// Where outputs to `mqtt` sinks are published (set when the node has a broker).
pub type MqttPublisher = rumqttc::AsyncClient;

/// The running instances by the topic they read.
pub(crate) type Table = BTreeMap<String, Vec<Arc<Route>>>;

#[derive(Debug)]
pub struct DataPlane {
    /// Shared with the metrics, which read each instance's status when scraped.
    routes: Arc<RwLock<Arc<Table>>>,
    outbox: Arc<Outbox>,
    inflight: Arc<Semaphore>,
    max_inflight: u64,
    metrics: EdgeMetrics,
    mqtt: RwLock<Option<MqttPublisher>>,
    http: reqwest::Client,
    /// Woken after every append, so the uploader sends without polling.
    pub appended: Notify,
}

/// A batch on its way through the chain, with its share of the in-flight budget (the
/// ingested batch's share is the request's).
struct Work {
    topic: String,
    batch: Arc<Vec<u8>>,
    /// Whether `batch` passed `validate_batch`: every ingested batch, and chained ones in the
    /// v1 format (not the opaque outputs of workloads such as the compressor).
    validated: bool,
    depth: usize,
    _share: Option<OwnedSemaphorePermit>,
}

impl DataPlane {
    pub fn new(outbox: Arc<Outbox>, max_inflight_readings: u64) -> DataPlane {
        // A semaphore holds at most usize::MAX >> 3 permits.
        let max_inflight = max_inflight_readings.min(1 << 40);
        let inflight = Arc::new(Semaphore::new(max_inflight as usize));
        let routes = Arc::new(RwLock::new(Arc::new(BTreeMap::new())));
        let metrics = EdgeMetrics::new(Scraped {
            outbox: Arc::clone(&outbox),
            inflight: Arc::clone(&inflight),
            max_inflight,
            routes: Arc::clone(&routes),
        });
        DataPlane {
            routes,
            outbox,
            inflight,
            max_inflight,
            metrics,
            mqtt: RwLock::new(None),
            http: reqwest::Client::builder().timeout(Duration::from_secs(5)).build().unwrap_or_default(),
            appended: Notify::new(),
        }
    }

    pub fn outbox(&self) -> &Arc<Outbox> {
        &self.outbox
    }

    pub fn metrics(&self) -> &EdgeMetrics {
        &self.metrics
    }

    pub fn set_mqtt(&self, publisher: MqttPublisher) {
        *self.mqtt.write().unwrap_or_else(|p| p.into_inner()) = Some(publisher);
    }

    /// Replaces the routing table with the instances running now.
    pub fn set_routes(&self, routes: Vec<Route>) {
        let mut by_topic: Table = BTreeMap::new();
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

    fn routes(&self) -> Arc<Table> {
        self.routes.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// One instance's counters (by assignment key), created on first use.
    pub fn counters(&self, key: &str) -> WorkloadCounters {
        self.metrics.workload(key)
    }

    /// The most readings one ingest may carry.
    pub fn max_inflight(&self) -> u64 {
        self.max_inflight
    }

    /// Takes a batch (v1 format, already validated, `readings` long) into the node. Returns
    /// once its cloud outputs are on disk; refused without side effects otherwise.
    pub async fn ingest(&self, topic: &str, batch: Vec<u8>, readings: u64, wire_bytes: usize) -> Result<(), Refused> {
        let node = &self.metrics.node;
        let refused = |e: Refused| {
            match e {
                Refused::TooLarge(..) => node.readings_too_large.inc_by(readings),
                _ => node.readings_refused.inc_by(readings),
            };
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
        node.requests.inc();
        node.readings_in.inc_by(readings);
        node.bytes_in.inc_by(wire_bytes as u64);
        let records = self.run_chain(&routes, topic, batch).await;
        if let Err(e) = self.outbox.append(records).await {
            // The disk failed under us: the producer gets an error and keeps the data.
            tracing::error!("{e}");
            return Err(Refused::Internal(e.to_string()));
        }
        self.appended.notify_one();
        Ok(())
    }

    /// Runs a batch through every instance on its topic and, depth first in emission order
    /// (which keeps each stream's order within one request), through the instances on the
    /// topics they emit to. Returns the records for the cloud sink.
    async fn run_chain(&self, routes: &Table, topic: &str, batch: Vec<u8>) -> Vec<OutRecord> {
        let node = &self.metrics.node;
        let mut work = vec![Work { topic: topic.to_owned(), batch: Arc::new(batch), validated: true, depth: 0, _share: None }];
        let mut records = Vec::new();
        while let Some(Work { topic, batch, validated, depth, _share }) = work.pop() {
            let Some(subscribers) = routes.get(&topic) else { continue };
            let count = batch_count(&batch);
            if depth > MAX_CHAIN_DEPTH {
                tracing::warn!(%topic, "dropping a batch that went through {MAX_CHAIN_DEPTH} workloads: the topics form a loop");
                node.chain_loops.inc();
                node.readings_dropped.inc_by(count);
                continue;
            }
            // The last subscriber takes the batch itself: with one subscriber, the usual case,
            // its bytes go to the instance without a copy (`process` copies a shared one).
            let mut shares: Vec<_> = (1..subscribers.len()).map(|_| batch.clone()).collect();
            shares.push(batch);
            let results = futures::future::join_all(
                subscribers.iter().zip(shares).map(|(route, batch)| self.process(route, batch, validated, count)),
            )
            .await;
            let mut next = Vec::new();
            for (route, processed) in subscribers.iter().zip(results) {
                let Some(Processed { emitted, model_version }) = processed else { continue };
                for (output, data) in emitted {
                    let Some((name, destination)) = route.outputs.get(output) else { continue };
                    match destination {
                        Destination::Topic(t) => next.extend(self.chained(route, t, data, depth + 1)),
                        other => self.sink(route, name, model_version.as_deref(), other, data, &mut records).await,
                    }
                }
            }
            work.extend(next.into_iter().rev());
        }
        records
    }

    /// A batch a workload emitted to a topic, with its share of the in-flight budget; `None`
    /// (counted as dropped) when the budget has no room for it.
    fn chained(&self, route: &Route, topic: &str, data: Vec<u8>, depth: usize) -> Option<Work> {
        let (share, validated) = match validate_batch(&data) {
            Ok(readings) => (readings, true),
            Err(_) => (data.len().div_ceil(BYTES_PER_READING) as u32, false),
        };
        match self.inflight.clone().try_acquire_many_owned(share) {
            Ok(permit) => Some(Work { topic: topic.to_owned(), batch: Arc::new(data), validated, depth, _share: Some(permit) }),
            Err(_) => {
                let lost = batch_count(&data);
                tracing::warn!(workload = %route.key, %topic, readings = lost, "chained batch dropped: the node's in-flight budget is used up");
                self.metrics.node.chain_overflow.inc();
                self.metrics.node.readings_dropped.inc_by(lost);
                route.counters.readings_dropped.inc_by(lost);
                None
            }
        }
    }

    /// One batch through one instance; a failure costs that instance's readings, counted.
    async fn process(&self, route: &Route, batch: Arc<Vec<u8>>, validated: bool, count: u64) -> Option<Processed> {
        let counters = &route.counters;
        counters.readings_in.inc_by(count);
        counters.bytes_in.inc_by(batch.len() as u64);
        let result = match route.slots.acquire().await {
            Ok(_slot) if validated => route.handle.process_validated_wait(Arc::unwrap_or_clone(batch)).await,
            Ok(_slot) => route.handle.process_wait(Arc::unwrap_or_clone(batch)).await,
            Err(_) => Err(ProcessError::Stopped(route.key.clone())),
        };
        match result {
            Ok(processed) => Some(processed),
            Err(e) => {
                tracing::warn!(workload = %route.key, readings = count, "batch lost: {e}");
                counters.readings_dropped.inc_by(count);
                self.metrics.node.readings_dropped.inc_by(count);
                None
            }
        }
    }

    async fn sink(
        &self,
        route: &Route,
        output: &str,
        model_version: Option<&str>,
        destination: &Destination,
        data: Vec<u8>,
        records: &mut Vec<OutRecord>,
    ) {
        let counters = &route.counters;
        let readings = validate_batch(&data).ok();
        let lost = |why: &str| {
            let count = u64::from(readings.unwrap_or(1));
            tracing::warn!(workload = %route.key, %output, "output lost: {why}");
            counters.readings_dropped.inc_by(count);
            self.metrics.node.readings_dropped.inc_by(count);
        };
        match destination {
            Destination::Cloud => {
                let produced_ms = now_ms();
                for (kind, readings, data) in record_parts(readings, data) {
                    counters.records_up.inc();
                    counters.bytes_up.inc_by(data.len() as u64);
                    records.push(OutRecord {
                        stream: route.stream(output),
                        namespace: route.namespace.clone(),
                        workload: route.workload.clone(),
                        output: output.to_owned(),
                        generation: route.generation,
                        model: model_version.map(str::to_owned),
                        produced_ms,
                        readings,
                        kind,
                        data,
                    });
                }
            }
            Destination::Log => {
                counters.bytes_out.inc_by(data.len() as u64);
                tracing::info!(target: "sink", workload = %route.key, %output, "{}", render(&data));
            }
            Destination::Mqtt(topic) => {
                let publisher = self.mqtt.read().unwrap_or_else(|p| p.into_inner()).clone();
                let Some(publisher) = publisher else { return lost("the node has no MQTT broker (--mqtt-broker)") };
                let payload = render(&data).into_bytes();
                counters.bytes_out.inc_by(payload.len() as u64);
                if let Err(e) = publisher.publish(topic.clone(), rumqttc::QoS::AtLeastOnce, false, payload).await {
                    lost(&format!("MQTT publish to {topic}: {e}"));
                }
            }
            Destination::Http(url) => {
                let body = render(&data);
                counters.bytes_out.inc_by(body.len() as u64);
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

    /// Records an upload the orchestrators answered: its bytes, the records they fenced, and
    /// those they refused for good (set aside).
    pub fn uploaded(&self, body_bytes: u64, fenced: u64, rejected: u64) {
        let node = &self.metrics.node;
        node.bytes_up.inc_by(body_bytes);
        node.records_fenced.inc_by(fenced);
        node.records_rejected.inc_by(rejected);
    }

    /// The node-wide figures for heartbeats, `/v1/stats` and `/metrics`.
    pub fn report(&self) -> DataReport {
        let outbox = self.outbox.stats();
        let queue_depth = self.routes().values().flatten().map(|r| r.handle.status().queue_depth).sum::<u64>();
        let node = &self.metrics.node;
        DataReport {
            readings_in: node.readings_in.get(),
            bytes_in: node.bytes_in.get(),
            bytes_up: node.bytes_up.get(),
            readings_refused: node.readings_refused.get(),
            readings_dropped: node.readings_dropped.get(),
            outbox_pending_records: outbox.pending_records,
            outbox_pending_bytes: outbox.pending_bytes,
            outbox_dropped_records: outbox.dropped_records,
            records_fenced: node.records_fenced.get(),
            queue_depth,
        }
    }

    pub fn stats(&self) -> Stats {
        let workloads = self
            .metrics
            .workloads()
            .into_iter()
            .map(|(key, c)| {
                let stats = WorkloadStats {
                    readings_in: c.readings_in.get(),
                    bytes_in: c.bytes_in.get(),
                    records_up: c.records_up.get(),
                    bytes_up: c.bytes_up.get(),
                    bytes_out: c.bytes_out.get(),
                    readings_dropped: c.readings_dropped.get(),
                };
                (key, stats)
            })
            .collect();
        Stats {
            node: self.report(),
            outbox: self.outbox.stats(),
            storage: StorageStats { refused_files: crate::agent::refused_files() },
            workloads,
        }
    }
}

/// An output bound for the cloud as the records it becomes: readings in batches of at most
/// [`MAX_RECORD_BATCH_BYTES`], in order; anything else as one opaque record.
fn record_parts(readings: Option<u32>, data: Vec<u8>) -> Vec<(DataKind, u32, Vec<u8>)> {
    let Some(count) = readings else { return vec![(DataKind::Opaque, 0, data)] };
    if data.len() <= MAX_RECORD_BATCH_BYTES {
        return vec![(DataKind::Readings, count, data)];
    }
    let Ok(all) = edgeplane_api::data::decode_batch(&data) else { return vec![(DataKind::Opaque, 0, data)] };
    let mut parts = Vec::new();
    let mut chunk: Vec<Reading> = Vec::new();
    let mut size = 4;
    for reading in all {
        let bytes = 20 + reading.device.len() + reading.metric.len();
        if !chunk.is_empty() && size + bytes > MAX_RECORD_BATCH_BYTES {
            let taken = std::mem::take(&mut chunk);
            parts.push((DataKind::Readings, taken.len() as u32, edgeplane_api::data::encode_batch(&taken)));
            size = 4;
        }
        size += bytes;
        chunk.push(reading);
    }
    if !chunk.is_empty() {
        parts.push((DataKind::Readings, chunk.len() as u32, edgeplane_api::data::encode_batch(&chunk)));
    }
    parts
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

/// Why an ingest body cannot be taken (the answer: 400, or 415 for the media type).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    #[error("a Content-Type header is required: application/json, application/x-ndjson or {BINARY}")]
    MissingContentType,
    #[error("unsupported content type {0:?}: use application/json, application/x-ndjson or {BINARY}")]
    UnsupportedMediaType(String),
    #[error("{0}")]
    Malformed(String),
}

/// Parses an ingest body into a v1 batch: JSON (one reading or an array), NDJSON (one reading
/// per line) or the binary batch itself, by its media type. Returns the batch and its reading
/// count.
pub fn parse_body(content_type: Option<&str>, body: &[u8]) -> Result<(Vec<u8>, u32), BodyError> {
    let content_type = content_type.ok_or(BodyError::MissingContentType)?;
    let media = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    let malformed = BodyError::Malformed;
    let readings: Vec<Reading> = match media.as_str() {
        BINARY | "application/octet-stream" => {
            let count = validate_batch(body).map_err(|e| malformed(e.to_string()))?;
            return Ok((body.to_vec(), count));
        }
        "application/json" => {
            let value: serde_json::Value = serde_json::from_slice(body).map_err(|e| malformed(format!("invalid JSON: {e}")))?;
            if value.is_array() {
                serde_json::from_value(value)
                    .map_err(|e| malformed(format!("expected an array of readings {{ts, device, metric, value}}: {e}")))?
            } else {
                vec![serde_json::from_value(value)
                    .map_err(|e| malformed(format!("expected a reading {{ts, device, metric, value}}: {e}")))?]
            }
        }
        "application/x-ndjson" | "application/jsonl" => {
            let mut readings = Vec::new();
            for (i, line) in body.split(|&b| b == b'\n').enumerate() {
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                readings.push(
                    serde_json::from_slice(line)
                        .map_err(|e| malformed(format!("line {}: expected a reading {{ts, device, metric, value}}: {e}", i + 1)))?,
                );
            }
            readings
        }
        other => return Err(BodyError::UnsupportedMediaType(other.to_owned())),
    };
    check_readings(&readings).map_err(malformed)?;
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
        if !r.value.is_finite() {
            return Err(format!("reading {i}: value is {}; readings must be finite numbers", r.value));
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
    pub storage: StorageStats,
    pub workloads: BTreeMap<String, WorkloadStats>,
}

/// The node's files at rest.
#[derive(Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StorageStats {
    /// Files refused since the start: changed, cut, sealed with another key, or plain where
    /// sealed ones belong (the agent's files; the outbox counts its records itself).
    pub refused_files: u64,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_of_every_format_become_the_same_batch() {
        let json = br#"[{"ts":1,"device":"press-1","metric":"temperature","value":20.5},{"ts":2,"device":"press-1","metric":"temperature","value":21}]"#;
        let ndjson = b"{\"ts\":1,\"device\":\"press-1\",\"metric\":\"temperature\",\"value\":20.5}\n\n{\"ts\":2,\"device\":\"press-1\",\"metric\":\"temperature\",\"value\":21}\n";
        let (batch, count) = parse_body(Some("application/json; charset=utf-8"), json).expect("json");
        assert_eq!(count, 2);
        assert_eq!(parse_body(Some("application/x-ndjson"), ndjson).expect("ndjson"), (batch.clone(), 2));
        assert_eq!(parse_body(Some(BINARY), &batch).expect("binary"), (batch.clone(), 2));
        let one = br#"{"ts":1,"device":"press-1","metric":"temperature","value":20.5}"#;
        assert_eq!(parse_body(Some("application/json"), one).expect("one").1, 1);
    }

    #[test]
    fn bad_bodies_say_what_is_wrong() {
        let text = |r: Result<(Vec<u8>, u32), BodyError>| r.expect_err("refused").to_string();
        let missing = text(parse_body(Some("application/json"), br#"[{"ts":1,"device":"d","value":1}]"#));
        assert!(missing.contains("metric"), "{missing}");
        let line = text(parse_body(Some("application/x-ndjson"), b"{\"ts\":1,\"device\":\"d\",\"metric\":\"m\",\"value\":1}\nnope\n"));
        assert!(line.starts_with("line 2"), "{line}");
        let empty = text(parse_body(Some("application/json"), br#"{"ts":1,"device":"","metric":"m","value":1}"#));
        assert!(empty.contains("device"), "{empty}");
        assert_eq!(parse_body(Some("text/plain"), b"x"), Err(BodyError::UnsupportedMediaType("text/plain".into())));
        assert_eq!(parse_body(None, b"[]"), Err(BodyError::MissingContentType));
        assert!(text(parse_body(Some(BINARY), &[1, 0, 0, 0])).contains("malformed batch"));
        // NaN has no JSON form, and numbers past f64's range are not readings either.
        let huge = text(parse_body(Some("application/json"), br#"{"ts":1,"device":"d","metric":"m","value":1e400}"#));
        assert!(huge.contains("invalid JSON") || huge.contains("finite"), "{huge}");
    }

    #[test]
    fn large_cloud_outputs_become_several_records_in_order() {
        let readings: Vec<Reading> =
            (0..60_000).map(|i| Reading { ts: i, device: "press-1".into(), metric: "vibration".into(), value: i as f64 }).collect();
        let batch = edgeplane_api::data::encode_batch(&readings);
        assert!(batch.len() > MAX_RECORD_BATCH_BYTES);
        let parts = record_parts(Some(60_000), batch);
        assert!(parts.len() > 1 && parts.iter().all(|(_, _, d)| d.len() <= MAX_RECORD_BATCH_BYTES), "{} parts", parts.len());
        let back: Vec<Reading> = parts
            .iter()
            .flat_map(|(_, n, d)| {
                let decoded = edgeplane_api::data::decode_batch(d).expect("each part is a batch");
                assert_eq!(decoded.len() as u32, *n);
                decoded
            })
            .collect();
        assert_eq!(back, readings);
        assert_eq!(record_parts(None, vec![1, 2, 3]), vec![(DataKind::Opaque, 0, vec![1, 2, 3])]);
    }
}
