//! edgectl against real orchestrators: failover between addresses and exit codes.

use std::net::Ipv4Addr;
use std::process::{Command, Output};
use std::time::Duration;

use edgeplane_tests::{bin_path, free_port, Cluster, ClusterSpec};

fn edgectl(servers: &str, args: &[&str]) -> Output {
    Command::new(bin_path("edgectl"))
        .args(["--server", servers, "--timeout", "5"])
        .args(args)
        .env_remove("EDGEPLANE_SERVERS")
        .output()
        .expect("run edgectl")
}

fn text(o: &Output) -> String {
    format!("exit {:?}\nstdout:\n{}\nstderr:\n{}", o.status.code(), String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edgectl_fails_over_past_a_dead_orchestrator_and_reports_with_exit_codes() {
    let mut cluster = Cluster::start(ClusterSpec { subnet: 21, ..Default::default() }).await;
    let leader = cluster.wait_for_leader(Duration::from_secs(10)).await;
    // The first address is dead (the killed leader), so every command must fail over.
    cluster.kill(leader);
    let live: Vec<u64> = cluster.running();
    cluster.wait_for_leader_among(&live, Duration::from_secs(10)).await;
    let mut addrs = vec![cluster.api_addr(leader).to_string()];
    addrs.extend(live.iter().map(|&id| cluster.api_addr(id).to_string()));
    let servers = addrs.join(",");

    let put = edgectl(&servers, &["store", "put", "sensor", "line-a", "--value", r#"{"celsius": 21.5}"#]);
    assert_eq!(put.status.code(), Some(0), "{}", text(&put));
    assert!(String::from_utf8_lossy(&put.stdout).contains("sensor/line-a created"), "{}", text(&put));

    let get = edgectl(&servers, &["-o", "json", "store", "get", "sensor", "line-a"]);
    assert_eq!(get.status.code(), Some(0), "{}", text(&get));
    let object: serde_json::Value = serde_json::from_slice(&get.stdout).expect("json output");
    assert_eq!(object["value"]["celsius"], 21.5);

    // Compare-and-swap with a stale version: refused by the orchestrator -> exit 1.
    let stale = edgectl(&servers, &["store", "put", "sensor", "line-a", "--value", "1", "--if-version", "1"]);
    assert_eq!(stale.status.code(), Some(1), "{}", text(&stale));
    assert!(String::from_utf8_lossy(&stale.stderr).contains("Conflict"), "{}", text(&stale));

    let missing = edgectl(&servers, &["store", "get", "sensor", "nope"]);
    assert_eq!(missing.status.code(), Some(1), "{}", text(&missing));

    let status = edgectl(&servers, &["cluster", "status"]);
    assert_eq!(status.status.code(), Some(0), "{}", text(&status));
    let out = String::from_utf8_lossy(&status.stdout);
    assert!(out.contains("unreachable") && out.contains("leader"), "{}", text(&status));

    // Nothing reachable at all -> exit 3.
    let nowhere = format!("127.0.0.1:{}", free_port(Ipv4Addr::LOCALHOST));
    let down = edgectl(&nowhere, &["store", "list", "sensor"]);
    assert_eq!(down.status.code(), Some(3), "{}", text(&down));

    // Bad usage -> exit 2.
    let usage = edgectl(&servers, &["store", "put", "sensor", "x", "--value", "{not json"]);
    assert_eq!(usage.status.code(), Some(2), "{}", text(&usage));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edgectl_applies_gets_and_deletes_resources_like_kubectl() {
    let cluster = Cluster::start(ClusterSpec { subnet: 22, ..Default::default() }).await;
    cluster.wait_for_leader(Duration::from_secs(10)).await;
    let servers: Vec<String> = cluster.running().iter().map(|&id| cluster.api_addr(id).to_string()).collect();
    let servers = servers.join(",");
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let examples = root.join("manifests/factory");
    let examples = examples.to_str().expect("utf-8 path");

    let first = edgectl(&servers, &["apply", "-f", examples]);
    assert_eq!(first.status.code(), Some(0), "{}", text(&first));
    let out = String::from_utf8_lossy(&first.stdout).to_string();
    assert_eq!(out.matches(" created").count(), 7, "{}", text(&first));
    assert!(out.contains("workload.edgeplane.io/line-a-temperature-filter created"), "{out}");

    let again = edgectl(&servers, &["apply", "-f", examples]);
    let out = String::from_utf8_lossy(&again.stdout).to_string();
    assert_eq!(out.matches(" unchanged").count(), 7, "re-applying changes nothing: {}", text(&again));

    // A changed copy is configured; the rest stays unchanged.
    let dir = tempfile::tempdir().expect("tempdir");
    let changed = std::fs::read_to_string(root.join("manifests/factory/vibration.yaml")).expect("read").replace("replicas: 2", "replicas: 4");
    std::fs::write(dir.path().join("vibration.yaml"), changed).expect("write");
    let configured = edgectl(&servers, &["apply", "-f", dir.path().to_str().expect("utf-8")]);
    let out = String::from_utf8_lossy(&configured.stdout).to_string();
    assert!(out.contains("workload.edgeplane.io/vibration-aggregates configured"), "{}", text(&configured));
    assert!(out.contains("model.edgeplane.io/vibration-detector unchanged"), "{}", text(&configured));

    let json_out = edgectl(&servers, &["-o", "json", "get", "wl", "vibration-aggregates", "-n", "factory"]);
    let w: serde_json::Value = serde_json::from_slice(&json_out.stdout).expect("json");
    assert_eq!((w["spec"]["replicas"].as_i64(), w["metadata"]["generation"].as_i64()), (Some(4), Some(2)));

    let nodes = edgectl(&servers, &["get", "nodes", "-l", "line"]);
    let table = String::from_utf8_lossy(&nodes.stdout).to_string();
    assert!(table.starts_with("NAME") && table.contains("line-a-edge") && !table.contains("cloud-1"), "{}", text(&nodes));

    // An invalid manifest beside valid ones: nothing is applied, every problem is named.
    std::fs::write(dir.path().join("bad.yaml"), "apiVersion: edgeplane.io/v1alpha1\nkind: Workload\nmetadata: { name: bad, namespace: factory }\nspec: { module: x@1.0.0, replicas: -1 }\n").expect("write");
    std::fs::write(dir.path().join("new.yaml"), "apiVersion: edgeplane.io/v1alpha1\nkind: Model\nmetadata: { name: fresh, namespace: factory }\nspec: { version: 1.0.0, format: f/v1, parameters: { w: [1.0] } }\n").expect("write");
    let refused = edgectl(&servers, &["apply", "-f", dir.path().to_str().expect("utf-8")]);
    assert_eq!(refused.status.code(), Some(1), "{}", text(&refused));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("spec.replicas: must be >= 0, got -1"), "{}", text(&refused));
    let fresh = edgectl(&servers, &["get", "model", "fresh", "-n", "factory"]);
    assert_eq!(fresh.status.code(), Some(1), "the valid document must not have been applied: {}", text(&fresh));

    let deleted = edgectl(&servers, &["delete", "workload", "line-a-temperature-filter", "-n", "factory"]);
    assert_eq!(deleted.status.code(), Some(0), "{}", text(&deleted));
    let gone = edgectl(&servers, &["get", "workload", "line-a-temperature-filter", "-n", "factory"]);
    assert_eq!(gone.status.code(), Some(1), "{}", text(&gone));

    let completions = edgectl(&servers, &["completions", "bash"]);
    assert!(String::from_utf8_lossy(&completions.stdout).contains("_edgectl"), "{}", text(&completions));
}
