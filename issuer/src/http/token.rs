//! The token endpoint (RFC 6749 §3.2): parses the form, authenticates the client once for every grant,
//! dispatches to the grant, and writes the response or the §5.2 error.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::{authenticate_client, client_ip, Form, Peer};
use crate::grant::{self, TokenResponse};
use crate::oauth::{GrantType, TokenError};
use crate::state::AppState;

/// `POST /token`.
pub async fn token(State(state): State<AppState>, peer: Peer, headers: HeaderMap, body: Bytes) -> Response {
    match handle(&state, &peer, &headers, &body).await {
        Ok(t) => ([(header::CACHE_CONTROL, "no-store"), (header::PRAGMA, "no-cache")], Json(t)).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn handle(state: &AppState, peer: &Peer, headers: &HeaderMap, body: &Bytes) -> Result<TokenResponse, TokenError> {
    let form = Form::parse(headers, body).map_err(TokenError::InvalidRequest)?;
    // Unknown and switched-off grants are refused alike, before the client is even looked at.
    let grant_type = GrantType::parse(form.require("grant_type")?)
        .filter(|g| *g != GrantType::Implicit && state.config.oauth2.allows(*g))
        .ok_or(TokenError::UnsupportedGrantType)?;
    let client = authenticate_client(state, headers, &form).await?;
    match grant_type {
        GrantType::AuthorizationCode => grant::authorization_code::exchange(state, &client, &form).await,
        GrantType::RefreshToken => grant::refresh_token::refresh(state, &client, &form).await,
        GrantType::DeviceCode => grant::device_code::poll(state, &client, &form).await,
        GrantType::Password => {
            let ip = client_ip(state, peer, headers).map_or_else(|| "-".to_owned(), |i| i.to_string());
            grant::password::exchange(state, &client, &form, &ip).await
        }
        GrantType::ClientCredentials => grant::client_credentials::exchange(state, &client, &form).await,
        GrantType::TokenExchange => grant::token_exchange::exchange(state, &client, &form).await,
        GrantType::Implicit => Err(TokenError::UnsupportedGrantType),
    }
}
