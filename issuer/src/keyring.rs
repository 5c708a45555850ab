//! The key set in memory: the signer and JWKS the handlers use, loaded from storage and rotated there on
//! schedule. Replicas share the stored set; each re-reads it at least every `RELOAD` and whenever the
//! stored rotation time has passed, so one replica's rotation reaches the others without coordination.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::RwLock;

use crate::config::Config;
use crate::keys::{self, KeyError, Keys, PublicKey, Signer};
use crate::storage::{Storage, StorageError};

/// How often a replica re-reads the stored set even when no rotation is due.
const RELOAD: i64 = 60;

/// While storage is unavailable, how long the loaded set is used before storage is asked again: one
/// attempt (which may wait for the pool's acquire timeout) per this many seconds, not one per request.
const UNAVAILABLE_RETRY: i64 = 2;

/// A loaded key set.
pub struct Loaded {
    /// Signs new tokens.
    pub signer: Signer,
    /// Everything published in JWKS (signing, next, retired), i.e. everything that verifies.
    pub public: Vec<PublicKey>,
    /// The JWKS document.
    pub jwks: Vec<u8>,
    /// When the stored set rotates next.
    pub next_rotation: i64,
    loaded_at: i64,
}

/// Key-ring failures.
#[derive(Debug, thiserror::Error)]
pub enum KeyringError {
    /// Storage failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// Key material failed.
    #[error(transparent)]
    Key(#[from] KeyError),
}

/// The shared, lazily refreshed key set.
pub struct Keyring {
    current: RwLock<Option<Arc<Loaded>>>,
    /// Unix time before which the loaded set is used as it is, storage having been unavailable.
    unavailable_until: AtomicI64,
}

impl Default for Keyring {
    fn default() -> Self {
        Self { current: RwLock::new(None), unavailable_until: AtomicI64::new(0) }
    }
}

impl Keyring {
    /// The key set to use at `now`, rotating it in storage first if it is due.
    ///
    /// While storage is unavailable the set already loaded is kept, even past its scheduled rotation: a
    /// rotation needs storage anyway, the keys it holds are still the ones every replica publishes (the
    /// signing key stays published as retired for a token lifetime after the rotation finally happens),
    /// and a JWKS that answered 500 during a database outage would fail relying parties that could still
    /// verify every token in circulation.
    pub async fn get(&self, config: &Config, storage: &dyn Storage, now: i64) -> Result<Arc<Loaded>, KeyringError> {
        let usable = |l: &Loaded| {
            (now < l.next_rotation && now - l.loaded_at < RELOAD)
                || now < self.unavailable_until.load(Ordering::Relaxed)
        };
        if let Some(l) = self.current.read().await.as_ref() {
            if usable(l) {
                return Ok(l.clone());
            }
        }
        let mut slot = self.current.write().await;
        if let Some(l) = slot.as_ref() {
            if usable(l) {
                return Ok(l.clone());
            }
        }
        let stored = match sync(config, storage, now).await {
            Ok(k) => k,
            Err(KeyringError::Storage(StorageError::Unavailable(why))) => match slot.as_ref() {
                Some(l) => {
                    let overdue = now >= l.next_rotation;
                    tracing::warn!(error = %why, overdue, "storage unavailable: keeping the loaded signing keys");
                    self.unavailable_until.store(now + UNAVAILABLE_RETRY, Ordering::Relaxed);
                    return Ok(l.clone());
                }
                None => return Err(KeyringError::Storage(StorageError::Unavailable(why))),
            },
            Err(e) => return Err(e),
        };
        self.unavailable_until.store(0, Ordering::Relaxed);
        let loaded = Arc::new(load(&stored, now)?);
        *slot = Some(loaded.clone());
        Ok(loaded)
    }
}

/// Reads the stored set and rotates it if due. New keys are generated outside the storage transaction (RSA
/// generation takes a while); the transaction only installs them if nobody rotated in between.
async fn sync(config: &Config, storage: &dyn Storage, now: i64) -> Result<Keys, KeyringError> {
    let current = match storage.get_keys().await {
        Ok(k) => Some(k),
        Err(StorageError::NotFound) => None,
        Err(e) => return Err(e.into()),
    };
    let period = config.expiry.signing_keys;
    let lifetime = config.expiry.id_tokens.max(Duration::from_secs(1));
    let Some(proposed) = keys::rotate(current.as_ref(), config.signing.algorithm, now, period, lifetime)? else {
        return current.ok_or(KeyringError::Storage(StorageError::NotFound));
    };
    let seen = current.as_ref().map(|k| (k.signing.kid.clone(), k.next_rotation));
    let stored = storage
        .update_keys(Box::new(move |cur| {
            let unchanged = cur.as_ref().map(|k| (k.signing.kid.clone(), k.next_rotation)) == seen;
            Ok(if unchanged { Some(proposed) } else { None })
        }))
        .await?;
    if stored.next_rotation > now || current.is_none() {
        tracing::info!(kid = %stored.signing.kid, alg = stored.signing.alg.as_str(), next_rotation = stored.next_rotation, "signing keys loaded");
    }
    Ok(stored)
}

fn load(k: &Keys, now: i64) -> Result<Loaded, KeyError> {
    let signer = Signer::from_stored(&k.signing)?;
    let mut public = vec![signer.public_key(), Signer::from_stored(&k.next)?.public_key()];
    public.extend(k.retired.iter().filter(|r| r.expires_at > now).map(|r| r.public.clone()));
    let jwks = serde_json::to_vec(&serde_json::json!({ "keys": public.iter().map(|p| &p.jwk).collect::<Vec<_>>() }))
        .map_err(|_| KeyError::Crypto)?;
    Ok(Loaded { signer, public, jwks, next_rotation: k.next_rotation, loaded_at: now })
}
