//! The data plane in process, with real wasm instances and a real outbox on disk: chains
//! through topics, the cloud sink, and every way ingest refuses or counts a loss.

use std::sync::Arc;
use std::time::{Duration, Instant};

use edgeplane_api::data::{decode_batch, encode_batch, Reading};
use edgeplane_api::node::InstancePhase;
use edgeplane_api::resources::AssignmentSpec;
use edgeplane_edge_runtime::dataplane::{DataPlane, Refused, Route};
use edgeplane_edge_runtime::host::{HostConfig, InstanceLimits, WasmHost};
use edgeplane_edge_runtime::outbox::{DataKind, Outbox, OutboxConfig, OverflowPolicy};
use edgeplane_edge_runtime::pool::{InstanceHandle, InstanceSpec, RestartPolicy, WasmPool};
use serde_json::json;
use tokio::sync::Semaphore;

mod common;
use common::{echo, module};

/// Traps on every batch.
const TRAP: &str = r#"(func (export "ep_process") (param i32 i32) (result i32) unreachable)"#;

struct Node {
    pool: WasmPool,
    dataplane: DataPlane,
    routes: Vec<(String, AssignmentSpec, Arc<InstanceHandle>)>,
    _dir: tempfile::TempDir,
}

impl Node {
    fn new() -> Node {
        let host = Arc::new(
            WasmHost::new(HostConfig { max_instances: 16, max_instance_memory: 64 << 20, max_output_per_batch: 1 << 20 }).expect("host"),
        );
        let pool = WasmPool::new(host, 2).expect("pool");
        let dir = tempfile::tempdir().expect("tempdir");
        let outbox = Outbox::open(OutboxConfig {
            dir: dir.path().join("outbox"),
            max_bytes: 1 << 20,
            policy: OverflowPolicy::RejectNew,
            segment_bytes: 64 << 10,
            key: None,
        })
        .expect("outbox");
        Node { pool, dataplane: DataPlane::new(Arc::new(outbox), 10_000), routes: Vec::new(), _dir: dir }
    }

    /// Starts the module `wat` as assignment `ns/{name}`, reading `input` and sending its output `out`
    /// where `output` says (a Workload output: `{"topic": ..}` or `{"sink": ..}`).
    fn run(&mut self, name: &str, wat: &str, input: &str, output: serde_json::Value) {
        let mut out = json!({"name": "out"});
        out.as_object_mut().expect("object").extend(output.as_object().expect("object").clone());
        let spec: AssignmentSpec = serde_json::from_value(json!({
            "workload": name, "replica": 0, "nodeName": "n", "generation": 3, "moduleRef": "m@1", "moduleDigest": "sha256:00",
            "inputs": [input], "outputs": [out]
        }))
        .expect("assignment");
        let module = Arc::new(self.pool.host().load(&wat::parse_str(wat).expect("wat")).expect("loads"));
        let limits = InstanceLimits {
            memory_bytes: 1 << 20,
            batch_deadline: Duration::from_millis(200),
            outputs: vec!["out".into()],
            log_name: name.into(),
        };
        let restart = RestartPolicy { first_backoff: Duration::from_secs(30), max_restarts: 3 };
        let handle = self.pool.start(InstanceSpec {
            name: name.into(),
            module,
            limits,
            config_doc: b"{}".to_vec(),
            model_version: None,
            model: None,
            restart,
            queue_capacity: 4,
        });
        self.routes.push((format!("ns/{name}-0"), spec, Arc::new(handle)));
        let routes = self
            .routes
            .iter()
            .map(|(key, spec, handle)| Route::new(key, spec, handle.clone(), Arc::new(Semaphore::new(4)), self.dataplane.counters(key)))
            .collect();
        self.dataplane.set_routes(routes);
        let handle = &self.routes.last().expect("pushed").2;
        let deadline = Instant::now() + Duration::from_secs(10);
        while handle.status().phase != InstancePhase::Running {
            assert!(Instant::now() < deadline, "{name} did not start: {:?}", handle.status());
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    async fn ingest(&self, topic: &str, readings: &[Reading]) -> Result<(), Refused> {
        let batch = encode_batch(readings);
        let len = batch.len();
        self.dataplane.ingest(topic, batch, readings.len() as u64, len).await
    }
}

fn readings(n: u64) -> Vec<Reading> {
    (0..n).map(|i| Reading { ts: i, device: format!("d{}", i % 3), metric: "temperature".into(), value: i as f64 }).collect()
}

#[tokio::test]
async fn a_chain_through_topics_reaches_the_outbox_in_order() {
    let mut node = Node::new();
    node.run("first", &echo(), "in", json!({"topic": "middle"}));
    node.run("second", &echo(), "middle", json!({"sink": {"type": "cloud"}}));
    node.ingest("in", &readings(5)).await.expect("accepted");
    node.ingest("in", &readings(7)).await.expect("accepted");

    let stored = node.dataplane.outbox().peek(100, 1 << 20).expect("peek").records;
    assert_eq!(stored.len(), 2, "one record per batch, from the end of the chain");
    for (i, (record, n)) in stored.iter().zip([5, 7]).enumerate() {
        assert_eq!(record.seq, i as u64 + 1);
        assert_eq!(record.record.stream.to_string(), "ns/second-0/out");
        assert_eq!((record.record.workload.as_str(), record.record.generation), ("second", 3));
        assert_eq!((record.record.kind, record.record.readings), (DataKind::Readings, n));
        assert_eq!(decode_batch(&record.record.data).expect("a batch"), readings(u64::from(n)));
    }
    let stats = node.dataplane.stats();
    assert_eq!(stats.node.readings_in, 12);
    assert_eq!(stats.workloads["ns/first-0"].readings_in, 12);
    assert_eq!(stats.workloads["ns/second-0"].readings_in, 12);
    assert_eq!(stats.workloads["ns/second-0"].records_up, 2);
    assert_eq!(stats.outbox.pending_readings, 12);
}

#[tokio::test]
async fn ingest_refuses_what_it_cannot_take_and_counts_what_it_loses() {
    let mut node = Node::new();
    assert_eq!(node.ingest("nowhere", &readings(1)).await, Err(Refused::NoSubscriber("nowhere".into())));

    // A workload that traps loses the batch (counted), then backs off: further ingest is
    // refused until it runs again, so nothing more is lost.
    node.run("broken", &module(TRAP), "in", json!({"sink": {"type": "cloud"}}));
    assert!(matches!(node.ingest("in", &readings(10_001)).await, Err(Refused::TooLarge(10_001, 10_000))));
    node.ingest("in", &readings(4)).await.expect("accepted, then lost in the workload");
    let stats = node.dataplane.stats();
    assert_eq!((stats.node.readings_in, stats.node.readings_dropped), (4, 4));
    assert_eq!(stats.workloads["ns/broken-0"].readings_dropped, 4);
    match node.ingest("in", &readings(2)).await {
        Err(Refused::NotReady(workload, why)) => assert!(workload == "ns/broken-0" && why.contains("unreachable"), "{why}"),
        other => panic!("expected NotReady, got {other:?}"),
    }
    // A batch too large to take (413) is not refused for now (429/503): it is counted apart.
    assert_eq!(node.dataplane.stats().node.readings_refused, 2 + 1);
    assert_eq!(node.dataplane.metrics().node.readings_too_large.get(), 10_001);
}

#[tokio::test]
async fn a_topic_loop_is_cut_and_counted() {
    let mut node = Node::new();
    node.run("looper", &echo(), "loop", json!({"topic": "loop"}));
    node.ingest("loop", &readings(3)).await.expect("accepted");
    let stats = node.dataplane.stats();
    assert_eq!(stats.node.readings_dropped, 3, "the batch is dropped after going round the loop");
    assert_eq!(stats.workloads["ns/looper-0"].readings_in, 3 * 9, "through the workload 1 + 8 times");
}

/// A workload that emits 20 copies of its input to a topic: the copies take their share of
/// the node's in-flight budget, and those the budget has no room for are dropped and counted
/// rather than held in memory without bound.
#[tokio::test]
async fn chained_outputs_are_charged_to_the_in_flight_budget() {
    let mut node = Node::new();
    let amplifier = module(
        r#"(func (export "ep_process") (param $ptr i32) (param $len i32) (result i32) (local $n i32)
            (local.set $n (i32.const 20))
            (loop $again
                (drop (call $emit (i32.const 16) (i32.const 3) (local.get $ptr) (local.get $len)))
                (local.set $n (i32.sub (local.get $n) (i32.const 1)))
                (br_if $again (local.get $n)))
            i32.const 0)"#,
    );
    node.run("amplifier", &amplifier, "in", json!({"topic": "copies"}));
    node.run("collector", &echo(), "copies", json!({"sink": {"type": "log"}}));
    node.ingest("in", &readings(1_000)).await.expect("accepted");
    let stats = node.dataplane.stats();
    let through = stats.workloads["ns/collector-0"].readings_in;
    // The budget is 10,000 readings, 1,000 of them the ingested batch's.
    assert!(through <= 9_000, "{through} chained readings were in flight at once");
    assert!(through > 0, "copies within the budget go through");
    let overflow = node.dataplane.metrics().node.chain_overflow.get();
    assert_eq!(overflow * 1_000 + through, 20_000, "every copy is either processed or counted as dropped");
    assert_eq!(stats.node.readings_dropped, overflow * 1_000);
}
