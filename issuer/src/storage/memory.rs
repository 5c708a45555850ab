//! In-memory storage: for tests and throwaway development. Each update runs under one lock, which is
//! what makes it atomic; nothing survives a restart.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use async_trait::async_trait;

use super::{
    keep_key, password_key, AuthCode, AuthRequest, Bucket, Client, DeviceRequest, GcResult, Password, RefreshToken,
    Revocation, RevocationKind, Session, Storage, StorageError, Update,
};
use crate::keys::Keys;

/// Process-memory backend.
#[derive(Default)]
pub struct Memory {
    inner: Mutex<Tables>,
}

#[derive(Default)]
struct Tables {
    auth_requests: HashMap<String, AuthRequest>,
    auth_codes: HashMap<String, AuthCode>,
    refresh_tokens: HashMap<String, RefreshToken>,
    keys: Option<Keys>,
    secrets: HashMap<String, Vec<u8>>,
    buckets: HashMap<String, Bucket>,
    device_requests: HashMap<String, DeviceRequest>,
    clients: HashMap<String, Client>,
    passwords: HashMap<String, Password>,
    sessions: HashMap<String, Session>,
    /// The revocation log, by `seq`.
    revocations: std::collections::BTreeMap<i64, Revocation>,
    /// The last `seq` handed out.
    revocation_seq: i64,
}

impl Memory {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Tables> {
        // A panic while holding the lock leaves the maps consistent (every update is a single insert).
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

fn insert_new<T>(map: &mut HashMap<String, T>, id: &str, value: T) -> Result<(), StorageError> {
    if map.contains_key(id) {
        return Err(StorageError::AlreadyExists);
    }
    map.insert(id.to_owned(), value);
    Ok(())
}

fn update<T: Clone>(map: &mut HashMap<String, T>, id: &str, f: Update<T>) -> Result<T, StorageError> {
    let old = map.get(id).cloned().ok_or(StorageError::NotFound)?;
    let new = f(old)?;
    map.insert(id.to_owned(), new.clone());
    Ok(new)
}

fn collect<T>(map: &mut HashMap<String, T>, batch: u32, expired: impl Fn(&T) -> bool) -> u64 {
    let ids: Vec<String> =
        map.iter().filter(|(_, v)| expired(v)).map(|(k, _)| k.clone()).take(batch as usize).collect();
    for id in &ids {
        map.remove(id);
    }
    ids.len() as u64
}

#[async_trait]
impl Storage for Memory {
    async fn create_auth_request(&self, r: AuthRequest) -> Result<(), StorageError> {
        let id = r.id.clone();
        insert_new(&mut self.lock().auth_requests, &id, r)
    }

    async fn get_auth_request(&self, id: &str) -> Result<AuthRequest, StorageError> {
        self.lock().auth_requests.get(id).cloned().ok_or(StorageError::NotFound)
    }

    async fn delete_auth_request(&self, id: &str) -> Result<(), StorageError> {
        self.lock().auth_requests.remove(id).map(|_| ()).ok_or(StorageError::NotFound)
    }

    async fn create_auth_code(&self, c: AuthCode) -> Result<(), StorageError> {
        let id = c.id.clone();
        insert_new(&mut self.lock().auth_codes, &id, c)
    }

    async fn get_auth_code(&self, id: &str) -> Result<AuthCode, StorageError> {
        self.lock().auth_codes.get(id).cloned().ok_or(StorageError::NotFound)
    }

    async fn update_auth_code(&self, id: &str, f: Update<AuthCode>) -> Result<AuthCode, StorageError> {
        update(&mut self.lock().auth_codes, id, f)
    }

    async fn create_refresh_token(&self, t: RefreshToken) -> Result<(), StorageError> {
        let id = t.id.clone();
        insert_new(&mut self.lock().refresh_tokens, &id, t)
    }

    async fn get_refresh_token(&self, id: &str) -> Result<RefreshToken, StorageError> {
        self.lock().refresh_tokens.get(id).cloned().ok_or(StorageError::NotFound)
    }

    async fn update_refresh_token(&self, id: &str, f: Update<RefreshToken>) -> Result<RefreshToken, StorageError> {
        update(&mut self.lock().refresh_tokens, id, f)
    }

    async fn rotate_refresh_token(&self, old_id: &str, now: i64, successor: RefreshToken) -> Result<(), StorageError> {
        let mut t = self.lock();
        let old = t.refresh_tokens.get_mut(old_id).ok_or(StorageError::NotFound)?;
        if old.rotated_at.is_some() {
            return Err(StorageError::Conflict);
        }
        if t.refresh_tokens.contains_key(&successor.id) {
            return Err(StorageError::AlreadyExists);
        }
        let old = t.refresh_tokens.get_mut(old_id).ok_or(StorageError::NotFound)?;
        old.rotated_at = Some(now);
        old.successor = Some(successor.id.clone());
        t.refresh_tokens.insert(successor.id.clone(), successor);
        Ok(())
    }

    async fn list_refresh_family(&self, family_id: &str) -> Result<Vec<RefreshToken>, StorageError> {
        let mut v: Vec<_> = self.lock().refresh_tokens.values().filter(|t| t.family_id == family_id).cloned().collect();
        v.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        Ok(v)
    }

    async fn delete_refresh_family(&self, family_id: &str) -> Result<u64, StorageError> {
        let mut t = self.lock();
        let before = t.refresh_tokens.len();
        t.refresh_tokens.retain(|_, v| v.family_id != family_id);
        Ok((before - t.refresh_tokens.len()) as u64)
    }

    async fn get_keys(&self) -> Result<Keys, StorageError> {
        self.lock().keys.clone().ok_or(StorageError::NotFound)
    }

    async fn update_keys(&self, f: Update<Option<Keys>>) -> Result<Keys, StorageError> {
        let mut t = self.lock();
        if let Some(new) = f(t.keys.clone())? {
            t.keys = Some(new);
        }
        t.keys.clone().ok_or(StorageError::NotFound)
    }

    async fn get_or_create_secret(&self, name: &str, candidate: Vec<u8>) -> Result<Vec<u8>, StorageError> {
        Ok(self.lock().secrets.entry(name.to_owned()).or_insert(candidate).clone())
    }

    async fn get_bucket(&self, key: &str) -> Result<Option<Bucket>, StorageError> {
        Ok(self.lock().buckets.get(key).copied())
    }

    async fn update_bucket(&self, key: &str, f: Update<Option<Bucket>>) -> Result<Option<Bucket>, StorageError> {
        let mut t = self.lock();
        let new = f(t.buckets.get(key).copied())?;
        match new {
            Some(b) => t.buckets.insert(key.to_owned(), b),
            None => t.buckets.remove(key),
        };
        Ok(new)
    }

    async fn create_device_request(&self, r: DeviceRequest) -> Result<(), StorageError> {
        let mut t = self.lock();
        if t.device_requests.values().any(|d| d.user_code == r.user_code) {
            return Err(StorageError::AlreadyExists);
        }
        let id = r.device_code.clone();
        insert_new(&mut t.device_requests, &id, r)
    }

    async fn get_device_request(&self, device_code: &str) -> Result<DeviceRequest, StorageError> {
        self.lock().device_requests.get(device_code).cloned().ok_or(StorageError::NotFound)
    }

    async fn get_device_request_by_user_code(&self, user_code: &str) -> Result<DeviceRequest, StorageError> {
        self.lock().device_requests.values().find(|d| d.user_code == user_code).cloned().ok_or(StorageError::NotFound)
    }

    async fn update_device_request(
        &self,
        device_code: &str,
        f: Update<DeviceRequest>,
    ) -> Result<DeviceRequest, StorageError> {
        update(&mut self.lock().device_requests, device_code, super::keep_codes(f))
    }

    async fn list_user_refresh_tokens(
        &self,
        connector_id: &str,
        user_id: &str,
    ) -> Result<Vec<RefreshToken>, StorageError> {
        let mut v: Vec<RefreshToken> = (self.lock().refresh_tokens.values())
            .filter(|t| t.identity.connector_id == connector_id && t.identity.user_id == user_id)
            .cloned()
            .collect();
        v.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        Ok(v)
    }

    async fn list_refresh_tokens(&self) -> Result<Vec<RefreshToken>, StorageError> {
        let mut v: Vec<RefreshToken> = self.lock().refresh_tokens.values().cloned().collect();
        v.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        Ok(v)
    }

    async fn create_client(&self, c: Client) -> Result<(), StorageError> {
        let id = c.id.clone();
        insert_new(&mut self.lock().clients, &id, c)
    }

    async fn get_client(&self, id: &str) -> Result<Client, StorageError> {
        self.lock().clients.get(id).cloned().ok_or(StorageError::NotFound)
    }

    async fn update_client(&self, id: &str, f: Update<Client>) -> Result<Client, StorageError> {
        update(&mut self.lock().clients, id, keep_key(|c: &Client| c.id.clone(), f))
    }

    async fn delete_client(&self, id: &str) -> Result<(), StorageError> {
        self.lock().clients.remove(id).map(|_| ()).ok_or(StorageError::NotFound)
    }

    async fn list_clients(&self) -> Result<Vec<Client>, StorageError> {
        let mut v: Vec<Client> = self.lock().clients.values().cloned().collect();
        v.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(v)
    }

    async fn create_password(&self, p: Password) -> Result<(), StorageError> {
        let key = password_key(&p.email);
        insert_new(&mut self.lock().passwords, &key, p)
    }

    async fn get_password(&self, email: &str) -> Result<Password, StorageError> {
        self.lock().passwords.get(&password_key(email)).cloned().ok_or(StorageError::NotFound)
    }

    async fn update_password(&self, email: &str, f: Update<Password>) -> Result<Password, StorageError> {
        let f = keep_key(|p: &Password| password_key(&p.email), f);
        update(&mut self.lock().passwords, &password_key(email), f)
    }

    async fn delete_password(&self, email: &str) -> Result<(), StorageError> {
        self.lock().passwords.remove(&password_key(email)).map(|_| ()).ok_or(StorageError::NotFound)
    }

    async fn list_passwords(&self) -> Result<Vec<Password>, StorageError> {
        let mut v: Vec<Password> = self.lock().passwords.values().cloned().collect();
        v.sort_by_key(|p| password_key(&p.email));
        Ok(v)
    }

    async fn create_session(&self, s: Session) -> Result<(), StorageError> {
        let id = s.id.clone();
        insert_new(&mut self.lock().sessions, &id, s)
    }

    async fn get_session(&self, id: &str) -> Result<Session, StorageError> {
        self.lock().sessions.get(id).cloned().ok_or(StorageError::NotFound)
    }

    async fn update_session(&self, id: &str, f: Update<Session>) -> Result<Session, StorageError> {
        update(&mut self.lock().sessions, id, keep_key(|s: &Session| s.id.clone(), f))
    }

    async fn delete_session(&self, id: &str) -> Result<(), StorageError> {
        self.lock().sessions.remove(id).map(|_| ()).ok_or(StorageError::NotFound)
    }

    async fn list_sessions(&self) -> Result<Vec<Session>, StorageError> {
        let mut v: Vec<Session> = self.lock().sessions.values().cloned().collect();
        v.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(v)
    }

    async fn create_revocation(&self, kind: RevocationKind, value: &str, revoked_at: i64) -> Result<i64, StorageError> {
        let mut t = self.lock();
        t.revocation_seq += 1;
        let seq = t.revocation_seq;
        t.revocations.insert(seq, Revocation { seq, kind, value: value.to_owned(), revoked_at });
        Ok(seq)
    }

    async fn list_revocations_after(&self, after: i64, limit: u32) -> Result<Vec<Revocation>, StorageError> {
        let t = self.lock();
        let from = after.saturating_add(1);
        Ok(t.revocations.range(from..).take(limit as usize).map(|(_, r)| r.clone()).collect())
    }

    async fn get_revocation_bounds(&self) -> Result<Option<(i64, i64)>, StorageError> {
        let t = self.lock();
        Ok(t.revocations.keys().next().copied().zip(t.revocations.keys().next_back().copied()))
    }

    async fn delete_revocations_before(&self, cutoff: i64, batch: u32) -> Result<u64, StorageError> {
        let mut t = self.lock();
        let newest = t.revocations.keys().next_back().copied();
        let old: Vec<i64> = (t.revocations.values())
            .filter(|r| r.revoked_at < cutoff && Some(r.seq) != newest)
            .map(|r| r.seq)
            .take(batch as usize)
            .collect();
        for seq in &old {
            t.revocations.remove(seq);
        }
        Ok(old.len() as u64)
    }

    async fn garbage_collect(&self, now: i64, batch: u32) -> Result<GcResult, StorageError> {
        let mut t = self.lock();
        Ok(GcResult {
            auth_requests: collect(&mut t.auth_requests, batch, |r| r.expiry < now),
            auth_codes: collect(&mut t.auth_codes, batch, |c| c.expiry < now),
            refresh_tokens: collect(&mut t.refresh_tokens, batch, |r| r.expiry < now),
            buckets: collect(&mut t.buckets, batch, |b| b.expiry < now),
            device_requests: collect(&mut t.device_requests, batch, |d| d.expiry < now),
            sessions: collect(&mut t.sessions, batch, |s| s.expiry < now),
        })
    }
}

#[cfg(test)]
mod tests {
    crate::storage::conformance::suite!(|| async { super::Memory::new() });
}
