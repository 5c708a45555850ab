//! The `bitbucket-cloud` connector (Dex's keys): signs people in with Bitbucket Cloud's OAuth 2.0
//! (`https://bitbucket.org/site/oauth2/authorize`, then `/site/oauth2/access_token` with the client
//! credentials in HTTP Basic) and reads the user through the 2.0 REST API: `GET /2.0/user` (the stable
//! `uuid` is the user id; `username` is the `name`, as in Dex), `GET /2.0/user/emails` (the primary,
//! confirmed address; none → refused), and `GET /2.0/user/permissions/workspaces` (workspace slugs and the
//! user's permission in each). Paged responses are followed through the `next` URL of their body, only
//! while it stays under `apiURL` (the bearer token is never sent elsewhere).
//!
//! Groups: the workspaces the user can access; with `teams`, only those workspaces, and a user with access
//! to none of them is refused. `getWorkspacePermissions` adds `<workspace>:<permission>` (`owner`,
//! `collaborator` or `member`) for each of those workspaces. `includeTeamGroups` is accepted for Dex
//! configurations and has no effect (Dex read it from the removed 1.0 groups API; Dex ignores it too).
//!
//! Refresh: the stored Bitbucket refresh token is spent with Bitbucket's refresh grant (a new refresh token
//! in the answer replaces it), then the user, the email and the workspaces are read again with the new
//! access token, so a revoked grant, a deleted account (`invalid_grant` from Bitbucket) or a user who no
//! longer has access to any of `teams` is refused (`invalid_grant`), and workspace changes reach the new
//! tokens. Bitbucket unreachable or answering 5xx/429 → `Unavailable` (503); the refresh token stays valid
//! (when the refresh grant went through but the API then did not answer, the new Bitbucket refresh token is
//! returned with the error — [`ConnectorError::Interrupted`] — and the issuer stores it with the downstream
//! refresh token, so the next attempt, on any replica, starts from it).
//! Logins without `offline_access` keep no Bitbucket token.
//!
//! Not Dex keys: `authURL` (default `https://bitbucket.org`; the OAuth endpoints are under it) and `apiURL`
//! (default `https://api.bitbucket.org/2.0`) exist for tests against a local stand-in.

use std::collections::HashMap;

use async_trait::async_trait;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::json;

use super::tls::{self, Trust};
use super::{CallbackConnector, CallbackRequest, ConnectorError, RefreshConnector};
use crate::config::Problem;
use crate::storage::{ConnectorData, Identity};

/// Bitbucket Cloud's OAuth site.
const DEFAULT_AUTH_URL: &str = "https://bitbucket.org";
/// Bitbucket Cloud's REST API 2.0.
const DEFAULT_API_URL: &str = "https://api.bitbucket.org/2.0";
/// The scopes Dex asks for: `account` (`/user`, workspaces) and `email` (`/user/emails`).
const SCOPES: &str = "account email";
/// At most this many pages of one listing are read (a loop guard).
const MAX_PAGES: usize = 100;

/// `config:` of a `bitbucket-cloud` connector. `Debug` hides `clientSecret`.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Config {
    /// The OAuth consumer's key.
    #[serde(rename = "clientID")]
    pub client_id: String,
    /// The OAuth consumer's secret (or `clientSecretFile`).
    pub client_secret: String,
    /// `{issuer}/callback`, also the consumer's callback URL at Bitbucket (that value when absent).
    #[serde(default, rename = "redirectURI")]
    pub redirect_uri: Option<String>,
    /// Workspaces (slugs): the user must have access to at least one, and only these become groups.
    #[serde(default)]
    pub teams: Vec<String>,
    /// Accepted for Dex configurations; no effect (the 1.0 groups API it used was removed).
    #[serde(default)]
    pub include_team_groups: bool,
    /// Adds a `<workspace>:<permission>` group for each workspace.
    #[serde(default)]
    pub get_workspace_permissions: bool,
    /// Not a Dex key: the OAuth site (`…/site/oauth2/authorize`, `…/site/oauth2/access_token`), for tests.
    #[serde(default, rename = "authURL")]
    pub auth_url: Option<String>,
    /// Not a Dex key: the REST API 2.0 base (`…/user`), for tests.
    #[serde(default, rename = "apiURL")]
    pub api_url: Option<String>,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("client_id", &self.client_id)
            .field("client_secret", &"<redacted>")
            .field("redirect_uri", &self.redirect_uri)
            .field("teams", &self.teams)
            .field("include_team_groups", &self.include_team_groups)
            .field("get_workspace_permissions", &self.get_workspace_permissions)
            .field("auth_url", &self.auth_url)
            .field("api_url", &self.api_url)
            .finish()
    }
}

impl Config {
    /// Checks what serde cannot: non-empty credentials and absolute http(s) URLs.
    pub fn validate(&mut self, key: &str, problems: &mut Vec<Problem>) {
        let mut problem = |k: &str, e: String| problems.push(Problem::new(format!("{key}.{k}"), e));
        if self.client_id.trim().is_empty() {
            problem("clientID", "the OAuth consumer's key".into());
        }
        if self.client_secret.is_empty() {
            problem("clientSecret", "the OAuth consumer's secret".into());
        }
        for (k, v) in [("redirectURI", &self.redirect_uri), ("authURL", &self.auth_url), ("apiURL", &self.api_url)] {
            if let Some(v) = v {
                if !is_http_url(v) {
                    problem(k, format!("an absolute http(s) URL without query or fragment, got {v:?}"));
                }
            }
        }
        if self.teams.iter().any(|t| t.trim().is_empty()) {
            problem("teams", "workspace slugs, none empty".into());
        }
    }
}

fn is_http_url(s: &str) -> bool {
    url::Url::parse(s).is_ok_and(|u| {
        matches!(u.scheme(), "http" | "https") && u.host().is_some() && u.query().is_none() && u.fragment().is_none()
    })
}

/// What the connector keeps about a login with `offline_access`, for refresh.
#[derive(serde::Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Data {
    /// Bitbucket's refresh token.
    refresh_token: String,
}

/// `POST /site/oauth2/access_token`'s answer.
#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    #[serde(default)]
    refresh_token: Option<String>,
}

/// An OAuth 2.0 error answer (RFC 6749 §5.2).
#[derive(Deserialize)]
struct OAuthError {
    error: String,
    #[serde(default)]
    error_description: Option<String>,
}

/// `GET /2.0/user`.
#[derive(Deserialize)]
struct User {
    uuid: String,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    nickname: Option<String>,
    #[serde(default)]
    display_name: Option<String>,
}

/// One page of a 2.0 listing.
#[derive(Deserialize)]
struct Page<T> {
    #[serde(default = "Vec::new")]
    values: Vec<T>,
    #[serde(default)]
    next: Option<String>,
}

/// `GET /2.0/user/emails` values.
#[derive(Deserialize)]
struct Email {
    email: String,
    #[serde(default)]
    is_primary: bool,
    #[serde(default)]
    is_confirmed: bool,
}

/// `GET /2.0/user/permissions/workspaces` values.
#[derive(Deserialize)]
struct Membership {
    #[serde(default)]
    permission: String,
    workspace: Workspace,
}

#[derive(Deserialize)]
struct Workspace {
    slug: String,
}

/// A `bitbucket-cloud` connector.
pub struct BitbucketCloud {
    id: String,
    config: Config,
    redirect_uri: String,
    authorize_url: String,
    token_url: String,
    api_url: String,
    http: reqwest::Client,
}

impl std::fmt::Debug for BitbucketCloud {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BitbucketCloud").field("id", &self.id).field("config", &self.config).finish_non_exhaustive()
    }
}

fn unavailable(why: impl std::fmt::Display) -> ConnectorError {
    ConnectorError::Unavailable(format!("Bitbucket: {why}"))
}

/// A request that got no answer: unreachable (retry later) or unusable. reqwest's text without the URL.
fn send_error(e: reqwest::Error) -> ConnectorError {
    let unreachable = tls::unreachable(&e);
    let text = e.without_url().to_string();
    if unreachable {
        unavailable(text)
    } else {
        ConnectorError::Upstream(format!("Bitbucket: {text}"))
    }
}

impl BitbucketCloud {
    /// Prepares the connector; `callback` is the issuer's `{issuer}/callback`, which `redirectURI` must be.
    pub fn new(id: &str, config: Config, callback: &str) -> Result<Self, String> {
        let redirect_uri = config.redirect_uri.clone().unwrap_or_else(|| callback.to_owned());
        if redirect_uri != callback {
            return Err(format!("redirectURI must be the issuer's callback {callback:?}, got {redirect_uri:?}"));
        }
        if config.include_team_groups {
            tracing::warn!(connector = id, "bitbucket-cloud: includeTeamGroups has no effect (Bitbucket removed the 1.0 groups API); use getWorkspacePermissions");
        }
        let auth = config.auth_url.as_deref().unwrap_or(DEFAULT_AUTH_URL).trim_end_matches('/').to_owned();
        let api_url = config.api_url.as_deref().unwrap_or(DEFAULT_API_URL).trim_end_matches('/').to_owned();
        Ok(Self {
            id: id.to_owned(),
            redirect_uri,
            authorize_url: format!("{auth}/site/oauth2/authorize"),
            token_url: format!("{auth}/site/oauth2/access_token"),
            api_url,
            http: tls::http_client(&Trust::default())?,
            config,
        })
    }

    /// `POST /site/oauth2/access_token` with `form`. An OAuth error answer is returned as `Ok(Err(..))`.
    async fn token(&self, form: &[(&str, &str)]) -> Result<Result<TokenResponse, OAuthError>, ConnectorError> {
        let r = self
            .http
            .post(&self.token_url)
            .basic_auth(&self.config.client_id, Some(&self.config.client_secret))
            .header(reqwest::header::ACCEPT, "application/json")
            .form(form)
            .send()
            .await
            .map_err(send_error)?;
        let status = r.status();
        if status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS {
            return Err(unavailable(format!("the token endpoint answered {status}")));
        }
        let body = r.bytes().await.map_err(send_error)?;
        if status.is_success() {
            return serde_json::from_slice::<TokenResponse>(&body)
                .map(Ok)
                .map_err(|_| ConnectorError::Upstream("Bitbucket: the token endpoint's answer is not a token".into()));
        }
        match serde_json::from_slice::<OAuthError>(&body) {
            Ok(e) => Ok(Err(e)),
            Err(_) => Err(ConnectorError::Upstream(format!("Bitbucket: the token endpoint answered {status}"))),
        }
    }

    /// `GET url` with the bearer token, as JSON.
    async fn get<T: DeserializeOwned>(&self, url: &str, access_token: &str) -> Result<T, ConnectorError> {
        let r = self
            .http
            .get(url)
            .bearer_auth(access_token)
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(send_error)?;
        let status = r.status();
        let what = url.strip_prefix(&self.api_url).unwrap_or(url).split('?').next().unwrap_or_default().to_owned();
        if status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS {
            return Err(unavailable(format!("{what} answered {status}")));
        }
        if matches!(status.as_u16(), 401 | 403) {
            return Err(ConnectorError::Refused {
                reason: format!("Bitbucket: access to {what} was refused ({status})"),
            });
        }
        if !status.is_success() {
            return Err(ConnectorError::Upstream(format!("Bitbucket: {what} answered {status}")));
        }
        let body = r.bytes().await.map_err(send_error)?;
        serde_json::from_slice(&body)
            .map_err(|_| ConnectorError::Upstream(format!("Bitbucket: unexpected answer from {what}")))
    }

    /// Every value of a paged listing, following `next` while it stays under `apiURL`.
    async fn all<T: DeserializeOwned>(&self, path: &str, access_token: &str) -> Result<Vec<T>, ConnectorError> {
        let mut url = format!("{}{path}", self.api_url);
        let mut out = Vec::new();
        for _ in 0..MAX_PAGES {
            let page: Page<T> = self.get(&url, access_token).await?;
            out.extend(page.values);
            match page.next {
                None => return Ok(out),
                Some(next) if next.starts_with(&format!("{}/", self.api_url)) => url = next,
                Some(_) => {
                    return Err(ConnectorError::Upstream(format!(
                        "Bitbucket: the next page of {path} is not under the API URL"
                    )))
                }
            }
        }
        Err(ConnectorError::Upstream(format!("Bitbucket: {path} has more than {MAX_PAGES} pages")))
    }

    /// The identity behind `access_token`: user, primary confirmed email, workspaces (checked against `teams`).
    async fn identity(&self, access_token: &str, refresh_token: Option<String>) -> Result<Identity, ConnectorError> {
        let user: User = self.get(&format!("{}/user", self.api_url), access_token).await?;
        let name = [&user.username, &user.nickname, &user.display_name]
            .into_iter()
            .flatten()
            .find(|n| !n.is_empty())
            .cloned()
            .unwrap_or_else(|| user.uuid.clone());
        let emails: Vec<Email> = self.all("/user/emails", access_token).await?;
        let email = emails.into_iter().find(|e| e.is_primary && e.is_confirmed).map(|e| e.email).ok_or_else(|| {
            ConnectorError::Refused { reason: "Bitbucket: the account has no confirmed primary email address".into() }
        })?;
        let memberships: Vec<Membership> = self.all("/user/permissions/workspaces", access_token).await?;
        let groups = self.groups(&name, memberships)?;
        Ok(Identity {
            user_id: user.uuid,
            username: name,
            email,
            email_verified: true,
            groups,
            connector_id: self.id.clone(),
            preferred_username: String::new(),
            connector_data: refresh_token.map(|t| ConnectorData(json!(Data { refresh_token: t }))),
        })
    }

    /// Workspace slugs (only `teams` when set; none of them → refused), then `slug:permission` groups.
    fn groups(&self, name: &str, memberships: Vec<Membership>) -> Result<Vec<String>, ConnectorError> {
        let mut kept: Vec<Membership> = Vec::new();
        for m in memberships {
            let wanted = self.config.teams.is_empty() || self.config.teams.contains(&m.workspace.slug);
            if wanted && !kept.iter().any(|k| k.workspace.slug == m.workspace.slug) {
                kept.push(m);
            }
        }
        if !self.config.teams.is_empty() && kept.is_empty() {
            return Err(ConnectorError::Refused {
                reason: format!(
                    "Bitbucket: {name} has no access to any of the workspaces {}",
                    self.config.teams.join(", ")
                ),
            });
        }
        let mut groups: Vec<String> = kept.iter().map(|m| m.workspace.slug.clone()).collect();
        if self.config.get_workspace_permissions {
            groups.extend(
                kept.iter()
                    .filter(|m| !m.permission.is_empty())
                    .map(|m| format!("{}:{}", m.workspace.slug, m.permission)),
            );
        }
        Ok(groups)
    }
}

fn oauth_error_text(e: &OAuthError) -> String {
    match &e.error_description {
        Some(d) if !d.is_empty() => format!("{}: {d}", e.error),
        _ => e.error.clone(),
    }
}

#[async_trait]
impl CallbackConnector for BitbucketCloud {
    async fn login_url(&self, request: &CallbackRequest) -> Result<String, ConnectorError> {
        let mut url = url::Url::parse(&self.authorize_url).map_err(|e| ConnectorError::Upstream(e.to_string()))?;
        url.query_pairs_mut()
            .append_pair("client_id", &self.config.client_id)
            .append_pair("response_type", "code")
            .append_pair("redirect_uri", &self.redirect_uri)
            .append_pair("scope", SCOPES)
            .append_pair("state", &request.state);
        Ok(url.into())
    }

    async fn handle_callback(
        &self,
        request: &CallbackRequest,
        query: &HashMap<String, String>,
    ) -> Result<Identity, ConnectorError> {
        if let Some(error) = query.get("error") {
            let description = query.get("error_description").filter(|d| !d.is_empty());
            return Err(ConnectorError::Upstream(match description {
                Some(d) => format!("Bitbucket: {error}: {d}"),
                None => format!("Bitbucket: {error}"),
            }));
        }
        let Some(code) = query.get("code").filter(|c| !c.is_empty()) else {
            return Err(ConnectorError::Upstream("Bitbucket: the answer has no authorization code".into()));
        };
        let form =
            [("grant_type", "authorization_code"), ("code", code.as_str()), ("redirect_uri", &self.redirect_uri)];
        let token = match self.token(&form).await? {
            Ok(t) => t,
            Err(e) if e.error == "invalid_client" => {
                return Err(unavailable("the OAuth consumer's credentials (clientID/clientSecret) were refused"))
            }
            Err(e) => return Err(ConnectorError::Upstream(format!("Bitbucket: {}", oauth_error_text(&e)))),
        };
        let keep = if request.offline_access { token.refresh_token.clone() } else { None };
        self.identity(&token.access_token, keep).await
    }
}

#[async_trait]
impl RefreshConnector for BitbucketCloud {
    async fn refresh(&self, identity: &Identity) -> Result<Option<Identity>, ConnectorError> {
        let data: Data =
            identity.connector_data.as_ref().and_then(|d| serde_json::from_value(d.0.clone()).ok()).ok_or_else(
                || ConnectorError::Refused { reason: "Bitbucket: the session holds no Bitbucket refresh token".into() },
            )?;
        let current = data.refresh_token;
        let token = match self.token(&[("grant_type", "refresh_token"), ("refresh_token", &current)]).await? {
            Ok(t) => t,
            Err(e) if e.error == "invalid_grant" => {
                return Err(ConnectorError::Refused {
                    reason: "Bitbucket: the authorization was revoked or the account is gone".into(),
                })
            }
            // The operator's credentials, not the user: keep the session and retry later.
            Err(e) if e.error == "invalid_client" => {
                return Err(unavailable("the OAuth consumer's credentials (clientID/clientSecret) were refused"))
            }
            Err(e) => return Err(ConnectorError::Refused { reason: format!("Bitbucket: {}", oauth_error_text(&e)) }),
        };
        let refresh_token = token.refresh_token.clone().filter(|t| !t.is_empty()).unwrap_or(current);
        let fresh = match self.identity(&token.access_token, Some(refresh_token.clone())).await {
            Ok(f) => f,
            // The refresh grant spent the old refresh token: the next attempt starts from the new one.
            Err(ConnectorError::Unavailable(why)) => {
                return Err(ConnectorError::Interrupted { why, data: ConnectorData(json!(Data { refresh_token })) })
            }
            Err(e) => return Err(e),
        };
        if fresh.user_id != identity.user_id {
            return Err(ConnectorError::Refused {
                reason: "Bitbucket: the token now belongs to another account".into(),
            });
        }
        Ok(Some(fresh))
    }

    fn refresh_consumes_upstream_token(&self, identity: &Identity) -> bool {
        identity.connector_data.is_some()
    }
}

#[async_trait]
impl super::Probe for BitbucketCloud {
    /// The API answers (any status below 500).
    async fn probe(&self) -> Result<super::ProbeReport, ConnectorError> {
        tls::probe_http(&self.http, &self.api_url, None, false).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(yaml: &str) -> Config {
        serde_yaml::from_str(yaml).unwrap()
    }

    #[test]
    fn debug_hides_the_client_secret() {
        let c = config("clientID: id\nclientSecret: s3cr3t-value\n");
        let text = format!("{c:?}");
        assert!(!text.contains("s3cr3t-value"), "{text}");
        let b = BitbucketCloud::new("bb", c, "https://issuer.example/callback").unwrap();
        assert!(!format!("{b:?}").contains("s3cr3t-value"));
    }

    #[test]
    fn redirect_uri_must_be_the_issuer_callback() {
        let c = config("clientID: id\nclientSecret: s\nredirectURI: https://elsewhere.example/callback\n");
        assert!(BitbucketCloud::new("bb", c, "https://issuer.example/callback").is_err());
        let c = config("clientID: id\nclientSecret: s\n");
        let b = BitbucketCloud::new("bb", c, "https://issuer.example/callback").unwrap();
        assert_eq!(b.redirect_uri, "https://issuer.example/callback");
        assert_eq!(b.token_url, "https://bitbucket.org/site/oauth2/access_token");
        assert_eq!(b.api_url, "https://api.bitbucket.org/2.0");
    }

    #[test]
    fn validation_names_the_keys() {
        let mut c = config("clientID: ''\nclientSecret: ''\napiURL: 'ftp://x'\nteams: ['']\n");
        let mut problems = Vec::new();
        c.validate("connectors[0].config", &mut problems);
        let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "connectors[0].config.clientID",
                "connectors[0].config.clientSecret",
                "connectors[0].config.apiURL",
                "connectors[0].config.teams"
            ]
        );
    }

    #[test]
    fn groups_are_the_required_workspaces_then_permissions() {
        let m = |slug: &str, permission: &str| Membership {
            permission: permission.into(),
            workspace: Workspace { slug: slug.into() },
        };
        let c = config("clientID: id\nclientSecret: s\nteams: [acme, widgets]\ngetWorkspacePermissions: true\n");
        let b = BitbucketCloud::new("bb", c, "https://i/callback").unwrap();
        let groups = b.groups("jane", vec![m("other", "member"), m("widgets", "member"), m("acme", "owner")]).unwrap();
        assert_eq!(groups, ["widgets", "acme", "widgets:member", "acme:owner"]);
        assert!(matches!(b.groups("jane", vec![m("other", "owner")]), Err(ConnectorError::Refused { .. })));
        let c = config("clientID: id\nclientSecret: s\n");
        let b = BitbucketCloud::new("bb", c, "https://i/callback").unwrap();
        assert_eq!(b.groups("jane", vec![m("other", "member")]).unwrap(), ["other"]);
        assert!(b.groups("jane", vec![]).unwrap().is_empty(), "no teams: no workspace is fine");
    }

    #[tokio::test]
    async fn the_login_url_carries_state_unchanged() {
        let c = config("clientID: the-id\nclientSecret: s\nauthURL: 'http://127.0.0.1:1'\n");
        let b = BitbucketCloud::new("bb", c, "https://i.example/dex/callback").unwrap();
        let request = CallbackRequest {
            state: "req+1.bb".into(),
            nonce: "n".into(),
            pkce_verifier: "v".into(),
            offline_access: true,
        };
        let url = url::Url::parse(&b.login_url(&request).await.unwrap()).unwrap();
        assert_eq!(url.path(), "/site/oauth2/authorize");
        let q: HashMap<_, _> = url.query_pairs().into_owned().collect();
        assert_eq!(q["state"], "req+1.bb");
        assert_eq!(q["client_id"], "the-id");
        assert_eq!(q["redirect_uri"], "https://i.example/dex/callback");
        assert_eq!(q["response_type"], "code");
    }
}
