//! RP-initiated logout (OpenID Connect RP-Initiated Logout 1.0). The browser session ends, with the
//! refresh-token families minted in it for the client the `id_token_hint` (or `client_id`) names; what
//! exactly is `crate::session::end`'s rule. The browser goes to a registered `post_logout_redirect_uri`
//! or sees a signed-out page. An unregistered URI is never redirected to.
//!
//! When the browser has a session and the request has no `id_token_hint` of that session and user, the
//! user is asked first (§2: the OP MUST ask then), with a form that posts back here: a link on another site
//! cannot sign the browser out, nor tell every application of the session to sign out, unless it holds an
//! ID token of that session (which only the applications that received one do; §2 lets such a hint skip
//! the question).

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Redirect, Response};

use super::{error_page, page, Form};
use crate::keys::{verify_jwt, PublicKey};
use crate::oauth::{internal, redirect_with};
use crate::state::AppState;
use crate::token::IdTokenClaims;

#[derive(askama::Template)]
#[template(path = "signed_out.html")]
struct SignedOut;

/// The question of RP-Initiated Logout 1.0 §2; the form posts the request's parameters back with `confirm`.
#[derive(askama::Template)]
#[template(path = "logout_confirm.html")]
struct Confirm<'a> {
    action: String,
    /// `(name, value)` of the hidden fields.
    fields: Vec<(&'static str, &'a str)>,
    issuer: &'a str,
}

/// The request parameters a confirmation form carries over.
const CARRIED: [&str; 4] = ["id_token_hint", "client_id", "post_logout_redirect_uri", "state"];

/// `GET /logout`.
pub async fn logout(State(state): State<AppState>, uri: Uri, headers: HeaderMap) -> Response {
    match Form::from_query(uri.query()) {
        Ok(form) => handle(&state, &headers, &form, false).await,
        Err(e) => error_page(StatusCode::BAD_REQUEST, "Bad request", e),
    }
}

/// `POST /logout`.
pub async fn logout_post(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    match Form::parse(&headers, &body) {
        Ok(form) => handle(&state, &headers, &form, true).await,
        Err(e) => error_page(StatusCode::BAD_REQUEST, "Bad request", e),
    }
}

/// Why a logout request's `id_token_hint` was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HintError {
    /// Not a JWT signed by one of `keys`, or its claims are not an ID token's.
    #[error("The id_token_hint is not a token of this issuer.")]
    NotOurs,
}

/// The claims of the request's `id_token_hint`, verified against the issuer's public `keys`; `None` when the
/// request has none. An expired hint is accepted (the point is often that the session ended); a forged one
/// is not.
pub fn parse_id_token_hint(form: &Form, keys: &[PublicKey]) -> Result<Option<IdTokenClaims>, HintError> {
    let Some(token) = form.get("id_token_hint") else { return Ok(None) };
    verify_jwt(token, keys).and_then(|v| serde_json::from_value(v).ok()).map(Some).ok_or(HintError::NotOurs)
}

async fn handle(state: &AppState, headers: &HeaderMap, form: &Form, posted: bool) -> Response {
    let keys = match state.keys().await {
        Ok(k) => k,
        Err(e) => return internal(e),
    };
    let hint = match parse_id_token_hint(form, &keys.public) {
        Ok(h) => h,
        Err(e) => return error_page(StatusCode::BAD_REQUEST, "Bad request", e.to_string()),
    };
    let client_id = match (form.get("client_id"), &hint) {
        (Some(c), Some(h)) if c != h.azp => {
            return error_page(StatusCode::BAD_REQUEST, "Bad request", "client_id does not match the id_token_hint.")
        }
        (Some(c), _) => Some(c.to_owned()),
        (None, Some(h)) => Some(h.azp.clone()),
        (None, None) => None,
    };
    let target = match form.get("post_logout_redirect_uri") {
        None => None,
        Some(uri) => {
            let client = match client_id.as_deref() {
                Some(id) => match state.client(id).await {
                    Ok(c) => c,
                    Err(e) => return super::storage_failure(e),
                },
                None => None,
            };
            let registered = client.is_some_and(|c| c.post_logout_redirect_uris.iter().any(|r| r == uri));
            if !registered {
                return error_page(
                    StatusCode::BAD_REQUEST,
                    "Invalid redirect",
                    "The application asked to return to an address it has not registered for sign-out.",
                );
            }
            Some(uri.to_owned())
        }
    };
    // Read once: it decides whether to ask first, and it is what the logout ends.
    let current = match crate::session::current(state, headers).await {
        Ok(s) => s,
        Err(e) => return super::storage_failure(e),
    };
    if let Some(confirm) = confirmation(state, headers, form, hint.as_ref(), current.as_ref(), posted) {
        return confirm;
    }
    let ended = match crate::session::end(state, headers, current, hint.as_ref(), client_id.as_deref()).await {
        Ok(e) => e,
        Err(e) => return e.into_response(),
    };
    // The session's user, else the hint's (a stale hint ends nothing but is still who asked).
    let sub = ended.sub.as_deref().or(hint.as_ref().map(|h| h.sub.as_str())).unwrap_or("");
    tracing::info!(target: "audit", event = "logout", sub = %sub, client = client_id.as_deref().unwrap_or(""), families = ended.families);
    let mut r = match target {
        Some(uri) => {
            let params: Vec<(&str, &str)> = form.get("state").map(|s| vec![("state", s)]).unwrap_or_default();
            Redirect::to(&redirect_with(&uri, &params)).into_response()
        }
        None => page(StatusCode::OK, &SignedOut),
    };
    ended.clear_cookie(state, &mut r);
    r
}

/// The confirmation page, when one is due: the browser has a live session (`current`, the one its cookie
/// opens), the hint (if any) is not of that session and its user, and the request is not the page's own
/// confirmed `POST`.
fn confirmation(
    state: &AppState,
    headers: &HeaderMap,
    form: &Form,
    hint: Option<&IdTokenClaims>,
    current: Option<&crate::storage::Session>,
    posted: bool,
) -> Option<Response> {
    let cookie = crate::session::cookie(state, headers)?;
    let session = current?;
    let hinted = hint.is_some_and(|h| {
        h.sid.as_deref() == Some(session.id.as_str()) && h.sub == state.config.subject(&session.identity)
    });
    let confirmed = posted && form.get("confirm").is_some_and(|c| cookie.confirms_logout(c));
    if hinted || confirmed {
        return None;
    }
    let token = cookie.logout_confirmation();
    let mut fields: Vec<(&'static str, &str)> =
        CARRIED.iter().filter_map(|&name| Some((name, form.get(name)?))).collect();
    fields.push(("confirm", &token));
    let page = Confirm {
        action: format!("{}/logout", state.config.path_prefix()),
        fields,
        issuer: state.config.issuer.as_str().trim_end_matches('/'),
    };
    let mut r = super::page(StatusCode::OK, &page);
    r.headers_mut().insert(axum::http::header::CACHE_CONTROL, axum::http::HeaderValue::from_static("no-store"));
    Some(r)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::{generate, Algorithm, Signer};

    fn hint(token: &str) -> Form {
        let q = url::form_urlencoded::Serializer::new(String::new()).append_pair("id_token_hint", token).finish();
        Form::from_query(Some(&q)).unwrap()
    }

    #[test]
    fn id_token_hints_are_accepted_only_when_signed_here_and_shaped_like_an_id_token() {
        let ours = Signer::from_stored(&generate(Algorithm::EdDsa).unwrap()).unwrap();
        let theirs = Signer::from_stored(&generate(Algorithm::EdDsa).unwrap()).unwrap();
        let keys = [ours.public_key()];
        let claims = serde_json::json!({
            "iss": "https://issuer.example", "sub": "u", "aud": "web", "azp": "web",
            "exp": 1, "iat": 0, "auth_time": 0,
        });
        let parsed = parse_id_token_hint(&hint(&ours.sign_jwt(&claims).unwrap()), &keys).unwrap();
        assert_eq!(parsed.map(|c| c.azp), Some("web".to_owned()), "an expired hint of ours is accepted");
        assert!(matches!(parse_id_token_hint(&Form::from_query(None).unwrap(), &keys), Ok(None)), "no hint");
        let refused = [
            theirs.sign_jwt(&claims).unwrap(),
            ours.sign_jwt(&serde_json::json!({"sub": "u"})).unwrap(),
            "a.b.c".to_owned(),
            "not a jwt".to_owned(),
        ];
        for token in refused {
            assert_eq!(parse_id_token_hint(&hint(&token), &keys).err(), Some(HintError::NotOurs), "{token}");
        }
    }
}
