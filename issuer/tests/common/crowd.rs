//! A stand-in for Atlassian Crowd's user-management REST API (the part the `atlassian-crowd` connector
//! uses), under the context path `/crowd`, on an ephemeral loopback port. Like Crowd it insists on the
//! application's credentials in HTTP Basic (401 otherwise) and, for JSON, on `Accept: application/json`
//! (Crowd answers XML by default). Users, passwords, the active flag, group membership and a "down"
//! switch (every request 503) live in [`CrowdState`], which a test changes under the lock.
#![allow(dead_code, unreachable_pub)] // each test binary uses a different part
#![allow(clippy::result_large_err)] // handlers return an early axum Response as the error

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use serde_json::{json, Value};

/// The Crowd application's name (`clientID`).
pub const APP: &str = "tokengate";
/// The Crowd application's password (`clientSecret`).
pub const APP_PASSWORD: &str = "crowd-app-pa55";
/// Crowd's context path.
pub const CONTEXT: &str = "/crowd";

/// A Crowd user.
#[derive(Debug, Clone)]
pub struct CrowdUser {
    pub name: String,
    pub key: String,
    pub password: String,
    pub active: bool,
    pub email: String,
    pub display_name: String,
    /// Direct and nested groups, in the order Crowd lists them.
    pub groups: Vec<String>,
}

impl CrowdUser {
    pub fn new(name: &str, key: &str, password: &str, groups: &[&str]) -> Self {
        Self {
            name: name.into(),
            key: key.into(),
            password: password.into(),
            active: true,
            email: format!("{}@crowd.example", key),
            display_name: format!("Display {name}"),
            groups: groups.iter().map(|g| g.to_string()).collect(),
        }
    }
}

/// What the stand-in serves; the test changes it.
#[derive(Debug, Default)]
pub struct CrowdState {
    pub users: Vec<CrowdUser>,
    /// Every request answers 503.
    pub down: bool,
    /// Requests served (any answer), to check that a request was never made.
    pub requests: usize,
    /// The largest `max-results` a group listing was asked for.
    pub max_results_seen: usize,
}

impl CrowdState {
    /// Crowd user names are case-insensitive.
    pub fn user(&mut self, name: &str) -> Option<&mut CrowdUser> {
        self.users.iter_mut().find(|u| u.name.to_lowercase() == name.to_lowercase())
    }
}

/// A running stand-in.
pub struct Crowd {
    /// `baseURL` for the connector: the server and the context path.
    pub base_url: String,
    pub state: Arc<Mutex<CrowdState>>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for Crowd {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl Crowd {
    pub async fn start(users: Vec<CrowdUser>) -> Self {
        let state = Arc::new(Mutex::new(CrowdState { users, ..Default::default() }));
        let api = format!("{CONTEXT}/rest/usermanagement/1");
        let app = Router::new()
            .route(&format!("{api}/authentication"), post(authentication))
            .route(&format!("{api}/user"), get(user))
            .route(&format!("{api}/user/group/nested"), get(nested_groups))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Crowd { base_url: format!("http://{addr}{CONTEXT}"), state, server }
    }

    /// Changes the state under the lock.
    pub fn with<R>(&self, f: impl FnOnce(&mut CrowdState) -> R) -> R {
        f(&mut self.state.lock().unwrap())
    }
}

type Shared = State<Arc<Mutex<CrowdState>>>;

fn error(status: StatusCode, reason: &str, message: &str) -> Response {
    (status, Json(json!({ "reason": reason, "message": message }))).into_response()
}

/// What every Crowd resource checks first: the outage switch, the application's credentials (Crowd answers
/// 401 "Application failed to authenticate"), and that JSON is accepted.
fn gate(state: &mut CrowdState, headers: &HeaderMap) -> Result<(), Response> {
    state.requests += 1;
    if state.down {
        return Err((StatusCode::SERVICE_UNAVAILABLE, "Crowd is down").into_response());
    }
    let expected =
        format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{APP}:{APP_PASSWORD}")));
    if headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) != Some(expected.as_str()) {
        return Err((StatusCode::UNAUTHORIZED, "Application failed to authenticate").into_response());
    }
    let accepts_json =
        headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).is_some_and(|a| a.contains("application/json"));
    if !accepts_json {
        return Err((StatusCode::NOT_ACCEPTABLE, "this stand-in only speaks JSON").into_response());
    }
    Ok(())
}

/// Crowd's user entity.
fn entity(u: &CrowdUser) -> Value {
    json!({
        "expand": "attributes",
        "link": { "href": format!("http://crowd.invalid/user?username={}", u.name), "rel": "self" },
        "name": u.name,
        "key": u.key,
        "first-name": "First",
        "last-name": "Last",
        "display-name": u.display_name,
        "email": u.email,
        "password": { "link": { "href": "http://crowd.invalid/user/password", "rel": "edit" } },
        "active": u.active,
    })
}

fn username(q: &HashMap<String, String>) -> Result<String, Response> {
    q.get("username").cloned().ok_or_else(|| error(StatusCode::BAD_REQUEST, "ILLEGAL_ARGUMENT", "username is required"))
}

/// `POST /rest/usermanagement/1/authentication?username=…` with `{"value": password}`: the user entity, or
/// 400 with `USER_NOT_FOUND`, `INVALID_USER_AUTHENTICATION` or `INACTIVE_ACCOUNT`.
/// https://docs.atlassian.com/atlassian-crowd/5.1.0/REST/#usermanagement/1/authentication-authenticateUser
async fn authentication(
    State(state): Shared,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let mut s = state.lock().unwrap();
    if let Err(r) = gate(&mut s, &headers) {
        return r;
    }
    let name = match username(&q) {
        Ok(n) => n,
        Err(r) => return r,
    };
    let password = body["value"].as_str().unwrap_or("").to_owned();
    let Some(u) = s.user(&name) else {
        return error(StatusCode::BAD_REQUEST, "USER_NOT_FOUND", &format!("User <{name}> does not exist"));
    };
    if u.password != password {
        return error(
            StatusCode::BAD_REQUEST,
            "INVALID_USER_AUTHENTICATION",
            "Failed to authenticate principal, password was invalid",
        );
    }
    if !u.active {
        return error(StatusCode::BAD_REQUEST, "INACTIVE_ACCOUNT", &format!("Account with name <{name}> is inactive"));
    }
    Json(entity(u)).into_response()
}

/// `GET /rest/usermanagement/1/user?username=…`: the user entity, or 404 `USER_NOT_FOUND`.
/// https://docs.atlassian.com/atlassian-crowd/5.1.0/REST/#usermanagement/1/user-getUser
async fn user(State(state): Shared, Query(q): Query<HashMap<String, String>>, headers: HeaderMap) -> Response {
    let mut s = state.lock().unwrap();
    if let Err(r) = gate(&mut s, &headers) {
        return r;
    }
    let name = match username(&q) {
        Ok(n) => n,
        Err(r) => return r,
    };
    match s.user(&name) {
        Some(u) => Json(entity(u)).into_response(),
        None => error(StatusCode::NOT_FOUND, "USER_NOT_FOUND", &format!("User <{name}> does not exist")),
    }
}

/// `GET /rest/usermanagement/1/user/group/nested?username=…&start-index=…&max-results=…`: one page of the
/// user's direct and nested groups (`max-results` defaults to 1000), or 404 `USER_NOT_FOUND`.
/// https://docs.atlassian.com/atlassian-crowd/5.1.0/REST/#usermanagement/1/user/group/nested-getNestedGroups
async fn nested_groups(State(state): Shared, Query(q): Query<HashMap<String, String>>, headers: HeaderMap) -> Response {
    let mut s = state.lock().unwrap();
    if let Err(r) = gate(&mut s, &headers) {
        return r;
    }
    let name = match username(&q) {
        Ok(n) => n,
        Err(r) => return r,
    };
    let start: usize = q.get("start-index").and_then(|v| v.parse().ok()).unwrap_or(0);
    let max: usize = q.get("max-results").and_then(|v| v.parse().ok()).unwrap_or(1000);
    s.max_results_seen = s.max_results_seen.max(max);
    let Some(u) = s.user(&name) else {
        return error(StatusCode::NOT_FOUND, "USER_NOT_FOUND", &format!("User <{name}> does not exist"));
    };
    let groups: Vec<Value> = u
        .groups
        .iter()
        .skip(start)
        .take(max)
        .map(|g| json!({ "link": { "href": format!("http://crowd.invalid/group?groupname={g}"), "rel": "self" }, "name": g }))
        .collect();
    Json(json!({ "expand": "group", "groups": groups })).into_response()
}
