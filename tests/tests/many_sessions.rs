//! Thousands of active sessions through the compiled filter (issue 17): once each session's ID token is in
//! the shared cache, later requests are served from it; no session goes back to the issuer before its ID
//! token nears expiry. With the first, direct-mapped design (4,096 slots) about half of 3,000 sessions
//! evicted each other and refreshed on every request.

mod common;

use common::*;
use filter::random::SystemRandom;
use filter::session::{Keyring, Session};
use issuer::token::RefreshTokenString;
use serde_json::json;
use tests::Request;

const SESSIONS: usize = 3_000;

/// `n` sessions as the filter would have sealed them, each with its own refresh-token family at the issuer
/// (cloned from one real login, so each refresh is a real rotation).
async fn sessions(issuer: &Issuer, n: usize) -> Vec<String> {
    let t = issuer.tokens_for("jane@example.com", "openid email groups offline_access").await;
    let presented = RefreshTokenString::parse(t["refresh_token"].as_str().unwrap()).unwrap();
    let template = issuer.state.storage.get_refresh_token(&presented.id).await.unwrap();
    let key: [u8; 32] =
        base64::Engine::decode(&base64::engine::general_purpose::STANDARD, SECRET_A).unwrap().try_into().unwrap();
    let keyring = Keyring::new(&[key]);
    let rng = SystemRandom::new();
    let mut cookies = Vec::with_capacity(n);
    for i in 0..n {
        let rt = RefreshTokenString::random();
        let mut record = template.clone();
        record.id = rt.id.clone();
        record.secret_hash = rt.secret_hash();
        record.family_id = format!("family-{i}");
        issuer.state.storage.create_refresh_token(record).await.unwrap();
        let session = Session {
            id: format!("{i:032x}"),
            refresh_token: Some(rt.encode()),
            expires_at: u64::MAX / 2,
            identity: None,
            generation: 0,
        };
        cookies.push(format!("_tokengate={}", keyring.seal("_tokengate", &session, &rng).unwrap()));
    }
    cookies
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_sessions_stay_cached_and_none_refreshes_twice_before_expiry() {
    let issuer = Issuer::start().await;
    let store = tests::shared_store();
    let a = worker_with_store(&issuer, json!({}), store.clone()).await;
    let b = worker_with_store(&issuer, json!({}), store).await;
    let cookies = sessions(&issuer, SESSIONS).await;

    // First round: every session refreshes once (its ID token is not cached yet).
    for (i, cookie) in cookies.iter().enumerate() {
        let w = if i % 2 == 0 { &a } else { &b };
        let (r, _) = send(w, Request::get(HOST, "/api").header("cookie", cookie)).await;
        assert_eq!(r.status, 200, "session {i}: {}", r.text());
    }
    assert_eq!(a.metric("tokengate.refreshes_succeeded"), SESSIONS as u64);

    // Later rounds, in another order and on the other worker: all from the cache.
    for round in 0..2 {
        for (i, cookie) in cookies.iter().enumerate().rev() {
            let w = if (i + round) % 2 == 0 { &b } else { &a };
            let (r, _) = send(w, Request::get(HOST, "/api").header("cookie", cookie)).await;
            assert_eq!(r.status, 200);
        }
    }
    assert_eq!(
        a.metric("tokengate.refreshes_succeeded"),
        SESSIONS as u64,
        "no session went back to the issuer while its ID token was valid"
    );
    assert_eq!(a.metric("tokengate.session_cache_hits"), 2 * SESSIONS as u64);
}
