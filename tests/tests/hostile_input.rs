//! Input that must never trap the filter or slip past it, through the compiled module: header bytes outside
//! UTF-8 from clients and from the issuer (issue 15), and the field reports' requests (issue 13): underscore
//! twins of identity headers, two `Authorization` credentials, WebSocket upgrades, and the filter's own
//! cookies on their way upstream.

mod common;

use std::sync::Arc;

use axum::http::{HeaderName, HeaderValue};
use common::*;
use serde_json::{json, Value};
use tests::Request;

const WORKERS: usize = 4;

/// Every answer of the issuer's callouts gets a header with a byte outside UTF-8.
fn add_junk_header(_: &[u8], _: u16, headers: &mut axum::http::HeaderMap, _: &mut Vec<u8>) {
    headers.append(HeaderName::from_static("x-junk"), HeaderValue::from_bytes(b"caf\xe9").unwrap());
}

fn raw(name: &'static str, value: &[u8]) -> (HeaderName, HeaderValue) {
    (HeaderName::from_static(name), HeaderValue::from_bytes(value).unwrap())
}

/// Issue 15: one request with `Authorization: Bearer caf\xe9.x.y` used to trap the VM that served it. Now
/// such bytes, from clients (authorization, cookie, accept, any other header) and from the issuer (every
/// callout answer carries one), get client errors or are ignored, and every worker VM keeps answering.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_bytes_outside_utf8_never_trap_a_worker() {
    let port = free_port();
    let issuer = Issuer::start_for_gateway(port, |_| {}).await;
    let junk = start_rewriting_proxy(&issuer.url, add_junk_header).await;
    let (_whoami, whoami_port) = start_whoami().await;
    let mut cmd = gateway_command(port, &issuer, whoami_port, &[]);
    let junk = junk.trim_start_matches("http://");
    cmd.args(["--cluster", &format!("issuer={junk}"), "--workers", &WORKERS.to_string()]);
    let _gateway = spawn_gateway(cmd, port).await;
    let base = format!("http://127.0.0.1:{port}");
    let client = http();

    // Each hostile request twice per worker (the gateway hands requests to its VMs in turn).
    let cases: Vec<(&str, (HeaderName, HeaderValue), u16)> = vec![
        ("bearer token", raw("authorization", b"Bearer caf\xe9.x.y"), 401),
        ("session cookie", raw("cookie", b"_tokengate=caf\xe9; other=\xff"), 401),
        ("accept", raw("accept", b"text/html\xe9"), 400),
        ("sec-fetch-mode", raw("sec-fetch-mode", b"navig\xe9te"), 400),
        ("an unrelated header", raw("x-trace", b"caf\xe9"), 401),
    ];
    for (what, (name, value), want) in &cases {
        for _ in 0..2 * WORKERS {
            let r = client
                .get(format!("{base}/dashboard"))
                .header(name, value.clone())
                .header("x-requested-with", "XMLHttpRequest")
                .send()
                .await
                .unwrap();
            assert_eq!(r.status().as_u16(), *want, "{what}");
            if *what == "bearer token" {
                let challenge = r.headers()["www-authenticate"].to_str().unwrap();
                assert!(challenge.contains("invalid_token"), "{challenge}");
            }
        }
    }

    // A whole login through callouts whose answers all carry the byte, then every worker serves the session.
    let browser =
        reqwest::Client::builder().cookie_store(true).redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let r = browser.get(format!("{base}/dashboard")).header("accept", "text/html").send().await.unwrap();
    assert_eq!(r.status(), 302, "sent to the issuer (discovery and keys came through the junk proxy)");
    let auth = r.headers()["location"].to_str().unwrap().to_owned();
    let back = Browser { client: browser.clone() }.login(&auth, "admin@example.com", "password").await;
    let r = browser.get(&back).send().await.unwrap();
    assert_eq!(r.status(), 302, "the code exchange's answer carried the byte too");
    for i in 0..2 * WORKERS {
        let r = browser
            .get(format!("{base}/dashboard"))
            .header("accept", "application/json")
            .header("x-trace", HeaderValue::from_bytes(b"caf\xe9").unwrap())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "request {i}: the worker still answers");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["identity"]["email"], "admin@example.com");
    }
}

/// The same bytes through the module in-process, where the test can see the exact bytes the upstream gets
/// and can send what no HTTP/1 parser lets through (a path outside UTF-8).
#[tokio::test]
async fn bytes_outside_utf8_pass_through_byte_for_byte_where_the_filter_does_not_read_them() {
    let issuer = Issuer::start().await;
    let w = worker(&issuer, json!({})).await;
    let jar = browser_login(&w, "admin@example.com", "/").await;
    let request = jar.apply(Request::get(HOST, "/app")).header_bytes(b"x-trace", b"caf\xe9");
    let (r, seen) = send(&w, request).await;
    assert_eq!(r.status, 200);
    let seen = seen.unwrap();
    let trace = seen.iter().find(|(k, _)| k == b"x-trace").map(|(_, v)| v.as_slice());
    assert_eq!(trace, Some(&b"caf\xe9"[..]), "an uninterpreted header passes byte for byte");

    let mut path = Request::get(HOST, "/");
    path.path = b"/caf\xe9".to_vec();
    let (r, seen) = send(&w, jar.apply(path)).await;
    assert_eq!((r.status, seen.is_none()), (400, true), "a path outside UTF-8 is the client's error");

    let request = Request::get(HOST, "/api").header_bytes(b"authorization", b"Bearer caf\xe9.x.y");
    let (r, _) = send(&w, request).await;
    assert_eq!(r.status, 401);
    assert_eq!(w.metric("tokengate.malformed_requests"), 2, "the path and the token");
    let (r, _) = send(&w, jar.apply(Request::get(HOST, "/after"))).await;
    assert_eq!(r.status, 200, "the VM still serves the session");
}

/// Issue 13, items 1–4, through the gateway binary and `envoy/envoy.yaml` as shipped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_headers_authorization_websockets_and_session_cookies_are_handled_like_envoy_users_expect() {
    let port = free_port();
    let issuer = Issuer::start_for_gateway(port, |_| {}).await;
    let (_whoami, whoami_port) = start_whoami().await;
    let _gateway = start_gateway(port, &issuer, whoami_port, &[]).await;
    let base = format!("http://127.0.0.1:{port}");
    let jar = Arc::new(reqwest::cookie::Jar::default());
    jar.add_cookie_str("theme=dark; Path=/", &base.parse().unwrap());
    let browser = reqwest::Client::builder()
        .cookie_provider(jar.clone())
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();

    // 3. A WebSocket handshake without a session cannot follow a redirect: 401.
    let r = browser
        .get(format!("{base}/ws"))
        .header("connection", "Upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "13")
        .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "a WebSocket upgrade is not a navigation");

    let r = browser.get(format!("{base}/dashboard")).header("accept", "text/html").send().await.unwrap();
    assert_eq!(r.status(), 302);
    let auth = r.headers()["location"].to_str().unwrap().to_owned();
    let back = Browser { client: browser.clone() }.login(&auth, "admin@example.com", "password").await;
    let r = browser.get(&back).send().await.unwrap();
    assert_eq!(r.status(), 302);

    // 1. Underscore twins of identity headers never reach the upstream; 4. nor does the session cookie.
    let r = browser
        .get(format!("{base}/dashboard"))
        .header("accept", "application/json")
        .header("X_Auth_Request_Email", "root@corp.example")
        .header("x_auth_request_groups", "admins")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    let headers = v["headers"].as_object().unwrap();
    assert_eq!(headers["x-auth-request-email"], "admin@example.com");
    for twin in ["x_auth_request_email", "x_auth_request_groups"] {
        assert!(headers.get(twin).is_none(), "{twin} was removed: {headers:?}");
    }
    let cookie = headers.get("cookie").and_then(Value::as_str).unwrap_or_default();
    assert!(cookie.contains("theme=dark"), "other cookies pass: {cookie:?}");
    assert!(!cookie.contains("_tokengate"), "the session cookie stays at the gateway: {cookie:?}");

    // 2. Two Authorization headers: 400, and neither reaches the upstream.
    let t = issuer.tokens_for("admin@example.com", "openid email").await;
    let bearer = format!("Bearer {}", t["id_token"].as_str().unwrap());
    let r = http()
        .get(format!("{base}/api"))
        .header("authorization", &bearer)
        .header("authorization", "Basic Zm9vOmJhcg==")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400, "two credentials are ambiguous");
    let r = http().get(format!("{base}/api")).header("authorization", &bearer).send().await.unwrap();
    assert_eq!(r.status(), 200, "one is fine");
}

/// The module fuzzer (`make fuzz` runs it for longer with a fresh seed) on fixed seeds, so a regression
/// shows up in `make test`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_module_fuzzer_finds_no_trap_and_no_stall() {
    for seed in [1, 2, 3] {
        let report = tests::fuzz::run(seed, 400, std::time::Duration::from_secs(300)).await.unwrap();
        assert!(report.traps.is_empty(), "seed {seed}: {:#?}", report.traps);
        assert!(report.stalls.is_empty(), "seed {seed}: {:#?}", report.stalls);
        assert!(report.runs > 0);
    }
}
