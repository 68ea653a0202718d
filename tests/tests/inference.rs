//! ONNX inference end to end: models trained with scikit-learn (tests/models, made by
//! scripts/models/train_test_models.py) pushed to the registry, run by a real edge runtime
//! from the `onnx-inference` wasm workload on readings sent to its ingest API, and every
//! prediction that reaches the cloud sink compared with ONNX Runtime's answer in Python
//! (`EDGEPLANE_PYTHON`, a venv with onnxruntime; scripts/test.sh makes one).
//!
//! One cluster and two edges for all of it: `ml-edge` with tract only, `ort-edge` with ONNX
//! Runtime's library too (`EDGEPLANE_ONNXRUNTIME_LIB`, from the onnxruntime wheel), as are the
//! orchestrators; the models, bad models at push and at configure time, and a model swap
//! under load.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use edgeplane_api::data::Reading;
use edgeplane_tests::{
    cloud_records, create_resource, edgectl, eventually, ingest, push_module, workload_wasm, Api, Cluster, ClusterSpec, EdgeRuntime,
};
use serde_json::{json, Value};

const NS: &str = "ml";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn model_file(name: &str) -> PathBuf {
    repo().join(format!("tests/models/{name}.onnx"))
}

/// The held-out rows of a model's dataset.
fn rows(name: &str) -> Vec<Vec<f64>> {
    let doc: Value =
        serde_json::from_slice(&std::fs::read(repo().join(format!("tests/models/{name}.rows.json"))).expect("rows")).expect("json");
    doc["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .map(|r| r.as_array().expect("a row").iter().map(|v| v.as_f64().expect("a number")).collect())
        .collect()
}

/// ONNX Runtime's answer for every row: (row, metric as the workload names it) -> value.
fn reference(name: &str) -> BTreeMap<(usize, String), f64> {
    let python =
        std::env::var("EDGEPLANE_PYTHON").expect("EDGEPLANE_PYTHON must name a Python with onnxruntime (scripts/test.sh sets it up)");
    let out = std::process::Command::new(python)
        .arg(repo().join("scripts/models/onnx_reference.py"))
        .arg(model_file(name))
        .arg(repo().join(format!("tests/models/{name}.rows.json")))
        .output()
        .expect("run the reference");
    assert!(out.status.success(), "onnx_reference.py failed: {}", String::from_utf8_lossy(&out.stderr));
    let doc: Value = serde_json::from_slice(&out.stdout).expect("the reference's JSON");
    let mut answers = BTreeMap::new();
    for (output, o) in doc["outputs"].as_object().expect("outputs") {
        let shape: Vec<usize> = o["shape"].as_array().expect("shape").iter().map(|d| d.as_u64().expect("dim") as usize).collect();
        let columns: usize = shape[1..].iter().product();
        let data: Vec<f64> = o["data"].as_array().expect("data").iter().map(|v| v.as_f64().expect("number")).collect();
        for (i, value) in data.iter().enumerate() {
            let metric = if columns == 1 { output.clone() } else { format!("{output}.{}", i % columns) };
            answers.insert((i / columns, metric), *value);
        }
    }
    answers
}

fn feature_names(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("f{i:02}")).collect()
}

fn workload(name: &str, model: &str, features: usize, config: Value) -> Value {
    let mut config = config;
    config["features"] = json!(feature_names(features));
    // The IsolationForest goes where the scheduler finds ONNX Runtime; the PyTorch network is
    // pinned to the edge with ONNX Runtime, the scikit-learn models to the tract-only edge.
    let placement = match model {
        "iforest" => json!({}),
        "cnn" => json!({"nodeSelector": {"backend": "onnxruntime"}}),
        _ => json!({"nodeSelector": {"backend": "tract"}}),
    };
    json!({
        "apiVersion": "edgeplane.io/v1alpha1",
        "kind": "Workload",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "module": "onnx-inference@1.0.0",
            "modelRef": model,
            "placement": placement,
            "resources": {"memoryMib": 32, "batchTimeMs": 2000},
            "inputs": [format!("{name}/rows")],
            "outputs": [{"name": "predictions", "sink": {"type": "cloud"}}],
            "config": config
        }
    })
}

/// Row `i` as one reading per feature, device `row-<i>`, all at timestamp `ts`.
fn row_readings(i: usize, ts: u64, row: &[f64]) -> Vec<Reading> {
    row.iter().enumerate().map(|(f, &value)| Reading { ts, device: format!("row-{i}"), metric: format!("f{f:02}"), value }).collect()
}

async fn push_model(api: &Api, name: &str, version: &str, file: &str) -> (u16, Value) {
    let bytes = std::fs::read(model_file(file)).expect("model file");
    let reply = api.request(reqwest::Method::POST, &format!("/v1/models/{NS}/{name}/{version}"), Some(bytes)).await.expect("push");
    (reply.code, reply.body)
}

async fn send(edge: &EdgeRuntime, topic: &str, readings: &[Reading]) {
    let http = edge.http().await;
    for attempt in 0..100 {
        let (status, body) = ingest(&http, topic, readings).await;
        if status == 200 {
            return;
        }
        assert!(matches!(status, 0 | 429 | 503) && attempt < 99, "ingest refused: {status} {body}\n{}", edge.log_tail());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Predictions in the cloud for a workload: (row, metric) -> (value, model version).
async fn predictions(
    servers: &[SocketAddr],
    workload: &str,
    expected: usize,
    edge: &EdgeRuntime,
) -> BTreeMap<(usize, String), (f64, String)> {
    eventually(
        &format!("{expected} predictions of {workload} in the cloud"),
        Duration::from_secs(60),
        async || {
            let records = cloud_records(servers, NS, workload).await?;
            let mut found = BTreeMap::new();
            for record in &records {
                let version = record["model"].as_str().unwrap_or("").to_owned();
                for r in record["readings"].as_array()? {
                    let row: usize = r["device"].as_str()?.strip_prefix("row-")?.parse().ok()?;
                    let metric = r["metric"].as_str()?.to_owned();
                    let previous = found.insert((row, metric.clone()), (r["value"].as_f64()?, version.clone()));
                    assert!(previous.is_none(), "{workload}: row {row} {metric} arrived twice");
                }
            }
            (found.len() >= expected).then_some(found)
        },
        || edge.log_tail(),
    )
    .await
}

fn assert_matches(model: &str, ours: &BTreeMap<(usize, String), (f64, String)>, theirs: &BTreeMap<(usize, String), f64>) {
    assert_eq!(ours.len(), theirs.len(), "{model}: one prediction per reference value");
    for ((row, metric), expected) in theirs {
        let (value, _) = ours.get(&(*row, metric.clone())).unwrap_or_else(|| panic!("{model}: no {metric} for row {row}"));
        if metric == "label" {
            assert_eq!(value, expected, "{model}: label of row {row}");
        } else {
            assert!((value - expected).abs() <= 1e-5, "{model}: {metric} of row {row} is {value}, onnxruntime says {expected}");
        }
    }
}

/// Sends every held-out row of `name` through `edge`, and compares the predictions that reach
/// the cloud with onnxruntime's in Python; the edge ran the model on `backend`, version 1.0.0.
async fn every_row_as_onnxruntime_answers(servers: &[SocketAddr], edge: &EdgeRuntime, name: &str, backend: &str) {
    for (i, row) in rows(name).iter().enumerate() {
        send(edge, &format!("{name}/rows"), &row_readings(i, 1_000 + i as u64, row)).await;
    }
    let theirs = reference(name);
    let ours = predictions(servers, name, theirs.len(), edge).await;
    assert_matches(name, &ours, &theirs);
    assert!(ours.values().all(|(_, version)| version == "1.0.0"), "{name}: every prediction carries the model's version");
    let prepared = format!("model prepared model={name} version=1.0.0 backend={backend}");
    assert!(edge.log().contains(&prepared), "{}", edge.log_tail());
}

async fn instance(edge: &EdgeRuntime, workload: &str, what: &str, check: impl Fn(&Value) -> bool) -> Value {
    eventually(
        what,
        Duration::from_secs(40),
        async || edge.instances().await.into_iter().find(|i| i["assignment"].as_str().is_some_and(|a| a.contains(workload)) && check(i)),
        || edge.log_tail(),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scikit_learn_models_run_at_the_edge_as_onnxruntime_runs_them() {
    let library = std::env::var("EDGEPLANE_ONNXRUNTIME_LIB")
        .expect("EDGEPLANE_ONNXRUNTIME_LIB must name libonnxruntime.so (scripts/test.sh sets it from the onnxruntime wheel)");
    let with_ort = vec!["--onnxruntime-lib".to_owned(), library.clone()];
    let cluster = Cluster::start(ClusterSpec { subnet: 81, size: 1, extra_args: with_ort, ..Default::default() }).await;
    let leader = cluster.wait_for_leader(Duration::from_secs(10)).await;
    let api = cluster.api(leader);
    let servers = vec![cluster.api_addr(leader)];
    push_module(&api, NS, "onnx-inference", workload_wasm("onnx-inference")).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let edge =
        EdgeRuntime::start("ml-edge", &servers, dir.path().join("edge"), &["--heartbeat-ms", "200", "--label", "backend=tract"]).await;
    let ort_edge = EdgeRuntime::start(
        "ort-edge",
        &servers,
        dir.path().join("ort-edge"),
        &["--heartbeat-ms", "200", "--label", "backend=onnxruntime", "--onnxruntime-lib", &library],
    )
    .await;

    // The registry refuses what no backend here can run, saying why.
    for (file, why) in [
        ("hostile-unknown-op", "does not implement operator com.example:Magic (node \"magic_node\")"),
        ("hostile-huge", "node \"gigabytes\" would produce a tensor of"),
    ] {
        let (code, body) = push_model(&api, "refused", "1.0.0", file).await;
        assert_eq!(code, 422, "{file}: {body}");
        assert!(body["message"].as_str().is_some_and(|m| m.contains(why)), "{file}: the refusal names the problem ({why}): {body}");
    }
    let mut corrupt = std::fs::read(model_file("mlp")).expect("mlp");
    corrupt.truncate(corrupt.len() / 2);
    let reply = api.request(reqwest::Method::POST, &format!("/v1/models/{NS}/corrupt/1.0.0"), Some(corrupt)).await.expect("push");
    assert_eq!(reply.code, 422, "{}", reply.body);
    assert!(reply.body["message"].as_str().is_some_and(|m| m.contains("not an ONNX model")), "{}", reply.body);

    // edgectl pushes one; the others through the API.
    let pushed = edgectl(&servers)
        .args(["model", "push", model_file("logreg").to_str().expect("utf-8"), "--name", "logreg", "--version", "1.0.0", "-n", NS])
        .output()
        .expect("edgectl");
    assert!(pushed.status.success(), "edgectl model push: {}", String::from_utf8_lossy(&pushed.stderr));
    let said = String::from_utf8_lossy(&pushed.stdout);
    assert!(said.contains("model.edgeplane.io/logreg created: 1.0.0") && said.contains("runs on tract"), "{said}");
    // A network from a second framework (PyTorch) alongside the scikit-learn models.
    for name in ["mlp", "forest", "regressor", "cnn"] {
        let (code, body) = push_model(&api, name, "1.0.0", name).await;
        assert_eq!(code, 201, "{name}: {body}");
        assert_eq!(body["spec"]["artifact"]["backends"], json!(["tract", "onnxruntime"]), "{body}");
    }
    // An IsolationForest only ONNX Runtime runs: only the edge with the library can take it.
    let (code, body) = push_model(&api, "iforest", "1.0.0", "iforest").await;
    assert_eq!(code, 201, "iforest: {body}");
    assert_eq!(body["spec"]["artifact"]["backends"], json!(["onnxruntime"]), "{body}");
    let logreg = api.get(&format!("/apis/edgeplane.io/v1alpha1/namespaces/{NS}/models/logreg")).await.expect("get");
    assert_eq!(logreg.body["spec"]["artifact"]["inputs"], json!([{"name": "input", "elemType": "float", "shape": ["?", "30"]}]));
    // The same bytes again change nothing; other bytes under a pushed version are refused.
    assert_eq!(push_model(&api, "logreg", "1.0.0", "logreg").await.0, 200);
    let (code, body) = push_model(&api, "logreg", "1.0.0", "forest").await;
    assert_eq!(code, 409, "versions are immutable: {body}");

    let models = [("logreg", 30), ("mlp", 13), ("forest", 30), ("regressor", 10)];
    for (name, features) in models {
        create_resource(&api, NS, "workloads", &workload(name, name, features, json!({}))).await;
    }
    let ort_models = [("iforest", 30), ("cnn", 64)];
    for (name, features) in ort_models {
        create_resource(&api, NS, "workloads", &workload(name, name, features, json!({}))).await;
    }
    edge.wait_running(models.len(), Duration::from_secs(60)).await;
    ort_edge.wait_running(ort_models.len(), Duration::from_secs(60)).await;
    for (name, _) in ort_models {
        every_row_as_onnxruntime_answers(&servers, &ort_edge, name, "onnxruntime").await;
    }
    for (name, _) in models {
        every_row_as_onnxruntime_answers(&servers, &edge, name, "tract").await;
    }

    // A new version whose input does not fit the workload's features is refused by the
    // instance at configure time; it goes on with the model it has.
    let (code, body) = push_model(&api, "regressor", "2.0.0", "mlp").await;
    assert_eq!(code, 200, "{body}");
    let kept = instance(&edge, "regressor", "the regressor's instance to refuse 2.0.0", |i| {
        i["message"].as_str().is_some_and(|m| m.contains("refused"))
    })
    .await;
    let message = kept["message"].as_str().unwrap_or_default();
    assert!(message.contains("takes 13 values per row") && message.contains("makes 10"), "{kept}");
    assert_eq!(kept["phase"], "Running", "{kept}");
    let regressor_rows = rows("regressor");
    send(&edge, "regressor/rows", &row_readings(0, 9_000, &regressor_rows[0])).await;
    let theirs = reference("regressor");
    let later = eventually(
        "a prediction made after the refused update",
        Duration::from_secs(30),
        async || {
            let records = cloud_records(&servers, NS, "regressor").await?;
            records.iter().rev().find(|r| r["readings"][0]["ts"] == 9_000).cloned()
        },
        || edge.log_tail(),
    )
    .await;
    assert_eq!(later["model"], "1.0.0", "still the previous model: {later}");
    let value = later["readings"][0]["value"].as_f64().expect("a value");
    assert!((value - theirs[&(0, "variable".to_owned())]).abs() <= 1e-5, "{later}");

    // A swap under load: logreg 1.1.0 is the random forest (same 30 features). Rows keep
    // coming while it lands; every row is answered once, each by one whole model version.
    let logreg_rows = rows("logreg");
    let (v1, v2) = (reference("logreg"), reference("forest"));
    let sender = {
        let rows = logreg_rows.clone();
        let edge_http = edge.http().await;
        tokio::spawn(async move {
            for (i, row) in rows.iter().enumerate() {
                let readings = row_readings(i, 50_000 + i as u64, row);
                for _ in 0..100 {
                    if ingest(&edge_http, "logreg/rows", &readings).await.0 == 200 {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                tokio::time::sleep(Duration::from_millis(15)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (code, body) = push_model(&api, "logreg", "1.1.0", "forest").await;
    assert_eq!(code, 200, "{body}");
    sender.await.expect("the sender");
    let swapped = eventually(
        "every row of the swap answered in the cloud",
        Duration::from_secs(60),
        async || {
            let records = cloud_records(&servers, NS, "logreg").await?;
            let during: Vec<Value> =
                records.into_iter().filter(|r| r["readings"][0]["ts"].as_u64().is_some_and(|ts| ts >= 50_000)).collect();
            let answered: usize = during.iter().map(|r| r["readings"].as_array().map_or(0, Vec::len)).sum();
            (answered >= v1.len()).then_some(during)
        },
        || edge.log_tail(),
    )
    .await;
    let mut seen = BTreeMap::new();
    let mut versions = BTreeMap::new();
    for record in &swapped {
        let version = record["model"].as_str().expect("stamped").to_owned();
        let reference = match version.as_str() {
            "1.0.0" => &v1,
            "1.1.0" => &v2,
            other => panic!("unexpected model version {other}"),
        };
        *versions.entry(version.clone()).or_insert(0) += 1;
        for r in record["readings"].as_array().expect("readings") {
            let row = (r["ts"].as_u64().expect("ts") - 50_000) as usize;
            let metric = r["metric"].as_str().expect("metric").to_owned();
            let value = r["value"].as_f64().expect("value");
            let expected = reference[&(row, metric.clone())];
            // Each record is one batch: all of it must come from the version it is stamped with.
            let ok = if metric == "label" { value == expected } else { (value - expected).abs() <= 1e-5 };
            assert!(ok, "row {row} {metric} = {value} is not what model {version} answers ({expected})");
            assert!(seen.insert((row, metric), version.clone()).is_none(), "row {row} answered twice");
        }
    }
    assert_eq!(seen.len(), v1.len(), "every row answered exactly once during the swap");
    assert!(versions.contains_key("1.1.0"), "the new version took over without a restart: {versions:?}");
    let after = instance(&edge, "logreg", "the logreg instance on 1.1.0", |i| i["modelVersion"] == "1.1.0").await;
    assert_eq!(after["restarts"], 0, "{after}");
}
