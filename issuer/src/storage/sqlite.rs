//! SQLite storage, the embedded default: everything survives a restart. Records are JSON documents beside
//! the columns that queries need (id, family, expiry).
//!
//! SQLite has one writer at a time, and a durable commit costs an fsync (milliseconds on virtual disks).
//! So every write goes to one writer thread that owns the only write connection and commits in groups: it
//! takes whatever writes are waiting, runs each inside its own savepoint of one `BEGIN IMMEDIATE`
//! transaction (a write that fails, say a rotation that lost its race, rolls back alone), commits once,
//! and only then answers each caller. Concurrent refreshes share one fsync instead of queueing for one each,
//! and no write ever has to upgrade a read lock against another writer. The thread calls SQLite directly,
//! so a group costs one hand-over in and one answer out, not a thread hop per statement.
//!
//! Reads are point lookups on an index, microseconds from the page cache, and in WAL mode they never wait
//! for the writer; they run on the calling task's thread over a small pool of read-only connections
//! rather than paying a hand-over to another thread that costs more than the lookup.

use std::path::{Path, PathBuf};
use std::sync::{mpsc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::types::Value;
use rusqlite::{ffi, params, params_from_iter, Connection, OpenFlags, OptionalExtension};
use serde::{de::DeserializeOwned, Serialize};
use tokio::sync::oneshot;

use super::{
    keep_key, password_key, AuthCode, AuthRequest, Bucket, Client, DeviceRequest, GcResult, Password, RefreshToken,
    Revocation, RevocationKind, Session, Storage, StorageError, Update,
};
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
CREATE INDEX IF NOT EXISTS refresh_tokens_user ON refresh_tokens (
    json_extract(data, '$.identity.connector_id'), json_extract(data, '$.identity.user_id'));
CREATE TABLE IF NOT EXISTS clients (id TEXT PRIMARY KEY, data TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS passwords (id TEXT PRIMARY KEY, data TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS sessions (id TEXT PRIMARY KEY, data TEXT NOT NULL, expiry INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS sessions_expiry ON sessions (expiry);
CREATE TABLE IF NOT EXISTS revocations (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, kind TEXT NOT NULL, value TEXT NOT NULL, revoked_at INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS revocations_revoked_at ON revocations (revoked_at);
"#;

/// SQLite backend.
pub struct Sqlite {
    path: PathBuf,
    /// Idle read-only connections; a read takes one (or opens one) and puts it back.
    readers: Mutex<Vec<Connection>>,
    jobs: mpsc::Sender<Job>,
}

/// Writes waiting longer than this many others go in the next group.
const MAX_GROUP: usize = 256;

/// Idle read connections kept open.
const MAX_IDLE_READERS: usize = 8;

/// How long a statement waits for a lock (only a checkpoint or a second process can hold one).
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// One write, run by the writer thread on its connection inside the group's transaction.
type Job = Box<dyn FnOnce(&Connection) -> Done + Send>;

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

/// A duplicate key is `AlreadyExists`; any other failure (another constraint included) is a backend error.
fn map_insert(e: rusqlite::Error) -> StorageError {
    match &e {
        rusqlite::Error::SqliteFailure(f, _)
            if matches!(f.extended_code, ffi::SQLITE_CONSTRAINT_PRIMARYKEY | ffi::SQLITE_CONSTRAINT_UNIQUE) =>
        {
            StorageError::AlreadyExists
        }
        _ => backend(e),
    }
}

/// The writer thread: group commit (see the module documentation). It ends when the last sender is gone.
fn writer(conn: Connection, jobs: mpsc::Receiver<Job>) {
    let mut group = Vec::with_capacity(MAX_GROUP);
    while let Ok(first) = jobs.recv() {
        group.push(first);
        while group.len() < MAX_GROUP {
            match jobs.try_recv() {
                Ok(job) => group.push(job),
                Err(_) => break,
            }
        }
        if let Err(e) = conn.execute_batch("BEGIN IMMEDIATE") {
            tracing::error!(error = %e, "SQLite: cannot begin a write transaction");
            // Dropping a job drops its answer channel: the caller sees a backend error.
            group.clear();
            continue;
        }
        let mut done = Vec::with_capacity(group.len());
        let mut broken = None;
        for job in group.drain(..) {
            if broken.is_some() {
                continue;
            }
            if let Err(e) = conn.execute_batch("SAVEPOINT op") {
                broken = Some(e.to_string());
                continue;
            }
            let d = job(&conn);
            let end = if d.keep { "RELEASE op" } else { "ROLLBACK TO op; RELEASE op" };
            if let Err(e) = conn.execute_batch(end) {
                broken = Some(e.to_string());
            }
            done.push(d);
        }
        let committed = match broken {
            None => conn.execute_batch("COMMIT").map_err(|e| e.to_string()),
            Some(e) => Err(e),
        };
        match committed {
            Ok(()) => done.into_iter().for_each(|d| (d.deliver)(None)),
            Err(e) => {
                tracing::error!(error = %e, writes = done.len(), "SQLite: a group of writes failed and was rolled back");
                let _ = conn.execute_batch("ROLLBACK");
                done.into_iter().for_each(|d| (d.deliver)(Some(backend(&e))));
            }
        }
    }
}

/// `SELECT data FROM {table} WHERE {column} = ?` on `conn`, decoded.
fn select_doc<T: DeserializeOwned>(
    conn: &Connection,
    table: &str,
    column: &str,
    key: &str,
) -> Result<Option<T>, StorageError> {
    let data: Option<String> = conn
        .prepare_cached(&format!("SELECT data FROM {table} WHERE {column} = ?"))
        .and_then(|mut st| st.query_row([key], |r| r.get(0)).optional())
        .map_err(backend)?;
    data.map(|d| decode(&d)).transpose()
}

impl Sqlite {
    /// Opens (creating if needed) the database file and its folder, applies the schema, and starts the
    /// writer thread.
    pub async fn open(path: &Path) -> Result<Self, StorageError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| backend(format!("creating {}: {e}", dir.display())))?;
        }
        let conn = Connection::open(path).map_err(|e| backend(format!("opening {}: {e}", path.display())))?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(backend)?;
        // WAL: readers never block the writer or each other. FULL: every commit is on disk before anyone
        // is told it happened; group commit pays for it.
        conn.pragma_update(None, "journal_mode", "WAL").map_err(backend)?;
        conn.pragma_update(None, "synchronous", "FULL").map_err(backend)?;
        conn.pragma_update(None, "foreign_keys", "ON").map_err(backend)?;
        conn.execute_batch(SCHEMA).map_err(backend)?;
        let (jobs, queue) = mpsc::channel();
        std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || writer(conn, queue))
            .map_err(|e| backend(format!("starting the SQLite writer: {e}")))?;
        let store = Self { path: path.to_owned(), readers: Mutex::new(Vec::new()), jobs };
        // Fail at start-up, not at the first request, if the file cannot be read.
        store.read(|c| c.query_row("SELECT count(*) FROM keys", [], |_| Ok(())).map_err(backend))?;
        Ok(store)
    }

    fn open_reader(&self) -> Result<Connection, StorageError> {
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX | OpenFlags::SQLITE_OPEN_URI;
        let conn = Connection::open_with_flags(&self.path, flags)
            .map_err(|e| backend(format!("opening {}: {e}", self.path.display())))?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(backend)?;
        Ok(conn)
    }

    /// Runs `f` on an idle read connection (see the module documentation).
    fn read<T>(&self, f: impl FnOnce(&Connection) -> Result<T, StorageError>) -> Result<T, StorageError> {
        let idle = self.readers.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let conn = match idle {
            Some(c) => c,
            None => self.open_reader()?,
        };
        let result = f(&conn);
        let mut readers = self.readers.lock().unwrap_or_else(|p| p.into_inner());
        if readers.len() < MAX_IDLE_READERS {
            readers.push(conn);
        }
        result
    }

    /// Runs `op` in the writer's next group and returns its result once that group is committed.
    async fn write<T, F>(&self, op: F) -> Result<T, StorageError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StorageError> + Send + 'static,
    {
        let (answer, result) = oneshot::channel();
        let job: Job = Box::new(move |conn| {
            let r = op(conn);
            Done {
                keep: r.is_ok(),
                deliver: Box::new(move |failed: Option<StorageError>| {
                    let _ = answer.send(match failed {
                        Some(e) => Err(e),
                        None => r,
                    });
                }),
            }
        });
        let stopped = || backend("the SQLite writer is not running");
        self.jobs.send(job).map_err(|_| stopped())?;
        result.await.map_err(|_| stopped())?
    }

    fn get_doc<T: DeserializeOwned>(&self, table: &str, id: &str) -> Result<T, StorageError> {
        self.read(|c| select_doc(c, table, "id", id))?.ok_or(StorageError::NotFound)
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
        self.write(move |conn| {
            let current = select_doc(conn, table, "id", &id)?.ok_or(StorageError::NotFound)?;
            let new = f(current)?;
            let data = encode(&new)?;
            conn.prepare_cached(&format!("UPDATE {table} SET data = ?, expiry = ? WHERE id = ?"))
                .and_then(|mut st| st.execute(params![data, expiry_of(&new), id]))
                .map_err(backend)?;
            Ok(new)
        })
        .await
    }

    /// One statement as one write; returns the rows it changed.
    async fn execute(&self, sql: String, binds: Vec<Value>) -> Result<u64, StorageError> {
        self.write(move |conn| {
            let mut st = conn.prepare_cached(&sql).map_err(backend)?;
            Ok(st.execute(params_from_iter(binds)).map_err(map_insert)? as u64)
        })
        .await
    }

    async fn insert_doc(&self, table: &str, id: &str, data: String, expiry: i64) -> Result<(), StorageError> {
        let sql = format!("INSERT INTO {table} (id, data, expiry) VALUES (?, ?, ?)");
        self.execute(sql, vec![Value::Text(id.to_owned()), Value::Text(data), Value::Integer(expiry)]).await.map(|_| ())
    }

    /// Stores a record of a table without expiry (clients, passwords).
    async fn insert_record(&self, table: &str, id: &str, data: String) -> Result<(), StorageError> {
        let sql = format!("INSERT INTO {table} (id, data) VALUES (?, ?)");
        self.execute(sql, vec![Value::Text(id.to_owned()), Value::Text(data)]).await.map(|_| ())
    }

    /// Runs `f` on a record of a table without expiry and stores the result, in one write.
    async fn update_record<T>(&self, table: &'static str, id: &str, f: Update<T>) -> Result<T, StorageError>
    where
        T: Serialize + DeserializeOwned + Send + 'static,
    {
        let id = id.to_owned();
        self.write(move |conn| {
            let new = f(select_doc(conn, table, "id", &id)?.ok_or(StorageError::NotFound)?)?;
            let data = encode(&new)?;
            conn.prepare_cached(&format!("UPDATE {table} SET data = ? WHERE id = ?"))
                .and_then(|mut st| st.execute(params![data, id]))
                .map_err(backend)?;
            Ok(new)
        })
        .await
    }

    async fn delete_record(&self, table: &str, id: &str) -> Result<(), StorageError> {
        match self.execute(format!("DELETE FROM {table} WHERE id = ?"), vec![Value::Text(id.to_owned())]).await? {
            0 => Err(StorageError::NotFound),
            _ => Ok(()),
        }
    }

    /// Every document `sql` selects (its only column is `data`) with `binds`.
    fn select_all<T: DeserializeOwned>(&self, sql: &str, binds: &[&str]) -> Result<Vec<T>, StorageError> {
        let docs: Vec<String> = self.read(|c| {
            let mut st = c.prepare_cached(sql).map_err(backend)?;
            let rows = st.query_map(params_from_iter(binds), |r| r.get(0)).map_err(backend)?;
            rows.collect::<Result<_, _>>().map_err(backend)
        })?;
        docs.iter().map(|d| decode(d)).collect()
    }

    async fn collect(&self, table: &str, now: i64, batch: u32) -> Result<u64, StorageError> {
        // Bounded: a long backlog is cleared over several passes without holding the write lock for long.
        let sql = format!("DELETE FROM {table} WHERE rowid IN (SELECT rowid FROM {table} WHERE expiry < ? LIMIT ?)");
        self.execute(sql, vec![Value::Integer(now), Value::Integer(i64::from(batch))]).await
    }
}

#[async_trait]
impl Storage for Sqlite {
    async fn create_auth_request(&self, r: AuthRequest) -> Result<(), StorageError> {
        self.insert_doc("auth_requests", &r.id, encode(&r)?, r.expiry).await
    }

    async fn get_auth_request(&self, id: &str) -> Result<AuthRequest, StorageError> {
        self.get_doc("auth_requests", id)
    }

    async fn delete_auth_request(&self, id: &str) -> Result<(), StorageError> {
        match self.execute("DELETE FROM auth_requests WHERE id = ?".into(), vec![Value::Text(id.to_owned())]).await? {
            0 => Err(StorageError::NotFound),
            _ => Ok(()),
        }
    }

    async fn create_auth_code(&self, c: AuthCode) -> Result<(), StorageError> {
        self.insert_doc("auth_codes", &c.id, encode(&c)?, c.expiry).await
    }

    async fn get_auth_code(&self, id: &str) -> Result<AuthCode, StorageError> {
        self.get_doc("auth_codes", id)
    }

    async fn update_auth_code(&self, id: &str, f: Update<AuthCode>) -> Result<AuthCode, StorageError> {
        self.update_doc("auth_codes", id, |c: &AuthCode| c.expiry, f).await
    }

    async fn create_refresh_token(&self, t: RefreshToken) -> Result<(), StorageError> {
        let sql = "INSERT INTO refresh_tokens (id, family_id, data, expiry) VALUES (?, ?, ?, ?)".to_owned();
        let binds = vec![
            Value::Text(t.id.clone()),
            Value::Text(t.family_id.clone()),
            Value::Text(encode(&t)?),
            Value::Integer(t.expiry),
        ];
        self.execute(sql, binds).await.map(|_| ())
    }

    async fn get_refresh_token(&self, id: &str) -> Result<RefreshToken, StorageError> {
        self.get_doc("refresh_tokens", id)
    }

    async fn update_refresh_token(&self, id: &str, f: Update<RefreshToken>) -> Result<RefreshToken, StorageError> {
        self.update_doc("refresh_tokens", id, |t: &RefreshToken| t.expiry, f).await
    }

    async fn rotate_refresh_token(&self, old_id: &str, now: i64, successor: RefreshToken) -> Result<(), StorageError> {
        let old_id = old_id.to_owned();
        let new_data = encode(&successor)?;
        self.write(move |conn| {
            let mut old: RefreshToken =
                select_doc(conn, "refresh_tokens", "id", &old_id)?.ok_or(StorageError::NotFound)?;
            if old.rotated_at.is_some() {
                return Err(StorageError::Conflict);
            }
            old.rotated_at = Some(now);
            old.successor = Some(successor.id.clone());
            let old_data = encode(&old)?;
            conn.prepare_cached("UPDATE refresh_tokens SET data = ? WHERE id = ?")
                .and_then(|mut st| st.execute(params![old_data, old_id]))
                .map_err(backend)?;
            conn.prepare_cached("INSERT INTO refresh_tokens (id, family_id, data, expiry) VALUES (?, ?, ?, ?)")
                .and_then(|mut st| st.execute(params![successor.id, successor.family_id, new_data, successor.expiry]))
                .map_err(map_insert)?;
            Ok(())
        })
        .await
    }

    async fn list_refresh_family(&self, family_id: &str) -> Result<Vec<RefreshToken>, StorageError> {
        let docs: Vec<String> = self.read(|c| {
            let mut st = c.prepare_cached("SELECT data FROM refresh_tokens WHERE family_id = ?").map_err(backend)?;
            let rows = st.query_map([family_id], |r| r.get(0)).map_err(backend)?;
            rows.collect::<Result<_, _>>().map_err(backend)
        })?;
        let mut v = docs.iter().map(|d| decode::<RefreshToken>(d)).collect::<Result<Vec<_>, _>>()?;
        v.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        Ok(v)
    }

    async fn delete_refresh_family(&self, family_id: &str) -> Result<u64, StorageError> {
        self.execute("DELETE FROM refresh_tokens WHERE family_id = ?".into(), vec![Value::Text(family_id.to_owned())])
            .await
    }

    async fn get_keys(&self) -> Result<Keys, StorageError> {
        self.get_doc("keys", "1")
    }

    async fn update_keys(&self, f: Update<Option<Keys>>) -> Result<Keys, StorageError> {
        self.write(move |conn| {
            let current: Option<Keys> = select_doc(conn, "keys", "id", "1")?;
            let Some(new) = f(current.clone())? else {
                return current.ok_or(StorageError::NotFound);
            };
            let data = encode(&new)?;
            conn.prepare_cached(
                "INSERT INTO keys (id, data) VALUES (1, ?) ON CONFLICT (id) DO UPDATE SET data = excluded.data",
            )
            .and_then(|mut st| st.execute([data]))
            .map_err(backend)?;
            Ok(new)
        })
        .await
    }

    async fn get_or_create_secret(&self, name: &str, candidate: Vec<u8>) -> Result<Vec<u8>, StorageError> {
        let name = name.to_owned();
        self.write(move |conn| {
            conn.prepare_cached("INSERT INTO secrets (name, value) VALUES (?, ?) ON CONFLICT (name) DO NOTHING")
                .and_then(|mut st| st.execute(params![name, candidate]))
                .map_err(backend)?;
            conn.prepare_cached("SELECT value FROM secrets WHERE name = ?")
                .and_then(|mut st| st.query_row([&name], |r| r.get(0)))
                .map_err(backend)
        })
        .await
    }

    async fn get_bucket(&self, key: &str) -> Result<Option<Bucket>, StorageError> {
        self.read(|c| select_doc(c, "buckets", "key", key))
    }

    async fn update_bucket(&self, key: &str, f: Update<Option<Bucket>>) -> Result<Option<Bucket>, StorageError> {
        let key = key.to_owned();
        self.write(move |conn| {
            let new = f(select_doc(conn, "buckets", "key", &key)?)?;
            let data = new.as_ref().map(encode).transpose()?;
            match (&new, data) {
                (Some(b), Some(data)) => conn
                    .prepare_cached(
                        "INSERT INTO buckets (key, data, expiry) VALUES (?, ?, ?) \
                         ON CONFLICT (key) DO UPDATE SET data = excluded.data, expiry = excluded.expiry",
                    )
                    .and_then(|mut st| st.execute(params![key, data, b.expiry])),
                _ => conn.prepare_cached("DELETE FROM buckets WHERE key = ?").and_then(|mut st| st.execute([&key])),
            }
            .map_err(backend)?;
            Ok(new)
        })
        .await
    }

    async fn create_device_request(&self, r: DeviceRequest) -> Result<(), StorageError> {
        let sql = "INSERT INTO device_requests (id, user_code, data, expiry) VALUES (?, ?, ?, ?)".to_owned();
        let binds = vec![
            Value::Text(r.device_code.clone()),
            Value::Text(r.user_code.clone()),
            Value::Text(encode(&r)?),
            Value::Integer(r.expiry),
        ];
        self.execute(sql, binds).await.map(|_| ())
    }

    async fn get_device_request(&self, device_code: &str) -> Result<DeviceRequest, StorageError> {
        self.get_doc("device_requests", device_code)
    }

    async fn get_device_request_by_user_code(&self, user_code: &str) -> Result<DeviceRequest, StorageError> {
        self.read(|c| select_doc(c, "device_requests", "user_code", user_code))?.ok_or(StorageError::NotFound)
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
        let mut v: Vec<RefreshToken> = self.select_all(
            "SELECT data FROM refresh_tokens WHERE json_extract(data, '$.identity.connector_id') = ? \
             AND json_extract(data, '$.identity.user_id') = ?",
            &[connector_id, user_id],
        )?;
        v.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        Ok(v)
    }

    async fn list_refresh_tokens(&self) -> Result<Vec<RefreshToken>, StorageError> {
        let mut v: Vec<RefreshToken> = self.select_all("SELECT data FROM refresh_tokens", &[])?;
        v.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        Ok(v)
    }

    async fn create_client(&self, c: Client) -> Result<(), StorageError> {
        self.insert_record("clients", &c.id, encode(&c)?).await
    }

    async fn get_client(&self, id: &str) -> Result<Client, StorageError> {
        self.get_doc("clients", id)
    }

    async fn update_client(&self, id: &str, f: Update<Client>) -> Result<Client, StorageError> {
        self.update_record("clients", id, keep_key(|c: &Client| c.id.clone(), f)).await
    }

    async fn delete_client(&self, id: &str) -> Result<(), StorageError> {
        self.delete_record("clients", id).await
    }

    async fn list_clients(&self) -> Result<Vec<Client>, StorageError> {
        self.select_all("SELECT data FROM clients ORDER BY id", &[])
    }

    async fn create_password(&self, p: Password) -> Result<(), StorageError> {
        self.insert_record("passwords", &password_key(&p.email), encode(&p)?).await
    }

    async fn get_password(&self, email: &str) -> Result<Password, StorageError> {
        self.get_doc("passwords", &password_key(email))
    }

    async fn update_password(&self, email: &str, f: Update<Password>) -> Result<Password, StorageError> {
        let f = keep_key(|p: &Password| password_key(&p.email), f);
        self.update_record("passwords", &password_key(email), f).await
    }

    async fn delete_password(&self, email: &str) -> Result<(), StorageError> {
        self.delete_record("passwords", &password_key(email)).await
    }

    async fn list_passwords(&self) -> Result<Vec<Password>, StorageError> {
        self.select_all("SELECT data FROM passwords ORDER BY id", &[])
    }

    async fn create_session(&self, s: Session) -> Result<(), StorageError> {
        self.insert_doc("sessions", &s.id, encode(&s)?, s.expiry).await
    }

    async fn get_session(&self, id: &str) -> Result<Session, StorageError> {
        self.get_doc("sessions", id)
    }

    async fn update_session(&self, id: &str, f: Update<Session>) -> Result<Session, StorageError> {
        self.update_doc("sessions", id, |s: &Session| s.expiry, keep_key(|s: &Session| s.id.clone(), f)).await
    }

    async fn delete_session(&self, id: &str) -> Result<(), StorageError> {
        self.delete_record("sessions", id).await
    }

    async fn list_sessions(&self) -> Result<Vec<Session>, StorageError> {
        self.select_all("SELECT data FROM sessions ORDER BY id", &[])
    }

    async fn create_revocation(&self, kind: RevocationKind, value: &str, revoked_at: i64) -> Result<i64, StorageError> {
        let value = value.to_owned();
        self.write(move |conn| {
            conn.prepare_cached("INSERT INTO revocations (kind, value, revoked_at) VALUES (?, ?, ?)")
                .and_then(|mut st| st.insert(params![kind.as_str(), value, revoked_at]))
                .map_err(backend)
        })
        .await
    }

    async fn list_revocations_after(&self, after: i64, limit: u32) -> Result<Vec<Revocation>, StorageError> {
        let rows: Vec<(i64, String, String, i64)> = self.read(|c| {
            let mut st = c
                .prepare_cached(
                    "SELECT seq, kind, value, revoked_at FROM revocations WHERE seq > ? ORDER BY seq LIMIT ?",
                )
                .map_err(backend)?;
            let rows = st
                .query_map(params![after, i64::from(limit)], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
                .map_err(backend)?;
            rows.collect::<Result<_, _>>().map_err(backend)
        })?;
        rows.into_iter()
            .map(|(seq, kind, value, revoked_at)| {
                let kind = RevocationKind::parse(&kind).ok_or_else(|| backend(format!("revocation kind {kind:?}")))?;
                Ok(Revocation { seq, kind, value, revoked_at })
            })
            .collect()
    }

    async fn get_revocation_bounds(&self) -> Result<Option<(i64, i64)>, StorageError> {
        let (min, max): (Option<i64>, Option<i64>) = self.read(|c| {
            c.prepare_cached("SELECT min(seq), max(seq) FROM revocations")
                .and_then(|mut st| st.query_row([], |r| Ok((r.get(0)?, r.get(1)?))))
                .map_err(backend)
        })?;
        Ok(min.zip(max))
    }

    async fn delete_revocations_before(&self, cutoff: i64, batch: u32) -> Result<u64, StorageError> {
        let sql = "DELETE FROM revocations WHERE seq IN (SELECT seq FROM revocations WHERE revoked_at < ? \
                   AND seq < (SELECT max(seq) FROM revocations) LIMIT ?)";
        self.execute(sql.to_owned(), vec![Value::Integer(cutoff), Value::Integer(i64::from(batch))]).await
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
