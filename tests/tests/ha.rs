//! High availability: two gateways (separate Envoys: separate shared data, same cookie secrets) in front
//! of one issuer. A session started on one works on both, survives the loss of either, and when its ID
//! token expires both gateways refresh it at the same moment without anyone being logged out, thanks to
//! the issuer's refresh-token reuse interval.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use serde_json::json;
use tests::Request;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateways_share_sessions_survive_a_stop_and_refresh_concurrently() {
    let issuer = Issuer::start().await;
    let a = Arc::new(worker(&issuer, json!({})).await);
    let b = Arc::new(worker(&issuer, json!({})).await);
    let mut jar = browser_login(&a, "admin@example.com", "/").await;

    // Alternate between the gateways; the second one re-mints the ID token from the cookie once.
    let mut served = [0usize; 2];
    for i in 0..10 {
        let g = if i % 2 == 0 { &a } else { &b };
        let (r, seen) = send(g, jar.apply(Request::get(HOST, "/"))).await;
        assert_eq!(r.status, 200, "request {i}: {}", r.text());
        assert!(seen.is_some());
        jar.store(&r);
        served[i % 2] += 1;
    }

    // The ID token expires; the same cookie hits both gateways at once, four requests each.
    advance(&issuer, &[&a, &b], Duration::from_secs(11 * 60));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..8 {
        let g = if i % 2 == 0 { a.clone() } else { b.clone() };
        let request = jar.apply(Request::get(HOST, "/"));
        tasks.spawn(async move { send(&g, request).await });
    }
    let mut refreshed_ok = 0;
    let mut cookies = Vec::new();
    while let Some(result) = tasks.join_next().await {
        let (r, seen) = result.unwrap();
        assert_eq!(r.status, 200, "a concurrent refresh failed: {}", r.text());
        let bearer = header(&seen.unwrap(), "authorization").unwrap().to_owned();
        assert_eq!(claims(bearer.trim_start_matches("Bearer "))["email"], "admin@example.com");
        refreshed_ok += 1;
        if !r.headers_named("set-cookie").is_empty() {
            cookies.push(r);
        }
    }
    assert_eq!(refreshed_ok, 8, "every concurrent request succeeded");
    assert!(!cookies.is_empty(), "the rotated refresh token went back to the browser");
    let (_, seen) = send(&b, jar.apply(Request::get(HOST, "/"))).await;
    let sid = claims(header(&seen.unwrap(), "authorization").unwrap().trim_start_matches("Bearer "))["sid"]
        .as_str()
        .unwrap()
        .to_owned();
    let family = issuer.session_refresh_tokens(&sid).await;
    let live = family.iter().filter(|t| t.rotated_at.is_none()).count();
    assert_eq!(live, 1, "one live refresh token for the session after the concurrent refreshes");

    // Gateway A goes away. The browser keeps the newest cookie and continues on B, even after another
    // expiry (B re-mints from the cookie's refresh token).
    jar.store(cookies.last().unwrap());
    drop(a);
    advance(&issuer, &[&b], Duration::from_secs(11 * 60));
    let (r, seen) = send(&b, jar.apply(Request::get(HOST, "/"))).await;
    assert_eq!(r.status, 200, "the survivor keeps the session: {}", r.text());
    assert!(seen.is_some());
    eprintln!(
        "HA: {} requests on gateway A and {} on B before the expiry; {refreshed_ok}/8 concurrent refreshes across both \
         succeeded ({} tokens in the session's family, {live} live); the session continued on B after A stopped",
        served[0],
        served[1],
        family.len()
    );
}

/// Follows one redirect's `Location`, relative to `base`.
fn location(r: &reqwest::Response, base: &str) -> String {
    let l = r.headers().get("location").and_then(|v| v.to_str().ok()).unwrap_or_default();
    if l.starts_with("http") {
        l.to_owned()
    } else {
        format!("{base}{l}")
    }
}

/// Two gateway processes (separate Envoys: their own shared data, the same cookie secrets from
/// `envoy/envoy.yaml`) behind one host name, in front of a live issuer whose ID tokens are so short-lived that
/// every request refreshes: a session started on A is served by both, concurrent refreshes of one refresh
/// token on both all succeed, and after A is killed B carries on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateway_processes_share_a_session_and_survive_losing_one() {
    let (port_a, port_b) = (free_port(), free_port());
    let issuer = Issuer::start_live(move |c| {
        // Within the filter's refresh margin (30 s): every request re-mints the ID token.
        c.expiry.id_tokens = Duration::from_secs(30);
        let client = c.static_clients.iter_mut().find(|c| c.id == "gateway").unwrap();
        client.redirect_uris.push(format!("http://127.0.0.1:{port_a}/oauth2/callback"));
    })
    .await;
    let (_whoami, whoami_port) = start_whoami().await;
    let mut gateway_a = Some(start_gateway(port_a, &issuer, whoami_port, &[]).await);
    let _gateway_b = start_gateway(port_b, &issuer, whoami_port, &[]).await;
    let (a, b) = (format!("http://127.0.0.1:{port_a}"), format!("http://127.0.0.1:{port_b}"));

    // Cookies are not scoped by port, so the jar sends the session to both gateways, as a browser does for
    // replicas behind one name.
    let browser =
        reqwest::Client::builder().cookie_store(true).redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let r = browser.get(format!("{a}/dashboard")).header("accept", "text/html").send().await.unwrap();
    assert_eq!(r.status(), 302, "no session: sent to the issuer");
    let r = browser.get(location(&r, &a)).send().await.unwrap();
    assert_eq!(r.status(), 303, "the issuer sends the browser to its login form");
    let form_url = location(&r, &issuer.url);
    let html = browser.get(&form_url).send().await.unwrap().text().await.unwrap();
    let hidden = |name: &str| {
        let marker = format!("name=\"{name}\" value=\"");
        let start = html.find(&marker).unwrap_or_else(|| panic!("no {name} in the form:\n{html}")) + marker.len();
        html[start..].split('"').next().unwrap().to_owned()
    };
    let form = [
        ("req", hidden("req")),
        ("csrf", hidden("csrf")),
        ("login", "admin@example.com".into()),
        ("password", "password".into()),
    ];
    let r = browser.post(format!("{}/login", issuer.url)).form(&form).send().await.unwrap();
    assert_eq!(r.status(), 303, "signed in");
    let r = browser.get(location(&r, &issuer.url)).send().await.unwrap();
    assert_eq!(r.status(), 302, "the callback on gateway A starts the session");
    assert_eq!(location(&r, &a), format!("{a}/dashboard"));

    let whoami = |base: String| {
        let browser = browser.clone();
        async move {
            let r = browser.get(format!("{base}/dashboard")).header("accept", "application/json").send().await.unwrap();
            let status = r.status();
            let body = r.text().await.unwrap();
            assert_eq!(status, 200, "{base}: {body}");
            let v: serde_json::Value = serde_json::from_str(&body).unwrap();
            assert_eq!(v["identity"]["email"], "admin@example.com", "{base}: {body}");
            v["identity"]["sid"].as_str().unwrap_or_default().to_owned()
        }
    };
    // Alternating, each request refreshing on the gateway it reaches.
    for i in 0..10 {
        whoami(if i % 2 == 0 { a.clone() } else { b.clone() }).await;
    }
    // At once on both: eight refreshes of one refresh token, all inside the issuer's reuse interval.
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..8 {
        tasks.spawn(whoami(if i % 2 == 0 { a.clone() } else { b.clone() }));
    }
    let mut concurrent = 0;
    let mut sid = String::new();
    while let Some(done) = tasks.join_next().await {
        sid = done.unwrap();
        concurrent += 1;
    }
    let family = issuer.session_refresh_tokens(&sid).await;
    let live = family.iter().filter(|t| t.rotated_at.is_none()).count();
    assert!(
        family.len() >= 12,
        "the login's token, then a rotation per sequential request and one for the burst: {}",
        family.len()
    );
    assert_eq!(live, 1, "one live refresh token after the concurrent refreshes");
    // Gateway A dies; B carries the session on.
    drop(gateway_a.take());
    assert!(browser.get(format!("{a}/healthz")).send().await.is_err(), "gateway A is gone");
    for _ in 0..3 {
        whoami(b.clone()).await;
    }
    eprintln!(
        "HA (processes): 10 alternating requests and {concurrent}/8 concurrent ones across gateways A and B \
         succeeded, each refreshing the ID token ({} refresh tokens in the session's family, {live} live); after A \
         was killed, 3/3 on B succeeded",
        family.len()
    );
}
