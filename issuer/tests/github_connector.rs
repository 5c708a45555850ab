//! The `github` connector over real HTTP against a local GitHub stand-in (`common/github.rs`): the browser
//! clicks the GitHub button, the stand-in consents and sends it back to `/callback`, and the code is
//! exchanged. Claims follow Dex (`sub` encoding, `org:team` groups read across every page), outsiders are
//! refused, refresh re-reads orgs and teams, and GitHub outages are 503s that keep the refresh token.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::github::{self, GitHub, Team, User};
use common::upstream_login::{config_problems, sign_in_via, sign_in_via_then};
use common::{claims, Issuer};
use issuer::connector::dex_subject;
use serde_json::{json, Value};

const SCOPE: &str = "openid email profile groups offline_access";

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

fn team(org: &str, name: &str, slug: &str, members: &[&str]) -> Team {
    Team { org: org.into(), name: name.into(), slug: slug.into(), members: set(members) }
}

/// jane: in acme (teams dev, qa, sre) and widgets (ops, Platform Team, misc) and zeta (x); her primary
/// verified address is on the second page of `/user/emails`. carol: widgets' Platform Team only. mallory:
/// only zeta.
fn world() -> github::State {
    let user = |id, login: &str, name: Option<&str>, public: Option<&str>, emails: &[(&str, bool, bool)]| User {
        id,
        login: login.into(),
        name: name.map(Into::into),
        public_email: public.map(Into::into),
        emails: emails.iter().map(|(e, v, p)| (e.to_string(), *v, *p)).collect(),
    };
    github::State {
        users: vec![
            user(
                1001,
                "jane",
                Some("Jane Doe"),
                None,
                &[
                    ("jane@old.example", true, false),
                    ("1001+jane@users.noreply.github.com", true, false),
                    ("jane@acme.example", true, true),
                ],
            ),
            user(1002, "carol", None, Some("carol@widgets.example"), &[]),
            user(1003, "mallory", Some("Mallory"), Some("mallory@evil.example"), &[]),
        ],
        orgs: BTreeMap::from([
            ("acme".into(), set(&["jane"])),
            ("widgets".into(), set(&["jane", "carol"])),
            ("zeta".into(), set(&["jane", "mallory"])),
        ]),
        teams: vec![
            team("acme", "dev", "dev", &["jane"]),
            team("zeta", "x", "x", &["jane", "mallory"]),
            team("acme", "qa", "qa", &["jane"]),
            team("widgets", "ops", "ops", &["jane"]),
            team("widgets", "Platform Team", "platform-team", &["jane", "carol"]),
            team("acme", "sre", "sre", &["jane"]),
            team("widgets", "misc", "misc", &["jane"]),
        ],
        consenting: "jane".into(),
        ..Default::default()
    }
}

fn connector_yaml(id: &str, url: &str, extra: &str) -> String {
    format!(
        "connectors:\n- type: github\n  id: {id}\n  name: GitHub\n  config:\n    clientID: {}\n    clientSecret: {}\n    \
         redirectURI: '{{issuer}}/callback'\n    hostName: '{url}'\n{extra}",
        github::CLIENT_ID,
        github::CLIENT_SECRET
    )
}

const ORGS: &str = "    orgs:\n    - name: acme\n    - name: widgets\n      teams: [ops, Platform Team]\n";

async fn setup(extra: &str) -> (GitHub, Issuer) {
    let gh = GitHub::start(world()).await;
    let issuer = Issuer::start_with(&connector_yaml("github", &gh.url, extra), |_| {}).await;
    (gh, issuer)
}

async fn tokens(issuer: &Issuer) -> Value {
    let code = sign_in_via(issuer, "github", SCOPE).await.code();
    let (status, body) = issuer.exchange(&code).await;
    assert_eq!(status, 200, "{body}");
    body
}

fn groups(id_token: &Value) -> Value {
    claims(id_token.as_str().unwrap())["groups"].clone()
}

#[tokio::test]
async fn a_member_gets_dex_claims_with_teams_from_every_page() {
    let (gh, issuer) = setup(ORGS).await;
    let body = tokens(&issuer).await;
    let c = claims(body["id_token"].as_str().unwrap());
    assert_eq!(c["sub"], dex_subject("1001", "github"));
    assert_eq!(c["name"], "Jane Doe");
    assert_eq!(c["preferred_username"], "jane");
    assert_eq!(c["email"], "jane@acme.example", "the primary address, from the second page of /user/emails");
    assert_eq!(c["email_verified"], true);
    assert_eq!(c["groups"], json!(["acme:dev", "acme:qa", "acme:sre", "widgets:ops", "widgets:Platform Team"]));
    // Seven teams at two a page: four pages, read once for both orgs.
    assert_eq!(gh.calls("/user/teams"), 4);
    assert_eq!(gh.calls("/user/emails"), 2);
    assert_eq!(gh.calls("/orgs/{org}/members/{username}"), 2);
    assert_eq!(gh.calls("/user/orgs"), 0, "orgs are checked one by one, not listed");
}

#[tokio::test]
async fn a_public_email_is_used_and_the_name_falls_back_to_the_login() {
    let (gh, issuer) = setup(ORGS).await;
    gh.with(|s| s.consenting = "carol".into());
    let c = claims(tokens(&issuer).await["id_token"].as_str().unwrap());
    assert_eq!(c["sub"], dex_subject("1002", "github"));
    assert_eq!(c["name"], "carol");
    assert_eq!(c["email"], "carol@widgets.example");
    assert_eq!(c["groups"], json!(["widgets:Platform Team"]));
    assert_eq!(gh.calls("/user/emails"), 0, "a public email needs no /user/emails");
}

#[tokio::test]
async fn a_user_outside_the_required_orgs_and_teams_gets_a_403_page() {
    let (gh, issuer) = setup(ORGS).await;
    gh.with(|s| s.consenting = "mallory".into());
    let landing = sign_in_via(&issuer, "github", SCOPE).await;
    assert_eq!(landing.status, 403, "{}", landing.body);
    assert!(landing.body.contains("mallory is not a member"), "{}", landing.body);
    assert!(landing.body.contains("acme, widgets (teams ops, Platform Team)"), "{}", landing.body);
    // In the org but in none of its listed teams is not enough either.
    gh.with(|s| {
        s.consenting = "carol".into();
        s.team_mut("widgets", "Platform Team").members.remove("carol");
    });
    let landing = sign_in_via(&issuer, "github", SCOPE).await;
    assert_eq!(landing.status, 403, "{}", landing.body);
}

#[tokio::test]
async fn refresh_shows_team_changes_and_leaving_every_org_ends_the_session() {
    let (gh, issuer) = setup(ORGS).await;
    let body = tokens(&issuer).await;
    gh.with(|s| {
        s.team_mut("acme", "qa").members.remove("jane");
        s.team_mut("widgets", "ops").members.remove("jane");
        s.teams.push(team("acme", "security", "security", &["jane"]));
    });
    let (status, refreshed) = issuer.refresh(body["refresh_token"].as_str().unwrap()).await;
    assert_eq!(status, 200, "{refreshed}");
    assert_eq!(
        groups(&refreshed["id_token"]),
        json!(["acme:dev", "acme:sre", "acme:security", "widgets:Platform Team"])
    );
    assert_eq!(claims(refreshed["id_token"].as_str().unwrap())["sub"], dex_subject("1001", "github"));

    gh.with(|s| {
        s.orgs.get_mut("acme").unwrap().remove("jane");
        s.orgs.get_mut("widgets").unwrap().remove("jane");
    });
    let (status, err) = issuer.refresh(refreshed["refresh_token"].as_str().unwrap()).await;
    assert_eq!(status, 400, "{err}");
    assert_eq!(err["error"], "invalid_grant");
}

#[tokio::test]
async fn a_revoked_github_token_ends_the_session_at_refresh() {
    let (gh, issuer) = setup(ORGS).await;
    let body = tokens(&issuer).await;
    gh.with(|s| s.revoked.insert("jane".into()));
    let (status, err) = issuer.refresh(body["refresh_token"].as_str().unwrap()).await;
    assert_eq!(status, 400, "{err}");
    assert_eq!(err["error"], "invalid_grant");
}

#[tokio::test]
async fn github_down_is_503_and_the_same_refresh_token_works_once_it_is_back() {
    let (gh, issuer) = setup(ORGS).await;
    let body = tokens(&issuer).await;
    let refresh_token = body["refresh_token"].as_str().unwrap();
    gh.with(|s| s.down = true);
    let (status, err) = issuer.refresh(refresh_token).await;
    assert_eq!(status, 503, "{err}");
    assert_eq!(err["error"], "temporarily_unavailable");
    gh.with(|s| s.down = false);
    let (status, refreshed) = issuer.refresh(refresh_token).await;
    assert_eq!(status, 200, "{refreshed}");
    assert_eq!(groups(&refreshed["id_token"]).as_array().unwrap().len(), 5);
}

#[tokio::test]
async fn github_down_at_login_is_a_503_page() {
    let (gh, issuer) = setup(ORGS).await;
    // The stand-in consents, then goes down before the code exchange: the issuer's /callback answers 503.
    let landing = sign_in_via_then(&issuer, "github", SCOPE, || gh.with(|s| s.down = true)).await;
    assert_eq!(landing.status, 503, "{}", landing.body);
    assert!(landing.body.contains("did not answer"), "{}", landing.body);
}

#[tokio::test]
async fn access_denied_on_the_callback_is_a_4xx_page() {
    let (gh, issuer) = setup(ORGS).await;
    gh.with(|s| s.deny = true);
    let landing = sign_in_via(&issuer, "github", SCOPE).await;
    assert!((400..500).contains(&landing.status), "{} {}", landing.status, landing.body);
    assert!(landing.body.contains("access_denied"), "{}", landing.body);
    assert!(landing.location.is_none());
}

#[tokio::test]
async fn load_all_groups_lists_every_org_and_team_by_slug_and_login_as_id() {
    let gh = GitHub::start(world()).await;
    let extra = "    loadAllGroups: true\n    teamNameField: slug\n    useLoginAsID: true\n";
    let issuer = Issuer::start_with(&connector_yaml("gh-all", &gh.url, extra), |_| {}).await;
    let code = sign_in_via(&issuer, "gh-all", SCOPE).await.code();
    let (status, body) = issuer.exchange(&code).await;
    assert_eq!(status, 200, "{body}");
    let c = claims(body["id_token"].as_str().unwrap());
    assert_eq!(c["sub"], dex_subject("jane", "gh-all"));
    assert_eq!(
        c["groups"],
        json!([
            "acme",
            "acme:dev",
            "acme:qa",
            "acme:sre",
            "widgets",
            "widgets:ops",
            "widgets:platform-team",
            "widgets:misc",
            "zeta",
            "zeta:x"
        ])
    );
    assert_eq!(gh.calls("/user/orgs"), 2, "three orgs at two a page");
}

#[tokio::test]
async fn the_legacy_org_key_gives_bare_team_names_and_requires_membership() {
    let gh = GitHub::start(world()).await;
    let issuer =
        Issuer::start_with(&connector_yaml("github", &gh.url, "    org: widgets\n    teamNameField: both\n"), |_| {})
            .await;
    let c = claims(tokens(&issuer).await["id_token"].as_str().unwrap());
    assert_eq!(c["groups"], json!(["ops", "Platform Team", "platform-team", "misc"]), "no org prefix; each name once");
    gh.with(|s| s.consenting = "mallory".into());
    let landing = sign_in_via(&issuer, "github", SCOPE).await;
    assert_eq!(landing.status, 403, "{}", landing.body);
    assert!(landing.body.contains("not a member of the organization widgets"), "{}", landing.body);
}

#[test]
fn unknown_and_invalid_keys_are_named() {
    let yaml = connector_yaml("github", "https://ghe.example.com", "    orgz: [acme]\n");
    let e = config_problems(&yaml);
    assert!(e.contains("connectors[0].config.orgz"), "{e}");
    let yaml = connector_yaml("github", "https://ghe.example.com", "    orgs: [{name: acme, team: [x]}]\n");
    let e = config_problems(&yaml);
    assert!(e.contains("connectors[0].config.orgs[0].team"), "{e}");
    let yaml = connector_yaml("github", "http://ghe.example.com", "");
    let e = config_problems(&yaml);
    assert!(e.contains("connectors[0].config.hostName"), "{e}");
}
