//! The `oidc` connector with a second tokengate issuer as the upstream OpenID Provider, over real HTTP: the
//! browser leaves for the upstream's login page and comes back to `/callback`; the upstream's groups reach
//! the ID token; refresh goes through the upstream's refresh grant (which rotates strictly, so a second use
//! of an upstream refresh token would revoke the upstream session), once per family even under concurrent
//! refreshes; upstream revocation ends the downstream family; an upstream outage is a 503 that loses
//! nothing.

mod common;

use common::{claims, query_param, Browser, Issuer, CLIENT, REDIRECT, SECRET};
use issuer::config::{Client, Config};

const SCOPES: &str = "openid email profile groups offline_access";
const DOWNSTREAM_SECRET: &str = "downstream-secret";
/// The password database's admin in the dev config, as the upstream knows them.
const UPSTREAM_USER_ID: &str = "08a8684b-db88-4b73-90a9-3cd1661f5466";

/// The upstream (another tokengate issuer, password database) mints Dex's subject for its user.
fn upstream_sub() -> String {
    issuer::connector::dex_subject(UPSTREAM_USER_ID, "local")
}

/// The upstream registers the downstream issuer as a client; its `/callback` on any loopback port
/// (RFC 8252 §7.3). Strict rotation upstream: a refresh token used twice revokes the upstream session.
fn upstream_tune(c: &mut Config) {
    c.static_clients.push(Client {
        id: "downstream".into(),
        secret: Some(DOWNSTREAM_SECRET.into()),
        public: false,
        name: "Downstream issuer".into(),
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
    });
    c.expiry.refresh_tokens.reuse_interval = std::time::Duration::ZERO;
}

fn connector_yaml(upstream: &Issuer, extra: &str) -> String {
    format!(
        r#"connectors:
  - type: oidc
    id: upstream
    name: Upstream SSO
    config:
      issuer: {}
      clientID: downstream
      clientSecret: {DOWNSTREAM_SECRET}
      redirectURI: "{{issuer}}/callback"
      scopes: [profile, email, groups]
      insecureEnableGroups: true
      claimMapping:
        preferred_username: preferred_username
{extra}"#,
        upstream.url
    )
}

/// Follows the whole browser journey through the upstream's login form; returns the downstream code.
async fn login_via_upstream(downstream: &Issuer, login: &str) -> String {
    let browser = Browser::new();
    let r = browser.client.get(downstream.auth_url(SCOPES, "st")).send().await.unwrap();
    let login_page = format!("{}{}", downstream.url, r.headers()["location"].to_str().unwrap());
    let html = browser.client.get(&login_page).send().await.unwrap().text().await.unwrap();
    let href = html.split("<a class=\"button\" href=\"").nth(1).expect("a button for the OIDC connector");
    let href = href.split('"').next().unwrap().replace("&amp;", "&");
    assert!(html.contains("Continue with Upstream SSO"), "{html}");
    // To the upstream's authorization endpoint, with PKCE and a nonce.
    let r = browser.client.get(format!("{}{href}", downstream.url)).send().await.unwrap();
    assert_eq!(r.status(), 303, "{:?}", r.text().await);
    let upstream_auth = r.headers()["location"].to_str().unwrap().to_owned();
    for p in ["code_challenge", "nonce", "state"] {
        assert!(query_param(&upstream_auth, p).is_some(), "{p} sent upstream: {upstream_auth}");
    }
    assert_eq!(query_param(&upstream_auth, "code_challenge_method").as_deref(), Some("S256"));
    assert!(query_param(&upstream_auth, "scope").unwrap().contains("offline_access"));
    let (status, location) = browser.sign_in(&upstream_auth, login, "password").await;
    assert_eq!(status, 303);
    let callback = location.unwrap();
    assert!(callback.starts_with(&format!("{}/callback?", downstream.url)), "{callback}");
    let r = browser.client.get(&callback).send().await.unwrap();
    assert_eq!(r.status(), 303, "{:?}", r.text().await);
    let back = r.headers()["location"].to_str().unwrap().to_owned();
    assert!(back.starts_with(REDIRECT), "{back}");
    query_param(&back, "code").unwrap()
}

async fn tokens(downstream: &Issuer, login: &str) -> serde_json::Value {
    let code = login_via_upstream(downstream, login).await;
    let (status, body) = downstream.exchange(&code).await;
    assert_eq!(status, 200, "{body}");
    body
}

fn upstream_refreshes(upstream: &Issuer) -> u64 {
    let text = upstream.state.metrics.encode();
    text.lines()
        .find(|l| l.starts_with("issuer_refreshes_total{result=\"rotated\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn users_of_an_upstream_provider_sign_in_with_its_claims_and_a_dex_subject() {
    let upstream = Issuer::start_tuned(upstream_tune).await;
    let downstream = Issuer::start_with(&connector_yaml(&upstream, ""), |_| {}).await;
    let body = tokens(&downstream, "admin@example.com").await;
    let c = claims(body["id_token"].as_str().unwrap());
    assert_eq!(c["email"], "admin@example.com");
    assert_eq!(c["email_verified"], true);
    assert_eq!(c["preferred_username"], "admin");
    assert_eq!(c["groups"], serde_json::json!(["admins", "developers"]));
    assert_eq!(c["sub"], issuer::connector::dex_subject(&upstream_sub(), "upstream"));
    assert_eq!(c["iss"], downstream.url, "the downstream issuer signs its own tokens");
}

#[tokio::test]
async fn policies_refuse_with_a_403_and_groups_can_be_filtered_and_renamed() {
    let upstream = Issuer::start_tuned(upstream_tune).await;
    let extra = "      allowedGroups: [sso-admins]\n      groupsPrefix: sso-\n      claimModifications:\n        filterGroupClaims: {groupsFilter: '^adm'}\n";
    let downstream = Issuer::start_with(&connector_yaml(&upstream, extra), |_| {}).await;
    let c = claims(tokens(&downstream, "admin@example.com").await["id_token"].as_str().unwrap());
    assert_eq!(
        c["groups"],
        serde_json::json!(["sso-admins"]),
        "filtered upstream, prefixed, then cut to allowedGroups"
    );

    // Jane is only in `developers`: refused with the reason, never a code.
    let browser = Browser::new();
    let r = browser.client.get(downstream.auth_url(SCOPES, "st")).send().await.unwrap();
    let login_page = format!("{}{}", downstream.url, r.headers()["location"].to_str().unwrap());
    let req = query_param(&login_page, "req").unwrap();
    let r = browser.client.get(format!("{}/auth/upstream?req={req}", downstream.url)).send().await.unwrap();
    let (_, location) =
        browser.sign_in(r.headers()["location"].to_str().unwrap(), "jane@example.com", "password").await;
    let r = browser.client.get(location.unwrap()).send().await.unwrap();
    assert_eq!(r.status(), 403);
    let page = r.text().await.unwrap();
    assert!(page.contains("not a member of any allowed group"), "{page}");
}

#[tokio::test]
async fn refresh_goes_upstream_once_per_family_even_when_refreshed_concurrently() {
    let upstream = Issuer::start_tuned(upstream_tune).await;
    let downstream = Issuer::start_with(&connector_yaml(&upstream, ""), |_| {}).await;
    let rt = tokens(&downstream, "admin@example.com").await["refresh_token"].as_str().unwrap().to_owned();

    let before = upstream_refreshes(&upstream);
    let (a, b, c) = tokio::join!(downstream.refresh(&rt), downstream.refresh(&rt), downstream.refresh(&rt));
    for (status, body) in [&a, &b, &c] {
        assert_eq!(*status, 200, "every duplicate within the reuse window succeeds: {body}");
    }
    assert_eq!(a.1["refresh_token"], b.1["refresh_token"]);
    assert_eq!(a.1["refresh_token"], c.1["refresh_token"]);
    assert_eq!(upstream_refreshes(&upstream) - before, 1, "one upstream refresh for three downstream ones");

    // The rotated upstream token was kept: the next refresh works upstream too (strict rotation there).
    let rt = a.1["refresh_token"].as_str().unwrap().to_owned();
    let (status, body) = downstream.refresh(&rt).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(upstream_refreshes(&upstream) - before, 2);
    assert_eq!(
        claims(body["id_token"].as_str().unwrap())["sub"],
        issuer::connector::dex_subject(&upstream_sub(), "upstream")
    );

    // A second login of the same user (another device) has its own upstream refresh token.
    let other = tokens(&downstream, "admin@example.com").await["refresh_token"].as_str().unwrap().to_owned();
    let rt = body["refresh_token"].as_str().unwrap().to_owned();
    assert_eq!(downstream.refresh(&other).await.0, 200);
    assert_eq!(downstream.refresh(&rt).await.0, 200, "the families never consume each other's upstream token");
}

#[tokio::test]
async fn an_upstream_outage_is_503_and_loses_nothing_and_upstream_revocation_ends_the_family() {
    let upstream = Issuer::start_tuned(upstream_tune).await;
    let downstream = Issuer::start_with(&connector_yaml(&upstream, ""), |_| {}).await;
    let rt = tokens(&downstream, "admin@example.com").await["refresh_token"].as_str().unwrap().to_owned();

    upstream.server.abort();
    let r = common::http()
        .post(downstream.endpoint("/token"))
        .basic_auth(CLIENT, Some(SECRET))
        .form(&[("grant_type", "refresh_token"), ("refresh_token", rt.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    assert!(r.headers().contains_key("retry-after"));
    assert_eq!(r.json::<serde_json::Value>().await.unwrap()["error"], "temporarily_unavailable");

    let upstream = upstream.restart().await;
    let (status, body) = downstream.refresh(&rt).await;
    assert_eq!(status, 200, "the same refresh token works once the provider is back: {body}");
    let rt = body["refresh_token"].as_str().unwrap().to_owned();

    // The upstream revokes its session (RFC 7009, with the downstream's client credentials).
    let id = issuer::token::RefreshTokenString::parse(&rt).unwrap().id;
    let record = downstream.state.storage.get_refresh_token(&id).await.expect("the downstream token record");
    let upstream_rt = record.identity.connector_data.as_ref().unwrap().0["refresh_token"].as_str().unwrap().to_owned();
    let r = common::http()
        .post(upstream.endpoint("/revoke"))
        .basic_auth("downstream", Some(DOWNSTREAM_SECRET))
        .form(&[("token", upstream_rt.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let (status, body) = downstream.refresh(&rt).await;
    assert_eq!((status, body["error"].as_str()), (400, Some("invalid_grant")), "{body}");
}

#[tokio::test]
async fn an_upstream_error_on_the_callback_is_a_page_not_a_500() {
    let upstream = Issuer::start_tuned(upstream_tune).await;
    let downstream = Issuer::start_with(&connector_yaml(&upstream, ""), |_| {}).await;
    let browser = Browser::new();
    let r = browser.client.get(downstream.auth_url(SCOPES, "st")).send().await.unwrap();
    let req = query_param(&format!("http://x{}", r.headers()["location"].to_str().unwrap()), "req").unwrap();
    let r = browser
        .client
        .get(format!(
            "{}/callback?error=access_denied&error_description=user+said+no&state={req}.upstream",
            downstream.url
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("access_denied"));
    // A callback from another browser (no CSRF cookie) is refused before anything is exchanged.
    let r = common::http()
        .get(format!("{}/callback?code=stolen&state={req}.upstream", downstream.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    // A state naming no login.
    let r = common::http().get(format!("{}/callback?code=x&state=nope", downstream.url)).send().await.unwrap();
    assert_eq!(r.status(), 400);
}

#[path = "common/oidc_provider.rs"]
mod provider;

/// The `oidc` connector in front of panva's `oidc-provider` (OpenID Certified): PKCE required, refresh
/// tokens rotated with no reuse window (a reused one revokes the grant), `offline_access` only with
/// `prompt=consent`, and its own login and consent pages.
#[tokio::test]
#[ignore = "needs panva oidc-provider: `make test` installs it and runs ignored tests"]
async fn panva_oidc_provider_as_the_upstream_signs_in_refreshes_and_revokes() {
    let port = provider::free_port();
    let yaml = format!(
        r#"connectors:
  - type: oidc
    id: acme
    name: ACME realm
    config:
      issuer: http://127.0.0.1:{port}/realms/acme
      clientID: tokengate
      clientSecret: tokengate-secret
      redirectURI: "{{issuer}}/callback"
      scopes: [profile, email, groups]
      insecureEnableGroups: true
"#
    );
    let downstream = Issuer::start_with(&yaml, |_| {}).await;
    let client = serde_json::json!([{
        "client_id": "tokengate",
        "client_secret": "tokengate-secret",
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
        "redirect_uris": [format!("{}/callback", downstream.url)],
        "token_endpoint_auth_method": "client_secret_basic",
    }]);
    let p = provider::start_on(port, client).await;

    let browser = Browser::new();
    let r = browser.client.get(downstream.auth_url(SCOPES, "st")).send().await.unwrap();
    let req = query_param(&format!("http://x{}", r.headers()["location"].to_str().unwrap()), "req").unwrap();
    let r = browser.client.get(format!("{}/auth/acme?req={req}", downstream.url)).send().await.unwrap();
    assert_eq!(r.status(), 303);
    let auth = r.headers()["location"].to_str().unwrap().to_owned();
    assert!(auth.starts_with(&p.issuer), "{auth}");
    let callback =
        provider::through_the_providers_pages(&p.base, &auth, "alice", &format!("{}/callback", downstream.url)).await;
    let r = browser.client.get(&callback).send().await.unwrap();
    assert_eq!(r.status(), 303, "{:?}", r.text().await);
    let code = query_param(r.headers()["location"].to_str().unwrap(), "code").unwrap();
    let (status, body) = downstream.exchange(&code).await;
    assert_eq!(status, 200, "{body}");
    let c = claims(body["id_token"].as_str().unwrap());
    assert_eq!(c["email"], "alice@example.com");
    assert_eq!(c["preferred_username"], "alice");
    assert_eq!(c["groups"], serde_json::json!(["developers"]));
    assert_eq!(c["sub"], issuer::connector::dex_subject("alice", "acme"));

    // Refreshes keep the provider's rotated refresh token (a reused one would revoke the grant there),
    // and concurrent refreshes reach the provider once.
    let mut rt = body["refresh_token"].as_str().unwrap().to_owned();
    for _ in 0..2 {
        let (status, body) = downstream.refresh(&rt).await;
        assert_eq!(status, 200, "{body}");
        rt = body["refresh_token"].as_str().unwrap().to_owned();
    }
    let (a, b) = tokio::join!(downstream.refresh(&rt), downstream.refresh(&rt));
    assert_eq!((a.0, b.0), (200, 200), "{} / {}", a.1, b.1);
    rt = a.1["refresh_token"].as_str().unwrap().to_owned();
    let (status, body) = downstream.refresh(&rt).await;
    assert_eq!(status, 200, "the provider's grant survived the concurrent refreshes: {body}");
    rt = body["refresh_token"].as_str().unwrap().to_owned();

    // The provider revokes the grant (RFC 7009): the downstream family ends at its next refresh.
    let id = issuer::token::RefreshTokenString::parse(&rt).unwrap().id;
    let record = downstream.state.storage.get_refresh_token(&id).await.unwrap();
    let upstream_rt = record.identity.connector_data.as_ref().unwrap().0["refresh_token"].as_str().unwrap().to_owned();
    let discovery: serde_json::Value =
        reqwest::get(format!("{}/.well-known/openid-configuration", p.issuer)).await.unwrap().json().await.unwrap();
    let r = common::http()
        .post(discovery["revocation_endpoint"].as_str().unwrap())
        .basic_auth("tokengate", Some("tokengate-secret"))
        .form(&[("token", upstream_rt.as_str()), ("token_type_hint", "refresh_token")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let (status, body) = downstream.refresh(&rt).await;
    assert_eq!((status, body["error"].as_str()), (400, Some("invalid_grant")), "{body}");
}

#[test]
fn a_redirect_uri_that_is_not_this_issuers_callback_is_a_configuration_error() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/dev.yaml");
    let dev = std::fs::read_to_string(path).unwrap();
    let config = |redirect: &str| {
        format!(
            "{dev}\nconnectors:\n  - type: oidc\n    id: sso\n    config:\n      issuer: https://sso.example.com\n      clientID: c\n      clientSecret: s\n      redirectURI: {redirect}\n"
        )
    };
    let env = |name: &str| (name == "ISSUER_URL").then(|| "http://127.0.0.1:5556".to_owned());
    assert!(Config::parse("dex.yaml", &config("http://127.0.0.1:5556/callback"), &env).is_ok());
    // Dex expands variables anywhere in a value.
    assert!(Config::parse("dex.yaml", &config("$ISSUER_URL/callback"), &env).is_ok());
    for wrong in ["https://evil.example.com/callback", "http://127.0.0.1:5556/dex/callback"] {
        let err = Config::parse("dex.yaml", &config(wrong), &env).unwrap_err().to_string();
        assert!(
            err.contains(
                "connectors[0].config.redirectURI: expected this issuer's callback http://127.0.0.1:5556/callback"
            ),
            "{err}"
        );
    }
}

#[tokio::test]
async fn a_device_login_can_go_through_the_upstream_provider() {
    let upstream = Issuer::start_tuned(upstream_tune).await;
    let downstream = Issuer::start_with(&connector_yaml(&upstream, ""), |_| {}).await;
    let r = common::http()
        .post(downstream.endpoint("/device/code"))
        .basic_auth(CLIENT, Some(SECRET))
        .form(&[("scope", SCOPES)])
        .send()
        .await
        .unwrap();
    let d: serde_json::Value = r.json().await.unwrap();
    let browser = Browser::new();
    let r = browser
        .client
        .post(downstream.endpoint("/device"))
        .form(&[("user_code", d["user_code"].as_str().unwrap())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let req = query_param(&format!("http://x{}", r.headers()["location"].to_str().unwrap()), "req").unwrap();
    let r = browser.client.get(format!("{}/auth/upstream?req={req}", downstream.url)).send().await.unwrap();
    let (status, callback) =
        browser.sign_in(r.headers()["location"].to_str().unwrap(), "admin@example.com", "password").await;
    assert_eq!(status, 303);
    let r = browser.client.get(callback.unwrap()).send().await.unwrap();
    assert_eq!(r.status(), 303, "{:?}", r.text().await);
    assert_eq!(r.headers()["location"], "/device/approved");
    let (status, body) = downstream
        .token(&[
            ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
            ("device_code", d["device_code"].as_str().unwrap()),
        ])
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        claims(body["id_token"].as_str().unwrap())["sub"],
        issuer::connector::dex_subject(&upstream_sub(), "upstream")
    );
}

#[tokio::test]
async fn a_claim_whose_holder_died_is_taken_over_and_the_refresh_succeeds() {
    let upstream = Issuer::start_tuned(upstream_tune).await;
    let downstream = Issuer::start_with(&connector_yaml(&upstream, ""), |_| {}).await;
    let rt = tokens(&downstream, "admin@example.com").await["refresh_token"].as_str().unwrap().to_owned();
    // A replica claimed this token two minutes ago and died before it called the upstream or stored the
    // successor: the token is marked rotated, and its successor does not exist.
    let presented = issuer::token::RefreshTokenString::parse(&rt).unwrap();
    let successor = presented.successor(&downstream.state.server_key).id;
    let two_minutes_ago = downstream.state.clock.now() - 120;
    downstream
        .state
        .storage
        .update_refresh_token(
            &presented.id,
            Box::new(move |mut t| {
                t.rotated_at = Some(two_minutes_ago);
                t.successor = Some(successor);
                Ok(t)
            }),
        )
        .await
        .unwrap();
    let before = upstream_refreshes(&upstream);
    let (status, body) = downstream.refresh(&rt).await;
    assert_eq!(status, 200, "the stale claim is taken over, not treated as a replay: {body}");
    assert_eq!(upstream_refreshes(&upstream) - before, 1);
    let (status, body) = downstream.refresh(body["refresh_token"].as_str().unwrap()).await;
    assert_eq!(status, 200, "{body}");
}
