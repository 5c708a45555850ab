//! What the filter keeps in the proxy's shared data, so every worker sees one copy: ID tokens by session
//! id, verified bearer tokens by SHA-256, the provider snapshot and the leases. The host supplies the raw
//! [`Store`].
//!
//! # Why set-associative
//!
//! Envoy's shared data has no TTL, no enumeration and no delete (a key only ever gets an empty value), so a
//! cache keyed by session id would grow for ever. The first design was direct-mapped (one entry per slot):
//! bounded, but two active sessions in one slot evicted each other on every request, and by the birthday
//! bound that hit 9% of users at 400 sessions. Here each cache is `sets × WAYS`: an id hashes to one set,
//! whose *index* key (a few hundred bytes: a 64-bit tag, an expiry and a last-use time per way) says which
//! of the set's `WAYS` entry keys holds it. A lookup reads the index and one entry; an insert takes the
//! way already holding the id, else a free or expired one, else the least recently used, and claims it
//! with a compare-and-swap on the index, so workers never overwrite each other's choice. Last-use times are
//! written at most once a minute per entry, so hits stay read-only. With capacity at least twice the
//! active count, the chance that more than `WAYS` active ids share a set is below 1% (Poisson, mean
//! `WAYS / 2`); memory is bounded by the configured capacity times the entry size.
//!
//! Correctness does not rest on any of this: every entry names its full id and is checked on read, so a
//! lost race or an eviction costs one refresh or one signature check, never a wrong answer.
//!
//! # Floods
//!
//! Only what the filter verified is ever stored: a session after a successful login or refresh (a forged
//! cookie fails its AEAD tag and stores nothing), a bearer token after its signature, issuer, audience and
//! expiry checked out. Garbage therefore costs CPU, never memory or evictions. Evicting real users takes
//! validly signed tokens, and then only the least recently used entries of one set go first: a user active
//! within the last minute outlives any number of one-off tokens unless more than `WAYS` are inserted into
//! their set between two of their requests.

use std::cell::RefCell;
use std::rc::Rc;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::revocation::Revocations;

/// Entries per set.
pub const WAYS: u32 = 16;
/// Default capacity of the session cache (entries): room for about 32,000 active sessions at 99% hits.
pub const DEFAULT_SESSIONS: u32 = 65_536;
/// Default capacity of the bearer-token cache (entries).
pub const DEFAULT_BEARER_TOKENS: u32 = 16_384;
/// Capacity of the table of logout-token `jti`s seen (entries), for replay detection.
pub const LOGOUT_JTIS: u32 = 4_096;
/// Slots of the per-session refresh leases (a collision only makes two sessions share a lease briefly).
pub const LEASE_SLOTS: u32 = 4_096;
/// A hit rewrites an entry's last-use time at most this often (seconds).
pub const TOUCH_INTERVAL: u64 = 60;
/// Bytes of shared data per cached session, for sizing `cache.sessions`: a typical Dex ID token (about
/// 900 bytes), the refresh token and the JSON around them, plus its share of the set index.
pub const SESSION_ENTRY_BYTES: u64 = 1_400;
/// Bytes of shared data per cached bearer token: the hash, the claims and its share of the set index.
pub const BEARER_ENTRY_BYTES: u64 = 700;

/// Byte storage shared by every worker (proxy-wasm shared data).
pub trait Store {
    /// The value under `key`, if any.
    fn get(&self, key: &str) -> Option<Vec<u8>>;
    /// Stores `value` under `key` (last writer wins; an empty value means deleted).
    fn set(&self, key: &str, value: &[u8]);
    /// Stores `value` under `key` only if `replaceable` accepts the current value (`None` when absent or
    /// deleted), atomically across workers (shared data's compare-and-swap). Returns whether it stored.
    fn set_if(&self, key: &str, replaceable: &dyn Fn(Option<&[u8]>) -> bool, value: &[u8]) -> bool;
    /// Creates `key` with an empty value unless it exists (with any value).
    fn create_if_absent(&self, key: &str);
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
    /// The user signed out: a tombstone that no refresh may overwrite and no cookie may revive.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub signed_out: bool,
}

impl CachedIdToken {
    /// The tombstone of a signed-out session.
    pub fn signed_out(sid: &str) -> CachedIdToken {
        CachedIdToken {
            sid: sid.to_owned(),
            id_token: String::new(),
            expires_at: 0,
            refresh_token: None,
            generation: u32::MAX,
            signed_out: true,
        }
    }
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
    session_sets: u32,
    bearer_sets: u32,
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

/// A 64-bit hash of an id (never 0: 0 marks a free way). A bearer key is already a SHA-256 in hex, so its
/// first 16 digits serve; anything else is hashed.
fn id_hash(id: &str, hashed: bool) -> u64 {
    let h = match id.get(..16).filter(|_| hashed).and_then(|h| u64::from_str_radix(h, 16).ok()) {
        Some(h) => h,
        None => {
            let d = sha256(id.as_bytes());
            u64::from_be_bytes([d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]])
        }
    };
    h.max(1)
}

/// One way of a set's index.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Way {
    /// The id's hash; 0 when free.
    tag: u64,
    /// When the entry stops being useful (unix seconds).
    expires: u64,
    /// When it was last used, to within [`TOUCH_INTERVAL`].
    used: u64,
}

/// A set's index: `WAYS` ways as `tag expires used` (hex, decimal, decimal), `;`-separated.
fn parse_index(raw: Option<&[u8]>) -> Vec<Way> {
    let mut ways = vec![Way::default(); WAYS as usize];
    let Some(text) = raw.and_then(|r| std::str::from_utf8(r).ok()) else {
        return ways;
    };
    for (w, part) in ways.iter_mut().zip(text.split(';')) {
        let mut f = part.split(' ');
        let (Some(t), Some(e), Some(u)) = (f.next(), f.next(), f.next()) else { continue };
        if let (Ok(tag), Ok(expires), Ok(used)) = (u64::from_str_radix(t, 16), e.parse(), u.parse()) {
            *w = Way { tag, expires, used };
        }
    }
    ways
}

fn render_index(ways: &[Way]) -> Vec<u8> {
    ways.iter().map(|w| format!("{:x} {} {}", w.tag, w.expires, w.used)).collect::<Vec<_>>().join(";").into_bytes()
}

/// One set-associative table (sessions or bearer tokens) in the store.
struct Table<'a> {
    store: &'a dyn Store,
    ns: &'a str,
    /// `s` for sessions, `b` for bearer tokens.
    kind: char,
    sets: u32,
    /// Whether ids are already uniform hashes (bearer keys).
    hashed: bool,
}

impl Table<'_> {
    fn locate(&self, id: &str) -> (u32, u64) {
        let h = id_hash(id, self.hashed);
        ((h % u64::from(self.sets.max(1))) as u32, h)
    }

    fn index_key(&self, set: u32) -> String {
        format!("tokengate:{}:{}i:{set}", self.ns, self.kind)
    }

    fn entry_key(&self, set: u32, way: usize) -> String {
        format!("tokengate:{}:{}:{set}:{way}", self.ns, self.kind)
    }

    /// The raw entry the index names for `id`, if any; refreshes its last-use time now and then.
    fn get(&self, id: &str, now: u64) -> Option<Vec<u8>> {
        let (set, tag) = self.locate(id);
        let raw_index = self.store.get(&self.index_key(set));
        let mut ways = parse_index(raw_index.as_deref());
        let way = ways.iter().position(|w| w.tag == tag)?;
        let entry = self.store.get(&self.entry_key(set, way))?;
        if let Some(w) = ways.get_mut(way).filter(|w| now >= w.used.saturating_add(TOUCH_INTERVAL)) {
            w.used = now;
            // Best effort: a lost race only leaves an older last-use time.
            let current = raw_index.as_deref();
            self.store.set_if(&self.index_key(set), &|c| c == current, &render_index(&ways));
        }
        Some(entry)
    }

    /// Stores `entry` for `id` until `expires`: in the way holding `id`, else a free or expired way, else the
    /// least recently used one. Gives up after a few lost races (the next request stores it again).
    fn put(&self, id: &str, expires: u64, now: u64, entry: &[u8]) {
        let (set, tag) = self.locate(id);
        for _ in 0..4 {
            let raw_index = self.store.get(&self.index_key(set));
            let mut ways = parse_index(raw_index.as_deref());
            let chosen = ways
                .iter()
                .position(|w| w.tag == tag)
                .or_else(|| ways.iter().position(|w| w.tag == 0 || w.expires <= now))
                .or_else(|| ways.iter().enumerate().min_by_key(|(_, w)| w.used).map(|(i, _)| i));
            let (Some(way), Some(slot)) = (chosen, chosen.and_then(|i| ways.get_mut(i))) else { return };
            *slot = Way { tag, expires, used: now };
            let current = raw_index.as_deref();
            if self.store.set_if(&self.index_key(set), &|c| c == current, &render_index(&ways)) {
                self.store.set(&self.entry_key(set, way), entry);
                return;
            }
        }
    }

    /// Frees the way holding `id`, if any.
    fn delete(&self, id: &str) {
        let (set, tag) = self.locate(id);
        for _ in 0..4 {
            let raw_index = self.store.get(&self.index_key(set));
            let mut ways = parse_index(raw_index.as_deref());
            let Some(way) = ways.iter().position(|w| w.tag == tag) else { return };
            if let Some(w) = ways.get_mut(way) {
                *w = Way::default();
            }
            // The entry itself stays: it names its id, so a freed way's old entry is never read as another's,
            // and blanking it could wipe what a concurrent insert just wrote there.
            let current = raw_index.as_deref();
            if self.store.set_if(&self.index_key(set), &|c| c == current, &render_index(&ways)) {
                return;
            }
        }
    }
}

// === impl Cache ===

impl<'a> Cache<'a> {
    /// Entries under namespace `ns`, with the default capacities.
    pub fn new(store: &'a dyn Store, ns: &'a str) -> Cache<'a> {
        Cache::with_capacity(store, ns, DEFAULT_SESSIONS, DEFAULT_BEARER_TOKENS)
    }

    /// Entries under namespace `ns`, with room for `sessions` session entries and `bearer_tokens` verified
    /// bearer tokens (each rounded up to whole sets of [`WAYS`]).
    pub fn with_capacity(store: &'a dyn Store, ns: &'a str, sessions: u32, bearer_tokens: u32) -> Cache<'a> {
        Cache {
            store,
            ns,
            session_sets: sessions.div_ceil(WAYS).max(1),
            bearer_sets: bearer_tokens.div_ceil(WAYS).max(1),
        }
    }

    fn sessions(&self) -> Table<'_> {
        Table { store: self.store, ns: self.ns, kind: 's', sets: self.session_sets, hashed: false }
    }

    fn bearers(&self) -> Table<'_> {
        Table { store: self.store, ns: self.ns, kind: 'b', sets: self.bearer_sets, hashed: true }
    }

    fn logout_jtis(&self) -> Table<'_> {
        Table { store: self.store, ns: self.ns, kind: 'j', sets: LOGOUT_JTIS / WAYS, hashed: false }
    }

    fn revocations_key(&self) -> String {
        format!("tokengate:{}:revocations", self.ns)
    }

    fn revocations_stamp_key(&self) -> String {
        format!("tokengate:{}:revocations_stamp", self.ns)
    }

    fn feed_poll_key(&self) -> String {
        format!("tokengate:{}:feed", self.ns)
    }

    /// Records the `jti` of a logout token until `until` (unix seconds); false if it was already recorded
    /// (a replay). Two workers handed the same token at the same instant may both see it as new, which
    /// costs a second, identical revocation.
    pub fn remember_logout_jti(&self, jti: &str, until: u64, now: u64) -> bool {
        let table = self.logout_jtis();
        if table.get(jti, now).is_some_and(|seen| seen == jti.as_bytes()) {
            return false;
        }
        table.put(jti, until, now, jti.as_bytes());
        true
    }

    /// Forgets a recorded `jti` (its logout could not be applied, so the issuer's retry must be accepted).
    pub fn forget_logout_jti(&self, jti: &str) {
        self.logout_jtis().delete(jti);
    }

    /// The revocation set in shared data (empty when there is none, or it does not parse).
    pub fn revocations(&self) -> Revocations {
        self.store.get(&self.revocations_key()).and_then(|b| Revocations::from_bytes(&b)).unwrap_or_default()
    }

    /// The stamp of the revocation set in shared data: it changes with every write, so a worker re-reads the
    /// set only when it differs from its copy's.
    pub fn revocations_stamp(&self) -> u64 {
        self.store.get(&self.revocations_stamp_key()).as_deref().and_then(decimal).unwrap_or(0)
    }

    /// Replaces the revocation set with `change(current)`, atomically across workers (compare-and-swap,
    /// retried when another worker wrote first), stamps it (the current stamp plus one) and publishes the
    /// stamp. Returns the set written, or `None` after too many lost races (the caller's next poll or the
    /// issuer's retry tries again).
    pub fn update_revocations(&self, change: &dyn Fn(&Revocations) -> Revocations) -> Option<Revocations> {
        let key = self.revocations_key();
        for _ in 0..8 {
            let raw = self.store.get(&key);
            let current = raw.as_deref().and_then(Revocations::from_bytes).unwrap_or_default();
            let mut next = change(&current);
            next.stamp = current.stamp.wrapping_add(1);
            let expected = raw.as_deref();
            if self.store.set_if(&key, &|c| c == expected, &next.to_bytes()) {
                self.store.set(&self.revocations_stamp_key(), next.stamp.to_string().as_bytes());
                return Some(next);
            }
        }
        None
    }

    /// Takes the turn to poll the revocation feed if it is due at `now` (compare-and-swap on shared data),
    /// scheduling the next poll for `next` (unix seconds): one gateway-wide poll per interval, whichever
    /// worker ticks first.
    pub fn try_feed_poll(&self, now: u64, next: u64) -> bool {
        let due = |current: Option<&[u8]>| current.and_then(decimal).unwrap_or(0) <= now;
        self.store.set_if(&self.feed_poll_key(), &due, next.to_string().as_bytes())
    }

    /// Shared-data key of the provider snapshot.
    pub fn provider_key(ns: &str) -> String {
        format!("tokengate:{ns}:provider")
    }

    /// Shared-data key of the fetch lease.
    pub fn lease_key(ns: &str) -> String {
        format!("tokengate:{ns}:lease")
    }

    fn refresh_lease_key(&self, sid: &str) -> String {
        format!("tokengate:{}:r:{}", self.ns, slot(sid, LEASE_SLOTS))
    }

    /// Takes the right to refresh session `sid` until `until` (unix seconds), unless another request holds
    /// it and it has not run out. One refresh per session at a time, across workers: with strict rotation a
    /// second refresh with the same token would be taken for a replay and end the session. A slot shared
    /// with another session is taken over (that costs at most a duplicate refresh, as before).
    /// `holder` names this request (a random nonce), so only it can give the lease back.
    pub fn try_refresh_lease(&self, sid: &str, now: u64, until: u64, holder: &str) -> bool {
        let free = |current: Option<&[u8]>| match current.map(parse_lease) {
            None | Some(None) => true,
            Some(Some((lease_sid, _, held_until))) => lease_sid != sid || held_until <= now,
        };
        self.store.set_if(&self.refresh_lease_key(sid), &free, format!("{sid} {holder} {until}").as_bytes())
    }

    /// Gives the refresh lease of `sid` back, if request `holder` still holds it.
    pub fn release_refresh_lease(&self, sid: &str, holder: &str) {
        let mine = |current: Option<&[u8]>| {
            current.and_then(parse_lease).is_some_and(|(lease_sid, h, _)| lease_sid == sid && h == holder)
        };
        self.store.set_if(&self.refresh_lease_key(sid), &mine, b"");
    }

    /// Creates every lease and set-index key that does not exist yet, empty. Envoy applies a
    /// compare-and-swap only to a key that exists (a missing key is written unconditionally), so two
    /// workers racing to create one could both win; created up front, every later claim is a real CAS.
    /// Run once per worker at configuration; the window it leaves is the first instants after start.
    pub fn prepare(&self) {
        let keys = (0..LEASE_SLOTS)
            .map(|i| format!("tokengate:{}:r:{i}", self.ns))
            .chain((0..self.session_sets).map(|set| self.sessions().index_key(set)))
            .chain((0..self.bearer_sets).map(|set| self.bearers().index_key(set)))
            .chain((0..LOGOUT_JTIS / WAYS).map(|set| self.logout_jtis().index_key(set)))
            .chain([self.revocations_key(), self.feed_poll_key()]);
        for key in keys {
            self.store.create_if_absent(&key);
        }
    }

    /// The session's entry, if the cache still holds it; `now` (unix seconds) keeps it recently used.
    pub fn get_session(&self, sid: &str, now: u64) -> Option<CachedIdToken> {
        let raw = self.sessions().get(sid, now)?;
        let entry: CachedIdToken = serde_json::from_slice(&raw).ok()?;
        (entry.sid == sid).then_some(entry)
    }

    /// Stores a session's entry at `now`. It stays a candidate for eviction only by use (least recently
    /// used first): its refresh token outlives the ID token.
    pub fn put_session(&self, entry: &CachedIdToken, now: u64) {
        if let Ok(raw) = serde_json::to_vec(entry) {
            self.sessions().put(&entry.sid, u64::MAX, now, &raw);
        }
    }

    /// Forgets a session.
    pub fn delete_session(&self, sid: &str) {
        self.sessions().delete(sid);
    }

    /// A verified bearer token that has not expired at `now`.
    pub fn get_bearer(&self, hash: &str, now: u64) -> Option<CachedBearer> {
        let raw = self.bearers().get(hash, now)?;
        let entry: CachedBearer = serde_json::from_slice(&raw).ok()?;
        (entry.hash == hash && entry.expires_at > now).then_some(entry)
    }

    /// Remembers a verified bearer token until its `exp`; expired ones are the first to go.
    pub fn put_bearer(&self, entry: &CachedBearer, now: u64) {
        if let Ok(raw) = serde_json::to_vec(entry) {
            self.bearers().put(&entry.hash, entry.expires_at, now, &raw);
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

/// A decimal `u64` stored as ASCII (a stamp, a time).
fn decimal(raw: &[u8]) -> Option<u64> {
    std::str::from_utf8(raw).ok()?.parse().ok()
}

/// `"<sid> <holder> <until>"`.
fn parse_lease(raw: &[u8]) -> Option<(&str, &str, u64)> {
    let mut parts = std::str::from_utf8(raw).ok()?.split(' ');
    let (sid, holder, until) = (parts.next()?, parts.next()?, parts.next()?);
    Some((sid, holder, until.parse().ok()?))
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

    fn create_if_absent(&self, key: &str) {
        self.map.borrow_mut().entry(key.to_owned()).or_default();
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
            signed_out: false,
        };
        cache.put_session(&e, 5);
        assert_eq!(cache.get_session("s1", 5), Some(e));
        assert_eq!(cache.get_session("s2", 5), None);
        cache.delete_session("s1");
        assert_eq!(cache.get_session("s1", 5), None);
    }

    fn session(i: usize) -> CachedIdToken {
        CachedIdToken {
            sid: format!("{i:032x}"),
            id_token: "t".repeat(50),
            expires_at: 10_000,
            refresh_token: None,
            generation: 0,
            signed_out: false,
        }
    }

    #[test]
    fn active_sessions_up_to_half_the_capacity_almost_all_stay_cached() {
        // The issue's measurement: 400 sessions missed 8.5% of the time in the direct-mapped design.
        for (capacity, active) in [(1_024u32, 400usize), (8_192, 4_000), (32_768, 15_000)] {
            let store = MemoryStore::default();
            let cache = Cache::with_capacity(&store, "ns", capacity, 16);
            for i in 0..active {
                cache.put_session(&session(i), 1);
            }
            let hits = (0..active).filter(|i| cache.get_session(&session(*i).sid, 2).is_some()).count();
            assert!(hits * 100 >= active * 99, "{hits}/{active} hits at capacity {capacity}");
            let keys = store.keys().len();
            assert!(keys <= (capacity / WAYS * (WAYS + 1)) as usize, "bounded: {keys} keys");
        }
    }

    #[test]
    fn a_flood_of_new_entries_evicts_the_least_recently_used_first() {
        let store = MemoryStore::default();
        let cache = Cache::with_capacity(&store, "ns", WAYS, 16); // one set
        let active = session(1);
        cache.put_session(&active, 0);
        for i in 100..100 + (WAYS as usize - 1) {
            cache.put_session(&session(i), 10);
        }
        // The active user comes back after the flood's first entries (refreshing its last-use time)...
        assert!(cache.get_session(&active.sid, 100).is_some());
        // ...so the next one-off entries evict the flood's oldest, not the user.
        for i in 1_000..1_000 + (WAYS as usize - 1) {
            cache.put_session(&session(i), 120);
        }
        assert!(cache.get_session(&active.sid, 130).is_some(), "used recently: kept");
        assert!(cache.get_session(&session(100).sid, 130).is_none(), "the least recently used went");
    }

    #[test]
    fn a_corrupt_index_or_a_foreign_entry_is_a_miss_never_a_wrong_answer() {
        let store = MemoryStore::default();
        let cache = Cache::with_capacity(&store, "ns", WAYS, WAYS);
        cache.put_session(&session(1), 1);
        for key in store.keys() {
            if key.contains(":si:") {
                Store::set(&store, &key, b"\xff;garbage;1 2");
            }
        }
        assert_eq!(cache.get_session(&session(1).sid, 2), None);
        cache.put_session(&session(2), 3);
        assert!(cache.get_session(&session(2).sid, 4).is_some(), "the set recovers");
    }

    #[test]
    fn one_refresh_lease_per_session_until_it_is_released_or_runs_out() {
        let store = MemoryStore::default();
        let cache = Cache::new(&store, "ns");
        assert!(cache.try_refresh_lease("s1", 100, 106, "a"));
        assert!(!cache.try_refresh_lease("s1", 101, 107, "b"), "held");
        assert!(cache.try_refresh_lease("s2", 101, 107, "c"), "another session is not held up");
        cache.release_refresh_lease("s1", "a");
        assert!(cache.try_refresh_lease("s1", 102, 108, "d"), "released");
        assert!(cache.try_refresh_lease("s1", 108, 114, "e"), "ran out: a refresh that never answered");
        cache.release_refresh_lease("s1", "d");
        assert!(!cache.try_refresh_lease("s1", 109, 115, "f"), "a late answer does not free the next holder's lease");
        cache.release_refresh_lease("s1", "e");
        assert!(cache.try_refresh_lease("s1", 109, 115, "f"));
    }

    #[test]
    fn bearer_entries_expire_and_cache_stays_bounded() {
        let store = MemoryStore::default();
        let cache = Cache::new(&store, "ns");
        for i in 0..5_000 {
            let entry = CachedBearer { hash: token_hash(&i.to_string()), expires_at: 100, claims: Map::new() };
            cache.put_bearer(&entry, 1);
        }
        let bound = (DEFAULT_BEARER_TOKENS / WAYS * (WAYS + 1)) as usize;
        assert!(store.len() <= bound, "bounded by the capacity: {}", store.len());
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
        assert_eq!(id_hash(&token_hash("abc"), true), 0xba78_16bf_8f01_cfea, "a bearer key is its own hash");
    }

    #[test]
    fn namespaces_separate_configurations() {
        assert_ne!(namespace("https://a", "x"), namespace("https://a", "y"));
        assert_eq!(namespace("https://a", "x").len(), 12);
    }
}
