//! The local gateway: plays Envoy for `make run` and the HA and browser tests. It reads the listener, the
//! tokengate plugin and the clusters from an Envoy static configuration (`envoy/envoy.yaml`), runs every
//! request through the compiled filter in `proxy-wasm-host` (several VMs sharing one shared-data store, like
//! Envoy's worker threads), forwards what the filter lets through to the route's cluster, and serves the
//! filter's callouts as real HTTP(S) requests to the named clusters.
#![allow(clippy::print_stdout)] // a command-line program: its banner goes to stdout

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::{to_bytes, Body};
use axum::extract::{Request as AxumRequest, State};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::Response as AxumResponse;
use clap::Parser;
use tests::envoy::EnvoyConfig;
use tests::{Decision, FilterClock, Logs, Request, Response, Worker, WorkerOptions};

#[derive(Parser)]
#[command(about = "Serve an Envoy config's listener with the tokengate filter loaded in proxy-wasm-host")]
struct Args {
    /// Envoy static configuration.
    #[arg(long, default_value = "envoy/envoy.yaml")]
    envoy: PathBuf,
    /// Listen here instead of the configured listener address.
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// The filter; defaults to TOKENGATE_WASM, then the config's vm_config.code.local.filename, then the
    /// `make wasm` output under CARGO_TARGET_DIR.
    #[arg(long)]
    wasm: Option<PathBuf>,
    /// Override a cluster's address: NAME=HOST:PORT (repeatable), e.g. for tests on ephemeral ports.
    #[arg(long = "cluster", value_parser = parse_override)]
    clusters: Vec<(String, String)>,
    /// Override a key of the plugin configuration: KEY=JSON (repeatable), e.g. `issuer="http://…"`.
    #[arg(long = "set", value_parser = parse_override)]
    settings: Vec<(String, String)>,
    /// Filter VMs (Envoy worker threads) sharing one shared-data store.
    #[arg(long, default_value_t = 2)]
    workers: usize,
}

fn parse_override(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(n, a)| (n.to_owned(), a.to_owned()))
        .ok_or_else(|| format!("expected NAME=VALUE, got {s:?}"))
}

struct Gateway {
    workers: Vec<Worker>,
    next: AtomicUsize,
    upstream: String,
    http: reqwest::Client,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let mut config = EnvoyConfig::load(&args.envoy)?;
    for (name, address) in &args.clusters {
        let cluster = config
            .clusters
            .get_mut(name)
            .ok_or_else(|| format!("--cluster {name}: no such cluster in {}", args.envoy.display()))?;
        cluster.address.clone_from(address);
    }
    if !args.settings.is_empty() {
        let mut plugin: serde_json::Value = serde_json::from_str(&config.plugin_configuration)?;
        for (key, value) in &args.settings {
            let value = serde_json::from_str(value).map_err(|e| format!("--set {key}: expected JSON ({e})"))?;
            plugin[key] = value;
        }
        config.plugin_configuration = plugin.to_string();
    }
    let wasm = args
        .wasm
        .clone()
        .or_else(|| std::env::var_os("TOKENGATE_WASM").map(PathBuf::from))
        .or_else(|| Some(config.wasm.clone()).filter(|p| p.is_file()))
        .unwrap_or_else(tests::wasm_path);
    tests::preload(&wasm)?;

    let mut ca_certificates = Vec::new();
    for c in config.clusters.values() {
        if let Some(ca) = &c.trusted_ca {
            ca_certificates.push(std::fs::read(ca).map_err(|e| format!("{}: {e}", ca.display()))?);
        }
    }
    let clusters = config.clusters.iter().map(|(n, c)| (n.clone(), c.base_url())).collect::<tests::Clusters>();
    let store = tests::shared_store();
    let logs = Logs::echoing();
    let mut workers = Vec::new();
    for _ in 0..args.workers.max(1) {
        let options = WorkerOptions {
            clusters: clusters.clone(),
            clock: FilterClock::system(),
            store: store.clone(),
            logs: logs.clone(),
            ca_certificates: ca_certificates.clone(),
            responder: None,
        };
        workers.push(Worker::start(&config.plugin_configuration, options).await?);
    }
    let gateway = Arc::new(Gateway {
        workers,
        next: AtomicUsize::new(0),
        upstream: config.clusters[&config.route_cluster].base_url(),
        http: reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build()?,
    });
    for i in 0..gateway.workers.len() {
        let g = gateway.clone();
        tokio::spawn(async move {
            let period = g.workers[i].tick_period().unwrap_or(Duration::from_secs(1));
            let mut tick = tokio::time::interval(period);
            loop {
                tick.tick().await;
                if let Err(e) = g.workers[i].tick().await {
                    eprintln!("gateway: tick failed: {e}");
                }
            }
        });
    }

    let listen = args.listen.unwrap_or(config.listen);
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let app = axum::Router::new().fallback(handle).with_state(gateway);
    println!(
        "gateway: listening on http://{} ({} filter VMs, upstream {})",
        listener.local_addr()?,
        args.workers.max(1),
        config.route_cluster
    );
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}

const HOP_BY_HOP: &[&str] =
    &["connection", "keep-alive", "transfer-encoding", "upgrade", "proxy-connection", "te", "trailer"];

/// Whether the filter sees this request header. Like Envoy's HTTP connection manager, hop-by-hop headers
/// are not passed on, except `upgrade` and `connection` on an upgrade request (a WebSocket handshake).
fn reaches_filter(name: &str, upgrade: bool) -> bool {
    name != "host" && (!HOP_BY_HOP.contains(&name) || (upgrade && (name == "upgrade" || name == "connection")))
}

async fn handle(State(g): State<Arc<Gateway>>, req: AxumRequest) -> AxumResponse {
    let started = Instant::now();
    let (parts, body) = req.into_parts();
    let method = parts.method.to_string();
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str()).to_owned();
    let authority = parts.headers.get("host").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    let upgrade = parts.headers.contains_key("upgrade");
    // Bytes end to end, as Envoy hands them to the module: no lossy conversion of values.
    let headers = parts
        .headers
        .iter()
        .filter(|(k, _)| reaches_filter(k.as_str(), upgrade))
        .map(|(k, v)| (k.as_str().as_bytes().to_vec(), v.as_bytes().to_vec()))
        .collect();
    let Ok(body) = to_bytes(body, 16 * 1024 * 1024).await else {
        return plain(StatusCode::PAYLOAD_TOO_LARGE, "request body too large\n");
    };
    let request = Request {
        method: method.clone(),
        path: path.clone().into_bytes(),
        authority,
        scheme: "http".into(),
        headers,
        body: body.to_vec(),
    };
    let worker = &g.workers[g.next.fetch_add(1, Ordering::Relaxed) % g.workers.len()];
    let response = match worker.request(request).await {
        Ok(Decision::Respond(r)) => r,
        Ok(Decision::Forward(f)) => match forward(&g, &f).await {
            Ok(upstream) => worker.respond(f, upstream).unwrap_or_else(|e| filter_failed(&e)),
            Err(e) => {
                let _ = worker.abandon(f);
                eprintln!("gateway: upstream failed: {e}");
                Response {
                    status: 503,
                    headers: vec![(b"content-type".to_vec(), b"text/plain".to_vec())],
                    body: b"upstream unavailable\n".to_vec(),
                }
            }
        },
        Err(e) => filter_failed(&e),
    };
    eprintln!(
        "gateway: {method} {} -> {} ({} ms)",
        path.split('?').next().unwrap_or(""),
        response.status,
        started.elapsed().as_millis()
    );
    to_axum(response)
}

fn filter_failed(e: &tests::HostError) -> Response {
    eprintln!("gateway: filter failed: {e}");
    Response {
        status: 500,
        headers: vec![(b"content-type".to_vec(), b"text/plain".to_vec())],
        body: b"filter failed\n".to_vec(),
    }
}

async fn forward(g: &Gateway, f: &tests::Forwarded) -> Result<Response, reqwest::Error> {
    let headers = f.headers();
    let get = |name: &str| tests::header_value(&headers, name).map(str::to_owned);
    let method =
        reqwest::Method::from_bytes(get(":method").unwrap_or_default().as_bytes()).unwrap_or(reqwest::Method::GET);
    let mut req = g.http.request(method, format!("{}{}", g.upstream, get(":path").unwrap_or_else(|| "/".into())));
    for (k, v) in &headers {
        let hop = std::str::from_utf8(k).is_ok_and(|k| HOP_BY_HOP.contains(&k));
        if k.starts_with(b":") || hop {
            continue;
        }
        if let (Ok(k), Ok(v)) = (HeaderName::from_bytes(k), HeaderValue::from_bytes(v)) {
            req = req.header(k, v);
        }
    }
    if let Some(authority) = get(":authority") {
        req = req.header("x-forwarded-host", authority);
    }
    let resp = req.body(f.body().to_vec()).send().await?;
    let status = resp.status().as_u16();
    let headers = resp
        .headers()
        .iter()
        .filter(|(k, _)| !HOP_BY_HOP.contains(&k.as_str()) && k.as_str() != "content-length")
        .map(|(k, v)| (k.as_str().as_bytes().to_vec(), v.as_bytes().to_vec()))
        .collect();
    let body = resp.bytes().await?.to_vec();
    Ok(Response { status, headers, body })
}

fn plain(status: StatusCode, text: &'static str) -> AxumResponse {
    let mut r = AxumResponse::new(Body::from(text));
    *r.status_mut() = status;
    r
}

fn to_axum(r: Response) -> AxumResponse {
    let mut out = AxumResponse::new(Body::from(r.body));
    *out.status_mut() = StatusCode::from_u16(r.status).unwrap_or(StatusCode::BAD_GATEWAY);
    for (k, v) in r.headers {
        if let (Ok(k), Ok(v)) = (HeaderName::from_bytes(&k), HeaderValue::from_bytes(&v)) {
            out.headers_mut().append(k, v);
        }
    }
    out
}
