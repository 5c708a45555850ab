//! What the filter keeps in the proxy's shared data, so every worker sees one copy: ID tokens by session
//! id, verified bearer tokens by SHA-256, the provider snapshot and the fetch lease. Caches are
//! direct-mapped: a fixed number of slots, each entry naming its full key, so memory stays bounded
//! without enumeration or TTLs (which the ABI lacks). A lost entry costs a refresh or a re-verification,
//! never a wrong answer. The host supplies the raw [`Store`].

use std::cell::RefCell;
use std::rc::Rc;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Slots for session ID tokens.
pub const SESSION_SLOTS: u32 = 4096;
/// Slots for verified bearer tokens.
pub const BEARER_SLOTS: u32 = 1024;

/// Byte storage shared by every worker (proxy-wasm shared data).
pub trait Store {
    /// The value under `key`, if any.
    fn get(&self, key: &str) -> Option<Vec<u8>>;
    /// Stores `value` under `key` (last writer wins; an empty value means deleted).
    fn set(&self, key: &str, value: &[u8]);
    /// Stores `value` under `key` only if `replaceable` accepts the current value (`None` when absent or
    /// deleted), atomically across workers (shared data's compare-and-swap). Returns whether it stored.
    fn set_if(&self, key: &str, replaceable: &dyn Fn(Option<&[u8]>) -> bool, value: &[u8]) -> bool;
}

/// A session's current ID token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CachedIdToken {
    /// Session id, so a slot collision is detected.
    pub sid: String,
    /// The verified ID token.
    pub id_token: String,
    /// Its `exp`.
    pub expires_at: u64,
    /// The newest refresh token the gateway holds for the session. The browser's cookie may lag behind
    /// it (a response lost, or served by another worker while a refresh ran); with strict rotation only
    /// this one still works, so refreshes use it and responses bring the cookie up to date.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    /// The rotation generation of `refresh_token` (see [`crate::session::Session::generation`]).
    #[serde(default)]
    pub generation: u32,
}

/// A verified bearer token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CachedBearer {
    /// Hex SHA-256 of the token.
    pub hash: String,
    /// Its `exp`.
    pub expires_at: u64,
    /// Its claims.
    pub claims: Map<String, Value>,
}

/// Typed access to one filter configuration's entries in a [`Store`].
pub struct Cache<'a> {
    store: &'a dyn Store,
    ns: &'a str,
}

/// A short namespace for one issuer and client, so several filter configurations in one VM do not
/// share entries.
pub fn namespace(issuer: &str, client_id: &str) -> String {
    hex(&sha256(format!("{issuer}\n{client_id}").as_bytes())[..6])
}

/// Hex SHA-256 of a token: the bearer cache key, and never the token itself.
pub fn token_hash(token: &str) -> String {
    hex(&sha256(token.as_bytes()))
}

// RustCrypto's SHA-256 rather than ring's here: compiled to wasm it hashes a token in about half the time
// (ring's portable C fallback is what wasm gets), and this runs on every bearer request.
fn sha256(data: &[u8]) -> [u8; 32] {
    use sha2::Digest as _;
    sha2::Sha256::digest(data).into()
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(2 * bytes.len());
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    out
}

fn slot(id: &str, slots: u32) -> u32 {
    let d = sha256(id.as_bytes());
    u32::from_be_bytes([d[0], d[1], d[2], d[3]]) % slots
}

/// A token hash is already uniform: its first 32 bits pick the slot.
fn hash_slot(hash: &str, slots: u32) -> u32 {
    match hash.get(..8).and_then(|h| u32::from_str_radix(h, 16).ok()) {
        Some(n) => n % slots,
        None => slot(hash, slots),
    }
}

// === impl Cache ===

impl<'a> Cache<'a> {
    /// Entries under namespace `ns`.
    pub fn new(store: &'a dyn Store, ns: &'a str) -> Cache<'a> {
        Cache { store, ns }
    }

    /// Shared-data key of the provider snapshot.
    pub fn provider_key(ns: &str) -> String {
        format!("tokengate:{ns}:provider")
    }

    /// Shared-data key of the fetch lease.
    pub fn lease_key(ns: &str) -> String {
        format!("tokengate:{ns}:lease")
    }

    fn session_key(&self, sid: &str) -> String {
        format!("tokengate:{}:s:{}", self.ns, slot(sid, SESSION_SLOTS))
    }

    fn refresh_lease_key(&self, sid: &str) -> String {
        format!("tokengate:{}:r:{}", self.ns, slot(sid, SESSION_SLOTS))
    }

    /// Takes the right to refresh session `sid` until `until` (unix seconds), unless another request holds
    /// it and it has not run out. One refresh per session at a time, across workers: with strict rotation a
    /// second refresh with the same token would be taken for a replay and end the session. A slot shared
    /// with another session is taken over (that costs at most a duplicate refresh, as before).
    pub fn try_refresh_lease(&self, sid: &str, now: u64, until: u64) -> bool {
        let free = |current: Option<&[u8]>| match current.map(parse_lease) {
            None | Some(None) => true,
            Some(Some((holder, held_until))) => holder != sid || held_until <= now,
        };
        self.store.set_if(&self.refresh_lease_key(sid), &free, format!("{sid} {until}").as_bytes())
    }

    /// Gives the refresh lease of `sid` back, if this session still holds it.
    pub fn release_refresh_lease(&self, sid: &str) {
        let mine = |current: Option<&[u8]>| current.and_then(parse_lease).is_some_and(|(holder, _)| holder == sid);
        self.store.set_if(&self.refresh_lease_key(sid), &mine, b"");
    }

    fn bearer_key(&self, hash: &str) -> String {
        format!("tokengate:{}:b:{}", self.ns, hash_slot(hash, BEARER_SLOTS))
    }

    /// The session's ID token, if this slot still holds it.
    pub fn get_session(&self, sid: &str) -> Option<CachedIdToken> {
        let raw = self.store.get(&self.session_key(sid))?;
        let entry: CachedIdToken = serde_json::from_slice(&raw).ok()?;
        (entry.sid == sid).then_some(entry)
    }

    /// Stores a session's ID token, evicting whatever shared the slot.
    pub fn put_session(&self, entry: &CachedIdToken) {
        if let Ok(raw) = serde_json::to_vec(entry) {
            self.store.set(&self.session_key(&entry.sid), &raw);
        }
    }

    /// Forgets a session (only if the slot holds it).
    pub fn delete_session(&self, sid: &str) {
        if self.get_session(sid).is_some() {
            self.store.set(&self.session_key(sid), b"");
        }
    }

    /// A verified bearer token that has not expired at `now`.
    pub fn get_bearer(&self, hash: &str, now: u64) -> Option<CachedBearer> {
        let raw = self.store.get(&self.bearer_key(hash))?;
        let entry: CachedBearer = serde_json::from_slice(&raw).ok()?;
        (entry.hash == hash && entry.expires_at > now).then_some(entry)
    }

    /// Remembers a verified bearer token until its `exp`.
    pub fn put_bearer(&self, entry: &CachedBearer) {
        if let Ok(raw) = serde_json::to_vec(entry) {
            self.store.set(&self.bearer_key(&entry.hash), &raw);
        }
    }
}

/// Parsed claims of the ID tokens this worker used last, so a session's token is not base64-decoded and
/// parsed as JSON on every request. Worker-local (not shared data): it only saves work, and the ID token
/// itself is still read from shared data each time, so a refresh or sign-out on another worker is seen
/// at once. Direct-mapped by the token's last characters (its signature) and checked against the whole
/// token.
pub struct ClaimsMemo {
    slots: RefCell<Vec<Option<Memoized>>>,
}

/// A token and its parsed claims.
type Memoized = (String, Rc<Map<String, Value>>);

/// Entries in a [`ClaimsMemo`].
pub const CLAIMS_MEMO_SLOTS: usize = 128;

impl Default for ClaimsMemo {
    fn default() -> ClaimsMemo {
        ClaimsMemo { slots: RefCell::new(vec![None; CLAIMS_MEMO_SLOTS]) }
    }
}

impl std::fmt::Debug for ClaimsMemo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let used = self.slots.borrow().iter().filter(|s| s.is_some()).count();
        f.debug_struct("ClaimsMemo").field("used", &used).finish()
    }
}

// === impl ClaimsMemo ===

impl ClaimsMemo {
    /// The claims of a token that was verified before it was stored (see
    /// [`crate::token::claims_of_trusted`]).
    pub fn claims_of_trusted(&self, id_token: &str) -> Option<Rc<Map<String, Value>>> {
        let tail = id_token.as_bytes().iter().rev().take(4).fold(0usize, |h, b| h.wrapping_mul(64) + usize::from(*b));
        let i = tail % CLAIMS_MEMO_SLOTS;
        if let Some((token, claims)) = &self.slots.borrow()[i] {
            if token == id_token {
                return Some(claims.clone());
            }
        }
        let claims = Rc::new(crate::token::claims_of_trusted(id_token)?);
        self.slots.borrow_mut()[i] = Some((id_token.to_owned(), claims.clone()));
        Some(claims)
    }
}

/// `"<sid> <until>"`.
fn parse_lease(raw: &[u8]) -> Option<(&str, u64)> {
    let (sid, until) = std::str::from_utf8(raw).ok()?.split_once(' ')?;
    Some((sid, until.parse().ok()?))
}

/// An in-memory [`Store`] for tests and native tools.
#[derive(Debug, Default)]
pub struct MemoryStore {
    map: std::cell::RefCell<std::collections::HashMap<String, Vec<u8>>>,
}

impl Store for MemoryStore {
    fn get(&self, key: &str) -> Option<Vec<u8>> {
        self.map.borrow().get(key).filter(|v| !v.is_empty()).cloned()
    }

    fn set(&self, key: &str, value: &[u8]) {
        self.map.borrow_mut().insert(key.to_owned(), value.to_vec());
    }

    fn set_if(&self, key: &str, replaceable: &dyn Fn(Option<&[u8]>) -> bool, value: &[u8]) -> bool {
        let current = self.get(key);
        if !replaceable(current.as_deref()) {
            return false;
        }
        self.set(key, value);
        true
    }
}

impl MemoryStore {
    /// How many non-deleted entries there are.
    pub fn len(&self) -> usize {
        self.map.borrow().values().filter(|v| !v.is_empty()).count()
    }

    /// Every key ever written (deleted ones included).
    pub fn keys(&self) -> Vec<String> {
        self.map.borrow().keys().cloned().collect()
    }

    /// Whether the store holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_round_trip_and_delete() {
        let store = MemoryStore::default();
        let cache = Cache::new(&store, "ns");
        let e = CachedIdToken {
            sid: "s1".into(),
            id_token: "t".into(),
            expires_at: 10,
            refresh_token: None,
            generation: 0,
        };
        cache.put_session(&e);
        assert_eq!(cache.get_session("s1"), Some(e));
        assert_eq!(cache.get_session("s2"), None);
        cache.delete_session("s1");
        assert_eq!(cache.get_session("s1"), None);
    }

    #[test]
    fn one_refresh_lease_per_session_until_it_is_released_or_runs_out() {
        let store = MemoryStore::default();
        let cache = Cache::new(&store, "ns");
        assert!(cache.try_refresh_lease("s1", 100, 106));
        assert!(!cache.try_refresh_lease("s1", 101, 107), "held");
        assert!(cache.try_refresh_lease("s2", 101, 107), "another session is not held up");
        cache.release_refresh_lease("s1");
        assert!(cache.try_refresh_lease("s1", 102, 108), "released");
        assert!(cache.try_refresh_lease("s1", 108, 114), "ran out: a refresh that never answered");
        cache.release_refresh_lease("other");
        assert!(!cache.try_refresh_lease("s1", 109, 115), "only the holder's session releases it");
    }

    #[test]
    fn bearer_entries_expire_and_cache_stays_bounded() {
        let store = MemoryStore::default();
        let cache = Cache::new(&store, "ns");
        for i in 0..5_000 {
            cache.put_bearer(&CachedBearer { hash: token_hash(&i.to_string()), expires_at: 100, claims: Map::new() });
        }
        assert!(store.len() <= BEARER_SLOTS as usize, "bounded by the slot count");
        let h = token_hash("4999");
        assert!(cache.get_bearer(&h, 99).is_some(), "the latest entry is found");
        assert!(cache.get_bearer(&h, 100).is_none(), "not after exp");
    }

    #[test]
    fn claims_memo_answers_for_the_exact_token_only() {
        let claims = |sub: &str, sig: &str| {
            use base64::Engine as _;
            let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!(r#"{{"sub":"{sub}"}}"#));
            format!("e30.{payload}.{sig}")
        };
        let memo = ClaimsMemo::default();
        let a = claims("a", "same");
        let b = claims("b", "same"); // same slot, different token
        assert_eq!(memo.claims_of_trusted(&a).unwrap()["sub"], "a");
        assert_eq!(memo.claims_of_trusted(&b).unwrap()["sub"], "b", "a slot hit is checked against the token");
        assert_eq!(memo.claims_of_trusted(&b).unwrap()["sub"], "b");
        assert_eq!(memo.claims_of_trusted(&a).unwrap()["sub"], "a");
        assert!(memo.claims_of_trusted("not.a-token.x").is_none());
    }

    #[test]
    fn token_hash_is_hex_sha256() {
        // FIPS 180-2 example "abc".
        assert_eq!(token_hash("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        assert_eq!(hash_slot(&token_hash("abc"), 1024), 0xba7816bf % 1024);
    }

    #[test]
    fn namespaces_separate_configurations() {
        assert_ne!(namespace("https://a", "x"), namespace("https://a", "y"));
        assert_eq!(namespace("https://a", "x").len(), 12);
    }
}
