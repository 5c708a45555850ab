//! Storage: the one trait every backend implements, the records it keeps, and its errors. Backends keep
//! no process-local state that matters, so several replicas can share one database: everything that must
//! be atomic across replicas (code redemption, refresh rotation, key rotation, login buckets) is an update
//! the backend runs in one transaction. Expiry is always judged against a `now` the caller passes.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::keys::Keys;

pub mod memory;
pub mod postgres;
pub mod sqlite;

#[cfg(test)]
pub(crate) mod conformance;

/// Storage failures. `NotFound` and `Conflict` are expected outcomes that callers turn into protocol errors.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// No record with that id.
    #[error("not found")]
    NotFound,
    /// A record with that id exists already.
    #[error("already exists")]
    AlreadyExists,
    /// The record changed under the caller (e.g. a refresh token was rotated by a concurrent request).
    #[error("conflict")]
    Conflict,
    /// The backend failed.
    #[error("storage backend: {0}")]
    Backend(String),
    /// The backend cannot be reached right now (connection refused or lost, server shutting down): worth
    /// retrying, answered with 503 and `Retry-After`.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
}

/// The closure form of updates: it sees the current record and returns the new one, or refuses.
pub type Update<T> = Box<dyn FnOnce(T) -> Result<T, StorageError> + Send>;

/// Wraps a device-request update so it can never change the codes the record is found by.
pub(crate) fn keep_codes(f: Update<DeviceRequest>) -> Update<DeviceRequest> {
    Box::new(move |old: DeviceRequest| {
        let (device_code, user_code) = (old.device_code.clone(), old.user_code.clone());
        let new = f(old)?;
        if new.device_code != device_code || new.user_code != user_code {
            return Err(StorageError::Conflict);
        }
        Ok(new)
    })
}

/// Wraps an update so it can never change the key its record is stored under.
pub(crate) fn keep_key<T: Send + 'static>(key: fn(&T) -> String, f: Update<T>) -> Update<T> {
    Box::new(move |old: T| {
        let before = key(&old);
        let new = f(old)?;
        if key(&new) != before {
            return Err(StorageError::Conflict);
        }
        Ok(new)
    })
}

/// The key a password is stored and found under: its email, lowercased, so logins and the API match
/// emails case-insensitively (Dex stores them lowercased too).
pub fn password_key(email: &str) -> String {
    email.to_lowercase()
}

/// An OAuth 2.0 client created through the gRPC API (Dex's `storage.Client`). Clients from the
/// configuration (`staticClients`) are not stored: they are looked up first and are read-only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Client {
    /// `client_id`; the storage key.
    pub id: String,
    /// Shared secret; empty for a public client.
    pub secret: String,
    /// Redirect URIs.
    pub redirect_uris: Vec<String>,
    /// Clients allowed to mint tokens with this client in `aud`.
    pub trusted_peers: Vec<String>,
    /// Public clients have no secret and must use PKCE.
    pub public: bool,
    /// Display name.
    pub name: String,
    /// Logo URL (kept for the API; the login page does not show it).
    pub logo_url: String,
    /// Connectors this client may use; empty: all.
    pub allowed_connectors: Vec<String>,
    /// Where RP-initiated logout may send the browser.
    pub post_logout_redirect_uris: Vec<String>,
    /// Clients (or `*`) a browser session this client signed in may sign in silently; empty:
    /// `sessions.ssoSharedWithDefault` (the API cannot tell an empty list from none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sso_shared_with: Vec<String>,
    /// Back-Channel Logout 1.0 URI; empty: none.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub backchannel_logout_uri: String,
}

/// A user of the password database created through the gRPC API (Dex's `storage.Password`), stored under
/// [`password_key`] of its email. Users from the configuration (`staticPasswords`) are not stored.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Password {
    /// Login name and `email` claim.
    pub email: String,
    /// bcrypt hash of the password.
    pub hash: String,
    /// `name` and `preferred_username`.
    pub username: String,
    /// Stable user id: the `sub`.
    pub user_id: String,
}

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Password")
            .field("email", &self.email)
            .field("username", &self.username)
            .field("user_id", &self.user_id)
            .finish_non_exhaustive()
    }
}

/// Who logged in, as the connector reported it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// Stable user id, the `sub`.
    pub user_id: String,
    /// Display name.
    pub username: String,
    /// Email address.
    pub email: String,
    /// Whether the connector vouches for the email.
    pub email_verified: bool,
    /// Groups at login (re-read at refresh).
    pub groups: Vec<String>,
    /// Which connector authenticated the user.
    pub connector_id: String,
    /// `preferred_username` (OIDC Core §5.1); empty means "same as `username`".
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub preferred_username: String,
    /// What the connector needs to re-check the user at refresh (an upstream refresh token, an LDAP DN…),
    /// kept with each refresh-token family and never shown to clients (Dex's `ConnectorData`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connector_data: Option<ConnectorData>,
}

/// A connector's private data about a login (JSON). It may hold upstream secrets, so `Debug` hides it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ConnectorData(pub serde_json::Value);

impl std::fmt::Debug for ConnectorData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ConnectorData(..)")
    }
}

/// A login in progress: what `/auth` was asked, kept until the user authenticates.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthRequest {
    /// Random id, carried by the login form.
    pub id: String,
    /// Requesting client.
    pub client_id: String,
    /// Validated redirect URI.
    pub redirect_uri: String,
    /// Requested scopes.
    pub scopes: Vec<String>,
    /// Client state, echoed back.
    pub state: Option<String>,
    /// OIDC nonce, copied into the ID token.
    pub nonce: Option<String>,
    /// PKCE challenge.
    pub code_challenge: Option<String>,
    /// PKCE method (`S256` or `plain`).
    pub code_challenge_method: Option<String>,
    /// Anti-CSRF token: the login form must carry it, and so must a cookie.
    pub csrf_token: String,
    /// Unix time after which the login is abandoned.
    pub expiry: i64,
    /// Set when the login answers a device authorization (RFC 8628) instead of a redirect.
    #[serde(default)]
    pub device: Option<DeviceLogin>,
    /// The only connector this login may use (Dex's `connector_id` parameter on `/auth`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connector_id: Option<String>,
    /// The `response_type` values asked for (OAuth 2.0 Multiple Response Types); empty means `code`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub response_types: Vec<String>,
}

/// The device authorization a login answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceLogin {
    /// The `device_code` the device polls with.
    pub device_code: String,
    /// The user code, shown on the form so the user can compare it with the device's.
    pub user_code: String,
}

/// An RFC 8628 device authorization: created at the device authorization endpoint, answered by the user
/// through the login form, and redeemed once at the token endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceRequest {
    /// The `device_code` (random, unguessable); the storage key.
    pub device_code: String,
    /// The user code, normalised (8 characters, no dash); unique among stored requests.
    pub user_code: String,
    /// Requesting client.
    pub client_id: String,
    /// Requested scopes.
    pub scopes: Vec<String>,
    /// Seconds the device must wait between polls; grows by 5 with every `slow_down` (RFC 8628 §3.5).
    pub interval: i64,
    /// Unix time of the last poll.
    pub last_poll: Option<i64>,
    /// Where the user's answer stands.
    pub status: DeviceStatus,
    /// Unix time after which the codes are dead.
    pub expiry: i64,
}

/// The user's answer to a device authorization.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum DeviceStatus {
    /// Waiting for the user.
    Pending,
    /// The user signed in; the next poll gets tokens.
    Approved {
        /// Who signed in.
        identity: Identity,
        /// Unix time of the login.
        auth_time: i64,
    },
    /// The user refused.
    Denied,
    /// Tokens were issued; the device code is spent.
    Redeemed,
}

/// An authorization code, kept after redemption so a replay can revoke what it issued.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthCode {
    /// The code itself (random, unguessable).
    pub id: String,
    /// Client it was issued to.
    pub client_id: String,
    /// Redirect URI of the request; the token request must repeat it.
    pub redirect_uri: String,
    /// Granted scopes.
    pub scopes: Vec<String>,
    /// OIDC nonce.
    pub nonce: Option<String>,
    /// PKCE challenge.
    pub code_challenge: Option<String>,
    /// PKCE method.
    pub code_challenge_method: Option<String>,
    /// The user.
    pub identity: Identity,
    /// Unix time of the login.
    pub auth_time: i64,
    /// Unix time after which it cannot be redeemed.
    pub expiry: i64,
    /// Set on redemption.
    pub redeemed_at: Option<i64>,
    /// The refresh-token family the redemption created, revoked if the code is replayed.
    pub family_id: Option<String>,
    /// The browser session ([`Session`]) the code was issued in: the `sid` of every token it leads to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
}

/// A refresh token. Only a hash of its secret is stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefreshToken {
    /// Public id, the first half of the token string.
    pub id: String,
    /// All tokens descended from one login share a family; it is what revocation removes.
    pub family_id: String,
    /// SHA-256 of the secret half, base64url.
    pub secret_hash: String,
    /// Client it was issued to.
    pub client_id: String,
    /// Granted scopes.
    pub scopes: Vec<String>,
    /// Nonce of the original request.
    pub nonce: Option<String>,
    /// The user, as of this token's issue.
    pub identity: Identity,
    /// Unix time of the login.
    pub auth_time: i64,
    /// Unix time this token was issued.
    pub created_at: i64,
    /// Unix time of the login that started the family (for `absoluteLifetime`).
    pub family_created_at: i64,
    /// Unix time after which nothing in this record may be used (storage GC deletes it then).
    pub expiry: i64,
    /// Set when this token was exchanged for its successor.
    pub rotated_at: Option<i64>,
    /// The successor's id.
    pub successor: Option<String>,
    /// The browser session ([`Session`]) the family was started in, kept by every rotation: the `sid` of
    /// the tokens it mints. `None` for grants without a browser (device, password), whose `sid` is the
    /// family id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
}

/// A browser's single sign-on session (Dex's `AuthSession`): started by a login through the form or an
/// upstream, named by the issuer's session cookie, and shared by every replica through storage. The cookie
/// holds the id and a secret; only a hash of the secret is stored, so a database reader cannot forge the
/// cookie, and the id alone (it is published as `sid`) proves nothing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    /// Random id (128 bits, base64url); the storage key and the `sid` claim.
    pub id: String,
    /// SHA-256 of the cookie's secret, base64url.
    pub secret_hash: String,
    /// Who signed in, and through which connector (`identity.connector_id`).
    pub identity: Identity,
    /// Unix time of the last real authentication (the `auth_time` claim, OIDC Core §2).
    pub auth_time: i64,
    /// Unix time the session started.
    pub created_at: i64,
    /// Unix time of the last login or silent sign-in through it.
    pub last_used: i64,
    /// Unix time after which it is dead however often it is used (`sessions.absoluteLifetime`).
    pub absolute_expiry: i64,
    /// Unix time after which it is dead: the earlier of `absolute_expiry` and `last_used` plus
    /// `sessions.validIfNotUsedFor`. Storage GC deletes it then.
    pub expiry: i64,
    /// The clients that received a code in it, in order of first use.
    pub clients: Vec<SessionClient>,
}

/// A client that received a code in a [`Session`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionClient {
    /// `client_id`.
    pub client_id: String,
    /// Whether the user signed in for this client (not silently through another's session). Only such
    /// clients share the session onwards (`ssoSharedWith`), so sharing never chains.
    pub signed_in: bool,
}

/// What a [`Revocation`] names. Wire strings: `sid`, `sub`, `group`, `all`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RevocationKind {
    /// One browser session (the `sid` claim).
    Sid,
    /// Every token of one user (the `sub` claim).
    Sub,
    /// Every token whose `groups` claim holds the group.
    Group,
    /// Every token issued before `revoked_at`; the value is empty.
    All,
}

impl RevocationKind {
    /// The wire string.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sid => "sid",
            Self::Sub => "sub",
            Self::Group => "group",
            Self::All => "all",
        }
    }

    /// Parses a wire string; `None` for anything else.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "sid" => Self::Sid,
            "sub" => Self::Sub,
            "group" => Self::Group,
            "all" => Self::All,
            _ => return None,
        })
    }
}

/// An entry of the revocation log that the revocation feed (`GET /revocations`) serves: tokens matching
/// `kind`/`value` and issued at or before `revoked_at` are no longer to be trusted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revocation {
    /// Position in the log, assigned by the backend: strictly increasing (gaps are possible) and never
    /// reused, so it serves as the feed's cursor.
    pub seq: i64,
    /// What is revoked.
    pub kind: RevocationKind,
    /// The `sid`, `sub` or group; empty for [`RevocationKind::All`].
    pub value: String,
    /// Unix time (seconds) of the revocation.
    pub revoked_at: i64,
}

/// A login-attempt token bucket.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Bucket {
    /// Attempts left as of `updated_at`.
    pub tokens: f64,
    /// Unix time (fractional seconds) of the last change.
    pub updated_at: f64,
    /// Unix time after which the bucket is full again and the record can go.
    pub expiry: i64,
}

/// What one garbage-collection pass removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct GcResult {
    /// Auth requests.
    pub auth_requests: u64,
    /// Auth codes.
    pub auth_codes: u64,
    /// Refresh tokens.
    pub refresh_tokens: u64,
    /// Full buckets.
    pub buckets: u64,
    /// Device authorizations.
    pub device_requests: u64,
    /// Browser sessions.
    pub sessions: u64,
}

impl GcResult {
    /// Total records removed.
    pub fn total(&self) -> u64 {
        self.auth_requests + self.auth_codes + self.refresh_tokens + self.buckets + self.device_requests + self.sessions
    }
}

/// The storage contract. `storage::conformance` is its executable specification.
#[async_trait]
pub trait Storage: Send + Sync {
    /// Stores a new login; `AlreadyExists` on an id clash.
    async fn create_auth_request(&self, r: AuthRequest) -> Result<(), StorageError>;
    /// Reads a login.
    async fn get_auth_request(&self, id: &str) -> Result<AuthRequest, StorageError>;
    /// Removes a login; `NotFound` if absent.
    async fn delete_auth_request(&self, id: &str) -> Result<(), StorageError>;

    /// Stores a new code.
    async fn create_auth_code(&self, c: AuthCode) -> Result<(), StorageError>;
    /// Reads a code.
    async fn get_auth_code(&self, id: &str) -> Result<AuthCode, StorageError>;
    /// Atomically replaces a code with what `f` makes of it.
    async fn update_auth_code(&self, id: &str, f: Update<AuthCode>) -> Result<AuthCode, StorageError>;

    /// Stores a new refresh token.
    async fn create_refresh_token(&self, t: RefreshToken) -> Result<(), StorageError>;
    /// Reads a refresh token.
    async fn get_refresh_token(&self, id: &str) -> Result<RefreshToken, StorageError>;
    /// Atomically replaces a refresh token with what `f` makes of it.
    async fn update_refresh_token(&self, id: &str, f: Update<RefreshToken>) -> Result<RefreshToken, StorageError>;
    /// In one transaction: marks `old_id` rotated at `now` with `successor` as its successor, and stores
    /// `successor`. `Conflict` if `old_id` was rotated already (a concurrent refresh won), `NotFound` if gone.
    async fn rotate_refresh_token(&self, old_id: &str, now: i64, successor: RefreshToken) -> Result<(), StorageError>;
    /// Every token of a family (rotated ones included).
    async fn list_refresh_family(&self, family_id: &str) -> Result<Vec<RefreshToken>, StorageError>;
    /// Removes a whole family; returns how many tokens went.
    async fn delete_refresh_family(&self, family_id: &str) -> Result<u64, StorageError>;

    /// The signing keys; `NotFound` before the first rotation.
    async fn get_keys(&self) -> Result<Keys, StorageError>;
    /// Atomically replaces the key set with what `f` returns; `None` from `f` leaves it as it is.
    /// Returns the stored set afterwards.
    async fn update_keys(&self, f: Update<Option<Keys>>) -> Result<Keys, StorageError>;

    /// A named server secret: the stored one, or `candidate` stored now if there was none.
    async fn get_or_create_secret(&self, name: &str, candidate: Vec<u8>) -> Result<Vec<u8>, StorageError>;

    /// Reads a bucket.
    async fn get_bucket(&self, key: &str) -> Result<Option<Bucket>, StorageError>;
    /// Atomically replaces a bucket (absent: `None`) with what `f` returns.
    async fn update_bucket(&self, key: &str, f: Update<Option<Bucket>>) -> Result<Option<Bucket>, StorageError>;

    /// Stores a new device authorization; `AlreadyExists` if its device code or user code is taken.
    async fn create_device_request(&self, r: DeviceRequest) -> Result<(), StorageError>;
    /// Reads a device authorization by device code.
    async fn get_device_request(&self, device_code: &str) -> Result<DeviceRequest, StorageError>;
    /// Reads a device authorization by (normalised) user code.
    async fn get_device_request_by_user_code(&self, user_code: &str) -> Result<DeviceRequest, StorageError>;
    /// Atomically replaces a device authorization with what `f` makes of it (the codes must not change).
    async fn update_device_request(
        &self,
        device_code: &str,
        f: Update<DeviceRequest>,
    ) -> Result<DeviceRequest, StorageError>;

    /// Every refresh token (rotated ones included) of the user `user_id` of connector `connector_id`.
    async fn list_user_refresh_tokens(
        &self,
        connector_id: &str,
        user_id: &str,
    ) -> Result<Vec<RefreshToken>, StorageError>;

    /// Every refresh token (rotated ones included), by `created_at` then id: a full scan, for
    /// administrative revocation (`issuer revoke --group`, `--all`), never on a request path.
    async fn list_refresh_tokens(&self) -> Result<Vec<RefreshToken>, StorageError>;

    /// Stores a new client; `AlreadyExists` on an id clash.
    async fn create_client(&self, c: Client) -> Result<(), StorageError>;
    /// Reads a client.
    async fn get_client(&self, id: &str) -> Result<Client, StorageError>;
    /// Atomically replaces a client with what `f` makes of it (`Conflict` if `f` changes the id).
    async fn update_client(&self, id: &str, f: Update<Client>) -> Result<Client, StorageError>;
    /// Removes a client; `NotFound` if absent.
    async fn delete_client(&self, id: &str) -> Result<(), StorageError>;
    /// Every stored client, by id.
    async fn list_clients(&self) -> Result<Vec<Client>, StorageError>;

    /// Stores a new password; `AlreadyExists` if its email (case-insensitively) is taken.
    async fn create_password(&self, p: Password) -> Result<(), StorageError>;
    /// Reads the password of `email` (case-insensitively).
    async fn get_password(&self, email: &str) -> Result<Password, StorageError>;
    /// Atomically replaces a password with what `f` makes of it (`Conflict` if `f` changes the email's
    /// key).
    async fn update_password(&self, email: &str, f: Update<Password>) -> Result<Password, StorageError>;
    /// Removes a password; `NotFound` if absent.
    async fn delete_password(&self, email: &str) -> Result<(), StorageError>;
    /// Every stored password, by key.
    async fn list_passwords(&self) -> Result<Vec<Password>, StorageError>;

    /// Stores a new browser session; `AlreadyExists` on an id clash.
    async fn create_session(&self, s: Session) -> Result<(), StorageError>;
    /// Reads a browser session (expired ones too, until GC removes them: the caller judges `expiry`).
    async fn get_session(&self, id: &str) -> Result<Session, StorageError>;
    /// Atomically replaces a session with what `f` makes of it (`Conflict` if `f` changes the id).
    async fn update_session(&self, id: &str, f: Update<Session>) -> Result<Session, StorageError>;
    /// Removes a session; `NotFound` if absent.
    async fn delete_session(&self, id: &str) -> Result<(), StorageError>;
    /// Every stored session (expired ones too, until GC), by id: a full scan, for administrative
    /// revocation (`issuer revoke`), never on a request path.
    async fn list_sessions(&self) -> Result<Vec<Session>, StorageError>;

    /// Appends an entry to the revocation log; returns the `seq` the backend assigned (greater than every
    /// `seq` before it).
    async fn create_revocation(&self, kind: RevocationKind, value: &str, revoked_at: i64) -> Result<i64, StorageError>;
    /// Up to `limit` log entries with `seq > after`, by `seq` (one range scan of the primary key).
    async fn list_revocations_after(&self, after: i64, limit: u32) -> Result<Vec<Revocation>, StorageError>;
    /// The lowest and highest `seq` retained; `None` while the log is empty.
    async fn get_revocation_bounds(&self) -> Result<Option<(i64, i64)>, StorageError>;
    /// Removes up to `batch` log entries revoked before `cutoff` (unix seconds), always keeping the newest
    /// entry so the highest `seq` (the feed's cursor) survives. Returns how many went.
    async fn delete_revocations_before(&self, cutoff: i64, batch: u32) -> Result<u64, StorageError>;

    /// Removes up to `batch` expired records of each kind.
    async fn garbage_collect(&self, now: i64, batch: u32) -> Result<GcResult, StorageError>;
}
