//! Seeded, deterministic simulation of whole clusters of [`Engine`]s.
//!
//! The engines are the production ones; only the world around them is simulated: a network
//! that drops, duplicates, reorders and partitions messages, and crashes that lose every write
//! batch not yet persisted. Each run is a pure function of its seed (raft-rs's own election
//! randomness is switched off and replaced by tick jitter drawn from the seed), so a failure is
//! replayed exactly with `SIM_SEED=<seed>`.
//!
//! Checked after every step:
//! - at most one leader per term;
//! - a committed entry never changes (every node applies the same term at each index);
//! - every node's state at applied index `i` equals every other node's at `i` (so each node's
//!   applied sequence is a prefix of the others');
//! - a linearizable read (ReadIndex) sees every write acknowledged before it started;
//! - a request proposed more than once (as nodes do after a leader change) takes effect once.
//!
//! At the end the faults stop, and the cluster must converge: one leader, new writes commit,
//! all states equal, and every acknowledged write present on every node.
//!
//! `SIM_SEEDS=<n>` sets how many seeds each test runs (default 40).

use std::collections::{BTreeMap, BTreeSet};
use std::panic::{catch_unwind, AssertUnwindSafe};

use edgeplane_core::{Applied, Command, ObjectKey, Precondition};
use edgeplane_raft::engine::{AppliedEntry, Engine, EngineConfig, RequestId, SnapshotJob};
use edgeplane_raft::storage::LogState;
use raft::prelude::{Message, MessageType};

/// SplitMix64: tiny, fast, and the same on every platform and crate version.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn chance(&mut self, per_mille: u64) -> bool {
        self.next() % 1000 < per_mille
    }
}

#[derive(Debug, Clone, Copy)]
struct Faults {
    /// Chances per mille: of dropping a message, of delivering it twice.
    drop: u64,
    duplicate: u64,
    /// Chance per mille per Ready of crashing between staging a batch and persisting it.
    crash_mid_ready: u64,
}

struct SimNode {
    engine: Option<Engine>,
    /// What survives a crash: every batch persisted so far.
    disk: LogState,
    /// Partition group; messages cross only within a group.
    group: u8,
}

struct Envelope {
    message: Message,
}

/// A linearizable read in flight: the acknowledged writes it must see.
struct PendingRead {
    node: usize,
    must_see: Vec<(String, u64)>,
}

struct Sim {
    seed: u64,
    step: u64,
    rng: Rng,
    faults: Faults,
    nodes: Vec<SimNode>,
    network: Vec<Envelope>,
    config: EngineConfig,
    logger: slog::Logger,
    next_request: u128,
    /// Proposals waiting for their node to apply them: request -> (node, key, encoded command,
    /// the commit index it was issued at).
    proposals: BTreeMap<RequestId, (usize, String, Vec<u8>, u64)>,
    /// The one log index at which each request took effect; every node must agree.
    effective_index: BTreeMap<RequestId, u64>,
    /// Writes acknowledged to a client: key -> the highest log index acknowledged for it.
    /// Later reads must see that key at this resourceVersion or a newer one.
    acked: BTreeMap<String, u64>,
    next_value: u64,
    reads: BTreeMap<u64, PendingRead>,
    next_read: u64,
    /// Snapshot jobs being "built in the background", by node.
    snapshot_jobs: Vec<(usize, SnapshotJob)>,
    /// Reads confirmed by a quorum, waiting for their node to apply up to the read index.
    pending_serve: Vec<(usize, u64, PendingRead)>,
    // Invariant bookkeeping.
    leader_of_term: BTreeMap<u64, usize>,
    committed_term: BTreeMap<u64, u64>,
    digest_at: BTreeMap<u64, u64>,
    stats: Stats,
}

#[derive(Debug, Default, Clone, Copy)]
struct Stats {
    crashes: u64,
    crashes_mid_ready: u64,
    snapshots_restored: u64,
    snapshots_taken: u64,
    elections: u64,
    acked_writes: u64,
    reads_checked: u64,
    reproposals: u64,
}

impl std::ops::AddAssign for Stats {
    fn add_assign(&mut self, o: Stats) {
        self.crashes += o.crashes;
        self.crashes_mid_ready += o.crashes_mid_ready;
        self.snapshots_restored += o.snapshots_restored;
        self.snapshots_taken += o.snapshots_taken;
        self.elections += o.elections;
        self.acked_writes += o.acked_writes;
        self.reads_checked += o.reads_checked;
        self.reproposals += o.reproposals;
    }
}

const KIND: &str = "sim";

impl Sim {
    fn new(seed: u64, size: usize, faults: Faults) -> Sim {
        let voters: Vec<u64> = (1..=size as u64).collect();
        let mut config = EngineConfig::new(0, voters);
        config.election_ticks = 10;
        config.heartbeat_ticks = 2;
        // Small enough that snapshots, compaction and snapshot catch-up happen in every run.
        config.snapshot_every = 25;
        config.snapshot_trailing = 5;
        config.max_inflight_msgs = 16;
        config.randomized_election = false;
        let logger = slog::Logger::root(slog::Discard, slog::o!());
        let mut sim = Sim {
            seed,
            step: 0,
            rng: Rng(seed),
            faults,
            nodes: Vec::new(),
            network: Vec::new(),
            config,
            logger,
            next_request: 0,
            proposals: BTreeMap::new(),
            effective_index: BTreeMap::new(),
            acked: BTreeMap::new(),
            next_value: 0,
            reads: BTreeMap::new(),
            next_read: 0,
            pending_serve: Vec::new(),
            snapshot_jobs: Vec::new(),
            leader_of_term: BTreeMap::new(),
            committed_term: BTreeMap::new(),
            digest_at: BTreeMap::new(),
            stats: Stats::default(),
        };
        for i in 0..size {
            let engine = sim.boot(i, LogState::default());
            sim.nodes.push(SimNode { engine: Some(engine), disk: LogState::default(), group: 0 });
        }
        sim
    }

    fn boot(&self, index: usize, disk: LogState) -> Engine {
        let mut config = self.config.clone();
        config.id = index as u64 + 1;
        Engine::new(config, disk, &self.logger).unwrap_or_else(|e| self.fail(&format!("node {} cannot start: {e}", index + 1)))
    }

    fn fail(&self, what: &str) -> ! {
        panic!("seed {} step {}: {what}", self.seed, self.step)
    }

    fn up(&self) -> Vec<usize> {
        (0..self.nodes.len()).filter(|&i| self.nodes[i].engine.is_some()).collect()
    }

    fn leader(&self) -> Option<usize> {
        self.up().into_iter().find(|&i| self.nodes[i].engine.as_ref().is_some_and(Engine::is_leader))
    }

    /// One random action, then every node's Ready, then the invariants.
    fn random_step(&mut self) {
        self.step += 1;
        let roll = self.rng.below(1000);
        match roll {
            0..=499 => self.deliver_one(true),
            500..=699 => {
                let up = self.up();
                if !up.is_empty() {
                    let i = up[self.rng.below(up.len())];
                    self.nodes[i].engine.as_mut().expect("up").tick();
                }
            }
            700..=849 => self.propose_random(),
            850..=879 => self.repropose_random(),
            880..=939 => self.read_random(),
            940..=954 => self.repartition(),
            955..=964 => self.crash_random(),
            965..=974 => self.close_random_connection(),
            _ => self.restart_random(),
        }
        self.finish_snapshot_jobs(false);
        self.process_all_ready(true);
        self.serve_reads_now();
        self.check_leaders();
    }

    /// Completes background snapshot jobs: all of them, or (under faults) each with some
    /// chance, so that a job can race with a snapshot received from the leader.
    fn finish_snapshot_jobs(&mut self, all: bool) {
        let jobs = std::mem::take(&mut self.snapshot_jobs);
        for (node, job) in jobs {
            if !all && !self.rng.chance(300) {
                self.snapshot_jobs.push((node, job));
                continue;
            }
            if let Some(engine) = self.nodes[node].engine.as_mut() {
                if engine.install_snapshot(job.build()) {
                    self.stats.snapshots_taken += 1;
                }
            }
        }
    }

    fn deliver_one(&mut self, faulty: bool) {
        if self.network.is_empty() {
            return;
        }
        // Any in-flight message may go next: reordering.
        let i = self.rng.below(self.network.len());
        let envelope = self.network.swap_remove(i);
        let m = envelope.message;
        let (from, to) = (m.from as usize - 1, m.to as usize - 1);
        let cut = self.nodes[from].group != self.nodes[to].group;
        let dropped = cut || self.nodes[to].engine.is_none() || (faulty && self.rng.chance(self.faults.drop));
        if m.get_msg_type() == MessageType::MsgSnapshot {
            // The transport reports the fate of snapshots back to the sender.
            if let Some(sender) = self.nodes[from].engine.as_mut() {
                sender.report_snapshot(m.to, !dropped);
            }
        }
        if dropped {
            return;
        }
        if faulty && self.rng.chance(self.faults.duplicate) {
            self.network.push(Envelope { message: m.clone() });
        }
        self.nodes[to].engine.as_mut().expect("checked up").step(m);
    }

    fn propose_random(&mut self) {
        let up = self.up();
        if up.is_empty() {
            return;
        }
        let node = up[self.rng.below(up.len())];
        self.propose_at(node);
    }

    fn propose_at(&mut self, node: usize) -> Option<RequestId> {
        self.next_request += 1;
        self.next_value += 1;
        let id = RequestId(self.next_request);
        // Mostly fresh keys, sometimes overwrites, so that the state has history.
        let key = format!("k{}", self.rng.below(40));
        let value = self.next_value;
        let command =
            Command::Put { key: ObjectKey::new(KIND, "", key.clone()), value: serde_json::json!(value), precondition: Precondition::None };
        let engine = self.nodes[node].engine.as_mut()?;
        let encoded = command.encode();
        let issued_at = engine.commit_index();
        engine.propose(id, issued_at, encoded.clone()).ok()?;
        self.proposals.insert(id, (node, key, encoded, issued_at));
        Some(id)
    }

    /// Proposes a pending request again, as a node does when the leader changes.
    fn repropose_random(&mut self) {
        if self.proposals.is_empty() {
            return;
        }
        let pick = self.rng.below(self.proposals.len());
        let id = *self.proposals.keys().nth(pick).expect("in range");
        if self.repropose(id) {
            self.stats.reproposals += 1;
        }
    }

    /// Has the node that took request `id` propose it again, under the same id; false if
    /// that node is down.
    fn repropose(&mut self, id: RequestId) -> bool {
        let Some((node, _, encoded, issued_at)) = self.proposals.get(&id).cloned() else { return false };
        let Some(engine) = self.nodes[node].engine.as_mut() else { return false };
        let _ = engine.propose(id, issued_at, encoded);
        true
    }

    fn read_random(&mut self) {
        let up = self.up();
        if up.is_empty() {
            return;
        }
        let node = up[self.rng.below(up.len())];
        self.next_read += 1;
        let must_see = self.acked.iter().map(|(k, v)| (k.clone(), *v)).collect();
        self.reads.insert(self.next_read, PendingRead { node, must_see });
        self.nodes[node].engine.as_mut().expect("up").read_index(self.next_read.to_be_bytes().to_vec());
    }

    fn repartition(&mut self) {
        let n = self.nodes.len();
        for node in &mut self.nodes {
            node.group = 0;
        }
        match self.rng.below(4) {
            0 => {} // heal
            1 => {
                // Isolate the leader.
                if let Some(l) = self.leader() {
                    self.nodes[l].group = 1;
                }
            }
            _ => {
                // A random minority (and so a majority on the other side).
                let k = 1 + self.rng.below(n / 2);
                for _ in 0..k {
                    let i = self.rng.below(n);
                    self.nodes[i].group = 1;
                }
            }
        }
    }

    fn crash_random(&mut self) {
        let up = self.up();
        // Keep crashes from taking every node down at once; a quorum may still be lost.
        if up.len() <= 1 {
            return;
        }
        let node = up[self.rng.below(up.len())];
        self.crash(node);
    }

    /// A connection closes although both ends live (a reset, a restart of the proxy between
    /// them): the receiving node is told its peer's connection closed.
    fn close_random_connection(&mut self) {
        let up = self.up();
        if up.len() < 2 {
            return;
        }
        let node = up[self.rng.below(up.len())];
        let peer = (node + 1 + self.rng.below(self.nodes.len() - 1)) % self.nodes.len();
        self.nodes[node].engine.as_mut().expect("up").peer_closed(peer as u64 + 1);
    }

    fn crash(&mut self, node: usize) {
        self.nodes[node].engine = None;
        // The kernel closes the dead process's connections; each live peer sees its close, or
        // now and then does not (a close lost with a partition).
        for other in self.up() {
            if self.rng.chance(900) {
                self.nodes[other].engine.as_mut().expect("up").peer_closed(node as u64 + 1);
            }
        }
        self.stats.crashes += 1;
        // A job being built dies with its process.
        self.snapshot_jobs.retain(|(n, _)| *n != node);
        // Its waiting clients and reads are gone with it.
        self.proposals.retain(|_, (n, _, _, _)| *n != node);
        self.pending_serve.retain(|(n, _, _)| *n != node);
        self.reads.retain(|_, r| r.node != node);
    }

    fn restart_random(&mut self) {
        let down: Vec<usize> = (0..self.nodes.len()).filter(|&i| self.nodes[i].engine.is_none()).collect();
        if down.is_empty() {
            return;
        }
        let node = down[self.rng.below(down.len())];
        self.restart(node);
    }

    fn restart(&mut self, node: usize) {
        let engine = self.boot(node, self.nodes[node].disk.clone());
        self.nodes[node].engine = Some(engine);
        self.check_state_digest(node);
    }

    fn process_all_ready(&mut self, faulty: bool) {
        for node in 0..self.nodes.len() {
            // A Ready can produce another (e.g. a conf change); bound the loop defensively.
            for _ in 0..8 {
                let Some(engine) = self.nodes[node].engine.as_mut() else { break };
                let Some((early, batch, unpersisted)) = engine.begin_ready() else { break };
                self.send(early.messages);
                self.on_applied(node, early.applied, early.restored_snapshot.is_some());
                self.on_read_states(node, early.read_states);
                if faulty && self.rng.chance(self.faults.crash_mid_ready) {
                    // Crash before the fsync: the batch never reaches the disk.
                    drop(unpersisted);
                    self.stats.crashes_mid_ready += 1;
                    self.crash(node);
                    break;
                }
                self.nodes[node].disk.apply(&batch);
                let engine = self.nodes[node].engine.as_mut().expect("still up");
                let late = engine.finish_ready(unpersisted);
                if let Some(job) = late.snapshot_job {
                    // Built elsewhere in production: it comes back now or some steps later.
                    self.snapshot_jobs.push((node, job));
                }
                self.send(late.messages);
                self.on_applied(node, late.applied, false);
                self.on_read_states(node, late.read_states);
            }
        }
    }

    fn send(&mut self, messages: Vec<Message>) {
        self.network.extend(messages.into_iter().map(|message| Envelope { message }));
    }

    fn on_applied(&mut self, node: usize, applied: Vec<AppliedEntry>, restored: bool) {
        if restored {
            self.stats.snapshots_restored += 1;
            self.check_state_digest(node);
        }
        for entry in &applied {
            match self.committed_term.get(&entry.index) {
                Some(&term) if term != entry.term => self.fail(&format!(
                    "node {} applied index {} from term {}, but term {term} was committed there",
                    node + 1,
                    entry.index,
                    entry.term
                )),
                Some(_) => {}
                None => {
                    self.committed_term.insert(entry.index, entry.term);
                }
            }
            if let (Some(id), Some(_)) = (entry.request, &entry.outcome) {
                let first = *self.effective_index.entry(id).or_insert(entry.index);
                if first != entry.index {
                    self.fail(&format!(
                        "request {id:?} took effect at index {first} and again on node {} at index {}",
                        node + 1,
                        entry.index
                    ));
                }
            }
            if let Some(id) = entry.request {
                if let Some((proposer, key, _, _)) = self.proposals.get(&id).cloned() {
                    if proposer == node {
                        self.proposals.remove(&id);
                        if let Some(Ok(Applied::Put { object, .. })) = &entry.outcome {
                            if object.resource_version != entry.index {
                                self.fail(&format!("entry {} produced resourceVersion {}", entry.index, object.resource_version));
                            }
                            let acked = self.acked.entry(key).or_default();
                            *acked = (*acked).max(entry.index);
                            self.stats.acked_writes += 1;
                        }
                    }
                }
            }
        }
        if !applied.is_empty() {
            self.check_state_digest(node);
        }
    }

    fn on_read_states(&mut self, node: usize, read_states: Vec<raft::prelude::ReadState>) {
        for rs in read_states {
            let id = u64::from_be_bytes(rs.request_ctx.as_slice().try_into().expect("8-byte read context"));
            let Some(read) = self.reads.remove(&id) else { continue };
            if read.node != node {
                self.fail(&format!("read {id} of node {} completed on node {}", read.node + 1, node + 1));
            }
            // The node serves the read once it has applied the read index; the simulation
            // checks at the first moment that is true, which is when the state is oldest.
            self.pending_serve.push((node, rs.index, read));
        }
    }

    fn check_state_digest(&mut self, node: usize) {
        let Some(engine) = self.nodes[node].engine.as_ref() else { return };
        let state = engine.state();
        let (index, digest) = (state.applied_index(), state.digest());
        match self.digest_at.get(&index) {
            Some(&d) if d != digest => self.fail(&format!(
                "node {} at applied index {index} has a state that differs from another node's at the same index",
                node + 1
            )),
            Some(_) => {}
            None => {
                self.digest_at.insert(index, digest);
            }
        }
    }

    fn check_leaders(&mut self) {
        for i in self.up() {
            let engine = self.nodes[i].engine.as_ref().expect("up");
            if engine.is_leader() {
                let term = engine.term();
                match self.leader_of_term.get(&term) {
                    Some(&l) if l != i => self.fail(&format!("nodes {} and {} are both leader of term {term}", l + 1, i + 1)),
                    Some(_) => {}
                    None => {
                        self.stats.elections += 1;
                        self.leader_of_term.insert(term, i);
                    }
                }
            }
        }
    }
}

impl Sim {
    fn serve_reads_now(&mut self) {
        let pending = std::mem::take(&mut self.pending_serve);
        for (node, index, read) in pending {
            let Some(engine) = self.nodes[node].engine.as_ref() else { continue };
            let state = engine.state();
            if state.applied_index() < index {
                self.pending_serve.push((node, index, read));
                continue;
            }
            for (key, version) in &read.must_see {
                let seen = state.get(&ObjectKey::new(KIND, "", key.clone())).map(|o| o.resource_version);
                if seen.is_none_or(|v| v < *version) {
                    self.fail(&format!(
                        "linearizable read on node {} at index {index} saw {key} at resourceVersion {seen:?}, \
                         but a write of it at {version} was acknowledged before the read began",
                        node + 1
                    ));
                }
            }
            self.stats.reads_checked += 1;
        }
    }
}

impl Sim {
    /// Stops every fault, restarts every node and runs until the cluster has converged.
    fn converge(&mut self) {
        for node in &mut self.nodes {
            node.group = 0;
        }
        for i in 0..self.nodes.len() {
            if self.nodes[i].engine.is_none() {
                self.restart(i);
            }
        }
        // Elect a leader and let it commit a write of its own: proof of liveness.
        let mut final_write = None;
        for round in 0..20_000u64 {
            self.step += 1;
            for i in 0..self.nodes.len() {
                if round % 3 == 0 {
                    self.nodes[i].engine.as_mut().expect("all up").tick();
                }
            }
            while !self.network.is_empty() {
                self.deliver_one(false);
                self.process_all_ready(false);
            }
            self.finish_snapshot_jobs(true);
            self.process_all_ready(false);
            self.serve_reads_now();
            self.check_leaders();
            match final_write {
                None => final_write = self.leader().and_then(|l| self.propose_at(l)),
                // A proposal made to a leader that is deposed (one left over from a healed
                // partition) is lost; its node proposes it again, as a real node does.
                Some(id) if round % 60 == 59 => {
                    self.repropose(id);
                }
                Some(_) => {}
            }
            let done = final_write.is_some_and(|id| !self.proposals.contains_key(&id));
            if done && self.all_caught_up() {
                self.check_converged();
                return;
            }
        }
        self.fail(&format!(
            "the cluster did not converge once faults stopped: leader {:?}, applied {:?}",
            self.leader().map(|l| l + 1),
            self.nodes.iter().map(|n| n.engine.as_ref().map(|e| e.state().applied_index())).collect::<Vec<_>>()
        ));
    }

    fn all_caught_up(&self) -> bool {
        let applied: BTreeSet<u64> = self.nodes.iter().filter_map(|n| n.engine.as_ref()).map(|e| e.state().applied_index()).collect();
        let commits: BTreeSet<u64> = self.nodes.iter().filter_map(|n| n.engine.as_ref()).map(|e| e.status().commit_index).collect();
        applied.len() == 1 && commits.len() == 1 && applied == commits
    }

    fn check_converged(&self) {
        let digests: BTreeSet<u64> = self.nodes.iter().filter_map(|n| n.engine.as_ref()).map(|e| e.state().digest()).collect();
        if digests.len() != 1 {
            self.fail("nodes at the same applied index hold different states");
        }
        for (i, node) in self.nodes.iter().enumerate() {
            let state = node.engine.as_ref().expect("all up").state();
            for (key, version) in &self.acked {
                let seen = state.get(&ObjectKey::new(KIND, "", key.clone())).map(|o| o.resource_version);
                if seen.is_none_or(|v| v < *version) {
                    self.fail(&format!(
                        "acknowledged write of {key} at resourceVersion {version} is missing on node {} (it has {seen:?})",
                        i + 1
                    ));
                }
            }
        }
    }
}

const STEPS: u64 = 5_000;

fn run_seed(seed: u64, size: usize, faults: Faults) -> Stats {
    let mut sim = Sim::new(seed, size, faults);
    for _ in 0..STEPS {
        sim.random_step();
    }
    sim.converge();
    sim.stats
}

/// Runs many seeds (or the one in `SIM_SEED`), naming the seed of any failure.
fn run_many(name: &str, size: usize, faults: Faults, base: u64) -> Stats {
    let seeds: Vec<u64> = match std::env::var("SIM_SEED") {
        Ok(s) => vec![s.parse().expect("SIM_SEED must be an integer")],
        Err(_) => {
            let n: u64 = std::env::var("SIM_SEEDS").ok().and_then(|s| s.parse().ok()).unwrap_or(40);
            (0..n).map(|i| base + i).collect()
        }
    };
    let mut total = Stats::default();
    for seed in seeds {
        match catch_unwind(AssertUnwindSafe(|| run_seed(seed, size, faults))) {
            Ok(stats) => total += stats,
            Err(panic) => {
                eprintln!(
                    "\n{name}: seed {seed} failed. Replay it with:\n  SIM_SEED={seed} cargo test -p edgeplane-raft --test simulation {name}\n"
                );
                std::panic::resume_unwind(panic);
            }
        }
    }
    eprintln!("{name}: {total:?}");
    total
}

const FAULTY: Faults = Faults { drop: 50, duplicate: 20, crash_mid_ready: 2 };

/// The runs must actually exercise what they claim to; a simulation where nothing happens
/// would pass every invariant.
fn assert_exercised(stats: Stats, seeds_run_alone: bool) {
    if seeds_run_alone {
        return;
    }
    assert!(stats.elections > 0 && stats.acked_writes > 0, "nothing was elected or written: {stats:?}");
    assert!(stats.crashes > 0 && stats.crashes_mid_ready > 0, "no crashes were simulated: {stats:?}");
    assert!(stats.snapshots_taken > 0 && stats.snapshots_restored > 0, "no snapshot was taken and installed: {stats:?}");
    assert!(stats.reads_checked > 0, "no linearizable read was checked: {stats:?}");
    assert!(stats.reproposals > 0, "no request was proposed twice: {stats:?}");
}

#[test]
fn three_nodes_under_faults() {
    let stats = run_many("three_nodes_under_faults", 3, FAULTY, 1_000);
    assert_exercised(stats, std::env::var("SIM_SEED").is_ok());
}

#[test]
fn five_nodes_under_faults() {
    let stats = run_many("five_nodes_under_faults", 5, FAULTY, 5_000);
    assert_exercised(stats, std::env::var("SIM_SEED").is_ok());
}

#[test]
fn five_nodes_with_heavy_loss() {
    let faults = Faults { drop: 250, duplicate: 50, crash_mid_ready: 3 };
    let stats = run_many("five_nodes_with_heavy_loss", 5, faults, 9_000);
    assert_exercised(stats, std::env::var("SIM_SEED").is_ok());
}

/// The same seed must give the same run, or a printed seed would not replay the failure.
#[test]
fn a_seed_replays_exactly() {
    let a = run_seed(42, 3, FAULTY);
    let b = run_seed(42, 3, FAULTY);
    assert_eq!(format!("{a:?}"), format!("{b:?}"));
}

/// Delivers every message and handles every Ready, without a tick.
fn settle_without_ticks(sim: &mut Sim) {
    sim.process_all_ready(false);
    while !sim.network.is_empty() {
        sim.deliver_one(false);
        sim.process_all_ready(false);
    }
    sim.check_leaders();
}

const NO_FAULTS: Faults = Faults { drop: 0, duplicate: 0, crash_mid_ready: 0 };

/// A leader that dies closes its connections; its followers elect a new leader a tick later,
/// without waiting out an election timeout of 10 ticks.
#[test]
fn a_dead_leader_is_replaced_without_waiting_for_an_election_timeout() {
    for size in [3, 5] {
        let mut sim = Sim::new(7, size, NO_FAULTS);
        sim.converge();
        let old = sim.leader().expect("a leader after converging");
        let old_term = sim.nodes[old].engine.as_ref().expect("up").status().term;
        sim.nodes[old].engine = None;
        for other in sim.up() {
            sim.nodes[other].engine.as_mut().expect("up").peer_closed(old as u64 + 1);
        }
        // One tick each, where an election timeout is 10.
        for other in sim.up() {
            sim.nodes[other].engine.as_mut().expect("up").tick();
        }
        settle_without_ticks(&mut sim);
        let new = sim.leader().unwrap_or_else(|| panic!("{size} nodes: no leader a tick after node {} died", old + 1));
        assert_ne!(new, old);
        assert_eq!(sim.nodes[new].engine.as_ref().expect("up").status().term, old_term + 1, "{size} nodes: one election, not several");
        // And it commits.
        sim.restart(old);
        sim.converge();
    }
}

/// A connection from a leader that lives closes: the follower's pre-vote is refused and the
/// leader keeps leading in its term.
#[test]
fn a_closed_connection_from_a_live_leader_costs_no_election() {
    let mut sim = Sim::new(11, 3, NO_FAULTS);
    sim.converge();
    let leader = sim.leader().expect("a leader after converging");
    let term = sim.nodes[leader].engine.as_ref().expect("up").status().term;
    for follower in sim.up().into_iter().filter(|&i| i != leader) {
        sim.nodes[follower].engine.as_mut().expect("up").peer_closed(leader as u64 + 1);
        settle_without_ticks(&mut sim);
        // The leader's heartbeats bring the follower back.
        for _ in 0..sim.config.heartbeat_ticks {
            sim.nodes[leader].engine.as_mut().expect("up").tick();
        }
        settle_without_ticks(&mut sim);
        assert_eq!(sim.leader(), Some(leader), "node {} lost leadership to a closed connection", leader + 1);
        for node in sim.up() {
            let status = sim.nodes[node].engine.as_ref().expect("up").status();
            assert_eq!((status.term, status.leader_id), (term, Some(leader as u64 + 1)), "node {}", node + 1);
        }
    }
}
