//! Refresh latency through a real upstream (issue 10): a refresh at an issuer whose users come from
//! another issuer through the `oidc` connector (the downstream refresh grant calls the upstream's refresh
//! grant, verifies its ID token and rotates both tokens), next to a refresh at the upstream itself. Both
//! issuers run in this process on SQLite, signing RS256; refreshes are sequential, so the figures are
//! latency, not throughput.

use std::path::Path;
use std::time::Instant;

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::issuer::{
    browser, code_of, config, refresh, sign_in, tokens, CLIENT_ID, CLIENT_SECRET, GATEWAY_HOST, VERIFIER,
};
use crate::stats::Summary;

/// What the federation part measured.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct FederationResult {
    /// A refresh at the upstream issuer (its own user, no connector).
    pub(crate) direct: Summary,
    /// A refresh at the downstream issuer, through the `oidc` connector to the upstream.
    pub(crate) federated: Summary,
}

async fn serve(name: &str, text: String) -> anyhow::Result<()> {
    let config = ::issuer::config::Config::parse(&format!("{name}.yaml"), &text, &|_| None)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let storage = ::issuer::state::open_storage(&config).await.map_err(|e| anyhow::anyhow!("{e}"))?;
    let state = ::issuer::state::AppState::new(config, storage, ::issuer::clock::Clock::system())
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let addr: std::net::SocketAddr = state.config.web.http.as_deref().context("web.http")?.parse()?;
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let app = ::issuer::app(state).into_make_service_with_connect_info::<std::net::SocketAddr>();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(())
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

async fn latency(issuer: &str, mut refresh_token: String, n: usize) -> anyhow::Result<Summary> {
    let http = reqwest::Client::new();
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let started = Instant::now();
        let body = refresh(&http, issuer, &refresh_token).await?;
        samples.push(started.elapsed());
        refresh_token = body["refresh_token"].as_str().context("no refresh token")?.to_owned();
    }
    Ok(Summary::of(&mut samples))
}

pub(crate) async fn measure(work: &Path, quick: bool) -> anyhow::Result<FederationResult> {
    let dir = work.join("federation");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let (up_port, down_port) = (free_port()?, free_port()?);
    let upstream = format!("http://127.0.0.1:{up_port}");
    let downstream = format!("http://127.0.0.1:{down_port}");
    // The upstream registers the downstream issuer as a client (its /callback, on a loopback port).
    let up_text = config(up_port, &dir.join("upstream.db"), "RS256", "jwt").replace(
        "staticClients:\n",
        "staticClients:\n  - id: downstream\n    secret: downstream-secret\n    redirectURIs: [\"http://127.0.0.1/callback\"]\n",
    );
    serve("upstream", up_text).await?;
    let down_text = format!(
        "{}connectors:\n  - type: oidc\n    id: upstream\n    name: Upstream\n    config:\n      issuer: {upstream}\n      clientID: downstream\n      clientSecret: downstream-secret\n      redirectURI: {downstream}/callback\n      scopes: [profile, email, groups]\n      insecureEnableGroups: true\n",
        config(down_port, &dir.join("downstream.db"), "RS256", "jwt")
    );
    serve("downstream", down_text).await?;

    // A login at the downstream issuer through the upstream's form.
    let b = browser();
    let r = b.get(crate::issuer::auth_url(&downstream)).send().await?;
    let login_page = r.headers().get("location").and_then(|v| v.to_str().ok()).context("no login page")?.to_owned();
    let req = url::Url::parse(&format!("{downstream}{login_page}"))?
        .query_pairs()
        .find(|(k, _)| k == "req")
        .map(|(_, v)| v.into_owned())
        .context("no req")?;
    let r = b.get(format!("{downstream}/auth/upstream?req={req}")).send().await?;
    let upstream_auth = r.headers().get("location").and_then(|v| v.to_str().ok()).context("no upstream")?.to_owned();
    let callback = sign_in(&b, &upstream_auth).await?;
    let r = b.get(&callback).send().await?;
    let back = r.headers().get("location").and_then(|v| v.to_str().ok()).context("no code")?.to_owned();
    let code = code_of(&back)?;
    let redirect_uri = format!("http://{GATEWAY_HOST}/oauth2/callback");
    let r = b
        .post(format!("{downstream}/token"))
        .basic_auth(CLIENT_ID, Some(CLIENT_SECRET))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("redirect_uri", redirect_uri.as_str()),
            ("code_verifier", VERIFIER),
        ])
        .send()
        .await?;
    anyhow::ensure!(r.status() == 200, "downstream code exchange answered {}", r.status());
    let body: serde_json::Value = r.json().await?;
    let federated_rt = body["refresh_token"].as_str().context("no downstream refresh token")?.to_owned();
    let direct_rt = tokens(&upstream).await?["refresh_token"].as_str().context("no refresh token")?.to_owned();

    let n = if quick { 50 } else { 500 };
    let direct = latency(&upstream, direct_rt, n).await?;
    let federated = latency(&downstream, federated_rt, n).await?;
    Ok(FederationResult { direct, federated })
}
