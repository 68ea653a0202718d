//! Issuing and ending trust: edge node enrollment and renewal, revoking a node, people's
//! certificates, bootstrap tokens and ServiceAccount tokens.
//!
//! - Enrollment (`POST /v1/nodes/enroll`, bootstrap token): the token is checked (hash,
//!   expiry, uses, the node name it is limited to), the node's signing request is signed, and
//!   in one transaction the EdgeNode is created or adopted, the node's credential (its
//!   certificate's serial, its incarnation's epoch) is written and the token is used up.
//!   Enrolling again replaces every earlier certificate of the node.
//! - Renewal (`POST /v1/nodes/{name}/certificate`, the node's certificate): a new certificate;
//!   the credential keeps the new serial and the one the node presented, nothing older.
//! - Revocation (`DELETE /v1/nodes/{name}/certificate`, or deleting the EdgeNode): the
//!   credential is deleted, and every certificate of the node stops working on every
//!   orchestrator as soon as it applies the deletion.
//! - Tokens are shown once and stored as SHA-256 hashes.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::Json;
use edgeplane_api::auth::{
    split_token, BootstrapTokenInfo, BootstrapTokenRequest, CertificateResponse, EnrollRequest, RenewRequest, TokenCreated,
    UserCertificateRequest, BOOTSTRAP_TOKEN_PREFIX, CLUSTER_ADMINS_GROUP, SERVICE_ACCOUNT_TOKEN_PREFIX,
};
use edgeplane_api::resources::EdgeNodeSpec;
use edgeplane_api::{validate, Consistency, StatusCause, StatusReason};
use edgeplane_core::authz::Identity;
use edgeplane_core::{Command, ObjectKey, Precondition, ResourceWrite};
use edgeplane_tls::Subject;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::app::AppState;
use crate::auth::{
    unauthorized, Audit, Authenticated, NodeCredential, StoredServiceAccountToken, BOOTSTRAP_TOKENS, NODE_CREDENTIALS,
    REVOKED_CERTIFICATES, SERVICE_ACCOUNT_TOKENS,
};
use crate::http::{body_error, cause, read, rfc3339_now, unix_ms_now, write, write_error, ApiError, MAX_BODY_BYTES};
use crate::secrets::{constant_time_eq, random_hex, sha256_hex};

/// The annotation on an EdgeNode naming the runtime that enrolled it.
pub const UID_ANNOTATION: &str = "edgeplane.io/node-uid";
/// People's certificates: 30 days unless asked otherwise, a year at most.
const USER_CERT_DEFAULT: Duration = Duration::from_secs(30 * 24 * 3600);
const USER_CERT_MAX: Duration = Duration::from_secs(365 * 24 * 3600);
/// Bootstrap tokens live at most a week.
const TOKEN_MAX_TTL: u64 = 7 * 24 * 3600;

/// A bootstrap token as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StoredBootstrapToken {
    pub secret_sha256: String,
    pub expires_at_ms: u64,
    pub uses_left: u32,
    #[serde(default)]
    pub node: Option<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub description: String,
    pub created_by: String,
}

fn json_body<T: serde::de::DeserializeOwned>(body: Result<Bytes, BytesRejection>) -> Result<T, ApiError> {
    let body = body.map_err(|e| body_error(e, "body", MAX_BODY_BYTES))?;
    serde_json::from_slice(&body).map_err(|e| ApiError::invalid(vec![cause("body", e.to_string())]))
}

fn invalid_if_any(causes: Vec<StatusCause>) -> Result<(), ApiError> {
    if causes.is_empty() {
        Ok(())
    } else {
        Err(ApiError::invalid(causes))
    }
}

fn stored<T: serde::de::DeserializeOwned>(state: &edgeplane_core::ClusterState, key: &ObjectKey) -> Option<(T, u64)> {
    let object = state.get(key)?;
    Some((serde_json::from_value(Value::clone(&object.value)).ok()?, object.resource_version))
}

fn certificate_response(app: &AppState, issued: edgeplane_tls::Issued) -> CertificateResponse {
    CertificateResponse { certificate: issued.pem, ca: app.ca.cert_pem().to_owned(), serial: issued.serial, not_after: issued.not_after }
}

fn signing_error(e: edgeplane_tls::TlsError) -> ApiError {
    ApiError::invalid(vec![cause("csr", e.to_string())])
}

/// `POST /v1/nodes/enroll`.
pub async fn enroll(
    State(app): State<AppState>,
    audit: Audit,
    Authenticated(caller): Authenticated,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<CertificateResponse>, ApiError> {
    let presented = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
    let Some((token_id, secret)) = presented.and_then(|t| split_token(t.trim(), BOOTSTRAP_TOKEN_PREFIX)) else {
        return Err(unauthorized("enrollment needs Authorization: Bearer <bootstrap token> (ept.<id>.<secret>; edgectl token create)"));
    };
    let request: EnrollRequest = json_body(body)?;
    let now = read(&app, Consistency::Linearizable).await?;
    let token_key = ObjectKey::new(BOOTSTRAP_TOKENS, "", token_id.to_owned());
    let (token, _) = stored::<StoredBootstrapToken>(&now, &token_key)
        .filter(|(t, _)| constant_time_eq(t.secret_sha256.as_bytes(), sha256_hex(secret.as_bytes()).as_bytes()))
        .ok_or_else(|| unauthorized("the bootstrap token is not valid (wrong, deleted, or never issued)"))?;
    if token.expires_at_ms <= unix_ms_now() {
        return Err(unauthorized("the bootstrap token has expired; create another with edgectl token create"));
    }
    if token.uses_left == 0 {
        return Err(unauthorized("the bootstrap token is used up"));
    }
    if token.node.as_ref().is_some_and(|n| *n != request.name) {
        return Err(ApiError::status(
            StatusCode::FORBIDDEN,
            StatusReason::Forbidden,
            format!("this bootstrap token enrolls node {:?} only, not {:?}", token.node.as_deref().unwrap_or_default(), request.name),
        ));
    }
    let mut causes = Vec::new();
    if let Err(e) = validate::dns_label(&request.name) {
        causes.push(cause("name", e));
    }
    if request.uid.is_empty() || request.uid.len() > 128 {
        causes.push(cause("uid", "must be 1 to 128 characters"));
    }
    for (key, value) in &request.labels {
        if let Err(e) = validate::label_key(key).and_then(|()| validate::label_value(value)) {
            causes.push(cause(format!("labels.{key}"), e));
        }
        if token.labels.get(key).is_some_and(|fixed| fixed != value) {
            causes.push(cause(format!("labels.{key}"), format!("the bootstrap token sets it to {:?}", token.labels[key])));
        }
    }
    invalid_if_any(causes)?;
    let mut labels = request.labels.clone();
    labels.extend(token.labels.clone());

    let key = ObjectKey::new("edgenodes", "", request.name.clone());
    let credential_key = ObjectKey::new(NODE_CREDENTIALS, "", request.name.clone());
    let (spec, resource_write, precondition) = match now.get(&key) {
        None => (
            EdgeNodeSpec {
                tier: request.tier,
                capabilities: request.capabilities.clone(),
                capacity: request.capacity.clone(),
                taints: Vec::new(),
                cordoned: false,
            },
            ResourceWrite::Create { created_at: rfc3339_now() },
            Precondition::MustNotExist,
        ),
        Some(object) => {
            let owner = object.value.pointer(&format!("/metadata/annotations/{}", UID_ANNOTATION.replace('/', "~1")));
            if let Some(owner) = owner.and_then(Value::as_str).filter(|o| *o != request.uid) {
                return Err(ApiError::status(
                    StatusCode::CONFLICT,
                    StatusReason::Conflict,
                    format!(
                        "node name {:?} is enrolled by another runtime (uid {owner}); delete EdgeNode {} to give the name to this one",
                        request.name, request.name
                    ),
                ));
            }
            // Taints and cordoning are the operator's; what the node is, is the node's.
            let old: Option<EdgeNodeSpec> = object.value.get("spec").and_then(|s| serde_json::from_value(s.clone()).ok());
            let (taints, cordoned) = old.map(|o| (o.taints, o.cordoned)).unwrap_or_default();
            let spec = EdgeNodeSpec {
                tier: request.tier,
                capabilities: request.capabilities.clone(),
                capacity: request.capacity.clone(),
                taints,
                cordoned,
            };
            (spec, ResourceWrite::Replace, Precondition::ResourceVersion(object.resource_version))
        }
    };
    // The same runtime enrolling again keeps its epoch (its stream numbers go on); another
    // one starts a new epoch above any this node name ever had, in its credential or the sink.
    let previous = stored::<NodeCredential>(&now, &credential_key);
    // A node's name and uid are no secrets (viewers read both): while the node holds a live
    // certificate, its name is enrolled again only by the node itself or with a token made
    // for that name. Revoking the node, or its certificate expiring, frees it for any token.
    if previous.as_ref().is_some_and(|(c, _)| c.is_live())
        && caller.node() != Some(request.name.as_str())
        && token.node.as_deref() != Some(request.name.as_str())
    {
        return Err(ApiError::status(
            StatusCode::FORBIDDEN,
            StatusReason::Forbidden,
            format!(
                "node {0:?} is enrolled and its certificate is valid: enrolling it again needs that certificate, a token made for it (edgectl token create --node {0}), or revoking it first (edgectl node revoke {0})",
                request.name
            ),
        ));
    }
    let epoch = match &previous {
        Some((c, _)) if c.uid == request.uid => c.epoch,
        other => other.as_ref().map_or(0, |(c, _)| c.epoch).max(now.sink().epoch(&request.name)) + 1,
    };
    let credential_precondition = match now.get(&credential_key) {
        Some(o) => Precondition::ResourceVersion(o.resource_version),
        None => Precondition::MustNotExist,
    };
    let issued = app
        .ca
        .sign_request(&request.csr, &Subject::Node { name: request.name.clone() }, app.config.node_cert_ttl)
        .map_err(signing_error)?;
    let credential = NodeCredential { uid: request.uid.clone(), epoch, serials: vec![issued.serial.clone()], not_after: issued.not_after };
    let resource = json!({
        "apiVersion": edgeplane_api::resources::API_VERSION,
        "kind": "EdgeNode",
        "metadata": {"name": request.name, "labels": labels, "annotations": {UID_ANNOTATION: request.uid}},
        "spec": spec,
    });
    // Used up in the same transaction, by the state machine: enrollments with one token at
    // once do not conflict, and none gets past its last use or its expiry.
    let token_write = Command::UseToken { key: token_key, now_ms: unix_ms_now() };
    let command = Command::Transaction(vec![
        Command::PutResource { key, resource, precondition, write: resource_write },
        Command::Put {
            key: credential_key,
            value: serde_json::to_value(credential).expect("serializable"),
            precondition: credential_precondition,
        },
        token_write,
    ]);
    match write(&app, &audit, command).await {
        Ok(_) => {
            tracing::info!(node = %request.name, uid = %request.uid, epoch, serial = %issued.serial, "edge node enrolled");
            Ok(Json(certificate_response(&app, issued)))
        }
        Err(edgeplane_raft::WriteError::Rejected(edgeplane_core::ApplyError::Refused { why, .. })) => Err(unauthorized(&why)),
        Err(edgeplane_raft::WriteError::Rejected(edgeplane_core::ApplyError::NotFound { key })) if key.kind == BOOTSTRAP_TOKENS => {
            Err(unauthorized("the bootstrap token was deleted"))
        }
        Err(e) => Err(write_error(&app, e).await),
    }
}

/// `POST /v1/nodes/{name}/certificate`: a node renews its certificate.
pub async fn renew(
    State(app): State<AppState>,
    audit: Audit,
    Authenticated(caller): Authenticated,
    Path(name): Path<String>,
    request: axum::extract::Request,
) -> Result<Json<CertificateResponse>, ApiError> {
    let presented =
        request.extensions().get::<edgeplane_tls::serve::Connection>().and_then(|c| c.certificate.as_ref()).map(|c| c.serial.clone());
    let (Identity::Node { name: node }, Some(presented)) = (&caller.identity, presented) else {
        return Err(ApiError::status(
            StatusCode::FORBIDDEN,
            StatusReason::Forbidden,
            "only a node renews its own certificate, with that certificate",
        ));
    };
    if *node != name {
        return Err(ApiError::status(
            StatusCode::FORBIDDEN,
            StatusReason::Forbidden,
            format!("node {node} may not renew node {name}'s certificate"),
        ));
    }
    let body = axum::body::to_bytes(request.into_body(), MAX_BODY_BYTES).await.map_err(|_| {
        ApiError::status(
            StatusCode::PAYLOAD_TOO_LARGE,
            StatusReason::RequestEntityTooLarge,
            format!("the body exceeds {MAX_BODY_BYTES} bytes"),
        )
    })?;
    let renewal: RenewRequest = json_body(Ok(body))?;
    let now = read(&app, Consistency::Linearizable).await?;
    let key = ObjectKey::new(NODE_CREDENTIALS, "", name.clone());
    let (mut credential, version) =
        stored::<NodeCredential>(&now, &key).ok_or_else(|| unauthorized("the node's credential was revoked; enroll it again"))?;
    // Only the newest certificate renews: the one before stays valid for connections opened
    // before the last renewal, but whoever holds it (an old backup) cannot push the node's
    // current certificate out.
    match credential.serials.first() {
        Some(newest) if *newest == presented => {}
        Some(_) if credential.serials.contains(&presented) => {
            return Err(ApiError::status(
                StatusCode::FORBIDDEN,
                StatusReason::Forbidden,
                "this certificate was renewed already; renew with the newest one",
            ))
        }
        _ => return Err(unauthorized("the certificate presented was revoked or replaced; enroll the node again")),
    }
    let issued =
        app.ca.sign_request(&renewal.csr, &Subject::Node { name: name.clone() }, app.config.node_cert_ttl).map_err(signing_error)?;
    credential.serials = vec![issued.serial.clone(), presented];
    credential.not_after = issued.not_after;
    let command = Command::Put {
        key,
        value: serde_json::to_value(credential).expect("serializable"),
        precondition: Precondition::ResourceVersion(version),
    };
    match write(&app, &audit, command).await {
        Ok(_) => {
            tracing::info!(node = %name, serial = %issued.serial, "edge node renewed its certificate");
            Ok(Json(certificate_response(&app, issued)))
        }
        Err(e) => Err(write_error(&app, e).await),
    }
}

/// `DELETE /v1/nodes/{name}/certificate`: revokes every certificate of the node.
pub async fn revoke_node(State(app): State<AppState>, audit: Audit, Path(name): Path<String>) -> Result<StatusCode, ApiError> {
    let key = ObjectKey::new(NODE_CREDENTIALS, "", name.clone());
    match write(&app, &audit, Command::Delete { key, precondition: Precondition::None }).await {
        Ok(_) => {
            tracing::info!(node = %name, "revoked the node's certificates");
            Ok(StatusCode::NO_CONTENT)
        }
        Err(edgeplane_raft::WriteError::Rejected(edgeplane_core::ApplyError::NotFound { .. })) => {
            Err(ApiError::not_found(format!("node {name:?} has no credential (never enrolled, or revoked already)")))
        }
        Err(e) => Err(write_error(&app, e).await),
    }
}

/// `POST /v1/certificates`: a client certificate for a person or program.
pub async fn issue_user(
    State(app): State<AppState>,
    audit: Audit,
    Authenticated(caller): Authenticated,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<CertificateResponse>, ApiError> {
    let request: UserCertificateRequest = json_body(body)?;
    // Whoever may issue certificates (a role can grant it) cannot mint a cluster admin unless
    // they are one.
    if request.group.as_deref() == Some(CLUSTER_ADMINS_GROUP) && !caller.groups.iter().any(|g| g == CLUSTER_ADMINS_GROUP) {
        return Err(ApiError::status(
            StatusCode::FORBIDDEN,
            StatusReason::Forbidden,
            format!("only members of {CLUSTER_ADMINS_GROUP} issue certificates in that group"),
        ));
    }
    let lifetime = request.ttl_seconds.map_or(USER_CERT_DEFAULT, Duration::from_secs);
    if lifetime.is_zero() || lifetime > USER_CERT_MAX {
        return Err(ApiError::invalid(vec![cause("ttlSeconds", format!("must be between 1 and {}", USER_CERT_MAX.as_secs()))]));
    }
    let subject = Subject::User { name: request.user.clone(), group: request.group.clone() };
    let issued =
        app.ca.sign_request(&request.csr, &subject, lifetime).map_err(|e| ApiError::invalid(vec![cause("body", e.to_string())]))?;
    // Recorded with the serial, so that the audit log says which certificate was made.
    let record = ObjectKey::new("issued-certificates", "", issued.serial.clone());
    let value = json!({"user": request.user, "group": request.group, "notAfter": issued.not_after});
    match write(&app, &audit, Command::Put { key: record, value, precondition: Precondition::MustNotExist }).await {
        Ok(_) => Ok(Json(certificate_response(&app, issued))),
        Err(e) => Err(write_error(&app, e).await),
    }
}

/// `DELETE /v1/certificates/{serial}`: revokes a person's or program's certificate.
pub async fn revoke_user(State(app): State<AppState>, audit: Audit, Path(serial): Path<String>) -> Result<StatusCode, ApiError> {
    if serial.is_empty() || serial.len() > 64 || !serial.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ApiError::invalid(vec![cause("path.serial", "must be the certificate's serial in hex")]));
    }
    let key = ObjectKey::new(REVOKED_CERTIFICATES, "", serial.to_ascii_lowercase());
    match write(&app, &audit, Command::Put { key, value: json!({"revokedAtMs": unix_ms_now()}), precondition: Precondition::None }).await {
        Ok(_) => Ok(StatusCode::NO_CONTENT),
        Err(e) => Err(write_error(&app, e).await),
    }
}

/// `POST /v1/bootstrap-tokens`.
pub async fn create_bootstrap_token(
    State(app): State<AppState>,
    audit: Audit,
    Authenticated(caller): Authenticated,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<TokenCreated>), ApiError> {
    let request: BootstrapTokenRequest = json_body(body)?;
    let mut causes = Vec::new();
    if !(1..=TOKEN_MAX_TTL).contains(&request.ttl_seconds) {
        causes.push(cause("ttlSeconds", format!("must be between 1 and {TOKEN_MAX_TTL} (a week)")));
    }
    if request.uses == 0 {
        causes.push(cause("uses", "must be at least 1"));
    }
    if let Some(node) = &request.node {
        if let Err(e) = validate::dns_label(node) {
            causes.push(cause("node", e));
        }
    }
    for (key, value) in &request.labels {
        if let Err(e) = validate::label_key(key).and_then(|()| validate::label_value(value)) {
            causes.push(cause(format!("labels.{key}"), e));
        }
    }
    invalid_if_any(causes)?;
    let (id, secret) = (random_hex(4), random_hex(16));
    let stored = StoredBootstrapToken {
        secret_sha256: sha256_hex(secret.as_bytes()),
        expires_at_ms: unix_ms_now() + request.ttl_seconds * 1000,
        uses_left: request.uses,
        node: request.node,
        labels: request.labels,
        description: request.description,
        created_by: caller.user,
    };
    let info = token_info(&id, &stored);
    let key = ObjectKey::new(BOOTSTRAP_TOKENS, "", id.clone());
    match write(
        &app,
        &audit,
        Command::Put { key, value: serde_json::to_value(&stored).expect("serializable"), precondition: Precondition::MustNotExist },
    )
    .await
    {
        Ok(_) => Ok((
            StatusCode::CREATED,
            Json(TokenCreated {
                token: format!("{BOOTSTRAP_TOKEN_PREFIX}.{id}.{secret}"),
                info: serde_json::to_value(info).expect("serializable"),
            }),
        )),
        Err(e) => Err(write_error(&app, e).await),
    }
}

fn token_info(id: &str, t: &StoredBootstrapToken) -> BootstrapTokenInfo {
    BootstrapTokenInfo {
        id: id.to_owned(),
        expires_at_ms: t.expires_at_ms,
        uses_left: t.uses_left,
        node: t.node.clone(),
        labels: t.labels.clone(),
        description: t.description.clone(),
        created_by: t.created_by.clone(),
    }
}

/// `GET /v1/bootstrap-tokens`: without their secrets.
pub async fn list_bootstrap_tokens(State(app): State<AppState>) -> Result<Json<Vec<BootstrapTokenInfo>>, ApiError> {
    let state = read(&app, Consistency::Linearizable).await?;
    Ok(Json(
        state
            .list(BOOTSTRAP_TOKENS, None)
            .filter_map(|(k, o)| {
                serde_json::from_value::<StoredBootstrapToken>(Value::clone(&o.value)).ok().map(|t| token_info(&k.name, &t))
            })
            .collect(),
    ))
}

/// `DELETE /v1/bootstrap-tokens/{id}`.
pub async fn delete_bootstrap_token(State(app): State<AppState>, audit: Audit, Path(id): Path<String>) -> Result<StatusCode, ApiError> {
    let key = ObjectKey::new(BOOTSTRAP_TOKENS, "", id.clone());
    match write(&app, &audit, Command::Delete { key, precondition: Precondition::None }).await {
        Ok(_) => Ok(StatusCode::NO_CONTENT),
        Err(edgeplane_raft::WriteError::Rejected(edgeplane_core::ApplyError::NotFound { .. })) => {
            Err(ApiError::not_found(format!("no bootstrap token {id:?}")))
        }
        Err(e) => Err(write_error(&app, e).await),
    }
}

/// `POST /v1/serviceaccounts/{ns}/{name}/token`: a new token; the ServiceAccount's earlier
/// tokens stop working in the same write.
pub async fn service_account_token(
    State(app): State<AppState>,
    audit: Audit,
    Path((namespace, name)): Path<(String, String)>,
) -> Result<(StatusCode, Json<TokenCreated>), ApiError> {
    let state = read(&app, Consistency::Linearizable).await?;
    let account = ObjectKey::new("serviceaccounts", namespace.clone(), name.clone());
    if state.get(&account).is_none() {
        return Err(ApiError::not_found(format!("ServiceAccount {name:?} not found in namespace {namespace}; create it first")));
    }
    let mut commands: Vec<Command> = state
        .list(SERVICE_ACCOUNT_TOKENS, None)
        .filter(|(_, o)| {
            serde_json::from_value::<StoredServiceAccountToken>(Value::clone(&o.value))
                .is_ok_and(|t| t.namespace == namespace && t.name == name)
        })
        .map(|(k, o)| Command::Delete { key: k.clone(), precondition: Precondition::ResourceVersion(o.resource_version) })
        .collect();
    let (id, secret) = (random_hex(4), random_hex(16));
    let account_uid = state
        .get(&account)
        .and_then(|a| a.value.pointer("/metadata/uid").and_then(Value::as_str).map(str::to_owned))
        .ok_or_else(|| ApiError::internal(format!("ServiceAccount {namespace}/{name} has no uid")))?;
    let token = StoredServiceAccountToken {
        namespace: namespace.clone(),
        name: name.clone(),
        account_uid,
        secret_sha256: sha256_hex(secret.as_bytes()),
    };
    commands.push(Command::Put {
        key: ObjectKey::new(SERVICE_ACCOUNT_TOKENS, "", id.clone()),
        value: serde_json::to_value(token).expect("serializable"),
        precondition: Precondition::MustNotExist,
    });
    match write(&app, &audit, Command::Transaction(commands)).await {
        Ok(_) => Ok((
            StatusCode::CREATED,
            Json(TokenCreated {
                token: format!("{SERVICE_ACCOUNT_TOKEN_PREFIX}.{id}.{secret}"),
                info: json!({"user": edgeplane_api::auth::service_account_user(&namespace, &name), "id": id}),
            }),
        )),
        Err(e) => Err(write_error(&app, e).await),
    }
}

/// The commands that delete a node's credential along with its EdgeNode.
pub fn revoke_with_node(state: &edgeplane_core::ClusterState, node: &str) -> Option<Command> {
    let key = ObjectKey::new(NODE_CREDENTIALS, "", node.to_owned());
    state.get(&key).map(|o| Command::Delete { key, precondition: Precondition::ResourceVersion(o.resource_version) })
}
