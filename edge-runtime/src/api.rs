//! The node's own HTTPS API: `POST /v1/ingest/{topic}`, `GET /v1/instances`, `GET /v1/stats`,
//! `GET /v1/heartbeat`, `GET /metrics`, `GET /healthz`. Every failure answers JSON
//! (`{"code", "message"}`) with a status that says what to do (docs/data-plane.md).
//!
//! The node serves with its own certificate (server name `<node>.nodes.edgeplane`) and admits
//! client certificates of the cluster CA by group: [`EDGE_INGEST_GROUPS`] may send readings,
//! [`EDGE_READ_GROUPS`] may read the rest. Only `/healthz` is open. (A node has no copy of the
//! cluster's roles or revocations: give devices short-lived certificates.)

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{from_fn_with_state, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use edgeplane_api::auth::{EDGE_INGEST_GROUPS, EDGE_READ_GROUPS};
use edgeplane_api::exposition::Exposition;
use edgeplane_tls::pki::ParsedSubject;
use edgeplane_tls::serve::Connection;

use crate::agent::Agent;
use crate::dataplane::{self, BodyError, DataPlane, Refused};

#[derive(Debug, Clone)]
struct Node {
    agent: Arc<Agent>,
    dataplane: Arc<DataPlane>,
    max_body: usize,
}

pub fn router(agent: Arc<Agent>, dataplane: Arc<DataPlane>, max_body: usize) -> Router {
    let readers = from_fn_with_state(EDGE_READ_GROUPS, admit);
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/v1/instances", get(instances).route_layer(readers.clone()))
        .route("/v1/heartbeat", get(heartbeat).route_layer(readers.clone()))
        .route("/v1/stats", get(stats).route_layer(readers.clone()))
        .route("/metrics", get(metrics).route_layer(readers))
        .route("/v1/ingest/{*topic}", post(ingest).route_layer(from_fn_with_state(EDGE_INGEST_GROUPS, admit)))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "no such path on an edge runtime's API (is this the address you meant?)") })
        .layer(DefaultBodyLimit::max(max_body))
        .with_state(Node { agent, dataplane, max_body })
}

/// Admits a client certificate (verified against the cluster CA by the TLS layer) of a user
/// in one of `groups`; refuses before the body is read.
async fn admit(State(groups): State<&'static [&'static str]>, request: Request, next: Next) -> Response {
    let certificate = request.extensions().get::<Connection>().and_then(|c| c.certificate.clone());
    let refuse = |status: StatusCode, message: String| {
        let mut response = error(status, &message);
        response.headers_mut().insert(header::CONNECTION, header::HeaderValue::from_static("close"));
        response
    };
    match certificate.as_ref().and_then(|c| c.subject()) {
        None => refuse(StatusCode::UNAUTHORIZED, "present a client certificate of the cluster CA".to_owned()),
        Some(ParsedSubject::User { name, groups: theirs }) => {
            if theirs.iter().any(|g| groups.contains(&g.as_str())) {
                next.run(request).await
            } else {
                refuse(StatusCode::FORBIDDEN, format!("{name} is in none of the groups this path admits ({})", groups.join(", ")))
            }
        }
        Some(other) => refuse(StatusCode::FORBIDDEN, format!("{other:?} may not use an edge node's API")),
    }
}

async fn instances(State(node): State<Node>) -> Json<Vec<edgeplane_api::node::InstanceReport>> {
    Json(node.agent.instance_reports())
}

async fn heartbeat(State(node): State<Node>) -> Json<edgeplane_api::node::Heartbeat> {
    Json(node.agent.heartbeat())
}

async fn stats(State(node): State<Node>) -> Json<dataplane::Stats> {
    Json(node.dataplane.stats())
}

/// `GET /metrics`: OpenMetrics to Prometheus, the classic text format to other clients.
async fn metrics(State(node): State<Node>, headers: HeaderMap) -> Response {
    let format = Exposition::negotiate(headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()));
    match node.dataplane.metrics().encode() {
        Ok(text) => ([(header::CONTENT_TYPE, format.content_type())], format.render(text)).into_response(),
        Err(_) => error(StatusCode::INTERNAL_SERVER_ERROR, "encoding the metrics failed"),
    }
}

/// `POST /v1/ingest/{topic}`: readings as JSON, NDJSON or a binary v1 batch (by Content-Type).
/// 200 once processed and durable; 400 for bodies it cannot read, 413 past the size limits,
/// 415 without a supported Content-Type; 429 and 503 (with Retry-After) when it cannot take
/// them now. The producer keeps what was not accepted.
async fn ingest(State(node): State<Node>, Path(topic): Path<String>, headers: HeaderMap, body: Result<Bytes, BytesRejection>) -> Response {
    let body = match body {
        Ok(body) => body,
        Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            let mut response =
                error(StatusCode::PAYLOAD_TOO_LARGE, &format!("the body exceeds the limit of {} bytes (--max-body-mib)", node.max_body));
            // The rest of the body was never read: the connection cannot carry another request.
            response.headers_mut().insert(header::CONNECTION, header::HeaderValue::from_static("close"));
            return response;
        }
        Err(e) => return error(StatusCode::BAD_REQUEST, &e.body_text()),
    };
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok());
    let (batch, count) = match dataplane::parse_body(content_type, &body) {
        Ok(parsed) => parsed,
        Err(e @ (BodyError::MissingContentType | BodyError::UnsupportedMediaType(_))) => {
            return error(StatusCode::UNSUPPORTED_MEDIA_TYPE, &e.to_string())
        }
        Err(e @ BodyError::Malformed(_)) => return error(StatusCode::BAD_REQUEST, &e.to_string()),
    };
    match node.dataplane.ingest(&topic, batch, u64::from(count), body.len()).await {
        Ok(()) => Json(serde_json::json!({ "accepted": count })).into_response(),
        Err(refused) => {
            let status = match refused {
                Refused::Busy(..) => StatusCode::TOO_MANY_REQUESTS,
                Refused::TooLarge(..) => StatusCode::PAYLOAD_TOO_LARGE,
                Refused::NoSubscriber(_) | Refused::NotReady(..) | Refused::OutboxFull(_) => StatusCode::SERVICE_UNAVAILABLE,
                Refused::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            };
            let mut response = error(status, &refused.to_string());
            if status == StatusCode::TOO_MANY_REQUESTS || status == StatusCode::SERVICE_UNAVAILABLE {
                response.headers_mut().insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
            }
            response
        }
    }
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(serde_json::json!({ "code": status.as_u16(), "message": message }))).into_response()
}
