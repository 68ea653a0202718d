//! A seeded simulation of the scheduler: hundreds of nodes turning Suspect, Down and Ready
//! again while the planner runs, its plans applied through the real state machine (some of
//! them stale). After every step:
//!
//! - no Assignment is on a node that does not exist or does not match its Workload;
//! - no node holds more instances than it has slots, or memory above its headroom;
//! - every Assignment created in the step went to a Ready node;
//! - no two Assignments of a Workload share a generation, and a replica's generation only grows.
//!
//! At the end, with every node Ready, every Workload has its desired count.
//!
//! `SIM_SEED=n` replays one seed; `SIM_SEEDS=n` runs seeds 1..=n (default 2).

use std::collections::{BTreeMap, BTreeSet};

use edgeplane_api::resources::{AssignmentSpec, EdgeNodeSpec, WorkloadMode, WorkloadSpec};
use edgeplane_core::health::{Health, Liveness};
use edgeplane_core::placement::{plan, Now, HEADROOM_PERCENT};
use edgeplane_core::{ClusterState, Command, ObjectKey, Precondition, ResourceWrite};
use serde_json::{json, Value};

const NODES: usize = 300;
const WORKLOADS: usize = 40;
const STEPS: u64 = 120;
const CAPABILITIES: [&str; 3] = ["temp", "vib", "gpu"];

/// xorshift64*: small, seeded, good enough to pick events.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

struct Sim {
    state: ClusterState,
    index: u64,
    rng: Rng,
    health: BTreeMap<String, Health>,
    down_for_ms: BTreeMap<String, u64>,
    seed: u64,
}

impl Sim {
    fn apply(&mut self, command: &Command) -> bool {
        self.index += 1;
        matches!(self.state.apply_entry(self.index, &command.encode(), None), Some(Ok(_)))
    }

    fn create(&mut self, plural: &str, namespace: &str, value: Value) {
        let key = ObjectKey::new(plural, namespace, value["metadata"]["name"].as_str().expect("named"));
        let write = ResourceWrite::Create { created_at: "2026-12-01T00:00:00Z".into() };
        assert!(self.apply(&Command::PutResource { key, resource: value, precondition: Precondition::None, write }));
    }

    /// What the leader would know: every replica on a Ready node reports Running (so the
    /// planner may rebalance), the others report nothing.
    fn liveness(&self) -> Liveness {
        let running = self
            .assignments()
            .into_iter()
            .filter(|(_, s)| self.health.get(&s.node_name) == Some(&Health::Ready))
            .map(|(k, s)| (format!("{}/{}", k.namespace, k.name), s.node_name))
            .collect();
        Liveness { health: self.health.clone(), down_for_ms: self.down_for_ms.clone(), running, ..Liveness::default() }
    }

    /// Plans and applies; sometimes applies a plan made one round earlier (a leader acting on
    /// a stale state), which must be refused whole or be harmless.
    fn schedule(&mut self, step: u64) {
        let now = Now { rfc3339: "2026-12-01T00:00:00Z", unix_ms: step * 500 };
        let mut stale: Option<Command> = None;
        for _ in 0..4 {
            let planned = plan(&self.state, &self.liveness(), now);
            if planned.commands.is_empty() {
                break;
            }
            let transaction = Command::Transaction(planned.commands);
            let keep = self.rng.chance(20).then(|| transaction.clone());
            assert!(self.apply(&transaction), "seed {}: a fresh plan must apply", self.seed);
            // The plan of the round before, applied late: refused whole, or harmless.
            if let Some(old) = stale.take() {
                self.apply(&old);
            }
            stale = keep;
        }
    }

    fn assignments(&self) -> Vec<(ObjectKey, AssignmentSpec)> {
        self.state
            .list("assignments", None)
            .map(|(k, o)| (k.clone(), serde_json::from_value(o.value["spec"].clone()).expect("an Assignment")))
            .collect()
    }

    fn nodes(&self) -> BTreeMap<String, (EdgeNodeSpec, Value)> {
        self.state
            .list("edgenodes", Some(""))
            .map(|(k, o)| (k.name.clone(), (serde_json::from_value(o.value["spec"].clone()).expect("an EdgeNode"), Value::clone(&o.value))))
            .collect()
    }

    fn workloads(&self) -> BTreeMap<String, WorkloadSpec> {
        self.state
            .list("workloads", None)
            .map(|(k, o)| (k.name.clone(), serde_json::from_value(o.value["spec"].clone()).expect("a Workload")))
            .collect()
    }
}

fn run(seed: u64) {
    let mut sim = Sim {
        state: ClusterState::default(),
        index: 0,
        rng: Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1),
        health: BTreeMap::new(),
        down_for_ms: BTreeMap::new(),
        seed,
    };
    for i in 0..NODES {
        let capabilities: Vec<&str> = CAPABILITIES.iter().copied().filter(|_| sim.rng.chance(60)).collect();
        let slots = 2 + sim.rng.below(7);
        let memory = 64 * (1 + sim.rng.below(8));
        let node = json!({"metadata": {"name": format!("n{i:03}"), "labels": {"zone": format!("z{}", i % 5)}},
            "spec": {"capabilities": capabilities, "capacity": {"memoryMib": memory, "instanceSlots": slots, "cpuMillis": 1000}}});
        sim.create("edgenodes", "", node);
        sim.health.insert(format!("n{i:03}"), Health::Ready);
    }
    for i in 0..WORKLOADS {
        let capability = CAPABILITIES[sim.rng.below(3) as usize];
        let daemon = sim.rng.chance(10);
        let mut spec = json!({"module": "sha256:00", "placement": {"requiredCapabilities": [capability]},
            "resources": {"memoryMib": 8 * (1 + sim.rng.below(4)), "batchTimeMs": 50},
            "failurePolicy": {"lostAfterSeconds": if sim.rng.chance(30) { 2 } else { 0 }, "restartBackoffMs": 100, "maxRestarts": 3}});
        if daemon {
            spec["mode"] = json!("daemon");
        } else {
            spec["replicas"] = json!(1 + sim.rng.below(5));
        }
        sim.create("workloads", "sim", json!({"metadata": {"name": format!("w{i:02}"), "namespace": "sim"}, "spec": spec}));
    }

    let mut generations: BTreeMap<String, u64> = BTreeMap::new();
    let mut placed_on: BTreeMap<ObjectKey, String> = BTreeMap::new();
    let mut moves = 0;
    for step in 0..STEPS {
        // Health changes: a few nodes go quiet, quiet ones go down, down ones come back.
        let names: Vec<String> = sim.health.keys().cloned().collect();
        for name in names {
            let next = match sim.health[&name] {
                Health::Ready if sim.rng.chance(2) => Health::Suspect,
                Health::Suspect if sim.rng.chance(50) => Health::Down,
                Health::Suspect if sim.rng.chance(30) => Health::Ready,
                Health::Down if sim.rng.chance(10) => Health::Ready,
                same => same,
            };
            match next {
                Health::Down => *sim.down_for_ms.entry(name.clone()).or_insert(0) += 500,
                _ => drop(sim.down_for_ms.remove(&name)),
            }
            sim.health.insert(name, next);
        }
        let before: BTreeSet<(ObjectKey, u64)> = sim.assignments().into_iter().map(|(k, s)| (k, s.generation)).collect();
        sim.schedule(step);
        check(&sim, &before, &mut generations, step);
        for (key, spec) in sim.assignments() {
            if placed_on.insert(key, spec.node_name.clone()).is_some_and(|old| old != spec.node_name) {
                moves += 1;
            }
        }
    }
    // Not a vacuous run: replicas did fail over.
    assert!(moves > 20, "seed {seed}: only {moves} replicas moved in {STEPS} steps");

    // Everyone back: every Workload gets its desired count.
    for health in sim.health.values_mut() {
        *health = Health::Ready;
    }
    sim.down_for_ms.clear();
    sim.schedule(STEPS);
    sim.schedule(STEPS + 1);
    // Settled means settled: no rebalancing back and forth.
    let again = plan(&sim.state, &sim.liveness(), Now { rfc3339: "2026-12-01T00:00:00Z", unix_ms: 0 });
    assert!(again.commands.is_empty(), "seed {seed}: the planner keeps moving things with nothing changing: {:?}", again.commands.len());
    let nodes = sim.nodes();
    let assignments = sim.assignments();
    for (name, workload) in sim.workloads() {
        let placed = assignments.iter().filter(|(_, s)| s.workload == name).count();
        let capability = &workload.placement.required_capabilities[0];
        let wanted = match workload.mode {
            WorkloadMode::Replicated => workload.replicas.unwrap_or(1) as usize,
            WorkloadMode::Daemon => nodes.values().filter(|(n, _)| n.capabilities.contains(capability)).count(),
        };
        let unplaced = plan(&sim.state, &sim.liveness(), Now { rfc3339: "2026-12-01T00:00:00Z", unix_ms: 0 }).unplaced;
        assert!(
            placed == wanted || unplaced.iter().any(|u| u.workload == format!("sim/{name}")),
            "seed {seed}: {name} has {placed} of {wanted} replicas with every node Ready, and no reason given"
        );
        if workload.mode == WorkloadMode::Replicated {
            assert_eq!(placed, wanted, "seed {seed}: {name} must converge (capacity is ample)");
        }
    }
}

fn check(sim: &Sim, before: &BTreeSet<(ObjectKey, u64)>, generations: &mut BTreeMap<String, u64>, step: u64) {
    let seed = sim.seed;
    let nodes = sim.nodes();
    let workloads = sim.workloads();
    let mut load: BTreeMap<&str, (u32, u64)> = BTreeMap::new();
    let mut seen: BTreeMap<(&str, u64), &ObjectKey> = BTreeMap::new();
    let assignments = sim.assignments();
    for (key, spec) in &assignments {
        let (node, _) =
            nodes.get(&spec.node_name).unwrap_or_else(|| panic!("seed {seed} step {step}: {key} on unknown node {}", spec.node_name));
        let workload = &workloads[&spec.workload];
        for c in &workload.placement.required_capabilities {
            assert!(node.capabilities.contains(c), "seed {seed} step {step}: {key} on {} which lacks {c}", spec.node_name);
        }
        let entry = load.entry(spec.node_name.as_str()).or_default();
        entry.0 += 1;
        entry.1 += spec.resources.memory_mib;
        if !before.contains(&(key.clone(), spec.generation)) {
            assert_eq!(
                sim.health[&spec.node_name],
                Health::Ready,
                "seed {seed} step {step}: {key} (generation {}) placed on a node that is not Ready",
                spec.generation
            );
        }
        if let Some(other) = seen.insert((spec.workload.as_str(), spec.generation), key) {
            panic!("seed {seed} step {step}: {key} and {other} share generation {}", spec.generation);
        }
        let last = generations.entry(format!("{key}")).or_insert(0);
        assert!(spec.generation >= *last, "seed {seed} step {step}: {key}'s generation went back from {last} to {}", spec.generation);
        *last = spec.generation;
    }
    for (name, (instances, memory)) in load {
        let capacity = &nodes[name].0.capacity;
        assert!(
            instances <= capacity.instance_slots,
            "seed {seed} step {step}: {name} runs {instances} instances in {} slots",
            capacity.instance_slots
        );
        assert!(
            memory * 100 <= capacity.memory_mib * HEADROOM_PERCENT,
            "seed {seed} step {step}: {name} holds {memory} MiB of {} MiB",
            capacity.memory_mib
        );
    }
}

#[test]
fn the_scheduler_keeps_its_invariants_while_nodes_die_and_return() {
    if let Some(seed) = std::env::var("SIM_SEED").ok().and_then(|s| s.parse().ok()) {
        run(seed);
        return;
    }
    let seeds = std::env::var("SIM_SEEDS").ok().and_then(|s| s.parse().ok()).unwrap_or(2);
    for seed in 1..=seeds {
        run(seed);
    }
}
