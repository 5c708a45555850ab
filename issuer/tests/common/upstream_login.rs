//! Signing in through a callback connector the way a browser does: the login page's button, the
//! upstream's authorize endpoint (a stand-in that consents at once), and back to the issuer's `/callback`.
#![allow(dead_code, unreachable_pub)] // each test binary uses a different part

use super::{query_param, Browser, Issuer, REDIRECT};

/// The issuer's answer to `/callback`.
pub struct Landing {
    pub status: u16,
    pub location: Option<String>,
    pub body: String,
}

impl Landing {
    /// The authorization code of a login that reached the client's redirect URI.
    pub fn code(&self) -> String {
        assert_eq!(self.status, 303, "the login ends at the client: {}", self.body);
        let location = self.location.clone().unwrap();
        assert!(location.starts_with(REDIRECT), "{location}");
        assert_eq!(query_param(&location, "state").as_deref(), Some("st"));
        query_param(&location, "code").unwrap()
    }
}

fn location(r: &reqwest::Response) -> String {
    r.headers()
        .get("location")
        .unwrap_or_else(|| panic!("{} without Location", r.status()))
        .to_str()
        .unwrap()
        .to_owned()
}

/// Opens the example app's authorization URL for `scope`, clicks the button of `connector_id` on the login
/// page, follows the upstream's redirect back to `/callback`, and returns the issuer's answer there.
pub async fn sign_in_via(issuer: &Issuer, connector_id: &str, scope: &str) -> Landing {
    sign_in_via_then(issuer, connector_id, scope, || {}).await
}

/// [`sign_in_via`], running `before_callback` after the upstream consented and before the browser
/// returns to `/callback` (to take the upstream down between the two, say).
pub async fn sign_in_via_then(
    issuer: &Issuer,
    connector_id: &str,
    scope: &str,
    before_callback: impl FnOnce(),
) -> Landing {
    let browser = Browser::new();
    let r = browser.client.get(issuer.auth_url(scope, "st")).send().await.unwrap();
    assert_eq!(r.status(), 303, "/auth sends the browser to the login page");
    let page = browser.client.get(issuer.endpoint(&location(&r))).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    let marker = format!("href=\"/auth/{connector_id}?req=");
    let start =
        html.find(&marker).unwrap_or_else(|| panic!("no button for {connector_id} in {html}")) + "href=\"".len();
    let href = html[start..].split('"').next().unwrap().replace("&amp;", "&");
    let r = browser.client.get(issuer.endpoint(&href)).send().await.unwrap();
    assert!(r.status().is_redirection(), "the button leads upstream: {}", r.status());
    let upstream = location(&r);
    let r = browser.client.get(&upstream).send().await.unwrap();
    assert_eq!(r.status(), 302, "the stand-in consents at once");
    let callback = location(&r);
    assert!(callback.starts_with(&format!("{}/callback?", issuer.url)), "{callback}");
    before_callback();
    let r = browser.client.get(&callback).send().await.unwrap();
    let status = r.status().as_u16();
    let location = r.headers().get("location").map(|v| v.to_str().unwrap().to_owned());
    Landing { status, location, body: r.text().await.unwrap() }
}

/// Whether `config_yaml` (a `connectors:` list appended to the dev configuration) is refused, and the
/// problems it is refused with.
pub fn config_problems(config_yaml: &str) -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/dev.yaml");
    let text = std::fs::read_to_string(path).unwrap();
    match issuer::config::Config::parse(path, &format!("{text}\n{config_yaml}"), &|_| None) {
        Ok(_) => panic!("the configuration is accepted"),
        Err(e) => e.to_string(),
    }
}
