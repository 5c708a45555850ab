//! The device authorization grant's endpoints (RFC 8628): the device authorization endpoint (§3.1–3.2)
//! and the verification page where the user types the user code (§3.3). A valid code starts an ordinary
//! login (the same form, CSRF binding and brute-force buckets as `/auth`), marked as answering the device;
//! the login then approves the device request instead of redirecting with a code. Polling the token
//! endpoint is `grant::device_code`'s job.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use rand::Rng;
use serde::Serialize;

use super::authorize::{begin_login, csrf_value};
use super::login::posted_login_form;
use super::{authenticate_client, client_ip, error_page, page, storage_failure, Form, Peer};
use crate::oauth::TokenError;
use crate::ratelimit::{self, Limit, LimitError};
use crate::state::AppState;
use crate::storage::{AuthRequest, DeviceLogin, DeviceRequest, DeviceStatus, Identity, StorageError};
use crate::token::{parse_scopes, random_b64};

/// RFC 8628 §6.1: consonants only (no vowels, so no words; no 0/O or 1/I to confuse).
const USER_CODE_ALPHABET: &[u8] = b"BCDFGHJKLMNPQRSTVWXZ";

/// Length of a user code without its dash: 20^8 ≈ 2.6·10¹⁰ codes, against the per-IP attempt bucket.
const USER_CODE_LEN: usize = 8;

/// RFC 8628 §3.2: the minimum seconds between polls when the device is told nothing else.
const INTERVAL: i64 = 5;

/// A new random user code (normalised: no dash).
pub fn new_user_code() -> String {
    let mut rng = rand::rng();
    (0..USER_CODE_LEN).map(|_| char::from(USER_CODE_ALPHABET[rng.random_range(0..USER_CODE_ALPHABET.len())])).collect()
}

/// What the user typed, normalised: case and dashes and spaces do not matter; `None` if it cannot be a code.
pub fn normalize_user_code(typed: &str) -> Option<String> {
    let code: String =
        typed.chars().filter(|c| !c.is_whitespace() && *c != '-').map(|c| c.to_ascii_uppercase()).collect();
    (code.len() == USER_CODE_LEN && code.bytes().all(|b| USER_CODE_ALPHABET.contains(&b))).then_some(code)
}

/// A user code as people read it: `WDJB-MJHT`.
pub fn display_user_code(code: &str) -> String {
    match code.get(..4).zip(code.get(4..)) {
        Some((a, b)) if code.len() == USER_CODE_LEN => format!("{a}-{b}"),
        _ => code.to_owned(),
    }
}

/// RFC 8628 §3.2 device authorization response.
#[derive(Debug, Serialize)]
pub struct DeviceAuthorizationResponse {
    /// What the device polls with.
    pub device_code: String,
    /// What the user types, e.g. `WDJB-MJHT`.
    pub user_code: String,
    /// Where the user types it.
    pub verification_uri: String,
    /// The verification URI with the code filled in (for a link or QR code).
    pub verification_uri_complete: String,
    /// Seconds until both codes expire.
    pub expires_in: u64,
    /// Seconds between polls.
    pub interval: i64,
}

/// `POST /device/code`: the device authorization endpoint.
pub async fn device_authorization(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    match authorize_device(&state, &headers, &body).await {
        Ok(r) => ([(header::CACHE_CONTROL, "no-store"), (header::PRAGMA, "no-cache")], Json(r)).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn authorize_device(
    state: &AppState,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<DeviceAuthorizationResponse, TokenError> {
    let form = Form::parse(headers, body).map_err(TokenError::InvalidRequest)?;
    // §3.1: clients authenticate as at the token endpoint; public clients send only client_id.
    let client = authenticate_client(state, headers, &form).await?;
    if !state.config.oauth2.allows(crate::oauth::GrantType::DeviceCode) {
        return Err(TokenError::UnauthorizedClient("the device code grant is not enabled (oauth2.grantTypes)"));
    }
    let scope = form.get("scope").unwrap_or("openid");
    let peers = state.scope_peers(scope).await.map_err(TokenError::from)?;
    let scopes = parse_scopes(&client.id, scope, &peers).map_err(|e| TokenError::InvalidScope(e.to_string()))?;
    let now = state.clock.now();
    let lifetime = state.config.expiry.device_requests;
    let mut request = DeviceRequest {
        device_code: random_b64::<32>(),
        user_code: new_user_code(),
        client_id: client.id.clone(),
        scopes,
        interval: INTERVAL,
        last_poll: None,
        status: DeviceStatus::Pending,
        expiry: now + lifetime.as_secs() as i64,
    };
    // A user code may clash with a live one; a few fresh draws make that vanishingly unlikely to matter.
    let mut attempts = 0;
    loop {
        match state.storage.create_device_request(request.clone()).await {
            Ok(()) => break,
            Err(StorageError::AlreadyExists) if attempts < 3 => {
                attempts += 1;
                request.device_code = random_b64::<32>();
                request.user_code = new_user_code();
            }
            Err(e) => return Err(e.into()),
        }
    }
    tracing::info!(target: "audit", event = "device_authorization", client = %client.id, scope = %request.scopes.join(" "));
    let user_code = display_user_code(&request.user_code);
    let verification_uri = state.config.endpoint("/device");
    let verification_uri_complete = crate::oauth::redirect_with(&verification_uri, &[("user_code", &user_code)]);
    Ok(DeviceAuthorizationResponse {
        device_code: request.device_code,
        user_code,
        verification_uri,
        verification_uri_complete,
        expires_in: lifetime.as_secs(),
        interval: request.interval,
    })
}

#[derive(askama::Template)]
#[template(path = "device.html")]
struct DevicePage<'a> {
    action: String,
    user_code: &'a str,
    error: Option<String>,
    issuer: &'a str,
}

fn device_form(state: &AppState, status: StatusCode, user_code: &str, error: Option<String>) -> Response {
    page(
        status,
        &DevicePage {
            action: format!("{}/device", state.config.path_prefix()),
            user_code,
            error,
            issuer: state.config.issuer.as_str().trim_end_matches('/'),
        },
    )
}

/// `GET /device[?user_code=…]`: the form for the user code, filled in from `verification_uri_complete`.
pub async fn verification_page(State(state): State<AppState>, uri: Uri) -> Response {
    let form = Form::from_query(uri.query()).unwrap_or_else(|_| Form(Default::default()));
    let typed = form.get("user_code").and_then(normalize_user_code).map(|c| display_user_code(&c));
    device_form(&state, StatusCode::OK, typed.as_deref().unwrap_or(""), None)
}

/// `POST /device`: checks the user code and starts the login that answers it. Every wrong code spends an
/// attempt from the client IP's bucket, the one failed passwords spend too (RFC 8628 §5.1).
pub async fn verify(State(state): State<AppState>, peer: Peer, headers: HeaderMap, body: Bytes) -> Response {
    let form = match Form::parse(&headers, &body) {
        Ok(f) => f,
        Err(e) => return error_page(StatusCode::BAD_REQUEST, "Bad request", e),
    };
    let typed = form.get("user_code").unwrap_or("").trim();
    let Some(user_code) = normalize_user_code(typed) else {
        return device_form(
            &state,
            StatusCode::BAD_REQUEST,
            typed,
            Some("Enter the 8-letter code your device shows, such as BCDF-GHJK.".into()),
        );
    };
    let ip_text = client_ip(&state, &peer, &headers).map_or_else(|| "-".to_owned(), |i| i.to_string());
    let bf = state.config.brute_force;
    let ip_key = format!("ip:{ip_text}");
    let ip_limit = Limit { capacity: bf.per_ip_max_attempts, refill: bf.per_ip_refill_interval };
    let now_f = state.clock.now_f64();
    let store = state.storage.as_ref();
    match ratelimit::reserve(store, &ip_key, ip_limit, now_f).await {
        Ok(()) => {}
        Err(LimitError::Exhausted { retry_after }) => {
            tracing::warn!(target: "audit", event = "device_verification", result = "throttled", ip = %ip_text);
            let mut r = device_form(
                &state,
                StatusCode::TOO_MANY_REQUESTS,
                typed,
                Some(format!("Too many attempts. Try again in {retry_after} seconds.")),
            );
            r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
            return r;
        }
        Err(LimitError::Storage(e)) => return storage_failure(e),
    }
    let now = state.clock.now();
    let device = match state.storage.get_device_request_by_user_code(&user_code).await {
        Ok(d) if d.status == DeviceStatus::Pending && now <= d.expiry => d,
        Ok(_) | Err(StorageError::NotFound) => {
            tracing::info!(target: "audit", event = "device_verification", result = "failure", ip = %ip_text);
            return device_form(
                &state,
                StatusCode::BAD_REQUEST,
                typed,
                Some("This code is unknown, expired or already used. Check your device, or start again there.".into()),
            );
        }
        Err(e) => return storage_failure(e),
    };
    if let Err(e) = ratelimit::refund(store, &ip_key, ip_limit, now_f).await {
        return storage_failure(e);
    }
    let auth_life = state.config.expiry.auth_requests.as_secs() as i64;
    let request = AuthRequest {
        id: random_b64::<16>(),
        client_id: device.client_id.clone(),
        redirect_uri: state.config.endpoint("/device/approved"),
        scopes: device.scopes.clone(),
        state: None,
        nonce: None,
        code_challenge: None,
        code_challenge_method: None,
        csrf_token: csrf_value(&headers),
        expiry: (now + auth_life).min(device.expiry),
        device: Some(DeviceLogin { device_code: device.device_code, user_code: device.user_code }),
        connector_id: None,
        response_types: vec![],
    };
    begin_login(&state, request).await
}

#[derive(askama::Template)]
#[template(path = "device_done.html")]
struct DonePage {
    title: &'static str,
    message: &'static str,
}

fn gone() -> Response {
    error_page(
        StatusCode::BAD_REQUEST,
        "Device request expired",
        "This device request expired or was already answered. Start again on your device.",
    )
}

/// Called by the login form once the user signed in for a device login: approves the device request.
pub(crate) async fn approve(state: &AppState, device: &DeviceLogin, identity: Identity, ip: &str) -> Response {
    let now = state.clock.now();
    let sub = state.config.subject(&identity);
    let approved = state
        .storage
        .update_device_request(
            &device.device_code,
            Box::new(move |mut d| {
                if d.status != DeviceStatus::Pending || now > d.expiry {
                    return Err(StorageError::Conflict);
                }
                d.status = DeviceStatus::Approved { identity, auth_time: now };
                Ok(d)
            }),
        )
        .await;
    match approved {
        Ok(d) => {
            tracing::info!(target: "audit", event = "device_approved", sub = %sub, client = %d.client_id, ip);
            // 303: the browser follows with a GET, never re-posting the password.
            let to = format!("{}/device/approved", state.config.path_prefix());
            (StatusCode::SEE_OTHER, [(header::LOCATION, to)]).into_response()
        }
        Err(StorageError::Conflict | StorageError::NotFound) => gone(),
        Err(e) => storage_failure(e),
    }
}

/// `GET /device/approved`: where a device login ends.
pub async fn approved_page() -> Response {
    page(
        StatusCode::OK,
        &DonePage {
            title: "Device approved",
            message: "You are signed in on your device. Return to your terminal; you can close this window.",
        },
    )
}

/// `POST /device/deny` (`req`, `csrf`): the user refuses a device login from its form.
pub async fn deny(State(state): State<AppState>, peer: Peer, headers: HeaderMap, body: Bytes) -> Response {
    let (_, request) = match posted_login_form(&state, &headers, &body).await {
        Ok(v) => v,
        Err(resp) => return resp,
    };
    let Some(device) = request.device else {
        return error_page(StatusCode::BAD_REQUEST, "Bad request", "This sign-in is not for a device.");
    };
    match state.storage.delete_auth_request(&request.id).await {
        Ok(()) => {}
        Err(StorageError::NotFound) => return gone(),
        Err(e) => return storage_failure(e),
    }
    let denied = state
        .storage
        .update_device_request(
            &device.device_code,
            Box::new(|mut d| {
                if d.status != DeviceStatus::Pending {
                    return Err(StorageError::Conflict);
                }
                d.status = DeviceStatus::Denied;
                Ok(d)
            }),
        )
        .await;
    match denied {
        Ok(d) => {
            let ip = client_ip(&state, &peer, &headers).map_or_else(|| "-".to_owned(), |i| i.to_string());
            tracing::info!(target: "audit", event = "device_denied", client = %d.client_id, ip = %ip);
            page(
                StatusCode::OK,
                &DonePage {
                    title: "Device denied",
                    message: "The device was not signed in. You can close this window.",
                },
            )
        }
        Err(StorageError::Conflict | StorageError::NotFound) => gone(),
        Err(e) => storage_failure(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_codes_are_eight_unambiguous_letters() {
        for _ in 0..100 {
            let code = new_user_code();
            assert_eq!(normalize_user_code(&code).as_deref(), Some(code.as_str()), "{code}");
            assert!(!code.bytes().any(|b| b"AEIOU01".contains(&b)), "{code}");
        }
    }

    #[test]
    fn typed_user_codes_are_normalised_or_refused() {
        let cases = [
            ("WDJB-MJHT", Some("WDJBMJHT")),
            ("wdjb mjht", Some("WDJBMJHT")),
            (" wdjbmjht ", Some("WDJBMJHT")),
            ("WDJB-MJH", None),
            ("WDJB-MJHTX", None),
            ("ABCD-EFGH", None),
            ("WDJB-MJH0", None),
            ("", None),
        ];
        for (typed, expected) in cases {
            assert_eq!(normalize_user_code(typed).as_deref(), expected, "{typed:?}");
        }
        assert_eq!(display_user_code("WDJBMJHT"), "WDJB-MJHT");
    }
}
