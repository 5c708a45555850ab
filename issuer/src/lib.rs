//! An OpenID Connect issuer for Kubernetes and the gateway filter: discovery, JWKS with rotation, a login
//! form over configured connectors, authorization code + PKCE, rotating refresh tokens with a reuse grace
//! window, revocation, logout and brute-force protection, the device authorization grant (RFC 8628), and
//! Kubernetes access (kube-apiserver configuration, a kubeconfig page, the `kubectl-oidc_login` plugin).
//! `main.rs` only parses arguments and serves.
#![warn(missing_docs)]

pub mod backchannel;
pub mod clock;
pub mod config;
pub mod connector;
pub mod frontend;
#[doc(hidden)]
pub mod fuzzing;
pub mod gc;
pub mod grant;
pub mod grpc;
pub mod http;
pub mod keyring;
pub mod keys;
pub mod kube;
pub mod logging;
pub mod metrics;
pub mod oauth;
pub mod password_attempt;
pub mod ratelimit;
pub mod revocation;
pub mod session;
pub mod state;
pub mod storage;
pub mod token;

pub use state::AppState;

/// The issuer's HTTP application.
pub fn app(state: AppState) -> axum::Router {
    http::router(state)
}

/// The `telemetry.http` listener's application: `/metrics`, `/healthz`, `/healthz/live`, `/healthz/ready`.
pub fn telemetry_app(state: AppState) -> axum::Router {
    http::telemetry_router(state)
}
