//! `edgeplane-bench`: benchmarks against the real binaries. Run through `scripts/bench.sh`,
//! which builds release binaries and points `EDGEPLANE_BIN_DIR` at them.
//!
//! Each figure is printed on its own line as `BENCH <name> <value> <unit>`.
//!
//! ```text
//! edgeplane-bench raft [--clients N] [--seconds S] [--failover-trials T]
//! edgeplane-bench api [--clients N] [--seconds S] [--watchers W]
//! ```

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use edgeplane_tests::{Api, Cluster, ClusterSpec};
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
        _ => {
            eprintln!("usage: edgeplane-bench raft|api [--clients N] [--seconds S] [--failover-trials T] [--watchers W]");
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

    let (rate, mut lat) = write_load(&cluster, clients, Duration::from_secs(seconds)).await;
    lat.sort_by(f64::total_cmp);
    bench("raft_commits_per_s", rate, "writes/s");
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
}

/// `clients` concurrent writers spread over every node, each writing fresh keys back to back.
/// Returns committed writes per second and the latency of each in ms.
async fn write_load(cluster: &Cluster, clients: u64, duration: Duration) -> (f64, Vec<f64>) {
    let apis: Vec<Api> = cluster.running().into_iter().map(|id| cluster.api(id)).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let latencies = Arc::new(Mutex::new(Vec::new()));
    // Distinct keys per run, so repeated runs against one cluster always create.
    let run = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    let mut tasks = Vec::new();
    for c in 0..clients {
        let api = apis[c as usize % apis.len()].clone();
        let (stop, done, latencies) = (Arc::clone(&stop), Arc::clone(&done), Arc::clone(&latencies));
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let started = Instant::now();
                let path = format!("/v1/store/bench/c{c}-{run}-{i}");
                if let Ok(r) = api.put(&path, &json!({ "client": c, "seq": i, "payload": "0123456789abcdef" })).await {
                    if r.code == 201 || r.code == 200 {
                        mine.push(started.elapsed().as_secs_f64() * 1000.0);
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                }
                i += 1;
            }
            latencies.lock().expect("lock").extend(mine);
        }));
    }
    // Warm up connections and the leader's pipeline before measuring.
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
    let probes: Vec<Api> = survivors
        .iter()
        .map(|&id| Api::with_timeout(cluster.api_addr(id), Duration::from_millis(100)))
        .collect();
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
    let http = reqwest::Client::builder().pool_max_idle_per_host(0).build().expect("client");
    let mut watch_tasks = Vec::new();
    for w in 0..watchers {
        let addr = cluster.api_addr(cluster.running()[w as usize % apis.len()]);
        let url = format!("http://{addr}{RESOURCES}?watch=true&resourceVersion={from}");
        let (http, received) = (http.clone(), Arc::clone(&received));
        watch_tasks.push(tokio::spawn(async move {
            let Ok(mut resp) = http.get(url).send().await else { return };
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
