//! The pieces every journey needs: a real issuer on loopback (SQLite, frozen clock), the compiled filter
//! configured against it, a cookie jar on each side, and a browser that fills in the issuer's login form.
#![allow(dead_code, unreachable_pub)] // each test binary uses a different part

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use issuer::clock::Clock;
use issuer::config::Config;
use issuer::state::{open_storage, AppState};
use proxy_wasm_host::abi::v0_2_1::InMemoryStore;
use serde_json::{json, Value};
use tests::{Decision, FilterClock, HeaderPair, Logs, Request, Response, Worker, WorkerOptions};

/// The gateway's host, as registered for the `gateway` client in `issuer/examples/dev.yaml`.
pub const HOST: &str = "127.0.0.1:8080";
pub const SECRET_A: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
pub const SECRET_B: &str = "HxwdHhscGxoZGBcWFRQTEhEQDw4NDAsKCQgHBgUEAwI=";

pub struct Issuer {
    pub url: String,
    pub state: AppState,
    pub clock: Clock,
    server: tokio::task::JoinHandle<()>,
    dir: Arc<tempfile::TempDir>,
}

impl Issuer {
    /// Every refresh token (rotated ones included) of the refresh-token families started in the browser
    /// session `sid` (an ID token's `sid` names the session; each login in it starts a family).
    pub async fn session_refresh_tokens(&self, sid: &str) -> Vec<issuer::storage::RefreshToken> {
        let mut out = Vec::new();
        for family in self.session_families(sid).await {
            out.extend(self.state.storage.list_refresh_family(&family).await.unwrap());
        }
        out
    }

    /// The refresh-token families started in the browser session `sid`.
    pub async fn session_families(&self, sid: &str) -> Vec<String> {
        let Ok(session) = self.state.storage.get_session(sid).await else { return vec![] };
        let id = &session.identity;
        let mut families: Vec<String> = self
            .state
            .storage
            .list_user_refresh_tokens(&id.connector_id, &id.user_id)
            .await
            .unwrap()
            .into_iter()
            .filter(|t| t.session_id.as_deref() == Some(sid))
            .map(|t| t.family_id)
            .collect();
        families.sort();
        families.dedup();
        families
    }

    pub async fn start() -> Self {
        Self::start_at(Arc::new(tempfile::tempdir().unwrap()), None, Clock::frozen(), |_| {}).await
    }

    /// An issuer on the system clock whose configuration `tune` adjusts (for tests with real processes).
    pub async fn start_live(tune: impl FnOnce(&mut Config)) -> Self {
        Self::start_at(Arc::new(tempfile::tempdir().unwrap()), None, Clock::system(), tune).await
    }

    async fn start_at(
        dir: Arc<tempfile::TempDir>,
        addr: Option<SocketAddr>,
        clock: Clock,
        tune: impl FnOnce(&mut Config),
    ) -> Self {
        let listener =
            tokio::net::TcpListener::bind(addr.unwrap_or_else(|| "127.0.0.1:0".parse().unwrap())).await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../issuer/examples/dev.yaml");
        let text = std::fs::read_to_string(path)
            .unwrap()
            .replace("issuer: http://127.0.0.1:5556", &format!("issuer: {url}"))
            .replace("file: ./data/issuer.db", &format!("file: {}", dir.path().join("issuer.db").display()));
        let mut config = Config::parse(path, &text, &|_| None).unwrap();
        tune(&mut config);
        let storage = open_storage(&config).await.unwrap();
        let state = AppState::new(config, storage, clock.clone()).await.unwrap();
        let app = issuer::app(state.clone()).into_make_service_with_connect_info::<SocketAddr>();
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Issuer { url, state, clock, server, dir }
    }

    /// A live issuer that also accepts the callback of a gateway on `port`; `tune` adjusts the rest.
    pub async fn start_for_gateway(port: u16, tune: impl FnOnce(&mut Config)) -> Self {
        Self::start_live(move |c| {
            let client = c.static_clients.iter_mut().find(|c| c.id == "gateway").unwrap();
            client.redirect_uris.push(format!("http://127.0.0.1:{port}/oauth2/callback"));
            tune(c);
        })
        .await
    }

    /// Stops answering (connections are refused).
    pub async fn stop(&self) {
        self.server.abort();
        while !self.server.is_finished() {
            tokio::task::yield_now().await;
        }
    }

    /// A new issuer on the same address with a fresh database: new signing keys the filter never saw.
    pub async fn replace_with_fresh_keys(self) -> Self {
        let addr: SocketAddr = self.url.trim_start_matches("http://").parse().unwrap();
        self.stop().await;
        Self::start_at(Arc::new(tempfile::tempdir().unwrap()), Some(addr), self.clock.clone(), |_| {}).await
    }

    /// A token response for `login` straight from the issuer (for bearer tests), as the `gateway` client.
    pub async fn tokens_for(&self, login: &str, scope: &str) -> Value {
        let redirect = format!("http://{HOST}/oauth2/callback");
        self.tokens_as(("gateway", "gateway-secret", &redirect), login, scope).await
    }

    /// A token response for `login` as another client: `(client_id, secret, registered redirect URI)`.
    pub async fn tokens_as(&self, (client, secret, redirect): (&str, &str, &str), login: &str, scope: &str) -> Value {
        let browser = Browser::new();
        let auth = format!(
            "{}/auth?client_id={client}&redirect_uri={}&response_type=code&scope={}&state=s&code_challenge={CHALLENGE}&code_challenge_method=S256",
            self.url,
            enc(redirect),
            enc(scope)
        );
        let location = browser.login(&auth, login, "password").await;
        let code = query_param(&location, "code").unwrap();
        http()
            .post(format!("{}/token", self.url))
            .basic_auth(client, Some(secret))
            .form(&[
                ("grant_type", "authorization_code"),
                ("code", code.as_str()),
                ("redirect_uri", redirect),
                ("code_verifier", VERIFIER),
            ])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }
}

pub const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
pub const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";

pub fn enc(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

pub fn query_param(url: &str, name: &str) -> Option<String> {
    url::Url::parse(url).ok()?.query_pairs().find(|(k, _)| k == name).map(|(_, v)| v.into_owned())
}

pub fn http() -> reqwest::Client {
    reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap()
}

/// The claims of a JWT (signature not checked here: the filter or the issuer did that).
pub fn claims(jwt: &str) -> Value {
    serde_json::from_slice(&B64.decode(jwt.split('.').nth(1).unwrap()).unwrap()).unwrap()
}

/// The filter configuration for `issuer`, with `extra` keys merged in.
pub fn filter_config(issuer: &Issuer, extra: Value) -> String {
    filter_config_for(&issuer.url, extra)
}

/// The filter configuration for the issuer at `issuer_url` (this project's or another provider).
pub fn filter_config_for(issuer_url: &str, extra: Value) -> String {
    let mut c = json!({
        "issuer": issuer_url,
        "client_id": "gateway",
        "client_secret": "gateway-secret",
        "cluster": "issuer",
        "cookie_secrets": [SECRET_A],
        "cookie": {"secure": false},
        "post_logout_redirect_uri": format!("http://{HOST}/"),
        "claims_to_headers": {"email": "x-auth-request-email", "groups": "x-auth-request-groups"},
    });
    if let (Some(base), Some(more)) = (c.as_object_mut(), extra.as_object()) {
        for (k, v) in more {
            base.insert(k.clone(), v.clone());
        }
    }
    c.to_string()
}

/// A filter VM against `issuer`, its clock stopped at the issuer's time.
pub async fn worker(issuer: &Issuer, extra: Value) -> Worker {
    worker_with_store(issuer, extra, tests::shared_store()).await
}

pub async fn worker_with_store(issuer: &Issuer, extra: Value, store: Arc<InMemoryStore>) -> Worker {
    let options = WorkerOptions {
        clusters: [("issuer".to_owned(), issuer.url.clone())].into(),
        clock: FilterClock::frozen_at(issuer.clock.now_ms()),
        store,
        logs: Arc::new(Logs::default()),
        ca_certificates: vec![],
        responder: None,
    };
    Worker::start(&filter_config(issuer, extra), options).await.unwrap()
}

/// Moves the issuer's and the filters' clocks together.
pub fn advance(issuer: &Issuer, workers: &[&Worker], by: Duration) {
    issuer.clock.advance(by);
    for w in workers {
        w.clock().advance(by);
    }
}

/// The browser's cookies for the gateway host.
#[derive(Default, Clone)]
pub struct Jar(pub BTreeMap<String, String>);

impl Jar {
    pub fn store(&mut self, response: &Response) {
        for c in response.headers_named("set-cookie") {
            let (pair, attrs) = c.split_once(';').unwrap_or((c, ""));
            let (name, value) = pair.split_once('=').unwrap();
            let expired = attrs.to_ascii_lowercase().contains("max-age=0");
            if expired || value.is_empty() {
                self.0.remove(name.trim());
            } else {
                self.0.insert(name.trim().to_owned(), value.trim().to_owned());
            }
        }
    }

    pub fn header(&self) -> String {
        self.0.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("; ")
    }

    pub fn apply(&self, request: Request) -> Request {
        if self.0.is_empty() {
            request
        } else {
            request.header("cookie", &self.header())
        }
    }
}

/// A client of the issuer that keeps cookies and does not follow redirects.
pub struct Browser {
    pub client: reqwest::Client,
}

impl Browser {
    pub fn new() -> Self {
        Self {
            client: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .cookie_store(true)
                .build()
                .unwrap(),
        }
    }

    /// Follows the authorization URL to the login form, signs in, and returns where the issuer sends the
    /// browser back to.
    pub async fn login(&self, auth_url: &str, login: &str, password: &str) -> String {
        let r = self.client.get(auth_url).send().await.unwrap();
        assert_eq!(r.status(), 303, "the issuer sends the browser to its login page");
        let origin = auth_url.split("/auth?").next().unwrap();
        let form_url = format!("{origin}{}", r.headers()["location"].to_str().unwrap());
        let html = self.client.get(&form_url).send().await.unwrap().text().await.unwrap();
        let hidden = |name: &str| {
            let marker = format!("name=\"{name}\" value=\"");
            let start = html.find(&marker).unwrap() + marker.len();
            html[start..].split('"').next().unwrap().to_owned()
        };
        let r = self
            .client
            .post(format!("{origin}/login"))
            .form(&[
                ("req", hidden("req")),
                ("csrf", hidden("csrf")),
                ("login", login.into()),
                ("password", password.into()),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 303, "login succeeds");
        r.headers()["location"].to_str().unwrap().to_owned()
    }
}

/// Runs a request; a forwarded one is answered 200 by the upstream, and the request headers the upstream
/// got are returned alongside.
pub async fn send(worker: &Worker, request: Request) -> (Response, Option<Vec<HeaderPair>>) {
    match worker.request(request).await.unwrap() {
        Decision::Respond(r) => (r, None),
        Decision::Forward(f) => {
            let seen = f.headers();
            let r = worker.respond(f, upstream_ok_response()).unwrap();
            (r, Some(seen))
        }
    }
}

fn upstream_ok_response() -> Response {
    Response { status: 200, headers: vec![("content-type".into(), "text/plain".into())], body: b"hello".to_vec() }
}

pub fn header<'a>(headers: &'a [HeaderPair], name: &str) -> Option<&'a str> {
    tests::header_value(headers, name)
}

/// A whole browser login through the filter: returns the jar with the session cookie.
pub async fn browser_login(worker: &Worker, login: &str, path: &str) -> Jar {
    let mut jar = Jar::default();
    let (r, _) = send(worker, Request::get(HOST, path).navigation()).await;
    assert_eq!(r.status, 302, "a browser without a session is sent to the issuer: {}", r.text());
    jar.store(&r);
    let auth = r.header("location").unwrap().to_owned();
    let back = Browser::new().login(&auth, login, "password").await;
    let callback =
        back.strip_prefix(&format!("http://{HOST}")).expect("the issuer sends the browser back to the gateway");
    let (r, _) = send(worker, jar.apply(Request::get(HOST, callback).navigation())).await;
    assert_eq!(r.status, 302, "the callback starts a session: {}", r.text());
    assert_eq!(r.header("location"), Some(format!("http://{HOST}{path}").as_str()), "back to the original URL");
    jar.store(&r);
    jar
}

// === real processes ===

/// Kills a child process when the test ends, however it ends.
pub struct Process(pub std::process::Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

include!("../../../issuer/tests/common/free_port.rs");

/// A pass-through HTTP proxy to `upstream` on a free loopback port; `rewrite` may change each answer
/// (it gets the request body, the status, and the answer's headers and body). Returns the proxy's base URL.
pub async fn start_rewriting_proxy(upstream: &str, rewrite: Rewrite) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let app = axum::Router::new().fallback(proxy).with_state((Arc::new(upstream.to_owned()), rewrite));
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    base
}

/// How [`start_rewriting_proxy`] changes an answer: `(request body, status, headers, body)`.
pub type Rewrite = fn(&[u8], u16, &mut axum::http::HeaderMap, &mut Vec<u8>);

async fn proxy(
    axum::extract::State((upstream, rewrite)): axum::extract::State<(Arc<String>, Rewrite)>,
    req: axum::extract::Request,
) -> axum::response::Response {
    let (parts, body) = req.into_parts();
    let body = axum::body::to_bytes(body, 1 << 20).await.unwrap();
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let mut out = http().request(parts.method.clone(), format!("{upstream}{path}"));
    for (k, v) in &parts.headers {
        if k != "host" {
            out = out.header(k, v);
        }
    }
    let resp = out.body(body.to_vec()).send().await.unwrap();
    let status = resp.status();
    let mut headers = resp.headers().clone();
    headers.remove("content-length");
    headers.remove("transfer-encoding");
    let mut bytes = resp.bytes().await.unwrap().to_vec();
    rewrite(&body, status.as_u16(), &mut headers, &mut bytes);
    let mut answer = axum::response::Response::new(axum::body::Body::from(bytes));
    *answer.status_mut() = status;
    *answer.headers_mut() = headers;
    answer
}

/// Waits (with a deadline) until `url` answers 2xx; `Err` with the exit status as soon as `process` exits
/// instead (say, because another test took its port between [`free_port`] and its bind).
pub async fn serving(url: &str, process: &mut Process) -> Result<(), String> {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        if reqwest::get(url).await.is_ok_and(|r| r.status().is_success()) {
            return Ok(());
        }
        if let Ok(Some(status)) = process.0.try_wait() {
            return Err(format!("exited ({status}) before {url} answered"));
        }
        assert!(std::time::Instant::now() < deadline, "{url} did not come up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The `whoami` binary on a free port (another one if the port was taken meanwhile).
pub async fn start_whoami() -> (Process, u16) {
    let mut failures = Vec::new();
    for _ in 0..5 {
        let port = free_port();
        let mut p = Process(
            std::process::Command::new(env!("CARGO_BIN_EXE_whoami"))
                .args(["--listen", &format!("127.0.0.1:{port}")])
                .stdout(std::process::Stdio::null())
                .spawn()
                .unwrap(),
        );
        match serving(&format!("http://127.0.0.1:{port}/healthz"), &mut p).await {
            Ok(()) => return (p, port),
            Err(e) => failures.push(e),
        }
    }
    panic!("whoami did not start: {failures:?}")
}

/// The `gateway` binary serving `envoy/envoy.yaml` with the compiled filter on `port`, its clusters pointed
/// at `issuer` and whoami; `extra` are more `--set key=json` overrides of the plugin configuration.
pub async fn start_gateway(port: u16, issuer: &Issuer, whoami_port: u16, extra: &[String]) -> Process {
    spawn_gateway(gateway_command(port, issuer, whoami_port, extra), port).await
}

/// The command [`start_gateway`] runs, for a test to add to (a later `--cluster` wins, `--workers N`).
pub fn gateway_command(port: u16, issuer: &Issuer, whoami_port: u16, extra: &[String]) -> std::process::Command {
    let envoy = concat!(env!("CARGO_MANIFEST_DIR"), "/../envoy/envoy.yaml");
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_gateway"));
    cmd.args(["--envoy", envoy, "--listen", &format!("127.0.0.1:{port}")])
        .args(["--cluster", &format!("issuer={}", issuer.url.trim_start_matches("http://"))])
        .args(["--cluster", &format!("whoami=127.0.0.1:{whoami_port}")])
        .args(["--set", &format!("issuer={}", json!(issuer.url))])
        .args(["--wasm", tests::wasm_path().to_str().unwrap()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    for e in extra {
        cmd.args(["--set", e]);
    }
    cmd
}

/// Starts a gateway command and waits until it answers on `port`; fails at once, with the exit status, if
/// the gateway exits first.
pub async fn spawn_gateway(mut cmd: std::process::Command, port: u16) -> Process {
    let mut p = Process(cmd.spawn().unwrap());
    if let Err(e) = serving(&format!("http://127.0.0.1:{port}/healthz"), &mut p).await {
        panic!("the gateway on port {port} {e}");
    }
    p
}
