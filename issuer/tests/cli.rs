//! The `issuer` binary itself: `check-config`, `hash-password`, `dev-certs`, and `serve` over HTTPS with
//! the development certificates (the way kube-apiserver would reach a local issuer).

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;

const BIN: &str = env!("CARGO_BIN_EXE_issuer");

#[test]
fn check_config_names_the_file_the_key_and_the_expectation() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.yaml");
    std::fs::write(
        &file,
        "issuer: http://127.0.0.1:5556\nweb: {http: 127.0.0.1:5556}\nstorage: {type: memory}\nexpiry: {idTokens: soon}\nstaticClients:\n- id: a\n  redirectURIs: ['not a url']\n",
    )
    .unwrap();
    let out = Command::new(BIN).args(["check-config"]).arg(&file).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    for expected in [
        file.display().to_string(),
        "expiry.idTokens: expected a positive duration".to_owned(),
        "staticClients[0].redirectURIs[0]: expected an absolute URL".to_owned(),
        "staticClients[0].secret: expected a secret".to_owned(),
    ] {
        assert!(err.contains(&expected), "{expected:?} in {err}");
    }

    let dev = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/dev.yaml");
    let ok = Command::new(BIN).args(["check-config", dev]).output().unwrap();
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    assert!(String::from_utf8_lossy(&ok.stdout).contains("ok (issuer http://127.0.0.1:5556/, 3 client(s), 2 user(s)"));
}

#[test]
fn a_missing_config_file_is_named_once_with_its_cause() {
    let missing = std::env::temp_dir().join("tokengate-no-such-config.yaml");
    let out = Command::new(BIN).args(["revoke", "--config"]).arg(&missing).arg("--all").output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("{}: cannot read: ", missing.display())), "{err}");
    assert_eq!(err.matches("No such file").count(), 1, "the cause once: {err}");
}

#[test]
fn hash_password_prints_a_bcrypt_hash_of_stdin() {
    let mut child = Command::new(BIN)
        .args(["hash-password", "--cost", "4"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"s3cret\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let hash = String::from_utf8(out.stdout).unwrap();
    assert!(bcrypt::verify("s3cret", hash.trim()).unwrap(), "{hash}");
    assert!(!bcrypt::verify("s3cret\n", hash.trim()).unwrap(), "the trailing newline is not part of the password");
}

struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn serve_over_https_with_dev_certs() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    let out = Command::new(BIN)
        .arg("dev-certs")
        .arg("--out")
        .arg(&certs)
        .args(["--host", "127.0.0.1", "--host", "localhost"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(certs.join("key.pem")).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "the private key is readable by its owner only");
    }

    let port = common::free_port();
    let config = dir.path().join("issuer.yaml");
    let dev = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/dev.yaml")).unwrap();
    let text = dev
        .replace("issuer: http://127.0.0.1:5556", &format!("issuer: https://127.0.0.1:{port}"))
        .replace(
            "web:\n  http: 127.0.0.1:5556",
            &format!(
                "web:\n  https: 127.0.0.1:{port}\n  tlsCert: {}\n  tlsKey: {}",
                certs.join("cert.pem").display(),
                certs.join("key.pem").display()
            ),
        )
        .replace("file: ./data/issuer.db", &format!("file: {}", dir.path().join("db/issuer.db").display()));
    std::fs::write(&config, text).unwrap();
    let log = dir.path().join("issuer.log");
    let _server = Child(
        Command::new(BIN)
            .arg("serve")
            .arg("--config")
            .arg(&config)
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );

    let ca = reqwest::Certificate::from_pem(&std::fs::read(certs.join("ca.pem")).unwrap()).unwrap();
    let client = reqwest::Client::builder().add_root_certificate(ca).build().unwrap();
    let url = format!("https://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match client.get(format!("{url}/healthz")).send().await {
            Ok(r) if r.status() == 200 => break,
            _ if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(50)).await,
            other => panic!("the issuer did not become healthy over https: {other:?}"),
        }
    }
    let doc: serde_json::Value =
        client.get(format!("{url}/.well-known/openid-configuration")).send().await.unwrap().json().await.unwrap();
    assert_eq!(doc["issuer"], url);
    assert_eq!(doc["token_endpoint"], format!("{url}/token"));
    let plain = reqwest::Client::new().get(format!("{url}/healthz")).send().await;
    assert!(plain.is_err(), "a client that does not trust the development CA is refused");
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("listening (https)"), "the text log says where it listens:\n{text}");
    assert!(!text.contains('\u{1b}'), "no terminal colour codes in a log that is not a terminal:\n{text}");
}

#[tokio::test]
async fn audit_events_are_logged_as_json_and_no_secret_is() {
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let url = format!("http://127.0.0.1:{port}");
    let dev = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/dev.yaml")).unwrap();
    let text = dev
        .replace("issuer: http://127.0.0.1:5556", &format!("issuer: {url}"))
        .replace("http: 127.0.0.1:5556", &format!("http: 127.0.0.1:{port}"))
        .replace("file: ./data/issuer.db", &format!("file: {}", dir.path().join("issuer.db").display()))
        .replace("format: text", "format: json");
    let config = dir.path().join("issuer.yaml");
    std::fs::write(&config, text).unwrap();
    let log = dir.path().join("issuer.log");
    let server = Child(
        Command::new(BIN)
            .arg("serve")
            .arg("--config")
            .arg(&config)
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while reqwest::get(format!("{url}/healthz")).await.map(|r| r.status() != 200).unwrap_or(true) {
        assert!(Instant::now() < deadline, "the issuer did not become healthy");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let auth = format!(
        "{url}/auth?client_id=example-app&redirect_uri=http%3A%2F%2F127.0.0.1%3A5555%2Fcallback&response_type=code&scope=openid+offline_access&state=s&code_challenge={}&code_challenge_method=S256",
        common::CHALLENGE
    );
    let browser = common::Browser::new();
    let (url_, req, csrf) = browser.open_login(&auth).await;
    let (status, _, _) = browser.submit(&url_, &req, &csrf, "jane@example.com", "wrong-password-123").await;
    assert_eq!(status, 401);
    let (status, location, _) = browser.submit(&url_, &req, &csrf, "jane@example.com", "password").await;
    assert_eq!(status, 303);
    let code = common::query_param(&location.unwrap(), "code").unwrap();
    let tokens: serde_json::Value = common::http()
        .post(format!("{url}/token"))
        .basic_auth("example-app", Some("example-app-secret"))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("redirect_uri", common::REDIRECT),
            ("code_verifier", common::VERIFIER),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    // A logout without a hint, confirmed on the issuer's page: the audit still names the session's user.
    let page = browser.client.get(format!("{url}/logout")).send().await.unwrap().text().await.unwrap();
    let confirm = page.split("name=\"confirm\" value=\"").nth(1).and_then(|v| v.split('"').next()).unwrap();
    let r = browser.client.post(format!("{url}/logout")).form(&[("confirm", confirm)]).send().await.unwrap();
    assert_eq!(r.status(), 200);
    drop(server);

    let text = std::fs::read_to_string(&log).unwrap();
    let events: Vec<serde_json::Value> = text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    assert!(!events.is_empty(), "JSON log lines: {text}");
    let audit = |event: &str, result: Option<&str>| {
        events.iter().any(|e| {
            e["target"] == "audit"
                && e["fields"]["event"] == event
                && result.is_none_or(|r| e["fields"]["result"] == r)
                && e["fields"].get("client").is_some()
        })
    };
    assert!(audit("login", Some("failure")), "failed login audited:\n{text}");
    assert!(audit("login", Some("success")), "successful login audited:\n{text}");
    assert!(audit("token_issued", None), "token issue audited:\n{text}");
    let logout = events.iter().find(|e| e["target"] == "audit" && e["fields"]["event"] == "logout");
    let sub = logout.and_then(|e| e["fields"]["sub"].as_str()).unwrap_or_default();
    assert!(!sub.is_empty(), "the logout names its user:\n{text}");
    for secret in [
        "wrong-password-123",
        "example-app-secret",
        code.as_str(),
        tokens["refresh_token"].as_str().unwrap(),
        tokens["id_token"].as_str().unwrap(),
        tokens["access_token"].as_str().unwrap(),
    ] {
        assert!(!text.contains(secret), "a secret was logged");
    }
}
