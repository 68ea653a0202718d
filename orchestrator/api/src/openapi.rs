//! The OpenAPI 3 document of the resource API, built from the same CRD schemas the server
//! validates with. Served at `/openapi/v3` and committed as `docs/openapi.json` (a test fails
//! when the committed copy is stale).

use serde_json::{json, Map, Value};

use crate::paths::RESOURCES as PREFIX;

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
        schemas.insert(kind.clone(), schema);
        schemas.insert(format!("{kind}List"), list_schema(&kind));
        let (collection, one) = if namespaced {
            (format!("{PREFIX}/namespaces/{{namespace}}/{plural}"), format!("{PREFIX}/namespaces/{{namespace}}/{plural}/{{name}}"))
        } else {
            (format!("{PREFIX}/{plural}"), format!("{PREFIX}/{plural}/{{name}}"))
        };
        let ns_param = namespaced.then(|| param("namespace", "path", "The namespace."));
        let name_param = param("name", "path", "The object's name.");
        let object = reference(&kind);
        let mut coll_params: Vec<Value> = ns_param.iter().cloned().collect();
        coll_params.extend([
            param("labelSelector", "query", "Only objects whose labels match, e.g. line=a,zone in (hall-1,hall-2)."),
            param("watch", "query", "true: stream ADDED/MODIFIED/DELETED events as newline-delimited JSON."),
            param("resourceVersion", "query", "With watch: stream changes after this version (410 when too old)."),
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
                    "summary": format!("Apply a JSON merge patch (RFC 7386) to a {kind}."),
                    "parameters": one_params.clone(),
                    "requestBody": { "required": true, "content": { "application/merge-patch+json": { "schema": { "type": "object" } } } },
                    "responses": responses(&[("200", object.clone()), ("409", reference("Status")), ("422", reference("Status"))]),
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

fn reference(name: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

fn param(name: &str, location: &str, description: &str) -> Value {
    json!({ "name": name, "in": location, "required": location == "path", "description": description, "schema": { "type": "string" } })
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
