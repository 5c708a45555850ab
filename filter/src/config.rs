//! The plugin configuration: Envoy's `configuration` JSON, parsed strictly into [`FilterConfig`].
//!
//! Parsing is `deny_unknown_fields` done by hand: the JSON is walked key by key so that every problem —
//! unknown key, wrong type, bad URL, bad duration — is reported with its full key path and what was
//! expected, all at once, and the filter refuses to start. Defaults live here and nowhere else.

use std::time::Duration;

use base64::Engine as _;
use serde_json::{Map, Value};

use crate::session::{Cipher, Keyring};
use crate::url::HttpUrl;

const TOP_KEYS: &[&str] = &[
    "issuer",
    "client_id",
    "client_secret",
    "cluster",
    "authority",
    "redirect_path",
    "scopes",
    "audiences",
    "cookie",
    "cookie_secrets",
    "pass_authorization_header",
    "claims_to_headers",
    "allowed_groups",
    "allowed_emails",
    "skip",
    "skip_cors_preflight",
    "sign_out_path",
    "backchannel_logout_path",
    "revocation_poll_interval",
    "post_logout_redirect_uri",
    "allowed_redirect_domains",
    "clock_skew",
    "jwks_refresh_interval",
    "kubernetes_audience",
    "auth_request_params",
    "cache",
];
const CACHE_KEYS: &[&str] = &["sessions", "bearer_tokens"];

/// Authorization-request parameters the filter sets itself; `auth_request_params` may not override them.
const OWN_AUTH_PARAMS: &[&str] = &[
    "response_type",
    "client_id",
    "redirect_uri",
    "scope",
    "state",
    "nonce",
    "code_challenge",
    "code_challenge_method",
];
const COOKIE_KEYS: &[&str] =
    &["name", "domain", "path", "secure", "same_site", "lifetime", "pass_to_upstream", "cipher"];
const SKIP_KEYS: &[&str] = &["path_prefix", "path_regex", "methods"];

/// Headers the filter must never be told to set from claims: they would break routing or let a claim
/// overwrite what the filter itself sets.
const RESERVED_HEADERS: &[&str] = &[
    "authorization",
    "cookie",
    "host",
    "connection",
    "content-length",
    "transfer-encoding",
    "te",
    "upgrade",
    "proxy-authorization",
];

/// One thing wrong with the configuration, naming the key (as a dotted path) it is about.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigProblem {
    /// The bytes are not JSON at all.
    #[error("configuration is not valid JSON: {0}")]
    Syntax(String),
    /// A key this filter does not know, usually a typo.
    #[error("unknown key `{key}`; expected one of: {}", expected.join(", "))]
    UnknownKey {
        /// Dotted path of the key.
        key: String,
        /// The keys allowed at that level.
        expected: &'static [&'static str],
    },
    /// A required key is absent.
    #[error("missing required key `{key}`")]
    Missing {
        /// Dotted path of the key.
        key: String,
    },
    /// The value has the wrong JSON type.
    #[error("`{key}`: expected {expected}, found {found}")]
    WrongType {
        /// Dotted path of the key.
        key: String,
        /// What was expected, e.g. "a string".
        expected: &'static str,
        /// The JSON type found.
        found: &'static str,
    },
    /// The value has the right type but is unusable.
    #[error("`{key}`: {reason}")]
    Invalid {
        /// Dotted path of the key.
        key: String,
        /// Why, and what would be accepted.
        reason: String,
    },
}

/// Every problem found in one configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{} configuration problem(s): {}", problems.len(), problems.iter().map(|p| p.to_string()).collect::<Vec<_>>().join("; "))]
pub struct ConfigError {
    /// In document order.
    pub problems: Vec<ConfigProblem>,
}

/// The cookie `SameSite` attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SameSite {
    /// Sent only on same-site requests.
    Strict,
    /// Also sent on top-level cross-site navigations (needed for the login callback).
    Lax,
    /// Sent everywhere; requires `Secure`.
    None,
}

impl SameSite {
    /// The attribute value.
    pub fn as_str(self) -> &'static str {
        match self {
            SameSite::Strict => "Strict",
            SameSite::Lax => "Lax",
            SameSite::None => "None",
        }
    }
}

/// Sizes of the shared-data caches (see `cache.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheConfig {
    /// Session entries; keep at least twice the active sessions for 99% hits. About
    /// [`crate::cache::SESSION_ENTRY_BYTES`] bytes each.
    pub sessions: u32,
    /// Verified bearer-token entries, likewise; about [`crate::cache::BEARER_ENTRY_BYTES`] bytes each.
    pub bearer_tokens: u32,
}

/// Session-cookie attributes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CookieConfig {
    /// Base name; chunks are `name_0`, `name_1`…, login flows `name_csrf_<flow>`.
    pub name: String,
    /// `Domain` attribute, when the session is shared across subdomains.
    pub domain: Option<String>,
    /// `Path` attribute.
    pub path: String,
    /// `Secure` attribute.
    pub secure: bool,
    /// `SameSite` attribute.
    pub same_site: SameSite,
    /// How long a session lasts from login, regardless of refreshes.
    pub lifetime: Duration,
    /// Forward the filter's own cookies (session chunks, login flows) to the upstream. Off by default: the
    /// session cookie carries the refresh token, and an upstream that logs or echoes cookies would hold a
    /// replayable credential.
    pub pass_to_upstream: bool,
    /// The AEAD new cookies are sealed with (`chacha20-poly1305`, the default, or `aes-256-gcm` while
    /// gateways from before format 2 still serve); both always open.
    pub cipher: Cipher,
}

/// A request that bypasses authentication.
#[derive(Debug, Clone)]
pub struct SkipRule {
    /// What the path must look like.
    pub path: PathMatch,
    /// Upper-case methods; empty means any.
    pub methods: Vec<String>,
}

/// How a [`SkipRule`] matches the request path (without the query).
#[derive(Debug, Clone)]
pub enum PathMatch {
    /// The path starts with this.
    Prefix(String),
    /// The path matches this regular expression (unanchored unless it says `^…$`).
    Regex(regex_lite::Regex),
}

/// A secret string whose `Debug` output is redacted, so a logged configuration leaks nothing.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// The secret itself, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// The validated filter configuration. Built once per `on_configure` and shared by every stream.
#[derive(Debug, Clone)]
pub struct FilterConfig {
    /// The issuer URL exactly as configured; ID tokens' `iss` must equal it.
    pub issuer: String,
    /// The issuer URL, parsed.
    pub issuer_url: HttpUrl,
    /// OAuth client id; also the audience ID tokens must carry.
    pub client_id: String,
    /// OAuth client secret, sent with `client_secret_basic`.
    pub client_secret: Secret,
    /// Envoy cluster that reaches the issuer.
    pub cluster: String,
    /// `:authority` for callouts to the issuer.
    pub authority: String,
    /// The login callback path on every protected host.
    pub redirect_path: String,
    /// Scopes requested at login.
    pub scopes: Vec<String>,
    /// Extra authorization-request parameters (`prompt`, `access_type`, `acr_values`, `resource`, …), in
    /// order.
    pub auth_request_params: Vec<(String, String)>,
    /// Audiences accepted on bearer tokens besides `client_id`.
    pub audiences: Vec<String>,
    /// Session cookie attributes.
    pub cookie: CookieConfig,
    /// Cache sizes.
    pub cache: CacheConfig,
    /// Keys that seal and open cookies.
    pub keyring: Keyring,
    /// Whether upstream receives `Authorization: Bearer <ID token>`.
    pub pass_authorization_header: bool,
    /// `(claim, lowercased header)` pairs copied upstream.
    pub claims_to_headers: Vec<(String, String)>,
    /// When non-empty, the user must be in one of these groups.
    pub allowed_groups: Vec<String>,
    /// When non-empty, the email must match one entry (`user@x`, or `@domain` for a whole domain).
    pub allowed_emails: Vec<String>,
    /// Requests that bypass authentication.
    pub skip: Vec<SkipRule>,
    /// Whether CORS preflights (`OPTIONS` + `Access-Control-Request-Method`) bypass authentication.
    pub skip_cors_preflight: bool,
    /// The sign-out path on every protected host.
    pub sign_out_path: String,
    /// Where the issuer POSTs logout tokens (OpenID Connect Back-Channel Logout 1.0): the client's
    /// `backchannelLogoutURI` at the issuer is `https://<any protected host><this path>`.
    pub backchannel_logout_path: String,
    /// How often the revocation feed is polled, jittered by ±20% (zero: never). Polling also needs the
    /// issuer to advertise `revocation_feed_endpoint` in its discovery document.
    pub revocation_poll_interval: Duration,
    /// Where the issuer sends the browser after logout.
    pub post_logout_redirect_uri: Option<String>,
    /// Hosts (or `.suffix` for a domain and its subdomains) that post-login redirects may go to.
    pub allowed_redirect_domains: Vec<String>,
    /// Leeway for `exp`, `nbf` and `iat`.
    pub clock_skew: Duration,
    /// How often discovery and JWKS are refetched.
    pub jwks_refresh_interval: Duration,
}

// === impl FilterConfig ===

impl FilterConfig {
    /// Parses and validates the plugin configuration, reporting every problem.
    pub fn parse(bytes: &[u8]) -> Result<FilterConfig, ConfigError> {
        let value: Value = serde_json::from_slice(bytes)
            .map_err(|e| ConfigError { problems: vec![ConfigProblem::Syntax(e.to_string())] })?;
        let mut r = Reader::default();
        let cfg = r.filter_config(value);
        match cfg {
            Some(cfg) if r.problems.is_empty() => Ok(cfg),
            _ => Err(ConfigError { problems: r.problems }),
        }
    }

    /// Where the discovery document lives (OpenID Connect Discovery §4).
    pub fn discovery_url(&self) -> String {
        format!("{}/.well-known/openid-configuration", self.issuer.trim_end_matches('/'))
    }

    /// The scopes as the space-separated `scope` parameter.
    pub fn scope_param(&self) -> String {
        self.scopes.join(" ")
    }

    /// Whether `aud` is acceptable on a bearer token.
    pub fn accepts_audience(&self, aud: &str) -> bool {
        aud == self.client_id || self.audiences.iter().any(|a| a == aud)
    }
}

/// Parses `"168h"`, `"1h30m"`, `"60s"`, `"250ms"`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let expected = "expected a duration like \"90s\", \"5m\", \"168h\" or \"1h30m\"";
    if s.is_empty() {
        return Err(expected.into());
    }
    let mut total = Duration::ZERO;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
        if digits == 0 {
            return Err(expected.into());
        }
        let n: u64 = rest[..digits].parse().map_err(|_| expected.to_string())?;
        rest = &rest[digits..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit()).unwrap_or(rest.len());
        let unit = match &rest[..unit_len] {
            "ms" => Duration::from_millis(n),
            "s" => Duration::from_secs(n),
            "m" => Duration::from_secs(n.saturating_mul(60)),
            "h" => Duration::from_secs(n.saturating_mul(3600)),
            _ => return Err(expected.into()),
        };
        total = total.saturating_add(unit);
        rest = &rest[unit_len..];
    }
    Ok(total)
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_owned()
    } else {
        format!("{prefix}.{key}")
    }
}

fn is_token(s: &str) -> bool {
    // RFC 7230 §3.2.6 tchar, which is also what RFC 6265 allows in cookie names.
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Collects problems while walking the JSON.
#[derive(Default)]
struct Reader {
    problems: Vec<ConfigProblem>,
}

// === impl Reader ===

impl Reader {
    fn invalid(&mut self, key: String, reason: impl Into<String>) {
        self.problems.push(ConfigProblem::Invalid { key, reason: reason.into() });
    }

    fn object(&mut self, value: Value, key: &str) -> Option<Map<String, Value>> {
        match value {
            Value::Object(m) => Some(m),
            other => {
                self.problems.push(ConfigProblem::WrongType {
                    key: if key.is_empty() { "(root)".into() } else { key.into() },
                    expected: "an object",
                    found: json_type(&other),
                });
                None
            }
        }
    }

    fn unknown(&mut self, map: Map<String, Value>, prefix: &str, expected: &'static [&'static str]) {
        for key in map.keys() {
            self.problems.push(ConfigProblem::UnknownKey { key: join(prefix, key), expected });
        }
    }

    fn string(&mut self, map: &mut Map<String, Value>, prefix: &str, key: &str) -> Option<String> {
        match map.remove(key)? {
            Value::String(s) => Some(s),
            other => {
                self.problems.push(ConfigProblem::WrongType {
                    key: join(prefix, key),
                    expected: "a string",
                    found: json_type(&other),
                });
                None
            }
        }
    }

    fn required_string(&mut self, map: &mut Map<String, Value>, key: &str) -> Option<String> {
        if !map.contains_key(key) {
            self.problems.push(ConfigProblem::Missing { key: key.into() });
            return None;
        }
        let s = self.string(map, "", key)?;
        if s.is_empty() {
            self.invalid(key.into(), "must not be empty");
            return None;
        }
        Some(s)
    }

    fn cache(&mut self, value: Option<Value>) -> CacheConfig {
        let mut m = value.and_then(|v| self.object(v, "cache")).unwrap_or_default();
        let sessions = self.count(&mut m, "cache", "sessions", crate::cache::DEFAULT_SESSIONS);
        let bearer_tokens = self.count(&mut m, "cache", "bearer_tokens", crate::cache::DEFAULT_BEARER_TOKENS);
        self.unknown(m, "cache", CACHE_KEYS);
        CacheConfig { sessions, bearer_tokens }
    }

    /// A whole number of entries, from 16 to 16,777,216.
    fn count(&mut self, map: &mut Map<String, Value>, prefix: &str, key: &str, default: u32) -> u32 {
        match map.remove(key) {
            None => default,
            Some(Value::Number(n)) => match n.as_u64().and_then(|n| u32::try_from(n).ok()) {
                Some(n) if (16..=16_777_216).contains(&n) => n,
                _ => {
                    self.invalid(join(prefix, key), format!("expected a whole number from 16 to 16777216, found {n}"));
                    default
                }
            },
            Some(other) => {
                self.problems.push(ConfigProblem::WrongType {
                    key: join(prefix, key),
                    expected: "a whole number",
                    found: json_type(&other),
                });
                default
            }
        }
    }

    fn bool(&mut self, map: &mut Map<String, Value>, prefix: &str, key: &str, default: bool) -> bool {
        match map.remove(key) {
            None => default,
            Some(Value::Bool(b)) => b,
            Some(other) => {
                self.problems.push(ConfigProblem::WrongType {
                    key: join(prefix, key),
                    expected: "a boolean",
                    found: json_type(&other),
                });
                default
            }
        }
    }

    fn string_list(&mut self, map: &mut Map<String, Value>, prefix: &str, key: &str) -> Option<Vec<String>> {
        let path = join(prefix, key);
        match map.remove(key)? {
            Value::Array(items) => {
                let mut out = Vec::with_capacity(items.len());
                for (i, item) in items.into_iter().enumerate() {
                    match item {
                        Value::String(s) => out.push(s),
                        other => self.problems.push(ConfigProblem::WrongType {
                            key: format!("{path}[{i}]"),
                            expected: "a string",
                            found: json_type(&other),
                        }),
                    }
                }
                Some(out)
            }
            other => {
                self.problems.push(ConfigProblem::WrongType {
                    key: path,
                    expected: "an array of strings",
                    found: json_type(&other),
                });
                None
            }
        }
    }

    fn duration(&mut self, map: &mut Map<String, Value>, prefix: &str, key: &str, default: Duration) -> Duration {
        self.duration_or_zero(map, prefix, key, default, false)
    }

    /// A duration; zero only when `zero_allowed` (a setting that zero turns off).
    fn duration_or_zero(
        &mut self,
        map: &mut Map<String, Value>,
        prefix: &str,
        key: &str,
        default: Duration,
        zero_allowed: bool,
    ) -> Duration {
        let Some(s) = self.string(map, prefix, key) else {
            return default;
        };
        match parse_duration(&s) {
            Ok(d) if d > Duration::ZERO || zero_allowed => d,
            Ok(_) => {
                self.invalid(join(prefix, key), "must be greater than zero");
                default
            }
            Err(e) => {
                self.invalid(join(prefix, key), format!("{e}, found {s:?}"));
                default
            }
        }
    }

    fn path(&mut self, map: &mut Map<String, Value>, key: &str, default: &str) -> String {
        let p = self.string(map, "", key).unwrap_or_else(|| default.into());
        if !p.starts_with('/') || p.contains('?') {
            self.invalid(
                key.into(),
                format!("must be an absolute path starting with '/' and without a query, found {p:?}"),
            );
        }
        p
    }

    fn url(&mut self, key: &str, s: &str) -> Option<HttpUrl> {
        match HttpUrl::parse(s) {
            Ok(u) => Some(u),
            Err(e) => {
                self.invalid(key.into(), format!("expected an absolute http(s) URL; {s:?} {e}"));
                None
            }
        }
    }

    fn filter_config(&mut self, value: Value) -> Option<FilterConfig> {
        let mut m = self.object(value, "")?;
        let issuer = self.required_string(&mut m, "issuer");
        let issuer_url = issuer.as_deref().and_then(|s| self.url("issuer", s));
        if let Some(u) = &issuer_url {
            if u.path_and_query.contains('?') {
                self.invalid("issuer".into(), "must not have a query (OpenID Connect Discovery §2)");
            }
        }
        let client_id = self.required_string(&mut m, "client_id");
        let client_secret = self.required_string(&mut m, "client_secret");
        let cluster = self.required_string(&mut m, "cluster");
        let authority = self.string(&mut m, "", "authority");
        let redirect_path = self.path(&mut m, "redirect_path", "/oauth2/callback");
        let sign_out_path = self.path(&mut m, "sign_out_path", "/oauth2/sign_out");
        if redirect_path == sign_out_path {
            self.invalid("sign_out_path".into(), "must differ from redirect_path");
        }
        let backchannel_logout_path = self.path(&mut m, "backchannel_logout_path", "/oauth2/backchannel_logout");
        if backchannel_logout_path == redirect_path || backchannel_logout_path == sign_out_path {
            self.invalid("backchannel_logout_path".into(), "must differ from redirect_path and sign_out_path");
        }
        let scopes = self
            .string_list(&mut m, "", "scopes")
            .unwrap_or_else(|| ["openid", "email", "profile", "groups", "offline_access"].map(String::from).to_vec());
        if !scopes.iter().any(|s| s == "openid") {
            self.invalid("scopes".into(), "must include \"openid\"");
        }
        if let Some(bad) = scopes.iter().find(|s| s.is_empty() || s.contains(' ')) {
            self.invalid("scopes".into(), format!("each scope is one non-empty word, found {bad:?}"));
        }
        let audiences = self.string_list(&mut m, "", "audiences").unwrap_or_default();
        let kubernetes_audience = self.string(&mut m, "", "kubernetes_audience");
        let mut scopes = scopes;
        if let Some(aud) = &kubernetes_audience {
            if aud.is_empty() || !aud.bytes().all(|b| b.is_ascii_graphic()) {
                self.invalid("kubernetes_audience".into(), format!("expected a client id (one word), found {aud:?}"));
            } else {
                // Dex's cross-client scope (DexAuthenticator does the same for Kubernetes API access): the
                // ID token is issued for `aud` too, with this client as `azp`.
                let scope = format!("audience:server:client_id:{aud}");
                if !scopes.contains(&scope) {
                    scopes.push(scope);
                }
            }
        }
        let auth_request_params = self.auth_request_params(m.remove("auth_request_params"));
        let cookie = self.cookie(m.remove("cookie"));
        let cache = self.cache(m.remove("cache"));
        let keyring = self.keyring(&mut m);
        let pass_authorization_header = self.bool(&mut m, "", "pass_authorization_header", true);
        let claims_to_headers = self.claims_to_headers(m.remove("claims_to_headers"));
        let allowed_groups = self.string_list(&mut m, "", "allowed_groups").unwrap_or_default();
        let allowed_emails = self
            .string_list(&mut m, "", "allowed_emails")
            .unwrap_or_default()
            .into_iter()
            .map(|e| e.trim_start_matches('*').to_ascii_lowercase())
            .collect();
        let skip = self.skip_rules(m.remove("skip"));
        let skip_cors_preflight = self.bool(&mut m, "", "skip_cors_preflight", true);
        let post_logout_redirect_uri = self.string(&mut m, "", "post_logout_redirect_uri");
        if let Some(u) = &post_logout_redirect_uri {
            self.url("post_logout_redirect_uri", u);
        }
        let allowed_redirect_domains = self
            .string_list(&mut m, "", "allowed_redirect_domains")
            .unwrap_or_default()
            .into_iter()
            .map(|d| d.to_ascii_lowercase())
            .collect();
        let clock_skew = self.duration(&mut m, "", "clock_skew", Duration::from_secs(60));
        let jwks_refresh_interval = self.duration(&mut m, "", "jwks_refresh_interval", Duration::from_secs(300));
        let revocation_poll_interval =
            self.duration_or_zero(&mut m, "", "revocation_poll_interval", Duration::from_secs(5), true);
        self.unknown(m, "", TOP_KEYS);

        let issuer_url = issuer_url?;
        let authority = authority.unwrap_or_else(|| issuer_url.authority());
        let keyring = keyring?.sealing_with(cookie.as_ref().map(|c| c.cipher).unwrap_or_default());
        Some(FilterConfig {
            issuer: issuer?,
            issuer_url,
            client_id: client_id?,
            client_secret: Secret(client_secret?),
            cluster: cluster?,
            authority,
            redirect_path,
            scopes,
            auth_request_params,
            audiences,
            cookie: cookie?,
            cache,
            keyring,
            pass_authorization_header,
            claims_to_headers,
            allowed_groups,
            allowed_emails,
            skip,
            skip_cors_preflight,
            sign_out_path,
            backchannel_logout_path,
            revocation_poll_interval,
            post_logout_redirect_uri,
            allowed_redirect_domains,
            clock_skew,
            jwks_refresh_interval,
        })
    }

    fn cookie(&mut self, value: Option<Value>) -> Option<CookieConfig> {
        let mut m = match value {
            None => Map::new(),
            Some(v) => self.object(v, "cookie")?,
        };
        let name = self.string(&mut m, "cookie", "name").unwrap_or_else(|| "_tokengate".into());
        if !is_token(&name) {
            self.invalid("cookie.name".into(), format!("must be a cookie-name token, found {name:?}"));
        }
        let domain = self.string(&mut m, "cookie", "domain");
        if let Some(d) = &domain {
            if d.is_empty() || !d.chars().all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-') {
                self.invalid("cookie.domain".into(), format!("must be a domain name, found {d:?}"));
            }
        }
        let path = self.string(&mut m, "cookie", "path").unwrap_or_else(|| "/".into());
        if !path.starts_with('/') || path.contains(';') || path.chars().any(|c| c.is_control()) {
            self.invalid("cookie.path".into(), format!("must be a path starting with '/', found {path:?}"));
        }
        let secure = self.bool(&mut m, "cookie", "secure", true);
        let same_site = match self.string(&mut m, "cookie", "same_site") {
            None => SameSite::Lax,
            Some(s) => match s.to_ascii_lowercase().as_str() {
                "strict" => SameSite::Strict,
                "lax" => SameSite::Lax,
                "none" => SameSite::None,
                _ => {
                    self.invalid(
                        "cookie.same_site".into(),
                        format!("expected \"Strict\", \"Lax\" or \"None\", found {s:?}"),
                    );
                    SameSite::Lax
                }
            },
        };
        if same_site == SameSite::None && !secure {
            self.invalid(
                "cookie.same_site".into(),
                "\"None\" requires cookie.secure = true (browsers drop the cookie otherwise)",
            );
        }
        let lifetime = self.duration(&mut m, "cookie", "lifetime", Duration::from_secs(168 * 3600));
        let pass_to_upstream = self.bool(&mut m, "cookie", "pass_to_upstream", false);
        let cipher = match self.string(&mut m, "cookie", "cipher") {
            None => Cipher::default(),
            Some(c) => match c.to_ascii_lowercase().as_str() {
                "chacha20-poly1305" => Cipher::ChaCha20Poly1305,
                "aes-256-gcm" => Cipher::Aes256Gcm,
                _ => {
                    self.invalid(
                        "cookie.cipher".into(),
                        format!("expected \"chacha20-poly1305\" or \"aes-256-gcm\", found {c:?}"),
                    );
                    Cipher::default()
                }
            },
        };
        self.unknown(m, "cookie", COOKIE_KEYS);
        Some(CookieConfig { name, domain, path, secure, same_site, lifetime, pass_to_upstream, cipher })
    }

    fn keyring(&mut self, m: &mut Map<String, Value>) -> Option<Keyring> {
        if !m.contains_key("cookie_secrets") {
            self.problems.push(ConfigProblem::Missing { key: "cookie_secrets".into() });
            return None;
        }
        let secrets = self.string_list(m, "", "cookie_secrets")?;
        if secrets.is_empty() {
            self.invalid("cookie_secrets".into(), "needs at least one key (base64 of 32 random bytes)");
            return None;
        }
        let mut keys = Vec::with_capacity(secrets.len());
        for (i, s) in secrets.iter().enumerate() {
            let s = s.trim_end_matches('=');
            let decoded = base64::engine::general_purpose::STANDARD_NO_PAD
                .decode(s)
                .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(s));
            match decoded.ok().and_then(|b| <[u8; 32]>::try_from(b).ok()) {
                Some(k) => keys.push(k),
                // Never echo the secret itself.
                None => self.invalid(
                    format!("cookie_secrets[{i}]"),
                    "expected base64 of exactly 32 bytes (e.g. `openssl rand -base64 32`)",
                ),
            }
        }
        if keys.len() != secrets.len() {
            return None;
        }
        Some(Keyring::new(&keys))
    }

    fn claims_to_headers(&mut self, value: Option<Value>) -> Vec<(String, String)> {
        let Some(value) = value else {
            return Vec::new();
        };
        let Some(m) = self.object(value, "claims_to_headers") else {
            return Vec::new();
        };
        let mut out = Vec::with_capacity(m.len());
        for (claim, header) in m {
            let key = format!("claims_to_headers.{claim}");
            let Value::String(header) = header else {
                self.problems.push(ConfigProblem::WrongType {
                    key,
                    expected: "a header name (string)",
                    found: json_type(&header),
                });
                continue;
            };
            let lower = header.to_ascii_lowercase();
            if !is_token(&lower) {
                self.invalid(key, format!("{header:?} is not a valid header name"));
            } else if RESERVED_HEADERS.contains(&lower.as_str()) {
                self.invalid(key, format!("{header:?} is reserved; choose another header name"));
            } else if out.iter().any(|(_, h)| *h == lower) {
                self.invalid(key, format!("header {header:?} is already used by another claim"));
            } else {
                out.push((claim, lower));
            }
        }
        out
    }

    fn auth_request_params(&mut self, value: Option<Value>) -> Vec<(String, String)> {
        let Some(m) = value.and_then(|v| self.object(v, "auth_request_params")) else {
            return Vec::new();
        };
        let mut out = Vec::with_capacity(m.len());
        for (name, value) in m {
            let key = format!("auth_request_params.{name}");
            if OWN_AUTH_PARAMS.contains(&name.as_str()) {
                self.invalid(key, "is set by the filter itself (PKCE, state, nonce, scopes: use `scopes`)");
                continue;
            }
            match value {
                Value::String(v) => out.push((name, v)),
                other => {
                    self.problems.push(ConfigProblem::WrongType { key, expected: "a string", found: json_type(&other) })
                }
            }
        }
        out
    }

    fn skip_rules(&mut self, value: Option<Value>) -> Vec<SkipRule> {
        let Some(value) = value else {
            return Vec::new();
        };
        let items = match value {
            Value::Array(items) => items,
            other => {
                self.problems.push(ConfigProblem::WrongType {
                    key: "skip".into(),
                    expected: "an array of objects",
                    found: json_type(&other),
                });
                return Vec::new();
            }
        };
        let mut out = Vec::with_capacity(items.len());
        for (i, item) in items.into_iter().enumerate() {
            let prefix = format!("skip[{i}]");
            let Some(mut m) = self.object(item, &prefix) else {
                continue;
            };
            let path_prefix = self.string(&mut m, &prefix, "path_prefix");
            let path_regex = self.string(&mut m, &prefix, "path_regex");
            let methods = self
                .string_list(&mut m, &prefix, "methods")
                .unwrap_or_default()
                .into_iter()
                .map(|s| s.to_ascii_uppercase())
                .collect();
            self.unknown(m, &prefix, SKIP_KEYS);
            let path = match (path_prefix, path_regex) {
                (Some(p), None) if p.starts_with('/') => PathMatch::Prefix(p),
                (Some(p), None) => {
                    self.invalid(format!("{prefix}.path_prefix"), format!("must start with '/', found {p:?}"));
                    continue;
                }
                (None, Some(r)) => match regex_lite::Regex::new(&r) {
                    Ok(re) => PathMatch::Regex(re),
                    Err(e) => {
                        self.invalid(format!("{prefix}.path_regex"), format!("not a valid regular expression: {e}"));
                        continue;
                    }
                },
                _ => {
                    self.invalid(prefix, "needs exactly one of `path_prefix` or `path_regex`");
                    continue;
                }
            };
            out.push(SkipRule { path, methods });
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

    fn minimal() -> serde_json::Value {
        serde_json::json!({
            "issuer": "https://dex.example.com",
            "client_id": "kube",
            "client_secret": "s3cret",
            "cluster": "issuer",
            "cookie_secrets": [SECRET],
        })
    }

    fn parse(v: serde_json::Value) -> Result<FilterConfig, ConfigError> {
        FilterConfig::parse(v.to_string().as_bytes())
    }

    #[test]
    fn minimal_config_gets_documented_defaults() {
        let cfg = parse(minimal()).unwrap();
        assert_eq!(cfg.authority, "dex.example.com");
        assert_eq!(cfg.redirect_path, "/oauth2/callback");
        assert_eq!(cfg.sign_out_path, "/oauth2/sign_out");
        assert_eq!(cfg.scope_param(), "openid email profile groups offline_access");
        assert_eq!(cfg.cookie.name, "_tokengate");
        assert_eq!(cfg.cookie.path, "/");
        assert!(cfg.cookie.secure);
        assert_eq!(cfg.cookie.same_site, SameSite::Lax);
        assert_eq!(cfg.cookie.lifetime, Duration::from_secs(168 * 3600));
        assert_eq!(cfg.cookie.cipher, Cipher::ChaCha20Poly1305);
        assert!(cfg.pass_authorization_header);
        assert!(cfg.skip_cors_preflight);
        assert_eq!(cfg.clock_skew, Duration::from_secs(60));
        assert_eq!(cfg.jwks_refresh_interval, Duration::from_secs(300));
        assert_eq!(cfg.backchannel_logout_path, "/oauth2/backchannel_logout");
        assert_eq!(cfg.revocation_poll_interval, Duration::from_secs(5));
        assert_eq!(cfg.discovery_url(), "https://dex.example.com/.well-known/openid-configuration");
    }

    #[test]
    fn full_config_is_accepted() {
        let mut v = minimal();
        let extra = serde_json::json!({
            "authority": "dex.internal:5556",
            "redirect_path": "/cb",
            "scopes": ["openid", "email"],
            "audiences": ["kubernetes"],
            "cookie": {"name": "sess", "domain": "example.com", "path": "/", "secure": false,
                       "same_site": "Strict", "lifetime": "12h", "cipher": "AES-256-GCM"},
            "pass_authorization_header": false,
            "claims_to_headers": {"email": "X-Auth-Request-Email", "groups": "x-auth-request-groups"},
            "allowed_groups": ["admins"],
            "allowed_emails": ["*@example.com", "bob@other.org"],
            "skip": [{"path_prefix": "/healthz"}, {"path_regex": "^/public/.*\\.css$", "methods": ["get"]}],
            "skip_cors_preflight": false,
            "sign_out_path": "/logout",
            "post_logout_redirect_uri": "https://app.example.com/",
            "allowed_redirect_domains": [".Example.com"],
            "clock_skew": "30s",
            "jwks_refresh_interval": "1h30m",
            "backchannel_logout_path": "/bcl",
            "revocation_poll_interval": "0s",
        });
        for (k, val) in extra.as_object().unwrap() {
            v[k] = val.clone();
        }
        let cfg = parse(v).unwrap();
        assert_eq!(cfg.authority, "dex.internal:5556");
        assert_eq!(cfg.cookie.cipher, Cipher::Aes256Gcm);
        assert!(format!("{:?}", cfg.keyring).contains("seal: Aes256Gcm"), "the keyring seals what was asked");
        assert_eq!(cfg.claims_to_headers[0], ("email".into(), "x-auth-request-email".into()));
        assert_eq!(cfg.allowed_emails, vec!["@example.com", "bob@other.org"]);
        assert_eq!(cfg.skip[1].methods, vec!["GET"]);
        assert_eq!(cfg.allowed_redirect_domains, vec![".example.com"]);
        assert_eq!(cfg.jwks_refresh_interval, Duration::from_secs(5400));
        assert_eq!((cfg.backchannel_logout_path.as_str(), cfg.revocation_poll_interval), ("/bcl", Duration::ZERO));
    }

    #[test]
    fn the_back_channel_logout_path_must_be_its_own() {
        let mut v = minimal();
        v["backchannel_logout_path"] = "/oauth2/callback".into();
        let err = parse(v).unwrap_err();
        assert!(err.to_string().contains("backchannel_logout_path"), "{err}");
    }

    #[test]
    fn each_problem_names_its_key_and_what_was_expected() {
        let cases: &[(serde_json::Value, &str)] = &[
            (serde_json::json!({"isuer": "x"}), "unknown key `isuer`; expected one of: issuer,"),
            (serde_json::json!({"cookie": {"nmae": "x"}}), "unknown key `cookie.nmae`"),
            (serde_json::json!({"skip": [{"path_prefix": "/a", "method": ["GET"]}]}), "unknown key `skip[0].method`"),
            (serde_json::json!({"client_id": 7}), "`client_id`: expected a string, found a number"),
            (serde_json::json!({"cookie": {"secure": "yes"}}), "`cookie.secure`: expected a boolean, found a string"),
            (serde_json::json!({"scopes": "openid"}), "`scopes`: expected an array of strings, found a string"),
            (serde_json::json!({"audiences": ["a", 1]}), "`audiences[1]`: expected a string, found a number"),
            (serde_json::json!({"issuer": "dex.example.com"}), "`issuer`: expected an absolute http(s) URL"),
            (
                serde_json::json!({"post_logout_redirect_uri": "/bye"}),
                "`post_logout_redirect_uri`: expected an absolute http(s) URL",
            ),
            (serde_json::json!({"clock_skew": "60"}), "`clock_skew`: expected a duration like"),
            (serde_json::json!({"cookie": {"lifetime": "7d"}}), "`cookie.lifetime`: expected a duration like"),
            (
                serde_json::json!({"cookie": {"same_site": "lax-ish"}}),
                "`cookie.same_site`: expected \"Strict\", \"Lax\" or \"None\"",
            ),
            (serde_json::json!({"cookie": {"same_site": "None", "secure": false}}), "requires cookie.secure = true"),
            (
                serde_json::json!({"cookie": {"cipher": "aes-128-gcm"}}),
                "`cookie.cipher`: expected \"chacha20-poly1305\" or \"aes-256-gcm\", found \"aes-128-gcm\"",
            ),
            (
                serde_json::json!({"cookie_secrets": ["c2hvcnQ="]}),
                "`cookie_secrets[0]`: expected base64 of exactly 32 bytes",
            ),
            (serde_json::json!({"cookie_secrets": []}), "`cookie_secrets`: needs at least one key"),
            (serde_json::json!({"redirect_path": "oauth2/callback"}), "`redirect_path`: must be an absolute path"),
            (serde_json::json!({"scopes": ["email"]}), "`scopes`: must include \"openid\""),
            (
                serde_json::json!({"claims_to_headers": {"sub": "Authorization"}}),
                "`claims_to_headers.sub`: \"Authorization\" is reserved",
            ),
            (serde_json::json!({"claims_to_headers": {"sub": "x y"}}), "is not a valid header name"),
            (
                serde_json::json!({"skip": [{"path_regex": "("}]}),
                "`skip[0].path_regex`: not a valid regular expression",
            ),
            (serde_json::json!({"skip": [{"methods": ["GET"]}]}), "`skip[0]`: needs exactly one of"),
        ];
        for (patch, want) in cases {
            let mut v = minimal();
            for (k, val) in patch.as_object().unwrap() {
                v[k] = val.clone();
            }
            let err = parse(v).unwrap_err().to_string();
            assert!(err.contains(want), "want {want:?} in: {err}");
        }
    }

    #[test]
    fn missing_required_keys_are_all_reported_at_once() {
        let err = FilterConfig::parse(b"{}").unwrap_err();
        let keys: Vec<String> = err
            .problems
            .iter()
            .filter_map(|p| match p {
                ConfigProblem::Missing { key } => Some(key.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(keys, vec!["issuer", "client_id", "client_secret", "cluster", "cookie_secrets"]);
    }

    #[test]
    fn non_json_and_non_object_configs_are_rejected() {
        assert!(matches!(FilterConfig::parse(b"{").unwrap_err().problems[0], ConfigProblem::Syntax(_)));
        let err = FilterConfig::parse(b"[]").unwrap_err().to_string();
        assert!(err.contains("`(root)`: expected an object, found an array"), "{err}");
    }

    #[test]
    fn debug_output_redacts_the_client_secret_and_cookie_keys() {
        let cfg = parse(minimal()).unwrap();
        let debug = format!("{cfg:?}");
        assert!(!debug.contains("s3cret"), "{debug}");
        assert!(debug.contains("Secret(..)"));
        assert!(debug.contains("Keyring { key_ids"));
    }

    #[test]
    fn secrets_never_appear_in_errors() {
        let mut v = minimal();
        v["cookie_secrets"] = serde_json::json!(["not-a-valid-key-but-secret"]);
        let err = parse(v).unwrap_err().to_string();
        assert!(!err.contains("not-a-valid-key-but-secret"), "{err}");
    }

    #[test]
    fn durations_parse_compound_units() {
        let cases: &[(&str, Option<u64>)] = &[
            ("168h", Some(168 * 3600)),
            ("60s", Some(60)),
            ("5m", Some(300)),
            ("1h30m", Some(5400)),
            ("1500ms", Some(1)),
            ("", None),
            ("h", None),
            ("10", None),
            ("10x", None),
            ("-5s", None),
        ];
        for (input, want) in cases {
            assert_eq!(parse_duration(input).ok().map(|d| d.as_secs()), *want, "{input:?}");
        }
    }
}
