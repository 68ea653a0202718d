//! Backup and restore of the control plane against real processes: the restore drill (a
//! 3-orchestrator cluster with an edge at work, a backup, every orchestrator SIGKILLed and its
//! data deleted, a new cluster restored from the backup) and scheduled backups with retention.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use edgeplane_api::data::Reading;
use edgeplane_tests::{
    cloud_readings, cloud_records, create_resource, edgectl, eventually, ingest, push_module, workload_wasm, Cluster, ClusterSpec,
    EdgeRuntime,
};
use serde_json::{json, Value};

const NS: &str = "factory";

/// Every object of a backup's state by (kind, namespace, name): its value and resourceVersion.
fn objects_of(state: &[u8]) -> BTreeMap<(String, String, String), (Value, u64)> {
    let image: Value = serde_json::from_slice(state).expect("the state is JSON");
    image["objects"]
        .as_array()
        .expect("objects")
        .iter()
        .map(|pair| {
            let (key, stored) = (&pair[0], &pair[1]);
            let id = |f: &str| key[f].as_str().expect("key field").to_owned();
            ((id("kind"), id("namespace"), id("name")), (stored["value"].clone(), stored["resource_version"].as_u64().expect("rv")))
        })
        .collect()
}

/// Opens a backup file with its key: header and state.
fn open_backup(file: &Path, key: &Path) -> (edgeplane_api::backup::BackupInfo, Vec<u8>) {
    let key = edgeplane_tls::sealing::SealingKey::load(key, false).expect("the backup key");
    let bytes = std::fs::read(file).expect("the backup file");
    let (header, state) = edgeplane_tls::backup::open(&key, &bytes).expect("the backup opens");
    let info: edgeplane_api::backup::BackupInfo = serde_json::from_slice(&header).expect("the header");
    info.check(&state).expect("the state matches its checksum");
    (info, state)
}

async fn send_batch(edge: &EdgeRuntime, batch: &[Reading]) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, body) = ingest(&edge.http().await, "line-a/temperature", batch).await;
        if status == 200 {
            return;
        }
        assert!(Instant::now() < deadline, "ingest kept failing: {status} {body}\n{}", edge.log_tail());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn batch(first_ts: u64) -> Vec<Reading> {
    (0..20)
        .map(|i| Reading { ts: first_ts + i, device: "press-1".into(), metric: "temperature".into(), value: (first_ts + i) as f64 })
        .collect()
}

/// The restore drill. Between the backup and the kill nothing is written by anyone but the
/// orchestrators themselves (audit, scheduled-backup records), so every resource in the backup
/// must come back exactly as it was; the readings the edge took while the control plane was
/// gone must reach the restored cluster's sink exactly once, after the ones in the backup.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_restored_from_a_backup_has_every_resource_and_the_edges_carry_on_exactly_once() {
    let keys = tempfile::tempdir().expect("tempdir");
    let key = keys.path().join("backup.key");
    let made = edgeplane_tests::bin_path("edgectl");
    let out = std::process::Command::new(made).args(["backup", "key"]).arg(&key).output().expect("edgectl backup key");
    assert!(out.status.success(), "edgectl backup key: {}", String::from_utf8_lossy(&out.stderr));
    let again = std::process::Command::new(edgeplane_tests::bin_path("edgectl")).args(["backup", "key"]).arg(&key).output().expect("again");
    assert!(!again.status.success() && String::from_utf8_lossy(&again.stderr).contains("never overwritten"), "a key is never replaced");
    let scheduled = keys.path().join("scheduled");
    let schedule = [
        "--backup-dir",
        scheduled.to_str().expect("utf-8"),
        "--backup-key",
        key.to_str().expect("utf-8"),
        "--backup-interval-s",
        "1",
        "--backup-keep-hourly",
        "1",
    ]
    .map(str::to_owned)
    .to_vec();
    let mut cluster = Cluster::start(ClusterSpec { subnet: 83, extra_args: schedule, ..Default::default() }).await;
    let leader = cluster.wait_for_leader(Duration::from_secs(10)).await;
    let api = cluster.api(leader);
    let servers: Vec<SocketAddr> = (1..=3).map(|id| cluster.api_addr(id)).collect();
    push_module(&api, NS, "threshold-filter", workload_wasm("threshold-filter")).await;
    let outputs = json!([{"name": "in-range", "sink": {"type": "cloud"}}]);
    let workload = json!({
        "apiVersion": "edgeplane.io/v1alpha1", "kind": "Workload",
        "metadata": {"name": "pass", "namespace": NS},
        "spec": {"module": "threshold-filter@1.0.0", "placement": {"nodeSelector": {"line": "a"}},
                 "resources": {"memoryMib": 16, "batchTimeMs": 1000}, "inputs": ["line-a/temperature"],
                 "outputs": outputs, "config": {"min": -1e12, "max": 1e12, "forwardInRange": true}}
    });
    create_resource(&api, NS, "workloads", &workload).await;
    let edge_dir = tempfile::tempdir().expect("tempdir");
    let edge =
        EdgeRuntime::start("line-a-edge", &servers, edge_dir.path().join("edge"), &["--label", "line=a", "--heartbeat-ms", "200"]).await;
    edge.wait_running(1, Duration::from_secs(40)).await;

    // Work before the backup, all of it in the cloud when the backup is taken.
    let mut accepted: Vec<Reading> = Vec::new();
    for i in 0..5 {
        let b = batch(1_000 + i * 100);
        send_batch(&edge, &b).await;
        accepted.extend(b);
    }
    eventually(
        "the first readings in the cloud sink",
        Duration::from_secs(30),
        async || (cloud_readings(&cloud_records(&servers, NS, "pass").await?).len() == accepted.len()).then_some(()),
        || edge.log_tail(),
    )
    .await;
    let assignment_before = api.get(&format!("/apis/edgeplane.io/v1alpha1/namespaces/{NS}/assignments/pass-0")).await.expect("assignment");

    // Scheduled backups are being taken, pruned to what the policy keeps, and reported.
    let status = eventually(
        "every member to report a scheduled backup",
        Duration::from_secs(30),
        async || {
            let out = edgectl(&servers).args(["cluster", "status"]).output().ok()?;
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            (1..=3).all(|m| text.contains(&format!("member {m} "))).then_some(text)
        },
        || cluster.all_logs(),
    )
    .await;
    assert!(status.contains("LAST GOOD") && status.contains(scheduled.to_str().expect("utf-8")), "{status}");
    let files: Vec<_> = std::fs::read_dir(&scheduled).expect("the backup directory").map(|e| e.expect("entry").path()).collect();
    let sealed: Vec<_> = files.iter().filter(|p| p.extension().is_some_and(|e| e == "epbackup")).collect();
    assert!(!sealed.is_empty() && sealed.len() <= 3, "one hour keeps its newest backup (one per member at most mid-race): {files:?}");
    let metrics = api.raw(edgeplane_client::Request::get("/metrics")).await.expect("metrics");
    let text = String::from_utf8_lossy(&metrics.body);
    let taken_total = text.lines().find(|l| l.starts_with("edgeplane_backup_taken_total ")).unwrap_or_default();
    assert!(taken_total.split(' ').nth(1).and_then(|v| v.parse::<u64>().ok()).is_some_and(|n| n >= 1), "{taken_total:?}");
    assert!(!text.contains("edgeplane_backup_last_success_timestamp_seconds 0\n"), "the last good backup is in the metrics");

    // A viewer takes no backup: it is the whole state, credentials included (the route's
    // rule for everyone is in trust.rs's authorization matrix).
    let trust = edgeplane_tests::trust_for(servers[0]);
    trust.issue(&keys.path().join("viewer"), &["--user", "vera", "--group", "edgeplane:viewers"]);
    let denied = edgectl(&servers)
        .arg("--client-cert")
        .arg(keys.path().join("viewer/client.crt"))
        .arg("--client-key")
        .arg(keys.path().join("viewer/client.key"))
        .args(["backup", "create"])
        .arg(keys.path().join("x"))
        .arg("--key")
        .arg(&key)
        .output()
        .expect("edgectl");
    let said = String::from_utf8_lossy(&denied.stderr);
    assert!(
        !denied.status.success() && said.contains("403 (Forbidden)") && !keys.path().join("x").exists(),
        "a viewer took a backup: {said}"
    );
    let enrollments = |log: &str| log.lines().filter(|l| l.contains("enrolled") && !l.contains("enrolling")).count();
    assert_eq!(enrollments(&edge.log()), 1, "the edge enrolled once");

    // The backup, from a follower.
    let follower = (1..=3).find(|&id| id != leader).expect("a follower");
    let backup = keys.path().join("drill.epbackup");
    let taken = edgectl(&[cluster.api_addr(follower)])
        .args(["backup", "create"])
        .arg(&backup)
        .arg("--key")
        .arg(&key)
        .output()
        .expect("edgectl backup create");
    assert!(taken.status.success(), "edgectl backup create: {}", String::from_utf8_lossy(&taken.stderr));
    let inspected = edgectl(&servers).args(["backup", "inspect"]).arg(&backup).arg("--key").arg(&key).output().expect("inspect");
    assert!(String::from_utf8_lossy(&inspected.stdout).contains("verified: yes"), "{}", String::from_utf8_lossy(&inspected.stdout));
    let (info, state) = open_backup(&backup, &key);
    assert_eq!(info.member, follower);
    let in_backup = objects_of(&state);
    let raw = std::fs::read(&backup).expect("backup");
    assert!(!raw.windows(b"threshold-filter".len()).any(|w| w == b"threshold-filter"), "the backup is sealed, not in clear");

    // A write after the backup (lost with the old cluster: the recovery point is the backup),
    // and a version the old cluster handed out after it, as an edge's watch holds one.
    let late = api.request(reqwest::Method::PUT, "/v1/store/drill/after-backup", Some(b"{}".to_vec())).await.expect("write");
    assert_eq!(late.code, 201, "{}", late.body);
    let list = api.get(&format!("/apis/edgeplane.io/v1alpha1/namespaces/{NS}/assignments")).await.expect("list");
    let seen: u64 = list.body["metadata"]["resourceVersion"].as_str().and_then(|v| v.parse().ok()).expect("a list version");
    assert!(seen > info.index, "the old cluster moved on after the backup ({seen} > {})", info.index);

    // Every orchestrator SIGKILLed and its data deleted.
    let killed_at = Instant::now();
    for id in 1..=3 {
        cluster.kill(id);
        std::fs::remove_dir_all(cluster.data_dir(id)).expect("delete the data directory");
    }
    // The edge keeps taking readings meanwhile, into its outbox.
    for i in 0..5 {
        let b = batch(10_000 + i * 100);
        send_batch(&edge, &b).await;
        accepted.extend(b);
    }

    tokio::time::sleep(Duration::from_secs(2)).await;
    let offline = edge.stats().await;
    assert!(offline["outbox"]["pendingReadings"].as_u64().unwrap_or(0) > 0, "the edge holds readings while the cloud is gone: {offline}");

    // A wrong key and a damaged file are refused before anything is written.
    let wrong_key = keys.path().join("wrong.key");
    std::fs::write(&wrong_key, format!("{}\n", "7".repeat(64))).expect("wrong key");
    let refused = cluster.restore(1, &[OsStr::new("--from"), backup.as_os_str(), OsStr::new("--backup-key"), wrong_key.as_os_str()]);
    assert!(!refused.status.success() && String::from_utf8_lossy(&refused.stderr).contains("does not open with this key"), "{refused:?}");
    let damaged = keys.path().join("damaged.epbackup");
    let mut bytes = raw.clone();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x40;
    std::fs::write(&damaged, bytes).expect("damaged copy");
    let refused = cluster.restore(1, &[OsStr::new("--from"), damaged.as_os_str(), OsStr::new("--backup-key"), key.as_os_str()]);
    assert!(!refused.status.success(), "a damaged backup was restored: {refused:?}");
    assert!(!cluster.data_dir(1).join("raft-log").exists(), "a refused restore wrote nothing");

    // The new cluster: every member restored from the backup, then started.
    let restore_started = Instant::now();
    for id in 1..=3 {
        let out = cluster.restore(id, &[OsStr::new("--from"), backup.as_os_str(), OsStr::new("--backup-key"), key.as_os_str()]);
        assert!(out.status.success(), "restore of member {id}: {}", String::from_utf8_lossy(&out.stderr));
        assert!(String::from_utf8_lossy(&out.stdout).contains(&format!("index {}", info.index)), "{out:?}");
    }
    let again = cluster.restore(1, &[OsStr::new("--from"), backup.as_os_str(), OsStr::new("--backup-key"), key.as_os_str()]);
    assert!(String::from_utf8_lossy(&again.stderr).contains("already holds a Raft log"), "{again:?}");
    for id in 1..=3 {
        cluster.start_member(id);
    }
    let leader = cluster.wait_for_leader(Duration::from_secs(20)).await;
    let api = cluster.api(leader);
    eventually(
        "the restored cluster to take a write",
        Duration::from_secs(20),
        async || {
            let reply = api.request(reqwest::Method::PUT, "/v1/store/drill/after-restore", Some(b"{\"ok\":true}".to_vec())).await.ok()?;
            (reply.code < 300).then_some(())
        },
        || cluster.all_logs(),
    )
    .await;
    let writable_after = restore_started.elapsed();

    // Every object of the backup is back; those nothing wrote since are identical.
    let now = edgectl(&servers)
        .args(["backup", "create"])
        .arg(keys.path().join("after.epbackup"))
        .arg("--key")
        .arg(&key)
        .output()
        .expect("backup");
    assert!(now.status.success(), "{}", String::from_utf8_lossy(&now.stderr));
    let (after_info, after_state) = open_backup(&keys.path().join("after.epbackup"), &key);
    assert!(after_info.index > info.index + 1_000_000_000 - 1, "the restored log continues past the bump: {}", after_info.index);
    let restored = objects_of(&after_state);
    for (key, (value, rv)) in &in_backup {
        let (now_value, now_rv) = restored.get(key).unwrap_or_else(|| panic!("{key:?} from the backup is missing after the restore"));
        if now_rv == rv {
            assert_eq!(now_value, value, "{key:?} changed without a write");
        } else {
            assert!(*now_rv > info.index + 1_000_000_000, "{key:?} at {now_rv} was not in the backup's version ({rv}) nor rewritten since");
        }
    }
    let lost = api.get("/v1/store/drill/after-backup").await.expect("read");
    assert_eq!(lost.code, 404, "a write after the backup is not in the restored cluster: {}", lost.body);
    // That version names no point of the new history: resuming a watch from it is 410 Gone
    // (the client lists again), not a silent skip of the new cluster's first changes.
    let resumed = api
        .get(&format!("/apis/edgeplane.io/v1alpha1/namespaces/{NS}/assignments?watch=true&resourceVersion={seen}"))
        .await
        .expect("watch");
    assert_eq!(resumed.code, 410, "a watch from the old cluster's version {seen}: {}", resumed.body);
    let assignment_after = api.get(&format!("/apis/edgeplane.io/v1alpha1/namespaces/{NS}/assignments/pass-0")).await.expect("assignment");
    assert_eq!(assignment_after.body["metadata"]["uid"], assignment_before.body["metadata"]["uid"], "the replica stayed where it was");
    assert_eq!(assignment_after.body["spec"]["generation"], assignment_before.body["spec"]["generation"]);

    // The edge reconnects with its identity and sends what it kept: every reading exactly once.
    let records = eventually(
        "every reading in the restored cloud sink",
        Duration::from_secs(60),
        async || {
            let records = cloud_records(&servers, NS, "pass").await?;
            (cloud_readings(&records).len() >= accepted.len()).then_some(records)
        },
        || format!("edge:\n{}\n{}", edge.log_tail(), cluster.all_logs()),
    )
    .await;
    let all_in = restore_started.elapsed();
    let arrived = cloud_readings(&records);
    assert_eq!(arrived.len(), accepted.len(), "duplicates or extra readings reached the restored sink");
    assert!(arrived == accepted, "the restored sink holds other readings, or in another order, than ingest accepted");
    let node = api.get("/apis/edgeplane.io/v1alpha1/edgenodes/line-a-edge").await.expect("edge node");
    assert_eq!(enrollments(&edge.log()), 1, "the edge did not enroll again: it kept its identity");
    assert!(node.code == 200, "{}", node.body);
    eprintln!(
        "DRILL backup index {} ({} objects, {} bytes); control plane down {} ms; restore to first write {} ms; to every reading in {} ms",
        info.index,
        info.objects,
        raw.len(),
        (restore_started - killed_at).as_millis(),
        writable_after.as_millis(),
        all_in.as_millis()
    );
}
