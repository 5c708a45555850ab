//! One password attempt against a password connector, under the brute-force limits: a token bucket per
//! login name (per connector) and one per client address, both in storage so every replica counts. Shared
//! by the login form and the resource owner password grant (RFC 6749 §4.3), so the two cannot be played
//! against each other. How a failure is shown (a page, a JSON error) is the caller's.

use crate::connector::{Connector, ConnectorError, PasswordConnector};
use crate::metrics::Metrics;
use crate::ratelimit::{self, Limit, LimitError};
use crate::state::AppState;
use crate::storage::{Identity, StorageError};

/// Longer login names are refused before any lookup (no directory has them; they only fill logs).
pub const MAX_LOGIN_CHARS: usize = 256;

/// Why an attempt did not produce an identity.
#[derive(Debug)]
pub enum AttemptError {
    /// Too many recent failures for this name or address; try again in `retry_after` seconds.
    Throttled {
        /// Seconds until one attempt is back.
        retry_after: u64,
    },
    /// Wrong login name or password (one answer for both).
    Invalid,
    /// The connector failed or refused (an unreachable one did not spend the attempt).
    Connector(ConnectorError),
    /// The limits could not be read or written.
    Storage(StorageError),
}

/// Who is trying, for the limits and the audit log.
pub struct Attempt<'a> {
    /// The connector checking the password.
    pub connector: &'a Connector,
    /// Its password capability.
    pub passwords: &'a dyn PasswordConnector,
    /// The login name as typed (trimmed, at most [`MAX_LOGIN_CHARS`]).
    pub login: &'a str,
    /// The password.
    pub password: &'a str,
    /// The client's address as text (`-` when unknown).
    pub ip: &'a str,
    /// The OAuth client the login is for.
    pub client_id: &'a str,
}

/// Checks the password, spending an attempt from both buckets; a success or an unreachable upstream gives
/// the attempts back. Audits every outcome but success (the caller audits that once policy has passed).
pub async fn check(state: &AppState, a: Attempt<'_>) -> Result<Identity, AttemptError> {
    let bf = state.config.brute_force;
    // Per connector: failures at one directory do not lock the same name out of another.
    let user_key = if a.connector.kind == "local" {
        format!("user:{}", a.login.to_lowercase())
    } else {
        format!("user:{}:{}", a.connector.id, a.login.to_lowercase())
    };
    let ip_key = format!("ip:{}", a.ip);
    let user_limit = Limit { capacity: bf.max_attempts, refill: bf.refill_interval };
    let ip_limit = Limit { capacity: bf.per_ip_max_attempts, refill: bf.per_ip_refill_interval };
    let now = state.clock.now_f64();
    let store = state.storage.as_ref();

    let throttled = |retry_after: u64| {
        Metrics::count(&state.metrics.logins, "throttled");
        tracing::warn!(target: "audit", event = "login", result = "throttled", user = a.login, connector = %a.connector.id, client = %a.client_id, ip = %a.ip);
        AttemptError::Throttled { retry_after }
    };
    match ratelimit::reserve(store, &user_key, user_limit, now).await {
        Ok(()) => {}
        Err(LimitError::Exhausted { retry_after }) => return Err(throttled(retry_after)),
        Err(LimitError::Storage(e)) => return Err(AttemptError::Storage(e)),
    }
    match ratelimit::reserve(store, &ip_key, ip_limit, now).await {
        Ok(()) => {}
        Err(LimitError::Exhausted { retry_after }) => {
            let _ = ratelimit::refund(store, &user_key, user_limit, now).await;
            return Err(throttled(retry_after));
        }
        Err(LimitError::Storage(e)) => return Err(AttemptError::Storage(e)),
    }

    let started = std::time::Instant::now();
    let result = a.passwords.login(a.login, a.password).await;
    if a.connector.kind != "local" {
        state.metrics.observe_connector(&a.connector.id, "login", &result, started.elapsed());
    }
    let identity = match result {
        Ok(Some(identity)) => identity,
        Ok(None) => {
            Metrics::count(&state.metrics.logins, "failure");
            tracing::info!(target: "audit", event = "login", result = "failure", user = a.login, connector = %a.connector.id, client = %a.client_id, ip = %a.ip);
            return Err(AttemptError::Invalid);
        }
        Err(e) => {
            // An upstream that did not answer decided nothing: the attempt is not held against the user.
            // A refusal (a disabled account…) did decide, and spends the attempt like a wrong password.
            if matches!(e, ConnectorError::Unavailable(_) | ConnectorError::Interrupted { .. }) {
                let _ = ratelimit::refund(store, &user_key, user_limit, now).await;
                let _ = ratelimit::refund(store, &ip_key, ip_limit, now).await;
            }
            return Err(AttemptError::Connector(e));
        }
    };
    // Only failures spend attempts.
    for (key, limit) in [(&user_key, user_limit), (&ip_key, ip_limit)] {
        ratelimit::refund(store, key, limit, now).await.map_err(AttemptError::Storage)?;
    }
    Ok(identity)
}
