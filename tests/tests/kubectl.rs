//! The real kubectl (the one on the machine) against a 3-orchestrator cluster, through a
//! kubeconfig `edgectl config kubeconfig` wrote: discovery, `api-resources`, `get` in its forms,
//! `delete`, `version`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use edgeplane_tests::{create_resource, edgectl, find_program, Cluster, ClusterSpec};
use serde_json::{json, Value};

const NS: &str = "plant";

fn model(name: &str, labels: Value) -> Value {
    json!({"apiVersion": "edgeplane.io/v1alpha1", "kind": "Model",
           "metadata": {"name": name, "namespace": NS, "labels": labels},
           "spec": {"version": "1.0.0", "format": "bench/v1", "parameters": {"w": [0.5]}}})
}

/// kubectl with `kubeconfig`; its stdout, or a failure naming what it said.
fn kubectl(kubeconfig: &Path, args: &[&str]) -> String {
    let out = Command::new(find_program("kubectl").expect("kubectl is installed (scripts/test.sh checks)"))
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(["--request-timeout", "20s"])
        .args(args)
        .output()
        .expect("kubectl runs");
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "kubectl {args:?} failed:\n{stderr}\n{stdout}");
    stdout.into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_finds_lists_shows_and_deletes_edgeplane_resources() {
    let cluster = Cluster::start(ClusterSpec { subnet: 85, ..Default::default() }).await;
    let leader = cluster.wait_for_leader(Duration::from_secs(10)).await;
    let api = cluster.api(leader);
    let servers: Vec<_> = (1..=3).map(|id| cluster.api_addr(id)).collect();
    create_resource(&api, NS, "models", &model("vibration", json!({"line": "a"}))).await;
    create_resource(&api, NS, "models", &model("thermal", json!({"line": "b"}))).await;

    let dir = tempfile::tempdir().expect("tempdir");
    let kubeconfig: PathBuf = dir.path().join("kubeconfig");
    let made = edgectl(&servers).args(["config", "kubeconfig"]).output().expect("edgectl config kubeconfig");
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    std::fs::write(&kubeconfig, &made.stdout).expect("write the kubeconfig");

    let resources = kubectl(&kubeconfig, &["api-resources", "--api-group", "edgeplane.io", "-o", "wide"]);
    let row = resources.lines().find(|l| l.starts_with("workloads ")).unwrap_or_else(|| panic!("no workloads row:\n{resources}"));
    for column in ["wl", "edgeplane.io/v1alpha1", "true", "Workload", "create,delete,get,list,patch,update,watch"] {
        assert!(row.split_whitespace().any(|c| c == column), "{column:?} missing from {row:?}");
    }
    let edgenodes = resources.lines().find(|l| l.starts_with("edgenodes ")).expect("edgenodes row");
    assert!(edgenodes.split_whitespace().any(|c| c == "false"), "EdgeNodes are cluster-scoped: {edgenodes}");

    let table = kubectl(&kubeconfig, &["get", "models", "-n", NS]);
    assert!(table.lines().next().is_some_and(|h| h.starts_with("NAME")), "{table}");
    assert!(table.contains("vibration") && table.contains("thermal"), "{table}");
    let by_short_name = kubectl(&kubeconfig, &["get", "edgeplane", "-n", NS, "-o", "name"]);
    assert!(by_short_name.contains("model.edgeplane.io/vibration"), "the edgeplane category lists every kind: {by_short_name}");

    let listed: Value = serde_json::from_str(&kubectl(&kubeconfig, &["get", "models", "-n", NS, "-o", "json"])).expect("JSON");
    let names: Vec<&str> = listed["items"].as_array().expect("items").iter().filter_map(|i| i["metadata"]["name"].as_str()).collect();
    assert_eq!(names, ["thermal", "vibration"], "{listed}");
    let labelled = kubectl(&kubeconfig, &["get", "models", "-n", NS, "-l", "line=a", "-o", "name"]);
    assert_eq!(labelled.trim(), "model.edgeplane.io/vibration");
    let everywhere = kubectl(&kubeconfig, &["get", "models", "-A"]);
    assert!(everywhere.lines().next().is_some_and(|h| h.starts_with("NAMESPACE")) && everywhere.contains(NS), "{everywhere}");
    let version = kubectl(&kubeconfig, &["get", "model", "vibration", "-n", NS, "-o", "jsonpath={.spec.version}"]);
    assert_eq!(version, "1.0.0");
    let yaml = kubectl(&kubeconfig, &["get", "model", "vibration", "-n", NS, "-o", "yaml"]);
    assert!(yaml.contains("kind: Model") && yaml.contains("resourceVersion:"), "{yaml}");

    let deleted = kubectl(&kubeconfig, &["delete", "model", "thermal", "-n", NS]);
    assert!(deleted.contains("deleted"), "{deleted}");
    assert_eq!(api.get(&format!("/apis/edgeplane.io/v1alpha1/namespaces/{NS}/models/thermal")).await.expect("get").code, 404);

    let versions: Value = serde_json::from_str(&kubectl(&kubeconfig, &["version", "-o", "json"])).expect("JSON");
    assert_eq!(versions["serverVersion"]["gitVersion"], format!("v{}", env!("CARGO_PKG_VERSION")), "{versions}");

    // The kubeconfig's other contexts name the other orchestrators.
    let contexts = kubectl(&kubeconfig, &["config", "get-contexts", "-o", "name"]);
    assert_eq!(contexts.lines().count(), 3, "{contexts}");
}
