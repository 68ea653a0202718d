//! The watch protocol: a stream of newline-delimited JSON events, as Kubernetes serves them.
//!
//! `GET {RESOURCES}/.../{plural}?watch=true[&resourceVersion=N]` answers one [`WatchEvent`]
//! per line. From a resourceVersion: every change after it, then live ones. Without one: the
//! current objects as [`WatchEventType::Added`], a [`WatchEventType::Bookmark`] carrying the
//! version they were read at, then live changes. [`WatchEventType::Error`] carries a
//! [`crate::Status`] (410 `Expired`: list again) and ends the stream.

use serde::{Deserialize, Serialize};

/// What a watch event says happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum WatchEventType {
    Added,
    Modified,
    /// The object as it was; its `metadata.resourceVersion` is the deletion's index.
    Deleted,
    /// No change: the object's `metadata.resourceVersion` is how far the stream has come.
    Bookmark,
    /// The object is a [`crate::Status`]; the stream ends.
    Error,
}

impl WatchEventType {
    pub fn as_str(self) -> &'static str {
        match self {
            WatchEventType::Added => "ADDED",
            WatchEventType::Modified => "MODIFIED",
            WatchEventType::Deleted => "DELETED",
            WatchEventType::Bookmark => "BOOKMARK",
            WatchEventType::Error => "ERROR",
        }
    }
}

/// One line of a watch stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WatchEvent<T = serde_json::Value> {
    #[serde(rename = "type")]
    pub type_: WatchEventType,
    pub object: T,
}

impl<T> WatchEvent<T> {
    pub fn new(type_: WatchEventType, object: T) -> WatchEvent<T> {
        WatchEvent { type_, object }
    }
}

impl WatchEvent {
    /// The `metadata.resourceVersion` of the event's object, if it carries one.
    pub fn resource_version(&self) -> Option<u64> {
        self.object.pointer("/metadata/resourceVersion")?.as_str()?.parse().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_read_and_write_as_kubernetes_does() {
        let line = r#"{"type":"BOOKMARK","object":{"metadata":{"resourceVersion":"42"}}}"#;
        let event: WatchEvent = serde_json::from_str(line).expect("parses");
        assert_eq!((event.type_, event.resource_version()), (WatchEventType::Bookmark, Some(42)));
        assert_eq!(serde_json::to_string(&event).expect("serializes"), line);
        assert!(serde_json::from_str::<WatchEvent>(r#"{"type":"RENAMED","object":{}}"#).is_err());
    }
}
