//! The HTTP kit every handler module uses: the error type and its `Status` body, body and
//! query-string parsing, reads and writes through the Raft node mapped to answers, and the
//! clock the API stamps resources with.
//!
//! Every failure is a [`Status`] with a reason and, where a field is at fault, its path.
//! Answers that invite a retry elsewhere (503, and 504 for writes whose outcome is unknown)
//! name the leader this orchestrator knows of.

use std::collections::BTreeMap;

use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::Query;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use edgeplane_api::selector::FieldSelector;
use edgeplane_api::table::IncludeObject;
use edgeplane_api::{Consistency, Status, StatusCause, StatusReason};
use edgeplane_core::{Applied, ApplyError, ClusterState, Command};
use edgeplane_raft::{ReadError, WriteError};

use crate::app::AppState;
use crate::auth::Audit;

/// Largest accepted request body (uploads and module pushes have their own limits).
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// A failed request, rendered as a [`Status`] body (boxed: it travels in every `Result`).
#[derive(Debug)]
pub struct ApiError(pub(crate) Box<Status>, pub(crate) Option<&'static str>);

impl ApiError {
    pub(crate) fn status(code: StatusCode, reason: StatusReason, message: impl Into<String>) -> ApiError {
        ApiError(Box::new(Status::new(code.as_u16(), reason, message)), None)
    }

    /// 405 for a method the route's resource does not take, with the `Allow` header RFC 9110
    /// requires naming the ones it does.
    pub(crate) fn method_not_allowed(allow: &'static str, message: impl Into<String>) -> ApiError {
        ApiError(Box::new(Status::new(StatusCode::METHOD_NOT_ALLOWED.as_u16(), StatusReason::MethodNotAllowed, message)), Some(allow))
    }

    /// 400: the request itself is malformed (path, query, body syntax).
    pub(crate) fn invalid(causes: Vec<StatusCause>) -> ApiError {
        Self::with_causes(StatusCode::BAD_REQUEST, "invalid request", causes)
    }

    /// 422: a well-formed resource that breaks the rules (Kubernetes' `Invalid`).
    pub(crate) fn unprocessable(causes: Vec<StatusCause>) -> ApiError {
        Self::with_causes(StatusCode::UNPROCESSABLE_ENTITY, "invalid resource", causes)
    }

    pub(crate) fn not_found(message: impl Into<String>) -> ApiError {
        Self::status(StatusCode::NOT_FOUND, StatusReason::NotFound, message)
    }

    pub(crate) fn internal(message: impl Into<String>) -> ApiError {
        Self::status(StatusCode::INTERNAL_SERVER_ERROR, StatusReason::InternalError, message)
    }

    fn with_causes(code: StatusCode, what: &str, causes: Vec<StatusCause>) -> ApiError {
        let summary: Vec<String> = causes.iter().map(|c| format!("{}: {}", c.field, c.message)).collect();
        let mut status = Status::new(code.as_u16(), StatusReason::Invalid, format!("{what}: {}", summary.join("; ")));
        status.details.causes = causes;
        ApiError(Box::new(status), None)
    }

    pub(crate) fn leader_hint(mut self, hint: Option<String>) -> ApiError {
        self.0.details.leader_api_addr = hint;
        self
    }
}

/// What a failed answer said, kept on the response for the audit record.
#[derive(Debug, Clone)]
pub struct ErrorMessage(pub StatusReason, pub String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = StatusCode::from_u16(self.0.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let said = ErrorMessage(self.0.reason, self.0.message.clone());
        let mut response = if code == StatusCode::PAYLOAD_TOO_LARGE {
            // The rest of the body was never read, so the connection cannot carry another
            // request; say so, or a client may reuse it and lose its next request.
            (code, [(header::CONNECTION, "close")], Json(*self.0)).into_response()
        } else {
            (code, Json(*self.0)).into_response()
        };
        if let Some(allow) = self.1 {
            response.headers_mut().insert(header::ALLOW, header::HeaderValue::from_static(allow));
        }
        response.extensions_mut().insert(said);
        response
    }
}

pub(crate) fn cause(field: impl Into<String>, message: impl Into<String>) -> StatusCause {
    StatusCause { field: field.into(), message: message.into() }
}

/// The path of a registry push (`/{namespace}/{name}/{version}`, modules and models alike),
/// every problem named.
pub(crate) fn versioned_path(namespace: &str, name: &str, version: &str) -> Result<(), ApiError> {
    let mut causes = Vec::new();
    if let Err(e) = edgeplane_api::validate::dns_label(namespace) {
        causes.push(cause("path.namespace", e));
    }
    if let Err(e) = edgeplane_api::validate::dns_label(name) {
        causes.push(cause("path.name", e));
    }
    if let Err(e) = edgeplane_api::validate::semver(version) {
        causes.push(cause("path.version", e));
    }
    if causes.is_empty() {
        Ok(())
    } else {
        Err(ApiError::invalid(causes))
    }
}

/// The Status for a body axum could not read: 413 past `limit` bytes (naming `what`), 400
/// otherwise.
pub(crate) fn body_error(e: BytesRejection, what: &str, limit: usize) -> ApiError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::status(
            StatusCode::PAYLOAD_TOO_LARGE,
            StatusReason::RequestEntityTooLarge,
            format!("the {what} exceeds the limit of {limit} bytes"),
        )
    } else {
        ApiError::invalid(vec![cause("body", e.body_text())])
    }
}

/// Query parameters as axum extracts them; a malformed query string is the handler's to report.
pub(crate) type RawQuery = Result<Query<BTreeMap<String, String>>, QueryRejection>;

/// The parameters of a query string, or a 400 naming the problem.
pub(crate) fn query_params(raw: RawQuery) -> Result<BTreeMap<String, String>, ApiError> {
    raw.map(|Query(params)| params).map_err(|e| ApiError::invalid(vec![cause("query", e.body_text())]))
}

/// A cause for every parameter the route does not accept: unknown parameters are reported,
/// not ignored.
pub(crate) fn unknown_params(params: &BTreeMap<String, String>, allowed: &[&str]) -> Vec<StatusCause> {
    params
        .keys()
        .filter(|k| !allowed.contains(&k.as_str()))
        .map(|k| {
            let accepted = if allowed.is_empty() { "none".to_owned() } else { allowed.join(", ") };
            cause(format!("query.{k}"), format!("unknown parameter; this route accepts: {accepted}"))
        })
        .collect()
}

/// The parameters of a query string, refusing any the route does not accept.
pub(crate) fn only_params(raw: RawQuery, allowed: &[&str]) -> Result<BTreeMap<String, String>, ApiError> {
    let mut params = query_params(raw)?;
    // kubectl's --request-timeout, on every request. The orchestrators bound every request
    // themselves (the write timeout, the read timeout) and the client gives up on its own
    // clock, so a valid one needs nothing more here; an invalid one is an error like any.
    if let Some(timeout) = params.remove("timeout") {
        if !is_duration(&timeout) {
            return Err(ApiError::invalid(vec![cause("query.timeout", format!("{timeout:?} is not a duration such as 30s, 1m or 500ms"))]));
        }
    }
    let unknown = unknown_params(&params, allowed);
    if unknown.is_empty() {
        Ok(params)
    } else {
        Err(ApiError::invalid(unknown))
    }
}

/// `resourceVersion`, if the query has one: a log index.
pub(crate) fn resource_version_param(params: &BTreeMap<String, String>) -> Result<Option<u64>, ApiError> {
    params
        .get("resourceVersion")
        .map(|v| {
            v.parse::<u64>().map_err(|_| ApiError::invalid(vec![cause("query.resourceVersion", format!("{v:?} is not a resourceVersion"))]))
        })
        .transpose()
}

/// `fieldSelector` on `fields` (everything when the query has none).
pub(crate) fn field_selector_param(params: &BTreeMap<String, String>, fields: &[&str]) -> Result<FieldSelector, ApiError> {
    params.get("fieldSelector").map_or_else(
        || Ok(FieldSelector::default()),
        |s| FieldSelector::parse(s, fields).map_err(|e| ApiError::invalid(vec![cause("query.fieldSelector", e)])),
    )
}

/// What the rows of a Table carry (`includeObject`).
pub(crate) fn include_object_param(params: &BTreeMap<String, String>) -> Result<IncludeObject, ApiError> {
    IncludeObject::parse(params.get("includeObject").map(String::as_str))
        .map_err(|e| ApiError::invalid(vec![cause("query.includeObject", e)]))
}

/// The parameters of a write (create, replace, patch), with the two every Kubernetes client
/// sends on writes: `fieldValidation`, where only `Strict` is what this server does (unknown
/// and duplicate fields are always refused), and `fieldManager`, accepted and not recorded
/// (there are no managed fields: every write replaces or merges whole objects).
pub(crate) fn write_params(raw: RawQuery, allowed: &[&str]) -> Result<BTreeMap<String, String>, ApiError> {
    let mut accepted: Vec<&str> = allowed.to_vec();
    accepted.extend(["fieldValidation", "fieldManager"]);
    let mut params = only_params(raw, &accepted)?;
    if let Some(validation) = params.remove("fieldValidation") {
        if validation != "Strict" {
            return Err(ApiError::invalid(vec![cause(
                "query.fieldValidation",
                format!("{validation:?}: this server always validates strictly (Strict, kubectl's --validate=strict)"),
            )]));
        }
    }
    if let Some(manager) = params.remove("fieldManager") {
        if manager.is_empty() || manager.len() > 128 || manager.chars().any(char::is_control) {
            return Err(ApiError::invalid(vec![cause("query.fieldManager", "1 to 128 printable characters")]));
        }
    }
    Ok(params)
}

/// A Go-style duration as Kubernetes clients send it: `30s`, `1m30s`, `500ms`, `1h`.
fn is_duration(text: &str) -> bool {
    let mut rest = text;
    if rest.is_empty() {
        return false;
    }
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(rest.len());
        if digits == 0 {
            return false;
        }
        rest = &rest[digits..];
        let unit = ["ns", "us", "µs", "ms", "s", "m", "h"].into_iter().find(|u| rest.starts_with(u));
        match unit {
            Some(unit) => rest = &rest[unit.len()..],
            None => return false,
        }
    }
    true
}

/// The `consistency` parameter.
pub(crate) fn parse_consistency(value: &str) -> Result<Consistency, String> {
    match value {
        "linearizable" => Ok(Consistency::Linearizable),
        "stale" => Ok(Consistency::Stale),
        _ => Err(format!("must be \"linearizable\" or \"stale\", got {value:?}")),
    }
}

/// The `consistency` parameter of a parsed query, linearizable when absent.
pub(crate) fn consistency(params: &BTreeMap<String, String>) -> Result<Consistency, ApiError> {
    match params.get("consistency") {
        None => Ok(Consistency::Linearizable),
        Some(value) => parse_consistency(value).map_err(|e| ApiError::invalid(vec![cause("query.consistency", e)])),
    }
}

/// A copy of the replicated state, current as `consistency` asks, or the answer to give
/// instead. The copy is O(1); work on it happens on the caller's task.
pub(crate) async fn read(state: &AppState, consistency: Consistency) -> Result<ClusterState, ApiError> {
    match state.node.read(consistency).await {
        Ok(s) => Ok(s),
        Err(e) => Err(read_error(state, e).await),
    }
}

/// Runs CPU-heavy work on a blocking thread (rendering a long list, scanning the sink), so
/// that no async worker stalls on it.
pub(crate) async fn off_reactor<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(work).await.map_err(|_| ApiError::internal("the request's work failed"))
}

/// The API address of the leader this node knows of, if any.
pub(crate) async fn leader_hint(state: &AppState) -> Option<String> {
    let s = state.node.status().await?;
    state.config.member(s.leader_id?).map(|m| m.api.to_string())
}

/// Writes `command` through Raft with the request's audit record in the same log entry: the
/// write and its record exist together or not at all.
pub(crate) async fn write(state: &AppState, audit: &Audit, command: Command) -> Result<Applied, WriteError> {
    audited_write(state, audit, command, false).await
}

/// [`write`] for a handler that retries the write when it loses a compare-and-swap: a
/// conflict is recorded by neither the state machine nor here, so that the request still has
/// exactly one record, from the attempt that ends it (or from the door, if it gives up).
pub(crate) async fn write_retrying_conflicts(state: &AppState, audit: &Audit, command: Command) -> Result<Applied, WriteError> {
    audited_write(state, audit, command, true).await
}

async fn audited_write(state: &AppState, audit: &Audit, command: Command, retried_on_conflict: bool) -> Result<Applied, WriteError> {
    let audited = Command::Audited { event: Box::new(audit.event()), command: Box::new(command), retried_on_conflict };
    let result = state.node.write(audited).await;
    match &result {
        Err(WriteError::Rejected(ApplyError::Conflict { .. })) if retried_on_conflict => {}
        // Refused as too late to deduplicate: the entry did nothing, its record included.
        Err(WriteError::Rejected(ApplyError::Expired { .. })) => {}
        // Applied, refused by the state machine (recorded with why), or unknown (it may be in
        // the log with its record: recording it again could make two).
        Ok(_) | Err(WriteError::Rejected(_) | WriteError::Timeout | WriteError::CommittedResultUnknown | WriteError::Interrupted) => {
            audit.mark_recorded()
        }
        Err(WriteError::NoLeader | WriteError::Overloaded | WriteError::Stopped) => {}
    }
    result
}

/// Maps a failed write to its Status.
pub(crate) async fn write_error(state: &AppState, e: WriteError) -> ApiError {
    let message = e.to_string();
    let conflict = |reason, current| {
        let mut err = ApiError::status(StatusCode::CONFLICT, reason, message.clone());
        err.0.details.current_resource_version = Some(current);
        err
    };
    match e {
        WriteError::Rejected(ApplyError::NotFound { .. }) => ApiError::not_found(message),
        WriteError::Rejected(ApplyError::AlreadyExists { current, .. }) => conflict(StatusReason::AlreadyExists, current),
        WriteError::Rejected(ApplyError::Conflict { current, .. }) => conflict(StatusReason::Conflict, current),
        WriteError::Rejected(ApplyError::Undecodable { .. }) => ApiError::internal(message),
        WriteError::Rejected(ApplyError::Refused { why, .. }) => ApiError::status(StatusCode::FORBIDDEN, StatusReason::Forbidden, why),
        WriteError::Timeout | WriteError::CommittedResultUnknown | WriteError::Interrupted => {
            let mut err = ApiError::status(StatusCode::GATEWAY_TIMEOUT, StatusReason::Timeout, message);
            err.0.details.outcome_unknown = true;
            err.leader_hint(leader_hint(state).await)
        }
        // Definitely without effect: safe to retry, here or elsewhere.
        WriteError::Rejected(ApplyError::Expired { .. }) | WriteError::NoLeader | WriteError::Overloaded | WriteError::Stopped => {
            ApiError::status(StatusCode::SERVICE_UNAVAILABLE, StatusReason::ServiceUnavailable, message)
                .leader_hint(leader_hint(state).await)
        }
    }
}

pub(crate) async fn read_error(state: &AppState, e: ReadError) -> ApiError {
    let (code, reason) = match e {
        ReadError::Timeout => (StatusCode::GATEWAY_TIMEOUT, StatusReason::Timeout),
        ReadError::NoLeader | ReadError::Overloaded | ReadError::Stopped => {
            (StatusCode::SERVICE_UNAVAILABLE, StatusReason::ServiceUnavailable)
        }
    };
    ApiError::status(code, reason, e.to_string()).leader_hint(leader_hint(state).await)
}

/// The current UTC time in RFC 3339 to the millisecond, for audit records.
pub(crate) fn rfc3339_millis_now() -> String {
    jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

/// The current UTC time in RFC 3339 to the second, as Kubernetes stamps resources.
pub(crate) fn rfc3339_now() -> String {
    jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// Milliseconds since the Unix epoch, for times the leader writes into commands.
pub(crate) fn unix_ms_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_rfc_3339_to_the_second() {
        let now = rfc3339_now();
        assert!(now.parse::<jiff::Timestamp>().is_ok(), "{now}");
        assert_eq!(now.len(), 20, "{now}");
    }

    #[test]
    fn kubectl_timeouts_are_durations() {
        for ok in ["30s", "1m30s", "500ms", "1h", "0s"] {
            assert!(is_duration(ok), "{ok}");
        }
        for bad in ["", "30", "s", "1x", "-1s", "1s2"] {
            assert!(!is_duration(bad), "{bad}");
        }
    }

    #[test]
    fn unknown_parameters_are_named() {
        let params: BTreeMap<String, String> = [("watch".to_owned(), "1".to_owned()), ("limit".to_owned(), "2".to_owned())].into();
        let causes = unknown_params(&params, &["limit"]);
        assert_eq!(causes.iter().map(|c| c.field.as_str()).collect::<Vec<_>>(), ["query.watch"]);
        assert!(causes[0].message.ends_with("accepts: limit"), "{}", causes[0].message);
        assert!(unknown_params(&params, &[])[0].message.ends_with("accepts: none"));
    }
}
