//! Prometheus' own tools against the real processes: `promtool check metrics` on every
//! orchestrator's and edge runtime's `/metrics`; `promtool check rules` and `promtool test
//! rules` on the alerting rules shipped in `manifests/monitoring/prometheus/`; and a real
//! Prometheus server (Debian's) scraping a 3-orchestrator cluster and two edges over mutual
//! TLS as a least-privileged `edgeplane:monitoring` client, evaluating the shipped rules, with
//! the node-down alert firing when an edge is SIGKILLed.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use edgeplane_tests::{
    create_resource, edgectl, eventually, find_program, free_port, ingest, push_module, workload_wasm, Cluster, ClusterSpec, EdgeRuntime,
};
use serde_json::{json, Value};

const NS: &str = "factory";
const SUBNET: u8 = 86;

fn rules_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../manifests/monitoring/prometheus")
}

fn promtool() -> PathBuf {
    find_program("promtool").expect("promtool is installed (scripts/test.sh installs Debian's prometheus package)")
}

/// Runs `promtool` with `args` (and `stdin`); its combined output, or a failure quoting it.
fn run_promtool(args: &[&str], stdin: Option<&str>, dir: &Path) -> String {
    let mut child = Command::new(promtool())
        .args(args)
        .current_dir(dir)
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool runs");
    if let Some(text) = stdin {
        use std::io::Write as _;
        child.stdin.take().expect("stdin").write_all(text.as_bytes()).expect("write to promtool");
    }
    let out = child.wait_with_output().expect("promtool finishes");
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "promtool {args:?} failed ({}):\n{said}", out.status);
    said
}

#[test]
fn the_shipped_alerting_rules_are_valid_and_their_unit_tests_pass() {
    let dir = rules_dir();
    let checked = run_promtool(&["check", "rules", "edgeplane-alerts.yml"], None, &dir);
    assert!(checked.contains("SUCCESS: 9 rules found"), "{checked}");
    let tested = run_promtool(&["test", "rules", "edgeplane-alerts.test.yml"], None, &dir);
    assert!(tested.contains("SUCCESS"), "{tested}");
    // Every alert of the rules file has a unit test.
    let rules = std::fs::read_to_string(dir.join("edgeplane-alerts.yml")).expect("rules");
    let tests = std::fs::read_to_string(dir.join("edgeplane-alerts.test.yml")).expect("rule tests");
    for alert in rules.lines().filter_map(|l| l.trim().strip_prefix("- alert: ")) {
        assert!(tests.contains(&format!("alertname: {alert}\n")), "{alert} has no unit test in edgeplane-alerts.test.yml");
    }
}

/// A Prometheus server on `addr`, stopped (SIGKILL) when dropped.
struct Prometheus {
    addr: SocketAddr,
    child: Child,
    log: PathBuf,
    http: reqwest::Client,
}

impl Prometheus {
    fn start(config: &Path, data: &Path, ip: Ipv4Addr) -> Prometheus {
        let addr = SocketAddr::from((ip, free_port(ip)));
        let log = data.with_extension("log");
        let out = std::fs::File::create(&log).expect("prometheus log");
        let child = Command::new(find_program("prometheus").expect("prometheus is installed (scripts/test.sh installs it)"))
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", data.display()))
            .arg(format!("--web.listen-address={addr}"))
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("log"))
            .stderr(out)
            .spawn()
            .expect("prometheus starts");
        Prometheus { addr, child, log, http: reqwest::Client::builder().timeout(Duration::from_secs(5)).build().expect("client") }
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        log.lines().rev().take(40).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n")
    }

    /// `data` of a successful answer of its HTTP API, or `None`.
    async fn api(&self, path: &str, query: &[(&str, &str)]) -> Option<Value> {
        let url = format!("http://{}{path}", self.addr);
        let answer: Value = self.http.get(url).query(query).send().await.ok()?.json().await.ok()?;
        (answer["status"] == "success").then(|| answer["data"].clone())
    }

    /// The series an instant query returns (`data.result`).
    async fn query(&self, promql: &str) -> Vec<Value> {
        self.api("/api/v1/query", &[("query", promql)]).await.and_then(|d| d["result"].as_array().cloned()).unwrap_or_default()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promtool_accepts_every_metrics_page_and_a_real_prometheus_scrapes_and_alerts() {
    let cluster = Cluster::start(ClusterSpec { subnet: SUBNET, ..Default::default() }).await;
    let leader = cluster.wait_for_leader(Duration::from_secs(10)).await;
    let api = cluster.api(leader);
    let servers: Vec<SocketAddr> = (1..=3).map(|id| cluster.api_addr(id)).collect();

    // Least privilege: the shipped role lets the edgeplane:monitoring group get metrics only.
    let rbac = Path::new(env!("CARGO_MANIFEST_DIR")).join("../manifests/monitoring/rbac.yaml");
    let applied = edgectl(&servers).arg("apply").arg("-f").arg(&rbac).output().expect("edgectl apply");
    assert!(applied.status.success(), "edgectl apply rbac.yaml: {}", String::from_utf8_lossy(&applied.stderr));
    let dir = tempfile::tempdir().expect("tempdir");
    let credential = dir.path().join("prometheus");
    cluster.trust.issue(&credential, &["--user", "prometheus", "--group", "edgeplane:monitoring"]);
    let identity = edgeplane_tls::TlsIdentity::load(&credential.join("client.crt"), &credential.join("client.key")).expect("credential");

    push_module(&api, NS, "threshold-filter", workload_wasm("threshold-filter")).await;
    let outputs = json!([{"name": "in-range", "sink": {"type": "cloud"}}, {"name": "out-of-range", "sink": {"type": "cloud"}}]);
    let workload = json!({
        "apiVersion": "edgeplane.io/v1alpha1",
        "kind": "Workload",
        "metadata": {"name": "pass", "namespace": NS},
        "spec": {
            "module": "threshold-filter@1.0.0",
            "placement": {"nodeSelector": {"line": "a"}},
            "resources": {"memoryMib": 16, "batchTimeMs": 1000},
            "inputs": ["line-a/temperature"],
            "outputs": outputs,
            "config": {"min": -1e12, "max": 1e12, "forwardInRange": true},
            "failurePolicy": {"lostAfterSeconds": 0, "restartBackoffMs": 100, "maxRestarts": 5}
        }
    });
    create_resource(&api, NS, "workloads", &workload).await;
    let mut edges = Vec::new();
    for name in ["edge-a", "edge-b"] {
        edges.push(EdgeRuntime::start(name, &servers, dir.path().join(name), &["--label", "line=a", "--heartbeat-ms", "200"]).await);
    }
    let running = eventually(
        "the workload's instance running on one of the edges",
        Duration::from_secs(40),
        async || {
            for (i, edge) in edges.iter().enumerate() {
                if edge.instances().await.iter().any(|i| i["phase"] == "Running") {
                    return Some(i);
                }
            }
            None
        },
        || edges.iter().map(EdgeRuntime::log_tail).collect::<Vec<_>>().join("\n---\n"),
    )
    .await;
    let readings: Vec<edgeplane_api::data::Reading> = (0..20)
        .map(|i| edgeplane_api::data::Reading { ts: i, device: "d1".into(), metric: "temperature".into(), value: i as f64 })
        .collect();
    let (code, body) = ingest(&edges[running].http().await, "line-a/temperature", &readings).await;
    assert_eq!(code, 200, "{body}");

    // promtool on every process's page, in the classic format it reads (no Accept header).
    let tls = cluster.trust.tls_as(Some(&identity));
    for (id, addr) in servers.iter().enumerate() {
        let client = reqwest::Client::builder().use_preconfigured_tls(tls.clone()).build().expect("client");
        let answer = client.get(format!("https://{addr}/metrics")).send().await.expect("GET /metrics");
        assert_eq!(answer.status(), 200, "orchestrator {} refused the monitoring credential", id + 1);
        let content_type = answer.headers()[reqwest::header::CONTENT_TYPE].to_str().expect("ascii").to_owned();
        assert!(content_type.starts_with("text/plain; version=0.0.4"), "{content_type}");
        let text = answer.text().await.expect("text");
        run_promtool(&["check", "metrics"], Some(&text), dir.path());
        assert!(text.contains("edgeplane_scheduler_plan_seconds_bucket"), "orchestrator {}: {text}", id + 1);
    }
    for edge in &edges {
        let http = edge.http_as(Some(&identity)).await;
        let text = http.client.get(http.url("/metrics")).send().await.expect("GET /metrics").text().await.expect("text");
        run_promtool(&["check", "metrics"], Some(&text), dir.path());
    }
    // Prometheus itself asks for OpenMetrics and gets it.
    let http = edges[running].http_as(Some(&identity)).await;
    let openmetrics = http
        .client
        .get(http.url("/metrics"))
        .header("Accept", "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5")
        .send()
        .await
        .expect("GET /metrics");
    let text = openmetrics.text().await.expect("text");
    assert!(
        text.ends_with("# EOF\n") && text.contains("edgeplane_instance_batches_total{assignment=\"factory/pass-0\",outcome=\"ok\"}"),
        "{text}"
    );

    // A real Prometheus scrapes them all over mutual TLS and evaluates the shipped rules.
    let ca = cluster.trust.ca_cert();
    let tls_config = |server_name: Option<&str>| {
        let mut config = json!({
            "ca_file": ca,
            "cert_file": credential.join("client.crt"),
            "key_file": credential.join("client.key"),
        });
        if let Some(name) = server_name {
            config["server_name"] = json!(name);
        }
        config
    };
    let mut scrape_configs = vec![json!({
        "job_name": "edgeplane-orchestrators",
        "scheme": "https",
        "tls_config": tls_config(None),
        "static_configs": [{"targets": servers.iter().map(ToString::to_string).collect::<Vec<_>>()}],
    })];
    // An edge serves as <node>.nodes.edgeplane, never an IP: one job per edge for its name.
    for edge in &edges {
        scrape_configs.push(json!({
            "job_name": format!("edgeplane-edges-{}", edge.name),
            "scheme": "https",
            "tls_config": tls_config(Some(&format!("{}.nodes.edgeplane", edge.name))),
            "static_configs": [{"targets": [edge.status_addr().await.to_string()], "labels": {"job": "edgeplane-edges", "node": edge.name}}],
        }));
    }
    let config = json!({
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "rule_files": [rules_dir().join("edgeplane-alerts.yml")],
        "scrape_configs": scrape_configs,
    });
    let config_path = dir.path().join("prometheus.yml");
    std::fs::write(&config_path, serde_yaml::to_string(&config).expect("yaml")).expect("write prometheus.yml");
    run_promtool(&["check", "config", "prometheus.yml"], None, dir.path());
    let prometheus = Prometheus::start(&config_path, &dir.path().join("tsdb"), Ipv4Addr::new(127, SUBNET, 0, 200));

    let up = eventually(
        "Prometheus to scrape all five targets successfully",
        Duration::from_secs(60),
        async || {
            let up = prometheus.query("up == 1").await;
            (up.len() == 5).then_some(up)
        },
        || prometheus.log_tail(),
    )
    .await;
    assert_eq!(up.iter().filter(|s| s["metric"]["job"] == "edgeplane-edges").count(), 2, "{up:?}");
    // A scheduler series, a health series and an edge series, through Prometheus' API.
    let health = eventually(
        "both edges Ready in the leader's edgeplane_node_health",
        Duration::from_secs(30),
        async || {
            let ready = prometheus.query(r#"max by (node) (edgeplane_node_health{state="ready"}) == 1"#).await;
            (ready.len() == 2).then_some(ready)
        },
        || prometheus.log_tail(),
    )
    .await;
    let mut nodes: Vec<&str> = health.iter().filter_map(|s| s["metric"]["node"].as_str()).collect();
    nodes.sort_unstable();
    assert_eq!(nodes, ["edge-a", "edge-b"]);
    let plans = prometheus.query("sum(edgeplane_scheduler_plan_seconds_count)").await;
    assert!(plans.first().and_then(|s| s["value"][1].as_str()).and_then(|v| v.parse::<f64>().ok()).is_some_and(|n| n >= 1.0), "{plans:?}");
    let batches = prometheus.query(r#"edgeplane_instance_batches_total{outcome="ok",assignment="factory/pass-0"}"#).await;
    assert_eq!(batches.len(), 1, "{batches:?}");
    assert_eq!(batches[0]["metric"]["node"], edges[running].name, "{batches:?}");

    // SIGKILL the edge that runs the instance: the leader judges it down, the replica fails
    // over, and the shipped node-down alert fires for that node.
    let killed = edges[running].name.clone();
    edges[running].kill();
    let alert = eventually(
        "EdgeplaneNodeDown firing for the killed edge",
        Duration::from_secs(90),
        async || {
            let alerts = prometheus.api("/api/v1/alerts", &[]).await?;
            alerts["alerts"].as_array()?.iter().find(|a| a["labels"]["alertname"] == "EdgeplaneNodeDown" && a["state"] == "firing").cloned()
        },
        || format!("{}\n--- orchestrators:\n{}", prometheus.log_tail(), cluster.all_logs()),
    )
    .await;
    assert_eq!(alert["labels"]["node"], killed.as_str(), "{alert}");
    assert_eq!(alert["labels"]["severity"], "critical", "{alert}");
    let failovers = eventually(
        "a placement counted as failover",
        Duration::from_secs(30),
        async || {
            let moved = prometheus.query(r#"sum(edgeplane_scheduler_placements_total{reason="failover"}) >= 1"#).await;
            (!moved.is_empty()).then_some(moved)
        },
        || prometheus.log_tail(),
    )
    .await;
    assert_eq!(failovers.len(), 1);
    // The decisions are Events: the node judged down, the replica failed over.
    let node_down = eventually(
        "a NodeDown event for the killed edge and a FailedOver one for its workload",
        Duration::from_secs(30),
        async || {
            let node = api
                .get(&format!("/api/v1/namespaces/default/events?fieldSelector=involvedObject.name%3D{killed},reason%3DNodeDown"))
                .await
                .ok()?;
            let moved = api
                .get(&format!("/api/v1/namespaces/{NS}/events?fieldSelector=involvedObject.name%3Dpass,reason%3DFailedOver"))
                .await
                .ok()?;
            let node = node.body["items"].as_array()?.first()?.clone();
            let moved = moved.body["items"].as_array()?.first()?.clone();
            Some((node, moved))
        },
        || cluster.all_logs(),
    )
    .await;
    assert_eq!(node_down.0["type"], "Warning", "{}", node_down.0);
    assert_eq!(node_down.0["involvedObject"]["kind"], "EdgeNode", "{}", node_down.0);
    assert!(node_down.1["message"].as_str().is_some_and(|m| m.starts_with("placed pass-0 on ")), "{}", node_down.1);
    // Only the killed node is down; the other stays Ready.
    let down = prometheus.query(r#"max by (node) (edgeplane_node_health{state="down"}) == 1"#).await;
    assert_eq!(down.len(), 1, "{down:?}");
}
