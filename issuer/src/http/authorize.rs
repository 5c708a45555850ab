//! The authorization endpoint and the login form: validating the request (RFC 6749 §4.1.1, RFC 7636,
//! OIDC Core §3.1.2), CSRF binding, brute-force throttling, and issuing the code (§4.1.2) — at once when the
//! browser's session may answer (`crate::session`: `prompt`, `max_age`, `id_token_hint`).
//!
//! A request from an unknown client or with an unregistered redirect URI is answered with an error page
//! and never redirected (RFC 6749 §4.1.2.1); every later error goes back to the redirect URI.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Redirect, Response};
use subtle::ConstantTimeEq;

use super::{client_ip, error_page, storage_failure, Form, Peer};
use crate::oauth::{redirect_with, redirect_with_fragment, AuthorizeErrorCode as Code, OOB_REDIRECT_URI};
use crate::state::AppState;
use crate::storage::AuthRequest;
use crate::token::{parse_scopes, random_b64};

/// Cookie that binds a login form to the browser that started it.
pub(crate) const CSRF_COOKIE: &str = "issuer_csrf";

/// `GET /auth`.
pub async fn authorize(State(state): State<AppState>, peer: Peer, uri: Uri, headers: HeaderMap) -> Response {
    match Form::from_query(uri.query()) {
        Ok(form) => start(&state, &peer, &headers, &form).await,
        Err(e) => error_page(StatusCode::BAD_REQUEST, "Bad request", e),
    }
}

/// `POST /auth` (OIDC Core §3.1.2.1 allows both).
pub async fn authorize_post(State(state): State<AppState>, peer: Peer, headers: HeaderMap, body: Bytes) -> Response {
    match Form::parse(&headers, &body) {
        Ok(form) => start(&state, &peer, &headers, &form).await,
        Err(e) => error_page(StatusCode::BAD_REQUEST, "Bad request", e),
    }
}

fn valid_pkce_value(v: &str) -> bool {
    (43..=128).contains(&v.len()) && v.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b))
}

pub(super) async fn start(state: &AppState, peer: &Peer, headers: &HeaderMap, form: &Form) -> Response {
    let Some(client_id) = form.get("client_id") else {
        return error_page(
            StatusCode::BAD_REQUEST,
            "Bad request",
            "The application did not say who it is (client_id is missing).",
        );
    };
    let client = match state.client(client_id).await {
        Ok(c) => c,
        Err(e) => return storage_failure(e),
    };
    let Some(client) = client else {
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
    let response_types: Vec<&str> =
        form.get("response_type").unwrap_or("").split(' ').filter(|t| !t.is_empty()).collect();
    let enabled = &state.config.oauth2.response_types;
    // OAuth 2.0 Multiple Response Types §5: an enabled flow other than `code` alone answers in the fragment,
    // errors too; a response type this issuer does not serve is refused in the query.
    let in_fragment =
        response_types.iter().any(|t| *t != "code") && response_types.iter().all(|t| enabled.iter().any(|e| e == t));
    let fail = |code: Code, description: &str| -> Response {
        let mut params = vec![("error", code.as_str()), ("error_description", description)];
        if let Some(s) = client_state {
            params.push(("state", s));
        }
        if redirect_uri == OOB_REDIRECT_URI {
            return error_page(StatusCode::BAD_REQUEST, "Sign-in failed", format!("{}: {description}", code.as_str()));
        }
        if in_fragment {
            return Redirect::to(&redirect_with_fragment(&redirect_uri, &params)).into_response();
        }
        Redirect::to(&redirect_with(&redirect_uri, &params)).into_response()
    };

    if response_types.is_empty() {
        return fail(Code::InvalidRequest, "missing parameter response_type");
    }
    if let Some(t) = response_types.iter().find(|t| !enabled.iter().any(|e| e == *t)) {
        let description = format!("response_type {t} is not enabled (oauth2.responseTypes: {})", enabled.join(", "));
        return fail(Code::UnsupportedResponseType, &description);
    }
    let wants_code = response_types.contains(&"code");
    if in_fragment && redirect_uri == OOB_REDIRECT_URI {
        return fail(Code::InvalidRequest, "tokens cannot be returned out of band");
    }
    if response_types.contains(&"id_token") && form.get("nonce").is_none_or(str::is_empty) {
        // OIDC Core §3.2.2.1 and §3.3.2.11: the nonce binds a front-channel ID token to the browser.
        return fail(Code::InvalidRequest, "a nonce is required when the response type includes id_token");
    }
    if form.get("request").is_some() || form.get("request_uri").is_some() {
        return fail(Code::InvalidRequest, "request objects are not supported");
    }
    let scope = form.get("scope").unwrap_or("");
    let peers = match state.scope_peers(scope).await {
        Ok(p) => p,
        Err(e) => return storage_failure(e),
    };
    let scopes = match parse_scopes(&client.id, scope, &peers) {
        Ok(s) => s,
        Err(e) => return fail(Code::InvalidScope, &e.to_string()),
    };
    let challenge = form.get("code_challenge");
    let pkce = &state.config.oauth2.pkce;
    let method = match (challenge, form.get("code_challenge_method")) {
        (None, Some(_)) => return fail(Code::InvalidRequest, "code_challenge_method without code_challenge"),
        (None, None) if client.public && wants_code => {
            return fail(Code::InvalidRequest, "public clients must use PKCE (code_challenge)")
        }
        (None, None) if pkce.enforce && wants_code => {
            return fail(Code::InvalidRequest, "PKCE is required (code_challenge)")
        }
        (None, None) => None,
        (Some(_), m) if !pkce.code_challenge_methods_supported.iter().any(|s| s == m.unwrap_or("plain")) => {
            return fail(Code::InvalidRequest, "code_challenge_method is not supported by this issuer")
        }
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
    let prompt = match crate::session::Prompt::parse(form.get("prompt"), form.get("max_age")) {
        Ok(p) => p,
        Err(e) => return fail(Code::InvalidRequest, e),
    };

    // Dex's `connector_id`: skip the choice of connector.
    let connector_id = match form.get("connector_id") {
        None | Some("") => None,
        Some(id) if state.connectors.get(id).is_some() && client.allows_connector(id) => Some(id.to_owned()),
        Some(_) => return fail(Code::InvalidRequest, "connector_id names no connector this client may use"),
    };
    // Single sign-on (`crate::session`): a browser session this client may use answers at once.
    let hint_sub = match crate::session::hint_subject(state, form.get("id_token_hint")).await {
        Ok(s) => s,
        Err(crate::session::HintError::Forged) => {
            return fail(Code::InvalidRequest, "id_token_hint is not an ID token of this issuer")
        }
        Err(e) => return crate::oauth::internal(e),
    };
    let resumed =
        crate::session::resume(state, headers, &client, connector_id.as_deref(), hint_sub.as_deref(), &prompt);
    let resumed = match resumed.await {
        Ok(r) => r,
        Err(e) => return storage_failure(e),
    };
    if resumed.is_none() && prompt.none {
        // OIDC Core §3.1.2.6.
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
        connector_id,
        response_types: response_types.iter().map(|t| (*t).to_owned()).collect(),
    };
    if let Some((session, connector)) = resumed {
        let ip = client_ip(state, peer, headers).map_or_else(|| "-".to_owned(), |i| i.to_string());
        return super::login::resume(state, request, &connector, &session, &ip).await;
    }
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
    form_ok && csrf_cookie_ok(headers, request)
}

/// Whether this browser's CSRF cookie is the login's (a callback from an upstream carries only the cookie).
pub(crate) fn csrf_cookie_ok(headers: &HeaderMap, request: &AuthRequest) -> bool {
    let expected = request.csrf_token.as_bytes();
    cookie(headers, CSRF_COOKIE).is_some_and(|c| bool::from(c.as_bytes().ct_eq(expected)))
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
