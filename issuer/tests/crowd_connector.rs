//! The `atlassian-crowd` connector over real HTTP against a Crowd stand-in (`common::crowd`): the login
//! form, the code exchange and the ID token's claims, wrong passwords, required groups, and what refresh
//! re-checks (membership changes, removal from every required group, deactivation, deletion, an outage).

mod common;

use common::crowd::{Crowd, CrowdUser, APP, APP_PASSWORD};
use common::{claims, query_param, Browser, Issuer, REDIRECT};
use serde_json::{json, Value};

const SCOPES: &str = "openid email profile groups offline_access";
/// A name with every character that must be URL-encoded in a query: `&`, `+`, `/`, a space, non-ASCII.
const ODD_NAME: &str = "zoë & co+1/ops";

fn connectors(crowd: &Crowd) -> String {
    format!(
        r#"
connectors:
  - type: atlassian-crowd
    id: crowd
    name: Crowd
    config:
      baseURL: {url}
      clientID: {APP}
      clientSecret: {APP_PASSWORD}
      groups: [devs, ops, admins]
      usernamePrompt: Crowd login
      preferredUsernameField: email
      groupsPageSize: 2
  - type: atlassian-crowd
    id: crowd-open
    name: Crowd (all groups)
    config:
      baseURL: {url}/
      clientID: {APP}
      clientSecret: {APP_PASSWORD}
      groupsPageSize: 2
"#,
        url = crowd.base_url
    )
}

async fn setup() -> (Crowd, Issuer) {
    let crowd = Crowd::start(vec![
        // devs is on the second page and ops on the third (two groups per page).
        CrowdUser::new("jane", "key-jane", "jane-pw", &["all", "staff", "devs", "x", "ops"]),
        CrowdUser::new("bob", "key-bob", "bob-pw", &["all", "staff"]),
        CrowdUser::new(ODD_NAME, "key-odd", "odd pw &+/", &["all", "devs"]),
    ])
    .await;
    let issuer = Issuer::start_with(&connectors(&crowd), |_| {}).await;
    (crowd, issuer)
}

/// Opens the login page and posts `connector`'s form: status, `Location`, page.
async fn sign_in(issuer: &Issuer, connector: &str, login: &str, password: &str) -> (u16, Option<String>, String) {
    let browser = Browser::new();
    let (url, req, csrf) = browser.open_login(&issuer.auth_url(SCOPES, "st")).await;
    let r = browser
        .client
        .post(url.split('?').next().unwrap())
        .form(&[
            ("req", req.as_str()),
            ("csrf", csrf.as_str()),
            ("connector", connector),
            ("login", login),
            ("password", password),
        ])
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let location = r.headers().get("location").map(|v| v.to_str().unwrap().to_owned());
    (status, location, r.text().await.unwrap())
}

/// A login and code exchange: the token response.
async fn tokens(issuer: &Issuer, connector: &str, login: &str, password: &str) -> Value {
    let (status, location, body) = sign_in(issuer, connector, login, password).await;
    assert_eq!(status, 303, "{body}");
    let location = location.unwrap();
    assert!(location.starts_with(REDIRECT), "{location}");
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

#[tokio::test]
async fn login_gives_crowd_claims_and_refresh_follows_group_changes() {
    let (crowd, issuer) = setup().await;
    let page = issuer.state.connectors.get("crowd").map(|c| c.prompt().unwrap().to_owned());
    assert_eq!(page.as_deref(), Some("Crowd login"));

    let body = tokens(&issuer, "crowd", "jane", "jane-pw").await;
    let c = id_claims(&body);
    assert_eq!(c["sub"], issuer::connector::dex_subject("key-jane", "crowd"));
    assert_eq!(c["email"], "key-jane@crowd.example");
    assert_eq!(c["email_verified"], true);
    assert_eq!(c["name"], "jane");
    assert_eq!(c["preferred_username"], "key-jane@crowd.example", "preferredUsernameField: email");
    assert_eq!(c["groups"], json!(["devs", "ops"]), "only the required groups, read across three pages");
    assert_eq!(crowd.with(|s| s.max_results_seen), 2, "groupsPageSize is max-results");

    // Leaves ops, joins admins (on a later page): the refreshed token says so.
    crowd.with(|s| {
        s.user("jane").unwrap().groups = ["all", "staff", "devs", "x", "y", "z", "admins"].map(String::from).to_vec()
    });
    let (status, body) = issuer.refresh(&refresh_token(&body)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(id_claims(&body)["groups"], json!(["devs", "admins"]));

    // Removed from every required group: the family ends.
    crowd.with(|s| s.user("jane").unwrap().groups = vec!["all".into()]);
    let (status, err) = issuer.refresh(&refresh_token(&body)).await;
    assert_eq!((status, err["error"].as_str()), (400, Some("invalid_grant")), "{err}");
}

#[tokio::test]
async fn without_required_groups_every_group_is_reported_and_odd_usernames_are_encoded() {
    let (_crowd, issuer) = setup().await;
    let body = tokens(&issuer, "crowd-open", "jane", "jane-pw").await;
    let c = id_claims(&body);
    assert_eq!(c["groups"], json!(["all", "staff", "devs", "x", "ops"]));
    assert_eq!(c["preferred_username"], "jane", "no preferredUsernameField: the name");

    let body = tokens(&issuer, "crowd", ODD_NAME, "odd pw &+/").await;
    let c = id_claims(&body);
    assert_eq!(c["name"], ODD_NAME);
    assert_eq!(c["sub"], issuer::connector::dex_subject("key-odd", "crowd"));
    assert_eq!(c["groups"], json!(["devs"]));
    let (status, body) = issuer.refresh(&refresh_token(&body)).await;
    assert_eq!(status, 200, "refresh looks the odd name up again: {body}");
}

#[tokio::test]
async fn wrong_passwords_unknown_users_and_outsiders() {
    let (crowd, issuer) = setup().await;
    for (login, password) in [("jane", "wrong"), ("nobody", "jane-pw")] {
        let (status, location, page) = sign_in(&issuer, "crowd", login, password).await;
        assert_eq!(status, 401, "{login}");
        assert!(location.is_none());
        assert!(page.contains("Invalid crowd login or password."), "{page}");
        assert!(page.contains("name=\"connector\" value=\"crowd\""), "the form again");
    }
    let before = crowd.with(|s| s.requests);
    let (status, _, _) = sign_in(&issuer, "crowd", "jane", "").await;
    assert_eq!(status, 400, "an empty password is refused by the form");
    assert_eq!(crowd.with(|s| s.requests), before, "and never reaches Crowd");

    let (status, _, page) = sign_in(&issuer, "crowd", "bob", "bob-pw").await;
    assert_eq!(status, 403, "bob is in none of the required groups");
    assert!(page.contains("not a member of any of the groups devs, ops, admins"), "{page}");

    crowd.with(|s| s.user("jane").unwrap().active = false);
    let (status, _, page) = sign_in(&issuer, "crowd", "jane", "jane-pw").await;
    assert_eq!(status, 403, "a deactivated account is refused");
    assert!(page.contains("deactivated"), "{page}");
}

#[tokio::test]
async fn deactivated_or_deleted_users_lose_their_refresh_tokens() {
    let (crowd, issuer) = setup().await;
    let first = tokens(&issuer, "crowd", "jane", "jane-pw").await;
    let second = tokens(&issuer, "crowd-open", "bob", "bob-pw").await;

    crowd.with(|s| s.user("jane").unwrap().active = false);
    let (status, err) = issuer.refresh(&refresh_token(&first)).await;
    assert_eq!((status, err["error"].as_str()), (400, Some("invalid_grant")), "deactivated: {err}");
    crowd.with(|s| s.user("jane").unwrap().active = true);
    let (status, _) = issuer.refresh(&refresh_token(&first)).await;
    assert_eq!(status, 400, "the family stays revoked after reactivation");

    crowd.with(|s| s.users.retain(|u| u.name != "bob"));
    let (status, err) = issuer.refresh(&refresh_token(&second)).await;
    assert_eq!((status, err["error"].as_str()), (400, Some("invalid_grant")), "deleted: {err}");
}

#[tokio::test]
async fn an_outage_is_503_and_the_same_refresh_token_works_afterwards() {
    let (crowd, issuer) = setup().await;
    let body = tokens(&issuer, "crowd", "jane", "jane-pw").await;
    let token = refresh_token(&body);

    crowd.with(|s| s.down = true);
    let (status, err) = issuer.refresh(&token).await;
    assert_eq!((status, err["error"].as_str()), (503, Some("temporarily_unavailable")), "{err}");
    let (status, _, page) = sign_in(&issuer, "crowd", "jane", "jane-pw").await;
    assert_eq!(status, 503, "login while Crowd is down: {page}");

    crowd.with(|s| s.down = false);
    let (status, body) = issuer.refresh(&token).await;
    assert_eq!(status, 200, "the same token once Crowd is back: {body}");
    assert_eq!(id_claims(&body)["groups"], json!(["devs", "ops"]));
}

#[tokio::test]
async fn wrong_application_credentials_are_an_outage_not_a_wrong_password() {
    let crowd = Crowd::start(vec![CrowdUser::new("jane", "key-jane", "jane-pw", &["devs"])]).await;
    let yaml = connectors(&crowd).replacen(APP_PASSWORD, "not-the-app-password", 1);
    let issuer = Issuer::start_with(&yaml, |_| {}).await;
    let (status, _, page) = sign_in(&issuer, "crowd", "jane", "jane-pw").await;
    assert_eq!(status, 503, "{page}");
    assert!(!page.contains("not-the-app-password"), "the secret is never shown");
}

#[test]
fn unknown_and_invalid_keys_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/dev.yaml");
    let text = std::fs::read_to_string(path).unwrap();
    let db = dir.path().join("db");
    let text = text.replace("file: ./data/issuer.db", &format!("file: {}", db.display()));
    let yaml = format!(
        "{text}\nconnectors:\n  - type: atlassian-crowd\n    id: crowd\n    name: Crowd\n    config:\n      baseURL: https://crowd.example/crowd\n      clientID: app\n      clientSecret: app-pa55\n      groupFilter: x\n"
    );
    let err = issuer::config::Config::parse(path, &yaml, &|_| None).unwrap_err().to_string();
    assert!(err.contains("connectors[0].config.groupFilter"), "{err}");
    assert!(!err.contains("app-pa55"), "{err}");

    let yaml = format!(
        "{text}\nconnectors:\n  - type: atlassian-crowd\n    id: crowd\n    name: Crowd\n    config:\n      baseURL: https://crowd.example/crowd\n      clientID: app\n      clientSecret: app-pa55\n      preferredUsernameField: login\n"
    );
    let err = issuer::config::Config::parse(path, &yaml, &|_| None).unwrap_err().to_string();
    assert!(err.contains("connectors[0].config.preferredUsernameField"), "{err}");
}
