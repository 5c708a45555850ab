//! The authorization endpoint and the login form: validating the request (RFC 6749 §4.1.1, RFC 7636,
//! OIDC Core §3.1.2), CSRF binding, brute-force throttling, and issuing the code (§4.1.2).
//!
//! A request from an unknown client or with an unregistered redirect URI is answered with an error page
//! and never redirected (RFC 6749 §4.1.2.1); every later error goes back to the redirect URI.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Redirect, Response};
use subtle::ConstantTimeEq;

use super::{client_ip, error_page, page, storage_failure, Form, Peer};
use crate::oauth::{redirect_with, AuthorizeErrorCode as Code, OOB_REDIRECT_URI};
use crate::ratelimit::{self, Limit, LimitError};
use crate::state::AppState;
use crate::storage::{AuthCode, AuthRequest, StorageError};
use crate::token::{parse_scopes, random_b64};

/// Cookie that binds a login form to the browser that started it.
const CSRF_COOKIE: &str = "issuer_csrf";

/// `GET /auth`.
pub async fn authorize(State(state): State<AppState>, uri: Uri, headers: HeaderMap) -> Response {
    match Form::from_query(uri.query()) {
        Ok(form) => start(&state, &headers, &form).await,
        Err(e) => error_page(StatusCode::BAD_REQUEST, "Bad request", e),
    }
}

/// `POST /auth` (OIDC Core §3.1.2.1 allows both).
pub async fn authorize_post(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    match Form::parse(&headers, &body) {
        Ok(form) => start(&state, &headers, &form).await,
        Err(e) => error_page(StatusCode::BAD_REQUEST, "Bad request", e),
    }
}

fn valid_pkce_value(v: &str) -> bool {
    (43..=128).contains(&v.len()) && v.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b))
}

async fn start(state: &AppState, headers: &HeaderMap, form: &Form) -> Response {
    let Some(client_id) = form.get("client_id") else {
        return error_page(
            StatusCode::BAD_REQUEST,
            "Bad request",
            "The application did not say who it is (client_id is missing).",
        );
    };
    let Some(client) = state.config.client(client_id) else {
        return error_page(
            StatusCode::BAD_REQUEST,
            "Unknown application",
            "This application is not registered with the identity provider.",
        );
    };
    let redirect_uri =
        match (form.get("redirect_uri"), client.redirect_uris.as_slice()) {
            (Some(uri), _) if client.accepts_redirect_uri(uri) => uri.to_owned(),
            (None, [only]) => only.clone(),
            _ => return error_page(
                StatusCode::BAD_REQUEST,
                "Invalid redirect",
                "The application asked to return to an address it has not registered, so this login cannot continue.",
            ),
        };
    let client_state = form.get("state");
    let fail = |code: Code, description: &str| -> Response {
        let mut params = vec![("error", code.as_str()), ("error_description", description)];
        if let Some(s) = client_state {
            params.push(("state", s));
        }
        if redirect_uri == OOB_REDIRECT_URI {
            return error_page(StatusCode::BAD_REQUEST, "Sign-in failed", format!("{}: {description}", code.as_str()));
        }
        Redirect::to(&redirect_with(&redirect_uri, &params)).into_response()
    };

    match form.get("response_type") {
        Some("code") => {}
        Some(_) => return fail(Code::UnsupportedResponseType, "only response_type=code is supported"),
        None => return fail(Code::InvalidRequest, "missing parameter response_type"),
    }
    if form.get("request").is_some() || form.get("request_uri").is_some() {
        return fail(Code::InvalidRequest, "request objects are not supported");
    }
    let scopes = match parse_scopes(&state.config, &client.id, form.get("scope").unwrap_or("")) {
        Ok(s) => s,
        Err(e) => return fail(Code::InvalidScope, &e.to_string()),
    };
    let challenge = form.get("code_challenge");
    let method = match (challenge, form.get("code_challenge_method")) {
        (None, Some(_)) => return fail(Code::InvalidRequest, "code_challenge_method without code_challenge"),
        (None, None) if client.public => {
            return fail(Code::InvalidRequest, "public clients must use PKCE (code_challenge)")
        }
        (None, None) => None,
        // RFC 7636 §4.3: an absent method means plain.
        (Some(_), None | Some("plain")) if !client.allow_plain_pkce => {
            return fail(Code::InvalidRequest, "code_challenge_method must be S256")
        }
        (Some(_), None | Some("plain")) => Some("plain"),
        (Some(_), Some("S256")) => Some("S256"),
        (Some(_), Some(_)) => return fail(Code::InvalidRequest, "unsupported code_challenge_method"),
    };
    if challenge.is_some_and(|c| !valid_pkce_value(c)) {
        return fail(Code::InvalidRequest, "code_challenge must be 43 to 128 characters of [A-Za-z0-9-._~]");
    }
    if form.get("prompt").is_some_and(|p| p.split(' ').any(|v| v == "none")) {
        // OIDC Core §3.1.2.6: the issuer keeps no login session, so it can never log in silently.
        return fail(Code::LoginRequired, "the user must sign in");
    }

    let now = state.clock.now();
    let csrf = csrf_value(headers);
    let request = AuthRequest {
        id: random_b64::<16>(),
        client_id: client.id.clone(),
        redirect_uri,
        scopes,
        state: client_state.map(str::to_owned),
        nonce: form.get("nonce").map(str::to_owned),
        code_challenge: challenge.map(str::to_owned),
        code_challenge_method: method.map(str::to_owned),
        csrf_token: csrf.clone(),
        expiry: now + state.config.expiry.auth_requests.as_secs() as i64,
        device: None,
    };
    begin_login(state, request).await
}

/// The browser's CSRF token: the one its cookie already holds (so several tabs share one), or a new one.
pub(crate) fn csrf_value(headers: &HeaderMap) -> String {
    cookie(headers, CSRF_COOKIE).filter(|c| c.len() >= 22).map_or_else(random_b64::<16>, str::to_owned)
}

/// Stores a login in progress and sends the browser to its form, binding the form to the browser with the
/// CSRF cookie (`request.csrf_token`, from `csrf_value`).
pub(crate) async fn begin_login(state: &AppState, request: AuthRequest) -> Response {
    let login_url = format!("{}/login?req={}", state.config.path_prefix(), request.id);
    let csrf = request.csrf_token.clone();
    if let Err(e) = state.storage.create_auth_request(request).await {
        return storage_failure(e);
    }
    let mut r = Redirect::to(&login_url).into_response();
    set_csrf_cookie(state, &mut r, &csrf);
    r
}

/// Whether a posted form is bound to this browser: the form and the cookie both carry the login's token.
pub(crate) fn csrf_ok(headers: &HeaderMap, form: &Form, request: &AuthRequest) -> bool {
    let expected = request.csrf_token.as_bytes();
    let form_ok = form.get("csrf").is_some_and(|c| bool::from(c.as_bytes().ct_eq(expected)));
    let cookie_ok = cookie(headers, CSRF_COOKIE).is_some_and(|c| bool::from(c.as_bytes().ct_eq(expected)));
    form_ok && cookie_ok
}

/// The page shown when a posted form fails `csrf_ok`.
pub(crate) fn csrf_failed() -> Response {
    error_page(
        StatusCode::FORBIDDEN,
        "Request not verified",
        "This sign-in form could not be verified (cookies may be blocked). Go back to the application and start again.",
    )
}

fn set_csrf_cookie(state: &AppState, r: &mut Response, value: &str) {
    let secure = if state.config.issuer.scheme() == "https" { "; Secure" } else { "" };
    let path = match state.config.path_prefix() {
        p if p.is_empty() => "/".to_owned(),
        p => p,
    };
    let max_age = state.config.expiry.auth_requests.as_secs();
    let c = format!("{CSRF_COOKIE}={value}; Path={path}; Max-Age={max_age}; HttpOnly; SameSite=Lax{secure}");
    if let Ok(v) = HeaderValue::from_str(&c) {
        r.headers_mut().append(header::SET_COOKIE, v);
    }
}

/// A cookie's value from the request.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

#[derive(askama::Template)]
#[template(path = "login.html")]
struct LoginPage<'a> {
    client_name: &'a str,
    action: String,
    req: &'a str,
    csrf: &'a str,
    prompt: &'a str,
    login: &'a str,
    error: Option<String>,
    issuer: &'a str,
    /// For a device login: the user code to compare, and where "Deny" posts.
    device: Option<(String, String)>,
}

fn login_form(
    state: &AppState,
    status: StatusCode,
    request: &AuthRequest,
    login: &str,
    error: Option<String>,
) -> Response {
    let client_name = state.config.client(&request.client_id).map_or(request.client_id.as_str(), |c| c.name.as_str());
    let t = LoginPage {
        client_name,
        action: format!("{}/login", state.config.path_prefix()),
        req: &request.id,
        csrf: &request.csrf_token,
        prompt: crate::connector::PasswordConnector::prompt(&state.passwords),
        login,
        error,
        issuer: state.config.issuer.as_str().trim_end_matches('/'),
        device: request.device.as_ref().map(|d| {
            (super::device::display_user_code(&d.user_code), format!("{}/device/deny", state.config.path_prefix()))
        }),
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

/// `GET /login?req=…`: the form.
pub async fn login_page(State(state): State<AppState>, uri: Uri) -> Response {
    let form = Form::from_query(uri.query()).unwrap_or_else(|_| Form(Default::default()));
    match pending_request(&state, form.get("req")).await {
        Ok(r) => login_form(&state, StatusCode::OK, &r, "", None),
        Err(resp) => resp,
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

/// `POST /login`: checks the CSRF binding and the throttle, then the password, then issues the code.
pub async fn login(State(state): State<AppState>, peer: Peer, headers: HeaderMap, body: Bytes) -> Response {
    let (form, request) = match posted_login_form(&state, &headers, &body).await {
        Ok(v) => v,
        Err(resp) => return resp,
    };
    let login = form.get("login").unwrap_or("").trim();
    let password = form.get("password").unwrap_or("");
    if login.is_empty() || password.is_empty() {
        return login_form(
            &state,
            StatusCode::BAD_REQUEST,
            &request,
            login,
            Some("Enter your email address and password.".into()),
        );
    }

    let ip = client_ip(&state, &peer, &headers);
    let ip_text = ip.map_or_else(|| "-".to_owned(), |i| i.to_string());
    let bf = state.config.brute_force;
    let user_key = format!("user:{}", login.to_lowercase());
    let ip_key = format!("ip:{ip_text}");
    let user_limit = Limit { capacity: bf.max_attempts, refill: bf.refill_interval };
    let ip_limit = Limit { capacity: bf.per_ip_max_attempts, refill: bf.per_ip_refill_interval };
    let now = state.clock.now_f64();
    let store = state.storage.as_ref();

    let throttled = |retry_after: u64| {
        crate::metrics::Metrics::count(&state.metrics.logins, "throttled");
        tracing::warn!(target: "audit", event = "login", result = "throttled", user = login, client = %request.client_id, ip = %ip_text);
        let mut r = login_form(
            &state,
            StatusCode::TOO_MANY_REQUESTS,
            &request,
            login,
            Some(format!("Too many sign-in attempts. Try again in {retry_after} seconds.")),
        );
        r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
        r
    };
    match ratelimit::reserve(store, &user_key, user_limit, now).await {
        Ok(()) => {}
        Err(LimitError::Exhausted { retry_after }) => return throttled(retry_after),
        Err(LimitError::Storage(e)) => return storage_failure(e),
    }
    match ratelimit::reserve(store, &ip_key, ip_limit, now).await {
        Ok(()) => {}
        Err(LimitError::Exhausted { retry_after }) => {
            let _ = ratelimit::refund(store, &user_key, user_limit, now).await;
            return throttled(retry_after);
        }
        Err(LimitError::Storage(e)) => return storage_failure(e),
    }

    let identity = match crate::connector::PasswordConnector::login(&state.passwords, login, password).await {
        Ok(Some(identity)) => identity,
        Ok(None) => {
            crate::metrics::Metrics::count(&state.metrics.logins, "failure");
            tracing::info!(target: "audit", event = "login", result = "failure", user = login, client = %request.client_id, ip = %ip_text);
            return login_form(
                &state,
                StatusCode::UNAUTHORIZED,
                &request,
                login,
                Some("Invalid email address or password.".into()),
            );
        }
        Err(e) => {
            let _ = ratelimit::refund(store, &user_key, user_limit, now).await;
            let _ = ratelimit::refund(store, &ip_key, ip_limit, now).await;
            tracing::error!(error = %e, "password connector failed");
            return error_page(
                StatusCode::SERVICE_UNAVAILABLE,
                "Sign-in unavailable",
                "The user directory did not answer. Try again shortly.",
            );
        }
    };
    // Only failures spend attempts.
    for (key, limit) in [(&user_key, user_limit), (&ip_key, ip_limit)] {
        if let Err(e) = ratelimit::refund(store, key, limit, now).await {
            return storage_failure(e);
        }
    }

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
    if let Some(device) = &request.device {
        crate::metrics::Metrics::count(&state.metrics.logins, "success");
        tracing::info!(target: "audit", event = "login", result = "success", user = %identity.email, sub = %identity.user_id, client = %request.client_id, ip = %ip_text);
        return super::device::approve(&state, device, identity, &ip_text).await;
    }
    let now = state.clock.now();
    let code = AuthCode {
        id: random_b64::<32>(),
        client_id: request.client_id.clone(),
        redirect_uri: request.redirect_uri.clone(),
        scopes: request.scopes.clone(),
        nonce: request.nonce.clone(),
        code_challenge: request.code_challenge.clone(),
        code_challenge_method: request.code_challenge_method.clone(),
        identity,
        auth_time: now,
        expiry: now + state.config.expiry.auth_codes.as_secs() as i64,
        redeemed_at: None,
        family_id: None,
    };
    let code_id = code.id.clone();
    crate::metrics::Metrics::count(&state.metrics.logins, "success");
    tracing::info!(target: "audit", event = "login", result = "success", user = %code.identity.email, sub = %code.identity.user_id, client = %request.client_id, ip = %ip_text);
    if let Err(e) = state.storage.create_auth_code(code).await {
        return storage_failure(e);
    }
    let mut params = vec![("code", code_id.as_str())];
    if let Some(s) = request.state.as_deref() {
        params.push(("state", s));
    }
    if request.redirect_uri == OOB_REDIRECT_URI {
        let client = state.config.client(&request.client_id).map_or(request.client_id.clone(), |c| c.name.clone());
        return page(StatusCode::OK, &OobPage { client, code: code_id.clone() });
    }
    // 303: the browser follows with a GET, never re-posting the password.
    (StatusCode::SEE_OTHER, [(header::LOCATION, redirect_with(&request.redirect_uri, &params))]).into_response()
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
    fn pkce_values_follow_rfc7636_syntax() {
        assert!(valid_pkce_value(&"a".repeat(43)));
        assert!(valid_pkce_value(&"A-._~9".repeat(10)));
        assert!(!valid_pkce_value(&"a".repeat(42)));
        assert!(!valid_pkce_value(&"a".repeat(129)));
        assert!(!valid_pkce_value(&format!("{}+", "a".repeat(43))));
    }

    #[test]
    fn cookies_are_found_by_exact_name() {
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, HeaderValue::from_static("a_issuer_csrf=x; issuer_csrf=y"));
        assert_eq!(cookie(&h, "issuer_csrf"), Some("y"));
        assert_eq!(cookie(&h, "other"), None);
    }
}
