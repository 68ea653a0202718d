//! The cloud sink's REST API (the stored state is [`edgeplane_core::sink`]).
//!
//! - `POST /v1/nodes/{name}/data` (node credential): a node uploads records from its outbox.
//!   Any orchestrator takes an upload: the records travel to the leader as a Raft proposal,
//!   and the answer (how many were stored, how many were duplicates) comes once they are
//!   committed and applied here. A node may send a record again after any doubt (a timeout,
//!   a lost orchestrator); the sink stores it once.
//! - `GET /v1/data`: stored records, oldest first, filtered and paged by cursor.

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use base64::Engine as _;
use edgeplane_api::data::{DataPage, DataQuery, UpRecord, UploadResponse, MAX_NAME_LEN};
use edgeplane_api::resources::AssignmentSpec;
use edgeplane_api::validate::{dns_label, dns_subdomain};
use edgeplane_api::{Consistency, StatusCause, StatusReason};
use edgeplane_core::events::{EventType, Events, Regarding};
use edgeplane_core::sink::MAX_QUERY_LIMIT;
use edgeplane_core::{Applied, ClusterState, Command, ObjectKey};
use serde_json::Value;

use crate::app::AppState;
use crate::auth::{Audit, Authenticated, NodeCredential, NODE_CREDENTIALS};
use crate::http::{
    body_error, cause, off_reactor, parse_consistency, query_params, read, unknown_params, write, write_error, ApiError, RawQuery,
};

/// Largest upload accepted. An upload becomes one Raft entry, so this also bounds what one
/// node can put in the log at once.
pub const MAX_UPLOAD_BYTES: usize = 16 * 1024 * 1024;

/// Brings the stored-level gauges up to date with this replica's state; run before a scrape.
pub async fn observe(state: &AppState) {
    if let Ok(s) = state.node.read(Consistency::Stale).await {
        state.sink_metrics.stored_records.set(s.sink().records() as i64);
        state.sink_metrics.stored_readings.set(s.sink().weight() as i64);
    }
}

pub(crate) async fn upload(
    State(state): State<AppState>,
    audit: Audit,
    Authenticated(caller): Authenticated,
    Path(name): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<UploadResponse>, ApiError> {
    // The route lets a node upload only as itself; its epoch comes from its credential.
    let Some(node) = caller.node().filter(|n| *n == name) else {
        return Err(ApiError::status(StatusCode::FORBIDDEN, StatusReason::Forbidden, format!("only node {name} uploads as node {name}")));
    };
    let latest = state.node.latest();
    let credential = latest
        .get(&ObjectKey::new(NODE_CREDENTIALS, "", node.to_owned()))
        .and_then(|o| serde_json::from_value::<NodeCredential>(Value::clone(&o.value)).ok())
        .ok_or_else(|| crate::auth::unauthorized("the node's credential was revoked; enroll it again"))?;
    let body = body.map_err(|e| body_error(e, "upload", MAX_UPLOAD_BYTES))?;
    let records = parse_upload(&body)?;
    not_anothers(&latest, node, &records)?;
    if records.is_empty() {
        return Ok(Json(UploadResponse::default()));
    }
    let command =
        Command::AppendData { node: name.clone(), epoch: credential.epoch, records, retain_readings: state.config.data_retention_readings };
    match write(&state, &audit, command).await {
        Ok(Applied::AppendedData(appended)) => {
            let m = &state.sink_metrics;
            m.accepted.inc_by(appended.accepted);
            m.duplicates.inc_by(appended.duplicates);
            m.stale.inc_by(appended.stale);
            m.refused.inc_by(appended.refused);
            m.evicted.inc_by(appended.evicted);
            if appended.stale > 0 {
                tracing::info!(node = %name, stale = appended.stale, "fenced records of an older assignment generation or node incarnation");
                let (state, node) = (state.clone(), name.clone());
                tokio::spawn(async move { record_fenced(&state, &node).await });
            }
            if appended.refused > 0 {
                tracing::warn!(node = %name, refused = appended.refused, "refused records of new streams: the node has as many streams as the sink keeps");
            }
            Ok(Json(UploadResponse {
                accepted: appended.accepted,
                duplicates: appended.duplicates,
                stale: appended.stale,
                refused: appended.refused,
            }))
        }
        Ok(_) => unreachable!("an append applies as an append"),
        // 504 outcome unknown included: the node sends the records again, and the sink
        // stores whatever did land only once.
        Err(e) => Err(write_error(&state, e).await),
    }
}

/// Records that an upload of `node` held fenced records, as an Event on its EdgeNode. Off the
/// upload's path; repeats fold, so the Event's count is the uploads that held some.
async fn record_fenced(state: &AppState, node: &str) {
    let latest = state.node.latest();
    let key = ObjectKey::new("edgenodes", "", node);
    let regarding = match latest.get(&key) {
        Some(object) => Regarding::object("EdgeNode", &key, &object.value),
        None => Regarding { kind: "EdgeNode", namespace: String::new(), name: node.to_owned(), uid: None },
    };
    let mut events = Events::default();
    let note = "refused uploaded records of an assignment generation that has moved to another node, or of an earlier \
                incarnation of this node; what the current replica produces is stored as usual";
    events.record(regarding, EventType::Warning, "FencedRecords", "Uploading", note.to_owned());
    let commands = events.commands(&latest, &crate::http::rfc3339_now());
    // Another upload recording the same Event at once wins the compare-and-swap: one count
    // fewer, nothing else lost.
    if let Err(e) = state.node.write(Command::Transaction(commands)).await {
        tracing::debug!(error = %e, node, "the fenced-records event was not recorded");
    }
}

/// Refuses records of streams this node never held: every record must belong to an
/// Assignment placed on this node, now or at the record's generation (the backlog of a replica
/// that moved away). A 403 naming each such record: they can never be accepted.
fn not_anothers(state: &ClusterState, node: &str, records: &[UpRecord]) -> Result<(), ApiError> {
    let mut causes = Vec::new();
    for (i, record) in records.iter().enumerate() {
        let stream = &record.stream;
        let key = ObjectKey::new("assignments", &stream.namespace, &stream.assignment);
        // The record's workload is the Assignment's own: a node may not file its output under
        // another Workload of the namespace.
        let held = state
            .get(&key)
            .and_then(|o| o.value.get("spec").and_then(|s| serde_json::from_value::<AssignmentSpec>(s.clone()).ok()))
            .is_some_and(|spec| {
                spec.held_by(node, record.generation) && spec.workload == record.workload && record.namespace == stream.namespace
            });
        if !held {
            causes.push(cause(
                format!("records[{i}].stream"),
                format!("node {node} never ran generation {} of Assignment {}/{}", record.generation, stream.namespace, stream.assignment),
            ));
        }
    }
    if causes.is_empty() {
        return Ok(());
    }
    let summary: Vec<String> = causes.iter().take(3).map(|c| format!("{}: {}", c.field, c.message)).collect();
    let mut status = edgeplane_api::Status::new(
        403,
        StatusReason::Forbidden,
        format!("records of streams this node does not own: {}", summary.join("; ")),
    );
    status.details.causes = causes;
    Err(ApiError(Box::new(status), None))
}

/// Decodes and checks an [`UploadRequest`](data::UploadRequest), reporting every problem with
/// its field path. Records are decoded one by one so that a malformed one is named by its
/// index, which serde's own errors do not say.
fn parse_upload(body: &[u8]) -> Result<Vec<UpRecord>, ApiError> {
    let invalid = |field: &str, message: String| ApiError::invalid(vec![cause(field, message)]);
    let value: Value = serde_json::from_slice(body).map_err(|e| invalid("body", format!("not valid JSON: {e}")))?;
    let Value::Object(mut fields) = value else {
        return Err(invalid("body", "must be an object with records".to_owned()));
    };
    let mut causes: Vec<StatusCause> =
        fields.keys().filter(|k| *k != "records").map(|k| cause(k.as_str(), "unknown field; an upload has only records")).collect();
    let items = match fields.remove("records") {
        Some(Value::Array(items)) => items,
        Some(_) => return Err(invalid("records", "must be a list".to_owned())),
        None => return Err(invalid("records", "required".to_owned())),
    };
    let mut records = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        match serde_json::from_value::<UpRecord>(item) {
            Ok(record) => {
                check_record(&record, &format!("records[{i}]"), &mut causes);
                records.push(record);
            }
            Err(e) => causes.push(cause(format!("records[{i}]"), e.to_string())),
        }
    }
    if causes.is_empty() {
        Ok(records)
    } else {
        Err(ApiError::invalid(causes))
    }
}

fn check_record(r: &UpRecord, path: &str, causes: &mut Vec<StatusCause>) {
    let mut problem = |field: &str, message: String| causes.push(cause(format!("{path}.{field}"), message));
    if r.seq == 0 {
        problem("seq", "must be >= 1 (sequence numbers start at 1)".to_owned());
    }
    if let Err(e) = dns_label(&r.namespace) {
        problem("namespace", e);
    }
    if let Err(e) = dns_subdomain(&r.workload) {
        problem("workload", e);
    }
    if r.output.is_empty() || r.output.len() > MAX_NAME_LEN {
        problem("output", format!("must be 1 to {MAX_NAME_LEN} bytes"));
    }
    // The stream is what deduplication keys on and the others are what queries filter on:
    // they must agree, or a record would be found under a stream it is not ordered in.
    if let Err(e) = dns_subdomain(&r.stream.assignment) {
        problem("stream", format!("the assignment in {}: {e}", r.stream));
    }
    if r.stream.namespace != r.namespace || r.stream.output != r.output {
        problem("stream", format!("must be {{namespace}}/{{assignment}}/{{output}} of this record, got {}", r.stream));
    }
    for (j, reading) in r.readings.iter().enumerate() {
        for (field, name) in [("device", &reading.device), ("metric", &reading.metric)] {
            if name.is_empty() || name.len() > MAX_NAME_LEN {
                problem(&format!("readings[{j}].{field}"), format!("must be 1 to {MAX_NAME_LEN} bytes"));
            }
        }
    }
    match &r.opaque {
        Some(_) if !r.readings.is_empty() => problem("opaque", "a record has readings or opaque bytes, not both".to_owned()),
        Some(bytes) => {
            if let Err(e) = base64::engine::general_purpose::STANDARD.decode(bytes) {
                problem("opaque", format!("not base64 (standard alphabet, padded): {e}"));
            }
        }
        // Neither: an output batch without readings. It still takes its place in the stream.
        None => {}
    }
}

/// The parameters `GET /v1/data` accepts.
const QUERY_PARAMS: &[&str] = &["namespace", "workload", "node", "stream", "output", "after", "limit", "consistency"];

pub(crate) async fn query(State(state): State<AppState>, raw: RawQuery) -> Result<Json<DataPage>, ApiError> {
    let (query, consistency) = parse_query(query_params(raw)?)?;
    let snapshot = read(&state, consistency).await?;
    // A filter matching little may scan every stored record: not work for the reactor.
    off_reactor(move || Json(snapshot.sink().query(&query))).await
}

fn parse_query(params: BTreeMap<String, String>) -> Result<(DataQuery, Consistency), ApiError> {
    let mut causes = unknown_params(&params, QUERY_PARAMS);
    let mut query = DataQuery::default();
    let mut consistency = Consistency::Linearizable;
    for (key, value) in params.iter().filter(|(k, _)| QUERY_PARAMS.contains(&k.as_str())) {
        let field = format!("query.{key}");
        let filter = match key.as_str() {
            "namespace" => &mut query.namespace,
            "workload" => &mut query.workload,
            "node" => &mut query.node,
            "stream" => &mut query.stream,
            "output" => &mut query.output,
            "after" => {
                match value.parse() {
                    Ok(after) => query.after = Some(after),
                    Err(_) => causes.push(cause(field, format!("must be a cursor (a non-negative integer), got {value:?}"))),
                }
                continue;
            }
            "limit" => {
                match value.parse() {
                    Ok(limit) if (1..=MAX_QUERY_LIMIT).contains(&limit) => query.limit = Some(limit),
                    _ => causes.push(cause(field, format!("must be between 1 and {MAX_QUERY_LIMIT}, got {value:?}"))),
                }
                continue;
            }
            "consistency" => {
                match parse_consistency(value) {
                    Ok(c) => consistency = c,
                    Err(e) => causes.push(cause(field, e)),
                }
                continue;
            }
            _ => unreachable!("only allowed keys reach here"),
        };
        if value.is_empty() {
            causes.push(cause(field, "must not be empty (leave the parameter out to match any)"));
        } else {
            *filter = Some(value.clone());
        }
    }
    if causes.is_empty() {
        Ok((query, consistency))
    } else {
        Err(ApiError::invalid(causes))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn record() -> Value {
        json!({
            "stream": "factory/line-a-filter-0/alerts", "seq": 1, "namespace": "factory",
            "workload": "line-a-filter", "output": "alerts", "generation": 4, "producedMs": 1,
            "readings": [{"ts": 1, "device": "press-1", "metric": "temp", "value": 21.5}]
        })
    }

    fn fields(result: Result<Vec<UpRecord>, ApiError>) -> Vec<String> {
        let err = result.expect_err("refused");
        assert_eq!(err.0.code, 400);
        err.0.details.causes.into_iter().map(|c| c.field).collect()
    }

    #[test]
    fn a_valid_upload_parses() {
        let mut opaque = record();
        opaque["readings"] = json!([]);
        opaque["opaque"] = json!("AAECAw==");
        let body = json!({"records": [record(), opaque]}).to_string();
        let records = parse_upload(body.as_bytes()).expect("valid");
        assert_eq!((records[0].readings.len(), records[1].opaque.as_deref()), (1, Some("AAECAw==")));
    }

    #[test]
    fn every_problem_is_named_by_its_field_path() {
        let mut bad = record();
        bad["seq"] = json!(0);
        bad["stream"] = json!("elsewhere/x/alerts");
        bad["readings"][0]["device"] = json!("");
        bad["opaque"] = json!("AAE");
        let mut missing = record();
        missing.as_object_mut().expect("object").remove("seq");
        let body = json!({"records": [record(), bad, missing], "extra": 1}).to_string();
        assert_eq!(
            fields(parse_upload(body.as_bytes())),
            ["extra", "records[1].seq", "records[1].stream", "records[1].readings[0].device", "records[1].opaque", "records[2]"]
        );
        let mut not_base64 = record();
        not_base64["readings"] = json!([]);
        not_base64["opaque"] = json!("not base64!");
        assert_eq!(fields(parse_upload(json!({"records": [not_base64]}).to_string().as_bytes())), ["records[0].opaque"]);
        assert_eq!(fields(parse_upload(b"{\"records\": 3}")), ["records"]);
        assert_eq!(fields(parse_upload(b"[]")), ["body"]);
        assert_eq!(fields(parse_upload(b"{")), ["body"]);
    }

    #[test]
    fn query_parameters_are_checked() {
        let params = |list: &[(&str, &str)]| list.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        let (query, consistency) =
            parse_query(params(&[("node", "edge-1"), ("after", "7"), ("limit", "10"), ("consistency", "stale")])).expect("valid");
        assert_eq!(
            (query, consistency),
            (DataQuery { node: Some("edge-1".into()), after: Some(7), limit: Some(10), ..Default::default() }, Consistency::Stale)
        );
        let err = parse_query(params(&[("limit", "0"), ("after", "-1"), ("node", ""), ("nodes", "x")])).expect_err("invalid");
        let fields: Vec<_> = err.0.details.causes.iter().map(|c| c.field.as_str()).collect();
        assert_eq!(fields, ["query.nodes", "query.after", "query.limit", "query.node"]);
        assert!(parse_query(params(&[("limit", "10001")])).is_err());
    }
}
