//! Grants: what each grant type checks and what it issues. The token endpoint has already authenticated
//! the client; a grant returns a `TokenResponse` or the `TokenError` to send.

use serde::Serialize;

use crate::metrics::Metrics;
use crate::oauth::TokenError;
use crate::state::AppState;
use crate::storage::{Identity, RefreshToken};
use crate::token::{random_b64, Mint, RefreshTokenString};

pub mod authorization_code;
pub mod device_code;
pub mod password;
pub mod refresh_token;

/// RFC 6749 §5.1 successful response, plus the OIDC `id_token`.
#[derive(Debug, Serialize)]
pub struct TokenResponse {
    /// JWT access token for `/userinfo`.
    pub access_token: String,
    /// Always `Bearer`.
    pub token_type: &'static str,
    /// Access-token lifetime in seconds.
    pub expires_in: u64,
    /// The ID token.
    pub id_token: String,
    /// With `offline_access`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    /// Granted scopes.
    pub scope: String,
}

/// What to mint.
pub(crate) struct Issue<'a> {
    pub(crate) client_id: &'a str,
    pub(crate) scopes: &'a [String],
    pub(crate) identity: &'a Identity,
    pub(crate) nonce: Option<&'a str>,
    pub(crate) auth_time: i64,
    pub(crate) iat: i64,
    pub(crate) sid: Option<&'a str>,
    pub(crate) refresh_token: Option<String>,
    pub(crate) grant: &'static str,
}

/// Signs the ID and access tokens and assembles the response.
pub(crate) async fn issue(state: &AppState, i: Issue<'_>) -> Result<TokenResponse, TokenError> {
    let keys = state.keys().await?;
    let mint = Mint {
        config: &state.config,
        client_id: i.client_id,
        scopes: i.scopes,
        identity: i.identity,
        nonce: i.nonce,
        auth_time: i.auth_time,
        iat: i.iat,
        sid: i.sid,
    };
    let sign_err = |e: crate::keys::KeyError| TokenError::Internal(e.to_string());
    let access_token = crate::token::seal_access_token(&state.server_key, &mint.access_token(random_b64::<16>()))
        .map_err(|e| TokenError::Internal(e.to_string()))?;
    let id_token = keys.signer.sign_jwt(&mint.id_token(keys.signer.alg(), &access_token)).map_err(sign_err)?;
    Metrics::count(&state.metrics.tokens, i.grant);
    tracing::info!(target: "audit", event = "token_issued", grant = i.grant, sub = %state.config.subject(i.identity), client = i.client_id, refresh = i.refresh_token.is_some());
    Ok(TokenResponse {
        access_token,
        token_type: "Bearer",
        expires_in: state.config.expiry.id_tokens.as_secs(),
        id_token,
        refresh_token: i.refresh_token,
        scope: i.scopes.join(" "),
    })
}

/// What a first refresh token of a new family is for.
pub(crate) struct NewFamily<'a> {
    pub(crate) family_id: &'a str,
    pub(crate) client_id: &'a str,
    pub(crate) scopes: &'a [String],
    pub(crate) nonce: Option<&'a str>,
    pub(crate) identity: &'a Identity,
    pub(crate) auth_time: i64,
    pub(crate) now: i64,
    /// The browser session the family starts in (`crate::session`); `None` without a browser.
    pub(crate) session_id: Option<&'a str>,
}

/// Stores the first refresh token of a login's family and returns the string to hand out, or `None`
/// without `offline_access`.
pub(crate) async fn first_refresh_token(state: &AppState, f: NewFamily<'_>) -> Result<Option<String>, TokenError> {
    if !f.scopes.iter().any(|s| s == "offline_access") {
        return Ok(None);
    }
    let t = RefreshTokenString::random();
    let life = &state.config.expiry.refresh_tokens;
    let expiry = f.now + life.valid_if_not_used_for.min(life.absolute_lifetime).as_secs() as i64;
    state
        .storage
        .create_refresh_token(RefreshToken {
            id: t.id.clone(),
            family_id: f.family_id.to_owned(),
            secret_hash: t.secret_hash(),
            client_id: f.client_id.to_owned(),
            scopes: f.scopes.to_vec(),
            nonce: f.nonce.map(str::to_owned),
            identity: f.identity.clone(),
            auth_time: f.auth_time,
            created_at: f.now,
            family_created_at: f.now,
            expiry,
            rotated_at: None,
            successor: None,
            session_id: f.session_id.map(str::to_owned),
        })
        .await?;
    Ok(Some(t.encode()))
}

/// Revokes a refresh-token family, counting why.
pub(crate) async fn revoke_family(state: &AppState, family_id: &str, cause: &'static str) -> Result<u64, TokenError> {
    let n = state.storage.delete_refresh_family(family_id).await?;
    if n > 0 {
        Metrics::count(&state.metrics.revocations, cause);
        tracing::info!(target: "audit", event = "revocation", cause, family = family_id, tokens = n);
    }
    Ok(n)
}
