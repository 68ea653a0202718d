//! The nodes as the planner sees them: filter (may a node run a Workload, has it room), score
//! (which node is best for one more replica) and the words that explain both.

use std::collections::{BTreeMap, BTreeSet};

use edgeplane_api::resources::{inference_capability, AssignmentSpec, EdgeNodeSpec, Placement, TaintEffect, Tier, WorkloadSpec};

use super::assignment::typed;
use super::{Liveness, HEADROOM_PERCENT};
use crate::ClusterState;

/// One EdgeNode's facts for this plan.
pub(super) struct Node {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub spec: EdgeNodeSpec,
    /// Instances and memory already assigned (including this plan's placements).
    pub instances: u32,
    pub memory_mib: u64,
    /// Looked up once per plan rather than once per candidate replica.
    pub ready: bool,
    pub cpu_millis: u32,
    pub soft_taint: bool,
}

/// Every readable EdgeNode, with nothing assigned yet.
pub(super) fn collect(state: &ClusterState, live: &Liveness) -> BTreeMap<String, Node> {
    state
        .list("edgenodes", Some(""))
        .filter_map(|(key, object)| {
            let spec: EdgeNodeSpec = typed(object, "/spec")?;
            let node = Node {
                name: key.name.clone(),
                labels: typed(object, "/metadata/labels").unwrap_or_default(),
                ready: live.is_ready(&key.name),
                cpu_millis: live.cpu_millis.get(&key.name).copied().unwrap_or(0),
                soft_taint: spec.taints.iter().any(|t| t.effect == TaintEffect::PreferNoSchedule),
                spec,
                instances: 0,
                memory_mib: 0,
            };
            Some((key.name.clone(), node))
        })
        .collect()
}

/// Replicas of one Workload per node and per topology domain, and the nodes that have its
/// module: what a node's score needs, kept up to date as the plan places and moves replicas.
pub(super) struct Want<'a> {
    pub workload: &'a WorkloadSpec,
    pub template: &'a AssignmentSpec,
    pub peers: BTreeMap<String, u32>,
    /// Replicas per value of the `spreadBy` label ("" for nodes without it).
    domains: BTreeMap<String, u32>,
    cached: BTreeSet<&'a str>,
}

impl<'a> Want<'a> {
    pub fn new(workload: &'a WorkloadSpec, template: &'a AssignmentSpec, live: &'a Liveness) -> Want<'a> {
        let cached =
            live.digests.iter().filter(|(_, digest)| **digest == template.module_digest).map(|((_, node), _)| node.as_str()).collect();
        Want { workload, template, peers: BTreeMap::new(), domains: BTreeMap::new(), cached }
    }

    pub fn domain<'n>(&self, node: &'n Node) -> Option<&'n str> {
        let key = self.workload.placement.spread_by.as_ref()?;
        Some(node.labels.get(key).map_or("", String::as_str))
    }

    pub fn add(&mut self, nodes: &BTreeMap<String, Node>, node: &str) {
        *self.peers.entry(node.to_owned()).or_default() += 1;
        if let Some(domain) = nodes.get(node).and_then(|n| self.domain(n)) {
            *self.domains.entry(domain.to_owned()).or_default() += 1;
        }
    }

    pub fn remove(&mut self, nodes: &BTreeMap<String, Node>, node: &str) {
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
    pub fn in_domain(&self, node: &Node) -> u32 {
        self.domain(node).and_then(|d| self.domains.get(d)).copied().unwrap_or(0)
    }
}

/// Whether the node may run the Workload at all (not whether it has room now).
pub(super) fn matches(node: &Node, workload: &WorkloadSpec, template: &AssignmentSpec) -> bool {
    mismatch(node, workload, template).is_none()
}

/// Why the node may not run the Workload, in words for `edgectl describe`.
fn mismatch(node: &Node, workload: &WorkloadSpec, template: &AssignmentSpec) -> Option<String> {
    let placement = &workload.placement;
    if let Some((k, v)) = placement.node_selector.iter().find(|(k, v)| node.labels.get(*k) != Some(*v)) {
        return Some(format!("do not have label {k}={v}"));
    }
    if let Some(c) = placement.required_capabilities.iter().find(|c| !node.spec.capabilities.contains(c)) {
        return Some(format!("lack capability {c}"));
    }
    // A model file runs only where a backend that loaded it at push is.
    if let Some((model, artifact)) = template.model.as_ref().and_then(|m| Some((m, m.artifact.as_ref()?))) {
        if !artifact.backends.iter().any(|b| node.spec.capabilities.contains(&inference_capability(b))) {
            return Some(format!("have no inference backend that runs model {} ({})", model.name, artifact.backends.join(" or ")));
        }
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
pub(super) fn fits(node: &Node, template: &AssignmentSpec) -> bool {
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
pub(super) fn choose(nodes: &BTreeMap<String, Node>, matching: &BTreeSet<String>, want: &Want<'_>, avoid: Option<&str>) -> Option<String> {
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
pub(super) fn tier_rank(placement: &Placement, tier: Tier) -> usize {
    placement.preferred_tiers.iter().position(|t| *t == tier).unwrap_or(placement.preferred_tiers.len())
}

/// Counts, per reason, the nodes that cannot take a replica.
pub(super) fn why_not(
    nodes: &BTreeMap<String, Node>,
    workload: &WorkloadSpec,
    live: &Liveness,
    template: &AssignmentSpec,
) -> BTreeMap<String, u32> {
    let mut reasons = BTreeMap::new();
    for node in nodes.values() {
        let reason = if let Some(m) = mismatch(node, workload, template) {
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

/// "0/N nodes fit: ..." from the reasons counted over several replicas.
pub(super) fn unfit_summary(total: usize, reasons: &BTreeMap<String, u32>) -> String {
    let why = reasons.iter().map(|(r, c)| format!("{c} {r}")).collect::<Vec<_>>().join(", ");
    if why.is_empty() {
        format!("0/{total} nodes fit")
    } else {
        format!("0/{total} nodes fit: {why}")
    }
}

/// Why `node` won, from the score's terms, before the replica is counted on it.
pub(super) fn explain(nodes: &BTreeMap<String, Node>, want: &Want<'_>, node: &str, why: &str) -> String {
    let n = &nodes[node];
    let mut parts = vec![format!("{why}: {node} scored best")];
    if n.soft_taint {
        parts.push("only nodes with PreferNoSchedule taints fit".to_owned());
    }
    let placement = &want.workload.placement;
    if !placement.preferred_tiers.is_empty() {
        let rank = tier_rank(placement, n.spec.tier);
        let tier = format!("{:?}", n.spec.tier).to_lowercase();
        parts.push(if rank < placement.preferred_tiers.len() {
            format!("tier {tier} (preference {})", rank + 1)
        } else {
            format!("tier {tier} (cloud fallback)")
        });
    }
    if let (Some(key), Some(domain)) = (&placement.spread_by, want.domain(n)) {
        parts.push(format!("{} replica(s) already in {key}={domain}", want.in_domain(n)));
    }
    parts.push(format!("{} replica(s) of the workload and {} instance(s) there", want.peers.get(node).copied().unwrap_or(0), n.instances));
    if want.cached.contains(node) {
        parts.push("module already there".to_owned());
    }
    parts.join("; ")
}
