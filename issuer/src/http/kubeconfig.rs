//! The kubeconfig page: the issuer acts as the Kubernetes client (`kubernetes.clientID`) to itself. `GET
//! {kubeconfigPath}` starts an ordinary authorization request (code + PKCE S256, with `offline_access`),
//! so the user meets the same login form, CSRF binding and brute-force buckets as any client; the callback
//! checks the state against a cookie, redeems the code by calling the code grant directly (no HTTP), and
//! shows kubeconfigs for each configured cluster. The callback URL is registered implicitly as a redirect
//! URI of that client (see `config`). Building the documents is `kube`'s job.
//!
//! Tokens appear only in the page body (and its `data:` download links, which never reach a server):
//! never in a URL, a query string or a log line.

use std::collections::HashMap;

use aws_lc_rs::digest;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Redirect, Response};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD as B64};
use base64::Engine;
use subtle::ConstantTimeEq;

use super::authorize::cookie;
use super::{error_page, page_with_script_nonce, Form};
use crate::config::{Cluster, Kubernetes};
use crate::kube::{kubeconfigs, ClusterKubeconfigs, Credentials};
use crate::oauth::{internal, redirect_with};
use crate::state::AppState;
use crate::token::{random_b64, IdTokenClaims};

/// Cookie binding the callback to the browser that started the flow: `<state>.<PKCE verifier>`.
const FLOW_COOKIE: &str = "issuer_kubeconfig";

/// What the page asks for: the groups and email kube-apiserver maps, and a refresh token for kubectl.
const SCOPE: &str = "openid email profile groups offline_access";

/// Only routed when `kubernetes:` is configured; this answers the impossible otherwise.
fn not_configured() -> Response {
    error_page(StatusCode::NOT_FOUND, "Not found", "Kubernetes access is not configured.")
}

fn flow_cookie(state: &AppState, k: &Kubernetes, value: &str, max_age: u64) -> Option<HeaderValue> {
    let secure = if state.config.issuer.scheme() == "https" { "; Secure" } else { "" };
    let path = format!("{}{}", state.config.path_prefix(), k.kubeconfig_path);
    HeaderValue::from_str(&format!(
        "{FLOW_COOKIE}={value}; Path={path}; Max-Age={max_age}; HttpOnly; SameSite=Lax{secure}"
    ))
    .ok()
}

/// `GET {kubeconfigPath}`: starts the login.
pub async fn start(State(state): State<AppState>) -> Response {
    let Some(k) = state.config.kubernetes.as_ref() else { return not_configured() };
    let flow_state = random_b64::<16>();
    let verifier = random_b64::<32>();
    let challenge = B64.encode(digest::digest(&digest::SHA256, verifier.as_bytes()));
    let auth = redirect_with(
        &state.config.endpoint("/auth"),
        &[
            ("client_id", &k.client_id),
            ("redirect_uri", &state.config.endpoint(&k.callback_path())),
            ("response_type", "code"),
            ("scope", SCOPE),
            ("state", &flow_state),
            ("code_challenge", &challenge),
            ("code_challenge_method", "S256"),
        ],
    );
    let mut r = Redirect::to(&auth).into_response();
    let max_age = state.config.expiry.auth_requests.as_secs();
    if let Some(c) = flow_cookie(&state, k, &format!("{flow_state}.{verifier}"), max_age) {
        r.headers_mut().append(header::SET_COOKIE, c);
    }
    r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// One cluster as the page shows it.
struct ClusterView {
    k: ClusterKubeconfigs,
    oidc_href: String,
    exec_href: String,
}

#[derive(askama::Template)]
#[template(path = "kubeconfig.html")]
struct KubeconfigPage<'a> {
    email: &'a str,
    groups: Vec<String>,
    groups_prefix: &'a str,
    issuer: &'a str,
    client_id: &'a str,
    clusters: Vec<ClusterView>,
    example: bool,
    nonce: String,
}

fn data_url(yaml: &str) -> String {
    format!("data:application/yaml;base64,{}", STANDARD.encode(yaml))
}

fn restart(status: StatusCode, message: &str) -> Response {
    error_page(status, "Kubeconfig not issued", format!("{message} Open the kubeconfig page again to start over."))
}

/// `GET {kubeconfigPath}/callback?code=…&state=…`: redeems the code and shows the kubeconfigs.
pub async fn callback(State(state): State<AppState>, uri: Uri, headers: HeaderMap) -> Response {
    let Some(k) = state.config.kubernetes.as_ref() else { return not_configured() };
    let query = match Form::from_query(uri.query()) {
        Ok(q) => q,
        Err(e) => return error_page(StatusCode::BAD_REQUEST, "Bad request", e),
    };
    if let Some(error) = query.get("error") {
        let description = query.get("error_description").unwrap_or("");
        return restart(StatusCode::BAD_REQUEST, &format!("The login failed ({error}: {description})."));
    }
    let Some((expected_state, verifier)) = cookie(&headers, FLOW_COOKIE).and_then(|c| c.split_once('.')) else {
        return restart(StatusCode::BAD_REQUEST, "This browser did not start this login (its cookie is missing).");
    };
    let state_ok = query.get("state").is_some_and(|s| bool::from(s.as_bytes().ct_eq(expected_state.as_bytes())));
    let Some(code) = query.get("code").filter(|_| state_ok) else {
        return restart(StatusCode::BAD_REQUEST, "This login does not belong to this browser.");
    };
    let client = match state.client(&k.client_id).await {
        Ok(c) => c,
        Err(e) => return super::storage_failure(e),
    };
    let Some(client) = client else {
        return internal(format!("kubernetes.clientID {:?} is not a client", k.client_id));
    };
    let redirect_uri = state.config.endpoint(&k.callback_path());
    let form = Form(HashMap::from([
        ("code".to_owned(), code.to_owned()),
        ("redirect_uri".to_owned(), redirect_uri),
        ("code_verifier".to_owned(), verifier.to_owned()),
    ]));
    let tokens = match crate::grant::authorization_code::exchange(&state, &client, &form).await {
        Ok(t) => t,
        Err(crate::oauth::TokenError::Internal(e)) => return internal(e),
        Err(e) => return restart(StatusCode::BAD_REQUEST, &format!("The code could not be redeemed ({e}).")),
    };
    let id_token = tokens.id_token.clone().unwrap_or_default();
    let Some(claims) = id_token
        .split('.')
        .nth(1)
        .and_then(|p| B64.decode(p).ok())
        .and_then(|b| serde_json::from_slice::<IdTokenClaims>(&b).ok())
    else {
        return internal("the ID token just minted does not parse");
    };

    let issuer = state.config.issuer.as_str().trim_end_matches('/');
    let issuer_ca = k.issuer_ca.as_ref().map(|c| c.pem.as_str());
    let credentials = Credentials {
        issuer,
        client_id: &client.id,
        client_secret: client.secret.as_deref(),
        issuer_ca,
        id_token: &id_token,
        refresh_token: tokens.refresh_token.as_deref(),
    };
    let example = k.clusters.is_empty();
    let placeholder;
    let clusters: &[Cluster] = if example {
        placeholder = [Cluster {
            name: "kubernetes".to_owned(),
            server: "https://kube-apiserver.example:6443".to_owned(),
            certificate_authority: None,
        }];
        &placeholder
    } else {
        &k.clusters
    };
    let mut views = Vec::with_capacity(clusters.len());
    for c in clusters {
        match kubeconfigs(&credentials, c) {
            Ok(k) => views.push(ClusterView { oidc_href: data_url(&k.oidc), exec_href: data_url(&k.exec), k }),
            Err(e) => return internal(e),
        }
    }
    tracing::info!(target: "audit", event = "kubeconfig_issued", sub = %claims.sub, client = %client.id, clusters = views.len());
    let nonce = random_b64::<16>();
    let email = claims.email.unwrap_or_default();
    let t = KubeconfigPage {
        email: &email,
        groups: claims.groups.unwrap_or_default(),
        groups_prefix: &k.groups_prefix,
        issuer,
        client_id: &client.id,
        clusters: views,
        example,
        nonce: nonce.clone(),
    };
    let mut r = page_with_script_nonce(StatusCode::OK, &t, &nonce);
    if let Some(c) = flow_cookie(&state, k, "", 0) {
        r.headers_mut().append(header::SET_COOKIE, c);
    }
    r
}
