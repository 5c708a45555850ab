//! The `gitlab` connector over real HTTP against a local GitLab stand-in (`common/gitlab.rs`): the browser
//! clicks the GitLab button, the stand-in consents and sends it back to `/callback`, and the code is
//! exchanged. Claims follow Dex (`sub` encoding, groups cut to `groups`, role entries), outsiders are
//! refused, refresh spends GitLab's rotating refresh token exactly once per use (the stand-in refuses a
//! reused one) and re-reads groups, and GitLab outages are 503s that keep the refresh token.

mod common;

use common::gitlab::{self, GitLab, User};
use common::upstream_login::{config_problems, sign_in_via, sign_in_via_then};
use common::{claims, Issuer};
use issuer::connector::dex_subject;
use serde_json::{json, Value};

const SCOPE: &str = "openid email profile groups offline_access";

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// jane: in ops, ops/infra and misc, maintainer of ops. mallory: only in misc.
fn world() -> gitlab::State {
    let user = |id, username: &str, name: &str, groups: &[&str], maintainer: &[&str]| User {
        id,
        username: username.into(),
        name: name.into(),
        email: format!("{username}@example.com"),
        state: "active".into(),
        groups: strings(groups),
        owner: vec![],
        maintainer: strings(maintainer),
        developer: vec![],
    };
    gitlab::State {
        users: vec![
            user(42, "jane", "Jane Doe", &["ops", "ops/infra", "misc"], &["ops"]),
            user(43, "mallory", "Mallory", &["misc"], &[]),
        ],
        consenting: "jane".into(),
        ..Default::default()
    }
}

fn connector_yaml(url: &str, extra: &str) -> String {
    format!(
        "connectors:\n- type: gitlab\n  id: gitlab\n  name: GitLab\n  config:\n    baseURL: '{url}'\n    clientID: {}\n    \
         clientSecret: {}\n    redirectURI: '{{issuer}}/callback'\n{extra}",
        gitlab::CLIENT_ID,
        gitlab::CLIENT_SECRET
    )
}

const GROUPS: &str = "    groups: [ops, ops/infra, 'ops:maintainer']\n    getGroupsPermission: true\n";

async fn setup(extra: &str) -> (GitLab, Issuer) {
    let gl = GitLab::start(world()).await;
    let issuer = Issuer::start_with(&connector_yaml(&gl.url, extra), |_| {}).await;
    (gl, issuer)
}

async fn tokens(issuer: &Issuer) -> Value {
    let code = sign_in_via(issuer, "gitlab", SCOPE).await.code();
    let (status, body) = issuer.exchange(&code).await;
    assert_eq!(status, 200, "{body}");
    body
}

fn id_claims(body: &Value) -> Value {
    claims(body["id_token"].as_str().unwrap())
}

#[tokio::test]
async fn a_member_gets_dex_claims_with_groups_cut_to_the_required_ones() {
    let (gl, issuer) = setup(GROUPS).await;
    let c = id_claims(&tokens(&issuer).await);
    assert_eq!(c["sub"], dex_subject("42", "gitlab"));
    assert_eq!(c["name"], "Jane Doe");
    assert_eq!(c["preferred_username"], "jane");
    assert_eq!(c["email"], "jane@example.com");
    assert_eq!(c["email_verified"], true);
    // misc is not required; ops/infra:maintainer (inherited from ops) is not listed either.
    assert_eq!(c["groups"], json!(["ops", "ops/infra", "ops:maintainer"]));
    assert_eq!(gl.calls("/oauth/token"), 1);
}

#[tokio::test]
async fn without_required_groups_every_group_and_role_is_a_group_and_the_username_can_be_the_id() {
    let (_gl, issuer) = setup("    getGroupsPermission: true\n    useLoginAsID: true\n").await;
    let c = id_claims(&tokens(&issuer).await);
    assert_eq!(c["sub"], dex_subject("jane", "gitlab"));
    assert_eq!(c["groups"], json!(["ops", "ops/infra", "misc", "ops:maintainer", "ops/infra:maintainer"]));
}

#[tokio::test]
async fn a_user_in_none_of_the_required_groups_gets_a_403_page() {
    let (gl, issuer) = setup(GROUPS).await;
    gl.with(|s| s.consenting = "mallory".into());
    let landing = sign_in_via(&issuer, "gitlab", SCOPE).await;
    assert_eq!(landing.status, 403, "{}", landing.body);
    assert!(landing.body.contains("mallory is not a member of any of the required groups"), "{}", landing.body);
    assert!(landing.body.contains("ops, ops/infra, ops:maintainer"), "{}", landing.body);
}

#[tokio::test]
async fn refresh_rotates_the_upstream_token_and_shows_group_changes() {
    let (gl, issuer) = setup(GROUPS).await;
    let body = tokens(&issuer).await;
    gl.with(|s| s.user_mut("jane").groups.retain(|g| g != "ops/infra"));
    let (status, first) = issuer.refresh(body["refresh_token"].as_str().unwrap()).await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(id_claims(&first)["groups"], json!(["ops", "ops:maintainer"]));
    assert_eq!(id_claims(&first)["sub"], dex_subject("42", "gitlab"));

    gl.with(|s| s.user_mut("jane").maintainer.clear());
    let (status, second) = issuer.refresh(first["refresh_token"].as_str().unwrap()).await;
    assert_eq!(status, 200, "{second}");
    assert_eq!(id_claims(&second)["groups"], json!(["ops"]));
    // Each refresh spent the upstream refresh token the previous one stored, never a spent one.
    assert_eq!(gl.calls("/oauth/token"), 3, "one code exchange and two refresh grants");
    assert_eq!(gl.with(|s| s.reused_refresh_tokens), 0);

    gl.with(|s| s.user_mut("jane").groups = strings(&["misc"]));
    let (status, err) = issuer.refresh(second["refresh_token"].as_str().unwrap()).await;
    assert_eq!(status, 400, "{err}");
    assert_eq!(err["error"], "invalid_grant");
}

#[tokio::test]
async fn a_revoked_application_ends_the_session_at_refresh() {
    let (gl, issuer) = setup(GROUPS).await;
    let body = tokens(&issuer).await;
    gl.with(|s| s.revoked.insert("jane".into()));
    let (status, err) = issuer.refresh(body["refresh_token"].as_str().unwrap()).await;
    assert_eq!(status, 400, "{err}");
    assert_eq!(err["error"], "invalid_grant");
}

#[tokio::test]
async fn a_blocked_account_ends_the_session_at_refresh() {
    let (gl, issuer) = setup(GROUPS).await;
    let body = tokens(&issuer).await;
    gl.with(|s| s.user_mut("jane").state = "blocked".into());
    let (status, err) = issuer.refresh(body["refresh_token"].as_str().unwrap()).await;
    assert_eq!(status, 400, "{err}");
    assert_eq!(err["error"], "invalid_grant");
}

#[tokio::test]
async fn gitlab_down_is_503_and_the_same_refresh_token_works_once_it_is_back() {
    let (gl, issuer) = setup(GROUPS).await;
    let body = tokens(&issuer).await;
    let refresh_token = body["refresh_token"].as_str().unwrap();
    gl.with(|s| s.down = true);
    let (status, err) = issuer.refresh(refresh_token).await;
    assert_eq!(status, 503, "{err}");
    assert_eq!(err["error"], "temporarily_unavailable");
    gl.with(|s| s.down = false);
    let (status, refreshed) = issuer.refresh(refresh_token).await;
    assert_eq!(status, 200, "{refreshed}");
    assert_eq!(id_claims(&refreshed)["groups"], json!(["ops", "ops/infra", "ops:maintainer"]));
}

#[tokio::test]
async fn a_failure_after_the_upstream_rotation_does_not_spend_the_old_refresh_token_twice() {
    let (gl, issuer) = setup(GROUPS).await;
    let body = tokens(&issuer).await;
    let refresh_token = body["refresh_token"].as_str().unwrap();
    // The refresh grant succeeds (GitLab rotates and revokes the old refresh token), then userinfo fails.
    gl.with(|s| s.userinfo_down = true);
    let (status, err) = issuer.refresh(refresh_token).await;
    assert_eq!(status, 503, "{err}");
    assert_eq!(err["error"], "temporarily_unavailable");
    assert_eq!(gl.calls("/oauth/token"), 2);
    gl.with(|s| s.userinfo_down = false);
    // The retry starts from the successor the failed attempt obtained (stored with the issuer's refresh
    // token, so any replica has it), never from the spent upstream token.
    let (status, refreshed) = issuer.refresh(refresh_token).await;
    assert_eq!(status, 200, "{refreshed}");
    assert_eq!(gl.calls("/oauth/token"), 3, "one more refresh grant, with the new GitLab token");
    assert_eq!(gl.with(|s| s.reused_refresh_tokens), 0, "the spent GitLab token is never presented again");
    // And the chain goes on from there.
    let (status, next) = issuer.refresh(refreshed["refresh_token"].as_str().unwrap()).await;
    assert_eq!(status, 200, "{next}");
    assert_eq!(gl.with(|s| s.reused_refresh_tokens), 0);
}

#[tokio::test]
async fn gitlab_down_at_login_is_a_503_page() {
    let (gl, issuer) = setup(GROUPS).await;
    let landing = sign_in_via_then(&issuer, "gitlab", SCOPE, || gl.with(|s| s.down = true)).await;
    assert_eq!(landing.status, 503, "{}", landing.body);
}

#[tokio::test]
async fn access_denied_on_the_callback_is_a_4xx_page() {
    let (gl, issuer) = setup(GROUPS).await;
    gl.with(|s| s.deny = true);
    let landing = sign_in_via(&issuer, "gitlab", SCOPE).await;
    assert!((400..500).contains(&landing.status), "{} {}", landing.status, landing.body);
    assert!(landing.body.contains("access_denied"), "{}", landing.body);
    assert!(landing.location.is_none());
}

#[test]
fn unknown_and_invalid_keys_are_named() {
    let e = config_problems(&connector_yaml("https://gitlab.example.com", "    group: [ops]\n"));
    assert!(e.contains("connectors[0].config.group"), "{e}");
    let e = config_problems(&connector_yaml("gitlab.example.com", ""));
    assert!(e.contains("connectors[0].config.baseURL"), "{e}");
}
