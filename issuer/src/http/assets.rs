//! `GET {issuer}/theme/{path}` and `GET {issuer}/static/{path}` (Dex's routes): the files
//! [`crate::frontend::Site`] loaded at start-up, with a strong `ETag` (a matching `If-None-Match` gets a 304)
//! and an hour of caching. A path is only ever a key into the loaded files, so nothing outside them can be
//! named. What the files are and where they come from is `frontend`'s business.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::frontend::Asset;
use crate::state::AppState;

/// Browsers may use a file this long before asking again (with `If-None-Match`). Pages link the theme's
/// files with `?v={etag}`, so a changed file is fetched at once anyway.
const CACHE_CONTROL: &str = "public, max-age=3600";

/// Opened directly (not as a stylesheet or image), a file runs nothing and loads nothing: an SVG or HTML file
/// in `static/` cannot script the issuer's origin.
const ASSET_CSP: &str = "default-src 'none'; style-src 'unsafe-inline'; sandbox";

/// `GET {issuer}/theme/{*path}`: a file of the configured theme.
pub async fn theme(State(state): State<AppState>, Path(path): Path<String>, headers: HeaderMap) -> Response {
    serve(state.site.theme_file(&path), &headers)
}

/// `GET {issuer}/static/{*path}`: a static file.
pub async fn static_file(State(state): State<AppState>, Path(path): Path<String>, headers: HeaderMap) -> Response {
    serve(state.site.static_file(&path), &headers)
}

fn serve(asset: Option<&Asset>, headers: &HeaderMap) -> Response {
    let Some(asset) = asset else {
        return (StatusCode::NOT_FOUND, "not found\n").into_response();
    };
    let fresh = headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().trim_start_matches("W/"))
        .any(|t| t == "*" || t == asset.etag);
    let mut r = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        let mut r = Response::new(Body::from(asset.body.clone()));
        r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(asset.content_type));
        r
    };
    let h = r.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(CACHE_CONTROL));
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(ASSET_CSP));
    if let Ok(etag) = HeaderValue::from_str(&asset.etag) {
        h.insert(header::ETAG, etag);
    }
    r
}
