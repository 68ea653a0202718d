//! The REST API's route table: every route with the rule that guards it.
//!
//! The router is built from [`table`] and nothing else, and `GET /v1/routes` serves the same
//! table, so a route cannot exist without its access rule, and the authorization tests, which
//! check every route the server reports, cannot miss one.

use axum::extract::{DefaultBodyLimit, State};
use axum::http::Method;
use axum::middleware::from_fn_with_state;
use axum::routing::{on, MethodFilter, MethodRouter};
use axum::{Json, Router};
use edgeplane_api::abi::MAX_MODULE_BYTES;
use edgeplane_api::auth::{RouteInfo, BOOTSTRAP_TOKENS, CERTIFICATES, ENROLL, ROUTES, WHOAMI};
use edgeplane_api::discovery;
use edgeplane_api::paths;

use crate::app::AppState;
use crate::auth::{Access, Guard, Name, Ns, Res, Verb};
use crate::http::{ApiError, MAX_BODY_BYTES};

/// One route: method, path, the rule guarding it, the largest body it takes, and its handler.
pub struct Route {
    pub method: Method,
    pub path: String,
    pub access: Access,
    pub max_body: usize,
    handler: MethodRouter<AppState>,
}

fn route(method: Method, path: impl Into<String>, access: Access, handler: MethodRouter<AppState>) -> Route {
    Route { method, path: path.into(), access, max_body: MAX_BODY_BYTES, handler }
}

impl Route {
    /// Takes bodies up to `bytes` instead of [`MAX_BODY_BYTES`].
    fn max_body(mut self, bytes: usize) -> Route {
        self.max_body = bytes;
        self.handler = self.handler.layer(DefaultBodyLimit::max(bytes));
        self
    }
}

fn rbac(verb: &'static str, resource: &'static str, namespace: Ns, name: Name) -> Access {
    Access::Rbac { verb: Verb::Is(verb), resource: Res::Is(resource), namespace, name }
}

/// Every route of the API.
pub fn table() -> Vec<Route> {
    use crate::{audit, auth, cluster, console, data, events, models, modules, native, nodes, resources, store, trust};
    let (get, post, put, patch, delete) = (Method::GET, Method::POST, Method::PUT, Method::PATCH, Method::DELETE);
    let mut routes = vec![
        route(get.clone(), paths::HEALTHZ, Access::Public, on(MethodFilter::GET, || async { "ok\n" })),
        route(post.clone(), ENROLL, Access::Public, on(MethodFilter::POST, trust::enroll)),
        route(
            get.clone(),
            paths::OPENAPI,
            Access::Authenticated,
            on(MethodFilter::GET, || async { Json(edgeplane_api::openapi::index(&edgeplane_api::openapi::document())) }),
        ),
        route(
            get.clone(),
            edgeplane_api::openapi::GROUP_VERSION_PATH,
            Access::Authenticated,
            on(MethodFilter::GET, || async { Json(edgeplane_api::openapi::document()) }),
        ),
        route(get.clone(), WHOAMI, Access::Authenticated, on(MethodFilter::GET, auth::whoami)),
        route(
            post.clone(),
            auth::SELF_SUBJECT_ACCESS_REVIEWS,
            Access::Authenticated,
            on(MethodFilter::POST, auth::self_subject_access_review),
        ),
        // The web console's files: public, like a login page (the data it shows is the API's).
        route(get.clone(), "/ui", Access::Public, on(MethodFilter::GET, console::redirect)),
        route(get.clone(), console::UI, Access::Public, on(MethodFilter::GET, console::index)),
        route(get.clone(), format!("{}{{file}}", console::UI), Access::Public, on(MethodFilter::GET, console::asset)),
        // Discovery, as Kubernetes clients (kubectl) expect it.
        route(get.clone(), "/version", Access::Authenticated, on(MethodFilter::GET, || async { Json(discovery::version_info()) })),
        route(get.clone(), "/api", Access::Authenticated, on(MethodFilter::GET, || async { Json(discovery::core_versions()) })),
        route(get.clone(), "/apis", Access::Authenticated, on(MethodFilter::GET, || async { Json(discovery::group_list()) })),
        route(get.clone(), "/apis/edgeplane.io", Access::Authenticated, on(MethodFilter::GET, || async { Json(discovery::api_group()) })),
        route(get.clone(), paths::RESOURCES, Access::Authenticated, on(MethodFilter::GET, || async { Json(discovery::resource_list()) })),
        route(get.clone(), "/api/v1", Access::Authenticated, on(MethodFilter::GET, || async { Json(discovery::core_resource_list()) })),
        route(
            get.clone(),
            "/apis/events.k8s.io",
            Access::Authenticated,
            on(MethodFilter::GET, || async { Json(discovery::events_api_group()) }),
        ),
        route(
            get.clone(),
            "/apis/events.k8s.io/v1",
            Access::Authenticated,
            on(MethodFilter::GET, || async { Json(discovery::events_resource_list()) }),
        ),
        route(get.clone(), ROUTES, Access::Authenticated, on(MethodFilter::GET, list_routes)),
        route(get.clone(), paths::METRICS, rbac("get", "metrics", Ns::None, Name::None), on(MethodFilter::GET, cluster::metrics)),
        route(get.clone(), paths::CLUSTER, rbac("get", "cluster", Ns::None, Name::None), on(MethodFilter::GET, cluster::cluster_status)),
        route(get.clone(), paths::BACKUP, rbac("get", "backups", Ns::None, Name::None), on(MethodFilter::GET, crate::backup::take)),
        route(get.clone(), "/v1/store/{kind}", rbac("list", "store", Ns::None, Name::None), on(MethodFilter::GET, store::list_objects)),
        route(
            get.clone(),
            "/v1/store/{kind}/{name}",
            rbac("get", "store", Ns::None, Name::Path("name")),
            on(MethodFilter::GET, store::get_object),
        ),
        route(
            put.clone(),
            "/v1/store/{kind}/{name}",
            rbac("update", "store", Ns::None, Name::Path("name")),
            on(MethodFilter::PUT, store::put_object),
        ),
        route(
            delete.clone(),
            "/v1/store/{kind}/{name}",
            rbac("delete", "store", Ns::None, Name::Path("name")),
            on(MethodFilter::DELETE, store::delete_object),
        ),
        route(
            post.clone(),
            "/v1/modules/{ns}/{name}/{version}",
            rbac("create", "modules", Ns::Path, Name::Path("name")),
            on(MethodFilter::POST, modules::push),
        )
        .max_body(MAX_MODULE_BYTES + 1),
        route(
            post.clone(),
            "/v1/models/{ns}/{name}/{version}",
            rbac("update", "models", Ns::Path, Name::Path("name")),
            on(MethodFilter::POST, models::push),
        )
        .max_body(models::MAX_MODEL_BYTES),
        route(
            get.clone(),
            "/v1/blobs/{digest}",
            rbac("get", "blobs", Ns::None, Name::Path("digest")),
            on(MethodFilter::GET, modules::blob),
        ),
        // Whoever may fetch a module may fetch it compiled (a node: a module its Assignments use).
        route(
            get.clone(),
            "/v1/blobs/{digest}/native",
            rbac("get", "blobs", Ns::None, Name::Path("digest")),
            on(MethodFilter::GET, native::native),
        ),
        route(
            post.clone(),
            "/v1/nodes/{name}/heartbeat",
            rbac("create", "edgenodes/heartbeat", Ns::None, Name::Path("name")),
            on(MethodFilter::POST, nodes::heartbeat),
        ),
        // Unbounded: a stream's heartbeats are limited one line at a time.
        route(
            post.clone(),
            "/v1/nodes/{name}/heartbeat/stream",
            rbac("create", "edgenodes/heartbeat", Ns::None, Name::Path("name")),
            on(MethodFilter::POST, nodes::heartbeat_stream),
        ),
        route(
            get.clone(),
            "/v1/nodes/{name}/heartbeat",
            rbac("get", "edgenodes/heartbeat", Ns::None, Name::Path("name")),
            on(MethodFilter::GET, nodes::last_heartbeat),
        ),
        route(
            get.clone(),
            edgeplane_api::paths::HEARTBEATS,
            rbac("list", "edgenodes/heartbeat", Ns::None, Name::None),
            on(MethodFilter::GET, nodes::fleet),
        ),
        route(
            post.clone(),
            "/v1/nodes/{name}/data",
            rbac("create", "edgenodes/data", Ns::None, Name::Path("name")),
            on(MethodFilter::POST, data::upload),
        )
        .max_body(data::MAX_UPLOAD_BYTES),
        route(get.clone(), edgeplane_api::data::DATA, rbac("get", "data", Ns::Query, Name::None), on(MethodFilter::GET, data::query)),
        route(
            post.clone(),
            "/v1/nodes/{name}/certificate",
            rbac("create", "edgenodes/certificate", Ns::None, Name::Path("name")),
            on(MethodFilter::POST, trust::renew),
        ),
        route(
            delete.clone(),
            "/v1/nodes/{name}/certificate",
            rbac("delete", "edgenodes/certificate", Ns::None, Name::Path("name")),
            on(MethodFilter::DELETE, trust::revoke_node),
        ),
        route(post.clone(), CERTIFICATES, rbac("create", "certificates", Ns::None, Name::None), on(MethodFilter::POST, trust::issue_user)),
        route(
            delete.clone(),
            format!("{CERTIFICATES}/{{serial}}"),
            rbac("delete", "certificates", Ns::None, Name::Path("serial")),
            on(MethodFilter::DELETE, trust::revoke_user),
        ),
        route(
            post.clone(),
            BOOTSTRAP_TOKENS,
            rbac("create", "bootstraptokens", Ns::None, Name::None),
            on(MethodFilter::POST, trust::create_bootstrap_token),
        ),
        route(
            get.clone(),
            BOOTSTRAP_TOKENS,
            rbac("list", "bootstraptokens", Ns::None, Name::None),
            on(MethodFilter::GET, trust::list_bootstrap_tokens),
        ),
        route(
            delete.clone(),
            format!("{BOOTSTRAP_TOKENS}/{{id}}"),
            rbac("delete", "bootstraptokens", Ns::None, Name::Path("id")),
            on(MethodFilter::DELETE, trust::delete_bootstrap_token),
        ),
        route(
            post.clone(),
            "/v1/serviceaccounts/{ns}/{name}/token",
            rbac("create", "serviceaccounts/token", Ns::Path, Name::Path("name")),
            on(MethodFilter::POST, trust::service_account_token),
        ),
        route(get.clone(), edgeplane_api::audit::AUDIT, rbac("get", "auditlog", Ns::None, Name::None), on(MethodFilter::GET, audit::page)),
    ];
    // Events, read-only, in both of Kubernetes' shapes, everywhere or in one namespace.
    let events_access = |name: bool| Access::Rbac {
        verb: Verb::FromMethod,
        resource: Res::Is("events"),
        namespace: Ns::Path,
        name: if name { Name::Path("name") } else { Name::None },
    };
    for (prefix, list, one) in [
        ("/api/v1", on(MethodFilter::GET, events::list_core), on(MethodFilter::GET, events::read_core)),
        ("/apis/events.k8s.io/v1", on(MethodFilter::GET, events::list_stored), on(MethodFilter::GET, events::read_stored)),
    ] {
        routes.extend([
            route(get.clone(), format!("{prefix}/events"), events_access(false), list.clone()),
            route(get.clone(), format!("{prefix}/namespaces/{{ns}}/events"), events_access(false), list),
            route(get.clone(), format!("{prefix}/namespaces/{{ns}}/events/{{name}}"), events_access(true), one),
        ]);
    }
    // The resource API, on both path shapes (cluster-scoped or all namespaces, and one
    // namespace), guarded by the path's resource and the method's verb.
    let resource = |sub: Option<&'static str>, name: bool| Access::Rbac {
        verb: Verb::FromMethod,
        resource: sub.map_or(Res::Plural, Res::PluralSub),
        namespace: Ns::Path,
        name: if name { Name::Path("name") } else { Name::None },
    };
    for scope in ["", "/namespaces/{ns}"] {
        let base = format!("{}{scope}/{{plural}}", paths::RESOURCES);
        let object = format!("{base}/{{name}}");
        routes.extend([
            route(get.clone(), base.clone(), resource(None, false), on(MethodFilter::GET, resources::list)),
            route(post.clone(), base.clone(), resource(None, false), on(MethodFilter::POST, resources::create)),
            route(get.clone(), object.clone(), resource(None, true), on(MethodFilter::GET, resources::read_one)),
            route(put.clone(), object.clone(), resource(None, true), on(MethodFilter::PUT, resources::replace)),
            route(patch.clone(), object.clone(), resource(None, true), on(MethodFilter::PATCH, resources::patch)),
            route(delete.clone(), object.clone(), resource(None, true), on(MethodFilter::DELETE, resources::delete)),
            route(get.clone(), format!("{object}/status"), resource(Some("status"), true), on(MethodFilter::GET, resources::read_one)),
            route(put.clone(), format!("{object}/status"), resource(Some("status"), true), on(MethodFilter::PUT, resources::write_status)),
            route(get.clone(), format!("{object}/events"), resource(Some("events"), true), on(MethodFilter::GET, resources::events)),
        ]);
    }
    routes
}

/// The router: every route of [`table`] behind [`guard`] with its rule.
pub fn router(state: AppState) -> Router {
    let mut router: Router<AppState> = Router::new();
    for r in table() {
        let guard = Guard { app: state.clone(), access: r.access, max_body: r.max_body };
        router = router.route(&r.path, r.handler.route_layer(from_fn_with_state(guard, crate::auth::guard)));
    }
    router
        .fallback(|| async { ApiError::not_found("no such API path") })
        // The body limit is enforced again when reading (to answer with a Status); this layer
        // stops oversized bodies before they are buffered.
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

/// `GET /v1/routes`.
async fn list_routes(State(_): State<AppState>) -> Json<Vec<RouteInfo>> {
    let mut all: Vec<RouteInfo> =
        table().iter().map(|r| RouteInfo { method: r.method.to_string(), path: r.path.clone(), access: r.access.describe() }).collect();
    all.sort();
    Json(all)
}
