//! Assignments as the planner reads and writes them.

use edgeplane_api::node::NODE_LABEL;
use edgeplane_api::resources::AssignmentSpec;
use serde::de::DeserializeOwned;
use serde_json::{json, Value};

use crate::{Command, ObjectKey, Precondition, StoredObject};

/// The annotation on an Assignment saying why its replica is on its node.
pub const PLACED_BECAUSE: &str = "edgeplane.io/placed-because";

/// An Assignment as stored, with its spec read.
pub(super) struct Existing {
    pub key: ObjectKey,
    pub object: StoredObject,
    pub spec: AssignmentSpec,
}

impl Existing {
    /// `None` when the object does not read as an Assignment.
    pub fn read(key: &ObjectKey, object: &StoredObject) -> Option<Existing> {
        let spec = typed(object, "/spec")?;
        Some(Existing { key: key.clone(), object: object.clone(), spec })
    }

    /// (assignment `namespace/name`, node): how heartbeats report this replica's instance.
    pub fn instance(&self) -> (String, String) {
        (format!("{}/{}", self.key.namespace, self.key.name), self.spec.node_name.clone())
    }

    /// Why the replica is where it is, as recorded when it was placed.
    pub fn placed_because(&self) -> Option<&str> {
        self.object.value.get("metadata")?.get("annotations")?.get(PLACED_BECAUSE)?.as_str()
    }
}

/// The Assignment resource for `spec`, with the node and Workload labels a node's watch and
/// `edgectl` select on.
pub(super) fn render(key: &ObjectKey, spec: &AssignmentSpec, because: Option<&str>) -> Value {
    let mut value = json!({
        "apiVersion": edgeplane_api::resources::API_VERSION,
        "kind": "Assignment",
        "metadata": {
            "name": key.name,
            "namespace": key.namespace,
            "labels": { NODE_LABEL: spec.node_name, "edgeplane.io/workload": spec.workload },
        },
        "spec": spec,
    });
    if let Some(because) = because {
        value["metadata"]["annotations"] = json!({ PLACED_BECAUSE: because });
    }
    value
}

/// Deletes the object if it is still the version that was read.
pub(super) fn delete(key: &ObjectKey, object: &StoredObject) -> Command {
    Command::Delete { key: key.clone(), precondition: Precondition::ResourceVersion(object.resource_version) }
}

/// The part of a stored object at `pointer`, as `T`.
pub(super) fn typed<T: DeserializeOwned>(object: &StoredObject, pointer: &str) -> Option<T> {
    object.value.pointer(pointer).and_then(|v| T::deserialize(v).ok())
}

/// `metadata.generation` of a stored resource.
pub(super) fn generation_of(object: &StoredObject) -> i64 {
    object.value.pointer("/metadata/generation").and_then(Value::as_i64).unwrap_or(0)
}
