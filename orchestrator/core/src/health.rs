//! Node health from heartbeat silence. Pure: the leader measures how long each node has been
//! silent (heartbeats live in its memory, never in the log) and this decides what that means.
//!
//! A node is `Ready` while heartbeats arrive, `Suspect` after `suspect_after` of silence (it
//! keeps its replicas but gets no new ones) and `Down` after `down_after` (its replicas are
//! placed elsewhere once their Workload's `failurePolicy.lostAfterSeconds` has passed too).
//! Silence is counted from the later of the last heartbeat and the moment the leader took
//! over, so a new leader, which has heard nobody yet, gives every node a full grace period.
//!
//! Silence is all a partition leaves to go by. A node that died says more: the kernel closes
//! its connections, and the leader sees its heartbeat connection end. Such a node is
//! `Suspect` at once and `Down` once `down_after_disconnect` has passed without it being heard
//! from (a live node that lost a connection heartbeats again on a new one within moments).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

/// How finely planning tells down durations apart: whole seconds, the unit of a Workload's
/// `failurePolicy.lostAfterSeconds`.
pub const DOWN_FOR_RESOLUTION_MS: u64 = 1000;

/// When silence becomes suspicion, and suspicion a verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthPolicy {
    pub suspect_after_ms: u64,
    pub down_after_ms: u64,
    /// For a node whose heartbeat connections all closed: how long after the last closed,
    /// unheard from since, it is `Down`.
    pub down_after_disconnect_ms: u64,
}

impl HealthPolicy {
    /// One node's health, from its silence and, if all its heartbeat connections closed with
    /// nothing heard since, how long ago the last one closed. A `Down` node comes with how
    /// long it has been down: since whichever verdict came first.
    pub fn judge(&self, silent_ms: u64, disconnected_ms: Option<u64>) -> (Health, Option<u64>) {
        let down_for =
            [silent_ms.checked_sub(self.down_after_ms), disconnected_ms.and_then(|ms| ms.checked_sub(self.down_after_disconnect_ms))]
                .into_iter()
                .flatten()
                .max();
        let health = if down_for.is_some() {
            Health::Down
        } else if silent_ms >= self.suspect_after_ms || disconnected_ms.is_some() {
            Health::Suspect
        } else {
            Health::Ready
        };
        (health, down_for)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Health {
    Ready,
    Suspect,
    Down,
}

impl Health {
    /// The EdgeNode `Ready` condition for this health: (status, reason).
    pub fn condition(self) -> (&'static str, &'static str) {
        match self {
            Health::Ready => ("True", "Heartbeating"),
            Health::Suspect => ("Unknown", "HeartbeatsMissed"),
            Health::Down => ("False", "NodeDown"),
        }
    }
}

/// What the planner is told about the nodes: who may take new replicas, and who is down and
/// for how long.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Liveness {
    /// Each known node's health.
    pub health: BTreeMap<String, Health>,
    /// For `Down` nodes: milliseconds since they were declared down.
    pub down_for_ms: BTreeMap<String, u64>,
    /// (assignment `namespace/name`, node) pairs whose instance reports `CrashLoop`: only the
    /// node running the current copy can make it move.
    pub crash_looping: BTreeSet<(String, String)>,
    /// (assignment, node) pairs whose instance reports Running: what counts as available.
    pub running: BTreeSet<(String, String)>,
    /// The CPU each node reported in its last heartbeat.
    pub cpu_millis: BTreeMap<String, u32>,
    /// (assignment, node) pairs whose instance reports CrashLoop or Failed, with its message:
    /// what stops a rollout.
    pub failed: BTreeMap<(String, String), String>,
    /// The module each reported instance runs, by (assignment, node): a replica is updated
    /// once it runs the new module, not when its Assignment changed; and a node that runs a
    /// module has it (scoring prefers it).
    pub digests: BTreeMap<(String, String), String>,
}

impl Liveness {
    /// Every node in `ready` Ready, every other node unknown (kept, but given nothing new).
    pub fn ready<I: IntoIterator<Item = S>, S: Into<String>>(ready: I) -> Liveness {
        Liveness { health: ready.into_iter().map(|n| (n.into(), Health::Ready)).collect(), ..Liveness::default() }
    }

    /// Judges each node by its silence (ms since its last heartbeat, or since the leader took
    /// over if later) and, for those in `disconnected_ms`, by how long ago their last
    /// heartbeat connection closed with nothing heard since.
    pub fn assess(silence_ms: &BTreeMap<String, u64>, disconnected_ms: &BTreeMap<String, u64>, policy: HealthPolicy) -> Liveness {
        let mut liveness = Liveness::default();
        for (node, &silent) in silence_ms {
            let (health, down_for) = policy.judge(silent, disconnected_ms.get(node).copied());
            if let Some(down_for) = down_for {
                liveness.down_for_ms.insert(node.clone(), down_for);
            }
            liveness.health.insert(node.clone(), health);
        }
        liveness
    }

    /// A digest of everything planning depends on besides the state (whose applied index is
    /// `applied_index`): equal fingerprints plan the same. Down durations count in whole
    /// seconds (the unit of `lostAfterSeconds`) and reported CPU not at all (a tie-break), so
    /// that an idle cluster does not replan on every heartbeat.
    pub fn fingerprint(&self, applied_index: u64) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        applied_index.hash(&mut h);
        self.health.hash(&mut h);
        for (node, ms) in &self.down_for_ms {
            (node, ms / DOWN_FOR_RESOLUTION_MS).hash(&mut h);
        }
        self.crash_looping.hash(&mut h);
        self.running.hash(&mut h);
        self.failed.hash(&mut h);
        self.digests.hash(&mut h);
        h.finish()
    }

    pub fn is_ready(&self, node: &str) -> bool {
        self.health.get(node) == Some(&Health::Ready)
    }

    /// Whether `node` has been down for at least `ms`.
    pub fn down_at_least(&self, node: &str, ms: u64) -> bool {
        self.down_for_ms.get(node).is_some_and(|&down| down >= ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: HealthPolicy = HealthPolicy { suspect_after_ms: 1000, down_after_ms: 1500, down_after_disconnect_ms: 250 };

    fn ms(pairs: &[(&str, u64)]) -> BTreeMap<String, u64> {
        pairs.iter().map(|&(n, ms)| (n.to_owned(), ms)).collect()
    }

    #[test]
    fn silence_makes_suspects_then_down_nodes() {
        let silence = ms(&[("a", 10), ("b", 1000), ("c", 1499), ("d", 1500), ("e", 4000)]);
        let liveness = Liveness::assess(&silence, &BTreeMap::new(), POLICY);
        let health: Vec<Health> = liveness.health.values().copied().collect();
        assert_eq!(health, [Health::Ready, Health::Suspect, Health::Suspect, Health::Down, Health::Down]);
        assert_eq!(liveness.down_for_ms, [("d".to_owned(), 0), ("e".to_owned(), 2500)].into());
        assert!(liveness.is_ready("a") && !liveness.is_ready("b") && !liveness.is_ready("unknown"));
        assert!(liveness.down_at_least("e", 2500) && !liveness.down_at_least("e", 2501) && !liveness.down_at_least("a", 0));
    }

    #[test]
    fn a_closed_connection_makes_a_suspect_at_once_and_a_down_node_soon() {
        // a: just closed; b: closed 250 ms ago; c: closed long ago, silent longer still (down
        // since the earlier verdict); d: silent past the grace, connection still open.
        let silence = ms(&[("a", 300), ("b", 260), ("c", 5000), ("d", 1600), ("e", 10)]);
        let disconnected = ms(&[("a", 0), ("b", 250), ("c", 1000)]);
        let liveness = Liveness::assess(&silence, &disconnected, POLICY);
        let health: Vec<Health> = liveness.health.values().copied().collect();
        assert_eq!(health, [Health::Suspect, Health::Down, Health::Down, Health::Down, Health::Ready]);
        assert_eq!(liveness.down_for_ms, ms(&[("b", 0), ("c", 3500), ("d", 100)]));
    }
}
