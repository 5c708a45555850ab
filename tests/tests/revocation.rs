//! Single sign-on and revocation across gateways (issue 12), over real processes: one issuer, two gateway
//! processes (each its own Envoy: its own shared data) for two clients, and whoami behind both. A person
//! signs in on gateway A and opens gateway B's dashboard without a password; signing out on A ends the
//! session on B through the revocation feed (B has no back-channel URI, so the feed is the only way it can
//! learn); revoking a user reaches A by back-channel logout and B by the feed, for sessions and bearer
//! tokens, while another user is untouched and the revoked refresh tokens are refused.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use issuer::backchannel::Outcome;
use issuer::config::Config;
use issuer::revocation::{revoke, Target};
use serde_json::{json, Value};

/// Bound on how long a revocation may take to bite in this test: far above the default poll interval (5 s)
/// jittered by a fifth plus a one-second tick, so a slow or loaded machine never fails it. The delays seen
/// are printed; the expected delay is a figure for README and `make bench`, not for a timed test.
const DEADLINE: Duration = Duration::from_secs(60);

/// A browser: one cookie jar for every host, redirects followed by hand so each hop is visible.
struct User {
    client: reqwest::Client,
}

/// Where a navigation ended.
struct Landing {
    url: String,
    status: u16,
    body: String,
}

impl Landing {
    fn is_login_form(&self) -> bool {
        self.status == 200 && self.body.contains("name=\"password\"")
    }

    /// Asserts this is whoami's page on `gateway` (signed in), not the issuer's.
    fn assert_signed_in_at(&self, gateway: &str) {
        assert_eq!(self.status, 200, "{}: {}", self.url, self.body);
        assert!(self.url.starts_with(gateway) && self.body.contains("Hello,"), "{}: {}", self.url, self.body);
    }
}

impl User {
    fn new() -> User {
        let client =
            reqwest::Client::builder().cookie_store(true).redirect(reqwest::redirect::Policy::none()).build().unwrap();
        User { client }
    }

    /// Navigates to `url` and follows redirects (at most 20).
    async fn open(&self, url: &str) -> Landing {
        self.follow(self.client.get(url).header("accept", "text/html").send().await.unwrap()).await
    }

    async fn follow(&self, mut r: reqwest::Response) -> Landing {
        for _ in 0..20 {
            let url = r.url().clone();
            if !r.status().is_redirection() {
                let status = r.status().as_u16();
                return Landing { url: url.to_string(), status, body: r.text().await.unwrap() };
            }
            let next = url.join(r.headers()["location"].to_str().unwrap()).unwrap();
            r = self.client.get(next).header("accept", "text/html").send().await.unwrap();
        }
        panic!("more than 20 redirects");
    }

    /// Fills in the issuer's login form on `page` and follows where it leads.
    async fn sign_in(&self, page: &Landing, login: &str) -> Landing {
        assert!(page.is_login_form(), "expected the login form at {}: {}", page.url, page.body);
        let hidden = |name: &str| {
            let marker = format!("name=\"{name}\" value=\"");
            let start = page.body.find(&marker).unwrap() + marker.len();
            page.body[start..].split('"').next().unwrap().to_owned()
        };
        let origin = page.url.split("/login").next().unwrap();
        let form = [
            ("req", hidden("req")),
            ("csrf", hidden("csrf")),
            ("login", login.to_owned()),
            ("password", "password".to_owned()),
        ];
        self.follow(self.client.post(format!("{origin}/login")).form(&form).send().await.unwrap()).await
    }

    /// The identity whoami sees behind `gateway` for this browser's session: the claims of the ID token
    /// the gateway sends upstream (asked for as JSON, as a page's script would).
    async fn identity_at(&self, gateway: &str) -> Value {
        let r = self.client.get(format!("{gateway}/")).header("accept", "application/json").send().await.unwrap();
        assert_eq!(r.status(), 200);
        r.json::<Value>().await.unwrap()["identity"].clone()
    }

    /// One navigation to `url` without following: the gateway's own answer.
    async fn status_of(&self, url: &str) -> u16 {
        self.client.get(url).header("accept", "text/html").send().await.unwrap().status().as_u16()
    }
}

/// The status a gateway answers a bearer token with, and its `WWW-Authenticate`.
async fn bearer(gateway: &str, token: &str) -> (u16, String) {
    let r = http()
        .get(format!("{gateway}/api"))
        .bearer_auth(token)
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    let challenge = r.headers().get("www-authenticate").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
    (r.status().as_u16(), challenge)
}

/// Waits until `done` holds, at most [`DEADLINE`]; returns how long it took.
async fn within_deadline<F: std::future::Future<Output = bool>>(what: &str, mut done: impl FnMut() -> F) -> Duration {
    let start = Instant::now();
    loop {
        if done().await {
            return start.elapsed();
        }
        assert!(start.elapsed() < DEADLINE, "{what}: not within {DEADLINE:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn register(c: &mut Config, a: u16, b: u16) {
    let gateway = c.static_clients.iter_mut().find(|c| c.id == "gateway").unwrap();
    gateway.redirect_uris.push(format!("http://127.0.0.1:{a}/oauth2/callback"));
    gateway.post_logout_redirect_uris.push(format!("http://127.0.0.1:{a}/"));
    gateway.backchannel_logout_uri = Some(format!("http://127.0.0.1:{a}/oauth2/backchannel_logout"));
    let mut dashboard = gateway.clone();
    dashboard.id = "dashboard".into();
    dashboard.name = "Second dashboard".into();
    dashboard.secret = Some("dashboard-secret".into());
    dashboard.redirect_uris = vec![format!("http://127.0.0.1:{b}/oauth2/callback")];
    dashboard.post_logout_redirect_uris = vec![format!("http://127.0.0.1:{b}/")];
    dashboard.backchannel_logout_uri = None;
    c.static_clients.push(dashboard);
    let kubernetes = c.static_clients.iter_mut().find(|c| c.id == "kubernetes").unwrap();
    kubernetes.trusted_peers.push("dashboard".into());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sso_spans_two_gateways_and_sign_out_and_revocation_reach_both() {
    let (_whoami, whoami_port) = start_whoami().await;
    let (port_a, port_b) = (free_port(), free_port());
    let issuer = Issuer::start_live(move |c| register(c, port_a, port_b)).await;
    let (a, b) = (format!("http://127.0.0.1:{port_a}"), format!("http://127.0.0.1:{port_b}"));
    let _gateway_a = start_gateway(port_a, &issuer, whoami_port, &[format!("post_logout_redirect_uri=\"{a}/\"")]).await;
    let _gateway_b = start_gateway(
        port_b,
        &issuer,
        whoami_port,
        &[
            "client_id=\"dashboard\"".into(),
            "client_secret=\"dashboard-secret\"".into(),
            format!("cookie_secrets={}", json!([SECRET_B])),
            "cookie={\"secure\":false,\"name\":\"_dashboard\"}".into(),
            format!("post_logout_redirect_uri=\"{b}/\""),
            "audiences=[\"gateway\"]".into(),
        ],
    )
    .await;

    // Jane signs in on A, then opens B: no password, the same issuer session (`sid`), B's own client.
    let jane = User::new();
    jane.sign_in(&jane.open(&format!("{a}/")).await, "jane@example.com").await.assert_signed_in_at(&a);
    let on_a = jane.identity_at(&a).await;
    assert_eq!(on_a["email"], "jane@example.com");
    let on_b = jane.open(&format!("{b}/")).await;
    assert!(!on_b.is_login_form(), "single sign-on: B signs Jane in without a password");
    on_b.assert_signed_in_at(&b);
    let on_b = jane.identity_at(&b).await;
    let aud = on_b["aud"].clone();
    assert!(aud == "dashboard" || aud.as_array().is_some_and(|a| a.contains(&json!("dashboard"))), "{aud}");
    let sid = on_a["sid"].as_str().unwrap().to_owned();
    assert_eq!(on_b["sid"], sid.as_str(), "one issuer session behind both gateways");

    // Sign-out on A ends the issuer session; B learns of it from the feed and refuses the session.
    let after_sign_out = jane.open(&format!("{a}/oauth2/sign_out")).await;
    assert!(after_sign_out.is_login_form(), "after sign-out the issuer asks for the password again");
    let sign_out_reached_b =
        within_deadline("B refuses the signed-out session", || async { jane.status_of(&format!("{b}/")).await == 302 })
            .await;
    let back = jane.open(&format!("{b}/")).await;
    assert!(back.is_login_form(), "B sends Jane to log in again, and the issuer has no session to reuse");

    // Jane signs in again (A, then B by SSO); Admin has a session on B. Both have bearer tokens.
    jane.sign_in(&jane.open(&format!("{a}/")).await, "jane@example.com").await.assert_signed_in_at(&a);
    jane.open(&format!("{b}/")).await.assert_signed_in_at(&b);
    assert_eq!(jane.identity_at(&b).await["email"], "jane@example.com");
    let admin = User::new();
    admin.sign_in(&admin.open(&format!("{b}/")).await, "admin@example.com").await.assert_signed_in_at(&b);
    let scope = "openid email groups offline_access";
    let jane_tokens = issuer.tokens_for("jane@example.com", scope).await;
    let admin_tokens = issuer.tokens_for("admin@example.com", scope).await;
    let jane_bearer = jane_tokens["id_token"].as_str().unwrap().to_owned();
    let admin_bearer = admin_tokens["id_token"].as_str().unwrap().to_owned();
    for gateway in [&a, &b] {
        assert_eq!(bearer(gateway, &jane_bearer).await.0, 200);
    }

    // `issuer revoke --user jane@example.com` (the command's own code, on the running issuer's storage).
    let summary = revoke(&issuer.state, &Target::User("jane@example.com".into())).await.unwrap();
    assert!(summary.families >= 2 && summary.sessions >= 1, "{summary:?}");
    assert!(!summary.deliveries.is_empty(), "Jane's sessions received tokens for A, which has a back-channel URI");
    for (sid, delivery) in summary.deliveries {
        assert_eq!(delivery.await.unwrap(), Outcome::Delivered(1), "A took the logout token for session {sid}");
    }
    let jane_at = Arc::new(jane);
    let revoked_everywhere = within_deadline("both gateways refuse Jane's sessions and bearer token", || {
        let (jane, a, b, token) = (jane_at.clone(), a.clone(), b.clone(), jane_bearer.clone());
        async move {
            jane.status_of(&format!("{a}/")).await == 302
                && jane.status_of(&format!("{b}/")).await == 302
                && bearer(&a, &token).await.0 == 401
                && bearer(&b, &token).await.0 == 401
        }
    })
    .await;
    let (status, challenge) = bearer(&b, &jane_bearer).await;
    assert_eq!(
        (status, challenge.as_str()),
        (401, "Bearer error=\"invalid_token\", error_description=\"token revoked\"")
    );

    // Admin is untouched, on both paths.
    assert_eq!(admin.identity_at(&b).await["email"], "admin@example.com");
    for gateway in [&a, &b] {
        assert_eq!(bearer(gateway, &admin_bearer).await.0, 200);
    }
    // Jane's refresh token is dead at the issuer; Admin's still works.
    let refresh = |rt: &str| {
        let (url, rt) = (format!("{}/token", issuer.url), rt.to_owned());
        async move {
            http()
                .post(url)
                .basic_auth("gateway", Some("gateway-secret"))
                .form(&[("grant_type", "refresh_token"), ("refresh_token", rt.as_str())])
                .send()
                .await
                .unwrap()
        }
    };
    let r = refresh(jane_tokens["refresh_token"].as_str().unwrap()).await;
    assert_eq!(r.status(), 400);
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "invalid_grant");
    assert_eq!(refresh(admin_tokens["refresh_token"].as_str().unwrap()).await.status(), 200);

    eprintln!(
        "revocation across gateways: sign-out on A reached B (feed) in {:.1} s; `revoke --user` reached both \
         gateways' sessions and bearer tokens in {:.1} s (A by back-channel logout, B by the feed)",
        sign_out_reached_b.as_secs_f64(),
        revoked_everywhere.as_secs_f64()
    );
}
