//! Edge runtimes against real orchestrators: registration with a bootstrap token and a
//! persisted identity, heartbeats, and reconciling instances with the node's Assignments
//! (apply a Workload: it starts; change it: it updates; delete it: it stops), with modules
//! the orchestrators compiled for the node ahead of time.

use std::time::Duration;

use edgeplane_tests::{eventually, workload_wasm, Api, Cluster, ClusterSpec, EdgeRuntime};
use edgeplane_tests::{Method, Request};
use serde_json::{json, Value};

const WORKLOADS: &str = "/apis/edgeplane.io/v1alpha1/namespaces/factory/workloads";

async fn push(api: &Api, name: &str, version: &str, bytes: Vec<u8>) -> String {
    let reply = api.request(Method::POST, &format!("/v1/modules/factory/{name}/{version}"), Some(bytes)).await.expect("push");
    assert!(reply.code == 200 || reply.code == 201, "pushing {name}@{version}: {} {}", reply.code, reply.body);
    reply.body.pointer("/spec/digest").and_then(Value::as_str).expect("digest").to_owned()
}

fn workload(module: &str, config: Value) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "apiVersion": "edgeplane.io/v1alpha1",
        "kind": "Workload",
        "metadata": {"name": "temperature-filter", "namespace": "factory"},
        "spec": {
            "module": module,
            "placement": {"nodeSelector": {"line": "a"}, "requiredCapabilities": ["sensor.temperature"]},
            "inputs": ["line-a/temperature"],
            "outputs": [{"name": "out-of-range", "topic": "line-a/alerts"}, {"name": "summary", "sink": {"type": "log"}}],
            "config": config
        }
    }))
    .expect("json")
}

/// The single instance the edge reports, once it satisfies `ready`.
async fn instance(edge: &EdgeRuntime, what: &str, ready: impl Fn(&Value) -> bool) -> Value {
    eventually(
        what,
        Duration::from_secs(30),
        async || {
            let instances = edge.instances().await;
            (instances.len() == 1 && ready(&instances[0])).then(|| instances[0].clone())
        },
        || format!("edge log:\n{}", edge.log_tail()),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_runtime_registers_and_runs_updates_and_stops_what_is_assigned_to_it() {
    let mut cluster = Cluster::start(ClusterSpec { subnet: 51, ..Default::default() }).await;
    let leader = cluster.wait_for_leader(Duration::from_secs(10)).await;
    let api = cluster.api(leader);
    let servers: Vec<_> = cluster.running().iter().map(|&id| cluster.api_addr(id)).collect();
    let filter_digest = push(&api, "threshold-filter", "1.0.0", workload_wasm("threshold-filter")).await;
    let aggregator_digest = push(&api, "window-aggregator", "1.0.0", workload_wasm("window-aggregator")).await;

    let dir = tempfile::tempdir().expect("tempdir");
    let args = ["--label", "line=a", "--capabilities", "sensor.temperature,wasm.simd", "--heartbeat-ms", "200"];
    let mut edge = EdgeRuntime::start("line-a-edge", &servers, dir.path().join("edge-a"), &args).await;
    // A node that does not match the Workload: it must get nothing.
    let other = EdgeRuntime::start(
        "line-b-edge",
        &servers,
        dir.path().join("edge-b"),
        &["--label", "line=b", "--capabilities", "sensor.temperature", "--compile-locally"],
    )
    .await;

    // Registration: an EdgeNode with the runtime's labels, capabilities and uid.
    let node = eventually(
        "line-a-edge to register",
        Duration::from_secs(20),
        async || {
            let r = api.get("/apis/edgeplane.io/v1alpha1/edgenodes/line-a-edge").await.ok()?;
            (r.code == 200).then_some(r.body)
        },
        || edge.log_tail(),
    )
    .await;
    assert_eq!(node.pointer("/metadata/labels/line"), Some(&json!("a")), "{node}");
    // What it was started with, and the inference backend it has built in.
    assert_eq!(node.pointer("/spec/capabilities"), Some(&json!(["sensor.temperature", "wasm.simd", "inference.onnx.tract"])), "{node}");
    let uid = node.pointer("/metadata/annotations/edgeplane.io~1node-uid").cloned().expect("uid annotation");
    // Each runtime sends its first heartbeat as a request, which finds the leader, and the
    // rest as lines of one stream to it.
    let heartbeats = async |via: &str| api.metric(&format!("edgeplane_heartbeats_total{{via=\"{via}\"}}")).await.unwrap_or(0.0);
    eventually(
        "heartbeats on streams",
        Duration::from_secs(20),
        async || (heartbeats("stream").await >= 10.0).then_some(()),
        || edge.log_tail(),
    )
    .await;
    let requested = heartbeats("request").await;
    assert!(requested <= 4.0, "{requested} heartbeats came as requests from two runtimes that stream them\n{}", edge.log_tail());

    // Apply: the edge starts it.
    let created = api
        .request(Method::POST, WORKLOADS, Some(workload("threshold-filter@1.0.0", json!({"min": 15.0, "max": 80.0}))))
        .await
        .expect("create");
    assert_eq!(created.code, 201, "{}", created.body);
    let running = instance(&edge, "the filter to run", |i| i["phase"] == "Running").await;
    assert_eq!(running["assignment"], "factory/temperature-filter-0");
    assert_eq!(running["moduleDigest"], json!(filter_digest));
    assert_eq!(running["reconfigurations"], 0);
    // Compiled by the orchestrator it asked, for its CPU, and loaded without Cranelift.
    assert_eq!(running.pointer("/started/module"), Some(&json!("Precompiled")), "{running}\n{}", edge.log_tail());
    assert!(running.pointer("/started/micros").and_then(Value::as_u64).is_some_and(|m| m > 0), "{running}");
    let generation = running["generation"].clone();

    // Change the configuration: applied to the running instance, no restart.
    let replaced = api
        .request(
            Method::PUT,
            &format!("{WORKLOADS}/temperature-filter"),
            Some(workload("threshold-filter@1.0.0", json!({"min": 20.0, "max": 80.0}))),
        )
        .await
        .expect("replace");
    assert_eq!(replaced.code, 200, "{}", replaced.body);
    let reconfigured = instance(&edge, "the new configuration to reach the instance", |i| i["reconfigurations"] == 1).await;
    assert_eq!((reconfigured["restarts"].clone(), reconfigured["generation"].clone()), (json!(0), generation.clone()), "{reconfigured}");

    // Change the module: the instance is replaced by one running the new module.
    let replaced = api
        .request(
            Method::PUT,
            &format!("{WORKLOADS}/temperature-filter"),
            Some(workload("window-aggregator@1.0.0", json!({"windowSeconds": 10}))),
        )
        .await
        .expect("replace");
    assert_eq!(replaced.code, 200, "{}", replaced.body);
    let updated =
        instance(&edge, "the new module to run", |i| i["moduleDigest"] == json!(aggregator_digest) && i["phase"] == "Running").await;
    assert_eq!(updated["reconfigurations"], 0, "a new instance: {updated}");
    assert_eq!(updated.pointer("/started/module"), Some(&json!("Precompiled")), "{updated}");

    // A module pushed now that the orchestrators know the node's target is compiled for it by
    // every orchestrator as it applies the push, before any node asks.
    let detector_digest = push(&api, "anomaly-detector", "1.0.0", workload_wasm("anomaly-detector")).await;
    let compiled_for_target = |id: u64| {
        let dir = cluster.data_dir(id).join("native");
        let prefix = format!("{}.", detector_digest.trim_start_matches("sha256:"));
        std::fs::read_dir(&dir).into_iter().flatten().flatten().any(|f| {
            let name = f.file_name().to_string_lossy().into_owned();
            name.starts_with(&prefix) && name.ends_with(".cwasm")
        })
    };
    // The orchestrators the node asked learned its target; at least the one it asked first
    // compiles every later push at once.
    let taught = eventually(
        "an orchestrator to compile the pushed module ahead of time",
        Duration::from_secs(30),
        async || cluster.running().into_iter().find(|&id| compiled_for_target(id)),
        || cluster.all_logs(),
    )
    .await;
    // It remembers the target across a restart: the next push is compiled there too.
    cluster.restart(taught);
    let leader = cluster.wait_for_leader(Duration::from_secs(10)).await;
    let api = cluster.api(leader);
    let compressor_digest = push(&api, "ts-compressor", "1.0.0", workload_wasm("ts-compressor")).await;
    let has_compiled = |id: u64, digest: &str| {
        let prefix = format!("{}.", digest.trim_start_matches("sha256:"));
        std::fs::read_dir(cluster.data_dir(id).join("native")).into_iter().flatten().flatten().any(|f| {
            let name = f.file_name().to_string_lossy().into_owned();
            name.starts_with(&prefix) && name.ends_with(".cwasm")
        })
    };
    eventually(
        "the restarted orchestrator to compile a new push for the target it learned before",
        Duration::from_secs(30),
        async || has_compiled(taught, &compressor_digest).then_some(()),
        || {
            let files: Vec<_> = std::fs::read_dir(cluster.data_dir(taught).join("native"))
                .into_iter()
                .flatten()
                .flatten()
                .map(|f| f.file_name().to_string_lossy().into_owned())
                .collect();
            format!("orchestrator {taught} has {files:?}; its log:\n{}", cluster.log_tail(taught))
        },
    )
    .await;
    // A module deleted and collected takes its compiled forms with it.
    let deleted = api.delete("/apis/edgeplane.io/v1alpha1/namespaces/factory/modules/ts-compressor.1.0.0").await.expect("delete");
    assert_eq!(deleted.code, 200, "{}", deleted.body);
    eventually(
        "the collected module's compiled forms to be deleted",
        Duration::from_secs(40),
        async || cluster.running().into_iter().all(|id| !has_compiled(id, &compressor_digest)).then_some(()),
        || cluster.all_logs(),
    )
    .await;

    // A node started with --compile-locally never loads the orchestrators' native code.
    let mut on_b = serde_json::from_slice::<Value>(&workload("threshold-filter@1.0.0", json!({"min": 15.0, "max": 80.0}))).expect("json");
    on_b["metadata"]["name"] = json!("b-filter");
    on_b["spec"]["placement"]["nodeSelector"] = json!({"line": "b"});
    let created = api.request(Method::POST, WORKLOADS, Some(serde_json::to_vec(&on_b).expect("json"))).await.expect("create");
    assert_eq!(created.code, 201, "{}", created.body);
    let on_b = instance(&other, "line-b-edge to run its filter", |i| i["phase"] == "Running").await;
    assert_eq!(on_b.pointer("/started/module"), Some(&json!("Compiled")), "{on_b}");
    let deleted = api.delete(&format!("{WORKLOADS}/b-filter")).await.expect("delete");
    assert_eq!(deleted.code, 200, "{}", deleted.body);
    eventually(
        "line-b-edge to stop the deleted Workload's instance",
        Duration::from_secs(20),
        async || other.instances().await.is_empty().then_some(()),
        || other.log_tail(),
    )
    .await;

    // What the route refuses: every answer says why.
    let native = |digest: &str, query: &str| format!("/v1/blobs/{digest}/native?{query}");
    let triple = format!("{}-unknown-linux-gnu", std::env::consts::ARCH);
    for (query, code, why) in [
        ("features=".to_owned(), 400, "required"),
        (format!("triple={triple}&fingerprint=zz"), 400, "16 hex digits"),
        (format!("triple={triple}&features=opt_level&fingerprint=0000000000000000"), 400, "not a CPU feature"),
        ("triple=wasm32-unknown-unknown&fingerprint=0000000000000000".to_owned(), 400, "not one this build"),
        (format!("triple={triple}&fingerprint=0000000000000000&extra=1"), 400, "extra"),
        (format!("triple={triple}&fingerprint=0000000000000000"), 409, "fingerprint"),
    ] {
        let reply = api.get(&native(&filter_digest, &query)).await.expect("native");
        assert_eq!(reply.code, code, "{query}: {}", reply.body);
        assert!(reply.body.to_string().contains(why), "{query}: {} should say {why:?}", reply.body);
    }

    // The leader hears about it in the heartbeats.
    let liveness = eventually(
        "a heartbeat reporting the instance",
        Duration::from_secs(10),
        async || {
            let leader = cluster.wait_for_leader(Duration::from_secs(5)).await;
            let r = cluster.api(leader).get("/v1/nodes/line-a-edge/heartbeat").await.ok()?;
            let instances = r.body.pointer("/heartbeat/instances")?.as_array()?.clone();
            (r.code == 200 && instances.iter().any(|i| i["moduleDigest"] == json!(aggregator_digest))).then_some(r.body)
        },
        || edge.log_tail(),
    )
    .await;
    assert_eq!(liveness.pointer("/heartbeat/load/instances"), Some(&json!(1)), "{liveness}");
    let on_b = other.instances().await;
    assert!(on_b.is_empty(), "line-b-edge does not match and must run nothing: {on_b:?}");

    // A restart keeps the identity (no second EdgeNode, no conflict) and resumes the work.
    edge.restart();
    let resumed = instance(&edge, "the instance to resume after a restart", |i| i["phase"] == "Running").await;
    assert_eq!(resumed["moduleDigest"], json!(aggregator_digest));
    assert_eq!(resumed.pointer("/started/module"), Some(&json!("PrecompiledCached")), "from its own disk: {resumed}");
    let node = api.get("/apis/edgeplane.io/v1alpha1/edgenodes/line-a-edge").await.expect("get node").body;
    assert_eq!(node.pointer("/metadata/annotations/edgeplane.io~1node-uid"), Some(&uid), "the node kept its uid");

    // Another runtime claiming the name is refused, even with a valid bootstrap token.
    let csr = edgeplane_tls::KeyAndRequest::generate("line-a-edge").expect("csr").request_pem;
    let claim = json!({"name": "line-a-edge", "uid": "someone-else", "csr": csr,
                       "capacity": {"memoryMib": 64, "instanceSlots": 1, "cpuMillis": 100}});
    let token = cluster.trust.bootstrap_token().await;
    let enroll = |token: &str| Request::new(Method::POST, "/v1/nodes/enroll").json(&claim).bearer(Some(token));
    let response = cluster.api(leader).send(enroll(&token)).await.expect("enroll");
    assert_eq!(response.code, 409, "{}", response.body);
    let wrong_token = cluster.api(leader).send(enroll("ept.abcd.0123456789abcdef")).await.expect("enroll");
    assert_eq!(wrong_token.code, 401, "{}", wrong_token.body);

    // Delete: the instance stops.
    let deleted = api.delete(&format!("{WORKLOADS}/temperature-filter")).await.expect("delete");
    assert_eq!(deleted.code, 200, "{}", deleted.body);
    eventually(
        "the instance to stop",
        Duration::from_secs(20),
        async || edge.instances().await.is_empty().then_some(()),
        || edge.log_tail(),
    )
    .await;
    let assignments = api.get("/apis/edgeplane.io/v1alpha1/assignments").await.expect("list").body;
    assert_eq!(assignments["items"], json!([]), "{assignments}");
}

/// A module of about 6 MiB (a large data segment and many functions) behind a link that
/// answers at 400 KiB/s: downloading it takes about 15 s. The node must keep heartbeating all
/// the while (its Ready condition never wavers, and the leader hears heartbeats that report the
/// instance still Pending), then run the module. Before downloads and compiles left the
/// instances' table alone, heartbeats waited for the download and the node went Down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_keeps_heartbeating_while_a_large_module_downloads_slowly_and_compiles() {
    let grace = ["--node-suspect-ms", "3000", "--node-grace-ms", "6000"].map(str::to_owned).to_vec();
    let cluster = Cluster::start(ClusterSpec { subnet: 62, size: 1, extra_args: grace, ..Default::default() }).await;
    let leader = cluster.wait_for_leader(Duration::from_secs(10)).await;
    let api = cluster.api(leader);
    // On the orchestrator's own address (another port): its certificate names the address.
    let proxy = edgeplane_tests::ThrottleProxy::start(std::net::Ipv4Addr::new(127, 62, 0, 1), cluster.api_addr(leader), 400 * 1024).await;

    let functions: String = (0..500).map(|i| format!("(func $f{i} (result i32) (i32.add (i32.const {i}) (i32.const 1)))")).collect();
    let big = format!(
        r#"(module
            (memory (export "memory") 100)
            (data (i32.const 0) "{}")
            {functions}
            (func (export "ep_abi_version") (result i32) i32.const 1)
            (func (export "ep_alloc") (param i32) (result i32) i32.const 65536)
            (func (export "ep_process") (param i32 i32) (result i32) i32.const 0))"#,
        "x".repeat(6 << 20)
    );
    push(&api, "big", "1.0.0", wat::parse_str(&big).expect("valid WAT")).await;

    let dir = tempfile::tempdir().expect("tempdir");
    let edge = EdgeRuntime::start("slow-edge", &[proxy.addr], dir.path().join("slow-edge"), &["--heartbeat-ms", "500"]).await;
    let node_path = "/apis/edgeplane.io/v1alpha1/edgenodes/slow-edge";
    let ready = |node: &Value| edgeplane_tests::ready_condition(node).map(|c| c["status"].clone());
    eventually(
        "the node to be Ready",
        Duration::from_secs(30),
        async || {
            let node = api.get(node_path).await.ok()?.body;
            (ready(&node) == Some(json!("True"))).then_some(())
        },
        || edge.log_tail(),
    )
    .await;

    let workload = json!({
        "apiVersion": "edgeplane.io/v1alpha1", "kind": "Workload",
        "metadata": {"name": "big", "namespace": "factory"},
        "spec": {"module": "big@1.0.0", "inputs": ["slow/in"], "outputs": [{"name": "out", "sink": {"type": "log"}}],
                 "resources": {"memoryMib": 16, "batchTimeMs": 100}}
    });
    let created = api.request(Method::POST, WORKLOADS, Some(serde_json::to_vec(&workload).expect("json"))).await.expect("create");
    assert_eq!(created.code, 201, "{}", created.body);

    // Until the instance runs: every heartbeat the leader gets, and the node's Ready condition.
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let (mut last_age, mut heartbeats_while_pending) = (u64::MAX, 0);
    loop {
        assert!(std::time::Instant::now() < deadline, "the module never ran\n{}", edge.log_tail());
        let node = api.get(node_path).await.expect("node").body;
        assert_eq!(ready(&node), Some(json!("True")), "the node stopped being Ready while it downloaded: {node}\n{}", edge.log_tail());
        let beat = api.get("/v1/nodes/slow-edge/heartbeat").await.expect("heartbeat").body;
        let age = beat["ageMs"].as_u64().unwrap_or(u64::MAX);
        let phase = beat.pointer("/heartbeat/instances/0/phase").cloned().unwrap_or(Value::Null);
        if age < last_age && phase == json!("Pending") {
            heartbeats_while_pending += 1;
        }
        last_age = age;
        if phase == json!("Running") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        heartbeats_while_pending >= 5,
        "only {heartbeats_while_pending} heartbeats reported the module pending: the download was too quick to prove anything"
    );
}
