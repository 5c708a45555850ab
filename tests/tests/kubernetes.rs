//! The Deckhouse design's key case (issue 13, item 10): the dashboard behind the gateway calls
//! kube-apiserver with the `Authorization: Bearer <ID token>` the filter sets. With `envoy/envoy.yaml` as
//! shipped (`kubernetes_audience: kubernetes`) that token names `kubernetes` in `aud`, and the
//! kube-apiserver stand-in the issuer's kubectl tests use accepts it, before and after a refresh.

#[path = "../../issuer/tests/common/apiserver.rs"]
mod apiserver;
mod common;

use std::time::Duration;

use common::*;
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_the_upstream_gets_is_accepted_by_kube_apiserver_before_and_after_a_refresh() {
    let port = free_port();
    // Within the filter's refresh margin: every request re-mints the ID token by refresh.
    let issuer = Issuer::start_for_gateway(port, |c| c.expiry.id_tokens = Duration::from_secs(30)).await;
    let (_whoami, whoami_port) = start_whoami().await;
    let _gateway = start_gateway(port, &issuer, whoami_port, &[]).await;
    let base = format!("http://127.0.0.1:{port}");
    let browser =
        reqwest::Client::builder().cookie_store(true).redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let r = browser.get(format!("{base}/dashboard")).header("accept", "text/html").send().await.unwrap();
    assert_eq!(r.status(), 302);
    let auth = r.headers()["location"].to_str().unwrap().to_owned();
    let scope = query_param(&auth, "scope").unwrap();
    assert!(scope.split(' ').any(|s| s == "audience:server:client_id:kubernetes"), "{scope}");
    let back = Browser { client: browser.clone() }.login(&auth, "admin@example.com", "password").await;
    assert_eq!(browser.get(&back).send().await.unwrap().status(), 302);

    let api = apiserver::ApiServer::trusting_plain_http(&issuer.url);
    let mut seen = Vec::new();
    for round in 0..2 {
        let r = browser.get(format!("{base}/dashboard")).header("accept", "application/json").send().await.unwrap();
        assert_eq!(r.status(), 200);
        let v: Value = r.json().await.unwrap();
        let token = v["headers"]["authorization"].as_str().unwrap().strip_prefix("Bearer ").unwrap().to_owned();
        let c = claims(&token);
        assert_eq!(c["aud"], serde_json::json!(["kubernetes", "gateway"]), "round {round}");
        assert_eq!(c["azp"], "gateway");
        let (user, groups) = api.authenticate(&token).await.unwrap_or_else(|why| panic!("round {round}: {why}"));
        assert_eq!(user, "admin@example.com");
        assert!(groups.iter().any(|g| g.starts_with(apiserver::GROUPS_PREFIX)), "{groups:?}");
        seen.push(token);
    }
    let sid = claims(&seen[1])["sid"].as_str().unwrap().to_owned();
    let family = issuer.session_refresh_tokens(&sid).await;
    assert!(family.len() >= 3, "the login's refresh token and a rotation per request: {}", family.len());
}
