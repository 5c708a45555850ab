//! A real browser (headless Chromium through chromedriver) against the real stack: the gateway binary
//! serving `envoy/envoy.yaml` with the compiled filter, the whoami upstream, and the issuer. It logs in
//! through the issuer's form, reloads, opens a second tab, signs out, then gets a kubeconfig from the
//! issuer's page, and saves a screenshot of every page under `target/screenshots/` for a person to look at.

mod common;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{free_port, start_gateway, start_whoami, wait_until_up, Issuer, Process};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;

fn screenshots_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let dir = target.join("screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn screenshot(c: &Client, name: &str) {
    let png = c.screenshot().await.unwrap();
    std::fs::write(screenshots_dir().join(name), png).unwrap();
}

async fn wait_for_text(c: &Client, css: &str, text: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(e) = c.find(Locator::Css(css)).await {
            if e.text().await.is_ok_and(|t| t.contains(text)) {
                return;
            }
        }
        assert!(Instant::now() < deadline, "no {css:?} containing {text:?} on {}", c.current_url().await.unwrap());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_logs_in_reloads_opens_a_tab_and_signs_out() {
    // Two TLS backends are linked (aws-lc-rs for the issuer, ring for the WebDriver client): pick one.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let gateway_port = free_port();
    let gateway = format!("http://127.0.0.1:{gateway_port}");
    let (callback, home) = (format!("{gateway}/oauth2/callback"), format!("{gateway}/"));
    let issuer = Issuer::start_live(move |c| {
        let client = c.static_clients.iter_mut().find(|c| c.id == "gateway").unwrap();
        client.redirect_uris.push(callback);
        client.post_logout_redirect_uris.push(home);
    })
    .await;

    let (_whoami, whoami_port) = start_whoami().await;
    let logout = format!("post_logout_redirect_uri={}", json!(format!("{gateway}/")));
    let _gateway = start_gateway(gateway_port, &issuer, whoami_port, &[logout]).await;

    let driver_port = free_port();
    let _driver = Process(
        Command::new("chromedriver")
            .arg(format!("--port={driver_port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver is installed by `make setup` (Debian package chromium-driver)"),
    );
    wait_until_up(&format!("http://127.0.0.1:{driver_port}/status")).await;
    let profile = tempfile::tempdir().unwrap();
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": "/usr/bin/chromium",
            "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
                "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--window-size=1100,900", format!("--user-data-dir={}", profile.path().display()),
            ]
        }),
    );
    let c = ClientBuilder::rustls()
        .unwrap()
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{driver_port}"))
        .await
        .unwrap();

    // 1. Open the dashboard: the filter sends the browser to the issuer's login form.
    c.goto(&format!("{gateway}/dashboard")).await.unwrap();
    let login = c.wait().at_most(Duration::from_secs(30)).for_element(Locator::Css("input[name=login]")).await.unwrap();
    assert!(c.current_url().await.unwrap().as_str().starts_with(&issuer.url), "on the issuer's login page");
    screenshot(&c, "01-login.png").await;

    // 2. Sign in: back on the dashboard, which shows who we are.
    login.send_keys("admin@example.com").await.unwrap();
    c.find(Locator::Css("input[name=password]")).await.unwrap().send_keys("password").await.unwrap();
    c.find(Locator::Css("button[type=submit]")).await.unwrap().click().await.unwrap();
    wait_for_text(&c, "#email", "admin@example.com").await;
    assert_eq!(c.current_url().await.unwrap().as_str(), format!("{gateway}/dashboard"));
    wait_for_text(&c, "#groups", "admins").await;
    screenshot(&c, "02-whoami.png").await;

    // 3. Reload: still signed in, no login form.
    c.refresh().await.unwrap();
    wait_for_text(&c, "#email", "admin@example.com").await;

    // 4. A second tab shares the session.
    let tab = c.new_window(true).await.unwrap();
    c.switch_to_window(tab.handle).await.unwrap();
    c.goto(&format!("{gateway}/other")).await.unwrap();
    wait_for_text(&c, "#email", "admin@example.com").await;
    screenshot(&c, "03-second-tab.png").await;

    // 5. Sign out: through the issuer's logout and back, which asks for a login again.
    c.find(Locator::Css("a.button")).await.unwrap().click().await.unwrap();
    c.wait().at_most(Duration::from_secs(30)).for_element(Locator::Css("input[name=login]")).await.unwrap();
    assert!(c.current_url().await.unwrap().as_str().starts_with(&issuer.url), "asked to sign in again");
    screenshot(&c, "04-signed-out.png").await;

    // 6. The issuer's kubeconfig page: sign in as jane, read who we are and the exec kubeconfig.
    c.goto(&format!("{}/kubeconfig", issuer.url)).await.unwrap();
    let login = c.wait().at_most(Duration::from_secs(30)).for_element(Locator::Css("input[name=login]")).await.unwrap();
    login.send_keys("jane@example.com").await.unwrap();
    c.find(Locator::Css("input[name=password]")).await.unwrap().send_keys("password").await.unwrap();
    c.find(Locator::Css("button[type=submit]")).await.unwrap().click().await.unwrap();
    wait_for_text(&c, "#email", "jane@example.com").await;
    wait_for_text(&c, "#groups", "oidc:developers").await;
    wait_for_text(&c, "#exec-local", "kubectl-oidc_login").await;
    screenshot(&c, "05-kubeconfig.png").await;
    c.close().await.unwrap();
}
