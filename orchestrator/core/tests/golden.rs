//! Golden-file tests of the planner: each scenario in `tests/golden/*.yaml` (nodes, Workloads,
//! then steps that change node health and membership) is planned and applied through the state
//! machine until it settles, step by step; the placements, the reasons for what stays pending,
//! the Events each step records, node conditions and Workload status are rendered and
//! compared with `<scenario>.expected`.
//!
//! `EDGEPLANE_UPDATE_GOLDEN=1 cargo test -p edgeplane-core --test golden` rewrites the expected
//! files; review the diff before committing it.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use edgeplane_api::resources::AssignmentSpec;
use edgeplane_core::health::{Health, Liveness};
use edgeplane_core::placement::{plan, Now};
use edgeplane_core::{ClusterState, Command, ObjectKey, Precondition, ResourceWrite};
use serde::Deserialize;
use serde_json::{json, Value};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Scenario {
    /// What the scenario shows, copied into the expected output.
    about: String,
    nodes: Vec<NodeDef>,
    workloads: Vec<WorkloadDef>,
    steps: Vec<Step>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NodeDef {
    name: String,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    /// An EdgeNode spec (tier, capabilities, capacity, taints, cordoned).
    spec: Value,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WorkloadDef {
    name: String,
    /// A Workload spec; `module` defaults to a digest.
    spec: Value,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Step {
    what: String,
    /// Nodes added before planning.
    #[serde(default)]
    add_nodes: Vec<NodeDef>,
    /// Node health; nodes not listed are Ready.
    #[serde(default)]
    suspect: Vec<String>,
    /// Down nodes and for how long (ms).
    #[serde(default)]
    down: BTreeMap<String, u64>,
    /// Cordon these nodes before planning.
    #[serde(default)]
    cordon: Vec<String>,
    /// Replicas on Ready nodes report Running (default true).
    #[serde(default = "yes")]
    running: bool,
    /// Workloads replaced (by name) before planning.
    #[serde(default)]
    update: Vec<WorkloadDef>,
    /// Replicas running this module digest crash-loop (reported failed, not Running).
    #[serde(default)]
    crashing_module: Option<String>,
}

fn yes() -> bool {
    true
}

struct World {
    state: ClusterState,
    index: u64,
}

impl World {
    fn apply(&mut self, command: Command) -> bool {
        self.index += 1;
        matches!(self.state.apply_entry(self.index, &command.encode(), None), Some(Ok(_)))
    }

    fn put(&mut self, plural: &str, namespace: &str, name: &str, value: Value, write: ResourceWrite) {
        let key = ObjectKey::new(plural, namespace, name);
        assert!(self.apply(Command::PutResource { key, resource: value, precondition: Precondition::None, write }), "{plural}/{name}");
    }

    fn add_node(&mut self, node: &NodeDef) {
        let value = json!({"metadata": {"name": node.name, "labels": node.labels}, "spec": node.spec});
        self.put("edgenodes", "", &node.name, value, ResourceWrite::Create { created_at: NOW.rfc3339.into() });
    }

    fn assignments(&self) -> Vec<(ObjectKey, AssignmentSpec)> {
        self.state
            .list("assignments", None)
            .map(|(k, o)| (k.clone(), serde_json::from_value(o.value["spec"].clone()).expect("an Assignment")))
            .collect()
    }

    fn liveness(&self, step: &Step) -> Liveness {
        let mut live = Liveness::default();
        for (key, _) in self.state.list("edgenodes", Some("")) {
            let health = if step.down.contains_key(&key.name) {
                Health::Down
            } else if step.suspect.contains(&key.name) {
                Health::Suspect
            } else {
                Health::Ready
            };
            live.health.insert(key.name.clone(), health);
        }
        live.down_for_ms = step.down.clone();
        for (key, spec) in self.assignments() {
            let id = (format!("{}/{}", key.namespace, key.name), spec.node_name.clone());
            if live.health.get(&spec.node_name) != Some(&Health::Ready) {
                continue;
            }
            live.digests.insert(id.clone(), spec.module_digest.clone());
            if step.crashing_module.as_ref() == Some(&spec.module_digest) {
                live.failed.insert(id.clone(), "trapped 6 times in a row".to_owned());
                live.crash_looping.insert(id);
            } else if step.running {
                live.running.insert(id);
            }
        }
        live
    }
}

const NOW: Now<'static> = Now { rfc3339: "2026-12-01T00:00:00Z", unix_ms: 1_796_083_200_000 };
const NAMESPACE: &str = "factory";

fn run(scenario: &Scenario) -> String {
    let mut w = World { state: ClusterState::default(), index: 0 };
    for node in &scenario.nodes {
        w.add_node(node);
    }
    for workload in &scenario.workloads {
        let mut spec = workload.spec.clone();
        if spec.get("module").is_none() {
            spec["module"] = json!("sha256:0000");
        }
        let value = json!({"metadata": {"name": workload.name, "namespace": NAMESPACE}, "spec": spec});
        w.put("workloads", NAMESPACE, &workload.name, value, ResourceWrite::Create { created_at: NOW.rfc3339.into() });
    }
    let mut out = format!("# {}\n", scenario.about.trim());
    for (i, step) in scenario.steps.iter().enumerate() {
        for node in &step.add_nodes {
            w.add_node(node);
        }
        for workload in &step.update {
            let key = ObjectKey::new("workloads", NAMESPACE, workload.name.as_str());
            let mut value = serde_json::Value::clone(&w.state.get(&key).expect("updated workload exists").value);
            let mut spec = workload.spec.clone();
            if spec.get("module").is_none() {
                spec["module"] = json!("sha256:0000");
            }
            value["spec"] = spec;
            w.put("workloads", NAMESPACE, &workload.name, value, ResourceWrite::Replace);
        }
        for name in &step.cordon {
            let key = ObjectKey::new("edgenodes", "", name.as_str());
            let mut value = serde_json::Value::clone(&w.state.get(&key).expect("cordoned node exists").value);
            value["spec"]["cordoned"] = json!(true);
            w.put("edgenodes", "", name, value, ResourceWrite::Replace);
        }
        let mut rounds = 0;
        let mut events = Vec::new();
        let unplaced = loop {
            let planned = plan(&w.state, &w.liveness(step), NOW);
            if planned.commands.is_empty() {
                break planned.unplaced;
            }
            for command in &planned.commands {
                if let Command::Put { key, value, .. } = command {
                    if key.kind == edgeplane_core::events::EVENTS {
                        let regarding = &value["regarding"];
                        events.push(format!(
                            "event {} {} {}/{}: {} (count {})",
                            value["type"].as_str().unwrap_or("-"),
                            value["reason"].as_str().unwrap_or("-"),
                            regarding["kind"].as_str().unwrap_or("-"),
                            regarding["name"].as_str().unwrap_or("-"),
                            value["note"].as_str().unwrap_or("-"),
                            value["deprecatedCount"],
                        ));
                    }
                }
            }
            rounds += 1;
            assert!(rounds <= 20, "step {}: the planner does not settle", i + 1);
            assert!(w.apply(Command::Transaction(planned.commands)), "step {}: a fresh plan must apply", i + 1);
        };
        let _ = writeln!(out, "\n== step {}: {} ({rounds} round(s) to settle)", i + 1, step.what.trim());
        for (key, spec) in w.assignments() {
            let _ = writeln!(
                out,
                "{}/{} -> {} (generation {}, module {})",
                key.namespace, key.name, spec.node_name, spec.generation, spec.module_digest
            );
            let object = w.state.get(&key).expect("listed");
            if let Some(because) = object.value["metadata"]["annotations"][edgeplane_core::placement::PLACED_BECAUSE].as_str() {
                let _ = writeln!(out, "  because {because}");
            }
        }
        for u in &unplaced {
            let _ = writeln!(out, "pending {}: {} missing: {}", u.workload, u.missing, u.reason);
        }
        for event in &events {
            let _ = writeln!(out, "{event}");
        }
        for (key, object) in w.state.list("edgenodes", Some("")) {
            let ready = object.value["status"]["conditions"]
                .as_array()
                .and_then(|c| c.iter().find(|c| c["type"] == "Ready"))
                .cloned()
                .unwrap_or_default();
            let cordoned = if object.value["spec"]["cordoned"] == true { ", cordoned" } else { "" };
            let _ = writeln!(
                out,
                "node {}: Ready={} ({}){cordoned}",
                key.name,
                ready["status"].as_str().unwrap_or("-"),
                ready["reason"].as_str().unwrap_or("-")
            );
        }
        for (key, object) in w.state.list("workloads", None) {
            let status = &object.value["status"];
            let scheduled = status["conditions"].as_array().and_then(|c| c.first()).cloned().unwrap_or_default();
            let _ = writeln!(
                out,
                "workload {}: {} placed, {} ready, Scheduled={} ({}), module {}",
                key.name,
                status["replicas"],
                status["readyReplicas"],
                scheduled["status"].as_str().unwrap_or("-"),
                scheduled["message"].as_str().unwrap_or("-"),
                object.value["spec"]["module"].as_str().unwrap_or("-")
            );
            if let Some(rollout) = status.get("rollout") {
                let _ = writeln!(
                    out,
                    "  rollout of revision {}: {}, {} of {} updated: {}",
                    rollout["revision"],
                    rollout["phase"].as_str().unwrap_or("-"),
                    rollout["updated"],
                    rollout["replicas"],
                    rollout["message"].as_str().unwrap_or("")
                );
            }
        }
    }
    out
}

fn scenarios() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("tests/golden")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

#[test]
fn planner_decisions_match_the_golden_files() {
    let update = std::env::var_os("EDGEPLANE_UPDATE_GOLDEN").is_some();
    let mut failures = Vec::new();
    let files = scenarios();
    assert!(files.len() >= 8, "the catalogue has {} scenarios", files.len());
    for path in files {
        let scenario: Scenario =
            serde_yaml::from_str(&std::fs::read_to_string(&path).expect("read")).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let got = run(&scenario);
        let expected_path = path.with_extension("expected");
        if update {
            std::fs::write(&expected_path, &got).expect("write");
            continue;
        }
        let expected = std::fs::read_to_string(&expected_path).unwrap_or_default();
        if got != expected {
            failures.push(format!("{}:\n--- expected\n{expected}\n--- got\n{got}", path.display()));
        }
    }
    assert!(
        failures.is_empty(),
        "planner output differs from the golden files (EDGEPLANE_UPDATE_GOLDEN=1 to accept):\n{}",
        failures.join("\n")
    );
}
