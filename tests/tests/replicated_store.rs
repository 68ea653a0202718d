//! The replicated store end to end: real orchestrator processes on 127.0.0.x.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use edgeplane_tests::{bin_path, Api, Cluster, ClusterSpec};
use serde_json::json;

const KIND: &str = "e2e";

/// Writers that stream unique keys through every live node, recording what was acknowledged.
struct Writers {
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<BTreeMap<String, u64>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Writers {
    fn start(cluster: &Cluster, per_node: usize) -> Writers {
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(Mutex::new(BTreeMap::new()));
        let apis: Vec<Api> =
            cluster.running().into_iter().map(|id| Api::with_timeout(cluster.api_addr(id), Duration::from_secs(3))).collect();
        let mut tasks = Vec::new();
        for w in 0..apis.len() * per_node {
            let apis = apis.clone();
            let (stop, acked) = (Arc::clone(&stop), Arc::clone(&acked));
            tasks.push(tokio::spawn(async move {
                // Each writer starts on its own node and moves to the next when one fails.
                let mut target = w % apis.len();
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let key = format!("w{w}-{i}");
                    match apis[target].put(&format!("/v1/store/{KIND}/{key}"), &json!({ "writer": w, "seq": i })).await {
                        Ok(r) if r.code == 201 => {
                            let rv = r.body["resourceVersion"].as_u64().expect("resourceVersion in reply");
                            acked.lock().expect("lock").insert(key, rv);
                            i += 1;
                        }
                        // Anything else: not acknowledged. A fresh key next time keeps every
                        // acknowledged key's value unambiguous.
                        _ => {
                            i += 1;
                            target = (target + 1) % apis.len();
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                    }
                }
            }));
        }
        Writers { stop, acked, tasks }
    }

    fn acked_count(&self) -> usize {
        self.acked.lock().expect("lock").len()
    }

    async fn wait_for_acks(&self, n: usize, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self.acked_count() < n {
            assert!(Instant::now() < deadline, "only {} of {n} writes acknowledged within {timeout:?}", self.acked_count());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn stop(self) -> BTreeMap<String, u64> {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            t.await.expect("writer task");
        }
        Arc::try_unwrap(self.acked).expect("writers stopped").into_inner().expect("lock")
    }
}

/// Asserts that `node` holds every acknowledged write, reading with `consistency`.
async fn assert_has_all(cluster: &Cluster, node: u64, acked: &BTreeMap<String, u64>, consistency: &str) {
    let reply = cluster.api(node).get(&format!("/v1/store/{KIND}?consistency={consistency}")).await.expect("list");
    assert_eq!(reply.code, 200, "listing on node {node} failed: {}", reply.body);
    let held: BTreeMap<String, u64> = reply.body["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|o| (o["name"].as_str().expect("name").to_owned(), o["resourceVersion"].as_u64().expect("rv")))
        .collect();
    let missing: Vec<_> = acked.iter().filter(|(k, v)| held.get(*k) != Some(v)).take(5).collect();
    assert!(
        missing.is_empty(),
        "node {node} lacks acknowledged writes (key, resourceVersion), e.g. {missing:?}; it holds {} of {} keys",
        held.len(),
        acked.len()
    );
}

async fn wait_until_applied(cluster: &Cluster, node: u64, index: u64, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let applied = cluster.api(node).cluster().await.map(|s| s.applied_index).unwrap_or(0);
        if applied >= index {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "node {node} applied only up to {applied}, not {index}, within {timeout:?}\n{}",
            cluster.log_tail(node)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_a_leader_kill_and_the_killed_node_catches_up_from_a_snapshot() {
    // Snapshots every 40 entries: the killed node falls behind the compacted log and must be
    // sent a snapshot.
    let mut cluster = Cluster::start(ClusterSpec { subnet: 11, snapshot_every: 40, ..Default::default() }).await;
    let old_leader = cluster.wait_for_leader(Duration::from_secs(10)).await;

    let writers = Writers::start(&cluster, 2);
    writers.wait_for_acks(100, Duration::from_secs(20)).await;
    cluster.kill(old_leader);
    let killed_at = writers.acked_count();

    let survivors = cluster.running();
    let new_leader = cluster.wait_for_leader_among(&survivors, Duration::from_secs(10)).await;
    assert_ne!(new_leader, old_leader, "a killed node cannot still be leader");
    writers.wait_for_acks(killed_at + 200, Duration::from_secs(30)).await;
    let acked = writers.stop().await;

    for &node in &survivors {
        assert_has_all(&cluster, node, &acked, "linearizable").await;
    }

    cluster.restart(old_leader);
    let commit = cluster.api(new_leader).cluster().await.expect("status").commit_index;
    wait_until_applied(&cluster, old_leader, commit, Duration::from_secs(20)).await;
    // Its own (possibly stale) copy must now hold everything.
    assert_has_all(&cluster, old_leader, &acked, "stale").await;
    let restored = cluster.api(old_leader).metric("edgeplane_raft_snapshots_restored_total").await.unwrap_or(0.0);
    assert!(restored >= 1.0, "the restarted node should have caught up through a snapshot (restored {restored})");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_isolated_old_leader_never_serves_a_stale_linearizable_read() {
    let cluster = Cluster::start(ClusterSpec { subnet: 12, write_timeout_ms: 1_500, ..Default::default() }).await;
    let old = cluster.wait_for_leader(Duration::from_secs(10)).await;
    let path = format!("/v1/store/{KIND}/k");
    let first = cluster.api(old).put(&path, &json!("v1")).await.expect("put v1");
    assert_eq!(first.code, 201, "{}", first.body);

    // Cut the leader off from its peers; clients can still reach it.
    let others: Vec<u64> = cluster.running().into_iter().filter(|&id| id != old).collect();
    cluster.cut(&[old], &others);
    let new = cluster.wait_for_leader_among(&others, Duration::from_secs(10)).await;
    let second = cluster.api(new).put(&path, &json!("v2")).await.expect("put v2");
    assert_eq!(second.code, 200, "writing through the new leader failed: {}", second.body);

    // The old leader may still believe it leads; its linearizable reads must fail, never
    // return v1. Its stale reads may.
    for attempt in 0..3 {
        let read = cluster.api(old).get(&path).await.expect("read");
        assert!(
            read.code == 503 || read.code == 504,
            "attempt {attempt}: an isolated node answered a linearizable read with {} {}",
            read.code,
            read.body
        );
    }
    let stale = cluster.api(old).get(&format!("{path}?consistency=stale")).await.expect("stale read");
    assert_eq!(stale.code, 200, "a stale read is served locally: {}", stale.body);
    assert_eq!(stale.body["value"], json!("v1"), "the isolated node cannot have seen v2");

    cluster.heal();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let read = cluster.api(old).get(&path).await.expect("read");
        if read.code == 200 {
            assert_eq!(read.body["value"], json!("v2"), "after healing, a linearizable read must see v2");
            break;
        }
        assert!(Instant::now() < deadline, "the healed node never served the read: {} {}", read.code, read.body);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A member cut off from the quorum answers 503 once it knows of no leader, instead of holding
/// requests for the whole write timeout: the client's timeout here is far shorter than the
/// cluster's, so without that answer the client would only see its own timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_cut_off_from_the_quorum_answers_503_instead_of_hanging() {
    let cluster = Cluster::start(ClusterSpec { subnet: 16, write_timeout_ms: 30_000, ..Default::default() }).await;
    let leader = cluster.wait_for_leader(Duration::from_secs(10)).await;
    let cut_off = cluster.running().into_iter().find(|&id| id != leader).expect("a follower");
    let others: Vec<u64> = cluster.running().into_iter().filter(|&id| id != cut_off).collect();
    cluster.cut(&[cut_off], &others);
    let api = Api::with_timeout(cluster.api_addr(cut_off), Duration::from_secs(8));
    let deadline = Instant::now() + Duration::from_secs(15);
    while api.cluster().await.is_ok_and(|s| s.leader_id.is_some()) {
        assert!(Instant::now() < deadline, "the cut-off member still believes in a leader\n{}", cluster.all_logs());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let write = api.put(&format!("/v1/store/{KIND}/cut-off"), &json!(1)).await;
    let write = write.unwrap_or_else(|e| panic!("the write was not answered within the client's 8 s: {e}"));
    assert_eq!((write.code, write.body["reason"].as_str()), (503, Some("ServiceUnavailable")), "{}", write.body);
    let read = api.get(&format!("/v1/store/{KIND}/cut-off")).await.unwrap_or_else(|e| panic!("the read was not answered: {e}"));
    assert_eq!(read.code, 503, "{}", read.body);
    // The rest of the cluster still writes, and the member catches up once healed.
    let elsewhere = cluster.api(others[0]).put(&format!("/v1/store/{KIND}/majority"), &json!(2)).await.expect("write");
    assert!(elsewhere.code == 201, "{}", elsewhere.body);
    cluster.heal();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let read = api.get(&format!("/v1/store/{KIND}/majority")).await.expect("read");
        if read.code == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "the healed member never served the read: {} {}", read.code, read.body);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_are_refused_with_a_status_and_change_nothing() {
    let cluster = Cluster::start(ClusterSpec { subnet: 13, ..Default::default() }).await;
    let leader = cluster.wait_for_leader(Duration::from_secs(10)).await;
    let api = cluster.api(leader);
    let created = api.put(&format!("/v1/store/{KIND}/keep"), &json!({ "a": 1 })).await.expect("put");
    assert_eq!(created.code, 201);
    let audit_head = async || api.get("/v1/audit?after=0&limit=1").await.expect("audit").body["head"]["seq"].as_u64().expect("seq");
    let before = audit_head().await;

    let raw = |method: reqwest::Method, path: &str, body: Option<&[u8]>| {
        let api = api.clone();
        let path = path.to_owned();
        let body = body.map(<[u8]>::to_vec);
        async move { api.request(method, &path, body).await.expect("request") }
    };
    use reqwest::Method;
    let cases: Vec<(&str, edgeplane_tests::Reply, u16, &str, Option<&str>)> = vec![
        ("uppercase kind", raw(Method::PUT, "/v1/store/Thing/a", Some(b"1")).await, 400, "Invalid", Some("path.kind")),
        ("bad name", raw(Method::PUT, "/v1/store/thing/-a", Some(b"1")).await, 400, "Invalid", Some("path.name")),
        ("unknown parameter", raw(Method::PUT, "/v1/store/thing/a?replicas=3", Some(b"1")).await, 400, "Invalid", Some("query.replicas")),
        ("bad ifVersion", raw(Method::PUT, "/v1/store/thing/a?ifVersion=-1", Some(b"1")).await, 400, "Invalid", Some("query.ifVersion")),
        (
            "bad consistency",
            raw(Method::GET, "/v1/store/thing/a?consistency=eventual", None).await,
            400,
            "Invalid",
            Some("query.consistency"),
        ),
        ("invalid JSON", raw(Method::PUT, "/v1/store/thing/a", Some(b"{\"a\":")).await, 400, "Invalid", Some("body")),
        ("empty body", raw(Method::PUT, "/v1/store/thing/a", Some(b"")).await, 400, "Invalid", Some("body")),
        (
            "oversized body",
            raw(Method::PUT, "/v1/store/thing/a", Some(format!("\"{}\"", "x".repeat(2 * 1024 * 1024)).as_bytes())).await,
            413,
            "RequestEntityTooLarge",
            None,
        ),
        (
            "stale compare-and-swap",
            raw(Method::PUT, &format!("/v1/store/{KIND}/keep?ifVersion=1"), Some(b"2")).await,
            409,
            "Conflict",
            None,
        ),
        (
            "create existing",
            raw(Method::PUT, &format!("/v1/store/{KIND}/keep?ifAbsent=true"), Some(b"2")).await,
            409,
            "AlreadyExists",
            None,
        ),
        ("delete missing", raw(Method::DELETE, &format!("/v1/store/{KIND}/nope"), None).await, 404, "NotFound", None),
        ("unknown path", raw(Method::GET, "/v2/nothing", None).await, 404, "NotFound", None),
    ];
    let oversized = cases.iter().find(|c| c.0 == "oversized body").expect("case");
    assert!(oversized.1.connection_close, "a 413 must close the connection, since the unread body leaves it unusable");
    for (what, reply, code, reason, field) in &cases {
        assert_eq!(reply.code, *code, "{what}: expected {code}, got {} {}", reply.code, reply.body);
        assert_eq!(reply.body["kind"], "Status", "{what}: the error body must be a Status: {}", reply.body);
        assert_eq!(reply.body["reason"], *reason, "{what}: {}", reply.body);
        if let Some(field) = field {
            let causes = reply.body["details"]["causes"].as_array().cloned().unwrap_or_default();
            assert!(causes.iter().any(|c| c["field"] == *field), "{what}: no cause names {field}: {}", reply.body);
        }
    }
    // Refused writes that reached Raft (the conflicts) are committed as refusals; nothing
    // changed, and the stored object is untouched.
    let kept = api.get(&format!("/v1/store/{KIND}/keep")).await.expect("get");
    assert_eq!(kept.body["value"], json!({ "a": 1 }));
    assert_eq!(kept.body["resourceVersion"], created.body["resourceVersion"]);
    let listed = api.get("/v1/store/thing").await.expect("list");
    assert_eq!(listed.body["items"], json!([]), "no invalid request may have created anything");
    // Every refused request that would have changed something is in the audit log, once,
    // with its answer (the reads that failed are not: reads are not audited).
    let mutating: Vec<u16> = cases.iter().filter(|c| !matches!(c.0, "bad consistency" | "unknown path")).map(|c| c.2).collect();
    let records = edgeplane_tests::eventually(
        "the refusals in the audit log",
        Duration::from_secs(10),
        async || {
            let page = api.get(&format!("/v1/audit?after={before}&limit=100")).await.ok()?.body;
            let records = page["records"].as_array()?.clone();
            (records.len() >= mutating.len()).then_some(records)
        },
        || cluster.all_logs(),
    )
    .await;
    let mut codes: Vec<u16> = records.iter().filter_map(|r| r["event"]["code"].as_u64()).map(|c| c as u16).collect();
    let mut expected = mutating.clone();
    codes.sort_unstable();
    expected.sort_unstable();
    assert_eq!(codes, expected, "one audit record per refused write, with its answer: {records:#?}");
}

#[test]
fn impossible_configurations_are_reported_whole_before_anything_starts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data_dir = dir.path().join("never-created");
    let output = std::process::Command::new(bin_path("orchestrator"))
        .args(["--id", "4", "--data-dir"])
        .arg(&data_dir)
        .args(["--member", "1=127.0.0.1:7001,127.0.0.1:8001", "--member", "2=127.0.0.1:7001,nowhere"])
        .args(["--election-ticks", "1", "--heartbeat-ticks", "1", "--tick-ms", "0"])
        .output()
        .expect("run orchestrator");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "a bad configuration exits with 2; stderr:\n{stderr}");
    for expected in [
        "id: 4 is not among the members",
        "API address \"nowhere\" is not IP:PORT",
        "election-ticks: must be greater than heartbeat-ticks",
        "tick-ms: must be between 1 and 60000, got 0",
    ] {
        assert!(stderr.contains(expected), "stderr lacks {expected:?}:\n{stderr}");
    }
    assert!(!data_dir.exists(), "a refused configuration must not create the data directory");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_directory_in_use_is_refused_and_a_restart_keeps_the_data() {
    let mut cluster = Cluster::start(ClusterSpec { subnet: 14, size: 1, ..Default::default() }).await;
    cluster.wait_for_leader(Duration::from_secs(10)).await;
    let put = cluster.api(1).put(&format!("/v1/store/{KIND}/durable"), &json!(42)).await.expect("put");
    assert_eq!(put.code, 201, "{}", put.body);

    // A second process on the same data directory must refuse to start, not share the log.
    let node = &cluster.nodes[0];
    let output = std::process::Command::new(bin_path("orchestrator"))
        .args(["--id", "1", "--data-dir"])
        .arg(&node.data_dir)
        .arg("--tls-dir")
        .arg(cluster.trust.dir.join("members/1"))
        .args(["--member", &format!("1={},{}", node.peer_public, "127.0.0.1:1")])
        .args(["--peer-listen", "127.0.0.1:0", "--api-listen", "127.0.0.1:0"])
        .output()
        .expect("run second orchestrator");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "stderr:\n{stderr}");
    assert!(stderr.contains("raft-log") && stderr.contains("in use"), "the error should name the log in use:\n{stderr}");

    // SIGTERM: a graceful stop; the data is still there after the restart.
    cluster.signal(1, 15);
    assert_eq!(cluster.wait_exit(1, Duration::from_secs(10)), Some(0), "graceful shutdown exits 0\n{}", cluster.log_tail(1));
    cluster.restart(1);
    cluster.wait_for_leader(Duration::from_secs(10)).await;
    let got = cluster.api(1).get(&format!("/v1/store/{KIND}/durable")).await.expect("get");
    assert_eq!((got.code, &got.body["value"]), (200, &json!(42)), "{}", got.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_status_and_metrics_describe_the_cluster() {
    let cluster = Cluster::start(ClusterSpec { subnet: 15, ..Default::default() }).await;
    let leader = cluster.wait_for_leader(Duration::from_secs(10)).await;
    let follower = cluster.running().into_iter().find(|&id| id != leader).expect("a follower");
    for i in 0..5 {
        let put = cluster.api(follower).put(&format!("/v1/store/{KIND}/m{i}"), &json!(i)).await.expect("put");
        assert_eq!(put.code, 201, "{}", put.body);
    }
    let leader_status = cluster.api(leader).cluster().await.expect("status");
    wait_until_applied(&cluster, follower, leader_status.commit_index, Duration::from_secs(5)).await;

    for id in cluster.running() {
        let s = cluster.api(id).cluster().await.expect("status");
        assert_eq!(s.node_id, id);
        assert_eq!(s.leader_id, Some(leader), "node {id} disagrees on the leader: {s:?}");
        assert_eq!(s.term, leader_status.term, "node {id}: {s:?}");
        assert_eq!(s.members.len(), 3);
        assert_eq!(s.leader_api_addr, Some(cluster.api_addr(leader).to_string()));
        assert!(s.applied_index >= 6 && s.commit_index >= s.applied_index, "node {id}: {s:?}");
    }
    let on_leader = cluster.api(leader).cluster().await.expect("status");
    assert!(
        on_leader.members.iter().all(|m| m.match_index.is_some()),
        "the leader reports every member's replication progress: {on_leader:?}"
    );

    // The node that took the writes counts them; every node reports its term and fsyncs.
    let api = cluster.api(follower);
    assert_eq!(api.metric("edgeplane_raft_proposals_total{outcome=\"committed\"}").await, Some(5.0));
    for id in cluster.running() {
        let api = cluster.api(id);
        assert_eq!(api.metric("edgeplane_raft_term").await, Some(leader_status.term as f64), "node {id}");
        assert_eq!(api.metric("edgeplane_raft_is_leader").await, Some(f64::from(u8::from(id == leader))), "node {id}");
        for name in [
            "edgeplane_raft_leader_changes_total",
            "edgeplane_raft_commit_index",
            "edgeplane_raft_applied_index",
            "edgeplane_raft_fsync_seconds_count",
        ] {
            let v = api.metric(name).await;
            assert!(v.is_some_and(|v| v >= 1.0), "node {id}: {name} = {v:?}");
        }
    }
}
