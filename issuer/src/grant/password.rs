//! `grant_type=password` (RFC 6749 §4.3): the resource owner's login name and password, checked by the
//! connector `oauth2.passwordConnector` names (the password database, LDAP or Crowd) under the same
//! brute-force limits as the login form. For command-line tools and CI (kubelogin's `--grant-type
//! password`); browsers use the authorization code. The identity passes the connector's and the client's
//! policy, as a browser login does, and `offline_access` starts a refresh-token family.

use crate::config::Client;
use crate::connector::{ConnectorError, Login};
use crate::grant::{first_refresh_token, issue, Issue, NewFamily, TokenResponse};
use crate::http::Form;
use crate::metrics::Metrics;
use crate::oauth::TokenError;
use crate::password_attempt::{self, Attempt, AttemptError, MAX_LOGIN_CHARS};
use crate::state::AppState;
use crate::token::{parse_scopes, random_b64};

/// Exchanges `username` and `password` for tokens. `ip` is the client's address as text (for the limits).
///
/// # Errors
/// `invalid_request` without both values; `invalid_grant` for a wrong password or a user the policy refuses;
/// `invalid_scope`; a throttled name or address answers 429 with `Retry-After`; an unreachable upstream
/// `temporarily_unavailable`.
pub async fn exchange(state: &AppState, client: &Client, form: &Form, ip: &str) -> Result<TokenResponse, TokenError> {
    let login = form.require("username")?.trim();
    let password = form.require("password")?;
    if login.is_empty() || password.is_empty() || login.chars().count() > MAX_LOGIN_CHARS {
        return Err(TokenError::InvalidRequest("username and password must be non-empty".into()));
    }
    let scope = form.get("scope").unwrap_or("openid");
    let peers = state.scope_peers(scope).await?;
    let scopes = parse_scopes(&client.id, scope, &peers).map_err(|e| TokenError::InvalidScope(e.to_string()))?;
    let connector_id = state.config.oauth2.password_connector.as_deref().unwrap_or_default();
    if !client.allows_connector(connector_id) {
        return Err(TokenError::UnauthorizedClient("this client may not use the password connector"));
    }
    let connector = state.connectors.get(connector_id).ok_or(TokenError::UnsupportedGrantType)?;
    let Login::Password(passwords) = &connector.login else { return Err(TokenError::UnsupportedGrantType) };
    let attempt = Attempt { connector, passwords: passwords.as_ref(), login, password, ip, client_id: &client.id };
    let identity = match password_attempt::check(state, attempt).await {
        Ok(identity) => identity,
        Err(AttemptError::Throttled { retry_after }) => return Err(TokenError::Throttled { retry_after }),
        Err(AttemptError::Invalid) => return Err(TokenError::InvalidGrant("invalid username or password")),
        Err(AttemptError::Connector(ConnectorError::Unavailable(_) | ConnectorError::Interrupted { .. })) => {
            return Err(TokenError::TemporarilyUnavailable(format!(
                "{} cannot be reached; retry shortly",
                connector.name
            )))
        }
        Err(AttemptError::Connector(ConnectorError::Refused { reason })) => {
            tracing::warn!(target: "audit", event = "login", result = "refused", grant = "password", connector = %connector.id, reason = %reason, client = %client.id, ip);
            return Err(TokenError::InvalidGrant("the account may not sign in"));
        }
        Err(AttemptError::Connector(e)) => return Err(TokenError::Internal(e.to_string())),
        Err(AttemptError::Storage(e)) => return Err(e.into()),
    };
    let identity = match crate::connector::policy::admit(connector, Some(client), identity) {
        Ok(i) => i,
        Err(reason) => {
            Metrics::count(&state.metrics.logins, "refused");
            tracing::warn!(target: "audit", event = "login", result = "refused", grant = "password", connector = %connector.id, reason = %reason, client = %client.id, ip);
            return Err(TokenError::InvalidGrant("the user is not allowed to use this client"));
        }
    };
    Metrics::count(&state.metrics.logins, "success");
    tracing::info!(target: "audit", event = "login", result = "success", grant = "password", user = %identity.email, sub = %state.config.subject(&identity), connector = %connector.id, client = %client.id, ip);
    let now = state.clock.now();
    let family_id = random_b64::<16>();
    let refresh_token = first_refresh_token(
        state,
        NewFamily {
            family_id: &family_id,
            client_id: &client.id,
            scopes: &scopes,
            nonce: None,
            identity: &identity,
            auth_time: now,
            now,
            session_id: None,
        },
    )
    .await?;
    issue(
        state,
        Issue {
            client_id: &client.id,
            scopes: &scopes,
            identity: &identity,
            nonce: None,
            auth_time: now,
            iat: now,
            sid: Some(&family_id),
            refresh_token,
            grant: "password",
        },
    )
    .await
}
