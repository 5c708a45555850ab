//! The issuer's YAML configuration: parsing, secret resolution and validation. Key names follow Dex where
//! the concept is the same, so a Dex configuration reads familiar. Nothing here touches the network or
//! storage; `validate` lists every problem at once, each naming the file, the key and what was expected.

use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use url::Url;

use crate::keys::Algorithm;

pub(crate) mod source;

/// A configuration that was read, resolved and validated.
#[derive(Debug, Clone)]
pub struct Config {
    /// The issuer URL, exactly as it appears in `iss` (no trailing slash).
    pub issuer: Url,
    /// Listeners and TLS.
    pub web: Web,
    /// Where state lives.
    pub storage: StorageConfig,
    /// Token and key lifetimes.
    pub expiry: Expiry,
    /// Signing algorithm.
    pub signing: Signing,
    /// OAuth 2.0 behaviour.
    pub oauth2: OAuth2,
    /// Login throttling.
    pub brute_force: BruteForce,
    /// Logging.
    pub logger: Logger,
    /// Dex's `telemetry:`: a separate listener for `/metrics` and the health checks.
    pub telemetry: Telemetry,
    /// Dex's `grpc:`: the administration API; `None` when the section is absent.
    pub grpc: Option<crate::grpc::GrpcConfig>,
    /// Registered clients.
    pub static_clients: Vec<Client>,
    /// Users of the built-in password database.
    pub static_passwords: Vec<StaticPassword>,
    /// Whether the password database is enabled (Dex's `enablePasswordDB`).
    pub enable_password_db: bool,
    /// Kubernetes access (`kubernetes:`); `None` when the section is absent.
    pub kubernetes: Option<Kubernetes>,
    /// Upstream identity providers (`connectors:`), in configuration order.
    pub connectors: Vec<crate::connector::ConnectorConfig>,
    /// `oauth2.subjectFormat`: how `sub` is built (default Dex's encoding, so subjects survive a migration).
    pub subject_format: crate::connector::SubjectFormat,
    /// Dex keys accepted without Dex's effect, each saying what happens instead (logged at start-up and
    /// printed by `check-config`).
    pub warnings: Vec<Warning>,
    /// Dex's `frontend:`: the pages' name, logo, theme and extra strings.
    pub frontend: crate::frontend::Frontend,
    /// Dex's `sessions:`: browser sessions (single sign-on).
    pub sessions: crate::session::Sessions,
}

/// `web:` — where the issuer listens.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Web {
    /// Plain HTTP listen address.
    #[serde(default)]
    pub http: Option<String>,
    /// HTTPS listen address (needs `tlsCert` and `tlsKey`).
    #[serde(default)]
    pub https: Option<String>,
    /// PEM certificate chain.
    #[serde(default)]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key.
    #[serde(default)]
    pub tls_key: Option<PathBuf>,
    /// Dex's `tlsMinVersion`: `1.2` (default) or `1.3`.
    #[serde(default)]
    pub tls_min_version: Option<String>,
    /// Dex's `tlsMaxVersion`: `1.2` or `1.3` (default).
    #[serde(default)]
    pub tls_max_version: Option<String>,
    /// Proxies (addresses or CIDR ranges) whose client-address header is believed when throttling per
    /// client IP. The older spelling of `clientRemoteIP.trustedProxies`; both may be used.
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
    /// Dex's `clientRemoteIP`: which header carries the client's address and which proxies may set it.
    #[serde(default, rename = "clientRemoteIP")]
    pub client_remote_ip: Option<ClientRemoteIp>,
    /// Dex's `headers`: response headers added to every response (e.g. `Strict-Transport-Security`);
    /// they replace the issuer's own value of the same header.
    #[serde(default)]
    pub headers: std::collections::BTreeMap<String, String>,
    /// Every trusted proxy range, from `trustedProxies` and `clientRemoteIP.trustedProxies` (validated).
    #[serde(skip)]
    pub proxies: Vec<ipnet::IpNet>,
    /// Dex's `allowedOrigins`: browser origins (`https://spa.example`, or `*` for any) that may call
    /// discovery, `/keys`, `/token`, `/userinfo`, `/revoke` and `/device/code` (CORS). Empty: none.
    #[serde(default)]
    pub allowed_origins: Vec<String>,
    /// Dex's `allowedHeaders`: request headers those origins may send. Default `Authorization` and
    /// `Content-Type`.
    #[serde(default)]
    pub allowed_headers: Vec<String>,
}

/// `web.clientRemoteIP`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ClientRemoteIp {
    /// The header a trusted proxy puts the client's address in (default `X-Forwarded-For`: the
    /// right-most address not of a trusted proxy counts).
    #[serde(default)]
    pub header: Option<String>,
    /// Addresses or CIDR ranges of trusted proxies.
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
}

impl Web {
    /// The header holding the client's address behind a trusted proxy.
    pub fn client_ip_header(&self) -> &str {
        self.client_remote_ip.as_ref().and_then(|c| c.header.as_deref()).unwrap_or("x-forwarded-for")
    }
}

/// `telemetry:` (Dex's keys).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Telemetry {
    /// Listen address for `/metrics`, `/healthz`, `/healthz/live` and `/healthz/ready`, apart from the
    /// public listeners (which serve them too), so that probes and scrapers need no route to the public
    /// port.
    #[serde(default)]
    pub http: Option<String>,
    /// Dex's Go profiling endpoints: none are served (a warning says so when `true`).
    #[serde(default)]
    pub enable_profiling: bool,
}

/// `storage:` — the backend.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(clippy::large_enum_variant)] // built once at start-up; boxing would only add noise to every match
pub enum StorageConfig {
    /// Process memory; lost on restart.
    Memory,
    /// An SQLite database file.
    Sqlite {
        /// Path of the database file.
        file: PathBuf,
    },
    /// A PostgreSQL database: what several replicas share.
    Postgres(PostgresConfig),
}

/// `storage.config` for `type: postgres` (Dex's key names).
#[derive(Clone, PartialEq, Eq)]
pub struct PostgresConfig {
    /// Server host name or address.
    pub host: String,
    /// Server port.
    pub port: u16,
    /// Database name.
    pub database: String,
    /// User name.
    pub user: String,
    /// Password, if the server asks for one.
    pub password: Option<String>,
    /// `disable`, `prefer`, `require`, `verify-ca` or `verify-full`.
    pub ssl_mode: String,
    /// CA certificate for `verify-ca`/`verify-full`.
    pub ssl_ca_file: Option<PathBuf>,
    /// Dex's `ssl.certFile` / `ssl.keyFile`: a client certificate for the server.
    pub ssl_cert_file: Option<PathBuf>,
    /// The client certificate's key.
    pub ssl_key_file: Option<PathBuf>,
    /// Connection pool size (`maxOpenConns`, default 16).
    pub max_open_conns: u32,
    /// `connectionTimeout` (seconds): how long a request waits for a connection, connecting included
    /// (default 3 s, so an unreachable database answers 503 quickly).
    pub connection_timeout: Option<Duration>,
    /// `connMaxLifetime` (seconds): connections older than this are replaced.
    pub conn_max_lifetime: Option<Duration>,
}

impl fmt::Debug for PostgresConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresConfig")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("database", &self.database)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("ssl_mode", &self.ssl_mode)
            .finish_non_exhaustive()
    }
}

/// `expiry:` — lifetimes.
#[derive(Debug, Clone)]
pub struct Expiry {
    /// How long a signing key signs before the next one takes over (Dex `signingKeys`).
    pub signing_keys: Duration,
    /// ID token (and access token) lifetime.
    pub id_tokens: Duration,
    /// How long a started login may take.
    pub auth_requests: Duration,
    /// Authorization code lifetime.
    pub auth_codes: Duration,
    /// How long a device authorization (RFC 8628 device and user code) may wait for the user.
    pub device_requests: Duration,
    /// Refresh tokens.
    pub refresh_tokens: RefreshExpiry,
}

/// `expiry.refreshTokens:`.
#[derive(Debug, Clone)]
pub struct RefreshExpiry {
    /// A refresh token not used for this long is dead.
    pub valid_if_not_used_for: Duration,
    /// A login's refresh tokens die this long after the login, however often they are used.
    pub absolute_lifetime: Duration,
    /// A rotated refresh token presented again within this window gets its successor. Zero is strict
    /// single use: any second presentation revokes the family (RFC 9700 §4.14.2).
    pub reuse_interval: Duration,
    /// Dex's `disableRotation`: a refresh returns the same refresh token, which then lives for the
    /// family's `absoluteLifetime` (and dies after `validIfNotUsedFor` without use). Off by default.
    pub disable_rotation: bool,
}

/// `signing:`.
#[derive(Debug, Clone)]
pub struct Signing {
    /// JWS algorithm of every token.
    pub algorithm: Algorithm,
}

/// `oauth2:` (Dex's keys).
#[derive(Debug, Clone)]
pub struct OAuth2 {
    /// `grantTypes`: the grants the token endpoint accepts and discovery advertises. Default:
    /// `authorization_code`, `refresh_token` and the device code; `password` too when `passwordConnector` is
    /// set, `implicit` when `responseTypes` has more than `code`. `client_credentials` and token exchange only
    /// when listed.
    pub grant_types: Vec<GrantType>,
    /// `responseTypes`: what `/auth` accepts as `response_type` parts (`code`, `id_token`, `token`).
    /// Default `[code]`.
    pub response_types: Vec<String>,
    /// `alwaysShowLoginScreen`: show the login page even when a single callback connector could be entered
    /// at once.
    pub always_show_login_screen: bool,
    /// `passwordConnector`: the connector the resource owner password grant checks passwords with.
    pub password_connector: Option<String>,
    /// `pkce:`.
    pub pkce: Pkce,
    /// `accessTokenFormat` (tokengate's own key): `jwt` (default, RFC 9068) or `opaque`.
    pub access_token_format: crate::token::AccessTokenFormat,
}

impl OAuth2 {
    /// Whether the token endpoint accepts `grant`.
    pub fn allows(&self, grant: GrantType) -> bool {
        self.grant_types.contains(&grant)
    }
}

/// `oauth2.pkce` (RFC 7636).
#[derive(Debug, Clone)]
pub struct Pkce {
    /// `enforce`: every authorization-code request must carry a `code_challenge`, confidential clients too.
    pub enforce: bool,
    /// `codeChallengeMethodsSupported`: `S256` and/or `plain` (default both; `plain` only for clients with
    /// `allowPlainPKCE`).
    pub code_challenge_methods_supported: Vec<String>,
}

pub use crate::oauth::GrantType;

/// `bruteForce:` — token buckets for password logins.
#[derive(Debug, Clone, Copy)]
pub struct BruteForce {
    /// Attempts a user may spend at once.
    pub max_attempts: u32,
    /// One attempt comes back this often.
    pub refill_interval: Duration,
    /// Attempts one client IP may spend at once, across users.
    pub per_ip_max_attempts: u32,
    /// One per-IP attempt comes back this often.
    pub per_ip_refill_interval: Duration,
}

/// `logger:`.
#[derive(Debug, Clone)]
pub struct Logger {
    /// `tracing` filter, e.g. `info`.
    pub level: String,
    /// `text` or `json`.
    pub format: LogFormat,
    /// `excludeFields`: names of fields left out of every log line (e.g. `ip`, `user`).
    pub exclude_fields: Vec<String>,
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable.
    Text,
    /// One JSON object per line.
    Json,
}

/// A registered OAuth 2.0 client.
#[derive(Clone)]
pub struct Client {
    /// `client_id`.
    pub id: String,
    /// Shared secret; `None` for public clients.
    pub secret: Option<String>,
    /// Public clients have no secret and must use PKCE.
    pub public: bool,
    /// Display name.
    pub name: String,
    /// Redirect URIs, matched exactly (loopback ones with any port: [`Client::accepts_redirect_uri`]).
    pub redirect_uris: Vec<String>,
    /// Clients allowed to mint tokens with this client in `aud` (Dex cross-client trust).
    pub trusted_peers: Vec<String>,
    /// Where RP-initiated logout may send the browser.
    pub post_logout_redirect_uris: Vec<String>,
    /// Allow PKCE `plain` (never for public clients).
    pub allow_plain_pkce: bool,
    /// Connectors this client may use, on every grant including refresh (Dex's `allowedConnectors`);
    /// empty: all.
    pub allowed_connectors: Vec<String>,
    /// Who may sign in to this client (`allowedEmails`, `allowedEmailDomains`, `allowedGroups`).
    pub policy: crate::connector::Policy,
    /// Dex's `logoURL`: shown on the login page beside the client's name.
    pub logo_url: Option<String>,
    /// Dex's `ssoSharedWith`: the clients a browser session this client signed in may sign in silently
    /// (`*`: all); `None` follows `sessions.ssoSharedWithDefault` ([`crate::session::Sessions::shares`]).
    pub sso_shared_with: Option<Vec<String>>,
    /// Dex's `backchannelLogoutURI`: where the issuer POSTs a logout token when a browser session this
    /// client received tokens in ends (OpenID Connect Back-Channel Logout 1.0 §2.2); `None`: never.
    pub backchannel_logout_uri: Option<String>,
    /// `backchannelLogoutSessionRequired` (§2.2): the client needs `sid` in logout tokens. The issuer
    /// always sends it, so this only documents the client's expectation.
    pub backchannel_logout_session_required: bool,
}

impl Client {
    /// Whether `uri` is one of this client's redirect URIs: an exact match, or (RFC 8252 §7.3) a loopback
    /// redirect that differs from a registered one only in its port, because a native app listens on
    /// whatever port is free. Loopback means the IP literals `127.0.0.1` and `[::1]`, and `localhost`
    /// (which Dex accepts too); scheme `http`; path, query and everything else stay exact. A public client
    /// may also use the out-of-band URI ([`crate::oauth::OOB_REDIRECT_URI`]), as in Dex.
    pub fn accepts_redirect_uri(&self, uri: &str) -> bool {
        (self.public && uri == crate::oauth::OOB_REDIRECT_URI)
            || self.redirect_uris.iter().any(|r| r == uri || loopback_matches(r, uri))
    }

    /// Whether users of connector `id` may sign in to this client.
    pub fn allows_connector(&self, id: &str) -> bool {
        self.allowed_connectors.is_empty() || self.allowed_connectors.iter().any(|c| c == id)
    }
}

/// `scheme://host[:port]` with nothing after it (RFC 6454 §6.2 serialization).
fn is_origin(s: &str) -> bool {
    url::Url::parse(s).is_ok_and(|u| {
        matches!(u.scheme(), "http" | "https")
            && u.host().is_some()
            && u.path() == "/"
            && !s.ends_with('/')
            && u.query().is_none()
            && u.fragment().is_none()
            && u.username().is_empty()
    })
}

fn loopback_matches(registered: &str, asked: &str) -> bool {
    let (Ok(r), Ok(a)) = (url::Url::parse(registered), url::Url::parse(asked)) else {
        return false;
    };
    let loopback = match r.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(d)) => d == "localhost",
        None => false,
    };
    let without_port = |mut u: url::Url| {
        let _ = u.set_port(None);
        u
    };
    loopback
        && r.scheme() == "http"
        && a.host() == r.host()
        && a.username().is_empty()
        && a.password().is_none()
        && without_port(a) == without_port(r)
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("id", &self.id)
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .field("public", &self.public)
            .field("redirect_uris", &self.redirect_uris)
            .field("trusted_peers", &self.trusted_peers)
            .finish_non_exhaustive()
    }
}

/// `kubernetes:` — what kube-apiserver and kubectl users need. Dex has no such section; the key names are
/// this issuer's own.
#[derive(Debug, Clone)]
pub struct Kubernetes {
    /// The client kube-apiserver trusts (`--oidc-client-id`, the `aud` of kubectl's ID tokens); it must be
    /// in `staticClients`. Default `kubernetes`.
    pub client_id: String,
    /// Prefix kube-apiserver puts before every group (`--oidc-groups-prefix`). Default `oidc:`, so no group
    /// from the issuer can pose as a built-in `system:` group.
    pub groups_prefix: String,
    /// Path (under the issuer) of the kubeconfig page. Default `/kubeconfig`.
    pub kubeconfig_path: String,
    /// The CA that signed the issuer's own TLS certificate (PEM), for kube-apiserver's `--oidc-ca-file` and
    /// kubeconfigs' `idp-certificate-authority-data`. From `issuerCertificateAuthority` (a file), else
    /// `web.tlsCert` when the issuer is https.
    pub issuer_ca: Option<CaFile>,
    /// Clusters the kubeconfig page writes configurations for.
    pub clusters: Vec<Cluster>,
}

/// A PEM file and its contents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaFile {
    /// Where it was read from.
    pub path: PathBuf,
    /// The PEM text.
    pub pem: String,
}

/// `kubernetes.clusters[]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cluster {
    /// Name used for the cluster, user and context in kubeconfigs.
    pub name: String,
    /// The API server URL.
    pub server: String,
    /// The API server's CA bundle (PEM), from `certificateAuthorityData` (base64) or `certificateAuthority`
    /// (a file); `None` means the system roots.
    pub certificate_authority: Option<String>,
}

impl Kubernetes {
    /// The kubeconfig page's callback path (under the issuer), registered implicitly as a redirect URI of
    /// the Kubernetes client.
    pub fn callback_path(&self) -> String {
        format!("{}/callback", self.kubeconfig_path)
    }
}

/// A user of the password database.
#[derive(Clone)]
pub struct StaticPassword {
    /// Login name, also the `email` claim.
    pub email: String,
    /// bcrypt hash.
    pub hash: String,
    /// Login name (`username`; default the part of `email` before `@`).
    pub username: String,
    /// Dex's `name`: the `name` claim (default `username`).
    pub name: String,
    /// Dex's `preferredUsername`: the `preferred_username` claim (default `username`).
    pub preferred_username: String,
    /// Dex's `emailVerified`: the `email_verified` claim (default `true`).
    pub email_verified: bool,
    /// Stable subject.
    pub user_id: String,
    /// Group memberships.
    pub groups: Vec<String>,
}

impl fmt::Debug for StaticPassword {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StaticPassword")
            .field("email", &self.email)
            .field("user_id", &self.user_id)
            .field("groups", &self.groups)
            .finish_non_exhaustive()
    }
}

/// Everything wrong with a configuration file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{file}: cannot read: {reason}")]
    Read {
        /// The file.
        file: String,
        /// Why (in the message, not as a source, so `anyhow` chains do not print it twice).
        reason: std::io::Error,
    },
    /// The text is not YAML (serde_yaml's message carries the line and column).
    #[error("{file}: {message}")]
    Syntax {
        /// The file.
        file: String,
        /// serde_yaml's message.
        message: String,
    },
    /// The YAML parsed but keys or values are wrong: every problem of the file, in document order.
    #[error("{file}: {} problem(s):\n{}", .problems.len(), .problems.iter().map(|p| format!("  - {}", p.located(file))).collect::<Vec<_>>().join("\n"))]
    Invalid {
        /// The file.
        file: String,
        /// One entry per problem.
        problems: Vec<Problem>,
    },
}

/// One invalid key or value: the key path, what was expected there, and the line it is on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Dotted key path, e.g. `staticClients[1].redirectURIs[0]`.
    pub key: String,
    /// What a valid value looks like.
    pub expected: String,
    /// 1-based line of the key (or of its nearest written ancestor) in the file, when known.
    pub line: Option<usize>,
}

impl Problem {
    /// A problem at `key` whose line is not known yet ([`Config::parse`] fills it in).
    pub fn new(key: impl Into<String>, expected: impl Into<String>) -> Self {
        Self { key: key.into(), expected: expected.into(), line: None }
    }

    /// `file:line: key: expected ...` (the line left out when unknown), the form editors jump to.
    pub fn located(&self, file: &str) -> String {
        match self.line {
            Some(line) => format!("{file}:{line}: {self}"),
            None => format!("{file}: {self}"),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: expected {}", self.key, self.expected)
    }
}

/// A key Dex knows that this issuer accepts without doing what Dex does: what is done instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    /// Dotted key path.
    pub key: String,
    /// What happens instead.
    pub message: String,
    /// 1-based line of the key, when known.
    pub line: Option<usize>,
}

impl Warning {
    /// `file:line: key: message`.
    pub fn located(&self, file: &str) -> String {
        match self.line {
            Some(line) => format!("{file}:{line}: {}: {}", self.key, self.message),
            None => format!("{file}: {}: {}", self.key, self.message),
        }
    }
}

// === raw YAML ===

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawConfig {
    #[serde(default)]
    issuer: Option<String>,
    #[serde(default)]
    web: Option<Web>,
    #[serde(default)]
    storage: Option<RawStorage>,
    #[serde(default)]
    expiry: RawExpiry,
    #[serde(default)]
    signing: RawSigning,
    #[serde(default)]
    signer: Option<RawSigner>,
    #[serde(default)]
    oauth2: RawOAuth2,
    #[serde(default)]
    brute_force: RawBruteForce,
    #[serde(default)]
    logger: RawLogger,
    #[serde(default)]
    telemetry: Telemetry,
    #[serde(default)]
    grpc: Option<crate::grpc::RawGrpc>,
    #[serde(default)]
    static_clients: Vec<RawClient>,
    #[serde(default)]
    static_passwords: Vec<RawPassword>,
    #[serde(default, rename = "enablePasswordDB")]
    enable_password_db: Option<bool>,
    #[serde(default)]
    kubernetes: Option<RawKubernetes>,
    #[serde(default)]
    connectors: Vec<RawConnector>,
    #[serde(default)]
    frontend: crate::frontend::RawFrontend,
    #[serde(default)]
    sessions: crate::session::RawSessions,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConnector {
    #[serde(default, rename = "type")]
    kind: String,
    #[serde(default)]
    id: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    config: serde_yaml::Value,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawKubernetes {
    #[serde(default, rename = "clientID")]
    client_id: Option<String>,
    #[serde(default)]
    groups_prefix: Option<String>,
    #[serde(default)]
    kubeconfig_path: Option<String>,
    #[serde(default)]
    issuer_certificate_authority: Option<PathBuf>,
    #[serde(default)]
    clusters: Vec<RawCluster>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawCluster {
    #[serde(default)]
    name: String,
    #[serde(default)]
    server: String,
    #[serde(default)]
    certificate_authority_data: Option<String>,
    #[serde(default)]
    certificate_authority: Option<PathBuf>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStorage {
    #[serde(default, rename = "type")]
    kind: String,
    #[serde(default)]
    config: Option<RawStorageConfig>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawStorageConfig {
    #[serde(default)]
    file: Option<PathBuf>,
    #[serde(default)]
    host: Option<String>,
    #[serde(default)]
    port: Option<u16>,
    #[serde(default)]
    database: Option<String>,
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    password_env: Option<String>,
    #[serde(default)]
    password_file: Option<PathBuf>,
    #[serde(default)]
    ssl: Option<RawSsl>,
    #[serde(default)]
    max_open_conns: Option<u32>,
    #[serde(default)]
    max_idle_conns: Option<u32>,
    #[serde(default)]
    conn_max_lifetime: Option<u64>,
    #[serde(default)]
    connection_timeout: Option<u64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawSsl {
    #[serde(default)]
    mode: Option<String>,
    #[serde(default)]
    ca_file: Option<PathBuf>,
    #[serde(default)]
    cert_file: Option<PathBuf>,
    #[serde(default)]
    key_file: Option<PathBuf>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawExpiry {
    signing_keys: Option<String>,
    id_tokens: Option<String>,
    auth_requests: Option<String>,
    auth_codes: Option<String>,
    device_requests: Option<String>,
    #[serde(default)]
    refresh_tokens: RawRefreshExpiry,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawRefreshExpiry {
    valid_if_not_used_for: Option<String>,
    absolute_lifetime: Option<String>,
    reuse_interval: Option<String>,
    disable_rotation: Option<bool>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawSigning {
    algorithm: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawSigner {
    #[serde(default, rename = "type")]
    kind: Option<String>,
    #[serde(default)]
    config: RawSignerConfig,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawSignerConfig {
    keys_rotation_period: Option<String>,
    algorithm: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawOAuth2 {
    skip_approval_screen: Option<bool>,
    always_show_login_screen: Option<bool>,
    grant_types: Option<Vec<String>>,
    response_types: Option<Vec<String>>,
    password_connector: Option<String>,
    #[serde(default)]
    pkce: RawPkce,
    subject_format: Option<String>,
    access_token_format: Option<crate::token::AccessTokenFormat>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawPkce {
    enforce: Option<bool>,
    code_challenge_methods_supported: Option<Vec<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawBruteForce {
    max_attempts: Option<u32>,
    refill_interval: Option<String>,
    #[serde(rename = "perIPMaxAttempts")]
    per_ip_max_attempts: Option<u32>,
    #[serde(rename = "perIPRefillInterval")]
    per_ip_refill_interval: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
#[serde(rename_all = "camelCase")]
struct RawLogger {
    level: Option<String>,
    format: Option<String>,
    #[serde(default)]
    exclude_fields: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawClient {
    #[serde(default)]
    id: String,
    #[serde(default)]
    id_env: Option<String>,
    #[serde(default)]
    secret: Option<String>,
    #[serde(default)]
    secret_env: Option<String>,
    #[serde(default)]
    secret_file: Option<PathBuf>,
    #[serde(default)]
    public: bool,
    #[serde(default)]
    name: Option<String>,
    #[serde(default, rename = "redirectURIs")]
    redirect_uris: Vec<String>,
    #[serde(default)]
    trusted_peers: Vec<String>,
    #[serde(default, rename = "postLogoutRedirectURIs")]
    post_logout_redirect_uris: Vec<String>,
    #[serde(default, rename = "allowPlainPKCE")]
    allow_plain_pkce: bool,
    #[serde(default)]
    allowed_connectors: Vec<String>,
    #[serde(default)]
    allowed_emails: Vec<String>,
    #[serde(default)]
    allowed_email_domains: Vec<String>,
    #[serde(default)]
    allowed_groups: Vec<String>,
    #[serde(default, rename = "logoURL")]
    logo_url: Option<String>,
    #[serde(default)]
    sso_shared_with: Option<Vec<String>>,
    #[serde(default, rename = "backchannelLogoutURI")]
    backchannel_logout_uri: Option<String>,
    #[serde(default)]
    backchannel_logout_session_required: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawPassword {
    #[serde(default)]
    email: String,
    #[serde(default)]
    hash: Option<String>,
    #[serde(default)]
    hash_from_env: Option<String>,
    #[serde(default)]
    hash_file: Option<PathBuf>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default, rename = "userID")]
    user_id: String,
    #[serde(default)]
    groups: Vec<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    email_verified: Option<bool>,
    #[serde(default)]
    preferred_username: Option<String>,
}

// === impl Config ===

impl Config {
    /// Reads, parses and validates `path`. Relative paths inside the file (SQLite file, TLS files, secret
    /// files) are resolved against the current directory, like Dex does.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|reason| ConfigError::Read { file: file.clone(), reason })?;
        Self::parse(&file, &text, &|name| std::env::var(name).ok())
    }

    /// Parses and validates YAML text; `file` only names the source in errors, `env` looks up variables.
    ///
    /// Every problem of the file is reported at once, in document order and with its line: unknown keys, type
    /// errors and invalid values alike. Keys Dex knows that this issuer accepts without acting on them as Dex
    /// does become [`Config::warnings`].
    pub fn parse(file: &str, text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let value: serde_yaml::Value = serde_yaml::from_str(text)
            .map_err(|e| ConfigError::Syntax { file: file.to_owned(), message: e.to_string() })?;
        let value = if value.is_null() { serde_yaml::Value::Mapping(Default::default()) } else { value };
        let lines = source::Lines::index(text);
        let mut v = Validator { problems: Vec::new(), warnings: Vec::new(), env };
        let config = source::typed::<RawConfig>("", value, &mut v.problems).and_then(|raw| v.config(raw));
        for p in &mut v.problems {
            p.line = lines.line(&p.key);
        }
        for w in &mut v.warnings {
            w.line = lines.line(&w.key);
        }
        match config {
            Some(mut config) if v.problems.is_empty() => {
                config.warnings = v.warnings;
                Ok(config)
            }
            _ => {
                // Document order; problems found on one key stay in the order they were found.
                v.problems.sort_by_key(|p| p.line.unwrap_or(usize::MAX));
                if v.problems.is_empty() {
                    v.problems.push(Problem::new("", "a configuration document"));
                }
                Err(ConfigError::Invalid { file: file.to_owned(), problems: v.problems })
            }
        }
    }

    /// The `sub` of `identity` in the configured [`crate::connector::SubjectFormat`].
    pub fn subject(&self, identity: &crate::storage::Identity) -> String {
        crate::connector::subject(identity, self.subject_format)
    }

    /// The client registered as `id`.
    pub fn client(&self, id: &str) -> Option<&Client> {
        self.static_clients.iter().find(|c| c.id == id)
    }

    /// An endpoint URL under the issuer (which may have a path).
    pub fn endpoint(&self, path: &str) -> String {
        format!("{}{}", self.issuer.as_str().trim_end_matches('/'), path)
    }

    /// The path prefix the issuer is served under (`""` when the issuer URL has no path).
    pub fn path_prefix(&self) -> String {
        self.issuer.path().trim_end_matches('/').to_owned()
    }
}

struct Validator<'a> {
    problems: Vec<Problem>,
    warnings: Vec<Warning>,
    env: &'a dyn Fn(&str) -> Option<String>,
}

impl Validator<'_> {
    fn problem(&mut self, key: impl Into<String>, expected: impl Into<String>) {
        self.problems.push(Problem::new(key.into(), expected.into()));
    }

    fn warning(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.warnings.push(Warning { key: key.into(), message: message.into(), line: None });
    }

    fn duration(&mut self, key: &str, value: Option<String>, default: Duration) -> Duration {
        let Some(value) = value else { return default };
        match humantime::parse_duration(&value) {
            Ok(d) if !d.is_zero() => d,
            _ => {
                self.problem(key, format!("a positive duration such as \"10m\" or \"24h\", got {value:?}"));
                default
            }
        }
    }

    /// Like [`Self::duration`], but `0s` is allowed (it switches something off).
    fn duration_or_zero(&mut self, key: &str, value: Option<String>, default: Duration) -> Duration {
        let Some(value) = value else { return default };
        match humantime::parse_duration(value.trim()) {
            Ok(d) => d,
            Err(_) => {
                self.problem(key, format!("a duration such as \"0s\", \"10s\" or \"2m\", got {value:?}"));
                default
            }
        }
    }

    /// A secret given inline (`$VAR` / `${VAR}` expands from the environment), by variable name, or by file.
    fn secret(
        &mut self,
        key: &str,
        inline: Option<String>,
        env_name: Option<String>,
        file: Option<PathBuf>,
    ) -> Option<String> {
        let given = [inline.is_some(), env_name.is_some(), file.is_some()].iter().filter(|b| **b).count();
        if given > 1 {
            self.problem(key, "only one of the inline, environment and file forms");
            return None;
        }
        if let Some(value) = inline {
            // Only `$NAME` / `${NAME}` with a valid variable name: a bcrypt hash also starts with `$`.
            let var = value.strip_prefix("${").and_then(|v| v.strip_suffix('}')).or_else(|| value.strip_prefix('$'));
            return match var {
                Some(name) if is_env_name(name) => self.env_var(key, name),
                _ => Some(value),
            };
        }
        if let Some(name) = env_name {
            return self.env_var(key, &name);
        }
        if let Some(path) = file {
            return match std::fs::read_to_string(&path) {
                Ok(s) => Some(s.trim_end_matches(['\n', '\r']).to_owned()),
                Err(e) => {
                    self.problem(key, format!("a readable file, but {}: {e}", path.display()));
                    None
                }
            };
        }
        None
    }

    fn env_var(&mut self, key: &str, name: &str) -> Option<String> {
        match (self.env)(name) {
            Some(v) if !v.is_empty() => Some(v),
            _ => {
                self.problem(key, format!("environment variable {name} to be set and non-empty"));
                None
            }
        }
    }

    fn config(&mut self, raw: RawConfig) -> Option<Config> {
        let raw_issuer = raw.issuer.unwrap_or_default();
        let issuer = match Url::parse(raw_issuer.trim_end_matches('/')) {
            Ok(u)
                if matches!(u.scheme(), "http" | "https")
                    && u.query().is_none()
                    && u.fragment().is_none()
                    && u.host().is_some() =>
            {
                Some(u)
            }
            _ => {
                self.problem(
                    "issuer",
                    format!("an absolute http(s) URL without query or fragment, got {raw_issuer:?}"),
                );
                None
            }
        };

        let mut web = raw.web.unwrap_or_default();
        let remote = web.client_remote_ip.as_ref().map(|c| c.trusted_proxies.clone()).unwrap_or_default();
        let listed = web
            .trusted_proxies
            .iter()
            .map(|p| ("web.trustedProxies", p))
            .chain(remote.iter().map(|p| ("web.clientRemoteIP.trustedProxies", p)));
        let mut proxies = Vec::new();
        for (i, (key, p)) in listed.enumerate() {
            let parsed = p.parse::<ipnet::IpNet>().or_else(|_| p.parse::<std::net::IpAddr>().map(ipnet::IpNet::from));
            match parsed {
                Ok(net) => proxies.push(net),
                Err(_) => self.problem(
                    format!("{key}[{}]", if key == "web.trustedProxies" { i } else { i - web.trusted_proxies.len() }),
                    format!("an IP address or CIDR range such as 10.0.0.0/8, got {p:?}"),
                ),
            }
        }
        web.proxies = proxies;
        if let Some(h) = web.client_remote_ip.as_ref().and_then(|c| c.header.as_deref()) {
            if axum::http::HeaderName::from_bytes(h.as_bytes()).is_err() {
                self.problem("web.clientRemoteIP.header", format!("a header name such as X-Forwarded-For, got {h:?}"));
            }
        }
        for (name, value) in &web.headers {
            if axum::http::HeaderName::from_bytes(name.as_bytes()).is_err() {
                self.problem(format!("web.headers.{name}"), "a header name");
            } else if axum::http::HeaderValue::from_str(value).is_err() {
                self.problem(format!("web.headers.{name}"), format!("a header value (visible ASCII), got {value:?}"));
            }
        }
        for (i, origin) in web.allowed_origins.iter().enumerate() {
            if origin != "*" && !is_origin(origin) {
                self.problem(
                    format!("web.allowedOrigins[{i}]"),
                    format!("an origin such as https://app.example.com (scheme, host, optional port; no path) or \"*\", got {origin:?}"),
                );
            }
        }
        for (i, h) in web.allowed_headers.iter().enumerate() {
            if axum::http::HeaderName::from_bytes(h.as_bytes()).is_err() {
                self.problem(format!("web.allowedHeaders[{i}]"), format!("a header name, got {h:?}"));
            }
        }
        if web.http.is_none() && web.https.is_none() {
            self.problem("web", "at least one of web.http or web.https");
        }
        for (key, addr) in [("web.http", &web.http), ("web.https", &web.https)] {
            if let Some(a) = addr {
                if a.parse::<std::net::SocketAddr>().is_err() {
                    self.problem(key, format!("an address such as 127.0.0.1:5556, got {a:?}"));
                }
            }
        }
        if web.https.is_some() && (web.tls_cert.is_none() || web.tls_key.is_none()) {
            self.problem("web.tlsCert", "web.tlsCert and web.tlsKey when web.https is set");
        }
        for (key, f) in [("web.tlsCert", &web.tls_cert), ("web.tlsKey", &web.tls_key)] {
            if let Some(f) = f {
                if !f.is_file() {
                    self.problem(key, format!("an existing PEM file, got {}", f.display()));
                }
            }
        }

        if let Some(a) = &raw.telemetry.http {
            if a.parse::<std::net::SocketAddr>().is_err() {
                self.problem("telemetry.http", format!("an address such as 0.0.0.0:5558, got {a:?}"));
            }
        }
        if raw.telemetry.enable_profiling {
            self.warning("telemetry.enableProfiling", "Go's pprof endpoints have no equivalent here; none are served");
        }
        let tls_versions = ["1.2", "1.3"];
        for (key, v) in [("web.tlsMinVersion", &web.tls_min_version), ("web.tlsMaxVersion", &web.tls_max_version)] {
            if let Some(v) = v {
                if !tls_versions.contains(&v.as_str()) {
                    self.problem(key, format!("\"1.2\" or \"1.3\" (older versions are not offered), got {v:?}"));
                }
            }
        }
        if let (Some(min), Some(max)) = (&web.tls_min_version, &web.tls_max_version) {
            if min > max {
                self.problem("web.tlsMaxVersion", format!("a version at least web.tlsMinVersion ({min}), got {max}"));
            }
        }
        let storage = match raw.storage {
            Some(s) => self.storage(s),
            None => {
                self.problem("storage", "a storage section with type sqlite3, postgres or memory");
                None
            }
        };

        let e = raw.expiry;
        let e_signing_keys_given = e.signing_keys.is_some();
        let r = e.refresh_tokens;
        let expiry = Expiry {
            signing_keys: self.duration("expiry.signingKeys", e.signing_keys, Duration::from_secs(6 * 3600)),
            id_tokens: self.duration("expiry.idTokens", e.id_tokens, Duration::from_secs(10 * 60)),
            auth_requests: self.duration("expiry.authRequests", e.auth_requests, Duration::from_secs(24 * 3600)),
            auth_codes: self.duration("expiry.authCodes", e.auth_codes, Duration::from_secs(10 * 60)),
            device_requests: self.duration("expiry.deviceRequests", e.device_requests, Duration::from_secs(5 * 60)),
            refresh_tokens: RefreshExpiry {
                valid_if_not_used_for: self.duration(
                    "expiry.refreshTokens.validIfNotUsedFor",
                    r.valid_if_not_used_for,
                    Duration::from_secs(168 * 3600),
                ),
                absolute_lifetime: self.duration(
                    "expiry.refreshTokens.absoluteLifetime",
                    r.absolute_lifetime,
                    Duration::from_secs(720 * 3600),
                ),
                reuse_interval: self.duration_or_zero(
                    "expiry.refreshTokens.reuseInterval",
                    r.reuse_interval,
                    Duration::from_secs(120),
                ),
                disable_rotation: r.disable_rotation.unwrap_or(false),
            },
        };

        let raw_signer_alg = raw.signer.as_ref().is_some_and(|s| s.config.algorithm.is_some());
        let mut signing_algorithm = raw.signing.algorithm;
        let mut expiry = expiry;
        if let Some(signer) = raw.signer {
            match signer.kind.as_deref() {
                None | Some("local") => {}
                Some(other) => {
                    self.problem("signer.type", format!("\"local\" (keys kept in storage), got {other:?}"));
                }
            }
            if let Some(period) = signer.config.keys_rotation_period {
                if e_signing_keys_given {
                    self.problem("signer.config.keysRotationPeriod", "either this or expiry.signingKeys, not both");
                }
                expiry.signing_keys =
                    self.duration("signer.config.keysRotationPeriod", Some(period), expiry.signing_keys);
            }
            if let Some(alg) = signer.config.algorithm {
                if signing_algorithm.is_some() {
                    self.problem("signer.config.algorithm", "either this or signing.algorithm, not both");
                }
                signing_algorithm = Some(alg);
            }
        }
        let algorithm = match signing_algorithm.as_deref() {
            None => Algorithm::Rs256,
            Some(name) => Algorithm::from_name(name).unwrap_or_else(|| {
                self.problem(
                    if raw_signer_alg { "signer.config.algorithm" } else { "signing.algorithm" },
                    format!("one of RS256, ES256, EdDSA, got {name:?}"),
                );
                Algorithm::Rs256
            }),
        };

        let o = raw.oauth2;
        if o.skip_approval_screen == Some(false) {
            self.warning(
                "oauth2.skipApprovalScreen",
                "there is no approval screen: signing in approves the client, as with skipApprovalScreen: true",
            );
        }
        let mut response_types = Vec::new();
        for (i, t) in o.response_types.clone().unwrap_or_else(|| vec!["code".to_owned()]).into_iter().enumerate() {
            if !["code", "id_token", "token"].contains(&t.as_str()) {
                self.problem(format!("oauth2.responseTypes[{i}]"), format!("code, id_token or token, got {t:?}"));
            } else if !response_types.contains(&t) {
                response_types.push(t);
            }
        }
        let grant_types = match o.grant_types {
            Some(listed) => {
                let mut out = Vec::new();
                for (i, g) in listed.iter().enumerate() {
                    match GrantType::parse(g) {
                        Some(g) if !out.contains(&g) => out.push(g),
                        Some(_) => {}
                        None => self.problem(
                            format!("oauth2.grantTypes[{i}]"),
                            format!(
                                "one of {}, got {g:?}",
                                GrantType::ALL.iter().map(|g| g.as_str()).collect::<Vec<_>>().join(", ")
                            ),
                        ),
                    }
                }
                out
            }
            None => {
                let mut out = vec![GrantType::AuthorizationCode, GrantType::RefreshToken, GrantType::DeviceCode];
                if o.password_connector.is_some() {
                    out.push(GrantType::Password);
                }
                if response_types.iter().any(|t| t != "code") {
                    out.push(GrantType::Implicit);
                }
                out
            }
        };
        if grant_types.contains(&GrantType::Password) && o.password_connector.is_none() {
            self.problem(
                "oauth2.passwordConnector",
                "the id of a password connector (local or an ldap connector) when grantTypes lists password",
            );
        }
        if response_types.iter().any(|t| t != "code") && !grant_types.contains(&GrantType::Implicit) {
            self.problem(
                "oauth2.grantTypes",
                "implicit among the grant types when responseTypes has id_token or token",
            );
        }
        let methods = o.pkce.code_challenge_methods_supported.unwrap_or_else(|| vec!["S256".into(), "plain".into()]);
        for (i, m) in methods.iter().enumerate() {
            if !["S256", "plain"].contains(&m.as_str()) {
                self.problem(
                    format!("oauth2.pkce.codeChallengeMethodsSupported[{i}]"),
                    format!("S256 or plain, got {m:?}"),
                );
            }
        }
        if methods.is_empty() {
            self.problem("oauth2.pkce.codeChallengeMethodsSupported", "at least one of S256, plain");
        }
        let subject_format = match o.subject_format.as_deref() {
            None | Some("dex") => crate::connector::SubjectFormat::Dex,
            Some("plain") => crate::connector::SubjectFormat::Plain,
            Some(other) => {
                self.problem("oauth2.subjectFormat", format!("dex or plain, got {other:?}"));
                crate::connector::SubjectFormat::Dex
            }
        };
        let oauth2 = OAuth2 {
            access_token_format: o.access_token_format.unwrap_or_default(),
            grant_types,
            response_types,
            always_show_login_screen: o.always_show_login_screen.unwrap_or(false),
            password_connector: o.password_connector,
            pkce: Pkce { enforce: o.pkce.enforce.unwrap_or(false), code_challenge_methods_supported: methods },
        };

        let b = raw.brute_force;
        let brute_force = BruteForce {
            max_attempts: b.max_attempts.unwrap_or(20),
            refill_interval: self.duration("bruteForce.refillInterval", b.refill_interval, Duration::from_secs(6)),
            per_ip_max_attempts: b.per_ip_max_attempts.unwrap_or(100),
            per_ip_refill_interval: self.duration(
                "bruteForce.perIPRefillInterval",
                b.per_ip_refill_interval,
                Duration::from_secs(2),
            ),
        };
        if brute_force.max_attempts == 0 {
            self.problem("bruteForce.maxAttempts", "at least 1");
        }
        if brute_force.per_ip_max_attempts < brute_force.max_attempts {
            self.problem(
                "bruteForce.perIPMaxAttempts",
                "at least bruteForce.maxAttempts, so one user's attempts are never cut short",
            );
        }

        let format = match raw.logger.format.as_deref() {
            None | Some("text") => LogFormat::Text,
            Some("json") => LogFormat::Json,
            Some(other) => {
                self.problem("logger.format", format!("\"text\" or \"json\", got {other:?}"));
                LogFormat::Text
            }
        };
        let level = raw.logger.level.unwrap_or_else(|| "info".to_owned());
        if tracing_subscriber::EnvFilter::try_new(&level).is_err() {
            self.problem("logger.level", format!("debug, info, warn or error (or a tracing filter), got {level:?}"));
        }
        let logger = Logger { level, format, exclude_fields: raw.logger.exclude_fields };

        let mut static_clients = self.clients(raw.static_clients);
        let static_passwords = self.passwords(raw.static_passwords);
        let enable_password_db = raw.enable_password_db.unwrap_or(!static_passwords.is_empty());
        let kubernetes = raw.kubernetes.map(|k| self.kubernetes(k, issuer.as_ref(), &web, &mut static_clients));
        let connectors = self.connectors(raw.connectors, issuer.as_ref());
        let frontend = crate::frontend::Frontend::parse(raw.frontend, &mut self.problems);
        let sessions = crate::session::Sessions::parse(raw.sessions, &mut self.problems, &mut self.warnings);
        for w in frontend.warnings() {
            let (key, message) = w.split_once(": ").unwrap_or(("frontend", w.as_str()));
            self.warning(key, message);
        }
        let mut known: Vec<&str> = connectors.iter().map(|c| c.id.as_str()).collect();
        if enable_password_db {
            known.push(crate::connector::local::CONNECTOR_ID);
        }
        if let Some(id) = &oauth2.password_connector {
            let password_capable = id == crate::connector::local::CONNECTOR_ID && enable_password_db
                || connectors.iter().any(|c| {
                    &c.id == id
                        && matches!(
                            c.kind,
                            crate::connector::ConnectorKind::Ldap(_)
                                | crate::connector::ConnectorKind::AtlassianCrowd(_)
                        )
                });
            if !password_capable {
                self.problem(
                    "oauth2.passwordConnector",
                    format!("the id of a password connector (local, ldap or atlassian-crowd), got {id:?}"),
                );
            }
        }
        for (i, c) in static_clients.iter().enumerate() {
            for (j, id) in c.allowed_connectors.iter().enumerate() {
                if !known.contains(&id.as_str()) {
                    self.problem(
                        format!("staticClients[{i}].allowedConnectors[{j}]"),
                        format!("the id of a configured connector ({}), got {id:?}", known.join(", ")),
                    );
                }
            }
        }

        let grpc = raw.grpc.and_then(|g| g.validate(&mut |key, expected| self.problem(key, expected)));
        Some(Config {
            issuer: issuer?,
            grpc,
            web,
            storage: storage?,
            expiry,
            signing: Signing { algorithm },
            oauth2,
            brute_force,
            logger,
            telemetry: raw.telemetry.clone(),
            static_clients,
            static_passwords,
            enable_password_db,
            kubernetes,
            connectors,
            subject_format,
            warnings: Vec::new(),
            frontend,
            sessions,
        })
    }

    fn connectors(&mut self, raw: Vec<RawConnector>, issuer: Option<&Url>) -> Vec<crate::connector::ConnectorConfig> {
        let mut seen = HashSet::new();
        let mut out = Vec::with_capacity(raw.len());
        for (i, c) in raw.into_iter().enumerate() {
            let key = format!("connectors[{i}]");
            if !seen.insert(c.id.clone()) {
                self.problem(format!("{key}.id"), format!("a unique connector id, {:?} appears twice", c.id));
            }
            if let Some(parsed) = crate::connector::ConnectorConfig::parse(
                &key,
                &c.kind,
                c.id,
                c.name,
                c.config,
                self.env,
                &mut self.problems,
            ) {
                // The upstream sends the browser back to the redirect URI: anything but this issuer's
                // `/callback` loses the login (or hands the code to someone else).
                if let (Some(uri), Some(issuer)) = (parsed.redirect_uri(), issuer) {
                    let expected = format!("{}/callback", issuer.as_str().trim_end_matches('/'));
                    if uri.trim_end_matches('/') != expected {
                        self.problem(
                            format!("{key}.config.redirectURI"),
                            format!("this issuer's callback {expected}, got {uri:?}"),
                        );
                    }
                }
                out.push(parsed);
            }
        }
        out
    }

    fn kubernetes(
        &mut self,
        raw: RawKubernetes,
        issuer: Option<&Url>,
        web: &Web,
        clients: &mut [Client],
    ) -> Kubernetes {
        let client_id = raw.client_id.unwrap_or_else(|| "kubernetes".to_owned());
        let kubeconfig_path = raw.kubeconfig_path.unwrap_or_else(|| "/kubeconfig".to_owned());
        let path_ok = kubeconfig_path.len() > 1
            && kubeconfig_path.starts_with('/')
            && !kubeconfig_path.ends_with('/')
            && kubeconfig_path.bytes().all(|b| b.is_ascii_alphanumeric() || b"/-._~".contains(&b))
            && !RESERVED_PATHS.iter().any(|r| kubeconfig_path == *r || kubeconfig_path.starts_with(&format!("{r}/")));
        if !path_ok {
            self.problem(
                "kubernetes.kubeconfigPath",
                format!(
                    "a path such as \"/kubeconfig\" (leading slash, no trailing slash, not one of the issuer's own endpoints), got {kubeconfig_path:?}"
                ),
            );
        }
        let k8s_client = clients.iter_mut().find(|c| c.id == client_id);
        match (k8s_client, issuer) {
            (None, _) => {
                self.problem("kubernetes.clientID", format!("the id of a client in staticClients, got {client_id:?}"))
            }
            // The kubeconfig page is this issuer acting as the Kubernetes client: its callback is
            // registered implicitly, so the configuration need not repeat the issuer URL.
            (Some(c), Some(issuer)) if path_ok => {
                let callback = format!("{}{}/callback", issuer.as_str().trim_end_matches('/'), kubeconfig_path);
                if !c.redirect_uris.contains(&callback) {
                    c.redirect_uris.push(callback);
                }
            }
            (Some(_), _) => {}
        }

        let issuer_ca = match raw.issuer_certificate_authority {
            Some(path) => self.pem_file("kubernetes.issuerCertificateAuthority", &path),
            None => match (&web.tls_cert, issuer.map(Url::scheme)) {
                (Some(path), Some("https")) => {
                    std::fs::read_to_string(path).ok().map(|pem| CaFile { path: path.clone(), pem })
                }
                _ => None,
            },
        };

        let mut names = HashSet::new();
        let mut clusters = Vec::with_capacity(raw.clusters.len());
        for (i, c) in raw.clusters.into_iter().enumerate() {
            let key = format!("kubernetes.clusters[{i}]");
            let name_ok =
                !c.name.is_empty() && c.name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._@:".contains(&b));
            if !name_ok {
                self.problem(format!("{key}.name"), format!("a name of letters, digits and -._@:, got {:?}", c.name));
            } else if !names.insert(c.name.clone()) {
                self.problem(format!("{key}.name"), format!("a unique cluster name, {:?} appears twice", c.name));
            }
            match Url::parse(&c.server) {
                Ok(u) if u.scheme() == "https" && u.host().is_some() && u.fragment().is_none() => {}
                _ => self.problem(
                    format!("{key}.server"),
                    format!("the API server's https URL, such as \"https://k8s.example.com:6443\", got {:?}", c.server),
                ),
            }
            let certificate_authority = match (c.certificate_authority_data, c.certificate_authority) {
                (Some(_), Some(_)) => {
                    self.problem(
                        format!("{key}.certificateAuthorityData"),
                        "only one of certificateAuthorityData and certificateAuthority",
                    );
                    None
                }
                (Some(data), None) => {
                    let pem = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, data.trim())
                        .ok()
                        .and_then(|b| String::from_utf8(b).ok())
                        .filter(|p| is_pem_certificate(p));
                    if pem.is_none() {
                        self.problem(
                            format!("{key}.certificateAuthorityData"),
                            "base64 of a PEM certificate bundle (as in a kubeconfig)",
                        );
                    }
                    pem
                }
                (None, Some(path)) => self.pem_file(&format!("{key}.certificateAuthority"), &path).map(|f| f.pem),
                (None, None) => None,
            };
            clusters.push(Cluster { name: c.name, server: c.server, certificate_authority });
        }
        Kubernetes {
            client_id,
            groups_prefix: raw.groups_prefix.unwrap_or_else(|| "oidc:".to_owned()),
            kubeconfig_path,
            issuer_ca,
            clusters,
        }
    }

    fn pem_file(&mut self, key: &str, path: &Path) -> Option<CaFile> {
        match std::fs::read_to_string(path) {
            Ok(pem) if is_pem_certificate(&pem) => Some(CaFile { path: path.to_owned(), pem }),
            Ok(_) => {
                self.problem(key, format!("a PEM certificate file, but {} holds no certificate", path.display()));
                None
            }
            Err(e) => {
                self.problem(key, format!("a readable PEM certificate file, but {}: {e}", path.display()));
                None
            }
        }
    }

    fn storage(&mut self, raw: RawStorage) -> Option<StorageConfig> {
        let c = raw.config.unwrap_or_default();
        match raw.kind.as_str() {
            "memory" => Some(StorageConfig::Memory),
            "sqlite3" => match c.file {
                Some(file) => Some(StorageConfig::Sqlite { file }),
                None => {
                    self.problem("storage.config.file", "the path of the SQLite database file");
                    None
                }
            },
            "postgres" => {
                let ssl = c.ssl.unwrap_or_default();
                let ssl_mode = ssl.mode.unwrap_or_else(|| "verify-full".to_owned());
                if !["disable", "prefer", "require", "verify-ca", "verify-full"].contains(&ssl_mode.as_str()) {
                    self.problem(
                        "storage.config.ssl.mode",
                        format!("one of disable, prefer, require, verify-ca, verify-full, got {ssl_mode:?}"),
                    );
                }
                let password = self.secret("storage.config.password", c.password, c.password_env, c.password_file);
                if ssl.cert_file.is_some() != ssl.key_file.is_some() {
                    self.problem("storage.config.ssl.keyFile", "ssl.certFile and ssl.keyFile together");
                }
                if c.max_idle_conns.is_some() {
                    self.warning(
                        "storage.config.maxIdleConns",
                        "the pool keeps up to maxOpenConns connections and closes idle ones after 10 minutes",
                    );
                }
                let required = |v: &mut Self, key: &str, value: Option<String>| {
                    value.filter(|s| !s.is_empty()).or_else(|| {
                        v.problem(format!("storage.config.{key}"), "a non-empty value");
                        None
                    })
                };
                let host = required(self, "host", c.host);
                let database = required(self, "database", c.database);
                let user = required(self, "user", c.user);
                Some(StorageConfig::Postgres(PostgresConfig {
                    host: host?,
                    port: c.port.unwrap_or(5432),
                    database: database?,
                    user: user?,
                    password,
                    ssl_mode,
                    ssl_ca_file: ssl.ca_file,
                    ssl_cert_file: ssl.cert_file,
                    ssl_key_file: ssl.key_file,
                    max_open_conns: c.max_open_conns.unwrap_or(16).max(2),
                    connection_timeout: c.connection_timeout.filter(|s| *s > 0).map(Duration::from_secs),
                    conn_max_lifetime: c.conn_max_lifetime.filter(|s| *s > 0).map(Duration::from_secs),
                }))
            }
            "mysql" | "etcd" | "kubernetes" => {
                self.problem(
                    "storage.type",
                    format!(
                        "one of \"sqlite3\", \"postgres\", \"memory\" (Dex's {:?} storage is not supported: \
                         use postgres for several replicas)",
                        raw.kind
                    ),
                );
                None
            }
            "" => {
                self.problem("storage.type", "one of \"sqlite3\", \"postgres\", \"memory\"");
                None
            }
            other => {
                self.problem("storage.type", format!("one of \"sqlite3\", \"postgres\", \"memory\", got {other:?}"));
                None
            }
        }
    }

    fn clients(&mut self, raw: Vec<RawClient>) -> Vec<Client> {
        let mut seen = HashSet::new();
        let mut raw = raw;
        for (i, c) in raw.iter_mut().enumerate() {
            match (c.id.is_empty(), c.id_env.take()) {
                (true, Some(name)) => {
                    c.id = self.env_var(&format!("staticClients[{i}].idEnv"), &name).unwrap_or_default()
                }
                (false, Some(_)) => self.problem(format!("staticClients[{i}].idEnv"), "either id or idEnv, not both"),
                (_, None) => {}
            }
        }
        let ids: HashSet<String> = raw.iter().map(|c| c.id.clone()).collect();
        let mut out = Vec::with_capacity(raw.len());
        for (i, c) in raw.into_iter().enumerate() {
            let key = format!("staticClients[{i}]");
            if c.id.is_empty() || !c.id.chars().all(|ch| ch.is_ascii_graphic()) {
                self.problem(format!("{key}.id"), "a non-empty client id of printable ASCII");
            }
            if !seen.insert(c.id.clone()) {
                self.problem(format!("{key}.id"), format!("a unique client id, {:?} appears twice", c.id));
            }
            let reported = self.problems.len();
            let secret = self.secret(&format!("{key}.secret"), c.secret, c.secret_env, c.secret_file);
            match (c.public, &secret) {
                (false, None) if self.problems.len() > reported => {}
                (false, None) => {
                    self.problem(format!("{key}.secret"), "a secret (or secretEnv/secretFile), or public: true")
                }
                (true, Some(_)) => self.problem(format!("{key}.secret"), "no secret for a public client"),
                _ => {}
            }
            if c.public && c.allow_plain_pkce {
                self.problem(
                    format!("{key}.allowPlainPKCE"),
                    "false for a public client (public clients must use S256)",
                );
            }
            for (j, uri) in c.redirect_uris.iter().enumerate() {
                if !valid_redirect_uri(uri) {
                    self.problem(
                        format!("{key}.redirectURIs[{j}]"),
                        format!("an absolute URL without fragment, got {uri:?}"),
                    );
                }
            }
            for (j, uri) in c.post_logout_redirect_uris.iter().enumerate() {
                if !valid_redirect_uri(uri) {
                    self.problem(
                        format!("{key}.postLogoutRedirectURIs[{j}]"),
                        format!("an absolute URL without fragment, got {uri:?}"),
                    );
                }
            }
            if let Some(uri) = &c.backchannel_logout_uri {
                if !valid_backchannel_logout_uri(uri) {
                    self.problem(
                        format!("{key}.backchannelLogoutURI"),
                        format!("an absolute http(s) URL without fragment (Back-Channel Logout §2.2), got {uri:?}"),
                    );
                }
            }
            if let Some(Err(why)) = c.logo_url.as_deref().map(crate::frontend::check_image_url) {
                self.problem(format!("{key}.logoURL"), why);
            }
            for (j, peer) in c.sso_shared_with.iter().flatten().enumerate() {
                if peer.is_empty() || !peer.chars().all(|ch| ch.is_ascii_graphic()) {
                    self.problem(format!("{key}.ssoSharedWith[{j}]"), format!("a client id or \"*\", got {peer:?}"));
                }
            }
            for (j, peer) in c.trusted_peers.iter().enumerate() {
                if !ids.contains(peer) {
                    self.problem(
                        format!("{key}.trustedPeers[{j}]"),
                        format!("the id of a client in staticClients, got {peer:?}"),
                    );
                }
            }
            out.push(Client {
                name: c.name.unwrap_or_else(|| c.id.clone()),
                id: c.id,
                secret,
                public: c.public,
                redirect_uris: c.redirect_uris,
                trusted_peers: c.trusted_peers,
                post_logout_redirect_uris: c.post_logout_redirect_uris,
                allow_plain_pkce: c.allow_plain_pkce,
                allowed_connectors: c.allowed_connectors,
                policy: crate::connector::Policy::new(
                    c.allowed_emails,
                    c.allowed_email_domains,
                    c.allowed_groups,
                    String::new(),
                ),
                logo_url: c.logo_url,
                sso_shared_with: c.sso_shared_with,
                backchannel_logout_uri: c.backchannel_logout_uri,
                backchannel_logout_session_required: c.backchannel_logout_session_required,
            });
        }
        out
    }

    fn passwords(&mut self, raw: Vec<RawPassword>) -> Vec<StaticPassword> {
        let mut emails = HashSet::new();
        let mut ids = HashSet::new();
        let mut out = Vec::with_capacity(raw.len());
        for (i, p) in raw.into_iter().enumerate() {
            let key = format!("staticPasswords[{i}]");
            if !p.email.contains('@') {
                self.problem(format!("{key}.email"), format!("an email address, got {:?}", p.email));
            }
            if !emails.insert(p.email.to_lowercase()) {
                self.problem(format!("{key}.email"), format!("a unique email, {:?} appears twice", p.email));
            }
            if p.user_id.is_empty() || !ids.insert(p.user_id.clone()) {
                self.problem(format!("{key}.userID"), "a non-empty, unique user id");
            }
            let reported = self.problems.len();
            let hash = self.secret(&format!("{key}.hash"), p.hash, p.hash_from_env, p.hash_file);
            let hash = match hash {
                Some(h) if bcrypt_hash_is_wellformed(&h) => h,
                Some(_) => {
                    self.problem(
                        format!("{key}.hash"),
                        "a bcrypt hash ($2a$/$2b$/$2y$, 60 characters); make one with `issuer hash-password`",
                    );
                    continue;
                }
                None => {
                    if self.problems.len() == reported {
                        self.problem(format!("{key}.hash"), "a bcrypt hash (or hashFromEnv/hashFile)");
                    }
                    continue;
                }
            };
            let username = p.username.unwrap_or_else(|| p.email.split('@').next().unwrap_or_default().to_owned());
            out.push(StaticPassword {
                name: p.name.unwrap_or_else(|| username.clone()),
                preferred_username: p.preferred_username.unwrap_or_else(|| username.clone()),
                email_verified: p.email_verified.unwrap_or(true),
                username,
                email: p.email,
                hash,
                user_id: p.user_id,
                groups: p.groups,
            });
        }
        out
    }
}

/// Paths the issuer serves itself; the kubeconfig page may not shadow them.
const RESERVED_PATHS: &[&str] = &[
    "/.well-known",
    "/keys",
    "/auth",
    "/login",
    "/token",
    "/userinfo",
    "/revoke",
    "/logout",
    "/healthz",
    "/metrics",
    "/device",
    "/theme",
    "/static",
];

fn is_pem_certificate(text: &str) -> bool {
    text.contains("-----BEGIN CERTIFICATE-----") && text.contains("-----END CERTIFICATE-----")
}

/// A POSIX environment variable name: `[A-Za-z_][A-Za-z0-9_]*`.
pub(crate) fn is_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// A Back-Channel Logout URI (§2.2): an absolute http(s) URL with a host and no fragment.
pub(crate) fn valid_backchannel_logout_uri(uri: &str) -> bool {
    Url::parse(uri)
        .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.fragment().is_none() && u.host().is_some())
}

fn valid_redirect_uri(uri: &str) -> bool {
    Url::parse(uri).map(|u| u.fragment().is_none() && !u.cannot_be_a_base()).unwrap_or(false)
}

fn bcrypt_hash_is_wellformed(hash: &str) -> bool {
    hash.len() == 60 && ["$2a$", "$2b$", "$2y$"].iter().any(|p| hash.starts_with(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    const HASH: &str = "$2b$10$33EMT0cVYVlPy6WAMCLsceLYjWhuHpbz5yuZxu/GAFj03J9Lytjuy";

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse("test.yaml", text, &|name| (name == "APP_SECRET").then(|| "from-env".to_owned()))
    }

    fn minimal(extra: &str) -> String {
        format!("issuer: http://127.0.0.1:5556/dex\nweb: {{http: 127.0.0.1:5556}}\nstorage: {{type: memory}}\n{extra}")
    }

    fn problems(text: &str) -> Vec<String> {
        match parse(text) {
            Err(ConfigError::Invalid { problems, .. }) => problems.iter().map(|p| p.to_string()).collect(),
            Err(e) => vec![e.to_string()],
            Ok(_) => vec![],
        }
    }

    #[test]
    fn loopback_redirect_uris_match_on_any_port_and_nothing_else_loosens() {
        let client = |uri: &str| Client {
            id: "cli".into(),
            secret: None,
            public: true,
            name: "cli".into(),
            redirect_uris: vec![uri.into()],
            trusted_peers: vec![],
            post_logout_redirect_uris: vec![],
            allow_plain_pkce: false,
            allowed_connectors: vec![],
            policy: Default::default(),
            logo_url: None,
            sso_shared_with: None,
            backchannel_logout_uri: None,
            backchannel_logout_session_required: false,
        };
        let cases: &[(&str, &str, bool)] = &[
            ("http://127.0.0.1/callback", "http://127.0.0.1:49152/callback", true),
            ("http://127.0.0.1:8000/callback", "http://127.0.0.1:18000/callback", true),
            ("http://[::1]/callback", "http://[::1]:5000/callback", true),
            ("http://localhost:8000", "http://localhost:41000", true),
            ("http://127.0.0.1/callback", "http://127.0.0.1:49152/other", false),
            ("http://127.0.0.1/callback", "http://127.0.0.1:49152/callback?x=1", false),
            ("http://127.0.0.1/callback", "http://127.0.0.2:49152/callback", false),
            ("http://127.0.0.1/callback", "http://localhost:49152/callback", false),
            ("http://127.0.0.1/callback", "https://127.0.0.1:49152/callback", false),
            ("http://127.0.0.1/callback", "http://user@127.0.0.1:49152/callback", false),
            ("https://app.example.com/cb", "https://app.example.com:8443/cb", false),
            ("http://app.example.com/cb", "http://app.example.com/cb", true),
        ];
        for (registered, asked, want) in cases {
            assert_eq!(client(registered).accepts_redirect_uri(asked), *want, "{registered} ~ {asked}");
        }
    }

    #[test]
    fn allowed_origins_are_origins_or_a_wildcard() {
        let c = parse(&minimal("").replace(
            "web: {http: 127.0.0.1:5556}",
            "web: {http: 127.0.0.1:5556, allowedOrigins: ['https://spa.example', 'http://127.0.0.1:3000', '*'], allowedHeaders: [Authorization]}",
        ))
        .unwrap();
        assert_eq!(c.web.allowed_origins.len(), 3);
        let bad = minimal("").replace(
            "web: {http: 127.0.0.1:5556}",
            "web: {http: 127.0.0.1:5556, allowedOrigins: ['https://spa.example/app', 'spa.example'], allowedHeaders: ['bad header']}",
        );
        let p = problems(&bad);
        assert_eq!(p.len(), 3, "{p:?}");
        assert!(p[0].starts_with("web.allowedOrigins[0]: expected an origin"), "{p:?}");
        assert!(p[2].starts_with("web.allowedHeaders[0]: expected a header name"), "{p:?}");
    }

    #[test]
    fn a_zero_reuse_interval_and_disable_rotation_are_accepted() {
        let c = parse(&minimal("expiry:\n  refreshTokens: {reuseInterval: 0s, disableRotation: true}\n")).unwrap();
        assert_eq!(c.expiry.refresh_tokens.reuse_interval, Duration::ZERO);
        assert!(c.expiry.refresh_tokens.disable_rotation);
        let c = parse(&minimal("")).unwrap();
        assert!(!c.expiry.refresh_tokens.disable_rotation, "rotation is on by default");
        assert_eq!(
            problems(&minimal("expiry:\n  refreshTokens: {reuseInterval: soon}\n")),
            vec!["expiry.refreshTokens.reuseInterval: expected a duration such as \"0s\", \"10s\" or \"2m\", got \"soon\""]
        );
    }

    #[test]
    fn backchannel_logout_keys_are_read_and_a_bad_uri_named() {
        let client = |uri: &str| {
            minimal(&format!(
                "staticClients:\n- id: a\n  secret: s\n  redirectURIs: ['http://127.0.0.1/cb']\n  \
                 backchannelLogoutURI: '{uri}'\n  backchannelLogoutSessionRequired: true\n"
            ))
        };
        let c = parse(&client("https://app.example.com/logout")).unwrap();
        assert_eq!(c.static_clients[0].backchannel_logout_uri.as_deref(), Some("https://app.example.com/logout"));
        assert!(c.static_clients[0].backchannel_logout_session_required);
        assert_eq!(
            problems(&client("/relative")),
            vec!["staticClients[0].backchannelLogoutURI: expected an absolute http(s) URL without fragment (Back-Channel \
                  Logout §2.2), got \"/relative\""]
        );
        assert_eq!(problems(&client("https://app.example.com/logout#x")).len(), 1);
    }

    #[test]
    fn minimal_config_gets_dex_like_defaults() {
        let c = parse(&minimal("")).unwrap();
        assert_eq!(c.issuer.as_str(), "http://127.0.0.1:5556/dex");
        assert_eq!(c.path_prefix(), "/dex");
        assert_eq!(c.endpoint("/keys"), "http://127.0.0.1:5556/dex/keys");
        assert_eq!(c.expiry.id_tokens, Duration::from_secs(600));
        assert_eq!(c.expiry.refresh_tokens.reuse_interval, Duration::from_secs(120));
        assert_eq!(c.signing.algorithm, Algorithm::Rs256);
        assert_eq!(c.brute_force.max_attempts, 20);
        assert_eq!(c.brute_force.refill_interval, Duration::from_secs(6));
    }

    #[test]
    fn unknown_key_names_its_path() {
        let text = minimal("staticClients:\n- id: a\n  secrt: x\n");
        let line = text.lines().position(|l| l.contains("secrt")).unwrap() + 1;
        let err = parse(&text).unwrap_err().to_string();
        assert!(err.contains(&format!("test.yaml:{line}: staticClients[0].secrt: expected one of `id`, ")), "{err}");
        assert!(err.contains("(`secrt` is not a key here)"), "{err}");
    }

    #[test]
    fn every_problem_is_listed_with_key_and_expectation() {
        let text = minimal(&format!(
            "expiry: {{idTokens: soon}}\nsigning: {{algorithm: HS256}}\nstaticClients:\n- id: a\n  redirectURIs: ['not a url']\n  trustedPeers: [ghost]\nstaticPasswords:\n- email: x@example.com\n  userID: '1'\n  hash: plain\n- email: X@example.com\n  userID: '1'\n  hash: '{HASH}'\n"
        ));
        let found = problems(&text);
        let expected = [
            "expiry.idTokens: expected a positive duration",
            "signing.algorithm: expected one of RS256, ES256, EdDSA",
            "staticClients[0].secret: expected a secret",
            "staticClients[0].redirectURIs[0]: expected an absolute URL",
            "staticClients[0].trustedPeers[0]: expected the id of a client",
            "staticPasswords[0].hash: expected a bcrypt hash",
            "staticPasswords[1].email: expected a unique email",
            "staticPasswords[1].userID: expected a non-empty, unique user id",
        ];
        for e in expected {
            assert!(found.iter().any(|f| f.starts_with(e)), "missing {e:?} in {found:#?}");
        }
        assert_eq!(found.len(), expected.len(), "{found:#?}");
    }

    #[test]
    fn secrets_come_from_environment_or_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("secret");
        std::fs::write(&file, "from-file\n").unwrap();
        let text = minimal(&format!(
            "staticClients:\n- id: a\n  secret: $APP_SECRET\n- id: b\n  secretEnv: APP_SECRET\n- id: c\n  secretFile: {}\n- id: d\n  secret: $MISSING\n",
            file.display()
        ));
        assert_eq!(
            problems(&text),
            vec!["staticClients[3].secret: expected environment variable MISSING to be set and non-empty"]
        );
        let c = parse(&text.replace("  secret: $MISSING\n", "  public: true\n")).unwrap();
        assert_eq!(c.client("a").unwrap().secret.as_deref(), Some("from-env"));
        assert_eq!(c.client("b").unwrap().secret.as_deref(), Some("from-env"));
        assert_eq!(c.client("c").unwrap().secret.as_deref(), Some("from-file"));
        assert!(c.client("d").unwrap().public);
    }

    #[test]
    fn public_clients_take_no_secret_and_no_plain_pkce() {
        let found =
            problems(&minimal("staticClients:\n- id: a\n  public: true\n  secret: s\n  allowPlainPKCE: true\n"));
        assert_eq!(found.len(), 2, "{found:#?}");
    }

    #[test]
    fn debug_output_redacts_secrets() {
        let c = parse(&minimal("staticClients:\n- id: a\n  secret: hunter2\n")).unwrap();
        assert!(!format!("{c:?}").contains("hunter2"));
    }

    const CA: &str = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";

    #[test]
    fn kubernetes_section_gets_defaults_and_registers_the_kubeconfig_callback() {
        let c = parse(&minimal(
            "staticClients:\n- id: kubernetes\n  secret: s\n  redirectURIs: [http://127.0.0.1:8000]\nkubernetes: {}\n",
        ))
        .unwrap();
        let k = c.kubernetes.as_ref().unwrap();
        assert_eq!(k.client_id, "kubernetes");
        assert_eq!(k.groups_prefix, "oidc:");
        assert_eq!(k.kubeconfig_path, "/kubeconfig");
        assert!(k.clusters.is_empty());
        assert_eq!(
            c.client("kubernetes").unwrap().redirect_uris,
            vec!["http://127.0.0.1:8000", "http://127.0.0.1:5556/dex/kubeconfig/callback"],
            "the kubeconfig callback is registered implicitly, under the issuer's path"
        );
        assert!(parse(&minimal("")).unwrap().kubernetes.is_none(), "no section, no kubeconfig page");
    }

    #[test]
    fn kubernetes_clusters_take_ca_data_or_a_ca_file() {
        use base64::Engine;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("ca.pem");
        std::fs::write(&file, CA).unwrap();
        let data = base64::engine::general_purpose::STANDARD.encode(CA);
        let text = minimal(&format!(
            "staticClients:\n- id: k8s\n  public: true\nkubernetes:\n  clientID: k8s\n  groupsPrefix: ''\n  kubeconfigPath: /kube/config\n  clusters:\n  - {{name: a, server: 'https://a.example:6443', certificateAuthorityData: {data}}}\n  - {{name: b, server: 'https://b.example', certificateAuthority: {}}}\n  - {{name: c, server: 'https://c.example'}}\n",
            file.display()
        ));
        let c = parse(&text).unwrap();
        let k = c.kubernetes.unwrap();
        assert_eq!((k.client_id.as_str(), k.groups_prefix.as_str()), ("k8s", ""));
        assert_eq!(k.callback_path(), "/kube/config/callback");
        let cas: Vec<_> = k.clusters.iter().map(|c| c.certificate_authority.as_deref()).collect();
        assert_eq!(cas, vec![Some(CA), Some(CA), None]);
    }

    #[test]
    fn kubernetes_problems_name_the_key_and_expectation() {
        let cases = [
            ("kubernetes: {clientID: ghost}", "kubernetes.clientID: expected the id of a client in staticClients"),
            ("kubernetes: {kubeconfigPath: /token}", "kubernetes.kubeconfigPath: expected a path"),
            ("kubernetes: {kubeconfigPath: 'kubeconfig/'}", "kubernetes.kubeconfigPath: expected a path"),
            (
                "kubernetes: {issuerCertificateAuthority: /nonexistent/ca.pem}",
                "kubernetes.issuerCertificateAuthority: expected a readable PEM certificate file",
            ),
            ("kubernetes: {clusters: [{name: '', server: 'https://a'}]}", "kubernetes.clusters[0].name: expected a name"),
            (
                "kubernetes: {clusters: [{name: a, server: 'https://a'}, {name: a, server: 'https://b'}]}",
                "kubernetes.clusters[1].name: expected a unique cluster name",
            ),
            ("kubernetes: {clusters: [{name: a, server: 'http://a'}]}", "kubernetes.clusters[0].server: expected the API server's https URL"),
            (
                "kubernetes: {clusters: [{name: a, server: 'https://a', certificateAuthorityData: bm90IGEgY2VydA==}]}",
                "kubernetes.clusters[0].certificateAuthorityData: expected base64 of a PEM certificate bundle",
            ),
            (
                "kubernetes: {clusters: [{name: a, server: 'https://a', certificateAuthorityData: x, certificateAuthority: /x}]}",
                "kubernetes.clusters[0].certificateAuthorityData: expected only one of",
            ),
        ];
        for (yaml, expected) in cases {
            let found = problems(&minimal(&format!("staticClients:\n- id: kubernetes\n  public: true\n{yaml}\n")));
            assert_eq!(found.len(), 1, "{yaml}: {found:#?}");
            assert!(found[0].starts_with(expected), "{yaml}: {found:#?}");
        }
    }

    #[test]
    fn shipped_dev_config_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/dev.yaml");
        let c = Config::load(&path).unwrap();
        assert!(c.client("kubernetes").unwrap().trusted_peers.contains(&"example-app".to_owned()));
        assert_eq!(c.static_passwords.len(), 2);
    }
}
