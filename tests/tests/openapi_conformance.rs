//! schemathesis (4.x, from PyPI; `EDGEPLANE_SCHEMATHESIS` names its `st`, scripts/test.sh
//! installs it) against a real orchestrator and the OpenAPI document it serves: requests
//! drawn from the document must be accepted, requests that break it refused with a 4xx,
//! every answer's status code, content type and body as the document says, no 5xx. The
//! configuration and its reasoned allowances are in tests/schemathesis/.
//!
//! A second, narrow run against a document made to lie (a `limit` maximum the server does not
//! enforce) must fail: the harness can see a mismatch.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use edgeplane_tests::{Cluster, ClusterSpec};
use serde_json::Value;

const SUBNET: u8 = 87;
/// Fixed, so that a failure reproduces (`st run ... --seed`) and every run draws the same cases.
const SEED: &str = "91349932380486376873853434861216689972";

fn schemathesis() -> PathBuf {
    PathBuf::from(
        std::env::var_os("EDGEPLANE_SCHEMATHESIS")
            .expect("EDGEPLANE_SCHEMATHESIS must name schemathesis' `st` (scripts/test.sh installs it into a venv)"),
    )
}

fn config_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("schemathesis")
}

/// `st run` of `document` against `cluster`'s first orchestrator as the administrator, in `dir`.
fn run(cluster: &Cluster, document: &Path, dir: &Path, extra: &[&str]) -> Output {
    let trust = &cluster.trust;
    Command::new(schemathesis())
        .current_dir(dir)
        .env("SCHEMATHESIS_HOOKS", config_dir().join("hooks.py"))
        .arg("--config-file")
        .arg(config_dir().join("schemathesis.toml"))
        .arg("run")
        .arg(document)
        .arg("--url")
        .arg(format!("https://{}", cluster.api_addr(1)))
        .arg("--tls-verify")
        .arg(trust.ca_cert())
        .arg("--request-cert")
        .arg(trust.dir.join("admin/client.crt"))
        .arg("--request-cert-key")
        .arg(trust.dir.join("admin/client.key"))
        .args(["--workers", "1", "--seed", SEED, "--request-timeout", "20", "--no-color"])
        .args(extra)
        .output()
        .expect("schemathesis runs")
}

fn said(out: &Output) -> String {
    format!("{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_the_server_as_its_openapi_document_says() {
    let cluster = Cluster::start(ClusterSpec { size: 1, subnet: SUBNET, ..Default::default() }).await;
    cluster.wait_for_leader(Duration::from_secs(10)).await;
    let client = reqwest::Client::builder().use_preconfigured_tls(cluster.trust.admin_tls()).build().expect("client");
    let url = format!("https://{}{}", cluster.api_addr(1), edgeplane_api::openapi::GROUP_VERSION_PATH);
    let document: Value = client.get(&url).send().await.expect("GET the document").json().await.expect("JSON");
    let dir = tempfile::tempdir().expect("tempdir");
    let served = dir.path().join("openapi.json");
    std::fs::write(&served, serde_json::to_vec(&document).expect("JSON")).expect("write the document");

    // The harness can fail: a document that promises a bound the server does not keep.
    let mut lying = document.clone();
    let list = "/apis/edgeplane.io/v1alpha1/namespaces/{namespace}/models";
    let limit = lying["paths"][list]["get"]["parameters"]
        .as_array_mut()
        .and_then(|p| p.iter_mut().find(|p| p["name"] == "limit"))
        .expect("the Model list takes limit");
    limit["schema"]["maximum"] = 10.into();
    let lying_path = dir.path().join("lying.json");
    std::fs::write(&lying_path, serde_json::to_vec(&lying).expect("JSON")).expect("write");
    let caught = tokio::task::block_in_place(|| {
        run(&cluster, &lying_path, dir.path(), &["--include-operation-id", "listModel", "--phases", "coverage"])
    });
    let text = said(&caught);
    assert!(!caught.status.success() && text.contains("ST201"), "schemathesis should report the unkept maximum (ST201):\n{text}");

    // The document as served, every operation, every check.
    let started = std::time::Instant::now();
    let out = tokio::task::block_in_place(|| run(&cluster, &served, dir.path(), &[]));
    let text = said(&out);
    assert!(out.status.success(), "schemathesis found the server and its document disagree:\n{text}");
    let operations: usize =
        document["paths"].as_object().expect("paths").values().map(|methods| methods.as_object().map_or(0, |m| m.len())).sum();
    assert!(
        text.contains(&format!("Tested: {operations}")),
        "schemathesis should test all {operations} operations of the document:\n{text}"
    );
    eprintln!(
        "schemathesis: every operation conforms ({:.0?}):\n{}",
        started.elapsed(),
        text.lines().rev().take(12).collect::<Vec<_>>().join("\n")
    );
}
