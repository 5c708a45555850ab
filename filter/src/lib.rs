//! The proxy-wasm authenticator: OIDC login with encrypted session cookies, ID-token caching and refresh,
//! and bearer-JWT validation, for Envoy's `envoy.filters.http.wasm`.
//!
//! Protocol logic lives in plain modules that take time and randomness as values and can be tested
//! natively; `host` is the only code that talks to the proxy-wasm ABI and is compiled for wasm32 only.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod cache;
pub mod callout;
pub mod config;
pub mod discovery;
pub mod flow;
#[doc(hidden)]
pub mod fuzzing;
pub mod header_map;
pub mod oauth;
pub mod random;
pub mod request;
pub mod revocation;
pub mod session;
pub mod token;
pub mod url;

#[cfg(target_arch = "wasm32")]
mod host;
