//! The compiled filter in front of another OpenID Provider: panva's `oidc-provider` (OpenID Certified, npm,
//! pinned by `scripts/oidc-provider.sh`), served under a path like Keycloak's realms, with PKCE required,
//! strict refresh-token rotation (a reused refresh token revokes the whole grant) and offline access only
//! with `prompt=consent`. Logins go through the provider's own login and consent pages.
//!
//! `make test` installs the provider and runs these (`--include-ignored`); plain `cargo test` skips them.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use filter::session::{Keyring, Session};
use proxy_wasm_host::abi::v0_2_1::InMemoryStore;
use serde_json::{json, Value};
use tests::{FilterClock, Logs, Request, Worker, WorkerOptions};

const CALLBACK: &str = "http://127.0.0.1:8080/oauth2/callback";

#[path = "../../issuer/tests/common/oidc_provider.rs"]
mod provider;

use provider::{through_the_providers_pages, OidcProvider};

async fn start_provider() -> OidcProvider {
    provider::start_on(free_port(), json!([])).await
}

impl OidcProvider {
    /// Moves the provider's clock and the filter's forward together.
    async fn advance(&self, clock: &FilterClock, by: Duration) {
        let r = http().post(format!("{}/test-clock?advance={}", self.base, by.as_secs())).send().await.unwrap();
        assert_eq!(r.status(), 200);
        clock.advance(by);
    }
}

fn config(issuer: &str, extra: Value) -> String {
    let mut all = json!({"auth_request_params": {"prompt": "consent"}});
    for (k, v) in extra.as_object().unwrap() {
        all[k] = v.clone();
    }
    filter_config_for(issuer, all)
}

/// A filter VM whose `issuer` cluster is `cluster` (the provider, or a proxy in front of it).
async fn worker_for(cluster: &str, configuration: &str, store: Arc<InMemoryStore>, clock: Arc<FilterClock>) -> Worker {
    let options = WorkerOptions {
        clusters: [("issuer".to_owned(), cluster.to_owned())].into(),
        clock,
        store,
        logs: Arc::new(Logs::default()),
        ca_certificates: vec![],
        responder: None,
    };
    Worker::start(configuration, options).await.unwrap()
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
}

/// A browser login through the filter and the provider's pages: the jar with the session.
async fn login(w: &Worker, p: &OidcProvider) -> (Jar, String) {
    let mut jar = Jar::default();
    let (r, _) = send(w, Request::get(HOST, "/app").navigation()).await;
    assert_eq!(r.status, 302, "{}", r.text());
    jar.store(&r);
    let auth = r.header("location").unwrap().to_owned();
    assert!(auth.starts_with(&format!("{}/auth?", p.issuer)), "the issuer's path is kept: {auth}");
    let back = through_the_providers_pages(&p.base, &auth, "alice", CALLBACK).await;
    let callback = back.strip_prefix(&format!("http://{HOST}")).unwrap();
    let (r, _) = send(w, jar.apply(Request::get(HOST, callback).navigation())).await;
    assert_eq!(r.status, 302, "the code exchange starts a session: {}", r.text());
    assert_eq!(r.header("location"), Some(format!("http://{HOST}/app").as_str()), "the deep link survives");
    jar.store(&r);
    (jar, auth)
}

fn session_in(jar: &Jar) -> Session {
    let key: [u8; 32] =
        base64::Engine::decode(&base64::engine::general_purpose::STANDARD, SECRET_A).unwrap().try_into().unwrap();
    Keyring::new(&[key]).open("_tokengate", &jar.0["_tokengate"], 0).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs panva oidc-provider from npm: `make test` installs it"]
async fn login_refresh_under_concurrency_with_strict_rotation_and_sign_out_against_oidc_provider() {
    let p = start_provider().await;
    let store = tests::shared_store();
    let clock = FilterClock::frozen_at(now_ms());
    let configuration = config(&p.issuer, json!({}));
    let a = Arc::new(worker_for(&p.base, &configuration, store.clone(), clock.clone()).await);
    let b = Arc::new(worker_for(&p.base, &configuration, store, clock.clone()).await);
    let (jar, auth) = login(&a, &p).await;
    assert_eq!(query_param(&auth, "prompt").as_deref(), Some("consent"));
    assert!(query_param(&auth, "code_challenge").is_some());
    let first = session_in(&jar);
    assert!(first.refresh_token.is_some(), "offline access with prompt=consent");

    let (r, seen) = send(&a, jar.apply(Request::get(HOST, "/app"))).await;
    assert_eq!(r.status, 200);
    let seen = seen.unwrap();
    let token = header(&seen, "authorization").unwrap().trim_start_matches("Bearer ").to_owned();
    assert_eq!(claims(&token)["iss"], p.issuer.as_str());
    assert_eq!(header(&seen, "x-auth-request-email"), Some("alice@example.com"));

    // The ID token nears its expiry; eight requests with the same cookie at once, on two workers.
    p.advance(&clock, Duration::from_secs(3600 - 10)).await;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..8 {
        let w = if i % 2 == 0 { a.clone() } else { b.clone() };
        let request = jar.apply(Request::get(HOST, "/api").header("accept", "application/json"));
        tasks.spawn(async move { send(&w, request).await.0 });
    }
    let mut newest = None;
    while let Some(r) = tasks.join_next().await {
        let r = r.unwrap();
        assert_eq!(r.status, 200, "no request fails while one refreshes: {}", r.text());
        if !r.headers_named("set-cookie").is_empty() {
            newest = Some(r);
        }
    }
    assert_eq!(a.metric("tokengate.refreshes_succeeded"), 1, "one refresh for the burst, not one per request");
    let newest = newest.expect("the rotated refresh token reaches the browser");

    // A browser that missed that response is brought up to date, never handed the old token again.
    let (r, _) = send(&b, jar.apply(Request::get(HOST, "/api"))).await;
    assert_eq!(r.status, 200);
    let mut updated = jar.clone();
    updated.store(&r);
    assert_ne!(session_in(&updated).refresh_token, first.refresh_token, "the cookie carries the newest token");
    let mut jar = jar;
    jar.store(&newest);

    // Had any refresh token been presented twice, the provider would have revoked the grant by now.
    p.advance(&clock, Duration::from_secs(3600 - 10)).await;
    let (r, _) = send(&a, jar.apply(Request::get(HOST, "/api"))).await;
    assert_eq!(r.status, 200, "the grant is alive: {}", r.text());
    assert_eq!(a.metric("tokengate.refreshes_succeeded"), 2);
    jar.store(&r);
    let live = session_in(&jar).refresh_token.unwrap();

    // Sign-out: the refresh token is revoked and the browser goes to the provider's end-session endpoint.
    let (r, _) = send(&a, jar.apply(Request::get(HOST, "/oauth2/sign_out").navigation())).await;
    assert_eq!(r.status, 302);
    let end = r.header("location").unwrap().to_owned();
    assert!(end.starts_with(&format!("{}/session/end?", p.issuer)), "{end}");
    assert!(query_param(&end, "id_token_hint").is_some());
    let page = http().get(&end).send().await.unwrap();
    assert_eq!(page.status(), 200, "the provider's logout page accepts the hint and the redirect");
    let discovery: Value = http()
        .get(format!("{}/.well-known/openid-configuration", p.issuer))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let r = http()
        .post(discovery["token_endpoint"].as_str().unwrap())
        .basic_auth("gateway", Some("gateway-secret"))
        .form(&[("grant_type", "refresh_token"), ("refresh_token", live.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400, "the signed-out session's refresh token was revoked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs panva oidc-provider from npm: `make test` installs it"]
async fn without_prompt_consent_there_is_no_refresh_token_and_the_filter_says_why() {
    let p = start_provider().await;
    let configuration = config(&p.issuer, json!({"auth_request_params": {}}));
    let clock = FilterClock::frozen_at(now_ms());
    let w = worker_for(&p.base, &configuration, tests::shared_store(), clock.clone()).await;
    let (jar, auth) = login(&w, &p).await;
    assert_eq!(query_param(&auth, "prompt"), None);
    assert_eq!(session_in(&jar).refresh_token, None, "OpenID Connect Core §11: offline_access was dropped");
    assert_eq!(w.metric("tokengate.sessions_without_refresh_token"), 1);
    let logs = w.logs().text();
    assert!(logs.contains("no refresh token") && logs.contains("prompt"), "{logs}");
    // The session lasts the ID token's lifetime, then the browser signs in again.
    p.advance(&clock, Duration::from_secs(3600 + 5)).await;
    let (r, _) = send(&w, jar.apply(Request::get(HOST, "/app").navigation())).await;
    assert_eq!(r.status, 302);
}

/// Drops `id_token` from refresh-grant answers: OpenID Connect Core §12.2 allows it, and some providers
/// do it.
fn strip_id_token_on_refresh(request: &[u8], status: u16, _: &mut axum::http::HeaderMap, body: &mut Vec<u8>) {
    if status == 200 && String::from_utf8_lossy(request).contains("grant_type=refresh_token") {
        let mut v: Value = serde_json::from_slice(body).unwrap();
        v.as_object_mut().unwrap().remove("id_token");
        *body = v.to_string().into_bytes();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs panva oidc-provider from npm: `make test` installs it"]
async fn a_refresh_without_an_id_token_keeps_the_session_while_the_cached_one_lasts() {
    let p = start_provider().await;
    let proxy = start_rewriting_proxy(&p.base, strip_id_token_on_refresh).await;
    let clock = FilterClock::frozen_at(now_ms());
    let w = worker_for(&proxy, &config(&p.issuer, json!({})), tests::shared_store(), clock.clone()).await;
    let (mut jar, _) = login(&w, &p).await;
    let first = session_in(&jar).refresh_token;

    p.advance(&clock, Duration::from_secs(3600 - 10)).await;
    let (r, seen) = send(&w, jar.apply(Request::get(HOST, "/api").header("accept", "application/json"))).await;
    assert_eq!(r.status, 200, "the cached ID token still serves: {}", r.text());
    assert!(seen.is_some());
    assert_eq!(w.metric("tokengate.refreshes_without_id_token"), 1);
    jar.store(&r);
    assert_ne!(session_in(&jar).refresh_token, first, "the rotated refresh token is kept all the same");

    p.advance(&clock, Duration::from_secs(20)).await;
    let (r, seen) = send(&w, jar.apply(Request::get(HOST, "/api").header("accept", "application/json"))).await;
    assert_eq!(r.status, 401, "no ID token and the cached one expired: the session ends cleanly");
    assert!(seen.is_none());
    assert!(r.headers_named("set-cookie").iter().any(|c| c.starts_with("_tokengate=;")), "{:?}", r.headers);
}
