//! Garbage collection of module blobs (pure, like the planner).
//!
//! A module's bytes are stored once per digest (store kind [`BLOBS`]) and referenced by
//! Module resources, by Workloads that name a digest, and by the Assignments placed from
//! them. Deleting the last Module of a digest leaves its blob behind; the leader collects such
//! blobs with deletes conditional on the blob being unchanged, so a push of the same bytes
//! that races the collection (it rewrites the blob in the same transaction as its Module)
//! makes the delete fail rather than lose the bytes.

use std::collections::BTreeSet;

use serde_json::Value;

use crate::{ClusterState, Command, Precondition};

/// The store kind holding module and model bytes, named by their sha256 in hex.
pub const BLOBS: &str = "blobs";
/// The store kind recording each pushed model version (`{name}.{version}` in its namespace):
/// its digest and what the registry found at push. Versions are immutable.
pub const MODEL_VERSIONS: &str = "modelversions";

/// Deletes of every blob nothing refers to.
pub fn unreferenced_blobs(state: &ClusterState) -> Vec<Command> {
    let digest_at =
        |value: &Value, pointer: &str| -> Option<String> { value.pointer(pointer)?.as_str()?.strip_prefix("sha256:").map(str::to_owned) };
    let mut referenced: BTreeSet<String> = BTreeSet::new();
    referenced.extend(state.list("modules", None).filter_map(|(_, o)| digest_at(&o.value, "/spec/digest")));
    referenced.extend(state.list("workloads", None).filter_map(|(_, o)| digest_at(&o.value, "/spec/module")));
    referenced.extend(state.list("assignments", None).filter_map(|(_, o)| digest_at(&o.value, "/spec/moduleDigest")));
    // Model files: every pushed version (a rollback goes back to one), what Models name, and
    // what Assignments run.
    referenced.extend(state.list(MODEL_VERSIONS, None).filter_map(|(_, o)| digest_at(&o.value, "/digest")));
    referenced.extend(state.list("models", None).filter_map(|(_, o)| digest_at(&o.value, "/spec/artifact/digest")));
    referenced.extend(state.list("assignments", None).filter_map(|(_, o)| digest_at(&o.value, "/spec/model/artifact/digest")));
    state
        .list(BLOBS, Some(""))
        .filter(|(key, _)| !referenced.contains(&key.name))
        .map(|(key, object)| Command::Delete { key: key.clone(), precondition: Precondition::ResourceVersion(object.resource_version) })
        .collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::{ObjectKey, ResourceWrite};

    struct World {
        state: ClusterState,
        index: u64,
    }

    impl World {
        fn apply(&mut self, command: Command) -> bool {
            self.index += 1;
            matches!(self.state.apply_entry(self.index, &command.encode(), None), Some(Ok(_)))
        }

        fn put(&mut self, kind: &str, namespace: &str, name: &str, value: Value) {
            let key = ObjectKey::new(kind, namespace, name);
            assert!(self.apply(Command::Put { key, value, precondition: Precondition::None }));
        }

        fn create(&mut self, kind: &str, namespace: &str, name: &str, value: Value) {
            let key = ObjectKey::new(kind, namespace, name);
            let write = ResourceWrite::Create { created_at: "2026-12-01T00:00:00Z".into() };
            assert!(self.apply(Command::PutResource { key, resource: value, precondition: Precondition::None, write }));
        }

        fn blobs(&self) -> Vec<String> {
            self.state.list(BLOBS, Some("")).map(|(k, _)| k.name.clone()).collect()
        }
    }

    #[test]
    fn only_blobs_nothing_refers_to_are_collected() {
        let mut w = World { state: ClusterState::default(), index: 0 };
        for digest in ["aa", "bb", "cc", "dd"] {
            w.put(BLOBS, "", digest, json!({ "digest": format!("sha256:{digest}") }));
        }
        w.create("modules", "ns", "m.1.0.0", json!({ "spec": { "digest": "sha256:aa" } }));
        w.create("workloads", "ns", "w", json!({ "spec": { "module": "sha256:bb" } }));
        w.create("assignments", "ns", "w-0", json!({ "spec": { "moduleDigest": "sha256:cc" } }));
        let collect = unreferenced_blobs(&w.state);
        assert_eq!(collect.len(), 1, "{collect:?}");
        // A push of the same bytes after the collector looked rewrites the blob: the
        // collection no longer applies, and the bytes stay.
        w.put(BLOBS, "", "dd", json!({ "digest": "sha256:dd" }));
        assert!(!w.apply(Command::Transaction(collect)), "a stale collection is refused");
        assert_eq!(w.blobs(), ["aa", "bb", "cc", "dd"]);
        assert!(w.apply(Command::Transaction(unreferenced_blobs(&w.state))));
        assert_eq!(w.blobs(), ["aa", "bb", "cc"]);
        // Deleting the module lets its blob go; planning again on the result finds nothing.
        assert!(w.apply(Command::Delete { key: ObjectKey::new("modules", "ns", "m.1.0.0"), precondition: Precondition::None }));
        assert!(w.apply(Command::Transaction(unreferenced_blobs(&w.state))));
        assert_eq!(w.blobs(), ["bb", "cc"]);
        assert!(unreferenced_blobs(&w.state).is_empty());
    }
}
