//! Each EdgeNode's `Ready` condition, kept equal to what the leader's liveness says.

use edgeplane_api::resources::{Condition, EdgeNodeStatus};
use serde_json::Value;

use super::Planning;
use crate::events::{EventType, Regarding};
use crate::health::Health;
use crate::{ClusterState, ObjectKey, StoredObject};

/// A status write for every node whose `Ready` condition does not say what the liveness says.
pub(super) fn record_transitions(state: &ClusterState, p: &mut Planning<'_>) {
    for (key, object) in state.list("edgenodes", Some("")) {
        if let Some((resource, health, message)) = transition(key, object, p) {
            let (reason, type_) = match health {
                Health::Ready => ("NodeReady", EventType::Normal),
                Health::Suspect => ("NodeSuspect", EventType::Warning),
                Health::Down => ("NodeDown", EventType::Warning),
            };
            p.events.record(Regarding::object("EdgeNode", key, &object.value), type_, reason, "Judging", message.to_owned());
            p.write_status(key.clone(), object, resource);
        }
    }
}

fn transition(key: &ObjectKey, object: &StoredObject, p: &Planning<'_>) -> Option<(Value, Health, &'static str)> {
    let health: Health = *p.live.health.get(&key.name)?;
    let (status, reason) = health.condition();
    let mut current: EdgeNodeStatus = object.value.get("status").and_then(|s| serde_json::from_value(s.clone()).ok()).unwrap_or_default();
    if current.conditions.iter().any(|c| c.type_ == "Ready" && c.status == status && c.reason == reason) {
        return None;
    }
    let message = match health {
        Health::Ready => "heartbeats arrive",
        Health::Suspect => "heartbeats missed; no new replicas are placed here",
        Health::Down => "no heartbeats for longer than the grace period; replicas are moved elsewhere",
    };
    current.conditions.retain(|c| c.type_ != "Ready");
    current.conditions.push(Condition {
        type_: "Ready".to_owned(),
        status: status.to_owned(),
        reason: reason.to_owned(),
        message: message.to_owned(),
        last_transition_time: Some(p.now.rfc3339.to_owned()),
    });
    let mut resource = Value::clone(&object.value);
    resource["status"] = serde_json::to_value(current).expect("a status serializes");
    Some((resource, health, message))
}
