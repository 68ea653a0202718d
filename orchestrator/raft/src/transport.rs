//! Raft messages between orchestrator processes.
//!
//! Each node keeps one persistent outbound connection per peer, fed by a bounded queue and
//! re-established with exponential backoff. A full queue drops the message: Raft tolerates
//! loss and resends, while an unbounded queue behind a dead peer would only grow. Frames are a
//! 4-byte big-endian length and a protobuf-encoded `eraftpb::Message`; a connection opens with
//! a hello naming the cluster and the sender, so that nodes configured for different clusters
//! refuse each other instead of mixing logs.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use protobuf::Message as _;
use raft::prelude::{Message, MessageType};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader, BufWriter};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::metrics::RaftMetrics;
use crate::net::{Listener, Network, Stream};

const HELLO_MAGIC: &[u8; 16] = b"edgeplane-raft/1";
/// Largest frame accepted; a snapshot of the whole state travels as one frame.
const MAX_FRAME: usize = 256 * 1024 * 1024;
/// Messages queued per peer before new ones are dropped.
const PEER_QUEUE: usize = 4096;
const BACKOFF_MIN: Duration = Duration::from_millis(20);
const BACKOFF_MAX: Duration = Duration::from_millis(500);

/// What the transport tells its node.
#[derive(Debug)]
pub enum PeerEvent {
    /// A message from a peer, to step into the engine.
    Message(Box<Message>),
    /// Sending to this peer failed; raft-rs should back off replicating to it.
    Unreachable(u64),
    /// Whether a snapshot was written to this peer's connection.
    SnapshotSent { peer: u64, delivered: bool },
}

/// Identifies a cluster by its membership, so misconfigured nodes cannot join the wrong one.
pub fn cluster_id(members: &[(u64, SocketAddr)]) -> u64 {
    let mut sorted: Vec<_> = members.iter().map(|(id, addr)| format!("{id}={addr}")).collect();
    sorted.sort();
    sorted
        .join(",")
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

/// The sending side: one queue and one connection task per peer.
#[derive(Debug)]
pub struct Transport {
    queues: HashMap<u64, mpsc::Sender<Message>>,
    events: mpsc::Sender<PeerEvent>,
    metrics: RaftMetrics,
    _tasks: JoinSet<()>,
}

impl Transport {
    /// Starts a connection task for every peer (not including this node).
    pub fn start(
        self_id: u64,
        cluster: u64,
        peers: impl IntoIterator<Item = (u64, SocketAddr)>,
        network: Network,
        events: mpsc::Sender<PeerEvent>,
        metrics: RaftMetrics,
    ) -> Transport {
        let mut queues = HashMap::new();
        let mut tasks = JoinSet::new();
        for (id, addr) in peers {
            let (tx, rx) = mpsc::channel(PEER_QUEUE);
            queues.insert(id, tx);
            let peer = PeerLink { self_id, cluster, id, addr, network: network.clone(), events: events.clone(), metrics: metrics.clone() };
            tasks.spawn(peer.run(rx));
        }
        Transport { queues, events, metrics, _tasks: tasks }
    }

    /// Queues messages for their peers without waiting.
    pub fn send(&self, messages: Vec<Message>) {
        for message in messages {
            let Some(queue) = self.queues.get(&message.to) else {
                tracing::warn!(to = message.to, "dropping a Raft message for an unknown peer");
                continue;
            };
            if let Err(mpsc::error::TrySendError::Full(m) | mpsc::error::TrySendError::Closed(m)) = queue.try_send(message) {
                self.metrics.messages_dropped.inc();
                if m.get_msg_type() == MessageType::MsgSnapshot {
                    // raft-rs waits for this report before it retries the snapshot.
                    let events = self.events.clone();
                    tokio::spawn(async move {
                        let _ = events.send(PeerEvent::SnapshotSent { peer: m.to, delivered: false }).await;
                    });
                }
            }
        }
    }
}

struct PeerLink {
    self_id: u64,
    cluster: u64,
    id: u64,
    addr: SocketAddr,
    network: Network,
    events: mpsc::Sender<PeerEvent>,
    metrics: RaftMetrics,
}

impl PeerLink {
    async fn run(self, mut queue: mpsc::Receiver<Message>) {
        let mut backoff = BACKOFF_MIN;
        loop {
            let stream = match self.network.connect(self.addr).await {
                Ok(stream) => stream,
                Err(e) => {
                    tracing::debug!(peer = self.id, addr = %self.addr, error = %e, "cannot reach peer");
                    // What queued up while the peer was away is stale; drop it rather than
                    // deliver it late, and tell raft-rs so it probes instead of streaming.
                    let mut dropped = Vec::new();
                    while let Ok(m) = queue.try_recv() {
                        dropped.push(m);
                    }
                    if !self.report_failed(&dropped).await {
                        return;
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                    continue;
                }
            };
            backoff = BACKOFF_MIN;
            self.metrics.peer_connects.inc();
            tracing::debug!(peer = self.id, addr = %self.addr, "connected to peer");
            match self.stream_messages(stream, &mut queue).await {
                Ok(()) => return, // the node shut down
                Err(e) => tracing::debug!(peer = self.id, error = %e, "peer connection lost"),
            }
        }
    }

    /// Writes queued messages until the queue closes (Ok) or the connection fails (Err).
    async fn stream_messages(&self, stream: Stream, queue: &mut mpsc::Receiver<Message>) -> io::Result<()> {
        let mut w = BufWriter::with_capacity(256 * 1024, stream);
        w.write_all(HELLO_MAGIC).await?;
        w.write_u64(self.cluster).await?;
        w.write_u64(self.self_id).await?;
        w.flush().await?;
        let mut batch = Vec::with_capacity(256);
        loop {
            if queue.recv_many(&mut batch, 256).await == 0 {
                return Ok(());
            }
            let result = write_frames(&mut w, &batch).await;
            if let Err(e) = result {
                self.report_failed(&batch).await;
                return Err(e);
            }
            self.metrics.messages_sent.inc_by(batch.len() as u64);
            for m in batch.drain(..) {
                if m.get_msg_type() == MessageType::MsgSnapshot {
                    let _ = self.events.send(PeerEvent::SnapshotSent { peer: self.id, delivered: true }).await;
                }
            }
        }
    }

    /// Reports undelivered messages; false when the node is gone.
    async fn report_failed(&self, messages: &[Message]) -> bool {
        self.metrics.messages_dropped.inc_by(messages.len() as u64);
        for m in messages.iter().filter(|m| m.get_msg_type() == MessageType::MsgSnapshot) {
            if self.events.send(PeerEvent::SnapshotSent { peer: m.to, delivered: false }).await.is_err() {
                return false;
            }
        }
        self.events.send(PeerEvent::Unreachable(self.id)).await.is_ok()
    }
}

async fn write_frames(w: &mut BufWriter<Stream>, messages: &[Message]) -> io::Result<()> {
    for m in messages {
        let bytes = m.write_to_bytes().map_err(io::Error::other)?;
        if bytes.len() > MAX_FRAME {
            // The peer would refuse it; failing here reports the snapshot as undelivered.
            tracing::error!(
                to = m.to,
                bytes = bytes.len(),
                "a {:?} exceeds the {MAX_FRAME}-byte frame limit and cannot be sent",
                m.get_msg_type()
            );
            return Err(io::Error::new(io::ErrorKind::InvalidData, "message exceeds the frame limit"));
        }
        w.write_u32(bytes.len() as u32).await?;
        w.write_all(&bytes).await?;
    }
    w.flush().await
}

/// Accepts peer connections and forwards their messages to the node. Runs until the listener
/// fails or the node stops taking events.
pub async fn serve_peers(listener: Listener, cluster: u64, events: mpsc::Sender<PeerEvent>) {
    let mut readers = JoinSet::new();
    loop {
        let (stream, addr) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors and the like: wait instead of spinning.
                tracing::warn!(error = %e, "accepting a peer connection failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        if events.is_closed() {
            return;
        }
        let events = events.clone();
        readers.spawn(async move {
            if let Err(e) = read_peer(stream, cluster, events).await {
                tracing::debug!(%addr, error = %e, "peer connection closed");
            }
        });
        // Reap finished readers so the set does not grow with reconnects.
        while readers.try_join_next().is_some() {}
    }
}

async fn read_peer(stream: Stream, cluster: u64, events: mpsc::Sender<PeerEvent>) -> io::Result<()> {
    let mut r = BufReader::with_capacity(256 * 1024, stream);
    let mut magic = [0u8; 16];
    r.read_exact(&mut magic).await?;
    if &magic != HELLO_MAGIC {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "not an edgeplane raft peer"));
    }
    let their_cluster = r.read_u64().await?;
    let from = r.read_u64().await?;
    if their_cluster != cluster {
        tracing::error!(
            from,
            "refusing a peer configured with a different member list (cluster id {their_cluster:x}, ours {cluster:x})"
        );
        return Err(io::Error::new(io::ErrorKind::InvalidData, "cluster id mismatch"));
    }
    let mut buf = Vec::new();
    loop {
        let len = r.read_u32().await? as usize;
        if len > MAX_FRAME {
            return Err(io::Error::new(io::ErrorKind::InvalidData, format!("frame of {len} bytes is too large")));
        }
        buf.resize(len, 0);
        r.read_exact(&mut buf).await?;
        let message = Message::parse_from_bytes(&buf).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        if message.from != from {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "message sender differs from the connection's"));
        }
        if events.send(PeerEvent::Message(Box::new(message))).await.is_err() {
            return Ok(());
        }
    }
}
