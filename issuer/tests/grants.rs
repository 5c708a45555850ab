//! The grants Dex serves besides the code flow, each switched on by `oauth2.grantTypes` /
//! `oauth2.responseTypes` and refused with `unsupported_grant_type` / `unsupported_response_type`
//! otherwise: resource owner password (with the `openidconnect` crate), client credentials (with the
//! `openidconnect` crate), token exchange (plain HTTP, with this issuer's tokens and with an upstream OIDC
//! provider's), and the implicit and hybrid flows (hashes checked independently).

mod common;

use common::{claims, header, http, query_param, urlencode, Browser, Issuer, CLIENT, REDIRECT, SECRET};
use openidconnect::core::{CoreClient, CoreProviderMetadata};
use openidconnect::{
    ClientId, ClientSecret, IssuerUrl, OAuth2TokenResponse, ResourceOwnerPassword, ResourceOwnerUsername, Scope,
};
use serde_json::Value;

const ALL_GRANTS: &str = r#"oauth2:
  grantTypes:
    - authorization_code
    - refresh_token
    - password
    - client_credentials
    - urn:ietf:params:oauth:grant-type:token-exchange
    - implicit
  responseTypes: [code, id_token, token]
  passwordConnector: local
"#;

async fn discovery(issuer: &Issuer) -> Value {
    http().get(issuer.endpoint("/.well-known/openid-configuration")).send().await.unwrap().json().await.unwrap()
}

async fn rp(
    issuer: &Issuer,
) -> (
    CoreClient<
        openidconnect::EndpointSet,
        openidconnect::EndpointNotSet,
        openidconnect::EndpointNotSet,
        openidconnect::EndpointNotSet,
        openidconnect::EndpointMaybeSet,
        openidconnect::EndpointMaybeSet,
    >,
    openidconnect::reqwest::Client,
) {
    let http = openidconnect::reqwest::ClientBuilder::new()
        .redirect(openidconnect::reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let metadata =
        CoreProviderMetadata::discover_async(IssuerUrl::new(issuer.url.clone()).unwrap(), &http).await.unwrap();
    let client = CoreClient::from_provider_metadata(
        metadata,
        ClientId::new(CLIENT.into()),
        Some(ClientSecret::new(SECRET.into())),
    );
    (client, http)
}

#[tokio::test]
async fn grants_are_refused_and_not_advertised_unless_enabled() {
    let issuer = Issuer::start().await;
    let doc = discovery(&issuer).await;
    let grants: Vec<&str> =
        doc["grant_types_supported"].as_array().unwrap().iter().map(|g| g.as_str().unwrap()).collect();
    assert_eq!(grants, ["authorization_code", "refresh_token", "urn:ietf:params:oauth:grant-type:device_code"]);
    assert_eq!(doc["response_types_supported"], serde_json::json!(["code"]));
    for grant in ["password", "client_credentials", "urn:ietf:params:oauth:grant-type:token-exchange", "implicit"] {
        let (status, body) =
            issuer.token(&[("grant_type", grant), ("username", "admin@example.com"), ("password", "password")]).await;
        assert_eq!((status, body["error"].as_str()), (400, Some("unsupported_grant_type")), "{grant}: {body}");
    }
    let url = issuer.auth_url("openid", "s").replace("response_type=code", "response_type=id_token");
    let r = http().get(url).send().await.unwrap();
    let location = r.headers()["location"].to_str().unwrap();
    assert_eq!(query_param(location, "error").as_deref(), Some("unsupported_response_type"), "{location}");

    let enabled = Issuer::start_with(ALL_GRANTS, |_| {}).await;
    let doc = discovery(&enabled).await;
    for g in ["password", "client_credentials", "urn:ietf:params:oauth:grant-type:token-exchange", "implicit"] {
        assert!(doc["grant_types_supported"].as_array().unwrap().iter().any(|v| v == g), "{g}: {doc}");
    }
    assert!(doc["response_types_supported"].as_array().unwrap().iter().any(|v| v == "code id_token token"), "{doc}");
    assert!(doc["response_modes_supported"].as_array().unwrap().iter().any(|v| v == "fragment"));
    assert!(doc.get("device_authorization_endpoint").is_none(), "device code not listed there: {doc}");
}

#[tokio::test]
async fn password_grant_signs_in_through_the_password_connector_with_a_standard_client() {
    let issuer = Issuer::start_with(ALL_GRANTS, |c| {
        c.brute_force.max_attempts = 2;
        c.brute_force.refill_interval = std::time::Duration::from_secs(3600);
    })
    .await;
    let (client, http_client) = rp(&issuer).await;
    let tokens = client
        .exchange_password(
            &ResourceOwnerUsername::new("admin@example.com".into()),
            &ResourceOwnerPassword::new("password".into()),
        )
        .unwrap()
        .add_scope(Scope::new("openid".into()))
        .add_scope(Scope::new("email".into()))
        .add_scope(Scope::new("offline_access".into()))
        .request_async(&http_client)
        .await
        .expect("password grant");
    let id_token = tokens.extra_fields().id_token().expect("an ID token").to_string();
    let c = claims(&id_token);
    assert_eq!(c["email"], "admin@example.com");
    assert_eq!(c["sub"], issuer::connector::dex_subject("08a8684b-db88-4b73-90a9-3cd1661f5466", "local").as_str());
    let refresh = tokens.refresh_token().expect("offline_access gives a refresh token").secret().clone();
    let (status, body) = issuer.refresh(&refresh).await;
    assert_eq!(status, 200, "{body}");

    // A wrong password is invalid_grant and spends an attempt: after maxAttempts, 429 with Retry-After.
    let wrong =
        [("grant_type", "password"), ("username", "admin@example.com"), ("password", "nope"), ("scope", "openid")];
    for _ in 0..2 {
        let (status, body) = issuer.token(&wrong).await;
        assert_eq!((status, body["error"].as_str()), (400, Some("invalid_grant")), "{body}");
    }
    let r = http().post(issuer.endpoint("/token")).basic_auth(CLIENT, Some(SECRET)).form(&wrong).send().await.unwrap();
    assert_eq!(r.status(), 429);
    assert!(r.headers().get("retry-after").is_some());
    // The same limit guards the login form: the name is locked out there too.
    let browser = Browser::new();
    let (url, req, csrf) = browser.open_login(&issuer.auth_url("openid", "s")).await;
    let (status, _, _) = browser.submit(&url, &req, &csrf, "admin@example.com", "password").await;
    assert_eq!(status, 429, "one bucket for the form and the grant");
}

#[tokio::test]
async fn client_credentials_mint_tokens_whose_subject_is_the_client() {
    let issuer = Issuer::start_with(ALL_GRANTS, |_| {}).await;
    let (client, http_client) = rp(&issuer).await;
    let tokens = client
        .exchange_client_credentials()
        .unwrap()
        .add_scope(Scope::new("openid".into()))
        .request_async(&http_client)
        .await
        .expect("client credentials grant");
    assert!(tokens.refresh_token().is_none(), "RFC 6749 §4.4.3");
    let at = tokens.access_token().secret();
    assert_eq!(header(at)["typ"], "at+jwt");
    assert_eq!(claims(at)["sub"], CLIENT);
    assert_eq!(claims(at)["client_id"], CLIENT);
    let id_token = tokens.extra_fields().id_token().expect("openid asked for an ID token").to_string();
    assert_eq!(claims(&id_token)["sub"], CLIENT);

    let (status, body) = issuer.token(&[("grant_type", "client_credentials"), ("scope", "openid email")]).await;
    assert_eq!((status, body["error"].as_str()), (400, Some("invalid_scope")), "no user, no email: {body}");
    let (status, body) = issuer.token(&[("grant_type", "client_credentials")]).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.get("id_token").is_none(), "no openid, no ID token: {body}");
}

async fn token_as(issuer: &Issuer, id: &str, secret: &str, form: &[(&str, &str)]) -> (u16, Value) {
    let r = http().post(issuer.endpoint("/token")).basic_auth(id, Some(secret)).form(form).send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn token_exchange_trades_this_issuers_tokens_for_a_trusting_audience() {
    // The dev config's `kubernetes` client trusts example-app (trustedPeers).
    let issuer = Issuer::start_with(ALL_GRANTS, |_| {}).await;
    let tokens = issuer.tokens("jane@example.com").await;
    let id_token = tokens["id_token"].as_str().unwrap();
    let sub = claims(id_token)["sub"].clone();
    let form = |token: &'static str, kind: &'static str| {
        vec![
            ("grant_type", "urn:ietf:params:oauth:grant-type:token-exchange"),
            ("subject_token", token),
            ("subject_token_type", kind),
            ("audience", "kubernetes"),
            ("scope", "openid email groups"),
        ]
    };
    let id_token: &'static str = Box::leak(id_token.to_owned().into_boxed_str());
    let (status, body) = issuer.token(&form(id_token, "urn:ietf:params:oauth:token-type:id_token")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["issued_token_type"], "urn:ietf:params:oauth:token-type:access_token");
    assert!(body.get("refresh_token").is_none());
    let at = claims(body["access_token"].as_str().unwrap());
    assert_eq!(at["sub"], sub, "the user stays the user");
    assert!(at["aud"].as_array().unwrap().iter().any(|a| a == "kubernetes"), "{at}");
    assert_eq!(at["client_id"], CLIENT);

    // An ID token for the audience, in access_token (RFC 8693 §2.2.1), N_A.
    let mut f = form(id_token, "urn:ietf:params:oauth:token-type:id_token");
    f.push(("requested_token_type", "urn:ietf:params:oauth:token-type:id_token"));
    let (status, body) = issuer.token(&f).await;
    assert_eq!((status, body["token_type"].as_str()), (200, Some("N_A")), "{body}");
    let it = claims(body["access_token"].as_str().unwrap());
    assert_eq!((it["azp"].as_str(), it["email"].as_str()), (Some(CLIENT), Some("jane@example.com")));

    // The access token is an access token, not an ID token; a tampered token verifies nothing.
    let access: &'static str = Box::leak(tokens["access_token"].as_str().unwrap().to_owned().into_boxed_str());
    let (status, body) = issuer.token(&form(access, "urn:ietf:params:oauth:token-type:id_token")).await;
    assert_eq!((status, body["error"].as_str()), (400, Some("invalid_grant")), "declared type must match: {body}");
    let (status, _) = issuer.token(&form(access, "urn:ietf:params:oauth:token-type:access_token")).await;
    assert_eq!(status, 200);
    let tampered: &'static str = Box::leak(format!("{}x", &id_token[..id_token.len() - 1]).into_boxed_str());
    let (status, body) = issuer.token(&form(tampered, "urn:ietf:params:oauth:token-type:id_token")).await;
    assert_eq!((status, body["error"].as_str()), (400, Some("invalid_grant")), "{body}");
    // Another client's token is not the requester's to exchange.
    let (status, body) = token_as(
        &issuer,
        "kubernetes",
        "kubernetes-secret",
        &[
            ("grant_type", "urn:ietf:params:oauth:grant-type:token-exchange"),
            ("subject_token", id_token),
            ("subject_token_type", "urn:ietf:params:oauth:token-type:id_token"),
        ],
    )
    .await;
    assert_eq!((status, body["error"].as_str()), (400, Some("invalid_grant")), "{body}");
    // An audience that does not trust the requester (the gateway lists no trusted peers).
    let mut f = form(id_token, "urn:ietf:params:oauth:token-type:id_token");
    f[3] = ("audience", "gateway");
    let (status, body) = issuer.token(&f).await;
    assert_eq!((status, body["error"].as_str()), (400, Some("invalid_scope")), "{body}");
}

#[tokio::test]
async fn token_exchange_takes_an_upstream_providers_id_token_through_its_connector() {
    // Upstream: a second issuer where the downstream is a client, with the password grant to get a token.
    let upstream = Issuer::start_with(ALL_GRANTS, |c| {
        c.static_clients.push(issuer::config::Client {
            id: "downstream".into(),
            secret: Some("downstream-secret".into()),
            public: false,
            name: "Downstream".into(),
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
    let (status, up) = token_as(
        &upstream,
        "downstream",
        "downstream-secret",
        &[
            ("grant_type", "password"),
            ("username", "jane@example.com"),
            ("password", "password"),
            ("scope", "openid email groups"),
        ],
    )
    .await;
    assert_eq!(status, 200, "{up}");
    let upstream_id_token = up["id_token"].as_str().unwrap();
    let downstream = Issuer::start_with(
        &format!(
            "{ALL_GRANTS}connectors:\n  - type: oidc\n    id: upstream\n    name: Upstream\n    config:\n      issuer: {}\n      clientID: downstream\n      clientSecret: downstream-secret\n      redirectURI: \"{{issuer}}/callback\"\n      insecureEnableGroups: true\n",
            upstream.url
        ),
        |_| {},
    )
    .await;
    let form = [
        ("grant_type", "urn:ietf:params:oauth:grant-type:token-exchange"),
        ("subject_token", upstream_id_token),
        ("subject_token_type", "urn:ietf:params:oauth:token-type:id_token"),
        ("connector_id", "upstream"),
        ("scope", "openid email groups"),
    ];
    let (status, body) = downstream.token(&form).await;
    assert_eq!(status, 200, "{body}");
    let at = claims(body["access_token"].as_str().unwrap());
    let upstream_sub = claims(upstream_id_token)["sub"].as_str().unwrap().to_owned();
    assert_eq!(at["sub"], issuer::connector::dex_subject(&upstream_sub, "upstream").as_str(), "as a login through it");
    assert_eq!(at["email"], "jane@example.com");
    // Without connector_id the upstream's token is not this issuer's.
    let (status, body) = downstream.token(&[form[0], form[1], form[2], form[4]]).await;
    assert_eq!((status, body["error"].as_str()), (400, Some("invalid_grant")), "{body}");
}

#[tokio::test]
async fn implicit_and_hybrid_flows_answer_in_the_fragment_with_hashes_that_check() {
    let issuer = Issuer::start_with(ALL_GRANTS, |_| {}).await;
    let auth = |response_type: &str, nonce: &str| {
        format!(
            "{}/auth?client_id={CLIENT}&redirect_uri={}&response_type={}&scope=openid%20email&state=st{}",
            issuer.url,
            urlencode(REDIRECT),
            urlencode(response_type),
            if nonce.is_empty() { String::new() } else { format!("&nonce={nonce}") }
        )
    };
    // A nonce is required with id_token, and the error comes back in the fragment.
    let r = http().get(auth("id_token token", "")).send().await.unwrap();
    let location = r.headers()["location"].to_str().unwrap().to_owned();
    assert!(location.contains("#error=invalid_request"), "{location}");

    let fragment = |location: &str| -> std::collections::HashMap<String, String> {
        let f = location.split_once('#').expect("a fragment").1;
        url::form_urlencoded::parse(f.as_bytes()).into_owned().collect()
    };
    let browser = Browser::new();
    let (status, location) = browser.sign_in(&auth("id_token token", "n-1"), "admin@example.com", "password").await;
    assert_eq!(status, 303);
    let location = location.unwrap();
    assert!(!location.contains('?'), "nothing in the query: {location}");
    let f = fragment(&location);
    assert_eq!((f["state"].as_str(), f["token_type"].as_str()), ("st", "Bearer"));
    let c = claims(&f["id_token"]);
    assert_eq!(c["nonce"], "n-1");
    assert_eq!(c["at_hash"], left_half_sha256(&f["access_token"]), "at_hash covers the access token");

    let browser = Browser::new();
    let (_, location) = browser.sign_in(&auth("code id_token", "n-2"), "admin@example.com", "password").await;
    let f = fragment(&location.unwrap());
    let c = claims(&f["id_token"]);
    assert_eq!(c["c_hash"], left_half_sha256(&f["code"]), "c_hash covers the code");
    assert!(c.get("at_hash").is_none(), "no access token in this response");
    assert!(!f.contains_key("access_token"));
    // The hybrid flow's code redeems at the token endpoint (no PKCE was used: a confidential client).
    let (status, body) =
        issuer.token(&[("grant_type", "authorization_code"), ("code", &f["code"]), ("redirect_uri", REDIRECT)]).await;
    assert_eq!(status, 200, "{body}");
}

/// OIDC Core §3.1.3.6 for RS256: base64url of the left half of SHA-256.
fn left_half_sha256(s: &str) -> String {
    use base64::Engine as _;
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, s.as_bytes());
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&digest.as_ref()[..16])
}

#[tokio::test]
async fn pkce_can_be_enforced_for_every_client_and_plain_switched_off() {
    let issuer =
        Issuer::start_with("oauth2:\n  pkce:\n    enforce: true\n    codeChallengeMethodsSupported: [S256]\n", |c| {
            c.static_clients.iter_mut().for_each(|c| c.allow_plain_pkce = true)
        })
        .await;
    assert_eq!(discovery(&issuer).await["code_challenge_methods_supported"], serde_json::json!(["S256"]));
    let error = |url: String| async move {
        let r = http().get(url).send().await.unwrap();
        let location = r.headers()["location"].to_str().unwrap().to_owned();
        (query_param(&location, "error"), query_param(&location, "error_description"))
    };
    let base = issuer.auth_url("openid", "s");
    let without = base.split("&code_challenge=").next().unwrap().to_owned();
    let (code, why) = error(without).await;
    assert_eq!(code.as_deref(), Some("invalid_request"));
    assert!(why.unwrap().contains("PKCE is required"), "a confidential client too");
    let (code, _) = error(base.replace("code_challenge_method=S256", "code_challenge_method=plain")).await;
    assert_eq!(code.as_deref(), Some("invalid_request"), "plain is off even for allowPlainPKCE clients");
    let r = http().get(base).send().await.unwrap();
    assert!(r.headers()["location"].to_str().unwrap().contains("/login?req="), "S256 goes on to the login");
}
