//! Signing keys: generation, the rotation schedule, JWKS, and JWS signing and verification. Keys are
//! stored (see `storage::Keys`) so every replica signs with the same key; this module decides what the
//! stored set should look like at a given time and turns it into ready-to-use key pairs.
//!
//! Rotation keeps three kinds of key: the one that signs now, the next one (already published in JWKS, so a
//! verifier that cached the document knows it before it signs anything), and retired ones that stay
//! published until every token they signed has expired.

use std::time::Duration;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair, RsaKeyPair, UnparsedPublicKey};
use aws_lc_rs::{digest, encoding::AsDer};
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// JWS algorithms the issuer signs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Algorithm {
    /// RSASSA-PKCS1-v1_5 with SHA-256 (2048-bit keys); the only one kube-apiserver accepts by default.
    #[serde(rename = "RS256")]
    Rs256,
    /// ECDSA P-256 with SHA-256.
    #[serde(rename = "ES256")]
    Es256,
    /// Ed25519.
    #[serde(rename = "EdDSA")]
    EdDsa,
}

impl Algorithm {
    /// The JWS `alg` value.
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::Rs256 => "RS256",
            Algorithm::Es256 => "ES256",
            Algorithm::EdDsa => "EdDSA",
        }
    }

    /// Parses a JWS `alg` value.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "RS256" => Some(Algorithm::Rs256),
            "ES256" => Some(Algorithm::Es256),
            "EdDSA" => Some(Algorithm::EdDsa),
            _ => None,
        }
    }
}

/// Key failures. Generation and parsing only fail when the crypto library or stored data is broken.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The crypto library refused to generate or sign.
    #[error("crypto operation failed")]
    Crypto,
    /// A stored private key could not be parsed.
    #[error("stored key {0} is not a valid PKCS#8 key")]
    Corrupt(String),
}

/// A private key as stored.
#[derive(Clone, Serialize, Deserialize)]
pub struct StoredKey {
    /// Key id, also the JWS `kid`.
    pub kid: String,
    /// Its algorithm.
    pub alg: Algorithm,
    /// PKCS#8 v1 DER.
    #[serde(with = "b64")]
    pub pkcs8: Vec<u8>,
}

impl std::fmt::Debug for StoredKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredKey").field("kid", &self.kid).field("alg", &self.alg).finish_non_exhaustive()
    }
}

/// A public key still published after it stopped signing.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RetiredKey {
    /// The public key.
    pub public: PublicKey,
    /// Unix time after which nothing it signed is still valid.
    pub expires_at: i64,
}

/// The public half of a key, in the two forms needed: for verification and for JWKS.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PublicKey {
    /// Key id.
    pub kid: String,
    /// Algorithm.
    pub alg: Algorithm,
    /// What `UnparsedPublicKey` takes: DER RSAPublicKey, an uncompressed P-256 point, or 32 Ed25519 bytes.
    #[serde(with = "b64")]
    pub bytes: Vec<u8>,
    /// The JWK.
    pub jwk: Value,
}

/// The stored key set.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Keys {
    /// Signs everything now.
    pub signing: StoredKey,
    /// Published now, signs after the next rotation.
    pub next: StoredKey,
    /// Published until they expire.
    pub retired: Vec<RetiredKey>,
    /// Unix time of the next rotation.
    pub next_rotation: i64,
}

/// Generates a fresh key.
pub fn generate(alg: Algorithm) -> Result<StoredKey, KeyError> {
    let pkcs8 = match alg {
        Algorithm::Rs256 => {
            let kp = RsaKeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).map_err(|_| KeyError::Crypto)?;
            kp.as_der().map_err(|_| KeyError::Crypto)?.as_ref().to_vec()
        }
        Algorithm::Es256 => {
            let kp =
                EcdsaKeyPair::generate(&signature::ECDSA_P256_SHA256_FIXED_SIGNING).map_err(|_| KeyError::Crypto)?;
            kp.to_pkcs8v1().map_err(|_| KeyError::Crypto)?.as_ref().to_vec()
        }
        Algorithm::EdDsa => {
            let kp = Ed25519KeyPair::generate().map_err(|_| KeyError::Crypto)?;
            kp.to_pkcs8v1().map_err(|_| KeyError::Crypto)?.as_ref().to_vec()
        }
    };
    let signer = Signer::from_stored(&StoredKey { kid: String::new(), alg, pkcs8: pkcs8.clone() })?;
    let thumb = digest::digest(&digest::SHA256, &signer.public_bytes());
    Ok(StoredKey { kid: B64.encode(&thumb.as_ref()[..16]), alg, pkcs8 })
}

/// What the stored key set should become at `now`: `None` when it is fine as it is.
///
/// `token_lifetime` is the longest a signed token stays valid, so a retired key is published that long.
pub fn rotate(
    current: Option<&Keys>,
    alg: Algorithm,
    now: i64,
    period: Duration,
    token_lifetime: Duration,
) -> Result<Option<Keys>, KeyError> {
    let period = period.as_secs() as i64;
    let Some(keys) = current else {
        return Ok(Some(Keys {
            signing: generate(alg)?,
            next: generate(alg)?,
            retired: vec![],
            next_rotation: now + period,
        }));
    };
    let alg_changed = keys.signing.alg != alg;
    if now < keys.next_rotation && !alg_changed {
        let live = keys.retired.iter().filter(|r| r.expires_at > now).count();
        if live == keys.retired.len() {
            return Ok(None);
        }
        let mut pruned = keys.clone();
        pruned.retired.retain(|r| r.expires_at > now);
        return Ok(Some(pruned));
    }
    let retired_public = Signer::from_stored(&keys.signing)?.public_key();
    let mut retired: Vec<RetiredKey> = keys.retired.iter().filter(|r| r.expires_at > now).cloned().collect();
    retired.push(RetiredKey { public: retired_public, expires_at: now + token_lifetime.as_secs() as i64 });
    // After an algorithm change the prepared key has the wrong type: it is retired unused.
    let (signing, next) =
        if alg_changed { (generate(alg)?, generate(alg)?) } else { (keys.next.clone(), generate(alg)?) };
    if alg_changed {
        retired.push(RetiredKey { public: Signer::from_stored(&keys.next)?.public_key(), expires_at: now });
    }
    retired.retain(|r| r.expires_at > now);
    Ok(Some(Keys { signing, next, retired, next_rotation: now + period }))
}

// === impl Signer ===

enum Pair {
    Rsa(RsaKeyPair),
    Ec(EcdsaKeyPair),
    Ed(Ed25519KeyPair),
}

/// A loaded private key.
pub struct Signer {
    kid: String,
    alg: Algorithm,
    pair: Pair,
}

impl Signer {
    /// Parses a stored key.
    pub fn from_stored(k: &StoredKey) -> Result<Self, KeyError> {
        let corrupt = |_| KeyError::Corrupt(k.kid.clone());
        let pair = match k.alg {
            Algorithm::Rs256 => Pair::Rsa(RsaKeyPair::from_pkcs8(&k.pkcs8).map_err(corrupt)?),
            Algorithm::Es256 => Pair::Ec(
                EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &k.pkcs8).map_err(corrupt)?,
            ),
            Algorithm::EdDsa => Pair::Ed(Ed25519KeyPair::from_pkcs8(&k.pkcs8).map_err(corrupt)?),
        };
        Ok(Self { kid: k.kid.clone(), alg: k.alg, pair })
    }

    /// The key id.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The algorithm.
    pub fn alg(&self) -> Algorithm {
        self.alg
    }

    fn public_bytes(&self) -> Vec<u8> {
        match &self.pair {
            Pair::Rsa(kp) => kp.public_key().as_ref().to_vec(),
            Pair::Ec(kp) => kp.public_key().as_ref().to_vec(),
            Pair::Ed(kp) => kp.public_key().as_ref().to_vec(),
        }
    }

    /// The public half, with its JWK.
    pub fn public_key(&self) -> PublicKey {
        let kid = &self.kid;
        let jwk = match &self.pair {
            Pair::Rsa(kp) => {
                let pk = kp.public_key();
                json!({
                    "kty": "RSA", "use": "sig", "alg": "RS256", "kid": kid,
                    "n": B64.encode(pk.modulus().big_endian_without_leading_zero()),
                    "e": B64.encode(pk.exponent().big_endian_without_leading_zero()),
                })
            }
            Pair::Ec(kp) => {
                let point = kp.public_key().as_ref();
                json!({
                    "kty": "EC", "use": "sig", "alg": "ES256", "kid": kid, "crv": "P-256",
                    "x": B64.encode(&point[1..33]), "y": B64.encode(&point[33..65]),
                })
            }
            Pair::Ed(kp) => json!({
                "kty": "OKP", "use": "sig", "alg": "EdDSA", "kid": kid, "crv": "Ed25519",
                "x": B64.encode(kp.public_key().as_ref()),
            }),
        };
        PublicKey { kid: kid.clone(), alg: self.alg, bytes: self.public_bytes(), jwk }
    }

    /// Signs `claims` as a compact JWS with `typ: JWT` (ID tokens).
    pub fn sign_jwt(&self, claims: &impl Serialize) -> Result<String, KeyError> {
        self.sign_typed_jwt("JWT", claims)
    }

    /// Signs `claims` as a compact JWS whose header names `typ` (RFC 7515 §4.1.9; RFC 9068 §2.1 `at+jwt`
    /// for access tokens, so that no verifier takes one kind of token for the other).
    pub fn sign_typed_jwt(&self, typ: &str, claims: &impl Serialize) -> Result<String, KeyError> {
        let header = json!({ "alg": self.alg.as_str(), "kid": self.kid, "typ": typ });
        let mut jws = format!(
            "{}.{}",
            B64.encode(serde_json::to_vec(&header).map_err(|_| KeyError::Crypto)?),
            B64.encode(serde_json::to_vec(claims).map_err(|_| KeyError::Crypto)?)
        );
        let sig = self.sign(jws.as_bytes())?;
        jws.push('.');
        jws.push_str(&B64.encode(sig));
        Ok(jws)
    }

    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, KeyError> {
        let rng = SystemRandom::new();
        match &self.pair {
            Pair::Rsa(kp) => {
                let mut sig = vec![0; kp.public_modulus_len()];
                kp.sign(&signature::RSA_PKCS1_SHA256, &rng, msg, &mut sig).map_err(|_| KeyError::Crypto)?;
                Ok(sig)
            }
            Pair::Ec(kp) => Ok(kp.sign(&rng, msg).map_err(|_| KeyError::Crypto)?.as_ref().to_vec()),
            Pair::Ed(kp) => Ok(kp.sign(msg).as_ref().to_vec()),
        }
    }
}

/// Verifies a compact JWS made by one of `keys` and returns its claims. Checks the signature only: the
/// caller checks `exp`, `aud` and the rest, because what they must be depends on the use.
pub fn verify_jwt(token: &str, keys: &[PublicKey]) -> Option<Value> {
    verify_jws(token, keys).map(|(_, claims)| claims)
}

/// Like [`verify_jwt`], returning the protected header too (`typ` tells an access token from an ID token).
pub fn verify_jws(token: &str, keys: &[PublicKey]) -> Option<(Value, Value)> {
    let mut parts = token.split('.');
    let (h, p, s) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let header: Value = serde_json::from_slice(&B64.decode(h).ok()?).ok()?;
    let kid = header.get("kid")?.as_str()?;
    let alg = Algorithm::from_name(header.get("alg")?.as_str()?)?;
    let key = keys.iter().find(|k| k.kid == kid && k.alg == alg)?;
    let verify_alg: &dyn signature::VerificationAlgorithm = match alg {
        Algorithm::Rs256 => &signature::RSA_PKCS1_2048_8192_SHA256,
        Algorithm::Es256 => &signature::ECDSA_P256_SHA256_FIXED,
        Algorithm::EdDsa => &signature::ED25519,
    };
    let sig = B64.decode(s).ok()?;
    let signed = &token[..h.len() + 1 + p.len()];
    UnparsedPublicKey::new(verify_alg, &key.bytes).verify(signed.as_bytes(), &sig).ok()?;
    Some((header, serde_json::from_slice(&B64.decode(p).ok()?).ok()?))
}

/// OIDC Core §3.1.3.6 `at_hash`: the left half of the hash that goes with `alg`, base64url. SHA-256 for
/// RS256 and ES256; SHA-512 for EdDSA with Ed25519 (the hash Ed25519 itself uses, as the OpenID
/// Foundation settled it and RP libraries verify it).
pub fn left_half_hash(alg: Algorithm, value: &str) -> String {
    let d = match alg {
        Algorithm::Rs256 | Algorithm::Es256 => digest::digest(&digest::SHA256, value.as_bytes()),
        Algorithm::EdDsa => digest::digest(&digest::SHA512, value.as_bytes()),
    };
    let d = d.as_ref();
    B64.encode(&d[..d.len() / 2])
}

mod b64 {
    use base64::engine::general_purpose::STANDARD;
    use base64::Engine;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(v))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        STANDARD.decode(s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);

    #[test]
    fn every_algorithm_signs_what_its_public_key_verifies() {
        for alg in [Algorithm::Rs256, Algorithm::Es256, Algorithm::EdDsa] {
            let signer = Signer::from_stored(&generate(alg).unwrap()).unwrap();
            let jwt = signer.sign_jwt(&json!({"sub": "u"})).unwrap();
            let public = signer.public_key();
            assert_eq!(verify_jwt(&jwt, std::slice::from_ref(&public)).unwrap()["sub"], "u", "{alg:?}");
            assert_eq!(public.jwk["kid"], signer.kid());
            let mut tampered = jwt.clone();
            tampered.insert(jwt.find('.').unwrap() + 2, 'x');
            assert!(verify_jwt(&tampered, &[public]).is_none(), "{alg:?} accepted a tampered token");
        }
    }

    #[test]
    fn a_token_with_an_unknown_kid_or_alg_is_rejected() {
        let a = Signer::from_stored(&generate(Algorithm::EdDsa).unwrap()).unwrap();
        let b = Signer::from_stored(&generate(Algorithm::EdDsa).unwrap()).unwrap();
        let jwt = a.sign_jwt(&json!({})).unwrap();
        assert!(verify_jwt(&jwt, &[b.public_key()]).is_none());
        let none = format!("{}.{}.", B64.encode(r#"{"alg":"none","kid":"x"}"#), B64.encode("{}"));
        assert!(verify_jwt(&none, &[a.public_key()]).is_none());
    }

    #[test]
    fn rotation_promotes_the_published_key_and_keeps_the_old_one_until_its_tokens_expire() {
        let alg = Algorithm::Es256;
        let first = rotate(None, alg, 1000, HOUR, HOUR).unwrap().unwrap();
        assert!(rotate(Some(&first), alg, 1000 + 3599, HOUR, HOUR).unwrap().is_none(), "no rotation before the period");
        let second = rotate(Some(&first), alg, 1000 + 3600, HOUR, HOUR).unwrap().unwrap();
        assert_eq!(second.signing.kid, first.next.kid, "the key published as next signs after rotation");
        assert_eq!(second.retired.len(), 1);
        assert_eq!(second.retired[0].public.kid, first.signing.kid);
        assert_eq!(second.retired[0].expires_at, 1000 + 3600 + 3600);
        let pruned = rotate(Some(&second), alg, 1000 + 7200, HOUR, HOUR).unwrap().unwrap();
        assert!(pruned.retired.iter().all(|r| r.public.kid != first.signing.kid), "expired retired key is dropped");
    }

    #[test]
    fn at_hash_is_the_left_half_of_the_algorithms_hash() {
        // OIDC Core §A.3 example: access token and at_hash for RS256.
        assert_eq!(
            left_half_hash(Algorithm::Rs256, "jHkWEdUXMU1BwAsC4vtUsZwnNvTIxEl0z9K3vx5KF0Y"),
            "77QmUPtjPfzWtF2AnpK9RQ"
        );
        assert_eq!(left_half_hash(Algorithm::EdDsa, "x").len(), 43, "32 bytes of SHA-512");
    }
}
