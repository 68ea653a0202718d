//! Unit tests of the planner; the golden files (`tests/golden.rs`) cover whole scenarios.
use serde_json::{json, Value};

use super::assignment::typed;
use super::*;
use crate::health::Health;
use edgeplane_api::resources::AssignmentSpec;

const NOW: Now<'static> = Now { rfc3339: "2026-11-22T00:00:00Z", unix_ms: 1_795_305_600_000 };

struct World {
    state: ClusterState,
    index: u64,
    /// Replicas placed by the plans applied so far, by why.
    placed: BTreeMap<PlacementReason, u32>,
}

impl World {
    fn new() -> World {
        World { state: ClusterState::default(), index: 0, placed: BTreeMap::new() }
    }

    fn apply(&mut self, command: Command) -> Result<crate::Applied, crate::ApplyError> {
        self.index += 1;
        self.state.apply_entry(self.index, &command.encode(), None).expect("not empty")
    }

    fn create(&mut self, plural: &str, namespace: &str, value: Value) {
        let name = value["metadata"]["name"].as_str().expect("named").to_owned();
        let write = ResourceWrite::Create { created_at: NOW.rfc3339.into() };
        let key = ObjectKey::new(plural, namespace, name);
        self.apply(Command::PutResource { key, resource: value, precondition: Precondition::None, write }).expect("created");
    }

    fn replace(&mut self, plural: &str, namespace: &str, value: Value) {
        let name = value["metadata"]["name"].as_str().expect("named").to_owned();
        let key = ObjectKey::new(plural, namespace, name);
        self.apply(Command::PutResource { key, resource: value, precondition: Precondition::None, write: ResourceWrite::Replace })
            .expect("replaced");
    }

    /// Plans and applies until nothing is left to do; returns the last plan's unplaced.
    fn settle(&mut self, live: &[&str]) -> Vec<Unplaced> {
        self.settle_with(&Liveness::ready(live.iter().copied()))
    }

    /// Plans and applies until settled; every replica on a Ready node reports Running.
    fn settle_with(&mut self, live: &Liveness) -> Vec<Unplaced> {
        for _ in 0..8 {
            let mut live = live.clone();
            live.running = self
                .state
                .list("assignments", None)
                .filter_map(|(k, o)| typed::<AssignmentSpec>(o, "/spec").map(|s| (format!("{}/{}", k.namespace, k.name), s.node_name)))
                .filter(|(_, node)| live.is_ready(node))
                .collect();
            let plan = plan(&self.state, &live, NOW);
            if plan.commands.is_empty() {
                return plan.unplaced;
            }
            for (reason, count) in plan.placements {
                *self.placed.entry(reason).or_default() += count;
            }
            self.apply(Command::Transaction(plan.commands)).expect("a fresh plan applies");
        }
        panic!("the planner did not settle in 8 rounds");
    }

    fn assignments(&self) -> Vec<(String, String, u64)> {
        self.state
            .list("assignments", None)
            .map(|(k, o)| {
                let spec: AssignmentSpec = typed(o, "/spec").expect("readable");
                (k.name.clone(), spec.node_name, spec.generation)
            })
            .collect()
    }
}

fn node(name: &str, capabilities: &[&str], slots: u32) -> Value {
    json!({"metadata": {"name": name, "labels": {"zone": "z"}},
           "spec": {"capabilities": capabilities, "capacity": {"memoryMib": 100, "instanceSlots": slots, "cpuMillis": 1000}}})
}

fn workload(name: &str, replicas: i64, capability: &str) -> Value {
    json!({"metadata": {"name": name, "namespace": "f"},
           "spec": {"module": "sha256:00", "replicas": replicas, "placement": {"requiredCapabilities": [capability]},
                    "resources": {"memoryMib": 20, "batchTimeMs": 50}, "config": {"min": 1}}})
}

fn liveness(health: &[(&str, Health, u64)]) -> Liveness {
    let mut live = Liveness::default();
    for &(node, h, down_for) in health {
        live.health.insert(node.to_owned(), h);
        if h == Health::Down {
            live.down_for_ms.insert(node.to_owned(), down_for);
        }
    }
    live
}

fn ready_condition(w: &World, node: &str) -> (String, String) {
    let object = w.state.get(&ObjectKey::new("edgenodes", "", node)).expect("node");
    let c = object.value["status"]["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == "Ready"))
        .cloned()
        .expect("Ready condition");
    (c["status"].as_str().expect("status").to_owned(), c["reason"].as_str().expect("reason").to_owned())
}

#[test]
fn a_replica_on_a_down_node_moves_with_a_newer_generation() {
    let mut w = World::new();
    w.create("edgenodes", "", node("a", &["temp"], 8));
    w.create("edgenodes", "", node("b", &["temp"], 8));
    w.create("workloads", "f", workload("filter", 1, "temp"));
    w.settle(&["a", "b"]);
    let before = w.assignments();
    assert_eq!((before[0].0.as_str(), before[0].1.as_str()), ("filter-0", "a"));
    assert_eq!(ready_condition(&w, "a"), ("True".into(), "Heartbeating".into()));

    // Suspect: the replica stays, and nothing new is placed there.
    w.settle_with(&liveness(&[("a", Health::Suspect, 0), ("b", Health::Ready, 0)]));
    assert_eq!(w.assignments(), before);
    assert_eq!(ready_condition(&w, "a"), ("Unknown".into(), "HeartbeatsMissed".into()));

    w.settle_with(&liveness(&[("a", Health::Down, 0), ("b", Health::Ready, 0)]));
    let after = w.assignments();
    assert_eq!((after[0].0.as_str(), after[0].1.as_str()), ("filter-0", "b"), "moved to the other node");
    assert!(after[0].2 > before[0].2, "a new generation fences the old copy: {before:?} -> {after:?}");
    assert_eq!(ready_condition(&w, "a"), ("False".into(), "NodeDown".into()));
    // The replica remembers where it ran, so the lost node may still upload its backlog.
    let moved: AssignmentSpec =
        typed(w.state.get(&ObjectKey::new("assignments", "f", "filter-0")).expect("moved"), "/spec").expect("readable");
    assert!(moved.held_by("a", before[0].2) && moved.held_by("b", after[0].2), "{:?}", moved.previous);
    assert!(!moved.held_by("a", after[0].2) && !moved.held_by("b", before[0].2));

    // The node returns: the replica stays where it went (no thrashing).
    w.settle(&["a", "b"]);
    assert_eq!(w.assignments(), after);
    assert_eq!(ready_condition(&w, "a"), ("True".into(), "Heartbeating".into()));
}

#[test]
fn plans_count_their_placements_by_reason() {
    let mut w = World::new();
    w.create("edgenodes", "", node("a", &["temp"], 8));
    w.create("edgenodes", "", node("b", &["temp"], 8));
    w.create("workloads", "f", workload("filter", 2, "temp"));
    w.settle(&["a", "b"]);
    assert_eq!(w.placed, [(PlacementReason::NewReplica, 2)].into());
    w.settle_with(&liveness(&[("a", Health::Down, 0), ("b", Health::Ready, 0)]));
    assert_eq!(w.placed, [(PlacementReason::NewReplica, 2), (PlacementReason::Failover, 1)].into());
    assert_eq!(w.assignments().iter().filter(|(_, node, _)| node == "b").count(), 2, "{:?}", w.assignments());
}

#[test]
fn lost_after_makes_replicas_wait_and_with_nowhere_to_go_they_stay() {
    let mut w = World::new();
    w.create("edgenodes", "", node("a", &["temp"], 8));
    let mut patient = workload("filter", 1, "temp");
    patient["spec"]["failurePolicy"] = json!({"lostAfterSeconds": 10, "restartBackoffMs": 100, "maxRestarts": 5});
    w.create("workloads", "f", patient);
    w.settle(&["a"]);
    let before = w.assignments();
    // Nowhere else to go: it stays on the down node.
    w.settle_with(&liveness(&[("a", Health::Down, 60_000)]));
    assert_eq!(w.assignments(), before);
    w.create("edgenodes", "", node("b", &["temp"], 8));
    w.settle_with(&liveness(&[("a", Health::Down, 9_999), ("b", Health::Ready, 0)]));
    assert_eq!(w.assignments(), before, "waits for lostAfterSeconds");
    w.settle_with(&liveness(&[("a", Health::Down, 10_000), ("b", Health::Ready, 0)]));
    assert_eq!(w.assignments()[0].1, "b");
}

#[test]
fn a_crash_looping_replica_moves_to_another_node() {
    let mut w = World::new();
    w.create("edgenodes", "", node("a", &["temp"], 8));
    w.create("edgenodes", "", node("b", &["temp"], 8));
    w.create("workloads", "f", workload("filter", 1, "temp"));
    w.settle(&["a", "b"]);
    let mut live = Liveness::ready(["a", "b"]);
    live.crash_looping.insert(("f/filter-0".to_owned(), "a".to_owned()));
    w.settle_with(&live);
    assert_eq!(w.assignments()[0].1, "b");
    let events: Vec<(String, String)> = w
        .state
        .list(crate::events::EVENTS, Some("f"))
        .map(|(_, e)| (e.value["reason"].as_str().unwrap_or_default().to_owned(), e.value["note"].as_str().unwrap_or_default().to_owned()))
        .collect();
    assert!(events.iter().any(|(reason, note)| reason == "CrashLoop" && note.starts_with("filter-0 crash loops on a")), "{events:?}");
    assert!(events.iter().any(|(reason, note)| reason == "FailedOver" && note.starts_with("placed filter-0 on b")), "{events:?}");
}

#[test]
fn places_replicas_on_matching_live_nodes_and_settles() {
    let mut w = World::new();
    w.create("edgenodes", "", node("a", &["temp"], 8));
    w.create("edgenodes", "", node("b", &["temp"], 8));
    w.create("edgenodes", "", node("c", &["vib"], 8));
    w.create("workloads", "f", workload("filter", 2, "temp"));
    assert_eq!(w.settle(&["a", "b", "c"]), vec![]);
    let placed: Vec<_> = w.assignments().into_iter().map(|(n, node, _)| (n, node)).collect();
    assert_eq!(placed, vec![("filter-0".into(), "a".into()), ("filter-1".into(), "b".into())]);
    // Planning again changes nothing (c's Ready condition is already recorded; the
    // replicas report Running as they did).
    let mut live = Liveness::ready(["a", "b", "c"]);
    live.running = [("f/filter-0", "a"), ("f/filter-1", "b")].map(|(a, n)| (a.to_owned(), n.to_owned())).into();
    assert_eq!(plan(&w.state, &live, NOW), Plan::default());
}

#[test]
fn explains_why_replicas_stay_pending() {
    let mut w = World::new();
    w.create("edgenodes", "", node("a", &["temp"], 1));
    w.create("edgenodes", "", node("b", &["vib"], 8));
    w.create("edgenodes", "", node("c", &["temp"], 8));
    w.create("workloads", "f", workload("filter", 2, "temp"));
    let unplaced = w.settle(&["a", "b"]);
    assert_eq!(
        unplaced,
        vec![Unplaced {
            workload: "f/filter".into(),
            missing: 1,
            reason: "0/3 nodes fit: 1 are not Ready (heartbeats missing), 1 have no free instance slot, 1 lack capability temp".into()
        }]
    );
}

#[test]
fn a_changed_workload_updates_in_place_and_scaling_down_removes_the_highest_replicas() {
    let mut w = World::new();
    w.create("edgenodes", "", node("a", &["temp"], 8));
    w.create("workloads", "f", workload("filter", 3, "temp"));
    w.settle(&["a"]);
    let before = w.assignments();
    let mut changed = workload("filter", 2, "temp");
    changed["spec"]["config"]["min"] = json!(5);
    w.replace("workloads", "f", changed);
    w.settle(&["a"]);
    let after = w.assignments();
    assert_eq!(after, before[..2].to_vec(), "same names, nodes and generations");
    let config = w.state.get(&ObjectKey::new("assignments", "f", "filter-0")).expect("kept").value["spec"]["config"]["min"].clone();
    assert_eq!(config, json!(5));
}

#[test]
fn deleting_a_workload_removes_its_assignments_and_memory_headroom_is_kept() {
    let mut w = World::new();
    w.create("edgenodes", "", node("a", &["temp"], 8));
    // 100 MiB at 90% headroom holds four 20 MiB replicas, not five.
    w.create("workloads", "f", workload("filter", 5, "temp"));
    let unplaced = w.settle(&["a"]);
    assert_eq!(w.assignments().len(), 4);
    assert_eq!(unplaced[0].reason, "0/1 nodes fit: 1 have insufficient memory");
    let key = ObjectKey::new("workloads", "f", "filter");
    w.apply(Command::Delete { key, precondition: Precondition::None }).expect("deleted");
    w.settle(&["a"]);
    assert_eq!(w.assignments(), vec![]);
}

#[test]
fn a_plan_from_a_stale_state_is_refused_whole() {
    let mut w = World::new();
    w.create("edgenodes", "", node("a", &["temp"], 8));
    w.create("workloads", "f", workload("filter", 1, "temp"));
    let live = Liveness::ready(["a"]);
    let first = plan(&w.state, &live, NOW);
    let second = plan(&w.state, &live, NOW);
    w.apply(Command::Transaction(first.commands)).expect("applies");
    assert!(w.apply(Command::Transaction(second.commands)).is_err(), "the duplicate plan must not place twice");
    assert_eq!(w.assignments().len(), 1);
}

#[test]
fn a_plan_that_spends_its_placement_budget_says_how_many_replicas_wait_for_the_next() {
    let mut w = World::new();
    for i in 0..300 {
        let mut n = node(&format!("n{i:03}"), &["temp"], 8);
        n["spec"]["capacity"]["memoryMib"] = json!(1000);
        w.create("edgenodes", "", n);
    }
    let replicas = PLACEMENTS_PER_PLAN + 5;
    w.create("workloads", "f", workload("filter", i64::from(replicas), "temp"));
    let live = Liveness::ready((0..300).map(|i| format!("n{i:03}")));
    let first = plan(&w.state, &live, NOW);
    assert_eq!((first.placements.values().sum::<u32>(), first.deferred), (PLACEMENTS_PER_PLAN, 5));
    w.apply(Command::Transaction(first.commands)).expect("applies");
    let second = plan(&w.state, &live, NOW);
    assert_eq!((second.placements.values().sum::<u32>(), second.deferred), (5, 0));
}

#[test]
fn a_rollout_waiting_out_its_health_gate_says_when_the_clock_alone_changes_the_plan() {
    let mut w = World::new();
    w.create("edgenodes", "", node("a", &["temp"], 8));
    w.create("workloads", "f", workload("filter", 1, "temp"));
    w.settle(&["a"]);
    let mut running = Liveness::ready(["a"]);
    running.running.insert(("f/filter-0".to_owned(), "a".to_owned()));
    let settled = plan(&w.state, &running, NOW);
    assert_eq!((settled.commands.len(), settled.revisit_at_ms), (0, None), "a settled Workload waits on no clock");
    // A new module: the replica is rewritten, then reports nothing.
    let mut changed = workload("filter", 1, "temp");
    changed["spec"]["module"] = json!("sha256:01");
    w.replace("workloads", "f", changed);
    let live = Liveness::ready(["a"]);
    let idle = loop {
        let p = plan(&w.state, &live, NOW);
        if p.commands.is_empty() {
            break p;
        }
        w.apply(Command::Transaction(p.commands)).expect("applies");
    };
    let gate_ends = NOW.unix_ms + 30_000 + 1;
    assert_eq!(idle.revisit_at_ms, Some(gate_ends));
    let at = |unix_ms| Now { unix_ms, ..NOW };
    assert!(plan(&w.state, &live, at(gate_ends - 1)).commands.is_empty(), "nothing changes before the gate ends");
    let after = plan(&w.state, &live, at(gate_ends));
    assert!(!after.commands.is_empty(), "once the gate ends, the replica that never ran is a failure and the module is rolled back");
}
