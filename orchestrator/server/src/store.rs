//! The generic replicated object store: `/v1/store/{kind}[/{name}]`, objects of any kind as
//! JSON, with compare-and-swap on their resourceVersion. What the resource API is built on;
//! kept for tools and tests, for cluster administrators only (RBAC resource `store`). The
//! kinds the orchestrators manage (resources, credentials, tokens, module bytes) cannot be
//! written here: their own APIs check what a write may do.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use edgeplane_api::validate::{dns_label, dns_subdomain};
use edgeplane_api::{Consistency, Deleted, ObjectList, ObjectView};
use edgeplane_core::{Applied, Command, ObjectKey, Precondition, StoredObject};

use crate::app::AppState;
use crate::auth::Audit;
use crate::http::{
    body_error, cause, off_reactor, parse_consistency, query_params, read, unknown_params, write, write_error, ApiError, RawQuery,
    MAX_BODY_BYTES,
};

/// Kinds written only through their own APIs.
const MANAGED: &[&str] = &[
    crate::auth::NODE_CREDENTIALS,
    crate::auth::SERVICE_ACCOUNT_TOKENS,
    crate::auth::BOOTSTRAP_TOKENS,
    crate::auth::REVOKED_CERTIFICATES,
    "issued-certificates",
    edgeplane_core::gc::BLOBS,
    edgeplane_api::backup::LAST_BACKUP_KIND,
    edgeplane_core::events::EVENTS,
];

fn writable(kind: &str) -> Result<(), ApiError> {
    if MANAGED.contains(&kind) || edgeplane_api::resources::ResourceKind::by_plural(kind).is_some() {
        return Err(ApiError::status(
            StatusCode::FORBIDDEN,
            edgeplane_api::StatusReason::Forbidden,
            format!("kind {kind:?} is managed by the orchestrators; write it through its own API"),
        ));
    }
    Ok(())
}

/// Query parameters each route accepts; anything else is an error, not silently ignored.
struct StoreQuery {
    namespace: String,
    consistency: Consistency,
    precondition: Precondition,
}

fn parse_query(query: RawQuery, allowed: &[&str]) -> Result<StoreQuery, ApiError> {
    let params = query_params(query)?;
    let mut causes = unknown_params(&params, allowed);
    let mut out = StoreQuery { namespace: String::new(), consistency: Consistency::Linearizable, precondition: Precondition::None };
    for (key, value) in params.iter().filter(|(k, _)| allowed.contains(&k.as_str())) {
        let field = format!("query.{key}");
        match key.as_str() {
            "namespace" => match dns_label(value) {
                Ok(()) => out.namespace = value.clone(),
                Err(e) => causes.push(cause(field, e)),
            },
            "consistency" => match parse_consistency(value) {
                Ok(c) => out.consistency = c,
                Err(e) => causes.push(cause(field, e)),
            },
            "ifVersion" => match value.parse::<u64>() {
                Ok(v) if v > 0 => out.precondition = Precondition::ResourceVersion(v),
                _ => causes.push(cause(field, format!("must be a resourceVersion (a positive integer), got {value:?}"))),
            },
            "ifAbsent" => match value.as_str() {
                "true" => out.precondition = Precondition::MustNotExist,
                "false" => {}
                _ => causes.push(cause(field, format!("must be true or false, got {value:?}"))),
            },
            _ => unreachable!("only allowed keys reach here"),
        }
    }
    if params.contains_key("ifVersion") && params.get("ifAbsent").is_some_and(|v| v == "true") {
        causes.push(cause("query.ifAbsent", "cannot be combined with ifVersion"));
    }
    if causes.is_empty() {
        Ok(out)
    } else {
        Err(ApiError::invalid(causes))
    }
}

fn object_key(kind: &str, name: &str, namespace: &str) -> Result<ObjectKey, ApiError> {
    let mut causes = Vec::new();
    if let Err(e) = dns_label(kind) {
        causes.push(cause("path.kind", e));
    }
    if let Err(e) = dns_subdomain(name) {
        causes.push(cause("path.name", e));
    }
    if causes.is_empty() {
        Ok(ObjectKey::new(kind, namespace, name))
    } else {
        Err(ApiError::invalid(causes))
    }
}

fn view(key: &ObjectKey, object: &StoredObject) -> ObjectView {
    ObjectView {
        kind: key.kind.clone(),
        namespace: key.namespace.clone(),
        name: key.name.clone(),
        resource_version: object.resource_version,
        created_version: object.created_version,
        value: (*object.value).clone(),
    }
}

pub(crate) async fn get_object(
    State(state): State<AppState>,
    Path((kind, name)): Path<(String, String)>,
    query: RawQuery,
) -> Result<Json<ObjectView>, ApiError> {
    let q = parse_query(query, &["namespace", "consistency"])?;
    let key = object_key(&kind, &name, &q.namespace)?;
    match read(&state, q.consistency).await?.get(&key) {
        Some(object) => Ok(Json(view(&key, object))),
        None => Err(ApiError::not_found(format!("{key} not found"))),
    }
}

pub(crate) async fn list_objects(
    State(state): State<AppState>,
    Path(kind): Path<String>,
    query: RawQuery,
) -> Result<Json<ObjectList>, ApiError> {
    let q = parse_query(query, &["namespace", "consistency"])?;
    if let Err(e) = dns_label(&kind) {
        return Err(ApiError::invalid(vec![cause("path.kind", e)]));
    }
    let namespace = (!q.namespace.is_empty()).then_some(q.namespace);
    let snapshot = read(&state, q.consistency).await?;
    off_reactor(move || {
        Json(ObjectList {
            resource_version: snapshot.applied_index(),
            items: snapshot.list(&kind, namespace.as_deref()).map(|(k, o)| view(k, o)).collect(),
        })
    })
    .await
}

pub(crate) async fn put_object(
    State(state): State<AppState>,
    audit: Audit,
    Path((kind, name)): Path<(String, String)>,
    query: RawQuery,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let q = parse_query(query, &["namespace", "ifVersion", "ifAbsent"])?;
    let key = object_key(&kind, &name, &q.namespace)?;
    writable(&kind)?;
    let body = body.map_err(|e| body_error(e, "body", MAX_BODY_BYTES))?;
    if body.is_empty() {
        return Err(ApiError::invalid(vec![cause("body", "required: the object's value as JSON")]));
    }
    let value: serde_json::Value =
        serde_json::from_slice(&body).map_err(|e| ApiError::invalid(vec![cause("body", format!("not valid JSON: {e}"))]))?;
    let applied = match write(&state, &audit, Command::Put { key, value, precondition: q.precondition }).await {
        Ok(applied) => applied,
        Err(e) => return Err(write_error(&state, e).await),
    };
    match applied {
        Applied::Put { key, object, created } => {
            let code = if created { StatusCode::CREATED } else { StatusCode::OK };
            Ok((code, Json(view(&key, &object))).into_response())
        }
        _ => unreachable!("a put never deletes"),
    }
}

pub(crate) async fn delete_object(
    State(state): State<AppState>,
    audit: Audit,
    Path((kind, name)): Path<(String, String)>,
    query: RawQuery,
) -> Result<Json<Deleted>, ApiError> {
    let q = parse_query(query, &["namespace", "ifVersion"])?;
    let key = object_key(&kind, &name, &q.namespace)?;
    writable(&kind)?;
    let applied = match write(&state, &audit, Command::Delete { key, precondition: q.precondition }).await {
        Ok(applied) => applied,
        Err(e) => return Err(write_error(&state, e).await),
    };
    match applied {
        Applied::Deleted { key, previous, index } => Ok(Json(Deleted { deleted_at: index, object: view(&key, &previous) })),
        _ => unreachable!("a delete never puts"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_kubernetes_rules() {
        // The store's kinds and namespaces are DNS labels, its names DNS subdomains.
        assert!(dns_subdomain("line-a.sensor-1").is_ok());
        assert!(dns_subdomain("Line").is_err());
        assert!(dns_subdomain("-a").is_err());
        assert!(dns_label("a.b").is_err());
        assert!(dns_label(&"a".repeat(64)).is_err());
        assert!(dns_label("").is_err());
    }
}
