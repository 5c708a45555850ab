//! What the OAuth 2.0 authorization-code connectors (`github`, `gitlab`) share: the authorization URL with
//! PKCE (RFC 7636), the callback's `code` or `error` (RFC 6749 §4.1.2), the token endpoint for the code and
//! refresh grants (RFC 6749 §4.1.3, §6), JSON API reads that follow `Link: <…>; rel="next"` pagination
//! (RFC 8288) without ever leaving the API's origin.
//!
//! Errors are classified once here: an unreachable upstream, a 5xx, a 429 or a rate-limited 403 is
//! [`ConnectorError::Unavailable`]; what else an API answers is left to the connector ([`ApiError::Status`]),
//! which knows whether it is signing someone in or refreshing. No secret (client secret, access or refresh
//! token) ever appears in an error or a log line.

use std::collections::HashMap;

use aws_lc_rs::digest;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use reqwest::header::{HeaderMap, ACCEPT, AUTHORIZATION, LINK};
use reqwest::StatusCode;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use url::Url;

use super::tls;
use super::ConnectorError;

/// How many pages one list read may follow (a loop guard; 100 pages of 100 items on GitHub).
pub(crate) const MAX_PAGES: usize = 100;
/// Longest upstream error text quoted in a message (it is shown to the person).
const MAX_QUOTE: usize = 200;

/// The PKCE `code_challenge` for `verifier` with method `S256` (RFC 7636 §4.2).
pub(crate) fn pkce_challenge(verifier: &str) -> String {
    B64.encode(digest::digest(&digest::SHA256, verifier.as_bytes()).as_ref())
}

/// `endpoint` with `params` added to its query.
pub(crate) fn with_query(endpoint: &Url, params: &[(&str, &str)]) -> String {
    let mut url = endpoint.clone();
    url.query_pairs_mut().extend_pairs(params);
    url.into()
}

/// Upstream text cut to a length fit for a page, without control characters.
pub(crate) fn quote(text: &str) -> String {
    let clean: String = text.chars().filter(|c| !c.is_control()).collect();
    match clean.char_indices().nth(MAX_QUOTE) {
        Some((i, _)) => format!("{}…", &clean[..i]),
        None => clean,
    }
}

/// The authorization `code` of a callback, or the upstream's OAuth error (RFC 6749 §4.1.2.1), such as
/// `access_denied` when the person declined.
pub(crate) fn callback_code<'a>(provider: &str, query: &'a HashMap<String, String>) -> Result<&'a str, ConnectorError> {
    if let Some(error) = query.get("error") {
        let detail = query.get("error_description").map(|d| format!(": {}", quote(d))).unwrap_or_default();
        return Err(ConnectorError::Upstream(format!("{provider} answered {}{detail}", quote(error))));
    }
    match query.get("code").map(String::as_str) {
        Some(code) if !code.is_empty() => Ok(code),
        _ => Err(ConnectorError::InvalidCallback(format!("the answer from {provider} has no authorization code"))),
    }
}

/// This issuer as an OAuth 2.0 client of one upstream: what the authorization request and the code
/// redemption of every code-flow connector send.
pub(crate) struct OAuthClient<'a> {
    /// The upstream's name, for messages ("GitHub").
    pub(crate) provider: &'a str,
    /// `client_id`.
    pub(crate) client_id: &'a str,
    /// `client_secret` (sent in the form, as GitHub and GitLab accept it; RFC 6749 §2.3.1).
    pub(crate) client_secret: &'a str,
    /// The issuer's `/callback`.
    pub(crate) redirect_uri: &'a str,
}

impl OAuthClient<'_> {
    /// The authorization request (RFC 6749 §4.1.1) at `authorize`: the client, the callback, `scope`,
    /// the login's `state` and a PKCE S256 challenge of its verifier (RFC 7636 §4.3), then `extra`.
    pub(crate) fn authorization_url(
        &self,
        authorize: &Url,
        scope: &str,
        request: &super::CallbackRequest,
        extra: &[(&str, &str)],
    ) -> String {
        let challenge = pkce_challenge(&request.pkce_verifier);
        let mut params = vec![
            ("client_id", self.client_id),
            ("redirect_uri", self.redirect_uri),
            ("scope", scope),
            ("state", request.state.as_str()),
            ("code_challenge", challenge.as_str()),
            ("code_challenge_method", "S256"),
        ];
        params.extend_from_slice(extra);
        with_query(authorize, &params)
    }

    /// Redeems the callback's code at `token` (RFC 6749 §4.1.3) with the PKCE verifier (RFC 7636 §4.5);
    /// an OAuth error on the callback (the person declined) is `Failed(Upstream)`.
    pub(crate) async fn redeem_code(
        &self,
        http: &reqwest::Client,
        token: &Url,
        request: &super::CallbackRequest,
        query: &HashMap<String, String>,
    ) -> Result<Tokens, GrantError> {
        let code = callback_code(self.provider, query).map_err(GrantError::Failed)?;
        let form = [
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", self.redirect_uri),
            ("client_id", self.client_id),
            ("client_secret", self.client_secret),
            ("code_verifier", request.pkce_verifier.as_str()),
        ];
        token_grant(http, self.provider, token, &form).await
    }
}

/// A token endpoint's answer (RFC 6749 §5.1). `Debug` hides the tokens.
#[derive(Clone, Serialize, Deserialize)]
pub(crate) struct Tokens {
    /// The access token for the API.
    pub(crate) access_token: String,
    /// A refresh token, when the upstream issues them (GitLab; GitHub Apps with expiring tokens).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) refresh_token: Option<String>,
    /// Seconds until the access token expires, when it does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) expires_in: Option<u64>,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokens").field("expires_in", &self.expires_in).finish_non_exhaustive()
    }
}

/// Why a token request failed.
#[derive(Debug)]
pub(crate) enum GrantError {
    /// The upstream refused the grant itself: the code or refresh token is invalid, expired, used or revoked
    /// (`invalid_grant`, GitHub's `bad_verification_code` and `bad_refresh_token`).
    Rejected(String),
    /// The upstream refused this issuer (`invalid_client`, a wrong `redirectURI`…): a configuration error.
    Misconfigured(String),
    /// Unreachable, a server error, or an answer that is not a token response.
    Failed(ConnectorError),
}

/// An OAuth 2.0 error body (RFC 6749 §5.2).
#[derive(Deserialize)]
struct OAuthError {
    error: String,
    #[serde(default)]
    error_description: Option<String>,
}

fn unavailable(provider: &str, what: impl std::fmt::Display) -> ConnectorError {
    ConnectorError::Unavailable(format!("{provider}: {what}"))
}

/// A request error as a connector error (the message names the endpoint's path, never its query).
fn send_error(provider: &str, url: &Url, e: &reqwest::Error) -> ConnectorError {
    let why = if tls::unreachable(e) { "cannot be reached" } else { "request failed" };
    unavailable(provider, format!("{} {why}", url.path()))
}

/// POSTs `form` to a token endpoint (client credentials are in `form`, as GitHub and GitLab accept them).
pub(crate) async fn token_grant(
    http: &reqwest::Client,
    provider: &str,
    endpoint: &Url,
    form: &[(&str, &str)],
) -> Result<Tokens, GrantError> {
    let r = http
        .post(endpoint.clone())
        .header(ACCEPT, "application/json")
        .form(form)
        .send()
        .await
        .map_err(|e| GrantError::Failed(send_error(provider, endpoint, &e)))?;
    let status = r.status();
    if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
        return Err(GrantError::Failed(unavailable(provider, format!("token endpoint answered HTTP {status}"))));
    }
    let body = r.bytes().await.map_err(|e| GrantError::Failed(send_error(provider, endpoint, &e)))?;
    // GitHub answers errors with 200 and an `error` member; GitLab with 400/401 (RFC 6749 §5.2).
    if let Ok(e) = serde_json::from_slice::<OAuthError>(&body) {
        let detail = e.error_description.as_deref().map(|d| format!(": {}", quote(d))).unwrap_or_default();
        let message = format!("{provider} refused the token request ({}{detail})", quote(&e.error));
        return Err(match e.error.as_str() {
            "invalid_grant" | "bad_verification_code" | "bad_refresh_token" => GrantError::Rejected(message),
            _ => GrantError::Misconfigured(message),
        });
    }
    if !status.is_success() {
        return Err(GrantError::Misconfigured(format!("{provider}: token endpoint answered HTTP {status}")));
    }
    match serde_json::from_slice::<Tokens>(&body) {
        Ok(t) if !t.access_token.is_empty() => Ok(t),
        _ => Err(GrantError::Failed(unavailable(provider, "the token endpoint's answer is not a token response"))),
    }
}

/// What an API read answered, when it is not the success the connector asked for.
#[derive(Debug)]
pub(crate) enum ApiError {
    /// An HTTP status the connector decides about (401 revoked token, 403, 404…).
    Status(u16),
    /// Unavailable (unreachable, 5xx, rate limited) or unusable.
    Failed(ConnectorError),
}

/// Whether a response means "try again later": a server error, 429, or a 403 that is GitHub's rate limit.
fn retry_later(status: StatusCode, headers: &HeaderMap) -> bool {
    status.is_server_error()
        || status == StatusCode::TOO_MANY_REQUESTS
        || (status == StatusCode::FORBIDDEN
            && headers.get("x-ratelimit-remaining").and_then(|v| v.to_str().ok()) == Some("0"))
}

/// One API GET with a bearer token: the status and headers, when the upstream answered and need not be
/// retried later.
pub(crate) async fn get(
    http: &reqwest::Client,
    provider: &str,
    url: &Url,
    token: &str,
    extra: &[(&'static str, &'static str)],
) -> Result<reqwest::Response, ConnectorError> {
    let mut req = http.get(url.clone()).header(AUTHORIZATION, format!("Bearer {token}"));
    for (k, v) in extra {
        req = req.header(*k, *v);
    }
    let r = req.send().await.map_err(|e| send_error(provider, url, &e))?;
    if retry_later(r.status(), r.headers()) {
        return Err(unavailable(provider, format!("{} answered HTTP {}", url.path(), r.status())));
    }
    Ok(r)
}

/// Reads one JSON document; `Ok((value, next))` with the `rel="next"` page, which must be on `origin`.
pub(crate) async fn get_json<T: DeserializeOwned>(
    http: &reqwest::Client,
    provider: &str,
    url: &Url,
    token: &str,
    extra: &[(&'static str, &'static str)],
) -> Result<(T, Option<Url>), ApiError> {
    let r = get(http, provider, url, token, extra).await.map_err(ApiError::Failed)?;
    if r.status() != StatusCode::OK {
        return Err(ApiError::Status(r.status().as_u16()));
    }
    let next = match r.headers().get(LINK).and_then(|v| v.to_str().ok()).and_then(next_link) {
        None => None,
        Some(n) => match url.join(&n) {
            Ok(n) if n.origin() == url.origin() => Some(n),
            _ => {
                return Err(ApiError::Failed(ConnectorError::Upstream(format!(
                    "{provider}: the next page of {} is not on the API's origin",
                    url.path()
                ))))
            }
        },
    };
    let body = r.bytes().await.map_err(|e| ApiError::Failed(send_error(provider, url, &e)))?;
    let value = serde_json::from_slice(&body).map_err(|_| {
        ApiError::Failed(unavailable(provider, format!("{} answered something unexpected", url.path())))
    })?;
    Ok((value, next))
}

/// Reads every page of a JSON list, following `rel="next"` up to [`MAX_PAGES`].
pub(crate) async fn get_all<T: DeserializeOwned>(
    http: &reqwest::Client,
    provider: &str,
    first: Url,
    token: &str,
    extra: &[(&'static str, &'static str)],
) -> Result<Vec<T>, ApiError> {
    let mut out = Vec::new();
    let mut next = Some(first);
    let mut pages = 0;
    while let Some(url) = next.take() {
        pages += 1;
        if pages > MAX_PAGES {
            return Err(ApiError::Failed(ConnectorError::Upstream(format!(
                "{provider}: {} has more than {MAX_PAGES} pages",
                url.path()
            ))));
        }
        let (items, more): (Vec<T>, _) = get_json(http, provider, &url, token, extra).await?;
        out.extend(items);
        next = more;
    }
    Ok(out)
}

/// The `rel="next"` target of a `Link` header (RFC 8288 §3): `<url>; rel="next", <url>; rel="last"`.
pub(crate) fn next_link(header: &str) -> Option<String> {
    header.split(',').find_map(|link| {
        let (target, params) = link.trim().split_once(';')?;
        let target = target.trim().strip_prefix('<')?.strip_suffix('>')?;
        let is_next = params.split(';').any(|p| {
            let Some((k, v)) = p.trim().split_once('=') else { return false };
            k.trim().eq_ignore_ascii_case("rel")
                && v.trim().trim_matches('"').split_ascii_whitespace().any(|r| r.eq_ignore_ascii_case("next"))
        });
        is_next.then(|| target.to_owned())
    })
}

/// Seconds since the Unix epoch.
pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Checks an absolute `http(s)` URL config value.
pub(crate) fn is_http_url(value: &str) -> bool {
    Url::parse(value).is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pkce_s256_matches_rfc7636_appendix_b() {
        assert_eq!(
            pkce_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }

    #[test]
    fn next_links_are_found_among_other_relations() {
        let h = r#"<https://api.github.com/user/teams?page=2>; rel="next", <https://api.github.com/user/teams?page=5>; rel="last""#;
        assert_eq!(next_link(h).as_deref(), Some("https://api.github.com/user/teams?page=2"));
        let h = r#"<https://x/a?page=1>; rel="prev", <https://x/a?page=1>; rel="first""#;
        assert_eq!(next_link(h), None);
        assert_eq!(next_link(r#"<https://x/b>; REL=next"#).as_deref(), Some("https://x/b"));
        assert_eq!(next_link("garbage"), None);
    }

    #[test]
    fn callback_errors_are_upstream_errors_and_a_missing_code_is_invalid() {
        let q = |pairs: &[(&str, &str)]| pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let denied = q(&[("error", "access_denied"), ("error_description", "The user has denied your application")]);
        match callback_code("GitHub", &denied) {
            Err(ConnectorError::Upstream(m)) => assert!(m.contains("access_denied"), "{m}"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(callback_code("GitHub", &q(&[("state", "s")])), Err(ConnectorError::InvalidCallback(_))));
        assert_eq!(callback_code("GitHub", &q(&[("code", "c")])).unwrap(), "c");
    }

    #[test]
    fn quotes_are_cut_and_cleaned() {
        assert_eq!(quote("a\nb"), "ab");
        assert_eq!(quote(&"x".repeat(500)).chars().count(), MAX_QUOTE + 1);
    }

    #[test]
    fn tokens_debug_hides_the_tokens() {
        let t = Tokens { access_token: "a2".into(), refresh_token: Some("r2".into()), expires_in: None };
        assert!(!format!("{t:?}").contains("a2") && !format!("{t:?}").contains("r2"));
    }
}
