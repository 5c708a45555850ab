//! Journeys through `decide` and `resume`: each test plays the host's part by hand.

use std::cell::{Cell, RefCell};
use std::time::{Duration, UNIX_EPOCH};

use serde_json::json;

use super::*;
use crate::cache::{namespace, ClaimsMemo, MemoryStore};
use crate::discovery::ProviderMetadata;
use crate::random::RandomError;
use crate::token::testing::Signer;

const NOW: u64 = 1_700_000_000;
const ISSUER: &str = "https://dex.example.com";
const HTML: &str = "text/html,application/xhtml+xml";

/// Deterministic bytes: each fill continues a counter.
struct SeqRandom(Cell<u8>);

impl Random for SeqRandom {
    fn fill(&self, buf: &mut [u8]) -> Result<(), RandomError> {
        for b in buf {
            *b = self.0.get();
            self.0.set(self.0.get().wrapping_add(1));
        }
        Ok(())
    }
}

struct World {
    cfg: FilterConfig,
    signer: Signer,
    provider: Option<Provider>,
    store: MemoryStore,
    memo: ClaimsMemo,
    ns: String,
    rng: SeqRandom,
    events: RefCell<Vec<Event>>,
    now: Cell<u64>,
    issuer_down: bool,
    keys_refetched: bool,
}

fn config(patch: serde_json::Value) -> FilterConfig {
    let mut v = json!({
        "issuer": ISSUER,
        "client_id": "kube",
        "client_secret": "s3cret",
        "cluster": "issuer",
        "cookie_secrets": ["AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="],
        "claims_to_headers": {"email": "X-Auth-Email", "groups": "X-Auth-Groups"},
        "skip": [{"path_prefix": "/healthz"}, {"path_regex": "^/static/.*\\.css$", "methods": ["GET"]}],
        "allowed_redirect_domains": [".example.org"],
    });
    for (k, val) in patch.as_object().unwrap() {
        v[k] = val.clone();
    }
    FilterConfig::parse(v.to_string().as_bytes()).unwrap()
}

fn metadata() -> ProviderMetadata {
    ProviderMetadata {
        issuer: ISSUER.into(),
        authorization_endpoint: format!("{ISSUER}/auth"),
        token_endpoint: format!("{ISSUER}/token"),
        jwks_uri: format!("{ISSUER}/keys"),
        revocation_endpoint: Some(format!("{ISSUER}/revoke")),
        end_session_endpoint: Some(format!("{ISSUER}/logout")),
        revocation_feed_endpoint: Some(format!("{ISSUER}/revocations")),
    }
}

impl World {
    fn new() -> World {
        World::with_config(config(json!({})))
    }

    fn with_config(cfg: FilterConfig) -> World {
        let signer = Signer::new();
        let provider = Provider {
            metadata: metadata(),
            jwks: signer.jwks.clone(),
            jwks_json: String::new(),
            fetched_at: NOW - 100,
        };
        World {
            ns: namespace(&cfg.issuer, &cfg.client_id),
            cfg,
            signer,
            provider: Some(provider),
            store: MemoryStore::default(),
            memo: ClaimsMemo::default(),
            rng: SeqRandom(Cell::new(0)),
            events: RefCell::new(Vec::new()),
            now: Cell::new(NOW),
            issuer_down: false,
            keys_refetched: false,
        }
    }

    /// The shared revocation set, as a worker's copy right after syncing.
    fn revocations(&self) -> Revocations {
        Cache::new(&self.store, &self.ns).revocations()
    }

    fn ctx<'a>(&'a self, events: &'a dyn Fn(Event), revocations: &'a Revocations) -> Ctx<'a> {
        Ctx {
            now: UNIX_EPOCH + Duration::from_secs(self.now.get()),
            issuer: self,
            cache: Cache::new(&self.store, &self.ns),
            claims: &self.memo,
            rng: &self.rng,
            events,
            keys_refetched: self.keys_refetched,
            revocations,
        }
    }

    fn decide(&self, req: &RequestParts) -> Decision {
        let push = |e| self.events.borrow_mut().push(e);
        decide(&self.cfg, &self.ctx(&push, &self.revocations()), req)
    }

    fn resume(&self, req: &RequestParts, pending: Pending, status: u16, body: &str) -> Decision {
        let push = |e| self.events.borrow_mut().push(e);
        let resp = CalloutResponse { status, body: body.as_bytes().to_vec() };
        resume(&self.cfg, &self.ctx(&push, &self.revocations()), req, pending, &resp)
    }

    fn id_token(&self, patch: serde_json::Value) -> String {
        let mut claims = json!({
            "iss": ISSUER, "sub": "user-1", "aud": "kube",
            "exp": self.now.get() + 3600, "iat": self.now.get(),
            "email": "alice@example.com", "email_verified": true, "groups": ["admins", "dev"],
        });
        for (k, v) in patch.as_object().unwrap() {
            claims[k] = v.clone();
        }
        self.signer.sign("RS256", Some("rsa"), &claims)
    }

    /// Drops every cached entry, as if the shared cache had lost the session's ID token.
    fn evict_shared_cache(&self) {
        for k in self.store.keys() {
            crate::cache::Store::set(&self.store, &k, b"");
        }
    }

    fn saw(&self, e: Event) -> bool {
        self.events.borrow().contains(&e)
    }

    /// Runs start → callback → code exchange and returns the session cookies (`name=value`).
    fn login(&self) -> Vec<String> {
        let start = browser("/app?x=1", &[]);
        let Decision::Redirect { location, set_cookies } = self.decide(&start) else { panic!("login starts") };
        let state = query_of(&location, "state");
        let flow_cookie = cookie_pair(&set_cookies[0]);
        let cb = browser(&format!("/oauth2/callback?code=c0de&state={state}"), &[&flow_cookie]);
        let Decision::Call { then, .. } = self.decide(&cb) else { panic!("code exchange") };
        let Pending::CodeExchange { flow, .. } = &then else { panic!() };
        let body =
            json!({"id_token": self.id_token(json!({"nonce": flow.nonce, "sid": "issuer-session-1"})), "refresh_token": "rt-1"})
                .to_string();
        let Decision::Redirect { set_cookies, .. } = self.resume(&cb, then, 200, &body) else {
            panic!("session starts")
        };
        set_cookies.iter().filter(|c| !c.contains("Max-Age=0")).map(|c| cookie_pair(c)).collect()
    }
}

impl IssuerState for World {
    fn provider(&self) -> Option<&Provider> {
        self.provider.as_ref()
    }

    fn issuer_down(&self) -> bool {
        self.issuer_down
    }
}

fn request(method: &str, path: &str, headers: &[(&str, &str)], cookies: &[&str]) -> RequestParts {
    let mut h: Vec<(String, String)> = vec![
        (":method".into(), method.into()),
        (":scheme".into(), "https".into()),
        (":authority".into(), "app.example.com".into()),
        (":path".into(), path.into()),
    ];
    h.extend(headers.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    if !cookies.is_empty() {
        h.push(("cookie".into(), cookies.join("; ")));
    }
    RequestParts::from_headers(h)
}

fn browser(path: &str, cookies: &[&str]) -> RequestParts {
    request("GET", path, &[("accept", HTML)], cookies)
}

fn api(path: &str, headers: &[(&str, &str)]) -> RequestParts {
    request("GET", path, &[&[("accept", "application/json")], headers].concat(), &[])
}

fn cookie_pair(set_cookie: &str) -> String {
    set_cookie.split(';').next().unwrap().to_string()
}

fn query_of(url: &str, name: &str) -> String {
    let q = url.split_once('?').unwrap().1;
    crate::url::parse_query(q).into_iter().find(|(k, _)| k == name).map(|(_, v)| v).unwrap_or_default()
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

fn refs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

#[test]
fn skipped_paths_and_cors_preflights_pass_without_claim_headers() {
    let w = World::new();
    for req in [
        api("/healthz/ready", &[("x-auth-email", "forged@evil")]),
        request("GET", "/static/site.css", &[], &[]),
        request("OPTIONS", "/api", &[("origin", "https://x"), ("access-control-request-method", "PUT")], &[]),
    ] {
        assert_eq!(
            w.decide(&req),
            Decision::Forward {
                set_headers: vec![],
                remove_headers: vec!["x-auth-email".into(), "x-auth-groups".into()],
                response_cookies: vec![],
                upstream_cookie: None,
            },
            "{}",
            req.path
        );
    }
    assert!(
        matches!(w.decide(&request("POST", "/static/site.css", &[], &[])), Decision::Deny { status: 401, .. }),
        "method-limited rule"
    );
}

#[test]
fn browser_without_session_is_sent_to_the_issuer_with_state_nonce_and_pkce() {
    let w = World::new();
    let Decision::Redirect { location, set_cookies } = w.decide(&browser("/app?x=1", &[])) else { panic!() };
    assert!(location.starts_with("https://dex.example.com/auth?response_type=code&client_id=kube"), "{location}");
    assert_eq!(query_of(&location, "redirect_uri"), "https://app.example.com/oauth2/callback");
    assert_eq!(query_of(&location, "scope"), "openid email profile groups offline_access");
    assert_eq!(query_of(&location, "code_challenge_method"), "S256");
    let state = query_of(&location, "state");
    let flow_id = state.split('.').next().unwrap();
    assert_eq!(flow_id.len(), 8);
    assert_eq!(set_cookies.len(), 1);
    assert!(set_cookies[0].starts_with(&format!("_tokengate_csrf_{flow_id}=")), "{}", set_cookies[0]);
    assert!(
        set_cookies[0].ends_with("; Path=/oauth2/callback; Max-Age=600; HttpOnly; Secure; SameSite=Lax"),
        "{}",
        set_cookies[0]
    );
    let flow: LoginFlow = w
        .cfg
        .keyring
        .open(&format!("_tokengate_csrf_{flow_id}"), cookie_pair(&set_cookies[0]).split_once('=').unwrap().1, NOW)
        .unwrap();
    assert_eq!(flow.state, state);
    assert_eq!(flow.return_to, "https://app.example.com/app?x=1");
    assert_eq!(query_of(&location, "nonce"), flow.nonce);
    assert_eq!(query_of(&location, "code_challenge"), oauth::pkce_challenge(&flow.verifier));
    assert!(w.saw(Event::LoginStarted));
}

#[test]
fn two_tabs_get_separate_flow_cookies() {
    let w = World::new();
    let Decision::Redirect { set_cookies: a, .. } = w.decide(&browser("/a", &[])) else { panic!() };
    let Decision::Redirect { set_cookies: b, .. } = w.decide(&browser("/b", &[])) else { panic!() };
    assert_ne!(a[0].split('=').next(), b[0].split('=').next());
}

#[test]
fn abandoned_login_flows_are_cleared_beyond_the_limit() {
    let w = World::new();
    let flows: Vec<String> = (0..MAX_LOGIN_FLOWS).map(|i| format!("_tokengate_csrf_0000000{i}=x")).collect();
    let Decision::Redirect { set_cookies, .. } = w.decide(&browser("/", &refs(&flows))) else { panic!() };
    assert_eq!(set_cookies.len(), MAX_LOGIN_FLOWS + 1, "{set_cookies:?}");
    assert!(set_cookies[..MAX_LOGIN_FLOWS].iter().all(|c| c.contains("Max-Age=0")));
    let Decision::Redirect { set_cookies, .. } = w.decide(&browser("/", &refs(&flows[1..]))) else { panic!() };
    assert_eq!(set_cookies.len(), 1, "below the limit nothing is cleared");
}

#[test]
fn api_calls_without_session_get_401_not_a_redirect() {
    let w = World::new();
    for req in [
        api("/api", &[]),
        request("POST", "/form", &[("accept", HTML)], &[]),
        request("GET", "/x", &[("accept", HTML), ("x-requested-with", "XMLHttpRequest")], &[]),
    ] {
        let d = w.decide(&req);
        assert!(matches!(&d, Decision::Deny { status: 401, reason: "unauthenticated", .. }), "{d:?}");
    }
}

#[test]
fn full_login_sets_a_session_that_forwards_the_id_token_and_claims() {
    let w = World::new();
    let cookies = w.login();
    assert!(w.saw(Event::LoginSucceeded));
    assert_eq!(cookies.len(), 1);
    assert!(cookies[0].starts_with("_tokengate="));
    let req =
        request("GET", "/app", &[("authorization", "Basic forged"), ("x-auth-email", "forged@evil")], &refs(&cookies));
    let Decision::Forward { set_headers, remove_headers, response_cookies, .. } = w.decide(&req) else { panic!() };
    assert_eq!(header(&set_headers, "x-auth-email"), Some("alice@example.com"));
    assert_eq!(header(&set_headers, "x-auth-groups"), Some("admins,dev"));
    assert!(header(&set_headers, "authorization").unwrap().starts_with("Bearer ey"));
    assert!(remove_headers.contains(&"authorization".to_string()), "client Authorization is replaced");
    assert!(remove_headers.contains(&"x-auth-email".to_string()), "client claim headers are removed");
    assert!(response_cookies.is_empty());
    assert!(w.saw(Event::SessionCacheHit));
}

#[test]
fn callback_redirects_back_to_the_original_url_and_clears_the_flow_cookie() {
    let w = World::new();
    let start = browser("/app?x=1", &[]);
    let Decision::Redirect { location, set_cookies } = w.decide(&start) else { panic!() };
    let cb = browser(
        &format!("/oauth2/callback?code=c0de&state={}", query_of(&location, "state")),
        &[&cookie_pair(&set_cookies[0])],
    );
    let Decision::Call { callout, then } = w.decide(&cb) else { panic!() };
    assert_eq!(callout.path, "/token");
    let body = callout.body.clone().unwrap();
    assert!(body.starts_with("grant_type=authorization_code&code=c0de&redirect_uri=https%3A%2F%2Fapp.example.com%2Foauth2%2Fcallback&code_verifier="), "{body}");
    assert!(header(&callout.headers, "authorization").unwrap().starts_with("Basic "));
    let Pending::CodeExchange { flow, .. } = &then else { panic!() };
    let resp = json!({"id_token": w.id_token(json!({"nonce": flow.nonce})), "refresh_token": "rt"}).to_string();
    let Decision::Redirect { location, set_cookies } = w.resume(&cb, then, 200, &resp) else { panic!() };
    assert_eq!(location, "https://app.example.com/app?x=1");
    assert!(set_cookies[0].contains("_csrf_") && set_cookies[0].contains("Max-Age=0"), "{set_cookies:?}");
    assert!(set_cookies[1].starts_with("_tokengate="));
    assert!(set_cookies[1].contains(&format!("Max-Age={}", 168 * 3600)));
}

#[test]
fn callback_problems_fail_closed_with_400() {
    let w = World::new();
    let Decision::Redirect { location, set_cookies } = w.decide(&browser("/", &[])) else { panic!() };
    let state = query_of(&location, "state");
    let flow = cookie_pair(&set_cookies[0]);
    let flow_id = &state[..8];
    let cases: Vec<(&str, RequestParts, &str)> = vec![
        (
            "issuer error",
            browser(&format!("/oauth2/callback?error=access_denied&state={state}"), &[&flow]),
            "authorization_error",
        ),
        ("missing state", browser("/oauth2/callback?code=c", &[&flow]), "bad_state"),
        ("no flow cookie", browser(&format!("/oauth2/callback?code=c&state={state}"), &[]), "no_flow_cookie"),
        (
            "state mismatch",
            browser(&format!("/oauth2/callback?code=c&state={flow_id}.other"), &[&flow]),
            "state_mismatch",
        ),
        ("no code", browser(&format!("/oauth2/callback?state={state}"), &[&flow]), "no_code"),
        (
            "flow cookie from another flow id",
            browser("/oauth2/callback?code=c&state=ffffffff.x", &[&flow.replacen(flow_id, "ffffffff", 1)]),
            "bad_flow_cookie",
        ),
    ];
    for (name, req, want) in cases {
        match w.decide(&req) {
            Decision::Deny { status: 400, reason, .. } => assert_eq!(reason, want, "{name}"),
            other => panic!("{name}: {other:?}"),
        }
    }
    w.now.set(NOW + 601);
    let late = browser(&format!("/oauth2/callback?code=c&state={state}"), &[&flow]);
    assert!(matches!(w.decide(&late), Decision::Deny { reason: "bad_flow_cookie", .. }), "flow expired");
}

#[test]
fn id_token_with_the_wrong_nonce_does_not_start_a_session() {
    let w = World::new();
    let Decision::Redirect { location, set_cookies } = w.decide(&browser("/", &[])) else { panic!() };
    let cb = browser(
        &format!("/oauth2/callback?code=c&state={}", query_of(&location, "state")),
        &[&cookie_pair(&set_cookies[0])],
    );
    let Decision::Call { then, .. } = w.decide(&cb) else { panic!() };
    let resp = json!({"id_token": w.id_token(json!({"nonce": "someone-else"}))}).to_string();
    assert!(matches!(w.resume(&cb, then, 200, &resp), Decision::Deny { status: 401, reason: "nonce_mismatch", .. }));
    assert!(w.store.is_empty(), "no session stored");
    assert!(w.saw(Event::VerificationFailed("nonce_mismatch")));
}

#[test]
fn code_exchange_against_an_unreachable_issuer_shows_the_503_page() {
    let w = World::new();
    let Decision::Redirect { location, set_cookies } = w.decide(&browser("/", &[])) else { panic!() };
    let cb = browser(
        &format!("/oauth2/callback?code=c&state={}", query_of(&location, "state")),
        &[&cookie_pair(&set_cookies[0])],
    );
    let Decision::Call { then, .. } = w.decide(&cb) else { panic!() };
    let Decision::Deny { status, body, .. } = w.resume(&cb, then, 0, "") else { panic!() };
    assert_eq!(status, 503);
    assert!(body.contains("Identity provider unreachable"), "{body}");
}

#[test]
fn login_open_redirects_are_refused() {
    let w = World::new();
    let cases: &[(&str, bool)] = &[
        ("/app", true),
        ("https://app.example.com/x", true),
        ("https://APP.example.com:8443/x", true),
        ("https://example.org/", true),
        ("https://a.b.example.org/", true),
        ("https://evilexample.org/", false),
        ("https://evil.com/", false),
        ("//evil.com/", false),
        ("/\\evil.com", false),
        ("https://app.example.com@evil.com/", false),
        ("javascript:alert(1)", false),
        ("https://evil.com\\@app.example.com/", false),
    ];
    let req = browser("/", &[]);
    for (target, want) in cases {
        assert_eq!(is_safe_redirect(&w.cfg, &req, target), *want, "{target}");
    }
}

#[test]
fn expiring_id_token_is_refreshed_and_the_rotated_refresh_token_set_on_the_response() {
    let w = World::new();
    let cookies = w.login();
    w.now.set(NOW + 3600 - 10);
    let req = request("GET", "/app", &[("accept", HTML)], &refs(&cookies));
    let Decision::Call { callout, then } = w.decide(&req) else { panic!("refresh") };
    assert_eq!(callout.body.as_deref(), Some("grant_type=refresh_token&refresh_token=rt-1"));
    let new_token = w.id_token(json!({"email": "alice@example.com"}));
    let resp = json!({"id_token": new_token, "refresh_token": "rt-2"}).to_string();
    let Decision::Forward { set_headers, response_cookies, .. } = w.resume(&req, then, 200, &resp) else { panic!() };
    assert_eq!(header(&set_headers, "authorization"), Some(format!("Bearer {new_token}").as_str()));
    assert_eq!(response_cookies.len(), 1);
    let sealed = &cookie_pair(&response_cookies[0])["_tokengate=".len()..];
    let s: Session = w.cfg.keyring.open("_tokengate", sealed, w.now.get()).unwrap();
    assert_eq!(s.refresh_token.as_deref(), Some("rt-2"));
    assert!(w.saw(Event::RefreshSucceeded));
    // The next request, even with the old cookie, uses the new cached token.
    assert!(matches!(w.decide(&req), Decision::Forward { .. }));
}

#[test]
fn refresh_rejected_with_invalid_grant_ends_the_session() {
    let w = World::new();
    let cookies = w.login();
    w.now.set(NOW + 3600 - 10);
    for (req, navigation) in [
        (request("GET", "/app", &[("accept", HTML)], &refs(&cookies)), true),
        (request("GET", "/api", &[("accept", "application/json")], &refs(&cookies)), false),
    ] {
        let Decision::Call { then, .. } = w.decide(&req) else { panic!() };
        let d = w.resume(&req, then, 400, r#"{"error":"invalid_grant"}"#);
        let set_cookies = match (&d, navigation) {
            (Decision::Redirect { set_cookies, .. }, true) => set_cookies.clone(),
            (Decision::Deny { status: 401, headers, .. }, false) => {
                headers.iter().filter(|(k, _)| k == "set-cookie").map(|(_, v)| v.clone()).collect()
            }
            _ => panic!("{d:?}"),
        };
        assert!(
            set_cookies.iter().any(|c| c.starts_with("_tokengate=;") && c.contains("Max-Age=0")),
            "{set_cookies:?}"
        );
    }
    assert!(w.saw(Event::RefreshRejected));
}

#[test]
fn refresh_failing_on_the_network_keeps_a_still_valid_session() {
    let w = World::new();
    let cookies = w.login();
    let req = request("GET", "/app", &[("accept", HTML)], &refs(&cookies));
    w.now.set(NOW + 3600 - 10);
    let Decision::Call { then, .. } = w.decide(&req) else { panic!() };
    assert!(
        matches!(w.resume(&req, then, 503, "upstream connect error"), Decision::Forward { .. }),
        "token still valid for 10 s"
    );
    w.now.set(NOW + 3600 + 5);
    let Decision::Call { then, .. } = w.decide(&req) else { panic!() };
    assert!(matches!(w.resume(&req, then, 0, ""), Decision::Deny { status: 503, .. }), "expired token: fail closed");
    let Decision::Call { then, .. } = w.decide(&req) else { panic!() };
    assert!(
        matches!(
            w.resume(&req, then, 400, r#"{"error":"temporarily_unavailable"}"#),
            Decision::Deny { status: 503, .. }
        ),
        "other error codes keep the session"
    );
    assert!(w.saw(Event::RefreshUnavailable));
}

#[test]
fn huge_refresh_tokens_split_the_session_cookie() {
    let w = World::new();
    let Decision::Redirect { location, set_cookies } = w.decide(&browser("/", &[])) else { panic!() };
    let cb = browser(
        &format!("/oauth2/callback?code=c&state={}", query_of(&location, "state")),
        &[&cookie_pair(&set_cookies[0])],
    );
    let Decision::Call { then, .. } = w.decide(&cb) else { panic!() };
    let Pending::CodeExchange { flow, .. } = &then else { panic!() };
    let resp =
        json!({"id_token": w.id_token(json!({"nonce": flow.nonce})), "refresh_token": "r".repeat(6000)}).to_string();
    let Decision::Redirect { set_cookies, .. } = w.resume(&cb, then, 200, &resp) else { panic!() };
    let session: Vec<String> = set_cookies
        .iter()
        .filter(|c| c.starts_with("_tokengate_"))
        .filter(|c| !c.contains("_csrf_"))
        .map(|c| cookie_pair(c))
        .collect();
    assert_eq!(session.len(), 3, "{set_cookies:?}");
    assert!(session[0].starts_with("_tokengate_0="));
    assert!(matches!(w.decide(&browser("/", &refs(&session))), Decision::Forward { .. }));
}

#[test]
fn tampered_session_cookie_is_cleared_and_login_starts() {
    let w = World::new();
    let mut cookies = w.login();
    cookies[0].push('A');
    let Decision::Redirect { set_cookies, .. } = w.decide(&browser("/", &refs(&cookies))) else { panic!() };
    assert!(set_cookies[0].starts_with("_tokengate=; ") && set_cookies[0].contains("Max-Age=0"), "{set_cookies:?}");
}

#[test]
fn valid_bearer_token_is_forwarded_and_cached() {
    let w = World::new();
    let token = w.id_token(json!({}));
    let req = api("/api", &[("authorization", &format!("Bearer {token}")), ("x-auth-email", "forged")]);
    let Decision::Forward { set_headers, remove_headers, .. } = w.decide(&req) else { panic!() };
    assert_eq!(header(&set_headers, "x-auth-email"), Some("alice@example.com"));
    assert_eq!(header(&set_headers, "authorization"), None, "the client's own token goes through");
    assert_eq!(remove_headers, vec!["x-auth-email", "x-auth-groups"]);
    assert!(w.saw(Event::BearerCacheMiss));
    assert!(matches!(w.decide(&req), Decision::Forward { .. }));
    assert!(w.saw(Event::BearerCacheHit), "second use is a cache hit");
}

#[test]
fn bearer_with_pass_authorization_header_false_has_it_stripped() {
    let w = World::with_config(config(json!({"pass_authorization_header": false})));
    let token = w.id_token(json!({}));
    let Decision::Forward { remove_headers, .. } =
        w.decide(&api("/api", &[("authorization", &format!("Bearer {token}"))]))
    else {
        panic!()
    };
    assert!(remove_headers.contains(&"authorization".to_string()));
}

#[test]
fn invalid_bearer_tokens_get_401_with_www_authenticate() {
    let w = World::new();
    let cases = [
        (w.id_token(json!({"exp": NOW - 3600})), "expired", "token expired"),
        (w.id_token(json!({"aud": "someone-else"})), "wrong_audience", "wrong audience"),
        ("not.a.jwt".to_string(), "malformed", "malformed token: not base64url"),
    ];
    for (token, reason, description) in cases {
        let d = w.decide(&api("/api", &[("authorization", &format!("Bearer {token}"))]));
        let Decision::Deny { status: 401, reason: r, headers, .. } = d else { panic!("{d:?}") };
        assert_eq!(r, reason);
        assert_eq!(
            header(&headers, "www-authenticate"),
            Some(format!("Bearer error=\"invalid_token\", error_description=\"{description}\"").as_str())
        );
        assert!(w.saw(Event::VerificationFailed(reason)));
    }
}

#[test]
fn unknown_kid_refetches_keys_once_then_fails() {
    let mut w = World::new();
    let token =
        w.signer.sign("RS256", Some("rotated"), &json!({"iss": ISSUER, "sub": "u", "aud": "kube", "exp": NOW + 60}));
    let req = api("/api", &[("authorization", &format!("Bearer {token}"))]);
    assert_eq!(w.decide(&req), Decision::FetchKeys { jwks_only: true });
    w.keys_refetched = true;
    assert!(matches!(w.decide(&req), Decision::Deny { status: 401, reason: "unknown_kid", .. }));
    w.keys_refetched = false;
    w.provider.as_mut().unwrap().fetched_at = NOW - 5;
    assert!(matches!(w.decide(&req), Decision::Deny { status: 401, .. }), "rate-limited: keys fetched 5 s ago");
}

#[test]
fn requests_before_keys_are_known_wait_for_a_fetch() {
    let mut w = World::new();
    w.provider = None;
    assert_eq!(w.decide(&browser("/", &[])), Decision::FetchKeys { jwks_only: false });
    assert_eq!(w.decide(&api("/", &[("authorization", "Bearer a.b.c")])), Decision::FetchKeys { jwks_only: false });
    let push = |_| {};
    let Decision::Deny { status, .. } = issuer_unreachable(&w.ctx(&push, &Revocations::default()), &browser("/", &[]))
    else {
        panic!()
    };
    assert_eq!(status, 503);
}

#[test]
fn new_logins_get_503_while_the_issuer_is_down_but_sessions_keep_working() {
    let mut w = World::new();
    let cookies = w.login();
    w.issuer_down = true;
    let Decision::Deny { status: 503, body, headers, .. } = w.decide(&browser("/", &[])) else { panic!() };
    assert!(body.contains("<h1>Identity provider unreachable</h1>"));
    assert_eq!(header(&headers, "content-type"), Some("text/html; charset=utf-8"));
    assert!(matches!(w.decide(&browser("/", &refs(&cookies))), Decision::Forward { .. }));
}

#[test]
fn users_outside_allowed_groups_and_emails_get_403() {
    let cases: &[(serde_json::Value, serde_json::Value, bool)] = &[
        (json!({"allowed_groups": ["admins"]}), json!({}), true),
        (json!({"allowed_groups": ["ops"]}), json!({}), false),
        (json!({"allowed_emails": ["@example.com"]}), json!({}), true),
        (json!({"allowed_emails": ["ALICE@example.com"]}), json!({}), true),
        (json!({"allowed_emails": ["bob@example.com"]}), json!({}), false),
        (json!({"allowed_emails": ["@example.com"]}), json!({"email_verified": false}), false),
        (json!({"allowed_emails": ["@example.com"]}), json!({"email": "alice@example.com.evil"}), false),
        (json!({"allowed_groups": ["admins"], "allowed_emails": ["@other.org"]}), json!({}), false),
    ];
    for (patch, claims, allowed) in cases {
        let w = World::with_config(config(patch.clone()));
        let token = w.id_token(claims.clone());
        let d = w.decide(&request("GET", "/", &[("accept", HTML), ("authorization", &format!("Bearer {token}"))], &[]));
        match (&d, allowed) {
            (Decision::Forward { .. }, true) => {}
            (Decision::Deny { status: 403, body, .. }, false) => assert!(body.contains("Access denied")),
            _ => panic!("{patch} {claims}: {d:?}"),
        }
    }
}

#[test]
fn sign_out_revokes_clears_cookies_and_goes_to_the_end_session_endpoint() {
    let w = World::with_config(config(json!({"post_logout_redirect_uri": "https://app.example.com/bye"})));
    let cookies = w.login();
    let req = browser("/oauth2/sign_out", &refs(&cookies));
    let Decision::Call { callout, then } = w.decide(&req) else { panic!() };
    assert_eq!(callout.path, "/revoke");
    assert_eq!(callout.body.as_deref(), Some("token=rt-1&token_type_hint=refresh_token"));
    let Decision::Redirect { location, set_cookies } = w.resume(&req, then, 503, "") else { panic!() };
    assert!(location.starts_with("https://dex.example.com/logout?client_id=kube&id_token_hint=ey"), "{location}");
    assert_eq!(query_of(&location, "post_logout_redirect_uri"), "https://app.example.com/bye");
    assert!(set_cookies.iter().any(|c| c.starts_with("_tokengate=;") && c.contains("Max-Age=0")));
    let sid = session_of(&w, &format!("{}; Path=/", cookies[0])).id;
    let entry = Cache::new(&w.store, &w.ns).get_session(&sid, NOW).unwrap();
    assert!(entry.signed_out && entry.id_token.is_empty(), "the cached ID token is gone, a tombstone stays");
    let old = browser("/", &refs(&cookies));
    let Decision::Redirect { location, set_cookies } = w.decide(&old) else {
        panic!("a leftover copy of the cookie is not a session")
    };
    assert!(location.starts_with("https://dex.example.com/auth?"), "a new login, no refresh: {location}");
    assert!(set_cookies.iter().any(|c| c.starts_with("_tokengate=;")));
}

#[test]
fn a_sign_out_another_site_started_asks_first_and_the_same_origin_post_signs_out() {
    let w = World::new();
    let cookies = w.login();
    let path = "/oauth2/sign_out?rd=/a%22b";
    let mut cross = request("GET", path, &[("accept", HTML), ("sec-fetch-site", "cross-site")], &refs(&cookies));
    let d = w.decide(&cross);
    let Decision::Deny { status: 200, headers, body, .. } = &d else { panic!("{d:?}") };
    assert_eq!(header(headers, "x-frame-options"), Some("DENY"));
    assert_eq!(header(headers, "cache-control"), Some("no-store"));
    assert!(body.contains("<form method=\"post\" action=\"/oauth2/sign_out?rd=/a%22b\">"), "{body}");
    assert!(!headers.iter().any(|(k, _)| k == "set-cookie"), "nothing cleared");
    assert!(matches!(w.decide(&browser("/app", &refs(&cookies))), Decision::Forward { .. }), "still signed in");
    // A form on the other site posting here is cross-site too.
    cross.method = "POST".into();
    assert!(matches!(w.decide(&cross), Decision::Deny { status: 200, .. }));
    // The page's own button: same-origin.
    let mine = request("POST", path, &[("accept", HTML), ("sec-fetch-site", "same-origin")], &refs(&cookies));
    assert!(matches!(w.decide(&mine), Decision::Call { .. }), "revokes and signs out");
}

#[test]
fn sign_out_rd_parameter_is_checked_against_open_redirects() {
    let mut w = World::new();
    w.provider.as_mut().unwrap().metadata.end_session_endpoint = None;
    let Decision::Redirect { location, .. } = w.decide(&browser("/oauth2/sign_out?rd=https://evil.com/", &[])) else {
        panic!()
    };
    assert_eq!(location, "/");
    let Decision::Redirect { location, .. } = w.decide(&browser("/oauth2/sign_out?rd=/home", &[])) else { panic!() };
    assert_eq!(location, "https://app.example.com/home");
}

#[test]
fn claim_values_are_flattened_and_stripped_of_control_characters() {
    let cfg = config(
        json!({"claims_to_headers": {"email": "x-email", "groups": "x-groups", "n": "x-n", "missing": "x-missing"}}),
    );
    let claims = json!({"email": "a@b\r\nInjected: yes", "groups": ["a", "b"], "n": 3}).as_object().unwrap().clone();
    assert_eq!(
        claim_headers(&cfg, &claims),
        vec![
            ("x-email".to_string(), "a@bInjected: yes".to_string()),
            ("x-groups".to_string(), "a,b".to_string()),
            ("x-n".to_string(), "3".to_string())
        ]
    );
}

#[test]
fn metric_names_are_stable() {
    assert_eq!(Event::LoginStarted.metric_name(), "tokengate.logins_started");
    assert_eq!(Event::VerificationFailed("expired").metric_name(), "tokengate.verification_failures.expired");
}

// === field reports (issue 13) and bytes outside UTF-8 (issue 15) ===

fn request_bytes(method: &str, path: &[u8], headers: &[(&[u8], &[u8])]) -> RequestParts {
    let mut h: Vec<(Vec<u8>, Vec<u8>)> = vec![
        (b":method".to_vec(), method.as_bytes().to_vec()),
        (b":scheme".to_vec(), b"https".to_vec()),
        (b":authority".to_vec(), b"app.example.com".to_vec()),
        (b":path".to_vec(), path.to_vec()),
    ];
    h.extend(headers.iter().map(|(k, v)| (k.to_vec(), v.to_vec())));
    RequestParts::from_header_bytes(h)
}

#[test]
fn underscore_variants_of_claim_headers_are_removed_on_every_path() {
    let w = World::new();
    let session = w.login();
    let token = w.id_token(json!({}));
    let bearer = format!("Bearer {token}");
    let spoof: &[(&str, &str)] = &[("x_auth_email", "root@corp.example"), ("X_Auth_Groups", "admins")];
    let with_session = request("GET", "/app", spoof, &refs(&session));
    let with_bearer = request("GET", "/api", &[spoof, &[("authorization", bearer.as_str())]].concat(), &[]);
    let skipped = request("GET", "/static/site.css", spoof, &[]);
    let preflight = request(
        "OPTIONS",
        "/api",
        &[spoof, &[("origin", "https://x"), ("access-control-request-method", "PUT")]].concat(),
        &[],
    );
    for req in [with_session, with_bearer, skipped, preflight] {
        let Decision::Forward { remove_headers, .. } = w.decide(&req) else { panic!("{} forwards", req.path) };
        for name in ["x-auth-email", "x-auth-groups", "x_auth_email", "x_auth_groups"] {
            assert!(remove_headers.iter().any(|h| h == name), "{name} removed on {}", req.path);
        }
    }
}

#[test]
fn two_authorization_credentials_are_a_bad_request_however_they_arrive() {
    let w = World::new();
    let session = w.login();
    let token = w.id_token(json!({}));
    let bearer = format!("Bearer {token}");
    let cases = [
        request("GET", "/api", &[("authorization", bearer.as_str()), ("authorization", "Basic Zm9vOmJhcg==")], &[]),
        // Envoy joins repeated inline headers (Authorization is one) with a comma.
        request("GET", "/api", &[("authorization", &format!("{bearer},Basic Zm9vOmJhcg=="))], &[]),
        request("GET", "/api", &[("authorization", &format!("Basic Zm9vOmJhcg==, {bearer}"))], &[]),
        request("GET", "/app", &[("authorization", "Basic a"), ("authorization", "Basic b")], &refs(&session)),
    ];
    for req in cases {
        let d = w.decide(&req);
        assert!(matches!(d, Decision::Deny { status: 400, reason: "ambiguous_authorization", .. }), "{d:?}");
    }
    assert!(w.saw(Event::MalformedRequest));
    // One credential with parameters (commas inside it) is not two.
    let digest = request("GET", "/static/x.css", &[("authorization", "Digest realm=\"r\", nonce=\"n\"")], &[]);
    assert!(matches!(w.decide(&digest), Decision::Forward { .. }));
}

#[test]
fn upgrade_requests_without_a_session_get_401_not_a_redirect() {
    let w = World::new();
    let cases: &[&[(&str, &str)]] = &[
        &[
            ("connection", "Upgrade"),
            ("upgrade", "websocket"),
            ("sec-websocket-version", "13"),
            ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
            ("accept", HTML),
        ],
        &[("connection", "keep-alive, Upgrade"), ("upgrade", "h2c"), ("accept", HTML)],
        &[("accept", HTML), ("sec-fetch-mode", "websocket")],
        &[("accept", HTML), ("sec-fetch-mode", "no-cors")],
    ];
    for headers in cases {
        let d = w.decide(&request("GET", "/ws", headers, &[]));
        assert!(matches!(d, Decision::Deny { status: 401, .. }), "{headers:?}: {d:?}");
    }
}

#[test]
fn the_filters_own_cookies_do_not_reach_the_upstream_unless_asked() {
    let w = World::new();
    let session = w.login();
    let mut cookies = refs(&session);
    cookies.extend(["theme=dark", "_tokengate_csrf_0123abcd=flow", "_tokengate_other=kept", "lang=en"]);
    let req = request("GET", "/app", &[], &cookies);
    let Decision::Forward { upstream_cookie, .. } = w.decide(&req) else { panic!() };
    assert_eq!(upstream_cookie.as_deref(), Some(&b"theme=dark; _tokengate_other=kept; lang=en"[..]));
    let only_ours = request("GET", "/app", &[], &refs(&session));
    let Decision::Forward { upstream_cookie, .. } = w.decide(&only_ours) else { panic!() };
    assert_eq!(upstream_cookie, Some(Vec::new()), "nothing left: the header is removed");
    let theirs = request("GET", "/static/x.css", &[], &["theme=dark"]);
    let Decision::Forward { upstream_cookie, .. } = w.decide(&theirs) else { panic!() };
    assert_eq!(upstream_cookie, None, "no cookie of ours: the header is untouched");

    let mut w = World::new();
    w.cfg.cookie.pass_to_upstream = true;
    let session = w.login();
    let Decision::Forward { upstream_cookie, .. } = w.decide(&request("GET", "/app", &[], &refs(&session))) else {
        panic!()
    };
    assert_eq!(upstream_cookie, None);
}

#[test]
fn header_bytes_outside_utf8_are_client_errors_where_the_filter_reads_them() {
    let w = World::new();
    let d = w.decide(&request_bytes("GET", b"/api", &[(b"authorization", b"Bearer caf\xe9.x.y")]));
    let Decision::Deny { status: 401, headers, .. } = d else { panic!("{d:?}") };
    assert!(header(&headers, "www-authenticate").unwrap().contains("invalid_token"));
    for (name, value) in [
        (&b"accept"[..], &b"text/html\xe9"[..]),
        (b"sec-fetch-mode", b"navig\xe9te"),
        (b":authority", b"caf\xe9.example"),
        (b"x-forwarded-proto", b"\xff"),
    ] {
        let d = w.decide(&request_bytes("GET", b"/", &[(name, value)]));
        assert!(matches!(d, Decision::Deny { status: 400, .. }), "{}: {d:?}", String::from_utf8_lossy(name));
    }
    let d = w.decide(&request_bytes("GET", b"/caf\xe9", &[]));
    assert!(matches!(d, Decision::Deny { status: 400, .. }), "path: {d:?}");

    // A cookie byte outside UTF-8 is "no such cookie"; other cookies still work.
    let session = w.login();
    let mut cookie = session.join("; ").into_bytes();
    cookie.extend_from_slice(b"; junk=caf\xe9");
    let ok = request_bytes("GET", b"/app", &[(b"cookie", &cookie), (b"accept", HTML.as_bytes())]);
    let Decision::Forward { upstream_cookie, .. } = w.decide(&ok) else { panic!("the session still opens") };
    assert_eq!(upstream_cookie.as_deref(), Some(&b"junk=caf\xe9"[..]), "their cookie passes byte for byte");
    let broken = request_bytes("GET", b"/app", &[(b"cookie", b"_tokengate=caf\xe9"), (b"accept", HTML.as_bytes())]);
    assert!(matches!(w.decide(&broken), Decision::Redirect { .. }), "no session: log in");

    // A header the filter does not read is left alone.
    let bearer = format!("Bearer {}", w.id_token(json!({})));
    let other = request_bytes(
        "GET",
        b"/api",
        &[(b"authorization", bearer.as_bytes()), (b"x-trace", b"caf\xe9"), (b"accept", b"application/json")],
    );
    assert!(matches!(w.decide(&other), Decision::Forward { .. }));
}

// === any OpenID Provider (issue 16) ===

fn session_of(w: &World, set_cookie: &str) -> Session {
    let sealed = &cookie_pair(set_cookie)["_tokengate=".len()..];
    w.cfg.keyring.open("_tokengate", sealed, w.now.get()).unwrap()
}

#[test]
fn auth_request_params_are_sent_and_cannot_override_the_filters_own() {
    let w = World::with_config(config(json!({"auth_request_params": {"prompt": "consent", "access_type": "offline"}})));
    let Decision::Redirect { location, .. } = w.decide(&browser("/", &[])) else { panic!() };
    assert_eq!(query_of(&location, "prompt"), "consent");
    assert_eq!(query_of(&location, "access_type"), "offline");
    assert_eq!(query_of(&location, "code_challenge_method"), "S256");
    for (params, want) in [
        (json!({"state": "x"}), "`auth_request_params.state`: is set by the filter itself"),
        (json!({"prompt": 1}), "`auth_request_params.prompt`: expected a string, found a number"),
    ] {
        let mut v = json!({
            "issuer": ISSUER, "client_id": "kube", "client_secret": "s", "cluster": "issuer",
            "cookie_secrets": ["AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="],
        });
        v["auth_request_params"] = params;
        let err = FilterConfig::parse(v.to_string().as_bytes()).unwrap_err().to_string();
        assert!(err.contains(want), "{err}");
    }
}

#[test]
fn a_login_without_a_refresh_token_is_counted_and_explained() {
    let w = World::new();
    let start = browser("/app", &[]);
    let Decision::Redirect { location, set_cookies } = w.decide(&start) else { panic!() };
    let state = query_of(&location, "state");
    let cb = browser(&format!("/oauth2/callback?code=c0de&state={state}"), &[&cookie_pair(&set_cookies[0])]);
    let Decision::Call { then, .. } = w.decide(&cb) else { panic!() };
    let Pending::CodeExchange { flow, .. } = &then else { panic!() };
    let body = json!({"id_token": w.id_token(json!({"nonce": flow.nonce}))}).to_string();
    assert!(matches!(w.resume(&cb, then, 200, &body), Decision::Redirect { .. }), "the session starts anyway");
    assert!(w.saw(Event::NoRefreshToken));
    let message = Event::NoRefreshToken.log_message().unwrap();
    assert!(message.contains("prompt") && message.contains("auth_request_params"), "{message}");
    assert_eq!(Event::NoRefreshToken.metric_name(), "tokengate.sessions_without_refresh_token");
}

#[test]
fn a_refresh_without_an_id_token_keeps_a_valid_session_and_ends_an_expired_one() {
    let w = World::new();
    let cookies = w.login();
    let req = request("GET", "/app", &[("accept", HTML)], &refs(&cookies));
    w.now.set(NOW + 3600 - 10);
    let Decision::Call { then, .. } = w.decide(&req) else { panic!() };
    let d = w.resume(&req, then, 200, r#"{"access_token":"a","token_type":"Bearer","refresh_token":"rt-2"}"#);
    let Decision::Forward { response_cookies, .. } = d else { panic!("{d:?}") };
    assert_eq!(session_of(&w, &response_cookies[0]).refresh_token.as_deref(), Some("rt-2"), "rotation kept");
    assert!(w.saw(Event::RefreshWithoutIdToken));

    w.now.set(NOW + 3600 + 5);
    let Decision::Call { callout, then } = w.decide(&req) else { panic!() };
    assert!(callout.body.unwrap().contains("refresh_token=rt-2"), "the newest refresh token, not the cookie's");
    let d = w.resume(&req, then, 200, r#"{"access_token":"a","token_type":"Bearer"}"#);
    let Decision::Redirect { set_cookies, .. } = d else { panic!("{d:?}") };
    assert!(set_cookies.iter().any(|c| c.starts_with("_tokengate=;")), "the session ends cleanly");
}

#[test]
fn a_refreshed_id_token_for_another_identity_ends_the_session() {
    for (patch, what) in [
        (json!({"sub": "user-2"}), "sub"),
        (json!({"aud": ["kube", "other"]}), "aud"),
        (json!({"azp": "kube", "aud": ["kube", "x"]}), "azp and aud"),
    ] {
        let w = World::new();
        let cookies = w.login();
        w.evict_shared_cache();
        let req = request("GET", "/app", &[("accept", HTML)], &refs(&cookies));
        w.now.set(NOW + 3600 - 10);
        let Decision::Call { then, .. } = w.decide(&req) else { panic!() };
        let body = json!({"id_token": w.id_token(patch), "refresh_token": "rt-2"}).to_string();
        let d = w.resume(&req, then, 200, &body);
        assert!(matches!(d, Decision::Redirect { .. }), "{what}: {d:?}");
        assert!(w.saw(Event::VerificationFailed("identity_changed")), "{what}");
    }
}

#[test]
fn concurrent_requests_refresh_once_and_every_response_carries_the_newest_refresh_token() {
    let w = World::new();
    let cookies = w.login();
    let req = request("GET", "/app", &[("accept", HTML)], &refs(&cookies));
    w.now.set(NOW + 3600 + 5);
    let Decision::Call { then: first, .. } = w.decide(&req) else { panic!("the first request refreshes") };
    let Decision::Call { callout, then: second } = w.decide(&req) else { panic!("the second waits") };
    assert_eq!(callout.method, "GET", "a wait, not a second refresh: {callout:?}");
    assert!(matches!(second, Pending::AwaitRefresh { wait: Wait { rounds: 1, .. }, .. }));
    // Still refreshing: the waiter waits again.
    let Decision::Call { then: second, .. } = w.resume(&req, second, 200, "{}") else { panic!() };
    let body = json!({"id_token": w.id_token(json!({})), "refresh_token": "rt-2"}).to_string();
    let Decision::Forward { response_cookies, .. } = w.resume(&req, first, 200, &body) else { panic!() };
    assert_eq!(session_of(&w, &response_cookies[0]).refresh_token.as_deref(), Some("rt-2"));
    let Decision::Forward { response_cookies, .. } = w.resume(&req, second, 200, "{}") else { panic!("done") };
    assert_eq!(
        session_of(&w, &response_cookies[0]).refresh_token.as_deref(),
        Some("rt-2"),
        "the waiter's response brings its cookie up to date too"
    );
    // The browser kept the old cookie (a response was lost): it is brought up to date, never refreshed twice.
    let Decision::Forward { response_cookies, .. } = w.decide(&req) else { panic!() };
    assert_eq!(session_of(&w, &response_cookies[0]).refresh_token.as_deref(), Some("rt-2"));
}

#[test]
fn a_refresh_that_never_answers_is_taken_over_once_its_lease_runs_out() {
    let w = World::new();
    let cookies = w.login();
    let req = request("GET", "/api", &[("accept", "application/json")], &refs(&cookies));
    w.now.set(NOW + 3600 + 5);
    let Decision::Call { .. } = w.decide(&req) else { panic!() };
    let Decision::Call { then, .. } = w.decide(&req) else { panic!("waits") };
    let Decision::Call { then, .. } = w.resume(&req, then, 200, "{}") else { panic!("still waits") };
    // The first refresh never answers (its stream was reset): past its lease the waiter refreshes itself.
    w.now.set(NOW + 3600 + 5 + crate::callout::TIMEOUT_MS / 1000 + 3);
    let Decision::Call { callout, .. } = w.resume(&req, then, 200, "{}") else { panic!() };
    assert_eq!(callout.method, "POST");
}

#[test]
fn a_cookie_rotated_by_another_gateway_is_never_downgraded_and_its_token_is_used() {
    let w = World::new();
    let cookies = w.login();
    let mut s = session_of(&w, &format!("{}; Path=/", cookies[0]));
    // Another gateway (its own shared data) rotated the refresh token since.
    s.refresh_token = Some("rt-9".into());
    s.generation = 3;
    let sealed = w.cfg.keyring.seal("_tokengate", &s, &w.rng).unwrap();
    let newer = format!("_tokengate={sealed}");
    let req = request("GET", "/app", &[("accept", HTML)], &[&newer]);
    let Decision::Forward { response_cookies, .. } = w.decide(&req) else { panic!() };
    assert!(response_cookies.is_empty(), "the cache's older refresh token does not replace the cookie's");
    w.now.set(NOW + 3600 + 5);
    let Decision::Call { callout, .. } = w.decide(&req) else { panic!() };
    assert!(callout.body.unwrap().contains("refresh_token=rt-9"), "the newer generation is presented");
}

#[test]
fn a_refresh_without_an_answer_gives_its_lease_back() {
    let w = World::new();
    let cookies = w.login();
    let req = request("GET", "/api", &[("accept", "application/json")], &refs(&cookies));
    w.now.set(NOW + 3600 + 5);
    let Decision::Call { then, .. } = w.decide(&req) else { panic!() };
    // What the host does when Envoy refuses the callout: resume with no answer.
    assert!(matches!(w.resume(&req, then, 0, ""), Decision::Deny { status: 503, .. }));
    let Decision::Call { callout, .. } = w.decide(&req) else { panic!() };
    assert_eq!(callout.method, "POST", "the next request refreshes at once instead of waiting");
}

#[test]
fn a_rotated_refresh_token_is_kept_even_when_the_new_id_token_cannot_be_verified() {
    let w = World::new();
    let cookies = w.login();
    let req = request("GET", "/api", &[("accept", "application/json")], &refs(&cookies));
    w.now.set(NOW + 3600 - 10);
    let Decision::Call { then, .. } = w.decide(&req) else { panic!() };
    let body = json!({"id_token": "not.a.jwt", "refresh_token": "rt-2"}).to_string();
    let Decision::Forward { response_cookies, .. } = w.resume(&req, then, 200, &body) else { panic!() };
    assert_eq!(session_of(&w, &response_cookies[0]).refresh_token.as_deref(), Some("rt-2"), "the cookie has it");
    w.now.set(NOW + 3600 + 5);
    let Decision::Call { callout, .. } = w.decide(&req) else { panic!() };
    assert!(callout.body.unwrap().contains("refresh_token=rt-2"), "the spent rt-1 is never presented again");
}

#[test]
fn a_sign_out_during_a_refresh_is_not_undone_by_it() {
    let w = World::new();
    let cookies = w.login();
    let req = request("GET", "/api", &[("accept", "application/json")], &refs(&cookies));
    w.now.set(NOW + 3600 - 10);
    let Decision::Call { then, .. } = w.decide(&req) else { panic!() };
    let out = browser("/oauth2/sign_out", &refs(&cookies));
    assert!(matches!(w.decide(&out), Decision::Call { .. }), "revocation");
    let body = json!({"id_token": w.id_token(json!({})), "refresh_token": "rt-2"}).to_string();
    let d = w.resume(&req, then, 200, &body);
    let Decision::Deny { status: 401, headers, .. } = d else { panic!("{d:?}") };
    assert!(headers.iter().any(|(k, v)| k == "set-cookie" && v.starts_with("_tokengate=;")));
    assert!(matches!(w.decide(&req), Decision::Deny { status: 401, .. }), "the old cookie stays signed out");
}

#[test]
fn a_slow_response_carries_the_refresh_token_that_is_newest_when_it_leaves() {
    let w = World::new();
    let cookies = w.login();
    let req = request("GET", "/api", &[("accept", "application/json")], &refs(&cookies));
    w.now.set(NOW + 3600 - 10);
    // Request A refreshes (rt-2), and request B, with the same old cookie, is answered from the cache with a
    // cookie for rt-2; B's upstream is slow.
    let Decision::Call { then, .. } = w.decide(&req) else { panic!() };
    let body = json!({"id_token": w.id_token(json!({"exp": NOW + 3600 + 100})), "refresh_token": "rt-2"}).to_string();
    assert!(matches!(w.resume(&req, then, 200, &body), Decision::Forward { .. }));
    let Decision::Forward { response_cookies: slow, .. } = w.decide(&req) else { panic!() };
    assert_eq!(session_of(&w, &slow[0]).refresh_token.as_deref(), Some("rt-2"));
    // Later, while B's upstream still works, request C refreshes again (rt-3).
    w.now.set(NOW + 3600 + 80);
    let Decision::Call { then, .. } = w.decide(&req) else { panic!("within the margin: refresh") };
    let body = json!({"id_token": w.id_token(json!({})), "refresh_token": "rt-3"}).to_string();
    assert!(matches!(w.resume(&req, then, 200, &body), Decision::Forward { .. }));
    // B's response leaves now: with rt-3, not the spent rt-2.
    let push = |e| w.events.borrow_mut().push(e);
    let mut finals = finalize_response_cookies(&w.cfg, &w.ctx(&push, &w.revocations()), &req, slow);
    finals.push("theme=dark; Path=/".into());
    assert_eq!(session_of(&w, &finals[0]).refresh_token.as_deref(), Some("rt-3"));
    assert!(finals.iter().any(|c| c.starts_with("theme=dark")), "other cookies pass");
}

// === revocation and back-channel logout ===

fn logout_token(w: &World, patch: serde_json::Value) -> String {
    let mut claims = json!({
        "iss": ISSUER, "aud": "kube", "iat": w.now.get(), "exp": w.now.get() + 120, "jti": "jti-1",
        "events": {crate::token::BACKCHANNEL_LOGOUT_EVENT: {}}, "sid": "issuer-session-1", "sub": "user-1",
    });
    for (k, v) in patch.as_object().unwrap() {
        claims[k] = v.clone();
    }
    w.signer.sign_typed("RS256", Some("rsa"), "logout+jwt", &claims)
}

/// The issuer's POST, body included (what the host hands over after [`Decision::ReadBody`]).
fn backchannel(content_type: &str, body: &str) -> RequestParts {
    let mut req = request("POST", "/oauth2/backchannel_logout", &[("content-type", content_type)], &[]);
    req.body = Some(body.as_bytes().to_vec());
    req
}

fn revoke(w: &World, kind: Kind, value: &str, at: u64) {
    Cache::new(&w.store, &w.ns).update_revocations(&|set| {
        let mut next = set.clone();
        next.insert(kind, value, at);
        next
    });
}

#[test]
fn a_back_channel_logout_ends_the_sessions_of_its_sid_and_cannot_be_replayed() {
    let w = World::new();
    let cookies = w.login();
    assert!(matches!(w.decide(&browser("/app", &refs(&cookies))), Decision::Forward { .. }));

    let mut post = request(
        "POST",
        "/oauth2/backchannel_logout",
        &[("content-type", "application/x-www-form-urlencoded"), ("authorization", "Bearer x")],
        &refs(&cookies),
    );
    // The token is in the body; the headers may go upstream first (Decision::ReadBody), without credentials.
    let Decision::ReadBody { limit: MAX_LOGOUT_BODY, remove_headers } = w.decide(&post) else {
        panic!("the token is in the body")
    };
    for name in ["authorization", "cookie"] {
        assert!(remove_headers.iter().any(|h| h == name), "{name}: {remove_headers:?}");
    }
    post.body = Some(format!("logout_token={}", logout_token(&w, json!({}))).into_bytes());
    let d = w.decide(&post);
    let Decision::Deny { status: 200, headers, .. } = &d else { panic!("{d:?}") };
    assert_eq!(header(headers, "cache-control"), Some("no-store"));
    assert!(w.saw(Event::BackchannelLogout));

    // The session's next request is sent to log in again, its cookies cleared; an API call gets 401.
    let Decision::Redirect { location, set_cookies } = w.decide(&browser("/app", &refs(&cookies))) else {
        panic!("a revoked session logs in again")
    };
    assert!(location.starts_with(&format!("{ISSUER}/auth?")));
    assert!(set_cookies.iter().any(|c| c.starts_with("_tokengate=;") && c.contains("Max-Age=0")), "{set_cookies:?}");
    assert!(w.saw(Event::Revoked(Kind::Sid)));
    let xhr = request("GET", "/api", &[("accept", "application/json")], &refs(&cookies));
    assert!(matches!(w.decide(&xhr), Decision::Deny { status: 401, .. }));

    // Back-Channel Logout 1.0 §2.6: the same token again is a replay.
    let d = w.decide(&post);
    assert!(matches!(d, Decision::Deny { status: 400, reason: "replayed", .. }), "{d:?}");
}

#[test]
fn a_token_refreshed_in_an_ended_session_is_refused_although_issued_after_the_logout() {
    // The issuer ends a session at logout but another client's refresh-token family lives on (Dex's rule):
    // a refresh then mints a token with the ended session's sid and a later iat.
    let w = World::new();
    let cookies = w.login();
    w.evict_shared_cache();
    w.now.set(NOW + 60);
    let req = request("GET", "/app", &[("accept", HTML)], &refs(&cookies));
    let Decision::Call { then, .. } = w.decide(&req) else { panic!("no cached token: a refresh") };
    revoke(&w, Kind::Sid, "issuer-session-1", NOW);
    let refreshed = w.id_token(json!({"sid": "issuer-session-1", "iat": NOW + 60}));
    let resp = json!({"id_token": refreshed, "refresh_token": "rt-2"}).to_string();
    let d = w.resume(&req, then, 200, &resp);
    assert!(matches!(d, Decision::Redirect { ref location, .. } if location.starts_with(ISSUER)), "{d:?}");
    assert!(w.saw(Event::Revoked(Kind::Sid)));
}

#[test]
fn back_channel_requests_failing_a_check_get_400_and_revoke_nothing() {
    let w = World::new();
    let form = "application/x-www-form-urlencoded";
    let get = request("GET", "/oauth2/backchannel_logout", &[], &[]);
    assert!(matches!(w.decide(&get), Decision::Deny { status: 405, .. }));
    let cases = [
        (
            backchannel("application/json", &format!("{{\"logout_token\":\"{}\"}}", logout_token(&w, json!({})))),
            "content_type",
        ),
        (backchannel(form, ""), "no_logout_token"),
        (backchannel(form, "logout_token=a&logout_token=b"), "repeated_parameter"),
        (backchannel(form, "logout_token=not.a.jwt"), "malformed"),
        (
            backchannel(form, &format!("logout_token={}", logout_token(&w, json!({"aud": "another-client"})))),
            "wrong_audience",
        ),
        (backchannel(form, &format!("logout_token={}", logout_token(&w, json!({"nonce": "n"})))), "malformed"),
        (backchannel(form, &format!("logout_token={}", logout_token(&w, json!({"iat": NOW - 3600})))), "too_old"),
    ];
    for (req, reason) in cases {
        let d = w.decide(&req);
        let Decision::Deny { status: 400, reason: got, headers, body } = &d else { panic!("{reason}: {d:?}") };
        assert_eq!(*got, reason);
        assert_eq!(header(headers, "content-type"), Some("application/json"));
        assert!(body.contains("\"error\":\"invalid_request\""), "{body}");
    }
    let mut not_utf8 = backchannel(form, "");
    not_utf8.body = Some(vec![0xff, 0xfe]);
    assert!(matches!(w.decide(&not_utf8), Decision::Deny { status: 400, reason: "malformed_body", .. }));
    // What the headers give away is refused before any body is read (or any header goes upstream).
    let headers_only = |headers: &[(&str, &str)]| request("POST", "/oauth2/backchannel_logout", headers, &[]);
    let d = w.decide(&headers_only(&[("content-type", "application/json")]));
    assert!(matches!(d, Decision::Deny { status: 400, reason: "content_type", .. }), "{d:?}");
    let too_long = (MAX_LOGOUT_BODY + 1).to_string();
    let d = w.decide(&headers_only(&[("content-type", form), ("content-length", &too_long)]));
    let Decision::Deny { status: 413, headers, body, .. } = &d else { panic!("{d:?}") };
    assert_eq!(header(headers, "content-type"), Some("application/json"));
    assert!(body.contains("\"error\":\"invalid_request\"") && body.contains("16384 bytes"), "{body}");
    assert!(w.revocations().is_empty());
}

#[test]
fn a_logout_token_signed_with_a_new_key_refetches_the_keys_once() {
    let mut w = World::new();
    let token = w.signer.sign_typed("RS256", Some("rotated"), "logout+jwt", &json!({}));
    let req = backchannel("application/x-www-form-urlencoded", &format!("logout_token={token}"));
    assert_eq!(w.decide(&req), Decision::FetchKeys { jwks_only: true });
    w.keys_refetched = true;
    assert!(matches!(w.decide(&req), Decision::Deny { status: 400, reason: "unknown_kid", .. }));
    // Keys fetched moments ago (another unknown kid): no second fetch, and no final 400 either; the
    // issuer retries after a 503 (Back-Channel Logout 1.0 §2.8).
    w.keys_refetched = false;
    w.provider.as_mut().unwrap().fetched_at = NOW - 1;
    let d = w.decide(&req);
    let Decision::Deny { status: 503, headers, .. } = &d else { panic!("{d:?}") };
    assert_eq!(header(headers, "retry-after"), Some("1"));
}

#[test]
fn bearer_tokens_of_a_revoked_user_issued_before_the_revocation_get_401_invalid_token() {
    let w = World::new();
    let bearer = |token: &str| api("/api", &[("authorization", &format!("Bearer {token}"))]);
    let before = w.id_token(json!({}));
    assert!(matches!(w.decide(&bearer(&before)), Decision::Forward { .. }), "verified and cached");
    revoke(&w, Kind::Sub, "user-1", NOW);
    for token in [before.clone(), w.id_token(json!({"jti": "another"}))] {
        let d = w.decide(&bearer(&token));
        let Decision::Deny { status: 401, reason: "revoked", headers, .. } = &d else { panic!("{d:?}") };
        assert_eq!(
            header(headers, "www-authenticate"),
            Some("Bearer error=\"invalid_token\", error_description=\"token revoked\"")
        );
    }
    assert!(w.saw(Event::Revoked(Kind::Sub)));
    let later = w.id_token(json!({"iat": NOW + 1}));
    assert!(matches!(w.decide(&bearer(&later)), Decision::Forward { .. }), "a token minted after it");
    let other = w.id_token(json!({"sub": "user-2"}));
    assert!(matches!(w.decide(&bearer(&other)), Decision::Forward { .. }), "another user is untouched");
}

#[test]
fn sessions_in_a_revoked_group_or_before_revoke_all_log_in_again() {
    for (kind, value) in [(Kind::Group, "dev"), (Kind::All, "")] {
        let w = World::new();
        let cookies = w.login();
        revoke(&w, Kind::Group, "unrelated", NOW);
        assert!(matches!(w.decide(&browser("/app", &refs(&cookies))), Decision::Forward { .. }));
        revoke(&w, kind, value, NOW);
        assert!(matches!(w.decide(&browser("/app", &refs(&cookies))), Decision::Redirect { .. }), "{kind:?}");
        assert!(w.saw(Event::Revoked(kind)));
        // The tombstone keeps the old cookie out even once the entry is gone from the set.
        Cache::new(&w.store, &w.ns).update_revocations(&|_| Revocations::default());
        assert!(matches!(w.decide(&browser("/app", &refs(&cookies))), Decision::Redirect { .. }));
    }
}
