//! The HTTP surface: routes, shared extractors (forms, client authentication, client IP) and the
//! middleware that logs internal errors and counts responses. Endpoints live in `http/*`.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

use axum::body::Bytes;
use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use subtle::ConstantTimeEq;
use tower_http::limit::RequestBodyLimitLayer;

use crate::config::Client;
use crate::oauth::{InternalError, TokenError};
use crate::state::AppState;

pub mod assets;
pub mod authorize;
pub mod device;
pub mod discovery;
pub mod introspect;
pub mod kubeconfig;
pub mod login;
pub mod logout;
pub mod revocations;
pub mod revoke;
pub mod token;
pub mod userinfo;

/// Largest request body accepted (forms are small).
const BODY_LIMIT: usize = 64 * 1024;

/// The issuer's router, mounted under the issuer URL's path.
pub fn router(state: AppState) -> Router {
    // The endpoints a browser app calls with fetch(), which may answer CORS (Dex's `web.allowedOrigins`).
    let api = Router::new()
        .route("/.well-known/openid-configuration", get(discovery::openid_configuration))
        .route("/keys", get(discovery::keys))
        .route("/token", post(token::token))
        .route("/token/introspect", post(introspect::introspect))
        .route("/device/code", post(device::device_authorization))
        .route("/userinfo", get(userinfo::userinfo).post(userinfo::userinfo))
        .route("/revoke", post(revoke::revoke))
        .route("/revocations", get(revocations::revocations));
    let api = match cors(&state.config.web) {
        Some(layer) => api.layer(layer),
        None => api,
    };
    let routes = api
        .route("/auth", get(authorize::authorize).post(authorize::authorize_post))
        .route("/login", get(login::login_page).post(login::login))
        .route("/auth/{connector}", get(login::connector_route))
        .route("/callback", get(login::callback))
        .route("/device", get(device::verification_page).post(device::verify))
        .route("/device/approved", get(device::approved_page))
        .route("/device/deny", post(device::deny))
        .route("/logout", get(logout::logout).post(logout::logout_post))
        .route("/theme/{*path}", get(assets::theme))
        .route("/static/{*path}", get(assets::static_file))
        .merge(telemetry_routes());
    let routes = match &state.config.kubernetes {
        Some(k) => routes
            .route(&k.kubeconfig_path, get(kubeconfig::start))
            .route(&k.callback_path(), get(kubeconfig::callback)),
        None => routes,
    };
    let prefix = state.config.path_prefix();
    let app = if prefix.is_empty() { routes } else { Router::new().nest(&prefix, routes) };
    // The fallback first, so that the layers (headers, metrics) wrap a 404 too.
    app.fallback(|| async { (StatusCode::NOT_FOUND, "not found\n") })
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .layer(middleware::from_fn_with_state(state.clone(), with_chrome))
        .layer(RequestBodyLimitLayer::new(BODY_LIMIT))
        .with_state(state)
}

/// The telemetry listener's routes (Dex's `telemetry.http`), at the root whatever the issuer's path.
pub fn telemetry_router(state: AppState) -> Router {
    telemetry_routes().fallback(|| async { (StatusCode::NOT_FOUND, "not found\n") }).with_state(state)
}

/// `/metrics` and the health checks: on the public listeners and on `telemetry.http`.
fn telemetry_routes() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(discovery::healthz))
        .route("/healthz/live", get(discovery::healthz_live))
        .route("/healthz/ready", get(discovery::healthz_ready))
        .route("/metrics", get(discovery::metrics))
}

/// CORS for `web.allowedOrigins` (Fetch §3.2): a preflight from an allowed origin is answered before any
/// handler runs (so `OPTIONS` needs no client authentication), responses to it carry
/// `Access-Control-Allow-Origin`, and any other origin gets no CORS headers at all. `None` when no origin
/// is allowed. Credentials (cookies) are never allowed: these endpoints authenticate with the
/// `Authorization` header or the form.
fn cors(web: &crate::config::Web) -> Option<tower_http::cors::CorsLayer> {
    use tower_http::cors::{AllowOrigin, CorsLayer};
    if web.allowed_origins.is_empty() {
        return None;
    }
    let origin = if web.allowed_origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(web.allowed_origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()))
    };
    let headers: Vec<header::HeaderName> = if web.allowed_headers.is_empty() {
        vec![header::AUTHORIZATION, header::CONTENT_TYPE]
    } else {
        web.allowed_headers.iter().filter_map(|h| header::HeaderName::from_bytes(h.as_bytes()).ok()).collect()
    };
    Some(
        CorsLayer::new()
            .allow_origin(origin)
            .allow_methods([axum::http::Method::GET, axum::http::Method::POST])
            .allow_headers(headers)
            .max_age(std::time::Duration::from_secs(600)),
    )
}

/// Every page rendered while handling the request shows the configured name, theme and logo.
async fn with_chrome(State(state): State<AppState>, req: Request, next: Next) -> Response {
    crate::frontend::with_chrome(state.site.chrome().clone(), next.run(req)).await
}

/// Logs internal errors (which the client only sees as a bare 500) and counts responses.
async fn observe(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let handler =
        req.extensions().get::<MatchedPath>().map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = req.method().clone();
    let mut resp = next.run(req).await;
    if let Some(InternalError(e)) = resp.extensions().get::<InternalError>() {
        tracing::error!(%method, handler, error = %e, "internal error");
    }
    state.metrics.http.get_or_create(&crate::metrics::HttpLabels { handler, code: resp.status().as_u16() }).inc();
    let h = resp.headers_mut();
    h.entry(header::X_CONTENT_TYPE_OPTIONS).or_insert(HeaderValue::from_static("nosniff"));
    h.entry(header::REFERRER_POLICY).or_insert(HeaderValue::from_static("no-referrer"));
    // Dex's `web.headers`: the operator's values win (validated at start-up).
    for (name, value) in &state.config.web.headers {
        if let (Ok(n), Ok(v)) = (header::HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_str(value)) {
            h.insert(n, v);
        }
    }
    resp
}

// === forms ===

/// An `application/x-www-form-urlencoded` body where each parameter appears at most once (RFC 6749 §3.2).
pub struct Form(HashMap<String, String>);

impl Form {
    /// Parses a body; the error says what is wrong, for `invalid_request`.
    pub fn parse(headers: &HeaderMap, body: &Bytes) -> Result<Self, String> {
        let ct = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
        if !body.is_empty() && !ct.to_ascii_lowercase().starts_with("application/x-www-form-urlencoded") {
            return Err("the body must be application/x-www-form-urlencoded".to_owned());
        }
        Self::from_pairs(
            serde_urlencoded::from_bytes::<Vec<(String, String)>>(body)
                .map_err(|_| "malformed form body".to_owned())?,
        )
    }

    /// Parses a query string.
    pub fn from_query(query: Option<&str>) -> Result<Self, String> {
        let pairs = serde_urlencoded::from_str::<Vec<(String, String)>>(query.unwrap_or(""))
            .map_err(|_| "malformed query string".to_owned())?;
        Self::from_pairs(pairs)
    }

    fn from_pairs(pairs: Vec<(String, String)>) -> Result<Self, String> {
        let mut map = HashMap::with_capacity(pairs.len());
        for (k, v) in pairs {
            if map.insert(k.clone(), v).is_some() {
                return Err(format!("parameter {k} is repeated"));
            }
        }
        Ok(Self(map))
    }

    /// A parameter; empty values count as absent (RFC 6749 §3.1).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str).filter(|v| !v.is_empty())
    }

    /// A required parameter.
    pub fn require(&self, key: &str) -> Result<&str, TokenError> {
        self.get(key).ok_or_else(|| TokenError::InvalidRequest(format!("missing parameter {key}")))
    }
}

// === client authentication ===

/// The client credentials a token, revocation or introspection request presents, before any lookup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCredentials {
    /// The client id (from the Authorization header or the form).
    pub id: String,
    /// The secret, when one was given.
    pub secret: Option<String>,
    /// Whether the client used HTTP Basic (`invalid_client` then answers 401 with `WWW-Authenticate`).
    pub basic: bool,
}

/// Parses the client credentials of a request: `client_secret_basic` (the Authorization header),
/// `client_secret_post` (the form), or only a `client_id` (public clients). Exactly one method may be used
/// (RFC 6749 §2.3). Pure: [`authenticate_client`] looks the client up and compares the secret.
pub fn parse_client_credentials(headers: &HeaderMap, form: &Form) -> Result<ClientCredentials, TokenError> {
    let basic = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| {
        let (scheme, rest) = v.split_once(' ')?;
        scheme.eq_ignore_ascii_case("basic").then(|| rest.trim().to_owned())
    });
    match (basic, form.get("client_secret")) {
        (Some(_), Some(_)) => Err(TokenError::InvalidRequest("use one client authentication method, not two".into())),
        (Some(b), None) => {
            let decoded = STANDARD
                .decode(b)
                .ok()
                .and_then(|d| String::from_utf8(d).ok())
                .ok_or(TokenError::InvalidClient { basic: true })?;
            let (id, secret) = decoded.split_once(':').ok_or(TokenError::InvalidClient { basic: true })?;
            // RFC 6749 §2.3.1: both halves are form-urlencoded before base64.
            let unescape = |s: &str| {
                serde_urlencoded::from_str::<Vec<(String, String)>>(&format!("v={s}"))
                    .ok()
                    .and_then(|v| v.into_iter().next())
                    .map(|(_, v)| v)
            };
            let id = unescape(id).ok_or(TokenError::InvalidClient { basic: true })?;
            if form.get("client_id").is_some_and(|f| f != id) {
                return Err(TokenError::InvalidRequest("client_id does not match the Authorization header".into()));
            }
            Ok(ClientCredentials { id, secret: unescape(secret), basic: true })
        }
        (None, secret) => {
            let id = form.get("client_id").ok_or(TokenError::InvalidClient { basic: false })?.to_owned();
            Ok(ClientCredentials { id, secret: secret.map(str::to_owned), basic: false })
        }
    }
}

/// Authenticates the client of a token, revocation or introspection request: `client_secret_basic`,
/// `client_secret_post`, or (public clients) `none`. Exactly one method may be used (RFC 6749 §2.3).
pub async fn authenticate_client<'a>(
    state: &'a AppState,
    headers: &HeaderMap,
    form: &Form,
) -> Result<std::borrow::Cow<'a, Client>, TokenError> {
    let ClientCredentials { id, secret, basic: used_basic } = parse_client_credentials(headers, form)?;
    let client =
        state.client(&id).await.map_err(TokenError::from)?.ok_or(TokenError::InvalidClient { basic: used_basic })?;
    let ok = match (&client.secret, secret.as_deref().filter(|s| !s.is_empty())) {
        (Some(expected), Some(given)) => bool::from(expected.as_bytes().ct_eq(given.as_bytes())),
        (None, None) => client.public,
        _ => false,
    };
    if ok {
        Ok(client)
    } else {
        Err(TokenError::InvalidClient { basic: used_basic })
    }
}

// === client IP ===

/// The TCP peer, when the server was started with connect info (in-process tests have none).
pub struct Peer(pub Option<SocketAddr>);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Peer {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Peer(parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0)))
    }
}

/// The client's address: the TCP peer, or the first untrusted hop of `X-Forwarded-For` when the peer is a
/// trusted proxy.
pub fn client_ip(state: &AppState, peer: &Peer, headers: &HeaderMap) -> Option<IpAddr> {
    let peer = peer.0.map(|a| a.ip())?;
    let web = &state.config.web;
    let trusted = |ip: &IpAddr| web.proxies.iter().any(|n| n.contains(ip));
    if !trusted(&peer) {
        return Some(peer);
    }
    let forwarded = headers.get(web.client_ip_header()).and_then(|v| v.to_str().ok()).unwrap_or("");
    let hops: Vec<IpAddr> = forwarded.split(',').filter_map(|h| h.trim().parse().ok()).collect();
    Some(hops.into_iter().rev().find(|ip| !trusted(ip)).unwrap_or(peer))
}

// === pages ===

/// Renders a template into a response with the page headers (no framing, no caching, no scripts; see
/// [`crate::frontend::Chrome::csp`]). The template's `base.html` gets the request's
/// [`crate::frontend::Chrome`] as the runtime value `chrome`.
pub fn page(status: StatusCode, t: &impl askama::Template) -> Response {
    page_with_csp(status, t, None)
}

/// Like `page`, but inline scripts carrying `nonce` may run (and nothing else): for a page whose
/// template renders the nonce into its one `<script nonce>`.
pub fn page_with_script_nonce(status: StatusCode, t: &impl askama::Template, nonce: &str) -> Response {
    page_with_csp(status, t, Some(nonce))
}

fn page_with_csp(status: StatusCode, t: &impl askama::Template, nonce: Option<&str>) -> Response {
    let chrome = crate::frontend::current();
    let csp = match nonce {
        Some(n) => HeaderValue::from_str(&format!("{}; script-src 'nonce-{n}'", chrome.csp)),
        None => HeaderValue::from_str(&chrome.csp),
    };
    let csp = match csp {
        Ok(v) => v,
        Err(e) => return crate::oauth::internal(e),
    };
    let values: (&str, &dyn std::any::Any) = ("chrome", chrome.as_ref());
    match t.render_with_values(&values) {
        Ok(body) => {
            let mut r = (status, Html(body)).into_response();
            let h = r.headers_mut();
            h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
            h.insert(header::CONTENT_SECURITY_POLICY, csp);
            r
        }
        Err(e) => crate::oauth::internal(e),
    }
}

/// The page shown when the request cannot be sent back to the client.
#[derive(askama::Template)]
#[template(path = "error.html")]
pub struct ErrorPage {
    /// Heading.
    pub title: String,
    /// Explanation.
    pub message: String,
}

/// An error page response.
pub fn error_page(status: StatusCode, title: &str, message: impl Into<String>) -> Response {
    page(status, &ErrorPage { title: title.to_owned(), message: message.into() })
}

/// A page for a storage failure: while the database cannot be reached, a 503 the person can retry (with
/// `Retry-After`); any other failure a bare 500 (logged).
pub fn storage_failure(e: crate::storage::StorageError) -> Response {
    match e {
        crate::storage::StorageError::Unavailable(why) => {
            tracing::warn!(error = %why, "storage unavailable: answering 503");
            let mut r = error_page(
                StatusCode::SERVICE_UNAVAILABLE,
                "Try again in a moment",
                "Signing in is briefly unavailable (the identity provider cannot reach its database). Reload this \
                 page in a few seconds.",
            );
            if let Ok(v) = HeaderValue::from_str(&crate::oauth::RETRY_AFTER_SECS.to_string()) {
                r.headers_mut().insert(header::RETRY_AFTER, v);
            }
            r
        }
        other => crate::oauth::internal(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(authorization: Option<&str>, body: &'static str) -> (HeaderMap, Form) {
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/x-www-form-urlencoded"));
        if let Some(a) = authorization {
            h.insert(header::AUTHORIZATION, HeaderValue::from_str(a).unwrap());
        }
        let form = Form::parse(&h, &Bytes::from_static(body.as_bytes())).unwrap();
        (h, form)
    }

    #[test]
    fn client_credentials_come_from_exactly_one_method() {
        let ok = |id: &str, secret: Option<&str>, basic| {
            Ok::<_, String>(ClientCredentials { id: id.into(), secret: secret.map(Into::into), basic })
        };
        // "a%3Ab:s%20t" base64: an id with a colon and a secret with a space, form-encoded (RFC 6749 §2.3.1).
        let cases: [(Option<&str>, &'static str, Result<ClientCredentials, String>); 9] = [
            (None, "client_id=web&client_secret=s", ok("web", Some("s"), false)),
            (None, "client_id=cli", ok("cli", None, false)),
            (None, "client_id=", Err("invalid_client".into())),
            (Some("Basic d2ViOnM="), "", ok("web", Some("s"), true)),
            (Some("basic  d2ViOnM= "), "client_id=web", ok("web", Some("s"), true)),
            (Some("Basic YSUzQWI6cyUyMHQ="), "", ok("a:b", Some("s t"), true)),
            (
                Some("Basic d2ViOnM="),
                "client_secret=s",
                Err("invalid_request: use one client authentication method, not two".into()),
            ),
            (
                Some("Basic d2ViOnM="),
                "client_id=other",
                Err("invalid_request: client_id does not match the Authorization header".into()),
            ),
            (Some("Basic bm8tY29sb24="), "", Err("invalid_client".into())),
        ];
        for (authorization, body, want) in cases {
            let (h, form) = request(authorization, body);
            let got = parse_client_credentials(&h, &form).map_err(|e| e.to_string());
            assert_eq!(got, want, "{authorization:?} {body:?}");
        }
    }
}
