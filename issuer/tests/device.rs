//! The device authorization grant (RFC 8628) over real HTTP: the device authorization endpoint, the
//! verification page and the login that answers it, polling with `authorization_pending`, `slow_down`,
//! `expired_token` and `access_denied`, and the tokens the approval is redeemed for.

mod common;

use std::time::Duration;

use common::{claims, hidden_field, http, Browser, Issuer, CLIENT, SECRET};
use issuer::config::Client;
use serde_json::Value;

const SCOPE: &str = "openid email groups offline_access";

fn error(body: &Value) -> &str {
    body["error"].as_str().unwrap_or("<none>")
}

/// Starts a device authorization for the example app (client_secret_basic).
async fn device_code(issuer: &Issuer, scope: &str) -> Value {
    let r = http()
        .post(issuer.endpoint("/device/code"))
        .basic_auth(CLIENT, Some(SECRET))
        .form(&[("scope", scope)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["cache-control"], "no-store");
    r.json().await.unwrap()
}

async fn poll(issuer: &Issuer, device_code: &str) -> (u16, Value) {
    issuer.token(&[("grant_type", "urn:ietf:params:oauth:grant-type:device_code"), ("device_code", device_code)]).await
}

/// Types the user code on the verification page; returns the login page's URL and its `req` and `csrf`.
async fn enter_code(issuer: &Issuer, browser: &Browser, user_code: &str) -> (String, String, String) {
    let r = browser.client.post(issuer.endpoint("/device")).form(&[("user_code", user_code)]).send().await.unwrap();
    assert_eq!(r.status(), 303, "a valid code goes on to the login form");
    let login_url = format!("{}{}", issuer.url, r.headers()["location"].to_str().unwrap());
    assert!(login_url.contains("/login?req="), "{login_url}");
    let html = browser.client.get(&login_url).send().await.unwrap().text().await.unwrap();
    let shown: String = user_code.to_uppercase().chars().filter(|c| *c != '-').collect();
    let shown = format!("{}-{}", &shown[..4], &shown[4..]);
    assert!(html.contains(&shown), "the login form shows the code to compare");
    (login_url.clone(), hidden_field(&html, "req"), hidden_field(&html, "csrf"))
}

#[tokio::test]
async fn device_flow_issues_the_same_tokens_as_the_code_grant() {
    let issuer = Issuer::start().await;
    let d = device_code(&issuer, SCOPE).await;
    let user_code = d["user_code"].as_str().unwrap();
    assert_eq!(user_code.len(), 9, "XXXX-XXXX: {user_code}");
    assert_eq!(&user_code[4..5], "-");
    assert!(user_code.chars().filter(|c| *c != '-').all(|c| "BCDFGHJKLMNPQRSTVWXZ".contains(c)), "{user_code}");
    assert_eq!(d["verification_uri"], issuer.endpoint("/device"));
    assert_eq!(d["verification_uri_complete"], issuer.endpoint(&format!("/device?user_code={user_code}")));
    assert_eq!(d["expires_in"], 300);
    assert_eq!(d["interval"], 5);
    let device_code = d["device_code"].as_str().unwrap();

    let (status, body) = poll(&issuer, device_code).await;
    assert_eq!((status, error(&body)), (400, "authorization_pending"));

    let browser = Browser::new();
    let page = browser.client.get(d["verification_uri_complete"].as_str().unwrap()).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains(&format!("value=\"{user_code}\"")), "the code is filled in");
    let (login_url, req, csrf) = enter_code(&issuer, &browser, &user_code.to_lowercase().replace('-', "")).await;
    let (status, location, _) = browser.submit(&login_url, &req, &csrf, "jane@example.com", "password").await;
    assert_eq!(status, 303);
    let location = location.unwrap();
    assert_eq!(location, "/device/approved");
    let done = browser.client.get(issuer.endpoint(&location)).send().await.unwrap();
    assert_eq!(done.status(), 200);
    assert!(done.text().await.unwrap().contains("Return to your terminal"));

    issuer.clock.advance(Duration::from_secs(5));
    let (status, t) = poll(&issuer, device_code).await;
    assert_eq!(status, 200, "{t}");
    assert_eq!(t["token_type"], "Bearer");
    assert_eq!(t["scope"], SCOPE);
    let id = claims(t["id_token"].as_str().unwrap());
    assert_eq!(id["iss"], issuer.url);
    assert_eq!(id["aud"], CLIENT);
    assert_eq!(id["email"], "jane@example.com");
    assert_eq!(id["groups"], serde_json::json!(["developers"]));
    assert!(id.get("nonce").is_none() && id.get("sid").is_some());

    let (status, refreshed) = issuer.refresh(t["refresh_token"].as_str().unwrap()).await;
    assert_eq!(status, 200, "the refresh token works like the code grant's: {refreshed}");
    let (status, body) = poll(&issuer, device_code).await;
    assert_eq!((status, error(&body)), (400, "invalid_grant"), "a device code is redeemed once");
}

#[tokio::test]
async fn polling_faster_than_the_interval_gets_slow_down_and_a_longer_interval() {
    let issuer = Issuer::start().await;
    let d = device_code(&issuer, "openid").await;
    let device_code = d["device_code"].as_str().unwrap();
    assert_eq!(error(&poll(&issuer, device_code).await.1), "authorization_pending");
    assert_eq!(error(&poll(&issuer, device_code).await.1), "slow_down", "a second poll in the same second");
    issuer.clock.advance(Duration::from_secs(5));
    assert_eq!(error(&poll(&issuer, device_code).await.1), "slow_down", "the interval grew to 10 s");
    issuer.clock.advance(Duration::from_secs(15));
    assert_eq!(error(&poll(&issuer, device_code).await.1), "authorization_pending", "15 s is enough");
}

#[tokio::test]
async fn expired_device_codes_get_expired_token_and_their_user_code_is_refused() {
    let issuer = Issuer::start().await;
    let d = device_code(&issuer, "openid").await;
    issuer.clock.advance(Duration::from_secs(301));
    let (status, body) = poll(&issuer, d["device_code"].as_str().unwrap()).await;
    assert_eq!((status, error(&body)), (400, "expired_token"));
    let r = Browser::new()
        .client
        .post(issuer.endpoint("/device"))
        .form(&[("user_code", d["user_code"].as_str().unwrap())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("unknown, expired or already used"));

    issuer.clock.advance(Duration::from_secs(1));
    assert!(issuer::gc::collect(&issuer.state).await.unwrap() >= 1, "garbage collection removes it");
    let (_, body) = poll(&issuer, d["device_code"].as_str().unwrap()).await;
    assert_eq!(error(&body), "invalid_grant", "a collected device code is simply unknown");
}

#[tokio::test]
async fn denying_on_the_login_form_gets_access_denied() {
    let issuer = Issuer::start().await;
    let d = device_code(&issuer, "openid").await;
    let browser = Browser::new();
    let (_, req, csrf) = enter_code(&issuer, &browser, d["user_code"].as_str().unwrap()).await;

    let forged =
        http().post(issuer.endpoint("/device/deny")).form(&[("req", &req), ("csrf", &csrf)]).send().await.unwrap();
    assert_eq!(forged.status(), 403, "without the browser's CSRF cookie the form is refused");

    let r = browser
        .client
        .post(issuer.endpoint("/device/deny"))
        .form(&[("req", &req), ("csrf", &csrf)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("Device denied"));
    let (status, body) = poll(&issuer, d["device_code"].as_str().unwrap()).await;
    assert_eq!((status, error(&body)), (400, "access_denied"));
}

#[tokio::test]
async fn the_device_login_form_keeps_its_csrf_binding_and_brute_force_buckets() {
    let issuer = Issuer::start().await;
    let d = device_code(&issuer, "openid").await;
    let browser = Browser::new();
    let (login_url, req, csrf) = enter_code(&issuer, &browser, d["user_code"].as_str().unwrap()).await;
    let forged = http()
        .post(issuer.endpoint("/login"))
        .form(&[
            ("req", req.as_str()),
            ("csrf", csrf.as_str()),
            ("login", "jane@example.com"),
            ("password", "password"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 403, "another browser cannot answer this login");
    for _ in 0..20 {
        let (status, _, _) = browser.submit(&login_url, &req, &csrf, "jane@example.com", "wrong").await;
        assert_eq!(status, 401);
    }
    let (status, _, _) = browser.submit(&login_url, &req, &csrf, "jane@example.com", "password").await;
    assert_eq!(status, 429, "the per-user bucket is the login form's");
    assert_eq!(error(&poll(&issuer, d["device_code"].as_str().unwrap()).await.1), "authorization_pending");
}

#[tokio::test]
async fn wrong_user_codes_spend_the_ip_bucket_until_429() {
    let issuer = Issuer::start_tuned(|c| {
        c.brute_force.per_ip_max_attempts = 3;
        c.brute_force.max_attempts = 3;
    })
    .await;
    let d = device_code(&issuer, "openid").await;
    let browser = Browser::new();
    for code in ["BCDF-GHJK", "BCDF-GHJL", "BCDF-GHJM"] {
        let r = browser.client.post(issuer.endpoint("/device")).form(&[("user_code", code)]).send().await.unwrap();
        assert_eq!(r.status(), 400, "{code} is unknown");
    }
    let r = browser
        .client
        .post(issuer.endpoint("/device"))
        .form(&[("user_code", d["user_code"].as_str().unwrap())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429, "even the right code waits once the bucket is empty");
    assert!(r.headers().get("retry-after").is_some());
    issuer.clock.advance(Duration::from_secs(2));
    enter_code(&issuer, &browser, d["user_code"].as_str().unwrap()).await;
}

#[tokio::test]
async fn public_clients_send_only_their_id_and_confidential_ones_must_authenticate() {
    let issuer = Issuer::start_tuned(|c| {
        c.static_clients.push(Client {
            id: "cli".into(),
            secret: None,
            public: true,
            name: "CLI".into(),
            redirect_uris: vec![],
            trusted_peers: vec![],
            post_logout_redirect_uris: vec![],
            allow_plain_pkce: false,
            allowed_connectors: vec![],
            policy: Default::default(),
            logo_url: None,
            sso_shared_with: None,
            backchannel_logout_uri: None,
            backchannel_logout_session_required: false,
        })
    })
    .await;
    let post = |form: Vec<(&'static str, &'static str)>| {
        let url = issuer.endpoint("/device/code");
        async move { http().post(url).form(&form).send().await.unwrap() }
    };
    let r = post(vec![("client_id", "cli"), ("scope", "openid offline_access")]).await;
    assert_eq!(r.status(), 200);
    let d: Value = r.json().await.unwrap();
    let r = post(vec![("client_id", CLIENT)]).await;
    assert_eq!(r.status(), 401, "a confidential client without its secret");
    assert_eq!(error(&r.json().await.unwrap()), "invalid_client");
    let r = post(vec![("client_id", "cli"), ("scope", "openid admin")]).await;
    assert_eq!(error(&r.json().await.unwrap()), "invalid_scope");

    let device_code = d["device_code"].as_str().unwrap();
    let r = http()
        .post(issuer.endpoint("/token"))
        .form(&[
            ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
            ("device_code", device_code),
            ("client_id", "cli"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(error(&r.json().await.unwrap()), "authorization_pending");
    let (status, body) = poll(&issuer, device_code).await;
    assert_eq!((status, error(&body)), (400, "invalid_grant"), "another client's device code");
}

#[tokio::test]
async fn discovery_advertises_the_device_authorization_endpoint() {
    let issuer = Issuer::start().await;
    let doc: Value =
        http().get(issuer.endpoint("/.well-known/openid-configuration")).send().await.unwrap().json().await.unwrap();
    assert_eq!(doc["device_authorization_endpoint"], issuer.endpoint("/device/code"));
    assert!(doc["grant_types_supported"]
        .as_array()
        .unwrap()
        .contains(&Value::from("urn:ietf:params:oauth:grant-type:device_code")));
}
