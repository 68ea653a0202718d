//! Trust, end to end: who may do what at every door of a real cluster, and what a stranger,
//! a stolen credential or a hostile input gets there.
//!
//! - The authorization matrix: every route the server reports (`GET /v1/routes`) against
//!   every kind of caller; a route without its row fails the test.
//! - Raft peers that are not members, or are but send garbage: refused, counted, harmless.
//! - Bootstrap tokens: single use, expiry, bound to one node name.
//! - Certificates: renewed by the edge on its own, across an orchestrator failover; revoked
//!   at once.
//! - Node restriction: a node acts only on its own work.
//! - The audit log: one record per mutation and refusal; an edited archive is named.
//! - The door: alias bombs, slow clients, oversized bodies, sink URLs outside policy.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use edgeplane_api::auth::{CertificateResponse, EnrollRequest, ENROLL};
use edgeplane_api::resources::Capacity;
use edgeplane_tests::{create_resource, eventually, push_module, workload_wasm, Api, Cluster, ClusterSpec, EdgeRuntime, Method, Request};
use edgeplane_tls::{CertificateAuthority, KeyAndRequest, TlsIdentity};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const BASE: &str = "/apis/edgeplane.io/v1alpha1";

/// What a caller gets from a route: the handler ran (whatever it answered), or the door
/// refused (401, 403), or TLS refused the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    Handled,
    Unauthorized,
    Forbidden,
    TlsRefused,
}

fn answer_of(code: char) -> Answer {
    match code {
        'h' => Answer::Handled,
        'u' => Answer::Unauthorized,
        'f' => Answer::Forbidden,
        't' => Answer::TlsRefused,
        other => panic!("no answer is written {other:?}"),
    }
}

/// A bootstrap token made by the administrator.
async fn bootstrap_token(admin: &Api, body: Value) -> String {
    let reply = admin.request(Method::POST, "/v1/bootstrap-tokens", Some(body.to_string().into_bytes())).await.expect("create a token");
    assert_eq!(reply.code, 201, "creating a bootstrap token: {}", reply.body);
    reply.body["token"].as_str().expect("the token").to_owned()
}

fn enroll_request(name: &str, uid: &str, csr: &str) -> EnrollRequest {
    EnrollRequest {
        name: name.to_owned(),
        uid: uid.to_owned(),
        csr: csr.to_owned(),
        labels: Default::default(),
        tier: Default::default(),
        capabilities: Vec::new(),
        capacity: Capacity { memory_mib: 512, instance_slots: 4, cpu_millis: 1000 },
    }
}

/// Enrolls `name` with `token` as an edge runtime would, from `api` (anonymous): the status
/// and, on success, the node's credential.
async fn try_enroll(api: &Api, token: &str, name: &str, uid: &str) -> (u16, Option<TlsIdentity>, Value) {
    let fresh = KeyAndRequest::generate(name).expect("a key and a request");
    let request = Request::new(Method::POST, ENROLL).json(&enroll_request(name, uid, &fresh.request_pem)).bearer(Some(token));
    let answer = api.raw(request).await.expect("the enrollment request is answered");
    let body: Value = serde_json::from_slice(&answer.body).unwrap_or(Value::Null);
    if !answer.is_success() {
        return (answer.status.as_u16(), None, body);
    }
    let issued: CertificateResponse = answer.json().expect("a certificate");
    let identity = TlsIdentity::from_pem(&issued.certificate, &fresh.key_pem).expect("the issued certificate and our key");
    (answer.status.as_u16(), Some(identity), body)
}

async fn enroll(cluster: &Cluster, token: &str, name: &str) -> TlsIdentity {
    let anonymous = anonymous(cluster.api_addr(1));
    let (code, identity, body) = try_enroll(&anonymous, token, name, &format!("uid-of-{name}")).await;
    identity.unwrap_or_else(|| panic!("enrolling {name}: {code} {body}"))
}

fn anonymous(addr: SocketAddr) -> Api {
    Api::with_tls(addr, Duration::from_secs(10), edgeplane_tests::trust_for(addr).tls_as(None))
}

fn as_identity(addr: SocketAddr, identity: &TlsIdentity) -> Api {
    Api::with_tls(addr, Duration::from_secs(10), edgeplane_tests::trust_for(addr).tls_as(Some(identity)))
}

/// A certificate of this cluster's CA, signed here with the CA's key (as `orchestrator pki
/// issue` would), valid from `issued_ago` for `lifetime`.
fn offline_certificate(cluster: &Cluster, subject: &edgeplane_tls::pki::Subject, issued_ago: Duration, lifetime: Duration) -> TlsIdentity {
    let dir = &cluster.trust.dir;
    let read = |f: &str| std::fs::read_to_string(dir.join(f)).expect("the cluster CA files");
    let ca = CertificateAuthority::load(&read("ca.crt"), &read("ca.key")).expect("the cluster CA");
    let issued_at = std::time::SystemTime::now() - issued_ago;
    let (issued, key) = ca.issue_with_key_at(subject, issued_at, lifetime).expect("issue");
    TlsIdentity::from_pem(&issued.pem, &key).expect("identity")
}

/// Another cluster's PKI (`orchestrator init` with one member `member`=`peer`,`api`): its
/// certificates are well made, by a CA this cluster does not trust.
fn other_cluster(member: u64, peer: &str, api: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let init = std::process::Command::new(edgeplane_tests::bin_path("orchestrator"))
        .arg("init")
        .arg("--dir")
        .arg(dir.path())
        .args(["--member", &format!("{member}={peer},{api}")])
        .output()
        .expect("orchestrator init");
    assert!(init.status.success(), "orchestrator init: {}", String::from_utf8_lossy(&init.stderr));
    dir
}

/// The administrator credential of [`other_cluster`].
fn other_admin(pki: &tempfile::TempDir) -> TlsIdentity {
    TlsIdentity::load(&pki.path().join("admin/client.crt"), &pki.path().join("admin/client.key")).expect("the other cluster's admin")
}

fn user(name: &str, group: Option<&str>) -> edgeplane_tls::pki::Subject {
    edgeplane_tls::pki::Subject::User { name: name.to_owned(), group: group.map(str::to_owned) }
}

/// One row of the matrix: the route as the server lists it, the path the test sends, and
/// what each caller gets, in the order of [`CALLERS`]:
/// anonymous, another CA's admin, an expired admin certificate, a revoked node, another node,
/// the node the path names, a viewer, an operator of namespace `matrix`, a cluster admin.
/// `h` the handler ran, `u` 401, `f` 403, `t` TLS refused. The operator is bound in one
/// namespace (a RoleBinding), so what is cluster-wide (metrics, the cluster, nodes) is not
/// theirs.
const CALLERS: [&str; 9] =
    ["anonymous", "other CA", "expired", "revoked node", "other node", "own node", "viewer", "operator", "cluster-admin"];

struct Row {
    method: &'static str,
    route: &'static str,
    path: &'static str,
    expected: &'static str,
}

const fn row(method: &'static str, route: &'static str, path: &'static str, expected: &'static str) -> Row {
    Row { method, route, path, expected }
}

/// The node the paths name, and the namespace they use.
const NODE: &str = "mx-own";

#[rustfmt::skip]
const ROWS: &[Row] = &[
    // Columns:                                                                                      anon, otherCA, expired, revoked, otherNode, ownNode, viewer, operator, admin
    row("GET", "/healthz", "/healthz",                                                                 "htthhhhhh"),
    row("POST", "/v1/nodes/enroll", "/v1/nodes/enroll",                                                "htthhhhhh"),
    row("GET", "/ui", "/ui",                                                                           "htthhhhhh"),
    row("GET", "/ui/", "/ui/",                                                                         "htthhhhhh"),
    row("GET", "/ui/{file}", "/ui/console.js",                                                         "htthhhhhh"),
    row("GET", "/openapi/v3", "/openapi/v3",                                                           "uttuhhhhh"),
    row("GET", "/openapi/v3/apis/edgeplane.io/v1alpha1", "/openapi/v3/apis/edgeplane.io/v1alpha1",     "uttuhhhhh"),
    row("GET", "/v1/whoami", "/v1/whoami",                                                             "uttuhhhhh"),
    row("POST", "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews", "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews", "uttuhhhhh"),
    row("GET", "/v1/routes", "/v1/routes",                                                             "uttuhhhhh"),
    row("GET", "/version", "/version",                                                                 "uttuhhhhh"),
    row("GET", "/api", "/api",                                                                         "uttuhhhhh"),
    row("GET", "/apis", "/apis",                                                                       "uttuhhhhh"),
    row("GET", "/apis/edgeplane.io", "/apis/edgeplane.io",                                             "uttuhhhhh"),
    row("GET", "/apis/edgeplane.io/v1alpha1", "/apis/edgeplane.io/v1alpha1",                           "uttuhhhhh"),
    row("GET", "/api/v1", "/api/v1",                                                                   "uttuhhhhh"),
    row("GET", "/apis/events.k8s.io", "/apis/events.k8s.io",                                           "uttuhhhhh"),
    row("GET", "/apis/events.k8s.io/v1", "/apis/events.k8s.io/v1",                                     "uttuhhhhh"),
    row("GET", "/api/v1/events", "/api/v1/events",                                                     "uttuffhfh"),
    row("GET", "/api/v1/namespaces/{ns}/events", "/api/v1/namespaces/matrix/events",                   "uttuffhhh"),
    row("GET", "/api/v1/namespaces/{ns}/events/{name}", "/api/v1/namespaces/matrix/events/e",          "uttuffhhh"),
    row("GET", "/apis/events.k8s.io/v1/events", "/apis/events.k8s.io/v1/events",                       "uttuffhfh"),
    row("GET", "/apis/events.k8s.io/v1/namespaces/{ns}/events", "/apis/events.k8s.io/v1/namespaces/matrix/events", "uttuffhhh"),
    row("GET", "/apis/events.k8s.io/v1/namespaces/{ns}/events/{name}", "/apis/events.k8s.io/v1/namespaces/matrix/events/e", "uttuffhhh"),
    row("GET", "/metrics", "/metrics",                                                                 "uttuffhfh"),
    row("GET", "/v1/cluster", "/v1/cluster",                                                           "uttuffhfh"),
    row("GET", "/v1/backup", "/v1/backup",                                                             "uttuffffh"),
    row("GET", "/v1/store/{kind}", "/v1/store/matrix-notes",                                           "uttuffffh"),
    row("GET", "/v1/store/{kind}/{name}", "/v1/store/matrix-notes/one",                                "uttuffffh"),
    row("PUT", "/v1/store/{kind}/{name}", "/v1/store/matrix-notes/one",                                "uttuffffh"),
    row("DELETE", "/v1/store/{kind}/{name}", "/v1/store/matrix-notes/one",                             "uttuffffh"),
    row("POST", "/v1/modules/{ns}/{name}/{version}", "/v1/modules/matrix/m/1.0.0",                     "uttufffhh"),
    row("POST", "/v1/models/{ns}/{name}/{version}", "/v1/models/matrix/m/1.0.0",                       "uttufffhh"),
    row("GET", "/v1/blobs/{digest}", "/v1/blobs/sha256:0000000000000000000000000000000000000000000000000000000000000000", "uttuffffh"),
    row("GET", "/v1/blobs/{digest}/native", "/v1/blobs/sha256:0000000000000000000000000000000000000000000000000000000000000000/native", "uttuffffh"),
    row("POST", "/v1/nodes/{name}/heartbeat", "/v1/nodes/mx-own/heartbeat",                            "uttufhffh"),
    row("POST", "/v1/nodes/{name}/heartbeat/stream", "/v1/nodes/mx-own/heartbeat/stream",              "uttufhfff"),
    row("GET", "/v1/nodes/{name}/heartbeat", "/v1/nodes/mx-own/heartbeat",                             "uttuffhfh"),
    row("GET", "/v1/heartbeats", "/v1/heartbeats",                                                     "uttuffhfh"),
    row("POST", "/v1/nodes/{name}/data", "/v1/nodes/mx-own/data",                                      "uttufhfff"),
    row("GET", "/v1/data", "/v1/data?namespace=matrix&workload=w",                                     "uttuffhhh"),
    row("POST", "/v1/nodes/{name}/certificate", "/v1/nodes/mx-own/certificate",                        "uttufhfff"),
    row("DELETE", "/v1/nodes/{name}/certificate", "/v1/nodes/mx-own/certificate",                      "uttuffffh"),
    row("POST", "/v1/certificates", "/v1/certificates",                                                "uttuffffh"),
    row("DELETE", "/v1/certificates/{serial}", "/v1/certificates/0abc",                                "uttuffffh"),
    row("POST", "/v1/bootstrap-tokens", "/v1/bootstrap-tokens",                                        "uttuffffh"),
    row("GET", "/v1/bootstrap-tokens", "/v1/bootstrap-tokens",                                         "uttuffffh"),
    row("DELETE", "/v1/bootstrap-tokens/{id}", "/v1/bootstrap-tokens/nosuchid",                        "uttuffffh"),
    row("POST", "/v1/serviceaccounts/{ns}/{name}/token", "/v1/serviceaccounts/matrix/robot/token",     "uttuffffh"),
    row("GET", "/v1/audit", "/v1/audit",                                                               "uttuffffh"),
    // Cluster-scoped resources (and every namespace at once): EdgeNodes.
    row("GET", "/apis/edgeplane.io/v1alpha1/{plural}", "/apis/edgeplane.io/v1alpha1/edgenodes",                               "uttuffhfh"),
    row("POST", "/apis/edgeplane.io/v1alpha1/{plural}", "/apis/edgeplane.io/v1alpha1/edgenodes",                              "uttuffffh"),
    row("GET", "/apis/edgeplane.io/v1alpha1/{plural}/{name}", "/apis/edgeplane.io/v1alpha1/edgenodes/mx-own",                 "uttufhhfh"),
    row("PUT", "/apis/edgeplane.io/v1alpha1/{plural}/{name}", "/apis/edgeplane.io/v1alpha1/edgenodes/mx-own",                 "uttuffffh"),
    row("PATCH", "/apis/edgeplane.io/v1alpha1/{plural}/{name}", "/apis/edgeplane.io/v1alpha1/edgenodes/mx-own",               "uttuffffh"),
    row("GET", "/apis/edgeplane.io/v1alpha1/{plural}/{name}/status", "/apis/edgeplane.io/v1alpha1/edgenodes/mx-own/status",   "uttufhhfh"),
    row("PUT", "/apis/edgeplane.io/v1alpha1/{plural}/{name}/status", "/apis/edgeplane.io/v1alpha1/edgenodes/mx-own/status",   "uttufhffh"),
    row("GET", "/apis/edgeplane.io/v1alpha1/{plural}/{name}/events", "/apis/edgeplane.io/v1alpha1/edgenodes/mx-own/events",   "uttuffhfh"),
    row("DELETE", "/apis/edgeplane.io/v1alpha1/{plural}/{name}", "/apis/edgeplane.io/v1alpha1/edgenodes/mx-gone",             "uttuffffh"),
    // Namespaced resources: Workloads in the operator's namespace.
    row("GET", "/apis/edgeplane.io/v1alpha1/namespaces/{ns}/{plural}", "/apis/edgeplane.io/v1alpha1/namespaces/matrix/workloads",                        "uttuffhhh"),
    row("POST", "/apis/edgeplane.io/v1alpha1/namespaces/{ns}/{plural}", "/apis/edgeplane.io/v1alpha1/namespaces/matrix/workloads",                       "uttufffhh"),
    row("GET", "/apis/edgeplane.io/v1alpha1/namespaces/{ns}/{plural}/{name}", "/apis/edgeplane.io/v1alpha1/namespaces/matrix/workloads/w",               "uttuffhhh"),
    row("PUT", "/apis/edgeplane.io/v1alpha1/namespaces/{ns}/{plural}/{name}", "/apis/edgeplane.io/v1alpha1/namespaces/matrix/workloads/w",               "uttufffhh"),
    row("PATCH", "/apis/edgeplane.io/v1alpha1/namespaces/{ns}/{plural}/{name}", "/apis/edgeplane.io/v1alpha1/namespaces/matrix/workloads/w",             "uttufffhh"),
    row("DELETE", "/apis/edgeplane.io/v1alpha1/namespaces/{ns}/{plural}/{name}", "/apis/edgeplane.io/v1alpha1/namespaces/matrix/workloads/w",            "uttufffhh"),
    row("GET", "/apis/edgeplane.io/v1alpha1/namespaces/{ns}/{plural}/{name}/status", "/apis/edgeplane.io/v1alpha1/namespaces/matrix/workloads/w/status", "uttuffhhh"),
    row("PUT", "/apis/edgeplane.io/v1alpha1/namespaces/{ns}/{plural}/{name}/status", "/apis/edgeplane.io/v1alpha1/namespaces/matrix/workloads/w/status", "uttufffhh"),
    row("GET", "/apis/edgeplane.io/v1alpha1/namespaces/{ns}/{plural}/{name}/events", "/apis/edgeplane.io/v1alpha1/namespaces/matrix/workloads/w/events", "uttuffhhh"),
];

/// Sends one matrix request and classifies the answer.
async fn classify(api: &Api, row: &Row, bootstrap: &str) -> (Answer, String) {
    let method = Method::from_bytes(row.method.as_bytes()).expect("a method");
    let mut request = Request::new(method.clone(), row.path).retry(edgeplane_client::Retry::Once);
    if matches!(method, Method::POST | Method::PUT | Method::PATCH) {
        let content_type = if method == Method::PATCH { "application/merge-patch+json" } else { "application/json" };
        request = request.body("{}", content_type);
    }
    if row.route == ENROLL {
        // Enrollment reads a bootstrap token; an empty body then fails validation.
        request = request.bearer(Some(bootstrap));
    }
    match api.send(request).await {
        Err(e) => (Answer::TlsRefused, e.to_string()),
        Ok(reply) => {
            let answer = match reply.code {
                401 => Answer::Unauthorized,
                403 => Answer::Forbidden,
                _ => Answer::Handled,
            };
            (answer, format!("{} {}", reply.code, reply.body))
        }
    }
}

/// Every route of the API against every kind of caller, each with the answer its row says.
/// The rows must be exactly the routes the server reports: a new route fails this test until
/// it is given a row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_answers_every_kind_of_caller_as_its_row_says() {
    let cluster = Cluster::start(ClusterSpec { subnet: 70, size: 1, ..Default::default() }).await;
    cluster.wait_for_leader(Duration::from_secs(15)).await;
    let addr = cluster.api_addr(1);
    let admin = cluster.api(1);

    // The routes the server has, and the rows this test has: the same set.
    let routes = admin.get("/v1/routes").await.expect("routes");
    assert_eq!(routes.code, 200, "{}", routes.body);
    let served: BTreeSet<(String, String)> = routes
        .body
        .as_array()
        .expect("a list of routes")
        .iter()
        .map(|r| (r["method"].as_str().expect("method").to_owned(), r["path"].as_str().expect("path").to_owned()))
        .collect();
    let rows: BTreeSet<(String, String)> = ROWS.iter().map(|r| (r.method.to_owned(), r.route.to_owned())).collect();
    assert_eq!(ROWS.len(), rows.len(), "a route has two rows");
    let missing: Vec<_> = served.difference(&rows).collect();
    let stale: Vec<_> = rows.difference(&served).collect();
    assert!(missing.is_empty() && stale.is_empty(), "routes without a row: {missing:?}; rows without a route: {stale:?}");

    // The callers.
    let token = bootstrap_token(&admin, json!({"ttlSeconds": 3600, "uses": 10})).await;
    let own = enroll(&cluster, &token, NODE).await;
    let other = enroll(&cluster, &token, "mx-other").await;
    let revoked = enroll(&cluster, &token, "mx-revoked").await;
    let reply = admin.delete("/v1/nodes/mx-revoked/certificate").await.expect("revoke");
    assert_eq!(reply.code, 204, "revoking mx-revoked: {}", reply.body);
    for (kind, name, body) in [
        (
            "clusterrolebindings",
            "vera-views",
            json!({"roleRef": {"kind": "ClusterRole", "name": "viewer"}, "subjects": [{"kind": "User", "name": "vera"}]}),
        ),
        (
            "rolebindings",
            "otto-operates",
            json!({"roleRef": {"kind": "ClusterRole", "name": "operator"}, "subjects": [{"kind": "User", "name": "otto"}]}),
        ),
    ] {
        let (path, namespace) = if kind == "rolebindings" {
            (format!("{BASE}/namespaces/matrix/{kind}"), json!("matrix"))
        } else {
            (format!("{BASE}/{kind}"), Value::Null)
        };
        let resource_kind = if kind == "rolebindings" { "RoleBinding" } else { "ClusterRoleBinding" };
        let mut metadata = json!({"name": name});
        if !namespace.is_null() {
            metadata["namespace"] = namespace;
        }
        let object = json!({"apiVersion": "edgeplane.io/v1alpha1", "kind": resource_kind, "metadata": metadata, "spec": body});
        let reply = admin.request(Method::POST, &path, Some(object.to_string().into_bytes())).await.expect("binding");
        assert_eq!(reply.code, 201, "creating {kind}/{name}: {}", reply.body);
    }
    let viewer = offline_certificate(&cluster, &user("vera", None), Duration::ZERO, Duration::from_secs(3600));
    let operator = offline_certificate(&cluster, &user("otto", None), Duration::ZERO, Duration::from_secs(3600));
    let expired = offline_certificate(
        &cluster,
        &user("old-admin", Some(edgeplane_api::auth::CLUSTER_ADMINS_GROUP)),
        Duration::from_secs(3 * 24 * 3600),
        Duration::from_secs(24 * 3600),
    );
    let stranger = other_admin(&other_cluster(1, "127.70.9.1:7000", &addr.to_string()));
    let trust = edgeplane_tests::trust_for(addr);
    let callers: Vec<Api> = vec![
        anonymous(addr),
        as_identity(addr, &stranger),
        as_identity(addr, &expired),
        as_identity(addr, &revoked),
        as_identity(addr, &other),
        as_identity(addr, &own),
        as_identity(addr, &viewer),
        as_identity(addr, &operator),
        Api::with_tls(addr, Duration::from_secs(10), trust.admin_tls()),
    ];

    // Caller by caller, the administrator last (its requests change things).
    let mut wrong = Vec::new();
    for (column, api) in callers.iter().enumerate() {
        for row in ROWS {
            let expected = answer_of(row.expected.as_bytes()[column] as char);
            let (got, detail) = classify(api, row, &token).await;
            if got != expected {
                wrong.push(format!("{} {} as {}: expected {expected:?}, got {got:?}: {detail}", row.method, row.path, CALLERS[column]));
            }
        }
    }
    assert!(wrong.is_empty(), "{} answer(s) differ from the matrix:\n{}", wrong.len(), wrong.join("\n"));
}

/// The FNV-1a cluster id of the transport (`edgeplane_raft::transport::cluster_id`), from the
/// members' peer addresses.
fn cluster_id(members: &[(u64, SocketAddr)]) -> u64 {
    let mut sorted: Vec<String> = members.iter().map(|(id, addr)| format!("{id}={addr}")).collect();
    sorted.sort();
    sorted.join(",").bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

/// A TLS connection to a member's peer port, presenting `identity`.
async fn peer_connection(
    cluster: &Cluster,
    to: u64,
    identity: Option<&TlsIdentity>,
) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let node = &cluster.nodes[(to - 1) as usize];
    let config = cluster.trust.tls_as(identity);
    let tcp = tokio::net::TcpStream::connect(node.peer_private).await?;
    let name = rustls::pki_types::ServerName::IpAddress(node.peer_private.ip().into());
    let mut stream = tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp).await?;
    // TLS 1.3 sends the client's certificate after the client considers the handshake done:
    // a refusal shows on the first read or write after it.
    stream.flush().await?;
    Ok(stream)
}

/// Writes `bytes` and reads until the peer closes: `true` when it closed the connection
/// within ten seconds (a refusal), `false` when it kept it open.
async fn closed_after(stream: &mut (impl tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin), bytes: &[u8]) -> bool {
    let _ = stream.write_all(bytes).await;
    let _ = stream.flush().await;
    let mut buf = [0u8; 1024];
    let read = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    });
    read.await.is_ok()
}

fn frame(kind: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![kind];
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// Raft peers: a stranger without a certificate, with another CA's, with the right CA's but
/// claiming another member, and a member sending garbage frames and an undecodable snapshot.
/// Every one is refused and counted; the cluster keeps its leader; no process exits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raft_peers_refuse_strangers_and_garbage_and_the_cluster_keeps_its_leader() {
    let mut cluster = Cluster::start(ClusterSpec { subnet: 71, ..Default::default() }).await;
    let leader = cluster.wait_for_leader(Duration::from_secs(15)).await;
    let target = (1..=3).find(|&id| id != leader).expect("a follower");
    let refused_before = cluster.api(target).metric("edgeplane_raft_peer_connections_refused_total").await.unwrap_or(0.0);
    let members: Vec<(u64, SocketAddr)> = cluster.nodes.iter().map(|n| (n.id, n.peer_public)).collect();
    let mut hello = b"edgeplane-raft/2".to_vec();
    hello.extend_from_slice(&cluster_id(&members).to_be_bytes());
    let member_dir = |id: u64| cluster.trust.dir.join("members").join(id.to_string());
    let sender = (1..=3).find(|&id| id != leader && id != target).expect("the third member");
    let member = TlsIdentity::load(&member_dir(sender).join("member.crt"), &member_dir(sender).join("member.key")).expect("member cert");
    let mut refusals = 0;

    // Plain TCP with garbage: no TLS handshake.
    let mut plain = tokio::net::TcpStream::connect(cluster.nodes[(target - 1) as usize].peer_private).await.expect("connect");
    assert!(closed_after(&mut plain, b"GET / HTTP/1.1\r\n\r\n").await, "a plaintext stranger was kept");
    refusals += 1;
    // TLS without a certificate.
    if let Ok(mut s) = peer_connection(&cluster, target, None).await {
        assert!(closed_after(&mut s, &hello).await, "a peer without a certificate was kept");
    }
    refusals += 1;
    // Another cluster's orchestrator certificate.
    let peer = cluster.nodes[(sender - 1) as usize].peer_public;
    let stranger_dir = other_cluster(sender, &peer.to_string(), &cluster.api_addr(sender).to_string());
    let m = stranger_dir.path().join("members").join(sender.to_string());
    let foreign = TlsIdentity::load(&m.join("member.crt"), &m.join("member.key")).expect("foreign member");
    if let Ok(mut s) = peer_connection(&cluster, target, Some(&foreign)).await {
        let mut claim = hello.clone();
        claim.extend_from_slice(&sender.to_be_bytes());
        assert!(closed_after(&mut s, &claim).await, "another CA's member certificate was kept");
    }
    refusals += 1;
    // The right CA, member `sender`'s certificate, claiming to be the leader.
    let mut s = peer_connection(&cluster, target, Some(&member)).await.expect("a member's certificate is accepted by TLS");
    let mut claim = hello.clone();
    claim.extend_from_slice(&leader.to_be_bytes());
    assert!(closed_after(&mut s, &claim).await, "a member claiming another member's id was kept");
    refusals += 1;
    // A real member, then garbage: an unknown frame kind, a message that is not protobuf, a
    // snapshot whose state does not decode, and a frame larger than the limit.
    let mut as_member = hello.clone();
    as_member.extend_from_slice(&sender.to_be_bytes());
    // MsgSnapshot (type 7) from `sender`, to `target`: fields 1, 2 and 3 of eraftpb.Message.
    let envelope = [0x08, 0x07, 0x10, target as u8, 0x18, sender as u8];
    let garbage_state = vec![0xA5u8; 4096];
    let mut begin = (garbage_state.len() as u64).to_be_bytes().to_vec();
    begin.extend_from_slice(&envelope);
    let undecodable_snapshot = [frame(1, &begin), frame(2, &garbage_state)].concat();
    let oversized = {
        let mut f = vec![0u8];
        f.extend_from_slice(&u32::MAX.to_be_bytes());
        f
    };
    for (what, garbage) in [
        ("an unknown frame kind", frame(9, b"hello")),
        ("a message that is not protobuf", frame(0, &[0xff; 64])),
        ("an undecodable snapshot", undecodable_snapshot),
        ("a frame over the limit", oversized),
    ] {
        let mut s = peer_connection(&cluster, target, Some(&member)).await.expect("a member connects");
        assert!(closed_after(&mut s, &[as_member.clone(), garbage].concat()).await, "{what} was not refused");
        refusals += 1;
    }

    // Refused, counted, harmless.
    let counted = eventually(
        "the refusals to be counted",
        Duration::from_secs(10),
        async || {
            let now = cluster.api(target).metric("edgeplane_raft_peer_connections_refused_total").await?;
            (now - refused_before >= f64::from(refusals - 1)).then_some(now - refused_before)
        },
        || cluster.log_tail(target),
    )
    .await;
    assert!(counted <= f64::from(refusals) + 2.0, "{counted} refusals counted for {refusals} hostile connections");
    for id in 1..=3 {
        assert_eq!(cluster.wait_exit(id, Duration::from_millis(10)), None, "member {id} exited:\n{}", cluster.log_tail(id));
    }
    let after = cluster.wait_for_leader(Duration::from_secs(10)).await;
    assert_eq!(after, leader, "the cluster changed its leader:\n{}", cluster.all_logs());
    let log = std::fs::read_to_string(&cluster.nodes[(target - 1) as usize].log_path).expect("log");
    assert!(!log.contains("panicked"), "member {target} panicked:\n{log}");
    // The cluster still commits.
    let reply = cluster.api(leader).put("/v1/store/after-hostile-peers/k", &json!({"ok": true})).await.expect("write");
    assert_eq!(reply.code, 201, "{}", reply.body);
}

/// Bootstrap tokens: used up, expired, bound to one node; enrollment under a name already
/// taken needs that node's current certificate or a token; `edgectl token` makes and lists them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bootstrap_tokens_are_used_up_expire_and_bind_their_node() {
    let cluster = Cluster::start(ClusterSpec { subnet: 72, size: 1, ..Default::default() }).await;
    cluster.wait_for_leader(Duration::from_secs(15)).await;
    let admin = cluster.api(1);
    let anon = anonymous(cluster.api_addr(1));

    // Single use.
    let once = bootstrap_token(&admin, json!({"ttlSeconds": 600, "uses": 1})).await;
    let (code, tok_a, body) = try_enroll(&anon, &once, "tok-a", "uid-a").await;
    assert_eq!(code, 200, "{body}");
    let tok_a = tok_a.expect("tok-a's certificate");
    let (code, _, body) = try_enroll(&anon, &once, "tok-b", "uid-b").await;
    // A used-up token is gone: it is as good as one never issued.
    assert_eq!(code, 401, "a used-up token enrolled another node: {body}");

    // Expiry.
    let brief = bootstrap_token(&admin, json!({"ttlSeconds": 1, "uses": 5})).await;
    tokio::time::sleep(Duration::from_millis(2_100)).await;
    let (code, _, body) = try_enroll(&anon, &brief, "tok-c", "uid-c").await;
    assert_eq!(code, 401, "an expired token enrolled a node: {body}");
    assert!(body["message"].as_str().unwrap_or_default().contains("expired"), "{body}");

    // Bound to a node name, made with edgectl.
    let made = edgeplane_tests::edgectl(&[cluster.api_addr(1)])
        .args(["token", "create", "--ttl", "1h", "--node", "tok-d", "--uses", "2"])
        .output()
        .expect("edgectl token create");
    assert!(made.status.success(), "edgectl token create: {}", String::from_utf8_lossy(&made.stderr));
    let stdout = String::from_utf8_lossy(&made.stdout);
    let bound = stdout.split_whitespace().find(|w| w.starts_with("ept.")).unwrap_or_else(|| panic!("no token in: {stdout}")).to_owned();
    let (code, _, body) = try_enroll(&anon, &bound, "tok-e", "uid-e").await;
    assert_eq!(code, 403, "a token for tok-d enrolled tok-e: {body}");
    let (code, _, body) = try_enroll(&anon, &bound, "tok-d", "uid-d").await;
    assert_eq!(code, 200, "{body}");
    let listed = edgeplane_tests::edgectl(&[cluster.api_addr(1)]).args(["token", "list"]).output().expect("edgectl token list");
    let listing = String::from_utf8_lossy(&listed.stdout);
    assert!(listed.status.success() && listing.contains("tok-d"), "token list: {listing}");
    assert!(!listing.contains(&bound), "token list shows a secret: {listing}");

    // The name tok-a is taken and its certificate valid. Knowing the name, or the uid too
    // (viewers read both), with a token for any node, takes nothing over; the node itself
    // (presenting its certificate) or a token made for tok-a does.
    let more = bootstrap_token(&admin, json!({"ttlSeconds": 600, "uses": 5})).await;
    let (code, _, body) = try_enroll(&anon, &more, "tok-a", "uid-impostor").await;
    assert!(code == 409 || code == 403, "another runtime took over tok-a by its name: {code} {body}");
    let (code, _, body) = try_enroll(&anon, &more, "tok-a", "uid-a").await;
    assert_eq!(code, 403, "a token for any node took over the live node tok-a by its uid: {body}");
    let (code, _, body) = try_enroll(&as_identity(cluster.api_addr(1), &tok_a), &more, "tok-a", "uid-a").await;
    assert_eq!(code, 200, "tok-a enrolling again with its own certificate: {body}");
    let for_a = bootstrap_token(&admin, json!({"ttlSeconds": 600, "uses": 1, "node": "tok-a"})).await;
    let (code, _, body) = try_enroll(&anon, &for_a, "tok-a", "uid-a").await;
    assert_eq!(code, 200, "tok-a enrolling again with a token made for it: {body}");

    // Only the newest certificate renews: an older one (a backup) cannot push it out.
    let renew = |identity: &TlsIdentity, node: &str| {
        let api = as_identity(cluster.api_addr(1), identity);
        let path = format!("/v1/nodes/{node}/certificate");
        let fresh = KeyAndRequest::generate(node).expect("key");
        async move {
            let reply = api.raw(Request::new(Method::POST, path).json(&json!({"csr": fresh.request_pem}))).await.expect("answered");
            let identity = reply.is_success().then(|| {
                let issued: CertificateResponse = reply.json().expect("certificate");
                TlsIdentity::from_pem(&issued.certificate, &fresh.key_pem).expect("identity")
            });
            (reply.status.as_u16(), identity)
        }
    };
    let first = enroll(&cluster, &more, "tok-r").await;
    let (code, second) = renew(&first, "tok-r").await;
    assert_eq!(code, 200);
    let (code, _) = renew(&first, "tok-r").await;
    assert_eq!(code, 403, "the certificate before the newest renewed");
    let (code, _) = renew(&second.expect("renewed"), "tok-r").await;
    assert_eq!(code, 200, "the newest certificate renews");

    // Whoever may issue certificates cannot mint a cluster admin unless they are one.
    let collection = |kind: &str| format!("{BASE}/{kind}");
    for (kind, object) in [
        (
            "clusterroles",
            json!({"apiVersion": "edgeplane.io/v1alpha1", "kind": "ClusterRole", "metadata": {"name": "issuer"},
            "spec": {"rules": [{"verbs": ["create"], "resources": ["certificates"]}]}}),
        ),
        (
            "clusterrolebindings",
            json!({"apiVersion": "edgeplane.io/v1alpha1", "kind": "ClusterRoleBinding", "metadata": {"name": "iris-issues"},
            "spec": {"roleRef": {"kind": "ClusterRole", "name": "issuer"}, "subjects": [{"kind": "User", "name": "iris"}]}}),
        ),
    ] {
        let reply = admin.request(Method::POST, &collection(kind), Some(object.to_string().into_bytes())).await.expect("create");
        assert_eq!(reply.code, 201, "{kind}: {}", reply.body);
    }
    let iris =
        as_identity(cluster.api_addr(1), &offline_certificate(&cluster, &user("iris", None), Duration::ZERO, Duration::from_secs(600)));
    for (group, expected) in [(edgeplane_api::auth::CLUSTER_ADMINS_GROUP, 403), ("ops", 200)] {
        let fresh = KeyAndRequest::generate("someone").expect("key");
        let request = json!({"user": "someone", "group": group, "csr": fresh.request_pem});
        let reply = iris.request(Method::POST, "/v1/certificates", Some(request.to_string().into_bytes())).await.expect("answered");
        assert_eq!(reply.code, expected, "an issuer asking for a certificate in group {group}: {}", reply.body);
    }

    // A ServiceAccount's token dies with it, and stays dead when the name is reused.
    let account = json!({"apiVersion": "edgeplane.io/v1alpha1", "kind": "ServiceAccount", "metadata": {"name": "ci"}, "spec": {}});
    let accounts = format!("{BASE}/namespaces/tools/serviceaccounts");
    let reply = admin.request(Method::POST, &accounts, Some(account.to_string().into_bytes())).await.expect("create");
    assert_eq!(reply.code, 201, "{}", reply.body);
    let reply = admin.request(Method::POST, "/v1/serviceaccounts/tools/ci/token", None).await.expect("token");
    assert_eq!(reply.code, 201, "{}", reply.body);
    let token = reply.body["token"].as_str().expect("token").to_owned();
    let as_ci = Api::with_token(cluster.api_addr(1), &token);
    assert_eq!(as_ci.get("/v1/whoami").await.expect("whoami").code, 200);
    assert_eq!(admin.delete(&format!("{accounts}/ci")).await.expect("delete").code, 200);
    assert_eq!(as_ci.get("/v1/whoami").await.expect("whoami").code, 401, "a deleted ServiceAccount's token still works");
    let reply = admin.request(Method::POST, &accounts, Some(account.to_string().into_bytes())).await.expect("create again");
    assert_eq!(reply.code, 201, "{}", reply.body);
    assert_eq!(
        as_ci.get("/v1/whoami").await.expect("whoami").code,
        401,
        "a token came back to life with a new ServiceAccount of the same name"
    );
}

/// Reads a node's certificate serial from its data directory.
fn node_serial(data_dir: &Path) -> Option<String> {
    let pem = String::from_utf8(edgeplane_tests::edge_file(data_dir, "node.crt")?).ok()?;
    Some(edgeplane_tls::PeerCertificate::from_pem(&pem).ok()?.serial)
}

/// An edge renews its short-lived certificate by itself, also while the orchestrator it
/// talked to is down; renewing does not turn into a loop; revoking the node ends its
/// certificate at once, and the runtime enrolls again only with a bootstrap token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_renew_across_an_orchestrator_failover_and_revocation_is_immediate() {
    let ttl_s = 12;
    let spec = ClusterSpec { subnet: 73, extra_args: vec!["--node-cert-ttl-s".into(), ttl_s.to_string()], ..Default::default() };
    let mut cluster = Cluster::start(spec).await;
    let leader = cluster.wait_for_leader(Duration::from_secs(15)).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let servers: Vec<SocketAddr> = (1..=3).map(|id| cluster.api_addr(id)).collect();
    let edge = EdgeRuntime::start("renewer", &servers, dir.path().join("renewer"), &[]).await;
    let first = eventually("the node to enroll", Duration::from_secs(20), async || node_serial(&edge.data_dir), || edge.log_tail()).await;

    // Kill the leader: the node renews through the others.
    cluster.kill(leader);
    let second = eventually(
        "a renewal after the leader died",
        Duration::from_secs(30),
        async || node_serial(&edge.data_dir).filter(|s| *s != first),
        || format!("{}\n{}", edge.log_tail(), cluster.all_logs()),
    )
    .await;
    let third = eventually(
        "a second renewal",
        Duration::from_secs(30),
        async || node_serial(&edge.data_dir).filter(|s| *s != first && *s != second),
        || edge.log_tail(),
    )
    .await;
    assert_ne!(second, third);
    // Renewal comes at two thirds of the lifetime, not in a loop: over one lifetime, at most
    // three renewals (one is due every 8 s).
    let before = edge.log().matches("renewed its certificate").count();
    tokio::time::sleep(Duration::from_secs(ttl_s)).await;
    let renewals = edge.log().matches("renewed its certificate").count() - before;
    assert!((1..=3).contains(&renewals), "{renewals} renewals in one {ttl_s} s lifetime:\n{}", edge.log_tail());
    let survivor = (1..=3).find(|&id| id != leader).expect("a survivor");
    let reply = cluster.api(survivor).get("/apis/edgeplane.io/v1alpha1/edgenodes/renewer").await.expect("node");
    let ready = edgeplane_tests::ready_condition(&reply.body).map(|c| c["status"].clone());
    assert_eq!(ready, Some(json!("True")), "the node is not Ready: {}", reply.body);
    // Its heartbeats went to the new leader on a stream, opened again after each renewal.
    let new_leader = cluster.wait_for_leader(Duration::from_secs(10)).await;
    let heartbeats =
        async |via: &str| cluster.api(new_leader).metric(&format!("edgeplane_heartbeats_total{{via=\"{via}\"}}")).await.unwrap_or(0.0);
    let (streamed, requested) = (heartbeats("stream").await, heartbeats("request").await);
    assert!(streamed >= 10.0 && requested < streamed, "the new leader took {streamed} heartbeats on streams, {requested} as requests");

    // Revocation: the node's certificate stops working at once, on every orchestrator.
    // The node renews every few seconds: read its key and certificate as one pair.
    let pem = |f: &str| String::from_utf8(edgeplane_tests::edge_file(&edge.data_dir, f).expect("node credential")).expect("PEM");
    let (stolen, stolen_serial) = loop {
        let (key, cert) = (pem("node.key"), pem("node.crt"));
        if pem("node.key") == key && pem("node.crt") == cert {
            let serial = edgeplane_tls::PeerCertificate::from_pem(&cert).expect("certificate").serial;
            break (TlsIdentity::from_pem(&cert, &key).expect("identity"), serial);
        }
    };
    let revoked = edgeplane_tests::edgectl(&servers).args(["node", "revoke", "renewer"]).output().expect("edgectl node revoke");
    assert!(revoked.status.success(), "edgectl node revoke: {}", String::from_utf8_lossy(&revoked.stderr));
    for id in cluster.running() {
        let as_node = as_identity(cluster.api_addr(id), &stolen);
        let reply = as_node.get("/apis/edgeplane.io/v1alpha1/edgenodes/renewer").await.expect("answer");
        assert_eq!(reply.code, 401, "the revoked certificate still works on orchestrator {id}: {}", reply.body);
    }
    // The runtime finds out at its next heartbeat and enrolls again with its bootstrap token.
    let again = eventually(
        "the runtime to enroll again",
        Duration::from_secs(20),
        async || node_serial(&edge.data_dir).filter(|s| *s != stolen_serial),
        || edge.log_tail(),
    )
    .await;

    // Down for longer than its certificate lives: the runtime comes back, finds it expired,
    // and enrolls again with its token (presenting the expired one would fail every handshake).
    let mut edge = edge;
    edge.kill();
    tokio::time::sleep(Duration::from_secs(ttl_s + 2)).await;
    edge.start_again();
    eventually(
        "the runtime to enroll again after its certificate expired",
        Duration::from_secs(30),
        async || node_serial(&edge.data_dir).filter(|s| *s != again),
        || edge.log_tail(),
    )
    .await;
    assert!(edge.log().contains("certificate expired; enrolling again"), "{}", edge.log_tail());
}

/// The smallest workload module: takes every batch, emits nothing.
fn quiet_module() -> Vec<u8> {
    wat::parse_str(
        r#"(module
            (memory (export "memory") 2)
            (func (export "ep_abi_version") (result i32) i32.const 1)
            (func (export "ep_alloc") (param i32) (result i32) i32.const 1024)
            (func (export "ep_process") (param i32 i32) (result i32) i32.const 0))"#,
    )
    .expect("wat")
}

fn pinned_workload(name: &str, module: &str, line: &str) -> Value {
    json!({
        "apiVersion": "edgeplane.io/v1alpha1",
        "kind": "Workload",
        "metadata": {"name": name, "namespace": "rs"},
        "spec": {
            "module": module,
            "placement": {"nodeSelector": {"line": line}},
            "resources": {"memoryMib": 16, "batchTimeMs": 1000},
            "inputs": [format!("line-{line}/temperature")],
            "config": {"max": 100.0},
            "outputs": [{"name": "out", "sink": {"type": "cloud"}}]
        }
    })
}

fn up_record(assignment: &Value, seq: u64) -> Value {
    let spec = &assignment["spec"];
    json!({
        "stream": format!("rs/{}/out", assignment["metadata"]["name"].as_str().expect("name")),
        "seq": seq,
        "namespace": "rs",
        "workload": spec["workload"],
        "output": "out",
        "generation": spec["generation"],
        "producedMs": 1,
        "readings": [{"ts": 1, "device": "press-1", "metric": "temperature", "value": 1.0}]
    })
}

/// A node acts only on its own work: another node's Assignments, status, heartbeats and
/// streams are refused, its own are not. The edge's own API admits devices to ingest and
/// operators to read, and no one else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_acts_only_on_its_own_work_and_the_edge_api_admits_by_group() {
    let cluster = Cluster::start(ClusterSpec { subnet: 74, size: 1, ..Default::default() }).await;
    cluster.wait_for_leader(Duration::from_secs(15)).await;
    let admin = cluster.api(1);
    let servers = vec![cluster.api_addr(1)];
    push_module(&admin, "rs", "filter", workload_wasm("threshold-filter")).await;
    push_module(&admin, "rs", "quiet", quiet_module()).await;
    create_resource(&admin, "rs", "workloads", &pinned_workload("wa", "filter@1.0.0", "a")).await;
    create_resource(&admin, "rs", "workloads", &pinned_workload("wb", "quiet@1.0.0", "b")).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let a = EdgeRuntime::start("rs-a", &servers, dir.path().join("a"), &["--label", "line=a"]).await;
    let b = EdgeRuntime::start("rs-b", &servers, dir.path().join("b"), &["--label", "line=b"]).await;
    a.wait_running(1, Duration::from_secs(40)).await;
    b.wait_running(1, Duration::from_secs(40)).await;
    let listed = admin.get(&format!("{BASE}/namespaces/rs/assignments")).await.expect("assignments");
    let assignments = listed.body["items"].as_array().expect("items").clone();
    let of = |node: &str| assignments.iter().find(|x| x["spec"]["nodeName"] == node).cloned().unwrap_or_else(|| panic!("{listed:?}"));
    let (mine, theirs) = (of("rs-a"), of("rs-b"));
    let name = |x: &Value| x["metadata"]["name"].as_str().expect("name").to_owned();
    let digest = |x: &Value| x["spec"]["moduleDigest"].as_str().expect("digest").to_owned();

    let pem = |f: &str| String::from_utf8(edgeplane_tests::edge_file(&a.data_dir, f).expect("node a's credential")).expect("PEM");
    let node_a = as_identity(cluster.api_addr(1), &TlsIdentity::from_pem(&pem("node.crt"), &pem("node.key")).expect("identity"));
    let code = |reply: Result<edgeplane_tests::Reply, edgeplane_tests::ClientError>| reply.expect("answered").code;
    let assignments_path = format!("{BASE}/namespaces/rs/assignments");
    // Its own: allowed.
    assert_eq!(code(node_a.get(&format!("{assignments_path}/{}", name(&mine))).await), 200);
    assert_eq!(code(node_a.get(&format!("{assignments_path}?labelSelector=edgeplane.io%2Fnode%3Drs-a")).await), 200);
    assert_eq!(code(node_a.get(&format!("/v1/blobs/{}", digest(&mine))).await), 200);
    let own_upload = json!({"records": [up_record(&mine, 1)]});
    let reply = node_a.request(Method::POST, "/v1/nodes/rs-a/data", Some(own_upload.to_string().into_bytes())).await.expect("upload");
    assert_eq!(reply.code, 200, "node a uploading its own stream: {}", reply.body);
    // Another node's: refused.
    let refusals = [
        ("read rs-b's Assignment", node_a.get(&format!("{assignments_path}/{}", name(&theirs))).await),
        ("list rs-b's Assignments", node_a.get(&format!("{assignments_path}?labelSelector=edgeplane.io%2Fnode%3Drs-b")).await),
        ("list every Assignment", node_a.get(&assignments_path).await),
        ("fetch a module only rs-b runs", node_a.get(&format!("/v1/blobs/{}", digest(&theirs))).await),
        ("fetch compiled a module only rs-b runs", node_a.get(&format!("/v1/blobs/{}/native", digest(&theirs))).await),
        ("write rs-b's status", node_a.put(&format!("{BASE}/edgenodes/rs-b/status"), &json!({"status": {"phase": "Down"}})).await),
        ("heartbeat as rs-b", node_a.request(Method::POST, "/v1/nodes/rs-b/heartbeat", Some(b"{}".to_vec())).await),
        ("upload as rs-b", node_a.request(Method::POST, "/v1/nodes/rs-b/data", Some(b"{\"records\": []}".to_vec())).await),
        ("renew rs-b's certificate", node_a.request(Method::POST, "/v1/nodes/rs-b/certificate", Some(b"{}".to_vec())).await),
        (
            "upload to rs-b's stream",
            node_a
                .request(Method::POST, "/v1/nodes/rs-a/data", Some(json!({"records": [up_record(&theirs, 1)]}).to_string().into_bytes()))
                .await,
        ),
    ];
    for (what, reply) in refusals {
        let reply = reply.expect("answered");
        assert_eq!(reply.code, 403, "node rs-a could {what}: {}", reply.body);
    }
    // Its own stream, filed under another Workload of the namespace: refused too.
    let mut mislabelled = up_record(&mine, 2);
    mislabelled["workload"] = json!("wb");
    let reply = node_a
        .request(Method::POST, "/v1/nodes/rs-a/data", Some(json!({"records": [mislabelled]}).to_string().into_bytes()))
        .await
        .expect("answered");
    assert_eq!(reply.code, 403, "node rs-a filed its output under Workload wb: {}", reply.body);
    let stream_refusal = node_a
        .request(Method::POST, "/v1/nodes/rs-a/data", Some(json!({"records": [up_record(&theirs, 1)]}).to_string().into_bytes()))
        .await
        .expect("answered");
    assert_eq!(stream_refusal.body["details"]["causes"][0]["field"], "records[0].stream", "{}", stream_refusal.body);
    assert!(
        edgeplane_tests::cloud_records(&servers, "rs", "wb").await.expect("records").is_empty(),
        "a record of rs-b's stream landed in the sink"
    );

    // The edge's own API.
    let trust = edgeplane_tests::trust_for(cluster.api_addr(1));
    let certs = tempfile::tempdir().expect("tempdir");
    trust.issue(&certs.path().join("device"), &["--user", "sensor-1", "--group", edgeplane_api::auth::DEVICES_GROUP]);
    trust.issue(&certs.path().join("viewer"), &["--user", "vera", "--group", "edgeplane:viewers"]);
    let load = |d: &str| TlsIdentity::load(&certs.path().join(d).join("client.crt"), &certs.path().join(d).join("client.key")).expect("id");
    let batch = edgeplane_api::data::encode_batch(&[edgeplane_api::data::Reading {
        ts: 1,
        device: "press-1".into(),
        metric: "temperature".into(),
        value: 1.0,
    }]);
    let as_b = edgeplane_tests::edge_identity(&b.data_dir).expect("b's identity");
    for (who, identity, ingest, read) in [
        ("nobody", None, 401, 401),
        ("a device", Some(load("device")), 200, 403),
        ("a viewer", Some(load("viewer")), 403, 200),
        ("another node", Some(as_b), 403, 403),
    ] {
        let http = a.http_as(identity.as_ref()).await;
        let (status, body) = edgeplane_tests::ingest_encoded(&http, "line-a/temperature", batch.clone()).await;
        assert_eq!(status, ingest, "{who} ingesting at rs-a: {body}");
        let stats = http.client.get(http.url("/v1/stats")).send().await.expect("stats").status().as_u16();
        assert_eq!(stats, read, "{who} reading rs-a's stats");
    }
    let foreign = other_admin(&other_cluster(1, "127.74.9.1:7000", "127.74.9.1:7001"));
    let http = a.http_as(Some(&foreign)).await;
    let (status, body) = edgeplane_tests::ingest_encoded(&http, "line-a/temperature", batch).await;
    assert_eq!(status, 0, "another cluster's administrator got an answer from rs-a: {body}");
}

/// The request id the server gave an answer.
fn request_id(answer: &edgeplane_client::Response) -> String {
    answer.headers.get("x-request-id").and_then(|v| v.to_str().ok()).expect("every answer has a request id").to_owned()
}

/// Every audit record the server serves, oldest first.
async fn audit_records(api: &Api) -> Vec<Value> {
    let mut all = Vec::new();
    let mut after = 0;
    loop {
        let page = api.get(&format!("/v1/audit?after={after}&limit=1000")).await.expect("audit page");
        assert_eq!(page.code, 200, "{}", page.body);
        let records = page.body["records"].as_array().expect("records").clone();
        let Some(last) = records.last() else { return all };
        after = last["seq"].as_u64().expect("seq");
        all.extend(records);
    }
}

/// One audit record per mutation (applied or failed) and per refusal, none for reads, the
/// same on every member; `edgectl audit verify` passes, and names the record an edit of a
/// member's archive broke.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_log_holds_one_record_per_mutation_and_refusal_and_names_a_tampered_record() {
    let cluster = Cluster::start(ClusterSpec { subnet: 75, ..Default::default() }).await;
    let leader = cluster.wait_for_leader(Duration::from_secs(15)).await;
    let follower = (1..=3).find(|&id| id != leader).expect("a follower");
    let admin = cluster.api(follower);
    let collection = format!("{BASE}/namespaces/audited/workloads");
    let workload = json!({"apiVersion": "edgeplane.io/v1alpha1", "kind": "Workload", "metadata": {"name": "w"},
        "spec": {"module": "m@1.0.0", "inputs": ["a/b"]}});
    let mut expected: Vec<(String, u16, &str)> = Vec::new();
    let send = async |api: &Api, request: Request, what: &'static str| {
        let answer = api.raw(request).await.expect("answered");
        (request_id(&answer), answer.status.as_u16(), what)
    };
    expected.push(send(&admin, Request::new(Method::POST, &collection).json(&workload), "create").await);
    expected.push(
        send(
            &admin,
            Request::new(Method::PATCH, format!("{collection}/w")).body("{\"spec\":{\"replicas\":2}}", "application/merge-patch+json"),
            "patch",
        )
        .await,
    );
    expected.push(send(&admin, Request::new(Method::POST, &collection).body("{\"kind\": 7}", "application/json"), "invalid create").await);
    expected.push(send(&admin, Request::new(Method::DELETE, format!("{collection}/w")), "delete").await);
    expected.push(send(&anonymous(cluster.api_addr(follower)), Request::get("/v1/cluster"), "anonymous read").await);
    let viewer = offline_certificate(&cluster, &user("nobody-bound", None), Duration::ZERO, Duration::from_secs(600));
    expected.push(
        send(&as_identity(cluster.api_addr(leader), &viewer), Request::new(Method::POST, &collection).json(&workload), "unbound create")
            .await,
    );
    let read = send(&admin, Request::get(&collection), "read").await;
    let codes: Vec<u16> = expected.iter().map(|e| e.1).collect();
    assert_eq!(codes, vec![201, 200, 422, 200, 401, 403], "{expected:?}");

    let third = (1..=3).find(|&id| id != leader && id != follower).expect("a third member");
    let records = eventually(
        "every record on the third member",
        Duration::from_secs(20),
        async || {
            let all = audit_records(&cluster.api(third)).await;
            expected.iter().all(|(id, _, _)| all.iter().any(|r| r["event"]["requestId"] == id.as_str())).then_some(all)
        },
        || cluster.all_logs(),
    )
    .await;
    for (id, code, what) in &expected {
        let found: Vec<&Value> = records.iter().filter(|r| r["event"]["requestId"] == id.as_str()).collect();
        assert_eq!(found.len(), 1, "the {what} request has {} records: {found:?}", found.len());
        assert_eq!(found[0]["event"]["code"], *code, "{what}: {}", found[0]);
    }
    assert!(!records.iter().any(|r| r["event"]["requestId"] == read.0.as_str()), "a read was audited");
    let verified = edgeplane_tests::edgectl(&[cluster.api_addr(third)]).args(["audit", "verify"]).output().expect("edgectl audit verify");
    assert!(verified.status.success(), "audit verify on an intact log: {}", String::from_utf8_lossy(&verified.stderr));

    // Edit the third member's archive: the patch's record says it was someone else.
    let patched = records.iter().find(|r| r["event"]["requestId"] == expected[1].0.as_str()).expect("the patch's record");
    let seq = patched["seq"].as_u64().expect("seq");
    let archive = cluster.nodes[(third - 1) as usize].data_dir.join("audit");
    eventually(
        "the record in the archive",
        Duration::from_secs(20),
        async || {
            for entry in std::fs::read_dir(&archive).ok()?.flatten() {
                let text = std::fs::read_to_string(entry.path()).ok()?;
                if text.contains(expected[1].0.as_str()) {
                    let user = patched["event"]["user"].as_str()?;
                    let line = text.lines().find(|l| l.contains(expected[1].0.as_str()))?;
                    let forged = line.replacen(&format!("\"user\":\"{user}\""), "\"user\":\"mallory\"", 1);
                    assert_ne!(line, forged, "the archive line has no user field: {line}");
                    std::fs::write(entry.path(), text.replacen(line, &forged, 1)).ok()?;
                    return Some(());
                }
            }
            None
        },
        || cluster.log_tail(third),
    )
    .await;
    let verified = edgeplane_tests::edgectl(&[cluster.api_addr(third)]).args(["audit", "verify"]).output().expect("edgectl audit verify");
    let stderr = String::from_utf8_lossy(&verified.stderr);
    assert!(!verified.status.success(), "audit verify passed an edited log");
    assert!(stderr.contains(&format!("broken at record {seq}")), "audit verify must name record {seq}: {stderr}");
}

/// An alias bomb: one anchored list of `width` scalars and `copies` aliases of it, about
/// 5 * width bytes, expanding to width * copies nodes.
fn alias_bomb(width: usize, copies: usize) -> String {
    let mut text = String::from(
        "apiVersion: edgeplane.io/v1alpha1\nkind: Workload\nmetadata:\n  name: bomb\nspec:\n  module: m@1.0.0\n  config:\n    a: &a [",
    );
    text.push_str(&vec!["x"; width].join(","));
    text.push_str("]\n    b: [");
    text.push_str(&vec!["*a"; copies].join(","));
    text.push_str("]\n");
    text
}

/// The door against hostile clients: an alias bomb is refused quickly (by the server and by
/// edgectl), a client holding connections open does not stop `/healthz` for others, a body
/// is not read before its sender is authenticated, and a Workload cannot make edges send to
/// an address no SinkPolicy allows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_door_holds_against_alias_bombs_slow_clients_early_bodies_and_unlisted_sinks() {
    let per_ip = 8;
    // Fewer turns for handshakes than the slow address holds connections: a connection that
    // sends nothing must not hold one.
    let extra_args = ["--max-connections-per-ip", &per_ip.to_string(), "--concurrent-handshakes", "2"].map(str::to_owned).to_vec();
    let spec = ClusterSpec { subnet: 76, size: 1, extra_args, ..Default::default() };
    let cluster = Cluster::start(spec).await;
    cluster.wait_for_leader(Duration::from_secs(15)).await;
    let addr = cluster.api_addr(1);
    let admin = cluster.api(1);
    let collection = format!("{BASE}/namespaces/door/workloads");

    // An alias bomb of ~100 KB that would expand to 400 million nodes.
    let bomb = alias_bomb(20_000, 20_000);
    assert!(bomb.len() > 90_000 && bomb.len() < 110_000, "{}", bomb.len());
    let reply = admin
        .send(Request::new(Method::POST, &collection).body(bomb.clone(), "application/yaml"))
        .await
        .expect("the server answers an alias bomb");
    assert_eq!(reply.code, 400, "{}", reply.body);
    assert!(reply.body.to_string().contains("alias"), "the refusal says why: {}", reply.body);
    let file = tempfile::NamedTempFile::new().expect("file");
    std::fs::write(file.path(), &bomb).expect("write");
    let applied = edgeplane_tests::edgectl(&[addr]).arg("apply").arg("-f").arg(file.path()).output().expect("edgectl apply");
    assert!(!applied.status.success(), "edgectl applied an alias bomb");
    assert!(String::from_utf8_lossy(&applied.stderr).contains("alias"), "{}", String::from_utf8_lossy(&applied.stderr));

    // Slow loris: one address holds every connection it may, sending nothing.
    let slow_ip = Ipv4Addr::new(127, 76, 0, 50);
    let mut held = Vec::new();
    for _ in 0..per_ip + 4 {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket.bind(SocketAddr::from((slow_ip, 0))).expect("bind");
        held.push(socket.connect(addr).await.expect("connect"));
    }
    // Others are still served, at once.
    let started = std::time::Instant::now();
    let health = admin.get("/healthz").await.expect("healthz from another address");
    assert_eq!(health.code, 200);
    for _ in 0..4 {
        let fresh = as_identity(addr, &cluster.trust.admin_identity());
        assert_eq!(fresh.get("/healthz").await.expect("healthz on a new connection").code, 200);
    }
    assert!(started.elapsed() < Duration::from_secs(5), "new connections waited {:?} behind silent ones", started.elapsed());
    // The connections over the limit were closed at once; the others when the handshake
    // timed out, so none of them is held for long.
    let mut closed = 0;
    for mut tcp in held {
        let mut buf = [0u8; 16];
        if let Ok(Ok(0) | Err(_)) = tokio::time::timeout(Duration::from_secs(30), tcp.read(&mut buf)).await {
            closed += 1;
        }
    }
    assert_eq!(closed, per_ip + 4, "connections that never sent a byte stay open");

    // A body is not read before its sender is known: headers promising 64 MiB, no body, and
    // the answer comes anyway.
    let early = |identity: Option<TlsIdentity>, method: &'static str, path: &'static str| {
        let config = edgeplane_tests::trust_for(addr).tls_as(identity.as_ref());
        async move {
            let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
            let name = rustls::pki_types::ServerName::IpAddress(addr.ip().into());
            let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp).await.expect("TLS");
            let head = format!(
                "{method} {path} HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\ncontent-length: 67108864\r\n\r\n{{\"a\":"
            );
            tls.write_all(head.as_bytes()).await.expect("send headers");
            let mut answer = Vec::new();
            let mut buf = [0u8; 4096];
            let read = tokio::time::timeout(Duration::from_secs(15), async {
                loop {
                    match tls.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            answer.extend_from_slice(&buf[..n]);
                            if answer.windows(4).any(|w| w == b"\r\n\r\n") {
                                break;
                            }
                        }
                    }
                }
            })
            .await;
            assert!(read.is_ok(), "no answer to {path} before its body was sent");
            String::from_utf8_lossy(&answer).lines().next().unwrap_or_default().to_owned()
        }
    };
    let status = early(None, "POST", "/v1/modules/door/big/1.0.0").await;
    assert!(status.contains(" 401 "), "an anonymous upload is refused before its body: {status}");
    let admin_identity = edgeplane_tests::trust_for(addr).admin_identity();
    let status = early(Some(admin_identity), "PUT", "/v1/store/door-notes/big").await;
    assert!(status.contains(" 413 "), "a body over the limit is refused from its length: {status}");

    // HTTP sinks only where a policy allows.
    let with_sink = |url: &str| {
        json!({"apiVersion": "edgeplane.io/v1alpha1", "kind": "Workload", "metadata": {"name": "exfil"},
            "spec": {"module": "m@1.0.0", "inputs": ["a/b"], "outputs": [{"name": "out", "sink": {"type": "http", "url": url}}]}})
    };
    let metadata_service = with_sink("http://169.254.169.254/latest/meta-data/");
    let reply = admin.request(Method::POST, &collection, Some(metadata_service.to_string().into_bytes())).await.expect("create");
    assert_eq!(reply.code, 422, "a sink to the metadata service was accepted: {}", reply.body);
    assert_eq!(reply.body["details"]["causes"][0]["field"], "spec.outputs[0].sink.url", "{}", reply.body);
    let policy = json!({"apiVersion": "edgeplane.io/v1alpha1", "kind": "SinkPolicy", "metadata": {"name": "collector"},
        "spec": {"httpAllow": ["http://10.1.2.3:8080/ingest/"]}});
    let reply = admin
        .request(Method::POST, &format!("{BASE}/namespaces/door/sinkpolicies"), Some(policy.to_string().into_bytes()))
        .await
        .expect("policy");
    assert_eq!(reply.code, 201, "{}", reply.body);
    for (url, code) in [
        ("http://10.1.2.3:8080/ingest/line-a", 201),
        ("http://10.1.2.3:8080/admin", 422),
        ("http://10.1.2.3:8081/ingest/", 422),
        ("http://169.254.169.254/latest/meta-data/", 422),
    ] {
        let _ = admin.delete(&format!("{collection}/exfil")).await;
        let reply = admin.request(Method::POST, &collection, Some(with_sink(url).to_string().into_bytes())).await.expect("create");
        assert_eq!(reply.code, code, "a sink to {url}: {}", reply.body);
    }
    // Another namespace's policy does not apply here.
    let reply = admin
        .request(
            Method::POST,
            &format!("{BASE}/namespaces/elsewhere/workloads"),
            Some(with_sink("http://10.1.2.3:8080/ingest/x").to_string().into_bytes()),
        )
        .await
        .expect("create");
    assert_eq!(reply.code, 422, "door's SinkPolicy applied in namespace elsewhere: {}", reply.body);
}

/// One end of a node's heartbeat stream, as the test drives it.
struct HeartbeatStreamEnd {
    lines: tokio::sync::mpsc::Sender<Vec<u8>>,
    answers: std::pin::Pin<Box<dyn futures::Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>,
    answer_lines: edgeplane_client::Lines,
}

impl HeartbeatStreamEnd {
    /// Opens node `name`'s stream as `identity`: the live stream, or the refusal's code and Status.
    async fn open(addr: SocketAddr, identity: &TlsIdentity, name: &str) -> Result<HeartbeatStreamEnd, (u16, String)> {
        let client = edgeplane_client::Client::new(
            &[addr.to_string()],
            edgeplane_client::ClientOptions::default(),
            edgeplane_tests::trust_for(addr).tls_as(Some(identity)),
        )
        .expect("client");
        let (lines, body) = edgeplane_client::fed_body(4);
        let path = edgeplane_api::node::heartbeat_stream_path(name);
        let server = addr.to_string();
        let opening = client.open_stream(&server, &path, edgeplane_api::node::NDJSON, body, Duration::from_secs(10));
        // The head comes once the first bytes are on their way; an empty line takes nothing.
        lines.send(b"\n".to_vec()).await.expect("the request body");
        match opening.await.expect("an answer") {
            Ok(live) => {
                Ok(HeartbeatStreamEnd { lines, answers: Box::pin(live.bytes_stream()), answer_lines: edgeplane_client::Lines::default() })
            }
            Err(refusal) => Err((refusal.status.as_u16(), refusal.status_error().message)),
        }
    }

    async fn send(&self, bytes: &[u8]) {
        self.lines.send(bytes.to_vec()).await.expect("the request body");
    }

    /// The leader's next answer line.
    async fn next(&mut self) -> edgeplane_api::node::HeartbeatStreamEvent {
        use futures::StreamExt;
        loop {
            if let Some(line) = self.answer_lines.next_line() {
                return serde_json::from_slice(&line)
                    .unwrap_or_else(|e| panic!("{:?} is not a stream event: {e}", String::from_utf8_lossy(&line)));
            }
            let chunk = tokio::time::timeout(Duration::from_secs(10), self.answers.next())
                .await
                .expect("an answer line within 10 s")
                .expect("the answer goes on")
                .expect("the connection holds");
            self.answer_lines.push(&chunk);
        }
    }
}

fn heartbeat_line(cpu_millis: u32) -> Vec<u8> {
    let mut line = json!({"load": {"cpuMillis": cpu_millis, "memoryMib": 64, "instances": 0, "queueDepth": 0}}).to_string().into_bytes();
    line.push(b'\n');
    line
}

/// A heartbeat stream is the node's own: another node, even one that may send the node's
/// heartbeats as requests, cannot open it. The leader takes each line as the node's
/// heartbeat and says how many it took; it ends the stream, saying why, at the first line
/// that is not a heartbeat, at a line longer than a heartbeat may be, and at the first
/// heartbeat after the node's certificate is revoked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_heartbeat_stream_is_the_nodes_own_and_ends_at_a_bad_line_or_a_revoked_certificate() {
    let cluster = Cluster::start(ClusterSpec { subnet: 77, size: 1, ..Default::default() }).await;
    cluster.wait_for_leader(Duration::from_secs(15)).await;
    let (addr, admin) = (cluster.api_addr(1), cluster.api(1));
    let token = bootstrap_token(&admin, json!({"ttlSeconds": 3600, "uses": 10})).await;
    let (a, b) = (enroll(&cluster, &token, "hs-a").await, enroll(&cluster, &token, "hs-b").await);

    let refused = HeartbeatStreamEnd::open(addr, &b, "hs-a").await.err().expect("node hs-b opened hs-a's stream");
    assert_eq!(refused.0, 403, "another node's stream: {refused:?}");

    // Each heartbeat is taken and counted; two in one write, and one split over two, too.
    let mut stream = HeartbeatStreamEnd::open(addr, &a, "hs-a").await.expect("hs-a's own stream");
    stream.send(&heartbeat_line(111)).await;
    assert_eq!(stream.next().await.received, 1);
    let last = admin.get("/v1/nodes/hs-a/heartbeat").await.expect("last heartbeat");
    assert_eq!(last.body["heartbeat"]["load"]["cpuMillis"], 111, "the leader's view of hs-a: {}", last.body);
    stream.send(&[heartbeat_line(112), heartbeat_line(113)].concat()).await;
    let split = heartbeat_line(114);
    stream.send(&split[..10]).await;
    stream.send(&split[10..]).await;
    let mut received = 0;
    while received < 4 {
        let event = stream.next().await;
        assert!(event.end.is_none(), "the stream ended after {received}: {event:?}");
        received = event.received;
    }
    assert_eq!(received, 4);
    let last = admin.get("/v1/nodes/hs-a/heartbeat").await.expect("last heartbeat");
    assert_eq!(last.body["heartbeat"]["load"]["cpuMillis"], 114, "the leader's view of hs-a: {}", last.body);

    // A line that is not a heartbeat ends the stream, naming it.
    stream.send(b"{\"load\": \"high\"}\n").await;
    let end = stream.next().await;
    let status = end.end.expect("the stream to end at a line that is not a heartbeat");
    assert_eq!((end.received, status.code), (4, 400), "{status:?}");
    assert!(status.message.contains("heartbeat 5"), "the refusal names the line: {}", status.message);

    // A line longer than a heartbeat may be.
    let mut stream = HeartbeatStreamEnd::open(addr, &b, "hs-b").await.expect("hs-b's own stream");
    for _ in 0..17 {
        stream.send(&[b'x'; 64 * 1024]).await;
    }
    let status = stream.next().await.end.expect("the stream to end at a line of 1.06 MiB");
    assert_eq!(status.code, 413, "{status:?}");

    // Revoked: the next heartbeat ends the stream, as it would refuse the next request.
    let mut stream = HeartbeatStreamEnd::open(addr, &a, "hs-a").await.expect("hs-a's own stream");
    stream.send(&heartbeat_line(120)).await;
    assert_eq!(stream.next().await.received, 1);
    let reply = admin.delete("/v1/nodes/hs-a/certificate").await.expect("revoke");
    assert_eq!(reply.code, 204, "revoking hs-a: {}", reply.body);
    stream.send(&heartbeat_line(121)).await;
    let end = stream.next().await;
    let status = end.end.expect("the stream to end once the certificate was revoked");
    assert_eq!((end.received, status.code), (1, 401), "{status:?}");
    let last = admin.get("/v1/nodes/hs-a/heartbeat").await.expect("last heartbeat");
    assert_eq!(last.body["heartbeat"]["load"]["cpuMillis"], 120, "a heartbeat after the revocation was taken: {}", last.body);
}
