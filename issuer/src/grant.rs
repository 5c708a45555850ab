//! Grants: what each grant type checks and what it issues. The token endpoint has already authenticated
//! the client; a grant returns a `TokenResponse` or the `TokenError` to send.

use serde::Serialize;

use crate::metrics::Metrics;
use crate::oauth::TokenError;
use crate::state::AppState;
use crate::storage::{Identity, RefreshToken};
use crate::token::{random_b64, AccessTokenFormat, Mint, RefreshTokenString, ACCESS_TOKEN_TYP};

pub mod authorization_code;
pub mod client_credentials;
pub mod device_code;
pub mod password;
pub mod refresh_token;
pub mod token_exchange;

/// RFC 6749 §5.1 successful response, plus the OIDC `id_token` (and RFC 8693's `issued_token_type`).
#[derive(Debug, Serialize)]
pub struct TokenResponse {
    /// The access token: a JWT (RFC 9068) or an opaque string, per `oauth2.accessTokenFormat`.
    pub access_token: String,
    /// Always `Bearer` (`N_A` would be for a token exchange that issues no access token; this one does).
    pub token_type: &'static str,
    /// RFC 8693 §2.2.1: the type of `access_token` in a token exchange response.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub issued_token_type: Option<&'static str>,
    /// Access-token lifetime in seconds.
    pub expires_in: u64,
    /// The ID token; absent for the client credentials grant (no user).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id_token: Option<String>,
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

/// Which tokens to sign, and what else the ID token covers.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Parts<'a> {
    /// Sign an access token.
    pub(crate) access_token: bool,
    /// Sign an ID token.
    pub(crate) id_token: bool,
    /// The authorization code issued with the ID token (hybrid flow): its `c_hash`.
    pub(crate) code: Option<&'a str>,
}

/// Signed tokens.
pub(crate) struct Minted {
    pub(crate) access_token: Option<String>,
    pub(crate) id_token: Option<String>,
}

/// Signs the tokens `parts` asks for, the access token first (the ID token's `at_hash` covers it, so the
/// two cannot be signed at once), and counts and audits the issue.
pub(crate) async fn mint(
    state: &AppState,
    mint: &Mint<'_>,
    parts: Parts<'_>,
    grant: &'static str,
) -> Result<Minted, TokenError> {
    let keys = state.keys().await?;
    let sign_err = |e: crate::keys::KeyError| TokenError::Internal(e.to_string());
    let access_token = if parts.access_token {
        let claims = mint.access_token(random_b64::<16>());
        Some(match state.config.oauth2.access_token_format {
            AccessTokenFormat::Jwt => keys.signer.sign_typed_jwt(ACCESS_TOKEN_TYP, &claims).map_err(sign_err)?,
            AccessTokenFormat::Opaque => crate::token::seal_access_token(&state.server_key, &claims)
                .map_err(|e| TokenError::Internal(e.to_string()))?,
        })
    } else {
        None
    };
    let id_token = if parts.id_token {
        let claims = mint.id_token(keys.signer.alg(), access_token.as_deref(), parts.code);
        Some(keys.signer.sign_jwt(&claims).map_err(sign_err)?)
    } else {
        None
    };
    Metrics::count(&state.metrics.tokens, grant);
    let sub = mint.sub();
    tracing::info!(target: "audit", event = "token_issued", grant, sub = %sub, client = mint.client_id, id_token = parts.id_token, access_token = parts.access_token);
    Ok(Minted { access_token, id_token })
}

/// Signs the ID and access tokens of a user's grant and assembles the response.
pub(crate) async fn issue(state: &AppState, i: Issue<'_>) -> Result<TokenResponse, TokenError> {
    let m = Mint {
        config: &state.config,
        client_id: i.client_id,
        scopes: i.scopes,
        identity: i.identity,
        nonce: i.nonce,
        auth_time: i.auth_time,
        iat: i.iat,
        sid: i.sid,
        subject: None,
    };
    let parts = Parts { access_token: true, id_token: true, code: None };
    let minted = mint(state, &m, parts, i.grant).await?;
    Ok(TokenResponse {
        access_token: minted.access_token.unwrap_or_default(),
        token_type: "Bearer",
        issued_token_type: None,
        expires_in: state.config.expiry.id_tokens.as_secs(),
        id_token: minted.id_token,
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
