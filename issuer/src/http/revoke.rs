//! Token revocation (RFC 7009). Revoking a refresh token revokes its whole family: every token descended
//! from the same login. Access tokens (JWTs or opaque) are self-contained and expire on their own;
//! revoking one is accepted and has no further effect (§2.2 lets a server answer 200 for tokens it cannot
//! revoke).

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq;

use super::{authenticate_client, Form};
use crate::grant::revoke_family;
use crate::oauth::TokenError;
use crate::state::AppState;
use crate::storage::StorageError;
use crate::token::RefreshTokenString;

/// `POST /revoke`.
pub async fn revoke(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    match handle(&state, &headers, &body).await {
        Ok(()) => (StatusCode::OK, [(header::CACHE_CONTROL, "no-store")]).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn handle(state: &AppState, headers: &HeaderMap, body: &Bytes) -> Result<(), TokenError> {
    let form = Form::parse(headers, body).map_err(TokenError::InvalidRequest)?;
    let client = authenticate_client(state, headers, &form).await?;
    let token = form.require("token")?;
    // §2.2: an invalid or unknown token is not an error.
    let Some(presented) = RefreshTokenString::parse(token) else { return Ok(()) };
    let stored = match state.storage.get_refresh_token(&presented.id).await {
        Ok(t) => t,
        Err(StorageError::NotFound) => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    if !bool::from(presented.secret_hash().as_bytes().ct_eq(stored.secret_hash.as_bytes())) {
        return Ok(());
    }
    if stored.client_id != client.id {
        return Err(TokenError::UnauthorizedClient("the token was issued to another client"));
    }
    revoke_family(state, &stored.family_id, "revoked").await?;
    Ok(())
}
