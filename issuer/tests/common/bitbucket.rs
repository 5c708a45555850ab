//! A stand-in for Bitbucket Cloud (the part the `bitbucket-cloud` connector uses) on an ephemeral loopback
//! port: the OAuth site (`/site/oauth2/…`, the connector's `authURL` is the server's root) and the REST API
//! 2.0 (`/2.0/…`, its `apiURL`). The authorize endpoint stands for a user who consents at once: it sends
//! the browser straight back to `redirect_uri` with a `code` and the `state` unchanged, as
//! [`BitbucketState::login_as`]. Access and refresh tokens are random per grant; a refresh grant rotates
//! the refresh token (the old one stops working), so a connector that drops the new one fails its next
//! refresh. Users, emails, workspace memberships, revoked tokens and a "down" switch (every request 503)
//! live in [`BitbucketState`], which a test changes under the lock. Listings are paged small (emails one
//! per page, workspaces two) through the `next` URL.
#![allow(dead_code, unreachable_pub)] // each test binary uses a different part
#![allow(clippy::result_large_err)] // handlers return an early axum Response as the error

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use base64::Engine;
use serde_json::{json, Value};

/// The OAuth consumer's key.
pub const CLIENT_ID: &str = "bb-consumer-key";
/// The OAuth consumer's secret.
pub const CLIENT_SECRET: &str = "bb-consumer-secret";

/// An email address of a user.
#[derive(Debug, Clone)]
pub struct BbEmail {
    pub email: String,
    pub primary: bool,
    pub confirmed: bool,
}

/// A Bitbucket account.
#[derive(Debug, Clone)]
pub struct BbUser {
    /// `{…}`-wrapped UUID, Bitbucket's stable id.
    pub uuid: String,
    pub username: String,
    pub display_name: String,
    pub emails: Vec<BbEmail>,
    /// `(workspace slug, permission)`: `owner`, `collaborator` or `member`.
    pub workspaces: Vec<(String, String)>,
}

impl BbUser {
    pub fn new(username: &str, uuid: &str, workspaces: &[(&str, &str)]) -> Self {
        Self {
            uuid: uuid.into(),
            username: username.into(),
            display_name: format!("Display {username}"),
            // An unconfirmed primary-looking address first and the primary confirmed one on the next page.
            emails: vec![
                BbEmail { email: format!("{username}@old.example"), primary: false, confirmed: true },
                BbEmail { email: format!("{username}@bitbucket.example"), primary: true, confirmed: true },
            ],
            workspaces: workspaces.iter().map(|(s, p)| (s.to_string(), p.to_string())).collect(),
        }
    }
}

/// What the stand-in serves; the test changes it.
#[derive(Debug, Default)]
pub struct BitbucketState {
    pub users: Vec<BbUser>,
    /// The username the authorize endpoint signs in (the person at the browser).
    pub login_as: String,
    /// Every request answers 503.
    pub down: bool,
    /// Only the REST API answers 503 (the OAuth endpoints work): a partial outage.
    pub api_down: bool,
    /// Authorization codes: code → (username, redirect_uri).
    pub codes: HashMap<String, (String, String)>,
    /// Live access tokens → username.
    pub access_tokens: HashMap<String, String>,
    /// Live refresh tokens → username. Removing one revokes it.
    pub refresh_tokens: HashMap<String, String>,
    /// Refresh grants answered with new tokens.
    pub refresh_grants: usize,
    /// `http://127.0.0.1:port`, for `next` URLs.
    pub base: String,
    counter: u64,
}

impl BitbucketState {
    pub fn user(&mut self, username: &str) -> Option<&mut BbUser> {
        self.users.iter_mut().find(|u| u.username == username)
    }

    /// Revokes every token of `username` (the user removed the app's access).
    pub fn revoke(&mut self, username: &str) {
        self.access_tokens.retain(|_, u| u != username);
        self.refresh_tokens.retain(|_, u| u != username);
    }

    fn mint(&mut self, prefix: &str) -> String {
        self.counter += 1;
        format!("{prefix}-{}-{:016x}", self.counter, rand::random::<u64>())
    }
}

/// A running stand-in.
pub struct Bitbucket {
    /// The server's root: the connector's `authURL`.
    pub url: String,
    pub state: Arc<Mutex<BitbucketState>>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for Bitbucket {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl Bitbucket {
    pub async fn start(users: Vec<BbUser>) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let login_as = users.first().map(|u| u.username.clone()).unwrap_or_default();
        let state = Arc::new(Mutex::new(BitbucketState { users, login_as, base: url.clone(), ..Default::default() }));
        let app = Router::new()
            .route("/site/oauth2/authorize", get(authorize))
            .route("/site/oauth2/access_token", post(access_token))
            .route("/2.0/user", get(user))
            .route("/2.0/user/emails", get(emails))
            .route("/2.0/user/permissions/workspaces", get(workspaces))
            .with_state(state.clone());
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Bitbucket { url, state, server }
    }

    /// The connector's `apiURL`.
    pub fn api_url(&self) -> String {
        format!("{}/2.0", self.url)
    }

    /// Changes the state under the lock.
    pub fn with<R>(&self, f: impl FnOnce(&mut BitbucketState) -> R) -> R {
        f(&mut self.state.lock().unwrap())
    }
}

type Shared = State<Arc<Mutex<BitbucketState>>>;

fn down() -> Response {
    (StatusCode::SERVICE_UNAVAILABLE, "Bitbucket is down").into_response()
}

fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    (status, Json(json!({ "error": error, "error_description": description }))).into_response()
}

/// `GET /site/oauth2/authorize?client_id=…&response_type=code&redirect_uri=…&state=…`: the consenting
/// user is sent back to `redirect_uri` with `code` and `state`.
/// https://developer.atlassian.com/cloud/bitbucket/oauth-2/ (Authorization Code Grant, step 1)
async fn authorize(State(state): Shared, Query(q): Query<HashMap<String, String>>) -> Response {
    let mut s = state.lock().unwrap();
    if s.down {
        return down();
    }
    if q.get("client_id").map(String::as_str) != Some(CLIENT_ID)
        || q.get("response_type").map(String::as_str) != Some("code")
    {
        return (StatusCode::BAD_REQUEST, "Invalid client_id or response_type").into_response();
    }
    let Some(redirect_uri) = q.get("redirect_uri").cloned() else {
        return (StatusCode::BAD_REQUEST, "redirect_uri is required by this stand-in").into_response();
    };
    let code = s.mint("code");
    let user = s.login_as.clone();
    s.codes.insert(code.clone(), (user, redirect_uri.clone()));
    let mut back = url::Url::parse(&redirect_uri).unwrap();
    back.query_pairs_mut().append_pair("code", &code);
    if let Some(st) = q.get("state") {
        back.query_pairs_mut().append_pair("state", st);
    }
    (StatusCode::FOUND, [(header::LOCATION, back.to_string())]).into_response()
}

/// `POST /site/oauth2/access_token` (client credentials in HTTP Basic), `grant_type=authorization_code`
/// or `refresh_token`: `{access_token, token_type, expires_in, refresh_token, scopes}`, or 400
/// `invalid_grant` / 401 `invalid_client`.
/// https://developer.atlassian.com/cloud/bitbucket/oauth-2/ (steps 2 and "Refresh tokens")
async fn access_token(State(state): Shared, headers: HeaderMap, Form(form): Form<HashMap<String, String>>) -> Response {
    let mut s = state.lock().unwrap();
    if s.down {
        return down();
    }
    let expected =
        format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{CLIENT_ID}:{CLIENT_SECRET}")));
    if headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) != Some(expected.as_str()) {
        return oauth_error(StatusCode::UNAUTHORIZED, "invalid_client", "Invalid OAuth client credentials");
    }
    let username = match form.get("grant_type").map(String::as_str) {
        Some("authorization_code") => {
            let Some((user, redirect_uri)) = form.get("code").and_then(|c| s.codes.remove(c)) else {
                return oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_grant",
                    "The authorization code is invalid or expired.",
                );
            };
            if form.get("redirect_uri").is_some_and(|r| *r != redirect_uri) {
                return oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", "redirect_uri does not match");
            }
            user
        }
        Some("refresh_token") => {
            let Some(user) = form.get("refresh_token").and_then(|t| s.refresh_tokens.remove(t)) else {
                return oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", "Invalid refresh_token");
            };
            s.refresh_grants += 1;
            user
        }
        _ => return oauth_error(StatusCode::BAD_REQUEST, "unsupported_grant_type", "unsupported grant type"),
    };
    if s.user(&username).is_none() {
        return oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", "The account no longer exists");
    }
    let access = s.mint("at");
    let refresh = s.mint("rt");
    s.access_tokens.insert(access.clone(), username.clone());
    s.refresh_tokens.insert(refresh.clone(), username);
    Json(json!({
        "access_token": access,
        "scopes": "account email",
        "expires_in": 7200,
        "refresh_token": refresh,
        "token_type": "bearer",
    }))
    .into_response()
}

/// The user behind the request's bearer token, or the error answer.
fn authenticated(s: &mut BitbucketState, headers: &HeaderMap) -> Result<BbUser, Response> {
    if s.down || s.api_down {
        return Err(down());
    }
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    let unauthorized = || {
        (StatusCode::UNAUTHORIZED, Json(json!({"type": "error", "error": {"message": "Access token expired."}})))
            .into_response()
    };
    let Some(username) = s.access_tokens.get(token).cloned() else { return Err(unauthorized()) };
    s.user(&username).cloned().ok_or_else(unauthorized)
}

/// One page of a listing: `values`, `page`, `pagelen`, `size` and `next` (absent on the last page).
fn page(s: &BitbucketState, path: &str, q: &HashMap<String, String>, all: Vec<Value>, pagelen: usize) -> Value {
    let page: usize = q.get("page").and_then(|p| p.parse().ok()).unwrap_or(1).max(1);
    let values: Vec<Value> = all.iter().skip((page - 1) * pagelen).take(pagelen).cloned().collect();
    let mut body = json!({ "pagelen": pagelen, "page": page, "size": all.len(), "values": values });
    if page * pagelen < all.len() {
        body["next"] = json!(format!("{}{path}?page={}", s.base, page + 1));
    }
    body
}

/// `GET /2.0/user`: the current user.
/// https://developer.atlassian.com/cloud/bitbucket/rest/api-group-users/#api-user-get
async fn user(State(state): Shared, headers: HeaderMap) -> Response {
    let mut s = state.lock().unwrap();
    match authenticated(&mut s, &headers) {
        Ok(u) => Json(json!({
            "type": "user",
            "uuid": u.uuid,
            "username": u.username,
            "nickname": u.username,
            "display_name": u.display_name,
            "account_id": format!("557058:{}", u.username),
            "account_status": "active",
        }))
        .into_response(),
        Err(r) => r,
    }
}

/// `GET /2.0/user/emails`: the user's addresses, paged (one per page here).
/// https://developer.atlassian.com/cloud/bitbucket/rest/api-group-users/#api-user-emails-get
async fn emails(State(state): Shared, headers: HeaderMap, Query(q): Query<HashMap<String, String>>) -> Response {
    let mut s = state.lock().unwrap();
    let u = match authenticated(&mut s, &headers) {
        Ok(u) => u,
        Err(r) => return r,
    };
    let all = u
        .emails
        .iter()
        .map(|e| json!({ "type": "email", "email": e.email, "is_primary": e.primary, "is_confirmed": e.confirmed }))
        .collect();
    Json(page(&s, "/2.0/user/emails", &q, all, 1)).into_response()
}

/// `GET /2.0/user/permissions/workspaces`: the workspaces the user can access and the permission in each
/// (`owner`, `collaborator`, `member`), paged (two per page here).
/// https://developer.atlassian.com/cloud/bitbucket/rest/api-group-workspaces/#api-user-permissions-workspaces-get
async fn workspaces(State(state): Shared, headers: HeaderMap, Query(q): Query<HashMap<String, String>>) -> Response {
    let mut s = state.lock().unwrap();
    let u = match authenticated(&mut s, &headers) {
        Ok(u) => u,
        Err(r) => return r,
    };
    let all = u
        .workspaces
        .iter()
        .map(|(slug, permission)| {
            json!({
                "type": "workspace_membership",
                "permission": permission,
                "user": { "type": "user", "uuid": u.uuid, "display_name": u.display_name },
                "workspace": { "type": "workspace", "slug": slug, "name": slug.to_uppercase(), "uuid": format!("{{ws-{slug}}}") },
            })
        })
        .collect();
    Json(page(&s, "/2.0/user/permissions/workspaces", &q, all, 2)).into_response()
}
