//! `edgectl top nodes`: what every edge node is doing, from the heartbeats the leader holds.
//!
//! Per node: health, instances running, CPU, readings taken in, the bytes they arrived as and
//! the bytes sent up to the cloud (the difference is what processing at the edge saved), the
//! records waiting in the outbox, and the readings lost after acceptance (a workload that
//! trapped on them, an unreachable sink). Counters run from each runtime's start; `-o json`
//! has the whole heartbeat, outbox drops included.

use edgeplane_api::node::{heartbeat_path, InstancePhase, NodeLiveness};
use edgeplane_api::paths;
use edgeplane_client::Method;
use serde_json::Value;

use crate::resources::node_status;
use crate::{Client, Failure};

pub async fn nodes(client: &Client, json: bool) -> Result<(), Failure> {
    let (_, list): (_, Value) = client.call(Method::GET, &format!("{}/edgenodes", paths::RESOURCES), &[], None).await?;
    let mut rows = Vec::new();
    for node in list["items"].as_array().into_iter().flatten() {
        let name = node["metadata"]["name"].as_str().unwrap_or_default().to_owned();
        // A node never heard from since this leader took over has no heartbeat to show.
        let liveness = match client.call::<NodeLiveness>(Method::GET, &heartbeat_path(&name), &[], None).await {
            Ok((_, liveness)) => Some(liveness),
            Err(Failure::Refused(status)) if status.code == 404 => None,
            Err(e) => return Err(e),
        };
        rows.push((name, node_status(node), liveness));
    }
    if json {
        let nodes: Vec<Value> = rows
            .iter()
            .map(|(name, status, liveness)| serde_json::json!({ "name": name, "status": status, "liveness": liveness }))
            .collect();
        outln!("{}", serde_json::to_string_pretty(&nodes).expect("serializable"));
        return Ok(());
    }
    outln!(
        "{:<16} {:<8} {:>9} {:>9} {:>6} {:>12} {:>10} {:>10} {:>6} {:>8} {:>8}",
        "NODE",
        "STATUS",
        "HEARD",
        "INSTANCES",
        "CPU",
        "READINGS-IN",
        "BYTES-IN",
        "BYTES-UP",
        "SAVED",
        "OUTBOX",
        "DROPPED"
    );
    for (name, status, liveness) in rows {
        let Some(l) = liveness else {
            outln!("{name:<16} {status:<8} {:>9}", "never");
            continue;
        };
        let d = &l.heartbeat.data;
        let running = l.heartbeat.instances.iter().filter(|i| i.phase == InstancePhase::Running).count();
        outln!(
            "{name:<16} {status:<8} {:>9} {:>9} {:>6} {:>12} {:>10} {:>10} {:>6} {:>8} {:>8}",
            format!("{:.1}s ago", l.age_ms as f64 / 1000.0),
            format!("{running}/{}", l.heartbeat.instances.len()),
            format!("{}m", l.heartbeat.load.cpu_millis),
            d.readings_in,
            bytes(d.bytes_in),
            bytes(d.bytes_up),
            saved(d.bytes_in, d.bytes_up),
            d.outbox_pending_records,
            d.readings_dropped,
        );
    }
    Ok(())
}

/// The share of the bytes that came in which did not have to go up.
fn saved(bytes_in: u64, bytes_up: u64) -> String {
    if bytes_in == 0 {
        return "-".to_owned();
    }
    format!("{:.1}%", 100.0 * (1.0 - bytes_up as f64 / bytes_in as f64))
}

fn bytes(n: u64) -> String {
    match n {
        n if n >= 10 << 20 => format!("{} MiB", n >> 20),
        n if n >= 10 << 10 => format!("{} KiB", n >> 10),
        n => format!("{n} B"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn savings_and_sizes_read_naturally() {
        assert_eq!(saved(0, 0), "-");
        assert_eq!(saved(1000, 25), "97.5%");
        // Uploads can outgrow the input (a workload that emits more than it reads).
        assert_eq!(saved(100, 150), "-50.0%");
        assert_eq!(bytes(999), "999 B");
        assert_eq!(bytes(20 << 10), "20 KiB");
        assert_eq!(bytes(30 << 20), "30 MiB");
    }
}
