//! A proxy-wasm host for the compiled filter: loads `filter.wasm` into the `proxy-wasm-host` crate
//! (wasmtime), plays the ABI callbacks for each request the way Envoy's HTTP filter chain does, and serves
//! the filter's `dispatch_http_call`s as real HTTP requests to named clusters. The end-to-end tests and the
//! local gateway both drive the filter through this module, so they exercise exactly what Envoy would load.
//!
//! What Envoy does and this host does itself, because the crate leaves it to the embedder: lower-case
//! header names with pseudo-headers first, `:status` on responses, callout timeouts, the tick timer, and
//! resuming a paused request. Known differences from Envoy are listed in `tests/README.md`.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use proxy_wasm_host::abi::v0_2_1::types::{Action, BufferType, LogLevel, MapType, MetricType, Status, StreamType};
use proxy_wasm_host::abi::v0_2_1::{
    Access, CalloutId, Callouts, Clock, ContextId, Guest, GuestError, HeaderPairs, Host, HttpCall, HttpCallRefusal,
    HttpCallResponse, InMemoryStore, Invocation, LocalResponse, LogContext, LogSink, PluginConfig, SharedServices,
    Started, StreamKind, StreamState, VmServices,
};
use proxy_wasm_host::{Buffer, EngineConfig, HeaderMap, HeaderMapExt, Limits, Module, VecHeaderMap};

pub mod envoy;
pub mod fuzz;

/// Where the filter was built: `TOKENGATE_WASM`, else `$CARGO_TARGET_DIR` (or the workspace's
/// `target/`) + `wasm32-wasip1/release/filter.wasm`, which `make wasm` writes.
pub fn wasm_path() -> PathBuf {
    if let Some(p) = std::env::var_os("TOKENGATE_WASM") {
        return PathBuf::from(p);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
    target.join("wasm32-wasip1/release/filter.wasm")
}

struct Compiled {
    host: Host,
    module: Module,
}

static COMPILED: OnceLock<Result<Compiled, String>> = OnceLock::new();

/// Compiles the filter from `path` now (instead of from [`wasm_path`] on first use). Returns the error
/// of the compilation that happened first, whichever path it used.
pub fn preload(path: &std::path::Path) -> Result<(), String> {
    compile(path.to_path_buf()).map(|_| ())
}

/// The filter, compiled once per process (Cranelift compilation is the expensive step).
fn compiled() -> Result<&'static Compiled, String> {
    compile(wasm_path())
}

fn compile(path: PathBuf) -> Result<&'static Compiled, String> {
    COMPILED
        .get_or_init(|| {
            let bytes = std::fs::read(&path)
                .map_err(|e| format!("cannot read {} ({e}); build it with `make wasm`", path.display()))?;
            // External ticks: no epoch thread, so a slow CI machine never trips the per-call CPU budget.
            let engine = EngineConfig::new().with_external_ticks(true).build().map_err(|e| e.to_string())?;
            let host = Host::new(&engine).map_err(|e| e.to_string())?;
            let module = Module::new(&engine, &bytes).map_err(|e| format!("compiling {}: {e}", path.display()))?;
            Ok(Compiled { host, module })
        })
        .as_ref()
        .map_err(Clone::clone)
}

/// Shared data as Envoy keeps it: proxy-wasm-host's store with its key cap (4,096 by default) and its value
/// cap (64 KiB) lifted to far beyond anything the filter stores, since Envoy's has neither. The largest
/// value is the revocation set (about 60 bytes per entry: 600 KB for 10,000 revocations).
pub fn shared_store() -> Arc<InMemoryStore> {
    let limits = proxy_wasm_host::abi::v0_2_1::InMemoryStoreLimits::new().with_keys(1 << 24).with_value_bytes(64 << 20);
    Arc::new(InMemoryStore::new().with_limits(limits))
}

// === clock ===

/// The filter's clock: the system clock, or a frozen one that only `advance` moves (tests).
#[derive(Default)]
pub struct FilterClock {
    offset_ns: AtomicI64,
    frozen: bool,
}

fn system_ns() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as i64).unwrap_or(0)
}

impl FilterClock {
    /// Follows the system clock.
    pub fn system() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Stopped at `unix_ms`.
    pub fn frozen_at(unix_ms: i64) -> Arc<Self> {
        Arc::new(Self { offset_ns: AtomicI64::new(unix_ms * 1_000_000), frozen: true })
    }

    /// Moves the clock forward.
    pub fn advance(&self, by: Duration) {
        self.offset_ns.fetch_add(by.as_nanos() as i64, Ordering::SeqCst);
    }

    fn now_ns(&self) -> u64 {
        let base = if self.frozen { 0 } else { system_ns() };
        (base + self.offset_ns.load(Ordering::SeqCst)).max(0) as u64
    }
}

impl Clock for FilterClock {
    fn realtime_nanos(&self) -> u64 {
        self.now_ns()
    }
    fn monotonic_nanos(&self) -> u64 {
        self.now_ns()
    }
}

// === logs ===

/// Collects what the filter logs; optionally echoes it to stderr.
#[derive(Default)]
pub struct Logs {
    lines: Mutex<Vec<(LogLevel, String)>>,
    echo: bool,
}

impl Logs {
    /// A sink that also prints every line (the gateway).
    pub fn echoing() -> Arc<Self> {
        Arc::new(Self { lines: Mutex::default(), echo: true })
    }

    /// Every line so far.
    pub fn lines(&self) -> Vec<(LogLevel, String)> {
        lock(&self.lines).clone()
    }

    /// Every line so far, as one text.
    pub fn text(&self) -> String {
        self.lines().into_iter().map(|(l, m)| format!("{l:?} {m}\n")).collect()
    }
}

impl LogSink for Logs {
    fn log(&self, _context: LogContext<'_>, level: LogLevel, message: &[u8]) {
        let line = String::from_utf8_lossy(message).into_owned();
        if self.echo {
            eprintln!("[filter {level:?}] {line}");
        }
        let mut lines = lock(&self.lines);
        if lines.len() > 10_000 {
            lines.drain(..5_000);
        }
        lines.push((level, line));
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

// === callouts ===

/// Named upstream clusters: `cluster` name → base URL (`http://127.0.0.1:5556`).
pub type Clusters = HashMap<String, String>;

struct Callout {
    context: ContextId,
    id: CalloutId,
    call: HttpCall<'static>,
}

/// Records `dispatch_http_call`s; unknown clusters are refused at once, as Envoy does.
struct Outbox {
    clusters: Clusters,
    pending: Mutex<Vec<Callout>>,
}

impl Outbox {
    fn take_for(&self, context: ContextId) -> Vec<Callout> {
        let mut pending = lock(&self.pending);
        let (mine, rest): (Vec<_>, Vec<_>) = pending.drain(..).partition(|c| c.context == context);
        *pending = rest;
        mine
    }
}

impl Callouts for Outbox {
    fn http_call(&self, call: Invocation, callout: CalloutId, request: HttpCall<'_>) -> Result<(), HttpCallRefusal> {
        let cluster = String::from_utf8_lossy(&request.upstream).into_owned();
        if !self.clusters.contains_key(&cluster) {
            return Err(HttpCallRefusal::UnknownUpstream);
        }
        lock(&self.pending).push(Callout { context: call.context, id: callout, call: request.into_owned() });
        Ok(())
    }
}

// === requests and responses ===

/// One header as bytes, name and value: Envoy hands the filter bytes (a value may hold obs-text, RFC 9110
/// §5.5), and so does this host. Nothing on the way to or from the filter converts them lossily.
pub type HeaderPair = (Vec<u8>, Vec<u8>);

/// The first value of `name` among `headers`, when it is UTF-8.
pub fn header_value<'a>(headers: &'a [HeaderPair], name: &str) -> Option<&'a str> {
    headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name.as_bytes())).and_then(|(_, v)| std::str::from_utf8(v).ok())
}

/// An HTTP request as the listener saw it.
#[derive(Debug, Clone, Default)]
pub struct Request {
    /// Method.
    pub method: String,
    /// Path and query, as bytes.
    pub path: Vec<u8>,
    /// Host.
    pub authority: String,
    /// `http` or `https`.
    pub scheme: String,
    /// Other headers, as bytes (names are lower-cased on the way in).
    pub headers: Vec<HeaderPair>,
    /// Body.
    pub body: Vec<u8>,
}

impl Request {
    /// A GET for `path` on `authority`.
    pub fn get(authority: &str, path: &str) -> Self {
        Self {
            method: "GET".into(),
            path: path.as_bytes().to_vec(),
            authority: authority.into(),
            scheme: "http".into(),
            ..Self::default()
        }
    }

    /// Adds a header.
    pub fn header(self, name: &str, value: &str) -> Self {
        self.header_bytes(name.as_bytes(), value.as_bytes())
    }

    /// Adds a header given as bytes (for values outside UTF-8).
    pub fn header_bytes(mut self, name: &[u8], value: &[u8]) -> Self {
        self.headers.push((name.to_ascii_lowercase(), value.to_vec()));
        self
    }

    /// A browser navigation.
    pub fn navigation(self) -> Self {
        self.header("accept", "text/html,application/xhtml+xml")
    }
}

/// An HTTP response.
#[derive(Debug, Clone, Default)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Headers in order, as bytes (lower-case names, no `:status`).
    pub headers: Vec<HeaderPair>,
    /// Body.
    pub body: Vec<u8>,
}

impl Response {
    /// The first value of `name`, when it is UTF-8.
    pub fn header(&self, name: &str) -> Option<&str> {
        header_value(&self.headers, name)
    }

    /// Every UTF-8 value of `name`.
    pub fn headers_named(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name.as_bytes()))
            .filter_map(|(_, v)| std::str::from_utf8(v).ok())
            .collect()
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// The per-stream state the host lends the filter during each callback.
#[derive(Default)]
struct Stream {
    request_headers: VecHeaderMap,
    request_body: Vec<u8>,
    request_trailers: VecHeaderMap,
    response_headers: VecHeaderMap,
    response_body: Vec<u8>,
    response_trailers: VecHeaderMap,
    local: Option<LocalResponse<'static>>,
    resumed: bool,
    closed: bool,
}

impl StreamState for Stream {
    fn header_map(&mut self, _call: Invocation, _access: Access, map: MapType) -> Result<&mut dyn HeaderMap, Status> {
        Ok(match map {
            MapType::HttpRequestHeaders => &mut self.request_headers,
            MapType::HttpRequestTrailers => &mut self.request_trailers,
            MapType::HttpResponseHeaders => &mut self.response_headers,
            MapType::HttpResponseTrailers => &mut self.response_trailers,
            _ => return Err(Status::BadArgument),
        })
    }

    fn buffer(&mut self, _call: Invocation, _access: Access, buffer: BufferType) -> Result<&mut dyn Buffer, Status> {
        Ok(match buffer {
            BufferType::HttpRequestBody => &mut self.request_body,
            BufferType::HttpResponseBody => &mut self.response_body,
            _ => return Err(Status::NotFound),
        })
    }

    fn continue_stream(&mut self, _call: Invocation, stream: StreamType) -> Result<(), Status> {
        if stream == StreamType::HttpRequest {
            self.resumed = true;
        }
        Ok(())
    }

    fn close_stream(&mut self, _call: Invocation, _stream: StreamType) -> Result<(), Status> {
        self.closed = true;
        Ok(())
    }

    fn send_local_response(&mut self, _call: Invocation, response: LocalResponse<'_>) -> Result<(), Status> {
        self.local = Some(response.into_owned());
        Ok(())
    }
}

fn pairs(headers: &VecHeaderMap) -> Vec<HeaderPair> {
    headers.pairs().into_iter().map(|(k, v)| (k.to_vec(), v.to_vec())).collect()
}

fn local_response(local: LocalResponse<'static>) -> Response {
    Response {
        status: u16::try_from(local.status_code).unwrap_or(500),
        headers: local.headers.iter().map(|(k, v)| (k.to_ascii_lowercase(), v.to_vec())).collect(),
        body: local.body.into_owned(),
    }
}

/// Host-side failures (the guest trapped, refused a callback, or paused with nothing to wait for).
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// The module could not be loaded or compiled.
    #[error("loading the filter: {0}")]
    Load(String),
    /// `on_configure` (or `on_vm_start`) returned false: the configuration was refused.
    #[error("the filter refused its configuration:\n{logs}")]
    Refused {
        /// What the filter logged.
        logs: String,
    },
    /// A callback failed in the host.
    #[error("guest: {0}")]
    Guest(String),
    /// The filter paused the request without a callout that could resume it.
    #[error("the filter paused the request with no callout outstanding")]
    Stalled,
    /// Shared data refused a write.
    #[error("shared data: {0}")]
    Store(String),
}

impl From<GuestError> for HostError {
    fn from(e: GuestError) -> Self {
        HostError::Guest(e.to_string())
    }
}

/// What the filter decided for a request.
pub enum Decision {
    /// It answered itself (redirect, 401, 403, 503, …).
    Respond(Response),
    /// Forward upstream with these request headers; then pass the upstream answer to `Worker::respond`.
    Forward(Forwarded),
}

/// A request the filter let through, with the stream that must see the response.
pub struct Forwarded {
    context: ContextId,
    stream: Stream,
}

impl Forwarded {
    /// The request headers as the filter left them, pseudo-headers included.
    pub fn headers(&self) -> Vec<HeaderPair> {
        pairs(&self.stream.request_headers)
    }

    /// One header's value as the filter left it (repeats joined with `,`), when it is UTF-8.
    pub fn header(&self, name: &str) -> Option<String> {
        let joined = self.stream.request_headers.get_joined(name.as_bytes(), b",")?;
        String::from_utf8(joined.to_vec()).ok()
    }

    /// The request body.
    pub fn body(&self) -> &[u8] {
        &self.stream.request_body
    }
}

// === worker ===

/// Options for one filter VM.
pub struct WorkerOptions {
    /// Cluster name → base URL.
    pub clusters: Clusters,
    /// The filter's clock.
    pub clock: Arc<FilterClock>,
    /// Shared data; pass the same store to several workers to model Envoy's worker threads.
    pub store: Arc<InMemoryStore>,
    /// Where log lines go.
    pub logs: Arc<Logs>,
    /// Extra trusted CA certificates (PEM) for TLS clusters.
    pub ca_certificates: Vec<Vec<u8>>,
    /// Answers callouts instead of real HTTP requests (the module fuzzer plays the issuer this way).
    pub responder: Option<Responder>,
}

/// Answers a callout in place of its cluster: gets the cluster name, the request headers (pseudo-headers
/// included) and the body.
pub type Responder = Arc<dyn Fn(&str, &[HeaderPair], &[u8]) -> CalloutAnswer + Send + Sync>;

/// One filter VM (an Envoy worker thread's copy of the plugin).
pub struct Worker {
    guest: Mutex<Guest>,
    root: ContextId,
    outbox: Arc<Outbox>,
    clock: Arc<FilterClock>,
    store: Arc<InMemoryStore>,
    logs: Arc<Logs>,
    http: reqwest::Client,
    responder: Option<Responder>,
}

/// Shared data and metrics live under this VM id (Envoy's `vm_config.vm_id`).
const VM_ID: &str = "tokengate";

impl Worker {
    /// Loads the filter and configures it with `configuration` (the plugin JSON).
    pub async fn start(configuration: &str, options: WorkerOptions) -> Result<Self, HostError> {
        let compiled = compiled().map_err(HostError::Load)?;
        let outbox = Arc::new(Outbox { clusters: options.clusters, pending: Mutex::default() });
        let services = VmServices::new(options.logs.clone())
            .with_vm_id(VM_ID)
            .with_clock(options.clock.clone())
            .with_shared(options.store.clone())
            .with_callouts(outbox.clone());
        let limits = Limits::new().with_cpu_time(Duration::from_secs(30));
        let mut guest = Guest::new(&compiled.host, &compiled.module, services, &limits)?;
        let plugin = PluginConfig::new()
            .with_name("tokengate")
            .with_root_id("tokengate")
            .with_configuration(configuration.as_bytes().to_vec());
        let root = match guest.start(plugin)? {
            Started::Serving(root) => root,
            Started::Refused { .. } => return Err(HostError::Refused { logs: options.logs.text() }),
        };
        let mut http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none());
        for pem in &options.ca_certificates {
            let cert =
                reqwest::Certificate::from_pem(pem).map_err(|e| HostError::Load(format!("CA certificate: {e}")))?;
            http = http.add_root_certificate(cert);
        }
        let http = http.build().map_err(|e| HostError::Load(e.to_string()))?;
        let worker = Worker {
            guest: Mutex::new(guest),
            root,
            outbox,
            clock: options.clock,
            store: options.store,
            logs: options.logs,
            http,
            responder: options.responder,
        };
        worker.serve_root_callouts().await?;
        Ok(worker)
    }

    /// The filter's log so far.
    pub fn logs(&self) -> &Logs {
        &self.logs
    }

    /// The filter's clock.
    pub fn clock(&self) -> &FilterClock {
        &self.clock
    }

    /// The value of the filter's counter `name` (as the filter defines it, without Envoy's prefix).
    pub fn metric(&self, name: &str) -> u64 {
        let guest = lock(&self.guest);
        let inv = Invocation::new(guest.id(), self.root);
        // define_metric returns the existing id for a name the filter defined.
        match self.store.define_metric(inv, VM_ID.as_bytes(), MetricType::Counter, name.as_bytes()) {
            Ok(id) => self.store.get_metric(inv, id).unwrap_or(0),
            Err(_) => 0,
        }
    }

    /// Bytes (key and value) of those of `keys` that hold a value in shared data: how benchmarks size the
    /// filter's caches.
    pub fn shared_bytes<'k>(&self, keys: impl Iterator<Item = &'k str>) -> u64 {
        let guest = lock(&self.guest);
        let inv = Invocation::new(guest.id(), self.root);
        keys.filter_map(|k| {
            let v = self.store.get_shared_data(inv, VM_ID.as_bytes(), k.as_bytes()).ok()?;
            (!v.bytes.is_empty()).then(|| (k.len() + v.bytes.len()) as u64)
        })
        .sum()
    }

    /// A shared-data value under this VM's id, as the filter reads it (`None` when absent or empty).
    pub fn shared_data(&self, key: &str) -> Option<Vec<u8>> {
        let guest = lock(&self.guest);
        let inv = Invocation::new(guest.id(), self.root);
        let v = self.store.get_shared_data(inv, VM_ID.as_bytes(), key.as_bytes()).ok()?;
        (!v.bytes.is_empty()).then_some(v.bytes)
    }

    /// Writes a shared-data value under this VM's id, unconditionally (benchmarks seed state this way).
    pub fn set_shared_data(&self, key: &str, value: &[u8]) -> Result<(), HostError> {
        let guest = lock(&self.guest);
        let inv = Invocation::new(guest.id(), self.root);
        self.store
            .set_shared_data(inv, VM_ID.as_bytes(), key.as_bytes(), value, None)
            .map_err(|status| HostError::Store(format!("{status:?}")))
    }

    /// The tick period the filter asked for.
    pub fn tick_period(&self) -> Option<Duration> {
        lock(&self.guest).tick_period(self.root)
    }

    /// Fires the root's timer and serves what it dispatches.
    pub async fn tick(&self) -> Result<(), HostError> {
        {
            let mut guest = lock(&self.guest);
            guest.enter_root().on_tick(self.root)?;
        }
        self.serve_root_callouts().await
    }

    async fn serve_root_callouts(&self) -> Result<(), HostError> {
        loop {
            let calls = self.outbox.take_for(self.root);
            if calls.is_empty() {
                return Ok(());
            }
            for c in calls {
                let response = self.perform(&c.call).await;
                let mut guest = lock(&self.guest);
                guest.enter_root().on_http_call_response(self.root, c.id, response.as_call_response())?;
            }
        }
    }

    /// Runs a request through the filter's request path, serving its callouts until it answers or lets
    /// the request through.
    pub async fn request(&self, request: Request) -> Result<Decision, HostError> {
        let mut headers: Vec<HeaderPair> = vec![
            (b":method".to_vec(), request.method.into_bytes()),
            (b":path".to_vec(), request.path),
            (b":authority".to_vec(), request.authority.into_bytes()),
            (b":scheme".to_vec(), request.scheme.into_bytes()),
        ];
        headers.extend(request.headers.into_iter().map(|(k, v)| (k.to_ascii_lowercase(), v)));
        let has_body = !request.body.is_empty();
        let stream = Stream { request_headers: headers.into(), request_body: request.body, ..Stream::default() };
        let root = self.root;
        let (result, mut stream) = lock(&self.guest).with(stream, |s| {
            let ctx = s.on_context_create(Some(root))?;
            s.expect_stream_kind(ctx, StreamKind::Http)?;
            let n = s.stream().request_headers.len() as u32;
            let mut action = s.on_request_headers(ctx, n, !has_body)?;
            if action == Action::Continue && has_body && s.stream().local.is_none() {
                let len = s.stream().request_body.len() as u32;
                action = s.on_request_body(ctx, len, true)?;
            }
            Ok::<_, GuestError>((ctx, action))
        });
        let (context, action) = result?;
        let mut continued = action == Action::Continue;
        loop {
            if let Some(local) = stream.local.take() {
                let response = local_response(local);
                self.finish(context, stream)?;
                return Ok(Decision::Respond(response));
            }
            if continued || stream.resumed {
                return Ok(Decision::Forward(Forwarded { context, stream }));
            }
            if stream.closed {
                self.finish(context, stream)?;
                return Ok(Decision::Respond(Response {
                    status: 503,
                    headers: vec![],
                    body: b"stream reset".to_vec(),
                }));
            }
            let calls = self.outbox.take_for(context);
            if calls.is_empty() {
                self.finish(context, stream)?;
                return Err(HostError::Stalled);
            }
            for c in calls {
                let response = self.perform(&c.call).await;
                let (result, back) = lock(&self.guest)
                    .with(stream, |s| s.on_http_call_response(context, c.id, response.as_call_response()));
                stream = back;
                result?;
            }
            continued = false;
        }
    }

    /// Runs the upstream's response through the filter (which may add `Set-Cookie`) and ends the stream.
    pub fn respond(&self, forwarded: Forwarded, upstream: Response) -> Result<Response, HostError> {
        let Forwarded { context, mut stream } = forwarded;
        let mut headers: Vec<HeaderPair> = vec![(b":status".to_vec(), upstream.status.to_string().into_bytes())];
        headers.extend(upstream.headers.into_iter().map(|(k, v)| (k.to_ascii_lowercase(), v)));
        stream.response_headers = headers.into();
        stream.response_body = upstream.body;
        let (result, mut stream) = lock(&self.guest).with(stream, |s| {
            let n = s.stream().response_headers.len() as u32;
            let has_body = !s.stream().response_body.is_empty();
            s.on_response_headers(context, n, !has_body)?;
            if has_body {
                let len = s.stream().response_body.len() as u32;
                s.on_response_body(context, len, true)?;
            }
            Ok::<_, GuestError>(())
        });
        result?;
        let local = stream.local.take();
        let all = pairs(&stream.response_headers);
        let status = header_value(&all, ":status").and_then(|v| v.parse().ok()).unwrap_or(upstream.status);
        let headers = all.into_iter().filter(|(k, _)| !k.starts_with(b":")).collect();
        let body = std::mem::take(&mut stream.response_body);
        self.finish(context, stream)?;
        Ok(match local {
            Some(l) => local_response(l),
            None => Response { status, headers, body },
        })
    }

    /// Tells the filter a request went nowhere (for example the upstream failed) and ends the stream.
    pub fn abandon(&self, forwarded: Forwarded) -> Result<(), HostError> {
        self.finish(forwarded.context, forwarded.stream)
    }

    fn finish(&self, context: ContextId, stream: Stream) -> Result<(), HostError> {
        let (result, _) = lock(&self.guest).with(stream, |s| {
            if s.on_done(context)? {
                s.on_log(context)?;
                s.on_delete(context)?;
            }
            Ok::<_, GuestError>(())
        });
        result.map_err(HostError::from)
    }

    /// A request and, if the filter lets it through, `upstream`'s answer: the whole exchange.
    pub async fn exchange(
        &self,
        request: Request,
        upstream: impl FnOnce(&Forwarded) -> Response,
    ) -> Result<Response, HostError> {
        match self.request(request).await? {
            Decision::Respond(r) => Ok(r),
            Decision::Forward(f) => {
                let answer = upstream(&f);
                self.respond(f, answer)
            }
        }
    }

    /// Serves one callout as a real HTTP request to its cluster.
    async fn perform(&self, call: &HttpCall<'static>) -> CalloutAnswer {
        let cluster = String::from_utf8_lossy(&call.upstream).into_owned();
        if let Some(responder) = &self.responder {
            let headers: Vec<HeaderPair> = call.headers.iter().map(|(k, v)| (k.to_vec(), v.to_vec())).collect();
            return responder(&cluster, &headers, &call.body);
        }
        let Some(base) = self.outbox.clusters.get(&cluster) else { return CalloutAnswer::Failed };
        let get = |name: &str| {
            call.headers
                .iter()
                .find(|(k, _)| k.as_ref() == name.as_bytes())
                .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
        };
        let method = get(":method").unwrap_or_else(|| "GET".into());
        let path = get(":path").unwrap_or_else(|| "/".into());
        let Ok(method) = reqwest::Method::from_bytes(method.as_bytes()) else { return CalloutAnswer::Failed };
        let mut req = self.http.request(method, format!("{}{}", base.trim_end_matches('/'), path));
        for (k, v) in &call.headers {
            if !k.starts_with(b":") && !k.eq_ignore_ascii_case(b"host") {
                req = req.header(k.as_ref(), v.as_ref());
            }
        }
        if !call.body.is_empty() {
            req = req.body(call.body.to_vec());
        }
        let timeout = if call.timeout.is_zero() { Duration::from_secs(5) } else { call.timeout };
        match req.timeout(timeout).send().await {
            Ok(resp) => {
                let status = resp.status().as_u16();
                let headers: Vec<HeaderPair> = resp
                    .headers()
                    .iter()
                    .map(|(k, v)| (k.as_str().as_bytes().to_vec(), v.as_bytes().to_vec()))
                    .collect();
                match resp.bytes().await {
                    Ok(body) => CalloutAnswer::Received { status, headers, body: body.to_vec() },
                    Err(_) => CalloutAnswer::Failed,
                }
            }
            Err(_) => CalloutAnswer::Failed,
        }
    }
}

/// What a callout got back: the issuer's answer as bytes, or nothing (connection failed, timed out).
#[derive(Debug, Clone)]
pub enum CalloutAnswer {
    /// An HTTP answer.
    Received {
        /// Status code.
        status: u16,
        /// Headers, as bytes.
        headers: Vec<HeaderPair>,
        /// Body.
        body: Vec<u8>,
    },
    /// No answer.
    Failed,
}

impl CalloutAnswer {
    fn as_call_response(&self) -> HttpCallResponse<'_> {
        match self {
            CalloutAnswer::Received { status, headers, body } => {
                let mut pairs: HeaderPairs<'_> = vec![(b":status"[..].into(), status.to_string().into_bytes().into())];
                pairs.extend(headers.iter().map(|(k, v)| (k.as_slice().into(), v.as_slice().into())));
                HttpCallResponse::received(pairs).with_body(body.as_slice())
            }
            CalloutAnswer::Failed => HttpCallResponse::failed(),
        }
    }
}
