//! Browser sessions: single sign-on across clients (Dex's `sessions:`). A login through the form or an
//! upstream starts a [`Session`] in storage and sets the issuer's session cookie; a later `/auth` from the
//! same browser, for any client the session is shared with, gets its code at once (OIDC Core §3.1.2.1
//! `prompt` and `max_age` decide when it may not). Every token minted from the session names it in `sid`,
//! refreshes included, and RP-initiated logout ends it (OpenID Connect RP-Initiated Logout 1.0 §2).
//!
//! This module owns the `sessions:` settings, the cookie, and the rules: which session a request has, who
//! it is shared with, and what a logout revokes. The HTTP handlers (`http::authorize`, `http::login`,
//! `http::logout`) call into it; storage keeps the records ([`crate::storage::Storage::create_session`]).
//!
//! - The cookie is `<id>.<secret>` (128-bit id, 256-bit secret, base64url), `HttpOnly`, `SameSite=Lax`,
//!   `Path` the issuer's path, `Secure` when the issuer is https. Storage keeps only a SHA-256 of the
//!   secret, compared in constant time. With "remember me" unchecked the cookie has no `Max-Age`, so it
//!   ends with the browser; the stored session keeps its lifetimes either way.
//! - Lifetimes: `absoluteLifetime` from the last login, and `validIfNotUsedFor` since the last login or
//!   silent sign-in through it. A fresh login by the same user in the same browser renews the session
//!   in place (same id, so `sid` stays, new secret, new `auth_time`); a login as someone else replaces it.
//! - Sharing (Dex's rule): a session may sign in silently the clients that already got a code in it, and a
//!   client B when B is in the `ssoSharedWith` list (or `*`) of a client the user signed in to *directly*
//!   through it; a client without `ssoSharedWith` follows `ssoSharedWithDefault` (here `all`, as Keycloak
//!   and Okta do; `none` is Dex's default). Silent sign-ins never share onwards, so sharing does not chain.
//! - Each silent sign-in re-checks the client's `allowedConnectors`, the `connector_id` of the request and
//!   the connector's and client's policy against the identity the connector reported at login.
//! - The connector data of the login (an upstream refresh token) is copied into each family started from
//!   the session. For an upstream that rotates its refresh tokens, the first family to refresh upstream
//!   makes the others' copy stale: those families end at their next refresh and the user signs in again.

use std::time::Duration;

use aws_lc_rs::digest;
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::Response;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use serde::Deserialize;
use subtle::ConstantTimeEq;

use crate::config::{Client, Problem, Warning};
use crate::connector::Connector;
use crate::grant::revoke_family;
use crate::oauth::TokenError;
use crate::state::AppState;
use crate::storage::{Identity, Session, SessionClient, StorageError};
use crate::token::{random_b64, IdTokenClaims};

/// Dex's default cookie name, so a browser signed in to Dex keeps one cookie after a migration.
pub const DEFAULT_COOKIE_NAME: &str = "dex_session";

// === config ===

/// `sessions:` as written (Dex's keys).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawSessions {
    #[serde(default)]
    cookie_name: Option<String>,
    #[serde(default)]
    absolute_lifetime: Option<String>,
    #[serde(default)]
    valid_if_not_used_for: Option<String>,
    #[serde(default)]
    remember_me_checked_by_default: Option<bool>,
    #[serde(default)]
    sso_shared_with_default: Option<String>,
    #[serde(default)]
    cookie_encryption_key: Option<String>,
}

/// Who a client shares its sessions with when it has no `ssoSharedWith` (`sessions.ssoSharedWithDefault`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SsoSharing {
    /// Every client (the default here, as in Keycloak and Okta).
    All,
    /// No other client (Dex's default).
    None,
}

impl SsoSharing {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            SsoSharing::All => "all",
            SsoSharing::None => "none",
        }
    }
}

/// `sessions:`, validated.
#[derive(Debug, Clone)]
pub struct Sessions {
    /// `cookieName`: the session cookie's name (default `dex_session`).
    pub cookie_name: String,
    /// `absoluteLifetime`: a session ends this long after the last login, however often it is used
    /// (default 24h).
    pub absolute_lifetime: Duration,
    /// `validIfNotUsedFor`: a session ends when no login or silent sign-in used it this long (default 1h;
    /// at most `absoluteLifetime`).
    pub valid_if_not_used_for: Duration,
    /// `rememberMeCheckedByDefault`: whether the login form's "Remember me" starts checked, and the choice
    /// for logins through an upstream (no form). Unchecked, the cookie dies with the browser. Default true.
    pub remember_me_checked_by_default: bool,
    /// `ssoSharedWithDefault`: sharing for clients without `ssoSharedWith` (default `all`).
    pub sso_shared_with_default: SsoSharing,
}

impl Default for Sessions {
    fn default() -> Self {
        Self {
            cookie_name: DEFAULT_COOKIE_NAME.to_owned(),
            absolute_lifetime: Duration::from_secs(24 * 3600),
            valid_if_not_used_for: Duration::from_secs(3600),
            remember_me_checked_by_default: true,
            sso_shared_with_default: SsoSharing::All,
        }
    }
}

/// RFC 6265 §4.1.1: a cookie name is an RFC 7230 token.
fn valid_cookie_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

impl Sessions {
    /// Validates `sessions:`, adding each problem (with its key) to `problems` and each Dex key accepted
    /// without Dex's effect to `warnings`; the defaults stand in for invalid values.
    pub fn parse(raw: RawSessions, problems: &mut Vec<Problem>, warnings: &mut Vec<Warning>) -> Self {
        let d = Self::default();
        let mut duration = |key: &str, value: Option<String>, default: Duration| {
            let Some(value) = value else { return default };
            match humantime::parse_duration(value.trim()) {
                Ok(v) if !v.is_zero() => v,
                _ => {
                    problems.push(Problem::new(
                        key,
                        format!("a positive duration such as \"1h\" or \"24h\", got {value:?}"),
                    ));
                    default
                }
            }
        };
        let absolute_lifetime = duration("sessions.absoluteLifetime", raw.absolute_lifetime, d.absolute_lifetime);
        let valid_if_not_used_for =
            duration("sessions.validIfNotUsedFor", raw.valid_if_not_used_for, d.valid_if_not_used_for);
        if valid_if_not_used_for > absolute_lifetime {
            problems.push(Problem::new(
                "sessions.validIfNotUsedFor",
                format!(
                    "at most sessions.absoluteLifetime ({}), got {}",
                    humantime::format_duration(absolute_lifetime),
                    humantime::format_duration(valid_if_not_used_for)
                ),
            ));
        }
        let cookie_name = match raw.cookie_name {
            None => d.cookie_name,
            Some(n) if valid_cookie_name(&n) => n,
            Some(n) => {
                problems.push(Problem::new(
                    "sessions.cookieName",
                    format!("a cookie name (letters, digits and !#$%&'*+-.^_`|~), got {n:?}"),
                ));
                d.cookie_name
            }
        };
        let sso_shared_with_default = match raw.sso_shared_with_default.as_deref() {
            None => d.sso_shared_with_default,
            Some("all") => SsoSharing::All,
            Some("none") => SsoSharing::None,
            Some(other) => {
                problems
                    .push(Problem::new("sessions.ssoSharedWithDefault", format!("\"all\" or \"none\", got {other:?}")));
                d.sso_shared_with_default
            }
        };
        if raw.cookie_encryption_key.is_some() {
            warnings.push(Warning {
                key: "sessions.cookieEncryptionKey".into(),
                message: "not used: the cookie holds only a random id and secret, and storage keeps a hash of the \
                          secret, so there is nothing to encrypt"
                    .into(),
                line: None,
            });
        }
        Self {
            cookie_name,
            absolute_lifetime,
            valid_if_not_used_for,
            remember_me_checked_by_default: raw
                .remember_me_checked_by_default
                .unwrap_or(d.remember_me_checked_by_default),
            sso_shared_with_default,
        }
    }

    /// Whether a session `source` signed in to directly may sign in `target` silently: `source`'s
    /// `ssoSharedWith` names `target` or `*`; without the key, `ssoSharedWithDefault`. A client always
    /// shares with itself.
    pub fn shares(&self, source: &Client, target: &str) -> bool {
        if source.id == target {
            return true;
        }
        match &source.sso_shared_with {
            Some(list) => list.iter().any(|c| c == "*" || c == target),
            None => self.sso_shared_with_default == SsoSharing::All,
        }
    }
}

// === cookie ===

/// The session cookie's value: `<id>.<secret>`.
#[derive(Clone, PartialEq, Eq)]
pub struct SessionCookie {
    /// The session id (storage key, `sid`): 16 random bytes, base64url.
    pub id: String,
    /// 32 random bytes, base64url; only its hash is stored.
    pub secret: String,
}

impl std::fmt::Debug for SessionCookie {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionCookie").field("id", &self.id).finish_non_exhaustive()
    }
}

impl SessionCookie {
    /// A fresh id and secret.
    pub fn random() -> Self {
        Self { id: random_b64::<16>(), secret: random_b64::<32>() }
    }

    /// Parses `<id>.<secret>`: exactly the lengths [`Self::random`] makes, base64url only; `None` otherwise.
    pub fn parse(value: &str) -> Option<Self> {
        let (id, secret) = value.split_once('.')?;
        let b64 = |p: &str, len: usize| {
            p.len() == len && p.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        };
        (b64(id, 22) && b64(secret, 43)).then(|| Self { id: id.to_owned(), secret: secret.to_owned() })
    }

    /// The cookie value.
    pub fn encode(&self) -> String {
        format!("{}.{}", self.id, self.secret)
    }

    /// SHA-256 of the secret, base64url: what storage keeps.
    pub fn secret_hash(&self) -> String {
        B64.encode(digest::digest(&digest::SHA256, self.secret.as_bytes()).as_ref())
    }

    /// Whether this cookie is the one `session` was issued with (constant-time).
    pub fn opens(&self, session: &Session) -> bool {
        self.id == session.id && bool::from(self.secret_hash().as_bytes().ct_eq(session.secret_hash.as_bytes()))
    }

    /// The token a logout confirmation form carries (base64url SHA-256 of the secret, apart from
    /// [`Self::secret_hash`]): only a page that could read the cookie's secret can produce it, so another
    /// site cannot post a confirmed logout for the browser.
    pub fn logout_confirmation(&self) -> String {
        let mut input = b"tokengate logout confirmation\0".to_vec();
        input.extend_from_slice(self.secret.as_bytes());
        B64.encode(digest::digest(&digest::SHA256, &input).as_ref())
    }

    /// Whether `presented` is [`Self::logout_confirmation`] (constant-time).
    pub fn confirms_logout(&self, presented: &str) -> bool {
        bool::from(self.logout_confirmation().as_bytes().ct_eq(presented.as_bytes()))
    }
}

/// The `Set-Cookie` value for the session cookie: `value` with `Max-Age` when `max_age` is given (seconds;
/// `0` deletes it), else a cookie that ends with the browser.
fn set_cookie_value(state: &AppState, value: &str, max_age: Option<u64>) -> Option<HeaderValue> {
    let name = &state.config.sessions.cookie_name;
    let secure = if state.config.issuer.scheme() == "https" { "; Secure" } else { "" };
    let path = match state.config.path_prefix() {
        p if p.is_empty() => "/".to_owned(),
        p => p,
    };
    let max_age = max_age.map(|s| format!("; Max-Age={s}")).unwrap_or_default();
    HeaderValue::from_str(&format!("{name}={value}; Path={path}{max_age}; HttpOnly; SameSite=Lax{secure}")).ok()
}

/// The session cookie of a request, if it has a well-formed one.
pub fn cookie(state: &AppState, headers: &HeaderMap) -> Option<SessionCookie> {
    crate::http::authorize::cookie(headers, &state.config.sessions.cookie_name).and_then(SessionCookie::parse)
}

// === lookup ===

/// Whether `s` is alive at `now`.
fn alive(s: &Session, now: i64) -> bool {
    now <= s.expiry && now <= s.absolute_expiry
}

/// The live session the request's cookie opens: `None` when the cookie is absent, malformed, unknown,
/// has the wrong secret (tampered or from a replaced session) or the session has expired.
pub async fn current(state: &AppState, headers: &HeaderMap) -> Result<Option<Session>, StorageError> {
    let Some(c) = cookie(state, headers) else { return Ok(None) };
    match state.storage.get_session(&c.id).await {
        Ok(s) if c.opens(&s) && alive(&s, state.clock.now()) => Ok(Some(s)),
        Ok(_) | Err(StorageError::NotFound) => Ok(None),
        Err(e) => Err(e),
    }
}

// === /auth ===

/// OIDC Core §3.1.2.1 `prompt` and `max_age` of an authorization request, as far as sessions care.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Prompt {
    /// `prompt=none`: no page may be shown; without a usable session the answer is `login_required`.
    pub none: bool,
    /// `prompt=login` (or `select_account`, which has no page of its own here): sign in again.
    pub login: bool,
    /// `max_age` in seconds: a session whose login is older must sign in again (`0` always).
    pub max_age: Option<u64>,
}

impl Prompt {
    /// Parses the parameters; the error is the `invalid_request` description. `consent` is accepted and has
    /// no effect (there is no consent page); values this issuer does not know are ignored.
    pub fn parse(prompt: Option<&str>, max_age: Option<&str>) -> Result<Self, &'static str> {
        let values: Vec<&str> = prompt.unwrap_or("").split(' ').filter(|v| !v.is_empty()).collect();
        let none = values.contains(&"none");
        if none && values.len() > 1 {
            // OIDC Core §3.1.2.1: none with any other value is an error.
            return Err("prompt=none cannot be combined with other values");
        }
        let login = values.iter().any(|v| matches!(*v, "login" | "select_account"));
        let max_age = match max_age {
            None => None,
            Some(v) => Some(v.parse::<u64>().map_err(|_| "max_age must be a non-negative integer (seconds)")?),
        };
        Ok(Self { none, login, max_age })
    }

    /// Whether a login at `auth_time` may answer at `now` without signing in again.
    pub fn accepts(&self, auth_time: i64, now: i64) -> bool {
        // OIDC Core §3.1.2.1: max_age=0 is prompt=login; otherwise the login may be max_age seconds old.
        !self.login && self.max_age.is_none_or(|m| m > 0 && now.saturating_sub(auth_time) <= m as i64)
    }
}

/// Why an `id_token_hint` on `/auth` cannot be used.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HintError {
    /// Not an ID token this issuer signed: `invalid_request`.
    #[error("id_token_hint is not an ID token of this issuer")]
    Forged,
    /// The keys could not be loaded (a 500).
    #[error(transparent)]
    Keys(#[from] crate::keyring::KeyringError),
}

/// The `sub` of an `id_token_hint` (OIDC Core §3.1.2.1): a token this issuer signed, expired or not (the
/// hint is often old). `None` without a hint.
pub(crate) async fn hint_subject(state: &AppState, hint: Option<&str>) -> Result<Option<String>, HintError> {
    let Some(hint) = hint else { return Ok(None) };
    let keys = state.keys().await?;
    let claims =
        crate::keys::verify_jwt(hint, &keys.public).and_then(|v| serde_json::from_value::<IdTokenClaims>(v).ok());
    claims.map(|c| Some(c.sub)).ok_or(HintError::Forged)
}

/// The browser's session, if it may sign `client` in at once for this request (see the module
/// documentation): the session (with the client recorded in it) and its connector. `connector_id` is the
/// request's `connector_id` parameter; `hint_sub` the `sub` of its `id_token_hint`, which a session of
/// another user does not answer (OIDC Core §3.1.2.2).
pub(crate) async fn resume(
    state: &AppState,
    headers: &HeaderMap,
    client: &Client,
    connector_id: Option<&str>,
    hint_sub: Option<&str>,
    prompt: &Prompt,
) -> Result<Option<(Session, Connector)>, StorageError> {
    let Some(session) = current(state, headers).await? else { return Ok(None) };
    let now = state.clock.now();
    if !prompt.accepts(session.auth_time, now)
        || hint_sub.is_some_and(|s| s != state.config.subject(&session.identity))
        || !shared_with(state, &session, &client.id).await?
    {
        return Ok(None);
    }
    let used = &session.identity.connector_id;
    let Some(connector) = state.connectors.get(used) else { return Ok(None) };
    if !client.allows_connector(used) || connector_id.is_some_and(|c| c != used) {
        return Ok(None);
    }
    if let Err(reason) = crate::connector::policy::admit(connector, Some(client), session.identity.clone()) {
        tracing::info!(target: "audit", event = "sso", result = "refused", sid = %session.id, client = %client.id, reason = %reason);
        return Ok(None);
    }
    let (hash, client_id) = (session.secret_hash.clone(), client.id.clone());
    let idle = state.config.sessions.valid_if_not_used_for.as_secs() as i64;
    let updated = state
        .storage
        .update_session(
            &session.id,
            Box::new(move |mut s| {
                // Logged out, renewed or expired since it was read: not this cookie's session any more.
                if s.secret_hash != hash || !alive(&s, now) {
                    return Err(StorageError::Conflict);
                }
                if !s.clients.iter().any(|c| c.client_id == client_id) {
                    s.clients.push(SessionClient { client_id, signed_in: false });
                }
                s.last_used = now;
                s.expiry = (now + idle).min(s.absolute_expiry);
                Ok(s)
            }),
        )
        .await;
    match updated {
        Ok(s) => {
            tracing::info!(target: "audit", event = "sso", result = "success", sid = %s.id, sub = %state.config.subject(&s.identity), connector = %s.identity.connector_id, client = %client.id);
            Ok(Some((s, connector.clone())))
        }
        Err(StorageError::Conflict | StorageError::NotFound) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Whether `session` may sign in `client_id`: it already did, or a client signed in to directly through
/// it shares with it.
async fn shared_with(state: &AppState, session: &Session, client_id: &str) -> Result<bool, StorageError> {
    if session.clients.iter().any(|c| c.client_id == client_id) {
        return Ok(true);
    }
    for source in session.clients.iter().filter(|c| c.signed_in) {
        if let Some(source) = state.client(&source.client_id).await? {
            if state.config.sessions.shares(&source, client_id) {
                return Ok(true);
            }
        }
    }
    Ok(false)
}

// === after a login ===

/// How a code is being issued: after a login (which starts or renews the session), or silently from
/// the session [`resume`] returned.
pub(crate) enum Start<'a> {
    /// The user just signed in. `identity` is what the connector reported (before any policy), the form of
    /// it the session keeps so each client's policy applies to it afresh.
    Login {
        /// The request, for the browser's current session cookie.
        headers: &'a HeaderMap,
        /// The login form's "Remember me" (for an upstream login, `rememberMeCheckedByDefault`).
        remember_me: bool,
        /// The connector's identity.
        identity: Identity,
    },
    /// Signed in through the browser's session.
    Resumed(&'a Session),
}

/// The session a code is issued in: its id (the `sid`), the login time (`auth_time`), and the cookie to
/// set, if any.
pub(crate) struct SignedIn {
    /// Session id.
    pub(crate) id: String,
    /// Unix time of the login.
    pub(crate) auth_time: i64,
    cookie: Option<HeaderValue>,
}

impl SignedIn {
    /// Adds the session cookie to `r` when the login set one.
    pub(crate) fn set_cookie(self, r: &mut Response) {
        if let Some(c) = self.cookie {
            r.headers_mut().append(header::SET_COOKIE, c);
        }
    }
}

/// Starts or renews the browser's session after a login for `client_id` (or notes a silent sign-in).
pub(crate) async fn signed_in(state: &AppState, client_id: &str, start: Start<'_>) -> Result<SignedIn, StorageError> {
    let (headers, remember_me, identity) = match start {
        Start::Resumed(s) => return Ok(SignedIn { id: s.id.clone(), auth_time: s.auth_time, cookie: None }),
        Start::Login { headers, remember_me, identity } => (headers, remember_me, identity),
    };
    let now = state.clock.now();
    let cfg = &state.config.sessions;
    let absolute = now + cfg.absolute_lifetime.as_secs() as i64;
    let expiry = (now + cfg.valid_if_not_used_for.as_secs() as i64).min(absolute);
    let fresh = SessionCookie::random();
    let mut session = None;
    if let Some(old) = current(state, headers).await? {
        let same_user = old.identity.connector_id == identity.connector_id && old.identity.user_id == identity.user_id;
        if same_user {
            let (hash, new_hash, id, client) =
                (old.secret_hash.clone(), fresh.secret_hash(), identity.clone(), client_id.to_owned());
            let renewed = state
                .storage
                .update_session(
                    &old.id,
                    Box::new(move |mut s| {
                        if s.secret_hash != hash {
                            return Err(StorageError::Conflict);
                        }
                        s.secret_hash = new_hash;
                        s.identity = id;
                        s.auth_time = now;
                        s.last_used = now;
                        s.absolute_expiry = absolute;
                        s.expiry = expiry;
                        match s.clients.iter_mut().find(|c| c.client_id == client) {
                            Some(c) => c.signed_in = true,
                            None => s.clients.push(SessionClient { client_id: client, signed_in: true }),
                        }
                        Ok(s)
                    }),
                )
                .await;
            match renewed {
                Ok(s) => session = Some(SessionCookie { id: s.id, secret: fresh.secret.clone() }),
                // Ended (logout on another tab) or renewed by another login meanwhile: start a new one.
                Err(StorageError::Conflict | StorageError::NotFound) => {}
                Err(e) => return Err(e),
            }
        } else {
            match state.storage.delete_session(&old.id).await {
                Ok(()) | Err(StorageError::NotFound) => {}
                Err(e) => return Err(e),
            }
            tracing::info!(target: "audit", event = "session_end", reason = "replaced", sid = %old.id, sub = %state.config.subject(&old.identity));
        }
    }
    let cookie = match session {
        Some(c) => {
            tracing::info!(target: "audit", event = "session_renewed", sid = %c.id, sub = %state.config.subject(&identity), client = client_id);
            c
        }
        None => {
            state
                .storage
                .create_session(Session {
                    id: fresh.id.clone(),
                    secret_hash: fresh.secret_hash(),
                    identity: identity.clone(),
                    auth_time: now,
                    created_at: now,
                    last_used: now,
                    absolute_expiry: absolute,
                    expiry,
                    clients: vec![SessionClient { client_id: client_id.to_owned(), signed_in: true }],
                })
                .await?;
            tracing::info!(target: "audit", event = "session_start", sid = %fresh.id, sub = %state.config.subject(&identity), connector = %identity.connector_id, client = client_id);
            fresh
        }
    };
    let max_age = remember_me.then_some(cfg.absolute_lifetime.as_secs());
    Ok(SignedIn { auth_time: now, cookie: set_cookie_value(state, &cookie.encode(), max_age), id: cookie.id })
}

// === logout ===

/// What a logout did.
#[derive(Debug, Default)]
pub(crate) struct Ended {
    /// Whether the request carried a session cookie (the response clears it).
    pub(crate) had_cookie: bool,
    /// Refresh-token families revoked.
    pub(crate) families: usize,
    /// The `sub` of the session ended, if one was.
    pub(crate) sub: Option<String>,
}

impl Ended {
    /// Clears the session cookie in `r` when the request had one.
    pub(crate) fn clear_cookie(&self, state: &AppState, r: &mut Response) {
        if self.had_cookie {
            if let Some(v) = set_cookie_value(state, "", Some(0)) {
                r.headers_mut().append(header::SET_COOKIE, v);
            }
        }
    }
}

/// RP-initiated logout (OpenID Connect RP-Initiated Logout 1.0 §2, §3): ends the browser session and
/// revokes the refresh-token families minted in it for `client_id` (the hint's `azp` or the `client_id`
/// parameter; without one, no family is revoked). The session is the one the cookie opens, else the live
/// session the `id_token_hint` names (`sid`) for the same user. A hint whose session is gone (stale)
/// ends and revokes nothing, except that a hint from a grant without a browser (device, password), whose
/// `sid` is its refresh-token family, revokes that family. `current` is what [`current`] found for the
/// request.
pub(crate) async fn end(
    state: &AppState,
    headers: &HeaderMap,
    current: Option<Session>,
    hint: Option<&IdTokenClaims>,
    client_id: Option<&str>,
) -> Result<Ended, TokenError> {
    let mut ended = Ended { had_cookie: cookie(state, headers).is_some(), families: 0, sub: None };
    let mut session = current;
    if session.is_none() {
        if let Some((hint, sid)) = hint.and_then(|h| Some((h, h.sid.as_deref()?))) {
            session = match state.storage.get_session(sid).await {
                Ok(s) if alive(&s, state.clock.now()) && state.config.subject(&s.identity) == hint.sub => Some(s),
                Ok(_) | Err(StorageError::NotFound) => None,
                Err(e) => return Err(e.into()),
            };
            if session.is_none() {
                ended.families = revoke_browserless_family(state, sid, &hint.azp).await?;
                return Ok(ended);
            }
        }
    }
    let Some(session) = session else { return Ok(ended) };
    match state.storage.delete_session(&session.id).await {
        Ok(()) | Err(StorageError::NotFound) => {}
        Err(e) => return Err(e.into()),
    }
    // Gateways learn of the ended session through the revocation feed.
    crate::revocation::record(state, crate::storage::RevocationKind::Sid, &session.id).await?;
    // The deliveries run on after the response (dropping a handle detaches its task).
    drop(crate::backchannel::notify(state, &session).await);
    if let Some(client) = client_id {
        let tokens =
            state.storage.list_user_refresh_tokens(&session.identity.connector_id, &session.identity.user_id).await?;
        let mut families: Vec<&str> = tokens
            .iter()
            .filter(|t| t.client_id == client && t.session_id.as_deref() == Some(session.id.as_str()))
            .map(|t| t.family_id.as_str())
            .collect();
        families.sort_unstable();
        families.dedup();
        for f in &families {
            revoke_family(state, f, "logout").await?;
        }
        ended.families = families.len();
    }
    let sub = state.config.subject(&session.identity);
    tracing::info!(target: "audit", event = "session_end", reason = "logout", sid = %session.id, sub = %sub, client = client_id.unwrap_or(""), families = ended.families);
    ended.sub = Some(sub);
    Ok(ended)
}

/// The family `sid` names, if it is one of `client`'s started without a browser session.
async fn revoke_browserless_family(state: &AppState, sid: &str, client: &str) -> Result<usize, TokenError> {
    let family = state.storage.list_refresh_family(sid).await?;
    let ours = family.first().is_some_and(|t| t.client_id == client && t.session_id.is_none());
    if ours {
        revoke_family(state, sid, "logout").await?;
        crate::revocation::record(state, crate::storage::RevocationKind::Sid, sid).await?;
    }
    Ok(usize::from(ours))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> (Sessions, Vec<String>, Vec<String>) {
        let raw: RawSessions = serde_yaml::from_str(yaml).unwrap();
        let (mut problems, mut warnings) = (vec![], vec![]);
        let s = Sessions::parse(raw, &mut problems, &mut warnings);
        (s, problems.iter().map(|p| p.to_string()).collect(), warnings.iter().map(|w| w.key.clone()).collect())
    }

    #[test]
    fn defaults_share_with_every_client_for_a_day_and_an_idle_hour() {
        let (s, problems, _) = parse("{}");
        assert!(problems.is_empty());
        assert_eq!(s.cookie_name, "dex_session");
        assert_eq!(s.absolute_lifetime, Duration::from_secs(86_400));
        assert_eq!(s.valid_if_not_used_for, Duration::from_secs(3600));
        assert!(s.remember_me_checked_by_default);
        assert_eq!(s.sso_shared_with_default, SsoSharing::All);
    }

    #[test]
    fn dex_keys_are_read_and_bad_values_named() {
        let (s, problems, warnings) = parse(
            "{cookieName: sso, absoluteLifetime: 2h, validIfNotUsedFor: 10m, rememberMeCheckedByDefault: false, \
             ssoSharedWithDefault: none, cookieEncryptionKey: k}",
        );
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(warnings, ["sessions.cookieEncryptionKey"]);
        assert_eq!(
            (s.cookie_name.as_str(), s.absolute_lifetime.as_secs(), s.valid_if_not_used_for.as_secs()),
            ("sso", 7200, 600)
        );
        assert!(!s.remember_me_checked_by_default);
        assert_eq!(s.sso_shared_with_default, SsoSharing::None);

        let cases = [
            ("{cookieName: 'a b'}", "sessions.cookieName"),
            ("{absoluteLifetime: soon}", "sessions.absoluteLifetime"),
            ("{validIfNotUsedFor: 0s}", "sessions.validIfNotUsedFor"),
            ("{absoluteLifetime: 1h, validIfNotUsedFor: 2h}", "sessions.validIfNotUsedFor: expected at most"),
            ("{ssoSharedWithDefault: some}", "sessions.ssoSharedWithDefault"),
        ];
        for (yaml, problem) in cases {
            let (_, problems, _) = parse(yaml);
            assert_eq!(problems.len(), 1, "{yaml}: {problems:?}");
            assert!(problems[0].starts_with(problem), "{yaml}: {problems:?}");
        }
        assert!(serde_yaml::from_str::<RawSessions>("{cookieNmae: x}").is_err(), "unknown keys are refused");
    }

    fn client(id: &str, shared: Option<&[&str]>) -> Client {
        let mut c = crate::state::stored_client(crate::storage::Client {
            id: id.into(),
            secret: "s".into(),
            redirect_uris: vec![],
            trusted_peers: vec![],
            public: false,
            name: id.into(),
            logo_url: String::new(),
            allowed_connectors: vec![],
            post_logout_redirect_uris: vec![],
            sso_shared_with: vec![],
            backchannel_logout_uri: String::new(),
        });
        c.sso_shared_with = shared.map(|l| l.iter().map(|s| s.to_string()).collect());
        c
    }

    #[test]
    fn sharing_follows_the_source_clients_list_then_the_default() {
        let all = Sessions::default();
        let none = Sessions { sso_shared_with_default: SsoSharing::None, ..Sessions::default() };
        let cases: [(&Sessions, Option<&[&str]>, &str, bool); 8] = [
            (&all, None, "b", true),
            (&none, None, "b", false),
            (&none, None, "a", true),
            (&none, Some(&["b"]), "b", true),
            (&none, Some(&["b"]), "c", false),
            (&none, Some(&["*"]), "c", true),
            (&all, Some(&[]), "b", false),
            (&all, Some(&["c"]), "b", false),
        ];
        for (cfg, list, target, expected) in cases {
            assert_eq!(cfg.shares(&client("a", list), target), expected, "{list:?} -> {target}");
        }
    }

    #[test]
    fn cookies_round_trip_and_any_change_fails() {
        let c = SessionCookie::random();
        let parsed = SessionCookie::parse(&c.encode()).unwrap();
        assert_eq!(parsed, c);
        let session = Session {
            id: c.id.clone(),
            secret_hash: c.secret_hash(),
            identity: crate::storage::conformance::identity(),
            auth_time: 0,
            created_at: 0,
            last_used: 0,
            absolute_expiry: 10,
            expiry: 10,
            clients: vec![],
        };
        assert!(parsed.opens(&session));
        let encoded = c.encode();
        for i in 0..encoded.len() {
            let mut bytes = encoded.clone().into_bytes();
            bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
            let tampered = String::from_utf8(bytes).unwrap();
            assert!(SessionCookie::parse(&tampered).is_none_or(|t| !t.opens(&session)), "byte {i} changed");
        }
        for bad in ["", ".", "abc", &format!("{}.", c.id), &format!("{}.{}x", c.id, c.secret), "a.b.c"] {
            assert!(SessionCookie::parse(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn prompt_and_max_age_follow_oidc_core_3_1_2_1() {
        let p = |prompt: Option<&str>, max_age: Option<&str>| Prompt::parse(prompt, max_age);
        assert_eq!(p(None, None), Ok(Prompt::default()));
        assert!(p(Some("none"), None).unwrap().none);
        assert!(p(Some("none login"), None).is_err(), "none with another value");
        assert!(p(Some("login consent"), None).unwrap().login);
        assert!(p(Some("select_account"), None).unwrap().login);
        assert_eq!(p(Some("consent"), None), Ok(Prompt::default()));
        assert!(p(None, Some("-1")).is_err());
        assert!(p(None, Some("soon")).is_err());

        let now = 1000;
        let cases = [
            (None, None, 0, true),
            (Some("login"), None, now, false),
            (None, Some("0"), now, false),
            (None, Some("60"), now - 60, true),
            (None, Some("60"), now - 61, false),
        ];
        for (prompt, max_age, auth_time, reusable) in cases {
            assert_eq!(p(prompt, max_age).unwrap().accepts(auth_time, now), reusable, "{prompt:?} {max_age:?}");
        }
    }
}
