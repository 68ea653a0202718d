//! Change events for watchers: what each applied write did, in log order.
//!
//! Every node applies the same log, so every node produces the same events with the same
//! indices; a watcher that loses its orchestrator resumes on another from the last index it
//! saw and misses nothing, repeats nothing (a node that has not yet applied that far holds
//! back the events the watcher already has). Each node keeps a history bounded by count and
//! by bytes; a watch from an index older than the history (or from before a snapshot this
//! node installed, whose changes it never saw one by one) is refused as expired, and the
//! client lists again.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use edgeplane_api::watch::WatchEventType;
use edgeplane_core::{Applied, ObjectKey, StoredObject};
use tokio::sync::broadcast;

/// What a write did to an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Added,
    Modified,
    Deleted,
}

impl Change {
    /// How a watch stream names it.
    pub fn event_type(self) -> WatchEventType {
        match self {
            Change::Added => WatchEventType::Added,
            Change::Modified => WatchEventType::Modified,
            Change::Deleted => WatchEventType::Deleted,
        }
    }
}

/// One change, at the log index that made it.
#[derive(Debug, Clone, PartialEq)]
pub struct WatchEvent {
    pub index: u64,
    pub kind: Change,
    pub key: ObjectKey,
    /// The object after the change (before it, for a deletion).
    pub object: StoredObject,
}

impl WatchEvent {
    /// The events of one applied command (a transaction makes several).
    pub fn from_applied(index: u64, applied: &Applied) -> Vec<WatchEvent> {
        match applied {
            Applied::Put { key, object, created } => vec![WatchEvent {
                index,
                kind: if *created { Change::Added } else { Change::Modified },
                key: key.clone(),
                object: object.clone(),
            }],
            Applied::Deleted { key, previous, .. } => {
                vec![WatchEvent { index, kind: Change::Deleted, key: key.clone(), object: previous.clone() }]
            }
            Applied::Transaction(all) => all.iter().flat_map(|a| WatchEvent::from_applied(index, a)).collect(),
            // Sink records and audit records are not objects; readers page through them by
            // cursor and sequence number instead.
            Applied::AppendedData(_) | Applied::Audited(_) => Vec::new(),
        }
    }

    /// Roughly what the event holds in memory, for the history's byte bound.
    fn weight(&self) -> usize {
        std::mem::size_of::<WatchEvent>()
            + self.key.kind.len()
            + self.key.namespace.len()
            + self.key.name.len()
            + approximate_size(&self.object.value)
    }
}

/// Roughly the bytes a JSON value takes: its text size plus a little per node.
pub fn approximate_size(value: &serde_json::Value) -> usize {
    use serde_json::Value;
    16 + match value {
        Value::Null | Value::Bool(_) | Value::Number(_) => 8,
        Value::String(s) => s.len(),
        Value::Array(items) => items.iter().map(approximate_size).sum(),
        Value::Object(map) => map.iter().map(|(k, v)| k.len() + approximate_size(v)).sum(),
    }
}

/// A message on the live feed.
#[derive(Debug, Clone)]
pub enum Feed {
    Event(Arc<WatchEvent>),
    /// The node replaced its state with a snapshot: its history no longer connects, and every
    /// watch must start over from a fresh list.
    Reset,
}

/// Why a watch cannot start where it asked to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("resourceVersion {requested} is too old; this node's history starts after {oldest}: list again")]
pub struct Expired {
    pub requested: u64,
    pub oldest: u64,
}

/// How much history a hub keeps.
#[derive(Debug, Clone, Copy)]
pub struct HistoryLimits {
    pub events: usize,
    /// Approximate bytes of the events kept (see [`approximate_size`]).
    pub bytes: usize,
}

struct History {
    events: VecDeque<Arc<WatchEvent>>,
    bytes: usize,
    /// Every change after this index is in `events` (or was never made).
    covers_after: u64,
}

/// The history and live feed of one node's changes.
pub struct WatchHub {
    history: Mutex<History>,
    limits: HistoryLimits,
    live: broadcast::Sender<Feed>,
}

impl std::fmt::Debug for WatchHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WatchHub").field("limits", &self.limits).finish_non_exhaustive()
    }
}

impl WatchHub {
    /// A hub whose history starts after `applied` (the node's state when it starts).
    pub fn new(applied: u64, limits: HistoryLimits) -> WatchHub {
        let (live, _) = broadcast::channel(limits.events.max(16));
        WatchHub { history: Mutex::new(History { events: VecDeque::new(), bytes: 0, covers_after: applied }), limits, live }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, History> {
        // Nothing panics while holding it; a poisoned lock holds a consistent history anyway.
        self.history.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn publish(&self, event: WatchEvent) {
        let event = Arc::new(event);
        // The lock orders publishing against subscribing, so no event falls between a
        // subscriber's backlog and its live feed. It is held for list operations only.
        let mut h = self.lock();
        h.bytes += event.weight();
        h.events.push_back(Arc::clone(&event));
        while h.events.len() > self.limits.events || (h.bytes > self.limits.bytes && h.events.len() > 1) {
            let Some(old) = h.events.pop_front() else { break };
            h.bytes -= old.weight();
            // Only whole indices leave the history: a transaction's events go together, so
            // "covers after" stays true.
            h.covers_after = old.index;
            while h.events.front().is_some_and(|e| e.index == old.index) {
                let same = h.events.pop_front().expect("checked");
                h.bytes -= same.weight();
            }
        }
        let _ = self.live.send(Feed::Event(event));
    }

    /// The node installed a snapshot at `index`: history restarts there.
    pub fn reset(&self, index: u64) {
        let mut h = self.lock();
        h.events.clear();
        h.bytes = 0;
        h.covers_after = index;
        let _ = self.live.send(Feed::Reset);
    }

    /// The changes to one object that the history still holds, oldest first.
    pub fn history_of(&self, key: &ObjectKey) -> Vec<Arc<WatchEvent>> {
        self.lock().events.iter().filter(|e| &e.key == key).cloned().collect()
    }

    /// Every change after `from`: those in the history, then live ones.
    pub fn subscribe(&self, from: u64) -> Result<Subscription, Expired> {
        let h = self.lock();
        if from < h.covers_after {
            return Err(Expired { requested: from, oldest: h.covers_after });
        }
        let backlog = h.events.iter().filter(|e| e.index > from).cloned().collect();
        Ok(Subscription { backlog, live: self.live.subscribe(), from })
    }
}

/// What a [`Subscription`] yields next.
#[derive(Debug)]
pub enum Next {
    Event(Arc<WatchEvent>),
    /// The history no longer connects (a snapshot was installed) or the subscriber fell too
    /// far behind the live feed: it must list again.
    Expired,
    /// The node stopped.
    Closed,
}

/// The changes after one index, oldest first, each once.
#[derive(Debug)]
pub struct Subscription {
    backlog: VecDeque<Arc<WatchEvent>>,
    live: broadcast::Receiver<Feed>,
    /// Changes at or before this index are the subscriber's already. A node that has not yet
    /// applied that far (a lagging follower, resumed on with a newer version) would
    /// otherwise send them again as it catches up.
    from: u64,
}

impl Subscription {
    pub async fn next(&mut self) -> Next {
        if let Some(event) = self.backlog.pop_front() {
            return Next::Event(event);
        }
        loop {
            match self.live.recv().await {
                Ok(Feed::Event(event)) if event.index <= self.from => continue,
                Ok(Feed::Event(event)) => return Next::Event(event),
                Ok(Feed::Reset) | Err(broadcast::error::RecvError::Lagged(_)) => return Next::Expired,
                Err(broadcast::error::RecvError::Closed) => return Next::Closed,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event(index: u64) -> WatchEvent {
        WatchEvent {
            index,
            kind: Change::Added,
            key: ObjectKey::new("k", "", format!("o{index}")),
            object: StoredObject { value: json!(index).into(), resource_version: index, created_version: index },
        }
    }

    const LIMITS: HistoryLimits = HistoryLimits { events: 10, bytes: usize::MAX };

    fn index_of(next: Next) -> u64 {
        match next {
            Next::Event(e) => e.index,
            other => panic!("expected an event, got {other:?}"),
        }
    }

    async fn drain(sub: &mut Subscription) -> Vec<u64> {
        let mut seen = Vec::new();
        while let Ok(next) = tokio::time::timeout(std::time::Duration::from_millis(20), sub.next()).await {
            seen.push(index_of(next));
        }
        seen
    }

    #[tokio::test]
    async fn a_subscriber_gets_the_backlog_then_the_live_feed_without_gaps() {
        let hub = WatchHub::new(0, LIMITS);
        for i in 1..=5 {
            hub.publish(event(i));
        }
        let mut sub = hub.subscribe(3).expect("in history");
        hub.publish(event(6));
        assert_eq!(drain(&mut sub).await, [4, 5, 6]);
    }

    /// A watcher saw changes up to 100 on one orchestrator and resumes on a follower that has
    /// applied only up to 90: the follower must not send 91..=100 again as it catches up.
    #[tokio::test]
    async fn resuming_on_a_lagging_node_repeats_nothing() {
        let hub = WatchHub::new(0, LIMITS);
        for i in 85..=90 {
            hub.publish(event(i));
        }
        let mut sub = hub.subscribe(100).expect("ahead of the history is fine");
        for i in 91..=102 {
            hub.publish(event(i));
        }
        assert_eq!(drain(&mut sub).await, [101, 102]);
    }

    #[tokio::test]
    async fn watches_older_than_the_history_or_a_snapshot_expire() {
        let hub = WatchHub::new(0, HistoryLimits { events: 3, bytes: usize::MAX });
        for i in 1..=5 {
            hub.publish(event(i));
        }
        assert_eq!(hub.subscribe(1).err(), Some(Expired { requested: 1, oldest: 2 }));
        assert!(hub.subscribe(2).is_ok());
        let mut sub = hub.subscribe(5).expect("current");
        hub.reset(100);
        assert!(matches!(sub.next().await, Next::Expired));
        assert_eq!(hub.subscribe(50).err(), Some(Expired { requested: 50, oldest: 100 }));
    }

    #[test]
    fn the_history_is_bounded_by_bytes_and_drops_whole_indices() {
        let big = |index: u64, name: &str| WatchEvent {
            index,
            kind: Change::Added,
            key: ObjectKey::new("k", "", name),
            object: StoredObject { value: json!("x".repeat(1000)).into(), resource_version: index, created_version: index },
        };
        let hub = WatchHub::new(0, HistoryLimits { events: 1000, bytes: 3500 });
        // Index 1 is a transaction of two events; then three more single ones.
        hub.publish(big(1, "a"));
        hub.publish(big(1, "b"));
        hub.publish(big(2, "c"));
        hub.publish(big(3, "d"));
        hub.publish(big(4, "e"));
        let h = hub.lock();
        assert!(h.bytes <= 3500, "{} bytes kept", h.bytes);
        assert!(h.events.iter().all(|e| e.index > h.covers_after), "covers_after {}", h.covers_after);
        assert!(h.events.front().is_some_and(|e| e.index >= 2), "index 1 left whole");
    }
}
