//! A stand-in for GitHub Enterprise Server (OAuth under `/login/oauth`, REST under `/api/v3`) on a loopback
//! port, serving exactly what the `github` connector uses, with the JSON shapes of GitHub's REST reference.
//! Its authorize endpoint consents at once as [`State::consenting`]. Lists are served [`PAGE_SIZE`] items a
//! page with GitHub's `Link` header. The test changes users, memberships, revocations and the `down`
//! switch through [`GitHub::with`]; every request is counted by path.
#![allow(dead_code, unreachable_pub)] // each test binary uses a different part
#![allow(clippy::result_large_err)] // handlers return their early answers (503, 401) as the error

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};

use axum::extract::{Path, Query, State as Shared};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use serde::Serialize;
use serde_json::json;

pub const CLIENT_ID: &str = "stand-in-github-app";
pub const CLIENT_SECRET: &str = "stand-in-github-secret";
/// Items per page of every list (GitHub's default is 30, its maximum 100; small here to exercise paging).
pub const PAGE_SIZE: usize = 2;

/// A GitHub account.
#[derive(Clone)]
pub struct User {
    pub id: u64,
    pub login: String,
    pub name: Option<String>,
    /// The public email shown on `/user` (null when private).
    pub public_email: Option<String>,
    /// `(address, verified, primary)` as `/user/emails` lists them.
    pub emails: Vec<(String, bool, bool)>,
}

/// A team and its members' logins.
#[derive(Clone)]
pub struct Team {
    pub org: String,
    pub name: String,
    pub slug: String,
    pub members: BTreeSet<String>,
}

pub struct Grant {
    login: String,
    redirect_uri: String,
    challenge: Option<String>,
}

/// Everything the stand-in knows; tests change it between requests.
#[derive(Default)]
pub struct State {
    pub users: Vec<User>,
    /// Organization login → member logins (in the order `/user/orgs` lists them).
    pub orgs: BTreeMap<String, BTreeSet<String>>,
    pub teams: Vec<Team>,
    /// Who consents at the next authorization.
    pub consenting: String,
    /// Answer the next authorizations with `error=access_denied` (the person clicked "Cancel").
    pub deny: bool,
    /// Answer every request with 503.
    pub down: bool,
    /// Logins whose access tokens were revoked (the person revoked the OAuth App).
    pub revoked: HashSet<String>,
    /// Requests by path.
    pub calls: HashMap<String, usize>,
    pub codes: HashMap<String, Grant>,
    pub tokens: HashMap<String, String>,
    pub url: String,
}

impl State {
    pub fn team_mut(&mut self, org: &str, name: &str) -> &mut Team {
        self.teams.iter_mut().find(|t| t.org == org && t.name == name).unwrap()
    }
}

pub struct GitHub {
    /// `http://127.0.0.1:PORT`: the connector's `hostName`.
    pub url: String,
    pub state: Arc<Mutex<State>>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for GitHub {
    fn drop(&mut self) {
        self.server.abort();
    }
}

type Db = Arc<Mutex<State>>;

impl GitHub {
    pub async fn start(mut state: State) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        state.url = url.clone();
        let state = Arc::new(Mutex::new(state));
        let app = Router::new()
            .route("/login/oauth/authorize", get(authorize))
            .route("/login/oauth/access_token", post(access_token))
            .route("/api/v3/user", get(user))
            .route("/api/v3/user/emails", get(emails))
            .route("/api/v3/user/teams", get(teams))
            .route("/api/v3/user/orgs", get(orgs))
            .route("/api/v3/orgs/{org}/members/{username}", get(membership))
            .with_state(state.clone());
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        GitHub { url, state, server }
    }

    /// Runs `f` on the stand-in's state.
    pub fn with<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        f(&mut self.state.lock().unwrap())
    }

    /// How many requests `path` has had.
    pub fn calls(&self, path: &str) -> usize {
        self.with(|s| s.calls.get(path).copied().unwrap_or(0))
    }
}

fn unavailable() -> Response {
    (StatusCode::SERVICE_UNAVAILABLE, "GitHub is down for maintenance").into_response()
}

/// Counts the request and honours the `down` switch.
fn enter<'a>(state: &'a Db, path: &str) -> Result<std::sync::MutexGuard<'a, State>, Response> {
    let mut s = state.lock().unwrap();
    *s.calls.entry(path.to_owned()).or_default() += 1;
    if s.down {
        return Err(unavailable());
    }
    Ok(s)
}

/// The login behind `Authorization: Bearer …`, or GitHub's 401 body.
fn bearer(s: &State, headers: &HeaderMap) -> Result<String, Response> {
    let unauthorized = || {
        (
            StatusCode::UNAUTHORIZED,
            Json(json!({"message": "Bad credentials", "documentation_url": "https://docs.github.com/rest"})),
        )
            .into_response()
    };
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(unauthorized)?;
    let login = s.tokens.get(token).ok_or_else(unauthorized)?;
    if s.revoked.contains(login) {
        return Err(unauthorized());
    }
    Ok(login.clone())
}

/// One page of `items` with GitHub's `Link` header (`next` and `last` while there are more pages).
fn paged<T: Serialize>(s: &State, path: &str, items: Vec<T>, query: &HashMap<String, String>) -> Response {
    let page: usize = query.get("page").and_then(|p| p.parse().ok()).unwrap_or(1).max(1);
    let last = items.len().div_ceil(PAGE_SIZE).max(1);
    let body: Vec<T> = items.into_iter().skip((page - 1) * PAGE_SIZE).take(PAGE_SIZE).collect();
    let mut response = Json(body).into_response();
    if page < last {
        let link = format!(
            "<{url}{path}?per_page={PAGE_SIZE}&page={}>; rel=\"next\", <{url}{path}?per_page={PAGE_SIZE}&page={last}>; rel=\"last\"",
            page + 1,
            url = s.url
        );
        response.headers_mut().insert(header::LINK, link.parse().unwrap());
    }
    response
}

/// https://docs.github.com/en/apps/oauth-apps/building-oauth-apps/authorizing-oauth-apps#1-request-a-users-github-identity
/// (PKCE: `code_challenge` with `code_challenge_method=S256`.)
async fn authorize(Shared(state): Shared<Db>, Query(q): Query<HashMap<String, String>>) -> Response {
    let mut s = match enter(&state, "/login/oauth/authorize") {
        Ok(s) => s,
        Err(r) => return r,
    };
    assert_eq!(q.get("client_id").map(String::as_str), Some(CLIENT_ID));
    let redirect_uri = q.get("redirect_uri").cloned().unwrap();
    let state_param = q.get("state").cloned().unwrap();
    let mut back = url::Url::parse(&redirect_uri).unwrap();
    if s.deny {
        back.query_pairs_mut()
            .append_pair("error", "access_denied")
            .append_pair("error_description", "The user has denied your application access.")
            .append_pair("state", &state_param);
        return (StatusCode::FOUND, [(header::LOCATION, back.to_string())]).into_response();
    }
    if q.contains_key("code_challenge") {
        assert_eq!(q.get("code_challenge_method").map(String::as_str), Some("S256"));
    }
    let code = format!("code-{}", s.codes.len() + s.tokens.len() + 1);
    let grant = Grant { login: s.consenting.clone(), redirect_uri, challenge: q.get("code_challenge").cloned() };
    s.codes.insert(code.clone(), grant);
    back.query_pairs_mut().append_pair("code", &code).append_pair("state", &state_param);
    (StatusCode::FOUND, [(header::LOCATION, back.to_string())]).into_response()
}

/// https://docs.github.com/en/apps/oauth-apps/building-oauth-apps/authorizing-oauth-apps#2-users-are-redirected-back-to-your-site-by-github
/// GitHub answers errors with 200 and an `error` member.
async fn access_token(
    Shared(state): Shared<Db>,
    headers: HeaderMap,
    Form(f): Form<HashMap<String, String>>,
) -> Response {
    let mut s = match enter(&state, "/login/oauth/access_token") {
        Ok(s) => s,
        Err(r) => return r,
    };
    assert_eq!(headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()), Some("application/json"));
    let error = |e: &str| Json(json!({"error": e, "error_description": e})).into_response();
    if f.get("client_id").map(String::as_str) != Some(CLIENT_ID)
        || f.get("client_secret").map(String::as_str) != Some(CLIENT_SECRET)
    {
        return error("incorrect_client_credentials");
    }
    let Some(grant) = f.get("code").and_then(|c| s.codes.remove(c)) else {
        return error("bad_verification_code");
    };
    if f.get("redirect_uri") != Some(&grant.redirect_uri) {
        return error("redirect_uri_mismatch");
    }
    if let Some(challenge) = &grant.challenge {
        let verifier = f.get("code_verifier").map(String::as_str).unwrap_or("");
        let computed = B64.encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, verifier.as_bytes()).as_ref());
        if &computed != challenge {
            return error("bad_verification_code");
        }
    }
    let token = format!("gho_standin{}", s.tokens.len() + 1);
    s.tokens.insert(token.clone(), grant.login);
    Json(json!({"access_token": token, "token_type": "bearer", "scope": "read:org,user:email"})).into_response()
}

/// https://docs.github.com/en/rest/users/users#get-the-authenticated-user
async fn user(Shared(state): Shared<Db>, headers: HeaderMap) -> Response {
    let s = match enter(&state, "/user") {
        Ok(s) => s,
        Err(r) => return r,
    };
    let login = match bearer(&s, &headers) {
        Ok(l) => l,
        Err(r) => return r,
    };
    let u = s.users.iter().find(|u| u.login == login).unwrap();
    Json(json!({
        "login": u.login, "id": u.id, "node_id": "MDQ6VXNlcjE=", "type": "User", "site_admin": false,
        "name": u.name, "email": u.public_email, "company": null,
    }))
    .into_response()
}

/// https://docs.github.com/en/rest/users/emails#list-email-addresses-for-the-authenticated-user
async fn emails(Shared(state): Shared<Db>, headers: HeaderMap, Query(q): Query<HashMap<String, String>>) -> Response {
    let s = match enter(&state, "/user/emails") {
        Ok(s) => s,
        Err(r) => return r,
    };
    let login = match bearer(&s, &headers) {
        Ok(l) => l,
        Err(r) => return r,
    };
    let u = s.users.iter().find(|u| u.login == login).unwrap();
    let items: Vec<_> = u
        .emails
        .iter()
        .map(|(e, verified, primary)| json!({"email": e, "verified": verified, "primary": primary, "visibility": null}))
        .collect();
    paged(&s, "/api/v3/user/emails", items, &q)
}

/// https://docs.github.com/en/rest/teams/teams#list-teams-for-the-authenticated-user
async fn teams(Shared(state): Shared<Db>, headers: HeaderMap, Query(q): Query<HashMap<String, String>>) -> Response {
    let s = match enter(&state, "/user/teams") {
        Ok(s) => s,
        Err(r) => return r,
    };
    let login = match bearer(&s, &headers) {
        Ok(l) => l,
        Err(r) => return r,
    };
    let items: Vec<_> = s
        .teams
        .iter()
        .filter(|t| t.members.contains(&login))
        .map(|t| json!({"name": t.name, "slug": t.slug, "privacy": "closed", "organization": {"login": t.org}}))
        .collect();
    paged(&s, "/api/v3/user/teams", items, &q)
}

/// https://docs.github.com/en/rest/orgs/orgs#list-organizations-for-the-authenticated-user
async fn orgs(Shared(state): Shared<Db>, headers: HeaderMap, Query(q): Query<HashMap<String, String>>) -> Response {
    let s = match enter(&state, "/user/orgs") {
        Ok(s) => s,
        Err(r) => return r,
    };
    let login = match bearer(&s, &headers) {
        Ok(l) => l,
        Err(r) => return r,
    };
    let items: Vec<_> = s
        .orgs
        .iter()
        .filter(|(_, members)| members.contains(&login))
        .map(|(org, _)| json!({"login": org, "description": null}))
        .collect();
    paged(&s, "/api/v3/user/orgs", items, &q)
}

/// https://docs.github.com/en/rest/orgs/members#check-organization-membership-for-a-user
/// 204 for a member, 404 otherwise.
async fn membership(
    Shared(state): Shared<Db>,
    headers: HeaderMap,
    Path((org, username)): Path<(String, String)>,
) -> Response {
    let s = match enter(&state, "/orgs/{org}/members/{username}") {
        Ok(s) => s,
        Err(r) => return r,
    };
    if let Err(r) = bearer(&s, &headers) {
        return r;
    }
    if s.orgs.get(&org).is_some_and(|m| m.contains(&username)) {
        StatusCode::NO_CONTENT.into_response()
    } else {
        (StatusCode::NOT_FOUND, Json(json!({"message": "User does not exist or is not a member of the organization"})))
            .into_response()
    }
}
