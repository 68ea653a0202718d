//! Parsing and validating manifests: YAML (or JSON) documents of edgeplane resources.
//!
//! A manifest is accepted whole or not at all. Every problem is reported with the document it
//! is in and the path of the offending field (`spec.replicas: must be >= 0, got -1`), in three
//! passes over each document:
//! 1. YAML itself, with limits: size, nesting depth and alias expansion (so a "billion
//!    laughs" document is refused quickly instead of eating memory);
//! 2. structure, checked against the resource's own CRD schema: unknown fields, wrong types,
//!    values outside an enum, missing required fields; all of them, not just the first;
//! 3. meaning, on the typed resource ([`crate::validate`]): names, labels, counts, references.
//!
//! The meaning pass needs a well-formed resource: on a document with structural problems it
//! runs on what is left once the offending fields are taken out, so that one round trip
//! reports the problems of both passes (a missing required field still stops it).

use std::fmt;

use kube::CustomResourceExt;
use serde_json::Value;

use crate::resources::{
    ClusterRole, ClusterRoleBinding, ClusterSinkPolicy, EdgeNode, Model, Module, Role, RoleBinding, ServiceAccount, SinkPolicy,
    TrustPolicy, Workload, API_VERSION,
};
use crate::validate;

/// Largest manifest accepted, in bytes.
pub const MAX_MANIFEST_BYTES: usize = 1024 * 1024;
/// Deepest nesting of objects and arrays accepted.
pub const MAX_DEPTH: usize = 32;
/// Most YAML nodes (scalars, keys, lists, maps) a manifest may hold once its aliases are
/// expanded. Real manifests hold far fewer (a resource is tens of nodes); the bound keeps an
/// alias bomb (a small document whose aliases expand to billions of nodes) to a few
/// megabytes and milliseconds.
pub const MAX_NODES: usize = 250_000;

/// One offending field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// Path of the field, e.g. `spec.outputs[1].sink.type`.
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        FieldError { field: field.into(), message: message.into() }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.field, self.message)
        }
    }
}

/// The problems of one document of a manifest (documents count from 1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocumentErrors {
    pub document: usize,
    /// `Kind/name` when the document got far enough to say.
    pub object: Option<String>,
    pub problems: Vec<FieldError>,
}

impl fmt::Display for DocumentErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "document {}", self.document)?;
        if let Some(o) = &self.object {
            write!(f, " ({o})")?;
        }
        for p in &self.problems {
            write!(f, "\n  {p}")?;
        }
        Ok(())
    }
}

/// The kinds a manifest may hold (Assignments are written by the orchestrators only).
pub const MANIFEST_KINDS: &[&str] = &[
    "EdgeNode",
    "Module",
    "Workload",
    "Model",
    "Role",
    "ClusterRole",
    "RoleBinding",
    "ClusterRoleBinding",
    "ServiceAccount",
    "SinkPolicy",
    "ClusterSinkPolicy",
    "TrustPolicy",
];

/// A validated resource. (Not boxed: a resource is parsed once per document or request, and
/// moved rarely.)
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Resource {
    EdgeNode(EdgeNode),
    Module(Module),
    Workload(Workload),
    Model(Model),
    Role(Role),
    ClusterRole(ClusterRole),
    RoleBinding(RoleBinding),
    ClusterRoleBinding(ClusterRoleBinding),
    ServiceAccount(ServiceAccount),
    SinkPolicy(SinkPolicy),
    ClusterSinkPolicy(ClusterSinkPolicy),
    TrustPolicy(TrustPolicy),
}

impl Resource {
    pub fn kind(&self) -> &'static str {
        match self {
            Resource::EdgeNode(_) => "EdgeNode",
            Resource::Module(_) => "Module",
            Resource::Workload(_) => "Workload",
            Resource::Model(_) => "Model",
            Resource::Role(_) => "Role",
            Resource::ClusterRole(_) => "ClusterRole",
            Resource::RoleBinding(_) => "RoleBinding",
            Resource::ClusterRoleBinding(_) => "ClusterRoleBinding",
            Resource::ServiceAccount(_) => "ServiceAccount",
            Resource::SinkPolicy(_) => "SinkPolicy",
            Resource::ClusterSinkPolicy(_) => "ClusterSinkPolicy",
            Resource::TrustPolicy(_) => "TrustPolicy",
        }
    }

    pub fn name(&self) -> &str {
        let meta = match self {
            Resource::EdgeNode(r) => &r.metadata,
            Resource::Module(r) => &r.metadata,
            Resource::Workload(r) => &r.metadata,
            Resource::Model(r) => &r.metadata,
            Resource::Role(r) => &r.metadata,
            Resource::ClusterRole(r) => &r.metadata,
            Resource::RoleBinding(r) => &r.metadata,
            Resource::ClusterRoleBinding(r) => &r.metadata,
            Resource::ServiceAccount(r) => &r.metadata,
            Resource::SinkPolicy(r) => &r.metadata,
            Resource::ClusterSinkPolicy(r) => &r.metadata,
            Resource::TrustPolicy(r) => &r.metadata,
        };
        meta.name.as_deref().unwrap_or_default()
    }
}

/// Parses every document of a manifest. Either all are valid, or every problem of every
/// document is returned.
pub fn parse(text: &str) -> Result<Vec<Resource>, Vec<DocumentErrors>> {
    if text.len() > MAX_MANIFEST_BYTES {
        return Err(vec![DocumentErrors {
            document: 0,
            object: None,
            problems: vec![FieldError::new("", format!("the manifest is {} bytes; the limit is {MAX_MANIFEST_BYTES}", text.len()))],
        }]);
    }
    let mut resources = Vec::new();
    let mut errors = Vec::new();
    let mut number = 0;
    let budget = std::cell::Cell::new(MAX_NODES);
    for document in serde_yaml::Deserializer::from_str(text) {
        number += 1;
        let value: Value = match serde::de::DeserializeSeed::deserialize(Bounded { left: &budget }, document) {
            Ok(v) => v,
            Err(e) => {
                // A broken document may leave the stream unreadable: report and stop.
                errors.push(DocumentErrors { document: number, object: None, problems: vec![yaml_error(&e)] });
                break;
            }
        };
        if value.is_null() {
            number -= 1; // an empty document (e.g. a trailing `---`) is not counted
            continue;
        }
        match parse_document(&value) {
            Ok(r) => resources.push(r),
            Err((object, problems)) => errors.push(DocumentErrors { document: number, object, problems }),
        }
    }
    if errors.is_empty() {
        Ok(resources)
    } else {
        Err(errors)
    }
}

/// Parses one YAML (or JSON) document into a value, refusing one that expands past
/// [`MAX_NODES`]: what a request body holding one resource goes through.
///
/// JSON is read by a JSON parser first: YAML's reading of JSON differs at the edges (serde_yaml
/// refuses the `\uD83D\uDE00` escapes of characters beyond the BMP that JSON writers emit).
pub fn yaml_value(text: &str) -> Result<Value, String> {
    let budget = std::cell::Cell::new(MAX_NODES);
    let mut json = serde_json::Deserializer::from_str(text);
    if let Ok(value) = serde::de::DeserializeSeed::deserialize(Bounded { left: &budget }, &mut json).and_then(|v| json.end().map(|()| v)) {
        return Ok(value);
    }
    budget.set(MAX_NODES);
    serde::de::DeserializeSeed::deserialize(Bounded { left: &budget }, serde_yaml::Deserializer::from_str(text))
        .map_err(|e| yaml_error(&e).message)
}

/// The refusal of a document that expands too far.
const TOO_MANY_NODES: &str = "nodes once its aliases are expanded";

/// Builds a JSON value from YAML, counting every node the parser produces. serde_yaml expands
/// an alias by replaying its anchor's events, so each expanded node passes through here and
/// is counted: an alias bomb is refused after [`MAX_NODES`] of them, not after it was built.
/// serde_yaml's own repetition limit bounds the number of alias jumps, not what each expands
/// to, so a wide anchor repeated a few thousand times would pass it.
#[derive(Clone, Copy)]
struct Bounded<'a> {
    left: &'a std::cell::Cell<usize>,
}

impl Bounded<'_> {
    fn charge<E: serde::de::Error>(self) -> Result<(), E> {
        match self.left.get().checked_sub(1) {
            Some(left) => {
                self.left.set(left);
                Ok(())
            }
            None => Err(E::custom(format!("the manifest holds more than {MAX_NODES} {TOO_MANY_NODES}"))),
        }
    }
}

impl<'de> serde::de::DeserializeSeed<'de> for Bounded<'_> {
    type Value = Value;

    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Bounded<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a YAML value")
    }

    fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<Value, E> {
        self.charge()?;
        Ok(Value::Bool(v))
    }

    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Value, E> {
        self.charge()?;
        Ok(Value::from(v))
    }

    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Value, E> {
        self.charge()?;
        Ok(Value::from(v))
    }

    // Integers past 64 bits, as serde_json reads them: the nearest f64.
    fn visit_i128<E: serde::de::Error>(self, v: i128) -> Result<Value, E> {
        self.visit_f64(v as f64)
    }

    fn visit_u128<E: serde::de::Error>(self, v: u128) -> Result<Value, E> {
        self.visit_f64(v as f64)
    }

    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Value, E> {
        self.charge()?;
        // As serde_json does: a number JSON cannot hold (NaN, infinity) becomes null.
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Value, E> {
        self.charge()?;
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Value, E> {
        self.charge()?;
        Ok(Value::String(v))
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<Value, E> {
        self.charge()?;
        Ok(Value::Null)
    }

    fn visit_none<E: serde::de::Error>(self) -> Result<Value, E> {
        self.visit_unit()
    }

    fn visit_some<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        serde::de::DeserializeSeed::deserialize(self, deserializer)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        self.charge()?;
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(self)? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        self.charge()?;
        let mut fields = serde_json::Map::new();
        while let Some(key) = map.next_key::<String>()? {
            self.charge()?;
            let value = map.next_value_seed(self)?;
            // Which of two values a reader keeps differs between parsers: refuse, as YAML does.
            if fields.contains_key(&key) {
                return Err(serde::de::Error::custom(format!("{key:?} is given twice")));
            }
            fields.insert(key, value);
        }
        Ok(Value::Object(fields))
    }
}

fn yaml_error(e: &serde_yaml::Error) -> FieldError {
    let message = e.to_string();
    let message = if message.contains(TOO_MANY_NODES) {
        format!("aliases expand too far: more than {MAX_NODES} nodes (a YAML alias bomb?)")
    } else if message.contains("recursion limit exceeded") {
        format!("nesting is too deep (more than {MAX_DEPTH} levels are refused)")
    } else if message.contains("repetition limit exceeded") {
        "aliases expand too far (a YAML alias bomb?)".to_owned()
    } else {
        format!("not valid YAML: {message}")
    };
    FieldError::new("", message)
}

/// Checks one already-parsed document (e.g. a request body): passes 2 and 3 above, with
/// every problem found. Borrows the document: a caller that keeps it (to store it) need not
/// copy it first.
pub fn parse_value(value: &Value) -> Result<Resource, Vec<FieldError>> {
    parse_document(value).map_err(|(_, problems)| problems)
}

type DocResult = Result<Resource, (Option<String>, Vec<FieldError>)>;

fn parse_document(value: &Value) -> DocResult {
    let depth = depth(value);
    if depth > MAX_DEPTH {
        return Err((None, vec![FieldError::new("", format!("nesting is {depth} levels deep; at most {MAX_DEPTH} are accepted"))]));
    }
    let Value::Object(map) = value else {
        return Err((None, vec![FieldError::new("", "a document must be a mapping with apiVersion, kind, metadata and spec")]));
    };
    let kind = map.get("kind").and_then(Value::as_str).unwrap_or_default().to_owned();
    let name =
        value.pointer("/metadata/name").and_then(Value::as_str).map(|n| if kind.is_empty() { n.to_owned() } else { format!("{kind}/{n}") });
    let mut problems = Vec::new();
    match map.get("apiVersion").and_then(Value::as_str) {
        Some(API_VERSION) => {}
        Some(other) => problems.push(FieldError::new("apiVersion", format!("must be {API_VERSION}, got {other:?}"))),
        None => problems.push(FieldError::new("apiVersion", format!("required ({API_VERSION})"))),
    }
    let kinds = MANIFEST_KINDS.join(", ");
    let schema = match schemas().get(kind.as_str()) {
        Some(schema) => schema,
        None if kind.is_empty() => {
            problems.push(FieldError::new("kind", format!("required: one of {kinds}")));
            return Err((name, problems));
        }
        None => {
            problems.push(FieldError::new("kind", format!("must be one of {kinds}, got {kind:?}")));
            return Err((name, problems));
        }
    };
    let root = &schema["openAPIV3Schema"];
    for (key, sub) in map {
        match key.as_str() {
            "apiVersion" | "kind" => {}
            "metadata" => check_metadata(sub, &mut problems),
            "spec" => check_schema(sub, &root["properties"]["spec"], "spec", &mut problems),
            "status" => problems.push(FieldError::new("status", "is set by edgeplane; leave it out of manifests")),
            other => problems.push(FieldError::new(other, "unknown field")),
        }
    }
    if !map.contains_key("metadata") {
        problems.push(FieldError::new("metadata", "required (at least metadata.name)"));
    }
    if !map.contains_key("spec") {
        problems.push(FieldError::new("spec", "required"));
    }
    if !problems.is_empty() {
        // The meaning of what is well-formed, so that both kinds of problem come at once.
        let mut rest = value.clone();
        for p in &problems {
            remove_path(&mut rest, &p.field);
        }
        if let Ok((semantic, _)) = meaning(&kind, &rest) {
            let known = |field: &str| problems.iter().any(|p| p.field == field || field.starts_with(&format!("{}.", p.field)));
            let extra: Vec<FieldError> = semantic.into_iter().filter(|s| !known(&s.field)).collect();
            problems.extend(extra);
        }
        return Err((name, problems));
    }
    match meaning(&kind, value) {
        Ok((semantic, resource)) if semantic.is_empty() => Ok(resource),
        Ok((semantic, _)) => Err((name, semantic)),
        Err(e) => Err((name, vec![e])),
    }
}

/// The typed resource of a well-formed document and the problems of its meaning.
fn meaning(kind: &str, value: &Value) -> Result<(Vec<FieldError>, Resource), FieldError> {
    match kind {
        "EdgeNode" => typed(value).map(|r: EdgeNode| (validate::edge_node(&r), Resource::EdgeNode(r))),
        "Module" => typed(value).map(|r: Module| (validate::module(&r), Resource::Module(r))),
        "Workload" => typed(value).map(|r: Workload| (validate::workload(&r), Resource::Workload(r))),
        "Role" => typed(value).map(|r: Role| (validate::role(&r.metadata, &r.spec.rules, true), Resource::Role(r))),
        "ClusterRole" => typed(value).map(|r: ClusterRole| (validate::role(&r.metadata, &r.spec.rules, false), Resource::ClusterRole(r))),
        "RoleBinding" => typed(value)
            .map(|r: RoleBinding| (validate::binding(&r.metadata, &r.spec.role_ref, &r.spec.subjects, true), Resource::RoleBinding(r))),
        "ClusterRoleBinding" => typed(value).map(|r: ClusterRoleBinding| {
            (validate::binding(&r.metadata, &r.spec.role_ref, &r.spec.subjects, false), Resource::ClusterRoleBinding(r))
        }),
        "ServiceAccount" => typed(value).map(|r: ServiceAccount| (validate::named(&r.metadata, true), Resource::ServiceAccount(r))),
        "SinkPolicy" => {
            typed(value).map(|r: SinkPolicy| (validate::sink_policy(&r.metadata, &r.spec.http_allow, true), Resource::SinkPolicy(r)))
        }
        "ClusterSinkPolicy" => typed(value)
            .map(|r: ClusterSinkPolicy| (validate::sink_policy(&r.metadata, &r.spec.http_allow, false), Resource::ClusterSinkPolicy(r))),
        "TrustPolicy" => typed(value).map(|r: TrustPolicy| (validate::trust_policy(&r.metadata, &r.spec), Resource::TrustPolicy(r))),
        _ => typed(value).map(|r: Model| (validate::model(&r), Resource::Model(r))),
    }
}

/// Removes the field at a problem's path (`spec.outputs[1].sink.type`), if there is one.
fn remove_path(value: &mut Value, path: &str) {
    let mut steps: Vec<(&str, Option<usize>)> = Vec::new();
    for part in path.split('.').filter(|p| !p.is_empty()) {
        match part.split_once('[') {
            Some((name, rest)) => {
                steps.push((name, None));
                for index in rest.split('[').map(|i| i.trim_end_matches(']')) {
                    steps.push(("", index.parse().ok()));
                }
            }
            None => steps.push((part, None)),
        }
    }
    let Some((last, parents)) = steps.split_last() else { return };
    let mut at = value;
    for (name, index) in parents {
        let next = match index {
            Some(i) => at.get_mut(*i),
            None => at.get_mut(*name),
        };
        let Some(next) = next else { return };
        at = next;
    }
    match last {
        (_, Some(i)) => {
            if let Some(items) = at.as_array_mut().filter(|a| *i < a.len()) {
                items.remove(*i);
            }
        }
        (name, None) => drop(at.as_object_mut().and_then(|m| m.remove(*name))),
    }
}

/// Each kind's CRD schema, generated once per process (generation is not cheap).
fn schemas() -> &'static std::collections::BTreeMap<&'static str, Value> {
    static SCHEMAS: std::sync::OnceLock<std::collections::BTreeMap<&'static str, Value>> = std::sync::OnceLock::new();
    SCHEMAS.get_or_init(|| {
        [
            ("EdgeNode", EdgeNode::crd()),
            ("Module", Module::crd()),
            ("Workload", Workload::crd()),
            ("Model", Model::crd()),
            ("Role", Role::crd()),
            ("ClusterRole", ClusterRole::crd()),
            ("RoleBinding", RoleBinding::crd()),
            ("ClusterRoleBinding", ClusterRoleBinding::crd()),
            ("ServiceAccount", ServiceAccount::crd()),
            ("SinkPolicy", SinkPolicy::crd()),
            ("ClusterSinkPolicy", ClusterSinkPolicy::crd()),
            ("TrustPolicy", TrustPolicy::crd()),
        ]
        .into_iter()
        .map(|(kind, crd)| (kind, serde_json::to_value(&crd.spec.versions[0].schema).expect("CRD schemas serialize")))
        .collect()
    })
}

fn typed<T: serde::de::DeserializeOwned>(value: &Value) -> Result<T, FieldError> {
    // The schema pass caught structural problems; what remains is what schemas cannot say
    // (e.g. an integer too large for its field).
    T::deserialize(value).map_err(|e| FieldError::new("", e.to_string()))
}

fn depth(v: &Value) -> usize {
    match v {
        Value::Array(a) => 1 + a.iter().map(depth).max().unwrap_or(0),
        Value::Object(m) => 1 + m.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

fn check_metadata(v: &Value, problems: &mut Vec<FieldError>) {
    let Value::Object(m) = v else {
        problems.push(FieldError::new("metadata", format!("must be a mapping, got {}", type_name(v))));
        return;
    };
    for (key, sub) in m {
        let path = format!("metadata.{key}");
        match key.as_str() {
            "name" | "namespace" => {
                if !sub.is_string() {
                    problems.push(FieldError::new(path, format!("must be a string, got {}", type_name(sub))));
                }
            }
            "labels" | "annotations" => match sub {
                Value::Object(entries) => {
                    for (k, val) in entries {
                        if !val.is_string() {
                            problems.push(FieldError::new(format!("{path}.{k}"), format!("must be a string, got {}", type_name(val))));
                        }
                    }
                }
                _ => problems.push(FieldError::new(path, format!("must be a mapping of strings, got {}", type_name(sub)))),
            },
            // Set by the orchestrator; accepted (and ignored) so a manifest read back from
            // `edgectl get -o yaml` can be applied again.
            "resourceVersion" | "generation" | "uid" | "creationTimestamp" => {}
            _ => problems.push(FieldError::new(path, "unknown field")),
        }
    }
}

/// Checks `v` against an OpenAPI v3 (structural) schema, collecting every problem.
fn check_schema(v: &Value, schema: &Value, path: &str, problems: &mut Vec<FieldError>) {
    if v.is_null() {
        if schema["nullable"] != Value::Bool(true) {
            // YAML's .nan and .inf reach us as null (JSON has no such numbers).
            let message = if schema["type"] == "number" { "must be a finite number" } else { "must not be null" };
            problems.push(FieldError::new(path, message));
        }
        return;
    }
    if let Some(allowed) = schema["enum"].as_array() {
        if !allowed.contains(v) {
            let list: Vec<String> = allowed.iter().map(|a| a.as_str().map_or(a.to_string(), str::to_owned)).collect();
            problems.push(FieldError::new(path, format!("must be one of {}, got {v}", list.join(", "))));
            return;
        }
    }
    let expected = schema["type"].as_str().unwrap_or("");
    let ok = match expected {
        "object" => v.is_object(),
        "array" => v.is_array(),
        "string" => v.is_string(),
        "boolean" => v.is_boolean(),
        "integer" => v.is_i64() || v.is_u64(),
        "number" => v.is_number(),
        _ => true,
    };
    if !ok {
        problems.push(FieldError::new(path, format!("must be {}, got {}", article(expected), type_name(v))));
        return;
    }
    // The range of the type (an unsigned integer is not negative). The ranges a resource's
    // rules set are in the schema too, for clients, but are checked with the rest of their
    // meaning (validate.rs), so that one bad count does not hide the other problems.
    let unsigned = schema["format"].as_str().is_some_and(|f| f.starts_with("uint"));
    if let (true, Some(n)) = (unsigned, v.as_f64()) {
        if n < 0.0 {
            problems.push(FieldError::new(path, format!("must be >= 0, got {v}")));
        }
    }
    match v {
        Value::Object(m) => {
            if schema["x-kubernetes-preserve-unknown-fields"] == Value::Bool(true) {
                return;
            }
            let properties = schema["properties"].as_object();
            let additional = &schema["additionalProperties"];
            for (key, sub) in m {
                let child = format!("{path}.{key}");
                match properties.and_then(|p| p.get(key)) {
                    Some(s) => check_schema(sub, s, &child, problems),
                    None if additional.is_object() => check_schema(sub, additional, &child, problems),
                    None => problems.push(FieldError::new(child, "unknown field")),
                }
            }
            for required in schema["required"].as_array().into_iter().flatten().filter_map(Value::as_str) {
                if !m.contains_key(required) {
                    problems.push(FieldError::new(format!("{path}.{required}"), "required"));
                }
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                check_schema(item, &schema["items"], &format!("{path}[{i}]"), problems);
            }
        }
        _ => {}
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(n) if n.is_f64() => "a number with a fraction",
        Value::Number(_) => "an integer",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

fn article(t: &str) -> String {
    match t {
        "object" => "a mapping".to_owned(),
        "array" => "a list".to_owned(),
        "integer" => "an integer".to_owned(),
        other => format!("a {other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One anchored list of `width` scalars and `copies` aliases of it.
    fn alias_bomb(width: usize, copies: usize) -> String {
        format!(
            "apiVersion: edgeplane.io/v1alpha1\nkind: Workload\nmetadata:\n  name: bomb\nspec:\n  module: m@1.0.0\n  config:\n    a: &a [{}]\n    b: [{}]\n",
            vec!["x"; width].join(","),
            vec!["*a"; copies].join(",")
        )
    }

    /// A 100 KB document expanding to 400 million nodes (gigabytes as values) is refused by
    /// the node count. serde_yaml's own limit counts alias jumps (100 per event), and 20,000
    /// jumps pass it: without the count, this test builds the whole expansion.
    #[test]
    fn an_alias_bomb_is_refused_by_the_number_of_expanded_nodes() {
        let bomb = alias_bomb(20_000, 20_000);
        assert!(bomb.len() < 110_000, "{}", bomb.len());
        let errors = parse(&bomb).expect_err("an alias bomb is refused");
        assert!(errors[0].problems[0].message.contains("aliases expand too far"), "{errors:?}");
        let refused = yaml_value(&bomb).expect_err("as a request body too");
        assert!(refused.contains("aliases expand too far"), "{refused}");
        // The classic billion laughs, nine levels of ten, is refused too.
        let mut laughs = String::from("a0: &a0 [lol]\n");
        for level in 1..10 {
            let previous = format!("*a{}", level - 1);
            laughs.push_str(&format!("a{level}: &a{level} [{}]\n", [previous.as_str(); 10].join(",")));
        }
        assert!(yaml_value(&laughs).is_err());
    }

    /// A body as JSON writers emit it: Python's `json.dumps` escapes every non-ASCII
    /// character, those beyond the BMP as surrogate pairs, which serde_yaml refused
    /// ("invalid Unicode character escape", found by schemathesis).
    #[test]
    fn json_bodies_with_surrogate_pair_escapes_parse() {
        let value = yaml_value(r#"{"metadata": {"annotations": {"note": "\ud83d\ude00 \u00e9"}}}"#).expect("valid JSON");
        assert_eq!(value["metadata"]["annotations"]["note"], "\u{1f600} \u{e9}");
    }

    /// A key given twice is refused in JSON and in YAML, whichever parser reads it.
    #[test]
    fn a_key_given_twice_is_refused() {
        for text in [r#"{"spec": {}, "spec": {"replicas": 2}}"#, "spec: {}\nspec:\n  replicas: 2\n"] {
            let refused = yaml_value(text).expect_err(text);
            assert!(refused.contains("\"spec\" is given twice") || refused.contains("duplicate"), "{text}: {refused}");
        }
    }

    /// Aliases within the bound are expanded as before.
    #[test]
    fn aliases_within_the_bound_expand() {
        let value = yaml_value("a: &a {x: 1, y: [true, null, 2.5, s]}\nb: *a\n").expect("valid");
        assert_eq!(value["b"], serde_json::json!({"x": 1, "y": [true, null, 2.5, "s"]}));
        assert_eq!(value["a"], value["b"]);
    }
}
