//! The replicated state machine of the edgeplane orchestrator.
//!
//! Everything here is pure and deterministic: no IO, no clock, no randomness and no iteration
//! over hash maps inside [`ClusterState::apply`]. Every orchestrator applies the same committed
//! commands in the same order and must end in the same state; anything time-dependent (a
//! timestamp, a chosen node) is decided by the leader and written into the command.
//!
//! # Layout
//! - [`Command`]: what a log entry asks the state machine to do.
//! - [`ClusterState`]: the objects, keyed by [`ObjectKey`], each with a resourceVersion that is
//!   the log index of the write that last changed it.
//! - [`ApplyError`]: a command that was committed but refused (e.g. a stale precondition).
//!   Refusal is deterministic too, so it is a result, not a failure of the log.
//! - Request deduplication: an entry may carry a [`RequestTag`]: the id of the client request
//!   that proposed it and the commit index when it was issued. A node re-proposes a request
//!   whose fate a leader change left unknown; the state machine remembers the ids of the last
//!   [`DEDUP_WINDOW`] log entries and applies a repeated id as a no-op, and refuses a request
//!   that reaches the log more than a window after it was issued (its earlier copy might have
//!   been forgotten). Together: every request takes effect at most once.
//! - [`sink`]: the cloud sink, records uploaded by edge nodes ([`Command::AppendData`]).
//! - [`audit`]: the hash-chained audit log ([`Command::Audited`], [`Command::Audit`]);
//!   [`authz`]: who may do what (RBAC and the node authorizer), a pure function of the state.
//! - [`health`], [`placement`]: node health from heartbeat silence, and the scheduler's
//!   planner; [`gc`]: which module blobs nothing refers to any more. Pure functions of the
//!   state that the leader's loops run and whose output they propose.
//! - Snapshots: [`ClusterState::to_snapshot`] and [`ClusterState::from_snapshot`]. The state
//!   lives in persistent maps, so a clone is O(1) and a snapshot can be serialized off the
//!   thread that applies entries.
//! - [`events`]: Events the planner records (folded, bounded, expiring).
//! - [`retention`]: which scheduled backups to keep (hourly, daily, weekly).
//! - [`trust`]: which signers a namespace's TrustPolicies trust for its modules and models.

pub mod audit;
pub mod authz;
pub mod events;
pub mod gc;
pub mod health;
pub mod placement;
pub mod retention;
pub mod sink;
pub mod trust;

use edgeplane_api::audit::AuditEvent;
use edgeplane_api::data::UpRecord;
use std::sync::Arc;

use imbl::{OrdMap, OrdSet};
use serde::{Deserialize, Serialize};

pub use sink::{Appended, Sink};

/// Identifies an object: its kind, namespace (empty for cluster-scoped kinds) and name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ObjectKey {
    pub kind: String,
    pub namespace: String,
    pub name: String,
}

impl ObjectKey {
    pub fn new(kind: impl Into<String>, namespace: impl Into<String>, name: impl Into<String>) -> Self {
        ObjectKey { kind: kind.into(), namespace: namespace.into(), name: name.into() }
    }
}

impl std::fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.namespace.is_empty() {
            write!(f, "{}/{}", self.kind, self.name)
        } else {
            write!(f, "{}/{}/{}", self.kind, self.namespace, self.name)
        }
    }
}

/// A stored object with its versions. The value is shared, not copied, between the state,
/// the answer to the writer and the change events watchers receive.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredObject {
    pub value: std::sync::Arc<serde_json::Value>,
    /// Log index of the write that last changed this object.
    pub resource_version: u64,
    /// Log index of the write that created this object.
    pub created_version: u64,
}

/// A condition a write must meet to take effect (optimistic concurrency).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Precondition {
    /// Write unconditionally (create or replace).
    #[default]
    None,
    /// Create only: fail if the object exists.
    MustNotExist,
    /// Compare-and-swap: the object must exist with exactly this resourceVersion.
    ResourceVersion(u64),
}

/// A command carried by one log entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Command {
    Put {
        key: ObjectKey,
        value: serde_json::Value,
        precondition: Precondition,
    },
    Delete {
        key: ObjectKey,
        precondition: Precondition,
    },
    /// A write of a Kubernetes-style resource (`metadata`, `spec`, `status`), where the state
    /// machine owns `metadata.generation`, `metadata.uid`, `metadata.creationTimestamp` and,
    /// outside status writes, `status`.
    PutResource {
        key: ObjectKey,
        resource: serde_json::Value,
        precondition: Precondition,
        write: ResourceWrite,
    },
    /// Several commands that take effect together or not at all: the first refusal refuses
    /// the whole transaction and leaves the state as it was.
    Transaction(Vec<Command>),
    /// Records a node uploaded, for the cloud sink (see [`sink`]). `epoch` is the node's
    /// incarnation, from its credential (entries written before epochs existed have 0). The
    /// retention limit travels in the command rather than being read from each orchestrator's
    /// configuration, so replicas configured differently still evict the same records.
    AppendData {
        node: String,
        #[serde(default)]
        epoch: u64,
        records: Vec<UpRecord>,
        retain_readings: u64,
    },
    /// Uses a bootstrap token once: its `usesLeft` goes down by one (the token is deleted with
    /// its last use). Refused when the token is missing, used up, or expired at `now_ms` (the
    /// accepting orchestrator's clock). No precondition: many nodes enrolling with one token
    /// at once do not conflict.
    UseToken {
        key: ObjectKey,
        now_ms: u64,
    },
    /// A request's write and its audit record, in one entry: the record gets the outcome the
    /// state machine decided (applied, or refused and why).
    Audited {
        event: Box<AuditEvent>,
        command: Box<Command>,
        /// The request retries a write that loses a compare-and-swap (a PATCH's read, merge,
        /// write): a conflict is not its outcome, so it is not recorded; the retry, or the
        /// request giving up, records it once.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        retried_on_conflict: bool,
    },
    /// Audit records of requests that wrote nothing (refused before, or failed).
    Audit(Vec<AuditEvent>),
}

/// Which part of a resource a [`Command::PutResource`] writes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ResourceWrite {
    /// A new resource: generation 1, uid and creation time set, any status dropped. The time
    /// is decided by the node that accepted the request (apply has no clock).
    Create { created_at: String },
    /// New metadata and spec; status and server-owned metadata kept; generation + 1 when the
    /// spec changed.
    Replace,
    /// New status only; everything else kept.
    Status,
}

impl Command {
    /// Encodes the command for a log entry.
    pub fn encode(&self) -> Vec<u8> {
        // Serializing these plain data types cannot fail.
        serde_json::to_vec(self).expect("commands are always serializable")
    }

    /// Decodes a command from a log entry.
    pub fn decode(bytes: &[u8]) -> Result<Command, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
}

/// What an applied command did.
#[derive(Debug, Clone, PartialEq)]
pub enum Applied {
    /// The object after the write; `created` tells whether it did not exist before.
    Put { key: ObjectKey, object: StoredObject, created: bool },
    /// The object as it was before it was deleted, and the index of the deletion.
    Deleted { key: ObjectKey, previous: StoredObject, index: u64 },
    /// What each command of a transaction did, in order.
    Transaction(Vec<Applied>),
    /// What an [`Command::AppendData`] stored, refused as duplicate and evicted.
    AppendedData(Appended),
    /// The sequence number of the last audit record a [`Command::Audit`] appended.
    Audited(u64),
}

/// A committed command that the state machine refused. Every replica refuses it the same way.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApplyError {
    #[error("{key} does not exist")]
    NotFound { key: ObjectKey },
    #[error("{key} already exists (resourceVersion {current})")]
    AlreadyExists { key: ObjectKey, current: u64 },
    #[error("{key} has resourceVersion {current}, the write expected {expected}")]
    Conflict { key: ObjectKey, expected: u64, current: u64 },
    #[error("log entry {index} does not hold a valid command")]
    Undecodable { index: u64 },
    #[error("the request was issued at index {issued_at} and reached the log only at {index}, too late to deduplicate; it had no effect")]
    Expired { issued_at: u64, index: u64 },
    /// The state says no (a bootstrap token used up or expired).
    #[error("{key}: {why}")]
    Refused { key: ObjectKey, why: String },
}

/// How many log entries a request id is remembered for, and so how far from the commit index
/// at which it was issued a request may still be applied.
pub const DEDUP_WINDOW: u64 = 100_000;

/// Identifies the client request behind a log entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestTag {
    /// Unique per request (the proposing node's id, its boot nonce, a counter).
    pub id: u128,
    /// The commit index the proposing node knew when it accepted the request. Every copy of
    /// the request lands after it, which bounds how far apart two copies can be.
    pub issued_at: u64,
}

/// The whole replicated state. Cloning is O(1) (persistent maps share structure).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ClusterState {
    /// Keys behind an `Arc`: a write copies the tree nodes on its path that a reader still
    /// shares (each holds up to 64 entries), and copying a key is then a reference count
    /// instead of three strings.
    objects: OrdMap<Arc<ObjectKey>, StoredObject>,
    applied_index: u64,
    /// Request ids applied within the last [`DEDUP_WINDOW`] entries, by the index that
    /// applied them, and the same ids as a set for lookup.
    recent_requests: OrdMap<u64, u128>,
    seen_requests: OrdSet<u128>,
    sink: Sink,
    audit: audit::AuditLog,
}

impl ClusterState {
    /// The index of the last log entry applied (including entries that carry no command).
    pub fn applied_index(&self) -> u64 {
        self.applied_index
    }

    /// Applies the entry at `index`. Entries must be applied in log order, each exactly once.
    ///
    /// `data` is the entry's payload; an empty payload (the no-op a new leader commits) only
    /// advances the applied index. `request` tags the client request that proposed the entry:
    /// an id already applied within the window makes the entry a no-op (`None`); a request
    /// arriving more than a window after it was issued is refused ([`ApplyError::Expired`]).
    pub fn apply_entry(&mut self, index: u64, data: &[u8], request: Option<RequestTag>) -> Option<Result<Applied, ApplyError>> {
        assert!(index > self.applied_index, "entry {index} applied twice or out of order (applied index {})", self.applied_index);
        self.applied_index = index;
        self.forget_requests_before(index.saturating_sub(DEDUP_WINDOW));
        if data.is_empty() {
            return None;
        }
        if let Some(RequestTag { id, issued_at }) = request {
            if self.seen_requests.contains(&id) {
                return None;
            }
            if index.saturating_sub(issued_at) > DEDUP_WINDOW {
                return Some(Err(ApplyError::Expired { issued_at, index }));
            }
            self.seen_requests.insert(id);
            self.recent_requests.insert(index, id);
        }
        Some(match Command::decode(data) {
            Ok(command) => self.apply(index, command),
            Err(_) => Err(ApplyError::Undecodable { index }),
        })
    }

    fn apply(&mut self, index: u64, command: Command) -> Result<Applied, ApplyError> {
        match command {
            Command::Put { key, value, precondition } => {
                let current = self.objects.get(&key);
                check_precondition(&key, current, precondition)?;
                let created_version = current.map_or(index, |o| o.created_version);
                let object = StoredObject { value: std::sync::Arc::new(value), resource_version: index, created_version };
                let created = self.objects.insert(Arc::new(key.clone()), object.clone()).is_none();
                Ok(Applied::Put { key, object, created })
            }
            Command::Delete { key, precondition } => {
                let current = self.objects.get(&key);
                if current.is_none() {
                    return Err(ApplyError::NotFound { key });
                }
                check_precondition(&key, current, precondition)?;
                let previous = self.objects.remove(&key).expect("checked above");
                Ok(Applied::Deleted { key, previous, index })
            }
            Command::Transaction(commands) => {
                // Persistent maps make the copies O(1); a refusal restores them.
                let saved = (self.objects.clone(), self.sink.clone(), self.audit.clone());
                let mut applied = Vec::with_capacity(commands.len());
                for command in commands {
                    match self.apply(index, command) {
                        Ok(a) => applied.push(a),
                        Err(e) => {
                            (self.objects, self.sink, self.audit) = saved;
                            return Err(e);
                        }
                    }
                }
                Ok(Applied::Transaction(applied))
            }
            Command::AppendData { node, epoch, records, retain_readings } => {
                let objects = &self.objects;
                // Fencing: the generation of the Assignment named by the record's stream, and
                // when it was placed, if it exists.
                let current = |record: &UpRecord| {
                    let stream = &record.stream;
                    let object = objects.get(&ObjectKey::new("assignments", &stream.namespace, &stream.assignment))?;
                    let spec = object.value.get("spec")?;
                    Some((spec.get("generation")?.as_u64()?, spec.get("placedAtMs").and_then(serde_json::Value::as_u64).unwrap_or(0)))
                };
                Ok(Applied::AppendedData(self.sink.append(node, epoch, records, retain_readings, current)))
            }
            Command::UseToken { key, now_ms } => {
                let Some(current) = self.objects.get(&key) else { return Err(ApplyError::NotFound { key }) };
                let uses = current.value.get("usesLeft").and_then(serde_json::Value::as_u64).unwrap_or(0);
                let expires = current.value.get("expiresAtMs").and_then(serde_json::Value::as_u64).unwrap_or(0);
                if expires <= now_ms {
                    return Err(ApplyError::Refused { key, why: "the bootstrap token has expired".to_owned() });
                }
                if uses == 0 {
                    return Err(ApplyError::Refused { key, why: "the bootstrap token is used up".to_owned() });
                }
                if uses == 1 {
                    let previous = self.objects.remove(&key).expect("checked above");
                    return Ok(Applied::Deleted { key, previous, index });
                }
                let mut value = serde_json::Value::clone(&current.value);
                value["usesLeft"] = serde_json::json!(uses - 1);
                let object =
                    StoredObject { value: std::sync::Arc::new(value), resource_version: index, created_version: current.created_version };
                self.objects.insert(Arc::new(key.clone()), object.clone());
                Ok(Applied::Put { key, object, created: false })
            }
            Command::Audited { event, command, retried_on_conflict } => {
                let result = self.apply(index, *command);
                if !(retried_on_conflict && matches!(result, Err(ApplyError::Conflict { .. }))) {
                    self.audit.append(audit::settle(*event, &result));
                }
                result
            }
            Command::Audit(events) => {
                let mut last = self.audit.head().seq;
                for event in events {
                    last = self.audit.append(event);
                }
                Ok(Applied::Audited(last))
            }
            Command::PutResource { key, resource, precondition, write } => {
                let current = self.objects.get(&key);
                let value = match (&write, current) {
                    (ResourceWrite::Create { .. }, Some(o)) => return Err(ApplyError::AlreadyExists { key, current: o.resource_version }),
                    (ResourceWrite::Replace | ResourceWrite::Status, None) => return Err(ApplyError::NotFound { key }),
                    (ResourceWrite::Create { created_at }, None) => new_resource(resource, index, created_at),
                    (ResourceWrite::Replace, Some(o)) => {
                        check_precondition(&key, current, precondition)?;
                        replaced_resource(&o.value, resource)
                    }
                    (ResourceWrite::Status, Some(o)) => {
                        check_precondition(&key, current, precondition)?;
                        let mut value = serde_json::Value::clone(&o.value);
                        match resource.get("status") {
                            Some(status) => value["status"] = status.clone(),
                            None => drop(value.as_object_mut().map(|m| m.remove("status"))),
                        }
                        value
                    }
                };
                let created_version = current.map_or(index, |o| o.created_version);
                let object = StoredObject { value: std::sync::Arc::new(value), resource_version: index, created_version };
                let created = self.objects.insert(Arc::new(key.clone()), object.clone()).is_none();
                Ok(Applied::Put { key, object, created })
            }
        }
    }

    fn forget_requests_before(&mut self, index: u64) {
        while let Some((oldest, id)) = self.recent_requests.get_min().map(|(i, id)| (*i, *id)) {
            if oldest >= index {
                break;
            }
            self.recent_requests.remove(&oldest);
            self.seen_requests.remove(&id);
        }
    }

    /// Whether a request with this id was applied within the window.
    pub fn has_applied_request(&self, id: u128) -> bool {
        self.seen_requests.contains(&id)
    }

    pub fn get(&self, key: &ObjectKey) -> Option<&StoredObject> {
        self.objects.get(key)
    }

    /// Objects of one kind, in key order; `namespace: None` lists every namespace. Keys order
    /// by kind, then namespace: the objects listed are one contiguous range, found in
    /// O(log n) and walked without touching any other.
    pub fn list<'a>(&'a self, kind: &'a str, namespace: Option<&'a str>) -> impl Iterator<Item = (&'a ObjectKey, &'a StoredObject)> + 'a {
        let first = ObjectKey::new(kind, namespace.unwrap_or_default(), "");
        self.objects
            .range(first..)
            .take_while(move |(k, _)| k.kind == kind && namespace.is_none_or(|ns| k.namespace == ns))
            .map(|(k, v)| (&**k, v))
    }

    pub fn len(&self) -> usize {
        self.objects.len()
    }

    pub fn is_empty(&self) -> bool {
        self.objects.is_empty()
    }

    /// The cloud sink. Clone it (O(1)) to query it away from the thread that applies entries.
    pub fn sink(&self) -> &Sink {
        &self.sink
    }

    /// The audit log's head and recent records.
    pub fn audit(&self) -> &audit::AuditLog {
        &self.audit
    }

    /// Serializes the whole state for a Raft snapshot.
    pub fn to_snapshot(&self) -> Vec<u8> {
        let image = SnapshotImage {
            applied_index: self.applied_index,
            objects: self.objects.iter().map(|(k, v)| (&**k, v)).collect(),
            recent_requests: self.recent_requests.iter().map(|(i, id)| (*i, *id)).collect(),
            sink: self.sink.image(),
            audit: self.audit.image(),
        };
        serde_json::to_vec(&image).expect("the state is always serializable")
    }

    /// Restores a state from [`ClusterState::to_snapshot`] output.
    pub fn from_snapshot(bytes: &[u8]) -> Result<ClusterState, serde_json::Error> {
        let image: SnapshotImageOwned = serde_json::from_slice(bytes)?;
        Ok(ClusterState {
            applied_index: image.applied_index,
            objects: image.objects.into_iter().map(|(k, v)| (Arc::new(k), v)).collect(),
            seen_requests: image.recent_requests.iter().map(|(_, id)| *id).collect(),
            recent_requests: image.recent_requests.into_iter().collect(),
            sink: Sink::from_image(image.sink),
            audit: audit::AuditLog::from_image(image.audit),
        })
    }

    /// The state moved on to `index` without any entry applied (a restore from a backup): the
    /// new cluster's log continues after it, so that no index or resourceVersion a client saw
    /// in the old cluster after the backup names a point in the new one's history.
    pub fn continued_at(mut self, index: u64) -> ClusterState {
        assert!(index >= self.applied_index, "a restored state moves forward, not back");
        self.applied_index = index;
        self.forget_requests_before(index.saturating_sub(DEDUP_WINDOW));
        self
    }

    /// A digest of the whole state, equal on two replicas exactly when their states are equal.
    /// For checks in tests and simulations; FNV-1a over the snapshot encoding.
    pub fn digest(&self) -> u64 {
        self.to_snapshot().iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3))
    }
}

/// The snapshot encoding: JSON maps need string keys, so objects travel as a list of pairs.
#[derive(Serialize)]
struct SnapshotImage<'a> {
    applied_index: u64,
    objects: Vec<(&'a ObjectKey, &'a StoredObject)>,
    recent_requests: Vec<(u64, u128)>,
    sink: sink::SinkImage<'a>,
    audit: audit::AuditImage,
}

#[derive(Deserialize)]
struct SnapshotImageOwned {
    applied_index: u64,
    objects: Vec<(ObjectKey, StoredObject)>,
    recent_requests: Vec<(u64, u128)>,
    /// Absent in snapshots taken before the sink existed.
    #[serde(default)]
    sink: sink::SinkImageOwned,
    /// Absent in snapshots taken before the audit log existed.
    #[serde(default)]
    audit: audit::AuditImage,
}

/// A created resource: server-owned metadata set, resourceVersion (derived on read) and
/// status dropped.
fn new_resource(mut resource: serde_json::Value, index: u64, created_at: &str) -> serde_json::Value {
    if let Some(map) = resource.as_object_mut() {
        map.remove("status");
    }
    let meta = metadata_mut(&mut resource);
    meta.remove("resourceVersion");
    meta.insert("generation".to_owned(), serde_json::json!(1));
    meta.insert("uid".to_owned(), serde_json::json!(format!("{index:016x}")));
    meta.insert("creationTimestamp".to_owned(), serde_json::json!(created_at));
    resource
}

/// `incoming` replacing `current`: the caller's metadata and spec, the server's status and
/// server-owned metadata, and a generation bumped when the spec changed.
fn replaced_resource(current: &serde_json::Value, mut incoming: serde_json::Value) -> serde_json::Value {
    let spec_changed = current.get("spec") != incoming.get("spec");
    let generation = current.pointer("/metadata/generation").and_then(serde_json::Value::as_i64).unwrap_or(1);
    match current.get("status") {
        Some(status) => incoming["status"] = status.clone(),
        None => drop(incoming.as_object_mut().map(|m| m.remove("status"))),
    }
    let meta = metadata_mut(&mut incoming);
    meta.remove("resourceVersion");
    meta.insert("generation".to_owned(), serde_json::json!(generation + i64::from(spec_changed)));
    for owned in ["uid", "creationTimestamp"] {
        match current.pointer(&format!("/metadata/{owned}")) {
            Some(v) => meta.insert(owned.to_owned(), v.clone()),
            None => meta.remove(owned),
        };
    }
    incoming
}

fn metadata_mut(resource: &mut serde_json::Value) -> &mut serde_json::Map<String, serde_json::Value> {
    if !resource.is_object() {
        *resource = serde_json::json!({});
    }
    let map = resource.as_object_mut().expect("made an object above");
    let meta = map.entry("metadata").or_insert_with(|| serde_json::json!({}));
    if !meta.is_object() {
        *meta = serde_json::json!({});
    }
    meta.as_object_mut().expect("made an object above")
}

fn check_precondition(key: &ObjectKey, current: Option<&StoredObject>, precondition: Precondition) -> Result<(), ApplyError> {
    match (precondition, current) {
        (Precondition::None, _) => Ok(()),
        (Precondition::MustNotExist, None) => Ok(()),
        (Precondition::MustNotExist, Some(o)) => Err(ApplyError::AlreadyExists { key: key.clone(), current: o.resource_version }),
        (Precondition::ResourceVersion(_), None) => Err(ApplyError::NotFound { key: key.clone() }),
        (Precondition::ResourceVersion(expected), Some(o)) if o.resource_version == expected => Ok(()),
        (Precondition::ResourceVersion(expected), Some(o)) => {
            Err(ApplyError::Conflict { key: key.clone(), expected, current: o.resource_version })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn put(name: &str, value: serde_json::Value, precondition: Precondition) -> Vec<u8> {
        Command::Put { key: ObjectKey::new("thing", "", name), value, precondition }.encode()
    }

    fn delete(name: &str, precondition: Precondition) -> Vec<u8> {
        Command::Delete { key: ObjectKey::new("thing", "", name), precondition }.encode()
    }

    #[test]
    fn resource_version_is_the_index_of_the_last_write() {
        let mut state = ClusterState::default();
        state.apply_entry(1, &put("a", json!(1), Precondition::None), None);
        state.apply_entry(2, &[], None);
        state.apply_entry(3, &put("a", json!(2), Precondition::None), None);
        let a = state.get(&ObjectKey::new("thing", "", "a")).expect("a exists");
        assert_eq!((a.resource_version, a.created_version, &*a.value), (3, 1, &json!(2)));
        assert_eq!(state.applied_index(), 3);
    }

    #[test]
    fn compare_and_swap_accepts_only_the_current_version() {
        let mut state = ClusterState::default();
        state.apply_entry(1, &put("a", json!(1), Precondition::MustNotExist), None);
        let stale = state.apply_entry(2, &put("a", json!(2), Precondition::ResourceVersion(7)), None);
        assert!(matches!(stale, Some(Err(ApplyError::Conflict { expected: 7, current: 1, .. }))), "stale CAS must conflict, got {stale:?}");
        let fresh = state.apply_entry(3, &put("a", json!(3), Precondition::ResourceVersion(1)), None);
        assert!(matches!(fresh, Some(Ok(Applied::Put { created: false, .. }))), "got {fresh:?}");
        let again = state.apply_entry(4, &put("a", json!(4), Precondition::MustNotExist), None);
        assert!(matches!(again, Some(Err(ApplyError::AlreadyExists { current: 3, .. }))), "got {again:?}");
        assert_eq!(state.get(&ObjectKey::new("thing", "", "a")).map(|o| (*o.value).clone()), Some(json!(3)));
    }

    #[test]
    fn refused_commands_change_nothing_but_the_applied_index() {
        let mut state = ClusterState::default();
        state.apply_entry(1, &put("a", json!(1), Precondition::None), None);
        let before = state.objects.clone();
        assert!(matches!(state.apply_entry(2, &delete("b", Precondition::None), None), Some(Err(ApplyError::NotFound { .. }))));
        assert!(matches!(
            state.apply_entry(3, &delete("a", Precondition::ResourceVersion(9)), None),
            Some(Err(ApplyError::Conflict { .. }))
        ));
        assert!(matches!(state.apply_entry(4, b"not json", None), Some(Err(ApplyError::Undecodable { index: 4 }))));
        assert_eq!(state.objects, before);
        assert_eq!(state.applied_index(), 4);
    }

    #[test]
    fn delete_returns_the_previous_object() {
        let mut state = ClusterState::default();
        state.apply_entry(1, &put("a", json!("x"), Precondition::None), None);
        let deleted = state.apply_entry(2, &delete("a", Precondition::ResourceVersion(1)), None);
        assert!(matches!(&deleted, Some(Ok(Applied::Deleted { previous, .. })) if *previous.value == json!("x")), "got {deleted:?}");
        assert!(state.is_empty());
    }

    #[test]
    fn snapshot_round_trips_and_digest_tracks_content() {
        let mut state = ClusterState::default();
        for i in 1..=20 {
            state.apply_entry(i, &put(&format!("k{}", i % 7), json!({ "i": i }), Precondition::None), None);
        }
        let restored = ClusterState::from_snapshot(&state.to_snapshot()).expect("valid snapshot");
        assert_eq!(restored, state);
        assert_eq!(restored.digest(), state.digest());
        let mut changed = restored.clone();
        changed.apply_entry(21, &put("k1", json!(0), Precondition::None), None);
        assert_ne!(changed.digest(), state.digest());
    }

    #[test]
    fn list_filters_by_kind_and_namespace_in_key_order() {
        let mut state = ClusterState::default();
        // Neighbours in key order on every side: kinds and namespaces that share a prefix,
        // the cluster scope (""), an empty name.
        let keys = [
            ("thing", "ns1", "b"),
            ("thing", "ns1", "a"),
            ("thing", "ns1", ""),
            ("thing", "ns2", "c"),
            ("thing", "ns10", "d"),
            ("thing", "ns", "e"),
            ("thing", "", "f"),
            ("thin", "ns1", "x"),
            ("things", "ns1", "y"),
            ("other", "ns1", "z"),
        ];
        for (i, (kind, ns, name)) in keys.into_iter().enumerate() {
            let key = ObjectKey::new(kind, ns, name);
            state.apply_entry(i as u64 + 1, &Command::Put { key, value: json!(i), precondition: Precondition::None }.encode(), None);
        }
        let names = |kind, ns| state.list(kind, ns).map(|(k, _)| k.name.as_str()).collect::<Vec<_>>();
        assert_eq!(names("thing", Some("ns1")), ["", "a", "b"]);
        assert_eq!(names("thing", Some("")), ["f"]);
        assert_eq!(names("thing", None), ["f", "e", "", "a", "b", "d", "c"]);
        assert_eq!(names("thin", None), ["x"]);
        assert_eq!(names("things", Some("ns1")), ["y"]);
        assert!(names("thing", Some("ns3")).is_empty() && names("nothing", None).is_empty());
    }

    #[test]
    fn a_repeated_request_id_takes_effect_once_within_the_window() {
        let mut state = ClusterState::default();
        let tag = |id| Some(RequestTag { id, issued_at: 0 });
        let first = state.apply_entry(1, &put("a", json!(1), Precondition::MustNotExist), tag(7));
        assert!(matches!(first, Some(Ok(Applied::Put { created: true, .. }))), "got {first:?}");
        state.apply_entry(2, &put("a", json!(2), Precondition::None), tag(8));
        // The re-proposal of request 7 must not clobber the later write of request 8.
        assert_eq!(state.apply_entry(3, &put("a", json!(1), Precondition::MustNotExist), tag(7)), None);
        assert_eq!(state.get(&ObjectKey::new("thing", "", "a")).map(|o| (*o.value).clone()), Some(json!(2)));
        // The window survives a snapshot...
        let mut restored = ClusterState::from_snapshot(&state.to_snapshot()).expect("snapshot");
        assert_eq!(restored.apply_entry(4, &put("b", json!(0), Precondition::None), tag(8)), None);
        // ...and forgets ids once they fall out of it...
        let later = 2 + DEDUP_WINDOW + 1;
        restored.apply_entry(later, &[], None);
        assert!(!restored.has_applied_request(7), "ids older than the window are forgotten");
        // ...which is safe because a copy issued that long ago is refused, not applied again.
        let late = restored.apply_entry(later + 1, &put("b", json!(0), Precondition::None), tag(8));
        assert!(matches!(late, Some(Err(ApplyError::Expired { issued_at: 0, .. }))), "got {late:?}");
        let fresh = Some(RequestTag { id: 8, issued_at: later });
        assert!(matches!(restored.apply_entry(later + 2, &put("b", json!(0), Precondition::None), fresh), Some(Ok(_))));
    }

    fn put_resource(name: &str, resource: serde_json::Value, write: ResourceWrite, precondition: Precondition) -> Vec<u8> {
        Command::PutResource { key: ObjectKey::new("workloads", "ns", name), resource, precondition, write }.encode()
    }

    #[test]
    fn resources_get_server_owned_metadata_and_keep_status_across_spec_writes() {
        let mut state = ClusterState::default();
        let key = ObjectKey::new("workloads", "ns", "w");
        let created = ResourceWrite::Create { created_at: "2026-11-22T00:00:00Z".to_owned() };
        let body = json!({ "metadata": { "name": "w", "resourceVersion": "99" }, "spec": { "replicas": 1 }, "status": { "ready": 5 } });
        state.apply_entry(1, &put_resource("w", body, created.clone(), Precondition::None), None);
        let v = &state.get(&key).expect("created").value;
        assert_eq!(v["metadata"]["generation"], 1);
        assert_eq!(v["metadata"]["uid"], "0000000000000001");
        assert_eq!(v["metadata"]["creationTimestamp"], "2026-11-22T00:00:00Z");
        assert!(v["metadata"].get("resourceVersion").is_none() && v.get("status").is_none(), "{v}");

        state.apply_entry(2, &put_resource("w", json!({ "status": { "ready": 1 } }), ResourceWrite::Status, Precondition::None), None);
        // A metadata-only change keeps the generation; a spec change bumps it; status survives both.
        let labels = json!({ "metadata": { "name": "w", "labels": { "a": "b" }, "uid": "forged" }, "spec": { "replicas": 1 } });
        state.apply_entry(3, &put_resource("w", labels, ResourceWrite::Replace, Precondition::ResourceVersion(2)), None);
        let v = state.get(&key).expect("exists").value.clone();
        assert_eq!((v["metadata"]["generation"].clone(), v["status"]["ready"].clone()), (json!(1), json!(1)));
        assert_eq!(v["metadata"]["uid"], "0000000000000001", "uid is server-owned");
        let scaled = json!({ "metadata": { "name": "w" }, "spec": { "replicas": 3 }, "status": { "ready": 0 } });
        state.apply_entry(4, &put_resource("w", scaled, ResourceWrite::Replace, Precondition::None), None);
        let v = &state.get(&key).expect("exists").value;
        assert_eq!((v["metadata"]["generation"].clone(), v["status"]["ready"].clone()), (json!(2), json!(1)));

        let again = state.apply_entry(5, &put_resource("w", json!({}), created, Precondition::None), None);
        assert!(matches!(again, Some(Err(ApplyError::AlreadyExists { current: 4, .. }))), "got {again:?}");
        let stale = state.apply_entry(6, &put_resource("w", json!({}), ResourceWrite::Replace, Precondition::ResourceVersion(3)), None);
        assert!(matches!(stale, Some(Err(ApplyError::Conflict { current: 4, .. }))), "got {stale:?}");
        let missing = state.apply_entry(7, &put_resource("x", json!({}), ResourceWrite::Status, Precondition::None), None);
        assert!(matches!(missing, Some(Err(ApplyError::NotFound { .. }))), "got {missing:?}");
    }

    #[test]
    fn a_transaction_takes_effect_whole_or_not_at_all() {
        let mut state = ClusterState::default();
        let key = |n: &str| ObjectKey::new("thing", "", n);
        let put = |n: &str, p| Command::Put { key: key(n), value: json!(n), precondition: p };
        state.apply_entry(1, &put("a", Precondition::None).encode(), None);
        let refused = Command::Transaction(vec![put("b", Precondition::None), put("a", Precondition::MustNotExist)]);
        assert!(matches!(state.apply_entry(2, &refused.encode(), None), Some(Err(ApplyError::AlreadyExists { .. }))));
        assert!(state.get(&key("b")).is_none(), "the refused transaction left nothing behind");
        let accepted = Command::Transaction(vec![put("b", Precondition::None), put("c", Precondition::MustNotExist)]);
        assert!(matches!(state.apply_entry(3, &accepted.encode(), None), Some(Ok(Applied::Transaction(v))) if v.len() == 2));
        assert_eq!(
            (state.get(&key("b")).map(|o| o.resource_version), state.get(&key("c")).map(|o| o.resource_version)),
            (Some(3), Some(3))
        );
    }

    fn upload(stream: &str, seqs: std::ops::RangeInclusive<u64>) -> Vec<UpRecord> {
        seqs.map(|seq| UpRecord {
            stream: stream.parse().expect("a stream id"),
            seq,
            namespace: "ns".into(),
            workload: "w".into(),
            output: "out".into(),
            generation: 3,
            model: Some("2.0.0".into()),
            produced_ms: 1_700_000_000_000 + seq,
            readings: vec![edgeplane_api::data::Reading {
                ts: seq,
                device: "press-1".into(),
                metric: "temp".into(),
                value: 0.5 * seq as f64,
            }],
            opaque: None,
        })
        .collect()
    }

    fn append(node: &str, records: Vec<UpRecord>, retain_readings: u64) -> Vec<u8> {
        Command::AppendData { node: node.into(), epoch: 1, records, retain_readings }.encode()
    }

    #[test]
    fn appended_data_answers_its_counts_and_survives_a_snapshot() {
        let mut state = ClusterState::default();
        let first = state.apply_entry(1, &append("n1", upload("ns/w/out", 1..=4), 3), None);
        assert_eq!(first, Some(Ok(Applied::AppendedData(Appended { accepted: 4, duplicates: 0, stale: 0, evicted: 1, refused: 0 }))));
        let mut restored = ClusterState::from_snapshot(&state.to_snapshot()).expect("valid snapshot");
        assert_eq!(restored, state);
        assert_eq!((restored.sink().records(), restored.sink().weight(), restored.sink().evicted()), (3, 3, 1));
        // The restored high-water marks still refuse the evicted record 1, and cursors continue.
        let again = restored.apply_entry(2, &append("n1", upload("ns/w/out", 1..=5), 3), None);
        assert_eq!(again, Some(Ok(Applied::AppendedData(Appended { accepted: 1, duplicates: 4, stale: 0, evicted: 1, refused: 0 }))));
        let page = restored.sink().query(&edgeplane_api::data::DataQuery::default());
        assert_eq!(page.records.iter().map(|r| (r.cursor, r.record.seq)).collect::<Vec<_>>(), [(3, 3), (4, 4), (5, 5)]);
        assert_eq!(page.first_retained, 3);
    }

    #[test]
    fn a_refused_transaction_leaves_the_sink_as_it_was() {
        let mut state = ClusterState::default();
        state.apply_entry(1, &put("a", json!(1), Precondition::None), None);
        let refused = Command::Transaction(vec![
            Command::AppendData { node: "n1".into(), epoch: 1, records: upload("ns/w/out", 1..=2), retain_readings: 10 },
            Command::Put { key: ObjectKey::new("thing", "", "a"), value: json!(2), precondition: Precondition::MustNotExist },
        ]);
        assert!(matches!(state.apply_entry(2, &refused.encode(), None), Some(Err(ApplyError::AlreadyExists { .. }))));
        assert_eq!(*state.sink(), Sink::default());
    }

    #[test]
    fn snapshots_from_before_the_sink_still_load() {
        let old = br#"{"applied_index":7,"objects":[],"recent_requests":[]}"#;
        let state = ClusterState::from_snapshot(old).expect("an old snapshot loads");
        assert_eq!((state.applied_index(), state.sink().records()), (7, 0));
    }

    #[test]
    #[should_panic(expected = "applied twice or out of order")]
    fn applying_out_of_order_is_a_bug() {
        let mut state = ClusterState::default();
        state.apply_entry(2, &[], None);
        state.apply_entry(2, &[], None);
    }
}
