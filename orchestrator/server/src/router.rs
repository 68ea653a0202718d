//! The REST API's routes, assembled from the modules that serve them.

use axum::extract::DefaultBodyLimit;
use axum::Router;

use crate::app::AppState;
use crate::http::{ApiError, MAX_BODY_BYTES};

pub fn router(state: AppState) -> Router {
    Router::new()
        .merge(crate::cluster::routes())
        .merge(crate::store::routes())
        .merge(crate::resources::routes())
        .merge(crate::modules::routes())
        .merge(crate::nodes::routes())
        .merge(crate::data::routes())
        .fallback(|| async { ApiError::not_found("no such API path") })
        // The body limit is enforced again when reading (to answer with a Status); this layer
        // stops oversized bodies before they are buffered.
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}
