//! Which HTTP endpoints Workloads may send results to: only those a SinkPolicy (in the
//! Workload's namespace) or a ClusterSinkPolicy allows. Without one, none: an `http` sink is
//! a way to make edge nodes open connections, and where to must be an operator's decision.

use edgeplane_api::validate::HttpUrl;
use edgeplane_core::ClusterState;
use serde_json::Value;

/// Whether `url` falls under an `httpAllow` prefix of a policy that covers `namespace`.
pub fn http_sink_allowed(state: &ClusterState, namespace: &str, url: &str) -> bool {
    let Ok(url) = HttpUrl::parse(url) else { return false };
    let prefixes = |o: &Value| -> Vec<String> {
        o.pointer("/spec/httpAllow").and_then(Value::as_array).into_iter().flatten().filter_map(|v| v.as_str().map(str::to_owned)).collect()
    };
    state
        .list("sinkpolicies", Some(namespace))
        .chain(state.list("clustersinkpolicies", None))
        .flat_map(|(_, o)| prefixes(&o.value))
        .filter_map(|prefix| HttpUrl::parse(&prefix).ok())
        .any(|prefix| url.is_under(&prefix))
}
