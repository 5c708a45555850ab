//! A stand-in for a GitLab instance on a loopback port, serving exactly what the `gitlab` connector uses,
//! with the JSON shapes of GitLab's reference: OAuth 2.0 with PKCE and rotating refresh tokens (a refresh
//! token works once; presenting a spent one is `invalid_grant`, and refreshing revokes the previous access
//! token, as GitLab's Doorkeeper does), `/api/v4/user` and `/oauth/userinfo` with its group claims. Its
//! authorize endpoint consents at once as [`State::consenting`]. The test changes users, groups, roles,
//! revocations and the `down` switches through [`GitLab::with`]; every request is counted by path.
#![allow(dead_code, unreachable_pub)] // each test binary uses a different part
#![allow(clippy::result_large_err)] // handlers return their early answers (503, 401) as the error

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use axum::extract::{Query, State as Shared};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use serde_json::json;

pub const CLIENT_ID: &str = "stand-in-gitlab-application";
pub const CLIENT_SECRET: &str = "stand-in-gitlab-secret";

/// A GitLab account and its group memberships.
#[derive(Clone)]
pub struct User {
    pub id: u64,
    pub username: String,
    pub name: String,
    pub email: String,
    /// `active`, `blocked`, `deactivated`…
    pub state: String,
    /// Full paths of the groups the user is a direct member of.
    pub groups: Vec<String>,
    /// Group paths where the user is owner, maintainer, developer.
    pub owner: Vec<String>,
    pub maintainer: Vec<String>,
    pub developer: Vec<String>,
}

pub struct Grant {
    username: String,
    redirect_uri: String,
    challenge: Option<String>,
}

/// Everything the stand-in knows; tests change it between requests.
#[derive(Default)]
pub struct State {
    pub users: Vec<User>,
    /// Who consents at the next authorization.
    pub consenting: String,
    /// Answer the next authorizations with `error=access_denied`.
    pub deny: bool,
    /// Answer every request with 503.
    pub down: bool,
    /// Answer only `/oauth/userinfo` with 503 (the token endpoint still rotates tokens).
    pub userinfo_down: bool,
    /// Users who revoked the application: their tokens and refresh tokens stop working.
    pub revoked: HashSet<String>,
    /// Requests by path.
    pub calls: HashMap<String, usize>,
    /// Refresh grants that presented an already spent refresh token.
    pub reused_refresh_tokens: usize,
    pub codes: HashMap<String, Grant>,
    pub access_tokens: HashMap<String, String>,
    /// Refresh token → (username, spent).
    pub refresh_tokens: HashMap<String, (String, bool)>,
    pub issued: usize,
}

impl State {
    pub fn user_mut(&mut self, username: &str) -> &mut User {
        self.users.iter_mut().find(|u| u.username == username).unwrap()
    }
}

pub struct GitLab {
    /// `http://127.0.0.1:PORT`: the connector's `baseURL`.
    pub url: String,
    pub state: Arc<Mutex<State>>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for GitLab {
    fn drop(&mut self) {
        self.server.abort();
    }
}

type Db = Arc<Mutex<State>>;

impl GitLab {
    pub async fn start(state: State) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let state = Arc::new(Mutex::new(state));
        let app = Router::new()
            .route("/oauth/authorize", get(authorize))
            .route("/oauth/token", post(token))
            .route("/api/v4/user", get(user))
            .route("/oauth/userinfo", get(userinfo))
            .with_state(state.clone());
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        GitLab { url, state, server }
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

fn enter<'a>(state: &'a Db, path: &str) -> Result<std::sync::MutexGuard<'a, State>, Response> {
    let mut s = state.lock().unwrap();
    *s.calls.entry(path.to_owned()).or_default() += 1;
    if s.down || (s.userinfo_down && path == "/oauth/userinfo") {
        return Err((StatusCode::SERVICE_UNAVAILABLE, "502/503: GitLab is not responding").into_response());
    }
    Ok(s)
}

fn bearer(s: &State, headers: &HeaderMap) -> Result<String, Response> {
    let unauthorized = || (StatusCode::UNAUTHORIZED, Json(json!({"message": "401 Unauthorized"}))).into_response();
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(unauthorized)?;
    let username = s.access_tokens.get(token).ok_or_else(unauthorized)?;
    if s.revoked.contains(username) {
        return Err(unauthorized());
    }
    Ok(username.clone())
}

/// https://docs.gitlab.com/ee/api/oauth2.html#authorization-code-with-proof-key-for-code-exchange-pkce
async fn authorize(Shared(state): Shared<Db>, Query(q): Query<HashMap<String, String>>) -> Response {
    let mut s = match enter(&state, "/oauth/authorize") {
        Ok(s) => s,
        Err(r) => return r,
    };
    assert_eq!(q.get("client_id").map(String::as_str), Some(CLIENT_ID));
    assert_eq!(q.get("response_type").map(String::as_str), Some("code"));
    assert_eq!(q.get("scope").map(String::as_str), Some("read_user openid"));
    let redirect_uri = q.get("redirect_uri").cloned().unwrap();
    let state_param = q.get("state").cloned().unwrap();
    let mut back = url::Url::parse(&redirect_uri).unwrap();
    if s.deny {
        back.query_pairs_mut()
            .append_pair("error", "access_denied")
            .append_pair("error_description", "The resource owner or authorization server denied the request.")
            .append_pair("state", &state_param);
    } else {
        s.issued += 1;
        let code = format!("glcode-{}", s.issued);
        let grant = Grant { username: s.consenting.clone(), redirect_uri, challenge: q.get("code_challenge").cloned() };
        s.codes.insert(code.clone(), grant);
        back.query_pairs_mut().append_pair("code", &code).append_pair("state", &state_param);
    }
    (StatusCode::FOUND, [(header::LOCATION, back.to_string())]).into_response()
}

fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    (status, Json(json!({"error": error, "error_description": description}))).into_response()
}

/// https://docs.gitlab.com/ee/api/oauth2.html#authorization-code-with-proof-key-for-code-exchange-pkce
/// (the `authorization_code` and `refresh_token` grants; a refresh token is single use).
async fn token(Shared(state): Shared<Db>, Form(f): Form<HashMap<String, String>>) -> Response {
    let mut s = match enter(&state, "/oauth/token") {
        Ok(s) => s,
        Err(r) => return r,
    };
    if f.get("client_id").map(String::as_str) != Some(CLIENT_ID)
        || f.get("client_secret").map(String::as_str) != Some(CLIENT_SECRET)
    {
        return oauth_error(StatusCode::UNAUTHORIZED, "invalid_client", "Client authentication failed.");
    }
    let invalid_grant = || {
        oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "The provided authorization grant is invalid, expired, revoked, does not match the redirection URI \
             used in the authorization request, or was issued to another client.",
        )
    };
    let username = match f.get("grant_type").map(String::as_str) {
        Some("authorization_code") => {
            let Some(grant) = f.get("code").and_then(|c| s.codes.remove(c)) else { return invalid_grant() };
            if f.get("redirect_uri") != Some(&grant.redirect_uri) {
                return invalid_grant();
            }
            if let Some(challenge) = &grant.challenge {
                let verifier = f.get("code_verifier").map(String::as_str).unwrap_or("");
                let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, verifier.as_bytes());
                if &B64.encode(digest.as_ref()) != challenge {
                    return invalid_grant();
                }
            }
            grant.username
        }
        Some("refresh_token") => {
            let presented = f.get("refresh_token").cloned().unwrap_or_default();
            let Some((username, spent)) = s.refresh_tokens.get(&presented).cloned() else { return invalid_grant() };
            if spent {
                s.reused_refresh_tokens += 1;
                return invalid_grant();
            }
            if s.revoked.contains(&username) {
                return invalid_grant();
            }
            s.refresh_tokens.insert(presented, (username.clone(), true));
            // The access tokens issued before are revoked by the refresh.
            s.access_tokens.retain(|_, u| u != &username);
            username
        }
        _ => return oauth_error(StatusCode::BAD_REQUEST, "unsupported_grant_type", "unsupported grant type"),
    };
    s.issued += 1;
    let (access, refresh) = (format!("glpat-access-{}", s.issued), format!("glrt-refresh-{}", s.issued));
    s.access_tokens.insert(access.clone(), username.clone());
    s.refresh_tokens.insert(refresh.clone(), (username, false));
    Json(json!({
        "access_token": access, "token_type": "Bearer", "expires_in": 7200,
        "refresh_token": refresh, "scope": "read_user openid", "created_at": 1_700_000_000,
    }))
    .into_response()
}

/// https://docs.gitlab.com/ee/api/users.html#list-current-user
async fn user(Shared(state): Shared<Db>, headers: HeaderMap) -> Response {
    let s = match enter(&state, "/api/v4/user") {
        Ok(s) => s,
        Err(r) => return r,
    };
    let username = match bearer(&s, &headers) {
        Ok(u) => u,
        Err(r) => return r,
    };
    let u = s.users.iter().find(|u| u.username == username).unwrap();
    Json(json!({
        "id": u.id, "username": u.username, "name": u.name, "state": u.state, "email": u.email,
        "public_email": null, "avatar_url": null, "web_url": format!("https://gitlab.example.com/{}", u.username),
        "is_admin": false,
    }))
    .into_response()
}

/// https://docs.gitlab.com/ee/integration/openid_connect_provider.html#shared-information
/// (`groups`, and the `https://gitlab.org/claims/groups/{owner,maintainer,developer}` claims).
async fn userinfo(Shared(state): Shared<Db>, headers: HeaderMap) -> Response {
    let s = match enter(&state, "/oauth/userinfo") {
        Ok(s) => s,
        Err(r) => return r,
    };
    let username = match bearer(&s, &headers) {
        Ok(u) => u,
        Err(r) => return r,
    };
    let u = s.users.iter().find(|u| u.username == username).unwrap();
    Json(json!({
        "sub": u.id.to_string(), "name": u.name, "nickname": u.username, "preferred_username": u.username,
        "email": u.email, "email_verified": true,
        "groups": u.groups,
        "https://gitlab.org/claims/groups/owner": u.owner,
        "https://gitlab.org/claims/groups/maintainer": u.maintainer,
        "https://gitlab.org/claims/groups/developer": u.developer,
    }))
    .into_response()
}
