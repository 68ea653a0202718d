//! Rollouts with real processes: a new module version rolls over the replicas, `edgectl rollout
//! undo` goes back, and a module that cannot start is rolled back automatically, which
//! `edgectl rollout status` reports (exit 1).

use std::net::SocketAddr;
use std::time::Duration;

use edgeplane_tests::{create_resource, eventually, push_module, workload_wasm, Cluster, ClusterSpec, EdgeRuntime};
use serde_json::{json, Value};

const NS: &str = "factory";
const WORKLOAD: &str = "/apis/edgeplane.io/v1alpha1/namespaces/factory/workloads/filter";

fn edgectl(servers: &[SocketAddr], args: &[&str]) -> (bool, String) {
    let output = edgeplane_tests::edgectl(servers).args(args).output().expect("edgectl");
    (output.status.success(), format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr)))
}

fn spec(module: &str) -> Value {
    json!({"module": module, "replicas": 2, "placement": {"nodeSelector": {"line": "a"}}, "inputs": ["line-a/temperature"],
           "outputs": [{"name": "out-of-range", "sink": {"type": "log"}}], "config": {"min": 10, "max": 80},
           "rollout": {"maxUnavailable": 1, "healthGateSeconds": 30, "autoRollback": true}})
}

/// Waits until both replicas run `digest`.
async fn running(edges: &[EdgeRuntime], digest: &str) {
    eventually(
        &format!("both replicas to run {digest}"),
        Duration::from_secs(40),
        async || {
            let mut instances = Vec::new();
            for e in edges {
                instances.extend(e.instances().await);
            }
            (instances.len() == 2 && instances.iter().all(|i| i["phase"] == "Running" && i["moduleDigest"] == digest)).then_some(())
        },
        || edges.iter().map(EdgeRuntime::log_tail).collect::<Vec<_>>().join("\n"),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn modules_roll_over_replicas_and_a_failing_one_is_rolled_back() {
    let cluster = Cluster::start(ClusterSpec { subnet: 56, ..Default::default() }).await;
    let leader = cluster.wait_for_leader(Duration::from_secs(10)).await;
    let api = cluster.api(leader);
    let servers: Vec<SocketAddr> = cluster.running().iter().map(|&id| cluster.api_addr(id)).collect();
    let filter = workload_wasm("threshold-filter");
    push_module(&api, NS, "threshold-filter", filter.clone()).await;
    let v1 = api.get("/apis/edgeplane.io/v1alpha1/namespaces/factory/modules/threshold-filter.1.0.0").await.expect("module").body["spec"]
        ["digest"]
        .as_str()
        .expect("digest")
        .to_owned();
    // "Version 2": the same filter pushed under another name, so that the Workload's module
    // reference changes (a rollout) while the replicas keep working; pushed with edgectl.
    let (ok, out) = {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("filter.wasm");
        std::fs::write(&path, &filter).expect("write");
        edgectl(&servers, &["module", "push", path.to_str().expect("utf8"), "--name", "filter-v2", "--version", "1.0.0", "-n", NS])
    };
    assert!(ok, "{out}");
    // A module whose configure export always refuses: its instances are Failed at once.
    let broken = wat::parse_str(
        r#"(module
            (memory (export "memory") 1)
            (func (export "ep_abi_version") (result i32) i32.const 1)
            (func (export "ep_alloc") (param i32) (result i32) i32.const 1024)
            (func (export "ep_configure") (param i32 i32) (result i32) i32.const -1)
            (func (export "ep_process") (param i32 i32) (result i32) i32.const 0))"#,
    )
    .expect("wat");
    push_module(&api, NS, "broken", broken).await;
    create_resource(&api, NS, "workloads", &json!({"apiVersion": "edgeplane.io/v1alpha1", "kind": "Workload", "metadata": {"name": "filter", "namespace": NS}, "spec": spec("threshold-filter@1.0.0")})).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut edges: Vec<EdgeRuntime> = Vec::new();
    for i in 1..=2 {
        edges.push(EdgeRuntime::start(&format!("edge-{i}"), &servers, dir.path().join(format!("e{i}")), &["--label", "line=a"]).await);
    }
    running(&edges, &v1).await;

    // A new version (same bytes, another module name and so another module reference).
    let replace = |module: &str| {
        let body = json!({"apiVersion": "edgeplane.io/v1alpha1", "kind": "Workload", "metadata": {"name": "filter", "namespace": NS}, "spec": spec(module)});
        let api = cluster.api(leader);
        async move {
            let reply = api.put(WORKLOAD, &body).await.expect("replace");
            assert_eq!(reply.code, 200, "{}", reply.body);
        }
    };
    replace("filter-v2@1.0.0").await;
    let (ok, out) = edgectl(&servers, &["rollout", "status", "filter", "-n", NS, "--wait", "60"]);
    assert!(ok && out.contains("Complete") && out.contains("2 of 2"), "{out}");
    let (ok, out) = edgectl(&servers, &["rollout", "history", "filter", "-n", NS]);
    assert!(ok && out.contains("threshold-filter@1.0.0") && out.contains("filter-v2@1.0.0"), "{out}");

    // Undo: back to version 1.
    let (ok, out) = edgectl(&servers, &["rollout", "undo", "filter", "-n", NS]);
    assert!(ok && out.contains("rolled back to threshold-filter@1.0.0"), "{out}");
    let (ok, out) = edgectl(&servers, &["rollout", "status", "filter", "-n", NS, "--wait", "60"]);
    assert!(ok && out.contains("Complete"), "{out}");

    // A module that cannot start: rolled back automatically, and said so.
    replace("broken@1.0.0").await;
    let status = eventually(
        "the broken rollout to be rolled back",
        Duration::from_secs(40),
        async || {
            let body = cluster.api(cluster.wait_for_leader(Duration::from_secs(5)).await).get(WORKLOAD).await.ok()?.body;
            (body["status"]["rollout"]["phase"] == "RolledBack").then_some(body)
        },
        || edges.iter().map(EdgeRuntime::log_tail).collect::<Vec<_>>().join("\n"),
    )
    .await;
    assert_eq!(status["spec"]["module"], "threshold-filter@1.0.0", "the spec went back: {status}");
    let message = status["status"]["rollout"]["message"].as_str().expect("message");
    assert!(message.contains("rolled back to threshold-filter@1.0.0") && message.contains("failed on revision"), "{message}");
    running(&edges, &v1).await;
    let (ok, out) = edgectl(&servers, &["rollout", "status", "filter", "-n", NS]);
    assert!(!ok && out.contains("RolledBack"), "rollout status fails after a rollback: {out}");
}
