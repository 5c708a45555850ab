//! Cookies: sealing and opening their contents (an AEAD), splitting large values over numbered cookies,
//! and rendering `Set-Cookie`. What goes into a cookie (session or login flow) is decided in `flow`; where
//! the ID token lives is `cache`'s business.
//!
//! Sealed format, base64url without padding: `version (1) | key id (1) | nonce (12) | ciphertext | tag (16)`.
//! Version 2, which cookies are sealed with by default, is ChaCha20-Poly1305 (RFC 8439) under a key derived
//! from the secret (HMAC-SHA256 with a fixed label, so one secret never keys two ciphers); version 1,
//! AES-256-GCM under the secret itself, always opens, so sessions survive the upgrade, and `cookie.cipher:
//! aes-256-gcm` keeps sealing it while gateways that predate version 2 still serve (see [`Cipher`]). ChaCha20 is
//! arithmetic on 32-bit words: in wasm (no AES instructions, no SIMD) ring opens a 200-byte cookie in a
//! quarter of AES-GCM's time, and a 600-byte one in a fifth. The key id is the first byte of SHA-256 over
//! the secret, so rotating `cookie_secrets` (new key first, old keys kept) still opens old cookies. The
//! version, key id and cookie name are authenticated data, so a login-flow cookie cannot be replayed as a
//! session cookie.

use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ring::aead::{Aad, Algorithm, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, CHACHA20_POLY1305, NONCE_LEN};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::config::{CookieConfig, SameSite};
use crate::random::Random;

/// The format cookies are sealed with by default: ChaCha20-Poly1305.
const VERSION: u8 = 2;
/// The first format, always opened, sealed with `cookie.cipher: aes-256-gcm`: AES-256-GCM.
const VERSION_AES_GCM: u8 = 1;
const HEADER_LEN: usize = 2 + NONCE_LEN;
const TAG_LEN: usize = 16;
/// HMAC-SHA256 label deriving a secret's ChaCha20-Poly1305 key.
const CHACHA_KEY_LABEL: &[u8] = b"tokengate cookie key v2: ChaCha20-Poly1305";

/// Largest value put in one cookie. Browsers allow about 4096 bytes for name, value and attributes.
pub const MAX_COOKIE_VALUE: usize = 3800;

/// At most this many chunks are read back, bounding work on hostile `Cookie` headers.
pub const MAX_CHUNKS: usize = 8;

/// Why a cookie could not be sealed or opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    /// Not base64, too short, or an unknown format version.
    #[error("cookie is malformed")]
    Malformed,
    /// Sealed with a key no longer in `cookie_secrets`.
    #[error("cookie was sealed with an unknown key")]
    UnknownKey,
    /// Authentication failed: tampered, or sealed for another cookie name.
    #[error("cookie failed authentication")]
    Tampered,
    /// Decrypted but not the expected payload.
    #[error("cookie payload is invalid")]
    Payload,
    /// The payload's own expiry has passed.
    #[error("cookie has expired")]
    Expired,
    /// No randomness for the nonce.
    #[error("no randomness available")]
    Random,
}

/// What the session cookie carries. The ID token itself stays in the proxy's shared data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    /// Random session id: the key of the cached ID token.
    #[serde(rename = "i")]
    pub id: String,
    /// The refresh token, when the issuer granted one.
    #[serde(rename = "r", default, skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    /// Unix seconds after which the session is over, whatever the tokens say.
    #[serde(rename = "e")]
    pub expires_at: u64,
    /// Fingerprint of the login's ID-token identity (`sub`, `aud`, `azp`; see
    /// [`crate::token::identity_fingerprint`]): a refreshed ID token must match it (OpenID Connect Core
    /// §12.2). Absent in cookies from before it existed, which then compare with the cached token.
    #[serde(rename = "h", default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
    /// How many rotations the refresh token has been through: of a cookie's and the shared cache's refresh
    /// tokens, the higher generation is the newer (another gateway with its own shared data may have
    /// rotated it since this worker did).
    #[serde(rename = "g", default, skip_serializing_if = "is_zero")]
    pub generation: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// What a login-flow cookie carries between the redirect to the issuer and the callback.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoginFlow {
    /// The full `state` parameter sent to the issuer.
    #[serde(rename = "s")]
    pub state: String,
    /// The `nonce` the ID token must carry.
    #[serde(rename = "n")]
    pub nonce: String,
    /// The PKCE `code_verifier`.
    #[serde(rename = "v")]
    pub verifier: String,
    /// Where to send the browser after login.
    #[serde(rename = "u")]
    pub return_to: String,
    /// Unix seconds after which the flow is abandoned.
    #[serde(rename = "e")]
    pub expires_at: u64,
}

/// Payloads that carry their own expiry.
pub trait Expiring {
    /// Unix seconds.
    fn expires_at(&self) -> u64;
}

impl Expiring for Session {
    fn expires_at(&self) -> u64 {
        self.expires_at
    }
}

impl Expiring for LoginFlow {
    fn expires_at(&self) -> u64 {
        self.expires_at
    }
}

/// The AEAD new cookies are sealed with (`cookie.cipher`); cookies sealed with either always open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Cipher {
    /// Format 2, ChaCha20-Poly1305 (RFC 8439) under a key derived from the secret: the default.
    #[default]
    ChaCha20Poly1305,
    /// Format 1, AES-256-GCM under the secret: what filters before format 2 can open, for the length of a
    /// rolling upgrade (or a rollback) across gateways.
    Aes256Gcm,
}

/// One `cookie_secrets` entry: its id and its key for each format.
#[derive(Clone)]
struct CookieKey {
    id: u8,
    chacha: LessSafeKey,
    aes_gcm: LessSafeKey,
}

/// The cookie keys: the first seals, all open.
#[derive(Clone)]
pub struct Keyring {
    keys: Vec<CookieKey>,
    seal: Cipher,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keyring")
            .field("key_ids", &self.keys.iter().map(|k| k.id).collect::<Vec<_>>())
            .field("seal", &self.seal)
            .finish()
    }
}

// === impl Keyring ===

impl Keyring {
    /// Builds a keyring from 32-byte secrets that seals with [`Cipher::default`]; callers guarantee at least
    /// one secret (config validation does).
    pub fn new(secrets: &[[u8; 32]]) -> Keyring {
        let key = |alg: &'static Algorithm, bytes: &[u8]| UnboundKey::new(alg, bytes).ok().map(LessSafeKey::new);
        let keys = secrets
            .iter()
            .filter_map(|secret| {
                let derived =
                    ring::hmac::sign(&ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret), CHACHA_KEY_LABEL);
                Some(CookieKey {
                    id: ring::digest::digest(&ring::digest::SHA256, secret).as_ref()[0],
                    chacha: key(&CHACHA20_POLY1305, derived.as_ref())?,
                    aes_gcm: key(&AES_256_GCM, secret)?,
                })
            })
            .collect();
        Keyring { keys, seal: Cipher::default() }
    }

    /// The same keys, sealing new cookies with `cipher`.
    pub fn sealing_with(self, cipher: Cipher) -> Keyring {
        Keyring { seal: cipher, ..self }
    }

    /// Encrypts `payload` for the cookie called `name` with the keyring's [`Cipher`].
    pub fn seal<T: Serialize>(&self, name: &str, payload: &T, rng: &dyn Random) -> Result<String, SessionError> {
        let key = self.keys.first().ok_or(SessionError::UnknownKey)?;
        let id = &key.id;
        let (version, cipher) = match self.seal {
            Cipher::ChaCha20Poly1305 => (VERSION, &key.chacha),
            Cipher::Aes256Gcm => (VERSION_AES_GCM, &key.aes_gcm),
        };
        let mut nonce = [0u8; NONCE_LEN];
        rng.fill(&mut nonce).map_err(|_| SessionError::Random)?;
        let mut data = serde_json::to_vec(payload).map_err(|_| SessionError::Payload)?;
        cipher
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad(name, version, *id)),
                &mut data,
            )
            .map_err(|_| SessionError::Payload)?;
        let mut out = Vec::with_capacity(HEADER_LEN + data.len());
        out.push(version);
        out.push(*id);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&data);
        Ok(URL_SAFE_NO_PAD.encode(out))
    }

    /// Decrypts a cookie sealed for `name` and checks its expiry against `now` (Unix seconds).
    pub fn open<T: DeserializeOwned + Expiring>(&self, name: &str, value: &str, now: u64) -> Result<T, SessionError> {
        let raw = URL_SAFE_NO_PAD.decode(value.trim()).map_err(|_| SessionError::Malformed)?;
        let version = raw.first().copied().filter(|v| matches!(*v, VERSION | VERSION_AES_GCM));
        let (Some(version), true) = (version, raw.len() >= HEADER_LEN + TAG_LEN) else {
            return Err(SessionError::Malformed);
        };
        let id = raw[1];
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&raw[2..HEADER_LEN]);
        let mut candidates = self.keys.iter().filter(|k| k.id == id).peekable();
        if candidates.peek().is_none() {
            return Err(SessionError::UnknownKey);
        }
        for key in candidates {
            let cipher = if version == VERSION { &key.chacha } else { &key.aes_gcm };
            let mut data = raw[HEADER_LEN..].to_vec();
            if let Ok(plain) =
                cipher.open_in_place(Nonce::assume_unique_for_key(nonce), Aad::from(aad(name, version, id)), &mut data)
            {
                let payload: T = serde_json::from_slice(plain).map_err(|_| SessionError::Payload)?;
                if payload.expires_at() <= now {
                    return Err(SessionError::Expired);
                }
                return Ok(payload);
            }
        }
        Err(SessionError::Tampered)
    }
}

fn aad(name: &str, version: u8, key_id: u8) -> Vec<u8> {
    let mut aad = Vec::with_capacity(name.len() + 2);
    aad.push(version);
    aad.push(key_id);
    aad.extend_from_slice(name.as_bytes());
    aad
}

/// Splits a value over `name_0`, `name_1`… when it does not fit one cookie.
pub fn split(name: &str, value: &str) -> Vec<(String, String)> {
    if value.len() <= MAX_COOKIE_VALUE {
        return vec![(name.to_owned(), value.to_owned())];
    }
    // base64url is ASCII, so byte chunks are character chunks.
    value
        .as_bytes()
        .chunks(MAX_COOKIE_VALUE)
        .enumerate()
        .map(|(i, c)| (format!("{name}_{i}"), String::from_utf8_lossy(c).into_owned()))
        .collect()
}

/// Reads back a value written by [`split`]: `name` itself, or `name_0`, `name_1`… concatenated.
pub fn join<'a>(cookie: impl Fn(&str) -> Option<&'a str>, name: &str) -> Option<String> {
    if let Some(v) = cookie(name) {
        return Some(v.to_owned());
    }
    let mut out = String::new();
    for i in 0..MAX_CHUNKS {
        match cookie(&format!("{name}_{i}")) {
            Some(v) => out.push_str(v),
            None if i == 0 => return None,
            None => break,
        }
    }
    Some(out)
}

/// The names [`split`] may have used for `name` that are present in the request, for clearing.
pub fn chunk_names<'a>(cookie: impl Fn(&str) -> Option<&'a str>, name: &str) -> Vec<String> {
    std::iter::once(name.to_owned())
        .chain((0..MAX_CHUNKS).map(|i| format!("{name}_{i}")))
        .filter(|n| cookie(n).is_some())
        .collect()
}

/// Whether `name` is the session cookie `base` or one of its chunks (`base_0`, `base_1`, …).
pub fn is_own_cookie(base: &str, name: &str) -> bool {
    match name.strip_prefix(base) {
        Some("") => true,
        Some(rest) => rest.strip_prefix('_').is_some_and(|i| !i.is_empty() && i.bytes().all(|b| b.is_ascii_digit())),
        None => false,
    }
}

/// Renders a `Set-Cookie` value with the configured attributes.
pub fn set_cookie(cfg: &CookieConfig, name: &str, value: &str, max_age: Duration, same_site: SameSite) -> String {
    let mut out = format!("{name}={value}; Path={}", cfg.path);
    if let Some(domain) = &cfg.domain {
        out.push_str("; Domain=");
        out.push_str(domain);
    }
    out.push_str(&format!("; Max-Age={}; HttpOnly", max_age.as_secs()));
    if cfg.secure {
        out.push_str("; Secure");
    }
    out.push_str("; SameSite=");
    out.push_str(same_site.as_str());
    out
}

/// Renders a `Set-Cookie` value that deletes `name`.
pub fn clear_cookie(cfg: &CookieConfig, name: &str) -> String {
    set_cookie(cfg, name, "", Duration::ZERO, cfg.same_site)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::random::SystemRandom;

    fn session(rt_len: usize) -> Session {
        Session {
            id: "0123456789abcdef".into(),
            refresh_token: Some("r".repeat(rt_len)),
            expires_at: 2_000,
            identity: None,
            generation: 0,
        }
    }

    #[test]
    fn sealed_session_opens_to_the_same_value() {
        let ring = Keyring::new(&[[7; 32]]);
        let rng = SystemRandom::new();
        for len in [0, 1, 15, 16, 17, 100, 5000] {
            let s = session(len);
            let sealed = ring.seal("_tg", &s, &rng).unwrap();
            assert_eq!(ring.open::<Session>("_tg", &sealed, 1_000).unwrap(), s, "len {len}");
        }
    }

    /// Fills with 0, 1, 2… (a fixed nonce, for known answers).
    struct Counting;

    impl Random for Counting {
        fn fill(&self, buf: &mut [u8]) -> Result<(), crate::random::RandomError> {
            buf.iter_mut().enumerate().for_each(|(i, b)| *b = i as u8);
            Ok(())
        }
    }

    #[test]
    fn cookies_sealed_with_aes_gcm_before_the_upgrade_still_open() {
        // Sealed by the version-1 code (AES-256-GCM under the secret) with secret [7; 32] and nonce 0..12.
        const V1: &str = "AUsAAQIDBAUGBwgJCgtjo4BSJyvpeEWB0anUb1TDgF7V6n0EVR00vEGArKUZKO9NasDy7QvPxNXzmn6QlwnHTQjjWtZ4haTLgx6O64-pFO0";
        let ring = Keyring::new(&[[9; 32], [7; 32]]);
        let want = Session { refresh_token: Some("rt-1".into()), generation: 3, ..session(0) };
        assert_eq!(ring.open::<Session>("_tg", V1, 1_000).unwrap(), want);
        assert_eq!(ring.open::<Session>("_tg_1", V1, 1_000), Err(SessionError::Tampered), "the name is still bound");
        // The same bytes read as version 2 do not open: the version is authenticated, and so is the cipher.
        let mut as_v2 = URL_SAFE_NO_PAD.decode(V1).unwrap();
        as_v2[0] = VERSION;
        assert_eq!(ring.open::<Session>("_tg", &URL_SAFE_NO_PAD.encode(&as_v2), 1_000), Err(SessionError::Tampered));
    }

    #[test]
    fn a_keyring_sealing_aes_gcm_writes_format_1_for_gateways_that_predate_format_2() {
        let ring = Keyring::new(&[[7; 32]]).sealing_with(Cipher::Aes256Gcm);
        let sealed = ring.seal("_tg", &session(3), &Counting).unwrap();
        assert_eq!(URL_SAFE_NO_PAD.decode(&sealed).unwrap()[0], 1);
        // What the version-1 code opened: AES-256-GCM under the secret itself.
        let raw = URL_SAFE_NO_PAD.decode(&sealed).unwrap();
        let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &[7; 32]).unwrap());
        let mut data = raw[HEADER_LEN..].to_vec();
        let nonce: [u8; NONCE_LEN] = raw[2..HEADER_LEN].try_into().unwrap();
        let aad = [&[1, raw[1]][..], b"_tg"].concat();
        let plain = key.open_in_place(Nonce::assume_unique_for_key(nonce), Aad::from(aad), &mut data).unwrap();
        assert_eq!(serde_json::from_slice::<Session>(plain).unwrap(), session(3));
        // And a default keyring opens both formats.
        let default = Keyring::new(&[[7; 32]]);
        assert_eq!(default.open::<Session>("_tg", &sealed, 1_000).unwrap(), session(3));
    }

    #[test]
    fn new_cookies_are_chacha20_poly1305_under_a_derived_key() {
        let ring = Keyring::new(&[[7; 32]]);
        let sealed = URL_SAFE_NO_PAD.decode(ring.seal("_tg", &session(4), &Counting).unwrap()).unwrap();
        assert_eq!(sealed[0], 2);
        // Independently: RFC 8439 with key = HMAC-SHA256(secret, label), nonce and AAD from the header.
        let derived = ring::hmac::sign(&ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &[7; 32]), CHACHA_KEY_LABEL);
        let key = LessSafeKey::new(UnboundKey::new(&CHACHA20_POLY1305, derived.as_ref()).unwrap());
        let nonce: [u8; NONCE_LEN] = sealed[2..HEADER_LEN].try_into().unwrap();
        assert_eq!(nonce, core::array::from_fn(|i| i as u8));
        let mut data = sealed[HEADER_LEN..].to_vec();
        let aad = [&[2, sealed[1]][..], b"_tg"].concat();
        let plain = key.open_in_place(Nonce::assume_unique_for_key(nonce), Aad::from(aad), &mut data).unwrap();
        assert_eq!(serde_json::from_slice::<Session>(plain).unwrap(), session(4));
    }

    #[test]
    fn flipping_any_byte_makes_open_fail() {
        let ring = Keyring::new(&[[7; 32]]);
        let sealed = ring.seal("_tg", &session(10), &SystemRandom::new()).unwrap();
        let raw = URL_SAFE_NO_PAD.decode(&sealed).unwrap();
        for i in 0..raw.len() {
            for bit in [0x01u8, 0x80] {
                let mut t = raw.clone();
                t[i] ^= bit;
                let err = ring.open::<Session>("_tg", &URL_SAFE_NO_PAD.encode(&t), 1_000).unwrap_err();
                assert!(
                    matches!(err, SessionError::Tampered | SessionError::Malformed | SessionError::UnknownKey),
                    "byte {i} bit {bit:#x}: {err:?}"
                );
            }
        }
        assert_eq!(ring.open::<Session>("_tg", &sealed[..20], 1_000), Err(SessionError::Malformed));
        assert_eq!(ring.open::<Session>("_tg", "!!!", 1_000), Err(SessionError::Malformed));
    }

    #[test]
    fn a_cookie_sealed_for_one_name_does_not_open_under_another() {
        let ring = Keyring::new(&[[7; 32]]);
        let sealed = ring.seal("_tg_csrf_1", &session(1), &SystemRandom::new()).unwrap();
        assert_eq!(ring.open::<Session>("_tg", &sealed, 1_000), Err(SessionError::Tampered));
    }

    #[test]
    fn rotated_keys_still_open_old_cookies_and_removed_keys_do_not() {
        let rng = SystemRandom::new();
        let old = Keyring::new(&[[1; 32]]);
        let sealed = old.seal("_tg", &session(5), &rng).unwrap();
        let rotated = Keyring::new(&[[2; 32], [1; 32]]);
        assert_eq!(rotated.open::<Session>("_tg", &sealed, 1_000).unwrap(), session(5));
        let fresh = rotated.seal("_tg", &session(5), &rng).unwrap();
        assert_eq!(
            URL_SAFE_NO_PAD.decode(&fresh).unwrap()[1],
            ring::digest::digest(&ring::digest::SHA256, &[2; 32]).as_ref()[0],
            "new cookies use the first key"
        );
        let dropped = Keyring::new(&[[2; 32]]);
        assert_eq!(dropped.open::<Session>("_tg", &sealed, 1_000), Err(SessionError::UnknownKey));
    }

    #[test]
    fn expired_payload_is_rejected() {
        let ring = Keyring::new(&[[7; 32]]);
        let sealed = ring.seal("_tg", &session(1), &SystemRandom::new()).unwrap();
        assert_eq!(ring.open::<Session>("_tg", &sealed, 2_000), Err(SessionError::Expired));
    }

    #[test]
    fn large_values_split_into_numbered_cookies_and_join_back() {
        let ring = Keyring::new(&[[7; 32]]);
        let sealed = ring.seal("_tg", &session(9000), &SystemRandom::new()).unwrap();
        let parts = split("_tg", &sealed);
        assert_eq!(parts.len(), sealed.len().div_ceil(MAX_COOKIE_VALUE));
        assert_eq!(parts[0].0, "_tg_0");
        assert_eq!(parts[2].0, "_tg_2");
        assert!(parts.iter().all(|(_, v)| v.len() <= MAX_COOKIE_VALUE));
        let lookup = |n: &str| parts.iter().find(|(k, _)| k == n).map(|(_, v)| v.as_str());
        let joined = join(lookup, "_tg").unwrap();
        assert_eq!(joined, sealed);
        assert_eq!(ring.open::<Session>("_tg", &joined, 1_000).unwrap(), session(9000));
        let names: Vec<String> = (0..parts.len()).map(|i| format!("_tg_{i}")).collect();
        assert_eq!(chunk_names(lookup, "_tg"), names);
    }

    #[test]
    fn small_values_stay_in_one_cookie() {
        let parts = split("_tg", "abc");
        assert_eq!(parts, vec![("_tg".to_string(), "abc".to_string())]);
        assert_eq!(join(|_| None, "_tg"), None);
    }

    #[test]
    fn own_cookies_are_the_base_name_and_its_numbered_chunks() {
        for (name, want) in [
            ("_tg", true),
            ("_tg_0", true),
            ("_tg_12", true),
            ("_tg_", false),
            ("_tg_x", false),
            ("_tg_csrf_0123abcd", false),
            ("_tgx", false),
            ("other", false),
        ] {
            assert_eq!(is_own_cookie("_tg", name), want, "{name}");
        }
    }

    #[test]
    fn set_cookie_renders_configured_attributes() {
        let cfg = CookieConfig {
            name: "_tg".into(),
            domain: Some("example.com".into()),
            path: "/".into(),
            secure: true,
            same_site: SameSite::Strict,
            lifetime: Duration::from_secs(60),
            pass_to_upstream: false,
            cipher: Cipher::default(),
        };
        assert_eq!(
            set_cookie(&cfg, "_tg", "v", Duration::from_secs(60), SameSite::Lax),
            "_tg=v; Path=/; Domain=example.com; Max-Age=60; HttpOnly; Secure; SameSite=Lax"
        );
        assert_eq!(
            clear_cookie(&cfg, "_tg"),
            "_tg=; Path=/; Domain=example.com; Max-Age=0; HttpOnly; Secure; SameSite=Strict"
        );
    }
}
