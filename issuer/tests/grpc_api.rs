//! Dex's gRPC API (`api.v2`) against real servers: a Python `grpcio` client built from `proto/api.proto`
//! creates a client and a password on one replica, a second replica sharing the SQLite file signs in
//! with both at once (no restart), and Python lists and revokes the user's refresh tokens; a tonic client
//! covers the rest of the service (read-only static entries, updates, deletes, version, discovery) and
//! mutual TLS.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use common::{http, Browser, Issuer, CHALLENGE, REDIRECT, VERIFIER};
use issuer::clock::Clock;
use issuer::grpc::api::{self, dex_client::DexClient};
use issuer::grpc::GrpcConfig;
use issuer::state::AppState;
use serde_json::{json, Value};
use tonic::transport::Channel;

/// Serves the API for `state` on an ephemeral loopback port (plaintext unless `tls` is given).
async fn serve_grpc(state: AppState, tls: Option<(PathBuf, PathBuf)>, client_ca: Option<PathBuf>) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let config = GrpcConfig { addr, tls, client_ca, reflection: true };
    tokio::spawn(async move {
        issuer::grpc::serve(state, &config, listener, std::future::pending()).await.unwrap();
    });
    addr
}

/// Python with grpcio, and stubs generated from the issuer's `.proto` (`scripts/grpc-python.sh`).
struct Python {
    python: PathBuf,
    stubs: tempfile::TempDir,
}

impl Python {
    async fn setup() -> Self {
        let stubs = tempfile::tempdir().unwrap();
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/grpc-python.sh");
        let out = tokio::process::Command::new(script).arg(stubs.path()).output().await.unwrap();
        assert!(out.status.success(), "scripts/grpc-python.sh failed: {}", String::from_utf8_lossy(&out.stderr));
        let python = PathBuf::from(String::from_utf8(out.stdout).unwrap().trim());
        Self { python, stubs }
    }

    /// Calls `method` with `request` (protobuf JSON); `Ok(response)` or `Err((code, details))`.
    async fn call(&self, addr: SocketAddr, method: &str, request: Value) -> Result<Value, (String, String)> {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/grpc/dex_client.py");
        let out = tokio::process::Command::new(&self.python)
            .args([script, self.stubs.path().to_str().unwrap(), &addr.to_string(), method, &request.to_string()])
            .output()
            .await
            .unwrap();
        assert!(out.status.success(), "{method}: {}", String::from_utf8_lossy(&out.stderr));
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        match (v.get("ok"), v.get("error")) {
            (Some(ok), None) => Ok(ok.clone()),
            (None, Some(e)) => Err((e["code"].as_str().unwrap().to_owned(), e["details"].as_str().unwrap().to_owned())),
            _ => panic!("{method}: unexpected output {v}"),
        }
    }
}

/// Signs in to `client_id` on `issuer` through the login form and redeems the code with the client's
/// secret: the token response.
async fn sign_in(issuer: &Issuer, client_id: &str, secret: &str, login: &str, password: &str) -> (u16, Value) {
    let auth = format!(
        "{}/auth?client_id={client_id}&redirect_uri={}&response_type=code&scope={}&state=s1&nonce=n1&code_challenge={CHALLENGE}&code_challenge_method=S256",
        issuer.url,
        common::urlencode(REDIRECT),
        common::urlencode("openid email profile offline_access"),
    );
    let (status, location) = Browser::new().sign_in(&auth, login, password).await;
    assert_eq!(status, 303, "{login} signs in to {client_id}");
    let code = common::query_param(&location.unwrap(), "code").expect("a code");
    token(
        issuer,
        client_id,
        secret,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT),
            ("code_verifier", VERIFIER),
        ],
    )
    .await
}

async fn token(issuer: &Issuer, client_id: &str, secret: &str, form: &[(&str, &str)]) -> (u16, Value) {
    let r = http().post(issuer.endpoint("/token")).basic_auth(client_id, Some(secret)).form(form).send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

/// Two replicas on one SQLite file, each with its own state (as two processes would have).
async fn two_replicas() -> (Issuer, Issuer) {
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let a = Issuer::start_in(dir.clone(), |_| {}, Clock::system(), None).await;
    let b = Issuer::start_in(dir, |_| {}, Clock::system(), None).await;
    (a, b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_client_creates_a_client_and_a_password_used_at_once_on_another_replica_and_revokes_refresh() {
    let python = Python::setup().await;
    let (a, b) = two_replicas().await;
    let grpc = serve_grpc(a.state.clone(), None, None).await;

    let version = python.call(grpc, "GetVersion", json!({})).await.unwrap();
    assert_eq!(version["api"], 3, "{version}");

    let created = python
        .call(
            grpc,
            "CreateClient",
            json!({"client": {"id": "py-app", "secret": "py-secret", "redirect_uris": [REDIRECT], "name": "Py App"}}),
        )
        .await
        .unwrap();
    assert_eq!(created["already_exists"], false, "{created}");
    assert_eq!(created["client"]["id"], "py-app");
    let again = python.call(grpc, "CreateClient", json!({"client": {"id": "py-app"}})).await.unwrap();
    assert_eq!(again["already_exists"], true, "{again}");

    let hash = bcrypt::hash("ann-password", 10).unwrap();
    let password = json!({"password": {
        "email": "ann@example.com", "hash": b64(hash.as_bytes()), "username": "ann", "user_id": "ann-1"}});
    let created = python.call(grpc, "CreatePassword", password).await.unwrap();
    assert_eq!(created["already_exists"], false, "{created}");
    let verified =
        python.call(grpc, "VerifyPassword", json!({"email": "ann@example.com", "password": "ann-password"})).await;
    assert_eq!(verified.unwrap()["verified"], true);

    // Replica B never heard of either: it reads them from storage on the request.
    let (status, tokens) = sign_in(&b, "py-app", "py-secret", "ann@example.com", "ann-password").await;
    assert_eq!(status, 200, "{tokens}");
    // Dex's subject: the protobuf encoding of {user id, connector id}, which Dex's API takes as user_id.
    let sub = issuer::connector::dex_subject("ann-1", "local");
    assert_eq!(common::claims(tokens["id_token"].as_str().unwrap())["sub"], sub.as_str());
    let refresh_token = tokens["refresh_token"].as_str().expect("a refresh token").to_owned();
    let (status, refreshed) =
        token(&b, "py-app", "py-secret", &[("grant_type", "refresh_token"), ("refresh_token", &refresh_token)]).await;
    assert_eq!(status, 200, "a refresh works before the revocation: {refreshed}");
    let refresh_token = refreshed["refresh_token"].as_str().unwrap().to_owned();

    let listed = python.call(grpc, "ListRefresh", json!({"user_id": sub})).await.unwrap();
    let refs = listed["refresh_tokens"].as_array().expect("refresh tokens listed");
    assert_eq!(refs.len(), 1, "one login, one entry (rotation keeps it): {listed}");
    assert_eq!(refs[0]["client_id"], "py-app");
    assert!(refs[0]["last_used"].as_str().unwrap().parse::<i64>().unwrap() > 0, "{listed}");

    let wrong_client = python.call(grpc, "RevokeRefresh", json!({"user_id": "ann-1", "client_id": "other"})).await;
    assert_eq!(wrong_client.unwrap()["not_found"], true);
    let revoked = python.call(grpc, "RevokeRefresh", json!({"user_id": sub, "client_id": "py-app"})).await;
    assert_eq!(revoked.unwrap()["not_found"], false);
    let (status, body) =
        token(&b, "py-app", "py-secret", &[("grant_type", "refresh_token"), ("refresh_token", &refresh_token)]).await;
    assert_eq!((status, body["error"].as_str()), (400, Some("invalid_grant")), "revoked on every replica: {body}");
    let listed = python.call(grpc, "ListRefresh", json!({"user_id": "ann-1"})).await.unwrap();
    assert_eq!(listed["refresh_tokens"], json!([]), "{listed}");

    // Static entries are read-only, as in Dex.
    let (code, details) = python.call(grpc, "DeleteClient", json!({"id": common::CLIENT})).await.unwrap_err();
    assert_eq!(code, "FAILED_PRECONDITION", "{details}");
    assert!(details.contains("staticClients"), "{details}");
}

fn b64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

async fn connect(addr: SocketAddr) -> DexClient<Channel> {
    DexClient::connect(format!("http://{addr}")).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tonic_client_manages_clients_and_passwords_and_static_ones_are_read_only() {
    let (a, b) = two_replicas().await;
    let mut dex = connect(serve_grpc(a.state.clone(), None, None).await).await;

    let v = dex.get_version(api::VersionReq {}).await.unwrap().into_inner();
    assert_eq!((v.server.as_str(), v.api), (env!("CARGO_PKG_VERSION"), 3));
    let d = dex.get_discovery(api::DiscoveryReq {}).await.unwrap().into_inner();
    assert_eq!(d.issuer, a.url);
    assert_eq!(d.token_endpoint, a.endpoint("/token"));
    assert!(d.scopes_supported.iter().any(|s| s == "offline_access"), "{:?}", d.scopes_supported);

    // A client without an id or a secret gets generated ones.
    let new = api::Client { redirect_uris: vec![REDIRECT.into()], name: "Generated".into(), ..Default::default() };
    let created = dex.create_client(api::CreateClientReq { client: Some(new) }).await.unwrap().into_inner();
    let c = created.client.unwrap();
    assert!(!created.already_exists && !c.id.is_empty() && c.secret.len() >= 32, "{c:?}");
    let got = dex.get_client(api::GetClientReq { id: c.id.clone() }).await.unwrap().into_inner().client.unwrap();
    assert_eq!(got, c);
    let listed = dex.list_clients(api::ListClientReq {}).await.unwrap().into_inner().clients;
    assert!(listed.iter().any(|i| i.id == common::CLIENT), "static clients are listed");
    assert!(listed.iter().any(|i| i.id == c.id && i.name == "Generated"), "stored clients are listed");

    // An update takes effect on the other replica at once: the old redirect URI is refused there.
    let update = api::UpdateClientReq {
        id: c.id.clone(),
        redirect_uris: vec!["http://127.0.0.1:7777/cb".into()],
        ..Default::default()
    };
    assert!(!dex.update_client(update).await.unwrap().into_inner().not_found);
    let auth = |id: &str| {
        format!(
            "{}/auth?client_id={id}&redirect_uri={}&response_type=code&scope=openid&code_challenge={CHALLENGE}&code_challenge_method=S256",
            b.url,
            common::urlencode(REDIRECT)
        )
    };
    let page = http().get(auth(&c.id)).send().await.unwrap();
    assert_eq!(page.status(), 400);
    assert!(page.text().await.unwrap().contains("Invalid redirect"));
    let missing = api::UpdateClientReq { id: "ghost".into(), name: "x".into(), ..Default::default() };
    assert!(dex.update_client(missing).await.unwrap().into_inner().not_found);

    // Single sign-on sharing and back-channel logout are kept and used like the static keys.
    let update = api::UpdateClientReq {
        id: c.id.clone(),
        sso_shared_with: vec![common::CLIENT.into()],
        backchannel_logout_uri: Some("https://app.example.com/backchannel".into()),
        ..Default::default()
    };
    assert!(!dex.update_client(update).await.unwrap().into_inner().not_found);
    let got = dex.get_client(api::GetClientReq { id: c.id.clone() }).await.unwrap().into_inner().client.unwrap();
    assert_eq!(
        (got.sso_shared_with.as_slice(), got.backchannel_logout_uri.as_str()),
        (&[common::CLIENT.to_owned()][..], "https://app.example.com/backchannel")
    );
    let seen = b.state.client(&c.id).await.unwrap().unwrap();
    assert_eq!(seen.sso_shared_with.as_deref(), Some(&[common::CLIENT.to_owned()][..]));
    assert_eq!(seen.backchannel_logout_uri.as_deref(), Some("https://app.example.com/backchannel"));
    let bad = api::UpdateClientReq {
        id: c.id.clone(),
        backchannel_logout_uri: Some("javascript:x".into()),
        ..Default::default()
    };
    assert_eq!(dex.update_client(bad).await.unwrap_err().code(), tonic::Code::InvalidArgument);

    // Deleted: unknown on the other replica.
    assert!(!dex.delete_client(api::DeleteClientReq { id: c.id.clone() }).await.unwrap().into_inner().not_found);
    assert!(dex.delete_client(api::DeleteClientReq { id: c.id.clone() }).await.unwrap().into_inner().not_found);
    let page = http().get(auth(&c.id)).send().await.unwrap();
    assert_eq!(page.status(), 400);
    assert!(page.text().await.unwrap().contains("Unknown application"));
    let e = dex.get_client(api::GetClientReq { id: c.id.clone() }).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound);

    // Static clients and passwords are read-only.
    let shadow = api::Client { id: common::CLIENT.into(), ..Default::default() };
    let e = dex.create_client(api::CreateClientReq { client: Some(shadow) }).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{e}");
    let e = dex
        .update_client(api::UpdateClientReq { id: common::CLIENT.into(), name: "x".into(), ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{e}");
    let static_user = a.state.config.static_passwords[0].email.clone();
    let e = dex.delete_password(api::DeletePasswordReq { email: static_user.clone() }).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{e}");

    // Bad input is refused with the reason.
    let cases = [
        api::Client { id: "x".into(), redirect_uris: vec!["not a url".into()], ..Default::default() },
        api::Client { id: "x".into(), allowed_connectors: vec!["nope".into()], ..Default::default() },
        api::Client { id: "x".into(), refresh_token_lifetime: "1h".into(), ..Default::default() },
    ];
    for bad in cases {
        let e = dex.create_client(api::CreateClientReq { client: Some(bad.clone()) }).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{bad:?}: {e}");
    }
    let weak = bcrypt::hash("pw", 4).unwrap();
    let p = api::Password {
        email: "x@example.com".into(),
        hash: weak.into_bytes(),
        user_id: "x".into(),
        ..Default::default()
    };
    let e = dex.create_password(api::CreatePasswordReq { password: Some(p) }).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e}");
    assert!(e.message().contains("cost"), "{e}");

    // Passwords: create, verify, rename, change, delete; listings never show hashes.
    let p = api::Password {
        email: "Bob@Example.com".into(),
        hash: bcrypt::hash("bob-1", 10).unwrap().into_bytes(),
        username: "bob".into(),
        user_id: "bob-1".into(),
    };
    assert!(
        !dex.create_password(api::CreatePasswordReq { password: Some(p.clone()) })
            .await
            .unwrap()
            .into_inner()
            .already_exists
    );
    assert!(
        dex.create_password(api::CreatePasswordReq { password: Some(p) }).await.unwrap().into_inner().already_exists
    );
    let verify = |password: &str| api::VerifyPasswordReq { email: "bob@example.com".into(), password: password.into() };
    assert!(dex.verify_password(verify("bob-1")).await.unwrap().into_inner().verified);
    assert!(!dex.verify_password(verify("wrong")).await.unwrap().into_inner().verified);
    let update = api::UpdatePasswordReq {
        email: "BOB@example.com".into(),
        new_hash: bcrypt::hash("bob-2", 10).unwrap().into_bytes(),
        new_username: "robert".into(),
    };
    assert!(!dex.update_password(update).await.unwrap().into_inner().not_found);
    assert!(dex.verify_password(verify("bob-2")).await.unwrap().into_inner().verified);
    let (status, tokens) = sign_in(&b, common::CLIENT, common::SECRET, "bob@example.com", "bob-2").await;
    assert_eq!(status, 200, "{tokens}");
    assert_eq!(common::claims(tokens["id_token"].as_str().unwrap())["name"], "robert");
    let listed = dex.list_passwords(api::ListPasswordReq {}).await.unwrap().into_inner().passwords;
    assert!(listed.iter().any(|p| p.email == static_user), "static passwords are listed");
    assert!(listed.iter().any(|p| p.user_id == "bob-1" && p.username == "robert"));
    assert!(listed.iter().all(|p| p.hash.is_empty()), "hashes are never listed");
    let gone = api::DeletePasswordReq { email: "bob@example.com".into() };
    assert!(!dex.delete_password(gone.clone()).await.unwrap().into_inner().not_found);
    assert!(dex.delete_password(gone).await.unwrap().into_inner().not_found);
    let missing = dex.verify_password(verify("bob-2")).await.unwrap().into_inner();
    assert!(missing.not_found && !missing.verified);

    // Connectors come from the configuration.
    let listed = dex.list_connectors(api::ListConnectorReq {}).await.unwrap().into_inner().connectors;
    assert!(listed.iter().any(|c| c.id == "local"), "{listed:?}");
    let e = dex.delete_connector(api::DeleteConnectorReq { id: "local".into() }).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unimplemented, "{e}");
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate, as PEM files in `dir`.
fn certificates(dir: &Path) -> (PathBuf, PathBuf, PathBuf, (String, String)) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_key = KeyPair::generate().unwrap();
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let server_key = KeyPair::generate().unwrap();
    let server =
        CertificateParams::new(vec!["127.0.0.1".into()]).unwrap().signed_by(&server_key, &ca, &ca_key).unwrap();
    let client_key = KeyPair::generate().unwrap();
    let client = CertificateParams::new(vec!["admin".into()]).unwrap().signed_by(&client_key, &ca, &ca_key).unwrap();
    let write = |name: &str, pem: String| {
        let p = dir.join(name);
        std::fs::write(&p, pem).unwrap();
        p
    };
    (
        write("ca.pem", ca.pem()),
        write("cert.pem", server.pem()),
        write("key.pem", server_key.serialize_pem()),
        (client.pem(), client_key.serialize_pem()),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_client_ca_only_clients_with_a_certificate_get_in() {
    use tonic::transport::{Certificate, ClientTlsConfig, Identity};
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let issuer = Issuer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key, (client_cert, client_key)) = certificates(dir.path());
    let addr = serve_grpc(issuer.state.clone(), Some((cert, key)), Some(ca.clone())).await;
    let ca = Certificate::from_pem(std::fs::read(&ca).unwrap());
    let channel = |identity: Option<Identity>| {
        let mut tls = ClientTlsConfig::new().ca_certificate(ca.clone()).domain_name("127.0.0.1");
        if let Some(i) = identity {
            tls = tls.identity(i);
        }
        Channel::from_shared(format!("https://{addr}")).unwrap().tls_config(tls).unwrap()
    };
    let with_cert = channel(Some(Identity::from_pem(client_cert, client_key))).connect().await.unwrap();
    let v = DexClient::new(with_cert).get_version(api::VersionReq {}).await.unwrap().into_inner();
    assert_eq!(v.api, 3);
    let without = match channel(None).connect().await {
        Ok(ch) => DexClient::new(ch).get_version(api::VersionReq {}).await.err(),
        Err(e) => Some(tonic::Status::unavailable(e.to_string())),
    };
    assert!(without.is_some(), "a client without a certificate is refused");
}
