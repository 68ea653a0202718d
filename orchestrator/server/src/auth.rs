//! The door every request passes: who is calling (authentication), whether they may
//! (authorization), and a record of what came of it (the audit log).
//!
//! Authentication, in order:
//! 1. a client certificate the TLS layer verified against the cluster CA: an orchestrator
//!    (`system:orchestrator:<id>`), an edge node (`system:node:<name>`, valid while the node's
//!    credential in the store lists the certificate's serial: revoking or deleting the node
//!    ends it at once), or a user (common name, and organizations as groups, unless its
//!    serial is revoked);
//! 2. `Authorization: Bearer eps.<id>.<secret>`: a ServiceAccount's token;
//! 3. otherwise anonymous, which only public routes accept.
//!
//! Authorization is the route's [`Access`]: public, any authenticated caller, or a verb on a
//! resource decided by [`edgeplane_core::authz`] (RBAC, and the node authorizer for nodes).
//! Everything happens before the handler runs, so an unauthenticated request's body is never
//! read.
//!
//! Audit: every request that may change something, and every request refused with 401 or
//! 403, produces one record. A handler's write carries its record in the same log entry
//! ([`crate::http::write`]); what wrote nothing is recorded in batches by [`crate::audit`].
//! Successful heartbeats are the exception: they are the node's liveness signal, twice a second
//! per node, and never written to the store.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::extract::{FromRequestParts, Path, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use edgeplane_api::audit::AuditEvent;
use edgeplane_api::auth::{split_token, WhoAmI, SERVICE_ACCOUNT_TOKEN_PREFIX};
use edgeplane_api::{Consistency, StatusReason};
use edgeplane_core::authz::{self, Action, Caller, Identity, AUTHENTICATED_GROUP};
use edgeplane_core::{ClusterState, ObjectKey};
use edgeplane_tls::pki::ParsedSubject;
use edgeplane_tls::serve::Connection;
use serde::{Deserialize, Serialize};

use crate::app::AppState;
use crate::http::{read, ApiError, ErrorMessage};
use crate::secrets::{constant_time_eq, sha256_hex};

/// Where each node's credential is kept: the serials of its valid certificates.
pub const NODE_CREDENTIALS: &str = "node-credentials";
/// ServiceAccount tokens, by token id.
pub const SERVICE_ACCOUNT_TOKENS: &str = "serviceaccount-tokens";
/// Bootstrap tokens, by token id.
pub const BOOTSTRAP_TOKENS: &str = "bootstrap-tokens";
/// Revoked user certificates, by serial.
pub const REVOKED_CERTIFICATES: &str = "revoked-certificates";

/// A node's credential as stored: which certificates are its, and its incarnation.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeCredential {
    /// The runtime that enrolled (chosen by it, kept on its disk).
    pub uid: String,
    /// The runtime's incarnation: the cloud sink keys deduplication by it.
    pub epoch: u64,
    /// The serials of the node's valid certificates: the one it enrolled or renewed with last,
    /// and the one before (which connections opened before a renewal still present).
    pub serials: Vec<String>,
    /// When the newest of them expires (seconds since the Unix epoch): until then the node is
    /// enrolled, and its name is enrolled again only by itself or with a token made for it.
    #[serde(default)]
    pub not_after: i64,
}

impl NodeCredential {
    /// Whether the node holds a certificate that has not expired.
    pub fn is_live(&self) -> bool {
        self.not_after > (crate::http::unix_ms_now() / 1000) as i64
    }
}

/// A ServiceAccount token as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StoredServiceAccountToken {
    pub namespace: String,
    pub name: String,
    /// The ServiceAccount's `metadata.uid` when the token was made: a ServiceAccount deleted
    /// and created again under the same name is another account, and its old tokens are dead.
    pub account_uid: String,
    pub secret_sha256: String,
}

/// How a route is guarded.
#[derive(Debug, Clone, Copy)]
pub enum Access {
    /// Anyone, even without credentials (liveness, enrollment with a bootstrap token).
    Public,
    /// Any authenticated caller.
    Authenticated,
    /// `verb` on `resource`, decided by RBAC and the node authorizer.
    Rbac { verb: Verb, resource: Res, namespace: Ns, name: Name },
}

/// The verb of an [`Access::Rbac`] route.
#[derive(Debug, Clone, Copy)]
pub enum Verb {
    Is(&'static str),
    /// The resource API: by method, whether the path names an object, and `watch=true`.
    FromMethod,
}

/// The resource of an [`Access::Rbac`] route.
#[derive(Debug, Clone, Copy)]
pub enum Res {
    Is(&'static str),
    /// The path's `{plural}`.
    Plural,
    /// The path's `{plural}` and this subresource.
    PluralSub(&'static str),
}

/// Where the namespace of an [`Access::Rbac`] route comes from.
#[derive(Debug, Clone, Copy)]
pub enum Ns {
    /// Cluster-wide.
    None,
    /// The path's `{ns}` (absent on the all-namespaces and cluster-scoped resource paths).
    Path,
    /// The `namespace` query parameter (absent: every namespace).
    Query,
}

/// Where the object name of an [`Access::Rbac`] route comes from.
#[derive(Debug, Clone, Copy)]
pub enum Name {
    None,
    Path(&'static str),
}

impl Access {
    /// The rule in words, for `GET /v1/routes`.
    pub fn describe(&self) -> String {
        match self {
            Access::Public => "public".to_owned(),
            Access::Authenticated => "authenticated".to_owned(),
            Access::Rbac { verb, resource, .. } => {
                let verb = match verb {
                    Verb::Is(v) => (*v).to_owned(),
                    Verb::FromMethod => "by method".to_owned(),
                };
                let resource = match resource {
                    Res::Is(r) => (*r).to_owned(),
                    Res::Plural => "{plural}".to_owned(),
                    Res::PluralSub(sub) => format!("{{plural}}/{sub}"),
                };
                format!("rbac: {verb} {resource}")
            }
        }
    }
}

/// What the guard middleware is given per route.
#[derive(Clone)]
pub struct Guard {
    pub app: AppState,
    pub access: Access,
    /// The route's body limit: a request that announces more is refused before its body.
    pub max_body: usize,
}

/// The audit context of the request being served: the event so far, and whether a write
/// carried it into the log already.
#[derive(Debug, Clone)]
pub struct Audit(Arc<AuditInner>);

#[derive(Debug)]
struct AuditInner {
    event: AuditEvent,
    recorded: AtomicBool,
}

impl Audit {
    /// The event, for a write to carry: the state machine fills in the outcome.
    pub fn event(&self) -> AuditEvent {
        AuditEvent { code: 0, outcome: String::new(), ..self.0.event.clone() }
    }

    /// A write carried the record (or may have: its outcome is unknown).
    pub fn mark_recorded(&self) {
        self.0.recorded.store(true, Ordering::Relaxed);
    }

    fn recorded(&self) -> bool {
        self.0.recorded.load(Ordering::Relaxed)
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Audit {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Audit, ApiError> {
        parts.extensions.get::<Audit>().cloned().ok_or_else(|| ApiError::internal("the route has no audit context"))
    }
}

/// The authenticated caller, for handlers.
#[derive(Debug, Clone)]
pub struct Authenticated(pub Caller);

impl<S: Send + Sync> FromRequestParts<S> for Authenticated {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Authenticated, ApiError> {
        parts.extensions.get::<Authenticated>().cloned().ok_or_else(|| ApiError::internal("the route has no caller"))
    }
}

/// The middleware on every route: authenticate, authorize, run, record.
pub async fn guard(State(guard): State<Guard>, Path(params): Path<BTreeMap<String, String>>, mut request: Request, next: Next) -> Response {
    let app = &guard.app;
    let connection = request.extensions().get::<Connection>().cloned();
    let source = connection.as_ref().map_or_else(|| "unknown".to_owned(), |c| c.remote.ip().to_string());
    let request_id = crate::secrets::random_hex(8);
    let method = request.method().clone();
    let path = request.uri().path_and_query().map_or_else(|| request.uri().path().to_owned(), |p| p.as_str().to_owned());
    let caller = match authenticate(app, connection.as_ref(), request.headers()).await {
        // A public route needs no identity, so a credential that is no longer valid is not
        // held against it: a revoked node presents its old certificate when it enrolls again
        // with a bootstrap token.
        Err(_) if matches!(guard.access, Access::Public) => Ok(Caller::anonymous()),
        decided => decided,
    };
    let event_caller = caller.as_ref().map_or_else(|_| Caller::anonymous(), Clone::clone);
    let audit = Audit(Arc::new(AuditInner {
        event: AuditEvent {
            time: crate::http::rfc3339_millis_now(),
            request_id: request_id.clone(),
            server: app.config.id,
            user: event_caller.user.clone(),
            groups: event_caller.groups.clone(),
            source,
            method: method.to_string(),
            path: path.clone(),
            code: 0,
            outcome: String::new(),
        },
        recorded: AtomicBool::new(false),
    }));
    request.extensions_mut().insert(audit.clone());
    let decision = match caller {
        Err(e) => Err(e),
        Ok(caller) => {
            let decided = permit(&app.node.latest(), &caller, guard.access, &params, &request);
            request.extensions_mut().insert(Authenticated(caller));
            decided
        }
    };
    let announced = request.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    let decision = decision.and_then(|()| match announced {
        Some(length) if length > guard.max_body as u64 => Err(ApiError::status(
            StatusCode::PAYLOAD_TOO_LARGE,
            StatusReason::RequestEntityTooLarge,
            format!("the body is {length} bytes; this path takes at most {}", guard.max_body),
        )),
        _ => Ok(()),
    });
    let mut response = match decision {
        Ok(()) => next.run(request).await,
        Err(refusal) => {
            let mut response = refusal.into_response();
            // The body was not read: the connection cannot carry another request.
            response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
            response
        }
    };
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert("x-request-id", value);
    }
    let code = response.status();
    let refused = code == StatusCode::UNAUTHORIZED || code == StatusCode::FORBIDDEN;
    let mutating = !matches!(method, Method::GET | Method::HEAD | Method::OPTIONS);
    let routine = code.is_success() && (path.ends_with("/heartbeat") || path.ends_with("/heartbeat/stream"));
    if !audit.recorded() && (refused || (mutating && !routine)) {
        let outcome = match response.extensions().get::<ErrorMessage>() {
            Some(ErrorMessage(reason, message)) => format!("{reason:?}: {message}"),
            None if code.is_success() => "applied".to_owned(),
            None => code.canonical_reason().unwrap_or("failed").to_owned(),
        };
        app.audit.record(AuditEvent { code: code.as_u16(), outcome, ..audit.0.event.clone() });
    }
    response
}

/// Who the request comes from; an error for credentials that are presented and not valid.
pub async fn authenticate(app: &AppState, connection: Option<&Connection>, headers: &axum::http::HeaderMap) -> Result<Caller, ApiError> {
    if let Some(certificate) = connection.and_then(|c| c.certificate.as_ref()) {
        return match certificate.subject() {
            Some(ParsedSubject::Orchestrator(id)) => Ok(Caller {
                user: format!("system:orchestrator:{id}"),
                groups: vec![edgeplane_tls::pki::ORCHESTRATORS_GROUP.to_owned(), AUTHENTICATED_GROUP.to_owned()],
                identity: Identity::Orchestrator { id },
            }),
            Some(ParsedSubject::Node(name)) => node_caller(app, &name, &certificate.serial).await.map(|_| Caller {
                user: format!("system:node:{name}"),
                groups: vec![edgeplane_tls::pki::NODES_GROUP.to_owned(), AUTHENTICATED_GROUP.to_owned()],
                identity: Identity::Node { name },
            }),
            Some(ParsedSubject::User { name, mut groups }) => {
                let revoked = ObjectKey::new(REVOKED_CERTIFICATES, "", certificate.serial.clone());
                if app.node.latest().get(&revoked).is_some() {
                    return Err(unauthorized(&format!("the certificate of {name} (serial {}) was revoked", certificate.serial)));
                }
                groups.push(AUTHENTICATED_GROUP.to_owned());
                Ok(Caller { user: name, groups, identity: Identity::User })
            }
            None => Err(unauthorized(&format!("a certificate for {:?} names nobody this cluster knows", certificate.common_name))),
        };
    }
    let Some(value) = headers.get(header::AUTHORIZATION) else { return Ok(Caller::anonymous()) };
    let token = value.to_str().ok().and_then(|v| v.strip_prefix("Bearer ")).map(str::trim).unwrap_or_default();
    match split_token(token, SERVICE_ACCOUNT_TOKEN_PREFIX) {
        Some((id, secret)) => service_account(&app.node.latest(), id, secret),
        // Bootstrap tokens are for enrollment alone; the enrollment handler reads them.
        None if token.starts_with("ept.") => Ok(Caller::anonymous()),
        None => Err(unauthorized("the bearer token is not an edgeplane token (eps.<id>.<secret>)")),
    }
}

/// The node's credential, if the certificate with `serial` is among its valid ones. This
/// node's applied state accepts; a refusal is confirmed with a linearizable read, so that a
/// node enrolled a moment ago on another orchestrator is not sent to enroll again.
pub async fn node_caller(app: &AppState, name: &str, serial: &str) -> Result<NodeCredential, ApiError> {
    if let Some(credential) = node_credential(&app.node.latest(), name, serial) {
        return Ok(credential);
    }
    node_credential(&read(app, Consistency::Linearizable).await?, name, serial).ok_or_else(|| node_revoked(name))
}

/// Node `name`'s credential in `state`, if the certificate with `serial` is among its valid
/// ones. The EdgeNode must exist too: deleting it ends the node even if its credential,
/// written by an enrollment racing the delete, outlived it.
pub fn node_credential(state: &ClusterState, name: &str, serial: &str) -> Option<NodeCredential> {
    let key = ObjectKey::new(NODE_CREDENTIALS, "", name.to_owned());
    let node = ObjectKey::new("edgenodes", "", name.to_owned());
    state
        .get(&key)
        .and_then(|o| NodeCredential::deserialize(&*o.value).ok())
        .filter(|c| c.serials.iter().any(|s| s == serial))
        .filter(|_| state.get(&node).is_some())
}

/// The refusal of a node whose certificate is no longer among its valid ones.
pub fn node_revoked(name: &str) -> ApiError {
    unauthorized(&format!("the certificate of node {name} was revoked or replaced; enroll the node again with a bootstrap token"))
}

fn service_account(state: &ClusterState, id: &str, secret: &str) -> Result<Caller, ApiError> {
    let stored = state
        .get(&ObjectKey::new(SERVICE_ACCOUNT_TOKENS, "", id.to_owned()))
        .and_then(|o| StoredServiceAccountToken::deserialize(&*o.value).ok())
        .filter(|t| constant_time_eq(t.secret_sha256.as_bytes(), sha256_hex(secret.as_bytes()).as_bytes()))
        .ok_or_else(|| unauthorized("the token is not valid (revoked, replaced, or never issued)"))?;
    let account = state.get(&ObjectKey::new("serviceaccounts", stored.namespace.clone(), stored.name.clone()));
    if account.and_then(|a| a.value.pointer("/metadata/uid").and_then(|u| u.as_str().map(str::to_owned)))
        != Some(stored.account_uid.clone())
    {
        return Err(unauthorized(&format!("ServiceAccount {}/{} the token was made for no longer exists", stored.namespace, stored.name)));
    }
    Ok(Caller {
        user: edgeplane_api::auth::service_account_user(&stored.namespace, &stored.name),
        groups: vec![
            "system:serviceaccounts".to_owned(),
            format!("system:serviceaccounts:{}", stored.namespace),
            AUTHENTICATED_GROUP.to_owned(),
        ],
        identity: Identity::ServiceAccount { namespace: stored.namespace, name: stored.name },
    })
}

/// Applies a route's access rule.
fn permit(
    state: &ClusterState,
    caller: &Caller,
    access: Access,
    params: &BTreeMap<String, String>,
    request: &Request,
) -> Result<(), ApiError> {
    let Access::Rbac { verb, resource, namespace, name } = access else {
        return match access {
            Access::Authenticated if !caller.is_authenticated() => Err(unauthorized("authenticate with a client certificate or a token")),
            _ => Ok(()),
        };
    };
    if !caller.is_authenticated() {
        return Err(unauthorized("authenticate with a client certificate or a token"));
    }
    let query: BTreeMap<String, String> = request.uri().query().and_then(|q| serde_urlencoded::from_str(q).ok()).unwrap_or_default();
    let plural = params.get("plural").map(String::as_str).unwrap_or_default();
    let subresource;
    let resource = match resource {
        Res::Is(r) => r,
        Res::Plural => plural,
        Res::PluralSub(sub) => {
            subresource = format!("{plural}/{sub}");
            subresource.as_str()
        }
    };
    let name = match name {
        Name::None => None,
        Name::Path(param) => params.get(param).map(String::as_str),
    };
    let verb = match verb {
        Verb::Is(v) => v,
        Verb::FromMethod => match (request.method().clone(), name) {
            (Method::GET, Some(_)) => "get",
            (Method::GET, None) if query.get("watch").is_some_and(|w| w == "true") => "watch",
            (Method::GET, None) => "list",
            (Method::POST, _) => "create",
            (Method::PUT, _) => "update",
            (Method::PATCH, _) => "patch",
            (Method::DELETE, _) => "delete",
            _ => "get",
        },
    };
    let namespace = match namespace {
        Ns::None => None,
        Ns::Path => params.get("ns").map(String::as_str),
        Ns::Query => query.get("namespace").map(String::as_str),
    };
    let label_selector = query.get("labelSelector").map(String::as_str);
    let action = Action { verb, resource, namespace, name, label_selector };
    authz::authorize(state, caller, &action).map_err(|denied| ApiError::status(StatusCode::FORBIDDEN, StatusReason::Forbidden, denied.0))
}

pub fn unauthorized(message: &str) -> ApiError {
    ApiError::status(StatusCode::UNAUTHORIZED, StatusReason::Unauthorized, message)
}

/// `GET /v1/whoami`.
pub async fn whoami(request: Request) -> Result<Json<WhoAmI>, ApiError> {
    let Authenticated(caller) = request.extensions().get::<Authenticated>().cloned().ok_or_else(|| ApiError::internal("no caller"))?;
    let connection = request.extensions().get::<Connection>();
    let authenticated_by = match (&caller.identity, connection.and_then(|c| c.certificate.as_ref())) {
        (Identity::Anonymous, _) => "anonymous",
        (_, Some(_)) => "certificate",
        (_, None) => "token",
    };
    Ok(Json(WhoAmI { user: caller.user, groups: caller.groups, authenticated_by: authenticated_by.to_owned() }))
}

/// Where `kubectl auth can-i` and the console ask what the caller may do.
pub const SELF_SUBJECT_ACCESS_REVIEWS: &str = "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews";

/// The question of a `SelfSubjectAccessReview` (Kubernetes' `authorization.k8s.io/v1`).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct AccessReview {
    spec: AccessReviewSpec,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct AccessReviewSpec {
    resource_attributes: Option<ResourceAttributes>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ResourceAttributes {
    #[serde(default)]
    namespace: String,
    verb: String,
    #[serde(default)]
    resource: String,
    #[serde(default)]
    subresource: String,
    #[serde(default)]
    name: String,
}

/// `POST /apis/authorization.k8s.io/v1/selfsubjectaccessreviews`: whether the caller may do
/// what the body asks, decided by the same rules as the request itself would be.
pub(crate) async fn self_subject_access_review(
    State(app): State<AppState>,
    Authenticated(caller): Authenticated,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> Result<Json<serde_json::Value>, ApiError> {
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("application/json");
    if !content_type.starts_with("application/json") {
        // kubectl sends Kubernetes' own types as protobuf; the orchestrators read JSON.
        return Err(ApiError::status(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            StatusReason::UnsupportedMediaType,
            format!("a SelfSubjectAccessReview is read as application/json, got {content_type:?}"),
        ));
    }
    let invalid = |message: String| ApiError::invalid(vec![crate::http::cause("body", message)]);
    let review: AccessReview = serde_json::from_slice(&body).map_err(|e| invalid(format!("not a SelfSubjectAccessReview: {e}")))?;
    let attributes = review
        .spec
        .resource_attributes
        .ok_or_else(|| invalid("spec.resourceAttributes is required (non-resource URLs are not reviewed)".to_owned()))?;
    let resource = match attributes.subresource.as_str() {
        "" => attributes.resource.clone(),
        sub => format!("{}/{sub}", attributes.resource),
    };
    let nonempty = |s: &str| Some(s.to_owned()).filter(|s| !s.is_empty());
    let (namespace, name) = (nonempty(&attributes.namespace), nonempty(&attributes.name));
    let action = Action {
        verb: &attributes.verb,
        resource: &resource,
        namespace: namespace.as_deref(),
        name: name.as_deref(),
        label_selector: None,
    };
    let decision = authz::authorize(&app.node.latest(), &caller, &action);
    let status = match decision {
        Ok(()) => serde_json::json!({ "allowed": true }),
        Err(denied) => serde_json::json!({ "allowed": false, "reason": denied.0 }),
    };
    Ok(Json(serde_json::json!({
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SelfSubjectAccessReview",
        "spec": { "resourceAttributes": {
            "namespace": attributes.namespace, "verb": attributes.verb, "resource": attributes.resource,
            "subresource": attributes.subresource, "name": attributes.name,
        } },
        "status": status,
    })))
}
