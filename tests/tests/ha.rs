//! High availability: two gateways (separate Envoys: separate shared data, same cookie secrets) in front
//! of one issuer. A session started on one works on both, survives the loss of either, and when its ID
//! token expires both gateways refresh it at the same moment without anyone being logged out, thanks to
//! the issuer's refresh-token reuse interval.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use serde_json::json;
use tests::Request;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateways_share_sessions_survive_a_stop_and_refresh_concurrently() {
    let issuer = Issuer::start().await;
    let a = Arc::new(worker(&issuer, json!({})).await);
    let b = Arc::new(worker(&issuer, json!({})).await);
    let mut jar = browser_login(&a, "admin@example.com", "/").await;

    // Alternate between the gateways; the second one re-mints the ID token from the cookie once.
    let mut served = [0usize; 2];
    for i in 0..10 {
        let g = if i % 2 == 0 { &a } else { &b };
        let (r, seen) = send(g, jar.apply(Request::get(HOST, "/"))).await;
        assert_eq!(r.status, 200, "request {i}: {}", r.text());
        assert!(seen.is_some());
        jar.store(&r);
        served[i % 2] += 1;
    }

    // The ID token expires; the same cookie hits both gateways at once, four requests each.
    advance(&issuer, &[&a, &b], Duration::from_secs(11 * 60));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..8 {
        let g = if i % 2 == 0 { a.clone() } else { b.clone() };
        let request = jar.apply(Request::get(HOST, "/"));
        tasks.spawn(async move { send(&g, request).await });
    }
    let mut refreshed_ok = 0;
    let mut cookies = Vec::new();
    while let Some(result) = tasks.join_next().await {
        let (r, seen) = result.unwrap();
        assert_eq!(r.status, 200, "a concurrent refresh failed: {}", r.text());
        let bearer = header(&seen.unwrap(), "authorization").unwrap().to_owned();
        assert_eq!(claims(bearer.trim_start_matches("Bearer "))["email"], "admin@example.com");
        refreshed_ok += 1;
        if !r.headers_named("set-cookie").is_empty() {
            cookies.push(r);
        }
    }
    assert_eq!(refreshed_ok, 8, "every concurrent request succeeded");
    assert!(!cookies.is_empty(), "the rotated refresh token went back to the browser");
    let (_, seen) = send(&b, jar.apply(Request::get(HOST, "/"))).await;
    let sid = claims(header(&seen.unwrap(), "authorization").unwrap().trim_start_matches("Bearer "))["sid"]
        .as_str()
        .unwrap()
        .to_owned();
    let family = issuer.state.storage.list_refresh_family(&sid).await.unwrap();
    let live = family.iter().filter(|t| t.rotated_at.is_none()).count();
    assert_eq!(live, 1, "one live refresh token for the session after the concurrent refreshes");

    // Gateway A goes away. The browser keeps the newest cookie and continues on B, even after another
    // expiry (B re-mints from the cookie's refresh token).
    jar.store(cookies.last().unwrap());
    drop(a);
    advance(&issuer, &[&b], Duration::from_secs(11 * 60));
    let (r, seen) = send(&b, jar.apply(Request::get(HOST, "/"))).await;
    assert_eq!(r.status, 200, "the survivor keeps the session: {}", r.text());
    assert!(seen.is_some());
    eprintln!(
        "HA: {} requests on gateway A and {} on B before the expiry; {refreshed_ok}/8 concurrent refreshes across both \
         succeeded ({} tokens in the session's family, {live} live); the session continued on B after A stopped",
        served[0],
        served[1],
        family.len()
    );
}
