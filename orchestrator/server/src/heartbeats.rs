//! The leader's memory of heartbeats. Heartbeats are frequent and stale within a second, so
//! they never go through Raft: the leader keeps the last one of each node here and judges
//! node health from their silence. A follower's memory stays empty.
//!
//! It also knows which connections each node's heartbeats came on. A node whose every such
//! connection has closed (the kernel closes a dead process's sockets) and that has not been
//! heard from since is judged on that, without waiting out the silence a partition needs.
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
    nodes: Mutex<HashMap<String, NodeRecord>>,
    /// The term this node leads in and since when (silence is counted from then at the
    /// earliest); `None` while it does not lead.
    leadership: Mutex<(Option<u64>, Instant)>,
    /// Whether this node leads, as last seen by the placement loop (every 100 ms) or a
    /// heartbeat: heartbeats check it instead of asking the Raft actor each time.
    leading: AtomicBool,
}

impl Default for Heartbeats {
    fn default() -> Self {
        Heartbeats { nodes: Mutex::default(), leadership: Mutex::new((None, Instant::now())), leading: AtomicBool::new(false) }
    }
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
        let mut nodes = lock(&self.nodes);
        let record = nodes.entry(name.to_owned()).or_insert_with(|| NodeRecord {
            at: now,
            heartbeat: Heartbeat::default(),
            connections: Vec::new(),
            disconnected_at: None,
        });
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
        let mut nodes = lock(&self.nodes);
        // Gone if leadership changed meanwhile: that memory was cleared, this is stale.
        let Some(record) = nodes.get_mut(name) else { return };
        let before = record.connections.len();
        record.connections.retain(|&c| c != id);
        if before > 0 && record.connections.is_empty() {
            tracing::info!(node = name, "the node's last heartbeat connection closed; it is suspect until heard from");
            record.disconnected_at = Some(Instant::now());
        }
    }

    /// What the instances report and how long each node has been silent.
    pub fn observe(&self) -> Observed {
        let since_leading = lock(&self.leadership).1.elapsed();
        let nodes = lock(&self.nodes);
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
        lock(&self.nodes).get(name).map(|r| NodeLiveness {
            name: name.to_owned(),
            age_ms: r.at.elapsed().as_millis() as u64,
            heartbeat: r.heartbeat.clone(),
        })
    }

    /// Every node's last heartbeat figures, by name.
    pub fn figures(&self) -> Vec<NodeFigures> {
        let nodes = lock(&self.nodes);
        let mut figures: Vec<NodeFigures> = nodes
            .iter()
            .map(|(name, r)| NodeFigures {
                name: name.clone(),
                age_ms: r.at.elapsed().as_millis() as u64,
                load: r.heartbeat.load.clone(),
                data: r.heartbeat.data.clone(),
            })
            .collect();
        drop(nodes);
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
            lock(&self.nodes).clear();
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
