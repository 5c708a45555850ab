//! A real issuer on an ephemeral loopback port, and a browser-like client that logs in through its form.
#![allow(dead_code, unreachable_pub)] // each test binary uses a different part

pub mod apiserver;
pub mod bitbucket;
pub mod crowd;
pub mod github;
pub mod gitlab;
pub mod slapd;
pub mod upstream_login;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use issuer::clock::Clock;
use issuer::config::Config;
use issuer::state::{open_storage, AppState};
use reqwest::redirect::Policy;
use serde_json::Value;

pub const CLIENT: &str = "example-app";
pub const SECRET: &str = "example-app-secret";
pub const REDIRECT: &str = "http://127.0.0.1:5555/callback";
pub const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
pub const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";

/// Adjusts the dev configuration for one test.
pub type Tune = fn(&mut Config);

pub struct Issuer {
    pub url: String,
    pub tune: Tune,
    pub state: AppState,
    pub clock: Clock,
    pub db: PathBuf,
    pub server: tokio::task::JoinHandle<()>,
    _dir: std::sync::Arc<tempfile::TempDir>,
}

/// The shipped development configuration, with the issuer URL and database moved for this test.
pub fn dev_config(url: &str, db: &std::path::Path) -> Config {
    dev_config_with(url, db, "")
}

/// The development configuration with `extra` YAML appended at the top level (e.g. a `connectors:` list;
/// `{issuer}` in it is replaced by the issuer URL).
pub fn dev_config_with(url: &str, db: &std::path::Path, extra: &str) -> Config {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/dev.yaml");
    let text = std::fs::read_to_string(path).unwrap();
    let text = text
        .replace("issuer: http://127.0.0.1:5556", &format!("issuer: {url}"))
        .replace("file: ./data/issuer.db", &format!("file: {}", db.display()));
    let text = format!("{text}\n{}", extra.replace("{issuer}", url));
    Config::parse(path, &text, &|_| None).unwrap_or_else(|e| panic!("{e}"))
}

impl Issuer {
    /// Starts an issuer with the dev config as it ships.
    pub async fn start() -> Self {
        Self::start_tuned(|_| {}).await
    }

    /// Starts an issuer with the dev config as `tune` changes it.
    pub async fn start_tuned(tune: Tune) -> Self {
        let dir = std::sync::Arc::new(tempfile::tempdir().unwrap());
        Self::start_in(dir, tune, Clock::frozen(), None).await
    }

    /// Starts an issuer with the dev config plus `extra` YAML (see [`dev_config_with`]), then `edit`.
    pub async fn start_with(extra: &str, edit: impl FnOnce(&mut Config)) -> Self {
        let dir = std::sync::Arc::new(tempfile::tempdir().unwrap());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let url = format!("http://{addr}");
        let db = dir.path().join("issuer.db");
        let mut config = dev_config_with(&url, &db, extra);
        edit(&mut config);
        Self::serve(listener, config, |_| {}, Clock::system(), dir).await
    }

    /// Starts an issuer from the dev configuration as `edit` rewrites its YAML text (after the issuer URL
    /// and database are moved), written to a file that the `issuer` binary can be pointed at as well
    /// (`issuer revoke --config`). Returns the issuer and the file.
    pub async fn start_with_file(edit: impl FnOnce(String) -> String) -> (Self, PathBuf) {
        let dir = std::sync::Arc::new(tempfile::tempdir().unwrap());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let db = dir.path().join("issuer.db");
        let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/dev.yaml")).unwrap();
        let text = edit(
            text.replace("issuer: http://127.0.0.1:5556", &format!("issuer: {url}"))
                .replace("file: ./data/issuer.db", &format!("file: {}", db.display())),
        );
        let file = dir.path().join("config.yaml");
        std::fs::write(&file, &text).unwrap();
        let config = Config::load(&file).unwrap_or_else(|e| panic!("{e}"));
        (Self::serve(listener, config, |_| {}, Clock::system(), dir).await, file)
    }

    /// Starts an issuer on the database in `dir`, at `addr` if given (a restart keeps the issuer URL).
    pub async fn start_in(
        dir: std::sync::Arc<tempfile::TempDir>,
        tune: Tune,
        clock: Clock,
        addr: Option<SocketAddr>,
    ) -> Self {
        let listener =
            tokio::net::TcpListener::bind(addr.unwrap_or_else(|| "127.0.0.1:0".parse().unwrap())).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let url = format!("http://{addr}");
        let db = dir.path().join("issuer.db");
        let mut config = dev_config(&url, &db);
        tune(&mut config);
        Self::serve(listener, config, tune, clock, dir).await
    }

    /// Opens `config`'s storage and serves the issuer on `listener` (its database under `dir`).
    async fn serve(
        listener: tokio::net::TcpListener,
        config: Config,
        tune: Tune,
        clock: Clock,
        dir: std::sync::Arc<tempfile::TempDir>,
    ) -> Self {
        let url = format!("http://{}", listener.local_addr().unwrap());
        let db = dir.path().join("issuer.db");
        let storage = open_storage(&config).await.unwrap();
        let state = AppState::new(config, storage, clock.clone()).await.unwrap();
        let app = issuer::app(state.clone()).into_make_service_with_connect_info::<SocketAddr>();
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Issuer { url, tune, state, clock, db, server, _dir: dir }
    }

    /// Stops serving and starts again on the same address and database.
    pub async fn restart(self) -> Self {
        let addr: SocketAddr = self.url.trim_start_matches("http://").parse().unwrap();
        self.server.abort();
        let _ = self.server.await;
        let dir = self._dir.clone();
        let (clock, tune) = (self.clock.clone(), self.tune);
        drop(self.state);
        Self::start_in(dir, tune, clock, Some(addr)).await
    }

    pub fn endpoint(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }

    /// The authorization URL for the example app with PKCE S256.
    pub fn auth_url(&self, scope: &str, state: &str) -> String {
        format!(
            "{}/auth?client_id={CLIENT}&redirect_uri={}&response_type=code&scope={}&state={state}&nonce=n-{state}&code_challenge={CHALLENGE}&code_challenge_method=S256",
            self.url,
            urlencode(REDIRECT),
            urlencode(scope)
        )
    }

    /// Logs in through the form as `login`/`password` and returns the code.
    pub async fn login(&self, scope: &str, login: &str, password: &str) -> String {
        let browser = Browser::new();
        let (status, location) = browser.sign_in(&self.auth_url(scope, "xyz"), login, password).await;
        assert_eq!(status, 303, "login succeeds with a 303");
        let location = location.unwrap();
        assert!(location.starts_with(REDIRECT), "{location}");
        assert_eq!(query_param(&location, "state").as_deref(), Some("xyz"));
        query_param(&location, "code").unwrap()
    }

    /// POSTs a form to the token endpoint with client_secret_basic.
    pub async fn token(&self, form: &[(&str, &str)]) -> (u16, Value) {
        let r = http().post(self.endpoint("/token")).basic_auth(CLIENT, Some(SECRET)).form(form).send().await.unwrap();
        let status = r.status().as_u16();
        let body = r.json().await.unwrap_or(Value::Null);
        (status, body)
    }

    pub async fn exchange(&self, code: &str) -> (u16, Value) {
        self.token(&[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", REDIRECT),
            ("code_verifier", VERIFIER),
        ])
        .await
    }

    pub async fn refresh(&self, refresh_token: &str) -> (u16, Value) {
        self.token(&[("grant_type", "refresh_token"), ("refresh_token", refresh_token)]).await
    }

    /// A full login and code exchange with `offline_access`: the token response.
    pub async fn tokens(&self, login: &str) -> Value {
        let code = self.login("openid email profile groups offline_access", login, "password").await;
        let (status, body) = self.exchange(&code).await;
        assert_eq!(status, 200, "{body}");
        body
    }
}

pub fn http() -> reqwest::Client {
    reqwest::Client::builder().redirect(Policy::none()).build().unwrap()
}

/// A client that keeps cookies and does not follow redirects, like a browser under test.
pub struct Browser {
    pub client: reqwest::Client,
}

impl Browser {
    pub fn new() -> Self {
        Self { client: reqwest::Client::builder().redirect(Policy::none()).cookie_store(true).build().unwrap() }
    }

    /// Opens the authorization URL and returns the login page's URL and its form fields `req` and `csrf`.
    pub async fn open_login(&self, auth_url: &str) -> (String, String, String) {
        let r = self.client.get(auth_url).send().await.unwrap();
        assert_eq!(r.status(), 303, "/auth sends the browser to the login page");
        let base = auth_url.split("/auth?").next().unwrap();
        let login_url = format!("{base}{}", r.headers()["location"].to_str().unwrap());
        let page = self.client.get(&login_url).send().await.unwrap();
        assert_eq!(page.status(), 200);
        let html = page.text().await.unwrap();
        (login_url, hidden(&html, "req"), hidden(&html, "csrf"))
    }

    /// Submits the login form; returns the status and `Location`.
    pub async fn submit(
        &self,
        login_url: &str,
        req: &str,
        csrf: &str,
        login: &str,
        password: &str,
    ) -> (u16, Option<String>, String) {
        let action = login_url.split('?').next().unwrap();
        let r = self
            .client
            .post(action)
            .form(&[("req", req), ("csrf", csrf), ("login", login), ("password", password)])
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let location = r.headers().get("location").map(|v| v.to_str().unwrap().to_owned());
        (status, location, r.text().await.unwrap())
    }

    pub async fn sign_in(&self, auth_url: &str, login: &str, password: &str) -> (u16, Option<String>) {
        let (url, req, csrf) = self.open_login(auth_url).await;
        let (status, location, _) = self.submit(&url, &req, &csrf, login, password).await;
        (status, location)
    }
}

/// The value of the hidden form field `name` in a page.
pub fn hidden_field(html: &str, name: &str) -> String {
    hidden(html, name)
}

fn hidden(html: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let start = html.find(&marker).unwrap_or_else(|| panic!("no hidden field {name} in {html}")) + marker.len();
    html[start..].split('"').next().unwrap().to_owned()
}

fn unescape(s: &str) -> String {
    s.replace("&quot;", "\"")
        .replace("&#x27;", "'")
        .replace("&#39;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

/// The text of `<pre id="{id}" …>…</pre>` in a page, unescaped (the kubeconfig page's documents).
pub fn pre(html: &str, id: &str) -> String {
    let start = html.find(&format!("<pre id=\"{id}\"")).unwrap_or_else(|| panic!("no {id} in {html}"));
    let body = &html[start..];
    let body = &body[body.find('>').unwrap() + 1..];
    unescape(&body[..body.find("</pre>").unwrap()])
}

pub fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

pub fn query_param(url: &str, name: &str) -> Option<String> {
    url::Url::parse(url).ok()?.query_pairs().find(|(k, _)| k == name).map(|(_, v)| v.into_owned())
}

/// The claims of a JWT, unverified (the tests check signatures through the RP library and JWKS).
pub fn claims(jwt: &str) -> Value {
    serde_json::from_slice(&B64.decode(jwt.split('.').nth(1).unwrap()).unwrap()).unwrap()
}

pub fn header(jwt: &str) -> Value {
    serde_json::from_slice(&B64.decode(jwt.split('.').next().unwrap()).unwrap()).unwrap()
}

pub const HOUR: Duration = Duration::from_secs(3600);

include!("free_port.rs");
