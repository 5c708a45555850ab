//! The `oidc` connector (Dex's keys): signs people in through an upstream OpenID Provider with the
//! authorization code flow (OIDC Core §3.1), PKCE S256 when the provider supports it (RFC 7636), and a
//! `nonce` checked in the upstream ID token (OIDC Core §3.1.3.7). The ID token's signature is checked
//! against the provider's JWKS, fetched again when a `kid` is unknown (key rotation, §10.1.1).
//!
//! Refresh: with an upstream refresh token (asked for with `offline_access` whenever the client wants a
//! refresh token of ours), the upstream refresh grant (OIDC Core §12); the refreshed ID token (or userinfo
//! when none comes back) must keep the login's `iss` and `sub` (§12.2); a rotated upstream refresh token is
//! kept, per downstream refresh-token family, and the issuer lets only one refresh per family reach the
//! upstream ([`RefreshConnector::refresh_consumes_upstream_token`]). Without an upstream refresh token,
//! userinfo with the stored access token. The provider's `invalid_grant` (revoked, expired) refuses the
//! refresh; an unreachable provider or a 5xx is `Unavailable` (503) and loses nothing.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use aws_lc_rs::digest;
use aws_lc_rs::signature::{self, RsaPublicKeyComponents, UnparsedPublicKey};
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use tokio::sync::RwLock;

use super::tls::{self, Trust};
use super::{CallbackConnector, CallbackRequest, ConnectorError, RefreshConnector};
use crate::config::Problem;
use crate::storage::{ConnectorData, Identity};

/// Clock skew allowed on `exp` and `iat`.
const LEEWAY: i64 = 60;
/// An unknown `kid` refetches the JWKS at most this often.
const JWKS_REFETCH: Duration = Duration::from_secs(10);

/// `config:` of an `oidc` connector.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Config {
    /// The provider's issuer URL (discovery is read from `{issuer}/.well-known/openid-configuration`).
    pub issuer: String,
    /// Another `iss` value the provider's tokens may carry (Dex's `issuerAlias`).
    #[serde(default)]
    pub issuer_alias: Option<String>,
    /// This issuer's client id at the provider.
    #[serde(rename = "clientID")]
    pub client_id: String,
    /// Its secret.
    #[serde(default)]
    pub client_secret: String,
    /// `{issuer}/callback` of this issuer, registered at the provider.
    #[serde(rename = "redirectURI")]
    pub redirect_uri: String,
    /// Scopes to ask for besides `openid` (default `profile`, `email`).
    #[serde(default)]
    pub scopes: Option<Vec<String>>,
    /// Also read the userinfo endpoint (claims it has override the ID token's).
    #[serde(default)]
    pub get_user_info: bool,
    /// Claim holding the user id (default `sub`).
    #[serde(default, rename = "userIDKey")]
    pub user_id_key: Option<String>,
    /// Claim holding the display name (default `name`).
    #[serde(default)]
    pub user_name_key: Option<String>,
    /// Claim names for `preferred_username`, `email` and `groups`.
    #[serde(default)]
    pub claim_mapping: ClaimMapping,
    /// Let mapped claims win over standard ones (Dex's `overrideClaimMapping`).
    #[serde(default)]
    pub override_claim_mapping: bool,
    /// Treat every email as verified (`true` or `"true"`).
    #[serde(default, deserialize_with = "bool_or_string")]
    pub insecure_skip_email_verified: bool,
    /// Read groups from the `groups` claim.
    #[serde(default, deserialize_with = "bool_or_string")]
    pub insecure_enable_groups: bool,
    /// Accept any TLS certificate from the provider.
    #[serde(default)]
    pub insecure_skip_verify: bool,
    /// `prompt` sent upstream (default `consent`, as Dex; `""` sends none).
    #[serde(default)]
    pub prompt_type: Option<String>,
    /// Send the client secret in the form, not HTTP Basic.
    #[serde(default)]
    pub basic_auth_unsupported: Option<bool>,
    /// Endpoints to use instead of discovery's.
    #[serde(default)]
    pub provider_discovery_overrides: DiscoveryOverrides,
    /// PEM files of CAs to trust instead of the Mozilla roots.
    #[serde(default, rename = "rootCAs")]
    pub root_cas: Vec<String>,
    /// Group claim rewriting.
    #[serde(default)]
    pub claim_modifications: ClaimModifications,
    /// `S256` (default when the provider lists it) or `""` to send no PKCE challenge (Dex's `pkceChallenge`).
    #[serde(default)]
    pub pkce_challenge: Option<String>,
    /// Accepted for Dex compatibility (Google Workspace domains); ignored with a warning by `check-config`.
    #[serde(default)]
    pub hosted_domains: Vec<String>,
    /// Authentication Context Class References to ask for (`acr_values`, OIDC Core §3.1.2.1).
    #[serde(default)]
    pub acr_values: Vec<String>,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("issuer", &self.issuer)
            .field("client_id", &self.client_id)
            .field("client_secret", &"<redacted>")
            .field("redirect_uri", &self.redirect_uri)
            .finish_non_exhaustive()
    }
}

fn bool_or_string<'de, D: serde::Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum B {
        Bool(bool),
        Text(String),
    }
    match B::deserialize(d)? {
        B::Bool(b) => Ok(b),
        B::Text(t) => t.parse().map_err(|_| serde::de::Error::custom(format!("true or false, got {t:?}"))),
    }
}

/// `claimMapping:`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClaimMapping {
    /// Default `preferred_username`.
    #[serde(default)]
    pub preferred_username: Option<String>,
    /// Default `email`.
    #[serde(default)]
    pub email: Option<String>,
    /// Default `groups`.
    #[serde(default)]
    pub groups: Option<String>,
}

/// `providerDiscoveryOverrides:`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct DiscoveryOverrides {
    /// Authorization endpoint.
    #[serde(default, rename = "authURL")]
    pub auth_url: Option<String>,
    /// Token endpoint.
    #[serde(default, rename = "tokenURL")]
    pub token_url: Option<String>,
    /// JWKS.
    #[serde(default, rename = "jwksURL")]
    pub jwks_url: Option<String>,
    /// Userinfo endpoint.
    #[serde(default, rename = "userInfoURL")]
    pub user_info_url: Option<String>,
}

/// `claimModifications:`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ClaimModifications {
    /// Groups made from other claims' values.
    #[serde(default)]
    pub new_group_from_claims: Vec<NewGroupFromClaims>,
    /// Keep only groups matching a regular expression.
    #[serde(default)]
    pub filter_group_claims: Option<FilterGroupClaims>,
    /// Prefix and suffix for every group.
    #[serde(default)]
    pub modify_group_names: Option<ModifyGroupNames>,
}

/// `claimModifications.newGroupFromClaims[]`: joins claim values into one group.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NewGroupFromClaims {
    /// Claims whose (string) values are joined.
    pub claims: Vec<String>,
    /// Joins them.
    #[serde(default)]
    pub delimiter: String,
    /// Remove the delimiter from the values first.
    #[serde(default)]
    pub clear_delimiter: bool,
    /// Put in front (followed by the delimiter).
    #[serde(default)]
    pub prefix: String,
}

/// `claimModifications.filterGroupClaims`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct FilterGroupClaims {
    /// A regular expression (Rust `regex` syntax, RE2-compatible like Go's).
    pub groups_filter: String,
}

/// `claimModifications.modifyGroupNames`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModifyGroupNames {
    /// Prepended.
    #[serde(default)]
    pub prefix: String,
    /// Appended.
    #[serde(default)]
    pub suffix: String,
}

impl Config {
    /// Checks URLs, the group filter and the CA files.
    pub fn validate(&mut self, key: &str, problems: &mut Vec<Problem>) {
        let mut problem = |k: &str, e: String| problems.push(Problem::new(format!("{key}.{k}"), e));
        let urls = [
            ("issuer", Some(&self.issuer)),
            ("redirectURI", Some(&self.redirect_uri)),
            ("providerDiscoveryOverrides.authURL", self.provider_discovery_overrides.auth_url.as_ref()),
            ("providerDiscoveryOverrides.tokenURL", self.provider_discovery_overrides.token_url.as_ref()),
            ("providerDiscoveryOverrides.jwksURL", self.provider_discovery_overrides.jwks_url.as_ref()),
            ("providerDiscoveryOverrides.userInfoURL", self.provider_discovery_overrides.user_info_url.as_ref()),
        ];
        for (k, v) in urls {
            if let Some(v) = v {
                if !url::Url::parse(v).is_ok_and(|u| matches!(u.scheme(), "http" | "https")) {
                    problem(k, format!("an absolute http(s) URL, got {v:?}"));
                }
            }
        }
        if self.client_id.is_empty() {
            problem("clientID", "the client id registered at the provider".into());
        }
        if let Some(f) = &self.claim_modifications.filter_group_claims {
            if regex::Regex::new(&f.groups_filter).is_err() {
                problem(
                    "claimModifications.filterGroupClaims.groupsFilter",
                    format!("a regular expression, got {:?}", f.groups_filter),
                );
            }
        }
        if self.pkce_challenge.as_deref().is_some_and(|p| !matches!(p, "" | "S256" | "plain")) {
            problem("pkceChallenge", "\"S256\", \"plain\" or \"\"".into());
        }
        for (i, f) in self.root_cas.iter().enumerate() {
            if !std::path::Path::new(f).is_file() {
                problem(&format!("rootCAs[{i}]"), format!("an existing PEM file, got {f:?}"));
            }
        }
    }
}

/// What the connector keeps about a login, for refresh.
#[derive(Debug, Default, serde::Serialize, Deserialize)]
struct Data {
    /// The upstream `iss` and `sub` at login: a refresh must keep them (OIDC Core §12.2).
    iss: String,
    sub: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    refresh_token: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    access_token: Option<String>,
}

/// The parts of the provider's discovery document used here.
#[derive(Debug, Clone, Deserialize)]
struct Discovery {
    issuer: String,
    authorization_endpoint: String,
    token_endpoint: String,
    jwks_uri: String,
    #[serde(default)]
    userinfo_endpoint: Option<String>,
    #[serde(default)]
    code_challenge_methods_supported: Vec<String>,
}

struct Jwks {
    keys: Vec<Value>,
    fetched: Instant,
}

/// An `oidc` connector.
pub struct Oidc {
    id: String,
    config: Config,
    http: reqwest::Client,
    discovery: RwLock<Option<Arc<Discovery>>>,
    jwks: RwLock<Option<Jwks>>,
    group_filter: Option<regex::Regex>,
}

fn unavailable(e: impl std::fmt::Display) -> ConnectorError {
    ConnectorError::Unavailable(format!("OIDC provider: {e}"))
}

fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

/// The answer of a token endpoint.
#[derive(Deserialize)]
struct TokenAnswer {
    #[serde(default)]
    id_token: Option<String>,
    #[serde(default)]
    access_token: Option<String>,
    #[serde(default)]
    refresh_token: Option<String>,
}

impl Oidc {
    /// Prepares the connector; discovery is read on first use (so the issuer starts while the provider is
    /// down).
    pub fn new(id: &str, config: Config) -> Result<Self, String> {
        let mut root_cas = Vec::new();
        for (i, f) in config.root_cas.iter().enumerate() {
            root_cas.push(tls::read_pem(&format!("rootCAs[{i}]"), f)?);
        }
        let http = tls::http_client(&Trust {
            root_cas,
            insecure_skip_verify: config.insecure_skip_verify,
            client_identity: None,
        })?;
        let group_filter = match &config.claim_modifications.filter_group_claims {
            Some(f) => Some(regex::Regex::new(&f.groups_filter).map_err(|e| format!("groupsFilter: {e}"))?),
            None => None,
        };
        Ok(Self {
            id: id.to_owned(),
            config,
            http,
            discovery: RwLock::new(None),
            jwks: RwLock::new(None),
            group_filter,
        })
    }

    async fn discovery(&self) -> Result<Arc<Discovery>, ConnectorError> {
        if let Some(d) = self.discovery.read().await.as_ref() {
            return Ok(d.clone());
        }
        let url = format!("{}/.well-known/openid-configuration", self.config.issuer.trim_end_matches('/'));
        let mut d: Discovery = self.get_json(&url, None).await?;
        // OIDC Discovery §4.3: the document's issuer must be the one configured.
        if d.issuer.trim_end_matches('/') != self.config.issuer.trim_end_matches('/') {
            return Err(ConnectorError::Upstream(format!(
                "the provider's discovery names issuer {:?}, not the configured {:?}",
                d.issuer, self.config.issuer
            )));
        }
        let o = &self.config.provider_discovery_overrides;
        if let Some(u) = &o.auth_url {
            d.authorization_endpoint = u.clone();
        }
        if let Some(u) = &o.token_url {
            d.token_endpoint = u.clone();
        }
        if let Some(u) = &o.jwks_url {
            d.jwks_uri = u.clone();
        }
        if let Some(u) = &o.user_info_url {
            d.userinfo_endpoint = Some(u.clone());
        }
        let d = Arc::new(d);
        *self.discovery.write().await = Some(d.clone());
        Ok(d)
    }

    async fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        url: &str,
        bearer: Option<&str>,
    ) -> Result<T, ConnectorError> {
        let mut req = self.http.get(url).header("accept", "application/json");
        if let Some(t) = bearer {
            req = req.bearer_auth(t);
        }
        let r = req.send().await.map_err(|e| send_error(url, &e))?;
        let status = r.status();
        if status.is_server_error() {
            return Err(unavailable(format!("{url} answered {status}")));
        }
        if status == reqwest::StatusCode::UNAUTHORIZED || status == reqwest::StatusCode::FORBIDDEN {
            return Err(ConnectorError::Refused {
                reason: format!("the provider refused the stored credentials ({status})"),
            });
        }
        if !status.is_success() {
            return Err(ConnectorError::Upstream(format!("{url} answered {status}")));
        }
        r.json().await.map_err(|e| ConnectorError::Upstream(format!("{url}: not the expected JSON: {e}")))
    }

    /// POSTs to the token endpoint with the client's credentials (HTTP Basic unless `basicAuthUnsupported`,
    /// RFC 6749 §2.3.1). An OAuth error answer becomes `Refused` for `invalid_grant` (the upstream session
    /// ended) and `Upstream` otherwise.
    async fn token_request(&self, mut form: Vec<(&str, String)>) -> Result<TokenAnswer, ConnectorError> {
        let d = self.discovery().await?;
        let mut req = self.http.post(&d.token_endpoint).header("accept", "application/json");
        if self.config.basic_auth_unsupported == Some(true) {
            form.push(("client_id", self.config.client_id.clone()));
            form.push(("client_secret", self.config.client_secret.clone()));
        } else {
            // RFC 6749 §2.3.1: both are form-urlencoded before Basic encoding.
            let enc = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
            req = req.basic_auth(enc(&self.config.client_id), Some(enc(&self.config.client_secret)));
        }
        let r = req.form(&form).send().await.map_err(|e| send_error("token endpoint", &e))?;
        let status = r.status();
        if status.is_server_error() {
            return Err(unavailable(format!("token endpoint answered {status}")));
        }
        let body: Value = r
            .json()
            .await
            .map_err(|_| ConnectorError::Upstream(format!("token endpoint answered {status} without JSON")))?;
        if !status.is_success() {
            let error = body.get("error").and_then(Value::as_str).unwrap_or("unknown_error");
            let description = body.get("error_description").and_then(Value::as_str).unwrap_or("");
            return Err(match error {
                "invalid_grant" => {
                    ConnectorError::Refused { reason: format!("the provider ended the session ({description})") }
                }
                "temporarily_unavailable" => unavailable(format!("token endpoint: {error}")),
                _ => ConnectorError::Upstream(format!("token endpoint: {error} {description}")),
            });
        }
        serde_json::from_value(body).map_err(|e| ConnectorError::Upstream(format!("token endpoint: {e}")))
    }

    /// The JWKS, refetched when `kid` is not in it (at most every [`JWKS_REFETCH`]).
    async fn key(&self, kid: Option<&str>, kty: &str) -> Result<Value, ConnectorError> {
        let find = |keys: &[Value]| {
            keys.iter()
                .filter(|k| k.get("kty").and_then(Value::as_str) == Some(kty))
                .filter(|k| k.get("use").and_then(Value::as_str).is_none_or(|u| u == "sig"))
                .find(|k| kid.is_none() || k.get("kid").and_then(Value::as_str) == kid)
                .cloned()
        };
        let stale = {
            let jwks = self.jwks.read().await;
            match jwks.as_ref() {
                Some(j) => match find(&j.keys) {
                    Some(k) => return Ok(k),
                    None => j.fetched.elapsed() >= JWKS_REFETCH,
                },
                None => true,
            }
        };
        if !stale {
            return Err(ConnectorError::Upstream(
                "the ID token is signed with a key the provider does not publish".into(),
            ));
        }
        let d = self.discovery().await?;
        let set: Value = self.get_json(&d.jwks_uri, None).await?;
        let keys = set.get("keys").and_then(Value::as_array).cloned().unwrap_or_default();
        let found = find(&keys);
        *self.jwks.write().await = Some(Jwks { keys, fetched: Instant::now() });
        found.ok_or_else(|| {
            ConnectorError::Upstream("the ID token is signed with a key the provider does not publish".into())
        })
    }

    /// Verifies an upstream ID token (OIDC Core §3.1.3.7): signature, `iss`, `aud`, `azp`, `exp`, and the
    /// `nonce` when one was sent. Returns its claims.
    async fn verify_id_token(&self, jwt: &str, nonce: Option<&str>) -> Result<Map<String, Value>, ConnectorError> {
        let bad = |why: &str| ConnectorError::Upstream(format!("the provider's ID token {why}"));
        let mut parts = jwt.split('.');
        let (Some(h), Some(p), Some(s), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
            return Err(bad("is not a signed JWT"));
        };
        let header: Value = B64
            .decode(h)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or_else(|| bad("has a malformed header"))?;
        let alg = header.get("alg").and_then(Value::as_str).unwrap_or("");
        let kid = header.get("kid").and_then(Value::as_str);
        let sig = B64.decode(s).map_err(|_| bad("has a malformed signature"))?;
        let signed = format!("{h}.{p}");
        let kty = match alg {
            "RS256" | "RS384" | "RS512" | "PS256" | "PS384" | "PS512" => "RSA",
            "ES256" | "ES384" => "EC",
            "EdDSA" => "OKP",
            other => return Err(bad(&format!("uses algorithm {other:?}, which is not accepted"))),
        };
        let jwk = self.key(kid, kty).await?;
        if !verify_signature(alg, &jwk, signed.as_bytes(), &sig) {
            return Err(bad("has an invalid signature"));
        }
        let claims: Map<String, Value> = B64
            .decode(p)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or_else(|| bad("has malformed claims"))?;
        let iss = claims.get("iss").and_then(Value::as_str).unwrap_or("");
        let issuers = [Some(self.config.issuer.as_str()), self.config.issuer_alias.as_deref()];
        if !issuers.iter().flatten().any(|i| i.trim_end_matches('/') == iss.trim_end_matches('/')) {
            return Err(bad(&format!("was issued by {iss:?}")));
        }
        let aud_ok = match claims.get("aud") {
            Some(Value::String(a)) => a == &self.config.client_id,
            Some(Value::Array(a)) => {
                a.iter().any(|v| v.as_str() == Some(&self.config.client_id))
                    && (a.len() == 1 || claims.get("azp").and_then(Value::as_str) == Some(&self.config.client_id))
            }
            _ => false,
        };
        if !aud_ok {
            return Err(bad("is not for this client (aud/azp)"));
        }
        if claims.get("exp").and_then(Value::as_i64).is_none_or(|exp| exp + LEEWAY < now()) {
            return Err(bad("has expired"));
        }
        if let Some(n) = nonce {
            if claims.get("nonce").and_then(Value::as_str) != Some(n) {
                return Err(bad("does not carry the nonce of this login"));
            }
        }
        Ok(claims)
    }

    /// Claims from the ID token, then userinfo (with `getUserInfo`, or when there is no ID token), whose
    /// `sub` must match (OIDC Core §5.3.2).
    async fn claims(
        &self,
        id_claims: Option<Map<String, Value>>,
        access_token: Option<&str>,
    ) -> Result<Map<String, Value>, ConnectorError> {
        let mut claims = id_claims.clone().unwrap_or_default();
        if self.config.get_user_info || id_claims.is_none() {
            let d = self.discovery().await?;
            let (Some(url), Some(at)) = (d.userinfo_endpoint.as_deref(), access_token) else {
                return Err(ConnectorError::Upstream("no ID token and no userinfo endpoint or access token".into()));
            };
            let info: Map<String, Value> = self.get_json(url, Some(at)).await?;
            if let Some(sub) = id_claims.as_ref().and_then(|c| c.get("sub")) {
                if info.get("sub") != Some(sub) {
                    return Err(ConnectorError::Upstream("userinfo is about another user (sub)".into()));
                }
            }
            let iss = claims.get("iss").cloned();
            claims.extend(info);
            if let Some(iss) = iss {
                claims.insert("iss".into(), iss);
            }
        }
        Ok(claims)
    }

    fn identity(&self, claims: &Map<String, Value>, data: Data) -> Result<Identity, ConnectorError> {
        let text = |key: &str| {
            claims.get(key).and_then(|v| match v {
                Value::String(s) => Some(s.clone()),
                Value::Number(n) => Some(n.to_string()),
                _ => None,
            })
        };
        let c = &self.config;
        let user_id_key = c.user_id_key.as_deref().unwrap_or("sub");
        let user_id = text(user_id_key).filter(|s| !s.is_empty()).ok_or_else(|| {
            ConnectorError::Upstream(format!("the provider sent no {user_id_key:?} claim (userIDKey)"))
        })?;
        let mapped = |standard: &str, mapping: &Option<String>| match mapping {
            Some(m) if c.override_claim_mapping => text(m).or_else(|| text(standard)),
            Some(m) => text(standard).or_else(|| text(m)),
            None => text(standard),
        };
        let email = mapped("email", &c.claim_mapping.email).unwrap_or_default();
        let email_verified = c.insecure_skip_email_verified
            || matches!(claims.get("email_verified"), Some(Value::Bool(true)))
            || matches!(claims.get("email_verified"), Some(Value::String(s)) if s == "true");
        let groups = if c.insecure_enable_groups { self.groups(claims) } else { vec![] };
        Ok(Identity {
            user_id,
            username: text(c.user_name_key.as_deref().unwrap_or("name")).unwrap_or_default(),
            email,
            email_verified,
            groups,
            connector_id: self.id.clone(),
            preferred_username: mapped("preferred_username", &c.claim_mapping.preferred_username).unwrap_or_default(),
            connector_data: Some(ConnectorData(json!(data))),
        })
    }

    /// Groups from the groups claim (an array, or a single string), then `claimModifications`.
    fn groups(&self, claims: &Map<String, Value>) -> Vec<String> {
        let c = &self.config;
        let key = c.claim_mapping.groups.as_deref().unwrap_or("groups");
        let mut groups: Vec<String> = match claims.get(key) {
            Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).map(str::to_owned).collect(),
            Some(Value::String(s)) => vec![s.clone()],
            _ => vec![],
        };
        if let Some(f) = &self.group_filter {
            groups.retain(|g| f.is_match(g));
        }
        for n in &c.claim_modifications.new_group_from_claims {
            let mut values: Vec<String> = n
                .claims
                .iter()
                .filter_map(|k| claims.get(k).and_then(Value::as_str))
                .map(|v| {
                    if n.clear_delimiter && !n.delimiter.is_empty() {
                        v.replace(&n.delimiter, "")
                    } else {
                        v.to_owned()
                    }
                })
                .collect();
            if values.is_empty() {
                continue;
            }
            if !n.prefix.is_empty() {
                values.insert(0, n.prefix.clone());
            }
            groups.push(values.join(&n.delimiter));
        }
        if let Some(m) = &c.claim_modifications.modify_group_names {
            for g in &mut groups {
                *g = format!("{}{g}{}", m.prefix, m.suffix);
            }
        }
        groups
    }

    fn scopes(&self, offline_access: bool) -> String {
        let mut scopes = vec!["openid".to_owned()];
        let configured = self.config.scopes.clone().unwrap_or_else(|| vec!["profile".into(), "email".into()]);
        scopes.extend(configured.into_iter().filter(|s| s != "openid"));
        if offline_access && !scopes.iter().any(|s| s == "offline_access") {
            scopes.push("offline_access".into());
        }
        if self.config.insecure_enable_groups && self.config.scopes.is_none() {
            scopes.push("groups".into());
        }
        scopes.join(" ")
    }

    fn pkce_method(&self, d: &Discovery) -> Option<&'static str> {
        match self.config.pkce_challenge.as_deref() {
            Some("S256") => Some("S256"),
            Some("plain") => Some("plain"),
            Some(_) => None,
            None => d.code_challenge_methods_supported.iter().any(|m| m == "S256").then_some("S256"),
        }
    }
}

impl Oidc {
    /// The identity after an upstream refresh grant (`answer`; `None` without an upstream refresh token):
    /// the refreshed ID token or userinfo, which must keep the login's `iss` and `sub` (OIDC Core §12.2).
    async fn refreshed_identity(
        &self,
        identity: &Identity,
        answer: Option<TokenAnswer>,
        kept: Data,
    ) -> Result<Option<Identity>, ConnectorError> {
        let id_claims = match answer.as_ref().and_then(|a| a.id_token.as_deref()) {
            Some(t) => Some(self.verify_id_token(t, None).await?),
            None => None,
        };
        let claims = self.claims(id_claims, kept.access_token.as_deref()).await?;
        let sub = claims.get("sub").and_then(Value::as_str).unwrap_or("");
        let iss = claims.get("iss").and_then(Value::as_str).unwrap_or(&kept.iss);
        if sub != kept.sub || iss != kept.iss {
            return Err(ConnectorError::Refused {
                reason: "the provider answered for another user (iss/sub changed)".into(),
            });
        }
        let fresh = self.identity(&claims, kept)?;
        if fresh.user_id != identity.user_id {
            return Err(ConnectorError::Refused { reason: "the user id claim changed".into() });
        }
        Ok(Some(fresh))
    }
}

/// A request that got no answer: unreachable (retry later) or refused by our own client.
fn send_error(what: &str, e: &reqwest::Error) -> ConnectorError {
    if tls::unreachable(e) {
        unavailable(format!("{what}: {}", redact(e)))
    } else {
        ConnectorError::Upstream(format!("{what}: {}", redact(e)))
    }
}

/// Error text of reqwest without the URL's query (which could carry a code).
fn redact(e: &reqwest::Error) -> String {
    let mut e = e.to_string();
    if let Some(i) = e.find('?') {
        e.truncate(i);
    }
    e
}

fn verify_signature(alg: &str, jwk: &Value, signed: &[u8], sig: &[u8]) -> bool {
    let field = |k: &str| jwk.get(k).and_then(Value::as_str).and_then(|v| B64.decode(v).ok());
    match alg {
        "RS256" | "RS384" | "RS512" | "PS256" | "PS384" | "PS512" => {
            let (Some(n), Some(e)) = (field("n"), field("e")) else { return false };
            let params: &signature::RsaParameters = match alg {
                "RS256" => &signature::RSA_PKCS1_2048_8192_SHA256,
                "RS384" => &signature::RSA_PKCS1_2048_8192_SHA384,
                "RS512" => &signature::RSA_PKCS1_2048_8192_SHA512,
                "PS256" => &signature::RSA_PSS_2048_8192_SHA256,
                "PS384" => &signature::RSA_PSS_2048_8192_SHA384,
                _ => &signature::RSA_PSS_2048_8192_SHA512,
            };
            RsaPublicKeyComponents { n: &n, e: &e }.verify(params, signed, sig).is_ok()
        }
        "ES256" | "ES384" => {
            let (Some(x), Some(y)) = (field("x"), field("y")) else { return false };
            let mut point = vec![4u8];
            point.extend(x);
            point.extend(y);
            let a =
                if alg == "ES256" { &signature::ECDSA_P256_SHA256_FIXED } else { &signature::ECDSA_P384_SHA384_FIXED };
            UnparsedPublicKey::new(a, point).verify(signed, sig).is_ok()
        }
        "EdDSA" => {
            let Some(x) = field("x") else { return false };
            UnparsedPublicKey::new(&signature::ED25519, x).verify(signed, sig).is_ok()
        }
        _ => false,
    }
}

#[async_trait]
impl super::Probe for Oidc {
    /// Discovery and the JWKS, as a login reads them.
    async fn probe(&self) -> Result<super::ProbeReport, ConnectorError> {
        let d = self.discovery().await?;
        let set: Value = self.get_json(&d.jwks_uri, None).await?;
        let n = set.get("keys").and_then(Value::as_array).map_or(0, Vec::len);
        let url = format!("{}/.well-known/openid-configuration", self.config.issuer.trim_end_matches('/'));
        let mut report = tls::probe_http(&self.http, &url, None, self.config.insecure_skip_verify).await?;
        report.detail = format!("discovery read, {n} signing key(s) published at {}", d.jwks_uri);
        Ok(report)
    }
}

#[async_trait]
impl CallbackConnector for Oidc {
    async fn login_url(&self, request: &CallbackRequest) -> Result<String, ConnectorError> {
        let d = self.discovery().await?;
        let mut url = url::Url::parse(&d.authorization_endpoint)
            .map_err(|_| ConnectorError::Upstream("the provider's authorization endpoint is not a URL".into()))?;
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("response_type", "code")
                .append_pair("client_id", &self.config.client_id)
                .append_pair("redirect_uri", &self.config.redirect_uri)
                .append_pair("scope", &self.scopes(request.offline_access))
                .append_pair("state", &request.state)
                .append_pair("nonce", &request.nonce);
            match self.pkce_method(&d) {
                Some("S256") => {
                    let challenge =
                        B64.encode(digest::digest(&digest::SHA256, request.pkce_verifier.as_bytes()).as_ref());
                    q.append_pair("code_challenge", &challenge).append_pair("code_challenge_method", "S256");
                }
                Some(_) => {
                    q.append_pair("code_challenge", &request.pkce_verifier)
                        .append_pair("code_challenge_method", "plain");
                }
                None => {}
            }
            if !self.config.acr_values.is_empty() {
                q.append_pair("acr_values", &self.config.acr_values.join(" "));
            }
            match self.config.prompt_type.as_deref() {
                None => {
                    q.append_pair("prompt", "consent");
                }
                Some("") => {}
                Some(p) => {
                    q.append_pair("prompt", p);
                }
            }
        }
        Ok(url.into())
    }

    async fn handle_callback(
        &self,
        request: &CallbackRequest,
        query: &HashMap<String, String>,
    ) -> Result<Identity, ConnectorError> {
        if let Some(error) = query.get("error") {
            let description = query.get("error_description").map(String::as_str).unwrap_or("");
            return Err(ConnectorError::Upstream(format!("the provider answered {error}: {description}")));
        }
        let code =
            query.get("code").ok_or_else(|| ConnectorError::InvalidCallback("the provider sent no code".into()))?;
        let d = self.discovery().await?;
        let mut form = vec![
            ("grant_type", "authorization_code".to_owned()),
            ("code", code.clone()),
            ("redirect_uri", self.config.redirect_uri.clone()),
        ];
        if self.pkce_method(&d).is_some() {
            form.push(("code_verifier", request.pkce_verifier.clone()));
        }
        let answer = self.token_request(form).await?;
        let id_token = answer
            .id_token
            .as_deref()
            .ok_or_else(|| ConnectorError::Upstream("the provider sent no ID token".into()))?;
        let id_claims = self.verify_id_token(id_token, Some(&request.nonce)).await?;
        let claims = self.claims(Some(id_claims.clone()), answer.access_token.as_deref()).await?;
        let data = Data {
            iss: id_claims.get("iss").and_then(Value::as_str).unwrap_or("").to_owned(),
            sub: id_claims.get("sub").and_then(Value::as_str).unwrap_or("").to_owned(),
            refresh_token: answer.refresh_token,
            access_token: answer.access_token,
        };
        self.identity(&claims, data)
    }
}

#[async_trait]
impl super::TokenIdentityConnector for Oidc {
    async fn token_identity(&self, kind: super::SubjectTokenType, token: &str) -> Result<Identity, ConnectorError> {
        let claims = match kind {
            super::SubjectTokenType::IdToken => {
                let id_claims = self.verify_id_token(token, None).await?;
                // Userinfo needs an access token, which an exchanged ID token does not come with.
                id_claims
            }
            super::SubjectTokenType::AccessToken => self.claims(None, Some(token)).await?,
        };
        let data = Data {
            iss: self.config.issuer.clone(),
            sub: claims.get("sub").and_then(Value::as_str).unwrap_or_default().to_owned(),
            refresh_token: None,
            access_token: None,
        };
        self.identity(&claims, data)
    }
}

#[async_trait]
impl RefreshConnector for Oidc {
    async fn refresh(&self, identity: &Identity) -> Result<Option<Identity>, ConnectorError> {
        let data: Data = identity
            .connector_data
            .as_ref()
            .and_then(|d| serde_json::from_value(d.0.clone()).ok())
            .ok_or_else(|| ConnectorError::Refused { reason: "the session predates this connector".into() })?;
        let (answer, rotated) = match &data.refresh_token {
            Some(rt) => {
                let answer = self
                    .token_request(vec![("grant_type", "refresh_token".to_owned()), ("refresh_token", rt.clone())])
                    .await?;
                let rotated = answer.refresh_token.as_ref().is_some_and(|new| new != rt);
                (Some(answer), rotated)
            }
            None => (None, false),
        };
        // A provider that rotates refresh tokens sent a new one; keep the old one otherwise.
        let refresh_token = answer.as_ref().and_then(|a| a.refresh_token.clone()).or(data.refresh_token.clone());
        let access_token = answer.as_ref().and_then(|a| a.access_token.clone()).or(data.access_token.clone());
        let kept = Data { iss: data.iss.clone(), sub: data.sub.clone(), refresh_token, access_token };
        let keep = ConnectorData(json!(kept));
        match self.refreshed_identity(identity, answer, kept).await {
            // The old upstream token is spent: the next attempt must start from the new one.
            Err(ConnectorError::Unavailable(why)) if rotated => Err(ConnectorError::Interrupted { why, data: keep }),
            other => other,
        }
    }

    fn refresh_consumes_upstream_token(&self, identity: &Identity) -> bool {
        identity.connector_data.as_ref().is_some_and(|d| d.0.get("refresh_token").is_some_and(|t| !t.is_null()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn connector(yaml: &str) -> Oidc {
        let base =
            "issuer: https://idp.example\nclientID: c\nclientSecret: s\nredirectURI: https://dex.example/callback\n";
        Oidc::new("oidc", serde_yaml::from_str(&format!("{base}{yaml}")).unwrap()).unwrap()
    }

    fn claims(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn groups_are_filtered_joined_and_renamed_as_dex_documents() {
        let c = connector(
            "insecureEnableGroups: true\nclaimModifications:\n  filterGroupClaims: {groupsFilter: '^team-'}\n  newGroupFromClaims:\n    - {claims: [org, unit], delimiter: ':', prefix: 'org', clearDelimiter: true}\n  modifyGroupNames: {prefix: 'oidc-', suffix: '-x'}\n",
        );
        let g = c.groups(&claims(json!({"groups": ["team-a", "other", "team-b"], "org": "ac:me", "unit": "ops"})));
        assert_eq!(g, vec!["oidc-team-a-x", "oidc-team-b-x", "oidc-org:acme:ops-x"]);
        // A single string is a one-element list, and the filter applies to it too.
        assert_eq!(c.groups(&claims(json!({"groups": "other"}))), vec!["oidc-org-x"; 0]);
        assert_eq!(c.groups(&claims(json!({"groups": "team-z"}))), vec!["oidc-team-z-x"]);
    }

    #[test]
    fn identity_maps_dex_keys_and_accepts_string_booleans() {
        let c = connector(
            "userIDKey: oid\nuserNameKey: display\nclaimMapping: {email: mail, preferred_username: login}\ninsecureSkipEmailVerified: \"true\"\n",
        );
        let id = c
            .identity(
                &claims(json!({"sub": "s", "oid": 42, "display": "Jane", "mail": "j@x.org", "login": "jane"})),
                Data::default(),
            )
            .unwrap();
        assert_eq!((id.user_id.as_str(), id.username.as_str(), id.email.as_str()), ("42", "Jane", "j@x.org"));
        assert_eq!(id.preferred_username, "jane");
        assert!(id.email_verified);
        assert!(c.identity(&claims(json!({"sub": "s"})), Data::default()).is_err(), "no userIDKey claim");
    }

    #[test]
    fn offline_access_and_groups_are_asked_for_when_needed() {
        assert_eq!(connector("").scopes(true), "openid profile email offline_access");
        assert_eq!(connector("").scopes(false), "openid profile email");
        assert_eq!(connector("insecureEnableGroups: true").scopes(false), "openid profile email groups");
        assert_eq!(connector("scopes: [openid, email, offline_access]").scopes(true), "openid email offline_access");
    }
}
