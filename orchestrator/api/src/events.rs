//! Events as clients read them. The orchestrators store each Event in the `events.k8s.io/v1`
//! shape (the scheduler writes them: `edgeplane_core::events`) and serve it in both of
//! Kubernetes' shapes: `events.k8s.io/v1` as stored, and core `v1`, which `kubectl get
//! events` and `kubectl describe` read ([`to_core_v1`]).

use serde_json::{json, Value};

/// The fields Events select on, in either shape (`kubectl describe` selects on
/// `involvedObject.*`).
pub const FIELDS: &[&str] = &[
    "metadata.name",
    "metadata.namespace",
    "involvedObject.kind",
    "involvedObject.namespace",
    "involvedObject.name",
    "involvedObject.uid",
    "involvedObject.apiVersion",
    "regarding.kind",
    "regarding.namespace",
    "regarding.name",
    "regarding.uid",
    "regarding.apiVersion",
    "reason",
    "type",
];

/// The value of a [`FIELDS`] field of a stored Event (empty when it has none).
pub fn field(event: &Value, field: &str) -> String {
    let pointer = match field {
        "metadata.name" => "/metadata/name".to_owned(),
        "metadata.namespace" => "/metadata/namespace".to_owned(),
        "reason" => "/reason".to_owned(),
        "type" => "/type".to_owned(),
        other => {
            let Some((_, rest)) = other.split_once('.') else { return String::new() };
            format!("/regarding/{rest}")
        }
    };
    event.pointer(&pointer).and_then(Value::as_str).unwrap_or_default().to_owned()
}

/// A stored (`events.k8s.io/v1`) Event in the core `v1` shape.
pub fn to_core_v1(event: &Value) -> Value {
    let pick = |name: &str| event.get(name).cloned().unwrap_or(Value::Null);
    json!({
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": pick("metadata"),
        "involvedObject": pick("regarding"),
        "reason": pick("reason"),
        "message": pick("note"),
        "type": pick("type"),
        "action": pick("action"),
        "count": pick("deprecatedCount"),
        "firstTimestamp": pick("deprecatedFirstTimestamp"),
        "lastTimestamp": pick("deprecatedLastTimestamp"),
        "eventTime": pick("eventTime"),
        "source": pick("deprecatedSource"),
        "reportingComponent": pick("reportingController"),
        "reportingInstance": pick("reportingInstance"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_core_shape_and_the_fields_describe_selects_on() {
        let stored = json!({
            "apiVersion": "events.k8s.io/v1", "kind": "Event",
            "metadata": {"name": "a.1f", "namespace": "default", "resourceVersion": "9"},
            "regarding": {"kind": "EdgeNode", "name": "a", "uid": "u1"},
            "reason": "NodeDown", "note": "no heartbeats", "type": "Warning",
            "deprecatedCount": 2, "deprecatedFirstTimestamp": "2026-12-03T10:00:00Z", "deprecatedLastTimestamp": "2026-12-03T10:05:00Z",
        });
        let core = to_core_v1(&stored);
        assert_eq!(core["apiVersion"], "v1");
        assert_eq!(core["involvedObject"]["name"], "a");
        assert_eq!(core["message"], "no heartbeats");
        assert_eq!(core["count"], 2);
        assert_eq!(core["lastTimestamp"], "2026-12-03T10:05:00Z");
        assert_eq!(core["metadata"]["resourceVersion"], "9");
        assert_eq!(field(&stored, "involvedObject.uid"), "u1");
        assert_eq!(field(&stored, "involvedObject.namespace"), "", "cluster-scoped");
        assert_eq!(field(&stored, "regarding.kind"), "EdgeNode");
        assert_eq!(field(&stored, "reason"), "NodeDown");
    }
}
