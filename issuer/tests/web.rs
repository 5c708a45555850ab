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

use common::free_port;

#[tokio::test]
async fn telemetry_http_serves_metrics_and_health_on_its_own_listener() {
    let dir = tempfile::tempdir().unwrap();
    let (web, telemetry) = (free_port(), free_port());
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/dev.yaml"))
        .unwrap()
        .replace("127.0.0.1:5556", &format!("127.0.0.1:{web}"))
        .replace("./data/issuer.db", &dir.path().join("db").display().to_string());
    let file = dir.path().join("config.yaml");
    std::fs::write(&file, format!("{text}\ntelemetry:\n  http: 127.0.0.1:{telemetry}\n")).unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_issuer"))
        .arg("serve")
        .arg(&file)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{telemetry}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let live = loop {
        if let Ok(r) = http().get(format!("{base}/healthz/live")).send().await {
            break r;
        }
        assert!(std::time::Instant::now() < deadline, "the telemetry listener did not come up");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert_eq!(live.status(), 200);
    assert_eq!(http().get(format!("{base}/healthz/ready")).send().await.unwrap().status(), 200);
    let metrics = http().get(format!("{base}/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("issuer_"), "{metrics}");
    // Only telemetry there: the OAuth endpoints stay on the public listener.
    assert_eq!(http().get(format!("{base}/.well-known/openid-configuration")).send().await.unwrap().status(), 404);
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn telemetry_keys_are_validated() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/dev.yaml");
    let dev = std::fs::read_to_string(path).unwrap();
    let err = issuer::config::Config::parse(
        "dex.yaml",
        &format!("{dev}\ntelemetry:\n  http: nowhere\n  enableProfiling: true\n"),
        &|_| None,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("telemetry.http: expected an address"), "{err}");
    // Dex's profiling switch is accepted with a warning that names it: nothing is served for it.
    let ok =
        issuer::config::Config::parse("dex.yaml", &format!("{dev}\ntelemetry:\n  enableProfiling: true\n"), &|_| None)
            .unwrap();
    let warning = ok.warnings.iter().map(|w| w.located("dex.yaml")).collect::<Vec<_>>().join("\n");
    let line = dev.lines().count() + 3;
    assert!(warning.contains(&format!("dex.yaml:{line}: telemetry.enableProfiling: Go's pprof")), "{warning}");
}

#[tokio::test]
async fn tls_min_version_keeps_older_clients_out_of_the_https_listener() {
    let dir = tempfile::tempdir().unwrap();
    let (web, https) = (free_port(), free_port());
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_issuer"))
        .args(["dev-certs", "--out"])
        .arg(dir.path())
        .args(["--host", "localhost"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let d = dir.path().display();
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/dev.yaml"))
        .unwrap()
        .replace("http: 127.0.0.1:5556", &format!("http: 127.0.0.1:{web}\n  https: 127.0.0.1:{https}\n  tlsCert: {d}/cert.pem\n  tlsKey: {d}/key.pem\n  tlsMinVersion: \"1.3\""))
        .replace("./data/issuer.db", &dir.path().join("db").display().to_string());
    let file = dir.path().join("config.yaml");
    std::fs::write(&file, text).unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_issuer"))
        .arg("serve")
        .arg(&file)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let ca = reqwest::Certificate::from_pem(&std::fs::read(dir.path().join("ca.pem")).unwrap()).unwrap();
    let client = |max: Option<reqwest::tls::Version>| {
        let b = reqwest::Client::builder()
            .add_root_certificate(ca.clone())
            .resolve("localhost", ([127, 0, 0, 1], https).into());
        match max {
            Some(v) => b.max_tls_version(v),
            None => b,
        }
        .build()
        .unwrap()
    };
    let url = format!("https://localhost:{https}/healthz/live");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        if let Ok(r) = client(None).get(&url).send().await {
            assert_eq!(r.status(), 200);
            assert_eq!(r.version(), reqwest::Version::HTTP_11);
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the https listener did not come up");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let old = client(Some(reqwest::tls::Version::TLS_1_2)).get(&url).send().await;
    assert!(old.is_err(), "a TLS 1.2-only client is refused: {old:?}");
    let _ = child.kill();
    let _ = child.wait();
}
