//! The issuer's discovery document and JWKS: parsing them, the fetch sequence (discovery, then JWKS),
//! the snapshot kept in shared data, and the [`KeyState`] a request sees (`Loading`, `Ready`, `Stale`).
//! Verifying tokens with the keys is `token`'s job; scheduling fetches is `host`'s.

use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::callout::{Callout, CalloutResponse};
use crate::config::FilterConfig;

/// An unknown `kid` triggers a JWKS refetch at most this often.
pub const UNKNOWN_KID_REFETCH: Duration = Duration::from_secs(30);

/// After a failed fetch, wait this long before the next.
pub const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(5);

/// Why a discovery document or JWKS was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DiscoveryError {
    /// No answer, or a non-200 status.
    #[error("issuer answered {0} (0 = no response)")]
    Status(u16),
    /// Not the JSON we need.
    #[error("malformed {0}")]
    Malformed(&'static str),
    /// OpenID Connect Discovery §4.3: the document's `issuer` must equal the configured one.
    #[error("discovery document is for issuer {0:?}")]
    IssuerMismatch(String),
    /// An endpoint is not an absolute URL.
    #[error("endpoint {0} is not an absolute URL")]
    BadEndpoint(&'static str),
    /// No key the filter can use for signatures.
    #[error("JWKS has no usable signing keys")]
    NoUsableKeys,
}

/// The fields of the discovery document the filter uses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProviderMetadata {
    /// Must equal the configured issuer.
    pub issuer: String,
    /// Where browsers log in.
    pub authorization_endpoint: String,
    /// Code exchange and refresh.
    pub token_endpoint: String,
    /// The signing keys.
    pub jwks_uri: String,
    /// RFC 7009 revocation, when offered.
    #[serde(default)]
    pub revocation_endpoint: Option<String>,
    /// RP-initiated logout, when offered.
    #[serde(default)]
    pub end_session_endpoint: Option<String>,
    /// The tokengate issuer's revocation feed (`GET …/revocations?after=<cursor>`), when offered: not a
    /// registered metadata name, so other issuers leave it out and the filter then does not poll.
    #[serde(default)]
    pub revocation_feed_endpoint: Option<String>,
}

/// A public key from the JWKS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublicKey {
    /// `kty: RSA`: big-endian modulus and exponent.
    Rsa {
        /// Modulus.
        n: Vec<u8>,
        /// Public exponent.
        e: Vec<u8>,
    },
    /// `kty: EC, crv: P-256`: uncompressed point `04 | x | y`.
    P256(Vec<u8>),
    /// `kty: EC, crv: P-384`: uncompressed point `04 | x | y`.
    P384(Vec<u8>),
    /// `kty: OKP, crv: Ed25519`: the 32-byte key.
    Ed25519(Vec<u8>),
}

/// One usable signing key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Jwk {
    /// Key id.
    pub kid: Option<String>,
    /// The algorithm the key is restricted to, when the JWKS says.
    pub alg: Option<String>,
    /// The key material.
    pub key: PublicKey,
}

/// The issuer's signing keys.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Jwks {
    /// Keys usable for signature verification, in document order.
    pub keys: Vec<Jwk>,
}

/// Metadata and keys fetched together, as stored in shared data for every worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Provider {
    /// The discovery document.
    pub metadata: ProviderMetadata,
    /// Parsed keys.
    pub jwks: Jwks,
    /// The JWKS as fetched, kept so the snapshot can be re-parsed by other workers.
    pub jwks_json: String,
    /// Unix seconds of the fetch.
    pub fetched_at: u64,
}

#[derive(Serialize, Deserialize)]
struct Snapshot {
    metadata: ProviderMetadata,
    jwks: String,
    fetched_at: u64,
}

/// What a request can rely on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyState<'a> {
    /// Nothing fetched yet: requests needing keys wait for a fetch.
    Loading,
    /// Fresh keys.
    Ready(&'a Provider),
    /// Keys older than the refresh interval: still used, a refetch is due.
    Stale(&'a Provider),
}

/// Where a fetch sequence is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchStep {
    /// Waiting for the discovery document.
    Discovery,
    /// Waiting for the JWKS named by this metadata.
    Jwks(ProviderMetadata),
}

/// What to do after a fetch response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchOutcome {
    /// Make this call next.
    Next(Callout, FetchStep),
    /// Done: store this provider.
    Done(Provider),
    /// Give up until the next attempt.
    Failed(DiscoveryError),
}

// === impl Provider ===

impl Provider {
    /// Serialises for shared data.
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(&Snapshot {
            metadata: self.metadata.clone(),
            jwks: self.jwks_json.clone(),
            fetched_at: self.fetched_at,
        })
        .unwrap_or_default()
    }

    /// Reads what [`Provider::to_bytes`] wrote.
    pub fn from_bytes(bytes: &[u8]) -> Option<Provider> {
        let s: Snapshot = serde_json::from_slice(bytes).ok()?;
        let jwks = parse_jwks(s.jwks.as_bytes()).ok()?;
        Some(Provider { metadata: s.metadata, jwks, jwks_json: s.jwks, fetched_at: s.fetched_at })
    }

    /// Whether an unknown `kid` may trigger a JWKS refetch now (keys rotate rarely; a flood of
    /// garbage tokens must not become a flood of fetches).
    pub fn may_refetch_for_unknown_kid(&self, now: u64) -> bool {
        now >= self.fetched_at.saturating_add(UNKNOWN_KID_REFETCH.as_secs())
    }
}

/// The state requests see, given what shared data holds.
pub fn key_state(provider: Option<&Provider>, now: u64, refresh_interval: Duration) -> KeyState<'_> {
    match provider {
        None => KeyState::Loading,
        Some(p) if now < p.fetched_at.saturating_add(refresh_interval.as_secs()) => KeyState::Ready(p),
        Some(p) => KeyState::Stale(p),
    }
}

/// The first call of a fetch: discovery, or straight to the JWKS when only keys are wanted.
pub fn start_fetch(cfg: &FilterConfig, jwks_only_for: Option<&ProviderMetadata>) -> FetchOutcome {
    match jwks_only_for {
        Some(meta) => match Callout::get(cfg, &meta.jwks_uri) {
            Ok(c) => FetchOutcome::Next(c, FetchStep::Jwks(meta.clone())),
            Err(_) => FetchOutcome::Failed(DiscoveryError::BadEndpoint("jwks_uri")),
        },
        None => match Callout::get(cfg, &cfg.discovery_url()) {
            Ok(c) => FetchOutcome::Next(c, FetchStep::Discovery),
            Err(_) => FetchOutcome::Failed(DiscoveryError::BadEndpoint("issuer")),
        },
    }
}

/// Advances a fetch with the response to its last call.
pub fn advance_fetch(cfg: &FilterConfig, step: FetchStep, resp: &CalloutResponse, now: u64) -> FetchOutcome {
    if resp.status != 200 {
        return FetchOutcome::Failed(DiscoveryError::Status(resp.status));
    }
    match step {
        FetchStep::Discovery => match parse_metadata(&resp.body, &cfg.issuer) {
            Ok(meta) => start_fetch(cfg, Some(&meta)),
            Err(e) => FetchOutcome::Failed(e),
        },
        FetchStep::Jwks(metadata) => match parse_jwks(&resp.body) {
            Ok(jwks) => FetchOutcome::Done(Provider {
                metadata,
                jwks,
                jwks_json: String::from_utf8_lossy(&resp.body).into_owned(),
                fetched_at: now,
            }),
            Err(e) => FetchOutcome::Failed(e),
        },
    }
}

/// Parses a discovery document and checks it belongs to `issuer`.
pub fn parse_metadata(bytes: &[u8], issuer: &str) -> Result<ProviderMetadata, DiscoveryError> {
    let meta: ProviderMetadata =
        serde_json::from_slice(bytes).map_err(|_| DiscoveryError::Malformed("discovery document"))?;
    if meta.issuer != issuer {
        return Err(DiscoveryError::IssuerMismatch(meta.issuer));
    }
    let endpoints = [
        ("authorization_endpoint", Some(&meta.authorization_endpoint)),
        ("token_endpoint", Some(&meta.token_endpoint)),
        ("jwks_uri", Some(&meta.jwks_uri)),
        ("revocation_endpoint", meta.revocation_endpoint.as_ref()),
        ("end_session_endpoint", meta.end_session_endpoint.as_ref()),
        ("revocation_feed_endpoint", meta.revocation_feed_endpoint.as_ref()),
    ];
    for (name, url) in endpoints {
        if let Some(url) = url {
            crate::url::HttpUrl::parse(url).map_err(|_| DiscoveryError::BadEndpoint(name))?;
        }
    }
    Ok(meta)
}

#[derive(Deserialize)]
struct RawJwks {
    keys: Vec<RawJwk>,
}

#[derive(Deserialize)]
struct RawJwk {
    kty: String,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default)]
    alg: Option<String>,
    #[serde(default, rename = "use")]
    use_: Option<String>,
    #[serde(default)]
    crv: Option<String>,
    #[serde(default)]
    n: Option<String>,
    #[serde(default)]
    e: Option<String>,
    #[serde(default)]
    x: Option<String>,
    #[serde(default)]
    y: Option<String>,
}

/// Parses a JWKS, keeping the signing keys the filter can verify with and skipping the rest
/// (encryption keys, unknown key types), as RFC 7517 §5 asks.
pub fn parse_jwks(bytes: &[u8]) -> Result<Jwks, DiscoveryError> {
    let raw: RawJwks = serde_json::from_slice(bytes).map_err(|_| DiscoveryError::Malformed("JWKS"))?;
    let keys: Vec<Jwk> = raw.keys.into_iter().filter_map(usable_key).collect();
    if keys.is_empty() {
        return Err(DiscoveryError::NoUsableKeys);
    }
    Ok(Jwks { keys })
}

fn b64(s: &Option<String>) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(s.as_deref()?.trim_end_matches('=')).ok()
}

fn usable_key(k: RawJwk) -> Option<Jwk> {
    if k.use_.as_deref().is_some_and(|u| u != "sig") {
        return None;
    }
    let ec_point = |len: usize| {
        let (x, y) = (b64(&k.x)?, b64(&k.y)?);
        (x.len() == len && y.len() == len).then(|| [&[4u8][..], &x, &y].concat())
    };
    let key = match (k.kty.as_str(), k.crv.as_deref()) {
        ("RSA", _) => PublicKey::Rsa { n: b64(&k.n)?, e: b64(&k.e)? },
        ("EC", Some("P-256")) => PublicKey::P256(ec_point(32)?),
        ("EC", Some("P-384")) => PublicKey::P384(ec_point(48)?),
        ("OKP", Some("Ed25519")) => {
            let x = b64(&k.x)?;
            (x.len() == 32).then_some(())?;
            PublicKey::Ed25519(x)
        }
        _ => return None,
    };
    Some(Jwk { kid: k.kid, alg: k.alg, key })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> FilterConfig {
        FilterConfig::parse(
            serde_json::json!({
                "issuer": "https://dex.example.com",
                "client_id": "kube",
                "client_secret": "s",
                "cluster": "issuer",
                "authority": "dex.internal",
                "cookie_secrets": ["AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="],
            })
            .to_string()
            .as_bytes(),
        )
        .unwrap()
    }

    fn discovery_doc(issuer: &str) -> Vec<u8> {
        serde_json::json!({
            "issuer": issuer,
            "authorization_endpoint": "https://dex.example.com/auth",
            "token_endpoint": "https://dex.example.com/token",
            "jwks_uri": "https://dex.example.com/keys",
            "revocation_endpoint": "https://dex.example.com/revoke",
            "end_session_endpoint": "https://dex.example.com/logout",
            "response_types_supported": ["code"],
        })
        .to_string()
        .into_bytes()
    }

    const JWKS: &str = r#"{"keys":[
        {"kty":"RSA","kid":"r1","use":"sig","alg":"RS256","n":"AQAB","e":"AQAB"},
        {"kty":"RSA","kid":"enc","use":"enc","n":"AQAB","e":"AQAB"},
        {"kty":"EC","kid":"e1","crv":"P-256","x":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA","y":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"},
        {"kty":"EC","kid":"bad","crv":"P-256","x":"AAAA","y":"AAAA"},
        {"kty":"OKP","kid":"o1","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"},
        {"kty":"oct","kid":"h1","k":"c2VjcmV0"}
    ]}"#;

    #[test]
    fn jwks_keeps_only_usable_signing_keys() {
        let jwks = parse_jwks(JWKS.as_bytes()).unwrap();
        let kids: Vec<_> = jwks.keys.iter().map(|k| k.kid.as_deref().unwrap()).collect();
        assert_eq!(kids, vec!["r1", "e1", "o1"], "enc, malformed EC and symmetric keys are skipped");
        assert_eq!(parse_jwks(br#"{"keys":[{"kty":"oct","k":"x"}]}"#), Err(DiscoveryError::NoUsableKeys));
        assert_eq!(parse_jwks(b"[]"), Err(DiscoveryError::Malformed("JWKS")));
    }

    #[test]
    fn discovery_document_must_name_the_configured_issuer() {
        assert!(parse_metadata(&discovery_doc("https://dex.example.com"), "https://dex.example.com").is_ok());
        assert_eq!(
            parse_metadata(&discovery_doc("https://dex.example.com/"), "https://dex.example.com"),
            Err(DiscoveryError::IssuerMismatch("https://dex.example.com/".into()))
        );
    }

    #[test]
    fn fetch_goes_discovery_then_jwks_then_done() {
        let cfg = cfg();
        let FetchOutcome::Next(call, step) = start_fetch(&cfg, None) else { panic!() };
        assert_eq!(call.path, "/.well-known/openid-configuration");
        assert_eq!(call.authority, "dex.internal", "configured authority is used for the issuer's host");
        let resp = CalloutResponse { status: 200, body: discovery_doc("https://dex.example.com") };
        let FetchOutcome::Next(call, step) = advance_fetch(&cfg, step, &resp, 100) else { panic!() };
        assert_eq!(call.path, "/keys");
        let resp = CalloutResponse { status: 200, body: JWKS.as_bytes().to_vec() };
        let FetchOutcome::Done(p) = advance_fetch(&cfg, step, &resp, 100) else { panic!() };
        assert_eq!(p.fetched_at, 100);
        assert_eq!(Provider::from_bytes(&p.to_bytes()), Some(p.clone()), "snapshot round-trips");
        let failed =
            advance_fetch(&cfg, FetchStep::Jwks(p.metadata.clone()), &CalloutResponse { status: 0, body: vec![] }, 100);
        assert_eq!(failed, FetchOutcome::Failed(DiscoveryError::Status(0)));
    }

    #[test]
    fn key_state_goes_loading_ready_stale() {
        let p = Provider {
            metadata: parse_metadata(&discovery_doc("https://dex.example.com"), "https://dex.example.com").unwrap(),
            jwks: Jwks::default(),
            jwks_json: String::new(),
            fetched_at: 1_000,
        };
        let interval = Duration::from_secs(300);
        assert_eq!(key_state(None, 1_000, interval), KeyState::Loading);
        assert_eq!(key_state(Some(&p), 1_299, interval), KeyState::Ready(&p));
        assert_eq!(key_state(Some(&p), 1_300, interval), KeyState::Stale(&p));
        assert!(!p.may_refetch_for_unknown_kid(1_029));
        assert!(p.may_refetch_for_unknown_kid(1_030));
    }
}
