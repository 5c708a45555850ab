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
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    PORT.store(port, Ordering::SeqCst);
    let issuer = Issuer::start_tuned(register_loopback).await;
    let home = tempfile::tempdir().unwrap();

    let mut child = get_token(&issuer, home.path()).spawn().unwrap();
    let stderr = child.stderr.take().unwrap();
    let auth_url = tokio::task::spawn_blocking(move || {
        BufReader::new(stderr).lines().map(Result::unwrap).find(|l| l.starts_with("http")).unwrap()
    })
    .await
    .unwrap();
    assert!(auth_url.starts_with(&issuer.endpoint("/auth?")), "{auth_url}");
    let (status, location) = Browser::new().sign_in(&auth_url, "jane@example.com", "password").await;
    assert_eq!(status, 303);
    let callback = location.unwrap();
    assert!(callback.starts_with(&redirect()), "{callback}");
    let r = http().get(&callback).send().await.unwrap();
    assert_eq!(r.status(), 200, "the plugin's loopback listener answers the browser");
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap()).await.unwrap();
    let first = exec_credential(&out);
    let token = first["status"]["token"].as_str().unwrap().to_owned();
    assert_eq!(claims(&token)["aud"], "kubernetes");
    assert_eq!(claims(&token)["email"], "jane@example.com");

    let cache_dir = home.path().join(".kube/cache/oidc-login");
    let cache = std::fs::read_dir(&cache_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "json"))
        .unwrap();
    assert_eq!(std::fs::metadata(&cache).unwrap().permissions().mode() & 0o777, 0o600, "the cache is private");

    let out = tokio::task::spawn_blocking({
        let mut cmd = get_token(&issuer, home.path());
        move || cmd.output().unwrap()
    })
    .await
    .unwrap();
    assert_eq!(exec_credential(&out)["status"]["token"], token.as_str(), "a valid cached token is reused");

    // An ID token past its exp: the plugin refreshes instead of logging in again.
    let mut cached: Value = serde_json::from_slice(&std::fs::read(&cache).unwrap()).unwrap();
    let expired = format!("e30.{}.sig", B64.encode(br#"{"exp":1}"#));
    cached["id_token"] = expired.into();
    std::fs::write(&cache, serde_json::to_vec(&cached).unwrap()).unwrap();
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
