//! Token introspection (RFC 7662) at `/token/introspect`, for access tokens (both formats) and refresh
//! tokens.
//!
//! - The caller authenticates as at the token endpoint, with a client secret: §2.1 requires authorization
//!   against token scanning, and a public client proves nothing (anyone can send its id), so public clients
//!   get `invalid_client` (Dex's endpoint has no client authentication at all).
//! - A client learns only about tokens that concern it: an access token issued to it or naming it in `aud`
//!   (a cross-client peer), a refresh token issued to it. Any other token is `{"active": false}`, exactly
//!   like a forged, expired or revoked one (§2.2: nothing tells the caller why).
//! - A refresh token is active while the refresh grant would accept it: not revoked, not rotated away (its
//!   successor is the live one, even within `reuseInterval`), neither unused for longer than
//!   `validIfNotUsedFor` nor past the family's `absoluteLifetime`; `exp` is the earlier of the two.
//! - Access tokens are self-contained: active from issue to `exp` (revoking the session does not end them,
//!   as `/revoke` documents).
//! - `token_type` is `Bearer` for access tokens (§2.2: a type of RFC 6749 §7.1) and absent for refresh
//!   tokens, which are no access tokens, so a resource server that checks it never takes one for an access
//!   token. `token_use` (`access_token`, `refresh_token`) and `ext` (the identity claims) are Dex's fields.
//!   The token type hint is ignored (§2.1 allows it): the token's shape tells.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use serde_json::{json, Map, Value};
use subtle::ConstantTimeEq;

use super::{authenticate_client, Form};
use crate::config::Client;
use crate::oauth::TokenError;
use crate::state::AppState;
use crate::storage::StorageError;
use crate::token::{audience, verify_access_token, AccessTokenError, Audience, Mint, RefreshTokenString};

/// Dex's `token_use`: which kind of token was introspected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenUse {
    /// `access_token`.
    AccessToken,
    /// `refresh_token`.
    RefreshToken,
}

/// RFC 7662 §2.2: what an active token is. Times are Unix seconds.
#[derive(Debug, Serialize)]
pub struct Introspection {
    /// Always `true` (an inactive token is `{"active": false}` and nothing else).
    pub active: bool,
    /// The client the token was issued to.
    pub client_id: String,
    /// The user, as the ID token's `sub`.
    pub sub: String,
    /// Granted scopes, space-separated.
    pub scope: String,
    /// Expiry.
    pub exp: i64,
    /// Issue time.
    pub iat: i64,
    /// This issuer.
    pub iss: String,
    /// The ID token's audience.
    pub aud: Audience,
    /// `Bearer` for access tokens; absent for refresh tokens.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_type: Option<&'static str>,
    /// Dex's `token_use`.
    pub token_use: TokenUse,
    /// The access token's id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
    /// `preferred_username`, with the `profile` scope.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// The identity claims the scopes allow (`email`, `email_verified`, `name`, `preferred_username`,
    /// `groups`), as in the ID token.
    #[serde(flatten)]
    pub profile: Map<String, Value>,
    /// The same claims under Dex's key.
    pub ext: Map<String, Value>,
}

/// `POST /token/introspect`.
pub async fn introspect(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let headers_out = [(header::CACHE_CONTROL, "no-store"), (header::PRAGMA, "no-cache")];
    match handle(&state, &headers, &body).await {
        Ok(Some(i)) => (headers_out, Json(i)).into_response(),
        Ok(None) => (headers_out, Json(json!({ "active": false }))).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn handle(state: &AppState, headers: &HeaderMap, body: &Bytes) -> Result<Option<Introspection>, TokenError> {
    let form = Form::parse(headers, body).map_err(TokenError::InvalidRequest)?;
    let client = authenticate_client(state, headers, &form).await?;
    if client.public {
        return Err(TokenError::InvalidClient { basic: headers.contains_key(header::AUTHORIZATION) });
    }
    let token = form.require("token")?;
    let keys = state.keys().await?;
    let issuer = state.config.issuer.as_str().trim_end_matches('/');
    match verify_access_token(issuer, &state.server_key, &keys.public, token, state.clock.now()) {
        Ok(c) if c.client_id == client.id || c.aud.contains(&client.id) => Ok(Some(Introspection {
            active: true,
            client_id: c.client_id,
            sub: c.sub,
            scope: c.scope,
            exp: c.exp,
            iat: c.iat,
            iss: c.iss,
            aud: c.aud,
            token_type: Some("Bearer"),
            token_use: TokenUse::AccessToken,
            jti: Some(c.jti),
            username: username(&c.profile),
            ext: c.profile.clone(),
            profile: c.profile,
        })),
        Ok(_) => Ok(None),
        // Not an access token of ours in either format: perhaps a refresh token.
        Err(AccessTokenError::Invalid) => refresh_token(state, &client, token).await,
        Err(_) => Ok(None),
    }
}

fn username(profile: &Map<String, Value>) -> Option<String> {
    profile.get("preferred_username").and_then(Value::as_str).map(str::to_owned)
}

/// A refresh token of `client` that the refresh grant would accept now, described.
async fn refresh_token(state: &AppState, client: &Client, token: &str) -> Result<Option<Introspection>, TokenError> {
    let Some(presented) = RefreshTokenString::parse(token) else { return Ok(None) };
    let stored = match state.storage.get_refresh_token(&presented.id).await {
        Ok(t) => t,
        Err(StorageError::NotFound) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    if !bool::from(presented.secret_hash().as_bytes().ct_eq(stored.secret_hash.as_bytes())) {
        return Ok(None);
    }
    if stored.rotated_at.is_some() || stored.client_id != client.id {
        return Ok(None);
    }
    let life = &state.config.expiry.refresh_tokens;
    let exp = (stored.created_at + life.valid_if_not_used_for.as_secs() as i64)
        .min(stored.family_created_at + life.absolute_lifetime.as_secs() as i64)
        .min(stored.expiry);
    if state.clock.now() > exp {
        return Ok(None);
    }
    let mint = Mint {
        config: &state.config,
        client_id: &stored.client_id,
        scopes: &stored.scopes,
        identity: &stored.identity,
        nonce: None,
        auth_time: stored.auth_time,
        iat: stored.created_at,
        sid: Some(&stored.family_id),
        subject: None,
    };
    let profile = mint.profile();
    Ok(Some(Introspection {
        active: true,
        client_id: stored.client_id.clone(),
        sub: state.config.subject(&stored.identity),
        scope: stored.scopes.join(" "),
        exp,
        iat: stored.created_at,
        iss: state.config.issuer.as_str().trim_end_matches('/').to_owned(),
        aud: audience(&stored.client_id, &stored.scopes),
        token_type: None,
        token_use: TokenUse::RefreshToken,
        jti: None,
        username: username(&profile),
        ext: profile.clone(),
        profile,
    }))
}
