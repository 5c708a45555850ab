//! The tokengate issuer as the benchmarks run it: the release binary with a generated configuration
//! (SQLite on disk, one confidential client, one password user), and the browser steps that sign in
//! through its form and exchange the code, which the load phases need for their first refresh tokens.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use serde_json::Value;

use crate::process::{free_port, Server};

/// The benchmark's client, as registered in the generated configuration.
pub(crate) const CLIENT_ID: &str = "bench";
pub(crate) const CLIENT_SECRET: &str = "bench-secret";
/// The gateway host the filter runs on; its callback is the client's redirect URI.
pub(crate) const GATEWAY_HOST: &str = "127.0.0.1:8080";
pub(crate) const USER: &str = "admin@example.com";
pub(crate) const PASSWORD: &str = "password";
/// "password" at bcrypt cost 10, as in `issuer/examples/dev.yaml`.
pub(crate) const PASSWORD_HASH: &str = "$2a$10$2b2cU8CPhOTaGrs1HRQuAueS7JTT5ZHsHSzYiFPm1leZck7Mc8T4W";
pub(crate) const SCOPE: &str = "openid email profile groups offline_access";
pub(crate) const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";

/// The issuer's configuration for a benchmark: like `dev.yaml`, with the database at `db`, signing with `alg`
/// and issuing access tokens in `format` (`oauth2.accessTokenFormat`: `jwt` or `opaque`).
pub(crate) fn config(port: u16, db: &Path, alg: &str, format: &str) -> String {
    format!(
        r#"issuer: http://127.0.0.1:{port}
web:
  http: 127.0.0.1:{port}
storage:
  type: sqlite3
  config:
    file: {db}
expiry:
  idTokens: 10m
  signingKeys: 6h
  refreshTokens:
    validIfNotUsedFor: 168h
    absoluteLifetime: 720h
    reuseInterval: 2m
signing:
  algorithm: {alg}
oauth2:
  accessTokenFormat: {format}
logger:
  level: info
  format: text
staticClients:
  - id: {CLIENT_ID}
    name: Benchmark
    secret: {CLIENT_SECRET}
    redirectURIs:
      - http://{GATEWAY_HOST}/oauth2/callback
enablePasswordDB: true
staticPasswords:
  - email: {USER}
    hash: "{PASSWORD_HASH}"
    username: admin
    userID: 08a8684b-db88-4b73-90a9-3cd1661f5466
    groups: [admins, developers]
"#,
        db = db.display()
    )
}

/// Starts `bin serve` with a fresh database under `dir`, signing with `alg`, access tokens in `format`.
pub(crate) async fn start(bin: &Path, dir: &Path, alg: &str, format: &str) -> anyhow::Result<Server> {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let port = free_port()?;
    let config_path: PathBuf = dir.join("issuer.yaml");
    std::fs::write(&config_path, config(port, &dir.join("issuer.db"), alg, format))?;
    let config_arg = config_path.display().to_string();
    Server::start(bin, &["serve", "--config", &config_arg], dir, port, "/healthz", &dir.join("issuer.log")).await
}

/// A client that keeps cookies and does not follow redirects, like the e2e tests' browser.
pub(crate) fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .cookie_store(true)
        .build()
        .unwrap_or_default()
}

fn enc(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// The authorization URL the gateway client would send a browser to.
pub(crate) fn auth_url(issuer: &str) -> String {
    format!(
        "{issuer}/auth?client_id={CLIENT_ID}&redirect_uri={}&response_type=code&scope={}&state=s&code_challenge={CHALLENGE}&code_challenge_method=S256",
        enc(&format!("http://{GATEWAY_HOST}/oauth2/callback")),
        enc(SCOPE)
    )
}

/// Follows `auth_url` to the login form, signs in, and returns where the issuer sends the browser back.
pub(crate) async fn sign_in(browser: &reqwest::Client, auth_url: &str) -> anyhow::Result<String> {
    let r = browser.get(auth_url).send().await?;
    if r.status() != 303 {
        bail!("GET /auth answered {}, expected 303 to the login form", r.status());
    }
    let origin = auth_url.split("/auth?").next().unwrap_or_default();
    let location = r.headers().get("location").and_then(|v| v.to_str().ok()).unwrap_or_default();
    let form_url = if location.starts_with("http") { location.to_owned() } else { format!("{origin}{location}") };
    let html = browser.get(&form_url).send().await?.text().await?;
    let hidden = |name: &str| -> anyhow::Result<String> {
        let marker = format!("name=\"{name}\" value=\"");
        let start = html.find(&marker).with_context(|| format!("no {name} field in the login form"))? + marker.len();
        Ok(html[start..].split('"').next().unwrap_or_default().to_owned())
    };
    let form =
        [("req", hidden("req")?), ("csrf", hidden("csrf")?), ("login", USER.into()), ("password", PASSWORD.into())];
    let r = browser.post(format!("{origin}/login")).form(&form).send().await?;
    if r.status() != 303 {
        bail!("POST /login answered {}, expected 303", r.status());
    }
    Ok(r.headers().get("location").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned())
}

/// The `code` parameter of a redirect.
pub(crate) fn code_of(location: &str) -> anyhow::Result<String> {
    url::Url::parse(location)?
        .query_pairs()
        .find(|(k, _)| k == "code")
        .map(|(_, v)| v.into_owned())
        .with_context(|| format!("no code in {location}"))
}

/// Signs in and exchanges the code: the whole token response.
pub(crate) async fn tokens(issuer: &str) -> anyhow::Result<Value> {
    let browser = browser();
    let code = code_of(&sign_in(&browser, &auth_url(issuer)).await?)?;
    let redirect_uri = format!("http://{GATEWAY_HOST}/oauth2/callback");
    let form = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", redirect_uri.as_str()),
        ("code_verifier", VERIFIER),
    ];
    let r =
        browser.post(format!("{issuer}/token")).basic_auth(CLIENT_ID, Some(CLIENT_SECRET)).form(&form).send().await?;
    if r.status() != 200 {
        bail!("code exchange answered {}: {}", r.status(), r.text().await.unwrap_or_default());
    }
    Ok(r.json().await?)
}

/// One refresh grant (for collecting distinct ID tokens; the load phase uses [`crate::load`]).
pub(crate) async fn refresh(http: &reqwest::Client, issuer: &str, refresh_token: &str) -> anyhow::Result<Value> {
    let r = http
        .post(format!("{issuer}/token"))
        .basic_auth(CLIENT_ID, Some(CLIENT_SECRET))
        .form(&[("grant_type", "refresh_token"), ("refresh_token", refresh_token)])
        .send()
        .await?;
    if r.status() != 200 {
        bail!("refresh answered {}: {}", r.status(), r.text().await.unwrap_or_default());
    }
    Ok(r.json().await?)
}
