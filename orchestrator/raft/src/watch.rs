//! Change events for watchers: what each applied write did, in log order.
//!
//! Every node applies the same log, so every node produces the same events with the same
//! indices; a watcher that loses its orchestrator resumes on another from the last index it
//! saw and misses nothing, repeats nothing. Each node keeps a bounded history; a watch from
//! an index older than the history (or from before a snapshot this node installed, whose
//! changes it never saw one by one) is refused as expired, and the client lists again.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use edgeplane_core::{Applied, ObjectKey, StoredObject};
use tokio::sync::broadcast;

/// What happened to an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// One change, at the log index that made it.
#[derive(Debug, Clone, PartialEq)]
pub struct WatchEvent {
    pub index: u64,
    pub kind: EventType,
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
                kind: if *created { EventType::Added } else { EventType::Modified },
                key: key.clone(),
                object: object.clone(),
            }],
            Applied::Deleted { key, previous, .. } => {
                vec![WatchEvent { index, kind: EventType::Deleted, key: key.clone(), object: previous.clone() }]
            }
            Applied::Transaction(all) => all.iter().flat_map(|a| WatchEvent::from_applied(index, a)).collect(),
            // Sink records are not objects; readers page through them by cursor instead.
            Applied::AppendedData(_) => Vec::new(),
        }
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

struct History {
    events: VecDeque<Arc<WatchEvent>>,
    /// Every change after this index is in `events` (or was never made).
    covers_after: u64,
}

/// The history and live feed of one node's changes.
pub struct WatchHub {
    history: Mutex<History>,
    capacity: usize,
    live: broadcast::Sender<Feed>,
}

impl std::fmt::Debug for WatchHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WatchHub").field("capacity", &self.capacity).finish_non_exhaustive()
    }
}

impl WatchHub {
    /// A hub whose history starts after `applied` (the node's state when it starts) and keeps
    /// the last `capacity` events.
    pub fn new(applied: u64, capacity: usize) -> WatchHub {
        let (live, _) = broadcast::channel(capacity.max(16));
        WatchHub { history: Mutex::new(History { events: VecDeque::new(), covers_after: applied }), capacity, live }
    }

    pub fn publish(&self, event: WatchEvent) {
        let event = Arc::new(event);
        // The lock orders publishing against subscribing, so no event falls between a
        // subscriber's backlog and its live feed.
        let mut h = self.history.lock().expect("watch history lock");
        if h.events.len() == self.capacity {
            if let Some(old) = h.events.pop_front() {
                h.covers_after = old.index;
            }
        }
        h.events.push_back(Arc::clone(&event));
        let _ = self.live.send(Feed::Event(event));
    }

    /// The node installed a snapshot at `index`: history restarts there.
    pub fn reset(&self, index: u64) {
        let mut h = self.history.lock().expect("watch history lock");
        h.events.clear();
        h.covers_after = index;
        let _ = self.live.send(Feed::Reset);
    }

    /// The changes to one object that the history still holds, oldest first.
    pub fn history_of(&self, key: &ObjectKey) -> Vec<Arc<WatchEvent>> {
        let h = self.history.lock().expect("watch history lock");
        h.events.iter().filter(|e| &e.key == key).cloned().collect()
    }

    /// Events after `from` that are in the history, and the live feed from then on.
    pub fn subscribe(&self, from: u64) -> Result<(Vec<Arc<WatchEvent>>, broadcast::Receiver<Feed>), Expired> {
        let h = self.history.lock().expect("watch history lock");
        if from < h.covers_after {
            return Err(Expired { requested: from, oldest: h.covers_after });
        }
        let backlog = h.events.iter().filter(|e| e.index > from).cloned().collect();
        Ok((backlog, self.live.subscribe()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event(index: u64) -> WatchEvent {
        WatchEvent {
            index,
            kind: EventType::Added,
            key: ObjectKey::new("k", "", format!("o{index}")),
            object: StoredObject { value: json!(index).into(), resource_version: index, created_version: index },
        }
    }

    #[test]
    fn a_subscriber_gets_the_backlog_then_the_live_feed_without_gaps() {
        let hub = WatchHub::new(0, 10);
        for i in 1..=5 {
            hub.publish(event(i));
        }
        let (backlog, mut live) = hub.subscribe(3).expect("in history");
        assert_eq!(backlog.iter().map(|e| e.index).collect::<Vec<_>>(), [4, 5]);
        hub.publish(event(6));
        match live.try_recv() {
            Ok(Feed::Event(e)) => assert_eq!(e.index, 6),
            other => panic!("expected event 6, got {other:?}"),
        }
    }

    #[test]
    fn watches_older_than_the_history_or_a_snapshot_expire() {
        let hub = WatchHub::new(0, 3);
        for i in 1..=5 {
            hub.publish(event(i));
        }
        assert_eq!(hub.subscribe(1).err(), Some(Expired { requested: 1, oldest: 2 }));
        assert!(hub.subscribe(2).is_ok());
        let (_, mut live) = hub.subscribe(5).expect("current");
        hub.reset(100);
        assert!(matches!(live.try_recv(), Ok(Feed::Reset)));
        assert_eq!(hub.subscribe(50).err(), Some(Expired { requested: 50, oldest: 100 }));
    }
}
