//! Browser journeys through the compiled filter against a real issuer: login, the session on later
//! requests, several tabs, tampered and foreign cookies, non-navigations, access rules and sign-out.

mod common;

use common::*;
use serde_json::json;
use tests::Request;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_login_then_requests_carry_the_id_token_upstream() {
    let issuer = Issuer::start().await;
    let w = worker(&issuer, json!({})).await;
    let jar = browser_login(&w, "admin@example.com", "/dashboard?tab=1").await;

    let forged = Request::get(HOST, "/dashboard")
        .header("authorization", "Bearer forged")
        .header("x-auth-request-email", "mallory@example.com");
    let (r, seen) = send(&w, jar.apply(forged)).await;
    assert_eq!(r.status, 200);
    let seen = seen.expect("a request with a session goes upstream");
    let bearer = header(&seen, "authorization").unwrap().strip_prefix("Bearer ").unwrap();
    let id = claims(bearer);
    assert_eq!(id["email"], "admin@example.com");
    assert_eq!(id["iss"], issuer.url);
    assert_eq!(id["aud"], "gateway");
    assert_eq!(header(&seen, "x-auth-request-email"), Some("admin@example.com"), "the client's copy is replaced");
    assert_eq!(seen.iter().filter(|(k, _)| k == b"x-auth-request-email").count(), 1);
    assert_eq!(header(&seen, "x-auth-request-groups"), Some("admins,developers"));

    // A reload uses the ID token cached in shared data: no call to the issuer.
    issuer.stop().await;
    let (r, seen) = send(&w, jar.apply(Request::get(HOST, "/dashboard"))).await;
    assert_eq!(r.status, 200, "the cached session works without the issuer");
    assert!(header(&seen.unwrap(), "authorization").unwrap().ends_with(bearer));
    assert!(w.metric("tokengate.logins_succeeded") >= 1, "{}", w.logs().text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_tabs_can_log_in_at_once() {
    let issuer = Issuer::start().await;
    let w = worker(&issuer, json!({})).await;
    let mut jar = Jar::default();
    let (tab1, _) = send(&w, Request::get(HOST, "/one").navigation()).await;
    jar.store(&tab1);
    let (tab2, _) = send(&w, jar.apply(Request::get(HOST, "/two").navigation())).await;
    jar.store(&tab2);
    assert_eq!((tab1.status, tab2.status), (302, 302));

    let back2 = Browser::new().login(tab2.header("location").unwrap(), "jane@example.com", "password").await;
    let back1 = Browser::new().login(tab1.header("location").unwrap(), "jane@example.com", "password").await;
    for (back, path) in [(back2, "/two"), (back1, "/one")] {
        let callback = back.strip_prefix(&format!("http://{HOST}")).unwrap();
        let (r, _) = send(&w, jar.apply(Request::get(HOST, callback).navigation())).await;
        assert_eq!(r.status, 302, "{}", r.text());
        assert_eq!(r.header("location"), Some(format!("http://{HOST}{path}").as_str()));
        jar.store(&r);
    }
    let (r, seen) = send(&w, jar.apply(Request::get(HOST, "/one"))).await;
    assert_eq!(r.status, 200);
    assert!(seen.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callback_with_a_wrong_state_or_no_flow_cookie_is_refused() {
    let issuer = Issuer::start().await;
    let w = worker(&issuer, json!({})).await;
    let (r, _) = send(&w, Request::get(HOST, "/").navigation()).await;
    let auth = r.header("location").unwrap().to_owned();
    let back = Browser::new().login(&auth, "jane@example.com", "password").await;
    let callback = back.strip_prefix(&format!("http://{HOST}")).unwrap();
    let (r, seen) = send(&w, Request::get(HOST, callback).navigation()).await;
    assert!(seen.is_none());
    assert!((400..500).contains(&r.status), "no flow cookie: {} {}", r.status, r.text());
    let mut jar = Jar::default();
    let (start, _) = send(&w, Request::get(HOST, "/").navigation()).await;
    jar.store(&start);
    let forged = callback.replace("state=", "state=x");
    let (r, _) = send(&w, jar.apply(Request::get(HOST, &forged).navigation())).await;
    assert!((400..500).contains(&r.status), "wrong state: {} {}", r.status, r.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampered_and_foreign_session_cookies_start_a_new_login() {
    let issuer = Issuer::start().await;
    let w = worker(&issuer, json!({})).await;
    let jar = browser_login(&w, "jane@example.com", "/").await;
    let (name, value) = jar.0.iter().find(|(k, _)| k.starts_with("_tokengate") && !k.contains("csrf")).unwrap();

    let mut tampered = Jar::default();
    let mut bytes = value.clone().into_bytes();
    let i = bytes.len() / 2;
    bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
    tampered.0.insert(name.clone(), String::from_utf8(bytes).unwrap());
    let (r, seen) = send(&w, tampered.apply(Request::get(HOST, "/").navigation())).await;
    assert!(seen.is_none(), "a tampered cookie is not a session");
    assert_eq!(r.status, 302);

    // A cookie sealed by another deployment (other secret) is not a session either.
    let other = worker(&issuer, json!({"cookie_secrets": [SECRET_B]})).await;
    let foreign = browser_login(&other, "jane@example.com", "/").await;
    let (r, seen) = send(&w, foreign.apply(Request::get(HOST, "/").navigation())).await;
    assert!(seen.is_none(), "a foreign cookie is not a session");
    assert_eq!(r.status, 302);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotated_cookie_secrets_still_open_old_sessions() {
    let issuer = Issuer::start().await;
    let old = worker(&issuer, json!({"cookie_secrets": [SECRET_A]})).await;
    let jar = browser_login(&old, "jane@example.com", "/").await;
    let rotated = worker(&issuer, json!({"cookie_secrets": [SECRET_B, SECRET_A]})).await;
    let (r, seen) = send(&rotated, jar.apply(Request::get(HOST, "/"))).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(seen.is_some(), "the second key still opens the cookie");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_navigations_without_a_session_get_401_not_a_redirect() {
    let issuer = Issuer::start().await;
    let w = worker(&issuer, json!({})).await;
    for request in [
        Request::get(HOST, "/api/items").header("accept", "application/json"),
        Request::get(HOST, "/api/items").navigation().header("x-requested-with", "XMLHttpRequest"),
        Request { method: "POST".into(), ..Request::get(HOST, "/api/items").navigation() },
    ] {
        let (r, seen) = send(&w, request).await;
        assert!(seen.is_none());
        assert_eq!(r.status, 401);
        assert!(r.header("location").is_none());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allowed_groups_refuse_other_users_with_403() {
    let issuer = Issuer::start().await;
    let w = worker(&issuer, json!({"allowed_groups": ["admins"]})).await;
    let jar = browser_login(&w, "admin@example.com", "/").await;
    let (r, _) = send(&w, jar.apply(Request::get(HOST, "/"))).await;
    assert_eq!(r.status, 200);

    let mut jar = Jar::default();
    let (r, _) = send(&w, Request::get(HOST, "/").navigation()).await;
    jar.store(&r);
    let back = Browser::new().login(r.header("location").unwrap(), "jane@example.com", "password").await;
    let callback = back.strip_prefix(&format!("http://{HOST}")).unwrap();
    let (r, seen) = send(&w, jar.apply(Request::get(HOST, callback).navigation())).await;
    assert!(seen.is_none());
    assert_eq!(r.status, 403, "jane is not in admins: {}", r.text());
    assert!(r.text().contains("<html") || r.text().contains("<!doctype"), "a short page: {}", r.text());
    jar.store(&r);
    assert!(
        jar.0.keys().all(|k| k.contains("_csrf_")),
        "no session for a refused user: {:?}",
        jar.0.keys().collect::<Vec<_>>()
    );
    let (r, seen) = send(&w, jar.apply(Request::get(HOST, "/").navigation())).await;
    assert!(seen.is_none(), "nothing reaches the upstream for a refused user");
    assert_eq!(r.status, 302, "the next request asks for a login again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_out_revokes_the_refresh_token_clears_cookies_and_goes_to_the_issuer() {
    let issuer = Issuer::start().await;
    let w = worker(&issuer, json!({})).await;
    let mut jar = browser_login(&w, "jane@example.com", "/").await;
    let (_, seen) = send(&w, jar.apply(Request::get(HOST, "/"))).await;
    let bearer = header(&seen.unwrap(), "authorization").unwrap().strip_prefix("Bearer ").unwrap().to_owned();
    let sid = claims(&bearer)["sid"].as_str().unwrap().to_owned();
    assert_eq!(live_refresh_tokens(&issuer, &sid).await, 1);

    let (r, _) = send(&w, jar.apply(Request::get(HOST, "/oauth2/sign_out").navigation())).await;
    assert_eq!(r.status, 302, "{}", r.text());
    let location = r.header("location").unwrap();
    assert!(location.starts_with(&format!("{}/logout?", issuer.url)), "{location}");
    assert!(query_param(location, "id_token_hint").is_some());
    assert_eq!(query_param(location, "post_logout_redirect_uri").as_deref(), Some(format!("http://{HOST}/").as_str()));
    jar.store(&r);
    assert!(
        jar.0.keys().all(|k| k.contains("csrf")),
        "session cookies cleared: {:?}",
        jar.0.keys().collect::<Vec<_>>()
    );
    assert_eq!(live_refresh_tokens(&issuer, &sid).await, 0, "the refresh token was revoked at the issuer");

    let logout = http().get(location).send().await.unwrap();
    assert_eq!(logout.status(), 303, "the issuer accepts the hint and the registered URI");

    let (r, seen) = send(&w, jar.apply(Request::get(HOST, "/").navigation())).await;
    assert!(seen.is_none());
    assert_eq!(r.status, 302, "asked to log in again");
}

/// Refresh tokens of the families started in the session the ID token's `sid` names.
async fn live_refresh_tokens(issuer: &Issuer, sid: &str) -> usize {
    issuer.session_refresh_tokens(sid).await.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_configuration_names_the_key_and_the_filter_does_not_start() {
    let issuer = Issuer::start().await;
    let options = tests::WorkerOptions {
        clusters: Default::default(),
        clock: tests::FilterClock::system(),
        store: Default::default(),
        logs: Default::default(),
        ca_certificates: vec![],
        responder: None,
    };
    let bad = filter_config(&issuer, json!({"cookie": {"secure": "yes"}, "unknown_key": 1}));
    match tests::Worker::start(&bad, options).await {
        Err(tests::HostError::Refused { logs }) => {
            assert!(logs.contains("cookie.secure"), "{logs}");
            assert!(logs.contains("unknown_key"), "{logs}");
        }
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("a bad configuration was accepted"),
    }
}
