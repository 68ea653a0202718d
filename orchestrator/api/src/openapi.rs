//! The OpenAPI 3 document of the resource API, built from the same CRD schemas the server
//! validates with, and committed as `docs/openapi.json` (a test fails when the committed copy
//! is stale).
//!
//! Served as Kubernetes serves OpenAPI v3, which kubectl reads for `apply`, `edit` and
//! `explain`: `/openapi/v3` is an index naming one document per group version ([`index`]),
//! and the document is at [`GROUP_VERSION_PATH`]. Operations and schemas carry
//! `x-kubernetes-group-version-kind`, and writes declare the `fieldValidation` parameter, so
//! that kubectl leaves validation to the server instead of looking for OpenAPI v2.

use serde_json::{json, Map, Value};

use crate::grammar;
use crate::paths::RESOURCES as PREFIX;
use crate::resources::{GROUP, VERSION};
use crate::selector::OBJECT_FIELDS;

/// Where the group version's document is served (the index names it).
pub const GROUP_VERSION_PATH: &str = "/openapi/v3/apis/edgeplane.io/v1alpha1";

/// `GET /openapi/v3`: the index of documents by group version, each named with a hash of
/// its content (clients cache a document until its hash changes).
pub fn index(document: &Value) -> Value {
    use sha2::Digest as _;
    let hash = hex(&sha2::Sha256::digest(document.to_string().as_bytes()));
    let relative = GROUP_VERSION_PATH.trim_start_matches("/openapi/v3/");
    json!({ "paths": { relative: { "serverRelativeURL": format!("{GROUP_VERSION_PATH}?hash={}", &hash[..32]) } } })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02X}")).collect()
}

pub fn document() -> Value {
    let mut schemas = Map::new();
    let mut paths = Map::new();
    schemas.insert("Status".to_owned(), status_schema());
    for crd in crate::resources::crds() {
        let kind = crd.spec.names.kind.clone();
        let plural = crd.spec.names.plural.clone();
        let namespaced = crd.spec.scope == "Namespaced";
        let version = &crd.spec.versions[0];
        let schema = serde_json::to_value(&version.schema.as_ref().expect("CRDs have schemas").open_api_v3_schema).expect("schema");
        let has_status = version.subresources.as_ref().is_some_and(|s| s.status.is_some());
        let gvk = json!({ "group": GROUP, "version": VERSION, "kind": kind });
        let mut schema = with_object_fields(schema, &kind, namespaced);
        closed(&mut schema);
        schema["x-kubernetes-group-version-kind"] = json!([gvk.clone()]);
        schemas.insert(kind.clone(), schema);
        let mut list = list_schema(&kind);
        list["x-kubernetes-group-version-kind"] = json!([{ "group": GROUP, "version": VERSION, "kind": format!("{kind}List") }]);
        schemas.insert(format!("{kind}List"), list);
        let (collection, one) = if namespaced {
            (format!("{PREFIX}/namespaces/{{namespace}}/{plural}"), format!("{PREFIX}/namespaces/{{namespace}}/{plural}/{{name}}"))
        } else {
            (format!("{PREFIX}/{plural}"), format!("{PREFIX}/{plural}/{{name}}"))
        };
        let ns_param = namespaced.then(|| patterned(param("namespace", "path", "The namespace."), grammar::NAMESPACE, 63));
        let name_param = patterned(param("name", "path", "The object's name."), grammar::NAME, 253);
        let object = reference(&kind);
        let mut coll_params: Vec<Value> = ns_param.iter().cloned().collect();
        coll_params.extend([
            param("labelSelector", "query", "Only objects whose labels match, e.g. line=a,zone in (hall-1,hall-2)."),
            param(
                "fieldSelector",
                "query",
                "Only objects whose metadata.name or metadata.namespace match (=, ==, !=), e.g. metadata.name=filter.",
            ),
            param(
                "includeObject",
                "query",
                "In a Table (Accept: application/json;as=Table;g=meta.k8s.io;v=v1): None, Metadata (default) or Object.",
            ),
            param("watch", "query", "true: stream ADDED/MODIFIED/DELETED events as newline-delimited JSON."),
            param(
                "resourceVersion",
                "query",
                "With watch: stream changes after this version (410 when too old). Without: a list at least this new (0: any).",
            ),
            param("consistency", "query", "linearizable (default) or stale."),
            param("limit", "query", "At most this many objects (0: all); metadata.continue then names the next page."),
            param("continue", "query", "The metadata.continue of the previous page: the objects after it."),
        ]);
        paths.insert(
            collection,
            json!({
                "get": op(&format!("list{kind}"), &format!("List or watch {plural}."), coll_params, None, &[("200", reference(&format!("{kind}List")))]),
                "post": op(&format!("create{kind}"), &format!("Create a {kind}."), ns_param.iter().cloned().collect(), Some(&object), &[("201", object.clone()), ("409", reference("Status")), ("422", reference("Status"))]),
            }),
        );
        let mut one_params: Vec<Value> = ns_param.iter().cloned().collect();
        one_params.push(name_param);
        paths.insert(
            one.clone(),
            json!({
                "get": op(&format!("read{kind}"), &format!("Read a {kind}."), one_params.clone(), None, &[("200", object.clone()), ("404", reference("Status"))]),
                "put": op(&format!("replace{kind}"), &format!("Replace a {kind}; compare-and-swap when metadata.resourceVersion is set."), one_params.clone(), Some(&object), &[("200", object.clone()), ("409", reference("Status")), ("422", reference("Status"))]),
                "patch": {
                    "operationId": format!("patch{kind}"),
                    "summary": format!("Apply a JSON merge patch (RFC 7386) or a JSON patch (RFC 6902) to a {kind}."),
                    "parameters": one_params.clone(),
                    "requestBody": { "required": true, "content": {
                        "application/merge-patch+json": { "schema": { "type": "object" } },
                        "application/json-patch+json": { "schema": json_patch_schema() },
                    } },
                    "responses": responses(&[("200", object.clone()), ("409", reference("Status")), ("415", reference("Status")), ("422", reference("Status"))]),
                },
                "delete": op(&format!("delete{kind}"), &format!("Delete a {kind}."), one_params.clone(), None, &[("200", object.clone()), ("404", reference("Status"))]),
            }),
        );
        if has_status {
            paths.insert(
                format!("{one}/status"),
                json!({
                    "get": op(&format!("read{kind}Status"), &format!("Read a {kind} with its status."), one_params.clone(), None, &[("200", object.clone())]),
                    "put": op(&format!("replace{kind}Status"), &format!("Replace a {kind}'s status alone."), one_params, Some(&object), &[("200", object.clone()), ("409", reference("Status"))]),
                }),
            );
        }
    }
    for (path, item) in &mut paths {
        let plural = path.split('/').rfind(|p| !p.starts_with('{') && *p != "status").unwrap_or_default();
        let kind = crate::resources::ResourceKind::by_plural(plural).map_or(plural, |k| k.kind);
        if plural == "assignments" {
            // The orchestrators write Assignments; people read and delete them (405 otherwise).
            if let Some(methods) = item.as_object_mut() {
                methods.retain(|method, _| !matches!(method.as_str(), "post" | "put" | "patch"));
            }
        }
        for (method, operation) in item.as_object_mut().into_iter().flatten() {
            let action = match method.as_str() {
                "get" if !path.ends_with("{name}") && !path.ends_with("/status") => "list",
                other => other,
            };
            // Every answer the server may give, so that clients (and schemathesis) find each
            // status code documented.
            let write = matches!(method.as_str(), "post" | "put" | "patch");
            let mut errors = vec![
                ("400", "The query or body is malformed: Status names each problem."),
                ("401", "No credential, or one that is not (or no longer) valid."),
                ("403", "Authenticated, but not allowed (RBAC)."),
                ("404", "No such object, or a namespace where the kind is cluster-scoped."),
                ("503", "No leader or quorum right now: retry (Status names the leader if known)."),
                ("504", "The write's outcome is unknown after the write timeout: read before retrying."),
            ];
            if write {
                errors.extend([
                    ("409", "A compare-and-swap or create-only precondition failed."),
                    ("413", "The body is larger than the route takes."),
                    ("415", "The Content-Type is not one the operation takes."),
                    ("422", "The object is invalid: Status names each field."),
                ]);
            }
            if let Some(answers) = operation["responses"].as_object_mut() {
                for (code, description) in errors {
                    answers.entry(code.to_owned()).or_insert_with(
                        || json!({ "description": description, "content": { "application/json": { "schema": reference("Status") } } }),
                    );
                }
            }
            operation["x-kubernetes-action"] = json!(action);
            operation["x-kubernetes-group-version-kind"] = json!({ "group": GROUP, "version": VERSION, "kind": kind });
            if matches!(method.as_str(), "post" | "put" | "patch") {
                if let Some(parameters) = operation["parameters"].as_array_mut() {
                    parameters.push(json!({
                        "name": "fieldValidation",
                        "in": "query",
                        "description": "Strict (the only value): a field the schema does not know, or one given twice, is refused with 422.",
                        "schema": { "type": "string", "enum": ["Strict"] },
                    }));
                }
            }
        }
    }
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "edgeplane",
            "version": "v1alpha1",
            "description": "The edgeplane orchestrator's resource API. Any orchestrator of a cluster serves it; writes go through Raft."
        },
        "paths": paths,
        "components": { "schemas": schemas },
    })
}

/// The CRD's schema of a kind as the whole object: `apiVersion`, `kind` and `metadata`
/// (required, as the server requires them), and the kind's own description where kube's
/// derive wrote a generated one.
fn with_object_fields(mut schema: Value, kind: &str, namespaced: bool) -> Value {
    let mut metadata = json!({
        "type": "object",
        "description": "Standard object metadata. name (and namespace) say which object; labels and annotations are the writer's; uid, generation, resourceVersion and creationTimestamp are the server's.",
        "properties": {
            "name": { "type": "string", "maxLength": 253, "pattern": grammar::NAME, "description": "A DNS subdomain, unique per kind (and namespace)." },
            "labels": { "type": "object", "additionalProperties": { "type": "string" }, "description": "Labels selectors match on." },
            "annotations": { "type": "object", "additionalProperties": { "type": "string" }, "description": "Free-form notes (kubectl keeps its last-applied configuration here)." },
            "resourceVersion": { "type": "string", "pattern": "^([0-9]{1,19})?$", "description": "The version of the object, for compare-and-swap and watches; set by the server (empty: no compare-and-swap)." },
            "uid": { "type": "string", "readOnly": true },
            "generation": { "type": "integer", "readOnly": true },
            "creationTimestamp": { "type": "string", "readOnly": true },
        },
        "required": ["name"],
    });
    if namespaced {
        metadata["properties"]["namespace"] = json!({ "type": "string", "nullable": true, "maxLength": 63, "pattern": grammar::NAMESPACE, "description": "A DNS label; the path's namespace (absent or null: the path's)." });
    }
    let properties = schema["properties"].as_object_mut().map(std::mem::take).unwrap_or_default();
    let mut all = Map::new();
    all.insert(
        "apiVersion".to_owned(),
        json!({ "type": "string", "enum": [crate::resources::API_VERSION], "description": "edgeplane.io/v1alpha1." }),
    );
    all.insert("kind".to_owned(), json!({ "type": "string", "enum": [kind], "description": format!("{kind}.") }));
    all.insert("metadata".to_owned(), metadata);
    all.extend(properties);
    schema["properties"] = Value::Object(all);
    let mut required = vec![json!("apiVersion"), json!("kind"), json!("metadata")];
    required.extend(schema["required"].as_array().cloned().unwrap_or_default());
    schema["required"] = json!(required);
    let generated = schema["description"].as_str().is_none_or(|d| d.starts_with("Auto-generated derived type"));
    if generated {
        if let Some(spec) = schema["properties"]["spec"]["description"].as_str() {
            schema["description"] = json!(spec);
        }
    }
    schema
}

/// A JSON patch (RFC 6902) as the server reads it: each operation with the members its `op`
/// requires, and paths that are JSON pointers (RFC 6901: empty, or `/`-separated tokens in
/// which `~` only starts `~0` or `~1`).
fn json_patch_schema() -> Value {
    let pointer = json!({ "type": "string", "pattern": "^(/([^/~]|~[01])*)*$" });
    let operation = |ops: &[&str], members: &[&str]| {
        let mut properties = Map::new();
        properties.insert("op".to_owned(), json!({ "type": "string", "enum": ops }));
        for member in members {
            properties.insert((*member).to_owned(), if *member == "value" { json!({}) } else { pointer.clone() });
        }
        let mut required = vec!["op"];
        required.extend(members);
        json!({ "type": "object", "required": required, "properties": properties })
    };
    json!({
        "type": "array",
        "items": { "oneOf": [
            operation(&["add", "replace", "test"], &["path", "value"]),
            operation(&["remove"], &["path"]),
            operation(&["move", "copy"], &["from", "path"]),
        ] },
    })
}

/// Marks every object schema that lists its properties as taking no others: the server
/// refuses a field its types do not know (422, with or without `fieldValidation=Strict`).
/// Free-form objects (`x-kubernetes-preserve-unknown-fields`, maps) stay open.
fn closed(schema: &mut Value) {
    let Some(object) = schema.as_object_mut() else { return };
    if object.contains_key("properties")
        && !object.contains_key("additionalProperties")
        && !object.contains_key("x-kubernetes-preserve-unknown-fields")
    {
        object.insert("additionalProperties".to_owned(), json!(false));
    }
    for (key, value) in object.iter_mut() {
        match key.as_str() {
            "properties" => value.as_object_mut().into_iter().flat_map(|p| p.values_mut()).for_each(closed),
            "items" | "additionalProperties" => closed(value),
            "oneOf" | "anyOf" | "allOf" => value.as_array_mut().into_iter().flatten().for_each(closed),
            _ => {}
        }
    }
}

fn reference(name: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

fn param(name: &str, location: &str, description: &str) -> Value {
    // The values the server takes (anything else is a 400 naming the parameter); selectors
    // and continue tokens by the grammars the server checks them with.
    let schema = match name {
        "includeObject" => json!({ "type": "string", "enum": ["None", "Metadata", "Object"] }),
        "watch" => json!({ "type": "string", "enum": ["true", "false"] }),
        "resourceVersion" => json!({ "type": "string", "pattern": "^[0-9]{1,19}$" }),
        "consistency" => json!({ "type": "string", "enum": ["linearizable", "stale"] }),
        "limit" => json!({ "type": "integer", "format": "int64", "minimum": 0, "maximum": i64::MAX }),
        "labelSelector" => json!({ "type": "string", "pattern": grammar::LABEL_SELECTOR.pattern }),
        "fieldSelector" => json!({ "type": "string", "pattern": grammar::field_selector(OBJECT_FIELDS) }),
        "continue" => json!({ "type": "string", "pattern": grammar::CONTINUE.pattern }),
        _ => json!({ "type": "string" }),
    };
    json!({ "name": name, "in": location, "required": location == "path", "description": description, "schema": schema })
}

fn patterned(mut parameter: Value, pattern: &str, max: u32) -> Value {
    parameter["schema"] = json!({ "type": "string", "pattern": pattern, "maxLength": max });
    parameter
}

fn responses(list: &[(&str, Value)]) -> Value {
    let mut out = Map::new();
    for (code, schema) in list {
        out.insert((*code).to_owned(), json!({ "description": code, "content": { "application/json": { "schema": schema } } }));
    }
    Value::Object(out)
}

fn op(id: &str, summary: &str, parameters: Vec<Value>, body: Option<&Value>, answers: &[(&str, Value)]) -> Value {
    let mut o = json!({ "operationId": id, "summary": summary, "parameters": parameters, "responses": responses(answers) });
    if let Some(b) = body {
        o["requestBody"] =
            json!({ "required": true, "content": { "application/json": { "schema": b }, "application/yaml": { "schema": b } } });
    }
    o
}

fn list_schema(kind: &str) -> Value {
    json!({
        "type": "object",
        "properties": {
            "apiVersion": { "type": "string" },
            "kind": { "type": "string" },
            "metadata": { "type": "object", "properties": { "resourceVersion": { "type": "string" } } },
            "items": { "type": "array", "items": reference(kind) },
        }
    })
}

fn status_schema() -> Value {
    json!({
        "type": "object",
        "description": "The body of every failed request.",
        "properties": {
            "kind": { "type": "string" },
            "status": { "type": "string" },
            "code": { "type": "integer" },
            "reason": { "type": "string" },
            "message": { "type": "string" },
            "details": {
                "type": "object",
                "properties": {
                    "causes": { "type": "array", "items": { "type": "object", "properties": { "field": { "type": "string" }, "message": { "type": "string" } } } },
                    "leaderApiAddr": { "type": "string" },
                    "currentResourceVersion": { "type": "integer" },
                    "outcomeUnknown": { "type": "boolean" },
                }
            }
        }
    })
}
