//! RP-initiated logout (OpenID Connect RP-Initiated Logout 1.0). The browser session ends, with the
//! refresh-token families minted in it for the client the `id_token_hint` (or `client_id`) names; what
//! exactly is `crate::session::end`'s rule. The browser goes to a registered `post_logout_redirect_uri`
//! or sees a signed-out page. An unregistered URI is never redirected to.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Redirect, Response};

use super::{error_page, page, Form};
use crate::keys::verify_jwt;
use crate::oauth::{internal, redirect_with};
use crate::state::AppState;
use crate::token::IdTokenClaims;

#[derive(askama::Template)]
#[template(path = "signed_out.html")]
struct SignedOut;

/// `GET /logout`.
pub async fn logout(State(state): State<AppState>, uri: Uri, headers: HeaderMap) -> Response {
    match Form::from_query(uri.query()) {
        Ok(form) => handle(&state, &headers, &form).await,
        Err(e) => error_page(StatusCode::BAD_REQUEST, "Bad request", e),
    }
}

/// `POST /logout`.
pub async fn logout_post(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    match Form::parse(&headers, &body) {
        Ok(form) => handle(&state, &headers, &form).await,
        Err(e) => error_page(StatusCode::BAD_REQUEST, "Bad request", e),
    }
}

async fn handle(state: &AppState, headers: &HeaderMap, form: &Form) -> Response {
    let keys = match state.keys().await {
        Ok(k) => k,
        Err(e) => return internal(e),
    };
    // An expired hint is fine (the point is often that the session ended); a forged one is not.
    let hint: Option<IdTokenClaims> = match form.get("id_token_hint") {
        None => None,
        Some(t) => match verify_jwt(t, &keys.public).and_then(|v| serde_json::from_value(v).ok()) {
            Some(c) => Some(c),
            None => {
                return error_page(
                    StatusCode::BAD_REQUEST,
                    "Bad request",
                    "The id_token_hint is not a token of this issuer.",
                )
            }
        },
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
    let ended = match crate::session::end(state, headers, hint.as_ref(), client_id.as_deref()).await {
        Ok(e) => e,
        Err(e) => return e.into_response(),
    };
    tracing::info!(target: "audit", event = "logout", sub = hint.as_ref().map_or("", |h| h.sub.as_str()), client = client_id.as_deref().unwrap_or(""), families = ended.families);
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
