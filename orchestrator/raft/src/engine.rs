//! The replication engine: a raft-rs `RawNode`, its log and the state machine, with no IO.
//!
//! The engine decides; its caller acts. Handling a Ready is split in two around the one thing
//! that must happen outside: making the write batch durable.
//!
//! ```text
//!   begin_ready() -> (ReadyOutput, WriteBatch, Unpersisted)   send output.messages now,
//!        |                                                    persist the batch (fsync),
//!   finish_ready(Unpersisted) -> ReadyOutput                  then send these messages.
//! ```
//!
//! The tokio node actor ([`crate::node`]) persists to the segment log on a blocking thread between the two;
//! the deterministic simulation persists to memory, or crashes in between to lose the batch.
//! Both run this same code, so the simulation tests what production runs.

use std::collections::HashMap;

use edgeplane_core::{Applied, ApplyError, ClusterState, RequestTag};
use protobuf::Message as _;
use raft::prelude::*;
use raft::{StateRole, INVALID_ID};

use crate::storage::{LogState, LogStore, WriteBatch};

/// Identifies a client request across the cluster, carried in the log entry's context so that
/// the node that accepted a proposal can recognise it when it applies (proposals are matched
/// by id, never by position: a forwarded or re-ordered proposal still finds its caller).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestId(pub u128);

impl RequestId {
    /// Unique across the cluster and across restarts: the node's id, a per-process nonce
    /// and a counter.
    pub fn new(origin: RequestOrigin, counter: u64) -> RequestId {
        RequestId((u128::from(origin.0) << 64) | u128::from(counter))
    }
}

/// The high half of every request id (and read context) a process issues: node id in the
/// top 16 bits, a boot nonce below. Two processes never share one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestOrigin(pub u64);

impl RequestOrigin {
    /// Node ids are validated to fit in 16 bits.
    pub fn new(node_id: u64, boot_nonce: u64) -> RequestOrigin {
        RequestOrigin((node_id << 48) | (boot_nonce & 0xFFFF_FFFF_FFFF))
    }
}

/// Entry context: request id (16 bytes) and the commit index it was issued at (8 bytes).
fn encode_context(id: RequestId, issued_at: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(24);
    out.extend_from_slice(&id.0.to_be_bytes());
    out.extend_from_slice(&issued_at.to_be_bytes());
    out
}

fn decode_context(context: &[u8]) -> Option<RequestTag> {
    let bytes: &[u8; 24] = context.try_into().ok()?;
    let id = u128::from_be_bytes(bytes[..16].try_into().ok()?);
    let issued_at = u64::from_be_bytes(bytes[16..].try_into().ok()?);
    Some(RequestTag { id, issued_at })
}

/// Tuning of one engine. Ticks are abstract: the caller decides how long one is.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub id: u64,
    /// All voters of a new cluster; ignored once the log records a configuration.
    pub voters: Vec<u64>,
    /// Ticks without hearing from a leader before a follower campaigns (randomised up to 2x).
    pub election_ticks: usize,
    pub heartbeat_ticks: usize,
    /// Take a snapshot (and compact the log) every this many applied entries...
    pub snapshot_every: u64,
    /// ...or once the entries applied since the last one hold this many bytes, whichever
    /// comes first: the uncompacted log lives in memory, and a few large entries (uploads of
    /// megabytes) must not make it grow without bound.
    pub snapshot_bytes: u64,
    /// Entries kept behind a snapshot so that slightly lagging followers need no snapshot...
    pub snapshot_trailing: u64,
    /// ...as long as they hold at most this many bytes.
    pub snapshot_trailing_bytes: u64,
    pub max_size_per_msg: u64,
    pub max_inflight_msgs: usize,
    /// Bytes of uncommitted entries a leader accepts before refusing proposals.
    pub max_uncommitted_size: u64,
    /// Whether raft-rs randomises election timeouts. The simulation turns this off (raft-rs
    /// draws from a thread RNG, which would make runs unrepeatable) and jitters ticks instead.
    pub randomized_election: bool,
}

impl EngineConfig {
    pub fn new(id: u64, voters: Vec<u64>) -> Self {
        EngineConfig {
            id,
            voters,
            election_ticks: 10,
            heartbeat_ticks: 2,
            snapshot_every: 10_000,
            snapshot_bytes: 64 * 1024 * 1024,
            snapshot_trailing: 1_000,
            snapshot_trailing_bytes: 16 * 1024 * 1024,
            max_size_per_msg: 1024 * 1024,
            max_inflight_msgs: 256,
            max_uncommitted_size: 64 * 1024 * 1024,
            randomized_election: true,
        }
    }
}

/// Why the engine could not start.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("invalid Raft configuration")]
    Raft(#[source] raft::Error),
    #[error("the snapshot on disk cannot be decoded")]
    CorruptSnapshot(#[source] serde_json::Error),
}

/// Why a proposal was not accepted into the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ProposeError {
    #[error("no leader is known; the cluster may be electing one or this node is cut off")]
    NoLeader,
    #[error("the leader has too many uncommitted entries")]
    Overloaded,
}

/// A committed entry that the state machine applied.
#[derive(Debug, Clone, PartialEq)]
pub struct AppliedEntry {
    pub index: u64,
    pub term: u64,
    /// The request that proposed it, when it came with one.
    pub request: Option<RequestId>,
    /// `None` for entries that carry no command (a new leader's no-op, a conf change) and for
    /// a repeated request (a re-proposal of one that was already applied).
    pub outcome: Option<Result<Applied, ApplyError>>,
}

/// What the caller must do with one half of a Ready.
#[derive(Debug, Default)]
pub struct ReadyOutput {
    /// Messages to send to peers.
    pub messages: Vec<Message>,
    /// Entries applied to the state machine, in log order.
    pub applied: Vec<AppliedEntry>,
    /// Completed ReadIndex requests: serve the read once `applied_index() >= index`.
    pub read_states: Vec<ReadState>,
    /// Set when a snapshot from the leader replaced the state machine.
    pub restored_snapshot: Option<u64>,
    /// A snapshot is due: serialize it (off the hot path) and hand the result to
    /// [`Engine::install_snapshot`].
    pub snapshot_job: Option<SnapshotJob>,
}

/// The state to snapshot, captured at an applied index. Building the snapshot serializes the
/// whole state, which takes long enough (tens of ms for 100k objects) to stall the node, so
/// the engine only captures it (an O(1) clone) and the caller builds it elsewhere.
#[derive(Debug)]
pub struct SnapshotJob {
    index: u64,
    term: u64,
    conf_state: ConfState,
    state: ClusterState,
}

impl SnapshotJob {
    pub fn index(&self) -> u64 {
        self.index
    }

    /// Serializes the captured state. Pure; run it on any thread.
    pub fn build(self) -> Snapshot {
        let mut snapshot = Snapshot { data: self.state.to_snapshot().into(), ..Snapshot::default() };
        let meta = snapshot.mut_metadata();
        meta.index = self.index;
        meta.term = self.term;
        meta.set_conf_state(self.conf_state);
        snapshot
    }
}

/// A Ready whose write batch is not yet durable. Pass it back to [`Engine::finish_ready`] once
/// the batch is persisted; drop it (with the engine) to model a crash before the sync.
#[derive(Debug)]
#[must_use = "the Ready must be finished after its batch is persisted"]
pub struct Unpersisted {
    ready: Ready,
}

/// A point-in-time view of the engine for status reporting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineStatus {
    pub id: u64,
    pub role: StateRole,
    pub term: u64,
    pub leader_id: Option<u64>,
    pub commit_index: u64,
    pub applied_index: u64,
    pub first_index: u64,
    pub last_index: u64,
    pub snapshot_index: u64,
    /// Replication progress per voter (leader only).
    pub matched: Option<Vec<(u64, u64)>>,
}

/// A Raft replica: consensus, log and state machine, driven by its caller.
pub struct Engine {
    raw: RawNode<LogStore>,
    state: ClusterState,
    config: EngineConfig,
    /// Changes decided outside a Ready (a snapshot we took, a commit index advance), already
    /// applied to memory and persisted with the next batch.
    pending: WriteBatch,
    /// A [`SnapshotJob`] was handed out and not yet installed.
    snapshot_in_flight: bool,
    /// Bytes of the entries applied since the last snapshot job was handed out.
    applied_bytes: u64,
    /// The state of the last snapshot a leader sent, decoded when it arrived (by its index):
    /// one that does not decode never reaches raft-rs.
    received_snapshot: Option<(u64, ClusterState)>,
    /// The leader's connection closed and this node is its successor: it campaigns at the
    /// next tick ([`Engine::peer_closed`]).
    campaign_at_tick: bool,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").field("status", &self.status()).finish_non_exhaustive()
    }
}

impl Engine {
    /// Builds a replica from what its disk holds (an empty [`LogState`] for a new node).
    pub fn new(config: EngineConfig, mut log: LogState, logger: &slog::Logger) -> Result<Engine, EngineError> {
        let mut pending = WriteBatch::default();
        if log.conf_state.voters.is_empty() && log.snapshot_index() == 0 {
            // A brand-new cluster: every member starts from the same configuration.
            let conf_state = ConfState { voters: config.voters.clone(), ..Default::default() };
            log.conf_state = conf_state.clone();
            pending.conf_state = Some(conf_state);
        }
        let state = if log.snapshot_index() == 0 {
            ClusterState::default()
        } else {
            ClusterState::from_snapshot(&log.snapshot.data).map_err(EngineError::CorruptSnapshot)?
        };
        let raft_config = Config {
            id: config.id,
            election_tick: config.election_ticks,
            heartbeat_tick: config.heartbeat_ticks,
            min_election_tick: config.election_ticks,
            max_election_tick: if config.randomized_election { 2 * config.election_ticks } else { config.election_ticks + 1 },
            // The state machine was rebuilt from the snapshot; later committed entries are
            // replayed from the log.
            applied: state.applied_index(),
            max_size_per_msg: config.max_size_per_msg,
            max_inflight_msgs: config.max_inflight_msgs,
            max_uncommitted_size: config.max_uncommitted_size,
            check_quorum: true,
            pre_vote: true,
            read_only_option: ReadOnlyOption::Safe,
            ..Default::default()
        };
        raft_config.validate().map_err(EngineError::Raft)?;
        let raw = RawNode::new(&raft_config, LogStore::new(log), logger).map_err(EngineError::Raft)?;
        Ok(Engine {
            raw,
            state,
            config,
            pending,
            snapshot_in_flight: false,
            applied_bytes: 0,
            received_snapshot: None,
            campaign_at_tick: false,
        })
    }

    pub fn id(&self) -> u64 {
        self.config.id
    }

    pub fn state(&self) -> &ClusterState {
        &self.state
    }

    pub fn log(&self) -> &LogState {
        self.raw.store().state()
    }

    pub fn commit_index(&self) -> u64 {
        self.raw.raft.raft_log.committed
    }

    pub fn is_leader(&self) -> bool {
        self.raw.raft.state == StateRole::Leader
    }

    pub fn term(&self) -> u64 {
        self.raw.raft.term
    }

    pub fn leader_id(&self) -> Option<u64> {
        Some(self.raw.raft.leader_id).filter(|&id| id != INVALID_ID)
    }

    pub fn status(&self) -> EngineStatus {
        let raft = &self.raw.raft;
        let log = self.log();
        EngineStatus {
            id: self.config.id,
            role: raft.state,
            term: raft.term,
            leader_id: self.leader_id(),
            commit_index: raft.raft_log.committed,
            applied_index: self.state.applied_index(),
            first_index: log.first_index(),
            last_index: raft.raft_log.last_index(),
            snapshot_index: log.snapshot_index(),
            matched: self.is_leader().then(|| {
                let mut m: Vec<_> = raft.prs().iter().map(|(id, pr)| (*id, pr.matched)).collect();
                m.sort_unstable();
                m
            }),
        }
    }

    /// Advances logical time by one tick (elections, heartbeats).
    pub fn tick(&mut self) {
        if std::mem::take(&mut self.campaign_at_tick) {
            let raft = &self.raw.raft;
            // Unless a leader was heard from meanwhile (the close was not a death).
            if raft.state == StateRole::Follower && raft.leader_id == INVALID_ID && raft.promotable() {
                // Fails only for a node that is not a voter, which `promotable` excluded.
                let _ = self.raw.campaign();
            }
        }
        self.raw.tick();
    }

    /// Delivers a message from a peer. Messages that do not fit the current state (stale
    /// terms, unknown peers) are dropped, as Raft expects of a lossy network.
    ///
    /// A snapshot whose state does not decode is dropped here, before raft-rs accepts it: the
    /// leader will send another (or a peer that is not what it claims gets nowhere), and this
    /// node never installs what it cannot apply. Returns whether the message was taken. (The
    /// peer transport decodes snapshots off this thread and calls [`Engine::step_snapshot`].)
    pub fn step(&mut self, message: Message) -> bool {
        if message.get_msg_type() == MessageType::MsgSnapshot {
            match ClusterState::from_snapshot(&message.get_snapshot().data) {
                Ok(state) => return self.step_snapshot(message, state),
                Err(e) => {
                    tracing::warn!(from = message.from, "dropped a snapshot whose state does not decode: {e}");
                    return false;
                }
            }
        }
        // Errors here mean the message was for another group or from an unknown peer.
        self.raw.step(message).is_ok()
    }

    /// Steps a snapshot message whose state has been decoded already.
    pub fn step_snapshot(&mut self, message: Message, state: ClusterState) -> bool {
        self.received_snapshot = Some((message.get_snapshot().get_metadata().index, state));
        self.raw.step(message).is_ok()
    }

    /// Proposes a command (already encoded) for the log. On a follower raft-rs forwards it to
    /// the leader; the proposer learns the outcome when an applied entry carries `request`.
    /// Proposing the same request again (with the same `issued_at`, the commit index when the
    /// request was first accepted) is safe: the state machine applies it at most once.
    pub fn propose(&mut self, request: RequestId, issued_at: u64, command: Vec<u8>) -> Result<(), ProposeError> {
        if self.leader_id().is_none() {
            return Err(ProposeError::NoLeader);
        }
        self.raw.propose(encode_context(request, issued_at), command).map_err(|e| match e {
            raft::Error::ProposalDropped if self.leader_id().is_none() => ProposeError::NoLeader,
            raft::Error::ProposalDropped => ProposeError::Overloaded,
            _ => ProposeError::NoLeader,
        })
    }

    /// Starts a linearizable read. Its [`ReadState`] (with the same context) comes out of a
    /// later Ready; the read may be served once the state machine has applied its index.
    pub fn read_index(&mut self, context: Vec<u8>) {
        self.raw.read_index(context);
    }

    /// The connection `peer` sends to this node on closed. The kernel closes a dead process's
    /// sockets, so this usually means `peer` died; a partition closes nothing and still takes
    /// an election timeout. If `peer` is the leader this node follows, it stops counting on
    /// it: it forgets the leader, so that it grants votes at once instead of refusing them for
    /// the rest of the leader's lease, and the lowest-numbered of the other voters campaigns at
    /// its next tick instead of after an election timeout (one node, so that two candidates do
    /// not split the vote; a tick later, so that the others have seen the close too and forgot
    /// the leader, or they would refuse it).
    ///
    /// A close that was not a death costs nothing: the campaign starts with a pre-vote, which
    /// the live leader and every follower still hearing from it refuse, and the leader's next
    /// message makes this node its follower again. Safety does not depend on any of this.
    pub fn peer_closed(&mut self, peer: u64) {
        let raft = &mut self.raw.raft;
        if raft.state != StateRole::Follower || raft.leader_id != peer {
            return;
        }
        let term = raft.term;
        raft.become_follower(term, INVALID_ID);
        // Every member is a voter (this cluster has no learners).
        let successor = raft.prs().iter().map(|(&id, _)| id).filter(|&id| id != peer).min();
        self.campaign_at_tick = successor == Some(raft.id);
    }

    /// Tells raft-rs that sending to a peer failed, so it backs off replicating to it.
    pub fn report_unreachable(&mut self, peer: u64) {
        self.raw.report_unreachable(peer);
    }

    /// Tells raft-rs whether a snapshot reached a peer, so it can retry or resume replication.
    pub fn report_snapshot(&mut self, peer: u64, delivered: bool) {
        let status = if delivered { SnapshotStatus::Finish } else { SnapshotStatus::Failure };
        self.raw.report_snapshot(peer, status);
    }

    /// Whether Raft has work for [`Engine::begin_ready`].
    pub fn has_ready(&self) -> bool {
        self.raw.has_ready()
    }

    /// Takes the changes waiting for the next Ready's batch (a commit index, a snapshot we
    /// took). They ride along with the next batch instead of costing an fsync of their own;
    /// losing them in a crash is safe. Call this before a clean shutdown to keep them.
    pub fn take_pending_writes(&mut self) -> WriteBatch {
        std::mem::take(&mut self.pending)
    }

    /// First half of handling a Ready, in the order raft-rs documents: messages that may go out
    /// before persisting; apply a snapshot from the leader; apply committed entries; stage new
    /// entries and the hard state for persistence. Returns `None` when there is nothing to do.
    pub fn begin_ready(&mut self) -> Option<(ReadyOutput, WriteBatch, Unpersisted)> {
        if !self.raw.has_ready() {
            return None;
        }
        let mut batch = std::mem::take(&mut self.pending);
        let mut ready = self.raw.ready();
        let mut out = ReadyOutput {
            // 1. A leader may send its appends in parallel with persisting them (Raft thesis
            //    10.2.1); everything that needs our log durable first is in persisted_messages.
            messages: ready.take_messages(),
            read_states: ready.take_read_states(),
            ..Default::default()
        };
        let mut own = WriteBatch::default();
        // 2. A snapshot from the leader replaces log and state machine.
        if !ready.snapshot().is_empty() {
            let snapshot = ready.snapshot().clone();
            let index = snapshot.get_metadata().index;
            let decoded = match self.received_snapshot.take() {
                Some((at, state)) if at == index => Ok(state),
                _ => ClusterState::from_snapshot(&snapshot.data),
            };
            match decoded {
                Ok(state) => self.state = state,
                // `step` admits only snapshots that decode; failing here means memory changed
                // under us. Refuse to continue rather than diverge.
                Err(e) => panic!("snapshot at index {index} cannot be decoded: {e}"),
            }
            out.restored_snapshot = Some(snapshot.get_metadata().index);
            own.snapshot = Some(snapshot);
        }
        // 3. Apply what is committed. These entries are already durable (ours and a quorum's).
        self.apply_committed(ready.take_committed_entries(), &mut out.applied, &mut own);
        // 4. Stage the new entries and hard state; the caller makes them durable.
        own.entries = ready.take_entries();
        own.hard_state = ready.hs().cloned();
        self.raw.mut_store().state.apply(&own);
        batch.merge(own);
        Some((out, batch, Unpersisted { ready }))
    }

    /// Second half of handling a Ready, after its batch is durable: messages that required the
    /// persisted log (votes, append responses), then advance, then what the light Ready holds.
    pub fn finish_ready(&mut self, token: Unpersisted) -> ReadyOutput {
        let mut out = ReadyOutput::default();
        let mut ready = token.ready;
        // 5. Messages that may only leave once our log and hard state are durable.
        out.messages = ready.take_persisted_messages();
        // 6. Advance; the light ready carries what became committed thanks to our persist.
        let mut light = self.raw.advance(ready);
        if let Some(commit) = light.commit_index() {
            let mut hs = self.raw.store().state.hard_state.clone();
            hs.commit = commit;
            // Persisting the commit index lazily is safe: a restarted node relearns it.
            let change = WriteBatch { hard_state: Some(hs), ..Default::default() };
            self.raw.mut_store().state.apply(&change);
            self.pending.merge(change);
        }
        out.messages.extend(light.take_messages());
        let mut own = WriteBatch::default();
        self.apply_committed(light.take_committed_entries(), &mut out.applied, &mut own);
        self.raw.mut_store().state.apply(&own);
        self.pending.merge(own);
        // 7. Tell raft-rs everything handed out is applied.
        self.raw.advance_apply();
        out.snapshot_job = self.snapshot_job();
        out
    }

    fn apply_committed(&mut self, entries: Vec<Entry>, applied: &mut Vec<AppliedEntry>, batch: &mut WriteBatch) {
        for entry in entries {
            if entry.index <= self.state.applied_index() {
                // Already contained in a snapshot we restored.
                continue;
            }
            self.applied_bytes += entry_bytes(&entry);
            let tag = decode_context(&entry.context);
            let request = tag.map(|t| RequestId(t.id));
            let outcome = match entry.get_entry_type() {
                EntryType::EntryNormal => self.state.apply_entry(entry.index, &entry.data, tag),
                EntryType::EntryConfChange | EntryType::EntryConfChangeV2 => {
                    self.apply_conf_change(&entry, batch);
                    self.state.apply_entry(entry.index, &[], None)
                }
            };
            applied.push(AppliedEntry { index: entry.index, term: entry.term, request, outcome });
        }
    }

    fn apply_conf_change(&mut self, entry: &Entry, batch: &mut WriteBatch) {
        let conf_state = if entry.get_entry_type() == EntryType::EntryConfChange {
            ConfChange::parse_from_bytes(&entry.data).ok().and_then(|cc| self.raw.apply_conf_change(&cc).ok())
        } else {
            ConfChangeV2::parse_from_bytes(&entry.data).ok().and_then(|cc| self.raw.apply_conf_change(&cc).ok())
        };
        if let Some(cs) = conf_state {
            batch.conf_state = Some(cs);
        }
    }

    /// Captures the state for a snapshot once enough entries (or bytes) were applied since the
    /// last one.
    fn snapshot_job(&mut self) -> Option<SnapshotJob> {
        let applied = self.state.applied_index();
        let log = self.raw.store().state();
        let due = applied >= log.snapshot_index() + self.config.snapshot_every
            || (self.applied_bytes >= self.config.snapshot_bytes && applied > log.snapshot_index());
        if self.snapshot_in_flight || !due {
            return None;
        }
        self.snapshot_in_flight = true;
        self.applied_bytes = 0;
        Some(SnapshotJob {
            index: applied,
            term: log.term(applied).expect("applied entries are in the log"),
            conf_state: log.conf_state.clone(),
            state: self.state.clone(),
        })
    }

    /// Installs a snapshot built from a [`SnapshotJob`] and compacts the log behind it,
    /// keeping `snapshot_trailing` entries for followers that are only slightly behind. The
    /// change is persisted with the next batch. Returns false (and drops the snapshot) when a
    /// newer snapshot, e.g. one from the leader, was installed meanwhile.
    pub fn install_snapshot(&mut self, snapshot: Snapshot) -> bool {
        self.snapshot_in_flight = false;
        let index = snapshot.get_metadata().index;
        let log = self.raw.store().state();
        if index <= log.snapshot_index() || index < log.compacted.0 {
            return false;
        }
        // Keep up to `snapshot_trailing` entries behind the snapshot, within the byte budget.
        let mut compact_to = index.saturating_sub(self.config.snapshot_trailing);
        let mut kept = 0u64;
        for i in (compact_to + 1..=index).rev() {
            let Some(entry) = log.entry(i) else { break };
            kept += entry_bytes(entry);
            if kept > self.config.snapshot_trailing_bytes {
                compact_to = i;
                break;
            }
        }
        let compact_through = (compact_to > log.compacted.0).then(|| log.term(compact_to).map(|term| (compact_to, term))).flatten();
        let change = WriteBatch { own_snapshot: Some(snapshot), compact_through, ..Default::default() };
        self.raw.mut_store().state.apply(&change);
        self.pending.merge(change);
        true
    }
}

/// What an entry weighs in the in-memory log.
fn entry_bytes(entry: &Entry) -> u64 {
    (entry.data.len() + entry.context.len() + 32) as u64
}

/// Pending proposals of one node, matched to their callers by request id.
#[derive(Debug)]
pub struct Proposals<T> {
    waiting: HashMap<RequestId, T>,
}

impl<T> Default for Proposals<T> {
    fn default() -> Self {
        Proposals { waiting: HashMap::new() }
    }
}

impl<T> Proposals<T> {
    pub fn insert(&mut self, id: RequestId, waiter: T) {
        self.waiting.insert(id, waiter);
    }

    pub fn take(&mut self, id: RequestId) -> Option<T> {
        self.waiting.remove(&id)
    }

    pub fn len(&self) -> usize {
        self.waiting.len()
    }

    pub fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }

    pub fn iter_mut(&mut self) -> impl Iterator<Item = (&RequestId, &mut T)> {
        self.waiting.iter_mut()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs a single-member engine's Readys to completion, persisting to memory, and returns
    /// the snapshot jobs they handed out.
    fn drive(engine: &mut Engine) -> Vec<SnapshotJob> {
        let mut jobs = Vec::new();
        while let Some((_, _, unpersisted)) = engine.begin_ready() {
            jobs.extend(engine.finish_ready(unpersisted).snapshot_job);
        }
        jobs
    }

    /// A few large entries are enough for a snapshot, long before the entry count says so:
    /// the uncompacted log lives in memory.
    #[test]
    fn large_entries_bring_the_snapshot_forward() {
        let mut config = EngineConfig::new(1, vec![1]);
        config.snapshot_every = 1_000_000;
        config.snapshot_bytes = 100_000;
        config.snapshot_trailing_bytes = 50_000;
        let mut engine = Engine::new(config, LogState::default(), &crate::logging::raft_logger()).expect("engine");
        for _ in 0..50 {
            engine.tick();
            drive(&mut engine);
        }
        assert!(engine.is_leader(), "a single member elects itself");
        let mut jobs = Vec::new();
        for i in 0..5u64 {
            engine.propose(RequestId(u128::from(i)), 0, vec![b'x'; 30_000]).expect("proposed");
            jobs.extend(drive(&mut engine));
        }
        assert_eq!(jobs.len(), 1, "about 120 KB of entries passed the 100 KB mark once");
        let job = jobs.pop().expect("a job");
        let index = job.index();
        assert!(engine.install_snapshot(job.build()));
        drive(&mut engine);
        let log = engine.log();
        assert_eq!(log.snapshot_index(), index);
        let kept: u64 = (log.first_index()..=index).filter_map(|i| log.entry(i)).map(entry_bytes).sum();
        assert!(kept <= 50_000, "the entries kept behind the snapshot are bounded by bytes: {kept}");
    }
}
