//! The CRDs in manifests/crds/ are generated from the resource types. This test fails when
//! they are stale; `EDGEPLANE_UPDATE_CRDS=1 cargo test -p edgeplane-api --features crd --test crds`
//! regenerates them.

use std::path::PathBuf;

use edgeplane_api::resources::{EdgeNode, Workload};
use kube::CustomResourceExt;

fn crds() -> Vec<(String, String)> {
    edgeplane_api::resources::crds()
        .into_iter()
        .map(|crd| {
            let name = crd.metadata.name.clone().expect("CRDs are named");
            let yaml = serde_yaml::to_string(&crd).expect("CRDs serialize");
            (format!("{name}.yaml"), format!("# Generated from orchestrator/api/src/resources.rs; do not edit.\n{yaml}"))
        })
        .collect()
}

#[test]
fn committed_crds_match_the_resource_types() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../manifests/crds");
    let update = std::env::var("EDGEPLANE_UPDATE_CRDS").is_ok_and(|v| v == "1");
    if update {
        std::fs::create_dir_all(&dir).expect("create manifests/crds");
    }
    let mut stale = Vec::new();
    for (file, yaml) in crds() {
        let path = dir.join(&file);
        if update {
            std::fs::write(&path, &yaml).expect("write CRD");
        } else if std::fs::read_to_string(&path).ok().as_deref() != Some(yaml.as_str()) {
            stale.push(file);
        }
    }
    assert!(
        stale.is_empty(),
        "manifests/crds/ is stale for {stale:?}; regenerate with:\n  EDGEPLANE_UPDATE_CRDS=1 cargo test -p edgeplane-api --features crd --test crds"
    );
}

#[test]
fn crds_have_the_right_scope_subresources_and_free_form_config() {
    for (file, yaml) in crds() {
        // Kubernetes refuses non-structural schemas, e.g. additionalProperties: false.
        assert!(!yaml.contains("additionalProperties: false"), "{file} is not a structural schema");
        assert!(yaml.contains("apiextensions.k8s.io/v1"), "{file}");
        assert!(yaml.contains("group: edgeplane.io"), "{file}");
        assert!(yaml.contains("name: v1alpha1"), "{file}");
    }
    let node = serde_json::to_value(EdgeNode::crd()).expect("json");
    assert_eq!(node["spec"]["scope"], "Cluster", "EdgeNode is cluster-scoped");
    assert!(node["spec"]["versions"][0]["subresources"]["status"].is_object(), "EdgeNode has a status subresource");
    let workload = serde_json::to_value(Workload::crd()).expect("json");
    assert_eq!(workload["spec"]["scope"], "Namespaced");
    let config = &workload["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["config"];
    assert_eq!(config["x-kubernetes-preserve-unknown-fields"], true, "workload config is free-form: {config}");
}

/// docs/openapi.json is the served document; regenerate it with the CRDs' command.
#[test]
fn committed_openapi_document_is_current() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/openapi.json");
    let current = serde_json::to_string_pretty(&edgeplane_api::openapi::document()).expect("json") + "\n";
    if std::env::var("EDGEPLANE_UPDATE_CRDS").is_ok_and(|v| v == "1") {
        std::fs::write(&path, &current).expect("write docs/openapi.json");
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == current,
        "docs/openapi.json is stale; regenerate with:\n  EDGEPLANE_UPDATE_CRDS=1 cargo test -p edgeplane-api --features crd --test crds"
    );
    let doc: serde_json::Value = serde_json::from_str(&committed).expect("valid JSON");
    let paths = doc["paths"].as_object().expect("paths");
    assert!(paths.contains_key("/apis/edgeplane.io/v1alpha1/namespaces/{namespace}/workloads/{name}/status"));
    assert!(paths.contains_key("/apis/edgeplane.io/v1alpha1/edgenodes"));
    assert!(doc["components"]["schemas"]["Workload"]["properties"]["spec"].is_object());
}
