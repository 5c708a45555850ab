//! Dex's `frontend:` section over real HTTP: the display name, theme, logo and extra strings on the pages,
//! a client's `logoURL` on the login page, the theme and static files (replaced from `frontend.dir`, cached
//! with an `ETag`, never outside the loaded files), and the configuration problems of bad values.

mod common;

use axum::body::Body;
use axum::http::Request;
use common::{dev_config_with, http, Browser, Issuer};
use tower::ServiceExt;

const FRONTEND: &str = "frontend:
  issuer: Acme SSO
  theme: dark
  logoURL: https://cdn.example.com/acme.svg
  extra:
    footer: Operated by the Acme platform team
    loginHint: Use your Acme e-mail address
";

async fn text(url: &str) -> (u16, reqwest::header::HeaderMap, String) {
    let r = http().get(url).send().await.unwrap();
    (r.status().as_u16(), r.headers().clone(), r.text().await.unwrap())
}

/// The value of the first `attr="…"` of the element that carries `marker` in `html`.
fn attr_after(html: &str, marker: &str, attr: &str) -> String {
    let at = html.find(marker).unwrap_or_else(|| panic!("no {marker:?} in {html}"));
    let rest = &html[at..];
    let start = rest.find(&format!("{attr}=\"")).unwrap() + attr.len() + 2;
    rest[start..start + rest[start..].find('"').unwrap()].to_owned()
}

#[tokio::test]
async fn the_dark_theme_page_links_the_dark_stylesheet_and_shows_name_logos_and_extra_strings() {
    let issuer = Issuer::start_with(FRONTEND, |c| {
        let app = c.static_clients.iter_mut().find(|c| c.id == common::CLIENT).unwrap();
        app.logo_url = Some("https://apps.example.org/example-app.png".into());
    })
    .await;
    let browser = Browser::new();
    let (login_url, _, _) = browser.open_login(&issuer.auth_url("openid", "s")).await;
    let page = browser.client.get(&login_url).send().await.unwrap();
    let csp = page.headers()["content-security-policy"].to_str().unwrap().to_owned();
    let html = page.text().await.unwrap();

    assert!(html.contains("<title>Sign in to Example App · Acme SSO</title>"), "{html}");
    assert!(html.contains(r#"<span id="issuer-name">Acme SSO</span>"#), "{html}");
    assert_eq!(attr_after(&html, "theme-navbar__logo", "src"), "https://cdn.example.com/acme.svg");
    assert_eq!(attr_after(&html, "id=\"client-logo\"", "src"), "https://apps.example.org/example-app.png");
    assert!(html.contains("Use your Acme e-mail address"), "extra.loginHint is on the login page");
    assert!(html.contains("Operated by the Acme platform team"), "extra.footer is on the page");
    assert!(
        csp.contains("img-src 'self' data: https://cdn.example.com https://apps.example.org;"),
        "the configured logos may load: {csp}"
    );
    assert!(csp.contains("style-src 'self' 'unsafe-inline'") && !csp.contains("script-src"), "{csp}");

    let styles = attr_after(&html, "<link rel=\"stylesheet\" href=\"/theme/", "href");
    assert!(styles.starts_with("/theme/styles.css?v="), "{styles}");
    let (status, headers, css) = text(&issuer.endpoint(&styles)).await;
    assert_eq!(status, 200);
    assert_eq!(headers["content-type"], "text/css; charset=utf-8");
    assert!(css.contains("color-scheme: dark") && css.contains("--bg: #0f1217"), "the dark stylesheet: {css}");

    // Every page the issuer renders carries the name and the theme: the device page and an error page too.
    for path in ["/device", "/login"] {
        let (_, _, html) = text(&issuer.endpoint(path)).await;
        assert!(html.contains(" · Acme SSO</title>"), "{path}: {html}");
        assert!(html.contains(&format!("href=\"{styles}\"")), "{path} links the dark stylesheet");
        assert!(html.contains("Operated by the Acme platform team"), "{path}");
    }
}

#[tokio::test]
async fn without_a_frontend_section_pages_carry_the_product_name_and_the_light_theme() {
    let issuer = Issuer::start().await;
    let (_, _, html) = text(&issuer.endpoint("/device")).await;
    assert!(html.contains("<title>Connect a device · tokengate</title>"), "{html}");
    let logo = attr_after(&html, "theme-navbar__logo", "src");
    assert!(logo.starts_with("/theme/logo.png?v="), "{logo}");
    let r = http().get(issuer.endpoint(&logo)).send().await.unwrap();
    assert_eq!(r.headers()["content-type"], "image/png");
    assert_eq!(&r.bytes().await.unwrap()[..], include_bytes!("../web/themes/light/logo.png"));
    assert!(!html.contains("site-footer"), "no extra.footer, no footer line");
}

#[tokio::test]
async fn theme_and_static_files_carry_an_etag_and_a_matching_if_none_match_gets_304() {
    let issuer = Issuer::start().await;
    for path in ["/theme/styles.css", "/theme/favicon.png", "/static/layout.css"] {
        let r = http().get(issuer.endpoint(path)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
        assert_eq!(r.headers()["cache-control"], "public, max-age=3600", "{path}");
        let etag = r.headers()["etag"].to_str().unwrap().to_owned();
        assert!(etag.starts_with('"') && etag.len() > 10, "{path}: a strong ETag, got {etag}");
        let again = http().get(issuer.endpoint(path)).header("if-none-match", &etag).send().await.unwrap();
        assert_eq!(again.status(), 304, "{path}: unchanged");
        assert_eq!(again.headers()["etag"], etag.as_str());
        assert!(again.bytes().await.unwrap().is_empty());
        let other = http().get(issuer.endpoint(path)).header("if-none-match", "\"stale\"").send().await.unwrap();
        assert_eq!(other.status(), 200, "{path}: another version is sent again");
    }
}

#[tokio::test]
async fn a_custom_dir_replaces_the_theme_files_and_serves_static_files_under_the_issuer_path() {
    let web = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(web.path().join("themes/light")).unwrap();
    std::fs::create_dir_all(web.path().join("static/img")).unwrap();
    std::fs::write(web.path().join("themes/light/styles.css"), ".theme-body { background: #123456 }\n").unwrap();
    std::fs::write(web.path().join("static/img/brand.svg"), "<svg xmlns=\"http://www.w3.org/2000/svg\"/>").unwrap();
    let extra = format!("frontend:\n  dir: {}\n  logoURL: static/img/brand.svg\n", web.path().display());
    let issuer = Issuer::start_with(&extra, |c| {
        // Served under a path, as `https://id.example.com/dex` is.
        c.issuer = url::Url::parse(&format!("{}/dex", c.issuer.as_str().trim_end_matches('/'))).unwrap();
    })
    .await;

    let (status, _, html) = text(&issuer.endpoint("/dex/login")).await;
    assert_eq!(status, 400, "no pending login: the error page");
    assert_eq!(attr_after(&html, "theme-navbar__logo", "src"), "/dex/static/img/brand.svg");
    let styles = attr_after(&html, "<link rel=\"stylesheet\" href=\"/dex/theme/", "href");
    let (_, _, css) = text(&issuer.endpoint(&styles)).await;
    assert_eq!(css, ".theme-body { background: #123456 }\n", "the dir's styles.css replaces the built-in one");
    assert!(html.contains("href=\"/dex/static/layout.css?v="), "the built-in layout stays: {html}");

    let (status, headers, svg) = text(&issuer.endpoint("/dex/static/img/brand.svg")).await;
    assert_eq!((status, headers["content-type"].to_str().unwrap()), (200, "image/svg+xml"));
    assert!(svg.starts_with("<svg"));
    assert!(
        headers["content-security-policy"].to_str().unwrap().contains("sandbox"),
        "opened directly, a static file runs no script"
    );
    let (status, _, logo) = text(&issuer.endpoint("/dex/theme/logo.png")).await;
    assert_eq!((status, logo.is_empty()), (200, false), "files the dir lacks come from the built-in theme");
    assert_eq!(text(&issuer.endpoint("/theme/styles.css")).await.0, 404, "only under the issuer's path");
}

#[tokio::test]
async fn paths_that_climb_out_of_the_theme_or_static_files_find_nothing() {
    let root = tempfile::tempdir().unwrap();
    let web = root.path().join("web");
    std::fs::create_dir_all(web.join("themes/light")).unwrap();
    std::fs::create_dir_all(web.join("static/img")).unwrap();
    std::fs::write(web.join("static/img/ok.png"), "png").unwrap();
    std::fs::write(root.path().join("secret.txt"), "TOP-SECRET").unwrap();
    std::fs::write(web.join("themes/secret.txt"), "TOP-SECRET").unwrap();
    let db = root.path().join("issuer.db");
    let mut config = dev_config_with("http://127.0.0.1:5556", &db, &format!("frontend:\n  dir: {}\n", web.display()));
    config.storage = issuer::config::StorageConfig::Memory;
    let storage = issuer::state::open_storage(&config).await.unwrap();
    let state = issuer::AppState::new(config, storage, issuer::clock::Clock::frozen()).await.unwrap();
    let app = issuer::app(state);

    let get = |uri: &str| {
        let app = app.clone();
        let request = Request::get(uri).body(Body::empty()).unwrap();
        async move {
            let r = app.oneshot(request).await.unwrap();
            let status = r.status().as_u16();
            let body = axum::body::to_bytes(r.into_body(), 1 << 20).await.unwrap();
            (status, String::from_utf8_lossy(&body).into_owned())
        }
    };
    assert_eq!(get("/static/img/ok.png").await, (200, "png".to_owned()), "the probe itself works");
    for uri in [
        "/theme/../secret.txt",
        "/theme/../../secret.txt",
        "/static/../../secret.txt",
        "/static/img/../../../secret.txt",
        "/static/%2e%2e/%2e%2e/secret.txt",
        "/static/..%2f..%2fsecret.txt",
        "/static/%2e%2e%2f%2e%2e%2fsecret.txt",
        "/theme/%2E%2E%2Fsecret.txt",
        "/theme/..%5csecret.txt",
        "/static/img/%2e%2e/%2e%2e/%2e%2e/secret.txt",
        "/static//etc/passwd",
        "/static/%2fetc%2fpasswd",
        "/theme/%00",
    ] {
        let (status, body) = get(uri).await;
        assert!(status == 404 || status == 400, "{uri}: got {status}");
        assert!(!body.contains("TOP-SECRET"), "{uri}");
    }
}

#[test]
fn bad_frontend_values_are_problems_naming_their_keys() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/dev.yaml");
    let text = std::fs::read_to_string(path)
        .unwrap()
        .replace("    name: Example App\n", "    name: Example App\n    logoURL: 'javascript:alert(1)'\n")
        + "frontend:\n  theme: solarized\n  dir: /nonexistent/web\n  logoURL: ../logo.png\n";
    let err = issuer::config::Config::parse("dex.yaml", &text, &|_| None).unwrap_err().to_string();
    for expected in [
        "frontend.dir: expected an existing directory, got /nonexistent/web",
        "frontend.theme: expected \"light\", \"dark\" or the name of a directory under frontend.dir/themes, got \"solarized\"",
        "frontend.logoURL: expected an http(s) URL, an absolute path, or a path under the issuer",
        "staticClients[0].logoURL: expected an http(s) URL",
    ] {
        assert!(err.contains(expected), "{expected}\n{err}");
    }

    let typo = std::fs::read_to_string(path).unwrap() + "frontend:\n  logoUrl: /logo.png\n";
    let err = issuer::config::Config::parse("dex.yaml", &typo, &|_| None).unwrap_err().to_string();
    assert!(err.contains("frontend.logoUrl: expected one of `issuer`, `logoURL`"), "{err}");
}

#[test]
fn check_config_warns_that_the_dirs_go_templates_are_not_used() {
    let web = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(web.path().join("templates")).unwrap();
    std::fs::write(web.path().join("templates/login.html"), "{{ template \"header.html\" . }}").unwrap();
    let file = web.path().join("config.yaml");
    let dev = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/dev.yaml")).unwrap();
    let frontend = format!("frontend:\n  dir: {}\n  extra: {{tagline: Hello}}\n", web.path().display());
    std::fs::write(&file, dev + &frontend).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_issuer")).arg("check-config").arg(&file).output().unwrap();
    assert!(out.status.success(), "warnings do not fail the check: {}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let templates = web.path().join("templates").display().to_string();
    assert!(
        stdout.contains(&format!(": frontend.dir: {templates} holds Dex's Go templates")),
        "names the directory: {stdout}"
    );
    assert!(stdout.contains("the built-in pages are used"), "{stdout}");
    assert!(stdout.contains(": frontend.extra.tagline: accepted but shown on no page"), "{stdout}");
}
