//! A standard relying-party library (the `openidconnect` crate) completes the whole journey against a real
//! issuer: discovery, login through the form, code + PKCE exchange with ID-token verification (signature,
//! iss, aud, nonce, at_hash), userinfo, and refresh.

mod common;

use common::{Browser, Issuer, CLIENT, REDIRECT, SECRET};
use issuer::keys::Algorithm;
use openidconnect::core::{CoreAuthenticationFlow, CoreClient, CoreProviderMetadata, CoreUserInfoClaims};
use openidconnect::{
    AccessTokenHash, AuthorizationCode, ClientId, ClientSecret, CsrfToken, IssuerUrl, Nonce, OAuth2TokenResponse,
    PkceCodeChallenge, RedirectUrl, Scope, TokenResponse,
};

async fn journey(issuer: &Issuer) {
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
    )
    .set_redirect_uri(RedirectUrl::new(REDIRECT.into()).unwrap());

    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let (auth_url, csrf, nonce) = client
        .authorize_url(CoreAuthenticationFlow::AuthorizationCode, CsrfToken::new_random, Nonce::new_random)
        .add_scope(Scope::new("email".into()))
        .add_scope(Scope::new("profile".into()))
        .add_scope(Scope::new("groups".into()))
        .add_scope(Scope::new("offline_access".into()))
        .set_pkce_challenge(challenge)
        .url();

    let browser = Browser::new();
    let (status, location) = browser.sign_in(auth_url.as_str(), "admin@example.com", "password").await;
    assert_eq!(status, 303);
    let location = location.unwrap();
    assert_eq!(common::query_param(&location, "state").as_deref(), Some(csrf.secret().as_str()), "state comes back");
    let code = common::query_param(&location, "code").expect("a code in the redirect");

    let tokens = client
        .exchange_code(AuthorizationCode::new(code))
        .unwrap()
        .set_pkce_verifier(verifier)
        .request_async(&http)
        .await
        .expect("code exchange");
    let id_token = tokens.id_token().expect("an ID token");
    let verifier = client.id_token_verifier();
    let claims = id_token.claims(&verifier, &nonce).expect("ID token verifies: signature, iss, aud, exp, nonce");
    assert_eq!(claims.email().map(|e| e.as_str()), Some("admin@example.com"));
    assert_eq!(claims.email_verified(), Some(true));
    // Dex's subject for the example user (userID 08a8684b-…, connector `local`): the value Dex's own
    // getting-started walk-through shows for admin@example.com.
    assert_eq!(claims.subject().as_str(), "CiQwOGE4Njg0Yi1kYjg4LTRiNzMtOTBhOS0zY2QxNjYxZjU0NjYSBWxvY2Fs");
    let expected_hash = claims.access_token_hash().expect("at_hash");
    let actual = AccessTokenHash::from_token(
        tokens.access_token(),
        id_token.signing_alg().unwrap(),
        id_token.signing_key(&verifier).unwrap(),
    )
    .unwrap();
    assert_eq!(&actual, expected_hash, "at_hash matches the access token");
    let raw = common::claims(&id_token.to_string());
    assert_eq!(raw["groups"], serde_json::json!(["admins", "developers"]));
    assert_eq!(raw["azp"], CLIENT);

    let info: CoreUserInfoClaims =
        client.user_info(tokens.access_token().clone(), None).unwrap().request_async(&http).await.expect("userinfo");
    assert_eq!(info.email().map(|e| e.as_str()), Some("admin@example.com"));

    let refresh = tokens.refresh_token().expect("a refresh token with offline_access");
    let refreshed = client.exchange_refresh_token(refresh).unwrap().request_async(&http).await.expect("refresh");
    let new_id = refreshed.id_token().expect("a new ID token");
    // OIDC Core §12.2: no nonce is required in a refreshed ID token, so verify it without one.
    new_id.claims(&verifier, |_: Option<&Nonce>| Ok(())).expect("refreshed ID token verifies");
    assert_ne!(refreshed.refresh_token().unwrap().secret(), refresh.secret(), "refresh tokens rotate");
}

#[tokio::test]
async fn rp_library_completes_discovery_login_pkce_userinfo_and_refresh_with_rs256() {
    journey(&Issuer::start().await).await;
}

#[tokio::test]
async fn rp_library_journey_works_with_es256() {
    journey(&Issuer::start_tuned(|c| c.signing.algorithm = Algorithm::Es256).await).await;
}

#[tokio::test]
async fn rp_library_journey_works_with_eddsa() {
    journey(&Issuer::start_tuned(|c| c.signing.algorithm = Algorithm::EdDsa).await).await;
}
