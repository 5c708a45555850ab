//! `kubectl-oidc_login get-token` against a real issuer, with HOME in a temporary folder: the first run
//! logs in through a loopback redirect, later runs use the cache, and an expired ID token is refreshed.

mod common;

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use common::{claims, http, Browser, Issuer};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_kubectl-oidc_login");

/// The loopback port of this test's redirect URI (the issuer matches redirect URIs exactly, so it must be
/// registered before the issuer starts; `Tune` is a plain `fn`).
static PORT: AtomicU16 = AtomicU16::new(0);

/// Held by each test that sets [`PORT`], so tests running in parallel do not change it under each other.
static PORT_USER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn redirect() -> String {
    format!("http://127.0.0.1:{}/callback", PORT.load(Ordering::SeqCst))
}

fn register_loopback(c: &mut issuer::config::Config) {
    let uri = redirect();
    c.static_clients.iter_mut().find(|c| c.id == "kubernetes").unwrap().redirect_uris.push(uri);
}

fn get_token(issuer: &Issuer, home: &std::path::Path) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.env("HOME", home)
        .args(["get-token", "--issuer-url", &issuer.url, "--client-id", "kubernetes"])
        .args(["--client-secret", "kubernetes-secret", "--redirect-url", &redirect()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// The sign-in URL the plugin prints on stderr. The rest of stderr is drained in the background, so the
/// plugin's later prompts never meet a closed pipe.
async fn login_url(child: &mut std::process::Child) -> String {
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let mut tx = Some(tx);
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.starts_with("http") {
                if let Some(tx) = tx.take() {
                    let _ = tx.send(line);
                }
            }
        }
    });
    tokio::time::timeout(LIMIT, rx)
        .await
        .expect("the plugin prints the sign-in URL within the limit")
        .expect("the plugin prints the sign-in URL")
}

/// How long the plugin may take to print its URL or to exit: far beyond what it needs, so that a stuck
/// plugin fails the test with a message instead of hanging it.
const LIMIT: std::time::Duration = std::time::Duration::from_secs(120);

/// Waits for the plugin to exit and returns its output; kills it and fails after [`LIMIT`].
async fn finish(child: std::process::Child) -> std::process::Output {
    let pid = child.id();
    let wait = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap());
    match tokio::time::timeout(LIMIT, wait).await {
        Ok(out) => out.unwrap(),
        Err(_) => {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            panic!("the plugin did not exit within {LIMIT:?}");
        }
    }
}

/// The plugin's token cache under `home` (one file per issuer and client).
fn cache_file(home: &std::path::Path) -> std::path::PathBuf {
    std::fs::read_dir(home.join(".kube/cache/oidc-login"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "json"))
        .unwrap()
}

/// Replaces the cached ID token with one past its `exp`, so the next run must use the refresh token;
/// returns the cache as it was.
fn expire_cached_id_token(cache: &std::path::Path) -> Value {
    let cached: Value = serde_json::from_slice(&std::fs::read(cache).unwrap()).unwrap();
    let mut expired = cached.clone();
    expired["id_token"] = format!("e30.{}.sig", B64.encode(br#"{"exp":1}"#)).into();
    std::fs::write(cache, serde_json::to_vec(&expired).unwrap()).unwrap();
    cached
}

fn exec_credential(out: &std::process::Output) -> Value {
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["apiVersion"], "client.authentication.k8s.io/v1");
    assert_eq!(v["kind"], "ExecCredential");
    assert!(v["status"]["expirationTimestamp"].as_str().unwrap().ends_with('Z'));
    v
}

#[tokio::test]
async fn get_token_logs_in_once_then_uses_the_cache_and_refreshes_an_expired_token() {
    let _port = PORT_USER.lock().await;
    let port = common::free_port();
    PORT.store(port, Ordering::SeqCst);
    let issuer = Issuer::start_tuned(register_loopback).await;
    let home = tempfile::tempdir().unwrap();

    let mut child = get_token(&issuer, home.path()).spawn().unwrap();
    let auth_url = login_url(&mut child).await;
    assert!(auth_url.starts_with(&issuer.endpoint("/auth?")), "{auth_url}");
    let (status, location) = Browser::new().sign_in(&auth_url, "jane@example.com", "password").await;
    assert_eq!(status, 303);
    let callback = location.unwrap();
    assert!(callback.starts_with(&redirect()), "{callback}");
    let r = http().get(&callback).send().await.unwrap();
    assert_eq!(r.status(), 200, "the plugin's loopback listener answers the browser");
    let out = finish(child).await;
    let first = exec_credential(&out);
    let token = first["status"]["token"].as_str().unwrap().to_owned();
    assert_eq!(claims(&token)["aud"], "kubernetes");
    assert_eq!(claims(&token)["email"], "jane@example.com");

    let cache = cache_file(home.path());
    assert_eq!(std::fs::metadata(&cache).unwrap().permissions().mode() & 0o777, 0o600, "the cache is private");

    let out = tokio::task::spawn_blocking({
        let mut cmd = get_token(&issuer, home.path());
        move || cmd.output().unwrap()
    })
    .await
    .unwrap();
    assert_eq!(exec_credential(&out)["status"]["token"], token.as_str(), "a valid cached token is reused");

    // An ID token past its exp: the plugin refreshes instead of logging in again.
    let cached = expire_cached_id_token(&cache);
    let out = tokio::task::spawn_blocking({
        let mut cmd = get_token(&issuer, home.path());
        move || cmd.output().unwrap()
    })
    .await
    .unwrap();
    let refreshed = exec_credential(&out);
    let new_token = refreshed["status"]["token"].as_str().unwrap();
    assert_eq!(claims(new_token)["email"], "jane@example.com");
    let stored: Value = serde_json::from_slice(&std::fs::read(&cache).unwrap()).unwrap();
    assert_eq!(stored["id_token"], new_token, "the refreshed token is cached");
    assert_ne!(stored["refresh_token"], cached["refresh_token"], "the rotated refresh token is cached");
}

#[tokio::test]
async fn kubelogin_flags_work_a_taken_port_is_no_obstacle_and_kubelogins_cache_is_left_alone() {
    let issuer = Issuer::start().await;
    let home = tempfile::tempdir().unwrap();
    // A cache entry as int128/kubelogin writes it (bare hash name): it must survive byte for byte.
    let cache_dir = home.path().join(".kube/cache/oidc-login");
    std::fs::create_dir_all(&cache_dir).unwrap();
    let theirs = cache_dir.join("5f0d3c0f2b3f4ac1b6a1f0c4e0e6d9a1a2b3c4d5e6f708192a3b4c5d6e7f8091");
    std::fs::write(&theirs, br#"{"id_token":"kubelogin.id.token","refresh_token":"kubelogin-rt"}"#).unwrap();
    // Another kubectl (or anything) holds the listen address: the plugin must still find a port.
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy_addr = busy.local_addr().unwrap().to_string();

    let mut child = Command::new(BIN)
        .env("HOME", home.path())
        .args(["get-token", &format!("--oidc-issuer-url={}", issuer.url), "--oidc-client-id=kubernetes"])
        .args(["--oidc-client-secret=kubernetes-secret", "--oidc-extra-scope=email", "--oidc-extra-scope=groups"])
        .args(["--oidc-extra-scope=offline_access", "--grant-type=authcode", "--skip-open-browser"])
        .arg(format!("--listen-address={busy_addr}"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let auth_url = login_url(&mut child).await;
    let scope = common::query_param(&auth_url, "scope").unwrap();
    assert_eq!(scope, "openid email groups offline_access", "openid plus the extra scopes, as kubelogin asks");
    let redirect = common::query_param(&auth_url, "redirect_uri").unwrap();
    assert!(redirect.starts_with("http://localhost:"), "kubelogin's redirect host: {redirect}");
    assert!(!redirect.ends_with(&format!(":{}", busy.local_addr().unwrap().port())), "not the taken port");
    let (status, location) = Browser::new().sign_in(&auth_url, "jane@example.com", "password").await;
    assert_eq!(status, 303, "the issuer accepts the loopback redirect on whatever port was free");
    let callback = location.unwrap().replace("http://localhost:", "http://127.0.0.1:");
    let r = http().get(&callback).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let out = finish(child).await;
    let token = exec_credential(&out)["status"]["token"].as_str().unwrap().to_owned();
    assert_eq!(claims(&token)["email"], "jane@example.com");
    drop(busy);

    assert_eq!(
        std::fs::read(&theirs).unwrap(),
        br#"{"id_token":"kubelogin.id.token","refresh_token":"kubelogin-rt"}"#,
        "kubelogin's entry is untouched"
    );
    let ours: Vec<_> = std::fs::read_dir(&cache_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".json"))
        .collect();
    assert_eq!(ours.len(), 1);
    assert!(ours[0].starts_with("tokengate-"), "{ours:?}");

    // The same flags again: the cached token, no login.
    let out = Command::new(BIN)
        .env("HOME", home.path())
        .args(["get-token", &format!("--oidc-issuer-url={}", issuer.url), "--oidc-client-id=kubernetes"])
        .args(["--oidc-client-secret=kubernetes-secret", "--oidc-extra-scope=email,groups,offline_access"])
        .output()
        .unwrap();
    assert_eq!(exec_credential(&out)["status"]["token"], token.as_str(), "comma-separated extra scopes: same entry");
}

fn register_public_cli(c: &mut issuer::config::Config) {
    c.static_clients.push(issuer::config::Client {
        id: "kubectl".into(),
        secret: None,
        public: true,
        name: "kubectl".into(),
        redirect_uris: vec!["http://localhost:8000".into()],
        trusted_peers: vec![],
        post_logout_redirect_uris: vec![],
        allow_plain_pkce: false,
        allowed_connectors: vec![],
        policy: Default::default(),
        logo_url: None,
        sso_shared_with: None,
        backchannel_logout_uri: None,
        backchannel_logout_session_required: false,
    });
}

#[tokio::test]
async fn authcode_keyboard_signs_in_a_public_client_with_a_pasted_code() {
    let issuer = Issuer::start_tuned(register_public_cli).await;
    let home = tempfile::tempdir().unwrap();
    let mut child = Command::new(BIN)
        .env("HOME", home.path())
        .args(["get-token", &format!("--oidc-issuer-url={}", issuer.url), "--oidc-client-id=kubectl"])
        .args(["--oidc-extra-scope=email", "--grant-type=authcode-keyboard"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let auth_url = login_url(&mut child).await;
    assert_eq!(common::query_param(&auth_url, "redirect_uri").as_deref(), Some("urn:ietf:wg:oauth:2.0:oob"));
    let browser = Browser::new();
    let (url, req, csrf) = browser.open_login(&auth_url).await;
    let (status, _, page) = browser.submit(&url, &req, &csrf, "jane@example.com", "password").await;
    assert_eq!(status, 200, "the code is shown, not redirected");
    let code = common::pre(&page, "code");
    let mut stdin = child.stdin.take().unwrap();
    std::io::Write::write_all(&mut stdin, format!("{code}\n").as_bytes()).unwrap();
    drop(stdin);
    let out = finish(child).await;
    let token = exec_credential(&out)["status"]["token"].as_str().unwrap().to_owned();
    assert_eq!(claims(&token)["aud"], "kubectl");
    assert_eq!(claims(&token)["email"], "jane@example.com");

    // A confidential client may not use the out-of-band URI (Dex's rule): an error page, no code.
    let auth = auth_url.replace("client_id=kubectl", "client_id=kubernetes");
    let r = http().get(&auth).send().await.unwrap();
    assert_eq!(r.status(), 400);
}

#[tokio::test]
async fn after_the_user_is_revoked_get_token_falls_back_to_a_new_login() {
    // Issue 12: `issuer revoke --user` ends every refresh-token family of the user, so the plugin's cached
    // refresh token is refused (`invalid_grant`) and the plugin asks for a new sign-in instead of failing.
    let _port = PORT_USER.lock().await;
    let port = common::free_port();
    PORT.store(port, Ordering::SeqCst);
    let issuer = Issuer::start_tuned(register_loopback).await;
    let home = tempfile::tempdir().unwrap();
    let sign_in = |mut child: std::process::Child| {
        let issuer_url = issuer.endpoint("/auth?");
        async move {
            let auth_url = login_url(&mut child).await;
            assert!(auth_url.starts_with(&issuer_url), "{auth_url}");
            let (_, location) = Browser::new().sign_in(&auth_url, "jane@example.com", "password").await;
            assert_eq!(http().get(location.unwrap()).send().await.unwrap().status(), 200);
            let out = finish(child).await;
            exec_credential(&out)["status"]["token"].as_str().unwrap().to_owned()
        }
    };
    let first = sign_in(get_token(&issuer, home.path()).spawn().unwrap()).await;

    let summary =
        issuer::revocation::revoke(&issuer.state, &issuer::revocation::Target::User("jane@example.com".into()))
            .await
            .unwrap();
    assert_eq!(summary.families, 1, "the plugin's family");
    // Make the cached ID token look expired, so the plugin must use its (now revoked) refresh token.
    expire_cached_id_token(&cache_file(home.path()));

    let second = sign_in(get_token(&issuer, home.path()).spawn().unwrap()).await;
    assert_ne!(second, first);
    assert_eq!(claims(&second)["email"], "jane@example.com");
    assert_ne!(claims(&second)["sid"], claims(&first)["sid"], "a new login, not a refresh of the revoked one");
}
