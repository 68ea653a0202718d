//! `edgectl rollout status|history|undo WORKLOAD`: a Workload's rollouts, which the scheduler
//! drives (docs in ARCHITECTURE.md, placement).

use std::time::{Duration, Instant};

use edgeplane_api::paths;
use edgeplane_client::Method;
use serde_json::Value;

use crate::{Client, Failure};

fn path(namespace: &str, name: &str) -> String {
    format!("{}/namespaces/{namespace}/workloads/{name}", paths::RESOURCES)
}

/// Prints where the rollout stands; with `wait`, follows it until it is no longer
/// progressing. Fails (exit 1) when it was rolled back.
pub async fn status(client: &Client, namespace: &str, name: &str, wait: Option<Duration>) -> Result<(), Failure> {
    let deadline = wait.map(|w| Instant::now() + w);
    let mut last = String::new();
    loop {
        let (_, workload): (_, Value) = client.call(Method::GET, &path(namespace, name), &[], None).await?;
        let rollout = &workload["status"]["rollout"];
        let line = if rollout.is_null() {
            format!("workload {namespace}/{name}: no rollout yet (module {})", workload["spec"]["module"].as_str().unwrap_or("?"))
        } else {
            format!(
                "workload {namespace}/{name} revision {}: {}, {} of {} replicas updated{}",
                rollout["revision"],
                rollout["phase"].as_str().unwrap_or("?"),
                rollout["updated"],
                rollout["replicas"],
                rollout["message"].as_str().filter(|m| !m.is_empty()).map_or(String::new(), |m| format!(" ({m})"))
            )
        };
        if line != last {
            outln!("{line}");
            last = line;
        }
        let phase = rollout["phase"].as_str().unwrap_or("");
        // Until the scheduler has seen the latest spec, what the status says is about an
        // older one.
        let seen = workload["status"]["observedGeneration"] == workload["metadata"]["generation"];
        if phase == "RolledBack" && seen {
            return Err(Failure::Refused(Box::new(edgeplane_api::Status::new(
                409,
                edgeplane_api::StatusReason::Conflict,
                "the rollout was rolled back",
            ))));
        }
        match deadline {
            Some(deadline) if phase == "Progressing" || !seen => {
                if Instant::now() >= deadline {
                    return Err(Failure::Unreachable("the rollout is still progressing".to_owned()));
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            _ => return Ok(()),
        }
    }
}

/// The Workload's recent revisions (changes of its spec the orchestrators remember).
pub async fn history(client: &Client, namespace: &str, name: &str) -> Result<(), Failure> {
    let (_, events): (_, Value) = client.call(Method::GET, &format!("{}/events", path(namespace, name)), &[], None).await?;
    outln!("{:<12} {:<18} {:<72} WHAT", "GENERATION", "RESOURCEVERSION", "MODULE");
    for e in events["items"].as_array().into_iter().flatten() {
        let message = e["message"].as_str().unwrap_or_default();
        if message.starts_with("created") || message.contains("spec changed") {
            outln!(
                "{:<12} {:<18} {:<72} {message}",
                e["generation"].to_string(),
                e["resourceVersion"].as_str().unwrap_or_default(),
                e["module"].as_str().unwrap_or_default()
            );
        }
    }
    Ok(())
}

/// Puts the module and configuration from before the last rollout back (a new revision).
pub async fn undo(client: &Client, namespace: &str, name: &str) -> Result<(), Failure> {
    // The replace is conditional on the version read, which a status write by the scheduler
    // can move on: read again and retry a few times.
    let mut attempts = 0;
    loop {
        attempts += 1;
        match undo_once(client, namespace, name).await {
            Err(Failure::Refused(s)) if s.code == 409 && attempts < 5 => continue,
            result => return result,
        }
    }
}

async fn undo_once(client: &Client, namespace: &str, name: &str) -> Result<(), Failure> {
    let (_, mut workload): (_, Value) = client.call(Method::GET, &path(namespace, name), &[], None).await?;
    let previous = workload["status"]["rollout"]["previous"].clone();
    let Some(module) = previous["module"].as_str().map(str::to_owned) else {
        return Err(Failure::Usage(format!("workload {namespace}/{name} has no earlier revision to go back to")));
    };
    workload["spec"]["module"] = Value::String(module.clone());
    match previous.get("config") {
        Some(config) => workload["spec"]["config"] = config.clone(),
        None => drop(workload["spec"].as_object_mut().and_then(|s| s.remove("config"))),
    }
    if let Some(status) = workload.as_object_mut() {
        status.remove("status");
    }
    let _: (_, Value) = client.call(Method::PUT, &path(namespace, name), &[], Some(workload.to_string())).await?;
    outln!("workload.edgeplane.io/{name} rolled back to {module}");
    Ok(())
}
