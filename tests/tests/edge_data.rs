//! The data plane against real processes: HTTP ingest through workloads into the durable
//! outbox and the orchestrators' cloud sink; store-and-forward and autonomy while the cloud
//! is gone and the edge is SIGKILLed; backpressure; MQTT through a real mosquitto.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use edgeplane_api::data::Reading;
use edgeplane_tests::{
    cloud_readings, cloud_records, create_resource, eventually, ingest, push_module, workload_wasm, Api, Cluster, ClusterSpec, EdgeRuntime,
    Mosquitto,
};
use serde_json::{json, Value};

const NS: &str = "factory";

fn workload(name: &str, module: &str, inputs: &[&str], outputs: Value, config: Value) -> Value {
    json!({
        "apiVersion": "edgeplane.io/v1alpha1",
        "kind": "Workload",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "module": module,
            "placement": {"nodeSelector": {"line": "a"}},
            "resources": {"memoryMib": 16, "batchTimeMs": 1000},
            "inputs": inputs,
            "outputs": outputs,
            "config": config
        }
    })
}

async fn running(edge: &EdgeRuntime, count: usize) {
    edge.wait_running(count, Duration::from_secs(40)).await;
}

/// Pushes the threshold filter and creates workload "pass" on line A: it forwards every
/// reading on `line-a/temperature` to the cloud sink, so what arrives must be what went in.
async fn create_pass_through(api: &Api) {
    push_module(api, NS, "threshold-filter", workload_wasm("threshold-filter")).await;
    let outputs = json!([{"name": "in-range", "sink": {"type": "cloud"}}, {"name": "out-of-range", "sink": {"type": "cloud"}}]);
    create_resource(
        api,
        NS,
        "workloads",
        &workload(
            "pass",
            "threshold-filter@1.0.0",
            &["line-a/temperature"],
            outputs,
            json!({"min": -1e12, "max": 1e12, "forwardInRange": true}),
        ),
    )
    .await;
}

/// Waits until the broker has acknowledged the edge's subscription to each of `topics`.
async fn subscribed(edge: &EdgeRuntime, topics: &[&str]) {
    eventually(
        "the broker to acknowledge the edge's subscriptions",
        Duration::from_secs(20),
        async || {
            let log = edge.log();
            topics.iter().all(|t| log.lines().any(|l| l.contains("subscribed") && l.contains(&format!("topic={t}")))).then_some(())
        },
        || edge.log_tail(),
    )
    .await;
}

fn readings(device: &str, first: u64, values: impl IntoIterator<Item = f64>) -> Vec<Reading> {
    values
        .into_iter()
        .enumerate()
        .map(|(i, value)| Reading { ts: first + i as u64, device: device.into(), metric: "temperature".into(), value })
        .collect()
}

/// Cloud gone for a while, the edge SIGKILLed three times meanwhile (and restarted without any
/// orchestrator: it must resume from its own disk): every reading ingest accepted reaches the
/// cloud sink exactly once, in order, and the counters add up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accepted_readings_survive_cloud_loss_and_edge_crashes_exactly_once_in_order() {
    let mut cluster = Cluster::start(ClusterSpec { subnet: 52, ..Default::default() }).await;
    let leader = cluster.wait_for_leader(Duration::from_secs(10)).await;
    let api = cluster.api(leader);
    let servers: Vec<SocketAddr> = cluster.running().iter().map(|&id| cluster.api_addr(id)).collect();
    create_pass_through(&api).await;

    let dir = tempfile::tempdir().expect("tempdir");
    let mut edge =
        EdgeRuntime::start("line-a-edge", &servers, dir.path().join("edge"), &["--label", "line=a", "--heartbeat-ms", "200"]).await;
    running(&edge, 1).await;

    let mut accepted: Vec<Reading> = Vec::new();
    let mut next_ts = 1_000;
    // Sends batches until `count` were accepted, retrying refused ones (the producer keeps
    // what was not accepted); `between` runs after each accepted batch.
    async fn produce(
        edge: &mut EdgeRuntime,
        accepted: &mut Vec<Reading>,
        next_ts: &mut u64,
        count: usize,
        mut between: impl FnMut(usize, &mut EdgeRuntime),
    ) {
        for i in 0..count {
            let batch = readings("press-1", *next_ts, (0..25).map(|k| (*next_ts + k) as f64 * 0.5));
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                let http = edge.http().await;
                let (status, body) = ingest(&http, "line-a/temperature", &batch).await;
                if status == 200 {
                    break;
                }
                assert!(Instant::now() < deadline, "ingest kept failing: {status} {body}\n{}", edge.log_tail());
                assert!(matches!(status, 0 | 503), "unexpected ingest answer {status}: {body}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            *next_ts += batch.len() as u64;
            accepted.extend(batch);
            between(i, edge);
        }
    }

    // Cloud up.
    produce(&mut edge, &mut accepted, &mut next_ts, 10, |_, _| {}).await;
    // Cloud gone; the edge is killed and restarted every 5 batches, with nothing to register
    // with or download from.
    for id in cluster.running() {
        cluster.kill(id);
    }
    produce(&mut edge, &mut accepted, &mut next_ts, 15, |i, edge| {
        if i % 5 == 4 {
            edge.restart();
        }
    })
    .await;
    let offline = edge.stats().await;
    assert!(offline["outbox"]["pendingReadings"].as_u64().unwrap_or(0) > 0, "the edge buffers while the cloud is gone: {offline}");
    // Sealed at rest with the key the node made on its first start: no device name on disk.
    let at_rest = outbox_bytes(&dir.path().join("edge"));
    assert!(!at_rest.is_empty() && !at_rest.windows(7).any(|w| w == b"press-1"), "the outbox holds readings in plain text");
    // Cloud back.
    for id in 1..=3 {
        cluster.restart(id);
    }
    produce(&mut edge, &mut accepted, &mut next_ts, 5, |_, _| {}).await;

    let records = eventually(
        "every accepted reading in the cloud sink",
        Duration::from_secs(60),
        async || {
            let records = cloud_records(&servers, NS, "pass").await?;
            (cloud_readings(&records).len() >= accepted.len()).then_some(records)
        },
        || format!("edge log:\n{}\n{}", edge.log_tail(), cluster.all_logs()),
    )
    .await;
    let arrived = cloud_readings(&records);
    assert_eq!(arrived.len(), accepted.len(), "duplicates or extra readings reached the cloud sink");
    assert!(arrived == accepted, "the cloud sink holds other readings, or in another order, than ingest accepted");
    let seqs: Vec<u64> = records.iter().map(|r| r["seq"].as_u64().expect("seq")).collect();
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "per-stream sequence numbers without gaps or repeats: {seqs:?}");
    assert!(records.iter().all(|r| r["stream"] == "factory/pass-0/in-range"), "one stream");

    // The books balance: nothing is waiting, nothing was dropped.
    let after = eventually(
        "the outbox to be empty",
        Duration::from_secs(20),
        async || {
            let s = edge.stats().await;
            (s["outbox"]["pendingRecords"] == 0).then_some(s)
        },
        || edge.log_tail(),
    )
    .await;
    assert_eq!(after["outbox"]["droppedReadings"], 0, "{after}");
    assert_eq!(after["node"]["readingsDropped"], 0, "{after}");
}

/// Every outbox segment of the edge in `data_dir`, concatenated.
fn outbox_bytes(data_dir: &std::path::Path) -> Vec<u8> {
    outbox_segments(data_dir).iter().flat_map(|p| std::fs::read(p).expect("a segment")).collect()
}

/// The outbox segment files of the edge in `data_dir`, oldest first.
fn outbox_segments(data_dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut paths: Vec<_> = std::fs::read_dir(data_dir.join("outbox"))
        .expect("the outbox directory")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    paths.sort();
    paths
}

/// A byte flipped on disk in a sealed outbox while the cloud is gone and the edge is down:
/// the damaged record is detected, counted and reported, and every other record still reaches
/// the cloud. The node's other files are sealed too: a damaged saved-assignments file and a
/// damaged cached module are refused and counted, and the node takes both from the cloud again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flipped_byte_in_the_sealed_outbox_is_counted_and_the_rest_arrives() {
    let mut cluster = Cluster::start(ClusterSpec { subnet: 58, size: 1, ..Default::default() }).await;
    let leader = cluster.wait_for_leader(Duration::from_secs(10)).await;
    let api = cluster.api(leader);
    let servers = vec![cluster.api_addr(leader)];
    create_pass_through(&api).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let data_dir = dir.path().join("edge");
    let mut edge = EdgeRuntime::start("line-a-edge", &servers, data_dir.clone(), &["--label", "line=a", "--heartbeat-ms", "200"]).await;
    running(&edge, 1).await;
    let key = std::fs::metadata(data_dir.join("storage.key")).expect("the node made its storage key");
    assert_eq!(std::os::unix::fs::PermissionsExt::mode(&key.permissions()) & 0o777, 0o600, "owner-only");

    cluster.kill(leader);
    // Three records: one batch each, the middle one to be damaged.
    for (i, device) in ["first", "middle", "last"].into_iter().enumerate() {
        let batch = readings(device, 1_000 + 10 * i as u64, [1.0, 2.0]);
        let (status, body) = ingest(&edge.http().await, "line-a/temperature", &batch).await;
        assert_eq!(status, 200, "{body}");
    }
    eventually(
        "three records in the outbox",
        Duration::from_secs(10),
        async || (edge.stats().await["outbox"]["pendingRecords"] == 3).then_some(()),
        || edge.log_tail(),
    )
    .await;
    edge.kill();
    let segment = outbox_segments(&data_dir).pop().expect("a segment");
    let mut bytes = std::fs::read(&segment).expect("read");
    assert!(!bytes.windows(6).any(|w| w == b"middle"), "sealed at rest");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(&segment, &bytes).expect("write");
    // The identity, key, certificate, saved assignments and module cache: sealed, no clear text.
    let module = std::fs::read_dir(data_dir.join("modules")).expect("modules").map(|e| e.expect("entry").path()).next().expect("a module");
    for file in [
        data_dir.join("identity.json"),
        data_dir.join("node.key"),
        data_dir.join("node.crt"),
        data_dir.join("assignments.json"),
        module.clone(),
    ] {
        let bytes = std::fs::read(&file).expect("a node file");
        let clear = [&b"BEGIN"[..], b"pass-0", b"line-a-edge", b"asm"].iter().any(|t| bytes.windows(t.len()).any(|w| w == *t));
        assert!(bytes.starts_with(b"EDGEPLANE-SEALED 1\n") && !clear, "{} is not sealed", file.display());
    }
    for file in [data_dir.join("assignments.json"), module] {
        let mut bytes = std::fs::read(&file).expect("read");
        let last = bytes.len() - 1;
        bytes[last] ^= 0x01;
        std::fs::write(&file, &bytes).expect("write");
    }

    cluster.restart(leader);
    edge.restart();
    let records = eventually(
        "the two undamaged records in the cloud sink",
        Duration::from_secs(40),
        async || {
            let records = cloud_records(&servers, NS, "pass").await?;
            (records.len() >= 2).then_some(records)
        },
        || format!("edge log:\n{}", edge.log_tail()),
    )
    .await;
    let devices: Vec<String> = cloud_readings(&records).iter().map(|r| r.device.clone()).collect();
    assert_eq!(devices, ["first", "first", "last", "last"], "{records:?}");
    // The cached module is read only when the workload starts again, so the second refusal
    // is counted then, not when the outbox has drained.
    running(&edge, 1).await;
    let last_stats = std::sync::Mutex::new(Value::Null);
    let stats = eventually(
        "the damaged record and both damaged files counted",
        Duration::from_secs(20),
        async || {
            let s = edge.stats().await;
            *last_stats.lock().expect("stats lock") = s.clone();
            (s["outbox"]["pendingRecords"] == 0 && s["storage"]["refusedFiles"].as_u64() >= Some(2)).then_some(s)
        },
        || format!("last stats: {}\nedge log:\n{}", last_stats.lock().expect("stats lock"), edge.log_tail()),
    )
    .await;
    assert_eq!(stats["outbox"]["corruptRecords"], 1, "{stats}");
    assert_eq!(stats["storage"]["refusedFiles"], 2, "the saved assignments and the cached module: {stats}");
}

/// A producer faster than the workload gets 429s (and 503 once the outbox is full under
/// reject-new); the edge's memory stays bounded; nothing accepted is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fast_producer_is_pushed_back_and_memory_stays_bounded() {
    let cluster = Cluster::start(ClusterSpec { subnet: 53, size: 1, ..Default::default() }).await;
    let leader = cluster.wait_for_leader(Duration::from_secs(10)).await;
    let api = cluster.api(leader);
    let servers = vec![cluster.api_addr(leader)];
    // A workload that takes ~20 ms per batch whatever its size, then emits it unchanged.
    let slow = wat::parse_str(
        r#"(module
            (import "edgeplane" "emit" (func $emit (param i32 i32 i32 i32) (result i32)))
            (memory (export "memory") 64)
            (data (i32.const 16) "out")
            (func (export "ep_abi_version") (result i32) i32.const 1)
            (func (export "ep_alloc") (param i32) (result i32) i32.const 65536)
            (func (export "ep_process") (param $ptr i32) (param $len i32) (result i32) (local $i i32)
                (loop $spin
                    (local.set $i (i32.add (local.get $i) (i32.const 1)))
                    (br_if $spin (i32.lt_u (local.get $i) (i32.const 20000000))))
                (drop (call $emit (i32.const 16) (i32.const 3) (local.get $ptr) (local.get $len)))
                i32.const 0))"#,
    )
    .expect("wat");
    push_module(&api, NS, "slow", slow).await;
    create_resource(
        &api,
        NS,
        "workloads",
        &workload("slow", "slow@1.0.0", &["line-a/temperature"], json!([{"name": "out", "sink": {"type": "cloud"}}]), json!({})),
    )
    .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let edge = EdgeRuntime::start(
        "line-a-edge",
        &servers,
        dir.path().join("edge"),
        &["--label", "line=a", "--max-inflight-readings", "2000", "--outbox-max-mib", "1"],
    )
    .await;
    running(&edge, 1).await;

    // 8 producers at once, 500 readings a batch: 4,000 wanted in flight, 2,000 allowed.
    let http = edge.http().await;
    let mut statuses = Vec::new();
    for round in 0..5u64 {
        let sends = (0..8u64).map(|p| {
            let batch = readings(&format!("press-{p}"), round * 1000, (0..500).map(f64::from));
            let http = http.clone();
            async move { ingest(&http, "line-a/temperature", &batch).await }
        });
        statuses.extend(futures::future::join_all(sends).await);
    }
    let ok = statuses.iter().filter(|(s, _)| *s == 200).count() as u64;
    let busy: Vec<_> = statuses.iter().filter(|(s, _)| *s == 429).collect();
    assert!(ok > 0, "some batches get through: {statuses:?}");
    assert!(!busy.is_empty(), "a producer faster than the workload must see 429: {statuses:?}");
    assert!(busy[0].1.contains("in flight"), "the 429 says why: {}", busy[0].1);
    assert!(statuses.iter().all(|(s, _)| matches!(s, 200 | 429)), "{statuses:?}");
    let s = edge.stats().await;
    assert_eq!(s["node"]["readingsIn"].as_u64(), Some(ok * 500), "{s}");
    assert_eq!(s["node"]["readingsRefused"].as_u64(), Some(busy.len() as u64 * 500), "{s}");
    let too_big = ingest(&http, "line-a/temperature", &readings("press-x", 0, (0..2001).map(f64::from))).await;
    assert_eq!(too_big.0, 413, "{}", too_big.1);

    // The cloud gone and a 1 MiB outbox under reject-new: ingest is refused with 503 once it is
    // full, and nothing accepted is dropped.
    drop(cluster);
    let mut refused = None;
    for i in 0..400u64 {
        let (status, body) = ingest(&http, "line-a/temperature", &readings("press-9", i * 1000, (0..1000).map(f64::from))).await;
        match status {
            200 | 429 => {}
            503 => {
                refused = Some(body);
                break;
            }
            other => panic!("unexpected {other}: {body}"),
        }
    }
    let refused = refused.expect("a full outbox refuses new data");
    assert!(refused.contains("outbox is full"), "{refused}");
    let s = edge.stats().await;
    assert_eq!(s["outbox"]["droppedRecords"], 0, "{s}");
    assert_eq!(s["node"]["readingsDropped"], 0, "{s}");

    let rss_kib = std::fs::read_to_string(format!("/proc/{}/status", edge.pid().expect("running")))
        .expect("status")
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:").map(|v| v.trim().trim_end_matches(" kB").trim().parse::<u64>().expect("kB")))
        .expect("VmRSS");
    assert!(rss_kib < 256 * 1024, "the edge's memory must stay bounded under load: {rss_kib} KiB resident");
}

/// Readings published to a real mosquitto go through filter -> detector on the edge and the
/// detector's alerts reach the cloud sink, readable with `edgectl data query`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_readings_flow_through_filter_and_detector_to_the_cloud() {
    let dir = tempfile::tempdir().expect("tempdir");

    let cluster = Cluster::start(ClusterSpec { subnet: 54, ..Default::default() }).await;
    let broker = Mosquitto::start(std::net::Ipv4Addr::new(127, 54, 0, 10));
    let leader = cluster.wait_for_leader(Duration::from_secs(10)).await;
    let api = cluster.api(leader);
    let servers: Vec<SocketAddr> = cluster.running().iter().map(|&id| cluster.api_addr(id)).collect();
    push_module(&api, NS, "threshold-filter", workload_wasm("threshold-filter")).await;
    push_module(&api, NS, "anomaly-detector", workload_wasm("anomaly-detector")).await;
    let model = json!({
        "apiVersion": "edgeplane.io/v1alpha1", "kind": "Model",
        "metadata": {"name": "temperature", "namespace": NS},
        "spec": {"version": "1.0.0", "format": "zscore-logistic/v1",
                 "parameters": {"mean": [20.0, 0.0], "stddev": [2.0, 1.0], "weights": [1.5, 0.0], "bias": [-6.0]}}
    });
    create_resource(&api, NS, "models", &model).await;
    // The filter drops sensor garbage (outside -50..150) that the detector would flag; the
    // detector flags what is 4 standard deviations from 20 (below 12 or above 28).
    let filter_outputs = json!([{"name": "in-range", "topic": "line-a/clean"}, {"name": "out-of-range", "sink": {"type": "log"}}]);
    create_resource(
        &api,
        NS,
        "workloads",
        &workload(
            "sanity",
            "threshold-filter@1.0.0",
            &["line-a/temperature"],
            filter_outputs,
            json!({"min": -50, "max": 150, "forwardInRange": true}),
        ),
    )
    .await;
    let mut detector = workload(
        "detector",
        "anomaly-detector@1.0.0",
        &["line-a/clean"],
        json!([{"name": "alerts", "sink": {"type": "cloud"}}]),
        json!({"threshold": 0.5}),
    );
    detector["spec"]["modelRef"] = json!("temperature");
    create_resource(&api, NS, "workloads", &detector).await;

    let broker_addr = broker.addr.to_string();
    let edge =
        EdgeRuntime::start("line-a-edge", &servers, dir.path().join("edge"), &["--label", "line=a", "--mqtt-broker", &broker_addr]).await;
    running(&edge, 2).await;
    subscribed(&edge, &["line-a/temperature", "line-a/clean"]).await;

    // 300 readings, one MQTT message each: normal ones, 5 anomalies, 3 garbage values.
    let mut lines = String::new();
    let mut expected_alerts = Vec::new();
    for i in 0..300u64 {
        let value = match i {
            50 | 100 | 150 | 200 | 250 => {
                expected_alerts.push(1_000 + i);
                35.0
            }
            75 | 175 | 275 => -999.0,
            _ => 20.0 + (i % 3) as f64 * 0.1,
        };
        lines.push_str(&json!({"ts": 1_000 + i, "device": "press-1", "metric": "temperature", "value": value}).to_string());
        lines.push('\n');
    }
    broker.publish_lines("line-a/temperature", &lines);

    let records = eventually(
        "5 alerts in the cloud sink",
        Duration::from_secs(30),
        async || {
            let records = cloud_records(&servers, NS, "detector").await?;
            (cloud_readings(&records).len() >= expected_alerts.len()).then_some(records)
        },
        || format!("edge log:\n{}", edge.log_tail()),
    )
    .await;
    let alerts = cloud_readings(&records);
    assert_eq!(
        alerts.iter().map(|a| a.ts).collect::<Vec<_>>(),
        expected_alerts,
        "alerts for exactly the anomalies, not for the filtered garbage"
    );
    assert!(alerts.iter().all(|a| a.metric == "temperature.anomaly" && a.value >= 0.5), "{alerts:?}");
    let s = edge.stats().await;
    assert_eq!(s["node"]["readingsIn"], 300, "every message was ingested once: {s}");
    assert_eq!(s["workloads"]["factory/detector-0"]["readingsIn"], 297, "the detector saw the 297 sane readings: {s}");

    // The same through edgectl.
    let output = edgeplane_tests::edgectl(&servers[..1])
        .args(["data", "query", "-n", NS, "--workload", "detector", "-o", "json"])
        .output()
        .expect("edgectl");
    assert!(output.status.success(), "edgectl data query: {}", String::from_utf8_lossy(&output.stderr));
    let page: Value = serde_json::from_slice(&output.stdout).expect("edgectl prints JSON");
    let via_edgectl = cloud_readings(page["records"].as_array().expect("records"));
    assert_eq!(via_edgectl, alerts);
}

/// The broker keeps a persistent session's QoS 1 messages while its edge runtime is down; when
/// the edge comes back (with the cloud reachable or not) it resumes its saved assignments
/// before it takes them, so none is dropped for want of a route.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_messages_queued_while_the_edge_was_down_are_processed_after_its_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cluster = Cluster::start(ClusterSpec { subnet: 57, ..Default::default() }).await;
    let broker = Mosquitto::start(std::net::Ipv4Addr::new(127, 57, 0, 10));
    let leader = cluster.wait_for_leader(Duration::from_secs(10)).await;
    let api = cluster.api(leader);
    let servers: Vec<SocketAddr> = cluster.running().iter().map(|&id| cluster.api_addr(id)).collect();
    create_pass_through(&api).await;

    let broker_addr = broker.addr.to_string();
    let mut edge =
        EdgeRuntime::start("line-a-edge", &servers, dir.path().join("edge"), &["--label", "line=a", "--mqtt-broker", &broker_addr]).await;
    running(&edge, 1).await;
    subscribed(&edge, &["line-a/temperature"]).await;
    let lines = |first: u64| {
        (first..first + 100)
            .map(|ts| format!("{}\n", json!({"ts": ts, "device": "press-1", "metric": "temperature", "value": 20.5})))
            .collect::<String>()
    };
    broker.publish_lines("line-a/temperature", &lines(1_000));
    let in_cloud = async |count: usize, edge: &EdgeRuntime| {
        eventually(
            &format!("{count} readings in the cloud sink"),
            Duration::from_secs(30),
            async || {
                let readings = cloud_readings(&cloud_records(&servers, NS, "pass").await?);
                (readings.len() >= count).then_some(readings)
            },
            || format!("edge log:\n{}", edge.log_tail()),
        )
        .await
    };
    in_cloud(100, &edge).await;

    edge.kill();
    broker.publish_lines("line-a/temperature", &lines(2_000));
    edge.start_again();
    let readings = in_cloud(200, &edge).await;
    let timestamps: Vec<u64> = readings.iter().map(|r| r.ts).collect();
    let expected: Vec<u64> = (1_000..1_100).chain(2_000..2_100).collect();
    assert_eq!(
        timestamps,
        expected,
        "every message published while the edge was down arrives once, in order\nedge log:\n{}",
        edge.log_tail()
    );
    assert!(!edge.log_tail().contains("no workload reads the topic"), "nothing was dropped for want of a route:\n{}", edge.log_tail());
}

/// The edge's doors, tried with what real clients send by mistake, and MQTT with one topic
/// whose workload cannot take data: the readings of the other topics flow on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_ingest_is_refused_clearly_and_a_stuck_topic_does_not_hold_up_the_others() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cluster = Cluster::start(ClusterSpec { subnet: 64, ..Default::default() }).await;
    let broker = Mosquitto::start(std::net::Ipv4Addr::new(127, 64, 0, 10));
    let leader = cluster.wait_for_leader(Duration::from_secs(10)).await;
    let api = cluster.api(leader);
    let servers: Vec<SocketAddr> = cluster.running().iter().map(|&id| cluster.api_addr(id)).collect();
    create_pass_through(&api).await;
    // A module that refuses every configuration: its instance is Failed for good.
    let refuses = r#"(module
        (memory (export "memory") 1)
        (func (export "ep_abi_version") (result i32) i32.const 1)
        (func (export "ep_alloc") (param i32) (result i32) i32.const 1024)
        (func (export "ep_configure") (param i32 i32) (result i32) i32.const 1)
        (func (export "ep_process") (param i32 i32) (result i32) i32.const 0))"#;
    push_module(&api, NS, "refuses", wat::parse_str(refuses).expect("valid WAT")).await;
    create_resource(
        &api,
        NS,
        "workloads",
        &workload("stuck", "refuses@1.0.0", &["line-a/stuck"], json!([{"name": "out", "sink": {"type": "cloud"}}]), json!({})),
    )
    .await;

    let broker_addr = broker.addr.to_string();
    // A small in-flight budget, so that one MQTT message can be larger than the node ever holds.
    let edge = EdgeRuntime::start(
        "line-a-edge",
        &servers,
        dir.path().join("edge"),
        &["--label", "line=a", "--mqtt-broker", &broker_addr, "--max-inflight-readings", "400"],
    )
    .await;
    eventually("both instances", Duration::from_secs(40), async || (edge.instances().await.len() == 2).then_some(()), || edge.log_tail())
        .await;
    subscribed(&edge, &["line-a/stuck", "line-a/temperature"]).await;

    // HTTP ingest: every refusal is JSON, says what is wrong, and counts right.
    let http = edge.http().await;
    let post = async |content_type: Option<&str>, body: Vec<u8>| {
        let mut request = http.client.post(http.url("/v1/ingest/line-a/temperature")).body(body);
        if let Some(t) = content_type {
            request = request.header("content-type", t);
        }
        let response = request.send().await.expect("ingest answers");
        let code = response.status().as_u16();
        (code, response.json::<Value>().await.unwrap_or(Value::Null))
    };
    let nan =
        edgeplane_api::data::encode_batch(&[Reading { ts: 1, device: "press-1".into(), metric: "temperature".into(), value: f64::NAN }]);
    let (code, answer) = post(Some("application/vnd.edgeplane.batch"), nan).await;
    assert!(code == 400 && answer["message"].as_str().is_some_and(|m| m.contains("finite")), "NaN: {code} {answer}");
    let (code, answer) = post(None, br#"[{"ts":1,"device":"d","metric":"m","value":1}]"#.to_vec()).await;
    assert!(code == 415 && answer["message"].as_str().is_some_and(|m| m.contains("Content-Type")), "no content type: {code} {answer}");
    let (code, answer) = post(Some("application/json"), vec![b' '; 17 << 20]).await;
    assert_eq!((code, answer["code"].clone()), (413, json!(413)), "17 MiB: {answer}");
    assert_eq!(edge.stats().await["node"]["readingsRefused"], 0, "refusals at the door are not backpressure");

    // MQTT: the stuck topic first, then text that is not JSON, then readings that must arrive:
    // 50 messages of one reading, and one message of 1,000, which is split, not dropped.
    broker.publish_lines(
        "line-a/stuck",
        &(0..10).map(|ts| format!("{}\n", json!({"ts": ts, "device": "d", "metric": "m", "value": 1.0}))).collect::<String>(),
    );
    broker.publish_lines("line-a/temperature", "hello world\n");
    let lines: String =
        (1_000..1_050).map(|ts| format!("{}\n", json!({"ts": ts, "device": "press-1", "metric": "temperature", "value": 20.5}))).collect();
    broker.publish_lines("line-a/temperature", &lines);
    let large: Vec<Value> =
        (2_000..3_000).map(|ts| json!({"ts": ts, "device": "press-1", "metric": "temperature", "value": 20.5})).collect();
    broker.publish_lines("line-a/temperature", &format!("{}\n", Value::Array(large)));
    let arrived = eventually(
        "the other topic's readings in the cloud",
        Duration::from_secs(30),
        async || {
            let readings = cloud_readings(&cloud_records(&servers, NS, "pass").await?);
            (readings.len() >= 1_050).then_some(readings)
        },
        || format!("edge log:\n{}", edge.log_tail()),
    )
    .await;
    assert_eq!(arrived.iter().map(|r| r.ts).collect::<Vec<_>>(), (1_000..1_050).chain(2_000..3_000).collect::<Vec<_>>());
    let metrics = edge.metrics().await;
    assert!(metrics.lines().any(|l| l == "edgeplane_mqtt_malformed_messages_total 1"), "the text message is counted:\n{metrics}");
    // Once everything is delivered, nothing is pending: no records, and no bytes either.
    eventually(
        "an empty outbox",
        Duration::from_secs(20),
        async || {
            let stats = edge.stats().await;
            (stats["outbox"]["pendingRecords"] == 0).then_some(stats)
        },
        || edge.log_tail(),
    )
    .await;
    assert_eq!(edge.stats().await["outbox"]["pendingBytes"], 0, "no pending bytes without pending records");
}
