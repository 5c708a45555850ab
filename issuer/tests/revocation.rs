//! Administrative revocation, the revocation feed and back-channel logout, over real HTTP: `issuer revoke`
//! (the binary, on the SQLite file an in-process issuer serves) ends one user's refresh tokens and not
//! another's and appears in `GET /revocations` (cursor, `ETag`, 304); logout tokens reach a client's
//! `backchannelLogoutURI` on `/logout` and on `issuer revoke --session`, verify against `/keys`, and are
//! retried while the client answers 503.

mod common;

use std::collections::VecDeque;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Form, Router};
use common::{claims, http, Browser, Issuer, CLIENT, REDIRECT, VERIFIER};
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;
use tokio::sync::Notify;

const GATEWAY: &str = "gateway";
const GATEWAY_SECRET: &str = "gateway-secret";
const EVENT: &str = "http://schemas.openid.net/event/backchannel-logout";

/// Runs `issuer revoke --config FILE ARGS…`; panics unless it succeeds. Returns its standard output.
async fn revoke(config: &Path, args: &[&str]) -> String {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_issuer"));
    cmd.arg("revoke").arg("--config").arg(config).args(args);
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap()).await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "issuer revoke failed: {stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    stdout
}

/// `GET /revocations?after=…` as the gateway client, with `If-None-Match` if given.
async fn feed(issuer: &Issuer, after: &str, if_none_match: Option<&str>) -> reqwest::Response {
    let mut r = http().get(issuer.endpoint("/revocations")).query(&[("after", after)]);
    r = r.basic_auth(GATEWAY, Some(GATEWAY_SECRET));
    if let Some(tag) = if_none_match {
        r = r.header("if-none-match", tag);
    }
    r.send().await.unwrap()
}

/// Whether the feed's body lists an entry of `kind` with `value`.
fn lists(body: &Value, kind: &str, value: &str) -> bool {
    body["revocations"].as_array().unwrap().iter().any(|e| e["kind"] == kind && e["value"] == value)
}

#[tokio::test]
async fn revoking_a_user_through_the_cli_ends_their_refresh_and_shows_in_the_feed() {
    let (issuer, config) = Issuer::start_with_file(|t| t).await;
    let jane = issuer.tokens("jane@example.com").await;
    let admin = issuer.tokens("admin@example.com").await;
    let jane_id = claims(jane["id_token"].as_str().unwrap());

    let r = feed(&issuer, "0", Some("\"0\"")).await;
    assert_eq!(r.status(), 304, "an empty log has nothing after 0");
    let r = feed(&issuer, "0", None).await;
    assert_eq!(r.status(), 200);
    let empty: Value = r.json().await.unwrap();
    assert_eq!(empty["cursor"], "0");
    assert_eq!(empty["revocations"], serde_json::json!([]));
    assert_eq!(empty["interval"], 5);

    let out = revoke(&config, &["--user", "JANE@example.com"]).await;
    assert!(out.contains("revoked 1 refresh-token famil(ies) and 1 browser session(s)"), "{out}");

    let (status, body) = issuer.refresh(jane["refresh_token"].as_str().unwrap()).await;
    assert_eq!((status, body["error"].as_str()), (400, Some("invalid_grant")), "{body}");
    let (status, body) = issuer.refresh(admin["refresh_token"].as_str().unwrap()).await;
    assert_eq!(status, 200, "another user's refresh still works: {body}");

    let r = feed(&issuer, "0", None).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["cache-control"], "no-store");
    let etag = r.headers()["etag"].to_str().unwrap().to_owned();
    let body: Value = r.json().await.unwrap();
    let cursor = body["cursor"].as_str().unwrap().to_owned();
    assert_eq!(etag, format!("\"{cursor}\""));
    assert!(lists(&body, "sub", jane_id["sub"].as_str().unwrap()), "{body}");
    assert!(lists(&body, "sid", jane_id["sid"].as_str().unwrap()), "{body}");
    assert_eq!(body["revocations"].as_array().unwrap().len(), 2, "only jane: {body}");
    assert!(body.get("reset").is_none(), "{body}");
    let now = issuer.clock.now();
    assert!(body["revocations"]
        .as_array()
        .unwrap()
        .iter()
        .all(|e| (now - e["revoked_at"].as_i64().unwrap()).abs() < 60));

    let r = feed(&issuer, &cursor, Some(&etag)).await;
    assert_eq!(r.status(), 304, "nothing new since the cursor");
    assert_eq!(r.headers()["etag"].to_str().unwrap(), etag);
    assert!(r.bytes().await.unwrap().is_empty());
    let r = feed(&issuer, &cursor, None).await;
    let body: Value = r.json().await.unwrap();
    assert_eq!(
        (body["cursor"].as_str(), body["revocations"].as_array().map(Vec::len)),
        (Some(cursor.as_str()), Some(0))
    );

    let anonymous = http().get(issuer.endpoint("/revocations")).send().await.unwrap();
    assert_eq!(anonymous.status(), 401, "the feed is for authenticated clients");
    let bad = feed(&issuer, "-1", None).await;
    assert_eq!(bad.status(), 400);
}

#[tokio::test]
async fn revoking_a_user_with_nothing_stored_says_so_and_logs_nothing() {
    let (issuer, config) = Issuer::start_with_file(|t| t).await;
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_issuer"));
    cmd.args(["revoke", "--config"]).arg(&config).args(["--user", "nobody@example.com"]);
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap()).await.unwrap();
    assert!(out.status.success(), "nothing to revoke is not an error");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("warning: no refresh token or browser session of \"nobody@example.com\""), "{stderr}");
    let body: Value = feed(&issuer, "0", None).await.json().await.unwrap();
    assert_eq!(body["revocations"], serde_json::json!([]), "{body}");
}

#[tokio::test]
async fn long_values_make_shorter_pages_never_one_a_gateway_cannot_read() {
    let (issuer, _config) = Issuer::start_with_file(|t| t).await;
    let s = &issuer.state.storage;
    // LDAP group DNs can be long; 40 of 10 KiB would be 400 KiB in one page.
    let dn = |n: usize| format!("cn=group-{n},{}", "ou=\"nested\",".repeat(1000));
    for n in 0..40 {
        s.create_revocation(issuer::storage::RevocationKind::Group, &dn(n), issuer.clock.now()).await.unwrap();
    }
    let (mut cursor, mut seen, mut pages) = ("0".to_owned(), Vec::new(), 0);
    loop {
        let r = feed(&issuer, &cursor, None).await;
        assert_eq!(r.status(), 200);
        let bytes = r.bytes().await.unwrap();
        assert!(bytes.len() <= 192 * 1024, "a page of {} bytes", bytes.len());
        let body: Value = serde_json::from_slice(&bytes).unwrap();
        let entries = body["revocations"].as_array().unwrap();
        if entries.is_empty() {
            break;
        }
        seen.extend(entries.iter().map(|e| e["value"].as_str().unwrap().to_owned()));
        cursor = body["cursor"].as_str().unwrap().to_owned();
        pages += 1;
    }
    assert!(pages > 2, "{pages} pages");
    assert_eq!(seen, (0..40).map(dn).collect::<Vec<_>>(), "every entry once, in order");
}

#[tokio::test]
async fn a_cursor_older_than_the_retained_log_resets_the_feed() {
    let (issuer, _config) = Issuer::start_with_file(|t| t).await;
    let s = &issuer.state.storage;
    let old = issuer.clock.now() - 3 * 3600;
    s.create_revocation(issuer::storage::RevocationKind::Sub, "gone", old).await.unwrap();
    s.create_revocation(issuer::storage::RevocationKind::Sub, "gone-too", old).await.unwrap();
    let kept = s.create_revocation(issuer::storage::RevocationKind::Group, "admins", issuer.clock.now()).await.unwrap();
    issuer::gc::collect(&issuer.state).await.unwrap();

    let body: Value = feed(&issuer, "1", None).await.json().await.unwrap();
    assert_eq!(body["reset"], true, "entry 2 was collected: {body}");
    assert_eq!(body["revocations"].as_array().unwrap().len(), 1, "{body}");
    assert!(lists(&body, "group", "admins"));
    assert_eq!(body["cursor"], kept.to_string());
    let body: Value = feed(&issuer, "2", None).await.json().await.unwrap();
    assert!(body.get("reset").is_none(), "nothing after 2 is missing: {body}");
    let body: Value = feed(&issuer, "99", None).await.json().await.unwrap();
    assert_eq!(body["reset"], true, "a cursor this log never handed out: {body}");
    assert_eq!(body["cursor"], kept.to_string());
}

/// A client's back-channel logout endpoint: records every `logout_token` and answers with the statuses
/// queued (then 200).
#[derive(Clone, Default)]
struct Receiver {
    tokens: Arc<Mutex<Vec<String>>>,
    statuses: Arc<Mutex<VecDeque<u16>>>,
    arrived: Arc<Notify>,
}

impl Receiver {
    /// Serves on an ephemeral loopback port; returns the endpoint URL.
    async fn start(&self) -> String {
        async fn receive(State(r): State<Receiver>, Form(form): Form<Vec<(String, String)>>) -> StatusCode {
            let token = form.into_iter().find(|(k, _)| k == "logout_token").map(|(_, v)| v).unwrap_or_default();
            r.tokens.lock().unwrap().push(token);
            r.arrived.notify_waiters();
            let status = r.statuses.lock().unwrap().pop_front().unwrap_or(200);
            StatusCode::from_u16(status).unwrap()
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/backchannel-logout", listener.local_addr().unwrap());
        let app = Router::new().route("/backchannel-logout", post(receive)).with_state(self.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        url
    }

    /// Waits (at most 60 s: deliveries retry after 0.5 s and 1 s, and a loaded machine is slow) until `n`
    /// tokens have arrived; returns them.
    async fn wait_for(&self, n: usize) -> Vec<String> {
        tokio::time::timeout(Duration::from_secs(60), async {
            loop {
                let notified = self.arrived.notified();
                {
                    let tokens = self.tokens.lock().unwrap();
                    if tokens.len() >= n {
                        return tokens.clone();
                    }
                }
                notified.await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("{n} logout token(s) within 10 s; got {}", self.tokens.lock().unwrap().len()))
    }
}

/// An issuer whose example app has `receiver` as its `backchannelLogoutURI`.
async fn issuer_with_backchannel(receiver: &str) -> (Issuer, std::path::PathBuf) {
    let line = format!("    secret: example-app-secret\n    backchannelLogoutURI: {receiver}\n");
    Issuer::start_with_file(move |t| {
        assert!(t.contains("    secret: example-app-secret\n"));
        t.replacen("    secret: example-app-secret\n", &line, 1)
    })
    .await
}

/// Signs jane in with `browser` for the example app; returns the token response.
/// RP-initiated logout in `browser` with the ID token of `tokens` as `id_token_hint`.
async fn logout(issuer: &Issuer, browser: &Browser, tokens: &Value) -> reqwest::Response {
    let hint = tokens["id_token"].as_str().unwrap();
    browser.client.get(issuer.endpoint("/logout")).query(&[("id_token_hint", hint)]).send().await.unwrap()
}

async fn browser_tokens(issuer: &Issuer, browser: &Browser) -> Value {
    let (status, location) =
        browser.sign_in(&issuer.auth_url("openid email offline_access", "st"), "jane@example.com", "password").await;
    assert_eq!(status, 303);
    let code = common::query_param(&location.unwrap(), "code").unwrap();
    let form = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", REDIRECT),
        ("code_verifier", VERIFIER),
    ];
    let (status, body) = issuer.token(&form).await;
    assert_eq!(status, 200, "{body}");
    body
}

/// Verifies a logout token independently (`jsonwebtoken` against `/keys`) and checks every claim
/// Back-Channel Logout 1.0 §2.4 requires; returns the claims.
async fn verify_logout_token(issuer: &Issuer, token: &str, id_token: &Value) -> Value {
    let jwks: JwkSet = http().get(issuer.endpoint("/keys")).send().await.unwrap().json().await.unwrap();
    let head = jsonwebtoken::decode_header(token).unwrap();
    assert_eq!(head.typ.as_deref(), Some("logout+jwt"));
    let jwk = jwks.find(head.kid.as_deref().unwrap()).expect("the signing key is in JWKS");
    let mut validation = Validation::new(Algorithm::RS256);
    validation.set_issuer(&[&issuer.url]);
    validation.set_audience(&[CLIENT]);
    validation.set_required_spec_claims(&["exp", "iat", "iss", "aud", "sub"]);
    let key = DecodingKey::from_jwk(jwk).unwrap();
    let c = jsonwebtoken::decode::<Value>(token, &key, &validation).unwrap().claims;
    assert_eq!(c["aud"], CLIENT);
    assert_eq!(c["sub"], id_token["sub"]);
    assert_eq!(c["sid"], id_token["sid"]);
    assert_eq!(c["events"], serde_json::json!({ EVENT: {} }));
    assert_eq!(c["exp"].as_i64().unwrap() - c["iat"].as_i64().unwrap(), 120);
    assert!(c["jti"].as_str().is_some_and(|j| j.len() >= 16), "{c}");
    assert!(c.get("nonce").is_none(), "a logout token never has a nonce: {c}");
    c
}

#[tokio::test]
async fn logout_and_revoke_session_send_back_channel_logout_tokens() {
    let receiver = Receiver::default();
    let (issuer, config) = issuer_with_backchannel(&receiver.start().await).await;
    let discovery: Value =
        http().get(issuer.endpoint("/.well-known/openid-configuration")).send().await.unwrap().json().await.unwrap();
    assert_eq!(discovery["backchannel_logout_supported"], true);
    assert_eq!(discovery["backchannel_logout_session_supported"], true);
    assert_eq!(discovery["revocation_feed_endpoint"], issuer.endpoint("/revocations"), "gateways find the feed here");

    // RP-initiated logout.
    let browser = Browser::new();
    let tokens = browser_tokens(&issuer, &browser).await;
    let id_token = claims(tokens["id_token"].as_str().unwrap());
    let r = logout(&issuer, &browser, &tokens).await;
    assert_eq!(r.status(), 200);
    let got = receiver.wait_for(1).await;
    verify_logout_token(&issuer, &got[0], &id_token).await;
    let body: Value = feed(&issuer, "0", None).await.json().await.unwrap();
    assert!(lists(&body, "sid", id_token["sid"].as_str().unwrap()), "a logout is in the feed: {body}");

    // `issuer revoke --session`.
    let browser = Browser::new();
    let tokens = browser_tokens(&issuer, &browser).await;
    let id_token = claims(tokens["id_token"].as_str().unwrap());
    let out = revoke(&config, &["--session", id_token["sid"].as_str().unwrap()]).await;
    assert!(out.contains("Delivered(1)"), "{out}");
    let got = receiver.wait_for(2).await;
    let c = verify_logout_token(&issuer, &got[1], &id_token).await;
    assert_ne!(c["sid"], claims(&got[0])["sid"], "another session");
    let (status, _) = issuer.refresh(tokens["refresh_token"].as_str().unwrap()).await;
    assert_eq!(status, 400, "the session's refresh token is gone");
}

#[tokio::test]
async fn a_back_channel_logout_is_retried_after_503() {
    let receiver = Receiver::default();
    receiver.statuses.lock().unwrap().extend([503, 503]);
    let (issuer, _config) = issuer_with_backchannel(&receiver.start().await).await;
    let browser = Browser::new();
    let tokens = browser_tokens(&issuer, &browser).await;
    let r = logout(&issuer, &browser, &tokens).await;
    assert_eq!(r.status(), 200, "the logout does not wait for the deliveries");
    let got = receiver.wait_for(3).await;
    assert_eq!(got.len(), 3, "two 503s, then a 200: three deliveries");
    assert!(got.iter().all(|t| t == &got[0]), "each attempt carries the same token");
    assert!(receiver.statuses.lock().unwrap().is_empty());
}

#[tokio::test]
async fn revoking_a_group_ends_its_members_sessions_even_without_refresh_tokens() {
    let (issuer, config) = Issuer::start_with_file(|t| t).await;
    let jane = issuer.tokens("jane@example.com").await;
    let admin_browser = Browser::new();
    let auth_url = issuer.auth_url("openid email groups", "st");
    let (status, location) = admin_browser.sign_in(&auth_url, "admin@example.com", "password").await;
    assert_eq!(status, 303);
    assert!(location.unwrap().starts_with(REDIRECT));
    let silent = |browser: &Browser| {
        let (client, url) = (browser.client.clone(), auth_url.clone());
        async move {
            let r = client.get(url).send().await.unwrap();
            r.headers()["location"].to_str().unwrap().to_owned()
        }
    };
    assert!(silent(&admin_browser).await.starts_with(REDIRECT), "the admin's session signs in silently");

    let out = revoke(&config, &["--group", "admins"]).await;
    assert!(out.contains("revoked 0 refresh-token famil(ies) and 1 browser session(s)"), "{out}");
    assert!(silent(&admin_browser).await.contains("/login?req="), "the admin's session is gone");
    let (status, body) = issuer.refresh(jane["refresh_token"].as_str().unwrap()).await;
    assert_eq!(status, 200, "jane is not an admin: {body}");
    let body: Value = feed(&issuer, "0", None).await.json().await.unwrap();
    assert!(lists(&body, "group", "admins"), "{body}");
    // The admin is named by `sub` too: a token minted without the groups scope carries no groups claim.
    let entries = body["revocations"].as_array().unwrap();
    let mut kinds: Vec<&str> = entries.iter().map(|e| e["kind"].as_str().unwrap()).collect();
    kinds.sort_unstable();
    assert_eq!(kinds, ["group", "sid", "sub"], "the group, the admin's sub and sid: {body}");
    let jane_sub = claims(jane["id_token"].as_str().unwrap())["sub"].as_str().unwrap().to_owned();
    assert!(!lists(&body, "sub", &jane_sub), "jane is untouched: {body}");
}

#[tokio::test]
async fn a_back_channel_logout_answered_400_is_not_retried() {
    let receiver = Receiver::default();
    receiver.statuses.lock().unwrap().push_back(400);
    let (issuer, config) = issuer_with_backchannel(&receiver.start().await).await;
    let tokens = browser_tokens(&issuer, &Browser::new()).await;
    let sid = claims(tokens["id_token"].as_str().unwrap())["sid"].as_str().unwrap().to_owned();
    // The command waits for its deliveries to end, so what arrived by then is all there is.
    let out = revoke(&config, &["--session", &sid]).await;
    assert!(out.contains("Rejected"), "{out}");
    assert_eq!(receiver.tokens.lock().unwrap().len(), 1, "400 is final");
}
