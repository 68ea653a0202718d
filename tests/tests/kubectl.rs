//! The real kubectl (the one on the machine) against a 3-orchestrator cluster, through a
//! kubeconfig `edgectl config kubeconfig` wrote: discovery, `api-resources`, `get` in its forms
//! (server-side tables with edgectl's columns, `-w` across a leader SIGKILL), `apply`,
//! `patch`, `edit`, `explain`, `describe`, `get events`, `delete`, `version`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::process::Stdio;
use std::time::Duration;

use edgeplane_tests::{create_resource, edgectl, eventually, find_program, Cluster, ClusterSpec};
use serde_json::{json, Value};

const NS: &str = "plant";

fn model(name: &str, labels: Value) -> Value {
    json!({"apiVersion": "edgeplane.io/v1alpha1", "kind": "Model",
           "metadata": {"name": name, "namespace": NS, "labels": labels},
           "spec": {"version": "1.0.0", "format": "bench/v1", "parameters": {"w": [0.5]}}})
}

fn kubectl_command(kubeconfig: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(find_program("kubectl").expect("kubectl is installed (scripts/test.sh checks)"));
    command.arg("--kubeconfig").arg(kubeconfig).args(["--request-timeout", "20s"]).args(args);
    // kubectl caches discovery and OpenAPI under ~/.kube/cache: each test run reads its own.
    command.env("KUBECACHEDIR", kubeconfig.with_file_name("kube-cache"));
    command
}

/// kubectl with `kubeconfig`; its stdout, or a failure naming what it said.
fn kubectl(kubeconfig: &Path, args: &[&str]) -> String {
    let out = kubectl_command(kubeconfig, args).output().expect("kubectl runs");
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "kubectl {args:?} failed:\n{stderr}\n{stdout}");
    stdout.into_owned()
}

/// kubectl that must fail; what it said on stderr.
fn kubectl_refused(kubeconfig: &Path, args: &[&str]) -> String {
    let out = kubectl_command(kubeconfig, args).output().expect("kubectl runs");
    assert!(!out.status.success(), "kubectl {args:?} succeeded: {}", String::from_utf8_lossy(&out.stdout));
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn model_yaml(name: &str, version: &str, extra_spec: &str) -> String {
    format!(
        "apiVersion: edgeplane.io/v1alpha1\nkind: Model\nmetadata:\n  name: {name}\n  namespace: {NS}\n  labels: {{line: a}}\n\
         spec:\n  version: \"{version}\"\n  format: bench/v1\n  parameters: {{w: [0.5]}}\n{extra_spec}"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_finds_lists_applies_edits_watches_and_deletes_edgeplane_resources() {
    let mut cluster = Cluster::start(ClusterSpec { subnet: 85, ..Default::default() }).await;
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
    // `auth can-i` sends its SelfSubjectAccessReview as protobuf, which the orchestrators do
    // not read (docs/kubectl.md): refused with a clear 415, not misread.
    let refused = kubectl_refused(&kubeconfig, &["auth", "can-i", "delete", "assignments.edgeplane.io", "-A"]);
    assert!(refused.contains("read as application/json"), "{refused}");

    // Server-side tables: the columns edgectl shows, and kubectl's own extras on top.
    let table = kubectl(&kubeconfig, &["get", "models", "-n", NS]);
    let header: Vec<&str> = table.lines().next().unwrap_or_default().split_whitespace().collect();
    assert_eq!(header, ["NAME", "VERSION", "FORMAT", "PARAMETERS"], "{table}");
    assert!(table.lines().any(|l| l.split_whitespace().collect::<Vec<_>>() == ["vibration", "1.0.0", "bench/v1", "1"]), "{table}");
    assert!(table.contains("thermal"), "{table}");
    let shown = kubectl(&kubeconfig, &["get", "models", "-n", NS, "--show-labels", "-l", "line=b"]);
    assert!(shown.lines().nth(1).is_some_and(|l| l.starts_with("thermal") && l.ends_with("line=b")), "{shown}");
    let one = kubectl(&kubeconfig, &["get", "model", "vibration", "-n", NS, "-o", "wide"]);
    assert_eq!(one.lines().count(), 2, "{one}");
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

    // apply: create, configure, unchanged, with the last-applied annotation kubectl diffs against.
    let manifest = dir.path().join("acoustic.yaml");
    std::fs::write(&manifest, model_yaml("acoustic", "1.0.0", "")).expect("write");
    let path = manifest.to_str().expect("utf-8");
    assert!(kubectl(&kubeconfig, &["apply", "-f", path]).contains("model.edgeplane.io/acoustic created"));
    std::fs::write(&manifest, model_yaml("acoustic", "1.1.0", "")).expect("write");
    assert!(kubectl(&kubeconfig, &["apply", "-f", path]).contains("model.edgeplane.io/acoustic configured"));
    assert!(kubectl(&kubeconfig, &["apply", "-f", path]).contains("model.edgeplane.io/acoustic unchanged"));
    let stored = api.get(&format!("/apis/edgeplane.io/v1alpha1/namespaces/{NS}/models/acoustic")).await.expect("get");
    assert_eq!(stored.body["spec"]["version"], "1.1.0", "{}", stored.body);
    let last_applied =
        stored.body["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"].as_str().unwrap_or_default();
    assert!(last_applied.contains("\"1.1.0\""), "{}", stored.body);
    // The server validates strictly; kubectl reports its answer.
    std::fs::write(&manifest, model_yaml("acoustic", "1.2.0", "  bogus: 1\n")).expect("write");
    let refused = kubectl_refused(&kubeconfig, &["apply", "-f", path]);
    assert!(refused.contains("spec.bogus") && refused.contains("unknown field"), "{refused}");
    let refused = kubectl_refused(&kubeconfig, &["apply", "-f", path, "--validate=false"]);
    assert!(refused.contains("fieldValidation") && refused.contains("strictly"), "{refused}");

    // patch and edit.
    let patched = kubectl(
        &kubeconfig,
        &["patch", "model", "acoustic", "-n", NS, "--type", "merge", "-p", r#"{"metadata":{"labels":{"tier":"gold"}}}"#],
    );
    assert!(patched.contains("patched"), "{patched}");
    let editor = dir.path().join("editor.sh");
    std::fs::write(&editor, "#!/bin/sh\nsed -i 's/tier: gold/tier: silver/' \"$1\"\n").expect("write");
    std::fs::set_permissions(&editor, std::os::unix::fs::PermissionsExt::from_mode(0o755)).expect("chmod");
    let edited =
        kubectl_command(&kubeconfig, &["edit", "model", "acoustic", "-n", NS]).env("KUBE_EDITOR", &editor).output().expect("kubectl edit");
    assert!(edited.status.success() && String::from_utf8_lossy(&edited.stdout).contains("edited"), "{edited:?}");
    let labels = kubectl(&kubeconfig, &["get", "model", "acoustic", "-n", NS, "-o", "jsonpath={.metadata.labels}"]);
    assert_eq!(serde_json::from_str::<Value>(&labels).expect("JSON"), json!({"line": "a", "tier": "silver"}));
    let json_patch = r#"[{"op":"test","path":"/spec/version","value":"1.1.0"},{"op":"replace","path":"/spec/version","value":"1.3.0"}]"#;
    assert!(kubectl(&kubeconfig, &["patch", "model", "acoustic", "-n", NS, "--type", "json", "-p", json_patch]).contains("patched"));
    let failed_test = kubectl_refused(&kubeconfig, &["patch", "model", "acoustic", "-n", NS, "--type", "json", "-p", json_patch]);
    assert!(failed_test.contains("does not apply"), "a failed test op refuses the whole patch: {failed_test}");
    let strategic = kubectl_refused(&kubeconfig, &["patch", "model", "acoustic", "-n", NS, "-p", r#"{"spec":{"version":"9"}}"#]);
    assert!(strategic.contains("--type merge"), "{strategic}");
    // wait and --field-selector select on metadata.name.
    let waited = kubectl(&kubeconfig, &["wait", "--for=jsonpath={.spec.version}=1.3.0", "model/acoustic", "-n", NS, "--timeout=20s"]);
    assert!(waited.contains("condition met"), "{waited}");
    let selected = kubectl(&kubeconfig, &["get", "models", "-n", NS, "--field-selector", "metadata.name!=acoustic", "-o", "name"]);
    assert_eq!(selected.trim(), "model.edgeplane.io/vibration");

    // explain, from the OpenAPI v3 documents; describe.
    let explained = kubectl(&kubeconfig, &["explain", "workloads.spec"]);
    for field in ["module", "replicas", "inputs", "outputs"] {
        assert!(explained.lines().any(|l| l.trim_start().starts_with(&format!("{field}\t"))), "{field} missing:\n{explained}");
    }
    let explained = kubectl(&kubeconfig, &["explain", "models"]);
    assert!(explained.contains("apiVersion\t<string> -required-") && !explained.contains("Auto-generated"), "{explained}");
    let described = kubectl(&kubeconfig, &["describe", "model", "acoustic", "-n", NS]);
    for line in ["Name:         acoustic", "Namespace:    plant", "tier=silver", "Version:  1.3.0"] {
        assert!(described.contains(line), "{line:?} missing:\n{described}");
    }

    // Events: a Workload no node can take (there are none) is reported, in kubectl's Event
    // columns, in describe, and in edgectl describe.
    let unplaceable = json!({
        "apiVersion": "edgeplane.io/v1alpha1", "kind": "Workload",
        "metadata": {"name": "gpu-filter", "namespace": NS},
        "spec": {"module": format!("sha256:{}", "0".repeat(64)), "placement": {"requiredCapabilities": ["accel.gpu"]},
                 "inputs": ["a/b"], "outputs": [{"name": "out", "sink": {"type": "log"}}]}
    });
    // An Events watch streams Events only, though the change that caused one (the Workload's
    // create) passes through the same history.
    let trust = edgeplane_tests::trust_for(servers[0]);
    let http = reqwest::Client::builder().use_preconfigured_tls(trust.admin_tls()).build().expect("an HTTPS client");
    let mut watch =
        http.get(format!("https://{}/api/v1/namespaces/{NS}/events?watch=true", servers[0])).send().await.expect("an Events watch");
    assert_eq!(watch.status(), 200);
    create_resource(&api, NS, "workloads", &unplaceable).await;
    let mut streamed = String::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !streamed.contains("\"FailedScheduling\"") {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let chunk = tokio::time::timeout(left, watch.chunk()).await;
        let Ok(Ok(Some(chunk))) = chunk else { panic!("the Events watch ended or stalled before FailedScheduling:\n{streamed}") };
        streamed.push_str(&String::from_utf8_lossy(&chunk));
    }
    for line in streamed.lines().filter(|l| !l.trim().is_empty()) {
        let event: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        if event["type"] == "BOOKMARK" {
            continue;
        }
        assert!(
            event["object"]["kind"] == "Event" && event["object"]["involvedObject"]["name"].is_string(),
            "the Events watch streamed something else: {line}"
        );
    }
    drop(watch);
    let listed = eventually(
        "a FailedScheduling event",
        Duration::from_secs(20),
        async || {
            let listed = kubectl(&kubeconfig, &["get", "events", "-n", NS]);
            listed.contains("FailedScheduling").then_some(listed)
        },
        || cluster.all_logs(),
    )
    .await;
    let header: Vec<&str> = listed.lines().next().unwrap_or_default().split("  ").map(str::trim).filter(|c| !c.is_empty()).collect();
    assert_eq!(header, ["LAST SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"], "{listed}");
    assert!(listed.lines().any(|l| l.contains("Warning") && l.contains("workload/gpu-filter") && l.contains("0/0 nodes fit")), "{listed}");
    let described = kubectl(&kubeconfig, &["describe", "workload", "gpu-filter", "-n", NS]);
    let events = described.split("Events:").nth(1).unwrap_or_default();
    assert!(events.contains("FailedScheduling") && events.contains("edgeplane-scheduler"), "{described}");
    let as_stored: Value =
        serde_json::from_str(&kubectl(&kubeconfig, &["get", "events.events.k8s.io", "-n", NS, "-o", "json"])).expect("JSON");
    assert!(
        as_stored["items"]
            .as_array()
            .expect("items")
            .iter()
            .any(|e| e["regarding"]["name"] == "gpu-filter" && e["note"] == "0/0 nodes fit"),
        "{as_stored}"
    );
    let out = edgectl(&servers).args(["describe", "workload", "gpu-filter", "-n", NS]).output().expect("edgectl describe");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.split("Events:").nth(1).is_some_and(|e| e.contains("Warning") && e.contains("FailedScheduling")), "{text}");

    let versions: Value = serde_json::from_str(&kubectl(&kubeconfig, &["version", "-o", "json"])).expect("JSON");
    assert_eq!(versions["serverVersion"]["gitVersion"], format!("v{}", env!("CARGO_PKG_VERSION")), "{versions}");

    // The kubeconfig's other contexts name the other orchestrators.
    let contexts = kubectl(&kubeconfig, &["config", "get-contexts", "-o", "name"]);
    assert_eq!(contexts.lines().count(), 3, "{contexts}");

    // get -w on a follower goes on through the leader's SIGKILL and the election after it.
    let leader = cluster.wait_for_leader(Duration::from_secs(10)).await;
    let follower = (1..=3).find(|id| *id != leader).expect("a follower");
    let context = if follower == 1 { "edgeplane".to_owned() } else { format!("edgeplane-{follower}") };
    let watched = dir.path().join("watch.out");
    let mut watch = kubectl_command(&kubeconfig, &["--context", &context, "get", "models", "-n", NS, "-w", "--output-watch-events"])
        .stdout(std::fs::File::create(&watched).expect("watch output"))
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl get -w");
    let seen = |name: &str| {
        let name = name.to_owned();
        let watched = watched.clone();
        move || std::fs::read_to_string(&watched).unwrap_or_default().lines().any(|l| l.split_whitespace().nth(1) == Some(name.as_str()))
    };
    eventually(
        "the watch to list what exists",
        Duration::from_secs(20),
        async || seen("acoustic")().then_some(()),
        || std::fs::read_to_string(&watched).unwrap_or_default(),
    )
    .await;
    create_resource(&api, NS, "models", &model("before-kill", json!({"line": "c"}))).await;
    eventually(
        "the watch to see a new model",
        Duration::from_secs(20),
        async || seen("before-kill")().then_some(()),
        || std::fs::read_to_string(&watched).unwrap_or_default(),
    )
    .await;
    cluster.kill(leader);
    let survivors: Vec<u64> = (1..=3).filter(|id| *id != leader).collect();
    let new_leader = cluster.wait_for_leader_among(&survivors, Duration::from_secs(20)).await;
    create_resource(&cluster.api(new_leader), NS, "models", &model("after-kill", json!({"line": "c"}))).await;
    eventually(
        "the same watch to see a model created after the election",
        Duration::from_secs(20),
        async || seen("after-kill")().then_some(()),
        || std::fs::read_to_string(&watched).unwrap_or_default(),
    )
    .await;
    assert!(watch.try_wait().expect("wait").is_none(), "kubectl get -w ended: {:?}", watch.wait_with_output());
    let _ = watch.kill();
    let events = std::fs::read_to_string(&watched).expect("watch output");
    assert!(events.lines().any(|l| l.starts_with("ADDED") && l.contains("after-kill")), "{events}");
}
