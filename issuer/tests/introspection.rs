//! Token introspection (RFC 7662) with plain HTTP: access tokens in both formats and refresh tokens, for
//! the client they were issued to only; client authentication as at the token endpoint; revoked, rotated
//! and expired tokens inactive.

mod common;

use std::time::Duration;

use common::{claims, http, Issuer, CLIENT, SECRET};
use issuer::token::AccessTokenFormat;
use serde_json::{json, Value};

const GATEWAY: (&str, &str) = ("gateway", "gateway-secret");

/// POSTs `form` to the introspection endpoint with client_secret_basic as `client`.
async fn introspect_as(issuer: &Issuer, client: (&str, &str), form: &[(&str, &str)]) -> (u16, Value) {
    let r = http()
        .post(issuer.endpoint("/token/introspect"))
        .basic_auth(client.0, Some(client.1))
        .form(form)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    assert_eq!(r.headers()["cache-control"], "no-store", "every answer is no-store");
    (status, r.json().await.unwrap_or(Value::Null))
}

/// What the example app learns about `token`.
async fn introspect(issuer: &Issuer, token: &str) -> Value {
    let (status, body) = introspect_as(issuer, (CLIENT, SECRET), &[("token", token)]).await;
    assert_eq!(status, 200, "{body}");
    body
}

fn inactive() -> Value {
    json!({ "active": false })
}

#[tokio::test]
async fn introspection_describes_access_and_refresh_tokens_to_their_client() {
    let issuer = Issuer::start().await;
    let doc: Value =
        http().get(issuer.endpoint("/.well-known/openid-configuration")).send().await.unwrap().json().await.unwrap();
    assert_eq!(doc["introspection_endpoint"], issuer.endpoint("/token/introspect"));
    assert_eq!(
        doc["introspection_endpoint_auth_methods_supported"],
        json!(["client_secret_basic", "client_secret_post"])
    );

    let t = issuer.tokens("jane@example.com").await;
    let id = claims(t["id_token"].as_str().unwrap());
    let at = t["access_token"].as_str().unwrap();
    let a = introspect(&issuer, at).await;
    assert_eq!(a["active"], true, "{a}");
    assert_eq!(a["token_type"], "Bearer");
    assert_eq!(a["token_use"], "access_token");
    assert_eq!((a["client_id"].as_str(), a["iss"].as_str()), (Some(CLIENT), Some(issuer.url.as_str())));
    assert_eq!((a["sub"].clone(), a["aud"].clone()), (id["sub"].clone(), id["aud"].clone()));
    assert_eq!((a["iat"].clone(), a["exp"].clone()), (id["iat"].clone(), id["exp"].clone()));
    assert_eq!(a["scope"], "openid email profile groups offline_access");
    assert_eq!(a["jti"], claims(at)["jti"]);
    assert_eq!((a["username"].as_str(), a["email"].as_str()), (Some("jane"), Some("jane@example.com")));
    assert_eq!(a["groups"], json!(["developers"]));
    assert_eq!(a["ext"]["email"], "jane@example.com", "Dex's `ext` too");

    let rt = t["refresh_token"].as_str().unwrap();
    let r = introspect(&issuer, rt).await;
    assert_eq!(r["active"], true, "{r}");
    assert_eq!(r["token_use"], "refresh_token");
    assert!(r.get("token_type").is_none(), "a refresh token is no bearer access token: {r}");
    assert_eq!(
        (r["client_id"].as_str(), r["sub"].clone(), r["aud"].clone()),
        (Some(CLIENT), id["sub"].clone(), id["aud"].clone())
    );
    assert_eq!(r["scope"], "openid email profile groups offline_access");
    assert_eq!(r["iat"], id["iat"]);
    assert_eq!(r["exp"].as_i64().unwrap() - r["iat"].as_i64().unwrap(), 168 * 3600, "validIfNotUsedFor");
    assert_eq!(r["username"], "jane");

    // The hint is only a hint (§2.1), and client_secret_post works as at the token endpoint.
    let (status, body) =
        introspect_as(&issuer, (CLIENT, SECRET), &[("token", at), ("token_type_hint", "refresh_token")]).await;
    assert_eq!((status, body["active"].clone()), (200, json!(true)));
    let r = http()
        .post(issuer.endpoint("/token/introspect"))
        .form(&[("token", rt), ("client_id", CLIENT), ("client_secret", SECRET)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.json::<Value>().await.unwrap()["active"], true);

    for (token, what) in [
        ("garbage", "garbage"),
        ("a.b", "two parts"),
        ("a.b.c", "three parts"),
        (t["id_token"].as_str().unwrap(), "an ID token"),
    ] {
        assert_eq!(introspect(&issuer, token).await, inactive(), "{what}");
    }
}

#[tokio::test]
async fn a_client_learns_nothing_about_another_clients_tokens_except_as_their_audience() {
    let issuer = Issuer::start().await;
    let t = issuer.tokens("jane@example.com").await;
    for key in ["access_token", "refresh_token"] {
        let (status, body) = introspect_as(&issuer, GATEWAY, &[("token", t[key].as_str().unwrap())]).await;
        assert_eq!((status, body), (200, inactive()), "{key} of example-app, asked by gateway");
    }
    // A cross-client peer is in the access token's audience: it may introspect it (not the refresh token).
    let scope = "openid offline_access audience:server:client_id:kubernetes";
    let (_, t) = issuer.exchange(&issuer.login(scope, "jane@example.com", "password").await).await;
    let kubernetes = ("kubernetes", "kubernetes-secret");
    let (_, a) = introspect_as(&issuer, kubernetes, &[("token", t["access_token"].as_str().unwrap())]).await;
    assert_eq!((a["active"].clone(), a["client_id"].clone()), (json!(true), json!(CLIENT)), "{a}");
    assert_eq!(a["aud"], json!(["kubernetes", CLIENT]));
    let (_, r) = introspect_as(&issuer, kubernetes, &[("token", t["refresh_token"].as_str().unwrap())]).await;
    assert_eq!(r, inactive(), "a refresh token is its client's alone");
}

#[tokio::test]
async fn bad_or_public_client_authentication_is_invalid_client_401() {
    let issuer = Issuer::start_with("", |c| {
        c.static_clients.push(issuer::config::Client {
            id: "cli".into(),
            secret: None,
            public: true,
            name: "CLI".into(),
            redirect_uris: vec!["http://127.0.0.1:8000".into()],
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
    let t = issuer.tokens("jane@example.com").await;
    let at = t["access_token"].as_str().unwrap();

    let (status, body) = introspect_as(&issuer, (CLIENT, "wrong"), &[("token", at)]).await;
    assert_eq!((status, body["error"].as_str()), (401, Some("invalid_client")));
    let r = http()
        .post(issuer.endpoint("/token/introspect"))
        .basic_auth(CLIENT, Some("wrong"))
        .form(&[("token", at)])
        .send()
        .await
        .unwrap();
    assert!(r.headers()["www-authenticate"].to_str().unwrap().starts_with("Basic"), "RFC 6749 §5.2");
    for (form, what) in [
        (vec![("token", at)], "no client authentication"),
        (vec![("token", at), ("client_id", "cli")], "a public client (authentication none)"),
        (vec![("token", at), ("client_id", "ghost"), ("client_secret", "x")], "an unknown client"),
    ] {
        let r = http().post(issuer.endpoint("/token/introspect")).form(&form).send().await.unwrap();
        assert_eq!(r.status(), 401, "{what}");
        assert_eq!(r.json::<Value>().await.unwrap()["error"], "invalid_client", "{what}");
    }
    let (status, body) = introspect_as(&issuer, (CLIENT, SECRET), &[("nothing", "x")]).await;
    assert_eq!((status, body["error"].as_str()), (400, Some("invalid_request")), "no token parameter");
}

#[tokio::test]
async fn revoked_and_rotated_refresh_tokens_are_inactive() {
    let issuer = Issuer::start().await;
    let t = issuer.tokens("jane@example.com").await;
    let rt0 = t["refresh_token"].as_str().unwrap();
    let (status, t1) = issuer.refresh(rt0).await;
    assert_eq!(status, 200);
    let rt1 = t1["refresh_token"].as_str().unwrap();
    assert_eq!(introspect(&issuer, rt0).await, inactive(), "rotated away, even within the reuse interval");
    assert_eq!(introspect(&issuer, rt1).await["active"], true);
    let wrong_secret = format!("{}.{}", rt1.split('.').next().unwrap(), "x".repeat(43));
    assert_eq!(introspect(&issuer, &wrong_secret).await, inactive(), "the right id with a wrong secret");

    let r = http()
        .post(issuer.endpoint("/revoke"))
        .basic_auth(CLIENT, Some(SECRET))
        .form(&[("token", rt1)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(introspect(&issuer, rt1).await, inactive(), "revoked");
}

#[tokio::test]
async fn expired_tokens_are_inactive() {
    let issuer = Issuer::start().await;
    let t = issuer.tokens("jane@example.com").await;
    let (at, rt) = (t["access_token"].as_str().unwrap(), t["refresh_token"].as_str().unwrap());
    issuer.clock.advance(Duration::from_secs(600));
    assert_eq!(introspect(&issuer, at).await["active"], true, "active through its last second");
    issuer.clock.advance(Duration::from_secs(1));
    assert_eq!(introspect(&issuer, at).await, inactive(), "expired access token");
    assert_eq!(introspect(&issuer, rt).await["active"], true, "the refresh token lives on");
    issuer.clock.advance(Duration::from_secs(168 * 3600));
    assert_eq!(introspect(&issuer, rt).await, inactive(), "unused for longer than validIfNotUsedFor");
}

#[tokio::test]
async fn opaque_access_tokens_introspect_too() {
    let issuer = Issuer::start_tuned(|c| c.oauth2.access_token_format = AccessTokenFormat::Opaque).await;
    let t = issuer.tokens("jane@example.com").await;
    let at = t["access_token"].as_str().unwrap();
    let a = introspect(&issuer, at).await;
    assert_eq!(
        (a["active"].clone(), a["token_type"].clone(), a["email"].clone()),
        (json!(true), json!("Bearer"), json!("jane@example.com")),
        "{a}"
    );
    let (_, other) = introspect_as(&issuer, GATEWAY, &[("token", at)]).await;
    assert_eq!(other, inactive(), "another client's");
    issuer.clock.advance(Duration::from_secs(601));
    assert_eq!(introspect(&issuer, at).await, inactive(), "expired");
}
