//! The placement planner: from the replicated state and the set of live nodes, the writes
//! that make every Workload's Assignments match it. Pure: no clock, no IO; the leader's
//! placement loop feeds it and proposes its output.
//!
//! Level-triggered and idempotent: planning again on the state its own writes produced yields
//! nothing. Every write carries a precondition on what it read (create-only, or the exact
//! resourceVersion), so a plan made from a state that has since moved on is refused whole and
//! simply made again.
//!
//! What it decides, for each Workload:
//! - resolve `spec.module` to a digest and `spec.modelRef` to parameters; without them the
//!   Workload is left as it is and reported unplaced, with why;
//! - keep each existing Assignment whose node still exists and still matches, and rewrite it
//!   when the Workload, Module or Model changed (same generation: an update, not a move);
//! - remove Assignments beyond the desired count, or on nodes that no longer match;
//! - fail over: a replica whose node has been down for the Workload's `lostAfterSeconds`, or
//!   whose instance is crash-looping there, moves to another node that fits (a new
//!   generation, so the old copy's outputs are fenced); with nowhere to go it stays;
//! - place missing replicas on Ready, matching nodes with room, fewest instances first (name
//!   breaks ties), avoiding nodes that already run a replica of the same Workload;
//! - record each node's health transitions in its `Ready` condition.
//!
//! Rebalancing, spreading by zone and rollouts are still to come.

use std::collections::{BTreeMap, BTreeSet};

use edgeplane_api::node::NODE_LABEL;
use edgeplane_api::resources::{
    AssignedModel, AssignmentSpec, EdgeNodeSpec, ModelSpec, ModuleSpec, TaintEffect, Tier, WorkloadMode, WorkloadSpec,
};
use serde::de::DeserializeOwned;
use serde_json::{json, Value};

pub use crate::health::Liveness;
use crate::health::Health;
use crate::{ClusterState, Command, ObjectKey, Precondition, ResourceWrite, StoredObject};

/// A node is never filled above this share of its memory capacity.
pub const HEADROOM_PERCENT: u64 = 90;

/// What the planner wants done.
#[derive(Debug, Default, PartialEq)]
pub struct Plan {
    /// Writes to propose together, each with a precondition.
    pub commands: Vec<Command>,
    /// Workloads with replicas that could not be placed, and why.
    pub unplaced: Vec<Unplaced>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Unplaced {
    /// `namespace/name` of the Workload.
    pub workload: String,
    pub missing: u32,
    pub reason: String,
}

struct Node {
    name: String,
    labels: BTreeMap<String, String>,
    spec: EdgeNodeSpec,
    /// Instances and memory already assigned (including this plan's placements).
    instances: u32,
    memory_mib: u64,
    /// Looked up once per plan rather than once per candidate replica.
    ready: bool,
    cpu_millis: u32,
    soft_taint: bool,
}

struct Existing {
    key: ObjectKey,
    object: StoredObject,
    spec: AssignmentSpec,
}

impl Existing {
    /// (assignment `namespace/name`, node): how heartbeats report this replica's instance.
    fn instance(&self) -> (String, String) {
        (format!("{}/{}", self.key.namespace, self.key.name), self.spec.node_name.clone())
    }
}

/// `metadata.generation` of a stored resource.
fn generation_of(object: &StoredObject) -> i64 {
    object.value.pointer("/metadata/generation").and_then(Value::as_i64).unwrap_or(0)
}

/// The leader's clock, read before planning (planning itself reads no clock).
#[derive(Debug, Clone, Copy)]
pub struct Now<'a> {
    /// Recorded as creation and transition times.
    pub rfc3339: &'a str,
    /// Recorded as `placedAtMs` on new placements.
    pub unix_ms: u64,
}

/// Plans placements. Only Ready nodes in `live` receive new replicas; replicas on Down nodes
/// move. `now` is recorded on new Assignments and condition transitions.
pub fn plan(state: &ClusterState, live: &Liveness, now: Now<'_>) -> Plan {
    let mut nodes: BTreeMap<String, Node> = state
        .list("edgenodes", Some(""))
        .filter_map(|(key, object)| {
            let spec: EdgeNodeSpec = typed(object, "/spec")?;
            let labels = typed(object, "/metadata/labels").unwrap_or_default();
            let ready = live.is_ready(&key.name);
            let cpu_millis = live.cpu_millis.get(&key.name).copied().unwrap_or(0);
            let soft_taint = spec.taints.iter().any(|t| t.effect == TaintEffect::PreferNoSchedule);
            Some((key.name.clone(), Node { name: key.name.clone(), labels, spec, instances: 0, memory_mib: 0, ready, cpu_millis, soft_taint }))
        })
        .collect();
    let mut by_workload: BTreeMap<(String, String), Vec<Existing>> = BTreeMap::new();
    let mut plan = Plan::default();
    for (key, object) in state.list("edgenodes", Some("")) {
        if let Some(command) = health_transition(key, object, live, now.rfc3339) {
            plan.commands.push(command);
        }
    }
    for (key, object) in state.list("assignments", None) {
        let Some(spec) = typed::<AssignmentSpec>(object, "/spec") else {
            // Not readable as an Assignment: only this planner writes them, so remove it.
            plan.commands.push(delete(key, object));
            continue;
        };
        if let Some(node) = nodes.get_mut(&spec.node_name) {
            node.instances += 1;
            node.memory_mib += spec.resources.memory_mib;
        }
        by_workload
            .entry((key.namespace.clone(), spec.workload.clone()))
            .or_default()
            .push(Existing { key: key.clone(), object: object.clone(), spec });
    }

    // Every placement gets a generation above every live one and above the log index it was
    // planned at, and distinct from the others in this plan: no two live copies share one, and
    // a replica's new copy always outranks the copy it replaces.
    let live_max = by_workload.values().flatten().map(|e| e.spec.generation).max().unwrap_or(0);
    let mut p = Planning { nodes, live, now, next_generation: state.applied_index().max(live_max) + 1, rebalance_budget: REBALANCE_PER_PLAN, placement_budget: PLACEMENTS_PER_PLAN, plan };
    // Pending replicas first, for every Workload; then, with what is left, rebalancing.
    let mut settled = Vec::new();
    for (key, object) in state.list("workloads", None) {
        let existing = by_workload.remove(&(key.namespace.clone(), key.name.clone())).unwrap_or_default();
        let Some(workload) = typed::<WorkloadSpec>(object, "/spec") else { continue };
        let template = template(state, &key.namespace, &key.name, &workload);
        settled.extend(plan_workload(&key.namespace, &key.name, object, &workload, existing, template, &mut p));
    }
    for s in settled {
        let mut want = Want::new(&s.workload, &s.template, live);
        for (node, count) in &s.peers {
            for _ in 0..*count {
                want.add(&p.nodes, node);
            }
        }
        rebalance(&s.namespace, &s.workload, &s.replicas, s.ready, &s.matching, &mut want, &mut p);
    }
    // Assignments of deleted Workloads.
    for existing in by_workload.into_values().flatten() {
        p.plan.commands.push(delete(&existing.key, &existing.object));
    }
    p.plan
}

/// What planning one Workload shares with the others: the nodes' bookkeeping, the next
/// generation to hand out, what is left of the rebalancing budget, and the plan.
struct Planning<'a> {
    nodes: BTreeMap<String, Node>,
    live: &'a Liveness,
    now: Now<'a>,
    next_generation: u64,
    rebalance_budget: u32,
    /// New placements left in this plan.
    placement_budget: u32,
    plan: Plan,
}

impl Planning<'_> {
    fn take(&mut self, node: &str, template: &AssignmentSpec) {
        if let Some(n) = self.nodes.get_mut(node) {
            n.instances += 1;
            n.memory_mib += template.resources.memory_mib;
        }
    }

    fn release(&mut self, node: &str, spec: &AssignmentSpec) {
        if let Some(n) = self.nodes.get_mut(node) {
            n.instances = n.instances.saturating_sub(1);
            n.memory_mib = n.memory_mib.saturating_sub(spec.resources.memory_mib);
        }
    }

    /// Creates the Assignment `name` on `node` with a fresh generation.
    /// `because` says why the replica goes there (kept on the Assignment for `describe`).
    fn create(&mut self, namespace: &str, name: String, replica: u32, node: String, template: &AssignmentSpec, because: &str) {
        self.take(&node, template);
        let key = ObjectKey::new("assignments", namespace, name);
        let generation = self.next_generation;
        self.next_generation += 1;
        let spec = AssignmentSpec { replica, node_name: node, generation, placed_at_ms: self.now.unix_ms, ..template.clone() };
        self.plan.commands.push(Command::PutResource {
            resource: assignment(&key, &spec, Some(because)),
            key,
            precondition: Precondition::MustNotExist,
            write: ResourceWrite::Create { created_at: self.now.rfc3339.to_owned() },
        });
    }
}

/// Replicas of one Workload per node and per topology domain, and the nodes that have its
/// module: what a node's score needs, kept up to date as the plan places and moves replicas.
struct Want<'a> {
    workload: &'a WorkloadSpec,
    template: &'a AssignmentSpec,
    peers: BTreeMap<String, u32>,
    /// Replicas per value of the `spreadBy` label ("" for nodes without it).
    domains: BTreeMap<String, u32>,
    cached: BTreeSet<&'a str>,
}

impl<'a> Want<'a> {
    fn new(workload: &'a WorkloadSpec, template: &'a AssignmentSpec, live: &'a Liveness) -> Want<'a> {
        let cached = live.digests.iter().filter(|(_, digest)| **digest == template.module_digest).map(|((_, node), _)| node.as_str()).collect();
        Want { workload, template, peers: BTreeMap::new(), domains: BTreeMap::new(), cached }
    }

    fn domain<'n>(&self, node: &'n Node) -> Option<&'n str> {
        let key = self.workload.placement.spread_by.as_ref()?;
        Some(node.labels.get(key).map_or("", String::as_str))
    }

    fn add(&mut self, nodes: &BTreeMap<String, Node>, node: &str) {
        *self.peers.entry(node.to_owned()).or_default() += 1;
        if let Some(domain) = nodes.get(node).and_then(|n| self.domain(n)) {
            *self.domains.entry(domain.to_owned()).or_default() += 1;
        }
    }

    fn remove(&mut self, nodes: &BTreeMap<String, Node>, node: &str) {
        if let Some(count) = self.peers.get_mut(node) {
            *count = count.saturating_sub(1);
        }
        if let Some(domain) = nodes.get(node).and_then(|n| self.domain(n)) {
            if let Some(count) = self.domains.get_mut(domain) {
                *count = count.saturating_sub(1);
            }
        }
    }

    /// Replicas in the node's topology domain (`spreadBy` label value); 0 without spreading.
    fn in_domain(&self, node: &Node) -> u32 {
        self.domain(node).and_then(|d| self.domains.get(d)).copied().unwrap_or(0)
    }
}

/// Nodes of one instance count more than another's that a replica moves to even them out.
/// A move narrows the gap by two, so a gap of 3 never turns into a move back.
pub const REBALANCE_SKEW: u32 = 3;
/// Rebalancing moves in one plan, over all Workloads.
pub const REBALANCE_PER_PLAN: u32 = 4;
/// New placements in one plan: a plan is one Raft entry, and an entry of many megabytes
/// stalls the leader long enough to lose its leadership. The rest waits for the next plan.
pub const PLACEMENTS_PER_PLAN: u32 = 1_000;

/// A replicated Workload whose replicas are all placed and unchanged in this plan: a candidate
/// for rebalancing once every Workload's pending replicas have had their turn.
struct Settled {
    namespace: String,
    workload: WorkloadSpec,
    template: AssignmentSpec,
    replicas: Vec<Existing>,
    ready: u32,
    matching: BTreeSet<String>,
    peers: BTreeMap<String, u32>,
}

fn plan_workload(
    namespace: &str,
    name: &str,
    object: &StoredObject,
    workload: &WorkloadSpec,
    existing: Vec<Existing>,
    template: Result<AssignmentSpec, String>,
    p: &mut Planning<'_>,
) -> Option<Settled> {
    let id = format!("{namespace}/{name}");
    let template = match template {
        Ok(t) => t,
        Err(reason) => {
            p.plan.unplaced.push(Unplaced { workload: id, missing: replica_count(workload), reason: reason.clone() });
            let keep = object.value["status"].get("rollout").cloned();
            workload_status(ObjectKey::new("workloads", namespace, name), object, 0, 0, Some(&reason), keep, p);
            return None;
        }
    };
    let live = p.live;
    let matching: BTreeSet<String> = p.nodes.values().filter(|n| matches(n, workload)).map(|n| n.name.clone()).collect();
    let lost_after_ms = workload.failure_policy.lost_after_seconds.saturating_mul(1000);
    let lost = |node: &str| live.down_at_least(node, lost_after_ms);
    // Which replica slots are wanted: indices for replicated workloads, nodes for daemons
    // (Ready nodes, and nodes already running one that are not lost).
    let wanted: Vec<Slot> = match workload.mode {
        WorkloadMode::Replicated => (0..replica_count(workload)).map(Slot::Replica).collect(),
        WorkloadMode::Daemon => matching
            .iter()
            .filter(|n| !lost(n) && (live.is_ready(n) || existing.iter().any(|e| &e.spec.node_name == *n)))
            .cloned()
            .map(Slot::Node)
            .collect(),
    };
    let mut want = Want::new(workload, &template, live);
    for e in &existing {
        want.add(&p.nodes, &e.spec.node_name);
    }
    let mut filled: BTreeSet<Slot> = BTreeSet::new();
    // Replicas moving off a node, which must not be placed back on it.
    let mut avoid: BTreeMap<Slot, String> = BTreeMap::new();
    // Kept replicas already on the current template (candidates for rebalancing), and those
    // a rollout has yet to update.
    let mut settled: Vec<Existing> = Vec::new();
    let mut outdated: Vec<(Existing, AssignmentSpec)> = Vec::new();
    let generation = generation_of(object);
    let rolling = object.value["status"]["rollout"]["phase"] == "Progressing" && object.value["status"]["rollout"]["revision"] == generation;
    for e in existing {
        let slot = match workload.mode {
            WorkloadMode::Replicated => Slot::Replica(e.spec.replica),
            WorkloadMode::Daemon => Slot::Node(e.spec.node_name.clone()),
        };
        let node = e.spec.node_name.clone();
        let updated = AssignmentSpec {
            replica: e.spec.replica,
            node_name: node.clone(),
            generation: e.spec.generation,
            placed_at_ms: e.spec.placed_at_ms,
            ..template.clone()
        };
        // During a rollout a crash loop is the rollout's to judge (rollback), and a replica on
        // an old template is about to be replaced anyway: neither is a reason to move.
        let crash_looping =
            !rolling && updated == e.spec && live.crash_looping.contains(&e.instance());
        let failing = lost(&node) || crash_looping;
        // Fail over only to somewhere else that fits; with nowhere to go, the replica waits.
        let moving = failing && workload.mode == WorkloadMode::Replicated && choose(&p.nodes, &matching, &want, Some(&node)).is_some();
        let keep = matching.contains(&node) && wanted.contains(&slot) && !filled.contains(&slot) && !moving
            // A daemon replica is named after its node; one found elsewhere is not ours to keep.
            && (workload.mode == WorkloadMode::Replicated || e.key.name == daemon_name(name, &node));
        if moving {
            avoid.insert(slot.clone(), node.clone());
        }
        if !keep {
            p.release(&node, &e.spec);
            want.remove(&p.nodes, &node);
            p.plan.commands.push(delete(&e.key, &e.object));
            continue;
        }
        filled.insert(slot);
        if updated != e.spec {
            outdated.push((e, updated));
        } else {
            settled.push(e);
        }
    }
    let rollout = roll_out(namespace, name, object, workload, &settled, outdated, p);

    let mut missing = 0;
    let mut placed_now = 0;
    let mut deferred = 0;
    let mut reasons: BTreeMap<String, u32> = BTreeMap::new();
    for slot in wanted.iter().filter(|s| !filled.contains(*s)) {
        if p.placement_budget == 0 {
            deferred += 1;
            continue;
        }
        let chosen = match slot {
            Slot::Node(node) => (live.is_ready(node) && fits(&p.nodes[node], &template)).then(|| node.clone()),
            Slot::Replica(_) => choose(&p.nodes, &matching, &want, avoid.get(slot).map(String::as_str)),
        };
        let Some(node_name) = chosen else {
            missing += 1;
            for (reason, count) in why_not(&p.nodes, workload, live, &template) {
                *reasons.entry(reason).or_default() += count;
            }
            continue;
        };
        let because = explain(&p.nodes, &want, &node_name, if avoid.contains_key(slot) { "failover" } else { "new replica" });
        want.add(&p.nodes, &node_name);
        placed_now += 1;
        p.placement_budget -= 1;
        let (replica, object_name) = match slot {
            Slot::Replica(r) => (*r, format!("{name}-{r}")),
            Slot::Node(n) => (0, daemon_name(name, n)),
        };
        p.create(namespace, object_name, replica, node_name, &template, &because);
    }
    let ready = settled.iter().filter(|e| live.running.contains(&e.instance())).count() as u32;
    let peers = want.peers;
    let reason = (missing > 0).then(|| {
        let total = p.nodes.len();
        let why = reasons.iter().map(|(r, c)| format!("{c} {r}")).collect::<Vec<_>>().join(", ");
        if why.is_empty() { format!("0/{total} nodes fit") } else { format!("0/{total} nodes fit: {why}") }
    });
    let placed = wanted.len() as u32 - missing - deferred;
    // With replicas left for the next plan, the status waits until there is a verdict.
    if deferred == 0 && rollout.status_write {
        workload_status(ObjectKey::new("workloads", namespace, name), object, placed, ready, reason.as_deref(), rollout.status, p);
    }
    if let Some(reason) = reason {
        p.plan.unplaced.push(Unplaced { workload: id, missing, reason });
    }
    (missing == 0 && placed_now == 0 && !rollout.active && workload.mode == WorkloadMode::Replicated).then(|| Settled {
        namespace: namespace.to_owned(),
        workload: workload.clone(),
        template,
        replicas: settled,
        ready,
        matching,
        peers,
    })
}

/// Moves at most one replica of a Workload whose replicas all run, and only if that improves
/// things by a clear margin: back to a preferred tier (the end of a cloud offload), to a less
/// crowded topology domain, or off a node with `REBALANCE_SKEW` more instances than the
/// target. At most `maxUnavailable` replicas are ever away at once.
fn rebalance(namespace: &str, workload: &WorkloadSpec, settled: &[Existing], ready: u32, matching: &BTreeSet<String>, want: &mut Want<'_>, p: &mut Planning<'_>) {
    let unavailable = replica_count(workload).saturating_sub(ready);
    if p.rebalance_budget == 0 || unavailable + 1 > workload.rollout.max_unavailable.max(1) {
        return;
    }
    for e in settled {
        let from = e.spec.node_name.as_str();
        let Some(origin) = p.nodes.get(from) else { continue };
        let origin_rank = tier_rank(&workload.placement, origin.spec.tier);
        want.remove(&p.nodes, from);
        let origin_domain = want.in_domain(origin);
        let target = choose(&p.nodes, matching, want, Some(from));
        // Counts without this replica: moving it takes one from the origin's side and adds
        // one to the target's, so a gap of 2 (domains) or REBALANCE_SKEW (instances) narrows
        // without flipping, and never calls for a move back.
        let better = target.as_ref().map(|t| &p.nodes[t]).is_some_and(|t| {
            tier_rank(&workload.placement, t.spec.tier) < origin_rank
                || origin_domain > want.in_domain(t)
                || origin.instances >= t.instances + REBALANCE_SKEW
        });
        if !better {
            want.add(&p.nodes, from);
            continue;
        }
        let target = target.expect("better implies a target");
        p.release(from, &e.spec);
        p.plan.commands.push(delete(&e.key, &e.object));
        let because = explain(&p.nodes, want, &target, &format!("rebalanced from {from}"));
        want.add(&p.nodes, &target);
        p.create(namespace, e.key.name.clone(), e.spec.replica, target, want.template, &because);
        p.rebalance_budget -= 1;
        return;
    }
}
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Slot {
    Replica(u32),
    Node(String),
}

fn daemon_name(workload: &str, node: &str) -> String {
    format!("{workload}-{node}")
}

/// Replicas a replicated Workload asks for; a daemon's count follows its nodes instead (0 here).
fn replica_count(workload: &WorkloadSpec) -> u32 {
    match workload.mode {
        WorkloadMode::Replicated => workload.replicas.unwrap_or(1).clamp(0, i64::from(u32::MAX)) as u32,
        WorkloadMode::Daemon => 0,
    }
}

/// The Assignment spec every replica of the Workload shares, with references resolved.
fn template(state: &ClusterState, namespace: &str, name: &str, workload: &WorkloadSpec) -> Result<AssignmentSpec, String> {
    let module_digest = match workload.module.strip_prefix("sha256:") {
        Some(_) => workload.module.clone(),
        None => {
            let (module, version) = workload.module.split_once('@').ok_or_else(|| format!("module {:?} is not name@version", workload.module))?;
            let key = ObjectKey::new("modules", namespace, format!("{module}.{version}"));
            let spec: ModuleSpec = state
                .get(&key)
                .and_then(|o| typed(o, "/spec"))
                .ok_or_else(|| format!("module {module}@{version} is not in the registry (edgectl module push)"))?;
            spec.digest
        }
    };
    let model = match &workload.model_ref {
        None => None,
        Some(model) => {
            let spec: ModelSpec = state
                .get(&ObjectKey::new("models", namespace, model))
                .and_then(|o| typed(o, "/spec"))
                .ok_or_else(|| format!("model {model} does not exist"))?;
            Some(AssignedModel { name: model.clone(), version: spec.version, format: spec.format, parameters: spec.parameters })
        }
    };
    Ok(AssignmentSpec {
        workload: name.to_owned(),
        replica: 0,
        node_name: String::new(),
        generation: 0,
        placed_at_ms: 0,
        module_ref: workload.module.clone(),
        module_digest,
        resources: workload.resources.clone(),
        inputs: workload.inputs.clone(),
        outputs: workload.outputs.clone(),
        config: workload.config.clone(),
        model,
        failure_policy: workload.failure_policy.clone(),
    })
}

/// Whether the node may run the Workload at all (not whether it has room now).
fn matches(node: &Node, workload: &WorkloadSpec) -> bool {
    mismatch(node, workload).is_none()
}

/// Why the node may not run the Workload, in words for `edgectl describe`.
fn mismatch(node: &Node, workload: &WorkloadSpec) -> Option<String> {
    let placement = &workload.placement;
    if let Some((k, v)) = placement.node_selector.iter().find(|(k, v)| node.labels.get(*k) != Some(*v)) {
        return Some(format!("do not have label {k}={v}"));
    }
    if let Some(c) = placement.required_capabilities.iter().find(|c| !node.spec.capabilities.contains(c)) {
        return Some(format!("lack capability {c}"));
    }
    let tolerated = |key: &str, value: &str| placement.tolerations.iter().any(|t| t.key == key && (t.value.is_empty() || t.value == value));
    if let Some(t) = node.spec.taints.iter().find(|t| t.effect == TaintEffect::NoSchedule && !tolerated(&t.key, &t.value)) {
        return Some(format!("have untolerated taint {}", t.key));
    }
    let tiers = &placement.preferred_tiers;
    let tier_ok = tiers.is_empty() || tiers.contains(&node.spec.tier) || (placement.cloud_fallback && node.spec.tier == Tier::Cloud);
    if !tier_ok {
        return Some(format!("are not in tier {}", tiers.iter().map(|t| format!("{t:?}").to_lowercase()).collect::<Vec<_>>().join("/")));
    }
    None
}

/// Whether the node has room for one more replica: an instance slot and memory within the
/// headroom.
fn fits(node: &Node, template: &AssignmentSpec) -> bool {
    let capacity = &node.spec.capacity;
    node.instances < capacity.instance_slots
        && (node.memory_mib + template.resources.memory_mib) * 100 <= capacity.memory_mib * HEADROOM_PERCENT
}

/// The best node for a new replica. Filter: Ready, matching, room left, not cordoned, not
/// `avoid`. Score, in order: no PreferNoSchedule taint; the most preferred tier (cloud last,
/// as a fallback); the fewest replicas of this Workload in the node's topology domain
/// (`spreadBy`), then on the node itself; the lowest load (instances placed here, the
/// reserved part); the module already on the node (no download); the lowest reported CPU;
/// the name (stable).
fn choose(nodes: &BTreeMap<String, Node>, matching: &BTreeSet<String>, want: &Want<'_>, avoid: Option<&str>) -> Option<String> {
    matching
        .iter()
        .map(|n| &nodes[n])
        .filter(|n| n.ready && !n.spec.cordoned && Some(n.name.as_str()) != avoid && fits(n, want.template))
        .min_by_key(|n| {
            (
                n.soft_taint,
                tier_rank(&want.workload.placement, n.spec.tier),
                want.in_domain(n),
                if want.peers.is_empty() { 0 } else { want.peers.get(&n.name).copied().unwrap_or(0) },
                n.instances,
                !want.cached.contains(n.name.as_str()),
                n.cpu_millis,
                n.name.as_str(),
            )
        })
        .map(|n| n.name.clone())
}

/// 0 for the most preferred tier, then 1, ...; tiers not listed (the cloud fallback) last.
fn tier_rank(placement: &edgeplane_api::resources::Placement, tier: Tier) -> usize {
    placement.preferred_tiers.iter().position(|t| *t == tier).unwrap_or(placement.preferred_tiers.len())
}

/// A status write when the Workload's status does not say what this plan leaves: replicas
/// placed, replicas reported Running, and the `Scheduled` condition with why not.
fn workload_status(key: ObjectKey, object: &StoredObject, placed: u32, ready: u32, unplaced: Option<&str>, rollout: Option<Value>, p: &mut Planning<'_>) {
    let (status, reason, message) = match unplaced {
        None => ("True", "Placed", format!("{placed} replica(s) placed")),
        Some(why) => ("False", "Unschedulable", why.to_owned()),
    };
    let current = &object.value["status"];
    let scheduled = current["conditions"].as_array().and_then(|c| c.iter().find(|c| c["type"] == "Scheduled"));
    let scheduled_first = current["conditions"].as_array().and_then(|c| c.first()).is_some_and(|c| c["type"] == "Scheduled");
    let generation = generation_of(object);
    let same = current["replicas"] == placed
        && current["readyReplicas"] == ready
        && current["observedGeneration"] == generation
        && current.get("rollout") == rollout.as_ref()
        && scheduled_first
        && scheduled.is_some_and(|c| c["status"] == status && c["message"] == message.as_str());
    if same {
        return;
    }
    let since = match scheduled {
        Some(c) if c["status"] == status => c["lastTransitionTime"].clone(),
        _ => json!(p.now.rfc3339),
    };
    // The scheduler owns these fields and the Scheduled condition; anything else in the
    // status (other conditions, other writers' fields) is kept as it is.
    let mut resource = Value::clone(&object.value);
    let mut conditions: Vec<Value> = current["conditions"].as_array().cloned().unwrap_or_default().into_iter().filter(|c| c["type"] != "Scheduled").collect();
    conditions.insert(0, json!({ "type": "Scheduled", "status": status, "reason": reason, "message": message, "lastTransitionTime": since }));
    if !resource["status"].is_object() {
        resource["status"] = json!({});
    }
    let owned = &mut resource["status"];
    owned["observedGeneration"] = json!(generation);
    owned["replicas"] = json!(placed);
    owned["readyReplicas"] = json!(ready);
    owned["conditions"] = Value::Array(conditions);
    match rollout {
        Some(rollout) => owned["rollout"] = rollout,
        None => drop(owned.as_object_mut().and_then(|o| o.remove("rollout"))),
    }
    p.plan.commands.push(Command::PutResource {
        key,
        resource,
        precondition: Precondition::ResourceVersion(object.resource_version),
        write: ResourceWrite::Status,
    });
}


/// What the rollout step decided for the Workload's status.
struct RolloutStep {
    /// The `status.rollout` to have (None: none yet).
    status: Option<Value>,
    /// Whether the Workload's status may be written in this plan (not after a rollback,
    /// which writes the whole Workload).
    status_write: bool,
    /// Replicas are being updated: no rebalancing meanwhile.
    active: bool,
}

/// Rolls a changed template (module, configuration, Model, limits) over the replicas: at most
/// `rollout.maxUnavailable` of them away from healthy at once, a replica counting as updated
/// only once it reports Running on its new module. When an updated replica fails (CrashLoop
/// or Failed) and `autoRollback` is on, the Workload's module and configuration go back to
/// what they were before, and the status says why.
#[allow(clippy::too_many_arguments)]
fn roll_out(
    namespace: &str,
    name: &str,
    object: &StoredObject,
    workload: &WorkloadSpec,
    settled: &[Existing],
    mut outdated: Vec<(Existing, AssignmentSpec)>,
    p: &mut Planning<'_>,
) -> RolloutStep {
    let live = p.live;
    let healthy = |e: &Existing| live.running.contains(&e.instance()) && live.digests.get(&e.instance()).is_none_or(|d| *d == e.spec.module_digest);
    let generation = generation_of(object);
    let current: Option<edgeplane_api::resources::RolloutStatus> = object.value["status"].get("rollout").and_then(|r| serde_json::from_value(r.clone()).ok());
    let replicas = (settled.len() + outdated.len()) as u32;
    let updated = settled.iter().filter(|e| healthy(e)).count() as u32;
    // The rollback's own rollout (the revision right after the one that failed) keeps saying
    // so until the next change.
    let after_rollback = current.as_ref().is_some_and(|c| c.phase == "RolledBack" && generation == c.revision + 1);

    // A rollout is under way. What it started from, for a rollback.
    let previous = match &current {
        Some(c) if c.revision == generation || after_rollback => c.previous.clone(),
        _ => outdated.first().map(|(e, _)| edgeplane_api::resources::PreviousRevision { module: e.spec.module_ref.clone(), config: e.spec.config.clone() }),
    };
    // A replica on the new revision that failed, or that has not come up within the health
    // gate since the scheduler last updated replicas.
    let gate_ms = workload.rollout.health_gate_seconds.saturating_mul(1000);
    let step_started = current.as_ref().filter(|c| c.revision == generation).map_or(p.now.unix_ms, |c| c.step_started_ms);
    let late = p.now.unix_ms.saturating_sub(step_started) > gate_ms;
    let failure = settled.iter().find_map(|e| match live.failed.get(&e.instance()) {
        Some(why) => Some((e.key.name.clone(), e.spec.node_name.clone(), why.clone())),
        None if late && !healthy(e) && live.is_ready(&e.spec.node_name) => Some((e.key.name.clone(), e.spec.node_name.clone(), format!("not Running {}s after its update", workload.rollout.health_gate_seconds))),
        None => None,
    });
    let in_rollout = !outdated.is_empty() || current.as_ref().is_some_and(|c| c.revision == generation && c.phase == "Progressing");
    let failure = failure.filter(|_| in_rollout);
    if let (Some((replica, node, why)), Some(previous), true, false) = (&failure, &previous, workload.rollout.auto_rollback, after_rollback) {
        // Back to the previous module and configuration: the next plans roll that out.
        let mut resource = Value::clone(&object.value);
        resource["spec"]["module"] = json!(previous.module);
        match &previous.config {
            Some(config) => resource["spec"]["config"] = json!(config),
            None => drop(resource["spec"].as_object_mut().and_then(|s| s.remove("config"))),
        }
        let message = format!("rolled back to {}: replica {replica} on {node} failed on revision {generation}: {why}", previous.module);
        let rollout = edgeplane_api::resources::RolloutStatus {
            revision: generation,
            phase: "RolledBack".to_owned(),
            updated,
            replicas,
            message,
            step_started_ms: step_started,
            previous: Some(previous.clone()),
        };
        resource["status"]["rollout"] = serde_json::to_value(&rollout).expect("serializable");
        let key = ObjectKey::new("workloads", namespace, name);
        p.plan.commands.push(Command::PutResource {
            key: key.clone(),
            resource: resource.clone(),
            precondition: Precondition::ResourceVersion(object.resource_version),
            write: ResourceWrite::Replace,
        });
        // Same transaction, right after the replace (whose precondition guards both).
        p.plan.commands.push(Command::PutResource { key, resource, precondition: Precondition::None, write: ResourceWrite::Status });
        return RolloutStep { status: None, status_write: false, active: true };
    }

    if outdated.is_empty() {
        let status = match current {
            Some(mut c) if (c.revision == generation && c.phase == "Progressing") || after_rollback => {
                c.updated = updated;
                c.replicas = replicas;
                if updated == replicas && !after_rollback {
                    c.phase = "Complete".to_owned();
                    c.message = format!("{updated} of {replicas} replicas run revision {generation}");
                }
                Some(c)
            }
            other => other,
        };
        let active = status.as_ref().is_some_and(|c| c.phase == "Progressing");
        return RolloutStep { status: status.map(|c| serde_json::to_value(c).expect("serializable")), status_write: true, active };
    }

    // Outdated replicas that are not healthy anyway are updated at once (that costs no
    // availability); healthy ones as far as the budget of unavailable replicas allows.
    let unavailable = settled.iter().filter(|e| !healthy(e)).count() as u32 + outdated.iter().filter(|(e, _)| !healthy(e)).count() as u32;
    let allowed = workload.rollout.max_unavailable.max(1).saturating_sub(unavailable) as usize;
    outdated.sort_by(|a, b| (healthy(&a.0), &a.0.key.name).cmp(&(healthy(&b.0), &b.0.key.name)));
    let broken = outdated.iter().filter(|(e, _)| !healthy(e)).count();
    let step_started = if broken + allowed > 0 { p.now.unix_ms } else { step_started };
    for (e, spec) in outdated.iter().take(broken + allowed) {
        p.plan.commands.push(Command::PutResource {
            key: e.key.clone(),
            resource: assignment(&e.key, spec, e.object.value.pointer(&format!("/metadata/annotations/{}", PLACED_BECAUSE.replace('/', "~1"))).and_then(Value::as_str)),
            precondition: Precondition::ResourceVersion(e.object.resource_version),
            write: ResourceWrite::Replace,
        });
    }
    let (phase, message) = match (&failure, after_rollback) {
        (_, true) => ("RolledBack".to_owned(), current.as_ref().map(|c| c.message.clone()).unwrap_or_default()),
        (Some((replica, node, why)), false) => ("Progressing".to_owned(), format!("replica {replica} on {node} fails on revision {generation}: {why}")),
        (None, false) => ("Progressing".to_owned(), format!("{updated} of {replicas} replicas updated, {} waiting", outdated.len())),
    };
    let revision = if after_rollback { current.as_ref().map_or(generation, |c| c.revision) } else { generation };
    let rollout = edgeplane_api::resources::RolloutStatus { revision, phase, updated, replicas, message, step_started_ms: step_started, previous };
    RolloutStep { status: Some(serde_json::to_value(rollout).expect("serializable")), status_write: true, active: true }
}

/// Counts, per reason, the nodes that cannot take a replica.
fn why_not(nodes: &BTreeMap<String, Node>, workload: &WorkloadSpec, live: &Liveness, template: &AssignmentSpec) -> BTreeMap<String, u32> {
    let mut reasons = BTreeMap::new();
    for node in nodes.values() {
        let reason = if let Some(m) = mismatch(node, workload) {
            m
        } else if !live.is_ready(&node.name) {
            "are not Ready (heartbeats missing)".to_owned()
        } else if node.spec.cordoned {
            "are cordoned".to_owned()
        } else if node.instances >= node.spec.capacity.instance_slots {
            "have no free instance slot".to_owned()
        } else if !fits(node, template) {
            "have insufficient memory".to_owned()
        } else {
            // Fits, but already holds a replica of this Workload.
            "already run a replica".to_owned()
        };
        *reasons.entry(reason).or_insert(0) += 1;
    }
    reasons
}

/// A status write when the node's `Ready` condition does not say what `live` says.
fn health_transition(key: &ObjectKey, object: &StoredObject, live: &Liveness, now: &str) -> Option<Command> {
    let health: Health = *live.health.get(&key.name)?;
    let (status, reason) = health.condition();
    let current = object.value.pointer("/status/conditions").and_then(Value::as_array).and_then(|c| c.iter().find(|c| c["type"] == "Ready"));
    if current.is_some_and(|c| c["status"] == status && c["reason"] == reason) {
        return None;
    }
    let message = match health {
        Health::Ready => "heartbeats arrive",
        Health::Suspect => "heartbeats missed; no new replicas are placed here",
        Health::Down => "no heartbeats for longer than the grace period; replicas are moved elsewhere",
    };
    let mut resource = Value::clone(&object.value);
    let mut conditions: Vec<Value> = current.map_or_else(Vec::new, |_| {
        object.value["status"]["conditions"].as_array().cloned().unwrap_or_default().into_iter().filter(|c| c["type"] != "Ready").collect()
    });
    conditions.push(json!({ "type": "Ready", "status": status, "reason": reason, "message": message, "lastTransitionTime": now }));
    resource["status"]["conditions"] = Value::Array(conditions);
    Some(Command::PutResource {
        key: key.clone(),
        resource,
        precondition: Precondition::ResourceVersion(object.resource_version),
        write: ResourceWrite::Status,
    })
}

/// The annotation on an Assignment saying why its replica is on its node.
pub const PLACED_BECAUSE: &str = "edgeplane.io/placed-because";

fn assignment(key: &ObjectKey, spec: &AssignmentSpec, because: Option<&str>) -> Value {
    let mut value = json!({
        "apiVersion": edgeplane_api::resources::API_VERSION,
        "kind": "Assignment",
        "metadata": {
            "name": key.name,
            "namespace": key.namespace,
            "labels": { NODE_LABEL: spec.node_name, "edgeplane.io/workload": spec.workload },
        },
        "spec": spec,
    });
    if let Some(because) = because {
        value["metadata"]["annotations"] = json!({ PLACED_BECAUSE: because });
    }
    value
}

/// Why `node` won, from the score's terms, before the replica is counted on it.
fn explain(nodes: &BTreeMap<String, Node>, want: &Want<'_>, node: &str, why: &str) -> String {
    let n = &nodes[node];
    let mut parts = vec![format!("{why}: {node} scored best")];
    if n.soft_taint {
        parts.push("only nodes with PreferNoSchedule taints fit".to_owned());
    }
    if !want.workload.placement.preferred_tiers.is_empty() {
        let rank = tier_rank(&want.workload.placement, n.spec.tier);
        let tier = format!("{:?}", n.spec.tier).to_lowercase();
        parts.push(if rank < want.workload.placement.preferred_tiers.len() { format!("tier {tier} (preference {})", rank + 1) } else { format!("tier {tier} (cloud fallback)") });
    }
    if let (Some(key), Some(domain)) = (&want.workload.placement.spread_by, want.domain(n)) {
        parts.push(format!("{} replica(s) already in {key}={domain}", want.in_domain(n)));
    }
    parts.push(format!("{} replica(s) of the workload and {} instance(s) there", want.peers.get(node).copied().unwrap_or(0), n.instances));
    if want.cached.contains(node) {
        parts.push("module already there".to_owned());
    }
    parts.join("; ")
}

fn delete(key: &ObjectKey, object: &StoredObject) -> Command {
    Command::Delete { key: key.clone(), precondition: Precondition::ResourceVersion(object.resource_version) }
}

fn typed<T: DeserializeOwned>(object: &StoredObject, pointer: &str) -> Option<T> {
    object.value.pointer(pointer).and_then(|v| T::deserialize(v).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: Now<'static> = Now { rfc3339: "2026-11-22T00:00:00Z", unix_ms: 1_795_305_600_000 };

    struct World {
        state: ClusterState,
        index: u64,
    }

    impl World {
        fn new() -> World {
            World { state: ClusterState::default(), index: 0 }
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
        let c = object.value["status"]["conditions"].as_array().and_then(|c| c.iter().find(|c| c["type"] == "Ready")).cloned().expect("Ready condition");
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

        // The node returns: the replica stays where it went (no thrashing).
        w.settle(&["a", "b"]);
        assert_eq!(w.assignments(), after);
        assert_eq!(ready_condition(&w, "a"), ("True".into(), "Heartbeating".into()));
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
}
