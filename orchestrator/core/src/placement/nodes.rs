//! The nodes as the planner sees them: filter (may a node run a Workload, has it room), score
//! (which node is best for one more replica) and the words that explain both.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};

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
        .filter(|n| Some(n.name.as_str()) != avoid && eligible(n, want))
        .min_by_key(|n| score(n, want))
        .map(|n| n.name.clone())
}

/// Whether a node that matches may take one more replica now.
fn eligible(node: &Node, want: &Want<'_>) -> bool {
    node.ready && !node.spec.cordoned && fits(node, want.template)
}

/// A node's score for one more replica: lower is better (see [`choose`]). Names are unique,
/// so no two nodes score the same.
type Score<'n> = (bool, usize, u32, u32, u32, bool, u32, &'n str);

fn score<'n>(n: &'n Node, want: &Want<'_>) -> Score<'n> {
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
}

/// [`choose`] for many replicas of one Workload in a row, without scoring every node for each.
///
/// The matching nodes wait in a heap by the score they had when last scored. Placing a
/// replica only ever makes a score worse (the chosen node gains an instance, a replica of the
/// Workload and memory), so a node whose stored score is still current when it comes to the
/// top is the best: every other node scores at least what it stored. One that went stale is
/// scored again and put back; one that no longer fits leaves. Placing R replicas over N
/// nodes costs O((N + R) log N) instead of O(N R).
///
/// Spreading over topology domains (`spreadBy`) is the exception: a replica makes the score of
/// every node in its domain worse at once, which the heap would not see in time; for such a
/// Workload there is no ranking and [`choose`] scores every node.
pub(super) struct Ranking {
    heap: BinaryHeap<Reverse<(OwnedScore, String)>>,
}

/// A [`Score`] without its name (kept beside it).
type OwnedScore = (bool, usize, u32, u32, u32, bool, u32);

fn owned(score: Score<'_>) -> OwnedScore {
    let (a, b, c, d, e, f, g, _) = score;
    (a, b, c, d, e, f, g)
}

impl Ranking {
    pub fn new(nodes: &BTreeMap<String, Node>, matching: &BTreeSet<String>, want: &Want<'_>) -> Option<Ranking> {
        if want.workload.placement.spread_by.is_some() {
            return None;
        }
        let heap = matching
            .iter()
            .map(|n| &nodes[n])
            .filter(|n| eligible(n, want))
            .map(|n| Reverse((owned(score(n, want)), n.name.clone())))
            .collect();
        Some(Ranking { heap })
    }

    /// What [`choose`] would answer, given that since the last call scores only got worse.
    pub fn choose(&mut self, nodes: &BTreeMap<String, Node>, want: &Want<'_>, avoid: Option<&str>) -> Option<String> {
        let mut set_aside = None;
        let chosen = loop {
            let Some(Reverse((stored, name))) = self.heap.peek() else { break None };
            let node = &nodes[name];
            if !eligible(node, want) {
                self.heap.pop();
                continue;
            }
            let now = owned(score(node, want));
            if now != *stored {
                let name = self.heap.pop().map(|Reverse((_, name))| name).unwrap_or_default();
                self.heap.push(Reverse((now, name)));
                continue;
            }
            if Some(name.as_str()) == avoid {
                set_aside = self.heap.pop();
                continue;
            }
            break Some(name.clone());
        };
        self.heap.extend(set_aside);
        chosen
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A small deterministic generator (xorshift), so that a failure names its seed.
    struct Rng(u64);

    impl Rng {
        fn below(&mut self, n: u64) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0 % n
        }
    }

    fn random_node(i: u64, rng: &mut Rng) -> Node {
        let tier = ["edge", "gateway", "cloud"][rng.below(3) as usize];
        let taints = if rng.below(5) == 0 { json!([{"key": "k", "effect": "PreferNoSchedule"}]) } else { json!([]) };
        let spec: EdgeNodeSpec = serde_json::from_value(json!({"tier": tier, "taints": taints, "cordoned": rng.below(10) == 0,
            "capacity": {"memoryMib": 64 + rng.below(512), "instanceSlots": 1 + rng.below(8), "cpuMillis": 1000}}))
        .expect("node spec");
        Node {
            name: format!("n{i:03}"),
            labels: BTreeMap::new(),
            soft_taint: !spec.taints.is_empty(),
            spec,
            instances: rng.below(4) as u32,
            memory_mib: rng.below(64),
            ready: rng.below(8) != 0,
            cpu_millis: rng.below(4) as u32 * 100,
        }
    }

    /// Places replicas one after another as the planner does (the chosen node takes the
    /// replica), once scoring every node each time and once with a [`Ranking`]: both must
    /// choose the same nodes in the same order, avoided nodes and all. Then looks for a
    /// better node for each placed replica in turn, as rebalancing does.
    #[test]
    fn a_ranking_chooses_what_scoring_every_node_chooses() {
        for seed in 1..=300u64 {
            let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
            let mut nodes: BTreeMap<String, Node> =
                (0..1 + rng.below(40)).map(|i| random_node(i, &mut rng)).map(|n| (n.name.clone(), n)).collect();
            let matching: BTreeSet<String> = nodes.keys().filter(|_| rng.below(6) != 0).cloned().collect();
            let tiers = [json!([]), json!(["edge"]), json!(["gateway", "edge"])][rng.below(3) as usize].clone();
            let workload: WorkloadSpec = serde_json::from_value(json!({"module": "sha256:00", "replicas": 1,
                "placement": {"preferredTiers": tiers, "cloudFallback": true}, "resources": {"memoryMib": 1 + rng.below(48), "batchTimeMs": 50}}))
            .expect("workload spec");
            let template: AssignmentSpec = serde_json::from_value(json!({"workload": "w", "replica": 0, "nodeName": "", "generation": 1,
                "moduleRef": "m", "moduleDigest": "sha256:00", "resources": workload.resources}))
            .expect("assignment template");
            let mut live = Liveness::default();
            for name in nodes.keys().filter(|_| rng.below(4) == 0) {
                live.digests.insert((format!("f/w-{name}"), name.clone()), "sha256:00".to_owned());
            }
            let mut want = Want::new(&workload, &template, &live);
            let mut ranking = Ranking::new(&nodes, &matching, &want).expect("no spreading, so a ranking");
            for step in 0..1 + rng.below(60) {
                let avoid = if rng.below(3) == 0 { nodes.keys().nth(rng.below(nodes.len() as u64) as usize).cloned() } else { None };
                let expected = choose(&nodes, &matching, &want, avoid.as_deref());
                let got = ranking.choose(&nodes, &want, avoid.as_deref());
                assert_eq!(got, expected, "seed {seed}, replica {step} (avoiding {avoid:?})");
                let Some(chosen) = got else { break };
                want.add(&nodes, &chosen);
                let node = nodes.get_mut(&chosen).expect("chosen node");
                node.instances += 1;
                node.memory_mib += template.resources.memory_mib;
            }
            // Then as rebalancing asks, replica after replica: the best target for the one
            // on `from`, counted off `from` while the choice is made and given back after.
            let placed: Vec<String> = want.peers.iter().filter(|(_, &n)| n > 0).map(|(node, _)| node.clone()).collect();
            for (step, from) in placed.iter().cycle().take(2 * placed.len()).enumerate() {
                want.remove(&nodes, from);
                let expected = choose(&nodes, &matching, &want, Some(from));
                let got = ranking.choose(&nodes, &want, Some(from));
                assert_eq!(got, expected, "seed {seed}, rebalancing step {step} (from {from})");
                want.add(&nodes, from);
            }
        }
    }
}
