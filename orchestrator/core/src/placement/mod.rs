//! The placement planner: from the replicated state and what the leader knows of the nodes
//! ([`Liveness`]), the writes that make every Workload's Assignments match it. Pure: no clock,
//! no IO; the leader's placement loop feeds it and proposes its output.
//!
//! Level-triggered and idempotent: planning again on the state its own writes produced yields
//! nothing. Every write carries a precondition on what it read (create-only, or the exact
//! resourceVersion), so a plan made from a state that has since moved on is refused whole and
//! simply made again.
//!
//! [`plan`] reads as its table of contents:
//! 1. [`node_health`]: each EdgeNode's `Ready` condition says what the leader's liveness says.
//! 2. Inventory: every Assignment, by Workload, counted against its node's room.
//! 3. [`workload`], for each Workload: resolve its module and Model into the Assignment
//!    template; keep, update, move (failover) or remove its replicas; roll a changed template
//!    over them ([`rollout`]); place the missing ones on the best nodes ([`nodes`]); write its
//!    status ([`status`]).
//! 4. [`rebalance`]: with what the budgets leave, move a replica of a Workload whose replicas
//!    all run, where that clearly helps.
//! 5. Remove the Assignments of Workloads that no longer exist.

mod assignment;
mod node_health;
mod nodes;
mod rebalance;
mod rollout;
mod status;
mod workload;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::rc::Rc;

use edgeplane_api::resources::{AssignmentSpec, PreviousPlacement, WorkloadSpec, MAX_PREVIOUS_PLACEMENTS};

pub use crate::health::Liveness;
pub use assignment::PLACED_BECAUSE;

use crate::events::{EventType, Events, Regarding};
use crate::{ClusterState, Command, ObjectKey, Precondition, ResourceWrite, StoredObject};
use assignment::Existing;
use nodes::Node;

/// A node is never filled above this share of its memory capacity.
pub const HEADROOM_PERCENT: u64 = 90;
/// Nodes of one instance count more than another's that a replica moves to even them out.
/// A move narrows the gap by two, so a gap of 3 never turns into a move back.
pub const REBALANCE_SKEW: u32 = 3;
/// Rebalancing moves in one plan, over all Workloads.
pub const REBALANCE_PER_PLAN: u32 = 4;
/// New placements in one plan: a plan is one Raft entry, and an entry of many megabytes
/// stalls the leader long enough to lose its leadership. The rest waits for the next plan.
pub const PLACEMENTS_PER_PLAN: u32 = 1_000;

/// What the planner wants done.
#[derive(Debug, Default, PartialEq)]
pub struct Plan {
    /// Writes to propose together, each with a precondition.
    pub commands: Vec<Command>,
    /// Workloads with replicas that could not be placed, and why.
    pub unplaced: Vec<Unplaced>,
    /// Replicas this plan places, by why (for `edgeplane_scheduler_placements_total`).
    pub placements: BTreeMap<PlacementReason, u32>,
    /// Replicas left for the next plan because this one spent its placement budget
    /// ([`PLACEMENTS_PER_PLAN`]): once this plan is applied, planning again places more.
    pub deferred: u32,
    /// The earliest time (Unix ms) at which planning again on the same state and liveness
    /// may plan something else: a rollout's health gate ending. The clock is the planner's
    /// only input besides those two; `None` when nothing waits on it.
    pub revisit_at_ms: Option<u64>,
}

/// Why a replica is placed: a slot no replica fills, a replica moved off a node that is down
/// or where it crash loops, or one moved to even out the nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PlacementReason {
    NewReplica,
    Failover,
    Rebalance,
}

impl PlacementReason {
    pub const ALL: [PlacementReason; 3] = [PlacementReason::NewReplica, PlacementReason::Failover, PlacementReason::Rebalance];

    /// The metric label value.
    pub fn as_str(self) -> &'static str {
        match self {
            PlacementReason::NewReplica => "new_replica",
            PlacementReason::Failover => "failover",
            PlacementReason::Rebalance => "rebalance",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Unplaced {
    /// `namespace/name` of the Workload.
    pub workload: String,
    pub missing: u32,
    pub reason: String,
}

/// The leader's clock, read before planning (planning itself reads no clock).
#[derive(Debug, Clone, Copy)]
pub struct Now<'a> {
    /// Recorded as creation and transition times.
    pub rfc3339: &'a str,
    /// Recorded as `placedAtMs` on new placements.
    pub unix_ms: u64,
}

/// Why a Workload's replicas cannot be placed whatever the nodes: its module or Model does not
/// exist. `None` when both resolve. (What the API warns about when such a Workload is written.)
pub fn unresolved(state: &ClusterState, namespace: &str, name: &str, workload: &edgeplane_api::resources::WorkloadSpec) -> Option<String> {
    workload::resolve(state, namespace, name, workload).err()
}

/// Plans placements. Only Ready nodes in `live` receive new replicas; replicas on Down nodes
/// move. `now` is recorded on new Assignments and condition transitions.
pub fn plan(state: &ClusterState, live: &Liveness, now: Now<'_>) -> Plan {
    let mut p = Planning::new(state, live, now);
    node_health::record_transitions(state, &mut p);
    let mut by_workload = p.take_inventory(state);
    let mut settled = Vec::new();
    for (key, object) in state.list("workloads", None) {
        let existing = by_workload.remove(&(key.namespace.clone(), key.name.clone())).unwrap_or_default();
        settled.extend(workload::plan(state, key, object, existing, &mut p));
    }
    for workload in &settled {
        rebalance::move_one(workload, &mut p);
    }
    for orphan in by_workload.into_values().flatten() {
        p.remove(&orphan);
    }
    // Events are recorded only beside the changes they explain, so a plan with nothing to
    // do records none and planning again stays idempotent.
    let mut plan = p.plan;
    plan.commands.extend(p.events.commands(state, now.rfc3339));
    plan
}

/// What planning one Workload shares with the others: the nodes' bookkeeping, the next
/// generation to hand out, what is left of the budgets, and the plan so far.
struct Planning<'a> {
    state: &'a ClusterState,
    nodes: BTreeMap<String, Node>,
    live: &'a Liveness,
    now: Now<'a>,
    next_generation: u64,
    /// Rebalancing moves left in this plan.
    rebalance_budget: u32,
    /// New placements left in this plan.
    placement_budget: u32,
    /// Where the Assignments this plan deletes were placed, so that a replica moved in the
    /// same plan remembers them.
    removed: BTreeMap<ObjectKey, Vec<PreviousPlacement>>,
    plan: Plan,
    /// What this plan records as Events.
    events: Events,
    /// The nodes that match each placement (by its constraints, as JSON) seen in this plan:
    /// Workloads alike share one set instead of each scanning and copying every node.
    matching: HashMap<String, Rc<BTreeSet<String>>>,
}

impl<'a> Planning<'a> {
    fn new(state: &'a ClusterState, live: &'a Liveness, now: Now<'a>) -> Planning<'a> {
        Planning {
            state,
            nodes: nodes::collect(state, live),
            live,
            now,
            next_generation: 0,
            rebalance_budget: REBALANCE_PER_PLAN,
            placement_budget: PLACEMENTS_PER_PLAN,
            removed: BTreeMap::new(),
            plan: Plan::default(),
            events: Events::default(),
            matching: HashMap::new(),
        }
    }

    /// The nodes that may run a Workload with this spec and template at all (whether they
    /// have room is another matter). What decides it, the placement and the backends its
    /// Model's file runs on, is the same for many Workloads, and nodes do not change within a
    /// plan, so each such set is made once.
    fn matching(&mut self, spec: &WorkloadSpec, template: &AssignmentSpec) -> Rc<BTreeSet<String>> {
        let backends = template.model.as_ref().and_then(|m| m.artifact.as_ref()).map(|a| &a.backends);
        let key = serde_json::to_string(&(&spec.placement, backends)).unwrap_or_default();
        let nodes = &self.nodes;
        Rc::clone(
            self.matching
                .entry(key)
                .or_insert_with(|| Rc::new(nodes.values().filter(|n| nodes::matches(n, spec, template)).map(|n| n.name.clone()).collect())),
        )
    }

    /// Every Assignment by (namespace, Workload), each counted against its node's room. An
    /// object that does not read as an Assignment is removed (only this planner writes them).
    /// Sets the next generation above every live one and above the log index planned at, so
    /// no two live copies share one and a replica's new copy outranks the copy it replaces.
    fn take_inventory(&mut self, state: &ClusterState) -> BTreeMap<(String, String), Vec<Existing>> {
        let mut by_workload: BTreeMap<(String, String), Vec<Existing>> = BTreeMap::new();
        for (key, object) in state.list("assignments", None) {
            let Some(existing) = Existing::read(key, object) else {
                self.plan.commands.push(assignment::delete(key, object));
                continue;
            };
            self.take(&existing.spec.node_name, &existing.spec);
            by_workload.entry((key.namespace.clone(), existing.spec.workload.clone())).or_default().push(existing);
        }
        let live_max = by_workload.values().flatten().map(|e| e.spec.generation).max().unwrap_or(0);
        self.next_generation = state.applied_index().max(live_max) + 1;
        by_workload
    }

    /// Counts a replica against its node's instance slots and memory.
    fn take(&mut self, node: &str, spec: &AssignmentSpec) {
        if let Some(n) = self.nodes.get_mut(node) {
            n.instances += 1;
            n.memory_mib += spec.resources.memory_mib;
        }
    }

    fn release(&mut self, node: &str, spec: &AssignmentSpec) {
        if let Some(n) = self.nodes.get_mut(node) {
            n.instances = n.instances.saturating_sub(1);
            n.memory_mib = n.memory_mib.saturating_sub(spec.resources.memory_mib);
        }
    }

    /// Deletes an Assignment (if unchanged since it was read).
    fn remove(&mut self, existing: &Existing) {
        let here = PreviousPlacement { generation: existing.spec.generation, node_name: existing.spec.node_name.clone() };
        let mut previous: Vec<PreviousPlacement> = std::iter::once(here).chain(existing.spec.previous.iter().cloned()).collect();
        previous.truncate(MAX_PREVIOUS_PLACEMENTS);
        self.removed.insert(existing.key.clone(), previous);
        self.plan.commands.push(assignment::delete(&existing.key, &existing.object));
    }

    /// Creates the Assignment `name` on `node` with a fresh generation. `because` says why
    /// the replica goes there (kept on the Assignment for `describe`).
    #[allow(clippy::too_many_arguments)]
    fn create(
        &mut self,
        namespace: &str,
        name: String,
        replica: u32,
        node: String,
        template: &AssignmentSpec,
        reason: PlacementReason,
        because: &str,
    ) {
        self.take(&node, template);
        *self.plan.placements.entry(reason).or_default() += 1;
        let (event_reason, type_) = match reason {
            PlacementReason::NewReplica => ("Scheduled", EventType::Normal),
            PlacementReason::Failover => ("FailedOver", EventType::Warning),
            PlacementReason::Rebalance => ("Rebalanced", EventType::Normal),
        };
        let key = ObjectKey::new("assignments", namespace, name);
        let generation = self.next_generation;
        self.next_generation += 1;
        let regarding = self.workload(namespace, &template.workload);
        let note = format!("placed {} on {node} (generation {generation}): {because}", key.name);
        self.events.record(regarding, type_, event_reason, "Placing", note);
        let previous = self.removed.remove(&key).unwrap_or_default();
        let spec = AssignmentSpec { replica, node_name: node, generation, placed_at_ms: self.now.unix_ms, previous, ..template.clone() };
        self.plan.commands.push(Command::PutResource {
            resource: assignment::render(&key, &spec, Some(because)),
            key,
            precondition: Precondition::MustNotExist,
            write: ResourceWrite::Create { created_at: self.now.rfc3339.to_owned() },
        });
    }

    /// The Workload `namespace/name`, as Events name it.
    fn workload(&self, namespace: &str, name: &str) -> Regarding {
        let key = ObjectKey::new("workloads", namespace, name);
        let uid = self.state.get(&key).and_then(|o| o.value.pointer("/metadata/uid")).and_then(serde_json::Value::as_str);
        Regarding { kind: "Workload", namespace: namespace.to_owned(), name: name.to_owned(), uid: uid.map(str::to_owned) }
    }

    /// A status write of `object`, if it was not changed since it was read.
    fn write_status(&mut self, key: ObjectKey, object: &StoredObject, resource: serde_json::Value) {
        self.plan.commands.push(Command::PutResource {
            key,
            resource,
            precondition: Precondition::ResourceVersion(object.resource_version),
            write: ResourceWrite::Status,
        });
    }
}

#[cfg(test)]
mod tests;
