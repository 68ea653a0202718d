//! Signed modules and models against real orchestrators and a real edge runtime: the registry
//! refuses what a namespace's TrustPolicy does not trust, the scheduler stops placing what a
//! removed key signed, and an edge with trust roots of its own refuses unsigned code whatever
//! the orchestrators hand it, and bytes that do not match the Assignment's digest whoever
//! serves them.

use std::path::Path;
use std::time::Duration;

use edgeplane_tests::{create_resource, edgectl, eventually, workload_wasm, Api, Cluster, ClusterSpec, EdgeRuntime, Method};
use edgeplane_tls::signing::{self, SigningKey};
use serde_json::{json, Value};
use sha2::Digest as _;

const SIGNED: &str = "signed";

fn repo() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}
const OPEN: &str = "open";

/// `edgectl key create NAME`: the public key it prints.
fn create_key(servers: &[std::net::SocketAddr], name: &str, dir: &Path) -> String {
    let out = edgectl(servers).args(["key", "create", name, "--dir", dir.to_str().expect("utf-8")]).output().expect("edgectl");
    assert!(out.status.success(), "key create: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("utf-8").trim().to_owned()
}

/// `edgectl module push` of a workload module as NAME@1.0.0, signed with `key` if given.
fn push(servers: &[std::net::SocketAddr], namespace: &str, module: &str, key: Option<&Path>) -> std::process::Output {
    let file = repo().join(format!("target/workloads/{module}.wasm"));
    let mut command = edgectl(servers);
    command.args(["module", "push", file.to_str().expect("utf-8"), "--name", module, "--version", "1.0.0", "-n", namespace]);
    if let Some(key) = key {
        command.args(["--sign", key.to_str().expect("utf-8")]);
    }
    command.output().expect("edgectl")
}

fn workload(namespace: &str, name: &str) -> Value {
    json!({
        "apiVersion": "edgeplane.io/v1alpha1",
        "kind": "Workload",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"module": "threshold-filter@1.0.0", "inputs": [format!("{name}/in")], "outputs": [{"name": "alerts", "sink": {"type": "log"}}], "config": {"max": 80.0}}
    })
}

fn trust_policy(keys: &[(&str, &str)]) -> Value {
    let keys: Vec<Value> = keys.iter().map(|(name, key)| json!({"name": name, "publicKey": key})).collect();
    json!({
        "apiVersion": "edgeplane.io/v1alpha1",
        "kind": "TrustPolicy",
        "metadata": {"name": "releases", "namespace": SIGNED},
        "spec": {"requireSignatures": true, "keys": keys}
    })
}

async fn workload_condition(api: &Api, namespace: &str, name: &str, contains: &str) -> String {
    eventually(
        &format!("workload {namespace}/{name} to say {contains:?}"),
        Duration::from_secs(20),
        async || {
            let reply = api.get(&format!("/apis/edgeplane.io/v1alpha1/namespaces/{namespace}/workloads/{name}")).await.ok()?;
            let text = reply.body["status"]["conditions"].to_string();
            text.contains(contains).then_some(text)
        },
        String::new,
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_trusted_signers_modules_are_pushed_placed_and_run() {
    let cluster = Cluster::start(ClusterSpec { subnet: 82, size: 1, ..Default::default() }).await;
    let leader = cluster.wait_for_leader(Duration::from_secs(10)).await;
    let api = cluster.api(leader);
    let servers = vec![cluster.api_addr(leader)];
    let dir = tempfile::tempdir().expect("tempdir");
    let release = create_key(&servers, "release", dir.path());
    let stranger = create_key(&servers, "stranger", dir.path());
    let release_key = dir.path().join("release.key");
    let stranger_key = dir.path().join("stranger.key");
    assert!(release.starts_with("ed25519:") && release != stranger, "{release} {stranger}");
    let again =
        edgectl(&servers).args(["key", "create", "release", "--dir", dir.path().to_str().expect("utf-8")]).output().expect("edgectl");
    assert!(!again.status.success(), "a key is never overwritten");

    create_resource(&api, SIGNED, "trustpolicies", &trust_policy(&[("release", &release)])).await;

    // At the door: unsigned, signed by a stranger, a signature over other bytes.
    let unsigned = push(&servers, SIGNED, "threshold-filter", None);
    let said = String::from_utf8_lossy(&unsigned.stderr);
    assert!(
        !unsigned.status.success() && said.contains("is not signed, and TrustPolicy releases in namespace signed requires signatures"),
        "{said}"
    );
    let foreign = push(&servers, SIGNED, "threshold-filter", Some(&stranger_key));
    let said = String::from_utf8_lossy(&foreign.stderr);
    assert!(!foreign.status.success() && said.contains("which no TrustPolicy in namespace signed trusts to sign modules"), "{said}");
    let key = SigningKey::from_pem(&std::fs::read_to_string(&release_key).expect("key")).expect("pem");
    let other_digest = format!("sha256:{:x}", sha2::Sha256::digest(workload_wasm("window-aggregator")));
    let over_other_bytes = key.sign(&signing::message("module", "threshold-filter", "1.0.0", &other_digest));
    let query = format!("signer={}&signature={}", urlencode(&release), urlencode(&over_other_bytes));
    let reply = api
        .request(Method::POST, &format!("/v1/modules/{SIGNED}/threshold-filter/1.0.0?{query}"), Some(workload_wasm("threshold-filter")))
        .await
        .expect("push");
    assert_eq!(reply.code, 422, "{}", reply.body);
    assert!(reply.body.to_string().contains("does not verify"), "{}", reply.body);

    let signed = push(&servers, SIGNED, "threshold-filter", Some(&release_key));
    assert!(signed.status.success(), "{}", String::from_utf8_lossy(&signed.stderr));
    let module = api.get(&format!("/apis/edgeplane.io/v1alpha1/namespaces/{SIGNED}/modules/threshold-filter.1.0.0")).await.expect("get");
    assert_eq!(module.body["spec"]["signature"]["key"], json!(release), "{}", module.body);
    // Where no policy asks for signatures, anything goes at the door.
    assert!(push(&servers, OPEN, "threshold-filter", None).status.success());

    // An edge that trusts only the release key runs what it signed ...
    let roots = dir.path().join("trusted-signers");
    std::fs::write(&roots, format!("# the release key\n{release}\n")).expect("write");
    let edge = EdgeRuntime::start(
        "signed-edge",
        &servers,
        dir.path().join("edge"),
        &["--heartbeat-ms", "200", "--trusted-signers", roots.to_str().expect("utf-8")],
    )
    .await;
    create_resource(&api, SIGNED, "workloads", &workload(SIGNED, "filter")).await;
    edge.wait_running(1, Duration::from_secs(30)).await;

    // ... and refuses what the orchestrators hand it unsigned (as a compromised control plane
    // could), saying why on the instance.
    create_resource(&api, OPEN, "workloads", &workload(OPEN, "filter")).await;
    let refused = eventually(
        "the edge to refuse the unsigned module",
        Duration::from_secs(30),
        async || edge.instances().await.into_iter().find(|i| i["assignment"].as_str().is_some_and(|a| a.starts_with(OPEN))),
        || edge.log_tail(),
    )
    .await;
    assert_eq!(refused["phase"], "Failed", "{refused}");
    assert!(
        refused["message"].as_str().is_some_and(|m| m.contains("is not signed, and this node runs only what its trusted signers signed")),
        "{refused}"
    );

    // Rotation: the policy drops the release key. What runs keeps running; nothing it signed
    // is placed anew, and the Workload says why.
    let mut rotated = trust_policy(&[("next", &stranger)]);
    let current = api.get(&format!("/apis/edgeplane.io/v1alpha1/namespaces/{SIGNED}/trustpolicies/releases")).await.expect("get");
    rotated["metadata"]["resourceVersion"] = current.body["metadata"]["resourceVersion"].clone();
    let reply = api.put(&format!("/apis/edgeplane.io/v1alpha1/namespaces/{SIGNED}/trustpolicies/releases"), &rotated).await.expect("put");
    assert_eq!(reply.code, 200, "{}", reply.body);
    create_resource(&api, SIGNED, "workloads", &workload(SIGNED, "second")).await;
    let condition = workload_condition(&api, SIGNED, "second", "which no TrustPolicy in namespace signed trusts to sign modules").await;
    assert!(condition.contains(&release), "{condition}");
    let running = edge.instances().await;
    assert!(
        running.iter().any(|i| i["assignment"] == json!(format!("{SIGNED}/filter-0")) && i["phase"] == "Running"),
        "the placed replica keeps running: {running:?}"
    );
    // Signatures cover the wasm, not the code the orchestrators compile from it: a node with
    // its own trust roots compiles what it verified.
    let filter = running.iter().find(|i| i["assignment"] == json!(format!("{SIGNED}/filter-0"))).expect("the filter");
    assert_eq!(filter.pointer("/started/module"), Some(&json!("Compiled")), "{filter}");

    // Models: the same door.
    let model = repo().join("tests/models/mlp.onnx");
    let model = model.to_str().expect("utf-8");
    let unsigned =
        edgectl(&servers).args(["model", "push", model, "--name", "mlp", "--version", "1.0.0", "-n", SIGNED]).output().expect("edgectl");
    assert!(!unsigned.status.success(), "an unsigned model is refused");
    let signed = edgectl(&servers)
        .args([
            "model",
            "push",
            model,
            "--name",
            "mlp",
            "--version",
            "1.0.0",
            "-n",
            SIGNED,
            "--sign",
            stranger_key.to_str().expect("utf-8"),
        ])
        .output()
        .expect("edgectl");
    assert!(signed.status.success(), "{}", String::from_utf8_lossy(&signed.stderr));
    let pushed = api.get(&format!("/apis/edgeplane.io/v1alpha1/namespaces/{SIGNED}/models/mlp")).await.expect("get");
    assert_eq!(pushed.body["spec"]["artifact"]["signature"]["key"], json!(stranger), "{}", pushed.body);
}

fn urlencode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A compromised orchestrator, as the edge sees it: a man in the middle holding a member
/// certificate of the cluster's CA, which passes the edge's traffic through to a real
/// orchestrator (as the edge, with the edge's own certificate) and, while `tampering` is set,
/// changes one byte of every WebAssembly module it serves.
struct TamperingOrchestrator {
    addr: std::net::SocketAddr,
    tampering: std::sync::Arc<std::sync::atomic::AtomicBool>,
    tampered: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl TamperingOrchestrator {
    async fn start(
        ip: std::net::Ipv4Addr,
        member_cert: &edgeplane_tls::TlsIdentity,
        upstream: std::net::SocketAddr,
        upstream_tls: rustls::ClientConfig,
    ) -> TamperingOrchestrator {
        use std::sync::atomic::Ordering;
        use std::sync::Arc;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};

        let mut server = rustls::ServerConfig::builder_with_provider(edgeplane_tls::config::provider())
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_no_client_auth()
            .with_single_cert(member_cert.chain.clone(), member_cert.key.clone_key())
            .expect("the member certificate");
        server.alpn_protocols = vec![b"http/1.1".to_vec()];
        let mut upstream_tls = upstream_tls;
        upstream_tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
        let connector = tokio_rustls::TlsConnector::from(Arc::new(upstream_tls));
        let listener = tokio::net::TcpListener::bind((ip, 0)).await.expect("bind");
        let addr = listener.local_addr().expect("address");
        let tampering = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let tampered = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (on, count) = (tampering.clone(), tampered.clone());
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (acceptor, connector, on, count) = (acceptor.clone(), connector.clone(), on.clone(), count.clone());
                tokio::spawn(async move {
                    let Ok(inbound) = acceptor.accept(tcp).await else { return };
                    let Ok(tcp) = tokio::net::TcpStream::connect(upstream).await else { return };
                    let name = rustls::pki_types::ServerName::IpAddress(upstream.ip().into());
                    let Ok(outbound) = connector.connect(name, tcp).await else { return };
                    let (mut ir, mut iw) = tokio::io::split(inbound);
                    let (mut or, mut ow) = tokio::io::split(outbound);
                    let answers = async {
                        // The module's magic number and version; the version byte is changed,
                        // so the bytes no longer match the digest the Assignment names.
                        const MAGIC: &[u8] = b"\0asm\x01\0\0\0";
                        let mut window: Vec<u8> = Vec::new();
                        let mut buf = vec![0u8; 16 * 1024];
                        loop {
                            let n = match or.read(&mut buf).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => n,
                            };
                            let chunk = &mut buf[..n];
                            // Look across the chunk boundary: the last few bytes of the one before.
                            let carried = window.len();
                            window.extend_from_slice(chunk);
                            if on.load(Ordering::SeqCst) {
                                if let Some(at) = window.windows(MAGIC.len()).position(|w| w == MAGIC) {
                                    let version = at + 4;
                                    if version >= carried {
                                        chunk[version - carried] ^= 0xff;
                                        count.fetch_add(1, Ordering::SeqCst);
                                    }
                                }
                            }
                            let keep = window.len().saturating_sub(MAGIC.len() - 1);
                            window.drain(..keep);
                            if iw.write_all(chunk).await.is_err() {
                                return;
                            }
                        }
                    };
                    tokio::select! {
                        _ = tokio::io::copy(&mut ir, &mut ow) => {}
                        () = answers => {}
                    }
                });
            }
        });
        TamperingOrchestrator { addr, tampering, tampered }
    }
}

/// The digest in the Assignment is the edge's last line: bytes a compromised orchestrator (or
/// anything between) changes are refused, whoever signed what they should have been, and the
/// edge runs the module once the true bytes arrive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_module_a_compromised_orchestrator_tampers_with_never_runs() {
    use std::sync::atomic::Ordering;
    let cluster = Cluster::start(ClusterSpec { subnet: 90, size: 1, ..Default::default() }).await;
    let leader = cluster.wait_for_leader(Duration::from_secs(10)).await;
    let api = cluster.api(leader);
    let servers = vec![cluster.api_addr(leader)];
    let dir = tempfile::tempdir().expect("tempdir");
    let release = create_key(&servers, "release", dir.path());
    let release_key = dir.path().join("release.key");
    for module in ["threshold-filter", "window-aggregator"] {
        let pushed = push(&servers, OPEN, module, Some(&release_key));
        assert!(pushed.status.success(), "{}", String::from_utf8_lossy(&pushed.stderr));
    }
    let roots = dir.path().join("trusted-signers");
    std::fs::write(&roots, format!("{release}\n")).expect("write");
    let edge_args = ["--heartbeat-ms", "200", "--trusted-signers", roots.to_str().expect("utf-8")];

    // The edge enrolls and runs the filter through the true orchestrator ...
    let edge_dir = dir.path().join("edge");
    let mut enrolling = EdgeRuntime::start("tampered-edge", &servers, edge_dir.clone(), &edge_args).await;
    create_resource(&api, OPEN, "workloads", &workload(OPEN, "filter")).await;
    enrolling.wait_running(1, Duration::from_secs(30)).await;
    enrolling.kill();

    // ... then talks only to the compromised one, which presents a certificate of the
    // cluster's CA and so passes the edge's TLS checks.
    let trust = edgeplane_tests::trust_for(servers[0]);
    let member = dir.path().join("rogue-member");
    let rogue_ip = std::net::Ipv4Addr::new(127, 90, 0, 99);
    trust.issue(&member, &["--member", "9", "--ip", &rogue_ip.to_string()]);
    let member = edgeplane_tls::TlsIdentity::load(&member.join("member.crt"), &member.join("member.key")).expect("member certificate");
    let as_the_edge = edgeplane_tests::edge_identity(&edge_dir).expect("the edge's identity");
    let rogue = TamperingOrchestrator::start(rogue_ip, &member, servers[0], trust.tls_as(Some(&as_the_edge))).await;
    let edge = EdgeRuntime::start("tampered-edge", &[rogue.addr], edge_dir.clone(), &edge_args).await;

    let mut aggregator = workload(OPEN, "windows");
    aggregator["spec"]["module"] = json!("window-aggregator@1.0.0");
    aggregator["spec"]["config"] = json!({"windowSeconds": 1});
    create_resource(&api, OPEN, "workloads", &aggregator).await;
    let refused = eventually(
        "the edge to refuse the tampered module",
        Duration::from_secs(30),
        async || {
            edge.instances().await.into_iter().find(|i| {
                i["assignment"] == json!(format!("{OPEN}/windows-0")) && i["message"].as_str().is_some_and(|m| m.contains("refusing it"))
            })
        },
        || edge.log_tail(),
    )
    .await;
    assert!(rogue.tampered.load(Ordering::SeqCst) >= 1, "the man in the middle changed nothing: {refused}");
    assert_ne!(refused["phase"], "Running", "{refused}");
    let message = refused["message"].as_str().unwrap_or_default();
    assert!(message.contains("fetching the module") && message.contains("it arrived with digest sha256:"), "{refused}");
    let instances = edge.instances().await;
    assert!(
        instances.iter().any(|i| i["assignment"] == json!(format!("{OPEN}/filter-0")) && i["phase"] == "Running"),
        "the module it already held keeps running: {instances:?}"
    );

    // The true bytes, when they come, run.
    rogue.tampering.store(false, Ordering::SeqCst);
    edge.wait_running(2, Duration::from_secs(60)).await;
}
