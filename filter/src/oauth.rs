//! OAuth 2.0 wire formats: the authorization request URL with PKCE (RFC 7636), token-endpoint request
//! bodies (code exchange and refresh, RFC 6749 §4.1.3 and §6), revocation (RFC 7009), and the parsing of
//! token-endpoint answers including RFC 6749 §5.2 error codes. Deciding what a failure means for the
//! session is `flow`'s job.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde::Deserialize;

use crate::callout::{Callout, CalloutResponse};
use crate::config::FilterConfig;
use crate::discovery::ProviderMetadata;
use crate::url::{form_encode, HttpUrl, UrlError};

/// RFC 6749 §5.2 error codes (plus RFC 7009's), defined once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ErrorCode {
    /// The request is missing or repeats a parameter.
    InvalidRequest,
    /// Client authentication failed.
    InvalidClient,
    /// The code or refresh token is invalid, expired or revoked.
    InvalidGrant,
    /// The client may not use this grant.
    UnauthorizedClient,
    /// The grant type is not supported.
    UnsupportedGrantType,
    /// The scope is invalid.
    InvalidScope,
    /// Anything else the server said.
    Other(String),
}

impl ErrorCode {
    /// Parses the `error` field.
    pub fn parse(s: &str) -> ErrorCode {
        match s {
            "invalid_request" => ErrorCode::InvalidRequest,
            "invalid_client" => ErrorCode::InvalidClient,
            "invalid_grant" => ErrorCode::InvalidGrant,
            "unauthorized_client" => ErrorCode::UnauthorizedClient,
            "unsupported_grant_type" => ErrorCode::UnsupportedGrantType,
            "invalid_scope" => ErrorCode::InvalidScope,
            other => ErrorCode::Other(other.to_owned()),
        }
    }

    /// The wire string.
    pub fn as_str(&self) -> &str {
        match self {
            ErrorCode::InvalidRequest => "invalid_request",
            ErrorCode::InvalidClient => "invalid_client",
            ErrorCode::InvalidGrant => "invalid_grant",
            ErrorCode::UnauthorizedClient => "unauthorized_client",
            ErrorCode::UnsupportedGrantType => "unsupported_grant_type",
            ErrorCode::InvalidScope => "invalid_scope",
            ErrorCode::Other(s) => s,
        }
    }
}

/// Why the token endpoint gave no tokens.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenEndpointError {
    /// The issuer answered with an RFC 6749 error.
    #[error("issuer rejected the request: {}", code.as_str())]
    Rejected {
        /// The `error` field.
        code: ErrorCode,
    },
    /// No answer, a 5xx, or an answer that is not an RFC 6749 error: the issuer is unwell.
    #[error("issuer unavailable (status {status})")]
    Unavailable {
        /// HTTP status, 0 for none.
        status: u16,
    },
    /// A 200 without the tokens we need.
    #[error("malformed token response")]
    Malformed,
}

impl TokenEndpointError {
    /// Only `invalid_grant` and `invalid_client` end a session; everything else may be transient
    /// (oauth2-proxy does the same).
    pub fn ends_session(&self) -> bool {
        matches!(self, TokenEndpointError::Rejected { code: ErrorCode::InvalidGrant | ErrorCode::InvalidClient })
    }
}

/// The fields of a successful token response (RFC 6749 §5.1, OpenID Connect Core §3.1.3.3).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct TokenResponse {
    /// The ID token; required for code exchange, usually present on refresh.
    #[serde(default)]
    pub id_token: Option<String>,
    /// A (possibly rotated) refresh token.
    #[serde(default)]
    pub refresh_token: Option<String>,
}

#[derive(Deserialize)]
struct ErrorBody {
    error: String,
}

/// The authorization request URL (RFC 6749 §4.1.1, OpenID Connect Core §3.1.2.1, RFC 7636 §4.3).
pub fn authorization_url(
    cfg: &FilterConfig,
    meta: &ProviderMetadata,
    redirect_uri: &str,
    state: &str,
    nonce: &str,
    verifier: &str,
) -> Result<String, UrlError> {
    let challenge = pkce_challenge(verifier);
    let scope = cfg.scope_param();
    let mut params = vec![
        ("response_type", "code"),
        ("client_id", cfg.client_id.as_str()),
        ("redirect_uri", redirect_uri),
        ("scope", scope.as_str()),
        ("state", state),
        ("nonce", nonce),
        ("code_challenge", challenge.as_str()),
        ("code_challenge_method", "S256"),
    ];
    params.extend(cfg.auth_request_params.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    Ok(HttpUrl::parse(&meta.authorization_endpoint)?.with_query(&params))
}

/// RFC 7636 §4.2: `BASE64URL(SHA256(verifier))`.
pub fn pkce_challenge(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(ring::digest::digest(&ring::digest::SHA256, verifier.as_bytes()))
}

/// The code exchange.
pub fn code_request(
    cfg: &FilterConfig,
    meta: &ProviderMetadata,
    code: &str,
    redirect_uri: &str,
    verifier: &str,
) -> Result<Callout, UrlError> {
    let body = form_encode(&[
        ("grant_type", "authorization_code"),
        ("code", code),
        ("redirect_uri", redirect_uri),
        ("code_verifier", verifier),
    ]);
    Callout::post_form(cfg, &meta.token_endpoint, body)
}

/// The refresh (RFC 6749 §6).
pub fn refresh_request(cfg: &FilterConfig, meta: &ProviderMetadata, refresh_token: &str) -> Result<Callout, UrlError> {
    let body = form_encode(&[("grant_type", "refresh_token"), ("refresh_token", refresh_token)]);
    Callout::post_form(cfg, &meta.token_endpoint, body)
}

/// Revocation of a refresh token (RFC 7009 §2.1).
pub fn revocation_request(cfg: &FilterConfig, endpoint: &str, refresh_token: &str) -> Result<Callout, UrlError> {
    let body = form_encode(&[("token", refresh_token), ("token_type_hint", "refresh_token")]);
    Callout::post_form(cfg, endpoint, body)
}

/// Interprets a token-endpoint answer. The `error` field is parsed from JSON, never matched as a
/// substring; a 4xx without one counts as the issuer being unwell, not as a verdict on the session.
pub fn parse_token_response(resp: &CalloutResponse) -> Result<TokenResponse, TokenEndpointError> {
    match resp.status {
        200 => serde_json::from_slice(&resp.body).map_err(|_| TokenEndpointError::Malformed),
        400..=499 => match serde_json::from_slice::<ErrorBody>(&resp.body) {
            Ok(e) => Err(TokenEndpointError::Rejected { code: ErrorCode::parse(&e.error) }),
            Err(_) => Err(TokenEndpointError::Unavailable { status: resp.status }),
        },
        status => Err(TokenEndpointError::Unavailable { status }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resp(status: u16, body: &str) -> CalloutResponse {
        CalloutResponse { status, body: body.as_bytes().to_vec() }
    }

    #[test]
    fn pkce_challenge_matches_rfc7636_appendix_b() {
        assert_eq!(
            pkce_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }

    #[test]
    fn token_responses_are_classified_by_their_error_field() {
        let cases: &[(CalloutResponse, Result<TokenResponse, TokenEndpointError>, bool)] = &[
            (
                resp(200, r#"{"access_token":"a","id_token":"i","refresh_token":"r","token_type":"bearer"}"#),
                Ok(TokenResponse { id_token: Some("i".into()), refresh_token: Some("r".into()) }),
                false,
            ),
            (
                resp(400, r#"{"error":"invalid_grant","error_description":"expired"}"#),
                Err(TokenEndpointError::Rejected { code: ErrorCode::InvalidGrant }),
                true,
            ),
            (
                resp(401, r#"{"error":"invalid_client"}"#),
                Err(TokenEndpointError::Rejected { code: ErrorCode::InvalidClient }),
                true,
            ),
            (
                resp(400, r#"{"error":"invalid_request","error_description":"invalid_grant"}"#),
                Err(TokenEndpointError::Rejected { code: ErrorCode::InvalidRequest }),
                false,
            ),
            (resp(400, "invalid_grant"), Err(TokenEndpointError::Unavailable { status: 400 }), false),
            (resp(503, r#"{"error":"invalid_grant"}"#), Err(TokenEndpointError::Unavailable { status: 503 }), false),
            (resp(0, ""), Err(TokenEndpointError::Unavailable { status: 0 }), false),
            (resp(200, "<html>"), Err(TokenEndpointError::Malformed), false),
        ];
        for (r, want, ends) in cases {
            let got = parse_token_response(r);
            assert_eq!(&got, want, "{r:?}");
            assert_eq!(got.err().is_some_and(|e| e.ends_session()), *ends, "{r:?} ends the session");
        }
    }
}
