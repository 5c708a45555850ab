//! The load generator for the token endpoint: N keep-alive HTTP/1.1 connections on one thread, each
//! chaining its own refresh tokens (rotation means every grant needs the token the previous one
//! returned). Password logins are driven the same way, one browser sign-in after another.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};

use crate::issuer::{self, CLIENT_ID, CLIENT_SECRET};
use crate::process::cpu_seconds;
use crate::stats::Summary;

/// Throughput and latency of one load phase.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub(crate) struct Throughput {
    /// Completed operations per second in the measured window.
    pub(crate) per_sec: f64,
    /// Their latency.
    pub(crate) latency: Summary,
    /// Concurrent connections (or sign-ins).
    pub(crate) concurrency: usize,
    /// Length of the measured window, seconds.
    pub(crate) seconds: f64,
    /// Failed operations.
    pub(crate) errors: u64,
    /// CPU the server used in the window: cores on average, and milliseconds per operation.
    pub(crate) server_cores: f64,
    pub(crate) server_cpu_ms: f64,
    /// The same for this load client.
    pub(crate) client_cores: f64,
    pub(crate) client_cpu_ms: f64,
}

/// CPU seconds of the server and of this process, sampled at the start and the end of the window.
pub(crate) async fn cpu_in_window(server_pid: u32, from: Instant, end: Instant) -> (f64, f64) {
    tokio::time::sleep_until(from.into()).await;
    let (s0, c0) = (cpu_seconds(server_pid), cpu_seconds(0));
    tokio::time::sleep_until(end.into()).await;
    (cpu_seconds(server_pid) - s0, cpu_seconds(0) - c0)
}

impl Throughput {
    /// Adds the CPU the server and this process used in the window.
    pub(crate) fn with_cpu(mut self, (server, client): (f64, f64)) -> Throughput {
        let ops = (self.per_sec * self.seconds).max(1.0);
        self.server_cores = server / self.seconds;
        self.client_cores = client / self.seconds;
        self.server_cpu_ms = server * 1e3 / ops;
        self.client_cpu_ms = client * 1e3 / ops;
        self
    }
}

/// How long to warm up and measure.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Window {
    pub(crate) warmup: Duration,
    pub(crate) measure: Duration,
}

/// One keep-alive HTTP/1.1 connection to `addr`.
pub(crate) async fn connect(addr: SocketAddr) -> anyhow::Result<SendRequest<Full<Bytes>>> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    Ok(sender)
}

fn addr_of(base: &str) -> anyhow::Result<SocketAddr> {
    base.trim_start_matches("http://").trim_end_matches('/').parse().with_context(|| format!("not host:port: {base}"))
}

#[derive(Deserialize)]
struct Refreshed {
    refresh_token: String,
}

/// One connection's refresh chain until `end`: latencies of the grants that completed inside
/// `[from, end)`, and the number of failures.
async fn refresh_chain(
    addr: SocketAddr,
    authorization: String,
    mut token: String,
    from: Instant,
    end: Instant,
) -> anyhow::Result<Vec<Duration>> {
    let mut sender = connect(addr).await?;
    let host = addr.to_string();
    let mut samples = Vec::new();
    while Instant::now() < end {
        let body = format!(
            "grant_type=refresh_token&refresh_token={}",
            url::form_urlencoded::byte_serialize(token.as_bytes()).collect::<String>()
        );
        let request = hyper::Request::post("/token")
            .header("host", &host)
            .header("authorization", &authorization)
            .header("content-type", "application/x-www-form-urlencoded")
            .header("accept", "application/json")
            .body(Full::new(Bytes::from(body)))?;
        let start = Instant::now();
        sender.ready().await?;
        let response = sender.send_request(request).await?;
        let status = response.status();
        let bytes = response.into_body().collect().await?.to_bytes();
        let done = Instant::now();
        if status != 200 {
            // The chain is broken: a benchmark with failures would measure something else.
            bail!("refresh answered {status}: {}", String::from_utf8_lossy(&bytes));
        }
        token = serde_json::from_slice::<Refreshed>(&bytes)?.refresh_token;
        if done >= from && done < end {
            samples.push(done - start);
        }
    }
    Ok(samples)
}

/// Chains refreshes from each of `tokens` (one connection each) against `base`'s `/token`.
pub(crate) async fn refreshes(
    base: &str,
    server_pid: u32,
    tokens: Vec<String>,
    window: Window,
) -> anyhow::Result<Throughput> {
    let addr = addr_of(base)?;
    let authorization = format!("Basic {}", STANDARD.encode(format!("{CLIENT_ID}:{CLIENT_SECRET}")));
    let concurrency = tokens.len();
    let from = Instant::now() + window.warmup;
    let end = from + window.measure;
    let tasks: Vec<_> =
        tokens.into_iter().map(|t| tokio::spawn(refresh_chain(addr, authorization.clone(), t, from, end))).collect();
    let cpu = tokio::spawn(cpu_in_window(server_pid, from, end));
    let mut samples = Vec::new();
    for t in tasks {
        samples.extend(t.await??);
    }
    let per_sec = samples.len() as f64 / window.measure.as_secs_f64();
    let seconds = window.measure.as_secs_f64();
    let t = Throughput { per_sec, latency: Summary::of(&mut samples), concurrency, seconds, ..Throughput::default() };
    Ok(t.with_cpu(cpu.await?))
}

/// `n` refresh tokens from our issuer, each from its own sign-in and code exchange, `parallel` at a time.
pub(crate) async fn initial_refresh_tokens(base: &str, n: usize, parallel: usize) -> anyhow::Result<Vec<String>> {
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let batch = parallel.min(n - out.len());
        let tasks: Vec<_> = (0..batch)
            .map(|_| {
                let base = base.to_owned();
                tokio::spawn(async move { issuer::tokens(&base).await })
            })
            .collect();
        for t in tasks {
            let v = t.await??;
            out.push(v["refresh_token"].as_str().context("no refresh_token in the code exchange")?.to_owned());
        }
    }
    Ok(out)
}

/// Browser sign-ins (`GET /auth`, `GET /login`, `POST /login` with the password), `concurrency` at a time.
pub(crate) async fn logins(
    base: &str,
    server_pid: u32,
    concurrency: usize,
    window: Window,
) -> anyhow::Result<Throughput> {
    let from = Instant::now() + window.warmup;
    let end = from + window.measure;
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| {
            let url = issuer::auth_url(base);
            tokio::spawn(async move {
                let mut samples = Vec::new();
                let mut errors = 0u64;
                while Instant::now() < end {
                    let start = Instant::now();
                    // A browser of its own each time: one that kept the issuer's session cookie would be signed
                    // in silently (single sign-on), and this measures the password login.
                    let browser = issuer::browser();
                    let ok = issuer::sign_in(&browser, &url).await.and_then(|l| issuer::code_of(&l)).is_ok();
                    let done = Instant::now();
                    if !ok {
                        errors += 1;
                    } else if done >= from && done < end {
                        samples.push(done - start);
                    }
                }
                (samples, errors)
            })
        })
        .collect();
    let cpu = tokio::spawn(cpu_in_window(server_pid, from, end));
    let mut samples = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (s, e) = t.await?;
        samples.extend(s);
        errors += e;
    }
    let per_sec = samples.len() as f64 / window.measure.as_secs_f64();
    let seconds = window.measure.as_secs_f64();
    let t = Throughput {
        per_sec,
        latency: Summary::of(&mut samples),
        concurrency,
        seconds,
        errors,
        ..Throughput::default()
    };
    Ok(t.with_cpu(cpu.await?))
}
