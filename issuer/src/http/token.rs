//! The token endpoint (RFC 6749 §3.2): parses the form, authenticates the client once for every grant,
//! dispatches to the grant, and writes the response or the §5.2 error.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::{authenticate_client, Form};
use crate::grant::{self, TokenResponse};
use crate::oauth::TokenError;
use crate::state::AppState;

/// `POST /token`.
pub async fn token(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    match handle(&state, &headers, &body).await {
        Ok(t) => ([(header::CACHE_CONTROL, "no-store"), (header::PRAGMA, "no-cache")], Json(t)).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn handle(state: &AppState, headers: &HeaderMap, body: &Bytes) -> Result<TokenResponse, TokenError> {
    let form = Form::parse(headers, body).map_err(TokenError::InvalidRequest)?;
    let grant_type = form.require("grant_type")?;
    let client = authenticate_client(state, headers, &form).await?;
    match grant_type {
        "authorization_code" => grant::authorization_code::exchange(state, &client, &form).await,
        "refresh_token" => grant::refresh_token::refresh(state, &client, &form).await,
        grant::device_code::GRANT_TYPE => grant::device_code::poll(state, &client, &form).await,
        _ => Err(TokenError::UnsupportedGrantType),
    }
}
