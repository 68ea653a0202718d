//! Planning one Workload: resolve its template, sort its replicas (keep, update, move,
//! remove), roll a changed template out, place what is missing, record its status.

use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;

use edgeplane_api::resources::{
    ArtifactKind, AssignedModel, AssignmentSpec, ModelSpec, ModuleSpec, RolloutPhase, RolloutStatus, SignedModule, WorkloadMode,
    WorkloadSpec,
};

use super::assignment::{generation_of, typed, Existing};
use super::nodes::{self, choose, explain, fits, why_not, Ranking, Want};
use super::{rollout, status, PlacementReason, Planning, Unplaced};
use crate::events::{EventType, Regarding};
use crate::{trust, ClusterState, ObjectKey, StoredObject};

/// The Workload being planned.
pub(super) struct Subject<'a> {
    pub namespace: &'a str,
    pub name: &'a str,
    pub object: &'a StoredObject,
    pub spec: &'a WorkloadSpec,
}

impl Subject<'_> {
    pub fn key(&self) -> ObjectKey {
        ObjectKey::new("workloads", self.namespace, self.name)
    }

    /// `namespace/name`, as unplaced replicas are reported.
    fn id(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// A replicated Workload whose replicas are all placed and unchanged in this plan: a candidate
/// for rebalancing once every Workload's pending replicas have had their turn.
pub(super) struct Settled {
    pub namespace: String,
    pub workload: WorkloadSpec,
    pub template: AssignmentSpec,
    pub replicas: Vec<Existing>,
    pub ready: u32,
    pub matching: Rc<BTreeSet<String>>,
    pub peers: BTreeMap<String, u32>,
}

/// A replica's place in its Workload: an index for replicated Workloads, a node for daemons.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Slot {
    Replica(u32),
    Node(String),
}

/// What sorting the existing replicas left.
#[derive(Default)]
struct Sorted {
    /// Slots that keep their replica.
    filled: BTreeSet<Slot>,
    /// Replicas moving off a node, which must not be placed back on it.
    avoid: BTreeMap<Slot, String>,
    /// Kept replicas already on the current template (candidates for rebalancing).
    settled: Vec<Existing>,
    /// Kept replicas a rollout has yet to update, with the spec they should have.
    outdated: Vec<(Existing, AssignmentSpec)>,
}

/// What placing the missing replicas came to.
struct Placed {
    missing: u32,
    /// Left for the next plan (the plan's placement budget ran out).
    deferred: u32,
    placed_now: u32,
    /// Why replicas stay pending, if some do.
    reason: Option<String>,
}

/// Plans one Workload; returns it if it is settled (a candidate for rebalancing).
pub(super) fn plan(
    state: &ClusterState,
    key: &ObjectKey,
    object: &StoredObject,
    existing: Vec<Existing>,
    p: &mut Planning<'_>,
) -> Option<Settled> {
    let spec: WorkloadSpec = typed(object, "/spec")?;
    let w = Subject { namespace: &key.namespace, name: &key.name, object, spec: &spec };
    let template = match resolve(state, w.namespace, w.name, w.spec) {
        Ok(t) => t,
        Err(reason) => {
            unresolved(&w, reason, p);
            return None;
        }
    };
    let live = p.live;
    let matching = p.matching(&spec, &template);
    let wanted = wanted_slots(&w, &matching, &existing, p);
    let mut want = Want::new(&spec, &template, live);
    for e in &existing {
        want.add(&p.nodes, &e.spec.node_name);
    }
    let sorted = sort_existing(&w, &template, existing, &matching, &wanted, &mut want, p);
    let Sorted { filled, avoid, settled, outdated } = sorted;
    let rollout = rollout::roll_out(&w, &settled, outdated, p);
    let placed = place_missing(&w, &template, &wanted, &filled, &avoid, &matching, &mut want, p);
    let ready = settled.iter().filter(|e| live.running.contains(&e.instance())).count() as u32;
    // With replicas left for the next plan, the status waits until there is a verdict.
    if placed.deferred == 0 && rollout.status_write {
        let observed = status::Observed {
            placed: wanted.len() as u32 - placed.missing - placed.deferred,
            ready,
            unplaced: placed.reason.as_deref(),
            rollout: rollout.status,
        };
        status::record(w.key(), object, observed, p);
    }
    if let Some(reason) = placed.reason {
        p.plan.unplaced.push(Unplaced { workload: w.id(), missing: placed.missing, reason });
    }
    let settled_now = placed.missing == 0 && placed.placed_now == 0 && !rollout.active && spec.mode == WorkloadMode::Replicated;
    let peers = want.peers;
    settled_now.then(|| Settled {
        namespace: key.namespace.clone(),
        workload: spec.clone(),
        template,
        replicas: settled,
        ready,
        matching,
        peers,
    })
}

/// The Workload's module or Model cannot be resolved: nothing is placed, and its status says
/// why (keeping any rollout it reported).
fn unresolved(w: &Subject<'_>, reason: String, p: &mut Planning<'_>) {
    p.plan.unplaced.push(Unplaced { workload: w.id(), missing: replica_count(w.spec), reason: reason.clone() });
    let rollout: Option<RolloutStatus> =
        w.object.value.get("status").and_then(|s| s.get("rollout")).and_then(|r| serde_json::from_value(r.clone()).ok());
    status::record(w.key(), w.object, status::Observed { placed: 0, ready: 0, unplaced: Some(&reason), rollout }, p);
}

/// Which replica slots are wanted: indices for replicated workloads, nodes for daemons
/// (Ready matching nodes, and matching nodes already running one that are not lost).
fn wanted_slots(w: &Subject<'_>, matching: &BTreeSet<String>, existing: &[Existing], p: &Planning<'_>) -> Vec<Slot> {
    let live = p.live;
    let lost_after_ms = w.spec.failure_policy.lost_after_seconds.saturating_mul(1000);
    match w.spec.mode {
        WorkloadMode::Replicated => (0..replica_count(w.spec)).map(Slot::Replica).collect(),
        WorkloadMode::Daemon => matching
            .iter()
            .filter(|n| !live.down_at_least(n, lost_after_ms) && (live.is_ready(n) || existing.iter().any(|e| &e.spec.node_name == *n)))
            .cloned()
            .map(Slot::Node)
            .collect(),
    }
}

/// Keeps each replica whose node still matches and whose slot is still wanted, and rewrites
/// the kept ones that the template changed; removes the rest. A replica whose node has been
/// down for `lostAfterSeconds`, or that crash-loops there, moves (is removed here and placed
/// again elsewhere) when another node fits; with nowhere to go it stays.
#[allow(clippy::too_many_arguments)]
fn sort_existing(
    w: &Subject<'_>,
    template: &AssignmentSpec,
    existing: Vec<Existing>,
    matching: &BTreeSet<String>,
    wanted: &[Slot],
    want: &mut Want<'_>,
    p: &mut Planning<'_>,
) -> Sorted {
    let live = p.live;
    let lost_after_ms = w.spec.failure_policy.lost_after_seconds.saturating_mul(1000);
    let generation = generation_of(w.object);
    let rollout: Option<RolloutStatus> =
        w.object.value.get("status").and_then(|s| s.get("rollout")).and_then(|r| serde_json::from_value(r.clone()).ok());
    let rolling = rollout.is_some_and(|r| r.phase == RolloutPhase::Progressing && r.revision == generation);
    let replicated = w.spec.mode == WorkloadMode::Replicated;
    let mut sorted = Sorted::default();
    for e in existing {
        let slot = if replicated { Slot::Replica(e.spec.replica) } else { Slot::Node(e.spec.node_name.clone()) };
        let node = e.spec.node_name.clone();
        let updated = AssignmentSpec {
            replica: e.spec.replica,
            node_name: node.clone(),
            generation: e.spec.generation,
            placed_at_ms: e.spec.placed_at_ms,
            previous: e.spec.previous.clone(),
            ..template.clone()
        };
        // During a rollout a crash loop is the rollout's to judge (rollback), and a replica on
        // an old template is about to be replaced anyway: neither is a reason to move.
        let crash_looping = !rolling && updated == e.spec && live.crash_looping.contains(&e.instance());
        let failing = live.down_at_least(&node, lost_after_ms) || crash_looping;
        // Fail over only to somewhere else that fits; with nowhere to go, the replica waits.
        let moving = failing && replicated && choose(&p.nodes, matching, want, Some(&node)).is_some();
        let keep = matching.contains(&node) && wanted.contains(&slot) && !sorted.filled.contains(&slot) && !moving
            // A daemon replica is named after its node; one found elsewhere is not ours to keep.
            && (replicated || e.key.name == daemon_name(w.name, &node));
        if moving {
            sorted.avoid.insert(slot.clone(), node.clone());
            if crash_looping {
                let note = format!("{} crash loops on {node}: moving it to another node", e.key.name);
                p.events.record(Regarding::object("Workload", &w.key(), &w.object.value), EventType::Warning, "CrashLoop", "Placing", note);
            }
        }
        if !keep {
            p.release(&node, &e.spec);
            want.remove(&p.nodes, &node);
            p.remove(&e);
            continue;
        }
        sorted.filled.insert(slot);
        if updated != e.spec {
            sorted.outdated.push((e, updated));
        } else {
            sorted.settled.push(e);
        }
    }
    sorted
}

/// Places each wanted slot that has no replica on the best node for it, within the plan's
/// placement budget; what cannot be placed is counted with the reasons.
#[allow(clippy::too_many_arguments)]
fn place_missing(
    w: &Subject<'_>,
    template: &AssignmentSpec,
    wanted: &[Slot],
    filled: &BTreeSet<Slot>,
    avoid: &BTreeMap<Slot, String>,
    matching: &BTreeSet<String>,
    want: &mut Want<'_>,
    p: &mut Planning<'_>,
) -> Placed {
    let live = p.live;
    let mut placed = Placed { missing: 0, deferred: 0, placed_now: 0, reason: None };
    let mut reasons: BTreeMap<String, u32> = BTreeMap::new();
    // Made at the first replica to place: most plans place none.
    let mut ranking: Option<Option<Ranking>> = None;
    for slot in wanted.iter().filter(|s| !filled.contains(*s)) {
        if p.placement_budget == 0 {
            placed.deferred += 1;
            p.plan.deferred += 1;
            continue;
        }
        let chosen = match slot {
            Slot::Node(node) => (live.is_ready(node) && fits(&p.nodes[node], template)).then(|| node.clone()),
            Slot::Replica(_) => {
                let avoid = avoid.get(slot).map(String::as_str);
                match ranking.get_or_insert_with(|| Ranking::new(&p.nodes, matching, want)) {
                    Some(ranking) => ranking.choose(&p.nodes, want, avoid),
                    None => choose(&p.nodes, matching, want, avoid),
                }
            }
        };
        let Some(node_name) = chosen else {
            placed.missing += 1;
            for (reason, count) in why_not(&p.nodes, w.spec, live, template) {
                *reasons.entry(reason).or_default() += count;
            }
            continue;
        };
        let (reason, why) =
            if avoid.contains_key(slot) { (PlacementReason::Failover, "failover") } else { (PlacementReason::NewReplica, "new replica") };
        let because = explain(&p.nodes, want, &node_name, why);
        want.add(&p.nodes, &node_name);
        placed.placed_now += 1;
        p.placement_budget -= 1;
        let (replica, object_name) = match slot {
            Slot::Replica(r) => (*r, format!("{}-{r}", w.name)),
            Slot::Node(n) => (0, daemon_name(w.name, n)),
        };
        p.create(w.namespace, object_name, replica, node_name, template, reason, &because);
    }
    placed.reason = (placed.missing > 0).then(|| nodes::unfit_summary(p.nodes.len(), &reasons));
    placed
}

fn daemon_name(workload: &str, node: &str) -> String {
    format!("{workload}-{node}")
}

/// Replicas a replicated Workload asks for; a daemon's count follows its nodes instead (0 here).
pub(super) fn replica_count(workload: &WorkloadSpec) -> u32 {
    match workload.mode {
        WorkloadMode::Replicated => workload.replicas.unwrap_or(1).clamp(0, i64::from(u32::MAX)) as u32,
        WorkloadMode::Daemon => 0,
    }
}

/// The Assignment spec every replica of the Workload shares, with references resolved, or
/// why they do not resolve.
pub(super) fn resolve(state: &ClusterState, namespace: &str, name: &str, workload: &WorkloadSpec) -> Result<AssignmentSpec, String> {
    let (module_digest, module) = match workload.module.strip_prefix("sha256:") {
        // By digest: the module pushed with that digest, if any, says who signed it.
        Some(_) => {
            let pushed = state
                .list("modules", Some(namespace))
                .filter_map(|(_, o)| typed::<ModuleSpec>(o, "/spec").map(|spec| (o, spec)))
                .find(|(_, spec)| spec.digest == workload.module)
                .and_then(|(o, spec)| Some((typed::<String>(o, "/metadata/name")?, spec)));
            (workload.module.clone(), pushed.map(|(object_name, spec)| (module_name(&object_name, &spec.version), spec)))
        }
        None => {
            let (module, version) =
                workload.module.split_once('@').ok_or_else(|| format!("module {:?} is not name@version", workload.module))?;
            let key = ObjectKey::new("modules", namespace, format!("{module}.{version}"));
            let spec: ModuleSpec = state
                .get(&key)
                .and_then(|o| typed(o, "/spec"))
                .ok_or_else(|| format!("module {module}@{version} is not in the registry (edgectl module push)"))?;
            (spec.digest.clone(), Some((module.to_owned(), spec)))
        }
    };
    let module_signature = match &module {
        Some((module, spec)) => {
            let what = format!("module {module}@{}", spec.version);
            trust::admit(state, namespace, ArtifactKind::Module, &what, spec.signature.as_ref())?;
            spec.signature.clone().map(|signature| SignedModule { name: module.clone(), version: spec.version.clone(), signature })
        }
        None => {
            trust::admit(state, namespace, ArtifactKind::Module, &format!("module {}", workload.module), None)?;
            None
        }
    };
    let model = match &workload.model_ref {
        None => None,
        Some(model) => {
            let spec: ModelSpec = state
                .get(&ObjectKey::new("models", namespace, model))
                .and_then(|o| typed(o, "/spec"))
                .ok_or_else(|| format!("model {model} does not exist"))?;
            // Only model files are signed; parameters are data in the Model itself.
            if let Some(artifact) = &spec.artifact {
                let what = format!("model {model}@{}", spec.version);
                trust::admit(state, namespace, ArtifactKind::Model, &what, artifact.signature.as_ref())?;
            }
            Some(AssignedModel {
                name: model.clone(),
                version: spec.version,
                format: spec.format,
                parameters: spec.parameters,
                artifact: spec.artifact,
            })
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
        module_signature,
        resources: workload.resources.clone(),
        inputs: workload.inputs.clone(),
        outputs: workload.outputs.clone(),
        config: workload.config.clone(),
        model,
        failure_policy: workload.failure_policy.clone(),
        previous: Vec::new(),
    })
}

/// A module's name from its object name (`{name}.{version}`, as the registry stores it).
fn module_name(object_name: &str, version: &str) -> String {
    object_name.strip_suffix(version).and_then(|n| n.strip_suffix('.')).unwrap_or(object_name).to_owned()
}
