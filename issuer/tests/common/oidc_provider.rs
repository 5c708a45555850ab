//! panva's `oidc-provider` (an OpenID Certified provider, installed by `scripts/oidc-provider.sh`) started
//! by a test with `tests/oidc-provider/server.mjs` on a free loopback port, and a browser-like walk through
//! its own login and consent pages. Shared by the issuer's tests (the provider as the `oidc` connector's
//! upstream) and the filter's e2e tests (the provider as the filter's issuer), through `#[path]`.
#![allow(dead_code, unreachable_pub)] // each test binary uses a different part

use std::path::PathBuf;
use std::time::Duration;

/// Where `scripts/oidc-provider.sh` installed the provider: `$TOKENGATE_NODE_DIR`, else
/// `$CARGO_TARGET_DIR/node`, else `target/node`.
pub fn node_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("TOKENGATE_NODE_DIR") {
        return PathBuf::from(d);
    }
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../target")))
        .join("node")
}

/// The provider process; killed on drop.
pub struct OidcProvider {
    child: std::process::Child,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// The issuer, under `/realms/acme`.
    pub issuer: String,
    /// The port (chosen before start, so a client's redirect URI can name services started earlier).
    pub port: u16,
}

impl Drop for OidcProvider {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

include!("free_port.rs");

/// Starts the provider on `port` (see [`free_port`]) with `extra_clients` (a JSON array of oidc-provider
/// client metadata) registered next to the filter's `gateway` client; waits until discovery answers.
pub async fn start_on(port: u16, extra_clients: serde_json::Value) -> OidcProvider {
    let dir = node_dir();
    assert!(
        dir.join("node_modules/oidc-provider/package.json").exists(),
        "oidc-provider is not installed in {} (run `scripts/oidc-provider.sh {}`)",
        dir.display(),
        dir.display()
    );
    let script = dir.join("tokengate-tests-server.mjs");
    std::fs::write(&script, include_str!("../../../tests/oidc-provider/server.mjs")).unwrap();
    let child = std::process::Command::new("node")
        .arg(&script)
        .arg(port.to_string())
        .env("OIDC_PROVIDER_EXTRA_CLIENTS", extra_clients.to_string())
        .current_dir(&dir)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let issuer = format!("{base}/realms/acme");
    let provider = OidcProvider { child, base, issuer, port };
    let url = format!("{}/.well-known/openid-configuration", provider.issuer);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        if reqwest::get(&url).await.is_ok_and(|r| r.status().is_success()) {
            return provider;
        }
        assert!(std::time::Instant::now() < deadline, "{url} did not come up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Follows the provider's interaction pages as a browser (its own cookies): each redirect, then each form
/// (login: any login and password; consent: continue), until the provider redirects to a URL starting
/// with `back_to`, which is returned.
pub async fn through_the_providers_pages(base: &str, auth: &str, login: &str, back_to: &str) -> String {
    let browser =
        reqwest::Client::builder().cookie_store(true).redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let absolute = |l: &str| if l.starts_with("http") { l.to_owned() } else { format!("{base}{l}") };
    let mut r = browser.get(auth).send().await.unwrap();
    for _ in 0..12 {
        if r.status().is_redirection() {
            let location = absolute(r.headers()["location"].to_str().unwrap());
            if location.starts_with(back_to) {
                return location;
            }
            r = browser.get(&location).send().await.unwrap();
            continue;
        }
        let status = r.status();
        let html = r.text().await.unwrap();
        assert_eq!(status, 200, "{html}");
        let action =
            attr(&html, "<form", "action").unwrap_or_else(|| panic!("no form in the provider's page:\n{html}"));
        let mut form: Vec<(String, String)> = Vec::new();
        for input in html.split("<input").skip(1) {
            let Some(name) = attr(input, "", "name") else { continue };
            let value = match name.as_str() {
                "login" => login.to_owned(),
                "password" => "any password".to_owned(),
                _ => attr(input, "", "value").unwrap_or_default(),
            };
            form.push((name, value));
        }
        r = browser.post(absolute(&action)).form(&form).send().await.unwrap();
    }
    panic!("the provider never sent the browser back");
}

/// The value of `name="…"` in the first tag starting with `tag` (or in `html` itself when `tag` is empty).
pub fn attr(html: &str, tag: &str, name: &str) -> Option<String> {
    let start = if tag.is_empty() { 0 } else { html.find(tag)? };
    let rest = &html[start..];
    let rest = &rest[..rest.find('>').unwrap_or(rest.len())];
    let marker = format!("{name}=\"");
    let from = rest.find(&marker)? + marker.len();
    Some(rest[from..].split('"').next()?.replace("&amp;", "&"))
}
