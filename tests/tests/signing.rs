//! Signed modules and models against real orchestrators and a real edge runtime: the registry
//! refuses what a namespace's TrustPolicy does not trust, the scheduler stops placing what a
//! removed key signed, and an edge with trust roots of its own refuses unsigned code whatever
//! the orchestrators hand it.

use std::path::Path;
use std::time::Duration;

use edgeplane_tests::{create_resource, edgectl, eventually, workload_wasm, Api, Cluster, ClusterSpec, EdgeRuntime, Method};
use edgeplane_tls::signing::{self, SigningKey};
use serde_json::{json, Value};
use sha2::Digest as _;

const SIGNED: &str = "signed";

fn repo() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}
const OPEN: &str = "open";

/// `edgectl key create NAME`: the public key it prints.
fn create_key(servers: &[std::net::SocketAddr], name: &str, dir: &Path) -> String {
    let out = edgectl(servers).args(["key", "create", name, "--dir", dir.to_str().expect("utf-8")]).output().expect("edgectl");
    assert!(out.status.success(), "key create: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("utf-8").trim().to_owned()
}

/// `edgectl module push` of a workload module as NAME@1.0.0, signed with `key` if given.
fn push(servers: &[std::net::SocketAddr], namespace: &str, module: &str, key: Option<&Path>) -> std::process::Output {
    let file = repo().join(format!("target/workloads/{module}.wasm"));
    let mut command = edgectl(servers);
    command.args(["module", "push", file.to_str().expect("utf-8"), "--name", module, "--version", "1.0.0", "-n", namespace]);
    if let Some(key) = key {
        command.args(["--sign", key.to_str().expect("utf-8")]);
    }
    command.output().expect("edgectl")
}

fn workload(namespace: &str, name: &str) -> Value {
    json!({
        "apiVersion": "edgeplane.io/v1alpha1",
        "kind": "Workload",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"module": "threshold-filter@1.0.0", "inputs": [format!("{name}/in")], "outputs": [{"name": "alerts", "sink": {"type": "log"}}], "config": {"max": 80.0}}
    })
}

fn trust_policy(keys: &[(&str, &str)]) -> Value {
    let keys: Vec<Value> = keys.iter().map(|(name, key)| json!({"name": name, "publicKey": key})).collect();
    json!({
        "apiVersion": "edgeplane.io/v1alpha1",
        "kind": "TrustPolicy",
        "metadata": {"name": "releases", "namespace": SIGNED},
        "spec": {"requireSignatures": true, "keys": keys}
    })
}

async fn workload_condition(api: &Api, namespace: &str, name: &str, contains: &str) -> String {
    eventually(
        &format!("workload {namespace}/{name} to say {contains:?}"),
        Duration::from_secs(20),
        async || {
            let reply = api.get(&format!("/apis/edgeplane.io/v1alpha1/namespaces/{namespace}/workloads/{name}")).await.ok()?;
            let text = reply.body["status"]["conditions"].to_string();
            text.contains(contains).then_some(text)
        },
        String::new,
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_trusted_signers_modules_are_pushed_placed_and_run() {
    let cluster = Cluster::start(ClusterSpec { subnet: 82, size: 1, ..Default::default() }).await;
    let leader = cluster.wait_for_leader(Duration::from_secs(10)).await;
    let api = cluster.api(leader);
    let servers = vec![cluster.api_addr(leader)];
    let dir = tempfile::tempdir().expect("tempdir");
    let release = create_key(&servers, "release", dir.path());
    let stranger = create_key(&servers, "stranger", dir.path());
    let release_key = dir.path().join("release.key");
    let stranger_key = dir.path().join("stranger.key");
    assert!(release.starts_with("ed25519:") && release != stranger, "{release} {stranger}");
    let again =
        edgectl(&servers).args(["key", "create", "release", "--dir", dir.path().to_str().expect("utf-8")]).output().expect("edgectl");
    assert!(!again.status.success(), "a key is never overwritten");

    create_resource(&api, SIGNED, "trustpolicies", &trust_policy(&[("release", &release)])).await;

    // At the door: unsigned, signed by a stranger, a signature over other bytes.
    let unsigned = push(&servers, SIGNED, "threshold-filter", None);
    let said = String::from_utf8_lossy(&unsigned.stderr);
    assert!(
        !unsigned.status.success() && said.contains("is not signed, and TrustPolicy releases in namespace signed requires signatures"),
        "{said}"
    );
    let foreign = push(&servers, SIGNED, "threshold-filter", Some(&stranger_key));
    let said = String::from_utf8_lossy(&foreign.stderr);
    assert!(!foreign.status.success() && said.contains("which no TrustPolicy in namespace signed trusts to sign modules"), "{said}");
    let key = SigningKey::from_pem(&std::fs::read_to_string(&release_key).expect("key")).expect("pem");
    let other_digest = format!("sha256:{:x}", sha2::Sha256::digest(workload_wasm("window-aggregator")));
    let over_other_bytes = key.sign(&signing::message("module", "threshold-filter", "1.0.0", &other_digest));
    let query = format!("signer={}&signature={}", urlencode(&release), urlencode(&over_other_bytes));
    let reply = api
        .request(Method::POST, &format!("/v1/modules/{SIGNED}/threshold-filter/1.0.0?{query}"), Some(workload_wasm("threshold-filter")))
        .await
        .expect("push");
    assert_eq!(reply.code, 422, "{}", reply.body);
    assert!(reply.body.to_string().contains("does not verify"), "{}", reply.body);

    let signed = push(&servers, SIGNED, "threshold-filter", Some(&release_key));
    assert!(signed.status.success(), "{}", String::from_utf8_lossy(&signed.stderr));
    let module = api.get(&format!("/apis/edgeplane.io/v1alpha1/namespaces/{SIGNED}/modules/threshold-filter.1.0.0")).await.expect("get");
    assert_eq!(module.body["spec"]["signature"]["key"], json!(release), "{}", module.body);
    // Where no policy asks for signatures, anything goes at the door.
    assert!(push(&servers, OPEN, "threshold-filter", None).status.success());

    // An edge that trusts only the release key runs what it signed ...
    let roots = dir.path().join("trusted-signers");
    std::fs::write(&roots, format!("# the release key\n{release}\n")).expect("write");
    let edge = EdgeRuntime::start(
        "signed-edge",
        &servers,
        dir.path().join("edge"),
        &["--heartbeat-ms", "200", "--trusted-signers", roots.to_str().expect("utf-8")],
    )
    .await;
    create_resource(&api, SIGNED, "workloads", &workload(SIGNED, "filter")).await;
    edge.wait_running(1, Duration::from_secs(30)).await;

    // ... and refuses what the orchestrators hand it unsigned (as a compromised control plane
    // could), saying why on the instance.
    create_resource(&api, OPEN, "workloads", &workload(OPEN, "filter")).await;
    let refused = eventually(
        "the edge to refuse the unsigned module",
        Duration::from_secs(30),
        async || edge.instances().await.into_iter().find(|i| i["assignment"].as_str().is_some_and(|a| a.starts_with(OPEN))),
        || edge.log_tail(),
    )
    .await;
    assert_eq!(refused["phase"], "Failed", "{refused}");
    assert!(
        refused["message"].as_str().is_some_and(|m| m.contains("is not signed, and this node runs only what its trusted signers signed")),
        "{refused}"
    );

    // Rotation: the policy drops the release key. What runs keeps running; nothing it signed
    // is placed anew, and the Workload says why.
    let mut rotated = trust_policy(&[("next", &stranger)]);
    let current = api.get(&format!("/apis/edgeplane.io/v1alpha1/namespaces/{SIGNED}/trustpolicies/releases")).await.expect("get");
    rotated["metadata"]["resourceVersion"] = current.body["metadata"]["resourceVersion"].clone();
    let reply = api.put(&format!("/apis/edgeplane.io/v1alpha1/namespaces/{SIGNED}/trustpolicies/releases"), &rotated).await.expect("put");
    assert_eq!(reply.code, 200, "{}", reply.body);
    create_resource(&api, SIGNED, "workloads", &workload(SIGNED, "second")).await;
    let condition = workload_condition(&api, SIGNED, "second", "which no TrustPolicy in namespace signed trusts to sign modules").await;
    assert!(condition.contains(&release), "{condition}");
    let running = edge.instances().await;
    assert!(
        running.iter().any(|i| i["assignment"] == json!(format!("{SIGNED}/filter-0")) && i["phase"] == "Running"),
        "the placed replica keeps running: {running:?}"
    );

    // Models: the same door.
    let model = repo().join("tests/models/mlp.onnx");
    let model = model.to_str().expect("utf-8");
    let unsigned =
        edgectl(&servers).args(["model", "push", model, "--name", "mlp", "--version", "1.0.0", "-n", SIGNED]).output().expect("edgectl");
    assert!(!unsigned.status.success(), "an unsigned model is refused");
    let signed = edgectl(&servers)
        .args([
            "model",
            "push",
            model,
            "--name",
            "mlp",
            "--version",
            "1.0.0",
            "-n",
            SIGNED,
            "--sign",
            stranger_key.to_str().expect("utf-8"),
        ])
        .output()
        .expect("edgectl");
    assert!(signed.status.success(), "{}", String::from_utf8_lossy(&signed.stderr));
    let pushed = api.get(&format!("/apis/edgeplane.io/v1alpha1/namespaces/{SIGNED}/models/mlp")).await.expect("get");
    assert_eq!(pushed.body["spec"]["artifact"]["signature"]["key"], json!(stranger), "{}", pushed.body);
}

fn urlencode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}
