//! Discovery (OpenID Connect Discovery 1.0 §3), JWKS, health and metrics.

use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::config::Config;
use crate::oauth::internal;
use crate::state::AppState;
use crate::token::{CLAIMS, SCOPES};

/// The discovery document for `config`.
pub fn document(config: &Config) -> Vec<u8> {
    let doc = json!({
        "issuer": config.issuer.as_str().trim_end_matches('/'),
        "authorization_endpoint": config.endpoint("/auth"),
        "token_endpoint": config.endpoint("/token"),
        "jwks_uri": config.endpoint("/keys"),
        "userinfo_endpoint": config.endpoint("/userinfo"),
        "revocation_endpoint": config.endpoint("/revoke"),
        "introspection_endpoint": config.endpoint("/token/introspect"),
        "end_session_endpoint": config.endpoint("/logout"),
        // Not a registered name: gateways running the tokengate filter poll it (`http/revocations.rs`).
        "revocation_feed_endpoint": config.endpoint("/revocations"),
        "device_authorization_endpoint": config.endpoint("/device/code"),
        "response_types_supported": response_types(&config.oauth2.response_types),
        "response_modes_supported": if config.oauth2.response_types.iter().any(|t| t != "code") {
            vec!["query", "fragment"]
        } else {
            vec!["query"]
        },
        "grant_types_supported": config.oauth2.grant_types.iter().map(|g| g.as_str()).collect::<Vec<_>>(),
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": [config.signing.algorithm.as_str()],
        "code_challenge_methods_supported": config.oauth2.pkce.code_challenge_methods_supported,
        "scopes_supported": SCOPES,
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
        "revocation_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
        // Public clients cannot introspect (see `introspect`).
        "introspection_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        "claims_supported": CLAIMS,
        "request_parameter_supported": false,
        "claims_parameter_supported": false,
        // OpenID Connect Back-Channel Logout 1.0 §2.1: logout tokens always carry `sid`.
        "backchannel_logout_supported": true,
        "backchannel_logout_session_supported": true,
    });
    let mut doc = doc;
    if !config.oauth2.allows(crate::oauth::GrantType::DeviceCode) {
        if let Some(m) = doc.as_object_mut() {
            m.remove("device_authorization_endpoint");
        }
    }
    serde_json::to_vec_pretty(&doc).unwrap_or_default()
}

/// Every combination of the enabled response types (OAuth 2.0 Multiple Response Types §3), in the usual
/// order: `code`, `id_token`, `token`, `code id_token`, ...
fn response_types(enabled: &[String]) -> Vec<String> {
    let order = ["code", "id_token", "token"];
    let on: Vec<&str> = order.into_iter().filter(|t| enabled.iter().any(|e| e == t)).collect();
    let mut out: Vec<String> = (1..1usize << on.len())
        .map(|mask| {
            on.iter().enumerate().filter(|(i, _)| mask & (1 << i) != 0).map(|(_, t)| *t).collect::<Vec<_>>().join(" ")
        })
        .collect();
    out.sort_by_key(|s| (s.split(' ').count(), s.clone()));
    out
}

/// A public JSON document. Without a `web.allowedOrigins` policy any page may read it (`*`: it holds no
/// secret and is fetched without credentials); with one, the CORS layer alone decides who may.
fn json_bytes(state: &AppState, body: Vec<u8>, cache: String) -> Response {
    let mut r = body.into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if let Ok(v) = HeaderValue::from_str(&cache) {
        h.insert(header::CACHE_CONTROL, v);
    }
    if state.config.web.allowed_origins.is_empty() {
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
    }
    r
}

/// `GET /.well-known/openid-configuration`.
pub async fn openid_configuration(State(state): State<AppState>) -> Response {
    json_bytes(&state, state.discovery.clone(), "public, max-age=3600".to_owned())
}

/// `GET /keys`: every key that verifies, cacheable until the next rotation (a key published now signs only
/// after it, so a cached copy never misses a signing key).
pub async fn keys(State(state): State<AppState>) -> Response {
    match state.keys().await {
        Ok(k) => {
            let age = (k.next_rotation - state.clock.now()).clamp(0, 86_400);
            json_bytes(&state, k.jwks.clone(), format!("public, max-age={age}, must-revalidate"))
        }
        Err(e) => internal(e),
    }
}

/// `GET /healthz`: storage answers and keys are loadable.
pub async fn healthz(State(state): State<AppState>) -> Response {
    match state.keys().await {
        Ok(_) => (StatusCode::OK, [(header::CACHE_CONTROL, "no-store")], "ok\n").into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "health check failed");
            (StatusCode::SERVICE_UNAVAILABLE, [(header::CACHE_CONTROL, "no-store")], "unhealthy\n").into_response()
        }
    }
}

/// `GET /healthz/live`: the process serves requests. Never depends on the database: a liveness probe that
/// failed during a database outage would restart every replica for nothing.
pub async fn healthz_live() -> Response {
    (StatusCode::OK, [(header::CACHE_CONTROL, "no-store")], "ok\n").into_response()
}

/// `GET /healthz/ready`: the storage answers a read right now (one round trip) and signing keys are
/// loaded; otherwise 503 with `Retry-After`, so a load balancer sends traffic elsewhere until it recovers.
pub async fn healthz_ready(State(state): State<AppState>) -> Response {
    let storage = match state.storage.get_keys().await {
        Ok(_) | Err(crate::storage::StorageError::NotFound) => Ok(()),
        Err(e) => Err(e.to_string()),
    };
    let keys = state.keys().await.map(|_| ()).map_err(|e| e.to_string());
    match storage.and(keys) {
        Ok(()) => (StatusCode::OK, [(header::CACHE_CONTROL, "no-store")], "ready\n").into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "not ready");
            let retry = crate::oauth::RETRY_AFTER_SECS.to_string();
            (
                StatusCode::SERVICE_UNAVAILABLE,
                [(header::CACHE_CONTROL, "no-store"), (header::RETRY_AFTER, retry.as_str())],
                "not ready\n",
            )
                .into_response()
        }
    }
}

/// `GET /metrics`: Prometheus text format.
pub async fn metrics(State(state): State<AppState>) -> Response {
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], state.metrics.encode())
        .into_response()
}
