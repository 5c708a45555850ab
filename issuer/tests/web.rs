//! Dex's `web.headers` (added to every response) and `web.clientRemoteIP` (which header carries the
//! client's address, and which proxies — addresses or CIDR ranges — may set it), over real HTTP.

mod common;

use common::{http, Browser, Issuer};

#[tokio::test]
async fn configured_headers_are_on_every_response_and_replace_the_issuers_own() {
    let issuer = Issuer::start_with("", |c| {
        c.web.headers.insert("Strict-Transport-Security".into(), "max-age=31536000".into());
        c.web.headers.insert("X-Frame-Options".into(), "DENY".into());
        c.web.headers.insert("Referrer-Policy".into(), "same-origin".into());
    })
    .await;
    for path in ["/.well-known/openid-configuration", "/keys", "/healthz/live", "/nowhere"] {
        let r = http().get(issuer.endpoint(path)).send().await.unwrap();
        assert_eq!(r.headers()["strict-transport-security"], "max-age=31536000", "{path}");
        assert_eq!(r.headers()["x-frame-options"], "DENY", "{path}");
        assert_eq!(r.headers()["referrer-policy"], "same-origin", "{path}: the operator's value wins");
    }
}

#[tokio::test]
async fn throttling_counts_the_client_address_a_trusted_proxy_names_in_the_configured_header() {
    let issuer = Issuer::start_with("", |c| {
        c.brute_force.max_attempts = 2;
        c.brute_force.per_ip_max_attempts = 2;
        c.web.client_remote_ip =
            Some(issuer::config::ClientRemoteIp { header: Some("X-Real-Client".into()), trusted_proxies: vec![] });
        c.web.proxies = vec!["127.0.0.0/8".parse().unwrap()];
    })
    .await;
    // Each attempt uses another login name, so only the per-client-IP bucket can run dry.
    let attempt = |client_ip: &'static str, n: usize| {
        let issuer = &issuer;
        async move {
            let browser = Browser::new();
            let (url, req, csrf) = browser.open_login(&issuer.auth_url("openid", "s")).await;
            let action = url.split('?').next().unwrap().to_owned();
            let login = format!("nobody{n}@example.com");
            let r = browser
                .client
                .post(action)
                .header("X-Real-Client", client_ip)
                .form(&[("req", req.as_str()), ("csrf", &csrf), ("login", &login), ("password", "wrong")])
                .send()
                .await
                .unwrap();
            r.status().as_u16()
        }
    };
    assert_eq!(attempt("203.0.113.7", 1).await, 401);
    assert_eq!(attempt("203.0.113.7", 2).await, 401);
    assert_eq!(attempt("203.0.113.7", 3).await, 429, "this client's budget is spent");
    assert_eq!(attempt("198.51.100.9", 4).await, 401, "another client behind the same proxy is not");
}

#[test]
fn bad_proxies_and_headers_are_configuration_problems_with_their_keys() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/dev.yaml");
    let text = std::fs::read_to_string(path).unwrap().replace(
        "web:\n  http: 127.0.0.1:5556\n",
        "web:\n  http: 127.0.0.1:5556\n  trustedProxies: [10.0.0.1]\n  clientRemoteIP:\n    header: \"Bad Header\"\n    trustedProxies: [10.0.0.0/8, not-a-net]\n  headers:\n    X-Frame-Options: DENY\n    \"Bad Name\": x\n",
    );
    let err = issuer::config::Config::parse("dex.yaml", &text, &|_| None).unwrap_err().to_string();
    for expected in [
        "web.clientRemoteIP.trustedProxies[1]: expected an IP address or CIDR range",
        "web.clientRemoteIP.header: expected a header name",
        "web.headers.Bad Name: expected a header name",
    ] {
        assert!(err.contains(expected), "{expected}\n{err}");
    }
    assert!(!err.contains("web.trustedProxies"), "{err}");
}
