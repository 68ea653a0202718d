//! edgectl against real orchestrators: failover between addresses and exit codes.

use std::net::Ipv4Addr;
use std::process::{Command, Output};
use std::time::Duration;

use edgeplane_tests::{bin_path, free_port, Cluster, ClusterSpec};

/// edgectl as the cluster's administrator, against `servers`.
fn edgectl(cluster: &Cluster, servers: &str, args: &[&str]) -> Output {
    Command::new(bin_path("edgectl"))
        .args(["--server", servers, "--timeout", "5"])
        .args(args)
        .env_remove("EDGEPLANE_SERVERS")
        .env("EDGECTL_CONFIG", cluster.trust.edgectl_config())
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

    let put = edgectl(&cluster, &servers, &["store", "put", "sensor", "line-a", "--value", r#"{"celsius": 21.5}"#]);
    assert_eq!(put.status.code(), Some(0), "{}", text(&put));
    assert!(String::from_utf8_lossy(&put.stdout).contains("sensor/line-a created"), "{}", text(&put));

    let get = edgectl(&cluster, &servers, &["-o", "json", "store", "get", "sensor", "line-a"]);
    assert_eq!(get.status.code(), Some(0), "{}", text(&get));
    let object: serde_json::Value = serde_json::from_slice(&get.stdout).expect("json output");
    assert_eq!(object["value"]["celsius"], 21.5);

    // Compare-and-swap with a stale version: refused by the orchestrator -> exit 1.
    let stale = edgectl(&cluster, &servers, &["store", "put", "sensor", "line-a", "--value", "1", "--if-version", "1"]);
    assert_eq!(stale.status.code(), Some(1), "{}", text(&stale));
    assert!(String::from_utf8_lossy(&stale.stderr).contains("Conflict"), "{}", text(&stale));

    let missing = edgectl(&cluster, &servers, &["store", "get", "sensor", "nope"]);
    assert_eq!(missing.status.code(), Some(1), "{}", text(&missing));

    let status = edgectl(&cluster, &servers, &["cluster", "status"]);
    assert_eq!(status.status.code(), Some(0), "{}", text(&status));
    let out = String::from_utf8_lossy(&status.stdout);
    assert!(out.contains("unreachable") && out.contains("leader"), "{}", text(&status));

    // Nothing reachable at all -> exit 3.
    let nowhere = format!("127.0.0.1:{}", free_port(Ipv4Addr::LOCALHOST));
    let down = edgectl(&cluster, &nowhere, &["store", "list", "sensor"]);
    assert_eq!(down.status.code(), Some(3), "{}", text(&down));

    // Bad usage -> exit 2.
    let usage = edgectl(&cluster, &servers, &["store", "put", "sensor", "x", "--value", "{not json"]);
    assert_eq!(usage.status.code(), Some(2), "{}", text(&usage));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edgectl_applies_gets_and_deletes_resources_like_kubectl() {
    let cluster = Cluster::start(ClusterSpec { subnet: 22, ..Default::default() }).await;
    cluster.wait_for_leader(Duration::from_secs(10)).await;
    let servers: Vec<String> = cluster.running().iter().map(|&id| cluster.api_addr(id).to_string()).collect();
    let servers = servers.join(",");
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let examples = root.join("manifests/factory");
    let examples = examples.to_str().expect("utf-8 path");

    let first = edgectl(&cluster, &servers, &["apply", "-f", examples]);
    assert_eq!(first.status.code(), Some(0), "{}", text(&first));
    let out = String::from_utf8_lossy(&first.stdout).to_string();
    assert_eq!(out.matches(" created").count(), 8, "{}", text(&first));
    assert!(out.contains("workload.edgeplane.io/line-a-temperature-filter created"), "{out}");
    // No module was pushed: the Workloads are stored, with a warning saying why they wait.
    assert!(
        String::from_utf8_lossy(&first.stderr).contains("Warning: module threshold-filter@1.0.0 is not in the registry"),
        "{}",
        text(&first)
    );

    let again = edgectl(&cluster, &servers, &["apply", "-f", examples]);
    let out = String::from_utf8_lossy(&again.stdout).to_string();
    assert_eq!(out.matches(" unchanged").count(), 8, "re-applying changes nothing: {}", text(&again));

    // A changed copy is configured; the rest stays unchanged.
    let dir = tempfile::tempdir().expect("tempdir");
    let changed = std::fs::read_to_string(root.join("manifests/factory/vibration.yaml")).expect("read").replace(
        "replicas: 1\n  placement:\n    preferredTiers: [edge, gateway]",
        "replicas: 4\n  placement:\n    preferredTiers: [edge, gateway]",
    );
    std::fs::write(dir.path().join("vibration.yaml"), changed).expect("write");
    let configured = edgectl(&cluster, &servers, &["apply", "-f", dir.path().to_str().expect("utf-8")]);
    let out = String::from_utf8_lossy(&configured.stdout).to_string();
    assert!(out.contains("workload.edgeplane.io/vibration-aggregates configured"), "{}", text(&configured));
    assert!(out.contains("model.edgeplane.io/vibration-detector unchanged"), "{}", text(&configured));

    let json_out = edgectl(&cluster, &servers, &["-o", "json", "get", "wl", "vibration-aggregates", "-n", "factory"]);
    let w: serde_json::Value = serde_json::from_slice(&json_out.stdout).expect("json");
    assert_eq!((w["spec"]["replicas"].as_i64(), w["metadata"]["generation"].as_i64()), (Some(4), Some(2)));

    let described = edgectl(&cluster, &servers, &["describe", "workload", "vibration-aggregates", "-n", "factory"]);
    let out = String::from_utf8_lossy(&described.stdout).to_string();
    for expected in
        ["Name:              vibration-aggregates", "Generation:        2", "replicas: 4", "created", "spec changed (generation 2)"]
    {
        assert!(out.contains(expected), "describe lacks {expected:?}: {}", text(&described));
    }

    let nodes = edgectl(&cluster, &servers, &["get", "nodes", "-l", "line"]);
    let table = String::from_utf8_lossy(&nodes.stdout).to_string();
    assert!(table.starts_with("NAME") && table.contains("line-a-edge") && !table.contains("cloud-1"), "{}", text(&nodes));

    // An invalid manifest beside valid ones: nothing is applied, every problem is named.
    std::fs::write(dir.path().join("bad.yaml"), "apiVersion: edgeplane.io/v1alpha1\nkind: Workload\nmetadata: { name: bad, namespace: factory }\nspec: { module: x@1.0.0, replicas: -1 }\n").expect("write");
    std::fs::write(dir.path().join("new.yaml"), "apiVersion: edgeplane.io/v1alpha1\nkind: Model\nmetadata: { name: fresh, namespace: factory }\nspec: { version: 1.0.0, format: f/v1, parameters: { w: [1.0] } }\n").expect("write");
    let refused = edgectl(&cluster, &servers, &["apply", "-f", dir.path().to_str().expect("utf-8")]);
    assert_eq!(refused.status.code(), Some(1), "{}", text(&refused));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("spec.replicas: must be >= 0, got -1"), "{}", text(&refused));
    let fresh = edgectl(&cluster, &servers, &["get", "model", "fresh", "-n", "factory"]);
    assert_eq!(fresh.status.code(), Some(1), "the valid document must not have been applied: {}", text(&fresh));

    let deleted = edgectl(&cluster, &servers, &["delete", "workload", "line-a-temperature-filter", "-n", "factory"]);
    assert_eq!(deleted.status.code(), Some(0), "{}", text(&deleted));
    let gone = edgectl(&cluster, &servers, &["get", "workload", "line-a-temperature-filter", "-n", "factory"]);
    assert_eq!(gone.status.code(), Some(1), "{}", text(&gone));

    // The servers and credentials can come from a config file alone (paths relative to it).
    let config = dir.path().join("edgectl.toml");
    let list: Vec<String> = servers.split(',').map(|s| format!("{s:?}")).collect();
    let admin = cluster.trust.dir.join("admin");
    for file in ["ca.crt", "client.crt", "client.key"] {
        std::fs::copy(admin.join(file), dir.path().join(file)).expect("copy credential");
    }
    let settings = format!("servers = [{}]\nca = \"ca.crt\"\ncert = \"client.crt\"\nkey = \"client.key\"\n", list.join(", "));
    std::fs::write(&config, settings).expect("write config");
    let from_file = std::process::Command::new(bin_path("edgectl"))
        .args(["--config", config.to_str().expect("utf-8"), "get", "models", "-n", "factory"])
        .env_remove("EDGEPLANE_SERVERS")
        .env_remove("EDGECTL_CONFIG")
        .output()
        .expect("run edgectl");
    assert!(String::from_utf8_lossy(&from_file.stdout).contains("vibration-detector"), "{}", text(&from_file));

    let completions = edgectl(&cluster, &servers, &["completions", "bash"]);
    assert!(String::from_utf8_lossy(&completions.stdout).contains("_edgectl"), "{}", text(&completions));

    // What a newcomer meets: where `get` looked, the kinds there are, output to a pipe that
    // closes early, and addresses that are not an orchestrator's.
    let empty = edgectl(&cluster, &servers, &["get", "workloads"]);
    assert!(String::from_utf8_lossy(&empty.stderr).contains("No workloads found in namespace default."), "{}", text(&empty));
    let unknown = edgectl(&cluster, &servers, &["get", "widgets"]);
    assert!(unknown.status.code() == Some(2) && String::from_utf8_lossy(&unknown.stderr).contains("assignments"), "{}", text(&unknown));
    let help = edgectl(&cluster, &servers, &["get", "--help"]);
    assert!(String::from_utf8_lossy(&help.stdout).contains("assignments"), "{}", text(&help));
    let edgectl_bin = bin_path("edgectl");
    let piped = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("'{}' --server {servers} describe workload vibration-aggregates -n factory | head -2", edgectl_bin.display()))
        .env_remove("EDGEPLANE_SERVERS")
        .env("EDGECTL_CONFIG", cluster.trust.edgectl_config())
        .output()
        .expect("run edgectl into head");
    assert_eq!(String::from_utf8_lossy(&piped.stdout).lines().count(), 2, "{}", text(&piped));
    assert!(!String::from_utf8_lossy(&piped.stderr).contains("panicked"), "a closed pipe is not a crash: {}", text(&piped));
    let plaintext = edgectl(&cluster, "http://127.0.0.1:1", &["get", "nodes"]);
    assert!(
        plaintext.status.code() == Some(2) && String::from_utf8_lossy(&plaintext.stderr).contains("HTTPS only"),
        "{}",
        text(&plaintext)
    );
    let nowhere = format!("127.0.0.1:{}", free_port(Ipv4Addr::LOCALHOST));
    let refused = edgectl(&cluster, &nowhere, &["get", "nodes"]);
    assert!(refused.status.code() == Some(3) && String::from_utf8_lossy(&refused.stderr).contains("nothing listens"), "{}", text(&refused));
    // Something the cluster CA certified that speaks HTTPS but is not an orchestrator (the MQTT
    // broker's host serving something else, say).
    let certified = dir.path().join("stranger");
    cluster.trust.issue(&certified, &["--server", "stranger", "--ip", "127.22.0.9"]);
    let identity = edgeplane_tls::TlsIdentity::load(&certified.join("tls.crt"), &certified.join("tls.key")).expect("identity");
    let current = edgeplane_tls::config::CurrentIdentity::new(&identity).expect("identity");
    let tls = edgeplane_tls::config::server_config(&cluster.trust.ca_pem(), current, edgeplane_tls::ClientAuth::Optional).expect("tls");
    let stranger = tokio::net::TcpListener::bind("127.22.0.9:0").await.expect("bind");
    let stranger_addr = stranger.local_addr().expect("addr");
    let router = axum::Router::new().fallback(|| async { (axum::http::StatusCode::NOT_FOUND, "") });
    let limits = edgeplane_tls::serve::ServeLimits::default();
    tokio::spawn(edgeplane_tls::serve::serve(
        stranger,
        std::sync::Arc::new(tls),
        router,
        limits,
        Default::default(),
        std::future::pending(),
    ));
    let config = cluster.trust.edgectl_config();
    let not_ours = tokio::task::spawn_blocking(move || {
        Command::new(bin_path("edgectl"))
            .args(["--server", &stranger_addr.to_string(), "--timeout", "5", "get", "nodes"])
            .env_remove("EDGEPLANE_SERVERS")
            .env("EDGECTL_CONFIG", config)
            .output()
            .expect("run edgectl")
    })
    .await
    .expect("edgectl");
    assert!(String::from_utf8_lossy(&not_ours.stderr).contains("orchestrator's API address"), "{}", text(&not_ours));
}

/// `edgectl get -w` watches the leader; the leader is SIGKILLed mid-stream; edgectl resumes on
/// another orchestrator from the last resourceVersion it saw. Every acknowledged change must
/// appear exactly once, in resourceVersion order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_resumes_across_a_leader_failover_without_missing_or_repeating_events() {
    use std::io::BufRead as _;
    let mut cluster = Cluster::start(ClusterSpec { subnet: 23, ..Default::default() }).await;
    let leader = cluster.wait_for_leader(Duration::from_secs(10)).await;
    let followers: Vec<u64> = cluster.running().into_iter().filter(|&id| id != leader).collect();
    let mut order = vec![leader];
    order.extend(&followers);
    let servers: Vec<String> = order.iter().map(|&id| cluster.api_addr(id).to_string()).collect();
    let coll = "/apis/edgeplane.io/v1alpha1/namespaces/factory/models";
    let model = |name: &str, v: u32| {
        serde_json::json!({ "apiVersion": "edgeplane.io/v1alpha1", "kind": "Model",
            "metadata": { "name": name }, "spec": { "version": format!("1.0.{v}"), "format": "f/v1", "parameters": { "w": [1.0] } } })
    };
    let writer = edgeplane_tests::Api::with_timeout(cluster.api_addr(followers[0]), Duration::from_secs(8));
    let backup = edgeplane_tests::Api::with_timeout(cluster.api_addr(followers[1]), Duration::from_secs(8));
    // Existing objects: they arrive as the initial ADDED events.
    for i in 0..3 {
        assert_eq!(
            writer
                .request(edgeplane_tests::Method::POST, coll, Some(model(&format!("m{i}"), 0).to_string().into_bytes()))
                .await
                .expect("post")
                .code,
            201
        );
    }

    let mut child = std::process::Command::new(bin_path("edgectl"))
        .args(["--server", &servers.join(","), "-o", "json", "get", "models", "-n", "factory", "-w"])
        .env_remove("EDGEPLANE_SERVERS")
        .env("EDGECTL_CONFIG", cluster.trust.edgectl_config())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn edgectl watch");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel::<serde_json::Value>();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Ok(v) = serde_json::from_str(&line) {
                let _ = tx.send(v);
            }
        }
    });
    let mut events = Vec::new();
    let collect_until = |events: &mut Vec<serde_json::Value>, pred: &dyn Fn(&[serde_json::Value]) -> bool| {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while !pred(events) {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            assert!(!left.is_zero(), "watch output stalled; got {} events: {events:#?}", events.len());
            if let Ok(v) = rx.recv_timeout(left.min(Duration::from_millis(200))) {
                events.push(v);
            }
        }
    };
    collect_until(&mut events, &|e| e.len() >= 3);

    // Changes through a follower while the watch streams from the leader: creates, an update
    // and a delete, with the leader killed in the middle.
    let mut acked: Vec<(String, String, u64)> = Vec::new(); // (type, name, resourceVersion)
    for i in 3..25u32 {
        if i == 12 {
            cluster.kill(leader);
        }
        let api = if i < 12 { &writer } else { &backup };
        let name = format!("m{i}");
        if let Ok(r) = api.request(edgeplane_tests::Method::POST, coll, Some(model(&name, 0).to_string().into_bytes())).await {
            if r.code == 201 {
                let rv = r.body["metadata"]["resourceVersion"].as_str().and_then(|v| v.parse().ok()).expect("rv");
                acked.push(("ADDED".to_owned(), name, rv));
            }
        }
    }
    let updated = backup
        .request(edgeplane_tests::Method::PUT, &format!("{coll}/m5"), Some(model("m5", 7).to_string().into_bytes()))
        .await
        .expect("put");
    assert_eq!(updated.code, 200, "{}", updated.body);
    acked.push((
        "MODIFIED".to_owned(),
        "m5".to_owned(),
        updated.body["metadata"]["resourceVersion"].as_str().and_then(|v| v.parse().ok()).expect("rv"),
    ));
    let deleted = backup.request(edgeplane_tests::Method::DELETE, &format!("{coll}/m3"), None).await.expect("delete");
    assert_eq!(deleted.code, 200, "{}", deleted.body);
    assert!(acked.len() >= 15, "too few writes were acknowledged around the failover: {acked:?}");
    let last_rv = acked.iter().map(|a| a.2).max().expect("acked");
    collect_until(&mut events, &|e| e.iter().any(|v| v["type"] == "DELETED"));
    let _ = child.kill();
    let output = child.wait_with_output().expect("edgectl output");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("# lost"), "the watch should have lost the killed leader and resumed elsewhere; stderr:\n{stderr}");

    let seen: Vec<(String, String, u64)> = events
        .iter()
        .skip(3) // the initial ADDED events of m0..m2
        .map(|v| {
            let rv = v["object"]["metadata"]["resourceVersion"].as_str().and_then(|s| s.parse().ok()).expect("rv");
            (v["type"].as_str().expect("type").to_owned(), v["object"]["metadata"]["name"].as_str().expect("name").to_owned(), rv)
        })
        .collect();
    let versions: Vec<u64> = seen.iter().map(|s| s.2).collect();
    assert!(versions.windows(2).all(|w| w[0] < w[1]), "events must be in strictly increasing resourceVersion order, once each: {seen:?}");
    for change in &acked {
        assert_eq!(seen.iter().filter(|s| *s == change).count(), 1, "acknowledged change {change:?} must be seen exactly once: {seen:?}");
    }
    assert!(seen.iter().any(|s| s.0 == "DELETED" && s.1 == "m3" && s.2 > last_rv), "the deletion is seen: {seen:?}");
}
