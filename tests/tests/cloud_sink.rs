//! The cloud sink end to end: an enrolled node uploads to followers and the leader, resends
//! overlapping ranges (also across a leader failover), and reads back through the REST API
//! and `edgectl data`. The test plays the node itself (enrolled with a bootstrap token,
//! heartbeating, so that the scheduler places the replicas whose streams it uploads).

use std::io::BufRead as _;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use edgeplane_api::auth::{CertificateResponse, EnrollRequest, ENROLL};
use edgeplane_api::data::{upload_path, DataPage, Reading, StoredRecord, UpRecord, UploadRequest, UploadResponse, DATA};
use edgeplane_api::resources::Capacity;
use edgeplane_tests::{push_module, workload_wasm, Api, Cluster, ClusterSpec};
use serde_json::{json, Value};

const NODE: &str = "line-a-edge";
const TEMPERATURE: &str = "factory/line-a-filter-0/alerts";
const FRAMES: &str = "factory/line-a-compressor-0/frames";

/// The generation of each stream's Assignment on the test's node.
#[derive(Debug, Clone, Copy)]
struct Generations {
    temperature: u64,
    frames: u64,
}

fn record_of(generations: Generations, stream: &str, seq: u64) -> UpRecord {
    let (workload, output) = match stream {
        TEMPERATURE => ("line-a-filter", "alerts"),
        _ => ("line-a-compressor", "frames"),
    };
    let (readings, opaque) = if stream == FRAMES {
        (Vec::new(), Some("AAECAw==".to_owned()))
    } else {
        (vec![Reading { ts: 1_000 + seq, device: "press-1".into(), metric: "temperature".into(), value: seq as f64 + 0.5 }], None)
    };
    UpRecord {
        stream: stream.parse().expect("a stream id"),
        seq,
        namespace: "factory".into(),
        workload: workload.into(),
        output: output.into(),
        generation: if stream == FRAMES { generations.frames } else { generations.temperature },
        model: None,
        produced_ms: 1_700_000_000_000 + seq,
        readings,
        opaque,
    }
}

fn body(records: Vec<UpRecord>) -> Vec<u8> {
    serde_json::to_vec(&UploadRequest { records }).expect("serializable")
}

/// A node's certificate: what the test presents as the node.
type NodeCert = edgeplane_tls::TlsIdentity;

async fn post(addr: SocketAddr, path: &str, node: Option<&NodeCert>, body: Vec<u8>) -> Result<(u16, Value), edgeplane_tests::ClientError> {
    let request = edgeplane_tests::Request::new(edgeplane_tests::Method::POST, path).body(body, "application/json");
    let tls = edgeplane_tests::trust_for(addr).tls_as(node);
    let reply = Api::with_tls(addr, Duration::from_secs(10), tls).send(request).await?;
    Ok((reply.code, reply.body))
}

async fn upload(addr: SocketAddr, node: &NodeCert, records: Vec<UpRecord>) -> UploadResponse {
    let (code, answer) = post(addr, &upload_path(NODE), Some(node), body(records)).await.expect("upload");
    assert_eq!(code, 200, "upload to {addr}: {answer}");
    serde_json::from_value(answer).expect("an UploadResponse")
}

/// Enrolls node `NODE` as runtime `uid` with the cluster's bootstrap token.
async fn enroll(cluster: &Cluster, addr: SocketAddr, uid: &str) -> NodeCert {
    enroll_with(addr, uid, &cluster.trust.bootstrap_token().await).await
}

/// Enrolls node `NODE` as runtime `uid` with `token`.
async fn enroll_with(addr: SocketAddr, uid: &str, token: &str) -> NodeCert {
    let fresh = edgeplane_tls::KeyAndRequest::generate(NODE).expect("csr");
    let request = EnrollRequest {
        name: NODE.into(),
        uid: uid.into(),
        csr: fresh.request_pem,
        labels: [("line".to_owned(), "a".to_owned())].into(),
        tier: Default::default(),
        capabilities: Vec::new(),
        capacity: Capacity { memory_mib: 512, instance_slots: 4, cpu_millis: 2_000 },
    };
    let request = edgeplane_tests::Request::new(edgeplane_tests::Method::POST, ENROLL).json(&request).bearer(Some(token));
    let reply =
        Api::with_tls(addr, Duration::from_secs(10), edgeplane_tests::trust_for(addr).tls_as(None)).send(request).await.expect("enroll");
    assert_eq!(reply.code, 200, "enroll {uid}: {}", reply.body);
    let issued: CertificateResponse = serde_json::from_value(reply.body).expect("a CertificateResponse");
    NodeCert::from_pem(&issued.certificate, &fresh.key_pem).expect("the node's certificate")
}

/// Heartbeats as the node to whichever orchestrator leads, until dropped.
struct Heartbeating(tokio::task::JoinHandle<()>);

impl Drop for Heartbeating {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn heartbeat(cluster: &Cluster, node: &NodeCert) -> Heartbeating {
    let servers: Vec<String> = (1..=cluster.spec.size).map(|id| cluster.api_addr(id).to_string()).collect();
    let tls = cluster.trust.tls_as(Some(node));
    Heartbeating(tokio::spawn(async move {
        let options = edgeplane_tests::ClientOptions { deadline: Duration::from_secs(2), ..Default::default() };
        let client = edgeplane_tests::Client::new(&servers, options, tls).expect("client");
        let beat = json!({"load": {"cpuMillis": 0, "memoryMib": 0, "instances": 0, "queueDepth": 0}});
        loop {
            let request = edgeplane_tests::Request::new(edgeplane_tests::Method::POST, format!("/v1/nodes/{NODE}/heartbeat")).json(&beat);
            let _ = client.send(request.retry(edgeplane_client::Retry::Idempotent)).await;
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }))
}

/// Creates the two Workloads whose streams the tests upload, and waits until the scheduler
/// placed both on the node; returns their generations.
async fn place_streams(cluster: &Cluster, api: &Api) -> Generations {
    push_module(api, "factory", "threshold-filter", workload_wasm("threshold-filter")).await;
    for (name, output) in [("line-a-filter", "alerts"), ("line-a-compressor", "frames")] {
        let workload = json!({"apiVersion": "edgeplane.io/v1alpha1", "kind": "Workload", "metadata": {"name": name, "namespace": "factory"},
            "spec": {"module": "threshold-filter@1.0.0", "placement": {"nodeSelector": {"line": "a"}}, "inputs": ["line-a/in"],
                     "outputs": [{"name": output, "sink": {"type": "cloud"}}]}});
        let path = "/apis/edgeplane.io/v1alpha1/namespaces/factory/workloads";
        let reply = api.request(edgeplane_tests::Method::POST, path, Some(workload.to_string().into_bytes())).await.expect("create");
        assert!(reply.code == 201 || reply.code == 409, "{}", reply.body);
    }
    placed(cluster, api).await
}

/// The generations of the two replicas once both are on the node.
async fn placed(cluster: &Cluster, api: &Api) -> Generations {
    let generation = async |name: &str| -> Option<u64> {
        let reply = api.get(&format!("/apis/edgeplane.io/v1alpha1/namespaces/factory/assignments/{name}")).await.ok()?;
        (reply.code == 200 && reply.body.pointer("/spec/nodeName")? == NODE)
            .then(|| reply.body.pointer("/spec/generation")?.as_u64())
            .flatten()
    };
    edgeplane_tests::eventually(
        "both replicas on the node",
        Duration::from_secs(30),
        async || Some(Generations { temperature: generation("line-a-filter-0").await?, frames: generation("line-a-compressor-0").await? }),
        || cluster.all_logs(),
    )
    .await
}

async fn page(api: &Api, query: &str) -> DataPage {
    let reply = api.get(&format!("{DATA}{query}")).await.expect("GET /v1/data");
    assert_eq!(reply.code, 200, "GET /v1/data{query}: {}", reply.body);
    serde_json::from_value(reply.body).expect("a DataPage")
}

fn seqs(page: &DataPage) -> Vec<u64> {
    page.records.iter().map(|r| r.record.seq).collect()
}

fn causes(body: &Value) -> Vec<&str> {
    body["details"]["causes"].as_array().into_iter().flatten().filter_map(|c| c["field"].as_str()).collect()
}

/// The next sequence number `edgectl data tail -f` printed.
async fn next_tailed(tailed: &mut tokio::sync::mpsc::UnboundedReceiver<u64>) -> u64 {
    let next = tokio::time::timeout(Duration::from_secs(15), tailed.recv()).await;
    next.expect("edgectl data tail -f printed nothing for 15 s").expect("edgectl data tail -f exited")
}

/// Kills the process on drop, so a failing test leaves no `edgectl data tail -f` behind.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_are_stored_once_in_order_on_any_orchestrator_across_failover() {
    let mut cluster = Cluster::start(ClusterSpec { subnet: 61, ..Default::default() }).await;
    let leader = cluster.wait_for_leader(Duration::from_secs(10)).await;
    let follower = cluster.running().into_iter().find(|&id| id != leader).expect("a follower");
    let addrs: Vec<SocketAddr> = (1..=cluster.spec.size).map(|id| cluster.api_addr(id)).collect();
    let at = |id: u64| addrs[(id - 1) as usize];

    let token = enroll(&cluster, at(follower), "uid-1").await;
    let _beating = heartbeat(&cluster, &token);
    let generations = place_streams(&cluster, &cluster.api(leader)).await;
    let record = move |stream: &str, seq: u64| record_of(generations, stream, seq);

    // To a follower: the write is forwarded to the leader and answered once committed.
    let first: Vec<UpRecord> = (1..=5).map(|s| record(TEMPERATURE, s)).chain((1..=2).map(|s| record(FRAMES, s))).collect();
    assert_eq!(upload(at(follower), &token, first).await, UploadResponse { accepted: 7, duplicates: 0, stale: 0, refused: 0 });
    // An overlapping resend, to the leader this time, with a record repeated inside the batch.
    let resend: Vec<UpRecord> = (3..=7).chain([7]).map(|s| record(TEMPERATURE, s)).collect();
    assert_eq!(upload(at(leader), &token, resend).await, UploadResponse { accepted: 2, duplicates: 4, stale: 0, refused: 0 });

    // Every record once, in cursor order, on every orchestrator.
    for id in cluster.running() {
        let all = page(&cluster.api(id), "").await;
        assert_eq!(all.records.len(), 9, "node {id}: {all:?}");
        assert!(all.records.windows(2).all(|w| w[0].cursor < w[1].cursor), "cursors increase: {all:?}");
        assert_eq!((all.first_retained, all.evicted, all.next), (1, 0, 9));
        assert!(all.records.iter().all(|r| r.node == NODE));
    }
    let api = cluster.api(follower);
    let temperature = page(&api, &format!("?stream={TEMPERATURE}")).await;
    assert_eq!(seqs(&temperature), [1, 2, 3, 4, 5, 6, 7]);
    assert_eq!(temperature.records[6].record.readings[0].value, 7.5);
    let frames = page(&api, "?namespace=factory&workload=line-a-compressor&output=frames&consistency=stale").await;
    assert_eq!(seqs(&frames), [1, 2]);
    assert_eq!(frames.records[0].record.opaque.as_deref(), Some("AAECAw=="));
    let second_page = page(&api, &format!("?node={NODE}&after=2&limit=3")).await;
    assert_eq!((second_page.records.iter().map(|r| r.cursor).collect::<Vec<_>>(), second_page.next), (vec![3, 4, 5], 5));
    assert!(page(&api, "?node=another-node").await.records.is_empty());

    // Credentials: none, or another node's upload path; and a stream the node never held.
    let one = || body(vec![record(TEMPERATURE, 100)]);
    let (code, answer) = post(at(follower), &upload_path(NODE), None, one()).await.expect("post");
    assert_eq!(code, 401, "{answer}");
    let (code, answer) = post(at(follower), &upload_path("line-b-edge"), Some(&token), one()).await.expect("post");
    assert_eq!(code, 403, "{answer}");
    let mut foreign = record(TEMPERATURE, 101);
    foreign.stream = "factory/someone-elses-0/alerts".parse().expect("stream");
    let (code, answer) = post(at(follower), &upload_path(NODE), Some(&token), body(vec![foreign])).await.expect("post");
    assert_eq!((code, causes(&answer)), (403, vec!["records[0].stream"]), "{answer}");
    // Malformed bodies: 400, naming the field; nothing is stored.
    let mut bad = serde_json::to_value(record(TEMPERATURE, 0)).expect("json");
    bad["readings"][0]["metric"] = json!("");
    let mut no_seq = serde_json::to_value(record(TEMPERATURE, 9)).expect("json");
    no_seq.as_object_mut().expect("object").remove("seq");
    let malformed = json!({"records": [record(TEMPERATURE, 8), bad, no_seq]}).to_string().into_bytes();
    let (code, answer) = post(at(follower), &upload_path(NODE), Some(&token), malformed).await.expect("post");
    assert_eq!(code, 400, "{answer}");
    assert_eq!(causes(&answer), ["records[1].seq", "records[1].readings[0].metric", "records[2]"], "{answer}");
    assert!(answer["details"]["causes"][2]["message"].as_str().is_some_and(|m| m.contains("seq")), "{answer}");
    let reply = api.get(&format!("{DATA}?limit=0&colour=blue")).await.expect("get");
    assert_eq!((reply.code, causes(&reply.body)), (400, vec!["query.colour", "query.limit"]), "{}", reply.body);
    assert_eq!(page(&api, "").await.records.len(), 9, "refused uploads stored nothing");

    // edgectl, through a dead address first.
    let servers = format!("127.0.0.1:1,{}", at(follower));
    let config = cluster.trust.edgectl_config();
    let edgectl = |args: &[&str]| {
        let out = Command::new(edgeplane_tests::bin_path("edgectl"))
            .args(["--server", &servers, "--timeout", "5"])
            .args(args)
            .env_remove("EDGEPLANE_SERVERS")
            .env("EDGECTL_CONFIG", &config)
            .output()
            .expect("run edgectl");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert_eq!(out.status.code(), Some(0), "edgectl {args:?}: {stdout}\n{}", String::from_utf8_lossy(&out.stderr));
        stdout
    };
    let printed: DataPage =
        serde_json::from_str(&edgectl(&["-o", "json", "data", "query", "--stream", TEMPERATURE, "--after", "1", "--limit", "3"]))
            .expect("edgectl data query -o json prints a DataPage");
    assert_eq!(seqs(&printed), [2, 3, 4]);
    let table = edgectl(&["data", "tail", "-n", "factory", "--last", "3"]);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 4, "a header and the last three records:\n{table}");
    assert!(lines[0].contains("CURSOR") && lines[1].contains(FRAMES) && lines[1].contains("(opaque, 4 bytes)"), "{table}");
    assert!(lines[2].contains(TEMPERATURE) && lines[2].contains("6.5"), "{table}");
    assert!(lines[3].contains(TEMPERATURE) && lines[3].contains("7.5") && lines[3].contains("temperature"), "{table}");
    let frames = edgectl(&["data", "query", "--output-name", "frames"]);
    assert!(frames.lines().nth(1).is_some_and(|l| l.contains("(opaque, 4 bytes)")), "{frames}");

    // A follower of the stream, asking the leader first, so that it has to fail over too.
    let mut tail = KillOnDrop(
        Command::new(edgeplane_tests::bin_path("edgectl"))
            .args(["--server", &format!("{},{}", at(leader), at(follower)), "-o", "json"])
            .args(["data", "tail", "-f", "--interval-ms", "50", "--last", "1", "--stream", TEMPERATURE])
            .env_remove("EDGEPLANE_SERVERS")
            .env("EDGECTL_CONFIG", &config)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("run edgectl data tail -f"),
    );
    let (lines_tx, mut tailed) = tokio::sync::mpsc::unbounded_channel();
    let stdout = tail.0.stdout.take().expect("piped stdout");
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            let record: StoredRecord = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
            if lines_tx.send(record.record.seq).is_err() {
                return;
            }
        }
    });
    assert_eq!(next_tailed(&mut tailed).await, 7, "--last 1 starts with the newest record");

    // An uploader that resends every record until it is acknowledged, with overlapping
    // windows, while the leader is killed: each record is stored exactly once.
    let uploader = {
        let token = token.clone();
        let servers: Vec<SocketAddr> = cluster.running().into_iter().map(at).collect();
        tokio::spawn(async move {
            let mut server = 0;
            for seq in 8..=40u64 {
                let records: Vec<UpRecord> = (seq.saturating_sub(3).max(1)..=seq).map(|s| record(TEMPERATURE, s)).collect();
                let deadline = Instant::now() + Duration::from_secs(30);
                loop {
                    // Round robin, so that uploads also meet the dead leader and fail over.
                    let addr = servers[server % servers.len()];
                    server += 1;
                    match post(addr, &upload_path(NODE), Some(&token), body(records.clone())).await {
                        Ok((200, _)) => break,
                        // 503/504 or a dead server: the outcome may be unknown, so send it again.
                        Ok((code, answer)) if code >= 500 => eprintln!("upload {seq} to {addr}: {code} {answer}"),
                        Ok((code, answer)) => panic!("upload {seq} to {addr}: {code} {answer}"),
                        Err(e) => eprintln!("upload {seq} to {addr}: {e}"),
                    }
                    assert!(Instant::now() < deadline, "upload {seq} did not succeed within 30 s");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!uploader.is_finished(), "the leader must die while uploads are under way");
    cluster.kill(leader);
    let survivors = cluster.running();
    let new_leader = cluster.wait_for_leader_among(&survivors, Duration::from_secs(10)).await;
    uploader.await.expect("the uploader finished");

    // After the failover, a resend of everything is all duplicates.
    let everything: Vec<UpRecord> = (1..=40).map(|s| record(TEMPERATURE, s)).collect();
    let survivor = survivors.iter().copied().find(|&id| id != new_leader).expect("a follower survives");
    assert_eq!(upload(at(survivor), &token, everything).await, UploadResponse { accepted: 0, duplicates: 40, stale: 0, refused: 0 });
    for id in survivors {
        let after = page(&cluster.api(id), &format!("?stream={TEMPERATURE}")).await;
        assert_eq!(seqs(&after), (1..=40).collect::<Vec<_>>(), "node {id}:\n{}", cluster.all_logs());
        let api = cluster.api(id);
        assert_eq!(api.metric("edgeplane_sink_stored_records").await, Some(42.0), "node {id}");
        assert_eq!(api.metric("edgeplane_sink_stored_readings").await, Some(42.0), "node {id}");
    }
    let duplicates = cluster.api(survivor).metric("edgeplane_sink_records_duplicate_total").await;
    assert!(duplicates.is_some_and(|d| d >= 40.0), "{duplicates:?}");

    // The tail saw every new record once, in order, through the failover.
    let mut followed = Vec::new();
    while followed.last() != Some(&40) {
        followed.push(next_tailed(&mut tailed).await);
    }
    assert_eq!(followed, (8..=40).collect::<Vec<_>>());
}

/// A node that starts over with an empty data directory (a replaced disk) is a new runtime:
/// once the operator frees its name, it enrolls with a new uid and numbers its streams from
/// 1 again. Its records must be stored, not taken for duplicates of the old runtime's. The
/// same runtime enrolling again (a lost certificate) keeps its numbering: a resend is still
/// a duplicate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_starts_over_with_an_empty_disk_is_not_deduplicated_against_its_past() {
    let cluster = Cluster::start(ClusterSpec { subnet: 63, size: 1, ..Default::default() }).await;
    let leader = cluster.wait_for_leader(Duration::from_secs(10)).await;
    let addr = cluster.api_addr(leader);
    let old = enroll(&cluster, addr, "old-disk").await;
    let beating = heartbeat(&cluster, &old);
    let generations = place_streams(&cluster, &cluster.api(leader)).await;
    assert_eq!(upload(addr, &old, (1..=5).map(|s| record_of(generations, TEMPERATURE, s)).collect()).await.accepted, 5);

    // The disk is replaced: the operator deletes the EdgeNode so the name can be taken again.
    let deleted = Api::new(addr).delete(&format!("/apis/edgeplane.io/v1alpha1/edgenodes/{NODE}")).await.expect("delete");
    assert_eq!(deleted.code, 200, "{}", deleted.body);
    drop(beating);
    // The old runtime's certificate ended with its EdgeNode.
    let (code, _) = post(addr, &upload_path(NODE), Some(&old), body(vec![record_of(generations, TEMPERATURE, 6)])).await.expect("post");
    assert_eq!(code, 401);
    let new = enroll(&cluster, addr, "new-disk").await;
    let _beating = heartbeat(&cluster, &new);
    let generations = placed(&cluster, &cluster.api(leader)).await;
    let fresh = upload(addr, &new, (1..=3).map(|s| record_of(generations, TEMPERATURE, s)).collect()).await;
    assert_eq!(fresh, UploadResponse { accepted: 3, duplicates: 0, stale: 0, refused: 0 }, "the new runtime's records are new");

    // The same runtime enrolling again (it lost its certificate; while the certificate is
    // valid that takes a token made for this node) keeps its epoch: what it sent before is a
    // duplicate.
    let made = Api::new(addr)
        .request(
            edgeplane_tests::Method::POST,
            "/v1/bootstrap-tokens",
            Some(json!({"ttlSeconds": 600, "uses": 1, "node": NODE}).to_string().into_bytes()),
        )
        .await
        .expect("token");
    assert_eq!(made.code, 201, "{}", made.body);
    let again = enroll_with(addr, "new-disk", made.body["token"].as_str().expect("token")).await;
    let resend = upload(addr, &again, (2..=4).map(|s| record_of(generations, TEMPERATURE, s)).collect()).await;
    assert_eq!(resend, UploadResponse { accepted: 1, duplicates: 2, stale: 0, refused: 0 });
    // Enrolling again ended the certificate before.
    let (code, _) = post(addr, &upload_path(NODE), Some(&new), body(vec![record_of(generations, TEMPERATURE, 9)])).await.expect("post");
    assert_eq!(code, 401);
}
