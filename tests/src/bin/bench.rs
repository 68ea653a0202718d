//! `edgeplane-bench`: benchmarks against the real binaries. Run through `scripts/bench.sh`,
//! which builds release binaries and points `EDGEPLANE_BIN_DIR` at them.
//!
//! Each figure is printed on its own line as `BENCH <name> <value> <unit>`.
//!
//! ```text
//! edgeplane-bench raft [--clients N] [--seconds S] [--failover-trials T]   (then the same load on etcd)
//! edgeplane-bench api [--clients N] [--seconds S] [--watchers W]
//! edgeplane-bench edge [--clients N] [--seconds S] [--batch R] [--mqtt-messages M] [--drain-readings D]
//! edgeplane-bench failover [--trials T] [--edges E]
//! edgeplane-bench scale [--nodes N] [--replicas R]
//! edgeplane-bench coldstart [--trials T]
//! ```

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use edgeplane_tests::{
    create_resource, ingest_encoded, push_module, ready_condition, workload_wasm, Api, Client, ClientOptions, Cluster, ClusterSpec,
    EdgeRuntime, Method, Mosquitto, Request,
};
use serde_json::json;

fn arg(args: &[String], name: &str, default: u64) -> u64 {
    args.windows(2)
        .find(|w| w[0] == name)
        .map(|w| w[1].parse().unwrap_or_else(|_| panic!("{name} takes a number, got {:?}", w[1])))
        .unwrap_or(default)
}

fn bench(name: &str, value: f64, unit: &str) {
    println!("BENCH {name} {value:.2} {unit}");
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("raft") => raft(&args).await,
        Some("api") => api(&args).await,
        Some("edge") => edge(&args).await,
        Some("failover") => failover(&args).await,
        Some("scale") => scale(&args).await,
        Some("backup") => backup(&args).await,
        Some("coldstart") => coldstart(&args).await,
        _ => {
            eprintln!("usage: edgeplane-bench raft|api|edge|failover|scale|backup|coldstart [--clients N] [--seconds S] [--failover-trials T] [--watchers W]");
            std::process::exit(2);
        }
    }
}

async fn raft(args: &[String]) {
    let clients = arg(args, "--clients", 128);
    let seconds = arg(args, "--seconds", 10);
    let trials = arg(args, "--failover-trials", 20);
    let snapshot_every = arg(args, "--snapshot-every", 50_000);
    // The orchestrator's own defaults (tick, election timeout), as a user runs it.
    let spec = ClusterSpec { subnet: 41, log: "warn".to_owned(), snapshot_every, tick_ms: None, ..Default::default() };
    let mut cluster = Cluster::start(spec).await;
    let leader = cluster.wait_for_leader(Duration::from_secs(10)).await;

    let term_before = cluster.api(leader).cluster().await.expect("cluster status").term;
    let (ours, mut lat) = write_load(&cluster, clients, Duration::from_secs(seconds)).await;
    let term_after = cluster.api(cluster.wait_for_leader(Duration::from_secs(10)).await).cluster().await.expect("cluster status").term;
    // A healthy cluster under load must not hold elections (check quorum, pre-vote).
    bench("raft_elections_during_load", (term_after - term_before) as f64, "elections");
    lat.sort_by(f64::total_cmp);
    bench("raft_commits_per_s", ours, "writes/s");
    bench("raft_commit_p50_ms", percentile(&lat, 50.0), "ms");
    bench("raft_commit_p99_ms", percentile(&lat, 99.0), "ms");
    let api = cluster.api(leader);
    let fsyncs = api.metric("edgeplane_raft_fsync_seconds_count").await.unwrap_or(0.0);
    let fsync_sum = api.metric("edgeplane_raft_fsync_seconds_sum").await.unwrap_or(0.0);
    let entries = api.metric("edgeplane_raft_batch_entries_sum").await.unwrap_or(0.0);
    if fsyncs > 0.0 {
        bench("raft_leader_fsync_mean_ms", 1000.0 * fsync_sum / fsyncs, "ms");
        bench("raft_leader_entries_per_fsync", entries / fsyncs, "entries");
    }

    let mut restored = 0.0;
    for id in cluster.running() {
        restored += cluster.api(id).metric("edgeplane_raft_snapshots_restored_total").await.unwrap_or(0.0);
    }
    // Snapshots sent to followers that fell behind the compacted log during the load.
    bench("raft_snapshots_installed_by_followers", restored, "snapshots");

    let (_, mut single) = write_load(&cluster, 1, Duration::from_secs(3)).await;
    single.sort_by(f64::total_cmp);
    bench("raft_single_client_p50_ms", percentile(&single, 50.0), "ms");

    let mut failovers = Vec::new();
    for trial in 0..trials {
        let ms = leader_failover(&mut cluster).await;
        eprintln!("failover trial {trial}: {ms:.0} ms");
        failovers.push(ms);
    }
    if !failovers.is_empty() {
        failovers.sort_by(f64::total_cmp);
        bench("leader_failover_ms_p50", percentile(&failovers, 50.0), "ms");
        bench("leader_failover_ms_p99", percentile(&failovers, 99.0), "ms");
        bench("leader_failover_ms_max", *failovers.last().expect("non-empty"), "ms");
    }
    drop(cluster);

    // The same load against etcd, on the same machine, right after.
    match Etcd::start(47).await {
        Some(etcd) => {
            let (theirs, mut lat) = etcd.write_load(clients, Duration::from_secs(seconds)).await;
            lat.sort_by(f64::total_cmp);
            bench("etcd_commits_per_s", theirs, "writes/s");
            bench("etcd_commit_p50_ms", percentile(&lat, 50.0), "ms");
            bench("etcd_commit_p99_ms", percentile(&lat, 99.0), "ms");
            bench("raft_vs_etcd_ratio", ours / theirs, "x");
        }
        None => eprintln!("etcd side by side: skipped, no etcd on PATH (Debian: apt-get install etcd-server)"),
    }
}

/// A 3-member etcd cluster (Debian's `etcd-server`) on 127.{subnet}.0.{1,2,3}, secured as an
/// edgeplane cluster is: TLS with client certificates on the client and the peer links, from a
/// CA made for it by `orchestrator init`. Data on disk, fsync on, as etcd runs by default.
struct Etcd {
    children: Vec<std::process::Child>,
    /// `https://ip:port` of each member's client listener.
    endpoints: Vec<String>,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
}

impl Etcd {
    async fn start(subnet: u8) -> Option<Etcd> {
        let etcd = edgeplane_tests::find_program("etcd")?;
        let dir = tempfile::tempdir().expect("tempdir");
        let ip = |i: u8| std::net::Ipv4Addr::new(127, subnet, 0, i);
        let pki = dir.path().join("pki");
        let orchestrator = edgeplane_tests::bin_path("orchestrator");
        let init = std::process::Command::new(&orchestrator)
            .args(["init", "--dir", pki.to_str().expect("utf-8"), "--member", &format!("1={}:1,{}:2", ip(9), ip(9))])
            .output()
            .expect("orchestrator init");
        assert!(init.status.success(), "orchestrator init: {}", String::from_utf8_lossy(&init.stderr));
        // One certificate for all three members, for serving and for the peer links (both
        // usages, as edgeplane's member certificates).
        let certs = dir.path().join("etcd-tls");
        let mut issue = std::process::Command::new(&orchestrator);
        issue.args([
            "pki",
            "issue",
            "--ca-dir",
            pki.to_str().expect("utf-8"),
            "--out-dir",
            certs.to_str().expect("utf-8"),
            "--member",
            "7",
        ]);
        for i in 1..=3 {
            issue.args(["--ip", &ip(i).to_string()]);
        }
        // etcd checks a peer's certificate against the address the peer connects from, and
        // connections between loopback addresses come from 127.0.0.1.
        issue.args(["--ip", "127.0.0.1"]);
        let issued = issue.output().expect("orchestrator pki issue");
        assert!(issued.status.success(), "pki issue: {}", String::from_utf8_lossy(&issued.stderr));
        let (cert, key, ca) = (certs.join("member.crt"), certs.join("member.key"), pki.join("ca.crt"));
        let ports: Vec<(u16, u16)> = (1..=3).map(|i| (edgeplane_tests::free_port(ip(i)), edgeplane_tests::free_port(ip(i)))).collect();
        let initial: Vec<String> = (1..=3u8).map(|i| format!("m{i}=https://{}:{}", ip(i), ports[i as usize - 1].1)).collect();
        let mut children = Vec::new();
        let mut endpoints = Vec::new();
        for i in 1..=3u8 {
            let (client, peer) = ports[i as usize - 1];
            let client_url = format!("https://{}:{client}", ip(i));
            let peer_url = format!("https://{}:{peer}", ip(i));
            let log = std::fs::File::create(dir.path().join(format!("m{i}.log"))).expect("log");
            let child = std::process::Command::new(&etcd)
                .args(["--name", &format!("m{i}"), "--data-dir", dir.path().join(format!("m{i}")).to_str().expect("utf-8")])
                .args(["--listen-client-urls", &client_url, "--advertise-client-urls", &client_url])
                .args(["--listen-peer-urls", &peer_url, "--initial-advertise-peer-urls", &peer_url])
                .args([
                    "--initial-cluster",
                    &initial.join(","),
                    "--initial-cluster-state",
                    "new",
                    "--initial-cluster-token",
                    "edgeplane-bench",
                ])
                .arg("--client-cert-auth")
                .args(["--cert-file", cert.to_str().expect("utf-8"), "--key-file", key.to_str().expect("utf-8")])
                .args(["--trusted-ca-file", ca.to_str().expect("utf-8")])
                .arg("--peer-client-cert-auth")
                .args(["--peer-cert-file", cert.to_str().expect("utf-8"), "--peer-key-file", key.to_str().expect("utf-8")])
                .args(["--peer-trusted-ca-file", ca.to_str().expect("utf-8")])
                .args(["--logger", "zap", "--log-level", "warn"])
                .stdout(log.try_clone().expect("log"))
                .stderr(log)
                .spawn()
                .expect("spawn etcd");
            children.push(child);
            endpoints.push(client_url);
        }
        let admin =
            edgeplane_tls::TlsIdentity::load(&pki.join("admin/client.crt"), &pki.join("admin/client.key")).expect("admin credential");
        let tls = edgeplane_tls::config::client_config(&std::fs::read_to_string(&ca).expect("ca.crt"), Some(&admin)).expect("TLS");
        let http = reqwest::Client::builder().use_preconfigured_tls(tls).timeout(Duration::from_secs(5)).build().expect("an HTTPS client");
        let etcd = Etcd { children, endpoints, http, _dir: dir };
        // Ready when every member takes a write.
        let deadline = Instant::now() + Duration::from_secs(30);
        for endpoint in &etcd.endpoints {
            while !etcd.put(endpoint, "ready", b"1").await {
                if Instant::now() > deadline {
                    let logs: Vec<String> =
                        (1..=3).map(|i| std::fs::read_to_string(etcd._dir.path().join(format!("m{i}.log"))).unwrap_or_default()).collect();
                    panic!("etcd did not take a write at {endpoint} within 30 s; its logs:\n{}", logs.join("\n---\n"));
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        Some(etcd)
    }

    /// One put through etcd's HTTP/JSON gateway; whether etcd acknowledged it.
    async fn put(&self, endpoint: &str, key: &str, value: &[u8]) -> bool {
        use base64::Engine as _;
        let b64 = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
        let body = json!({ "key": b64(key.as_bytes()), "value": b64(value) });
        match self.http.post(format!("{endpoint}/v3/kv/put")).json(&body).send().await {
            Ok(response) => response.status().is_success() && response.bytes().await.is_ok(),
            Err(_) => false,
        }
    }

    /// What [`write_load`] does to an edgeplane cluster: `clients` writers spread over the
    /// members, fresh keys back to back, the same value bytes.
    async fn write_load(self, clients: u64, duration: Duration) -> (f64, Vec<f64>) {
        let etcd = Arc::new(self);
        closed_loop(clients, duration, move |c, i| {
            let etcd = Arc::clone(&etcd);
            async move {
                let endpoint = &etcd.endpoints[c as usize % etcd.endpoints.len()];
                etcd.put(endpoint, &format!("/bench/c{c}-{i}"), write_value(c, i).to_string().as_bytes()).await
            }
        })
        .await
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// `clients` concurrent writers spread over every node, each writing fresh keys back to back.
/// Returns committed writes per second and the latency of each in ms.
async fn write_load(cluster: &Cluster, clients: u64, duration: Duration) -> (f64, Vec<f64>) {
    let apis: Vec<Api> = cluster.running().into_iter().map(|id| cluster.api(id)).collect();
    // Distinct keys per run, so repeated runs against one cluster always create.
    let run = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    closed_loop(clients, duration, move |c, i| {
        let api = apis[c as usize % apis.len()].clone();
        async move {
            let path = format!("/v1/store/bench/c{c}-{run}-{i}");
            api.put(&path, &write_value(c, i)).await.is_ok_and(|r| r.code == 201 || r.code == 200)
        }
    })
    .await
}

/// The value every write benchmark stores, ours and etcd's alike (56 bytes as JSON).
fn write_value(client: u64, seq: u64) -> serde_json::Value {
    json!({ "client": client, "seq": seq, "payload": "0123456789abcdef" })
}

/// `clients` writers, each calling `write(client, seq)` back to back until stopped; counts
/// what they got acknowledged over `duration`, after half a second to warm up connections
/// and the leader's pipeline. Returns acknowledged writes per second and each one's latency
/// in ms.
async fn closed_loop<F, Fut>(clients: u64, duration: Duration, write: F) -> (f64, Vec<f64>)
where
    F: Fn(u64, u64) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let write = Arc::new(write);
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let latencies = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for c in 0..clients {
        let (write, stop, done, latencies) = (Arc::clone(&write), Arc::clone(&stop), Arc::clone(&done), Arc::clone(&latencies));
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let started = Instant::now();
                if write(c, i).await {
                    mine.push(started.elapsed().as_secs_f64() * 1000.0);
                    done.fetch_add(1, Ordering::Relaxed);
                }
                i += 1;
            }
            latencies.lock().expect("lock").extend(mine);
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let start_count = done.load(Ordering::Relaxed);
    let started = Instant::now();
    tokio::time::sleep(duration).await;
    let count = done.load(Ordering::Relaxed) - start_count;
    let elapsed = started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    let lat = std::mem::take(&mut *latencies.lock().expect("lock"));
    (count as f64 / elapsed, lat)
}

/// SIGKILLs the leader and measures until a write *sent after the kill* is acknowledged
/// (so it can only have been committed by the new leader). Then restores the cluster.
async fn leader_failover(cluster: &mut Cluster) -> f64 {
    let leader = cluster.wait_for_leader(Duration::from_secs(20)).await;
    let survivors: Vec<u64> = cluster.running().into_iter().filter(|&id| id != leader).collect();
    let probes: Vec<Api> = survivors.iter().map(|&id| Api::with_timeout(cluster.api_addr(id), Duration::from_millis(100))).collect();
    cluster.kill(leader);
    let killed = Instant::now();
    let mut i = 0u64;
    let elapsed = loop {
        // Probe every survivor at once; a request to a node whose proposal went to the dead
        // leader would otherwise hide a faster answer from the other one.
        let attempt = probes.iter().map(|api| {
            i += 1;
            let path = format!("/v1/store/failover/p{}-{i}", killed.elapsed().as_nanos());
            let api = api.clone();
            async move { api.put(&path, &json!(1)).await.map(|r| r.code) }
        });
        let codes = futures::future::join_all(attempt).await;
        if codes.iter().any(|c| matches!(c, Ok(201) | Ok(200))) {
            break killed.elapsed();
        }
        assert!(killed.elapsed() < Duration::from_secs(30), "no write committed within 30 s of killing the leader");
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    cluster.restart(leader);
    // Let the restarted node rejoin before the next trial.
    let all = cluster.running();
    cluster.wait_for_leader_among(&all, Duration::from_secs(20)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    elapsed.as_secs_f64() * 1000.0
}

const RESOURCES: &str = "/apis/edgeplane.io/v1alpha1/namespaces/bench/models";

fn model(name: &str) -> serde_json::Value {
    json!({ "apiVersion": "edgeplane.io/v1alpha1", "kind": "Model", "metadata": { "name": name },
            "spec": { "version": "1.0.0", "format": "bench/v1", "parameters": { "w": [0.5, 1.5, 2.5] } } })
}

/// Resource creates through the REST API (validation, Raft, apply) from concurrent clients,
/// and one write stream fanned out to many watchers.
async fn api(args: &[String]) {
    let clients = arg(args, "--clients", 64);
    let seconds = arg(args, "--seconds", 10);
    let watchers = arg(args, "--watchers", 100);
    let spec = ClusterSpec { subnet: 42, log: "warn".to_owned(), tick_ms: None, ..Default::default() };
    let cluster = Cluster::start(spec).await;
    cluster.wait_for_leader(Duration::from_secs(10)).await;
    let apis: Vec<Api> = cluster.running().into_iter().map(|id| cluster.api(id)).collect();

    // Creates with concurrent clients spread over the three nodes.
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for c in 0..clients {
        let api = apis[c as usize % apis.len()].clone();
        let (stop, done) = (Arc::clone(&stop), Arc::clone(&done));
        tasks.push(tokio::spawn(async move {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let body = model(&format!("c{c}-{i}")).to_string().into_bytes();
                if let Ok(r) = api.request(reqwest::Method::POST, RESOURCES, Some(body)).await {
                    if r.code == 201 {
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                }
                i += 1;
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (start, started) = (done.load(Ordering::Relaxed), Instant::now());
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let rate = (done.load(Ordering::Relaxed) - start) as f64 / started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    bench("api_writes_per_s", rate, "creates/s");

    // Watch fan-out: watchers from the current version on every node, one writer.
    let status = apis[0].cluster().await.expect("status");
    let from = status.applied_index;
    let received = Arc::new(AtomicU64::new(0));
    let mut watch_tasks = Vec::new();
    for w in 0..watchers {
        let addr = cluster.api_addr(cluster.running()[w as usize % apis.len()]);
        let path = format!("{RESOURCES}?watch=true&resourceVersion={from}");
        let received = Arc::clone(&received);
        watch_tasks.push(tokio::spawn(async move {
            let client =
                Client::new(&[addr.to_string()], ClientOptions::default(), edgeplane_tests::trust_for(addr).admin_tls()).expect("client");
            let Ok(Ok((_, mut resp))) = client.open(Request::get(path).attempt_timeout(Duration::from_secs(3600))).await else { return };
            while let Ok(Some(chunk)) = resp.chunk().await {
                let events = chunk.iter().filter(|b| **b == b'\n').count() as u64;
                received.fetch_add(events, Ordering::Relaxed);
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let writes = 1_000u64;
    let base = received.load(Ordering::Relaxed);
    let started = Instant::now();
    let writer = apis[0].clone();
    let writer_task = tokio::spawn(async move {
        let mut ok = 0u64;
        for i in 0..writes {
            let body = model(&format!("fanout-{i}")).to_string().into_bytes();
            if writer.request(reqwest::Method::POST, RESOURCES, Some(body)).await.is_ok_and(|r| r.code == 201) {
                ok += 1;
            }
        }
        ok
    });
    let written = writer_task.await.expect("writer");
    let expected = base + written * watchers;
    let deadline = Instant::now() + Duration::from_secs(60);
    while received.load(Ordering::Relaxed) < expected && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let delivered = received.load(Ordering::Relaxed) - base;
    for t in watch_tasks {
        t.abort();
    }
    bench("watch_fanout_events_per_s", delivered as f64 / elapsed, "events/s");
    bench("watch_fanout_delivered_ratio", delivered as f64 / (written * watchers) as f64, "ratio");
    println!("# fan-out: {written} writes to {watchers} watchers, {delivered} events delivered in {elapsed:.2} s");
}

/// Backup and restore of a state of `--resources` (10,000) Models: `edgectl backup create`
/// against a follower (the median of 5), and the restore drill: every member SIGKILLed and its
/// data deleted, then `orchestrator restore` on each and the new cluster started, until it
/// answers a linearizable list holding every resource.
async fn backup(args: &[String]) {
    let resources = arg(args, "--resources", 10_000);
    let spec = ClusterSpec { subnet: 46, log: "warn".to_owned(), tick_ms: None, ..Default::default() };
    let mut cluster = Cluster::start(spec).await;
    let leader = cluster.wait_for_leader(Duration::from_secs(10)).await;
    let apis: Vec<Api> = cluster.running().into_iter().map(|id| cluster.api(id)).collect();
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for c in 0..64 {
        let (api, next) = (apis[c % apis.len()].clone(), Arc::clone(&next));
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= resources {
                    return;
                }
                let body = model(&format!("r{i}")).to_string().into_bytes();
                loop {
                    match api.request(reqwest::Method::POST, RESOURCES, Some(body.clone())).await {
                        Ok(r) if r.code == 201 || r.code == 409 => break,
                        _ => tokio::time::sleep(Duration::from_millis(50)).await,
                    }
                }
            }
        }));
    }
    for t in tasks {
        t.await.expect("a writer");
    }
    let count = |api: Api| async move {
        let list = api.get(RESOURCES).await.ok()?;
        (list.code == 200).then(|| list.body["items"].as_array().map_or(0, Vec::len) as u64)
    };
    assert_eq!(count(apis[0].clone()).await, Some(resources), "every resource was created");

    let dir = tempfile::tempdir().expect("tempdir");
    let key = dir.path().join("backup.key");
    let made =
        std::process::Command::new(edgeplane_tests::bin_path("edgectl")).args(["backup", "key"]).arg(&key).output().expect("edgectl");
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    let follower = cluster.running().into_iter().find(|&id| id != leader).expect("a follower");
    let mut times = Vec::new();
    let mut file = std::path::PathBuf::new();
    for run in 0..5 {
        file = dir.path().join(format!("b{run}.epbackup"));
        let started = Instant::now();
        let out = edgeplane_tests::edgectl(&[cluster.api_addr(follower)])
            .args(["backup", "create"])
            .arg(&file)
            .arg("--key")
            .arg(&key)
            .output()
            .expect("edgectl backup create");
        times.push(started.elapsed().as_secs_f64() * 1000.0);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    let size = std::fs::metadata(&file).map_or(0, |m| m.len());
    let runs = times.clone();
    times.sort_by(f64::total_cmp);
    bench("backup_ms", percentile(&times, 50.0), "ms");
    println!("# backup of {resources} resources: {size} bytes sealed; runs {runs:.0?} ms");

    let killed = Instant::now();
    for id in 1..=3 {
        cluster.kill(id);
        std::fs::remove_dir_all(cluster.data_dir(id)).expect("delete the data directory");
    }
    let started = Instant::now();
    let mut restore_each = Vec::new();
    for id in 1..=3 {
        let one = Instant::now();
        let out =
            cluster.restore(id, &[std::ffi::OsStr::new("--from"), file.as_os_str(), std::ffi::OsStr::new("--backup-key"), key.as_os_str()]);
        assert!(out.status.success(), "restore: {}", String::from_utf8_lossy(&out.stderr));
        restore_each.push(one.elapsed().as_millis());
    }
    for id in 1..=3 {
        cluster.start_member(id);
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if count(cluster.api(1)).await == Some(resources) {
            break;
        }
        assert!(Instant::now() < deadline, "the restored cluster did not serve every resource\n{}", cluster.all_logs());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    bench("restore_ms", started.elapsed().as_secs_f64() * 1000.0, "ms");
    println!(
        "# restore: orchestrator restore per member {restore_each:?} ms, then start, elect and list all {resources}; {} ms after the kill",
        killed.elapsed().as_millis()
    );
}

const NS: &str = "bench";

/// Module cold start on an edge runtime (release build), from the Assignment reaching the
/// node to its instance running, as the node reports it: with the code the orchestrators
/// compiled for the node ahead of time (`aot`), and compiled on a node started with
/// `--compile-locally` (`jit`). Every trial pushes the module anew (a custom section with a
/// nonce makes a new digest), so neither node has it loaded or cached; the `aot` Workload is
/// created once the orchestrator has compiled the push, as a release is pushed before it is
/// rolled out. The first round teaches the orchestrator the node's target and is not counted.
async fn coldstart(args: &[String]) {
    let trials = arg(args, "--trials", 5);
    let cluster = Cluster::start(ClusterSpec { subnet: 48, size: 1, log: "warn".to_owned(), tick_ms: None, ..Default::default() }).await;
    let leader = cluster.wait_for_leader(Duration::from_secs(10)).await;
    let api = cluster.api(leader);
    let model = json!({"apiVersion": "edgeplane.io/v1alpha1", "kind": "Model", "metadata": {"name": "temperature", "namespace": NS},
        "spec": {"version": "1.0.0", "format": "zscore-logistic/v1",
                 "parameters": {"mean": [20.0, 0.0], "stddev": [2.0, 1.0], "weights": [1.5, 0.0], "bias": [-6.0]}}});
    create_resource(&api, NS, "models", &model).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let servers = [cluster.api_addr(leader)];
    let aot = EdgeRuntime::start("aot-edge", &servers, dir.path().join("aot"), &["--log", "warn", "--label", "compile=aot"]).await;
    let jit =
        EdgeRuntime::start("jit-edge", &servers, dir.path().join("jit"), &["--log", "warn", "--label", "compile=jit", "--compile-locally"])
            .await;
    let native_dir = cluster.data_dir(leader).join("native");
    for workload in ["threshold-filter", "window-aggregator", "anomaly-detector", "ts-compressor"] {
        let config = match workload {
            "threshold-filter" => json!({"min": 0.0, "max": 100.0}),
            _ => json!({}),
        };
        let (mut aot_ms, mut jit_ms) = (Vec::new(), Vec::new());
        for trial in 0..=trials {
            let wasm = with_nonce(workload_wasm(workload), &format!("{workload}-{trial}"));
            let digest = edgeplane_api::hex::sha256(&wasm);
            let name = format!("{workload}-cs");
            let version = format!("1.0.{trial}");
            let pushed = api.request(Method::POST, &format!("/v1/modules/{NS}/{name}/{version}"), Some(wasm)).await.expect("push");
            assert!(pushed.code == 201, "pushing {name}@{version}: {} {}", pushed.code, pushed.body);
            if trial > 0 {
                let deadline = Instant::now() + Duration::from_secs(60);
                while !std::fs::read_dir(&native_dir)
                    .into_iter()
                    .flatten()
                    .flatten()
                    .any(|f| f.file_name().to_string_lossy().starts_with(&digest))
                {
                    assert!(
                        Instant::now() < deadline,
                        "the orchestrator did not compile {name}@{version} ahead of time:\n{}",
                        cluster.log_tail(leader)
                    );
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
            for (edge, label) in [(&aot, "aot"), (&jit, "jit")] {
                let mut w = edge_workload(
                    &format!("cs-{label}"),
                    &format!("{name}@{version}"),
                    "cs/in",
                    json!([{"name": "out", "sink": {"type": "log"}}]),
                    config.clone(),
                );
                w["spec"]["placement"] = json!({"nodeSelector": {"compile": label}});
                if workload == "anomaly-detector" {
                    w["spec"]["modelRef"] = json!("temperature");
                }
                create_resource(&api, NS, "workloads", &w).await;
                edge.wait_running(1, Duration::from_secs(60)).await;
                let instance = edge.instances().await.pop().expect("one instance");
                let started = &instance["started"];
                let expected = if label == "aot" { "Precompiled" } else { "Compiled" };
                assert_eq!(started["module"], expected, "{label}, {name}@{version}: {instance}\n{}", edge.log_tail());
                let ms = started["micros"].as_f64().expect("micros") / 1000.0;
                if trial > 0 {
                    if label == "aot" {
                        aot_ms.push(ms)
                    } else {
                        jit_ms.push(ms)
                    }
                }
                let deleted =
                    api.delete(&format!("/apis/edgeplane.io/v1alpha1/namespaces/{NS}/workloads/cs-{label}")).await.expect("delete");
                assert_eq!(deleted.code, 200, "{}", deleted.body);
                let deadline = Instant::now() + Duration::from_secs(30);
                while !edge.instances().await.is_empty() {
                    assert!(Instant::now() < deadline, "{label} kept its instance:\n{}", edge.log_tail());
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
        aot_ms.sort_by(f64::total_cmp);
        jit_ms.sort_by(f64::total_cmp);
        let short = workload.replace('-', "_");
        let (aot_p50, jit_p50) = (percentile(&aot_ms, 50.0), percentile(&jit_ms, 50.0));
        bench(&format!("module_cold_start_ms_aot_{short}"), aot_p50, "ms");
        bench(&format!("module_cold_start_ms_jit_{short}"), jit_p50, "ms");
        bench(&format!("module_cold_start_jit_vs_aot_ratio_{short}"), jit_p50 / aot_p50, "x");
    }
}

/// The module with a custom section appended: the same code under a new digest.
fn with_nonce(mut wasm: Vec<u8>, nonce: &str) -> Vec<u8> {
    let name = b"edgeplane.nonce";
    let mut section = vec![name.len() as u8];
    section.extend_from_slice(name);
    section.extend_from_slice(nonce.as_bytes());
    assert!(section.len() < 128, "one byte of LEB128 length");
    wasm.push(0);
    wasm.push(section.len() as u8);
    wasm.extend_from_slice(&section);
    wasm
}

fn edge_workload(name: &str, module: &str, input: &str, outputs: serde_json::Value, config: serde_json::Value) -> serde_json::Value {
    json!({
        "apiVersion": "edgeplane.io/v1alpha1", "kind": "Workload",
        "metadata": {"name": name, "namespace": NS},
        "spec": {"module": module, "inputs": [input], "outputs": outputs, "config": config,
                 "resources": {"memoryMib": 64, "batchTimeMs": 1000}}
    })
}

/// The `ts`th reading of the benchmark's sensors: 100 devices, normal but for one anomaly in
/// 1,000.
fn sensor_reading(ts: u64) -> (u64, f64) {
    let value = if ts % 1000 == 999 { 35.0 } else { 20.0 + (ts % 7) as f64 * 0.1 };
    (ts % 100, value)
}

/// `count` readings from `first_ts` on, encoded as a v1 batch straight into one buffer: the
/// load generator shares the machine with the edge it measures, and building a `Reading`
/// (two strings) per reading took three quarters of its CPU.
fn sensor_batch(first_ts: u64, count: u64) -> Vec<u8> {
    static DEVICES: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    let devices = DEVICES.get_or_init(|| (0..100).map(|d| format!("press-{d}")).collect());
    const METRIC: &str = "temperature";
    let mut out = Vec::with_capacity(4 + count as usize * (20 + "press-99".len() + METRIC.len()));
    out.extend_from_slice(&u32::try_from(count).expect("a batch of fewer than 2^32 readings").to_le_bytes());
    for ts in first_ts..first_ts + count {
        let (device, value) = sensor_reading(ts);
        out.extend_from_slice(&ts.to_le_bytes());
        out.extend_from_slice(&value.to_le_bytes());
        for name in [devices[device as usize].as_str(), METRIC] {
            out.extend_from_slice(&(name.len() as u16).to_le_bytes());
            out.extend_from_slice(name.as_bytes());
        }
    }
    out
}

/// The data plane of one edge runtime (release build) with one orchestrator: ingest ->
/// filter -> detector -> outbox over HTTP, latency at a steady rate, MQTT through mosquitto
/// (against mosquitto alone as the baseline), and the outbox draining after a cut-off.
async fn edge(args: &[String]) {
    let clients = arg(args, "--clients", 4);
    let seconds = arg(args, "--seconds", 10);
    let batch = arg(args, "--batch", 10_000);
    let mqtt_messages = arg(args, "--mqtt-messages", 20_000);
    let drain_readings = arg(args, "--drain-readings", 500_000);
    let mut cluster =
        Cluster::start(ClusterSpec { subnet: 43, size: 1, log: "warn".to_owned(), tick_ms: None, ..Default::default() }).await;
    let leader = cluster.wait_for_leader(Duration::from_secs(10)).await;
    let api = cluster.api(leader);
    push_module(&api, NS, "threshold-filter", workload_wasm("threshold-filter")).await;
    push_module(&api, NS, "anomaly-detector", workload_wasm("anomaly-detector")).await;
    let model = json!({"apiVersion": "edgeplane.io/v1alpha1", "kind": "Model", "metadata": {"name": "temperature", "namespace": NS},
        "spec": {"version": "1.0.0", "format": "zscore-logistic/v1",
                 "parameters": {"mean": [20.0, 0.0], "stddev": [2.0, 1.0], "weights": [1.5, 0.0], "bias": [-6.0]}}});
    create_resource(&api, NS, "models", &model).await;
    let sane = json!({"min": -50, "max": 150, "forwardInRange": true});
    create_resource(
        &api,
        NS,
        "workloads",
        &edge_workload(
            "sanity",
            "threshold-filter@1.0.0",
            "sensors/temperature",
            json!([{"name": "in-range", "topic": "sensors/clean"}]),
            sane,
        ),
    )
    .await;
    let mut detector = edge_workload(
        "detector",
        "anomaly-detector@1.0.0",
        "sensors/clean",
        json!([{"name": "alerts", "sink": {"type": "cloud"}}]),
        json!({}),
    );
    detector["spec"]["modelRef"] = json!("temperature");
    create_resource(&api, NS, "workloads", &detector).await;
    // For the drain: everything to the cloud.
    let pass = json!({"min": -1e12, "max": 1e12, "forwardInRange": true});
    create_resource(
        &api,
        NS,
        "workloads",
        &edge_workload("forward", "threshold-filter@1.0.0", "sensors/raw", json!([{"name": "in-range", "sink": {"type": "cloud"}}]), pass),
    )
    .await;

    let broker = Mosquitto::start(std::net::Ipv4Addr::new(127, 43, 0, 20));
    let dir = tempfile::tempdir().expect("tempdir");
    let broker_addr = broker.addr.to_string();
    let mut edge_args = vec!["--log", "warn", "--mqtt-broker", &broker_addr, "--outbox-max-mib", "1024"];
    // The outbox is sealed at rest by default; this measures what that costs.
    if args.iter().any(|a| a == "--plaintext-storage") {
        edge_args.push("--plaintext-storage");
    }
    let edge = EdgeRuntime::start("bench-edge", &[cluster.api_addr(leader)], dir.path().join("edge"), &edge_args).await;
    edge.wait_running(3, Duration::from_secs(60)).await;
    let http = edge.http().await;

    // Throughput: `clients` producers sending binary batches back to back.
    let stop = Arc::new(AtomicBool::new(false));
    let accepted = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for c in 0..clients {
        let (stop, accepted, http) = (stop.clone(), accepted.clone(), http.clone());
        tasks.push(tokio::spawn(async move {
            let mut ts = c * 1_000_000_000;
            while !stop.load(Ordering::Relaxed) {
                let body = sensor_batch(ts, batch);
                ts += batch;
                if ingest_encoded(&http, "sensors/temperature", body).await.0 == 200 {
                    accepted.fetch_add(batch, Ordering::Relaxed);
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (start, started) = (accepted.load(Ordering::Relaxed), Instant::now());
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let rate = (accepted.load(Ordering::Relaxed) - start) as f64 / started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    bench("edge_readings_per_s", rate, "readings/s");

    // Added latency at a steady 10,000 readings/s: 100 requests of 100 readings a second,
    // each timed from sending to the answer (through both workloads and the outbox sync).
    let mut latencies = Vec::new();
    let mut ticker = tokio::time::interval(Duration::from_millis(10));
    let mut ts = 9_000_000_000u64;
    for _ in 0..(100 * seconds.max(5)) {
        ticker.tick().await;
        let body = sensor_batch(ts, 100);
        ts += 100;
        let sent = Instant::now();
        let (status, answer) = ingest_encoded(&http, "sensors/temperature", body).await;
        assert_eq!(status, 200, "{answer}");
        latencies.push(sent.elapsed().as_secs_f64() * 1000.0);
    }
    latencies.sort_by(f64::total_cmp);
    bench("edge_added_latency_ms_p50", percentile(&latencies, 50.0), "ms");
    bench("edge_added_latency_ms_p99", percentile(&latencies, 99.0), "ms");

    // MQTT: single-reading messages published with mosquitto_pub. The baseline is the broker
    // alone: the same publish with mosquitto_sub as the consumer.
    let lines: String = (0..mqtt_messages)
        .map(|i| {
            format!(
                "{{\"ts\":{i},\"device\":\"press-{}\",\"metric\":\"temperature\",\"value\":{}}}\n",
                i % 100,
                20.0 + (i % 7) as f64 * 0.1
            )
        })
        .collect();
    let sub = std::process::Command::new(edgeplane_tests::find_program("mosquitto_sub").expect("mosquitto_sub"))
        .args([
            "-h",
            &broker.addr.ip().to_string(),
            "-p",
            &broker.addr.port().to_string(),
            "-q",
            "1",
            "-t",
            "baseline/temperature",
            "-C",
            &mqtt_messages.to_string(),
        ])
        .args(broker.tls_args())
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("mosquitto_sub");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = Instant::now();
    broker.publish_lines("baseline/temperature", &lines);
    let output = tokio::task::spawn_blocking(move || sub.wait_with_output()).await.expect("join").expect("mosquitto_sub");
    assert!(output.status.success());
    let baseline = mqtt_messages as f64 / started.elapsed().as_secs_f64();
    let before = edge.stats().await["node"]["readingsIn"].as_u64().unwrap_or(0);
    let started = Instant::now();
    broker.publish_lines("sensors/temperature", &lines);
    let deadline = Instant::now() + Duration::from_secs(120);
    while edge.stats().await["node"]["readingsIn"].as_u64().unwrap_or(0) < before + mqtt_messages {
        assert!(Instant::now() < deadline, "the edge did not ingest {mqtt_messages} MQTT messages:\n{}", edge.log_tail());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mqtt_rate = mqtt_messages as f64 / started.elapsed().as_secs_f64();
    bench("edge_mqtt_msgs_per_s", mqtt_rate, "msgs/s");
    bench("mosquitto_alone_msgs_per_s", baseline, "msgs/s");
    bench("edge_mqtt_vs_mosquitto_alone_ratio", mqtt_rate / baseline, "ratio");

    // Drain: the cloud cut off while `drain_readings` readings are forwarded to it, then back.
    cluster.kill(leader);
    let per_batch = 1_000;
    let mut ts = 20_000_000_000u64;
    for _ in 0..drain_readings / per_batch {
        let (status, answer) = ingest_encoded(&http, "sensors/raw", sensor_batch(ts, per_batch)).await;
        assert_eq!(status, 200, "{answer}");
        ts += per_batch;
    }
    let pending = |s: &serde_json::Value| s["outbox"]["pendingReadings"].as_u64().unwrap_or(0);
    let backlog = pending(&edge.stats().await);
    cluster.restart(leader);
    cluster.wait_for_leader(Duration::from_secs(20)).await;
    let started = Instant::now();
    let deadline = started + Duration::from_secs(300);
    loop {
        let s = edge.stats().await;
        if pending(&s) == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "the outbox did not drain: {s}\n{}", edge.log_tail());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let drain = backlog as f64 / started.elapsed().as_secs_f64();
    bench("outbox_drain_readings_per_s", drain, "readings/s");
    let s = edge.stats().await;
    println!("# edge: {} readings in ({} bytes), {} bytes uploaded", s["node"]["readingsIn"], s["node"]["bytesIn"], s["node"]["bytesUp"]);
}

/// Edge failover with the default settings (500 ms heartbeats; Down 250 ms after a node's
/// heartbeat connection closed, or after 1.5 s of silence): from the SIGKILL of the edge
/// runtime running a workload to the first batch that workload accepts on another node
/// (`edge_failover_*`); then the same from a SIGSTOP, whose connections stay open as across
/// a partition (`edge_partition_failover_*`). The runtime is started again (or thawed)
/// between trials, and after each the other nodes must not be reported Down.
async fn failover(args: &[String]) {
    let trials = arg(args, "--trials", 20);
    let edge_count = arg(args, "--edges", 3);
    let spec = ClusterSpec { subnet: 44, log: "warn".to_owned(), tick_ms: None, ..Default::default() };
    let cluster = Cluster::start(spec).await;
    let leader = cluster.wait_for_leader(Duration::from_secs(10)).await;
    let api = cluster.api(leader);
    push_module(&api, NS, "threshold-filter", workload_wasm("threshold-filter")).await;
    let pass = json!({"min": -1e12, "max": 1e12, "forwardInRange": true});
    create_resource(
        &api,
        NS,
        "workloads",
        &edge_workload("failover", "threshold-filter@1.0.0", "sensors/raw", json!([{"name": "in-range", "sink": {"type": "cloud"}}]), pass),
    )
    .await;
    let servers: Vec<std::net::SocketAddr> = cluster.running().iter().map(|&id| cluster.api_addr(id)).collect();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut edges: Vec<EdgeRuntime> = Vec::new();
    for i in 0..edge_count {
        edges.push(EdgeRuntime::start(&format!("failover-{i}"), &servers, dir.path().join(format!("edge-{i}")), &["--log", "warn"]).await);
    }
    let assignment = format!("/apis/edgeplane.io/v1alpha1/namespaces/{NS}/assignments/failover-0");
    let placed_on = async |apis: &[Api]| -> Option<String> {
        for api in apis {
            if let Ok(reply) = api.get(&assignment).await {
                if reply.code == 200 {
                    return reply.body.pointer("/spec/nodeName").and_then(serde_json::Value::as_str).map(str::to_owned);
                }
            }
        }
        None
    };
    let apis: Vec<Api> = servers.iter().map(|a| Api::with_timeout(*a, Duration::from_secs(2))).collect();
    // Killed edges (the kernel closes their connections), then frozen ones (SIGSTOP: the
    // connections stay open and silence is all the leader has, as across a partition).
    let mut killed_ms = Vec::new();
    let mut frozen_ms = Vec::new();
    let mut healthy_reported_down = 0;
    for trial in 0..2 * trials {
        let freeze = trial >= trials;
        // Settled: the replica runs and takes readings.
        let deadline = Instant::now() + Duration::from_secs(60);
        let victim = loop {
            if let Some(node) = placed_on(&apis).await {
                let edge = edges.iter().find(|e| e.name == node).expect("one of ours");
                if ingest_encoded(&edge.http().await, "sensors/raw", sensor_batch(trial * 1000, 10)).await.0 == 200 {
                    break edges.iter().position(|e| e.name == node).expect("found");
                }
            }
            assert!(Instant::now() < deadline, "trial {trial}: the workload does not run");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let struck = Instant::now();
        if freeze {
            edges[victim].signal(19); // SIGSTOP
        } else {
            edges[victim].kill();
        }
        let deadline = struck + Duration::from_secs(60);
        let elapsed = loop {
            if let Some(node) = placed_on(&apis).await.filter(|n| *n != edges[victim].name) {
                let edge = edges.iter().find(|e| e.name == node).expect("one of ours");
                if ingest_encoded(&edge.http().await, "sensors/raw", sensor_batch(trial * 1000 + 500, 10)).await.0 == 200 {
                    break struck.elapsed();
                }
            }
            assert!(Instant::now() < deadline, "trial {trial}: the workload did not move");
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        eprintln!("failover trial {trial} ({}): {} ms", if freeze { "frozen" } else { "killed" }, elapsed.as_millis());
        if freeze {
            frozen_ms.push(elapsed.as_secs_f64() * 1000.0);
            edges[victim].signal(18); // SIGCONT
        } else {
            killed_ms.push(elapsed.as_secs_f64() * 1000.0);
            edges[victim].start_again();
        }
        // The others heartbeated all along: none of them may have been judged Down.
        for (i, edge) in edges.iter().enumerate().filter(|&(i, _)| i != victim) {
            let path = format!("/apis/edgeplane.io/v1alpha1/edgenodes/{}", edge.name);
            let reply = api.get(&path).await.expect("reads the EdgeNode");
            if ready_condition(&reply.body).is_some_and(|c| c["reason"] == "NodeDown") {
                eprintln!("trial {trial}: healthy node {i} ({}) is reported Down", edge.name);
                healthy_reported_down += 1;
            }
        }
        // Wait until the runtime heartbeats again, so the next trial has somewhere to go.
        edges[victim].status_addr().await;
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    for (kind, times) in [("edge_failover", &mut killed_ms), ("edge_partition_failover", &mut frozen_ms)] {
        times.sort_by(f64::total_cmp);
        bench(&format!("{kind}_ms_p50"), percentile(times, 50.0), "ms");
        bench(&format!("{kind}_ms_p99"), percentile(times, 99.0), "ms");
        bench(&format!("{kind}_ms_max"), *times.last().expect("trials"), "ms");
    }
    bench("edge_failover_healthy_nodes_reported_down", f64::from(healthy_reported_down), "nodes");
}

/// CPU seconds a process has used (user + system), from /proc.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The fields after the command name (which may hold spaces) start after its ')'.
    let fields: Vec<&str> = stat.rsplit_once(')').map_or("", |(_, rest)| rest).split_whitespace().collect();
    let ticks: f64 = fields.get(11..13).map_or(0.0, |f| f.iter().filter_map(|x| x.parse::<f64>().ok()).sum());
    // USER_HZ is 100 on Linux.
    ticks / 100.0
}

/// What the simulated nodes' heartbeats came to.
#[derive(Default)]
struct BeatCounters {
    sent: AtomicU64,
    failures: AtomicU64,
}

impl BeatCounters {
    fn failed(&self, name: &str, why: &str) {
        if self.failures.fetch_add(1, Ordering::Relaxed) == 0 {
            eprintln!("# first failed heartbeat ({name}): {why}");
        }
    }
}

/// One simulated node's heartbeats at 1 Hz, `phase` into each second, on a stream to the
/// leader; a stream that fails or ends counts as a failure and is opened again.
async fn stream_heartbeats(name: String, client: Arc<Client>, leader: String, body: Vec<u8>, phase: Duration, counters: Arc<BeatCounters>) {
    use edgeplane_api::node::{heartbeat_stream_path, HeartbeatStreamEvent, NDJSON};
    use futures::StreamExt;
    let mut line = body;
    line.push(b'\n');
    let path = heartbeat_stream_path(&name);
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + phase, Duration::from_secs(1));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let (lines, body) = edgeplane_client::fed_body(1);
        let opened = client.open_stream(&leader, &path, NDJSON, body, Duration::from_secs(10));
        lines.try_send(line.clone()).expect("an empty channel takes a line");
        counters.sent.fetch_add(1, Ordering::Relaxed);
        let mut answers = match opened.await {
            Ok(Ok(live)) => live.bytes_stream(),
            Ok(Err(refusal)) => {
                counters.failed(&name, &refusal.status_error().to_string());
                continue;
            }
            Err(e) => {
                counters.failed(&name, &e.to_string());
                continue;
            }
        };
        let mut answer_lines = edgeplane_client::Lines::default();
        let why = loop {
            tokio::select! {
                _ = ticker.tick() => {
                    if lines.try_send(line.clone()).is_ok() {
                        counters.sent.fetch_add(1, Ordering::Relaxed);
                    }
                }
                answer = answers.next() => match answer {
                    Some(Ok(chunk)) => {
                        answer_lines.push(&chunk);
                        let mut ended = None;
                        while let Some(line) = answer_lines.next_line() {
                            let event: HeartbeatStreamEvent = serde_json::from_slice(&line).expect("stream event");
                            if let Some(end) = event.end {
                                ended = Some(end.to_string());
                                break;
                            }
                        }
                        if let Some(why) = ended {
                            break why;
                        }
                    }
                    Some(Err(e)) => break e.to_string(),
                    None => break "the stream ended".to_owned(),
                },
            }
        };
        counters.failed(&name, &why);
    }
}

/// Enrolled simulated nodes: name, and a client presenting the node's certificate.
type SimulatedNodes = Arc<std::sync::RwLock<Vec<(String, Arc<Client>)>>>;

/// Simulated edge nodes against a 3-orchestrator cluster: how fast the scheduler places and
/// commits replicas over 1,000 Ready nodes, and how many nodes heartbeating at 1 Hz the leader
/// takes within a quarter of one core. The orchestrators run with health settings for 1 Hz
/// heartbeats (Suspect after 2.5 s, Down after 4 s): with the defaults, made for the edge
/// runtime's 500 ms, a 1 Hz node would look suspect between its heartbeats.
async fn scale(args: &[String]) {
    let max_nodes = arg(args, "--nodes", 10_000);
    let total_replicas = arg(args, "--replicas", 5_000);
    // One connection per simulated node, all from this process's address.
    let extra_args =
        ["--node-suspect-ms", "2500", "--node-grace-ms", "4000", "--max-connections", "30000", "--max-connections-per-ip", "30000"]
            .map(str::to_owned)
            .to_vec();
    let spec = ClusterSpec {
        subnet: 45,
        log: std::env::var("EDGEPLANE_BENCH_LOG").unwrap_or_else(|_| "warn".to_owned()),
        tick_ms: None,
        extra_args,
        ..Default::default()
    };
    let cluster = Cluster::start(spec).await;
    let leader = cluster.wait_for_leader(Duration::from_secs(10)).await;
    let leader_addr = cluster.api_addr(leader);
    let pid = cluster.pid(leader).expect("leader runs");
    let trust = cluster.trust.clone();
    let token = trust.bootstrap_token().await;
    let anonymous = Arc::new(Client::new(&[leader_addr.to_string()], ClientOptions::default(), trust.tls_as(None)).expect("client"));
    let leader_url = format!("https://{leader_addr}");
    // Each simulated node enrolls as a real one does (a key, a signing request, a bootstrap
    // token) and heartbeats over its own TLS connection with its own certificate.
    let nodes: SimulatedNodes = Arc::default();

    // Enrolls nodes up to `count` (each enrollment is a Raft write).
    let register = async |count: u64| {
        let next = Arc::new(AtomicU64::new(nodes.read().expect("nodes").len() as u64));
        let mut tasks = Vec::new();
        for _ in 0..64 {
            let (anonymous, nodes, next, leader_url, token, trust) =
                (anonymous.clone(), nodes.clone(), next.clone(), leader_url.clone(), token.clone(), trust.clone());
            tasks.push(tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= count {
                        return;
                    }
                    let name = format!("sim-{i:05}");
                    let fresh = edgeplane_tls::KeyAndRequest::generate(&name).expect("csr");
                    let body = json!({"name": name, "uid": format!("uid-{i}"), "csr": fresh.request_pem, "labels": {"zone": format!("z{}", i % 10)},
                        "capabilities": ["sensor.temperature"], "capacity": {"memoryMib": 1024, "instanceSlots": 32, "cpuMillis": 1000}});
                    let request = Request::new(Method::POST, "/v1/nodes/enroll").json(&body).bearer(Some(&token));
                    let answer: serde_json::Value = anonymous.send_to(&leader_url, request).await.expect("enroll").json().expect("enroll answer");
                    let certificate = answer["certificate"].as_str().unwrap_or_else(|| panic!("enrollment refused: {answer}"));
                    let identity = edgeplane_tls::TlsIdentity::from_pem(certificate, &fresh.key_pem).expect("identity");
                    let client = Client::new(std::slice::from_ref(&leader_url), ClientOptions::default(), trust.tls_as(Some(&identity))).expect("client");
                    nodes.write().expect("nodes").push((name, Arc::new(client)));
                }
            }));
        }
        for t in tasks {
            t.await.expect("enrollment task");
        }
    };

    // Heartbeats at 1 Hz from every enrolled node, spread evenly over each second: each on
    // its own stream, as the edge runtime sends them, or (`--heartbeats request`) each a
    // request of its own, as the runtime sends the first after any stream ends.
    let counters = Arc::new(BeatCounters::default());
    let streamed = match args.iter().position(|a| a == "--heartbeats").and_then(|i| args.get(i + 1)).map(String::as_str) {
        None | Some("stream") => true,
        Some("request") => false,
        Some(other) => panic!("--heartbeats takes stream or request, not {other:?}"),
    };
    let body = serde_json::to_vec(&json!({"load": {"cpuMillis": 100, "memoryMib": 64, "instances": 0, "queueDepth": 0}, "instances": []}))
        .expect("json");
    let mut beaters = Vec::new();
    // Each node's stream is started once the node has enrolled (streamed nodes only).
    let mut streaming = 0usize;
    let start_streams = |beaters: &mut Vec<tokio::task::JoinHandle<()>>, streaming: &mut usize| {
        let enrolled = nodes.read().expect("nodes").clone();
        for (i, (name, client)) in enrolled.into_iter().enumerate().skip(*streaming) {
            let phase = Duration::from_millis(i as u64 * 7919 % 1000);
            beaters.push(tokio::spawn(stream_heartbeats(name, client, leader_url.clone(), body.clone(), phase, counters.clone())));
        }
        *streaming = nodes.read().expect("nodes").len();
    };
    let workers = if streamed { 0 } else { 64u64 };
    for w in 0..workers {
        let (nodes, counters, leader_url, body) = (nodes.clone(), counters.clone(), leader_url.clone(), body.clone());
        beaters.push(tokio::spawn(async move {
            let mut ticker = tokio::time::interval(Duration::from_millis(10));
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            let mut tick = 0u64;
            loop {
                ticker.tick().await;
                // Worker w beats the nodes i with i % workers == w and (i / workers) % 100 ==
                // this 10 ms slot: every node once a second.
                let slot = tick % 100;
                tick += 1;
                let mine: Vec<(String, Arc<Client>)> = {
                    let nodes = nodes.read().expect("nodes");
                    (w + slot * workers..nodes.len() as u64).step_by((workers * 100) as usize).map(|i| nodes[i as usize].clone()).collect()
                };
                for (name, client) in mine {
                    let request = Request::new(Method::POST, format!("/v1/nodes/{name}/heartbeat")).body(body.clone(), "application/json");
                    let answer = client.send_to(&leader_url, request).await;
                    counters.sent.fetch_add(1, Ordering::Relaxed);
                    match answer {
                        Ok(r) if r.is_success() => {}
                        Ok(r) => counters.failed(&name, &r.status_error().to_string()),
                        Err(e) => counters.failed(&name, &e.to_string()),
                    }
                }
            }
        }));
    }
    let leader_api = Api::with_timeout(leader_addr, Duration::from_secs(30));
    // Heartbeats the leader took, by its own count.
    let taken = async || {
        let mut total = 0.0;
        for via in ["request", "stream"] {
            total += leader_api.metric(&format!("edgeplane_heartbeats_total{{via=\"{via}\"}}")).await.unwrap_or(0.0);
        }
        total
    };
    let measure = async |n: u64| -> bool {
        // The new nodes connect and settle: until no heartbeat failed for 3 s (at most 30 s).
        let settle_by = Instant::now() + Duration::from_secs(30);
        let mut quiet_since = (Instant::now(), counters.failures.load(Ordering::Relaxed));
        while quiet_since.0.elapsed() < Duration::from_secs(3) && Instant::now() < settle_by {
            tokio::time::sleep(Duration::from_millis(250)).await;
            let failures = counters.failures.load(Ordering::Relaxed);
            if failures != quiet_since.1 {
                quiet_since = (Instant::now(), failures);
            }
        }
        let c = &counters;
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let (taken0, cpu0, sent0, failed0, t0) = (taken().await, cpu_seconds(pid), load(&c.sent), load(&c.failures), Instant::now());
        tokio::time::sleep(Duration::from_secs(5)).await;
        let cpu_used = cpu_seconds(pid) - cpu0;
        let elapsed = t0.elapsed().as_secs_f64();
        let handled = taken().await - taken0;
        let cpu = 100.0 * cpu_used / elapsed;
        let rate = (load(&c.sent) - sent0) as f64 / elapsed;
        let failed = load(&c.failures) - failed0;
        bench(&format!("heartbeat_leader_cpu_pct_{n}_nodes"), cpu, "%");
        // The leader's own CPU time (from /proc, whatever else the machine runs) over the
        // heartbeats it took (its own count): everything the leader did meanwhile counts, the
        // placement loop's look at every node each 100 ms too.
        if handled > 0.0 {
            bench(&format!("heartbeat_leader_cpu_us_per_heartbeat_{n}_nodes"), 1e6 * cpu_used / handled, "us");
        }
        println!(
            "# {n} nodes: {rate:.0} heartbeats/s sent ({}), {handled} taken by the leader in {elapsed:.1} s, {failed} failed",
            if streamed { "streams" } else { "requests" }
        );
        cpu <= 25.0 && failed == 0 && rate >= 0.9 * n as f64
    };

    // Placements over 1,000 Ready nodes.
    register(1_000.min(max_nodes)).await;
    if streamed {
        start_streams(&mut beaters, &mut streaming);
    }
    let mut supported = if measure(1_000.min(max_nodes)).await { 1_000.min(max_nodes) } else { 0 };
    let api = Api::with_timeout(leader_addr, Duration::from_secs(30));
    // Creates 50 Workloads of `total_replicas` replicas in all and times them until every
    // replica is placed and committed (their statuses count them).
    let place = async |prefix: &str, over: u64| {
        let workloads = 50u64;
        let per = total_replicas / workloads;
        let started = Instant::now();
        let creates = (0..workloads).map(|w| {
            let workload = json!({"apiVersion": "edgeplane.io/v1alpha1", "kind": "Workload", "metadata": {"name": format!("{prefix}-{w:02}"), "namespace": NS},
                "spec": {"module": format!("sha256:{}", "0".repeat(64)), "replicas": per, "placement": {"requiredCapabilities": ["sensor.temperature"]},
                         "resources": {"memoryMib": 8, "batchTimeMs": 50}}});
            let api = api.clone();
            async move { create_resource(&api, NS, "workloads", &workload).await }
        });
        futures::future::join_all(creates).await;
        let deadline = Instant::now() + Duration::from_secs(300);
        let placed = loop {
            let reply = api.get(&format!("/apis/edgeplane.io/v1alpha1/namespaces/{NS}/workloads")).await.expect("list");
            let placed: u64 = reply.body["items"].as_array().map_or(0, |items| {
                items
                    .iter()
                    .filter(|w| {
                        w.pointer("/metadata/name")
                            .and_then(serde_json::Value::as_str)
                            .is_some_and(|n| n.starts_with(&format!("{prefix}-")))
                    })
                    .filter_map(|w| w.pointer("/status/replicas").and_then(serde_json::Value::as_u64))
                    .sum()
            });
            if placed >= per * workloads {
                break placed;
            }
            assert!(Instant::now() < deadline, "only {placed} of {} replicas placed over {over} nodes", per * workloads);
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let elapsed = started.elapsed().as_secs_f64();
        println!("# {placed} replicas of {workloads} workloads placed and committed over {over} Ready nodes in {elapsed:.2} s (includes creating the workloads)");
        placed as f64 / elapsed
    };
    bench("placements_per_s", place("scale", 1_000.min(max_nodes)).await, "replicas/s");

    // More nodes, until the leader needs more than a quarter of a core.
    for n in [2_500u64, 5_000, 10_000, 20_000].into_iter().filter(|&n| n <= max_nodes) {
        register(n).await;
        if streamed {
            start_streams(&mut beaters, &mut streaming);
        }
        if measure(n).await {
            supported = n;
        } else {
            break;
        }
    }
    bench("heartbeat_nodes_supported", supported as f64, "nodes");
    // For a profile of the leader under the largest fleet alone (`perf record -p <pid>`).
    let hold = arg(args, "--hold-s", 0);
    if hold > 0 {
        println!("# holding the fleet for {hold} s; the leader is pid {pid}");
        tokio::time::sleep(Duration::from_secs(hold)).await;
    }

    // Placements again over 10,000 nodes, however much of a core their heartbeats take.
    if max_nodes >= 10_000 {
        register(10_000).await;
        if streamed {
            start_streams(&mut beaters, &mut streaming);
        }
        // Every node heartbeats within a second of enrolling; one not yet heard from is Down.
        tokio::time::sleep(Duration::from_secs(4)).await;
        bench("placements_per_s_10000_nodes", place("wide", 10_000).await, "replicas/s");
    }
    for b in beaters {
        b.abort();
    }
}

#[cfg(test)]
mod tests {
    use edgeplane_api::data::{encode_batch, Reading};

    use super::*;

    /// The hand-rolled encoder writes exactly what the API's encoder writes.
    #[test]
    fn sensor_batches_are_v1_batches_of_the_benchmarks_readings() {
        let readings: Vec<Reading> = (990..1_990)
            .map(|ts| {
                let (device, value) = sensor_reading(ts);
                Reading { ts, device: format!("press-{device}"), metric: "temperature".into(), value }
            })
            .collect();
        assert_eq!(sensor_batch(990, 1_000), encode_batch(&readings));
        assert_eq!(edgeplane_api::data::validate_batch(&sensor_batch(0, 3)), Ok(3));
    }
}
