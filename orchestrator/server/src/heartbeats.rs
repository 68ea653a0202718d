//! The leader's memory of heartbeats. Heartbeats are frequent and stale within a second, so
//! they never go through Raft: the leader keeps the last one of each node here and judges
//! node health from their silence. A follower's memory stays empty.
//!
//! It also knows which connections each node's heartbeats came on. A node whose every such
//! connection has closed (the kernel closes a dead process's sockets) and that has not been
//! heard from since is judged on that, without waiting out the silence a partition needs.
//!
//! The placement loop looks every 100 ms, but most looks find nothing new: each node's verdict
//! is kept beside its heartbeat, and [`Heartbeats::look`] recomputes the verdicts in one pass
//! that allocates nothing. Only when a verdict or an instance report changed does the loop
//! pay for the full [`Heartbeats::observe`] (maps of every node, sorted), and otherwise once a
//! second. That keeps the leader's cost per heartbeat flat as the fleet grows.
//!
//! The locks here are held for map operations only, never across an await or IO (the
//! mini-redis pattern): a heartbeat costs one short critical section.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

use edgeplane_api::node::{Heartbeat, InstancePhase, NodeFigures, NodeLiveness};
use edgeplane_core::health::{Health, HealthPolicy, Liveness, DOWN_FOR_RESOLUTION_MS};
use edgeplane_core::ClusterState;

#[derive(Debug)]
pub struct Heartbeats {
    memory: Mutex<Memory>,
    /// The term this node leads in and since when (silence is counted from then at the
    /// earliest); `None` while it does not lead.
    leadership: Mutex<(Option<u64>, Instant)>,
    /// Whether this node leads, as last seen by the placement loop (every 100 ms) or a
    /// heartbeat: heartbeats check it instead of asking the Raft actor each time.
    leading: AtomicBool,
}

impl Default for Heartbeats {
    fn default() -> Self {
        Heartbeats { memory: Mutex::default(), leadership: Mutex::new((None, Instant::now())), leading: AtomicBool::new(false) }
    }
}

#[derive(Debug, Default)]
struct Memory {
    nodes: HashMap<String, NodeRecord>,
    /// Whether a node was first heard from, or reported different instances, since the last
    /// [`Heartbeats::look`].
    reports_changed: bool,
    /// The verdict on registered nodes never heard from (silent since leadership began), at
    /// the last look.
    unheard: Option<Verdict>,
}

/// A node's health as planning tells it apart: for a `Down` node, with the whole seconds it
/// has been down (what the [`Liveness::fingerprint`] counts).
type Verdict = (Health, Option<u64>);

fn verdict(policy: &HealthPolicy, silent_ms: u64, disconnected_ms: Option<u64>) -> Verdict {
    let (health, down_for_ms) = policy.judge(silent_ms, disconnected_ms);
    (health, down_for_ms.map(|ms| ms / DOWN_FOR_RESOLUTION_MS))
}

#[derive(Debug)]
struct NodeRecord {
    /// When the last heartbeat arrived.
    at: Instant,
    heartbeat: Heartbeat,
    /// The open connections (server connection ids) heartbeats of this node came on. A
    /// node sends on one or two; a short list beats a set.
    connections: Vec<u64>,
    /// When the last of `connections` closed, if no heartbeat came since.
    disconnected_at: Option<Instant>,
    /// The verdict at the last look; `None` before the first.
    verdict: Option<Verdict>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Nothing panics while holding these locks; a poisoned one still holds consistent data.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// What the planner needs from the heartbeats at one instant.
#[derive(Debug)]
pub struct Observed {
    /// Each node heard from: ms since its last heartbeat, or since this leader took over.
    silence: BTreeMap<String, u64>,
    /// Nodes whose heartbeat connections all closed and that were not heard from since: ms
    /// since the last one closed.
    disconnected: BTreeMap<String, u64>,
    since_leading_ms: u64,
    /// Everything but the health verdicts.
    reports: Liveness,
}

impl Heartbeats {
    pub fn leading(&self) -> bool {
        self.leading.load(Ordering::Relaxed)
    }

    /// Keeps `heartbeat` as node `name`'s latest, which came on connection `via` (`None`
    /// when unknown). Returns whether `via` is new for this node: the caller then calls
    /// [`Heartbeats::connection_closed`] once it closes.
    pub fn record(&self, name: &str, heartbeat: Heartbeat, via: Option<u64>) -> bool {
        let now = Instant::now();
        let mut memory = lock(&self.memory);
        let memory = &mut *memory;
        // A lookup by `&str` first: the name is allocated only for a node heard the first time.
        let record = match memory.nodes.get_mut(name) {
            Some(record) => {
                memory.reports_changed |= record.heartbeat.instances != heartbeat.instances;
                record
            }
            None => {
                memory.reports_changed = true;
                memory.nodes.entry(name.to_owned()).or_insert_with(|| NodeRecord {
                    at: now,
                    heartbeat: Heartbeat::default(),
                    connections: Vec::new(),
                    disconnected_at: None,
                    verdict: None,
                })
            }
        };
        record.at = now;
        record.heartbeat = heartbeat;
        record.disconnected_at = None;
        match via {
            Some(id) if !record.connections.contains(&id) => {
                record.connections.push(id);
                true
            }
            _ => false,
        }
    }

    /// Connection `id`, which carried heartbeats of node `name`, closed. If it was the
    /// node's last, the node counts as disconnected until it is heard from again.
    pub fn connection_closed(&self, name: &str, id: u64) {
        let mut memory = lock(&self.memory);
        // Gone if leadership changed meanwhile: that memory was cleared, this is stale.
        let Some(record) = memory.nodes.get_mut(name) else { return };
        let before = record.connections.len();
        record.connections.retain(|&c| c != id);
        if before > 0 && record.connections.is_empty() {
            tracing::info!(node = name, "the node's last heartbeat connection closed; it is suspect until heard from");
            record.disconnected_at = Some(Instant::now());
        }
    }

    /// Whether anything planning depends on changed since the last look: a node's verdict
    /// (its health, or the whole seconds it has been down), that of the nodes never heard
    /// from, or what the instances report. One pass over the nodes that allocates nothing;
    /// CPU figures alone count as no change (they only break ties).
    pub fn look(&self, policy: &HealthPolicy) -> bool {
        let since_leading = lock(&self.leadership).1.elapsed();
        let mut memory = lock(&self.memory);
        let memory = &mut *memory;
        let mut changed = std::mem::take(&mut memory.reports_changed);
        for record in memory.nodes.values_mut() {
            let silent = record.at.elapsed().min(since_leading).as_millis() as u64;
            let now = Some(verdict(policy, silent, record.disconnected_at.map(|at| at.elapsed().as_millis() as u64)));
            changed |= record.verdict != now;
            record.verdict = now;
        }
        let unheard = Some(verdict(policy, since_leading.as_millis() as u64, None));
        changed |= memory.unheard != unheard;
        memory.unheard = unheard;
        changed
    }

    /// What the instances report and how long each node has been silent.
    pub fn observe(&self) -> Observed {
        let since_leading = lock(&self.leadership).1.elapsed();
        let memory = lock(&self.memory);
        let nodes = &memory.nodes;
        let silence = nodes.iter().map(|(n, r)| (n.clone(), r.at.elapsed().min(since_leading).as_millis() as u64)).collect();
        let disconnected =
            nodes.iter().filter_map(|(n, r)| r.disconnected_at.map(|at| (n.clone(), at.elapsed().as_millis() as u64))).collect();
        let instances = || nodes.iter().flat_map(|(node, r)| r.heartbeat.instances.iter().map(move |i| (node, i)));
        let with_phase = |phase| instances().filter(|(_, i)| i.phase == phase).map(|(n, i)| (i.assignment.clone(), n.clone())).collect();
        let reports = Liveness {
            crash_looping: with_phase(InstancePhase::CrashLoop),
            running: with_phase(InstancePhase::Running),
            cpu_millis: nodes.iter().map(|(n, r)| (n.clone(), r.heartbeat.load.cpu_millis)).collect(),
            failed: instances()
                .filter(|(_, i)| matches!(i.phase, InstancePhase::CrashLoop | InstancePhase::Failed))
                .map(|(n, i)| ((i.assignment.clone(), n.clone()), i.message.clone().unwrap_or_else(|| format!("{:?}", i.phase))))
                .collect(),
            digests: instances().map(|(n, i)| ((i.assignment.clone(), n.clone()), i.module_digest.clone())).collect(),
            ..Liveness::default()
        };
        Observed { silence, disconnected, since_leading_ms: since_leading.as_millis() as u64, reports }
    }

    pub fn get(&self, name: &str) -> Option<NodeLiveness> {
        lock(&self.memory).nodes.get(name).map(|r| NodeLiveness {
            name: name.to_owned(),
            age_ms: r.at.elapsed().as_millis() as u64,
            heartbeat: r.heartbeat.clone(),
        })
    }

    /// Every node's last heartbeat figures, by name.
    pub fn figures(&self) -> Vec<NodeFigures> {
        let memory = lock(&self.memory);
        let mut figures: Vec<NodeFigures> = memory
            .nodes
            .iter()
            .map(|(name, r)| NodeFigures {
                name: name.clone(),
                age_ms: r.at.elapsed().as_millis() as u64,
                load: r.heartbeat.load.clone(),
                data: r.heartbeat.data.clone(),
            })
            .collect();
        drop(memory);
        figures.sort_unstable_by(|a, b| a.name.cmp(&b.name));
        figures
    }

    /// Records the term this node leads in (`None`: it does not lead), as the placement loop
    /// or a heartbeat saw it, whichever first. On a change the memory is cleared and the clock
    /// restarted: a leader that lost and regained leadership must not trust heartbeats it
    /// heard before (another leader may have had newer ones), and owes every node a full
    /// grace period. Heartbeats taken in the same term are kept, however late the placement
    /// loop looks.
    pub fn set_leading(&self, term: Option<u64>) {
        let mut leadership = lock(&self.leadership);
        if leadership.0 != term {
            *lock(&self.memory) = Memory::default();
            *leadership = (term, Instant::now());
            self.leading.store(term.is_some(), Ordering::Relaxed);
        }
    }
}

impl Observed {
    /// Judges every registered node: those never heard from this leader have been silent
    /// since it took over. Also returns each node's silence in ms (its heartbeat age).
    pub fn liveness(mut self, state: &ClusterState, policy: HealthPolicy) -> (Liveness, BTreeMap<String, u64>) {
        for (key, _) in state.list("edgenodes", Some("")) {
            self.silence.entry(key.name.clone()).or_insert(self.since_leading_ms);
        }
        let judged = Liveness::assess(&self.silence, &self.disconnected, policy);
        (Liveness { health: judged.health, down_for_ms: judged.down_for_ms, ..self.reports }, self.silence)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: HealthPolicy = HealthPolicy { suspect_after_ms: 30, down_after_ms: 60_000, down_after_disconnect_ms: 60_000 };

    fn running(assignment: &str) -> Heartbeat {
        let report = serde_json::json!({"assignment": assignment, "generation": 1, "moduleDigest": "sha256:00", "phase": "Running",
            "restarts": 0, "batchesOk": 0, "batchesFailed": 0, "reconfigurations": 0, "memoryBytes": 0, "queueDepth": 0});
        Heartbeat { instances: vec![serde_json::from_value(report).expect("an instance report")], ..Heartbeat::default() }
    }

    /// The cheap look says "changed" exactly when planning would see something new: a node
    /// first heard, other instances reported, a verdict moved (here: silence past
    /// suspicion, then a closed connection). Repeated heartbeats alike say nothing.
    #[test]
    fn a_look_tells_whether_a_verdict_or_a_report_changed() {
        let heartbeats = Heartbeats::default();
        heartbeats.set_leading(Some(1));
        assert!(heartbeats.look(&POLICY), "the first look sees the verdict on unheard nodes");
        assert!(!heartbeats.look(&POLICY), "nothing happened since");
        assert!(heartbeats.record("a", running("ns/w-0"), Some(7)));
        assert!(heartbeats.look(&POLICY), "a node first heard");
        heartbeats.record("a", running("ns/w-0"), Some(7));
        assert!(!heartbeats.look(&POLICY), "the same report again");
        heartbeats.record("a", running("ns/w-1"), Some(7));
        assert!(heartbeats.look(&POLICY), "another instance reported");
        // Past `suspect_after_ms` of silence, the node is Suspect.
        std::thread::sleep(std::time::Duration::from_millis(80));
        assert!(heartbeats.look(&POLICY), "silence made the node Suspect");
        assert!(!heartbeats.look(&POLICY), "still Suspect");
        heartbeats.record("a", running("ns/w-1"), Some(7));
        assert!(heartbeats.look(&POLICY), "heard again: Ready");
        heartbeats.connection_closed("a", 7);
        assert!(heartbeats.look(&POLICY), "its last connection closed: Suspect at once");
    }
}
