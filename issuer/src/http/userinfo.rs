//! The UserInfo endpoint (OIDC Core §5.3) with bearer access tokens (RFC 6750) in either format.

use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::Value;

use crate::oauth::TokenError;
use crate::state::AppState;
use crate::token::{verify_access_token, AccessTokenClaims};

/// `GET|POST /userinfo`.
pub async fn userinfo(State(state): State<AppState>, headers: HeaderMap) -> Response {
    match claims(&state, &headers).await {
        Ok(c) => {
            let mut body = c.profile;
            body.insert("sub".into(), Value::String(c.sub));
            ([(header::CACHE_CONTROL, "no-store")], Json(Value::Object(body))).into_response()
        }
        Err(e) => e.into_response(),
    }
}

async fn claims(state: &AppState, headers: &HeaderMap) -> Result<AccessTokenClaims, TokenError> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, t)| t.trim())
        .ok_or(TokenError::InvalidToken("a bearer access token is required"))?;
    let keys = state.keys().await?;
    let issuer = state.config.issuer.as_str().trim_end_matches('/');
    verify_access_token(issuer, &state.server_key, &keys.public, token, state.clock.now())
        .map_err(|e| TokenError::InvalidToken(e.description()))
}
