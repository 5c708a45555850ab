//! The real `kubectl` against a stand-in for kube-apiserver. The stand-in is an HTTPS server that
//! authenticates bearer tokens the way kube-apiserver's OIDC authenticator does (discovery at the issuer
//! URL, JWKS by `kid`, RS256 only, `iss`, `aud`, `exp`, `email_verified`, an https issuer trusted through
//! its CA) and answers `GET /api`. The issuer serves HTTPS with `issuer dev-certs` certificates and hands
//! out kubeconfigs for the stand-in; kubectl reaches it with the `auth-provider: oidc` kubeconfig and with
//! the `exec` kubeconfig, refreshes an expired ID token through the issuer, and fails cleanly once the
//! refresh token is revoked.
//!
//! `/usr/bin/kubectl` here is the Cloud SDK dispatcher (`v1.32.4-dispatcher`): on its first run it asks
//! the server for `/version` (authenticated like any request; the stand-in answers 404, so it runs its
//! built-in 1.32 client) and does not ask again in this HOME. kubectl 1.32 still ships the `oidc`
//! auth provider: it refreshes an expired ID token and writes the rotated tokens back into the kubeconfig.
//!
//! Expiry is simulated without sleeping. kubectl (auth provider) and the plugin decide from the `exp` of
//! the ID token they hold, so the test replaces that token with an expired one; the stand-in's own clock
//! moves forward to show it refuses a token past its `exp`.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use common::apiserver::{self, ApiServer, AUDIENCE, GROUPS_PREFIX};
use common::{claims, dev_config, pre, query_param, Browser};
use issuer::clock::Clock;
use issuer::config::{CaFile, Cluster};
use issuer::state::{open_storage, AppState};
use issuer::storage::StorageError;
use issuer::token::RefreshTokenString;
use serde_json::{json, Value};
use tokio::io::AsyncBufReadExt;

const KUBECTL: &str = "/usr/bin/kubectl";
const PLUGIN: &str = env!("CARGO_BIN_EXE_kubectl-oidc_login");
/// No kubectl run may take longer; a hang fails the test instead of stalling it.
const DEADLINE: Duration = Duration::from_secs(60);

// === The issuer, the stand-in and kubectl ===

/// The development CA and the server certificate it signed for `localhost` and `127.0.0.1`.
struct Certs {
    ca: String,
    cert: Vec<u8>,
    key: Vec<u8>,
}

fn dev_certs(dir: &Path) -> Certs {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_issuer"))
        .args(["dev-certs", "--out"])
        .arg(dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "issuer dev-certs: {}", String::from_utf8_lossy(&out.stderr));
    let read = |f: &str| std::fs::read(dir.join(f)).unwrap();
    Certs { ca: String::from_utf8(read("ca.pem")).unwrap(), cert: read("cert.pem"), key: read("key.pem") }
}

fn bind() -> std::net::TcpListener {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    listener
}

async fn serve_https(listener: std::net::TcpListener, app: Router, certs: &Certs) {
    let tls = axum_server::tls_rustls::RustlsConfig::from_pem(certs.cert.clone(), certs.key.clone()).await.unwrap();
    let server = axum_server::from_tcp_rustls(listener, tls);
    tokio::spawn(async move {
        server.serve(app.into_make_service_with_connect_info::<SocketAddr>()).await.unwrap();
    });
}

/// An issuer on HTTPS, the stand-in trusting it, and a user's folders.
struct Setup {
    issuer: String,
    state: AppState,
    api: Arc<ApiServer>,
    certs: Certs,
    /// The loopback redirect URI registered for the plugin's login.
    plugin_redirect: String,
    /// HOME for kubectl and the plugin; the kubeconfigs live here too.
    home: tempfile::TempDir,
    _data: tempfile::TempDir,
}

impl Setup {
    async fn start() -> Self {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let data = tempfile::tempdir().unwrap();
        let certs = dev_certs(&data.path().join("certs"));

        let issuer_listener = bind();
        let issuer = format!("https://{}", issuer_listener.local_addr().unwrap());
        let api_listener = bind();
        let api_address = api_listener.local_addr().unwrap().to_string();
        let plugin_port = common::free_port();
        let plugin_redirect = format!("http://127.0.0.1:{plugin_port}/callback");

        let mut config = dev_config(&issuer, &data.path().join("issuer.db"));
        let k = config.kubernetes.as_mut().unwrap();
        k.clusters = vec![Cluster {
            name: "stand-in".into(),
            server: format!("https://{api_address}"),
            certificate_authority: Some(certs.ca.clone()),
        }];
        k.issuer_ca = Some(CaFile { path: data.path().join("certs/ca.pem"), pem: certs.ca.clone() });
        let client = config.static_clients.iter_mut().find(|c| c.id == AUDIENCE).unwrap();
        client.redirect_uris.push(plugin_redirect.clone());
        let storage = open_storage(&config).await.unwrap();
        let state = AppState::new(config, storage, Clock::system()).await.unwrap();
        serve_https(issuer_listener, issuer::app(state.clone()), &certs).await;

        let api = Arc::new(ApiServer::new(&issuer, &certs.ca));
        *api.address.lock().unwrap() = api_address;
        let app = Router::new().fallback(apiserver::api).with_state(api.clone());
        serve_https(api_listener, app, &certs).await;

        Setup { issuer, state, api, certs, plugin_redirect, home: tempfile::tempdir().unwrap(), _data: data }
    }

    fn endpoint(&self, path: &str) -> String {
        format!("{}{path}", self.issuer)
    }

    /// A browser that trusts the development CA.
    fn browser(&self) -> Browser {
        let ca = reqwest::Certificate::from_pem(self.certs.ca.as_bytes()).unwrap();
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .cookie_store(true)
            .add_root_certificate(ca)
            .build()
            .unwrap();
        Browser { client }
    }

    /// Signs in on the kubeconfig page as jane; returns the `(auth-provider, exec)` kubeconfigs.
    async fn kubeconfigs(&self) -> (serde_yaml::Value, serde_yaml::Value) {
        let browser = self.browser();
        let r = browser.client.get(self.endpoint("/kubeconfig")).send().await.unwrap();
        assert_eq!(r.status(), 303, "the kubeconfig page starts a login");
        let auth = r.headers()["location"].to_str().unwrap().to_owned();
        let (status, callback) = browser.sign_in(&auth, "jane@example.com", "password").await;
        assert_eq!(status, 303);
        let page = browser.client.get(callback.unwrap()).send().await.unwrap();
        assert_eq!(page.status(), 200);
        let html = page.text().await.unwrap();
        let parse = |id: &str| serde_yaml::from_str::<serde_yaml::Value>(&pre(&html, id)).unwrap();
        (parse("oidc-stand-in"), parse("exec-stand-in"))
    }

    fn write_kubeconfig(&self, name: &str, doc: &serde_yaml::Value) -> PathBuf {
        let path = self.home.path().join(name);
        std::fs::write(&path, serde_yaml::to_string(doc).unwrap()).unwrap();
        path
    }

    /// `kubectl get --raw /api` with only loopback to talk to, killed if it outlives the deadline.
    async fn kubectl(&self, kubeconfig: &Path) -> Output {
        let mut cmd = tokio::process::Command::new(KUBECTL);
        cmd.env_clear()
            .env("HOME", self.home.path())
            .env("KUBECACHEDIR", self.home.path().join("kube-cache"))
            .env("PATH", "/usr/bin:/bin")
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .args(["get", "--raw", "/api"])
            .stdin(Stdio::null())
            .kill_on_drop(true);
        match tokio::time::timeout(DEADLINE, cmd.output()).await {
            Ok(out) => out.unwrap(),
            Err(_) => panic!("kubectl did not finish within {DEADLINE:?}"),
        }
    }

    /// The issuer's record of a refresh token.
    async fn stored_refresh(&self, token: &str) -> Result<issuer::storage::RefreshToken, StorageError> {
        let id = RefreshTokenString::parse(token).unwrap().id;
        self.state.storage.get_refresh_token(&id).await
    }

    /// Revokes a refresh token (and so its family) at the issuer's `/revoke`, as the Kubernetes client.
    async fn revoke(&self, refresh_token: &str) {
        let r = self
            .browser()
            .client
            .post(self.endpoint("/revoke"))
            .basic_auth(AUDIENCE, Some("kubernetes-secret"))
            .form(&[("token", refresh_token), ("token_type_hint", "refresh_token")])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "the revocation is accepted");
        assert!(matches!(self.stored_refresh(refresh_token).await, Err(StorageError::NotFound)), "revoked");
    }
}

/// An ID token whose `exp` has passed: what kubectl or the plugin holds once the real one expires. It
/// never reaches the stand-in, because both refresh before sending it.
fn expired_id_token() -> String {
    format!("{}.{}.c2ln", B64.encode(br#"{"alg":"RS256"}"#), B64.encode(br#"{"exp":1}"#))
}

fn assert_api_versions(out: &Output, what: &str) {
    assert!(out.status.success(), "{what}: kubectl fails: {}", String::from_utf8_lossy(&out.stderr));
    let body: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{what}: kubectl prints no JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)));
    assert_eq!(body["kind"], "APIVersions", "{what}: {body}");
    assert_eq!(body["versions"], json!(["v1"]), "{what}: {body}");
}

fn assert_fails(out: &Output, what: &str, expected: &[&str]) {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "{what}: kubectl must fail: {}", String::from_utf8_lossy(&out.stdout));
    assert!(!stderr.contains("panic"), "{what}: {stderr}");
    for e in expected {
        assert!(stderr.contains(e), "{what}: stderr names {e:?}: {stderr}");
    }
}

fn jane() -> (String, Vec<String>) {
    ("jane@example.com".to_owned(), vec![format!("{GROUPS_PREFIX}developers")])
}

// === Tests ===

#[tokio::test(flavor = "multi_thread")]
async fn kubectl_with_the_auth_provider_kubeconfig_refreshes_and_fails_once_revoked() {
    let s = Setup::start().await;
    let (mut oidc, _) = s.kubeconfigs().await;
    let cfg = |doc: &serde_yaml::Value, key: &str| {
        doc["users"][0]["user"]["auth-provider"]["config"][key].as_str().unwrap().to_owned()
    };
    assert_eq!(cfg(&oidc, "idp-issuer-url"), s.issuer, "kubectl refreshes at the https issuer");
    let first_refresh = cfg(&oidc, "refresh-token");
    let path = s.write_kubeconfig("oidc.yaml", &oidc);

    let out = s.kubectl(&path).await;
    assert_api_versions(&out, "auth provider, token from the page");
    assert_eq!(s.api.users(), vec![jane()], "the stand-in let jane in with her groups prefixed");

    // The stand-in checks exp itself: past it, the token kubectl still trusts is refused.
    let exp = claims(&cfg(&oidc, "id-token"))["exp"].as_i64().unwrap();
    s.api.clock_offset.store(exp - s.api.now() + 1, Ordering::SeqCst);
    let out = s.kubectl(&path).await;
    assert_fails(&out, "auth provider, token past exp at the API server", &["Unauthorized"]);
    assert!(s.api.refusals().last().unwrap().starts_with("expired at"), "{:?}", s.api.refusals());
    s.api.clock_offset.store(0, Ordering::SeqCst);

    // kubectl holds an expired ID token: it refreshes at the issuer and writes the new tokens back.
    oidc["users"][0]["user"]["auth-provider"]["config"]["id-token"] = expired_id_token().into();
    std::fs::write(&path, serde_yaml::to_string(&oidc).unwrap()).unwrap();
    let out = s.kubectl(&path).await;
    assert_api_versions(&out, "auth provider, after a refresh");
    let persisted: serde_yaml::Value = serde_yaml::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let second_refresh = cfg(&persisted, "refresh-token");
    assert_ne!(second_refresh, first_refresh, "kubectl persisted the rotated refresh token");
    assert_ne!(cfg(&persisted, "id-token"), expired_id_token(), "kubectl persisted the new ID token");
    assert_eq!(claims(&cfg(&persisted, "id-token"))["aud"], AUDIENCE);
    let old = s.stored_refresh(&first_refresh).await.unwrap();
    let new_id = RefreshTokenString::parse(&second_refresh).unwrap().id;
    assert_eq!(old.successor.as_deref(), Some(new_id.as_str()), "the issuer rotated the refresh token");
    assert_eq!(s.api.users().len(), 2, "the refreshed token got kubectl in");
    assert_eq!(s.api.users().last(), Some(&jane()));

    // Revoked at the issuer, the refresh fails and kubectl says so.
    s.revoke(&second_refresh).await;
    let mut expired = persisted.clone();
    expired["users"][0]["user"]["auth-provider"]["config"]["id-token"] = expired_id_token().into();
    std::fs::write(&path, serde_yaml::to_string(&expired).unwrap()).unwrap();
    let refusals = s.api.refusals().len();
    let out = s.kubectl(&path).await;
    assert_fails(&out, "auth provider, refresh token revoked", &["invalid_grant"]);
    assert_eq!(s.api.users().len(), 2, "nobody got in");
    assert_eq!(s.api.refusals().len(), refusals, "kubectl sent no token at all");
}

#[tokio::test(flavor = "multi_thread")]
async fn kubectl_with_the_exec_kubeconfig_signs_in_once_refreshes_and_fails_once_revoked() {
    let s = Setup::start().await;
    let (_, mut exec) = s.kubeconfigs().await;
    let plugin = &mut exec["users"][0]["user"]["exec"];
    assert_eq!(plugin["command"], "kubectl-oidc_login");
    plugin["command"] = PLUGIN.into();
    let args: Vec<String> =
        plugin["args"].as_sequence().unwrap().iter().map(|a| a.as_str().unwrap().to_owned()).collect();
    assert!(args.iter().any(|a| a.starts_with("--certificate-authority-data=")), "the plugin trusts the dev CA");
    let path = s.write_kubeconfig("exec.yaml", &exec);

    // Nobody has signed in, and kubectl without a terminal cannot ask anyone to: a clean failure.
    let out = s.kubectl(&path).await;
    assert_fails(&out, "exec, before any login", &["signing in needs a person"]);
    assert!(s.api.users().is_empty() && s.api.refusals().is_empty(), "no request reached the stand-in");

    // The login the message asks for: the kubeconfig's command by hand, through the browser.
    let mut login = tokio::process::Command::new(PLUGIN);
    login
        .env_clear()
        .env("HOME", s.home.path())
        .args(&args)
        .arg(format!("--redirect-url={}", s.plugin_redirect))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = login.spawn().unwrap();
    let mut stderr = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let auth_url = loop {
        let line = stderr.next_line().await.unwrap().expect("the plugin prints the login URL");
        if line.starts_with("https://") {
            break line;
        }
    };
    assert_eq!(query_param(&auth_url, "redirect_uri").as_deref(), Some(s.plugin_redirect.as_str()));
    let (status, callback) = s.browser().sign_in(&auth_url, "jane@example.com", "password").await;
    assert_eq!(status, 303);
    let r = common::http().get(callback.unwrap()).send().await.unwrap();
    assert_eq!(r.status(), 200, "the plugin's loopback listener answers the browser");
    let out = tokio::time::timeout(DEADLINE, child.wait_with_output()).await.unwrap().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let out = s.kubectl(&path).await;
    assert_api_versions(&out, "exec, cached token");
    assert_eq!(s.api.users(), vec![jane()]);

    let cache_dir = s.home.path().join(".kube/cache/oidc-login");
    let cache = std::fs::read_dir(&cache_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "json"))
        .unwrap();
    let read_cache = || serde_json::from_slice::<Value>(&std::fs::read(&cache).unwrap()).unwrap();
    let first = read_cache();

    // The stand-in checks exp itself; the plugin, trusting its cache, hands out the same token.
    let exp = claims(first["id_token"].as_str().unwrap())["exp"].as_i64().unwrap();
    s.api.clock_offset.store(exp - s.api.now() + 1, Ordering::SeqCst);
    let out = s.kubectl(&path).await;
    assert_fails(&out, "exec, token past exp at the API server", &["Unauthorized"]);
    assert!(s.api.refusals().iter().all(|r| r.starts_with("expired at")), "{:?}", s.api.refusals());
    s.api.clock_offset.store(0, Ordering::SeqCst);

    // The cached ID token has expired: the plugin refreshes at the issuer.
    let mut expired = first.clone();
    expired["id_token"] = expired_id_token().into();
    std::fs::write(&cache, serde_json::to_vec(&expired).unwrap()).unwrap();
    let out = s.kubectl(&path).await;
    assert_api_versions(&out, "exec, after a refresh");
    let second = read_cache();
    let second_refresh = second["refresh_token"].as_str().unwrap().to_owned();
    assert_ne!(second["refresh_token"], first["refresh_token"], "the plugin cached the rotated refresh token");
    assert_ne!(second["id_token"], first["id_token"]);
    let old = s.stored_refresh(first["refresh_token"].as_str().unwrap()).await.unwrap();
    let new_id = RefreshTokenString::parse(&second_refresh).unwrap().id;
    assert_eq!(old.successor.as_deref(), Some(new_id.as_str()), "the issuer rotated the refresh token");
    assert_eq!(s.api.users().len(), 2, "the refreshed token got kubectl in");
    assert_eq!(s.api.users().last(), Some(&jane()));

    // Revoked at the issuer, the refresh fails; without a terminal there is no login to fall back to.
    s.revoke(&second_refresh).await;
    let mut expired = second.clone();
    expired["id_token"] = expired_id_token().into();
    std::fs::write(&cache, serde_json::to_vec(&expired).unwrap()).unwrap();
    let refusals = s.api.refusals().len();
    let out = s.kubectl(&path).await;
    assert_fails(&out, "exec, refresh token revoked", &["The session has ended", "signing in needs a person"]);
    assert_eq!(s.api.users().len(), 2, "nobody got in");
    assert_eq!(s.api.refusals().len(), refusals, "kubectl sent no token at all");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_stand_in_refuses_what_kube_apiserver_refuses() {
    let s = Setup::start().await;
    let keys = s.state.keys().await.unwrap();
    let now = s.api.now();
    let good = json!({
        "iss": s.issuer, "aud": AUDIENCE, "sub": "s", "exp": now + 600, "iat": now,
        "email": "jane@example.com", "email_verified": true, "groups": ["developers"],
    });
    let with = |key: &str, value: Option<Value>| {
        let mut c = good.clone();
        match value {
            Some(v) => c[key] = v,
            None => _ = c.as_object_mut().unwrap().remove(key),
        }
        keys.signer.sign_jwt(&c).unwrap()
    };
    let valid = keys.signer.sign_jwt(&good).unwrap();
    let [h, p, sig]: [&str; 3] = valid.split('.').collect::<Vec<_>>().try_into().unwrap();
    let mut header = common::header(&valid);
    header["alg"] = "none".into();
    let alg_none = format!("{}.{p}.", B64.encode(header.to_string()));
    let mut header = common::header(&valid);
    header["kid"] = "unknown".into();
    let unknown_kid = format!("{}.{p}.{sig}", B64.encode(header.to_string()));
    let stranger = issuer::keys::generate(issuer::keys::Algorithm::Rs256).unwrap();
    let stranger = issuer::keys::Signer::from_stored(&stranger).unwrap().sign_jwt(&good).unwrap();
    let admin = with("email", Some("admin@example.com".into()));
    let swapped = format!("{h}.{}.{sig}", admin.split('.').nth(1).unwrap());

    let cases: Vec<(&str, String, Option<&str>)> = vec![
        ("a valid token", valid.clone(), None),
        ("aud as a list", with("aud", Some(json!(["other", AUDIENCE]))), None),
        ("another client's token", with("aud", Some("example-app".into())), Some("aud")),
        ("another issuer", with("iss", Some("https://evil.example".into())), Some("iss")),
        ("expired", with("exp", Some((now - 1).into())), Some("expired")),
        ("email not verified", with("email_verified", Some(false.into())), Some("email_verified")),
        ("email_verified missing", with("email_verified", None), Some("email_verified")),
        ("alg none", alg_none, Some("alg")),
        ("a kid JWKS does not have", unknown_kid, Some("no RSA key")),
        ("signed by another key", stranger, Some("no RSA key")),
        ("a payload swapped under the signature", swapped, Some("signature")),
    ];
    let client = s.browser().client;
    let api = format!("https://{}/api", s.api.address.lock().unwrap());
    for (what, token, refusal) in cases {
        let r = client.get(&api).bearer_auth(&token).send().await.unwrap();
        match refusal {
            None => assert_eq!(r.status(), 200, "{what} is let in: {:?}", s.api.refusals()),
            Some(why) => {
                assert_eq!(r.status(), 401, "{what} is refused");
                let body: Value = r.json().await.unwrap();
                assert_eq!(body["kind"], "Status", "{what}");
                let last = s.api.refusals().last().cloned().unwrap_or_default();
                assert!(last.contains(why), "{what}: refused for {why:?}, got {last:?}");
            }
        }
    }
    let r = client.get(&api).send().await.unwrap();
    assert_eq!(r.status(), 401, "anonymous requests are refused");
}
