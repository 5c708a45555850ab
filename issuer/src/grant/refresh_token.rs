//! `grant_type=refresh_token` (RFC 6749 §6) with rotation on every use.
//!
//! A refresh token presented again within `reuseInterval` of its rotation gets the successor its first use
//! produced (the "obsolete tokens" grace of the Deckhouse Dex fork), so gateway replicas refreshing one
//! session at once all succeed. The successor is derived from the presented token with a server key (see
//! `RefreshTokenString::successor`), so nothing plaintext is stored. Presented after the window, a rotated
//! token means it leaked: the whole family is revoked (OAuth 2.0 Security BCP §4.14.2). `reuseInterval: 0s`
//! is strict single use. With Dex's `disableRotation` the presented token is kept and returned again.

use subtle::ConstantTimeEq;

use super::{issue, revoke_family, Issue, TokenResponse};
use crate::config::Client;
use crate::connector::ConnectorError;
use crate::http::Form;
use crate::metrics::Metrics;
use crate::oauth::TokenError;
use crate::state::AppState;
use crate::storage::ConnectorData;
use crate::storage::{RefreshToken, StorageError};
use crate::token::{parse_scopes, RefreshTokenString};

/// How many rotations a late duplicate may follow inside the reuse window.
const MAX_CHAIN: usize = 8;

const INVALID: TokenError = TokenError::InvalidGrant("refresh token is invalid, expired or revoked");

/// Exchanges a refresh token for new tokens and its successor.
pub async fn refresh(state: &AppState, client: &Client, form: &Form) -> Result<TokenResponse, TokenError> {
    let presented = RefreshTokenString::parse(form.require("refresh_token")?).ok_or(INVALID)?;
    let token = load(state, &presented).await?;
    if token.client_id != client.id {
        return Err(TokenError::InvalidGrant("refresh token was issued to another client"));
    }
    let now = state.clock.now();
    let life = &state.config.expiry.refresh_tokens;
    if now > token.family_created_at + life.absolute_lifetime.as_secs() as i64 {
        Metrics::count(&state.metrics.refreshes, "expired");
        revoke_family(state, &token.family_id, "expired").await?;
        return Err(TokenError::InvalidGrant("refresh token has expired"));
    }
    let scopes = match form.get("scope") {
        None => token.scopes.clone(),
        Some(s) => {
            let peers = state.scope_peers(s).await.map_err(TokenError::from)?;
            let asked = parse_scopes(&client.id, s, &peers).map_err(|e| TokenError::InvalidScope(e.to_string()))?;
            if let Some(extra) = asked.iter().find(|s| !token.scopes.contains(s)) {
                return Err(TokenError::InvalidScope(format!("scope {extra:?} was not granted originally")));
            }
            asked
        }
    };

    let successor = match token.rotated_at {
        None => {
            if now > token.created_at + life.valid_if_not_used_for.as_secs() as i64 {
                Metrics::count(&state.metrics.refreshes, "expired");
                revoke_family(state, &token.family_id, "expired").await?;
                return Err(TokenError::InvalidGrant("refresh token has expired (unused for too long)"));
            }
            if life.disable_rotation {
                keep(state, client, &token, &presented, now).await?
            } else {
                rotate(state, client, &token, &presented, now).await?
            }
        }
        Some(_) => reuse(state, client, token, &presented, now).await?,
    };
    issue(
        state,
        Issue {
            client_id: &client.id,
            scopes: &scopes,
            identity: &successor.record.identity,
            nonce: successor.record.nonce.as_deref(),
            auth_time: successor.record.auth_time,
            // The successor's issue time: a duplicate within the window gets the same claims.
            iat: successor.record.created_at,
            // The browser session the family started in, or (no browser: device, password) the family.
            sid: Some(successor.record.session_id.as_deref().unwrap_or(&successor.record.family_id)),
            refresh_token: Some(successor.string.encode()),
            grant: "refresh_token",
        },
    )
    .await
}

struct Successor {
    string: RefreshTokenString,
    record: RefreshToken,
}

async fn load(state: &AppState, presented: &RefreshTokenString) -> Result<RefreshToken, TokenError> {
    let token = match state.storage.get_refresh_token(&presented.id).await {
        Ok(t) => t,
        Err(StorageError::NotFound) => return Err(INVALID),
        Err(e) => return Err(e.into()),
    };
    if !bool::from(presented.secret_hash().as_bytes().ct_eq(token.secret_hash.as_bytes())) {
        return Err(INVALID);
    }
    Ok(token)
}

/// The user, re-checked by the connector that signed them in (each connector's module says what it
/// checks), then through the connector's and the client's policy. A user who is gone or refused ends the
/// family; an upstream that cannot be reached is `temporarily_unavailable` and the token stays valid.
async fn reread_identity(
    state: &AppState,
    client: &Client,
    token: &RefreshToken,
) -> Result<crate::storage::Identity, RereadError> {
    let connector_id = &token.identity.connector_id;
    let Some(connector) = state.connectors.get(connector_id) else {
        revoke_family(state, &token.family_id, "connector_removed").await?;
        return Err(TokenError::InvalidGrant("the connector that signed this user in is no longer configured").into());
    };
    if !client.allows_connector(connector_id) {
        revoke_family(state, &token.family_id, "connector_not_allowed").await?;
        return Err(TokenError::InvalidGrant("this client may not use the connector that signed this user in").into());
    }
    let started = std::time::Instant::now();
    let result = connector.refresh.refresh(&token.identity).await;
    if connector.kind != "local" {
        state.metrics.observe_connector(connector_id, "refresh", &result, started.elapsed());
    }
    let refused = |reason: String| async move {
        tracing::warn!(target: "audit", event = "refresh", result = "refused", connector = %connector_id, reason = %reason, sub = %state.config.subject(&token.identity), client = %client.id, family = %token.family_id);
        revoke_family(state, &token.family_id, "refused_upstream").await?;
        Err(TokenError::InvalidGrant("the user is no longer allowed to sign in").into())
    };
    let unavailable =
        || TokenError::TemporarilyUnavailable(format!("{} cannot be reached; retry later", connector.name));
    match result {
        Ok(Some(i)) => match crate::connector::policy::admit(connector, Some(client), i) {
            Ok(i) => Ok(i),
            Err(reason) => refused(reason).await,
        },
        Ok(None) => {
            revoke_family(state, &token.family_id, "user_removed").await?;
            Err(TokenError::InvalidGrant("the user no longer exists").into())
        }
        Err(ConnectorError::Unavailable(why)) => {
            tracing::warn!(target: "audit", event = "connector_failure", connector = %connector_id, operation = "refresh", error = %why);
            Err(unavailable().into())
        }
        Err(ConnectorError::Interrupted { why, data }) => {
            tracing::warn!(target: "audit", event = "connector_failure", connector = %connector_id, operation = "refresh", error = %why, rotated = true);
            Err(RereadError { error: unavailable(), keep: Some(data) })
        }
        Err(ConnectorError::Refused { reason }) => refused(reason).await,
        Err(ConnectorError::Upstream(why) | ConnectorError::InvalidCallback(why)) => refused(why).await,
    }
}

/// Why [`reread_identity`] failed: the answer to send and, when the upstream rotated its refresh token
/// before failing, the connector data to keep with the downstream token for the next attempt.
struct RereadError {
    error: TokenError,
    keep: Option<ConnectorData>,
}

impl From<TokenError> for RereadError {
    fn from(error: TokenError) -> Self {
        Self { error, keep: None }
    }
}

/// Gives back this request's `claim` on the stored token `id` (when it holds one) and keeps `data` (the
/// upstream's new tokens) in it, so that the token's next use starts from them. Best effort: the answer
/// is an error either way.
async fn keep_connector_data(state: &AppState, id: &str, data: Option<ConnectorData>, claim: Option<(i64, String)>) {
    let _ = state
        .storage
        .update_refresh_token(
            id,
            Box::new(move |mut old| {
                if let Some((at, successor)) = &claim {
                    // Give back this request's claim (and only this request's) at the same time.
                    if old.rotated_at != Some(*at) || old.successor.as_deref() != Some(successor.as_str()) {
                        return Err(StorageError::Conflict);
                    }
                    old.rotated_at = None;
                    old.successor = None;
                }
                if let Some(data) = data {
                    old.identity.connector_data = Some(data);
                }
                Ok(old)
            }),
        )
        .await;
}

/// When a token used at `now` dies: `validIfNotUsedFor` from now, never past the family's
/// `absoluteLifetime`.
fn next_expiry(state: &AppState, token: &RefreshToken, now: i64) -> i64 {
    let life = &state.config.expiry.refresh_tokens;
    (now + life.valid_if_not_used_for.as_secs() as i64)
        .min(token.family_created_at + life.absolute_lifetime.as_secs() as i64)
}

async fn rotate(
    state: &AppState,
    client: &Client,
    token: &RefreshToken,
    presented: &RefreshTokenString,
    now: i64,
) -> Result<Successor, TokenError> {
    if consumes_upstream(state, token) {
        return rotate_claimed(state, client, token, presented, now, None).await;
    }
    let identity = reread_identity(state, client, token).await.map_err(|e| e.error)?;
    let next = presented.successor(&state.server_key);
    let expiry = next_expiry(state, token, now);
    let record = RefreshToken {
        id: next.id.clone(),
        secret_hash: next.secret_hash(),
        identity,
        created_at: now,
        expiry,
        rotated_at: None,
        successor: None,
        ..token.clone()
    };
    match state.storage.rotate_refresh_token(&token.id, now, record.clone()).await {
        Ok(()) => {
            Metrics::count(&state.metrics.refreshes, "rotated");
            tracing::info!(target: "audit", event = "refresh", result = "rotated", sub = %state.config.subject(&record.identity), client = %record.client_id, family = %record.family_id);
            Ok(Successor { string: next, record })
        }
        // A concurrent request rotated it first: this one is a duplicate within the window.
        Err(StorageError::Conflict | StorageError::AlreadyExists) => {
            let token = load(state, presented).await?;
            reuse(state, client, token, presented, now).await
        }
        Err(StorageError::NotFound) => Err(INVALID),
        Err(e) => Err(e.into()),
    }
}

/// `disableRotation`: the same token again, with the identity re-read and its idle clock restarted
/// (`created_at` is when the token was last used, which is what `validIfNotUsedFor` measures).
async fn keep(
    state: &AppState,
    client: &Client,
    token: &RefreshToken,
    presented: &RefreshTokenString,
    now: i64,
) -> Result<Successor, TokenError> {
    let identity = match reread_identity(state, client, token).await {
        Ok(i) => i,
        Err(RereadError { error, keep }) => {
            if keep.is_some() {
                keep_connector_data(state, &token.id, keep, None).await;
            }
            return Err(error);
        }
    };
    let expiry = next_expiry(state, token, now);
    let record = match state
        .storage
        .update_refresh_token(
            &token.id,
            Box::new(move |old| match old.rotated_at {
                None => Ok(RefreshToken { identity, created_at: now, expiry, ..old }),
                Some(_) => Err(StorageError::Conflict),
            }),
        )
        .await
    {
        Ok(r) => r,
        Err(StorageError::NotFound | StorageError::Conflict) => return Err(INVALID),
        Err(e) => return Err(e.into()),
    };
    Metrics::count(&state.metrics.refreshes, "kept");
    tracing::info!(target: "audit", event = "refresh", result = "kept", sub = %state.config.subject(&record.identity), client = %record.client_id, family = %record.family_id);
    let string = RefreshTokenString { id: presented.id.clone(), secret: presented.secret.clone() };
    Ok(Successor { string, record })
}

/// A rotated token was presented again: within the window, follow the chain to the live successor;
/// otherwise revoke the family.
async fn reuse(
    state: &AppState,
    client: &Client,
    mut token: RefreshToken,
    presented: &RefreshTokenString,
    now: i64,
) -> Result<Successor, TokenError> {
    let window = state.config.expiry.refresh_tokens.reuse_interval.as_secs() as i64;
    let mut string = RefreshTokenString { id: presented.id.clone(), secret: presented.secret.clone() };
    for _ in 0..MAX_CHAIN {
        let Some(rotated_at) = token.rotated_at else {
            Metrics::count(&state.metrics.refreshes, "reused");
            tracing::info!(target: "audit", event = "refresh", result = "reused_within_window", sub = %state.config.subject(&token.identity), client = %token.client_id, family = %token.family_id);
            return Ok(Successor { string, record: token });
        };
        let next = string.successor(&state.server_key);
        let successor = match state.storage.get_refresh_token(&next.id).await {
            Ok(t) if t.secret_hash == next.secret_hash() => t,
            Ok(_) => return Err(INVALID),
            // Claimed but not stored: a rotation that calls the upstream is in flight.
            Err(StorageError::NotFound) => match in_flight(state, client, &token, &string, now).await? {
                InFlight::Stored(t) => t,
                InFlight::Done(s) => return Ok(s),
            },
            Err(e) => return Err(e.into()),
        };
        // A zero window is strict single use: even a duplicate in the same second revokes.
        if window == 0 || now - rotated_at > window {
            break;
        }
        string = next;
        token = successor;
    }
    Metrics::count(&state.metrics.refreshes, "replay_revoked");
    tracing::warn!(target: "audit", event = "refresh_token_reuse", sub = %state.config.subject(&token.identity), client = %token.client_id, family = %token.family_id);
    revoke_family(state, &token.family_id, "refresh_reuse").await?;
    Err(TokenError::InvalidGrant("refresh token was already used; the session has been revoked"))
}

// === rotations that spend an upstream refresh token ===

/// A claimed rotation whose successor is not stored after this long is taken over (its holder died).
const CLAIM_TIMEOUT: i64 = 60;
/// How long a concurrent refresh waits for the claim holder's successor before answering 503.
const CLAIM_WAIT: std::time::Duration = std::time::Duration::from_secs(15);

fn consumes_upstream(state: &AppState, token: &RefreshToken) -> bool {
    state
        .connectors
        .get(&token.identity.connector_id)
        .is_some_and(|c| c.refresh.refresh_consumes_upstream_token(&token.identity))
}

/// Rotation for a connector whose refresh spends an upstream token (a rotating upstream refresh token):
/// first claim the token (mark it rotated, compare-and-swap on `rotated_at`, which must be `expected`), then
/// call the upstream once, then store the successor. Concurrent refreshes of the family, on any replica,
/// find the claim and wait for the successor instead of calling the upstream themselves. If the upstream
/// cannot be reached the claim is given back, so the same refresh token works later.
async fn rotate_claimed(
    state: &AppState,
    client: &Client,
    token: &RefreshToken,
    presented: &RefreshTokenString,
    now: i64,
    expected: Option<i64>,
) -> Result<Successor, TokenError> {
    let next = presented.successor(&state.server_key);
    let claim_id = next.id.clone();
    let claimed = state
        .storage
        .update_refresh_token(
            &token.id,
            Box::new(move |mut old| {
                if old.rotated_at != expected {
                    return Err(StorageError::Conflict);
                }
                old.rotated_at = Some(now);
                old.successor = Some(claim_id);
                Ok(old)
            }),
        )
        .await;
    match claimed {
        Ok(_) => {}
        Err(StorageError::Conflict) => {
            let token = load(state, presented).await?;
            return reuse(state, client, token, presented, now).await;
        }
        Err(StorageError::NotFound) => return Err(INVALID),
        Err(e) => return Err(e.into()),
    }
    let identity = match reread_identity(state, client, token).await {
        Ok(i) => i,
        Err(RereadError { error, keep }) => {
            // Give the claim back, keeping the upstream's new tokens when it rotated before failing.
            keep_connector_data(state, &token.id, keep, Some((now, next.id.clone()))).await;
            return Err(error);
        }
    };
    let record = RefreshToken {
        id: next.id.clone(),
        secret_hash: next.secret_hash(),
        identity,
        created_at: now,
        expiry: next_expiry(state, token, now),
        rotated_at: None,
        successor: None,
        ..token.clone()
    };
    state.storage.create_refresh_token(record.clone()).await?;
    // Revoked while the upstream was called (logout, replay): the successor must not outlive its family.
    if matches!(state.storage.get_refresh_token(&token.id).await, Err(StorageError::NotFound)) {
        revoke_family(state, &token.family_id, "revoked_during_refresh").await?;
        return Err(INVALID);
    }
    Metrics::count(&state.metrics.refreshes, "rotated");
    tracing::info!(target: "audit", event = "refresh", result = "rotated", upstream = true, sub = %state.config.subject(&record.identity), client = %record.client_id, family = %record.family_id);
    Ok(Successor { string: next, record })
}

/// [`rotate_claimed`] behind a box: it can reach itself again through [`reuse`] and [`in_flight`].
fn claim_boxed<'a>(
    state: &'a AppState,
    client: &'a Client,
    token: &'a RefreshToken,
    presented: &'a RefreshTokenString,
    now: i64,
    expected: Option<i64>,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Successor, TokenError>> + Send + 'a>> {
    Box::pin(rotate_claimed(state, client, token, presented, now, expected))
}

enum InFlight {
    /// The claim holder stored the successor.
    Stored(RefreshToken),
    /// This request did the rotation itself (the claim was given back or taken over).
    Done(Successor),
}

/// `token` (whose string is `string`) is claimed but its successor is not stored: wait for the holder,
/// rotate ourselves if it gave the claim back, take over if it died ([`CLAIM_TIMEOUT`]), or answer 503.
async fn in_flight(
    state: &AppState,
    client: &Client,
    token: &RefreshToken,
    string: &RefreshTokenString,
    now: i64,
) -> Result<InFlight, TokenError> {
    let next = string.successor(&state.server_key);
    let deadline = tokio::time::Instant::now() + CLAIM_WAIT;
    loop {
        let current = match state.storage.get_refresh_token(&token.id).await {
            Ok(t) => t,
            Err(StorageError::NotFound) => return Err(INVALID),
            Err(e) => return Err(e.into()),
        };
        match current.rotated_at {
            None => return claim_boxed(state, client, &current, string, now, None).await.map(InFlight::Done),
            Some(at) => match state.storage.get_refresh_token(&next.id).await {
                Ok(t) if t.secret_hash == next.secret_hash() => return Ok(InFlight::Stored(t)),
                Ok(_) => return Err(INVALID),
                Err(StorageError::NotFound) if state.clock.now() - at > CLAIM_TIMEOUT => {
                    return claim_boxed(state, client, &current, string, now, Some(at)).await.map(InFlight::Done)
                }
                Err(StorageError::NotFound) => {}
                Err(e) => return Err(e.into()),
            },
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(TokenError::TemporarilyUnavailable(
                "another refresh of this session is in progress; retry".into(),
            ));
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}
