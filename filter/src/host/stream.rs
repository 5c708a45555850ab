//! One HTTP stream: collects [`RequestParts`], asks `flow` for a [`Decision`], applies it (headers, local
//! response, or a paused callout), feeds callout answers back, and adds `Set-Cookie` to the response.

use std::cell::OnceCell;
use std::rc::Rc;

use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::{Action, LogLevel, MapType};

use super::{abi, dispatch, log, now, read_response, unix_now, Shared};
use crate::callout::CalloutResponse;
use crate::discovery::{self, FetchOutcome, FetchStep, Provider};
use crate::flow::{self, Ctx, Decision, Event, IssuerState, Pending};
use crate::request::RequestParts;

/// What a paused stream waits for.
enum Waiting {
    Callout(u32, Pending),
    Keys(u32, FetchStep),
}

/// The issuer's state for one decision, read from shared data the first time the decision asks.
struct OnDemand<'s> {
    shared: &'s Shared,
    provider: OnceCell<Option<Rc<Provider>>>,
    down: OnceCell<bool>,
}

impl IssuerState for OnDemand<'_> {
    fn provider(&self) -> Option<&Provider> {
        self.provider.get_or_init(|| self.shared.provider()).as_deref()
    }

    fn issuer_down(&self) -> bool {
        *self.down.get_or_init(|| self.shared.health().0)
    }
}

/// Per-request state.
pub(super) struct Stream {
    shared: Option<Rc<Shared>>,
    req: RequestParts,
    waiting: Option<Waiting>,
    response_cookies: Vec<String>,
    keys_refetched: bool,
    /// The body is wanted (at most this many bytes): see [`Decision::ReadBody`].
    reading_body: Option<usize>,
}

impl Stream {
    pub(super) fn new(shared: Option<Rc<Shared>>) -> Stream {
        Stream {
            shared,
            req: RequestParts::default(),
            waiting: None,
            response_cookies: Vec::new(),
            keys_refetched: false,
            reading_body: None,
        }
    }

    /// Runs `f` with a [`Ctx`] built from the host's clock, shared data and metrics.
    fn with_ctx<T>(&self, shared: &Shared, f: impl FnOnce(&Ctx<'_>) -> T) -> T {
        let now = now();
        let issuer = OnDemand { shared, provider: OnceCell::new(), down: OnceCell::new() };
        let events = |e: Event| shared.metrics.count(e);
        let revocations = shared.revocations();
        let ctx = Ctx {
            now,
            issuer: &issuer,
            cache: shared.cache(),
            claims: &shared.claims,
            rng: &shared.rng,
            events: &events,
            keys_refetched: self.keys_refetched,
            revocations: &revocations,
        };
        f(&ctx)
    }

    /// Applies a decision. `Continue` means the request may go upstream now.
    fn apply(&mut self, shared: &Shared, decision: Decision) -> Action {
        match decision {
            Decision::Forward { set_headers, remove_headers, response_cookies, upstream_cookie } => {
                // A failed header edit must not let the request through half-rewritten.
                let mut edits = remove_headers
                    .iter()
                    .map(|name| abi::set_header(MapType::HttpRequestHeaders, name, None))
                    .chain(
                        set_headers
                            .iter()
                            .map(|(n, v)| abi::set_header(MapType::HttpRequestHeaders, n, Some(v.as_bytes()))),
                    )
                    .chain(upstream_cookie.map(|c| {
                        abi::set_header(
                            MapType::HttpRequestHeaders,
                            "cookie",
                            Some(c.as_slice()).filter(|c| !c.is_empty()),
                        )
                    }));
                if let Some(Err(status)) = edits.find(Result::is_err) {
                    return self.header_edit_failed(status);
                }
                self.response_cookies = response_cookies;
                Action::Continue
            }
            Decision::Redirect { location, set_cookies } => {
                let mut headers = vec![("location", location.as_str()), ("cache-control", "no-store")];
                headers.extend(set_cookies.iter().map(|c| ("set-cookie", c.as_str())));
                self.local_response(302, &headers, b"");
                Action::Pause
            }
            Decision::Deny { status, reason, headers, body } => {
                log(
                    LogLevel::Debug,
                    &format!("{} {} denied: {status} {reason}", self.req.method, self.req.path_only()),
                );
                let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
                self.local_response(u32::from(status), &headers, body.as_bytes());
                Action::Pause
            }
            Decision::Call { callout, then } => match dispatch(&shared.cfg.cluster, &callout) {
                Ok(token) => {
                    self.waiting = Some(Waiting::Callout(token, then));
                    Action::Pause
                }
                Err(status) => {
                    log(LogLevel::Warn, &format!("cannot call cluster {:?}: {status:?}", shared.cfg.cluster));
                    // As if the issuer had not answered: every pending step knows what that means (a refresh
                    // gives its lease back and falls back to a still-valid ID token; a sign-out still redirects).
                    let none = CalloutResponse::default();
                    let d = self.with_ctx(shared, |ctx| flow::resume(&shared.cfg, ctx, &self.req, then, &none));
                    self.apply(shared, d)
                }
            },
            Decision::ReadBody { limit, remove_headers } => {
                // proxy-wasm 0.2.1 hands over the body only once the headers went on (see the variant).
                if let Some(Err(status)) = remove_headers
                    .iter()
                    .map(|name| abi::set_header(MapType::HttpRequestHeaders, name, None))
                    .find(Result::is_err)
                {
                    return self.header_edit_failed(status);
                }
                self.reading_body = Some(limit);
                Action::Continue
            }
            Decision::FetchKeys { jwks_only } => {
                let now = unix_now();
                let metadata = shared.provider().map(|p| p.metadata.clone());
                if self.keys_refetched || shared.recently_failed(now) {
                    // One fetch per request, and none while the issuer just failed: an unknown `kid`
                    // is then final (401), missing keys are a 503.
                    let retry = jwks_only && !self.keys_refetched;
                    self.keys_refetched = true;
                    let d = self.with_ctx(shared, |ctx| match retry {
                        true => flow::decide(&shared.cfg, ctx, &self.req),
                        false => flow::issuer_unreachable(ctx, &self.req),
                    });
                    return self.apply(shared, d);
                }
                let start = discovery::start_fetch(&shared.cfg, metadata.as_ref().filter(|_| jwks_only));
                self.fetch_step(shared, start, now)
            }
        }
    }

    /// A request header edit failed: the request must not go on half-rewritten, so it is refused.
    fn header_edit_failed(&self, status: u32) -> Action {
        log(LogLevel::Error, &format!("cannot edit the request headers (status {status}); refusing the request"));
        self.filter_failed()
    }

    /// Answers 500: the filter could not do what its decision needed.
    fn filter_failed(&self) -> Action {
        self.local_response(500, &[("cache-control", "no-store")], b"filter failed\n");
        Action::Pause
    }

    fn local_response(&self, status: u32, headers: &[(&str, &str)], body: &[u8]) {
        if let Err(code) = abi::send_local_response(status, headers, body) {
            log(LogLevel::Warn, &format!("cannot send a local {status} response (status {code})"));
        }
    }

    fn fetch_step(&mut self, shared: &Shared, outcome: FetchOutcome, now: u64) -> Action {
        let outcome = match outcome {
            FetchOutcome::Next(callout, step) => match dispatch(&shared.cfg.cluster, &callout) {
                Ok(token) => {
                    self.waiting = Some(Waiting::Keys(token, step));
                    return Action::Pause;
                }
                Err(_) => FetchOutcome::Failed(discovery::DiscoveryError::Status(0)),
            },
            other => other,
        };
        self.keys_refetched = true;
        let decision = match outcome {
            FetchOutcome::Done(provider) => {
                shared.store_provider(&provider);
                self.with_ctx(shared, |ctx| flow::decide(&shared.cfg, ctx, &self.req))
            }
            _ => {
                log(LogLevel::Warn, "issuer unreachable while a request waited for keys");
                shared.set_health(false, now);
                self.with_ctx(shared, |ctx| flow::issuer_unreachable(ctx, &self.req))
            }
        };
        self.apply(shared, decision)
    }

    fn on_answer(&mut self, shared: &Shared, waiting: Waiting, resp: CalloutResponse) -> Action {
        match waiting {
            Waiting::Callout(_, pending) => {
                // Every answer tells whether the issuer is reachable; new logins use it to fail fast.
                shared.set_health(resp.issuer_reachable(), unix_now());
                let d = self.with_ctx(shared, |ctx| flow::resume(&shared.cfg, ctx, &self.req, pending, &resp));
                self.apply(shared, d)
            }
            Waiting::Keys(_, step) => {
                let now = unix_now();
                let outcome = discovery::advance_fetch(&shared.cfg, step, &resp, now);
                self.fetch_step(shared, outcome, now)
            }
        }
    }
}

impl Context for Stream {
    fn on_http_call_response(&mut self, token_id: u32, num_headers: usize, body_size: usize, _num_trailers: usize) {
        let Some(shared) = self.shared.clone() else {
            return;
        };
        let matches = match &self.waiting {
            Some(Waiting::Callout(t, _) | Waiting::Keys(t, _)) => *t == token_id,
            None => false,
        };
        let Some(waiting) = self.waiting.take().filter(|_| matches) else {
            return;
        };
        let resp = read_response(num_headers, body_size);
        if let Action::Continue = self.on_answer(&shared, waiting, resp) {
            if let Err(status) = abi::resume_request() {
                log(LogLevel::Warn, &format!("cannot resume the request (status {status})"));
            }
        }
    }
}

impl HttpContext for Stream {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        let Some(shared) = self.shared.clone() else {
            self.local_response(503, &[("cache-control", "no-store")], b"filter not configured\n");
            return Action::Pause;
        };
        self.req = RequestParts::from_header_bytes(abi::header_map(MapType::HttpRequestHeaders));
        let mut decision = self.with_ctx(&shared, |ctx| flow::decide(&shared.cfg, ctx, &self.req));
        if end_of_stream && matches!(decision, Decision::ReadBody { .. }) {
            // No body is coming: decide on an empty one.
            self.req.body = Some(Vec::new());
            decision = self.with_ctx(&shared, |ctx| flow::decide(&shared.cfg, ctx, &self.req));
        }
        self.apply(&shared, decision)
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        let (Some(shared), Some(limit)) = (self.shared.clone(), self.reading_body) else {
            return Action::Continue;
        };
        if body_size > limit {
            self.reading_body = None;
            return self.apply(&shared, flow::body_too_large(limit));
        }
        if !end_of_stream {
            // Envoy buffers the body until the end of the stream.
            return Action::Pause;
        }
        self.reading_body = None;
        self.req.body = Some(abi::buffer(proxy_wasm::types::BufferType::HttpRequestBody, body_size));
        let decision = self.with_ctx(&shared, |ctx| flow::decide(&shared.cfg, ctx, &self.req));
        // Whatever the answer, it is local: the body was the filter's to read, not the upstream's.
        match self.apply(&shared, decision) {
            Action::Continue => self.filter_failed(),
            paused => paused,
        }
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let mut cookies = std::mem::take(&mut self.response_cookies);
        if let (Some(shared), false) = (self.shared.clone(), cookies.is_empty()) {
            cookies =
                self.with_ctx(&shared, |ctx| flow::finalize_response_cookies(&shared.cfg, ctx, &self.req, cookies));
        }
        for cookie in cookies {
            if let Err(status) = abi::add_header(MapType::HttpResponseHeaders, "set-cookie", cookie.as_bytes()) {
                log(LogLevel::Warn, &format!("cannot add Set-Cookie to the response (status {status})"));
            }
        }
        Action::Continue
    }
}
