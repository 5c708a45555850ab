//! API clients with `Authorization: Bearer <JWT>` (kubectl, scripts): signature via JWKS, `iss`, `aud`,
//! `exp`, the verification cache, and a JWKS refetch when an unknown `kid` shows up.

mod common;

use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use common::*;
use serde_json::json;
use tests::Request;

fn api(token: &str) -> Request {
    Request::get(HOST, "/api/v1/pods")
        .header("authorization", &format!("Bearer {token}"))
        .header("accept", "application/json")
}

fn assert_invalid_token(r: &tests::Response, what: &str) {
    assert_eq!(r.status, 401, "{what}: {}", r.text());
    let challenge = r.header("www-authenticate").unwrap_or_default();
    assert!(challenge.starts_with("Bearer error=\"invalid_token\""), "{what}: {challenge}");
    assert!(challenge.contains("error_description="), "{what}: {challenge}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_valid_id_token_is_verified_once_and_passed_upstream() {
    let issuer = Issuer::start().await;
    let w = worker(&issuer, json!({})).await;
    let t = issuer.tokens_for("admin@example.com", "openid email groups").await;
    let token = t["id_token"].as_str().unwrap();
    let (r, seen) = send(&w, api(token)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = seen.unwrap();
    assert_eq!(header(&seen, "authorization"), Some(format!("Bearer {token}").as_str()));
    assert_eq!(header(&seen, "x-auth-request-email"), Some("admin@example.com"));

    let misses = w.metric("tokengate.bearer_cache_misses");
    for _ in 0..3 {
        let (r, _) = send(&w, api(token)).await;
        assert_eq!(r.status, 200);
    }
    assert_eq!(w.metric("tokengate.bearer_cache_misses"), misses, "verified once, then served from the cache");
    assert!(w.metric("tokengate.bearer_cache_hits") >= 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_bearer_tokens_get_401_with_a_bearer_challenge() {
    let issuer = Issuer::start().await;
    let w = worker(&issuer, json!({})).await;
    let t = issuer.tokens_for("jane@example.com", "openid email").await;
    let good = t["id_token"].as_str().unwrap().to_owned();
    let parts: Vec<&str> = good.split('.').collect();

    let mut payload = claims(&good);
    payload["email"] = json!("admin@example.com");
    let forged_claims = format!("{}.{}.{}", parts[0], B64.encode(payload.to_string()), parts[2]);
    let none = format!("{}.{}.", B64.encode(r#"{"alg":"none","typ":"JWT"}"#), parts[1]);
    let mut header = serde_json::from_slice::<serde_json::Value>(&B64.decode(parts[0]).unwrap()).unwrap();
    header["alg"] = json!("HS256");
    let hs256 = format!("{}.{}.{}", B64.encode(header.to_string()), parts[1], parts[2]);

    for (token, what) in [
        (forged_claims.as_str(), "changed claims"),
        (none.as_str(), "alg none"),
        (hs256.as_str(), "HS256 with the public key"),
        ("not-a-jwt", "garbage"),
    ] {
        let (r, seen) = send(&w, api(token)).await;
        assert!(seen.is_none(), "{what} must not reach the upstream");
        assert_invalid_token(&r, what);
    }

    // A token another client obtained (aud example-app) is refused unless listed in `audiences`.
    let app = ("example-app", "example-app-secret", "http://127.0.0.1:5555/callback");
    let other = issuer.tokens_as(app, "jane@example.com", "openid email").await;
    let (r, _) = send(&w, api(other["id_token"].as_str().unwrap())).await;
    assert_invalid_token(&r, "aud example-app");
    let lenient = worker(&issuer, json!({"audiences": ["example-app"]})).await;
    let (r, seen) = send(&lenient, api(other["id_token"].as_str().unwrap())).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(seen.is_some());

    // A cross-client token the gateway asked for (aud [kubernetes, gateway], azp gateway: Dex puts the
    // requester in `aud` too) is accepted as the gateway's own.
    let k8s = issuer.tokens_for("jane@example.com", "openid email audience:server:client_id:kubernetes").await;
    assert_eq!(claims(k8s["id_token"].as_str().unwrap())["aud"], json!(["kubernetes", "gateway"]));
    let (r, seen) = send(&w, api(k8s["id_token"].as_str().unwrap())).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(seen.is_some());

    // Expired (beyond the 60 s skew).
    advance(&issuer, &[&w], Duration::from_secs(10 * 60 + 61));
    let (r, _) = send(&w, api(&good)).await;
    assert_invalid_token(&r, "expired");
    assert!(w.metric("tokengate.verification_failures.expired") >= 1, "{}", w.logs().text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_kid_triggers_one_jwks_refetch() {
    let issuer = Issuer::start().await;
    let w = worker(&issuer, json!({})).await;
    let before = issuer.tokens_for("jane@example.com", "openid").await;
    assert_eq!(send(&w, api(before["id_token"].as_str().unwrap())).await.0.status, 200);

    // Same issuer URL, new keys the filter has never seen. Refetches on unknown kids are rate-limited
    // (at most one per 30 s, so a flood of garbage kids cannot hammer the issuer): the first try, right
    // after the start-up fetch, is refused.
    let issuer = issuer.replace_with_fresh_keys().await;
    let t = issuer.tokens_for("jane@example.com", "openid").await;
    let (r, _) = send(&w, api(t["id_token"].as_str().unwrap())).await;
    assert_invalid_token(&r, "unknown kid within the refetch interval");
    advance(&issuer, &[&w], Duration::from_secs(31));
    let (r, seen) = send(&w, api(t["id_token"].as_str().unwrap())).await;
    assert_eq!(r.status, 200, "the filter refetched JWKS and found the new kid: {}", r.text());
    assert!(seen.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jwt_access_token_is_accepted_like_an_id_token_and_an_opaque_one_is_not() {
    // Access tokens are JWTs by default (RFC 9068, `typ: at+jwt`) with the client in `aud`, as Dex's are,
    // and a resource server accepts them: so does the filter.
    let issuer = Issuer::start().await;
    let w = worker(&issuer, json!({})).await;
    let t = issuer.tokens_for("admin@example.com", "openid email groups").await;
    let (r, seen) = send(&w, api(t["access_token"].as_str().unwrap())).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(header(&seen.unwrap(), "x-auth-request-email"), Some("admin@example.com"));

    // `oauth2.accessTokenFormat: opaque`: only the issuer reads them.
    let opaque = Issuer::start_live(|c| c.oauth2.access_token_format = issuer::token::AccessTokenFormat::Opaque).await;
    let w = worker(&opaque, json!({})).await;
    let t = opaque.tokens_for("jane@example.com", "openid email").await;
    let (r, seen) = send(&w, api(t["access_token"].as_str().unwrap())).await;
    assert!(seen.is_none(), "an opaque access token must not reach the upstream");
    assert_invalid_token(&r, "an opaque access token");
}
