//! Trust on the wire: enrolling edge nodes, renewing and revoking their certificates, issuing
//! people's certificates, bootstrap and service-account tokens, and what the route table says
//! about who may call what. The resources of authorization (roles and bindings) are in
//! [`crate::resources`]; the audit log in [`crate::audit`].
//!
//! - `POST /v1/nodes/enroll` with `Authorization: Bearer <bootstrap token>` and an
//!   [`EnrollRequest`] (the node's signing request; its key never leaves it): creates or adopts
//!   the node's EdgeNode and answers a [`CertificateResponse`] with the node's certificate.
//! - `POST /v1/nodes/{name}/certificate` with the node's current certificate and a
//!   [`RenewRequest`]: a new certificate for a new key.
//! - `DELETE /v1/nodes/{name}/certificate`: revokes every certificate of the node at once.
//! - `POST /v1/certificates` with a [`UserCertificateRequest`]: a client certificate for a
//!   person or program.
//! - `POST|GET /v1/bootstrap-tokens`, `DELETE /v1/bootstrap-tokens/{id}`.
//! - `POST /v1/serviceaccounts/{ns}/{name}/token`: a new bearer token for a ServiceAccount
//!   (the previous one stops working).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::resources::{Capacity, Tier};

pub const ENROLL: &str = "/v1/nodes/enroll";
pub const CERTIFICATES: &str = "/v1/certificates";
pub const BOOTSTRAP_TOKENS: &str = "/v1/bootstrap-tokens";
pub const ROUTES: &str = "/v1/routes";
pub const WHOAMI: &str = "/v1/whoami";

/// Path of a node's certificate (renew with POST, revoke with DELETE).
pub fn node_certificate_path(node: &str) -> String {
    format!("/v1/nodes/{node}/certificate")
}

/// Path that issues a ServiceAccount's token.
pub fn service_account_token_path(namespace: &str, name: &str) -> String {
    format!("/v1/serviceaccounts/{namespace}/{name}/token")
}

/// The group of cluster administrators.
pub const CLUSTER_ADMINS_GROUP: &str = "edgeplane:cluster-admins";
/// The group of sensors and gateways that send readings to an edge node's ingest API.
pub const DEVICES_GROUP: &str = "edgeplane:devices";
/// The edge runtime's own API has no roles of its own: it admits client certificates of the
/// cluster CA by group. These may send readings...
pub const EDGE_INGEST_GROUPS: &[&str] = &[DEVICES_GROUP, CLUSTER_ADMINS_GROUP];
/// ...and these may read its instances, stats and metrics.
pub const EDGE_READ_GROUPS: &[&str] = &[CLUSTER_ADMINS_GROUP, "edgeplane:operators", "edgeplane:viewers", "edgeplane:monitoring"];

/// The prefix of bootstrap tokens: `ept.<id>.<secret>`.
pub const BOOTSTRAP_TOKEN_PREFIX: &str = "ept";
/// The prefix of service-account tokens: `eps.<id>.<secret>`.
pub const SERVICE_ACCOUNT_TOKEN_PREFIX: &str = "eps";

/// Splits a token `<prefix>.<id>.<secret>` into its id and secret.
pub fn split_token<'a>(token: &'a str, prefix: &str) -> Option<(&'a str, &'a str)> {
    let rest = token.strip_prefix(prefix)?.strip_prefix('.')?;
    let (id, secret) = rest.split_once('.')?;
    let valid = |s: &str| !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_alphanumeric());
    (valid(id) && valid(secret)).then_some((id, secret))
}

/// The user name of a ServiceAccount's token.
pub fn service_account_user(namespace: &str, name: &str) -> String {
    format!("system:serviceaccount:{namespace}:{name}")
}

/// A runtime asking to join with a bootstrap token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EnrollRequest {
    pub name: String,
    /// Chosen by the runtime on its first start and kept on its disk: another runtime
    /// claiming the same name has another uid and is refused.
    pub uid: String,
    /// A PKCS#10 signing request (PEM). Only its public key is used.
    pub csr: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub tier: Tier,
    #[serde(default)]
    pub capabilities: Vec<String>,
    pub capacity: Capacity,
}

/// A node renewing its certificate (authenticated by the current one).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RenewRequest {
    pub csr: String,
}

/// A certificate the cluster CA issued, and the CA to trust.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CertificateResponse {
    pub certificate: String,
    pub ca: String,
    pub serial: String,
    /// Seconds since the Unix epoch.
    pub not_after: i64,
}

/// A client certificate for a person or program.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UserCertificateRequest {
    pub user: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    pub csr: String,
    /// Default 30 days, at most a year.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_seconds: Option<u64>,
}

/// What a new bootstrap token may do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BootstrapTokenRequest {
    pub ttl_seconds: u64,
    /// Only a node of this name may enroll with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// The labels a node enrolled with it gets (the node cannot choose other values for them).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// How many enrollments it allows.
    pub uses: u32,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
}

/// A bootstrap token as listed: never its secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BootstrapTokenInfo {
    pub id: String,
    /// Milliseconds since the Unix epoch.
    pub expires_at_ms: u64,
    pub uses_left: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    pub created_by: String,
}

/// A token, shown once when it is made; only its hash is kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenCreated {
    pub token: String,
    pub info: serde_json::Value,
}

/// Who the server takes the caller for, and what it may do (`GET /v1/whoami`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WhoAmI {
    pub user: String,
    pub groups: Vec<String>,
    /// How the caller authenticated: `certificate`, `token` or `anonymous`.
    pub authenticated_by: String,
}

/// One route of the REST API and who may call it (`GET /v1/routes`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RouteInfo {
    pub method: String,
    /// With `{placeholders}` as axum writes them.
    pub path: String,
    /// The rule, e.g. `public`, `node itself`, `rbac: create modules`.
    pub access: String,
}
