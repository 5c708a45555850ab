//! Access tokens over real HTTP: JWTs by default (RFC 9068), verified here with an independent JWT library
//! against `/keys`; the opaque setting; `/userinfo` with both.

mod common;

use std::time::Duration;

use aws_lc_rs::digest;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use common::{claims, header, http, Issuer, CLIENT};
use issuer::token::AccessTokenFormat;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{json, Value};

/// Verifies `token` against the issuer's JWKS with `jsonwebtoken`: signature, `exp`, `iss`, and `aud`
/// containing `aud`. Returns the header's `typ` and the claims.
async fn verify_with_jwks(issuer: &Issuer, token: &str, aud: &str) -> Result<(Option<String>, Value), String> {
    let jwks: JwkSet = http().get(issuer.endpoint("/keys")).send().await.unwrap().json().await.unwrap();
    let head = jsonwebtoken::decode_header(token).map_err(|e| e.to_string())?;
    let jwk = jwks.find(head.kid.as_deref().ok_or("no kid")?).ok_or("kid not in JWKS")?;
    let mut validation = Validation::new(Algorithm::RS256);
    validation.set_issuer(&[&issuer.url]);
    validation.set_audience(&[aud]);
    validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
    // The issuer's clock is frozen at the test's start: no leeway needed, and none wanted.
    validation.leeway = 0;
    let key = DecodingKey::from_jwk(jwk).map_err(|e| e.to_string())?;
    let data = jsonwebtoken::decode::<Value>(token, &key, &validation).map_err(|e| e.to_string())?;
    Ok((data.header.typ, data.claims))
}

fn at_hash(access_token: &str) -> String {
    let d = digest::digest(&digest::SHA256, access_token.as_bytes());
    B64.encode(&d.as_ref()[..16])
}

async fn userinfo(issuer: &Issuer, token: &str) -> (u16, Value) {
    let r = http().get(issuer.endpoint("/userinfo")).bearer_auth(token).send().await.unwrap();
    let status = r.status().as_u16();
    let body = if status == 200 { r.json().await.unwrap() } else { Value::Null };
    (status, body)
}

#[tokio::test]
async fn jwt_access_tokens_verify_against_jwks_with_every_rfc9068_claim() {
    let issuer = Issuer::start().await;
    let t = issuer.tokens("jane@example.com").await;
    let at = t["access_token"].as_str().unwrap();
    let id = claims(t["id_token"].as_str().unwrap());

    let (typ, c) = verify_with_jwks(&issuer, at, CLIENT).await.expect("the access token verifies against /keys");
    assert_eq!(typ.as_deref(), Some("at+jwt"), "RFC 9068 §2.1 explicit typing");
    assert_eq!(header(at)["kid"], header(t["id_token"].as_str().unwrap())["kid"], "signed by the ID token's key");
    assert_eq!(c["iss"], issuer.url);
    assert_eq!(c["sub"], id["sub"], "the ID token's subject");
    assert_eq!(c["aud"], CLIENT, "the client, as in the ID token");
    assert_eq!(c["client_id"], CLIENT);
    assert_eq!(c["scope"], "openid email profile groups offline_access");
    assert_eq!((c["iat"].clone(), c["exp"].clone()), (id["iat"].clone(), id["exp"].clone()), "the ID token's times");
    assert_eq!(c["auth_time"], id["auth_time"]);
    assert_eq!(c["jti"].as_str().map(str::len), Some(22), "16 random bytes, base64url");
    for claim in ["email", "email_verified", "name", "preferred_username", "groups"] {
        assert_eq!(c[claim], id[claim], "{claim} as in the ID token");
    }
    assert!(c.get("nonce").is_none() && c.get("at_hash").is_none(), "no ID-token-only claims: {c}");
    assert_eq!(id["at_hash"], at_hash(at), "at_hash covers the JWT access token");
    assert!(
        verify_with_jwks(&issuer, at, "gateway").await.is_err(),
        "an audience check for another client fails, so the check above means something"
    );

    let (status, refreshed) = issuer.refresh(t["refresh_token"].as_str().unwrap()).await;
    assert_eq!(status, 200, "{refreshed}");
    let at2 = refreshed["access_token"].as_str().unwrap();
    let (typ, c2) = verify_with_jwks(&issuer, at2, CLIENT).await.expect("the refreshed access token verifies");
    assert_eq!(typ.as_deref(), Some("at+jwt"));
    assert_ne!(c2["jti"], c["jti"], "each access token has its own jti");
    assert_eq!(claims(refreshed["id_token"].as_str().unwrap())["at_hash"], at_hash(at2));
}

#[tokio::test]
async fn jwt_access_tokens_carry_only_what_the_scopes_allow_and_the_cross_client_audience() {
    let issuer = Issuer::start().await;
    let code = issuer.login("openid groups audience:server:client_id:kubernetes", "jane@example.com", "password").await;
    let (status, t) = issuer.exchange(&code).await;
    assert_eq!(status, 200, "{t}");
    let at = t["access_token"].as_str().unwrap();
    let (_, c) = verify_with_jwks(&issuer, at, "kubernetes").await.expect("a peer finds itself in aud");
    assert_eq!(c["aud"], json!(["kubernetes", CLIENT]), "the ID token's audience");
    assert_eq!(c["client_id"], CLIENT, "the requester");
    assert_eq!(c["groups"], json!(["developers"]));
    for claim in ["email", "email_verified", "name", "preferred_username"] {
        assert!(c.get(claim).is_none(), "{claim} needs its scope: {c}");
    }
}

#[tokio::test]
async fn the_opaque_setting_issues_opaque_access_tokens_that_userinfo_accepts() {
    let issuer = Issuer::start_tuned(|c| c.oauth2.access_token_format = AccessTokenFormat::Opaque).await;
    let t = issuer.tokens("jane@example.com").await;
    let at = t["access_token"].as_str().unwrap();
    assert_eq!(at.split('.').count(), 2, "not a JWS: {at}");
    assert!(verify_with_jwks(&issuer, at, CLIENT).await.is_err(), "no JWT library reads it");
    assert_eq!(claims(t["id_token"].as_str().unwrap())["at_hash"], at_hash(at), "at_hash covers the opaque token");
    let (status, info) = userinfo(&issuer, at).await;
    assert_eq!(status, 200);
    assert_eq!((info["email"].as_str(), info["groups"].clone()), (Some("jane@example.com"), json!(["developers"])));
    issuer.clock.advance(Duration::from_secs(601));
    assert_eq!(userinfo(&issuer, at).await.0, 401, "expired");
}

#[tokio::test]
async fn userinfo_accepts_jwt_access_tokens_and_refuses_tampered_ones_and_id_tokens() {
    let issuer = Issuer::start().await;
    let t = issuer.tokens("jane@example.com").await;
    let at = t["access_token"].as_str().unwrap();
    let (status, info) = userinfo(&issuer, at).await;
    assert_eq!(status, 200);
    assert_eq!(info["sub"], claims(at)["sub"]);
    assert_eq!(info["preferred_username"], "jane");

    let parts: Vec<&str> = at.split('.').collect();
    let mut forged = claims(at);
    forged["groups"] = json!(["admins"]);
    let forged = format!("{}.{}.{}", parts[0], B64.encode(forged.to_string()), parts[2]);
    let mut typed_as_id_token = header(at);
    typed_as_id_token["typ"] = json!("JWT");
    let retyped = format!("{}.{}.{}", B64.encode(typed_as_id_token.to_string()), parts[1], parts[2]);
    for (token, what) in [
        (forged.as_str(), "changed claims"),
        (retyped.as_str(), "a changed header"),
        (t["id_token"].as_str().unwrap(), "an ID token (typ JWT)"),
        (t["refresh_token"].as_str().unwrap(), "a refresh token"),
    ] {
        let r = http().get(issuer.endpoint("/userinfo")).bearer_auth(token).send().await.unwrap();
        assert_eq!(r.status(), 401, "{what}");
        assert!(r.headers()["www-authenticate"].to_str().unwrap().contains("invalid_token"), "{what}");
    }
}
