//! SQLite storage, the embedded default: everything survives a restart. Records are JSON documents beside
//! the columns that queries need (id, family, expiry).
//!
//! SQLite has one writer at a time. Writes go through a pool of exactly one connection, so a transaction
//! that reads and then writes never has to upgrade its lock against another writer (which SQLite answers
//! with `SQLITE_BUSY` rather than waiting); reads use a separate pool and, in WAL mode, never block.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use serde::{de::DeserializeOwned, Serialize};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqlitePool};

use super::{AuthCode, AuthRequest, Bucket, DeviceRequest, GcResult, RefreshToken, Storage, StorageError, Update};
use crate::keys::Keys;

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS auth_requests (id TEXT PRIMARY KEY, data TEXT NOT NULL, expiry INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS auth_requests_expiry ON auth_requests (expiry);
CREATE TABLE IF NOT EXISTS auth_codes (id TEXT PRIMARY KEY, data TEXT NOT NULL, expiry INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS auth_codes_expiry ON auth_codes (expiry);
CREATE TABLE IF NOT EXISTS refresh_tokens (
    id TEXT PRIMARY KEY, family_id TEXT NOT NULL, data TEXT NOT NULL, expiry INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS refresh_tokens_family ON refresh_tokens (family_id);
CREATE INDEX IF NOT EXISTS refresh_tokens_expiry ON refresh_tokens (expiry);
CREATE TABLE IF NOT EXISTS keys (id INTEGER PRIMARY KEY CHECK (id = 1), data TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS secrets (name TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS buckets (key TEXT PRIMARY KEY, data TEXT NOT NULL, expiry INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS buckets_expiry ON buckets (expiry);
CREATE TABLE IF NOT EXISTS device_requests (
    id TEXT PRIMARY KEY, user_code TEXT NOT NULL UNIQUE, data TEXT NOT NULL, expiry INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS device_requests_expiry ON device_requests (expiry);
"#;

/// SQLite backend.
pub struct Sqlite {
    read: SqlitePool,
    write: SqlitePool,
}

fn backend(e: impl std::fmt::Display) -> StorageError {
    StorageError::Backend(e.to_string())
}

fn encode(v: &impl Serialize) -> Result<String, StorageError> {
    serde_json::to_string(v).map_err(backend)
}

fn decode<T: DeserializeOwned>(s: &str) -> Result<T, StorageError> {
    serde_json::from_str(s).map_err(backend)
}

fn map_insert(e: sqlx::Error) -> StorageError {
    match &e {
        sqlx::Error::Database(db) if db.is_unique_violation() => StorageError::AlreadyExists,
        _ => backend(e),
    }
}

impl Sqlite {
    /// Opens (creating if needed) the database file and its folder, and applies the schema.
    pub async fn open(path: &Path) -> Result<Self, StorageError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| backend(format!("creating {}: {e}", dir.display())))?;
        }
        let opts = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true);
        Self::with_options(opts, 4).await
    }

    /// A private in-memory database (for tests): one connection serves reads and writes.
    pub async fn open_in_memory() -> Result<Self, StorageError> {
        let opts = SqliteConnectOptions::from_str("sqlite::memory:").map_err(backend)?;
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(opts)
            .await
            .map_err(backend)?;
        sqlx::raw_sql(SCHEMA).execute(&pool).await.map_err(backend)?;
        Ok(Self { read: pool.clone(), write: pool })
    }

    async fn with_options(opts: SqliteConnectOptions, readers: u32) -> Result<Self, StorageError> {
        let write = SqlitePoolOptions::new().max_connections(1).connect_with(opts.clone()).await.map_err(backend)?;
        sqlx::raw_sql(SCHEMA).execute(&write).await.map_err(backend)?;
        let read = SqlitePoolOptions::new()
            .max_connections(readers)
            .connect_with(opts.read_only(true))
            .await
            .map_err(backend)?;
        Ok(Self { read, write })
    }

    async fn get_doc<T: DeserializeOwned>(&self, table: &str, id: &str) -> Result<T, StorageError> {
        let row = sqlx::query(&format!("SELECT data FROM {table} WHERE id = ?"))
            .bind(id)
            .fetch_optional(&self.read)
            .await
            .map_err(backend)?
            .ok_or(StorageError::NotFound)?;
        decode(row.get::<&str, _>(0))
    }

    /// Runs `f` on the current document inside a write transaction and stores the result.
    async fn update_doc<T>(
        &self,
        table: &str,
        id: &str,
        expiry_of: fn(&T) -> i64,
        f: Update<T>,
    ) -> Result<T, StorageError>
    where
        T: Serialize + DeserializeOwned,
    {
        let mut tx = self.write.begin().await.map_err(backend)?;
        let row = sqlx::query(&format!("SELECT data FROM {table} WHERE id = ?"))
            .bind(id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(backend)?
            .ok_or(StorageError::NotFound)?;
        let new = f(decode(row.get::<&str, _>(0))?)?;
        sqlx::query(&format!("UPDATE {table} SET data = ?, expiry = ? WHERE id = ?"))
            .bind(encode(&new)?)
            .bind(expiry_of(&new))
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        tx.commit().await.map_err(backend)?;
        Ok(new)
    }

    async fn insert_doc(&self, table: &str, id: &str, data: String, expiry: i64) -> Result<(), StorageError> {
        sqlx::query(&format!("INSERT INTO {table} (id, data, expiry) VALUES (?, ?, ?)"))
            .bind(id)
            .bind(data)
            .bind(expiry)
            .execute(&self.write)
            .await
            .map_err(map_insert)?;
        Ok(())
    }

    async fn collect(&self, table: &str, now: i64, batch: u32) -> Result<u64, StorageError> {
        // Bounded: a long backlog is cleared over several passes without holding the write lock for long.
        let done = sqlx::query(&format!(
            "DELETE FROM {table} WHERE rowid IN (SELECT rowid FROM {table} WHERE expiry < ? LIMIT ?)"
        ))
        .bind(now)
        .bind(batch)
        .execute(&self.write)
        .await
        .map_err(backend)?;
        Ok(done.rows_affected())
    }
}

#[async_trait]
impl Storage for Sqlite {
    async fn create_auth_request(&self, r: AuthRequest) -> Result<(), StorageError> {
        self.insert_doc("auth_requests", &r.id, encode(&r)?, r.expiry).await
    }

    async fn get_auth_request(&self, id: &str) -> Result<AuthRequest, StorageError> {
        self.get_doc("auth_requests", id).await
    }

    async fn delete_auth_request(&self, id: &str) -> Result<(), StorageError> {
        let done = sqlx::query("DELETE FROM auth_requests WHERE id = ?")
            .bind(id)
            .execute(&self.write)
            .await
            .map_err(backend)?;
        if done.rows_affected() == 0 {
            return Err(StorageError::NotFound);
        }
        Ok(())
    }

    async fn create_auth_code(&self, c: AuthCode) -> Result<(), StorageError> {
        self.insert_doc("auth_codes", &c.id, encode(&c)?, c.expiry).await
    }

    async fn get_auth_code(&self, id: &str) -> Result<AuthCode, StorageError> {
        self.get_doc("auth_codes", id).await
    }

    async fn update_auth_code(&self, id: &str, f: Update<AuthCode>) -> Result<AuthCode, StorageError> {
        self.update_doc("auth_codes", id, |c: &AuthCode| c.expiry, f).await
    }

    async fn create_refresh_token(&self, t: RefreshToken) -> Result<(), StorageError> {
        sqlx::query("INSERT INTO refresh_tokens (id, family_id, data, expiry) VALUES (?, ?, ?, ?)")
            .bind(&t.id)
            .bind(&t.family_id)
            .bind(encode(&t)?)
            .bind(t.expiry)
            .execute(&self.write)
            .await
            .map_err(map_insert)?;
        Ok(())
    }

    async fn get_refresh_token(&self, id: &str) -> Result<RefreshToken, StorageError> {
        self.get_doc("refresh_tokens", id).await
    }

    async fn update_refresh_token(&self, id: &str, f: Update<RefreshToken>) -> Result<RefreshToken, StorageError> {
        self.update_doc("refresh_tokens", id, |t: &RefreshToken| t.expiry, f).await
    }

    async fn rotate_refresh_token(&self, old_id: &str, now: i64, successor: RefreshToken) -> Result<(), StorageError> {
        let mut tx = self.write.begin().await.map_err(backend)?;
        let row = sqlx::query("SELECT data FROM refresh_tokens WHERE id = ?")
            .bind(old_id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(backend)?
            .ok_or(StorageError::NotFound)?;
        let mut old: RefreshToken = decode(row.get::<&str, _>(0))?;
        if old.rotated_at.is_some() {
            return Err(StorageError::Conflict);
        }
        old.rotated_at = Some(now);
        old.successor = Some(successor.id.clone());
        sqlx::query("UPDATE refresh_tokens SET data = ? WHERE id = ?")
            .bind(encode(&old)?)
            .bind(old_id)
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        sqlx::query("INSERT INTO refresh_tokens (id, family_id, data, expiry) VALUES (?, ?, ?, ?)")
            .bind(&successor.id)
            .bind(&successor.family_id)
            .bind(encode(&successor)?)
            .bind(successor.expiry)
            .execute(&mut *tx)
            .await
            .map_err(map_insert)?;
        tx.commit().await.map_err(backend)
    }

    async fn list_refresh_family(&self, family_id: &str) -> Result<Vec<RefreshToken>, StorageError> {
        let rows = sqlx::query("SELECT data FROM refresh_tokens WHERE family_id = ?")
            .bind(family_id)
            .fetch_all(&self.read)
            .await
            .map_err(backend)?;
        let mut v = rows.iter().map(|r| decode::<RefreshToken>(r.get::<&str, _>(0))).collect::<Result<Vec<_>, _>>()?;
        v.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        Ok(v)
    }

    async fn delete_refresh_family(&self, family_id: &str) -> Result<u64, StorageError> {
        let done = sqlx::query("DELETE FROM refresh_tokens WHERE family_id = ?")
            .bind(family_id)
            .execute(&self.write)
            .await
            .map_err(backend)?;
        Ok(done.rows_affected())
    }

    async fn get_keys(&self) -> Result<Keys, StorageError> {
        self.get_doc("keys", "1").await
    }

    async fn update_keys(&self, f: Update<Option<Keys>>) -> Result<Keys, StorageError> {
        let mut tx = self.write.begin().await.map_err(backend)?;
        let current: Option<Keys> =
            match sqlx::query("SELECT data FROM keys WHERE id = 1").fetch_optional(&mut *tx).await.map_err(backend)? {
                Some(row) => Some(decode(row.get::<&str, _>(0))?),
                None => None,
            };
        let Some(new) = f(current.clone())? else {
            return current.ok_or(StorageError::NotFound);
        };
        sqlx::query("INSERT INTO keys (id, data) VALUES (1, ?) ON CONFLICT (id) DO UPDATE SET data = excluded.data")
            .bind(encode(&new)?)
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        tx.commit().await.map_err(backend)?;
        Ok(new)
    }

    async fn get_or_create_secret(&self, name: &str, candidate: Vec<u8>) -> Result<Vec<u8>, StorageError> {
        sqlx::query("INSERT INTO secrets (name, value) VALUES (?, ?) ON CONFLICT (name) DO NOTHING")
            .bind(name)
            .bind(&candidate)
            .execute(&self.write)
            .await
            .map_err(backend)?;
        let row = sqlx::query("SELECT value FROM secrets WHERE name = ?")
            .bind(name)
            .fetch_one(&self.write)
            .await
            .map_err(backend)?;
        Ok(row.get::<Vec<u8>, _>(0))
    }

    async fn get_bucket(&self, key: &str) -> Result<Option<Bucket>, StorageError> {
        let row = sqlx::query("SELECT data FROM buckets WHERE key = ?")
            .bind(key)
            .fetch_optional(&self.read)
            .await
            .map_err(backend)?;
        row.map(|r| decode(r.get::<&str, _>(0))).transpose()
    }

    async fn update_bucket(&self, key: &str, f: Update<Option<Bucket>>) -> Result<Option<Bucket>, StorageError> {
        let mut tx = self.write.begin().await.map_err(backend)?;
        let current = match sqlx::query("SELECT data FROM buckets WHERE key = ?")
            .bind(key)
            .fetch_optional(&mut *tx)
            .await
            .map_err(backend)?
        {
            Some(row) => Some(decode(row.get::<&str, _>(0))?),
            None => None,
        };
        let new = f(current)?;
        match &new {
            Some(b) => sqlx::query(
                "INSERT INTO buckets (key, data, expiry) VALUES (?, ?, ?) \
                 ON CONFLICT (key) DO UPDATE SET data = excluded.data, expiry = excluded.expiry",
            )
            .bind(key)
            .bind(encode(b)?)
            .bind(b.expiry),
            None => sqlx::query("DELETE FROM buckets WHERE key = ?").bind(key),
        }
        .execute(&mut *tx)
        .await
        .map_err(backend)?;
        tx.commit().await.map_err(backend)?;
        Ok(new)
    }

    async fn create_device_request(&self, r: DeviceRequest) -> Result<(), StorageError> {
        sqlx::query("INSERT INTO device_requests (id, user_code, data, expiry) VALUES (?, ?, ?, ?)")
            .bind(&r.device_code)
            .bind(&r.user_code)
            .bind(encode(&r)?)
            .bind(r.expiry)
            .execute(&self.write)
            .await
            .map_err(map_insert)?;
        Ok(())
    }

    async fn get_device_request(&self, device_code: &str) -> Result<DeviceRequest, StorageError> {
        self.get_doc("device_requests", device_code).await
    }

    async fn get_device_request_by_user_code(&self, user_code: &str) -> Result<DeviceRequest, StorageError> {
        let row = sqlx::query("SELECT data FROM device_requests WHERE user_code = ?")
            .bind(user_code)
            .fetch_optional(&self.read)
            .await
            .map_err(backend)?
            .ok_or(StorageError::NotFound)?;
        decode(row.get::<&str, _>(0))
    }

    async fn update_device_request(
        &self,
        device_code: &str,
        f: Update<DeviceRequest>,
    ) -> Result<DeviceRequest, StorageError> {
        self.update_doc("device_requests", device_code, |d: &DeviceRequest| d.expiry, super::keep_codes(f)).await
    }

    async fn garbage_collect(&self, now: i64, batch: u32) -> Result<GcResult, StorageError> {
        Ok(GcResult {
            auth_requests: self.collect("auth_requests", now, batch).await?,
            auth_codes: self.collect("auth_codes", now, batch).await?,
            refresh_tokens: self.collect("refresh_tokens", now, batch).await?,
            buckets: self.collect("buckets", now, batch).await?,
            device_requests: self.collect("device_requests", now, batch).await?,
        })
    }
}

#[cfg(test)]
mod tests {
    mod in_memory {
        crate::storage::conformance::suite!(|| async { super::super::Sqlite::open_in_memory().await.unwrap() });
    }

    mod on_disk {
        crate::storage::conformance::suite!(|| async {
            // Leaked on purpose: the directory must outlive the pool, and the OS cleans /tmp.
            let dir = Box::leak(Box::new(tempfile::tempdir().unwrap()));
            super::super::Sqlite::open(&dir.path().join("nested/issuer.db")).await.unwrap()
        });
    }

    #[tokio::test]
    async fn records_survive_reopening_the_file() {
        use crate::storage::Storage;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("issuer.db");
        let first = super::Sqlite::open(&path).await.unwrap();
        first.get_or_create_secret("s", vec![1, 2, 3]).await.unwrap();
        first.create_refresh_token(crate::storage::conformance::refresh_token("t", "f", 10)).await.unwrap();
        drop(first);
        let second = super::Sqlite::open(&path).await.unwrap();
        assert_eq!(second.get_or_create_secret("s", vec![9]).await.unwrap(), vec![1, 2, 3]);
        assert_eq!(second.get_refresh_token("t").await.unwrap().family_id, "f");
    }
}
