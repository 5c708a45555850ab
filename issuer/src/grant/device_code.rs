//! `grant_type=urn:ietf:params:oauth:grant-type:device_code` (RFC 8628 §3.4, §3.5). The device polls with
//! its device code until the user has answered at the verification URI. Polls closer together than the
//! interval get `slow_down` and make the interval 5 seconds longer; an approval is redeemed exactly once,
//! for the same tokens the code grant issues. Creating device authorizations and the user's side are
//! `http::device`'s job.

use super::{first_refresh_token, issue, Issue, NewFamily, TokenResponse};
use crate::config::Client;
use crate::http::Form;
use crate::oauth::TokenError;
use crate::state::AppState;
use crate::storage::{DeviceRequest, DeviceStatus, Identity, StorageError};
use crate::token::random_b64;

/// The grant type's wire name.
pub const GRANT_TYPE: &str = crate::oauth::GrantType::DeviceCode.as_str();

/// RFC 8628 §3.5: the increase of the polling interval with every `slow_down`.
pub const SLOW_DOWN_STEP: i64 = 5;

/// Answers one poll: tokens once the user approved, otherwise the RFC 8628 §3.5 error.
pub async fn poll(state: &AppState, client: &Client, form: &Form) -> Result<TokenResponse, TokenError> {
    let device_code = form.require("device_code")?;
    let request = match state.storage.get_device_request(device_code).await {
        Ok(r) => r,
        Err(StorageError::NotFound) => return Err(TokenError::InvalidGrant("device code is invalid")),
        Err(e) => return Err(e.into()),
    };
    if request.client_id != client.id {
        return Err(TokenError::InvalidGrant("device code was issued to another client"));
    }
    let now = state.clock.now();
    if now > request.expiry {
        return Err(TokenError::ExpiredToken);
    }
    match &request.status {
        DeviceStatus::Pending => Err(pending(state, &request, now).await),
        DeviceStatus::Denied => Err(TokenError::AccessDenied),
        DeviceStatus::Redeemed => Err(TokenError::InvalidGrant("device code was already used")),
        DeviceStatus::Approved { identity, auth_time } => {
            redeem(state, client, &request, identity, *auth_time, now).await
        }
    }
}

/// Records the poll; `slow_down` when it came before the interval was up.
async fn pending(state: &AppState, request: &DeviceRequest, now: i64) -> TokenError {
    let seen = request.last_poll;
    let early = seen.is_some_and(|t| now - t < request.interval);
    let recorded = state
        .storage
        .update_device_request(
            &request.device_code,
            Box::new(move |mut d| {
                // Another poll got in between: two polls at once are too fast by definition.
                if d.last_poll != seen {
                    return Err(StorageError::Conflict);
                }
                d.last_poll = Some(now);
                if early {
                    d.interval += SLOW_DOWN_STEP;
                }
                Ok(d)
            }),
        )
        .await;
    match recorded {
        Ok(_) if early => TokenError::SlowDown,
        Ok(_) => TokenError::AuthorizationPending,
        Err(StorageError::Conflict) => TokenError::SlowDown,
        Err(StorageError::NotFound) => TokenError::ExpiredToken,
        Err(e) => e.into(),
    }
}

async fn redeem(
    state: &AppState,
    client: &Client,
    request: &DeviceRequest,
    identity: &Identity,
    auth_time: i64,
    now: i64,
) -> Result<TokenResponse, TokenError> {
    let redeemed = state
        .storage
        .update_device_request(
            &request.device_code,
            Box::new(|mut d| {
                if !matches!(d.status, DeviceStatus::Approved { .. }) {
                    return Err(StorageError::Conflict);
                }
                d.status = DeviceStatus::Redeemed;
                Ok(d)
            }),
        )
        .await;
    match redeemed {
        Ok(_) => {}
        Err(StorageError::Conflict) => return Err(TokenError::InvalidGrant("device code was already used")),
        Err(StorageError::NotFound) => return Err(TokenError::ExpiredToken),
        Err(e) => return Err(e.into()),
    }
    let family_id = random_b64::<16>();
    let refresh_token = first_refresh_token(
        state,
        NewFamily {
            family_id: &family_id,
            client_id: &client.id,
            scopes: &request.scopes,
            nonce: None,
            identity,
            auth_time,
            now,
            session_id: None,
        },
    )
    .await?;
    issue(
        state,
        Issue {
            client_id: &client.id,
            scopes: &request.scopes,
            identity,
            nonce: None,
            auth_time,
            iat: now,
            sid: Some(&family_id),
            refresh_token,
            grant: "device_code",
        },
    )
    .await
}
