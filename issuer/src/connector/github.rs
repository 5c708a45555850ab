//! The `github` connector (Dex's keys): signs people in with a GitHub (or GitHub Enterprise Server) OAuth
//! App, and reads their organizations and teams as groups.
//!
//! Login: the browser goes to `/login/oauth/authorize` with scopes `user:email` (and `read:org` when groups
//! are read), `state` and a PKCE `S256` challenge; the callback's code is exchanged at
//! `/login/oauth/access_token`. The user comes from `GET /user`: `sub` is Dex's encoding of the numeric id
//! (the login with `useLoginAsID`), `name` the profile name (the login when empty), `preferred_username`
//! the login. The email is the public one on `/user`, or otherwise (and always with
//! `preferredEmailDomain`) the primary verified address of `/user/emails`, or the first verified one in
//! `preferredEmailDomain` (`*.example.com` matches one label). Every list endpoint is read to its last
//! page (`Link: <…>; rel="next"`), never following a link off the API's origin.
//!
//! Groups, as Dex forms them:
//! - `orgs: [{name, teams}]`: for each org the user is a member of (`GET /orgs/{org}/members/{login}`),
//!   `org:team` for their teams there (only the listed `teams` when given). A user in none of the orgs, or
//!   only in orgs whose listed teams they are not in, is refused with a reason naming the orgs.
//! - `org` (Dex's legacy single org): the user's team names in that org, without the org prefix. Dex lets
//!   non-members of `org` in; this issuer refuses them (the same rule as `orgs: [{name: org}]`).
//! - `loadAllGroups` without `orgs`/`org`: every org of `/user/orgs` by itself, and `org:team` for every team.
//! - otherwise no groups.
//!
//! `teamNameField` picks the team's `name` (default), `slug`, or `both`.
//!
//! Refresh: needs the login to have asked for `offline_access` (the access token is kept in connector data
//! only then). The user and groups are read again with the stored access token (a GitHub App's expiring
//! token is first renewed with its refresh token, which GitHub rotates). A revoked token (401) or a refresh
//! token GitHub no longer accepts → refused (`invalid_grant`); another user behind the token → refused; a
//! user no longer in a required org or team → refused; GitHub unreachable, a 5xx or a rate limit →
//! `Unavailable` (503) and the refresh token stays valid.
//!
//! GitHub Enterprise Server: `hostName: ghe.example.com` uses `https://ghe.example.com/login/oauth/…` and
//! the API at `https://ghe.example.com/api/v3` (and treats every address as verified, as Dex does: GHES
//! has no email verification), with `rootCA` to trust a private CA. Not in Dex: `hostName` may carry a
//! scheme (`https://ghe.example.com:8443`, or `http://` for a loopback address only), which is how the
//! tests point the connector at a local stand-in.

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

const PROVIDER: &str = "GitHub";
/// The REST API version the connector was written against.
const API_HEADERS: &[(&str, &str)] =
    &[("accept", "application/vnd.github+json"), ("x-github-api-version", "2022-11-28")];
/// Renew an expiring access token this long before it expires.
const EXPIRY_MARGIN: u64 = 60;

/// `config:` of a `github` connector.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Config {
    /// The OAuth App's client id.
    #[serde(rename = "clientID")]
    pub client_id: String,
    /// The OAuth App's client secret (or `clientSecretFile`, or `$VAR`).
    pub client_secret: String,
    /// `{issuer}/callback`, as registered with the OAuth App.
    #[serde(rename = "redirectURI")]
    pub redirect_uri: String,
    /// Required organizations, each optionally narrowed to teams.
    #[serde(default)]
    pub orgs: Vec<Org>,
    /// Dex's legacy single organization (groups are its bare team names).
    #[serde(default)]
    pub org: Option<String>,
    /// Without `orgs`/`org`: every org and team of the user as groups.
    #[serde(default)]
    pub load_all_groups: bool,
    /// `name` (default), `slug` or `both`.
    #[serde(default)]
    pub team_name_field: Option<String>,
    /// Use the login instead of the numeric id as the user id.
    #[serde(default, rename = "useLoginAsID")]
    pub use_login_as_id: bool,
    /// Prefer a verified address in this domain (`*.example.com` matches one label).
    #[serde(default)]
    pub preferred_email_domain: Option<String>,
    /// GitHub Enterprise Server host (see the module documentation for the scheme extension).
    #[serde(default)]
    pub host_name: Option<String>,
    /// PEM file of the CA that signed the Enterprise server's certificate.
    #[serde(default, rename = "rootCA")]
    pub root_ca: Option<String>,
}

/// `orgs[]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Org {
    /// The organization's login.
    pub name: String,
    /// Teams (by `teamNameField`) of which the user must be in one; any member of the org when empty.
    #[serde(default)]
    pub teams: Vec<String>,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("client_id", &self.client_id)
            .field("client_secret", &"<redacted>")
            .field("redirect_uri", &self.redirect_uri)
            .field("orgs", &self.orgs)
            .field("org", &self.org)
            .field("load_all_groups", &self.load_all_groups)
            .field("team_name_field", &self.team_name_field)
            .field("use_login_as_id", &self.use_login_as_id)
            .field("preferred_email_domain", &self.preferred_email_domain)
            .field("host_name", &self.host_name)
            .field("root_ca", &self.root_ca)
            .finish()
    }
}

/// Which of a team's names become groups.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TeamName {
    Name,
    Slug,
    Both,
}

impl Config {
    /// Checks what serde cannot: required values, exclusive keys, the host name and the CA file.
    pub fn validate(&mut self, key: &str, problems: &mut Vec<Problem>) {
        let mut problem = |k: &str, e: &str| problems.push(Problem::new(format!("{key}.{k}"), e));
        if self.client_id.is_empty() {
            problem("clientID", "the OAuth App's client id");
        }
        if self.client_secret.is_empty() {
            problem("clientSecret", "the OAuth App's client secret");
        }
        if !code_flow::is_http_url(&self.redirect_uri) {
            problem("redirectURI", "the issuer's callback URL, {issuer}/callback");
        }
        if self.org.is_some() && !self.orgs.is_empty() {
            problem("org", "either org (legacy) or orgs, not both");
        }
        if self.org.as_deref() == Some("") {
            problem("org", "an organization name");
        }
        for (i, o) in self.orgs.iter().enumerate() {
            if o.name.is_empty() {
                problem(&format!("orgs[{i}].name"), "an organization name");
            }
        }
        if self.team_name().is_none() {
            problem("teamNameField", "\"name\", \"slug\" or \"both\"");
        }
        if self.preferred_email_domain.as_deref().is_some_and(|d| d.is_empty() || d.ends_with('*')) {
            problem("preferredEmailDomain", "a domain such as example.com or *.example.com (not ending in *)");
        }
        if let Some(h) = &self.host_name {
            if let Err(e) = host_base(h) {
                problem("hostName", &e);
            }
        }
        if let Some(f) = &self.root_ca {
            if self.host_name.is_none() {
                problem("rootCA", "hostName as well (rootCA is for GitHub Enterprise Server)");
            } else if !std::path::Path::new(f).is_file() {
                problem("rootCA", &format!("an existing PEM file, got {f:?}"));
            }
        }
    }

    fn team_name(&self) -> Option<TeamName> {
        match self.team_name_field.as_deref() {
            None | Some("" | "name") => Some(TeamName::Name),
            Some("slug") => Some(TeamName::Slug),
            Some("both") => Some(TeamName::Both),
            Some(_) => None,
        }
    }

    /// Whether groups are read at all (and so `read:org` is asked for).
    fn reads_groups(&self) -> bool {
        !self.orgs.is_empty() || self.org.is_some() || self.load_all_groups
    }
}

/// `https://{hostName}`, or `hostName` itself when it has a scheme (`http://` only for loopback).
fn host_base(host: &str) -> Result<Url, String> {
    let expected = "a host name such as ghe.example.com (or https://host:port), without a path";
    let with_scheme = host.contains("://");
    let url = Url::parse(&if with_scheme { host.to_owned() } else { format!("https://{host}") })
        .map_err(|_| expected.to_owned())?;
    let bare = url.path() == "/" && url.query().is_none() && url.fragment().is_none() && url.username().is_empty();
    if !bare || (!with_scheme && host.contains('/')) || url.host().is_none() {
        return Err(expected.into());
    }
    match url.scheme() {
        "https" => Ok(url),
        "http" if is_loopback(&url) => Ok(url),
        "http" => Err("https:// (plain http:// is only accepted for a loopback address)".into()),
        _ => Err(expected.into()),
    }
}

fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d == "localhost",
        Some(url::Host::Ipv4(a)) => a.is_loopback(),
        Some(url::Host::Ipv6(a)) => a.is_loopback(),
        None => false,
    }
}

/// What the connector keeps about a login, for refresh. Holds tokens: never logged.
#[derive(Serialize, Deserialize)]
struct Data {
    access_token: String,
    /// A GitHub App's refresh token for its expiring access tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    refresh_token: Option<String>,
    /// When `access_token` expires (Unix seconds), for expiring tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    expires_at: Option<u64>,
}

impl Data {
    fn from_tokens(t: &Tokens) -> Self {
        Data {
            access_token: t.access_token.clone(),
            refresh_token: t.refresh_token.clone().filter(|r| !r.is_empty()),
            expires_at: t.expires_in.map(|s| code_flow::unix_now() + s),
        }
    }
}

/// `GET /user` (https://docs.github.com/en/rest/users/users#get-the-authenticated-user).
#[derive(Deserialize)]
struct User {
    id: u64,
    login: String,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    email: Option<String>,
}

/// `GET /user/emails` items.
#[derive(Deserialize)]
struct Email {
    email: String,
    #[serde(default)]
    verified: bool,
    #[serde(default)]
    primary: bool,
}

/// `GET /user/teams` items.
#[derive(Deserialize)]
struct Team {
    name: String,
    slug: String,
    organization: OrgRef,
}

/// An organization as lists show it.
#[derive(Deserialize)]
struct OrgRef {
    login: String,
}

/// A `github` connector.
pub struct GitHub {
    id: String,
    config: Config,
    http: reqwest::Client,
    authorize: Url,
    token: Url,
    api: Url,
    enterprise: bool,
    team_name: TeamName,
}

impl std::fmt::Debug for GitHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GitHub").field("id", &self.id).field("api", &self.api.as_str()).finish_non_exhaustive()
    }
}

/// Endpoints: github.com, or an Enterprise host.
fn endpoints(host: Option<&str>) -> Result<(Url, Url, Url), String> {
    let parse = |s: &str| Url::parse(s).map_err(|e| format!("{s}: {e}"));
    match host {
        None => Ok((
            parse("https://github.com/login/oauth/authorize")?,
            parse("https://github.com/login/oauth/access_token")?,
            parse("https://api.github.com/")?,
        )),
        Some(h) => {
            let base = host_base(h).map_err(|e| format!("hostName: expected {e}"))?;
            let join = |p: &str| base.join(p).map_err(|e| format!("hostName: {e}"));
            Ok((join("login/oauth/authorize")?, join("login/oauth/access_token")?, join("api/v3/")?))
        }
    }
}

impl GitHub {
    /// This issuer as GitHub's OAuth client.
    fn oauth_client(&self) -> code_flow::OAuthClient<'_> {
        code_flow::OAuthClient {
            provider: PROVIDER,
            client_id: &self.config.client_id,
            client_secret: &self.config.client_secret,
            redirect_uri: &self.config.redirect_uri,
        }
    }

    /// Prepares the connector (endpoints and HTTP client); talks to GitHub only when someone signs in.
    pub fn new(id: &str, config: Config) -> Result<Self, String> {
        let (authorize, token, api) = endpoints(config.host_name.as_deref())?;
        let mut trust = Trust::default();
        if let Some(f) = &config.root_ca {
            trust.root_cas.push(tls::read_pem("rootCA", f)?);
        }
        let team_name = config.team_name().ok_or("teamNameField: expected name, slug or both")?;
        Ok(Self {
            id: id.to_owned(),
            http: tls::http_client(&trust)?,
            authorize,
            token,
            api,
            enterprise: config.host_name.is_some(),
            team_name,
            config,
        })
    }

    fn scopes(&self) -> &'static str {
        if self.config.reads_groups() {
            "user:email read:org"
        } else {
            "user:email"
        }
    }

    /// `{api}/a/b` with each segment escaped.
    fn api_url(&self, segments: &[&str]) -> Url {
        let mut url = self.api.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        url
    }

    /// A list endpoint's first page, asking for the largest page GitHub allows.
    fn list_url(&self, segments: &[&str]) -> Url {
        let mut url = self.api_url(segments);
        url.query_pairs_mut().append_pair("per_page", "100");
        url
    }

    /// An API status as a connector error; `refreshing` says whether a stored token was used.
    fn status_error(&self, what: &str, status: u16, refreshing: bool) -> ConnectorError {
        match status {
            401 if refreshing => ConnectorError::Refused {
                reason: "GitHub: the authorization was revoked (the access token is no longer accepted)".into(),
            },
            401 => ConnectorError::Upstream("GitHub did not accept the access token it just issued".into()),
            403 => ConnectorError::Refused { reason: format!("GitHub: access to {what} was denied (HTTP 403)") },
            s => ConnectorError::Upstream(format!("GitHub answered HTTP {s} for {what}")),
        }
    }

    fn api_error(&self, what: &str, e: ApiError, refreshing: bool) -> ConnectorError {
        match e {
            ApiError::Status(s) => self.status_error(what, s, refreshing),
            ApiError::Failed(e) => e,
        }
    }

    async fn list<T: serde::de::DeserializeOwned>(
        &self,
        token: &str,
        segments: &[&str],
        refreshing: bool,
    ) -> Result<Vec<T>, ConnectorError> {
        let url = self.list_url(segments);
        code_flow::get_all(&self.http, PROVIDER, url, token, API_HEADERS)
            .await
            .map_err(|e| self.api_error(&format!("/{}", segments.join("/")), e, refreshing))
    }

    /// The identity behind `token` (without connector data).
    async fn identity(&self, token: &str, refreshing: bool) -> Result<Identity, ConnectorError> {
        let url = self.api_url(&["user"]);
        let (user, _): (User, _) = code_flow::get_json(&self.http, PROVIDER, &url, token, API_HEADERS)
            .await
            .map_err(|e| self.api_error("/user", e, refreshing))?;
        let public = user.email.clone().filter(|e| !e.is_empty());
        let email = match public {
            Some(e) if self.config.preferred_email_domain.is_none() => e,
            _ => {
                let emails: Vec<Email> = self.list(token, &["user", "emails"], refreshing).await?;
                choose_email(&emails, self.enterprise, self.config.preferred_email_domain.as_deref()).ok_or_else(
                    || ConnectorError::Refused {
                        reason: format!("GitHub: {} has no verified primary email address", user.login),
                    },
                )?
            }
        };
        let groups = self.groups(token, &user.login, refreshing).await?;
        Ok(Identity {
            user_id: if self.config.use_login_as_id { user.login.clone() } else { user.id.to_string() },
            username: user.name.filter(|n| !n.is_empty()).unwrap_or_else(|| user.login.clone()),
            email,
            email_verified: true,
            groups,
            connector_id: self.id.clone(),
            preferred_username: user.login,
            connector_data: None,
        })
    }

    /// Whether `login` is a member of `org` (204 yes; 404, or 302 when the token cannot see the members, no).
    async fn is_member(&self, token: &str, org: &str, login: &str, refreshing: bool) -> Result<bool, ConnectorError> {
        let url = self.api_url(&["orgs", org, "members", login]);
        let r = code_flow::get(&self.http, PROVIDER, &url, token, API_HEADERS).await?;
        match r.status().as_u16() {
            204 => Ok(true),
            302 | 404 => Ok(false),
            s => Err(self.status_error(&format!("the members of {org}"), s, refreshing)),
        }
    }

    fn team_claims(&self, team: &Team) -> Vec<String> {
        match self.team_name {
            TeamName::Name => vec![team.name.clone()],
            TeamName::Slug => vec![team.slug.clone()],
            TeamName::Both => vec![team.name.clone(), team.slug.clone()],
        }
    }

    async fn groups(&self, token: &str, login: &str, refreshing: bool) -> Result<Vec<String>, ConnectorError> {
        let c = &self.config;
        if !c.orgs.is_empty() {
            let mut teams: Option<Vec<Team>> = None;
            let mut groups = Vec::new();
            let mut admitted = false;
            for org in &c.orgs {
                if !self.is_member(token, &org.name, login, refreshing).await? {
                    continue;
                }
                if teams.is_none() {
                    teams = Some(self.list(token, &["user", "teams"], refreshing).await?);
                }
                let mut claims: Vec<String> = teams
                    .iter()
                    .flatten()
                    .filter(|t| t.organization.login == org.name)
                    .flat_map(|t| self.team_claims(t))
                    .collect();
                if org.teams.is_empty() {
                    admitted = true;
                } else {
                    claims.retain(|t| org.teams.contains(t));
                }
                admitted |= !claims.is_empty();
                groups.extend(claims.into_iter().map(|t| format!("{}:{t}", org.name)));
            }
            if !admitted {
                return Err(ConnectorError::Refused { reason: refusal(login, &c.orgs) });
            }
            return Ok(dedup(groups));
        }
        if let Some(org) = &c.org {
            if !self.is_member(token, org, login, refreshing).await? {
                return Err(ConnectorError::Refused {
                    reason: format!("GitHub: {login} is not a member of the organization {org}"),
                });
            }
            let teams: Vec<Team> = self.list(token, &["user", "teams"], refreshing).await?;
            let claims = teams.iter().filter(|t| &t.organization.login == org).flat_map(|t| self.team_claims(t));
            return Ok(dedup(claims.collect()));
        }
        if c.load_all_groups {
            let orgs: Vec<OrgRef> = self.list(token, &["user", "orgs"], refreshing).await?;
            let teams: Vec<Team> = self.list(token, &["user", "teams"], refreshing).await?;
            let mut groups = Vec::new();
            for o in &orgs {
                groups.push(o.login.clone());
                for t in teams.iter().filter(|t| t.organization.login == o.login) {
                    groups.extend(self.team_claims(t).into_iter().map(|n| format!("{}:{n}", o.login)));
                }
            }
            return Ok(dedup(groups));
        }
        Ok(vec![])
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

    /// Renews an expiring GitHub App token with its refresh token (or reuses the successor of a renewal
    /// whose refresh then failed).
    async fn renew(&self, refresh_token: &str) -> Result<Tokens, ConnectorError> {
        let form = [
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
            ("client_id", self.config.client_id.as_str()),
            ("client_secret", self.config.client_secret.as_str()),
        ];
        let t = code_flow::token_grant(&self.http, PROVIDER, &self.token, &form)
            .await
            .map_err(|e| self.grant_error(e, true))?;
        Ok(t)
    }
}

/// The address to use: the first verified one in `preferred` (when set), else the verified primary one.
/// GitHub Enterprise Server has no verification, so there every address counts as verified (as in Dex).
fn choose_email(emails: &[Email], enterprise: bool, preferred: Option<&str>) -> Option<String> {
    let verified = |e: &&Email| enterprise || e.verified;
    if let Some(domain) = preferred {
        let found = emails
            .iter()
            .filter(verified)
            .find(|e| e.email.rsplit_once('@').is_some_and(|(_, d)| domain_matches(domain, d)));
        if let Some(e) = found {
            return Some(e.email.clone());
        }
    }
    emails.iter().filter(verified).find(|e| e.primary).map(|e| e.email.clone())
}

/// `preferredEmailDomain` matching: equal, or equal label by label with `*` matching any one label.
fn domain_matches(pattern: &str, domain: &str) -> bool {
    if pattern.eq_ignore_ascii_case(domain) {
        return true;
    }
    let (p, d): (Vec<&str>, Vec<&str>) = (pattern.split('.').collect(), domain.split('.').collect());
    p.len() == d.len() && p.iter().zip(&d).all(|(p, d)| *p == "*" || p.eq_ignore_ascii_case(d))
}

fn refusal(login: &str, orgs: &[Org]) -> String {
    let parts: Vec<String> = orgs
        .iter()
        .map(|o| if o.teams.is_empty() { o.name.clone() } else { format!("{} (teams {})", o.name, o.teams.join(", ")) })
        .collect();
    format!("GitHub: {login} is not a member of any of the required organizations and teams: {}", parts.join(", "))
}

fn dedup(mut v: Vec<String>) -> Vec<String> {
    let mut seen = HashSet::new();
    v.retain(|g| seen.insert(g.clone()));
    v
}

#[async_trait]
impl CallbackConnector for GitHub {
    async fn login_url(&self, request: &CallbackRequest) -> Result<String, ConnectorError> {
        Ok(self.oauth_client().authorization_url(&self.authorize, self.scopes(), request, &[]))
    }

    async fn handle_callback(
        &self,
        request: &CallbackRequest,
        query: &HashMap<String, String>,
    ) -> Result<Identity, ConnectorError> {
        let tokens = self
            .oauth_client()
            .redeem_code(&self.http, &self.token, request, query)
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
impl RefreshConnector for GitHub {
    async fn refresh(&self, identity: &Identity) -> Result<Option<Identity>, ConnectorError> {
        let mut data: Data =
            identity.connector_data.as_ref().and_then(|d| serde_json::from_value(d.0.clone()).ok()).ok_or_else(
                || ConnectorError::Refused {
                    reason: "GitHub: this session keeps no GitHub token; sign in again".into(),
                },
            )?;
        let rotated = match (&data.refresh_token, data.expires_at) {
            (Some(r), Some(at)) if at <= code_flow::unix_now() + EXPIRY_MARGIN => {
                data = Data::from_tokens(&self.renew(r).await?);
                true
            }
            _ => false,
        };
        let mut fresh = match self.identity(&data.access_token, true).await {
            Ok(f) => f,
            // GitHub spent the old refresh token when it renewed: the next attempt starts from the new.
            Err(ConnectorError::Unavailable(why)) if rotated => {
                return Err(ConnectorError::Interrupted { why, data: ConnectorData(json!(data)) })
            }
            Err(e) => return Err(e),
        };
        if fresh.user_id != identity.user_id {
            return Err(ConnectorError::Refused { reason: "GitHub: the token now belongs to another user".into() });
        }
        fresh.connector_data = Some(ConnectorData(json!(data)));
        Ok(Some(fresh))
    }

    fn refresh_consumes_upstream_token(&self, identity: &Identity) -> bool {
        identity
            .connector_data
            .as_ref()
            .and_then(|d| serde_json::from_value::<Data>(d.0.clone()).ok())
            .is_some_and(|d| d.refresh_token.is_some())
    }
}

#[async_trait]
impl super::Probe for GitHub {
    /// The API answers (any status below 500).
    async fn probe(&self) -> Result<super::ProbeReport, ConnectorError> {
        tls::probe_http(&self.http, self.api.as_str(), None, false).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(yaml: &str) -> Config {
        serde_yaml::from_str(yaml).unwrap()
    }

    const BASE: &str = "clientID: c\nclientSecret: s3cret\nredirectURI: https://id.example.com/callback\n";

    fn problems(yaml: &str) -> Vec<String> {
        let mut c = config(&format!("{BASE}{yaml}"));
        let mut p = Vec::new();
        c.validate("connectors[0].config", &mut p);
        p.into_iter().map(|p| p.key).collect()
    }

    #[test]
    fn endpoints_follow_the_host_name() {
        let (a, t, api) = endpoints(None).unwrap();
        assert_eq!(a.as_str(), "https://github.com/login/oauth/authorize");
        assert_eq!(t.as_str(), "https://github.com/login/oauth/access_token");
        assert_eq!(api.as_str(), "https://api.github.com/");
        let (a, _, api) = endpoints(Some("ghe.example.com")).unwrap();
        assert_eq!(a.as_str(), "https://ghe.example.com/login/oauth/authorize");
        assert_eq!(api.as_str(), "https://ghe.example.com/api/v3/");
        let (_, t, api) = endpoints(Some("http://127.0.0.1:9000")).unwrap();
        assert_eq!(t.as_str(), "http://127.0.0.1:9000/login/oauth/access_token");
        assert_eq!(api.as_str(), "http://127.0.0.1:9000/api/v3/");
        let g = GitHub::new("github", config(&format!("{BASE}hostName: ghe.example.com"))).unwrap();
        assert_eq!(
            g.api_url(&["orgs", "a b", "members", "x/y"]).as_str(),
            "https://ghe.example.com/api/v3/orgs/a%20b/members/x%2Fy"
        );
        assert_eq!(g.list_url(&["user", "teams"]).as_str(), "https://ghe.example.com/api/v3/user/teams?per_page=100");
    }

    #[test]
    fn validation_names_the_keys() {
        assert!(problems("").is_empty());
        assert_eq!(problems("org: a\norgs: [{name: b}]"), ["connectors[0].config.org"]);
        assert_eq!(problems("teamNameField: id"), ["connectors[0].config.teamNameField"]);
        assert_eq!(problems("preferredEmailDomain: 'example.*'"), ["connectors[0].config.preferredEmailDomain"]);
        assert_eq!(problems("hostName: ghe.example.com/x"), ["connectors[0].config.hostName"]);
        assert_eq!(problems("hostName: http://ghe.example.com"), ["connectors[0].config.hostName"]);
        assert!(problems("hostName: http://localhost:8080").is_empty());
        assert!(problems("hostName: https://ghe.example.com:8443").is_empty());
        assert_eq!(problems("rootCA: /nonexistent.pem"), ["connectors[0].config.rootCA"]);
        assert_eq!(problems("orgs: [{name: ''}]"), ["connectors[0].config.orgs[0].name"]);
        assert!(serde_yaml::from_str::<Config>(&format!("{BASE}orgs: [{{name: a, team: [x]}}]")).is_err());
    }

    #[test]
    fn debug_hides_the_client_secret() {
        let text = format!("{:?}", config(BASE));
        assert!(!text.contains("s3cret"), "{text}");
        assert!(text.contains("<redacted>"));
    }

    #[test]
    fn emails_prefer_the_domain_then_the_verified_primary() {
        let e = |email: &str, verified, primary| Email { email: email.into(), verified, primary };
        let list = [
            e("unverified@corp.example", false, false),
            e("jane@users.noreply.github.com", true, false),
            e("jane@sub.corp.example", true, false),
            e("jane@home.example", true, true),
        ];
        assert_eq!(choose_email(&list, false, None).as_deref(), Some("jane@home.example"));
        assert_eq!(choose_email(&list, false, Some("*.corp.example")).as_deref(), Some("jane@sub.corp.example"));
        assert_eq!(choose_email(&list, false, Some("corp.example")).as_deref(), Some("jane@home.example"));
        assert_eq!(choose_email(&list, true, Some("corp.example")).as_deref(), Some("unverified@corp.example"));
        assert_eq!(choose_email(&[e("x@y", false, true)], false, None), None);
        assert_eq!(choose_email(&[e("x@y", false, true)], true, None).as_deref(), Some("x@y"));
    }

    #[test]
    fn refusals_name_the_orgs_and_teams() {
        let orgs = [
            Org { name: "acme".into(), teams: vec![] },
            Org { name: "widgets".into(), teams: vec!["ops".into(), "dev".into()] },
        ];
        assert_eq!(
            refusal("jane", &orgs),
            "GitHub: jane is not a member of any of the required organizations and teams: acme, widgets (teams ops, dev)"
        );
    }

    #[test]
    fn connector_data_keeps_an_expiry_only_for_expiring_tokens() {
        let d = Data::from_tokens(&Tokens { access_token: "a".into(), refresh_token: None, expires_in: None });
        assert_eq!(json!(d), json!({"access_token": "a"}));
        let d = Data::from_tokens(&Tokens {
            access_token: "a".into(),
            refresh_token: Some("r".into()),
            expires_in: Some(10),
        });
        assert!(d.expires_at.is_some_and(|at| at >= code_flow::unix_now()));
    }
}
