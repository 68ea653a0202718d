//! Rebalancing: once every Workload's pending replicas have had their turn, move at most one
//! replica of a settled Workload, and only for a clear gain: back to a preferred tier (the end
//! of a cloud offload), to a less crowded topology domain, or off a node with
//! [`REBALANCE_SKEW`] more instances than the target. At most `maxUnavailable` replicas are
//! ever away at once, and each gain narrows a gap without reversing it, so nothing moves back
//! and forth.

use super::nodes::{choose, explain, tier_rank, Ranking, Want};
use super::workload::{replica_count, Settled};
use super::{PlacementReason, Planning, REBALANCE_SKEW};

pub(super) fn move_one(s: &Settled, p: &mut Planning<'_>) {
    let workload = &s.workload;
    let unavailable = replica_count(workload).saturating_sub(s.ready);
    if p.rebalance_budget == 0 || unavailable + 1 > workload.rollout.max_unavailable.max(1) {
        return;
    }
    let mut want = Want::new(workload, &s.template, p.live);
    for (node, count) in &s.peers {
        for _ in 0..*count {
            want.add(&p.nodes, node);
        }
    }
    // The best target for each replica in turn, from one ranking of the nodes rather than
    // scoring every node for every replica. Taking a replica off its origin makes only the
    // origin's score better, and the origin is the one node the choice avoids; it is given
    // back before the next replica, so to the ranking every score stays what it was.
    let mut ranking = Ranking::new(&p.nodes, &s.matching, &want);
    for e in &s.replicas {
        let from = e.spec.node_name.as_str();
        let Some(origin) = p.nodes.get(from) else { continue };
        let origin_rank = tier_rank(&workload.placement, origin.spec.tier);
        want.remove(&p.nodes, from);
        let origin_domain = want.in_domain(origin);
        let target = match ranking.as_mut() {
            Some(ranking) => ranking.choose(&p.nodes, &want, Some(from)),
            None => choose(&p.nodes, &s.matching, &want, Some(from)),
        };
        // Counts without this replica: moving it takes one from the origin's side and adds
        // one to the target's, so a gap of 2 (domains) or REBALANCE_SKEW (instances) narrows
        // without flipping, and never calls for a move back.
        let better = target.as_ref().map(|t| &p.nodes[t]).is_some_and(|t| {
            tier_rank(&workload.placement, t.spec.tier) < origin_rank
                || origin_domain > want.in_domain(t)
                || origin.instances >= t.instances + REBALANCE_SKEW
        });
        let Some(target) = target.filter(|_| better) else {
            want.add(&p.nodes, from);
            continue;
        };
        p.release(from, &e.spec);
        p.remove(e);
        let because = explain(&p.nodes, &want, &target, &format!("rebalanced from {from}"));
        want.add(&p.nodes, &target);
        p.create(&s.namespace, e.key.name.clone(), e.spec.replica, target, &s.template, PlacementReason::Rebalance, &because);
        p.rebalance_budget -= 1;
        return;
    }
}
