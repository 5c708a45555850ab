//! Connectors: where identities come from (Dex `server/connector.go`). Narrow capability traits: a connector
//! that checks passwords implements [`PasswordConnector`]; one that sends the browser to an upstream and
//! takes it back at `/callback` implements [`CallbackConnector`]; each re-checks its users at refresh through
//! [`RefreshConnector`]. A connector never renders HTTP: it returns an [`Identity`] or a [`ConnectorError`],
//! and `http::connector_login` decides pages and status codes once.
//!
//! The registry ([`ConnectorConfig::parse`] and [`Connectors::new`]) maps Dex's `type` strings to each
//! connector's configuration and constructor; identity policy ([`policy`]) is applied by the caller after
//! every login and every refresh, the same for every connector.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;

use crate::config::{Client, Config, Problem};
use crate::storage::{ConnectorData, Identity};

pub mod atlassian_crowd;
pub mod bitbucket_cloud;
pub(crate) mod code_flow;
pub mod github;
pub mod gitlab;
pub mod ldap;
pub mod local;
pub mod oidc;
pub mod policy;
pub mod tls;

pub use policy::Policy;

/// Connector failures. A wrong password is not one: that is `Ok(None)` from [`PasswordConnector::login`].
#[derive(Debug, thiserror::Error)]
pub enum ConnectorError {
    /// The upstream could not be reached or answered with a server error: worth retrying (HTTP 503 with
    /// `Retry-After`; at refresh `temporarily_unavailable`, and the refresh token stays valid).
    #[error("upstream unavailable: {0}")]
    Unavailable(String),
    /// The upstream or a policy refused this user (not a member of a required org, disabled account, an
    /// email domain not allowed…): HTTP 403 at login, `invalid_grant` at refresh. `reason` is shown to the
    /// person and written to the audit log, so it names who refused and why, and never holds a secret.
    #[error("refused: {reason}")]
    Refused {
        /// Who refused and why, e.g. "GitHub: not a member of any of the organizations acme, widgets".
        reason: String,
    },
    /// The upstream answered the callback with an error (OAuth 2.0 `error`, RFC 6749 §4.1.2.1) or with
    /// something this issuer cannot accept (a bad signature, a wrong `nonce`): HTTP 400/403 page.
    #[error("upstream error: {0}")]
    Upstream(String),
    /// The callback does not belong to a login this issuer started (missing or foreign `state`).
    #[error("invalid callback: {0}")]
    InvalidCallback(String),
    /// A refresh spent the upstream's refresh token (the upstream rotated it), then could not finish:
    /// like `Unavailable` (503, retry later), but the old upstream token no longer works, so `data` — the
    /// connector data with the new upstream tokens — must be kept for the next attempt. The issuer stores
    /// it with the downstream refresh token, so the retry works on any replica.
    #[error("upstream unavailable after a rotation: {why}")]
    Interrupted {
        /// What failed after the rotation.
        why: String,
        /// The connector data to keep.
        data: ConnectorData,
    },
}

/// Checks a login name and password (LDAP, Atlassian Crowd, the password database).
#[async_trait]
pub trait PasswordConnector: Send + Sync {
    /// The identity for `login`/`password`, or `None` if they do not match. The password is passed on
    /// exactly as typed; an empty one never reaches the upstream.
    async fn login(&self, login: &str, password: &str) -> Result<Option<Identity>, ConnectorError>;
    /// What the login field is called on the form (Dex's `usernamePrompt`).
    fn prompt(&self) -> &str;
}

/// What the issuer hands a callback connector for one login: the values it must send upstream and check
/// on the way back. All are derived from the server key and the pending login, so no extra state is
/// stored and any replica can take the callback.
#[derive(Debug, Clone)]
pub struct CallbackRequest {
    /// The OAuth 2.0 `state` to send: names the connector and the pending login.
    pub state: String,
    /// An OIDC `nonce` to send and to find again in the upstream ID token.
    pub nonce: String,
    /// A PKCE `code_verifier` (RFC 7636 §4.1), 43 characters; send `S256` of it where supported.
    pub pkce_verifier: String,
    /// Whether the login needs to be refreshable (the client asked for `offline_access`).
    pub offline_access: bool,
}

/// Sends the browser to an upstream login and turns the callback into an identity (OIDC, GitHub, GitLab,
/// Bitbucket Cloud).
#[async_trait]
pub trait CallbackConnector: Send + Sync {
    /// The upstream authorization URL to redirect the browser to.
    async fn login_url(&self, request: &CallbackRequest) -> Result<String, ConnectorError>;
    /// Handles the query of `GET /callback` for `request` (already matched by `state`).
    async fn handle_callback(
        &self,
        request: &CallbackRequest,
        query: &HashMap<String, String>,
    ) -> Result<Identity, ConnectorError>;
}

/// Re-reads a user at refresh, so that removed users, disabled accounts and group changes reach new tokens.
#[async_trait]
pub trait RefreshConnector: Send + Sync {
    /// The user's current identity (with updated `connector_data`), or `None` if the user no longer exists.
    async fn refresh(&self, identity: &Identity) -> Result<Option<Identity>, ConnectorError>;
    /// Whether a refresh spends something upstream (a rotating upstream refresh token), so that two
    /// refreshes of one family must never both reach the upstream.
    fn refresh_consumes_upstream_token(&self, _identity: &Identity) -> bool {
        false
    }
}

/// What `check-config --probe` learned about one connector's upstream.
#[derive(Debug, Clone, Default)]
pub struct ProbeReport {
    /// What was checked, e.g. "bound as cn=dex and read ou=people,dc=example,dc=org".
    pub detail: String,
    /// The upstream's TLS certificate (DER), when the connection used TLS.
    pub peer_certificate: Option<Vec<u8>>,
    /// Why TLS does not protect this connector, when it does not (`insecureSkipVerify`, plain LDAP).
    pub tls_warning: Option<String>,
}

/// Connects to the upstream the way a login would, without a user (`issuer check-config --probe`, what
/// Deckhouse's `DexProviderCheck` does in a cluster).
#[async_trait]
pub trait Probe: Send + Sync {
    /// Reachable (and what was checked), or why not.
    async fn probe(&self) -> Result<ProbeReport, ConnectorError>;
}

/// How a connector signs people in.
#[derive(Clone)]
pub enum Login {
    /// A form on the issuer's page.
    Password(Arc<dyn PasswordConnector>),
    /// A redirect to the upstream and back to `/callback`.
    Callback(Arc<dyn CallbackConnector>),
}

/// One configured connector, ready to use.
#[derive(Clone)]
pub struct Connector {
    /// `id`, recorded in every identity and in the `sub` it mints.
    pub id: String,
    /// `name`, shown on the login page.
    pub name: String,
    /// Dex's `type` string.
    pub kind: &'static str,
    /// How it signs people in.
    pub login: Login,
    /// How it re-checks users at refresh.
    pub refresh: Arc<dyn RefreshConnector>,
    /// How `check-config --probe` reaches its upstream (`None` for the password database).
    pub probe: Option<Arc<dyn Probe>>,
    /// Who it lets in.
    pub policy: Policy,
}

impl Connector {
    /// The form prompt of a password connector.
    pub fn prompt(&self) -> Option<&str> {
        match &self.login {
            Login::Password(p) => Some(p.prompt()),
            Login::Callback(_) => None,
        }
    }
}

/// `connectors[i]` after validation: the common keys and the type's own configuration.
#[derive(Debug, Clone)]
pub struct ConnectorConfig {
    /// `id`: letters, digits, `-` and `_`.
    pub id: String,
    /// `name`.
    pub name: String,
    /// The policy keys of `config` (`allowedEmails`, `allowedEmailDomains`, `allowedGroups`, `groupsPrefix`).
    pub policy: Policy,
    /// The type and its configuration.
    pub kind: ConnectorKind,
}

/// Each connector type's configuration (Dex's `type` strings).
#[derive(Debug, Clone)]
#[allow(clippy::large_enum_variant)] // parsed once at start-up; boxing buys nothing
pub enum ConnectorKind {
    /// `ldap`.
    Ldap(ldap::Config),
    /// `oidc`.
    Oidc(oidc::Config),
    /// `bitbucket-cloud`.
    BitbucketCloud(bitbucket_cloud::Config),
    /// `atlassian-crowd`.
    AtlassianCrowd(atlassian_crowd::Config),
    /// `github`.
    GitHub(github::Config),
    /// `gitlab`.
    GitLab(gitlab::Config),
}

/// The `type` strings the registry knows, for error messages.
pub const TYPES: &[&str] = &["ldap", "oidc", "github", "gitlab", "bitbucket-cloud", "atlassian-crowd"];

/// Dex connector types this issuer deliberately does not implement (Dex has them; a config naming one
/// gets this explanation instead of "unknown type").
const NOT_IMPLEMENTED: &[&str] = &[
    "saml",
    "keystone",
    "authproxy",
    "linkedin",
    "microsoft",
    "google",
    "openshift",
    "gitea",
    "oauth",
    "mockCallback",
    "mockPassword",
];

impl ConnectorConfig {
    /// Validates one entry of `connectors:`. `key` is its path (`connectors[0]`); `value` is the raw `config`
    /// mapping, whose `$VAR` strings are expanded from `env` first. Problems name the key under `key`.
    pub fn parse(
        key: &str,
        kind: &str,
        id: String,
        name: String,
        value: serde_yaml::Value,
        env: &dyn Fn(&str) -> Option<String>,
        problems: &mut Vec<Problem>,
    ) -> Option<Self> {
        let mut problem = |k: String, e: String| problems.push(Problem::new(k, e));
        if id.is_empty() || !id.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')) {
            problem(format!("{key}.id"), format!("a non-empty id of letters, digits, '-', '_' and '.', got {id:?}"));
        }
        if id == local::CONNECTOR_ID {
            problem(format!("{key}.id"), "an id other than \"local\" (the password database's)".into());
        }
        let config_key = format!("{key}.config");
        let mut value = match value {
            serde_yaml::Value::Null => serde_yaml::Value::Mapping(Default::default()),
            v => v,
        };
        let mut local = Vec::new();
        config_values::expand(&config_key, &mut value, env, &mut local);
        let policy = config_values::take_policy(&config_key, &mut value, &mut local);
        for p in local.drain(..) {
            problem(p.key, p.expected);
        }
        let name = if name.is_empty() { id.clone() } else { name };
        let kind = match kind {
            "ldap" => config_values::typed(&config_key, value, problems).map(ConnectorKind::Ldap),
            "oidc" => config_values::typed(&config_key, value, problems).map(ConnectorKind::Oidc),
            "bitbucket-cloud" => config_values::typed(&config_key, value, problems).map(ConnectorKind::BitbucketCloud),
            "atlassian-crowd" => config_values::typed(&config_key, value, problems).map(ConnectorKind::AtlassianCrowd),
            "github" => config_values::typed(&config_key, value, problems).map(ConnectorKind::GitHub),
            "gitlab" => config_values::typed(&config_key, value, problems).map(ConnectorKind::GitLab),
            other if NOT_IMPLEMENTED.contains(&other) => {
                problems.push(Problem::new(
                    format!("{key}.type"),
                    format!("one of {} (Dex's {other:?} connector is not supported by this issuer)", TYPES.join(", ")),
                ));
                None
            }
            other => {
                problems
                    .push(Problem::new(format!("{key}.type"), format!("one of {}, got {other:?}", TYPES.join(", "))));
                None
            }
        }?;
        let mut this = Self { id, name, policy: policy?, kind };
        this.validate(key, problems);
        Some(this)
    }

    fn validate(&mut self, key: &str, problems: &mut Vec<Problem>) {
        let key = format!("{key}.config");
        match &mut self.kind {
            ConnectorKind::Ldap(c) => c.validate(&key, problems),
            ConnectorKind::Oidc(c) => c.validate(&key, problems),
            ConnectorKind::BitbucketCloud(c) => c.validate(&key, problems),
            ConnectorKind::AtlassianCrowd(c) => c.validate(&key, problems),
            ConnectorKind::GitHub(c) => c.validate(&key, problems),
            ConnectorKind::GitLab(c) => c.validate(&key, problems),
        }
    }

    /// The `redirectURI` a callback connector sends upstream (it must be this issuer's `/callback`).
    pub fn redirect_uri(&self) -> Option<&str> {
        match &self.kind {
            ConnectorKind::Oidc(c) => Some(&c.redirect_uri),
            ConnectorKind::GitHub(c) => Some(&c.redirect_uri),
            ConnectorKind::GitLab(c) => Some(&c.redirect_uri),
            ConnectorKind::BitbucketCloud(c) => c.redirect_uri.as_deref(),
            ConnectorKind::Ldap(_) | ConnectorKind::AtlassianCrowd(_) => None,
        }
    }
}

/// Helpers for connector `config:` mappings: `$VAR` expansion, `*File` secrets, the policy keys, and typed
/// deserialization whose errors name the key path.
pub(crate) mod config_values {
    use serde_yaml::Value;

    use super::Policy;
    use crate::config::{is_env_name, Problem};

    /// Keys that hold secrets: each may instead be given as `<key>File`, a path whose contents are read.
    const SECRET_KEYS: &[&str] = &["clientSecret", "bindPW"];

    /// Expands string values that are exactly `$NAME` or `${NAME}` from the environment (Dex expands
    /// environment variables in connector configurations), and reads `<secret>File` keys.
    pub(crate) fn expand(
        key: &str,
        value: &mut Value,
        env: &dyn Fn(&str) -> Option<String>,
        problems: &mut Vec<Problem>,
    ) {
        match value {
            Value::String(s) => match expand_string(s, env) {
                Ok(expanded) => *s = expanded,
                Err(name) => problems
                    .push(Problem::new(key.to_owned(), format!("environment variable {name} to be set and non-empty"))),
            },
            Value::Sequence(items) => {
                for (i, v) in items.iter_mut().enumerate() {
                    expand(&format!("{key}[{i}]"), v, env, problems);
                }
            }
            Value::Mapping(m) => {
                for (k, v) in m.iter_mut() {
                    let sub = format!("{key}.{}", k.as_str().unwrap_or("?"));
                    expand(&sub, v, env, problems);
                }
                for secret in SECRET_KEYS {
                    let file_key = format!("{secret}File");
                    let Some(path) = m.remove(file_key.as_str()) else { continue };
                    let Some(path) = path.as_str().map(str::to_owned) else {
                        problems.push(Problem::new(format!("{key}.{file_key}"), "a file path"));
                        continue;
                    };
                    if m.contains_key(*secret) {
                        problems.push(Problem::new(
                            format!("{key}.{file_key}"),
                            format!("either {secret} or {file_key}, not both"),
                        ));
                        continue;
                    }
                    match std::fs::read_to_string(&path) {
                        Ok(text) => {
                            m.insert(Value::from(*secret), Value::from(text.trim_end_matches(['\n', '\r'])));
                        }
                        Err(e) => problems.push(Problem::new(
                            format!("{key}.{file_key}"),
                            format!("a readable file, but {path}: {e}"),
                        )),
                    }
                }
            }
            _ => {}
        }
    }

    /// `$NAME` and `${NAME}` anywhere in `s` replaced from the environment, as Dex (Go's `os.ExpandEnv`)
    /// does — except that an unset or empty variable is an error (its name), not a silent empty string. A
    /// `$` not followed by a name stays as it is.
    pub(crate) fn expand_string(s: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
        let mut out = String::with_capacity(s.len());
        let mut rest = s;
        while let Some(i) = rest.find('$') {
            out.push_str(&rest[..i]);
            let after = &rest[i + 1..];
            let (name, len) = if let Some(braced) = after.strip_prefix('{') {
                match braced.find('}') {
                    Some(end) if is_env_name(&braced[..end]) => (&braced[..end], end + 2),
                    _ => ("", 0),
                }
            } else {
                let end = after
                    .char_indices()
                    .find(|(j, c)| !(c.is_ascii_alphanumeric() || *c == '_') || (*j == 0 && c.is_ascii_digit()))
                    .map_or(after.len(), |(j, _)| j);
                (&after[..end], end)
            };
            if name.is_empty() {
                out.push('$');
                rest = after;
                continue;
            }
            match env(name) {
                Some(v) if !v.is_empty() => out.push_str(&v),
                _ => return Err(name.to_owned()),
            }
            rest = &after[len..];
        }
        out.push_str(rest);
        Ok(out)
    }

    /// Removes the policy keys from a connector's mapping and validates them.
    pub(crate) fn take_policy(key: &str, value: &mut Value, problems: &mut Vec<Problem>) -> Option<Policy> {
        let Value::Mapping(m) = value else {
            problems.push(Problem::new(key.to_owned(), "a mapping of the connector's settings"));
            return None;
        };
        let mut list = |name: &str| -> Vec<String> {
            match m.remove(name) {
                None => vec![],
                Some(v) => match serde_yaml::from_value::<Vec<String>>(v) {
                    Ok(l) => l,
                    Err(_) => {
                        problems.push(Problem::new(format!("{key}.{name}"), "a list of strings"));
                        vec![]
                    }
                },
            }
        };
        let allowed_emails = list("allowedEmails");
        let allowed_email_domains = list("allowedEmailDomains");
        let allowed_groups = list("allowedGroups");
        let groups_prefix = match m.remove("groupsPrefix") {
            None => String::new(),
            Some(Value::String(s)) => s,
            Some(_) => {
                problems.push(Problem::new(format!("{key}.groupsPrefix"), "a string"));
                String::new()
            }
        };
        Some(Policy::new(allowed_emails, allowed_email_domains, allowed_groups, groups_prefix))
    }

    pub(crate) use crate::config::source::typed;
}

/// The connectors of a running issuer, by id, in configuration order.
#[derive(Clone, Default)]
pub struct Connectors {
    list: Vec<Connector>,
}

/// Start-up failures of a connector (a bad CA file, an unusable key).
#[derive(Debug, thiserror::Error)]
#[error("connector {id}: {message}")]
pub struct BuildError {
    /// The connector's id.
    pub id: String,
    /// What went wrong.
    pub message: String,
}

impl Connectors {
    /// Builds every configured connector, the password database (`local`, whose users are in the
    /// configuration and in `storage`) first when it is enabled.
    pub fn new(config: &Config, storage: Arc<dyn crate::storage::Storage>) -> Result<Self, BuildError> {
        let mut list = Vec::new();
        if config.enable_password_db {
            let local = Arc::new(local::StaticPasswords::new(config.static_passwords.clone(), storage));
            list.push(Connector {
                id: local::CONNECTOR_ID.to_owned(),
                name: "Email".to_owned(),
                kind: "local",
                login: Login::Password(local.clone()),
                refresh: local,
                probe: None,
                policy: Policy::default(),
            });
        }
        for c in &config.connectors {
            let err = |message: String| BuildError { id: c.id.clone(), message };
            let (kind, login, refresh, probe): (&'static str, Login, Arc<dyn RefreshConnector>, Arc<dyn Probe>) =
                match &c.kind {
                    ConnectorKind::Ldap(cfg) => {
                        let l = Arc::new(ldap::Ldap::new(&c.id, cfg.clone()).map_err(err)?);
                        ("ldap", Login::Password(l.clone()), l.clone(), l)
                    }
                    ConnectorKind::Oidc(cfg) => {
                        let o = Arc::new(oidc::Oidc::new(&c.id, cfg.clone()).map_err(err)?);
                        ("oidc", Login::Callback(o.clone()), o.clone(), o)
                    }
                    ConnectorKind::BitbucketCloud(cfg) => {
                        let callback = format!("{}/callback", config.issuer.as_str().trim_end_matches('/'));
                        let b =
                            Arc::new(bitbucket_cloud::BitbucketCloud::new(&c.id, cfg.clone(), &callback).map_err(err)?);
                        ("bitbucket-cloud", Login::Callback(b.clone()), b.clone(), b)
                    }
                    ConnectorKind::AtlassianCrowd(cfg) => {
                        let a = Arc::new(atlassian_crowd::AtlassianCrowd::new(&c.id, cfg.clone()).map_err(err)?);
                        ("atlassian-crowd", Login::Password(a.clone()), a.clone(), a)
                    }
                    ConnectorKind::GitHub(cfg) => {
                        let g = Arc::new(github::GitHub::new(&c.id, cfg.clone()).map_err(err)?);
                        ("github", Login::Callback(g.clone()), g.clone(), g)
                    }
                    ConnectorKind::GitLab(cfg) => {
                        let g = Arc::new(gitlab::GitLab::new(&c.id, cfg.clone()).map_err(err)?);
                        ("gitlab", Login::Callback(g.clone()), g.clone(), g)
                    }
                };
            list.push(Connector {
                id: c.id.clone(),
                name: c.name.clone(),
                kind,
                login,
                refresh,
                probe: Some(probe),
                policy: c.policy.clone(),
            });
        }
        Ok(Self { list })
    }

    /// The connector with this id.
    pub fn get(&self, id: &str) -> Option<&Connector> {
        self.list.iter().find(|c| c.id == id)
    }

    /// The connectors `client` may use (Dex's per-client `allowedConnectors`; all when it is empty).
    pub fn for_client<'a>(&'a self, client: &'a Client) -> impl Iterator<Item = &'a Connector> + 'a {
        self.list.iter().filter(move |c| client.allows_connector(&c.id))
    }

    /// Every connector.
    pub fn iter(&self) -> impl Iterator<Item = &Connector> {
        self.list.iter()
    }
}

/// Dex's `sub` for a user of a connector: the protobuf message `IDTokenSubject { string user_id = 1;
/// string conn_id = 2; }` (Dex `server/internal/types.proto`), serialized and base64url-encoded without
/// padding. Tokens keep the subjects Dex minted for the same user and connector.
pub fn dex_subject(user_id: &str, connector_id: &str) -> String {
    use base64::Engine as _;
    let mut buf = Vec::with_capacity(user_id.len() + connector_id.len() + 6);
    for (tag, field) in [(0x0a_u8, user_id), (0x12, connector_id)] {
        if field.is_empty() {
            continue; // proto3: empty strings are not serialized
        }
        buf.push(tag);
        let mut len = field.len();
        while len >= 0x80 {
            buf.push((len as u8 & 0x7f) | 0x80);
            len >>= 7;
        }
        buf.push(len as u8);
        buf.extend_from_slice(field.as_bytes());
    }
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(buf)
}

/// The `sub` of an identity in the given format.
pub fn subject(identity: &Identity, format: SubjectFormat) -> String {
    match format {
        SubjectFormat::Dex => dex_subject(&identity.user_id, &identity.connector_id),
        SubjectFormat::Plain if identity.connector_id == local::CONNECTOR_ID => identity.user_id.clone(),
        SubjectFormat::Plain => format!("{}:{}", identity.connector_id, identity.user_id),
    }
}

/// How `sub` is built from a connector's user id (`oauth2.subjectFormat`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SubjectFormat {
    /// Dex's encoding ([`dex_subject`]): the same `sub` Dex mints for the same user and connector.
    #[default]
    Dex,
    /// Readable: the user id for the password database, `<connector id>:<user id>` otherwise.
    Plain,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn environment_variables_expand_anywhere_in_a_value_and_unset_ones_are_named() {
        let env = |n: &str| match n {
            "HOST" => Some("id.example.com".to_owned()),
            "EMPTY" => Some(String::new()),
            _ => None,
        };
        let x = |s: &str| config_values::expand_string(s, &env);
        assert_eq!(x("https://$HOST/callback").unwrap(), "https://id.example.com/callback");
        assert_eq!(x("https://${HOST}/callback").unwrap(), "https://id.example.com/callback");
        assert_eq!(x("$HOST").unwrap(), "id.example.com");
        assert_eq!(x("no variables").unwrap(), "no variables");
        assert_eq!(x("costs $5 or $ or ${not a name}").unwrap(), "costs $5 or $ or ${not a name}");
        assert_eq!(x("${MISSING}x"), Err("MISSING".to_owned()));
        assert_eq!(x("a$EMPTY"), Err("EMPTY".to_owned()));
    }

    #[test]
    fn serde_messages_become_what_was_expected() {
        let d = crate::config::source::describe;
        assert_eq!(d("invalid type: integer `12345`, expected a string"), "a string, got integer `12345`");
        assert_eq!(
            d("unknown field `nmae`, expected one of `name`, `id`"),
            "one of `name`, `id` (`nmae` is not a key here)"
        );
        assert_eq!(d("missing field `host`"), "the required key `host`");
    }

    #[test]
    fn dex_subjects_match_what_dex_mints() {
        // The subject Dex's documentation and kubelogin's show for Dex's example static user
        // (userID "0-385-28089-0", connector "local").
        assert_eq!(dex_subject("0-385-28089-0", "local"), "Cg0wLTM4NS0yODA4OS0wEgVsb2NhbA");
        // A 200-byte id needs a two-byte varint length.
        let long = "x".repeat(200);
        let sub = dex_subject(&long, "ldap");
        use base64::Engine as _;
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(sub).unwrap();
        assert_eq!(&raw[..3], &[0x0a, 0xc8, 0x01]);
        assert_eq!(&raw[203..], b"\x12\x04ldap");
    }
}
