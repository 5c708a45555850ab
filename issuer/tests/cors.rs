//! CORS for browser apps (Dex's `web.allowedOrigins` / `web.allowedHeaders`) over real HTTP: preflights
//! are answered without client authentication, allowed origins get `Access-Control-Allow-Origin`, others
//! get no CORS headers.

mod common;

use common::{http, Issuer, CLIENT, SECRET};

const SPA: &str = "https://spa.example";

async fn preflight(issuer: &Issuer, path: &str, origin: &str) -> reqwest::Response {
    http()
        .request(reqwest::Method::OPTIONS, issuer.endpoint(path))
        .header("origin", origin)
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "authorization, content-type")
        .send()
        .await
        .unwrap()
}

fn allow_origin(r: &reqwest::Response) -> Option<&str> {
    r.headers().get("access-control-allow-origin").and_then(|v| v.to_str().ok())
}

#[tokio::test]
async fn an_allowed_origin_gets_preflights_answered_and_cors_headers_on_every_api_endpoint() {
    let issuer = Issuer::start_tuned(|c| c.web.allowed_origins = vec![SPA.into()]).await;
    for path in ["/token", "/.well-known/openid-configuration", "/keys", "/userinfo", "/revoke", "/device/code"] {
        let r = preflight(&issuer, path, SPA).await;
        assert!(r.status().is_success(), "{path}: preflight answered, got {}", r.status());
        assert_eq!(allow_origin(&r), Some(SPA), "{path}");
        let methods = r.headers()["access-control-allow-methods"].to_str().unwrap().to_ascii_uppercase();
        assert!(methods.contains("POST"), "{path}: {methods}");
        let headers = r.headers()["access-control-allow-headers"].to_str().unwrap().to_ascii_lowercase();
        assert!(headers.contains("authorization") && headers.contains("content-type"), "{path}: {headers}");
    }
    let r = http().get(issuer.endpoint("/keys")).header("origin", SPA).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(allow_origin(&r), Some(SPA), "the actual response carries the header too");
    let r = http()
        .post(issuer.endpoint("/token"))
        .header("origin", SPA)
        .basic_auth(CLIENT, Some(SECRET))
        .form(&[("grant_type", "refresh_token"), ("refresh_token", "nope")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(allow_origin(&r), Some(SPA), "errors are readable by the app");

    let r = preflight(&issuer, "/token", "https://evil.example").await;
    assert_eq!(allow_origin(&r), None, "a disallowed origin gets no CORS headers");
    let r = http().get(issuer.endpoint("/keys")).header("origin", "https://evil.example").send().await.unwrap();
    assert_eq!(allow_origin(&r), None);
}

#[tokio::test]
async fn a_wildcard_allows_any_origin_and_no_setting_allows_none() {
    let issuer = Issuer::start_tuned(|c| c.web.allowed_origins = vec!["*".into()]).await;
    let r = preflight(&issuer, "/token", "https://anything.example").await;
    assert!(r.status().is_success());
    assert_eq!(allow_origin(&r), Some("*"));

    let issuer = Issuer::start().await;
    let r = preflight(&issuer, "/token", SPA).await;
    assert_eq!(allow_origin(&r), None);
    assert_eq!(r.status(), 405, "without allowedOrigins /token knows no OPTIONS");
    let r = http().get(issuer.endpoint("/keys")).header("origin", SPA).send().await.unwrap();
    assert_eq!(allow_origin(&r), Some("*"), "with no policy the public documents stay readable by any page");
}
