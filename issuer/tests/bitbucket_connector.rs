//! The `bitbucket-cloud` connector over real HTTP against a Bitbucket Cloud stand-in
//! (`common::bitbucket`): the login button, the round trip through the stand-in's authorize endpoint back
//! to `/callback`, the code exchange and the ID token's claims, required workspaces, and what refresh
//! re-checks (workspace changes, removal from every required workspace, revoked grants, deleted accounts,
//! an outage).

mod common;

use common::bitbucket::{BbUser, Bitbucket, CLIENT_ID, CLIENT_SECRET};
use common::{claims, query_param, Browser, Issuer, REDIRECT};
use serde_json::{json, Value};

const SCOPES: &str = "openid email profile groups offline_access";
const JANE_UUID: &str = "{0b5e6a2c-7f1d-4c3e-9a8b-1d2e3f4a5b6c}";

fn connectors(bb: &Bitbucket) -> String {
    format!(
        r#"
connectors:
  - type: bitbucket-cloud
    id: bitbucket
    name: Bitbucket
    config:
      clientID: {CLIENT_ID}
      clientSecret: {CLIENT_SECRET}
      redirectURI: "{{issuer}}/callback"
      teams: [acme, widgets, gadgets]
      getWorkspacePermissions: true
      includeTeamGroups: true
      authURL: {auth}
      apiURL: {api}
"#,
        auth = bb.url,
        api = bb.api_url()
    )
}

async fn setup() -> (Bitbucket, Issuer) {
    let bb = Bitbucket::start(vec![
        // Five workspaces over three pages (two per page); acme and widgets are required ones.
        BbUser::new(
            "jane",
            JANE_UUID,
            &[
                ("personal", "owner"),
                ("acme", "owner"),
                ("other", "member"),
                ("zeta", "member"),
                ("widgets", "collaborator"),
            ],
        ),
        BbUser::new("bob", "{bob}", &[("personal-bob", "owner"), ("other", "member")]),
    ])
    .await;
    let issuer = Issuer::start_with(&connectors(&bb), |_| {}).await;
    (bb, issuer)
}

/// Clicks the Bitbucket button on the login page and follows the redirects through the stand-in back to
/// `/callback`: the issuer's answer to the callback (status, `Location`, page).
async fn sign_in(issuer: &Issuer, bb: &Bitbucket, as_user: &str) -> (u16, Option<String>, String) {
    bb.with(|s| s.login_as = as_user.to_owned());
    let browser = Browser::new();
    let (login_url, req, _) = browser.open_login(&issuer.auth_url(SCOPES, "st")).await;
    let page = browser.client.get(&login_url).send().await.unwrap().text().await.unwrap();
    let button = format!("/auth/bitbucket?req={req}");
    assert!(page.contains(&button), "the login page has a Bitbucket button: {page}");
    let r = browser.client.get(issuer.endpoint(&button)).send().await.unwrap();
    assert_eq!(r.status(), 303, "to Bitbucket");
    let authorize = r.headers()["location"].to_str().unwrap().to_owned();
    assert!(authorize.starts_with(&format!("{}/site/oauth2/authorize?", bb.url)), "{authorize}");
    assert_eq!(query_param(&authorize, "redirect_uri"), Some(issuer.endpoint("/callback")));
    let r = browser.client.get(&authorize).send().await.unwrap();
    assert_eq!(r.status(), 302, "the stand-in consents at once");
    let callback = r.headers()["location"].to_str().unwrap().to_owned();
    assert!(callback.starts_with(&issuer.endpoint("/callback?")), "{callback}");
    let r = browser.client.get(&callback).send().await.unwrap();
    let status = r.status().as_u16();
    let location = r.headers().get("location").map(|v| v.to_str().unwrap().to_owned());
    (status, location, r.text().await.unwrap())
}

async fn tokens(issuer: &Issuer, bb: &Bitbucket, as_user: &str) -> Value {
    let (status, location, page) = sign_in(issuer, bb, as_user).await;
    assert_eq!(status, 303, "{page}");
    let location = location.unwrap();
    assert!(location.starts_with(REDIRECT), "{location}");
    assert_eq!(query_param(&location, "state").as_deref(), Some("st"));
    let (status, body) = issuer.exchange(&query_param(&location, "code").unwrap()).await;
    assert_eq!(status, 200, "{body}");
    body
}

fn refresh_token(body: &Value) -> String {
    body["refresh_token"].as_str().unwrap().to_owned()
}

fn id_claims(body: &Value) -> Value {
    claims(body["id_token"].as_str().unwrap())
}

fn invalid_grant(status: u16, err: &Value) {
    assert_eq!((status, err["error"].as_str()), (400, Some("invalid_grant")), "{err}");
}

#[tokio::test]
async fn login_gives_bitbucket_claims_and_refresh_follows_workspace_changes() {
    let (bb, issuer) = setup().await;
    let body = tokens(&issuer, &bb, "jane").await;
    let c = id_claims(&body);
    assert_eq!(c["sub"], issuer::connector::dex_subject(JANE_UUID, "bitbucket"));
    assert_eq!(c["email"], "jane@bitbucket.example", "the primary confirmed address, from the second page");
    assert_eq!(c["email_verified"], true);
    assert_eq!(c["name"], "jane");
    assert_eq!(c["preferred_username"], "jane");
    assert_eq!(
        c["groups"],
        json!(["acme", "widgets", "acme:owner", "widgets:collaborator"]),
        "the required workspaces, read across three pages, then their permissions"
    );

    // Leaves widgets, joins gadgets as a member: the refreshed token says so.
    bb.with(|s| {
        s.user("jane").unwrap().workspaces =
            vec![("acme".into(), "member".into()), ("x".into(), "owner".into()), ("gadgets".into(), "member".into())]
    });
    let grants = bb.with(|s| s.refresh_grants);
    let (status, body) = issuer.refresh(&refresh_token(&body)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(bb.with(|s| s.refresh_grants), grants + 1, "one Bitbucket refresh grant per refresh");
    assert_eq!(id_claims(&body)["groups"], json!(["acme", "gadgets", "acme:member", "gadgets:member"]));

    // Bitbucket rotated its refresh token: the second refresh works only if the new one was kept.
    let (status, body) = issuer.refresh(&refresh_token(&body)).await;
    assert_eq!(status, 200, "{body}");

    // No required workspace any more: the family ends.
    bb.with(|s| s.user("jane").unwrap().workspaces = vec![("personal".into(), "owner".into())]);
    let (status, err) = issuer.refresh(&refresh_token(&body)).await;
    invalid_grant(status, &err);
}

#[tokio::test]
async fn a_user_without_a_required_workspace_is_refused() {
    let (bb, issuer) = setup().await;
    let (status, _, page) = sign_in(&issuer, &bb, "bob").await;
    assert_eq!(status, 403, "{page}");
    assert!(page.contains("no access to any of the workspaces acme, widgets, gadgets"), "{page}");
}

#[tokio::test]
async fn an_account_without_a_confirmed_primary_address_is_refused() {
    let (bb, issuer) = setup().await;
    bb.with(|s| s.user("jane").unwrap().emails.iter_mut().for_each(|e| e.confirmed = false));
    let (status, _, page) = sign_in(&issuer, &bb, "jane").await;
    assert_eq!(status, 403, "{page}");
    assert!(page.contains("no confirmed primary email address"), "{page}");
}

#[tokio::test]
async fn revoked_grants_and_deleted_accounts_end_the_family() {
    let (bb, issuer) = setup().await;
    let first = tokens(&issuer, &bb, "jane").await;
    bb.with(|s| s.revoke("jane"));
    let (status, err) = issuer.refresh(&refresh_token(&first)).await;
    invalid_grant(status, &err);

    let second = tokens(&issuer, &bb, "jane").await;
    bb.with(|s| s.users.retain(|u| u.username != "jane"));
    let (status, err) = issuer.refresh(&refresh_token(&second)).await;
    invalid_grant(status, &err);
}

#[tokio::test]
async fn an_outage_is_503_and_the_same_refresh_token_works_afterwards() {
    let (bb, issuer) = setup().await;
    let body = tokens(&issuer, &bb, "jane").await;
    let token = refresh_token(&body);

    bb.with(|s| s.down = true);
    let (status, err) = issuer.refresh(&token).await;
    assert_eq!((status, err["error"].as_str()), (503, Some("temporarily_unavailable")), "{err}");

    bb.with(|s| s.down = false);
    let (status, body) = issuer.refresh(&token).await;
    assert_eq!(status, 200, "the same token once Bitbucket is back: {body}");
    assert_eq!(id_claims(&body)["groups"], json!(["acme", "widgets", "acme:owner", "widgets:collaborator"]));
}

#[tokio::test]
async fn a_refresh_grant_spent_before_the_api_failed_does_not_end_the_session() {
    let (bb, issuer) = setup().await;
    let body = tokens(&issuer, &bb, "jane").await;
    let token = refresh_token(&body);

    // The token endpoint rotates Bitbucket's refresh token, then the API does not answer.
    bb.with(|s| s.api_down = true);
    let grants = bb.with(|s| s.refresh_grants);
    let (status, err) = issuer.refresh(&token).await;
    assert_eq!((status, err["error"].as_str()), (503, Some("temporarily_unavailable")), "{err}");
    assert_eq!(bb.with(|s| s.refresh_grants), grants + 1, "the upstream refresh token was spent");

    bb.with(|s| s.api_down = false);
    let (status, body) = issuer.refresh(&token).await;
    assert_eq!(status, 200, "the same token works with the successor Bitbucket gave: {body}");
    let (status, body) = issuer.refresh(&refresh_token(&body)).await;
    assert_eq!(status, 200, "and the session goes on: {body}");
}

#[tokio::test]
async fn an_error_from_bitbucket_at_the_callback_is_a_400_page() {
    let (_bb, issuer) = setup().await;
    let browser = Browser::new();
    let (_, req, _) = browser.open_login(&issuer.auth_url(SCOPES, "st")).await;
    let callback = issuer.endpoint(&format!(
        "/callback?error=access_denied&error_description=The+user+denied+access&state={req}.bitbucket"
    ));
    let r = browser.client.get(callback).send().await.unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("access_denied"));
}

#[tokio::test]
async fn a_redirect_uri_other_than_the_issuer_callback_is_a_configuration_error() {
    let bb = Bitbucket::start(vec![]).await;
    let yaml = connectors(&bb).replace("\"{issuer}/callback\"", "https://elsewhere.example/callback");
    let dir = tempfile::tempdir().unwrap();
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/dev.yaml");
    let text = std::fs::read_to_string(path)
        .unwrap()
        .replace("file: ./data/issuer.db", &format!("file: {}", dir.path().join("db").display()));
    let text = format!("{text}\n{}", yaml.replace("{issuer}", "http://127.0.0.1:5556"));
    let err = issuer::config::Config::parse(path, &text, &|_| None).unwrap_err().to_string();
    assert!(err.contains("connectors[0].config.redirectURI: expected this issuer's callback"), "{err}");
    assert!(!err.contains(CLIENT_SECRET));
}

#[test]
fn unknown_keys_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/dev.yaml");
    let text = std::fs::read_to_string(path).unwrap();
    let text = text.replace("file: ./data/issuer.db", &format!("file: {}", dir.path().join("db").display()));
    let yaml = format!(
        "{text}\nconnectors:\n  - type: bitbucket-cloud\n    id: bitbucket\n    name: Bitbucket\n    config:\n      clientID: id\n      clientSecret: bb-s3cret\n      team: [acme]\n"
    );
    let err = issuer::config::Config::parse(path, &yaml, &|_| None).unwrap_err().to_string();
    assert!(err.contains("connectors[0].config.team"), "{err}");
    assert!(!err.contains("bb-s3cret"), "{err}");
}
