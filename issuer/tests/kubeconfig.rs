//! The kubeconfig page over real HTTP: the issuer signs the user in as the Kubernetes client to itself,
//! redeems the code internally, and shows kubeconfigs whose tokens work; the callback is bound to the
//! browser that started it.

mod common;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use common::{claims, http, pre, query_param, Browser, Issuer};
use issuer::config::{CaFile, Cluster};
use serde_yaml::Value;

const CA: &str = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";

fn with_clusters(c: &mut issuer::config::Config) {
    let k = c.kubernetes.as_mut().unwrap();
    k.clusters = vec![Cluster {
        name: "prod".into(),
        server: "https://k8s.example.com:6443".into(),
        certificate_authority: Some(CA.into()),
    }];
    k.issuer_ca = Some(CaFile { path: "/etc/issuer-ca.pem".into(), pem: CA.into() });
}

/// Goes through `/kubeconfig`, the login form and the callback; returns the callback URL and the page.
async fn kubeconfig_page(issuer: &Issuer, browser: &Browser) -> (String, reqwest::Response) {
    let r = browser.client.get(issuer.endpoint("/kubeconfig")).send().await.unwrap();
    assert_eq!(r.status(), 303);
    let cookie = r.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(cookie.starts_with("issuer_kubeconfig=") && cookie.contains("HttpOnly"), "{cookie}");
    let auth = r.headers()["location"].to_str().unwrap().to_owned();
    assert!(auth.starts_with(&issuer.endpoint("/auth?")), "{auth}");
    assert_eq!(query_param(&auth, "client_id").as_deref(), Some("kubernetes"));
    assert_eq!(query_param(&auth, "redirect_uri").unwrap(), issuer.endpoint("/kubeconfig/callback"));
    assert_eq!(query_param(&auth, "code_challenge_method").as_deref(), Some("S256"));
    assert!(query_param(&auth, "scope").unwrap().contains("offline_access"));

    let (status, location) = browser.sign_in(&auth, "jane@example.com", "password").await;
    assert_eq!(status, 303);
    let callback = location.unwrap();
    assert!(callback.starts_with(&issuer.endpoint("/kubeconfig/callback?")), "{callback}");
    let page = browser.client.get(&callback).send().await.unwrap();
    (callback, page)
}

#[tokio::test]
async fn kubeconfig_page_hands_out_working_oidc_and_exec_kubeconfigs() {
    let issuer = Issuer::start_tuned(with_clusters).await;
    let browser = Browser::new();
    let (callback, page) = kubeconfig_page(&issuer, &browser).await;
    assert_eq!(page.status(), 200);
    let csp = page.headers()["content-security-policy"].to_str().unwrap().to_owned();
    assert!(page.headers()["cache-control"] == "no-store");
    let html = page.text().await.unwrap();
    let nonce = csp.split("'nonce-").nth(1).unwrap().split('\'').next().unwrap();
    assert!(html.contains(&format!("<script nonce=\"{nonce}\">")), "the one script carries the CSP nonce");
    assert!(!csp.contains("unsafe-inline'; script") && !csp.contains("script-src 'unsafe-inline'"), "{csp}");
    assert!(html.contains("jane@example.com") && html.contains("oidc:developers"), "email and prefixed groups shown");

    let oidc: Value = serde_yaml::from_str(&pre(&html, "oidc-prod")).unwrap();
    assert_eq!(oidc["current-context"], "prod");
    assert_eq!(oidc["clusters"][0]["cluster"]["server"], "https://k8s.example.com:6443");
    assert_eq!(oidc["clusters"][0]["cluster"]["certificate-authority-data"], STANDARD.encode(CA));
    let cfg = &oidc["users"][0]["user"]["auth-provider"]["config"];
    assert_eq!(cfg["idp-issuer-url"], issuer.url.as_str());
    assert_eq!(cfg["client-id"], "kubernetes");
    assert_eq!(cfg["client-secret"], "kubernetes-secret");
    assert_eq!(cfg["idp-certificate-authority-data"], STANDARD.encode(CA));
    let id = claims(cfg["id-token"].as_str().unwrap());
    assert_eq!(id["aud"], "kubernetes");
    assert_eq!(id["email"], "jane@example.com");
    assert_eq!(id["email_verified"], true);
    assert_eq!(id["groups"], serde_json::json!(["developers"]));

    let refreshed = http()
        .post(issuer.endpoint("/token"))
        .basic_auth("kubernetes", Some("kubernetes-secret"))
        .form(&[("grant_type", "refresh_token"), ("refresh_token", cfg["refresh-token"].as_str().unwrap())])
        .send()
        .await
        .unwrap();
    assert_eq!(refreshed.status(), 200, "kubectl can refresh with the kubeconfig's refresh token");

    let exec_text = pre(&html, "exec-prod");
    let exec: Value = serde_yaml::from_str(&exec_text).unwrap();
    let e = &exec["users"][0]["user"]["exec"];
    assert_eq!(e["apiVersion"], "client.authentication.k8s.io/v1");
    assert_eq!(e["command"], "kubectl-oidc_login");
    let args: Vec<&str> = e["args"].as_sequence().unwrap().iter().map(|a| a.as_str().unwrap()).collect();
    assert_eq!(args[..3], ["get-token", &format!("--oidc-issuer-url={}", issuer.url), "--oidc-client-id=kubernetes"]);
    assert!(!exec_text.contains(cfg["id-token"].as_str().unwrap()), "the exec kubeconfig holds no tokens");
    let download = format!("data:application/yaml;base64,{}", STANDARD.encode(&exec_text));
    assert!(html.contains(&format!("href=\"{download}\"")), "the download link is the same document");

    let commands = pre(&html, "commands-prod");
    assert!(commands.contains("kubectl config set-cluster prod --server=https://k8s.example.com:6443"));
    assert!(commands
        .contains("kubectl config set-credentials oidc@prod --exec-api-version=client.authentication.k8s.io/v1"));
    assert!(commands.contains("kubectl config set-context prod --cluster=prod --user=oidc@prod"));

    let again = browser.client.get(&callback).send().await.unwrap();
    assert_eq!(again.status(), 400, "the callback works once");
}

#[tokio::test]
async fn a_callback_in_another_browser_is_refused_without_redeeming_the_code() {
    let issuer = Issuer::start().await;
    let browser = Browser::new();
    let r = browser.client.get(issuer.endpoint("/kubeconfig")).send().await.unwrap();
    let auth = r.headers()["location"].to_str().unwrap().to_owned();
    let (_, location) = browser.sign_in(&auth, "jane@example.com", "password").await;
    let callback = location.unwrap();

    let stranger = Browser::new().client.get(&callback).send().await.unwrap();
    assert_eq!(stranger.status(), 400, "no flow cookie, no kubeconfig");
    let tampered = callback.replace("state=", "state=x");
    assert_eq!(browser.client.get(&tampered).send().await.unwrap().status(), 400, "state must match the cookie");

    let page = browser.client.get(&callback).send().await.unwrap();
    assert_eq!(page.status(), 200, "the code was not spent by the refused attempts");
    let html = page.text().await.unwrap();
    assert!(html.contains("<pre id=\"exec-local\""), "the dev config's cluster");
}

#[tokio::test]
async fn without_a_kubernetes_section_there_is_no_kubeconfig_page() {
    let issuer = Issuer::start_tuned(|c| c.kubernetes = None).await;
    assert_eq!(http().get(issuer.endpoint("/kubeconfig")).send().await.unwrap().status(), 404);
}

#[test]
fn kube_apiserver_config_command_prints_a_parseable_document_and_warns_on_stderr() {
    let dev = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/dev.yaml");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_issuer"))
        .args(["kube-apiserver-config", "--config", dev, "--api-version", "v1", "--groups-prefix", "corp:"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let doc: Value = serde_yaml::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["apiVersion"], "apiserver.config.k8s.io/v1");
    assert_eq!(doc["jwt"][0]["issuer"]["audiences"][0], "kubernetes");
    assert_eq!(doc["jwt"][0]["claimMappings"]["groups"]["prefix"], "corp:");
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(stdout.contains("#   --oidc-groups-prefix=corp:"), "{stdout}");
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains("warning: the issuer URL http://127.0.0.1:5556 is not https"), "{stderr}");

    let flags = std::process::Command::new(env!("CARGO_BIN_EXE_issuer"))
        .args(["kube-apiserver-config", "--config", dev, "--flags"])
        .output()
        .unwrap();
    let flags = String::from_utf8(flags.stdout).unwrap();
    assert_eq!(flags.lines().next(), Some("--oidc-issuer-url=http://127.0.0.1:5556"), "{flags}");
    assert!(flags.lines().all(|l| l.starts_with("--oidc-")), "{flags}");
}
