//! The node actor: one tokio task that owns an [`Engine`] and does its IO.
//!
//! Everything that touches the engine goes through the actor's bounded mailboxes (client
//! requests from [`NodeHandle`]s, events from the transport), so there is no lock around
//! Raft state.
//!
//! A write waits here until it is applied. While no leader is known it is held, not
//! refused; whenever the leader or term changes, and whenever a write has waited an election
//! timeout, every write not yet applied is proposed again under its original request id (its
//! first proposal may have died with the old leader or in a full queue). The state machine
//! applies a request id once, so the retry is safe and a client sees a leader failover as
//! latency rather than as an error of unknown outcome. A node that knows of no leader for
//! longer than [`NodeConfig::no_leader_timeout`] (it is cut off from the quorum, or no
//! election succeeds) answers at once instead of holding requests for the whole timeout:
//! writes it never proposed with [`WriteError::NoLeader`], writes it proposed with
//! [`WriteError::Timeout`] (their outcome is unknown), reads with [`ReadError::NoLeader`].
//!
//! The actor does Raft work only. A read confirms its position with a quorum (ReadIndex),
//! waits until the state machine has applied it, and hands the caller a copy of the state
//! ([`ClusterState`] lives in persistent maps, so the copy is O(1)); the caller lists,
//! renders or plans on its own task. Each loop turn takes whatever is queued, then handles
//! the Ready in one place ([`Actor::process_ready`]). While one batch is being fsynced on a
//! blocking thread, new requests wait in the mailbox and go into the next batch together:
//! group commit falls out of the structure.

use std::sync::Arc;
use std::time::Duration;

use edgeplane_api::Consistency;
use edgeplane_core::{Applied, ApplyError, ClusterState, Command};
use raft::prelude::ReadState;
use raft::StateRole;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use crate::disk::{DiskError, DiskLog};
use crate::engine::{Engine, EngineStatus, Proposals, ProposeError, ReadyOutput, RequestId, RequestOrigin};
use crate::metrics::RaftMetrics;
use crate::transport::{PeerEvent, Transport};
use crate::watch::{WatchEvent, WatchHub};

/// Timing of the node actor.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// Wall-clock length of one Raft tick.
    pub tick: Duration,
    /// How long a caller waits for its write to be committed and applied.
    pub write_timeout: Duration,
    /// How long a caller waits for a linearizable read.
    pub read_timeout: Duration,
    /// A ReadIndex round, or a write proposal, that has not completed in this long is
    /// started again (its messages may have been lost, or the leader changed).
    pub read_retry: Duration,
    /// How long a request waits for a leader to become known before it is answered: long
    /// enough for an election, short enough that a node cut off from the quorum answers 503
    /// (with whatever it knows) well before clients give up.
    pub no_leader_timeout: Duration,
    pub mailbox: usize,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            tick: Duration::from_millis(20),
            write_timeout: Duration::from_secs(5),
            read_timeout: Duration::from_secs(5),
            read_retry: Duration::from_millis(500),
            no_leader_timeout: Duration::from_millis(1_000),
            mailbox: 16 * 1024,
        }
    }
}

/// Why a write did not succeed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum WriteError {
    /// No leader was known for the whole timeout, so the write was never proposed: safe to
    /// retry, here or elsewhere.
    #[error("no leader was known within the timeout; the cluster may be electing one or this node is cut off")]
    NoLeader,
    /// Not proposed: safe to retry later.
    #[error("the orchestrator is overloaded")]
    Overloaded,
    /// Proposed but not seen applied in time: the write may or may not have taken effect.
    #[error("the write was not confirmed in time; it may or may not have taken effect")]
    Timeout,
    /// Committed, and refused by the state machine (e.g. a stale resourceVersion).
    #[error(transparent)]
    Rejected(ApplyError),
    /// The node stopped after it took the write: it may or may not have been proposed.
    #[error("the orchestrator stopped before it could say whether the write took effect")]
    Interrupted,
    /// Committed while this node caught up through a snapshot, which carries the effect of
    /// the write but not its result (applied, or refused by a precondition).
    #[error("the write was committed, but this node caught up by snapshot and does not know its result; read the object to see it")]
    CommittedResultUnknown,
    #[error("the orchestrator is shutting down")]
    Stopped,
}

/// Why a read did not succeed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    #[error("no leader is known, so the read cannot be confirmed current")]
    NoLeader,
    #[error("the read could not be confirmed with a quorum in time")]
    Timeout,
    #[error("the orchestrator is overloaded")]
    Overloaded,
    #[error("the orchestrator is shutting down")]
    Stopped,
}

/// The node stopped because its log could not be persisted; continuing would risk the
/// cluster's safety, so the process must stop.
#[derive(Debug, thiserror::Error)]
#[error("the Raft log could not be persisted")]
pub struct NodeFailed(#[source] pub DiskError);

type ReadReply = oneshot::Sender<Result<ClusterState, ReadError>>;

enum Request {
    Write { command: Command, reply: oneshot::Sender<Result<Applied, WriteError>> },
    Read { consistency: Consistency, reply: ReadReply },
    Status { reply: oneshot::Sender<EngineStatus> },
}

/// A cheap, cloneable handle to a running node.
#[derive(Debug, Clone)]
pub struct NodeHandle {
    mailbox: mpsc::Sender<Request>,
    applied: watch::Receiver<ClusterState>,
}

impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Request::Write { command, .. } => f.debug_struct("Write").field("command", command).finish(),
            Request::Read { consistency, .. } => f.debug_struct("Read").field("consistency", consistency).finish(),
            Request::Status { .. } => f.write_str("Status"),
        }
    }
}

impl NodeHandle {
    /// Replicates a command and waits until this node has applied it.
    pub async fn write(&self, command: Command) -> Result<Applied, WriteError> {
        let (reply, rx) = oneshot::channel();
        self.mailbox.try_send(Request::Write { command, reply }).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => WriteError::Overloaded,
            mpsc::error::TrySendError::Closed(_) => WriteError::Stopped,
        })?;
        rx.await.map_err(|_| WriteError::Interrupted)?
    }

    /// A copy of the state machine, after confirming with a quorum that this node's state is
    /// current (`Linearizable`) or at once (`Stale`). The copy is O(1) (persistent maps) and
    /// stays consistent however long the caller works on it; the actor does none of that work.
    pub async fn read(&self, consistency: Consistency) -> Result<ClusterState, ReadError> {
        let (reply, rx) = oneshot::channel();
        self.mailbox.try_send(Request::Read { consistency, reply }).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => ReadError::Overloaded,
            mpsc::error::TrySendError::Closed(_) => ReadError::Stopped,
        })?;
        rx.await.map_err(|_| ReadError::Stopped)?
    }

    /// This node's applied state as of now, without a trip through the actor (O(1)). Like a
    /// stale read: it may be behind the cluster, never behind what this node acknowledged.
    pub fn latest(&self) -> ClusterState {
        self.applied.borrow().clone()
    }

    pub async fn status(&self) -> Option<EngineStatus> {
        let (reply, rx) = oneshot::channel();
        self.mailbox.send(Request::Status { reply }).await.ok()?;
        rx.await.ok()
    }
}

/// What a node actor is made of.
#[derive(Debug)]
pub struct NodeParts {
    pub engine: Engine,
    pub disk: Arc<DiskLog>,
    pub transport: Transport,
    pub peer_events: mpsc::Receiver<PeerEvent>,
    pub config: NodeConfig,
    pub metrics: RaftMetrics,
    /// Makes this process's request ids unique (node id and boot nonce).
    pub origin: RequestOrigin,
    /// Where applied changes are published.
    pub watch: Arc<WatchHub>,
}

/// Starts the actor. It runs until every [`NodeHandle`] is dropped (then returns `Ok`) or its
/// disk fails.
pub fn spawn(parts: NodeParts) -> (NodeHandle, tokio::task::JoinHandle<Result<(), NodeFailed>>) {
    let NodeParts { engine, disk, transport, peer_events, config, metrics, origin, watch } = parts;
    let (tx, rx) = mpsc::channel(config.mailbox);
    // One snapshot is built at a time, so one slot suffices.
    let (built_tx, built_rx) = mpsc::channel(1);
    let (applied, applied_rx) = watch::channel(engine.state().clone());
    let actor = Actor {
        applied,
        watch,
        built_snapshots: built_tx,
        engine,
        disk,
        transport,
        metrics,
        config,
        writes: Proposals::default(),
        next_request: 0,
        origin,
        reads: Reads::default(),
        last_leader: None,
        proposals_epoch: None,
        leaderless_since: None,
    };
    let task = tokio::spawn(actor.run(rx, peer_events, built_rx));
    (NodeHandle { mailbox: tx, applied: applied_rx }, task)
}

struct PendingWrite {
    reply: oneshot::Sender<Result<Applied, WriteError>>,
    deadline: Instant,
    command: Vec<u8>,
    /// The commit index when the write was accepted; every proposal of it carries this.
    issued_at: u64,
    /// The (term, leader) it was last proposed under, and when; `None` while never proposed.
    proposed_under: Option<(u64, u64)>,
    proposed_at: Instant,
}

struct PendingRead {
    reply: ReadReply,
    deadline: Instant,
}

/// Linearizable reads in their three stages. Reads are batched: every read that arrives
/// while a ReadIndex round is in flight joins the next round, so a thousand concurrent reads
/// cost one quorum heartbeat, not a thousand.
#[derive(Default)]
struct Reads {
    /// Waiting for a round to start.
    queued: Vec<PendingRead>,
    /// The round in flight: its context, when it started, and its reads.
    in_flight: Option<(u64, Instant, Vec<PendingRead>)>,
    /// Confirmed by a quorum; served once the state machine reaches the index.
    confirmed: Vec<(u64, Vec<PendingRead>)>,
    next_round: u64,
}

struct Actor {
    /// The state after each batch of applied entries, for [`NodeHandle::latest`].
    applied: watch::Sender<ClusterState>,
    engine: Engine,
    disk: Arc<DiskLog>,
    transport: Transport,
    metrics: RaftMetrics,
    config: NodeConfig,
    writes: Proposals<PendingWrite>,
    next_request: u64,
    /// Makes this process's request ids and read contexts unique in the cluster and across
    /// restarts (earlier runs' ids may still be in the log, or answers to them in flight).
    origin: RequestOrigin,
    reads: Reads,
    last_leader: Option<u64>,
    /// Every applied change is published here for watchers.
    watch: Arc<WatchHub>,
    /// Snapshots built on blocking threads come back here.
    built_snapshots: mpsc::Sender<raft::prelude::Snapshot>,
    /// The (term, leader) under which pending writes were last (re-)proposed.
    proposals_epoch: Option<(u64, u64)>,
    /// Since when this node has known no leader; `None` while it knows one.
    leaderless_since: Option<Instant>,
}

const DRAIN_LIMIT: usize = 4096;

impl Actor {
    async fn run(
        mut self,
        mut mailbox: mpsc::Receiver<Request>,
        mut peer_events: mpsc::Receiver<PeerEvent>,
        mut built_snapshots: mpsc::Receiver<raft::prelude::Snapshot>,
    ) -> Result<(), NodeFailed> {
        let mut ticker = tokio::time::interval(self.config.tick);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut requests = Vec::with_capacity(DRAIN_LIMIT);
        let mut events = Vec::with_capacity(DRAIN_LIMIT);
        loop {
            tokio::select! {
                n = mailbox.recv_many(&mut requests, DRAIN_LIMIT) => {
                    if n == 0 {
                        break;
                    }
                    for request in requests.drain(..) {
                        self.on_request(request);
                    }
                }
                n = peer_events.recv_many(&mut events, DRAIN_LIMIT) => {
                    if n == 0 {
                        break;
                    }
                    for event in events.drain(..) {
                        self.on_peer_event(event);
                    }
                }
                _ = ticker.tick() => {
                    self.engine.tick();
                    self.expire(Instant::now());
                }
                Some(snapshot) = built_snapshots.recv() => {
                    let index = snapshot.get_metadata().index;
                    if self.engine.install_snapshot(snapshot) {
                        self.metrics.snapshots_taken.inc();
                        tracing::debug!(index, "took a snapshot and compacted the log");
                    }
                }
            }
            self.repropose_after_leader_change();
            self.start_read_round();
            while self.engine.has_ready() {
                self.process_ready().await?;
            }
            self.serve_confirmed_reads();
            self.observe();
        }
        // Persist what is still pending (a commit index, a snapshot) before stopping.
        let pending = self.engine.take_pending_writes();
        self.persist(pending).await?;
        Ok(())
    }

    fn on_request(&mut self, request: Request) {
        match request {
            Request::Write { command, reply } => {
                self.next_request += 1;
                let id = RequestId::new(self.origin, self.next_request);
                let now = Instant::now();
                let mut write = PendingWrite {
                    reply,
                    deadline: now + self.config.write_timeout,
                    command: command.encode(),
                    issued_at: self.engine.commit_index(),
                    proposed_under: None,
                    proposed_at: now,
                };
                match self.propose(id, &mut write) {
                    Ok(()) => self.writes.insert(id, write),
                    Err(()) => {
                        self.count_write("overloaded");
                        let _ = write.reply.send(Err(WriteError::Overloaded));
                    }
                }
            }
            Request::Read { consistency: Consistency::Stale, reply } => {
                self.count_read("stale", "ok");
                let _ = reply.send(Ok(self.engine.state().clone()));
            }
            Request::Read { consistency: Consistency::Linearizable, reply } => {
                let deadline = Instant::now() + self.config.read_timeout;
                self.reads.queued.push(PendingRead { reply, deadline });
            }
            Request::Status { reply } => {
                let _ = reply.send(self.engine.status());
            }
        }
    }

    /// Proposes a write if a leader is known (otherwise it waits for one). Err when the
    /// leader refuses more uncommitted entries.
    fn propose(&mut self, id: RequestId, write: &mut PendingWrite) -> Result<(), ()> {
        let Some(leader) = self.engine.leader_id() else { return Ok(()) };
        let epoch = (self.engine.term(), leader);
        match self.engine.propose(id, write.issued_at, write.command.clone()) {
            Ok(()) => {
                write.proposed_under = Some(epoch);
                write.proposed_at = Instant::now();
                Ok(())
            }
            Err(ProposeError::NoLeader) => Ok(()),
            Err(ProposeError::Overloaded) => Err(()),
        }
    }

    /// After a leader or term change, proposes again every write not proposed to the current
    /// leader: its earlier proposal may have been lost with the old one.
    fn repropose_after_leader_change(&mut self) {
        let Some(leader) = self.engine.leader_id() else { return };
        let epoch = (self.engine.term(), leader);
        if self.proposals_epoch == Some(epoch) {
            return;
        }
        self.proposals_epoch = Some(epoch);
        self.repropose(|w| w.proposed_under != Some(epoch));
    }

    /// Proposes again every pending write for which `stale` holds.
    fn repropose(&mut self, stale: impl Fn(&PendingWrite) -> bool) {
        let stale: Vec<RequestId> = self.writes.iter_mut().filter(|(_, w)| stale(w)).map(|(id, _)| *id).collect();
        for id in stale {
            let Some(mut write) = self.writes.take(id) else { continue };
            if write.proposed_under.is_some() {
                self.count_write("reproposed");
            }
            // An overloaded leader refuses it now; it is retried at the next change or times out.
            let _ = self.propose(id, &mut write);
            self.writes.insert(id, write);
        }
    }

    fn on_peer_event(&mut self, event: PeerEvent) {
        match event {
            PeerEvent::Message(m) => drop(self.engine.step(*m)),
            PeerEvent::Snapshot(m, state) => drop(self.engine.step_snapshot(*m, *state)),
            PeerEvent::Unreachable(peer) => self.engine.report_unreachable(peer),
            PeerEvent::SnapshotSent { peer, delivered } => self.engine.report_snapshot(peer, delivered),
            PeerEvent::Closed(peer) => self.engine.peer_closed(peer),
        }
    }

    /// Handles one Ready; see [`crate::engine`] for the order of its steps.
    async fn process_ready(&mut self) -> Result<(), NodeFailed> {
        let Some((early, batch, unpersisted)) = self.engine.begin_ready() else {
            return Ok(());
        };
        self.transport.send(early.messages);
        self.complete(early.applied, early.read_states, early.restored_snapshot);
        self.persist(batch).await?;
        let late = self.engine.finish_ready(unpersisted);
        self.transport.send(late.messages);
        let ReadyOutput { applied, read_states, restored_snapshot, snapshot_job, .. } = late;
        self.complete(applied, read_states, restored_snapshot);
        if let Some(job) = snapshot_job {
            // Serializing and writing the whole state takes a while: never on the actor.
            let built = self.built_snapshots.clone();
            let disk = Arc::clone(&self.disk);
            tokio::task::spawn_blocking(move || {
                let snapshot = job.build();
                if let Err(e) = disk.write_snapshot_file(&snapshot) {
                    // Persisting the batch that installs it tries again, and stops the node if
                    // the disk still fails.
                    tracing::warn!(error = %e, "writing a snapshot file failed");
                }
                let _ = built.try_send(snapshot);
            });
        }
        Ok(())
    }

    async fn persist(&mut self, batch: crate::storage::WriteBatch) -> Result<(), NodeFailed> {
        if batch.is_empty() {
            return Ok(());
        }
        let entries = batch.entries.len();
        let disk = Arc::clone(&self.disk);
        let started = std::time::Instant::now();
        // fsync blocks for milliseconds: never on the reactor.
        let result = tokio::task::spawn_blocking(move || disk.persist(&batch)).await.expect("the persist task does not panic");
        self.metrics.fsync_seconds.observe(started.elapsed().as_secs_f64());
        self.metrics.batch_entries.observe(entries as f64);
        result.map_err(|e| {
            tracing::error!(error = %e, "cannot persist the Raft log; stopping this node");
            NodeFailed(e)
        })
    }

    fn complete(&mut self, applied: Vec<crate::engine::AppliedEntry>, read_states: Vec<ReadState>, restored: Option<u64>) {
        // Published before any writer hears back, so that what a client was told is applied
        // here is in what `NodeHandle::latest` returns here.
        if !applied.is_empty() || restored.is_some() {
            self.applied.send_replace(self.engine.state().clone());
        }
        if let Some(index) = restored {
            self.metrics.snapshots_restored.inc();
            tracing::info!(index, "restored a snapshot from the leader");
            self.watch.reset(index);
            // Writes the snapshot already contains will never be seen applied here.
            let state = self.engine.state();
            let done: Vec<RequestId> =
                self.writes.iter_mut().filter(|(id, _)| state.has_applied_request(id.0)).map(|(id, _)| *id).collect();
            for id in done {
                if let Some(waiter) = self.writes.take(id) {
                    self.count_write("committed_result_unknown");
                    let _ = waiter.reply.send(Err(WriteError::CommittedResultUnknown));
                }
            }
        }
        for entry in applied {
            if let Some(Ok(change)) = &entry.outcome {
                for event in WatchEvent::from_applied(entry.index, change) {
                    self.watch.publish(event);
                }
            }
            let (Some(id), Some(outcome)) = (entry.request, entry.outcome) else { continue };
            if let Some(waiter) = self.writes.take(id) {
                self.count_write(if outcome.is_ok() { "committed" } else { "rejected" });
                let _ = waiter.reply.send(outcome.map_err(WriteError::Rejected));
            }
        }
        for rs in read_states {
            if let Some((round, _, _)) = &self.reads.in_flight {
                if rs.request_ctx == self.read_context(*round) {
                    let (_, _, reads) = self.reads.in_flight.take().expect("checked above");
                    self.reads.confirmed.push((rs.index, reads));
                }
            }
        }
    }

    fn start_read_round(&mut self) {
        if self.reads.in_flight.is_some() || self.reads.queued.is_empty() {
            return;
        }
        self.reads.next_round += 1;
        let round = self.reads.next_round;
        self.engine.read_index(self.read_context(round));
        let reads = std::mem::take(&mut self.reads.queued);
        self.reads.in_flight = Some((round, Instant::now(), reads));
    }

    /// A ReadIndex context unique to this process and round: an answer meant for another
    /// node, or for an earlier run of this one, never matches.
    fn read_context(&self, round: u64) -> Vec<u8> {
        let mut ctx = self.origin.0.to_be_bytes().to_vec();
        ctx.extend_from_slice(&round.to_be_bytes());
        ctx
    }

    fn serve_confirmed_reads(&mut self) {
        let applied = self.engine.state().applied_index();
        let (ready, waiting): (Vec<_>, Vec<_>) =
            std::mem::take(&mut self.reads.confirmed).into_iter().partition(|(index, _)| *index <= applied);
        self.reads.confirmed = waiting;
        for (_, reads) in ready {
            for read in reads {
                self.count_read("linearizable", "ok");
                let _ = read.reply.send(Ok(self.engine.state().clone()));
            }
        }
    }

    /// Fails requests past their deadline, and restarts stalled proposals and ReadIndex rounds.
    /// Once this node has known no leader for [`NodeConfig::no_leader_timeout`], every request
    /// is answered at once, those arriving later too: a node cut off from the quorum answers
    /// rather than holding them.
    fn expire(&mut self, now: Instant) {
        let retry = self.config.read_retry;
        self.repropose(|w| w.proposed_under.is_some() && now.duration_since(w.proposed_at) >= retry);
        self.leaderless_since = match self.engine.leader_id() {
            Some(_) => None,
            None => Some(self.leaderless_since.unwrap_or(now)),
        };
        let give_up = self.leaderless_since.is_some_and(|since| now.duration_since(since) >= self.config.no_leader_timeout);
        let expired: Vec<RequestId> = self.writes.iter_mut().filter(|(_, w)| give_up || w.deadline <= now).map(|(id, _)| *id).collect();
        for id in expired {
            let Some(waiter) = self.writes.take(id) else { continue };
            let (outcome, error) = match waiter.proposed_under {
                None => ("no_leader", WriteError::NoLeader),
                // It may have reached a leader before this node lost it.
                Some(_) => ("timeout", WriteError::Timeout),
            };
            self.count_write(outcome);
            let _ = waiter.reply.send(Err(error));
        }
        if let Some((_, started, _)) = &self.reads.in_flight {
            if now.duration_since(*started) >= self.config.read_retry {
                let (_, _, reads) = self.reads.in_flight.take().expect("checked above");
                self.reads.queued.extend(reads);
            }
        }
        let leaderless = self.leaderless_since.is_some();
        let reads = &mut self.reads;
        let mut expired = Vec::new();
        let in_flight = reads.in_flight.iter_mut().map(|(_, _, r)| r);
        for list in std::iter::once(&mut reads.queued).chain(in_flight).chain(reads.confirmed.iter_mut().map(|(_, r)| r)) {
            let (gone, keep): (Vec<_>, Vec<_>) = std::mem::take(list).into_iter().partition(|r| give_up || r.deadline <= now);
            *list = keep;
            expired.extend(gone);
        }
        for read in expired {
            let error = if leaderless { ReadError::NoLeader } else { ReadError::Timeout };
            self.count_read("linearizable", if leaderless { "no_leader" } else { "timeout" });
            let _ = read.reply.send(Err(error));
        }
    }

    fn observe(&mut self) {
        let status = self.engine.status();
        if status.leader_id != self.last_leader {
            if let Some(leader) = status.leader_id {
                tracing::info!(leader, term = status.term, "leader changed");
            }
            self.metrics.leader_changes.inc();
            self.last_leader = status.leader_id;
        }
        self.metrics.term.set(status.term as i64);
        self.metrics.is_leader.set(i64::from(status.role == StateRole::Leader));
        self.metrics.commit_index.set(status.commit_index as i64);
        self.metrics.applied_index.set(status.applied_index as i64);
        self.metrics.snapshot_index.set(status.snapshot_index as i64);
    }

    fn count_write(&self, outcome: &'static str) {
        self.metrics.proposals.get_or_create(&vec![("outcome", outcome)]).inc();
    }

    fn count_read(&self, consistency: &'static str, outcome: &'static str) {
        self.metrics.reads.get_or_create(&vec![("consistency", consistency), ("outcome", outcome)]).inc();
    }
}
