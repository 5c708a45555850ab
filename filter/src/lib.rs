//! The proxy-wasm authenticator. Protocol logic lives in plain modules; `host` is the only code that talks
//! to the proxy-wasm ABI and is compiled for wasm32 only.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

#[cfg(target_arch = "wasm32")]
mod host;
