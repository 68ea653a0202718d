//! Manifest parsing and validation: the example manifests are valid, and a catalogue of bad
//! manifests is rejected whole with precise messages (golden files beside each case;
//! `EDGEPLANE_UPDATE_GOLDEN=1 cargo test -p edgeplane-api --test manifests` rewrites them,
//! after which the diff must be read).

use std::path::{Path, PathBuf};

use edgeplane_api::manifest::{self, Resource, MAX_MANIFEST_BYTES};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).expect("read dir").flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(yaml_files(&path));
        } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            files.push(path);
        }
    }
    files.sort();
    files
}

#[test]
fn every_example_manifest_is_valid() {
    let dir = root().join("manifests");
    let mut kinds = Vec::new();
    // Not edgeplane resources: the generated CRDs, and Prometheus' configuration and rules.
    let foreign = |p: &PathBuf| p.components().any(|c| c.as_os_str() == "crds" || c.as_os_str() == "prometheus");
    for path in yaml_files(&dir).into_iter().filter(|p| !foreign(p)) {
        let text = std::fs::read_to_string(&path).expect("read");
        match manifest::parse(&text) {
            Ok(resources) => kinds.extend(resources.iter().map(|r| format!("{}/{}", r.kind(), r.name()))),
            Err(errors) => {
                let all: Vec<String> = errors.iter().map(ToString::to_string).collect();
                panic!("{} is invalid:\n{}", path.display(), all.join("\n"));
            }
        }
    }
    for expected in [
        "EdgeNode/line-a-edge",
        "EdgeNode/cloud-1",
        "Workload/line-a-temperature-filter",
        "Model/vibration-detector",
        "Workload/vibration-anomalies",
        "ClusterRoleBinding/monitoring-reads-metrics",
        "ClusterRoleBinding/console-viewer",
    ] {
        assert!(kinds.iter().any(|k| k == expected), "examples lack {expected}: {kinds:?}");
    }
}

#[test]
fn bad_manifests_are_rejected_whole_with_every_problem_named() {
    let dir = root().join("orchestrator/api/tests/bad-manifests");
    let update = std::env::var("EDGEPLANE_UPDATE_GOLDEN").is_ok_and(|v| v == "1");
    let mut mismatches = Vec::new();
    let files = yaml_files(&dir);
    assert!(files.len() >= 14, "the catalogue shrank: {files:?}");
    for path in files {
        let text = std::fs::read_to_string(&path).expect("read");
        let rendered = match manifest::parse(&text) {
            Ok(resources) => panic!("{} was accepted: {resources:?}", path.display()),
            Err(errors) => errors.iter().map(|e| format!("{e}\n")).collect::<String>(),
        };
        let golden = path.with_extension("expected");
        if update {
            std::fs::write(&golden, &rendered).expect("write golden");
        } else {
            let expected = std::fs::read_to_string(&golden).unwrap_or_default();
            if expected != rendered {
                mismatches.push(format!("{}:\n--- expected\n{expected}--- got\n{rendered}", path.display()));
            }
        }
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}

#[test]
fn a_valid_document_beside_a_bad_one_is_not_returned() {
    let text =
        std::fs::read_to_string(root().join("orchestrator/api/tests/bad-manifests/one-bad-document-rejects-all.yaml")).expect("read");
    let errors = manifest::parse(&text).expect_err("one document is bad");
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].document, 2, "the first document is valid; only the second is reported");
}

#[test]
fn oversized_manifests_are_refused_before_parsing() {
    let text = format!("# {}\n", "x".repeat(MAX_MANIFEST_BYTES));
    let errors = manifest::parse(&text).expect_err("too large");
    assert!(errors[0].problems[0].message.contains("the limit is"), "{:?}", errors[0]);
}

#[test]
fn json_documents_are_manifests_too() {
    let json = r#"{"apiVersion":"edgeplane.io/v1alpha1","kind":"Model","metadata":{"name":"m","namespace":"factory"},
                   "spec":{"version":"1.0.0","format":"f/v1","parameters":{"w":[1.5]}}}"#;
    let resources = manifest::parse(json).expect("valid");
    assert!(matches!(&resources[0], Resource::Model(m) if m.spec.parameters["w"] == [1.5]));
}
