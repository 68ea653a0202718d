//! Harness for end-to-end tests and benchmarks that drive the real edgeplane binaries.
//!
//! # Layout
//! - [`Cluster`]: initialises a cluster's PKI with `orchestrator init`, starts orchestrator
//!   processes on 127.0.0.x, kills, stops, restarts and partitions them, and cleans up on drop
//!   (no process outlives a test).
//! - [`Trust`]: a running cluster's CA, administrator credential and bootstrap token, found
//!   by the subnet of any of its addresses ([`trust_for`]): `Api`, `EdgeRuntime` and
//!   `Mosquitto` use the credentials of the cluster they talk to without being handed them.
//! - [`PeerProxy`]: sits on every Raft peer link so a test can cut links (a partition that
//!   leaves the API reachable, which SIGSTOP cannot model).
//! - [`Api`]: a small JSON client for one orchestrator (through `edgeplane-client`), as the
//!   cluster's administrator unless given another identity.
//! - [`ThrottleProxy`]: a TCP proxy that slows answers down, to model a slow link.
//! - [`EdgeRuntime`]: an edge-runtime process registered with a cluster.
//! - [`workload_wasm`]: the workload modules `scripts/build-workloads.sh` built.
//! - [`bin_path`]: finds the binaries `cargo build` produced.
//! - [`webdriver::Browser`]: headless Chromium through chromedriver, for the console tests.

pub mod webdriver;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddr, TcpListener as StdListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use edgeplane_api::ClusterStatus;
pub use edgeplane_client::{Client, ClientError, ClientOptions, Method, Request};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// The trust material of one test cluster.
#[derive(Debug)]
pub struct Trust {
    /// What `orchestrator init` wrote: `ca.crt`, `ca.key`, `members/<id>/`, `admin/`,
    /// `edgectl.toml`.
    pub dir: PathBuf,
    servers: Vec<SocketAddr>,
    bootstrap: tokio::sync::OnceCell<String>,
    /// Outlives the cluster's processes: edge runtimes and brokers of a test keep using it.
    _owner: tempfile::TempDir,
}

impl Trust {
    pub fn ca_cert(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }

    pub fn ca_pem(&self) -> String {
        std::fs::read_to_string(self.ca_cert()).expect("the cluster CA")
    }

    /// The administrator's certificate and key.
    pub fn admin_identity(&self) -> edgeplane_tls::TlsIdentity {
        edgeplane_tls::TlsIdentity::load(&self.dir.join("admin/client.crt"), &self.dir.join("admin/client.key")).expect("admin credential")
    }

    /// TLS as the administrator.
    pub fn admin_tls(&self) -> rustls::ClientConfig {
        edgeplane_tls::config::client_config(&self.ca_pem(), Some(&self.admin_identity())).expect("admin TLS")
    }

    /// TLS as `identity`, or as nobody.
    pub fn tls_as(&self, identity: Option<&edgeplane_tls::TlsIdentity>) -> rustls::ClientConfig {
        edgeplane_tls::config::client_config(&self.ca_pem(), identity).expect("TLS")
    }

    /// The administrator's edgectl configuration.
    pub fn edgectl_config(&self) -> PathBuf {
        self.dir.join("edgectl.toml")
    }

    /// A certificate signed offline with the CA's key (`orchestrator pki issue`), written to
    /// `out`: `["--user", "alice", "--group", "ops"]` or `["--server", "mqtt", "--ip", "..."]`.
    pub fn issue(&self, out: &std::path::Path, what: &[&str]) {
        let status = Command::new(bin_path("orchestrator"))
            .args(["pki", "issue", "--ca-dir"])
            .arg(&self.dir)
            .arg("--out-dir")
            .arg(out)
            .args(what)
            .stdout(Stdio::null())
            .status()
            .expect("orchestrator pki issue");
        assert!(status.success(), "orchestrator pki issue {what:?} failed");
    }

    /// A bootstrap token good for every edge runtime of the test (made on first use).
    pub async fn bootstrap_token(&self) -> String {
        self.bootstrap
            .get_or_init(|| async {
                let body = serde_json::json!({"ttlSeconds": 86_400, "uses": 100_000, "description": "test edge runtimes"});
                let deadline = Instant::now() + Duration::from_secs(30);
                loop {
                    for server in &self.servers {
                        let api = Api::with_tls(*server, Duration::from_secs(5), self.admin_tls());
                        if let Ok(reply) = api.request(Method::POST, "/v1/bootstrap-tokens", Some(body.to_string().into_bytes())).await {
                            if reply.code == 201 {
                                return reply.body["token"].as_str().expect("a token").to_owned();
                            }
                        }
                    }
                    assert!(Instant::now() < deadline, "could not create a bootstrap token on {:?}", self.servers);
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            })
            .await
            .clone()
    }
}

/// Trust of the running clusters, by subnet.
static TRUST: Mutex<BTreeMap<u8, Arc<Trust>>> = Mutex::new(BTreeMap::new());

/// The trust of the cluster `addr` belongs to (same subnet: the second octet of 127.x.y.z).
pub fn trust_for(addr: SocketAddr) -> Arc<Trust> {
    let subnet = match addr.ip() {
        std::net::IpAddr::V4(ip) => ip.octets()[1],
        std::net::IpAddr::V6(_) => 0,
    };
    TRUST
        .lock()
        .expect("lock")
        .get(&subnet)
        .cloned()
        .unwrap_or_else(|| panic!("no test cluster runs on subnet 127.{subnet}.x.y (for {addr}); start the Cluster first"))
}

/// A workload module built by `scripts/build-workloads.sh` (`target/workloads/<name>.wasm`).
pub fn workload_wasm(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/workloads").join(format!("{name}.wasm"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}; build the workloads first: bash scripts/build-workloads.sh", path.display()))
}

/// The `Ready` condition of an EdgeNode as the API returns it, if it has one.
pub fn ready_condition(node: &serde_json::Value) -> Option<&serde_json::Value> {
    node.pointer("/status/conditions")?.as_array()?.iter().find(|c| c["type"] == "Ready")
}

/// Sends `signal` to process `pid`. The workspace denies unsafe code, so through kill(1),
/// not libc::kill.
fn send_signal(pid: u32, signal: i32) {
    let _ = Command::new("kill").arg(format!("-{signal}")).arg(pid.to_string()).status();
}

/// An edge-runtime process. Killed on drop.
#[derive(Debug)]
pub struct EdgeRuntime {
    pub name: String,
    pub data_dir: PathBuf,
    pub log_path: PathBuf,
    args: Vec<String>,
    token: String,
    trust: Arc<Trust>,
    child: Option<Child>,
}

/// A client of one edge runtime's own API (HTTPS, as the cluster's administrator), and the
/// base URL it answers at.
#[derive(Debug, Clone)]
pub struct EdgeHttp {
    pub client: reqwest::Client,
    pub base: String,
}

impl EdgeHttp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }
}

impl EdgeRuntime {
    /// Starts `edge-runtime --name NAME` against `servers`, trusting their cluster's CA and
    /// enrolling with a bootstrap token of it; `args` adds labels, capabilities and the like.
    pub async fn start(name: &str, servers: &[SocketAddr], data_dir: PathBuf, args: &[&str]) -> EdgeRuntime {
        let trust = trust_for(servers[0]);
        let token = trust.bootstrap_token().await;
        let servers: Vec<String> = servers.iter().map(ToString::to_string).collect();
        let mut all = vec!["--name".to_owned(), name.to_owned(), "--servers".to_owned(), servers.join(",")];
        all.extend(["--data-dir".to_owned(), data_dir.to_string_lossy().into_owned()]);
        all.extend(["--ca-cert".to_owned(), trust.ca_cert().to_string_lossy().into_owned()]);
        all.extend(args.iter().map(|a| (*a).to_owned()));
        let log_path = data_dir.with_extension("log");
        let mut edge = EdgeRuntime { name: name.to_owned(), data_dir, log_path, args: all, token, trust, child: None };
        edge.spawn();
        edge
    }

    /// The edge's API as the cluster's administrator (who may read and ingest).
    pub async fn http(&self) -> EdgeHttp {
        self.http_as(Some(&self.trust.admin_identity())).await
    }

    /// The edge's API as `identity` (or as nobody).
    pub async fn http_as(&self, identity: Option<&edgeplane_tls::TlsIdentity>) -> EdgeHttp {
        let addr = self.status_addr().await;
        let server_name = format!("{}.nodes.edgeplane", self.name);
        let client = reqwest::Client::builder()
            .use_preconfigured_tls(self.trust.tls_as(identity))
            .resolve(&server_name, addr)
            .build()
            .expect("an HTTPS client");
        EdgeHttp { client, base: format!("https://{server_name}:{}", addr.port()) }
    }

    fn spawn(&mut self) {
        let _ = std::fs::remove_file(self.data_dir.join("status.addr"));
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log_path).expect("edge log file");
        let child = Command::new(bin_path("edge-runtime"))
            .args(&self.args)
            .env("EDGEPLANE_BOOTSTRAP_TOKEN", &self.token)
            .env_remove("EDGEPLANE_SERVERS")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("edge log file"))
            .stderr(log)
            .spawn()
            .expect("spawn edge-runtime");
        self.child = Some(child);
    }

    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// The process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Sends a signal to the running process: SIGSTOP freezes it with its connections open
    /// (to the orchestrators, a node cut off by a partition), SIGCONT thaws it.
    pub fn signal(&self, signal: i32) {
        if let Some(pid) = self.pid() {
            send_signal(pid, signal);
        }
    }

    /// Starts it again after [`EdgeRuntime::kill`].
    pub fn start_again(&mut self) {
        if self.child.is_none() {
            self.spawn();
        }
    }

    /// The node's own status API, once it is up.
    pub async fn status_addr(&self) -> SocketAddr {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(addr) = std::fs::read_to_string(self.data_dir.join("status.addr")).ok().and_then(|s| s.trim().parse().ok()) {
                return addr;
            }
            assert!(Instant::now() < deadline, "edge runtime {} did not start; log:\n{}", self.name, self.log_tail());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// What `GET /v1/instances` answers (nothing until the node has its certificate).
    pub async fn instances(&self) -> Vec<serde_json::Value> {
        let http = self.http().await;
        match http.client.get(http.url("/v1/instances")).send().await {
            Ok(r) => r.json().await.unwrap_or_default(),
            Err(_) => Vec::new(),
        }
    }

    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log_path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// The whole log, for waiting on a line that may be far from the end.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// What `GET /v1/stats` answers: the data plane's counters.
    pub async fn stats(&self) -> serde_json::Value {
        let http = self.http().await;
        let response = http.client.get(http.url("/v1/stats")).send().await.expect("GET /v1/stats");
        response.json().await.expect("/v1/stats answers JSON")
    }

    /// The node's Prometheus text.
    pub async fn metrics(&self) -> String {
        let http = self.http().await;
        let response = http.client.get(http.url("/metrics")).send().await.expect("GET /metrics");
        response.text().await.expect("text")
    }

    /// Waits until the node runs exactly `count` instances, all Running.
    pub async fn wait_running(&self, count: usize, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let instances = self.instances().await;
            if instances.len() == count && instances.iter().all(|i| i["phase"] == "Running") {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{} did not run {count} instance(s) in {timeout:?}: {instances:?}\nlog:\n{}",
                self.name,
                self.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Polls `check` every 100 ms until it gives a value; fails after `timeout`, saying what it
/// waited for and `context()` (logs, usually).
pub async fn eventually<T>(what: &str, timeout: Duration, mut check: impl AsyncFnMut() -> Option<T>, context: impl Fn() -> String) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}\n{}", context());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Every record the cloud sink holds for a Workload, oldest first, paged from the first of
/// `servers` that answers every page.
pub async fn cloud_records(servers: &[SocketAddr], namespace: &str, workload: &str) -> Option<Vec<serde_json::Value>> {
    'servers: for server in servers {
        let api = Api::with_timeout(*server, Duration::from_secs(5));
        let (mut all, mut after) = (Vec::new(), 0);
        loop {
            let path = format!("/v1/data?namespace={namespace}&workload={workload}&after={after}&limit=1000");
            let Ok(reply) = api.get(&path).await else { continue 'servers };
            if reply.code != 200 {
                continue 'servers;
            }
            let records = reply.body["records"].as_array()?.clone();
            if records.is_empty() {
                return Some(all);
            }
            after = reply.body["next"].as_u64()?;
            all.extend(records);
        }
    }
    None
}

/// The readings of cloud sink records, in order.
pub fn cloud_readings(records: &[serde_json::Value]) -> Vec<edgeplane_api::data::Reading> {
    records
        .iter()
        .flat_map(|r| serde_json::from_value::<Vec<edgeplane_api::data::Reading>>(r["readings"].clone()).expect("records carry readings"))
        .collect()
}

/// `POST /v1/ingest/{topic}` with a binary batch: the status (0 when the node is not
/// reachable) and the body.
pub async fn ingest(http: &EdgeHttp, topic: &str, readings: &[edgeplane_api::data::Reading]) -> (u16, String) {
    ingest_encoded(http, topic, edgeplane_api::data::encode_batch(readings)).await
}

/// [`ingest`] of a batch already in the binary format.
pub async fn ingest_encoded(http: &EdgeHttp, topic: &str, batch: Vec<u8>) -> (u16, String) {
    let sent = http
        .client
        .post(http.url(&format!("/v1/ingest/{topic}")))
        .header("content-type", "application/vnd.edgeplane.batch")
        .body(batch)
        .timeout(Duration::from_secs(10))
        .send()
        .await;
    match sent {
        Ok(response) => {
            let status = response.status().as_u16();
            (status, response.text().await.unwrap_or_default())
        }
        Err(e) => (0, e.to_string()),
    }
}

/// Pushes a module as `{name}@1.0.0` into `namespace`.
pub async fn push_module(api: &Api, namespace: &str, name: &str, bytes: Vec<u8>) {
    let reply = api.request(reqwest::Method::POST, &format!("/v1/modules/{namespace}/{name}/1.0.0"), Some(bytes)).await.expect("push");
    assert!(reply.code == 200 || reply.code == 201, "pushing {name}: {} {}", reply.code, reply.body);
}

/// Creates a namespaced resource (`plural`: workloads, models, ...).
pub async fn create_resource(api: &Api, namespace: &str, plural: &str, body: &serde_json::Value) {
    let path = format!("/apis/edgeplane.io/v1alpha1/namespaces/{namespace}/{plural}");
    let reply = api.request(reqwest::Method::POST, &path, Some(serde_json::to_vec(body).expect("json"))).await.expect("create");
    assert_eq!(reply.code, 201, "creating {plural}: {}", reply.body);
}

/// Whether this process runs as root.
fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix("Uid:").map(|u| u.split_whitespace().next() == Some("0"))))
        .unwrap_or(false)
}

/// A program on PATH, or in /usr/sbin (where Debian puts mosquitto, and which a non-login
/// shell may not have on PATH).
pub fn find_program(program: &str) -> Option<PathBuf> {
    let paths = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&paths).chain([PathBuf::from("/usr/sbin")]).map(|p| p.join(program)).find(|p| p.is_file())
}

/// A mosquitto broker on `ip`, over TLS with the certificates of the cluster on the same
/// subnet: every client presents a certificate of the cluster CA (edge nodes their node
/// certificate, tests a device's), and its common name is its MQTT user. Stopped on drop.
#[derive(Debug)]
pub struct Mosquitto {
    pub addr: SocketAddr,
    child: Child,
    dir: tempfile::TempDir,
}

impl Mosquitto {
    /// Starts mosquitto (installed by scripts/setup.sh) on a free port of `ip`, with a large
    /// in-flight window so that it is not the bottleneck, and waits until it accepts
    /// connections.
    pub fn start(ip: Ipv4Addr) -> Mosquitto {
        let program = find_program("mosquitto").expect("mosquitto is not installed: run scripts/setup.sh (it installs Debian's mosquitto)");
        let port = free_port(ip);
        let dir = tempfile::tempdir().expect("tempdir");
        let trust = trust_for(SocketAddr::from((ip, port)));
        let server = dir.path().join("server");
        trust.issue(&server, &["--server", "mosquitto", "--ip", &ip.to_string()]);
        trust.issue(&dir.path().join("device"), &["--user", "test-device", "--group", edgeplane_api::auth::DEVICES_GROUP]);
        let conf = dir.path().join("mosquitto.conf");
        // Run as root (CI), mosquitto would drop to its own user, which cannot read the key.
        let stay = if running_as_root() { "user root\n" } else { "" };
        let settings = format!(
            "{stay}listener {port} {ip}\ncafile {ca}\ncertfile {cert}\nkeyfile {key}\nrequire_certificate true\nuse_identity_as_username true\nallow_anonymous false\npersistence false\nmax_inflight_messages 1000\nmax_queued_messages 0\n",
            ca = server.join("ca.crt").display(),
            cert = server.join("tls.crt").display(),
            key = server.join("tls.key").display(),
        );
        std::fs::write(&conf, settings).expect("mosquitto.conf");
        let log = std::fs::File::create(dir.path().join("mosquitto.log")).expect("mosquitto log");
        let child = Command::new(program).arg("-c").arg(&conf).stdout(Stdio::null()).stderr(log).spawn().expect("start mosquitto");
        let addr = SocketAddr::from((ip, port));
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(addr).is_err() {
            assert!(
                Instant::now() < deadline,
                "mosquitto did not listen on {addr}: {}",
                std::fs::read_to_string(dir.path().join("mosquitto.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Mosquitto { addr, child, dir }
    }

    /// mosquitto_pub's and mosquitto_sub's TLS options: the CA, and the test device's
    /// certificate.
    pub fn tls_args(&self) -> Vec<String> {
        let device = self.dir.path().join("device");
        let path = |f: &str| device.join(f).to_string_lossy().into_owned();
        vec!["--cafile".into(), path("ca.crt"), "--cert".into(), path("client.crt"), "--key".into(), path("client.key")]
    }

    /// The test device's certificate files (ca.crt, client.crt, client.key), for sensor-sim.
    pub fn device_dir(&self) -> PathBuf {
        self.dir.path().join("device")
    }

    /// Publishes each line as one QoS 1 message on `topic`, with mosquitto_pub.
    pub fn publish_lines(&self, topic: &str, lines: &str) {
        use std::io::Write as _;
        let program =
            find_program("mosquitto_pub").expect("mosquitto_pub (Debian's mosquitto-clients) is not installed: run scripts/setup.sh");
        let mut publish = Command::new(program)
            .args(["-h", &self.addr.ip().to_string(), "-p", &self.addr.port().to_string(), "-q", "1", "-t", topic, "-l"])
            .args(self.tls_args())
            .stdin(Stdio::piped())
            .spawn()
            .expect("mosquitto_pub");
        publish.stdin.take().expect("stdin").write_all(lines.as_bytes()).expect("publish");
        assert!(publish.wait().expect("mosquitto_pub").success(), "mosquitto_pub failed");
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for EdgeRuntime {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A file of an edge's data directory (`node.crt`, `assignments.json`, ...) as the node reads
/// it: opened with the node's `storage.key` when sealed. `None` if absent or unopenable.
pub fn edge_file(data_dir: &std::path::Path, name: &str) -> Option<Vec<u8>> {
    let bytes = std::fs::read(data_dir.join(name)).ok()?;
    if !edgeplane_tls::sealing::is_sealed_file(&bytes) {
        return Some(bytes);
    }
    let key = edgeplane_tls::sealing::SealingKey::load(&data_dir.join("storage.key"), false).ok()?;
    key.open_file(name, &bytes)
}

/// The node's TLS identity from its data directory (its sealed key and certificate).
pub fn edge_identity(data_dir: &std::path::Path) -> Option<edgeplane_tls::TlsIdentity> {
    let text = |name| String::from_utf8(edge_file(data_dir, name)?).ok();
    edgeplane_tls::TlsIdentity::from_pem(&text("node.crt")?, &text("node.key")?).ok()
}

/// `edgectl --server ...` as the administrator of the cluster `servers` belong to.
pub fn edgectl(servers: &[SocketAddr]) -> Command {
    let list: Vec<String> = servers.iter().map(ToString::to_string).collect();
    let mut command = Command::new(bin_path("edgectl"));
    command
        .args(["--server", &list.join(",")])
        .env_remove("EDGEPLANE_SERVERS")
        .env("EDGECTL_CONFIG", trust_for(servers[0]).edgectl_config());
    command
}

/// Directory holding the binaries under test: `EDGEPLANE_BIN_DIR`, else the cargo target
/// directory this test executable was built into.
pub fn bin_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("EDGEPLANE_BIN_DIR") {
        return PathBuf::from(dir);
    }
    let exe = std::env::current_exe().expect("current exe");
    // target/debug/deps/<test> or target/debug/<bin>
    let dir = exe.parent().expect("exe dir");
    if dir.ends_with("deps") {
        dir.parent().expect("target dir").to_path_buf()
    } else {
        dir.to_path_buf()
    }
}

/// Path of a workspace binary, with a clear message when it has not been built.
pub fn bin_path(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    assert!(
        path.exists(),
        "{} does not exist: build the binaries first (cargo build --workspace), or set EDGEPLANE_BIN_DIR",
        path.display()
    );
    path
}

/// A free TCP port on `ip`. The port is released before use, so another process could take
/// it in between; distinct 127.0.0.x addresses per test make that unlikely.
pub fn free_port(ip: Ipv4Addr) -> u16 {
    let listener = StdListener::bind((ip, 0)).expect("bind port 0");
    listener.local_addr().expect("local addr").port()
}

/// Settings of a test cluster.
#[derive(Debug, Clone)]
pub struct ClusterSpec {
    pub size: u64,
    /// `None` runs the orchestrator's default tick.
    pub tick_ms: Option<u64>,
    pub election_ticks: u64,
    pub snapshot_every: u64,
    pub write_timeout_ms: u64,
    /// Second octet of the 127.x.y.z addresses, so concurrent tests use distinct IPs.
    pub subnet: u8,
    pub log: String,
    /// More orchestrator flags (e.g. `--node-grace-ms`).
    pub extra_args: Vec<String>,
}

impl Default for ClusterSpec {
    fn default() -> Self {
        ClusterSpec {
            size: 3,
            // Tests run several clusters at once on two cores: slower ticks than production
            // keep heavy load from causing elections that a test does not expect.
            tick_ms: Some(50),
            election_ticks: 10,
            snapshot_every: 50_000,
            write_timeout_ms: 5_000,
            subnet: 0,
            log: "info".to_owned(),
            extra_args: Vec::new(),
        }
    }
}

#[derive(Debug)]
pub struct NodeProc {
    pub id: u64,
    /// The API address clients use.
    pub api: SocketAddr,
    /// The peer address other members dial (the proxy in front of the node).
    pub peer_public: SocketAddr,
    /// Where the node itself listens for peers.
    pub peer_private: SocketAddr,
    pub data_dir: PathBuf,
    pub log_path: PathBuf,
    child: Option<Child>,
}

/// A running cluster of orchestrator processes.
#[derive(Debug)]
pub struct Cluster {
    pub spec: ClusterSpec,
    pub nodes: Vec<NodeProc>,
    pub proxy: PeerProxy,
    pub trust: Arc<Trust>,
    _dir: tempfile::TempDir,
}

impl Cluster {
    pub async fn start(spec: ClusterSpec) -> Cluster {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut nodes = Vec::new();
        // Every listener stays bound until all ports are chosen, so no port is handed out twice;
        // the proxy keeps its listeners, the orchestrators' ports are released just before
        // they start.
        let mut reserved = Vec::new();
        let mut proxy_listeners = Vec::new();
        for id in 1..=spec.size {
            let ip = Ipv4Addr::new(127, spec.subnet, 0, id as u8);
            let reserve = |reserved: &mut Vec<StdListener>| {
                let l = StdListener::bind((ip, 0)).expect("bind port 0");
                let addr = l.local_addr().expect("local addr");
                reserved.push(l);
                addr
            };
            let api = reserve(&mut reserved);
            let peer_private = reserve(&mut reserved);
            let public = StdListener::bind((ip, 0)).expect("bind port 0");
            let peer_public = public.local_addr().expect("local addr");
            proxy_listeners.push((id, public, peer_private));
            nodes.push(NodeProc {
                id,
                api,
                peer_public,
                peer_private,
                data_dir: dir.path().join(format!("node{id}")),
                log_path: dir.path().join(format!("node{id}.log")),
                child: None,
            });
        }
        let proxy = PeerProxy::start(proxy_listeners, spec.subnet);
        drop(reserved);
        // The cluster's CA, member certificates and administrator, as an operator makes them.
        let owner = tempfile::tempdir().expect("tempdir");
        let pki = owner.path().join("pki");
        let members: Vec<String> =
            nodes.iter().flat_map(|n| ["--member".to_owned(), format!("{}={},{}", n.id, n.peer_public, n.api)]).collect();
        let init =
            Command::new(bin_path("orchestrator")).arg("init").arg("--dir").arg(&pki).args(&members).output().expect("orchestrator init");
        assert!(init.status.success(), "orchestrator init failed: {}", String::from_utf8_lossy(&init.stderr));
        let trust = Arc::new(Trust {
            dir: pki,
            servers: nodes.iter().map(|n| n.api).collect(),
            bootstrap: tokio::sync::OnceCell::new(),
            _owner: owner,
        });
        let previous = TRUST.lock().expect("lock").insert(spec.subnet, trust.clone());
        assert!(previous.is_none(), "two test clusters on subnet 127.{}.x.y at once", spec.subnet);
        let mut cluster = Cluster { spec, nodes, proxy, trust, _dir: dir };
        for id in 1..=cluster.spec.size {
            cluster.launch(id);
        }
        cluster
    }

    fn node(&self, id: u64) -> &NodeProc {
        &self.nodes[(id - 1) as usize]
    }

    /// The command line shared by every member.
    fn member_args(&self) -> Vec<String> {
        self.nodes.iter().flat_map(|n| ["--member".to_owned(), format!("{}={},{}", n.id, n.peer_public, n.api)]).collect()
    }

    /// Every flag member `id` runs with.
    fn launch_args(&self, id: u64) -> Vec<std::ffi::OsString> {
        let spec = &self.spec;
        let node = self.node(id);
        let mut args: Vec<std::ffi::OsString> = vec!["--tls-dir".into(), self.trust.dir.join("members").join(id.to_string()).into()];
        if let Some(tick) = spec.tick_ms {
            args.extend(["--tick-ms".into(), tick.to_string().into()]);
        }
        args.extend(["--id".into(), id.to_string().into(), "--data-dir".into(), node.data_dir.clone().into()]);
        args.extend(["--peer-listen".into(), node.peer_private.to_string().into()]);
        args.extend(self.member_args().into_iter().map(Into::into));
        args.extend(["--election-ticks".into(), spec.election_ticks.to_string().into()]);
        args.extend(["--snapshot-every".into(), spec.snapshot_every.to_string().into()]);
        args.extend(["--write-timeout-ms".into(), spec.write_timeout_ms.to_string().into()]);
        args.extend(["--log".into(), spec.log.clone().into()]);
        args.extend(spec.extra_args.iter().map(Into::into));
        args
    }

    fn launch(&mut self, id: u64) {
        let args = self.launch_args(id);
        let node = &mut self.nodes[(id - 1) as usize];
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&node.log_path).expect("log file");
        let child = Command::new(bin_path("orchestrator"))
            .args(args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .expect("spawn orchestrator");
        node.child = Some(child);
    }

    /// Runs `orchestrator restore` for a stopped member with its usual flags and then `extra`
    /// (`--from`, `--backup-key`, ...; a flag given twice takes the later value), and returns
    /// what it printed.
    pub fn restore(&self, id: u64, extra: &[&std::ffi::OsStr]) -> std::process::Output {
        assert!(!self.is_running(id), "restore runs on a stopped member");
        Command::new(bin_path("orchestrator")).arg("restore").args(self.launch_args(id)).args(extra).output().expect("orchestrator restore")
    }

    /// Starts a stopped member (after a restore).
    pub fn start_member(&mut self, id: u64) {
        assert!(!self.is_running(id), "member {id} is running");
        self.launch(id);
    }

    /// The data directory of a member.
    pub fn data_dir(&self, id: u64) -> PathBuf {
        self.node(id).data_dir.clone()
    }

    pub fn api(&self, id: u64) -> Api {
        Api::new(self.node(id).api)
    }

    pub fn api_addr(&self, id: u64) -> SocketAddr {
        self.node(id).api
    }

    pub fn is_running(&self, id: u64) -> bool {
        self.node(id).child.is_some()
    }

    /// The process id of a running node.
    pub fn pid(&self, id: u64) -> Option<u32> {
        self.node(id).child.as_ref().map(Child::id)
    }

    pub fn running(&self) -> Vec<u64> {
        self.nodes.iter().filter(|n| n.child.is_some()).map(|n| n.id).collect()
    }

    /// SIGKILL: no chance to flush anything.
    pub fn kill(&mut self, id: u64) {
        if let Some(mut child) = self.nodes[(id - 1) as usize].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn restart(&mut self, id: u64) {
        self.kill(id);
        self.launch(id);
    }

    /// Sends a signal to a running node (e.g. SIGTERM for a graceful stop).
    pub fn signal(&self, id: u64, signal: i32) {
        if let Some(child) = &self.node(id).child {
            send_signal(child.id(), signal);
        }
    }

    /// Waits for a node to exit by itself, returning its exit code.
    pub fn wait_exit(&mut self, id: u64, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        let node = &mut self.nodes[(id - 1) as usize];
        let child = node.child.as_mut()?;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                node.child = None;
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// The last lines of a node's log, for failure messages.
    pub fn log_tail(&self, id: u64) -> String {
        let text = std::fs::read_to_string(&self.node(id).log_path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    pub fn all_logs(&self) -> String {
        self.nodes.iter().map(|n| format!("--- node {} ---\n{}", n.id, self.log_tail(n.id))).collect::<Vec<_>>().join("\n")
    }

    /// Waits until every node in `among` reports the same leader, itself in `among`.
    pub async fn wait_for_leader_among(&self, among: &[u64], timeout: Duration) -> u64 {
        let deadline = Instant::now() + timeout;
        let mut last = BTreeMap::new();
        while Instant::now() < deadline {
            last.clear();
            for &id in among {
                if let Ok(s) = self.api(id).cluster().await {
                    last.insert(id, s);
                }
            }
            let leaders: BTreeSet<Option<u64>> = last.values().map(|s| s.leader_id).collect();
            if last.len() == among.len() && leaders.len() == 1 {
                if let Some(Some(leader)) = leaders.into_iter().next() {
                    if among.contains(&leader) {
                        return leader;
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("no leader agreed on by nodes {among:?} within {timeout:?}; last statuses: {last:#?}\n{}", self.all_logs());
    }

    pub async fn wait_for_leader(&self, timeout: Duration) -> u64 {
        self.wait_for_leader_among(&self.running(), timeout).await
    }

    /// Cuts every peer link between `a` and `b` in both directions.
    pub fn cut(&self, a: &[u64], b: &[u64]) {
        for &x in a {
            for &y in b {
                self.proxy.cut(x, y);
                self.proxy.cut(y, x);
            }
        }
    }

    pub fn heal(&self) {
        self.proxy.heal();
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let mut trust = TRUST.lock().unwrap_or_else(|p| p.into_inner());
        if trust.get(&self.spec.subnet).is_some_and(|t| Arc::ptr_eq(t, &self.trust)) {
            trust.remove(&self.spec.subnet);
        }
        drop(trust);
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// A TCP proxy in front of every node's peer listener that can cut directed links.
///
/// Peer connections are TLS, but each member dials from its own address (127.s.0.<id>), so
/// the proxy knows which link (`from` -> `to`) a connection carries without reading it. A
/// cut link's connections are closed and new ones are refused until the cut heals; Raft
/// sees exactly what a network partition looks like.
#[derive(Debug, Clone)]
pub struct PeerProxy {
    cuts: Arc<Mutex<BTreeSet<(u64, u64)>>>,
    changed: watch::Sender<u64>,
}

impl PeerProxy {
    /// `routes`: (node id, bound listener peers dial, address the node listens on); members
    /// dial from 127.`subnet`.0.<id>.
    pub fn start(routes: Vec<(u64, StdListener, SocketAddr)>, subnet: u8) -> PeerProxy {
        let (changed, _) = watch::channel(0);
        let proxy = PeerProxy { cuts: Arc::default(), changed };
        for (to, public, private) in routes {
            public.set_nonblocking(true).expect("non-blocking listener");
            let listener = TcpListener::from_std(public).expect("proxy listener");
            let proxy = proxy.clone();
            tokio::spawn(async move {
                while let Ok((inbound, source)) = listener.accept().await {
                    let from = match source.ip() {
                        std::net::IpAddr::V4(ip) if ip.octets()[..3] == [127, subnet, 0] => u64::from(ip.octets()[3]),
                        _ => continue,
                    };
                    let proxy = proxy.clone();
                    tokio::spawn(async move { proxy.relay(inbound, from, to, private).await });
                }
            });
        }
        proxy
    }

    pub fn cut(&self, from: u64, to: u64) {
        self.cuts.lock().expect("lock").insert((from, to));
        self.changed.send_modify(|v| *v += 1);
    }

    pub fn heal(&self) {
        self.cuts.lock().expect("lock").clear();
        self.changed.send_modify(|v| *v += 1);
    }

    fn is_cut(&self, from: u64, to: u64) -> bool {
        self.cuts.lock().expect("lock").contains(&(from, to))
    }

    async fn relay(&self, mut inbound: TcpStream, from: u64, to: u64, private: SocketAddr) {
        if self.is_cut(from, to) {
            return;
        }
        let _ = inbound.set_nodelay(true);
        let Ok(mut outbound) = TcpStream::connect(private).await else { return };
        let _ = outbound.set_nodelay(true);
        let mut changes = self.changed.subscribe();
        let (mut ir, mut iw) = inbound.split();
        let (mut or, mut ow) = outbound.split();
        let pump = async {
            tokio::select! {
                _ = tokio::io::copy(&mut ir, &mut ow) => {}
                _ = tokio::io::copy(&mut or, &mut iw) => {}
            }
        };
        let watch_cut = async {
            loop {
                if changes.changed().await.is_err() || self.is_cut(from, to) {
                    return;
                }
            }
        };
        tokio::select! {
            _ = pump => {}
            _ = watch_cut => {}
        }
    }
}

/// A TCP proxy to one address that passes requests through at once and answers at most
/// `bytes_per_second` per connection: a slow link to the cloud, as an edge on a cellular
/// uplink sees it. Small messages (heartbeats) cross it quickly; large ones (module
/// downloads) take their time. Stops with the test's runtime.
#[derive(Debug)]
pub struct ThrottleProxy {
    pub addr: SocketAddr,
}

impl ThrottleProxy {
    pub async fn start(ip: Ipv4Addr, target: SocketAddr, bytes_per_second: u64) -> ThrottleProxy {
        let listener = TcpListener::bind((ip, 0)).await.expect("bind the proxy");
        let addr = listener.local_addr().expect("proxy address");
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(target).await else { return };
                    let (mut ir, mut iw) = inbound.split();
                    let (mut or, mut ow) = outbound.split();
                    let slow = async {
                        let mut buf = vec![0u8; 4096];
                        loop {
                            let n = match or.read(&mut buf).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => n,
                            };
                            if iw.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                            tokio::time::sleep(Duration::from_secs_f64(n as f64 / bytes_per_second as f64)).await;
                        }
                    };
                    tokio::select! {
                        _ = tokio::io::copy(&mut ir, &mut ow) => {}
                        () = slow => {}
                    }
                });
            }
        });
        ThrottleProxy { addr }
    }
}

/// A JSON client for one orchestrator's API: the shared client (`edgeplane-client`), sending
/// to this one server only, so that a test sees exactly what it answers.
#[derive(Debug, Clone)]
pub struct Api {
    server: String,
    client: Arc<Client>,
}

/// A response: status code and JSON body (`Null` when the body is not JSON).
#[derive(Debug, Clone)]
pub struct Reply {
    pub code: u16,
    pub body: serde_json::Value,
    /// Whether the server said it closes the connection after this reply.
    pub connection_close: bool,
    /// The `Warning` headers, as text.
    pub warnings: Vec<String>,
}

impl Api {
    /// As the administrator of the cluster `addr` belongs to.
    pub fn new(addr: SocketAddr) -> Api {
        Api::with_timeout(addr, Duration::from_secs(10))
    }

    /// As the administrator of the cluster `addr` belongs to.
    pub fn with_timeout(addr: SocketAddr, timeout: Duration) -> Api {
        Api::with_tls(addr, timeout, trust_for(addr).admin_tls())
    }

    /// With the TLS configuration (and so the identity) given.
    pub fn with_tls(addr: SocketAddr, timeout: Duration, tls: rustls::ClientConfig) -> Api {
        let options = ClientOptions { connect_timeout: Duration::from_millis(500), attempt_timeout: timeout, ..ClientOptions::default() };
        let client = Client::new(&[addr.to_string()], options, tls).expect("a valid address");
        Api { server: client.servers()[0].clone(), client: Arc::new(client) }
    }

    /// With a bearer token, trusting the cluster's CA, presenting no certificate.
    pub fn with_token(addr: SocketAddr, token: &str) -> Api {
        let options = ClientOptions {
            connect_timeout: Duration::from_millis(500),
            attempt_timeout: Duration::from_secs(10),
            bearer: Some(token.to_owned()),
            ..ClientOptions::default()
        };
        let client = Client::new(&[addr.to_string()], options, trust_for(addr).tls_as(None)).expect("a valid address");
        Api { server: client.servers()[0].clone(), client: Arc::new(client) }
    }

    pub async fn cluster(&self) -> Result<ClusterStatus, ClientError> {
        self.client.send_to(&self.server, Request::get("/v1/cluster")).await?.json()
    }

    /// Sends any request to this server, once, and returns the answer as it came.
    pub async fn raw(&self, request: Request) -> Result<edgeplane_client::Response, ClientError> {
        self.client.send_to(&self.server, request).await
    }

    /// Sends any request to this server, once.
    pub async fn send(&self, request: Request) -> Result<Reply, ClientError> {
        let answer = self.raw(request).await?;
        let connection_close = answer.headers.get("connection").is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
        let body = serde_json::from_slice(&answer.body).unwrap_or(serde_json::Value::Null);
        Ok(Reply { code: answer.status.as_u16(), body, connection_close, warnings: answer.warnings() })
    }

    pub async fn request(&self, method: Method, path_and_query: &str, body: Option<Vec<u8>>) -> Result<Reply, ClientError> {
        let mut request = Request::new(method, path_and_query);
        if let Some(b) = body {
            request = request.body(b, "application/json");
        }
        self.send(request).await
    }

    pub async fn put(&self, path_and_query: &str, value: &serde_json::Value) -> Result<Reply, ClientError> {
        self.request(Method::PUT, path_and_query, Some(value.to_string().into_bytes())).await
    }

    pub async fn get(&self, path_and_query: &str) -> Result<Reply, ClientError> {
        self.request(Method::GET, path_and_query, None).await
    }

    pub async fn delete(&self, path_and_query: &str) -> Result<Reply, ClientError> {
        self.request(Method::DELETE, path_and_query, None).await
    }

    /// A JSON merge patch; returns status code and body.
    pub async fn http_patch(&self, path: &str, patch: &str) -> (u16, serde_json::Value) {
        let request = Request::new(Method::PATCH, path).body(patch.to_owned(), "application/merge-patch+json");
        let reply = self.send(request).await.expect("patch");
        (reply.code, reply.body)
    }

    /// The value of one Prometheus sample, e.g. `edgeplane_raft_snapshots_restored_total`.
    pub async fn metric(&self, name: &str) -> Option<f64> {
        let answer = self.client.send_to(&self.server, Request::get("/metrics")).await.ok()?;
        let text = String::from_utf8_lossy(&answer.body);
        text.lines().find_map(|l| {
            let (n, v) = l.split_once(' ')?;
            (n == name).then(|| v.trim().parse().ok()).flatten()
        })
    }
}
