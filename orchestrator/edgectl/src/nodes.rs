//! `edgectl node cordon|uncordon|drain`.
//!
//! Cordon sets `spec.cordoned`: the scheduler places nothing new on the node. Drain cordons,
//! then evicts the node's replicas (deletes their Assignments) so that the scheduler places
//! them on other nodes, each with a new generation. Daemon replicas stay: they belong to the
//! node (as Kubernetes' drain leaves DaemonSet pods).

use edgeplane_api::node::NODE_LABEL;
use edgeplane_api::paths;
use edgeplane_client::Method;
use serde_json::{json, Value};

use crate::{Client, Failure};

pub async fn set_cordoned(client: &Client, node: &str, cordoned: bool) -> Result<(), Failure> {
    let path = format!("{}/edgenodes/{node}", paths::RESOURCES);
    let patch = json!({ "spec": { "cordoned": cordoned } }).to_string().into_bytes();
    let _: (_, Value) = client.call_with(Method::PATCH, &path, &[], Some((patch, "application/merge-patch+json"))).await?;
    outln!("edgenode.edgeplane.io/{node} {}", if cordoned { "cordoned" } else { "uncordoned" });
    Ok(())
}

pub async fn drain(client: &Client, node: &str) -> Result<(), Failure> {
    set_cordoned(client, node, true).await?;
    let selector = [("labelSelector", format!("{NODE_LABEL}={node}"))];
    let (_, assignments): (_, Value) = client.call(Method::GET, &format!("{}/assignments", paths::RESOURCES), &selector, None).await?;
    let (_, workloads): (_, Value) = client.call(Method::GET, &format!("{}/workloads", paths::RESOURCES), &[], None).await?;
    let daemon = |namespace: &str, workload: &str| {
        workloads["items"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|w| w["metadata"]["namespace"] == namespace && w["metadata"]["name"] == workload && w["spec"]["mode"] == "daemon")
    };
    let mut evicted = 0;
    for assignment in assignments["items"].as_array().into_iter().flatten() {
        let namespace = assignment["metadata"]["namespace"].as_str().unwrap_or_default();
        let name = assignment["metadata"]["name"].as_str().unwrap_or_default();
        let workload = assignment["spec"]["workload"].as_str().unwrap_or_default();
        if daemon(namespace, workload) {
            outln!("assignment {namespace}/{name} kept (daemon workload {workload})");
            continue;
        }
        let path = format!("{}/namespaces/{namespace}/assignments/{name}", paths::RESOURCES);
        let _: (_, Value) = client.call(Method::DELETE, &path, &[], None).await?;
        outln!("assignment {namespace}/{name} evicted (workload {workload})");
        evicted += 1;
    }
    outln!("edgenode.edgeplane.io/{node} drained: {evicted} replica(s) evicted; the scheduler places them elsewhere");
    Ok(())
}
