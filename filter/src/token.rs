//! JWT checks: signature against the JWKS, then `iss`, `aud`, `exp`/`nbf`/`iat` and, for ID tokens from
//! our own login, `nonce` and `azp` (OpenID Connect Core §3.1.3.7), all at a given `now`. Fetching keys is
//! `discovery`'s job; caching verified results is `cache`'s.

use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ring::signature::{self, RsaPublicKeyComponents, UnparsedPublicKey};
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::discovery::{Jwks, PublicKey};

/// Why a token was rejected. [`TokenError::reason`] is safe to show clients and to use as a metric label.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not three base64url parts of JSON.
    #[error("malformed token: {0}")]
    Malformed(&'static str),
    /// `none`, HMAC or anything else not on the list; never accepted.
    #[error("unsupported algorithm")]
    UnsupportedAlgorithm,
    /// No key with this `kid`; keys may have rotated.
    #[error("unknown signing key")]
    UnknownKey,
    /// The key's type or curve does not fit the algorithm.
    #[error("signing key does not match the algorithm")]
    KeyMismatch,
    /// The signature does not verify.
    #[error("bad signature")]
    BadSignature,
    /// `iss` is not the configured issuer.
    #[error("wrong issuer")]
    WrongIssuer,
    /// No acceptable `aud`, or `azp` names another client.
    #[error("wrong audience")]
    WrongAudience,
    /// `exp` has passed.
    #[error("token expired")]
    Expired,
    /// `nbf` is in the future.
    #[error("token not yet valid")]
    NotYetValid,
    /// `iat` is in the future.
    #[error("token issued in the future")]
    IssuedInFuture,
    /// The ID token's `nonce` is not the one this login sent.
    #[error("nonce mismatch")]
    NonceMismatch,
    /// A required claim is absent.
    #[error("missing claim {0}")]
    MissingClaim(&'static str),
    /// A token of another kind: a logout token offered as an ID or bearer token, or the other way round
    /// (its `typ` or its `events` claim says so; RFC 8725 §3.11).
    #[error("wrong token type")]
    WrongType,
    /// A logout token whose `iat` is older than [`LOGOUT_TOKEN_MAX_AGE`].
    #[error("token issued too long ago")]
    TooOld,
}

impl TokenError {
    /// A short, fixed label.
    pub fn reason(&self) -> &'static str {
        match self {
            TokenError::Malformed(_) => "malformed",
            TokenError::UnsupportedAlgorithm => "unsupported_alg",
            TokenError::UnknownKey => "unknown_kid",
            TokenError::KeyMismatch => "key_mismatch",
            TokenError::BadSignature => "bad_signature",
            TokenError::WrongIssuer => "wrong_issuer",
            TokenError::WrongAudience => "wrong_audience",
            TokenError::Expired => "expired",
            TokenError::NotYetValid => "not_yet_valid",
            TokenError::IssuedInFuture => "issued_in_future",
            TokenError::NonceMismatch => "nonce_mismatch",
            TokenError::MissingClaim(_) => "missing_claim",
            TokenError::WrongType => "wrong_type",
            TokenError::TooOld => "too_old",
        }
    }
}

/// Signature algorithms the filter verifies (RFC 7518 names).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    /// RSASSA-PKCS1-v1_5 with SHA-256.
    Rs256,
    /// RSASSA-PKCS1-v1_5 with SHA-384.
    Rs384,
    /// RSASSA-PKCS1-v1_5 with SHA-512.
    Rs512,
    /// ECDSA P-256 with SHA-256.
    Es256,
    /// ECDSA P-384 with SHA-384.
    Es384,
    /// Ed25519.
    EdDsa,
}

impl Algorithm {
    /// Parses the `alg` header; `none` and `HS*` are deliberately absent.
    pub fn parse(s: &str) -> Option<Algorithm> {
        Some(match s {
            "RS256" => Algorithm::Rs256,
            "RS384" => Algorithm::Rs384,
            "RS512" => Algorithm::Rs512,
            "ES256" => Algorithm::Es256,
            "ES384" => Algorithm::Es384,
            "EdDSA" => Algorithm::EdDsa,
            _ => return None,
        })
    }

    /// The `alg` value.
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::Rs256 => "RS256",
            Algorithm::Rs384 => "RS384",
            Algorithm::Rs512 => "RS512",
            Algorithm::Es256 => "ES256",
            Algorithm::Es384 => "ES384",
            Algorithm::EdDsa => "EdDSA",
        }
    }

    fn fits(self, key: &PublicKey) -> bool {
        matches!(
            (self, key),
            (Algorithm::Rs256 | Algorithm::Rs384 | Algorithm::Rs512, PublicKey::Rsa { .. })
                | (Algorithm::Es256, PublicKey::P256(_))
                | (Algorithm::Es384, PublicKey::P384(_))
                | (Algorithm::EdDsa, PublicKey::Ed25519(_))
        )
    }

    fn verify(self, key: &PublicKey, message: &[u8], sig: &[u8]) -> bool {
        match (self, key) {
            (Algorithm::Rs256 | Algorithm::Rs384 | Algorithm::Rs512, PublicKey::Rsa { n, e }) => {
                let params = match self {
                    Algorithm::Rs384 => &signature::RSA_PKCS1_2048_8192_SHA384,
                    Algorithm::Rs512 => &signature::RSA_PKCS1_2048_8192_SHA512,
                    _ => &signature::RSA_PKCS1_2048_8192_SHA256,
                };
                RsaPublicKeyComponents { n, e }.verify(params, message, sig).is_ok()
            }
            (Algorithm::Es256, PublicKey::P256(point)) => {
                UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, point).verify(message, sig).is_ok()
            }
            (Algorithm::Es384, PublicKey::P384(point)) => {
                UnparsedPublicKey::new(&signature::ECDSA_P384_SHA384_FIXED, point).verify(message, sig).is_ok()
            }
            (Algorithm::EdDsa, PublicKey::Ed25519(x)) => {
                UnparsedPublicKey::new(&signature::ED25519, x).verify(message, sig).is_ok()
            }
            _ => false,
        }
    }
}

/// What a token must satisfy.
#[derive(Debug, Clone)]
pub struct Expectations<'a> {
    /// Exact `iss`.
    pub issuer: &'a str,
    /// Our client id: always an acceptable audience, and the only acceptable `azp`.
    pub client_id: &'a str,
    /// Further acceptable audiences (bearer tokens minted for other clients of the same issuer).
    pub audiences: &'a [String],
    /// For ID tokens from our login: the nonce we sent.
    pub nonce: Option<&'a str>,
    /// Leeway for time claims.
    pub clock_skew: Duration,
    /// Unix seconds.
    pub now: u64,
}

#[derive(Deserialize)]
struct Header {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default)]
    crit: Option<Value>,
    #[serde(default)]
    typ: Option<String>,
}

/// The `events` member that makes a JWT a logout token (OpenID Connect Back-Channel Logout 1.0 §2.4).
pub const BACKCHANNEL_LOGOUT_EVENT: &str = "http://schemas.openid.net/event/backchannel-logout";

/// The JWS `typ` of a logout token (Back-Channel Logout 1.0 §2.4, explicit typing).
pub const LOGOUT_TOKEN_TYP: &str = "logout+jwt";

/// A logout token older than this (by `iat`, plus the clock skew) is refused: the issuer sends it when the
/// session ends and retries for seconds, not minutes.
pub const LOGOUT_TOKEN_MAX_AGE: Duration = Duration::from_secs(300);

/// A verified logout token (Back-Channel Logout 1.0 §2.4): the session `sid` or, without one, every session
/// of `sub` ended at `iat`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogoutToken {
    /// The session that ended.
    pub sid: Option<String>,
    /// Its user.
    pub sub: Option<String>,
    /// Unix seconds of issue (the issuer's clock).
    pub iat: u64,
    /// The token's id, for replay detection.
    pub jti: String,
    /// Unix seconds after which the token is refused anyway, so its `jti` need not be remembered longer.
    pub refused_after: u64,
}

/// A token that passed every check.
#[derive(Debug, Clone, PartialEq)]
pub struct Verified {
    /// `exp`, Unix seconds.
    pub expires_at: u64,
    /// Every claim, for access checks and header mapping.
    pub claims: Map<String, Value>,
}

/// Verifies a compact JWS and its claims.
pub fn verify(token: &str, jwks: &Jwks, want: &Expectations<'_>) -> Result<Verified, TokenError> {
    let (header, claims) = verify_signature(token, jwks)?;
    if header.typ.as_deref().is_some_and(is_logout_typ) || is_logout_event(&claims) {
        return Err(TokenError::WrongType);
    }
    let expires_at = check_claims(&claims, want)?;
    Ok(Verified { expires_at, claims })
}

/// Checks the compact JWS's signature against the JWKS; returns its header and claims, unchecked.
fn verify_signature(token: &str, jwks: &Jwks) -> Result<(Header, Map<String, Value>), TokenError> {
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(s), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return Err(TokenError::Malformed("expected three dot-separated parts"));
    };
    let header: Header = serde_json::from_slice(&decode(h)?).map_err(|_| TokenError::Malformed("header"))?;
    // RFC 7515 §4.1.11: extensions we do not understand make the token invalid.
    if header.crit.is_some() {
        return Err(TokenError::Malformed("unsupported crit header"));
    }
    let alg = Algorithm::parse(&header.alg).ok_or(TokenError::UnsupportedAlgorithm)?;
    let sig = decode(s)?;
    let message = &token.as_bytes()[..h.len() + 1 + p.len()];

    let candidates: Vec<_> = jwks.keys.iter().filter(|k| header.kid.is_none() || k.kid == header.kid).collect();
    if candidates.is_empty() {
        return Err(TokenError::UnknownKey);
    }
    let fitting: Vec<_> = candidates
        .into_iter()
        .filter(|k| alg.fits(&k.key) && k.alg.as_deref().is_none_or(|a| a == alg.as_str()))
        .collect();
    if fitting.is_empty() {
        return Err(TokenError::KeyMismatch);
    }
    if !fitting.iter().any(|k| alg.verify(&k.key, message, &sig)) {
        return Err(TokenError::BadSignature);
    }

    let claims = match serde_json::from_slice::<Value>(&decode(p)?) {
        Ok(Value::Object(m)) => m,
        _ => return Err(TokenError::Malformed("claims")),
    };
    Ok((header, claims))
}

fn is_logout_typ(typ: &str) -> bool {
    let typ = typ.to_ascii_lowercase();
    typ == LOGOUT_TOKEN_TYP || typ.strip_prefix("application/") == Some(LOGOUT_TOKEN_TYP)
}

fn is_logout_event(claims: &Map<String, Value>) -> bool {
    claims.get("events").and_then(Value::as_object).is_some_and(|e| e.contains_key(BACKCHANNEL_LOGOUT_EVENT))
}

/// Verifies a logout token as Back-Channel Logout 1.0 §2.6 says: the signature by the issuer's keys; `typ`,
/// when present, `logout+jwt`; `iss`; `aud` naming this client (`want.client_id`; further audiences do not
/// count); `iat` present, not in the future and not older than [`LOGOUT_TOKEN_MAX_AGE`]; `exp`, when
/// present, not passed; the `events` claim with the back-channel logout member; no `nonce`; a `sid` or a
/// `sub`; a `jti`. All times allow `want.clock_skew`. Remembering `jti`s is the caller's job.
pub fn verify_logout_token(token: &str, jwks: &Jwks, want: &Expectations<'_>) -> Result<LogoutToken, TokenError> {
    let (header, claims) = verify_signature(token, jwks)?;
    if header.typ.as_deref().is_some_and(|t| !is_logout_typ(t) && !t.eq_ignore_ascii_case("JWT")) {
        return Err(TokenError::WrongType);
    }
    let skew = want.clock_skew.as_secs();
    check_issuer(&claims, want)?;
    if !audiences(&claims)?.contains(&want.client_id) {
        return Err(TokenError::WrongAudience);
    }
    let iat = numeric_date(&claims, "iat")?.ok_or(TokenError::MissingClaim("iat"))?;
    if iat > want.now.saturating_add(skew) {
        return Err(TokenError::IssuedInFuture);
    }
    let oldest = want.now.saturating_sub(LOGOUT_TOKEN_MAX_AGE.as_secs().saturating_add(skew));
    if iat < oldest {
        return Err(TokenError::TooOld);
    }
    let exp = numeric_date(&claims, "exp")?;
    if exp.is_some_and(|exp| exp.saturating_add(skew) <= want.now) {
        return Err(TokenError::Expired);
    }
    if !is_logout_event(&claims) {
        return Err(TokenError::WrongType);
    }
    if !claims.get("events").and_then(|e| e.get(BACKCHANNEL_LOGOUT_EVENT)).is_some_and(Value::is_object) {
        return Err(TokenError::Malformed("the back-channel logout event is not a JSON object"));
    }
    if claims.contains_key("nonce") {
        return Err(TokenError::Malformed("a logout token carries no nonce"));
    }
    let text = |name: &str| claims.get(name).and_then(Value::as_str).filter(|v| !v.is_empty()).map(str::to_owned);
    let (sid, sub) = (text("sid"), text("sub"));
    if sid.is_none() && sub.is_none() {
        return Err(TokenError::MissingClaim("sid or sub"));
    }
    let jti = text("jti").ok_or(TokenError::MissingClaim("jti"))?;
    let limit = iat.saturating_add(LOGOUT_TOKEN_MAX_AGE.as_secs()).saturating_add(skew);
    let refused_after = exp.map_or(limit, |exp| exp.saturating_add(skew).min(limit));
    Ok(LogoutToken { sid, sub, iat, jti, refused_after })
}

/// Reads the claims of a token without verifying it: only for tokens this filter verified before
/// storing them in shared data.
pub fn claims_of_trusted(token: &str) -> Option<Map<String, Value>> {
    let payload = token.split('.').nth(1)?;
    match serde_json::from_slice(&decode(payload).ok()?).ok()? {
        Value::Object(m) => Some(m),
        _ => None,
    }
}

/// What OpenID Connect Core §12.2 says a refreshed ID token must keep from the login's: `sub`, `aud`
/// (as a set) and `azp`, hashed into 32 hex characters so the session cookie stays small. `iss` is not
/// part of it: every verified token's `iss` is the configured issuer.
pub fn identity_fingerprint(claims: &Map<String, Value>) -> String {
    use sha2::Digest as _;
    let text = |v: Option<&Value>| match v {
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
        None => String::new(),
    };
    let mut aud: Vec<String> = match claims.get("aud") {
        Some(Value::Array(a)) => a.iter().map(|v| text(Some(v))).collect(),
        other => vec![text(other)],
    };
    aud.sort();
    aud.dedup();
    let mut h = sha2::Sha256::new();
    for part in [text(claims.get("sub")), aud.join("\u{0}"), text(claims.get("azp"))] {
        h.update(part.as_bytes());
        h.update([0xff]);
    }
    h.finalize().iter().take(16).map(|b| format!("{b:02x}")).collect()
}

fn decode(part: &str) -> Result<Vec<u8>, TokenError> {
    URL_SAFE_NO_PAD.decode(part).map_err(|_| TokenError::Malformed("not base64url"))
}

/// A NumericDate claim (RFC 7519 §2: seconds, possibly fractional, here truncated); `None` when absent.
pub(crate) fn numeric_date(claims: &Map<String, Value>, name: &'static str) -> Result<Option<u64>, TokenError> {
    match claims.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_u64()
            .or_else(|| n.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64))
            .map(Some)
            .ok_or(TokenError::Malformed("numeric date")),
        Some(_) => Err(TokenError::Malformed("numeric date")),
    }
}

/// `iss` is exactly the configured issuer.
fn check_issuer(claims: &Map<String, Value>, want: &Expectations<'_>) -> Result<(), TokenError> {
    match claims.get("iss") {
        Some(Value::String(iss)) if iss == want.issuer => Ok(()),
        Some(_) => Err(TokenError::WrongIssuer),
        None => Err(TokenError::MissingClaim("iss")),
    }
}

/// The `aud` claim as a list (RFC 7519 §4.1.3: one string or an array of them).
fn audiences(claims: &Map<String, Value>) -> Result<Vec<&str>, TokenError> {
    match claims.get("aud") {
        Some(Value::String(a)) => Ok(vec![a.as_str()]),
        Some(Value::Array(a)) => Ok(a.iter().filter_map(Value::as_str).collect()),
        _ => Err(TokenError::MissingClaim("aud")),
    }
}

fn check_claims(claims: &Map<String, Value>, want: &Expectations<'_>) -> Result<u64, TokenError> {
    let skew = want.clock_skew.as_secs();
    check_issuer(claims, want)?;
    let auds = audiences(claims)?;
    let accepted = |a: &str| a == want.client_id || want.audiences.iter().any(|x| x == a);
    if !auds.iter().any(|a| accepted(a)) {
        return Err(TokenError::WrongAudience);
    }
    let exp = numeric_date(claims, "exp")?.ok_or(TokenError::MissingClaim("exp"))?;
    if exp.saturating_add(skew) <= want.now {
        return Err(TokenError::Expired);
    }
    if numeric_date(claims, "nbf")?.is_some_and(|nbf| nbf > want.now.saturating_add(skew)) {
        return Err(TokenError::NotYetValid);
    }
    if numeric_date(claims, "iat")?.is_some_and(|iat| iat > want.now.saturating_add(skew)) {
        return Err(TokenError::IssuedInFuture);
    }
    if let Some(nonce) = want.nonce {
        // OpenID Connect Core §3.1.3.7: an ID token from our login is for us alone, so `aud` must name
        // our client and `azp`, when present, must be us.
        if !auds.contains(&want.client_id) {
            return Err(TokenError::WrongAudience);
        }
        if claims.get("azp").is_some_and(|azp| azp.as_str() != Some(want.client_id)) {
            return Err(TokenError::WrongAudience);
        }
        match claims.get("nonce").and_then(Value::as_str) {
            Some(n) if constant_time_eq(n.as_bytes(), nonce.as_bytes()) => {}
            _ => return Err(TokenError::NonceMismatch),
        }
    }
    if claims.get("sub").and_then(Value::as_str).is_none() {
        return Err(TokenError::MissingClaim("sub"));
    }
    Ok(exp)
}

/// Compares secrets without an early exit.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
pub(crate) mod testing {
    //! Signing helpers shared by the token and flow tests.
    use super::*;
    use crate::discovery::Jwk;
    use ring::signature::{EcdsaKeyPair, Ed25519KeyPair, KeyPair, RsaKeyPair};

    pub(crate) const RSA_DER: &[u8] = include_bytes!("../testdata/rsa2048.der");
    pub(crate) const RSA_N: &str = include_str!("../testdata/rsa2048.n");

    /// Keys for each algorithm, plus their JWKS.
    pub(crate) struct Signer {
        rsa: RsaKeyPair,
        ec: EcdsaKeyPair,
        ed: Ed25519KeyPair,
        pub(crate) jwks: Jwks,
    }

    impl Signer {
        pub(crate) fn new() -> Signer {
            let rng = ring::rand::SystemRandom::new();
            let rsa = RsaKeyPair::from_der(RSA_DER).unwrap();
            let ec_doc = EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
            let ec =
                EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, ec_doc.as_ref(), &rng).unwrap();
            let ed_doc = Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
            let ed = Ed25519KeyPair::from_pkcs8(ed_doc.as_ref()).unwrap();
            let jwks = Jwks {
                keys: vec![
                    Jwk {
                        kid: Some("rsa".into()),
                        alg: Some("RS256".into()),
                        key: PublicKey::Rsa { n: URL_SAFE_NO_PAD.decode(RSA_N.trim()).unwrap(), e: vec![1, 0, 1] },
                    },
                    Jwk { kid: Some("ec".into()), alg: None, key: PublicKey::P256(ec.public_key().as_ref().to_vec()) },
                    Jwk {
                        kid: Some("ed".into()),
                        alg: None,
                        key: PublicKey::Ed25519(ed.public_key().as_ref().to_vec()),
                    },
                ],
            };
            Signer { rsa, ec, ed, jwks }
        }

        /// Signs `claims` with header `{alg, kid, typ: JWT}`; `alg` picks the key.
        pub(crate) fn sign(&self, alg: &str, kid: Option<&str>, claims: &Value) -> String {
            self.sign_typed(alg, kid, "JWT", claims)
        }

        /// Signs `claims` with header `{alg, kid, typ}`.
        pub(crate) fn sign_typed(&self, alg: &str, kid: Option<&str>, typ: &str, claims: &Value) -> String {
            let mut header = serde_json::json!({ "alg": alg, "typ": typ });
            if let Some(kid) = kid {
                header["kid"] = kid.into();
            }
            let signing_input = format!(
                "{}.{}",
                URL_SAFE_NO_PAD.encode(header.to_string()),
                URL_SAFE_NO_PAD.encode(claims.to_string())
            );
            let rng = ring::rand::SystemRandom::new();
            let sig = match alg {
                "RS256" => {
                    let mut sig = vec![0; self.rsa.public().modulus_len()];
                    self.rsa.sign(&signature::RSA_PKCS1_SHA256, &rng, signing_input.as_bytes(), &mut sig).unwrap();
                    sig
                }
                "ES256" => self.ec.sign(&rng, signing_input.as_bytes()).unwrap().as_ref().to_vec(),
                "EdDSA" => self.ed.sign(signing_input.as_bytes()).as_ref().to_vec(),
                _ => b"whatever".to_vec(),
            };
            format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(sig))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testing::Signer;
    use super::*;

    const NOW: u64 = 1_700_000_000;

    fn claims() -> Value {
        serde_json::json!({
            "iss": "https://dex.example.com",
            "sub": "user-1",
            "aud": "kube",
            "exp": NOW + 600,
            "iat": NOW,
            "nonce": "n-1",
            "email": "a@example.com",
        })
    }

    fn want(nonce: Option<&str>) -> Expectations<'_> {
        Expectations {
            issuer: "https://dex.example.com",
            client_id: "kube",
            audiences: &[],
            nonce,
            clock_skew: Duration::from_secs(60),
            now: NOW,
        }
    }

    fn with(patch: Value) -> Value {
        let mut c = claims();
        for (k, v) in patch.as_object().unwrap() {
            if v.is_null() {
                c.as_object_mut().unwrap().remove(k);
            } else {
                c[k] = v.clone();
            }
        }
        c
    }

    #[test]
    fn valid_tokens_of_each_algorithm_verify() {
        let s = Signer::new();
        for (alg, kid) in [("RS256", "rsa"), ("ES256", "ec"), ("EdDSA", "ed")] {
            let t = s.sign(alg, Some(kid), &claims());
            let v = verify(&t, &s.jwks, &want(Some("n-1"))).unwrap_or_else(|e| panic!("{alg}: {e}"));
            assert_eq!(v.expires_at, NOW + 600);
            assert_eq!(v.claims["email"], "a@example.com");
        }
    }

    #[test]
    fn token_without_kid_is_tried_against_fitting_keys() {
        let s = Signer::new();
        assert!(verify(&s.sign("ES256", None, &claims()), &s.jwks, &want(None)).is_ok());
    }

    #[test]
    fn invalid_tokens_are_rejected_with_their_reason() {
        let s = Signer::new();
        let forged_alg = |alg: &str| {
            let good = s.sign("RS256", Some("rsa"), &claims());
            let mut parts: Vec<String> = good.split('.').map(String::from).collect();
            parts[0] = URL_SAFE_NO_PAD.encode(serde_json::json!({"alg": alg, "kid": "rsa"}).to_string());
            if alg == "none" {
                parts[2] = String::new();
            }
            parts.join(".")
        };
        let cases: Vec<(&str, String, Option<&str>, TokenError)> = vec![
            ("alg none", forged_alg("none"), None, TokenError::UnsupportedAlgorithm),
            ("alg HS256", forged_alg("HS256"), None, TokenError::UnsupportedAlgorithm),
            ("unknown kid", s.sign("RS256", Some("gone"), &claims()), None, TokenError::UnknownKey),
            ("ES256 claimed with the RSA key", s.sign("ES256", Some("rsa"), &claims()), None, TokenError::KeyMismatch),
            ("EdDSA signature under the EC kid", s.sign("EdDSA", Some("ec"), &claims()), None, TokenError::KeyMismatch),
            (
                "expired",
                s.sign("RS256", Some("rsa"), &with(serde_json::json!({"exp": NOW - 61}))),
                None,
                TokenError::Expired,
            ),
            (
                "expired exactly at the skew boundary",
                s.sign("RS256", Some("rsa"), &with(serde_json::json!({"exp": NOW - 60}))),
                None,
                TokenError::Expired,
            ),
            (
                "not yet valid",
                s.sign("RS256", Some("rsa"), &with(serde_json::json!({"nbf": NOW + 61}))),
                None,
                TokenError::NotYetValid,
            ),
            (
                "issued in the future",
                s.sign("RS256", Some("rsa"), &with(serde_json::json!({"iat": NOW + 120}))),
                None,
                TokenError::IssuedInFuture,
            ),
            (
                "wrong issuer",
                s.sign("RS256", Some("rsa"), &with(serde_json::json!({"iss": "https://evil"}))),
                None,
                TokenError::WrongIssuer,
            ),
            (
                "wrong audience",
                s.sign("RS256", Some("rsa"), &with(serde_json::json!({"aud": ["other"]}))),
                None,
                TokenError::WrongAudience,
            ),
            (
                "missing exp",
                s.sign("RS256", Some("rsa"), &with(serde_json::json!({"exp": null}))),
                None,
                TokenError::MissingClaim("exp"),
            ),
            (
                "missing sub",
                s.sign("RS256", Some("rsa"), &with(serde_json::json!({"sub": null}))),
                None,
                TokenError::MissingClaim("sub"),
            ),
            ("wrong nonce", s.sign("RS256", Some("rsa"), &claims()), Some("n-2"), TokenError::NonceMismatch),
            (
                "missing nonce",
                s.sign("RS256", Some("rsa"), &with(serde_json::json!({"nonce": null}))),
                Some("n-1"),
                TokenError::NonceMismatch,
            ),
            (
                "azp of another client",
                s.sign("RS256", Some("rsa"), &with(serde_json::json!({"azp": "other"}))),
                Some("n-1"),
                TokenError::WrongAudience,
            ),
            ("two parts", "a.b".to_string(), None, TokenError::Malformed("expected three dot-separated parts")),
            (
                "crit header",
                {
                    let good = s.sign("RS256", Some("rsa"), &claims());
                    let mut parts: Vec<String> = good.split('.').map(String::from).collect();
                    parts[0] = URL_SAFE_NO_PAD.encode(r#"{"alg":"RS256","kid":"rsa","crit":["x"]}"#);
                    parts.join(".")
                },
                None,
                TokenError::Malformed("unsupported crit header"),
            ),
        ];
        for (name, token, nonce, err) in cases {
            assert_eq!(verify(&token, &s.jwks, &want(nonce)), Err(err), "{name}");
        }
    }

    #[test]
    fn tampered_payload_fails_the_signature() {
        let s = Signer::new();
        let good = s.sign("RS256", Some("rsa"), &claims());
        let mut parts: Vec<String> = good.split('.').map(String::from).collect();
        parts[1] = URL_SAFE_NO_PAD.encode(with(serde_json::json!({"sub": "admin"})).to_string());
        assert_eq!(verify(&parts.join("."), &s.jwks, &want(None)), Err(TokenError::BadSignature));
    }

    #[test]
    fn extra_audiences_are_accepted_for_bearer_tokens_only() {
        let s = Signer::new();
        let t = s.sign("RS256", Some("rsa"), &with(serde_json::json!({"aud": "kubernetes"})));
        let extra = ["kubernetes".to_string()];
        let bearer = Expectations { audiences: &extra, ..want(None) };
        assert!(verify(&t, &s.jwks, &bearer).is_ok());
        let login = Expectations { audiences: &extra, ..want(Some("n-1")) };
        assert_eq!(verify(&t, &s.jwks, &login), Err(TokenError::WrongAudience));
    }

    #[test]
    fn trusted_claims_are_read_without_verification() {
        let s = Signer::new();
        let t = s.sign("EdDSA", Some("ed"), &claims());
        assert_eq!(claims_of_trusted(&t).unwrap()["sub"], "user-1");
        assert_eq!(claims_of_trusted("x"), None);
    }
    fn logout_claims() -> Value {
        serde_json::json!({
            "iss": "https://dex.example.com",
            "aud": "kube",
            "iat": NOW - 10,
            "exp": NOW + 110,
            "jti": "j-1",
            "events": { BACKCHANNEL_LOGOUT_EVENT: {} },
            "sid": "session-1",
            "sub": "user-1",
        })
    }

    #[test]
    fn a_logout_token_verifies_with_every_required_claim() {
        let s = testing::Signer::new();
        let t = s.sign_typed("RS256", Some("rsa"), "logout+jwt", &logout_claims());
        let v = verify_logout_token(&t, &s.jwks, &want(None)).unwrap();
        assert_eq!(
            (v.sid.as_deref(), v.sub.as_deref(), v.iat, v.jti.as_str()),
            (Some("session-1"), Some("user-1"), NOW - 10, "j-1")
        );
        assert_eq!(v.refused_after, NOW + 110 + 60, "exp plus the skew, within the maximum age");
        // Back-Channel Logout 1.0 lets `typ` be absent.
        let untyped = s.sign_typed("ES256", Some("ec"), "JWT", &logout_claims());
        assert!(verify_logout_token(&untyped, &s.jwks, &want(None)).is_ok());
    }

    #[test]
    fn logout_tokens_missing_a_check_are_refused_with_their_reason() {
        let s = testing::Signer::new();
        let patched = |patch: Value| {
            let mut c = logout_claims();
            for (k, v) in patch.as_object().unwrap() {
                if v.is_null() {
                    c.as_object_mut().unwrap().remove(k);
                } else {
                    c[k] = v.clone();
                }
            }
            s.sign_typed("RS256", Some("rsa"), "logout+jwt", &c)
        };
        let cases = [
            (serde_json::json!({"iss": "https://evil.example"}), "wrong_issuer"),
            (serde_json::json!({"aud": "other-client"}), "wrong_audience"),
            (serde_json::json!({"iat": null}), "missing_claim"),
            (serde_json::json!({"iat": NOW + 600}), "issued_in_future"),
            (serde_json::json!({"iat": NOW - 3600, "exp": NOW + 10}), "too_old"),
            (serde_json::json!({"exp": NOW - 120}), "expired"),
            (serde_json::json!({"events": null}), "wrong_type"),
            (serde_json::json!({"events": {BACKCHANNEL_LOGOUT_EVENT: "yes"}}), "malformed"),
            (serde_json::json!({"nonce": "n"}), "malformed"),
            (serde_json::json!({"sid": null, "sub": null}), "missing_claim"),
            (serde_json::json!({"jti": null}), "missing_claim"),
        ];
        for (patch, reason) in cases {
            let err = verify_logout_token(&patched(patch.clone()), &s.jwks, &want(None)).unwrap_err();
            assert_eq!(err.reason(), reason, "{patch}");
        }
        let id_typed = s.sign_typed("RS256", Some("rsa"), "at+jwt", &logout_claims());
        assert_eq!(verify_logout_token(&id_typed, &s.jwks, &want(None)).unwrap_err(), TokenError::WrongType);
        let forged = format!("{}x", s.sign_typed("RS256", Some("rsa"), "logout+jwt", &logout_claims()));
        assert!(verify_logout_token(&forged, &s.jwks, &want(None)).is_err());
    }

    #[test]
    fn a_logout_token_is_never_accepted_as_a_bearer_or_id_token() {
        // It has `iss`, `aud`, `exp` and `sub`, so without explicit typing it would pass as a bearer token.
        let s = testing::Signer::new();
        let typed = s.sign_typed("RS256", Some("rsa"), "logout+jwt", &logout_claims());
        assert_eq!(verify(&typed, &s.jwks, &want(None)).unwrap_err(), TokenError::WrongType);
        let untyped = s.sign("RS256", Some("rsa"), &logout_claims());
        assert_eq!(verify(&untyped, &s.jwks, &want(None)).unwrap_err(), TokenError::WrongType);
    }
}
