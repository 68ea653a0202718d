//! MQTT ingest: the node subscribes (QoS 1, persistent session) to every topic one of its
//! workloads reads, and acknowledges a message only once the data plane has accepted it.
//!
//! Each topic has its own ingest task, so a topic whose workload cannot take data now
//! (restarting, crash-looping) holds back only its own messages: the others flow on, as long
//! as the broker's in-flight window for this client (shared by every topic) is larger than
//! what the stuck topic holds; see docs/data-plane.md. Within a topic, messages are ingested
//! and acknowledged in the order they arrived, JSON readings merged into batches of at most a
//! quarter of the node's in-flight budget (a larger message is split), so that no accepted
//! message is ever too large to take.
//!
//! Backpressure reaches the broker: while the data plane refuses (busy, a workload
//! restarting, the outbox full) the batch is retried and nothing is acknowledged, so the
//! broker stops sending once its in-flight window for this client is full, and keeps the rest
//! queued for us. A crash before the acknowledgement makes the broker send the message again
//! (MQTT's at-least-once). (QoS 1 acknowledgements go out per topic in order, not across
//! topics in arrival order as MQTT 3.1.1 section 4.6 asks; brokers match them by packet id,
//! and that is what lets one stuck topic not hold up the others' acknowledgements.)
//!
//! What can never be accepted is acknowledged and counted, not retried forever: a message
//! that is not readings in any accepted form (`edgeplane_mqtt_malformed_messages_total`), and
//! readings of a topic no workload on this node reads any more (unsubscribed while they were
//! on their way; after a grace period, counted as dropped).
//!
//! Payloads: a JSON reading, a JSON array of readings, or a v1 binary batch.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use edgeplane_api::data::{decode_batch, encode_batch, validate_batch, Reading};
use rumqttc::{
    AsyncClient, Event, EventLoop, MqttOptions, Outgoing, Packet, Publish, QoS, SubscribeReasonCode, TlsConfiguration, Transport,
};
use tokio::sync::{mpsc, watch};

use crate::dataplane::{check_readings, DataPlane, Refused};

/// Publications taken in one go per topic (and one outbox sync).
const BATCH_MESSAGES: usize = 1000;
/// How long readings of a topic nothing reads wait for a route before they are dropped: a
/// workload being replaced comes back within this.
const NO_ROUTE_GRACE: Duration = Duration::from_secs(5);
/// QoS 0 messages (never acknowledged, so not held back by the broker's window) a stuck topic
/// queues at most; beyond it they are dropped and counted, as QoS 0 allows.
const MAX_QUEUED_QOS0: usize = 10_000;

/// Connects to the broker over TLS (`tls`: the cluster CA, and the node's certificate, which
/// the broker takes as the node's identity) and runs MQTT ingest until the process stops.
/// `topics` carries the input topics of the instances running now.
pub async fn run(
    broker: String,
    client_id: String,
    tls: rustls::ClientConfig,
    dataplane: Arc<DataPlane>,
    topics: watch::Receiver<BTreeSet<String>>,
) {
    let (host, port) = match broker.rsplit_once(':').map(|(h, p)| (h, p.parse::<u16>())) {
        Some((host, Ok(port))) => (host.to_owned(), port),
        _ => (broker.clone(), 8883),
    };
    let mut options = MqttOptions::new(client_id, host, port);
    options.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(Arc::new(tls))));
    options.set_keep_alive(Duration::from_secs(5));
    // A persistent session: the broker keeps our subscriptions and queues QoS 1 messages
    // while we are away or slow.
    options.set_clean_session(false);
    options.set_manual_acks(true);
    options.set_max_packet_size(16 << 20, 16 << 20);
    // Requests (acknowledgements above all) wait here for the polling task. Pending
    // acknowledgements never outnumber the QoS 1 messages the broker lets us hold unacknowledged
    // (mosquitto's max_inflight_messages, at most 65,535), so with this capacity the ingest
    // tasks never wait for room while the polling task waits for them.
    let (client, eventloop) = AsyncClient::new(options, 1 << 16);
    dataplane.set_mqtt(client.clone());
    let (publications, received) = mpsc::channel(BATCH_MESSAGES);
    let (connected_tx, connected) = watch::channel(0u64);
    let requested = Arc::new(Mutex::new(VecDeque::new()));
    tokio::spawn(poll(eventloop, publications, connected_tx, requested.clone()));
    tokio::spawn(subscriptions(client.clone(), topics, connected, requested));
    dispatch(client, dataplane, received).await;
}

/// The topics asked for, in the order their SUBSCRIBE packets leave (requests are sent in the
/// order they are made), so that the broker's answer can be logged with its topic.
type Requested = Arc<Mutex<VecDeque<String>>>;

/// Drives the connection; reconnects after a second when it drops.
async fn poll(mut eventloop: EventLoop, publications: mpsc::Sender<Publish>, connected: watch::Sender<u64>, requested: Requested) {
    let mut warned = false;
    // Packet id → topic of the subscriptions the broker has not answered yet.
    let mut unanswered: HashMap<u16, String> = HashMap::new();
    loop {
        match eventloop.poll().await {
            Ok(Event::Incoming(Packet::Publish(publish))) => {
                // Waits while the ingest task is behind: then we stop reading from the broker.
                if publications.send(publish).await.is_err() {
                    return;
                }
            }
            Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                tracing::info!(session_present = ack.session_present, "connected to the MQTT broker");
                warned = false;
                unanswered.clear();
                connected.send_modify(|n| *n += 1);
            }
            Ok(Event::Outgoing(Outgoing::Subscribe(pkid))) => {
                if let Some(topic) = requested.lock().unwrap_or_else(PoisonError::into_inner).pop_front() {
                    unanswered.insert(pkid, topic);
                }
            }
            Ok(Event::Incoming(Packet::SubAck(ack))) => {
                let topic = unanswered.remove(&ack.pkid).unwrap_or_default();
                match ack.return_codes.first() {
                    Some(SubscribeReasonCode::Success(_)) => tracing::info!(%topic, "subscribed"),
                    code => tracing::warn!(%topic, "the MQTT broker refused the subscription: {code:?}"),
                }
            }
            Ok(_) => {}
            Err(e) => {
                if !warned {
                    tracing::warn!("MQTT broker: {e}; retrying every second");
                    warned = true;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// Keeps the broker's subscriptions equal to the input topics; subscribes again after every
/// reconnect (a broker that lost our session would otherwise send nothing).
async fn subscriptions(
    client: AsyncClient,
    mut topics: watch::Receiver<BTreeSet<String>>,
    mut connected: watch::Receiver<u64>,
    requested: Requested,
) {
    let mut subscribed: BTreeSet<String> = BTreeSet::new();
    loop {
        let wanted = topics.borrow_and_update().clone();
        let reconnected = connected.has_changed().unwrap_or(false);
        if reconnected {
            connected.borrow_and_update();
            subscribed.clear();
        }
        for topic in wanted.difference(&subscribed) {
            tracing::info!(%topic, "subscribing");
            requested.lock().unwrap_or_else(PoisonError::into_inner).push_back(topic.clone());
            if client.subscribe(topic.clone(), QoS::AtLeastOnce).await.is_err() {
                return; // The event loop is gone: the process is stopping.
            }
        }
        for topic in subscribed.difference(&wanted) {
            tracing::info!(%topic, "unsubscribing");
            let _ = client.unsubscribe(topic.clone()).await;
        }
        subscribed = wanted;
        tokio::select! {
            changed = topics.changed() => if changed.is_err() { return },
            changed = connected.changed() => if changed.is_err() { return },
        }
    }
}

/// A topic's queue: its ingest task's mailbox, and how many QoS 0 messages wait in it.
struct TopicQueue {
    sender: mpsc::UnboundedSender<Publish>,
    qos0: Arc<std::sync::atomic::AtomicUsize>,
}

/// Hands each publication to its topic's ingest task. Never waits on a topic: the queues
/// are bounded by the broker's in-flight window (QoS 1) and by [`MAX_QUEUED_QOS0`].
async fn dispatch(client: AsyncClient, dataplane: Arc<DataPlane>, mut received: mpsc::Receiver<Publish>) {
    use std::sync::atomic::Ordering;
    let mut queues: HashMap<String, TopicQueue> = HashMap::new();
    while let Some(publish) = received.recv().await {
        dataplane.metrics().node.mqtt_messages.inc();
        let queue = queues.entry(publish.topic.clone()).or_insert_with(|| {
            let (sender, mailbox) = mpsc::unbounded_channel();
            let qos0 = Arc::new(std::sync::atomic::AtomicUsize::new(0));
            let topic = Topic { name: publish.topic.clone(), client: client.clone(), dataplane: dataplane.clone(), qos0: qos0.clone() };
            tokio::spawn(topic.run(mailbox));
            TopicQueue { sender, qos0 }
        });
        if publish.qos == QoS::AtMostOnce && queue.qos0.fetch_add(1, Ordering::Relaxed) >= MAX_QUEUED_QOS0 {
            queue.qos0.fetch_sub(1, Ordering::Relaxed);
            tracing::warn!(topic = %publish.topic, "dropping a QoS 0 message: the topic's queue is full");
            dataplane.metrics().node.readings_dropped.inc();
            continue;
        }
        // The task only ends with the process.
        let _ = queue.sender.send(publish);
    }
}

/// One topic's ingest task.
struct Topic {
    name: String,
    client: AsyncClient,
    dataplane: Arc<DataPlane>,
    qos0: Arc<std::sync::atomic::AtomicUsize>,
}

/// A batch to ingest, in arrival order, with the bytes it arrived as.
struct Batch {
    bytes: Vec<u8>,
    readings: u64,
    wire_bytes: usize,
}

impl Topic {
    async fn run(self, mut mailbox: mpsc::UnboundedReceiver<Publish>) {
        let mut messages = Vec::with_capacity(BATCH_MESSAGES);
        loop {
            if mailbox.recv_many(&mut messages, BATCH_MESSAGES).await == 0 {
                return;
            }
            let qos0 = messages.iter().filter(|m| m.qos == QoS::AtMostOnce).count();
            // A batch that needs the whole budget would wait for the node to be idle.
            let limit = (self.dataplane.max_inflight() / 4).max(1) as usize;
            let (batches, malformed) = batches(messages.iter().map(|m| &m.payload[..]), limit);
            for e in malformed {
                self.dataplane.metrics().node.mqtt_malformed.inc();
                tracing::warn!(topic = %self.name, "dropping a malformed MQTT message: {e}");
            }
            for batch in batches {
                self.deliver(batch).await;
            }
            for message in messages.drain(..) {
                if let Err(e) = self.client.ack(&message).await {
                    tracing::warn!(topic = %self.name, "cannot acknowledge an MQTT message: {e}");
                }
            }
            self.qos0.fetch_sub(qos0, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// Ingests one batch, waiting out backpressure; gives up only on readings nothing on this
    /// node reads any more, after a grace period for a route to come back.
    async fn deliver(&self, batch: Batch) {
        let mut wait = Duration::from_millis(5);
        let mut unrouted_since: Option<Instant> = None;
        loop {
            match self.dataplane.ingest(&self.name, batch.bytes.clone(), batch.readings, batch.wire_bytes).await {
                Ok(()) => return,
                Err(Refused::NoSubscriber(_)) if unrouted_since.get_or_insert_with(Instant::now).elapsed() >= NO_ROUTE_GRACE => {
                    tracing::warn!(topic = %self.name, readings = batch.readings, "dropping MQTT readings: no workload on this node reads the topic any more");
                    self.dataplane.metrics().node.readings_dropped.inc_by(batch.readings);
                    return;
                }
                Err(e) => {
                    tracing::debug!(topic = %self.name, "MQTT ingest waits: {e}");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_millis(500));
                }
            }
        }
    }
}

/// The payloads' readings as batches of at most `limit` readings, in arrival order (a larger
/// message is split, never refused), and why each malformed payload was left out.
fn batches<'a>(payloads: impl Iterator<Item = &'a [u8]>, limit: usize) -> (Vec<Batch>, Vec<String>) {
    let mut batches = Vec::new();
    let mut malformed = Vec::new();
    let mut pending: Vec<Reading> = Vec::new();
    let mut pending_bytes = 0;
    let flush = |pending: &mut Vec<Reading>, wire_bytes: &mut usize, batches: &mut Vec<Batch>| {
        for (i, chunk) in pending.chunks(limit).enumerate() {
            // The bytes they arrived as count once, with the first chunk.
            let wire = if i == 0 { std::mem::take(wire_bytes) } else { 0 };
            batches.push(Batch { bytes: encode_batch(chunk), readings: chunk.len() as u64, wire_bytes: wire });
        }
        pending.clear();
    };
    for payload in payloads {
        match parse_payload(payload) {
            Ok(Payload::Readings(readings)) => {
                pending.extend(readings);
                pending_bytes += payload.len();
            }
            Ok(Payload::Batch(bytes, count)) => {
                flush(&mut pending, &mut pending_bytes, &mut batches);
                if count as usize <= limit {
                    batches.push(Batch { bytes, readings: u64::from(count), wire_bytes: payload.len() });
                } else {
                    pending = decode_batch(&bytes).unwrap_or_default();
                    pending_bytes = payload.len();
                    flush(&mut pending, &mut pending_bytes, &mut batches);
                }
            }
            Err(e) => malformed.push(e),
        }
    }
    flush(&mut pending, &mut pending_bytes, &mut batches);
    (batches, malformed)
}

enum Payload {
    Readings(Vec<Reading>),
    /// A binary batch and its reading count.
    Batch(Vec<u8>, u32),
}

fn parse_payload(payload: &[u8]) -> Result<Payload, String> {
    match payload.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'{') => {
            let reading: Reading =
                serde_json::from_slice(payload).map_err(|e| format!("expected a reading {{ts, device, metric, value}}: {e}"))?;
            check_readings(std::slice::from_ref(&reading))?;
            Ok(Payload::Readings(vec![reading]))
        }
        Some(b'[') => {
            let readings: Vec<Reading> = serde_json::from_slice(payload).map_err(|e| format!("expected an array of readings: {e}"))?;
            check_readings(&readings)?;
            Ok(Payload::Readings(readings))
        }
        _ => match validate_batch(payload) {
            Ok(count) => Ok(Payload::Batch(payload.to_vec(), count)),
            // Text that is not JSON is a common mistake; say so rather than how a binary
            // batch would fail to parse it.
            Err(_) if std::str::from_utf8(payload).is_ok_and(|t| t.chars().all(|c| !c.is_control() || c.is_whitespace())) => {
                let shown: String = String::from_utf8_lossy(payload).chars().take(40).collect();
                Err(format!("not JSON (a reading object or an array of them) nor a binary batch: {shown:?}"))
            }
            Err(e) => Err(e.to_string()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_of_any_size_become_batches_within_the_limit_in_order() {
        let reading = |ts: u64| Reading { ts, device: "d".into(), metric: "m".into(), value: 1.0 };
        let json = |range: std::ops::Range<u64>| serde_json::to_vec(&range.map(reading).collect::<Vec<_>>()).expect("json");
        let binary = |range: std::ops::Range<u64>| encode_batch(&range.map(reading).collect::<Vec<_>>());
        let payloads = [json(0..3), binary(3..25), b"oops".to_vec(), json(25..26), binary(26..28), json(28..40)];
        let (batches, malformed) = batches(payloads.iter().map(|p| &p[..]), 10);
        assert_eq!(malformed.len(), 1, "{malformed:?}");
        assert!(batches.iter().all(|b| (1..=10).contains(&b.readings)), "{:?}", batches.iter().map(|b| b.readings).collect::<Vec<_>>());
        let timestamps: Vec<u64> = batches.iter().flat_map(|b| decode_batch(&b.bytes).expect("a valid batch")).map(|r| r.ts).collect();
        assert_eq!(timestamps, (0..40).collect::<Vec<_>>(), "every reading once, in arrival order");
        let wire: usize = batches.iter().map(|b| b.wire_bytes).sum();
        assert_eq!(wire, payloads.iter().filter(|p| p.as_slice() != b"oops").map(Vec::len).sum::<usize>(), "arrival bytes counted once");
    }

    #[test]
    fn payloads_say_what_they_are_not() {
        let text = parse_payload(b"hello world").err().expect("refused");
        assert!(text.starts_with("not JSON") && text.contains("hello world"), "{text}");
        let nan = encode_batch(&[Reading { ts: 1, device: "d".into(), metric: "m".into(), value: f64::NAN }]);
        assert!(parse_payload(&nan).err().expect("refused").contains("finite"));
        assert!(matches!(parse_payload(br#"[{"ts":1,"device":"d","metric":"m","value":2}]"#), Ok(Payload::Readings(r)) if r.len() == 1));
    }
}
