//! The module registry against real orchestrators: ABI checks, content addressing,
//! immutable versions, and bytes served by every node after the leader is lost.

use std::process::{Command, Output};
use std::time::Duration;

use edgeplane_tests::{bin_path, Cluster, ClusterSpec};
use sha2::Digest as _;

const VALID: &str = r#"(module
  (import "edgeplane" "emit" (func $emit (param i32 i32 i32 i32) (result i32)))
  (import "edgeplane" "now_ms" (func $now (result i64)))
  (memory (export "memory") 1)
  (func (export "ep_abi_version") (result i32) i32.const 1)
  (func (export "ep_alloc") (param i32) (result i32) i32.const 1024)
  (func (export "ep_process") (param i32 i32) (result i32) i32.const 0)
  (func (export "ep_configure") (param i32 i32) (result i32) i32.const 0))"#;

/// Breaks the ABI four ways at once.
const BROKEN_ABI: &str = r#"(module
  (import "wasi_snapshot_preview1" "fd_write" (func (param i32 i32 i32 i32) (result i32)))
  (memory 1)
  (func (export "ep_abi_version") (result i32) i32.const 1)
  (func (export "ep_alloc") (param i64) (result i32) i32.const 0)
  (func (export "ep_process_validated") (param i32 i32)))"#;

fn wasm(text: &str) -> Vec<u8> {
    wat::parse_str(text).expect("valid WAT")
}

fn edgectl(servers: &str, args: &[&str]) -> Output {
    let first: std::net::SocketAddr = servers.split(',').next().and_then(|s| s.parse().ok()).expect("a server address");
    Command::new(bin_path("edgectl"))
        .args(["--server", servers, "--timeout", "10"])
        .args(args)
        .env_remove("EDGEPLANE_SERVERS")
        .env("EDGECTL_CONFIG", edgeplane_tests::trust_for(first).edgectl_config())
        .output()
        .expect("run edgectl")
}

fn text(o: &Output) -> String {
    format!("exit {:?}\nstdout:\n{}\nstderr:\n{}", o.status.code(), String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn modules_are_checked_stored_by_digest_immutable_and_served_by_every_node() {
    let mut cluster = Cluster::start(ClusterSpec { subnet: 34, ..Default::default() }).await;
    let leader = cluster.wait_for_leader(Duration::from_secs(10)).await;
    let servers: Vec<String> = cluster.running().iter().map(|&id| cluster.api_addr(id).to_string()).collect();
    let servers = servers.join(",");
    let dir = tempfile::tempdir().expect("tempdir");
    let write = |name: &str, bytes: &[u8]| {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).expect("write module");
        path.to_str().expect("utf-8").to_owned()
    };
    let good = wasm(VALID);
    let digest = format!("sha256:{}", sha2::Sha256::digest(&good).iter().map(|b| format!("{b:02x}")).collect::<String>());
    let good_path = write("filter.wasm", &good);
    let push = |path: &str, version: &str| {
        edgectl(&servers, &["module", "push", path, "--name", "threshold-filter", "--version", version, "-n", "factory"])
    };

    let first = push(&good_path, "1.0.0");
    assert_eq!(first.status.code(), Some(0), "{}", text(&first));
    let out = String::from_utf8_lossy(&first.stdout);
    assert!(out.contains("threshold-filter.1.0.0 pushed") && out.contains(&digest), "{}", text(&first));
    let again = push(&good_path, "1.0.0");
    assert!(String::from_utf8_lossy(&again.stdout).contains("unchanged"), "the same bytes again are unchanged: {}", text(&again));

    let other = write("other.wasm", &wasm(&VALID.replace("i32.const 1024", "i32.const 2048")));
    let clash = push(&other, "1.0.0");
    assert_eq!(clash.status.code(), Some(1), "{}", text(&clash));
    assert!(String::from_utf8_lossy(&clash.stderr).contains("versions are immutable"), "{}", text(&clash));
    let next = push(&other, "1.1.0");
    assert_eq!(next.status.code(), Some(0), "a new version with new bytes is fine: {}", text(&next));

    let broken = push(&write("broken.wasm", &wasm(BROKEN_ABI)), "2.0.0");
    assert_eq!(broken.status.code(), Some(1), "{}", text(&broken));
    let stderr = String::from_utf8_lossy(&broken.stderr);
    for expected in [
        "imports wasi_snapshot_preview1.fd_write, which the host does not offer",
        "exports no memory named `memory`",
        "`ep_alloc` has type (i64) -> (i32); ABI v1 requires (i32) -> (i32)",
        "exports no `ep_process` function",
        "`ep_process_validated` has type (i32, i32) -> (); ABI v1 requires (i32, i32) -> (i32)",
    ] {
        assert!(stderr.contains(expected), "missing {expected:?}: {}", text(&broken));
    }
    let garbage = push(&write("garbage.wasm", b"\0asm\x01\0\0\0\x05garbage"), "3.0.0");
    assert!(String::from_utf8_lossy(&garbage.stderr).contains("not a valid WebAssembly module"), "{}", text(&garbage));

    let api = cluster.api(leader);
    let huge = api.request(reqwest::Method::POST, "/v1/modules/factory/huge/1.0.0", Some(vec![0u8; 9 * 1024 * 1024])).await.expect("post");
    assert_eq!((huge.code, huge.body["reason"].as_str()), (413, Some("RequestEntityTooLarge")), "{}", huge.body);

    let listed = edgectl(&servers, &["module", "list", "-n", "factory", "-o", "wide"]);
    let table = String::from_utf8_lossy(&listed.stdout);
    assert!(
        table.contains("threshold-filter.1.0.0") && table.contains("threshold-filter.1.1.0") && table.contains(&digest),
        "{}",
        text(&listed)
    );
    assert!(!table.contains("2.0.0") && !table.contains("3.0.0"), "refused modules must not be stored: {}", text(&listed));

    // Every orchestrator holds the bytes: they survive the leader.
    cluster.kill(leader);
    for id in cluster.running() {
        let resp = cluster.api(id).raw(edgeplane_tests::Request::get(format!("/v1/blobs/{digest}"))).await.expect("get blob");
        assert_eq!(resp.status.as_u16(), 200, "node {id}");
        assert_eq!(resp.body.to_vec(), good, "node {id} serves the pushed bytes");
    }
}

/// Deleting the last Module of a digest lets the leader collect its bytes; a digest another
/// Module still names is kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blobs_nothing_refers_to_are_collected() {
    let cluster = Cluster::start(ClusterSpec { subnet: 65, size: 1, ..Default::default() }).await;
    let leader = cluster.wait_for_leader(Duration::from_secs(10)).await;
    let api = cluster.api(leader);
    let push = async |name: &str, bytes: Vec<u8>| {
        let reply =
            api.request(edgeplane_tests::Method::POST, &format!("/v1/modules/factory/{name}/1.0.0"), Some(bytes)).await.expect("push");
        assert_eq!(reply.code, 201, "{}", reply.body);
        reply.body["spec"]["digest"].as_str().expect("digest").to_owned()
    };
    let filter = push("filter", edgeplane_tests::workload_wasm("threshold-filter")).await;
    let aggregator = push("aggregator", edgeplane_tests::workload_wasm("window-aggregator")).await;
    let same_bytes = push("filter-copy", edgeplane_tests::workload_wasm("threshold-filter")).await;
    assert_eq!(filter, same_bytes, "the same bytes, stored once");
    for module in ["filter.1.0.0", "aggregator.1.0.0"] {
        let deleted = api.delete(&format!("/apis/edgeplane.io/v1alpha1/namespaces/factory/modules/{module}")).await.expect("delete");
        assert_eq!(deleted.code, 200, "{}", deleted.body);
    }
    let blob = async |digest: &str| api.get(&format!("/v1/blobs/{digest}")).await.expect("blob").code;
    edgeplane_tests::eventually(
        "the unreferenced blob to be collected",
        Duration::from_secs(40),
        async || (blob(&aggregator).await == 404).then_some(()),
        || cluster.all_logs(),
    )
    .await;
    assert_eq!(blob(&filter).await, 200, "filter-copy still names the filter's bytes");

    // What an edge would refuse to compile is refused at push, naming the limit.
    let functions: String = (0..10_001).map(|_| "(func)").collect();
    let complex = wasm(&VALID.replace("(memory (export \"memory\") 1)", &format!("(memory (export \"memory\") 1) {functions}")));
    let refused = api.request(edgeplane_tests::Method::POST, "/v1/modules/factory/complex/1.0.0", Some(complex)).await.expect("push");
    assert_eq!(refused.code, 422, "{}", refused.body);
    assert!(refused.body["message"].as_str().is_some_and(|m| m.contains("10005 functions")), "{}", refused.body);
}
