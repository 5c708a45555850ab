//! Brute-force protection: token buckets for password logins, one per user (login name, case-insensitive)
//! and a larger one per client IP. A bucket holds `capacity` attempts and gains one back every `refill`.
//! An attempt reserves one token from both buckets before the password is checked; a successful login
//! gives it back, so only failures spend. Buckets live in storage, so the limit holds across replicas.

use std::time::Duration;

use crate::storage::{Bucket, Storage, StorageError};

/// One bucket's parameters.
#[derive(Debug, Clone, Copy)]
pub struct Limit {
    /// Attempts available at once.
    pub capacity: u32,
    /// Time for one attempt to come back.
    pub refill: Duration,
}

impl Limit {
    fn refill_secs(&self) -> f64 {
        self.refill.as_secs_f64()
    }

    /// Tokens in `bucket` at `now`.
    pub fn level(&self, bucket: Option<Bucket>, now: f64) -> f64 {
        let cap = f64::from(self.capacity);
        match bucket {
            None => cap,
            Some(b) => (b.tokens + (now - b.updated_at).max(0.0) / self.refill_secs()).min(cap),
        }
    }

    /// The bucket after adding `delta` tokens at `now` (clamped to capacity), with its expiry: the moment it
    /// is full again and need not be stored.
    pub fn adjust(&self, bucket: Option<Bucket>, now: f64, delta: f64) -> Bucket {
        let cap = f64::from(self.capacity);
        let tokens = (self.level(bucket, now) + delta).min(cap);
        let full_in = (cap - tokens) * self.refill_secs();
        Bucket { tokens, updated_at: now, expiry: (now + full_in).ceil() as i64 + 1 }
    }

    /// Seconds until one attempt is available.
    pub fn retry_after(&self, bucket: Option<Bucket>, now: f64) -> u64 {
        let missing = 1.0 - self.level(bucket, now);
        if missing <= 0.0 {
            0
        } else {
            (missing * self.refill_secs()).ceil().max(1.0) as u64
        }
    }
}

/// A reservation was refused.
#[derive(Debug, thiserror::Error)]
pub enum LimitError {
    /// The bucket is empty.
    #[error("too many attempts, retry after {retry_after}s")]
    Exhausted {
        /// Seconds until one attempt is available.
        retry_after: u64,
    },
    /// Storage failed.
    #[error(transparent)]
    Storage(StorageError),
}

/// Takes one attempt from the bucket `key`, atomically.
pub async fn reserve(store: &dyn Storage, key: &str, limit: Limit, now: f64) -> Result<(), LimitError> {
    let result = store
        .update_bucket(
            key,
            Box::new(move |b| {
                if limit.level(b, now) < 1.0 {
                    return Err(StorageError::Conflict);
                }
                Ok(Some(limit.adjust(b, now, -1.0)))
            }),
        )
        .await;
    match result {
        Ok(_) => Ok(()),
        Err(StorageError::Conflict) => {
            let b = store.get_bucket(key).await.map_err(LimitError::Storage)?;
            Err(LimitError::Exhausted { retry_after: limit.retry_after(b, now) })
        }
        Err(e) => Err(LimitError::Storage(e)),
    }
}

/// Gives back an attempt taken by `reserve`.
pub async fn refund(store: &dyn Storage, key: &str, limit: Limit, now: f64) -> Result<(), StorageError> {
    store.update_bucket(key, Box::new(move |b| Ok(Some(limit.adjust(b, now, 1.0))))).await.map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::memory::Memory;

    const USER: Limit = Limit { capacity: 20, refill: Duration::from_secs(6) };

    #[tokio::test]
    async fn twenty_attempts_then_one_every_six_seconds() {
        let s = Memory::new();
        for i in 0..20 {
            reserve(&s, "u", USER, 100.0).await.unwrap_or_else(|e| panic!("attempt {i}: {e}"));
        }
        match reserve(&s, "u", USER, 100.0).await {
            Err(LimitError::Exhausted { retry_after }) => assert_eq!(retry_after, 6),
            other => panic!("21st attempt: {other:?}"),
        }
        assert!(matches!(reserve(&s, "u", USER, 105.9).await, Err(LimitError::Exhausted { retry_after: 1 })));
        reserve(&s, "u", USER, 106.0).await.expect("one attempt is back after 6 s");
        assert!(reserve(&s, "u", USER, 106.0).await.is_err(), "and only one");
    }

    #[tokio::test]
    async fn refunds_mean_only_failures_count() {
        let s = Memory::new();
        for _ in 0..50 {
            reserve(&s, "u", USER, 0.0).await.unwrap();
            refund(&s, "u", USER, 0.0).await.unwrap();
        }
        assert_eq!(USER.level(s.get_bucket("u").await.unwrap(), 0.0), 20.0);
    }

    #[test]
    fn a_bucket_expires_when_it_is_full_again() {
        let b = USER.adjust(None, 10.0, -2.0);
        assert_eq!(b.tokens, 18.0);
        assert_eq!(b.expiry, 10 + 12 + 1);
        assert_eq!(USER.level(Some(b), 22.0), 20.0);
    }
}
