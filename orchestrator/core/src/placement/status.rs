//! A Workload's status as the scheduler keeps it: replicas placed and ready, the observed
//! generation, the `Scheduled` condition (with why not, when replicas are pending) and the
//! rollout. The scheduler owns those fields and that condition; other conditions are kept.

use edgeplane_api::resources::{Condition, RolloutPhase, RolloutStatus, WorkloadStatus};
use serde_json::Value;

use super::assignment::generation_of;
use super::Planning;
use crate::events::{EventType, Regarding};
use crate::{ObjectKey, StoredObject};

/// What this plan leaves of one Workload.
pub(super) struct Observed<'r> {
    pub placed: u32,
    pub ready: u32,
    /// Why replicas are pending, if some are.
    pub unplaced: Option<&'r str>,
    pub rollout: Option<RolloutStatus>,
}

/// A status write when the Workload's status does not say what the plan leaves.
pub(super) fn record(key: ObjectKey, object: &StoredObject, observed: Observed<'_>, p: &mut Planning<'_>) {
    let (status, reason, message) = match observed.unplaced {
        None => ("True", "Placed", format!("{} replica(s) placed", observed.placed)),
        Some(why) => ("False", "Unschedulable", why.to_owned()),
    };
    let current: WorkloadStatus = object.value.get("status").and_then(|s| serde_json::from_value(s.clone()).ok()).unwrap_or_default();
    let scheduled = current.conditions.iter().find(|c| c.type_ == "Scheduled");
    let scheduled_first = current.conditions.first().is_some_and(|c| c.type_ == "Scheduled");
    let generation = generation_of(object);
    let same = current.replicas == observed.placed
        && current.ready_replicas == observed.ready
        && current.observed_generation == generation
        && current.rollout == observed.rollout
        && scheduled_first
        && scheduled.is_some_and(|c| c.status == status && c.message == message);
    if same {
        return;
    }
    let workload = Regarding::object("Workload", &key, &object.value);
    if status == "False" && !scheduled.is_some_and(|c| c.status == status && c.message == message) {
        p.events.record(workload.clone(), EventType::Warning, "FailedScheduling", "Scheduling", message.clone());
    }
    if let Some(next) = observed.rollout.as_ref().filter(|next| current.rollout.as_ref() != Some(*next)) {
        let before = current.rollout.as_ref().filter(|c| c.revision == next.revision);
        let (reason, type_) = match next.phase {
            RolloutPhase::RolledBack => ("RolledBack", EventType::Warning),
            RolloutPhase::Complete => ("RolloutComplete", EventType::Normal),
            RolloutPhase::Progressing => ("RollingOut", EventType::Normal),
        };
        // Each step of a progressing rollout, and each change of phase, once.
        let changed =
            before.is_none_or(|b| b.phase != next.phase || (next.phase == RolloutPhase::Progressing && b.updated != next.updated));
        if changed {
            let note = if next.message.is_empty() {
                format!("revision {}: {} of {} replica(s) updated", next.revision, next.updated, next.replicas)
            } else {
                format!("revision {}: {}", next.revision, next.message)
            };
            p.events.record(workload, type_, reason, "RollingOut", note);
        }
    }
    let since = match scheduled {
        Some(c) if c.status == status => c.last_transition_time.clone(),
        _ => Some(p.now.rfc3339.to_owned()),
    };
    let mut conditions: Vec<Condition> = current.conditions.iter().filter(|c| c.type_ != "Scheduled").cloned().collect();
    conditions.insert(
        0,
        Condition {
            type_: "Scheduled".to_owned(),
            status: status.to_owned(),
            reason: reason.to_owned(),
            message,
            last_transition_time: since,
        },
    );
    let next = WorkloadStatus {
        observed_generation: generation,
        replicas: observed.placed,
        ready_replicas: observed.ready,
        conditions,
        rollout: observed.rollout,
    };
    let mut resource = Value::clone(&object.value);
    resource["status"] = serde_json::to_value(next).expect("a status serializes");
    p.write_status(key, object, resource);
}
