//! panva's `oidc-provider` (npm), the reference the issuer is compared with: `server.mjs` configures it
//! like our issuer (same client, same signing algorithm, refresh-token rotation on) with its in-memory
//! adapter, and seeds grants through its model API because it ships no password login of its own.

use std::path::Path;

use anyhow::{bail, Context};

use crate::process::{free_port, Server};

/// The server script, written next to `node_modules/oidc-provider`.
const SERVER: &str = include_str!("oidc_provider/server.mjs");

/// Starts `node server.mjs PORT ALG` in `node_dir` (where `npm install oidc-provider` ran).
pub(crate) async fn start(node_dir: &Path, alg: &str) -> anyhow::Result<Server> {
    if !node_dir.join("node_modules/oidc-provider/package.json").exists() {
        bail!("oidc-provider is not installed in {} (scripts/bench.sh installs it)", node_dir.display());
    }
    std::fs::write(node_dir.join("server.mjs"), SERVER)?;
    let port = free_port()?;
    let port_arg = port.to_string();
    let node = Path::new("node");
    let log = node_dir.join(format!("oidc-provider-{alg}.log"));
    Server::start(node, &["server.mjs", &port_arg, alg], node_dir, port, "/.well-known/openid-configuration", &log)
        .await
}

/// `n` refresh tokens, each of its own grant.
pub(crate) async fn seed(server: &Server, n: usize) -> anyhow::Result<Vec<String>> {
    let r = reqwest::Client::new().post(format!("{}/bench/seed?n={n}", server.url)).send().await?;
    if r.status() != 200 {
        bail!("seeding oidc-provider answered {}: {}", r.status(), r.text().await.unwrap_or_default());
    }
    r.json().await.context("seed answer")
}
