//! The `gitlab` connector (Dex's keys): signs people in with a GitLab (gitlab.com or self-managed) OAuth
//! application, and reads their groups.
//!
//! Login: the browser goes to `{baseURL}/oauth/authorize` with scopes `read_user openid`, `state` and a
//! PKCE `S256` challenge; the callback's code is exchanged at `{baseURL}/oauth/token`. The user comes from
//! `GET /api/v4/user`: `sub` is Dex's encoding of the numeric id (the username with `useLoginAsID`),
//! `name` the profile name (the email when empty), `preferred_username` the username, `email` the primary
//! address (verified, as Dex reports it). A `blocked`, `banned` or `deactivated` account is refused.
//! Groups are the `groups` claim of `GET /oauth/userinfo` (full paths of the user's direct groups); with
//! `getGroupsPermission`, `path:owner`, `path:maintainer` or `path:developer` is added for each group the
//! `https://gitlab.org/claims/groups/{owner,maintainer,developer}` claims grant that role in (directly or
//! through a parent group), as Dex does. With `groups` set, the list is cut to those groups (so a role entry
//! stays only when listed itself) and a user in none of them is refused.
//!
//! Refresh: needs the login to have asked for `offline_access`. GitLab's refresh grant is used (its refresh
//! tokens rotate: the new one replaces the old in connector data, and
//! [`RefreshConnector::refresh_consumes_upstream_token`] is true so the issuer sends one refresh per family
//! upstream), then the user and groups are read again. GitLab refusing the refresh token
//! (`invalid_grant`: revoked, or the application's authorization was removed) or the API refusing the new
//! token (401) → refused (`invalid_grant`); another user → refused; no longer in any of `groups` → refused;
//! GitLab unreachable, a 5xx or a rate limit → `Unavailable` (503), and the refresh token stays valid. When
//! the refresh grant succeeded but reading the user then failed, the new upstream tokens come back with the
//! error ([`ConnectorError::Interrupted`]) and the issuer stores them with its refresh token, so the retry
//! (on any replica) does not present the old, now revoked, refresh token.

use std::collections::{HashMap, HashSet};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::json;
use url::Url;

use super::code_flow::{self, ApiError, GrantError, Tokens};
use super::tls::{self, Trust};
use super::{CallbackConnector, CallbackRequest, ConnectorError, RefreshConnector};
use crate::config::Problem;
use crate::storage::{ConnectorData, Identity};

const PROVIDER: &str = "GitLab";
const DEFAULT_BASE_URL: &str = "https://gitlab.com";
const SCOPES: &str = "read_user openid";
/// GitLab's role claims in `/oauth/userinfo`, strongest first, and the suffix each adds.
const ROLE_CLAIMS: [(&str, &str); 3] = [
    ("https://gitlab.org/claims/groups/owner", "owner"),
    ("https://gitlab.org/claims/groups/maintainer", "maintainer"),
    ("https://gitlab.org/claims/groups/developer", "developer"),
];
/// Account states that end access (https://docs.gitlab.com/ee/api/users.html).
const REFUSED_STATES: &[&str] = &["blocked", "banned", "deactivated", "ldap_blocked", "blocked_pending_approval"];

/// `config:` of a `gitlab` connector.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Config {
    /// The GitLab instance, default `https://gitlab.com`.
    #[serde(default, rename = "baseURL")]
    pub base_url: Option<String>,
    /// The application's id.
    #[serde(rename = "clientID")]
    pub client_id: String,
    /// The application's secret (or `clientSecretFile`, or `$VAR`).
    pub client_secret: String,
    /// `{issuer}/callback`, as registered with the application.
    #[serde(rename = "redirectURI")]
    pub redirect_uri: String,
    /// Groups (full paths) of which the user must be in one; the groups claim is cut to them.
    #[serde(default)]
    pub groups: Vec<String>,
    /// Use the username instead of the numeric id as the user id.
    #[serde(default, rename = "useLoginAsID")]
    pub use_login_as_id: bool,
    /// Add `group:owner`, `group:maintainer`, `group:developer` entries.
    #[serde(default)]
    pub get_groups_permission: bool,
    /// CA to trust for a self-managed instance: base64 of the PEM (Dex's bytes), or the PEM itself.
    #[serde(default, rename = "rootCAData")]
    pub root_ca_data: Option<String>,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("base_url", &self.base_url)
            .field("client_id", &self.client_id)
            .field("client_secret", &"<redacted>")
            .field("redirect_uri", &self.redirect_uri)
            .field("groups", &self.groups)
            .field("use_login_as_id", &self.use_login_as_id)
            .field("get_groups_permission", &self.get_groups_permission)
            .field("root_ca_data", &self.root_ca_data.as_ref().map(|_| "<set>"))
            .finish()
    }
}

impl Config {
    /// Checks what serde cannot: required values, the base URL and the CA.
    pub fn validate(&mut self, key: &str, problems: &mut Vec<Problem>) {
        let mut problem = |k: &str, e: &str| problems.push(Problem::new(format!("{key}.{k}"), e));
        if self.client_id.is_empty() {
            problem("clientID", "the application's id");
        }
        if self.client_secret.is_empty() {
            problem("clientSecret", "the application's secret");
        }
        if !code_flow::is_http_url(&self.redirect_uri) {
            problem("redirectURI", "the issuer's callback URL, {issuer}/callback");
        }
        if let Err(e) = self.base() {
            problem("baseURL", &e);
        }
        if self.groups.iter().any(String::is_empty) {
            problem("groups", "group paths, none empty");
        }
        if let Err(e) = self.root_ca() {
            problem("rootCAData", &e);
        }
    }

    /// `baseURL` with a trailing slash, so that joining keeps a sub-path (`https://example.com/gitlab/`).
    fn base(&self) -> Result<Url, String> {
        let raw = self.base_url.as_deref().filter(|b| !b.is_empty()).unwrap_or(DEFAULT_BASE_URL);
        let expected = || "an http(s) URL such as https://gitlab.example.com, without query".to_owned();
        let mut url = Url::parse(raw).map_err(|_| expected())?;
        if !matches!(url.scheme(), "http" | "https") || url.host().is_none() || url.query().is_some() {
            return Err(expected());
        }
        if !url.path().ends_with('/') {
            let path = format!("{}/", url.path());
            url.set_path(&path);
        }
        Ok(url)
    }

    fn root_ca(&self) -> Result<Option<String>, String> {
        let Some(d) = self.root_ca_data.as_deref().map(str::trim) else { return Ok(None) };
        if d.starts_with("-----BEGIN") {
            return Ok(Some(d.to_owned()));
        }
        use base64::Engine as _;
        let pem = base64::engine::general_purpose::STANDARD
            .decode(d)
            .map_err(|_| "base64 of a PEM certificate (or the PEM itself)".to_owned())?;
        let pem = String::from_utf8(pem).map_err(|_| "base64 of a PEM certificate".to_owned())?;
        if !pem.contains("-----BEGIN") {
            return Err("base64 of a PEM certificate".into());
        }
        Ok(Some(pem))
    }
}

/// What the connector keeps about a login, for refresh. Holds tokens: never logged.
#[derive(Serialize, Deserialize)]
struct Data {
    access_token: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    refresh_token: Option<String>,
}

impl Data {
    fn from_tokens(t: &Tokens) -> Self {
        Data { access_token: t.access_token.clone(), refresh_token: t.refresh_token.clone().filter(|r| !r.is_empty()) }
    }

    fn of(identity: &Identity) -> Option<Self> {
        identity.connector_data.as_ref().and_then(|d| serde_json::from_value(d.0.clone()).ok())
    }
}

/// `GET /api/v4/user` (https://docs.gitlab.com/ee/api/users.html#list-current-user).
#[derive(Deserialize)]
struct User {
    id: u64,
    username: String,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    email: Option<String>,
    #[serde(default)]
    state: Option<String>,
}

/// `GET /oauth/userinfo` (https://docs.gitlab.com/ee/integration/openid_connect_provider.html).
#[derive(Deserialize)]
struct UserInfo {
    #[serde(default)]
    groups: Vec<String>,
    #[serde(flatten)]
    other: HashMap<String, serde_json::Value>,
}

impl UserInfo {
    fn role_paths(&self, claim: &str) -> Vec<String> {
        match self.other.get(claim) {
            Some(serde_json::Value::Array(a)) => a.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect(),
            _ => vec![],
        }
    }
}

/// A `gitlab` connector.
pub struct GitLab {
    id: String,
    config: Config,
    http: reqwest::Client,
    base: Url,
}

impl std::fmt::Debug for GitLab {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GitLab").field("id", &self.id).field("base", &self.base.as_str()).finish_non_exhaustive()
    }
}

impl GitLab {
    /// This issuer as GitLab's OAuth client.
    fn oauth_client(&self) -> code_flow::OAuthClient<'_> {
        code_flow::OAuthClient {
            provider: PROVIDER,
            client_id: &self.config.client_id,
            client_secret: &self.config.client_secret,
            redirect_uri: &self.config.redirect_uri,
        }
    }

    /// Prepares the connector (base URL and HTTP client); talks to GitLab only when someone signs in.
    pub fn new(id: &str, config: Config) -> Result<Self, String> {
        let base = config.base().map_err(|e| format!("baseURL: expected {e}"))?;
        let mut trust = Trust::default();
        if let Some(pem) = config.root_ca().map_err(|e| format!("rootCAData: expected {e}"))? {
            trust.root_cas.push(pem);
        }
        Ok(Self { id: id.to_owned(), http: tls::http_client(&trust)?, base, config })
    }

    fn url(&self, path: &str) -> Url {
        // `path` is a constant relative path; joining it to a valid base cannot fail.
        self.base.join(path).unwrap_or_else(|_| self.base.clone())
    }

    fn api_error(&self, what: &str, e: ApiError, refreshing: bool) -> ConnectorError {
        match e {
            ApiError::Status(401) if refreshing => ConnectorError::Refused {
                reason: "GitLab: the authorization was revoked (the access token is no longer accepted)".into(),
            },
            ApiError::Status(401) => {
                ConnectorError::Upstream("GitLab did not accept the access token it just issued".into())
            }
            ApiError::Status(403) => {
                ConnectorError::Refused { reason: format!("GitLab: access to {what} was denied (HTTP 403)") }
            }
            ApiError::Status(s) => ConnectorError::Upstream(format!("GitLab answered HTTP {s} for {what}")),
            ApiError::Failed(e) => e,
        }
    }

    fn grant_error(&self, e: GrantError, refreshing: bool) -> ConnectorError {
        match e {
            GrantError::Rejected(m) if refreshing => ConnectorError::Refused { reason: m },
            GrantError::Rejected(m) => ConnectorError::Upstream(m),
            GrantError::Misconfigured(m) if refreshing => ConnectorError::Unavailable(m),
            GrantError::Misconfigured(m) => ConnectorError::Upstream(m),
            GrantError::Failed(e) => e,
        }
    }

    /// The identity behind `token` (without connector data).
    async fn identity(&self, token: &str, refreshing: bool) -> Result<Identity, ConnectorError> {
        let (user, _): (User, _) = code_flow::get_json(&self.http, PROVIDER, &self.url("api/v4/user"), token, &[])
            .await
            .map_err(|e| self.api_error("/api/v4/user", e, refreshing))?;
        if let Some(state) = user.state.as_deref().filter(|s| REFUSED_STATES.contains(s)) {
            return Err(ConnectorError::Refused {
                reason: format!("GitLab: the account {} is {state}", user.username),
            });
        }
        let (info, _): (UserInfo, _) =
            code_flow::get_json(&self.http, PROVIDER, &self.url("oauth/userinfo"), token, &[])
                .await
                .map_err(|e| self.api_error("/oauth/userinfo", e, refreshing))?;
        let groups = self.groups(&user.username, &info)?;
        let email = user.email.unwrap_or_default();
        Ok(Identity {
            user_id: if self.config.use_login_as_id { user.username.clone() } else { user.id.to_string() },
            username: user.name.filter(|n| !n.is_empty()).unwrap_or_else(|| email.clone()),
            email_verified: !email.is_empty(),
            email,
            groups,
            connector_id: self.id.clone(),
            preferred_username: user.username,
            connector_data: None,
        })
    }

    fn groups(&self, username: &str, info: &UserInfo) -> Result<Vec<String>, ConnectorError> {
        let mut groups = info.groups.clone();
        if self.config.get_groups_permission {
            groups.extend(with_roles(info));
        }
        let mut seen = HashSet::new();
        groups.retain(|g| seen.insert(g.clone()));
        if self.config.groups.is_empty() {
            return Ok(groups);
        }
        groups.retain(|g| self.config.groups.contains(g));
        if groups.is_empty() {
            return Err(ConnectorError::Refused {
                reason: format!(
                    "GitLab: {username} is not a member of any of the required groups {}",
                    self.config.groups.join(", ")
                ),
            });
        }
        Ok(groups)
    }

    /// The tokens to refresh with: the successor of `refresh_token` (a refresh grant, or the one a
    /// failed refresh already obtained).
    async fn renew(&self, refresh_token: &str) -> Result<Tokens, ConnectorError> {
        let form = [
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
            ("redirect_uri", self.config.redirect_uri.as_str()),
            ("client_id", self.config.client_id.as_str()),
            ("client_secret", self.config.client_secret.as_str()),
        ];
        let t = code_flow::token_grant(&self.http, PROVIDER, &self.url("oauth/token"), &form)
            .await
            .map_err(|e| self.grant_error(e, true))?;
        Ok(t)
    }
}

/// Dex's role entries: `path:owner` / `path:maintainer` / `path:developer` for each group the role claims
/// name, or whose ancestor they name (the strongest role wins).
fn with_roles(info: &UserInfo) -> Vec<String> {
    let roles: Vec<(Vec<String>, &str)> =
        ROLE_CLAIMS.iter().map(|(claim, suffix)| (info.role_paths(claim), *suffix)).collect();
    info.groups
        .iter()
        .filter_map(|g| {
            roles
                .iter()
                .find(|(paths, _)| {
                    paths.iter().any(|p| g == p || g.strip_prefix(p.as_str()).is_some_and(|r| r.starts_with('/')))
                })
                .map(|(_, suffix)| format!("{g}:{suffix}"))
        })
        .collect()
}

#[async_trait]
impl CallbackConnector for GitLab {
    async fn login_url(&self, request: &CallbackRequest) -> Result<String, ConnectorError> {
        Ok(self.oauth_client().authorization_url(
            &self.url("oauth/authorize"),
            SCOPES,
            request,
            &[("response_type", "code")],
        ))
    }

    async fn handle_callback(
        &self,
        request: &CallbackRequest,
        query: &HashMap<String, String>,
    ) -> Result<Identity, ConnectorError> {
        let tokens = self
            .oauth_client()
            .redeem_code(&self.http, &self.url("oauth/token"), request, query)
            .await
            .map_err(|e| self.grant_error(e, false))?;
        let mut identity = self.identity(&tokens.access_token, false).await?;
        if request.offline_access {
            identity.connector_data = Some(ConnectorData(json!(Data::from_tokens(&tokens))));
        }
        Ok(identity)
    }
}

#[async_trait]
impl RefreshConnector for GitLab {
    async fn refresh(&self, identity: &Identity) -> Result<Option<Identity>, ConnectorError> {
        let data = Data::of(identity).ok_or_else(|| ConnectorError::Refused {
            reason: "GitLab: this session keeps no GitLab token; sign in again".into(),
        })?;
        let (data, rotated) = match &data.refresh_token {
            Some(old) => (Data::from_tokens(&self.renew(old).await?), true),
            None => (data, false),
        };
        let mut fresh = match self.identity(&data.access_token, true).await {
            Ok(f) => f,
            // GitLab revoked the old refresh token when it rotated: the next attempt starts from the new.
            Err(ConnectorError::Unavailable(why)) if rotated => {
                return Err(ConnectorError::Interrupted { why, data: ConnectorData(json!(data)) })
            }
            Err(e) => return Err(e),
        };
        if fresh.user_id != identity.user_id {
            return Err(ConnectorError::Refused { reason: "GitLab: the token now belongs to another user".into() });
        }
        fresh.connector_data = Some(ConnectorData(json!(data)));
        Ok(Some(fresh))
    }

    fn refresh_consumes_upstream_token(&self, identity: &Identity) -> bool {
        Data::of(identity).is_some_and(|d| d.refresh_token.is_some())
    }
}

#[async_trait]
impl super::Probe for GitLab {
    /// The API answers (any status below 500).
    async fn probe(&self) -> Result<super::ProbeReport, ConnectorError> {
        tls::probe_http(&self.http, self.base.as_str(), None, false).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "clientID: c\nclientSecret: s3cret\nredirectURI: https://id.example.com/callback\n";

    fn config(yaml: &str) -> Config {
        serde_yaml::from_str(&format!("{BASE}{yaml}")).unwrap()
    }

    fn problems(yaml: &str) -> Vec<String> {
        let mut p = Vec::new();
        config(yaml).validate("connectors[0].config", &mut p);
        p.into_iter().map(|p| p.key).collect()
    }

    fn info(json: serde_json::Value) -> UserInfo {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn endpoints_keep_a_sub_path_and_default_to_gitlab_com() {
        let g = GitLab::new("gitlab", config("")).unwrap();
        assert_eq!(g.url("oauth/token").as_str(), "https://gitlab.com/oauth/token");
        let g = GitLab::new("gitlab", config("baseURL: https://example.com/gitlab")).unwrap();
        assert_eq!(g.url("api/v4/user").as_str(), "https://example.com/gitlab/api/v4/user");
    }

    #[test]
    fn validation_names_the_keys() {
        assert!(problems("").is_empty());
        assert_eq!(problems("baseURL: gitlab.example.com"), ["connectors[0].config.baseURL"]);
        assert_eq!(problems("rootCAData: '%%%'"), ["connectors[0].config.rootCAData"]);
        assert_eq!(problems("rootCAData: aGVsbG8="), ["connectors[0].config.rootCAData"]);
        assert_eq!(problems("groups: ['']"), ["connectors[0].config.groups"]);
        assert!(serde_yaml::from_str::<Config>(&format!("{BASE}inheritedGroups: true")).is_err());
    }

    #[test]
    fn debug_hides_the_client_secret() {
        let text = format!("{:?}", config(""));
        assert!(!text.contains("s3cret"), "{text}");
    }

    #[test]
    fn roles_apply_to_the_group_and_its_subgroups_strongest_first() {
        let i = info(json!({
            "groups": ["ops", "ops/infra", "developers", "dev", "other"],
            "https://gitlab.org/claims/groups/owner": ["ops/infra"],
            "https://gitlab.org/claims/groups/maintainer": ["ops"],
            "https://gitlab.org/claims/groups/developer": ["dev"],
        }));
        assert_eq!(with_roles(&i), ["ops:maintainer", "ops/infra:owner", "dev:developer"]);
    }

    #[test]
    fn required_groups_cut_the_list_and_refuse_outsiders() {
        let g = GitLab::new("gitlab", config("groups: [ops, ops:owner]\ngetGroupsPermission: true")).unwrap();
        let i = info(json!({"groups": ["ops", "misc"], "https://gitlab.org/claims/groups/owner": ["ops"]}));
        assert_eq!(g.groups("jane", &i).unwrap(), ["ops", "ops:owner"]);
        match g.groups("jane", &info(json!({"groups": ["misc"]}))) {
            Err(ConnectorError::Refused { reason }) => assert!(reason.contains("ops, ops:owner"), "{reason}"),
            other => panic!("{other:?}"),
        }
        let all = GitLab::new("gitlab", config("")).unwrap();
        assert_eq!(all.groups("jane", &i).unwrap(), ["ops", "misc"]);
    }
}
