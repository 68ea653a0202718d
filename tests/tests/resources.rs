//! The Kubernetes-style resource API against a real 3-node cluster.

use std::path::Path;
use std::time::Duration;

use edgeplane_tests::{eventually, Api, Cluster, ClusterSpec};
use reqwest::Method;
use serde_json::{json, Value};

const BASE: &str = "/apis/edgeplane.io/v1alpha1";

fn workload(name: &str, replicas: i64) -> Value {
    json!({
        "apiVersion": "edgeplane.io/v1alpha1",
        "kind": "Workload",
        "metadata": { "name": name, "labels": { "line": "a" } },
        "spec": { "module": "threshold-filter@1.0.0", "replicas": replicas, "inputs": ["line-a/temperature"] }
    })
}

async fn send(api: &Api, method: Method, path: &str, body: Option<&Value>) -> (u16, Value) {
    let r = api.request(method, path, body.map(|b| b.to_string().into_bytes())).await.expect("request");
    (r.code, r.body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resources_support_create_get_list_replace_patch_status_and_delete() {
    let cluster = Cluster::start(ClusterSpec { subnet: 31, ..Default::default() }).await;
    let leader = cluster.wait_for_leader(Duration::from_secs(10)).await;
    let others: Vec<u64> = cluster.running().into_iter().filter(|&id| id != leader).collect();
    let (a, b) = (cluster.api(others[0]), cluster.api(others[1]));
    let coll = format!("{BASE}/namespaces/factory/workloads");
    let one = format!("{coll}/filter");

    let (code, created) = send(&a, Method::POST, &coll, Some(&workload("filter", 1))).await;
    assert_eq!(code, 201, "{created}");
    assert_eq!(created["metadata"]["generation"], 1);
    assert_eq!(created["metadata"]["namespace"], "factory", "the namespace comes from the path");
    let rv1 = created["metadata"]["resourceVersion"].as_str().expect("resourceVersion").to_owned();
    let (code, again) = send(&b, Method::POST, &coll, Some(&workload("filter", 1))).await;
    assert_eq!((code, again["reason"].as_str()), (409, Some("AlreadyExists")), "{again}");

    // Read through another node: linearizable, so the create is visible.
    let (code, got) = send(&b, Method::GET, &one, None).await;
    assert_eq!((code, &got["spec"]["replicas"]), (200, &json!(1)), "{got}");
    send(
        &a,
        Method::POST,
        &coll,
        Some(&json!({ "apiVersion": "edgeplane.io/v1alpha1", "kind": "Workload",
        "metadata": { "name": "other", "labels": { "line": "b" } }, "spec": { "module": "agg@1.0.0" } })),
    )
    .await;
    let (_, listed) = send(&b, Method::GET, &format!("{coll}?labelSelector=line%3Da"), None).await;
    let names: Vec<&str> = listed["items"].as_array().expect("items").iter().filter_map(|i| i["metadata"]["name"].as_str()).collect();
    assert_eq!((listed["kind"].as_str(), names), (Some("WorkloadList"), vec!["filter"]));
    let (_, everywhere) = send(&b, Method::GET, &format!("{BASE}/workloads"), None).await;
    assert_eq!(everywhere["items"].as_array().map(Vec::len), Some(2));

    // The scheduler writes the Workload's status (why it is pending: its module is not in the
    // registry), which moves the resourceVersion on: wait for that, then read the version.
    let observed = eventually(
        "the scheduler to write the Workload's status",
        Duration::from_secs(10),
        async || {
            let (_, got) = send(&b, Method::GET, &one, None).await;
            (got["status"]["observedGeneration"] == 1).then_some(got)
        },
        || cluster.all_logs(),
    )
    .await;
    assert_ne!(observed["metadata"]["resourceVersion"].as_str(), Some(rv1.as_str()), "a status write is a write");
    let rv1 = observed["metadata"]["resourceVersion"].as_str().expect("resourceVersion").to_owned();

    // Replace with the current version: generation bumps (spec changed).
    let mut replaced = workload("filter", 2);
    replaced["metadata"]["resourceVersion"] = json!(rv1);
    let (code, r) = send(&a, Method::PUT, &one, Some(&replaced)).await;
    assert_eq!((code, &r["metadata"]["generation"]), (200, &json!(2)), "{r}");
    // The same version again is stale now.
    let (code, stale) = send(&b, Method::PUT, &one, Some(&replaced)).await;
    assert_eq!((code, stale["reason"].as_str()), (409, Some("Conflict")), "{stale}");

    // Status is written alone, and survives spec changes. (A condition of its own: the
    // scheduler keeps other writers' conditions and rewrites only its own fields.)
    let audited = json!({ "type": "Audited", "status": "True", "reason": "Reviewed" });
    let status_body = json!({ "apiVersion": "edgeplane.io/v1alpha1", "kind": "Workload", "metadata": { "name": "filter" },
        "spec": { "module": "ignored@9.9.9" }, "status": { "conditions": [audited] } });
    let (code, s) = send(&a, Method::PUT, &format!("{one}/status"), Some(&status_body)).await;
    assert_eq!(code, 200, "{s}");
    assert_eq!((s["status"]["conditions"][0].clone(), s["spec"]["module"].clone()), (audited.clone(), json!("threshold-filter@1.0.0")));

    let patched = a.http_patch(&one, r#"{"spec":{"replicas":5},"metadata":{"labels":{"owner":"ops"}}}"#).await;
    assert_eq!(patched.0, 200, "{}", patched.1);
    assert_eq!(patched.1["spec"]["replicas"], 5);
    assert_eq!(patched.1["metadata"]["labels"], json!({ "line": "a", "owner": "ops" }));
    assert_eq!(patched.1["metadata"]["generation"], 3);
    let conditions = patched.1["status"]["conditions"].as_array().cloned().unwrap_or_default();
    assert!(conditions.contains(&audited), "a spec patch keeps the status: {}", patched.1);

    let (code, deleted) = send(&b, Method::DELETE, &one, None).await;
    assert_eq!((code, &deleted["metadata"]["name"]), (200, &json!("filter")), "{deleted}");
    let (code, gone) = send(&a, Method::GET, &one, None).await;
    assert_eq!((code, gone["reason"].as_str()), (404, Some("NotFound")), "{gone}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_resources_are_refused_with_field_paths_and_nothing_is_stored() {
    let cluster = Cluster::start(ClusterSpec { subnet: 32, ..Default::default() }).await;
    let leader = cluster.wait_for_leader(Duration::from_secs(10)).await;
    let api = cluster.api(leader);
    let coll = format!("{BASE}/namespaces/factory/workloads");
    let mut negative = workload("w", -1);
    negative["spec"]["module"] = json!("no-version");
    let mut wrong_ns = workload("w", 1);
    wrong_ns["metadata"]["namespace"] = json!("elsewhere");
    let mut unknown = workload("w", 1);
    unknown["spec"]["replica"] = json!(3);
    // (what, method, path, body, expected code, fields the causes must name)
    type Case<'a> = (&'a str, Method, String, Option<Value>, u16, Vec<&'a str>);
    let cases: Vec<Case> = vec![
        ("negative replicas and a bad module ref", Method::POST, coll.clone(), Some(negative), 422, vec!["spec.replicas", "spec.module"]),
        ("namespace differs from the path", Method::POST, coll.clone(), Some(wrong_ns), 422, vec!["metadata.namespace"]),
        ("unknown field", Method::POST, coll.clone(), Some(unknown), 422, vec!["spec.replica"]),
        (
            "kind differs from the path",
            Method::POST,
            format!("{BASE}/namespaces/factory/models"),
            Some(workload("w", 1)),
            422,
            vec!["kind"],
        ),
        ("unknown resource type", Method::GET, format!("{BASE}/namespaces/factory/pods"), None, 404, vec![]),
        ("cluster-scoped kind under a namespace", Method::GET, format!("{BASE}/namespaces/factory/edgenodes"), None, 404, vec![]),
        ("bad label selector", Method::GET, format!("{coll}?labelSelector=a%20b%3Dc"), None, 400, vec!["query.labelSelector"]),
    ];
    for (what, method, path, body, code, fields) in cases {
        let (got, reply) = send(&api, method, &path, body.as_ref()).await;
        assert_eq!(got, code, "{what}: {reply}");
        assert_eq!(reply["kind"], "Status", "{what}: {reply}");
        let causes = reply["details"]["causes"].as_array().cloned().unwrap_or_default();
        for field in fields {
            assert!(causes.iter().any(|c| c["field"] == field), "{what}: no cause for {field}: {reply}");
        }
    }
    // A body that is no document at all is refused, not a crash.
    let null = api.request(Method::POST, &coll, Some(b"null".to_vec())).await.expect("post null");
    assert_eq!((null.code, null.body["reason"].as_str()), (422, Some("Invalid")), "{}", null.body);
    let patch = api.request(Method::PATCH, &format!("{coll}/w"), Some(b"{}".to_vec())).await.expect("patch");
    assert_eq!(patch.code, 415, "PATCH needs the merge-patch content type: {}", patch.body);
    let (_, listed) = send(&api, Method::GET, &format!("{BASE}/workloads"), None).await;
    assert_eq!(listed["items"], json!([]), "nothing invalid may be stored");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_example_manifest_applies_through_the_api() {
    let cluster = Cluster::start(ClusterSpec { subnet: 33, ..Default::default() }).await;
    let leader = cluster.wait_for_leader(Duration::from_secs(10)).await;
    let api = cluster.api(leader);
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../manifests/factory");
    let mut applied = 0;
    // The manifests (the model files beside them are pushed, not applied).
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("manifests/factory")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    for file in files {
        let text = std::fs::read_to_string(&file).expect("read");
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let value: Value = serde::Deserialize::deserialize(doc).expect("valid YAML");
            let kind = value["kind"].as_str().expect("kind");
            let plural = format!("{}s", kind.to_lowercase());
            let path = match value["metadata"]["namespace"].as_str() {
                Some(ns) => format!("{BASE}/namespaces/{ns}/{plural}"),
                None => format!("{BASE}/{plural}"),
            };
            let (code, reply) = send(&api, Method::POST, &path, Some(&value)).await;
            assert_eq!(code, 201, "{} ({kind}): {reply}", file.display());
            applied += 1;
        }
    }
    assert!(applied >= 7, "only {applied} example documents applied");
    let (_, nodes) = send(&api, Method::GET, &format!("{BASE}/edgenodes?labelSelector=line"), None).await;
    assert_eq!(nodes["items"].as_array().map(Vec::len), Some(2), "two line-side edge nodes: {nodes}");
}
