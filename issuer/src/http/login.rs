//! Signing in once `/auth` has stored the request: the login page (password connectors as forms, callback
//! connectors as buttons), `POST /login` with brute-force throttling, `GET /auth/{connector}` (Dex's route:
//! the chosen connector), `GET /callback` (one for every callback connector; the `state` names the
//! connector and the pending login), and what every successful login ends with: identity policy, then the
//! authorization code (RFC 6749 §4.1.2) or the device approval.
//!
//! Connector failures become pages here, once: an unreachable upstream a 503 with `Retry-After`, a refusal
//! (by the upstream or a policy) a 403 with the reason and an audit event, an upstream error a 400 that says
//! who refused and what to try.

use std::collections::HashMap;

use aws_lc_rs::hmac;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Redirect, Response};
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;

use super::authorize::{csrf_cookie_ok, csrf_failed, csrf_ok};
use super::{client_ip, error_page, page, storage_failure, Form, Peer};
use crate::connector::{CallbackRequest, Connector, ConnectorError, Login};
use crate::metrics::Metrics;
use crate::oauth::{redirect_with, OOB_REDIRECT_URI};
use crate::password_attempt::{self, Attempt, AttemptError, MAX_LOGIN_CHARS};
use crate::state::AppState;
use crate::storage::{AuthCode, AuthRequest, Identity, StorageError};
use crate::token::random_b64;

/// A password connector's form on the login page.
struct PasswordForm<'a> {
    id: &'a str,
    name: &'a str,
    prompt: &'a str,
}

/// A callback connector's button on the login page.
struct Button<'a> {
    name: &'a str,
    href: String,
}

#[derive(askama::Template)]
#[template(path = "login.html")]
struct LoginPage<'a> {
    client_name: &'a str,
    /// The client's `logoURL`, as a link.
    client_logo: Option<String>,
    /// `frontend.extra.loginHint`.
    hint: Option<&'a str>,
    action: String,
    req: &'a str,
    csrf: &'a str,
    forms: Vec<PasswordForm<'a>>,
    buttons: Vec<Button<'a>>,
    /// The connector whose form was posted (its login is filled in and its error shown).
    selected: &'a str,
    login: &'a str,
    error: Option<String>,
    issuer: &'a str,
    /// For a device login: the user code to compare, and where "Deny" posts.
    device: Option<(String, String)>,
    /// Whether "Remember me" starts checked (`sessions.rememberMeCheckedByDefault`).
    remember_me: bool,
}

/// The connectors a pending login may use: the client's `allowedConnectors`, narrowed to `connector_id`
/// when `/auth` named one. A client deleted since the login started may use none; a storage failure is
/// the page to show.
async fn usable<'a>(state: &'a AppState, request: &AuthRequest) -> Result<Vec<&'a Connector>, Response> {
    let Some(client) = state.client(&request.client_id).await.map_err(storage_failure)? else { return Ok(vec![]) };
    Ok(state
        .connectors
        .iter()
        .filter(|c| client.allows_connector(&c.id))
        .filter(|c| request.connector_id.as_deref().is_none_or(|only| only == c.id))
        .collect())
}

async fn login_form(
    state: &AppState,
    status: StatusCode,
    request: &AuthRequest,
    only: Option<&str>,
    selected: &str,
    login: &str,
    error: Option<String>,
) -> Response {
    let client = match state.client(&request.client_id).await {
        Ok(c) => c,
        Err(e) => return storage_failure(e),
    };
    let client_name = client.as_ref().map_or_else(|| request.client_id.clone(), |c| c.name.clone());
    let client_name = client_name.as_str();
    let prefix = state.config.path_prefix();
    let client_logo =
        client.as_ref().and_then(|c| c.logo_url.as_deref()).map(|l| crate::frontend::image_href(&prefix, l));
    let connectors: Vec<&Connector> = match usable(state, request).await {
        Ok(v) => v.into_iter().filter(|c| only.is_none_or(|o| o == c.id)).collect(),
        Err(resp) => return resp,
    };
    let forms = connectors
        .iter()
        .filter_map(|c| c.prompt().map(|prompt| PasswordForm { id: &c.id, name: &c.name, prompt }))
        .collect();
    let buttons = connectors
        .iter()
        .filter(|c| matches!(c.login, Login::Callback(_)))
        .map(|c| Button { name: &c.name, href: format!("{prefix}/auth/{}?req={}", c.id, request.id) })
        .collect();
    let t = LoginPage {
        client_name,
        client_logo,
        hint: state.config.frontend.login_hint(),
        action: format!("{prefix}/login"),
        req: &request.id,
        csrf: &request.csrf_token,
        forms,
        buttons,
        selected,
        login,
        error,
        issuer: state.config.issuer.as_str().trim_end_matches('/'),
        device: request
            .device
            .as_ref()
            .map(|d| (super::device::display_user_code(&d.user_code), format!("{prefix}/device/deny"))),
        remember_me: state.config.sessions.remember_me_checked_by_default,
    };
    page(status, &t)
}

pub(crate) async fn pending_request(state: &AppState, id: Option<&str>) -> Result<AuthRequest, Response> {
    let expired = || {
        error_page(
            StatusCode::BAD_REQUEST,
            "Login expired",
            "This login is unknown or has expired. Go back to the application and start again.",
        )
    };
    let Some(id) = id else { return Err(expired()) };
    match state.storage.get_auth_request(id).await {
        Ok(r) if r.expiry >= state.clock.now() => Ok(r),
        Ok(_) | Err(StorageError::NotFound) => Err(expired()),
        Err(e) => Err(storage_failure(e)),
    }
}

/// `GET /login?req=…`: the connectors to choose from; with exactly one callback connector and no password
/// form, straight to it.
pub async fn login_page(State(state): State<AppState>, uri: Uri) -> Response {
    let form = Form::from_query(uri.query()).unwrap_or_else(|_| Form(Default::default()));
    let request = match pending_request(&state, form.get("req")).await {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    let usable = match usable(&state, &request).await {
        Ok(v) => v,
        Err(resp) => return resp,
    };
    match usable.as_slice() {
        [] => error_page(
            StatusCode::FORBIDDEN,
            "No way to sign in",
            "This application may not use any of the identity provider's sign-in methods. Ask its administrator.",
        ),
        [only] if matches!(only.login, Login::Callback(_)) && !state.config.oauth2.always_show_login_screen => {
            let only = (*only).clone();
            redirect_upstream(&state, &request, &only).await
        }
        _ => login_form(&state, StatusCode::OK, &request, None, "", "", None).await,
    }
}

/// `GET /auth/{connector}`: with `req`, sign in to that pending login through the connector (Dex's
/// connector route); without it, an authorization request that skips the choice (like `connector_id`).
pub async fn connector_route(
    State(state): State<AppState>,
    peer: Peer,
    Path(connector_id): Path<String>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let form = match Form::from_query(uri.query()) {
        Ok(f) => f,
        Err(e) => return error_page(StatusCode::BAD_REQUEST, "Bad request", e),
    };
    if form.get("req").is_none() {
        let mut params = form.0.clone();
        params.insert("connector_id".into(), connector_id);
        return super::authorize::start(&state, &peer, &headers, &Form(params)).await;
    }
    let request = match pending_request(&state, form.get("req")).await {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    let usable = match usable(&state, &request).await {
        Ok(v) => v,
        Err(resp) => return resp,
    };
    let Some(connector) = usable.into_iter().find(|c| c.id == connector_id).cloned() else {
        return error_page(
            StatusCode::FORBIDDEN,
            "Sign-in method not available",
            "This application may not use that sign-in method. Go back and choose another.",
        );
    };
    match connector.login {
        Login::Callback(_) => redirect_upstream(&state, &request, &connector).await,
        Login::Password(_) => login_form(&state, StatusCode::OK, &request, Some(&connector.id), "", "", None).await,
    }
}

/// The values a callback login sends upstream and checks on return, derived from the server key, the
/// pending login and the connector (so no state is stored and any replica takes the callback).
fn callback_request(state: &AppState, request: &AuthRequest, connector_id: &str) -> CallbackRequest {
    let key = hmac::Key::new(hmac::HMAC_SHA256, &state.server_key);
    let derive = |purpose: &str| {
        B64.encode(hmac::sign(&key, format!("{purpose}\0{}\0{connector_id}", request.id).as_bytes()).as_ref())
    };
    CallbackRequest {
        state: format!("{}.{connector_id}", request.id),
        nonce: derive("nonce"),
        pkce_verifier: derive("pkce"),
        offline_access: request.scopes.iter().any(|s| s == "offline_access"),
    }
}

async fn redirect_upstream(state: &AppState, request: &AuthRequest, connector: &Connector) -> Response {
    let Login::Callback(c) = &connector.login else {
        return login_form(state, StatusCode::OK, request, Some(&connector.id), "", "", None).await;
    };
    match c.login_url(&callback_request(state, request, &connector.id)).await {
        Ok(url) => Redirect::to(&url).into_response(),
        Err(e) => connector_failure(state, request, connector, e, "-"),
    }
}

/// `GET /callback`: the upstream sends the browser back here with `state` (`<login>.<connector>`).
pub async fn callback(State(state): State<AppState>, peer: Peer, uri: Uri, headers: HeaderMap) -> Response {
    let query: HashMap<String, String> = match serde_urlencoded::from_str(uri.query().unwrap_or("")) {
        Ok(q) => q,
        Err(_) => return error_page(StatusCode::BAD_REQUEST, "Bad request", "The sign-in response is malformed."),
    };
    let Some((req_id, connector_id)) = query.get("state").and_then(|s| s.split_once('.')) else {
        return error_page(
            StatusCode::BAD_REQUEST,
            "Sign-in not recognised",
            "This sign-in response does not belong to a sign-in started here (state is missing). Go back to the \
             application and start again.",
        );
    };
    let request = match pending_request(&state, Some(req_id)).await {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    // Login CSRF: the callback must come back to the browser that started the login.
    if !csrf_cookie_ok(&headers, &request) {
        return csrf_failed();
    }
    let usable = match usable(&state, &request).await {
        Ok(v) => v,
        Err(resp) => return resp,
    };
    let Some(connector) = usable.into_iter().find(|c| c.id == connector_id).cloned() else {
        return error_page(StatusCode::BAD_REQUEST, "Sign-in not recognised", "This sign-in method is not available.");
    };
    let Login::Callback(c) = &connector.login else {
        return error_page(StatusCode::BAD_REQUEST, "Sign-in not recognised", "This sign-in method uses a password.");
    };
    let ip = client_ip(&state, &peer, &headers).map_or_else(|| "-".to_owned(), |i| i.to_string());
    let started = std::time::Instant::now();
    let result = c.handle_callback(&callback_request(&state, &request, &connector.id), &query).await;
    state.metrics.observe_connector(&connector.id, "login", &result, started.elapsed());
    let remember_me = state.config.sessions.remember_me_checked_by_default;
    match result {
        Ok(identity) => {
            let start = crate::session::Start::Login { headers: &headers, remember_me, identity };
            finish(&state, request, &connector, &ip, start).await
        }
        Err(e) => connector_failure(&state, &request, &connector, e, &ip),
    }
}

/// Parses a form posted from the login page and finds its pending login, checking the CSRF binding: the
/// common start of every action the login page offers.
pub(super) async fn posted_login_form(
    state: &AppState,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<(Form, AuthRequest), Response> {
    let form = Form::parse(headers, body).map_err(|e| error_page(StatusCode::BAD_REQUEST, "Bad request", e))?;
    let request = pending_request(state, form.get("req")).await?;
    if !csrf_ok(headers, &form, &request) {
        return Err(csrf_failed());
    }
    Ok((form, request))
}

/// What a posted password form (`POST /login`) says, read the same way whichever password connector
/// checks it. The CSRF binding and the pending login are checked before, by `posted_login_form`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PasswordLogin<'a> {
    /// The password connector chosen (`connector`); the first usable one when absent.
    pub connector: Option<&'a str>,
    /// The login name as typed, without surrounding whitespace.
    pub login: &'a str,
    /// The password, exactly as typed.
    pub password: &'a str,
    /// `only`: the page showed this connector alone, and shows it alone again on a retry.
    pub only: bool,
    /// `remember_me`: the session outlives the browser (`crate::session`).
    pub remember_me: bool,
}

/// Why a posted password form is refused before any connector sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LoginFormError {
    /// The login name or the password is empty.
    #[error("login and password are required")]
    Missing,
    /// The login name is longer than [`MAX_LOGIN_CHARS`] characters.
    #[error("the login is too long")]
    TooLong,
}

impl<'a> PasswordLogin<'a> {
    /// Reads the fields of `form`; what is absent is empty or `false`.
    pub fn parse(form: &'a Form) -> Self {
        PasswordLogin {
            connector: form.get("connector"),
            login: form.get("login").unwrap_or("").trim(),
            password: form.get("password").unwrap_or(""),
            only: form.get("only").is_some(),
            remember_me: form.get("remember_me").is_some(),
        }
    }

    /// Checks what can be checked without a connector.
    pub fn validate(&self) -> Result<(), LoginFormError> {
        if self.login.is_empty() || self.password.is_empty() {
            return Err(LoginFormError::Missing);
        }
        if self.login.chars().count() > MAX_LOGIN_CHARS {
            return Err(LoginFormError::TooLong);
        }
        Ok(())
    }
}

/// `POST /login`: checks the CSRF binding and the throttle, then the password with the chosen password
/// connector (`connector`; the first usable one when absent), then finishes the login.
pub async fn login(State(state): State<AppState>, peer: Peer, headers: HeaderMap, body: Bytes) -> Response {
    let (form, request) = match posted_login_form(&state, &headers, &body).await {
        Ok(v) => v,
        Err(resp) => return resp,
    };
    let fields = PasswordLogin::parse(&form);
    let wanted = fields.connector;
    let usable = match usable(&state, &request).await {
        Ok(v) => v,
        Err(resp) => return resp,
    };
    let chosen = usable.into_iter().find_map(|c| match &c.login {
        Login::Password(p) if wanted.is_none_or(|w| w == c.id) => Some((c.clone(), p.clone())),
        _ => None,
    });
    let Some((connector, passwords)) = chosen else {
        return error_page(
            StatusCode::FORBIDDEN,
            "Sign-in method not available",
            "This application may not use that sign-in method. Go back and choose another.",
        );
    };
    let PasswordLogin { login, password, .. } = fields;
    let only = fields.only.then_some(connector.id.as_str());
    let again = async |status: StatusCode, error: String| {
        login_form(&state, status, &request, only, &connector.id, login, Some(error)).await
    };
    match fields.validate() {
        Ok(()) => {}
        Err(LoginFormError::Missing) => {
            return again(
                StatusCode::BAD_REQUEST,
                format!("Enter your {} and password.", passwords.prompt().to_lowercase()),
            )
            .await
        }
        Err(LoginFormError::TooLong) => {
            return again(StatusCode::BAD_REQUEST, format!("That {} is too long.", passwords.prompt().to_lowercase()))
                .await
        }
    }

    let ip = client_ip(&state, &peer, &headers);
    let ip_text = ip.map_or_else(|| "-".to_owned(), |i| i.to_string());
    let attempt = Attempt {
        connector: &connector,
        passwords: passwords.as_ref(),
        login,
        password,
        ip: &ip_text,
        client_id: &request.client_id,
    };
    let identity = match password_attempt::check(&state, attempt).await {
        Ok(identity) => identity,
        Err(AttemptError::Throttled { retry_after }) => {
            let mut r = again(
                StatusCode::TOO_MANY_REQUESTS,
                format!("Too many sign-in attempts. Try again in {retry_after} seconds."),
            )
            .await;
            r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
            return r;
        }
        Err(AttemptError::Invalid) => {
            return again(
                StatusCode::UNAUTHORIZED,
                format!("Invalid {} or password.", passwords.prompt().to_lowercase()),
            )
            .await
        }
        Err(AttemptError::Connector(e)) => return connector_failure(&state, &request, &connector, e, &ip_text),
        Err(AttemptError::Storage(e)) => return storage_failure(e),
    };
    let start = crate::session::Start::Login { headers: &headers, remember_me: fields.remember_me, identity };
    finish(&state, request, &connector, &ip_text, start).await
}

/// A connector failure as a page: 503 for an unreachable upstream, 403 for a refusal, 400 otherwise.
fn connector_failure(
    state: &AppState,
    request: &AuthRequest,
    connector: &Connector,
    e: ConnectorError,
    ip: &str,
) -> Response {
    let name = &connector.name;
    match e {
        ConnectorError::Unavailable(why) | ConnectorError::Interrupted { why, .. } => {
            tracing::warn!(target: "audit", event = "connector_failure", connector = %connector.id, reason = "unavailable", error = %why, client = %request.client_id, ip);
            let mut r = error_page(
                StatusCode::SERVICE_UNAVAILABLE,
                "Sign-in unavailable",
                format!("{name} did not answer. Try again in a moment; if this persists, tell the administrator."),
            );
            r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(crate::oauth::RETRY_AFTER_SECS));
            r
        }
        ConnectorError::Refused { reason } => {
            Metrics::count(&state.metrics.logins, "refused");
            tracing::warn!(target: "audit", event = "login", result = "refused", connector = %connector.id, reason = %reason, client = %request.client_id, ip);
            error_page(
                StatusCode::FORBIDDEN,
                "Access denied",
                format!("{reason}. If you should have access, ask the administrator of {name}."),
            )
        }
        ConnectorError::Upstream(why) => {
            tracing::warn!(target: "audit", event = "connector_failure", connector = %connector.id, reason = "upstream_error", error = %why, client = %request.client_id, ip);
            error_page(
                StatusCode::BAD_REQUEST,
                "Sign-in failed",
                format!("{name} did not complete the sign-in ({why}). Go back to the application and try again."),
            )
        }
        ConnectorError::InvalidCallback(why) => error_page(
            StatusCode::BAD_REQUEST,
            "Sign-in not recognised",
            format!("{why}. Go back to the application and start again."),
        ),
    }
}

/// `/auth` with a browser session that may answer it (`crate::session::resume`): the code at once, as a
/// login would issue it, in that session.
pub(crate) async fn resume(
    state: &AppState,
    request: AuthRequest,
    connector: &Connector,
    session: &crate::storage::Session,
    ip: &str,
) -> Response {
    finish(state, request, connector, ip, crate::session::Start::Resumed(session)).await
}

/// Every successful login ends here (and every sign-in through a browser session, whose request was never
/// stored): the connector's and the client's policy, then the browser session and the code (or the device
/// approval).
async fn finish(
    state: &AppState,
    request: AuthRequest,
    connector: &Connector,
    ip: &str,
    start: crate::session::Start<'_>,
) -> Response {
    let identity = match &start {
        crate::session::Start::Login { identity, .. } => identity.clone(),
        crate::session::Start::Resumed(s) => s.identity.clone(),
    };
    let client = match state.client(&request.client_id).await {
        Ok(c) => c,
        Err(e) => return storage_failure(e),
    };
    let identity = match crate::connector::policy::admit(connector, client.as_deref(), identity) {
        Ok(i) => i,
        Err(reason) => return connector_failure(state, &request, connector, ConnectorError::Refused { reason }, ip),
    };
    if let crate::session::Start::Login { .. } = start {
        match state.storage.delete_auth_request(&request.id).await {
            Ok(()) => {}
            Err(StorageError::NotFound) => {
                return error_page(
                    StatusCode::BAD_REQUEST,
                    "Login expired",
                    "This login was already completed. Go back to the application.",
                )
            }
            Err(e) => return storage_failure(e),
        }
        Metrics::count(&state.metrics.logins, "success");
        tracing::info!(target: "audit", event = "login", result = "success", user = %identity.email, sub = %state.config.subject(&identity), connector = %connector.id, client = %request.client_id, ip);
        if let Some(device) = &request.device {
            return super::device::approve(state, device, identity, ip).await;
        }
    }
    // Single sign-on: the browser session this code is issued in (`crate::session`).
    let signed_in = match crate::session::signed_in(state, &request.client_id, start).await {
        Ok(s) => s,
        Err(e) => return storage_failure(e),
    };
    let now = state.clock.now();
    let mut r = if request.response_types.iter().any(|t| t != "code") {
        front_channel_tokens(state, &request, identity, &signed_in, now).await
    } else {
        match store_code(state, &request, identity, &signed_in, now).await {
            Ok(code_id) => {
                let mut params = vec![("code", code_id.as_str())];
                if let Some(s) = request.state.as_deref() {
                    params.push(("state", s));
                }
                if request.redirect_uri == OOB_REDIRECT_URI {
                    let client = client.map_or(request.client_id.clone(), |c| c.name.clone());
                    page(StatusCode::OK, &OobPage { client, code: code_id.clone() })
                } else {
                    // 303: the browser follows with a GET, never re-posting the password.
                    let location = redirect_with(&request.redirect_uri, &params);
                    (StatusCode::SEE_OTHER, [(header::LOCATION, location)]).into_response()
                }
            }
            Err(e) => storage_failure(e),
        }
    };
    signed_in.set_cookie(&mut r);
    r
}

/// Stores the authorization code of a finished login (in the browser session `signed_in`) and returns it.
async fn store_code(
    state: &AppState,
    request: &AuthRequest,
    identity: Identity,
    signed_in: &crate::session::SignedIn,
    now: i64,
) -> Result<String, StorageError> {
    let code = AuthCode {
        id: random_b64::<32>(),
        client_id: request.client_id.clone(),
        redirect_uri: request.redirect_uri.clone(),
        scopes: request.scopes.clone(),
        nonce: request.nonce.clone(),
        code_challenge: request.code_challenge.clone(),
        code_challenge_method: request.code_challenge_method.clone(),
        identity,
        auth_time: signed_in.auth_time,
        expiry: now + state.config.expiry.auth_codes.as_secs() as i64,
        redeemed_at: None,
        family_id: None,
        session_id: Some(signed_in.id.clone()),
    };
    let id = code.id.clone();
    state.storage.create_auth_code(code).await?;
    Ok(id)
}

/// The implicit and hybrid flows (OIDC Core §3.2, §3.3): what `response_type` asked for — a code, an ID
/// token (with `c_hash` beside a code, `at_hash` beside an access token), an access token — in the
/// redirect URI's fragment (OAuth 2.0 Multiple Response Types §5). Only reachable when
/// `oauth2.responseTypes` enables these types. No refresh token travels through the browser.
async fn front_channel_tokens(
    state: &AppState,
    request: &AuthRequest,
    identity: Identity,
    signed_in: &crate::session::SignedIn,
    now: i64,
) -> Response {
    let wants = |t: &str| request.response_types.iter().any(|r| r == t);
    let code_id = if wants("code") {
        match store_code(state, request, identity.clone(), signed_in, now).await {
            Ok(id) => Some(id),
            Err(e) => return storage_failure(e),
        }
    } else {
        None
    };
    let m = crate::token::Mint {
        config: &state.config,
        client_id: &request.client_id,
        scopes: &request.scopes,
        identity: &identity,
        nonce: request.nonce.as_deref(),
        auth_time: signed_in.auth_time,
        iat: now,
        sid: Some(&signed_in.id),
        subject: None,
    };
    let parts =
        crate::grant::Parts { access_token: wants("token"), id_token: wants("id_token"), code: code_id.as_deref() };
    let minted = match crate::grant::mint(state, &m, parts, "implicit").await {
        Ok(m) => m,
        Err(e) => return e.into_response(),
    };
    let expires_in = state.config.expiry.id_tokens.as_secs().to_string();
    let mut params: Vec<(&str, &str)> = Vec::new();
    if let Some(c) = code_id.as_deref() {
        params.push(("code", c));
    }
    if let Some(at) = minted.access_token.as_deref() {
        params.extend([("access_token", at), ("token_type", "Bearer"), ("expires_in", expires_in.as_str())]);
    }
    if let Some(it) = minted.id_token.as_deref() {
        params.push(("id_token", it));
    }
    if let Some(s) = request.state.as_deref() {
        params.push(("state", s));
    }
    let location = crate::oauth::redirect_with_fragment(&request.redirect_uri, &params);
    (StatusCode::SEE_OTHER, [(header::LOCATION, location)]).into_response()
}

/// The out-of-band "copy this code" page.
#[derive(askama::Template)]
#[template(path = "oob.html")]
struct OobPage {
    client: String,
    code: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_forms_are_read_and_checked_before_any_connector() {
        let long = format!("login={}&password=p", "é".repeat(MAX_LOGIN_CHARS + 1));
        let exact = format!("login={}&password=p", "é".repeat(MAX_LOGIN_CHARS));
        let cases: [(&str, Result<(), LoginFormError>); 6] = [
            ("login=%20jane%20&password=p", Ok(())),
            ("login=jane", Err(LoginFormError::Missing)),
            ("login=%20%20&password=p", Err(LoginFormError::Missing)),
            ("password=p", Err(LoginFormError::Missing)),
            (&long, Err(LoginFormError::TooLong)),
            (&exact, Ok(())),
        ];
        for (query, want) in cases {
            let form = Form::from_query(Some(query)).unwrap();
            assert_eq!(PasswordLogin::parse(&form).validate(), want, "{query}");
        }
        let form =
            Form::from_query(Some("login=%20jane&password=%20p%20&only=1&remember_me=on&connector=ldap")).unwrap();
        let want =
            PasswordLogin { connector: Some("ldap"), login: "jane", password: " p ", only: true, remember_me: true };
        assert_eq!(PasswordLogin::parse(&form), want, "login trimmed, password as typed");
    }
}
