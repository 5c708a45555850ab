//! A real browser (headless Chromium through chromedriver) against the real stack: the gateway binary
//! serving `envoy/envoy.yaml` with the compiled filter, the whoami upstream, and the issuer. It logs in
//! through the issuer's form, reloads, opens a second tab, signs out, then gets a kubeconfig from the
//! issuer's page, and saves a screenshot of every page under `target/screenshots/` for a person to look at.
//! A second journey signs in through the issuer's connectors: an LDAP directory (a real slapd) and an
//! upstream OpenID Provider's own login and consent pages (panva oidc-provider). A third opens the login page
//! of an issuer configured with Dex's `frontend:` (dark theme, an operator's logo) and checks what it looks like.

mod common;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{free_port, serving, start_gateway, start_whoami, Issuer, Process};
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

/// chromedriver and a headless Chromium session (the driver process and the profile live as long as the
/// returned guards).
async fn chromium() -> (Process, tempfile::TempDir, Client) {
    let driver_port = free_port();
    let mut driver = Process(
        Command::new("chromedriver")
            .arg(format!("--port={driver_port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver is installed by `make setup-test` (Debian package chromium-driver)"),
    );
    if let Err(e) = serving(&format!("http://127.0.0.1:{driver_port}/status"), &mut driver).await {
        panic!("chromedriver on port {driver_port} {e}");
    }
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

    (driver, profile, c)
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

    let (_driver, _profile, c) = chromium().await;

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

#[path = "../../issuer/tests/common/slapd.rs"]
mod slapd;

#[path = "../../issuer/tests/common/oidc_provider.rs"]
mod provider;

/// The `connectors:` of a configuration: an LDAP directory and an upstream OpenID Provider.
fn connectors(ldap: &str, provider_port: u16, issuer: &str) -> Vec<issuer::connector::ConnectorConfig> {
    let yaml = format!(
        r#"issuer: {issuer}
web: {{http: "127.0.0.1:1"}}
storage: {{type: memory}}
connectors:
  - type: ldap
    id: ldap
    name: Corporate directory
    config:
      host: {ldap}
      insecureNoSSL: true
      bindDN: {service}
      bindPW: {service_pw}
      usernamePrompt: Corporate username
      userSearch: {{baseDN: "ou=people,{suffix}", username: uid, idAttr: uid, emailAttr: mail, nameAttr: cn}}
      groupSearch:
        baseDN: ou=groups,{suffix}
        userMatchers: [{{userAttr: DN, groupAttr: member}}]
        nameAttr: cn
  - type: oidc
    id: acme
    name: ACME SSO
    config:
      issuer: http://127.0.0.1:{provider_port}/realms/acme
      clientID: tokengate
      clientSecret: tokengate-secret
      redirectURI: {issuer}/callback
      scopes: [profile, email, groups]
      insecureEnableGroups: true
"#,
        service = slapd::SERVICE_DN,
        service_pw = slapd::SERVICE_PW,
        suffix = slapd::SUFFIX,
    );
    issuer::config::Config::parse("connectors.yaml", &yaml, &|_| None).unwrap().connectors
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs panva oidc-provider: `make test` installs it and runs ignored tests"]
async fn a_browser_signs_in_through_ldap_and_through_an_upstream_providers_own_pages() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let directory = slapd::Slapd::start().await;
    let jane = directory.add_user("jane", "jane@corp.example", "Jane Doe", "jane-password").await;
    directory.add_group("platform", &[&jane]).await;

    let gateway_port = free_port();
    let gateway = format!("http://127.0.0.1:{gateway_port}");
    let provider_port = provider::free_port();
    let ldap = directory.ldap.clone();
    let home = format!("{gateway}/");
    let issuer = Issuer::start_for_gateway(gateway_port, move |c| {
        c.static_clients.iter_mut().find(|c| c.id == "gateway").unwrap().post_logout_redirect_uris.push(home);
        c.connectors = connectors(&ldap, provider_port, c.issuer.as_str().trim_end_matches('/'));
    })
    .await;
    // The connector's redirect URI is the issuer's own /callback, known once the issuer listens.
    let issuer_callback = format!("{}/callback", issuer.url);
    let p = provider::start_on(
        provider_port,
        json!([{
            "client_id": "tokengate",
            "client_secret": "tokengate-secret",
            "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"],
            "redirect_uris": [issuer_callback],
            "token_endpoint_auth_method": "client_secret_basic",
        }]),
    )
    .await;
    let (_whoami, whoami_port) = start_whoami().await;
    let logout = format!("post_logout_redirect_uri={}", json!(format!("{gateway}/")));
    let _gateway = start_gateway(gateway_port, &issuer, whoami_port, &[logout]).await;
    let (_driver, _profile, c) = chromium().await;

    // The login page offers the password database, the directory (its own prompt) and the provider.
    c.goto(&format!("{gateway}/dashboard")).await.unwrap();
    let login = c.wait().at_most(Duration::from_secs(30)).for_element(Locator::Css("#login-ldap")).await.unwrap();
    wait_for_text(&c, "label[for=login-ldap]", "Corporate username").await;
    wait_for_text(&c, "a.button", "Continue with ACME SSO").await;
    screenshot(&c, "06-login-connectors.png").await;

    // LDAP: the whoami page shows the directory's email and groups.
    login.send_keys("jane").await.unwrap();
    c.find(Locator::Css("#password-ldap")).await.unwrap().send_keys("jane-password").await.unwrap();
    c.find(Locator::Css("form:has(#login-ldap) button[type=submit]")).await.unwrap().click().await.unwrap();
    wait_for_text(&c, "#email", "jane@corp.example").await;
    wait_for_text(&c, "#groups", "platform").await;
    screenshot(&c, "07-ldap-whoami.png").await;

    // Sign out, then through the provider's own login and consent pages.
    c.find(Locator::Css("a.button")).await.unwrap().click().await.unwrap();
    c.wait().at_most(Duration::from_secs(30)).for_element(Locator::Css("#login-ldap")).await.unwrap();
    c.find(Locator::Css("a.button")).await.unwrap().click().await.unwrap();
    let provider_login =
        c.wait().at_most(Duration::from_secs(30)).for_element(Locator::Css("input[name=login]")).await.unwrap();
    assert!(c.current_url().await.unwrap().as_str().starts_with(&p.base), "on the provider's own page");
    screenshot(&c, "08-provider-login.png").await;
    provider_login.send_keys("alice").await.unwrap();
    c.find(Locator::Css("input[name=password]")).await.unwrap().send_keys("any password").await.unwrap();
    c.find(Locator::Css("button[type=submit]")).await.unwrap().click().await.unwrap();
    // The consent page (offline_access is asked for with prompt=consent).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let url = c.current_url().await.unwrap();
        if url.as_str().starts_with(&gateway) {
            break;
        }
        if let Ok(b) = c.find(Locator::Css("button[type=submit]")).await {
            let _ = b.click().await;
        }
        assert!(Instant::now() < deadline, "the provider never sent the browser back ({url})");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    wait_for_text(&c, "#email", "alice@example.com").await;
    wait_for_text(&c, "#groups", "developers").await;
    screenshot(&c, "09-provider-whoami.png").await;
    c.close().await.unwrap();
}

/// Polls `script` (a function body returning a value) until it returns `true`, with a deadline.
async fn wait_for_script(c: &Client, script: &str, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while c.execute(script, vec![]).await.unwrap() != json!(true) {
        assert!(Instant::now() < deadline, "{what} on {}", c.current_url().await.unwrap());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Relative luminance (WCAG 2.x) of a computed CSS colour such as `rgb(15, 18, 23)`.
fn luminance(css: &str) -> f64 {
    let channels: Vec<f64> = css
        .trim_start_matches("rgba(")
        .trim_start_matches("rgb(")
        .trim_end_matches(')')
        .split(',')
        .take(3)
        .map(|v| v.trim().parse::<f64>().unwrap_or_else(|_| panic!("a colour, got {css:?}")) / 255.0)
        .map(|c| if c <= 0.04045 { c / 12.92 } else { ((c + 0.055) / 1.055).powf(2.4) })
        .collect();
    assert_eq!(channels.len(), 3, "{css}");
    0.2126 * channels[0] + 0.7152 * channels[1] + 0.0722 * channels[2]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_login_page_with_the_dark_theme_and_a_logo_renders_dark_with_both_logos_loaded() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    // A Dex-style web directory holding only the operator's logo (a PNG of the built-in light theme).
    let web = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(web.path().join("static/img")).unwrap();
    std::fs::write(web.path().join("static/img/acme.png"), include_bytes!("../../issuer/web/themes/light/logo.png"))
        .unwrap();
    let dir = web.path().to_owned();
    let issuer = Issuer::start_live(move |c| {
        c.frontend = issuer::frontend::Frontend {
            issuer: "Acme SSO".into(),
            logo_url: Some("static/img/acme.png".into()),
            theme: "dark".into(),
            dir: Some(dir),
            extra: [("footer".to_owned(), "Operated by the Acme platform team".to_owned())].into(),
        };
        // The client's logo: the dark theme's own, a path under the issuer.
        c.static_clients.iter_mut().find(|c| c.id == "gateway").unwrap().logo_url = Some("theme/logo.png".into());
    })
    .await;
    let (_driver, _profile, c) = chromium().await;

    let auth = format!(
        "{}/auth?client_id=gateway&redirect_uri={}&response_type=code&scope=openid&state=dark",
        issuer.url,
        common::enc("http://127.0.0.1:8080/oauth2/callback")
    );
    c.goto(&auth).await.unwrap();
    c.wait().at_most(Duration::from_secs(30)).for_element(Locator::Css("input[name=login]")).await.unwrap();
    wait_for_text(&c, "#issuer-name", "Acme SSO").await;
    wait_for_text(&c, "#site-footer", "Operated by the Acme platform team").await;
    for (img, what) in [(".theme-navbar__logo", "the frontend logo"), ("#client-logo", "the client's logo")] {
        let loaded =
            format!("const i = document.querySelector({img:?}); return !!i && i.complete && i.naturalWidth > 0;");
        wait_for_script(&c, &loaded, &format!("{what} loaded")).await;
    }
    let styled = "return getComputedStyle(document.querySelector('main')).borderTopLeftRadius === '12px';";
    wait_for_script(&c, styled, "the layout stylesheet applied").await;

    let colours = c
        .execute(
            "const s = e => getComputedStyle(document.querySelector(e));
             return [s('body').backgroundColor, s('main').backgroundColor, s('h1').color];",
            vec![],
        )
        .await
        .unwrap();
    let [body, panel, heading] = [0, 1, 2].map(|i| colours[i].as_str().unwrap().to_owned());
    assert!(luminance(&body) < 0.05, "a dark page background, got {body}");
    assert!(luminance(&panel) < 0.05, "a dark panel, got {panel}");
    assert!(luminance(&heading) > 0.5, "light text on it, got {heading}");
    assert!(
        (luminance(&heading) + 0.05) / (luminance(&panel) + 0.05) >= 7.0,
        "heading contrast is WCAG AAA: {heading} on {panel}"
    );
    screenshot(&c, "10-login-dark.png").await;
    c.close().await.unwrap();
}
