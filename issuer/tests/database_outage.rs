//! The database goes away under a running issuer and comes back (part of issue 14's drills): while
//! PostgreSQL cannot be reached the token endpoint answers 503 `temporarily_unavailable` with
//! `Retry-After` and the login pages a 503 page (never a 500), nothing is lost, and the issuer recovers by
//! itself. The issuer reaches the
//! real server through a TCP relay the test can cut and restore on the same port, the way a network
//! partition or a database restart looks from the issuer. Needs the PostgreSQL server `make test` starts.

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};

use common::{http, Issuer, CLIENT, SECRET};
use issuer::clock::Clock;
use issuer::config::{Config, PostgresConfig, StorageConfig};
use serde_json::Value;
use tokio::task::JoinHandle;

static DATABASE: OnceLock<PostgresConfig> = OnceLock::new();

/// A TCP relay to `upstream` on a fixed loopback address; `cut` drops the listener and every connection.
struct Relay {
    addr: SocketAddr,
    upstream: String,
    tasks: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl Relay {
    async fn start(addr: SocketAddr, upstream: &str) -> Relay {
        let relay = Relay { addr, upstream: upstream.to_owned(), tasks: Arc::default() };
        relay.listen().await;
        relay
    }

    async fn listen(&self) {
        let listener = tokio::net::TcpListener::bind(self.addr).await.unwrap();
        let (upstream, tasks) = (self.upstream.clone(), self.tasks.clone());
        let accept = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let upstream = upstream.clone();
                let conn = tokio::spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(&upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                tasks.lock().unwrap().push(conn);
            }
        });
        self.tasks.lock().unwrap().push(accept);
    }

    fn cut(&self) {
        for t in self.tasks.lock().unwrap().drain(..) {
            t.abort();
        }
    }
}

async fn database() -> PostgresConfig {
    let url = std::env::var("TOKENGATE_TEST_POSTGRES").expect("TOKENGATE_TEST_POSTGRES: run through `make test`");
    let name = format!("outage_{}", std::process::id());
    let admin = sqlx::PgPool::connect(&url).await.unwrap();
    sqlx::query(&format!("CREATE DATABASE {name}")).execute(&admin).await.unwrap();
    let parsed = url::Url::parse(&url).unwrap();
    PostgresConfig {
        host: "127.0.0.1".into(),
        port: 0, // the relay's, set below
        database: name,
        user: parsed.username().to_owned(),
        password: None,
        ssl_mode: "disable".into(),
        ssl_ca_file: None,
        ssl_cert_file: None,
        ssl_key_file: None,
        max_open_conns: 4,
        connection_timeout: None,
        conn_max_lifetime: None,
    }
}

fn on_postgres(c: &mut Config) {
    c.storage = StorageConfig::Postgres(DATABASE.get().unwrap().clone());
}

async fn refresh(issuer: &Issuer, rt: &str) -> (u16, Option<String>, Value) {
    let r = http()
        .post(issuer.endpoint("/token"))
        .basic_auth(CLIENT, Some(SECRET))
        .form(&[("grant_type", "refresh_token"), ("refresh_token", rt)])
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let retry_after = r.headers().get("retry-after").map(|v| v.to_str().unwrap().to_owned());
    (status, retry_after, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL: `make test` provides one"]
async fn while_the_database_is_unreachable_refreshes_get_503_and_everything_works_again_after() {
    let url = url::Url::parse(&std::env::var("TOKENGATE_TEST_POSTGRES").unwrap()).unwrap();
    let upstream = format!("{}:{}", url.host_str().unwrap(), url.port().unwrap());
    let addr: SocketAddr = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let relay = Relay::start(addr, &upstream).await;
    let mut db = database().await;
    db.port = addr.port();
    let _ = DATABASE.set(db);
    let issuer = Issuer::start_in(Arc::new(tempfile::tempdir().unwrap()), on_postgres, Clock::system(), None).await;
    let t = issuer.tokens("jane@example.com").await;
    let rt = t["refresh_token"].as_str().unwrap().to_owned();

    relay.cut();
    let (status, retry_after, body) = refresh(&issuer, &rt).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"], "temporarily_unavailable");
    assert!(retry_after.is_some_and(|s| s.parse::<u64>().is_ok()), "Retry-After says when to come back");
    let keys = http().get(issuer.endpoint("/keys")).send().await.unwrap();
    assert_eq!(keys.status(), 200, "the loaded signing keys are still published");
    let status = |path: &'static str| {
        let url = issuer.endpoint(path);
        async move { http().get(url).send().await.unwrap().status().as_u16() }
    };
    assert_eq!(status("/healthz/ready").await, 503, "not ready: a load balancer sends traffic elsewhere");
    assert_eq!(status("/healthz/live").await, 200, "alive: nothing to restart");
    let page = http().get(issuer.auth_url("openid", "s")).send().await.unwrap();
    assert_eq!(page.status(), 503, "a person starting a login gets a page to retry, not a 500");
    assert!(page.headers().contains_key("retry-after"));
    assert!(page.text().await.unwrap().contains("Try again in a moment"));

    relay.listen().await;
    assert_eq!(status("/healthz/ready").await, 200, "ready again by itself");
    let (status, _, body) = refresh(&issuer, &rt).await;
    assert_eq!(status, 200, "recovered without a restart, and the refresh token survived: {body}");
    let (status, _, _) = refresh(&issuer, body["refresh_token"].as_str().unwrap()).await;
    assert_eq!(status, 200);
}
