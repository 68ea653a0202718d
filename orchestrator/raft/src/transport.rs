//! Raft messages between orchestrator processes.
//!
//! Each node keeps one persistent outbound connection per peer, fed by a bounded queue and
//! re-established with exponential backoff. A full queue drops the message: Raft tolerates
//! loss and resends, while an unbounded queue behind a dead peer would only grow. A connection
//! is watched while idle too (the peer never writes on it, so a read ends only with the
//! connection): one closed under it, by a peer that restarted, is replaced at once, so the
//! first message after the restart (a vote request, say) is not lost on a dead socket. The
//! receiving side tells its node when a peer's connection closes ([`PeerEvent::Closed`]). A
//! connection opens with a hello naming the cluster and the sender, so that nodes configured
//! for different clusters refuse each other instead of mixing logs.
//!
//! Frames are a 1-byte kind, a 4-byte big-endian length and the payload:
//! - `MESSAGE`: a protobuf-encoded `eraftpb::Message`;
//! - `SNAPSHOT_BEGIN`: the snapshot's data length (u64) and the `MsgSnapshot` without its
//!   data, followed by `SNAPSHOT_CHUNK` frames carrying the data in order.
//!
//! A snapshot of any size crosses in chunks no larger than a frame, so a state that has grown
//! past the frame limit still reaches a follower that needs it.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use protobuf::Message as _;
use raft::prelude::{Message, MessageType};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader, BufWriter};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::metrics::RaftMetrics;
use crate::net::{Incoming, Listener, Network, Stream};

const HELLO_MAGIC: &[u8; 16] = b"edgeplane-raft/2";
const MESSAGE: u8 = 0;
const SNAPSHOT_BEGIN: u8 = 1;
const SNAPSHOT_CHUNK: u8 = 2;

/// Limits of the peer protocol.
#[derive(Debug, Clone, Copy)]
pub struct TransportLimits {
    /// Largest frame sent or accepted (a message, or one chunk of a snapshot).
    pub max_frame: usize,
    /// Snapshot data travels in chunks of this size.
    pub snapshot_chunk: usize,
    /// Largest snapshot accepted from a peer: it is assembled in memory.
    pub max_snapshot: u64,
}

impl Default for TransportLimits {
    fn default() -> Self {
        // A snapshot is assembled in memory as its chunks arrive (never allocated up front
        // from the announced length); 16 GiB is far beyond any state this version holds.
        TransportLimits { max_frame: 64 * 1024 * 1024, snapshot_chunk: 4 * 1024 * 1024, max_snapshot: 16 * 1024 * 1024 * 1024 }
    }
}

/// Messages queued per peer before new ones are dropped.
const PEER_QUEUE: usize = 4096;
const BACKOFF_MIN: Duration = Duration::from_millis(20);
const BACKOFF_MAX: Duration = Duration::from_millis(500);

/// What the transport tells its node.
#[derive(Debug)]
pub enum PeerEvent {
    /// A message from a peer, to step into the engine.
    Message(Box<Message>),
    /// A snapshot from the leader, and its state, decoded on the connection's task (a
    /// snapshot that does not decode closes the connection and never reaches the engine).
    Snapshot(Box<Message>, Box<edgeplane_core::ClusterState>),
    /// Sending to this peer failed; raft-rs should back off replicating to it.
    Unreachable(u64),
    /// Whether a snapshot was written to this peer's connection.
    SnapshotSent { peer: u64, delivered: bool },
    /// The connection this peer sends on closed (it ended, or failed to read): the peer may
    /// have died.
    Closed(u64),
}

/// Identifies a cluster by its membership, so misconfigured nodes cannot join the wrong one.
pub fn cluster_id(members: &[(u64, SocketAddr)]) -> u64 {
    let mut sorted: Vec<_> = members.iter().map(|(id, addr)| format!("{id}={addr}")).collect();
    sorted.sort();
    sorted.join(",").bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
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
        limits: TransportLimits,
    ) -> Transport {
        let mut queues = HashMap::new();
        let mut tasks = JoinSet::new();
        for (id, addr) in peers {
            let (tx, rx) = mpsc::channel(PEER_QUEUE);
            queues.insert(id, tx);
            let peer =
                PeerLink { self_id, cluster, id, addr, network: network.clone(), events: events.clone(), metrics: metrics.clone(), limits };
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
    limits: TransportLimits,
}

impl PeerLink {
    async fn run(self, mut queue: mpsc::Receiver<Message>) {
        let mut backoff = BACKOFF_MIN;
        loop {
            let stream = match self.network.connect(self.addr, self.id).await {
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
            self.metrics.peer_connects.inc();
            tracing::debug!(peer = self.id, addr = %self.addr, "connected to peer");
            let connected = Instant::now();
            match self.stream_messages(stream, &mut queue).await {
                Ok(()) => return, // the node shut down
                Err(e) => tracing::debug!(peer = self.id, error = %e, "peer connection lost"),
            }
            // A connection that lived is replaced at once; one closed as soon as it opened (a
            // peer refusing us) is retried with backoff, not in a spin.
            if connected.elapsed() >= Duration::from_secs(1) {
                backoff = BACKOFF_MIN;
            } else {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(BACKOFF_MAX);
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
        let mut nothing = [0u8; 1];
        loop {
            // Both are cancel-safe: whichever loses the race has taken nothing.
            tokio::select! {
                received = queue.recv_many(&mut batch, 256) => if received == 0 {
                    return Ok(());
                },
                read = w.get_mut().read(&mut nothing) => return Err(match read {
                    Ok(0) => io::Error::new(io::ErrorKind::ConnectionReset, "the peer closed the connection"),
                    Ok(_) => io::Error::new(io::ErrorKind::InvalidData, "the peer wrote on a connection only we write on"),
                    Err(e) => e,
                }),
            }
            let result = write_frames(&mut w, &batch, self.limits).await;
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

async fn write_frames(w: &mut BufWriter<Stream>, messages: &[Message], limits: TransportLimits) -> io::Result<()> {
    for m in messages {
        if m.get_msg_type() == MessageType::MsgSnapshot {
            write_snapshot(w, m, limits).await?;
            continue;
        }
        let bytes = m.write_to_bytes().map_err(io::Error::other)?;
        write_frame(w, MESSAGE, &[&bytes], limits).await?;
    }
    w.flush().await
}

/// A snapshot message: its envelope without the data, then the data in chunks.
async fn write_snapshot(w: &mut BufWriter<Stream>, m: &Message, limits: TransportLimits) -> io::Result<()> {
    let data = m.get_snapshot().get_data();
    let mut envelope = m.clone();
    envelope.mut_snapshot().data = Default::default();
    let envelope = envelope.write_to_bytes().map_err(io::Error::other)?;
    let length = (data.len() as u64).to_be_bytes();
    write_frame(w, SNAPSHOT_BEGIN, &[&length, &envelope], limits).await?;
    for chunk in data.chunks(limits.snapshot_chunk.clamp(1, limits.max_frame)) {
        write_frame(w, SNAPSHOT_CHUNK, &[chunk], limits).await?;
    }
    Ok(())
}

async fn write_frame(w: &mut BufWriter<Stream>, kind: u8, parts: &[&[u8]], limits: TransportLimits) -> io::Result<()> {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    if len > limits.max_frame {
        // The peer would refuse it; failing here reports the message as undelivered.
        tracing::error!(bytes = len, "a peer frame exceeds the {}-byte limit and cannot be sent", limits.max_frame);
        return Err(io::Error::new(io::ErrorKind::InvalidData, "message exceeds the frame limit"));
    }
    w.write_u8(kind).await?;
    w.write_u32(len as u32).await?;
    for part in parts {
        w.write_all(part).await?;
    }
    Ok(())
}

/// Accepts peer connections and forwards their messages to the node. Runs until the listener
/// fails or the node stops taking events. Nothing a peer sends can stop it: a connection that
/// fails the handshake, or sends what is not the protocol, is closed and counted.
pub async fn serve_peers(listener: Listener, cluster: u64, events: mpsc::Sender<PeerEvent>, limits: TransportLimits, metrics: RaftMetrics) {
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
        let (events, metrics) = (events.clone(), metrics.clone());
        readers.spawn(async move {
            if let Err(e) = read_peer(stream, cluster, events, limits).await {
                if matches!(e.kind(), io::ErrorKind::InvalidData | io::ErrorKind::PermissionDenied) {
                    metrics.peer_connections_refused.inc();
                    tracing::warn!(%addr, "refused a peer connection: {e}");
                } else {
                    tracing::debug!(%addr, error = %e, "peer connection closed");
                }
            }
        });
        // Reap finished readers so the set does not grow with reconnects.
        while readers.try_join_next().is_some() {}
    }
}

async fn read_peer(incoming: Incoming, cluster: u64, events: mpsc::Sender<PeerEvent>, limits: TransportLimits) -> io::Result<()> {
    let invalid = |why: String| io::Error::new(io::ErrorKind::InvalidData, why);
    let stream = incoming.establish().await?;
    let proven = stream.peer_member();
    let mut r = BufReader::with_capacity(256 * 1024, stream);
    let mut magic = [0u8; 16];
    r.read_exact(&mut magic).await?;
    if &magic != HELLO_MAGIC {
        return Err(invalid("not an edgeplane raft peer speaking this protocol version".to_owned()));
    }
    let their_cluster = r.read_u64().await?;
    let from = r.read_u64().await?;
    if their_cluster != cluster {
        return Err(invalid(format!("a peer configured with a different member list (cluster id {their_cluster:x}, ours {cluster:x})")));
    }
    if proven.is_some_and(|member| member != from) {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!("a peer with the certificate of member {} claims to be member {from}", proven.unwrap_or_default()),
        ));
    }
    let read = read_messages(&mut r, from, &events, limits).await;
    if read.as_ref().is_err_and(|e| !matches!(e.kind(), io::ErrorKind::InvalidData | io::ErrorKind::PermissionDenied)) {
        // Ended or broke, not refused by us: tell the node, which acts if `from` led it.
        let _ = events.send(PeerEvent::Closed(from)).await;
    }
    read
}

/// Reads `from`'s messages off an established connection until it ends (an error) or the
/// node stops taking them (`Ok`).
async fn read_messages(r: &mut BufReader<Stream>, from: u64, events: &mpsc::Sender<PeerEvent>, limits: TransportLimits) -> io::Result<()> {
    let invalid = |why: String| io::Error::new(io::ErrorKind::InvalidData, why);
    let mut buf = Vec::new();
    loop {
        let kind = r.read_u8().await?;
        read_frame(r, &mut buf, limits).await?;
        let message = match kind {
            MESSAGE => Message::parse_from_bytes(&buf).map_err(|e| invalid(e.to_string()))?,
            SNAPSHOT_BEGIN => {
                let (length, envelope) = buf.split_at_checked(8).ok_or_else(|| invalid("short snapshot header".to_owned()))?;
                let length = u64::from_be_bytes(length.try_into().expect("8 bytes"));
                if length > limits.max_snapshot {
                    return Err(invalid(format!("a snapshot of {length} bytes exceeds the {}-byte limit", limits.max_snapshot)));
                }
                let mut message = Message::parse_from_bytes(envelope).map_err(|e| invalid(e.to_string()))?;
                if message.get_msg_type() != MessageType::MsgSnapshot {
                    return Err(invalid(format!("a snapshot header carries a {:?}", message.get_msg_type())));
                }
                let mut data = Vec::with_capacity(length.min(limits.max_frame as u64) as usize);
                while (data.len() as u64) < length {
                    if r.read_u8().await? != SNAPSHOT_CHUNK {
                        return Err(invalid("a snapshot was interrupted by another frame".to_owned()));
                    }
                    read_frame(r, &mut buf, limits).await?;
                    if buf.is_empty() {
                        return Err(invalid("an empty snapshot chunk".to_owned()));
                    }
                    if data.len() as u64 + buf.len() as u64 > length {
                        return Err(invalid("snapshot chunks exceed the announced length".to_owned()));
                    }
                    data.extend_from_slice(&buf);
                }
                if message.from != from {
                    return Err(invalid("message sender differs from the connection's".to_owned()));
                }
                let (data, state) = tokio::task::spawn_blocking(move || {
                    let state = edgeplane_core::ClusterState::from_snapshot(&data);
                    (data, state)
                })
                .await
                .map_err(io::Error::other)?;
                let state = state.map_err(|e| invalid(format!("a snapshot whose state does not decode: {e}")))?;
                message.mut_snapshot().data = data.into();
                if events.send(PeerEvent::Snapshot(Box::new(message), Box::new(state))).await.is_err() {
                    return Ok(());
                }
                continue;
            }
            other => return Err(invalid(format!("unknown frame kind {other}"))),
        };
        if message.from != from {
            return Err(invalid("message sender differs from the connection's".to_owned()));
        }
        if message.get_msg_type() == MessageType::MsgSnapshot {
            // Snapshots come only in chunks; one inside a single frame skipped the decoding.
            return Err(invalid("a snapshot outside the snapshot frames".to_owned()));
        }
        if events.send(PeerEvent::Message(Box::new(message))).await.is_err() {
            return Ok(());
        }
    }
}

async fn read_frame(r: &mut BufReader<Stream>, buf: &mut Vec<u8>, limits: TransportLimits) -> io::Result<()> {
    let len = r.read_u32().await? as usize;
    if len > limits.max_frame {
        return Err(io::Error::new(io::ErrorKind::InvalidData, format!("frame of {len} bytes is too large")));
    }
    buf.resize(len, 0);
    r.read_exact(buf).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use prometheus_client::registry::Registry;
    use raft::prelude::Snapshot;

    use super::*;

    /// A peer that restarts closes the connection it was sent on; the sender replaces it at
    /// once, with nothing queued, instead of finding it dead when a message (a vote request)
    /// must go. And the receiving side tells its node when a sender's connection closes.
    #[tokio::test]
    async fn a_closed_connection_is_replaced_at_once_and_reported_by_the_receiver() {
        let limits = TransportLimits::default();
        let network = Network::plaintext();
        let peer = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = peer.local_addr().expect("addr");
        let cluster = cluster_id(&[(1, addr)]);
        let (events, _received) = mpsc::channel(16);
        let metrics = RaftMetrics::new(&mut Registry::default());
        let _transport = Transport::start(2, cluster, [(1, addr)], network.clone(), events, metrics.clone(), limits);
        let accept = async || tokio::time::timeout(Duration::from_secs(5), peer.accept()).await;
        let (first, _) = accept().await.expect("the transport connects").expect("accepted");
        drop(first);
        let again = accept().await;
        assert!(again.is_ok_and(|a| a.is_ok()), "the closed connection was not replaced while idle");

        // The receiving side: a sender that goes away is reported.
        let listener = network.bind("127.0.0.1:0".parse().expect("addr")).await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let cluster = cluster_id(&[(1, addr)]);
        let (events, mut received) = mpsc::channel(16);
        tokio::spawn(serve_peers(listener, cluster, events.clone(), limits, metrics.clone()));
        let (sender_events, _sender_received) = mpsc::channel(16);
        let sender = Transport::start(3, cluster, [(1, addr)], network, sender_events, metrics, limits);
        let mut message = Message::default();
        message.set_msg_type(MessageType::MsgHeartbeat);
        message.from = 3;
        message.to = 1;
        sender.send(vec![message]);
        let mut next =
            async || tokio::time::timeout(Duration::from_secs(5), received.recv()).await.expect("an event in time").expect("open");
        assert!(matches!(next().await, PeerEvent::Message(m) if m.from == 3), "the message arrives first");
        drop(sender);
        assert!(matches!(next().await, PeerEvent::Closed(3)), "the closed connection of member 3 is reported");
    }

    /// A snapshot several times the frame limit crosses in chunks and arrives whole. Before
    /// chunking, a snapshot above the limit could never be sent, so a follower that needed
    /// one never caught up.
    #[tokio::test]
    async fn a_snapshot_larger_than_a_frame_arrives_whole() {
        let limits = TransportLimits { max_frame: 1 << 20, snapshot_chunk: 256 << 10, max_snapshot: 64 << 20 };
        let network = Network::plaintext();
        let listener = network.bind("127.0.0.1:0".parse().expect("addr")).await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let cluster = cluster_id(&[(1, addr)]);
        let (events, mut received) = mpsc::channel(16);
        let metrics = RaftMetrics::new(&mut Registry::default());
        tokio::spawn(serve_peers(listener, cluster, events.clone(), limits, metrics.clone()));
        let transport = Transport::start(2, cluster, [(1, addr)], network, events, metrics, limits);

        // A real state, large enough to need several chunks: the receiver decodes it.
        let mut state = edgeplane_core::ClusterState::default();
        let big = edgeplane_core::Command::Put {
            key: edgeplane_core::ObjectKey::new("thing", "", "big"),
            value: serde_json::json!("x".repeat((3 << 20) + 17)),
            precondition: edgeplane_core::Precondition::None,
        };
        state.apply_entry(1, &big.encode(), None).expect("entry").expect("applied");
        let data = state.to_snapshot();
        let mut snapshot = Snapshot { data: data.clone().into(), ..Snapshot::default() };
        snapshot.mut_metadata().index = 42;
        let mut message = Message::default();
        message.set_msg_type(MessageType::MsgSnapshot);
        message.from = 2;
        message.to = 1;
        message.set_snapshot(snapshot);
        transport.send(vec![message]);

        let (mut arrived, mut delivered) = (None, None);
        while arrived.is_none() || delivered.is_none() {
            match tokio::time::timeout(Duration::from_secs(10), received.recv()).await.expect("an event in time").expect("open") {
                PeerEvent::Snapshot(m, decoded) => {
                    assert_eq!(decoded.digest(), state.digest(), "the state arrives decoded");
                    arrived = Some(m);
                }
                PeerEvent::Message(m) => panic!("a snapshot arrived as a plain message: {m:?}"),
                PeerEvent::SnapshotSent { delivered: d, .. } => delivered = Some(d),
                PeerEvent::Unreachable(peer) => panic!("peer {peer} reported unreachable"),
                PeerEvent::Closed(peer) => panic!("peer {peer}'s connection closed"),
            }
        }
        assert_eq!(delivered, Some(true), "the sender reports the snapshot delivered");
        let arrived = arrived.expect("arrived");
        assert_eq!(arrived.get_snapshot().get_metadata().index, 42);
        assert!(arrived.get_snapshot().get_data() == data.as_slice(), "the snapshot's data arrives intact");
    }
}
