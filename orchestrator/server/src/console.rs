//! The web console at `/ui/`: a page and its script, compiled into the binary, so every
//! orchestrator serves it and it needs nothing beyond the orchestrator (no CDN, no build step).
//!
//! The assets are public (they hold no data); everything the console shows it reads from the
//! API with the signed-in user's credential, under the same RBAC as edgectl and kubectl. The
//! script asks the API which actions the user may take (`SelfSubjectAccessReview`) to disable
//! the buttons it may not use; the API refuses them anyway.

use axum::extract::Path;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};

use crate::http::ApiError;

/// Where the console lives.
pub const UI: &str = "/ui/";

/// The console's files: name, content type, bytes.
const ASSETS: &[(&str, &str, &str)] = &[
    ("index.html", "text/html; charset=utf-8", include_str!("../ui/index.html")),
    ("console.js", "text/javascript; charset=utf-8", include_str!("../ui/console.js")),
    ("console.css", "text/css; charset=utf-8", include_str!("../ui/console.css")),
    // uPlot (MIT, vendor/uplot-LICENSE), pinned in ui/package-lock.json; scripts/ui-vendor.sh.
    ("uplot.min.js", "text/javascript; charset=utf-8", include_str!("../ui/vendor/uplot.min.js")),
    ("uplot.min.css", "text/css; charset=utf-8", include_str!("../ui/vendor/uplot.min.css")),
];

/// Scripts, styles and requests from this origin only: no inline script, nothing fetched from
/// elsewhere, and the page cannot be framed.
const CONTENT_SECURITY_POLICY: &str =
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// `GET /ui`: to the console's own path, so relative asset paths resolve.
pub(crate) async fn redirect() -> Redirect {
    Redirect::permanent(UI)
}

/// `GET /ui/`: the page.
pub(crate) async fn index() -> Response {
    serve("index.html").unwrap_or_else(IntoResponse::into_response)
}

/// `GET /ui/{file}`.
pub(crate) async fn asset(Path(file): Path<String>) -> Result<Response, ApiError> {
    serve(&file)
}

fn serve(file: &str) -> Result<Response, ApiError> {
    let (_, content_type, body) =
        ASSETS.iter().find(|(name, _, _)| *name == file).ok_or_else(|| ApiError::not_found(format!("the console has no file {file:?}")))?;
    let mut response = (StatusCode::OK, *body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    // The files change with the binary: revalidate rather than cache across an upgrade.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_file_the_page_names_is_served() {
        let (_, _, page) = ASSETS[0];
        for (name, _, _) in &ASSETS[1..] {
            assert!(page.contains(&format!("\"{name}\"")), "index.html should load {name}");
        }
        assert!(serve("../main.rs").is_err() && serve("").is_err());
    }
}
