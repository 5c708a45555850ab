//! The filter's decision core (`filter::flow`) run natively on the same requests, with shared data as a
//! `HashMap`: what the request costs without wasm and without the host's ABI calls, for the ratio and
//! to tell the guest's logic from the host's overhead.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use filter::cache::{Cache, ClaimsMemo, MemoryStore};
use filter::callout::CalloutResponse;
use filter::config::FilterConfig;
use filter::discovery::Provider;
use filter::flow::{self, Ctx, Decision, IssuerState};
use filter::random::SystemRandom;
use filter::request::RequestParts;
use filter::revocation::Revocations;

use crate::issuer::{self, GATEWAY_HOST};
use crate::stats::Summary;

/// One filter configuration, its provider and its shared data, natively.
pub(crate) struct NativeFilter {
    cfg: FilterConfig,
    ns: String,
    provider: Provider,
    store: MemoryStore,
    memo: ClaimsMemo,
    rng: SystemRandom,
    issuer_url: String,
    /// This "worker's" copy of the revocation set (empty unless a case fills it).
    pub(crate) revocations: Revocations,
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

fn headers(method: &str, path: &str, extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut h = vec![
        (":method".to_owned(), method.to_owned()),
        (":path".to_owned(), path.to_owned()),
        (":authority".to_owned(), GATEWAY_HOST.to_owned()),
        (":scheme".to_owned(), "http".to_owned()),
    ];
    h.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    h
}

impl IssuerState for NativeFilter {
    fn provider(&self) -> Option<&Provider> {
        Some(&self.provider)
    }

    fn issuer_down(&self) -> bool {
        false
    }
}

impl NativeFilter {
    /// Parses `config` and fetches the issuer's discovery document and keys, as the root context does.
    pub(crate) async fn new(config: &str, issuer_url: &str) -> anyhow::Result<NativeFilter> {
        let cfg = FilterConfig::parse(config.as_bytes()).map_err(|e| anyhow::anyhow!("filter config: {e:?}"))?;
        let http = reqwest::Client::new();
        let meta = http.get(format!("{issuer_url}/.well-known/openid-configuration")).send().await?.bytes().await?;
        let metadata = filter::discovery::parse_metadata(&meta, issuer_url).map_err(|e| anyhow::anyhow!("{e}"))?;
        let jwks_json = http.get(&metadata.jwks_uri).send().await?.text().await?;
        let jwks = filter::discovery::parse_jwks(jwks_json.as_bytes()).map_err(|e| anyhow::anyhow!("{e}"))?;
        let provider = Provider { metadata, jwks, jwks_json, fetched_at: unix_now() };
        Ok(NativeFilter {
            ns: filter::cache::namespace(&cfg.issuer, &cfg.client_id),
            cfg,
            provider,
            store: MemoryStore::default(),
            memo: ClaimsMemo::default(),
            rng: SystemRandom::new(),
            issuer_url: issuer_url.to_owned(),
            revocations: Revocations::default(),
        })
    }

    fn with_ctx<T>(&self, f: impl FnOnce(&Ctx<'_>) -> T) -> T {
        let ctx = Ctx {
            now: SystemTime::now(),
            issuer: self,
            cache: Cache::new(&self.store, &self.ns),
            claims: &self.memo,
            rng: &self.rng,
            events: &|_| {},
            keys_refetched: false,
            revocations: &self.revocations,
        };
        f(&ctx)
    }

    /// What the filter does with one request's headers: parse them and decide.
    pub(crate) fn decide(&self, headers: Vec<(String, String)>) -> Decision {
        let req = RequestParts::from_headers(headers);
        self.with_ctx(|ctx| flow::decide(&self.cfg, ctx, &req))
    }

    /// Times `n` decisions on the headers `make` builds (after `n / 10` untimed); each must forward.
    pub(crate) fn repeated(&self, n: usize, make: impl Fn() -> Vec<(String, String)>) -> anyhow::Result<Summary> {
        Ok(Summary::of(&mut self.samples(n, make)?))
    }

    /// The `n` timings behind [`NativeFilter::repeated`].
    pub(crate) fn samples(&self, n: usize, make: impl Fn() -> Vec<(String, String)>) -> anyhow::Result<Vec<Duration>> {
        let mut samples = Vec::with_capacity(n);
        for i in 0..n + n / 10 {
            let h = make();
            let start = Instant::now();
            let d = self.decide(h);
            let took = start.elapsed();
            if !matches!(d, Decision::Forward { .. }) {
                bail!("the native core did not forward: {d:?}");
            }
            if i >= n / 10 {
                samples.push(took);
            }
        }
        Ok(samples)
    }

    /// A bearer request's headers.
    pub(crate) fn api(token: &str) -> Vec<(String, String)> {
        headers("GET", "/api/v1/pods", &[("authorization", &format!("Bearer {token}")), ("accept", "application/json")])
    }

    /// A navigation with `cookie`.
    pub(crate) fn page(cookie: &str) -> Vec<(String, String)> {
        headers("GET", "/", &[("accept", "text/html,application/xhtml+xml"), ("cookie", cookie)])
    }

    /// A whole browser login through the native core: the cookie header of the new session.
    pub(crate) async fn session_cookie(&self) -> anyhow::Result<String> {
        let (location, set_cookies) = match self.decide(headers("GET", "/", &[("accept", "text/html")])) {
            Decision::Redirect { location, set_cookies } => (location, set_cookies),
            d => bail!("expected a redirect to the issuer, got {d:?}"),
        };
        let jar = |cookies: &[String]| {
            cookies
                .iter()
                .filter_map(|c| c.split(';').next())
                .filter(|p| !p.ends_with('='))
                .collect::<Vec<_>>()
                .join("; ")
        };
        let back = issuer::sign_in(&issuer::browser(), &location).await?;
        let callback = back.strip_prefix(&format!("http://{GATEWAY_HOST}")).context("back to the gateway")?.to_owned();
        let flow_cookie = jar(&set_cookies);
        let req_headers = headers("GET", &callback, &[("accept", "text/html"), ("cookie", &flow_cookie)]);
        let (callout, then) = match self.decide(req_headers.clone()) {
            Decision::Call { callout, then } => (callout, then),
            d => bail!("expected the code exchange, got {d:?}"),
        };
        let http = reqwest::Client::new();
        let mut call = http.post(format!("{}{}", self.issuer_url, callout.path)).timeout(Duration::from_secs(5));
        for (k, v) in &callout.headers {
            call = call.header(k.as_str(), v.as_str());
        }
        let answer = call.body(callout.body.clone().unwrap_or_default()).send().await?;
        let resp = CalloutResponse { status: answer.status().as_u16(), body: answer.bytes().await?.to_vec() };
        let req = RequestParts::from_headers(req_headers);
        match self.with_ctx(|ctx| flow::resume(&self.cfg, ctx, &req, then, &resp)) {
            Decision::Redirect { set_cookies, .. } => Ok(jar(&set_cookies)),
            d => bail!("expected the session to start, got {d:?}"),
        }
    }
}
