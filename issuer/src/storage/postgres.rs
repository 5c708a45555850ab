//! PostgreSQL storage: what several issuer replicas share. Records are JSON documents beside the columns
//! queries need, as in the SQLite backend. Every update runs in a transaction that first locks what it
//! reads (`SELECT … FOR UPDATE`, or a transaction-scoped advisory lock where the row may not exist yet),
//! so two replicas updating the same record run one after the other and each sees the other's result.

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use serde::{de::DeserializeOwned, Serialize};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgSslMode};
use sqlx::{PgPool, Postgres as Pg, Row, Transaction};

use super::{
    keep_key, password_key, AuthCode, AuthRequest, Bucket, Client, DeviceRequest, GcResult, Password, RefreshToken,
    Revocation, RevocationKind, Session, Storage, StorageError, Update,
};
use crate::config::PostgresConfig;
use crate::keys::Keys;

/// Replicas starting at once must not race on `CREATE TABLE IF NOT EXISTS`: the schema is applied under
/// this advisory lock.
const SCHEMA: &str = r#"
BEGIN;
SELECT pg_advisory_xact_lock(7305746174);
CREATE TABLE IF NOT EXISTS auth_requests (id TEXT PRIMARY KEY, data TEXT NOT NULL, expiry BIGINT NOT NULL);
CREATE INDEX IF NOT EXISTS auth_requests_expiry ON auth_requests (expiry);
CREATE TABLE IF NOT EXISTS auth_codes (id TEXT PRIMARY KEY, data TEXT NOT NULL, expiry BIGINT NOT NULL);
CREATE INDEX IF NOT EXISTS auth_codes_expiry ON auth_codes (expiry);
CREATE TABLE IF NOT EXISTS refresh_tokens (
    id TEXT PRIMARY KEY, family_id TEXT NOT NULL, data TEXT NOT NULL, expiry BIGINT NOT NULL);
CREATE INDEX IF NOT EXISTS refresh_tokens_family ON refresh_tokens (family_id);
CREATE INDEX IF NOT EXISTS refresh_tokens_expiry ON refresh_tokens (expiry);
CREATE TABLE IF NOT EXISTS keys (id INTEGER PRIMARY KEY CHECK (id = 1), data TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS secrets (name TEXT PRIMARY KEY, value BYTEA NOT NULL);
CREATE TABLE IF NOT EXISTS buckets (id TEXT PRIMARY KEY, data TEXT NOT NULL, expiry BIGINT NOT NULL);
CREATE INDEX IF NOT EXISTS buckets_expiry ON buckets (expiry);
CREATE TABLE IF NOT EXISTS device_requests (
    id TEXT PRIMARY KEY, user_code TEXT NOT NULL UNIQUE, data TEXT NOT NULL, expiry BIGINT NOT NULL);
CREATE INDEX IF NOT EXISTS device_requests_expiry ON device_requests (expiry);
CREATE INDEX IF NOT EXISTS refresh_tokens_user ON refresh_tokens (
    (data::jsonb -> 'identity' ->> 'connector_id'), (data::jsonb -> 'identity' ->> 'user_id'));
CREATE TABLE IF NOT EXISTS clients (id TEXT PRIMARY KEY, data TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS passwords (id TEXT PRIMARY KEY, data TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS sessions (id TEXT PRIMARY KEY, data TEXT NOT NULL, expiry BIGINT NOT NULL);
CREATE INDEX IF NOT EXISTS sessions_expiry ON sessions (expiry);
CREATE TABLE IF NOT EXISTS revocations (
    seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, kind TEXT NOT NULL, value TEXT NOT NULL,
    revoked_at BIGINT NOT NULL);
CREATE INDEX IF NOT EXISTS revocations_revoked_at ON revocations (revoked_at);
COMMIT;
"#;

/// PostgreSQL backend.
pub struct Postgres {
    pool: PgPool,
}

fn backend(e: impl std::fmt::Display) -> StorageError {
    StorageError::Backend(e.to_string())
}

/// A sqlx error: the server unreachable, going away or refusing connections for now is `Unavailable` (the
/// caller answers 503 and the next request may succeed); anything else is a `Backend` failure.
fn pg(e: sqlx::Error) -> StorageError {
    let unavailable = match &e {
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::WorkerCrashed => true,
        // SQLSTATE class 08 (connection exception), 57P01-57P03 (shutdown, crash, cannot connect now), 53300
        // (too many connections).
        sqlx::Error::Database(db) => db
            .code()
            .is_some_and(|c| c.starts_with("08") || matches!(c.as_ref(), "57P01" | "57P02" | "57P03" | "53300")),
        _ => false,
    };
    if unavailable {
        StorageError::Unavailable(e.to_string())
    } else {
        backend(e)
    }
}

fn map_insert(e: sqlx::Error) -> StorageError {
    match &e {
        sqlx::Error::Database(db) if db.is_unique_violation() => StorageError::AlreadyExists,
        _ => pg(e),
    }
}

fn encode(v: &impl Serialize) -> Result<String, StorageError> {
    serde_json::to_string(v).map_err(backend)
}

fn decode<T: DeserializeOwned>(s: &str) -> Result<T, StorageError> {
    serde_json::from_str(s).map_err(backend)
}

impl Postgres {
    /// Connects with the configuration's settings and applies the schema.
    pub async fn open(c: &PostgresConfig) -> Result<Self, StorageError> {
        let mut opts = PgConnectOptions::new()
            .host(&c.host)
            .port(c.port)
            .database(&c.database)
            .username(&c.user)
            .ssl_mode(PgSslMode::from_str(&c.ssl_mode).map_err(backend)?);
        if let Some(p) = &c.password {
            opts = opts.password(p);
        }
        if let Some(ca) = &c.ssl_ca_file {
            opts = opts.ssl_root_cert(ca);
        }
        if let (Some(cert), Some(key)) = (&c.ssl_cert_file, &c.ssl_key_file) {
            opts = opts.ssl_client_cert(cert).ssl_client_key(key);
        }
        let mut pool = Self::pool_options(c.max_open_conns);
        if let Some(t) = c.connection_timeout {
            pool = pool.acquire_timeout(t);
        }
        if let Some(t) = c.conn_max_lifetime {
            pool = pool.max_lifetime(t);
        }
        Self::connect_pool(opts, pool).await
    }

    /// Connects with explicit options (tests use a schema per test through `options`).
    pub async fn connect(opts: PgConnectOptions, max_connections: u32) -> Result<Self, StorageError> {
        Self::connect_pool(opts, Self::pool_options(max_connections)).await
    }

    fn pool_options(max_connections: u32) -> PgPoolOptions {
        PgPoolOptions::new()
            .max_connections(max_connections)
            // Short: while the database is down a request should fail (503) well before a gateway's callout
            // timeout (5 s in the filter), not hang.
            .acquire_timeout(Duration::from_secs(3))
    }

    async fn connect_pool(opts: PgConnectOptions, pool: PgPoolOptions) -> Result<Self, StorageError> {
        let pool = pool.connect_with(opts).await.map_err(pg)?;
        sqlx::raw_sql(SCHEMA).execute(&pool).await.map_err(pg)?;
        Ok(Self { pool })
    }

    async fn begin(&self) -> Result<Transaction<'static, Pg>, StorageError> {
        self.pool.begin().await.map_err(pg)
    }

    async fn get_doc<T: DeserializeOwned>(&self, table: &str, id: &str) -> Result<T, StorageError> {
        let row = sqlx::query(&format!("SELECT data FROM {table} WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(pg)?
            .ok_or(StorageError::NotFound)?;
        decode(row.get::<&str, _>(0))
    }

    /// Locks the row, runs `f` on it and stores the result, in one transaction.
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
        let mut tx = self.begin().await?;
        let row = sqlx::query(&format!("SELECT data FROM {table} WHERE id = $1 FOR UPDATE"))
            .bind(id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(pg)?
            .ok_or(StorageError::NotFound)?;
        let new = f(decode(row.get::<&str, _>(0))?)?;
        sqlx::query(&format!("UPDATE {table} SET data = $1, expiry = $2 WHERE id = $3"))
            .bind(encode(&new)?)
            .bind(expiry_of(&new))
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(pg)?;
        tx.commit().await.map_err(pg)?;
        Ok(new)
    }

    async fn insert_doc(&self, table: &str, id: &str, data: String, expiry: i64) -> Result<(), StorageError> {
        sqlx::query(&format!("INSERT INTO {table} (id, data, expiry) VALUES ($1, $2, $3)"))
            .bind(id)
            .bind(data)
            .bind(expiry)
            .execute(&self.pool)
            .await
            .map_err(map_insert)?;
        Ok(())
    }

    /// Locks `name` for the rest of the transaction, for rows that may not exist yet.
    async fn advisory_lock(tx: &mut Transaction<'static, Pg>, name: &str) -> Result<(), StorageError> {
        sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
            .bind(name)
            .execute(&mut **tx)
            .await
            .map_err(pg)?;
        Ok(())
    }

    /// Stores a record of a table without expiry (clients, passwords).
    async fn insert_record(&self, table: &str, id: &str, data: String) -> Result<(), StorageError> {
        sqlx::query(&format!("INSERT INTO {table} (id, data) VALUES ($1, $2)"))
            .bind(id)
            .bind(data)
            .execute(&self.pool)
            .await
            .map_err(map_insert)?;
        Ok(())
    }

    /// Locks a record of a table without expiry, runs `f` on it and stores the result, in one transaction.
    async fn update_record<T>(&self, table: &str, id: &str, f: Update<T>) -> Result<T, StorageError>
    where
        T: Serialize + DeserializeOwned,
    {
        let mut tx = self.begin().await?;
        let row = sqlx::query(&format!("SELECT data FROM {table} WHERE id = $1 FOR UPDATE"))
            .bind(id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(pg)?
            .ok_or(StorageError::NotFound)?;
        let new = f(decode(row.get::<&str, _>(0))?)?;
        sqlx::query(&format!("UPDATE {table} SET data = $1 WHERE id = $2"))
            .bind(encode(&new)?)
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(pg)?;
        tx.commit().await.map_err(pg)?;
        Ok(new)
    }

    async fn delete_record(&self, table: &str, id: &str) -> Result<(), StorageError> {
        let done = sqlx::query(&format!("DELETE FROM {table} WHERE id = $1"))
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(pg)?;
        match done.rows_affected() {
            0 => Err(StorageError::NotFound),
            _ => Ok(()),
        }
    }

    /// Every document of `table`, by id.
    async fn list_records<T: DeserializeOwned>(&self, table: &str) -> Result<Vec<T>, StorageError> {
        let rows =
            sqlx::query(&format!("SELECT data FROM {table} ORDER BY id")).fetch_all(&self.pool).await.map_err(pg)?;
        rows.iter().map(|r| decode(r.get::<&str, _>(0))).collect()
    }

    async fn collect(&self, table: &str, now: i64, batch: u32) -> Result<u64, StorageError> {
        let done = sqlx::query(&format!(
            "DELETE FROM {table} WHERE ctid IN (SELECT ctid FROM {table} WHERE expiry < $1 LIMIT $2)"
        ))
        .bind(now)
        .bind(i64::from(batch))
        .execute(&self.pool)
        .await
        .map_err(pg)?;
        Ok(done.rows_affected())
    }
}

#[async_trait]
impl Storage for Postgres {
    async fn create_auth_request(&self, r: AuthRequest) -> Result<(), StorageError> {
        self.insert_doc("auth_requests", &r.id, encode(&r)?, r.expiry).await
    }

    async fn get_auth_request(&self, id: &str) -> Result<AuthRequest, StorageError> {
        self.get_doc("auth_requests", id).await
    }

    async fn delete_auth_request(&self, id: &str) -> Result<(), StorageError> {
        let done =
            sqlx::query("DELETE FROM auth_requests WHERE id = $1").bind(id).execute(&self.pool).await.map_err(pg)?;
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
        sqlx::query("INSERT INTO refresh_tokens (id, family_id, data, expiry) VALUES ($1, $2, $3, $4)")
            .bind(&t.id)
            .bind(&t.family_id)
            .bind(encode(&t)?)
            .bind(t.expiry)
            .execute(&self.pool)
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
        let mut tx = self.begin().await?;
        let row = sqlx::query("SELECT data FROM refresh_tokens WHERE id = $1 FOR UPDATE")
            .bind(old_id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(pg)?
            .ok_or(StorageError::NotFound)?;
        let mut old: RefreshToken = decode(row.get::<&str, _>(0))?;
        if old.rotated_at.is_some() {
            return Err(StorageError::Conflict);
        }
        old.rotated_at = Some(now);
        old.successor = Some(successor.id.clone());
        sqlx::query("UPDATE refresh_tokens SET data = $1 WHERE id = $2")
            .bind(encode(&old)?)
            .bind(old_id)
            .execute(&mut *tx)
            .await
            .map_err(pg)?;
        sqlx::query("INSERT INTO refresh_tokens (id, family_id, data, expiry) VALUES ($1, $2, $3, $4)")
            .bind(&successor.id)
            .bind(&successor.family_id)
            .bind(encode(&successor)?)
            .bind(successor.expiry)
            .execute(&mut *tx)
            .await
            .map_err(map_insert)?;
        tx.commit().await.map_err(pg)
    }

    async fn list_refresh_family(&self, family_id: &str) -> Result<Vec<RefreshToken>, StorageError> {
        let rows = sqlx::query("SELECT data FROM refresh_tokens WHERE family_id = $1")
            .bind(family_id)
            .fetch_all(&self.pool)
            .await
            .map_err(pg)?;
        let mut v = rows.iter().map(|r| decode::<RefreshToken>(r.get::<&str, _>(0))).collect::<Result<Vec<_>, _>>()?;
        v.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        Ok(v)
    }

    async fn delete_refresh_family(&self, family_id: &str) -> Result<u64, StorageError> {
        let done = sqlx::query("DELETE FROM refresh_tokens WHERE family_id = $1")
            .bind(family_id)
            .execute(&self.pool)
            .await
            .map_err(pg)?;
        Ok(done.rows_affected())
    }

    async fn get_keys(&self) -> Result<Keys, StorageError> {
        let row = sqlx::query("SELECT data FROM keys WHERE id = 1")
            .fetch_optional(&self.pool)
            .await
            .map_err(pg)?
            .ok_or(StorageError::NotFound)?;
        decode(row.get::<&str, _>(0))
    }

    async fn update_keys(&self, f: Update<Option<Keys>>) -> Result<Keys, StorageError> {
        let mut tx = self.begin().await?;
        Self::advisory_lock(&mut tx, "tokengate.keys").await?;
        let current: Option<Keys> =
            match sqlx::query("SELECT data FROM keys WHERE id = 1").fetch_optional(&mut *tx).await.map_err(pg)? {
                Some(row) => Some(decode(row.get::<&str, _>(0))?),
                None => None,
            };
        let Some(new) = f(current.clone())? else {
            return current.ok_or(StorageError::NotFound);
        };
        sqlx::query("INSERT INTO keys (id, data) VALUES (1, $1) ON CONFLICT (id) DO UPDATE SET data = excluded.data")
            .bind(encode(&new)?)
            .execute(&mut *tx)
            .await
            .map_err(pg)?;
        tx.commit().await.map_err(pg)?;
        Ok(new)
    }

    async fn get_or_create_secret(&self, name: &str, candidate: Vec<u8>) -> Result<Vec<u8>, StorageError> {
        sqlx::query("INSERT INTO secrets (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING")
            .bind(name)
            .bind(&candidate)
            .execute(&self.pool)
            .await
            .map_err(pg)?;
        let row = sqlx::query("SELECT value FROM secrets WHERE name = $1")
            .bind(name)
            .fetch_one(&self.pool)
            .await
            .map_err(pg)?;
        Ok(row.get::<Vec<u8>, _>(0))
    }

    async fn get_bucket(&self, key: &str) -> Result<Option<Bucket>, StorageError> {
        let row = sqlx::query("SELECT data FROM buckets WHERE id = $1")
            .bind(key)
            .fetch_optional(&self.pool)
            .await
            .map_err(pg)?;
        row.map(|r| decode(r.get::<&str, _>(0))).transpose()
    }

    async fn update_bucket(&self, key: &str, f: Update<Option<Bucket>>) -> Result<Option<Bucket>, StorageError> {
        let mut tx = self.begin().await?;
        Self::advisory_lock(&mut tx, &format!("tokengate.bucket.{key}")).await?;
        let current = match sqlx::query("SELECT data FROM buckets WHERE id = $1")
            .bind(key)
            .fetch_optional(&mut *tx)
            .await
            .map_err(pg)?
        {
            Some(row) => Some(decode(row.get::<&str, _>(0))?),
            None => None,
        };
        let new = f(current)?;
        match &new {
            Some(b) => sqlx::query(
                "INSERT INTO buckets (id, data, expiry) VALUES ($1, $2, $3) \
                 ON CONFLICT (id) DO UPDATE SET data = excluded.data, expiry = excluded.expiry",
            )
            .bind(key)
            .bind(encode(b)?)
            .bind(b.expiry),
            None => sqlx::query("DELETE FROM buckets WHERE id = $1").bind(key),
        }
        .execute(&mut *tx)
        .await
        .map_err(pg)?;
        tx.commit().await.map_err(pg)?;
        Ok(new)
    }

    async fn create_device_request(&self, r: DeviceRequest) -> Result<(), StorageError> {
        sqlx::query("INSERT INTO device_requests (id, user_code, data, expiry) VALUES ($1, $2, $3, $4)")
            .bind(&r.device_code)
            .bind(&r.user_code)
            .bind(encode(&r)?)
            .bind(r.expiry)
            .execute(&self.pool)
            .await
            .map_err(map_insert)?;
        Ok(())
    }

    async fn get_device_request(&self, device_code: &str) -> Result<DeviceRequest, StorageError> {
        self.get_doc("device_requests", device_code).await
    }

    async fn get_device_request_by_user_code(&self, user_code: &str) -> Result<DeviceRequest, StorageError> {
        let row = sqlx::query("SELECT data FROM device_requests WHERE user_code = $1")
            .bind(user_code)
            .fetch_optional(&self.pool)
            .await
            .map_err(pg)?
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

    async fn list_user_refresh_tokens(
        &self,
        connector_id: &str,
        user_id: &str,
    ) -> Result<Vec<RefreshToken>, StorageError> {
        // The same expressions as the `refresh_tokens_user` index, so the query uses it.
        let rows = sqlx::query(
            "SELECT data FROM refresh_tokens WHERE (data::jsonb -> 'identity' ->> 'connector_id') = $1 \
             AND (data::jsonb -> 'identity' ->> 'user_id') = $2",
        )
        .bind(connector_id)
        .bind(user_id)
        .fetch_all(&self.pool)
        .await
        .map_err(pg)?;
        let mut v = rows.iter().map(|r| decode::<RefreshToken>(r.get::<&str, _>(0))).collect::<Result<Vec<_>, _>>()?;
        v.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        Ok(v)
    }

    async fn list_refresh_tokens(&self) -> Result<Vec<RefreshToken>, StorageError> {
        let rows = sqlx::query("SELECT data FROM refresh_tokens").fetch_all(&self.pool).await.map_err(pg)?;
        let mut v = rows.iter().map(|r| decode::<RefreshToken>(r.get::<&str, _>(0))).collect::<Result<Vec<_>, _>>()?;
        v.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        Ok(v)
    }

    async fn create_client(&self, c: Client) -> Result<(), StorageError> {
        self.insert_record("clients", &c.id, encode(&c)?).await
    }

    async fn get_client(&self, id: &str) -> Result<Client, StorageError> {
        self.get_doc("clients", id).await
    }

    async fn update_client(&self, id: &str, f: Update<Client>) -> Result<Client, StorageError> {
        self.update_record("clients", id, keep_key(|c: &Client| c.id.clone(), f)).await
    }

    async fn delete_client(&self, id: &str) -> Result<(), StorageError> {
        self.delete_record("clients", id).await
    }

    async fn list_clients(&self) -> Result<Vec<Client>, StorageError> {
        self.list_records("clients").await
    }

    async fn create_password(&self, p: Password) -> Result<(), StorageError> {
        self.insert_record("passwords", &password_key(&p.email), encode(&p)?).await
    }

    async fn get_password(&self, email: &str) -> Result<Password, StorageError> {
        self.get_doc("passwords", &password_key(email)).await
    }

    async fn update_password(&self, email: &str, f: Update<Password>) -> Result<Password, StorageError> {
        let f = keep_key(|p: &Password| password_key(&p.email), f);
        self.update_record("passwords", &password_key(email), f).await
    }

    async fn delete_password(&self, email: &str) -> Result<(), StorageError> {
        self.delete_record("passwords", &password_key(email)).await
    }

    async fn list_passwords(&self) -> Result<Vec<Password>, StorageError> {
        self.list_records("passwords").await
    }

    async fn create_session(&self, s: Session) -> Result<(), StorageError> {
        self.insert_doc("sessions", &s.id, encode(&s)?, s.expiry).await
    }

    async fn get_session(&self, id: &str) -> Result<Session, StorageError> {
        self.get_doc("sessions", id).await
    }

    async fn update_session(&self, id: &str, f: Update<Session>) -> Result<Session, StorageError> {
        self.update_doc("sessions", id, |s: &Session| s.expiry, keep_key(|s: &Session| s.id.clone(), f)).await
    }

    async fn delete_session(&self, id: &str) -> Result<(), StorageError> {
        self.delete_record("sessions", id).await
    }

    async fn list_sessions(&self) -> Result<Vec<Session>, StorageError> {
        self.list_records("sessions").await
    }

    async fn create_revocation(&self, kind: RevocationKind, value: &str, revoked_at: i64) -> Result<i64, StorageError> {
        // `seq` comes from an identity column, assigned at insert but visible at commit: two replicas
        // inserting at once could commit 11 before 10, and a feed reader between the two commits would move
        // its cursor past 10 for good. Inserts take turns (revocations are rare), so `seq` order is commit
        // order.
        let mut tx = self.pool.begin().await.map_err(pg)?;
        Self::advisory_lock(&mut tx, "tokengate.revocations").await?;
        let row = sqlx::query("INSERT INTO revocations (kind, value, revoked_at) VALUES ($1, $2, $3) RETURNING seq")
            .bind(kind.as_str())
            .bind(value)
            .bind(revoked_at)
            .fetch_one(&mut *tx)
            .await
            .map_err(pg)?;
        tx.commit().await.map_err(pg)?;
        Ok(row.get::<i64, _>(0))
    }

    async fn list_revocations_after(&self, after: i64, limit: u32) -> Result<Vec<Revocation>, StorageError> {
        let rows =
            sqlx::query("SELECT seq, kind, value, revoked_at FROM revocations WHERE seq > $1 ORDER BY seq LIMIT $2")
                .bind(after)
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await
                .map_err(pg)?;
        rows.iter()
            .map(|r| {
                let kind: &str = r.get(1);
                let kind = RevocationKind::parse(kind)
                    .ok_or_else(|| StorageError::Backend(format!("revocation kind {kind:?}")))?;
                Ok(Revocation { seq: r.get(0), kind, value: r.get(2), revoked_at: r.get(3) })
            })
            .collect()
    }

    async fn get_revocation_bounds(&self) -> Result<Option<(i64, i64)>, StorageError> {
        let row = sqlx::query("SELECT min(seq), max(seq) FROM revocations").fetch_one(&self.pool).await.map_err(pg)?;
        Ok(row.get::<Option<i64>, _>(0).zip(row.get::<Option<i64>, _>(1)))
    }

    async fn delete_revocations_before(&self, cutoff: i64, batch: u32) -> Result<u64, StorageError> {
        let done = sqlx::query(
            "DELETE FROM revocations WHERE seq IN (SELECT seq FROM revocations WHERE revoked_at < $1 \
             AND seq < (SELECT max(seq) FROM revocations) LIMIT $2)",
        )
        .bind(cutoff)
        .bind(i64::from(batch))
        .execute(&self.pool)
        .await
        .map_err(pg)?;
        Ok(done.rows_affected())
    }

    async fn garbage_collect(&self, now: i64, batch: u32) -> Result<GcResult, StorageError> {
        Ok(GcResult {
            auth_requests: self.collect("auth_requests", now, batch).await?,
            auth_codes: self.collect("auth_codes", now, batch).await?,
            refresh_tokens: self.collect("refresh_tokens", now, batch).await?,
            buckets: self.collect("buckets", now, batch).await?,
            device_requests: self.collect("device_requests", now, batch).await?,
            sessions: self.collect("sessions", now, batch).await?,
        })
    }
}

#[cfg(test)]
mod tests {
    /// A fresh schema on the server `make test` starts (`scripts/with-postgres.sh`), so cases never see
    /// each other's rows.
    pub(crate) async fn fresh() -> super::Postgres {
        use std::str::FromStr;
        let url = std::env::var("TOKENGATE_TEST_POSTGRES").expect(
            "TOKENGATE_TEST_POSTGRES: run through `make test`, which starts a PostgreSQL server for these tests",
        );
        let admin = sqlx::PgPool::connect(&url).await.unwrap();
        let schema = format!("t_{}", crate::token::random_b64::<9>().to_ascii_lowercase().replace(['-', '_'], "x"));
        sqlx::query(&format!("CREATE SCHEMA {schema}")).execute(&admin).await.unwrap();
        let opts =
            sqlx::postgres::PgConnectOptions::from_str(&url).unwrap().options([("search_path", schema.as_str())]);
        super::Postgres::connect(opts, 8).await.unwrap()
    }

    crate::storage::conformance::suite!(ignore = "needs PostgreSQL: `make test` provides one", || async {
        fresh().await
    });
}
