//! Single sign-on through the issuer's browser session, over real HTTP with a cookie-keeping browser: a
//! login for one client signs the browser in to others at once (the same `sid` and `auth_time` in every
//! token, refreshes included), `prompt` and `max_age` (OIDC Core §3.1.2.1), `ssoSharedWith`, tampered and
//! expired sessions, RP-initiated logout (what it ends and revokes), and two replicas on one SQLite file.

mod common;

use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use common::{claims, http, query_param, urlencode, Browser, Issuer, CHALLENGE, VERIFIER};
use issuer::clock::Clock;
use issuer::config::Config;
use issuer::session::SsoSharing;
use serde_json::Value;

/// A client of the shipped dev configuration.
struct App {
    id: &'static str,
    secret: &'static str,
    redirect: &'static str,
}

const EXAMPLE: App = App { id: common::CLIENT, secret: common::SECRET, redirect: common::REDIRECT };
const GATEWAY: App = App { id: "gateway", secret: "gateway-secret", redirect: "http://127.0.0.1:8080/oauth2/callback" };
const KUBERNETES: App =
    App { id: "kubernetes", secret: "kubernetes-secret", redirect: "http://127.0.0.1:8000/callback" };

const SCOPE: &str = "openid email offline_access";

/// The authorization URL for `app` with PKCE S256, plus `extra` query parameters (`&prompt=none`…).
fn auth_url(issuer: &Issuer, app: &App, extra: &str) -> String {
    format!(
        "{}/auth?client_id={}&redirect_uri={}&response_type=code&scope={}&state=st&code_challenge={CHALLENGE}&code_challenge_method=S256{extra}",
        issuer.url,
        app.id,
        urlencode(app.redirect),
        urlencode(SCOPE)
    )
}

/// `GET` the URL with the browser: status and `Location`.
async fn get(browser: &Browser, url: &str) -> (u16, String) {
    let r = browser.client.get(url).send().await.unwrap();
    let location = r.headers().get("location").map_or_else(String::new, |v| v.to_str().unwrap().to_owned());
    (r.status().as_u16(), location)
}

/// `/auth` answered at once with a code for `app` (no login page): the code.
async fn silent_code(browser: &Browser, issuer: &Issuer, app: &App, extra: &str) -> String {
    let (status, location) = get(browser, &auth_url(issuer, app, extra)).await;
    assert_eq!(status, 303, "{location}");
    assert!(location.starts_with(app.redirect), "straight back to the client, no login page: {location}");
    assert_eq!(query_param(&location, "state").as_deref(), Some("st"));
    query_param(&location, "code").unwrap_or_else(|| panic!("a code: {location}"))
}

/// Whether `/auth` for `app` sends the browser to the login page.
async fn shows_login(browser: &Browser, issuer: &Issuer, app: &App, extra: &str) -> bool {
    let (status, location) = get(browser, &auth_url(issuer, app, extra)).await;
    assert_eq!(status, 303, "{location}");
    location.contains("/login?req=")
}

/// Signs in through the form for `app` as jane; returns the code and the response's `Set-Cookie` values.
async fn sign_in(browser: &Browser, issuer: &Issuer, app: &App, remember_me: bool) -> (String, Vec<String>) {
    let (login_url, req, csrf) = browser.open_login(&auth_url(issuer, app, "")).await;
    let mut form =
        vec![("req", req.as_str()), ("csrf", csrf.as_str()), ("login", "jane@example.com"), ("password", "password")];
    if remember_me {
        form.push(("remember_me", "1"));
    }
    let r = browser.client.post(login_url.split('?').next().unwrap()).form(&form).send().await.unwrap();
    assert_eq!(r.status(), 303);
    let cookies = r.headers().get_all("set-cookie").iter().map(|v| v.to_str().unwrap().to_owned()).collect();
    let location = r.headers()["location"].to_str().unwrap().to_owned();
    assert!(location.starts_with(app.redirect), "{location}");
    (query_param(&location, "code").unwrap(), cookies)
}

async fn exchange(issuer: &Issuer, app: &App, code: &str) -> Value {
    let form = [
        ("grant_type", "authorization_code"),
        ("code", code),
        ("redirect_uri", app.redirect),
        ("code_verifier", VERIFIER),
    ];
    let r =
        http().post(issuer.endpoint("/token")).basic_auth(app.id, Some(app.secret)).form(&form).send().await.unwrap();
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

async fn refresh(issuer: &Issuer, app: &App, tokens: &Value) -> (u16, Value) {
    let form = [("grant_type", "refresh_token"), ("refresh_token", tokens["refresh_token"].as_str().unwrap())];
    let r =
        http().post(issuer.endpoint("/token")).basic_auth(app.id, Some(app.secret)).form(&form).send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

fn id_claims(tokens: &Value) -> Value {
    claims(tokens["id_token"].as_str().unwrap())
}

/// The claims sealed in an access token (`<base64url claims>.<mac>`).
fn access_claims(tokens: &Value) -> Value {
    // A JWT's claims are its second part; an opaque token's its first.
    let token = tokens["access_token"].as_str().unwrap();
    let parts: Vec<&str> = token.split('.').collect();
    let payload = if parts.len() == 3 { parts[1] } else { parts[0] };
    serde_json::from_slice(&B64.decode(payload).unwrap()).unwrap()
}

/// The session cookie's `name=value` from a `Set-Cookie` list.
fn session_cookie(set_cookies: &[String]) -> &str {
    let c = set_cookies.iter().find(|c| c.starts_with("dex_session=")).expect("a session cookie is set");
    c.split(';').next().unwrap()
}

async fn logout(issuer: &Issuer, browser: &Browser, hint: &Value) -> reqwest::Response {
    let url = issuer.endpoint("/logout");
    browser.client.get(url).query(&[("id_token_hint", hint["id_token"].as_str().unwrap())]).send().await.unwrap()
}

#[tokio::test]
async fn a_login_for_one_client_signs_the_browser_in_to_another_at_once() {
    let issuer = Issuer::start().await;
    let browser = Browser::new();
    let login_time = issuer.clock.now();
    let (code_a, set_cookies) = sign_in(&browser, &issuer, &EXAMPLE, true).await;
    let cookie = set_cookies.iter().find(|c| c.starts_with("dex_session=")).unwrap();
    for attribute in ["Path=/", "HttpOnly", "SameSite=Lax", "Max-Age=86400"] {
        assert!(cookie.split("; ").any(|a| a == attribute), "{attribute} in {cookie}");
    }
    assert!(!cookie.contains("Secure"), "no Secure on an http issuer: {cookie}");

    issuer.clock.advance(Duration::from_secs(30));
    let code_b = silent_code(&browser, &issuer, &GATEWAY, "").await;
    let a = exchange(&issuer, &EXAMPLE, &code_a).await;
    let b = exchange(&issuer, &GATEWAY, &code_b).await;
    let (ca, cb) = (id_claims(&a), id_claims(&b));
    let sid = ca["sid"].as_str().expect("a sid").to_owned();
    assert_eq!(cb["sid"], sid, "one session, one sid for both clients");
    assert_eq!(cb["aud"], "gateway");
    assert_eq!(
        (ca["auth_time"].as_i64(), cb["auth_time"].as_i64()),
        (Some(login_time), Some(login_time)),
        "auth_time is the login"
    );
    assert_eq!(cb["iat"].as_i64(), Some(login_time + 30));
    assert_eq!((access_claims(&a)["sid"].as_str(), access_claims(&b)["sid"].as_str()), (Some(&*sid), Some(&*sid)));

    // Refreshes keep the session's sid and the login's auth_time.
    issuer.clock.advance(Duration::from_secs(60));
    for (app, tokens) in [(&EXAMPLE, &a), (&GATEWAY, &b)] {
        let (status, refreshed) = refresh(&issuer, app, tokens).await;
        assert_eq!(status, 200, "{refreshed}");
        assert_eq!(id_claims(&refreshed)["sid"], sid, "{} keeps the sid through refresh", app.id);
        assert_eq!(id_claims(&refreshed)["auth_time"].as_i64(), Some(login_time));
        assert_eq!(access_claims(&refreshed)["sid"], sid);
    }
}

#[tokio::test]
async fn remember_me_unchecked_sets_a_cookie_that_ends_with_the_browser() {
    let issuer = Issuer::start().await;
    let page = Browser::new().client.get(auth_url(&issuer, &EXAMPLE, "")).send().await.unwrap();
    let login = format!("{}{}", issuer.url, page.headers()["location"].to_str().unwrap());
    let html = http().get(login).send().await.unwrap().text().await.unwrap();
    assert!(html.contains("name=\"remember_me\" value=\"1\" checked"), "checked by default: {html}");

    let browser = Browser::new();
    let (_, set_cookies) = sign_in(&browser, &issuer, &EXAMPLE, false).await;
    let cookie = set_cookies.iter().find(|c| c.starts_with("dex_session=")).unwrap();
    assert!(!cookie.contains("Max-Age"), "a browser-session cookie: {cookie}");
    silent_code(&browser, &issuer, &GATEWAY, "").await;

    let unchecked = Issuer::start_tuned(|c| c.sessions.remember_me_checked_by_default = false).await;
    let page = Browser::new().client.get(auth_url(&unchecked, &EXAMPLE, "")).send().await.unwrap();
    let login = format!("{}{}", unchecked.url, page.headers()["location"].to_str().unwrap());
    let html = http().get(login).send().await.unwrap().text().await.unwrap();
    assert!(html.contains("name=\"remember_me\" value=\"1\">"), "unchecked: {html}");
}

#[tokio::test]
async fn prompt_none_answers_with_a_code_or_login_required() {
    let issuer = Issuer::start().await;
    let browser = Browser::new();
    let (status, location) = get(&browser, &auth_url(&issuer, &GATEWAY, "&prompt=none")).await;
    assert_eq!(status, 303);
    assert!(location.starts_with(GATEWAY.redirect), "{location}");
    assert_eq!(query_param(&location, "error").as_deref(), Some("login_required"), "{location}");
    assert_eq!(query_param(&location, "state").as_deref(), Some("st"));

    sign_in(&browser, &issuer, &EXAMPLE, false).await;
    let code = silent_code(&browser, &issuer, &GATEWAY, "&prompt=none").await;
    assert!(id_claims(&exchange(&issuer, &GATEWAY, &code).await)["sid"].is_string());

    // id_token_hint (OIDC Core §3.1.2.2): the session answers only for the user the hint names.
    let jane = exchange(&issuer, &EXAMPLE, &silent_code(&browser, &issuer, &EXAMPLE, "").await).await;
    let admin = issuer.tokens("admin@example.com").await;
    let hint = |t: &Value| format!("&prompt=none&id_token_hint={}", t["id_token"].as_str().unwrap());
    silent_code(&browser, &issuer, &GATEWAY, &hint(&jane)).await;
    let (_, location) = get(&browser, &auth_url(&issuer, &GATEWAY, &hint(&admin))).await;
    assert_eq!(query_param(&location, "error").as_deref(), Some("login_required"), "another user's hint: {location}");
    let (_, location) = get(&browser, &auth_url(&issuer, &GATEWAY, "&prompt=none&id_token_hint=a.b.c")).await;
    assert_eq!(query_param(&location, "error").as_deref(), Some("invalid_request"), "a forged hint: {location}");

    let (_, location) = get(&browser, &auth_url(&issuer, &GATEWAY, "&prompt=none%20login")).await;
    assert_eq!(query_param(&location, "error").as_deref(), Some("invalid_request"), "none with login: {location}");
    let (_, location) = get(&browser, &auth_url(&issuer, &GATEWAY, "&prompt=none&max_age=0")).await;
    assert_eq!(query_param(&location, "error").as_deref(), Some("login_required"), "too old for max_age: {location}");
}

#[tokio::test]
async fn prompt_login_and_max_age_show_the_form_and_a_new_login_renews_the_session() {
    let issuer = Issuer::start().await;
    let browser = Browser::new();
    let first = issuer.clock.now();
    let (code, _) = sign_in(&browser, &issuer, &EXAMPLE, false).await;
    let sid = id_claims(&exchange(&issuer, &EXAMPLE, &code).await)["sid"].clone();

    issuer.clock.advance(Duration::from_secs(120));
    assert!(shows_login(&browser, &issuer, &GATEWAY, "&prompt=login").await, "prompt=login");
    assert!(shows_login(&browser, &issuer, &GATEWAY, "&prompt=select_account").await, "prompt=select_account");
    assert!(shows_login(&browser, &issuer, &GATEWAY, "&max_age=0").await, "max_age=0");
    assert!(shows_login(&browser, &issuer, &GATEWAY, "&max_age=119").await, "login 120 s ago, max_age 119");
    let code = silent_code(&browser, &issuer, &GATEWAY, "&max_age=120").await;
    assert_eq!(id_claims(&exchange(&issuer, &GATEWAY, &code).await)["auth_time"].as_i64(), Some(first));
    let (_, location) = get(&browser, &auth_url(&issuer, &GATEWAY, "&max_age=soon")).await;
    assert_eq!(query_param(&location, "error").as_deref(), Some("invalid_request"));

    // Signing in again (prompt=login) keeps the session and its sid, with the new login time.
    let (url, req, csrf) = browser.open_login(&auth_url(&issuer, &GATEWAY, "&prompt=login")).await;
    let (status, location, _) = browser.submit(&url, &req, &csrf, "jane@example.com", "password").await;
    assert_eq!(status, 303);
    let again = exchange(&issuer, &GATEWAY, &query_param(&location.unwrap(), "code").unwrap()).await;
    assert_eq!(id_claims(&again)["sid"], sid, "the same browser session");
    assert_eq!(id_claims(&again)["auth_time"].as_i64(), Some(first + 120), "auth_time is the latest login");
    silent_code(&browser, &issuer, &EXAMPLE, "&max_age=1").await;
}

fn strict_sharing(c: &mut Config) {
    c.sessions.sso_shared_with_default = SsoSharing::None;
    let example = c.static_clients.iter_mut().find(|c| c.id == EXAMPLE.id).unwrap();
    example.sso_shared_with = Some(vec![GATEWAY.id.to_owned()]);
}

#[tokio::test]
async fn sso_shared_with_default_none_and_per_client_lists_are_respected() {
    let issuer = Issuer::start_tuned(strict_sharing).await;

    // Signed in to the example app, which shares with the gateway only.
    let browser = Browser::new();
    sign_in(&browser, &issuer, &EXAMPLE, false).await;
    silent_code(&browser, &issuer, &EXAMPLE, "").await;
    silent_code(&browser, &issuer, &GATEWAY, "").await;
    assert!(
        shows_login(&browser, &issuer, &KUBERNETES, "").await,
        "not in the example app's list, and the gateway's silent sign-in does not share onwards"
    );
    let (_, location) = get(&browser, &auth_url(&issuer, &KUBERNETES, "&prompt=none")).await;
    assert_eq!(query_param(&location, "error").as_deref(), Some("login_required"));

    // Signed in to the gateway, which has no list: the default (none) applies.
    let browser = Browser::new();
    sign_in(&browser, &issuer, &GATEWAY, false).await;
    silent_code(&browser, &issuer, &GATEWAY, "").await;
    assert!(shows_login(&browser, &issuer, &EXAMPLE, "").await, "ssoSharedWithDefault: none");
}

#[tokio::test]
async fn a_tampered_or_unknown_session_cookie_is_ignored() {
    let issuer = Issuer::start().await;
    let (_, set_cookies) = sign_in(&Browser::new(), &issuer, &EXAMPLE, false).await;
    let cookie = session_cookie(&set_cookies).to_owned();
    let with_cookie = |value: String| {
        let url = auth_url(&issuer, &GATEWAY, "&prompt=none");
        async move {
            let r = http().get(url).header("cookie", value).send().await.unwrap();
            r.headers()["location"].to_str().unwrap().to_owned()
        }
    };
    let ok = with_cookie(cookie.clone()).await;
    assert!(query_param(&ok, "code").is_some(), "the genuine cookie signs in: {ok}");

    let (name_id, secret) = cookie.rsplit_once('.').unwrap();
    let flipped = format!("{name_id}.{}{}", if secret.starts_with('A') { 'B' } else { 'A' }, &secret[1..]);
    let unknown = format!("dex_session={}.{secret}", "A".repeat(22));
    for forged in [flipped, unknown, format!("{cookie}x"), "dex_session=garbage".to_owned()] {
        let location = with_cookie(forged.clone()).await;
        assert_eq!(query_param(&location, "error").as_deref(), Some("login_required"), "{forged}: {location}");
    }
}

fn short_sessions(c: &mut Config) {
    c.sessions.absolute_lifetime = Duration::from_secs(2 * 3600);
    c.sessions.valid_if_not_used_for = Duration::from_secs(3600);
}

#[tokio::test]
async fn a_session_ends_when_unused_for_too_long_or_at_its_absolute_lifetime() {
    let issuer = Issuer::start_tuned(short_sessions).await;
    let idle = Browser::new();
    sign_in(&idle, &issuer, &EXAMPLE, false).await;
    let busy = Browser::new();
    sign_in(&busy, &issuer, &EXAMPLE, false).await;

    issuer.clock.advance(Duration::from_secs(50 * 60));
    silent_code(&busy, &issuer, &GATEWAY, "").await;
    issuer.clock.advance(Duration::from_secs(11 * 60));
    assert!(shows_login(&idle, &issuer, &GATEWAY, "").await, "unused for 61 minutes");
    silent_code(&busy, &issuer, &GATEWAY, "").await;
    issuer.clock.advance(Duration::from_secs(50 * 60));
    silent_code(&busy, &issuer, &EXAMPLE, "").await;
    issuer.clock.advance(Duration::from_secs(10 * 60));
    assert!(shows_login(&busy, &issuer, &GATEWAY, "").await, "used every 50 minutes, but 2 h after the login");

    let collected = issuer.state.storage.garbage_collect(issuer.clock.now(), 500).await.unwrap();
    assert_eq!(collected.sessions, 2, "both sessions are collected");
}

#[tokio::test]
async fn logout_ends_the_session_and_revokes_only_that_clients_families() {
    let issuer = Issuer::start().await;
    let browser = Browser::new();
    let (code, _) = sign_in(&browser, &issuer, &EXAMPLE, false).await;
    let a = exchange(&issuer, &EXAMPLE, &code).await;
    let b = exchange(&issuer, &GATEWAY, &silent_code(&browser, &issuer, &GATEWAY, "").await).await;
    let a2 = exchange(&issuer, &EXAMPLE, &silent_code(&browser, &issuer, &EXAMPLE, "").await).await;

    let r = logout(&issuer, &browser, &a).await;
    assert_eq!(r.status(), 200, "signed-out page");
    let cleared = r.headers().get_all("set-cookie").iter().map(|v| v.to_str().unwrap().to_owned()).collect::<Vec<_>>();
    assert!(cleared.iter().any(|c| c.starts_with("dex_session=;") && c.contains("Max-Age=0")), "{cleared:?}");
    assert!(shows_login(&browser, &issuer, &GATEWAY, "").await, "the session is over");
    assert_eq!(refresh(&issuer, &EXAMPLE, &a).await.0, 400, "the example app's family is revoked");
    assert_eq!(refresh(&issuer, &EXAMPLE, &a2).await.0, 400, "and its second family in the session");
    assert_eq!(refresh(&issuer, &GATEWAY, &b).await.0, 200, "the gateway's family stays");
}

#[tokio::test]
async fn a_logout_without_a_hint_of_the_browsers_session_asks_first() {
    let issuer = Issuer::start().await;
    let browser = Browser::new();
    let (code, _) = sign_in(&browser, &issuer, &EXAMPLE, false).await;
    let tokens = exchange(&issuer, &EXAMPLE, &code).await;
    let another_user = issuer.tokens("admin@example.com").await;

    // RP-Initiated Logout 1.0 §2: no hint, or a hint of another session or user, and the OP asks.
    for hint in [None, Some(&another_user)] {
        let mut query = vec![("client_id", EXAMPLE.id), ("state", "bye")];
        if let Some(h) = hint {
            query.push(("id_token_hint", h["id_token"].as_str().unwrap()));
        }
        let r = browser.client.get(issuer.endpoint("/logout")).query(&query).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["cache-control"], "no-store");
        assert!(r.headers().get("set-cookie").is_none(), "nothing ended yet");
        let html = r.text().await.unwrap();
        assert!(html.contains("Sign out?") && html.contains("name=\"confirm\""), "{html}");
        assert!(html.contains("name=\"state\" value=\"bye\""), "the request's parameters carry over: {html}");
        silent_code(&browser, &issuer, &GATEWAY, "").await;
    }
    // A post from elsewhere cannot know the confirmation, which only the session's cookie gives.
    let forged = [("client_id", EXAMPLE.id), ("confirm", "AAAA")];
    let r = browser.client.post(issuer.endpoint("/logout")).form(&forged).send().await.unwrap();
    assert!(r.text().await.unwrap().contains("Sign out?"));
    silent_code(&browser, &issuer, &GATEWAY, "").await;

    // The page's own form signs out.
    let html = browser.client.get(issuer.endpoint("/logout")).send().await.unwrap().text().await.unwrap();
    let confirm = html.split("name=\"confirm\" value=\"").nth(1).and_then(|v| v.split('"').next()).unwrap();
    let r = browser.client.post(issuer.endpoint("/logout")).form(&[("confirm", confirm)]).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("You have been signed out"));
    assert!(shows_login(&browser, &issuer, &GATEWAY, "").await, "the session is over");
    assert_eq!(refresh(&issuer, &EXAMPLE, &tokens).await.0, 200, "no client named: no family revoked");
}

#[tokio::test]
async fn a_logout_without_the_session_and_with_a_stale_hint_revokes_nothing() {
    let issuer = Issuer::start().await;

    // The session timed out (unused for an hour); its refresh tokens live on.
    let browser = Browser::new();
    let (code, _) = sign_in(&browser, &issuer, &EXAMPLE, false).await;
    let old = exchange(&issuer, &EXAMPLE, &code).await;
    issuer.clock.advance(Duration::from_secs(3601));
    let r = logout(&issuer, &Browser::new(), &old).await;
    assert_eq!(r.status(), 200);
    assert_eq!(refresh(&issuer, &EXAMPLE, &old).await.0, 200, "a stale hint revokes nothing");

    // A hint from an ended session does not reach the browser's next session.
    let (code, _) = sign_in(&browser, &issuer, &EXAMPLE, false).await;
    let first = exchange(&issuer, &EXAMPLE, &code).await;
    assert_eq!(logout(&issuer, &browser, &first).await.status(), 200);
    let (code, _) = sign_in(&browser, &issuer, &EXAMPLE, false).await;
    let second = exchange(&issuer, &EXAMPLE, &code).await;
    assert_ne!(id_claims(&second)["sid"], id_claims(&first)["sid"], "a new session after logout");
    assert_eq!(logout(&issuer, &Browser::new(), &first).await.status(), 200);
    assert_eq!(refresh(&issuer, &EXAMPLE, &second).await.0, 200, "the new session's tokens stay");
    silent_code(&browser, &issuer, &GATEWAY, "").await;
}

#[tokio::test]
async fn a_session_started_on_one_replica_is_honoured_by_another_on_the_same_sqlite_file() {
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let clock = Clock::frozen();
    let a = Issuer::start_in(dir.clone(), |_| {}, clock.clone(), None).await;
    let b = Issuer::start_in(dir, |_| {}, clock.clone(), None).await;
    let browser = Browser::new();
    let (code, _) = sign_in(&browser, &a, &EXAMPLE, false).await;
    let on_a = exchange(&a, &EXAMPLE, &code).await;
    let on_b = exchange(&b, &GATEWAY, &silent_code(&browser, &b, &GATEWAY, "").await).await;
    assert_eq!(id_claims(&on_b)["sid"], id_claims(&on_a)["sid"], "replica B signed in through A's session");
    assert_eq!(logout(&b, &browser, &on_a).await.status(), 200);
    assert!(shows_login(&browser, &a, &GATEWAY, "").await, "a logout on B ends the session on A");
    assert_eq!(refresh(&a, &EXAMPLE, &on_a).await.0, 400);
}
