//! OAuth 2.0 errors and how they go on the wire. This is the one place protocol failures become HTTP
//! responses: token-endpoint errors as RFC 6749 §5.2 JSON, authorization errors as a redirect
//! (§4.1.2.1) or, when the client or redirect URI cannot be trusted, as an error page.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::storage::StorageError;

/// The grant types of the token endpoint, by their wire names (RFC 6749 §4, RFC 8628, RFC 8693) — the
/// values Dex's `oauth2.grantTypes` takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GrantType {
    /// `authorization_code` (RFC 6749 §4.1).
    AuthorizationCode,
    /// `refresh_token` (RFC 6749 §6).
    RefreshToken,
    /// `urn:ietf:params:oauth:grant-type:device_code` (RFC 8628).
    DeviceCode,
    /// `implicit` (RFC 6749 §4.2): `/auth` answers `token` / `id_token` response types.
    Implicit,
    /// `password` (RFC 6749 §4.3), checked by `oauth2.passwordConnector`.
    Password,
    /// `client_credentials` (RFC 6749 §4.4).
    ClientCredentials,
    /// `urn:ietf:params:oauth:grant-type:token-exchange` (RFC 8693).
    TokenExchange,
}

impl GrantType {
    /// Every grant type, in the order discovery lists them.
    pub const ALL: [GrantType; 7] = [
        Self::AuthorizationCode,
        Self::RefreshToken,
        Self::DeviceCode,
        Self::Implicit,
        Self::Password,
        Self::ClientCredentials,
        Self::TokenExchange,
    ];

    /// The wire name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::AuthorizationCode => "authorization_code",
            Self::RefreshToken => "refresh_token",
            Self::DeviceCode => "urn:ietf:params:oauth:grant-type:device_code",
            Self::Implicit => "implicit",
            Self::Password => "password",
            Self::ClientCredentials => "client_credentials",
            Self::TokenExchange => "urn:ietf:params:oauth:grant-type:token-exchange",
        }
    }

    /// The grant type named `s`, if any.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|g| g.as_str() == s)
    }
}

/// An internal failure, carried to the logging middleware in a response extension.
#[derive(Debug, Clone)]
pub struct InternalError(pub String);

/// A bare 500 whose cause is logged by the middleware, never shown to the client.
pub fn internal(e: impl std::fmt::Display) -> Response {
    let mut r = (StatusCode::INTERNAL_SERVER_ERROR, [(header::CACHE_CONTROL, "no-store")], "internal server error\n")
        .into_response();
    r.extensions_mut().insert(InternalError(e.to_string()));
    r
}

/// Token, revocation and userinfo endpoint failures (RFC 6749 §5.2, RFC 7009 §2.2.1, RFC 6750 §3.1).
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// Malformed request.
    #[error("invalid_request: {0}")]
    InvalidRequest(String),
    /// Client authentication failed; `basic` when the client tried the Authorization header.
    #[error("invalid_client")]
    InvalidClient {
        /// Whether the client used HTTP Basic.
        basic: bool,
    },
    /// The grant (code, refresh token, verifier) is invalid, expired, revoked or not the client's.
    #[error("invalid_grant: {0}")]
    InvalidGrant(&'static str),
    /// The client may not use this grant.
    #[error("unauthorized_client: {0}")]
    UnauthorizedClient(&'static str),
    /// Unknown grant type.
    #[error("unsupported_grant_type")]
    UnsupportedGrantType,
    /// Bad scope.
    #[error("invalid_scope: {0}")]
    InvalidScope(String),
    /// RFC 6750: a missing or bad bearer token at userinfo.
    #[error("invalid_token: {0}")]
    InvalidToken(&'static str),
    /// RFC 8628 §3.5: the user has not answered the device authorization yet; poll again.
    #[error("authorization_pending")]
    AuthorizationPending,
    /// RFC 8628 §3.5: polling too fast; wait 5 seconds longer from now on.
    #[error("slow_down")]
    SlowDown,
    /// RFC 8628 §3.5: the device code expired; start again.
    #[error("expired_token")]
    ExpiredToken,
    /// RFC 8628 §3.5: the user refused the device authorization.
    #[error("access_denied")]
    AccessDenied,
    /// Too many failed password attempts for this name or address (RFC 6749 has no code for it: the
    /// `invalid_grant` code with 429 and `Retry-After`, RFC 6585 §4).
    #[error("invalid_grant: too many attempts")]
    Throttled {
        /// Seconds until an attempt is back.
        retry_after: u64,
    },
    /// Storage or signing failed.
    #[error("internal: {0}")]
    Internal(String),
    /// Something the issuer depends on (its storage, an upstream identity provider) cannot be reached
    /// right now: 503 with `Retry-After`, and the client may simply retry (a gateway keeps its session
    /// meanwhile). The text is the public `error_description`: it says what is away, never why.
    #[error("temporarily_unavailable: {0}")]
    TemporarilyUnavailable(String),
}

impl From<crate::keyring::KeyringError> for TokenError {
    fn from(e: crate::keyring::KeyringError) -> Self {
        match e {
            crate::keyring::KeyringError::Storage(s) => s.into(),
            other => TokenError::Internal(other.to_string()),
        }
    }
}

/// Seconds a client is told to wait before retrying after a 503.
pub const RETRY_AFTER_SECS: u64 = 2;

impl From<StorageError> for TokenError {
    fn from(e: StorageError) -> Self {
        match e {
            StorageError::Unavailable(why) => {
                tracing::warn!(error = %why, "storage unavailable: answering 503");
                TokenError::TemporarilyUnavailable("the issuer's storage cannot be reached; retry shortly".into())
            }
            other => TokenError::Internal(other.to_string()),
        }
    }
}

impl TokenError {
    fn code(&self) -> &'static str {
        match self {
            TokenError::InvalidRequest(_) => "invalid_request",
            TokenError::InvalidClient { .. } => "invalid_client",
            TokenError::InvalidGrant(_) | TokenError::Throttled { .. } => "invalid_grant",
            TokenError::UnauthorizedClient(_) => "unauthorized_client",
            TokenError::UnsupportedGrantType => "unsupported_grant_type",
            TokenError::InvalidScope(_) => "invalid_scope",
            TokenError::InvalidToken(_) => "invalid_token",
            TokenError::AuthorizationPending => "authorization_pending",
            TokenError::SlowDown => "slow_down",
            TokenError::ExpiredToken => "expired_token",
            TokenError::AccessDenied => "access_denied",
            TokenError::Internal(_) => "server_error",
            TokenError::TemporarilyUnavailable(_) => "temporarily_unavailable",
        }
    }

    fn description(&self) -> String {
        match self {
            TokenError::InvalidRequest(d) | TokenError::InvalidScope(d) => d.clone(),
            TokenError::InvalidClient { .. } => "client authentication failed".to_owned(),
            TokenError::InvalidGrant(d) | TokenError::UnauthorizedClient(d) | TokenError::InvalidToken(d) => {
                (*d).to_owned()
            }
            TokenError::UnsupportedGrantType => "grant_type is not supported".to_owned(),
            TokenError::Throttled { retry_after } => {
                format!("too many failed sign-in attempts: try again in {retry_after} seconds")
            }
            TokenError::AuthorizationPending => "the user has not yet approved the device".to_owned(),
            TokenError::SlowDown => "polling too fast: wait 5 seconds longer between requests".to_owned(),
            TokenError::ExpiredToken => "the device code has expired; start again".to_owned(),
            TokenError::AccessDenied => "the user denied the device authorization".to_owned(),
            TokenError::Internal(_) | TokenError::TemporarilyUnavailable(_) => String::new(),
        }
    }
}

impl IntoResponse for TokenError {
    fn into_response(self) -> Response {
        if let TokenError::Internal(e) = self {
            return internal(e);
        }
        if let TokenError::TemporarilyUnavailable(description) = &self {
            let body = json!({ "error": "temporarily_unavailable", "error_description": description });
            let retry = RETRY_AFTER_SECS.to_string();
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                [(header::CACHE_CONTROL, "no-store"), (header::RETRY_AFTER, retry.as_str())],
                Json(body),
            )
                .into_response();
        }
        let status = match &self {
            TokenError::InvalidClient { .. } | TokenError::InvalidToken(_) => StatusCode::UNAUTHORIZED,
            TokenError::Throttled { .. } => StatusCode::TOO_MANY_REQUESTS,
            _ => StatusCode::BAD_REQUEST,
        };
        let body = json!({ "error": self.code(), "error_description": self.description() });
        let mut r =
            (status, [(header::CACHE_CONTROL, "no-store"), (header::PRAGMA, "no-cache")], Json(body)).into_response();
        let challenge = match &self {
            TokenError::InvalidClient { basic: true } => Some(r#"Basic realm="issuer""#.to_owned()),
            TokenError::InvalidToken(d) => Some(format!(r#"Bearer error="invalid_token", error_description="{d}""#)),
            _ => None,
        };
        if let Some(v) = challenge.and_then(|c| HeaderValue::from_str(&c).ok()) {
            r.headers_mut().insert(header::WWW_AUTHENTICATE, v);
        }
        if let TokenError::Throttled { retry_after } = self {
            r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
        }
        r
    }
}

/// RFC 6749 §4.1.2.1 error codes sent back to a trusted redirect URI.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthorizeErrorCode {
    /// Malformed request.
    InvalidRequest,
    /// The client may not use this flow.
    UnauthorizedClient,
    /// The user or the server refused.
    AccessDenied,
    /// Only `code` is supported.
    UnsupportedResponseType,
    /// Bad scope.
    InvalidScope,
    /// Internal failure.
    ServerError,
    /// OIDC Core §3.1.2.6: `prompt=none` but the user must sign in.
    LoginRequired,
}

impl AuthorizeErrorCode {
    /// The wire string.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthorizeErrorCode::InvalidRequest => "invalid_request",
            AuthorizeErrorCode::UnauthorizedClient => "unauthorized_client",
            AuthorizeErrorCode::AccessDenied => "access_denied",
            AuthorizeErrorCode::UnsupportedResponseType => "unsupported_response_type",
            AuthorizeErrorCode::InvalidScope => "invalid_scope",
            AuthorizeErrorCode::ServerError => "server_error",
            AuthorizeErrorCode::LoginRequired => "login_required",
        }
    }
}

/// The out-of-band redirect URI (Google's, kept by Dex and kubelogin's `authcode-keyboard`): no redirect,
/// the issuer shows the code for the user to paste. Allowed for public clients only, as in Dex.
pub const OOB_REDIRECT_URI: &str = "urn:ietf:wg:oauth:2.0:oob";

/// Appends query parameters to a (validated) redirect URI, keeping any query it already has.
pub fn redirect_with(uri: &str, params: &[(&str, &str)]) -> String {
    if params.is_empty() {
        // As registered: no empty `?` appended.
        return uri.to_owned();
    }
    match url::Url::parse(uri) {
        Ok(mut u) => {
            {
                let mut q = u.query_pairs_mut();
                for (k, v) in params {
                    q.append_pair(k, v);
                }
            }
            u.into()
        }
        Err(_) => uri.to_owned(),
    }
}

/// `uri` with `params` in its fragment (OAuth 2.0 Multiple Response Types §5: the fragment response mode of
/// the implicit and hybrid flows), form-encoded.
pub fn redirect_with_fragment(uri: &str, params: &[(&str, &str)]) -> String {
    let fragment = url::form_urlencoded::Serializer::new(String::new()).extend_pairs(params).finish();
    match url::Url::parse(uri) {
        Ok(mut u) => {
            u.set_fragment(Some(&fragment));
            u.into()
        }
        Err(_) => uri.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirects_carry_their_parameters_and_no_empty_query() {
        assert_eq!(redirect_with("http://127.0.0.1:5555/", &[]), "http://127.0.0.1:5555/", "no `?` appended");
        assert_eq!(redirect_with("http://127.0.0.1:5555/cb?x=1", &[]), "http://127.0.0.1:5555/cb?x=1");
        assert_eq!(redirect_with("http://127.0.0.1:5555/", &[("state", "a b")]), "http://127.0.0.1:5555/?state=a+b");
        assert_eq!(
            redirect_with("http://127.0.0.1:5555/cb?x=1", &[("code", "c")]),
            "http://127.0.0.1:5555/cb?x=1&code=c"
        );
    }

    #[tokio::test]
    async fn device_flow_errors_are_400_with_rfc8628_codes() {
        let cases = [
            (TokenError::AuthorizationPending, "authorization_pending"),
            (TokenError::SlowDown, "slow_down"),
            (TokenError::ExpiredToken, "expired_token"),
            (TokenError::AccessDenied, "access_denied"),
        ];
        for (e, code) in cases {
            let r = e.into_response();
            assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{code}");
            assert_eq!(r.headers()[header::CACHE_CONTROL], "no-store", "{code}");
            let body = axum::body::to_bytes(r.into_body(), 1024).await.unwrap();
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(v["error"], code);
        }
    }
}
