//! The leader's memory of heartbeats. Heartbeats are frequent and stale within a second, so
//! they never go through Raft: the leader keeps the last one of each node here and judges
//! node health from their silence. A follower's memory stays empty.
//!
//! The locks here are held for map operations only, never across an await or IO (the
//! mini-redis pattern): a heartbeat costs one short critical section.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

use edgeplane_api::node::{Heartbeat, InstancePhase, NodeFigures, NodeLiveness};
use edgeplane_core::health::{HealthPolicy, Liveness};
use edgeplane_core::ClusterState;

#[derive(Debug)]
pub struct Heartbeats {
    nodes: Mutex<HashMap<String, (Instant, Heartbeat)>>,
    /// When this node last became leader: silence is counted from here at the earliest.
    leading_since: Mutex<Instant>,
    /// Whether this node led at the placement loop's last look (every 100 ms): heartbeats
    /// check it instead of asking the Raft actor each time.
    leading: AtomicBool,
}

impl Default for Heartbeats {
    fn default() -> Self {
        Heartbeats { nodes: Mutex::default(), leading_since: Mutex::new(Instant::now()), leading: AtomicBool::new(false) }
    }
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
    since_leading_ms: u64,
    /// Everything but the health verdicts.
    reports: Liveness,
}

impl Heartbeats {
    pub fn leading(&self) -> bool {
        self.leading.load(Ordering::Relaxed)
    }

    pub fn record(&self, name: &str, heartbeat: Heartbeat) {
        lock(&self.nodes).insert(name.to_owned(), (Instant::now(), heartbeat));
    }

    /// What the instances report and how long each node has been silent.
    pub fn observe(&self) -> Observed {
        let since_leading = lock(&self.leading_since).elapsed();
        let nodes = lock(&self.nodes);
        let silence = nodes.iter().map(|(n, (at, _))| (n.clone(), at.elapsed().min(since_leading).as_millis() as u64)).collect();
        let instances = || nodes.iter().flat_map(|(node, (_, h))| h.instances.iter().map(move |i| (node, i)));
        let with_phase = |phase| instances().filter(|(_, i)| i.phase == phase).map(|(n, i)| (i.assignment.clone(), n.clone())).collect();
        let reports = Liveness {
            crash_looping: with_phase(InstancePhase::CrashLoop),
            running: with_phase(InstancePhase::Running),
            cpu_millis: nodes.iter().map(|(n, (_, h))| (n.clone(), h.load.cpu_millis)).collect(),
            failed: instances()
                .filter(|(_, i)| matches!(i.phase, InstancePhase::CrashLoop | InstancePhase::Failed))
                .map(|(n, i)| ((i.assignment.clone(), n.clone()), i.message.clone().unwrap_or_else(|| format!("{:?}", i.phase))))
                .collect(),
            digests: instances().map(|(n, i)| ((i.assignment.clone(), n.clone()), i.module_digest.clone())).collect(),
            ..Liveness::default()
        };
        Observed { silence, since_leading_ms: since_leading.as_millis() as u64, reports }
    }

    pub fn get(&self, name: &str) -> Option<NodeLiveness> {
        lock(&self.nodes).get(name).map(|(at, heartbeat)| NodeLiveness {
            name: name.to_owned(),
            age_ms: at.elapsed().as_millis() as u64,
            heartbeat: heartbeat.clone(),
        })
    }

    /// Every node's last heartbeat figures, by name.
    pub fn figures(&self) -> Vec<NodeFigures> {
        let nodes = lock(&self.nodes);
        let mut figures: Vec<NodeFigures> = nodes
            .iter()
            .map(|(name, (at, h))| NodeFigures {
                name: name.clone(),
                age_ms: at.elapsed().as_millis() as u64,
                load: h.load.clone(),
                data: h.data.clone(),
            })
            .collect();
        drop(nodes);
        figures.sort_unstable_by(|a, b| a.name.cmp(&b.name));
        figures
    }

    /// Records a change of leadership. Either way the memory is cleared and the clock
    /// restarted: a leader that lost and regained leadership must not trust heartbeats it
    /// heard before (another leader may have had newer ones), and owes every node a full
    /// grace period.
    pub fn set_leading(&self, leading: bool) {
        lock(&self.nodes).clear();
        *lock(&self.leading_since) = Instant::now();
        self.leading.store(leading, Ordering::Relaxed);
    }
}

impl Observed {
    /// Judges every registered node: those never heard from this leader have been silent
    /// since it took over. Also returns each node's silence in ms (its heartbeat age).
    pub fn liveness(mut self, state: &ClusterState, policy: HealthPolicy) -> (Liveness, BTreeMap<String, u64>) {
        for (key, _) in state.list("edgenodes", Some("")) {
            self.silence.entry(key.name.clone()).or_insert(self.since_leading_ms);
        }
        let judged = Liveness::assess(&self.silence, policy);
        (Liveness { health: judged.health, down_for_ms: judged.down_for_ms, ..self.reports }, self.silence)
    }
}
