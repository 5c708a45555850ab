//! The filter benchmarks, run in a child process per module (the host compiles one module per process):
//! each request's callbacks (`Worker::request` + `Worker::respond`) timed with `Instant` in the wasmtime
//! host the e2e tests use, for the no-op module and for `filter.wasm` against real issuers; and the same
//! JWT verifications done natively with `filter::token::verify`.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tests::{Decision, FilterClock, Logs, Request, Response, Worker, WorkerOptions};

use crate::issuer::{self, CLIENT_ID, CLIENT_SECRET, GATEWAY_HOST};
use crate::stats::Summary;

pub(crate) mod native_core;

use native_core::NativeFilter;

/// How many requests each case times.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Sizes {
    /// Requests for the repeated cases (no-op, session, cache hit).
    pub(crate) repeated: usize,
    /// Distinct tokens per algorithm for the first-sight cases.
    pub(crate) first_sight: usize,
}

/// One measured case.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Case {
    /// What was measured.
    pub(crate) name: String,
    /// In the wasm host, per request.
    pub(crate) wasm: Summary,
    /// The same work natively: `filter::token::verify` for first-sight tokens, `filter::flow::decide` on a
    /// `HashMap` store for the repeated cases.
    pub(crate) native: Option<Summary>,
}

/// What a filter child reports.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct FilterOutput {
    pub(crate) cases: Vec<Case>,
    /// Metric checks that prove each case took the path it claims.
    pub(crate) checks: Vec<String>,
}

const SECRET: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

fn options(clusters: &[(&str, &str)]) -> WorkerOptions {
    WorkerOptions {
        clusters: clusters.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        clock: FilterClock::system(),
        store: tests::shared_store(),
        logs: Arc::new(Logs::default()),
        ca_certificates: vec![],
        responder: None,
    }
}

pub(crate) fn filter_config(issuer: &str) -> String {
    json!({
        "issuer": issuer,
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "cluster": "issuer",
        "cookie_secrets": [SECRET],
        "cookie": {"secure": false},
        "claims_to_headers": {"email": "x-auth-request-email", "groups": "x-auth-request-groups"},
    })
    .to_string()
}

fn api(token: &str) -> Request {
    Request::get(GATEWAY_HOST, "/api/v1/pods")
        .header("authorization", &format!("Bearer {token}"))
        .header("accept", "application/json")
}

fn upstream_ok() -> Response {
    Response { status: 200, headers: vec![("content-type".into(), "text/plain".into())], body: b"hello".to_vec() }
}

/// Times one request through the filter's callbacks; it must be let through.
async fn timed(worker: &Worker, request: Request) -> anyhow::Result<Duration> {
    let upstream = upstream_ok();
    let start = Instant::now();
    match worker.request(request).await? {
        Decision::Forward(f) => {
            worker.respond(f, upstream)?;
        }
        Decision::Respond(r) => bail!("the filter answered {} instead of forwarding: {}", r.status, r.text()),
    }
    Ok(start.elapsed())
}

/// Times `n` requests made by `make`, after `n / 10` untimed ones.
async fn repeated(worker: &Worker, n: usize, make: impl Fn() -> Request) -> anyhow::Result<Summary> {
    Ok(Summary::of(&mut samples(worker, n, make).await?))
}

/// The `n` timings behind [`repeated`].
pub(crate) async fn samples(worker: &Worker, n: usize, make: impl Fn() -> Request) -> anyhow::Result<Vec<Duration>> {
    for _ in 0..n / 10 {
        timed(worker, make()).await?;
    }
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        samples.push(timed(worker, make()).await?);
    }
    Ok(samples)
}

/// The no-op module: the same bearer request shape as the cache-hit case.
pub(crate) async fn run_noop(wasm: &Path, sizes: Sizes) -> anyhow::Result<FilterOutput> {
    tests::preload(wasm).map_err(anyhow::Error::msg)?;
    let worker = Worker::start("{}", options(&[])).await?;
    let token = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl";
    let summary = repeated(&worker, sizes.repeated, || api(token)).await?;
    Ok(FilterOutput {
        cases: vec![Case { name: "no-op filter (host baseline)".into(), wasm: summary, native: None }],
        checks: vec![],
    })
}

/// A whole browser login through the filter: the cookie header of the new session.
pub(crate) async fn session_cookie(worker: &Worker) -> anyhow::Result<String> {
    let mut jar: Vec<(String, String)> = Vec::new();
    let store = |jar: &mut Vec<(String, String)>, r: &Response| {
        for c in r.headers_named("set-cookie") {
            let pair = c.split(';').next().unwrap_or_default();
            if let Some((name, value)) = pair.split_once('=') {
                jar.retain(|(n, _)| n != name.trim());
                if !value.is_empty() && !c.to_ascii_lowercase().contains("max-age=0") {
                    jar.push((name.trim().to_owned(), value.trim().to_owned()));
                }
            }
        }
    };
    let header =
        |jar: &Vec<(String, String)>| jar.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("; ");
    let r = worker.exchange(Request::get(GATEWAY_HOST, "/").navigation(), |_| upstream_ok()).await?;
    if r.status != 302 {
        bail!("a browser without a session should be redirected, got {}", r.status);
    }
    store(&mut jar, &r);
    let auth = r.header("location").context("no location")?.to_owned();
    let back = issuer::sign_in(&issuer::browser(), &auth).await?;
    let callback = back
        .strip_prefix(&format!("http://{GATEWAY_HOST}"))
        .context("the issuer sends the browser back to the gateway")?;
    let r = worker
        .exchange(Request::get(GATEWAY_HOST, callback).navigation().header("cookie", &header(&jar)), |_| upstream_ok())
        .await?;
    if r.status != 302 {
        bail!("the callback should start a session, got {}: {}", r.status, r.text());
    }
    store(&mut jar, &r);
    Ok(header(&jar))
}

/// `n` distinct ID tokens from `issuer` (one login, then a chain of refreshes) and its JWKS document.
async fn id_tokens(issuer_url: &str, n: usize) -> anyhow::Result<(Vec<String>, Vec<u8>)> {
    let first = issuer::tokens(issuer_url).await?;
    let mut refresh = first["refresh_token"].as_str().context("no refresh token")?.to_owned();
    let http = reqwest::Client::new();
    let mut tokens = Vec::with_capacity(n);
    while tokens.len() < n {
        let t = issuer::refresh(&http, issuer_url, &refresh).await?;
        refresh = t["refresh_token"].as_str().context("no refresh token")?.to_owned();
        tokens.push(t["id_token"].as_str().context("no id token")?.to_owned());
    }
    let jwks = http.get(format!("{issuer_url}/keys")).send().await?.bytes().await?.to_vec();
    Ok((tokens, jwks))
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// Verifies every token natively, as the filter's core does inside the wasm.
fn native(tokens: &[String], jwks: &[u8], issuer_url: &str) -> anyhow::Result<Summary> {
    let jwks = filter::discovery::parse_jwks(jwks).map_err(|e| anyhow::anyhow!("JWKS: {e}"))?;
    let audiences: Vec<String> = vec![];
    let want = filter::token::Expectations {
        issuer: issuer_url,
        client_id: CLIENT_ID,
        audiences: &audiences,
        nonce: None,
        clock_skew: Duration::from_secs(60),
        now: unix_now(),
    };
    for t in tokens.iter().take(20) {
        filter::token::verify(t, &jwks, &want).map_err(|e| anyhow::anyhow!("native verify: {e}"))?;
    }
    let mut samples = Vec::with_capacity(tokens.len());
    for t in tokens {
        let start = Instant::now();
        let verified = filter::token::verify(t, &jwks, &want);
        samples.push(start.elapsed());
        verified.map_err(|e| anyhow::anyhow!("native verify: {e}"))?;
    }
    Ok(Summary::of(&mut samples))
}

/// Runs one repeated case (`session` or `cached`) for `seconds` against an RS256 issuer, for a profiler
/// attached to this process; returns how many requests went through.
/// With `control` (a `perf record --control` FIFO), the profiler records only the loop.
pub(crate) async fn run_profile(
    wasm: &Path,
    issuer_bin: &Path,
    work: &Path,
    case: &str,
    seconds: u64,
    control: Option<&Path>,
) -> anyhow::Result<u64> {
    tests::preload(wasm).map_err(anyhow::Error::msg)?;
    let mut server = issuer::start(issuer_bin, &work.join("profile-issuer"), "RS256", "jwt").await?;
    let result = async {
        let worker = Worker::start(&filter_config(&server.url), options(&[("issuer", &server.url)])).await?;
        let make: Box<dyn Fn() -> Request> = match case {
            "session" => {
                let cookie = session_cookie(&worker).await?;
                Box::new(move || Request::get(GATEWAY_HOST, "/").navigation().header("cookie", &cookie))
            }
            "cached" => {
                let (tokens, _) = id_tokens(&server.url, 1).await?;
                let token = tokens[0].clone();
                Box::new(move || api(&token))
            }
            other => bail!("no profile case {other:?} (session, cached)"),
        };
        let perf = |command: &str| -> anyhow::Result<()> {
            if let Some(fifo) = control {
                std::fs::write(fifo, command)?;
            }
            Ok(())
        };
        perf("enable\n")?;
        let end = Instant::now() + Duration::from_secs(seconds);
        let mut n = 0u64;
        while Instant::now() < end {
            for _ in 0..100 {
                timed(&worker, make()).await?;
            }
            n += 100;
        }
        perf("disable\n")?;
        anyhow::Ok(n)
    }
    .await;
    server.stop().await;
    result
}

/// `filter.wasm` against one issuer per algorithm (started from `issuer_bin` under `work`).
pub(crate) async fn run_filter(
    wasm: &Path,
    issuer_bin: &Path,
    work: &Path,
    sizes: Sizes,
) -> anyhow::Result<FilterOutput> {
    tests::preload(wasm).map_err(anyhow::Error::msg)?;
    let mut out = FilterOutput::default();
    for alg in ["RS256", "ES256", "EdDSA"] {
        let mut server = issuer::start(issuer_bin, &work.join(format!("filter-issuer-{alg}")), alg, "jwt").await?;
        let result = filter_against(&server.url, alg, sizes, &mut out).await;
        server.stop().await;
        result?;
    }
    Ok(out)
}

async fn filter_against(issuer_url: &str, alg: &str, sizes: Sizes, out: &mut FilterOutput) -> anyhow::Result<()> {
    let worker = Worker::start(&filter_config(issuer_url), options(&[("issuer", issuer_url)])).await?;
    let (tokens, jwks) = id_tokens(issuer_url, sizes.first_sight + 1).await?;

    if alg == "RS256" {
        let core = NativeFilter::new(&filter_config(issuer_url), issuer_url).await?;
        let native_cookie = core.session_cookie().await?;
        let native_session = core.repeated(sizes.repeated, || NativeFilter::page(&native_cookie))?;
        let native_cached = core.repeated(sizes.repeated, || NativeFilter::api(&tokens[sizes.first_sight]))?;

        let cookie = session_cookie(&worker).await?;
        let hits = worker.metric("tokengate.session_cache_hits");
        let session = repeated(&worker, sizes.repeated, || {
            Request::get(GATEWAY_HOST, "/").navigation().header("cookie", &cookie)
        })
        .await?;
        let hits = worker.metric("tokengate.session_cache_hits") - hits;
        out.checks.push(format!(
            "valid session: {hits} session-cache hits for {} requests",
            sizes.repeated + sizes.repeated / 10
        ));
        out.cases.push(Case {
            name: "valid session (ID token in shared data)".into(),
            wasm: session,
            native: Some(native_session),
        });

        let cached = &tokens[sizes.first_sight];
        let misses = worker.metric("tokengate.bearer_cache_misses");
        timed(&worker, api(cached)).await?;
        let hits = worker.metric("tokengate.bearer_cache_hits");
        let summary = repeated(&worker, sizes.repeated, || api(cached)).await?;
        let hits = worker.metric("tokengate.bearer_cache_hits") - hits;
        let misses = worker.metric("tokengate.bearer_cache_misses") - misses;
        out.checks.push(format!("cached bearer: {hits} cache hits, {misses} miss (the first request)"));
        out.cases.push(Case {
            name: "bearer token, cached (RS256)".into(),
            wasm: summary,
            native: Some(native_cached),
        });
    }

    let misses = worker.metric("tokengate.bearer_cache_misses");
    let mut samples = Vec::with_capacity(sizes.first_sight);
    for t in &tokens[..sizes.first_sight] {
        samples.push(timed(&worker, api(t)).await?);
    }
    let misses = worker.metric("tokengate.bearer_cache_misses") - misses;
    out.checks.push(format!("first-sight {alg}: {misses} cache misses for {} distinct tokens", sizes.first_sight));
    let wasm = Summary::of(&mut samples);
    let native = native(&tokens[..sizes.first_sight], &jwks, issuer_url)?;
    out.cases.push(Case { name: format!("bearer token, first sight, {alg}"), wasm, native: Some(native) });
    Ok(())
}
