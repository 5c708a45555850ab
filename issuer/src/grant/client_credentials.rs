//! `grant_type=client_credentials` (RFC 6749 §4.4): a confidential client obtains tokens for itself, with no
//! user — for machine clients (CI, controllers). Enabled only when `oauth2.grantTypes` lists it.
//!
//! The tokens' `sub` is the client id (RFC 9068 §2.2), `aud` the client and the peers its cross-client
//! scopes name. With `openid` in `scope` an ID token comes too (kube-apiserver takes ID tokens, so a
//! machine client can reach a cluster whose RBAC binds the client id). No refresh token (§4.4.3): the
//! client asks again. Scopes describing a user (`email`, `profile`, `groups`, `offline_access`) are
//! refused, since there is none.

use crate::config::Client;
use crate::grant::{mint, Parts, TokenResponse};
use crate::http::Form;
use crate::oauth::TokenError;
use crate::state::AppState;
use crate::storage::Identity;
use crate::token::{parse_scopes, Mint};

/// Mints tokens for the authenticated `client`.
///
/// # Errors
/// `unauthorized_client` for a public client; `invalid_scope` for a user scope or an untrusted peer.
pub async fn exchange(state: &AppState, client: &Client, form: &Form) -> Result<TokenResponse, TokenError> {
    if client.public {
        return Err(TokenError::UnauthorizedClient("public clients cannot use the client credentials grant"));
    }
    let requested = form.get("scope").unwrap_or("");
    if let Some(s) = requested.split(' ').find(|s| ["email", "profile", "groups", "offline_access"].contains(s)) {
        return Err(TokenError::InvalidScope(format!("scope {s:?} describes a user; this grant has none")));
    }
    let with_openid = requested.split(' ').any(|s| s == "openid");
    let peers = state.scope_peers(requested).await?;
    let scopes = parse_scopes(&client.id, &format!("openid {requested}"), &peers)
        .map_err(|e| TokenError::InvalidScope(e.to_string()))?;
    let scopes: Vec<String> = scopes.into_iter().filter(|s| with_openid || s != "openid").collect();
    let now = state.clock.now();
    let identity = Identity {
        user_id: client.id.clone(),
        username: client.name.clone(),
        preferred_username: client.id.clone(),
        ..Identity::default()
    };
    let m = Mint {
        config: &state.config,
        client_id: &client.id,
        scopes: &scopes,
        identity: &identity,
        nonce: None,
        auth_time: now,
        iat: now,
        sid: None,
        subject: Some(&client.id),
    };
    let parts = Parts { access_token: true, id_token: with_openid, code: None };
    let minted = mint(state, &m, parts, "client_credentials").await?;
    Ok(TokenResponse {
        access_token: minted.access_token.unwrap_or_default(),
        token_type: "Bearer",
        issued_token_type: None,
        expires_in: state.config.expiry.id_tokens.as_secs(),
        id_token: minted.id_token,
        refresh_token: None,
        scope: scopes.join(" "),
    })
}
