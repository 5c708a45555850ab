//! `grant_type=urn:ietf:params:oauth:grant-type:token-exchange` (RFC 8693): an authenticated client trades
//! a token that proves a user for this issuer's tokens — typically a service that holds an upstream ID
//! token, or one of this issuer's tokens minted for another client, and needs a token for `audience`.
//! Enabled only when `oauth2.grantTypes` lists it. Every exchange is audited.
//!
//! The subject token (`subject_token_type` an ID token or an access token, §3) is:
//! - one of this issuer's: a JWT that verifies against its keys (an ID token, or an RFC 9068 access
//!   token), unexpired, with this `iss`, issued to the requesting client (its `aud`, `azp` or
//!   `client_id`). The user keeps its `sub` and claims;
//! - or an upstream's, when `connector_id` names an `oidc` connector (Dex's parameter): that connector
//!   verifies it ([`crate::connector::TokenIdentityConnector`]), and the user passes the connector's and
//!   the client's policy as at a login.
//!
//! `audience` (optional) names the client the new tokens are for: the requester itself, or a client that
//! lists the requester in `trustedPeers` (Dex cross-client trust); it ends up in `aud`, the requester in
//! `azp`. `requested_token_type` is an access token (default) or an ID token (§2.2.1: then returned in
//! `access_token`, `token_type` `N_A`). No refresh token is issued.

use serde_json::Value;

use crate::config::Client;
use crate::connector::{ConnectorError, SubjectTokenType};
use crate::grant::{mint, Parts, TokenResponse};
use crate::http::Form;
use crate::oauth::TokenError;
use crate::state::AppState;
use crate::storage::Identity;
use crate::token::{parse_scopes, Mint, CROSS_CLIENT_PREFIX};

const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";
const ID_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:id_token";

/// Exchanges the subject token for tokens for `audience` (or the requester).
///
/// # Errors
/// `invalid_request` for missing or unsupported parameters (§2.2.2), `invalid_grant` for a subject token
/// that does not verify or whose user is refused, `invalid_target` is not used: an `audience` that does not
/// trust the requester is `invalid_scope`, as its cross-client scope would be; an unreachable upstream
/// `temporarily_unavailable`.
pub async fn exchange(state: &AppState, client: &Client, form: &Form) -> Result<TokenResponse, TokenError> {
    let token = form.require("subject_token")?;
    let kind = SubjectTokenType::parse(form.require("subject_token_type")?).ok_or_else(|| {
        TokenError::InvalidRequest(format!("subject_token_type must be {ID_TOKEN_TYPE} or {ACCESS_TOKEN_TYPE}"))
    })?;
    let issue_id_token = match form.get("requested_token_type") {
        None | Some(ACCESS_TOKEN_TYPE) => false,
        Some(ID_TOKEN_TYPE) => true,
        Some(other) => {
            return Err(TokenError::InvalidRequest(format!(
                "requested_token_type {other:?} cannot be issued: ask for {ACCESS_TOKEN_TYPE} or {ID_TOKEN_TYPE}"
            )))
        }
    };
    if form.get("actor_token").is_some() {
        return Err(TokenError::InvalidRequest("delegation (actor_token) is not supported".into()));
    }

    let (identity, subject, source) = match form.get("connector_id").filter(|c| !c.is_empty()) {
        Some(connector_id) => {
            let connector =
                state.connectors.get(connector_id).filter(|_| client.allows_connector(connector_id)).ok_or_else(
                    || TokenError::InvalidRequest("connector_id names no connector this client may use".into()),
                )?;
            let exchanger = connector.token_identity.as_ref().ok_or_else(|| {
                TokenError::InvalidRequest(format!("connector {connector_id} cannot exchange tokens (only oidc can)"))
            })?;
            let identity = match exchanger.token_identity(kind, token).await {
                Ok(i) => i,
                Err(ConnectorError::Unavailable(_) | ConnectorError::Interrupted { .. }) => {
                    return Err(TokenError::TemporarilyUnavailable(format!(
                        "{} cannot be reached; retry shortly",
                        connector.name
                    )))
                }
                Err(e) => {
                    tracing::warn!(target: "audit", event = "token_exchange", result = "refused", connector = %connector.id, client = %client.id, reason = %e);
                    return Err(TokenError::InvalidGrant("the subject token is not valid"));
                }
            };
            let identity = crate::connector::policy::admit(connector, Some(client), identity).map_err(|reason| {
                tracing::warn!(target: "audit", event = "token_exchange", result = "refused", connector = %connector.id, client = %client.id, reason = %reason);
                TokenError::InvalidGrant("the user is not allowed to use this client")
            })?;
            (identity, None, connector.id.clone())
        }
        None => {
            let (identity, sub) = own_token(state, client, kind, token).await?;
            (identity, Some(sub), "issuer".to_owned())
        }
    };

    // The audience the new tokens are for, as a cross-client scope (which checks the trust).
    let mut scope = form.get("scope").unwrap_or("openid").to_owned();
    if let Some(audience) = form.get("audience").filter(|a| *a != client.id) {
        scope = format!("{scope} {CROSS_CLIENT_PREFIX}{audience}");
    }
    if scope.split(' ').any(|s| s == "offline_access") {
        return Err(TokenError::InvalidScope("a token exchange issues no refresh token (offline_access)".into()));
    }
    let peers = state.scope_peers(&scope).await?;
    let scopes = parse_scopes(&client.id, &scope, &peers).map_err(|e| TokenError::InvalidScope(e.to_string()))?;
    let now = state.clock.now();
    let m = Mint {
        config: &state.config,
        client_id: &client.id,
        scopes: &scopes,
        identity: &identity,
        nonce: None,
        auth_time: now,
        iat: now,
        sid: None,
        subject: subject.as_deref(),
    };
    let parts = Parts { access_token: !issue_id_token, id_token: issue_id_token, code: None };
    let minted = mint(state, &m, parts, "token_exchange").await?;
    let sub = m.sub();
    tracing::info!(target: "audit", event = "token_exchange", result = "issued", source = %source, sub = %sub, client = %client.id, audience = form.get("audience").unwrap_or(&client.id), issued = if issue_id_token { "id_token" } else { "access_token" });
    let (access_token, issued, token_type) = if issue_id_token {
        (minted.id_token.unwrap_or_default(), ID_TOKEN_TYPE, "N_A")
    } else {
        (minted.access_token.unwrap_or_default(), ACCESS_TOKEN_TYPE, "Bearer")
    };
    Ok(TokenResponse {
        access_token,
        token_type,
        issued_token_type: Some(issued),
        expires_in: state.config.expiry.id_tokens.as_secs(),
        id_token: None,
        refresh_token: None,
        scope: scopes.join(" "),
    })
}

/// A token this issuer signed for `client` (in its `aud`, or its `azp`/`client_id`): its user (from the
/// claims it carries) and its `sub`, kept as is. A client exchanges the tokens it was given, never another
/// client's it happened to see.
async fn own_token(
    state: &AppState,
    client: &Client,
    kind: SubjectTokenType,
    token: &str,
) -> Result<(Identity, String), TokenError> {
    let invalid = TokenError::InvalidGrant("the subject token is not a valid token of this issuer");
    let keys = state.keys().await?;
    let (header, claims) = crate::keys::verify_jws(token, &keys.public).ok_or(invalid)?;
    let is_access_token = crate::token::is_access_token_header(&header);
    let declared_ok = match kind {
        SubjectTokenType::AccessToken => is_access_token,
        SubjectTokenType::IdToken => !is_access_token,
    };
    let issuer = state.config.issuer.as_str().trim_end_matches('/');
    let text = |k: &str| claims.get(k).and_then(Value::as_str).map(str::to_owned);
    let live = claims.get("exp").and_then(Value::as_i64).is_some_and(|exp| exp >= state.clock.now());
    if !declared_ok || text("iss").as_deref() != Some(issuer) || !live {
        return Err(TokenError::InvalidGrant("the subject token is not a valid token of this issuer"));
    }
    let in_aud = match claims.get("aud") {
        Some(Value::String(a)) => a == &client.id,
        Some(Value::Array(a)) => a.iter().any(|v| v.as_str() == Some(&client.id)),
        _ => false,
    };
    let issued_to = [text("azp"), text("client_id")].iter().flatten().any(|c| c == &client.id);
    if !in_aud && !issued_to {
        return Err(TokenError::InvalidGrant("the subject token was not issued to this client"));
    }
    let sub = text("sub").ok_or(TokenError::InvalidGrant("the subject token has no sub"))?;
    let identity = Identity {
        user_id: sub.clone(),
        username: text("name").unwrap_or_default(),
        email: text("email").unwrap_or_default(),
        email_verified: claims.get("email_verified").and_then(Value::as_bool).unwrap_or(false),
        groups: claims
            .get("groups")
            .and_then(Value::as_array)
            .map(|g| g.iter().filter_map(Value::as_str).map(str::to_owned).collect())
            .unwrap_or_default(),
        preferred_username: text("preferred_username").unwrap_or_default(),
        ..Identity::default()
    };
    Ok((identity, sub))
}
