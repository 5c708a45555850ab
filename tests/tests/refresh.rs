//! Sessions outliving their ID token: refresh with the cookie's refresh token when the cached ID token is
//! missing (another gateway, a restart) or expiring, the rotated refresh token in `Set-Cookie`, a failed
//! refresh ending the session, and the issuer going down.

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;
use tests::Request;

fn bearer_of(seen: &[tests::HeaderPair]) -> String {
    header(seen, "authorization").unwrap().strip_prefix("Bearer ").unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_id_token_is_refreshed_and_the_rotated_refresh_token_is_set_in_the_cookie() {
    let issuer = Issuer::start().await;
    let w = worker(&issuer, json!({})).await;
    let mut jar = browser_login(&w, "jane@example.com", "/").await;
    let (_, seen) = send(&w, jar.apply(Request::get(HOST, "/"))).await;
    let first = bearer_of(&seen.unwrap());

    advance(&issuer, &[&w], Duration::from_secs(11 * 60));
    let before = jar.clone();
    let (r, seen) = send(&w, jar.apply(Request::get(HOST, "/"))).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let second = bearer_of(&seen.expect("the request waited for the refresh, then went upstream"));
    assert_ne!(first, second, "a new ID token");
    assert!(claims(&second)["exp"].as_i64().unwrap() > claims(&first)["exp"].as_i64().unwrap());
    jar.store(&r);
    assert_ne!(jar.0, before.0, "the rotated refresh token is sent back in Set-Cookie");
    assert!(w.metric("tokengate.refreshes_succeeded") >= 1, "{}", w.logs().text());

    // The new cookie works; the old one (rotated refresh token) only within the issuer's reuse window.
    advance(&issuer, &[&w], Duration::from_secs(11 * 60));
    let (r, seen) = send(&w, jar.apply(Request::get(HOST, "/"))).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(seen.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_gateway_without_the_cached_id_token_re_mints_it_from_the_cookie() {
    let issuer = Issuer::start().await;
    let a = worker(&issuer, json!({})).await;
    let b = worker(&issuer, json!({})).await; // separate shared data: another Envoy
    let jar = browser_login(&a, "admin@example.com", "/").await;
    let (r, seen) = send(&b, jar.apply(Request::get(HOST, "/"))).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(claims(&bearer_of(&seen.unwrap()))["email"], "admin@example.com");
    assert!(!r.headers_named("set-cookie").is_empty(), "the rotated refresh token goes back to the browser");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_of_one_envoy_share_the_cached_id_token() {
    let issuer = Issuer::start().await;
    let store = tests::shared_store();
    let w1 = worker_with_store(&issuer, json!({}), store.clone()).await;
    let w2 = worker_with_store(&issuer, json!({}), store).await;
    let jar = browser_login(&w1, "jane@example.com", "/").await;
    issuer.stop().await;
    let (r, seen) = send(&w2, jar.apply(Request::get(HOST, "/"))).await;
    assert_eq!(r.status, 200, "the second worker finds the ID token in shared data: {}", r.text());
    assert!(seen.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_refresh_token_ends_the_session_and_starts_a_login() {
    let issuer = Issuer::start().await;
    let w = worker(&issuer, json!({})).await;
    let jar = browser_login(&w, "jane@example.com", "/").await;
    let (_, seen) = send(&w, jar.apply(Request::get(HOST, "/"))).await;
    let sid = claims(&bearer_of(&seen.unwrap()))["sid"].as_str().unwrap().to_owned();
    for family in issuer.session_families(&sid).await {
        issuer.state.storage.delete_refresh_family(&family).await.unwrap();
    }

    advance(&issuer, &[&w], Duration::from_secs(11 * 60));
    let (r, seen) = send(&w, jar.apply(Request::get(HOST, "/page").navigation())).await;
    assert!(seen.is_none());
    assert_eq!(r.status, 302, "a new login: {}", r.text());
    assert!(r.header("location").unwrap().starts_with(&format!("{}/auth?", issuer.url)));
    let (r, _) = send(&w, jar.apply(Request::get(HOST, "/api").header("accept", "application/json"))).await;
    assert_eq!(r.status, 401, "non-navigations get 401");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issuer_down_cached_sessions_keep_working_and_new_logins_get_503() {
    let issuer = Issuer::start().await;
    let w = worker(&issuer, json!({})).await;
    let jar = browser_login(&w, "jane@example.com", "/").await;
    issuer.stop().await;

    let (r, seen) = send(&w, jar.apply(Request::get(HOST, "/"))).await;
    assert_eq!(r.status, 200);
    assert!(seen.is_some(), "a session with a valid cached ID token keeps working");

    // A session whose ID token expired while the issuer is down cannot be refreshed: 503, session kept.
    advance(&issuer, &[&w], Duration::from_secs(11 * 60));
    let (r, seen) = send(&w, jar.apply(Request::get(HOST, "/").navigation())).await;
    assert!(seen.is_none());
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(r.text().to_lowercase().contains("identity provider"), "{}", r.text());

    // Now that the filter has seen the issuer fail, a new login gets the same page instead of a redirect
    // to an issuer that does not answer.
    let (r, seen) = send(&w, Request::get(HOST, "/").navigation()).await;
    assert!(seen.is_none());
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(r.text().to_lowercase().contains("identity provider"), "{}", r.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_that_starts_while_the_issuer_is_down_fails_closed() {
    let issuer = Issuer::start().await;
    issuer.stop().await;
    let w = worker(&issuer, json!({})).await;
    let token = "eyJhbGciOiJSUzI1NiIsImtpZCI6IngifQ.eyJzdWIiOiJ4In0.c2ln";
    let (r, seen) = send(&w, Request::get(HOST, "/api").header("authorization", &format!("Bearer {token}"))).await;
    assert!(seen.is_none(), "nothing goes upstream without keys");
    assert!(r.status == 503 || r.status == 401, "{} {}", r.status, r.text());
    let (r, seen) = send(&w, Request::get(HOST, "/").navigation()).await;
    assert!(seen.is_none());
    assert_eq!(r.status, 503, "{}", r.text());
}
