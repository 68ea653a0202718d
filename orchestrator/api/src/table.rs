//! The columns each resource is listed with: one definition for `edgectl get` and for the
//! server-side `Table` answers kubectl asks for (`Accept: application/json;as=Table;g=meta.k8s.io;v=v1`),
//! so both show the same thing.
//!
//! Pure: from an object's JSON to its cells. Wide columns (`-o wide`) have priority 1.

use serde_json::{json, Value};

use crate::resources::ResourceKind;

/// One column of a listing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Column {
    /// As printed in the header.
    pub name: &'static str,
    /// OpenAPI type of the cells: `string` or `integer`.
    pub kind: &'static str,
    pub description: &'static str,
    /// 0: always shown; 1: only with `-o wide`.
    pub priority: u8,
}

const fn col(name: &'static str, kind: &'static str, description: &'static str, priority: u8) -> Column {
    Column { name, kind, description, priority }
}

const NAME: Column = col("NAME", "string", "The object's name.", 0);

/// The columns of `kind`, NAME first (a namespace column is the client's to add).
pub fn columns(kind: ResourceKind) -> Vec<Column> {
    let mut columns = vec![NAME];
    columns.extend(match kind.plural {
        "edgenodes" => vec![
            col("TIER", "string", "edge or cloud.", 0),
            col("STATUS", "string", "Ready, Suspect (heartbeats missed), Down, NotReady, or Unknown before the scheduler judged it.", 0),
            col("CORDONED", "string", "Whether new replicas are kept off the node.", 0),
            col("CAPABILITIES", "string", "What the node offers workloads.", 0),
            col("MEMORY(MiB)", "integer", "Memory for instances.", 1),
            col("SLOTS", "integer", "Instance slots.", 1),
            col("CPU(m)", "integer", "CPU for instances, in millicores.", 1),
            col("LABELS", "string", "The node's labels.", 1),
        ],
        "workloads" => vec![
            col("MODULE", "string", "The wasm module, name@version.", 0),
            col("REPLICAS", "string", "Wanted replicas, or daemon: one per matching node.", 0),
            col("READY", "integer", "Replicas running.", 0),
            col("INPUTS", "string", "The topics it reads.", 0),
            col("MODEL", "string", "The Model it infers with.", 1),
            col("GENERATION", "integer", "The spec's generation.", 1),
            col("LABELS", "string", "The workload's labels.", 1),
        ],
        "models" => vec![
            col("VERSION", "string", "The model's version.", 0),
            col("FORMAT", "string", "How its parameters are laid out.", 0),
            col("PARAMETERS", "integer", "Named parameters.", 0),
        ],
        "assignments" => vec![
            col("WORKLOAD", "string", "The Workload the replica belongs to.", 0),
            col("NODE", "string", "Where it runs.", 0),
            col("GENERATION", "integer", "Its fencing generation.", 0),
            col("MODULE", "string", "The module it runs.", 0),
            col("MODEL", "string", "The Model version it runs with.", 1),
            col("DIGEST", "string", "The module's sha256.", 1),
        ],
        "modules" => vec![
            col("VERSION", "string", "The module's version.", 0),
            col("ABI", "string", "The guest ABI it was built for.", 0),
            col("SIZE", "integer", "Its size in bytes.", 0),
            col("DIGEST", "string", "Its sha256.", 1),
            col("SIGNED BY", "string", "The key that signed it.", 1),
        ],
        "roles" | "clusterroles" => vec![col("RULES", "integer", "How many rules it has.", 0)],
        "rolebindings" | "clusterrolebindings" => {
            vec![col("ROLE", "string", "The role it grants.", 0), col("SUBJECTS", "string", "To whom.", 0)]
        }
        "sinkpolicies" | "clustersinkpolicies" => vec![col("HTTP ALLOW", "string", "URL prefixes http sinks may use.", 0)],
        "trustpolicies" => {
            vec![col("REQUIRED", "string", "Whether signatures are required.", 0), col("KEYS", "string", "The trusted keys.", 0)]
        }
        _ => vec![],
    });
    columns
}

/// The cells of `object` for every column of [`columns`], in order.
pub fn cells(kind: ResourceKind, v: &Value) -> Vec<String> {
    let s = |p: &str| v.pointer(p).map_or(String::new(), |x| x.as_str().map_or_else(|| x.to_string(), str::to_owned));
    let join = |p: &str| {
        v.pointer(p).and_then(Value::as_array).map_or(String::new(), |a| a.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(","))
    };
    let labels = || {
        v.pointer("/metadata/labels")
            .and_then(Value::as_object)
            .map_or(String::new(), |m| m.iter().map(|(k, x)| format!("{k}={}", x.as_str().unwrap_or(""))).collect::<Vec<_>>().join(","))
    };
    let mut row = vec![s("/metadata/name")];
    match kind.plural {
        "edgenodes" => {
            let tier = s("/spec/tier");
            row.extend([
                if tier.is_empty() { "edge".to_owned() } else { tier },
                node_status(v),
                s("/spec/cordoned"),
                join("/spec/capabilities"),
                s("/spec/capacity/memoryMib"),
                s("/spec/capacity/instanceSlots"),
                s("/spec/capacity/cpuMillis"),
                labels(),
            ]);
        }
        "workloads" => {
            let replicas =
                if v.pointer("/spec/mode").and_then(Value::as_str) == Some("daemon") { "daemon".to_owned() } else { s("/spec/replicas") };
            let ready = v.pointer("/status/readyReplicas").map_or("0".to_owned(), ToString::to_string);
            row.extend([
                s("/spec/module"),
                replicas,
                ready,
                join("/spec/inputs"),
                s("/spec/modelRef"),
                s("/metadata/generation"),
                labels(),
            ]);
        }
        "models" => {
            let params = v.pointer("/spec/parameters").and_then(Value::as_object).map_or(0, |m| m.len());
            row.extend([s("/spec/version"), s("/spec/format"), params.to_string()]);
        }
        "assignments" => {
            let model = match (v.pointer("/spec/model/name"), v.pointer("/spec/model/version")) {
                (Some(name), Some(version)) => format!("{}@{}", name.as_str().unwrap_or_default(), version.as_str().unwrap_or_default()),
                _ => String::new(),
            };
            row.extend([
                s("/spec/workload"),
                s("/spec/nodeName"),
                s("/spec/generation"),
                s("/spec/moduleRef"),
                model,
                s("/spec/moduleDigest"),
            ]);
        }
        "modules" => row.extend([s("/spec/version"), s("/spec/abi"), s("/spec/sizeBytes"), s("/spec/digest"), s("/spec/signature/key")]),
        "roles" | "clusterroles" => row.push(v.pointer("/spec/rules").and_then(Value::as_array).map_or(0, Vec::len).to_string()),
        "rolebindings" | "clusterrolebindings" => {
            let subjects = v.pointer("/spec/subjects").and_then(Value::as_array).into_iter().flatten();
            let subjects: Vec<String> = subjects
                .map(|x| format!("{}:{}", x["kind"].as_str().unwrap_or_default(), x["name"].as_str().unwrap_or_default()))
                .collect();
            row.extend([format!("{}/{}", s("/spec/roleRef/kind"), s("/spec/roleRef/name")), subjects.join(",")]);
        }
        "sinkpolicies" | "clustersinkpolicies" => row.push(join("/spec/httpAllow")),
        "trustpolicies" => {
            let keys = v.pointer("/spec/keys").and_then(Value::as_array).into_iter().flatten();
            let keys: Vec<&str> = keys.filter_map(|k| k["name"].as_str()).collect();
            let required = v.pointer("/spec/requireSignatures").and_then(Value::as_bool).unwrap_or(false);
            row.extend([required.to_string(), keys.join(",")]);
        }
        _ => {}
    }
    row
}

/// An EdgeNode's health from its Ready condition: Ready, Suspect (heartbeats missed), Down,
/// NotReady, or Unknown before the scheduler has judged it.
pub fn node_status(node: &Value) -> String {
    node.pointer("/status/conditions").and_then(Value::as_array).and_then(|c| c.iter().find(|c| c["type"] == "Ready")).map_or(
        "Unknown".to_owned(),
        |c| match (c["status"].as_str(), c["reason"].as_str()) {
            (Some("True"), _) => "Ready".to_owned(),
            (_, Some("HeartbeatsMissed")) => "Suspect".to_owned(),
            (_, Some("NodeDown")) => "Down".to_owned(),
            _ => "NotReady".to_owned(),
        },
    )
}

/// Whether an `Accept` header asks for a `meta.k8s.io/v1` Table (as kubectl's `get` does).
pub fn wants_table(accept: Option<&str>) -> bool {
    accept.is_some_and(|accept| {
        accept.split(',').any(|range| {
            let mut parts = range.split(';').map(str::trim);
            let json = parts.next().is_some_and(|m| m.eq_ignore_ascii_case("application/json"));
            let params: Vec<(&str, &str)> = parts.filter_map(|p| p.split_once('=')).collect();
            json && params.contains(&("as", "Table")) && params.contains(&("g", "meta.k8s.io")) && params.contains(&("v", "v1"))
        })
    })
}

/// What each row carries besides its cells (the `includeObject` query parameter).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IncludeObject {
    None,
    /// The object's metadata, as a `PartialObjectMetadata` (the default: kubectl reads
    /// namespaces and labels from it).
    Metadata,
    Object,
}

impl IncludeObject {
    pub fn parse(value: Option<&str>) -> Result<IncludeObject, String> {
        match value {
            None | Some("Metadata") => Ok(IncludeObject::Metadata),
            Some("None") => Ok(IncludeObject::None),
            Some("Object") => Ok(IncludeObject::Object),
            Some(other) => Err(format!("{other:?}: one of None, Metadata, Object")),
        }
    }
}

/// A `meta.k8s.io/v1` Table of `objects` (as rendered, with their resourceVersion).
/// `list_metadata` is the list's (resourceVersion, continue); `None` for a single object.
pub fn table(kind: ResourceKind, objects: &[Value], include: IncludeObject, list_metadata: Value) -> Value {
    let rows: Vec<(Vec<String>, &Value)> = objects.iter().map(|o| (cells(kind, o), o)).collect();
    table_of(&columns(kind), rows, include, list_metadata)
}

/// The columns of Events, as Kubernetes lists them (LAST SEEN, TYPE, REASON, OBJECT, MESSAGE;
/// wide: FIRST SEEN, COUNT, NAME).
pub const EVENT_COLUMNS: &[Column] = &[
    col("LAST SEEN", "string", "Time since it last happened.", 0),
    col("TYPE", "string", "Normal or Warning.", 0),
    col("REASON", "string", "Why, in one word.", 0),
    col("OBJECT", "string", "What it is about, kind/name.", 0),
    col("MESSAGE", "string", "What happened.", 0),
    col("FIRST SEEN", "string", "Time since it first happened.", 1),
    col("COUNT", "integer", "How often it happened.", 1),
    col("NAME", "string", "The Event's name.", 1),
];

/// The cells of a core `v1` Event for [`EVENT_COLUMNS`]; `since` renders a timestamp as the
/// time since it (the caller's clock).
pub fn event_cells(event: &Value, since: impl Fn(&str) -> String) -> Vec<String> {
    let s = |p: &str| event.pointer(p).and_then(Value::as_str).unwrap_or_default().to_owned();
    vec![
        since(&s("/lastTimestamp")),
        s("/type"),
        s("/reason"),
        format!("{}/{}", s("/involvedObject/kind").to_lowercase(), s("/involvedObject/name")),
        s("/message"),
        since(&s("/firstTimestamp")),
        event.get("count").map_or_else(String::new, ToString::to_string),
        s("/metadata/name"),
    ]
}

/// A Table of `rows` (cells and the object each shows) with `columns`.
pub fn table_of(columns: &[Column], rows: Vec<(Vec<String>, &Value)>, include: IncludeObject, list_metadata: Value) -> Value {
    let definitions: Vec<Value> = columns
        .iter()
        .map(|c| {
            let mut d = json!({ "name": c.name, "type": c.kind, "format": "", "description": c.description, "priority": c.priority });
            if c.name == "NAME" {
                d["format"] = json!("name");
            }
            d
        })
        .collect();
    let rows: Vec<Value> = rows
        .into_iter()
        .map(|(cells, object)| {
            let mut row = json!({ "cells": cells });
            match include {
                IncludeObject::None => {}
                IncludeObject::Metadata => {
                    row["object"] = json!({
                        "kind": "PartialObjectMetadata",
                        "apiVersion": "meta.k8s.io/v1",
                        "metadata": object.get("metadata").cloned().unwrap_or_else(|| json!({})),
                    });
                }
                IncludeObject::Object => row["object"] = object.clone(),
            }
            row
        })
        .collect();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": list_metadata,
        "columnDefinitions": definitions,
        "rows": rows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(plural: &str) -> ResourceKind {
        ResourceKind::by_plural(plural).expect("a kind")
    }

    #[test]
    fn every_kind_has_a_cell_per_column() {
        for k in crate::resources::KINDS {
            let object = json!({"metadata": {"name": "x", "labels": {"a": "b"}}, "spec": {}});
            assert_eq!(columns(*k).len(), cells(*k, &object).len(), "{}", k.plural);
        }
    }

    #[test]
    fn a_workload_row_and_its_table() {
        let workload = json!({
            "metadata": {"name": "filter", "namespace": "f", "generation": 3, "labels": {"line": "a"}},
            "spec": {"module": "threshold-filter@1.0.0", "replicas": 2, "inputs": ["t/a", "t/b"]},
            "status": {"readyReplicas": 1}
        });
        let k = kind("workloads");
        assert_eq!(cells(k, &workload), ["filter", "threshold-filter@1.0.0", "2", "1", "t/a,t/b", "", "3", "line=a"]);
        let table = table(k, std::slice::from_ref(&workload), IncludeObject::Metadata, json!({"resourceVersion": "7"}));
        assert_eq!(table["kind"], "Table");
        assert_eq!(table["columnDefinitions"][0]["format"], "name");
        assert_eq!(table["columnDefinitions"][5]["priority"], 1, "MODEL is wide");
        assert_eq!(table["rows"][0]["object"]["metadata"]["namespace"], "f");
        assert_eq!(table["metadata"]["resourceVersion"], "7");
    }

    #[test]
    fn kubectls_accept_header_asks_for_a_table() {
        let kubectl = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json";
        assert!(wants_table(Some(kubectl)));
        assert!(!wants_table(Some("application/json")));
        assert!(!wants_table(Some("application/json;as=Table;v=v1beta1;g=meta.k8s.io")));
        assert!(!wants_table(None));
        assert_eq!(IncludeObject::parse(None), Ok(IncludeObject::Metadata));
        assert!(IncludeObject::parse(Some("All")).is_err());
    }
}
