//! Events: what the scheduler and the health checks decided, as `events.k8s.io/v1` Event
//! objects a person can list (`kubectl get events`, `kubectl describe`, `edgectl describe`).
//!
//! Pure, like the planner that writes them: [`Events`] collects what one plan records, folds
//! repeats (same object, reason and note) into one Event with a count, first and last time,
//! and turns them into writes against the state the plan was made from ([`Events::commands`]).
//! They expire after [`TTL_SECONDS`] and there are never more than [`MAX_EVENTS`]: the leader
//! collects the rest ([`expired`]).

use std::collections::BTreeMap;

use serde_json::{json, Value};
use sha2::Digest as _;

use crate::{ClusterState, Command, ObjectKey, Precondition};

/// The store kind of Events (managed: written only by the orchestrators).
pub const EVENTS: &str = "events";
/// Events of cluster-scoped objects (EdgeNodes) live in this namespace, as in Kubernetes.
pub const CLUSTER_EVENTS_NAMESPACE: &str = "default";
/// How long an Event is kept after it last happened.
pub const TTL_SECONDS: u64 = 3600;
/// Events kept at most; the oldest go first.
pub const MAX_EVENTS: usize = 10_000;
/// Events one plan records at most (a plan is one Raft entry); the rest are left out, and
/// the decisions stay visible on the objects (placed-because, conditions, rollout status).
pub const MAX_EVENTS_PER_PLAN: usize = 256;
/// Who reports them.
pub const REPORTING_CONTROLLER: &str = "edgeplane.io/scheduler";

/// `Normal` or `Warning`, as Kubernetes has them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Normal,
    Warning,
}

impl EventType {
    fn as_str(self) -> &'static str {
        match self {
            EventType::Normal => "Normal",
            EventType::Warning => "Warning",
        }
    }
}

/// The object an Event is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Regarding {
    pub kind: &'static str,
    /// Empty for cluster-scoped objects.
    pub namespace: String,
    pub name: String,
    pub uid: Option<String>,
}

impl Regarding {
    /// The stored object `key` of `kind`, with its uid.
    pub fn object(kind: &'static str, key: &ObjectKey, value: &Value) -> Regarding {
        Regarding {
            kind,
            namespace: key.namespace.clone(),
            name: key.name.clone(),
            uid: value.pointer("/metadata/uid").and_then(Value::as_str).map(str::to_owned),
        }
    }
}

/// One thing that happened.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Happened {
    regarding: Regarding,
    type_: EventType,
    reason: &'static str,
    action: &'static str,
    note: String,
    /// Times it happened in this plan.
    count: u64,
}

/// What one plan records, folded.
#[derive(Debug, Default)]
pub struct Events {
    by_key: BTreeMap<ObjectKey, Happened>,
    /// Left out past [`MAX_EVENTS_PER_PLAN`].
    pub dropped: u64,
}

impl Events {
    /// Records that `reason` happened to `regarding`; `action` is what was done (Kubernetes'
    /// `action`: Scheduling, Placing, Judging, RollingOut).
    pub fn record(&mut self, regarding: Regarding, type_: EventType, reason: &'static str, action: &'static str, note: String) {
        let key = event_key(&regarding, reason, &note);
        if let Some(seen) = self.by_key.get_mut(&key) {
            seen.count += 1;
            return;
        }
        if self.by_key.len() >= MAX_EVENTS_PER_PLAN {
            self.dropped += 1;
            return;
        }
        self.by_key.insert(key, Happened { regarding, type_, reason, action, note, count: 1 });
    }

    /// The writes that record them at `now` (RFC 3339): a new Event, or the count and last
    /// time of the one already stored, each conditional on what `state` holds.
    pub fn commands(self, state: &ClusterState, now: &str) -> Vec<Command> {
        self.by_key
            .into_iter()
            .map(|(key, happened)| {
                let existing = state.get(&key);
                let (first, before) = match existing {
                    Some(e) => (
                        e.value.get("deprecatedFirstTimestamp").and_then(Value::as_str).unwrap_or(now).to_owned(),
                        e.value.get("deprecatedCount").and_then(Value::as_u64).unwrap_or(1),
                    ),
                    None => (now.to_owned(), 0),
                };
                let value = render(&key, &happened, &first, now, before + happened.count);
                let precondition = existing.map_or(Precondition::MustNotExist, |e| Precondition::ResourceVersion(e.resource_version));
                Command::Put { key, value, precondition }
            })
            .collect()
    }
}

/// Repeats of one (object, reason, note) share a name, so they fold into one Event.
fn event_key(regarding: &Regarding, reason: &str, note: &str) -> ObjectKey {
    let digest = sha2::Sha256::digest(format!("{}\n{}\n{}\n{reason}\n{note}", regarding.kind, regarding.namespace, regarding.name));
    let hash = edgeplane_api::hex::encode(&digest[..8]);
    let namespace = if regarding.namespace.is_empty() { CLUSTER_EVENTS_NAMESPACE } else { regarding.namespace.as_str() };
    ObjectKey::new(EVENTS, namespace, format!("{}.{hash}", regarding.name))
}

fn render(key: &ObjectKey, h: &Happened, first: &str, now: &str, count: u64) -> Value {
    let mut regarding = json!({
        "apiVersion": edgeplane_api::resources::API_VERSION,
        "kind": h.regarding.kind,
        "name": h.regarding.name,
    });
    if !h.regarding.namespace.is_empty() {
        regarding["namespace"] = json!(h.regarding.namespace);
    }
    if let Some(uid) = &h.regarding.uid {
        regarding["uid"] = json!(uid);
    }
    let mut event = json!({
        "apiVersion": "events.k8s.io/v1",
        "kind": "Event",
        "metadata": { "name": key.name, "namespace": key.namespace, "creationTimestamp": first },
        "eventTime": micro_time(first),
        "reportingController": REPORTING_CONTROLLER,
        "reportingInstance": "leader",
        "action": h.action,
        "reason": h.reason,
        "regarding": regarding,
        "note": h.note,
        "type": h.type_.as_str(),
        "deprecatedCount": count,
        "deprecatedFirstTimestamp": first,
        "deprecatedLastTimestamp": now,
        "deprecatedSource": { "component": "edgeplane-scheduler" },
    });
    if count > 1 {
        event["series"] = json!({ "count": count, "lastObservedTime": micro_time(now) });
    }
    event
}

/// `eventTime` and `series.lastObservedTime` are Kubernetes MicroTimes, which clients parse
/// only with six fractional digits.
fn micro_time(rfc3339: &str) -> String {
    match rfc3339.strip_suffix('Z') {
        Some(seconds) if !seconds.contains('.') => format!("{seconds}.000000Z"),
        _ => rfc3339.to_owned(),
    }
}

/// Deletes of the Events that last happened before `cutoff` (RFC 3339, the same format as
/// the times the planner writes, so they compare as strings), and of the oldest beyond
/// [`MAX_EVENTS`].
pub fn expired(state: &ClusterState, cutoff: &str) -> Vec<Command> {
    let mut events: Vec<(&str, &ObjectKey, u64)> = state
        .list(EVENTS, None)
        .map(|(key, object)| {
            (object.value.get("deprecatedLastTimestamp").and_then(Value::as_str).unwrap_or(""), key, object.resource_version)
        })
        .collect();
    events.sort_by(|a, b| a.0.cmp(b.0).then_with(|| a.1.cmp(b.1)));
    let over = events.len().saturating_sub(MAX_EVENTS);
    events
        .iter()
        .enumerate()
        .filter(|(i, (last, _, _))| *i < over || *last < cutoff)
        .map(|(_, (_, key, version))| Command::Delete { key: (*key).clone(), precondition: Precondition::ResourceVersion(*version) })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn apply(state: &mut ClusterState, commands: Vec<Command>) {
        let index = state.applied_index() + 1;
        state.apply_entry(index, &Command::Transaction(commands).encode(), None).expect("an entry").expect("applied");
    }

    fn node(name: &str) -> Regarding {
        Regarding { kind: "EdgeNode", namespace: String::new(), name: name.to_owned(), uid: Some("u1".to_owned()) }
    }

    #[test]
    fn repeats_fold_into_one_event_with_a_count_and_both_times() {
        let mut state = ClusterState::default();
        let mut events = Events::default();
        events.record(node("a"), EventType::Warning, "NodeDown", "Judging", "no heartbeats".into());
        events.record(node("a"), EventType::Warning, "NodeDown", "Judging", "no heartbeats".into());
        events.record(node("b"), EventType::Warning, "NodeDown", "Judging", "no heartbeats".into());
        apply(&mut state, events.commands(&ClusterState::default(), "2026-12-03T10:00:00Z"));
        let mut again = Events::default();
        again.record(node("a"), EventType::Warning, "NodeDown", "Judging", "no heartbeats".into());
        let commands = again.commands(&state, "2026-12-03T10:05:00Z");
        apply(&mut state, commands);
        let stored: Vec<&Value> = state.list(EVENTS, Some(CLUSTER_EVENTS_NAMESPACE)).map(|(_, o)| &*o.value).collect();
        assert_eq!(stored.len(), 2);
        let a = stored.iter().find(|e| e["regarding"]["name"] == "a").expect("a's event");
        assert_eq!(a["deprecatedCount"], 3);
        assert_eq!(a["series"]["count"], 3);
        assert_eq!(a["deprecatedFirstTimestamp"], "2026-12-03T10:00:00Z");
        assert_eq!(a["deprecatedLastTimestamp"], "2026-12-03T10:05:00Z");
        assert_eq!(a["regarding"]["uid"], "u1");
        assert!(a["regarding"].get("namespace").is_none(), "an EdgeNode is cluster-scoped");
        let b = stored.iter().find(|e| e["regarding"]["name"] == "b").expect("b's event");
        assert!(b.get("series").is_none(), "a single occurrence has no series");
    }

    #[test]
    fn a_plan_records_a_bounded_number_and_old_events_expire() {
        let mut events = Events::default();
        for i in 0..MAX_EVENTS_PER_PLAN + 5 {
            events.record(node(&format!("n{i}")), EventType::Normal, "NodeReady", "Judging", "heartbeats arrive".into());
        }
        assert_eq!(events.dropped, 5);
        let mut state = ClusterState::default();
        apply(&mut state, events.commands(&ClusterState::default(), "2026-12-03T10:00:00Z"));
        let mut later = Events::default();
        later.record(node("n0"), EventType::Normal, "NodeReady", "Judging", "heartbeats arrive".into());
        let commands = later.commands(&state, "2026-12-03T11:30:00Z");
        apply(&mut state, commands);
        let expired = expired(&state, "2026-12-03T10:30:00Z");
        assert_eq!(expired.len(), MAX_EVENTS_PER_PLAN - 1, "all but the one that happened again");
        apply(&mut state, expired);
        let left: Vec<String> = state.list(EVENTS, None).map(|(k, _)| k.name.clone()).collect();
        assert_eq!(left.len(), 1);
        assert!(left[0].starts_with("n0."), "{left:?}");
    }
}
