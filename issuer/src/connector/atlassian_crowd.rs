//! The `atlassian-crowd` connector (Dex's keys): checks a username and password with Atlassian Crowd's
//! REST API (`/rest/usermanagement/1` under `baseURL`), authenticated as the Crowd application
//! (`clientID`/`clientSecret` in HTTP Basic), JSON both ways.
//!
//! Login: an empty password is refused before any request. `POST /authentication?username=…` with
//! `{"value": password}`: Crowd's `INVALID_USER_AUTHENTICATION` or `USER_NOT_FOUND` is a wrong password
//! (the form again), `INACTIVE_ACCOUNT` and `EXPIRED_CREDENTIAL` are refusals (403). Then the user
//! (`GET /user?username=…`: `key` is the user id, `name` the `name` claim, as in Dex) and its groups,
//! direct and nested (`GET /user/group/nested?username=…`, paged with `start-index`/`max-results` until a
//! short page). With `groups`, the user must be in at least one of them and only those are reported. The
//! username is URL-encoded in every request.
//!
//! Refresh: `GET /user` for the stored name. The user is gone → `None` (`invalid_grant`); not `active`, or
//! the name now belongs to another user (another `key`) → refused; groups are re-read and `groups` checked
//! again. Crowd unreachable, answering 5xx, or refusing the application's own credentials → `Unavailable`
//! (503), and the refresh token stays valid. (Dex also opens a Crowd SSO session at refresh; this issuer
//! does not use Crowd SSO sessions.)
//!
//! Not a Dex key: `groupsPageSize` (default 1000), the `max-results` of the group listing.

use async_trait::async_trait;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::json;

use super::tls::{self, Trust};
use super::{ConnectorError, PasswordConnector, RefreshConnector};
use crate::config::Problem;
use crate::storage::{ConnectorData, Identity};

/// `max-results` of one page of groups, unless `groupsPageSize` says otherwise.
const DEFAULT_GROUP_PAGE: usize = 1000;
/// At most this many pages of groups are read (a loop guard).
const MAX_PAGES: usize = 1000;

/// `config:` of an `atlassian-crowd` connector. `Debug` hides `clientSecret`.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Config {
    /// Crowd's URL including its context path, e.g. `https://crowd.example.com/crowd`.
    #[serde(rename = "baseURL")]
    pub base_url: String,
    /// The Crowd application's name.
    #[serde(rename = "clientID")]
    pub client_id: String,
    /// The Crowd application's password (or `clientSecretFile`).
    pub client_secret: String,
    /// Required groups: the user must be in one of them, and only these are reported.
    #[serde(default)]
    pub groups: Vec<String>,
    /// The login field's label (default "Username").
    #[serde(default)]
    pub username_prompt: Option<String>,
    /// `key`, `name` or `email`: the Crowd field for `preferred_username` (default: the `name` claim).
    #[serde(default)]
    pub preferred_username_field: Option<String>,
    /// Not a Dex key: `max-results` of one page of the group listing (default 1000).
    #[serde(default)]
    pub groups_page_size: Option<usize>,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("base_url", &self.base_url)
            .field("client_id", &self.client_id)
            .field("client_secret", &"<redacted>")
            .field("groups", &self.groups)
            .field("username_prompt", &self.username_prompt)
            .field("preferred_username_field", &self.preferred_username_field)
            .field("groups_page_size", &self.groups_page_size)
            .finish()
    }
}

impl Config {
    /// Checks what serde cannot: the URL, the application's credentials and the field names.
    pub fn validate(&mut self, key: &str, problems: &mut Vec<Problem>) {
        let mut problem = |k: &str, e: String| problems.push(Problem::new(format!("{key}.{k}"), e));
        let url_ok = url::Url::parse(&self.base_url).is_ok_and(|u| {
            matches!(u.scheme(), "http" | "https")
                && u.host().is_some()
                && u.query().is_none()
                && u.fragment().is_none()
        });
        if !url_ok {
            problem("baseURL", format!("Crowd's http(s) URL with its context path, got {:?}", self.base_url));
        }
        if self.client_id.trim().is_empty() {
            problem("clientID", "the Crowd application's name".into());
        }
        if self.client_secret.is_empty() {
            problem("clientSecret", "the Crowd application's password".into());
        }
        if let Some(f) = &self.preferred_username_field {
            if !matches!(f.as_str(), "key" | "name" | "email") {
                problem("preferredUsernameField", format!("\"key\", \"name\" or \"email\", got {f:?}"));
            }
        }
        if self.groups_page_size == Some(0) {
            problem("groupsPageSize", "a page size of at least 1".into());
        }
        if self.groups.iter().any(|g| g.is_empty()) {
            problem("groups", "group names, none empty".into());
        }
    }
}

/// What the connector keeps about a login, for refresh.
#[derive(serde::Serialize, Deserialize)]
struct Data {
    /// Crowd's `name` of the user.
    username: String,
}

/// A Crowd user entity.
#[derive(Deserialize)]
struct User {
    name: String,
    #[serde(default)]
    key: Option<String>,
    #[serde(default)]
    active: bool,
    #[serde(default)]
    email: Option<String>,
}

/// A Crowd error entity.
#[derive(Deserialize)]
struct CrowdError {
    #[serde(default)]
    reason: String,
}

/// `GET /user/group/nested`.
#[derive(Deserialize)]
struct Groups {
    #[serde(default)]
    groups: Vec<Group>,
}

#[derive(Deserialize)]
struct Group {
    name: String,
}

/// A Crowd answer: the status and the body.
struct Answer {
    status: reqwest::StatusCode,
    body: Vec<u8>,
}

impl Answer {
    fn json<T: DeserializeOwned>(&self, what: &str) -> Result<T, ConnectorError> {
        serde_json::from_slice(&self.body)
            .map_err(|_| ConnectorError::Upstream(format!("Crowd: unexpected answer to {what} ({})", self.status)))
    }

    fn reason(&self) -> String {
        serde_json::from_slice::<CrowdError>(&self.body).map(|e| e.reason).unwrap_or_default()
    }
}

/// An `atlassian-crowd` connector.
pub struct AtlassianCrowd {
    id: String,
    config: Config,
    api: String,
    prompt: String,
    page: usize,
    http: reqwest::Client,
}

impl std::fmt::Debug for AtlassianCrowd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AtlassianCrowd").field("id", &self.id).field("config", &self.config).finish_non_exhaustive()
    }
}

fn unavailable(why: impl std::fmt::Display) -> ConnectorError {
    ConnectorError::Unavailable(format!("Crowd: {why}"))
}

impl AtlassianCrowd {
    /// Prepares the connector.
    pub fn new(id: &str, config: Config) -> Result<Self, String> {
        let api = format!("{}/rest/usermanagement/1", config.base_url.trim_end_matches('/'));
        let prompt = config.username_prompt.clone().filter(|p| !p.is_empty()).unwrap_or_else(|| "Username".to_owned());
        Ok(Self {
            id: id.to_owned(),
            api,
            prompt,
            page: config.groups_page_size.unwrap_or(DEFAULT_GROUP_PAGE).max(1),
            http: tls::http_client(&Trust::default())?,
            config,
        })
    }

    /// One request to `{api}{path}` with `query` (URL-encoded) and an optional JSON body. Unreachable, 5xx,
    /// or the application's credentials refused → `Unavailable`; other answers are returned.
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        query: &[(&str, &str)],
        body: Option<serde_json::Value>,
    ) -> Result<Answer, ConnectorError> {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.api))
            .query(query)
            .basic_auth(&self.config.client_id, Some(&self.config.client_secret))
            .header(reqwest::header::ACCEPT, "application/json");
        if let Some(body) = body {
            request = request.json(&body);
        }
        let send = |e: reqwest::Error| {
            let unreachable = tls::unreachable(&e);
            // Without the URL: it holds the username.
            let text = e.without_url().to_string();
            if unreachable {
                unavailable(text)
            } else {
                ConnectorError::Upstream(format!("Crowd: {text}"))
            }
        };
        let r = request.send().await.map_err(send)?;
        let status = r.status();
        let body = r.bytes().await.map_err(send)?.to_vec();
        if status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS {
            return Err(unavailable(format!("{path} answered {status}")));
        }
        // 401: the application's name or password is wrong; 403: the application may not connect from here.
        // The operator's problem, not the user's: keep sessions and retry later.
        if status == reqwest::StatusCode::UNAUTHORIZED {
            return Err(unavailable(format!(
                "Crowd refused the application credentials (clientID {:?})",
                self.config.client_id
            )));
        }
        if status == reqwest::StatusCode::FORBIDDEN {
            return Err(unavailable(format!(
                "Crowd refused requests from the application {:?} (check its remote addresses)",
                self.config.client_id
            )));
        }
        Ok(Answer { status, body })
    }

    /// `POST /authentication`: `Ok(true)` when the password is right.
    async fn authenticate(&self, username: &str, password: &str) -> Result<bool, ConnectorError> {
        let a = self
            .call(
                reqwest::Method::POST,
                "/authentication",
                &[("username", username)],
                Some(json!({ "value": password })),
            )
            .await?;
        if a.status.is_success() {
            return Ok(true);
        }
        match a.reason().as_str() {
            "INVALID_USER_AUTHENTICATION" | "USER_NOT_FOUND" => Ok(false),
            "INACTIVE_ACCOUNT" => Err(ConnectorError::Refused { reason: "Crowd: the account is deactivated".into() }),
            "EXPIRED_CREDENTIAL" => Err(ConnectorError::Refused {
                reason: "Crowd: the password has expired; change it in Crowd first".into(),
            }),
            "" => Err(ConnectorError::Upstream(format!("Crowd: authentication answered {}", a.status))),
            other => Err(ConnectorError::Upstream(format!("Crowd: authentication answered {} ({other})", a.status))),
        }
    }

    /// `GET /user`: `None` when there is no such user.
    async fn user(&self, username: &str) -> Result<Option<User>, ConnectorError> {
        let a = self.call(reqwest::Method::GET, "/user", &[("username", username)], None).await?;
        if a.status == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !a.status.is_success() {
            return Err(ConnectorError::Upstream(format!("Crowd: user lookup answered {}", a.status)));
        }
        a.json("user lookup").map(Some)
    }

    /// Direct and nested groups, every page; `None` when the user is gone.
    async fn groups(&self, username: &str) -> Result<Option<Vec<String>>, ConnectorError> {
        let max = self.page.to_string();
        let mut out: Vec<String> = Vec::new();
        for page in 0..MAX_PAGES {
            let start = (page * self.page).to_string();
            let a = self
                .call(
                    reqwest::Method::GET,
                    "/user/group/nested",
                    &[("username", username), ("start-index", &start), ("max-results", &max)],
                    None,
                )
                .await?;
            if a.status == reqwest::StatusCode::NOT_FOUND {
                return Ok(None);
            }
            if !a.status.is_success() {
                return Err(ConnectorError::Upstream(format!("Crowd: group listing answered {}", a.status)));
            }
            let groups: Groups = a.json("group listing")?;
            let n = groups.groups.len();
            for g in groups.groups {
                if !out.contains(&g.name) {
                    out.push(g.name);
                }
            }
            if n < self.page {
                return Ok(Some(out));
            }
        }
        Err(ConnectorError::Upstream(format!("Crowd: more than {} groups", MAX_PAGES * self.page)))
    }

    /// The identity of an active user with its groups, `groups` checked; `None` when the user is gone.
    async fn identity(&self, user: User) -> Result<Option<Identity>, ConnectorError> {
        if !user.active {
            return Err(ConnectorError::Refused { reason: "Crowd: the account is deactivated".into() });
        }
        let Some(mut groups) = self.groups(&user.name).await? else { return Ok(None) };
        let required = &self.config.groups;
        if !required.is_empty() {
            groups.retain(|g| required.contains(g));
            if groups.is_empty() {
                return Err(ConnectorError::Refused {
                    reason: format!(
                        "Crowd: {} is not a member of any of the groups {}",
                        user.name,
                        required.join(", ")
                    ),
                });
            }
        }
        let key = user.key.filter(|k| !k.is_empty()).unwrap_or_else(|| user.name.clone());
        let email = user.email.unwrap_or_default();
        let preferred_username = match self.config.preferred_username_field.as_deref() {
            Some("key") => key.clone(),
            Some("name") => user.name.clone(),
            Some("email") => email.clone(),
            _ => String::new(),
        };
        Ok(Some(Identity {
            user_id: key,
            email_verified: !email.is_empty(),
            email,
            groups,
            connector_id: self.id.clone(),
            preferred_username,
            connector_data: Some(ConnectorData(json!(Data { username: user.name.clone() }))),
            username: user.name,
        }))
    }
}

#[async_trait]
impl PasswordConnector for AtlassianCrowd {
    async fn login(&self, login: &str, password: &str) -> Result<Option<Identity>, ConnectorError> {
        if login.is_empty() || password.is_empty() {
            return Ok(None);
        }
        if !self.authenticate(login, password).await? {
            return Ok(None);
        }
        // Authenticated a moment ago: a missing user now is a race with its deletion.
        let Some(user) = self.user(login).await? else { return Ok(None) };
        self.identity(user).await
    }

    fn prompt(&self) -> &str {
        &self.prompt
    }
}

#[async_trait]
impl RefreshConnector for AtlassianCrowd {
    async fn refresh(&self, identity: &Identity) -> Result<Option<Identity>, ConnectorError> {
        let data: Data =
            identity.connector_data.as_ref().and_then(|d| serde_json::from_value(d.0.clone()).ok()).ok_or_else(
                || ConnectorError::Refused { reason: "Crowd: the session predates this connector".into() },
            )?;
        let Some(user) = self.user(&data.username).await? else {
            return Ok(None);
        };
        let Some(fresh) = self.identity(user).await? else { return Ok(None) };
        if fresh.user_id != identity.user_id {
            return Err(ConnectorError::Refused {
                reason: format!("Crowd: {:?} now names another account", data.username),
            });
        }
        Ok(Some(fresh))
    }
}

#[async_trait]
impl super::Probe for AtlassianCrowd {
    /// The API answers (any status below 500).
    async fn probe(&self) -> Result<super::ProbeReport, ConnectorError> {
        tls::probe_http(
            &self.http,
            &format!("{}/config/cookie", self.api),
            Some((&self.config.client_id, &self.config.client_secret)),
            false,
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(yaml: &str) -> Config {
        serde_yaml::from_str(yaml).unwrap()
    }

    #[test]
    fn debug_hides_the_application_password() {
        let c = config("baseURL: https://crowd.example/crowd\nclientID: app\nclientSecret: app-pa55word\n");
        assert!(!format!("{c:?}").contains("app-pa55word"));
        let crowd = AtlassianCrowd::new("crowd", c).unwrap();
        assert!(!format!("{crowd:?}").contains("app-pa55word"));
        assert_eq!(crowd.api, "https://crowd.example/crowd/rest/usermanagement/1");
        assert_eq!(crowd.prompt(), "Username");
    }

    #[test]
    fn validation_names_the_keys() {
        let mut c = config(
            "baseURL: crowd.example\nclientID: ''\nclientSecret: ''\npreferredUsernameField: mail\ngroupsPageSize: 0\n",
        );
        let mut problems = Vec::new();
        c.validate("connectors[1].config", &mut problems);
        let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "connectors[1].config.baseURL",
                "connectors[1].config.clientID",
                "connectors[1].config.clientSecret",
                "connectors[1].config.preferredUsernameField",
                "connectors[1].config.groupsPageSize"
            ]
        );
    }

    #[tokio::test]
    async fn an_empty_password_never_reaches_crowd() {
        // Port 9 (discard) refuses connections: any request would be `Unavailable`, not `Ok(None)`.
        let c = config("baseURL: http://127.0.0.1:9\nclientID: app\nclientSecret: s\n");
        let crowd = AtlassianCrowd::new("crowd", c).unwrap();
        assert!(matches!(crowd.login("jane", "").await, Ok(None)));
        assert!(matches!(crowd.login("jane", "x").await, Err(ConnectorError::Unavailable(_))));
    }
}
