//! The authorization endpoint and the login form over real HTTP: request validation (error page vs.
//! redirect), CSRF binding, brute-force throttling, and discovery under a path.

mod common;

use common::{http, query_param, urlencode, Browser, Issuer, CHALLENGE, CLIENT, REDIRECT};

#[tokio::test]
async fn unknown_client_and_unregistered_redirect_get_an_error_page_never_a_redirect() {
    let issuer = Issuer::start().await;
    let cases = [
        format!("/auth?client_id=nobody&redirect_uri={}&response_type=code&scope=openid", urlencode(REDIRECT)),
        format!(
            "/auth?client_id={CLIENT}&redirect_uri={}&response_type=code&scope=openid",
            urlencode("https://evil.example/cb")
        ),
        format!(
            "/auth?client_id={CLIENT}&redirect_uri={}&response_type=code&scope=openid",
            urlencode(&format!("{REDIRECT}/extra"))
        ),
        "/auth?response_type=code&scope=openid".to_owned(),
        "/auth?client_id=a&client_id=b".to_owned(),
    ];
    for path in cases {
        let r = http().get(issuer.endpoint(&path)).send().await.unwrap();
        assert_eq!(r.status(), 400, "{path}");
        assert!(r.headers().get("location").is_none(), "{path} must not redirect");
        assert!(r.text().await.unwrap().contains("<h1>"), "{path} shows a page");
    }
}

#[tokio::test]
async fn invalid_requests_from_a_known_client_are_redirected_with_rfc6749_errors() {
    let issuer = Issuer::start().await;
    let base = format!("/auth?client_id={CLIENT}&redirect_uri={}&state=s1", urlencode(REDIRECT));
    let cases = [
        ("&response_type=token&scope=openid", "unsupported_response_type"),
        ("&scope=openid", "invalid_request"),
        ("&response_type=code&scope=email", "invalid_scope"),
        ("&response_type=code&scope=openid+admin", "invalid_scope"),
        ("&response_type=code&scope=openid&code_challenge_method=S256", "invalid_request"),
        (
            &*format!("&response_type=code&scope=openid&code_challenge={CHALLENGE}&code_challenge_method=plain"),
            "invalid_request",
        ),
        ("&response_type=code&scope=openid&code_challenge=short&code_challenge_method=S256", "invalid_request"),
        ("&response_type=code&scope=openid&prompt=none", "login_required"),
    ];
    for (extra, error) in cases {
        let r = http().get(issuer.endpoint(&format!("{base}{extra}"))).send().await.unwrap();
        assert!(r.status().is_redirection(), "{extra}: {}", r.status());
        let location = r.headers()["location"].to_str().unwrap().to_owned();
        assert!(location.starts_with(REDIRECT), "{location}");
        assert_eq!(query_param(&location, "error").as_deref(), Some(error), "{extra}");
        assert_eq!(query_param(&location, "state").as_deref(), Some("s1"), "{extra}: state is echoed");
    }
}

#[tokio::test]
async fn twenty_wrong_passwords_then_429_even_with_the_right_password() {
    let issuer = Issuer::start().await;
    let browser = Browser::new();
    let (url, req, csrf) = browser.open_login(&issuer.auth_url("openid", "bf")).await;
    for i in 1..=20 {
        let (status, location, body) = browser.submit(&url, &req, &csrf, "Jane@Example.com", "wrong").await;
        assert_eq!(status, 401, "attempt {i} is checked and fails");
        assert!(location.is_none());
        assert!(body.contains("Invalid email address or password."), "generic error on attempt {i}");
    }
    let r = browser
        .client
        .post(url.split('?').next().unwrap())
        .form(&[
            ("req", req.as_str()),
            ("csrf", csrf.as_str()),
            ("login", "jane@example.com"),
            ("password", "password"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429, "the 21st attempt is refused before the password is checked");
    let retry: u64 = r.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=6).contains(&retry), "one attempt returns within 6 s, Retry-After {retry}");

    // Another user from the same client is not affected (the per-IP bucket is larger than 20).
    let (status, _) =
        Browser::new().sign_in(&issuer.auth_url("openid", "other"), "admin@example.com", "password").await;
    assert_eq!(status, 303);

    // Six seconds later exactly one more attempt is allowed.
    issuer.clock.advance(std::time::Duration::from_secs(6));
    let (status, location, _) = browser.submit(&url, &req, &csrf, "jane@example.com", "password").await;
    assert_eq!(status, 303, "a refilled attempt with the right password logs in");
    assert!(location.unwrap().contains("code="));
}

#[tokio::test]
async fn the_per_ip_bucket_stops_spraying_across_users() {
    let issuer = Issuer::start_tuned(|c| c.brute_force.per_ip_max_attempts = 25).await;
    let browser = Browser::new();
    let (url, req, csrf) = browser.open_login(&issuer.auth_url("openid", "spray")).await;
    for i in 0..25 {
        let (status, _, _) = browser.submit(&url, &req, &csrf, &format!("user{i}@example.com"), "guess").await;
        assert_eq!(status, 401, "attempt {i}");
    }
    let (status, _, _) = browser.submit(&url, &req, &csrf, "user99@example.com", "guess").await;
    assert_eq!(status, 429, "the 26th attempt from one address is refused whatever the user");
}

#[tokio::test]
async fn login_form_without_the_csrf_cookie_is_refused() {
    let issuer = Issuer::start().await;
    let browser = Browser::new();
    let (url, req, csrf) = browser.open_login(&issuer.auth_url("openid", "c")).await;
    // A cross-site POST carries no cookie (SameSite=Lax): simulate it with a fresh client.
    let r = http()
        .post(url.split('?').next().unwrap())
        .form(&[
            ("req", req.as_str()),
            ("csrf", csrf.as_str()),
            ("login", "jane@example.com"),
            ("password", "password"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let (status, _, _) = browser.submit(&url, &req, "forged", "jane@example.com", "password").await;
    assert_eq!(status, 403, "a wrong form token is refused");
    let (status, _, _) = browser.submit(&url, &req, &csrf, "jane@example.com", "password").await;
    assert_eq!(status, 303, "the real form still works");
    let (status, _, _) = browser.submit(&url, &req, &csrf, "jane@example.com", "password").await;
    assert_eq!(status, 400, "a completed login cannot be submitted twice");
}

#[tokio::test]
async fn login_cookie_and_pages_have_safe_headers() {
    let issuer = Issuer::start().await;
    let r = http().get(issuer.auth_url("openid", "h")).send().await.unwrap();
    let cookie = r.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax"), "{cookie}");
    assert!(!cookie.contains("Secure"), "plain-HTTP development issuer: no Secure flag");
    let login = format!("{}{}", issuer.url, r.headers()["location"].to_str().unwrap());
    let page = http().get(login).send().await.unwrap();
    assert_eq!(page.headers()["x-frame-options"], "DENY");
    assert_eq!(page.headers()["cache-control"], "no-store");
}

#[tokio::test]
async fn two_tabs_can_log_in_at_once() {
    let issuer = Issuer::start().await;
    let browser = Browser::new();
    let tab1 = browser.open_login(&issuer.auth_url("openid", "t1")).await;
    let tab2 = browser.open_login(&issuer.auth_url("openid", "t2")).await;
    let (s2, l2, _) = browser.submit(&tab2.0, &tab2.1, &tab2.2, "jane@example.com", "password").await;
    let (s1, l1, _) = browser.submit(&tab1.0, &tab1.1, &tab1.2, "jane@example.com", "password").await;
    assert_eq!((s1, s2), (303, 303));
    assert_eq!(query_param(&l1.unwrap(), "state").as_deref(), Some("t1"));
    assert_eq!(query_param(&l2.unwrap(), "state").as_deref(), Some("t2"));
}

#[tokio::test]
async fn expired_login_request_shows_an_error_page() {
    let issuer = Issuer::start().await;
    let browser = Browser::new();
    let (url, req, csrf) = browser.open_login(&issuer.auth_url("openid", "e")).await;
    issuer.clock.advance(std::time::Duration::from_secs(25 * 3600));
    let (status, location, body) = browser.submit(&url, &req, &csrf, "jane@example.com", "password").await;
    assert_eq!(status, 400);
    assert!(location.is_none());
    assert!(body.contains("expired"));
}

#[tokio::test]
async fn discovery_advertises_every_endpoint_under_an_issuer_path() {
    let issuer = Issuer::start_tuned(|c| c.issuer.set_path("/dex")).await;
    let doc: serde_json::Value = http()
        .get(issuer.endpoint("/dex/.well-known/openid-configuration"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(doc["issuer"], format!("{}/dex", issuer.url));
    for key in [
        "authorization_endpoint",
        "token_endpoint",
        "jwks_uri",
        "userinfo_endpoint",
        "revocation_endpoint",
        "introspection_endpoint",
        "end_session_endpoint",
    ] {
        let url = doc[key].as_str().unwrap();
        assert!(url.starts_with(&format!("{}/dex/", issuer.url)), "{key}: {url}");
    }
    let keys = http().get(doc["jwks_uri"].as_str().unwrap()).send().await.unwrap();
    assert!(keys.headers()["cache-control"].to_str().unwrap().contains("max-age="));
    let jwks: serde_json::Value = keys.json().await.unwrap();
    assert_eq!(jwks["keys"].as_array().unwrap().len(), 2, "the signing key and the next one");
    assert_eq!(doc["id_token_signing_alg_values_supported"], serde_json::json!(["RS256"]));
    let health = http().get(issuer.endpoint("/dex/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    assert_eq!(http().get(issuer.endpoint("/.well-known/openid-configuration")).send().await.unwrap().status(), 404);
}

#[tokio::test]
async fn a_loopback_redirect_uri_matches_on_any_port_rfc8252() {
    let issuer = Issuer::start_tuned(|c| {
        c.static_clients.push(issuer::config::Client {
            id: "native".into(),
            secret: None,
            public: true,
            name: "Native CLI".into(),
            redirect_uris: vec!["http://127.0.0.1/callback".into()],
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
    let redirect = "http://127.0.0.1:49152/callback";
    let auth = format!(
        "{}/auth?client_id=native&redirect_uri={}&response_type=code&scope=openid&state=s&code_challenge={CHALLENGE}&code_challenge_method=S256",
        issuer.url,
        urlencode(redirect)
    );
    let (status, location) = Browser::new().sign_in(&auth, "jane@example.com", "password").await;
    assert_eq!(status, 303);
    let location = location.unwrap();
    assert!(location.starts_with(&format!("{redirect}?")), "back to the port the app listens on: {location}");
    let code = query_param(&location, "code").unwrap();
    let r = http()
        .post(issuer.endpoint("/token"))
        .form(&[
            ("grant_type", "authorization_code"),
            ("client_id", "native"),
            ("code", code.as_str()),
            ("redirect_uri", redirect),
            ("code_verifier", common::VERIFIER),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());

    // Only the port is free: another path or host is still refused with an error page.
    for other in ["http://127.0.0.1:49152/other", "http://127.0.0.2:49152/callback", "http://localhost:49152/callback"]
    {
        let auth = format!(
            "{}/auth?client_id=native&redirect_uri={}&response_type=code&scope=openid&code_challenge={CHALLENGE}&code_challenge_method=S256",
            issuer.url,
            urlencode(other)
        );
        let r = http().get(&auth).send().await.unwrap();
        assert_eq!(r.status(), 400, "{other}");
    }
}
