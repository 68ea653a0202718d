//! Rollouts: a changed template (module, configuration, Model, limits) rolls over a
//! Workload's replicas at most `rollout.maxUnavailable` away from healthy at once, a replica
//! counting as updated only once it reports Running on its new module. When an updated
//! replica fails (CrashLoop or Failed, or not Running within the health gate) and
//! `autoRollback` is on, the Workload's module and configuration go back to what they were,
//! and the status says why.

use crate::events::{EventType, Regarding};
use edgeplane_api::resources::{AssignmentSpec, PreviousRevision, RolloutPhase, RolloutStatus};
use serde_json::{json, Value};

use super::assignment::{self, generation_of, Existing};
use super::workload::Subject;
use super::Planning;
use crate::{Command, Precondition, ResourceWrite};

/// What the rollout step decided for the Workload.
pub(super) struct Step {
    /// The `status.rollout` to have (None: none yet).
    pub status: Option<RolloutStatus>,
    /// Whether the Workload's status may be written in this plan (not after a rollback, which
    /// writes the whole Workload).
    pub status_write: bool,
    /// Replicas are being updated: no rebalancing meanwhile.
    pub active: bool,
}

/// A replica on the new revision that failed: which, where, why.
struct Failure {
    replica: String,
    node: String,
    why: String,
}

/// What the rollout of the Workload's current generation has come to.
struct Progress {
    generation: i64,
    current: Option<RolloutStatus>,
    replicas: u32,
    updated: u32,
    /// The rollback's own rollout (the revision right after the one that failed) keeps saying
    /// so until the next change.
    after_rollback: bool,
    /// What a rollback returns to.
    previous: Option<PreviousRevision>,
    /// When the scheduler last updated replicas of this revision.
    step_started: u64,
    failure: Option<Failure>,
    /// While a rollout waits out its health gate: when the gate ends, the moment a replica
    /// not yet Running becomes a failure with nothing else changed.
    gate_ends_at_ms: Option<u64>,
}

/// Rolls the template over the replicas `outdated` still lack (`settled` have it).
pub(super) fn roll_out(w: &Subject<'_>, settled: &[Existing], mut outdated: Vec<(Existing, AssignmentSpec)>, p: &mut Planning<'_>) -> Step {
    let live = p.live;
    let healthy =
        |e: &Existing| live.running.contains(&e.instance()) && live.digests.get(&e.instance()).is_none_or(|d| *d == e.spec.module_digest);
    let progress = assess(w, settled, &outdated, &healthy, p);
    if let Some(at) = progress.gate_ends_at_ms {
        p.plan.revisit_at_ms = Some(p.plan.revisit_at_ms.map_or(at, |earlier| earlier.min(at)));
    }
    if let (Some(failure), Some(previous), true, false) =
        (&progress.failure, &progress.previous, w.spec.rollout.auto_rollback, progress.after_rollback)
    {
        roll_back(w, &progress, failure, previous, p);
        return Step { status: None, status_write: false, active: true };
    }
    if outdated.is_empty() {
        return settle(progress);
    }
    // Outdated replicas that are not healthy anyway are updated at once (that costs no
    // availability); healthy ones as far as the budget of unavailable replicas allows.
    let unavailable = settled.iter().filter(|e| !healthy(e)).count() as u32 + outdated.iter().filter(|(e, _)| !healthy(e)).count() as u32;
    let allowed = w.spec.rollout.max_unavailable.max(1).saturating_sub(unavailable) as usize;
    outdated.sort_by(|a, b| (healthy(&a.0), &a.0.key.name).cmp(&(healthy(&b.0), &b.0.key.name)));
    let broken = outdated.iter().filter(|(e, _)| !healthy(e)).count();
    let step_started = if broken + allowed > 0 { p.now.unix_ms } else { progress.step_started };
    for (e, spec) in outdated.iter().take(broken + allowed) {
        p.plan.commands.push(Command::PutResource {
            key: e.key.clone(),
            resource: assignment::render(&e.key, spec, e.placed_because()),
            precondition: Precondition::ResourceVersion(e.object.resource_version),
            write: ResourceWrite::Replace,
        });
    }
    let Progress { generation, current, replicas, updated, after_rollback, previous, failure, .. } = progress;
    let (phase, message) = match (&failure, after_rollback) {
        (_, true) => (RolloutPhase::RolledBack, current.as_ref().map(|c| c.message.clone()).unwrap_or_default()),
        (Some(f), false) => {
            (RolloutPhase::Progressing, format!("replica {} on {} fails on revision {generation}: {}", f.replica, f.node, f.why))
        }
        (None, false) => (RolloutPhase::Progressing, format!("{updated} of {replicas} replicas updated, {} waiting", outdated.len())),
    };
    let revision = if after_rollback { current.as_ref().map_or(generation, |c| c.revision) } else { generation };
    let status = RolloutStatus { revision, phase, updated, replicas, message, step_started_ms: step_started, previous };
    Step { status: Some(status), status_write: true, active: true }
}

fn assess(
    w: &Subject<'_>,
    settled: &[Existing],
    outdated: &[(Existing, AssignmentSpec)],
    healthy: &dyn Fn(&Existing) -> bool,
    p: &Planning<'_>,
) -> Progress {
    let live = p.live;
    let generation = generation_of(w.object);
    let current: Option<RolloutStatus> =
        w.object.value.get("status").and_then(|s| s.get("rollout")).and_then(|r| serde_json::from_value(r.clone()).ok());
    let after_rollback = current.as_ref().is_some_and(|c| c.phase == RolloutPhase::RolledBack && generation == c.revision + 1);
    // A rollout under way started from what its status remembers; a new one from what the
    // replicas run now.
    let previous = match &current {
        Some(c) if c.revision == generation || after_rollback => c.previous.clone(),
        _ => outdated.first().map(|(e, _)| PreviousRevision { module: e.spec.module_ref.clone(), config: e.spec.config.clone() }),
    };
    let gate_ms = w.spec.rollout.health_gate_seconds.saturating_mul(1000);
    let step_started = current.as_ref().filter(|c| c.revision == generation).map_or(p.now.unix_ms, |c| c.step_started_ms);
    let late = p.now.unix_ms.saturating_sub(step_started) > gate_ms;
    // A replica on the new revision that failed, or that has not come up within the health
    // gate since the scheduler last updated replicas.
    let failure = settled.iter().find_map(|e| {
        let failed = |why: String| Some(Failure { replica: e.key.name.clone(), node: e.spec.node_name.clone(), why });
        match live.failed.get(&e.instance()) {
            Some(why) => failed(why.clone()),
            None if late && !healthy(e) && live.is_ready(&e.spec.node_name) => {
                failed(format!("not Running {}s after its update", w.spec.rollout.health_gate_seconds))
            }
            None => None,
        }
    });
    let in_rollout =
        !outdated.is_empty() || current.as_ref().is_some_and(|c| c.revision == generation && c.phase == RolloutPhase::Progressing);
    Progress {
        generation,
        replicas: (settled.len() + outdated.len()) as u32,
        updated: settled.iter().filter(|e| healthy(e)).count() as u32,
        current,
        after_rollback,
        previous,
        step_started,
        failure: failure.filter(|_| in_rollout),
        gate_ends_at_ms: (in_rollout && !late).then(|| step_started.saturating_add(gate_ms).saturating_add(1)),
    }
}

/// Back to the previous module and configuration, in a spec write guarded by the version
/// read; the status says why. The next plans roll that back out like any change.
fn roll_back(w: &Subject<'_>, progress: &Progress, failure: &Failure, previous: &PreviousRevision, p: &mut Planning<'_>) {
    let generation = progress.generation;
    let mut resource = Value::clone(&w.object.value);
    resource["spec"]["module"] = json!(previous.module);
    match &previous.config {
        Some(config) => resource["spec"]["config"] = json!(config),
        None => drop(resource["spec"].as_object_mut().and_then(|s| s.remove("config"))),
    }
    let rollout = RolloutStatus {
        revision: generation,
        phase: RolloutPhase::RolledBack,
        updated: progress.updated,
        replicas: progress.replicas,
        message: format!(
            "rolled back to {}: replica {} on {} failed on revision {generation}: {}",
            previous.module, failure.replica, failure.node, failure.why
        ),
        step_started_ms: progress.step_started,
        previous: Some(previous.clone()),
    };
    resource["status"]["rollout"] = serde_json::to_value(&rollout).expect("a status serializes");
    let key = w.key();
    let note = format!("revision {generation}: {}", rollout.message);
    p.events.record(Regarding::object("Workload", &key, &w.object.value), EventType::Warning, "RolledBack", "RollingOut", note);
    p.plan.commands.push(Command::PutResource {
        key: key.clone(),
        resource: resource.clone(),
        precondition: Precondition::ResourceVersion(w.object.resource_version),
        write: ResourceWrite::Replace,
    });
    // Same transaction, right after the replace (whose precondition guards both).
    p.plan.commands.push(Command::PutResource { key, resource, precondition: Precondition::None, write: ResourceWrite::Status });
}

/// Every replica has the template: a rollout of this revision completes once all of them run
/// it (a rollback's own rollout keeps saying it rolled back).
fn settle(progress: Progress) -> Step {
    let Progress { generation, current, replicas, updated, after_rollback, .. } = progress;
    let status = match current {
        Some(mut c) if (c.revision == generation && c.phase == RolloutPhase::Progressing) || after_rollback => {
            c.updated = updated;
            c.replicas = replicas;
            if updated == replicas && !after_rollback {
                c.phase = RolloutPhase::Complete;
                c.message = format!("{updated} of {replicas} replicas run revision {generation}");
            }
            Some(c)
        }
        other => other,
    };
    let active = status.as_ref().is_some_and(|c| c.phase == RolloutPhase::Progressing);
    Step { status, status_write: true, active }
}
