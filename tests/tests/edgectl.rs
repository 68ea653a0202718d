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
