//! Two issuer replicas on one PostgreSQL database, as `envoy/k8s/issuer.yaml` deploys them: a login on one
//! refreshes on the other, concurrent refreshes across both rotate once, both publish the same keys, and
//! the brute-force buckets count attempts made on either. Needs the PostgreSQL server `make test` starts.

mod common;

use std::sync::{Arc, OnceLock};

use common::{http, Browser, Issuer};
use issuer::clock::Clock;
use issuer::config::{Config, PostgresConfig, StorageConfig};
use serde_json::Value;

static DATABASE: OnceLock<PostgresConfig> = OnceLock::new();

/// A fresh database on the test server, shared by both replicas of this test.
async fn database() -> PostgresConfig {
    let url = std::env::var("TOKENGATE_TEST_POSTGRES").expect("TOKENGATE_TEST_POSTGRES: run through `make test`");
    let parsed = url::Url::parse(&url).unwrap();
    let name = format!("replicas_{}", std::process::id());
    let admin = sqlx::PgPool::connect(&url).await.unwrap();
    sqlx::query(&format!("CREATE DATABASE {name}")).execute(&admin).await.unwrap();
    PostgresConfig {
        host: parsed.host_str().unwrap().to_owned(),
        port: parsed.port().unwrap(),
        database: name,
        user: parsed.username().to_owned(),
        password: None,
        ssl_mode: "disable".into(),
        ssl_ca_file: None,
        max_open_conns: 8,
        ssl_cert_file: None,
        ssl_key_file: None,
        connection_timeout: None,
        conn_max_lifetime: None,
    }
}

fn on_postgres(c: &mut Config) {
    c.storage = StorageConfig::Postgres(DATABASE.get().unwrap().clone());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL: `make test` provides one"]
async fn two_replicas_share_codes_refresh_tokens_keys_and_login_buckets() {
    let _ = DATABASE.set(database().await);
    let clock = Clock::frozen();
    let a = Issuer::start_in(Arc::new(tempfile::tempdir().unwrap()), on_postgres, clock.clone(), None).await;
    let b = Issuer::start_in(Arc::new(tempfile::tempdir().unwrap()), on_postgres, clock.clone(), None).await;

    let keys = |i: &Issuer| {
        let url = i.endpoint("/keys");
        async move { http().get(url).send().await.unwrap().json::<Value>().await.unwrap() }
    };
    assert_eq!(keys(&a).await, keys(&b).await, "both replicas publish the same keys");

    // A login on A, the code redeemed on B (a load balancer may send them anywhere).
    let code = a.login("openid email offline_access", "jane@example.com", "password").await;
    let (status, tokens) = b.exchange(&code).await;
    assert_eq!(status, 200, "{tokens}");
    let rt = tokens["refresh_token"].as_str().unwrap().to_owned();

    // Concurrent refreshes of one token on both replicas: all succeed with one successor.
    let r = tokio::join!(a.refresh(&rt), b.refresh(&rt), a.refresh(&rt), b.refresh(&rt));
    let results = [r.0, r.1, r.2, r.3];
    let successors: std::collections::HashSet<_> = results
        .iter()
        .map(|(status, body)| {
            assert_eq!(*status, 200, "{body}");
            body["refresh_token"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(successors.len(), 1, "one rotation across both replicas");
    let next = successors.into_iter().next().unwrap();

    // The code is single-use across replicas, and its replay on the other one revokes the session.
    let (status, _) = a.exchange(&code).await;
    assert_eq!(status, 400);
    assert_eq!(b.refresh(&next).await.0, 400, "the replay revoked the family on both replicas");

    // Brute force: ten failures on each replica spend the same per-user bucket.
    let auth = a.auth_url("openid", "bf");
    let browser = Browser::new();
    for issuer in [&a, &b] {
        let (url, req, csrf) = browser.open_login(&auth.replace(&a.url, &issuer.url)).await;
        for _ in 0..10 {
            let (status, _, _) = browser.submit(&url, &req, &csrf, "jane@example.com", "wrong").await;
            assert_eq!(status, 401);
        }
    }
    let (url, req, csrf) = browser.open_login(&auth).await;
    let (status, _, _) = browser.submit(&url, &req, &csrf, "jane@example.com", "password").await;
    assert_eq!(status, 429, "the 21st attempt is refused, whichever replica saw the first 20");
}
