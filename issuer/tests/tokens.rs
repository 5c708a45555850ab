//! The token, revocation, userinfo and logout endpoints over real HTTP: code exchange and its failures,
//! refresh rotation with the reuse window, revocation, restarts, key rotation and cross-client audiences.

mod common;

use std::time::Duration;

use common::{claims, header, http, Issuer, CLIENT, REDIRECT, SECRET, VERIFIER};
use serde_json::Value;

fn error(body: &Value) -> &str {
    body["error"].as_str().unwrap_or("<none>")
}

#[tokio::test]
async fn code_exchange_issues_id_access_and_refresh_tokens() {
    let issuer = Issuer::start().await;
    let t = issuer.tokens("jane@example.com").await;
    assert_eq!(t["token_type"], "Bearer");
    assert_eq!(t["expires_in"], 600);
    let id = claims(t["id_token"].as_str().unwrap());
    assert_eq!(id["iss"], issuer.url);
    assert_eq!(id["aud"], CLIENT);
    assert_eq!(id["azp"], CLIENT);
    assert_eq!(id["nonce"], "n-xyz");
    assert_eq!(id["email"], "jane@example.com");
    assert_eq!(id["email_verified"], true);
    assert_eq!(id["preferred_username"], "jane");
    assert_eq!(id["groups"], serde_json::json!(["developers"]));
    assert_eq!(id["exp"].as_i64().unwrap() - id["iat"].as_i64().unwrap(), 600);
    for claim in ["sub", "auth_time", "at_hash", "sid"] {
        assert!(id.get(claim).is_some(), "{claim} present");
    }
    let kid = header(t["id_token"].as_str().unwrap())["kid"].as_str().unwrap().to_owned();
    let jwks: Value = http().get(issuer.endpoint("/keys")).send().await.unwrap().json().await.unwrap();
    assert!(jwks["keys"].as_array().unwrap().iter().any(|k| k["kid"] == kid), "the token's kid is in JWKS");
}

#[tokio::test]
async fn a_replayed_code_fails_and_revokes_what_it_issued() {
    let issuer = Issuer::start().await;
    let code = issuer.login("openid offline_access", "jane@example.com", "password").await;
    let (status, first) = issuer.exchange(&code).await;
    assert_eq!(status, 200);
    let (status, body) = issuer.exchange(&code).await;
    assert_eq!((status, error(&body)), (400, "invalid_grant"));
    let (status, body) = issuer.refresh(first["refresh_token"].as_str().unwrap()).await;
    assert_eq!((status, error(&body)), (400, "invalid_grant"), "the first redemption's refresh token is revoked");
}

#[tokio::test]
async fn bad_code_exchanges_get_rfc6749_errors_never_5xx() {
    let issuer = Issuer::start().await;
    let code = issuer.login("openid", "jane@example.com", "password").await;
    let wrong_verifier = VERIFIER.replace('d', "e");
    type Case<'a> = (Vec<(&'a str, &'a str)>, u16, &'a str);
    let cases: Vec<Case> = vec![
        (
            vec![
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", REDIRECT),
                ("code_verifier", &wrong_verifier),
            ],
            400,
            "invalid_grant",
        ),
        (vec![("grant_type", "authorization_code"), ("code", &code), ("redirect_uri", REDIRECT)], 400, "invalid_grant"),
        (
            vec![
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", "http://127.0.0.1:5555/other"),
                ("code_verifier", VERIFIER),
            ],
            400,
            "invalid_grant",
        ),
        (
            vec![
                ("grant_type", "authorization_code"),
                ("code", "nonsense"),
                ("redirect_uri", REDIRECT),
                ("code_verifier", VERIFIER),
            ],
            400,
            "invalid_grant",
        ),
        (vec![("grant_type", "authorization_code"), ("redirect_uri", REDIRECT)], 400, "invalid_request"),
        (vec![("grant_type", "password"), ("username", "x")], 400, "unsupported_grant_type"),
        (vec![("code", &code)], 400, "invalid_request"),
        (vec![("grant_type", "refresh_token"), ("refresh_token", "garbage")], 400, "invalid_grant"),
    ];
    for (form, status, err) in cases {
        let (s, body) = issuer.token(&form).await;
        assert_eq!((s, error(&body)), (status, err), "{form:?}");
        assert!(body["error_description"].is_string());
    }
    // The failures above did not consume the code.
    assert_eq!(issuer.exchange(&code).await.0, 200);
}

#[tokio::test]
async fn an_expired_code_is_invalid_grant() {
    let issuer = Issuer::start().await;
    let code = issuer.login("openid", "jane@example.com", "password").await;
    issuer.clock.advance(Duration::from_secs(11 * 60));
    let (status, body) = issuer.exchange(&code).await;
    assert_eq!((status, error(&body)), (400, "invalid_grant"));
}

#[tokio::test]
async fn client_authentication_failures_are_invalid_client_401() {
    let issuer = Issuer::start().await;
    let form = [("grant_type", "refresh_token"), ("refresh_token", "a.b")];
    let wrong_basic =
        http().post(issuer.endpoint("/token")).basic_auth(CLIENT, Some("wrong")).form(&form).send().await.unwrap();
    assert_eq!(wrong_basic.status(), 401);
    assert!(wrong_basic.headers()["www-authenticate"].to_str().unwrap().starts_with("Basic"));
    assert_eq!(wrong_basic.json::<Value>().await.unwrap()["error"], "invalid_client");
    let post =
        [("grant_type", "refresh_token"), ("refresh_token", "a.b"), ("client_id", CLIENT), ("client_secret", "nope")];
    let wrong_post = http().post(issuer.endpoint("/token")).form(&post).send().await.unwrap();
    assert_eq!(wrong_post.status(), 401);
    let both =
        http().post(issuer.endpoint("/token")).basic_auth(CLIENT, Some(SECRET)).form(&post).send().await.unwrap();
    assert_eq!(both.status(), 400, "two authentication methods are a malformed request");
    let unknown =
        http().post(issuer.endpoint("/token")).basic_auth("ghost", Some("x")).form(&form).send().await.unwrap();
    assert_eq!(unknown.status(), 401);
}

#[tokio::test]
async fn malformed_bodies_get_invalid_request() {
    let issuer = Issuer::start().await;
    let json = http()
        .post(issuer.endpoint("/token"))
        .basic_auth(CLIENT, Some(SECRET))
        .header("content-type", "application/json")
        .body(r#"{"grant_type":"authorization_code"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(json.status(), 400);
    assert_eq!(json.json::<Value>().await.unwrap()["error"], "invalid_request");
    let repeated = http()
        .post(issuer.endpoint("/token"))
        .basic_auth(CLIENT, Some(SECRET))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("grant_type=refresh_token&grant_type=authorization_code")
        .send()
        .await
        .unwrap();
    assert_eq!(repeated.status(), 400);
    let huge = http().post(issuer.endpoint("/token")).body(vec![b'a'; 200_000]).send().await.unwrap();
    assert_eq!(huge.status(), 413);
}

#[tokio::test]
async fn client_secret_post_works_too() {
    let issuer = Issuer::start().await;
    let code = issuer.login("openid", "jane@example.com", "password").await;
    let form = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", REDIRECT),
        ("code_verifier", VERIFIER),
        ("client_id", CLIENT),
        ("client_secret", SECRET),
    ];
    let r = http().post(issuer.endpoint("/token")).form(&form).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["cache-control"], "no-store");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_concurrent_refreshes_of_one_token_all_succeed_with_one_rotation() {
    let issuer = Issuer::start().await;
    let t = issuer.tokens("jane@example.com").await;
    let rt = t["refresh_token"].as_str().unwrap().to_owned();
    let r = tokio::join!(
        issuer.refresh(&rt),
        issuer.refresh(&rt),
        issuer.refresh(&rt),
        issuer.refresh(&rt),
        issuer.refresh(&rt)
    );
    let results = [r.0, r.1, r.2, r.3, r.4];
    let mut successors = std::collections::HashSet::new();
    for (status, body) in &results {
        assert_eq!(*status, 200, "{body}");
        successors.insert(body["refresh_token"].as_str().unwrap().to_owned());
        assert_eq!(claims(body["id_token"].as_str().unwrap())["sub"], claims(t["id_token"].as_str().unwrap())["sub"]);
    }
    assert_eq!(successors.len(), 1, "every replica got the same successor");
    let id = t["refresh_token"].as_str().unwrap().split('.').next().unwrap();
    let family_id = issuer.state.storage.get_refresh_token(id).await.unwrap().family_id;
    let family = issuer.state.storage.list_refresh_family(&family_id).await.unwrap();
    assert_eq!(family.len(), 2, "one rotation: the original and one successor");

    // The successor works and rotates again.
    let next = successors.into_iter().next().unwrap();
    let (status, body) = issuer.refresh(&next).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn reuse_after_the_window_is_rejected_and_revokes_the_family() {
    let issuer = Issuer::start().await;
    let t = issuer.tokens("jane@example.com").await;
    let rt0 = t["refresh_token"].as_str().unwrap().to_owned();
    let (_, r1) = issuer.refresh(&rt0).await;
    let rt1 = r1["refresh_token"].as_str().unwrap().to_owned();
    issuer.clock.advance(Duration::from_secs(60));
    let (status, again) = issuer.refresh(&rt0).await;
    assert_eq!(status, 200, "within the 2m window the old token still gets its successor");
    assert_eq!(again["refresh_token"], rt1);
    issuer.clock.advance(Duration::from_secs(61));
    let (status, body) = issuer.refresh(&rt0).await;
    assert_eq!((status, error(&body)), (400, "invalid_grant"), "after the window reuse is rejected");
    let (status, _) = issuer.refresh(&rt1).await;
    assert_eq!(status, 400, "and the whole family is revoked");
}

#[tokio::test]
async fn a_zero_reuse_interval_is_strict_single_use() {
    let issuer = Issuer::start_tuned(|c| c.expiry.refresh_tokens.reuse_interval = Duration::ZERO).await;
    let t = issuer.tokens("jane@example.com").await;
    let rt0 = t["refresh_token"].as_str().unwrap().to_owned();
    let (status, r1) = issuer.refresh(&rt0).await;
    assert_eq!(status, 200);
    let rt1 = r1["refresh_token"].as_str().unwrap().to_owned();
    let (status, body) = issuer.refresh(&rt0).await;
    assert_eq!((status, error(&body)), (400, "invalid_grant"), "a second use, even at once, is refused");
    let (status, _) = issuer.refresh(&rt1).await;
    assert_eq!(status, 400, "and the family is revoked (RFC 9700 §4.14.2)");
}

#[tokio::test]
async fn disable_rotation_keeps_one_refresh_token_for_the_family() {
    let issuer = Issuer::start_tuned(|c| c.expiry.refresh_tokens.disable_rotation = true).await;
    let t = issuer.tokens("jane@example.com").await;
    let rt = t["refresh_token"].as_str().unwrap().to_owned();
    for round in 0..3 {
        issuer.clock.advance(Duration::from_secs(3600));
        let (status, body) = issuer.refresh(&rt).await;
        assert_eq!(status, 200, "round {round}: {body}");
        assert_eq!(body["refresh_token"], rt.as_str(), "the same refresh token comes back");
        assert!(claims(body["id_token"].as_str().unwrap())["iat"].as_i64().unwrap() > 0);
    }
    let (status, _) = http()
        .post(issuer.endpoint("/revoke"))
        .basic_auth(CLIENT, Some(SECRET))
        .form(&[("token", rt.as_str())])
        .send()
        .await
        .map(|r| (r.status().as_u16(), ()))
        .unwrap();
    assert_eq!(status, 200);
    let (status, body) = issuer.refresh(&rt).await;
    assert_eq!((status, error(&body)), (400, "invalid_grant"), "revocation still ends it");
}

#[tokio::test]
async fn refresh_tokens_expire_when_unused_and_after_the_absolute_lifetime() {
    let issuer = Issuer::start_tuned(|c| {
        c.expiry.refresh_tokens.valid_if_not_used_for = Duration::from_secs(3600);
        c.expiry.refresh_tokens.absolute_lifetime = Duration::from_secs(3 * 3600);
    })
    .await;
    let t = issuer.tokens("jane@example.com").await;
    issuer.clock.advance(Duration::from_secs(3601));
    assert_eq!(
        issuer.refresh(t["refresh_token"].as_str().unwrap()).await.0,
        400,
        "unused for longer than validIfNotUsedFor"
    );

    let t = issuer.tokens("jane@example.com").await;
    let mut rt = t["refresh_token"].as_str().unwrap().to_owned();
    for _ in 0..3 {
        issuer.clock.advance(Duration::from_secs(3000));
        let (status, body) = issuer.refresh(&rt).await;
        assert_eq!(status, 200, "used often enough: {body}");
        rt = body["refresh_token"].as_str().unwrap().to_owned();
    }
    issuer.clock.advance(Duration::from_secs(2000));
    let (status, body) = issuer.refresh(&rt).await;
    assert_eq!(
        (status, error(&body)),
        (400, "invalid_grant"),
        "absoluteLifetime ends the session however often it is used"
    );
}

#[tokio::test]
async fn several_logins_of_one_user_keep_separate_refresh_tokens() {
    let issuer = Issuer::start().await;
    let a = issuer.tokens("jane@example.com").await;
    let b = issuer.tokens("jane@example.com").await;
    assert_eq!(issuer.refresh(a["refresh_token"].as_str().unwrap()).await.0, 200);
    assert_eq!(
        issuer.refresh(b["refresh_token"].as_str().unwrap()).await.0,
        200,
        "a second login does not invalidate the first"
    );
}

#[tokio::test]
async fn revocation_ends_the_session_and_unknown_tokens_are_fine() {
    let issuer = Issuer::start().await;
    let t = issuer.tokens("jane@example.com").await;
    let rt = t["refresh_token"].as_str().unwrap();
    let r = http()
        .post(issuer.endpoint("/revoke"))
        .basic_auth(CLIENT, Some(SECRET))
        .form(&[("token", rt)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let (status, body) = issuer.refresh(rt).await;
    assert_eq!((status, error(&body)), (400, "invalid_grant"));
    let r = http()
        .post(issuer.endpoint("/revoke"))
        .basic_auth(CLIENT, Some(SECRET))
        .form(&[("token", "unknown.token")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "RFC 7009 §2.2: unknown tokens are not an error");
    let r = http()
        .post(issuer.endpoint("/revoke"))
        .basic_auth(CLIENT, Some("bad"))
        .form(&[("token", rt)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = http()
        .post(issuer.endpoint("/revoke"))
        .basic_auth(CLIENT, Some(SECRET))
        .form(&[("nothing", "x")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
}

#[tokio::test]
async fn tokens_and_keys_survive_a_restart() {
    let issuer = Issuer::start().await;
    let t = issuer.tokens("jane@example.com").await;
    let keys_before: Value = http().get(issuer.endpoint("/keys")).send().await.unwrap().json().await.unwrap();
    let issuer = issuer.restart().await;
    let keys_after: Value = http().get(issuer.endpoint("/keys")).send().await.unwrap().json().await.unwrap();
    assert_eq!(keys_before, keys_after, "the same keys after a restart");
    let (status, body) = issuer.refresh(t["refresh_token"].as_str().unwrap()).await;
    assert_eq!(status, 200, "a refresh token from before the restart works: {body}");
}

#[tokio::test]
async fn keys_rotate_on_schedule_and_old_keys_stay_published_until_their_tokens_expire() {
    let issuer = Issuer::start().await;
    let kid_of = |t: &Value| header(t["id_token"].as_str().unwrap())["kid"].as_str().unwrap().to_owned();
    let jwks_kids = || async {
        let jwks: Value = http().get(issuer.endpoint("/keys")).send().await.unwrap().json().await.unwrap();
        jwks["keys"].as_array().unwrap().iter().map(|k| k["kid"].as_str().unwrap().to_owned()).collect::<Vec<_>>()
    };
    let t0 = issuer.tokens("jane@example.com").await;
    let before = jwks_kids().await;
    let next = before.iter().find(|k| **k != kid_of(&t0)).unwrap().clone();

    issuer.clock.advance(Duration::from_secs(6 * 3600));
    let (_, t1) = issuer.refresh(t0["refresh_token"].as_str().unwrap()).await;
    assert_eq!(kid_of(&t1), next, "the key published as next signs after rotation");
    let after = jwks_kids().await;
    assert!(after.contains(&kid_of(&t0)), "the retired key is still published while its tokens live");
    assert_eq!(after.len(), 3, "signing, next and retired");

    issuer.clock.advance(Duration::from_secs(11 * 60));
    assert!(!jwks_kids().await.contains(&kid_of(&t0)), "dropped once every token it signed has expired");
}

#[tokio::test]
async fn cross_client_scope_gives_the_peer_and_the_requester_as_audience_on_issue_and_refresh() {
    let issuer = Issuer::start().await;
    let scope = "openid email groups offline_access audience:server:client_id:kubernetes";
    let code = issuer.login(scope, "admin@example.com", "password").await;
    let (status, t) = issuer.exchange(&code).await;
    assert_eq!(status, 200);
    let id = claims(t["id_token"].as_str().unwrap());
    // OIDC Core §3.1.3.7 step 3: the requester must find itself in `aud` (Dex adds it the same way).
    assert_eq!(id["aud"], serde_json::json!(["kubernetes", CLIENT]));
    assert_eq!(id["azp"], CLIENT);
    let (status, t) = issuer.refresh(t["refresh_token"].as_str().unwrap()).await;
    assert_eq!(status, 200);
    let id = claims(t["id_token"].as_str().unwrap());
    assert_eq!(id["aud"], serde_json::json!(["kubernetes", CLIENT]), "kept through a refresh");
    assert_eq!(id["azp"], CLIENT);
}

#[tokio::test]
async fn refresh_rereads_groups_and_can_narrow_scopes() {
    let issuer = Issuer::start().await;
    let t = issuer.tokens("jane@example.com").await;
    let rt = t["refresh_token"].as_str().unwrap();
    let (status, body) =
        issuer.token(&[("grant_type", "refresh_token"), ("refresh_token", rt), ("scope", "openid email")]).await;
    assert_eq!(status, 200);
    let id = claims(body["id_token"].as_str().unwrap());
    assert!(id.get("groups").is_none(), "narrowed to openid email");
    let next = body["refresh_token"].as_str().unwrap();
    let (status, body) =
        issuer.token(&[("grant_type", "refresh_token"), ("refresh_token", next), ("scope", "openid groups")]).await;
    assert_eq!(status, 200, "the refresh token keeps its original scopes: {body}");
    let (status, body) = issuer
        .token(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", body["refresh_token"].as_str().unwrap()),
            ("scope", "openid admin"),
        ])
        .await;
    assert_eq!((status, error(&body)), (400, "invalid_scope"));
}

#[tokio::test]
async fn userinfo_needs_a_valid_access_token() {
    let issuer = Issuer::start().await;
    let t = issuer.tokens("jane@example.com").await;
    let ok =
        http().get(issuer.endpoint("/userinfo")).bearer_auth(t["access_token"].as_str().unwrap()).send().await.unwrap();
    assert_eq!(ok.status(), 200);
    let info: Value = ok.json().await.unwrap();
    assert_eq!(info["email"], "jane@example.com");
    assert_eq!(info["groups"], serde_json::json!(["developers"]));
    let id_token =
        http().get(issuer.endpoint("/userinfo")).bearer_auth(t["id_token"].as_str().unwrap()).send().await.unwrap();
    assert_eq!(id_token.status(), 401, "an ID token is not an access token");
    let none = http().get(issuer.endpoint("/userinfo")).send().await.unwrap();
    assert_eq!(none.status(), 401);
    assert!(none.headers()["www-authenticate"].to_str().unwrap().contains("invalid_token"));
    issuer.clock.advance(Duration::from_secs(601));
    let expired =
        http().get(issuer.endpoint("/userinfo")).bearer_auth(t["access_token"].as_str().unwrap()).send().await.unwrap();
    assert_eq!(expired.status(), 401);
}

#[tokio::test]
async fn logout_with_id_token_hint_revokes_the_session_and_redirects_only_to_registered_uris() {
    let issuer = Issuer::start().await;
    let t = issuer.tokens("jane@example.com").await;
    let hint = t["id_token"].as_str().unwrap();
    let evil = http()
        .get(issuer.endpoint("/logout"))
        .query(&[("id_token_hint", hint), ("post_logout_redirect_uri", "https://evil.example/")])
        .send()
        .await
        .unwrap();
    assert_eq!(evil.status(), 400, "unregistered post-logout URI");
    assert_eq!(issuer.refresh(t["refresh_token"].as_str().unwrap()).await.0, 200, "a refused logout revokes nothing");

    let t = issuer.tokens("jane@example.com").await;
    let hint = t["id_token"].as_str().unwrap();
    let r = http()
        .get(issuer.endpoint("/logout"))
        .query(&[("id_token_hint", hint), ("post_logout_redirect_uri", "http://127.0.0.1:5555/"), ("state", "bye")])
        .send()
        .await
        .unwrap();
    assert!(r.status().is_redirection());
    assert_eq!(r.headers()["location"], "http://127.0.0.1:5555/?state=bye");
    assert_eq!(
        issuer.refresh(t["refresh_token"].as_str().unwrap()).await.0,
        400,
        "the session's refresh token is revoked"
    );

    let forged = http().get(issuer.endpoint("/logout")).query(&[("id_token_hint", "a.b.c")]).send().await.unwrap();
    assert_eq!(forged.status(), 400);
    let plain = http().get(issuer.endpoint("/logout")).send().await.unwrap();
    assert_eq!(plain.status(), 200, "without a hint: a signed-out page");
}

#[tokio::test]
async fn metrics_count_logins_tokens_and_refreshes() {
    let issuer = Issuer::start().await;
    let t = issuer.tokens("jane@example.com").await;
    issuer.refresh(t["refresh_token"].as_str().unwrap()).await;
    let text = http().get(issuer.endpoint("/metrics")).send().await.unwrap().text().await.unwrap();
    for line in [
        r#"issuer_logins_total{result="success"} 1"#,
        r#"issuer_tokens_issued_total{result="authorization_code"} 1"#,
        r#"issuer_refreshes_total{result="rotated"} 1"#,
    ] {
        assert!(text.contains(line), "{line} in\n{text}");
    }
}

#[tokio::test]
async fn garbage_collection_removes_expired_codes_and_requests() {
    let issuer = Issuer::start().await;
    let _unused = issuer.login("openid", "jane@example.com", "password").await;
    issuer.clock.advance(Duration::from_secs(25 * 3600));
    let removed = issuer::gc::collect(&issuer.state).await.unwrap();
    assert!(removed >= 2, "the code and the login bucket records went: {removed}");
}
