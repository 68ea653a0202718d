//! Failover with real processes: 3 orchestrators, 4 edge runtimes. The edge running a
//! workload is SIGKILLed (and, meanwhile, the orchestrator leader too): the workload runs on
//! another node and processes readings there; the dead node is reported Down; when it
//! returns, its stale copy stops, its outputs from the old generation are fenced, and the
//! cloud sink holds every accepted reading exactly once.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use edgeplane_api::data::Reading;
use edgeplane_tests::{
    cloud_readings, cloud_records, create_resource, eventually, ingest, push_module, ready_condition, workload_wasm, Api, Cluster,
    ClusterSpec, EdgeRuntime,
};
use serde_json::{json, Value};

const NS: &str = "factory";
const ASSIGNMENT: &str = "/apis/edgeplane.io/v1alpha1/namespaces/factory/assignments/pass-0";

/// (node, generation) of the workload's replica, asking any orchestrator.
async fn placement(cluster: &Cluster) -> Option<(String, u64)> {
    for id in cluster.running() {
        let Ok(reply) = Api::with_timeout(cluster.api_addr(id), Duration::from_secs(2)).get(ASSIGNMENT).await else { continue };
        if reply.code == 200 {
            let node = reply.body.pointer("/spec/nodeName")?.as_str()?.to_owned();
            return Some((node, reply.body.pointer("/spec/generation")?.as_u64()?));
        }
    }
    None
}

fn batch(first: u64) -> Vec<Reading> {
    (0..20).map(|i| Reading { ts: first + i, device: "press-1".into(), metric: "temperature".into(), value: (first + i) as f64 }).collect()
}

/// Sends one batch to whichever node runs the replica now, until one accepts it.
async fn produce(cluster: &Cluster, edges: &[EdgeRuntime], readings: &[Reading]) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some((node, _)) = placement(cluster).await {
            if let Some(edge) = edges.iter().find(|e| e.name == node && e.pid().is_some()) {
                if ingest(&edge.http().await, "line-a/temperature", readings).await.0 == 200 {
                    return;
                }
            }
        }
        assert!(Instant::now() < deadline, "no node took the batch\n{}", cluster.all_logs());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_edge_s_workload_moves_and_nothing_is_duplicated_or_lost() {
    let mut cluster = Cluster::start(ClusterSpec { subnet: 55, ..Default::default() }).await;
    let leader = cluster.wait_for_leader(Duration::from_secs(10)).await;
    let api = cluster.api(leader);
    let servers: Vec<SocketAddr> = cluster.running().iter().map(|&id| cluster.api_addr(id)).collect();
    push_module(&api, NS, "threshold-filter", workload_wasm("threshold-filter")).await;
    let workload = json!({
        "apiVersion": "edgeplane.io/v1alpha1", "kind": "Workload",
        "metadata": {"name": "pass", "namespace": NS},
        "spec": {"module": "threshold-filter@1.0.0", "placement": {"nodeSelector": {"line": "a"}},
                 "inputs": ["line-a/temperature"], "outputs": [{"name": "in-range", "sink": {"type": "cloud"}}],
                 "config": {"min": -1e12, "max": 1e12, "forwardInRange": true}}
    });
    create_resource(&api, NS, "workloads", &workload).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut edges: Vec<EdgeRuntime> = Vec::new();
    for i in 1..=4 {
        edges.push(EdgeRuntime::start(&format!("edge-{i}"), &servers, dir.path().join(format!("edge-{i}")), &["--label", "line=a"]).await);
    }
    let (first_node, first_generation) =
        eventually("the replica to be placed", Duration::from_secs(30), async || placement(&cluster).await, || cluster.all_logs()).await;
    let first = edges.iter().position(|e| e.name == first_node).expect("one of ours");
    edges[first].wait_running(1, Duration::from_secs(30)).await;

    let mut accepted = Vec::new();
    for i in 0..5 {
        let readings = batch(i * 100);
        produce(&cluster, &edges, &readings).await;
        accepted.extend(readings);
    }

    // SIGKILL the edge running it, and the orchestrator leader too.
    edges[first].kill();
    cluster.kill(leader);
    let (second_node, second_generation) = eventually(
        "the replica to move to another node",
        Duration::from_secs(30),
        async || placement(&cluster).await.filter(|(node, _)| *node != first_node),
        || cluster.all_logs(),
    )
    .await;
    assert!(second_generation > first_generation, "a move is a new generation ({first_generation} -> {second_generation})");
    let second = edges.iter().position(|e| e.name == second_node).expect("one of ours");
    edges[second].wait_running(1, Duration::from_secs(30)).await;
    for i in 5..10 {
        let readings = batch(i * 100);
        produce(&cluster, &edges, &readings).await;
        accepted.extend(readings);
    }
    cluster.restart(leader);
    let leader = cluster.wait_for_leader(Duration::from_secs(10)).await;

    // The dead node is Down in its EdgeNode's Ready condition.
    let node_path = format!("/apis/edgeplane.io/v1alpha1/edgenodes/{first_node}");
    let condition = eventually(
        "the killed node to be reported Down",
        Duration::from_secs(20),
        async || {
            let reply = cluster.api(cluster.wait_for_leader(Duration::from_secs(5)).await).get(&node_path).await.ok()?;
            ready_condition(&reply.body).filter(|c| c["reason"] == "NodeDown").cloned()
        },
        || cluster.all_logs(),
    )
    .await;
    assert_eq!(condition["status"], "False", "{condition}");

    // The old node's outputs of the old generation are fenced by the cloud sink. (Sent with
    // the old node's own certificate: it held that generation, so it may still upload it.)
    let data_dir = &edges[first].data_dir;
    let identity = edgeplane_tests::edge_identity(data_dir).expect("the node's certificate");
    let as_old_node = Api::with_tls(cluster.api_addr(leader), Duration::from_secs(10), cluster.trust.tls_as(Some(&identity)));
    // Produced now, after the move: what a node cut off from the cloud would still send.
    let now_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_millis() as u64;
    let stale = json!({"records": [{"stream": "factory/pass-0/in-range", "seq": 1_000_000, "namespace": NS, "workload": "pass",
        "output": "in-range", "generation": first_generation, "producedMs": now_ms, "readings": batch(99_000)}]});
    let upload = edgeplane_tests::Request::new(edgeplane_tests::Method::POST, format!("/v1/nodes/{first_node}/data")).json(&stale);
    let answer: Value = as_old_node.send(upload).await.expect("upload").body;
    assert_eq!((answer["accepted"].clone(), answer["stale"].clone()), (json!(0), json!(1)), "{answer}");
    // ...and the fencing is an Event on the old node.
    let fenced = eventually(
        "a FencedRecords event on the old node",
        Duration::from_secs(20),
        async || {
            let path = format!("/api/v1/namespaces/default/events?fieldSelector=involvedObject.name%3D{first_node},reason%3DFencedRecords");
            let reply = cluster.api(leader).get(&path).await.ok()?;
            reply.body["items"].as_array()?.first().cloned()
        },
        || cluster.all_logs(),
    )
    .await;
    assert_eq!((fenced["type"].as_str(), fenced["involvedObject"]["kind"].as_str()), (Some("Warning"), Some("EdgeNode")), "{fenced}");
    // The replica's move was recorded too, with its reason.
    let moved =
        cluster.api(leader).get(&format!("/api/v1/namespaces/{NS}/events?fieldSelector=reason%3DFailedOver")).await.expect("events");
    assert!(moved.body["items"].as_array().is_some_and(|items| !items.is_empty()), "{}", moved.body);

    // The old node returns: its stale copy stops (it resumed it from disk first).
    edges[first].start_again();
    eventually(
        "the returning node to stop its stale copy",
        Duration::from_secs(30),
        async || edges[first].instances().await.is_empty().then_some(()),
        || edges[first].log_tail(),
    )
    .await;
    for i in 10..12 {
        let readings = batch(i * 100);
        produce(&cluster, &edges, &readings).await;
        accepted.extend(readings);
    }

    // Everything so far arrives before the drain moves the replica again.
    eventually(
        "every accepted reading in the cloud sink",
        Duration::from_secs(30),
        async || cloud_records(&servers, NS, "pass").await.map(|r| cloud_readings(&r)).filter(|r| r.len() >= accepted.len()),
        || cluster.all_logs(),
    )
    .await;
    // Drain the node running it now: cordoned, and the replica moves to a third node.
    let (current, _) = placement(&cluster).await.expect("placed");
    let drained = std::process::Command::new(edgeplane_tests::bin_path("edgectl"))
        .args(["--server", &servers[0].to_string(), "--server", &servers[1].to_string(), "node", "drain", &current])
        .env("EDGECTL_CONFIG", cluster.trust.edgectl_config())
        .output()
        .expect("edgectl");
    let said = String::from_utf8_lossy(&drained.stdout).into_owned();
    assert!(drained.status.success(), "edgectl node drain: {}{}", said, String::from_utf8_lossy(&drained.stderr));
    assert!(said.contains("assignment factory/pass-0 evicted") && said.contains("cordoned"), "{said}");
    let (third, _) = eventually(
        "the drained replica to be placed elsewhere",
        Duration::from_secs(20),
        async || placement(&cluster).await.filter(|(n, _)| *n != current),
        || cluster.all_logs(),
    )
    .await;
    let node: Value = cluster
        .api(cluster.wait_for_leader(Duration::from_secs(5)).await)
        .get(&format!("/apis/edgeplane.io/v1alpha1/edgenodes/{current}"))
        .await
        .expect("node")
        .body;
    assert_eq!(node.pointer("/spec/cordoned"), Some(&json!(true)), "{node}");
    let third = edges.iter().position(|e| e.name == third).expect("one of ours");
    edges[third].wait_running(1, Duration::from_secs(30)).await;
    let readings = batch(5_000);
    produce(&cluster, &edges, &readings).await;
    accepted.extend(readings);
    let arrived = eventually(
        "every accepted reading in the cloud sink, after the drain too",
        Duration::from_secs(30),
        async || cloud_records(&servers, NS, "pass").await.map(|r| cloud_readings(&r)).filter(|r| r.len() >= accepted.len()),
        || cluster.all_logs(),
    )
    .await;

    let mut sorted = arrived.clone();
    sorted.sort_by_key(|r| r.ts);
    sorted.dedup_by_key(|r| r.ts);
    assert_eq!(sorted.len(), arrived.len(), "no reading twice");
    assert_eq!(sorted, accepted, "exactly the accepted readings");
}

/// The Ready condition of an EdgeNode: (status, reason).
async fn readiness(api: &Api, node: &str) -> Option<(String, String)> {
    let reply = api.get(&format!("/apis/edgeplane.io/v1alpha1/edgenodes/{node}")).await.ok()?;
    let ready = ready_condition(&reply.body)?;
    Some((ready["status"].as_str()?.to_owned(), ready["reason"].as_str()?.to_owned()))
}

/// A node whose process died is Down as soon as the leader sees its heartbeat connection
/// closed, without waiting out the silence a partition needs; a node that only fell silent
/// (frozen with SIGSTOP: its connections stay open, as across a partition) still waits that
/// out. Silence is set to take a minute here, so only the closed connection can explain a
/// Down within the test's patience.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_edge_is_down_when_its_connection_closes_and_a_silent_one_waits_out_its_grace() {
    let extra_args = ["--node-suspect-ms", "60000", "--node-grace-ms", "60000"].map(str::to_owned).to_vec();
    let cluster = Cluster::start(ClusterSpec { size: 1, subnet: 91, extra_args, ..Default::default() }).await;
    let leader = cluster.wait_for_leader(Duration::from_secs(10)).await;
    let api = cluster.api(leader);
    let servers = [cluster.api_addr(leader)];
    let dir = tempfile::tempdir().expect("tempdir");
    let mut dead = EdgeRuntime::start("dies", &servers, dir.path().join("dies"), &[]).await;
    let silent = EdgeRuntime::start("falls-silent", &servers, dir.path().join("falls-silent"), &[]).await;
    for edge in [&dead, &silent] {
        eventually(
            &format!("{} to be Ready", edge.name),
            Duration::from_secs(30),
            async || readiness(&api, &edge.name).await.filter(|(status, _)| status == "True"),
            || cluster.all_logs(),
        )
        .await;
    }

    silent.signal(19); // SIGSTOP
    let killed = Instant::now();
    dead.kill();
    let (status, reason) = eventually(
        "the killed node to be reported Down",
        Duration::from_secs(20),
        async || readiness(&api, "dies").await.filter(|(status, _)| status == "False"),
        || cluster.all_logs(),
    )
    .await;
    assert_eq!(reason, "NodeDown", "{status} {reason}");
    eprintln!("the killed node was reported Down {} ms after SIGKILL", killed.elapsed().as_millis());
    // The frozen node, its connection open, stays Ready through silence that would have made
    // it Down by default (1.5 s) and many times the 250 ms a closed connection is given.
    tokio::time::sleep(Duration::from_secs(2).saturating_sub(killed.elapsed())).await;
    let frozen = readiness(&api, "falls-silent").await;
    silent.signal(18); // SIGCONT
    assert_eq!(
        frozen,
        Some(("True".to_owned(), "Heartbeating".to_owned())),
        "a node that is only silent must wait out --node-suspect-ms (a minute here)"
    );
}
