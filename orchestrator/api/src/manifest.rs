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
    ClusterRole, ClusterRoleBinding, ClusterSinkPolicy, EdgeNode, Model, Module, Role, RoleBinding, ServiceAccount, SinkPolicy, Workload,
    API_VERSION,
};
use crate::validate;

/// Largest manifest accepted, in bytes.
pub const MAX_MANIFEST_BYTES: usize = 1024 * 1024;
/// Deepest nesting of objects and arrays accepted.
pub const MAX_DEPTH: usize = 32;

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
    for document in serde_yaml::Deserializer::from_str(text) {
        number += 1;
        let value: Value = match serde::Deserialize::deserialize(document) {
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
        match parse_document(value) {
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

fn yaml_error(e: &serde_yaml::Error) -> FieldError {
    let message = e.to_string();
    let message = if message.contains("recursion limit exceeded") {
        format!("nesting is too deep (more than {MAX_DEPTH} levels are refused)")
    } else if message.contains("repetition limit exceeded") {
        "aliases expand too far (a YAML alias bomb?)".to_owned()
    } else {
        format!("not valid YAML: {message}")
    };
    FieldError::new("", message)
}

/// Checks one already-parsed document (e.g. a request body): passes 2 and 3 above, with
/// every problem found.
pub fn parse_value(value: Value) -> Result<Resource, Vec<FieldError>> {
    parse_document(value).map_err(|(_, problems)| problems)
}

type DocResult = Result<Resource, (Option<String>, Vec<FieldError>)>;

fn parse_document(value: Value) -> DocResult {
    let depth = depth(&value);
    if depth > MAX_DEPTH {
        return Err((None, vec![FieldError::new("", format!("nesting is {depth} levels deep; at most {MAX_DEPTH} are accepted"))]));
    }
    let Value::Object(map) = &value else {
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
        let mut rest = value;
        for p in &problems {
            remove_path(&mut rest, &p.field);
        }
        if let Ok((semantic, _)) = meaning(&kind, rest) {
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
fn meaning(kind: &str, value: Value) -> Result<(Vec<FieldError>, Resource), FieldError> {
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
        ]
        .into_iter()
        .map(|(kind, crd)| (kind, serde_json::to_value(&crd.spec.versions[0].schema).expect("CRD schemas serialize")))
        .collect()
    })
}

fn typed<T: serde::de::DeserializeOwned>(value: Value) -> Result<T, FieldError> {
    // The schema pass caught structural problems; what remains is what schemas cannot say
    // (e.g. an integer too large for its field).
    serde_json::from_value(value).map_err(|e| FieldError::new("", e.to_string()))
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
    if let (Some(min), Some(n)) = (schema["minimum"].as_f64(), v.as_f64()) {
        if n < min {
            problems.push(FieldError::new(path, format!("must be >= {min}, got {v}")));
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
