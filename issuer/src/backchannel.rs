//! OpenID Connect Back-Channel Logout 1.0: when a browser session ends (RP-initiated logout, `issuer
//! revoke`), every client that received tokens in it and registered a `backchannelLogoutURI` is sent a
//! logout token (§2.4) by a direct POST (§2.5). Deliveries run in spawned tasks so the logout response
//! never waits for a client; each is retried a bounded number of times and audited. What a client does
//! with the token (end its own session) is its business.

use std::sync::OnceLock;
use std::time::Duration;

use serde::Serialize;
use serde_json::{json, Value};
use tokio::task::JoinHandle;

use crate::state::AppState;
use crate::storage::Session;

/// The event member every logout token carries (§2.4).
pub const EVENT: &str = "http://schemas.openid.net/event/backchannel-logout";

/// The JWS `typ` of logout tokens (§2.4, explicit typing as RFC 8725 §3.11 recommends).
pub const TYP: &str = "logout+jwt";

/// Seconds a logout token is valid for after `iat`.
const LIFETIME_SECS: i64 = 120;

/// Deliveries tried per client before giving up.
pub const ATTEMPTS: u32 = 3;

/// Per-attempt timeout (connect plus response).
const TIMEOUT: Duration = Duration::from_secs(5);

/// Wait before the second attempt; doubles after each failure.
const FIRST_BACKOFF: Duration = Duration::from_millis(500);

/// Logout-token claims (§2.4). There is never a `nonce`.
#[derive(Debug, Clone, Serialize)]
pub struct LogoutTokenClaims {
    /// The issuer.
    pub iss: String,
    /// The client the token is for.
    pub aud: String,
    /// Unix time of issue (seconds).
    pub iat: i64,
    /// `iat` plus two minutes.
    pub exp: i64,
    /// Random id, so a client can reject a replay.
    pub jti: String,
    /// `{EVENT: {}}`.
    pub events: Value,
    /// The session that ended.
    pub sid: String,
    /// Its user's subject.
    pub sub: String,
}

/// How one delivery ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A 2xx answer, after this many attempts.
    Delivered(u32),
    /// A 400 (the client refused the token, §2.8): not retried.
    Rejected,
    /// Every attempt failed (timeout, network error, other status); the last failure.
    Failed(String),
}

fn http() -> &'static reqwest::Client {
    static CLIENT: OnceLock<reqwest::Client> = OnceLock::new();
    CLIENT.get_or_init(|| {
        // Redirects are not followed (§2.5: the URI is the endpoint); a failed build falls back to the
        // defaults, which the per-request timeout still bounds.
        reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(TIMEOUT)
            .build()
            .unwrap_or_default()
    })
}

/// Sends a logout token for `session` to every client recorded in it that has a `backchannelLogoutURI`.
/// Returns the spawned deliveries: a request handler drops them (they run on), a command that is about to
/// exit awaits them. Clients that cannot be looked up, or tokens that cannot be signed, are logged and
/// skipped: a logout never fails because of back-channel delivery.
pub async fn notify(state: &AppState, session: &Session) -> Vec<JoinHandle<Outcome>> {
    let mut ids: Vec<&str> = session.clients.iter().map(|c| c.client_id.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    let mut deliveries = Vec::new();
    for id in ids {
        let uri = match state.client(id).await {
            Ok(Some(c)) => match &c.backchannel_logout_uri {
                Some(u) => u.clone(),
                None => continue,
            },
            Ok(None) => continue,
            Err(e) => {
                tracing::warn!(client = id, error = %e, "back-channel logout: cannot read the client");
                continue;
            }
        };
        let token = match logout_token(state, id, session).await {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(client = id, error = %e, "back-channel logout: cannot sign the logout token");
                continue;
            }
        };
        let client = id.to_owned();
        let sid = session.id.clone();
        deliveries.push(tokio::spawn(async move {
            let outcome = deliver(&uri, &token).await;
            let result = match &outcome {
                Outcome::Delivered(_) => "delivered".to_owned(),
                Outcome::Rejected => "rejected".to_owned(),
                Outcome::Failed(e) => format!("failed: {e}"),
            };
            tracing::info!(target: "audit", event = "backchannel_logout", client = %client, sid = %sid, result = %result);
            outcome
        }));
    }
    deliveries
}

/// The signed logout token for `client_id` about `session`.
async fn logout_token(state: &AppState, client_id: &str, session: &Session) -> Result<String, String> {
    let keys = state.keys().await.map_err(|e| e.to_string())?;
    let iat = state.clock.now();
    let claims = LogoutTokenClaims {
        iss: state.config.issuer.as_str().trim_end_matches('/').to_owned(),
        aud: client_id.to_owned(),
        iat,
        exp: iat + LIFETIME_SECS,
        jti: crate::token::random_b64::<16>(),
        events: json!({ EVENT: {} }),
        sid: session.id.clone(),
        sub: state.config.subject(&session.identity),
    };
    keys.signer.sign_typed_jwt(TYP, &claims).map_err(|e| e.to_string())
}

/// POSTs `logout_token=<token>` to `uri` (§2.5) up to [`ATTEMPTS`] times.
async fn deliver(uri: &str, token: &str) -> Outcome {
    let mut backoff = FIRST_BACKOFF;
    let mut last = String::new();
    for attempt in 1..=ATTEMPTS {
        if attempt > 1 {
            tokio::time::sleep(backoff).await;
            backoff *= 2;
        }
        match http().post(uri).form(&[("logout_token", token)]).send().await {
            Ok(r) if r.status().is_success() => return Outcome::Delivered(attempt),
            Ok(r) if r.status() == reqwest::StatusCode::BAD_REQUEST => return Outcome::Rejected,
            Ok(r) => last = format!("HTTP {}", r.status().as_u16()),
            Err(e) => last = e.to_string(),
        }
    }
    Outcome::Failed(last)
}
