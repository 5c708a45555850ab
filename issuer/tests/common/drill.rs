//! The failure drills' harness (issue 14): issuer replicas as real `issuer serve` processes that a drill
//! can SIGKILL and start again, a PostgreSQL server a drill can stop and start, a round-robin balancer that
//! retries a request that died with its replica on another one, a steady load (logins through the form,
//! code exchanges, refreshes of live sessions, some concurrent on two replicas, JWKS reads) that counts
//! every outcome by kind, and the table each drill prints. What a drill asserts stays in `drills.rs`.

#![allow(unreachable_pub)] // a test module: `pub` is what drills.rs uses, not an API

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::Rng;
use reqwest::redirect::Policy;
use serde_json::Value;
use tokio::process::{Child, Command};

use crate::common::{hidden_field, query_param, urlencode, CHALLENGE, CLIENT, REDIRECT, SECRET, VERIFIER};

/// How long a drill waits for anything it waits on (a replica ready, a server up) before failing.
pub const DEADLINE: Duration = Duration::from_secs(90);

/// Polls `check` until it returns `Some`, failing after [`DEADLINE`] with `what`. The drills wait on
/// conditions, never for fixed times; the poll interval only bounds how soon a change is seen.
pub async fn until<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(start.elapsed() < DEADLINE, "timed out after {DEADLINE:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// `max-age` of a `Cache-Control` value.
pub fn max_age(cache_control: &str) -> u64 {
    cache_control.split(',').find_map(|d| d.trim().strip_prefix("max-age=")).and_then(|v| v.parse().ok()).unwrap()
}

pub use crate::common::free_port;

/// The `storage:` section for a PostgreSQL database.
pub fn postgres_storage(port: u16, database: &str, max_open_conns: u32) -> String {
    format!(
        "storage:\n  type: postgres\n  config:\n    host: 127.0.0.1\n    port: {port}\n    database: {database}\n    \
         user: postgres\n    maxOpenConns: {max_open_conns}\n    ssl:\n      mode: disable\n"
    )
}

/// The `storage:` section for a SQLite file.
pub fn sqlite_storage(file: &Path) -> String {
    format!("storage:\n  type: sqlite3\n  config:\n    file: {}\n", file.display())
}

/// The shipped dev configuration for a replica listening on `port`, publishing `issuer` (shared by every
/// replica, as behind one Service), on `storage`, with the brute-force buckets out of the load's way and
/// `signing_keys` as the rotation period.
pub fn replica_config(issuer: &str, port: u16, storage: &str, signing_keys: &str) -> String {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/dev.yaml")).unwrap();
    let dev_storage = "storage:\n  type: sqlite3\n  config:\n    file: ./data/issuer.db\n";
    assert!(text.contains(dev_storage), "examples/dev.yaml changed its storage section");
    text.replace("issuer: http://127.0.0.1:5556", &format!("issuer: {issuer}"))
        .replace("http: 127.0.0.1:5556", &format!("http: 127.0.0.1:{port}"))
        .replace(dev_storage, storage)
        .replace("maxAttempts: 20", "maxAttempts: 1000000\n  perIPMaxAttempts: 1000000")
        .replace("signingKeys: 6h", &format!("signingKeys: {signing_keys}"))
}

// === impl Replica ===

/// One `issuer serve` process with its configuration file and log.
pub struct Replica {
    /// `http://127.0.0.1:{port}`.
    pub url: String,
    config: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

impl Replica {
    /// Writes `config` to `dir/{name}.yaml` and starts the process (without waiting for it to be ready).
    pub fn spawn(dir: &Path, name: &str, port: u16, config: &str) -> Replica {
        let file = dir.join(format!("{name}.yaml"));
        std::fs::write(&file, config).unwrap();
        let mut r = Replica {
            url: format!("http://127.0.0.1:{port}"),
            config: file,
            log: dir.join(format!("{name}.log")),
            child: None,
        };
        r.start();
        r
    }

    /// Starts the process again with the same configuration, port and database.
    pub fn start(&mut self) {
        assert!(self.child.is_none(), "{} is already running", self.url);
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_issuer"))
            .arg("serve")
            .arg("--config")
            .arg(&self.config)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        self.child = Some(child);
    }

    /// `kill -9` and reap: nothing in the process gets to clean up.
    pub async fn kill(&mut self) {
        let mut child = self.child.take().expect("running");
        child.start_kill().unwrap();
        let status = child.wait().await.unwrap();
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(9), "{} ended by SIGKILL", self.url);
    }

    /// Waits until `/healthz/ready` answers 200; fails with the log if the process exits first.
    pub async fn wait_ready(&mut self) {
        let client = client();
        let url = format!("{}/healthz/ready", self.url);
        let started = Instant::now();
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Some(status) = child.try_wait().unwrap() {
                    panic!("{} exited with {status}:\n{}", self.url, self.log_text());
                }
            }
            if let Ok(r) = client.get(&url).send().await {
                if r.status() == 200 {
                    return;
                }
            }
            assert!(started.elapsed() < DEADLINE, "{} not ready after {DEADLINE:?}:\n{}", self.url, self.log_text());
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Whether the process is still running.
    pub fn running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| c.try_wait().unwrap().is_none())
    }

    /// The process's output so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

// === impl PgServer ===

/// A PostgreSQL server of the drill's own (initdb in a temporary directory), so a drill can stop and start
/// it without disturbing the server the other tests share.
pub struct PgServer {
    bin: PathBuf,
    dir: tempfile::TempDir,
    /// Its port on 127.0.0.1 (kept across restarts).
    pub port: u16,
}

impl PgServer {
    /// initdb and start, as `scripts/with-postgres.sh` does (as the `postgres` user when run as root).
    pub async fn start() -> PgServer {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .expect("PostgreSQL server binaries: run `make setup-test`")
            .map(|e| e.unwrap().path().join("bin"))
            .filter(|b| b.join("initdb").exists())
            .max()
            .expect("PostgreSQL server binaries: run `make setup-test`");
        let dir = tempfile::Builder::new().prefix("tokengate-drill-pg").tempdir().unwrap();
        if Self::as_root() {
            assert!(std::process::Command::new("chown").arg("postgres:").arg(dir.path()).status().unwrap().success());
        }
        let server = PgServer { bin, dir, port: free_port() };
        let data = server.dir.path().join("data");
        server.pg(&["initdb", "-D", &data.to_string_lossy(), "-A", "trust", "-U", "postgres", "--no-sync"]).await;
        server.start_again().await;
        server
    }

    fn as_root() -> bool {
        std::fs::metadata("/proc/self").map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0).unwrap_or(false)
    }

    async fn pg(&self, args: &[&str]) {
        let program = self.bin.join(args[0]);
        let mut cmd = if Self::as_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(program);
            c
        } else {
            Command::new(program)
        };
        let out = cmd.args(&args[1..]).output().await.unwrap();
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// Starts the server (again) on the same port and data directory, waiting until it accepts connections.
    pub async fn start_again(&self) {
        let d = self.dir.path();
        let (data, log) = (d.join("data"), d.join("server.log"));
        let options = format!("-h 127.0.0.1 -p {} -k {} -c fsync=off", self.port, d.display());
        self.pg(&[
            "pg_ctl",
            "-D",
            &data.to_string_lossy(),
            "-l",
            &log.to_string_lossy(),
            "-w",
            "-o",
            &options,
            "start",
        ])
        .await;
    }

    /// Stops the server: `fast` disconnects every client and shuts down cleanly (a restart or failover),
    /// `immediate` is a crash.
    pub async fn stop(&self, mode: &str) {
        self.pg(&["pg_ctl", "-D", &self.dir.path().join("data").to_string_lossy(), "-m", mode, "-w", "stop"]).await;
    }

    /// `postgres://postgres@127.0.0.1:{port}/{database}`.
    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        let data = self.dir.path().join("data");
        let pg_ctl = self.bin.join("pg_ctl");
        let mut cmd = if Self::as_root() {
            let mut c = std::process::Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(pg_ctl);
            c
        } else {
            std::process::Command::new(pg_ctl)
        };
        let _ = cmd.arg("-D").arg(data).args(["-m", "immediate", "stop"]).output();
    }
}

/// Creates `name` on the server at `url` (the shared test server or a [`PgServer`]).
pub async fn create_database(url: &str, name: &str) {
    let admin = sqlx::PgPool::connect(url).await.unwrap();
    sqlx::query(&format!("CREATE DATABASE {name}")).execute(&admin).await.unwrap();
    admin.close().await;
}

// === impl Balancer ===

/// A round-robin over the replicas, with the readiness a load balancer keeps: a drill takes a replica
/// out of rotation as it kills it (what the readiness probe and endpoint removal do) and puts it back once
/// `/healthz/ready` says so. Each replica has a generation, bumped on every kill, so a failure can be
/// told apart: in flight on a process that was killed, or on a live one (which must never happen).
pub struct Balancer {
    /// Replica base URLs.
    pub urls: Vec<String>,
    up: Vec<AtomicBool>,
    generation: Vec<AtomicU64>,
    next: AtomicU64,
    /// Retry a request whose connection died on another replica (or the same one, once it is back).
    pub retry: bool,
}

impl Balancer {
    /// All replicas in rotation.
    pub fn new(urls: Vec<String>) -> Balancer {
        let n = urls.len();
        Balancer {
            urls,
            up: (0..n).map(|_| AtomicBool::new(true)).collect(),
            generation: (0..n).map(|_| AtomicU64::new(0)).collect(),
            next: AtomicU64::new(0),
            retry: true,
        }
    }

    /// Out of rotation, and requests in flight on it belong to a killed generation.
    pub fn take_out(&self, i: usize) {
        self.up[i].store(false, SeqCst);
        self.generation[i].fetch_add(1, SeqCst);
    }

    /// Back in rotation.
    pub fn put_back(&self, i: usize) {
        self.up[i].store(true, SeqCst);
    }

    /// The next replica in rotation, other than `not` if possible; waits while none is up.
    pub async fn pick(&self, not: Option<usize>) -> usize {
        until("a replica in rotation", || async {
            let n = self.urls.len();
            let start = self.next.fetch_add(1, SeqCst) as usize;
            let up = |i: &usize| self.up[*i].load(SeqCst);
            let mut order = (0..n).map(|k| (start + k) % n);
            order.clone().filter(up).find(|i| Some(*i) != not).or_else(|| order.find(up))
        })
        .await
    }
}

// === impl Load ===

/// A reply that came back (any status).
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// `Location`, if any.
    pub location: Option<String>,
    /// `Retry-After`, if any.
    pub retry_after: Option<String>,
    /// The body.
    pub body: String,
    /// Whether it is the answer to a retry (the first attempt's connection died).
    pub retried: bool,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }
}

/// Counters of one load run.
#[derive(Default)]
pub struct Stats {
    /// Requests sent (retries included).
    pub sent: AtomicU64,
    /// Replies received with a status below 500.
    pub answered: AtomicU64,
    /// Requests sent again after their connection died.
    pub retries: AtomicU64,
    /// Of those, the ones that then got an answer below 500.
    pub retried_ok: AtomicU64,
    /// Logins completed through the form, code exchanged.
    pub logins: AtomicU64,
    /// Refreshes answered 200.
    pub refreshes: AtomicU64,
    /// Concurrent pairs on two replicas, both answered 200 with one successor.
    pub concurrent_pairs: AtomicU64,
    /// JWKS reads answered 200 with keys.
    pub jwks: AtomicU64,
    /// A refresh token answered with two different successors.
    pub duplicate_rotations: AtomicU64,
    /// A live session's refresh answered `invalid_grant`: its family is gone.
    pub families_broken: AtomicU64,
    /// Failures by kind.
    pub failures: Mutex<BTreeMap<String, u64>>,
    /// Latency of each answered request, with when it ended.
    pub latencies: Mutex<Vec<(Instant, Duration)>>,
}

impl Stats {
    fn fail(&self, kind: impl Into<String>) {
        *self.failures.lock().unwrap().entry(kind.into()).or_default() += 1;
    }

    /// Failures of kinds other than those in `allowed`.
    pub fn unexpected(&self, allowed: &[&str]) -> BTreeMap<String, u64> {
        let f = self.failures.lock().unwrap();
        f.iter().filter(|(k, _)| !allowed.contains(&k.as_str())).map(|(k, v)| (k.clone(), *v)).collect()
    }

    /// Failures of `kind`.
    pub fn failed(&self, kind: &str) -> u64 {
        self.failures.lock().unwrap().get(kind).copied().unwrap_or(0)
    }

    /// "kind: n, kind: n", or "none".
    pub fn failures_text(&self) -> String {
        let f = self.failures.lock().unwrap();
        if f.is_empty() {
            return "none".into();
        }
        f.iter().map(|(k, v)| format!("{k}: {v}")).collect::<Vec<_>>().join(", ")
    }

    /// The `q` quantile of the latencies of requests that ended inside `window` (all when `None`).
    pub fn quantile(&self, q: f64, window: Option<(Instant, Instant)>) -> Duration {
        let mut l: Vec<Duration> = self
            .latencies
            .lock()
            .unwrap()
            .iter()
            .filter(|(at, _)| window.is_none_or(|(a, b)| *at >= a && *at <= b))
            .map(|(_, d)| *d)
            .collect();
        if l.is_empty() {
            return Duration::ZERO;
        }
        l.sort();
        l[((l.len() as f64 * q).ceil() as usize).clamp(1, l.len()) - 1]
    }
}

/// A login step's retry was refused because its first attempt went through: start the login again.
struct Restart;

/// Failure kinds the drills report.
pub mod kind {
    /// The connection died with a killed replica (in flight, or sent just as it died).
    pub const IN_FLIGHT: &str = "connection lost with the killed replica";
    /// The connection failed on a replica that was never killed.
    pub const LIVE_TRANSPORT: &str = "connection failed on a live replica";
    /// 503 `temporarily_unavailable` (or the login pages' 503) with `Retry-After`.
    pub const UNAVAILABLE: &str = "503 with Retry-After";
    /// 503 without `Retry-After`.
    pub const UNAVAILABLE_BARE: &str = "503 without Retry-After";
    /// 500 or another 5xx.
    pub const SERVER_ERROR: &str = "500 (or other 5xx)";
    /// A login step re-sent after the kill was refused as already done (the login request and the code are
    /// single use): the login starts again from `/auth`, as the page tells a person to.
    pub const LOGIN_RESTARTED: &str = "login step re-sent after the kill refused: login restarted";
    /// Any other unexpected answer.
    pub const UNEXPECTED: &str = "unexpected answer";
}

/// The load: a balancer, live sessions (their current refresh tokens), what each refresh token rotated
/// to, and the counters.
pub struct Load {
    /// The replicas.
    pub lb: Arc<Balancer>,
    /// Live sessions: their current refresh token (a session is refreshed by one worker at a time, except
    /// the deliberate concurrent pairs).
    pub sessions: Vec<tokio::sync::Mutex<String>>,
    rotated_to: Mutex<HashMap<String, String>>,
    /// The counters.
    pub stats: Stats,
    /// Set to stop the workers.
    pub stop: AtomicBool,
    workers: AtomicU64,
    http: reqwest::Client,
}

/// A client that does not follow redirects (the 303s are what a load follows by hand).
pub fn client() -> reqwest::Client {
    reqwest::Client::builder().redirect(Policy::none()).timeout(Duration::from_secs(30)).build().unwrap()
}

fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(Policy::none())
        .cookie_store(true)
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

fn auth_path(state: &str) -> String {
    format!(
        "/auth?client_id={CLIENT}&redirect_uri={}&response_type=code&scope={}&state={state}&nonce=n-{state}&code_challenge={CHALLENGE}&code_challenge_method=S256",
        urlencode(REDIRECT),
        urlencode("openid email offline_access"),
    )
}

impl Load {
    /// A load over `lb` with no sessions yet (see [`Load::open_sessions`]).
    pub fn new(lb: Arc<Balancer>) -> Load {
        Load {
            lb,
            sessions: Vec::new(),
            rotated_to: Mutex::default(),
            stats: Stats::default(),
            stop: AtomicBool::new(false),
            workers: AtomicU64::new(0),
            http: client(),
        }
    }

    /// Logs `n` sessions in (through the form, across the replicas) and keeps their refresh tokens.
    pub async fn open_sessions(mut self, n: usize) -> Load {
        for i in 0..n {
            let tokens = self.login(&format!("s{i}")).await.expect("a session opens before the drill");
            self.sessions.push(tokio::sync::Mutex::new(tokens["refresh_token"].as_str().unwrap().to_owned()));
        }
        self
    }

    /// Sends one request built by `make` for a replica's base URL: to `on` if given, else the next in
    /// rotation. A connection that dies is counted and, if the balancer retries, sent again elsewhere.
    /// `None` when no answer came back; 5xx answers are counted and returned.
    pub async fn send<F>(&self, client: &reqwest::Client, on: Option<usize>, make: F) -> Option<Reply>
    where
        F: Fn(&reqwest::Client, &str) -> reqwest::RequestBuilder,
    {
        let mut target = match on {
            Some(i) => i,
            None => self.lb.pick(None).await,
        };
        let mut retried = false;
        for _ in 0..5 {
            let generation = self.lb.generation[target].load(SeqCst);
            self.stats.sent.fetch_add(1, SeqCst);
            let started = Instant::now();
            let result = async {
                let r = make(client, &self.lb.urls[target]).send().await?;
                let status = r.status().as_u16();
                let header = |n: &str| r.headers().get(n).map(|v| v.to_str().unwrap_or_default().to_owned());
                let (location, retry_after) = (header("location"), header("retry-after"));
                let body = r.text().await?;
                Ok::<_, reqwest::Error>(Reply { status, location, retry_after, body, retried })
            }
            .await;
            match result {
                Ok(reply) => {
                    match reply.status {
                        503 if reply.retry_after.is_some() => self.stats.fail(kind::UNAVAILABLE),
                        503 => self.stats.fail(kind::UNAVAILABLE_BARE),
                        500.. => self.stats.fail(kind::SERVER_ERROR),
                        _ => {
                            self.stats.answered.fetch_add(1, SeqCst);
                            self.stats.latencies.lock().unwrap().push((Instant::now(), started.elapsed()));
                            if retried {
                                self.stats.retried_ok.fetch_add(1, SeqCst);
                            }
                        }
                    }
                    return Some(reply);
                }
                Err(_) => {
                    let killed =
                        self.lb.generation[target].load(SeqCst) != generation || !self.lb.up[target].load(SeqCst);
                    self.stats.fail(if killed { kind::IN_FLIGHT } else { kind::LIVE_TRANSPORT });
                    if !self.lb.retry {
                        return None;
                    }
                    self.stats.retries.fetch_add(1, SeqCst);
                    retried = true;
                    target = self.lb.pick(Some(target)).await;
                }
            }
        }
        None
    }

    /// A token-endpoint POST with the example app's credentials.
    pub async fn token(&self, on: Option<usize>, form: &[(&str, &str)]) -> Option<Reply> {
        self.send(&self.http, on, |c, base| c.post(format!("{base}/token")).basic_auth(CLIENT, Some(SECRET)).form(form))
            .await
    }

    /// A whole login through the form, each step on the next replica in rotation, then the code exchange:
    /// the token response, or `None` when a step failed (counted). A step whose first attempt died with a
    /// killed replica may have been done there already; if its retry is refused for that, the login starts
    /// over once.
    pub async fn login(&self, state: &str) -> Option<Value> {
        match self.login_once(state).await {
            Ok(tokens) => tokens,
            Err(Restart) => {
                self.stats.fail(kind::LOGIN_RESTARTED);
                self.login_once(state).await.unwrap_or(None)
            }
        }
    }

    async fn login_once(&self, state: &str) -> Result<Option<Value>, Restart> {
        let b = browser();
        let auth = auth_path(state);
        let step = |r: Option<Reply>, status: u16| -> Result<Option<Reply>, Restart> {
            match r {
                Some(r) if r.status != status && r.retried && r.status < 500 => Err(Restart),
                Some(r) => Ok(self.expect(&r, status).is_some().then_some(r)),
                None => Ok(None),
            }
        };
        let r = step(self.send(&b, None, |c, base| c.get(format!("{base}{auth}"))).await, 303)?;
        let Some(login_page) = r.and_then(|r| r.location) else { return Ok(None) };
        let r = step(self.send(&b, None, |c, base| c.get(format!("{base}{login_page}"))).await, 200)?;
        let Some(html) = r.map(|r| r.body) else { return Ok(None) };
        let (req, csrf) = (hidden_field(&html, "req"), hidden_field(&html, "csrf"));
        let action = login_page.split('?').next().unwrap().to_owned();
        let form = [("req", req.as_str()), ("csrf", &csrf), ("login", "jane@example.com"), ("password", "password")];
        let r = step(self.send(&b, None, |c, base| c.post(format!("{base}{action}")).form(&form)).await, 303)?;
        let Some(code) = r.and_then(|r| r.location).and_then(|l| query_param(&l, "code")) else { return Ok(None) };
        let form = [
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("redirect_uri", REDIRECT),
            ("code_verifier", VERIFIER),
        ];
        let r = step(self.token(None, &form).await, 200)?;
        let Some(tokens) = r.map(|r| r.json()) else { return Ok(None) };
        self.stats.logins.fetch_add(1, SeqCst);
        Ok(Some(tokens))
    }

    fn expect<'r>(&self, r: &'r Reply, status: u16) -> Option<&'r Reply> {
        if r.status == status {
            return Some(r);
        }
        if r.status < 500 {
            let text = r.body.split("<title>").nth(1).and_then(|t| t.split('<').next()).unwrap_or(&r.body);
            self.stats.fail(format!(
                "{}: {} {}",
                kind::UNEXPECTED,
                r.status,
                text.chars().take(120).collect::<String>()
            ));
        }
        None
    }

    /// Notes that `presented` rotated to `successor`; a second, different successor is a duplicate rotation.
    fn rotated(&self, presented: &str, successor: &str) {
        let mut m = self.rotated_to.lock().unwrap();
        match m.get(presented) {
            Some(s) if s != successor => {
                self.stats.duplicate_rotations.fetch_add(1, SeqCst);
            }
            Some(_) => {}
            None => {
                m.insert(presented.to_owned(), successor.to_owned());
            }
        }
    }

    /// Refreshes `rt` (on `on` if given): the successor, or `None` (counted).
    pub async fn refresh(&self, on: Option<usize>, rt: &str) -> Option<String> {
        let r = self.token(on, &[("grant_type", "refresh_token"), ("refresh_token", rt)]).await?;
        if r.status == 400 && r.json()["error"] == "invalid_grant" {
            self.stats.families_broken.fetch_add(1, SeqCst);
            self.stats.fail(format!("refresh invalid_grant: {}", r.json()["error_description"]));
            return None;
        }
        let successor = self.expect(&r, 200)?.json()["refresh_token"].as_str()?.to_owned();
        self.rotated(rt, &successor);
        self.stats.refreshes.fetch_add(1, SeqCst);
        Some(successor)
    }

    /// Refreshes session `i` once.
    pub async fn refresh_session(&self, i: usize) {
        let Ok(mut rt) = self.sessions[i].try_lock() else { return };
        if let Some(next) = self.refresh(None, &rt).await {
            *rt = next;
        }
    }

    /// Refreshes session `i` on two different replicas at once: both must get the one successor.
    pub async fn refresh_pair(&self, i: usize) {
        let Ok(mut rt) = self.sessions[i].try_lock() else { return };
        let a = self.lb.pick(None).await;
        let b = self.lb.pick(Some(a)).await;
        let (x, y) = tokio::join!(self.refresh(Some(a), &rt), self.refresh(Some(b), &rt));
        match (x, y) {
            (Some(x), Some(y)) => {
                if x == y {
                    self.stats.concurrent_pairs.fetch_add(1, SeqCst);
                }
                *rt = x;
            }
            (Some(x), None) | (None, Some(x)) => *rt = x,
            (None, None) => {}
        }
    }

    /// Reads `/keys`: 200 with at least one key.
    pub async fn jwks(&self) {
        let Some(r) = self.send(&self.http, None, |c, base| c.get(format!("{base}/keys"))).await else { return };
        if let Some(r) = self.expect(&r, 200) {
            if r.json()["keys"].as_array().is_some_and(|k| !k.is_empty()) {
                self.stats.jwks.fetch_add(1, SeqCst);
            } else {
                self.stats.fail("JWKS without keys");
            }
        }
    }

    /// One operation of the mix: 60% a refresh, 10% a concurrent pair, 10% a login, 20% a JWKS read.
    pub async fn step(&self, n: u64) {
        let (roll, session) = {
            let mut rng = rand::rng();
            (rng.random_range(0..10), rng.random_range(0..self.sessions.len()))
        };
        match roll {
            0..6 => self.refresh_session(session).await,
            6 => self.refresh_pair(session).await,
            7 => {
                self.login(&format!("l{n}")).await;
            }
            _ => self.jwks().await,
        }
    }

    /// Runs `workers` concurrent loops of [`Load::step`] until [`Load::stop`] is set.
    pub fn run(self: &Arc<Self>, workers: usize) -> tokio::task::JoinSet<()> {
        let mut set = tokio::task::JoinSet::new();
        self.workers.store(workers as u64, SeqCst);
        for w in 0..workers {
            let load = self.clone();
            set.spawn(async move {
                let mut n = 0;
                while !load.stop.load(SeqCst) {
                    load.step(w as u64 * 1_000_000 + n).await;
                    n += 1;
                }
            });
        }
        set
    }

    /// Waits until `more` further requests have been answered (the drills move on by progress, not time).
    pub async fn progress(&self, more: u64) {
        let target = self.stats.answered.load(SeqCst) + more;
        until("the load to make progress", || async { (self.stats.answered.load(SeqCst) >= target).then_some(()) })
            .await;
    }

    /// Stops the workers and waits for them.
    pub async fn finish(&self, mut set: tokio::task::JoinSet<()>) {
        self.stop.store(true, SeqCst);
        while let Some(r) = set.join_next().await {
            r.unwrap();
        }
    }

    /// After the drill: refreshes every session once more (on the next replica); how many cannot.
    pub async fn sessions_lost(&self) -> usize {
        let mut lost = 0;
        for s in &self.sessions {
            let mut rt = s.lock().await;
            match self.refresh(None, &rt).await {
                Some(next) => *rt = next,
                None => lost += 1,
            }
        }
        lost
    }
}

// === Report ===

/// One drill's table, printed to stdout (`make drills` shows it) and, when `TOKENGATE_DRILLS_REPORT`
/// names a file, appended to it as Markdown for BENCHMARKS.md.
pub struct Table {
    title: String,
    rows: Vec<(String, String)>,
}

impl Table {
    /// An empty table.
    pub fn new(title: &str) -> Table {
        Table { title: title.to_owned(), rows: Vec::new() }
    }

    /// Adds a row.
    pub fn row(&mut self, what: &str, value: impl std::fmt::Display) -> &mut Table {
        self.rows.push((what.to_owned(), value.to_string()));
        self
    }

    /// The load rows every drill with a load reports.
    pub fn load(&mut self, load: &Load, held: Duration) -> &mut Table {
        let s = &load.stats;
        self.row(
            "load held",
            format!(
                "{:.1} s, {} concurrent workers, each looping over: 60% refresh, 10% concurrent refresh pair on \
                 two replicas, 10% login through the form + code exchange, 20% JWKS read",
                held.as_secs_f64(),
                load.workers.load(SeqCst)
            ),
        )
        .row("requests sent / answered", format!("{} / {}", s.sent.load(SeqCst), s.answered.load(SeqCst)))
        .row(
            "logins / refreshes / concurrent pairs / JWKS reads",
            format!(
                "{} / {} / {} / {}",
                s.logins.load(SeqCst),
                s.refreshes.load(SeqCst),
                s.concurrent_pairs.load(SeqCst),
                s.jwks.load(SeqCst)
            ),
        )
        .row("failures by kind", s.failures_text())
        .row(
            "retries (answered elsewhere or after the restart)",
            format!("{} ({})", s.retries.load(SeqCst), s.retried_ok.load(SeqCst)),
        )
        .row("duplicate rotations", s.duplicate_rotations.load(SeqCst))
        .row("refresh families broken", s.families_broken.load(SeqCst))
        .row("p50 / p99 latency", format!("{:.1?} / {:.1?}", s.quantile(0.5, None), s.quantile(0.99, None)))
    }

    /// Prints it, and appends it to `TOKENGATE_DRILLS_REPORT` if set.
    #[allow(clippy::print_stdout)] // the drill's table is its report
    pub fn print(&self) {
        let mut md = format!("\n### {}\n\n| | |\n| --- | --- |\n", self.title);
        for (k, v) in &self.rows {
            md.push_str(&format!("| {k} | {} |\n", v.replace('|', "\\|")));
        }
        println!("{md}");
        if let Ok(path) = std::env::var("TOKENGATE_DRILLS_REPORT") {
            use std::io::Write;
            let mut f = std::fs::OpenOptions::new().create(true).append(true).open(path).unwrap();
            f.write_all(md.as_bytes()).unwrap();
        }
    }
}
