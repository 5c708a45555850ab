//! The UserInfo endpoint (OIDC Core §5.3) with bearer access tokens (RFC 6750).

use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::Value;

use crate::oauth::TokenError;
use crate::state::AppState;
use crate::token::{open_access_token, AccessTokenClaims};

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
    let claims =
        open_access_token(&state.server_key, token).ok_or(TokenError::InvalidToken("the access token is not valid"))?;
    if claims.iss != state.config.issuer.as_str().trim_end_matches('/')
        || claims.aud != state.config.endpoint("/userinfo")
    {
        return Err(TokenError::InvalidToken("the token is not an access token of this issuer"));
    }
    if claims.exp < state.clock.now() {
        return Err(TokenError::InvalidToken("the access token has expired"));
    }
    Ok(claims)
}
