//! The `ldap` connector (Dex's keys): checks a username and password against an LDAP directory or Active
//! Directory, and reads the user's groups.
//!
//! Login: search for the user as the service account (`bindDN`/`bindPW`, anonymous when both are empty)
//! with the username escaped once for the filter (RFC 4515 §3) and a size limit of 2, so two matching
//! entries are an error and never a login; then bind as the entry's DN with the password exactly as typed
//! (an empty password is refused before any bind: RFC 4513 §5.1.2 makes it an unauthenticated bind that
//! succeeds); then search the groups, paged (RFC 2696), optionally with Active Directory's nested-group
//! rule (`1.2.840.113556.1.4.1941`).
//!
//! Refresh: search again as the service account for the stored username. The user is gone → `None`
//! (`invalid_grant`); a different entry (another DN) → refused. Active Directory accounts are also refused
//! when `userAccountControl` has the disabled bit (0x2), when `lockoutTime` is set, or when `pwdLastSet`
//! changed since the login. Groups are re-read. An unreachable directory → `Unavailable` (503), and the
//! refresh token stays valid.
//!
//! Better than Dex: the service account's connection is kept and shared (searches are multiplexed on it;
//! Dex dials and binds for every search), user binds reuse a small pool of connections, every operation
//! has a time limit, and `host` may be a list of servers tried in order.

use std::collections::HashSet;
use std::time::Duration;

use async_trait::async_trait;
use ldap3::adapters::{EntriesOnly, PagedResults};
use ldap3::{ldap_escape, Ldap as Conn, LdapConnAsync, LdapConnSettings, LdapError, Scope, SearchEntry, SearchOptions};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::Mutex;

use super::tls::{self, Trust};
use super::{ConnectorError, PasswordConnector, RefreshConnector};
use crate::config::Problem;
use crate::storage::{ConnectorData, Identity};

/// How long one LDAP operation may take (also sent to the server as the search time limit).
const OPERATION_TIMEOUT: Duration = Duration::from_secs(10);
/// Idle connections kept for user binds.
const BIND_POOL: usize = 8;
/// Page size of group searches (RFC 2696).
const GROUP_PAGE: i32 = 500;
/// Active Directory's `LDAP_MATCHING_RULE_IN_CHAIN`: transitive group membership.
const IN_CHAIN: &str = "1.2.840.113556.1.4.1941";
/// How many levels of nested groups are followed.
const NESTING_DEPTH: usize = 8;
/// At most this many groups are collected per user.
const MAX_GROUPS: usize = 1000;
/// `userAccountControl` bit `ACCOUNTDISABLE`.
const AD_ACCOUNT_DISABLE: u64 = 0x2;

/// `config:` of an `ldap` connector.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Config {
    /// `host:port`, or a list of them tried in order (Dex #1548). Without a port: 636, or 389 with
    /// `insecureNoSSL` or `startTLS`.
    pub host: Hosts,
    /// Plain LDAP without TLS (development only).
    #[serde(default, rename = "insecureNoSSL")]
    pub insecure_no_ssl: bool,
    /// Upgrade a plain connection with StartTLS (RFC 4511 §4.14).
    #[serde(default, rename = "startTLS")]
    pub start_tls: bool,
    /// Accept any server certificate.
    #[serde(default)]
    pub insecure_skip_verify: bool,
    /// PEM file of the CA to trust.
    #[serde(default, rename = "rootCA")]
    pub root_ca: Option<String>,
    /// The CA as base64 of the PEM (Dex's `rootCAData` is bytes).
    #[serde(default, rename = "rootCAData")]
    pub root_ca_data: Option<String>,
    /// PEM client certificate for mutual TLS.
    #[serde(default)]
    pub client_cert: Option<String>,
    /// PEM client key for mutual TLS.
    #[serde(default)]
    pub client_key: Option<String>,
    /// The service account's DN; empty with `bindPW` empty means anonymous searches.
    #[serde(default, rename = "bindDN")]
    pub bind_dn: String,
    /// The service account's password.
    #[serde(default, rename = "bindPW")]
    pub bind_pw: String,
    /// The login field's label.
    #[serde(default)]
    pub username_prompt: Option<String>,
    /// How users are found.
    pub user_search: UserSearch,
    /// How groups are found (no groups without it).
    #[serde(default)]
    pub group_search: Option<GroupSearch>,
}

/// One server or a list of servers.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Hosts {
    /// `host: ldap.example.com:636`.
    One(String),
    /// `host: [ldap1:636, ldap2:636]`.
    Many(Vec<String>),
}

/// One attribute or a list of attributes, any of which may hold the username.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Attributes {
    /// `username: uid`.
    One(String),
    /// `username: [uid, mail]`.
    Many(Vec<String>),
}

/// `userSearch:`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct UserSearch {
    /// Where to search.
    #[serde(rename = "baseDN")]
    pub base_dn: String,
    /// Extra filter ANDed with the username match, e.g. `(objectClass=person)`.
    #[serde(default)]
    pub filter: String,
    /// `sub` (default) or `one`.
    #[serde(default)]
    pub scope: Option<String>,
    /// Attribute(s) matched against what the user typed.
    pub username: Attributes,
    /// Attribute holding the stable user id; `DN` uses the entry's DN.
    #[serde(default = "default_id_attr")]
    pub id_attr: String,
    /// Attribute holding the email address.
    #[serde(default)]
    pub email_attr: Option<String>,
    /// Attribute holding the display name.
    #[serde(default)]
    pub name_attr: Option<String>,
    /// Attribute holding `preferred_username`.
    #[serde(default)]
    pub preferred_username_attr: Option<String>,
    /// Without `emailAttr`: the email is the username and this suffix (`example.com` → `jane@example.com`).
    #[serde(default)]
    pub email_suffix: Option<String>,
}

fn default_id_attr() -> String {
    "uid".into()
}

/// `groupSearch:`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct GroupSearch {
    /// Where to search.
    #[serde(rename = "baseDN")]
    pub base_dn: String,
    /// Extra filter, e.g. `(objectClass=groupOfNames)`.
    #[serde(default)]
    pub filter: String,
    /// `sub` (default) or `one`.
    #[serde(default)]
    pub scope: Option<String>,
    /// Pairs: a group matches when its `groupAttr` equals the user's `userAttr` (`DN`: the user's DN).
    #[serde(default)]
    pub user_matchers: Vec<UserMatcher>,
    /// Dex's older single pair (used when `userMatchers` is empty).
    #[serde(default)]
    pub user_attr: Option<String>,
    /// Dex's older single pair.
    #[serde(default)]
    pub group_attr: Option<String>,
    /// Attribute holding the group's name.
    pub name_attr: String,
    /// Groups the user is in through other groups: `true` follows membership level by level (any server);
    /// `inChain` asks Active Directory to do it in one search (`LDAP_MATCHING_RULE_IN_CHAIN`).
    #[serde(default)]
    pub nested_groups: NestedGroups,
}

/// `groupSearch.nestedGroups`: `false` (default), `true`, or `inChain`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum NestedGroups {
    /// `true` or `false`.
    Enabled(bool),
    /// `inChain` (validated).
    Rule(String),
}

impl Default for NestedGroups {
    fn default() -> Self {
        NestedGroups::Enabled(false)
    }
}

/// `groupSearch.userMatchers[]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct UserMatcher {
    /// Attribute of the user entry (`DN` for its DN).
    pub user_attr: String,
    /// Attribute of the group entry.
    pub group_attr: String,
    /// Dex's switch for nested groups on this matcher: when set, groups that contain the user's groups
    /// count too, followed as `nestedGroups: true` does (matching each group's DN in `groupAttr`).
    #[serde(default)]
    pub recursion_group_attr: Option<String>,
}

impl Config {
    /// Checks what serde cannot: scopes, exclusive options, and that the CA files exist.
    pub fn validate(&mut self, key: &str, problems: &mut Vec<Problem>) {
        let mut problem = |k: &str, e: &str| problems.push(Problem::new(format!("{key}.{k}"), e));
        if self.hosts().is_empty() || self.hosts().iter().any(|h| h.is_empty() || h.contains("://")) {
            problem("host", "host:port (or a list of them), without a scheme");
        }
        if self.insecure_no_ssl && self.start_tls {
            problem("startTLS", "false with insecureNoSSL (StartTLS upgrades to TLS; insecureNoSSL switches TLS off)");
        }
        if self.bind_dn.is_empty() != self.bind_pw.is_empty() {
            problem("bindPW", "bindDN and bindPW both set, or both empty for anonymous searches");
        }
        if self.client_cert.is_some() != self.client_key.is_some() {
            problem("clientKey", "clientCert and clientKey together");
        }
        for (k, s) in [("userSearch.scope", &self.user_search.scope), ("groupSearch.scope", &self.group_scope())] {
            if s.as_deref().is_some_and(|s| !matches!(s, "sub" | "one")) {
                problem(k, "\"sub\" or \"one\"");
            }
        }
        if self.user_search.base_dn.is_empty() {
            problem("userSearch.baseDN", "the DN under which users are searched");
        }
        if self.user_search.email_attr.is_none() && self.user_search.email_suffix.is_none() {
            problem("userSearch.emailAttr", "the attribute holding the email address (or userSearch.emailSuffix)");
        }
        if self.username_attrs().is_empty() {
            problem("userSearch.username", "the attribute(s) holding the login name, e.g. uid");
        }
        if let Some(GroupSearch { nested_groups: NestedGroups::Rule(r), .. }) = &self.group_search {
            if r != "inChain" {
                problem("groupSearch.nestedGroups", "true, false or \"inChain\" (Active Directory)");
            }
        }
        if let Some(g) = &self.group_search {
            if g.user_matchers.is_empty() && (g.user_attr.is_none() || g.group_attr.is_none()) {
                problem("groupSearch.userMatchers", "at least one {userAttr, groupAttr} pair");
            }
        }
        if let Some(d) = &self.root_ca_data {
            use base64::Engine as _;
            if base64::engine::general_purpose::STANDARD.decode(d.trim()).is_err() {
                problem("rootCAData", "base64 of a PEM certificate");
            }
        }
        for (k, f) in [("rootCA", &self.root_ca), ("clientCert", &self.client_cert), ("clientKey", &self.client_key)] {
            if let Some(f) = f {
                if !std::path::Path::new(f).is_file() {
                    problem(k, &format!("an existing PEM file, got {f:?}"));
                }
            }
        }
    }

    fn group_scope(&self) -> Option<String> {
        self.group_search.as_ref().and_then(|g| g.scope.clone())
    }

    fn hosts(&self) -> Vec<String> {
        match &self.host {
            Hosts::One(h) => vec![h.clone()],
            Hosts::Many(l) => l.clone(),
        }
    }

    fn username_attrs(&self) -> Vec<String> {
        match &self.user_search.username {
            Attributes::One(a) if a.is_empty() => vec![],
            Attributes::One(a) => vec![a.clone()],
            Attributes::Many(l) => l.iter().filter(|a| !a.is_empty()).cloned().collect(),
        }
    }

    /// `ldaps://`, or `ldap://` for `insecureNoSSL` and `startTLS`, with the default port added.
    fn urls(&self) -> Vec<String> {
        let plain = self.insecure_no_ssl || self.start_tls;
        let (scheme, port) = if plain { ("ldap", 389) } else { ("ldaps", 636) };
        self.hosts()
            .into_iter()
            .map(|h| {
                let has_port = h.rsplit_once(':').is_some_and(|(_, p)| p.parse::<u16>().is_ok()) && !h.ends_with(']');
                if has_port {
                    format!("{scheme}://{h}")
                } else {
                    format!("{scheme}://{h}:{port}")
                }
            })
            .collect()
    }

    fn trust(&self) -> Result<Trust, String> {
        let mut root_cas = Vec::new();
        if let Some(f) = &self.root_ca {
            root_cas.push(tls::read_pem("rootCA", f)?);
        }
        if let Some(d) = &self.root_ca_data {
            use base64::Engine as _;
            let pem = base64::engine::general_purpose::STANDARD
                .decode(d.trim())
                .map_err(|_| "rootCAData: not base64".to_owned())?;
            root_cas.push(String::from_utf8(pem).map_err(|_| "rootCAData: not a PEM certificate".to_owned())?);
        }
        let client_identity = match (&self.client_cert, &self.client_key) {
            (Some(c), Some(k)) => Some((tls::read_pem("clientCert", c)?, tls::read_pem("clientKey", k)?)),
            _ => None,
        };
        Ok(Trust { root_cas, insecure_skip_verify: self.insecure_skip_verify, client_identity })
    }
}

fn scope(s: &Option<String>) -> Scope {
    match s.as_deref() {
        Some("one") => Scope::OneLevel,
        _ => Scope::Subtree,
    }
}

/// What a user search found.
enum Lookup {
    None,
    One(Box<SearchEntry>),
    /// Two or more entries: never a login (which one would the password be checked against?).
    Several,
}

/// What the connector keeps about a login, for refresh.
#[derive(Debug, serde::Serialize, Deserialize)]
struct Data {
    /// The name the user typed.
    username: String,
    /// The entry's DN at login.
    dn: String,
    /// Active Directory `pwdLastSet` at login.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pwd_last_set: Option<String>,
}

/// An `ldap` connector.
pub struct Ldap {
    id: String,
    config: Config,
    urls: Vec<String>,
    settings: LdapConnSettings,
    /// The service account's connection, shared: LDAP multiplexes operations on one connection.
    service: Mutex<Option<Conn>>,
    /// Idle connections for user binds.
    binds: Mutex<Vec<Conn>>,
    prompt: String,
}

fn unavailable(e: impl std::fmt::Display) -> ConnectorError {
    ConnectorError::Unavailable(format!("LDAP: {e}"))
}

impl Ldap {
    /// Prepares the connector (TLS settings); connects lazily.
    pub fn new(id: &str, config: Config) -> Result<Self, String> {
        let mut settings =
            LdapConnSettings::new().set_conn_timeout(tls::CONNECT_TIMEOUT).set_starttls(config.start_tls);
        if !config.insecure_no_ssl {
            settings = settings.set_config(tls::rustls_config(&config.trust()?)?);
        }
        let prompt = config.username_prompt.clone().unwrap_or_else(|| "Username".to_owned());
        Ok(Self {
            id: id.to_owned(),
            urls: config.urls(),
            config,
            settings,
            service: Mutex::new(None),
            binds: Mutex::new(Vec::new()),
            prompt,
        })
    }

    /// Dials the first server that answers.
    async fn dial(&self) -> Result<Conn, ConnectorError> {
        let mut last = String::from("no host configured");
        for url in &self.urls {
            match LdapConnAsync::with_settings(self.settings.clone(), url).await {
                Ok((conn, ldap)) => {
                    tokio::spawn(async move {
                        if let Err(e) = conn.drive().await {
                            tracing::debug!(error = %e, "LDAP connection closed");
                        }
                    });
                    return Ok(ldap);
                }
                Err(e) => {
                    tracing::warn!(url, error = %e, "LDAP server unreachable");
                    last = format!("{url}: {e}");
                }
            }
        }
        Err(unavailable(last))
    }

    /// The service connection, bound as `bindDN` (or anonymous), dialled on first use and after a failure.
    async fn service(&self) -> Result<Conn, ConnectorError> {
        let mut slot = self.service.lock().await;
        if let Some(l) = slot.as_mut() {
            if !l.is_closed() {
                return Ok(l.clone());
            }
        }
        let mut l = self.dial().await?;
        if !self.config.bind_dn.is_empty() {
            let r = l.with_timeout(OPERATION_TIMEOUT).simple_bind(&self.config.bind_dn, &self.config.bind_pw).await;
            match r.map(|r| r.success()) {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Err(unavailable(format!("service account bind (bindDN) refused: {e}"))),
                Err(e) => return Err(unavailable(e)),
            }
        }
        *slot = Some(l.clone());
        Ok(l)
    }

    /// Runs `op` on the service connection; a broken connection is dialled again once.
    async fn with_service<T, F, Fut>(&self, op: F) -> Result<T, ConnectorError>
    where
        F: Fn(Conn) -> Fut,
        Fut: std::future::Future<Output = Result<T, LdapError>>,
    {
        for attempt in 0..2 {
            let l = self.service().await?;
            match op(l).await {
                Ok(t) => return Ok(t),
                // A broken connection is dialled again once; a timeout is not retried (the time limits
                // would add up while the person waits).
                Err(e) if attempt == 0 && is_connection_error(&e) && !matches!(e, LdapError::Timeout { .. }) => {
                    *self.service.lock().await = None;
                }
                Err(e) => {
                    if is_connection_error(&e) {
                        *self.service.lock().await = None;
                    }
                    return Err(unavailable(e));
                }
            }
        }
        Err(unavailable("the connection failed twice"))
    }

    fn attributes(&self) -> Vec<String> {
        let u = &self.config.user_search;
        let mut attrs: Vec<String> = self.config.username_attrs();
        attrs.extend([&u.email_attr, &u.name_attr, &u.preferred_username_attr].into_iter().flatten().cloned());
        if u.id_attr != "DN" {
            attrs.push(u.id_attr.clone());
        }
        if let Some(g) = &self.config.group_search {
            attrs.extend(matchers(g).into_iter().map(|m| m.user_attr).filter(|a| a != "DN"));
        }
        attrs.extend(["userAccountControl", "lockoutTime", "pwdLastSet"].map(str::to_owned));
        let mut seen = HashSet::new();
        attrs.retain(|a| seen.insert(a.to_lowercase()));
        attrs
    }

    /// The filter for `username`, escaped once: `(&<filter>(|(uid=<u>)(mail=<u>)))`.
    fn user_filter(&self, username: &str) -> String {
        let escaped = ldap_escape(username);
        let attrs = self.config.username_attrs();
        let matches: String = attrs.iter().map(|a| format!("({a}={escaped})")).collect();
        let matches = if attrs.len() == 1 { matches } else { format!("(|{matches})") };
        match self.config.user_search.filter.trim() {
            "" => matches,
            f => format!("(&{}{matches})", parenthesize(f)),
        }
    }

    /// The entry for `username`: one, none, or more than one (the size limit is 2).
    async fn find_user(&self, username: &str) -> Result<Lookup, ConnectorError> {
        let filter = self.user_filter(username);
        let attrs = self.attributes();
        let base = self.config.user_search.base_dn.clone();
        let scope = scope(&self.config.user_search.scope);
        let (entries, rc) = self
            .with_service(|mut l| {
                let (filter, attrs, base) = (filter.clone(), attrs.clone(), base.clone());
                async move {
                    let opts = SearchOptions::new().sizelimit(2).timelimit(OPERATION_TIMEOUT.as_secs() as i32);
                    let r = l
                        .with_search_options(opts)
                        .with_timeout(OPERATION_TIMEOUT)
                        .search(&base, scope, &filter, attrs)
                        .await?;
                    Ok((r.0, r.1.rc))
                }
            })
            .await?;
        // rc 4 (sizeLimitExceeded): more than two entries; rc 32 (noSuchObject): the base DN is missing.
        match (entries.len(), rc) {
            (0, 0 | 32) => Ok(Lookup::None),
            (1, 0) => Ok(entries
                .into_iter()
                .next()
                .map_or(Lookup::None, |e| Lookup::One(Box::new(SearchEntry::construct(e))))),
            (n, 0 | 4) if n >= 2 || rc == 4 => Ok(Lookup::Several),
            (_, rc) => Err(unavailable(format!("user search failed with result code {rc}"))),
        }
    }

    /// Binds as `dn` with `password` on a pooled connection: `Ok(true)` when the directory accepts it.
    async fn check_password(&self, dn: &str, password: &str) -> Result<bool, ConnectorError> {
        let pooled = self.binds.lock().await.pop();
        let mut l = match pooled {
            Some(l) if !l.clone().is_closed() => l,
            _ => self.dial().await?,
        };
        let r = l.with_timeout(OPERATION_TIMEOUT).simple_bind(dn, password).await;
        let ok = match r {
            Ok(res) if res.rc == 0 => true,
            // 49 invalidCredentials; 53 unwillingToPerform (e.g. a disabled account in AD).
            Ok(res) if matches!(res.rc, 49 | 53) => false,
            Ok(res) => return Err(unavailable(format!("bind failed with result code {}", res.rc))),
            Err(e) => return Err(unavailable(e)),
        };
        let mut pool = self.binds.lock().await;
        if pool.len() < BIND_POOL {
            pool.push(l);
        }
        Ok(ok)
    }

    /// Group entries (DN, names) matching `matcher` (one `(attr=value)` term) under `groupSearch`, paged.
    async fn search_groups(
        &self,
        g: &GroupSearch,
        matcher: String,
    ) -> Result<Vec<(String, Vec<String>)>, ConnectorError> {
        let filter = match g.filter.trim() {
            "" => matcher,
            f => format!("(&{}{matcher})", parenthesize(f)),
        };
        let (base, name_attr, scope) = (g.base_dn.clone(), g.name_attr.clone(), scope(&g.scope));
        self.with_service(|mut l| {
            let (filter, base, name_attr) = (filter.clone(), base.clone(), name_attr.clone());
            async move {
                let opts = SearchOptions::new().timelimit(OPERATION_TIMEOUT.as_secs() as i32);
                let adapters: Vec<Box<dyn ldap3::adapters::Adapter<_, _>>> =
                    vec![Box::new(EntriesOnly::new()), Box::new(PagedResults::new(GROUP_PAGE))];
                let mut stream = l
                    .with_search_options(opts)
                    .with_timeout(OPERATION_TIMEOUT)
                    .streaming_search_with(adapters, &base, scope, &filter, vec![name_attr.clone()])
                    .await?;
                let mut out = Vec::new();
                while let Some(e) = stream.next().await? {
                    let e = SearchEntry::construct(e);
                    let names = attr_values(&e, &name_attr);
                    out.push((e.dn, names));
                }
                let res = stream.finish().await;
                // 32 noSuchObject: no group base, so no groups.
                if res.rc != 0 && res.rc != 32 {
                    return Err(LdapError::from(res));
                }
                Ok(out)
            }
        })
        .await
    }

    async fn groups(&self, entry: &SearchEntry) -> Result<Vec<String>, ConnectorError> {
        let Some(g) = &self.config.group_search else { return Ok(vec![]) };
        let in_chain = matches!(g.nested_groups, NestedGroups::Rule(_));
        let mut found: Vec<(String, Vec<String>)> = Vec::new();
        for m in matchers(g) {
            let values: Vec<String> =
                if m.user_attr == "DN" { vec![entry.dn.clone()] } else { attr_values(entry, &m.user_attr) };
            for v in values {
                let rule = if in_chain && m.user_attr == "DN" { format!(":{IN_CHAIN}:") } else { String::new() };
                found.extend(
                    self.search_groups(g, format!("({}{rule}={})", m.group_attr, ldap_escape(v.as_str()))).await?,
                );
            }
        }
        let recursive = matchers(g).iter().any(|m| m.recursion_group_attr.as_deref().is_some_and(|a| !a.is_empty()));
        if matches!(g.nested_groups, NestedGroups::Enabled(true)) || recursive {
            // Groups that contain the user's groups, level by level, through the DN matchers.
            let dn_attrs: Vec<String> =
                matchers(g).into_iter().filter(|m| m.user_attr == "DN").map(|m| m.group_attr).collect();
            let mut seen: HashSet<String> = found.iter().map(|(dn, _)| dn.to_lowercase()).collect();
            let mut frontier: Vec<String> = found.iter().map(|(dn, _)| dn.clone()).collect();
            for _ in 0..NESTING_DEPTH {
                let mut next = Vec::new();
                for dn in &frontier {
                    for attr in &dn_attrs {
                        for (parent, names) in
                            self.search_groups(g, format!("({attr}={})", ldap_escape(dn.as_str()))).await?
                        {
                            if seen.insert(parent.to_lowercase()) && seen.len() <= MAX_GROUPS {
                                next.push(parent.clone());
                                found.push((parent, names));
                            }
                        }
                    }
                }
                if next.is_empty() {
                    break;
                }
                frontier = next;
            }
        }
        let mut names: Vec<String> = found.into_iter().flat_map(|(_, n)| n).collect();
        let mut seen = HashSet::new();
        names.retain(|n| seen.insert(n.clone()));
        Ok(names)
    }

    fn identity(&self, typed: &str, entry: &SearchEntry, groups: Vec<String>) -> Result<Identity, ConnectorError> {
        let u = &self.config.user_search;
        let first = |a: &Option<String>| a.as_ref().and_then(|a| attr_values(entry, a).into_iter().next());
        // The directory's spelling of the name (the first username attribute the entry has), not what was
        // typed (another case, or another of the username attributes).
        let username = self
            .config
            .username_attrs()
            .iter()
            .find_map(|a| attr_values(entry, a).into_iter().next())
            .unwrap_or_else(|| typed.to_owned());
        let username = username.as_str();
        let user_id = if u.id_attr == "DN" {
            entry.dn.clone()
        } else {
            attr_values(entry, &u.id_attr).into_iter().next().ok_or_else(|| ConnectorError::Refused {
                reason: format!("LDAP: the directory entry has no {} attribute (idAttr)", u.id_attr),
            })?
        };
        // Dex: `emailSuffix` wins; otherwise the entry must have `emailAttr`.
        let email = match (&u.email_suffix, first(&u.email_attr)) {
            (Some(suffix), _) => format!("{username}@{}", suffix.trim_start_matches('@')),
            (None, Some(e)) => e,
            (None, None) => {
                return Err(ConnectorError::Refused {
                    reason: format!(
                        "LDAP: the directory entry has no {} attribute (emailAttr)",
                        u.email_attr.as_deref().unwrap_or("email")
                    ),
                })
            }
        };
        let data =
            Data { username: username.to_owned(), dn: entry.dn.clone(), pwd_last_set: first_attr(entry, "pwdLastSet") };
        Ok(Identity {
            user_id,
            username: first(&u.name_attr).unwrap_or_else(|| username.to_owned()),
            email_verified: true,
            email,
            groups,
            connector_id: self.id.clone(),
            preferred_username: first(&u.preferred_username_attr).unwrap_or_default(),
            connector_data: Some(ConnectorData(json!(data))),
        })
    }
}

fn matchers(g: &GroupSearch) -> Vec<UserMatcher> {
    if !g.user_matchers.is_empty() {
        return g.user_matchers.clone();
    }
    match (&g.user_attr, &g.group_attr) {
        (Some(u), Some(gr)) => {
            vec![UserMatcher { user_attr: u.clone(), group_attr: gr.clone(), recursion_group_attr: None }]
        }
        _ => vec![],
    }
}

fn parenthesize(f: &str) -> String {
    if f.starts_with('(') {
        f.to_owned()
    } else {
        format!("({f})")
    }
}

/// Values of an attribute, matched case-insensitively (LDAP attribute names are).
fn attr_values(entry: &SearchEntry, attr: &str) -> Vec<String> {
    entry.attrs.iter().filter(|(k, _)| k.eq_ignore_ascii_case(attr)).flat_map(|(_, v)| v.clone()).collect()
}

fn first_attr(entry: &SearchEntry, attr: &str) -> Option<String> {
    attr_values(entry, attr).into_iter().next()
}

fn is_connection_error(e: &LdapError) -> bool {
    matches!(e, LdapError::Io { .. } | LdapError::EndOfStream | LdapError::OpSend { .. } | LdapError::Timeout { .. })
}

/// Active Directory account states that end access: disabled, locked out, or a password changed since
/// `pwd_last_set_at_login`. Entries without these attributes (OpenLDAP) pass.
fn active_directory_refusal(entry: &SearchEntry, pwd_last_set_at_login: Option<&str>) -> Option<&'static str> {
    if first_attr(entry, "userAccountControl")
        .and_then(|v| v.parse::<u64>().ok())
        .is_some_and(|v| v & AD_ACCOUNT_DISABLE != 0)
    {
        return Some("the account is disabled");
    }
    if first_attr(entry, "lockoutTime").and_then(|v| v.parse::<u64>().ok()).is_some_and(|v| v != 0) {
        return Some("the account is locked out");
    }
    match (pwd_last_set_at_login, first_attr(entry, "pwdLastSet")) {
        (Some(then), Some(now)) if then != now => Some("the password was changed since sign-in"),
        _ => None,
    }
}

#[async_trait]
impl PasswordConnector for Ldap {
    async fn login(&self, login: &str, password: &str) -> Result<Option<Identity>, ConnectorError> {
        if login.is_empty() || password.is_empty() {
            return Ok(None);
        }
        let entry = match self.find_user(login).await? {
            Lookup::One(entry) => entry,
            Lookup::None => return Ok(None),
            // Answered like a wrong password, so nobody learns from it which names are ambiguous; the
            // administrator learns it from the log.
            Lookup::Several => {
                tracing::warn!(connector = %self.id, login, "LDAP: more than one directory entry matches this login; refusing it (make userSearch match one entry)");
                return Ok(None);
            }
        };
        if !self.check_password(&entry.dn, password).await? {
            return Ok(None);
        }
        // Only after the password: the account's state is not told to someone who does not know it.
        if let Some(why) = active_directory_refusal(&entry, None) {
            return Err(ConnectorError::Refused { reason: format!("LDAP: {why}") });
        }
        let groups = self.groups(&entry).await?;
        self.identity(login, &entry, groups).map(Some)
    }

    fn prompt(&self) -> &str {
        &self.prompt
    }
}

#[async_trait]
impl RefreshConnector for Ldap {
    async fn refresh(&self, identity: &Identity) -> Result<Option<Identity>, ConnectorError> {
        let data: Data =
            identity.connector_data.as_ref().and_then(|d| serde_json::from_value(d.0.clone()).ok()).ok_or_else(
                || ConnectorError::Refused { reason: "LDAP: the session predates this connector".into() },
            )?;
        let entry = match self.find_user(&data.username).await? {
            Lookup::One(entry) => entry,
            Lookup::None => return Ok(None),
            Lookup::Several => {
                return Err(ConnectorError::Refused {
                    reason: format!("LDAP: more than one directory entry now matches {:?}", data.username),
                })
            }
        };
        if entry.dn != data.dn {
            return Err(ConnectorError::Refused {
                reason: format!("LDAP: {:?} now names another directory entry", data.username),
            });
        }
        if let Some(why) = active_directory_refusal(&entry, data.pwd_last_set.as_deref()) {
            return Err(ConnectorError::Refused { reason: format!("LDAP: {why}") });
        }
        let groups = self.groups(&entry).await?;
        let fresh = self.identity(&data.username, &entry, groups)?;
        if fresh.user_id != identity.user_id {
            return Err(ConnectorError::Refused { reason: "LDAP: the user's id attribute changed".into() });
        }
        Ok(Some(fresh))
    }
}

impl std::fmt::Debug for Ldap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ldap").field("id", &self.id).field("urls", &self.urls).finish_non_exhaustive()
    }
}

impl Ldap {
    /// Connects the way a login would (dial, bind as the service account) and reads the user base.
    async fn probe_directory(&self) -> Result<String, ConnectorError> {
        let base = self.config.user_search.base_dn.clone();
        let n = self
            .with_service(|mut l| {
                let base = base.clone();
                async move {
                    let r = l
                        .with_timeout(OPERATION_TIMEOUT)
                        .search(&base, Scope::Base, "(objectClass=*)", vec!["1.1"])
                        .await?;
                    Ok(r.0.len())
                }
            })
            .await?;
        Ok(if n == 1 { format!("bound and read {base}") } else { format!("bound, but {base} was not found") })
    }
}

#[async_trait]
impl super::Probe for Ldap {
    async fn probe(&self) -> Result<super::ProbeReport, ConnectorError> {
        let detail = self.probe_directory().await?;
        let peer_certificate = match self.service().await {
            Ok(mut l) => l.get_peer_certificate().await.ok().flatten(),
            Err(_) => None,
        };
        let tls_warning = if self.config.insecure_no_ssl {
            Some("plain LDAP without TLS (insecureNoSSL): passwords cross the network in clear".to_owned())
        } else if self.config.insecure_skip_verify {
            Some("certificate verification is off (insecureSkipVerify)".to_owned())
        } else {
            None
        };
        Ok(super::ProbeReport { detail, peer_certificate, tls_warning })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(yaml: &str) -> Config {
        serde_yaml::from_str(yaml).unwrap()
    }

    #[test]
    fn usernames_are_escaped_once_and_matched_on_every_username_attribute() {
        let c = config("host: h\nuserSearch: {baseDN: 'dc=x', username: [uid, mail], filter: 'objectClass=person'}");
        let l = Ldap::new("ldap", Config { insecure_no_ssl: true, ..c }).unwrap();
        assert_eq!(l.user_filter("a*(b)\\"), r"(&(objectClass=person)(|(uid=a\2a\28b\29\5c)(mail=a\2a\28b\29\5c)))");
        let c = config("host: h\nuserSearch: {baseDN: 'dc=x', username: uid}\ninsecureNoSSL: true");
        assert_eq!(Ldap::new("ldap", c).unwrap().user_filter("jane"), "(uid=jane)");
    }

    #[test]
    fn hosts_get_the_default_port_of_their_transport() {
        let c = config("host: [a, 'b:1389']\nuserSearch: {baseDN: 'dc=x', username: uid}");
        assert_eq!(c.urls(), vec!["ldaps://a:636", "ldaps://b:1389"]);
        let c = config("host: a\nstartTLS: true\nuserSearch: {baseDN: 'dc=x', username: uid}");
        assert_eq!(c.urls(), vec!["ldap://a:389"]);
    }

    #[test]
    fn active_directory_account_states_refuse() {
        let entry = |attrs: &[(&str, &str)]| SearchEntry {
            dn: "cn=u".into(),
            attrs: attrs.iter().map(|(k, v)| (k.to_string(), vec![v.to_string()])).collect(),
            bin_attrs: Default::default(),
        };
        assert_eq!(
            active_directory_refusal(&entry(&[("userAccountControl", "514")]), None),
            Some("the account is disabled")
        );
        assert_eq!(active_directory_refusal(&entry(&[("userAccountControl", "512")]), None), None);
        assert_eq!(
            active_directory_refusal(&entry(&[("lockoutTime", "133")]), None),
            Some("the account is locked out")
        );
        assert_eq!(active_directory_refusal(&entry(&[("lockoutTime", "0")]), None), None);
        assert!(active_directory_refusal(&entry(&[("pwdLastSet", "2")]), Some("1")).is_some());
        assert_eq!(active_directory_refusal(&entry(&[("pwdLastSet", "1")]), Some("1")), None);
        assert_eq!(active_directory_refusal(&entry(&[]), None), None);
    }
}
