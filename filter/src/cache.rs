//! What the filter keeps in the proxy's shared data, so every worker sees one copy: ID tokens by session
//! id, verified bearer tokens by SHA-256, the provider snapshot and the fetch lease. Caches are
//! direct-mapped: a fixed number of slots, each entry naming its full key, so memory stays bounded
//! without enumeration or TTLs (which the ABI lacks). A lost entry costs a refresh or a re-verification,
//! never a wrong answer. The host supplies the raw [`Store`].

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

fn sha256(data: &[u8]) -> Vec<u8> {
    ring::digest::digest(&ring::digest::SHA256, data).as_ref().to_vec()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn slot(id: &str, slots: u32) -> u32 {
    let d = sha256(id.as_bytes());
    u32::from_be_bytes([d[0], d[1], d[2], d[3]]) % slots
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

    fn bearer_key(&self, hash: &str) -> String {
        format!("tokengate:{}:b:{}", self.ns, slot(hash, BEARER_SLOTS))
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
}

impl MemoryStore {
    /// How many non-deleted entries there are.
    pub fn len(&self) -> usize {
        self.map.borrow().values().filter(|v| !v.is_empty()).count()
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
        let e = CachedIdToken { sid: "s1".into(), id_token: "t".into(), expires_at: 10 };
        cache.put_session(&e);
        assert_eq!(cache.get_session("s1"), Some(e));
        assert_eq!(cache.get_session("s2"), None);
        cache.delete_session("s1");
        assert_eq!(cache.get_session("s1"), None);
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
    fn namespaces_separate_configurations() {
        assert_ne!(namespace("https://a", "x"), namespace("https://a", "y"));
        assert_eq!(namespace("https://a", "x").len(), 12);
    }
}
