//! MQTT ingest: the node subscribes (QoS 1, persistent session) to every topic one of its
//! workloads reads, and acknowledges a message only once the data plane has accepted it.
//!
//! Backpressure reaches the broker: while the data plane refuses (busy, a workload
//! restarting, the outbox full) the batch is retried and nothing is acknowledged, so the
//! broker stops sending once its in-flight window for this client is full, and keeps the rest
//! queued for us. A crash before the acknowledgement makes the broker send the message again
//! (MQTT's at-least-once).
//!
//! One task polls the connection (it must keep running for keep-alives and acknowledgements
//! to flow); it hands publications to the ingest task over a bounded channel. The ingest task
//! takes whatever has arrived, groups it by topic into batches, ingests them and then
//! acknowledges.
//!
//! Payloads: a JSON reading, a JSON array of readings, or a v1 binary batch.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use edgeplane_api::data::{encode_batch, validate_batch, Reading};
use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, Publish, QoS};
use tokio::sync::{mpsc, watch};

use crate::dataplane::{check_readings, DataPlane, Refused};

/// Publications taken in one go (and one outbox sync).
const BATCH_MESSAGES: usize = 1000;

/// Connects to the broker and runs MQTT ingest until the process stops. `topics` carries the
/// input topics of the instances running now.
pub async fn run(broker: String, client_id: String, dataplane: Arc<DataPlane>, topics: watch::Receiver<BTreeSet<String>>) {
    let (host, port) = match broker.rsplit_once(':').map(|(h, p)| (h, p.parse::<u16>())) {
        Some((host, Ok(port))) => (host.to_owned(), port),
        _ => (broker.clone(), 1883),
    };
    let mut options = MqttOptions::new(client_id, host, port);
    options.set_keep_alive(Duration::from_secs(5));
    // A persistent session: the broker keeps our subscriptions and queues QoS 1 messages
    // while we are away or slow.
    options.set_clean_session(false);
    options.set_manual_acks(true);
    options.set_max_packet_size(16 << 20, 16 << 20);
    // Requests (acknowledgements above all) wait here for the polling task. Pending
    // acknowledgements never outnumber the QoS 1 messages the broker lets us hold unacknowledged
    // (mosquitto's max_inflight_messages, at most 65,535), so with this capacity the ingest
    // task never waits for room while the polling task waits for it.
    let (client, eventloop) = AsyncClient::new(options, 1 << 16);
    dataplane.set_mqtt(client.clone());
    let (publications, received) = mpsc::channel(BATCH_MESSAGES);
    let (connected_tx, connected) = watch::channel(0u64);
    tokio::spawn(poll(eventloop, publications, connected_tx));
    tokio::spawn(subscriptions(client.clone(), topics, connected));
    ingest(client, dataplane, received).await;
}

/// Drives the connection; reconnects after a second when it drops.
async fn poll(mut eventloop: EventLoop, publications: mpsc::Sender<Publish>, connected: watch::Sender<u64>) {
    let mut warned = false;
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
                connected.send_modify(|n| *n += 1);
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
async fn subscriptions(client: AsyncClient, mut topics: watch::Receiver<BTreeSet<String>>, mut connected: watch::Receiver<u64>) {
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
            let _ = client.subscribe(topic.clone(), QoS::AtLeastOnce).await;
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

/// What arrived on one topic: JSON readings (ingested as one batch), binary batches (each as
/// it is), and the bytes of all of it.
type Arrivals = (Vec<Reading>, Vec<Vec<u8>>, usize);

async fn ingest(client: AsyncClient, dataplane: Arc<DataPlane>, mut received: mpsc::Receiver<Publish>) {
    let mut messages = Vec::with_capacity(BATCH_MESSAGES);
    loop {
        if received.recv_many(&mut messages, BATCH_MESSAGES).await == 0 {
            return;
        }
        let mut by_topic: BTreeMap<String, Arrivals> = BTreeMap::new();
        for message in &messages {
            let entry = by_topic.entry(message.topic.clone()).or_default();
            entry.2 += message.payload.len();
            match parse_payload(&message.payload) {
                Ok(Payload::Readings(readings)) => entry.0.extend(readings),
                Ok(Payload::Batch(batch)) => entry.1.push(batch),
                Err(e) => tracing::warn!(topic = %message.topic, "dropping a malformed MQTT message: {e}"),
            }
        }
        for (topic, (readings, batches, wire_bytes)) in by_topic {
            if !readings.is_empty() {
                let count = readings.len() as u64;
                deliver(&dataplane, &topic, encode_batch(&readings), count, wire_bytes).await;
            }
            for batch in batches {
                let count = u64::from(validate_batch(&batch).unwrap_or(0));
                deliver(&dataplane, &topic, batch, count, 0).await;
            }
        }
        for message in messages.drain(..) {
            if let Err(e) = client.ack(&message).await {
                tracing::warn!("cannot acknowledge an MQTT message: {e}");
            }
        }
    }
}

/// Ingests one batch, waiting out backpressure; gives up only on data with nowhere to go.
async fn deliver(dataplane: &DataPlane, topic: &str, batch: Vec<u8>, count: u64, wire_bytes: usize) {
    let mut wait = Duration::from_millis(5);
    loop {
        match dataplane.ingest(topic, batch.clone(), count, wire_bytes).await {
            Ok(()) => return,
            Err(Refused::NoSubscriber(_)) => {
                // Unsubscribed while the message was on its way: nothing here reads it.
                tracing::warn!(%topic, readings = count, "dropping MQTT readings: no workload reads the topic any more");
                return;
            }
            Err(Refused::TooLarge(..)) => {
                tracing::warn!(%topic, readings = count, "dropping an MQTT batch larger than the node's in-flight limit");
                return;
            }
            Err(e) => {
                tracing::debug!(%topic, "MQTT ingest waits: {e}");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_millis(500));
            }
        }
    }
}

enum Payload {
    Readings(Vec<Reading>),
    Batch(Vec<u8>),
}

fn parse_payload(payload: &[u8]) -> Result<Payload, String> {
    match payload.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'{') => {
            let reading: Reading = serde_json::from_slice(payload).map_err(|e| format!("expected a reading {{ts, device, metric, value}}: {e}"))?;
            check_readings(std::slice::from_ref(&reading))?;
            Ok(Payload::Readings(vec![reading]))
        }
        Some(b'[') => {
            let readings: Vec<Reading> = serde_json::from_slice(payload).map_err(|e| format!("expected an array of readings: {e}"))?;
            check_readings(&readings)?;
            Ok(Payload::Readings(readings))
        }
        _ => validate_batch(payload).map(|_| Payload::Batch(payload.to_vec())).map_err(|e| e.to_string()),
    }
}
