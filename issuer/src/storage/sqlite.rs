//! SQLite storage, the embedded default: everything survives a restart. Records are JSON documents beside
//! the columns that queries need (id, family, expiry).
//!
//! SQLite has one writer at a time, and a durable commit costs an fsync (milliseconds on virtual disks).
//! So every write goes to one writer task that owns the only write connection and commits in groups: it
//! takes whatever writes are waiting, runs each inside its own savepoint of one `BEGIN IMMEDIATE`
//! transaction (a write that fails, say a rotation that lost its race, rolls back alone), commits once,
//! and only then answers each caller. Concurrent refreshes share one fsync instead of queueing for one each,
//! and no write ever has to upgrade a read lock against another writer. Reads use a separate pool and, in
//! WAL mode, never block.

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::time::Duration;

use async_trait::async_trait;
use serde::{de::DeserializeOwned, Serialize};
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{ConnectOptions, Executor, Row, SqlitePool};
use tokio::sync::{mpsc, oneshot};

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
    jobs: mpsc::Sender<Job>,
}

/// Writes waiting longer than this many others go in the next group.
const MAX_GROUP: usize = 256;

type BoxFuture<'c, T> = Pin<Box<dyn Future<Output = T> + Send + 'c>>;

/// One write, run by the writer task on its connection inside the group's transaction.
type Job = Box<dyn for<'c> FnOnce(&'c mut SqliteConnection) -> BoxFuture<'c, Done> + Send>;

/// What a write leaves behind: whether its changes stay, and how to hand its result over once the group
/// is committed (`None`) or has failed (`Some`).
struct Done {
    keep: bool,
    deliver: Box<dyn FnOnce(Option<StorageError>) + Send>,
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

/// The writer task: group commit (see the module documentation). Jobs it cannot run are dropped, which
/// their callers see as a backend error; the cause is logged here.
async fn writer(mut conn: SqliteConnection, mut jobs: mpsc::Receiver<Job>) {
    let mut group = Vec::with_capacity(MAX_GROUP);
    while jobs.recv_many(&mut group, MAX_GROUP).await > 0 {
        if let Err(e) = conn.execute("BEGIN IMMEDIATE").await {
            tracing::error!(error = %e, "SQLite: cannot begin a write transaction");
            group.clear();
            continue;
        }
        let mut done = Vec::with_capacity(group.len());
        let mut broken = None;
        for job in group.drain(..) {
            if broken.is_some() {
                continue;
            }
            if let Err(e) = conn.execute("SAVEPOINT op").await {
                broken = Some(e.to_string());
                continue;
            }
            let d = job(&mut conn).await;
            let end = if d.keep { "RELEASE op" } else { "ROLLBACK TO op; RELEASE op" };
            if let Err(e) = conn.execute(end).await {
                broken = Some(e.to_string());
            }
            done.push(d);
        }
        let committed = match broken {
            None => conn.execute("COMMIT").await.map(|_| ()).map_err(|e| e.to_string()),
            Some(e) => Err(e),
        };
        match committed {
            Ok(()) => done.into_iter().for_each(|d| (d.deliver)(None)),
            Err(e) => {
                tracing::error!(error = %e, writes = done.len(), "SQLite: a group of writes failed and was rolled back");
                let _ = conn.execute("ROLLBACK").await;
                done.into_iter().for_each(|d| (d.deliver)(Some(backend(&e))));
            }
        }
    }
}

impl Sqlite {
    /// Opens (creating if needed) the database file and its folder, applies the schema, and starts the
    /// writer task (so it must be called inside a Tokio runtime).
    pub async fn open(path: &Path) -> Result<Self, StorageError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| backend(format!("creating {}: {e}", dir.display())))?;
        }
        let opts = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // Every commit is on disk before anyone is told it happened; group commit pays for it.
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true);
        let mut conn = opts.connect().await.map_err(backend)?;
        sqlx::raw_sql(SCHEMA).execute(&mut conn).await.map_err(backend)?;
        let read =
            SqlitePoolOptions::new().max_connections(4).connect_with(opts.read_only(true)).await.map_err(backend)?;
        let (jobs, queue) = mpsc::channel(4 * MAX_GROUP);
        tokio::spawn(writer(conn, queue));
        Ok(Self { read, jobs })
    }

    /// Runs `op` in the writer's next group and returns its result once that group is committed.
    async fn write<T, F>(&self, op: F) -> Result<T, StorageError>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c mut SqliteConnection) -> BoxFuture<'c, Result<T, StorageError>> + Send + 'static,
    {
        let (answer, result) = oneshot::channel();
        let job: Job = Box::new(move |conn| {
            Box::pin(async move {
                let r = op(conn).await;
                Done {
                    keep: r.is_ok(),
                    deliver: Box::new(move |failed: Option<StorageError>| {
                        let _ = answer.send(match failed {
                            Some(e) => Err(e),
                            None => r,
                        });
                    }),
                }
            })
        });
        let stopped = || backend("the SQLite writer is not running");
        self.jobs.send(job).await.map_err(|_| stopped())?;
        result.await.map_err(|_| stopped())?
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

    /// Runs `f` on the current document and stores the result, in one write.
    async fn update_doc<T>(
        &self,
        table: &'static str,
        id: &str,
        expiry_of: fn(&T) -> i64,
        f: Update<T>,
    ) -> Result<T, StorageError>
    where
        T: Serialize + DeserializeOwned + Send + 'static,
    {
        let id = id.to_owned();
        self.write(move |conn: &mut SqliteConnection| {
            Box::pin(async move {
                let row = sqlx::query(&format!("SELECT data FROM {table} WHERE id = ?"))
                    .bind(&id)
                    .fetch_optional(&mut *conn)
                    .await
                    .map_err(backend)?
                    .ok_or(StorageError::NotFound)?;
                let new = f(decode(row.get::<&str, _>(0))?)?;
                sqlx::query(&format!("UPDATE {table} SET data = ?, expiry = ? WHERE id = ?"))
                    .bind(encode(&new)?)
                    .bind(expiry_of(&new))
                    .bind(&id)
                    .execute(&mut *conn)
                    .await
                    .map_err(backend)?;
                Ok(new)
            })
        })
        .await
    }

    /// One statement as one write; returns the rows it changed.
    async fn execute(&self, sql: String, binds: Vec<Bind>) -> Result<u64, StorageError> {
        self.write(move |conn: &mut SqliteConnection| {
            Box::pin(async move {
                let mut q = sqlx::query(&sql);
                for b in binds {
                    q = match b {
                        Bind::Text(s) => q.bind(s),
                        Bind::Int(i) => q.bind(i),
                    };
                }
                Ok(q.execute(&mut *conn).await.map_err(map_insert)?.rows_affected())
            })
        })
        .await
    }

    async fn insert_doc(&self, table: &str, id: &str, data: String, expiry: i64) -> Result<(), StorageError> {
        let sql = format!("INSERT INTO {table} (id, data, expiry) VALUES (?, ?, ?)");
        self.execute(sql, vec![Bind::Text(id.to_owned()), Bind::Text(data), Bind::Int(expiry)]).await.map(|_| ())
    }

    async fn collect(&self, table: &str, now: i64, batch: u32) -> Result<u64, StorageError> {
        // Bounded: a long backlog is cleared over several passes without holding the write lock for long.
        let sql = format!("DELETE FROM {table} WHERE rowid IN (SELECT rowid FROM {table} WHERE expiry < ? LIMIT ?)");
        self.execute(sql, vec![Bind::Int(now), Bind::Int(i64::from(batch))]).await
    }
}

/// A bound parameter of [`Sqlite::execute`].
enum Bind {
    Text(String),
    Int(i64),
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
        match self.execute("DELETE FROM auth_requests WHERE id = ?".into(), vec![Bind::Text(id.to_owned())]).await? {
            0 => Err(StorageError::NotFound),
            _ => Ok(()),
        }
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
        let sql = "INSERT INTO refresh_tokens (id, family_id, data, expiry) VALUES (?, ?, ?, ?)".to_owned();
        let binds = vec![
            Bind::Text(t.id.clone()),
            Bind::Text(t.family_id.clone()),
            Bind::Text(encode(&t)?),
            Bind::Int(t.expiry),
        ];
        self.execute(sql, binds).await.map(|_| ())
    }

    async fn get_refresh_token(&self, id: &str) -> Result<RefreshToken, StorageError> {
        self.get_doc("refresh_tokens", id).await
    }

    async fn update_refresh_token(&self, id: &str, f: Update<RefreshToken>) -> Result<RefreshToken, StorageError> {
        self.update_doc("refresh_tokens", id, |t: &RefreshToken| t.expiry, f).await
    }

    async fn rotate_refresh_token(&self, old_id: &str, now: i64, successor: RefreshToken) -> Result<(), StorageError> {
        let old_id = old_id.to_owned();
        self.write(move |conn: &mut SqliteConnection| {
            Box::pin(async move {
                let row = sqlx::query("SELECT data FROM refresh_tokens WHERE id = ?")
                    .bind(&old_id)
                    .fetch_optional(&mut *conn)
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
                    .bind(&old_id)
                    .execute(&mut *conn)
                    .await
                    .map_err(backend)?;
                sqlx::query("INSERT INTO refresh_tokens (id, family_id, data, expiry) VALUES (?, ?, ?, ?)")
                    .bind(&successor.id)
                    .bind(&successor.family_id)
                    .bind(encode(&successor)?)
                    .bind(successor.expiry)
                    .execute(&mut *conn)
                    .await
                    .map_err(map_insert)?;
                Ok(())
            })
        })
        .await
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
        self.execute("DELETE FROM refresh_tokens WHERE family_id = ?".into(), vec![Bind::Text(family_id.to_owned())])
            .await
    }

    async fn get_keys(&self) -> Result<Keys, StorageError> {
        self.get_doc("keys", "1").await
    }

    async fn update_keys(&self, f: Update<Option<Keys>>) -> Result<Keys, StorageError> {
        self.write(move |conn: &mut SqliteConnection| {
            Box::pin(async move {
                let current: Option<Keys> = match sqlx::query("SELECT data FROM keys WHERE id = 1")
                    .fetch_optional(&mut *conn)
                    .await
                    .map_err(backend)?
                {
                    Some(row) => Some(decode(row.get::<&str, _>(0))?),
                    None => None,
                };
                let Some(new) = f(current.clone())? else {
                    return current.ok_or(StorageError::NotFound);
                };
                sqlx::query(
                    "INSERT INTO keys (id, data) VALUES (1, ?) ON CONFLICT (id) DO UPDATE SET data = excluded.data",
                )
                .bind(encode(&new)?)
                .execute(&mut *conn)
                .await
                .map_err(backend)?;
                Ok(new)
            })
        })
        .await
    }

    async fn get_or_create_secret(&self, name: &str, candidate: Vec<u8>) -> Result<Vec<u8>, StorageError> {
        let name = name.to_owned();
        self.write(move |conn: &mut SqliteConnection| {
            Box::pin(async move {
                sqlx::query("INSERT INTO secrets (name, value) VALUES (?, ?) ON CONFLICT (name) DO NOTHING")
                    .bind(&name)
                    .bind(&candidate)
                    .execute(&mut *conn)
                    .await
                    .map_err(backend)?;
                let row = sqlx::query("SELECT value FROM secrets WHERE name = ?")
                    .bind(&name)
                    .fetch_one(&mut *conn)
                    .await
                    .map_err(backend)?;
                Ok(row.get::<Vec<u8>, _>(0))
            })
        })
        .await
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
        let key = key.to_owned();
        self.write(move |conn: &mut SqliteConnection| {
            Box::pin(async move {
                let current = match sqlx::query("SELECT data FROM buckets WHERE key = ?")
                    .bind(&key)
                    .fetch_optional(&mut *conn)
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
                    .bind(&key)
                    .bind(encode(b)?)
                    .bind(b.expiry),
                    None => sqlx::query("DELETE FROM buckets WHERE key = ?").bind(&key),
                }
                .execute(&mut *conn)
                .await
                .map_err(backend)?;
                Ok(new)
            })
        })
        .await
    }

    async fn create_device_request(&self, r: DeviceRequest) -> Result<(), StorageError> {
        let sql = "INSERT INTO device_requests (id, user_code, data, expiry) VALUES (?, ?, ?, ?)".to_owned();
        let binds = vec![
            Bind::Text(r.device_code.clone()),
            Bind::Text(r.user_code.clone()),
            Bind::Text(encode(&r)?),
            Bind::Int(r.expiry),
        ];
        self.execute(sql, binds).await.map(|_| ())
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

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_writes_commit_in_groups_and_a_failing_write_rolls_back_alone() {
        use crate::storage::{conformance::refresh_token, Storage, StorageError};
        let dir = tempfile::tempdir().unwrap();
        let store = std::sync::Arc::new(super::Sqlite::open(&dir.path().join("issuer.db")).await.unwrap());
        store.create_refresh_token(refresh_token("dup", "f", 10)).await.unwrap();
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..64 {
            let s = store.clone();
            // Every eighth write collides with an existing id: it fails, the others in its group stay.
            let id = if i % 8 == 0 { "dup".to_owned() } else { format!("t{i}") };
            tasks.spawn(async move { (i, s.create_refresh_token(refresh_token(&id, "f", 10)).await) });
        }
        while let Some(r) = tasks.join_next().await {
            let (i, result) = r.unwrap();
            if i % 8 == 0 {
                assert!(matches!(result, Err(StorageError::AlreadyExists)), "{i}: {result:?}");
            } else {
                assert!(result.is_ok(), "{i}: {result:?}");
            }
        }
        assert_eq!(store.list_refresh_family("f").await.unwrap().len(), 1 + 56);
    }
}
